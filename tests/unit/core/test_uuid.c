/*
 * test_uuid.c - unit tests of core/uuid.h: the UUIDv7 text form, version and
 * variant bits, the encoded timestamp, strict monotonicity (also within one
 * millisecond and across threads) and the syntax check.
 *
 * The generator keeps process-wide state (the last millisecond), so the
 * tests that look at encoded timestamps run first and move forward in time.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/uuid.h"

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* The 48-bit millisecond timestamp of a UUIDv7 in text form. */
static uint64_t uuid_ms(const char *u)
{
    char hex[13];
    memcpy(hex, u, 8);
    memcpy(hex + 8, u + 9, 4);
    hex[12] = '\0';
    return (uint64_t)strtoull(hex, NULL, 16);
}

/* Asserts the canonical lower-case text form of a version 7, RFC 9562 variant. */
static void assert_v7_form(const char *u)
{
    assert_int_equal(strlen(u), UUID_STR_LEN);
    for (int i = 0; i < UUID_STR_LEN; i++) {
        char c = u[i];
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (c != '-') fail_msg("%s: expected '-' at %d", u, i);
        } else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
            fail_msg("%s: '%c' at %d is not lower-case hex", u, c, i);
        }
    }
    if (u[14] != '7') fail_msg("%s: version nibble is '%c', not 7", u, u[14]);
    if (!strchr("89ab", u[19])) fail_msg("%s: variant nibble '%c' is not 10xx", u, u[19]);
    assert_true(uuid_is_valid(u));
}

static void test_generate_format_and_now(void **state)
{
    (void)state;
    for (int i = 0; i < 1000; i++) {
        char u[UUID_STR_LEN + 1];
        uint64_t before = now_ms();
        uuid_v7_generate(u);
        uint64_t after = now_ms();
        assert_v7_form(u);
        /* Within one millisecond the counter may borrow the next ms, hence +1
         * per 4096 ids at most; 1000 ids stay within one borrowed ms. */
        uint64_t ms = uuid_ms(u);
        if (ms < before || ms > after + 1)
            fail_msg("%s encodes %llu ms, outside [%llu, %llu]", u, (unsigned long long)ms,
                     (unsigned long long)before, (unsigned long long)after + 1);
    }
}

static void test_generate_at_encodes_timestamp(void **state)
{
    (void)state;
    /* A moment in the future, so the generator's last-ms state is below it. */
    uint64_t ms = now_ms() + 60000;
    char a[UUID_STR_LEN + 1], b[UUID_STR_LEN + 1];
    uuid_v7_generate_at(a, ms);
    assert_v7_form(a);
    assert_true(uuid_ms(a) == ms);
    char want[16];
    snprintf(want, sizeof want, "%012llx", (unsigned long long)ms);
    assert_memory_equal(a, want, 8);
    assert_memory_equal(a + 9, want + 8, 4);

    /* A second id in the same millisecond keeps the timestamp, counts up. */
    uuid_v7_generate_at(b, ms);
    assert_true(uuid_ms(b) == ms);
    assert_true(strcmp(a, b) < 0);

    /* A later millisecond is encoded as given. */
    uuid_v7_generate_at(b, ms + 12345);
    assert_true(uuid_ms(b) == ms + 12345);
    assert_v7_form(b);
}

static void test_monotonic_100k(void **state)
{
    (void)state;
    char prev[UUID_STR_LEN + 1], cur[UUID_STR_LEN + 1];
    uuid_v7_generate(prev);
    for (int i = 0; i < 100000; i++) {
        uuid_v7_generate(cur);
        if (strcmp(prev, cur) >= 0) fail_msg("call %d: %s is not after %s", i, cur, prev);
        memcpy(prev, cur, sizeof prev);
    }
    assert_v7_form(cur);
}

static void test_monotonic_same_millisecond(void **state)
{
    (void)state;
    /* 100k ids for one fixed millisecond: far more than the 12-bit counter
     * holds, so the generator must borrow later milliseconds and still never
     * go backwards or repeat. */
    uint64_t ms = now_ms() + 120000;
    char prev[UUID_STR_LEN + 1], cur[UUID_STR_LEN + 1];
    uuid_v7_generate_at(prev, ms);
    assert_true(uuid_ms(prev) == ms);
    for (int i = 0; i < 100000; i++) {
        uuid_v7_generate_at(cur, ms);
        if (strcmp(prev, cur) >= 0) fail_msg("call %d: %s is not after %s", i, cur, prev);
        assert_true(cur[14] == '7');
        assert_non_null(strchr("89ab", cur[19]));
        memcpy(prev, cur, sizeof prev);
    }
    /* Borrowing is bounded: 100k ids need at most ~25 extra milliseconds. */
    assert_true(uuid_ms(cur) >= ms && uuid_ms(cur) <= ms + 100);

    /* An earlier timestamp than the last one never makes ids go backwards. */
    uuid_v7_generate_at(cur, ms - 5000);
    assert_true(strcmp(prev, cur) < 0);
    memcpy(prev, cur, sizeof prev);
    uuid_v7_generate_at(cur, 1);
    assert_true(strcmp(prev, cur) < 0);
}

static void test_random_bits_differ(void **state)
{
    (void)state;
    /* The last 62 bits are random: 200 ids should not share their last 12
     * hex digits (a collision has probability ~2^-33). */
    enum { N = 200 };
    char ids[N][UUID_STR_LEN + 1];
    for (int i = 0; i < N; i++)
        uuid_v7_generate(ids[i]);
    for (int i = 0; i < N; i++)
        for (int j = i + 1; j < N; j++)
            if (strcmp(ids[i] + 24, ids[j] + 24) == 0)
                fail_msg("ids %s and %s share their random tail", ids[i], ids[j]);
}

enum { THREADS = 4, PER_THREAD = 20000 };

typedef struct worker {
    char (*ids)[UUID_STR_LEN + 1];
    int not_increasing; /* failures seen inside the thread (no cmocka asserts there) */
} worker_t;

static void *gen_thread(void *arg)
{
    worker_t *w = arg;
    for (int i = 0; i < PER_THREAD; i++) {
        uuid_v7_generate(w->ids[i]);
        if (i > 0 && strcmp(w->ids[i - 1], w->ids[i]) >= 0) w->not_increasing++;
    }
    return NULL;
}

static int cmp_id(const void *a, const void *b)
{
    return strcmp((const char *)a, (const char *)b);
}

static void test_unique_across_threads(void **state)
{
    (void)state;
    char(*all)[UUID_STR_LEN + 1] = calloc(THREADS * PER_THREAD, UUID_STR_LEN + 1);
    assert_non_null(all);
    pthread_t th[THREADS];
    worker_t w[THREADS];
    for (int t = 0; t < THREADS; t++) {
        w[t].ids = all + t * PER_THREAD;
        w[t].not_increasing = 0;
        assert_int_equal(pthread_create(&th[t], NULL, gen_thread, &w[t]), 0);
    }
    for (int t = 0; t < THREADS; t++)
        pthread_join(th[t], NULL);
    for (int t = 0; t < THREADS; t++)
        assert_int_equal(w[t].not_increasing, 0);
    qsort(all, THREADS * PER_THREAD, UUID_STR_LEN + 1, cmp_id);
    for (int i = 1; i < THREADS * PER_THREAD; i++)
        if (strcmp(all[i - 1], all[i]) == 0) fail_msg("duplicate id %s across threads", all[i]);
    free(all);
}

static void test_is_valid(void **state)
{
    (void)state;
    assert_true(uuid_is_valid("0190a1b2-c3d4-7e5f-8a6b-7c8d9e0f1a2b"));
    assert_true(uuid_is_valid("0190A1B2-C3D4-7E5F-8A6B-7C8D9E0F1A2B"));
    assert_true(uuid_is_valid("00000000-0000-0000-0000-000000000000")); /* any version */
    assert_true(uuid_is_valid("6ba7b810-9dad-11d1-80b4-00c04fd430c8")); /* v1 */
    assert_true(uuid_is_valid("ffffffff-ffff-ffff-ffff-ffffffffffff"));

    assert_false(uuid_is_valid(NULL));
    assert_false(uuid_is_valid(""));
    assert_false(uuid_is_valid("0190a1b2-c3d4-7e5f-8a6b-7c8d9e0f1a2"));   /* 35 */
    assert_false(uuid_is_valid("0190a1b2-c3d4-7e5f-8a6b-7c8d9e0f1a2b0")); /* 37 */
    assert_false(uuid_is_valid("0190a1b2-c3d4-7e5f-8a6b-7c8d9e0f1a2b ")); /* trailing space */
    assert_false(uuid_is_valid("0190a1b2c3d47e5f8a6b7c8d9e0f1a2b"));      /* no dashes */
    assert_false(uuid_is_valid("0190a1b2-c3d47-e5f-8a6b-7c8d9e0f1a2b"));  /* dash moved */
    assert_false(uuid_is_valid("0190a1b2-c3d4-7e5f-8a6b-7c8d9e0f1a2g"));  /* g */
    assert_false(uuid_is_valid("0190a1b2-c3d4-7e5f-8a6b+7c8d9e0f1a2b"));  /* + */
    assert_false(uuid_is_valid("{0190a1b2-c3d4-7e5f-8a6b-7c8d9e0f1a2b}"));
    assert_false(uuid_is_valid("urn:uuid:0190a1b2-c3d4-7e5f-8a6b-7c8d9e0f1a2b"));
    assert_false(uuid_is_valid("------------------------------------"));
    assert_false(uuid_is_valid("0190a1b2-c3d4-7e5f-8a6b-7c8d9e0f1a\xc3\xa9"));
}

int main(void)
{
    if (sodium_init() < 0) {
        fprintf(stderr, "sodium_init failed\n");
        return 1;
    }
    /* Order matters: see the file header. */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_generate_format_and_now),
        cmocka_unit_test(test_random_bits_differ),
        cmocka_unit_test(test_monotonic_100k),
        cmocka_unit_test(test_unique_across_threads),
        cmocka_unit_test(test_generate_at_encodes_timestamp),
        cmocka_unit_test(test_monotonic_same_millisecond),
        cmocka_unit_test(test_is_valid),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
