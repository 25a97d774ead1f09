/*
 * test_access.c - unit tests of core/access.h: parsing rule sets (every
 * rule kind, arrays, the errors) and the verdict for each kind of caller:
 * no credential, a credential without roles, with a role, with a subject
 * (owner rules), and full access.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "core/access.h"

static access_set_t parse_ok(const char *json)
{
    json_error_t je;
    json_t *v = json_loads(json, JSON_DECODE_ANY, &je);
    assert_non_null(v);
    access_set_t s;
    char why[256] = "";
    bool ok = access_parse(v, &s, why, sizeof why);
    json_decref(v);
    if (!ok) fail_msg("%s: %s", json, why);
    return s;
}

static void parse_bad(const char *json, const char *want)
{
    json_t *v = json_loads(json, JSON_DECODE_ANY, NULL);
    assert_non_null(v);
    access_set_t s;
    char why[256] = "";
    assert_false(access_parse(v, &s, why, sizeof why));
    json_decref(v);
    assert_non_null(strstr(why, want));
    assert_null(s.rules);
    assert_int_equal(s.n, 0);
}

static auth_principal_t principal(const char *sub, const char *role)
{
    auth_principal_t p;
    memset(&p, 0, sizeof p);
    p.kind = AUTH_JWT;
    if (sub) snprintf(p.sub, sizeof p.sub, "%s", sub);
    if (role) assert_true(auth_principal_add_role(&p, role, strlen(role)));
    return p;
}

static void test_parse_kinds(void **state)
{
    (void)state;
    access_set_t s = parse_ok("\"public\"");
    assert_int_equal(s.n, 1);
    assert_int_equal(s.rules[0].kind, ACCESS_PUBLIC);
    assert_true(access_is_public(&s));
    assert_null(access_owner_field(&s));
    access_set_free(&s);

    s = parse_ok("[\"role:admin\", \"owner:owner_id\", \"authenticated\"]");
    assert_int_equal(s.n, 3);
    assert_int_equal(s.rules[0].kind, ACCESS_ROLE);
    assert_string_equal(s.rules[0].arg, "admin");
    assert_int_equal(s.rules[1].kind, ACCESS_OWNER);
    assert_string_equal(access_owner_field(&s), "owner_id");
    assert_int_equal(s.rules[2].kind, ACCESS_AUTHENTICATED);
    assert_false(access_is_public(&s));
    assert_false(s.is_default);
    access_set_free(&s);

    assert_true(access_default(&s));
    assert_true(s.is_default);
    assert_int_equal(s.rules[0].kind, ACCESS_AUTHENTICATED);
    access_set_free(&s);
}

static void test_parse_errors(void **state)
{
    (void)state;
    parse_bad("\"everyone\"", "unknown rule \"everyone\"");
    parse_bad("[]", "non-empty array");
    parse_bad("3", "must be a rule");
    parse_bad("[\"public\", 1]", "[1]: must be a string rule");
    parse_bad("\"role:\"", "a role name is 1-127 characters");
    parse_bad("\"role:a b\"", "a role name");
    parse_bad("\"owner:Owner\"", "owner: must name a field");
    parse_bad("[\"owner:a\", \"owner:b\"]", "at most one owner: rule");
    parse_bad("[\"public\", \"public\"]", "given twice");
}

static void test_verdicts(void **state)
{
    (void)state;
    access_set_t pub = parse_ok("\"public\""), auth = parse_ok("\"authenticated\""),
                 role = parse_ok("\"role:admin\""), owner = parse_ok("\"owner:owner_id\""),
                 either = parse_ok("[\"owner:owner_id\", \"role:admin\"]");
    auth_principal_t alice = principal("alice", NULL), admin = principal("root", "admin"),
                     nosub = principal(NULL, "viewer");
    access_scope_t anon = {0}, a = {.who = &alice}, adm = {.who = &admin}, ns = {.who = &nosub};

    /* public admits everyone */
    assert_int_equal(access_check(&pub, &anon), ACCESS_ALLOW);
    assert_int_equal(access_check(&pub, &a), ACCESS_ALLOW);
    /* authenticated: any credential */
    assert_int_equal(access_check(&auth, &anon), ACCESS_UNAUTHENTICATED);
    assert_int_equal(access_check(&auth, &a), ACCESS_ALLOW);
    /* role: only with the role */
    assert_int_equal(access_check(&role, &anon), ACCESS_UNAUTHENTICATED);
    assert_int_equal(access_check(&role, &a), ACCESS_FORBIDDEN);
    assert_int_equal(access_check(&role, &adm), ACCESS_ALLOW);
    /* owner: rows of the caller's subject; a credential without one owns nothing */
    assert_int_equal(access_check(&owner, &anon), ACCESS_UNAUTHENTICATED);
    assert_int_equal(access_check(&owner, &a), ACCESS_OWNED);
    assert_int_equal(access_check(&owner, &ns), ACCESS_FORBIDDEN);
    assert_true(access_owns(&a, "alice"));
    assert_false(access_owns(&a, "bob"));
    assert_false(access_owns(&a, NULL));
    assert_false(access_owns(&anon, "alice"));
    /* any of: the role lifts the owner condition */
    assert_int_equal(access_check(&either, &a), ACCESS_OWNED);
    assert_int_equal(access_check(&either, &adm), ACCESS_ALLOW);
    /* full access passes everything; a NONE principal is no credential */
    assert_int_equal(access_check(&role, &access_scope_full), ACCESS_ALLOW);
    assert_int_equal(access_check(&owner, &access_scope_full), ACCESS_ALLOW);
    auth_principal_t none;
    memset(&none, 0, sizeof none);
    access_scope_t n = {.who = &none};
    assert_int_equal(access_check(&auth, &n), ACCESS_UNAUTHENTICATED);

    access_set_free(&pub);
    access_set_free(&auth);
    access_set_free(&role);
    access_set_free(&owner);
    access_set_free(&either);
}

static void test_tenant(void **state)
{
    (void)state;
    access_scope_t s = {.tenant = NULL};
    assert_null(access_tenant(&s));
    s.tenant = "";
    assert_null(access_tenant(&s));
    s.tenant = "acme";
    assert_string_equal(access_tenant(&s), "acme");
    assert_null(access_tenant(&access_scope_full));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_kinds),
        cmocka_unit_test(test_parse_errors),
        cmocka_unit_test(test_verdicts),
        cmocka_unit_test(test_tenant),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
