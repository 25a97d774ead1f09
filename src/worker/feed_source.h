/*
 * feed_source.h - another chronicle instance's event feed as a consumer
 * source (consumer.h): pages of GET <url>/v1/events?after=N&limit=L
 * (&types=...) over libcurl, with its API secret as a bearer token. When
 * caught up it asks again every poll_ms (polling, not a held connection:
 * simple, and a restart of either side needs nothing special). A request
 * that fails (refused, timeout, non-200) is a failed read: the consumer
 * records it as its last error and retries with backoff.
 */
#ifndef CHRONICLE_WORKER_FEED_SOURCE_H
#define CHRONICLE_WORKER_FEED_SOURCE_H

#include "core/definition.h"
#include "worker/consumer.h"

/* A source following def at base url (copied; a trailing "/" is dropped),
 * authorised by secret (NULL: none; copied). */
int feed_source_new(const feed_def_t *def, const char *url, const char *secret,
                    consumer_source_t *out, chr_err_t *err);

/* Parses one event object of a /v1/events answer into ev (zeroed). */
int feed_event_from_json(const json_t *j, event_t *ev, chr_err_t *err);

#endif
