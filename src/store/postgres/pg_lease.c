/*
 * pg_lease.c - leases for the PostgreSQL backend: a session-level advisory
 * lock (PG_LOCK_LEASE_CLASS, hashtext(name)) taken with pg_try_advisory_lock
 * on a connection of the lease's own. PostgreSQL releases it when that
 * session ends: on release, when the holder's process dies (the server
 * notices the closed socket), or when the server restarts. So a lease is
 * lost exactly when its session is: check() runs a trivial query (at most
 * once per CHECK_MS) and compares the connection's generation, because the
 * connection layer reconnects transparently and a new session holds no lock.
 *
 * Two names whose hashtext collides would exclude each other; with the
 * handful of role names chronicle uses that is a theoretical concern only.
 * A lease is used by one thread at a time.
 */
#include "store/postgres/pg_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK_MS 1000

typedef struct pg_lease {
    store_lease_t base;
    pg_conn_t conn;
    uint64_t generation; /* the session that holds the lock */
    int64_t checked_ms;
    bool lost;
} pg_lease_t;

int pg_lease_try(store_t *s, const char *name, store_lease_t **out, chr_err_t *err)
{
    pg_lease_t *l = calloc(1, sizeof *l);
    if (!l) return chr_fail(err, CHR_ENOMEM, "", "out of memory");
    pg_conn_init(&l->conn, pg_store_conninfo(s), "lease", "SET application_name = 'chronicle lease'");
    char sql[96];
    snprintf(sql, sizeof sql, "SELECT pg_try_advisory_lock(%d, hashtext($1))", PG_LOCK_LEASE_CLASS);
    store_val_t p = {.type = SV_TEXT, .s = name};
    PGresult *r = NULL;
    int rc = pg_conn_exec(&l->conn, sql, &p, 1, &r, err);
    if (rc == CHR_OK) {
        bool taken = PQntuples(r) == 1 && strcmp(PQgetvalue(r, 0, 0), "t") == 0;
        PQclear(r);
        if (!taken) rc = chr_fail(err, CHR_ECONFLICT, "lease", "lease \"%s\" is held", name);
    }
    if (rc) {
        pg_conn_close(&l->conn);
        free(l);
        return rc;
    }
    l->generation = l->conn.generation;
    l->checked_ms = pg_mono_ms();
    *out = &l->base;
    return CHR_OK;
}

bool pg_lease_check(store_lease_t *base)
{
    pg_lease_t *l = (pg_lease_t *)base;
    if (l->lost) return false;
    int64_t now = pg_mono_ms();
    if (now - l->checked_ms < CHECK_MS) return true;
    l->checked_ms = now;
    PGresult *r = NULL;
    chr_err_t err = {0};
    if (pg_conn_exec(&l->conn, "SELECT 1", NULL, 0, &r, &err) != CHR_OK ||
        l->conn.generation != l->generation)
        l->lost = true;
    PQclear(r);
    return !l->lost;
}

void pg_lease_release(store_lease_t *base)
{
    pg_lease_t *l = (pg_lease_t *)base;
    /* Unlock first, and wait for it: closing the session also releases
     * the lock, but the server does that after we have gone, so another
     * instance trying right after this returns could still find it held. */
    if (!l->lost && l->conn.generation == l->generation) {
        char sql[96];
        snprintf(sql, sizeof sql, "SELECT pg_advisory_unlock(%d, hashtext($1))",
                 PG_LOCK_LEASE_CLASS);
        store_val_t p = {.type = SV_TEXT, .s = l->base.name};
        PGresult *r = NULL;
        chr_err_t err = {0};
        if (pg_conn_exec(&l->conn, sql, &p, 1, &r, &err) == CHR_OK) PQclear(r);
    }
    pg_conn_close(&l->conn); /* ending the session releases it in any case */
    free(l);
}
