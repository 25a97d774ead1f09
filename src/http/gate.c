/* gate.c - CORS, authentication and rate limits before any handler; see gate.h. */
#include "http/gate.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "http/auth.h"
#include "http/problem.h"
#include "http/response.h"
#include "util/log.h"
#include "util/metrics.h"
#include "util/ratelimit.h"

#define CORS_MAX_ORIGINS 32
#define RATE_BUCKETS 65536
#define AUTH_DEFAULT "5/20"

static const char cors_allow_headers[] =
    "Authorization, Content-Type, If-Match, If-None-Match, X-Request-Id, Last-Event-ID";
static const char cors_expose_headers[] =
    "Location, ETag, Link, Retry-After, X-Request-Id, Idempotent-Replay, WWW-Authenticate";

struct http_gate {
    bool cors;
    bool cors_any;
    char *origins[CORS_MAX_ORIGINS];
    size_t n_origins;
    char max_age[16];
    ratelimit_rule_t rules[METRICS_RATE_CLASSES];
    ratelimit_t *rl; /* NULL when every class is unlimited */
};

static int parse_origins(http_gate_t *g, const char *v, chr_err_t *err)
{
    g->cors = true;
    const char *p = v;
    while (*p) {
        const char *comma = strchr(p, ',');
        const char *end = comma ? comma : p + strlen(p);
        while (p < end && (*p == ' ' || *p == '\t'))
            p++;
        const char *e = end;
        while (e > p && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '/'))
            e--;
        if (e > p) {
            if (e - p == 1 && *p == '*') {
                g->cors_any = true;
            } else {
                if (g->n_origins == CORS_MAX_ORIGINS || (strncmp(p, "http://", 7) != 0 &&
                                                         strncmp(p, "https://", 8) != 0))
                    return chr_fail(err, CHR_EINVAL, "CORS_ORIGINS",
                                    "CORS_ORIGINS must be \"*\" or at most %d origins such as "
                                    "https://app.example.com, comma-separated",
                                    CORS_MAX_ORIGINS);
                if (!(g->origins[g->n_origins] = strndup(p, (size_t)(e - p))))
                    return chr_fail(err, CHR_ENOMEM, "", "out of memory");
                g->n_origins++;
            }
        }
        p = comma ? comma + 1 : end;
    }
    return CHR_OK;
}

int http_gate_new(http_gate_t **out, chr_err_t *err)
{
    *out = NULL;
    http_gate_t *g = calloc(1, sizeof *g);
    if (!g) return chr_fail(err, CHR_ENOMEM, "", "out of memory");
    int rc = CHR_OK;
    const char *origins = getenv("CORS_ORIGINS");
    if (origins && *origins) rc = parse_origins(g, origins, err);
    snprintf(g->max_age, sizeof g->max_age, "600");
    const char *age = getenv("CORS_MAX_AGE");
    if (!rc && age && *age) {
        char *end;
        errno = 0;
        long long s = strtoll(age, &end, 10);
        if (errno || *end || s < 0 || s > 86400)
            rc = chr_fail(err, CHR_EINVAL, "CORS_MAX_AGE",
                          "CORS_MAX_AGE must be seconds from 0 to 86400, not \"%s\"", age);
        else
            snprintf(g->max_age, sizeof g->max_age, "%lld", s);
    }
    static const char *const vars[METRICS_RATE_CLASSES] = {"RATE_LIMIT_READ", "RATE_LIMIT_WRITE",
                                                           "RATE_LIMIT_AUTH"};
    bool any = false;
    for (size_t c = 0; !rc && c < METRICS_RATE_CLASSES; c++) {
        const char *v = getenv(vars[c]);
        if (!v && c == METRICS_RATE_AUTH) v = AUTH_DEFAULT;
        rc = ratelimit_parse(vars[c], v, &g->rules[c], err);
        any |= g->rules[c].rate > 0;
    }
    if (!rc && any && !(g->rl = ratelimit_new(RATE_BUCKETS)))
        rc = chr_fail(err, CHR_ENOMEM, "", "out of memory");
    if (rc) {
        http_gate_free(g);
        return rc;
    }
    *out = g;
    return CHR_OK;
}

void http_gate_free(http_gate_t *g)
{
    if (!g) return;
    for (size_t i = 0; i < g->n_origins; i++)
        free(g->origins[i]);
    ratelimit_free(g->rl);
    free(g);
}

/* ---- CORS ------------------------------------------------------------------ */

static bool origin_allowed(const http_gate_t *g, const char *origin)
{
    if (!g->cors || !origin || !*origin) return false;
    if (g->cors_any) return true;
    for (size_t i = 0; i < g->n_origins; i++)
        if (strcasecmp(g->origins[i], origin) == 0) return true;
    return false;
}

/* Adds the CORS headers of an allowed origin; answers a preflight.
 * Returns false when the request was answered. */
static bool cors(http_req_t *req, const http_gate_t *g)
{
    if (!g->cors) return true;
    const char *origin = http_req_header(req, "Origin");
    bool preflight = strcmp(req->method, "OPTIONS") == 0 && origin &&
                     http_req_header(req, "Access-Control-Request-Method");
    bool allowed = origin_allowed(g, origin);
    http_req_add_header(req, "Vary", "Origin");
    if (allowed) {
        http_req_add_header(req, "Access-Control-Allow-Origin", g->cors_any ? "*" : origin);
        if (!preflight) http_req_add_header(req, "Access-Control-Expose-Headers", cors_expose_headers);
    }
    if (!preflight || req->match.kind == HTTP_MATCH_NOT_FOUND) return true;
    if (!allowed) {
        http_problem(req, HTTP_P_FORBIDDEN, NULL, "origin %.200s is not allowed (CORS_ORIGINS)",
                     origin);
        return false;
    }
    const char *methods = req->match.kind == HTTP_MATCH_METHOD ? req->match.allow
                                                                : req->match.route->method;
    http_req_add_header(req, "Access-Control-Allow-Methods", methods);
    http_req_add_header(req, "Access-Control-Allow-Headers", cors_allow_headers);
    http_req_add_header(req, "Access-Control-Max-Age", g->max_age);
    http_respond(req, 204, NULL, NULL, 0);
    return false;
}

/* ---- rate limits ----------------------------------------------------------- */

/* The client's IP address as text into out. */
static void client_address(http_req_t *req, char *out, size_t size)
{
    snprintf(out, size, "unknown");
    const union MHD_ConnectionInfo *ci =
        req->conn ? MHD_get_connection_info(req->conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS) : NULL;
    if (!ci || !ci->client_addr) return;
    const struct sockaddr *sa = ci->client_addr;
    if (sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, out,
                  (socklen_t)size);
    else if (sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, out,
                  (socklen_t)size);
}

static metrics_rate_class_t rate_class(const http_req_t *req)
{
    const http_route_t *r = req->match.route;
    if (r && (r->flags & HTTP_ROUTE_RATE_AUTH)) return METRICS_RATE_AUTH;
    if (strcmp(req->method, "GET") == 0 || strcmp(req->method, "HEAD") == 0)
        return METRICS_RATE_READ;
    return METRICS_RATE_WRITE;
}

/* Takes a token for the request; answers 429 and returns false when its
 * bucket is empty. */
static bool rate_limit(http_req_t *req, const http_gate_t *g)
{
    const http_route_t *r = req->match.route;
    if (!g->rl) return true;
    if (r && (r->flags & HTTP_ROUTE_PUBLIC) && !(r->flags & (HTTP_ROUTE_RATE_AUTH | HTTP_ROUTE_RATED)))
        return true;
    metrics_rate_class_t cls = rate_class(req);
    if (g->rules[cls].rate <= 0) return true;
    char key[AUTH_SUB_MAX + 16];
    const auth_principal_t *p = &req->principal;
    if (cls != METRICS_RATE_AUTH && p->kind == AUTH_API_KEY) {
        snprintf(key, sizeof key, "k:%s", p->key_name);
    } else if (cls != METRICS_RATE_AUTH && (p->kind == AUTH_JWT || p->kind == AUTH_LOGIN)) {
        snprintf(key, sizeof key, "s:%s", p->sub);
    } else if (cls != METRICS_RATE_AUTH && p->kind == AUTH_API_SECRET) {
        snprintf(key, sizeof key, "api_secret");
    } else {
        char addr[INET6_ADDRSTRLEN + 1];
        client_address(req, addr, sizeof addr);
        snprintf(key, sizeof key, "a:%s", addr);
    }
    int64_t retry = 0;
    if (ratelimit_take(g->rl, (int)cls, key, strlen(key), &g->rules[cls], http_now_ns(), &retry))
        return true;
    metrics_rate_limited(cls);
    char secs[24];
    snprintf(secs, sizeof secs, "%lld", (long long)retry);
    http_req_add_header(req, MHD_HTTP_HEADER_RETRY_AFTER, secs);
    http_problem(req, HTTP_P_RATE_LIMITED, NULL,
                 "too many %s requests from this client; retry in %lld s",
                 metrics_rate_class_name(cls), (long long)retry);
    return false;
}

/* ---- authentication -------------------------------------------------------- */

void http_unauthorized(http_req_t *req, const char *detail)
{
    metrics_auth_failure();
    http_req_add_header(req, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
    http_problem(req, HTTP_P_UNAUTHORIZED, NULL, "%s", detail);
}

/* Sets req->principal; answers 401 and returns false when the route needs
 * a credential the request does not carry. */
static bool authenticate(http_req_t *req)
{
    http_ctx_t *ctx = req->ctx;
    const http_route_t *r = req->match.route;
    if (!ctx->auth || (r && (r->flags & HTTP_ROUTE_PUBLIC))) return true;
    const char *why;
    http_auth_rc_t rc = http_auth_check(ctx->auth, http_req_header(req, MHD_HTTP_HEADER_AUTHORIZATION),
                                        (int64_t)time(NULL), &req->principal, &why);
    if (rc != HTTP_AUTH_OK) {
        log_at(LOG_DEBUG, "authentication failed", LOG_S("request_id", req->request_id),
               LOG_S("reason", why));
        http_unauthorized(req, "this route needs an Authorization: Bearer <secret> header with a valid "
                          "API secret, API key or token");
        return false;
    }
    if (req->principal.kind == AUTH_LOGIN && ctx->engine &&
        ctx->engine->def->auth.users_entity >= 0) {
        /* a token from /v1/auth/login is worth no more than its user */
        bool live = false;
        chr_err_t err;
        chr_err_clear(&err);
        if (engine_exists((engine_t *)ctx->engine, ctx->engine->def->auth.users_entity,
                          req->principal.sub, &live, &err) != CHR_OK) {
            http_problem_err(req, &err, false, NULL);
            return false;
        }
        if (!live) {
            memset(&req->principal, 0, sizeof req->principal);
            http_unauthorized(req, "the token's user no longer exists");
            return false;
        }
    }
    return true;
}

bool http_gate_pass(http_req_t *req)
{
    const http_gate_t *g = req->ctx->gate;
    if (g && !cors(req, g)) return false;
    if (!authenticate(req)) return false;
    return !g || rate_limit(req, g);
}
