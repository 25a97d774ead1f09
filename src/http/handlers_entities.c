/*
 * handlers_entities.c - the routes an app definition adds: the generated
 * /v1/{entity} API (list, create, get with time travel, update, upsert,
 * delete, history, custom commands) and the app's own routes, which map a
 * method and path to the same actions with fixed options. All of them go
 * through engine/entity.h; nothing here touches the store directly. Writes
 * do not hold their worker thread while they wait for their entity's turn
 * or their group commit: the request is suspended (async.h).
 */
#include "http/handlers_entities.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/timefmt.h"
#include "engine/projector.h"
#include "http/async.h"
#include "http/buf.h"
#include "http/params.h"
#include "http/problem.h"
#include "http/response.h"
#include "http/scope.h"
#include "http/uri.h"

#define MAX_QUERY_PARAMS 64

/* ---- shared helpers ----------------------------------------------------- */

static const http_entity_route_t *route_of(http_req_t *req)
{
    return req->match.route->data;
}

static const char *key_of(http_req_t *req, const http_entity_route_t *er)
{
    return er->key_param ? http_match_param(&req->match, er->key_param) : NULL;
}

/* With split databases, before a read of the read model: how stale it may
 * be (docs/http-api.md, "Staleness headers"). Called before the read, so
 * the position is one the read model had reached when the read began. */
static void staleness_headers(http_req_t *req, const http_entity_route_t *er)
{
    int64_t pos, lag;
    if (!er->eng->projector || !projector_staleness(er->eng->projector, &pos, &lag)) return;
    char v[32];
    snprintf(v, sizeof v, "%lld", (long long)pos);
    http_req_add_header(req, "Chronicle-Projection-Position", v);
    snprintf(v, sizeof v, "%lld", (long long)lag);
    http_req_add_header(req, "Chronicle-Projection-Lag", v);
}

/* If-Match: "N" (or N, or W/"N"); -1 when absent. Returns false after
 * answering 400 when it is not a version. */
static bool parse_if_match(http_req_t *req, int64_t *out)
{
    *out = -1;
    const char *h = http_req_header(req, "If-Match");
    if (!h) return true;
    char buf[32];
    const char *p = h;
    if (strncmp(p, "W/", 2) == 0) p += 2;
    size_t len = strlen(p);
    if (len >= 2 && p[0] == '"' && p[len - 1] == '"') {
        p++;
        len -= 2;
    }
    int64_t v;
    if (len == 0 || len >= sizeof buf) goto bad;
    memcpy(buf, p, len);
    buf[len] = '\0';
    if (http_parse_i64(buf, &v) != 0 || v < 0) goto bad;
    *out = v;
    return true;
bad:
    http_problem(req, HTTP_P_BAD_REQUEST, NULL,
                 "If-Match must be an entity tag as sent in ETag, such as \"3\"");
    return false;
}

static void set_etag(http_req_t *req, int64_t version)
{
    char etag[32];
    snprintf(etag, sizeof etag, "\"%lld\"", (long long)version);
    http_req_add_header(req, "ETag", etag);
}

/* Answers a failed command from its result. */
static void command_problem(http_req_t *req, const engine_result_t *r)
{
    const decision_t *d = &r->decision;
    if (d->code != CHR_OK) {
        if (d->code == CHR_EINVAL) {
            json_t *errors = json_array();
            for (size_t i = 0; i < d->n_errors; i++)
                json_array_append_new(errors, json_pack("{s:s, s:s}", "field", d->errors[i].field,
                                                        "message", d->errors[i].message));
            http_problem(req, HTTP_P_VALIDATION, json_pack("{s:o}", "errors", errors), "%s",
                         d->detail);
        } else if (d->code == CHR_ECONFLICT) {
            http_problem(req, HTTP_P_CONFLICT, NULL, "%s", d->detail);
        } else if (d->code == CHR_ENOTFOUND) {
            http_problem(req, HTTP_P_NOT_FOUND, NULL, "%s", d->detail);
        } else {
            http_problem(req, HTTP_P_SERVICE_UNAVAILABLE, NULL, "%s", d->detail);
        }
        return;
    }
    http_problem_err(req, &r->err, false, NULL);
}

/* ---- writes ------------------------------------------------------------- */

/* A command across its waits (its entity's turn, its group commit). Lives
 * in the request's arena; command_free releases what it owns when the
 * request is released, however it ends. */
typedef struct command_job {
    http_req_t *req;
    const http_entity_route_t *er;
    cmd_kind_t kind;
    json_t *body;      /* the parsed body; the command borrows it */
    engine_cmd_t *cmd; /* NULL once freed or when never started */
    engine_result_t r; /* the outcome; the command writes it */
} command_job_t;

static void command_free(void *arg)
{
    command_job_t *job = arg;
    engine_command_free(job->cmd);
    job->cmd = NULL;
    engine_result_free(&job->r);
    json_decref(job->body);
    job->body = NULL;
}

/* The answer from a finished command. */
static void command_answer(http_req_t *req, command_job_t *job)
{
    const http_entity_route_t *er = job->er;
    const entity_def_t *e = &er->eng->def->entities[er->entity];
    engine_result_t *r = &job->r;
    if (r->code != CHR_OK) {
        command_problem(req, r);
        return;
    }
    set_etag(req, r->version);
    unsigned status = 200;
    /* A PUT that created the entity is a 201 on /v1 (RFC 9110 9.3.4); an
     * app route keeps the 200 of the service it stands in for. */
    bool put_created = job->kind == CMD_UPSERT && r->created && !er->app;
    if (job->kind == CMD_CREATE || put_created) {
        status = 201;
        const json_t *k = json_object_get(r->body, e->key);
        http_buf_t loc = HTTP_BUF_INIT;
        http_buf_printf(&loc, "/v1/%s/", e->name);
        http_buf_pct_encode(&loc, json_is_string(k) ? json_string_value(k) : "");
        if (!loc.oom && loc.data) http_req_add_header(req, "Location", loc.data);
        http_buf_free(&loc);
    }
    json_t *out = engine_keep_fields(r->body, er->app ? er->app->fields : NULL,
                                     er->app ? er->app->n_fields : 0);
    r->body = NULL;
    http_respond_json(req, status, out);
}

/* The engine's wake: from the store's writer thread (commit done) or the
 * thread that ended the entity's previous command (our turn). */
static void command_wake(void *user)
{
    command_job_t *job = user;
    http_async_wake(job->req); /* the last touch of job */
}

/* After a wake: the command's next step, then the answer or another wait. */
static void command_resume(http_req_t *req, void *arg)
{
    command_job_t *job = arg;
    if (!http_async_begin(req, command_resume, job)) { /* cannot happen mid-command */
        http_problem(req, HTTP_P_SERVICE_UNAVAILABLE, NULL, "the server is shutting down; retry");
        return;
    }
    if (engine_command_resume(job->cmd) == ENGINE_PENDING) return;
    http_async_cancel(req);
    command_answer(req, job);
}

static void run_command(http_req_t *req, cmd_kind_t kind, bool body_required)
{
    const http_entity_route_t *er = route_of(req);
    json_t *body;
    int64_t if_match;
    access_scope_t scope;
    if (!http_req_scope(req, &scope)) return;
    if (!parse_if_match(req, &if_match)) return;
    if (!http_body_object(req, &body, body_required)) return;
    command_job_t *job = http_req_alloc(req, sizeof *job);
    if (!job || !http_req_on_release(req, command_free, job)) {
        json_decref(body);
        http_problem(req, HTTP_P_SERVICE_UNAVAILABLE, NULL, "out of memory");
        return;
    }
    *job = (command_job_t){.req = req, .er = er, .kind = kind, .body = body};
    /* The command waits for its entity's turn and its commit with the
     * connection suspended, not in this thread (async.h). */
    if (!http_async_begin(req, command_resume, job)) {
        http_problem(req, HTTP_P_SERVICE_UNAVAILABLE, NULL, "the server is shutting down; retry");
        return;
    }
    int rc = engine_command_start(er->eng, &scope, er->entity, kind, er->command, key_of(req, er),
                                  body, if_match, &job->r, command_wake, job, &job->cmd);
    if (rc == ENGINE_PENDING) return;
    http_async_cancel(req);
    command_answer(req, job);
}

static void handle_create(http_req_t *req)
{
    run_command(req, CMD_CREATE, true);
}

static void handle_update(http_req_t *req)
{
    run_command(req, CMD_UPDATE, true);
}

static void handle_upsert(http_req_t *req)
{
    run_command(req, CMD_UPSERT, true);
}

static void handle_delete(http_req_t *req)
{
    run_command(req, CMD_DELETE, false);
}

static void handle_custom(http_req_t *req)
{
    run_command(req, CMD_CUSTOM, false);
}

/* ---- reads -------------------------------------------------------------- */

static void handle_get(http_req_t *req)
{
    const http_entity_route_t *er = route_of(req);
    const char *key = key_of(req, er);
    const char *at_s = NULL;
    access_scope_t scope;
    if (!http_req_scope(req, &scope)) return;
    int64_t at = -1, version = -1;
    int q = http_req_query(req, "at", &at_s, NULL);
    if (q < 0) {
        http_problem(req, HTTP_P_BAD_REQUEST, NULL, "at: invalid percent-encoding");
        return;
    }
    if (q > 0 && time_parse_rfc3339(at_s, &at) != 0) {
        http_problem_field(req, HTTP_P_BAD_REQUEST, "at",
                           "at: must be an RFC 3339 timestamp such as 2026-01-02T03:04:05Z");
        return;
    }
    if (http_param_int(req, "version", -1, 1, INT64_MAX, &version)) return;
    json_t *out = NULL;
    int64_t v = 0;
    chr_err_t err = {0};
    if (at < 0 && version <= 0) staleness_headers(req, er);
    int rc = (at >= 0 || version > 0)
                 ? engine_get_past(er->eng, &scope, er->entity, key, at, version, &out, &v, &err)
                 : engine_get(er->eng, &scope, er->entity, key, &out, &v, &err);
    if (rc) {
        http_problem_err(req, &err, false, NULL);
        return;
    }
    set_etag(req, v);
    http_respond_json(
        req, 200,
        engine_keep_fields(out, er->app ? er->app->fields : NULL, er->app ? er->app->n_fields : 0));
}

static void handle_history(http_req_t *req)
{
    const http_entity_route_t *er = route_of(req);
    json_t *out = NULL;
    chr_err_t err = {0};
    access_scope_t scope;
    if (!http_req_scope(req, &scope)) return;
    if (engine_history(er->eng, &scope, er->entity, key_of(req, er), &out, &err) != CHR_OK) {
        http_problem_err(req, &err, false, NULL);
        return;
    }
    http_respond_json(req, 200, out);
}

/* Splits the raw query string into decoded names and values (arena). */
static int query_params(http_req_t *req, const char **names, const char **values, size_t *n)
{
    *n = 0;
    const char *q = req->query;
    size_t left = req->query ? req->query_len : 0;
    while (left > 0) {
        const char *amp = memchr(q, '&', left);
        size_t len = amp ? (size_t)(amp - q) : left;
        if (len > 0) {
            if (*n == MAX_QUERY_PARAMS) return -2;
            const char *eq = memchr(q, '=', len);
            size_t nlen = eq ? (size_t)(eq - q) : len;
            size_t vlen = eq ? len - nlen - 1 : 0;
            char *name = http_req_alloc(req, nlen + 1), *value = http_req_alloc(req, vlen + 1);
            if (!name || !value) return -1;
            ssize_t dn = http_pct_decode(q, nlen, name, true);
            ssize_t dv = eq ? http_pct_decode(eq + 1, vlen, value, true) : 0;
            if (dn < 0 || dv < 0 || strlen(name) != (size_t)dn || strlen(value) != (size_t)dv)
                return -1;
            value[dv] = '\0';
            names[*n] = name;
            values[*n] = value;
            (*n)++;
        }
        if (!amp) break;
        left -= len + 1;
        q = amp + 1;
    }
    return 0;
}

/* The URL of the next page: this request's path and query without after=,
 * plus after=<cursor>. */
static void add_next_link(http_req_t *req, const char *cursor)
{
    http_buf_t b = HTTP_BUF_INIT;
    http_buf_putc(&b, '<');
    http_buf_append(&b, req->path, req->path_len);
    http_buf_putc(&b, '?');
    const char *q = req->query;
    size_t left = req->query ? req->query_len : 0;
    while (left > 0) {
        const char *amp = memchr(q, '&', left);
        size_t len = amp ? (size_t)(amp - q) : left;
        if (len > 0 && !(len >= 6 && strncmp(q, "after=", 6) == 0) &&
            !(len == 5 && strncmp(q, "after", 5) == 0)) {
            http_buf_append(&b, q, len);
            http_buf_putc(&b, '&');
        }
        if (!amp) break;
        left -= len + 1;
        q = amp + 1;
    }
    http_buf_puts(&b, "after=");
    http_buf_puts(&b, cursor);
    http_buf_puts(&b, ">; rel=\"next\"");
    if (!b.oom && b.data) http_req_add_header(req, "Link", b.data);
    http_buf_free(&b);
}

static void handle_list(http_req_t *req)
{
    const http_entity_route_t *er = route_of(req);
    const entity_def_t *e = &er->eng->def->entities[er->entity];
    const char *names[MAX_QUERY_PARAMS], *values[MAX_QUERY_PARAMS];
    size_t n = 0;
    access_scope_t scope;
    if (!http_req_scope(req, &scope)) return;
    int rc = query_params(req, names, values, &n);
    if (rc == -2) {
        http_problem(req, HTTP_P_BAD_REQUEST, NULL, "at most %d query parameters are allowed",
                     MAX_QUERY_PARAMS);
        return;
    }
    if (rc) {
        http_problem(req, HTTP_P_BAD_REQUEST, NULL,
                     "the query string has invalid percent-encoding or a NUL byte");
        return;
    }
    list_opts_t opts = {0};
    if (er->app) {
        opts.fixed_sort = er->app->sort;
        opts.default_limit = er->app->limit;
        opts.max_limit = er->app->max_limit;
        opts.fixed_filters = er->app->filters;
    }
    query_t q;
    chr_err_t err = {0};
    if (query_parse(e, &opts, names, values, n, &q, &err) != CHR_OK) {
        http_problem_err(req, &err, true, NULL);
        query_free(&q);
        return;
    }
    char *out = NULL, *next = NULL;
    size_t len = 0;
    staleness_headers(req, er);
    rc = engine_list(er->eng, &scope, er->entity, &q, er->app ? er->app->fields : NULL,
                     er->app ? er->app->n_fields : 0, &out, &len, &next, &err);
    query_free(&q);
    if (rc) {
        http_problem_err(req, &err, false, NULL);
        return;
    }
    if (next) add_next_link(req, next);
    free(next);
    http_respond(req, 200, "application/json", out, len);
}

/* ---- the route tables ---------------------------------------------------- */

static const struct {
    const char *name;
    http_handler_fn handler;
    unsigned flags;
} actions[] = {
    [EA_LIST] = {"list", handle_list, 0},
    [EA_CREATE] = {"create", handle_create, HTTP_ROUTE_JSON_BODY},
    [EA_GET] = {"get", handle_get, 0},
    [EA_UPDATE] = {"update", handle_update, HTTP_ROUTE_JSON_BODY},
    [EA_UPSERT] = {"upsert", handle_upsert, HTTP_ROUTE_JSON_BODY},
    [EA_DELETE] = {"delete", handle_delete, 0}, /* a body, if any, is ignored */
    [EA_HISTORY] = {"history", handle_history, 0},
    [EA_COMMAND] = {"command", handle_custom, HTTP_ROUTE_JSON_BODY | HTTP_ROUTE_BODY_OPTIONAL},
};

struct http_app_routes {
    http_entity_route_t *items;
    size_t len, cap;
};

static http_entity_route_t *push(http_app_routes_t *a)
{
    if (a->len == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 32;
        http_entity_route_t *items = realloc(a->items, cap * sizeof *items);
        if (!items) return NULL;
        a->items = items;
        a->cap = cap;
    }
    http_entity_route_t *r = &a->items[a->len++];
    memset(r, 0, sizeof *r);
    return r;
}

static int add_one(http_app_routes_t *a, engine_t *eng, int entity, ent_action_t action,
                   const command_def_t *cmd, const route_def_t *app, const char *method,
                   char *pattern, const char *key_param)
{
    if (!pattern) return CHR_ENOMEM;
    http_entity_route_t *r = push(a);
    if (!r) {
        free(pattern);
        return CHR_ENOMEM;
    }
    *r = (http_entity_route_t){.eng = eng,
                               .entity = entity,
                               .action = action,
                               .command = cmd,
                               .app = app,
                               .method = method,
                               .pattern = pattern,
                               .key_param = key_param};
    return CHR_OK;
}

static char *fmt_pattern(const char *f, const char *a, const char *b)
{
    char *s = NULL;
    if (asprintf(&s, f, a, b) < 0) return NULL;
    return s;
}

/* The {param} of an app route's path, or NULL. */
static const char *path_param(const char *path)
{
    const char *open = strchr(path, '{');
    return open ? open + 1 : NULL;
}

static ent_action_t action_of(const entity_def_t *e, const char *action, const command_def_t **cmd)
{
    *cmd = NULL;
    for (int i = 0; i < EA_COMMAND; i++)
        if (strcmp(actions[i].name, action) == 0) return (ent_action_t)i;
    *cmd = entity_command(e, action);
    return EA_COMMAND;
}

int http_app_routes_build(engine_t *eng, http_app_routes_t **out, chr_err_t *err)
{
    http_app_routes_t *a = calloc(1, sizeof *a);
    if (!a) return chr_fail(err, CHR_ENOMEM, "", "out of memory");
    const definition_t *def = eng->def;
    int rc = CHR_OK;
    for (size_t i = 0; !rc && i < def->n_entities; i++) {
        const entity_def_t *e = &def->entities[i];
        int ei = (int)i;
        rc = add_one(a, eng, ei, EA_LIST, NULL, NULL, "GET", fmt_pattern("/v1/%s", e->name, ""),
                     NULL);
        if (!rc && (e->operations & OP_CREATE))
            rc = add_one(a, eng, ei, EA_CREATE, NULL, NULL, "POST",
                         fmt_pattern("/v1/%s", e->name, ""), NULL);
        if (!rc)
            rc = add_one(a, eng, ei, EA_GET, NULL, NULL, "GET",
                         fmt_pattern("/v1/%s/{key}", e->name, ""), "key");
        if (!rc && (e->operations & OP_UPDATE))
            rc = add_one(a, eng, ei, EA_UPDATE, NULL, NULL, "PATCH",
                         fmt_pattern("/v1/%s/{key}", e->name, ""), "key");
        if (!rc && (e->operations & OP_UPSERT))
            rc = add_one(a, eng, ei, EA_UPSERT, NULL, NULL, "PUT",
                         fmt_pattern("/v1/%s/{key}", e->name, ""), "key");
        if (!rc && (e->operations & OP_DELETE))
            rc = add_one(a, eng, ei, EA_DELETE, NULL, NULL, "DELETE",
                         fmt_pattern("/v1/%s/{key}", e->name, ""), "key");
        if (!rc)
            rc = add_one(a, eng, ei, EA_HISTORY, NULL, NULL, "GET",
                         fmt_pattern("/v1/%s/{key}/history", e->name, ""), "key");
        for (size_t c = 0; !rc && c < e->n_commands; c++)
            rc = add_one(a, eng, ei, EA_COMMAND, &e->commands[c], NULL, "POST",
                         fmt_pattern("/v1/%s/{key}/%s", e->name, e->commands[c].name), "key");
    }
    for (size_t i = 0; !rc && i < def->n_routes; i++) {
        const route_def_t *rd = &def->routes[i];
        const entity_def_t *e = &def->entities[rd->entity];
        const command_def_t *cmd;
        ent_action_t act = action_of(e, rd->action, &cmd);
        char *pattern = strdup(rd->path);
        /* The loader checked the path: its one {param} (if any) carries the
         * key; keep its name without the braces. */
        const char *param = path_param(rd->path);
        char *key_param = NULL;
        if (param) {
            const char *close = strchr(param, '}');
            key_param = close ? strndup(param, (size_t)(close - param)) : NULL;
        }
        rc = add_one(a, eng, rd->entity, act, cmd, rd, rd->method, pattern, key_param);
        if (!rc && key_param)
            a->items[a->len - 1].owned_key_param = key_param;
        else
            free(key_param);
    }
    if (rc) {
        http_app_routes_free(a);
        return chr_fail(err, CHR_ENOMEM, "", "out of memory building routes");
    }
    *out = a;
    return CHR_OK;
}

/* Whether the access rules let anyone run the route's action (then the
 * gate asks for no credential). */
bool http_entity_route_public(const http_entity_route_t *er)
{
    const entity_def_t *e = &er->eng->def->entities[er->entity];
    switch (er->action) {
    case EA_LIST: return access_is_public(&e->access[ACC_LIST]);
    case EA_GET: return access_is_public(&e->access[ACC_GET]);
    case EA_HISTORY: return access_is_public(&e->access[ACC_HISTORY]);
    case EA_CREATE: return access_is_public(&e->access[ACC_CREATE]);
    case EA_UPDATE: return access_is_public(&e->access[ACC_UPDATE]);
    case EA_DELETE: return access_is_public(&e->access[ACC_DELETE]);
    case EA_UPSERT:
        return access_is_public(&e->access[ACC_CREATE]) &&
               access_is_public(&e->access[ACC_UPDATE]);
    case EA_COMMAND: return er->command && access_is_public(&er->command->access);
    }
    return false;
}

int http_app_routes_add(const http_app_routes_t *a, http_router_t *r, chr_err_t *err)
{
    for (size_t i = 0; i < a->len; i++) {
        const http_entity_route_t *er = &a->items[i];
        http_route_t route = {.method = er->method,
                              .pattern = er->pattern,
                              .handler = actions[er->action].handler,
                              .flags = actions[er->action].flags,
                              .data = er};
        if (http_entity_route_public(er)) /* no credential needed; still rate-limited, per address */
            route.flags |= HTTP_ROUTE_PUBLIC | HTTP_ROUTE_RATED;
        int rc = http_router_add(r, &route, err);
        if (rc) return rc;
    }
    return CHR_OK;
}

size_t http_app_routes_count(const http_app_routes_t *a)
{
    return a ? a->len : 0;
}

const http_entity_route_t *http_app_route(const http_app_routes_t *a, size_t i)
{
    return &a->items[i];
}

void http_app_routes_free(http_app_routes_t *a)
{
    if (!a) return;
    for (size_t i = 0; i < a->len; i++) {
        free(a->items[i].pattern);
        free(a->items[i].owned_key_param);
    }
    free(a->items);
    free(a);
}
