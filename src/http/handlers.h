/*
 * handlers.h - the request handlers of the core API and the table that
 * routes to them (routes.c). Handler files are named for what they serve:
 * handlers_streams.c (/v1/streams/{stream}), handlers_feed.c (/v1/events),
 * handlers_ops.c (/health, /ready, /internal/health/{component}, /metrics),
 * handlers_consumers.c (/v1/consumers).
 */
#ifndef CHRONICLE_HTTP_HANDLERS_H
#define CHRONICLE_HTTP_HANDLERS_H

#include "core/error.h"
#include "http/request.h"
#include "http/router.h"

#define HTTP_MAX_EVENTS_PER_APPEND 1000
#define HTTP_MAX_PAGE 1000
#define HTTP_DEFAULT_PAGE 100

/* Adds the core routes (the table in routes.c) to r. */
int http_routes_add_core(http_router_t *r, chr_err_t *err);

/* The core route table itself (static, borrowed): *n routes. For
 * generators that describe what the server answers (openapi.c). */
const http_route_t *http_core_routes(size_t *n);

void http_handle_health(http_req_t *req);
void http_handle_ready(http_req_t *req);
void http_handle_component_health(http_req_t *req);
void http_handle_metrics(http_req_t *req);
void http_handle_stream_append(http_req_t *req);
void http_handle_stream_read(http_req_t *req);
void http_handle_events(http_req_t *req);
void http_handle_consumers_list(http_req_t *req);
void http_handle_consumer_reset(http_req_t *req);
void http_handle_consumer_dead_letters(http_req_t *req);
void http_handle_consumer_dead_letter_retry(http_req_t *req);

#endif
