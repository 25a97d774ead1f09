/*
 * handlers_auth.h - logins against the definition's auth entity
 * (auth.users): POST /v1/auth/login, /v1/auth/refresh, /v1/auth/logout;
 * and GET /v1/auth/me (the caller's principal) whenever auth is on.
 *
 * Access tokens are HS256 JWTs signed with JWT_SECRET (AUTH_ACCESS_TTL
 * seconds, default 900) carrying sub (the user's key), roles, tenant_id,
 * iss, aud, iat, exp and chr_sid (the session); refresh tokens are opaque
 * (auth/sessions.h, AUTH_REFRESH_TTL seconds, default 30 days). Failures
 * look alike for unknown users and wrong passwords: same status, body and
 * cost (a dummy Argon2id verification). Rate-limited in the "auth" class.
 */
#ifndef CHRONICLE_HTTP_HANDLERS_AUTH_H
#define CHRONICLE_HTTP_HANDLERS_AUTH_H

#include "core/error.h"
#include "http/context.h"
#include "http/router.h"

/* Adds GET /v1/auth/me when any credential is configured. When the served
 * definition names auth.users: checks that JWT_SECRET is set, creates the
 * refresh-token table and adds the three login routes to r. Call once at start, after http_auth_new. */
int http_auth_routes_add(http_ctx_t *ctx, http_router_t *r, chr_err_t *err);

/* The routes above (static, borrowed): GET /v1/auth/me, then the login
 * routes, which carry HTTP_ROUTE_RATE_AUTH. For openapi.c. */
const http_route_t *http_auth_route_table(size_t *n);

#endif
