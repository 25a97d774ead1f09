/*
 * test_url.c - unit tests of util/url.h: passwords in the user information
 * and in password= query parameters are masked, everything else is kept,
 * text that is not a URL is copied, and output is always terminated.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "util/url.h"

static void check(const char *in, const char *want)
{
    char out[256];
    assert_string_equal(url_redact(in, out, sizeof out), want);
}

static void test_userinfo_password(void **state)
{
    (void)state;
    check("postgres://app:s3cret@db.example:5432/chronicle",
          "postgres://app:****@db.example:5432/chronicle");
    check("postgresql://app:p%40ss@db/x?sslmode=require", "postgresql://app:****@db/x?sslmode=require");
    /* The user information ends at the authority's last '@'. */
    check("postgres://app:a@b@db/x", "postgres://app:****@db/x");
}

static void test_query_password(void **state)
{
    (void)state;
    check("postgres:///chronicle?host=/run/pg&password=hunter2&port=5433",
          "postgres:///chronicle?host=/run/pg&password=****&port=5433");
    check("postgres://u@db/x?password=a&password=b#frag", "postgres://u@db/x?password=****&password=****#frag");
    check("postgres://u:p@db/x?password=a", "postgres://u:****@db/x?password=****");
}

static void test_nothing_to_hide(void **state)
{
    (void)state;
    check("postgres://postgres@/postgres?host=/tmp/x&port=5432",
          "postgres://postgres@/postgres?host=/tmp/x&port=5432");
    check("postgres://db/x", "postgres://db/x");
    check("sqlite:./chronicle.db", "sqlite:./chronicle.db");
    check("sqlite://relative/path.db", "sqlite://relative/path.db");
    check("", "");
    /* An '@' after the authority is not user information. */
    check("postgres://db/x?application_name=a:b@c", "postgres://db/x?application_name=a:b@c");
    /* "://" inside a value is no scheme. */
    check("/path/to?x=http://u:p@h", "/path/to?x=http://u:p@h");
}

static void test_truncates(void **state)
{
    (void)state;
    char out[12];
    memset(out, 'x', sizeof out);
    url_redact("postgres://u:p@h/db", out, sizeof out);
    assert_int_equal(strlen(out), sizeof out - 1);
    assert_string_equal(out, "postgres://");
    char one[1];
    url_redact("postgres://u:p@h/db", one, sizeof one);
    assert_string_equal(one, "");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_userinfo_password),
        cmocka_unit_test(test_query_password),
        cmocka_unit_test(test_nothing_to_hide),
        cmocka_unit_test(test_truncates),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
