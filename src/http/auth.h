/*
 * auth.h - bearer API secrets (API_SECRET, comma-separated).
 *
 * Secrets are kept only as keyed BLAKE2b digests; a presented token is
 * digested with the same per-process key and compared with every secret
 * using sodium_memcmp, without stopping at the first match, so neither the
 * secrets' contents nor their lengths leak through timing.
 * Not here: JWTs, per-route access rules (later work).
 */
#ifndef CHRONICLE_HTTP_AUTH_H
#define CHRONICLE_HTTP_AUTH_H

#include <stdbool.h>

#include "core/error.h"

typedef struct http_auth http_auth_t;

/* Parses secrets_csv ("s1,s2"; blanks around items ignored). *out is a new
 * auth (free with http_auth_free), or NULL when the list holds no secret
 * (auth disabled). sodium_init must have run. Returns CHR_OK, CHR_EINVAL
 * or CHR_ENOMEM. */
int http_auth_new(const char *secrets_csv, http_auth_t **out, chr_err_t *err);

void http_auth_free(http_auth_t *a);

/* True when the Authorization header value (may be NULL) is "Bearer
 * <token>" (scheme case-insensitive) with token one of the secrets. */
bool http_auth_check(const http_auth_t *a, const char *authorization);

#endif
