/*
 * sqlite_internal.h - what the SQLite backend's files share. Not for callers:
 * they use store.h.
 */
#ifndef CHRONICLE_STORE_SQLITE_INTERNAL_H
#define CHRONICLE_STORE_SQLITE_INTERNAL_H

#include <stddef.h>

typedef struct sqlite_migration {
    int version;
    const char *name;
    const char *sql; /* one or more statements, run in one transaction */
} sqlite_migration_t;

extern const sqlite_migration_t sqlite_migrations[];
extern const size_t sqlite_migrations_count;

#endif
