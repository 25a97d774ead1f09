/*
 * consumer.c - the consumer runtime: one thread per consumer, each
 * following its source from its checkpoint under a store lease; see
 * consumer.h.
 *
 * Why a thread per consumer rather than one event loop: an effect may
 * block for as long as its timeout (a webhook receiver that does not
 * answer, a disk that stalls an fsync), and with a thread of its own that
 * stalls nobody else, without every effect having to be written as a
 * non-blocking state machine (curl_multi, io_uring). Consumers are
 * declared in the app definition, so there are few (tens, not thousands);
 * a thread each costs a stack and is idle in store_wait when caught up.
 *
 * The loop of one consumer:
 *   1. hold the lease "consumer:<name>" (try once a second while another
 *      instance holds it; stop working when store_lease_check says lost);
 *   2. once a second (or when poked) reload its row: a reset elsewhere
 *      shows as a new epoch and moves the position; run requested
 *      dead-letter retries;
 *   3. read a batch after the position, deliver each matching event with
 *      retries, dead-letter what keeps failing;
 *   4. flush the effect, then advance the checkpoint (guarded by the
 *      epoch, so a reset in between wins) - never past an event whose
 *      effect has not succeeded. The move is queued to the store's group
 *      commit and not waited for (at most one in flight), so delivery does
 *      not stall on an fsync; a failed move makes the thread reload the
 *      stored checkpoint and deliver again from there;
 *   5. caught up: wait for a commit (store_wait; PostgreSQL wakes it for
 *      other instances' commits too through LISTEN/NOTIFY), in slices so
 *      that stop and pokes are seen within 200 ms. A SQLite database
 *      written by another process is seen at the next once-a-second check.
 */
#include "worker/consumer.h"

#include <errno.h>
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/timefmt.h"
#include "util/log.h"
#include "worker/consumer_store.h"

#define CHECK_EVERY_US 1000000 /* reload state, retries, lease retry */
#define WAIT_SLICE_MS 200
#define SKIP_SAVE_EVERY_US 1000000 /* checkpoint moves over non-matching events */
#define RETRIES_PER_CHECK 16

typedef struct consumer {
    consumer_runtime_t *rt;
    char name[CONSUMER_NAME_MAX + 1];
    char lease_name[STORE_LEASE_NAME_MAX + 1];
    const char *kind;
    const sink_filter_t *filter;
    int max_attempts;
    int64_t backoff_ms, max_backoff_ms;
    size_t batch;
    consumer_effect_t effect;
    consumer_source_t source;
    pthread_t thread;
    bool started;
    atomic_bool poked;

    /* thread-only state */
    store_lease_t *lease;
    bool have_state;
    int64_t pos, epoch, saved_pos;
    int64_t pending_delivered; /* delivered since the last save */
    int64_t last_check_us, last_save_us;
    int read_failures; /* consecutive failed reads of the source (backoff) */
    bool logged_wait;

    /* the checkpoint save in flight (at most one), finished on the store's
     * writer thread: save_lock guards these */
    pthread_mutex_t save_lock;
    pthread_cond_t save_cond;
    bool save_inflight;
    bool save_failed, save_stale; /* results not yet seen by the thread */
} consumer_t;

struct consumer_runtime {
    store_t *store;
    consumer_t **items;
    size_t n;
    atomic_bool stop;
    pthread_mutex_t lock;
    pthread_cond_t cond; /* signalled on stop */
};

/* ---- the local feed as a source ---------------------------------------- */

static int local_read(void *user, int64_t after, size_t limit, const sink_filter_t *f,
                      event_list_t *out, int64_t *scanned, chr_err_t *err)
{
    store_t *s = user;
    int64_t head = 0;
    int rc = store_head_position(s, &head, err);
    if (rc) return rc;
    const char *const *types = f ? (const char *const *)f->types : NULL;
    size_t n_types = f ? f->n_types : 0;
    rc = store_read_all(s, after, limit, types, n_types, out, err);
    if (rc) return rc;
    int64_t last = out->len ? out->items[out->len - 1].position : after;
    /* A short page has every matching event up to the head read before it. */
    *scanned = out->len < limit && head > last ? head : last;
    return CHR_OK;
}

static int local_wait(void *user, int64_t after, int timeout_ms)
{
    return store_wait(user, after, timeout_ms, NULL);
}

/* ---- small helpers ------------------------------------------------------- */

static bool stopping(const consumer_t *c)
{
    return atomic_load(&c->rt->stop);
}

/* Sleeps ms, or less when the runtime stops. */
static void nap(consumer_t *c, int64_t ms)
{
    consumer_runtime_t *rt = c->rt;
    struct timespec dl;
    clock_gettime(CLOCK_MONOTONIC, &dl);
    dl.tv_sec += ms / 1000;
    dl.tv_nsec += (ms % 1000) * 1000000L;
    if (dl.tv_nsec >= 1000000000L) {
        dl.tv_sec++;
        dl.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&rt->lock);
    while (!atomic_load(&rt->stop))
        if (pthread_cond_timedwait(&rt->cond, &rt->lock, &dl) == ETIMEDOUT) break;
    pthread_mutex_unlock(&rt->lock);
}

static void note_error(consumer_t *c, const char *msg)
{
    chr_err_t e;
    chr_err_clear(&e);
    if (consumer_store_set_error(c->rt->store, c->name, msg, &e) != CHR_OK)
        log_at(LOG_WARN, "consumer cannot record its error", LOG_S("consumer", c->name),
               LOG_S("error", e.msg));
}

/* The writer thread's answer to save_async. */
static void save_done(void *user, int rc, bool stale)
{
    consumer_t *c = user;
    pthread_mutex_lock(&c->save_lock);
    c->save_inflight = false;
    if (rc != CHR_OK) c->save_failed = true;
    if (stale) c->save_stale = true;
    pthread_cond_broadcast(&c->save_cond);
    pthread_mutex_unlock(&c->save_lock);
}

static void collect(consumer_t *c);

/* Waits for the save in flight, then takes in its outcome: a failed save
 * or a reset meanwhile makes the thread reload its row (and so deliver
 * again from the stored checkpoint: at-least-once). */
static void settle(consumer_t *c)
{
    pthread_mutex_lock(&c->save_lock);
    while (c->save_inflight)
        pthread_cond_wait(&c->save_cond, &c->save_lock);
    pthread_mutex_unlock(&c->save_lock);
    collect(c);
}

/* Takes in the outcome of saves that finished, without waiting for one in
 * flight. */
static void collect(consumer_t *c)
{
    pthread_mutex_lock(&c->save_lock);
    if (c->save_failed) log_at(LOG_WARN, "consumer cannot save its checkpoint", LOG_S("consumer", c->name));
    if (c->save_failed || c->save_stale) c->have_state = false;
    c->save_failed = c->save_stale = false;
    pthread_mutex_unlock(&c->save_lock);
}

/* Runs the effect's flush; false (with the error noted) when it failed. */
static bool flush(consumer_t *c)
{
    chr_err_t err;
    chr_err_clear(&err);
    if (!c->effect.flush || c->effect.flush(c->effect.user, &err) == CHR_OK) return true;
    log_at(LOG_WARN, "consumer flush failed", LOG_S("consumer", c->name), LOG_S("error", err.msg));
    note_error(c, err.msg);
    c->have_state = false; /* deliver again from the saved checkpoint */
    return false;
}

/* Flushes the effect, then queues the checkpoint move to c->pos without
 * waiting for it, unless one is still in flight (the next call saves). */
static void save_async(consumer_t *c)
{
    pthread_mutex_lock(&c->save_lock);
    bool busy = c->save_inflight;
    pthread_mutex_unlock(&c->save_lock);
    collect(c);
    if (busy || !c->have_state || (c->pos == c->saved_pos && c->pending_delivered == 0)) return;
    if (!flush(c)) return;
    chr_err_t err;
    chr_err_clear(&err);
    pthread_mutex_lock(&c->save_lock);
    c->save_inflight = true;
    pthread_mutex_unlock(&c->save_lock);
    if (consumer_store_advance_async(c->rt->store, c->name, c->epoch, c->pos, c->pending_delivered,
                                     save_done, c, &err) != CHR_OK) {
        save_done(c, err.code ? err.code : CHR_ESTORE, false);
        return;
    }
    c->saved_pos = c->pos;
    c->pending_delivered = 0;
    c->last_save_us = time_now_us();
}

/* Makes delivered effects durable and moves the checkpoint to c->pos,
 * waiting for it. */
static int save(consumer_t *c)
{
    settle(c);
    if (!c->have_state) return CHR_ESTORE;
    if (c->pos == c->saved_pos && c->pending_delivered == 0) return CHR_OK;
    if (!flush(c)) return CHR_ESTORE;
    chr_err_t err;
    chr_err_clear(&err);
    bool stale = false;
    int rc = consumer_store_advance(c->rt->store, c->name, c->epoch, c->pos,
                                    c->pending_delivered, &stale, &err);
    if (rc) {
        log_at(LOG_WARN, "consumer cannot save its checkpoint", LOG_S("consumer", c->name),
               LOG_S("error", err.msg));
        c->have_state = false;
        return rc;
    }
    c->saved_pos = c->pos;
    c->pending_delivered = 0;
    c->last_save_us = time_now_us();
    if (stale) c->have_state = false; /* reset meanwhile: take the new position */
    return CHR_OK;
}

/* Loads the row (creating it); takes its position when first loaded or
 * when its epoch moved (a reset). */
static int load_state(consumer_t *c)
{
    collect(c); /* a save in flight may still move the row: harmless, it only goes forward */
    chr_err_t err;
    chr_err_clear(&err);
    consumer_state_t st;
    int rc = consumer_store_get(c->rt->store, c->name, &st, &err);
    if (rc == CHR_ENOTFOUND) {
        rc = consumer_store_ensure(c->rt->store, c->name, &err);
        if (rc == CHR_OK) rc = consumer_store_get(c->rt->store, c->name, &st, &err);
    }
    if (rc) {
        log_at(LOG_WARN, "consumer cannot read its checkpoint", LOG_S("consumer", c->name),
               LOG_S("error", err.msg));
        return rc;
    }
    if (!c->have_state || st.epoch != c->epoch) {
        if (c->have_state)
            log_at(LOG_INFO, "consumer reset", LOG_S("consumer", c->name),
                   LOG_I("position", st.position), LOG_I("epoch", st.epoch));
        c->pos = c->saved_pos = st.position;
        c->epoch = st.epoch;
        c->pending_delivered = 0;
        c->have_state = true;
    }
    return CHR_OK;
}

/* One attempt; fills err on failure. */
static int attempt(consumer_t *c, const event_t *ev, int n, chr_err_t *err)
{
    char id[CONSUMER_DELIVERY_ID_LEN + 1];
    consumer_delivery_id(c->name, c->epoch, ev->id, id);
    consumer_delivery_t d = {c->name, id, n, &c->rt->stop};
    chr_err_clear(err);
    int rc = c->effect.deliver(c->effect.user, ev, &d, err);
    if (rc != CHR_OK && !err->msg[0]) snprintf(err->msg, sizeof err->msg, "delivery failed");
    return rc;
}

enum { DELIVERED, DEAD, STOPPED };

/* Delivers ev with retries; DEAD after max_attempts failures or one that
 * retrying cannot fix (err has the last failure, *attempts the count),
 * STOPPED when the runtime stops first. */
static int deliver(consumer_t *c, const event_t *ev, chr_err_t *err, int *attempts)
{
    for (int n = 1;; n++) {
        *attempts = n;
        int rc = attempt(c, ev, n, err);
        if (rc == CHR_OK) return DELIVERED;
        if (stopping(c)) return STOPPED;
        log_at(LOG_WARN, "delivery failed", LOG_S("consumer", c->name), LOG_S("event_id", ev->id),
               LOG_I("position", ev->position), LOG_I("attempt", n), LOG_S("error", err->msg));
        note_error(c, err->msg);
        if (n >= c->max_attempts || rc == CONSUMER_GIVE_UP) return DEAD;
        double r = (double)randombytes_uniform(1000000) / 1e6;
        nap(c, consumer_backoff_ms(n, c->backoff_ms, c->max_backoff_ms, r));
        if (stopping(c)) return STOPPED;
    }
}

/* Runs the dead-letter retries requested through the API: one attempt
 * each, with the event's original delivery id. */
static void run_retries(consumer_t *c)
{
    consumer_retry_t rs[RETRIES_PER_CHECK];
    size_t n = 0;
    chr_err_t err;
    chr_err_clear(&err);
    if (consumer_store_retries(c->rt->store, c->name, rs, RETRIES_PER_CHECK, &n, &err) != CHR_OK)
        return;
    for (size_t i = 0; i < n && !stopping(c); i++) {
        event_t ev = {0};
        chr_err_clear(&err);
        int rc = c->source.get ? c->source.get(c->source.user, rs[i].event_id, rs[i].position, &ev,
                                               &err)
                               : store_read_event(c->rt->store, rs[i].event_id, &ev, &err);
        if (rc == CHR_OK) {
            rc = attempt(c, &ev, (int)rs[i].attempts + 1, &err);
            if (rc == CHR_OK && c->effect.flush) rc = c->effect.flush(c->effect.user, &err);
        }
        chr_err_t e2;
        chr_err_clear(&e2);
        if (rc == CHR_OK) {
            consumer_store_retry_done(c->rt->store, c->name, rs[i].id, &e2);
            log_at(LOG_INFO, "dead letter delivered", LOG_S("consumer", c->name),
                   LOG_I("dead_letter", rs[i].id), LOG_S("event_id", rs[i].event_id));
        } else if (!stopping(c)) {
            consumer_store_retry_failed(c->rt->store, c->name, rs[i].id, rs[i].attempts + 1,
                                        err.msg, &e2);
            note_error(c, err.msg);
        }
        event_free(&ev);
    }
}

/* Step 3 and 4: one batch. Returns true when the source may have more
 * right away (a full page), false when caught up. *target gets the position
 * to wait beyond. */
static bool run_batch(consumer_t *c, event_list_t *batch, int64_t *target)
{
    chr_err_t err;
    chr_err_clear(&err);
    int64_t scanned = c->pos;
    int rc = c->source.read(c->source.user, c->pos, c->batch, c->filter, batch, &scanned, &err);
    if (rc) {
        log_at(LOG_WARN, "consumer cannot read its source", LOG_S("consumer", c->name),
               LOG_S("error", err.msg), LOG_I("failures", c->read_failures + 1));
        note_error(c, err.msg);
        event_list_free(batch);
        /* a source that is down (another instance's feed): back off, up to 10 s */
        double r = (double)randombytes_uniform(1000000) / 1e6;
        nap(c, consumer_backoff_ms(++c->read_failures, 250, 10000, r));
        *target = c->pos;
        return false;
    }
    if (c->read_failures) log_at(LOG_INFO, "consumer reads its source again", LOG_S("consumer", c->name));
    c->read_failures = 0;
    bool full = batch->len >= c->batch, all = true;
    for (size_t i = 0; i < batch->len && all; i++) {
        const event_t *ev = &batch->items[i];
        if (stopping(c)) {
            all = false;
            break;
        }
        if (c->filter && !consumer_filter_match(c->filter, ev->type, ev->stream)) {
            c->pos = ev->position;
            continue;
        }
        int attempts = 0;
        switch (deliver(c, ev, &err, &attempts)) {
        case DELIVERED:
            c->pos = ev->position;
            c->pending_delivered++;
            break;
        case DEAD: {
            /* What came before is durable first, then the dead letter and
             * the checkpoint past it move together. */
            if (save(c) != CHR_OK) {
                all = false;
                break;
            }
            bool stale = false;
            chr_err_t e2;
            chr_err_clear(&e2);
            if (consumer_store_dead_letter(c->rt->store, c->name, c->epoch, ev, attempts,
                                           err.msg, &stale, &e2) != CHR_OK) {
                log_at(LOG_WARN, "consumer cannot store a dead letter", LOG_S("consumer", c->name),
                       LOG_S("error", e2.msg));
                c->have_state = false;
                all = false;
                break;
            }
            log_at(LOG_WARN, "dead letter", LOG_S("consumer", c->name), LOG_S("event_id", ev->id),
                   LOG_I("position", ev->position), LOG_I("attempts", attempts));
            if (stale) {
                c->have_state = false;
                all = false;
                break;
            }
            c->pos = c->saved_pos = ev->position;
            break;
        }
        default: /* STOPPED */
            all = false;
            break;
        }
        if (!c->have_state) all = false;
    }
    event_list_free(batch);
    if (all && c->have_state && scanned > c->pos) c->pos = scanned;
    int64_t now = time_now_us();
    if (c->have_state &&
        (c->pending_delivered > 0 || stopping(c) || now - c->last_save_us >= SKIP_SAVE_EVERY_US))
        save_async(c);
    *target = scanned > c->pos ? scanned : c->pos;
    return all && full;
}

static void *consumer_main(void *arg)
{
    consumer_t *c = arg;
    store_t *s = c->rt->store;
    event_list_t batch = {0};
    while (!stopping(c)) {
        if (!c->lease) {
            chr_err_t err;
            chr_err_clear(&err);
            int rc = store_lease_try(s, c->lease_name, &c->lease, &err);
            if (rc != CHR_OK) {
                if (!c->logged_wait)
                    log_at(rc == CHR_ECONFLICT ? LOG_INFO : LOG_WARN,
                           "consumer waits for its lease", LOG_S("consumer", c->name),
                           LOG_S("detail", rc == CHR_ECONFLICT ? "held by another instance"
                                                               : err.msg));
                c->logged_wait = true;
                nap(c, 1000);
                continue;
            }
            c->logged_wait = false;
            c->have_state = false;
            log_at(LOG_INFO, "consumer started", LOG_S("consumer", c->name),
                   LOG_S("kind", c->kind));
        }
        if (!store_lease_check(c->lease)) {
            log_at(LOG_WARN, "consumer lost its lease", LOG_S("consumer", c->name));
            store_lease_release(c->lease);
            c->lease = NULL;
            c->have_state = false;
            continue;
        }
        int64_t now = time_now_us();
        bool check = !c->have_state || atomic_exchange(&c->poked, false) ||
                     now - c->last_check_us >= CHECK_EVERY_US;
        if (check) {
            c->last_check_us = now;
            if (load_state(c) != CHR_OK) {
                nap(c, 1000);
                continue;
            }
            run_retries(c);
        }
        int64_t target = c->pos;
        if (run_batch(c, &batch, &target)) continue;
        /* caught up: wait for a commit after target, a poke, or the next check */
        int64_t until = time_now_us() + CHECK_EVERY_US;
        while (!stopping(c) && !atomic_load(&c->poked) && time_now_us() < until)
            if (c->source.wait(c->source.user, target, WAIT_SLICE_MS) == CHR_OK) break;
    }
    settle(c);
    if (c->lease) {
        if (c->have_state) save(c);
        store_lease_release(c->lease);
        c->lease = NULL;
    }
    event_list_free(&batch);
    return NULL;
}

/* ---- lifecycle ------------------------------------------------------------ */

int consumer_runtime_new(store_t *s, consumer_runtime_t **out, chr_err_t *err)
{
    consumer_runtime_t *rt = calloc(1, sizeof *rt);
    if (!rt) return chr_fail(err, CHR_ENOMEM, "", "out of memory");
    rt->store = s;
    atomic_init(&rt->stop, false);
    pthread_mutex_init(&rt->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&rt->cond, &ca);
    pthread_condattr_destroy(&ca);
    *out = rt;
    return CHR_OK;
}

static void free_parts(consumer_effect_t *e, consumer_source_t *src)
{
    if (e->free) e->free(e->user);
    if (src->read && src->free) src->free(src->user);
}

int consumer_runtime_add(consumer_runtime_t *rt, const consumer_spec_t *spec, chr_err_t *err)
{
    consumer_effect_t effect = spec->effect;
    consumer_source_t source = spec->source;
    size_t len = spec->name ? strlen(spec->name) : 0;
    if (len == 0 || len > CONSUMER_NAME_MAX || !spec->effect.deliver) {
        free_parts(&effect, &source);
        return chr_fail(err, CHR_EINVAL, "name", "a consumer needs a name of 1 to %d characters "
                        "and an effect", CONSUMER_NAME_MAX);
    }
    consumer_t *c = calloc(1, sizeof *c);
    consumer_t **items = c ? realloc(rt->items, (rt->n + 1) * sizeof *items) : NULL;
    if (!items) {
        free(c);
        free_parts(&effect, &source);
        return chr_fail(err, CHR_ENOMEM, "", "out of memory");
    }
    rt->items = items;
    c->rt = rt;
    snprintf(c->name, sizeof c->name, "%s", spec->name);
    snprintf(c->lease_name, sizeof c->lease_name, "consumer:%s", spec->name);
    c->kind = spec->kind ? spec->kind : "consumer";
    c->filter = spec->filter;
    c->max_attempts = spec->max_attempts > 0 ? spec->max_attempts : 1;
    c->backoff_ms = spec->backoff_ms > 0 ? spec->backoff_ms : 1000;
    c->max_backoff_ms = spec->max_backoff_ms >= c->backoff_ms ? spec->max_backoff_ms : c->backoff_ms;
    c->batch = spec->batch ? spec->batch : 1000;
    c->effect = effect;
    c->source = source;
    if (!c->source.read) {
        c->source = (consumer_source_t){.read = local_read, .wait = local_wait, .user = rt->store};
    }
    atomic_init(&c->poked, false);
    pthread_mutex_init(&c->save_lock, NULL);
    pthread_cond_init(&c->save_cond, NULL);
    rt->items[rt->n++] = c;
    return CHR_OK;
}

int consumer_runtime_start(consumer_runtime_t *rt, chr_err_t *err)
{
    for (size_t i = 0; i < rt->n; i++) {
        consumer_t *c = rt->items[i];
        if (c->started) continue;
        int rc = pthread_create(&c->thread, NULL, consumer_main, c);
        if (rc != 0)
            return chr_fail(err, CHR_ENOMEM, "", "cannot start consumer %s: %s", c->name,
                            strerror(rc));
        c->started = true;
    }
    return CHR_OK;
}

void consumer_runtime_poke(consumer_runtime_t *rt, const char *name)
{
    if (!rt || !name) return;
    for (size_t i = 0; i < rt->n; i++)
        if (strcmp(rt->items[i]->name, name) == 0) atomic_store(&rt->items[i]->poked, true);
}

void consumer_runtime_free(consumer_runtime_t *rt)
{
    if (!rt) return;
    pthread_mutex_lock(&rt->lock);
    atomic_store(&rt->stop, true);
    pthread_cond_broadcast(&rt->cond);
    pthread_mutex_unlock(&rt->lock);
    for (size_t i = 0; i < rt->n; i++) {
        consumer_t *c = rt->items[i];
        if (c->started) pthread_join(c->thread, NULL);
        consumer_source_t src = c->source;
        if (src.read == local_read) src.read = NULL;
        free_parts(&c->effect, &src);
        pthread_mutex_destroy(&c->save_lock);
        pthread_cond_destroy(&c->save_cond);
        free(c);
    }
    free(rt->items);
    pthread_mutex_destroy(&rt->lock);
    pthread_cond_destroy(&rt->cond);
    free(rt);
}
