/*
 * metrics.h - process metrics in the Prometheus text format (0.0.4).
 *
 * HTTP request counters and latency histograms by route pattern, gauges for
 * in-flight requests and live-feed subscribers, and the store's counters
 * (read from the store at scrape time). Everything on the request path is a
 * relaxed atomic add into arrays sized at metrics_init: no locks, no
 * allocation. Routes are registered before serving starts.
 * Not here: pushing metrics anywhere, labels from user input.
 */
#ifndef CHRONICLE_UTIL_METRICS_H
#define CHRONICLE_UTIL_METRICS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "store/store.h"

#define METRICS_ROUTE_UNMATCHED 0 /* route id of requests no route matched */

/* Allocates the counters for up to max_routes route patterns (plus
 * "unmatched"). Call once before serving; returns 0 or -1 (out of memory). */
int metrics_init(size_t max_routes);

/* Releases what metrics_init allocated. */
void metrics_shutdown(void);

/* Registers a route pattern (copied) and returns its id (> 0), or -1 when
 * the table is full. Registering the same pattern again returns the same
 * id. Not thread-safe with itself: call while starting up. */
int metrics_route(const char *pattern);

/* Counts one finished request: method as sent, status as answered,
 * seconds from arrival to completion. Thread-safe, lock-free. */
void metrics_observe_request(int route_id, const char *method, unsigned status, double seconds);

/* Gauges: add delta (may be negative) and read. Thread-safe. */
void metrics_in_flight_add(int64_t delta);
int64_t metrics_in_flight(void);
void metrics_subscribers_add(int64_t delta);
int64_t metrics_subscribers(void);

/* Authentication and rate limiting. Classes of rate limits: */
typedef enum metrics_rate_class {
    METRICS_RATE_READ,
    METRICS_RATE_WRITE,
    METRICS_RATE_AUTH,
    METRICS_RATE_CLASSES
} metrics_rate_class_t;

/* The class's name ("read", "write", "auth"). */
const char *metrics_rate_class_name(metrics_rate_class_t c);

/* Counts a request refused with 429 in class c. Thread-safe. */
void metrics_rate_limited(metrics_rate_class_t c);

/* Counts a request refused with 401 (missing or bad credential). */
void metrics_auth_failure(void);

/* Counts a bearer JWT found in (hit) or verified for (miss) the cache. */
void metrics_jwt_cache(int hit);

/* Writes every metric in the Prometheus text format to out. store may be
 * NULL (then the store metrics are written as zero). */
void metrics_render(FILE *out, const store_counters_t *store);

#endif
