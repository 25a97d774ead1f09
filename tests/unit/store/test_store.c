/*
 * test_store.c - the store suite: the contract of store/store.h, run against
 * a real backend.
 *
 * Backend: CHRONICLE_TEST_STORE_URL when set (e.g. a PostgreSQL URL once that
 * backend exists), else a fresh SQLite file per test under
 * $CHRONICLE_TEST_TMP. Every test is a function taking the store under test
 * (and its fixture, for the few that reopen the store or open another one);
 * streams, types and tables carry a per-test prefix so the suite also works
 * on a database shared by several runs, and positions are always compared
 * relative to the head a test started from.
 *
 * Not here: the HTTP mapping of errors, the engine.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/timefmt.h"
#include "store/store.h"
#include "util/strmap.h"

/* --- fixture ---------------------------------------------------------------- */

typedef struct fixture {
    store_t *s;         /* the store under test; NULL for tests that open their own */
    char url[700];      /* how to open it (again) */
    char path[600];     /* the SQLite file this test owns, "" for an external URL */
    char ns[20];        /* unique prefix of this test's streams, types and tables */
    char extra[4][600]; /* further SQLite files this test created */
    int n_extra;
} fixture_t;

static const char *g_env_url; /* CHRONICLE_TEST_STORE_URL or NULL */
static char g_tmpdir[512];
static int g_seq;

static bool is_sqlite(const fixture_t *f)
{
    return f->path[0] != '\0';
}

static void mkdir_p(const char *dir)
{
    char buf[512];
    snprintf(buf, sizeof buf, "%s", dir);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        mkdir(buf, 0777);
        *p = '/';
    }
    mkdir(buf, 0777);
}

static void remove_db(const char *path)
{
    static const char *const suffixes[] = {"", "-wal", "-shm", "-journal", "-lease-a",
                                           "-lease-b"};
    for (size_t i = 0; i < sizeof suffixes / sizeof suffixes[0]; i++) {
        char p[700];
        snprintf(p, sizeof p, "%s%s", path, suffixes[i]);
        unlink(p);
    }
}

/* A fresh SQLite path (nothing exists there yet). */
static void new_sqlite_path(char *out, size_t size)
{
    snprintf(out, size, "%s/store-%ld-%d.db", g_tmpdir, (long)getpid(), ++g_seq);
    remove_db(out);
}

static void new_ns(char ns[20])
{
    char id[UUID_STR_LEN + 1];
    uuid_v7_generate(id);
    /* "t" + the 12 random hex digits at the end: a valid SQL identifier too. */
    snprintf(ns, 20, "t%s", id + 24);
}

static store_options_t default_opts(void)
{
    store_options_t o = {0};
    o.migrate = true;
    o.sync = STORE_SYNC_FULL;
    return o;
}

static store_t *open_url(const char *url, const store_options_t *o)
{
    store_t *s = NULL;
    chr_err_t err;
    chr_err_clear(&err);
    int rc = store_open(url, o, &s, &err);
    if (rc != CHR_OK) fail_msg("store_open(%s) failed: %d %s", url, rc, err.msg);
    assert_non_null(s);
    return s;
}

/* Another store with other options: the same external URL, or a new file.
 * url_out (may be NULL) gets the URL to reopen it. */
static store_t *open_extra_url(fixture_t *f, const store_options_t *o, char url_out[700])
{
    char url[700];
    if (!is_sqlite(f)) {
        snprintf(url, sizeof url, "%s", f->url);
    } else {
        assert_true(f->n_extra < 4);
        char *path = f->extra[f->n_extra++];
        new_sqlite_path(path, sizeof f->extra[0]);
        snprintf(url, sizeof url, "sqlite:%s", path);
    }
    if (url_out) snprintf(url_out, 700, "%s", url);
    return open_url(url, o);
}

static store_t *open_extra(fixture_t *f, const store_options_t *o)
{
    return open_extra_url(f, o, NULL);
}

static fixture_t *fixture_new(void)
{
    fixture_t *f = calloc(1, sizeof *f);
    assert_non_null(f);
    if (g_env_url) {
        snprintf(f->url, sizeof f->url, "%s", g_env_url);
    } else {
        new_sqlite_path(f->path, sizeof f->path);
        snprintf(f->url, sizeof f->url, "sqlite:%s", f->path);
    }
    new_ns(f->ns);
    return f;
}

static int setup_store(void **state)
{
    fixture_t *f = fixture_new();
    store_options_t o = default_opts();
    f->s = open_url(f->url, &o);
    *state = f;
    return 0;
}

static int setup_nostore(void **state)
{
    *state = fixture_new();
    return 0;
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    if (!f) return 0;
    if (f->s) store_close(f->s);
    if (f->path[0]) remove_db(f->path);
    for (int i = 0; i < f->n_extra; i++)
        remove_db(f->extra[i]);
    free(f);
    return 0;
}

/* --- helpers ---------------------------------------------------------------- */

#define CHECK_OK(call, err)                                                                        \
    do {                                                                                           \
        int rc_ = (call);                                                                          \
        if (rc_ != CHR_OK)                                                                         \
            fail_msg("%s failed: %d (%s) %s", #call, rc_, chr_status_name(rc_), (err).msg);        \
    } while (0)

/* The call must fail with want, fill err with the same code and a message. */
#define CHECK_FAILS(call, err, want)                                                               \
    do {                                                                                           \
        chr_err_clear(&(err));                                                                     \
        int rc_ = (call);                                                                          \
        if (rc_ != (want))                                                                         \
            fail_msg("%s returned %d (%s), want %d (%s); msg: %s", #call, rc_,                     \
                     chr_status_name(rc_), (want), chr_status_name(want), (err).msg);              \
        assert_int_equal((err).code, (want));                                                      \
        if ((err).msg[0] == '\0') fail_msg("%s: err.msg is empty", #call);                         \
    } while (0)

static void sname(char *out, size_t size, const fixture_t *f, const char *suffix)
{
    snprintf(out, size, "%s-%s", f->ns, suffix);
}

static void ev_make(event_t *ev, const char *id, const char *stream, const char *type,
                    const char *data, const char *meta)
{
    assert_int_equal(event_init(ev, id, stream, type, data, meta), CHR_OK);
}

static void evs_free(event_t *evs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        event_free(&evs[i]);
}

static int64_t head_of(store_t *s)
{
    chr_err_t err;
    int64_t h = -1;
    CHECK_OK(store_head_position(s, &h, &err), err);
    assert_true(h >= 0);
    return h;
}

static int64_t version_of(store_t *s, const char *stream)
{
    chr_err_t err;
    int64_t v = -1;
    CHECK_OK(store_stream_version(s, stream, &v, &err), err);
    assert_true(v >= 0);
    return v;
}

/* Appends one event (id may be "" or NULL) and returns it filled; the caller
 * frees it. */
static void append_one(store_t *s, const char *stream, int64_t expected, const char *id,
                       const char *type, const char *data, event_t *out)
{
    ev_make(out, id, stream, type, data, NULL);
    chr_err_t err;
    chr_err_clear(&err);
    CHECK_OK(store_append(s, stream, expected, out, 1, NULL, NULL, &err), err);
}

/* Appends one event and discards it; returns its position. */
static int64_t append_quick(store_t *s, const char *stream, const char *type)
{
    event_t ev;
    append_one(s, stream, STORE_ANY, NULL, type, "{}", &ev);
    int64_t pos = ev.position;
    event_free(&ev);
    return pos;
}

static bool json_text_equal(const char *a, const char *b)
{
    if (!a || !b) return a == b;
    json_t *ja = json_loads(a, JSON_DECODE_ANY, NULL), *jb = json_loads(b, JSON_DECODE_ANY, NULL);
    bool eq = ja && jb && json_equal(ja, jb);
    json_decref(ja);
    json_decref(jb);
    return eq;
}

/* metadata given as NULL may come back as NULL or as an empty object. */
static bool metadata_equal(const char *stored, const char *given)
{
    if (!given) return !stored || json_text_equal(stored, "{}");
    return json_text_equal(stored, given);
}

static void assert_event_equal(const event_t *got, const event_t *want, bool exact_text)
{
    if (strcmp(got->id, want->id) != 0) fail_msg("id %s != %s", got->id, want->id);
    assert_non_null(got->stream);
    assert_non_null(got->type);
    assert_non_null(got->data);
    if (want->stream) assert_string_equal(got->stream, want->stream);
    assert_string_equal(got->type, want->type);
    if (!json_text_equal(got->data, want->data))
        fail_msg("event %s: data %s != %s", got->id, got->data, want->data);
    if (!metadata_equal(got->metadata, want->metadata))
        fail_msg("event %s: metadata %s != %s", got->id, got->metadata ? got->metadata : "NULL",
                 want->metadata ? want->metadata : "NULL");
    if (exact_text) {
        /* event.h: JSON texts are kept as received, not rewritten. */
        assert_string_equal(got->data, want->data);
        if (want->metadata) assert_string_equal(got->metadata, want->metadata);
    }
    if (got->version != want->version)
        fail_msg("event %s: version %lld != %lld", got->id, (long long)got->version,
                 (long long)want->version);
    if (got->position != want->position)
        fail_msg("event %s: position %lld != %lld", got->id, (long long)got->position,
                 (long long)want->position);
    if (got->timestamp != want->timestamp)
        fail_msg("event %s: timestamp %lld != %lld", got->id, (long long)got->timestamp,
                 (long long)want->timestamp);
}

static void assert_absent(store_t *s, const char *id)
{
    event_t ev;
    memset(&ev, 0, sizeof ev);
    chr_err_t err;
    chr_err_clear(&err);
    int rc = store_read_event(s, id, &ev, &err);
    if (rc != CHR_ENOTFOUND) {
        event_free(&ev);
        fail_msg("event %s should not be stored, read_event gave %d", id, rc);
    }
}

static void read_one(store_t *s, const char *id, event_t *out)
{
    memset(out, 0, sizeof *out);
    chr_err_t err;
    chr_err_clear(&err);
    int rc = store_read_event(s, id, out, &err);
    if (rc != CHR_OK) fail_msg("read_event(%s) gave %d: %s", id, rc, err.msg);
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Yields the CPU briefly while polling for a condition with a deadline. */
static void pause_briefly(void)
{
    struct timespec ts = {0, 1000000};
    nanosleep(&ts, NULL);
}

/* --- round trips ------------------------------------------------------------ */

static void t_round_trip(store_t *s, fixture_t *f)
{
    char stream[128];
    sname(stream, sizeof stream, f, "order-1");
    int64_t h0 = head_of(s);
    char id0[UUID_STR_LEN + 1];
    uuid_v7_generate(id0);

    event_t evs[3];
    ev_make(&evs[0], id0, stream, "OrderPlaced",
            "{\"total\":12.5,\"items\":[{\"sku\":\"a\",\"qty\":2}]}",
            "{\"correlation_id\":\"c-1\",\"actor\":\"u-7\"}");
    ev_make(&evs[1], "", stream, "OrderPaid",
            "{\"s\":\"h\\u00e9llo \xe2\x9c\x93 \\\"q\\\"\",\"n\":[1,2.5,null,true,false]}", NULL);
    ev_make(&evs[2], NULL, stream, "OrderNoted", "\"just a string\"", "{}");
    const int64_t given_ts = INT64_C(1577836800123456); /* 2020-01-01T00:00:00.123456Z */
    evs[2].timestamp = given_ts;

    int64_t t_before = time_now_us();
    int64_t v = -1;
    bool idem = true;
    chr_err_t err;
    chr_err_clear(&err);
    CHECK_OK(store_append(s, stream, STORE_NO_STREAM, evs, 3, &v, &idem, &err), err);
    int64_t t_after = time_now_us();

    assert_int_equal(v, 3);
    assert_false(idem);
    assert_string_equal(evs[0].id, id0);
    for (int i = 0; i < 3; i++) {
        assert_true(uuid_is_valid(evs[i].id));
        assert_int_equal(evs[i].version, i + 1);
        assert_true(evs[i].position > (i ? evs[i - 1].position : h0));
    }
    /* Generated ids are UUIDv7 and distinct. */
    assert_int_equal(evs[1].id[14], '7');
    assert_int_equal(evs[2].id[14], '7');
    assert_string_not_equal(evs[1].id, evs[2].id);
    /* Timestamps: set by the store when 0 (1 ms slack for coarser clocks),
     * kept when given. */
    for (int i = 0; i < 2; i++)
        if (evs[i].timestamp < t_before - 1000 || evs[i].timestamp > t_after + 1000)
            fail_msg("timestamp %lld outside [%lld, %lld]", (long long)evs[i].timestamp,
                     (long long)t_before, (long long)t_after);
    assert_true(evs[2].timestamp == given_ts);

    assert_true(head_of(s) == evs[2].position);
    assert_int_equal(version_of(s, stream), 3);

    /* read_stream, read_event and read_all all give back the same events. */
    bool exact = is_sqlite(f);
    event_list_t list = {0};
    CHECK_OK(store_read_stream(s, stream, 0, 100, false, &list, &err), err);
    assert_int_equal(list.len, 3);
    for (int i = 0; i < 3; i++)
        assert_event_equal(&list.items[i], &evs[i], exact);
    event_list_free(&list);

    for (int i = 0; i < 3; i++) {
        event_t got;
        read_one(s, evs[i].id, &got);
        assert_event_equal(&got, &evs[i], exact);
        event_free(&got);
    }

    CHECK_OK(store_read_all(s, h0, 100, NULL, 0, &list, &err), err);
    assert_int_equal(list.len, 3);
    for (int i = 0; i < 3; i++)
        assert_event_equal(&list.items[i], &evs[i], exact);
    event_list_free(&list);

    /* A UTF-8 stream name survives the round trip byte for byte. */
    char ustream[128];
    sname(ustream, sizeof ustream, f, "caf\xc3\xa9-\xe6\x97\xa5\xf0\x9f\x98\x80");
    event_t u;
    append_one(s, ustream, STORE_NO_STREAM, NULL, "T\xc3\xa9", "{\"k\":\"\xc3\xa9\"}", &u);
    CHECK_OK(store_read_stream(s, ustream, 0, 10, false, &list, &err), err);
    assert_int_equal(list.len, 1);
    assert_string_equal(list.items[0].stream, ustream);
    assert_event_equal(&list.items[0], &u, exact);
    event_list_free(&list);
    event_free(&u);

    /* Unknown and malformed ids. */
    char unknown[UUID_STR_LEN + 1];
    uuid_v7_generate(unknown);
    event_t none;
    memset(&none, 0, sizeof none);
    CHECK_FAILS(store_read_event(s, unknown, &none, &err), err, CHR_ENOTFOUND);
    CHECK_FAILS(store_read_event(s, "not-a-uuid", &none, &err), err, CHR_EINVAL);
    evs_free(evs, 3);
}

/* Versions of the events read from a stream; also checks each event's stream. */
static size_t read_versions(store_t *s, const char *stream, int64_t from, size_t limit,
                            bool backwards, int64_t *out, size_t max)
{
    event_list_t list = {0};
    chr_err_t err;
    chr_err_clear(&err);
    CHECK_OK(store_read_stream(s, stream, from, limit, backwards, &list, &err), err);
    assert_true(list.len <= max);
    for (size_t i = 0; i < list.len; i++) {
        assert_string_equal(list.items[i].stream, stream);
        out[i] = list.items[i].version;
    }
    size_t n = list.len;
    event_list_free(&list);
    return n;
}

static void assert_versions(store_t *s, const char *stream, int64_t from, size_t limit,
                            bool backwards, const int64_t *want, size_t n_want)
{
    int64_t got[64];
    size_t n = read_versions(s, stream, from, limit, backwards, got, 64);
    if (n != n_want)
        fail_msg("read_stream(from %lld, limit %zu, %s): %zu events, want %zu", (long long)from,
                 limit, backwards ? "backwards" : "forwards", n, n_want);
    for (size_t i = 0; i < n; i++)
        if (got[i] != want[i])
            fail_msg("read_stream(from %lld, limit %zu, %s)[%zu]: version %lld, want %lld",
                     (long long)from, limit, backwards ? "backwards" : "forwards", i,
                     (long long)got[i], (long long)want[i]);
}

static void t_read_stream(store_t *s, fixture_t *f)
{
    char a[64], b[64], none[64];
    sname(a, sizeof a, f, "a");
    sname(b, sizeof b, f, "b");
    sname(none, sizeof none, f, "none");
    /* Interleave two streams so a stream read must filter. */
    for (int i = 0; i < 10; i++) {
        append_quick(s, a, "T");
        if (i < 5) append_quick(s, b, "T");
    }
    const int64_t up[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
    const int64_t down[] = {10, 9, 8, 7, 6, 5, 4, 3, 2, 1};
    assert_versions(s, a, 0, 100, false, up, 10);
    assert_versions(s, a, 1, 100, false, up, 10);
    assert_versions(s, a, 4, 3, false, up + 3, 3);
    assert_versions(s, a, 10, 5, false, up + 9, 1);
    assert_versions(s, a, 11, 5, false, NULL, 0);
    assert_versions(s, a, 0, 1, false, up, 1);
    assert_versions(s, a, 0, 100, true, down, 10);
    assert_versions(s, a, 0, 3, true, down, 3);
    assert_versions(s, a, 5, 2, true, down + 5, 2);
    assert_versions(s, a, 5, 100, true, down + 5, 5);
    assert_versions(s, a, 1, 100, true, down + 9, 1);
    assert_versions(s, a, 50, 100, true, down, 10);
    assert_versions(s, b, 0, 100, false, up, 5);
    assert_versions(s, b, 0, 100, true, down + 5, 5);
    /* A stream with no events: empty and CHR_OK. */
    assert_versions(s, none, 0, 100, false, NULL, 0);
    assert_versions(s, none, 0, 100, true, NULL, 0);

    /* Results are appended to what the list already holds. */
    event_list_t list = {0};
    chr_err_t err;
    CHECK_OK(store_read_stream(s, a, 0, 2, false, &list, &err), err);
    CHECK_OK(store_read_stream(s, b, 0, 100, false, &list, &err), err);
    assert_int_equal(list.len, 7);
    assert_string_equal(list.items[0].stream, a);
    assert_int_equal(list.items[1].version, 2);
    assert_string_equal(list.items[2].stream, b);
    assert_int_equal(list.items[6].version, 5);
    /* Positions follow versions within a stream. */
    for (size_t i = 3; i < 7; i++)
        assert_true(list.items[i].position > list.items[i - 1].position);
    event_list_free(&list);

    CHECK_FAILS(store_read_stream(s, "", 0, 10, false, &list, &err), err, CHR_EINVAL);
    CHECK_FAILS(store_read_stream(s, "bad\x01", 0, 10, false, &list, &err), err, CHR_EINVAL);
    CHECK_FAILS(store_read_stream(s, a, -1, 10, false, &list, &err), err, CHR_EINVAL);
    assert_int_equal(list.len, 0);
}

static void t_read_all(store_t *s, fixture_t *f)
{
    char s1[64], s2[64], s3[64], ta[64], tb[64], tc[64], tnone[64];
    sname(s1, sizeof s1, f, "1");
    sname(s2, sizeof s2, f, "2");
    sname(s3, sizeof s3, f, "3");
    sname(ta, sizeof ta, f, "A");
    sname(tb, sizeof tb, f, "B");
    sname(tc, sizeof tc, f, "C");
    sname(tnone, sizeof tnone, f, "None");
    int64_t h0 = head_of(s);

    /* 6 events in 4 appends: s1 [A, B], s2 [C], s1 [A], s3 [B, C]. */
    event_t evs[6];
    const char *streams[6] = {s1, s1, s2, s1, s3, s3};
    const char *types[6] = {ta, tb, tc, ta, tb, tc};
    for (int i = 0; i < 6; i++) {
        char data[32];
        snprintf(data, sizeof data, "{\"i\":%d}", i);
        ev_make(&evs[i], NULL, streams[i], types[i], data, NULL);
    }
    chr_err_t err;
    CHECK_OK(store_append(s, s1, STORE_NO_STREAM, &evs[0], 2, NULL, NULL, &err), err);
    CHECK_OK(store_append(s, s2, STORE_NO_STREAM, &evs[2], 1, NULL, NULL, &err), err);
    CHECK_OK(store_append(s, s1, 2, &evs[3], 1, NULL, NULL, &err), err);
    CHECK_OK(store_append(s, s3, STORE_NO_STREAM, &evs[4], 2, NULL, NULL, &err), err);
    for (int i = 1; i < 6; i++)
        assert_true(evs[i].position > evs[i - 1].position);

    event_list_t list = {0};
    CHECK_OK(store_read_all(s, h0, 1000, NULL, 0, &list, &err), err);
    assert_int_equal(list.len, 6);
    for (int i = 0; i < 6; i++)
        assert_event_equal(&list.items[i], &evs[i], false);
    event_list_free(&list);

    /* after is exclusive. */
    CHECK_OK(store_read_all(s, evs[2].position, 1000, NULL, 0, &list, &err), err);
    assert_int_equal(list.len, 3);
    for (int i = 0; i < 3; i++)
        assert_string_equal(list.items[i].id, evs[3 + i].id);
    event_list_free(&list);

    /* Paging with a limit visits every event once, in order. */
    int64_t after = h0;
    int seen = 0;
    for (int page = 0; page < 10; page++) {
        CHECK_OK(store_read_all(s, after, 2, NULL, 0, &list, &err), err);
        assert_true(list.len <= 2);
        if (list.len == 0) break;
        for (size_t i = 0; i < list.len; i++) {
            assert_true(seen < 6);
            assert_string_equal(list.items[i].id, evs[seen].id);
            assert_true(list.items[i].position > after);
            after = list.items[i].position;
            seen++;
        }
        event_list_free(&list);
    }
    event_list_free(&list);
    assert_int_equal(seen, 6);

    /* Type filters. */
    const char *only_b[] = {tb};
    CHECK_OK(store_read_all(s, h0, 1000, only_b, 1, &list, &err), err);
    assert_int_equal(list.len, 2);
    assert_string_equal(list.items[0].id, evs[1].id);
    assert_string_equal(list.items[1].id, evs[4].id);
    event_list_free(&list);

    const char *a_and_c[] = {ta, tc};
    CHECK_OK(store_read_all(s, h0, 1000, a_and_c, 2, &list, &err), err);
    assert_int_equal(list.len, 4);
    const int want_ac[] = {0, 2, 3, 5};
    for (int i = 0; i < 4; i++)
        assert_string_equal(list.items[i].id, evs[want_ac[i]].id);
    event_list_free(&list);

    /* A filter with a limit counts only matching events. */
    CHECK_OK(store_read_all(s, h0, 3, a_and_c, 2, &list, &err), err);
    assert_int_equal(list.len, 3);
    assert_string_equal(list.items[2].id, evs[3].id);
    event_list_free(&list);

    const char *none[] = {tnone};
    CHECK_OK(store_read_all(s, h0, 1000, none, 1, &list, &err), err);
    assert_int_equal(list.len, 0);

    /* Nothing after the head. */
    CHECK_OK(store_read_all(s, head_of(s), 1000, NULL, 0, &list, &err), err);
    assert_int_equal(list.len, 0);
    CHECK_OK(store_read_all(s, INT64_MAX - 1, 1000, NULL, 0, &list, &err), err);
    assert_int_equal(list.len, 0);

    CHECK_FAILS(store_read_all(s, -1, 10, NULL, 0, &list, &err), err, CHR_EINVAL);
    const char *bad_types[] = {ta, ""};
    CHECK_FAILS(store_read_all(s, h0, 10, bad_types, 2, &list, &err), err, CHR_EINVAL);
    const char *bad_utf8[] = {"T\xc3"};
    CHECK_FAILS(store_read_all(s, h0, 10, bad_utf8, 1, &list, &err), err, CHR_EINVAL);
    assert_int_equal(list.len, 0);
    evs_free(evs, 6);
}

static void t_versions_head_stats(store_t *s, fixture_t *f)
{
    char a[64], b[64];
    sname(a, sizeof a, f, "a");
    sname(b, sizeof b, f, "b");
    chr_err_t err;
    if (is_sqlite(f)) assert_true(head_of(s) == 0); /* a fresh store */
    assert_int_equal(version_of(s, a), 0);

    store_stats_t st0, st1;
    CHECK_OK(store_stats(s, &st0, &err), err);
    store_counters_t c0, c1;
    store_counters(s, &c0);
    int64_t last = 0;
    for (int i = 0; i < 4; i++)
        last = append_quick(s, a, "T");
    assert_true(head_of(s) == last);
    event_t two[2];
    ev_make(&two[0], NULL, b, "T", "{}", NULL);
    ev_make(&two[1], NULL, b, "T", "{}", NULL);
    CHECK_OK(store_append(s, b, STORE_NO_STREAM, two, 2, NULL, NULL, &err), err);
    assert_true(head_of(s) == two[1].position);
    assert_int_equal(version_of(s, a), 4);
    assert_int_equal(version_of(s, b), 2);
    evs_free(two, 2);

    CHECK_OK(store_stats(s, &st1, &err), err);
    assert_true(st1.events - st0.events == 6);
    assert_true(st1.streams - st0.streams == 2);
    assert_true(st1.head_position == head_of(s));
    assert_true(st1.bytes == -1 || st1.bytes > 0);
    assert_true(st1.schema_version >= 1);

    /* Counters: 5 units, 6 events; every commit lands in one histogram bin. */
    store_counters(s, &c1);
    assert_true(c1.units - c0.units == 5);
    assert_true(c1.events - c0.events == 6);
    uint64_t commits = c1.commits - c0.commits, binned = 0;
    for (int i = 0; i < 8; i++)
        binned += c1.batch_hist[i] - c0.batch_hist[i];
    assert_true(commits >= 1 && commits <= 5);
    assert_true(binned == commits);
    assert_true(c1.errors == c0.errors);

    /* Migrations: all applied (migrate=true), ordered, and idempotent. */
    store_migration_info_t *m = NULL;
    size_t n = 0;
    CHECK_OK(store_migrations(s, &m, &n, &err), err);
    assert_true(n >= 1);
    int64_t now = time_now_us();
    for (size_t i = 0; i < n; i++) {
        assert_true(m[i].applied);
        assert_non_null(m[i].name);
        assert_true(m[i].name[0] != '\0');
        assert_true(m[i].applied_at > 0 && m[i].applied_at <= now + 1000000);
        if (i) assert_true(m[i].version > m[i - 1].version);
    }
    assert_int_equal(st1.schema_version, m[n - 1].version);
    int last_version = m[n - 1].version;
    free(m);
    CHECK_OK(store_migrate(s, &err), err);
    m = NULL;
    size_t n2 = 0;
    CHECK_OK(store_migrations(s, &m, &n2, &err), err);
    assert_int_equal(n2, n);
    assert_int_equal(m[n2 - 1].version, last_version);
    free(m);

    CHECK_OK(store_ping(s, &err), err);
    assert_int_equal(version_of(s, a), 4); /* migrate again kept the data */
}

/* --- expected versions ------------------------------------------------------ */

static void expect_ok(store_t *s, const char *stream, int64_t expected, int64_t want_version)
{
    event_t ev;
    ev_make(&ev, NULL, stream, "T", "{}", NULL);
    int64_t v = -1;
    chr_err_t err;
    chr_err_clear(&err);
    int rc = store_append(s, stream, expected, &ev, 1, &v, NULL, &err);
    if (rc != CHR_OK)
        fail_msg("append to %s with expected %lld failed: %d %s", stream, (long long)expected, rc,
                 err.msg);
    assert_int_equal(v, want_version);
    assert_int_equal(ev.version, want_version);
    event_free(&ev);
}

static void expect_conflict(store_t *s, const char *stream, int64_t expected, int64_t actual)
{
    int64_t h = head_of(s), v = version_of(s, stream);
    char id[UUID_STR_LEN + 1];
    uuid_v7_generate(id);
    event_t ev;
    ev_make(&ev, id, stream, "T", "{}", NULL);
    chr_err_t err;
    CHECK_FAILS(store_append(s, stream, expected, &ev, 1, NULL, NULL, &err), err, CHR_ECONFLICT);
    if (err.conflict.expected != expected || err.conflict.actual != actual)
        fail_msg("conflict on %s: expected/actual %lld/%lld, want %lld/%lld", stream,
                 (long long)err.conflict.expected, (long long)err.conflict.actual,
                 (long long)expected, (long long)actual);
    event_free(&ev);
    assert_true(head_of(s) == h);
    assert_true(version_of(s, stream) == v);
    assert_absent(s, id);
}

static void t_expected_versions(store_t *s, fixture_t *f)
{
    char x[64], y[64], z[64];
    sname(x, sizeof x, f, "x");
    sname(y, sizeof y, f, "y");
    sname(z, sizeof z, f, "z");

    /* On a stream that does not exist. */
    expect_conflict(s, x, STORE_STREAM_EXISTS, 0);
    expect_conflict(s, x, 1, 0);
    expect_conflict(s, x, 5, 0);
    expect_ok(s, x, STORE_NO_STREAM, 1);
    /* STORE_NO_STREAM once it exists. */
    expect_conflict(s, x, STORE_NO_STREAM, 1);
    /* STORE_STREAM_EXISTS once it exists. */
    expect_ok(s, x, STORE_STREAM_EXISTS, 2);
    /* Exact versions. */
    expect_ok(s, x, 2, 3);
    expect_conflict(s, x, 2, 3);
    expect_conflict(s, x, 1, 3);
    expect_conflict(s, x, 4, 3);
    expect_ok(s, x, 3, 4);
    /* STORE_ANY: no check, new or existing. */
    expect_ok(s, x, STORE_ANY, 5);
    expect_ok(s, y, STORE_ANY, 1);
    expect_ok(s, y, STORE_ANY, 2);
    /* Exact version 0 is STORE_NO_STREAM. */
    expect_ok(s, z, 0, 1);
    expect_conflict(s, z, 0, 1);

    /* A multi-event append with an exact version numbers its events on. */
    event_t evs[3];
    for (int i = 0; i < 3; i++)
        ev_make(&evs[i], NULL, x, "T", "{}", NULL);
    int64_t v = -1;
    chr_err_t err;
    CHECK_OK(store_append(s, x, 5, evs, 3, &v, NULL, &err), err);
    assert_int_equal(v, 8);
    for (int i = 0; i < 3; i++)
        assert_int_equal(evs[i].version, 6 + i);
    evs_free(evs, 3);
    expect_conflict(s, x, 5, 8);

    /* A conflict on one stream did not disturb the others. */
    assert_int_equal(version_of(s, y), 2);
    assert_int_equal(version_of(s, z), 1);

    /* Not a mode. */
    int64_t h = head_of(s);
    event_t ev;
    ev_make(&ev, NULL, x, "T", "{}", NULL);
    CHECK_FAILS(store_append(s, x, -3, &ev, 1, NULL, NULL, &err), err, CHR_EINVAL);
    CHECK_FAILS(store_append(s, x, INT64_MIN, &ev, 1, NULL, NULL, &err), err, CHR_EINVAL);
    event_free(&ev);
    assert_true(head_of(s) == h);
}

/* --- idempotency ------------------------------------------------------------ */

/* expect_idempotent: want_version < 0 skips the check of store_append's
 * version (see t_idempotent_version_after for that). */

/* A fresh, unfilled copy of events (same id, type, data, metadata). */
static void fresh_copies(const event_t *src, event_t *dst, size_t n)
{
    for (size_t i = 0; i < n; i++)
        ev_make(&dst[i], src[i].id, src[i].stream, src[i].type, src[i].data, src[i].metadata);
}

/* Re-appends fresh copies of orig and checks the idempotent outcome. Returns
 * "" or what went wrong (in why), having freed everything it allocated, so a
 * caller can clean up before failing. */
static const char *check_idempotent(store_t *s, const char *stream, int64_t expected,
                                    const event_t *orig, size_t n, int64_t want_version, char *why,
                                    size_t why_size)
{
    why[0] = '\0';
    int64_t h = head_of(s), sv = version_of(s, stream);
    event_t again[8];
    assert_true(n <= 8);
    fresh_copies(orig, again, n);
    int64_t v = -1;
    bool idem = false;
    chr_err_t err;
    chr_err_clear(&err);
    int rc = store_append(s, stream, expected, again, n, &v, &idem, &err);
    if (rc != CHR_OK) {
        snprintf(why, why_size, "re-append with expected %lld gave %d (%s): %s",
                 (long long)expected, rc, chr_status_name(rc), err.msg);
    } else if (!idem) {
        snprintf(why, why_size, "re-append with expected %lld: idempotent is false",
                 (long long)expected);
    } else if (want_version >= 0 && v != want_version) {
        snprintf(why, why_size,
                 "idempotent re-append with expected %lld: version %lld, want %lld (the "
                 "original append's)",
                 (long long)expected, (long long)v, (long long)want_version);
    } else {
        for (size_t i = 0; i < n && !why[0]; i++)
            if (strcmp(again[i].id, orig[i].id) != 0 || again[i].version != orig[i].version ||
                again[i].position != orig[i].position || again[i].timestamp != orig[i].timestamp)
                snprintf(why, why_size,
                         "event %zu came back as v%lld @%lld t%lld, stored as v%lld @%lld t%lld", i,
                         (long long)again[i].version, (long long)again[i].position,
                         (long long)again[i].timestamp, (long long)orig[i].version,
                         (long long)orig[i].position, (long long)orig[i].timestamp);
    }
    evs_free(again, n);
    /* Nothing new stored. */
    if (!why[0] && (head_of(s) != h || version_of(s, stream) != sv))
        snprintf(why, why_size, "an idempotent re-append wrote events");
    return why;
}

static void expect_idempotent(store_t *s, const char *stream, int64_t expected, const event_t *orig,
                              size_t n, int64_t want_version)
{
    char why[512];
    if (*check_idempotent(s, stream, expected, orig, n, want_version, why, sizeof why))
        fail_msg("%s", why);
}

static void t_idempotent_reappend(store_t *s, fixture_t *f)
{
    char st[64];
    sname(st, sizeof st, f, "idem");
    event_t first[3];
    for (int i = 0; i < 3; i++) {
        char id[UUID_STR_LEN + 1], data[32], type[16];
        uuid_v7_generate(id);
        snprintf(data, sizeof data, "{\"n\":%d}", i);
        snprintf(type, sizeof type, "T%d", i);
        ev_make(&first[i], id, st, type, data, i == 0 ? "{\"correlation_id\":\"c\"}" : NULL);
    }
    chr_err_t err;
    bool idem = true;
    int64_t v = -1;
    CHECK_OK(store_append(s, st, STORE_NO_STREAM, first, 3, &v, &idem, &err), err);
    assert_false(idem);
    assert_int_equal(v, 3);

    /* The same events again, whatever the expected version says now. */
    expect_idempotent(s, st, STORE_NO_STREAM, first, 3, 3); /* stale: the stream exists */
    expect_idempotent(s, st, 0, first, 3, 3);
    expect_idempotent(s, st, STORE_ANY, first, 3, 3);
    expect_idempotent(s, st, STORE_STREAM_EXISTS, first, 3, 3);
    expect_idempotent(s, st, 3, first, 3, 3);              /* current: still nothing new */
    expect_idempotent(s, st, STORE_ANY, &first[1], 1, -1); /* a stored subset */

    /* Two more, then re-append them with the exact version that was right
     * the first time and is stale now. */
    event_t more[2];
    for (int i = 0; i < 2; i++) {
        char id[UUID_STR_LEN + 1];
        uuid_v7_generate(id);
        ev_make(&more[i], id, st, "More", "[1,2,3]", NULL);
    }
    CHECK_OK(store_append(s, st, 3, more, 2, &v, &idem, &err), err);
    assert_int_equal(v, 5);
    assert_false(idem);
    assert_int_equal(more[0].version, 4);
    expect_idempotent(s, st, 3, more, 2, 5);
    expect_idempotent(s, st, STORE_NO_STREAM, first, 3, -1);

    /* Exactly five events are stored, once each. */
    event_list_t list = {0};
    CHECK_OK(store_read_stream(s, st, 0, 100, false, &list, &err), err);
    assert_int_equal(list.len, 5);
    for (int i = 0; i < 3; i++)
        assert_event_equal(&list.items[i], &first[i], false);
    for (int i = 0; i < 2; i++)
        assert_event_equal(&list.items[3 + i], &more[i], false);
    event_list_free(&list);
    evs_free(first, 3);
    evs_free(more, 2);
}

/* store.h: store_append_t.version is "the stream's version after the
 * append", also when the append was idempotent and the stream has moved on
 * since the events were first stored. */
static void t_idempotent_version_after(store_t *s, fixture_t *f)
{
    char st[64];
    sname(st, sizeof st, f, "idem-v");
    event_t first[2];
    for (int i = 0; i < 2; i++)
        ev_make(&first[i], NULL, st, "T", "{}", NULL);
    for (int i = 0; i < 2; i++)
        uuid_v7_generate(first[i].id);
    chr_err_t err;
    CHECK_OK(store_append(s, st, STORE_NO_STREAM, first, 2, NULL, NULL, &err), err);
    for (int i = 0; i < 3; i++)
        append_quick(s, st, "Later"); /* the stream is at 5 now */
    assert_int_equal(version_of(s, st), 5);
    /* A replay returns the original result (store.h): the version that
     * append produced, not where the stream has moved on to since. */
    char why1[512], why2[512];
    check_idempotent(s, st, STORE_NO_STREAM, first, 2, 2, why1, sizeof why1);
    check_idempotent(s, st, STORE_ANY, &first[0], 1, 1, why2, sizeof why2);
    evs_free(first, 2);
    if (why1[0] || why2[0]) fail_msg("%s%s%s", why1, why1[0] && why2[0] ? "; " : "", why2);
}

static void t_same_id_different_content(store_t *s, fixture_t *f)
{
    char st[64], other[64];
    sname(st, sizeof st, f, "dup");
    sname(other, sizeof other, f, "other");
    char id[UUID_STR_LEN + 1];
    uuid_v7_generate(id);
    event_t orig;
    append_one(s, st, STORE_NO_STREAM, id, "Created", "{\"a\":1}", &orig);
    int64_t h = head_of(s);
    chr_err_t err;

    /* Different data. */
    event_t ev;
    ev_make(&ev, id, st, "Created", "{\"a\":2}", NULL);
    CHECK_FAILS(store_append(s, st, STORE_ANY, &ev, 1, NULL, NULL, &err), err, CHR_ECONFLICT);
    event_free(&ev);
    /* Different type. */
    ev_make(&ev, id, st, "Deleted", "{\"a\":1}", NULL);
    CHECK_FAILS(store_append(s, st, STORE_ANY, &ev, 1, NULL, NULL, &err), err, CHR_ECONFLICT);
    event_free(&ev);
    /* Same content, other stream: the id is already taken. */
    ev_make(&ev, id, other, "Created", "{\"a\":1}", NULL);
    CHECK_FAILS(store_append(s, other, STORE_ANY, &ev, 1, NULL, NULL, &err), err, CHR_ECONFLICT);
    event_free(&ev);
    assert_int_equal(version_of(s, other), 0);
    /* In a batch with a new event: the new one is not stored either. */
    char fresh_id[UUID_STR_LEN + 1];
    uuid_v7_generate(fresh_id);
    event_t pair[2];
    ev_make(&pair[0], fresh_id, st, "Created", "{}", NULL);
    ev_make(&pair[1], id, st, "Created", "{\"a\":3}", NULL);
    CHECK_FAILS(store_append(s, st, STORE_ANY, pair, 2, NULL, NULL, &err), err, CHR_ECONFLICT);
    evs_free(pair, 2);
    assert_absent(s, fresh_id);

    assert_true(head_of(s) == h);
    assert_int_equal(version_of(s, st), 1);
    event_t got;
    read_one(s, id, &got);
    assert_event_equal(&got, &orig, false);
    event_free(&got);
    event_free(&orig);
}

/* --- atomicity and units of work -------------------------------------------- */

static void t_atomic_multi_event(store_t *s, fixture_t *f)
{
    char st[64], s2[64], s3[64];
    sname(st, sizeof st, f, "atomic");
    sname(s2, sizeof s2, f, "atomic-2");
    sname(s3, sizeof s3, f, "atomic-3");
    int64_t h = head_of(s);
    chr_err_t err;

    /* One bad event among good ones: nothing is written. */
    event_t evs[3];
    ev_make(&evs[0], NULL, st, "T", "{}", NULL);
    ev_make(&evs[1], NULL, st, "T", "{}", NULL);
    ev_make(&evs[2], NULL, st, "T", "{\"broken\":", NULL);
    char id0[UUID_STR_LEN + 1];
    uuid_v7_generate(id0);
    snprintf(evs[0].id, sizeof evs[0].id, "%s", id0);
    CHECK_FAILS(store_append(s, st, STORE_ANY, evs, 3, NULL, NULL, &err), err, CHR_EINVAL);
    if (!strstr(err.field, "events[2]"))
        fail_msg("err.field \"%s\" does not name events[2]", err.field);
    evs_free(evs, 3);
    assert_int_equal(version_of(s, st), 0);
    assert_absent(s, id0);
    assert_true(head_of(s) == h);

    /* A unit whose second append conflicts: the first is not written. */
    char ida[UUID_STR_LEN + 1], idb[UUID_STR_LEN + 1];
    uuid_v7_generate(ida);
    uuid_v7_generate(idb);
    event_t ea[2], eb;
    ev_make(&ea[0], ida, st, "T", "{}", NULL);
    ev_make(&ea[1], NULL, st, "T", "{}", NULL);
    ev_make(&eb, idb, s2, "T", "{}", NULL);
    store_append_t aps[2] = {
        {.stream = st, .expected_version = STORE_NO_STREAM, .events = ea, .n_events = 2},
        {.stream = s2, .expected_version = 7, .events = &eb, .n_events = 1},
    };
    store_uow_t uow = {.appends = aps, .n_appends = 2};
    CHECK_FAILS(store_commit(s, &uow, &err), err, CHR_ECONFLICT);
    assert_true(err.conflict.expected == 7 && err.conflict.actual == 0);
    assert_absent(s, ida);
    assert_absent(s, idb);
    assert_int_equal(version_of(s, st), 0);
    assert_true(head_of(s) == h);

    /* A unit whose second append reuses a stored id with other content. */
    event_t stored;
    append_one(s, s3, STORE_ANY, NULL, "T", "{\"v\":1}", &stored);
    h = head_of(s);
    event_t clash;
    ev_make(&clash, stored.id, s2, "T", "{\"v\":2}", NULL);
    aps[1] = (store_append_t){
        .stream = s2, .expected_version = STORE_ANY, .events = &clash, .n_events = 1};
    CHECK_FAILS(store_commit(s, &uow, &err), err, CHR_ECONFLICT);
    event_free(&clash);
    assert_absent(s, ida);
    assert_true(head_of(s) == h);
    event_free(&stored);

    /* A unit whose second append names an invalid stream. */
    aps[1] = (store_append_t){
        .stream = "bad\nstream", .expected_version = STORE_ANY, .events = &eb, .n_events = 1};
    CHECK_FAILS(store_commit(s, &uow, &err), err, CHR_EINVAL);
    assert_absent(s, ida);
    assert_true(head_of(s) == h);

    /* Both good: both written, positions in append order. */
    aps[1] = (store_append_t){
        .stream = s2, .expected_version = STORE_NO_STREAM, .events = &eb, .n_events = 1};
    chr_err_clear(&err);
    CHECK_OK(store_commit(s, &uow, &err), err);
    assert_int_equal(aps[0].version, 2);
    assert_int_equal(aps[1].version, 1);
    assert_false(aps[0].idempotent);
    assert_true(ea[0].position < ea[1].position && ea[1].position < eb.position);
    assert_true(head_of(s) == eb.position);
    event_t got;
    read_one(s, idb, &got);
    assert_int_equal(got.version, 1);
    event_free(&got);
    evs_free(ea, 2);
    event_free(&eb);
}

/* Projection work for the apply callback tests. */
typedef struct proj {
    char table[64];
    const char *key;
    int64_t value;
    int calls;
    int exec_rc;     /* last store_tx_exec status */
    int64_t changes; /* rows the last statement changed */
    int fail_with;   /* non-zero: return this after writing */
    const char *marker;
    const char *sql; /* for apply_sql: a statement to run */
} proj_t;

static int apply_create_insert(store_tx_t *tx, void *user, chr_err_t *err)
{
    proj_t *p = user;
    p->calls++;
    char sql[256];
    snprintf(sql, sizeof sql,
             "CREATE TABLE IF NOT EXISTS %s (k TEXT PRIMARY KEY, v INTEGER, r REAL, n TEXT)",
             p->table);
    p->exec_rc = store_tx_exec(tx, sql, NULL, 0, NULL, err);
    if (p->exec_rc) return p->exec_rc;
    snprintf(sql, sizeof sql, "INSERT INTO %s (k, v, r, n) VALUES (?, ?, ?, ?)", p->table);
    store_val_t params[4] = {
        {.type = SV_TEXT, .s = p->key},
        {.type = SV_INT, .i = p->value},
        {.type = SV_REAL, .r = 2.5},
        {.type = SV_NULL},
    };
    p->changes = -1;
    p->exec_rc = store_tx_exec(tx, sql, params, 4, &p->changes, err);
    if (p->exec_rc) return p->exec_rc;
    if (p->fail_with)
        return chr_fail(err, p->fail_with, "status", "projection rule violated: %s", p->marker);
    return CHR_OK;
}

static int apply_sql(store_tx_t *tx, void *user, chr_err_t *err)
{
    proj_t *p = user;
    p->calls++;
    store_val_t param = {.type = SV_TEXT, .s = "x"};
    p->exec_rc = store_tx_exec(tx, p->sql, &param, 1, &p->changes, err);
    return p->exec_rc;
}

typedef struct row {
    char k[128];
    store_val_type_t k_type, v_type, r_type, n_type;
    int64_t v;
    double r;
} row_t;

typedef struct query {
    char sql[256];
    store_val_t param;
    size_t n_params;
    row_t rows[64];
    size_t n_rows;
    size_t n_cols;
    int rc;
    int calls;
} query_t;

static int collect_row(void *user, const store_val_t *vals, size_t n)
{
    query_t *q = user;
    q->n_cols = n;
    if (q->n_rows == 64 || n < 1) return 1;
    row_t *r = &q->rows[q->n_rows++];
    memset(r, 0, sizeof *r);
    r->k_type = vals[0].type;
    if (vals[0].type == SV_TEXT) snprintf(r->k, sizeof r->k, "%s", vals[0].s);
    if (n > 1) {
        r->v_type = vals[1].type;
        r->v = vals[1].i;
    }
    if (n > 2) {
        r->r_type = vals[2].type;
        r->r = vals[2].r;
    }
    if (n > 3) r->n_type = vals[3].type;
    return 0;
}

static int apply_query(store_tx_t *tx, void *user, chr_err_t *err)
{
    query_t *q = user;
    q->calls++;
    q->n_rows = 0;
    q->rc = store_tx_query(tx, q->sql, q->n_params ? &q->param : NULL, q->n_params, collect_row, q,
                           err);
    return CHR_OK; /* the query's status is inspected by the test */
}

/* Runs a read-only unit (no appends) with apply_query. */
static void run_query(store_t *s, query_t *q)
{
    store_uow_t uow = {.appends = NULL, .n_appends = 0, .apply = apply_query, .apply_user = q};
    chr_err_t err;
    chr_err_clear(&err);
    q->calls = 0;
    CHECK_OK(store_commit(s, &uow, &err), err);
    assert_int_equal(q->calls, 1);
}

static void t_apply_projection(store_t *s, fixture_t *f)
{
    char st[64];
    sname(st, sizeof st, f, "proj");
    chr_err_t err;

    /* An apply that creates the table and inserts a row commits with the event. */
    proj_t p = {0};
    snprintf(p.table, sizeof p.table, "%s_proj", f->ns);
    p.key = "O'Brien\"; DROP TABLE x; --"; /* bound, never SQL text */
    p.value = 42;
    event_t ev;
    ev_make(&ev, NULL, st, "Created", "{}", NULL);
    store_append_t ap = {
        .stream = st, .expected_version = STORE_NO_STREAM, .events = &ev, .n_events = 1};
    store_uow_t uow = {
        .appends = &ap, .n_appends = 1, .apply = apply_create_insert, .apply_user = &p};
    CHECK_OK(store_commit(s, &uow, &err), err);
    assert_int_equal(p.calls, 1);
    assert_int_equal(p.exec_rc, CHR_OK);
    assert_true(p.changes == 1);
    assert_int_equal(ap.version, 1);
    int64_t pos1 = ev.position;
    event_free(&ev);

    query_t q;
    memset(&q, 0, sizeof q);
    snprintf(q.sql, sizeof q.sql, "SELECT k, v, r, n FROM %s ORDER BY k", p.table);
    run_query(s, &q);
    assert_int_equal(q.rc, CHR_OK);
    assert_int_equal(q.n_rows, 1);
    assert_int_equal(q.n_cols, 4);
    assert_int_equal(q.rows[0].k_type, SV_TEXT);
    assert_string_equal(q.rows[0].k, p.key);
    assert_int_equal(q.rows[0].v_type, SV_INT);
    assert_true(q.rows[0].v == 42);
    assert_int_equal(q.rows[0].r_type, SV_REAL);
    assert_true(q.rows[0].r == 2.5);
    assert_int_equal(q.rows[0].n_type, SV_NULL);

    /* A query with a bound parameter; an UPDATE that matches nothing. */
    memset(&q, 0, sizeof q);
    snprintf(q.sql, sizeof q.sql, "SELECT k FROM %s WHERE k = ?", p.table);
    q.param = (store_val_t){.type = SV_TEXT, .s = p.key};
    q.n_params = 1;
    run_query(s, &q);
    assert_int_equal(q.rc, CHR_OK);
    assert_int_equal(q.n_rows, 1);
    proj_t upd = {0};
    char sql[256];
    snprintf(sql, sizeof sql, "UPDATE %s SET v = 0 WHERE k = ?", p.table);
    upd.sql = sql;
    upd.changes = -1;
    store_uow_t uu = {.apply = apply_sql, .apply_user = &upd};
    CHECK_OK(store_commit(s, &uu, &err), err);
    assert_int_equal(upd.exec_rc, CHR_OK);
    assert_true(upd.changes == 0);
    assert_true(head_of(s) == pos1); /* a unit without appends adds no events */

    /* An apply that fails after writing rolls back its row and the events. */
    char idf[UUID_STR_LEN + 1];
    uuid_v7_generate(idf);
    proj_t bad = p;
    bad.key = "second";
    bad.calls = 0;
    bad.fail_with = CHR_EINVAL;
    bad.marker = "marker-7c1";
    event_t evf[2];
    ev_make(&evf[0], idf, st, "Updated", "{}", NULL);
    ev_make(&evf[1], NULL, st, "Updated", "{}", NULL);
    ap = (store_append_t){.stream = st, .expected_version = 1, .events = evf, .n_events = 2};
    uow.apply_user = &bad;
    CHECK_FAILS(store_commit(s, &uow, &err), err, CHR_EINVAL);
    assert_int_equal(bad.calls, 1);
    assert_non_null(strstr(err.msg, "marker-7c1"));
    assert_string_equal(err.field, "status");
    evs_free(evf, 2);
    assert_absent(s, idf);
    assert_int_equal(version_of(s, st), 1);
    assert_true(head_of(s) == pos1);
    memset(&q, 0, sizeof q);
    snprintf(q.sql, sizeof q.sql, "SELECT k, v, r, n FROM %s ORDER BY k", p.table);
    run_query(s, &q);
    assert_int_equal(q.rc, CHR_OK);
    assert_int_equal(q.n_rows, 1); /* "second" was rolled back */
    assert_string_equal(q.rows[0].k, p.key);

    /* An apply whose SQL fails: the store's error comes back, nothing stays. */
    uuid_v7_generate(idf);
    proj_t broken = {0};
    char bsql[128];
    snprintf(bsql, sizeof bsql, "INSERT INTO %s_missing (k) VALUES (?)", f->ns);
    broken.sql = bsql;
    ev_make(&evf[0], idf, st, "Updated", "{}", NULL);
    ap = (store_append_t){.stream = st, .expected_version = 1, .events = evf, .n_events = 1};
    uow = (store_uow_t){.appends = &ap, .n_appends = 1, .apply = apply_sql, .apply_user = &broken};
    chr_err_clear(&err);
    int rc = store_commit(s, &uow, &err);
    event_free(&evf[0]);
    assert_int_equal(broken.calls, 1);
    assert_int_not_equal(broken.exec_rc, CHR_OK);
    assert_int_equal(rc, broken.exec_rc);
    assert_true(err.msg[0] != '\0');
    assert_absent(s, idf);
    assert_int_equal(version_of(s, st), 1);

    /* A table created by a failing apply is rolled back too. */
    proj_t ddl = {0};
    snprintf(ddl.table, sizeof ddl.table, "%s_rolled", f->ns);
    ddl.key = "k";
    ddl.fail_with = CHR_ECONFLICT;
    ddl.marker = "no";
    ev_make(&evf[0], NULL, st, "Updated", "{}", NULL);
    ap = (store_append_t){.stream = st, .expected_version = 1, .events = evf, .n_events = 1};
    uow = (store_uow_t){
        .appends = &ap, .n_appends = 1, .apply = apply_create_insert, .apply_user = &ddl};
    CHECK_FAILS(store_commit(s, &uow, &err), err, CHR_ECONFLICT);
    event_free(&evf[0]);
    memset(&q, 0, sizeof q);
    snprintf(q.sql, sizeof q.sql, "SELECT k FROM %s", ddl.table);
    run_query(s, &q);
    assert_int_not_equal(q.rc, CHR_OK); /* no such table */

    /* The store is still fine afterwards. */
    expect_ok(s, st, 1, 2);
}

/* --- group commit: one unit's failure never fails another ------------------- */

enum { GC_THREADS = 8, GC_UNITS = 40 };

typedef enum gc_kind { GC_GOOD, GC_STALE, GC_APPLY_FAILS, GC_ID_CLASH } gc_kind_t;

typedef struct gc_unit {
    gc_kind_t kind;
    int rc;
    chr_err_t err;
    char id[UUID_STR_LEN + 1];
    int64_t version;
    char key[32];
} gc_unit_t;

typedef struct gc_thread {
    store_t *s;
    pthread_barrier_t *start;
    int t;
    char own[64], stale[64];
    const char *clash_id; /* a stored event's id */
    const char *table;
    gc_unit_t units[GC_UNITS];
    int64_t own_version;
} gc_thread_t;

typedef struct gc_apply {
    const char *table;
    const char *key;
    bool fail;
} gc_apply_t;

static int gc_apply_fn(store_tx_t *tx, void *user, chr_err_t *err)
{
    gc_apply_t *a = user;
    char sql[160];
    snprintf(sql, sizeof sql, "INSERT INTO %s (k) VALUES (?)", a->table);
    store_val_t v = {.type = SV_TEXT, .s = a->key};
    int rc = store_tx_exec(tx, sql, &v, 1, NULL, err);
    if (rc) return rc;
    if (a->fail)
        return chr_fail(err, CHR_EINVAL, "gc", "unit %s refused by its projection", a->key);
    return CHR_OK;
}

static void *gc_main(void *arg)
{
    gc_thread_t *g = arg;
    pthread_barrier_wait(g->start);
    for (int i = 0; i < GC_UNITS; i++) {
        gc_unit_t *u = &g->units[i];
        u->kind = (gc_kind_t)((g->t + i) % 4);
        uuid_v7_generate(u->id);
        snprintf(u->key, sizeof u->key, "k-%d-%d", g->t, i);
        event_t ev;
        const char *stream = u->kind == GC_STALE ? g->stale : g->own;
        if (event_init(&ev, u->kind == GC_ID_CLASH ? g->clash_id : u->id, stream, "Gc",
                       u->kind == GC_ID_CLASH ? "{\"different\":true}" : "{}", NULL) != CHR_OK) {
            u->rc = CHR_ENOMEM;
            continue;
        }
        gc_apply_t a = {.table = g->table, .key = u->key, .fail = u->kind == GC_APPLY_FAILS};
        store_append_t ap = {.stream = stream, .events = &ev, .n_events = 1};
        ap.expected_version = u->kind == GC_STALE      ? 5
                              : u->kind == GC_ID_CLASH ? STORE_ANY
                                                       : g->own_version;
        store_uow_t uow = {.appends = &ap, .n_appends = 1, .apply = gc_apply_fn, .apply_user = &a};
        chr_err_clear(&u->err);
        u->rc = store_commit(g->s, &uow, &u->err);
        if (u->rc == CHR_OK) {
            u->version = ev.version;
            g->own_version = ev.version;
        }
        event_free(&ev);
    }
    return NULL;
}

static int gc_count_rows(void *user, const store_val_t *vals, size_t n)
{
    strmap_t *keys = user;
    if (n >= 1 && vals[0].type == SV_TEXT) strmap_put(keys, vals[0].s, 1);
    return 0;
}

static int gc_query_fn(store_tx_t *tx, void *user, chr_err_t *err)
{
    void **args = user;
    return store_tx_query(tx, args[0], NULL, 0, gc_count_rows, args[1], err);
}

struct gc_create_ctx {
    const char *sql;
    int rc;
};

/* A statement-only apply (no parameters). */
static int gc_create_apply(store_tx_t *tx, void *user, chr_err_t *err)
{
    struct gc_create_ctx *c = user;
    c->rc = store_tx_exec(tx, c->sql, NULL, 0, NULL, err);
    return c->rc;
}

static void t_group_commit_isolation(store_t *s, fixture_t *f)
{
    chr_err_t err;
    char table[64];
    snprintf(table, sizeof table, "%s_gc", f->ns);
    char create[160];
    snprintf(create, sizeof create, "CREATE TABLE %s (k TEXT PRIMARY KEY)", table);
    struct gc_create_ctx cc = {create, -99};
    store_uow_t cu = {.apply = gc_create_apply, .apply_user = &cc};
    CHECK_OK(store_commit(s, &cu, &err), err);
    assert_int_equal(cc.rc, CHR_OK);

    /* A stored event whose id the clash units reuse with other data. */
    event_t clash;
    char clash_stream[64];
    sname(clash_stream, sizeof clash_stream, f, "clash");
    append_one(s, clash_stream, STORE_NO_STREAM, NULL, "Gc", "{}", &clash);

    static gc_thread_t g[GC_THREADS];
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, GC_THREADS);
    store_counters_t c0, c1;
    store_counters(s, &c0);
    pthread_t th[GC_THREADS];
    for (int t = 0; t < GC_THREADS; t++) {
        memset(&g[t], 0, sizeof g[t]);
        g[t].s = s;
        g[t].start = &start;
        g[t].t = t;
        g[t].clash_id = clash.id;
        g[t].table = table;
        snprintf(g[t].own, sizeof g[t].own, "%s-gc-own-%d", f->ns, t);
        snprintf(g[t].stale, sizeof g[t].stale, "%s-gc-stale-%d", f->ns, t);
        append_quick(s, g[t].stale, "Gc"); /* version 1; the stale units expect 5 */
    }
    int64_t h0 = head_of(s);
    for (int t = 0; t < GC_THREADS; t++)
        assert_int_equal(pthread_create(&th[t], NULL, gc_main, &g[t]), 0);
    for (int t = 0; t < GC_THREADS; t++)
        pthread_join(th[t], NULL);
    pthread_barrier_destroy(&start);
    store_counters(s, &c1);

    strmap_t keys = {0};
    char select[160];
    snprintf(select, sizeof select, "SELECT k FROM %s", table);
    void *args[2] = {select, &keys};
    store_uow_t qu = {.apply = gc_query_fn, .apply_user = args};
    CHECK_OK(store_commit(s, &qu, &err), err);

    int good = 0;
    for (int t = 0; t < GC_THREADS; t++) {
        for (int i = 0; i < GC_UNITS; i++) {
            gc_unit_t *u = &g[t].units[i];
            int64_t dummy;
            switch (u->kind) {
            case GC_GOOD:
                if (u->rc != CHR_OK)
                    fail_msg("good unit %d/%d failed: %d %s", t, i, u->rc, u->err.msg);
                good++;
                {
                    event_t got;
                    read_one(s, u->id, &got);
                    assert_true(got.version == u->version);
                    event_free(&got);
                }
                if (!strmap_get(&keys, u->key, &dummy)) fail_msg("row %s missing", u->key);
                break;
            case GC_STALE:
                if (u->rc != CHR_ECONFLICT)
                    fail_msg("stale unit %d/%d gave %d: %s", t, i, u->rc, u->err.msg);
                assert_true(u->err.conflict.expected == 5 && u->err.conflict.actual == 1);
                assert_absent(s, u->id);
                if (strmap_get(&keys, u->key, &dummy)) fail_msg("row %s kept", u->key);
                break;
            case GC_APPLY_FAILS:
                if (u->rc != CHR_EINVAL)
                    fail_msg("refused unit %d/%d gave %d: %s", t, i, u->rc, u->err.msg);
                assert_non_null(strstr(u->err.msg, u->key));
                assert_absent(s, u->id);
                if (strmap_get(&keys, u->key, &dummy)) fail_msg("row %s kept", u->key);
                break;
            case GC_ID_CLASH:
                if (u->rc != CHR_ECONFLICT)
                    fail_msg("clashing unit %d/%d gave %d: %s", t, i, u->rc, u->err.msg);
                if (strmap_get(&keys, u->key, &dummy)) fail_msg("row %s kept", u->key);
                break;
            }
        }
        assert_true(version_of(s, g[t].own) == g[t].own_version);
        assert_int_equal(version_of(s, g[t].stale), 1);
    }
    assert_int_equal(keys.len, (size_t)good);
    assert_int_equal(good, GC_THREADS * GC_UNITS / 4);
    strmap_free(&keys);

    /* Exactly the good units' events were added. */
    event_list_t list = {0};
    CHECK_OK(store_read_all(s, h0, 100000, NULL, 0, &list, &err), err);
    assert_int_equal(list.len, (size_t)good);
    event_list_free(&list);
    event_t got;
    read_one(s, clash.id, &got);
    assert_true(json_text_equal(got.data, "{}"));
    event_free(&got);
    event_free(&clash);

    /* The units really shared commits (SQLite's group commit): some commit
     * carried more than one unit. */
    uint64_t multi = 0;
    for (int i = 1; i < 8; i++)
        multi += c1.batch_hist[i] - c0.batch_hist[i];
    print_message("group commit: %llu commits for %llu units, %llu with several units\n",
                  (unsigned long long)(c1.commits - c0.commits),
                  (unsigned long long)(c1.units - c0.units), (unsigned long long)multi);
    if (is_sqlite(f) && multi == 0)
        fail_msg("no commit carried more than one unit: group commit was not exercised");
}

/* --- asynchronous commits ------------------------------------------------- */

typedef struct async_slot {
    store_append_t ap;
    store_uow_t uow;
    event_t ev;
    chr_err_t err;
    int rc;
    int calls;
    bool conflicting;
    struct async_ctl *ctl;
} async_slot_t;

typedef struct async_ctl {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int done;
} async_ctl_t;

static void async_done(void *user, int rc)
{
    async_slot_t *slot = user;
    async_ctl_t *c = slot->ctl;
    pthread_mutex_lock(&c->lock);
    slot->rc = rc;
    slot->calls++;
    c->done++;
    pthread_cond_broadcast(&c->cond);
    pthread_mutex_unlock(&c->lock);
}

static int async_done_count(async_ctl_t *c)
{
    pthread_mutex_lock(&c->lock);
    int d = c->done;
    pthread_mutex_unlock(&c->lock);
    return d;
}

/* Waits up to timeout_ms for want completions (condition variable, no sleep). */
static void async_await(async_ctl_t *c, int want, int timeout_ms)
{
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += timeout_ms / 1000;
    pthread_mutex_lock(&c->lock);
    while (c->done < want)
        if (pthread_cond_timedwait(&c->cond, &c->lock, &deadline) == ETIMEDOUT) break;
    int d = c->done;
    pthread_mutex_unlock(&c->lock);
    if (d < want) fail_msg("only %d of %d asynchronous commits completed", d, want);
}

/* Queues n units on s: every 5th expects version 1000 of its stream and must
 * conflict, the others append with STORE_ANY. */
static async_slot_t *async_queue(store_t *s, fixture_t *f, async_ctl_t *ctl, int n)
{
    async_slot_t *slots = calloc((size_t)n, sizeof *slots);
    assert_non_null(slots);
    for (int i = 0; i < n; i++) {
        async_slot_t *sl = &slots[i];
        char stream[64];
        snprintf(stream, sizeof stream, "%s-async-%d", f->ns, i % 4);
        ev_make(&sl->ev, NULL, stream, "Async", "{}", NULL);
        uuid_v7_generate(sl->ev.id);
        sl->conflicting = i % 5 == 4;
        sl->ctl = ctl;
        sl->ap = (store_append_t){.stream = sl->ev.stream,
                                  .expected_version = sl->conflicting ? 1000 : STORE_ANY,
                                  .events = &sl->ev,
                                  .n_events = 1};
        sl->uow = (store_uow_t){.appends = &sl->ap, .n_appends = 1};
        sl->rc = 12345;
        int rc = store_commit_async(s, &sl->uow, &sl->err, async_done, sl);
        if (rc != CHR_OK) fail_msg("store_commit_async #%d not queued: %d %s", i, rc, sl->err.msg);
    }
    return slots;
}

static void async_check(store_t *s, async_slot_t *slots, int n)
{
    for (int i = 0; i < n; i++) {
        async_slot_t *sl = &slots[i];
        if (sl->calls != 1) fail_msg("done of unit %d called %d times", i, sl->calls);
        if (sl->conflicting) {
            if (sl->rc != CHR_ECONFLICT) fail_msg("unit %d: rc %d, want conflict", i, sl->rc);
            assert_true(sl->err.conflict.expected == 1000);
            assert_true(sl->err.msg[0] != '\0');
            assert_absent(s, sl->ev.id);
        } else {
            if (sl->rc != CHR_OK) fail_msg("unit %d: rc %d %s", i, sl->rc, sl->err.msg);
            assert_true(sl->ev.version >= 1 && sl->ev.position >= 1);
            assert_true(sl->ap.version == sl->ev.version);
            event_t got;
            read_one(s, sl->ev.id, &got);
            assert_true(got.position == sl->ev.position && got.version == sl->ev.version);
            event_free(&got);
        }
    }
}

static void async_free(async_slot_t *slots, int n)
{
    for (int i = 0; i < n; i++)
        event_free(&slots[i].ev);
    free(slots);
}

static void t_commit_async(store_t *s, fixture_t *f)
{
    async_ctl_t ctl = {.lock = PTHREAD_MUTEX_INITIALIZER, .done = 0};
    pthread_cond_init(&ctl.cond, NULL);
    int64_t h0 = head_of(s);
    enum { N = 200 };
    async_slot_t *slots = async_queue(s, f, &ctl, N);

    /* A unit that fails validation is refused at once; done is never called. */
    async_slot_t bad;
    memset(&bad, 0, sizeof bad);
    bad.ctl = &ctl;
    ev_make(&bad.ev, NULL, "bad\nstream", "Async", "{}", NULL);
    bad.ap = (store_append_t){
        .stream = "bad\nstream", .expected_version = STORE_ANY, .events = &bad.ev, .n_events = 1};
    bad.uow = (store_uow_t){.appends = &bad.ap, .n_appends = 1};
    CHECK_FAILS(store_commit_async(s, &bad.uow, &bad.err, async_done, &bad), bad.err, CHR_EINVAL);

    async_await(&ctl, N, 30000);
    async_check(s, slots, N);
    assert_int_equal(bad.calls, 0);
    assert_int_equal(async_done_count(&ctl), N);
    event_free(&bad.ev);

    /* Exactly the non-conflicting units were stored, each once. */
    event_list_t list = {0};
    chr_err_t err;
    CHECK_OK(store_read_all(s, h0, 1000, NULL, 0, &list, &err), err);
    assert_int_equal(list.len, N - N / 5);
    event_list_free(&list);
    async_free(slots, N);
    pthread_cond_destroy(&ctl.cond);
}

/* Units expecting a new stream, queued together so that they share
 * batches: the PostgreSQL writer assumes such a stream is new (no version
 * read) and sends an entity-like unit's INSERT with its projection's first
 * statement. Whatever the assumption meets (a stream another instance
 * wrote, a stored id, a failing projection), each unit gets its own answer
 * and the others are unaffected. */
typedef struct ns_unit {
    const char *name; /* stream suffix */
    bool existing;    /* the stream holds 2 events (written by another instance) */
    int apply;        /* 0: none, 1: insert the key, 2: insert then refuse, 3: no statement,
                         4: insert the key of unit 0 (a constraint violation),
                         5: refuse without any statement */
    int replay;       /* 0: a new event id, 1: the stored event again, 2: its id, other data */
    int want;         /* CHR_OK, CHR_ECONFLICT, CHR_EINVAL */
    bool row;         /* its key's row stays */
} ns_unit_t;

static int ns_noop_apply(store_tx_t *tx, void *user, chr_err_t *err)
{
    (void)tx;
    (void)user;
    (void)err;
    return CHR_OK;
}

static int ns_refuse_apply(store_tx_t *tx, void *user, chr_err_t *err)
{
    (void)tx;
    (void)user;
    return chr_fail(err, CHR_EINVAL, "ns", "refused before any statement");
}

static void t_new_stream_units(store_t *s, fixture_t *f)
{
    static const ns_unit_t units[] = {
        {"new0", false, 1, 0, CHR_OK, true},
        {"old1", true, 1, 0, CHR_ECONFLICT, false},
        {"rep2", false, 1, 1, CHR_OK, false},
        {"new3", false, 2, 0, CHR_EINVAL, false},
        {"new4", false, 0, 0, CHR_OK, false},
        {"old5", true, 0, 0, CHR_ECONFLICT, false},
        {"rep6", false, 1, 2, CHR_ECONFLICT, false},
        {"new7", false, 1, 0, CHR_OK, true},
        /* no projection statement: the next unit's may wait (PostgreSQL),
         * so that its failure comes late, with the unit after it */
        {"new8", false, 3, 0, CHR_OK, false},
        {"new9", false, 4, 0, CHR_ECONFLICT, false},
        {"new9", false, 1, 0, CHR_OK, true}, /* the stream new9 failed to create */
        {"old11", true, 5, 0, CHR_EINVAL, false},
        {"new12", false, 3, 0, CHR_OK, false},
        {"new13", false, 4, 0, CHR_ECONFLICT, false}, /* the last unit fails late */
    };
    enum { N = sizeof units / sizeof units[0] };
    chr_err_t err;
    char table[64], create[160];
    snprintf(table, sizeof table, "%s_ns", f->ns);
    snprintf(create, sizeof create, "CREATE TABLE %s (k TEXT PRIMARY KEY)", table);
    struct gc_create_ctx cc = {create, -99};
    store_uow_t cu = {.apply = gc_create_apply, .apply_user = &cc};
    CHECK_OK(store_commit(s, &cu, &err), err);

    /* The existing streams and the stored event come from another instance
     * on PostgreSQL, so that this one's version cache knows nothing. */
    store_options_t o = default_opts();
    store_t *other = is_sqlite(f) ? s : open_extra(f, &o);
    char streams[N][64];
    event_t stored[N];
    memset(stored, 0, sizeof stored);
    for (int i = 0; i < N; i++) {
        sname(streams[i], sizeof streams[i], f, units[i].name);
        if (units[i].existing) {
            append_quick(other, streams[i], "Old");
            append_quick(other, streams[i], "Old");
        }
        if (units[i].replay)
            append_one(other, streams[i], STORE_NO_STREAM, NULL, "Rep", "{\"r\":1}", &stored[i]);
    }
    if (other != s) store_close(other);
    int64_t h0 = head_of(s);

    async_ctl_t ctl = {.lock = PTHREAD_MUTEX_INITIALIZER, .done = 0};
    pthread_cond_init(&ctl.cond, NULL);
    static async_slot_t slots[N];
    static gc_apply_t applies[N];
    static char keys[N][32];
    memset(slots, 0, sizeof slots);
    for (int i = 0; i < N; i++) {
        const ns_unit_t *u = &units[i];
        async_slot_t *sl = &slots[i];
        snprintf(keys[i], sizeof keys[i], "k%d", i);
        if (u->replay)
            ev_make(&sl->ev, stored[i].id, streams[i], "Rep",
                    u->replay == 1 ? "{\"r\":1}" : "{\"r\":2}", NULL);
        else
            ev_make(&sl->ev, NULL, streams[i], "New", "{}", NULL);
        sl->ctl = &ctl;
        sl->rc = 12345;
        sl->ap = (store_append_t){.stream = streams[i],
                                  .expected_version = STORE_NO_STREAM,
                                  .events = &sl->ev,
                                  .n_events = 1};
        applies[i] = (gc_apply_t){.table = table, .key = u->apply == 4 ? keys[0] : keys[i],
                                  .fail = u->apply == 2};
        sl->uow = (store_uow_t){.appends = &sl->ap, .n_appends = 1};
        if (u->apply == 3) {
            sl->uow.apply = ns_noop_apply;
        } else if (u->apply == 5) {
            sl->uow.apply = ns_refuse_apply;
        } else if (u->apply) {
            sl->uow.apply = gc_apply_fn;
            sl->uow.apply_user = &applies[i];
        }
        chr_err_clear(&sl->err);
        int rc = store_commit_async(s, &sl->uow, &sl->err, async_done, sl);
        if (rc != CHR_OK) fail_msg("unit %d not queued: %d %s", i, rc, sl->err.msg);
    }
    async_await(&ctl, N, 60000);

    strmap_t rows = {0};
    char select[160];
    snprintf(select, sizeof select, "SELECT k FROM %s", table);
    void *args[2] = {select, &rows};
    store_uow_t qu = {.apply = gc_query_fn, .apply_user = args};
    CHECK_OK(store_commit(s, &qu, &err), err);
    int stored_new = 0;
    for (int i = 0; i < N; i++) {
        const ns_unit_t *u = &units[i];
        async_slot_t *sl = &slots[i];
        int64_t dummy;
        if (sl->calls != 1) fail_msg("unit %s: done called %d times", u->name, sl->calls);
        /* old11 fails either way: refused by its callback (PostgreSQL, which
         * assumed the stream new) or as a conflict (the version was known) */
        bool either = u->apply == 5 && sl->rc == CHR_ECONFLICT;
        if (sl->rc != u->want && !either)
            fail_msg("unit %s: rc %d (%s), want %d: %s", u->name, sl->rc, chr_status_name(sl->rc),
                     u->want, sl->err.msg);
        /* (a replayed unit's projection work is not asserted: whether it
         * runs depends on how the backend found the replay) */
        if (u->replay != 1 && strmap_get(&rows, keys[i], &dummy) != u->row)
            fail_msg("unit %s: its row is %s", u->name, u->row ? "missing" : "there");
        if (u->existing && u->want == CHR_ECONFLICT) {
            assert_true(sl->err.conflict.expected == 0 && sl->err.conflict.actual == 2);
            assert_int_equal(version_of(s, streams[i]), 2);
        }
        if (u->replay == 1) {
            assert_true(sl->ap.idempotent);
            assert_true(sl->ev.position == stored[i].position && sl->ap.version == 1);
        }
        if (u->replay == 2) assert_string_equal(sl->err.field, "id");
        if (u->want == CHR_OK && !u->replay) {
            stored_new++;
            assert_true(sl->ap.version == 1 && sl->ev.version == 1);
            event_t got;
            read_one(s, sl->ev.id, &got);
            assert_true(got.position == sl->ev.position);
            event_free(&got);
        } else if (!u->replay) {
            if (sl->ev.id[0]) assert_absent(s, sl->ev.id); /* a generated id may be taken back */
            if (!u->existing && strcmp(u->name, "new9") != 0)
                assert_int_equal(version_of(s, streams[i]), 0);
        }
    }
    strmap_free(&rows);
    event_list_t list = {0};
    CHECK_OK(store_read_all(s, h0, 1000, NULL, 0, &list, &err), err);
    assert_int_equal(list.len, (size_t)stored_new);
    event_list_free(&list);

    /* What the failures left behind is right: an existing stream appends at
     * its real version, a refused new stream is still new, a created one
     * is not. */
    expect_ok(s, streams[1], 2, 3);
    expect_ok(s, streams[11], 2, 3); /* its assumed version 0 was not kept */
    expect_conflict(s, streams[5], STORE_NO_STREAM, 2);
    expect_ok(s, streams[3], STORE_NO_STREAM, 1);
    assert_int_equal(version_of(s, streams[9]), 1);
    expect_ok(s, streams[9], 1, 2);
    expect_ok(s, streams[13], STORE_NO_STREAM, 1);
    expect_conflict(s, streams[0], STORE_NO_STREAM, 1);
    expect_ok(s, streams[0], 1, 2);
    for (int i = 0; i < N; i++) {
        event_free(&slots[i].ev);
        event_free(&stored[i]);
    }
    pthread_cond_destroy(&ctl.cond);
}

/* store_close "waits for every queued unit to finish": units queued just
 * before closing all complete, and what they acknowledged is there after a
 * reopen. */
static void t_close_drains_queue(store_t *s, fixture_t *f)
{
    (void)s;
    char url[700];
    store_options_t o = default_opts();
    store_t *q = open_extra_url(f, &o, url);
    async_ctl_t ctl = {.lock = PTHREAD_MUTEX_INITIALIZER, .done = 0};
    pthread_cond_init(&ctl.cond, NULL);
    enum { N = 300 };
    async_slot_t *slots = async_queue(q, f, &ctl, N);
    store_close(q);
    assert_int_equal(async_done_count(&ctl), N); /* all finished before close returned */

    q = open_url(url, &o);
    async_check(q, slots, N);
    store_close(q);
    async_free(slots, N);
    pthread_cond_destroy(&ctl.cond);
}

/* --- waiting and listeners -------------------------------------------------- */

typedef struct waiter {
    store_t *s;
    int64_t after;
    int timeout_ms;
    volatile int started;
    int rc;
    int64_t head;
    int64_t elapsed_ms;
} waiter_t;

static void *wait_main(void *arg)
{
    waiter_t *w = arg;
    __atomic_store_n(&w->started, 1, __ATOMIC_SEQ_CST);
    int64_t t0 = mono_ms();
    w->rc = store_wait(w->s, w->after, w->timeout_ms, &w->head);
    w->elapsed_ms = mono_ms() - t0;
    return NULL;
}

static void t_wait_for_commit(store_t *s, fixture_t *f)
{
    char st[64];
    sname(st, sizeof st, f, "wait");
    int64_t h1 = append_quick(s, st, "T");
    assert_true(head_of(s) == h1);

    /* Already past: returns at once. */
    int64_t h = -1;
    assert_int_equal(store_wait(s, h1 - 1, 0, &h), CHR_OK);
    assert_true(h == h1);
    h = -1;
    assert_int_equal(store_wait(s, 0, 1000, &h), CHR_OK);
    assert_true(h == h1);

    /* Nothing new: times out with CHR_ENOTFOUND after about timeout_ms. */
    int64_t t0 = mono_ms();
    h = -1;
    assert_int_equal(store_wait(s, h1, 150, &h), CHR_ENOTFOUND);
    int64_t waited = mono_ms() - t0;
    assert_true(h == h1);
    if (waited < 140 || waited > 5000) fail_msg("a 150 ms wait took %lld ms", (long long)waited);
    assert_int_equal(store_wait(s, h1, 0, &h), CHR_ENOTFOUND);
    assert_int_equal(store_wait(s, h1 + 10, 20, &h), CHR_ENOTFOUND);

    /* Four waiters, all woken by one commit. */
    enum { W = 4 };
    waiter_t w[W];
    pthread_t th[W];
    for (int i = 0; i < W; i++) {
        memset(&w[i], 0, sizeof w[i]);
        w[i].s = s;
        w[i].after = h1;
        w[i].timeout_ms = i == 0 ? -1 : 20000; /* one waits without a timeout */
        assert_int_equal(pthread_create(&th[i], NULL, wait_main, &w[i]), 0);
    }
    int64_t deadline = mono_ms() + 5000;
    for (int i = 0; i < W; i++)
        while (!__atomic_load_n(&w[i].started, __ATOMIC_SEQ_CST) && mono_ms() < deadline)
            pause_briefly();
    int64_t p2 = append_quick(s, st, "T");
    for (int i = 0; i < W; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < W; i++) {
        if (w[i].rc != CHR_OK) fail_msg("waiter %d returned %d", i, w[i].rc);
        assert_true(w[i].head == p2);
        if (w[i].elapsed_ms > 10000)
            fail_msg("waiter %d woke after %lld ms", i, (long long)w[i].elapsed_ms);
    }
}

typedef struct listener_state {
    pthread_mutex_t lock;
    int calls;
    int64_t last, prev_max;
    int went_backwards;
    void *self;
    int wrong_user;
} listener_state_t;

static listener_state_t g_l1 = {.lock = PTHREAD_MUTEX_INITIALIZER};
static listener_state_t g_l2 = {.lock = PTHREAD_MUTEX_INITIALIZER};

static void on_commit_cb(void *user, int64_t head)
{
    listener_state_t *l = user;
    pthread_mutex_lock(&l->lock);
    if (l->self != l) l->wrong_user++;
    if (head < l->prev_max) l->went_backwards++;
    if (head > l->prev_max) l->prev_max = head;
    l->last = head;
    l->calls++;
    pthread_mutex_unlock(&l->lock);
}

static int listener_calls(listener_state_t *l, int64_t *last)
{
    pthread_mutex_lock(&l->lock);
    int c = l->calls;
    if (last) *last = l->last;
    pthread_mutex_unlock(&l->lock);
    return c;
}

/* Waits (with a deadline) until the listener has seen n calls. */
static void await_calls(listener_state_t *l, int n)
{
    int64_t deadline = mono_ms() + 5000;
    while (listener_calls(l, NULL) < n && mono_ms() < deadline)
        pause_briefly();
    if (listener_calls(l, NULL) < n)
        fail_msg("listener saw %d calls, want %d", listener_calls(l, NULL), n);
}

static void t_on_commit(store_t *s, fixture_t *f)
{
    listener_state_t *ls[2] = {&g_l1, &g_l2};
    for (int i = 0; i < 2; i++) {
        pthread_mutex_lock(&ls[i]->lock);
        ls[i]->calls = 0;
        ls[i]->last = ls[i]->prev_max = 0;
        ls[i]->went_backwards = ls[i]->wrong_user = 0;
        ls[i]->self = ls[i];
        pthread_mutex_unlock(&ls[i]->lock);
        assert_int_equal(store_on_commit(s, on_commit_cb, ls[i]), CHR_OK);
    }
    char st[64];
    sname(st, sizeof st, f, "listen");
    int64_t p1 = append_quick(s, st, "T");
    for (int i = 0; i < 2; i++) {
        await_calls(ls[i], 1);
        int64_t last;
        assert_int_equal(listener_calls(ls[i], &last), 1);
        assert_true(last == p1);
    }

    /* A unit of three events: one call, with the head after all three. */
    event_t evs[3];
    for (int i = 0; i < 3; i++)
        ev_make(&evs[i], NULL, st, "T", "{}", NULL);
    chr_err_t err;
    CHECK_OK(store_append(s, st, 1, evs, 3, NULL, NULL, &err), err);
    for (int i = 0; i < 2; i++) {
        await_calls(ls[i], 2);
        int64_t last;
        assert_int_equal(listener_calls(ls[i], &last), 2);
        assert_true(last == evs[2].position);
    }
    evs_free(evs, 3);

    /* A rejected append commits nothing and calls nobody. */
    event_t ev;
    ev_make(&ev, NULL, st, "T", "{}", NULL);
    CHECK_FAILS(store_append(s, st, 1, &ev, 1, NULL, NULL, &err), err, CHR_ECONFLICT);
    event_free(&ev);
    int64_t p3 = append_quick(s, st, "T"); /* a later commit: calls are in order */
    for (int i = 0; i < 2; i++) {
        await_calls(ls[i], 3);
        int64_t last;
        assert_int_equal(listener_calls(ls[i], &last), 3);
        assert_true(last == p3);
        assert_int_equal(ls[i]->went_backwards, 0);
        assert_int_equal(ls[i]->wrong_user, 0);
    }
}

/* --- concurrency: 8 threads x 5000 appends ---------------------------------- */

enum { CC_THREADS = 8, CC_PER_THREAD = 5000, CC_HOT = 2, CC_STREAMS = CC_HOT + CC_THREADS };

typedef struct ack {
    char id[UUID_STR_LEN + 1];
    int stream; /* index into cc_names */
    int64_t version, position;
    bool seen;
} ack_t;

typedef struct cc_thread {
    store_t *s;
    pthread_barrier_t *start;
    int t;
    char (*names)[64];
    ack_t *acks; /* CC_PER_THREAD, in acknowledgement order */
    int n_acks;
    long conflicts, own_conflicts, errors;
    char first_error[320];
} cc_thread_t;

static void cc_error(cc_thread_t *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void cc_error(cc_thread_t *c, const char *fmt, ...)
{
    if (c->errors++ == 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(c->first_error, sizeof c->first_error, fmt, ap);
        va_end(ap);
    }
}

static void *cc_main(void *arg)
{
    cc_thread_t *c = arg;
    int64_t own_version = 0;
    const int own = CC_HOT + c->t;
    pthread_barrier_wait(c->start);
    for (int i = 0; i < CC_PER_THREAD && c->errors == 0; i++) {
        bool hot = i % 2 == 0;
        int idx = hot ? (i / 2) % CC_HOT : own;
        const char *stream = c->names[idx];
        char id[UUID_STR_LEN + 1] = "";
        if (hot) uuid_v7_generate(id); /* client ids on the racing half */
        char data[48];
        snprintf(data, sizeof data, "{\"t\":%d,\"i\":%d}", c->t, i);
        for (int attempt = 0;; attempt++) {
            if (attempt > 100000) {
                cc_error(c, "thread %d append %d: no progress after 100000 conflicts", c->t, i);
                break;
            }
            chr_err_t err;
            chr_err_clear(&err);
            int64_t expected = own_version;
            if (hot && store_stream_version(c->s, stream, &expected, &err) != CHR_OK) {
                cc_error(c, "stream_version: %s", err.msg);
                break;
            }
            event_t ev;
            if (event_init(&ev, id, stream, "Tick", data, NULL) != CHR_OK) {
                cc_error(c, "out of memory");
                break;
            }
            int64_t v = -1;
            bool idem = true;
            int rc = store_append(c->s, stream, expected, &ev, 1, &v, &idem, &err);
            if (rc == CHR_OK) {
                ack_t *a = &c->acks[c->n_acks++];
                snprintf(a->id, sizeof a->id, "%s", ev.id);
                a->stream = idx;
                a->version = ev.version;
                a->position = ev.position;
                if (idem) cc_error(c, "append %d reported idempotent", i);
                if (v != ev.version || ev.version != expected + 1)
                    cc_error(c, "append %d at expected %lld got version %lld (out %lld)", i,
                             (long long)expected, (long long)ev.version, (long long)v);
                if (hot && strcmp(ev.id, id) != 0) cc_error(c, "id changed: %s", ev.id);
                if (!hot) own_version = ev.version;
                event_free(&ev);
                break;
            }
            event_free(&ev);
            if (rc == CHR_ECONFLICT && hot) {
                c->conflicts++;
                if (err.conflict.expected != expected || err.conflict.actual <= expected)
                    cc_error(c, "conflict details %lld/%lld for expected %lld",
                             (long long)err.conflict.expected, (long long)err.conflict.actual,
                             (long long)expected);
                continue; /* re-read the version and retry */
            }
            if (rc == CHR_ECONFLICT) c->own_conflicts++;
            cc_error(c, "thread %d append %d to %s failed: %d %s", c->t, i, stream, rc, err.msg);
            break;
        }
    }
    return NULL;
}

static void t_concurrency(store_t *s, fixture_t *f)
{
    static char names[CC_STREAMS][64];
    for (int i = 0; i < CC_HOT; i++)
        snprintf(names[i], 64, "%s-hot-%d", f->ns, i);
    for (int t = 0; t < CC_THREADS; t++)
        snprintf(names[CC_HOT + t], 64, "%s-own-%d", f->ns, t);
    int64_t h0 = head_of(s);

    ack_t *acks = calloc(CC_THREADS * CC_PER_THREAD, sizeof *acks);
    assert_non_null(acks);
    cc_thread_t c[CC_THREADS];
    pthread_t th[CC_THREADS];
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, CC_THREADS);
    int64_t t0 = mono_ms();
    for (int t = 0; t < CC_THREADS; t++) {
        memset(&c[t], 0, sizeof c[t]);
        c[t].s = s;
        c[t].start = &start;
        c[t].t = t;
        c[t].names = names;
        c[t].acks = acks + t * CC_PER_THREAD;
        assert_int_equal(pthread_create(&th[t], NULL, cc_main, &c[t]), 0);
    }
    for (int t = 0; t < CC_THREADS; t++)
        pthread_join(th[t], NULL);
    pthread_barrier_destroy(&start);
    int64_t elapsed = mono_ms() - t0;

    long conflicts = 0;
    for (int t = 0; t < CC_THREADS; t++) {
        if (c[t].errors)
            fail_msg("thread %d: %ld errors, first: %s", t, c[t].errors, c[t].first_error);
        assert_int_equal(c[t].own_conflicts, 0);
        assert_int_equal(c[t].n_acks, CC_PER_THREAD);
        conflicts += c[t].conflicts;
        /* Commit order: a thread's later append commits after its earlier one. */
        for (int i = 1; i < c[t].n_acks; i++)
            if (c[t].acks[i].position <= c[t].acks[i - 1].position)
                fail_msg("thread %d: ack %d at position %lld after %lld", t, i,
                         (long long)c[t].acks[i].position, (long long)c[t].acks[i - 1].position);
    }
    print_message("concurrency: %d appends in %lld ms, %ld expected-version conflicts retried\n",
                  CC_THREADS * CC_PER_THREAD, (long long)elapsed, conflicts);
    if (conflicts == 0) fail_msg("no conflicts: the racing appends never raced");

    /* Index acknowledgements by id; no id acknowledged twice, no (stream,
     * version) acknowledged twice. */
    const int total = CC_THREADS * CC_PER_THREAD;
    strmap_t by_id = {0}, by_sv = {0};
    for (int i = 0; i < total; i++) {
        int64_t dummy;
        if (strmap_get(&by_id, acks[i].id, &dummy))
            fail_msg("id %s acknowledged twice", acks[i].id);
        assert_int_equal(strmap_put(&by_id, acks[i].id, i), 0);
        char sv[48];
        snprintf(sv, sizeof sv, "%d:%lld", acks[i].stream, (long long)acks[i].version);
        if (strmap_get(&by_sv, sv, &dummy)) fail_msg("(stream, version) %s acknowledged twice", sv);
        assert_int_equal(strmap_put(&by_sv, sv, i), 0);
    }

    /* read_all: every acknowledged event exactly once, positions strictly
     * increasing, nothing unacknowledged. */
    int64_t after = h0;
    int read = 0;
    chr_err_t err;
    for (;;) {
        event_list_t list = {0};
        CHECK_OK(store_read_all(s, after, 1000, NULL, 0, &list, &err), err);
        if (list.len == 0) break;
        for (size_t k = 0; k < list.len; k++) {
            event_t *e = &list.items[k];
            if (e->position <= after)
                fail_msg("read_all: position %lld after %lld", (long long)e->position,
                         (long long)after);
            after = e->position;
            int64_t idx;
            if (!strmap_get(&by_id, e->id, &idx))
                fail_msg("stored event %s (%s v%lld) was never acknowledged", e->id, e->stream,
                         (long long)e->version);
            ack_t *a = &acks[idx];
            if (a->seen) fail_msg("event %s stored twice", e->id);
            a->seen = true;
            if (strcmp(e->stream, names[a->stream]) != 0 || e->version != a->version ||
                e->position != a->position)
                fail_msg("event %s stored as %s v%lld @%lld, acknowledged as %s v%lld @%lld", e->id,
                         e->stream, (long long)e->version, (long long)e->position, names[a->stream],
                         (long long)a->version, (long long)a->position);
            read++;
        }
        event_list_free(&list);
    }
    assert_int_equal(read, total);
    for (int i = 0; i < total; i++)
        if (!acks[i].seen) fail_msg("acknowledged event %s missing from read_all", acks[i].id);
    assert_true(head_of(s) == after);

    /* Every stream: versions dense 1..n, positions rising with versions, n the
     * number of acknowledgements for it. */
    int per_stream[CC_STREAMS] = {0};
    for (int i = 0; i < total; i++)
        per_stream[acks[i].stream]++;
    for (int k = 0; k < CC_STREAMS; k++) {
        assert_true(version_of(s, names[k]) == per_stream[k]);
        int64_t v = 0, prev_pos = 0;
        for (;;) {
            event_list_t list = {0};
            CHECK_OK(store_read_stream(s, names[k], v + 1, 1000, false, &list, &err), err);
            if (list.len == 0) break;
            for (size_t j = 0; j < list.len; j++) {
                event_t *e = &list.items[j];
                if (e->version != v + 1)
                    fail_msg("%s: version %lld follows %lld", names[k], (long long)e->version,
                             (long long)v);
                if (e->position <= prev_pos)
                    fail_msg("%s: v%lld at position %lld, not after %lld", names[k],
                             (long long)e->version, (long long)e->position, (long long)prev_pos);
                v = e->version;
                prev_pos = e->position;
                char sv[48];
                snprintf(sv, sizeof sv, "%d:%lld", k, (long long)v);
                int64_t idx;
                if (!strmap_get(&by_sv, sv, &idx) || strcmp(acks[idx].id, e->id) != 0)
                    fail_msg("%s v%lld is %s, not the acknowledged event", names[k], (long long)v,
                             e->id);
            }
            event_list_free(&list);
        }
        assert_true(v == per_stream[k]);
    }
    assert_int_equal(per_stream[CC_HOT], CC_PER_THREAD / 2);
    strmap_free(&by_id);
    strmap_free(&by_sv);
    free(acks);
}

/* --- durability: SIGKILL a writing child ------------------------------------ */

enum { DUR_CHILD_THREADS = 4, DUR_STREAMS = 7 };

typedef struct dur_child {
    store_t *s;
    const char *ns;
    int fd;
    int t;
} dur_child_t;

static bool write_all(int fd, const char *buf, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, buf, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return false;
        buf += w;
        n -= (size_t)w;
    }
    return true;
}

/* Child thread: appends forever (1 or 3 events per append), writing each
 * acknowledged id to the pipe only after store_append returned CHR_OK. */
static void *dur_child_main(void *arg)
{
    dur_child_t *d = arg;
    for (long i = 0;; i++) {
        char stream[64];
        snprintf(stream, sizeof stream, "%s-dur-%ld", d->ns, (i + d->t) % DUR_STREAMS);
        size_t n = i % 5 == 4 ? 3 : 1;
        event_t evs[3];
        for (size_t k = 0; k < n; k++) {
            char id[UUID_STR_LEN + 1], data[64];
            uuid_v7_generate(id);
            snprintf(data, sizeof data, "{\"t\":%d,\"i\":%ld,\"k\":%zu}", d->t, i, k);
            if (event_init(&evs[k], id, stream, "Tick", data, NULL) != CHR_OK) _exit(6);
        }
        chr_err_t err;
        int rc = store_append(d->s, stream, STORE_ANY, evs, n, NULL, NULL, &err);
        if (rc != CHR_OK) {
            fprintf(stderr, "durability child: append failed: %d %s\n", rc, err.msg);
            _exit(4);
        }
        for (size_t k = 0; k < n; k++) {
            char line[UUID_STR_LEN + 1];
            memcpy(line, evs[k].id, UUID_STR_LEN);
            line[UUID_STR_LEN] = '\n';
            /* 37 bytes < PIPE_BUF: each line arrives whole. */
            if (!write_all(d->fd, line, sizeof line)) _exit(5);
            event_free(&evs[k]);
        }
    }
    return NULL;
}

static void dur_child(const char *url, const char *ns, int fd)
{
    store_options_t o = default_opts();
    store_t *s = NULL;
    chr_err_t err;
    if (store_open(url, &o, &s, &err) != CHR_OK) {
        fprintf(stderr, "durability child: open failed: %s\n", err.msg);
        _exit(3);
    }
    pthread_t th[DUR_CHILD_THREADS];
    dur_child_t d[DUR_CHILD_THREADS];
    for (int t = 0; t < DUR_CHILD_THREADS; t++) {
        d[t] = (dur_child_t){s, ns, fd, t};
        if (pthread_create(&th[t], NULL, dur_child_main, &d[t]) != 0) _exit(7);
    }
    for (int t = 0; t < DUR_CHILD_THREADS; t++)
        pthread_join(th[t], NULL);
    _exit(0);
}

/* One round: fork a writer, SIGKILL it once kill_at ids were acknowledged,
 * reopen and check every acknowledged id. */
static void durability_round(fixture_t *f, int kill_at, int round)
{
    char url[700], path[600] = "";
    char ns[40];
    snprintf(ns, sizeof ns, "%s-r%d", f->ns, round);
    if (is_sqlite(f)) {
        new_sqlite_path(path, sizeof path);
        snprintf(url, sizeof url, "sqlite:%s", path);
        /* teardown removes it even when this round fails */
        assert_true(f->n_extra < 4);
        snprintf(f->extra[f->n_extra++], sizeof f->extra[0], "%s", path);
    } else {
        snprintf(url, sizeof url, "%s", f->url);
    }

    int fds[2];
    assert_int_equal(pipe(fds), 0);
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        dur_child(url, ns, fds[1]);
        _exit(0);
    }
    close(fds[1]);

    size_t cap = 4096, n = 0;
    char(*ids)[UUID_STR_LEN + 1] = malloc(cap * sizeof *ids);
    assert_non_null(ids);
    char buf[4096];
    size_t have = 0;
    bool killed = false;
    char problem[160] = "";
    int64_t deadline = mono_ms() + 60000;
    while (!problem[0]) {
        if (!killed && (int)n >= kill_at) {
            assert_int_equal(kill(pid, SIGKILL), 0);
            killed = true;
        }
        if (mono_ms() > deadline) {
            snprintf(problem, sizeof problem, "only %zu ids in 60 s", n);
            break;
        }
        struct pollfd pfd = {.fd = fds[0], .events = POLLIN};
        int pr = poll(&pfd, 1, 1000);
        if (pr < 0 && errno == EINTR) continue;
        if (pr == 0) continue;
        ssize_t r = read(fds[0], buf + have, sizeof buf - have);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break; /* EOF: the child is gone */
        have += (size_t)r;
        size_t off = 0;
        while (have - off >= UUID_STR_LEN + 1 && !problem[0]) {
            if (n == cap) {
                void *more = realloc(ids, 2 * cap * sizeof *ids);
                if (!more) {
                    snprintf(problem, sizeof problem, "out of memory");
                    break;
                }
                ids = more;
                cap *= 2;
            }
            memcpy(ids[n], buf + off, UUID_STR_LEN);
            ids[n][UUID_STR_LEN] = '\0';
            if (buf[off + UUID_STR_LEN] != '\n' || !uuid_is_valid(ids[n]))
                snprintf(problem, sizeof problem, "malformed line from the child");
            n++;
            off += UUID_STR_LEN + 1;
        }
        memmove(buf, buf + off, have - off);
        have -= off;
    }
    if (!killed) kill(pid, SIGKILL); /* never leave the writer running */
    close(fds[0]);
    int status = 0;
    pid_t waited = waitpid(pid, &status, 0);
    if (!problem[0] && (!killed || !WIFSIGNALED(status) || WTERMSIG(status) != SIGKILL))
        snprintf(problem, sizeof problem, "the child ended by itself (status 0x%x) after %zu ids",
                 status, n);
    if (problem[0]) {
        free(ids);
        fail_msg("durability round %d: %s", round, problem);
    }
    assert_int_equal(waited, pid);
    assert_true(n >= (size_t)kill_at);

    /* Reopen: every acknowledged id is there. */
    store_options_t o = default_opts();
    store_t *s = open_url(url, &o);
    for (size_t i = 0; i < n; i++) {
        event_t ev;
        memset(&ev, 0, sizeof ev);
        chr_err_t err;
        chr_err_clear(&err);
        int rc = store_read_event(s, ids[i], &ev, &err);
        if (rc != CHR_OK)
            fail_msg("durability round %d (kill after %d): acknowledged id #%zu %s lost (%d %s)",
                     round, kill_at, i, ids[i], rc, err.msg);
        assert_string_equal(ev.type, "Tick");
        event_free(&ev);
    }
    /* Streams are dense and hold at most the in-flight appends beyond the
     * acknowledged ones. */
    int64_t stored = 0;
    for (int k = 0; k < DUR_STREAMS; k++) {
        char stream[64];
        snprintf(stream, sizeof stream, "%s-dur-%d", ns, k);
        int64_t v = version_of(s, stream);
        event_list_t list = {0};
        chr_err_t err;
        CHECK_OK(store_read_stream(s, stream, 0, (size_t)v + 10, false, &list, &err), err);
        assert_true((int64_t)list.len == v);
        for (size_t j = 0; j < list.len; j++)
            assert_true(list.items[j].version == (int64_t)j + 1);
        event_list_free(&list);
        stored += v;
    }
    if (stored < (int64_t)n || stored > (int64_t)n + DUR_CHILD_THREADS * 3)
        fail_msg("durability round %d: %lld events stored for %zu acknowledged", round,
                 (long long)stored, n);
    /* The store takes writes again. */
    char stream0[64];
    snprintf(stream0, sizeof stream0, "%s-dur-0", ns);
    expect_ok(s, stream0, version_of(s, stream0), version_of(s, stream0) + 1);
    print_message("durability round %d: killed after %d, %zu acknowledged, %lld stored\n", round,
                  kill_at, n, (long long)stored);
    store_close(s);
    free(ids);
    if (path[0]) remove_db(path);
}

static void t_durability(store_t *s, fixture_t *f)
{
    (void)s; /* this test must fork before any store thread exists */
    unsigned seed = (unsigned)time(NULL) ^ (unsigned)getpid();
    const char *env_seed = getenv("CHRONICLE_TEST_SEED");
    if (env_seed && *env_seed) seed = (unsigned)strtoul(env_seed, NULL, 10);
    srand(seed);
    int random_point = 1 + rand() % 2000;
    print_message("durability: seed %u (CHRONICLE_TEST_SEED), random kill point %d\n", seed,
                  random_point);
    const int points[] = {50, 500, 3000, random_point};
    for (int r = 0; r < 4; r++)
        durability_round(f, points[r], r);
}

/* --- bad input ------------------------------------------------------------- */

/* The append must fail with want, name a field containing field_part, and
 * write nothing. */
static void expect_rejected(store_t *s, const char *stream, int64_t expected, event_t *evs,
                            size_t n, int want, const char *field_part)
{
    int64_t h = head_of(s);
    chr_err_t err;
    chr_err_clear(&err);
    int rc = store_append(s, stream, expected, evs, n, NULL, NULL, &err);
    if (rc != want)
        fail_msg("append to \"%s\" returned %d (%s), want %d (%s): %s", stream ? stream : "(null)",
                 rc, chr_status_name(rc), want, chr_status_name(want), err.msg);
    assert_int_equal(err.code, want);
    if (err.msg[0] == '\0') fail_msg("no message for a rejected append");
    if (field_part && !strstr(err.field, field_part))
        fail_msg("err.field \"%s\" does not contain \"%s\" (msg: %s)", err.field, field_part,
                 err.msg);
    assert_true(head_of(s) == h);
    for (size_t i = 0; i < n; i++)
        if (evs[i].id[0] && uuid_is_valid(evs[i].id)) assert_absent(s, evs[i].id);
}

static void reject_one(store_t *s, const char *stream, const char *type, const char *data,
                       const char *meta, int want, const char *field_part)
{
    event_t ev;
    char id[UUID_STR_LEN + 1];
    uuid_v7_generate(id);
    ev_make(&ev, id, stream, type, data, meta);
    expect_rejected(s, stream, STORE_ANY, &ev, 1, want, field_part);
    event_free(&ev);
}

static void t_bad_input(store_t *s, fixture_t *f)
{
    char st[64];
    sname(st, sizeof st, f, "bad");
    int64_t h0 = head_of(s);
    chr_err_t err;

    /* Stream names. */
    char long_name[300];
    memset(long_name, 's', 256);
    long_name[256] = '\0';
    const char *bad_streams[] = {"",     long_name, "a\nb",         "a\x7f",    "a\xc2\x85",
                                 "\xff", "s-\xc3",  "\xed\xa0\x80", "\xc0\xaf", "\xf4\x90\x80\x80"};
    for (size_t i = 0; i < sizeof bad_streams / sizeof bad_streams[0]; i++)
        reject_one(s, bad_streams[i], "T", "{}", NULL, CHR_EINVAL, "stream");
    reject_one(s, NULL, "T", "{}", NULL, CHR_EINVAL, "stream");

    /* Types. */
    char long_type[300];
    memset(long_type, 't', 256);
    long_type[256] = '\0';
    const char *bad_types[] = {"", long_type, "T\xff", "T\x01", "T\xc2\x9f", "\xed\xbf\xbf"};
    for (size_t i = 0; i < sizeof bad_types / sizeof bad_types[0]; i++)
        reject_one(s, st, bad_types[i], "{}", NULL, CHR_EINVAL, "type");

    /* Data that is not JSON, or not UTF-8. */
    const char *bad_data[] = {"{",        "",
                              "{'a':1}",  "[1,]",
                              "nul",      "{} {}",
                              "{\"a\":}", "{\"a\":\"\xc3\x28\"}",
                              "\"\xff\"", "{\"a\":\"\xed\xa0\x80\"}"};
    for (size_t i = 0; i < sizeof bad_data / sizeof bad_data[0]; i++)
        reject_one(s, st, "T", bad_data[i], NULL, CHR_EINVAL, "data");

    /* Metadata that is not JSON: see t_bad_metadata for non-objects. */
    reject_one(s, st, "T", "{}", "{", CHR_EINVAL, "metadata");
    reject_one(s, st, "T", "{}", "{\"a\":\"\xff\"}", CHR_EINVAL, "metadata");

    /* Ids that are not UUIDs. */
    const char *bad_ids[] = {"123", "zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz",
                             "0190a1b2c3d47e5f8a6b7c8d9e0f1a2b0000",
                             "0190a1b2-c3d4-7e5f-8a6b-7c8d9e0f1a2"};
    for (size_t i = 0; i < sizeof bad_ids / sizeof bad_ids[0]; i++) {
        event_t ev;
        ev_make(&ev, bad_ids[i], st, "T", "{}", NULL);
        expect_rejected(s, st, STORE_ANY, &ev, 1, CHR_EINVAL, "id");
        event_free(&ev);
    }

    /* The same id twice in one append. */
    char dup[UUID_STR_LEN + 1];
    uuid_v7_generate(dup);
    event_t two[2];
    ev_make(&two[0], dup, st, "T", "{}", NULL);
    ev_make(&two[1], dup, st, "T", "{}", NULL);
    expect_rejected(s, st, STORE_ANY, two, 2, CHR_EINVAL, NULL);
    evs_free(two, 2);

    /* The same id in two appends of one unit (different streams). */
    char other[64];
    sname(other, sizeof other, f, "bad-other");
    event_t e1, e2;
    ev_make(&e1, dup, st, "T", "{}", NULL);
    ev_make(&e2, dup, other, "T", "{}", NULL);
    store_append_t aps[2] = {
        {.stream = st, .expected_version = STORE_ANY, .events = &e1, .n_events = 1},
        {.stream = other, .expected_version = STORE_ANY, .events = &e2, .n_events = 1},
    };
    store_uow_t uow = {.appends = aps, .n_appends = 2};
    chr_err_clear(&err);
    int rc = store_commit(s, &uow, &err);
    if (rc == CHR_OK) fail_msg("one id stored in two streams by one unit");
    assert_true(err.msg[0] != '\0');
    assert_absent(s, dup);
    assert_true(head_of(s) == h0);
    event_free(&e1);
    event_free(&e2);

    /* No events; nothing to commit; a mode that does not exist. */
    event_t ev;
    ev_make(&ev, NULL, st, "T", "{}", NULL);
    expect_rejected(s, st, STORE_ANY, &ev, 0, CHR_EINVAL, "events");
    store_uow_t empty = {0};
    CHECK_FAILS(store_commit(s, &empty, &err), err, CHR_EINVAL);
    expect_rejected(s, st, -7, &ev, 1, CHR_EINVAL, "expected_version");
    event_free(&ev);

    /* Oversized events under the default limit of 1 MiB. */
    size_t max = EVENT_DEFAULT_MAX_BYTES;
    char *big = malloc(max + 16);
    assert_non_null(big);
    /* type "T" (1) + data (max) = max + 1 bytes: too big. */
    big[0] = '"';
    memset(big + 1, 'x', max - 2);
    big[max - 1] = '"';
    big[max] = '\0';
    reject_one(s, st, "T", big, NULL, CHR_ETOOBIG, "events[0]");
    /* The second of two events too big: the first is not written either. */
    event_t pair[2];
    ev_make(&pair[0], NULL, st, "T", "{}", NULL);
    uuid_v7_generate(pair[0].id);
    ev_make(&pair[1], NULL, st, "T", big, NULL);
    expect_rejected(s, st, STORE_ANY, pair, 2, CHR_ETOOBIG, "events[1]");
    evs_free(pair, 2);
    /* Metadata counts: data + metadata together over the limit. */
    big[max / 2] = '"';
    big[max / 2 + 1] = '\0';
    char *meta = malloc(max / 2 + 32);
    assert_non_null(meta);
    snprintf(meta, max / 2 + 32, "{\"m\":\"%.*s\"}", (int)(max / 2), big + 1);
    reject_one(s, st, "T", big, meta, CHR_ETOOBIG, "events[0]");
    free(meta);
    /* Exactly at the limit: type (1) + data (max - 1) is accepted and read back. */
    big[0] = '"';
    memset(big + 1, 'y', max - 3);
    big[max - 2] = '"';
    big[max - 1] = '\0';
    assert_int_equal(strlen(big) + 1, max);
    assert_true(head_of(s) == h0);
    event_t at_limit;
    append_one(s, st, STORE_NO_STREAM, NULL, "T", big, &at_limit);
    event_t got;
    read_one(s, at_limit.id, &got);
    assert_int_equal(strlen(got.data), max - 1);
    assert_true(json_text_equal(got.data, big));
    event_free(&got);
    event_free(&at_limit);
    free(big);

    /* The longest valid stream name works. */
    long_name[255] = '\0';
    int64_t v = -1;
    event_t okev;
    ev_make(&okev, NULL, long_name, "T", "{}", NULL);
    CHECK_OK(store_append(s, long_name, STORE_ANY, &okev, 1, &v, NULL, &err), err);
    assert_true(v >= 1);
    event_free(&okev);

    /* Read functions reject bad input too. */
    event_list_t list = {0};
    CHECK_FAILS(store_read_stream(s, "\xff", 0, 10, false, &list, &err), err, CHR_EINVAL);
    int64_t x;
    CHECK_FAILS(store_stream_version(s, "", &x, &err), err, CHR_EINVAL);
    CHECK_FAILS(store_stream_version(s, "a\xc2\x85", &x, &err), err, CHR_EINVAL);
    event_t none;
    memset(&none, 0, sizeof none);
    CHECK_FAILS(store_read_event(s, "x", &none, &err), err, CHR_EINVAL);
    CHECK_FAILS(store_read_event(s, NULL, &none, &err), err, CHR_EINVAL);

    /* After all of that, exactly the two valid appends were stored. */
    CHECK_OK(store_read_all(s, h0, 100, NULL, 0, &list, &err), err);
    assert_int_equal(list.len, 2);
    event_list_free(&list);
}

/* Metadata must be a JSON object (event.h); nothing is written otherwise. */
static void t_bad_metadata(store_t *s, fixture_t *f)
{
    char st[64];
    sname(st, sizeof st, f, "bad-meta");
    const char *bad_meta[] = {"\"x\"", "42", "null", "true", "[1]", "[]", "{\"a\":1} x"};
    for (size_t i = 0; i < sizeof bad_meta / sizeof bad_meta[0]; i++) {
        int64_t h = head_of(s);
        event_t ev;
        ev_make(&ev, NULL, st, "T", "{}", bad_meta[i]);
        uuid_v7_generate(ev.id);
        chr_err_t err;
        chr_err_clear(&err);
        int rc = store_append(s, st, STORE_ANY, &ev, 1, NULL, NULL, &err);
        if (rc != CHR_EINVAL)
            fail_msg("metadata '%s' gave %d (%s), want CHR_EINVAL; %lld events written",
                     bad_meta[i], rc, chr_status_name(rc), (long long)(head_of(s) - h));
        assert_non_null(strstr(err.field, "metadata"));
        assert_true(err.msg[0] != '\0');
        assert_true(head_of(s) == h);
        event_free(&ev);
    }
    assert_int_equal(version_of(s, st), 0);
}

static void t_small_event_limit(store_t *s, fixture_t *f)
{
    (void)s;
    store_options_t o = default_opts();
    o.max_event_bytes = 256;
    store_t *small = open_extra(f, &o);
    char st[64];
    sname(st, sizeof st, f, "small");
    int64_t h = head_of(small);

    /* type "Ev" (2) + data (254) = 256: accepted. */
    char data[300];
    data[0] = '"';
    memset(data + 1, 'a', 252);
    data[253] = '"';
    data[254] = '\0';
    event_t ev;
    append_one(small, st, STORE_ANY, NULL, "Ev", data, &ev);
    event_free(&ev);
    h = head_of(small);

    /* 257: too big, and nothing is written. */
    data[253] = 'a';
    data[254] = '"';
    data[255] = '\0';
    char id[UUID_STR_LEN + 1];
    uuid_v7_generate(id);
    ev_make(&ev, id, st, "Ev", data, NULL);
    chr_err_t err;
    CHECK_FAILS(store_append(small, st, STORE_ANY, &ev, 1, NULL, NULL, &err), err, CHR_ETOOBIG);
    assert_non_null(strstr(err.field, "events[0]"));
    assert_non_null(strstr(err.msg, "256"));
    event_free(&ev);
    assert_absent(small, id);
    assert_true(head_of(small) == h);

    /* Small data, but metadata pushes it over. */
    char meta[300];
    memset(meta, 0, sizeof meta);
    snprintf(meta, sizeof meta, "{\"m\":\"%0250d\"}", 0);
    ev_make(&ev, NULL, st, "Ev", "{}", meta);
    CHECK_FAILS(store_append(small, st, STORE_ANY, &ev, 1, NULL, NULL, &err), err, CHR_ETOOBIG);
    event_free(&ev);
    assert_true(head_of(small) == h);
    assert_int_equal(version_of(small, st), 1);
    store_close(small);
}

/* --- opening, reopening, migrations (SQLite files) -------------------------- */

static void t_open_and_reopen(store_t *s, fixture_t *f)
{
    (void)s;
    chr_err_t err;
    store_t *out = NULL;
    store_options_t o = default_opts();
    CHECK_FAILS(store_open("mysql://localhost/x", &o, &out, &err), err, CHR_EINVAL);
    assert_null(out);
    CHECK_FAILS(store_open("sqlite:", &o, &out, &err), err, CHR_EINVAL);
    assert_null(out);
    if (!is_sqlite(f)) {
        skip();
        return;
    }

    /* A directory that does not exist. */
    char path[700];
    snprintf(path, sizeof path, "sqlite:%s/no-such-dir-%ld/sub/x.db", g_tmpdir, (long)getpid());
    chr_err_clear(&err);
    int rc = store_open(path, &o, &out, &err);
    assert_int_not_equal(rc, CHR_OK);
    assert_true(err.msg[0] != '\0');
    assert_null(out);

    /* read_only never creates a file. */
    char ro_path[600];
    new_sqlite_path(ro_path, sizeof ro_path);
    snprintf(path, sizeof path, "sqlite:%s", ro_path);
    store_options_t ro = {.read_only = true};
    chr_err_clear(&err);
    rc = store_open(path, &ro, &out, &err);
    if (rc == CHR_OK) {
        store_close(out);
        out = NULL;
        remove_db(ro_path);
        fail_msg("read_only open of a missing file succeeded");
    }
    assert_true(err.msg[0] != '\0');
    assert_int_not_equal(access(ro_path, F_OK), 0);

    /* Without migrate, a new database is either refused with a message that
     * says to migrate, or opened with its migrations listed as pending. */
    char raw_path[600];
    assert_true(f->n_extra < 4);
    new_sqlite_path(f->extra[f->n_extra], sizeof f->extra[0]);
    snprintf(raw_path, sizeof raw_path, "%s", f->extra[f->n_extra++]);
    snprintf(path, sizeof path, "sqlite:%s", raw_path);
    store_options_t nomig = {.migrate = false};
    store_t *raw = NULL;
    chr_err_clear(&err);
    rc = store_open(path, &nomig, &raw, &err);
    store_migration_info_t *m = NULL;
    size_t n = 0;
    if (rc != CHR_OK) {
        assert_null(raw);
        if (!strstr(err.msg, "migrat"))
            fail_msg("refusal does not mention migrations: %s", err.msg);
        raw = open_url(path, &o); /* migrate = true */
    } else {
        CHECK_OK(store_migrations(raw, &m, &n, &err), err);
        assert_true(n >= 1);
        for (size_t i = 0; i < n; i++) {
            assert_false(m[i].applied);
            assert_true(m[i].applied_at == 0);
        }
        free(m);
        m = NULL;
        CHECK_OK(store_migrate(raw, &err), err);
    }
    CHECK_OK(store_migrations(raw, &m, &n, &err), err);
    assert_true(n >= 1);
    for (size_t i = 0; i < n; i++)
        assert_true(m[i].applied && m[i].applied_at > 0);
    free(m);

    /* Data survives close and reopen; the reopened store knows its head. */
    char st[64];
    sname(st, sizeof st, f, "reopen");
    event_t evs[3];
    for (int i = 0; i < 3; i++)
        ev_make(&evs[i], NULL, st, "T", "{\"r\":1}", NULL);
    CHECK_OK(store_append(raw, st, STORE_NO_STREAM, evs, 3, NULL, NULL, &err), err);
    int64_t h = head_of(raw);
    store_close(raw);

    raw = open_url(path, &o);
    assert_true(head_of(raw) == h);
    assert_int_equal(version_of(raw, st), 3);
    for (int i = 0; i < 3; i++) {
        event_t got;
        read_one(raw, evs[i].id, &got);
        assert_event_equal(&got, &evs[i], true);
        event_free(&got);
    }
    int64_t seen = -1;
    assert_int_equal(store_wait(raw, h - 1, 0, &seen), CHR_OK);
    assert_true(seen == h);
    expect_ok(raw, st, 3, 4);
    h = head_of(raw);
    store_close(raw);

    /* read_only on an existing store: reads work. */
    raw = open_url(path, &ro);
    assert_true(head_of(raw) == h);
    assert_int_equal(version_of(raw, st), 4);
    store_stats_t stats;
    CHECK_OK(store_stats(raw, &stats, &err), err);
    assert_true(stats.events == 4);
    event_t rev;
    ev_make(&rev, NULL, st, "T", "{}", NULL);
    chr_err_clear(&err);
    rc = store_append(raw, st, STORE_ANY, &rev, 1, NULL, NULL, &err);
    event_free(&rev);
    if (rc == CHR_OK) fail_msg("append to a read-only store succeeded");
    assert_true(err.msg[0] != '\0');
    assert_true(head_of(raw) == h);
    store_close(raw);
    evs_free(evs, 3);
}

/* What `chronicle migrate status` does on a database that exists but was
 * never migrated (here: an empty file, which SQLite treats as an empty
 * database): open read-only and list every migration as pending. */
static void t_migrations_status_unmigrated(store_t *s, fixture_t *f)
{
    (void)s;
    if (!is_sqlite(f)) {
        skip();
        return;
    }
    assert_true(f->n_extra < 4);
    char *path = f->extra[f->n_extra++];
    new_sqlite_path(path, sizeof f->extra[0]);
    int fd = open(path, O_CREAT | O_WRONLY | O_TRUNC, 0644);
    assert_true(fd >= 0);
    close(fd);
    char url[700];
    snprintf(url, sizeof url, "sqlite:%s", path);
    store_options_t ro = {.read_only = true};
    store_t *st = open_url(url, &ro);
    store_migration_info_t *m = NULL;
    size_t n = 0;
    chr_err_t err;
    chr_err_clear(&err);
    int rc = store_migrations(st, &m, &n, &err);
    if (rc != CHR_OK) {
        store_close(st);
        fail_msg("store_migrations on an unmigrated database failed: %d %s", rc, err.msg);
    }
    assert_true(n >= 1);
    for (size_t i = 0; i < n; i++) {
        assert_false(m[i].applied);
        assert_true(m[i].applied_at == 0);
    }
    free(m);
    store_close(st);
}

/* --- wiring ----------------------------------------------------------------- */


/* --- leases ------------------------------------------------------------------ */

/* A lease name unique to this test run on a shared PostgreSQL ("a" or "b"
 * on a fresh SQLite file, whose lease files teardown removes). */
static void lease_name(char *out, size_t size, const fixture_t *f, const char *which)
{
    if (is_sqlite(f))
        snprintf(out, size, "%s", which);
    else
        snprintf(out, size, "%s-%s", f->ns, which);
}

static int lease_try(store_t *s, const char *name, store_lease_t **out)
{
    chr_err_t err;
    chr_err_clear(&err);
    int rc = store_lease_try(s, name, out, &err);
    if (rc == CHR_OK) assert_non_null(*out);
    else assert_null(*out);
    return rc;
}

static void t_leases(store_t *s, fixture_t *f)
{
    char a[64], b[64];
    lease_name(a, sizeof a, f, "a");
    lease_name(b, sizeof b, f, "b");
    store_lease_t *la = NULL, *la2 = NULL, *lb = NULL;
    assert_int_equal(lease_try(s, a, &la), CHR_OK);
    assert_true(store_lease_check(la));
    /* held: by this process too, and through another store on the same database */
    assert_int_equal(lease_try(s, a, &la2), CHR_ECONFLICT);
    store_options_t o = default_opts();
    char url[700];
    store_t *other = NULL;
    if (is_sqlite(f)) {
        snprintf(url, sizeof url, "sqlite:%s", f->path);
        other = open_url(url, &o);
    } else {
        other = open_extra(f, &o);
    }
    assert_int_equal(lease_try(other, a, &la2), CHR_ECONFLICT);
    /* another name is independent */
    assert_int_equal(lease_try(other, b, &lb), CHR_OK);
    /* released: the other store takes it */
    store_lease_release(la);
    assert_int_equal(lease_try(other, a, &la2), CHR_OK);
    assert_true(store_lease_check(la2));
    assert_int_equal(lease_try(s, a, &la), CHR_ECONFLICT);
    store_lease_release(la2);
    store_lease_release(lb);
    store_lease_release(NULL);
    store_close(other);

    chr_err_t err;
    store_lease_t *bad = NULL;
    CHECK_FAILS(store_lease_try(s, "", &bad, &err), err, CHR_EINVAL);
    CHECK_FAILS(store_lease_try(s, "Upper", &bad, &err), err, CHR_EINVAL);
    CHECK_FAILS(store_lease_try(s, "a b", &bad, &err), err, CHR_EINVAL);
    char longname[80];
    memset(longname, 'x', 64);
    longname[64] = '\0';
    CHECK_FAILS(store_lease_try(s, longname, &bad, &err), err, CHR_EINVAL);
    assert_null(bad);
}

/* A process holding a lease dies: another takes it over without any help
 * from the dead one. Forks, so no store may exist in this process. */
static void leases_takeover(void **state)
{
    fixture_t *f = *state;
    char name[64];
    lease_name(name, sizeof name, f, "a");
    int ready[2], hold[2];
    assert_int_equal(pipe(ready), 0);
    assert_int_equal(pipe(hold), 0);
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(ready[0]);
        close(hold[1]);
        store_options_t o = default_opts();
        store_t *s = NULL;
        store_lease_t *l = NULL;
        chr_err_t err;
        if (store_open(f->url, &o, &s, &err) != CHR_OK) _exit(3);
        if (store_lease_try(s, name, &l, &err) != CHR_OK) _exit(4);
        if (!write_all(ready[1], "y", 1)) _exit(5);
        char c;
        while (read(hold[0], &c, 1) < 0 && errno == EINTR) {
        }
        _exit(0); /* never reached in the test: the parent kills us first */
    }
    close(ready[1]);
    close(hold[0]);
    char c = 0;
    assert_int_equal(read(ready[0], &c, 1), 1);
    store_options_t o = default_opts();
    f->s = open_url(f->url, &o);
    store_lease_t *l = NULL;
    assert_int_equal(lease_try(f->s, name, &l), CHR_ECONFLICT);
    assert_int_equal(kill(pid, SIGKILL), 0);
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFSIGNALED(status));
    /* The server notices the dead session by itself; poll with a deadline. */
    int64_t deadline = mono_ms() + 10000;
    int rc;
    while ((rc = lease_try(f->s, name, &l)) == CHR_ECONFLICT && mono_ms() < deadline)
        pause_briefly();
    assert_int_equal(rc, CHR_OK);
    assert_true(store_lease_check(l));
    store_lease_release(l);
    close(ready[0]);
    close(hold[1]);
}

#define STORE_TEST(name)                                                                           \
    static void name(void **state)                                                                 \
    {                                                                                              \
        fixture_t *f = *state;                                                                     \
        t_##name(f->s, f);                                                                         \
    }

STORE_TEST(round_trip)
STORE_TEST(read_stream)
STORE_TEST(read_all)
STORE_TEST(versions_head_stats)
STORE_TEST(expected_versions)
STORE_TEST(idempotent_reappend)
STORE_TEST(idempotent_version_after)
STORE_TEST(same_id_different_content)
STORE_TEST(atomic_multi_event)
STORE_TEST(apply_projection)
STORE_TEST(group_commit_isolation)
STORE_TEST(commit_async)
STORE_TEST(new_stream_units)
STORE_TEST(close_drains_queue)
STORE_TEST(wait_for_commit)
STORE_TEST(on_commit)
STORE_TEST(bad_input)
STORE_TEST(bad_metadata)
STORE_TEST(small_event_limit)
STORE_TEST(open_and_reopen)
STORE_TEST(migrations_status_unmigrated)
STORE_TEST(concurrency)
STORE_TEST(durability)
STORE_TEST(leases)

int main(void)
{
    if (sodium_init() < 0) {
        fprintf(stderr, "sodium_init failed\n");
        return 1;
    }
    g_env_url = getenv("CHRONICLE_TEST_STORE_URL");
    if (g_env_url && !*g_env_url) g_env_url = NULL;
    const char *tmp = getenv("CHRONICLE_TEST_TMP");
    snprintf(g_tmpdir, sizeof g_tmpdir, "%s/store-%ld",
             tmp && *tmp ? tmp : "/tmp/chronicle-test-tmp", (long)getpid());
    mkdir_p(g_tmpdir);

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup_store, teardown)
    const struct CMUnitTest tests[] = {
        T(round_trip),
        T(read_stream),
        T(read_all),
        T(versions_head_stats),
        T(expected_versions),
        T(idempotent_reappend),
        T(idempotent_version_after),
        T(same_id_different_content),
        T(atomic_multi_event),
        T(apply_projection),
        T(group_commit_isolation),
        T(commit_async),
        T(new_stream_units),
        T(close_drains_queue),
        T(wait_for_commit),
        T(on_commit),
        T(bad_input),
        T(bad_metadata),
        T(small_event_limit),
        T(open_and_reopen),
        T(migrations_status_unmigrated),
        T(concurrency),
        T(leases),
        /* forks: no store (and so no store thread) may exist in this process */
        cmocka_unit_test_setup_teardown(durability, setup_nostore, teardown),
        cmocka_unit_test_setup_teardown(leases_takeover, setup_nostore, teardown),
    };
#undef T
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    rmdir(g_tmpdir);
    return failed;
}
