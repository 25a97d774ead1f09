/*
 * response.h - answering a request: every response goes through
 * http_respond_mhd, which adds X-Request-Id, the request's extra headers
 * and (while shutting down) Connection: close, then queues it with MHD.
 * Not here: error bodies (problem.c).
 */
#ifndef CHRONICLE_HTTP_RESPONSE_H
#define CHRONICLE_HTTP_RESPONSE_H

#include <jansson.h>
#include <microhttpd.h>

#include "http/buf.h"
#include "http/request.h"

/* Queues resp (our reference is released) with status. Safe to call once;
 * later calls destroy resp and do nothing. */
void http_respond_mhd(http_req_t *req, unsigned status, struct MHD_Response *resp);

/* Queues a response held while req->defer was set (MHD keeps a connection
 * alive only when the answer is queued after the whole request was read).
 * Does nothing when none is held. */
void http_respond_flush(http_req_t *req);

/* Answers with body (heap memory; taken, freed by MHD) of len bytes and
 * content_type (may be NULL for no body). body NULL means empty. */
void http_respond(http_req_t *req, unsigned status, const char *content_type, char *body,
                  size_t len);

/* Answers with b's contents as application/json (b is emptied). When b ran
 * out of memory the answer is a 503 problem instead. */
void http_respond_buf(http_req_t *req, unsigned status, http_buf_t *b);

/* Answers with j (stolen) serialised compactly as application/json. */
void http_respond_json(http_req_t *req, unsigned status, json_t *j);

#endif
