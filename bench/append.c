/*
 * append.c - durable single-event append throughput of the SQLite store,
 * without HTTP, against the ceiling of a bare SQLite insert loop.
 *
 * Usage: bench_append [--seconds S] [--dir DIR] [--threads 1,8,64] [--sync full|normal]
 * For each thread count: a fresh database (WAL, synchronous=FULL), every
 * thread appends ~200-byte events one at a time (expected version "any", a
 * stream per thread) for S seconds; prints events/s. The ceiling: the same
 * rows inserted by one thread with plain sqlite3 calls, one transaction per
 * 1,000 rows, into the same schema. Not a test: nothing is asserted.
 */
#include <pthread.h>
#include <semaphore.h>
#include <sodium.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/timefmt.h"
#include "store/store.h"

static const char *DATA = "{\"team_id\":\"team-0042\",\"content\":\"Shipped the new billing "
                          "page; fixing two bugs in invoices today, then on to reports.\","
                          "\"author\":\"Ada Lovelace\",\"slack_user\":\"U024BE7LH\",\"n\":1}";

static store_sync_t bench_sync = STORE_SYNC_FULL;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

typedef struct worker {
    store_t *store;
    int index;
    double deadline;
    long count;
    atomic_int *failed;
} worker_t;

static void *append_loop(void *arg)
{
    worker_t *w = arg;
    char stream[64];
    snprintf(stream, sizeof stream, "bench-%d", w->index);
    while (now_s() < w->deadline) {
        event_t ev;
        if (event_init(&ev, NULL, stream, "StatusUpdateSubmitted", DATA, NULL) != CHR_OK) break;
        chr_err_t err = {0};
        int rc = store_append(w->store, stream, STORE_ANY, &ev, 1, NULL, NULL, &err);
        event_free(&ev);
        if (rc != CHR_OK) {
            fprintf(stderr, "append failed: %s\n", err.msg);
            atomic_store(w->failed, 1);
            break;
        }
        w->count++;
    }
    return NULL;
}

static double run_store(const char *dir, int threads, double seconds, double *batch)
{
    char path[1024], url[1100];
    snprintf(path, sizeof path, "%s/store-%d.db", dir, threads);
    unlink(path);
    snprintf(url, sizeof url, "sqlite:%s", path);
    store_options_t o = {.sync = bench_sync,
                         .migrate = true};
    store_t *s;
    chr_err_t err = {0};
    if (store_open(url, &o, &s, &err) != CHR_OK) {
        fprintf(stderr, "open: %s\n", err.msg);
        exit(1);
    }
    worker_t *ws = calloc((size_t)threads, sizeof *ws);
    pthread_t *ts = calloc((size_t)threads, sizeof *ts);
    atomic_int failed = 0;
    double start = now_s();
    for (int i = 0; i < threads; i++) {
        ws[i] = (worker_t){s, i, start + seconds, 0, &failed};
        pthread_create(&ts[i], NULL, append_loop, &ws[i]);
    }
    long total = 0;
    for (int i = 0; i < threads; i++) {
        pthread_join(ts[i], NULL);
        total += ws[i].count;
    }
    double elapsed = now_s() - start;
    store_counters_t c;
    store_counters(s, &c);
    *batch = c.commits ? (double)c.units / (double)c.commits : 0;
    store_close(s);
    free(ws);
    free(ts);
    unlink(path);
    if (failed) exit(1);
    return (double)total / elapsed;
}

/* Asynchronous appends: one submitter keeps `inflight` units queued, as a
 * server that suspends requests instead of blocking a thread on each. */
typedef struct async_pool async_pool_t;
typedef struct slot {
    event_t ev;
    store_append_t ap;
    store_uow_t uow;
    chr_err_t err;
    int index;
    async_pool_t *pool;
} slot_t;

struct async_pool {
    slot_t *slots;
    int *free_stack;
    int n_free;
    pthread_mutex_t lock;
    sem_t available;
    atomic_long done;
    atomic_int failed;
};

static void slot_done(void *user, int rc)
{
    slot_t *sl = user;
    async_pool_t *p = sl->pool;
    if (rc != CHR_OK) {
        fprintf(stderr, "append failed: %s\n", sl->err.msg);
        atomic_store(&p->failed, 1);
    }
    event_free(&sl->ev);
    atomic_fetch_add(&p->done, 1);
    pthread_mutex_lock(&p->lock);
    p->free_stack[p->n_free++] = sl->index;
    pthread_mutex_unlock(&p->lock);
    sem_post(&p->available);
}

static double run_async(const char *dir, int inflight, double seconds, double *batch)
{
    char path[1024], url[1100];
    snprintf(path, sizeof path, "%s/async-%d.db", dir, inflight);
    unlink(path);
    snprintf(url, sizeof url, "sqlite:%s", path);
    store_options_t o = {.sync = bench_sync,
                         .migrate = true};
    store_t *s;
    chr_err_t err = {0};
    if (store_open(url, &o, &s, &err) != CHR_OK) exit(1);
    async_pool_t p = {.n_free = inflight};
    p.slots = calloc((size_t)inflight, sizeof *p.slots);
    p.free_stack = calloc((size_t)inflight, sizeof *p.free_stack);
    pthread_mutex_init(&p.lock, NULL);
    sem_init(&p.available, 0, (unsigned)inflight);
    for (int i = 0; i < inflight; i++) p.free_stack[i] = i;

    long submitted = 0;
    double start = now_s(), deadline = start + seconds;
    while (now_s() < deadline && !atomic_load(&p.failed)) {
        while (sem_wait(&p.available) != 0) {
        }
        pthread_mutex_lock(&p.lock);
        int idx = p.free_stack[--p.n_free];
        pthread_mutex_unlock(&p.lock);
        slot_t *sl = &p.slots[idx];
        char stream[64];
        snprintf(stream, sizeof stream, "bench-%d", idx);
        if (event_init(&sl->ev, NULL, stream, "StatusUpdateSubmitted", DATA, NULL) != CHR_OK) exit(1);
        sl->ap = (store_append_t){.stream = sl->ev.stream, .expected_version = STORE_ANY,
                                  .events = &sl->ev, .n_events = 1};
        sl->uow = (store_uow_t){.appends = &sl->ap, .n_appends = 1};
        memset(&sl->err, 0, sizeof sl->err);
        sl->index = idx;
        sl->pool = &p;
        if (store_commit_async(s, &sl->uow, &sl->err, slot_done, sl) != CHR_OK) {
            fprintf(stderr, "submit failed: %s\n", sl->err.msg);
            exit(1);
        }
        submitted++;
    }
    for (int i = 0; i < inflight; i++) /* wait for every slot to come back */
        while (sem_wait(&p.available) != 0) {
        }
    double elapsed = now_s() - start;
    store_counters_t c;
    store_counters(s, &c);
    *batch = c.commits ? (double)c.units / (double)c.commits : 0;
    store_close(s);
    sem_destroy(&p.available);
    pthread_mutex_destroy(&p.lock);
    free(p.slots);
    free(p.free_stack);
    unlink(path);
    if (atomic_load(&p.failed) || atomic_load(&p.done) != submitted) exit(1);
    return (double)submitted / elapsed;
}

/* The ceiling: the same rows (same schema, same streams) inserted with
 * plain sqlite3 calls, one transaction per rows_per_tx rows. */
static double run_bare(const char *dir, double seconds, long bare_streams, int rows_per_tx)
{
    char path[1024], url[1100];
    snprintf(path, sizeof path, "%s/bare.db", dir);
    unlink(path);
    snprintf(url, sizeof url, "sqlite:%s", path);
    store_options_t o = {.migrate = true}; /* create the same schema, then close */
    store_t *s;
    chr_err_t err = {0};
    if (store_open(url, &o, &s, &err) != CHR_OK) exit(1);
    store_close(s);

    sqlite3 *db;
    sqlite3_open(path, &db);
    sqlite3_exec(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL", NULL, NULL, NULL);
    sqlite3_stmt *ins;
    sqlite3_prepare_v2(db,
                       "INSERT INTO events(id, stream, version, type, data, metadata, timestamp) "
                       "VALUES (?, ?, ?, ?, ?, NULL, ?)",
                       -1, &ins, NULL);
    long n = 0;
    double start = now_s(), deadline = start + seconds;
    while (now_s() < deadline) {
        sqlite3_exec(db, "BEGIN", NULL, NULL, NULL);
        for (int i = 0; i < rows_per_tx; i++, n++) {
            char id[UUID_STR_LEN + 1];
            uuid_v7_generate(id);
            sqlite3_bind_text(ins, 1, id, -1, SQLITE_TRANSIENT);
            char stream[32];
            snprintf(stream, sizeof stream, "bench-%ld", n % bare_streams);
            sqlite3_bind_text(ins, 2, stream, -1, SQLITE_TRANSIENT);
            sqlite3_bind_int64(ins, 3, n / bare_streams + 1);
            sqlite3_bind_text(ins, 4, "StatusUpdateSubmitted", -1, SQLITE_STATIC);
            sqlite3_bind_text(ins, 5, DATA, -1, SQLITE_STATIC);
            sqlite3_bind_int64(ins, 6, time_now_us());
            sqlite3_step(ins);
            sqlite3_reset(ins);
        }
        sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
    }
    double elapsed = now_s() - start;
    sqlite3_finalize(ins);
    sqlite3_close(db);
    unlink(path);
    return (double)n / elapsed;
}

int main(int argc, char **argv)
{
    double seconds = 5;
    const char *dir = ".";
    char threads_arg[128] = "1,8,64";
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--seconds") == 0 && i + 1 < argc) {
            seconds = strtod(argv[++i], NULL);
        } else if (strcmp(argv[i], "--dir") == 0 && i + 1 < argc) {
            dir = argv[++i];
        } else if (strcmp(argv[i], "--sync") == 0 && i + 1 < argc) {
            bench_sync = strcmp(argv[++i], "normal") == 0 ? STORE_SYNC_NORMAL : STORE_SYNC_FULL;
        } else if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc) {
            snprintf(threads_arg, sizeof threads_arg, "%s", argv[++i]);
        } else {
            fprintf(stderr, "usage: %s [--seconds S] [--dir DIR] [--threads 1,8,64] [--sync full|normal]\n", argv[0]);
            return 2;
        }
    }
    if (seconds <= 0 || seconds > 600) {
        fprintf(stderr, "--seconds must be in (0, 600]\n");
        return 2;
    }
    if (sodium_init() < 0) return 1;

    printf("%-38s %12s %10s %12s\n", bench_sync == STORE_SYNC_FULL ? "case (synchronous=FULL)" : "case (store synchronous=NORMAL)", "events/s", "of ceiling",
           "units/commit");
    char *save = NULL;
    for (char *tok = strtok_r(threads_arg, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        int t = (int)strtol(tok, NULL, 10);
        if (t < 1 || t > 1024) continue;
        char label[64];
        /* Each case writes round-robin to t streams; so does its ceiling. */
        double ceiling = run_bare(dir, seconds, t, 1000);
        snprintf(label, sizeof label, "bare sqlite, %d stream%s, 1000 rows/tx", t, t == 1 ? "" : "s");
        printf("%-38s %12.0f %9.0f%% %12s\n", label, ceiling, 100.0, "1000");
        double batch = 0, rate = run_store(dir, t, seconds, &batch);
        snprintf(label, sizeof label, "store_append, %d thread%s", t, t == 1 ? "" : "s");
        printf("%-38s %12.0f %9.0f%% %12.1f\n", label, rate, 100.0 * rate / ceiling, batch);
        rate = run_async(dir, t, seconds, &batch);
        snprintf(label, sizeof label, "store_commit_async, %d in flight", t);
        printf("%-38s %12.0f %9.0f%% %12.1f\n", label, rate, 100.0 * rate / ceiling, batch);
        fflush(stdout);
    }
    return 0;
}
