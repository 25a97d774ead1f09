/*
 * schedule.h - the scheduler: a background thread that emits the events of
 * the definition's schedules (docs/schedules.md) on their cron ticks.
 *
 * It runs under the store lease "schedules", so among all instances sharing
 * a database one fires at a time; each tick's event has an id derived from
 * (app, schedule, row key, tick time), so a tick fired twice anyway (a lease
 * handed over mid-pass, a restart) is an idempotent re-append. Ticks missed
 * while no instance ran fire once, as one event carrying the latest missed
 * tick and how many were missed.
 *
 * Not here: cron syntax and arithmetic (core/cron.c), what the events mean
 * to anyone (consumers, webhooks).
 */
#ifndef CHRONICLE_ENGINE_SCHEDULE_H
#define CHRONICLE_ENGINE_SCHEDULE_H

#include "core/definition.h"
#include "store/store.h"

/* The lease the scheduler runs under. */
#define SCHEDULES_LEASE "schedules"

/* Test-only: the name of the environment variable naming a file whose
 * content (an RFC 3339 time) is the scheduler's "now". The scheduler reads
 * it every SCHEDULES_FAKE_POLL_MS instead of sleeping until the next tick. */
#define SCHEDULES_CLOCK_ENV "CHRONICLE_TEST_CLOCK_FILE"
#define SCHEDULES_FAKE_POLL_MS 50

typedef struct schedules schedules_t;

/* Starts the scheduler for def's schedules on s (both borrowed; they must
 * outlive schedules_free). With no schedules, *out is NULL and nothing runs.
 * Returns CHR_OK, or CHR_ENOMEM / CHR_ESTORE (the thread could not start). */
int schedules_start(const definition_t *def, store_t *s, schedules_t **out, chr_err_t *err);

/* Stops the thread (waiting for a pass in progress) and gives the lease up.
 * Call before store_close. NULL is fine. */
void schedules_stop(schedules_t *sch);

/* Frees the scheduler. Call after store_close: the store's commit listener
 * points at it until then. NULL is fine. */
void schedules_free(schedules_t *sch);

#endif
