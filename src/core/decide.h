/*
 * decide.h - the pure decision core of an entity: decide(state, command) ->
 * event | error, and evolve(state, event) -> state. Everything here works on
 * an entity_def_t and JSON values only: no store, no clock (the caller passes
 * "now"), no I/O.
 *
 * What this does NOT check, because it needs the database or the request:
 * whether refs point at existing entities, uniqueness, tenancy, access rules,
 * and whether the operation is enabled for the entity (e->operations; the
 * router only routes enabled operations). The engine does those.
 *
 * Event data shapes (the record of what happened; field names never start
 * with '_', so the reserved members below cannot collide with fields):
 *   create                  {"<key>": key, field: value, ...} - every field
 *                           that has a value after defaults, normalised.
 *   update (and upsert of   {"<key>": key, field: new value or null, ...,
 *   an existing entity,      "_previous": {field: old value or null, ...}}
 *   which replaces it)
 *                           - only the fields that change.
 *   delete                  {"<key>": key, "_previous": <full data before>}
 *   custom command          {"<key>": key, field: value, ...,
 *                            "_previous": {...}, "_input": <validated input>}
 *                           - every field the command sets.
 */
#ifndef CHRONICLE_CORE_DECIDE_H
#define CHRONICLE_CORE_DECIDE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/definition.h"
#include "core/error.h"

typedef enum cmd_kind {
    CMD_CREATE, /* POST /v1/{entity} */
    CMD_UPDATE, /* PATCH: merge the body into the state */
    CMD_UPSERT, /* PUT: create when absent, else replace (fields left out take
                   their default or null; immutable ones keep their value) */
    CMD_DELETE,
    CMD_CUSTOM, /* POST /v1/{entity}/{key}/{command} */
} cmd_kind_t;

/* A command for one entity. Everything is borrowed for the duration of
 * entity_decide. */
typedef struct entity_cmd {
    cmd_kind_t kind;
    const command_def_t *custom; /* CMD_CUSTOM: the command (one of e->commands) */
    const char *key;             /* the entity key, never NULL; for create the caller
                                    generates a UUIDv7 when the client gave none */
    bool key_generated;          /* create: key was generated, the client gave none (an
                                    error when the definition makes the key required) */
    const json_t *body;          /* the request body, a JSON object; NULL means {} */
    int64_t now_us;              /* the time "$now" resolves to, microseconds */
} entity_cmd_t;

/* The folded state of one entity stream. data is owned by the state. */
typedef struct entity_state {
    json_t *data;       /* object of field values including the key; NULL = never existed */
    int64_t version;    /* stream version of the last event folded, 0 = none */
    bool deleted;       /* the last lifecycle event was a delete (data is kept) */
    int64_t created_at; /* microseconds: timestamp of the (re)creating event */
    int64_t updated_at; /* microseconds: timestamp of the last event folded */
} entity_state_t;

typedef struct field_error {
    char field[128];   /* the field (or input) name */
    char message[256]; /* a sentence fragment, e.g. "is required" */
} field_error_t;

/* The outcome of entity_decide. Owns errors and event_data; release with
 * decision_free. */
typedef struct decision {
    int code;              /* CHR_OK, CHR_EINVAL (422 with errors[]), CHR_ECONFLICT (409),
                              CHR_ENOTFOUND (404), CHR_ENOMEM */
    char detail[384];      /* one sentence for the problem response ("" on CHR_OK) */
    field_error_t *errors; /* CHR_EINVAL: one per offending field, in body order, then
                              missing required fields in definition order */
    size_t n_errors;
    const char *event_type; /* CHR_OK: borrowed from the definition; NULL when nothing
                               changes (an update that changes nothing: no event) */
    json_t *event_data;     /* CHR_OK with an event: new reference owned by the decision;
                               it may share values with cmd->body (treat both read-only) */
} decision_t;

/* Decides what cmd does to the entity in state (a folded stream; a state
 * fresh from entity_state_init means "never existed"). Fills *out (which the
 * caller need not initialise) and returns out->code. On CHR_OK with an event
 * the caller appends {type: out->event_type, data: out->event_data} to the
 * entity's stream, expecting state->version. Always call decision_free on
 * out afterwards, whatever the result. Nothing borrowed from e, state or cmd
 * is kept besides event_type, which lives as long as the definition. */
int entity_decide(const entity_def_t *e, const entity_state_t *state, const entity_cmd_t *cmd,
                  decision_t *out);

/* Releases what a decision owns and resets it; safe on a zeroed decision and
 * twice in a row. */
void decision_free(decision_t *d);

/* A state that never existed: data NULL, version 0. */
void entity_state_init(entity_state_t *s);

/* Releases s->data and resets s to the initial state. */
void entity_state_free(entity_state_t *s);

/* Folds one event of the entity's stream into s (event_data is borrowed).
 *  - e->ev_delete: deleted = true; data is kept as it was (time travel and
 *    audit), callers do not show a deleted entity.
 *  - e->ev_create, e->ev_update and the events of e's commands: every member
 *    of event_data that is the key or a field of e is merged into s->data
 *    (JSON null removes the field; members starting with '_' and unknown
 *    names are ignored). When s never existed or is deleted this (re)creates
 *    it from the event's members alone: deleted = false, created_at = this
 *    timestamp.
 *  - any other type (raw appends) or non-object data leaves data unchanged.
 * In every case version = version and updated_at = timestamp_us. Returns
 * CHR_OK, or CHR_ENOMEM with s unchanged. */
int entity_evolve(const entity_def_t *e, entity_state_t *s, const char *event_type,
                  const json_t *event_data, int64_t version, int64_t timestamp_us);

/* The public JSON view of a state: the key, then every non-private field in
 * definition order (null when it has no value), then "version", "created_at"
 * and "updated_at" (RFC 3339 UTC). Members of data that are no longer fields
 * of e are left out. Returns a new reference, or NULL when s->data is NULL
 * (never existed) or on allocation failure. A deleted state is rendered too:
 * check s->deleted before showing it. */
json_t *entity_state_to_json(const entity_def_t *e, const entity_state_t *s);

#endif
