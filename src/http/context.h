/*
 * context.h - the state every HTTP handler shares for the life of the
 * server: configuration, the store, the router, auth and the live feed.
 * Created and torn down by server.c; handlers only read it (async.c keeps
 * the count of requests waiting for another thread).
 */
#ifndef CHRONICLE_HTTP_CONTEXT_H
#define CHRONICLE_HTTP_CONTEXT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "engine/entity.h"
#include "store/store.h"
#include "util/config.h"

typedef struct http_router http_router_t;
typedef struct http_auth http_auth_t;
typedef struct http_feed http_feed_t;
typedef struct http_gate http_gate_t;

typedef struct http_ctx {
    const config_t *cfg;
    store_t *store;
    http_router_t *router;
    http_auth_t *auth; /* NULL when no credential (secret, key, JWT) is configured */
    http_gate_t *gate; /* CORS, authentication and rate limits (gate.h) */
    http_feed_t *feed;
    const engine_t *engine; /* the served app's engine; NULL without --app */
    size_t max_body_bytes;
    atomic_bool shutting_down; /* set on SIGTERM: answers carry Connection: close */

    /* Drain: the signal thread waits on drain_cond until no request is in
     * flight; completions signal it only while shutting down. */
    pthread_mutex_t drain_lock;
    pthread_cond_t drain_cond;

    /* Requests waiting without a thread (async.c): how many are between
     * their first wait and their answer, and whether new ones are refused
     * (set at shutdown, before MHD_stop_daemon, which must not find a
     * suspended connection). async_cond (with drain_lock) is signalled when
     * async_active drops to 0 once closed. */
    atomic_long async_active;
    atomic_bool async_closed;
    pthread_cond_t async_cond;
} http_ctx_t;

#endif
