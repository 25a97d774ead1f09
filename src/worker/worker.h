/*
 * worker.h - the worker role's consumers as an app definition declares
 * them: its webhooks, its audit log and its reactions, run by a consumer runtime
 * (consumer.h) when this instance runs the worker role (--role worker or
 * all). server.c starts it after the store opens and stops it before the
 * store closes.
 *
 * Not here: schedules and the projector (their own background roles).
 */
#ifndef CHRONICLE_WORKER_WORKER_H
#define CHRONICLE_WORKER_WORKER_H

#include "core/definition.h"
#include "engine/entity.h"
#include "store/store.h"
#include "util/config.h"

typedef struct worker worker_t;

/* A consumer the definition declares (borrowed from it). */
typedef struct worker_consumer_info {
    const char *name;
    const char *kind; /* "webhook", "audit_log" or "reaction" */
    const sink_filter_t *filter;
    const char *feed; /* a reaction's feed (another instance's); NULL = this instance's */
} worker_consumer_info_t;

/* The consumers def declares, in definition order (webhooks, the audit
 * log, then reactions), into out[0..max); returns how many there are. */
size_t worker_consumers(const definition_t *def, worker_consumer_info_t *out, size_t max);

/* Starts def's consumers when cfg runs the worker role; otherwise (or
 * without consumers) *out is NULL and nothing runs. A webhook whose URL or
 * secret variable is unset is not run: it is logged and recorded as its
 * consumer's last error; likewise a reaction whose feed's variables are
 * unset. eng (may be NULL) hides private fields and runs reactions' commands
 * (without it, reactions do not run). */
int worker_start(const config_t *cfg, store_t *s, const definition_t *def, engine_t *eng,
                 worker_t **out, chr_err_t *err);

/* Stops the consumers (saving their checkpoints) and frees w. NULL is fine. */
void worker_stop(worker_t *w);

/* Tells consumer name, when it runs in this process, to reload its state
 * now (after a reset or a dead-letter retry request through the API)
 * rather than at its next once-a-second check. Any thread; a no-op when
 * no worker runs here. */
void worker_poke(const char *name);

#endif
