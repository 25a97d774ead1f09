/*
 * store.h - the event store interface every backend implements.
 *
 * Callers (engine, http, ops, CLI) use only the store_* functions below; a
 * backend is a store_ops_t vtable (as SQLite's VFS) chosen by URL in
 * store_open. store.c validates input once for every backend (names, sizes,
 * JSON) before a backend sees it, so backends may trust what they get.
 *
 * Threads: every function may be called from any thread concurrently, except
 * store_close, which must be the last call.
 */
#ifndef CHRONICLE_STORE_STORE_H
#define CHRONICLE_STORE_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/error.h"
#include "core/event.h"

/* Expected-version modes for an append; any value >= 0 is an exact version,
 * and 0 means "the stream must not exist yet". */
#define STORE_ANY (-1)           /* no check */
#define STORE_NO_STREAM 0        /* the stream must not exist */
#define STORE_STREAM_EXISTS (-2) /* the stream must have at least one event */

typedef struct store store_t;
typedef struct store_tx store_tx_t;
typedef struct store_lease store_lease_t;

#define STORE_LEASE_NAME_MAX 63

typedef enum store_sync {
    STORE_SYNC_FULL = 0,   /* fsync on every commit: acknowledged means durable */
    STORE_SYNC_NORMAL = 1, /* SQLite NORMAL: a power loss may drop recent commits */
} store_sync_t;

typedef struct store_options {
    size_t max_event_bytes; /* type + data + metadata; 0 = EVENT_DEFAULT_MAX_BYTES */
    store_sync_t sync;
    int readers;            /* reader connections; 0 = a default from the core count */
    bool migrate;           /* apply pending migrations on open (default in serve) */
    bool read_only;         /* open without creating or migrating (stats, status) */
} store_options_t;

/* One append inside a unit of work. events[] are in/out: on success each
 * gets its id (generated when empty), version, position and timestamp. */
typedef struct store_append {
    const char *stream;
    int64_t expected_version; /* STORE_ANY, STORE_NO_STREAM, STORE_STREAM_EXISTS or exact */
    event_t *events;
    size_t n_events;
    /* out */
    int64_t version;  /* the stream's version after the append; for an idempotent
                         replay, the version the original append produced */
    bool idempotent;  /* true when every event was already stored: nothing written */
} store_append_t;

/* Projection work run inside the unit's transaction after its appends, on the
 * writer's connection. Returning non-zero (with err filled) rolls back the
 * whole unit, events included. It must not block on other units. */
typedef int (*store_apply_fn)(store_tx_t *tx, void *user, chr_err_t *err);

/* A unit of work: appends plus optional projection writes, committed
 * atomically. Units are group-committed; one unit's failure never fails
 * another's. */
typedef struct store_uow {
    store_append_t *appends;
    size_t n_appends;
    store_apply_fn apply; /* may be NULL */
    void *apply_user;
} store_uow_t;

/* A bound parameter or result value for store_tx_exec/query. */
typedef enum store_val_type { SV_NULL, SV_INT, SV_REAL, SV_TEXT } store_val_type_t;
typedef struct store_val {
    store_val_type_t type;
    int64_t i;
    double r;
    const char *s; /* borrowed */
} store_val_t;

/* Called once per result row; vals are borrowed for the call only. Return
 * non-zero to stop. */
typedef int (*store_row_fn)(void *user, const store_val_t *vals, size_t n);

typedef struct store_stats {
    int64_t events;
    int64_t streams;
    int64_t head_position;
    int64_t bytes; /* database size on disk, -1 when unknown */
    int schema_version;
} store_stats_t;

typedef struct store_migration_info {
    int version;
    const char *name;  /* borrowed, static */
    bool applied;
    int64_t applied_at; /* microseconds since epoch, 0 when pending */
} store_migration_info_t;

/* Counters a backend keeps for /metrics; read with store_counters. */
typedef struct store_counters {
    uint64_t commits;        /* transactions committed by the writer */
    uint64_t units;          /* units of work committed */
    uint64_t events;         /* events appended */
    uint64_t errors;         /* store (I/O) errors */
    uint64_t batch_hist[8];  /* units per commit: 1, 2-3, 4-7, ... 128+ */
} store_counters_t;

/* Completion of an asynchronous commit: rc is the unit's final status (its
 * err and appends are filled). Called on the store's writer thread: do not
 * block, do not commit from inside it. */
typedef void (*store_done_fn)(void *user, int rc);

typedef struct store_ops {
    const char *name;
    int (*commit_async)(store_t *s, store_uow_t *uow, chr_err_t *err, store_done_fn done,
                        void *user);
    int (*read_stream)(store_t *s, const char *stream, int64_t from_version, size_t limit,
                       bool backwards, event_list_t *out, chr_err_t *err);
    int (*read_all)(store_t *s, int64_t after, size_t limit, const char *const *types,
                    size_t n_types, event_list_t *out, chr_err_t *err);
    int (*read_event)(store_t *s, const char *id, event_t *out, chr_err_t *err);
    int (*stream_version)(store_t *s, const char *stream, int64_t *version, chr_err_t *err);
    int (*head_position)(store_t *s, int64_t *position, chr_err_t *err);
    int (*stats)(store_t *s, store_stats_t *out, chr_err_t *err);
    int (*migrate)(store_t *s, chr_err_t *err);
    int (*migrations)(store_t *s, store_migration_info_t **out, size_t *n, chr_err_t *err);
    int (*ping)(store_t *s, chr_err_t *err);
    int (*tx_exec)(store_tx_t *tx, const char *sql, const store_val_t *params, size_t n,
                   int64_t *changes, chr_err_t *err);
    int (*tx_query)(store_tx_t *tx, const char *sql, const store_val_t *params, size_t n,
                    store_row_fn fn, void *user, chr_err_t *err);
    int (*query)(store_t *s, const char *sql, const store_val_t *params, size_t n,
                 store_row_fn fn, void *user, chr_err_t *err);
    void (*counters)(store_t *s, store_counters_t *out);
    int (*lease_try)(store_t *s, const char *name, store_lease_t **out, chr_err_t *err);
    bool (*lease_check)(store_lease_t *l);
    void (*lease_release)(store_lease_t *l);
    void (*close)(store_t *s);
} store_ops_t;

/* The part of a store every backend shares; backends embed it first. */
struct store {
    const store_ops_t *ops;
    store_options_t opts;
    char url[512];
    /* head position and waiters (store.c) */
    void *notify; /* opaque, owned by store.c */
};

/* The part of a lease every backend shares; embedded first. */
struct store_lease {
    store_t *store;
    char name[STORE_LEASE_NAME_MAX + 1];
};

/* The part of a transaction handle every backend shares; embedded first. */
struct store_tx {
    store_t *store;
};

/* Opens the store named by url: NULL or "" -> sqlite:./chronicle.db;
 * "sqlite:PATH" or a plain path -> SQLite; "postgres://..." or
 * "postgresql://..." (a libpq URI) -> PostgreSQL. opts may be NULL (defaults). On
 * success *out is a new store the caller closes with store_close. */
int store_open(const char *url, const store_options_t *opts, store_t **out, chr_err_t *err);

/* Waits for every queued unit to finish, then releases everything. */
void store_close(store_t *s);

/* Commits a unit of work atomically (see store_uow_t). Validates every event
 * first; CHR_EINVAL/CHR_ETOOBIG name the offending field and nothing is
 * written. CHR_ECONFLICT fills err->conflict with expected and actual
 * versions. On success the appends' out fields and events are filled. */
int store_commit(store_t *s, store_uow_t *uow, chr_err_t *err);

/* Queues a unit of work and returns at once; done(user, rc) runs once the
 * unit's batch is committed (durable) or failed. uow, its events and err must
 * stay alive until then. Returns CHR_OK when queued, or an error (validation,
 * shutdown) without calling done. Lets a server suspend a request instead of
 * holding a thread while the batch commits. */
int store_commit_async(store_t *s, store_uow_t *uow, chr_err_t *err, store_done_fn done,
                       void *user);

/* Convenience: one append as its own unit of work. *version_out may be NULL. */
int store_append(store_t *s, const char *stream, int64_t expected, event_t *events, size_t n,
                 int64_t *version_out, bool *idempotent, chr_err_t *err);

/* Events of a stream from from_version (inclusive; 0 or 1 = first) forwards,
 * or backwards from from_version (0 = last), at most limit. Appends to out.
 * A stream with no events yields an empty list and CHR_OK. */
int store_read_stream(store_t *s, const char *stream, int64_t from_version, size_t limit,
                      bool backwards, event_list_t *out, chr_err_t *err);

/* Events with position > after, in position order, at most limit, optionally
 * only of the given types (n_types 0 = all). Appends to out. */
int store_read_all(store_t *s, int64_t after, size_t limit, const char *const *types,
                   size_t n_types, event_list_t *out, chr_err_t *err);

/* One event by id; CHR_ENOTFOUND when absent. out must be zeroed/unowned. */
int store_read_event(store_t *s, const char *id, event_t *out, chr_err_t *err);

/* The stream's current version; 0 when it does not exist. */
int store_stream_version(store_t *s, const char *stream, int64_t *version, chr_err_t *err);

/* The highest committed position; 0 for an empty store. */
int store_head_position(store_t *s, int64_t *position, chr_err_t *err);

int store_stats(store_t *s, store_stats_t *out, chr_err_t *err);

/* Applies pending migrations (idempotent). */
int store_migrate(store_t *s, chr_err_t *err);

/* Known migrations with their state; *out is a new array the caller frees. */
int store_migrations(store_t *s, store_migration_info_t **out, size_t *n, chr_err_t *err);

/* Cheap reachability check for /ready. */
int store_ping(store_t *s, chr_err_t *err);

/* Blocks until the committed head position is > after or timeout_ms elapses
 * (timeout_ms < 0 waits forever). Sets *head to the head seen. Returns CHR_OK
 * when head > after, CHR_ENOTFOUND on timeout, CHR_EUNAVAILABLE once the
 * store is closing. No polling: commits signal a condition variable. */
int store_wait(store_t *s, int64_t after, int timeout_ms, int64_t *head);

/* Registers fn to be called (on the committing thread, outside any lock the
 * store holds for writing) with the new head after every commit. Used by the
 * live feed to resume suspended subscribers. Returns CHR_OK or CHR_ENOMEM. */
typedef void (*store_commit_fn)(void *user, int64_t head);
int store_on_commit(store_t *s, store_commit_fn fn, void *user);

/* Snapshot of the backend's counters. */
void store_counters(store_t *s, store_counters_t *out);

/* Inside a store_apply_fn: run one SQL statement with bound parameters
 * (placeholders are '?'; backends translate). *changes (may be NULL) gets the
 * rows affected. SQL text must come from the definition, never user input. */
int store_tx_exec(store_tx_t *tx, const char *sql, const store_val_t *params, size_t n,
                  int64_t *changes, chr_err_t *err);

/* Inside a store_apply_fn: run a query, calling fn per row. */
int store_tx_query(store_tx_t *tx, const char *sql, const store_val_t *params, size_t n,
                   store_row_fn fn, void *user, chr_err_t *err);

/* Outside any unit of work: a read-only query on a reader connection (sees
 * every committed unit). Same rules as store_tx_query; used for projection
 * reads. Column names come from the definition, values are bound. */
int store_query(store_t *s, const char *sql, const store_val_t *params, size_t n,
                store_row_fn fn, void *user, chr_err_t *err);

/* Leases: the right to run one background role (the projector, consumers,
 * schedules) on one instance at a time among all processes sharing the
 * database. PostgreSQL: a session advisory lock on a connection of the
 * lease's own; SQLite: an exclusive flock(2) on "<db>-lease-<name>" beside
 * the database file. Either is released when the holder's process dies, so
 * another instance's next store_lease_try takes over.
 *
 * name: 1..STORE_LEASE_NAME_MAX characters of [a-z0-9_.:-]. Returns CHR_OK
 * with *out set when taken, CHR_ECONFLICT (*out NULL) when held elsewhere
 * (another instance, or another lease of this process), CHR_EUNAVAILABLE
 * when the database cannot be reached, CHR_EINVAL for a bad name. */
int store_lease_try(store_t *s, const char *name, store_lease_t **out, chr_err_t *err);

/* Whether l is still held. False once it may have been lost (PostgreSQL:
 * the lease's session ended, e.g. the server restarted; another instance may
 * hold it now): the holder must stop the role's work and release l. Costs a
 * round trip on PostgreSQL at most once per second; call it before each
 * batch of work. */
bool store_lease_check(store_lease_t *l);

/* Gives the lease up and frees l (NULL is fine). */
void store_lease_release(store_lease_t *l);

/* --- for backends only --------------------------------------------------- */

/* Called by a backend after each successful commit with the new head. */
void store_notify_commit(store_t *s, int64_t head);

/* Backend constructors (store/sqlite/sqlite_store.c, ...). */
int sqlite_store_open(const char *path, const store_options_t *opts, store_t **out,
                      chr_err_t *err);
int pg_store_open(const char *url, const store_options_t *opts, store_t **out, chr_err_t *err);

#endif
