/*
 * handlers_consumers.c - the consumers of the worker role over HTTP:
 *   GET  /v1/consumers                                    list with position, lag, last error
 *   POST /v1/consumers/{name}/reset                       rewind to 0 or {"position": N}
 *   GET  /v1/consumers/{name}/dead-letters                the events it gave up on
 *   POST /v1/consumers/{name}/dead-letters/{id}/retry     deliver one again
 * Any instance answers (api, worker or all): the state lives in the store,
 * and the instance running a consumer picks resets and retries up at once
 * when it is this one (worker_poke), else within a second. The few writes here (reset, retry) commit synchronously on the
 * request's thread: they are rare operator actions, not the write path.
 * Not here: running consumers (src/worker/).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/timefmt.h"
#include "http/context.h"
#include "http/handlers.h"
#include "http/params.h"
#include "http/problem.h"
#include "http/response.h"
#include "worker/consumer_store.h"
#include "worker/worker.h"

#define MAX_CONSUMERS 256

static const definition_t *app_def(http_req_t *req)
{
    return req->ctx->engine ? req->ctx->engine->def : NULL;
}

/* The declared consumer named by the path, or NULL after a 404. */
static bool find_consumer(http_req_t *req, worker_consumer_info_t *out)
{
    const char *name = http_match_param(&req->match, "name");
    worker_consumer_info_t all[MAX_CONSUMERS];
    size_t n = worker_consumers(app_def(req), all, MAX_CONSUMERS);
    for (size_t i = 0; i < n && i < MAX_CONSUMERS; i++)
        if (strcmp(all[i].name, name) == 0) {
            *out = all[i];
            return true;
        }
    http_problem(req, HTTP_P_NOT_FOUND, NULL,
                 "no consumer \"%s\"; the app definition declares %zu (see GET /v1/consumers)",
                 name, n);
    return false;
}

static json_t *str_array(char **v, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < n; i++)
        json_array_append_new(a, json_string(v[i]));
    return a;
}

static json_t *timestamp_or_null(int64_t us)
{
    if (!us) return json_null();
    char t[TIMEFMT_LEN + 1];
    time_format_us(us, t);
    return json_string(t);
}

/* One consumer as listed: definition facts plus its stored state. */
static json_t *consumer_json(const worker_consumer_info_t *c, const consumer_state_t *st,
                             bool found, int64_t head)
{
    json_t *filter = json_object();
    if (filter && c->filter->n_types)
        json_object_set_new(filter, "events", str_array(c->filter->types, c->filter->n_types));
    if (filter && c->filter->n_entities)
        json_object_set_new(filter, "entities",
                            str_array(c->filter->entities, c->filter->n_entities));
    int64_t lag = head > st->position ? head - st->position : 0;
    /* a reaction to another instance's feed: positions are that feed's, whose
     * head this instance does not know */
    bool remote = c->feed != NULL;
    return json_pack("{s:s,s:s,s:o,s:o,s:I,s:o,s:I,s:I,s:I,s:o,s:o,s:o,s:o}", "name", c->name,
                     "kind", c->kind, "filter", filter ? filter : json_object(), "feed",
                     remote ? json_string(c->feed) : json_null(), "position",
                     (json_int_t)st->position, "lag", remote ? json_null() : json_integer(lag),
                     "delivered", (json_int_t)st->delivered, "dead_letters",
                     (json_int_t)st->dead_letters, "resets", (json_int_t)st->epoch, "head",
                     remote ? json_null() : json_integer(head), "last_error",
                     st->last_error[0] ? json_string(st->last_error) : json_null(),
                     "last_error_at", timestamp_or_null(st->last_error_at), "updated_at",
                     found ? timestamp_or_null(st->updated_at) : json_null());
}

void http_handle_consumers_list(http_req_t *req)
{
    store_t *s = req->ctx->store;
    chr_err_t err;
    chr_err_clear(&err);
    int64_t head = 0;
    if (store_head_position(s, &head, &err) != CHR_OK) {
        http_problem_err(req, &err, false, NULL);
        return;
    }
    worker_consumer_info_t all[MAX_CONSUMERS];
    size_t n = worker_consumers(app_def(req), all, MAX_CONSUMERS);
    json_t *list = json_array();
    for (size_t i = 0; list && i < n && i < MAX_CONSUMERS; i++) {
        consumer_state_t st;
        int rc = consumer_store_get(s, all[i].name, &st, &err);
        if (rc != CHR_OK && rc != CHR_ENOTFOUND) {
            json_decref(list);
            http_problem_err(req, &err, false, NULL);
            return;
        }
        json_array_append_new(list, consumer_json(&all[i], &st, rc == CHR_OK, head));
    }
    json_t *body = list ? json_pack("{s:o,s:I}", "consumers", list, "head", (json_int_t)head) : NULL;
    if (!body) {
        http_problem(req, HTTP_P_SERVICE_UNAVAILABLE, NULL, "out of memory");
        return;
    }
    http_respond_json(req, MHD_HTTP_OK, body);
}

void http_handle_consumer_reset(http_req_t *req)
{
    worker_consumer_info_t c;
    if (!find_consumer(req, &c)) return;
    int64_t position = 0;
    json_t *root = NULL;
    if (!http_body_object(req, &root, false)) return;
    if (root) {
        json_t *p = json_object_get(root, "position");
        bool ok = json_object_size(root) == (p ? 1u : 0u) &&
                  (!p || (json_is_integer(p) && json_integer_value(p) >= 0));
        if (p && ok) position = json_integer_value(p);
        json_decref(root);
        if (!ok) {
            http_problem_field(req, HTTP_P_VALIDATION, "position",
                               "the body must be {} or {\"position\": N} with N a position >= 0");
            return;
        }
    }
    chr_err_t err;
    chr_err_clear(&err);
    int64_t head = 0;
    if (store_head_position(req->ctx->store, &head, &err) != CHR_OK) {
        http_problem_err(req, &err, false, NULL);
        return;
    }
    if (position > head && !c.feed) {
        http_problem_field(req, HTTP_P_VALIDATION, "position",
                           "position %lld is beyond the head of the feed (%lld)",
                           (long long)position, (long long)head);
        return;
    }
    consumer_state_t st;
    if (consumer_store_reset(req->ctx->store, c.name, position, &err) != CHR_OK ||
        consumer_store_get(req->ctx->store, c.name, &st, &err) != CHR_OK) {
        http_problem_err(req, &err, false, NULL);
        return;
    }
    worker_poke(c.name);
    http_respond_json(req, MHD_HTTP_OK, consumer_json(&c, &st, true, head));
}

void http_handle_consumer_dead_letters(http_req_t *req)
{
    worker_consumer_info_t c;
    if (!find_consumer(req, &c)) return;
    int64_t after, limit;
    if (http_param_int(req, "after", 0, 0, INT64_MAX, &after)) return;
    if (http_param_int(req, "limit", HTTP_DEFAULT_PAGE, 1, HTTP_MAX_PAGE, &limit)) return;
    chr_err_t err;
    chr_err_clear(&err);
    json_t *list = NULL;
    if (consumer_store_dead_letters(req->ctx->store, c.name, after, limit, &list, &err) !=
        CHR_OK) {
        http_problem_err(req, &err, false, NULL);
        return;
    }
    size_t n = json_array_size(list);
    json_int_t next = n ? json_integer_value(json_object_get(json_array_get(list, n - 1), "id"))
                        : (json_int_t)after;
    json_t *body = json_pack("{s:s,s:o,s:I}", "consumer", c.name, "dead_letters", list,
                             "next_after", next);
    if (!body) {
        http_problem(req, HTTP_P_SERVICE_UNAVAILABLE, NULL, "out of memory");
        return;
    }
    http_respond_json(req, MHD_HTTP_OK, body);
}

void http_handle_consumer_dead_letter_retry(http_req_t *req)
{
    worker_consumer_info_t c;
    if (!find_consumer(req, &c)) return;
    const char *id_text = http_match_param(&req->match, "id");
    int64_t id = 0;
    if (http_parse_i64(id_text, &id) != 0 || id < 1) {
        http_problem(req, HTTP_P_NOT_FOUND, NULL,
                     "no dead letter \"%s\" for consumer %s: ids are positive integers", id_text,
                     c.name);
        return;
    }
    chr_err_t err;
    chr_err_clear(&err);
    json_t *row = NULL;
    if (consumer_store_request_retry(req->ctx->store, c.name, id, &row, &err) != CHR_OK) {
        http_problem_err(req, &err, false, NULL);
        return;
    }
    worker_poke(c.name);
    http_respond_json(req, MHD_HTTP_ACCEPTED, row ? row : json_object());
}
