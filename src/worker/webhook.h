/*
 * webhook.h - the webhook effect: POST each event as JSON to a URL with
 * libcurl, signed with HMAC-SHA256 (X-Chronicle-Signature, policy.h), with
 * a delivery id receivers deduplicate on and a per-request timeout. Any
 * answer but 2xx, and any transport error, is a failed attempt; the
 * consumer runtime retries and dead-letters (consumer.h). docs/worker.md
 * has the exact headers and a verification recipe.
 */
#ifndef CHRONICLE_WORKER_WEBHOOK_H
#define CHRONICLE_WORKER_WEBHOOK_H

#include "core/definition.h"
#include "engine/entity.h"
#include "worker/consumer.h"

/* An effect for w that posts to url, signing with secret (NULL: unsigned).
 * eng (may be NULL, borrowed) hides private fields. Copies url and secret. */
int webhook_effect_new(const webhook_def_t *w, const char *url, const char *secret,
                       const engine_t *eng, consumer_effect_t *out, chr_err_t *err);

#endif
