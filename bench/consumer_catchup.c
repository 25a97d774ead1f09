/*
 * consumer_catchup.c - how fast a durable consumer catches up on a stored
 * backlog: the consumer runtime (src/worker/consumer.c) with its real
 * source (store_read_all pages), lease and checkpoint saves, and an
 * in-process effect that only counts, so the figure is the runtime's
 * ceiling rather than a receiver's.
 *
 * Usage: bench_consumer_catchup [--events N] [--dir DIR] [--batch B] [--database URL]
 * Fills a fresh SQLite database in DIR (default /tmp) with N (default
 * 1,000,000) ~200-byte events (1,000 per append, synchronous=NORMAL: the
 * fill is not what is measured), or uses --database URL as is (it must be
 * empty). Then starts one consumer at position 0 and times it until it
 * has delivered N events. Prints events/s. Not a test: nothing is asserted.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "store/store.h"
#include "worker/consumer.h"

static const char *DATA = "{\"team_id\":\"team-0042\",\"content\":\"Shipped the new billing "
                          "page; fixing two bugs in invoices today, then on to reports.\","
                          "\"author\":\"Ada Lovelace\",\"slack_user\":\"U024BE7LH\",\"n\":1}";

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

typedef struct counter {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    long count, want;
    int64_t last_position;
} counter_t;

static int count_deliver(void *user, const event_t *ev, const consumer_delivery_t *d,
                         chr_err_t *err)
{
    (void)d;
    (void)err;
    counter_t *c = user;
    pthread_mutex_lock(&c->lock);
    c->count++;
    c->last_position = ev->position;
    if (c->count >= c->want) pthread_cond_signal(&c->cond);
    pthread_mutex_unlock(&c->lock);
    return CHR_OK;
}

static void fill(store_t *s, long n)
{
    enum { PER = 1000 };
    event_t *evs = calloc(PER, sizeof *evs);
    if (!evs) exit(1);
    double t0 = now_s();
    for (long done = 0; done < n;) {
        long k = n - done < PER ? n - done : PER;
        char stream[64];
        snprintf(stream, sizeof stream, "bench-%ld", done / PER);
        for (long i = 0; i < k; i++)
            if (event_init(&evs[i], NULL, stream, "StatusUpdateSubmitted", DATA, NULL) != CHR_OK)
                exit(1);
        chr_err_t err = {0};
        if (store_append(s, stream, STORE_ANY, evs, (size_t)k, NULL, NULL, &err) != CHR_OK) {
            fprintf(stderr, "append: %s\n", err.msg);
            exit(1);
        }
        for (long i = 0; i < k; i++)
            event_free(&evs[i]);
        done += k;
    }
    free(evs);
    fprintf(stderr, "filled %ld events in %.1f s\n", n, now_s() - t0);
}

int main(int argc, char **argv)
{
    long n = 1000000, batch = 1000;
    const char *dir = "/tmp", *url_arg = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--events") == 0 && i + 1 < argc) n = strtol(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--dir") == 0 && i + 1 < argc) dir = argv[++i];
        else if (strcmp(argv[i], "--batch") == 0 && i + 1 < argc) batch = strtol(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--database") == 0 && i + 1 < argc) url_arg = argv[++i];
        else {
            fprintf(stderr, "usage: %s [--events N] [--dir DIR] [--batch B] [--database URL]\n",
                    argv[0]);
            return 2;
        }
    }
    if (n < 1 || batch < 1) return 2;
    char path[1024], url[1100];
    snprintf(path, sizeof path, "%s/consumer-catchup-%d.db", dir, (int)getpid());
    snprintf(url, sizeof url, "sqlite:%s", path);
    store_options_t o = {.sync = STORE_SYNC_NORMAL, .migrate = true};
    store_t *s = NULL;
    chr_err_t err = {0};
    if (store_open(url_arg ? url_arg : url, &o, &s, &err) != CHR_OK) {
        fprintf(stderr, "open: %s\n", err.msg);
        return 1;
    }
    fill(s, n);

    counter_t c = {.want = n};
    pthread_mutex_init(&c.lock, NULL);
    pthread_cond_init(&c.cond, NULL);
    consumer_runtime_t *rt = NULL;
    consumer_spec_t spec = {.name = "bench",
                            .kind = "bench",
                            .max_attempts = 1,
                            .batch = (size_t)batch,
                            .effect = {.deliver = count_deliver, .user = &c}};
    if (consumer_runtime_new(s, &rt, &err) || consumer_runtime_add(rt, &spec, &err)) {
        fprintf(stderr, "runtime: %s\n", err.msg);
        return 1;
    }
    double t0 = now_s();
    if (consumer_runtime_start(rt, &err)) {
        fprintf(stderr, "start: %s\n", err.msg);
        return 1;
    }
    pthread_mutex_lock(&c.lock);
    while (c.count < c.want)
        pthread_cond_wait(&c.cond, &c.lock);
    pthread_mutex_unlock(&c.lock);
    double secs = now_s() - t0;
    consumer_runtime_free(rt);
    printf("consumer catch-up: %ld events in %.2f s = %.0f events/s (batch %ld)\n", n, secs,
           (double)n / secs, batch);
    store_close(s);
    if (!url_arg) {
        unlink(path);
        char side[1200];
        snprintf(side, sizeof side, "%s-wal", path);
        unlink(side);
        snprintf(side, sizeof side, "%s-shm", path);
        unlink(side);
        snprintf(side, sizeof side, "%s-lease-consumer:bench", path);
        unlink(side);
    }
    pthread_mutex_destroy(&c.lock);
    pthread_cond_destroy(&c.cond);
    return 0;
}
