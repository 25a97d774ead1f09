/*
 * request.h - the per-request context: raw target, matched route, request
 * id, body accumulation under the size limit, response headers to add, and
 * an arena for everything request-scoped.
 *
 * Memory: a request and its arena are one allocation, recycled through a
 * small per-thread cache; everything taken from the arena is freed at once
 * when MHD reports the request complete (http_req_release). Nothing from
 * the arena may outlive the request (live-feed subscribers copy what they
 * keep); what the arena cannot own (parsed JSON, a command in flight) is
 * released by cleanups registered with http_req_on_release. While a
 * request waits for another thread (async.h) that thread may write into
 * its arena; the request cannot complete until the wait ends.
 * Not here: building responses (response.c) or routing (router.c).
 */
#ifndef CHRONICLE_HTTP_REQUEST_H
#define CHRONICLE_HTTP_REQUEST_H

#include <microhttpd.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "auth/principal.h"
#include "http/context.h"
#include "http/router.h"

#define HTTP_REQUEST_ID_MAX 128
#define HTTP_MAX_EXTRA_HEADERS 12

typedef struct http_arena_block {
    struct http_arena_block *next;
    size_t cap;
    char data[];
} http_arena_block_t;

typedef struct http_arena {
    char *cur;                  /* next free byte of the current block */
    size_t left;                /* bytes free there */
    http_arena_block_t *blocks; /* extra heap blocks, freed on release */
} http_arena_t;

typedef struct http_header {
    const char *name;  /* static string */
    const char *value; /* arena copy */
} http_header_t;

/* Something to undo when the request is released (arena-allocated). */
typedef struct http_cleanup {
    struct http_cleanup *next;
    void (*fn)(void *arg);
    void *arg;
} http_cleanup_t;

/* What a request runs once a wait on another thread is over (async.h). */
typedef void (*http_cont_fn)(http_req_t *req, void *arg);

struct http_req {
    http_ctx_t *ctx;
    struct MHD_Connection *conn;
    const char *method; /* MHD's copy, valid until completion */
    char *target;       /* raw request target as received (arena) */
    const char *path;   /* into target: up to '?' */
    size_t path_len;
    const char *query; /* into target: after '?', NULL when none */
    size_t query_len;
    http_match_t match;
    char request_id[HTTP_REQUEST_ID_MAX + 1];
    int64_t start_ns; /* CLOCK_MONOTONIC */

    char *body; /* arena; NUL-terminated */
    size_t body_len, body_cap;
    size_t discarded;             /* body bytes read and dropped */
    bool started;                 /* first access-handler call done */
    bool responded;               /* a response is queued (or held in pending) */
    bool defer;                   /* hold responses in pending until MHD's final call */
    struct MHD_Response *pending; /* a held response, queued by http_respond_flush */
    bool too_big;                 /* the body went over the limit */
    bool counted;                 /* counted in the in-flight gauge */
    unsigned status;

    /* Who is calling (gate.c): kind AUTH_NONE on public routes and when no
     * credential is configured. */
    auth_principal_t principal;

    http_header_t headers[HTTP_MAX_EXTRA_HEADERS];
    size_t n_headers;

    /* Waiting without a thread (async.c): the continuation of the current
     * wait, the wait's state (HTTP_WAIT_*; the only field another thread
     * writes) and whether the request counts in the server's async_active. */
    http_cont_fn cont;
    void *cont_arg;
    atomic_int wait_state;
    bool in_async;

    http_cleanup_t *cleanups; /* run by http_req_release, newest first */
    http_arena_t arena;
};

/* A new request for the raw target uri (copied). Never NULL unless out of
 * memory. Release with http_req_release. */
http_req_t *http_req_new(http_ctx_t *ctx, const char *uri);

/* Runs the request's cleanups, then frees (or recycles) the request and
 * everything in its arena. */
void http_req_release(http_req_t *req);

/* Runs the request's cleanups now (each once; http_req_release runs those
 * left). For the completion callback, which must know them done before it
 * reports the request over. */
void http_req_run_cleanups(http_req_t *req);

/* Registers fn(arg) to run when the request is released, however it ends
 * (answered, aborted, timed out): for what the arena cannot own, such as
 * JSON documents or state that lives across a wait. Cleanups run newest
 * first. Returns false when out of memory (fn is not registered). */
bool http_req_on_release(http_req_t *req, void (*fn)(void *arg), void *arg);

/* n bytes from the request's arena (16-byte aligned), NULL on OOM. Freed
 * with the request. */
void *http_req_alloc(http_req_t *req, size_t n);

/* Copy of the n bytes at s plus a NUL, from the arena; NULL on OOM. */
char *http_req_strndup(http_req_t *req, const char *s, size_t n);

/* Sets req->request_id from the client's X-Request-Id when it is 1-128
 * printable ASCII characters, else a new UUIDv7. */
void http_req_set_request_id(http_req_t *req);

/* A request header's value (borrowed from MHD, valid until completion), or
 * NULL. Names are case-insensitive. */
const char *http_req_header(http_req_t *req, const char *name);

/* Looks up query parameter name (first occurrence wins). Returns 1 and
 * sets *value to the decoded value (arena, NUL-terminated; *len may be
 * NULL) when present, 0 when absent, -1 when its percent-encoding is
 * invalid or memory ran out. */
int http_req_query(http_req_t *req, const char *name, const char **value, size_t *len);

/* Prepares to receive a body of content_length bytes (-1 = unknown).
 * Returns false when out of memory. */
bool http_req_body_begin(http_req_t *req, int64_t content_length);

/* Appends n body bytes. Returns false (and sets too_big) once the total
 * would exceed ctx->max_body_bytes, or when out of memory. */
bool http_req_body_append(http_req_t *req, const char *data, size_t n);

/* Adds a response header (name must be a static string; value is copied
 * into the arena). Ignored beyond HTTP_MAX_EXTRA_HEADERS. */
void http_req_add_header(http_req_t *req, const char *name, const char *value);

/* Monotonic nanoseconds, for durations. */
int64_t http_now_ns(void);

#endif
