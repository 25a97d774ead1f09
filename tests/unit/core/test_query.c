/*
 * test_query.c - unit tests of core/query.h: filters for every operator and
 * field type, the private-equals-unknown rule, sort and limit parsing,
 * cursors (round trip, tampering, another sort), the exact SQL of a few
 * queries, paging through a real in-memory SQLite table in the projection
 * layout with NULLs in the sort columns, and every allocation failure.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Allocation failure injection (as curl's torture tests): query.c is
 * compiled into this test with its malloc/calloc/realloc routed through
 * wrappers that fail once a budget is spent, and jansson gets the same
 * budget through json_set_alloc_funcs (see test_out_of_memory). With no
 * budget set the wrappers are plain pass-throughs. Linking: this object then
 * defines every symbol of query.o, so the linker never takes query.o from
 * the library. */
static long g_alloc_budget = -1; /* allocations left; < 0: never fail */

static bool alloc_allowed(void)
{
    if (g_alloc_budget < 0) return true;
    if (g_alloc_budget == 0) return false;
    g_alloc_budget--;
    return true;
}

static void *t_malloc(size_t n)
{
    return alloc_allowed() ? malloc(n) : NULL;
}

static void *t_calloc(size_t n, size_t size)
{
    return alloc_allowed() ? calloc(n, size) : NULL;
}

static void *t_realloc(void *p, size_t n)
{
    return alloc_allowed() ? realloc(p, n) : NULL;
}

#define malloc t_malloc
#define calloc t_calloc
#define realloc t_realloc
#include "core/query.c"
#undef malloc
#undef calloc
#undef realloc

#include <cmocka.h>
#include <sqlite3.h>

#include "core/definition.h"
#include "core/query.h"
#include "core/timefmt.h"

static const char APP[] =
    "{\"app\": \"t\", \"entities\": {"
    " \"tasks\": {\"key\": \"task_id\", \"fields\": {"
    "   \"title\":    {\"type\": \"string\"},"
    "   \"notes\":    {\"type\": \"text\"},"
    "   \"status\":   {\"type\": \"enum\", \"values\": [\"todo\", \"doing\", \"done\"]},"
    "   \"priority\": {\"type\": \"integer\", \"min\": 0},"
    "   \"score\":    {\"type\": \"number\"},"
    "   \"done\":     {\"type\": \"boolean\"},"
    "   \"due\":      {\"type\": \"timestamp\"},"
    "   \"meta\":     {\"type\": \"json\"},"
    "   \"secret\":   {\"type\": \"string\", \"private\": true},"
    "   \"owner\":    {\"type\": \"email\"},"
    "   \"board\":    {\"type\": \"ref\", \"to\": \"boards\"},"
    "   \"schedule\": {\"type\": \"cron\"}}},"
    " \"boards\": {\"key\": \"board_id\", \"fields\": {\"name\": {\"type\": \"string\"}}}}}";

static definition_t *g_def;
static const entity_def_t *g_tasks;

static int group_setup(void **state)
{
    (void)state;
    chr_err_t err;
    chr_err_clear(&err);
    if (definition_load(APP, strlen(APP), &g_def, &err) != CHR_OK) {
        fprintf(stderr, "definition_load: %s\n", err.msg);
        return -1;
    }
    g_tasks = definition_entity(g_def, "tasks");
    return g_tasks ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    definition_free(g_def);
    return 0;
}

/* kv: name, value, name, value, ..., NULL */
#define KV(...) ((const char *const[]){__VA_ARGS__, NULL})
#define NO_KV ((const char *const[]){NULL})

static int parse_kv(const list_opts_t *o, const char *const *kv, query_t *q, chr_err_t *err)
{
    const char *names[32], *values[32];
    size_t n = 0;
    while (kv[2 * n]) {
        assert_true(n < 32);
        names[n] = kv[2 * n];
        values[n] = kv[2 * n + 1];
        n++;
    }
    chr_err_clear(err);
    return query_parse(g_tasks, o, names, values, n, q, err);
}

static void parse_ok(const list_opts_t *o, const char *const *kv, query_t *q)
{
    chr_err_t err;
    int rc = parse_kv(o, kv, q, &err);
    if (rc != CHR_OK) fail_msg("%s=%s rejected: %s", kv[0], kv[0] ? kv[1] : "", err.msg);
}

static void parse_fails(const list_opts_t *o, const char *const *kv, const char *field,
                        const char *msg)
{
    chr_err_t err;
    query_t q;
    int rc = parse_kv(o, kv, &q, &err);
    if (rc != CHR_EINVAL) {
        query_free(&q);
        fail_msg("%s=%s accepted (rc %d), want: %s", kv[0], kv[1], rc, msg);
    }
    assert_int_equal(err.code, CHR_EINVAL);
    assert_string_equal(err.field, field);
    assert_string_equal(err.msg, msg);
    assert_null(q.filters);
    assert_null(q.sort);
    assert_null(q.table);
    query_free(&q); /* harmless on the emptied query */
}

/* One filter of one parameter: checks its op and first value. */
static void one_filter(const char *name, const char *value, query_op_t op, query_filter_t *out,
                       query_t *q)
{
    parse_ok(NULL, KV(name, value), q);
    assert_int_equal(q->n_filters, 1);
    assert_string_equal(q->filters[0].column, name);
    assert_int_equal(q->filters[0].op, op);
    *out = q->filters[0];
}

static void assert_text(const store_val_t *v, const char *want)
{
    assert_int_equal(v->type, SV_TEXT);
    assert_string_equal(v->s, want);
}

static void assert_int_val(const store_val_t *v, int64_t want)
{
    assert_int_equal(v->type, SV_INT);
    assert_int_equal(v->i, want);
}

/* ---- filters ------------------------------------------------------------ */

static void test_operators(void **state)
{
    (void)state;
    static const struct {
        const char *value;
        query_op_t op;
        const char *text;
    } cases[] = {
        {"abc", QOP_EQ, "abc"},      {"eq.abc", QOP_EQ, "abc"},
        {"neq.abc", QOP_NEQ, "abc"}, {"gt.abc", QOP_GT, "abc"},
        {"gte.abc", QOP_GTE, "abc"}, {"lt.abc", QOP_LT, "abc"},
        {"lte.abc", QOP_LTE, "abc"}, {"like.a*c", QOP_LIKE, "a%c"},
        {"in.abc", QOP_IN, "abc"},   {"foo.bar", QOP_EQ, "foo.bar"},
        {"eq", QOP_EQ, "eq"},        {"eq.gt.5", QOP_EQ, "gt.5"},
        {"Eq.x", QOP_EQ, "Eq.x"},    {"gtx.1", QOP_EQ, "gtx.1"},
        {"eq.", QOP_EQ, ""},         {"", QOP_EQ, ""},
        {".x", QOP_EQ, ".x"},        {"in.", QOP_IN, ""},
        {"like.", QOP_LIKE, ""},     {"neq.a.b", QOP_NEQ, "a.b"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        query_t q;
        query_filter_t f;
        one_filter("title", cases[i].value, cases[i].op, &f, &q);
        assert_int_equal(f.n_vals, 1);
        assert_text(&f.vals[0], cases[i].text);
        query_free(&q);
    }
}

static void test_in_lists(void **state)
{
    (void)state;
    query_t q;
    query_filter_t f;
    one_filter("status", "in.todo,doing", QOP_IN, &f, &q);
    assert_int_equal(f.n_vals, 2);
    assert_text(&f.vals[0], "todo");
    assert_text(&f.vals[1], "doing");
    query_free(&q);

    one_filter("priority", "in.1,-2,30", QOP_IN, &f, &q);
    assert_int_equal(f.n_vals, 3);
    assert_int_val(&f.vals[0], 1);
    assert_int_val(&f.vals[1], -2);
    assert_int_val(&f.vals[2], 30);
    query_free(&q);

    one_filter("title", "in.a,,b,", QOP_IN, &f, &q);
    assert_int_equal(f.n_vals, 4);
    assert_text(&f.vals[1], "");
    assert_text(&f.vals[3], "");
    query_free(&q);

    one_filter("done", "in.true,false", QOP_IN, &f, &q);
    assert_int_val(&f.vals[0], 1);
    assert_int_val(&f.vals[1], 0);
    query_free(&q);

    parse_fails(NULL, KV("status", "in.todo,nope"), "status",
                "status: must be one of: todo, doing, done");
    parse_fails(NULL, KV("priority", "in.1,x"), "priority", "priority: must be an integer");
    parse_fails(NULL, KV("priority", "in."), "priority", "priority: must be an integer");

    char big[512] = "in.";
    for (int i = 0; i < QUERY_MAX_IN_VALUES; i++)
        snprintf(big + strlen(big), sizeof big - strlen(big), "%s1", i ? "," : "");
    one_filter("priority", big, QOP_IN, &f, &q);
    assert_int_equal(f.n_vals, QUERY_MAX_IN_VALUES);
    query_free(&q);
    snprintf(big + strlen(big), sizeof big - strlen(big), ",1");
    parse_fails(NULL, KV("priority", big), "priority", "priority: in takes at most 100 values");
}

static void test_like(void **state)
{
    (void)state;
    query_t q;
    query_filter_t f;
    one_filter("title", "like.*50%_off\\*", QOP_LIKE, &f, &q);
    assert_text(&f.vals[0], "%50\\%\\_off\\\\%");
    query_free(&q);

    /* like is for the text kinds, enum values are not checked for it */
    const char *ok[] = {"title", "notes", "owner", "board", "schedule", "status", "task_id"};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        one_filter(ok[i], "like.*x*", QOP_LIKE, &f, &q);
        assert_text(&f.vals[0], "%x%");
        query_free(&q);
    }
    const char *msg = "operator like applies only to string, text, email, enum, ref and cron "
                      "fields";
    const char *bad[] = {"priority", "score", "due", "created_at", "updated_at", "version"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char want[256];
        snprintf(want, sizeof want, "%s: %s", bad[i], msg);
        parse_fails(NULL, KV(bad[i], "like.1*"), bad[i], want);
    }
    parse_fails(NULL, KV("done", "like.t*"), "done",
                "done: operator like does not apply to boolean fields (use eq, neq or in)");
}

static void test_integer_values(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        int64_t want;
    } good[] = {
        {"0", 0},
        {"-7", -7},
        {"42", 42},
        {"007", 7},
        {"9223372036854775807", INT64_MAX},
        {"-9223372036854775808", INT64_MIN},
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        query_t q;
        query_filter_t f;
        one_filter("priority", good[i].text, QOP_EQ, &f, &q);
        assert_int_val(&f.vals[0], good[i].want);
        query_free(&q);
        one_filter("version", good[i].text, QOP_EQ, &f, &q);
        assert_int_val(&f.vals[0], good[i].want);
        query_free(&q);
    }
    /* min/max of the field do not limit filters: gt.-5 is a fine question */
    query_t q;
    query_filter_t f;
    one_filter("priority", "gt.-5", QOP_GT, &f, &q);
    assert_int_val(&f.vals[0], -5);
    query_free(&q);

    const char *bad[] = {"",
                         "1.5",
                         "1e3",
                         " 1",
                         "1 ",
                         "+1",
                         "0x10",
                         "-",
                         "abc",
                         "9223372036854775808",
                         "-9223372036854775809",
                         "1,2"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        parse_fails(NULL, KV("priority", bad[i]), "priority", "priority: must be an integer");
        parse_fails(NULL, KV("version", bad[i]), "version", "version: must be an integer");
    }
    parse_fails(NULL, KV("priority", "gte.x"), "priority", "priority: must be an integer");
}

static void test_number_values(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        double want;
    } good[] = {{"1.5", 1.5}, {"-2e3", -2000}, {"0", 0}, {"-0", 0}, {"7", 7}, {".5", 0.5}};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        query_t q;
        query_filter_t f;
        one_filter("score", good[i].text, QOP_EQ, &f, &q);
        assert_int_equal(f.vals[0].type, SV_REAL);
        assert_true(f.vals[0].r == good[i].want);
        query_free(&q);
    }
    const char *bad[] = {"", "nan", "inf", "-infinity", "1e999", "0x1p3", " 1", "1,5", "1.5x", "e"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        parse_fails(NULL, KV("score", bad[i]), "score", "score: must be a number");
}

static void test_boolean_values(void **state)
{
    (void)state;
    query_t q;
    query_filter_t f;
    one_filter("done", "true", QOP_EQ, &f, &q);
    assert_int_val(&f.vals[0], 1);
    query_free(&q);
    one_filter("done", "neq.false", QOP_NEQ, &f, &q);
    assert_int_val(&f.vals[0], 0);
    query_free(&q);
    const char *bad[] = {"", "1", "0", "TRUE", "yes", "t"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        parse_fails(NULL, KV("done", bad[i]), "done", "done: must be true or false");
    const char *ops[] = {"gt", "gte", "lt", "lte"};
    for (size_t i = 0; i < 4; i++) {
        char v[32], want[128];
        snprintf(v, sizeof v, "%s.true", ops[i]);
        snprintf(want, sizeof want,
                 "done: operator %s does not apply to boolean fields (use eq, neq or in)", ops[i]);
        parse_fails(NULL, KV("done", v), "done", want);
    }
}

static void test_time_values(void **state)
{
    (void)state;
    query_t q;
    query_filter_t f;
    /* timestamp fields compare canonical text */
    one_filter("due", "gte.2026-01-02T04:04:05+01:00", QOP_GTE, &f, &q);
    assert_text(&f.vals[0], "2026-01-02T03:04:05.000000Z");
    query_free(&q);
    one_filter("due", "2026-01-02", QOP_EQ, &f, &q);
    assert_text(&f.vals[0], "2026-01-02T00:00:00.000000Z");
    query_free(&q);
    /* created_at / updated_at compare microseconds */
    one_filter("created_at", "lt.2026-01-02T03:04:05.123456Z", QOP_LT, &f, &q);
    assert_int_val(&f.vals[0], INT64_C(1767323045123456));
    query_free(&q);
    one_filter("updated_at", "in.1970-01-01T00:00:00Z,1970-01-01T00:00:01Z", QOP_IN, &f, &q);
    assert_int_val(&f.vals[0], 0);
    assert_int_val(&f.vals[1], 1000000);
    query_free(&q);

    const char *msg = "must be an RFC 3339 timestamp such as 2026-01-02T03:04:05Z";
    const char *bad[] = {"", "yesterday", "2026-13-01T00:00:00Z", "1767323045", "2026-01-02T03:04"};
    const char *cols[] = {"due", "created_at", "updated_at"};
    for (size_t c = 0; c < 3; c++) {
        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
            char want[160];
            snprintf(want, sizeof want, "%s: %s", cols[c], msg);
            parse_fails(NULL, KV(cols[c], bad[i]), cols[c], want);
        }
    }
    parse_fails(NULL, KV("due", "2026-01-02\xff"), "due", "due: " TIMESTAMP_MSG);
}

static void test_text_values(void **state)
{
    (void)state;
    query_t q;
    query_filter_t f;
    one_filter("status", "doing", QOP_EQ, &f, &q);
    assert_text(&f.vals[0], "doing");
    query_free(&q);
    parse_fails(NULL, KV("status", "neq.later"), "status",
                "status: must be one of: todo, doing, done");
    parse_fails(NULL, KV("status", "gt.Todo"), "status",
                "status: must be one of: todo, doing, done");

    /* no shape check for the other text kinds: a filter asks, it does not store */
    const char *cols[] = {"title", "notes", "owner", "board", "schedule", "task_id"};
    for (size_t i = 0; i < sizeof cols / sizeof cols[0]; i++) {
        one_filter(cols[i], "neq.not / a valid thing", QOP_NEQ, &f, &q);
        assert_text(&f.vals[0], "not / a valid thing");
        assert_int_equal(q.filters[0].email, strcmp(cols[i], "owner") == 0);
        assert_int_equal(q.filters[0].nullable, strcmp(cols[i], "task_id") != 0);
        query_free(&q);
    }
    one_filter("title", "caf\xc3\xa9", QOP_EQ, &f, &q);
    query_free(&q);
    parse_fails(NULL, KV("title", "caf\xc3"), "title", "title: must be valid UTF-8");
    parse_fails(NULL, KV("title", "in.ok,\xff"), "title", "title: must be valid UTF-8");
    parse_fails(NULL, KV("title", "\xed\xa0\x80"), "title", "title: must be valid UTF-8");
}

static void test_repeated_filters(void **state)
{
    (void)state;
    query_t q;
    parse_ok(NULL, KV("priority", "gte.2", "priority", "lt.5", "title", "x"), &q);
    assert_int_equal(q.n_filters, 3);
    assert_int_equal(q.filters[0].op, QOP_GTE);
    assert_int_equal(q.filters[1].op, QOP_LT);
    assert_string_equal(q.filters[2].column, "title");
    query_free(&q);
}

static void test_unknown_private_json(void **state)
{
    (void)state;
    /* a private field is indistinguishable from one that does not exist */
    parse_fails(NULL, KV("nosuch", "x"), "nosuch", "nosuch: tasks has no field nosuch");
    parse_fails(NULL, KV("secret", "x"), "secret", "secret: tasks has no field secret");
    parse_fails(NULL, KV("secret", "like.*"), "secret", "secret: tasks has no field secret");
    parse_fails(NULL, KV("secret", "gt.a"), "secret", "secret: tasks has no field secret");
    parse_fails(NULL, KV("", "x"), "", ": tasks has no field ");
    parse_fails(NULL, KV("sort", "secret"), "sort", "sort: tasks has no field secret");
    parse_fails(NULL, KV("sort", "nosuch"), "sort", "sort: tasks has no field nosuch");
    parse_fails(NULL, KV("sort", "-secret"), "sort", "sort: tasks has no field secret");
    /* another entity's key is not a field here */
    parse_fails(NULL, KV("board_id", "x"), "board_id", "board_id: tasks has no field board_id");

    parse_fails(NULL, KV("meta", "x"), "meta", "meta: json fields cannot be filtered");
    parse_fails(NULL, KV("meta", "in.1,2"), "meta", "meta: json fields cannot be filtered");
    parse_fails(NULL, KV("sort", "meta"), "sort", "sort: json field meta cannot be sorted on");

    /* the first bad parameter is reported */
    parse_fails(NULL, KV("title", "ok", "priority", "x", "nosuch", "y"), "priority",
                "priority: must be an integer");
}

static void test_ignore_and_reserved(void **state)
{
    (void)state;
    const char *const ignore[] = {"at", "fields", NULL};
    list_opts_t o = {.ignore = ignore};
    query_t q;
    parse_ok(&o, KV("at", "whatever", "fields", "a,b", "title", "x"), &q);
    assert_int_equal(q.n_filters, 1);
    query_free(&q);
    parse_fails(NULL, KV("at", "2026-01-01"), "at", "at: tasks has no field at");
    parse_fails(NULL, KV("sort", "title", "sort", "title"), "sort", "sort: given more than once");
    parse_fails(NULL, KV("limit", "5", "limit", "5"), "limit", "limit: given more than once");
    parse_fails(NULL, KV("after", "", "after", ""), "after", "after: given more than once");
    /* version is a filter on lists */
    parse_ok(NULL, KV("version", "gt.1"), &q);
    assert_int_equal(q.filters[0].kind, QK_INT);
    assert_false(q.filters[0].nullable);
    query_free(&q);
}

static void test_fixed_filters(void **state)
{
    (void)state;
    json_t *ff = json_pack("{s:s, s:b, s:i, s:s, s:n, s:s}", "status", "todo", "done", 0,
                           "priority", 3, "secret", "gt.x", "due", "title", "neq.a");
    assert_non_null(ff);
    list_opts_t o = {.fixed_filters = ff};
    query_t q;
    parse_ok(&o, KV("title", "neq.b"), &q);
    assert_int_equal(q.n_filters, 7);
    assert_int_equal(q.filters[0].op, QOP_EQ);
    assert_text(&q.filters[0].vals[0], "todo");
    assert_int_val(&q.filters[1].vals[0], 0);
    assert_int_val(&q.filters[2].vals[0], 3);
    /* private fields are allowed to the route's author; values are literal */
    assert_string_equal(q.filters[3].column, "secret");
    assert_int_equal(q.filters[3].op, QOP_EQ);
    assert_text(&q.filters[3].vals[0], "gt.x");
    assert_int_equal(q.filters[4].op, QOP_IS_NULL);
    assert_int_equal(q.filters[4].n_vals, 0);
    assert_text(&q.filters[5].vals[0], "neq.a");
    assert_int_equal(q.filters[5].op, QOP_EQ);
    assert_int_equal(q.filters[6].op, QOP_NEQ);

    char *sql;
    store_val_t *p;
    size_t np;
    chr_err_t err;
    assert_int_equal(query_sql(&q, g_tasks, "\"task_id\"", &sql, &p, &np, &err), CHR_OK);
    assert_string_equal(sql, "SELECT \"task_id\", \"task_id\" FROM \"tasks\" WHERE \"_deleted\" = 0"
                             " AND \"status\" = ? AND \"done\" = ? AND \"priority\" = ?"
                             " AND \"secret\" = ? AND \"due\" IS NULL AND \"title\" = ?"
                             " AND (\"title\" IS NULL OR \"title\" <> ?)"
                             " ORDER BY \"task_id\" ASC LIMIT ?");
    assert_int_equal(np, 7);
    free(sql);
    free(p);
    query_free(&q);
    json_decref(ff);

    ff = json_pack("{s:s}", "meta", "x");
    o.fixed_filters = ff;
    parse_fails(&o, NO_KV, "meta", "meta: json fields cannot be filtered");
    json_decref(ff);
    ff = json_pack("{s:s}", "priority", "x");
    o.fixed_filters = ff;
    parse_fails(&o, NO_KV, "priority", "priority: must be an integer");
    json_decref(ff);
    ff = json_pack("{s:[]}", "title");
    o.fixed_filters = ff;
    parse_fails(&o, NO_KV, "title",
                "title: a fixed filter must be a string, number, boolean or null");
    json_decref(ff);
}

/* ---- sort and limit ----------------------------------------------------- */

static void test_sort(void **state)
{
    (void)state;
    query_t q;
    /* default: the key ascending, no extra tie-breaker */
    parse_ok(NULL, NO_KV, &q);
    assert_int_equal(q.n_sort, 1);
    assert_string_equal(q.sort[0].column, "task_id");
    assert_false(q.sort[0].desc);
    assert_false(q.key_tiebreak);
    assert_int_equal(q.limit, 50);
    query_free(&q);

    parse_ok(NULL, KV("sort", "-created_at,title,-priority"), &q);
    assert_int_equal(q.n_sort, 3);
    assert_string_equal(q.sort[0].column, "created_at");
    assert_true(q.sort[0].desc);
    assert_int_equal(q.sort[0].kind, QK_TIME);
    assert_false(q.sort[0].nullable);
    assert_string_equal(q.sort[1].column, "title");
    assert_false(q.sort[1].desc);
    assert_true(q.sort[1].nullable);
    assert_true(q.sort[2].desc);
    assert_int_equal(q.sort[2].kind, QK_INT);
    assert_true(q.key_tiebreak);
    assert_true(q.tiebreak_desc); /* the last term's direction */
    query_free(&q);

    /* the route's fixed sort is the default; ?sort= overrides it */
    list_opts_t o = {.fixed_sort = "-updated_at"};
    parse_ok(&o, NO_KV, &q);
    assert_string_equal(q.sort[0].column, "updated_at");
    assert_true(q.sort[0].desc);
    query_free(&q);
    parse_ok(&o, KV("sort", "due"), &q);
    assert_string_equal(q.sort[0].column, "due");
    assert_int_equal(q.sort[0].kind, QK_TSTEXT);
    query_free(&q);

    /* every sortable kind */
    parse_ok(NULL, KV("sort", "status,score,done,version,owner,board,schedule,-task_id"), &q);
    assert_int_equal(q.n_sort, 8);
    assert_false(q.key_tiebreak);
    query_free(&q);

    parse_fails(NULL, KV("sort", "title,-title"), "sort", "sort: title is given more than once");
    parse_fails(NULL, KV("sort", ""), "sort", "sort: empty field name");
    parse_fails(NULL, KV("sort", "-"), "sort", "sort: empty field name");
    parse_fails(NULL, KV("sort", "title,"), "sort", "sort: empty field name");
    parse_fails(NULL, KV("sort", ",title"), "sort", "sort: empty field name");
    parse_fails(NULL, KV("sort", "+title"), "sort", "sort: tasks has no field +title");
    parse_fails(NULL, KV("sort", "title desc"), "sort", "sort: tasks has no field title desc");
    parse_fails(NULL, KV("sort", "a,b,c,d,e,f,g,h,i"), "sort", "sort: at most 8 fields");
}

static void test_limit(void **state)
{
    (void)state;
    query_t q;
    parse_ok(NULL, KV("limit", "7"), &q);
    assert_int_equal(q.limit, 7);
    query_free(&q);
    parse_ok(NULL, KV("limit", "1000"), &q);
    assert_int_equal(q.limit, 1000);
    query_free(&q);
    const char *bad[] = {"0", "1001", "-1", "", "abc", "1.0", " 5", "99999999999999999999"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        parse_fails(NULL, KV("limit", bad[i]), "limit", "limit: must be an integer from 1 to 1000");

    list_opts_t o = {.default_limit = 20, .max_limit = 100};
    parse_ok(&o, NO_KV, &q);
    assert_int_equal(q.limit, 20);
    query_free(&q);
    parse_ok(&o, KV("limit", "100"), &q);
    assert_int_equal(q.limit, 100);
    query_free(&q);
    parse_fails(&o, KV("limit", "101"), "limit", "limit: must be an integer from 1 to 100");
    /* a default above the maximum is clamped */
    list_opts_t o2 = {.max_limit = 10};
    parse_ok(&o2, NO_KV, &q);
    assert_int_equal(q.limit, 10);
    query_free(&q);
}

/* ---- cursors ------------------------------------------------------------ */

static char *make_cursor(query_t *q, const store_val_t *vals, size_t n, const char *key)
{
    char *c = NULL;
    assert_int_equal(query_cursor(q, vals, n, key, &c), CHR_OK);
    assert_non_null(c);
    for (const char *p = c; *p; p++)
        assert_non_null(
            strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", *p));
    return c;
}

static void test_cursor_round_trip(void **state)
{
    (void)state;
    const char *sort = "-created_at,title,score,done,-due";
    query_t q;
    parse_ok(NULL, KV("sort", sort), &q);
    store_val_t vals[5] = {
        {.type = SV_INT, .i = INT64_C(1767323045123456)},
        {.type = SV_TEXT, .s = "h\xc3\xa9llo \"q\" / ,"},
        {.type = SV_REAL, .r = 0.1},
        {.type = SV_NULL},
        {.type = SV_TEXT, .s = ""},
    };
    char *c = make_cursor(&q, vals, 5, "k/1?");
    query_free(&q);

    parse_ok(NULL, KV("sort", sort, "after", c), &q);
    assert_int_equal(q.n_after, 6);
    assert_int_val(&q.after[0], INT64_C(1767323045123456));
    assert_text(&q.after[1], "h\xc3\xa9llo \"q\" / ,");
    assert_int_equal(q.after[2].type, SV_REAL);
    assert_true(q.after[2].r == 0.1);
    assert_int_val(&q.after[3], -1); /* a NULL boolean sorts as -1 */
    assert_text(&q.after[4], "");
    assert_text(&q.after[5], "k/1?");
    query_free(&q);

    /* an empty after= is the first page */
    parse_ok(NULL, KV("sort", sort, "after", ""), &q);
    assert_null(q.after);
    query_free(&q);

    /* integers for a number column are accepted; nulls become sentinels */
    parse_ok(NULL, KV("sort", "score,priority,-title"), &q);
    store_val_t v2[3] = {{.type = SV_INT, .i = 3}, {.type = SV_NULL}, {.type = SV_NULL}};
    char *c2 = make_cursor(&q, v2, 3, "k");
    query_free(&q);
    parse_ok(NULL, KV("sort", "score,priority,-title", "after", c2), &q);
    assert_int_equal(q.after[0].type, SV_REAL);
    assert_true(q.after[0].r == 3.0);
    assert_int_val(&q.after[1], INT64_MIN + 1);
    assert_text(&q.after[2], "");
    query_free(&q);
    free(c2);

    /* wrong shapes are refused by query_cursor */
    parse_ok(NULL, KV("sort", sort), &q);
    char *bad = (char *)1;
    assert_int_equal(query_cursor(&q, vals, 4, "k", &bad), CHR_EINVAL);
    assert_null(bad);
    store_val_t wrong[5];
    memcpy(wrong, vals, sizeof wrong);
    wrong[0] = (store_val_t){.type = SV_TEXT, .s = "1"};
    assert_int_equal(query_cursor(&q, wrong, 5, "k", &bad), CHR_EINVAL);
    memcpy(wrong, vals, sizeof wrong);
    wrong[1] = (store_val_t){.type = SV_INT, .i = 1};
    assert_int_equal(query_cursor(&q, wrong, 5, "k", &bad), CHR_EINVAL);
    memcpy(wrong, vals, sizeof wrong);
    wrong[2] = (store_val_t){.type = SV_REAL, .r = 1.0 / 0.0};
    assert_int_equal(query_cursor(&q, wrong, 5, "k", &bad), CHR_EINVAL);
    assert_int_equal(query_cursor(&q, vals, 5, NULL, &bad), CHR_EINVAL);
    query_free(&q);
    free(c);
}

/* Asserts that after=token is refused for sort. */
static void cursor_refused(const char *sort, const char *token)
{
    parse_fails(NULL, KV("sort", sort, "after", token), "after", "after: invalid cursor");
}

/* base64url of text (a hand-made cursor); caller frees. */
static char *b64(const char *text)
{
    char *s = query_b64url_encode((const unsigned char *)text, strlen(text));
    assert_non_null(s);
    return s;
}

static void test_cursor_tampering(void **state)
{
    (void)state;
    query_t q;
    parse_ok(NULL, KV("sort", "-priority,title"), &q);
    store_val_t vals[2] = {{.type = SV_INT, .i = 5}, {.type = SV_TEXT, .s = "abc"}};
    char *c = make_cursor(&q, vals, 2, "key-1");
    query_free(&q);

    /* every single-character change is caught */
    size_t len = strlen(c);
    const char *alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    for (size_t i = 0; i < len; i++) {
        char *t = malloc(len + 1);
        memcpy(t, c, len + 1);
        t[i] = alphabet[(strchr(alphabet, t[i]) - alphabet + 17) % 64];
        cursor_refused("-priority,title", t);
        free(t);
    }
    /* truncated, extended, padded, foreign characters */
    char t[1024];
    snprintf(t, sizeof t, "%.*s", (int)len - 1, c);
    cursor_refused("-priority,title", t);
    snprintf(t, sizeof t, "%.*s", (int)len - 4, c);
    cursor_refused("-priority,title", t);
    snprintf(t, sizeof t, "%sAAAA", c);
    cursor_refused("-priority,title", t);
    snprintf(t, sizeof t, "%s=", c);
    cursor_refused("-priority,title", t);
    snprintf(t, sizeof t, "%s.", c);
    cursor_refused("-priority,title", t);
    cursor_refused("-priority,title", "not a cursor");
    cursor_refused("-priority,title", "e30");

    /* the same cursor under another sort, or another entity's key name */
    cursor_refused("priority,title", c);
    cursor_refused("-priority,-title", c);
    cursor_refused("-priority,notes", c);
    cursor_refused("-priority", c);
    cursor_refused("-priority,title,score", c);
    cursor_refused("task_id", c);
    free(c);

    /* well-formed JSON of the wrong shape, with a correct-looking check */
    const char *shapes[] = {"[]",
                            "{}",
                            "[\"0000000000000000\",5,\"abc\",\"key-1\"]",
                            "[\"x\",5,\"abc\"]",
                            "null",
                            "[1,2,3,4]",
                            "[\"x\",5,\"abc\",\"k\"] "};
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        char *s = b64(shapes[i]);
        cursor_refused("-priority,title", s);
        free(s);
    }
}

/* ---- SQL text ----------------------------------------------------------- */

static void sql_of(const char *const *kv, const char *select, const char *want,
                   const store_val_t *want_params, size_t want_n)
{
    query_t q;
    parse_ok(NULL, kv, &q);
    char *sql = NULL;
    store_val_t *p = NULL;
    size_t np = 0;
    chr_err_t err;
    assert_int_equal(query_sql(&q, g_tasks, select, &sql, &p, &np, &err), CHR_OK);
    assert_string_equal(sql, want);
    assert_int_equal(np, want_n);
    for (size_t i = 0; i < np; i++) {
        assert_int_equal(p[i].type, want_params[i].type);
        if (p[i].type == SV_INT) assert_int_equal(p[i].i, want_params[i].i);
        if (p[i].type == SV_REAL) assert_true(p[i].r == want_params[i].r);
        if (p[i].type == SV_TEXT) assert_string_equal(p[i].s, want_params[i].s);
    }
    free(sql);
    free(p);
    query_free(&q);
}

#define I(v)                                                                                       \
    {                                                                                              \
        .type = SV_INT, .i = (v)                                                                   \
    }
#define R(v)                                                                                       \
    {                                                                                              \
        .type = SV_REAL, .r = (v)                                                                  \
    }
#define T(v)                                                                                       \
    {                                                                                              \
        .type = SV_TEXT, .s = (v)                                                                  \
    }

static void test_sql_text(void **state)
{
    (void)state;
    {
        store_val_t p[] = {I(51)};
        sql_of(NO_KV, "\"_doc\"",
               "SELECT \"_doc\", \"task_id\" FROM \"tasks\" WHERE \"_deleted\" = 0"
               " ORDER BY \"task_id\" ASC LIMIT ?",
               p, 1);
    }
    {
        store_val_t p[] = {T("todo"), T("doing"), I(2), I(11)};
        sql_of(KV("status", "in.todo,doing", "priority", "gte.2", "sort", "-created_at,title",
                  "limit", "10"),
               "\"task_id\", \"_doc\"",
               "SELECT \"task_id\", \"_doc\", \"created_at\", coalesce(\"title\", '')"
               " FROM \"tasks\" WHERE \"_deleted\" = 0 AND \"status\" IN (?, ?)"
               " AND \"priority\" >= ?"
               " ORDER BY \"created_at\" DESC, coalesce(\"title\", '') ASC, \"task_id\" ASC"
               " LIMIT ?",
               p, 4);
    }
    {
        store_val_t p[] = {T("%a\\_b%"), T("X@Y.org"), T("x"), R(1.5), I(1), I(0), I(51)};
        sql_of(KV("title", "like.*a_b*", "owner", "X@Y.org", "notes", "neq.x", "score", "lt.1.5",
                  "done", "true", "version", "neq.0", "sort", "-score,done,due,priority"),
               "\"_doc\"",
               "SELECT \"_doc\", coalesce(\"score\", -1.7976931348623157e308),"
               " coalesce(\"done\", -1), coalesce(\"due\", ''),"
               " coalesce(\"priority\", -9223372036854775807)"
               " FROM \"tasks\" WHERE \"_deleted\" = 0"
               " AND lower(\"title\") LIKE lower(?) ESCAPE '\\'"
               " AND lower(\"owner\") = lower(?)"
               " AND (\"notes\" IS NULL OR \"notes\" <> ?)"
               " AND \"score\" < ? AND \"done\" = ? AND \"version\" <> ?"
               " ORDER BY coalesce(\"score\", -1.7976931348623157e308) DESC,"
               " coalesce(\"done\", -1) ASC, coalesce(\"due\", '') ASC,"
               " coalesce(\"priority\", -9223372036854775807) ASC, \"task_id\" ASC LIMIT ?",
               p, 7);
    }
    {
        store_val_t p[] = {T("Bob@x.org"), T("bob@x.org"), I(51)};
        sql_of(KV("owner", "in.Bob@x.org,bob@x.org"), "\"_doc\"",
               "SELECT \"_doc\", \"task_id\" FROM \"tasks\" WHERE \"_deleted\" = 0"
               " AND lower(\"owner\") IN (lower(?), lower(?))"
               " ORDER BY \"task_id\" ASC LIMIT ?",
               p, 3);
    }

    /* with a cursor: the nested keyset condition, values repeated per term */
    query_t q;
    parse_ok(NULL, KV("sort", "-priority,title"), &q);
    store_val_t vals[2] = {{.type = SV_INT, .i = 5}, {.type = SV_NULL}};
    char *c = make_cursor(&q, vals, 2, "k7");
    query_free(&q);
    {
        store_val_t p[] = {T("x"), I(5), I(5), T(""), T(""), T("k7"), I(8)};
        sql_of(KV("sort", "-priority,title", "after", c, "limit", "7", "notes", "x"), "\"_doc\"",
               "SELECT \"_doc\", coalesce(\"priority\", -9223372036854775807),"
               " coalesce(\"title\", '') FROM \"tasks\" WHERE \"_deleted\" = 0"
               " AND \"notes\" = ?"
               " AND (coalesce(\"priority\", -9223372036854775807) <= ?"
               " AND (coalesce(\"priority\", -9223372036854775807) < ?"
               " OR (coalesce(\"title\", '') >= ? AND (coalesce(\"title\", '') > ?"
               " OR \"task_id\" > ?))))"
               " ORDER BY coalesce(\"priority\", -9223372036854775807) DESC,"
               " coalesce(\"title\", '') ASC, \"task_id\" ASC LIMIT ?",
               p, 7);
    }
    free(c);

    /* the key as the only term: a single comparison */
    parse_ok(NULL, KV("sort", "-task_id"), &q);
    store_val_t kv1[1] = {{.type = SV_TEXT, .s = "k9"}};
    c = make_cursor(&q, kv1, 1, "k9");
    query_free(&q);
    {
        store_val_t p[] = {T("k9"), I(51)};
        sql_of(KV("sort", "-task_id", "after", c), "\"_doc\"",
               "SELECT \"_doc\", \"task_id\" FROM \"tasks\" WHERE \"_deleted\" = 0"
               " AND \"task_id\" < ? ORDER BY \"task_id\" DESC LIMIT ?",
               p, 2);
    }
    free(c);
}

static void test_b64url(void **state)
{
    (void)state;
    static const char *const vec[][2] = {
        {"", ""},           {"f", "Zg"},          {"fo", "Zm8"},          {"foo", "Zm9v"},
        {"foob", "Zm9vYg"}, {"fooba", "Zm9vYmE"}, {"foobar", "Zm9vYmFy"}, {"\xfb\xff", "-_8"},
    };
    for (size_t i = 0; i < sizeof vec / sizeof vec[0]; i++) {
        char *e = b64(vec[i][0]);
        assert_string_equal(e, vec[i][1]);
        size_t n = 99;
        unsigned char *d = query_b64url_decode(e, &n);
        assert_non_null(d);
        assert_int_equal(n, strlen(vec[i][0]));
        assert_memory_equal(d, vec[i][0], n);
        free(d);
        free(e);
    }
    const char *bad[] = {"Z", "Zh", "Zm9=", "Zm+v", "Zm/v", "Zm9vY", "Zm 9"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        size_t n;
        unsigned char *d = query_b64url_decode(bad[i], &n);
        if (d) fail_msg("\"%s\" decoded", bad[i]);
    }
}

/* ---- end to end with SQLite --------------------------------------------- */

#define N_ROWS 100
#define BASE_US INT64_C(1767323045000000)

typedef struct row {
    char key[16];
    bool has_title, has_priority, has_score, has_done, has_due;
    char title[32];
    int64_t priority;
    double score;
    int64_t done;
    char due[TIMEFMT_LEN + 1];
    char status[8];
    int64_t created_at;
    int deleted;
} row_t;

static row_t g_rows[N_ROWS];

static void exec_sql(sqlite3 *db, const char *sql)
{
    char *msg = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK) fail_msg("%s: %s", sql, msg);
}

static sqlite3 *make_db(void)
{
    sqlite3 *db;
    assert_int_equal(sqlite3_open(":memory:", &db), SQLITE_OK);
    exec_sql(db, "CREATE TABLE \"tasks\" (\"task_id\" TEXT PRIMARY KEY, \"title\" TEXT,"
                 " \"notes\" TEXT, \"status\" TEXT, \"priority\" INTEGER, \"score\" REAL,"
                 " \"done\" INTEGER, \"due\" TEXT, \"owner\" TEXT, \"board\" TEXT,"
                 " \"schedule\" TEXT, \"version\" INTEGER NOT NULL,"
                 " \"created_at\" INTEGER NOT NULL, \"updated_at\" INTEGER NOT NULL,"
                 " \"_deleted\" INTEGER NOT NULL DEFAULT 0, \"_doc\" TEXT)");
    static const char *const statuses[] = {"todo", "doing", "done"};
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(db,
                                        "INSERT INTO \"tasks\" (\"task_id\", \"title\", "
                                        "\"priority\", \"score\", \"done\", \"due\", \"status\","
                                        " \"version\", \"created_at\", \"updated_at\","
                                        " \"_deleted\") VALUES (?,?,?,?,?,?,?,1,?,?,?)",
                                        -1, &st, NULL),
                     SQLITE_OK);
    for (int i = 0; i < N_ROWS; i++) {
        row_t *r = &g_rows[i];
        memset(r, 0, sizeof *r);
        /* keys are not in insertion order; many duplicates in every column */
        snprintf(r->key, sizeof r->key, "k%02d", (i * 37) % N_ROWS);
        r->has_title = i % 6 != 0;
        snprintf(r->title, sizeof r->title, "%s %d", i % 4 ? "Title" : "title", (i * 3) % 10);
        r->has_priority = i % 5 != 0;
        r->priority = (i * 7) % 11 - 3;
        r->has_score = i % 4 != 1;
        r->score = ((i * 13) % 17) / 4.0 - 2;
        r->has_done = i % 3 != 0;
        r->done = i % 2;
        r->has_due = i % 7 != 0;
        time_format_us(BASE_US + (int64_t)(i % 9) * 3600000000, r->due);
        snprintf(r->status, sizeof r->status, "%s", statuses[i % 3]);
        r->created_at = BASE_US + (int64_t)((i * 53) % N_ROWS) * 1000 + (i % 2 ? 0 : 1000);
        r->deleted = i % 10 == 9;

        sqlite3_reset(st);
        sqlite3_bind_text(st, 1, r->key, -1, SQLITE_STATIC);
        if (r->has_title)
            sqlite3_bind_text(st, 2, r->title, -1, SQLITE_STATIC);
        else
            sqlite3_bind_null(st, 2);
        if (r->has_priority)
            sqlite3_bind_int64(st, 3, r->priority);
        else
            sqlite3_bind_null(st, 3);
        if (r->has_score)
            sqlite3_bind_double(st, 4, r->score);
        else
            sqlite3_bind_null(st, 4);
        if (r->has_done)
            sqlite3_bind_int64(st, 5, r->done);
        else
            sqlite3_bind_null(st, 5);
        if (r->has_due)
            sqlite3_bind_text(st, 6, r->due, -1, SQLITE_STATIC);
        else
            sqlite3_bind_null(st, 6);
        sqlite3_bind_text(st, 7, r->status, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 8, r->created_at);
        sqlite3_bind_int64(st, 9, r->created_at);
        sqlite3_bind_int(st, 10, r->deleted);
        assert_int_equal(sqlite3_step(st), SQLITE_DONE);
    }
    sqlite3_finalize(st);
    return db;
}

/* Compares two rows on one column, NULL lowest (as the sentinels do). */
static int cmp_col(const row_t *a, const row_t *b, const char *col)
{
#define NULLS(ha, hb)                                                                              \
    if (!(ha) || !(hb)) return (ha) - (hb)
#define CMP(x, y) ((x) < (y) ? -1 : (x) > (y))
    if (!strcmp(col, "task_id")) return strcmp(a->key, b->key);
    if (!strcmp(col, "created_at") || !strcmp(col, "updated_at"))
        return CMP(a->created_at, b->created_at);
    if (!strcmp(col, "version")) return 0;
    if (!strcmp(col, "status")) return strcmp(a->status, b->status);
    if (!strcmp(col, "title")) {
        NULLS(a->has_title, b->has_title);
        return strcmp(a->title, b->title);
    }
    if (!strcmp(col, "priority")) {
        NULLS(a->has_priority, b->has_priority);
        return CMP(a->priority, b->priority);
    }
    if (!strcmp(col, "score")) {
        NULLS(a->has_score, b->has_score);
        return CMP(a->score, b->score);
    }
    if (!strcmp(col, "done")) {
        NULLS(a->has_done, b->has_done);
        return CMP(a->done, b->done);
    }
    if (!strcmp(col, "due")) {
        NULLS(a->has_due, b->has_due);
        return strcmp(a->due, b->due);
    }
    fail_msg("no comparison for %s", col);
    return 0;
#undef NULLS
#undef CMP
}

static const query_t *g_cmp_q;

static int cmp_rows(const void *pa, const void *pb)
{
    const row_t *a = *(row_t *const *)pa, *b = *(row_t *const *)pb;
    for (size_t i = 0; i < g_cmp_q->n_sort; i++) {
        int c = cmp_col(a, b, g_cmp_q->sort[i].column);
        if (c) return g_cmp_q->sort[i].desc ? -c : c;
    }
    int c = strcmp(a->key, b->key);
    return g_cmp_q->tiebreak_desc ? -c : c;
}

/* The rows q must return, in order: filtered by keep, sorted in C. */
static size_t expected_order(const query_t *q, bool (*keep)(const row_t *), const row_t **out)
{
    size_t n = 0;
    for (int i = 0; i < N_ROWS; i++)
        if (!g_rows[i].deleted && (!keep || keep(&g_rows[i]))) out[n++] = &g_rows[i];
    g_cmp_q = q;
    qsort(out, n, sizeof *out, cmp_rows);
    return n;
}

/* Runs one page: returns the number of rows (up to limit + 1), appends the
 * first limit keys to got, and sets *next to the cursor of the page's last
 * row when there is a next page. */
static size_t run_page(sqlite3 *db, const query_t *q, char got[][16], size_t *n_got, char **next)
{
    char *sql;
    store_val_t *p;
    size_t np;
    chr_err_t err;
    assert_int_equal(query_sql(q, g_tasks, "\"task_id\", \"_doc\"", &sql, &p, &np, &err), CHR_OK);
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
        fail_msg("%s: %s", sql, sqlite3_errmsg(db));
    for (size_t i = 0; i < np; i++) {
        int k = (int)i + 1;
        switch (p[i].type) {
        case SV_INT:
            sqlite3_bind_int64(st, k, p[i].i);
            break;
        case SV_REAL:
            sqlite3_bind_double(st, k, p[i].r);
            break;
        case SV_TEXT:
            sqlite3_bind_text(st, k, p[i].s, -1, SQLITE_STATIC);
            break;
        case SV_NULL:
            sqlite3_bind_null(st, k);
            break;
        }
    }
    const int first_sort = 2; /* after "task_id", "_doc" */
    size_t rows = 0;
    *next = NULL;
    char last_key[16] = "";
    store_val_t last[QUERY_MAX_SORT];
    char last_text[QUERY_MAX_SORT][64];
    while (sqlite3_step(st) == SQLITE_ROW) {
        rows++;
        if (rows > (size_t)q->limit) break;
        snprintf(last_key, sizeof last_key, "%s", (const char *)sqlite3_column_text(st, 0));
        snprintf(got[(*n_got)++], 16, "%s", last_key);
        assert_int_equal(sqlite3_column_count(st), first_sort + (int)q->n_sort);
        for (size_t i = 0; i < q->n_sort; i++) {
            int col = first_sort + (int)i;
            switch (sqlite3_column_type(st, col)) {
            case SQLITE_INTEGER:
                last[i] = (store_val_t){.type = SV_INT, .i = sqlite3_column_int64(st, col)};
                break;
            case SQLITE_FLOAT:
                last[i] = (store_val_t){.type = SV_REAL, .r = sqlite3_column_double(st, col)};
                break;
            case SQLITE_TEXT:
                snprintf(last_text[i], sizeof last_text[i], "%s", sqlite3_column_text(st, col));
                last[i] = (store_val_t){.type = SV_TEXT, .s = last_text[i]};
                break;
            default:
                fail_msg("sort column %zu is NULL: %s", i, sql);
            }
        }
    }
    sqlite3_finalize(st);
    if (rows > (size_t)q->limit)
        assert_int_equal(query_cursor(q, last, q->n_sort, last_key, next), CHR_OK);
    free(sql);
    free(p);
    return rows;
}

/* Pages through with limit 7 and checks every row appears once, in order. */
static void page_through(sqlite3 *db, const char *const *filter, bool (*keep)(const row_t *),
                         const char *sort)
{
    const row_t *want[N_ROWS];
    char got[N_ROWS + 8][16];
    size_t n_got = 0;
    char *after = NULL;
    size_t pages = 0;
    size_t n_want = 0;
    do {
        const char *kv[16];
        size_t k = 0;
        kv[k++] = "sort";
        kv[k++] = sort;
        kv[k++] = "limit";
        kv[k++] = "7";
        if (after) {
            kv[k++] = "after";
            kv[k++] = after;
        }
        for (size_t i = 0; filter && filter[i]; i++)
            kv[k++] = filter[i];
        kv[k] = NULL;
        query_t q;
        parse_ok(NULL, kv, &q);
        if (!pages) n_want = expected_order(&q, keep, want);
        free(after);
        after = NULL;
        size_t rows = run_page(db, &q, got, &n_got, &after);
        query_free(&q);
        assert_true(rows <= 8);
        assert_true(n_got <= n_want);
        pages++;
        assert_true(pages <= N_ROWS);
    } while (after);
    if (n_got != n_want) fail_msg("sort %s: got %zu rows, want %zu", sort, n_got, n_want);
    for (size_t i = 0; i < n_want; i++)
        if (strcmp(got[i], want[i]->key) != 0)
            fail_msg("sort %s: row %zu is %s, want %s", sort, i, got[i], want[i]->key);
    assert_int_equal(pages, n_want ? (n_want + 6) / 7 : 1);
}

static void test_sqlite_paging(void **state)
{
    (void)state;
    sqlite3 *db = make_db();
    const char *sorts[] = {
        "task_id",
        "-task_id",
        "title",
        "-title",
        "priority",
        "-priority",
        "score,-title",
        "-score,title",
        "-done,due",
        "done,-due,-priority",
        "status,-priority,score",
        "-created_at",
        "created_at",
        "title,-created_at",
        "-due,task_id",
        "version,-score",
        "priority,score,done,due,title",
        "-priority,-score,-done,-due,-title",
    };
    for (size_t i = 0; i < sizeof sorts / sizeof sorts[0]; i++)
        page_through(db, NULL, NULL, sorts[i]);
    sqlite3_close(db);
}

static bool keep_filtered(const row_t *r)
{
    /* status=in.todo,doing & priority=gte.0 & title=like.title* (any case) */
    return strcmp(r->status, "done") != 0 && r->has_priority && r->priority >= 0 && r->has_title &&
           (strncmp(r->title, "title", 5) == 0 || strncmp(r->title, "Title", 5) == 0);
}

static bool keep_neq(const row_t *r)
{
    /* done=neq.true: false and unset */
    return !r->has_done || r->done == 0;
}

static void test_sqlite_filters(void **state)
{
    (void)state;
    sqlite3 *db = make_db();
    const char *const f1[] = {"status", "in.todo,doing", "priority", "gte.0",
                              "title",  "like.title*",   NULL};
    page_through(db, f1, keep_filtered, "-score,title");
    page_through(db, f1, keep_filtered, "due,-priority");
    const char *const f2[] = {"done", "neq.true", NULL};
    page_through(db, f2, keep_neq, "-priority");

    /* LIKE escapes: % and _ are literal, * is the wildcard */
    exec_sql(db, "INSERT INTO \"tasks\" (\"task_id\", \"title\", \"version\", \"created_at\","
                 " \"updated_at\") VALUES ('x1', '100% done', 1, 0, 0), ('x2', '100x done', 1,"
                 " 0, 0), ('x3', 'a_b', 1, 0, 0), ('x4', 'axb', 1, 0, 0), ('x5', 'a\\b', 1, 0,"
                 " 0)");
    static const struct {
        const char *like;
        const char *keys;
    } cases[] = {
        {"like.100%*", "x1"},     {"like.*0x*", "x2"}, {"like.a_b", "x3"},
        {"like.A*B", "x3,x4,x5"}, {"like.a\\b", "x5"}, {"like.a?b", ""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        query_t q;
        parse_ok(NULL, KV("title", cases[i].like, "task_id", "like.x*"), &q);
        char got[N_ROWS + 8][16];
        size_t n = 0;
        char *next = NULL;
        run_page(db, &q, got, &n, &next);
        assert_null(next);
        char joined[128] = "";
        for (size_t k = 0; k < n; k++)
            snprintf(joined + strlen(joined), sizeof joined - strlen(joined), "%s%s", k ? "," : "",
                     got[k]);
        if (strcmp(joined, cases[i].keys) != 0)
            fail_msg("%s matched \"%s\", want \"%s\"", cases[i].like, joined, cases[i].keys);
        query_free(&q);
    }
    sqlite3_close(db);
}

/* ---- allocation failures ---------------------------------------------- */

static void *chaos_json_malloc(size_t n)
{
    return alloc_allowed() ? malloc(n) : NULL;
}

/* Parses a query using every feature, builds its SQL and a next cursor,
 * with allocation budget `budget` for query.c and, when json_chaos, for
 * jansson too. Returns the first non-OK status (after checking that it is
 * CHR_ENOMEM and that nothing was handed out).
 * One exception under json_chaos: jansson's lexer ignores failed
 * allocations while it saves token text, so json_loadb may return a
 * truncated value instead of failing; the cursor's check then does not
 * match and the answer is "after: invalid cursor". */
static int everything_once(long budget, bool json_chaos, const char *after)
{
    json_t *ff =
        json_pack("{s:s, s:b, s:n, s:s}", "status", "todo", "done", 1, "due", "secret", "x");
    assert_non_null(ff);
    list_opts_t o = {.fixed_filters = ff, .fixed_sort = "-created_at"};
    const char *const *kv = KV("title", "like.*a_b*", "status", "in.todo,doing", "priority",
                               "gte.2", "due", "lt.2026-01-02T03:04:05+02:00", "owner", "a@b.c",
                               "sort", "-priority,title,due,score", "limit", "7", "after", after);
    query_t q;
    chr_err_t err;
    char *sql = NULL, *cursor = NULL;
    store_val_t *p = NULL;
    size_t np = 0;

    g_alloc_budget = budget;
    if (json_chaos) json_set_alloc_funcs(chaos_json_malloc, free);
    int rc = parse_kv(&o, kv, &q, &err);
    if (rc == CHR_OK) {
        rc = query_sql(&q, g_tasks, "\"_doc\"", &sql, &p, &np, &err);
        if (rc != CHR_OK) {
            assert_null(sql);
            assert_null(p);
        }
    } else {
        assert_null(q.table);
    }
    if (rc == CHR_OK) {
        store_val_t vals[4] = {{.type = SV_INT, .i = 3},
                               {.type = SV_TEXT, .s = "t"},
                               {.type = SV_NULL},
                               {.type = SV_REAL, .r = 2.5}};
        rc = query_cursor(&q, vals, 4, "k1", &cursor);
        if (rc != CHR_OK) assert_null(cursor);
    }
    json_set_alloc_funcs(malloc, free);
    g_alloc_budget = -1;

    if (rc != CHR_OK) {
        bool lexer_truncated = json_chaos && rc == CHR_EINVAL && !strcmp(err.field, "after");
        if (rc != CHR_ENOMEM && !lexer_truncated)
            fail_msg("budget %ld: rc %d (%s)", budget, rc, err.msg);
    } else {
        assert_int_equal(q.n_filters, 9);
        assert_int_equal(q.n_after, 5);
        assert_non_null(cursor);
    }
    free(cursor);
    free(sql);
    free(p);
    query_free(&q);
    json_decref(ff);
    return rc;
}

static void test_out_of_memory(void **state)
{
    (void)state;
    query_t q;
    parse_ok(NULL, KV("sort", "-priority,title,due,score"), &q);
    store_val_t vals[4] = {{.type = SV_INT, .i = 5},
                           {.type = SV_NULL},
                           {.type = SV_TEXT, .s = "2026-01-01T00:00:00.000000Z"},
                           {.type = SV_REAL, .r = -1}};
    char *after = make_cursor(&q, vals, 4, "k0");
    query_free(&q);

    for (int json_chaos = 0; json_chaos < 2; json_chaos++) {
        long budget = 0;
        while (everything_once(budget, json_chaos, after) != CHR_OK) {
            budget++;
            assert_true(budget < 10000);
        }
        assert_true(budget > 20); /* the failure paths really ran */
    }
    free(after);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_operators),
        cmocka_unit_test(test_in_lists),
        cmocka_unit_test(test_like),
        cmocka_unit_test(test_integer_values),
        cmocka_unit_test(test_number_values),
        cmocka_unit_test(test_boolean_values),
        cmocka_unit_test(test_time_values),
        cmocka_unit_test(test_text_values),
        cmocka_unit_test(test_repeated_filters),
        cmocka_unit_test(test_unknown_private_json),
        cmocka_unit_test(test_ignore_and_reserved),
        cmocka_unit_test(test_fixed_filters),
        cmocka_unit_test(test_sort),
        cmocka_unit_test(test_limit),
        cmocka_unit_test(test_cursor_round_trip),
        cmocka_unit_test(test_cursor_tampering),
        cmocka_unit_test(test_sql_text),
        cmocka_unit_test(test_b64url),
        cmocka_unit_test(test_sqlite_paging),
        cmocka_unit_test(test_sqlite_filters),
        cmocka_unit_test(test_out_of_memory),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
