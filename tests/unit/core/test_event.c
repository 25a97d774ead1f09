/*
 * test_event.c - unit tests of core/event.h: which names are valid, the UTF-8
 * check, validation of an event for appending, ownership helpers and the JSON
 * shape of an event. Pure: no store, no files.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/event.h"
#include "core/timefmt.h"

/* A string of n copies of unit (which may be several bytes); caller frees. */
static char *repeat(const char *unit, size_t n)
{
    size_t ul = strlen(unit);
    char *s = malloc(ul * n + 1);
    assert_non_null(s);
    for (size_t i = 0; i < n; i++)
        memcpy(s + i * ul, unit, ul);
    s[ul * n] = '\0';
    return s;
}

/* Asserts that name is rejected by event_check_name with a message that names
 * the field. */
static void assert_name_rejected(const char *name, const char *why)
{
    chr_err_t err;
    chr_err_clear(&err);
    int rc = event_check_name(name, "stream", &err);
    if (rc != CHR_EINVAL) fail_msg("name case '%s' was not rejected (rc %d)", why, rc);
    assert_int_equal(err.code, CHR_EINVAL);
    assert_string_equal(err.field, "stream");
    assert_true(err.msg[0] != '\0');
    assert_non_null(strstr(err.msg, "stream"));
}

static void assert_name_ok(const char *name, const char *why)
{
    chr_err_t err;
    chr_err_clear(&err);
    int rc = event_check_name(name, "type", &err);
    if (rc != CHR_OK) fail_msg("name case '%s' was rejected: %s", why, err.msg);
}

/* --- names ---------------------------------------------------------------- */

static void test_name_empty_and_null(void **state)
{
    (void)state;
    assert_name_rejected("", "empty");
    assert_name_rejected(NULL, "NULL");
}

static void test_name_length_limit(void **state)
{
    (void)state;
    char *s255 = repeat("a", 255), *s256 = repeat("a", 256);
    assert_name_ok(s255, "255 ASCII bytes");
    assert_name_rejected(s256, "256 ASCII bytes");
    free(s255);
    free(s256);

    /* The limit is in bytes, not characters: 127 x "é" (2 bytes) + "a" = 255. */
    char *e127 = repeat("\xc3\xa9", 127), *e128 = repeat("\xc3\xa9", 128);
    char buf[300];
    snprintf(buf, sizeof buf, "%sa", e127);
    assert_int_equal(strlen(buf), 255);
    assert_name_ok(buf, "255 bytes of 2-byte characters");
    assert_int_equal(strlen(e128), 256);
    assert_name_rejected(e128, "128 two-byte characters = 256 bytes");
    free(e127);
    free(e128);

    /* The message says how long the name was. */
    char *s300 = repeat("x", 300);
    chr_err_t err;
    chr_err_clear(&err);
    assert_int_equal(event_check_name(s300, "stream", &err), CHR_EINVAL);
    assert_non_null(strstr(err.msg, "300"));
    free(s300);
}

static void test_name_control_characters(void **state)
{
    (void)state;
    assert_name_rejected("a\x01"
                         "b",
                         "U+0001");
    assert_name_rejected("a\tb", "tab");
    assert_name_rejected("a\nb", "newline");
    assert_name_rejected("a\rb", "carriage return");
    assert_name_rejected("\x1f", "U+001F");
    assert_name_rejected("order\x7f", "DEL U+007F");
    assert_name_rejected("a\xc2\x80", "C1 U+0080");
    assert_name_rejected("a\xc2\x85"
                         "b",
                         "C1 NEL U+0085");
    assert_name_rejected("\xc2\x9f", "C1 U+009F");
    assert_name_rejected("caf\xc3\xa9\xc2\x85", "C1 after a valid 2-byte character");
}

static void test_name_valid_characters(void **state)
{
    (void)state;
    assert_name_ok("order-123", "ascii with dash");
    assert_name_ok("a b", "space");
    assert_name_ok("~!@#$%^&*()_+{}|:\"<>?", "punctuation");
    assert_name_ok("\xc2\xa0", "U+00A0 right after the C1 range");
    assert_name_ok("caf\xc3\xa9-1", "latin-1 letter");
    assert_name_ok("\xe6\x97\xa5\xe6\x9c\xac", "CJK");
    assert_name_ok("\xf0\x9f\x98\x80", "emoji U+1F600");
    assert_name_ok("\xf4\x8f\xbf\xbf", "U+10FFFF");
    assert_name_ok("x", "one byte");
}

static void test_name_invalid_utf8(void **state)
{
    (void)state;
    assert_name_rejected("\xc0\xaf", "overlong 2-byte '/'");
    assert_name_rejected("\xc1\xbf", "overlong 2-byte");
    assert_name_rejected("\xe0\x80\xaf", "overlong 3-byte");
    assert_name_rejected("\xe0\x9f\xbf", "overlong 3-byte U+07FF");
    assert_name_rejected("\xf0\x80\x80\xaf", "overlong 4-byte");
    assert_name_rejected("\xf0\x8f\xbf\xbf", "overlong 4-byte U+FFFF");
    assert_name_rejected("\xed\xa0\x80", "surrogate U+D800");
    assert_name_rejected("\xed\xbf\xbf", "surrogate U+DFFF");
    assert_name_rejected("a\xc3", "truncated 2-byte at end");
    assert_name_rejected("\xe2\x82", "truncated 3-byte");
    assert_name_rejected("\xf0\x9f\x98", "truncated 4-byte");
    assert_name_rejected("\xc3"
                         "a",
                         "2-byte lead followed by ASCII");
    assert_name_rejected("\xf4\x90\x80\x80", "U+110000");
    assert_name_rejected("\xf5\x80\x80\x80", "lead byte F5");
    assert_name_rejected("\xf7\xbf\xbf\xbf", "lead byte F7");
    assert_name_rejected("\x80", "lone continuation byte");
    assert_name_rejected("a\xbf"
                         "b",
                         "stray continuation byte");
    assert_name_rejected("\xfe", "FE");
    assert_name_rejected("\xff", "FF");
}

static void test_utf8_valid_lengths(void **state)
{
    (void)state;
    /* The length decides, not a NUL terminator. */
    assert_true(utf8_valid("a\0b", 3));
    assert_true(utf8_valid("", 0));
    assert_true(utf8_valid("\xc3\xa9", 2));
    assert_false(utf8_valid("\xc3\xa9", 1));
    assert_true(utf8_valid("\xe2\x82\xac", 3));
    assert_false(utf8_valid("\xe2\x82\xac", 2));
    assert_true(utf8_valid("\xf0\x9f\x98\x80", 4));
    assert_false(utf8_valid("\xf0\x9f\x98\x80", 3));
    /* Boundaries around the surrogates and the top of the range. */
    assert_true(utf8_valid("\xed\x9f\xbf", 3));     /* U+D7FF */
    assert_true(utf8_valid("\xee\x80\x80", 3));     /* U+E000 */
    assert_true(utf8_valid("\xe0\xa0\x80", 3));     /* U+0800 */
    assert_true(utf8_valid("\xef\xbf\xbf", 3));     /* U+FFFF */
    assert_true(utf8_valid("\xf0\x90\x80\x80", 4)); /* U+10000 */
    assert_true(utf8_valid("\xdf\xbf", 2));         /* U+07FF */
    assert_false(utf8_valid("\xed\xa0\x80", 3));
    assert_false(utf8_valid("\xf4\x90\x80\x80", 4));
    assert_false(utf8_valid("\xc0\x80", 2)); /* overlong NUL */
}

/* --- event_validate ------------------------------------------------------- */

static void mk(event_t *ev, const char *id, const char *type, const char *data, const char *meta)
{
    assert_int_equal(event_init(ev, id, "s-1", type, data, meta), CHR_OK);
}

/* Validates and returns the status, leaving err for inspection. */
static int validate(const char *id, const char *type, const char *data, const char *meta,
                    size_t max, chr_err_t *err)
{
    event_t ev;
    mk(&ev, id, type, data, meta);
    chr_err_clear(err);
    int rc = event_validate(&ev, max, "events[3].", err);
    event_free(&ev);
    return rc;
}

static void assert_invalid(int rc, const chr_err_t *err, int code, const char *field)
{
    assert_int_equal(rc, code);
    assert_int_equal(err->code, code);
    assert_true(err->msg[0] != '\0');
    assert_string_equal(err->field, field);
}

static void test_validate_good_events(void **state)
{
    (void)state;
    chr_err_t err;
    assert_int_equal(validate("", "OrderPlaced", "{\"a\":1}", NULL, 1024, &err), CHR_OK);
    assert_int_equal(validate(NULL, "OrderPlaced", NULL, NULL, 1024, &err), CHR_OK);
    assert_int_equal(validate("0190a1b2-c3d4-7e5f-8a6b-7c8d9e0f1a2b", "T", "[1,2]",
                              "{\"correlation_id\":\"x\"}", 1024, &err),
                     CHR_OK);
    /* Upper-case hex is still a UUID. */
    assert_int_equal(validate("0190A1B2-C3D4-7E5F-8A6B-7C8D9E0F1A2B", "T", "{}", NULL, 1024, &err),
                     CHR_OK);
    /* data may be any JSON value, not only an object. */
    assert_int_equal(validate("", "T", "42", NULL, 1024, &err), CHR_OK);
    assert_int_equal(validate("", "T", "\"text\"", NULL, 1024, &err), CHR_OK);
    assert_int_equal(validate("", "T", "null", NULL, 1024, &err), CHR_OK);
    assert_int_equal(validate("", "T", " {\"s\":\"h\\u00e9 \xe2\x9c\x93\"} ", NULL, 1024, &err),
                     CHR_OK);
}

static void test_validate_bad_ids(void **state)
{
    (void)state;
    chr_err_t err;
    const char *bad[] = {
        "not-a-uuid",
        "0190a1b2-c3d4-7e5f-8a6b-7c8d9e0f1a2",  /* 35 chars */
        "0190a1b2c3d47e5f8a6b7c8d9e0f1a2b",     /* no dashes */
        "0190a1b2-c3d4-7e5f-8a6b_7c8d9e0f1a2b", /* wrong separator */
        "0190a1b2-c3d4-7e5f-8a6b-7c8d9e0f1a2g", /* not hex */
        " 0190a1b2-c3d4-7e5f-8a6b-7c8d9e0f1a2",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int rc = validate(bad[i], "T", "{}", NULL, 1024, &err);
        if (rc != CHR_EINVAL) fail_msg("id \"%s\" accepted", bad[i]);
        assert_invalid(rc, &err, CHR_EINVAL, "events[3].id");
    }
}

/* An id longer than a UUID must never be truncated into a valid one:
 * event_init refuses it with CHR_EINVAL (event.h) and owns nothing then. */
static void test_init_overlong_id_refused(void **state)
{
    (void)state;
    const char *ids[] = {"0190a1b2-c3d4-7e5f-8a6b-7c8d9e0f1a2bc",
                         "0190a1b2-c3d4-7e5f-8a6b-7c8d9e0f1a2b-and-more",
                         "{0190a1b2-c3d4-7e5f-8a6b-7c8d9e0f1a2b}"};
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++) {
        event_t ev;
        int rc = event_init(&ev, ids[i], "s-1", "T", "{}", NULL);
        if (rc != CHR_EINVAL) {
            char kept[UUID_STR_LEN + 1];
            snprintf(kept, sizeof kept, "%s", ev.id);
            if (rc == CHR_OK) event_free(&ev);
            fail_msg("event_init(id \"%s\") gave %d (id kept as \"%s\"), want CHR_EINVAL", ids[i],
                     rc, kept);
        }
        assert_null(ev.stream); /* nothing to free */
        assert_null(ev.data);
    }
    /* Exactly 36 characters is fine. */
    event_t ok;
    assert_int_equal(event_init(&ok, "0190a1b2-c3d4-7e5f-8a6b-7c8d9e0f1a2b", "s", "T", NULL, NULL),
                     CHR_OK);
    assert_string_equal(ok.id, "0190a1b2-c3d4-7e5f-8a6b-7c8d9e0f1a2b");
    event_free(&ok);
}

static void test_validate_bad_type(void **state)
{
    (void)state;
    chr_err_t err;
    assert_invalid(validate("", "", "{}", NULL, 1024, &err), &err, CHR_EINVAL, "events[3].type");
    assert_invalid(validate("", "T\xff", "{}", NULL, 1024, &err), &err, CHR_EINVAL,
                   "events[3].type");
    assert_invalid(validate("", "T\n", "{}", NULL, 1024, &err), &err, CHR_EINVAL, "events[3].type");
    char *t256 = repeat("t", 256);
    assert_invalid(validate("", t256, "{}", NULL, 4096, &err), &err, CHR_EINVAL, "events[3].type");
    free(t256);
}

static void test_validate_bad_json(void **state)
{
    (void)state;
    chr_err_t err;
    const char *bad[] = {
        "{",
        "",
        "{'a':1}",
        "[1,]",
        "nul",
        "{} {}",
        "{\"a\":}",
        "{\"a\" 1}",
        "undefined",
        "{\"a\":\"\xc3\x28\"}", /* invalid UTF-8 */
        "\"\xed\xa0\x80\"",     /* surrogate bytes */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int rc = validate("", "T", bad[i], NULL, 1024, &err);
        if (rc != CHR_EINVAL) fail_msg("data '%s' accepted (rc %d)", bad[i], rc);
        assert_invalid(rc, &err, CHR_EINVAL, "events[3].data");
    }

    /* data NULL after init is impossible via event_init; build it by hand. */
    event_t ev;
    mk(&ev, "", "T", "{}", NULL);
    free(ev.data);
    ev.data = NULL;
    chr_err_clear(&err);
    assert_invalid(event_validate(&ev, 1024, "", &err), &err, CHR_EINVAL, "data");
    event_free(&ev);
}

static void test_validate_metadata_not_object(void **state)
{
    (void)state;
    chr_err_t err;
    const char *bad[] = {"[]", "[1,2]", "1", "\"x\"", "null", "true", "{", "{\"a\":\"\xff\"}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int rc = validate("", "T", "{}", bad[i], 1024, &err);
        if (rc != CHR_EINVAL)
            fail_msg("metadata '%s' accepted although it is not a JSON object (rc %d)", bad[i], rc);
        assert_invalid(rc, &err, CHR_EINVAL, "events[3].metadata");
    }
    assert_int_equal(validate("", "T", "{}", "{}", 1024, &err), CHR_OK);
    assert_int_equal(validate("", "T", "{}", "{\"actor\":{\"id\":1}}", 1024, &err), CHR_OK);
}

static void test_validate_size_limit(void **state)
{
    (void)state;
    chr_err_t err;
    /* type (1) + data + metadata (2, "{}") must be <= max. */
    const size_t max = 100;
    char data[128];
    char *fill = repeat("a", max - 1 - 2 - 2); /* quotes take 2 */
    snprintf(data, sizeof data, "\"%s\"", fill);
    assert_int_equal(strlen("T") + strlen(data) + 2, max);
    assert_int_equal(validate("", "T", data, "{}", max, &err), CHR_OK);
    free(fill);

    fill = repeat("a", max - 1 - 2 - 2 + 1);
    snprintf(data, sizeof data, "\"%s\"", fill);
    int rc = validate("", "T", data, "{}", max, &err);
    assert_int_equal(rc, CHR_ETOOBIG);
    assert_int_equal(err.code, CHR_ETOOBIG);
    assert_non_null(strstr(err.msg, "101"));
    assert_non_null(strstr(err.msg, "100"));
    assert_non_null(strstr(err.field, "events[3]."));
    free(fill);

    /* metadata counts towards the limit. */
    fill = repeat("m", 120);
    char meta[160];
    snprintf(meta, sizeof meta, "{\"m\":\"%s\"}", fill);
    assert_int_equal(validate("", "T", "{}", meta, max, &err), CHR_ETOOBIG);
    free(fill);

    /* the type counts towards the limit. */
    char *type = repeat("T", 99);
    assert_int_equal(validate("", type, "{}", NULL, max, &err), CHR_ETOOBIG);
    assert_int_equal(validate("", type, "{}", NULL, max + 1, &err), CHR_OK);
    free(type);

    /* The default limit is 1 MiB. */
    assert_int_equal(EVENT_DEFAULT_MAX_BYTES, 1048576u);
}

/* --- ownership -------------------------------------------------------------- */

static void test_init_copy_free(void **state)
{
    (void)state;
    event_t ev;
    assert_int_equal(event_init(&ev, NULL, "s-1", "T", NULL, NULL), CHR_OK);
    assert_string_equal(ev.id, "");
    assert_string_equal(ev.stream, "s-1");
    assert_string_equal(ev.type, "T");
    assert_string_equal(ev.data, "{}");
    assert_null(ev.metadata);
    assert_true(ev.version == 0 && ev.position == 0 && ev.timestamp == 0);
    event_free(&ev);
    assert_null(ev.stream);
    assert_null(ev.data);

    const char *id = "0190a1b2-c3d4-7e5f-8a6b-7c8d9e0f1a2b";
    char data[] = "{\"a\":1}";
    assert_int_equal(event_init(&ev, id, "s-2", "U", data, "{\"m\":2}"), CHR_OK);
    data[2] = 'b'; /* event_init copies */
    assert_string_equal(ev.data, "{\"a\":1}");
    ev.version = 7;
    ev.position = 99;
    ev.timestamp = 1767323045123456;

    event_t cp;
    assert_int_equal(event_copy(&cp, &ev), CHR_OK);
    assert_string_equal(cp.id, id);
    assert_string_equal(cp.stream, "s-2");
    assert_string_equal(cp.type, "U");
    assert_string_equal(cp.data, "{\"a\":1}");
    assert_string_equal(cp.metadata, "{\"m\":2}");
    assert_true(cp.version == 7 && cp.position == 99 && cp.timestamp == 1767323045123456);
    assert_ptr_not_equal(cp.stream, ev.stream);
    assert_ptr_not_equal(cp.data, ev.data);
    assert_ptr_not_equal(cp.metadata, ev.metadata);
    event_free(&ev);
    assert_string_equal(cp.data, "{\"a\":1}");
    event_free(&cp);
}

static void test_list_push_takes_ownership(void **state)
{
    (void)state;
    event_list_t list = {0};
    for (int i = 0; i < 100; i++) {
        event_t ev;
        char type[32];
        snprintf(type, sizeof type, "T%d", i);
        assert_int_equal(event_init(&ev, NULL, "s", type, NULL, NULL), CHR_OK);
        ev.version = i + 1;
        char *type_ptr = ev.type;
        assert_int_equal(event_list_push(&list, &ev), CHR_OK);
        assert_null(ev.type); /* zeroed: the list owns it now */
        assert_null(ev.stream);
        assert_ptr_equal(list.items[list.len - 1].type, type_ptr);
    }
    assert_int_equal(list.len, 100);
    assert_true(list.cap >= 100);
    for (size_t i = 0; i < list.len; i++) {
        char type[32];
        snprintf(type, sizeof type, "T%zu", i);
        assert_string_equal(list.items[i].type, type);
        assert_int_equal(list.items[i].version, (int64_t)i + 1);
    }
    event_list_free(&list);
    assert_null(list.items);
    assert_int_equal(list.len, 0);
    assert_int_equal(list.cap, 0);
}

/* --- event_to_json ---------------------------------------------------------- */

static void test_to_json_shape(void **state)
{
    (void)state;
    event_t ev;
    assert_int_equal(event_init(&ev, "0190a1b2-c3d4-7e5f-8a6b-7c8d9e0f1a2b", "order-1",
                                "OrderPlaced", "{\"total\":12.5,\"items\":[1,2]}",
                                "{\"correlation_id\":\"c-1\"}"),
                     CHR_OK);
    ev.version = 3;
    ev.position = 42;
    ev.timestamp = 1767323045123456;
    json_t *j = event_to_json(&ev);
    assert_non_null(j);
    assert_true(json_is_object(j));
    assert_int_equal(json_object_size(j), 8);
    assert_string_equal(json_string_value(json_object_get(j, "id")),
                        "0190a1b2-c3d4-7e5f-8a6b-7c8d9e0f1a2b");
    assert_string_equal(json_string_value(json_object_get(j, "stream")), "order-1");
    assert_string_equal(json_string_value(json_object_get(j, "type")), "OrderPlaced");
    assert_true(json_is_integer(json_object_get(j, "version")));
    assert_int_equal(json_integer_value(json_object_get(j, "version")), 3);
    assert_true(json_is_integer(json_object_get(j, "position")));
    assert_int_equal(json_integer_value(json_object_get(j, "position")), 42);
    assert_string_equal(json_string_value(json_object_get(j, "timestamp")),
                        "2026-01-02T03:04:05.123456Z");

    /* data and metadata are embedded as JSON values, not as strings. */
    json_t *want_data = json_loads("{\"items\":[1,2],\"total\":12.5}", 0, NULL);
    json_t *want_meta = json_loads("{\"correlation_id\":\"c-1\"}", 0, NULL);
    assert_true(json_equal(json_object_get(j, "data"), want_data));
    assert_true(json_equal(json_object_get(j, "metadata"), want_meta));
    json_decref(want_data);
    json_decref(want_meta);
    json_decref(j);

    /* A scalar data value stays a scalar; absent metadata is still present
     * as a key (an empty object or null). */
    event_free(&ev);
    assert_int_equal(event_init(&ev, "0190a1b2-c3d4-7e5f-8a6b-7c8d9e0f1a2b", "s", "T", "42", NULL),
                     CHR_OK);
    j = event_to_json(&ev);
    assert_non_null(j);
    assert_true(json_is_integer(json_object_get(j, "data")));
    assert_int_equal(json_integer_value(json_object_get(j, "data")), 42);
    json_t *m = json_object_get(j, "metadata");
    assert_non_null(m);
    assert_true(json_is_null(m) || (json_is_object(m) && json_object_size(m) == 0));
    assert_string_equal(json_string_value(json_object_get(j, "timestamp")),
                        "1970-01-01T00:00:00.000000Z");
    json_decref(j);
    event_free(&ev);
}

/* event.h: "data/metadata that fail to parse ... are emitted as null". */
static void test_to_json_unparsable_is_null(void **state)
{
    (void)state;
    event_t ev;
    assert_int_equal(event_init(&ev, "0190a1b2-c3d4-7e5f-8a6b-7c8d9e0f1a2b", "s", "T", "{broken",
                                "[also broken"),
                     CHR_OK);
    json_t *j = event_to_json(&ev);
    assert_non_null(j);
    assert_int_equal(json_object_size(j), 8);
    assert_true(json_is_null(json_object_get(j, "data")));
    if (!json_is_null(json_object_get(j, "metadata")))
        fail_msg("unparsable metadata must be emitted as null (event.h), got type %d",
                 (int)json_typeof(json_object_get(j, "metadata")));
    json_decref(j);
    event_free(&ev);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_name_empty_and_null),
        cmocka_unit_test(test_name_length_limit),
        cmocka_unit_test(test_name_control_characters),
        cmocka_unit_test(test_name_valid_characters),
        cmocka_unit_test(test_name_invalid_utf8),
        cmocka_unit_test(test_utf8_valid_lengths),
        cmocka_unit_test(test_validate_good_events),
        cmocka_unit_test(test_validate_bad_ids),
        cmocka_unit_test(test_init_overlong_id_refused),
        cmocka_unit_test(test_validate_bad_type),
        cmocka_unit_test(test_validate_bad_json),
        cmocka_unit_test(test_validate_metadata_not_object),
        cmocka_unit_test(test_validate_size_limit),
        cmocka_unit_test(test_init_copy_free),
        cmocka_unit_test(test_list_push_takes_ownership),
        cmocka_unit_test(test_to_json_shape),
        cmocka_unit_test(test_to_json_unparsable_is_null),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
