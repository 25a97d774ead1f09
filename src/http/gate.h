/*
 * gate.h - what every request passes before its handler runs: CORS
 * (preflights answered here, headers added to every answer), then its
 * credential (auth.h) becomes req->principal, then its rate limit. One
 * place, so no route can skip a step.
 *
 * Configuration (environment, read once at start):
 *   CORS_ORIGINS        comma-separated origins ("https://app.example.com"),
 *                       or "*"; unset = no CORS headers, preflights 405
 *   CORS_MAX_AGE        seconds a preflight may be cached (default 600)
 *   RATE_LIMIT_READ     GET/HEAD requests          } RATE[/BURST] per second
 *   RATE_LIMIT_WRITE    other methods              } per client; default off
 *   RATE_LIMIT_AUTH     /v1/auth/login, refresh, logout: default 5/20, per address
 * A client is its API key, else its token's subject, else (no credential,
 * and always for /v1/auth routes) its IP address. /health and /ready are never
 * limited.
 * Not here: what a credential is worth (auth.c), access rules (later).
 */
#ifndef CHRONICLE_HTTP_GATE_H
#define CHRONICLE_HTTP_GATE_H

#include <stdbool.h>

#include "core/error.h"
#include "http/request.h"

typedef struct http_gate http_gate_t;

/* Reads the configuration above. *out is new (http_gate_free). Returns
 * CHR_OK, CHR_EINVAL (err names the variable) or CHR_ENOMEM. */
int http_gate_new(http_gate_t **out, chr_err_t *err);
void http_gate_free(http_gate_t *g);

/* Runs the gate for a routed request (req->match filled). Returns true
 * when the request may go on to its route (or to the routing errors), with
 * req->principal set; false when it has been answered (preflight, 401,
 * 429). */
bool http_gate_pass(http_req_t *req);

/* Answers 401 (unauthorized problem with detail, WWW-Authenticate: Bearer)
 * and counts it in chronicle_auth_failures_total. */
void http_unauthorized(http_req_t *req, const char *detail);

#endif
