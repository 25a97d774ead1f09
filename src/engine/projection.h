/*
 * projection.h - inline projections: one table per entity, kept in the same
 * transaction as the entity's events, and rebuilt from the log when the
 * definition's layout changes.
 *
 * Table layout (dialect-neutral SQL, identifiers from the definition only):
 *   "<entity>" ( "<key>" TEXT PRIMARY KEY, one column per field,
 *                "tenant_id" TEXT (tenant-scoped entities only),
 *                "version" INTEGER, "created_at" INTEGER, "updated_at" INTEGER
 *                (microseconds), "_deleted" INTEGER, "_doc" TEXT (the whole
 *                state as JSON, private fields included), "_json" TEXT (the
 *                public view as served, so lists copy it instead of
 *                re-rendering every row) )
 * Deleted entities keep a row with "_deleted" = 1 (a tombstone) so
 * recreate_after_delete can be decided from the row alone; unique indexes
 * are partial (live rows only).
 */
#ifndef CHRONICLE_ENGINE_PROJECTION_H
#define CHRONICLE_ENGINE_PROJECTION_H

#include <stdbool.h>

#include "core/decide.h"
#include "core/definition.h"
#include "store/store.h"

/* SQL texts for one entity, built once at start. */
typedef struct proj_entity {
    const entity_def_t *def;
    char *create_table;
    char **create_indexes;
    size_t n_indexes;
    char *drop_table;
    char *upsert_row;   /* all columns, by key */
    char *select_state; /* _doc, version, created_at, updated_at, _deleted by key */
    char *exists_live;  /* 1 by key when live */
    char *exists_live_tenant; /* tenant-scoped: 1 by key and tenant_id when live */
    char **group_check; /* per unique group: another live row has the values */
    char **unique_check; /* per field (NULL when not unique): another live row has the value */
    size_t n_columns;    /* bound parameters of upsert_row */
    /* Refs to this entity: per ref field of any entity that points here, a
     * query finding a live row (other than the one being deleted) whose
     * field holds a given key. A delete is refused while one does. */
    struct proj_ref_by {
        int entity, field; /* the referring entity and its ref field */
        char *sql;         /* params: the key, the key again (self refs) */
    } *ref_by;
    size_t n_ref_by;
    /* read model only (NULL otherwise): PROJ_LOAD_MANY rows by key (key
     * first, then as select_state), PROJ_WRITE_MANY rows in one upsert */
    char *select_many;
    char *upsert_many;
} proj_entity_t;

#define PROJ_LOAD_MANY 64
#define PROJ_WRITE_MANY 32

typedef struct projections {
    const definition_t *def;
    proj_entity_t *entities; /* parallel to def->entities */
    char layout[80]; /* definition layout hash + "/" + table format version [+ "/read"] */
    bool read_model; /* the asynchronous read model (projections_init_read_model) */
} projections_t;

/* The read model's checkpoint (one row, id 1, in the read model's database):
 * the position of the last event whose effect its tables hold. The
 * projector moves it in the same transaction as the rows (projector.h). */
#define PROJECTION_CHECKPOINT_TABLE "chronicle_projector"

/* Builds the SQL for every entity of def (borrowed; must outlive p). */
int projections_init(projections_t *p, const definition_t *def, chr_err_t *err);

/* As projections_init, for the read model kept by the projector in another
 * database: the same tables, but unique indexes are plain ones and writes
 * check neither refs nor unique values (the write model decided those when
 * the events were appended; the read model mirrors the log, whatever it
 * says). projections_sync on such p creates or recreates the tables and
 * resets the checkpoint instead of replaying: the projector refills them. */
int projections_init_read_model(projections_t *p, const definition_t *def, chr_err_t *err);
void projections_free(projections_t *p);

/* Makes the stored projections match the definition: creates missing
 * tables, and when the stored layout differs from the definition's, drops
 * the old tables and rebuilds every row from the events. *rebuilt tells
 * whether a rebuild happened; *events the number of events replayed.
 * Several instances starting at once do this one at a time: each first
 * takes the store lease "projections-sync" (waiting while another holds it),
 * so one rebuilds and the others then find the tables ready. */
int projections_sync(projections_t *p, store_t *s, bool *rebuilt, int64_t *events, chr_err_t *err);

/* Drops and rebuilds every projection from the events (chronicle rebuild). */
int projections_rebuild(projections_t *p, store_t *s, int64_t *events, chr_err_t *err);

/* Reads one entity's current state from its table through a reader
 * connection. state must be initialised; left empty when there is no row. */
int projection_load(const projections_t *p, store_t *s, int entity, const char *key,
                    entity_state_t *state, chr_err_t *err);

/* Sets *exists: entity `entity` has a live row with this key (a
 * primary-key read on a reader connection). */
int projection_exists(const projections_t *p, store_t *s, int entity, const char *key,
                      bool *exists, chr_err_t *err);

/* A row ready to write: its JSON texts are rendered outside the writer
 * thread (projection_row_render) so the single writer only runs SQL. */
typedef struct projection_row {
    const char *key;             /* borrowed */
    const entity_state_t *state; /* borrowed */
    char *doc;                   /* owned: the whole state (private fields too) */
    char *pub;                   /* owned: the public view as served */
    bool replay;                 /* rebuilding from the log: write what the events say,
                                    without the checks of refs and unique values */
} projection_row_t;

/* Renders the texts of a row. Returns CHR_OK or CHR_ENOMEM (row empty). */
int projection_row_render(const projections_t *p, int entity, const char *key,
                          const entity_state_t *state, projection_row_t *row);
void projection_row_free(projection_row_t *row);

/* Inside a unit of work: checks refs and unique values of the row's state
 * against the other rows, then writes the row. Ref misses are CHR_EINVAL
 * and unique clashes CHR_ECONFLICT, with err->field naming the field. */
int projection_write(const projections_t *p, store_tx_t *tx, int entity,
                     const projection_row_t *row, chr_err_t *err);

/* Inside a unit of work: folds events (in position order) into the rows
 * they touch: load each row, evolve it, write it. Events of other streams
 * are skipped. With the inline projections ref and unique clashes are
 * ignored (a rebuild reproduces what the log says); with the read model
 * nothing is checked. */
int projection_apply_events(const projections_t *p, store_tx_t *tx, const event_list_t *events,
                            chr_err_t *err);

/* Inside a unit of work: CHR_ECONFLICT unless the stored layout is p's
 * (another definition's instance synced the tables since). Locks the layout
 * row until the unit ends, so a sync cannot interleave with the unit. */
int projections_check_layout(const projections_t *p, store_tx_t *tx, chr_err_t *err);

/* Splits a stream name "<entity>-<key>" into the entity index and the key
 * (borrowed, points into stream). Returns false for other streams. */
bool projection_stream_entity(const projections_t *p, const char *stream, int *entity,
                              const char **key);

#endif
