/*
 * token_cache.h - verified bearer tokens by hash, so a repeated token costs
 * one keyed BLAKE2b digest and a table lookup instead of a signature check
 * and two JSON parses.
 *
 * A fixed table of slots, direct-mapped by the token's digest, each slot
 * guarded by one of a few striped mutexes. The caller digests the token
 * with a keyed hash (a random per-process key, so slots cannot be aimed
 * at): http/auth.c already has that digest from comparing API keys, so a
 * hit costs no second hash. An entry holds the principal and the token's
 * expiry; a hit after the expiry is a miss. A new token takes its slot over
 * (the old one is verified again when it comes back). Only tokens that
 * passed every check are stored: the cache never turns a rejection into an
 * acceptance. Thread-safe.
 */
#ifndef CHRONICLE_AUTH_TOKEN_CACHE_H
#define CHRONICLE_AUTH_TOKEN_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "auth/principal.h"

#define AUTH_TOKEN_DIGEST_LEN 32

typedef struct auth_token_cache auth_token_cache_t;

/* A cache of slots entries (rounded up to a power of two, at least 64).
 * NULL when out of memory. */
auth_token_cache_t *auth_token_cache_new(size_t slots);
void auth_token_cache_free(auth_token_cache_t *c);

/* True, filling *p, when the token of keyed digest d was stored with an
 * expiry >= now (seconds since the epoch). */
bool auth_token_cache_get(auth_token_cache_t *c, const unsigned char d[AUTH_TOKEN_DIGEST_LEN],
                          int64_t now, auth_principal_t *p);

/* Stores a verified token (by its keyed digest) with its principal until
 * exp (seconds). */
void auth_token_cache_put(auth_token_cache_t *c, const unsigned char d[AUTH_TOKEN_DIGEST_LEN],
                          int64_t exp, const auth_principal_t *p);

#endif
