/*
 * pg_store.c - the PostgreSQL backend of store.h.
 *
 * Layout: events in events.events (the columns teams already use plus a
 * global position), the committed head in the one row of events.head, our
 * migrations in events.chronicle_migrations; projection tables in schema
 * "projections" (every connection's search_path is "projections, public").
 *
 * Writes: one writer thread per process with its own connection commits
 * queued units in batches (group commit), one transaction per batch and a
 * savepoint per unit that needs one, so a unit's failure never fails
 * another. The batch first locks the events.head row: that lock orders
 * position assignment with commit across every instance sharing the
 * database, so positions become visible in order and a feed reader never
 * skips an event that commits late (docs/internals/ordering.md has the
 * argument). Stream versions are read under that lock; a per-process cache
 * of them is trusted only while the head is the one this process committed
 * last (no other instance wrote in between), and UNIQUE (aggregate_id,
 * version) stays the final guard. Round trips: statements whose answer can
 * wait travel together in one pipeline (a new stream's version is assumed,
 * an entity command's INSERT goes with its projection's first statement,
 * its last projection write with the next round trip); see "Round trips"
 * in docs/internals/ordering.md.
 *
 * Reads: a pool of reader connections. Live feed: the batch NOTIFYs
 * chronicle_events with the new head; a listener thread with its own
 * connection LISTENs and wakes local waiters when other instances commit.
 *
 * Outages: a lost connection is CHR_EUNAVAILABLE (HTTP 503); every
 * connection reconnects on its next use (pg_conn.c), so service resumes by
 * itself. The writer fails the whole batch when its transaction is lost and
 * never acknowledges what it did not see committed.
 *
 * Not here: input validation (store.c does it for every backend), HTTP, and
 * libpq plumbing (pg_conn.c).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/timefmt.h"
#include "store/postgres/pg_internal.h"
#include "store/store.h"
#include "util/strmap.h"

#define MAX_BATCH 1024           /* units per transaction */
#define VERSION_CACHE_MAX 500000 /* streams remembered by the writer */
#define DEFAULT_READERS 8
#define MAX_READERS 256
#define MAX_TYPES 64              /* event types in one filtered feed read */
#define MIN_SERVER_VERSION 140000 /* extract(epoch ...) is exact numeric from 14 on */

/* The earliest instant timestamptz holds (4714-11-24 BC), in microseconds
 * since the Unix epoch; every later int64 fits. */
#define PG_MIN_TIMESTAMP_US INT64_C(-210866803200000000)

/* Type OIDs (catalog/pg_type_d.h, which libpq-dev does not ship). */
#define OID_BOOL 16
#define OID_INT8 20
#define OID_INT2 21
#define OID_INT4 23
#define OID_OID 26
#define OID_FLOAT4 700
#define OID_FLOAT8 701
#define OID_NUMERIC 1700

#define EVENT_COLS                                                                                 \
    "position, id, aggregate_id, version, type, data::text, metadata::text, "                      \
    "(extract(epoch FROM timestamp) * 1000000)::bigint"

/* Exact microseconds to timestamptz: days and the rest apart, so no factor
 * passes through a double beyond 2^53 (the session time zone is UTC). */
#define TS_FROM_US(p)                                                                              \
    "('epoch'::timestamptz + (" p "::bigint / 86400000000) * interval '1 day' + (" p               \
    "::bigint % 86400000000) * interval '1 microsecond')"

static const char SQL_INSERT[] =
    "INSERT INTO events.events (id, type, aggregate_id, data, timestamp, metadata, version, "
    "position) VALUES ($1, $2, $3, $4::jsonb, " TS_FROM_US(
        "$5") ", $6::jsonb, $7::integer, "
              "$8::bigint) ON CONFLICT DO NOTHING";
static const char SQL_VERSION[] =
    "SELECT coalesce(max(version), 0) FROM events.events WHERE aggregate_id = $1";
static const char SQL_BY_ID[] = "SELECT " EVENT_COLS " FROM events.events WHERE id = $1";
static const char SQL_REPLAY[] =
    "SELECT position, version, (extract(epoch FROM timestamp) * 1000000)::bigint, "
    "aggregate_id = $2 AND type = $3 AND data = $4::jsonb FROM events.events WHERE id = $1";
static const char SQL_HEAD[] = "SELECT position FROM events.head";

/* Session settings. Readers refuse writes (store_query is read-only). The
 * writer's idle-in-transaction limit frees the head lock should this
 * process stall mid-batch, so one frozen instance cannot stop the others. */
#define SETUP_COMMON "SET search_path TO projections, public; SET TIME ZONE 'UTC'; "
static const char READER_SETUP[] = SETUP_COMMON "SET default_transaction_read_only TO on";
static const char LISTENER_SETUP[] = "SET TIME ZONE 'UTC'; LISTEN " PG_CHANNEL;

/* A queued unit of work. done is called by the writer, after the batch's
 * commit, with the unit's final status; the job is freed right after. */
typedef struct job {
    store_uow_t *uow;
    chr_err_t *err;
    int rc;
    bool ran;
    store_done_fn done;
    void *done_user;
    struct job *next;
} job_t;

typedef struct reader {
    pg_conn_t conn;
    struct reader *next;
} reader_t;

typedef struct pg_store {
    store_t base;
    char url[1024];
    pg_conninfo_t info; /* borrows url */
    bool read_only;
    char writer_setup[256];

    /* writer (its thread only, after open) */
    pg_conn_t w;
    strmap_t versions;     /* stream -> version */
    int64_t versions_head; /* the head the cache is valid at; -1: unknown */
    pthread_t writer;
    bool writer_started;
    atomic_int writer_pid; /* the writer's backend, whose NOTIFYs the listener skips */

    /* queue */
    pthread_mutex_t qlock;
    pthread_cond_t qcond;
    job_t *qhead, *qtail;
    bool stopping;

    /* listener: started on first use, once store.c has set up its waiters */
    pg_conn_t l;
    pthread_mutex_t llock;
    atomic_bool listener_started;
    bool listener_closed;
    pthread_t listener;
    int wake[2];                    /* a byte on wake[1] stops the listener */
    atomic_int_fast64_t known_head; /* highest head announced to store.c */

    /* readers */
    pthread_mutex_t rlock;
    pthread_cond_t rcond;
    reader_t *free_readers;
    reader_t *all_readers[MAX_READERS];
    int n_readers, max_readers;

    /* counters */
    atomic_uint_fast64_t c_commits, c_units, c_events, c_errors;
    atomic_uint_fast64_t c_batch[8];
} pg_store_t;

static const store_ops_t pg_ops;

/* ---- helpers ------------------------------------------------------------ */

static int64_t val_i64(const PGresult *r, int row, int col)
{
    return strtoll(PQgetvalue(r, row, col), NULL, 10);
}

static char *val_dup(const PGresult *r, int row, int col)
{
    if (PQgetisnull(r, row, col)) return NULL;
    return strdup(PQgetvalue(r, row, col));
}

/* JSONB keeps numbers as exact decimals and prints them in full: a client's
 * 1e300 comes back as a 301-digit integer, which JSON readers with 64-bit
 * integers (jansson among them) refuse. Returns text with every integer
 * token outside the int64 range rewritten as the shortest double that reads
 * back the same, as the client's text would have been read; text itself when
 * nothing needs rewriting, NULL on allocation failure. */
static char *fit_numbers(char *text)
{
    char *out = NULL;
    size_t o = 0, cap = 0, copied = 0; /* text[0..copied) is in out */
    bool in_string = false;
    for (size_t i = 0; text[i]; i++) {
        char ch = text[i];
        if (in_string) {
            if (ch == '\\' && text[i + 1])
                i++;
            else if (ch == '"')
                in_string = false;
            continue;
        }
        if (ch == '"') {
            in_string = true;
            continue;
        }
        if (ch != '-' && (ch < '0' || ch > '9')) continue;
        size_t start = i, digits = 0;
        bool integer = true;
        if (text[i] == '-') i++;
        for (; text[i] && strchr("0123456789.eE+-", text[i]); i++) {
            if (text[i] >= '0' && text[i] <= '9')
                digits++;
            else
                integer = false;
        }
        size_t end = i;
        i--; /* the loop's i++ moves past the token */
        if (!integer || digits < 19) continue;
        errno = 0;
        (void)strtoll(text + start, NULL, 10);
        if (errno != ERANGE) continue;
        double d = strtod(text + start, NULL);
        char num[40];
        for (int prec = 15; prec <= 17; prec++) {
            snprintf(num, sizeof num, "%.*g", prec, d);
            if (strtod(num, NULL) == d) break;
        }
        size_t need = o + (start - copied) + strlen(num) + strlen(text + end) + 1;
        if (need > cap) {
            cap = need * 2;
            char *bigger = realloc(out, cap);
            if (!bigger) {
                free(out);
                return NULL;
            }
            out = bigger;
        }
        memcpy(out + o, text + copied, start - copied);
        o += start - copied;
        memcpy(out + o, num, strlen(num));
        o += strlen(num);
        copied = end;
    }
    if (!out) return text;
    size_t rest = strlen(text + copied);
    memcpy(out + o, text + copied, rest + 1);
    free(text);
    return out;
}

/* A new copy of a JSONB column's text, its numbers made readable (see
 * fit_numbers); NULL for SQL NULL or on allocation failure. */
static char *json_dup(const PGresult *r, int row, int col)
{
    char *text = val_dup(r, row, col);
    if (!text) return NULL;
    char *fitted = fit_numbers(text);
    if (!fitted) free(text);
    return fitted;
}

/* Appends the rows of r (EVENT_COLS) to out as new events. */
static int rows_to_list(const PGresult *r, event_list_t *out, chr_err_t *err)
{
    int rows = PQntuples(r);
    for (int i = 0; i < rows; i++) {
        event_t ev;
        memset(&ev, 0, sizeof ev);
        ev.position = val_i64(r, i, 0);
        snprintf(ev.id, sizeof ev.id, "%s", PQgetvalue(r, i, 1));
        ev.stream = val_dup(r, i, 2);
        ev.version = val_i64(r, i, 3);
        ev.type = val_dup(r, i, 4);
        ev.data = json_dup(r, i, 5);
        ev.metadata = json_dup(r, i, 6);
        ev.timestamp = val_i64(r, i, 7);
        if (!ev.stream || !ev.type || !ev.data || (!ev.metadata && !PQgetisnull(r, i, 6)) ||
            event_list_push(out, &ev) != CHR_OK) {
            event_free(&ev);
            return chr_fail(err, CHR_ENOMEM, "", "out of memory reading events");
        }
    }
    return CHR_OK;
}

/* Hands each row of r to fn as store_val_t values: integers by type, reals
 * (float and numeric), booleans as 0/1, NULL, and the rest as text. */
static int deliver_rows(const PGresult *r, store_row_fn fn, void *user, chr_err_t *err)
{
    int cols = PQnfields(r), rows = PQntuples(r);
    store_val_t local[32];
    store_val_t *vals = cols <= 32 ? local : malloc((size_t)cols * sizeof *vals);
    if (!vals) return chr_fail(err, CHR_ENOMEM, "", "out of memory");
    for (int i = 0; i < rows; i++) {
        for (int c = 0; c < cols; c++) {
            if (PQgetisnull(r, i, c)) {
                vals[c] = (store_val_t){.type = SV_NULL};
                continue;
            }
            const char *v = PQgetvalue(r, i, c);
            switch (PQftype(r, c)) {
            case OID_INT2:
            case OID_INT4:
            case OID_INT8:
            case OID_OID:
                vals[c] = (store_val_t){.type = SV_INT, .i = strtoll(v, NULL, 10)};
                break;
            case OID_BOOL:
                vals[c] = (store_val_t){.type = SV_INT, .i = v[0] == 't'};
                break;
            case OID_FLOAT4:
            case OID_FLOAT8:
            case OID_NUMERIC:
                vals[c] = (store_val_t){.type = SV_REAL, .r = strtod(v, NULL)};
                break;
            default:
                vals[c] = (store_val_t){.type = SV_TEXT, .s = v};
            }
        }
        if (fn(user, vals, (size_t)cols) != 0) break;
    }
    if (vals != local) free(vals);
    return CHR_OK;
}

static void count_error(pg_store_t *s, int rc)
{
    if (rc == CHR_ESTORE || rc == CHR_EUNAVAILABLE) atomic_fetch_add(&s->c_errors, 1);
}

/* Announces head to store.c's waiters and listeners once, whichever thread
 * learns of it first (the writer for its own commits, the listener for
 * other instances'). */
static void publish_head(pg_store_t *s, int64_t head)
{
    int_fast64_t prev = atomic_load(&s->known_head);
    while (head > prev && !atomic_compare_exchange_weak(&s->known_head, &prev, head)) {
    }
    if (head > prev) store_notify_commit(&s->base, head);
}

/* ---- migrations --------------------------------------------------------- */

static int schema_version(pg_conn_t *c, int *version, chr_err_t *err)
{
    *version = 0;
    PGresult *r;
    int rc = pg_conn_exec(c, "SELECT to_regclass('events.chronicle_migrations') IS NOT NULL", NULL,
                          0, &r, err);
    if (rc) return rc;
    bool exists = PQntuples(r) == 1 && PQgetvalue(r, 0, 0)[0] == 't';
    PQclear(r);
    if (!exists) return CHR_OK;
    rc = pg_conn_exec(c, "SELECT coalesce(max(version), 0) FROM events.chronicle_migrations", NULL,
                      0, &r, err);
    if (rc) return rc;
    if (PQntuples(r) == 1) *version = (int)val_i64(r, 0, 0);
    PQclear(r);
    return CHR_OK;
}

/* Applies pending migrations on c in one transaction, under an advisory
 * lock so instances starting together apply each migration once: the
 * second waits for the first, then finds nothing left to do. */
static int migrate_conn(pg_conn_t *c, chr_err_t *err)
{
    int latest = pg_migrations[pg_migrations_count - 1].version, current = 0;
    int rc = schema_version(c, &current, err);
    if (rc || current >= latest) return rc;
    char begin[320];
    snprintf(begin, sizeof begin,
             "BEGIN ISOLATION LEVEL READ COMMITTED; SELECT pg_advisory_xact_lock(%d, %d); "
             "CREATE SCHEMA IF NOT EXISTS events; CREATE TABLE IF NOT EXISTS "
             "events.chronicle_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, "
             "applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
             PG_LOCK_CLASS, PG_LOCK_MIGRATE);
    rc = pg_conn_simple(c, begin, NULL, err);
    if (!rc) rc = schema_version(c, &current, err);
    for (size_t i = 0; !rc && i < pg_migrations_count; i++) {
        const pg_migration_t *m = &pg_migrations[i];
        if (m->version <= current) continue;
        rc = pg_conn_simple(c, m->sql, NULL, err);
        if (rc) break;
        store_val_t p[2] = {{.type = SV_INT, .i = m->version}, {.type = SV_TEXT, .s = m->name}};
        rc = pg_conn_exec(c,
                          "INSERT INTO events.chronicle_migrations (version, name) VALUES "
                          "($1::integer, $2)",
                          p, 2, NULL, err);
    }
    if (!rc) return pg_conn_simple(c, "COMMIT", NULL, err);
    if (c->pg && !c->broken && PQtransactionStatus(c->pg) != PQTRANS_IDLE)
        pg_conn_simple(c, "ROLLBACK", NULL, NULL);
    pg_conn_end_tx(c);
    return rc;
}

/* ---- the listener --------------------------------------------------------- */

/* Waits up to ms for the stop byte; true when it came. */
static bool listener_sleep(pg_store_t *s, int ms)
{
    struct pollfd p = {.fd = s->wake[0], .events = POLLIN};
    return poll(&p, 1, ms) > 0;
}

/* After (re)connecting: what committed while we were not listening. */
static void listener_catch_up(pg_store_t *s)
{
    PGresult *r;
    chr_err_t err;
    if (pg_conn_exec(&s->l, SQL_HEAD, NULL, 0, &r, &err) != CHR_OK) return;
    if (PQntuples(r) == 1) publish_head(s, val_i64(r, 0, 0));
    PQclear(r);
}

static void *listener_main(void *arg)
{
    pg_store_t *s = arg;
    uint64_t listening = 0; /* the connection generation LISTEN ran on */
    int backoff = 50;
    for (;;) {
        chr_err_t err;
        if (pg_conn_ensure(&s->l, &err) != CHR_OK) {
            if (listener_sleep(s, backoff)) break;
            backoff = backoff < 2000 ? backoff * 2 : 2000;
            continue;
        }
        backoff = 50;
        if (s->l.generation != listening) { /* LISTEN ran in the connection's setup */
            listening = s->l.generation;
            listener_catch_up(s);
        }
        struct pollfd p[2] = {{.fd = PQsocket(s->l.pg), .events = POLLIN},
                              {.fd = s->wake[0], .events = POLLIN}};
        if (poll(p, 2, -1) < 0) {
            if (errno != EINTR && listener_sleep(s, 100)) break;
            continue;
        }
        if (p[1].revents) break;
        if (!PQconsumeInput(s->l.pg)) {
            s->l.broken = true;
            continue;
        }
        int own = atomic_load(&s->writer_pid);
        int64_t head = 0;
        PGnotify *n;
        while ((n = PQnotifies(s->l.pg)) != NULL) {
            if (n->be_pid != own) {
                int64_t h = strtoll(n->extra, NULL, 10);
                if (h > head) head = h;
            }
            PQfreemem(n);
        }
        if (PQstatus(s->l.pg) != CONNECTION_OK) s->l.broken = true;
        if (head > 0) publish_head(s, head);
    }
    return NULL;
}

/* Starts the listener on the store's first use: store.c sets up the waiters
 * it wakes only after the backend's open returned. */
static void listener_start(pg_store_t *s)
{
    if (s->read_only || atomic_load(&s->listener_started)) return;
    pthread_mutex_lock(&s->llock);
    if (!s->listener_closed && !atomic_load(&s->listener_started) &&
        pthread_create(&s->listener, NULL, listener_main, s) == 0)
        atomic_store(&s->listener_started, true);
    pthread_mutex_unlock(&s->llock);
}

/* ---- readers ------------------------------------------------------------ */

/* Borrows a reader connection (connected on first use), opening one while
 * under the limit, else waiting for one to be returned. */
static int reader_get(pg_store_t *s, reader_t **out, chr_err_t *err)
{
    listener_start(s);
    pthread_mutex_lock(&s->rlock);
    for (;;) {
        if (s->free_readers) {
            reader_t *r = s->free_readers;
            s->free_readers = r->next;
            pthread_mutex_unlock(&s->rlock);
            *out = r;
            return CHR_OK;
        }
        if (s->n_readers < s->max_readers) {
            reader_t *r = calloc(1, sizeof *r);
            if (!r) {
                pthread_mutex_unlock(&s->rlock);
                return chr_fail(err, CHR_ENOMEM, "", "out of memory");
            }
            pg_conn_init(&r->conn, &s->info, "reader", READER_SETUP);
            s->all_readers[s->n_readers++] = r;
            pthread_mutex_unlock(&s->rlock);
            *out = r;
            return CHR_OK;
        }
        pthread_cond_wait(&s->rcond, &s->rlock);
    }
}

static void reader_put(pg_store_t *s, reader_t *r)
{
    pthread_mutex_lock(&s->rlock);
    r->next = s->free_readers;
    s->free_readers = r;
    pthread_cond_signal(&s->rcond);
    pthread_mutex_unlock(&s->rlock);
}

/* One statement on a reader; *out is a new result on CHR_OK. own: sql
 * reads chronicle's own tables, whose absence means an unmigrated database
 * (said so) rather than a failure. */
static int reader_exec_on(pg_store_t *s, bool own, const char *sql, const store_val_t *p, size_t n,
                          PGresult **out, chr_err_t *err)
{
    reader_t *r;
    int rc = reader_get(s, &r, err);
    if (rc) return rc;
    rc = pg_conn_exec(&r->conn, sql, p, n, out, err);
    bool missing = rc == CHR_ESTORE && strcmp(r->conn.sqlstate, "42P01") == 0; /* no such table */
    reader_put(s, r);
    if (own && missing)
        return chr_fail(err, CHR_ESTORE, "DATABASE_URL",
                        "the database has no chronicle schema yet; run `chronicle migrate up` "
                        "(or start `chronicle serve`) to create it");
    count_error(s, rc);
    return rc;
}

static int reader_exec(pg_store_t *s, const char *sql, const store_val_t *p, size_t n,
                       PGresult **out, chr_err_t *err)
{
    return reader_exec_on(s, true, sql, p, n, out, err);
}

static int read_events(pg_store_t *s, const char *sql, const store_val_t *p, size_t n,
                       event_list_t *out, chr_err_t *err)
{
    PGresult *r;
    int rc = reader_exec(s, sql, p, n, &r, err);
    if (rc) return rc;
    rc = rows_to_list(r, out, err);
    PQclear(r);
    return rc;
}

static int64_t limit_value(size_t limit)
{
    return limit > (size_t)INT64_MAX ? INT64_MAX : (int64_t)limit;
}

static int pg_read_stream(store_t *base, const char *stream, int64_t from, size_t limit,
                          bool backwards, event_list_t *out, chr_err_t *err)
{
    pg_store_t *s = (pg_store_t *)base;
    if (backwards && from == 0) from = INT64_MAX;
    store_val_t p[3] = {{.type = SV_TEXT, .s = stream},
                        {.type = SV_INT, .i = from},
                        {.type = SV_INT, .i = limit_value(limit)}};
    return read_events(s,
                       backwards ? "SELECT " EVENT_COLS " FROM events.events WHERE aggregate_id = "
                                   "$1 AND version <= $2::bigint ORDER BY version DESC LIMIT "
                                   "$3::bigint"
                                 : "SELECT " EVENT_COLS " FROM events.events WHERE aggregate_id = "
                                   "$1 AND version >= $2::bigint ORDER BY version LIMIT $3::bigint",
                       p, 3, out, err);
}

/* The array literal {"a","b"} of the type names, for = ANY($n::text[]): one
 * statement whatever the number of types; the names stay bound values. New
 * string or NULL. */
static char *types_array(const char *const *types, size_t n)
{
    size_t len = 3;
    for (size_t i = 0; i < n; i++)
        len += 3 + 2 * strlen(types[i]);
    char *a = malloc(len);
    if (!a) return NULL;
    size_t o = 0;
    a[o++] = '{';
    for (size_t i = 0; i < n; i++) {
        if (i) a[o++] = ',';
        a[o++] = '"';
        for (const char *c = types[i]; *c; c++) {
            if (*c == '"' || *c == '\\') a[o++] = '\\';
            a[o++] = *c;
        }
        a[o++] = '"';
    }
    a[o++] = '}';
    a[o] = '\0';
    return a;
}

static int pg_read_all(store_t *base, int64_t after, size_t limit, const char *const *types,
                       size_t n_types, event_list_t *out, chr_err_t *err)
{
    pg_store_t *s = (pg_store_t *)base;
    store_val_t p[3] = {{.type = SV_INT, .i = after}, {.type = SV_INT, .i = limit_value(limit)}};
    if (n_types == 0)
        return read_events(s,
                           "SELECT " EVENT_COLS " FROM events.events WHERE position > $1::bigint "
                           "ORDER BY position LIMIT $2::bigint",
                           p, 2, out, err);
    if (n_types > MAX_TYPES)
        return chr_fail(err, CHR_EINVAL, "types", "at most %d event types may be given", MAX_TYPES);
    char *array = types_array(types, n_types);
    if (!array) return chr_fail(err, CHR_ENOMEM, "", "out of memory");
    p[2] = (store_val_t){.type = SV_TEXT, .s = array};
    int rc = read_events(s,
                         "SELECT " EVENT_COLS " FROM events.events WHERE position > $1::bigint "
                         "AND type = ANY($3::text[]) ORDER BY position LIMIT $2::bigint",
                         p, 3, out, err);
    free(array);
    return rc;
}

static int pg_read_event(store_t *base, const char *id, event_t *out, chr_err_t *err)
{
    pg_store_t *s = (pg_store_t *)base;
    event_list_t list = {0};
    store_val_t p = {.type = SV_TEXT, .s = id};
    int rc = read_events(s, SQL_BY_ID, &p, 1, &list, err);
    if (!rc && list.len == 0) rc = chr_fail(err, CHR_ENOTFOUND, "id", "no event with id %s", id);
    if (!rc) {
        *out = list.items[0];
        list.len = 0;
    }
    event_list_free(&list);
    return rc;
}

/* A one-value query on a reader. */
static int reader_scalar(pg_store_t *s, const char *sql, const store_val_t *p, size_t n, int64_t *v,
                         chr_err_t *err)
{
    PGresult *r;
    int rc = reader_exec(s, sql, p, n, &r, err);
    if (rc) return rc;
    if (PQntuples(r) == 1 && !PQgetisnull(r, 0, 0))
        *v = val_i64(r, 0, 0);
    else
        rc = chr_fail(err, CHR_ESTORE, "", "postgres: no value from \"%s\"", sql);
    PQclear(r);
    return rc;
}

static int pg_stream_version(store_t *base, const char *stream, int64_t *version, chr_err_t *err)
{
    store_val_t p = {.type = SV_TEXT, .s = stream};
    return reader_scalar((pg_store_t *)base, SQL_VERSION, &p, 1, version, err);
}

static int pg_head_position(store_t *base, int64_t *position, chr_err_t *err)
{
    return reader_scalar((pg_store_t *)base, SQL_HEAD, NULL, 0, position, err);
}

static int pg_ping(store_t *base, chr_err_t *err)
{
    int64_t one;
    return reader_scalar((pg_store_t *)base, "SELECT 1", NULL, 0, &one, err);
}

static int pg_query(store_t *base, const char *sql, const store_val_t *params, size_t n,
                    store_row_fn fn, void *user, chr_err_t *err)
{
    pg_store_t *s = (pg_store_t *)base;
    PGresult *r;
    int rc = reader_exec_on(s, false, sql, params, n, &r, err);
    if (rc) return rc;
    rc = deliver_rows(r, fn, user, err);
    PQclear(r);
    return rc;
}

/* ---- the writer --------------------------------------------------------- */

/* One batch: one transaction holding the head lock. */
typedef struct batch {
    pg_store_t *s;
    int64_t pos;  /* the last position handed out */
    bool sp_open; /* the savepoint "unit" exists (or is pending) */
    bool fatal;   /* the transaction is lost: every unit fails with ferr */
    chr_err_t ferr;
    /* Savepoint statements not sent yet: they travel with the unit's first
     * statement, in the same round trip. */
    const char *pending[8];
    size_t n_pending;
    /* The running unit's event INSERT, not sent yet: it travels with the
     * unit's next statement, in the same round trip (see defer_insert). */
    bool deferred;
    store_val_t dparams[8];
    event_t *dev;
    bool dgenerated;
    /* A unit's last projection statement, not sent yet (see defer_exec): it
     * travels with the next statement, whichever unit sends it. */
    struct logged *tail;
    uint64_t tail_unit;  /* the seq of the unit it belongs to */
    job_t *tail_job;     /* that unit's job, once the unit finished */
    int64_t tail_pos0;   /* the last position before that unit */
    bool restart;        /* an earlier unit's tail failed: the running unit runs again */
    int64_t restart_pos; /* from this position */
    uint64_t seq;        /* units run so far */
    job_t *cur_job;
} batch_t;

/* A statement an apply callback ran, kept to run again should a later
 * statement of the unit fail and the callback carry on (see unit_recover).
 * One allocation: the struct, its params, then the texts. */
typedef struct logged {
    struct logged *next;
    const char *sql;
    store_val_t *params;
    size_t n;
} logged_t;

/* The unit of work the writer is running. */
typedef struct unit {
    batch_t *b;
    store_uow_t *uow;
    bool savepoint;
    bool aborted;    /* a statement failed; the transaction needs ROLLBACK TO */
    bool log_failed; /* a statement could not be logged: no recovery */
    bool defer;      /* its one event's INSERT may wait for its next statement */
    bool no_guess;   /* read stream versions, do not assume new streams are new */
    bool dup;        /* the deferred INSERT met a unique constraint */
    uint64_t seq;    /* b->seq when it started */
    logged_t *log, **log_tail;
} unit_t;

typedef struct pg_tx {
    store_tx_t base;
    unit_t *u;
} pg_tx_t;

static void batch_fatal(batch_t *b, const chr_err_t *err)
{
    if (b->fatal) return;
    b->fatal = true;
    if (err && err->code != CHR_OK)
        b->ferr = *err;
    else
        chr_fail(&b->ferr, CHR_ESTORE, "", "postgres: the batch transaction failed");
}

/* A statement on the writer's transaction. A lost connection loses the
 * batch; so does any failure outside a savepoint (the transaction is
 * aborted then). */
static void tail_failed(batch_t *b, const chr_err_t *terr);

/* A statement on the writer's transaction. A lost connection loses the
 * batch; so does any failure outside a savepoint (the transaction is
 * aborted then). What waits to be sent goes first, all in one round trip:
 * the tail of an earlier unit, the pending savepoint statements, the
 * running unit's deferred INSERT, its own tail, then sql. */
static int w_exec(batch_t *b, unit_t *u, const char *sql, const store_val_t *p, size_t n,
                  PGresult **out, chr_err_t *err)
{
    if (b->fatal) {
        if (err) *err = b->ferr;
        return b->ferr.code;
    }
    chr_err_t local;
    if (!err) err = &local;
    if (b->restart)
        return chr_fail(err, CHR_ESTORE, "", "postgres: the unit runs again (an earlier one failed)");
    struct logged *tail = b->tail;
    bool own_tail = tail && u && b->tail_unit == u->seq;
    pg_stmt_t st[sizeof b->pending / sizeof b->pending[0] + 3];
    size_t k = 0;
    int i_tail = -1;
    PGresult *ins = NULL;
    if (tail && !own_tail) {
        i_tail = (int)k;
        st[k++] = (pg_stmt_t){.sql = tail->sql, .params = tail->params, .n = tail->n};
    }
    size_t p0 = k;
    for (size_t i = 0; i < b->n_pending; i++)
        st[k++] = (pg_stmt_t){.sql = b->pending[i]};
    size_t p1 = k;
    bool deferred = b->deferred;
    if (deferred)
        st[k++] = (pg_stmt_t){.sql = SQL_INSERT, .params = b->dparams, .n = 8, .out = &ins};
    if (own_tail) {
        i_tail = (int)k;
        st[k++] = (pg_stmt_t){.sql = tail->sql, .params = tail->params, .n = tail->n};
    }
    st[k++] = (pg_stmt_t){.sql = sql, .params = p, .n = n, .out = out};
    b->tail = NULL;
    b->deferred = false;
    b->n_pending = 0;
    int failed = -1, rc;
    if (k == 1)
        rc = pg_conn_exec(&b->s->w, sql, p, n, out, err);
    else
        rc = pg_conn_pipeline(&b->s->w, NULL, 0, st, k, &failed, err);
    free(tail);
    bool pre_failed = failed >= 0 && (size_t)failed >= p0 && (size_t)failed < p1;
    if (rc == CHR_OK && deferred && strcmp(PQcmdTuples(ins), "1") != 0) {
        /* Nothing inserted: the unit is to be undone (its savepoint) and
         * looked at again as a duplicate (run_unit). */
        if (out) {
            PQclear(*out);
            *out = NULL;
        }
        if (b->dgenerated) b->dev->id[0] = '\0';
        if (u) u->dup = true;
        rc = chr_fail(err, CHR_ECONFLICT, "", "postgres: the event is stored already");
    }
    PQclear(ins);
    if (rc == CHR_OK || (u && u->dup)) return rc;
    if (rc == CHR_EUNAVAILABLE || b->s->w.broken || pre_failed) {
        batch_fatal(b, err);
    } else if (failed >= 0 && failed == i_tail && !own_tail) {
        /* An earlier unit's statement failed: that unit fails, this one
         * runs again (its statements came back aborted). */
        tail_failed(b, err);
        rc = chr_fail(err, CHR_ESTORE, "", "postgres: the unit runs again (an earlier one failed)");
    } else if (PQtransactionStatus(b->s->w.pg) == PQTRANS_INERROR) {
        if (u && u->savepoint)
            u->aborted = true;
        else
            batch_fatal(b, err);
    }
    return rc;
}

/* The pending savepoint statements, then sql, as one simple-protocol string
 * in buf; false when they do not fit. */
static bool with_pending(batch_t *b, const char *sql, char *buf, size_t size)
{
    size_t o = 0;
    for (size_t i = 0; i < b->n_pending; i++) {
        int w = snprintf(buf + o, size - o, "%s; ", b->pending[i]);
        if (w < 0 || (size_t)w >= size - o) return false;
        o += (size_t)w;
    }
    int w = snprintf(buf + o, size - o, "%s", sql);
    return w >= 0 && (size_t)w < size - o;
}

static void flush_tail(batch_t *b);

/* Parameterless control statements (savepoints, commit), after whatever
 * is pending; failing loses the batch. */
static int w_simple(batch_t *b, const char *sql, chr_err_t *err)
{
    if (b->fatal) {
        if (err) *err = b->ferr;
        return b->ferr.code;
    }
    chr_err_t local;
    if (!err) err = &local;
    if (b->tail) flush_tail(b);
    if (b->fatal) {
        *err = b->ferr;
        return b->ferr.code;
    }
    char buf[512];
    int rc;
    if (!with_pending(b, sql, buf, sizeof buf))
        rc = chr_fail(err, CHR_ESTORE, "", "postgres: control statement too long");
    else
        rc = pg_conn_simple(&b->s->w, buf, NULL, err);
    b->n_pending = 0;
    if (rc) batch_fatal(b, err);
    return rc;
}

/* The stream's version as of now in this transaction: from the cache
 * (valid while the head lock is held and no other instance committed since
 * this process last did) or the table. */
static int writer_version(batch_t *b, unit_t *u, const char *stream, bool guess, int64_t *v,
                          chr_err_t *err)
{
    pg_store_t *s = b->s;
    if (strmap_get(&s->versions, stream, v)) return CHR_OK;
    if (guess) {
        /* An append that expects a new stream assumes it: the INSERT of
         * version 1 then either succeeds (it was new) or meets UNIQUE
         * (aggregate_id, version), and run_unit decides again with the
         * version read. Saves a round trip per new stream (every entity
         * created with a generated key). */
        *v = 0;
        return CHR_OK;
    }
    store_val_t p = {.type = SV_TEXT, .s = stream};
    PGresult *r;
    int rc = w_exec(b, u, SQL_VERSION, &p, 1, &r, err);
    if (rc) return rc;
    *v = PQntuples(r) == 1 ? val_i64(r, 0, 0) : 0;
    PQclear(r);
    if (s->versions.len >= VERSION_CACHE_MAX) strmap_clear(&s->versions);
    if (strmap_put(&s->versions, stream, *v) != 0) strmap_clear(&s->versions);
    return CHR_OK;
}

static bool expected_ok(int64_t expected, int64_t actual)
{
    if (expected == STORE_ANY) return true;
    if (expected == STORE_STREAM_EXISTS) return actual > 0;
    return expected == actual;
}

static int conflict(store_append_t *ap, int64_t actual, chr_err_t *err)
{
    if (err) {
        err->conflict.expected = ap->expected_version;
        err->conflict.actual = actual;
    }
    if (ap->expected_version == STORE_STREAM_EXISTS)
        return chr_fail(err, CHR_ECONFLICT, "expected_version",
                        "stream \"%s\" does not exist; expected it to exist", ap->stream);
    if (ap->expected_version == STORE_NO_STREAM)
        return chr_fail(err, CHR_ECONFLICT, "expected_version",
                        "stream \"%s\" already exists at version %lld; expected no stream",
                        ap->stream, (long long)actual);
    return chr_fail(err, CHR_ECONFLICT, "expected_version",
                    "stream \"%s\" is at version %lld; expected version %lld", ap->stream,
                    (long long)actual, (long long)ap->expected_version);
}

/* Idempotency: is every event of ap already stored in ap's stream with the
 * same type and data (compared as JSON values by PostgreSQL)? Returns CHR_OK
 * (and fills the events from storage), CHR_ENOTFOUND when none of them is
 * stored, CHR_ECONFLICT, or an error. */
static int find_replay(batch_t *b, unit_t *u, store_append_t *ap, chr_err_t *err)
{
    size_t found = 0;
    for (size_t i = 0; i < ap->n_events; i++) {
        event_t *ev = &ap->events[i];
        if (!ev->id[0]) continue;
        store_val_t p[4] = {{.type = SV_TEXT, .s = ev->id},
                            {.type = SV_TEXT, .s = ap->stream},
                            {.type = SV_TEXT, .s = ev->type},
                            {.type = SV_TEXT, .s = ev->data}};
        PGresult *r;
        int rc = w_exec(b, u, SQL_REPLAY, p, 4, &r, err);
        if (rc) return rc;
        if (PQntuples(r) == 1) {
            bool same = PQgetvalue(r, 0, 3)[0] == 't';
            if (!same) {
                PQclear(r);
                return chr_fail(err, CHR_ECONFLICT, "id",
                                "event id %s is already stored with a different stream, type "
                                "or data",
                                ev->id);
            }
            ev->position = val_i64(r, 0, 0);
            ev->version = val_i64(r, 0, 1);
            ev->timestamp = val_i64(r, 0, 2);
            found++;
        }
        PQclear(r);
    }
    if (found == 0) return CHR_ENOTFOUND;
    if (found < ap->n_events)
        return chr_fail(err, CHR_ECONFLICT, "id",
                        "%zu of the %zu events are already stored; a retried append must "
                        "repeat exactly the same events",
                        found, ap->n_events);
    ap->version = ap->events[ap->n_events - 1].version;
    ap->idempotent = true;
    return CHR_OK;
}

/* Internal result of apply_append: an INSERT met a unique constraint (a
 * duplicate event id, or a (stream, version) taken behind our back). */
#define PG_DUPLICATE 1

/* Inserts one event whose fields are all set. *dup: nothing was inserted
 * because a unique constraint already holds the row. */
/* SQL_INSERT's parameters for ev (borrowed from it and stream). */
static void insert_params(store_val_t p[8], const char *stream, const event_t *ev)
{
    p[0] = (store_val_t){.type = SV_TEXT, .s = ev->id};
    p[1] = (store_val_t){.type = SV_TEXT, .s = ev->type};
    p[2] = (store_val_t){.type = SV_TEXT, .s = stream};
    p[3] = (store_val_t){.type = SV_TEXT, .s = ev->data};
    p[4] = (store_val_t){.type = SV_INT, .i = ev->timestamp};
    p[5] = ev->metadata ? (store_val_t){.type = SV_TEXT, .s = ev->metadata}
                        : (store_val_t){.type = SV_NULL};
    p[6] = (store_val_t){.type = SV_INT, .i = ev->version};
    p[7] = (store_val_t){.type = SV_INT, .i = ev->position};
}

static int insert_event(batch_t *b, unit_t *u, const char *stream, const event_t *ev, bool *dup,
                        chr_err_t *err)
{
    store_val_t p[8];
    insert_params(p, stream, ev);
    PGresult *r;
    int rc = w_exec(b, u, SQL_INSERT, p, 8, &r, err);
    if (rc) return rc;
    *dup = strcmp(PQcmdTuples(r), "1") != 0;
    PQclear(r);
    return CHR_OK;
}

typedef struct undo {
    const char *stream;
    int64_t version;
    bool guessed; /* the version was assumed, not known: forget it on undo */
} undo_t;

/* Applies one append in the open transaction. Records the old cached
 * version in undo so a failed unit can restore the cache. */
static int apply_append(batch_t *b, unit_t *u, store_append_t *ap, int64_t now, undo_t *undo,
                        chr_err_t *err)
{
    int64_t cur;
    bool known = strmap_get(&b->s->versions, ap->stream, &cur);
    int rc = writer_version(b, u, ap->stream, ap->expected_version == STORE_NO_STREAM && !u->no_guess,
                            &cur, err);
    if (rc) return rc;
    undo->stream = ap->stream;
    undo->version = cur;
    undo->guessed = !known && ap->expected_version == STORE_NO_STREAM && !u->no_guess;
    ap->idempotent = false;

    if (!expected_ok(ap->expected_version, cur)) {
        if (b->tail && b->tail_unit != u->seq) {
            /* cur may count on an earlier unit whose last statement is not
             * sent yet: it must stand before a conflict is answered. */
            flush_tail(b);
            if (b->fatal || b->restart)
                return chr_fail(err, CHR_ESTORE, "", "postgres: the unit runs again");
        }
        rc = find_replay(b, u, ap, err);
        if (rc == CHR_ENOTFOUND) return conflict(ap, cur, err);
        return rc;
    }
    for (size_t i = 0; i < ap->n_events; i++) {
        event_t *ev = &ap->events[i];
        if (ev->timestamp != 0 && ev->timestamp < PG_MIN_TIMESTAMP_US) {
            char f[48];
            snprintf(f, sizeof f, "events[%zu].timestamp", i);
            return chr_fail(err, CHR_EINVAL, f, "%s is before 4714 BC, outside PostgreSQL's range",
                            f);
        }
    }
    for (size_t i = 0; i < ap->n_events; i++) {
        event_t *ev = &ap->events[i];
        bool generated = !ev->id[0];
        if (generated) uuid_v7_generate(ev->id);
        if (ev->timestamp == 0) ev->timestamp = now;
        ev->version = cur + 1 + (int64_t)i;
        ev->position = ++b->pos;
        if (u->defer) { /* see defer_insert */
            insert_params(b->dparams, ap->stream, ev);
            b->dev = ev;
            b->dgenerated = generated;
            b->deferred = true;
            continue;
        }
        bool dup = false;
        rc = insert_event(b, u, ap->stream, ev, &dup, err);
        if (!rc && !dup) continue;
        if (generated) ev->id[0] = '\0';
        return rc ? rc : PG_DUPLICATE;
    }
    ap->version = cur + (int64_t)ap->n_events;
    if (strmap_put(&b->s->versions, ap->stream, ap->version) != 0) strmap_clear(&b->s->versions);
    return CHR_OK;
}

static void undo_cache(pg_store_t *s, undo_t *undo, size_t n)
{
    for (size_t i = n; i-- > 0;) {
        if (!undo[i].stream) continue;
        if (undo[i].guessed)
            strmap_del(&s->versions, undo[i].stream);
        else if (strmap_put(&s->versions, undo[i].stream, undo[i].version) != 0)
            strmap_clear(&s->versions);
        undo[i].stream = NULL;
    }
}

/* After a duplicate, with the unit rolled back: the unit succeeds as a
 * replay only when every append is a full replay (see SQLite's twin). */
static int replay_unit(batch_t *b, unit_t *u, store_uow_t *uow, chr_err_t *err)
{
    for (size_t a = 0; a < uow->n_appends; a++) {
        int rc = find_replay(b, u, &uow->appends[a], err);
        if (rc) return rc;
    }
    return CHR_OK;
}

static void log_free(unit_t *u)
{
    for (logged_t *l = u->log, *next; l; l = next) {
        next = l->next;
        free(l);
    }
    u->log = NULL;
    u->log_tail = &u->log;
}

/* Keeps a copy of a statement the apply callback ran successfully. */
/* A copy of a statement and its parameters in one allocation; NULL when out
 * of memory. */
static logged_t *stmt_copy(const char *sql, const store_val_t *params, size_t n)
{
    size_t size = sizeof(logged_t) + n * sizeof(store_val_t) + strlen(sql) + 1;
    for (size_t i = 0; i < n; i++)
        if (params[i].type == SV_TEXT && params[i].s) size += strlen(params[i].s) + 1;
    logged_t *l = malloc(size);
    if (!l) return NULL;
    l->next = NULL;
    l->n = n;
    l->params = (store_val_t *)(l + 1);
    char *text = (char *)(l->params + n);
    size_t len = strlen(sql) + 1;
    memcpy(text, sql, len);
    l->sql = text;
    text += len;
    for (size_t i = 0; i < n; i++) {
        l->params[i] = params[i];
        if (params[i].type == SV_TEXT && params[i].s) {
            len = strlen(params[i].s) + 1;
            memcpy(text, params[i].s, len);
            l->params[i].s = text;
            text += len;
        }
    }
    return l;
}

static void log_stmt(unit_t *u, const char *sql, const store_val_t *params, size_t n)
{
    logged_t *l = stmt_copy(sql, params, n);
    if (!l) {
        u->log_failed = true;
        return;
    }
    *u->log_tail = l;
    u->log_tail = &l->next;
}

/* An earlier unit's tail failed (the transaction is aborted): back to that
 * unit's savepoint, which still exists (the RELEASE after the tail came back
 * aborted), fail that unit alone, and have the running unit, if any, run
 * again from that unit's first position. */
static void tail_failed(batch_t *b, const chr_err_t *terr)
{
    job_t *j = b->tail_job;
    if (j) {
        j->rc = terr->code;
        if (j->err) *j->err = *terr;
    }
    /* Units after it may have cached versions that counted on it. */
    strmap_clear(&b->s->versions);
    chr_err_t e;
    if (pg_conn_simple(&b->s->w, "ROLLBACK TO SAVEPOINT unit", NULL, &e) != CHR_OK) {
        batch_fatal(b, &e);
        return;
    }
    b->pos = b->tail_pos0;
    b->restart = true;
    b->restart_pos = b->tail_pos0;
}

/* Sends the tail on its own (before a control statement or the commit). */
static void flush_tail(batch_t *b)
{
    logged_t *t = b->tail;
    b->tail = NULL;
    chr_err_t e;
    int rc = pg_conn_exec(&b->s->w, t->sql, t->params, t->n, NULL, &e);
    free(t);
    if (rc == CHR_OK) return;
    if (rc == CHR_EUNAVAILABLE || b->s->w.broken)
        batch_fatal(b, &e);
    else
        tail_failed(b, &e);
}

/* A statement of the apply callback failed (the transaction is aborted) and
 * the callback carried on. PostgreSQL cannot continue an aborted
 * transaction, so roll back to the unit's savepoint and redo what the unit
 * had done: its appends and the statements that succeeded. The common path
 * pays only for the log; this runs only after an ignored error. */
static int unit_recover(unit_t *u, chr_err_t *err)
{
    batch_t *b = u->b;
    if (u->log_failed)
        return chr_fail(err, CHR_ENOMEM, "", "out of memory keeping the unit's statements");
    b->deferred = false; /* sent already (a statement failed after it); redone below */
    int rc = w_simple(b, "ROLLBACK TO SAVEPOINT unit", err);
    for (size_t a = 0; !rc && a < u->uow->n_appends; a++) {
        store_append_t *ap = &u->uow->appends[a];
        if (ap->idempotent) continue;
        for (size_t i = 0; !rc && i < ap->n_events; i++) {
            bool dup = false;
            rc = insert_event(b, u, ap->stream, &ap->events[i], &dup, err);
            if (!rc && dup)
                rc = chr_fail(err, CHR_ESTORE, "", "postgres: could not redo the unit's appends");
        }
    }
    for (logged_t *l = u->log; !rc && l; l = l->next)
        rc = w_exec(b, u, l->sql, l->params, l->n, NULL, err);
    if (!rc) u->aborted = false;
    return rc;
}

static int pg_tx_exec(store_tx_t *base, const char *sql, const store_val_t *params, size_t n,
                      int64_t *changes, chr_err_t *err)
{
    unit_t *u = ((pg_tx_t *)base)->u;
    if (u->aborted) {
        int rc = unit_recover(u, err);
        if (rc) return rc;
    }
    if (u->defer && !changes && !u->b->fatal && !u->b->restart) {
        /* defer_exec: the statement waits to travel with the next one sent
         * (the unit's next, the next unit's first, or the commit's); its
         * failure then fails this unit alone (see tail_failed). */
        logged_t *t = u->b->tail ? NULL : stmt_copy(sql, params, n); /* one at a time */
        if (t) {
            u->b->tail = t;
            u->b->tail_unit = u->seq;
            log_stmt(u, sql, params, n);
            return CHR_OK;
        }
    }
    PGresult *r;
    int rc = w_exec(u->b, u, sql, params, n, &r, err);
    if (rc) return rc;
    if (changes) *changes = strtoll(PQcmdTuples(r), NULL, 10);
    PQclear(r);
    log_stmt(u, sql, params, n);
    return CHR_OK;
}

static int pg_tx_query(store_tx_t *base, const char *sql, const store_val_t *params, size_t n,
                       store_row_fn fn, void *user, chr_err_t *err)
{
    unit_t *u = ((pg_tx_t *)base)->u;
    if (u->aborted) {
        int rc = unit_recover(u, err);
        if (rc) return rc;
    }
    PGresult *r;
    int rc = w_exec(u->b, u, sql, params, n, &r, err);
    if (rc) return rc;
    rc = deliver_rows(r, fn, user, err);
    PQclear(r);
    return rc;
}

/* Sends the unit's deferred INSERT on its own: the callback ran no
 * statement to carry it. PG_DUPLICATE when nothing was inserted. */
static int flush_deferred(batch_t *b, unit_t *u, chr_err_t *err)
{
    b->deferred = false;
    /* The unit's own tail came after the INSERT: it stays deferred. */
    logged_t *own = b->tail && b->tail_unit == u->seq ? b->tail : NULL;
    if (own) b->tail = NULL;
    PGresult *r;
    int rc = w_exec(b, u, SQL_INSERT, b->dparams, 8, &r, err);
    if (own) {
        if (b->tail) { /* cannot be: w_exec sent any tail; keep the order safe anyway */
            free(own);
            return chr_fail(err, CHR_ESTORE, "", "postgres: internal: two deferred statements");
        }
        b->tail = own;
    }
    if (rc) return rc;
    bool dup = strcmp(PQcmdTuples(r), "1") != 0;
    PQclear(r);
    if (!dup) return CHR_OK;
    if (b->dgenerated) b->dev->id[0] = '\0';
    return PG_DUPLICATE;
}

/* Opens the unit's savepoint (releasing the previous unit's): queued, to be
 * sent with the unit's first statement. */
static void savepoint_begin(batch_t *b)
{
    if (b->n_pending + 2 > sizeof b->pending / sizeof b->pending[0]) {
        w_simple(b, "SELECT 1", NULL); /* flush: only after many units without SQL */
    }
    if (b->sp_open) b->pending[b->n_pending++] = "RELEASE SAVEPOINT unit";
    b->pending[b->n_pending++] = "SAVEPOINT unit";
    b->sp_open = true;
}

/* Undoes the unit: back to its savepoint. When the savepoint is still
 * pending, the unit sent nothing and there is nothing to undo. */
static void savepoint_rollback(batch_t *b)
{
    if (b->n_pending) return;
    w_simple(b, "ROLLBACK TO SAVEPOINT unit", NULL);
}

/* Runs one unit of work inside the batch's transaction. */
static int run_unit(batch_t *b, store_uow_t *uow, int64_t now, chr_err_t *err)
{
    pg_store_t *s = b->s;
    size_t n_events = 0;
    for (size_t a = 0; a < uow->n_appends; a++)
        n_events += uow->appends[a].n_events;
    /* A lone single-event append needs no savepoint: ON CONFLICT DO NOTHING
     * reports duplicates without aborting the transaction. */
    bool savepoint = n_events > 1 || uow->apply || uow->n_appends > 1;
    size_t n_undo = uow->n_appends ? uow->n_appends : 1;
    undo_t undo_local[8];
    undo_t *undo = n_undo <= 8 ? undo_local : malloc(n_undo * sizeof *undo);
    if (!undo) return chr_fail(err, CHR_ENOMEM, "", "out of memory");
    int64_t pos0 = b->pos;

    int rc = CHR_OK;
    for (int attempt = 0; attempt < 2; attempt++) {
        memset(undo, 0, n_undo * sizeof *undo);
        b->pos = pos0;
        if (savepoint) savepoint_begin(b);
        /* A one-event unit with projection work (an entity command) defers
         * its INSERT to go with the callback's first statement: it has a
         * savepoint, so a duplicate found then undoes the unit alone. */
        unit_t u = {.b = b,
                    .uow = uow,
                    .savepoint = savepoint,
                    .defer = savepoint && uow->apply && n_events == 1 && uow->n_appends == 1,
                    .no_guess = attempt > 0,
                    .seq = ++b->seq};
        u.log_tail = &u.log;
        size_t a = 0;
        for (; a < uow->n_appends && rc == CHR_OK; a++)
            rc = apply_append(b, &u, &uow->appends[a], now, &undo[a], err);
        if (rc == CHR_OK && uow->apply) {
            pg_tx_t tx = {.base = {.store = &s->base}, .u = &u};
            rc = uow->apply(&tx.base, uow->apply_user, err);
            if (rc && err && err->code == CHR_OK) chr_fail(err, rc, "", "projection update failed");
            if (rc == CHR_OK && u.aborted) rc = unit_recover(&u, err);
        }
        if (rc == CHR_OK && b->deferred) rc = flush_deferred(b, &u, err);
        if (u.dup) rc = PG_DUPLICATE;
        if (b->restart && rc == CHR_OK) rc = CHR_ESTORE; /* whatever the callback made of it */
        log_free(&u);
        if (rc) {
            b->deferred = false; /* never sent: nothing to undo */
            if (b->tail && b->tail_unit == u.seq) { /* not sent: goes with the unit */
                free(b->tail);
                b->tail = NULL;
            }
            undo_cache(s, undo, a);
            if (b->restart) { /* see tail_failed */
                strmap_clear(&s->versions);
                pos0 = b->restart_pos;
            }
            b->pos = pos0;
            if (savepoint) savepoint_rollback(b);
        }
        if (b->fatal) {
            rc = b->ferr.code;
            if (err) *err = b->ferr;
            break;
        }
        if (b->restart) {
            /* An earlier unit failed late (tail_failed) and took this one's
             * statements with it: run it again, as if it came first. */
            b->restart = false;
            rc = CHR_OK;
            if (err) chr_err_clear(err);
            attempt--;
            continue;
        }
        if (rc == CHR_OK && b->tail && b->tail_unit == u.seq) {
            /* Its last statement is still to be sent: whom to fail and where
             * to restart should it fail later. */
            b->tail_job = b->cur_job;
            b->tail_pos0 = pos0;
        }
        if (rc != PG_DUPLICATE) break;
        /* Nothing of the unit is written now: is it a retry of stored events? */
        if (err) chr_err_clear(err);
        rc = replay_unit(b, NULL, uow, err);
        if (rc != CHR_ENOTFOUND) break;
        /* A (stream, version) was taken behind our back, or a stream
         * assumed new was not: forget the cache and decide again once, with
         * every version read. */
        strmap_clear(&s->versions);
        if (attempt == 0) {
            rc = CHR_OK;
            if (err) chr_err_clear(err);
            continue;
        }
        rc = chr_fail(err, CHR_ECONFLICT, "expected_version",
                      "a concurrent writer appended to the stream; retry");
    }
    if (undo != undo_local) free(undo);
    return rc;
}

/* Tells each caller of the batch its result and frees the jobs. */
static void finish_jobs(job_t *jobs)
{
    for (job_t *j = jobs, *next; j; j = next) {
        next = j->next;
        j->done(j->done_user, j->rc);
        free(j);
    }
}

static void count_batch(pg_store_t *s, size_t units, size_t events)
{
    atomic_fetch_add(&s->c_commits, 1);
    atomic_fetch_add(&s->c_units, units);
    atomic_fetch_add(&s->c_events, events);
    int b = 0;
    while (b < 7 && units >= ((size_t)2 << b))
        b++;
    atomic_fetch_add(&s->c_batch[b], 1);
}

/* Commits one batch: lock the head, run each unit, move the head, notify,
 * commit; or fail every unit that had not failed on its own. */
static void run_batch(pg_store_t *s, job_t *jobs)
{
    batch_t b = {.s = s};
    PGresult *r = NULL;
    chr_err_t berr = {0};
    int rc = pg_conn_simple(&s->w,
                            "BEGIN ISOLATION LEVEL READ COMMITTED; "
                            "SELECT position FROM events.head FOR UPDATE",
                            &r, &berr);
    if (!rc && (!r || PQntuples(r) != 1))
        rc = chr_fail(&berr, CHR_ESTORE, "",
                      "postgres: events.head has no row; the schema is "
                      "damaged");
    int64_t head0 = 0;
    if (rc)
        batch_fatal(&b, &berr);
    else
        head0 = val_i64(r, 0, 0);
    PQclear(r);
    if (!b.fatal) {
        atomic_store(&s->writer_pid, PQbackendPID(s->w.pg));
        if (head0 != s->versions_head) strmap_clear(&s->versions);
        b.pos = head0;
    }

    int64_t now = time_now_us();
    for (job_t *j = jobs; j && !b.fatal; j = j->next) {
        b.cur_job = j;
        j->rc = run_unit(&b, j->uow, now, j->err);
        j->ran = !b.fatal;
    }
    if (!b.fatal && b.tail) flush_tail(&b); /* may still fail its unit */
    b.restart = false;
    free(b.tail);
    b.tail = NULL;
    if (!b.fatal) {
        char sql[200];
        if (b.pos > head0)
            snprintf(sql, sizeof sql,
                     "UPDATE events.head SET position = %" PRId64 "; NOTIFY " PG_CHANNEL
                     ", '%" PRId64 "'; COMMIT",
                     b.pos, b.pos);
        else
            snprintf(sql, sizeof sql, "COMMIT");
        /* Lost during COMMIT, the outcome is unknown: the units are not
         * acknowledged (a retry with the same ids is idempotent). */
        w_simple(&b, sql, NULL);
    }
    if (b.fatal) {
        if (s->w.pg && !s->w.broken && PQtransactionStatus(s->w.pg) != PQTRANS_IDLE)
            pg_conn_simple(&s->w, "ROLLBACK", NULL, NULL);
        pg_conn_end_tx(&s->w); /* reconnect for the next batch if need be */
        strmap_clear(&s->versions);
        s->versions_head = -1;
        atomic_fetch_add(&s->c_errors, 1);
        for (job_t *j = jobs; j; j = j->next) {
            if (j->ran && j->rc != CHR_OK) continue; /* failed on its own */
            j->rc = b.ferr.code;
            if (j->err) *j->err = b.ferr;
        }
    } else {
        s->versions_head = b.pos;
        size_t units = 0, events = 0;
        for (job_t *j = jobs; j; j = j->next) {
            if (j->rc != CHR_OK) continue;
            units++;
            for (size_t a = 0; a < j->uow->n_appends; a++)
                if (!j->uow->appends[a].idempotent) events += j->uow->appends[a].n_events;
        }
        if (units) count_batch(s, units, events);
        if (b.pos > head0) publish_head(s, b.pos);
    }
    finish_jobs(jobs);
}

static void *writer_main(void *arg)
{
    pg_store_t *s = arg;
    for (;;) {
        pthread_mutex_lock(&s->qlock);
        while (!s->qhead && !s->stopping)
            pthread_cond_wait(&s->qcond, &s->qlock);
        if (!s->qhead && s->stopping) {
            pthread_mutex_unlock(&s->qlock);
            break;
        }
        job_t *batch = s->qhead, *last = batch;
        size_t n = 1;
        while (last->next && n < MAX_BATCH) {
            last = last->next;
            n++;
        }
        s->qhead = last->next;
        if (!s->qhead) s->qtail = NULL;
        last->next = NULL;
        pthread_mutex_unlock(&s->qlock);
        run_batch(s, batch);
    }
    return NULL;
}

static int pg_commit_async(store_t *base, store_uow_t *uow, chr_err_t *err, store_done_fn done,
                           void *user)
{
    pg_store_t *s = (pg_store_t *)base;
    if (s->read_only) return chr_fail(err, CHR_EUNAVAILABLE, "", "the store is open read-only");
    listener_start(s);
    job_t *job = malloc(sizeof *job);
    if (!job) return chr_fail(err, CHR_ENOMEM, "", "out of memory");
    *job = (job_t){.uow = uow, .err = err, .done = done, .done_user = user};
    pthread_mutex_lock(&s->qlock);
    if (s->stopping) {
        pthread_mutex_unlock(&s->qlock);
        free(job);
        return chr_fail(err, CHR_EUNAVAILABLE, "", "the store is shutting down");
    }
    bool was_empty = !s->qhead;
    if (s->qtail)
        s->qtail->next = job;
    else
        s->qhead = job;
    s->qtail = job;
    pthread_mutex_unlock(&s->qlock);
    if (was_empty) pthread_cond_signal(&s->qcond);
    return CHR_OK;
}

/* ---- stats, migrations, lifecycle --------------------------------------- */

static int pg_stats(store_t *base, store_stats_t *out, chr_err_t *err)
{
    pg_store_t *s = (pg_store_t *)base;
    memset(out, 0, sizeof *out);
    PGresult *r;
    int rc = reader_exec(s,
                         "SELECT count(*), count(DISTINCT aggregate_id), (SELECT position FROM "
                         "events.head), pg_total_relation_size('events.events') FROM events.events",
                         NULL, 0, &r, err);
    if (rc) return rc;
    out->events = val_i64(r, 0, 0);
    out->streams = val_i64(r, 0, 1);
    out->head_position = val_i64(r, 0, 2);
    out->bytes = val_i64(r, 0, 3);
    PQclear(r);
    reader_t *rd;
    rc = reader_get(s, &rd, err);
    if (rc) return rc;
    rc = schema_version(&rd->conn, &out->schema_version, err);
    reader_put(s, rd);
    count_error(s, rc);
    return rc;
}

/* On a connection of its own: the writer's belongs to the writer thread. */
static int pg_migrate(store_t *base, chr_err_t *err)
{
    pg_store_t *s = (pg_store_t *)base;
    if (s->read_only) return chr_fail(err, CHR_EUNAVAILABLE, "", "the store is open read-only");
    pg_conn_t c;
    pg_conn_init(&c, &s->info, "migration", SETUP_COMMON "SELECT 1");
    int rc = migrate_conn(&c, err);
    pg_conn_close(&c);
    return rc;
}

static int pg_list_migrations(store_t *base, store_migration_info_t **out, size_t *n,
                              chr_err_t *err)
{
    pg_store_t *s = (pg_store_t *)base;
    store_migration_info_t *list = calloc(pg_migrations_count, sizeof *list);
    if (!list) return chr_fail(err, CHR_ENOMEM, "", "out of memory");
    for (size_t i = 0; i < pg_migrations_count; i++) {
        list[i].version = pg_migrations[i].version;
        list[i].name = pg_migrations[i].name;
    }
    reader_t *rd;
    int rc = reader_get(s, &rd, err);
    int current = 0;
    if (!rc) {
        rc = schema_version(&rd->conn, &current, err);
        PGresult *r = NULL;
        if (!rc && current > 0)
            rc = pg_conn_exec(&rd->conn,
                              "SELECT version, (extract(epoch FROM applied_at) * 1000000)::bigint "
                              "FROM events.chronicle_migrations",
                              NULL, 0, &r, err);
        for (int row = 0; !rc && r && row < PQntuples(r); row++) {
            int v = (int)val_i64(r, row, 0);
            for (size_t i = 0; i < pg_migrations_count; i++) {
                if (list[i].version != v) continue;
                list[i].applied = true;
                list[i].applied_at = val_i64(r, row, 1);
            }
        }
        PQclear(r);
        reader_put(s, rd);
    }
    if (rc) {
        free(list);
        return rc;
    }
    *out = list;
    *n = pg_migrations_count;
    return CHR_OK;
}

static void pg_counters(store_t *base, store_counters_t *out)
{
    pg_store_t *s = (pg_store_t *)base;
    out->commits = atomic_load(&s->c_commits);
    out->units = atomic_load(&s->c_units);
    out->events = atomic_load(&s->c_events);
    out->errors = atomic_load(&s->c_errors);
    for (int i = 0; i < 8; i++)
        out->batch_hist[i] = atomic_load(&s->c_batch[i]);
}

static void pg_close(store_t *base)
{
    pg_store_t *s = (pg_store_t *)base;
    if (s->writer_started) {
        pthread_mutex_lock(&s->qlock);
        s->stopping = true;
        pthread_cond_broadcast(&s->qcond);
        pthread_mutex_unlock(&s->qlock);
        pthread_join(s->writer, NULL);
    }
    pthread_mutex_lock(&s->llock);
    s->listener_closed = true;
    bool listening = atomic_load(&s->listener_started);
    pthread_mutex_unlock(&s->llock);
    if (listening) {
        char byte = 1;
        while (write(s->wake[1], &byte, 1) < 0 && errno == EINTR) {
        }
        pthread_join(s->listener, NULL);
    }
    for (int i = 0; i < s->n_readers; i++) {
        pg_conn_close(&s->all_readers[i]->conn);
        free(s->all_readers[i]);
    }
    pg_conn_close(&s->w);
    pg_conn_close(&s->l);
    strmap_free(&s->versions);
    if (s->wake[0] >= 0) close(s->wake[0]);
    if (s->wake[1] >= 0) close(s->wake[1]);
    pthread_mutex_destroy(&s->qlock);
    pthread_cond_destroy(&s->qcond);
    pthread_mutex_destroy(&s->llock);
    pthread_mutex_destroy(&s->rlock);
    pthread_cond_destroy(&s->rcond);
    free(s);
}

/* Connects the writer, checks the server and the schema, migrates when
 * allowed. */
static int open_writer(pg_store_t *s, const store_options_t *o, chr_err_t *err)
{
    int rc = pg_conn_ensure(&s->w, err);
    if (rc)
        return chr_fail(err, CHR_EUNAVAILABLE, "DATABASE_URL", "cannot connect to PostgreSQL: %s",
                        s->w.last_error);
    int server = PQserverVersion(s->w.pg);
    if (server < MIN_SERVER_VERSION)
        return chr_fail(err, CHR_ESTORE, "DATABASE_URL",
                        "PostgreSQL %d.%d is too old; chronicle needs 14 or newer", server / 10000,
                        server % 10000);
    if (o->read_only) return CHR_OK;
    int current = 0;
    rc = schema_version(&s->w, &current, err);
    if (rc) return rc;
    int latest = pg_migrations[pg_migrations_count - 1].version;
    if (current > latest)
        return chr_fail(err, CHR_ESTORE, "DATABASE_URL",
                        "the database has schema version %d, newer than this chronicle knows "
                        "(%d); upgrade chronicle",
                        current, latest);
    if (current < latest) {
        if (!o->migrate)
            return chr_fail(err, CHR_ESTORE, "DATABASE_URL",
                            "the database needs migrations (schema %d, latest %d); run "
                            "`chronicle migrate up`",
                            current, latest);
        rc = migrate_conn(&s->w, err);
        if (rc) return rc;
    }
    PGresult *r;
    rc = pg_conn_exec(&s->w, SQL_HEAD, NULL, 0, &r, err);
    if (rc) return rc;
    if (PQntuples(r) == 1) atomic_store(&s->known_head, val_i64(r, 0, 0));
    PQclear(r);
    return CHR_OK;
}

int pg_store_open(const char *url, const store_options_t *o, store_t **out, chr_err_t *err)
{
    if (strlen(url) >= sizeof(((pg_store_t *)0)->url))
        return chr_fail(err, CHR_EINVAL, "DATABASE_URL", "database URL is too long");
    pg_store_t *s = calloc(1, sizeof *s);
    if (!s) return chr_fail(err, CHR_ENOMEM, "", "out of memory");
    s->base.ops = &pg_ops;
    s->base.opts = *o;
    s->read_only = o->read_only;
    s->versions_head = -1;
    s->wake[0] = s->wake[1] = -1;
    snprintf(s->url, sizeof s->url, "%s", url);
    pg_conninfo_init(&s->info, s->url);
    /* STORE_SYNC_NORMAL means what it means for SQLite: a crash of the
     * database server may drop the latest acknowledged commits. */
    snprintf(s->writer_setup, sizeof s->writer_setup,
             SETUP_COMMON "SET idle_in_transaction_session_timeout TO '60s'%s",
             o->sync == STORE_SYNC_NORMAL ? "; SET synchronous_commit TO off" : "");
    pg_conn_init(&s->w, &s->info, "writer", s->writer_setup);
    pg_conn_init(&s->l, &s->info, "listener", LISTENER_SETUP);
    pthread_mutex_init(&s->qlock, NULL);
    pthread_cond_init(&s->qcond, NULL);
    pthread_mutex_init(&s->llock, NULL);
    pthread_mutex_init(&s->rlock, NULL);
    pthread_cond_init(&s->rcond, NULL);
    s->max_readers = o->readers > 0 ? o->readers : DEFAULT_READERS;
    if (s->max_readers > MAX_READERS) s->max_readers = MAX_READERS;

    int rc = open_writer(s, o, err);
    if (!rc && !o->read_only && pipe(s->wake) != 0)
        rc =
            chr_fail(err, CHR_ESTORE, "", "cannot create the listener's pipe: %s", strerror(errno));
    if (!rc && !o->read_only) {
        if (pthread_create(&s->writer, NULL, writer_main, s) != 0)
            rc = chr_fail(err, CHR_ESTORE, "", "cannot start the writer thread");
        else
            s->writer_started = true;
    }
    if (!rc && o->read_only) pg_conn_close(&s->w); /* readers do the rest */
    if (rc) {
        pg_close(&s->base);
        return rc;
    }
    *out = &s->base;
    return CHR_OK;
}

const pg_conninfo_t *pg_store_conninfo(store_t *base)
{
    return &((pg_store_t *)base)->info;
}

static const store_ops_t pg_ops = {
    .name = "postgres",
    .commit_async = pg_commit_async,
    .read_stream = pg_read_stream,
    .read_all = pg_read_all,
    .read_event = pg_read_event,
    .stream_version = pg_stream_version,
    .head_position = pg_head_position,
    .stats = pg_stats,
    .migrate = pg_migrate,
    .migrations = pg_list_migrations,
    .ping = pg_ping,
    .tx_exec = pg_tx_exec,
    .tx_query = pg_tx_query,
    .query = pg_query,
    .counters = pg_counters,
    .lease_try = pg_lease_try,
    .lease_check = pg_lease_check,
    .lease_release = pg_lease_release,
    .close = pg_close,
};
