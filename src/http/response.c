/* response.c - queueing responses with the common headers; see response.h. */
#include "http/response.h"

#include <stdlib.h>
#include <string.h>

#include "http/problem.h"
#include "util/log.h"

void http_respond_mhd(http_req_t *req, unsigned status, struct MHD_Response *resp)
{
    if (!resp) {
        /* Could not even build the response: MHD closes the connection when
         * the handler returns without one; record what happened. */
        req->responded = true;
        req->status = 503;
        return;
    }
    if (req->responded) {
        MHD_destroy_response(resp);
        return;
    }
    MHD_add_response_header(resp, "X-Request-Id", req->request_id);
    for (size_t i = 0; i < req->n_headers; i++)
        MHD_add_response_header(resp, req->headers[i].name, req->headers[i].value);
    if (atomic_load_explicit(&req->ctx->shutting_down, memory_order_relaxed))
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
    req->responded = true;
    req->status = status;
    if (req->defer) {
        req->pending = resp;
        return;
    }
    if (MHD_queue_response(req->conn, status, resp) != MHD_YES)
        log_at(LOG_DEBUG, "queue response failed", LOG_S("request_id", req->request_id),
               LOG_I("status", status));
    MHD_destroy_response(resp);
}

void http_respond_flush(http_req_t *req)
{
    req->defer = false;
    struct MHD_Response *resp = req->pending;
    if (!resp) return;
    req->pending = NULL;
    if (MHD_queue_response(req->conn, req->status, resp) != MHD_YES)
        log_at(LOG_DEBUG, "queue response failed", LOG_S("request_id", req->request_id),
               LOG_I("status", req->status));
    MHD_destroy_response(resp);
}

void http_respond(http_req_t *req, unsigned status, const char *content_type, char *body,
                  size_t len)
{
    struct MHD_Response *resp =
        body ? MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE)
             : MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
    if (!resp) {
        free(body);
        http_respond_mhd(req, status, NULL);
        return;
    }
    if (content_type) MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    http_respond_mhd(req, status, resp);
}

void http_respond_buf(http_req_t *req, unsigned status, http_buf_t *b)
{
    size_t len;
    char *body = http_buf_steal(b, &len);
    if (!body) {
        http_problem(req, HTTP_P_SERVICE_UNAVAILABLE, NULL, "out of memory building the response");
        return;
    }
    http_respond(req, status, "application/json", body, len);
}

void http_respond_json(http_req_t *req, unsigned status, json_t *j)
{
    char *body = j ? json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    json_decref(j);
    if (!body) {
        http_problem(req, HTTP_P_SERVICE_UNAVAILABLE, NULL, "out of memory building the response");
        return;
    }
    http_respond(req, status, "application/json", body, strlen(body));
}
