/*
 * event_body.h - an event as the JSON text consumers hand on (webhook
 * bodies, audit-log lines): the same object as the feed's
 * ({id, stream, type, version, position, data, metadata, timestamp}),
 * compact, on one line, with private fields removed as the feed does.
 */
#ifndef CHRONICLE_WORKER_EVENT_BODY_H
#define CHRONICLE_WORKER_EVENT_BODY_H

#include "core/event.h"
#include "engine/entity.h"

/* A new string (caller frees), NULL when out of memory. eng may be NULL
 * (no app: nothing is private). */
char *worker_event_body(const engine_t *eng, const event_t *ev);

#endif
