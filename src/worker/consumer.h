/*
 * consumer.h - durable consumers: named followers of an event feed that
 * run an effect (a webhook POST, an audit-log line, later a reaction) for
 * each matching event, in feed order, and move a checkpoint stored in the
 * store (consumer_store.h) only after the effect succeeded: at-least-once
 * delivery with per-consumer ordering.
 *
 * A consumer is four parts: a source (this store's feed by default; a
 * remote feed can be plugged in), a filter (sink_filter_t), an effect
 * (consumer_effect_t) and a checkpoint (its row in the consumers table).
 * Each runs on a thread of its own under a store lease "consumer:<name>",
 * so on a shared database one instance at a time runs it and another takes
 * over when the holder dies. A slow or dead receiver holds only its own
 * thread: other consumers and the HTTP API go on.
 *
 * Failed attempts are retried with exponential backoff and jitter
 * (policy.h); after max_attempts the event becomes a dead letter and the
 * consumer moves past it (docs/worker.md).
 *
 * Not here: what an effect does (webhook.c, audit_log.c), which consumers
 * an app definition declares (worker.c).
 */
#ifndef CHRONICLE_WORKER_CONSUMER_H
#define CHRONICLE_WORKER_CONSUMER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/definition.h"
#include "core/error.h"
#include "core/event.h"
#include "store/store.h"
#include "worker/policy.h"

/* What an effect is told about one delivery attempt (borrowed). */
typedef struct consumer_delivery {
    const char *consumer;    /* the consumer's name */
    const char *delivery_id; /* stable across retries (policy.h) */
    int attempt;             /* 1-based */
    const atomic_bool *stop; /* becomes true when the runtime stops: give up promptly */
} consumer_delivery_t;

/* A deliver result (not a chr_status_t): the attempt failed in a way that
 * retrying cannot fix (a command refused as invalid, a conflict, a missing
 * entity). The event becomes a dead letter at once, with err's reason. */
#define CONSUMER_GIVE_UP 2

/* The effect of a consumer. Called on the consumer's thread only. */
typedef struct consumer_effect {
    /* Delivers ev (borrowed). CHR_OK when done; CONSUMER_GIVE_UP (err
     * filled) dead-letters it now; anything else (err filled) is a failed
     * attempt, retried. */
    int (*deliver)(void *user, const event_t *ev, const consumer_delivery_t *d, chr_err_t *err);
    /* Makes what was delivered durable before the checkpoint moves past it
     * (e.g. fsync); NULL when deliver is durable by itself. */
    int (*flush)(void *user, chr_err_t *err);
    void (*free)(void *user); /* may be NULL */
    void *user;
} consumer_effect_t;

/* Where events come from. A NULL read means this store's global feed. */
typedef struct consumer_source {
    /* Appends to out up to limit events with position > after (only types
     * of f when it names any); *scanned gets a position up to which nothing
     * else matching exists (>= the last event returned, or after). */
    int (*read)(void *user, int64_t after, size_t limit, const sink_filter_t *f,
                event_list_t *out, int64_t *scanned, chr_err_t *err);
    /* Waits up to timeout_ms for an event after `after`; CHR_OK when one may
     * be there. */
    int (*wait)(void *user, int64_t after, int timeout_ms);
    /* Reads the event with id at position (a dead letter to retry); NULL =
     * this store's store_read_event. */
    int (*get)(void *user, const char *id, int64_t position, event_t *out, chr_err_t *err);
    void (*free)(void *user); /* may be NULL */
    void *user;
} consumer_source_t;

typedef struct consumer_spec {
    const char *name;            /* ^[a-z][a-z0-9_]{0,47}$ (copied) */
    const char *kind;            /* "webhook", "audit_log", ... (static) */
    const sink_filter_t *filter; /* borrowed: must outlive the runtime; NULL = all */
    int max_attempts;            /* >= 1 */
    int64_t backoff_ms, max_backoff_ms;
    size_t batch;                /* events per read; 0 = 1000 */
    consumer_effect_t effect;    /* owned by the runtime once added (freed at the end) */
    consumer_source_t source;    /* owned likewise; .read NULL = the store's feed */
} consumer_spec_t;

typedef struct consumer_runtime consumer_runtime_t;

/* A runtime of consumers over s (borrowed; must outlive the runtime). *out
 * is new; free it with consumer_runtime_free. */
int consumer_runtime_new(store_t *s, consumer_runtime_t **out, chr_err_t *err);

/* Adds a consumer (not started yet). Takes ownership of spec->effect and
 * spec->source even on failure. */
int consumer_runtime_add(consumer_runtime_t *rt, const consumer_spec_t *spec, chr_err_t *err);

/* Starts one thread per consumer. */
int consumer_runtime_start(consumer_runtime_t *rt, chr_err_t *err);

/* Stops every consumer (an attempt in flight is abandoned, not counted:
 * its event is delivered again later), saves checkpoints of what was
 * delivered, releases leases and frees everything. NULL is fine. */
void consumer_runtime_free(consumer_runtime_t *rt);

/* Wakes name's thread now (after a reset or a dead-letter retry request
 * in this process) instead of at its next periodic check. Unknown names
 * and NULL are ignored. */
void consumer_runtime_poke(consumer_runtime_t *rt, const char *name);

#endif
