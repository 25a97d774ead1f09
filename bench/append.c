/*
 * append.c - durable single-event append throughput of the SQLite store,
 * without HTTP, against the ceiling of a bare SQLite insert loop.
 *
 * Usage: bench_append [--seconds S] [--dir DIR] [--threads 1,8,64]
 * For each thread count: a fresh database (WAL, synchronous=FULL), every
 * thread appends ~200-byte events one at a time (expected version "any", a
 * stream per thread) for S seconds; prints events/s. The ceiling: the same
 * rows inserted by one thread with plain sqlite3 calls, one transaction per
 * 1,000 rows, into the same schema. Not a test: nothing is asserted.
 */
#include <pthread.h>
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
    store_options_t o = {.sync = getenv("BENCH_SYNC_NORMAL") ? STORE_SYNC_NORMAL : STORE_SYNC_FULL,
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

/* The ceiling: our schema, plain sqlite3, 1,000 rows per transaction. */
static double run_bare(const char *dir, double seconds)
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
    int rows_per_tx = getenv("BENCH_BARE_ROWS") ? (int)strtol(getenv("BENCH_BARE_ROWS"), NULL, 10) : 1000;
    double start = now_s(), deadline = start + seconds;
    while (now_s() < deadline) {
        sqlite3_exec(db, "BEGIN", NULL, NULL, NULL);
        for (int i = 0; i < rows_per_tx; i++, n++) {
            char id[UUID_STR_LEN + 1];
            uuid_v7_generate(id);
            sqlite3_bind_text(ins, 1, id, -1, SQLITE_TRANSIENT);
            sqlite3_bind_text(ins, 2, "bench-0", -1, SQLITE_STATIC);
            sqlite3_bind_int64(ins, 3, n + 1);
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
        } else if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc) {
            snprintf(threads_arg, sizeof threads_arg, "%s", argv[++i]);
        } else {
            fprintf(stderr, "usage: %s [--seconds S] [--dir DIR] [--threads 1,8,64]\n", argv[0]);
            return 2;
        }
    }
    if (seconds <= 0 || seconds > 600) {
        fprintf(stderr, "--seconds must be in (0, 600]\n");
        return 2;
    }
    if (sodium_init() < 0) return 1;

    double ceiling = getenv("BENCH_NO_CEILING") ? 1 : run_bare(dir, seconds);
    printf("%-34s %12s %10s %12s\n", "case (synchronous=FULL)", "events/s", "of ceiling",
           "units/commit");
    printf("%-34s %12.0f %9.0f%% %12s\n", "bare sqlite, 1000 rows/tx", ceiling, 100.0, "1000");
    char *save = NULL;
    for (char *tok = strtok_r(threads_arg, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        int t = (int)strtol(tok, NULL, 10);
        if (t < 1 || t > 1024) continue;
        double batch = 0, rate = run_store(dir, t, seconds, &batch);
        char label[64];
        snprintf(label, sizeof label, "store_append, %d thread%s", t, t == 1 ? "" : "s");
        printf("%-34s %12.0f %9.0f%% %12.1f\n", label, rate, 100.0 * rate / ceiling, batch);
        fflush(stdout);
    }
    return 0;
}
