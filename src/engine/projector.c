/*
 * projector.c - the asynchronous projector; see projector.h for what it
 * guarantees and docs/storage.md ("Split databases") for how it is used.
 */
#include "engine/projector.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/timefmt.h"
#include "util/log.h"

#define SQL_CHECKPOINT                                                                             \
    "SELECT position, holder, updated_at FROM " PROJECTION_CHECKPOINT_TABLE " WHERE id = 1"
/* Moves the checkpoint only from where this batch started: 0 rows changed
 * means someone else moved it (or a reset did), and the batch rolls back. */
#define SQL_ADVANCE                                                                                \
    "UPDATE " PROJECTION_CHECKPOINT_TABLE                                                          \
    " SET position = ?, holder = ?, updated_at = ? WHERE id = 1 AND position = ?"

struct projector {
    engine_t *eng;
    store_t *events, *reads;
    const projections_t *rp;
    bool run;
    char holder[128]; /* "host:pid" */

    pthread_t thread;
    bool started;
    pthread_mutex_t lock; /* stop, last_error */
    pthread_cond_t cond;
    bool stop;
    char last_error[512];

    atomic_bool holding;            /* the lease is held: checkpoint below is exact */
    atomic_llong checkpoint;        /* last known checkpoint, -1 unknown */
    atomic_llong checkpoint_at_ms;  /* when a non-holder read it */
    pthread_mutex_t refresh;        /* one refresh at a time */
};

int64_t projector_lag(int64_t head, int64_t checkpoint)
{
    return head > checkpoint ? head - checkpoint : 0;
}

int64_t projector_wait_after(int64_t pos, int64_t head_seen)
{
    return head_seen > pos ? head_seen : pos;
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Waits up to ms or until stopped; true when stopping. */
static bool pause_ms(projector_t *p, int ms)
{
    struct timespec deadline;
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    deadline.tv_sec += ms / 1000;
    deadline.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&p->lock);
    while (!p->stop)
        if (pthread_cond_timedwait(&p->cond, &p->lock, &deadline) == ETIMEDOUT) break;
    bool stop = p->stop;
    pthread_mutex_unlock(&p->lock);
    return stop;
}

static bool stopping(projector_t *p)
{
    pthread_mutex_lock(&p->lock);
    bool stop = p->stop;
    pthread_mutex_unlock(&p->lock);
    return stop;
}

/* Records a failure; logs it when it differs from the last one (a database
 * that stays away must not fill the log every second). */
static void note_error(projector_t *p, const char *what, const chr_err_t *err)
{
    char msg[sizeof err->msg + 64];
    snprintf(msg, sizeof msg, "%s: %s", what, err->msg);
    pthread_mutex_lock(&p->lock);
    bool same = strcmp(p->last_error, msg) == 0;
    snprintf(p->last_error, sizeof p->last_error, "%s", msg);
    pthread_mutex_unlock(&p->lock);
    if (!same) log_at(LOG_WARN, "projector", LOG_S("error", msg));
}

static void clear_error(projector_t *p)
{
    pthread_mutex_lock(&p->lock);
    p->last_error[0] = '\0';
    pthread_mutex_unlock(&p->lock);
}

typedef struct checkpoint_row {
    bool found;
    int64_t position, updated_at;
    char holder[128];
} checkpoint_row_t;

static int read_checkpoint_row(void *user, const store_val_t *v, size_t n)
{
    checkpoint_row_t *r = user;
    if (n >= 3 && v[0].type == SV_INT) {
        r->found = true;
        r->position = v[0].i;
        snprintf(r->holder, sizeof r->holder, "%s", v[1].type == SV_TEXT ? v[1].s : "");
        r->updated_at = v[2].type == SV_INT ? v[2].i : 0;
    }
    return 1;
}

static int read_checkpoint(projector_t *p, checkpoint_row_t *row, chr_err_t *err)
{
    memset(row, 0, sizeof *row);
    int rc = store_query(p->reads, SQL_CHECKPOINT, NULL, 0, read_checkpoint_row, row, err);
    if (!rc && !row->found)
        rc = chr_fail(err, CHR_ESTORE, "", "the read model has no checkpoint row");
    return rc;
}

typedef struct batch {
    const projections_t *rp;
    const event_list_t *events;
    int64_t from, to;
    const char *holder;
} batch_t;

/* Runs in the read model's writer: checkpoint, layout, rows, one
 * transaction. */
static int batch_apply(store_tx_t *tx, void *user, chr_err_t *err)
{
    batch_t *b = user;
    store_val_t v[4] = {{.type = SV_INT, .i = b->to},
                        {.type = SV_TEXT, .s = b->holder},
                        {.type = SV_INT, .i = time_now_us()},
                        {.type = SV_INT, .i = b->from}};
    int64_t changes = 0;
    int rc = store_tx_exec(tx, SQL_ADVANCE, v, 4, &changes, err);
    if (rc) return rc;
    if (changes != 1)
        return chr_fail(err, CHR_ECONFLICT, "",
                        "the read model's checkpoint is no longer at %" PRId64
                        ": another projector moved it or the read model was reset",
                        b->from);
    rc = projections_check_layout(b->rp, tx, err);
    if (rc) return rc;
    return projection_apply_events(b->rp, tx, b->events, err);
}

/* One batch after *pos: CHR_OK with *pos moved (or *idle set when there
 * was nothing to do), or a failure. */
static int run_batch(projector_t *p, int64_t *pos, bool *idle, chr_err_t *err)
{
    event_list_t page = {0};
    *idle = false;
    int rc = store_read_all(p->events, *pos, PROJECTOR_BATCH, NULL, 0, &page, err);
    if (rc || page.len == 0) {
        event_list_free(&page);
        *idle = rc == CHR_OK;
        return rc;
    }
    batch_t b = {.rp = p->rp,
                 .events = &page,
                 .from = *pos,
                 .to = page.items[page.len - 1].position,
                 .holder = p->holder};
    store_uow_t uow = {.apply = batch_apply, .apply_user = &b};
    rc = store_commit(p->reads, &uow, err);
    if (!rc) {
        *pos = b.to;
        atomic_store(&p->checkpoint, b.to);
    }
    event_list_free(&page);
    return rc;
}

static void give_up_lease(projector_t *p, store_lease_t **lease, const char *why)
{
    atomic_store(&p->holding, false);
    atomic_store(&p->checkpoint_at_ms, 0); /* re-read: another may move it now */
    store_lease_release(*lease);
    *lease = NULL;
    log_at(LOG_INFO, "projector lease given up", LOG_S("reason", why));
}

static void *projector_main(void *arg)
{
    projector_t *p = arg;
    store_lease_t *lease = NULL;
    int64_t pos = -1, idle_after = -1;
    while (!stopping(p)) {
        chr_err_t err = {0};
        if (!lease) {
            int rc = store_lease_try(p->events, PROJECTOR_LEASE, &lease, &err);
            if (rc == CHR_ECONFLICT) { /* another instance projects */
                if (pause_ms(p, PROJECTOR_LEASE_RETRY_MS)) break;
                continue;
            }
            if (rc) {
                note_error(p, "taking the projector lease", &err);
                if (pause_ms(p, PROJECTOR_LEASE_RETRY_MS)) break;
                continue;
            }
            pos = -1;
            log_at(LOG_INFO, "projector lease taken: this instance projects",
                   LOG_S("holder", p->holder));
        }
        if (!store_lease_check(lease)) {
            give_up_lease(p, &lease, "lost (the events database session ended)");
            continue;
        }
        if (pos < 0) {
            checkpoint_row_t row;
            if (read_checkpoint(p, &row, &err) != CHR_OK) {
                note_error(p, "reading the checkpoint", &err);
                if (pause_ms(p, PROJECTOR_ERROR_PAUSE_MS)) break;
                continue;
            }
            pos = row.position;
            idle_after = -1;
            atomic_store(&p->checkpoint, pos);
            atomic_store(&p->holding, true);
            log_at(LOG_INFO, "projector resumes", LOG_I("checkpoint", pos));
        }
        bool idle = false;
        int rc = run_batch(p, &pos, &idle, &err);
        if (rc) {
            note_error(p, "projecting a batch", &err);
            pos = -1; /* start again from what the read model says */
            if (pause_ms(p, PROJECTOR_ERROR_PAUSE_MS)) break;
            continue;
        }
        clear_error(p);
        if (!idle) {
            idle_after = -1;
            continue;
        }
        /* Caught up: sleep until a commit moves the head past what we saw
         * (or a while passes: the lease needs checking and stop noticing). */
        int64_t head = 0;
        store_wait(p->events, INT64_MAX, 0, &head);
        idle_after = projector_wait_after(pos, idle_after > head ? idle_after : head);
        store_wait(p->events, idle_after, PROJECTOR_WAIT_MS, NULL);
    }
    if (lease) give_up_lease(p, &lease, "stopping");
    return NULL;
}

int projector_start(engine_t *eng, bool run, chr_err_t *err)
{
    if (!eng->read_proj_open)
        return chr_fail(err, CHR_EINVAL, "", "the projector needs a read model");
    projector_t *p = calloc(1, sizeof *p);
    if (!p) return chr_fail(err, CHR_ENOMEM, "", "out of memory");
    p->eng = eng;
    p->events = eng->store;
    p->reads = eng->reads;
    p->rp = &eng->read_proj;
    p->run = run;
    char host[64] = "";
    if (gethostname(host, sizeof host) != 0) snprintf(host, sizeof host, "unknown");
    host[sizeof host - 1] = '\0';
    snprintf(p->holder, sizeof p->holder, "%s:%ld", host, (long)getpid());
    pthread_mutex_init(&p->lock, NULL);
    pthread_mutex_init(&p->refresh, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&p->cond, &ca);
    pthread_condattr_destroy(&ca);
    atomic_init(&p->holding, false);
    atomic_init(&p->checkpoint, -1);
    atomic_init(&p->checkpoint_at_ms, 0);
    /* A first read of the events store starts its listener, so the head
     * this instance knows follows other instances' commits. */
    int64_t head;
    chr_err_t ignored = {0};
    store_head_position(p->events, &head, &ignored);
    if (run) {
        if (pthread_create(&p->thread, NULL, projector_main, p) != 0) {
            pthread_mutex_destroy(&p->lock);
            pthread_mutex_destroy(&p->refresh);
            pthread_cond_destroy(&p->cond);
            free(p);
            return chr_fail(err, CHR_ENOMEM, "", "cannot start the projector thread");
        }
        p->started = true;
    }
    eng->projector = p;
    return CHR_OK;
}

void projector_stop(engine_t *eng)
{
    projector_t *p = eng->projector;
    if (!p) return;
    if (p->started) {
        pthread_mutex_lock(&p->lock);
        p->stop = true;
        pthread_cond_broadcast(&p->cond);
        pthread_mutex_unlock(&p->lock);
        pthread_join(p->thread, NULL);
    }
    pthread_mutex_destroy(&p->lock);
    pthread_mutex_destroy(&p->refresh);
    pthread_cond_destroy(&p->cond);
    free(p);
    eng->projector = NULL;
}

static int64_t known_head(projector_t *p)
{
    int64_t head = 0;
    store_wait(p->events, INT64_MAX, 0, &head);
    return head;
}

int projector_status(projector_t *p, projector_status_t *out, chr_err_t *err)
{
    memset(out, 0, sizeof *out);
    out->runs_here = p->run;
    out->lease_held = atomic_load(&p->holding);
    pthread_mutex_lock(&p->lock);
    snprintf(out->last_error, sizeof out->last_error, "%s", p->last_error);
    pthread_mutex_unlock(&p->lock);
    checkpoint_row_t row;
    int rc = read_checkpoint(p, &row, err);
    if (rc) return rc;
    out->checkpoint = row.position;
    snprintf(out->holder, sizeof out->holder, "%s", row.holder);
    out->updated_at = row.updated_at;
    out->head = known_head(p);
    out->lag = projector_lag(out->head, out->checkpoint);
    return CHR_OK;
}

bool projector_staleness(projector_t *p, int64_t *position, int64_t *lag)
{
    if (!atomic_load(&p->holding)) {
        int64_t now = mono_ms();
        bool unknown = atomic_load(&p->checkpoint) < 0;
        if (unknown || now - atomic_load(&p->checkpoint_at_ms) >= PROJECTOR_STALENESS_CACHE_MS) {
            /* One request refreshes; the others serve the value before. */
            if (unknown ? pthread_mutex_lock(&p->refresh) == 0
                        : pthread_mutex_trylock(&p->refresh) == 0) {
                checkpoint_row_t row;
                chr_err_t err = {0};
                if (read_checkpoint(p, &row, &err) == CHR_OK && !atomic_load(&p->holding)) {
                    atomic_store(&p->checkpoint, row.position);
                    atomic_store(&p->checkpoint_at_ms, now);
                }
                pthread_mutex_unlock(&p->refresh);
            }
        }
    }
    int64_t pos = atomic_load(&p->checkpoint);
    if (pos < 0) return false;
    *position = pos;
    *lag = projector_lag(known_head(p), pos);
    return true;
}
