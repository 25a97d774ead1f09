/*
 * app.h - serving an app definition: load it, bring its projections in
 * line with the store (rebuilding them when the layout changed), and route
 * its entities. server.c calls this once before listening.
 */
#ifndef CHRONICLE_HTTP_APP_H
#define CHRONICLE_HTTP_APP_H

#include "core/definition.h"
#include "engine/entity.h"
#include "http/handlers_entities.h"
#include "http/router.h"
#include "store/store.h"

typedef struct http_app {
    definition_t *def;
    engine_t eng;
    bool engine_open;
    http_app_routes_t *routes;
} http_app_t;

/* Loads the definition at path, opens the engine on s (logging a rebuild),
 * attaches the read model in reads when not NULL (split databases: gets and
 * lists read there) and adds its routes to r. On failure err says why (for
 * definition errors err->field is the JSON path) and nothing is left
 * allocated. */
int http_app_open(const char *path, store_t *s, store_t *reads, http_router_t *r,
                  http_app_t **out, chr_err_t *err);

/* Frees everything; call after the router and the server are gone. */
void http_app_close(http_app_t *app);

#endif
