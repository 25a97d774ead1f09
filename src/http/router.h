/*
 * router.h - method + path patterns to handlers, as data.
 *
 * A route is {method, pattern, handler, flags}; a pattern is a path of
 * literal segments and whole-segment parameters: "/v1/streams/{stream}".
 * The core routes are one table (routes.c); later work (the app
 * definition) adds its own with http_router_add before serving starts.
 * Matching percent-decodes each parameter segment on its own (so %2F stays
 * inside the parameter) and checks it (see http_param_problem). A path that
 * matches a pattern but not its method yields the Allow list for a 405.
 * The router is read-only once serving, so matching needs no lock.
 * Not here: auth, bodies, responses.
 */
#ifndef CHRONICLE_HTTP_ROUTER_H
#define CHRONICLE_HTTP_ROUTER_H

#include <stdbool.h>
#include <stddef.h>

#include "core/error.h"

#define HTTP_MAX_SEGMENTS 16 /* per pattern and per matched path */
#define HTTP_MAX_PARAMS 8

typedef struct http_req http_req_t;

/* A handler answers the request exactly once (http_respond_* or
 * http_problem*). It runs on an HTTP worker thread and may block (store
 * calls do). */
typedef void (*http_handler_fn)(http_req_t *req);

enum http_route_flags {
    HTTP_ROUTE_PUBLIC = 1u << 0,    /* no auth even when API_SECRET is set */
    HTTP_ROUTE_JSON_BODY = 1u << 1, /* takes an application/json body (else 415) */
    HTTP_ROUTE_BODY_OPTIONAL = 1u << 2, /* with JSON_BODY: no body at all is fine too */
    HTTP_ROUTE_RATE_AUTH = 1u << 3, /* rate-limited in the "auth" class (logins) */
    HTTP_ROUTE_RATED = 1u << 4,     /* with PUBLIC: rate-limited all the same (an app's public
                                       operations, unlike probes) */
    HTTP_ROUTE_OPS = 1u << 5,       /* operations: served by --role worker too */
};

typedef struct http_route {
    const char *method;  /* "GET", "POST", ...; GET routes also answer HEAD */
    const char *pattern; /* "/v1/streams/{stream}" */
    http_handler_fn handler;
    unsigned flags;
    const void *data; /* the handler's own (e.g. which entity); borrowed, outlives the router */
} http_route_t;

typedef struct http_param {
    const char *name;  /* borrowed from the router */
    const char *value; /* decoded, NUL-terminated, in the caller's scratch */
    size_t len;
} http_param_t;

typedef enum http_match_kind {
    HTTP_MATCH_OK,        /* route and params set */
    HTTP_MATCH_NOT_FOUND, /* no pattern fits the path */
    HTTP_MATCH_METHOD,    /* a pattern fits, not with this method: allow set */
    HTTP_MATCH_BAD_PARAM, /* route fits but a parameter is malformed: bad_* set */
} http_match_kind_t;

typedef struct http_match {
    http_match_kind_t kind;
    const http_route_t *route; /* OK and BAD_PARAM; for METHOD a route of the path
                                  (its flags tell whether the path is public) */
    int route_id;              /* metrics route id; METRICS_ROUTE_UNMATCHED for NOT_FOUND */
    const char *pattern;       /* the matched pattern (not for NOT_FOUND) */
    http_param_t params[HTTP_MAX_PARAMS];
    size_t n_params;
    char allow[96];         /* METHOD: "GET, POST" */
    const char *bad_param;  /* BAD_PARAM: parameter name */
    const char *bad_reason; /* BAD_PARAM: static phrase */
} http_match_t;

typedef struct http_router http_router_t;

/* A new empty router (caller frees with http_router_free), NULL on OOM. */
http_router_t *http_router_new(void);
void http_router_free(http_router_t *r);

/* Adds a route (the struct is copied; its strings must outlive the
 * router). Checks the pattern: starts with '/', no empty segments,
 * parameters are whole segments "{name}" with name of [A-Za-z0-9_], at most
 * HTTP_MAX_SEGMENTS segments and HTTP_MAX_PARAMS parameters, and the same
 * method + pattern is not already routed. Also registers the pattern with
 * metrics. Returns CHR_OK, CHR_EINVAL (err names the pattern) or
 * CHR_ENOMEM. */
int http_router_add(http_router_t *r, const http_route_t *route, chr_err_t *err);

/* Matches method and the raw (still percent-encoded) path of path_len
 * bytes. Decoded parameters are written into scratch, which must have room
 * for path_len + 1 bytes. Among routes that fit, one with a literal segment
 * earlier wins over one with a parameter there. */
void http_router_match(const http_router_t *r, const char *method, const char *path,
                       size_t path_len, char *scratch, http_match_t *m);

/* The value of a matched parameter by name, or NULL. */
const char *http_match_param(const http_match_t *m, const char *name);

#endif
