/*
 * handlers_streams.c - POST /v1/streams/{stream} (append with
 * expected_version, idempotent on event ids) and GET /v1/streams/{stream}
 * (read a stream forwards or backwards). Raw access for integrations and
 * migrations; entity routes come later from the app definition. An append
 * does not hold its worker thread while its group commit runs: the request
 * is suspended until the store's completion (async.h).
 */
#include <ctype.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "core/event.h"
#include "core/uuid.h"
#include "http/async.h"
#include "http/buf.h"
#include "http/context.h"
#include "http/event_json.h"
#include "http/handlers.h"
#include "http/params.h"
#include "http/problem.h"
#include "http/response.h"
#include "http/scope.h"
#include "http/uri.h"
#include "store/store.h"

/* The stream path parameter, checked as a stream name; NULL after
 * answering 400. */
static const char *stream_param(http_req_t *req)
{
    const char *stream = http_match_param(&req->match, "stream");
    chr_err_t err;
    chr_err_clear(&err);
    if (event_check_name(stream, "stream", &err) != CHR_OK) {
        http_problem_err(req, &err, true, NULL);
        return NULL;
    }
    return stream;
}

/* Parses expected_version (absent = any). Returns 0, or -1 after 422. */
static int parse_expected(http_req_t *req, json_t *v, int64_t *out)
{
    if (!v) {
        *out = STORE_ANY;
        return 0;
    }
    if (json_is_integer(v) && json_integer_value(v) >= 0) {
        *out = json_integer_value(v);
        return 0;
    }
    if (json_is_string(v)) {
        const char *s = json_string_value(v);
        if (strcmp(s, "any") == 0) {
            *out = STORE_ANY;
            return 0;
        }
        if (strcmp(s, "no_stream") == 0) {
            *out = STORE_NO_STREAM;
            return 0;
        }
        if (strcmp(s, "stream_exists") == 0) {
            *out = STORE_STREAM_EXISTS;
            return 0;
        }
    }
    http_problem_field(req, HTTP_P_VALIDATION, "expected_version",
                       "expected_version must be an integer >= 0 or one of \"any\", "
                       "\"no_stream\", \"stream_exists\"");
    return -1;
}

/* JSON text of v (compact) as a heap string the caller frees; NULL on OOM. */
static char *dump(json_t *v)
{
    return json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
}

/* Fills ev from the JSON object item (events[i]). Strings are borrowed
 * from the JSON (type) or heap copies listed in owned[] (data, metadata).
 * Returns 0, or -1 after answering. */
static int parse_event(http_req_t *req, size_t i, json_t *item, event_t *ev, char **owned,
                       size_t *n_owned)
{
    char field[64];
    if (!json_is_object(item)) {
        snprintf(field, sizeof field, "events[%zu]", i);
        http_problem_field(req, HTTP_P_VALIDATION, field, "%s must be a JSON object", field);
        return -1;
    }
    const char *key;
    json_t *val;
    json_object_foreach(item, key, val)
    {
        if (strcmp(key, "id") != 0 && strcmp(key, "type") != 0 && strcmp(key, "data") != 0 &&
            strcmp(key, "metadata") != 0) {
            snprintf(field, sizeof field, "events[%zu].", i);
            http_buf_t f = HTTP_BUF_INIT;
            http_buf_puts(&f, field);
            http_buf_utf8(&f, key, strlen(key));
            http_problem_field(req, HTTP_P_VALIDATION, f.data ? f.data : field,
                               "unknown member \"%s\" (allowed: id, type, data, metadata)",
                               f.data ? f.data + strlen(field) : "");
            http_buf_free(&f);
            return -1;
        }
    }
    json_t *id = json_object_get(item, "id");
    if (id) {
        snprintf(field, sizeof field, "events[%zu].id", i);
        if (!json_is_string(id) || !uuid_is_valid(json_string_value(id))) {
            http_problem_field(req, HTTP_P_VALIDATION, field,
                               "%s must be a UUID string (8-4-4-4-12 hex digits)", field);
            return -1;
        }
        const char *s = json_string_value(id);
        for (size_t k = 0; k < UUID_STR_LEN; k++)
            ev->id[k] = (char)tolower((unsigned char)s[k]);
        ev->id[UUID_STR_LEN] = '\0';
    }
    json_t *type = json_object_get(item, "type");
    if (!type || !json_is_string(type)) {
        snprintf(field, sizeof field, "events[%zu].type", i);
        http_problem_field(req, HTTP_P_VALIDATION, field, "%s %s", field,
                           type ? "must be a string" : "is required");
        return -1;
    }
    ev->type = (char *)json_string_value(type);
    json_t *data = json_object_get(item, "data");
    if (data) {
        ev->data = dump(data);
        if (!ev->data) goto oom;
        owned[(*n_owned)++] = ev->data;
    } else {
        ev->data = (char *)"{}";
    }
    json_t *meta = json_object_get(item, "metadata");
    if (meta) {
        if (!json_is_object(meta)) {
            snprintf(field, sizeof field, "events[%zu].metadata", i);
            http_problem_field(req, HTTP_P_VALIDATION, field, "%s must be a JSON object", field);
            return -1;
        }
        ev->metadata = dump(meta);
        if (!ev->metadata) goto oom;
        owned[(*n_owned)++] = ev->metadata;
    }
    return 0;
oom:
    http_problem(req, HTTP_P_SERVICE_UNAVAILABLE, NULL, "out of memory");
    return -1;
}

/* 201 body {"stream","version","positions","ids"} and Location. */
static void respond_appended(http_req_t *req, const char *stream, const store_append_t *ap)
{
    http_buf_t loc = HTTP_BUF_INIT;
    http_buf_puts(&loc, "/v1/streams/");
    http_buf_pct_encode(&loc, stream);
    if (!loc.oom) http_req_add_header(req, MHD_HTTP_HEADER_LOCATION, loc.data);
    http_buf_free(&loc);
    if (ap->idempotent) http_req_add_header(req, "Idempotent-Replay", "true");

    http_buf_t b = HTTP_BUF_INIT;
    http_buf_reserve(&b, 64 + strlen(stream) + ap->n_events * 60);
    http_buf_puts(&b, "{\"stream\":");
    http_buf_json_str(&b, stream, strlen(stream));
    http_buf_puts(&b, ",\"version\":");
    http_buf_i64(&b, ap->version);
    http_buf_puts(&b, ",\"positions\":[");
    for (size_t i = 0; i < ap->n_events; i++) {
        if (i) http_buf_putc(&b, ',');
        http_buf_i64(&b, ap->events[i].position);
    }
    http_buf_puts(&b, "],\"ids\":[");
    for (size_t i = 0; i < ap->n_events; i++) {
        if (i) http_buf_putc(&b, ',');
        http_buf_json_str(&b, ap->events[i].id, strlen(ap->events[i].id));
    }
    http_buf_puts(&b, "]}");
    http_respond_buf(req, MHD_HTTP_CREATED, &b);
}

/* An append across its wait for the group commit. Lives in the request's
 * arena; what it owns outside the arena (the parsed body, which the events
 * borrow from, and the dumped data/metadata) is freed by append_free when
 * the request is released, however it ends. */
typedef struct append_job {
    http_req_t *req;
    const char *stream;
    json_t *root;          /* the body */
    json_t *expected_json; /* borrowed from root; echoed in 409s; NULL when absent */
    char **owned;          /* heap dumps the events point to */
    size_t n_owned;
    store_append_t ap;
    store_uow_t uow;
    chr_err_t err; /* written by the store's writer */
    int rc;        /* likewise */
} append_job_t;

static void append_free(void *arg)
{
    append_job_t *job = arg;
    for (size_t i = 0; i < job->n_owned; i++)
        free(job->owned[i]);
    json_decref(job->root);
}

/* The answer, once the unit of work is committed or failed. */
static void append_answer(http_req_t *req, void *arg)
{
    append_job_t *job = arg;
    if (job->rc != CHR_OK) {
        if (job->err.code == CHR_OK) job->err.code = job->rc;
        http_problem_err(req, &job->err, strcmp(job->err.field, "stream") == 0, job->expected_json);
        return;
    }
    respond_appended(req, job->stream, &job->ap);
}

/* Store completion, on the writer thread: record and resume the request. */
static void append_done(void *user, int rc)
{
    append_job_t *job = user;
    job->rc = rc;
    http_async_wake(job->req); /* the last touch of job */
}

/* The stream the caller means by the URL's name, checked against its scope
 * (engine_stream_access: a tenant's streams live under its prefix), in the
 * request's arena; NULL after answering. */
static const char *scoped_stream(http_req_t *req, const access_scope_t *scope, const char *stream,
                                 bool write)
{
    size_t size = 2 * EVENT_NAME_MAX + 2;
    char *named = http_req_alloc(req, size);
    if (!named) {
        http_problem(req, HTTP_P_SERVICE_UNAVAILABLE, NULL, "out of memory");
        return NULL;
    }
    chr_err_t err;
    chr_err_clear(&err);
    if (engine_stream_access((engine_t *)req->ctx->engine, scope, stream, write, named, size,
                             &err) != CHR_OK) {
        http_problem_err(req, &err, err.code == CHR_EINVAL, NULL);
        return NULL;
    }
    return named;
}

/* Sets the metadata tenant_id of an event to tenant (removes it when
 * NULL): a tenant's callers cannot tag events as another's. The new text
 * lives in the request's arena. Returns false after answering. */
static bool retag(http_req_t *req, event_t *ev, const char *tenant)
{
    json_t *m = ev->metadata ? json_loads(ev->metadata, 0, NULL) : json_object();
    if (!json_is_object(m)) {
        json_decref(m);
        m = json_object();
    }
    if (m && tenant)
        json_object_set_new(m, "tenant_id", json_string(tenant));
    else if (m)
        json_object_del(m, "tenant_id");
    char *text = m ? json_dumps(m, JSON_COMPACT) : NULL;
    json_decref(m);
    char *copy = text ? http_req_alloc(req, strlen(text) + 1) : NULL;
    if (!copy) {
        free(text);
        http_problem(req, HTTP_P_SERVICE_UNAVAILABLE, NULL, "out of memory");
        return false;
    }
    memcpy(copy, text, strlen(text) + 1);
    free(text);
    ev->metadata = copy;
    return true;
}

void http_handle_stream_append(http_req_t *req)
{
    const char *stream = stream_param(req);
    if (!stream) return;
    access_scope_t scope;
    if (!http_req_scope(req, &scope)) return;
    int entity;
    const char *entity_key;
    if (req->ctx->engine &&
        projection_stream_entity(&req->ctx->engine->proj, stream, &entity, &entity_key)) {
        const char *name = req->ctx->engine->def->entities[entity].name;
        http_problem_field(req, HTTP_P_VALIDATION, "stream",
                           "stream \"%s\" belongs to entity %s: write it through /v1/%s, which "
                           "validates the change and keeps its table in step",
                           stream, name, name);
        return;
    }

    if (!(stream = scoped_stream(req, &scope, stream, true))) return;

    json_error_t je;
    json_t *root =
        json_loadb(req->body ? req->body : "", req->body_len, JSON_REJECT_DUPLICATES, &je);
    if (!root) {
        http_problem(req, HTTP_P_MALFORMED_JSON, NULL,
                     "the body is not valid JSON: %s (line %d, column %d)", je.text, je.line,
                     je.column);
        return;
    }
    append_job_t *job = http_req_alloc(req, sizeof *job);
    if (!job || !http_req_on_release(req, append_free, job)) {
        json_decref(root);
        http_problem(req, HTTP_P_SERVICE_UNAVAILABLE, NULL, "out of memory");
        return;
    }
    *job = (append_job_t){.req = req, .stream = stream, .root = root};
    if (!json_is_object(root)) {
        http_problem_field(req, HTTP_P_VALIDATION, "", "the body must be a JSON object");
        return;
    }
    const char *key;
    json_t *val;
    json_object_foreach(root, key, val)
    {
        if (strcmp(key, "expected_version") != 0 && strcmp(key, "events") != 0) {
            http_buf_t f = HTTP_BUF_INIT;
            http_buf_utf8(&f, key, strlen(key));
            http_problem_field(req, HTTP_P_VALIDATION, f.data ? f.data : "",
                               "unknown member \"%s\" (allowed: expected_version, events)",
                               f.data ? f.data : "");
            http_buf_free(&f);
            return;
        }
    }
    job->expected_json = json_object_get(root, "expected_version");
    int64_t expected;
    if (parse_expected(req, job->expected_json, &expected)) return;

    json_t *events = json_object_get(root, "events");
    if (!events || !json_is_array(events)) {
        http_problem_field(req, HTTP_P_VALIDATION, "events", "events %s",
                           events ? "must be an array of events" : "is required");
        return;
    }
    size_t n = json_array_size(events);
    if (n == 0) {
        http_problem_field(req, HTTP_P_VALIDATION, "events", "events must hold at least one event");
        return;
    }
    if (n > HTTP_MAX_EVENTS_PER_APPEND) {
        http_problem_field(req, HTTP_P_PAYLOAD_TOO_LARGE, "events",
                           "events holds %zu events; at most %d are allowed per request", n,
                           HTTP_MAX_EVENTS_PER_APPEND);
        return;
    }
    event_t *evs = http_req_alloc(req, n * sizeof *evs);
    job->owned = http_req_alloc(req, 2 * n * sizeof *job->owned);
    if (!evs || !job->owned) {
        http_problem(req, HTTP_P_SERVICE_UNAVAILABLE, NULL, "out of memory");
        return;
    }
    memset(evs, 0, n * sizeof *evs);
    for (size_t i = 0; i < n; i++) {
        evs[i].stream = (char *)stream;
        if (parse_event(req, i, json_array_get(events, i), &evs[i], job->owned, &job->n_owned))
            return;
        if (!(scope.full && !access_tenant(&scope)) && !retag(req, &evs[i], access_tenant(&scope)))
            return;
    }

    job->ap = (store_append_t){
        .stream = stream, .expected_version = expected, .events = evs, .n_events = n};
    job->uow = (store_uow_t){.appends = &job->ap, .n_appends = 1};
    chr_err_clear(&job->err);
    /* Wait for the group commit with the connection suspended, not in this
     * thread: append_done resumes it, append_answer answers. */
    if (!http_async_begin(req, append_answer, job)) {
        http_problem(req, HTTP_P_SERVICE_UNAVAILABLE, NULL, "the server is shutting down; retry");
        return;
    }
    /* Not into job->rc: append_done may already have written it. */
    int rc = store_commit_async(req->ctx->store, &job->uow, &job->err, append_done, job);
    if (rc != CHR_OK) { /* refused before queueing (validation): no wake comes */
        http_async_cancel(req);
        job->rc = rc;
        append_answer(req, job);
    }
}

void http_handle_stream_read(http_req_t *req)
{
    static const char *const directions[] = {"forward", "backward", NULL};
    const char *stream = stream_param(req);
    if (!stream) return;
    int dir;
    int64_t from, limit;
    if (http_param_choice(req, "direction", directions, 0, &dir)) return;
    bool backward = dir == 1;
    if (http_param_int(req, "from", backward ? 0 : 1, 0, INT64_MAX, &from)) return;
    if (http_param_int(req, "limit", HTTP_DEFAULT_PAGE, 1, HTTP_MAX_PAGE, &limit)) return;
    access_scope_t scope;
    if (!http_req_scope(req, &scope)) return;

    store_t *store = req->ctx->store;
    chr_err_t err;
    chr_err_clear(&err);
    if (!(stream = scoped_stream(req, &scope, stream, false))) return;
    event_list_t list = {0};
    if (store_read_stream(store, stream, from, (size_t)limit, backward, &list, &err) != CHR_OK) {
        event_list_free(&list);
        http_problem_err(req, &err, true, NULL);
        return;
    }
    /* The stream's current version, from the page itself when it must hold
     * the newest event (one query instead of two): a backward read from the
     * end starts with it, a forward page shorter than limit ends with it.
     * Otherwise, and for an empty page (no stream, or from past the end),
     * ask the store. */
    int64_t version = 0;
    if (list.len > 0 && backward && from == 0) {
        version = list.items[0].version;
    } else if (list.len > 0 && !backward && list.len < (size_t)limit) {
        version = list.items[list.len - 1].version;
    } else {
        if (store_stream_version(store, stream, &version, &err) != CHR_OK) {
            event_list_free(&list);
            http_problem_err(req, &err, true, NULL);
            return;
        }
        for (size_t i = 0; i < list.len; i++) /* an append may have come in between */
            if (list.items[i].version > version) version = list.items[i].version;
    }
    /* An entity stream was checked as a whole (its row, like its history
     * route); other streams are filtered by their events' tenant tags. */
    bool had = list.len > 0;
    int ent;
    const char *ent_key;
    if (!req->ctx->engine || !projection_stream_entity(&req->ctx->engine->proj, stream, &ent, &ent_key))
        engine_filter_events(req->ctx->engine, &scope, &list);
    if (version == 0 || (had && list.len == 0)) {
        event_list_free(&list);
        http_problem(req, HTTP_P_NOT_FOUND, NULL, "stream \"%s\" has no events", stream);
        return;
    }

    http_buf_t b = HTTP_BUF_INIT;
    http_buf_puts(&b, "{\"stream\":");
    http_buf_json_str(&b, stream, strlen(stream));
    http_buf_puts(&b, ",\"version\":");
    http_buf_i64(&b, version);
    http_buf_puts(&b, ",\"events\":");
    http_event_list_json(&b, &list);
    http_buf_putc(&b, '}');
    event_list_free(&list);
    http_respond_buf(req, MHD_HTTP_OK, &b);
}
