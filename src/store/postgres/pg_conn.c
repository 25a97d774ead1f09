/*
 * pg_conn.c - one libpq connection as the PostgreSQL backend uses it:
 * lazy connect and reconnect after errors, statements prepared once per
 * session and cached by SQL text, '?' placeholders translated to $n, values
 * sent as text, and PostgreSQL errors mapped to chronicle's statuses (a lost
 * connection is CHR_EUNAVAILABLE, which HTTP answers with 503).
 *
 * Not here: what the statements are (pg_store.c) or any locking: a pg_conn_t
 * belongs to one thread at a time.
 */
#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "store/postgres/pg_internal.h"
#include "util/log.h"

#define PG_RETRY_MS 250        /* between reconnect attempts of one connection */
#define PG_STMT_CACHE_MAX 2000 /* prepared statements per session before DEALLOCATE ALL */

int64_t pg_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void pg_conninfo_init(pg_conninfo_t *info, const char *url)
{
    /* Keywords before dbname are defaults the URL may override; those after
     * it are ours to fix (libpq processes them in order). */
    static const char *const before[][2] = {
        {"connect_timeout", "5"},
        {"keepalives_idle", "30"},
        {"keepalives_interval", "10"},
        {"keepalives_count", "3"},
        {"fallback_application_name", "chronicle"},
    };
    size_t k = 0;
    for (size_t i = 0; i < sizeof before / sizeof before[0]; i++) {
        info->keywords[k] = before[i][0];
        info->values[k++] = before[i][1];
    }
    info->keywords[k] = "dbname";
    info->values[k++] = url;
    info->keywords[k] = "client_encoding";
    info->values[k++] = "UTF8";
    info->keywords[k] = NULL;
    info->values[k] = NULL;
}

void pg_conn_init(pg_conn_t *c, const pg_conninfo_t *info, const char *role, const char *setup_sql)
{
    memset(c, 0, sizeof *c);
    c->info = info;
    c->role = role;
    c->setup_sql = setup_sql;
}

void pg_conn_end_tx(pg_conn_t *c)
{
    c->in_tx = false;
}

/* Records whether the session is inside a transaction now (unknown, and so
 * left as it was, once the connection is gone). */
static void note_tx(pg_conn_t *c)
{
    if (c->pg && PQstatus(c->pg) == CONNECTION_OK)
        c->in_tx = PQtransactionStatus(c->pg) != PQTRANS_IDLE;
}

void pg_conn_close(pg_conn_t *c)
{
    if (c->pg) PQfinish(c->pg);
    c->pg = NULL;
    strmap_free(&c->stmts);
}

/* Copies libpq's message into out on one line, without trailing blanks. */
static void one_line(char *out, size_t size, const char *msg)
{
    size_t o = 0;
    bool blank = false;
    for (const char *p = msg ? msg : ""; *p && o + 1 < size; p++) {
        bool ws = *p == '\n' || *p == '\t' || *p == '\r' || *p == ' ';
        if (ws) {
            blank = o > 0;
            continue;
        }
        if (blank && o + 2 < size) out[o++] = ' ';
        blank = false;
        out[o++] = *p;
    }
    out[o] = '\0';
}

/* What a client may be told of a failed connect: libpq's first line
 * without its "connection to server on socket \"/path\" failed: " or "...
 * at \"host\" (address), port N failed: " part, which names the server, and
 * without the hints on the following lines. */
static void client_reason(char *out, size_t size, const char *msg)
{
    static const char prefix[] = "connection to server ";
    static const char failed[] = "failed: ";
    size_t len = strcspn(msg, "\n");
    if (strncmp(msg, prefix, sizeof prefix - 1) == 0) {
        const char *f = strstr(msg, failed);
        if (f && (size_t)(f - msg) < len) {
            len -= (size_t)(f + sizeof failed - 1 - msg);
            msg = f + sizeof failed - 1;
        }
    }
    char line[256];
    snprintf(line, sizeof line, "%.*s", (int)len, msg);
    one_line(out, size, line);
    if (!out[0]) snprintf(out, size, "cannot connect");
}

/* Records a failed connect: the reason, the next attempt's time, and, when
 * a connection that had worked goes down, one log line with libpq's whole
 * message for the operator (a first connect that fails is the caller's to
 * report). */
static void connect_failed(pg_conn_t *c, int64_t now, const char *why)
{
    one_line(c->last_error, sizeof c->last_error, why);
    client_reason(c->reason, sizeof c->reason, why);
    c->broken = true;
    c->retry_at_ms = now + PG_RETRY_MS;
    if (!c->down && c->generation > 0) {
        log_at(LOG_WARN, "PostgreSQL connection lost", LOG_S("connection", c->role),
               LOG_S("error", c->last_error));
        c->down = true;
    }
}

static void ignore_notice(void *arg, const char *message)
{
    (void)arg;
    (void)message;
}

int pg_conn_ensure(pg_conn_t *c, chr_err_t *err)
{
    if (c->pg && !c->broken && PQstatus(c->pg) == CONNECTION_OK) return CHR_OK;
    if (c->in_tx)
        return chr_fail(err, CHR_EUNAVAILABLE, "",
                        "PostgreSQL is unavailable: the %s connection was lost inside a "
                        "transaction",
                        c->role);
    int64_t now = pg_mono_ms();
    if (now < c->retry_at_ms)
        return chr_fail(err, CHR_EUNAVAILABLE, "", "PostgreSQL is unavailable: %s", c->reason);
    if (c->pg) {
        PQreset(c->pg);
    } else {
        c->pg = PQconnectdbParams(c->info->keywords, c->info->values, 1);
        /* NOTICEs ("relation already exists, skipping") are not errors; libpq
         * would print them on stderr, outside our JSON log. */
        if (c->pg) PQsetNoticeProcessor(c->pg, ignore_notice, NULL);
    }
    const char *why = NULL;
    if (!c->pg)
        why = "out of memory";
    else if (PQstatus(c->pg) != CONNECTION_OK)
        why = PQerrorMessage(c->pg);
    if (!why) {
        /* A new session: statements prepared by the old one are gone. */
        strmap_clear(&c->stmts);
        c->next_stmt = 0;
        if (c->setup_sql) {
            PGresult *r = PQexec(c->pg, c->setup_sql);
            if (PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK) {
                const char *m = r ? PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY) : NULL;
                connect_failed(c, now, m ? m : PQerrorMessage(c->pg));
                PQclear(r);
                return chr_fail(err, CHR_EUNAVAILABLE, "",
                                "PostgreSQL: setting up the %s "
                                "connection failed: %s",
                                c->role, c->reason);
            }
            PQclear(r);
        }
        c->broken = false;
        c->generation++;
        if (c->down) log_at(LOG_INFO, "PostgreSQL connection restored", LOG_S("connection", c->role));
        c->down = false;
        return CHR_OK;
    }
    connect_failed(c, now, why);
    return chr_fail(err, CHR_EUNAVAILABLE, "", "PostgreSQL is unavailable: %s", c->reason);
}

int pg_conn_fail(pg_conn_t *c, const PGresult *r, const char *what, chr_err_t *err)
{
    const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    const char *primary = r ? PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    const char *detail = r ? PQresultErrorField(r, PG_DIAG_MESSAGE_DETAIL) : NULL;
    char msg[300];
    one_line(msg, sizeof msg,
             primary ? primary : (c->pg ? PQerrorMessage(c->pg) : "no connection"));
    if (!msg[0]) snprintf(msg, sizeof msg, "unknown error");
    char det[200] = "";
    if (detail) one_line(det, sizeof det, detail);
    snprintf(c->sqlstate, sizeof c->sqlstate, "%s", state ? state : "");
    bool lost = !c->pg || PQstatus(c->pg) != CONNECTION_OK ||
                (state && strncmp(state, "08", 2) == 0) ||
                (state && strncmp(state, "57P0", 4) == 0); /* shutdown, crash, starting up */
    if (lost) {
        c->broken = true;
        return chr_fail(err, CHR_EUNAVAILABLE, "", "PostgreSQL is unavailable (%s, %s): %s",
                        c->role, what, msg);
    }
    if (state && strncmp(state, "23", 2) == 0)
        return chr_fail(err, CHR_ECONFLICT, "", "constraint: %s%s%s", msg, det[0] ? ": " : "", det);
    if (state && strncmp(state, "22", 2) == 0)
        return chr_fail(err, CHR_EINVAL, "", "PostgreSQL refused a value: %s%s%s", msg,
                        det[0] ? ": " : "", det);
    return chr_fail(err, CHR_ESTORE, "", "postgres: %s: %s%s%s%s%s%s", what, msg,
                    det[0] ? ": " : "", det, state ? " (SQLSTATE " : "", state ? state : "",
                    state ? ")" : "");
}

/* ---- placeholders -------------------------------------------------------- */

static bool ident_char(char ch)
{
    return isalnum((unsigned char)ch) || ch == '_' || (unsigned char)ch >= 0x80;
}

/* Length of the dollar-quote tag starting at p ("$tag$" or "$$"), 0 when p
 * does not start one. */
static size_t dollar_tag(const char *p)
{
    if (p[0] != '$') return 0;
    size_t i = 1;
    if (p[i] == '$') return 2;
    if (!(isalpha((unsigned char)p[i]) || p[i] == '_' || (unsigned char)p[i] >= 0x80)) return 0;
    while (ident_char(p[i]) && p[i] != '$')
        i++;
    return p[i] == '$' ? i + 1 : 0;
}

/* Where the token starting at sql[i] ends when it is quoted text or a
 * comment (the index just after it), or i when it is neither. */
static size_t skip_quoted(const char *sql, size_t i)
{
    const char *p = sql + i;
    if (p[0] == '\'') {
        /* E'...' strings take backslash escapes; others only ''. */
        bool esc =
            i > 0 && (sql[i - 1] == 'E' || sql[i - 1] == 'e') && (i < 2 || !ident_char(sql[i - 2]));
        size_t j = i + 1;
        while (sql[j]) {
            if (esc && sql[j] == '\\' && sql[j + 1]) {
                j += 2;
            } else if (sql[j] == '\'') {
                if (sql[j + 1] == '\'')
                    j += 2;
                else
                    return j + 1;
            } else {
                j++;
            }
        }
        return j;
    }
    if (p[0] == '"') {
        size_t j = i + 1;
        while (sql[j]) {
            if (sql[j] == '"') {
                if (sql[j + 1] == '"')
                    j += 2;
                else
                    return j + 1;
            } else {
                j++;
            }
        }
        return j;
    }
    if (p[0] == '-' && p[1] == '-') {
        size_t j = i + 2;
        while (sql[j] && sql[j] != '\n')
            j++;
        return j;
    }
    if (p[0] == '/' && p[1] == '*') {
        size_t j = i + 2;
        int depth = 1; /* PostgreSQL block comments nest */
        while (sql[j] && depth > 0) {
            if (sql[j] == '/' && sql[j + 1] == '*') {
                depth++;
                j += 2;
            } else if (sql[j] == '*' && sql[j + 1] == '/') {
                depth--;
                j += 2;
            } else {
                j++;
            }
        }
        return j;
    }
    if (p[0] == '$' && (i == 0 || !ident_char(sql[i - 1]))) {
        size_t tag = dollar_tag(p);
        if (!tag) return i;
        for (const char *q = p + tag; *q; q++)
            if (*q == '$' && strncmp(q, p, tag) == 0) return (size_t)(q + tag - sql);
        return strlen(sql);
    }
    return i;
}

char *pg_translate_placeholders(const char *sql, int *n_params)
{
    size_t len = strlen(sql), marks = 0;
    for (size_t i = 0; i < len;) {
        size_t j = skip_quoted(sql, i);
        if (j != i) {
            i = j;
            continue;
        }
        if (sql[i] == '?') marks++;
        i++;
    }
    char *out = malloc(len + marks * 7 + 1);
    if (!out) return NULL;
    size_t o = 0;
    int n = 0;
    for (size_t i = 0; i < len;) {
        size_t j = skip_quoted(sql, i);
        if (j != i) {
            memcpy(out + o, sql + i, j - i);
            o += j - i;
            i = j;
            continue;
        }
        if (sql[i] == '?') {
            o += (size_t)snprintf(out + o, 8, "$%d", ++n);
        } else {
            out[o++] = sql[i];
        }
        i++;
    }
    out[o] = '\0';
    *n_params = n;
    return out;
}

/* ---- running statements -------------------------------------------------- */

/* Plain DML and queries are worth preparing once; DDL and the rest run
 * unnamed (they are rare, and PostgreSQL cannot plan them ahead anyway). */
static bool cacheable(const char *sql)
{
    static const char *const words[] = {"SELECT", "INSERT", "UPDATE", "DELETE", "WITH", "VALUES"};
    while (*sql == ' ' || *sql == '\n' || *sql == '\t' || *sql == '(')
        sql++;
    for (size_t i = 0; i < sizeof words / sizeof words[0]; i++) {
        size_t n = strlen(words[i]);
        if (strncasecmp(sql, words[i], n) == 0 && !ident_char(sql[n])) return true;
    }
    return false;
}

typedef struct param_text {
    const char **vals;
    char (*num)[32];
    const char *vals_local[16];
    char num_local[16][32];
} param_text_t;

/* Text forms of params (libpq sends them as text and the server infers
 * their types from the statement). Returns CHR_OK or CHR_ENOMEM. */
static int params_to_text(param_text_t *t, const store_val_t *p, size_t n)
{
    t->vals = t->vals_local;
    t->num = t->num_local;
    if (n > 16) {
        t->vals = malloc(n * sizeof *t->vals);
        t->num = malloc(n * sizeof *t->num);
        if (!t->vals || !t->num) {
            free((void *)t->vals);
            free(t->num);
            return CHR_ENOMEM;
        }
    }
    for (size_t i = 0; i < n; i++) {
        switch (p[i].type) {
        case SV_NULL:
            t->vals[i] = NULL;
            break;
        case SV_INT:
            snprintf(t->num[i], sizeof t->num[i], "%" PRId64, p[i].i);
            t->vals[i] = t->num[i];
            break;
        case SV_REAL:
            snprintf(t->num[i], sizeof t->num[i], "%.17g", p[i].r);
            t->vals[i] = t->num[i];
            break;
        case SV_TEXT:
            t->vals[i] = p[i].s;
            break;
        }
    }
    return CHR_OK;
}

static void params_free(param_text_t *t)
{
    if (t->vals != t->vals_local) free((void *)t->vals);
    if (t->num != t->num_local) free(t->num);
}

static bool result_ok(const PGresult *r)
{
    ExecStatusType st = PQresultStatus(r);
    return r && (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK);
}

/* The prepared statement's name for sql on this session, preparing it when
 * new. */
static int prepared_name(pg_conn_t *c, const char *sql, char name[32], chr_err_t *err)
{
    int64_t id;
    if (strmap_get(&c->stmts, sql, &id)) {
        snprintf(name, 32, "chr%" PRId64, id);
        return CHR_OK;
    }
    if (c->stmts.len >= PG_STMT_CACHE_MAX && PQtransactionStatus(c->pg) == PQTRANS_IDLE) {
        PGresult *r = PQexec(c->pg, "DEALLOCATE ALL");
        bool ok = result_ok(r);
        PQclear(r);
        if (ok) strmap_clear(&c->stmts);
    }
    int n_params = 0;
    char *text = pg_translate_placeholders(sql, &n_params);
    if (!text) return chr_fail(err, CHR_ENOMEM, "", "out of memory");
    id = c->next_stmt++;
    snprintf(name, 32, "chr%" PRId64, id);
    PGresult *r = PQprepare(c->pg, name, text, 0, NULL);
    free(text);
    if (!result_ok(r)) {
        int rc = pg_conn_fail(c, r, "prepare", err);
        PQclear(r);
        return rc;
    }
    PQclear(r);
    if (strmap_put(&c->stmts, sql, id) != 0) {
        /* Still usable now; it is prepared again (under a new name) next time. */
        chr_err_clear(err);
    }
    return CHR_OK;
}

static int exec_once(pg_conn_t *c, const char *sql, const store_val_t *params, size_t n,
                     PGresult **out, chr_err_t *err)
{
    if (n > 65535) return chr_fail(err, CHR_EINVAL, "", "too many statement parameters");
    param_text_t t;
    if (params_to_text(&t, params, n) != CHR_OK)
        return chr_fail(err, CHR_ENOMEM, "", "out of memory");
    PGresult *r = NULL;
    int rc = CHR_OK;
    if (cacheable(sql)) {
        char name[32];
        rc = prepared_name(c, sql, name, err);
        if (!rc) r = PQexecPrepared(c->pg, name, (int)n, t.vals, NULL, NULL, 0);
    } else {
        int n_params = 0;
        char *text = pg_translate_placeholders(sql, &n_params);
        if (!text)
            rc = chr_fail(err, CHR_ENOMEM, "", "out of memory");
        else
            r = PQexecParams(c->pg, text, (int)n, NULL, t.vals, NULL, NULL, 0);
        free(text);
    }
    params_free(&t);
    if (rc) return rc;
    if (!result_ok(r)) {
        rc = pg_conn_fail(c, r, "statement", err);
        PQclear(r);
        return rc;
    }
    if (out)
        *out = r;
    else
        PQclear(r);
    return CHR_OK;
}

int pg_conn_exec(pg_conn_t *c, const char *sql, const store_val_t *params, size_t n, PGresult **out,
                 chr_err_t *err)
{
    if (out) *out = NULL;
    for (int attempt = 0;; attempt++) {
        int rc = pg_conn_ensure(c, err);
        if (rc) return rc;
        bool idle = PQtransactionStatus(c->pg) == PQTRANS_IDLE;
        rc = exec_once(c, sql, params, n, out, err);
        note_tx(c);
        if (rc == CHR_EUNAVAILABLE && idle && attempt == 0) continue;
        return rc;
    }
}

static int simple_once(pg_conn_t *c, const char *sql, PGresult **last, chr_err_t *err)
{
    if (!PQsendQuery(c->pg, sql)) return pg_conn_fail(c, NULL, "send", err);
    PGresult *r, *keep = NULL, *bad = NULL;
    while ((r = PQgetResult(c->pg)) != NULL) {
        if (!bad && !result_ok(r)) {
            bad = r;
            continue;
        }
        if (bad || !last) {
            PQclear(r);
            continue;
        }
        PQclear(keep);
        keep = r;
    }
    if (bad || PQstatus(c->pg) != CONNECTION_OK) {
        int rc = pg_conn_fail(c, bad, "statement", err);
        PQclear(bad);
        PQclear(keep);
        return rc;
    }
    if (last)
        *last = keep;
    else
        PQclear(keep);
    return CHR_OK;
}

int pg_conn_simple(pg_conn_t *c, const char *sql, PGresult **last, chr_err_t *err)
{
    if (last) *last = NULL;
    for (int attempt = 0;; attempt++) {
        int rc = pg_conn_ensure(c, err);
        if (rc) return rc;
        bool idle = PQtransactionStatus(c->pg) == PQTRANS_IDLE;
        rc = simple_once(c, sql, last, err);
        note_tx(c);
        if (rc == CHR_EUNAVAILABLE && idle && attempt == 0) continue;
        return rc;
    }
}

/* One extended-protocol statement of a pipeline, as sent. */
typedef struct pipe_stmt {
    char name[32];
    int64_t id;
    bool cached, prepare, prepared_ok;
    char *text; /* translated SQL when not already prepared */
    param_text_t t;
} pipe_stmt_t;

/* Sends pre[] (parameterless) and stmts[] in one pipeline with one sync and
 * reads every result: one round trip. A statement new to this session is
 * prepared inside the same pipeline, just before it, so that pre[] (a
 * SAVEPOINT) precedes anything that can fail. The first failure wins (later
 * statements come back aborted): *failed is its index in the order sent
 * (pre first, then stmts), -1 when none. On CHR_OK every stmts[i].out (when
 * asked for) is a new result. */
static int pipeline_once(pg_conn_t *c, const char *const *pre, size_t n_pre, pg_stmt_t *stmts,
                         size_t n_stmts, int *failed, chr_err_t *err)
{
    *failed = -1;
    pipe_stmt_t local[4];
    pipe_stmt_t *ps = n_stmts <= 4 ? local : calloc(n_stmts, sizeof *ps);
    if (!ps) return chr_fail(err, CHR_ENOMEM, "", "out of memory");
    memset(ps, 0, (n_stmts <= 4 ? 4 : n_stmts) * sizeof *ps);
    PGresult *outs_local[4] = {0};
    PGresult **outs = n_stmts <= 4 ? outs_local : calloc(n_stmts, sizeof *outs);
    int rc = outs ? CHR_OK : chr_fail(err, CHR_ENOMEM, "", "out of memory");
    size_t ready = 0; /* ps[0..ready) hold resources */
    for (; rc == CHR_OK && ready < n_stmts; ready++) {
        pg_stmt_t *st = &stmts[ready];
        pipe_stmt_t *p = &ps[ready];
        if (st->n > 65535) {
            rc = chr_fail(err, CHR_EINVAL, "", "too many statement parameters");
            break;
        }
        p->cached = cacheable(st->sql);
        if (p->cached && strmap_get(&c->stmts, st->sql, &p->id)) {
            snprintf(p->name, sizeof p->name, "chr%" PRId64, p->id);
        } else {
            int n_params = 0;
            p->text = pg_translate_placeholders(st->sql, &n_params);
            if (!p->text) {
                rc = chr_fail(err, CHR_ENOMEM, "", "out of memory");
                break;
            }
            if (p->cached) {
                p->prepare = true;
                p->id = c->next_stmt++;
                snprintf(p->name, sizeof p->name, "chr%" PRId64, p->id);
            }
        }
        if (params_to_text(&p->t, st->params, st->n) != CHR_OK) {
            free(p->text);
            p->text = NULL;
            rc = chr_fail(err, CHR_ENOMEM, "", "out of memory");
            break;
        }
    }
    bool sent = false, left = true;
    PGresult *bad = NULL;
    if (rc == CHR_OK) {
        sent = PQenterPipelineMode(c->pg) == 1;
        for (size_t i = 0; sent && i < n_pre; i++)
            sent = PQsendQueryParams(c->pg, pre[i], 0, NULL, NULL, NULL, NULL, 0) == 1;
        for (size_t i = 0; sent && i < n_stmts; i++) {
            pipe_stmt_t *p = &ps[i];
            if (p->prepare) sent = PQsendPrepare(c->pg, p->name, p->text, 0, NULL) == 1;
            if (sent)
                sent = (p->cached ? PQsendQueryPrepared(c->pg, p->name, (int)stmts[i].n,
                                                        p->t.vals, NULL, NULL, 0)
                                  : PQsendQueryParams(c->pg, p->text, (int)stmts[i].n, NULL,
                                                      p->t.vals, NULL, NULL, 0)) == 1;
        }
        if (sent) sent = PQpipelineSync(c->pg) == 1 && PQflush(c->pg) == 0;
        /* Each query's results end with NULL; the sync ends the pipeline. */
        for (size_t q = 0; sent && q < n_pre + n_stmts && PQstatus(c->pg) == CONNECTION_OK; q++) {
            size_t si = q - n_pre; /* the statement, when q >= n_pre */
            for (int step = q >= n_pre && ps[si].prepare ? 0 : 1; step < 2; step++) {
                PGresult *r;
                while ((r = PQgetResult(c->pg)) != NULL) {
                    bool ok = result_ok(r);
                    if (ok && step == 0) ps[si].prepared_ok = true;
                    if (ok && step == 1 && q >= n_pre && !outs[si] && !bad) {
                        outs[si] = r;
                    } else if (!bad && !ok && PQresultStatus(r) != PGRES_PIPELINE_ABORTED) {
                        bad = r;
                        *failed = (int)q;
                    } else {
                        PQclear(r);
                    }
                }
            }
        }
        for (int nulls = 0; sent && nulls < 2 && PQstatus(c->pg) == CONNECTION_OK;) {
            PGresult *r = PQgetResult(c->pg);
            if (!r) {
                nulls++;
                continue;
            }
            bool sync = PQresultStatus(r) == PGRES_PIPELINE_SYNC;
            PQclear(r);
            if (sync) break;
        }
        left = PQstatus(c->pg) == CONNECTION_OK && PQexitPipelineMode(c->pg) == 1;
    }
    for (size_t i = 0; i < ready; i++) {
        /* A statement prepared here stays prepared even if the transaction
         * fails: preparing is not transactional. */
        if (ps[i].prepared_ok && left) strmap_put(&c->stmts, stmts[i].sql, ps[i].id);
        params_free(&ps[i].t);
        free(ps[i].text);
    }
    bool all = true;
    for (size_t i = 0; i < n_stmts && outs; i++)
        all = all && outs[i];
    if (rc == CHR_OK && (!sent || !left || bad || !all)) {
        if (!bad && left && sent)
            rc = chr_fail(err, CHR_ESTORE, "", "postgres: the statement returned no result");
        else
            rc = pg_conn_fail(c, bad, "statement", err);
        if (!left) c->broken = true;
    }
    PQclear(bad);
    for (size_t i = 0; i < n_stmts && outs; i++) {
        if (rc == CHR_OK && stmts[i].out)
            *stmts[i].out = outs[i];
        else
            PQclear(outs[i]);
    }
    if (ps != local) free(ps);
    if (outs != outs_local) free(outs);
    return rc;
}

int pg_conn_pipeline(pg_conn_t *c, const char *const *pre, size_t n_pre, pg_stmt_t *stmts,
                     size_t n_stmts, int *failed, chr_err_t *err)
{
    *failed = -1;
    for (size_t i = 0; i < n_stmts; i++)
        if (stmts[i].out) *stmts[i].out = NULL;
    int rc = pg_conn_ensure(c, err);
    if (rc) return rc;
    rc = pipeline_once(c, pre, n_pre, stmts, n_stmts, failed, err);
    note_tx(c);
    return rc;
}

int pg_conn_exec_after(pg_conn_t *c, const char *const *pre, size_t n_pre, const char *sql,
                       const store_val_t *params, size_t n, PGresult **out, bool *pre_failed,
                       chr_err_t *err)
{
    *pre_failed = false;
    if (n_pre == 0) return pg_conn_exec(c, sql, params, n, out, err);
    if (out) *out = NULL;
    pg_stmt_t st = {.sql = sql, .params = params, .n = n, .out = out};
    int failed;
    int rc = pg_conn_pipeline(c, pre, n_pre, &st, 1, &failed, err);
    *pre_failed = failed >= 0 && (size_t)failed < n_pre;
    return rc;
}
