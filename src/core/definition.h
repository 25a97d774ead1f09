/*
 * definition.h - the app definition model: entities, their fields, commands
 * and events, and the app's own routes. Loaded from JSON and validated by
 * definition_load; after that it is read-only and shared by every thread.
 * Pure: no I/O besides reading the file in definition_load_file.
 *
 * Everything a definition_t holds is owned by it; definition_free releases
 * it all. Indexes (field_def_t.ref_entity, route_def_t.entity) are resolved
 * at load time so later code never looks names up by string.
 */
#ifndef CHRONICLE_CORE_DEFINITION_H
#define CHRONICLE_CORE_DEFINITION_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/access.h"
#include "core/error.h"

typedef enum field_type {
    FT_STRING,    /* one line of text; default max_length 255 */
    FT_TEXT,      /* any text; default max_length 1 MiB */
    FT_INTEGER,   /* a JSON integer that fits int64 */
    FT_NUMBER,    /* any JSON number */
    FT_BOOLEAN,
    FT_TIMESTAMP, /* RFC 3339 text, stored normalised to UTC microseconds */
    FT_ENUM,      /* one of `values` (strings) */
    FT_JSON,      /* any JSON value */
    FT_REF,       /* the key of an entity of `to`, checked in the same transaction */
    FT_CRON,      /* a 5-field cron expression */
    FT_EMAIL,     /* an e-mail address (local@domain), compared case-insensitively */
    FT_PASSWORD,  /* a secret: checked as text, stored as an Argon2id hash, always private */
} field_type_t;

#define FIELD_TYPE_NAMES                                                                        \
    "string, text, integer, number, boolean, timestamp, enum, json, ref, cron, email, password"

typedef struct field_def {
    char *name;
    field_type_t type;
    bool required;
    bool unique;
    bool immutable;   /* may be set on create, never changed after */
    bool is_private;  /* stored, never returned in responses */
    json_t *default_value; /* owned; NULL when none; applied on create */
    bool has_max_length;
    int64_t max_length; /* in characters (UTF-8 code points) */
    bool has_min, has_max;
    double min, max;    /* numbers: value bounds; strings: not used */
    char **values;      /* enum values */
    size_t n_values;
    char *ref_to;       /* FT_REF: entity name */
    int ref_entity;     /* FT_REF: index into definition_t.entities */
    bool ref_keep;      /* FT_REF: "on_delete": "keep" - the target may be deleted while
                           this field refers to it (default "restrict": 409) */
} field_def_t;

enum {
    OP_CREATE = 1 << 0,
    OP_UPDATE = 1 << 1,
    OP_UPSERT = 1 << 2,
    OP_DELETE = 1 << 3,
    OP_ALL = OP_CREATE | OP_UPDATE | OP_UPSERT | OP_DELETE,
};

/* A custom command: POST /v1/{entity}/{key}/{name}. */
typedef struct command_def {
    char *name;
    field_def_t *input; /* the body's fields, same rules as entity fields */
    size_t n_input;
    json_t *when;       /* owned object field -> required current value, or NULL */
    json_t *set;        /* owned object field -> constant, "$input.NAME" or "$now" */
    char *event;        /* event type emitted */
    access_set_t access; /* who may run it (entity "access" by command name) */
} command_def_t;

/* The operations an entity's "access" names besides its commands. An upsert
 * is checked as the create or the update it turns out to be. */
typedef enum access_op {
    ACC_LIST,
    ACC_GET,
    ACC_CREATE,
    ACC_UPDATE,
    ACC_DELETE,
    ACC_HISTORY,
    ACC_N,
} access_op_t;

/* An entity-level "unique": [["a", "b"], ...] group: no two live entities
 * (of one tenant, for tenant-scoped entities) share all these values. */
typedef struct unique_group {
    char **fields; /* owned; field names, at least two */
    size_t n;
} unique_group_t;

typedef struct entity_def {
    char *name;        /* "teams": URL segment, table name, stream prefix */
    char *key;         /* key field name, e.g. "team_id" */
    field_def_t *fields;
    size_t n_fields;
    unsigned operations; /* OP_* mask; default OP_ALL */
    char *ev_create, *ev_update, *ev_delete; /* event types */
    command_def_t *commands;
    size_t n_commands;
    bool recreate_after_delete; /* default true */
    bool tenant_scoped;         /* rows belong to the caller's tenant (system field tenant_id) */
    access_set_t access[ACC_N]; /* per operation; default "authenticated" */
    unique_group_t *unique;     /* composite uniqueness groups */
    size_t n_unique;
    /* The key as a field: always FT_STRING, unique and immutable, never in
     * fields[]. Its options (required: the client must give the key;
     * max_length, default 255) come from fields[key] when the definition
     * declares it there; otherwise the defaults. */
    field_def_t key_field;
} entity_def_t;

/* An app route: METHOD PATH -> entity action, with fixed query options. */
typedef struct route_def {
    char *method;       /* GET, POST, PUT, PATCH, DELETE */
    char *path;         /* "/api/teams/{team_id}" */
    int entity;         /* index into definition_t.entities */
    char *action;       /* create|list|get|update|upsert|delete|history|<command> */
    char *sort;         /* list: fixed sort, e.g. "-created_at" (NULL = key) */
    int64_t limit;      /* list: default page size (0 = 50) */
    int64_t max_limit;  /* list: largest ?limit= accepted (0 = 1000) */
    json_t *filters;    /* list: owned object field -> value, always applied */
    char **fields;      /* response fields to keep (NULL = all public) */
    size_t n_fields;
} route_def_t;

/* A schedule (docs/schedules.md): on each tick of a cron expression, emit an
 * event; either one fixed expression, or for_each row of an entity, that
 * row's cron field. */
typedef struct schedule_def {
    char *name;      /* ^[a-z][a-z0-9_]{0,62}$ */
    char *cron;      /* the fixed expression; NULL with for_each */
    int entity;      /* for_each: index into definition_t.entities; else -1 */
    int cron_field;  /* for_each: index into that entity's fields (a cron field) */
    char *zone;      /* "UTC" or a fixed offset "+HH:MM" as written */
    int32_t offset_s; /* the zone's offset from UTC, seconds east */
    char *event;     /* the event type emitted */
    json_t *data;    /* owned object: the data template (constants, "$tick",
                        "$missed", "$schedule", "$key", "$row.FIELD") */
} schedule_def_t;
/* Which events a consumer (webhook, audit log) is given: types and entities
 * (stream prefix "<entity>-"); an empty list does not filter. */
typedef struct sink_filter {
    char **types;
    size_t n_types;
    char **entities;
    size_t n_entities;
} sink_filter_t;

/* A webhook (definition key `webhooks`): each matching event POSTed as
 * JSON, signed, retried, dead-lettered (docs/worker.md). */
typedef struct webhook_def {
    char *name;         /* the consumer's name; default "webhook_<n>" (1-based) */
    sink_filter_t filter;
    char *url;          /* a literal URL, or NULL when url_env gives it */
    char *url_env;      /* environment variable holding the URL, or NULL */
    char *secret_env;   /* environment variable holding the HMAC secret, or NULL */
    int64_t timeout_ms; /* per request */
    int64_t max_attempts;
    int64_t backoff_ms;     /* delay before the 2nd attempt; doubles after */
    int64_t max_backoff_ms; /* cap of the delay */
} webhook_def_t;

/* The audit log (definition key `audit_log`): every matching event as a
 * JSON line appended to a file rotated by size. */
typedef struct audit_log_def {
    char *path;      /* default "audit.log" (relative to the working directory) */
    char *path_env;  /* environment variable overriding path, or NULL */
    int64_t max_bytes; /* rotate before a line would take the file past this */
    int64_t max_files; /* rotated files kept: path.1 .. path.<max_files> */
    sink_filter_t filter;
} audit_log_def_t;

/* Another chronicle instance's event feed (definition key `feeds`),
 * followed over HTTP by reactions (docs/worker.md#feeds). */
typedef struct feed_def {
    char *name;         /* ^[a-z][a-z0-9_]{0,62}$ */
    char *url;          /* the instance's base URL, or NULL when url_env gives it */
    char *url_env;      /* environment variable holding it, or NULL */
    char *secret_env;   /* environment variable holding its API secret (bearer), or NULL */
    int64_t timeout_ms; /* per request */
    int64_t poll_ms;    /* how often a caught-up reaction asks for more */
} feed_def_t;

/* A reaction (definition key `reactions`): on each event of a type, run a
 * command of this app with a body mapped from the event (core/mapping.h). */
typedef struct reaction_def {
    char *name;            /* the consumer's name */
    char *on;              /* the event type */
    sink_filter_t filter;  /* types = {on} */
    int feed;              /* index into definition_t.feeds; -1 = this instance's feed */
    int entity;            /* the command's entity */
    char *action;          /* create, update, upsert, delete or a command's name */
    json_t *with;          /* owned object: the body template */
    int64_t max_attempts;  /* for failures worth retrying (the store unavailable) */
    int64_t backoff_ms;
    int64_t max_backoff_ms;
} reaction_def_t;

#define AUDIT_LOG_CONSUMER "audit_log"
#define CONSUMER_NAME_MAX 48

/* The definition's "auth" section (all optional). */
typedef struct auth_def {
    char *users;       /* entity with email + password: /v1/auth/login; NULL = none */
    int users_entity;  /* index of users, -1 when none */
    json_t *api_keys;  /* owned array of {name, key_env, roles?, tenant_id?}, checked
                          for shape; the keys themselves come from the environment */
} auth_def_t;

typedef struct definition {
    char *app;
    entity_def_t *entities;
    size_t n_entities;
    route_def_t *routes;
    size_t n_routes;
    schedule_def_t *schedules;
    size_t n_schedules;
    webhook_def_t *webhooks;
    size_t n_webhooks;
    audit_log_def_t *audit_log; /* NULL when the definition has none */
    auth_def_t auth;
    feed_def_t *feeds;
    size_t n_feeds;
    reaction_def_t *reactions;
    size_t n_reactions;
} definition_t;

/* Parses and validates a definition from JSON text. On success *out is a
 * new definition the caller frees with definition_free. On failure returns
 * CHR_EINVAL with err->field = the JSON path ("entities.teams.fields.name.type")
 * and err->msg = "<path>: <problem>"; nothing is allocated. */
int definition_load(const char *json_text, size_t len, definition_t **out, chr_err_t *err);

/* Same, reading the file at path (errors name the file for I/O problems). */
int definition_load_file(const char *path, definition_t **out, chr_err_t *err);

void definition_free(definition_t *def);

/* Lookups; NULL / -1 when absent. Borrowed pointers. */
const entity_def_t *definition_entity(const definition_t *def, const char *name);
int definition_entity_index(const definition_t *def, const char *name);
const field_def_t *entity_field(const entity_def_t *e, const char *name);
const command_def_t *entity_command(const entity_def_t *e, const char *name);
/* Like entity_field, but the key's name gives &e->key_field. */
const field_def_t *entity_field_or_key(const entity_def_t *e, const char *name);

/* The name of an access operation ("list", ...). */
const char *access_op_name(access_op_t op);

/* The name of a field type ("string", ...). */
const char *field_type_name(field_type_t t);

/* A fingerprint of what the projection tables depend on (entities, fields,
 * types, uniqueness): when it changes the projections are rebuilt. Writes a
 * hex string into out (65 bytes). */
void definition_layout_hash(const definition_t *def, char out[65]);

#endif
