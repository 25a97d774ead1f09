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
    /* Durable consumers (src/worker/consumer.c): one row per consumer with
     * its checkpoint, and the events it gave up on (dead letters). */
    {2, "create consumers",
     "CREATE TABLE consumers ("
     "  name          TEXT    PRIMARY KEY,"
     "  position      INTEGER NOT NULL DEFAULT 0," /* every event <= position is handled */
     "  epoch         INTEGER NOT NULL DEFAULT 0," /* bumped by each reset */
     "  delivered     INTEGER NOT NULL DEFAULT 0," /* events delivered since created */
     "  last_error    TEXT,"
     "  last_error_at INTEGER,"                    /* microseconds since epoch, UTC */
     "  updated_at    INTEGER NOT NULL"
     ");"
     "CREATE TABLE consumer_dead_letters ("
     "  id         INTEGER PRIMARY KEY,"
     "  consumer   TEXT    NOT NULL,"
     "  position   INTEGER NOT NULL,"
     "  event_id   TEXT    NOT NULL,"
     "  event_type TEXT    NOT NULL,"
     "  attempts   INTEGER NOT NULL,"
     "  error      TEXT    NOT NULL,"
     "  retry      INTEGER NOT NULL DEFAULT 0," /* 1: retry requested */
     "  created_at INTEGER NOT NULL,"
     "  updated_at INTEGER NOT NULL"
     ");"
     "CREATE INDEX consumer_dead_letters_consumer ON consumer_dead_letters(consumer, id);"},
};

const size_t sqlite_migrations_count = sizeof sqlite_migrations / sizeof sqlite_migrations[0];
