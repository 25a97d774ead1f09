/*
 * schedule.c - the scheduler thread: takes the "schedules" lease, then in
 * passes fires every due tick and sleeps until the next one (or until a
 * commit may have changed a for_each row); see schedule.h and
 * docs/schedules.md for the rules (exactly-once ids, missed ticks).
 *
 * Each (schedule, row) has a stream of its own, "schedule:<name>" or
 * "schedule:<name>:<key>", whose last event's metadata records the last
 * fired tick: the state survives restarts and moves with the lease.
 *
 * Not here: cron arithmetic (core/cron.c).
 */
#include "engine/schedule.h"

#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/cron.h"
#include "core/timefmt.h"
#include "util/log.h"
#include "util/strmap.h"

#define STREAM_PREFIX "schedule:"
#define MISSED_COUNT_MAX 100000 /* ticks counted at most when reporting missed ones */
#define MAX_SLEEP_MS 60000      /* real time: rescan at least this often */
#define RETRY_MS 1000           /* after a store error, or while the lease is held elsewhere */
#define FAKE_LEASE_RETRY_MS 100 /* the same with the test clock */
#define RESCAN_MIN_MS 200       /* at most this often on commits */

struct schedules {
    const definition_t *def;
    store_t *store;
    char **row_sql; /* per schedule: its for_each query, NULL for fixed ones */
    pthread_t thread;
    bool started;
    pthread_mutex_t lock;
    pthread_cond_t cond; /* CLOCK_MONOTONIC */
    bool stop;           /* under lock */
    bool dirty;          /* under lock: a commit happened since the last pass */
    char clock_file[1024]; /* test-only fake clock; "" = real time */
    /* owned by the thread */
    store_lease_t *lease;
    strmap_t fired;      /* stream -> last fired tick (seconds), -1 = never */
    int64_t *first_seen; /* per fixed schedule: when this holder first saw it, -1 = not yet */
};

/* ---- time ------------------------------------------------------------------- */

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t floor_s(int64_t us)
{
    return us >= 0 ? us / 1000000 : -((-us + 999999) / 1000000);
}

/* "Now" in seconds: the real clock, or the test clock file's time. */
static int64_t now_s(const schedules_t *sch)
{
    if (!sch->clock_file[0]) return floor_s(time_now_us());
    char buf[128] = {0};
    FILE *f = fopen(sch->clock_file, "r");
    if (f) {
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[n] = '\0';
        while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == ' ' || buf[n - 1] == '\r'))
            buf[--n] = '\0';
    }
    int64_t us;
    if (!f || time_parse_rfc3339(buf, &us) != 0) return floor_s(time_now_us());
    return floor_s(us);
}

static void tick_text(int64_t s, char out[TIMEFMT_LEN + 1])
{
    time_format_us(s * 1000000, out);
}

/* ---- streams and ids ------------------------------------------------------------ */

/* The stream of a schedule (key NULL) or of one of its rows. A key too long
 * for a stream name is replaced by the hex SHA-256 of it. */
static void stream_name(const schedule_def_t *sd, const char *key, char out[EVENT_NAME_MAX + 1])
{
    if (!key) {
        snprintf(out, EVENT_NAME_MAX + 1, STREAM_PREFIX "%s", sd->name);
        return;
    }
    if (strlen(STREAM_PREFIX) + strlen(sd->name) + 1 + strlen(key) <= EVENT_NAME_MAX) {
        snprintf(out, EVENT_NAME_MAX + 1, STREAM_PREFIX "%s:%s", sd->name, key);
        return;
    }
    unsigned char h[crypto_hash_sha256_BYTES];
    crypto_hash_sha256(h, (const unsigned char *)key, strlen(key));
    char hex[2 * sizeof h + 1];
    sodium_bin2hex(hex, sizeof hex, h, sizeof h);
    snprintf(out, EVENT_NAME_MAX + 1, STREAM_PREFIX "%s:sha256:%s", sd->name, hex);
}

/* The event id of one tick: a UUID (version 8, RFC 9562's custom layout)
 * made of the SHA-256 of app, schedule, key and tick, so every instance and
 * every restart names the same tick alike. */
static void tick_id(const char *app, const schedule_def_t *sd, const char *key, int64_t tick,
                    char out[UUID_STR_LEN + 1])
{
    crypto_hash_sha256_state st;
    crypto_hash_sha256_init(&st);
    char t[32];
    int tl = snprintf(t, sizeof t, "%lld", (long long)tick);
    const char *parts[] = {"chronicle-schedule", app, sd->name, key ? key : "", t};
    size_t lens[] = {sizeof "chronicle-schedule", strlen(app) + 1, strlen(sd->name) + 1,
                     key ? strlen(key) + 1 : 1, (size_t)tl};
    for (size_t i = 0; i < 5; i++)
        crypto_hash_sha256_update(&st, (const unsigned char *)parts[i], lens[i]);
    unsigned char h[crypto_hash_sha256_BYTES];
    crypto_hash_sha256_final(&st, h);
    uuid_v8_from_hash(h, out);
}

/* The last tick fired on stream (-1: never), from the cache or the
 * stream's latest events: the newest of the last LOOKBACK whose metadata
 * names the schedule and a tick (others may have appended to the stream
 * through /v1/streams; a tick recorded further back is treated as never,
 * and re-firing it is an idempotent replay). */
#define LOOKBACK 16
static int last_fired(schedules_t *sch, const schedule_def_t *sd, const char *stream,
                      int64_t *tick)
{
    if (strmap_get(&sch->fired, stream, tick)) return CHR_OK;
    event_list_t l = {0};
    chr_err_t err = {0};
    int rc = store_read_stream(sch->store, stream, 0, LOOKBACK, true, &l, &err);
    if (rc) {
        log_at(LOG_WARN, "schedules: cannot read a schedule stream", LOG_S("stream", stream),
               LOG_S("error", err.msg));
        event_list_free(&l);
        return rc;
    }
    *tick = -1;
    for (size_t i = 0; i < l.len && *tick < 0; i++) {
        json_t *m = l.items[i].metadata ? json_loads(l.items[i].metadata, 0, NULL) : NULL;
        const char *name = json_string_value(json_object_get(m, "schedule"));
        const char *t = json_string_value(json_object_get(m, "tick"));
        int64_t us;
        if (name && t && strcmp(name, sd->name) == 0 && time_parse_rfc3339(t, &us) == 0)
            *tick = floor_s(us);
        json_decref(m);
    }
    event_list_free(&l);
    if (strmap_put(&sch->fired, stream, *tick) != 0) return CHR_ENOMEM;
    return CHR_OK;
}

/* ---- firing --------------------------------------------------------------------- */

/* The event data: the template with its references filled in. New
 * reference, NULL on allocation failure. doc (a row's state) may be NULL. */
static json_t *render(const schedule_def_t *sd, const char *key, const json_t *doc,
                      const char *tick, int64_t missed)
{
    json_t *out = json_object();
    const char *k;
    json_t *v;
    json_object_foreach(sd->data, k, v) {
        if (!out) break;
        const char *s = json_string_value(v);
        json_t *n;
        if (!s || s[0] != '$')
            n = json_deep_copy(v);
        else if (strcmp(s, "$tick") == 0)
            n = json_string(tick);
        else if (strcmp(s, "$missed") == 0)
            n = json_integer(missed);
        else if (strcmp(s, "$schedule") == 0)
            n = json_string(sd->name);
        else if (strcmp(s, "$key") == 0)
            n = key ? json_string(key) : json_null();
        else { /* "$row.FIELD" (checked by the definition loader) */
            json_t *f = doc ? json_object_get(doc, s + 5) : NULL;
            n = f ? json_deep_copy(f) : json_null();
        }
        if (!n || json_object_set_new(out, k, n) != 0) {
            json_decref(out);
            out = NULL;
        }
    }
    return out;
}

/* One tick being appended: its own unit of work, committed asynchronously
 * so the ticks of a pass share group commits instead of waiting one by one. */
typedef struct job {
    struct batch *batch;
    const schedule_def_t *sd;
    char key[EVENT_NAME_MAX + 1]; /* "" for a fixed schedule */
    char stream[EVENT_NAME_MAX + 1];
    char tick[TIMEFMT_LEN + 1];
    int64_t due, missed;
    event_t ev;
    store_append_t ap;
    store_uow_t uow;
    chr_err_t err;
    int rc;
} job_t;

/* The ticks of one pass in flight. */
typedef struct batch {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    size_t pending; /* under lock */
    job_t **jobs;
    size_t n, cap;
} batch_t;

#define BATCH_MAX 512 /* ticks in flight at once */

static void job_done(void *user, int rc)
{
    job_t *j = user;
    j->rc = rc;
    pthread_mutex_lock(&j->batch->lock);
    j->batch->pending--;
    pthread_cond_broadcast(&j->batch->cond);
    pthread_mutex_unlock(&j->batch->lock);
}

/* Waits for every job of b, then records what fired and frees the jobs.
 * Returns CHR_OK, or the last failure (those ticks are tried again). */
static int batch_finish(schedules_t *sch, batch_t *b)
{
    pthread_mutex_lock(&b->lock);
    while (b->pending > 0)
        pthread_cond_wait(&b->cond, &b->lock);
    pthread_mutex_unlock(&b->lock);
    int worst = CHR_OK;
    for (size_t i = 0; i < b->n; i++) {
        job_t *j = b->jobs[i];
        bool idem = j->ap.idempotent;
        int rc = j->rc;
        if (rc == CHR_ECONFLICT) { /* the id is stored with other data: fired already */
            idem = true;
            rc = CHR_OK;
        }
        if (rc) {
            log_at(LOG_WARN, "schedules: cannot append a tick", LOG_S("schedule", j->sd->name),
                   LOG_S("key", j->key), LOG_S("tick", j->tick), LOG_S("error", j->err.msg));
            worst = rc;
        } else {
            log_at(idem ? LOG_DEBUG : LOG_INFO, idem ? "schedule tick already fired" : "schedule fired",
                   LOG_S("schedule", j->sd->name), LOG_S("key", j->key), LOG_S("tick", j->tick),
                   LOG_I("missed", j->missed), LOG_S("event_id", j->ev.id));
            if (strmap_put(&sch->fired, j->stream, j->due) != 0) worst = CHR_ENOMEM;
        }
        event_free(&j->ev);
        free(j);
    }
    b->n = 0;
    return worst;
}

/* Queues the latest tick of c at or before now if it is after baseline, as
 * one event counting the ticks in (baseline, tick]; doc_text is the row's
 * state (JSON) for "$row.FIELD", NULL for a fixed schedule. Returns CHR_OK
 * (queued or nothing due) or an error (try again later). */
static int fire_due(schedules_t *sch, batch_t *b, const schedule_def_t *sd, const char *key,
                    const char *doc_text, const cron_t *c, const char *stream, int64_t baseline,
                    int64_t now)
{
    int64_t due;
    if (cron_prev(c, now, sd->offset_s, &due) != CHR_OK || due <= baseline) return CHR_OK;
    int worst = CHR_OK;
    if (b->n == BATCH_MAX) worst = batch_finish(sch, b);
    if (b->n == b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 16;
        job_t **jobs = realloc(b->jobs, cap * sizeof *jobs);
        if (!jobs) return CHR_ENOMEM;
        b->jobs = jobs;
        b->cap = cap;
    }
    job_t *j = calloc(1, sizeof *j);
    if (!j) return CHR_ENOMEM;
    j->batch = b;
    j->sd = sd;
    j->due = due;
    snprintf(j->key, sizeof j->key, "%s", key ? key : "");
    snprintf(j->stream, sizeof j->stream, "%s", stream);
    for (int64_t t = baseline; j->missed < MISSED_COUNT_MAX; j->missed++)
        if (cron_next(c, t, sd->offset_s, &t) != CHR_OK || t > due) break;
    if (j->missed == 0) j->missed = 1;

    char id[UUID_STR_LEN + 1];
    tick_text(due, j->tick);
    tick_id(sch->def->app, sd, key, due, id);
    json_t *doc = doc_text ? json_loads(doc_text, 0, NULL) : NULL;
    json_t *data = render(sd, key, doc, j->tick, j->missed);
    json_decref(doc);
    json_t *meta = json_pack("{s:s, s:s, s:I}", "schedule", sd->name, "tick", j->tick, "missed",
                             (json_int_t)j->missed);
    if (meta && key && json_object_set_new(meta, "key", json_string(key)) != 0) {
        json_decref(meta);
        meta = NULL;
    }
    char *data_s = data ? json_dumps(data, JSON_COMPACT) : NULL;
    char *meta_s = meta ? json_dumps(meta, JSON_COMPACT) : NULL;
    json_decref(data);
    json_decref(meta);
    int rc = (!data_s || !meta_s) ? CHR_ENOMEM
                                  : event_init(&j->ev, id, stream, sd->event, data_s, meta_s);
    free(data_s);
    free(meta_s);
    if (rc) {
        event_free(&j->ev);
        free(j);
        return rc;
    }
    j->ap = (store_append_t){.stream = j->stream, .expected_version = STORE_ANY, .events = &j->ev,
                             .n_events = 1};
    j->uow = (store_uow_t){.appends = &j->ap, .n_appends = 1};
    pthread_mutex_lock(&b->lock);
    b->pending++;
    pthread_mutex_unlock(&b->lock);
    b->jobs[b->n++] = j;
    rc = store_commit_async(sch->store, &j->uow, &j->err, job_done, j);
    if (rc) /* refused before queueing: done will not be called */
        job_done(j, rc);
    return worst;
}

typedef struct row {
    char *key, *cron, *doc;
    int64_t updated_us;
} row_t;

typedef struct rows {
    row_t *v;
    size_t n, cap;
    bool oom;
} rows_t;

static int collect_row(void *user, const store_val_t *vals, size_t n)
{
    rows_t *r = user;
    if (n < 4 || vals[0].type != SV_TEXT || vals[1].type != SV_TEXT) return 0;
    if (r->n == r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 16;
        row_t *v = realloc(r->v, cap * sizeof *v);
        if (!v) {
            r->oom = true;
            return 1;
        }
        r->v = v;
        r->cap = cap;
    }
    row_t *row = &r->v[r->n];
    row->key = strdup(vals[0].s);
    row->cron = strdup(vals[1].s);
    row->doc = vals[3].type == SV_TEXT ? strdup(vals[3].s) : NULL;
    row->updated_us = vals[2].type == SV_INT ? vals[2].i : 0;
    if (!row->key || !row->cron) {
        free(row->key);
        free(row->cron);
        free(row->doc);
        r->oom = true;
        return 1;
    }
    r->n++;
    return 0;
}

static void rows_free(rows_t *r)
{
    for (size_t i = 0; i < r->n; i++) {
        free(r->v[i].key);
        free(r->v[i].cron);
        free(r->v[i].doc);
    }
    free(r->v);
}

static void earliest(const cron_t *c, int32_t off, int64_t now, int64_t *next)
{
    int64_t t;
    if (cron_next(c, now, off, &t) == CHR_OK && t < *next) *next = t;
}

/* One for_each schedule: every live row with a cron value. */
static int pass_rows(schedules_t *sch, batch_t *b, size_t i, int64_t now, int64_t *next)
{
    const schedule_def_t *sd = &sch->def->schedules[i];
    rows_t rows = {0};
    chr_err_t err = {0};
    int rc = store_query(sch->store, sch->row_sql[i], NULL, 0, collect_row, &rows, &err);
    if (!rc && rows.oom) rc = CHR_ENOMEM;
    if (rc) {
        log_at(LOG_WARN, "schedules: cannot read rows", LOG_S("schedule", sd->name),
               LOG_S("error", err.msg));
        rows_free(&rows);
        return rc;
    }
    int worst = CHR_OK;
    for (size_t r = 0; r < rows.n; r++) {
        const row_t *row = &rows.v[r];
        cron_t c;
        if (cron_parse(row->cron, &c, NULL) != CHR_OK) continue; /* checked when written */
        char stream[EVENT_NAME_MAX + 1];
        stream_name(sd, row->key, stream);
        int64_t last;
        rc = last_fired(sch, sd, stream, &last);
        if (!rc) {
            /* Ticks before the row last changed belong to its old schedule. */
            int64_t baseline = floor_s(row->updated_us);
            if (last > baseline) baseline = last;
            rc = fire_due(sch, b, sd, row->key, row->doc, &c, stream, baseline, now);
        }
        if (rc) worst = rc;
        earliest(&c, sd->offset_s, now, next);
    }
    rows_free(&rows);
    return worst;
}

/* One fixed schedule. */
static int pass_fixed(schedules_t *sch, batch_t *b, size_t i, int64_t now, int64_t *next)
{
    const schedule_def_t *sd = &sch->def->schedules[i];
    cron_t c;
    if (cron_parse(sd->cron, &c, NULL) != CHR_OK) return CHR_OK; /* checked at load */
    char stream[EVENT_NAME_MAX + 1];
    stream_name(sd, NULL, stream);
    int64_t last;
    int rc = last_fired(sch, sd, stream, &last);
    if (!rc) {
        /* Never fired: count from when this holder first saw it. */
        if (sch->first_seen[i] < 0) sch->first_seen[i] = now;
        rc = fire_due(sch, b, sd, NULL, NULL, &c, stream,
                      last >= 0 ? last : sch->first_seen[i], now);
    }
    earliest(&c, sd->offset_s, now, next);
    return rc;
}

/* ---- the thread ------------------------------------------------------------------- */

/* Sleeps until deadline (monotonic ms), stop, or - when wake_on_commit - a
 * commit at least RESCAN_MIN_MS after last_pass. */
static void sleep_until(schedules_t *sch, int64_t deadline, bool wake_on_commit, int64_t last_pass)
{
    pthread_mutex_lock(&sch->lock);
    while (!sch->stop) {
        int64_t now = mono_ms(), until = deadline;
        if (wake_on_commit && sch->dirty) {
            if (now >= last_pass + RESCAN_MIN_MS) break;
            if (last_pass + RESCAN_MIN_MS < until) until = last_pass + RESCAN_MIN_MS;
        }
        if (now >= deadline) break;
        struct timespec ts = {.tv_sec = until / 1000, .tv_nsec = (long)(until % 1000) * 1000000L};
        pthread_cond_timedwait(&sch->cond, &sch->lock, &ts);
    }
    pthread_mutex_unlock(&sch->lock);
}

static bool stopping(schedules_t *sch)
{
    pthread_mutex_lock(&sch->lock);
    bool stop = sch->stop;
    sch->dirty = false;
    pthread_mutex_unlock(&sch->lock);
    return stop;
}

static void *run(void *arg)
{
    schedules_t *sch = arg;
    bool fake = sch->clock_file[0] != '\0';
    bool announce = false; /* log once the first pass under a new lease is done */
    batch_t batch = {0};
    pthread_mutex_init(&batch.lock, NULL);
    pthread_cond_init(&batch.cond, NULL);
    while (!stopping(sch)) {
        if (!sch->lease) {
            chr_err_t err = {0};
            int rc = store_lease_try(sch->store, SCHEDULES_LEASE, &sch->lease, &err);
            if (rc) {
                if (rc != CHR_ECONFLICT)
                    log_at(LOG_WARN, "schedules: cannot take the lease", LOG_S("error", err.msg));
                sleep_until(sch, mono_ms() + (fake ? FAKE_LEASE_RETRY_MS : RETRY_MS), false, 0);
                continue;
            }
            /* What another holder fired is in the streams, not in our cache. */
            strmap_clear(&sch->fired);
            for (size_t i = 0; i < sch->def->n_schedules; i++)
                sch->first_seen[i] = -1;
            announce = true;
        } else if (!store_lease_check(sch->lease)) {
            log_at(LOG_WARN, "schedules: lease lost; another instance may run them now");
            store_lease_release(sch->lease);
            sch->lease = NULL;
            continue;
        }
        int64_t now = now_s(sch), next = INT64_MAX;
        bool failed = false;
        for (size_t i = 0; i < sch->def->n_schedules; i++) {
            int rc = sch->row_sql[i] ? pass_rows(sch, &batch, i, now, &next)
                                     : pass_fixed(sch, &batch, i, now, &next);
            if (rc) failed = true;
        }
        if (batch_finish(sch, &batch)) failed = true;
        if (announce) {
            log_at(LOG_INFO, "schedules: running on this instance",
                   LOG_I("schedules", sch->def->n_schedules), LOG_B("test_clock", fake));
            announce = false;
        }
        int64_t last_pass = mono_ms(), deadline;
        if (fake)
            deadline = last_pass + SCHEDULES_FAKE_POLL_MS;
        else if (failed)
            deadline = last_pass + RETRY_MS;
        else {
            deadline = last_pass + MAX_SLEEP_MS;
            if (next != INT64_MAX) {
                int64_t ms = (next * 1000000 - time_now_us()) / 1000 + 1;
                if (ms < 0) ms = 0;
                if (last_pass + ms < deadline) deadline = last_pass + ms;
            }
        }
        sleep_until(sch, deadline, !fake, last_pass);
    }
    store_lease_release(sch->lease);
    sch->lease = NULL;
    free(batch.jobs);
    pthread_mutex_destroy(&batch.lock);
    pthread_cond_destroy(&batch.cond);
    return NULL;
}

static void on_commit(void *user, int64_t head)
{
    (void)head;
    schedules_t *sch = user;
    pthread_mutex_lock(&sch->lock);
    sch->dirty = true;
    pthread_cond_signal(&sch->cond);
    pthread_mutex_unlock(&sch->lock);
}

/* ---- start and stop --------------------------------------------------------------- */

int schedules_start(const definition_t *def, store_t *s, schedules_t **out, chr_err_t *err)
{
    *out = NULL;
    if (!def || def->n_schedules == 0) return CHR_OK;
    schedules_t *sch = calloc(1, sizeof *sch);
    if (!sch) return chr_fail(err, CHR_ENOMEM, "", "out of memory");
    sch->def = def;
    sch->store = s;
    pthread_mutex_init(&sch->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&sch->cond, &ca);
    pthread_condattr_destroy(&ca);
    sch->row_sql = calloc(def->n_schedules, sizeof *sch->row_sql);
    sch->first_seen = calloc(def->n_schedules, sizeof *sch->first_seen);
    if (!sch->row_sql || !sch->first_seen) goto oom;
    for (size_t i = 0; i < def->n_schedules; i++) {
        const schedule_def_t *sd = &def->schedules[i];
        if (sd->entity < 0) continue;
        const entity_def_t *e = &def->entities[sd->entity];
        const char *f = e->fields[sd->cron_field].name;
        /* Identifiers come from the validated definition only. */
        size_t len = strlen(e->key) + 2 * strlen(f) + strlen(e->name) + 128;
        sch->row_sql[i] = malloc(len);
        if (!sch->row_sql[i]) goto oom;
        snprintf(sch->row_sql[i], len,
                 "SELECT \"%s\", \"%s\", \"updated_at\", \"_doc\" FROM \"%s\" WHERE \"_deleted\" = "
                 "0 AND \"%s\" IS NOT NULL",
                 e->key, f, e->name, f);
    }
    const char *clock = getenv(SCHEDULES_CLOCK_ENV);
    if (clock && *clock) {
        snprintf(sch->clock_file, sizeof sch->clock_file, "%s", clock);
        log_at(LOG_WARN, "schedules: using a test clock; not for production",
               LOG_S("file", sch->clock_file));
    }
    if (store_on_commit(s, on_commit, sch) != CHR_OK) goto oom;
    int rc = pthread_create(&sch->thread, NULL, run, sch);
    if (rc) {
        /* The commit listener stays registered: free only after store_close. */
        *out = sch;
        return chr_fail(err, CHR_ESTORE, "", "cannot start the scheduler thread: %s",
                        strerror(rc));
    }
    sch->started = true;
    *out = sch;
    return CHR_OK;
oom:
    schedules_free(sch);
    return chr_fail(err, CHR_ENOMEM, "", "out of memory");
}

void schedules_stop(schedules_t *sch)
{
    if (!sch || !sch->started) return;
    pthread_mutex_lock(&sch->lock);
    sch->stop = true;
    pthread_cond_signal(&sch->cond);
    pthread_mutex_unlock(&sch->lock);
    pthread_join(sch->thread, NULL);
    sch->started = false;
}

void schedules_free(schedules_t *sch)
{
    if (!sch) return;
    schedules_stop(sch);
    for (size_t i = 0; sch->row_sql && i < sch->def->n_schedules; i++)
        free(sch->row_sql[i]);
    free(sch->row_sql);
    free(sch->first_seen);
    strmap_free(&sch->fired);
    pthread_mutex_destroy(&sch->lock);
    pthread_cond_destroy(&sch->cond);
    free(sch);
}
