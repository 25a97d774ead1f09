/*
 * pg_migrations.c - the versioned schema of chronicle's own PostgreSQL
 * tables (schema "events"; projection tables live in schema "projections"
 * and belong to the engine). Released migrations are never edited: add a
 * new one at the end. Each runs in the migrating transaction, under the
 * advisory lock (PG_LOCK_CLASS, PG_LOCK_MIGRATE), after
 * events.chronicle_migrations exists.
 */
#include "store/postgres/pg_internal.h"

const pg_migration_t pg_migrations[] = {
    {1, "create events",
     "CREATE SCHEMA IF NOT EXISTS projections;"
     /* The columns teams already use, plus the global position. The unique
      * (aggregate_id, version) index is also the index on aggregate_id: its
      * leading column serves every lookup by aggregate. */
     "CREATE TABLE events.events ("
     "  id           VARCHAR(255) PRIMARY KEY,"
     "  type         VARCHAR(255) NOT NULL,"
     "  aggregate_id VARCHAR(255) NOT NULL,"
     "  data         JSONB        NOT NULL,"
     "  timestamp    TIMESTAMPTZ  NOT NULL,"
     "  metadata     JSONB,"
     "  version      INTEGER      NOT NULL,"
     "  created_at   TIMESTAMPTZ  NOT NULL DEFAULT now(),"
     "  position     BIGINT       NOT NULL,"
     "  CONSTRAINT events_position_key UNIQUE (position),"
     "  CONSTRAINT events_aggregate_id_version_key UNIQUE (aggregate_id, version)"
     ");"
     "CREATE INDEX events_type_position ON events.events (type, position);"
     "CREATE INDEX events_timestamp ON events.events (timestamp);"
     /* The one row whose lock serialises position assignment with commit
      * (docs/internals/ordering.md): the highest committed position. */
     "CREATE TABLE events.head ("
     "  id       BOOLEAN PRIMARY KEY DEFAULT true CHECK (id),"
     "  position BIGINT  NOT NULL"
     ");"
     "INSERT INTO events.head (id, position) VALUES (true, 0);"},
};

const size_t pg_migrations_count = sizeof pg_migrations / sizeof pg_migrations[0];
