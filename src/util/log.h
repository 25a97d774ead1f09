/*
 * log.h - structured logging: one JSON object per line on stderr.
 *
 * Every line has "ts" (RFC 3339 UTC, microseconds), "level" and "msg", then
 * the caller's fields in order:
 *   {"ts":"2026-11-22T02:14:29.123456Z","level":"info","msg":"request",
 *    "request_id":"...","status":201,"duration_ms":1.234}
 * Lines below the configured level are dropped before any formatting.
 * Thread-safe without a lock: each line is built in a local buffer and
 * written with one write(2) of at most LOG_LINE_MAX bytes (<= PIPE_BUF, so
 * lines from different threads never interleave, even on a pipe). When
 * stderr is a pipe nobody reads, lines are dropped (and the count reported
 * later) rather than blocking the server.
 * Not here: log files, rotation, sampling.
 */
#ifndef CHRONICLE_UTIL_LOG_H
#define CHRONICLE_UTIL_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define LOG_LINE_MAX 4096

typedef enum log_level {
    LOG_DEBUG = 0,
    LOG_INFO = 1,
    LOG_WARN = 2,
    LOG_ERROR = 3,
    LOG_ALWAYS = 4, /* lifecycle lines ("listening", "stopped"): never filtered, shown as info */
} log_level_t;

typedef enum log_kind { LOG_KIND_STR, LOG_KIND_INT, LOG_KIND_NUM, LOG_KIND_BOOL } log_kind_t;

/* One key/value of a log line. Strings are borrowed for the call only; any
 * bytes are accepted (invalid UTF-8 becomes U+FFFD, controls are escaped). */
typedef struct log_field {
    const char *key;
    log_kind_t kind;
    const char *s;
    int64_t i;
    double d;
} log_field_t;

#define LOG_S(k, v) ((log_field_t){.key = (k), .kind = LOG_KIND_STR, .s = (v)})
#define LOG_I(k, v) ((log_field_t){.key = (k), .kind = LOG_KIND_INT, .i = (int64_t)(v)})
#define LOG_F(k, v) ((log_field_t){.key = (k), .kind = LOG_KIND_NUM, .d = (double)(v)})
#define LOG_B(k, v) ((log_field_t){.key = (k), .kind = LOG_KIND_BOOL, .i = (v) ? 1 : 0})

/* Logs msg with one or more fields: log_at(LOG_INFO, "listening",
 * LOG_S("address", host), LOG_I("port", port)). Fields are not evaluated
 * when the level is filtered out. */
#define log_at(level, msg, ...)                                                                    \
    do {                                                                                           \
        if (log_enabled(level)) {                                                                  \
            const log_field_t log_fields_[] = {__VA_ARGS__};                                       \
            log_emit((level), (msg), log_fields_, sizeof log_fields_ / sizeof log_fields_[0]);     \
        }                                                                                          \
    } while (0)

/* Sets the minimum level written (default LOG_INFO). */
void log_set_level(log_level_t level);

/* Parses "debug", "info", "warn" (or "warning") or "error". Returns 0 and
 * sets *out, or -1 for anything else. */
int log_parse_level(const char *name, log_level_t *out);

/* True when a line at level would be written. */
bool log_enabled(log_level_t level);

/* Writes one line (when level passes the filter). fields may be NULL when n
 * is 0. */
void log_emit(log_level_t level, const char *msg, const log_field_t *fields, size_t n);

/* Writes a line with no fields. */
void log_msg(log_level_t level, const char *msg);

#endif
