/*
 * cron.c - cron expressions: the parser (one message per mistake) and the
 * next/previous tick, by walking calendar days in proleptic Gregorian
 * arithmetic (no libc time functions, so no TZ dependence). See cron.h.
 * Not here: running anything on a tick (engine/schedule.c).
 */
#include "core/cron.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

typedef struct cron_spec {
    const char *name; /* for messages */
    int lo, hi;
    const char *const *names; /* 3-letter names of lo.., or NULL */
    size_t n_names;
    const char *names_hint; /* "JAN-DEC" */
} cron_spec_t;

static const char *const month_names[] = {"JAN", "FEB", "MAR", "APR", "MAY", "JUN",
                                          "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"};
static const char *const wday_names[] = {"SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"};

static const cron_spec_t specs[5] = {
    {"minute", 0, 59, NULL, 0, NULL},
    {"hour", 0, 23, NULL, 0, NULL},
    {"day of month", 1, 31, NULL, 0, NULL},
    {"month", 1, 12, month_names, 12, "JAN-DEC"},
    {"day of week", 0, 7, wday_names, 7, "SUN-SAT"}, /* 0 and 7 are both Sunday */
};

/* Reads one value (a number of at most 2 digits or a 3-letter name) at *p,
 * before end. Returns CHR_OK and advances *p, or fails naming the token. */
static int read_value(const char **p, const char *end, const cron_spec_t *sp, int *v,
                      const char *tok, int tok_len, chr_err_t *err)
{
    const char *s = *p;
    if (s < end && isdigit((unsigned char)*s)) {
        int n = 0, digits = 0;
        while (s < end && isdigit((unsigned char)*s)) {
            if (++digits > 2)
                return chr_fail(err, CHR_EINVAL, "", "%s: \"%.*s\" has a number out of range %d-%d",
                                sp->name, tok_len, tok, sp->lo, sp->hi);
            n = n * 10 + (*s - '0');
            s++;
        }
        if (n < sp->lo || n > sp->hi)
            return chr_fail(err, CHR_EINVAL, "", "%s: %d is out of range %d-%d", sp->name, n,
                            sp->lo, sp->hi);
        *v = n;
        *p = s;
        return CHR_OK;
    }
    for (size_t i = 0; i < sp->n_names; i++) {
        if (end - s >= 3 && strncasecmp(s, sp->names[i], 3) == 0 &&
            (end - s == 3 || !isalpha((unsigned char)s[3]))) {
            *v = sp->lo + (int)i;
            *p = s + 3;
            return CHR_OK;
        }
    }
    if (sp->names)
        return chr_fail(err, CHR_EINVAL, "", "%s: \"%.*s\" is not a number %d-%d or a name %s",
                        sp->name, tok_len, tok, sp->lo, sp->hi, sp->names_hint);
    return chr_fail(err, CHR_EINVAL, "", "%s: \"%.*s\" is not a number %d-%d", sp->name, tok_len,
                    tok, sp->lo, sp->hi);
}

/* Parses one field (len bytes at s) into the bit mask *bits; *star tells
 * whether it starts with '*'. */
static int parse_field(const char *s, size_t len, const cron_spec_t *sp, uint64_t *bits, bool *star,
                       chr_err_t *err)
{
    const char *end = s + len;
    *bits = 0;
    *star = *s == '*';
    for (;;) {
        const char *item = s;
        const char *item_end = memchr(s, ',', (size_t)(end - s));
        if (!item_end) item_end = end;
        int ilen = (int)(item_end - item);
        if (ilen == 0)
            return chr_fail(err, CHR_EINVAL, "", "%s: \"%.*s\" has an empty list item", sp->name,
                            (int)len, end - len);
        int a, b, step = 1;
        bool ranged = true;
        if (*s == '*') {
            a = sp->lo;
            b = sp->hi;
            s++;
        } else {
            int rc = read_value(&s, item_end, sp, &a, item, ilen, err);
            if (rc) return rc;
            b = a;
            ranged = false;
            if (s < item_end && *s == '-') {
                s++;
                rc = read_value(&s, item_end, sp, &b, item, ilen, err);
                if (rc) return rc;
                if (b < a)
                    return chr_fail(err, CHR_EINVAL, "", "%s: \"%.*s\" is a backwards range",
                                    sp->name, ilen, item);
                ranged = true;
            }
        }
        if (s < item_end && *s == '/') {
            if (!ranged)
                return chr_fail(err, CHR_EINVAL, "",
                                "%s: \"%.*s\" has a step without a range; write a-b/step or "
                                "*/step",
                                sp->name, ilen, item);
            s++;
            int digits = 0;
            step = 0;
            while (s < item_end && isdigit((unsigned char)*s) && digits < 3) {
                step = step * 10 + (*s - '0');
                digits++;
                s++;
            }
            if (digits == 0 || s != item_end || step < 1 || step > sp->hi)
                return chr_fail(err, CHR_EINVAL, "", "%s: the step in \"%.*s\" must be a number 1-%d",
                                sp->name, ilen, item, sp->hi);
        }
        if (s != item_end)
            return chr_fail(err, CHR_EINVAL, "", "%s: \"%.*s\" is not n, a-b, */step or a-b/step",
                            sp->name, ilen, item);
        for (int v = a; v <= b; v += step)
            *bits |= 1ull << (sp->hi == 7 && v == 7 ? 0 : v);
        if (s == end) return CHR_OK;
        s++; /* ',' */
        if (s == end)
            return chr_fail(err, CHR_EINVAL, "", "%s: \"%.*s\" has an empty list item", sp->name,
                            (int)len, end - len);
    }
}

static const struct {
    const char *name, *expr;
} macros[] = {
    {"@yearly", "0 0 1 1 *"}, {"@annually", "0 0 1 1 *"}, {"@monthly", "0 0 1 * *"},
    {"@weekly", "0 0 * * 0"}, {"@daily", "0 0 * * *"},    {"@midnight", "0 0 * * *"},
    {"@hourly", "0 * * * *"},
};

static bool leap(int64_t y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static int month_days(int64_t y, int m)
{
    static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    return m == 2 && leap(y) ? 29 : days[m - 1];
}

int cron_parse(const char *expr, cron_t *out, chr_err_t *err)
{
    memset(out, 0, sizeof *out);
    if (!expr) return chr_fail(err, CHR_EINVAL, "", "is not a cron expression");
    if (*expr == '@') {
        for (size_t i = 0; i < sizeof macros / sizeof macros[0]; i++)
            if (strcmp(expr, macros[i].name) == 0) return cron_parse(macros[i].expr, out, err);
        return chr_fail(err, CHR_EINVAL, "",
                        "unknown macro \"%.40s\"; expected @hourly, @daily, @midnight, @weekly, "
                        "@monthly, @yearly or @annually",
                        expr);
    }
    const char *p = expr;
    int n = 0;
    uint64_t bits[5];
    bool stars[5];
    for (;;) {
        while (*p == ' ' || *p == '\t')
            p++;
        if (!*p) break;
        const char *start = p;
        while (*p && *p != ' ' && *p != '\t')
            p++;
        if (n == 5) {
            n++;
            break;
        }
        int rc = parse_field(start, (size_t)(p - start), &specs[n], &bits[n], &stars[n], err);
        if (rc) return rc;
        n++;
    }
    if (n != 5) {
        if (n > 5)
            return chr_fail(err, CHR_EINVAL, "",
                            "has more than 5 fields; expected minute hour day-of-month month "
                            "day-of-week");
        return chr_fail(err, CHR_EINVAL, "",
                        "has %d field%s; expected 5: minute hour day-of-month month day-of-week",
                        n, n == 1 ? "" : "s");
    }
    out->minutes = bits[0];
    out->hours = (uint32_t)bits[1];
    out->mdays = (uint32_t)bits[2];
    out->months = (uint16_t)bits[3];
    out->wdays = (uint8_t)bits[4];
    out->mday_star = stars[2];
    out->wday_star = stars[4];
    /* Unless the weekday alone can pick days (both restricted: OR rule),
     * some listed month must have a listed day (Feb 29 counts: leap years).
     * Every real date falls on every weekday within 28 years. */
    if (out->mday_star || out->wday_star) {
        bool any = false;
        for (int m = 1; m <= 12 && !any; m++)
            for (int d = 1; d <= month_days(2000, m) && !any; d++)
                any = (out->months >> m & 1) && (out->mdays >> d & 1);
        if (!any)
            return chr_fail(err, CHR_EINVAL, "",
                            "never fires: no listed month has any of the listed days of month");
    }
    return CHR_OK;
}

/* ---- calendar arithmetic (days since 1970-01-01, proleptic Gregorian) ---- */

static int64_t floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

/* H. Hinnant's civil_from_days. */
static void civil_from_days(int64_t z, int64_t *y, int *m, int *d)
{
    z += 719468;
    int64_t era = floor_div(z, 146097);
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    *d = (int)(doy - (153 * mp + 2) / 5 + 1);
    *m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = yoe + era * 400 + (*m <= 2);
}

static bool day_matches(const cron_t *c, int64_t day)
{
    int64_t y;
    int m, d;
    civil_from_days(day, &y, &m, &d);
    if (!(c->months >> m & 1)) return false;
    int wd = (int)(((day % 7) + 7 + 4) % 7); /* 1970-01-01 was a Thursday */
    bool md = c->mdays >> d & 1, w = c->wdays >> wd & 1;
    if (c->mday_star || c->wday_star) return md && w;
    return md || w;
}

#define CRON_SEARCH_DAYS (400 * 366)

int cron_next(const cron_t *c, int64_t after, int32_t offset_s, int64_t *next)
{
    int64_t minute = floor_div(after + offset_s, 60) + 1; /* local minutes since epoch */
    int64_t day = floor_div(minute, 1440);
    int from = (int)(minute - day * 1440);
    for (int64_t i = 0; i < CRON_SEARCH_DAYS; i++, day++, from = 0) {
        if (!day_matches(c, day)) continue;
        for (int h = from / 60; h < 24; h++) {
            if (!(c->hours >> h & 1)) continue;
            for (int m = h == from / 60 ? from % 60 : 0; m < 60; m++) {
                if (c->minutes >> m & 1) {
                    *next = (day * 1440 + h * 60 + m) * 60 - offset_s;
                    return CHR_OK;
                }
            }
        }
    }
    return CHR_ENOTFOUND;
}

int cron_prev(const cron_t *c, int64_t at, int32_t offset_s, int64_t *prev)
{
    int64_t minute = floor_div(at + offset_s, 60);
    int64_t day = floor_div(minute, 1440);
    int to = (int)(minute - day * 1440);
    for (int64_t i = 0; i < CRON_SEARCH_DAYS; i++, day--, to = 1439) {
        if (!day_matches(c, day)) continue;
        for (int h = to / 60; h >= 0; h--) {
            if (!(c->hours >> h & 1)) continue;
            for (int m = h == to / 60 ? to % 60 : 59; m >= 0; m--) {
                if (c->minutes >> m & 1) {
                    *prev = (day * 1440 + h * 60 + m) * 60 - offset_s;
                    return CHR_OK;
                }
            }
        }
    }
    return CHR_ENOTFOUND;
}

int cron_parse_zone(const char *zone, int32_t *offset_s, chr_err_t *err)
{
    *offset_s = 0;
    if (zone && (strcmp(zone, "UTC") == 0 || strcmp(zone, "Z") == 0)) return CHR_OK;
    if (zone && (zone[0] == '+' || zone[0] == '-') && strlen(zone) == 6 &&
        isdigit((unsigned char)zone[1]) && isdigit((unsigned char)zone[2]) && zone[3] == ':' &&
        isdigit((unsigned char)zone[4]) && isdigit((unsigned char)zone[5])) {
        int h = (zone[1] - '0') * 10 + (zone[2] - '0');
        int m = (zone[4] - '0') * 10 + (zone[5] - '0');
        if (m < 60 && (h < 14 || (h == 14 && m == 0))) {
            *offset_s = (int32_t)((h * 60 + m) * 60 * (zone[0] == '-' ? -1 : 1));
            return CHR_OK;
        }
    }
    if (zone && strchr(zone, '/'))
        return chr_fail(err, CHR_EINVAL, "",
                        "\"%.60s\": time-zone names are not supported (no daylight saving "
                        "rules); use \"UTC\" or a fixed offset such as \"+01:00\"",
                        zone);
    return chr_fail(err, CHR_EINVAL, "",
                    "must be \"UTC\" or a fixed offset from -14:00 to +14:00 such as \"+05:30\"");
}
