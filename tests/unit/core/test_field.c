/*
 * test_field.c - unit tests of core/field.h: every field type's accepted and
 * rejected values with their messages, max_length in characters, min/max,
 * cron, e-mail and key syntax, and normalisation of timestamps and e-mails;
 * passwords: checked as text, normalised to an Argon2id hash that verifies
 * (core/password.h) and differs each time.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include <sodium.h>

#include "core/field.h"
#include "core/password.h"

static field_def_t mk(field_type_t t)
{
    field_def_t f;
    memset(&f, 0, sizeof f);
    f.name = "f";
    f.type = t;
    f.ref_entity = -1;
    return f;
}

/* Parses JSON text (any value) into a new reference. */
static json_t *J(const char *text)
{
    json_error_t je;
    json_t *v = json_loads(text, JSON_DECODE_ANY, &je);
    if (!v) fail_msg("bad test JSON %s: %s", text, je.text);
    return v;
}

static void ok_(const field_def_t *f, const char *text, int line)
{
    json_t *v = J(text);
    char msg[256] = "";
    if (!field_check_value(f, v, msg, sizeof msg))
        fail_msg("line %d: %s %s rejected: %s", line, field_type_name(f->type), text, msg);
    json_decref(v);
}

static void bad_(const field_def_t *f, const char *text, const char *want, int line)
{
    json_t *v = J(text);
    char msg[256] = "";
    if (field_check_value(f, v, msg, sizeof msg))
        fail_msg("line %d: %s %s accepted", line, field_type_name(f->type), text);
    if (want && strcmp(msg, want) != 0)
        fail_msg("line %d: %s %s: message \"%s\", want \"%s\"", line, field_type_name(f->type),
                 text, msg, want);
    json_decref(v);
}

#define OK(f, text) ok_(&(f), text, __LINE__)
#define BAD(f, text, want) bad_(&(f), text, want, __LINE__)

static const char *const TS_MSG = "must be an RFC 3339 timestamp such as 2026-01-02T03:04:05Z";
static const char *const CRON_MSG =
    "must be a cron expression of 5 fields (minute hour day month weekday)";
static const char *const KEY_MSG = "must be a key: 1-255 characters, no '/' or control characters";

static void test_type_names(void **state)
{
    (void)state;
    const char *names[] = {"string", "text", "integer", "number", "boolean", "timestamp",
                           "enum",   "json", "ref",     "cron",   "email"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        field_type_t t;
        assert_true(field_type_from_name(names[i], &t));
        assert_int_equal(t, (int)i);
        assert_string_equal(field_type_name(t), names[i]);
    }
    field_type_t t;
    assert_false(field_type_from_name("strng", &t));
    assert_false(field_type_from_name("", &t));
    assert_false(field_type_from_name("String", &t));
    assert_string_equal(field_type_name((field_type_t)99), "unknown");
}

static void test_string(void **state)
{
    (void)state;
    field_def_t f = mk(FT_STRING);
    OK(f, "\"hello\"");
    OK(f, "\"\"");
    OK(f, "\"caf\\u00e9 \\u2603 \\ud83d\\ude00\"");
    BAD(f, "42", "must be a string");
    BAD(f, "null", "must be a string");
    BAD(f, "true", "must be a string");
    BAD(f, "[\"a\"]", "must be a string");
    BAD(f, "{}", "must be a string");
    BAD(f, "\"two\\nlines\"", "must be a single line without control characters");
    BAD(f, "\"tab\\there\"", "must be a single line without control characters");
    BAD(f, "\"del\\u007f\"", "must be a single line without control characters");
    BAD(f, "\"c1\\u0085\"", "must be a single line without control characters");

    /* default 255 characters, counted in code points, not bytes */
    assert_int_equal(field_max_length(&f), 255);
    char buf[2048];
    size_t off = 0;
    buf[off++] = '"';
    for (int i = 0; i < 255; i++)
        off += (size_t)snprintf(buf + off, sizeof buf - off, "\u00e9");
    buf[off++] = '"';
    buf[off] = '\0';
    OK(f, buf);
    buf[off - 1] = 'x';
    buf[off++] = '"';
    buf[off] = '\0';
    BAD(f, buf, "must be at most 255 characters long");

    f.has_max_length = true;
    f.max_length = 3;
    OK(f, "\"abc\"");
    OK(f, "\"\\u2603\\u2603\\u2603\"");
    BAD(f, "\"abcd\"", "must be at most 3 characters long");
    assert_int_equal(field_max_length(&f), 3);
}

static void test_string_embedded_nul(void **state)
{
    (void)state;
    field_def_t f = mk(FT_STRING);
    char msg[128];
    json_t *v = json_stringn("a\0b", 3);
    assert_non_null(v);
    assert_false(field_check_value(&f, v, msg, sizeof msg));
    assert_string_equal(msg, "must be a single line without control characters");
    f.type = FT_TEXT;
    assert_false(field_check_value(&f, v, msg, sizeof msg));
    f.type = FT_REF;
    assert_false(field_check_value(&f, v, msg, sizeof msg));
    assert_string_equal(msg, KEY_MSG);
    f.type = FT_TIMESTAMP;
    assert_false(field_check_value(&f, v, msg, sizeof msg));
    json_decref(v);
}

static void test_text(void **state)
{
    (void)state;
    field_def_t f = mk(FT_TEXT);
    OK(f, "\"line one\\nline two\\r\\n\\tindented\"");
    OK(f, "\"\"");
    BAD(f, "1", "must be a string");
    BAD(f, "\"bell\\u0007\"", "must not contain control characters other than tab and line breaks");
    assert_int_equal(field_max_length(&f), 1 << 20);
    f.has_max_length = true;
    f.max_length = 5;
    OK(f, "\"a\\nb\\nc\"");
    BAD(f, "\"a\\nb\\nc\\n\"", "must be at most 5 characters long");
}

static void test_integer(void **state)
{
    (void)state;
    field_def_t f = mk(FT_INTEGER);
    OK(f, "0");
    OK(f, "-7");
    OK(f, "9223372036854775807");
    BAD(f, "1.5", "must be an integer");
    BAD(f, "1.0", "must be an integer");
    BAD(f, "\"1\"", "must be an integer");
    BAD(f, "true", "must be an integer");
    f.has_min = f.has_max = true;
    f.min = 1;
    f.max = 10;
    OK(f, "1");
    OK(f, "10");
    BAD(f, "0", "must be at least 1");
    BAD(f, "11", "must be at most 10");
    f.min = -2.5;
    OK(f, "-2");
    BAD(f, "-3", "must be at least -2.5");
}

static void test_number(void **state)
{
    (void)state;
    field_def_t f = mk(FT_NUMBER);
    OK(f, "0");
    OK(f, "1.25");
    OK(f, "-1e300");
    BAD(f, "\"1.5\"", "must be a number");
    BAD(f, "null", "must be a number");
    BAD(f, "false", "must be a number");
    f.has_min = true;
    f.min = 0.5;
    OK(f, "0.5");
    BAD(f, "0.49", "must be at least 0.5");
    f.has_max = true;
    f.max = 100;
    OK(f, "100");
    BAD(f, "100.01", "must be at most 100");
}

static void test_boolean(void **state)
{
    (void)state;
    field_def_t f = mk(FT_BOOLEAN);
    OK(f, "true");
    OK(f, "false");
    BAD(f, "0", "must be true or false");
    BAD(f, "\"true\"", "must be true or false");
}

static void test_timestamp(void **state)
{
    (void)state;
    field_def_t f = mk(FT_TIMESTAMP);
    OK(f, "\"2026-01-02T03:04:05Z\"");
    OK(f, "\"2026-01-02T03:04:05.123456+02:00\"");
    OK(f, "\"2026-01-02\"");
    BAD(f, "\"2026-02-30T00:00:00Z\"", TS_MSG);
    BAD(f, "\"yesterday\"", TS_MSG);
    BAD(f, "\"2026-01-02T03:04:05\"", TS_MSG);
    BAD(f, "1767323045", TS_MSG);
}

static void test_enum(void **state)
{
    (void)state;
    char *values[] = {"todo", "doing", "done"};
    field_def_t f = mk(FT_ENUM);
    f.values = values;
    f.n_values = 3;
    OK(f, "\"todo\"");
    OK(f, "\"done\"");
    BAD(f, "\"Todo\"", "must be one of: todo, doing, done");
    BAD(f, "\"\"", "must be one of: todo, doing, done");
    BAD(f, "1", "must be one of: todo, doing, done");
    /* a small buffer truncates, never overflows */
    json_t *v = J("\"nope\"");
    char small[20];
    assert_false(field_check_value(&f, v, small, sizeof small));
    assert_string_equal(small, "must be one of: tod");
    json_decref(v);
}

static void test_json(void **state)
{
    (void)state;
    field_def_t f = mk(FT_JSON);
    OK(f, "null");
    OK(f, "{\"a\": [1, 2, {\"b\": null}]}");
    OK(f, "\"text\"");
    OK(f, "3.5");
    OK(f, "false");
}

static void test_ref(void **state)
{
    (void)state;
    field_def_t f = mk(FT_REF);
    OK(f, "\"team-1\"");
    OK(f, "\"0190d7a2-7c1e-7b3e-9f00-000000000000\"");
    OK(f, "\"caf\\u00e9\"");
    BAD(f, "\"\"", KEY_MSG);
    BAD(f, "\"a/b\"", KEY_MSG);
    BAD(f, "\"a\\nb\"", KEY_MSG);
    BAD(f, "42", KEY_MSG);
    char buf[300];
    buf[0] = '"';
    memset(buf + 1, 'k', 255);
    buf[256] = '"';
    buf[257] = '\0';
    OK(f, buf);
    buf[256] = 'k';
    buf[257] = '"';
    buf[258] = '\0';
    BAD(f, buf, KEY_MSG);
}

static void test_key_valid(void **state)
{
    (void)state;
    assert_true(key_valid("a"));
    assert_true(key_valid("with space"));
    assert_true(key_valid("\xe2\x98\x83"));
    assert_false(key_valid(NULL));
    assert_false(key_valid(""));
    assert_false(key_valid("a/b"));
    assert_false(key_valid("a\tb"));
    assert_false(key_valid("a\x7f"));
    assert_false(key_valid("a\xc2\x85"));
    assert_false(key_valid("\xff"));
    assert_false(key_valid("\xc0\xaf")); /* overlong '/' */
}

static void test_cron(void **state)
{
    (void)state;
    const char *good[] = {
        "* * * * *",       "0 9 * * 1-5",     "*/15 * * * *",
        "0 0 1 1 *",       "59 23 31 12 7",   "0 0 * * 0",
        "0 8-18/2 * * *",  "0,30 * * * *",    "5 4 * JAN-MAR *",
        "0 9 * * MON-FRI", "0 9 * * mon,wed", "  0   9 * *\t* ",
        "@hourly",         "@daily",          "@weekly",
        "@monthly",        "@yearly",         "1-5,10,20-30/5 * * * *",
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
        if (!cron_valid(good[i])) fail_msg("cron \"%s\" rejected", good[i]);
    const char *bad[] = {
        "",
        "* * * *",
        "* * * * * *",
        "60 * * * *",
        "* 24 * * *",
        "* * 0 * *",
        "* * 32 * *",
        "* * * 0 *",
        "* * * 13 *",
        "* * * * 8",
        "5-1 * * * *",
        "*/0 * * * *",
        "*/ * * * *",
        "1/5 * * * *",
        "a * * * *",
        "* * * JANUARY *",
        "* * JAN * *",
        "MON * * * *",
        "1, * * * *",
        ",1 * * * *",
        "1-2-3 * * * *",
        "@reboot",
        "@DAILY",
        "@daily *",
        "-1 * * * *",
        "100 * * * *",
        "* * * * FRI-MON",
        "1--2 * * * *",
        "*/100 * * * *",
        "** * * * *",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (cron_valid(bad[i])) fail_msg("cron \"%s\" accepted", bad[i]);
    assert_false(cron_valid(NULL));

    field_def_t f = mk(FT_CRON);
    OK(f, "\"*/5 * * * *\"");
    BAD(f, "\"every minute\"",
        "must be a cron expression of 5 fields (minute hour day month weekday): minute: "
        "\"every\" is not a number 0-59");
    BAD(f, "\"0 0 * *\"",
        "must be a cron expression of 5 fields (minute hour day month weekday): has 4 fields; "
        "expected 5: minute hour day-of-month month day-of-week");
    BAD(f, "\"0 24 * * *\"",
        "must be a cron expression of 5 fields (minute hour day month weekday): hour: 24 is out "
        "of range 0-23");
    BAD(f, "5", CRON_MSG);
}

static void test_email(void **state)
{
    (void)state;
    const char *good[] = {"a@example.com", "first.last+tag@sub.example.co.uk", "X@EXAMPLE.COM",
                          "o'neil@a-b.example", "1@2.io"};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
        if (!email_valid(good[i])) fail_msg("e-mail \"%s\" rejected", good[i]);
    const char *bad[] = {"",
                         "plain",
                         "@example.com",
                         "a@",
                         "a@b@c.com",
                         "a b@example.com",
                         "a@example",
                         "a@.example.com",
                         "a@example..com",
                         "a@example.com.",
                         "a@-x.com",
                         "a@x-.com",
                         "a@ex_ample.com",
                         "caf\xc3\xa9@example.com",
                         "a@exa mple.com"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (email_valid(bad[i])) fail_msg("e-mail \"%s\" accepted", bad[i]);
    assert_false(email_valid(NULL));

    field_def_t f = mk(FT_EMAIL);
    OK(f, "\"ada@example.com\"");
    BAD(f, "\"ada\"", "must be an e-mail address");
    BAD(f, "\"ada\\n@example.com\"", "must be an e-mail address");
    BAD(f, "7", "must be an e-mail address");
    assert_int_equal(field_max_length(&f), 254);
    f.has_max_length = true;
    f.max_length = 10;
    BAD(f, "\"ada@example.com\"", "must be at most 10 characters long");
}

static void test_null_msg(void **state)
{
    (void)state;
    field_def_t f = mk(FT_INTEGER);
    json_t *v = J("\"x\"");
    assert_false(field_check_value(&f, v, NULL, 0));
    json_decref(v);
}

static void assert_normalizes(const field_def_t *f, const char *in, const char *want)
{
    json_t *v = J(in);
    json_t *n = field_normalize(f, v);
    assert_non_null(n);
    json_t *w = J(want);
    if (!json_equal(n, w)) {
        char *got = json_dumps(n, JSON_ENCODE_ANY);
        fail_msg("%s normalised to %s, want %s", in, got, want);
    }
    json_decref(w);
    json_decref(n);
    json_decref(v);
}

static void test_normalize(void **state)
{
    (void)state;
    field_def_t ts = mk(FT_TIMESTAMP);
    assert_normalizes(&ts, "\"2026-01-02T03:04:05Z\"", "\"2026-01-02T03:04:05.000000Z\"");
    assert_normalizes(&ts, "\"2026-01-02T05:04:05.5+02:00\"", "\"2026-01-02T03:04:05.500000Z\"");
    assert_normalizes(&ts, "\"2026-01-02\"", "\"2026-01-02T00:00:00.000000Z\"");
    assert_normalizes(&ts, "\"2026-01-01T23:30:00.123456789-04:00\"",
                      "\"2026-01-02T03:30:00.123456Z\"");
    field_def_t em = mk(FT_EMAIL);
    assert_normalizes(&em, "\"Ada.Lovelace@Example.COM\"", "\"Ada.Lovelace@example.com\"");
    assert_normalizes(&em, "\"ada@example.com\"", "\"ada@example.com\"");
    field_def_t s = mk(FT_STRING);
    assert_normalizes(&s, "\"Mixed Case\"", "\"Mixed Case\"");
    field_def_t j = mk(FT_JSON);
    assert_normalizes(&j, "{\"a\": 1}", "{\"a\": 1}");
    field_def_t i = mk(FT_INTEGER);
    assert_normalizes(&i, "5", "5");

    /* other values are returned as they are: the same object, one more reference */
    json_t *obj = J("[1]");
    json_t *same = field_normalize(&j, obj);
    assert_ptr_equal(same, obj);
    assert_int_equal(obj->refcount, 2);
    json_decref(same);
    json_decref(obj);
}
static void test_password(void **state)
{
    (void)state;
    field_def_t f = mk(FT_PASSWORD);
    assert_int_equal(field_max_length(&f), FIELD_PASSWORD_MAX_LENGTH);
    OK(f, "\"correct horse\"");
    OK(f, "\"\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\u00e9\""); /* 8 characters, 16 bytes */
    BAD(f, "\"short\"", "must be at least 8 characters long");
    BAD(f, "12345678", "must be a string");
    BAD(f, "\"tab\\tin-the-middle\"", "must be a single line without control characters");
    char big[200];
    snprintf(big, sizeof big, "\"%0129d\"", 0);
    BAD(f, big, "must be at most 128 characters long");

    json_t *pw = json_string("correct horse");
    json_t *h1 = field_normalize(&f, pw), *h2 = field_normalize(&f, pw);
    assert_non_null(h1);
    assert_non_null(h2);
    const char *s1 = json_string_value(h1);
    assert_int_equal(strncmp(s1, "$argon2id$", 10), 0);
    assert_null(strstr(s1, "correct horse"));
    assert_string_not_equal(s1, json_string_value(h2)); /* a salt of its own */
    assert_true(password_verify(s1, "correct horse", 13));
    assert_false(password_verify(s1, "correct horsE", 13));
    assert_false(password_verify("not a hash", "correct horse", 13));
    assert_false(password_verify_dummy("correct horse", 13));
    json_decref(pw);
    json_decref(h1);
    json_decref(h2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_type_names),
        cmocka_unit_test(test_string),
        cmocka_unit_test(test_string_embedded_nul),
        cmocka_unit_test(test_text),
        cmocka_unit_test(test_integer),
        cmocka_unit_test(test_number),
        cmocka_unit_test(test_boolean),
        cmocka_unit_test(test_timestamp),
        cmocka_unit_test(test_enum),
        cmocka_unit_test(test_json),
        cmocka_unit_test(test_ref),
        cmocka_unit_test(test_key_valid),
        cmocka_unit_test(test_cron),
        cmocka_unit_test(test_email),
        cmocka_unit_test(test_null_msg),
        cmocka_unit_test(test_normalize),
        cmocka_unit_test(test_password),
    };
    if (sodium_init() < 0) return 1;
    return cmocka_run_group_tests(tests, NULL, NULL);
}
