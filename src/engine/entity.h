/*
 * entity.h - the command pipeline and the reads of entities: load the
 * state, decide, append the event and write the projection row in one unit
 * of work (retrying when another writer got there first), and answer gets,
 * lists, history and time travel. Transport-free: http/ calls this, and
 * nothing here knows about HTTP.
 *
 * Access rules and tenancy are enforced here, not by the callers: every
 * read and command takes the caller's scope (core/access.h) and the engine
 * refuses the operation (CHR_EUNAUTHORIZED, CHR_EFORBIDDEN), confines it
 * to the caller's tenant and owned rows (list predicates; CHR_ENOTFOUND
 * for a row the caller may not see, exactly as for one that does not
 * exist), sets tenant_id on creates and tags every event of a
 * tenant-scoped entity with metadata {"tenant_id": ...} for the feed.
 * scope NULL is refused (CHR_EFORBIDDEN); internal callers pass
 * &access_scope_full.
 */
#ifndef CHRONICLE_ENGINE_ENTITY_H
#define CHRONICLE_ENGINE_ENTITY_H

#include <jansson.h>
#include <stdbool.h>

#include "core/access.h"
#include "core/decide.h"
#include "core/definition.h"
#include "core/query.h"
#include "engine/projection.h"
#include "store/store.h"

typedef struct projector projector_t;

typedef struct engine {
    const definition_t *def; /* borrowed */
    store_t *store;          /* borrowed: the events and the write model (inline tables) */
    projections_t proj;
    /* Where gets and lists read: store itself, or with split databases the
     * read model's store (borrowed), kept by a projector (projector.h). */
    store_t *reads;
    projections_t read_proj;    /* the read model's SQL; when reads != store */
    bool read_proj_open;
    projector_t *projector;     /* with split databases (projector_start); else NULL */
} engine_t;

/* Binds def to s: builds the projection SQL and brings the tables in line
 * with the definition, rebuilding them from the events when the layout
 * changed (*rebuilt, *replayed tell). */
int engine_open(engine_t *eng, const definition_t *def, store_t *s, bool *rebuilt,
                int64_t *replayed, chr_err_t *err);
void engine_close(engine_t *eng);

/* Split databases: gets and lists read from the read model in reads (a
 * store of another database), created or brought in line with the
 * definition there (under the same sync lease as the inline tables).
 * Commands keep deciding on the write model in the events store: nothing
 * they decide rests on the read model. */
int engine_attach_read_model(engine_t *eng, store_t *reads, chr_err_t *err);

/* The outcome of a command. Owns body and the decision. */
typedef struct engine_result {
    int code;           /* CHR_OK or the failure (decision.code / store codes) */
    bool created;       /* the entity did not exist before (201) */
    json_t *body;       /* CHR_OK: the entity's public JSON (new reference) */
    int64_t version;    /* CHR_OK: the entity's version (ETag) */
    decision_t decision; /* detail and field errors on failure */
    chr_err_t err;       /* store-side failures (ref, unique, I/O) */
} engine_result_t;

void engine_result_free(engine_result_t *r);

/* Runs a command on entity index `entity`, blocking the calling thread
 * until it is decided and, when it changes something, durably committed.
 * key may be NULL for a create (the body's key member or a new UUIDv7 is
 * used). if_match < 0 means no If-Match. The result says what happened; the
 * return value is r->code. A wrapper around engine_command_start/resume
 * that waits on a semaphore: not for a thread that serves other commands
 * (an HTTP worker), whose turn it might wait for while holding the thread
 * they need. */
int engine_command(engine_t *eng, const access_scope_t *scope, int entity, cmd_kind_t kind,
                   const command_def_t *custom, const char *key, const json_t *body,
                   int64_t if_match, engine_result_t *r);

/* Options of a command run on behalf of something else (a reaction). */
typedef struct engine_cmd_opts {
    const char *event_id; /* the new event's id (a UUID), or NULL for a new UUIDv7; an id
                             already stored makes the store answer with the original
                             event (idempotency) or a conflict (different content) */
    const char *metadata; /* the new event's metadata (JSON object text), or NULL */
} engine_cmd_opts_t;

/* engine_command with opts (may be NULL: same as engine_command). */
int engine_command_opts(engine_t *eng, const access_scope_t *scope, int entity, cmd_kind_t kind,
                        const command_def_t *custom,
                        const char *key, const json_t *body, int64_t if_match,
                        const engine_cmd_opts_t *opts, engine_result_t *r);

/* ---- commands without a thread waiting ----------------------------------
 *
 * The same pipeline as engine_command, for callers that must not block (the
 * HTTP server suspends the request instead). A command waits at most in two
 * places: for its entity's turn (commands on one entity run one after the
 * other, in arrival order, within this process) and for its group commit.
 * Each time it would wait, the call returns ENGINE_PENDING and the command
 * later calls wake(user) exactly once, from another thread (the store's
 * writer, or whichever thread finished the entity's previous command). The
 * caller then calls engine_command_resume, on any thread, which either
 * returns the final code (r filled) or ENGINE_PENDING again. wake must not
 * block: it runs on the store's writer thread. */

#define ENGINE_PENDING 1 /* not an error: wake(user) will follow */

typedef struct engine_cmd engine_cmd_t;
typedef void (*engine_wake_fn)(void *user);

/* Starts a command (arguments as engine_command). body and r are borrowed
 * and must stay alive until engine_command_free; *out is a new command
 * (NULL when the arguments were refused or memory ran out: r says why).
 * Returns ENGINE_PENDING, or r->code once the command is over. */
int engine_command_start(engine_t *eng, const access_scope_t *scope, int entity, cmd_kind_t kind,
                         const command_def_t *custom, const char *key, const json_t *body,
                         int64_t if_match, engine_result_t *r, engine_wake_fn wake, void *user,
                         engine_cmd_t **out);

/* Continues a command after its wake: ENGINE_PENDING (another wake will
 * follow) or r->code. */
int engine_command_resume(engine_cmd_t *c);

/* Frees a command (NULL is fine): done, never started waiting, or woken and
 * not resumed (a caller that gives up, e.g. its client left). Never while a
 * wake is still due. Gives up the entity's turn if the command holds it. */
void engine_command_free(engine_cmd_t *c);

/* The current public JSON of one entity (*out new reference, *version its
 * version). CHR_ENOTFOUND when it does not exist or is deleted. */
int engine_get(engine_t *eng, const access_scope_t *scope, int entity, const char *key,
               json_t **out, int64_t *version, chr_err_t *err);

/* Its state as of a past moment: at_us >= 0 folds the events up to that
 * time, version > 0 up to that version. CHR_ENOTFOUND when it did not exist
 * (or was deleted) then. */
int engine_get_past(engine_t *eng, const access_scope_t *scope, int entity, const char *key,
                    int64_t at_us, int64_t version, json_t **out, int64_t *version_out,
                    chr_err_t *err);

/* Its events, oldest first, as a JSON array (private fields removed from
 * event data). CHR_ENOTFOUND when the stream has no events. */
int engine_history(engine_t *eng, const access_scope_t *scope, int entity, const char *key,
                   json_t **out, chr_err_t *err);

/* A page of live entities matching q as JSON array text: *out (caller
 * frees, *out_len bytes) is built from the rows' stored public JSON, so no
 * row is parsed unless fields (may be NULL) narrows each item to those
 * members. *next is a cursor for the following page or NULL (caller frees).
 * The scope's predicates (tenant, owner) are added to q. */
int engine_list(engine_t *eng, const access_scope_t *scope, int entity, query_t *q,
                char *const *fields, size_t n_fields, char **out, size_t *out_len, char **next,
                chr_err_t *err);

/* Whether the caller may see an event of the log (/v1/events, SSE, raw
 * stream reads). Events of entity streams: the entity's history rule must
 * admit the caller outright (owner rules do not: use the entity's history
 * route), and for tenant-scoped entities the event's tenant must be the
 * caller's. Other streams: the event's metadata tenant_id must be the
 * caller's tenant (both none for callers without one). Full access
 * without a tenant sees everything. */
bool engine_event_visible(const engine_t *eng, const access_scope_t *scope, const event_t *ev);

/* Whether the caller may use a raw stream (/v1/streams/{stream}), and the
 * stream it means (into out, size bytes). Full access without a tenant:
 * any stream, as named. A caller with a tenant lives in its own namespace:
 * a name is stored as "<tenant>:<name>" unless it already starts so, so
 * two tenants' "orders" never meet (entity streams keep their names and
 * are read under the entity's history rule: CHR_ENOTFOUND when hidden). A
 * caller without a tenant: names without ':' (those are tenants'), as
 * named. CHR_EFORBIDDEN, or CHR_EINVAL when the name gets too long. */
int engine_stream_access(engine_t *eng, const access_scope_t *scope, const char *stream,
                         bool write, char *out, size_t size, chr_err_t *err);

/* Drops the events scope may not see from list (in place). */
void engine_filter_events(const engine_t *eng, const access_scope_t *scope, event_list_t *list);

/* For an event of an entity stream whose entity has private fields: a new
 * string (caller frees) with its data minus those fields, in data and in
 * _previous. NULL when there is nothing to remove (use ev->data as is). The
 * raw log (/v1/streams, /v1/events, SSE) shows events through this. */
char *engine_redacted_data(const engine_t *eng, const event_t *ev);

/* Keeps only the members of item named in fields (a route's "fields"
 * option); fields NULL keeps everything. item is stolen; returns a new
 * reference (NULL on allocation failure). */
json_t *engine_keep_fields(json_t *item, char *const *fields, size_t n);

/* ---- for logins (http/handlers_auth.c) ---------------------------------- */

/* Sets *exists: the entity with this key is live (not deleted). */
int engine_exists(engine_t *eng, int entity, const char *key, bool *exists, chr_err_t *err);

/* The live entity whose field `field` equals value (compared as a filter
 * would: e-mail case-insensitively), with its whole state, private fields
 * included: *key (caller frees) and *doc (new reference). CHR_ENOTFOUND
 * when there is none. For unique fields; with several matches the first
 * by key is taken. tenant (may be NULL) confines a tenant-scoped entity. */
int engine_find_private(engine_t *eng, int entity, const char *tenant, const char *field,
                        const char *value, char **key, json_t **doc, chr_err_t *err);

/* The stream of an entity: "<entity>-<key>" into out. */
void engine_stream_name(const entity_def_t *e, const char *key, char *out, size_t size);

#endif
