/*
 * auth.h - who is calling: the credentials a request may carry in
 * `Authorization: Bearer <credential>` and the principal each yields.
 *
 *   API_SECRET        comma-separated shared secrets; full access, no roles
 *   named API keys    API_KEYS_FILE (JSON) and the definition's
 *                     auth.api_keys (keys from environment variables), each
 *                     with a name, roles and an optional tenant_id
 *   JWTs              HS256 with JWT_SECRET (and JWT_SECRET_PREVIOUS while
 *                     rotating), RS256/ES256 with JWT_PUBLIC_KEY_FILE; see
 *                     auth/jwt.h for every check
 *
 * Secrets and keys are kept only as keyed BLAKE2b digests; a presented
 * credential is digested with the same per-process key and compared with
 * every secret and key with sodium_memcmp, without stopping at a match, so
 * neither contents nor lengths leak through timing. Verified JWTs are
 * cached by digest until they expire (auth/token_cache.h).
 * Not here: access rules per route or entity (later work), logins
 * (handlers_auth.c), rate limits (util/ratelimit.h).
 */
#ifndef CHRONICLE_HTTP_AUTH_H
#define CHRONICLE_HTTP_AUTH_H

#include <stdbool.h>
#include <stdint.h>

#include "auth/jwt.h"
#include "auth/principal.h"
#include "core/definition.h"
#include "core/error.h"

typedef struct http_auth http_auth_t;

/* Builds the credential set from secrets_csv (API_SECRET), def (may be
 * NULL: its auth.api_keys) and the environment (API_KEYS_FILE, JWT_SECRET,
 * JWT_SECRET_PREVIOUS, JWT_PUBLIC_KEY_FILE, JWT_ISSUER, JWT_AUDIENCE,
 * JWT_CLAIM_SUB, JWT_CLAIM_ROLES, JWT_CLAIM_TENANT, JWT_LEEWAY). *out is
 * new (http_auth_free), or NULL when no credential of any kind is
 * configured (auth disabled). sodium_init must have run. Returns CHR_OK,
 * CHR_EINVAL (err names the variable or file at fault) or CHR_ENOMEM. */
int http_auth_new(const char *secrets_csv, const definition_t *def, http_auth_t **out,
                  chr_err_t *err);

void http_auth_free(http_auth_t *a);

typedef enum http_auth_rc {
    HTTP_AUTH_OK = 0,
    HTTP_AUTH_MISSING, /* no Authorization header, or not "Bearer <token>" */
    HTTP_AUTH_INVALID, /* a credential that is not accepted; *why says why */
} http_auth_rc_t;

/* Checks the Authorization header value (may be NULL) at time now
 * (seconds since the epoch). On HTTP_AUTH_OK fills *p. *why is a static
 * reason for logs (never the credential). Thread-safe. */
http_auth_rc_t http_auth_check(http_auth_t *a, const char *authorization, int64_t now,
                               auth_principal_t *p, const char **why);

/* The JWT verifier/signer (NULL when JWTs are not configured). Borrowed. */
const auth_jwt_t *http_auth_jwt(const http_auth_t *a);

/* The bearer token of an Authorization header value: *tok and *n, or
 * false when the header is not "Bearer <token>". */
bool http_auth_bearer(const char *authorization, const char **tok, size_t *n);

#endif
