/*
 * store.c - the backend-independent half of the store: choosing a backend by
 * URL, validating appends once for all backends, and waking readers that wait
 * for new positions. Not here: SQL of any dialect.
 */
#include "store/store.h"

#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct listener {
    store_commit_fn fn;
    void *user;
} listener_t;

typedef struct notify {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int64_t head;
    bool closing;
    listener_t *listeners;
    size_t n_listeners;
} notify_t;

static notify_t *notify_new(void)
{
    notify_t *n = calloc(1, sizeof *n);
    if (!n) return NULL;
    pthread_mutex_init(&n->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&n->cond, &ca);
    pthread_condattr_destroy(&ca);
    return n;
}

int store_open(const char *url, const store_options_t *opts, store_t **out, chr_err_t *err)
{
    store_options_t o = {0};
    if (opts) o = *opts;
    if (o.max_event_bytes == 0) o.max_event_bytes = EVENT_DEFAULT_MAX_BYTES;
    if (!url || !*url) url = "sqlite:./chronicle.db";

    const char *path = url;
    bool postgres = false;
    if (strncmp(url, "sqlite:", 7) == 0) {
        path = url + 7;
        if (strncmp(path, "//", 2) == 0) path += 2; /* sqlite://path */
    } else if (strncmp(url, "postgres://", 11) == 0 || strncmp(url, "postgresql://", 13) == 0) {
        postgres = true;
    } else if (strstr(url, "://")) {
        return chr_fail(err, CHR_EINVAL, "DATABASE_URL",
                        "unknown database URL scheme in \"%s\"; expected sqlite:PATH or "
                        "postgres://...",
                        url);
    }
    if (!*path) return chr_fail(err, CHR_EINVAL, "DATABASE_URL", "sqlite: URL has an empty path");

    notify_t *n = notify_new();
    if (!n) return chr_fail(err, CHR_ENOMEM, "", "out of memory");
    store_t *s = NULL;
    int rc = postgres ? pg_store_open(url, &o, &s, err) : sqlite_store_open(path, &o, &s, err);
    if (rc) {
        pthread_mutex_destroy(&n->lock);
        pthread_cond_destroy(&n->cond);
        free(n);
        return rc;
    }
    s->opts = o;
    snprintf(s->url, sizeof s->url, "%s", url);
    s->notify = n;
    int64_t head = 0;
    if (s->ops->head_position(s, &head, NULL) == CHR_OK) n->head = head;
    *out = s;
    return CHR_OK;
}

void store_close(store_t *s)
{
    if (!s) return;
    notify_t *n = s->notify;
    if (n) {
        pthread_mutex_lock(&n->lock);
        n->closing = true;
        pthread_cond_broadcast(&n->cond);
        pthread_mutex_unlock(&n->lock);
    }
    s->ops->close(s); /* drains the writer, frees the backend */
    if (n) {
        pthread_mutex_destroy(&n->lock);
        pthread_cond_destroy(&n->cond);
        free(n->listeners);
        free(n);
    }
}

static int validate_uow(store_t *s, store_uow_t *uow, chr_err_t *err)
{
    if (!uow || (uow->n_appends == 0 && !uow->apply))
        return chr_fail(err, CHR_EINVAL, "events", "nothing to commit");
    for (size_t a = 0; a < uow->n_appends; a++) {
        store_append_t *ap = &uow->appends[a];
        int rc = event_check_name(ap->stream, "stream", err);
        if (rc) return rc;
        if (ap->expected_version < STORE_STREAM_EXISTS)
            return chr_fail(err, CHR_EINVAL, "expected_version",
                            "expected_version %lld is not a version or a known mode",
                            (long long)ap->expected_version);
        if (ap->n_events == 0)
            return chr_fail(err, CHR_EINVAL, "events", "an append needs at least one event");
        for (size_t i = 0; i < ap->n_events; i++) {
            char prefix[48];
            snprintf(prefix, sizeof prefix, "events[%zu].", i);
            rc = event_validate(&ap->events[i], s->opts.max_event_bytes, prefix, err);
            if (rc) return rc;
            for (size_t j = 0; j < i && ap->events[i].id[0]; j++)
                if (strcmp(ap->events[i].id, ap->events[j].id) == 0)
                    return chr_fail(err, CHR_EINVAL, "events", "events[%zu].id repeats events[%zu].id",
                                    i, j);
        }
    }
    return CHR_OK;
}

int store_commit_async(store_t *s, store_uow_t *uow, chr_err_t *err, store_done_fn done,
                       void *user)
{
    int rc = validate_uow(s, uow, err);
    if (rc) return rc;
    return s->ops->commit_async(s, uow, err, done, user);
}

typedef struct sync_wait {
    sem_t sem;
    int rc;
} sync_wait_t;

static void sync_done(void *user, int rc)
{
    sync_wait_t *w = user;
    w->rc = rc;
    sem_post(&w->sem);
}

int store_commit(store_t *s, store_uow_t *uow, chr_err_t *err)
{
    sync_wait_t w = {.rc = CHR_OK};
    sem_init(&w.sem, 0, 0);
    int rc = store_commit_async(s, uow, err, sync_done, &w);
    if (rc == CHR_OK) {
        while (sem_wait(&w.sem) != 0) {
        } /* EINTR: keep waiting, the writer will post */
        rc = w.rc;
    }
    sem_destroy(&w.sem);
    return rc;
}

int store_append(store_t *s, const char *stream, int64_t expected, event_t *events, size_t n,
                 int64_t *version_out, bool *idempotent, chr_err_t *err)
{
    store_append_t ap = {.stream = stream, .expected_version = expected, .events = events,
                         .n_events = n};
    store_uow_t uow = {.appends = &ap, .n_appends = 1};
    int rc = store_commit(s, &uow, err);
    if (rc == CHR_OK) {
        if (version_out) *version_out = ap.version;
        if (idempotent) *idempotent = ap.idempotent;
    }
    return rc;
}

int store_read_stream(store_t *s, const char *stream, int64_t from_version, size_t limit,
                      bool backwards, event_list_t *out, chr_err_t *err)
{
    int rc = event_check_name(stream, "stream", err);
    if (rc) return rc;
    if (from_version < 0)
        return chr_fail(err, CHR_EINVAL, "from", "from must be a version >= 0");
    return s->ops->read_stream(s, stream, from_version, limit, backwards, out, err);
}

int store_read_all(store_t *s, int64_t after, size_t limit, const char *const *types,
                   size_t n_types, event_list_t *out, chr_err_t *err)
{
    if (after < 0) return chr_fail(err, CHR_EINVAL, "after", "after must be a position >= 0");
    for (size_t i = 0; i < n_types; i++) {
        int rc = event_check_name(types[i], "types", err);
        if (rc) return rc;
    }
    return s->ops->read_all(s, after, limit, types, n_types, out, err);
}

int store_read_event(store_t *s, const char *id, event_t *out, chr_err_t *err)
{
    if (!uuid_is_valid(id)) return chr_fail(err, CHR_EINVAL, "id", "id must be a UUID");
    return s->ops->read_event(s, id, out, err);
}

int store_stream_version(store_t *s, const char *stream, int64_t *version, chr_err_t *err)
{
    int rc = event_check_name(stream, "stream", err);
    if (rc) return rc;
    return s->ops->stream_version(s, stream, version, err);
}

int store_head_position(store_t *s, int64_t *position, chr_err_t *err)
{
    return s->ops->head_position(s, position, err);
}

int store_stats(store_t *s, store_stats_t *out, chr_err_t *err)
{
    return s->ops->stats(s, out, err);
}

int store_migrate(store_t *s, chr_err_t *err)
{
    return s->ops->migrate(s, err);
}

int store_migrations(store_t *s, store_migration_info_t **out, size_t *n, chr_err_t *err)
{
    return s->ops->migrations(s, out, n, err);
}

int store_ping(store_t *s, chr_err_t *err)
{
    return s->ops->ping(s, err);
}

int store_lease_try(store_t *s, const char *name, store_lease_t **out, chr_err_t *err)
{
    *out = NULL;
    size_t len = name ? strlen(name) : 0;
    if (len == 0 || len > STORE_LEASE_NAME_MAX)
        return chr_fail(err, CHR_EINVAL, "lease", "a lease name has 1 to %d characters",
                        STORE_LEASE_NAME_MAX);
    for (size_t i = 0; i < len; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || strchr("_.:-", c)))
            return chr_fail(err, CHR_EINVAL, "lease",
                            "a lease name has only a-z, 0-9, '_', '.', ':' and '-'");
    }
    int rc = s->ops->lease_try(s, name, out, err);
    if (rc == CHR_OK) {
        (*out)->store = s;
        snprintf((*out)->name, sizeof (*out)->name, "%s", name);
    }
    return rc;
}

bool store_lease_check(store_lease_t *l)
{
    return l && l->store->ops->lease_check(l);
}

void store_lease_release(store_lease_t *l)
{
    if (l) l->store->ops->lease_release(l);
}

int store_tx_exec(store_tx_t *tx, const char *sql, const store_val_t *params, size_t n,
                  int64_t *changes, chr_err_t *err)
{
    return tx->store->ops->tx_exec(tx, sql, params, n, changes, err);
}

int store_tx_query(store_tx_t *tx, const char *sql, const store_val_t *params, size_t n,
                   store_row_fn fn, void *user, chr_err_t *err)
{
    return tx->store->ops->tx_query(tx, sql, params, n, fn, user, err);
}

int store_query(store_t *s, const char *sql, const store_val_t *params, size_t n,
                store_row_fn fn, void *user, chr_err_t *err)
{
    return s->ops->query(s, sql, params, n, fn, user, err);
}

void store_notify_commit(store_t *s, int64_t head)
{
    notify_t *n = s->notify;
    if (!n) return;
    pthread_mutex_lock(&n->lock);
    if (head > n->head) n->head = head;
    pthread_cond_broadcast(&n->cond);
    size_t count = n->n_listeners;
    listener_t local[16];
    listener_t *ls = count <= 16 ? local : malloc(count * sizeof *ls);
    if (ls && count) memcpy(ls, n->listeners, count * sizeof *ls);
    pthread_mutex_unlock(&n->lock);
    if (!ls) return;
    for (size_t i = 0; i < count; i++) ls[i].fn(ls[i].user, head);
    if (ls != local) free(ls);
}

int store_on_commit(store_t *s, store_commit_fn fn, void *user)
{
    notify_t *n = s->notify;
    pthread_mutex_lock(&n->lock);
    listener_t *ls = realloc(n->listeners, (n->n_listeners + 1) * sizeof *ls);
    if (!ls) {
        pthread_mutex_unlock(&n->lock);
        return CHR_ENOMEM;
    }
    ls[n->n_listeners++] = (listener_t){fn, user};
    n->listeners = ls;
    pthread_mutex_unlock(&n->lock);
    return CHR_OK;
}

int store_wait(store_t *s, int64_t after, int timeout_ms, int64_t *head)
{
    notify_t *n = s->notify;
    struct timespec deadline;
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    if (timeout_ms >= 0) {
        deadline.tv_sec += timeout_ms / 1000;
        deadline.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
        if (deadline.tv_nsec >= 1000000000L) {
            deadline.tv_sec++;
            deadline.tv_nsec -= 1000000000L;
        }
    }
    int rc = CHR_OK;
    pthread_mutex_lock(&n->lock);
    while (n->head <= after && !n->closing) {
        int w = timeout_ms < 0 ? pthread_cond_wait(&n->cond, &n->lock)
                               : pthread_cond_timedwait(&n->cond, &n->lock, &deadline);
        if (w == ETIMEDOUT) break;
    }
    if (head) *head = n->head;
    if (n->head <= after) rc = n->closing ? CHR_EUNAVAILABLE : CHR_ENOTFOUND;
    pthread_mutex_unlock(&n->lock);
    return rc;
}

void store_counters(store_t *s, store_counters_t *out)
{
    memset(out, 0, sizeof *out);
    s->ops->counters(s, out);
}
