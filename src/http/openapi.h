/*
 * openapi.h - GET /openapi.json: an OpenAPI 3.1 document of everything the
 * server answers, generated at start from the same data the router is
 * built from: the core route table (routes.c), the routes an app
 * definition brings (handlers_entities.h: the generated /v1/{entity} API
 * and the app's own routes) and the definition's entities, fields and
 * commands (schemas). Built once with jansson, served as cached text.
 *
 * Not here: routing or auth (the route follows the same auth as every
 * other non-public route), validating requests against the document.
 */
#ifndef CHRONICLE_HTTP_OPENAPI_H
#define CHRONICLE_HTTP_OPENAPI_H

#include <stdbool.h>
#include <stddef.h>

#include "core/definition.h"
#include "core/error.h"
#include "http/handlers_entities.h"
#include "http/router.h"

#define HTTP_OPENAPI_PATH "/openapi.json"

typedef struct http_openapi http_openapi_t;

/* Builds the document. def and routes (borrowed for the call) may both be
 * NULL when no app definition is served; routes must have been built from
 * def. auth says whether API_SECRET is set (then the document declares
 * bearer auth on every route that is not public, and their 401s). On
 * success *out is new; the caller frees it with http_openapi_free once the
 * router and the HTTP daemon that serve it are gone. Returns CHR_OK or
 * CHR_ENOMEM (err says so). */
int http_openapi_build(const definition_t *def, const http_app_routes_t *routes, bool auth,
                       http_openapi_t **out, chr_err_t *err);

/* Adds GET /openapi.json, answering doc's text, to r. doc is borrowed and
 * must outlive r and the daemon. Returns what http_router_add returns. */
int http_openapi_add_route(http_router_t *r, const http_openapi_t *doc, chr_err_t *err);

/* The document as JSON text (borrowed from doc, NUL-terminated); *len its
 * length in bytes when len is not NULL. */
const char *http_openapi_text(const http_openapi_t *doc, size_t *len);

/* Releases doc; NULL is fine. */
void http_openapi_free(http_openapi_t *doc);

#endif
