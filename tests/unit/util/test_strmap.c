/*
 * test_strmap.c - unit tests of util/strmap.h: put/get/replace/delete, growth,
 * deletion inside probe runs (every other key must stay findable), clear and
 * free with reuse, and that keys are copied.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/strmap.h"

static void key_of(int i, char *buf, size_t size)
{
    snprintf(buf, size, "key-%d", i);
}

static void assert_has(const strmap_t *m, const char *key, int64_t want)
{
    int64_t v = INT64_MIN;
    if (!strmap_get(m, key, &v)) fail_msg("key \"%s\" not found", key);
    if (v != want) fail_msg("key \"%s\" = %lld, want %lld", key, (long long)v, (long long)want);
}

static void assert_missing(const strmap_t *m, const char *key)
{
    int64_t v = 12345;
    if (strmap_get(m, key, &v))
        fail_msg("key \"%s\" found (%lld) but should be absent", key, (long long)v);
    assert_true(v == 12345); /* untouched when absent */
}

static void test_empty_map(void **state)
{
    (void)state;
    strmap_t m = {0};
    assert_missing(&m, "anything");
    assert_missing(&m, "");
    strmap_del(&m, "anything");
    assert_int_equal(m.len, 0);
    strmap_clear(&m);
    assert_int_equal(m.len, 0);
    strmap_free(&m);
    assert_null(m.slots);
}

static void test_put_get_replace_del(void **state)
{
    (void)state;
    strmap_t m = {0};
    assert_int_equal(strmap_put(&m, "alpha", 1), 0);
    assert_int_equal(strmap_put(&m, "beta", -2), 0);
    assert_int_equal(strmap_put(&m, "", 3), 0); /* the empty key is a key */
    assert_int_equal(strmap_put(&m, "gamma", INT64_MAX), 0);
    assert_int_equal(m.len, 4);
    assert_has(&m, "alpha", 1);
    assert_has(&m, "beta", -2);
    assert_has(&m, "", 3);
    assert_has(&m, "gamma", INT64_MAX);
    assert_missing(&m, "alph");
    assert_missing(&m, "alphaa");
    assert_missing(&m, "ALPHA");

    /* Replacing keeps the count. */
    assert_int_equal(strmap_put(&m, "alpha", 10), 0);
    assert_int_equal(m.len, 4);
    assert_has(&m, "alpha", 10);

    strmap_del(&m, "beta");
    assert_int_equal(m.len, 3);
    assert_missing(&m, "beta");
    assert_has(&m, "alpha", 10);
    assert_has(&m, "", 3);
    assert_has(&m, "gamma", INT64_MAX);

    /* Deleting an absent key changes nothing. */
    strmap_del(&m, "beta");
    strmap_del(&m, "never");
    assert_int_equal(m.len, 3);

    /* A deleted key can come back. */
    assert_int_equal(strmap_put(&m, "beta", 20), 0);
    assert_has(&m, "beta", 20);
    assert_int_equal(m.len, 4);
    strmap_free(&m);
}

static void test_keys_are_copied(void **state)
{
    (void)state;
    strmap_t m = {0};
    char buf[32];
    snprintf(buf, sizeof buf, "stream-1");
    assert_int_equal(strmap_put(&m, buf, 7), 0);
    snprintf(buf, sizeof buf, "stream-2");
    assert_has(&m, "stream-1", 7);
    assert_missing(&m, "stream-2");
    strmap_free(&m);
}

static void test_grow(void **state)
{
    (void)state;
    strmap_t m = {0};
    enum { N = 20000 };
    char k[32];
    for (int i = 0; i < N; i++) {
        key_of(i, k, sizeof k);
        assert_int_equal(strmap_put(&m, k, (int64_t)i * 3), 0);
        assert_int_equal(m.len, (size_t)i + 1);
        /* Open addressing needs a free slot: the table stays below full. */
        assert_true(m.len < m.cap);
    }
    assert_true((m.cap & (m.cap - 1)) == 0); /* power of two */
    for (int i = 0; i < N; i++) {
        key_of(i, k, sizeof k);
        assert_has(&m, k, (int64_t)i * 3);
    }
    key_of(N, k, sizeof k);
    assert_missing(&m, k);
    strmap_free(&m);
    assert_int_equal(m.len, 0);
    assert_int_equal(m.cap, 0);
}

/* Deleting from the middle of probe runs must not hide keys placed after the
 * deleted one. With ~700 keys in a table, runs of colliding keys are certain;
 * after every single deletion every remaining key is looked up. */
static void test_delete_keeps_others_findable(void **state)
{
    (void)state;
    enum { N = 700 };
    strmap_t m = {0};
    char k[32];
    for (int i = 0; i < N; i++) {
        key_of(i, k, sizeof k);
        assert_int_equal(strmap_put(&m, k, i), 0);
    }
    /* A fixed permutation of 0..N-1 (LCG-driven Fisher-Yates). */
    int order[N];
    for (int i = 0; i < N; i++)
        order[i] = i;
    uint32_t x = 12345;
    for (int i = N - 1; i > 0; i--) {
        x = x * 1664525u + 1013904223u;
        int j = (int)(x % (uint32_t)(i + 1));
        int t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
    char deleted[N] = {0};
    for (int d = 0; d < N; d++) {
        key_of(order[d], k, sizeof k);
        strmap_del(&m, k);
        deleted[order[d]] = 1;
        assert_int_equal(m.len, (size_t)(N - d - 1));
        for (int i = 0; i < N; i++) {
            key_of(i, k, sizeof k);
            if (deleted[i])
                assert_missing(&m, k);
            else
                assert_has(&m, k, i);
        }
    }
    strmap_free(&m);
}

/* The same, but deleting every third key and then reinserting them. */
static void test_delete_then_reinsert(void **state)
{
    (void)state;
    enum { N = 5000 };
    strmap_t m = {0};
    char k[32];
    for (int i = 0; i < N; i++) {
        key_of(i, k, sizeof k);
        assert_int_equal(strmap_put(&m, k, i), 0);
    }
    for (int i = 0; i < N; i += 3) {
        key_of(i, k, sizeof k);
        strmap_del(&m, k);
    }
    assert_int_equal(m.len, N - (N + 2) / 3);
    for (int i = 0; i < N; i++) {
        key_of(i, k, sizeof k);
        if (i % 3 == 0)
            assert_missing(&m, k);
        else
            assert_has(&m, k, i);
    }
    for (int i = 0; i < N; i += 3) {
        key_of(i, k, sizeof k);
        assert_int_equal(strmap_put(&m, k, -i), 0);
    }
    assert_int_equal(m.len, N);
    for (int i = 0; i < N; i++) {
        key_of(i, k, sizeof k);
        assert_has(&m, k, i % 3 == 0 ? -i : i);
    }
    strmap_free(&m);
}

static void test_clear_and_reuse(void **state)
{
    (void)state;
    strmap_t m = {0};
    char k[32];
    for (int i = 0; i < 300; i++) {
        key_of(i, k, sizeof k);
        assert_int_equal(strmap_put(&m, k, i), 0);
    }
    size_t cap = m.cap;
    strmap_clear(&m);
    assert_int_equal(m.len, 0);
    assert_int_equal(m.cap, cap); /* the allocation is kept */
    for (int i = 0; i < 300; i++) {
        key_of(i, k, sizeof k);
        assert_missing(&m, k);
    }
    assert_int_equal(strmap_put(&m, "again", 5), 0);
    assert_has(&m, "again", 5);
    assert_int_equal(m.len, 1);

    /* free, then use again. */
    strmap_free(&m);
    assert_null(m.slots);
    assert_int_equal(m.len, 0);
    assert_missing(&m, "again");
    assert_int_equal(strmap_put(&m, "reborn", 6), 0);
    assert_has(&m, "reborn", 6);
    strmap_free(&m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty_map),
        cmocka_unit_test(test_put_get_replace_del),
        cmocka_unit_test(test_keys_are_copied),
        cmocka_unit_test(test_grow),
        cmocka_unit_test(test_delete_keeps_others_findable),
        cmocka_unit_test(test_delete_then_reinsert),
        cmocka_unit_test(test_clear_and_reuse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
