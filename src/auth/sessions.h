/*
 * sessions.h - refresh tokens of /v1/auth/login, in a table of ours
 * ("chronicle_auth_refresh", created at start on either backend).
 *
 * A refresh token is 32 random bytes (base64url); only its BLAKE2b-256
 * digest is stored, with the user's key, a session ("family") id shared by
 * every token rotated from the same login, the expiry and a revoked flag.
 * Using a token rotates it: the old row is revoked and a new token issued
 * in one transaction, so each token works once. A revoked token presented
 * again means it was copied: the whole family is revoked. Logout revokes
 * the family. Every issue deletes the rows that have expired, so the table
 * holds live sessions only. Why a table and not events: docs/security.md.
 * Writes block the calling thread until their commit (store_commit).
 */
#ifndef CHRONICLE_AUTH_SESSIONS_H
#define CHRONICLE_AUTH_SESSIONS_H

#include <stdbool.h>
#include <stdint.h>

#include "core/error.h"
#include "store/store.h"

#define AUTH_REFRESH_TOKEN_LEN 43 /* base64url of 32 bytes */
#define AUTH_FAMILY_LEN 36        /* a UUID */

typedef struct auth_session {
    char user_key[256];
    char family[AUTH_FAMILY_LEN + 1];
    int64_t expires_at; /* seconds since the epoch */
    bool revoked;
} auth_session_t;

/* Creates the table when missing. */
int auth_sessions_init(store_t *s, chr_err_t *err);

/* Issues a refresh token for user_key valid until now + ttl_s. With
 * rotate (a token's text) the token is revoked in the same transaction and
 * the new one joins its family; CHR_ECONFLICT when it was revoked
 * meanwhile (used twice at once). Without, a new family starts. Writes the
 * token into token (NUL-terminated) and its family into family. */
int auth_sessions_issue(store_t *s, const char *user_key, int64_t now, int64_t ttl_s,
                        const char *rotate, const char *rotate_family,
                        char token[AUTH_REFRESH_TOKEN_LEN + 1], char family[AUTH_FAMILY_LEN + 1],
                        chr_err_t *err);

/* The session of a refresh token: CHR_ENOTFOUND when unknown (also for
 * text that cannot be a token). */
int auth_sessions_lookup(store_t *s, const char *token, auth_session_t *out, chr_err_t *err);

/* Revokes every token of the family. */
int auth_sessions_revoke_family(store_t *s, const char *family, chr_err_t *err);

#endif
