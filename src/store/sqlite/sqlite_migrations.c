/*
 * sqlite_migrations.c - the versioned schema of chronicle's own SQLite
 * tables. Released migrations are never edited: add a new one at the end.
 */
#include "store/sqlite/sqlite_internal.h"

const sqlite_migration_t sqlite_migrations[] = {
    {1, "create events",
     "CREATE TABLE events ("
     "  position  INTEGER PRIMARY KEY," /* rowid: global order, gap-tolerant */
     "  id        TEXT    NOT NULL UNIQUE,"
     "  stream    TEXT    NOT NULL,"
     "  version   INTEGER NOT NULL,"
     "  type      TEXT    NOT NULL,"
     "  data      TEXT    NOT NULL,"
     "  metadata  TEXT,"
     "  timestamp INTEGER NOT NULL," /* microseconds since epoch, UTC */
     "  UNIQUE (stream, version)"
     ");"
     "CREATE INDEX events_type ON events(type, position);"},
};

const size_t sqlite_migrations_count = sizeof sqlite_migrations / sizeof sqlite_migrations[0];
