/* feed.c - SSE subscribers suspended while idle; see feed.h. */
#include "http/feed.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "http/buf.h"
#include "http/event_json.h"
#include "util/log.h"
#include "util/metrics.h"

#define PAGE_EVENTS 64        /* events read from the store per wake-up */
#define SSE_BLOCK (16 * 1024) /* MHD's buffer for one content-reader call */

typedef struct sub sub_t;

struct http_feed {
    store_t *store;
    int heartbeat_ms;

    pthread_mutex_t lock; /* guards waiters and each sub's waiting flag */
    sub_t *waiters;       /* suspended subscribers (doubly linked) */
    atomic_size_t n_waiting;

    atomic_int_least64_t head;    /* newest committed position we heard of */
    atomic_uint_least64_t hb_gen; /* bumped by the timer: heartbeat due */
    atomic_bool closing;

    pthread_cond_t timer_cond; /* CLOCK_MONOTONIC; signalled on close */
    pthread_t timer;
    bool timer_started;
};

struct sub {
    http_feed_t *feed;
    struct MHD_Connection *conn;
    sub_t *prev, *next; /* in feed->waiters while waiting */
    bool waiting;       /* suspended and listed; under feed->lock */

    int64_t pos;     /* everything <= pos has been sent or skipped */
    uint64_t hb_gen; /* heartbeat generation already answered */
    char **types;
    size_t n_types;

    const engine_t *eng;  /* for the access rules of entity streams; may be NULL */
    access_scope_t scope; /* the subscriber: only events it may see are sent */
    auth_principal_t who;
    char tenant[AUTH_SUB_MAX + 1];

    event_list_t page; /* events read but not yet formatted */
    size_t page_idx;
    bool page_full;    /* the read returned PAGE_EVENTS: more may follow */
    int64_t page_seen; /* feed head observed before the read */

    http_buf_t out; /* formatted bytes not yet handed to MHD */
    size_t out_off;
};

/* Moves every waiter off the list and resumes it. Caller holds f->lock. */
static void resume_all_locked(http_feed_t *f)
{
    sub_t *s = f->waiters;
    while (s) {
        sub_t *next = s->next;
        s->waiting = false;
        s->prev = s->next = NULL;
        MHD_resume_connection(s->conn);
        s = next;
    }
    f->waiters = NULL;
    atomic_store(&f->n_waiting, 0);
}

/* Store listener, on the committing thread: publish the head, then resume
 * waiters. The head is stored before n_waiting is read (both seq_cst) and
 * a reader increments n_waiting before re-reading the head, so at least
 * one side sees the other: no wake-up is lost. */
static void on_commit(void *user, int64_t head)
{
    http_feed_t *f = user;
    int64_t cur = atomic_load(&f->head);
    while (head > cur && !atomic_compare_exchange_weak(&f->head, &cur, head)) {
    }
    if (atomic_load(&f->n_waiting) == 0) return;
    pthread_mutex_lock(&f->lock);
    resume_all_locked(f);
    pthread_mutex_unlock(&f->lock);
}

static void *timer_main(void *arg)
{
    http_feed_t *f = arg;
    pthread_mutex_lock(&f->lock);
    while (!atomic_load(&f->closing)) {
        struct timespec deadline;
        clock_gettime(CLOCK_MONOTONIC, &deadline);
        deadline.tv_sec += f->heartbeat_ms / 1000;
        deadline.tv_nsec += (long)(f->heartbeat_ms % 1000) * 1000000L;
        if (deadline.tv_nsec >= 1000000000L) {
            deadline.tv_sec++;
            deadline.tv_nsec -= 1000000000L;
        }
        int rc = 0;
        while (!atomic_load(&f->closing) && rc != ETIMEDOUT)
            rc = pthread_cond_timedwait(&f->timer_cond, &f->lock, &deadline);
        if (atomic_load(&f->closing)) break;
        atomic_fetch_add(&f->hb_gen, 1);
        resume_all_locked(f);
    }
    pthread_mutex_unlock(&f->lock);
    return NULL;
}

int http_feed_new(store_t *store, int heartbeat_ms, http_feed_t **out, chr_err_t *err)
{
    *out = NULL;
    if (heartbeat_ms <= 0)
        return chr_fail(err, CHR_EINVAL, "SSE_HEARTBEAT_MS", "the heartbeat interval must be > 0");
    http_feed_t *f = calloc(1, sizeof *f);
    if (!f) return chr_fail(err, CHR_ENOMEM, "", "out of memory");
    f->store = store;
    f->heartbeat_ms = heartbeat_ms;
    pthread_mutex_init(&f->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&f->timer_cond, &ca);
    pthread_condattr_destroy(&ca);
    int64_t head = 0;
    chr_err_t e;
    chr_err_clear(&e);
    if (store_head_position(store, &head, &e) != CHR_OK) head = 0;
    atomic_store(&f->head, head);
    if (store_on_commit(store, on_commit, f) != CHR_OK) {
        http_feed_free(f);
        return chr_fail(err, CHR_ENOMEM, "", "out of memory");
    }
    if (pthread_create(&f->timer, NULL, timer_main, f) != 0) {
        /* The listener stays registered: keep f alive (leaked) rather than
         * leave the store a dangling pointer. Start-up fails anyway. */
        return chr_fail(err, CHR_ENOMEM, "", "cannot start the heartbeat thread");
    }
    f->timer_started = true;
    *out = f;
    return CHR_OK;
}

void http_feed_close(http_feed_t *f)
{
    if (!f) return;
    pthread_mutex_lock(&f->lock);
    atomic_store(&f->closing, true);
    pthread_cond_broadcast(&f->timer_cond);
    resume_all_locked(f);
    pthread_mutex_unlock(&f->lock);
    if (f->timer_started) {
        pthread_join(f->timer, NULL);
        f->timer_started = false;
    }
}

void http_feed_free(http_feed_t *f)
{
    if (!f) return;
    http_feed_close(f);
    pthread_mutex_destroy(&f->lock);
    pthread_cond_destroy(&f->timer_cond);
    free(f);
}

static void sub_free(void *cls)
{
    sub_t *s = cls;
    http_feed_t *f = s->feed;
    /* Only a waiting subscriber is touched by other threads, and MHD never
     * frees a suspended request; the check is a guard, not a path. */
    if (s->waiting) {
        pthread_mutex_lock(&f->lock);
        if (s->waiting) {
            if (s->prev)
                s->prev->next = s->next;
            else
                f->waiters = s->next;
            if (s->next) s->next->prev = s->prev;
            atomic_fetch_sub(&f->n_waiting, 1);
        }
        pthread_mutex_unlock(&f->lock);
    }
    for (size_t i = 0; i < s->n_types; i++)
        free(s->types[i]);
    free(s->types);
    event_list_free(&s->page);
    http_buf_free(&s->out);
    free(s);
    metrics_subscribers_add(-1);
}

/* Formats pending page events into s->out until it holds at least want
 * bytes or the page is done. */
static void format_page(sub_t *s, size_t want)
{
    while (s->page_idx < s->page.len && s->out.len < want && !s->out.oom) {
        const event_t *ev = &s->page.items[s->page_idx++];
        http_buf_puts(&s->out, "id: ");
        http_buf_i64(&s->out, ev->position);
        http_buf_puts(&s->out, "\nevent: ");
        http_buf_puts(&s->out, ev->type ? ev->type : "");
        http_buf_puts(&s->out, "\ndata: ");
        http_event_json(&s->out, ev);
        http_buf_puts(&s->out, "\n\n");
        if (ev->position > s->pos) s->pos = ev->position;
    }
    if (s->page_idx >= s->page.len) {
        /* A short page means nothing else matched up to the head seen before
         * the read: skip ahead so a type filter does not rescan old rows. */
        if (!s->page_full && s->page_seen > s->pos) s->pos = s->page_seen;
        event_list_free(&s->page);
        s->page_idx = 0;
    }
}

/* MHD content reader: called on the connection's worker thread whenever
 * MHD can send more. Returns bytes written to buf, 0 after suspending the
 * connection (nothing to send), or END_OF_STREAM / END_WITH_ERROR. */
static ssize_t sub_read(void *cls, uint64_t offset, char *buf, size_t max)
{
    (void)offset;
    sub_t *s = cls;
    http_feed_t *f = s->feed;
    for (;;) {
        if (s->out.oom) return MHD_CONTENT_READER_END_WITH_ERROR;
        if (s->out_off < s->out.len) {
            size_t n = s->out.len - s->out_off;
            if (n > max) n = max;
            memcpy(buf, s->out.data + s->out_off, n);
            s->out_off += n;
            if (s->out_off == s->out.len) {
                http_buf_clear(&s->out);
                s->out_off = 0;
            }
            return (ssize_t)n;
        }
        if (atomic_load(&f->closing)) return MHD_CONTENT_READER_END_OF_STREAM;
        if (s->page_idx < s->page.len) {
            format_page(s, max);
            continue;
        }
        uint64_t gen = atomic_load(&f->hb_gen);
        if (gen != s->hb_gen) {
            s->hb_gen = gen;
            http_buf_puts(&s->out, ": heartbeat\n\n");
            continue;
        }
        int64_t seen = atomic_load(&f->head);
        if (seen > s->pos) {
            chr_err_t err;
            chr_err_clear(&err);
            event_list_free(&s->page);
            s->page_idx = 0;
            int rc = store_read_all(f->store, s->pos, PAGE_EVENTS, (const char *const *)s->types,
                                    s->n_types, &s->page, &err);
            if (rc != CHR_OK) {
                log_at(LOG_WARN, "live feed read failed", LOG_S("error", err.msg),
                       LOG_I("after", s->pos));
                return MHD_CONTENT_READER_END_WITH_ERROR;
            }
            s->page_full = s->page.len >= PAGE_EVENTS;
            s->page_seen = seen;
            int64_t last = s->page.len ? s->page.items[s->page.len - 1].position : 0;
            engine_filter_events(s->eng, &s->scope, &s->page);
            if (s->page.len == 0) {
                if (last > s->pos) s->pos = last;
                if (!s->page_full && seen > s->pos) s->pos = seen;
                continue;
            }
            format_page(s, max);
            continue;
        }
        /* Nothing to send: suspend until a commit, a heartbeat or shutdown.
         * Announce ourselves (n_waiting) before re-checking what would
         * wake us, so a wake-up between the checks above and here is seen. */
        pthread_mutex_lock(&f->lock);
        atomic_fetch_add(&f->n_waiting, 1);
        if (atomic_load(&f->head) != seen || atomic_load(&f->closing) ||
            atomic_load(&f->hb_gen) != s->hb_gen) {
            atomic_fetch_sub(&f->n_waiting, 1);
            pthread_mutex_unlock(&f->lock);
            continue;
        }
        s->waiting = true;
        s->prev = NULL;
        s->next = f->waiters;
        if (f->waiters) f->waiters->prev = s;
        f->waiters = s;
        MHD_suspend_connection(s->conn);
        pthread_mutex_unlock(&f->lock);
        return 0;
    }
}

struct MHD_Response *http_feed_subscribe(http_feed_t *f, struct MHD_Connection *conn, int64_t after,
                                         const char *const *types, size_t n_types,
                                         const engine_t *eng, const access_scope_t *scope)
{
    if (atomic_load(&f->closing)) return NULL;
    sub_t *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->eng = eng;
    s->scope = *scope;
    if (scope->who) {
        s->who = *scope->who;
        s->scope.who = &s->who;
    }
    snprintf(s->tenant, sizeof s->tenant, "%s", scope->tenant ? scope->tenant : "");
    s->scope.tenant = s->tenant;
    s->feed = f;
    s->conn = conn;
    s->pos = after;
    s->hb_gen = atomic_load(&f->hb_gen);
    if (n_types) {
        s->types = calloc(n_types, sizeof *s->types);
        if (!s->types) {
            free(s);
            return NULL;
        }
        for (size_t i = 0; i < n_types; i++) {
            s->types[i] = strdup(types[i]);
            if (!s->types[i]) {
                for (size_t k = 0; k < i; k++)
                    free(s->types[k]);
                free(s->types);
                free(s);
                return NULL;
            }
        }
        s->n_types = n_types;
    }
    metrics_subscribers_add(1);
    struct MHD_Response *r =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, SSE_BLOCK, sub_read, s, sub_free);
    if (!r) {
        sub_free(s);
        return NULL;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream");
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    MHD_add_response_header(r, "X-Accel-Buffering", "no");
    return r;
}
