/*
 * policy.h - the pure rules of delivery, shared by every consumer kind:
 * which events a consumer is given (the filter), how long it waits between
 * attempts (backoff with jitter), the id a receiver deduplicates on, and
 * the webhook signature. No I/O, no clock: callers pass time and
 * randomness in, so tests/unit/worker/test_policy.c pins them down.
 */
#ifndef CHRONICLE_WORKER_POLICY_H
#define CHRONICLE_WORKER_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/definition.h"
#include "core/event.h"

/* Whether ev passes f: its type is one of f->types (when any) and its
 * stream belongs to one of f->entities (stream "<entity>-<key>", when any). */
bool consumer_filter_match(const sink_filter_t *f, const char *type, const char *stream);

/* The delay before attempt number `attempt` + 1 after `attempt` failed
 * (attempt >= 1): d = min(max_ms, base_ms * 2^(attempt-1)), then "equal
 * jitter": d/2 + r * d/2 with r = rand01 in [0, 1). Never below 1 ms. */
int64_t consumer_backoff_ms(int attempt, int64_t base_ms, int64_t max_ms, double rand01);

#define CONSUMER_DELIVERY_ID_LEN 32

/* The delivery id of event_id for consumer name at reset epoch: 32 lower
 * hex characters of BLAKE2b-128("chronicle-delivery\0" name "\0" epoch
 * "\0" event_id). Stable across retries and restarts; a reset (new epoch)
 * gives redeliveries new ids. out has CONSUMER_DELIVERY_ID_LEN + 1 bytes. */
void consumer_delivery_id(const char *name, int64_t epoch, const char *event_id,
                          char out[CONSUMER_DELIVERY_ID_LEN + 1]);

#define WEBHOOK_SIGNATURE_MAX 96

/* The X-Chronicle-Signature value for body sent at unix time ts (seconds):
 * "t=<ts>,v1=<hex HMAC-SHA256(secret, "<ts>.<body>")>". Writes into out
 * (WEBHOOK_SIGNATURE_MAX bytes). The key is the secret's bytes, hashed with
 * SHA-256 first when longer than 64 bytes (as HMAC does). */
void webhook_signature(const char *secret, int64_t ts, const char *body, size_t len,
                       char out[WEBHOOK_SIGNATURE_MAX]);

#endif
