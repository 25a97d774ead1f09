/* metrics.c - lock-free counters and their Prometheus rendering; see metrics.h. */
#include "util/metrics.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

static const char *const methods[] = {"GET",   "HEAD",   "POST",    "PUT",
                                      "PATCH", "DELETE", "OPTIONS", "OTHER"};
#define N_METHODS (sizeof methods / sizeof methods[0])

/* Every status chronicle answers with; anything else is counted as "other". */
static const unsigned statuses[] = {200, 201, 204, 304, 400, 401, 403, 404, 405, 406, 408,
                                    409, 412, 413, 415, 422, 429, 431, 499, 500, 503};
#define N_STATUSES (sizeof statuses / sizeof statuses[0] + 1)

/* Latency buckets in seconds (upper bounds; +Inf is implicit). */
static const double buckets[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                 0.1,    0.25,  0.5,    1,     2.5,  5,     10};
#define N_BUCKETS (sizeof buckets / sizeof buckets[0] + 1)

typedef struct route_hist {
    _Atomic uint64_t bucket[N_BUCKETS]; /* not cumulative; summed when rendered */
    _Atomic uint64_t sum_us;
    _Atomic uint64_t count;
} route_hist_t;

static struct {
    size_t cap;                 /* routes including "unmatched" */
    size_t n;                   /* registered so far */
    char **patterns;            /* [cap] */
    _Atomic uint64_t *requests; /* [cap][N_METHODS][N_STATUSES] */
    route_hist_t *hist;         /* [cap] */
    _Atomic int64_t in_flight;
    _Atomic int64_t subscribers;
} m;

/* Not reset by metrics_init: plain counters with no table to size. */
static _Atomic uint64_t rate_limited[METRICS_RATE_CLASSES];
static _Atomic uint64_t auth_failures, jwt_hits, jwt_misses;

static const char *const rate_class_names[METRICS_RATE_CLASSES] = {"read", "write", "auth"};

const char *metrics_rate_class_name(metrics_rate_class_t c)
{
    return c < METRICS_RATE_CLASSES ? rate_class_names[c] : "read";
}

void metrics_rate_limited(metrics_rate_class_t c)
{
    if (c < METRICS_RATE_CLASSES) atomic_fetch_add_explicit(&rate_limited[c], 1, memory_order_relaxed);
}

void metrics_auth_failure(void)
{
    atomic_fetch_add_explicit(&auth_failures, 1, memory_order_relaxed);
}

void metrics_jwt_cache(int hit)
{
    atomic_fetch_add_explicit(hit ? &jwt_hits : &jwt_misses, 1, memory_order_relaxed);
}

int metrics_init(size_t max_routes)
{
    metrics_shutdown();
    m.cap = max_routes + 1;
    m.patterns = calloc(m.cap, sizeof *m.patterns);
    m.requests = calloc(m.cap * N_METHODS * N_STATUSES, sizeof *m.requests);
    m.hist = calloc(m.cap, sizeof *m.hist);
    if (!m.patterns || !m.requests || !m.hist) {
        metrics_shutdown();
        return -1;
    }
    m.patterns[0] = strdup("unmatched");
    if (!m.patterns[0]) {
        metrics_shutdown();
        return -1;
    }
    m.n = 1;
    return 0;
}

void metrics_shutdown(void)
{
    if (m.patterns)
        for (size_t i = 0; i < m.n; i++)
            free(m.patterns[i]);
    free(m.patterns);
    free((void *)m.requests);
    free(m.hist);
    m.patterns = NULL;
    m.requests = NULL;
    m.hist = NULL;
    m.n = m.cap = 0;
}

int metrics_route(const char *pattern)
{
    for (size_t i = 1; i < m.n; i++)
        if (strcmp(m.patterns[i], pattern) == 0) return (int)i;
    if (m.n >= m.cap) return -1;
    char *p = strdup(pattern);
    if (!p) return -1;
    m.patterns[m.n] = p;
    return (int)m.n++;
}

static size_t method_index(const char *method)
{
    for (size_t i = 0; i + 1 < N_METHODS; i++)
        if (method && strcmp(methods[i], method) == 0) return i;
    return N_METHODS - 1;
}

static size_t status_index(unsigned status)
{
    for (size_t i = 0; i + 1 < N_STATUSES; i++)
        if (statuses[i] == status) return i;
    return N_STATUSES - 1;
}

void metrics_observe_request(int route_id, const char *method, unsigned status, double seconds)
{
    if (!m.requests || route_id < 0 || (size_t)route_id >= m.n) route_id = 0;
    if (!m.requests) return;
    size_t r = (size_t)route_id;
    size_t idx = (r * N_METHODS + method_index(method)) * N_STATUSES + status_index(status);
    atomic_fetch_add_explicit(&m.requests[idx], 1, memory_order_relaxed);
    route_hist_t *h = &m.hist[r];
    size_t b = 0;
    while (b + 1 < N_BUCKETS && seconds > buckets[b])
        b++;
    atomic_fetch_add_explicit(&h->bucket[b], 1, memory_order_relaxed);
    uint64_t us = seconds > 0 ? (uint64_t)(seconds * 1e6) : 0;
    atomic_fetch_add_explicit(&h->sum_us, us, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->count, 1, memory_order_relaxed);
}

/* In-flight uses sequentially consistent operations: the shutdown drain
 * pairs it with its own flag to never miss the last completion. */
void metrics_in_flight_add(int64_t delta)
{
    atomic_fetch_add(&m.in_flight, delta);
}

int64_t metrics_in_flight(void)
{
    return atomic_load(&m.in_flight);
}

void metrics_subscribers_add(int64_t delta)
{
    atomic_fetch_add_explicit(&m.subscribers, delta, memory_order_relaxed);
}

int64_t metrics_subscribers(void)
{
    return atomic_load_explicit(&m.subscribers, memory_order_relaxed);
}

/* Writes s as a label value: backslash, quote and newline escaped. */
static void label(FILE *out, const char *s)
{
    for (; *s; s++) {
        if (*s == '\\' || *s == '"')
            fprintf(out, "\\%c", *s);
        else if (*s == '\n')
            fputs("\\n", out);
        else
            fputc(*s, out);
    }
}

static void render_requests(FILE *out)
{
    fputs("# HELP chronicle_http_requests_total HTTP requests answered, by method, route pattern "
          "and status.\n# TYPE chronicle_http_requests_total counter\n",
          out);
    for (size_t r = 0; r < m.n; r++) {
        for (size_t me = 0; me < N_METHODS; me++) {
            for (size_t s = 0; s < N_STATUSES; s++) {
                uint64_t v = atomic_load_explicit(
                    &m.requests[(r * N_METHODS + me) * N_STATUSES + s], memory_order_relaxed);
                if (!v) continue;
                fprintf(out, "chronicle_http_requests_total{method=\"%s\",route=\"", methods[me]);
                label(out, m.patterns[r]);
                if (s + 1 < N_STATUSES)
                    fprintf(out, "\",status=\"%u\"} %llu\n", statuses[s], (unsigned long long)v);
                else
                    fprintf(out, "\",status=\"other\"} %llu\n", (unsigned long long)v);
            }
        }
    }
}

static void render_durations(FILE *out)
{
    fputs("# HELP chronicle_http_request_duration_seconds Time from request arrival to the last "
          "byte answered, by route pattern.\n"
          "# TYPE chronicle_http_request_duration_seconds histogram\n",
          out);
    for (size_t r = 0; r < m.n; r++) {
        route_hist_t *h = &m.hist[r];
        uint64_t count = atomic_load_explicit(&h->count, memory_order_relaxed);
        if (!count) continue;
        uint64_t cum = 0;
        for (size_t b = 0; b < N_BUCKETS; b++) {
            cum += atomic_load_explicit(&h->bucket[b], memory_order_relaxed);
            fputs("chronicle_http_request_duration_seconds_bucket{route=\"", out);
            label(out, m.patterns[r]);
            if (b + 1 < N_BUCKETS)
                fprintf(out, "\",le=\"%g\"} %llu\n", buckets[b], (unsigned long long)cum);
            else
                fprintf(out, "\",le=\"+Inf\"} %llu\n", (unsigned long long)cum);
        }
        /* Buckets and count are read separately; a request finishing between
         * the reads must not make _count smaller than the +Inf bucket. */
        if (count < cum) count = cum;
        double sum = (double)atomic_load_explicit(&h->sum_us, memory_order_relaxed) / 1e6;
        fputs("chronicle_http_request_duration_seconds_sum{route=\"", out);
        label(out, m.patterns[r]);
        fprintf(out, "\"} %.6f\n", sum);
        fputs("chronicle_http_request_duration_seconds_count{route=\"", out);
        label(out, m.patterns[r]);
        fprintf(out, "\"} %llu\n", (unsigned long long)count);
    }
}

static void simple(FILE *out, const char *name, const char *type, const char *help, long long v)
{
    fprintf(out, "# HELP %s %s\n# TYPE %s %s\n%s %lld\n", name, help, name, type, name, v);
}

void metrics_render(FILE *out, const store_counters_t *store)
{
    store_counters_t zero;
    if (!store) {
        memset(&zero, 0, sizeof zero);
        store = &zero;
    }
    if (m.requests) {
        render_requests(out);
        render_durations(out);
    }
    simple(out, "chronicle_http_requests_in_flight", "gauge",
           "HTTP requests being handled, live-feed streams included.",
           (long long)metrics_in_flight());
    simple(out, "chronicle_feed_subscribers", "gauge", "Open live-feed (SSE) streams.",
           (long long)metrics_subscribers());
    fputs("# HELP chronicle_rate_limited_total Requests refused with 429, by route class.\n"
          "# TYPE chronicle_rate_limited_total counter\n",
          out);
    for (size_t c = 0; c < METRICS_RATE_CLASSES; c++)
        fprintf(out, "chronicle_rate_limited_total{class=\"%s\"} %llu\n", rate_class_names[c],
                (unsigned long long)atomic_load(&rate_limited[c]));
    simple(out, "chronicle_auth_failures_total", "counter",
           "Requests refused with 401 (missing or invalid credentials).",
           (long long)atomic_load(&auth_failures));
    simple(out, "chronicle_jwt_cache_hits_total", "counter",
           "Bearer JWTs answered from the verified-token cache.", (long long)atomic_load(&jwt_hits));
    simple(out, "chronicle_jwt_cache_misses_total", "counter",
           "Bearer JWTs whose signature and claims were checked.",
           (long long)atomic_load(&jwt_misses));
    simple(out, "chronicle_events_appended_total", "counter", "Events appended to the store.",
           (long long)store->events);
    simple(out, "chronicle_store_commits_total", "counter",
           "Store transactions committed (each may hold many units of work).",
           (long long)store->commits);
    simple(out, "chronicle_store_errors_total", "counter", "Store (I/O) errors.",
           (long long)store->errors);

    static const char *const le[] = {"1", "3", "7", "15", "31", "63", "127", "+Inf"};
    fputs("# HELP chronicle_store_commit_batch_size Units of work per store commit (group "
          "commit).\n# TYPE chronicle_store_commit_batch_size histogram\n",
          out);
    uint64_t cum = 0;
    for (size_t i = 0; i < 8; i++) {
        cum += store->batch_hist[i];
        fprintf(out, "chronicle_store_commit_batch_size_bucket{le=\"%s\"} %llu\n", le[i],
                (unsigned long long)cum);
    }
    fprintf(out, "chronicle_store_commit_batch_size_sum %llu\n", (unsigned long long)store->units);
    fprintf(out, "chronicle_store_commit_batch_size_count %llu\n", (unsigned long long)cum);
}
