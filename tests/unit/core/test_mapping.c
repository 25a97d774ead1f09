/*
 * test_mapping.c - unit tests of core/mapping.h, a reaction's field
 * mapping: which template values are accepted, and the body built from an
 * event for each kind of path, literal and constant. Also the reaction's
 * derived event id and metadata (worker/reaction.h), which are as pure.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "core/mapping.h"
#include "worker/reaction.h"

static const char *ID = "01890a5d-ac96-774b-bcce-b302099a8057";

static void test_valid_values(void **state)
{
    (void)state;
    const char *ok[] = {"$.id", "$.type", "$.stream", "$.key", "$.data", "$.data.title",
                        "$.data.a.b.c", "$.metadata", "$.metadata.correlation_id", "$$.x",
                        "$$", "plain", "", "a $.data", NULL};
    for (size_t i = 0; ok[i]; i++) {
        if (!mapping_value_valid(ok[i])) fail_msg("\"%s\" should be valid", ok[i]);
    }
    const char *bad[] = {"$", "$.", "$x", "$.nope", "$.keys", "$.data.", "$.data..a",
                         "$.id.x", "$.key.a", "$.datax", "$.metadata.", "$data", NULL};
    for (size_t i = 0; bad[i]; i++) {
        if (mapping_value_valid(bad[i])) fail_msg("\"%s\" should be refused", bad[i]);
    }
}

static json_t *apply(const char *tmpl_text, const event_t *ev)
{
    json_t *tmpl = json_loads(tmpl_text, 0, NULL);
    assert_non_null(tmpl);
    json_t *out = NULL;
    chr_err_t err;
    chr_err_clear(&err);
    assert_int_equal(mapping_apply(tmpl, ev, &out, &err), CHR_OK);
    json_decref(tmpl);
    return out;
}

static void assert_json(json_t *got, const char *want_text)
{
    json_t *want = json_loads(want_text, 0, NULL);
    assert_non_null(want);
    if (!json_equal(got, want)) {
        char *g = json_dumps(got, JSON_SORT_KEYS | JSON_COMPACT);
        fail_msg("got %s, want %s", g, want_text);
    }
    json_decref(want);
    json_decref(got);
}

static void test_paths_literals_constants(void **state)
{
    (void)state;
    event_t ev = {0};
    assert_int_equal(event_init(&ev, ID, "tasks-t-1", "TaskCreated",
                                "{\"title\":\"Write\",\"n\":3,\"tags\":[\"a\"],\"o\":{\"p\":{\"q\":true}}}",
                                "{\"correlation_id\":\"c-9\",\"user\":\"ann\"}"),
                     CHR_OK);
    assert_json(apply("{\"task_id\":\"$.key\",\"title\":\"$.data.title\",\"n\":\"$.data.n\","
                      "\"tags\":\"$.data.tags\",\"q\":\"$.data.o.p.q\",\"by\":\"$.metadata.user\","
                      "\"src\":\"$.id\",\"t\":\"$.type\",\"s\":\"$.stream\"}",
                      &ev),
                "{\"task_id\":\"t-1\",\"title\":\"Write\",\"n\":3,\"tags\":[\"a\"],\"q\":true,"
                "\"by\":\"ann\",\"src\":\"01890a5d-ac96-774b-bcce-b302099a8057\","
                "\"t\":\"TaskCreated\",\"s\":\"tasks-t-1\"}");
    /* whole objects, literals, constants */
    assert_json(apply("{\"d\":\"$.data.o\",\"m\":\"$.metadata\",\"lit\":\"$$.data.title\","
                      "\"c\":\"open\",\"num\":1.5,\"b\":false,\"z\":null,\"arr\":[\"$.id\"],"
                      "\"obj\":{\"x\":\"$.id\"}}",
                      &ev),
                "{\"d\":{\"p\":{\"q\":true}},\"m\":{\"correlation_id\":\"c-9\",\"user\":\"ann\"},"
                "\"lit\":\"$.data.title\",\"c\":\"open\",\"num\":1.5,\"b\":false,\"z\":null,"
                "\"arr\":[\"$.id\"],\"obj\":{\"x\":\"$.id\"}}");
    /* paths that lead nowhere leave the member out */
    assert_json(apply("{\"a\":\"$.data.missing\",\"b\":\"$.data.title.x\",\"c\":\"$.metadata.none\","
                      "\"d\":\"$.data.n.y\",\"e\":\"$.data.title\"}",
                      &ev),
                "{\"e\":\"Write\"}");
    event_free(&ev);
}

static void test_key_of_streams(void **state)
{
    (void)state;
    event_t ev = {0};
    /* the key is what follows the first "-": keys may hold "-" themselves */
    assert_int_equal(event_init(&ev, ID, "agent_jobs-0190-ab-cd", "X", "{}", NULL), CHR_OK);
    assert_json(apply("{\"k\":\"$.key\",\"m\":\"$.metadata\"}", &ev),
                "{\"k\":\"0190-ab-cd\",\"m\":{}}");
    event_free(&ev);
    assert_int_equal(event_init(&ev, ID, "schedule:poll:team", "X", "[1]", NULL), CHR_OK);
    assert_json(apply("{\"k\":\"$.key\",\"d\":\"$.data\",\"x\":\"$.data.a\"}", &ev),
                "{\"d\":[1]}");
    event_free(&ev);
}

static void test_reaction_ids_and_metadata(void **state)
{
    (void)state;
    char a[UUID_STR_LEN + 1], b[UUID_STR_LEN + 1];
    reaction_event_id("make_job", ID, a);
    reaction_event_id("make_job", ID, b);
    assert_string_equal(a, b); /* deterministic: a redelivery finds it */
    assert_true(uuid_is_valid(a));
    assert_int_equal(a[14], '8'); /* UUIDv8 */
    reaction_event_id("make_jo", ID, b);
    assert_string_not_equal(a, b);
    reaction_event_id("make_job", "01890a5d-ac96-774b-bcce-b302099a8058", b);
    assert_string_not_equal(a, b);

    event_t ev = {0};
    assert_int_equal(event_init(&ev, ID, "tasks-1", "TaskCreated", "{}", NULL), CHR_OK);
    assert_json(reaction_metadata("r", &ev),
                "{\"causation_id\":\"01890a5d-ac96-774b-bcce-b302099a8057\","
                "\"correlation_id\":\"01890a5d-ac96-774b-bcce-b302099a8057\",\"reaction\":\"r\"}");
    event_free(&ev);
    assert_int_equal(event_init(&ev, ID, "tasks-1", "TaskCreated", "{}",
                                "{\"correlation_id\":\"root-1\",\"causation_id\":\"x\"}"),
                     CHR_OK);
    assert_json(reaction_metadata("r", &ev),
                "{\"causation_id\":\"01890a5d-ac96-774b-bcce-b302099a8057\","
                "\"correlation_id\":\"root-1\",\"reaction\":\"r\"}");
    event_free(&ev);
}

int main(void)
{
    if (sodium_init() < 0) return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_values),
        cmocka_unit_test(test_paths_literals_constants),
        cmocka_unit_test(test_key_of_streams),
        cmocka_unit_test(test_reaction_ids_and_metadata),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
