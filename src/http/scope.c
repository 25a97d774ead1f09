/* scope.c - the request's caller for the engine; see scope.h. */
#include "http/scope.h"

#include <string.h>

#include "http/context.h"
#include "http/problem.h"

bool http_req_scope(http_req_t *req, access_scope_t *scope)
{
    const auth_principal_t *p = &req->principal;
    bool full = !req->ctx->auth || p->kind == AUTH_API_SECRET;
    *scope = (access_scope_t){.full = full,
                              .who = p->kind != AUTH_NONE ? p : NULL,
                              .tenant = p->tenant_id[0] ? p->tenant_id : NULL};
    const char *h = http_req_header(req, HTTP_TENANT_HEADER);
    if (!h) return true;
    char check[AUTH_SUB_MAX + 1];
    if (!auth_copy_claim(check, sizeof check, h, strlen(h)) || !*h) {
        http_problem_field(req, HTTP_P_BAD_REQUEST, HTTP_TENANT_HEADER,
                           "X-Tenant-Id: must be 1-255 bytes without control characters");
        return false;
    }
    if (full) {
        scope->tenant = h;
    } else if (!scope->tenant || strcmp(scope->tenant, h) != 0) {
        http_problem(req, HTTP_P_FORBIDDEN, NULL,
                     "X-Tenant-Id: only API_SECRET callers may act for a tenant; other "
                     "credentials carry their own");
        return false;
    }
    return true;
}
