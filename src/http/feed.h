/*
 * feed.h - the live feed: Server-Sent Events streams of the global log that
 * cost no thread and no CPU while idle.
 *
 * Each subscriber is an MHD callback response. Its content reader sends
 * what is pending; when there is nothing to send it suspends its own
 * connection (MHD_suspend_connection, allowed from a content reader) and
 * returns 0, which takes the connection out of MHD's event loop. Three
 * things resume suspended subscribers (MHD_resume_connection is
 * thread-safe): a store commit (store_on_commit), the heartbeat timer, and
 * shutdown. A resumed reader pages through the store with store_read_all
 * from its own last position, so a slow subscriber never holds others up
 * and never misses an event. See docs/http.md for the race analysis.
 * Not here: parsing the request (handlers_feed.c).
 */
#ifndef CHRONICLE_HTTP_FEED_H
#define CHRONICLE_HTTP_FEED_H

#include <microhttpd.h>
#include <stddef.h>

#include "engine/entity.h"
#include <stdint.h>

#include "core/error.h"
#include "store/store.h"

typedef struct http_feed http_feed_t;

/* Creates the feed over store: registers its commit listener and starts
 * the heartbeat timer (one comment line every heartbeat_ms to every open
 * stream). *out is freed with http_feed_free, which must come after
 * store_close (the store keeps calling the listener until then). */
int http_feed_new(store_t *store, int heartbeat_ms, http_feed_t **out, chr_err_t *err);

/* A new SSE response for conn streaming events with position > after,
 * optionally only of the n_types types (copied), and only those scope
 * (copied) may see (engine_event_visible; eng may be NULL). The caller queues it and
 * releases its reference. NULL when shutting down or out of memory. */
struct MHD_Response *http_feed_subscribe(http_feed_t *f, struct MHD_Connection *conn, int64_t after,
                                         const char *const *types, size_t n_types,
                                         const engine_t *eng, const access_scope_t *scope);

/* Ends every stream (each sends what it has, then finishes) and refuses new
 * ones; stops the heartbeat timer. After this no subscriber is suspended,
 * so MHD_stop_daemon may run. */
void http_feed_close(http_feed_t *f);

/* Frees the feed; call after MHD_stop_daemon and store_close. */
void http_feed_free(http_feed_t *f);

#endif
