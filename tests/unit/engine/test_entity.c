/*
 * test_entity.c - the engine over a real SQLite store: commands write events
 * and projection rows together, refs and unique values are checked in the
 * transaction, racing commands on one entity all land (retry on conflict),
 * and projections are rebuilt from the log when the layout changes or a
 * rebuild was interrupted.
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
#include <unistd.h>

#include "core/definition.h"
#include "engine/entity.h"
#include "store/store.h"

static const char *DEF_A =
    "{\"app\": \"t\", \"entities\": {"
    " \"teams\": {\"key\": \"team_id\", \"fields\": {"
    "   \"team_id\": {\"type\": \"string\", \"required\": true},"
    "   \"name\": {\"type\": \"string\", \"required\": true},"
    "   \"email\": {\"type\": \"email\", \"unique\": true},"
    "   \"counter\": {\"type\": \"integer\"}}},"
    " \"updates\": {\"key\": \"update_id\", \"fields\": {"
    "   \"team_id\": {\"type\": \"ref\", \"to\": \"teams\", \"required\": true},"
    "   \"content\": {\"type\": \"text\", \"required\": true}},"
    "  \"operations\": [\"create\"]}}}";

/* DEF_A with one more field: a different projection layout. */
static const char *DEF_B =
    "{\"app\": \"t\", \"entities\": {"
    " \"teams\": {\"key\": \"team_id\", \"fields\": {"
    "   \"team_id\": {\"type\": \"string\", \"required\": true},"
    "   \"name\": {\"type\": \"string\", \"required\": true},"
    "   \"email\": {\"type\": \"email\", \"unique\": true},"
    "   \"counter\": {\"type\": \"integer\"},"
    "   \"motto\": {\"type\": \"string\"}}},"
    " \"updates\": {\"key\": \"update_id\", \"fields\": {"
    "   \"team_id\": {\"type\": \"ref\", \"to\": \"teams\", \"required\": true},"
    "   \"content\": {\"type\": \"text\", \"required\": true}},"
    "  \"operations\": [\"create\"]}}}";

typedef struct fixture {
    char path[512];
    store_t *store;
    definition_t *def;
    engine_t eng;
    bool rebuilt;
    int64_t replayed;
} fixture_t;

static void open_all(fixture_t *f, const char *def_text)
{
    chr_err_t err = {0};
    char url[600];
    snprintf(url, sizeof url, "sqlite:%s", f->path);
    store_options_t o = {.migrate = true};
    if (store_open(url, &o, &f->store, &err)) fail_msg("store_open: %s", err.msg);
    if (definition_load(def_text, strlen(def_text), &f->def, &err))
        fail_msg("definition: %s", err.msg);
    if (engine_open(&f->eng, f->def, f->store, &f->rebuilt, &f->replayed, &err))
        fail_msg("engine_open: %s", err.msg);
}

static void close_all(fixture_t *f)
{
    engine_close(&f->eng);
    definition_free(f->def);
    store_close(f->store);
    f->def = NULL;
    f->store = NULL;
}

static int setup(void **state)
{
    fixture_t *f = calloc(1, sizeof *f);
    const char *tmp = getenv("CHRONICLE_TEST_TMP");
    if (!tmp) tmp = "/tmp";
    char dir[400];
    snprintf(dir, sizeof dir, "%s/engine-%d", tmp, (int)getpid());
    char cmd[500];
    snprintf(cmd, sizeof cmd, "mkdir -p '%s'", dir);
    assert_int_equal(system(cmd), 0);
    static int n;
    snprintf(f->path, sizeof f->path, "%s/e%d.db", dir, n++);
    unlink(f->path);
    open_all(f, DEF_A);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    if (f->store) close_all(f);
    char p[600];
    unlink(f->path);
    snprintf(p, sizeof p, "%s-wal", f->path);
    unlink(p);
    snprintf(p, sizeof p, "%s-shm", f->path);
    unlink(p);
    free(f);
    return 0;
}

/* Runs a command from a JSON body text; returns the result code. */
static int run(fixture_t *f, int entity, cmd_kind_t kind, const char *key, const char *body,
               engine_result_t *r)
{
    json_t *b = body ? json_loads(body, 0, NULL) : NULL;
    if (body) assert_non_null(b);
    int rc = engine_command(&f->eng, entity, kind, NULL, key, b, -1, r);
    json_decref(b);
    return rc;
}

static int64_t count_rows(fixture_t *f, int entity)
{
    query_t q;
    chr_err_t err = {0};
    const char *names[] = {"limit"}, *values[] = {"1000"};
    assert_int_equal(query_parse(&f->def->entities[entity], NULL, names, values, 1, &q, &err), 0);
    char *text = NULL, *next = NULL;
    size_t len = 0;
    assert_int_equal(engine_list(&f->eng, entity, &q, NULL, 0, &text, &len, &next, &err), 0);
    json_t *arr = json_loadb(text, len, 0, NULL);
    assert_non_null(arr);
    int64_t n = (int64_t)json_array_size(arr);
    json_decref(arr);
    free(text);
    free(next);
    query_free(&q);
    return n;
}

static void test_create_get_update_delete(void **state)
{
    fixture_t *f = *state;
    engine_result_t r;
    assert_int_equal(run(f, 0, CMD_CREATE, NULL, "{\"team_id\": \"a\", \"name\": \"A\"}", &r), 0);
    assert_true(r.created);
    assert_int_equal(r.version, 1);
    engine_result_free(&r);

    json_t *got = NULL;
    int64_t v = 0;
    chr_err_t err = {0};
    assert_int_equal(engine_get(&f->eng, 0, "a", &got, &v, &err), 0);
    assert_string_equal(json_string_value(json_object_get(got, "name")), "A");
    assert_int_equal(v, 1);
    json_decref(got);

    assert_int_equal(run(f, 0, CMD_UPDATE, "a", "{\"name\": \"B\"}", &r), 0);
    assert_int_equal(r.version, 2);
    assert_string_equal(json_string_value(json_object_get(r.body, "name")), "B");
    engine_result_free(&r);

    /* The event log says the same as the row. */
    int64_t sv = 0;
    assert_int_equal(store_stream_version(f->store, "teams-a", &sv, &err), 0);
    assert_int_equal(sv, 2);

    assert_int_equal(run(f, 0, CMD_DELETE, "a", NULL, &r), 0);
    engine_result_free(&r);
    assert_int_equal(engine_get(&f->eng, 0, "a", &got, &v, &err), CHR_ENOTFOUND);
    assert_int_equal(count_rows(f, 0), 0);

    /* Time travel still sees version 2. */
    assert_int_equal(engine_get_past(&f->eng, 0, "a", -1, 2, &got, &v, &err), 0);
    assert_string_equal(json_string_value(json_object_get(got, "name")), "B");
    json_decref(got);

    json_t *hist = NULL;
    assert_int_equal(engine_history(&f->eng, 0, "a", &hist, &err), 0);
    assert_int_equal(json_array_size(hist), 3);
    json_decref(hist);
}

static void test_ref_and_unique_checked_in_transaction(void **state)
{
    fixture_t *f = *state;
    engine_result_t r;
    chr_err_t err = {0};
    int64_t head0 = 0, head1 = 0;
    assert_int_equal(store_head_position(f->store, &head0, &err), 0);

    /* A ref to a missing team: 422 naming the field, nothing written. */
    assert_int_equal(run(f, 1, CMD_CREATE, NULL, "{\"team_id\": \"nope\", \"content\": \"x\"}", &r),
                     CHR_EINVAL);
    assert_string_equal(r.err.field, "team_id");
    engine_result_free(&r);
    assert_int_equal(store_head_position(f->store, &head1, &err), 0);
    assert_int_equal(head1, head0);

    assert_int_equal(run(f, 0, CMD_CREATE, NULL,
                         "{\"team_id\": \"t1\", \"name\": \"T\", \"email\": \"a@b.example\"}", &r),
                     0);
    engine_result_free(&r);
    assert_int_equal(run(f, 1, CMD_CREATE, NULL, "{\"team_id\": \"t1\", \"content\": \"x\"}", &r), 0);
    engine_result_free(&r);

    /* The same e-mail on another team: 409 naming the field. */
    assert_int_equal(run(f, 0, CMD_CREATE, NULL,
                         "{\"team_id\": \"t2\", \"name\": \"U\", \"email\": \"a@b.example\"}", &r),
                     CHR_ECONFLICT);
    assert_string_equal(r.err.field, "email");
    engine_result_free(&r);
    assert_int_equal(count_rows(f, 0), 1);

    /* Deleting t1 frees its e-mail. */
    assert_int_equal(run(f, 0, CMD_DELETE, "t1", NULL, &r), 0);
    engine_result_free(&r);
    assert_int_equal(run(f, 0, CMD_CREATE, NULL,
                         "{\"team_id\": \"t2\", \"name\": \"U\", \"email\": \"a@b.example\"}", &r),
                     0);
    engine_result_free(&r);
}

typedef struct racer {
    fixture_t *f;
    int id;
    int ok;
} racer_t;

static void *race(void *arg)
{
    racer_t *rc = arg;
    for (int i = 0; i < 100; i++) {
        char body[64];
        snprintf(body, sizeof body, "{\"counter\": %d}", rc->id * 1000 + i + 1);
        engine_result_t r;
        int code = run(rc->f, 0, CMD_UPDATE, "hot", body, &r);
        if (code == CHR_OK)
            rc->ok++;
        else
            fprintf(stderr, "racer %d: %d %s / %s\n", rc->id, code, r.err.msg, r.decision.detail);
        engine_result_free(&r);
    }
    return NULL;
}

static void test_racing_updates_all_land(void **state)
{
    fixture_t *f = *state;
    engine_result_t r;
    assert_int_equal(run(f, 0, CMD_CREATE, NULL, "{\"team_id\": \"hot\", \"name\": \"H\"}", &r), 0);
    engine_result_free(&r);
    racer_t rs[6];
    pthread_t ts[6];
    for (int i = 0; i < 6; i++) {
        rs[i] = (racer_t){f, i, 0};
        pthread_create(&ts[i], NULL, race, &rs[i]);
    }
    int ok = 0;
    for (int i = 0; i < 6; i++) {
        pthread_join(ts[i], NULL);
        ok += rs[i].ok;
    }
    assert_int_equal(ok, 600);
    json_t *got = NULL;
    int64_t v = 0;
    chr_err_t err = {0};
    assert_int_equal(engine_get(&f->eng, 0, "hot", &got, &v, &err), 0);
    assert_int_equal(v, 601); /* the create and every update, each exactly once */
    json_decref(got);
    int64_t sv = 0;
    assert_int_equal(store_stream_version(f->store, "teams-hot", &sv, &err), 0);
    assert_int_equal(sv, 601);
}

static void test_rebuild_on_layout_change(void **state)
{
    fixture_t *f = *state;
    engine_result_t r;
    assert_false(f->rebuilt); /* a new database: tables created, nothing replayed */
    for (int i = 0; i < 30; i++) {
        char body[96];
        snprintf(body, sizeof body, "{\"team_id\": \"k%d\", \"name\": \"N%d\"}", i, i);
        assert_int_equal(run(f, 0, CMD_CREATE, NULL, body, &r), 0);
        engine_result_free(&r);
    }
    assert_int_equal(run(f, 0, CMD_UPDATE, "k3", "{\"name\": \"changed\"}", &r), 0);
    engine_result_free(&r);

    close_all(f);
    open_all(f, DEF_A); /* same layout: no rebuild */
    assert_false(f->rebuilt);
    close_all(f);
    open_all(f, DEF_B); /* a field added: rebuilt from the 31 events */
    assert_true(f->rebuilt);
    assert_int_equal(f->replayed, 31);
    assert_int_equal(count_rows(f, 0), 30);
    json_t *got = NULL;
    int64_t v = 0;
    chr_err_t err = {0};
    assert_int_equal(engine_get(&f->eng, 0, "k3", &got, &v, &err), 0);
    assert_string_equal(json_string_value(json_object_get(got, "name")), "changed");
    assert_true(json_is_null(json_object_get(got, "motto")));
    assert_int_equal(v, 2);
    json_decref(got);
    /* The new field is usable at once. */
    assert_int_equal(run(f, 0, CMD_UPDATE, "k3", "{\"motto\": \"hi\"}", &r), 0);
    engine_result_free(&r);
}

static int mark_unfinished(store_tx_t *tx, void *user, chr_err_t *err)
{
    (void)user;
    return store_tx_exec(tx, "UPDATE chronicle_projection_layout SET ready = 0", NULL, 0, NULL,
                         err);
}

static void test_interrupted_rebuild_is_redone(void **state)
{
    fixture_t *f = *state;
    engine_result_t r;
    assert_int_equal(run(f, 0, CMD_CREATE, NULL, "{\"team_id\": \"z\", \"name\": \"Z\"}", &r), 0);
    engine_result_free(&r);
    /* What a crash between recreating the tables and replaying leaves. */
    store_uow_t uow = {.apply = mark_unfinished};
    chr_err_t err = {0};
    assert_int_equal(store_commit(f->store, &uow, &err), 0);
    close_all(f);
    open_all(f, DEF_A);
    assert_true(f->rebuilt);
    assert_int_equal(count_rows(f, 0), 1);
    close_all(f);
    open_all(f, DEF_A);
    assert_false(f->rebuilt);
}

int main(void)
{
    if (sodium_init() < 0) return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_create_get_update_delete, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ref_and_unique_checked_in_transaction, setup, teardown),
        cmocka_unit_test_setup_teardown(test_racing_updates_all_land, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rebuild_on_layout_change, setup, teardown),
        cmocka_unit_test_setup_teardown(test_interrupted_rebuild_is_redone, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
