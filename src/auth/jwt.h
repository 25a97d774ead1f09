/*
 * jwt.h - verifying bearer JWTs and signing our own access tokens.
 *
 * Verification (libjwt checks the signature; everything else is ours):
 *   - exactly three base64url segments, at most AUTH_JWT_MAX_BYTES; no
 *     "crit" header (we understand no extension);
 *   - the header's alg picks the key, and only configured pairs are tried:
 *     HS256 -> JWT_SECRET (then JWT_SECRET_PREVIOUS), RS256/ES256 -> the
 *     public key. "none", other algorithms, or an alg without its key are
 *     refused before any signature check, so an HS256 token is never
 *     checked against the public key's PEM text (the classic confusion);
 *   - exp is required; exp and nbf are checked with a leeway; iss and aud
 *     when configured (aud may be a string or an array);
 *   - claims (names configurable; a name with dots walks nested objects,
 *     e.g. "realm_access.roles"): sub (required string), roles (array of
 *     strings, or one string of space- or comma-separated roles), tenant_id
 *     (string). Oversized claims are refused rather than cut.
 * Tokens with a "chr_sid" claim (not OIDC's "sid", which identity providers
 * put in their own tokens), HS256-signed, are the access tokens issued by
 * /v1/auth/login (AUTH_LOGIN); the rest are AUTH_JWT.
 * Not here: caching verified tokens (token_cache.h), HTTP (http/auth.c).
 */
#ifndef CHRONICLE_AUTH_JWT_H
#define CHRONICLE_AUTH_JWT_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "auth/principal.h"
#include "core/error.h"

#define AUTH_JWT_MAX_BYTES 8192

typedef struct auth_jwt_cfg {
    const char *secret;          /* JWT_SECRET: HS256, signs and verifies; NULL = none */
    const char *secret_previous; /* JWT_SECRET_PREVIOUS: verifies only (rotation) */
    const char *public_key_pem;  /* the PEM text (RS256 or ES256 public key); NULL = none */
    const char *issuer;          /* JWT_ISSUER: required iss; NULL = not checked */
    const char *audience;        /* JWT_AUDIENCE: required in aud; NULL = not checked */
    const char *claim_sub;       /* default "sub" */
    const char *claim_roles;     /* default "roles" */
    const char *claim_tenant;    /* default "tenant_id" */
    int64_t leeway_s;            /* clock skew allowed on exp/nbf */
} auth_jwt_cfg_t;

typedef struct auth_jwt auth_jwt_t;

typedef enum auth_jwt_rc {
    AUTH_JWT_OK = 0,
    AUTH_JWT_MALFORMED,   /* not three base64url JSON segments, too long */
    AUTH_JWT_ALG,         /* alg none, unknown, or no key for it */
    AUTH_JWT_SIGNATURE,   /* the signature does not verify */
    AUTH_JWT_EXPIRED,     /* exp passed (or missing) */
    AUTH_JWT_NOT_YET,     /* nbf in the future */
    AUTH_JWT_ISSUER,      /* iss is not JWT_ISSUER */
    AUTH_JWT_AUDIENCE,    /* aud does not contain JWT_AUDIENCE */
    AUTH_JWT_CLAIMS,      /* sub missing, claims of the wrong type or too long */
} auth_jwt_rc_t;

/* A verifier (and signer, when cfg->secret is set) for cfg, which is
 * copied. Reports in err a public key that is not a PEM public key.
 * *out is new (auth_jwt_free). Returns CHR_OK, CHR_EINVAL or CHR_ENOMEM. */
int auth_jwt_new(const auth_jwt_cfg_t *cfg, auth_jwt_t **out, chr_err_t *err);
void auth_jwt_free(auth_jwt_t *j);

/* True when the verifier accepts any token at all (a secret or a key). */
bool auth_jwt_enabled(const auth_jwt_t *j);

/* True when the text looks like a JWT (two dots), to tell it from an API
 * key before trying. */
bool auth_jwt_looks_like(const char *token, size_t len);

/* Verifies token (len bytes) at time now (seconds since the epoch). On
 * AUTH_JWT_OK fills *p and *exp (the token's expiry). Otherwise *why is a
 * static sentence for logs ("expired", ...). Thread-safe. */
auth_jwt_rc_t auth_jwt_verify(const auth_jwt_t *j, const char *token, size_t len, int64_t now,
                              auth_principal_t *p, int64_t *exp, const char **why);

/* Signs claims (borrowed JSON object) with HS256 and JWT_SECRET. *out is a
 * new string (free()). CHR_EINVAL when no JWT_SECRET is configured. */
int auth_jwt_sign(const auth_jwt_t *j, const json_t *claims, char **out, chr_err_t *err);

/* The configured claim names (borrowed): where our own tokens put the
 * subject, roles and tenant so that verification finds them. */
void auth_jwt_claim_names(const auth_jwt_t *j, const char **sub, const char **roles,
                          const char **tenant);

/* The audience our tokens carry: JWT_AUDIENCE or NULL. Borrowed. */
const char *auth_jwt_audience(const auth_jwt_t *j);

/* The issuer our tokens carry: JWT_ISSUER, else "chronicle". Borrowed. */
const char *auth_jwt_issuer(const auth_jwt_t *j);

#endif
