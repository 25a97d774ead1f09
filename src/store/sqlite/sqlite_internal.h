/*
 * sqlite_internal.h - what the SQLite backend's files share. Not for callers:
 * they use store.h.
 */
#ifndef CHRONICLE_STORE_SQLITE_INTERNAL_H
#define CHRONICLE_STORE_SQLITE_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>

#include "core/error.h"
#include "store/store.h"

typedef struct sqlite_migration {
    int version;
    const char *name;
    const char *sql; /* one or more statements, run in one transaction */
} sqlite_migration_t;

extern const sqlite_migration_t sqlite_migrations[];
extern const size_t sqlite_migrations_count;

/* Leases (sqlite_lease.c): flock(2) on "<db path>-lease-<name>". */
int sq_lease_try(store_t *s, const char *name, store_lease_t **out, chr_err_t *err);
bool sq_lease_check(store_lease_t *l);
void sq_lease_release(store_lease_t *l);

/* The database file's path (sqlite_store.c). */
const char *sqlite_store_path(store_t *s);

#endif
