/*
 * event_json.h - events as JSON text for responses, without a round trip
 * through a JSON value model: stored data and metadata are already valid
 * JSON and are copied as they are (re-encoded compactly only when they
 * contain line breaks, which an SSE data line cannot carry).
 *   {"id","stream","type","version","position","data","metadata","timestamp"}
 * Same members and meaning as event_to_json in core/event.h.
 */
#ifndef CHRONICLE_HTTP_EVENT_JSON_H
#define CHRONICLE_HTTP_EVENT_JSON_H

#include "core/event.h"
#include "engine/entity.h"
#include "http/buf.h"

/* Events of entities with private fields are shown without them once an
 * app is served: server.c calls this at start (NULL = show data as is). */
void http_event_json_redact_with(const engine_t *eng);

/* Appends ev as one line of JSON to b (b->oom on allocation failure). */
void http_event_json(http_buf_t *b, const event_t *ev);

/* Appends [ev, ev, ...] for the list. */
void http_event_list_json(http_buf_t *b, const event_list_t *list);

#endif
