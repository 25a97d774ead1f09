/*
 * test_decide.c - unit tests of core/decide.h: create (defaults,
 * normalisation, every kind of validation error collected together,
 * conflicts, recreate rules), update (partial, clear, immutable, no-op),
 * upsert both ways, delete, custom commands (when, set, $input, $now,
 * preconditions), folding event sequences with versions and timestamps, time
 * travel by folding a prefix, and the public JSON view. Pure: the definition
 * comes from a JSON string through definition_load; no store, no files.
 *
 * JSON in this file is written with single quotes (sq() turns them into
 * double quotes) so expected values read like the JSON they are.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/decide.h"
#include "core/definition.h"

/* 2026-01-02T03:04:05.123456Z, what "$now" resolves to. */
#define NOW_US INT64_C(1767323045123456)
#define NOW_TEXT "2026-01-02T03:04:05.123456Z"
/* 2026-01-01T0N:00:00Z, the timestamp of the Nth event of a stream. */
#define T(n) (INT64_C(1767225600000000) + (int64_t)(n)*INT64_C(3600000000))

static const char *const app_json =
    "{'app': 'decide-test',"
    " 'entities': {"
    "  'boards': {'key': 'board_id',"
    "             'fields': {'name': {'type': 'string', 'required': true}},"
    "             'events': {'create': 'BoardCreated', 'update': 'BoardUpdated',"
    "                        'delete': 'BoardDeleted'}},"
    "  'tasks': {"
    "   'key': 'task_id',"
    "   'fields': {"
    "    'title':        {'type': 'string', 'required': true, 'max_length': 20},"
    "    'status':       {'type': 'enum', 'values': ['open', 'done'], 'default': 'open'},"
    "    'priority':     {'type': 'integer', 'min': 1, 'max': 5, 'default': 3},"
    "    'due':          {'type': 'timestamp'},"
    "    'owner_email':  {'type': 'email'},"
    "    'board_id':     {'type': 'ref', 'to': 'boards', 'required': true, 'immutable': true},"
    "    'estimate':     {'type': 'number'},"
    "    'notes':        {'type': 'text'},"
    "    'completed_at': {'type': 'timestamp'},"
    "    'origin':       {'type': 'string', 'immutable': true},"
    "    'secret':       {'type': 'string', 'private': true}"
    "   },"
    "   'events': {'create': 'TaskCreated', 'update': 'TaskUpdated', 'delete': 'TaskDeleted'},"
    "   'commands': {"
    "    'complete':   {'input': {'note': {'type': 'text'}},"
    "                   'when': {'status': 'open'},"
    "                   'set': {'status': 'done', 'completed_at': '$now', 'notes': '$input.note'},"
    "                   'event': 'TaskCompleted'},"
    "    'reopen':     {'input': {'reason': {'type': 'string', 'default': 'unspecified'}},"
    "                   'when': {'status': 'done'},"
    "                   'set': {'status': 'open', 'completed_at': null},"
    "                   'event': 'TaskReopened'},"
    "    'claim':      {'input': {'email': {'type': 'email', 'required': true}},"
    "                   'when': {'owner_email': null},"
    "                   'set': {'owner_email': '$input.email'},"
    "                   'event': 'TaskClaimed'},"
    "    'prioritise': {'input': {'level': {'type': 'integer', 'min': 1, 'max': 5,"
    "                                       'required': true}},"
    "                   'set': {'priority': '$input.level'},"
    "                   'event': 'TaskPrioritised'},"
    "    'unlock':     {'when': {'secret': 's3'}, 'set': {'status': 'open'},"
    "                   'event': 'TaskUnlocked'}"
    "   }"
    "  },"
    "  'codes': {'key': 'code',"
    "            'fields': {'code': {'type': 'string', 'required': true, 'max_length': 5},"
    "                       'label': {'type': 'string'}}},"
    "  'config': {'key': 'name',"
    "             'fields': {'value': {'type': 'json', 'required': true}},"
    "             'recreate_after_delete': false,"
    "             'events': {'create': 'ConfigValueSet', 'update': 'ConfigValueSet',"
    "                        'delete': 'ConfigValueDeleted'}}"
    " }"
    "}";

static definition_t *g_def;
static const entity_def_t *g_tasks, *g_config, *g_boards, *g_codes;

/* --- helpers -------------------------------------------------------------- */

/* A copy of s with every ' turned into "; caller frees. */
static char *sq(const char *s)
{
    size_t len = strlen(s);
    char *out = malloc(len + 1);
    assert_non_null(out);
    for (size_t i = 0; i <= len; i++)
        out[i] = s[i] == '\'' ? '"' : s[i];
    return out;
}

/* Parses single-quoted JSON; new reference. */
static json_t *J(const char *text)
{
    char *t = sq(text);
    json_error_t je;
    json_t *v = json_loads(t, JSON_DECODE_ANY, &je);
    if (!v) fail_msg("bad test JSON (%s): %s", je.text, t);
    free(t);
    return v;
}

/* Asserts that got, dumped compactly (member order included), equals the
 * single-quoted JSON want. */
static void assert_json(const json_t *got, const char *want)
{
    json_t *w = J(want);
    char *ws = json_dumps(w, JSON_COMPACT | JSON_ENCODE_ANY);
    char *gs = got ? json_dumps(got, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    if (!gs || strcmp(gs, ws) != 0) fail_msg("JSON differs\n got: %s\nwant: %s", gs, ws);
    free(ws);
    free(gs);
    json_decref(w);
}

/* Asserts the decision's errors, written "field: message; field: message"
 * (plain text, not single-quoted JSON). */
static void assert_errors(const decision_t *d, const char *want)
{
    char buf[4096];
    size_t off = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < d->n_errors && off < sizeof buf; i++)
        off += (size_t)snprintf(buf + off, sizeof buf - off, "%s%s: %s", i ? "; " : "",
                                d->errors[i].field, d->errors[i].message);
    assert_string_equal(buf, want);
    assert_int_equal(d->code, CHR_EINVAL);
    assert_null(d->event_type);
    assert_null(d->event_data);
}

/* Runs one command; body is single-quoted JSON or NULL. */
static int run(const entity_def_t *e, const entity_state_t *s, cmd_kind_t kind, const char *command,
               const char *key, const char *body, decision_t *d)
{
    json_t *b = body ? J(body) : NULL;
    entity_cmd_t cmd = {
        .kind = kind,
        .custom = command ? entity_command(e, command) : NULL,
        .key = key,
        .body = b,
        .now_us = NOW_US,
    };
    if (command) assert_non_null(cmd.custom);
    int rc = entity_decide(e, s, &cmd, d);
    json_decref(b);
    assert_int_equal(rc, d->code);
    return rc;
}

/* Asserts an event decision of type `type` with data `data`. */
static void assert_event(const decision_t *d, const char *type, const char *data)
{
    if (d->code != CHR_OK) fail_msg("decision failed (%d): %s", d->code, d->detail);
    assert_int_equal(d->n_errors, 0);
    assert_non_null(d->event_type);
    assert_string_equal(d->event_type, type);
    assert_json(d->event_data, data);
}

/* Asserts a decision that failed with code and detail (no errors[]). */
static void assert_failed(const decision_t *d, int code, const char *detail)
{
    assert_int_equal(d->code, code);
    assert_string_equal(d->detail, detail);
    assert_int_equal(d->n_errors, 0);
    assert_null(d->event_type);
    assert_null(d->event_data);
}

/* Folds one event given as single-quoted JSON. */
static void fold(const entity_def_t *e, entity_state_t *s, const char *type, const char *data,
                 int64_t version)
{
    json_t *v = J(data);
    assert_int_equal(entity_evolve(e, s, type, v, version, T(version)), CHR_OK);
    json_decref(v);
}

/* Folds the event of a decision as the stream's next version. */
static void apply(const entity_def_t *e, entity_state_t *s, const decision_t *d)
{
    assert_int_equal(d->code, CHR_OK);
    assert_non_null(d->event_type);
    int64_t v = s->version + 1;
    assert_int_equal(entity_evolve(e, s, d->event_type, d->event_data, v, T(v)), CHR_OK);
}

/* The usual task t1: created at version 1 from body. */
static void task_created(entity_state_t *s, const char *body)
{
    decision_t d;
    entity_state_init(s);
    run(g_tasks, s, CMD_CREATE, NULL, "t1", body, &d);
    apply(g_tasks, s, &d);
    decision_free(&d);
}

static void task_t1(entity_state_t *s)
{
    task_created(s, "{'title': 'Write', 'board_id': 'b1', 'due': '2026-01-02T03:04:05Z',"
                    " 'estimate': 2, 'owner_email': 'Ann@example.com', 'secret': 's3'}");
}

static void config_deleted(entity_state_t *s)
{
    entity_state_init(s);
    fold(g_config, s, "ConfigValueSet", "{'name': 'c1', 'value': 1}", 1);
    fold(g_config, s, "ConfigValueDeleted", "{'name': 'c1', '_previous': {'value': 1}}", 2);
    assert_true(s->deleted);
}

static int setup(void **state)
{
    (void)state;
    char *text = sq(app_json);
    chr_err_t err;
    chr_err_clear(&err);
    int rc = definition_load(text, strlen(text), &g_def, &err);
    free(text);
    if (rc != CHR_OK) {
        fprintf(stderr, "definition_load: %s\n", err.msg);
        return -1;
    }
    g_tasks = definition_entity(g_def, "tasks");
    g_config = definition_entity(g_def, "config");
    g_boards = definition_entity(g_def, "boards");
    g_codes = definition_entity(g_def, "codes");
    return g_tasks && g_config && g_boards && g_codes ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    definition_free(g_def);
    return 0;
}

/* --- create --------------------------------------------------------------- */

static void test_create_defaults_and_normalisation(void **state)
{
    (void)state;
    entity_state_t s;
    entity_state_init(&s);
    decision_t d;

    /* Defaults fill absent fields, timestamps and e-mail domains are
     * normalised, the event lists the key then the fields in definition
     * order. */
    run(g_tasks, &s, CMD_CREATE, NULL, "t1",
        "{'secret': 's3', 'owner_email': 'Ann@Example.COM', 'title': 'Write',"
        " 'due': '2026-01-02T04:04:05+01:00', 'board_id': 'b1'}",
        &d);
    assert_event(&d, "TaskCreated",
                 "{'task_id': 't1', 'title': 'Write', 'status': 'open', 'priority': 3,"
                 " 'due': '2026-01-02T03:04:05.000000Z', 'owner_email': 'Ann@example.com',"
                 " 'board_id': 'b1', 'secret': 's3'}");
    assert_string_equal(d.detail, "");
    decision_free(&d);

    /* Given values beat defaults; null means absent, so the default applies;
     * a key member equal to the key is accepted. */
    run(g_tasks, &s, CMD_CREATE, NULL, "t2",
        "{'task_id': 't2', 'title': 'A', 'board_id': 'b1', 'status': null, 'priority': 5,"
        " 'estimate': 1.5, 'notes': 'line 1\\nline 2', 'origin': null}",
        &d);
    assert_event(&d, "TaskCreated",
                 "{'task_id': 't2', 'title': 'A', 'status': 'open', 'priority': 5,"
                 " 'board_id': 'b1', 'estimate': 1.5, 'notes': 'line 1\\nline 2'}");
    decision_free(&d);

    /* A JSON value of any shape for a json field. */
    run(g_config, &s, CMD_CREATE, NULL, "c1", "{'value': {'a': [1, 'x', null]}}", &d);
    assert_event(&d, "ConfigValueSet", "{'name': 'c1', 'value': {'a': [1, 'x', null]}}");
    decision_free(&d);

    /* decision_free resets, and is safe twice. */
    assert_null(d.event_data);
    decision_free(&d);
}

static void test_create_collects_every_error(void **state)
{
    (void)state;
    entity_state_t s;
    entity_state_init(&s);
    decision_t d;

    /* One error per offending member in body order, then the missing
     * required fields in definition order; a rejected field is not also
     * reported missing. */
    run(g_tasks, &s, CMD_CREATE, NULL, "t1",
        "{'title': 5, 'priority': 9, 'bogus': 1, 'version': 2, 'status': 'nope',"
        " 'task_id': 'other', 'created_at': 'x', '_previous': {}, 'updated_at': null}",
        &d);
    assert_errors(&d, "title: must be a string; priority: must be at most 5;"
                      " bogus: is not a field of tasks; version: is read-only;"
                      " status: must be one of: open, done; task_id: must equal the key \"t1\";"
                      " created_at: is read-only; _previous: is not a field of tasks;"
                      " updated_at: is read-only; board_id: is required");
    assert_string_equal(d.detail, "10 fields failed validation");
    decision_free(&d);

    /* Every field type's message, together. */
    run(g_tasks, &s, CMD_CREATE, NULL, "t1",
        "{'title': 'abcdefghijklmnopqrstu', 'due': 'tomorrow', 'owner_email': 'nope',"
        " 'priority': 2.5, 'board_id': 'a/b', 'estimate': 'x', 'status': 1, 'notes': true}",
        &d);
    assert_errors(&d, "title: must be at most 20 characters long;"
                      " due: must be an RFC 3339 timestamp such as 2026-01-02T03:04:05Z;"
                      " owner_email: must be an e-mail address; priority: must be an integer;"
                      " board_id: must be a key: 1-255 characters, no '/' or control characters;"
                      " estimate: must be a number; status: must be one of: open, done;"
                      " notes: must be a string");
    assert_string_equal(d.detail, "8 fields failed validation");
    decision_free(&d);

    /* null for a required field without default is "required"; one error
     * reads in the singular. */
    run(g_tasks, &s, CMD_CREATE, NULL, "t1", "{'title': null, 'board_id': 'b1'}", &d);
    assert_errors(&d, "title: is required");
    assert_string_equal(d.detail, "1 field failed validation");
    decision_free(&d);

    /* No body at all: every required field is missing. */
    run(g_tasks, &s, CMD_CREATE, NULL, "t1", NULL, &d);
    assert_errors(&d, "title: is required; board_id: is required");
    decision_free(&d);
    run(g_boards, &s, CMD_CREATE, NULL, "b1", "{}", &d);
    assert_errors(&d, "name: is required");
    decision_free(&d);
}

static void test_create_key_rules(void **state)
{
    (void)state;
    entity_state_t s;
    entity_state_init(&s);
    decision_t d;

    /* An invalid key is reported on the key field, before body errors. */
    run(g_tasks, &s, CMD_CREATE, NULL, "a/b", "{'title': 1, 'board_id': 'b1'}", &d);
    assert_errors(&d, "task_id: must be a key: 1-255 characters, no '/' or control characters;"
                      " title: must be a string");
    decision_free(&d);
    /* ... or where the body names it. */
    run(g_tasks, &s, CMD_CREATE, NULL, "a/b", "{'title': 1, 'task_id': 'a/b', 'board_id': 'b'}",
        &d);
    assert_errors(&d, "title: must be a string;"
                      " task_id: must be a key: 1-255 characters, no '/' or control characters");
    decision_free(&d);
    run(g_tasks, &s, CMD_CREATE, NULL, "t1", "{'task_id': 7, 'title': 'x', 'board_id': 'b'}", &d);
    assert_errors(&d, "task_id: must be a string");
    decision_free(&d);

    /* The key's own rules when the definition declares it as a field: the
     * client must give it, at most 5 characters. */
    json_t *body = J("{'label': 'x'}");
    entity_cmd_t cmd = {.kind = CMD_CREATE,
                        .key = "0190a8f4-0000-7000-8000-000000000000",
                        .key_generated = true,
                        .body = body,
                        .now_us = NOW_US};
    assert_int_equal(entity_decide(g_codes, &s, &cmd, &d), CHR_EINVAL);
    assert_errors(&d, "code: is required");
    decision_free(&d);
    cmd.key_generated = false;
    cmd.key = "abcdef";
    assert_int_equal(entity_decide(g_codes, &s, &cmd, &d), CHR_EINVAL);
    assert_errors(&d, "code: must be at most 5 characters long");
    decision_free(&d);
    /* A generated key is fine when the key is not required. */
    cmd.key_generated = true;
    assert_int_equal(entity_decide(g_boards, &s, &cmd, &d), CHR_EINVAL);
    assert_errors(&d, "label: is not a field of boards; name: is required");
    decision_free(&d);
    json_decref(body);
    run(g_codes, &s, CMD_CREATE, NULL, "abcdef", "{'label': 'x', 'code': 'abcdef'}", &d);
    assert_errors(&d, "code: must be at most 5 characters long");
    decision_free(&d);
    run(g_codes, &s, CMD_CREATE, NULL, "ab", "{'code': 'ab', 'label': 'x'}", &d);
    assert_event(&d, "CodesCreated", "{'code': 'ab', 'label': 'x'}");
    decision_free(&d);

    /* Caller mistakes are answered, not crashed on. */
    entity_cmd_t bad = {.kind = CMD_CREATE, .key = NULL, .now_us = NOW_US};
    assert_int_equal(entity_decide(g_tasks, &s, &bad, &d), CHR_EINVAL);
    assert_failed(&d, CHR_EINVAL, "no key was given for tasks");
    decision_free(&d);
    bad.key = "t1";
    bad.kind = CMD_CUSTOM;
    task_t1(&s);
    assert_int_equal(entity_decide(g_tasks, &s, &bad, &d), CHR_EINVAL);
    assert_failed(&d, CHR_EINVAL, "no command was given for tasks");
    decision_free(&d);
    bad.kind = (cmd_kind_t)99;
    assert_int_equal(entity_decide(g_tasks, &s, &bad, &d), CHR_EINVAL);
    assert_failed(&d, CHR_EINVAL, "unknown command kind 99");
    decision_free(&d);
    entity_state_free(&s);

    /* A body that is not an object. */
    run(g_tasks, &s, CMD_CREATE, NULL, "t1", "[1]", &d);
    assert_failed(&d, CHR_EINVAL, "the request body must be a JSON object");
    decision_free(&d);
}

static void test_create_conflicts_and_recreate(void **state)
{
    (void)state;
    entity_state_t s;
    decision_t d;

    task_t1(&s);
    run(g_tasks, &s, CMD_CREATE, NULL, "t1", "{'title': 'Again', 'board_id': 'b1'}", &d);
    assert_failed(&d, CHR_ECONFLICT, "tasks t1 already exists");
    decision_free(&d);

    /* tasks may be recreated after a delete: a fresh create event. */
    run(g_tasks, &s, CMD_DELETE, NULL, "t1", NULL, &d);
    apply(g_tasks, &s, &d);
    decision_free(&d);
    run(g_tasks, &s, CMD_CREATE, NULL, "t1", "{'title': 'Again', 'board_id': 'b2'}", &d);
    assert_event(&d, "TaskCreated",
                 "{'task_id': 't1', 'title': 'Again', 'status': 'open', 'priority': 3,"
                 " 'board_id': 'b2'}");
    decision_free(&d);
    entity_state_free(&s);

    /* config may not. */
    config_deleted(&s);
    run(g_config, &s, CMD_CREATE, NULL, "c1", "{'value': 2}", &d);
    assert_failed(&d, CHR_ECONFLICT, "config c1 was deleted and cannot be recreated");
    decision_free(&d);
    entity_state_free(&s);
}

/* --- update --------------------------------------------------------------- */

static void test_update_partial_and_clear(void **state)
{
    (void)state;
    entity_state_t s;
    decision_t d;
    task_t1(&s);

    /* Only what changes is recorded, with its previous value; unchanged
     * members (numbers compare by value, the immutable field given as it is,
     * the key) are not. */
    run(g_tasks, &s, CMD_UPDATE, NULL, "t1",
        "{'title': 'New', 'estimate': 2.0, 'board_id': 'b1', 'task_id': 't1',"
        " 'owner_email': 'Ann@EXAMPLE.com', 'priority': 4}",
        &d);
    assert_event(&d, "TaskUpdated",
                 "{'task_id': 't1', 'title': 'New', 'priority': 4,"
                 " '_previous': {'title': 'Write', 'priority': 3}}");
    decision_free(&d);

    /* null clears a field that has a value; clearing an absent one is no
     * change. A new value is normalised. */
    run(g_tasks, &s, CMD_UPDATE, NULL, "t1",
        "{'due': null, 'notes': null, 'completed_at': '2026-03-01T10:00:00.5+02:00'}", &d);
    assert_event(&d, "TaskUpdated",
                 "{'task_id': 't1', 'due': null, 'completed_at': '2026-03-01T08:00:00.500000Z',"
                 " '_previous': {'due': '2026-01-02T03:04:05.000000Z', 'completed_at': null}}");
    decision_free(&d);

    /* A private field may be updated like any other. */
    run(g_tasks, &s, CMD_UPDATE, NULL, "t1", "{'secret': 's4'}", &d);
    assert_event(&d, "TaskUpdated",
                 "{'task_id': 't1', 'secret': 's4', '_previous': {'secret': 's3'}}");
    decision_free(&d);
    entity_state_free(&s);
}

static void test_update_no_op(void **state)
{
    (void)state;
    entity_state_t s;
    decision_t d;
    task_t1(&s);

    run(g_tasks, &s, CMD_UPDATE, NULL, "t1",
        "{'title': 'Write', 'priority': 3, 'due': '2026-01-02T04:04:05+01:00', 'origin': null}",
        &d);
    assert_int_equal(d.code, CHR_OK);
    assert_null(d.event_type);
    assert_null(d.event_data);
    assert_int_equal(d.n_errors, 0);
    assert_string_equal(d.detail, "");
    decision_free(&d);

    run(g_tasks, &s, CMD_UPDATE, NULL, "t1", NULL, &d);
    assert_int_equal(d.code, CHR_OK);
    assert_null(d.event_type);
    decision_free(&d);
    entity_state_free(&s);
}

static void test_update_errors(void **state)
{
    (void)state;
    entity_state_t s;
    decision_t d;
    task_t1(&s);

    run(g_tasks, &s, CMD_UPDATE, NULL, "t1",
        "{'title': null, 'board_id': 'b2', 'updated_at': 'x', 'zzz': 1, 'task_id': 't2',"
        " 'priority': 0, 'status': 'open', 'origin': 'import'}",
        &d);
    assert_errors(&d, "title: is required; board_id: is immutable; updated_at: is read-only;"
                      " zzz: is not a field of tasks; task_id: must equal the key \"t1\";"
                      " priority: must be at least 1; origin: is immutable");
    assert_string_equal(d.detail, "7 fields failed validation");
    decision_free(&d);

    /* A required field cannot be cleared even when immutable. */
    run(g_tasks, &s, CMD_UPDATE, NULL, "t1", "{'board_id': null}", &d);
    assert_errors(&d, "board_id: is required");
    decision_free(&d);
    entity_state_free(&s);

    /* An immutable field set at creation can be neither changed nor cleared,
     * but may be repeated. */
    task_created(&s, "{'title': 'x', 'board_id': 'b1', 'origin': 'import'}");
    run(g_tasks, &s, CMD_UPDATE, NULL, "t1", "{'origin': null}", &d);
    assert_errors(&d, "origin: is immutable");
    decision_free(&d);
    run(g_tasks, &s, CMD_UPDATE, NULL, "t1", "{'origin': 'other'}", &d);
    assert_errors(&d, "origin: is immutable");
    decision_free(&d);
    run(g_tasks, &s, CMD_UPDATE, NULL, "t1", "{'origin': 'import', 'title': 'y'}", &d);
    assert_event(&d, "TaskUpdated", "{'task_id': 't1', 'title': 'y', '_previous': {'title': 'x'}}");
    decision_free(&d);
    entity_state_free(&s);
}

static void test_update_missing_or_deleted(void **state)
{
    (void)state;
    entity_state_t s;
    decision_t d;

    entity_state_init(&s);
    run(g_tasks, &s, CMD_UPDATE, NULL, "t9", "{'title': 'x'}", &d);
    assert_failed(&d, CHR_ENOTFOUND, "tasks t9 does not exist");
    decision_free(&d);
    /* NULL state means never existed, too. */
    run(g_tasks, NULL, CMD_UPDATE, NULL, "t9", "{'title': 'x'}", &d);
    assert_failed(&d, CHR_ENOTFOUND, "tasks t9 does not exist");
    decision_free(&d);

    task_t1(&s);
    fold(g_tasks, &s, "TaskDeleted", "{'task_id': 't1'}", 2);
    run(g_tasks, &s, CMD_UPDATE, NULL, "t1", "{'title': 'x'}", &d);
    assert_failed(&d, CHR_ENOTFOUND, "tasks t1 does not exist");
    decision_free(&d);
    entity_state_free(&s);

    /* "Cannot set a deleted key". */
    config_deleted(&s);
    run(g_config, &s, CMD_UPDATE, NULL, "c1", "{'value': 2}", &d);
    assert_failed(&d, CHR_ECONFLICT, "config c1 was deleted");
    decision_free(&d);
    entity_state_free(&s);
}

/* --- upsert --------------------------------------------------------------- */

static void test_upsert_both_ways(void **state)
{
    (void)state;
    entity_state_t s;
    decision_t d;

    /* Absent: create semantics, including required fields. */
    entity_state_init(&s);
    run(g_tasks, &s, CMD_UPSERT, NULL, "t5", "{'title': 'Up', 'board_id': 'b1'}", &d);
    assert_event(&d, "TaskCreated",
                 "{'task_id': 't5', 'title': 'Up', 'status': 'open', 'priority': 3,"
                 " 'board_id': 'b1'}");
    decision_free(&d);
    run(g_tasks, &s, CMD_UPSERT, NULL, "t5", "{'priority': 2}", &d);
    assert_errors(&d, "title: is required; board_id: is required");
    decision_free(&d);

    /* Existing: the body replaces the state. Fields left out take their
     * default or null; required ones must be given; immutable ones left
     * out keep their value. */
    entity_state_free(&s);
    task_created(&s, "{'title': 'Write', 'board_id': 'b1', 'priority': 4, 'estimate': 2,"
                     " 'secret': 's3'}");
    run(g_tasks, &s, CMD_UPSERT, NULL, "t1", "{'title': 'Rewrite', 'notes': 'n'}", &d);
    assert_event(&d, "TaskUpdated",
                 "{'task_id': 't1', 'title': 'Rewrite', 'notes': 'n', 'priority': 3,"
                 " 'estimate': null, 'secret': null,"
                 " '_previous': {'title': 'Write', 'notes': null, 'priority': 4,"
                 " 'estimate': 2, 'secret': 's3'}}");
    apply(g_tasks, &s, &d);
    decision_free(&d);
    /* the same whole state again: nothing changes, no event */
    run(g_tasks, &s, CMD_UPSERT, NULL, "t1", "{'title': 'Rewrite', 'notes': 'n'}", &d);
    assert_int_equal(d.code, CHR_OK);
    assert_null(d.event_type);
    decision_free(&d);
    run(g_tasks, &s, CMD_UPSERT, NULL, "t1", "{'priority': 2}", &d);
    assert_errors(&d, "title: is required");
    decision_free(&d);
    run(g_tasks, &s, CMD_UPSERT, NULL, "t1", "{'title': 'Write', 'board_id': 'b9'}", &d);
    assert_errors(&d, "board_id: is immutable");
    decision_free(&d);
    run(g_tasks, &s, CMD_UPSERT, NULL, "t1", "{'title': 'Write', 'bogus': 1}", &d);
    assert_errors(&d, "bogus: is not a field of tasks");
    decision_free(&d);

    /* Deleted, recreate allowed: create again. */
    fold(g_tasks, &s, "TaskDeleted", "{'task_id': 't1'}", 2);
    run(g_tasks, &s, CMD_UPSERT, NULL, "t1", "{'title': 'Back', 'board_id': 'b1'}", &d);
    assert_event(&d, "TaskCreated",
                 "{'task_id': 't1', 'title': 'Back', 'status': 'open', 'priority': 3,"
                 " 'board_id': 'b1'}");
    decision_free(&d);
    entity_state_free(&s);

    /* config: set, set again with the old value recorded, then deleted
     * keys cannot be set. */
    entity_state_init(&s);
    run(g_config, &s, CMD_UPSERT, NULL, "c1", "{'value': {'a': [1, 2]}}", &d);
    assert_event(&d, "ConfigValueSet", "{'name': 'c1', 'value': {'a': [1, 2]}}");
    apply(g_config, &s, &d);
    decision_free(&d);
    run(g_config, &s, CMD_UPSERT, NULL, "c1", "{'value': 7}", &d);
    assert_event(&d, "ConfigValueSet",
                 "{'name': 'c1', 'value': 7, '_previous': {'value': {'a': [1, 2]}}}");
    decision_free(&d);
    entity_state_free(&s);

    config_deleted(&s);
    run(g_config, &s, CMD_UPSERT, NULL, "c1", "{'value': 2}", &d);
    assert_failed(&d, CHR_ECONFLICT, "config c1 was deleted and cannot be recreated");
    decision_free(&d);
    entity_state_free(&s);
}

/* --- delete --------------------------------------------------------------- */

static void test_delete(void **state)
{
    (void)state;
    entity_state_t s;
    decision_t d;
    task_t1(&s);

    /* The event carries the whole state before, private fields included
     * (events are the record; responses hide them). */
    run(g_tasks, &s, CMD_DELETE, NULL, "t1", "{'ignored': true}", &d);
    assert_event(&d, "TaskDeleted",
                 "{'task_id': 't1', '_previous': {'task_id': 't1', 'title': 'Write',"
                 " 'status': 'open', 'priority': 3, 'due': '2026-01-02T03:04:05.000000Z',"
                 " 'owner_email': 'Ann@example.com', 'board_id': 'b1', 'estimate': 2,"
                 " 'secret': 's3'}}");
    apply(g_tasks, &s, &d);
    decision_free(&d);

    /* Deleting a deleted entity: it does not exist. */
    run(g_tasks, &s, CMD_DELETE, NULL, "t1", NULL, &d);
    assert_failed(&d, CHR_ENOTFOUND, "tasks t1 does not exist");
    decision_free(&d);
    entity_state_free(&s);

    entity_state_init(&s);
    run(g_tasks, &s, CMD_DELETE, NULL, "t9", NULL, &d);
    assert_failed(&d, CHR_ENOTFOUND, "tasks t9 does not exist");
    decision_free(&d);

    config_deleted(&s);
    run(g_config, &s, CMD_DELETE, NULL, "c1", NULL, &d);
    assert_failed(&d, CHR_ENOTFOUND, "config c1 does not exist");
    decision_free(&d);
    entity_state_free(&s);
}

/* --- custom commands ------------------------------------------------------ */

static void test_custom_when_set_now_input(void **state)
{
    (void)state;
    entity_state_t s;
    decision_t d;
    task_t1(&s);

    /* $now and $input; every set field is recorded with its old value, and
     * the validated input too. */
    run(g_tasks, &s, CMD_CUSTOM, "complete", "t1", "{'note': 'done it'}", &d);
    assert_event(&d, "TaskCompleted",
                 "{'task_id': 't1', 'status': 'done', 'completed_at': '" NOW_TEXT "',"
                 " 'notes': 'done it',"
                 " '_previous': {'status': 'open', 'completed_at': null, 'notes': null},"
                 " '_input': {'note': 'done it'}}");
    decision_free(&d);

    /* An absent input leaves its field alone. */
    run(g_tasks, &s, CMD_CUSTOM, "complete", "t1", NULL, &d);
    assert_event(&d, "TaskCompleted",
                 "{'task_id': 't1', 'status': 'done', 'completed_at': '" NOW_TEXT "',"
                 " '_previous': {'status': 'open', 'completed_at': null}, '_input': {}}");
    apply(g_tasks, &s, &d);
    decision_free(&d);

    /* The precondition no longer holds. */
    run(g_tasks, &s, CMD_CUSTOM, "complete", "t1", "{'note': 'again'}", &d);
    assert_failed(&d, CHR_ECONFLICT, "precondition failed: status is \"done\", expected \"open\"");
    decision_free(&d);

    /* A constant null clears; input defaults show in _input. */
    run(g_tasks, &s, CMD_CUSTOM, "reopen", "t1", "{}", &d);
    assert_event(&d, "TaskReopened",
                 "{'task_id': 't1', 'status': 'open', 'completed_at': null,"
                 " '_previous': {'status': 'done', 'completed_at': '" NOW_TEXT "'},"
                 " '_input': {'reason': 'unspecified'}}");
    apply(g_tasks, &s, &d);
    decision_free(&d);
    assert_null(json_object_get(s.data, "completed_at"));
    assert_string_equal(json_string_value(json_object_get(s.data, "status")), "open");

    /* A command is an intent: emitted even when nothing changes. */
    run(g_tasks, &s, CMD_CUSTOM, "prioritise", "t1", "{'level': 3}", &d);
    assert_event(&d, "TaskPrioritised",
                 "{'task_id': 't1', 'priority': 3, '_previous': {'priority': 3},"
                 " '_input': {'level': 3}}");
    decision_free(&d);
    entity_state_free(&s);
}

static void test_custom_null_precondition(void **state)
{
    (void)state;
    entity_state_t s;
    decision_t d;
    task_created(&s, "{'title': 'x', 'board_id': 'b1'}");

    /* when {owner_email: null}: absent passes. Inputs are normalised like
     * fields. */
    run(g_tasks, &s, CMD_CUSTOM, "claim", "t1", "{'email': 'Bob@Example.COM'}", &d);
    assert_event(&d, "TaskClaimed",
                 "{'task_id': 't1', 'owner_email': 'Bob@example.com',"
                 " '_previous': {'owner_email': null}, '_input': {'email': 'Bob@example.com'}}");
    apply(g_tasks, &s, &d);
    decision_free(&d);

    run(g_tasks, &s, CMD_CUSTOM, "claim", "t1", "{'email': 'eve@example.com'}", &d);
    assert_failed(&d, CHR_ECONFLICT,
                  "precondition failed: owner_email is \"Bob@example.com\", expected null");
    decision_free(&d);
    entity_state_free(&s);

    /* A private field's value never shows in the message. */
    task_created(&s, "{'title': 'x', 'board_id': 'b1', 'secret': 'hidden'}");
    run(g_tasks, &s, CMD_CUSTOM, "unlock", "t1", NULL, &d);
    assert_failed(&d, CHR_ECONFLICT,
                  "precondition failed: secret does not have the expected value");
    decision_free(&d);
    entity_state_free(&s);
    task_t1(&s);
    run(g_tasks, &s, CMD_CUSTOM, "unlock", "t1", NULL, &d);
    assert_event(&d, "TaskUnlocked",
                 "{'task_id': 't1', 'status': 'open', '_previous': {'status': 'open'},"
                 " '_input': {}}");
    decision_free(&d);
    entity_state_free(&s);
}

static void test_custom_errors(void **state)
{
    (void)state;
    entity_state_t s;
    decision_t d;
    task_created(&s, "{'title': 'x', 'board_id': 'b1'}");

    /* Input validation comes before the precondition. */
    run(g_tasks, &s, CMD_CUSTOM, "complete", "t1",
        "{'note': 5, 'extra': 1, 'task_id': 't1', 'status': 'done'}", &d);
    assert_errors(&d, "note: must be a string; extra: is not an input of complete;"
                      " status: is not an input of complete");
    assert_string_equal(d.detail, "3 fields failed validation");
    decision_free(&d);
    run(g_tasks, &s, CMD_CUSTOM, "complete", "t1", "{'task_id': 't2'}", &d);
    assert_errors(&d, "task_id: must equal the key \"t1\"");
    decision_free(&d);

    run(g_tasks, &s, CMD_CUSTOM, "claim", "t1", "{}", &d);
    assert_errors(&d, "email: is required");
    decision_free(&d);
    run(g_tasks, &s, CMD_CUSTOM, "claim", "t1", "{'email': null}", &d);
    assert_errors(&d, "email: is required");
    decision_free(&d);
    run(g_tasks, &s, CMD_CUSTOM, "claim", "t1", "{'email': 'not-an-email'}", &d);
    assert_errors(&d, "email: must be an e-mail address");
    decision_free(&d);
    run(g_tasks, &s, CMD_CUSTOM, "prioritise", "t1", "{'level': 9}", &d);
    assert_errors(&d, "level: must be at most 5");
    decision_free(&d);

    /* Not there, or deleted. */
    fold(g_tasks, &s, "TaskDeleted", "{'task_id': 't1'}", 2);
    run(g_tasks, &s, CMD_CUSTOM, "complete", "t1", NULL, &d);
    assert_failed(&d, CHR_ENOTFOUND, "tasks t1 does not exist");
    decision_free(&d);
    entity_state_free(&s);
    entity_state_init(&s);
    run(g_tasks, &s, CMD_CUSTOM, "complete", "t9", NULL, &d);
    assert_failed(&d, CHR_ENOTFOUND, "tasks t9 does not exist");
    decision_free(&d);
}

/* --- evolve --------------------------------------------------------------- */

/* A stream of task t1 and the state after each of its events. */
static const struct {
    const char *type, *data;
    const char *state; /* the data after the event, "null" = none */
    bool deleted;
    int created; /* created_at = T(created); 0 = never */
} stream[] = {
    {"TaskCreated",
     "{'task_id': 't1', 'title': 'Write', 'status': 'open', 'priority': 3, 'board_id': 'b1',"
     " 'secret': 's3'}",
     "{'task_id': 't1', 'title': 'Write', 'status': 'open', 'priority': 3, 'board_id': 'b1',"
     " 'secret': 's3'}",
     false, 1},
    {"TaskUpdated",
     "{'task_id': 't1', 'title': 'New', 'due': '2026-01-02T03:04:05.000000Z',"
     " '_previous': {'title': 'Write', 'due': null}}",
     "{'task_id': 't1', 'title': 'New', 'status': 'open', 'priority': 3, 'board_id': 'b1',"
     " 'secret': 's3', 'due': '2026-01-02T03:04:05.000000Z'}",
     false, 1},
    {"TaskCompleted",
     "{'task_id': 't1', 'status': 'done', 'completed_at': '" NOW_TEXT "',"
     " '_previous': {'status': 'open', 'completed_at': null}, '_input': {'note': 'n'}}",
     "{'task_id': 't1', 'title': 'New', 'status': 'done', 'priority': 3, 'board_id': 'b1',"
     " 'secret': 's3', 'due': '2026-01-02T03:04:05.000000Z', 'completed_at': '" NOW_TEXT "'}",
     false, 1},
    /* null removes; names that are not fields (any more) are ignored. */
    {"TaskUpdated", "{'task_id': 't1', 'due': null, 'dropped_field': 1, '_previous': {'due': 'x'}}",
     "{'task_id': 't1', 'title': 'New', 'status': 'done', 'priority': 3, 'board_id': 'b1',"
     " 'secret': 's3', 'completed_at': '" NOW_TEXT "'}",
     false, 1},
    /* Delete keeps the last data, marked deleted. */
    {"TaskDeleted", "{'task_id': 't1', '_previous': {}}",
     "{'task_id': 't1', 'title': 'New', 'status': 'done', 'priority': 3, 'board_id': 'b1',"
     " 'secret': 's3', 'completed_at': '" NOW_TEXT "'}",
     true, 1},
    /* A recreate starts fresh from the event alone. */
    {"TaskCreated",
     "{'task_id': 't1', 'title': 'Again', 'status': 'open', 'priority': 3, 'board_id': 'b2'}",
     "{'task_id': 't1', 'title': 'Again', 'status': 'open', 'priority': 3, 'board_id': 'b2'}",
     false, 6},
    /* A raw append of an unknown type: data unchanged, version advances. */
    {"SomethingRaw", "{'title': 'ignored'}",
     "{'task_id': 't1', 'title': 'Again', 'status': 'open', 'priority': 3, 'board_id': 'b2'}",
     false, 6},
    /* An update with non-object data changes nothing either. */
    {"TaskUpdated", "[1, 2]",
     "{'task_id': 't1', 'title': 'Again', 'status': 'open', 'priority': 3, 'board_id': 'b2'}",
     false, 6},
};
#define STREAM_LEN (sizeof stream / sizeof stream[0])

static void assert_folded(const entity_state_t *s, size_t n)
{
    size_t i = n - 1;
    assert_json(s->data, stream[i].state);
    assert_int_equal(s->version, (int64_t)n);
    assert_int_equal(s->deleted, stream[i].deleted);
    assert_int_equal(s->created_at, T(stream[i].created));
    assert_int_equal(s->updated_at, T(n));
}

static void test_evolve_sequence(void **state)
{
    (void)state;
    entity_state_t s;
    entity_state_init(&s);
    assert_null(s.data);
    assert_int_equal(s.version, 0);
    for (size_t i = 0; i < STREAM_LEN; i++) {
        fold(g_tasks, &s, stream[i].type, stream[i].data, (int64_t)i + 1);
        assert_folded(&s, i + 1);
    }
    entity_state_free(&s);
    assert_null(s.data);
    assert_int_equal(s.version, 0);
}

/* The state at version N is the fold of the first N events, from scratch. */
static void test_time_travel(void **state)
{
    (void)state;
    for (size_t n = 1; n <= STREAM_LEN; n++) {
        entity_state_t s;
        entity_state_init(&s);
        for (size_t i = 0; i < n; i++)
            fold(g_tasks, &s, stream[i].type, stream[i].data, (int64_t)i + 1);
        assert_folded(&s, n);
        entity_state_free(&s);
    }
}

static void test_evolve_edges(void **state)
{
    (void)state;
    entity_state_t s;
    entity_state_init(&s);

    /* Raw events and a delete on a stream that never held the entity. */
    fold(g_tasks, &s, "SomethingRaw", "{'task_id': 't1', 'title': 'x'}", 1);
    assert_null(s.data);
    assert_int_equal(s.version, 1);
    assert_int_equal(s.created_at, 0);
    assert_int_equal(s.updated_at, T(1));
    fold(g_tasks, &s, "TaskDeleted", "{'task_id': 't1'}", 2);
    assert_null(s.data);
    assert_false(s.deleted);
    assert_int_equal(s.version, 2);

    /* Then the create: created_at is its timestamp. A command event that
     * comes first creates the object too. */
    fold(g_tasks, &s, "TaskCreated", "{'task_id': 't1', 'title': 'x', 'board_id': 'b'}", 3);
    assert_json(s.data, "{'task_id': 't1', 'title': 'x', 'board_id': 'b'}");
    assert_int_equal(s.created_at, T(3));
    entity_state_free(&s);

    fold(g_tasks, &s, "TaskClaimed", "{'task_id': 't1', 'owner_email': 'a@b.co', '_input': {}}", 1);
    assert_json(s.data, "{'task_id': 't1', 'owner_email': 'a@b.co'}");
    assert_int_equal(s.created_at, T(1));
    /* The key is never removed by null. */
    fold(g_tasks, &s, "TaskUpdated", "{'task_id': null, 'owner_email': null}", 2);
    assert_json(s.data, "{'task_id': 't1'}");
    entity_state_free(&s);

    /* One event type for create and update (config-api's ConfigValueSet). */
    fold(g_config, &s, "ConfigValueSet", "{'name': 'c1', 'value': 1}", 1);
    fold(g_config, &s, "ConfigValueSet", "{'name': 'c1', 'value': [2], '_previous': {'value': 1}}",
         2);
    assert_json(s.data, "{'name': 'c1', 'value': [2]}");
    assert_int_equal(s.created_at, T(1));
    assert_int_equal(s.updated_at, T(2));
    entity_state_free(&s);
}

/* decide and evolve together: each decision's event folds into the state the
 * next decision sees. */
static void test_decide_evolve_round_trip(void **state)
{
    (void)state;
    entity_state_t s;
    decision_t d;
    entity_state_init(&s);

    run(g_tasks, &s, CMD_CREATE, NULL, "t1", "{'title': 'A', 'board_id': 'b1', 'secret': 'k'}", &d);
    apply(g_tasks, &s, &d);
    decision_free(&d);
    run(g_tasks, &s, CMD_UPDATE, NULL, "t1", "{'title': 'B', 'estimate': 0.5}", &d);
    apply(g_tasks, &s, &d);
    decision_free(&d);
    run(g_tasks, &s, CMD_CUSTOM, "complete", "t1", "{'note': 'ok'}", &d);
    apply(g_tasks, &s, &d);
    decision_free(&d);
    run(g_tasks, &s, CMD_UPDATE, NULL, "t1", "{'estimate': null}", &d);
    apply(g_tasks, &s, &d);
    decision_free(&d);

    assert_json(s.data, "{'task_id': 't1', 'title': 'B', 'status': 'done', 'priority': 3,"
                        " 'board_id': 'b1', 'secret': 'k', 'completed_at': '" NOW_TEXT "',"
                        " 'notes': 'ok'}");
    assert_int_equal(s.version, 4);
    assert_int_equal(s.created_at, T(1));
    assert_int_equal(s.updated_at, T(4));

    run(g_tasks, &s, CMD_DELETE, NULL, "t1", NULL, &d);
    apply(g_tasks, &s, &d);
    decision_free(&d);
    assert_true(s.deleted);
    run(g_tasks, &s, CMD_UPSERT, NULL, "t1", "{'title': 'C', 'board_id': 'b3'}", &d);
    apply(g_tasks, &s, &d);
    decision_free(&d);
    assert_false(s.deleted);
    assert_json(s.data, "{'task_id': 't1', 'title': 'C', 'status': 'open', 'priority': 3,"
                        " 'board_id': 'b3'}");
    assert_int_equal(s.version, 6);
    assert_int_equal(s.created_at, T(6));
    entity_state_free(&s);
}

/* --- JSON view ------------------------------------------------------------ */

static void test_state_to_json(void **state)
{
    (void)state;
    entity_state_t s;
    entity_state_init(&s);
    assert_null(entity_state_to_json(g_tasks, &s));
    assert_null(entity_state_to_json(g_tasks, NULL));

    for (size_t i = 0; i < 2; i++)
        fold(g_tasks, &s, stream[i].type, stream[i].data, (int64_t)i + 1);
    /* A member that is no longer a field is not shown either. */
    json_object_set_new(s.data, "old_field", json_true());

    json_t *view = entity_state_to_json(g_tasks, &s);
    assert_json(view, "{'task_id': 't1', 'title': 'New', 'status': 'open', 'priority': 3,"
                      " 'due': '2026-01-02T03:04:05.000000Z', 'owner_email': null,"
                      " 'board_id': 'b1', 'estimate': null, 'notes': null,"
                      " 'completed_at': null, 'origin': null, 'version': 2,"
                      " 'created_at': '2026-01-01T01:00:00.000000Z',"
                      " 'updated_at': '2026-01-01T02:00:00.000000Z'}");
    /* The view is a copy: changing it leaves the state alone. */
    json_string_set(json_object_get(view, "title"), "Z");
    assert_string_equal(json_string_value(json_object_get(s.data, "title")), "New");
    json_decref(view);

    /* A deleted state still renders (callers check s.deleted). */
    fold(g_tasks, &s, "TaskDeleted", "{'task_id': 't1'}", 3);
    view = entity_state_to_json(g_tasks, &s);
    assert_non_null(view);
    assert_int_equal(json_integer_value(json_object_get(view, "version")), 3);
    assert_null(json_object_get(view, "secret"));
    json_decref(view);
    entity_state_free(&s);
}

/* --- allocation failures ------------------------------------------------- */

/* jansson's allocator, failing once `budget` allocations have been made
 * (budget < 0: never), as jansson's own chaos tests do. */
static long g_budget = -1;
static bool g_failed;

static void *chaos_malloc(size_t n)
{
    if (g_budget == 0) {
        g_failed = true;
        return NULL;
    }
    if (g_budget > 0) g_budget--;
    return malloc(n);
}

static void chaos_free(void *p)
{
    free(p);
}

/* Decides cmd with the Nth jansson allocation failing, for every N until a
 * run needs no more: each run either ends as it would with memory (want) or
 * with CHR_ENOMEM and nothing in the decision; ASan checks nothing leaks. */
static void decide_under_chaos(const entity_def_t *e, const entity_state_t *s,
                               const entity_cmd_t *cmd, int want)
{
    json_set_alloc_funcs(chaos_malloc, chaos_free);
    for (long n = 0;; n++) {
        decision_t d;
        g_failed = false;
        g_budget = n;
        int rc = entity_decide(e, s, cmd, &d);
        g_budget = -1;
        if (!g_failed) {
            assert_int_equal(rc, want);
            decision_free(&d);
            break;
        }
        if (rc != CHR_ENOMEM) fail_msg("allocation %ld failed but the result was %d", n, rc);
        assert_int_equal(d.code, CHR_ENOMEM);
        assert_int_equal(d.n_errors, 0);
        assert_null(d.errors);
        assert_null(d.event_type);
        assert_null(d.event_data);
        decision_free(&d);
        assert_true(n < 10000);
    }
    json_set_alloc_funcs(malloc, free);
}

static void chaos_decide(const entity_def_t *e, const entity_state_t *s, cmd_kind_t kind,
                         const char *command, const char *key, const char *body, int want)
{
    json_t *b = body ? J(body) : NULL;
    entity_cmd_t cmd = {.kind = kind,
                        .custom = command ? entity_command(e, command) : NULL,
                        .key = key,
                        .body = b,
                        .now_us = NOW_US};
    decide_under_chaos(e, s, &cmd, want);
    json_decref(b);
}

static void test_out_of_memory(void **state)
{
    (void)state;
    entity_state_t s;
    entity_state_init(&s);
    chaos_decide(g_tasks, &s, CMD_CREATE, NULL, "t1",
                 "{'title': 'W', 'board_id': 'b1', 'due': '2026-01-02T04:04:05+01:00',"
                 " 'owner_email': 'A@B.CO'}",
                 CHR_OK);
    chaos_decide(g_tasks, &s, CMD_CREATE, NULL, "t1", "{'title': 5, 'zz': 1}", CHR_EINVAL);
    chaos_decide(g_config, &s, CMD_UPSERT, NULL, "c1", "{'value': {'a': [1, {'b': 2}]}}", CHR_OK);

    task_t1(&s);
    chaos_decide(g_tasks, &s, CMD_UPDATE, NULL, "t1",
                 "{'title': 'N', 'due': null, 'owner_email': 'X@Y.CO', 'board_id': 'b2'}",
                 CHR_EINVAL);
    chaos_decide(g_tasks, &s, CMD_UPDATE, NULL, "t1",
                 "{'title': 'N', 'due': null, 'owner_email': 'X@Y.CO'}", CHR_OK);
    chaos_decide(g_tasks, &s, CMD_DELETE, NULL, "t1", NULL, CHR_OK);
    chaos_decide(g_tasks, &s, CMD_CUSTOM, "complete", "t1", "{'note': 'n'}", CHR_OK);
    chaos_decide(g_tasks, &s, CMD_CUSTOM, "claim", "t1", "{'email': 'e@x.co'}", CHR_ECONFLICT);
    chaos_decide(g_tasks, &s, CMD_CUSTOM, "prioritise", "t1", "{'level': 9}", CHR_EINVAL);

    /* evolve: on failure the state is as it was. */
    json_t *ev = J(stream[1].data);
    char *before = json_dumps(s.data, JSON_COMPACT);
    json_set_alloc_funcs(chaos_malloc, chaos_free);
    for (long n = 0;; n++) {
        g_failed = false;
        g_budget = n;
        entity_state_t copy = s;
        copy.data = json_deep_copy(s.data);
        int rc = entity_evolve(g_tasks, &copy, "TaskUpdated", ev, 2, T(2));
        g_budget = -1;
        if (!copy.data) continue; /* the test's own copy failed */
        if (!g_failed) {
            assert_int_equal(rc, CHR_OK);
            assert_int_equal(copy.version, 2);
            entity_state_free(&copy);
            break;
        }
        assert_int_equal(rc, CHR_ENOMEM);
        char *after = json_dumps(copy.data, JSON_COMPACT);
        assert_string_equal(after, before);
        free(after);
        assert_int_equal(copy.version, 1);
        entity_state_free(&copy);
    }
    json_set_alloc_funcs(malloc, free);
    free(before);
    json_decref(ev);

    /* to_json: NULL on failure. */
    json_set_alloc_funcs(chaos_malloc, chaos_free);
    for (long n = 0;; n++) {
        g_failed = false;
        g_budget = n;
        json_t *view = entity_state_to_json(g_tasks, &s);
        g_budget = -1;
        if (!g_failed) {
            assert_non_null(view);
            json_decref(view);
            break;
        }
        assert_null(view);
    }
    json_set_alloc_funcs(malloc, free);
    entity_state_free(&s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_create_defaults_and_normalisation),
        cmocka_unit_test(test_create_collects_every_error),
        cmocka_unit_test(test_create_key_rules),
        cmocka_unit_test(test_create_conflicts_and_recreate),
        cmocka_unit_test(test_update_partial_and_clear),
        cmocka_unit_test(test_update_no_op),
        cmocka_unit_test(test_update_errors),
        cmocka_unit_test(test_update_missing_or_deleted),
        cmocka_unit_test(test_upsert_both_ways),
        cmocka_unit_test(test_delete),
        cmocka_unit_test(test_custom_when_set_now_input),
        cmocka_unit_test(test_custom_null_precondition),
        cmocka_unit_test(test_custom_errors),
        cmocka_unit_test(test_evolve_sequence),
        cmocka_unit_test(test_time_travel),
        cmocka_unit_test(test_evolve_edges),
        cmocka_unit_test(test_decide_evolve_round_trip),
        cmocka_unit_test(test_state_to_json),
        cmocka_unit_test(test_out_of_memory),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
