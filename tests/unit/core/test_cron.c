/*
 * test_cron.c - unit tests of core/cron.h: every field form, names and
 * macros, the messages of invalid expressions, next and previous ticks
 * across month ends, leap years, year rollover, the day-of-month /
 * day-of-week rule, fixed UTC offsets, and a brute-force cross-check of
 * next/prev against a minute-by-minute scan.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "core/cron.h"
#include "core/timefmt.h"

static int64_t T(const char *rfc3339)
{
    int64_t us;
    if (time_parse_rfc3339(rfc3339, &us) != 0) fail_msg("bad time %s", rfc3339);
    return us / 1000000;
}

static cron_t P(const char *expr)
{
    cron_t c;
    chr_err_t err = {0};
    if (cron_parse(expr, &c, &err) != CHR_OK) fail_msg("\"%s\" rejected: %s", expr, err.msg);
    return c;
}

/* Seconds to "YYYY-MM-DDTHH:MM:SSZ" (the microseconds cut off). */
static const char *S(int64_t s, char *buf)
{
    char full[TIMEFMT_LEN + 1];
    time_format_us(s * 1000000, full);
    memcpy(buf, full, 19);
    buf[19] = 'Z';
    buf[20] = '\0';
    return buf;
}

static void next_is_(const char *expr, int32_t off, const char *after, const char *want, int line)
{
    cron_t c = P(expr);
    int64_t n;
    char buf[32];
    if (cron_next(&c, T(after), off, &n) != CHR_OK)
        fail_msg("line %d: \"%s\" after %s: no next tick", line, expr, after);
    if (strcmp(S(n, buf), want) != 0)
        fail_msg("line %d: \"%s\" after %s: next %s, want %s", line, expr, after, buf, want);
}

static void prev_is_(const char *expr, int32_t off, const char *at, const char *want, int line)
{
    cron_t c = P(expr);
    int64_t p;
    char buf[32];
    if (cron_prev(&c, T(at), off, &p) != CHR_OK)
        fail_msg("line %d: \"%s\" at %s: no previous tick", line, expr, at);
    if (strcmp(S(p, buf), want) != 0)
        fail_msg("line %d: \"%s\" at %s: prev %s, want %s", line, expr, at, buf, want);
}

#define NEXT(e, after, want) next_is_(e, 0, after, want, __LINE__)
#define NEXT_OFF(e, off, after, want) next_is_(e, off, after, want, __LINE__)
#define PREV(e, at, want) prev_is_(e, 0, at, want, __LINE__)

static void bad_(const char *expr, const char *want, int line)
{
    cron_t c;
    chr_err_t err = {0};
    if (cron_parse(expr, &c, &err) != CHR_EINVAL)
        fail_msg("line %d: \"%s\" accepted", line, expr ? expr : "(null)");
    if (strcmp(err.msg, want) != 0)
        fail_msg("line %d: \"%s\": message \"%s\", want \"%s\"", line, expr ? expr : "(null)",
                 err.msg, want);
}
#define BAD(e, want) bad_(e, want, __LINE__)

static void test_field_forms(void **state)
{
    (void)state;
    cron_t c = P("*/15 0-6/3 1,15,31 JAN-mar,Dec sun,7");
    assert_int_equal(c.minutes, (1ull << 0) | (1ull << 15) | (1ull << 30) | (1ull << 45));
    assert_int_equal(c.hours, (1u << 0) | (1u << 3) | (1u << 6));
    assert_int_equal(c.mdays, (1u << 1) | (1u << 15) | (1u << 31));
    assert_int_equal(c.months, (1u << 1) | (1u << 2) | (1u << 3) | (1u << 12));
    assert_int_equal(c.wdays, 1u); /* SUN and 7 are both Sunday */
    assert_false(c.mday_star);
    assert_false(c.wday_star);

    c = P("* * * * *");
    assert_int_equal(c.minutes, (1ull << 60) - 1);
    assert_int_equal(c.hours, (1u << 24) - 1);
    assert_int_equal(c.mdays, ((1u << 31) - 1) << 1);
    assert_int_equal(c.months, ((1u << 12) - 1) << 1);
    assert_int_equal(c.wdays, 0x7f);
    assert_true(c.mday_star);
    assert_true(c.wday_star);

    c = P("5 4 */10 * 5-7");
    assert_int_equal(c.minutes, 1ull << 5);
    assert_int_equal(c.hours, 1u << 4);
    assert_int_equal(c.mdays, (1u << 1) | (1u << 11) | (1u << 21) | (1u << 31));
    assert_int_equal(c.wdays, (1u << 5) | (1u << 6) | 1u);
    assert_true(c.mday_star);
    assert_false(c.wday_star);

    c = P("10-20/5 * * * MON-FRI");
    assert_int_equal(c.minutes, (1ull << 10) | (1ull << 15) | (1ull << 20));
    assert_int_equal(c.wdays, 0x3e);
    c = P("  0\t9 * *   wed ");
    assert_int_equal(c.wdays, 1u << 3);
    c = P("59 23 31 12 0-7");
    assert_int_equal(c.wdays, 0x7f);
    c = P("*/59 * * * *");
    assert_int_equal(c.minutes, (1ull << 0) | (1ull << 59));
}

static void test_macros(void **state)
{
    (void)state;
    const char *pairs[][2] = {
        {"@yearly", "0 0 1 1 *"},  {"@annually", "0 0 1 1 *"}, {"@monthly", "0 0 1 * *"},
        {"@weekly", "0 0 * * 0"},  {"@daily", "0 0 * * *"},    {"@midnight", "0 0 * * *"},
        {"@hourly", "0 * * * *"},
    };
    for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++) {
        cron_t a = P(pairs[i][0]), b = P(pairs[i][1]);
        assert_memory_equal(&a, &b, sizeof a);
    }
    NEXT("@hourly", "2026-03-01T10:00:00Z", "2026-03-01T11:00:00Z");
    NEXT("@weekly", "2026-03-01T10:00:00Z", "2026-03-08T00:00:00Z"); /* a Sunday */
}

static void test_invalid(void **state)
{
    (void)state;
    BAD(NULL, "is not a cron expression");
    BAD("", "has 0 fields; expected 5: minute hour day-of-month month day-of-week");
    BAD("* * * *", "has 4 fields; expected 5: minute hour day-of-month month day-of-week");
    BAD("*", "has 1 field; expected 5: minute hour day-of-month month day-of-week");
    BAD("* * * * * *", "has more than 5 fields; expected minute hour day-of-month month "
                       "day-of-week");
    BAD("60 * * * *", "minute: 60 is out of range 0-59");
    BAD("* 24 * * *", "hour: 24 is out of range 0-23");
    BAD("* * 0 * *", "day of month: 0 is out of range 1-31");
    BAD("* * 32 * *", "day of month: 32 is out of range 1-31");
    BAD("* * * 0 *", "month: 0 is out of range 1-12");
    BAD("* * * 13 *", "month: 13 is out of range 1-12");
    BAD("* * * * 8", "day of week: 8 is out of range 0-7");
    BAD("100 * * * *", "minute: \"100\" has a number out of range 0-59");
    BAD("5-1 * * * *", "minute: \"5-1\" is a backwards range");
    BAD("* * * * FRI-MON", "day of week: \"FRI-MON\" is a backwards range");
    BAD("*/0 * * * *", "minute: the step in \"*/0\" must be a number 1-59");
    BAD("*/ * * * *", "minute: the step in \"*/\" must be a number 1-59");
    BAD("*/60 * * * *", "minute: the step in \"*/60\" must be a number 1-59");
    BAD("*/5x * * * *", "minute: the step in \"*/5x\" must be a number 1-59");
    BAD("1/5 * * * *", "minute: \"1/5\" has a step without a range; write a-b/step or */step");
    BAD("a * * * *", "minute: \"a\" is not a number 0-59");
    BAD("-1 * * * *", "minute: \"-1\" is not a number 0-59");
    BAD("* * * JANUARY *", "month: \"JANUARY\" is not a number 1-12 or a name JAN-DEC");
    BAD("* * JAN * *", "day of month: \"JAN\" is not a number 1-31");
    BAD("MON * * * *", "minute: \"MON\" is not a number 0-59");
    BAD("* * * * SUNDAY", "day of week: \"SUNDAY\" is not a number 0-7 or a name SUN-SAT");
    BAD("1, * * * *", "minute: \"1,\" has an empty list item");
    BAD(",1 * * * *", "minute: \",1\" has an empty list item");
    BAD("1,,2 * * * *", "minute: \"1,,2\" has an empty list item");
    BAD("1-2-3 * * * *", "minute: \"1-2-3\" is not n, a-b, */step or a-b/step");
    BAD("1--2 * * * *", "minute: \"1--2\" is not a number 0-59");
    BAD("** * * * *", "minute: \"**\" is not n, a-b, */step or a-b/step");
    BAD("*-5 * * * *", "minute: \"*-5\" is not n, a-b, */step or a-b/step");
    BAD("@reboot", "unknown macro \"@reboot\"; expected @hourly, @daily, @midnight, @weekly, "
                   "@monthly, @yearly or @annually");
    BAD("@DAILY", "unknown macro \"@DAILY\"; expected @hourly, @daily, @midnight, @weekly, "
                  "@monthly, @yearly or @annually");
    BAD("@daily *", "unknown macro \"@daily *\"; expected @hourly, @daily, @midnight, @weekly, "
                    "@monthly, @yearly or @annually");
    /* can never fire */
    BAD("0 0 31 4 *", "never fires: no listed month has any of the listed days of month");
    BAD("0 0 30,31 2 *", "never fires: no listed month has any of the listed days of month");
    BAD("0 0 31 APR,JUN,SEP,NOV *",
        "never fires: no listed month has any of the listed days of month");
    BAD("0 0 30-31/2 2 *", "never fires: no listed month has any of the listed days of month");
    /* both restricted: the weekday alone fires it */
    P("0 0 31 4 MON");
    P("0 0 29 2 *"); /* leap years only */
}

static void test_next_basic(void **state)
{
    (void)state;
    NEXT("* * * * *", "2026-05-05T10:00:00Z", "2026-05-05T10:01:00Z");
    NEXT("* * * * *", "2026-05-05T10:00:59Z", "2026-05-05T10:01:00Z");
    NEXT("* * * * *", "2026-05-05T09:59:30Z", "2026-05-05T10:00:00Z");
    NEXT("*/15 * * * *", "2026-05-05T10:14:59Z", "2026-05-05T10:15:00Z");
    NEXT("*/15 * * * *", "2026-05-05T10:15:00Z", "2026-05-05T10:30:00Z");
    NEXT("*/15 * * * *", "2026-05-05T10:45:00Z", "2026-05-05T11:00:00Z");
    NEXT("0 9 * * *", "2026-05-05T09:00:00Z", "2026-05-06T09:00:00Z");
    NEXT("0 9 * * *", "2026-05-05T08:59:00Z", "2026-05-05T09:00:00Z");
    NEXT("30 8-18/2 * * *", "2026-05-05T12:31:00Z", "2026-05-05T14:30:00Z");
    NEXT("30 8-18/2 * * *", "2026-05-05T18:30:00Z", "2026-05-06T08:30:00Z");
    NEXT("0,30 * * * *", "2026-05-05T23:45:00Z", "2026-05-06T00:00:00Z");
    NEXT("0 0 1 JAN,JUL *", "2026-05-05T00:00:00Z", "2026-07-01T00:00:00Z");
}

static void test_month_ends_and_leap_years(void **state)
{
    (void)state;
    NEXT("0 0 31 * *", "2026-01-31T00:00:00Z", "2026-03-31T00:00:00Z"); /* no Feb 31 */
    NEXT("0 0 31 * *", "2026-04-01T00:00:00Z", "2026-05-31T00:00:00Z"); /* no Apr 31 */
    NEXT("0 0 31 * *", "2026-08-31T00:00:00Z", "2026-10-31T00:00:00Z");
    NEXT("0 0 30 * *", "2026-01-30T00:00:00Z", "2026-03-30T00:00:00Z");
    NEXT("0 0 29 2 *", "2026-01-01T00:00:00Z", "2028-02-29T00:00:00Z");
    NEXT("0 0 29 2 *", "2028-02-29T00:00:00Z", "2032-02-29T00:00:00Z");
    NEXT("0 0 29 2 *", "2097-01-01T00:00:00Z", "2104-02-29T00:00:00Z"); /* 2100 is no leap year */
    NEXT("0 0 29 2 *", "1999-01-01T00:00:00Z", "2000-02-29T00:00:00Z"); /* 2000 is */
    NEXT("59 23 28-29 2 *", "2024-02-28T23:59:00Z", "2024-02-29T23:59:00Z");
    NEXT("59 23 28-29 2 *", "2025-02-28T23:59:00Z", "2026-02-28T23:59:00Z");
    NEXT("0 12 1 3 *", "2024-02-29T12:00:00Z", "2024-03-01T12:00:00Z");
}

static void test_year_rollover(void **state)
{
    (void)state;
    NEXT("* * * * *", "2026-12-31T23:59:00Z", "2027-01-01T00:00:00Z");
    NEXT("0 0 1 1 *", "2026-01-01T00:00:00Z", "2027-01-01T00:00:00Z");
    NEXT("59 23 31 12 *", "2026-12-31T23:59:00Z", "2027-12-31T23:59:00Z");
    NEXT("0 0 * 1 *", "2026-02-01T00:00:00Z", "2027-01-01T00:00:00Z");
    PREV("0 0 * 12 *", "2027-01-15T00:00:00Z", "2026-12-31T00:00:00Z");
    PREV("59 23 31 12 *", "2027-01-01T00:00:00Z", "2026-12-31T23:59:00Z");
}

static void test_dom_dow_rule(void **state)
{
    (void)state;
    /* 2026-05-05 is a Tuesday. Both restricted: 13th OR Friday. */
    NEXT("0 0 13 * FRI", "2026-05-05T00:00:00Z", "2026-05-08T00:00:00Z"); /* Fri 8th */
    NEXT("0 0 13 * FRI", "2026-05-12T00:00:00Z", "2026-05-13T00:00:00Z"); /* Wed 13th */
    NEXT("0 0 13 * FRI", "2026-05-13T00:00:00Z", "2026-05-15T00:00:00Z");
    /* Only the weekday restricted: every Friday. */
    NEXT("0 0 * * 5", "2026-05-05T00:00:00Z", "2026-05-08T00:00:00Z");
    NEXT("0 0 * * 5", "2026-05-08T00:00:00Z", "2026-05-15T00:00:00Z");
    /* Only the day restricted: every 13th. */
    NEXT("0 0 13 * *", "2026-05-05T00:00:00Z", "2026-05-13T00:00:00Z");
    /* A star-led day field (*\/2) counts as unrestricted: AND. Odd days that
     * are Mondays: May 2026 has Mondays 4, 11, 18, 25; then June 1. */
    NEXT("0 0 */2 * MON", "2026-05-05T00:00:00Z", "2026-05-11T00:00:00Z");
    NEXT("0 0 */2 * MON", "2026-05-11T00:00:00Z", "2026-05-25T00:00:00Z");
    NEXT("0 0 */2 * MON", "2026-05-25T00:00:00Z", "2026-06-01T00:00:00Z");
    P("0 0 31 APR,JUN,SEP,NOV MON"); /* OR: every Monday of those months */
    NEXT("0 0 31 APR MON", "2026-04-01T00:00:00Z", "2026-04-06T00:00:00Z");
    /* Friday the 13th (a classic). Next after May 2026 is November 2026. */
    NEXT("0 0 13 * *", "2026-10-13T00:00:00Z", "2026-11-13T00:00:00Z");
    /* Sunday as 0, 7 and SUN */
    NEXT("0 0 * * 0", "2026-05-05T00:00:00Z", "2026-05-10T00:00:00Z");
    NEXT("0 0 * * 7", "2026-05-05T00:00:00Z", "2026-05-10T00:00:00Z");
    NEXT("0 0 * * sun", "2026-05-05T00:00:00Z", "2026-05-10T00:00:00Z");
    NEXT("0 9 * * MON-FRI", "2026-05-08T09:00:00Z", "2026-05-11T09:00:00Z");
    /* Feb 29 on a Monday (AND with a star weekday) */
    NEXT("0 0 29 2 *", "2032-03-01T00:00:00Z", "2036-02-29T00:00:00Z");
}

static void test_prev(void **state)
{
    (void)state;
    PREV("* * * * *", "2026-05-05T10:00:00Z", "2026-05-05T10:00:00Z"); /* at: inclusive */
    PREV("* * * * *", "2026-05-05T10:00:59Z", "2026-05-05T10:00:00Z");
    PREV("*/15 * * * *", "2026-05-05T10:14:59Z", "2026-05-05T10:00:00Z");
    PREV("0 9 * * *", "2026-05-05T08:59:59Z", "2026-05-04T09:00:00Z");
    PREV("0 0 31 * *", "2026-03-30T00:00:00Z", "2026-01-31T00:00:00Z");
    PREV("0 0 29 2 *", "2028-02-28T00:00:00Z", "2024-02-29T00:00:00Z");
    PREV("0 0 13 * FRI", "2026-05-12T00:00:00Z", "2026-05-08T00:00:00Z");
}

static void test_offsets(void **state)
{
    (void)state;
    int32_t off;
    chr_err_t err = {0};
    assert_int_equal(cron_parse_zone("UTC", &off, &err), CHR_OK);
    assert_int_equal(off, 0);
    assert_int_equal(cron_parse_zone("Z", &off, &err), CHR_OK);
    assert_int_equal(off, 0);
    assert_int_equal(cron_parse_zone("+05:30", &off, &err), CHR_OK);
    assert_int_equal(off, 19800);
    assert_int_equal(cron_parse_zone("-08:00", &off, &err), CHR_OK);
    assert_int_equal(off, -28800);
    assert_int_equal(cron_parse_zone("+14:00", &off, &err), CHR_OK);
    assert_int_equal(off, 50400);
    assert_int_equal(cron_parse_zone("Europe/Berlin", &off, &err), CHR_EINVAL);
    assert_string_equal(err.msg, "\"Europe/Berlin\": time-zone names are not supported (no "
                                 "daylight saving rules); use \"UTC\" or a fixed offset such "
                                 "as \"+01:00\"");
    const char *bad[] = {"+14:30", "+15:00", "+01:60", "0100", "+1:00", "utc", "", "+01:00x"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (cron_parse_zone(bad[i], &off, &err) != CHR_EINVAL) fail_msg("\"%s\" accepted", bad[i]);
        assert_string_equal(err.msg, "must be \"UTC\" or a fixed offset from -14:00 to +14:00 "
                                     "such as \"+05:30\"");
    }
    assert_int_equal(cron_parse_zone(NULL, &off, &err), CHR_EINVAL);

    /* 09:00 at +02:00 is 07:00 UTC; at -05:00 it is 14:00 UTC. */
    NEXT_OFF("0 9 * * *", 7200, "2026-05-05T00:00:00Z", "2026-05-05T07:00:00Z");
    NEXT_OFF("0 9 * * *", -18000, "2026-05-05T00:00:00Z", "2026-05-05T14:00:00Z");
    /* The local date decides the weekday: Monday 00:30 at +05:30 is
     * Sunday 19:00 UTC. */
    NEXT_OFF("30 0 * * MON", 19800, "2026-05-05T00:00:00Z", "2026-05-10T19:00:00Z");
    /* Local new year at -10:00 is 10:00 UTC on January 1st. */
    NEXT_OFF("0 0 1 1 *", -36000, "2026-06-01T00:00:00Z", "2027-01-01T10:00:00Z");
    prev_is_("0 0 1 1 *", 36000, "2027-01-01T00:00:00Z", "2026-12-31T14:00:00Z", __LINE__);
}

/* Next and prev agree with a minute-by-minute scan over two months that
 * matches with libc's gmtime_r, independently of cron.c's calendar. */
static bool matches_minute(const cron_t *c, int64_t s)
{
    time_t tt = (time_t)s;
    struct tm tm;
    gmtime_r(&tt, &tm);
    if (!(c->minutes >> tm.tm_min & 1) || !(c->hours >> tm.tm_hour & 1) ||
        !(c->months >> (tm.tm_mon + 1) & 1))
        return false;
    bool md = c->mdays >> tm.tm_mday & 1, wd = c->wdays >> tm.tm_wday & 1;
    return (c->mday_star || c->wday_star) ? md && wd : md || wd;
}

static void test_cross_check(void **state)
{
    (void)state;
    const char *exprs[] = {"*/7 */5 * * *", "0 0 13 * FRI", "15 3 */3 * 1-3", "0 12 29-31 * *",
                           "5 0 * 2 SAT,SUN"};
    int64_t start = T("2028-01-25T00:00:00Z"), end = T("2028-03-10T00:00:00Z");
    for (size_t i = 0; i < sizeof exprs / sizeof exprs[0]; i++) {
        cron_t c = P(exprs[i]);
        int64_t t = start, n;
        int ticks = 0;
        while (t < end) {
            assert_int_equal(cron_next(&c, t, 0, &n), CHR_OK);
            for (int64_t s = (t / 60 + 1) * 60; s < n; s += 60)
                if (matches_minute(&c, s)) fail_msg("\"%s\": next skipped a tick", exprs[i]);
            assert_true(matches_minute(&c, n));
            int64_t p;
            assert_int_equal(cron_prev(&c, n + 59, 0, &p), CHR_OK);
            assert_int_equal(p, n);
            assert_int_equal(cron_prev(&c, n - 1, 0, &p), CHR_OK);
            assert_true(p <= t);
            t = n;
            ticks++;
        }
        assert_true(ticks > 0);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_field_forms),
        cmocka_unit_test(test_macros),
        cmocka_unit_test(test_invalid),
        cmocka_unit_test(test_next_basic),
        cmocka_unit_test(test_month_ends_and_leap_years),
        cmocka_unit_test(test_year_rollover),
        cmocka_unit_test(test_dom_dow_rule),
        cmocka_unit_test(test_prev),
        cmocka_unit_test(test_offsets),
        cmocka_unit_test(test_cross_check),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
