/*
 * handlers_entities.h - the routes an app definition brings: the generated
 * /v1/{entity} API and the definition's own routes, as route-table data
 * (one http_entity_route_t per route, handed to handlers via
 * http_route_t.data).
 */
#ifndef CHRONICLE_HTTP_HANDLERS_ENTITIES_H
#define CHRONICLE_HTTP_HANDLERS_ENTITIES_H

#include "core/definition.h"
#include "engine/entity.h"
#include "http/router.h"

typedef enum ent_action {
    EA_LIST,
    EA_CREATE,
    EA_GET,
    EA_UPDATE,
    EA_UPSERT,
    EA_DELETE,
    EA_HISTORY,
    EA_COMMAND,
} ent_action_t;

typedef struct http_entity_route {
    engine_t *eng;
    int entity;
    ent_action_t action;
    const command_def_t *command; /* EA_COMMAND */
    const route_def_t *app;       /* the app route's options; NULL for /v1 routes */
    const char *method;           /* static or from the definition */
    char *pattern;                /* owned */
    const char *key_param;        /* the path parameter carrying the key, or NULL */
    char *owned_key_param;        /* owned copy behind key_param, when it is */
} http_entity_route_t;

typedef struct http_app_routes http_app_routes_t;

/* Builds every route of eng's definition (/v1 and the app's own). *out is
 * new; free with http_app_routes_free after the router is gone. */
int http_app_routes_build(engine_t *eng, http_app_routes_t **out, chr_err_t *err);

/* Adds the built routes to r (they must outlive it). */
int http_app_routes_add(const http_app_routes_t *a, http_router_t *r, chr_err_t *err);

size_t http_app_routes_count(const http_app_routes_t *a);
const http_entity_route_t *http_app_route(const http_app_routes_t *a, size_t i);

/* Whether the definition's access rules make the route's operation public
 * (then it needs no credential). */
bool http_entity_route_public(const http_entity_route_t *er);

void http_app_routes_free(http_app_routes_t *a);

#endif
