/*
 * test_ratelimit.c - unit tests of util/ratelimit.h with a hand-driven
 * clock: a burst is allowed and the next request refused with the right
 * Retry-After, tokens come back at the configured rate, buckets of other
 * keys and classes are independent, unlimited rules never refuse, the
 * RATE/BURST parser, and that a full table evicts without failing.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <sodium.h>
#include <stdio.h>
#include <string.h>

#include "util/ratelimit.h"

#define SEC 1000000000LL

static bool take(ratelimit_t *rl, int cls, const char *key, const ratelimit_rule_t *r,
                 int64_t now, int64_t *retry)
{
    return ratelimit_take(rl, cls, key, strlen(key), r, now, retry);
}

static void test_burst_then_refuse(void **state)
{
    (void)state;
    ratelimit_t *rl = ratelimit_new(1024);
    assert_non_null(rl);
    ratelimit_rule_t r = {.rate = 2, .burst = 5};
    int64_t retry = -1, t = 100 * SEC;
    for (int i = 0; i < 5; i++) {
        assert_true(take(rl, 0, "alice", &r, t, &retry));
        assert_int_equal(retry, 0);
    }
    assert_false(take(rl, 0, "alice", &r, t, &retry));
    assert_int_equal(retry, 1); /* half a second to the next token, rounded up */
    /* half a second later exactly one token is back */
    assert_true(take(rl, 0, "alice", &r, t + SEC / 2, &retry));
    assert_false(take(rl, 0, "alice", &r, t + SEC / 2, &retry));
    /* a long pause refills to the burst, not beyond */
    t += 3600 * SEC;
    for (int i = 0; i < 5; i++)
        assert_true(take(rl, 0, "alice", &r, t, &retry));
    assert_false(take(rl, 0, "alice", &r, t, &retry));
    ratelimit_free(rl);
}

static void test_slow_rate_retry_after(void **state)
{
    (void)state;
    ratelimit_t *rl = ratelimit_new(64);
    ratelimit_rule_t r = {.rate = 0.1, .burst = 1}; /* one per ten seconds */
    int64_t retry;
    assert_true(take(rl, 2, "10.0.0.1", &r, 0, &retry));
    assert_false(take(rl, 2, "10.0.0.1", &r, 0, &retry));
    assert_int_equal(retry, 10);
    assert_false(take(rl, 2, "10.0.0.1", &r, 4 * SEC, &retry));
    assert_int_equal(retry, 6);
    assert_true(take(rl, 2, "10.0.0.1", &r, 10 * SEC, &retry));
    ratelimit_free(rl);
}

static void test_keys_and_classes_are_independent(void **state)
{
    (void)state;
    ratelimit_t *rl = ratelimit_new(1024);
    ratelimit_rule_t r = {.rate = 1, .burst = 2};
    int64_t retry;
    assert_true(take(rl, 0, "alice", &r, 0, &retry));
    assert_true(take(rl, 0, "alice", &r, 0, &retry));
    assert_false(take(rl, 0, "alice", &r, 0, &retry));
    /* bob and alice's other class still have full buckets */
    assert_true(take(rl, 0, "bob", &r, 0, &retry));
    assert_true(take(rl, 0, "bob", &r, 0, &retry));
    assert_true(take(rl, 1, "alice", &r, 0, &retry));
    assert_false(take(rl, 0, "alice", &r, 0, &retry));
    ratelimit_free(rl);
}

static void test_unlimited(void **state)
{
    (void)state;
    ratelimit_t *rl = ratelimit_new(64);
    ratelimit_rule_t r = {0};
    int64_t retry = 7;
    for (int i = 0; i < 10000; i++)
        assert_true(take(rl, 0, "x", &r, 0, &retry));
    assert_int_equal(retry, 0);
    ratelimit_free(rl);
}

static void test_full_table_evicts(void **state)
{
    (void)state;
    ratelimit_t *rl = ratelimit_new(64);
    ratelimit_rule_t r = {.rate = 1, .burst = 1};
    int64_t retry;
    char key[32];
    for (int i = 0; i < 5000; i++) {
        snprintf(key, sizeof key, "client-%d", i);
        assert_true(take(rl, 0, key, &r, i, &retry)); /* each new client: full bucket */
    }
    /* the most recent client is still tracked */
    assert_false(take(rl, 0, "client-4999", &r, 5000, &retry));
    ratelimit_free(rl);
}

static void test_parse(void **state)
{
    (void)state;
    ratelimit_rule_t r;
    chr_err_t err;
    assert_int_equal(ratelimit_parse("X", "10/20", &r, &err), CHR_OK);
    assert_true(r.rate == 10 && r.burst == 20);
    assert_int_equal(ratelimit_parse("X", "5", &r, &err), CHR_OK);
    assert_true(r.rate == 5 && r.burst == 5);
    assert_int_equal(ratelimit_parse("X", "0.5", &r, &err), CHR_OK);
    assert_true(r.rate == 0.5 && r.burst == 1);
    assert_int_equal(ratelimit_parse("X", "off", &r, &err), CHR_OK);
    assert_true(r.rate == 0);
    assert_int_equal(ratelimit_parse("X", NULL, &r, &err), CHR_OK);
    assert_true(r.rate == 0);
    static const char *const bad[] = {"-1", "abc", "10/", "10/0", "10/x", "1e999", "10/20/30",
                                      "nan", "5 "};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        chr_err_clear(&err);
        if (ratelimit_parse("RATE_LIMIT_READ", bad[i], &r, &err) != CHR_EINVAL)
            fail_msg("\"%s\" was accepted", bad[i]);
        assert_string_equal(err.field, "RATE_LIMIT_READ");
    }
}

int main(void)
{
    if (sodium_init() < 0) return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_burst_then_refuse),
        cmocka_unit_test(test_slow_rate_retry_after),
        cmocka_unit_test(test_keys_and_classes_are_independent),
        cmocka_unit_test(test_unlimited),
        cmocka_unit_test(test_full_table_evicts),
        cmocka_unit_test(test_parse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
