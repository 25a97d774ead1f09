/*
 * timefmt.h - RFC 3339 timestamps in UTC with microsecond precision.
 *
 * Times are int64 microseconds since the Unix epoch everywhere inside
 * chronicle; text appears only at the edges (JSON, HTTP, CLI).
 */
#ifndef CHRONICLE_CORE_TIMEFMT_H
#define CHRONICLE_CORE_TIMEFMT_H

#include <stddef.h>
#include <stdint.h>

#define TIMEFMT_LEN 27 /* "2026-01-02T03:04:05.123456Z" without NUL */

/* The current wall-clock time in microseconds since the epoch. */
int64_t time_now_us(void);

/* Formats us as "YYYY-MM-DDTHH:MM:SS.ffffffZ" into out (>= 28 bytes). */
void time_format_us(int64_t us, char out[TIMEFMT_LEN + 1]);

/* Parses an RFC 3339 date-time (any offset, 0-9 fraction digits; also a
 * plain date "YYYY-MM-DD" meaning midnight UTC). Returns 0 and sets *us, or
 * -1 when s is not such a timestamp. */
int time_parse_rfc3339(const char *s, int64_t *us);

#endif
