/*
 * pg_internal.h - what the PostgreSQL backend's files share: the versioned
 * schema (pg_migrations.c) and one libpq connection with its statement
 * cache, reconnection and error mapping (pg_conn.c). Not for callers: they
 * use store.h.
 */
#ifndef CHRONICLE_STORE_PG_INTERNAL_H
#define CHRONICLE_STORE_PG_INTERNAL_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/error.h"
#include "store/store.h"
#include "util/strmap.h"

/* ---- migrations (pg_migrations.c) --------------------------------------- */

typedef struct pg_migration {
    int version;
    const char *name;
    const char *sql; /* one or more statements, run in the migration's transaction */
} pg_migration_t;

extern const pg_migration_t pg_migrations[];
extern const size_t pg_migrations_count;

/* Advisory lock keys (two-int form, first int 'chr1'): migrations. Later
 * background roles take other second ints under the same first. */
#define PG_LOCK_CLASS 0x63687231
#define PG_LOCK_MIGRATE 1
/* Leases take (PG_LOCK_CLASS + 1, hashtext(name)): a class of their own, so
 * no lease name can collide with the migration lock. */
#define PG_LOCK_LEASE_CLASS (PG_LOCK_CLASS + 1)

/* The channel every commit with events notifies, payload the new head. */
#define PG_CHANNEL "chronicle_events"

/* ---- connections (pg_conn.c) -------------------------------------------- */

#define PG_MAX_KEYWORDS 12

/* libpq connection parameters: our defaults, then the user's URL (which
 * overrides them), then what we insist on. Arrays are NULL-terminated. */
typedef struct pg_conninfo {
    const char *keywords[PG_MAX_KEYWORDS];
    const char *values[PG_MAX_KEYWORDS];
} pg_conninfo_t;

/* Fills info for url (borrowed: url must outlive info). */
void pg_conninfo_init(pg_conninfo_t *info, const char *url);

/* One connection, used by one thread at a time. It connects lazily, and
 * after a connection error it reconnects on the next use (at most every
 * PG_RETRY_MS, failing fast in between), so an outage costs requests a 503
 * and nothing else. Statements that are plain DML or queries are prepared
 * once per session and cached by their SQL text. */
typedef struct pg_conn {
    PGconn *pg;
    const pg_conninfo_t *info; /* borrowed */
    const char *role;          /* "writer", "reader", ...: for messages */
    const char *setup_sql;     /* borrowed; run after every (re)connect, may be NULL */
    strmap_t stmts;            /* SQL text -> statement number, this session */
    int64_t next_stmt;
    bool broken;          /* a connection error happened: reconnect before the next use */
    bool in_tx;           /* last seen inside a transaction: a lost connection must not be
                             silently replaced mid-transaction (pg_conn_end_tx clears it) */
    int64_t retry_at_ms;  /* monotonic: no reconnect attempt before this */
    char last_error[256]; /* why the last connect failed, as libpq said it (for the log) */
    char reason[128];     /* the same without server addresses or socket paths (for clients) */
    bool down;            /* a working connection was lost and not regained yet (logged once) */
    char sqlstate[6];     /* SQLSTATE of the last failed statement, "" if none */
    uint64_t generation;  /* bumped on every successful (re)connect */
} pg_conn_t;

void pg_conn_init(pg_conn_t *c, const pg_conninfo_t *info, const char *role, const char *setup_sql);

/* Closes the connection and frees the cache; c may be reused after
 * pg_conn_init. */
void pg_conn_close(pg_conn_t *c);

/* Connects (or reconnects a broken connection). CHR_OK, or
 * CHR_EUNAVAILABLE with the reason in err. */
int pg_conn_ensure(pg_conn_t *c, chr_err_t *err);

/* Forgets the transaction the connection was in (after COMMIT, ROLLBACK or
 * giving up on a lost one), allowing a reconnect again. */
void pg_conn_end_tx(pg_conn_t *c);

/* Runs one statement with bound parameters. sql uses '?' placeholders
 * (translated to $1..$n outside quoted text) or $n ones. On CHR_OK *out (if
 * not NULL) is a new result the caller PQclears; on failure err says why:
 * CHR_EUNAVAILABLE (the connection is gone; marked broken), CHR_ECONFLICT
 * (unique or other integrity violation), CHR_EINVAL (a value PostgreSQL
 * refused), CHR_ESTORE (anything else). When the connection was idle (not in
 * a transaction) and the failure is a lost connection, it reconnects and
 * retries once: a database restart costs no request. */
int pg_conn_exec(pg_conn_t *c, const char *sql, const store_val_t *params, size_t n, PGresult **out,
                 chr_err_t *err);

/* As pg_conn_exec, after the parameterless statements pre[0..n_pre) (e.g.
 * SAVEPOINT), all in one round trip (libpq pipeline mode). A failing pre
 * statement fails the call with its error and sets *pre_failed; the
 * statement is then not run. Never retried: meant for statements inside a
 * transaction. */
int pg_conn_exec_after(pg_conn_t *c, const char *const *pre, size_t n_pre, const char *sql,
                       const store_val_t *params, size_t n, PGresult **out, bool *pre_failed,
                       chr_err_t *err);

/* A statement of a pipeline: '?' or $n placeholders as for pg_conn_exec;
 * out (may be NULL) gets its result. */
typedef struct pg_stmt {
    const char *sql;
    const store_val_t *params;
    size_t n;
    PGresult **out;
} pg_stmt_t;

/* The parameterless statements pre[0..n_pre), then stmts[0..n_stmts), all
 * in one round trip (libpq pipeline mode, one sync). The first failure
 * fails the call with its error; *failed is its index in the order sent
 * (pre first), -1 when none failed; what follows it is not run. On CHR_OK
 * each stmts[i].out (if not NULL) is a new result. Never retried: meant for
 * statements inside a transaction. */
int pg_conn_pipeline(pg_conn_t *c, const char *const *pre, size_t n_pre, pg_stmt_t *stmts,
                     size_t n_stmts, int *failed, chr_err_t *err);

/* Runs one or more parameterless statements with the simple protocol (one
 * round trip). *last (if not NULL) gets the last statement's result, new;
 * the first error stops and is returned as pg_conn_exec does. */
int pg_conn_simple(pg_conn_t *c, const char *sql, PGresult **last, chr_err_t *err);

/* Maps a failed result (or NULL) on c to a chr status with a message; marks c
 * broken on connection errors. what names the operation. */
int pg_conn_fail(pg_conn_t *c, const PGresult *r, const char *what, chr_err_t *err);

/* The SQL with '?' placeholders outside quotes, identifiers, comments and
 * dollar-quoted text replaced by $1..$n: a new string (NULL on allocation
 * failure); *n_params gets n. */
char *pg_translate_placeholders(const char *sql, int *n_params);

/* ---- leases (pg_lease.c) ------------------------------------------------ */

int pg_lease_try(store_t *s, const char *name, store_lease_t **out, chr_err_t *err);
bool pg_lease_check(store_lease_t *l);
void pg_lease_release(store_lease_t *l);

/* The store's connection parameters (pg_store.c). */
const pg_conninfo_t *pg_store_conninfo(store_t *s);

/* Monotonic milliseconds. */
int64_t pg_mono_ms(void);

#endif
