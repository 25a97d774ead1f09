/*
 * server.c - `chronicle serve`: the libmicrohttpd daemon and its lifecycle.
 *
 * Start: block SIGTERM/SIGINT in every thread, open the store, build the
 * router, auth and live feed, start MHD (epoll, a pool of worker threads),
 * log "listening" with the real port. Requests: MHD calls on_uri (creates
 * the request context), then on_access for the headers, each body chunk and
 * the end; on_completed logs the request, counts it and frees its arena.
 * Stop: the main thread sigwait()s, then quiesces (no new connections),
 * ends live-feed streams, waits up to shutdown_grace for in-flight requests,
 * stops MHD and closes the store (which drains queued writes).
 * Not here: what any route does (handlers_*.c), routing (router.c).
 */
#include "http/server.h"
#include "http/app.h"
#include "http/event_json.h"

#include <assert.h>
#include <errno.h>
#include <netdb.h>
#include <signal.h>
#include <stdarg.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "engine/projector.h"
#include "engine/schedule.h"
#include "http/async.h"
#include "http/auth.h"
#include "http/context.h"
#include "http/feed.h"
#include "http/gate.h"
#include "http/handlers_auth.h"
#include "http/handlers.h"
#include "http/openapi.h"
#include "http/params.h"
#include "http/problem.h"
#include "http/request.h"
#include "http/response.h"
#include "http/router.h"
#include "util/log.h"
#include "util/metrics.h"
#include "worker/worker.h"

#define HTTP_CONN_MEMORY (32 * 1024) /* per connection: headers + I/O buffers */
#define HTTP_MAX_ROUTES 256
#define HTTP_BACKLOG 1024
#define HTTP_DISCARD_MAX (64u << 20) /* body bytes read and dropped before closing */
#define SSE_HEARTBEAT_DEFAULT_MS 15000

static atomic_bool daemon_running; /* MHD messages: warn while starting, debug after */

/* ---- request lifecycle ------------------------------------------------ */

/* MHD_OPTION_URI_LOG_CALLBACK: the first thing MHD tells us about a
 * request, with the raw target (path and query, not yet decoded). The
 * returned context is MHD's *con_cls from here on. */
static void *on_uri(void *cls, const char *uri, struct MHD_Connection *conn)
{
    http_req_t *req = http_req_new(cls, uri);
    if (req) {
        req->conn = conn;
        req->counted = true;
        metrics_in_flight_add(1);
    }
    return req;
}

/* MHD_OPTION_UNESCAPE_CALLBACK: keep the path raw. The router decodes each
 * segment on its own, so "%2F" stays inside a parameter and "%00" is seen
 * (and refused) rather than cutting the string short. */
static size_t no_unescape(void *cls, struct MHD_Connection *conn, char *uri)
{
    (void)cls;
    (void)conn;
    return strlen(uri);
}

/* MHD_OPTION_EXTERNAL_LOGGER: libmicrohttpd's messages as log lines.
 * Once serving, what clients cause (malformed requests, hang-ups) is debug
 * noise; anything else (accept or thread failures, limits) is a warning. */
static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    static const char *const client_noise[] = {
        "Error processing request", "Connection was closed", "Failed to parse",
        "Too large value",          "Socket disconnected",   "Failed to receive",
        "Failed to send",           "Connection reset",      NULL,
    };
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
        msg[--n] = '\0';
    log_level_t level = LOG_WARN;
    if (atomic_load(&daemon_running))
        for (size_t i = 0; client_noise[i]; i++)
            if (strncmp(msg, client_noise[i], strlen(client_noise[i])) == 0) level = LOG_DEBUG;
    log_at(level, "libmicrohttpd", LOG_S("detail", msg));
}

/* True when the Content-Type header names application/json (parameters
 * such as charset allowed). */
static bool is_json_type(const char *ct)
{
    if (!ct) return false;
    while (*ct == ' ' || *ct == '\t')
        ct++;
    static const char want[] = "application/json";
    size_t n = sizeof want - 1;
    if (strncasecmp(ct, want, n) != 0) return false;
    const char *rest = ct + n;
    while (*rest == ' ' || *rest == '\t')
        rest++;
    return *rest == '\0' || *rest == ';';
}

/* Everything decided from the request line and headers: request id,
 * route, auth, media type and declared size. May answer the request. */
static void begin(http_req_t *req, const char *method)
{
    http_ctx_t *ctx = req->ctx;
    req->method = http_req_strndup(req, method, strlen(method));
    if (!req->method) req->method = "OTHER";
    http_req_set_request_id(req);

    char *scratch = http_req_alloc(req, req->path_len + 1);
    if (!scratch) {
        http_problem(req, HTTP_P_SERVICE_UNAVAILABLE, NULL, "out of memory");
        return;
    }
    http_match_t *m = &req->match;
    http_router_match(ctx->router, req->method, req->path, req->path_len, scratch, m);

    if (!http_gate_pass(req)) return; /* CORS, credentials, rate limits */
    if (m->kind == HTTP_MATCH_OK && !config_serves_api(ctx->cfg) &&
        !(m->route->flags & HTTP_ROUTE_OPS)) {
        http_problem(req, HTTP_P_NOT_FOUND, NULL,
                     "this instance runs --role worker: it serves /health, /ready, /metrics and "
                     "/internal/health/* only");
        return;
    }
    switch (m->kind) {
    case HTTP_MATCH_OK:
        break;
    case HTTP_MATCH_NOT_FOUND:
        http_problem(req, HTTP_P_NOT_FOUND, NULL, "no route for %s %.*s", req->method,
                     (int)(req->path_len > 300 ? 300 : req->path_len), req->path);
        return;
    case HTTP_MATCH_METHOD:
        http_req_add_header(req, MHD_HTTP_HEADER_ALLOW, m->allow);
        http_problem(req, HTTP_P_METHOD_NOT_ALLOWED, NULL, "%s is not allowed here; allowed: %s",
                     req->method, m->allow);
        return;
    case HTTP_MATCH_BAD_PARAM:
        http_problem_field(req, HTTP_P_BAD_REQUEST, m->bad_param, "path parameter %s %s",
                           m->bad_param, m->bad_reason);
        return;
    }

    if (m->route->flags & HTTP_ROUTE_JSON_BODY) {
        const char *len_h = http_req_header(req, MHD_HTTP_HEADER_CONTENT_LENGTH);
        bool no_body = (!len_h || strcmp(len_h, "0") == 0) &&
                       !http_req_header(req, MHD_HTTP_HEADER_TRANSFER_ENCODING);
        bool optional = m->route->flags & HTTP_ROUTE_BODY_OPTIONAL;
        if (!(optional && no_body) &&
            !is_json_type(http_req_header(req, MHD_HTTP_HEADER_CONTENT_TYPE))) {
            http_problem(req, HTTP_P_UNSUPPORTED_MEDIA_TYPE, NULL,
                         "the body must be sent with Content-Type: application/json");
            return;
        }
        int64_t declared = -1;
        const char *cl = http_req_header(req, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (cl && (http_parse_i64(cl, &declared) != 0 || declared < 0)) declared = INT64_MAX;
        if (declared >= 0 && (uint64_t)declared > ctx->max_body_bytes) {
            http_problem(req, HTTP_P_PAYLOAD_TOO_LARGE, NULL,
                         "the body is %lld bytes; at most %zu are allowed", (long long)declared,
                         ctx->max_body_bytes);
            return;
        }
        if (!http_req_body_begin(req, declared)) {
            http_problem(req, HTTP_P_SERVICE_UNAVAILABLE, NULL, "out of memory");
            return;
        }
    }
}

/* True when the request announces a body (Content-Length > 0 or a
 * Transfer-Encoding). */
static bool has_body(http_req_t *req)
{
    if (http_req_header(req, MHD_HTTP_HEADER_TRANSFER_ENCODING)) return true;
    const char *cl = http_req_header(req, MHD_HTTP_HEADER_CONTENT_LENGTH);
    int64_t n;
    return cl && (http_parse_i64(cl, &n) != 0 || n > 0);
}

/* Runs a handler step: the route's handler (cont NULL) or the continuation
 * of a wait, then each further continuation whose work is already done,
 * until the request is answered or parked (suspended until a wake). */
static void run(http_req_t *req, http_cont_fn cont, void *arg)
{
    if (cont)
        cont(req, arg);
    else
        req->match.route->handler(req);
    while (req->cont) {
        if (http_async_park(req)) return; /* MHD calls on_access after the wake */
        cont = http_async_take(req, &arg);
        cont(req, arg);
    }
    http_async_end(req);
    if (!req->responded) /* a handler bug; never leave the client hanging */
        http_problem(req, HTTP_P_INTERNAL, NULL, "the handler produced no response");
}

/* MHD access handler: called with the headers (*upload_data_size 0), then
 * for each piece of the body, then once more with 0 at the end. */
static enum MHD_Result on_access(void *cls, struct MHD_Connection *conn, const char *url,
                                 const char *method, const char *version, const char *upload_data,
                                 size_t *upload_data_size, void **con_cls)
{
    (void)version;
    http_req_t *req = *con_cls;
    if (!req) { /* the URI callback ran out of memory; try once more */
        req = on_uri(cls, url, conn);
        if (!req) return MHD_NO;
        *con_cls = req;
    }
    if (!req->started) {
        /* Answers decided from the headers are held until the request has
         * been read (MHD closes connections answered earlier), except when
         * the request carries a body we would only discard: then answering
         * at once spares reading it. */
        req->started = true;
        req->conn = conn;
        req->defer = true;
        begin(req, method);
        if (req->responded && has_body(req)) http_respond_flush(req);
        return MHD_YES;
    }
    if (*upload_data_size) {
        /* MHD accepts a response only before or after the body, so a body
         * that turns out too large (chunked, no Content-Length) is read and
         * dropped, the answer held until the end; past HTTP_DISCARD_MAX
         * more bytes the connection is closed instead. */
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        if (req->responded || !(req->match.route->flags & HTTP_ROUTE_JSON_BODY)) {
            req->discarded += n;
            return req->discarded > HTTP_DISCARD_MAX ? MHD_NO : MHD_YES;
        }
        if (!http_req_body_append(req, upload_data, n)) {
            req->discarded = n;
            if (req->too_big)
                http_problem(req, HTTP_P_PAYLOAD_TOO_LARGE, NULL,
                             "the body is larger than %zu bytes", req->ctx->max_body_bytes);
            else
                http_problem(req, HTTP_P_SERVICE_UNAVAILABLE, NULL, "out of memory");
        }
        return MHD_YES;
    }
    req->defer = false;
    if (req->pending) {
        http_respond_flush(req);
    } else if (req->cont) { /* resumed: the wait's work is done */
        void *arg;
        http_cont_fn cont = http_async_take(req, &arg);
        run(req, cont, arg);
    } else if (!req->responded) {
        run(req, NULL, NULL);
    }
    return MHD_YES;
}

static const char *termination_name(enum MHD_RequestTerminationCode toe)
{
    switch (toe) {
    case MHD_REQUEST_TERMINATED_COMPLETED_OK:
        return "ok";
    case MHD_REQUEST_TERMINATED_WITH_ERROR:
        return "error";
    case MHD_REQUEST_TERMINATED_TIMEOUT_REACHED:
        return "timeout";
    case MHD_REQUEST_TERMINATED_DAEMON_SHUTDOWN:
        return "shutdown";
    case MHD_REQUEST_TERMINATED_READ_ERROR:
        return "read_error";
    case MHD_REQUEST_TERMINATED_CLIENT_ABORT:
        return "client_abort";
    }
    return "unknown";
}

/* MHD_OPTION_NOTIFY_COMPLETED: the request is over (answered, aborted or
 * timed out). Logs and counts it, then frees its context. */
static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)conn;
    http_ctx_t *ctx = cls;
    http_req_t *req = *con_cls;
    if (!req) return;
    *con_cls = NULL;
    /* MHD completes no suspended connection, and a resumed one only after
     * the wake (a client that left is noticed on resume, before the access
     * handler runs again): a wait may have ended without its continuation. */
    assert(req->cont == NULL || atomic_load(&req->wait_state) == HTTP_WAIT_WOKEN);
    double secs = (double)(http_now_ns() - req->start_ns) / 1e9;
    if (req->pending) { /* held for a final call that never came */
        MHD_destroy_response(req->pending);
        req->pending = NULL;
        req->responded = false;
    }
    if (!req->started) {
        /* MHD itself refused the request (malformed, headers too large) or
         * the client left before sending all headers: MHD answered, if at
         * all, and did not say with what, so it is not counted. */
        log_at(LOG_DEBUG, "request not handled", LOG_S("target", req->target ? req->target : ""),
               LOG_F("duration_ms", secs * 1e3), LOG_S("termination", termination_name(toe)));
        goto release;
    }
    /* 499 (nginx's "client closed request"): no answer was queued. */
    unsigned status = req->responded ? req->status : 499;
    const char *method = req->method ? req->method : "-";
    metrics_observe_request(req->match.route_id, method, status, secs);
    if (log_enabled(LOG_INFO)) {
        const char *route = req->match.pattern ? req->match.pattern : "unmatched";
        if (toe == MHD_REQUEST_TERMINATED_COMPLETED_OK)
            log_at(LOG_INFO, "request", LOG_S("request_id", req->request_id),
                   LOG_S("method", method), LOG_S("route", route),
                   LOG_S("target", req->target ? req->target : ""), LOG_I("status", status),
                   LOG_F("duration_ms", secs * 1e3));
        else
            log_at(LOG_INFO, "request", LOG_S("request_id", req->request_id),
                   LOG_S("method", method), LOG_S("route", route),
                   LOG_S("target", req->target ? req->target : ""), LOG_I("status", status),
                   LOG_F("duration_ms", secs * 1e3), LOG_S("termination", termination_name(toe)));
    }
release:
    /* The request's cleanups may hand an entity's turn to a waiting request;
     * only after them may shutdown see this one as no longer waiting. */
    http_req_run_cleanups(req);
    http_async_end(req);
    if (req->counted) {
        metrics_in_flight_add(-1);
        if (atomic_load(&ctx->shutting_down)) {
            pthread_mutex_lock(&ctx->drain_lock);
            pthread_cond_broadcast(&ctx->drain_cond);
            pthread_mutex_unlock(&ctx->drain_lock);
        }
    }
    http_req_release(req);
}

/* ---- start and stop --------------------------------------------------- */

/* The listen address as a socket address. host may be a name, an IPv4
 * address or an IPv6 address with or without brackets. */
static int resolve(const char *host, int port, struct sockaddr_storage *ss, bool *v6,
                   chr_err_t *err)
{
    char name[256];
    size_t n = strlen(host);
    if (n >= 2 && host[0] == '[' && host[n - 1] == ']') {
        snprintf(name, sizeof name, "%.*s", (int)(n - 2), host + 1);
    } else {
        snprintf(name, sizeof name, "%s", host);
    }
    char portstr[16];
    snprintf(portstr, sizeof portstr, "%d", port);
    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    int rc = getaddrinfo(name, portstr, &hints, &res);
    if (rc != 0 || !res)
        return chr_fail(err, CHR_EINVAL, "--listen", "cannot resolve listen host \"%s\": %s", host,
                        gai_strerror(rc));
    memset(ss, 0, sizeof *ss);
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    *v6 = res->ai_family == AF_INET6;
    freeaddrinfo(res);
    return CHR_OK;
}

static unsigned pool_size(const config_t *cfg)
{
    if (cfg->threads > 0) return (unsigned)cfg->threads;
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    if (cores < 1) cores = 1;
    /* Writes no longer bound this: they wait for their commit suspended,
     * not in a worker (async.h), so any pool lets all of them share one
     * commit. Reads still run in the worker (SQLite reader connections),
     * and on a machine shared with its clients a pool of a few threads gets
     * a smaller share of the CPU: in wrk runs on 2 cores, pools of 2-8
     * were slower for reads and writes, 16 to 128 alike (docs/http.md,
     * "Threads"). 32 per core stays; idle workers cost address space only. */
    long n = 32 * cores;
    return (unsigned)(n > 256 ? 256 : n);
}

static void raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

static int heartbeat_ms(chr_err_t *err)
{
    const char *v = getenv("SSE_HEARTBEAT_MS");
    if (!v || !*v) return SSE_HEARTBEAT_DEFAULT_MS;
    int64_t ms;
    if (http_parse_i64(v, &ms) != 0 || ms < 10 || ms > 3600000)
        return chr_fail(err, CHR_EINVAL, "SSE_HEARTBEAT_MS",
                        "SSE_HEARTBEAT_MS must be an integer from 10 to 3600000, not \"%s\"", v);
    return (int)ms;
}

/* Waits until no request is in flight or grace_s seconds pass. */
static void drain(http_ctx_t *ctx, int grace_s)
{
    struct timespec deadline;
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    deadline.tv_sec += grace_s;
    pthread_mutex_lock(&ctx->drain_lock);
    while (metrics_in_flight() > 0) {
        if (pthread_cond_timedwait(&ctx->drain_cond, &ctx->drain_lock, &deadline) == ETIMEDOUT)
            break;
    }
    pthread_mutex_unlock(&ctx->drain_lock);
    int64_t left = metrics_in_flight();
    if (left > 0) /* those whose writes are queued are still answered (http_async_close) */
        log_at(LOG_WARN, "shutdown grace expired; closing in-flight requests",
               LOG_I("in_flight", left), LOG_I("grace_s", grace_s));
}

static int fail_start(const char *what, const chr_err_t *err)
{
    log_at(LOG_ERROR, what, LOG_S("error", err->msg), LOG_S("field", err->field));
    return 1;
}

int http_serve_main(const config_t *cfg)
{
    log_level_t level;
    if (log_parse_level(cfg->log_level, &level) == 0) log_set_level(level);

    /* Signals go to the main thread's sigwait only: block them before any
     * thread (store writer, MHD workers, heartbeat) exists to inherit. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    chr_err_t err;
    chr_err_clear(&err);
    if (sodium_init() < 0) {
        chr_fail(&err, CHR_ESTORE, "", "libsodium failed to initialise");
        return fail_start("cannot start", &err);
    }
    int hb = heartbeat_ms(&err);
    if (hb < 0) return fail_start("invalid configuration", &err);

    struct sockaddr_storage addr;
    bool v6 = false;
    if (resolve(cfg->listen_host, cfg->port, &addr, &v6, &err))
        return fail_start("invalid configuration", &err);

    http_ctx_t *ctx = calloc(1, sizeof *ctx);
    if (!ctx) return 1;
    ctx->cfg = cfg;
    ctx->max_body_bytes = cfg->max_body_bytes;
    pthread_mutex_init(&ctx->drain_lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&ctx->drain_cond, &ca);
    pthread_condattr_destroy(&ca);
    pthread_cond_init(&ctx->async_cond, NULL);
    atomic_init(&ctx->async_active, 0);
    atomic_init(&ctx->async_closed, false);

    int exit_code = 1;
    struct MHD_Daemon *d = NULL;
    http_app_t *app = NULL;
    store_t *reads = NULL; /* the read model's database (PROJECTION_DB_URL) */
    http_openapi_t *openapi = NULL; /* served by GET /openapi.json; outlives the daemon */
    schedules_t *schedules = NULL;  /* the worker role's scheduler; freed after the store */
    worker_t *worker = NULL;        /* consumers of the worker role; NULL when none run here */
    if (metrics_init(HTTP_MAX_ROUTES) != 0) {
        chr_fail(&err, CHR_ENOMEM, "", "out of memory");
        fail_start("cannot start", &err);
        goto out;
    }
    ctx->router = http_router_new();
    if (!ctx->router || http_routes_add_core(ctx->router, &err) != CHR_OK) {
        if (!ctx->router) chr_fail(&err, CHR_ENOMEM, "", "out of memory");
        fail_start("cannot build routes", &err);
        goto out;
    }
    store_options_t sopts = config_store_options(cfg);
    if (store_open(cfg->database_url, &sopts, &ctx->store, &err) != CHR_OK) {
        fail_start("cannot open the store", &err);
        goto out;
    }
    if (config_split_projections(cfg) &&
        store_open(cfg->projection_db_url, &sopts, &reads, &err) != CHR_OK) {
        fail_start("cannot open the projection database", &err);
        goto out;
    }
    if (cfg->app_path[0] &&
        http_app_open(cfg->app_path, ctx->store, reads, ctx->router, &app, &err)) {
        fail_start("cannot serve the app definition", &err);
        goto out;
    }
    if (app && reads && projector_start(&app->eng, config_runs_worker(cfg), &err) != CHR_OK) {
        fail_start("cannot start the projector", &err);
        goto out;
    }
    if (app) {
        ctx->engine = &app->eng;
        http_event_json_redact_with(&app->eng);
    }
    if (http_auth_new(cfg->api_secrets, app ? app->def : NULL, &ctx->auth, &err) != CHR_OK ||
        http_gate_new(&ctx->gate, &err) != CHR_OK ||
        http_auth_routes_add(ctx, ctx->router, &err) != CHR_OK) {
        fail_start("invalid configuration", &err);
        goto out;
    }
    if (worker_start(cfg, ctx->store, app ? app->def : NULL, app ? &app->eng : NULL, &worker,
                     &err)) {
        fail_start("cannot start the consumers", &err);
        goto out;
    }
    if (http_openapi_build(app ? app->def : NULL, app ? app->routes : NULL, ctx->auth != NULL,
                           &openapi, &err) != CHR_OK ||
        http_openapi_add_route(ctx->router, openapi, &err) != CHR_OK) {
        fail_start("cannot build the OpenAPI document", &err);
        goto out;
    }
    if (http_feed_new(ctx->store, hb, &ctx->feed, &err) != CHR_OK) {
        fail_start("cannot start the live feed", &err);
        goto out;
    }
    if (app && config_runs_worker(cfg) &&
        schedules_start(app->def, ctx->store, &schedules, &err) != CHR_OK) {
        fail_start("cannot start the scheduler", &err);
        goto out;
    }

    raise_fd_limit();
    unsigned threads = pool_size(cfg);
    unsigned flags = MHD_USE_EPOLL_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
    if (v6) flags |= MHD_USE_IPv6;
    d = MHD_start_daemon(
        flags, 0, NULL, NULL, on_access, ctx, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL,
        MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr, MHD_OPTION_THREAD_POOL_SIZE, threads,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)cfg->max_connections, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned)cfg->connection_timeout, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
        (size_t)HTTP_CONN_MEMORY, MHD_OPTION_LISTEN_BACKLOG_SIZE, (unsigned)HTTP_BACKLOG,
        MHD_OPTION_URI_LOG_CALLBACK, on_uri, ctx, MHD_OPTION_NOTIFY_COMPLETED, on_completed, ctx,
        MHD_OPTION_UNESCAPE_CALLBACK, no_unescape, NULL, MHD_OPTION_END);
    if (!d) {
        chr_fail(&err, CHR_EINVAL, "--listen",
                 "cannot listen on %s:%d (address in use or not "
                 "available?)",
                 cfg->listen_host, cfg->port);
        fail_start("cannot start the HTTP server", &err);
        goto out;
    }
    atomic_store(&daemon_running, true);
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
    int port = info ? (int)info->port : cfg->port;
    char host[256];
    size_t hl = strlen(cfg->listen_host);
    if (hl >= 2 && cfg->listen_host[0] == '[' && cfg->listen_host[hl - 1] == ']')
        snprintf(host, sizeof host, "%.*s", (int)(hl - 2), cfg->listen_host + 1);
    else
        snprintf(host, sizeof host, "%s", cfg->listen_host);
    log_at(LOG_DEBUG, "http settings", LOG_I("threads", threads),
           LOG_I("max_connections", cfg->max_connections),
           LOG_I("connection_timeout_s", cfg->connection_timeout),
           LOG_I("max_body_bytes", (int64_t)cfg->max_body_bytes), LOG_I("sse_heartbeat_ms", hb),
           LOG_B("auth", ctx->auth != NULL));
    log_at(LOG_ALWAYS, "listening", LOG_S("address", host), LOG_I("port", port));

    int sig = 0;
    while (sigwait(&sigs, &sig) != 0) {
    }
    log_at(LOG_INFO, "shutting down", LOG_S("signal", sig == SIGINT ? "SIGINT" : "SIGTERM"),
           LOG_I("grace_s", cfg->shutdown_grace));
    atomic_store(&ctx->shutting_down, true);
    MHD_socket lsock = MHD_quiesce_daemon(d);
    http_feed_close(ctx->feed);
    drain(ctx, cfg->shutdown_grace);
    /* Writes still waiting for their commit are suspended connections:
     * MHD_stop_daemon must not see one. Refuse new waits (503) and let the
     * store finish those queued; each is answered before we go on. */
    http_async_close(ctx);
    atomic_store(&daemon_running, false);
    MHD_stop_daemon(d);
    d = NULL;
    if (lsock != MHD_INVALID_SOCKET) close(lsock);
    exit_code = 0;

out:
    if (d) MHD_stop_daemon(d);
    if (ctx->feed) http_feed_close(ctx->feed);
    /* background roles end before the stores */
    worker_stop(worker); /* saves checkpoints while the store is open */
    schedules_stop(schedules);
    if (app) projector_stop(&app->eng);
    store_close(ctx->store); /* drains queued writes */
    store_close(reads);
    /* after store_close: the store's commit listener points at it until then */
    schedules_free(schedules);
    http_feed_free(ctx->feed);
    http_auth_free(ctx->auth);
    http_gate_free(ctx->gate);
    http_router_free(ctx->router);
    http_app_close(app);
    http_openapi_free(openapi);
    metrics_shutdown();
    pthread_mutex_destroy(&ctx->drain_lock);
    pthread_cond_destroy(&ctx->drain_cond);
    pthread_cond_destroy(&ctx->async_cond);
    free(ctx);
    if (exit_code == 0) log_at(LOG_ALWAYS, "stopped", LOG_I("exit_code", 0));
    return exit_code;
}
