/*
 * consumer_store.c - consumers' checkpoints and dead letters in the store;
 * see consumer_store.h. The SQL is the same on both backends but for the
 * schema: chronicle's own tables live in schema "events" on PostgreSQL and
 * in the main database on SQLite. Every value is a bound parameter.
 */
#include "worker/consumer_store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/timefmt.h"

#define SQL_MAX 640
#define STMT_PARAMS 9

/* The schema prefix of chronicle's own tables on s. */
static const char *pfx(const store_t *s)
{
    return strcmp(s->ops->name, "postgres") == 0 ? "events." : "";
}

/* One statement of a unit: its SQL (with the prefix filled in), its
 * parameters and, after the commit, the rows it changed. */
typedef struct stmt {
    char sql[SQL_MAX];
    store_val_t p[STMT_PARAMS];
    size_t n;
    int64_t changes;
} stmt_t;

typedef struct unit {
    stmt_t *st;
    size_t n;
    bool guard; /* when the first statement changes no row, skip the rest */
} unit_t;

static int apply_stmts(store_tx_t *tx, void *user, chr_err_t *err)
{
    unit_t *u = user;
    for (size_t i = 0; i < u->n; i++) {
        int rc = store_tx_exec(tx, u->st[i].sql, u->st[i].p, u->st[i].n, &u->st[i].changes, err);
        if (rc) return rc;
        if (i == 0 && u->guard && u->st[0].changes == 0) break;
    }
    return CHR_OK;
}

/* Commits st[0..n) as one unit of work through the store's writer. */
static int run(store_t *s, stmt_t *st, size_t n, bool guard, chr_err_t *err)
{
    unit_t u = {st, n, guard};
    store_uow_t uow = {.apply = apply_stmts, .apply_user = &u};
    return store_commit(s, &uow, err);
}

/* Formats the SQL of st with the schema prefix substituted for every %s. */
static void sql(stmt_t *st, const store_t *s, const char *fmt)
    __attribute__((format(printf, 3, 0)));
static void sql(stmt_t *st, const store_t *s, const char *fmt)
{
    const char *p = pfx(s);
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
    snprintf(st->sql, sizeof st->sql, fmt, p, p);
#pragma GCC diagnostic pop
}

static store_val_t vi(int64_t i)
{
    return (store_val_t){.type = SV_INT, .i = i};
}

static store_val_t vs(const char *s)
{
    return s ? (store_val_t){.type = SV_TEXT, .s = s} : (store_val_t){.type = SV_NULL};
}

static int64_t val_int(const store_val_t *v)
{
    if (v->type == SV_INT) return v->i;
    if (v->type == SV_REAL) return (int64_t)v->r;
    if (v->type == SV_TEXT && v->s) {
        long long x = 0;
        if (sscanf(v->s, "%lld", &x) == 1) return x;
    }
    return 0;
}

int consumer_store_ensure(store_t *s, const char *name, chr_err_t *err)
{
    stmt_t st = {.n = 2, .p = {vs(name), vi(time_now_us())}};
    sql(&st, s,
        "INSERT INTO %sconsumers (name, updated_at) VALUES (?, ?) ON CONFLICT (name) DO NOTHING");
    return run(s, &st, 1, false, err);
}

static int state_row(void *user, const store_val_t *v, size_t n)
{
    consumer_state_t *out = user;
    if (n < 7) return 1;
    out->position = val_int(&v[0]);
    out->epoch = val_int(&v[1]);
    out->delivered = val_int(&v[2]);
    snprintf(out->last_error, sizeof out->last_error, "%s",
             v[3].type == SV_TEXT && v[3].s ? v[3].s : "");
    out->last_error_at = val_int(&v[4]);
    out->updated_at = val_int(&v[5]);
    out->dead_letters = val_int(&v[6]);
    out->updated_at = out->updated_at ? out->updated_at : 1; /* marks "found" */
    return 0;
}

int consumer_store_get(store_t *s, const char *name, consumer_state_t *out, chr_err_t *err)
{
    memset(out, 0, sizeof *out);
    stmt_t st = {.n = 1, .p = {vs(name)}};
    sql(&st, s,
        "SELECT position, epoch, delivered, last_error, last_error_at, updated_at, "
        "(SELECT COUNT(*) FROM %sconsumer_dead_letters d WHERE d.consumer = c.name) "
        "FROM %sconsumers c WHERE c.name = ?");
    int rc = store_query(s, st.sql, st.p, st.n, state_row, out, err);
    if (rc) return rc;
    if (!out->updated_at) return chr_fail(err, CHR_ENOTFOUND, "name", "no consumer \"%s\"", name);
    return CHR_OK;
}

/* The checkpoint move, guarded by the epoch; name is borrowed by st. */
static void advance_stmt(stmt_t *st, const store_t *s, const char *name, int64_t epoch,
                         int64_t position, int64_t delivered)
{
    *st = (stmt_t){.n = 5,
                   .p = {vi(position), vi(delivered), vi(time_now_us()), vs(name), vi(epoch)}};
    sql(st, s,
        "UPDATE %sconsumers SET position = ?, delivered = delivered + ?, updated_at = ? "
        "WHERE name = ? AND epoch = ?");
}

int consumer_store_advance(store_t *s, const char *name, int64_t epoch, int64_t position,
                           int64_t delivered, bool *stale, chr_err_t *err)
{
    stmt_t st;
    advance_stmt(&st, s, name, epoch, position, delivered);
    int rc = run(s, &st, 1, false, err);
    if (stale) *stale = rc == CHR_OK && st.changes == 0;
    return rc;
}

typedef struct async_job {
    stmt_t st;
    unit_t unit;
    store_uow_t uow;
    chr_err_t err;
    char name[256];
    consumer_save_fn done;
    void *user;
} async_job_t;

static void async_done(void *user, int rc)
{
    async_job_t *j = user;
    j->done(j->user, rc, rc == CHR_OK && j->st.changes == 0);
    free(j);
}

int consumer_store_advance_async(store_t *s, const char *name, int64_t epoch, int64_t position,
                                 int64_t delivered, consumer_save_fn done, void *user,
                                 chr_err_t *err)
{
    async_job_t *j = calloc(1, sizeof *j);
    if (!j) return chr_fail(err, CHR_ENOMEM, "", "out of memory");
    snprintf(j->name, sizeof j->name, "%s", name);
    advance_stmt(&j->st, s, j->name, epoch, position, delivered);
    j->unit = (unit_t){&j->st, 1, false};
    j->uow = (store_uow_t){.apply = apply_stmts, .apply_user = &j->unit};
    j->done = done;
    j->user = user;
    int rc = store_commit_async(s, &j->uow, &j->err, async_done, j);
    if (rc) {
        *err = j->err;
        free(j);
    }
    return rc;
}

int consumer_store_set_error(store_t *s, const char *name, const char *msg, chr_err_t *err)
{
    int64_t now = time_now_us();
    stmt_t st = {.n = 4, .p = {vs(msg), vi(now), vi(now), vs(name)}};
    sql(&st, s,
        "UPDATE %sconsumers SET last_error = ?, last_error_at = ?, updated_at = ? WHERE name = ?");
    return run(s, &st, 1, false, err);
}

int consumer_store_reset(store_t *s, const char *name, int64_t position, chr_err_t *err)
{
    stmt_t st = {.n = 3, .p = {vs(name), vi(position), vi(time_now_us())}};
    sql(&st, s,
        "INSERT INTO %sconsumers (name, position, epoch, updated_at) VALUES (?, ?, 1, ?) "
        "ON CONFLICT (name) DO UPDATE SET position = excluded.position, "
        "epoch = consumers.epoch + 1, last_error = NULL, last_error_at = NULL, "
        "updated_at = excluded.updated_at");
    return run(s, &st, 1, false, err);
}

int consumer_store_dead_letter(store_t *s, const char *name, int64_t epoch, const event_t *ev,
                               int attempts, const char *error, bool *stale, chr_err_t *err)
{
    int64_t now = time_now_us();
    stmt_t st[2] = {
        {.n = 4, .p = {vi(ev->position), vi(now), vs(name), vi(epoch)}},
        {.n = 8,
         .p = {vs(name), vi(ev->position), vs(ev->id), vs(ev->type ? ev->type : ""),
               vi(attempts), vs(error ? error : ""), vi(now), vi(now)}},
    };
    sql(&st[0], s, "UPDATE %sconsumers SET position = ?, updated_at = ? WHERE name = ? AND epoch = ?");
    sql(&st[1], s,
        "INSERT INTO %sconsumer_dead_letters (consumer, position, event_id, event_type, "
        "attempts, error, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)");
    int rc = run(s, st, 2, true, err);
    if (stale) *stale = rc == CHR_OK && st[0].changes == 0;
    return rc;
}

#define DEAD_LETTER_COLUMNS \
    "id, position, event_id, event_type, attempts, error, retry, created_at, updated_at"

static int dead_letter_row(void *user, const store_val_t *v, size_t n)
{
    json_t *arr = user;
    if (n < 9) return 1;
    char created[TIMEFMT_LEN + 1], updated[TIMEFMT_LEN + 1];
    time_format_us(val_int(&v[7]), created);
    time_format_us(val_int(&v[8]), updated);
    json_t *o = json_pack("{s:I,s:I,s:s,s:s,s:I,s:s,s:b,s:s,s:s}", "id", (json_int_t)val_int(&v[0]),
                          "position", (json_int_t)val_int(&v[1]), "event_id",
                          v[2].s ? v[2].s : "", "event_type", v[3].s ? v[3].s : "", "attempts",
                          (json_int_t)val_int(&v[4]), "error", v[5].s ? v[5].s : "",
                          "retry_requested", val_int(&v[6]) != 0, "created_at", created,
                          "updated_at", updated);
    return o ? json_array_append_new(arr, o) : 1;
}

int consumer_store_dead_letters(store_t *s, const char *name, int64_t after, int64_t limit,
                                json_t **out, chr_err_t *err)
{
    *out = json_array();
    if (!*out) return chr_fail(err, CHR_ENOMEM, "", "out of memory");
    stmt_t st = {.n = 3, .p = {vs(name), vi(after), vi(limit)}};
    sql(&st, s,
        "SELECT " DEAD_LETTER_COLUMNS " FROM %sconsumer_dead_letters "
        "WHERE consumer = ? AND id > ? ORDER BY id LIMIT ?");
    int rc = store_query(s, st.sql, st.p, st.n, dead_letter_row, *out, err);
    if (rc) {
        json_decref(*out);
        *out = NULL;
    }
    return rc;
}

int consumer_store_request_retry(store_t *s, const char *name, int64_t id, json_t **out,
                                 chr_err_t *err)
{
    if (out) *out = NULL;
    stmt_t st = {.n = 3, .p = {vi(time_now_us()), vs(name), vi(id)}};
    sql(&st, s,
        "UPDATE %sconsumer_dead_letters SET retry = 1, updated_at = ? WHERE consumer = ? AND id = ?");
    int rc = run(s, &st, 1, false, err);
    if (rc) return rc;
    if (st.changes == 0)
        return chr_fail(err, CHR_ENOTFOUND, "id", "consumer \"%s\" has no dead letter %lld", name,
                        (long long)id);
    if (!out) return CHR_OK;
    json_t *arr = json_array();
    if (!arr) return chr_fail(err, CHR_ENOMEM, "", "out of memory");
    stmt_t q = {.n = 2, .p = {vs(name), vi(id)}};
    sql(&q, s,
        "SELECT " DEAD_LETTER_COLUMNS " FROM %sconsumer_dead_letters WHERE consumer = ? AND id = ?");
    rc = store_query(s, q.sql, q.p, q.n, dead_letter_row, arr, err);
    if (rc == CHR_OK && json_array_size(arr) == 1) *out = json_incref(json_array_get(arr, 0));
    json_decref(arr);
    return rc;
}

typedef struct retry_rows {
    consumer_retry_t *out;
    size_t max, n;
} retry_rows_t;

static int retry_row(void *user, const store_val_t *v, size_t n)
{
    retry_rows_t *r = user;
    if (n < 3 || r->n >= r->max) return 1;
    consumer_retry_t *c = &r->out[r->n++];
    c->id = val_int(&v[0]);
    c->attempts = val_int(&v[1]);
    snprintf(c->event_id, sizeof c->event_id, "%s", v[2].type == SV_TEXT && v[2].s ? v[2].s : "");
    c->position = n > 3 ? val_int(&v[3]) : 0;
    return 0;
}

int consumer_store_retries(store_t *s, const char *name, consumer_retry_t *out, size_t max,
                           size_t *n, chr_err_t *err)
{
    retry_rows_t r = {out, max, 0};
    stmt_t st = {.n = 2, .p = {vs(name), vi((int64_t)max)}};
    sql(&st, s,
        "SELECT id, attempts, event_id, position FROM %sconsumer_dead_letters "
        "WHERE consumer = ? AND retry = 1 ORDER BY id LIMIT ?");
    int rc = store_query(s, st.sql, st.p, st.n, retry_row, &r, err);
    *n = r.n;
    return rc;
}

int consumer_store_retry_done(store_t *s, const char *name, int64_t id, chr_err_t *err)
{
    stmt_t st[2] = {
        {.n = 2, .p = {vs(name), vi(id)}},
        {.n = 2, .p = {vi(time_now_us()), vs(name)}},
    };
    sql(&st[0], s, "DELETE FROM %sconsumer_dead_letters WHERE consumer = ? AND id = ?");
    sql(&st[1], s, "UPDATE %sconsumers SET delivered = delivered + 1, updated_at = ? WHERE name = ?");
    return run(s, st, 2, true, err);
}

int consumer_store_retry_failed(store_t *s, const char *name, int64_t id, int64_t attempts,
                                const char *error, chr_err_t *err)
{
    stmt_t st = {.n = 5, .p = {vi(attempts), vs(error ? error : ""), vi(time_now_us()), vs(name),
                               vi(id)}};
    sql(&st, s,
        "UPDATE %sconsumer_dead_letters SET retry = 0, attempts = ?, error = ?, updated_at = ? "
        "WHERE consumer = ? AND id = ?");
    return run(s, &st, 1, false, err);
}
