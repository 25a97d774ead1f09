/*
 * handlers_feed.c - GET /v1/events: the global log by position, one page
 * as JSON, or live as Server-Sent Events when the client accepts
 * text/event-stream (the streaming itself lives in feed.c).
 */
#include <string.h>
#include <strings.h>

#include "http/buf.h"
#include "http/context.h"
#include "http/event_json.h"
#include "http/feed.h"
#include "http/handlers.h"
#include "http/params.h"
#include "http/problem.h"
#include "http/response.h"
#include "http/scope.h"
#include "store/store.h"

#define MAX_TYPES 64

static bool wants_sse(http_req_t *req)
{
    const char *accept = http_req_header(req, MHD_HTTP_HEADER_ACCEPT);
    return accept && strcasestr(accept, "text/event-stream") != NULL;
}

static void live(http_req_t *req, int64_t after, const char **types, size_t n_types,
                 const access_scope_t *scope)
{
    const char *last = http_req_header(req, "Last-Event-ID");
    if (last && *last) {
        int64_t id;
        if (http_parse_i64(last, &id) != 0 || id < 0) {
            http_problem_field(
                req, HTTP_P_BAD_REQUEST, "Last-Event-ID",
                "the Last-Event-ID header must be an event position (an integer >= 0)");
            return;
        }
        if (id > after) after = id;
    }
    if (strcmp(req->method, "HEAD") == 0) { /* headers only: no subscriber */
        struct MHD_Response *h = MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
        if (h) {
            MHD_add_response_header(h, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream");
            MHD_add_response_header(h, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
        }
        http_respond_mhd(req, MHD_HTTP_OK, h);
        return;
    }
    struct MHD_Response *r =
        http_feed_subscribe(req->ctx->feed, req->conn, after, (const char *const *)types, n_types,
                            req->ctx->engine, scope);
    if (!r) {
        http_problem(req, HTTP_P_SERVICE_UNAVAILABLE, NULL,
                     atomic_load(&req->ctx->shutting_down) ? "the server is shutting down"
                                                           : "cannot open the live feed");
        return;
    }
    http_respond_mhd(req, MHD_HTTP_OK, r);
}

void http_handle_events(http_req_t *req)
{
    int64_t after, limit;
    const char **types;
    size_t n_types;
    if (http_param_int(req, "after", 0, 0, INT64_MAX, &after)) return;
    if (http_param_int(req, "limit", HTTP_DEFAULT_PAGE, 1, HTTP_MAX_PAGE, &limit)) return;
    if (http_param_names(req, "types", MAX_TYPES, &types, &n_types)) return;
    access_scope_t scope;
    if (!http_req_scope(req, &scope)) return;
    if (wants_sse(req)) {
        live(req, after, types, n_types, &scope);
        return;
    }

    store_t *store = req->ctx->store;
    chr_err_t err;
    chr_err_clear(&err);
    /* The head first: every event at or below it is visible to the page's
     * read, so when that read comes back short, nothing up to it is left
     * unread and next_after may move there (past events of other types). */
    int64_t head = 0;
    if (store_head_position(store, &head, &err) != CHR_OK) {
        http_problem_err(req, &err, false, NULL);
        return;
    }
    event_list_t list = {0};
    if (store_read_all(store, after, (size_t)limit, types, n_types, &list, &err) != CHR_OK) {
        event_list_free(&list);
        http_problem_err(req, &err, true, NULL);
        return;
    }
    int64_t next_after = list.len ? list.items[list.len - 1].position : after;
    if (list.len < (size_t)limit && head > next_after) next_after = head;
    if (list.len && head < next_after) head = next_after; /* commits after the head was read */
    /* Events the caller may not see are dropped after paging: a page may
     * hold fewer than limit events; next_after still moves past them. */
    engine_filter_events(req->ctx->engine, &scope, &list);

    http_buf_t b = HTTP_BUF_INIT;
    http_buf_puts(&b, "{\"events\":");
    http_event_list_json(&b, &list);
    http_buf_puts(&b, ",\"next_after\":");
    http_buf_i64(&b, next_after);
    http_buf_puts(&b, ",\"head\":");
    http_buf_i64(&b, head);
    http_buf_putc(&b, '}');
    event_list_free(&list);
    http_respond_buf(req, MHD_HTTP_OK, &b);
}
