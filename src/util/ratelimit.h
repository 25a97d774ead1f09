/*
 * ratelimit.h - token buckets per (class, client key): each bucket holds up
 * to `burst` tokens, refills at `rate` per second, and a request takes one.
 * An empty bucket refuses and says how long until the next token.
 *
 * Buckets live in a fixed table of 8-way sets picked by a keyed hash of the
 * key, so memory is bounded whatever clients send; a set that is full gives
 * up its least recently used bucket (a client evicted that way starts again
 * with a full bucket: with the default table that takes thousands of other
 * clients hashed into the same set). Time is passed in, so the arithmetic is
 * testable without clocks. Thread-safe (a mutex per group of sets).
 */
#ifndef CHRONICLE_UTIL_RATELIMIT_H
#define CHRONICLE_UTIL_RATELIMIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/error.h"

typedef struct ratelimit_rule {
    double rate;  /* tokens per second; 0 = unlimited */
    double burst; /* bucket size (>= 1 when rate > 0) */
} ratelimit_rule_t;

typedef struct ratelimit ratelimit_t;

/* Parses "RATE" or "RATE/BURST" (RATE tokens per second, a positive
 * decimal such as 0.5; BURST a positive integer, default max(1, RATE)), or
 * "0"/"off"/"" for unlimited. Returns CHR_OK or CHR_EINVAL (err names
 * `name`, the variable). */
int ratelimit_parse(const char *name, const char *text, ratelimit_rule_t *out, chr_err_t *err);

/* A table of about `buckets` buckets (rounded up to a power of two, at
 * least 64). NULL when out of memory. sodium_init must have run. */
ratelimit_t *ratelimit_new(size_t buckets);
void ratelimit_free(ratelimit_t *rl);

/* Takes a token from the bucket of (cls, key[0..len)) under rule at now_ns
 * (any monotonic clock, nanoseconds). True when allowed (always for an
 * unlimited rule); otherwise false with *retry_after_s the whole seconds
 * (>= 1) until a token is back. */
bool ratelimit_take(ratelimit_t *rl, int cls, const char *key, size_t len,
                    const ratelimit_rule_t *rule, int64_t now_ns, int64_t *retry_after_s);

#endif
