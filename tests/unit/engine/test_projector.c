/*
 * test_projector.c - the asynchronous projector's pure pieces (lag, the
 * idle wait, the read model's SQL) and the projector itself between two
 * SQLite stores (the configuration allows split databases on PostgreSQL
 * only, but the projector works on any store.h backend): it catches up,
 * its rows equal the write model's, commands decide on the write model
 * while the read model lags, and a changed layout empties the read model,
 * which it then refills. The PostgreSQL suite (tests/split) kills it
 * mid-batch.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/definition.h"
#include "core/timefmt.h"
#include "engine/entity.h"
#include "engine/projector.h"
#include "store/store.h"

static const char *DEF_A =
    "{\"app\": \"t\", \"entities\": {"
    " \"teams\": {\"key\": \"team_id\", \"fields\": {"
    "   \"team_id\": {\"type\": \"string\", \"required\": true},"
    "   \"name\": {\"type\": \"string\", \"required\": true},"
    "   \"email\": {\"type\": \"email\", \"unique\": true},"
    "   \"counter\": {\"type\": \"integer\"}}}}}";

/* DEF_A with one more field: another layout. */
static const char *DEF_B =
    "{\"app\": \"t\", \"entities\": {"
    " \"teams\": {\"key\": \"team_id\", \"fields\": {"
    "   \"team_id\": {\"type\": \"string\", \"required\": true},"
    "   \"name\": {\"type\": \"string\", \"required\": true},"
    "   \"email\": {\"type\": \"email\", \"unique\": true},"
    "   \"counter\": {\"type\": \"integer\"},"
    "   \"motto\": {\"type\": \"string\"}}}}}";

#define DEADLINE_US (20 * 1000000LL)

/* ---- pure pieces ---------------------------------------------------------- */

static void test_lag(void **state)
{
    (void)state;
    assert_int_equal(projector_lag(10, 4), 6);
    assert_int_equal(projector_lag(10, 10), 0);
    assert_int_equal(projector_lag(0, 0), 0);
    /* A checkpoint read after the head was: never a negative lag. */
    assert_int_equal(projector_lag(5, 9), 0);
}

static void test_wait_after(void **state)
{
    (void)state;
    assert_int_equal(projector_wait_after(7, 0), 7);
    assert_int_equal(projector_wait_after(7, 7), 7);
    /* The head is ahead of what the read returned: wait past the head. */
    assert_int_equal(projector_wait_after(7, 12), 12);
}

static void test_read_model_sql(void **state)
{
    (void)state;
    definition_t *def = NULL;
    chr_err_t err = {0};
    assert_int_equal(definition_load(DEF_A, strlen(DEF_A), &def, &err), 0);
    projections_t w, r;
    assert_int_equal(projections_init(&w, def, &err), 0);
    assert_int_equal(projections_init_read_model(&r, def, &err), 0);
    assert_false(w.read_model);
    assert_true(r.read_model);
    /* Its own layout: the read model's tables are not the inline ones. */
    assert_int_equal(strncmp(r.layout, w.layout, strlen(w.layout)), 0);
    assert_string_equal(r.layout + strlen(w.layout), "/read");
    const proj_entity_t *pw = &w.entities[0], *pr = &r.entities[0];
    assert_int_equal(pw->n_indexes, pr->n_indexes);
    int unique_w = 0;
    for (size_t i = 0; i < pw->n_indexes; i++) {
        if (strstr(pw->create_indexes[i], "UNIQUE")) {
            unique_w++;
            /* The same index, not unique: the read model mirrors the log. */
            assert_string_equal(pr->create_indexes[i],
                                "CREATE INDEX IF NOT EXISTS \"teams_email_unique\" ON \"teams\" "
                                "(\"email\") WHERE \"_deleted\" = 0");
        } else {
            assert_string_equal(pw->create_indexes[i], pr->create_indexes[i]);
        }
        assert_null(strstr(pr->create_indexes[i], "UNIQUE"));
    }
    assert_int_equal(unique_w, 1);
    assert_string_equal(pw->create_table, pr->create_table);
    assert_string_equal(pw->upsert_row, pr->upsert_row);
    projections_free(&w);
    projections_free(&r);
    definition_free(def);
}

/* ---- the projector between two SQLite stores ------------------------------ */

typedef struct fixture {
    char events_path[512], reads_path[512];
    store_t *events, *reads;
    definition_t *def;
    engine_t eng;
} fixture_t;

static void open_stores(fixture_t *f)
{
    chr_err_t err = {0};
    char url[600];
    store_options_t o = {.migrate = true};
    snprintf(url, sizeof url, "sqlite:%s", f->events_path);
    if (store_open(url, &o, &f->events, &err)) fail_msg("store_open: %s", err.msg);
    snprintf(url, sizeof url, "sqlite:%s", f->reads_path);
    if (store_open(url, &o, &f->reads, &err)) fail_msg("store_open: %s", err.msg);
}

static void open_engine(fixture_t *f, const char *def_text, bool run)
{
    chr_err_t err = {0};
    if (definition_load(def_text, strlen(def_text), &f->def, &err))
        fail_msg("definition: %s", err.msg);
    bool rebuilt;
    int64_t replayed;
    if (engine_open(&f->eng, f->def, f->events, &rebuilt, &replayed, &err))
        fail_msg("engine_open: %s", err.msg);
    if (engine_attach_read_model(&f->eng, f->reads, &err)) fail_msg("attach: %s", err.msg);
    if (projector_start(&f->eng, run, &err)) fail_msg("projector_start: %s", err.msg);
}

static void close_engine(fixture_t *f)
{
    projector_stop(&f->eng);
    engine_close(&f->eng);
    definition_free(f->def);
    f->def = NULL;
}

static void remove_db(const char *path)
{
    static const char *const suffixes[] = {"", "-wal", "-shm", "-lease-projector",
                                           "-lease-projections-sync"};
    for (size_t i = 0; i < sizeof suffixes / sizeof suffixes[0]; i++) {
        char p[600];
        snprintf(p, sizeof p, "%s%s", path, suffixes[i]);
        unlink(p);
    }
}

static int setup(void **state)
{
    fixture_t *f = calloc(1, sizeof *f);
    const char *tmp = getenv("CHRONICLE_TEST_TMP");
    if (!tmp) tmp = "/tmp";
    char dir[400];
    snprintf(dir, sizeof dir, "%s/projector-%d", tmp, (int)getpid());
    char cmd[500];
    snprintf(cmd, sizeof cmd, "mkdir -p '%s'", dir);
    assert_int_equal(system(cmd), 0);
    static int n;
    snprintf(f->events_path, sizeof f->events_path, "%s/ev%d.db", dir, n);
    snprintf(f->reads_path, sizeof f->reads_path, "%s/pj%d.db", dir, n++);
    remove_db(f->events_path);
    remove_db(f->reads_path);
    open_stores(f);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    if (f->def) close_engine(f);
    store_close(f->events);
    store_close(f->reads);
    remove_db(f->events_path);
    remove_db(f->reads_path);
    free(f);
    return 0;
}

static int command(fixture_t *f, cmd_kind_t kind, const char *key, const char *body)
{
    json_t *b = body ? json_loads(body, 0, NULL) : NULL;
    engine_result_t r = {0};
    int rc = engine_command(&f->eng, &access_scope_full, 0, kind, NULL, key, b, -1, &r);
    json_decref(b);
    engine_result_free(&r);
    return rc;
}

/* Waits (deadline) until the read model's checkpoint is the events' head. */
static void wait_caught_up(fixture_t *f)
{
    int64_t start = time_now_us();
    for (;;) {
        int64_t head = 0, pos = -1, lag = -1;
        chr_err_t err = {0};
        assert_int_equal(store_head_position(f->events, &head, &err), 0);
        projector_status_t st;
        assert_int_equal(projector_status(f->eng.projector, &st, &err), 0);
        if (st.checkpoint == head && projector_staleness(f->eng.projector, &pos, &lag) &&
            pos == head && lag == 0)
            return;
        if (time_now_us() - start > DEADLINE_US)
            fail_msg("the projector did not catch up: checkpoint %lld, head %lld",
                     (long long)st.checkpoint, (long long)head);
        struct timespec ts = {0, 5000000}; /* poll with a deadline */
        nanosleep(&ts, NULL);
    }
}

typedef struct rows {
    char *text;
    size_t len;
    FILE *f;
} rows_t;

static int add_row(void *user, const store_val_t *v, size_t n)
{
    rows_t *r = user;
    for (size_t i = 0; i < n; i++) {
        if (v[i].type == SV_TEXT) fprintf(r->f, "%s|", v[i].s);
        else if (v[i].type == SV_INT) fprintf(r->f, "%lld|", (long long)v[i].i);
        else fprintf(r->f, "null|");
    }
    fputc('\n', r->f);
    return 0;
}

/* Every row of the teams table in s, as text. */
static char *dump(store_t *s)
{
    rows_t r = {0};
    r.f = open_memstream(&r.text, &r.len);
    assert_non_null(r.f);
    chr_err_t err = {0};
    int rc = store_query(s,
                         "SELECT team_id, name, email, counter, version, created_at, updated_at, "
                         "_deleted, _doc, _json FROM teams ORDER BY team_id",
                         NULL, 0, add_row, &r, &err);
    fclose(r.f);
    if (rc) fail_msg("dump: %s", err.msg);
    return r.text;
}

static void test_catches_up_and_matches_the_write_model(void **state)
{
    fixture_t *f = *state;
    open_engine(f, DEF_A, true);
    char key[32], body[200];
    for (int i = 0; i < 120; i++) {
        snprintf(key, sizeof key, "t%03d", i);
        snprintf(body, sizeof body, "{\"team_id\": \"%s\", \"name\": \"n%d\", \"email\": \"%s@x.io\"}",
                 key, i, key);
        assert_int_equal(command(f, CMD_CREATE, NULL, body), 0);
    }
    for (int i = 0; i < 120; i += 3) {
        snprintf(key, sizeof key, "t%03d", i);
        snprintf(body, sizeof body, "{\"counter\": %d}", i * 7);
        assert_int_equal(command(f, CMD_UPDATE, key, body), 0);
    }
    /* A unique value handed from one team to another: fine in the log's
     * order, and the read model (plain index) follows it. */
    assert_int_equal(command(f, CMD_UPDATE, "t001", "{\"email\": \"moved@x.io\"}"), 0);
    assert_int_equal(command(f, CMD_UPDATE, "t002", "{\"email\": \"t001@x.io\"}"), 0);
    assert_int_equal(command(f, CMD_DELETE, "t005", NULL), 0);
    wait_caught_up(f);
    char *w = dump(f->events), *r = dump(f->reads);
    assert_true(strlen(w) > 1000);
    assert_string_equal(w, r);
    free(w);
    free(r);
    projector_status_t st;
    chr_err_t err = {0};
    assert_int_equal(projector_status(f->eng.projector, &st, &err), 0);
    assert_true(st.runs_here);
    assert_true(st.lease_held);
    assert_int_equal(st.lag, 0);
    assert_int_equal(st.checkpoint, 120 + 40 + 3);
    assert_non_null(strchr(st.holder, ':'));
    assert_string_equal(st.last_error, "");
}

static void test_commands_decide_on_the_write_model(void **state)
{
    fixture_t *f = *state;
    open_engine(f, DEF_A, false); /* status only: nobody projects */
    assert_int_equal(command(f, CMD_CREATE, NULL,
                             "{\"team_id\": \"a\", \"name\": \"A\", \"email\": \"a@x.io\"}"),
                     0);
    json_t *out = NULL;
    int64_t version = 0;
    chr_err_t err = {0};
    /* Not in the read model ... */
    assert_int_equal(engine_get(&f->eng, &access_scope_full, 0, "a", &out, &version, &err), CHR_ENOTFOUND);
    int64_t pos = -1, lag = -1;
    assert_true(projector_staleness(f->eng.projector, &pos, &lag));
    assert_int_equal(pos, 0);
    assert_int_equal(lag, 1);
    /* ... but commands see it. */
    assert_int_equal(command(f, CMD_CREATE, NULL,
                             "{\"team_id\": \"a\", \"name\": \"again\"}"),
                     CHR_ECONFLICT);
    assert_int_equal(command(f, CMD_CREATE, NULL,
                             "{\"team_id\": \"b\", \"name\": \"B\", \"email\": \"a@x.io\"}"),
                     CHR_ECONFLICT);
    assert_int_equal(command(f, CMD_UPDATE, "a", "{\"counter\": 3}"), 0);
    projector_status_t st;
    assert_int_equal(projector_status(f->eng.projector, &st, &err), 0);
    assert_false(st.runs_here);
    assert_false(st.lease_held);
    assert_int_equal(st.checkpoint, 0);
    assert_int_equal(st.lag, 2);
    /* A projector starts (as another instance would): the read model
     * catches up. */
    close_engine(f);
    open_engine(f, DEF_A, true);
    wait_caught_up(f);
    assert_int_equal(engine_get(&f->eng, &access_scope_full, 0, "a", &out, &version, &err), 0);
    assert_int_equal(version, 2);
    assert_int_equal(json_integer_value(json_object_get(out, "counter")), 3);
    json_decref(out);
}

static void test_a_new_layout_empties_and_refills_the_read_model(void **state)
{
    fixture_t *f = *state;
    open_engine(f, DEF_A, true);
    for (int i = 0; i < 30; i++) {
        char body[120];
        snprintf(body, sizeof body, "{\"team_id\": \"k%02d\", \"name\": \"n%d\"}", i, i);
        assert_int_equal(command(f, CMD_CREATE, NULL, body), 0);
    }
    wait_caught_up(f);
    close_engine(f);
    /* Another definition: the read model is reset to checkpoint 0 with new
     * tables, and refilled from the whole log. */
    open_engine(f, DEF_B, false);
    projector_status_t st;
    chr_err_t err = {0};
    assert_int_equal(projector_status(f->eng.projector, &st, &err), 0);
    assert_int_equal(st.checkpoint, 0);
    assert_int_equal(st.lag, 30);
    close_engine(f);
    open_engine(f, DEF_B, true);
    wait_caught_up(f);
    char *w = dump(f->events), *r = dump(f->reads);
    assert_string_equal(w, r);
    free(w);
    free(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lag),
        cmocka_unit_test(test_wait_after),
        cmocka_unit_test(test_read_model_sql),
        cmocka_unit_test_setup_teardown(test_catches_up_and_matches_the_write_model, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_commands_decide_on_the_write_model, setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_new_layout_empties_and_refills_the_read_model,
                                        setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
