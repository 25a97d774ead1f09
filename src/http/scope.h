/*
 * scope.h - the caller of a request as the engine's access rules and
 * tenancy see it (core/access.h): built from the request's principal.
 *
 *   no credential configured (auth disabled)  full access
 *   API_SECRET                                full access
 *   any other credential                      its subject, roles and tenant
 *
 * A full-access caller may name a tenant with the X-Tenant-Id header: it is
 * then confined to that tenant like the tenant's own users, and creates
 * rows of tenant-scoped entities in it. Other callers' X-Tenant-Id headers
 * are refused (403) unless they name the caller's own tenant.
 */
#ifndef CHRONICLE_HTTP_SCOPE_H
#define CHRONICLE_HTTP_SCOPE_H

#include <stdbool.h>

#include "core/access.h"
#include "http/request.h"

#define HTTP_TENANT_HEADER "X-Tenant-Id"

/* Fills *scope (borrowing from req). Returns false after answering (a bad
 * X-Tenant-Id). */
bool http_req_scope(http_req_t *req, access_scope_t *scope);

#endif
