/*
 * audit_log.h - the audit-log effect: each event as one JSON line
 * appended to a file, rotated by size (path -> path.1 -> ... ->
 * path.<max_files>, the oldest dropped). Lines are fdatasync'ed before the
 * consumer's checkpoint moves past them (the effect's flush), so a line
 * whose event is checkpointed survives a crash; a crash between write and
 * checkpoint repeats lines (at-least-once: each line carries the event id
 * and position to deduplicate on). docs/worker.md.
 */
#ifndef CHRONICLE_WORKER_AUDIT_LOG_H
#define CHRONICLE_WORKER_AUDIT_LOG_H

#include "core/definition.h"
#include "engine/entity.h"
#include "worker/consumer.h"

/* An effect appending to path (copied) with a's rotation settings. eng
 * (may be NULL, borrowed) hides private fields. The file is opened at the
 * first event. */
int audit_log_effect_new(const audit_log_def_t *a, const char *path, const engine_t *eng,
                         consumer_effect_t *out, chr_err_t *err);

#endif
