/*
 * test_definition.c - unit tests of core/definition.h: every definition in
 * tests/definitions/valid loads (with spot checks of the resolved model:
 * defaults, ref and route indexes, event names, operation masks), every one
 * in tests/definitions/invalid is rejected with exactly the message in its
 * `error` file, the layout hash moves only with the table layout, and
 * allocation failures inside jansson leave nothing behind.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/definition.h"
#include "core/field.h"

static const char *source_dir(void)
{
    const char *d = getenv("CHRONICLE_SOURCE_DIR");
    return d && *d ? d : ".";
}

/* Reads a whole file into a new NUL-terminated buffer (NULL when absent). */
static char *slurp(const char *path, size_t *len)
{
    FILE *fp = fopen(path, "rb");
    if (!fp) return NULL;
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    assert_non_null(buf);
    size_t got;
    while ((got = fread(buf + n, 1, cap - n - 1, fp)) > 0) {
        n += got;
        if (n + 1 == cap) {
            cap *= 2;
            buf = realloc(buf, cap);
            assert_non_null(buf);
        }
    }
    fclose(fp);
    buf[n] = '\0';
    if (len) *len = n;
    return buf;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The case directories under tests/definitions/<kind>, sorted. */
static char **list_cases(const char *kind, size_t *n)
{
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/tests/definitions/%s", source_dir(), kind);
    DIR *d = opendir(dir);
    if (!d) fail_msg("cannot open %s (set CHRONICLE_SOURCE_DIR)", dir);
    char **names = NULL;
    size_t len = 0, cap = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.') continue;
        if (len == cap) {
            cap = cap ? cap * 2 : 64;
            names = realloc(names, cap * sizeof *names);
            assert_non_null(names);
        }
        names[len] = strdup(de->d_name);
        assert_non_null(names[len]);
        len++;
    }
    closedir(d);
    qsort(names, len, sizeof *names, cmp_str);
    *n = len;
    return names;
}

static void free_cases(char **names, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
}

static definition_t *load_valid(const char *name)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/tests/definitions/valid/%s/app.json", source_dir(), name);
    definition_t *def = NULL;
    chr_err_t err;
    chr_err_clear(&err);
    int rc = definition_load_file(path, &def, &err);
    if (rc) fail_msg("valid/%s: rc %d: %s", name, rc, err.msg);
    assert_non_null(def);
    return def;
}

static definition_t *load_text(const char *text)
{
    definition_t *def = NULL;
    chr_err_t err;
    chr_err_clear(&err);
    int rc = definition_load(text, strlen(text), &def, &err);
    if (rc) fail_msg("rejected: %s", err.msg);
    return def;
}

static void test_valid_suite(void **state)
{
    (void)state;
    size_t n;
    char **names = list_cases("valid", &n);
    assert_true(n >= 5);
    for (size_t i = 0; i < n; i++) {
        definition_t *def = load_valid(names[i]);
        char hash[65];
        definition_layout_hash(def, hash);
        assert_int_equal(strlen(hash), 64);
        definition_free(def);
    }
    free_cases(names, n);
}

/* Strips trailing whitespace in place. */
static void rstrip(char *s)
{
    size_t n = strlen(s);
    while (n && (s[n - 1] == '\n' || s[n - 1] == '\r' || s[n - 1] == ' '))
        s[--n] = '\0';
}

static void test_invalid_suite(void **state)
{
    (void)state;
    size_t n;
    char **names = list_cases("invalid", &n);
    assert_true(n >= 40);
    int failures = 0;
    for (size_t i = 0; i < n; i++) {
        char path[1024];
        snprintf(path, sizeof path, "%s/tests/definitions/invalid/%s/error", source_dir(),
                 names[i]);
        char *want = slurp(path, NULL);
        if (!want) {
            print_error("invalid/%s: no error file\n", names[i]);
            failures++;
            continue;
        }
        rstrip(want);
        snprintf(path, sizeof path, "%s/tests/definitions/invalid/%s/app.json", source_dir(),
                 names[i]);
        size_t len;
        char *text = slurp(path, &len);
        if (!text) {
            print_error("invalid/%s: no app.json\n", names[i]);
            failures++;
            free(want);
            continue;
        }
        definition_t *def = NULL;
        chr_err_t err;
        chr_err_clear(&err);
        int rc = definition_load(text, len, &def, &err);
        if (rc != CHR_EINVAL || err.code != CHR_EINVAL) {
            print_error("invalid/%s: rc %d, want CHR_EINVAL (%s)\n", names[i], rc, err.msg);
            failures++;
        } else if (strcmp(err.msg, want) != 0) {
            print_error("invalid/%s:\n   got: %s\n  want: %s\n", names[i], err.msg, want);
            failures++;
        } else if (err.field[0]) {
            /* the message starts with the path in err.field */
            size_t fl = strlen(err.field);
            if (strncmp(err.msg, err.field, fl) != 0 || strncmp(err.msg + fl, ": ", 2) != 0) {
                print_error("invalid/%s: field \"%s\" does not prefix the message\n", names[i],
                            err.field);
                failures++;
            }
        }
        if (def) {
            print_error("invalid/%s: a definition was returned\n", names[i]);
            definition_free(def);
            failures++;
        }
        /* the same text through the file loader gives the same error */
        definition_t *def2 = NULL;
        chr_err_t err2;
        chr_err_clear(&err2);
        if (definition_load_file(path, &def2, &err2) != rc || strcmp(err2.msg, err.msg) != 0) {
            print_error("invalid/%s: definition_load_file disagrees: %s\n", names[i], err2.msg);
            failures++;
        }
        definition_free(def2);
        free(text);
        free(want);
    }
    free_cases(names, n);
    if (failures) fail_msg("%d invalid case(s) failed", failures);
}

static void test_status_app(void **state)
{
    (void)state;
    definition_t *def = load_valid("status-app");
    assert_string_equal(def->app, "status-app");
    assert_int_equal(def->n_entities, 2);

    const entity_def_t *teams = definition_entity(def, "teams");
    assert_non_null(teams);
    assert_ptr_equal(teams, &def->entities[0]);
    assert_string_equal(teams->key, "team_id");
    assert_int_equal(teams->n_fields, 3);
    assert_int_equal(teams->operations, OP_ALL);
    assert_true(teams->recreate_after_delete);
    assert_string_equal(teams->ev_create, "TeamRegistered");
    assert_string_equal(teams->ev_update, "TeamUpdated");
    assert_string_equal(teams->ev_delete, "TeamRemoved");
    assert_int_equal(teams->n_commands, 0);

    const field_def_t *name = entity_field(teams, "name");
    assert_non_null(name);
    assert_int_equal(name->type, FT_STRING);
    assert_true(name->required);
    assert_false(name->unique);
    assert_true(name->has_max_length);
    assert_int_equal(name->max_length, 255);
    const field_def_t *channel = entity_field(teams, "slack_channel");
    assert_true(channel->has_max_length); /* the type default, made explicit */
    assert_int_equal(channel->max_length, 255);
    const field_def_t *poll = entity_field(teams, "poll_schedule");
    assert_int_equal(poll->type, FT_CRON);
    assert_false(poll->required);
    assert_null(poll->default_value);
    assert_false(poll->has_max_length);
    assert_null(entity_field(teams, "team_id")); /* the key is not among the fields */
    assert_ptr_equal(entity_field_or_key(teams, "team_id"), &teams->key_field);
    assert_int_equal(teams->key_field.type, FT_STRING);
    assert_true(teams->key_field.unique);
    assert_true(teams->key_field.immutable);
    assert_false(teams->key_field.required);

    const entity_def_t *updates = &def->entities[1];
    assert_string_equal(updates->name, "status_updates");
    assert_string_equal(updates->key, "update_id");
    assert_int_equal(updates->operations, OP_CREATE);
    assert_string_equal(updates->ev_create, "StatusUpdateSubmitted");
    assert_string_equal(updates->ev_update, "StatusUpdatesUpdated");
    assert_string_equal(updates->ev_delete, "StatusUpdatesDeleted");
    const field_def_t *team = entity_field(updates, "team_id");
    assert_int_equal(team->type, FT_REF);
    assert_string_equal(team->ref_to, "teams");
    assert_int_equal(team->ref_entity, 0);
    const field_def_t *content = entity_field(updates, "content");
    assert_int_equal(content->type, FT_TEXT);
    assert_int_equal(content->max_length, 1 << 20);
    assert_string_equal(field_type_name(content->type), "text");

    assert_int_equal(def->n_schedules, 2);
    const schedule_def_t *poll_teams = &def->schedules[0];
    assert_string_equal(poll_teams->name, "poll_teams");
    assert_null(poll_teams->cron);
    assert_int_equal(poll_teams->entity, 0);
    assert_ptr_equal(&teams->fields[poll_teams->cron_field], poll);
    assert_string_equal(poll_teams->zone, "UTC");
    assert_int_equal(poll_teams->offset_s, 0);
    assert_string_equal(poll_teams->event, "StatusPollRequested");
    assert_string_equal(json_string_value(json_object_get(poll_teams->data, "slack_channel")),
                        "$row.slack_channel");
    const schedule_def_t *digest = &def->schedules[1];
    assert_string_equal(digest->cron, "0 9 * * MON");
    assert_int_equal(digest->entity, -1);
    assert_int_equal(digest->offset_s, 7200);
    assert_string_equal(digest->event, "WeeklyDigestDue");
    /* the default data template */
    assert_int_equal(json_object_size(digest->data), 1);
    assert_string_equal(json_string_value(json_object_get(digest->data, "tick")), "$tick");

    assert_int_equal(def->n_routes, 5);
    const route_def_t *r = &def->routes[0];
    assert_string_equal(r->method, "POST");
    assert_string_equal(r->path, "/commands/register-team");
    assert_int_equal(r->entity, 0);
    assert_string_equal(r->action, "create");
    assert_null(r->sort);
    assert_int_equal(r->limit, 0);
    assert_null(r->filters);
    assert_null(r->fields);
    r = &def->routes[1];
    assert_int_equal(r->entity, 1);
    assert_string_equal(r->action, "create");
    r = &def->routes[3];
    assert_string_equal(r->method, "GET");
    assert_string_equal(r->path, "/api/teams/{team_id}");
    assert_string_equal(r->action, "get");
    r = &def->routes[4];
    assert_string_equal(r->path, "/api/updates");
    assert_int_equal(r->entity, 1);
    assert_string_equal(r->action, "list");
    assert_string_equal(r->sort, "-created_at");
    assert_int_equal(r->limit, 20);
    assert_int_equal(r->max_limit, 100);

    assert_int_equal(definition_entity_index(def, "status_updates"), 1);
    assert_int_equal(definition_entity_index(def, "nope"), -1);
    assert_null(definition_entity(def, "nope"));
    assert_null(entity_command(teams, "nope"));
    definition_free(def);
}

static void test_config_api(void **state)
{
    (void)state;
    definition_t *def = load_valid("config-api");
    const entity_def_t *c = &def->entities[0];
    assert_string_equal(c->key, "name");
    assert_int_equal(c->operations, OP_ALL);
    assert_string_equal(c->ev_create, "ConfigValueSet");
    assert_string_equal(c->ev_update, "ConfigValueSet");
    assert_string_equal(c->ev_delete, "ConfigValueDeleted");
    assert_false(c->recreate_after_delete);
    assert_int_equal(entity_field(c, "value")->type, FT_JSON);

    assert_int_equal(def->n_routes, 5);
    const route_def_t *list = &def->routes[0];
    assert_string_equal(list->action, "list");
    assert_string_equal(list->sort, "name");
    assert_int_equal(list->n_fields, 4);
    assert_string_equal(list->fields[0], "name");
    assert_string_equal(list->fields[3], "updated_at");
    assert_string_equal(def->routes[2].method, "PUT");
    assert_string_equal(def->routes[2].action, "upsert");
    assert_string_equal(def->routes[3].method, "DELETE");
    assert_string_equal(def->routes[4].path, "/config/{name}/history");
    assert_string_equal(def->routes[4].action, "history");
    definition_free(def);
}

static void test_platform_access_and_tenancy(void **state)
{
    (void)state;
    definition_t *def = load_valid("platform");
    const entity_def_t *tenants = definition_entity(def, "tenants");
    assert_false(tenants->tenant_scoped);
    assert_int_equal(tenants->access[ACC_LIST].rules[0].kind, ACCESS_ROLE);
    assert_string_equal(tenants->access[ACC_LIST].rules[0].arg, "platform_admin");

    const entity_def_t *ws = definition_entity(def, "workspaces");
    assert_true(ws->tenant_scoped);
    assert_string_equal(access_owner_field(&ws->access[ACC_CREATE]), "owner_id");
    assert_int_equal(ws->access[ACC_UPDATE].n, 2);
    assert_string_equal(access_owner_field(&ws->access[ACC_UPDATE]), "owner_id");
    assert_int_equal(ws->access[ACC_UPDATE].rules[1].kind, ACCESS_ROLE);
    assert_false(ws->access[ACC_GET].is_default);

    const entity_def_t *m = definition_entity(def, "memberships");
    assert_int_equal(m->n_unique, 1);
    assert_int_equal(m->unique[0].n, 2);
    assert_string_equal(m->unique[0].fields[0], "workspace_id");
    assert_string_equal(m->unique[0].fields[1], "user_id");

    const entity_def_t *users = definition_entity(def, "users");
    assert_string_equal(access_owner_field(&entity_command(users, "rename")->access), "user_id");
    const entity_def_t *notes = definition_entity(def, "notifications");
    assert_string_equal(access_owner_field(&entity_command(notes, "mark_read")->access), "user_id");
    assert_int_equal(notes->access[ACC_CREATE].rules[0].kind, ACCESS_AUTHENTICATED);
    definition_free(def);

    /* what a definition leaves out is "authenticated", marked as the default */
    def = load_valid("minimal");
    for (size_t i = 0; i < ACC_N; i++) {
        assert_true(def->entities[0].access[i].is_default);
        assert_int_equal(def->entities[0].access[i].rules[0].kind, ACCESS_AUTHENTICATED);
    }
    assert_string_equal(access_op_name(ACC_HISTORY), "history");
    definition_free(def);
}

static void test_kanban(void **state)
{
    (void)state;
    definition_t *def = load_valid("kanban");
    assert_string_equal(def->entities[0].key, "id"); /* the default key */
    assert_string_equal(def->entities[0].ev_create, "BoardsCreated");

    const entity_def_t *tasks = definition_entity(def, "tasks");
    assert_int_equal(entity_field(tasks, "column_id")->ref_entity, 1);
    assert_int_equal(entity_field(tasks, "board_id")->ref_entity, 0);
    assert_true(entity_field(tasks, "board_id")->immutable);
    const field_def_t *prio = entity_field(tasks, "priority");
    assert_int_equal(prio->n_values, 3);
    assert_string_equal(prio->values[2], "high");
    assert_string_equal(json_string_value(prio->default_value), "normal");
    assert_true(json_is_false(entity_field(tasks, "archived")->default_value));
    assert_true(json_is_array(entity_field(tasks, "labels")->default_value));
    assert_true(entity_field(tasks, "estimate")->has_min);
    assert_false(entity_field(tasks, "estimate")->has_max);

    assert_int_equal(tasks->n_commands, 3);
    const command_def_t *move = entity_command(tasks, "move");
    assert_non_null(move);
    assert_string_equal(move->event, "TaskMoved");
    assert_int_equal(move->n_input, 1);
    assert_string_equal(move->input[0].name, "column_id");
    assert_int_equal(move->input[0].type, FT_REF);
    assert_int_equal(move->input[0].ref_entity, 1);
    assert_true(move->input[0].required);
    assert_null(move->when);
    assert_string_equal(json_string_value(json_object_get(move->set, "column_id")),
                        "$input.column_id");
    assert_string_equal(json_string_value(json_object_get(move->set, "moved_at")), "$now");

    const entity_def_t *notes = definition_entity(def, "notifications");
    assert_int_equal(notes->operations, OP_CREATE | OP_DELETE);
    const command_def_t *mr = entity_command(notes, "mark_read");
    assert_string_equal(mr->event, "NotificationRead");
    assert_true(json_is_false(json_object_get(mr->when, "read")));
    assert_true(json_is_true(json_object_get(mr->set, "read")));
    assert_int_equal(mr->n_input, 0);
    assert_null(mr->input);

    const route_def_t *r = &def->routes[0];
    assert_string_equal(r->action, "list");
    assert_int_equal(r->entity, definition_entity_index(def, "tasks"));
    assert_true(json_is_true(json_object_get(r->filters, "archived")));
    assert_string_equal(r->sort, "-updated_at,title");
    r = &def->routes[1];
    assert_string_equal(r->action, "move");
    r = &def->routes[6];
    assert_string_equal(r->action, "mark_read");
    assert_int_equal(r->entity, 3);
    definition_free(def);
}

static void test_defaults_and_normalisation(void **state)
{
    (void)state;
    definition_t *def = load_valid("all-types");
    const entity_def_t *p = &def->entities[0];
    assert_string_equal(p->key, "handle");
    assert_null(entity_field(p, "handle"));
    assert_int_equal(p->key_field.max_length, 40);
    assert_true(p->key_field.required);
    assert_int_equal(p->n_fields, 12);
    assert_string_equal(json_string_value(entity_field(p, "born")->default_value),
                        "2000-01-01T00:00:00.000000Z");
    assert_string_equal(json_string_value(entity_field(p, "email")->default_value),
                        "Nobody@example.org");
    assert_int_equal(entity_field(p, "manager")->ref_entity, 0);
    assert_true(entity_field(p, "password_hash")->is_private);
    assert_int_equal(entity_field(p, "email")->max_length, 254);
    assert_true(entity_field(p, "email")->unique);
    assert_int_equal(def->n_routes, 0);
    definition_free(def);

    def = load_valid("minimal");
    assert_string_equal(def->app, "chronicle");
    assert_string_equal(def->entities[0].key, "id");
    assert_int_equal(def->entities[0].n_fields, 0);
    assert_string_equal(def->entities[0].ev_update, "NotesUpdated");
    assert_int_equal(def->n_routes, 0);
    definition_free(def);

    /* a max_limit under the default page size becomes the page size */
    def = load_text("{\"entities\": {\"a\": {\"fields\": {}}}, \"routes\": {\"GET /a\": "
                    "{\"action\": \"a.list\", \"max_limit\": 10}}}");
    assert_int_equal(def->routes[0].limit, 10);
    assert_int_equal(def->routes[0].max_limit, 10);
    definition_free(def);

    /* PascalCase of names with digits and double underscores */
    def = load_text("{\"entities\": {\"status_updates_v2\": {\"fields\": {}}}}");
    assert_string_equal(def->entities[0].ev_create, "StatusUpdatesV2Created");
    definition_free(def);
}

static void test_parse_errors(void **state)
{
    (void)state;
    definition_t *def = (definition_t *)1;
    chr_err_t err;
    chr_err_clear(&err);
    assert_int_equal(definition_load("{\"entities\": ", 13, &def, &err), CHR_EINVAL);
    assert_null(def);
    assert_string_equal(err.field, "");
    assert_non_null(strstr(err.msg, "at line 1 column"));

    /* only len bytes are read */
    const char *text = "{\"entities\": {\"a\": {\"fields\": {}}}}garbage";
    assert_int_equal(definition_load(text, strlen(text) - 7, &def, &err), CHR_OK);
    definition_free(def);

    chr_err_clear(&err);
    assert_int_equal(definition_load_file("/nonexistent/app.json", &def, &err), CHR_EINVAL);
    assert_null(def);
    assert_non_null(strstr(err.msg, "/nonexistent/app.json"));

    definition_free(NULL);
}

static void hash_of(const char *text, char out[65])
{
    definition_t *def = load_text(text);
    definition_layout_hash(def, out);
    definition_free(def);
}

#define BASE_FIELDS "\"name\": {\"type\": \"string\"}, \"n\": {\"type\": \"integer\"}"
#define DEF(entity_extra, fields, more_entities, routes)                                           \
    "{\"entities\": {\"teams\": {\"key\": \"team_id\", \"fields\": {" fields "}" entity_extra      \
    "}" more_entities "}" routes "}"

static void test_layout_hash(void **state)
{
    (void)state;
    char base[65], h[65];
    hash_of(DEF("", BASE_FIELDS, "", ""), base);
    assert_int_equal(strlen(base), 64);
    hash_of(DEF("", BASE_FIELDS, "", ""), h);
    assert_string_equal(base, h); /* stable */

    /* things that do not change a table */
    const char *same[] = {
        "{\"app\": \"other\", \"entities\": {\"teams\": {\"key\": \"team_id\", "
        "\"fields\": {" BASE_FIELDS "}}}}",
        DEF("",
            "\"name\": {\"type\": \"string\", \"max_length\": 10, \"required\": true}, "
            "\"n\": {\"type\": \"integer\", \"min\": 0, \"default\": 3}",
            "", ""),
        DEF(", \"events\": {\"create\": \"TeamRegistered\"}, \"operations\": [\"create\"], "
            "\"recreate_after_delete\": false",
            BASE_FIELDS, "", ""),
        DEF(", \"commands\": {\"rename\": {\"input\": {\"name\": {\"type\": \"string\"}}, "
            "\"set\": {\"name\": \"$input.name\"}, \"event\": \"TeamRenamed\"}}",
            BASE_FIELDS, "", ""),
        DEF("", BASE_FIELDS, "", ", \"routes\": {\"GET /teams\": \"teams.list\"}"),
        DEF("",
            "\"name\": {\"type\": \"string\", \"private\": true, \"immutable\": true}, "
            "\"n\": {\"type\": \"integer\"}",
            "", ""),
        /* declaring the key among the fields does not add a column */
        DEF("", BASE_FIELDS ", \"team_id\": {\"type\": \"string\", \"max_length\": 36}", "", ""),
        /* access rules are checked at run time, not stored */
        DEF(", \"access\": {\"list\": \"public\", \"update\": [\"owner:name\", \"role:x\"]}",
            BASE_FIELDS, "", ""),
        DEF(", \"tenant_scoped\": false", BASE_FIELDS, "", ""),
    };
    for (size_t i = 0; i < sizeof same / sizeof same[0]; i++) {
        hash_of(same[i], h);
        if (strcmp(h, base) != 0) fail_msg("hash changed for %s", same[i]);
    }

    /* things that do */
    const char *differ[] = {
        DEF("", "\"name\": {\"type\": \"text\"}, \"n\": {\"type\": \"integer\"}", "", ""),
        DEF("",
            "\"name\": {\"type\": \"string\", \"unique\": true}, \"n\": {\"type\": \"integer\"}",
            "", ""),
        DEF("", BASE_FIELDS ", \"extra\": {\"type\": \"boolean\"}", "", ""),
        DEF("", "\"name\": {\"type\": \"string\"}", "", ""),
        DEF("", "\"title\": {\"type\": \"string\"}, \"n\": {\"type\": \"integer\"}", "", ""),
        DEF("", BASE_FIELDS, ", \"others\": {\"fields\": {}}", ""),
        "{\"entities\": {\"teams\": {\"key\": \"id\", \"fields\": {" BASE_FIELDS "}}}}",
        "{\"entities\": {\"crews\": {\"key\": \"team_id\", \"fields\": {" BASE_FIELDS "}}}}",
        DEF("", "\"n\": {\"type\": \"integer\"}, \"name\": {\"type\": \"string\"}", "", ""),
        /* a tenant_id column and per-tenant indexes; a unique group's index */
        DEF(", \"tenant_scoped\": true", BASE_FIELDS, "", ""),
        DEF(", \"unique\": [[\"name\", \"n\"]]", BASE_FIELDS, "", ""),
    };
    for (size_t i = 0; i < sizeof differ / sizeof differ[0]; i++) {
        hash_of(differ[i], h);
        if (strcmp(h, base) == 0) fail_msg("hash did not change for %s", differ[i]);
    }

    /* enum values and ref targets count */
    char e1[65], e2[65];
    hash_of("{\"entities\": {\"a\": {\"fields\": {\"s\": {\"type\": \"enum\", \"values\": [\"x\", "
            "\"y\"]}}}}}",
            e1);
    hash_of("{\"entities\": {\"a\": {\"fields\": {\"s\": {\"type\": \"enum\", \"values\": [\"x\", "
            "\"z\"]}}}}}",
            e2);
    assert_string_not_equal(e1, e2);
    hash_of("{\"entities\": {\"a\": {\"fields\": {\"r\": {\"type\": \"ref\", \"to\": \"a\"}}}, "
            "\"b\": {\"fields\": {}}}}",
            e1);
    hash_of("{\"entities\": {\"a\": {\"fields\": {\"r\": {\"type\": \"ref\", \"to\": \"b\"}}}, "
            "\"b\": {\"fields\": {}}}}",
            e2);
    assert_string_not_equal(e1, e2);
    /* the order of entities in the file does not */
    hash_of("{\"entities\": {\"b\": {\"fields\": {}}, \"a\": {\"fields\": {\"r\": {\"type\": "
            "\"ref\", \"to\": \"b\"}}}}}",
            e1);
    assert_string_equal(e1, e2);
}

/* jansson allocations that fail on the Nth call, to run the error paths. */
static long alloc_countdown = -1;

static void *failing_malloc(size_t n)
{
    if (alloc_countdown == 0) return NULL;
    if (alloc_countdown > 0) alloc_countdown--;
    return malloc(n);
}

static void test_allocation_failures(void **state)
{
    (void)state;
    char path[1024];
    snprintf(path, sizeof path, "%s/tests/definitions/valid/kanban/app.json", source_dir());
    size_t len;
    char *text = slurp(path, &len);
    assert_non_null(text);
    json_set_alloc_funcs(failing_malloc, free);
    bool succeeded = false;
    for (long n = 0; n < 100000 && !succeeded; n++) {
        alloc_countdown = n;
        definition_t *def = NULL;
        chr_err_t err;
        chr_err_clear(&err);
        int rc = definition_load(text, len, &def, &err);
        if (rc == CHR_OK) {
            succeeded = true;
            definition_free(def);
        } else {
            assert_true(rc == CHR_ENOMEM || rc == CHR_EINVAL);
            assert_null(def);
        }
    }
    alloc_countdown = -1;
    json_set_alloc_funcs(malloc, free);
    free(text);
    assert_true(succeeded);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_suite),
        cmocka_unit_test(test_invalid_suite),
        cmocka_unit_test(test_status_app),
        cmocka_unit_test(test_config_api),
        cmocka_unit_test(test_kanban),
        cmocka_unit_test(test_platform_access_and_tenancy),
        cmocka_unit_test(test_defaults_and_normalisation),
        cmocka_unit_test(test_parse_errors),
        cmocka_unit_test(test_layout_hash),
        cmocka_unit_test(test_allocation_failures),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
