/*
 * test_entity.c - the engine over a real SQLite store: commands write events
 * and projection rows together, refs and unique values are checked in the
 * transaction, racing commands on one entity all land (retry on conflict),
 * commands started without a waiting thread take turns on one entity and
 * pass the turn on when abandoned, and projections are rebuilt from the log when the layout changes or a
 * rebuild was interrupted.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
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

/* DEF_A where a team may be deleted while updates refer to it. */
static const char *DEF_KEEP =
    "{\"app\": \"t\", \"entities\": {"
    " \"teams\": {\"key\": \"team_id\", \"fields\": {"
    "   \"team_id\": {\"type\": \"string\", \"required\": true},"
    "   \"name\": {\"type\": \"string\", \"required\": true},"
    "   \"email\": {\"type\": \"email\", \"unique\": true},"
    "   \"counter\": {\"type\": \"integer\"}}},"
    " \"updates\": {\"key\": \"update_id\", \"fields\": {"
    "   \"team_id\": {\"type\": \"ref\", \"to\": \"teams\", \"required\": true,"
    "                 \"on_delete\": \"keep\"},"
    "   \"content\": {\"type\": \"text\", \"required\": true}},"
    "  \"operations\": [\"create\"]}}}";

/* A tenant-scoped entity whose reads are owner-only. */
static const char *DEF_T =
    "{\"app\": \"t\", \"entities\": {"
    " \"docs\": {\"tenant_scoped\": true, \"fields\": {"
    "   \"owner\": {\"type\": \"string\"}, \"title\": {\"type\": \"string\", \"unique\": true}},"
    "  \"access\": {\"get\": \"owner:owner\", \"list\": \"owner:owner\"}}}}";

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
    int rc = engine_command(&f->eng, &access_scope_full, entity, kind, NULL, key, b, -1, r);
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
    assert_int_equal(engine_list(&f->eng, &access_scope_full, entity, &q, NULL, 0, &text, &len, &next, &err), 0);
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
    assert_int_equal(engine_get(&f->eng, &access_scope_full, 0, "a", &got, &v, &err), 0);
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
    assert_int_equal(engine_get(&f->eng, &access_scope_full, 0, "a", &got, &v, &err), CHR_ENOTFOUND);
    assert_int_equal(count_rows(f, 0), 0);

    /* Time travel still sees version 2. */
    assert_int_equal(engine_get_past(&f->eng, &access_scope_full, 0, "a", -1, 2, &got, &v, &err), 0);
    assert_string_equal(json_string_value(json_object_get(got, "name")), "B");
    json_decref(got);

    json_t *hist = NULL;
    assert_int_equal(engine_history(&f->eng, &access_scope_full, 0, "a", &hist, &err), 0);
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

    /* t1 cannot be deleted while an update refers to it. */
    assert_int_equal(store_head_position(f->store, &head0, &err), 0);
    assert_int_equal(run(f, 0, CMD_DELETE, "t1", NULL, &r), CHR_ECONFLICT);
    assert_string_equal(r.err.msg, "teams t1 is referred to by updates (field team_id): delete or "
                                   "change those first");
    engine_result_free(&r);
    assert_int_equal(store_head_position(f->store, &head1, &err), 0);
    assert_int_equal(head1, head0);

    /* Deleting a team nothing refers to frees its e-mail. */
    assert_int_equal(run(f, 0, CMD_CREATE, NULL,
                         "{\"team_id\": \"t3\", \"name\": \"V\", \"email\": \"z@b.example\"}", &r),
                     0);
    engine_result_free(&r);
    assert_int_equal(run(f, 0, CMD_DELETE, "t3", NULL, &r), 0);
    engine_result_free(&r);
    assert_int_equal(run(f, 0, CMD_CREATE, NULL,
                         "{\"team_id\": \"t2\", \"name\": \"U\", \"email\": \"z@b.example\"}", &r),
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
    assert_int_equal(engine_get(&f->eng, &access_scope_full, 0, "hot", &got, &v, &err), 0);
    assert_int_equal(v, 601); /* the create and every update, each exactly once */
    json_decref(got);
    int64_t sv = 0;
    assert_int_equal(store_stream_version(f->store, "teams-hot", &sv, &err), 0);
    assert_int_equal(sv, 601);
}

/* ---- commands without a waiting thread (engine_command_start/resume) ---- */

typedef struct waiter {
    sem_t sem;
    engine_result_t r;
    engine_cmd_t *cmd;
    json_t *body;
} waiter_t;

static void waiter_wake(void *user)
{
    waiter_t *w = user;
    sem_post(&w->sem);
}

/* Waits for w's wake; a wake that never comes fails the test after 10 s
 * (a deadline for a bug, not a way to synchronise). */
static void wait_wake(waiter_t *w)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += 10;
    int rc;
    while ((rc = sem_timedwait(&w->sem, &ts)) != 0 && errno == EINTR) {
    }
    if (rc != 0) fail_msg("no wake within 10 s");
}

static int start(fixture_t *f, waiter_t *w, cmd_kind_t kind, const char *key, const char *body)
{
    sem_init(&w->sem, 0, 0);
    w->body = body ? json_loads(body, 0, NULL) : NULL;
    return engine_command_start(&f->eng, &access_scope_full, 0, kind, NULL, key, w->body, -1, &w->r, waiter_wake, w,
                                &w->cmd);
}

/* Resumes w after each wake until it is over; returns its code. */
static int finish_cmd(waiter_t *w, int rc)
{
    while (rc == ENGINE_PENDING) {
        wait_wake(w);
        rc = engine_command_resume(w->cmd);
    }
    return rc;
}

static void waiter_free(waiter_t *w)
{
    engine_command_free(w->cmd);
    engine_result_free(&w->r);
    json_decref(w->body);
    sem_destroy(&w->sem);
}

static void test_commands_on_one_entity_take_turns_without_threads(void **state)
{
    fixture_t *f = *state;
    engine_result_t r;
    assert_int_equal(run(f, 0, CMD_CREATE, NULL, "{\"team_id\": \"turn\", \"name\": \"T\"}", &r), 0);
    engine_result_free(&r);

    /* Three commands started from one thread: the first holds the entity's
     * turn while its commit runs, the others queue, and each starts only
     * once the one before it is committed, in order: no conflict, no retry. */
    waiter_t w[3];
    memset(w, 0, sizeof w);
    int rc[3];
    for (int i = 0; i < 3; i++) {
        char body[64];
        snprintf(body, sizeof body, "{\"counter\": %d}", i + 1);
        rc[i] = start(f, &w[i], CMD_UPDATE, "turn", body);
        assert_int_equal(rc[i], ENGINE_PENDING);
    }
    for (int i = 0; i < 3; i++) {
        assert_int_equal(finish_cmd(&w[i], rc[i]), CHR_OK);
        assert_int_equal(w[i].r.version, i + 2);
        assert_int_equal(json_integer_value(json_object_get(w[i].r.body, "counter")), i + 1);
    }
    for (int i = 0; i < 3; i++) waiter_free(&w[i]);
}

static void test_an_abandoned_command_passes_its_turn_on(void **state)
{
    fixture_t *f = *state;
    engine_result_t r;
    assert_int_equal(run(f, 0, CMD_CREATE, NULL, "{\"team_id\": \"gone\", \"name\": \"G\"}", &r), 0);
    engine_result_free(&r);

    waiter_t a = {0}, b = {0}, c = {0};
    int ra = start(f, &a, CMD_UPDATE, "gone", "{\"counter\": 1}");
    int rb = start(f, &b, CMD_UPDATE, "gone", "{\"counter\": 2}");
    int rcc = start(f, &c, CMD_UPDATE, "gone", "{\"counter\": 3}");
    assert_int_equal(ra, ENGINE_PENDING);
    assert_int_equal(rb, ENGINE_PENDING);
    assert_int_equal(rcc, ENGINE_PENDING);
    assert_int_equal(finish_cmd(&a, ra), CHR_OK);
    /* b is handed the turn (woken) but its caller gives up (a client that
     * left): freeing it must hand the turn to c, or c waits forever. */
    wait_wake(&b);
    waiter_free(&b);
    assert_int_equal(finish_cmd(&c, rcc), CHR_OK);
    assert_int_equal(c.r.version, 3);
    waiter_free(&a);
    waiter_free(&c);

    /* A command that ends without committing (nothing to change, or refused)
     * passes the turn on too: the next one goes straight to its commit. */
    waiter_t d = {0}, e = {0};
    int rd = start(f, &d, CMD_UPDATE, "gone", "{\"counter\": 3}"); /* no change */
    int re = start(f, &e, CMD_UPDATE, "gone", "{\"counter\": 4}");
    assert_int_equal(finish_cmd(&d, rd), CHR_OK);
    assert_int_equal(d.r.version, 3);
    assert_int_equal(finish_cmd(&e, re), CHR_OK);
    assert_int_equal(e.r.version, 4);
    waiter_free(&d);
    waiter_free(&e);

    /* Refused before any turn: no command, the reason in r. */
    waiter_t g = {0};
    char key[1100];
    memset(key, 'k', sizeof key - 1);
    key[sizeof key - 1] = '\0';
    assert_int_equal(start(f, &g, CMD_UPDATE, key, "{\"counter\": 1}"), CHR_EINVAL);
    assert_null(g.cmd);
    waiter_free(&g);
}

static auth_principal_t who(const char *sub)
{
    auth_principal_t p;
    memset(&p, 0, sizeof p);
    p.kind = AUTH_JWT;
    snprintf(p.sub, sizeof p.sub, "%s", sub);
    return p;
}

/* The engine itself confines reads and commands to the scope's tenant and
 * owned rows, whatever route calls it. */
static void test_scope_is_enforced_by_the_engine(void **state)
{
    fixture_t *f = *state;
    close_all(f);
    open_all(f, DEF_T);
    auth_principal_t alice = who("alice"), bob = who("bob");
    access_scope_t a = {.who = &alice, .tenant = "ta"}, b = {.who = &bob, .tenant = "tb"},
                   a_bob = {.who = &bob, .tenant = "ta"}, op_a = {.full = true, .tenant = "ta"};
    engine_result_t r;
    json_t *body = json_pack("{s:s, s:s}", "owner", "alice", "title", "same");
    assert_int_equal(engine_command(&f->eng, &a, 0, CMD_CREATE, NULL, NULL, body, -1, &r), 0);
    const char *key = json_string_value(json_object_get(r.body, "id"));
    char k[64];
    snprintf(k, sizeof k, "%s", key);
    assert_string_equal(json_string_value(json_object_get(r.body, "tenant_id")), "ta");
    engine_result_free(&r);
    /* unique per tenant: the same title in another tenant is fine, in this one taken */
    json_object_set_new(body, "owner", json_string("bob"));
    assert_int_equal(engine_command(&f->eng, &b, 0, CMD_CREATE, NULL, NULL, body, -1, &r), 0);
    engine_result_free(&r);
    assert_int_equal(engine_command(&f->eng, &a_bob, 0, CMD_CREATE, NULL, NULL, body, -1, &r),
                     CHR_ECONFLICT);
    engine_result_free(&r);
    /* no tenant: refused; a client key: refused */
    assert_int_equal(engine_command(&f->eng, &access_scope_full, 0, CMD_CREATE, NULL, NULL, body, -1, &r),
                     CHR_EINVAL);
    engine_result_free(&r);
    assert_int_equal(engine_command(&f->eng, &a, 0, CMD_CREATE, NULL, "mine", body, -1, &r), CHR_EINVAL);
    engine_result_free(&r);
    json_decref(body);

    json_t *got = NULL;
    int64_t v;
    chr_err_t err = {0};
    assert_int_equal(engine_get(&f->eng, &a, 0, k, &got, &v, &err), 0);
    json_decref(got);
    assert_int_equal(engine_get(&f->eng, &op_a, 0, k, &got, &v, &err), 0);
    json_decref(got);
    assert_int_equal(engine_get(&f->eng, &b, 0, k, &got, &v, &err), CHR_ENOTFOUND);
    assert_int_equal(engine_get(&f->eng, &a_bob, 0, k, &got, &v, &err), CHR_ENOTFOUND);
    assert_int_equal(engine_get(&f->eng, NULL, 0, k, &got, &v, &err), CHR_EFORBIDDEN);
    assert_int_equal(engine_get_past(&f->eng, &b, 0, k, -1, 1, &got, &v, &err), CHR_ENOTFOUND);
    assert_int_equal(engine_history(&f->eng, &b, 0, k, &got, &err), CHR_ENOTFOUND);
    body = json_pack("{s:s}", "title", "taken over");
    assert_int_equal(engine_command(&f->eng, &b, 0, CMD_UPDATE, NULL, k, body, -1, &r), CHR_ENOTFOUND);
    engine_result_free(&r);
    assert_int_equal(engine_command(&f->eng, &b, 0, CMD_DELETE, NULL, k, NULL, -1, &r), CHR_ENOTFOUND);
    engine_result_free(&r);
    json_decref(body);

    /* lists: the tenant and owner predicates are added to the query */
    const char *names[] = {"limit"}, *values[] = {"1000"};
    access_scope_t *scopes[] = {&a, &b, &a_bob, &op_a};
    size_t want[] = {1, 1, 0, 1};
    for (size_t i = 0; i < 4; i++) {
        query_t q;
        assert_int_equal(query_parse(&f->def->entities[0], NULL, names, values, 1, &q, &err), 0);
        char *text = NULL, *next = NULL;
        size_t len = 0;
        assert_int_equal(engine_list(&f->eng, scopes[i], 0, &q, NULL, 0, &text, &len, &next, &err), 0);
        json_t *arr = json_loadb(text, len, 0, NULL);
        assert_int_equal(json_array_size(arr), want[i]);
        json_decref(arr);
        free(text);
        query_free(&q);
    }

    /* the log: events carry the tenant; each scope sees its own */
    event_t ev;
    char stream[128];
    snprintf(stream, sizeof stream, "docs-%s", k);
    assert_int_equal(event_init(&ev, NULL, stream, "DocsCreated", "{}", "{\"tenant_id\":\"ta\"}"), 0);
    access_scope_t plain_a = {.who = &alice, .tenant = "ta"};
    assert_true(engine_event_visible(&f->eng, &plain_a, &ev));
    assert_false(engine_event_visible(&f->eng, &b, &ev));
    assert_true(engine_event_visible(&f->eng, &access_scope_full, &ev));
    assert_false(engine_event_visible(&f->eng, NULL, &ev));
    event_free(&ev);
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
    assert_int_equal(engine_get(&f->eng, &access_scope_full, 0, "k3", &got, &v, &err), 0);
    assert_string_equal(json_string_value(json_object_get(got, "name")), "changed");
    assert_true(json_is_null(json_object_get(got, "motto")));
    assert_int_equal(v, 2);
    json_decref(got);
    /* The new field is usable at once. */
    assert_int_equal(run(f, 0, CMD_UPDATE, "k3", "{\"motto\": \"hi\"}", &r), 0);
    engine_result_free(&r);
}

/* A rebuild writes what the log says: a delete that the definition of its
 * day allowed (on_delete keep) replays under one that restricts it. */
static void test_rebuild_replays_without_write_checks(void **state)
{
    fixture_t *f = *state;
    engine_result_t r;
    close_all(f);
    open_all(f, DEF_KEEP);
    assert_int_equal(run(f, 0, CMD_CREATE, NULL, "{\"team_id\": \"t1\", \"name\": \"T\"}", &r), 0);
    engine_result_free(&r);
    assert_int_equal(
        run(f, 1, CMD_CREATE, NULL, "{\"update_id\": \"u1\", \"team_id\": \"t1\", \"content\": \"x\"}", &r),
        0);
    engine_result_free(&r);
    assert_int_equal(run(f, 0, CMD_DELETE, "t1", NULL, &r), 0);
    engine_result_free(&r);
    close_all(f);
    open_all(f, DEF_B); /* restricts, and a new layout: rebuilt */
    assert_true(f->rebuilt);
    assert_int_equal(f->replayed, 3);
    json_t *got = NULL;
    int64_t v = 0;
    chr_err_t err = {0};
    assert_int_equal(engine_get(&f->eng, &access_scope_full, 0, "t1", &got, &v, &err), CHR_ENOTFOUND);
    assert_int_equal(engine_get(&f->eng, &access_scope_full, 1, "u1", &got, &v, &err), 0);
    assert_string_equal(json_string_value(json_object_get(got, "team_id")), "t1");
    json_decref(got);
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
        cmocka_unit_test_setup_teardown(test_commands_on_one_entity_take_turns_without_threads,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_an_abandoned_command_passes_its_turn_on, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_scope_is_enforced_by_the_engine, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rebuild_on_layout_change, setup, teardown),
        cmocka_unit_test_setup_teardown(test_interrupted_rebuild_is_redone, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rebuild_replays_without_write_checks, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
