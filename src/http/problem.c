/* problem.c - the one table of problems and their bodies; see problem.h. */
#include "http/problem.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "core/event.h"
#include "http/buf.h"
#include "http/response.h"
#include "util/log.h"

typedef struct problem_row {
    http_problem_t id;
    const char *slug;
    unsigned status;
    const char *title;
    int codes[3]; /* chr_status_t codes answered with this problem; 0 ends */
} problem_row_t;

/* The one table. A chr_status_t listed twice would be ambiguous: the first
 * row wins, and http_problem_for_err refines EINVAL and ECONFLICT. */
static const problem_row_t rows[HTTP_P_COUNT] = {
    {HTTP_P_BAD_REQUEST, "bad-request", 400, "Bad request", {0}},
    {HTTP_P_MALFORMED_JSON, "malformed-json", 400, "Malformed JSON", {0}},
    {HTTP_P_UNAUTHORIZED, "unauthorized", 401, "Unauthorized", {CHR_EUNAUTHORIZED}},
    {HTTP_P_FORBIDDEN, "forbidden", 403, "Forbidden", {CHR_EFORBIDDEN}},
    {HTTP_P_NOT_FOUND, "not-found", 404, "Not found", {CHR_ENOTFOUND}},
    {HTTP_P_METHOD_NOT_ALLOWED, "method-not-allowed", 405, "Method not allowed", {0}},
    {HTTP_P_NOT_ACCEPTABLE, "not-acceptable", 406, "Not acceptable", {0}},
    {HTTP_P_WRONG_EXPECTED_VERSION, "wrong-expected-version", 409, "Wrong expected version", {0}},
    {HTTP_P_CONFLICT, "conflict", 409, "Conflict", {CHR_ECONFLICT}},
    {HTTP_P_PRECONDITION_FAILED, "precondition-failed", 412, "Precondition failed", {CHR_EPRECONDITION}},
    {HTTP_P_PAYLOAD_TOO_LARGE, "payload-too-large", 413, "Payload too large", {CHR_ETOOBIG}},
    {HTTP_P_UNSUPPORTED_MEDIA_TYPE, "unsupported-media-type", 415, "Unsupported media type", {0}},
    {HTTP_P_VALIDATION, "validation", 422, "Validation failed", {CHR_EINVAL}},
    {HTTP_P_RATE_LIMITED, "rate-limited", 429, "Too many requests", {0}},
    {HTTP_P_INTERNAL, "internal", 500, "Internal server error", {0}},
    {HTTP_P_SERVICE_UNAVAILABLE,
     "service-unavailable",
     503,
     "Service unavailable",
     {CHR_ESTORE, CHR_EUNAVAILABLE, CHR_ENOMEM}},
};

unsigned http_problem_status(http_problem_t p)
{
    return p < HTTP_P_COUNT ? rows[p].status : 500;
}

const char *http_problem_slug(http_problem_t p)
{
    return p < HTTP_P_COUNT ? rows[p].slug : "internal";
}

http_problem_t http_problem_for_err(const chr_err_t *err, bool from_params)
{
    int code = err ? err->code : CHR_ESTORE;
    if (code == CHR_EINVAL && from_params) return HTTP_P_BAD_REQUEST;
    if (code == CHR_ECONFLICT && strcmp(err->field, "expected_version") == 0)
        return HTTP_P_WRONG_EXPECTED_VERSION;
    for (size_t i = 0; i < HTTP_P_COUNT; i++)
        for (size_t k = 0; k < 3 && rows[i].codes[k]; k++)
            if (rows[i].codes[k] == code) return rows[i].id;
    return HTTP_P_INTERNAL;
}

/* A JSON string of arbitrary bytes (invalid UTF-8 replaced); new reference
 * or NULL on OOM. */
static json_t *clean_string(const char *s, size_t n)
{
    if (utf8_valid(s, n)) return json_stringn(s, n);
    http_buf_t b = HTTP_BUF_INIT;
    http_buf_utf8(&b, s, n);
    json_t *j = b.oom ? NULL : json_stringn(b.data ? b.data : "", b.len);
    http_buf_free(&b);
    return j;
}

static void respond_problem(http_req_t *req, http_problem_t p, json_t *extra, const char *detail)
{
    if (p >= HTTP_P_COUNT) p = HTTP_P_INTERNAL;
    const problem_row_t *row = &rows[p];
    char type[64];
    snprintf(type, sizeof type, "/problems/%s", row->slug);
    json_t *body = json_object();
    if (body) {
        json_object_set_new(body, "type", json_string(type));
        json_object_set_new(body, "title", json_string(row->title));
        json_object_set_new(body, "status", json_integer(row->status));
        json_object_set_new(body, "detail", clean_string(detail, strlen(detail)));
        json_object_set_new(
            body, "instance",
            clean_string(req->path ? req->path : "", req->path ? req->path_len : 0));
        json_object_set_new(body, "request_id", json_string(req->request_id));
        if (extra) json_object_update(body, extra);
    }
    json_decref(extra);
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    if (!text) {
        /* Out of memory: a fixed body still tells the client what happened. */
        static const char fallback[] =
            "{\"type\":\"/problems/service-unavailable\",\"title\":\"Service unavailable\","
            "\"status\":503,\"detail\":\"out of memory\"}";
        struct MHD_Response *r = MHD_create_response_from_buffer(
            sizeof fallback - 1, (void *)fallback, MHD_RESPMEM_PERSISTENT);
        if (r) MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/problem+json");
        http_respond_mhd(req, 503, r);
        return;
    }
    if (row->status >= 500)
        log_at(LOG_WARN, "problem", LOG_S("request_id", req->request_id), LOG_S("type", row->slug),
               LOG_I("status", row->status), LOG_S("detail", detail));
    http_respond(req, row->status, "application/problem+json", text, strlen(text));
}

void http_problem(http_req_t *req, http_problem_t p, json_t *extra, const char *fmt, ...)
{
    char detail[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    respond_problem(req, p, extra, detail);
}

static json_t *errors_member(const char *field, const char *message)
{
    json_t *e = json_object();
    json_t *arr = json_array();
    json_t *item = json_object();
    if (!e || !arr || !item) {
        json_decref(e);
        json_decref(arr);
        json_decref(item);
        return NULL;
    }
    json_object_set_new(item, "field", clean_string(field, strlen(field)));
    json_object_set_new(item, "message", clean_string(message, strlen(message)));
    json_array_append_new(arr, item);
    json_object_set_new(e, "errors", arr);
    return e;
}

void http_problem_field(http_req_t *req, http_problem_t p, const char *field, const char *fmt, ...)
{
    char detail[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    respond_problem(req, p, errors_member(field, detail), detail);
}

void http_problem_err(http_req_t *req, const chr_err_t *err, bool from_params,
                      json_t *expected_as_sent)
{
    static const chr_err_t unknown = {.code = CHR_ESTORE, .msg = "the store failed"};
    if (!err) err = &unknown;
    http_problem_t p = http_problem_for_err(err, from_params);
    const char *detail = err->msg[0] ? err->msg : chr_status_name(err->code);
    json_t *extra = NULL;
    if (p == HTTP_P_VALIDATION || (p == HTTP_P_BAD_REQUEST && err->field[0]) ||
        (p == HTTP_P_PAYLOAD_TOO_LARGE && err->field[0]) ||
        (p == HTTP_P_CONFLICT && err->field[0])) { /* e.g. a unique field's value is taken */
        /* Messages read "field: problem"; the errors entry names the field
         * already, so its message is the problem alone. */
        size_t fl = strlen(err->field);
        const char *message = detail;
        if (fl && strncmp(detail, err->field, fl) == 0 && strncmp(detail + fl, ": ", 2) == 0)
            message = detail + fl + 2;
        extra = errors_member(err->field[0] ? err->field : "", message);
    } else if (p == HTTP_P_WRONG_EXPECTED_VERSION) {
        json_t *exp;
        if (expected_as_sent)
            exp = json_incref(expected_as_sent);
        else if (err->conflict.expected == -1)
            exp = json_string("any");
        else if (err->conflict.expected == -2)
            exp = json_string("stream_exists");
        else if (err->conflict.expected == 0)
            exp = json_string("no_stream");
        else
            exp = json_integer(err->conflict.expected);
        extra = json_pack("{s:o, s:I}", "expected_version", exp, "actual_version",
                          (json_int_t)err->conflict.actual);
    }
    respond_problem(req, p, extra, detail);
}
