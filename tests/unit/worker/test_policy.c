/*
 * test_policy.c - unit tests of worker/policy.h, the pure rules of
 * delivery: the webhook signature (against HMAC-SHA256 vectors computed
 * independently with Python's hmac module), the backoff schedule with its
 * jitter bounds, filter matching and delivery ids.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <sodium.h>
#include <stdio.h>
#include <string.h>

#include "worker/policy.h"

static void test_signature_vectors(void **state)
{
    (void)state;
    char sig[WEBHOOK_SIGNATURE_MAX];
    const char *body = "{\"a\":1}";
    webhook_signature("whsec", 1700000000, body, strlen(body), sig);
    assert_string_equal(sig, "t=1700000000,v1="
                             "8ad37ba156048ae0e0a5533c75cdf26fee88b07f93cb57ee4c80adb053012032");
    /* a key longer than the HMAC block is hashed first, as HMAC says */
    char key[101];
    memset(key, 'k', 100);
    key[100] = '\0';
    webhook_signature(key, 42, "", 0, sig);
    assert_string_equal(sig, "t=42,v1="
                             "4db982d05c0ed99947717e4489eb9dcb4eedadae0f4eda7c3b18ded63c766369");
}

static void test_signature_covers_time_and_body(void **state)
{
    (void)state;
    char a[WEBHOOK_SIGNATURE_MAX], b[WEBHOOK_SIGNATURE_MAX], c[WEBHOOK_SIGNATURE_MAX];
    webhook_signature("s", 100, "body", 4, a);
    webhook_signature("s", 101, "body", 4, b);
    webhook_signature("s", 100, "bodY", 4, c);
    assert_string_not_equal(strchr(a, ','), strchr(b, ','));
    assert_string_not_equal(a, c);
    webhook_signature("s", 100, "body", 3, b); /* length counts, not the NUL */
    assert_string_not_equal(a, b);
}

static void test_backoff_doubles_up_to_the_cap(void **state)
{
    (void)state;
    /* rand 0.999.. gives (nearly) the full delay, 0 gives half of it */
    int64_t full[] = {100, 200, 400, 800, 1000, 1000};
    for (int i = 0; i < 6; i++) {
        int64_t hi = consumer_backoff_ms(i + 1, 100, 1000, 0.9999999);
        int64_t lo = consumer_backoff_ms(i + 1, 100, 1000, 0.0);
        assert_true(hi <= full[i] && hi >= full[i] - 1);
        assert_int_equal(lo, full[i] - full[i] / 2);
    }
    /* jitter stays within [d/2, d] for any random value */
    for (int r = 0; r < 100; r++) {
        int64_t d = consumer_backoff_ms(3, 1000, 60000, r / 100.0);
        assert_true(d >= 2000 && d <= 4000);
    }
    /* huge attempt numbers do not overflow */
    assert_int_equal(consumer_backoff_ms(1000, 1000, 300000, 0.0), 150000);
    assert_true(consumer_backoff_ms(1, 1, 1, 0.0) >= 1);
    assert_int_equal(consumer_backoff_ms(0, 10, 10, 0.0), 5);
}

static void test_filter_matching(void **state)
{
    (void)state;
    char *types[] = {"TaskCreated", "TaskMoved"};
    char *entities[] = {"tasks", "boards"};
    sink_filter_t none = {0};
    sink_filter_t by_type = {.types = types, .n_types = 2};
    sink_filter_t by_entity = {.entities = entities, .n_entities = 2};
    sink_filter_t both = {.types = types, .n_types = 1, .entities = entities, .n_entities = 1};
    assert_true(consumer_filter_match(&none, "Anything", "s"));
    assert_true(consumer_filter_match(&by_type, "TaskMoved", "x"));
    assert_false(consumer_filter_match(&by_type, "TaskMove", "x"));
    assert_false(consumer_filter_match(&by_type, "taskmoved", "x"));
    assert_true(consumer_filter_match(&by_entity, "X", "tasks-1"));
    assert_true(consumer_filter_match(&by_entity, "X", "boards-b-2"));
    assert_false(consumer_filter_match(&by_entity, "X", "tasks"));     /* no key */
    assert_false(consumer_filter_match(&by_entity, "X", "tasks-"));    /* empty key */
    assert_false(consumer_filter_match(&by_entity, "X", "taskss-1"));  /* another entity */
    assert_false(consumer_filter_match(&by_entity, "X", "task-1"));
    assert_true(consumer_filter_match(&both, "TaskCreated", "tasks-9"));
    assert_false(consumer_filter_match(&both, "TaskCreated", "boards-9"));
    assert_false(consumer_filter_match(&both, "TaskMoved", "tasks-9"));
}

static void test_delivery_id(void **state)
{
    (void)state;
    const char *ev = "01890a5d-ac96-774b-bcce-b302099a8057";
    char a[CONSUMER_DELIVERY_ID_LEN + 1], b[CONSUMER_DELIVERY_ID_LEN + 1];
    consumer_delivery_id("hook", 0, ev, a);
    consumer_delivery_id("hook", 0, ev, b);
    assert_string_equal(a, b); /* stable */
    assert_int_equal(strlen(a), 32);
    for (const char *p = a; *p; p++)
        assert_true((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f'));
    consumer_delivery_id("hook", 1, ev, b);
    assert_string_not_equal(a, b); /* a reset gives new ids */
    consumer_delivery_id("hook2", 0, ev, b);
    assert_string_not_equal(a, b); /* per consumer */
    consumer_delivery_id("hoo", 0, "k" "01890a5d-ac96-774b-bcce-b302099a8057", b);
    assert_string_not_equal(a, b); /* fields are separated */
}

int main(void)
{
    if (sodium_init() < 0) return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_signature_vectors),
        cmocka_unit_test(test_signature_covers_time_and_body),
        cmocka_unit_test(test_backoff_doubles_up_to_the_cap),
        cmocka_unit_test(test_filter_matching),
        cmocka_unit_test(test_delivery_id),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
