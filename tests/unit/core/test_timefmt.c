/*
 * test_timefmt.c - unit tests of core/timefmt.h: RFC 3339 formatting and
 * parsing in UTC with microseconds, offsets, fractions, calendar validity
 * and rejection of anything that is not such a timestamp.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "core/timefmt.h"

/* 2026-01-02T03:04:05.123456Z */
#define T_2026 INT64_C(1767323045123456)

static void assert_formats(int64_t us, const char *want)
{
    char out[TIMEFMT_LEN + 1];
    memset(out, 'x', sizeof out);
    time_format_us(us, out);
    assert_int_equal(strlen(out), TIMEFMT_LEN);
    assert_string_equal(out, want);
}

static void assert_parses(const char *s, int64_t want)
{
    int64_t got = INT64_MIN;
    int rc = time_parse_rfc3339(s, &got);
    if (rc != 0) fail_msg("\"%s\" was rejected", s);
    if (got != want)
        fail_msg("\"%s\" parsed to %lld, want %lld", s, (long long)got, (long long)want);
}

static void assert_rejected(const char *s)
{
    int64_t got = 0;
    if (time_parse_rfc3339(s, &got) != -1)
        fail_msg("\"%s\" was accepted as %lld", s ? s : "(null)", (long long)got);
}

static void test_format(void **state)
{
    (void)state;
    assert_formats(0, "1970-01-01T00:00:00.000000Z");
    assert_formats(T_2026, "2026-01-02T03:04:05.123456Z");
    assert_formats(1, "1970-01-01T00:00:00.000001Z");
    assert_formats(-1, "1969-12-31T23:59:59.999999Z");
    assert_formats(INT64_C(951782400000000), "2000-02-29T00:00:00.000000Z");
    assert_formats(INT64_C(1709208000000000), "2024-02-29T12:00:00.000000Z");
    assert_formats(INT64_C(-2208988800000000), "1900-01-01T00:00:00.000000Z");
    assert_formats(INT64_C(253402300799999999), "9999-12-31T23:59:59.999999Z");
    assert_formats(INT64_C(1767225599999999), "2025-12-31T23:59:59.999999Z");
}

static void test_parse_utc(void **state)
{
    (void)state;
    assert_parses("2026-01-02T03:04:05.123456Z", T_2026);
    assert_parses("2026-01-02T03:04:05Z", T_2026 - 123456);
    assert_parses("1970-01-01T00:00:00Z", 0);
    assert_parses("1970-01-01T00:00:00.000001Z", 1);
    assert_parses("1969-12-31T23:59:59.999999Z", -1);
    assert_parses("2026-01-02t03:04:05.123456z", T_2026);   /* lower-case t and z */
    assert_parses("2026-01-02 03:04:05.123456Z", T_2026);   /* space separator */
    assert_parses("2026-01-02", INT64_C(1767312000000000)); /* plain date: midnight UTC */
    assert_parses("1900-01-01T00:00:00Z", INT64_C(-2208988800000000));
}

static void test_parse_offsets(void **state)
{
    (void)state;
    assert_parses("2026-01-02T05:04:05.123456+02:00", T_2026);
    assert_parses("2026-01-01T22:04:05.123456-05:00", T_2026);
    assert_parses("2026-01-02T08:34:05.123456+05:30", T_2026);
    assert_parses("2026-01-02T03:04:05.123456+00:00", T_2026);
    assert_parses("2026-01-02T03:04:05.123456-00:00", T_2026);
    assert_parses("2026-01-02T17:49:05.123456+14:45", T_2026);
    /* An offset can move the instant across a day, month and year. */
    assert_parses("2025-12-31T23:30:00-01:00", INT64_C(1767227400000000));
    assert_parses("1970-01-01T01:00:00+01:00", 0);
}

static void test_parse_fractions(void **state)
{
    (void)state;
    const int64_t base = T_2026 - 123456;
    assert_parses("2026-01-02T03:04:05.1Z", base + 100000);
    assert_parses("2026-01-02T03:04:05.12Z", base + 120000);
    assert_parses("2026-01-02T03:04:05.123Z", base + 123000);
    assert_parses("2026-01-02T03:04:05.000001Z", base + 1);
    assert_parses("2026-01-02T03:04:05.000000Z", base);
    /* Beyond microseconds, digits are accepted and truncated (up to 9). */
    assert_parses("2026-01-02T03:04:05.1234567Z", base + 123456);
    assert_parses("2026-01-02T03:04:05.123456789Z", base + 123456);
    assert_parses("2026-01-02T03:04:05.999999999Z", base + 999999);
    assert_parses("2026-01-02T05:04:05.5+02:00", base + 500000);
    assert_rejected("2026-01-02T03:04:05.1234567891Z"); /* 10 digits */
    assert_rejected("2026-01-02T03:04:05.Z");
    assert_rejected("2026-01-02T03:04:05.+02:00");
    assert_rejected("2026-01-02T03:04:05,5Z");
}

static void test_round_trips(void **state)
{
    (void)state;
    /* Deterministic pseudo-random instants from 1900 to 9999 (LCG). */
    uint64_t x = 0x9e3779b97f4a7c15ull;
    const int64_t lo = INT64_C(-2208988800000000), hi = INT64_C(253402300799999999);
    for (int i = 0; i < 20000; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        int64_t us = lo + (int64_t)((x >> 1) % (uint64_t)(hi - lo));
        char buf[TIMEFMT_LEN + 1];
        time_format_us(us, buf);
        int64_t back = 0;
        if (time_parse_rfc3339(buf, &back) != 0) fail_msg("own output \"%s\" rejected", buf);
        if (back != us) fail_msg("%lld -> \"%s\" -> %lld", (long long)us, buf, (long long)back);
    }
    /* Every day boundary of a leap year round-trips, including Feb 29. */
    for (int64_t d = 0; d < 366; d++) {
        int64_t us = (INT64_C(1704067200) + d * 86400) * 1000000; /* from 2024-01-01 */
        char buf[TIMEFMT_LEN + 1];
        time_format_us(us, buf);
        int64_t back = 0;
        assert_int_equal(time_parse_rfc3339(buf, &back), 0);
        assert_true(back == us);
    }
}

static void test_now(void **state)
{
    (void)state;
    struct timespec a, b;
    clock_gettime(CLOCK_REALTIME, &a);
    int64_t now = time_now_us();
    clock_gettime(CLOCK_REALTIME, &b);
    int64_t lo = (int64_t)a.tv_sec * 1000000 + a.tv_nsec / 1000;
    int64_t hi = (int64_t)b.tv_sec * 1000000 + b.tv_nsec / 1000;
    assert_true(now >= lo && now <= hi);
}

static void test_calendar_validity(void **state)
{
    (void)state;
    assert_rejected("2026-02-29");
    assert_rejected("2026-02-29T00:00:00Z");
    assert_rejected("2100-02-29T00:00:00Z"); /* divisible by 100, not by 400 */
    assert_rejected("1900-02-29");
    assert_parses("2024-02-29", INT64_C(1709164800000000));
    assert_parses("2024-02-29T12:00:00Z", INT64_C(1709208000000000));
    assert_parses("2000-02-29T00:00:00Z", INT64_C(951782400000000)); /* divisible by 400 */
    assert_rejected("2026-02-30");
    assert_rejected("2026-04-31");
    assert_rejected("2026-06-31");
    assert_rejected("2026-09-31");
    assert_rejected("2026-11-31");
    assert_parses("2026-12-31", INT64_C(1798675200000000));
    assert_rejected("2026-12-32");
    assert_rejected("2026-13-01");
    assert_rejected("2026-00-10");
    assert_rejected("2026-01-00");
    assert_rejected("2026-01-02T24:00:00Z");
    assert_rejected("2026-01-02T23:60:00Z");
    assert_rejected("2026-01-02T23:59:61Z");
    assert_rejected("2026-01-02T03:04:05+24:00");
    assert_rejected("2026-01-02T03:04:05+23:60");
}

static void test_garbage(void **state)
{
    (void)state;
    const char *bad[] = {
        "",
        "hello",
        "2026",
        "2026-01",
        "2026-1-02",
        "2026-01-2",
        "2026/01/02",
        "20260102",
        "20260102T030405Z",
        "26-01-02T03:04:05Z",
        " 2026-01-02",
        "2026-01-02 ",
        "2026-01-02X",
        "2026-01-02T",
        "2026-01-02T03:04Z",
        "2026-01-02T03:04:05", /* no offset */
        "2026-01-02T3:04:05Z",
        "2026-01-02T03:4:05Z",
        "2026-01-02T03:04:5Z",
        "2026-01-02T03-04-05Z",
        "2026-01-02T03:04:05ZZ",
        "2026-01-02T03:04:05Z ",
        "2026-01-02T03:04:05Zjunk",
        "2026-01-02T03:04:05+0200",
        "2026-01-02T03:04:05+02",
        "2026-01-02T03:04:05+02:0",
        "2026-01-02T03:04:05+02:00:00",
        "2026-01-02T03:04:05 +02:00",
        "2026-01-02T03:04:05UTC",
        "2026-0a-02",
        "-026-01-02",
        "+2026-01-02",
        "2026-01-02T03:04:05.12a3Z",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_rejected(bad[i]);
    assert_rejected(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_format),
        cmocka_unit_test(test_parse_utc),
        cmocka_unit_test(test_parse_offsets),
        cmocka_unit_test(test_parse_fractions),
        cmocka_unit_test(test_round_trips),
        cmocka_unit_test(test_now),
        cmocka_unit_test(test_calendar_validity),
        cmocka_unit_test(test_garbage),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
