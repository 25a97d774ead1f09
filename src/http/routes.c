/* routes.c - the core route table: the one list of what the server answers
 * before an app definition adds its own routes. */
#include "http/handlers.h"

static const http_route_t core_routes[] = {
    {"GET", "/health", http_handle_health, HTTP_ROUTE_PUBLIC | HTTP_ROUTE_OPS, NULL},
    {"GET", "/ready", http_handle_ready, HTTP_ROUTE_PUBLIC | HTTP_ROUTE_OPS, NULL},
    {"GET", "/internal/health/{component}", http_handle_component_health, HTTP_ROUTE_OPS, NULL},
    {"GET", "/metrics", http_handle_metrics, HTTP_ROUTE_OPS, NULL},
    {"POST", "/v1/streams/{stream}", http_handle_stream_append, HTTP_ROUTE_JSON_BODY, NULL},
    {"GET", "/v1/streams/{stream}", http_handle_stream_read, 0, NULL},
    {"GET", "/v1/events", http_handle_events, 0, NULL},
    {"GET", "/v1/consumers", http_handle_consumers_list, 0, NULL},
    {"POST", "/v1/consumers/{name}/reset", http_handle_consumer_reset,
     HTTP_ROUTE_JSON_BODY | HTTP_ROUTE_BODY_OPTIONAL, NULL},
    {"GET", "/v1/consumers/{name}/dead-letters", http_handle_consumer_dead_letters, 0, NULL},
    {"POST", "/v1/consumers/{name}/dead-letters/{id}/retry",
     http_handle_consumer_dead_letter_retry, HTTP_ROUTE_JSON_BODY | HTTP_ROUTE_BODY_OPTIONAL, NULL},
};

const http_route_t *http_core_routes(size_t *n)
{
    *n = sizeof core_routes / sizeof core_routes[0];
    return core_routes;
}

int http_routes_add_core(http_router_t *r, chr_err_t *err)
{
    for (size_t i = 0; i < sizeof core_routes / sizeof core_routes[0]; i++) {
        int rc = http_router_add(r, &core_routes[i], err);
        if (rc) return rc;
    }
    return CHR_OK;
}
