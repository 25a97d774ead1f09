/*
 * cron.h - 5-field cron expressions: parsing (with a precise message for
 * what is wrong) and the tick after / at or before a moment, in UTC or at a
 * fixed UTC offset. Pure: no clock, no I/O, no time-zone database.
 *
 * Syntax (docs/schedules.md): minute hour day-of-month month day-of-week,
 * each a comma-separated list of `*`, `*\/step`, `n`, `a-b`, `a-b/step`;
 * months JAN-DEC and weekdays SUN-SAT by name (case-insensitive), weekday 0
 * and 7 both Sunday; the macros @hourly @daily @weekly @monthly @yearly.
 * Day of month and day of week follow the classic (Vixie) rule: when both
 * are restricted (neither starts with `*`) a day matches if either does;
 * otherwise both must.
 */
#ifndef CHRONICLE_CORE_CRON_H
#define CHRONICLE_CORE_CRON_H

#include <stdbool.h>
#include <stdint.h>

#include "core/error.h"

typedef struct cron {
    uint64_t minutes; /* bit m: minute m (0-59) */
    uint32_t hours;   /* bit h: hour h (0-23) */
    uint32_t mdays;   /* bit d: day of month d (1-31) */
    uint16_t months;  /* bit m: month m (1-12) */
    uint8_t wdays;    /* bit d: weekday d (0 = Sunday .. 6) */
    bool mday_star;   /* the day-of-month field starts with '*' */
    bool wday_star;   /* the day-of-week field starts with '*' */
} cron_t;

/* Parses expr into *out. On failure returns CHR_EINVAL with err->msg saying
 * which field and what is wrong ("hour: 24 is out of range 0-23"); field is
 * left empty for the caller to fill. An expression that can never fire
 * (`0 0 31 4 *`, `0 0 30 2 *`) is refused too. */
int cron_parse(const char *expr, cron_t *out, chr_err_t *err);

/* The first tick strictly after `after` (seconds since the epoch) in *next,
 * the expression read in local time at UTC offset offset_s (seconds east).
 * Returns CHR_OK, or CHR_ENOTFOUND when there is none within 400 years
 * (cannot happen for a parsed expression). */
int cron_next(const cron_t *c, int64_t after, int32_t offset_s, int64_t *next);

/* The last tick at or before `at` in *prev (same conventions). */
int cron_prev(const cron_t *c, int64_t at, int32_t offset_s, int64_t *prev);

/* Parses a schedule's time zone: "UTC", "Z", or a fixed offset "+HH:MM" /
 * "-HH:MM" (up to 14:00). Returns CHR_OK with *offset_s, or CHR_EINVAL with
 * a message (IANA names such as "Europe/Berlin" are explained as not
 * supported). */
int cron_parse_zone(const char *zone, int32_t *offset_s, chr_err_t *err);

#endif
