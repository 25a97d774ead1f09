/*
 * entity.c - the command pipeline and reads of entities; see entity.h.
 *
 * A command is decided against the state in the entity's projection row,
 * read outside the writer; the unit of work then appends the event with the
 * row's version as the expected version, so a concurrent command makes it a
 * conflict and we decide again on the fresh state (optimistic concurrency).
 * Refs and unique values are checked inside the unit of work, where no
 * other writer can interleave.
 *
 * Within one process, commands on the same entity take turns: each stream
 * hashes to one of a set of stripes, and a stripe has one owner at a time
 * and a FIFO of commands waiting for it (optimistic retries alone are
 * unfair on a hot entity: the last winner keeps winning). A turn is not a
 * held thread: a command that finds its stripe taken queues itself and
 * returns ENGINE_PENDING; the owner, when its commit is done (on the
 * store's writer thread) or when it ends without committing, hands the
 * stripe to the first waiter and wakes it. Retries remain for writers in
 * other processes; a command keeps its turn across them.
 */
#include "engine/entity.h"

#include <pthread.h>
#include <semaphore.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/field.h"
#include "core/timefmt.h"
#include "core/uuid.h"
#include "util/log.h"

#define MAX_ATTEMPTS 32
#define HISTORY_PAGE 1000

#define KEY_STRIPES 4096
#define KEY_MAX 1024 /* bytes of a key, NUL included */

/* One turn for the commands of the streams that hash here. */
typedef struct stripe {
    pthread_mutex_t lock;      /* guards the fields below; held only briefly */
    bool busy;                 /* a command owns the turn */
    engine_cmd_t *head, *tail; /* commands waiting for it, oldest first */
} stripe_t;

static stripe_t stripes[KEY_STRIPES];
static pthread_once_t stripes_once = PTHREAD_ONCE_INIT;

static void stripes_init(void)
{
    for (size_t i = 0; i < KEY_STRIPES; i++) pthread_mutex_init(&stripes[i].lock, NULL);
}

static stripe_t *stripe_of(const char *stream)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (const char *p = stream; *p; p++) h = (h ^ (unsigned char)*p) * 1099511628211ull;
    return &stripes[h % KEY_STRIPES];
}

int engine_open(engine_t *eng, const definition_t *def, store_t *s, bool *rebuilt,
                int64_t *replayed, chr_err_t *err)
{
    pthread_once(&stripes_once, stripes_init);
    memset(eng, 0, sizeof *eng);
    eng->def = def;
    eng->store = s;
    eng->reads = s;
    int rc = projections_init(&eng->proj, def, err);
    if (rc) return rc;
    rc = projections_sync(&eng->proj, s, rebuilt, replayed, err);
    if (rc) projections_free(&eng->proj);
    return rc;
}

static int identity_row(void *user, const store_val_t *v, size_t n)
{
    if (n >= 1 && v[0].type == SV_TEXT) snprintf(user, 256, "%s", v[0].s);
    return 1;
}

/* Which PostgreSQL database s is: name, port and server start time. */
static int database_identity(store_t *s, char out[256], chr_err_t *err)
{
    out[0] = '\0';
    return store_query(s,
                       "SELECT current_database() || '/' || current_setting('port') || '/' || "
                       "pg_postmaster_start_time()::text",
                       NULL, 0, identity_row, out, err);
}

int engine_attach_read_model(engine_t *eng, store_t *reads, chr_err_t *err)
{
    /* Two URLs may name one database: its inline tables and the read model
     * would then be the same tables, written by two owners. */
    if (strcmp(eng->store->ops->name, "postgres") == 0 &&
        strcmp(reads->ops->name, "postgres") == 0) {
        char a[256], b[256];
        int rc = database_identity(eng->store, a, err);
        if (!rc) rc = database_identity(reads, b, err);
        if (rc) return rc;
        if (strcmp(a, b) == 0)
            return chr_fail(err, CHR_EINVAL, "PROJECTION_DB_URL",
                            "PROJECTION_DB_URL names the same database as DATABASE_URL (%s); "
                            "unset it for inline projections",
                            a);
    }
    int rc = projections_init_read_model(&eng->read_proj, eng->def, err);
    if (rc) return rc;
    bool rebuilt = false;
    int64_t replayed = 0;
    rc = projections_sync(&eng->read_proj, reads, &rebuilt, &replayed, err);
    if (rc) {
        projections_free(&eng->read_proj);
        return rc;
    }
    if (rebuilt)
        log_at(LOG_ALWAYS, "read model emptied for a new layout; the projector refills it",
               LOG_S("app", eng->def->app));
    eng->read_proj_open = true;
    eng->reads = reads;
    return CHR_OK;
}

void engine_close(engine_t *eng)
{
    projections_free(&eng->proj);
    if (eng->read_proj_open) projections_free(&eng->read_proj);
    eng->read_proj_open = false;
}

void engine_result_free(engine_result_t *r)
{
    json_decref(r->body);
    decision_free(&r->decision);
    memset(r, 0, sizeof *r);
}

void engine_stream_name(const entity_def_t *e, const char *key, char *out, size_t size)
{
    snprintf(out, size, "%s-%s", e->name, key);
}

/* ---- access ------------------------------------------------------------- */

static const char *doc_str(const json_t *doc, const char *name)
{
    const json_t *v = name ? json_object_get(doc, name) : NULL;
    return json_is_string(v) ? json_string_value(v) : NULL;
}

/* Whether the caller passes rule set rules of entity e before any row is
 * read: fills *verdict (ACCESS_ALLOW or ACCESS_OWNED) or fails with
 * CHR_EUNAUTHORIZED / CHR_EFORBIDDEN. A tenant-scoped entity also needs a
 * caller with a tenant, unless it has full access. */
static int gate(const entity_def_t *e, const access_set_t *rules, const char *op,
                const access_scope_t *scope, access_verdict_t *verdict, chr_err_t *err)
{
    if (!scope) return chr_fail(err, CHR_EFORBIDDEN, "", "no caller given");
    access_verdict_t v = access_check(rules, scope);
    if (v == ACCESS_UNAUTHENTICATED)
        return chr_fail(err, CHR_EUNAUTHORIZED, "", "%s of %s needs a credential", op, e->name);
    if (v == ACCESS_FORBIDDEN)
        return chr_fail(err, CHR_EFORBIDDEN, "", "the caller's credential does not allow %s of %s",
                        op, e->name);
    if (e->tenant_scoped && !scope->full && !access_tenant(scope))
        return chr_fail(err, CHR_EFORBIDDEN, "",
                        "%s belongs to tenants and the caller's credential names no tenant",
                        e->name);
    *verdict = v;
    return CHR_OK;
}

/* Whether a row (its whole state) is within the caller's reach: of the
 * caller's tenant and, under an owner verdict, owned by the caller. */
static bool row_visible(const entity_def_t *e, const access_set_t *rules, access_verdict_t v,
                        const access_scope_t *scope, const json_t *doc)
{
    const char *t = access_tenant(scope);
    if (e->tenant_scoped && t) {
        const char *rt = doc_str(doc, "tenant_id");
        if (!rt || strcmp(rt, t) != 0) return false;
    }
    if (v == ACCESS_OWNED) return access_owns(scope, doc_str(doc, access_owner_field(rules)));
    return true;
}

/* Whether the caller could read this row with a get (so a refused write
 * may say 403 instead of 404). */
static bool row_readable(const entity_def_t *e, const access_scope_t *scope, const json_t *doc)
{
    access_verdict_t v = access_check(&e->access[ACC_GET], scope);
    if (v != ACCESS_ALLOW && v != ACCESS_OWNED) return false;
    return row_visible(e, &e->access[ACC_GET], v, scope, doc);
}

/* The current row of key when the caller may see it under op's rules
 * (deleted rows included: history and time travel show them). A row the
 * caller may not see is CHR_ENOTFOUND, as a missing one. from: the store
 * whose projection tables to read (eng->reads for gets served from the read
 * model; eng->store where the write model decides, as for the log's reads). */
static int visible_row(engine_t *eng, store_t *from, const access_scope_t *scope, int entity,
                       access_op_t op, const char *key, entity_state_t *st, chr_err_t *err)
{
    const entity_def_t *e = &eng->def->entities[entity];
    access_verdict_t v;
    int rc = gate(e, &e->access[op], access_op_name(op), scope, &v, err);
    if (rc) return rc;
    if (!key_valid(key)) return chr_fail(err, CHR_ENOTFOUND, "", "%s %s does not exist", e->name, key);
    rc = projection_load(&eng->proj, from, entity, key, st, err);
    if (rc) return rc;
    if (!st->data || !row_visible(e, &e->access[op], v, scope, st->data))
        return chr_fail(err, CHR_ENOTFOUND, "", "%s %s does not exist", e->name, key);
    return CHR_OK;
}

/* ---- commands ----------------------------------------------------------- */

typedef struct write_ctx {
    const projections_t *proj;
    int entity;
    projection_row_t row;
} write_ctx_t;

typedef enum cmd_phase {
    PHASE_TURN,   /* queued on its stripe: woken when it is its turn */
    PHASE_COMMIT, /* its unit of work is queued: woken when the batch is done */
    PHASE_DONE,   /* r holds the outcome */
} cmd_phase_t;

struct engine_cmd {
    engine_t *eng;
    access_scope_t scope;    /* the caller; points into who and tenant */
    auth_principal_t who;
    char tenant[AUTH_SUB_MAX + 1];
    json_t *own_body;        /* the body with the owner field filled in, or NULL */
    int entity;
    cmd_kind_t kind;
    const command_def_t *custom;
    const json_t *body; /* borrowed */
    int64_t if_match;
    bool generated; /* the key was generated, not given */
    char event_id[UUID_STR_LEN + 1]; /* "" = generate */
    char *metadata;                  /* owned; NULL = none */
    char key[KEY_MAX];
    char stream[1200];  /* "<entity>-<key>", checked against EVENT_NAME_MAX */
    engine_result_t *r; /* borrowed */
    engine_wake_fn wake;
    void *user;

    cmd_phase_t phase;
    int attempt;
    stripe_t *stripe;
    bool owns_turn; /* under stripe->lock while queued; the command's own after */
    bool queued;    /* in stripe's waiters; under stripe->lock */
    engine_cmd_t *next_waiter;

    /* the attempt in flight: freed when it is over (all free zeroed state) */
    entity_state_t state, next;
    bool existed;
    event_t ev;
    write_ctx_t w;
    store_append_t ap;
    store_uow_t uow;
    int commit_rc; /* written by the writer thread before the wake */
    bool raced;    /* likewise: lost to a writer in another process; keep the turn */
};

static int write_row(store_tx_t *tx, void *user, chr_err_t *err)
{
    write_ctx_t *w = user;
    return projection_write(w->proj, tx, w->entity, &w->row, err);
}

/* Deep-copies a state (data is copied, not shared). */
static int state_copy(entity_state_t *dst, const entity_state_t *src)
{
    *dst = *src;
    dst->data = src->data ? json_deep_copy(src->data) : NULL;
    return src->data && !dst->data ? CHR_ENOMEM : CHR_OK;
}

/* The key of a command: the URL's, else the body's key member (when a
 * string), else a new UUIDv7. decide checks the key's syntax and the key
 * field's rules; *generated tells it the client gave none. */
static void command_key(const entity_def_t *e, const char *key, const json_t *body, char *out,
                        size_t size, bool *generated)
{
    const json_t *k = body && json_is_object(body) ? json_object_get(body, e->key) : NULL;
    if (!key && k && json_is_string(k)) key = json_string_value(k);
    *generated = !key;
    if (!key) {
        char id[UUID_STR_LEN + 1];
        uuid_v7_generate(id);
        snprintf(out, size, "%s", id);
    } else {
        snprintf(out, size, "%s", key);
    }
}

/* After losing a race on one entity to a writer in another process: wait a
 * random while that grows with the attempts, so racers on a hot entity
 * spread out instead of colliding in every batch (contention control, not
 * synchronisation; within this process turns prevent such races). */
static void backoff(int attempt)
{
    uint32_t cap_us = 50u << (attempt < 6 ? attempt : 6); /* 50 us .. 3.2 ms */
    uint32_t us = randombytes_uniform(cap_us);
    struct timespec ts = {0, (long)us * 1000L};
    nanosleep(&ts, NULL);
}

/* Takes c's turn at once when its stripe is free (true); else queues c, to
 * be woken by the owner's turn_pass (false). */
static bool turn_take(engine_cmd_t *c)
{
    stripe_t *s = c->stripe;
    pthread_mutex_lock(&s->lock);
    bool now = !s->busy;
    if (now) {
        s->busy = true;
        c->owns_turn = true;
    } else {
        c->queued = true;
        c->next_waiter = NULL;
        if (s->tail)
            s->tail->next_waiter = c;
        else
            s->head = c;
        s->tail = c;
    }
    pthread_mutex_unlock(&s->lock);
    return now;
}

/* Ends c's turn: hands the stripe to the oldest waiter and wakes it, or
 * frees the stripe. Any thread; does not block beyond the stripe's lock. */
static void turn_pass(engine_cmd_t *c)
{
    stripe_t *s = c->stripe;
    pthread_mutex_lock(&s->lock);
    c->owns_turn = false;
    engine_cmd_t *next = s->head;
    if (next) {
        s->head = next->next_waiter;
        if (!s->head) s->tail = NULL;
        next->next_waiter = NULL;
        next->queued = false;
        next->owns_turn = true;
    } else {
        s->busy = false;
    }
    pthread_mutex_unlock(&s->lock);
    if (next) next->wake(next->user); /* the waiter is alive: its wake is due */
}

/* Frees what one attempt holds. */
static void attempt_clear(engine_cmd_t *c)
{
    event_free(&c->ev);
    projection_row_free(&c->w.row);
    entity_state_free(&c->next);
    entity_state_free(&c->state);
}

/* The command is over with rc: gives up the turn, keeps the outcome. */
static int finish(engine_cmd_t *c, int rc)
{
    attempt_clear(c);
    if (c->owns_turn) turn_pass(c);
    c->phase = PHASE_DONE;
    return c->r->code = rc;
}

/* Store completion, on the writer thread: records the outcome, ends the
 * turn unless the command must try again, and wakes the caller (the last
 * touch of c: the caller may free it at once). */
static void commit_done(void *user, int rc)
{
    engine_cmd_t *c = user;
    c->commit_rc = rc;
    c->raced = rc == CHR_ECONFLICT && strcmp(c->r->err.field, "expected_version") == 0;
    if (!c->raced) turn_pass(c);
    c->wake(c->user);
}

static bool same_str(const char *a, const char *b)
{
    return a && b && strcmp(a, b) == 0;
}

/* The rules of a command: its kind's (an upsert's as the create or update
 * it turns out to be) or the custom command's own. */
static const access_set_t *command_rules(const entity_def_t *e, cmd_kind_t kind,
                                         const command_def_t *custom, bool creating)
{
    if (kind == CMD_CUSTOM && custom) return &custom->access;
    if (creating) return &e->access[ACC_CREATE];
    return &e->access[kind == CMD_DELETE ? ACC_DELETE : ACC_UPDATE];
}

static const char *command_op(cmd_kind_t kind, const command_def_t *custom)
{
    if (kind == CMD_CUSTOM && custom) return custom->name;
    return kind == CMD_DELETE ? "delete" : "update";
}

/* One attempt, holding the turn: load, decide, and queue the unit of work.
 * Returns ENGINE_PENDING (commit_done will wake) or the final code. */
static int attempt_run(engine_cmd_t *c)
{
    engine_t *eng = c->eng;
    engine_result_t *r = c->r;
    const entity_def_t *e = &eng->def->entities[c->entity];
    /* A key chronicle just generated (UUIDv7) names no entity yet: its
     * state is the empty one, without a round trip to the store. Should it
     * exist after all, the store refuses the append (expected version 0)
     * and the retry loads it. */
    int rc = c->generated && c->attempt == 0
                 ? CHR_OK
                 : projection_load(&eng->proj, eng->store, c->entity, c->key, &c->state, &r->err);
    if (rc) return finish(c, rc);
    const access_scope_t *scope = &c->scope;
    const char *tenant = access_tenant(scope);
    bool hidden = false; /* a row of another tenant: as if it did not exist */
    if (c->state.data && e->tenant_scoped && tenant &&
        !same_str(doc_str(c->state.data, "tenant_id"), tenant)) {
        entity_state_free(&c->state);
        entity_state_init(&c->state);
        hidden = true;
    }
    c->existed = c->state.data && !c->state.deleted;
    bool creating = c->kind == CMD_CREATE || (c->kind == CMD_UPSERT && !c->existed);
    const access_set_t *rules = command_rules(e, c->kind, c->custom, creating);
    access_verdict_t verdict;
    rc = gate(e, rules, creating ? "create" : command_op(c->kind, c->custom), scope, &verdict,
              &r->err);
    if (rc) return finish(c, rc);
    if (creating && e->tenant_scoped) {
        if (!tenant)
            return finish(c, chr_fail(&r->err, CHR_EINVAL, "tenant_id",
                                      "tenant_id: %s is tenant_scoped and the caller has no "
                                      "tenant (API_SECRET callers name one with X-Tenant-Id)",
                                      e->name));
        if (!c->generated || hidden)
            return finish(c, chr_fail(&r->err, CHR_EINVAL, e->key,
                                      "%s: keys of tenant-scoped %s are generated by the server; "
                                      "create without one",
                                      e->key, e->name));
    }
    const char *owner = access_owner_field(rules);
    if (!creating && c->existed && verdict == ACCESS_OWNED &&
        !access_owns(scope, doc_str(c->state.data, owner))) {
        /* Not the caller's: 403 when it may read the row anyway; else the
         * row is hidden and the command goes on as if it did not exist
         * (If-Match and the decision answer as for a missing key). */
        if (row_readable(e, scope, c->state.data))
            return finish(c, chr_fail(&r->err, CHR_EFORBIDDEN, owner,
                                      "only the %s of %s %s may do this", owner, e->name, c->key));
        if (c->kind == CMD_UPSERT) /* keys are global: a taken one cannot be created */
            return finish(c, chr_fail(&r->err, CHR_ECONFLICT, "", "%s %s already exists",
                                      e->name, c->key));
        entity_state_free(&c->state);
        entity_state_init(&c->state);
        c->existed = false;
    }
    if (c->if_match >= 0 && (!c->existed || c->state.version != c->if_match)) {
        chr_fail(&r->err, CHR_EPRECONDITION, "If-Match",
                 c->existed ? "If-Match: %s %s is at version %lld, not %lld"
                            : "If-Match: %s %s does not exist (version %lld); expected %lld",
                 e->name, c->key, (long long)c->state.version, (long long)c->if_match);
        return finish(c, CHR_EPRECONDITION);
    }
    int64_t now = time_now_us();
    entity_cmd_t cmd = {.kind = c->kind,
                        .custom = c->custom,
                        .key = c->key,
                        .body = c->body,
                        .now_us = now,
                        .key_generated = c->generated};
    decision_free(&r->decision);
    rc = entity_decide(e, &c->state, &cmd, &r->decision);
    if (rc != CHR_OK) return finish(c, rc);
    if (!r->decision.event_type) { /* nothing changes: answer the state as it is */
        r->body = entity_state_to_json(e, &c->state);
        r->version = c->state.version;
        return finish(c, r->body ? CHR_OK : CHR_ENOMEM);
    }

    if (creating && e->tenant_scoped && json_is_object(r->decision.event_data) &&
        json_object_set_new(r->decision.event_data, "tenant_id", json_string(tenant)) != 0)
        return finish(c, chr_fail(&r->err, CHR_ENOMEM, "", "out of memory"));
    rc = state_copy(&c->next, &c->state);
    if (!rc)
        rc = entity_evolve(e, &c->next, r->decision.event_type, r->decision.event_data,
                           c->state.version + 1, now);
    if (!rc && verdict == ACCESS_OWNED && !c->next.deleted &&
        !access_owns(scope, doc_str(c->next.data, owner)))
        return finish(c, chr_fail(&r->err, CHR_EFORBIDDEN, owner,
                                  "%s: must be the caller's own subject (access rule owner:%s)",
                                  owner, owner));
    char *data = rc ? NULL : json_dumps(r->decision.event_data, JSON_COMPACT);
    char *meta = NULL;
    if (!rc && e->tenant_scoped) { /* the feed confines events by this tag */
        json_t *m = c->metadata ? json_loads(c->metadata, 0, NULL) : json_object();
        const char *row_tenant = doc_str(c->next.data, "tenant_id");
        if (m && (!row_tenant ||
                  json_object_set_new(m, "tenant_id", json_string(row_tenant)) == 0))
            meta = json_dumps(m, JSON_COMPACT);
        json_decref(m);
        if (!meta) rc = CHR_ENOMEM;
    } else if (!rc && c->metadata && !(meta = strdup(c->metadata))) {
        rc = CHR_ENOMEM;
    }
    if (!rc && (!data || event_init(&c->ev, c->event_id[0] ? c->event_id : NULL, c->stream,
                                    r->decision.event_type, data, meta)))
        rc = CHR_ENOMEM;
    free(data);
    free(meta);
    c->w = (write_ctx_t){.proj = &eng->proj, .entity = c->entity};
    if (!rc) rc = projection_row_render(&eng->proj, c->entity, c->key, &c->next, &c->w.row);
    if (rc) return finish(c, chr_fail(&r->err, CHR_ENOMEM, "", "out of memory"));
    c->ev.timestamp = now;
    c->ap = (store_append_t){
        .stream = c->stream, .expected_version = c->state.version, .events = &c->ev, .n_events = 1};
    c->uow =
        (store_uow_t){.appends = &c->ap, .n_appends = 1, .apply = write_row, .apply_user = &c->w};
    chr_err_clear(&r->err);
    c->phase = PHASE_COMMIT;
    rc = store_commit_async(eng->store, &c->uow, &r->err, commit_done, c);
    if (rc) return finish(c, rc); /* refused before queueing: no wake comes */
    return ENGINE_PENDING;
}

/* After commit_done's wake: the outcome, or the next attempt. */
static int attempt_done(engine_cmd_t *c)
{
    engine_result_t *r = c->r;
    const entity_def_t *e = &c->eng->def->entities[c->entity];
    int rc = c->commit_rc;
    if (rc == CHR_OK) {
        r->created = !c->existed;
        r->version = c->next.version;
        r->body = entity_state_to_json(e, &c->next);
        if (!r->body) rc = chr_fail(&r->err, CHR_ENOMEM, "", "out of memory");
    }
    if (!c->raced) return finish(c, rc); /* the turn was passed on already */
    attempt_clear(c);
    backoff(c->attempt);
    if (++c->attempt >= MAX_ATTEMPTS)
        return finish(c, chr_fail(&r->err, CHR_ECONFLICT, "",
                                  "%s %s is being changed by others; gave up after %d attempts",
                                  e->name, c->key, MAX_ATTEMPTS));
    return attempt_run(c);
}

static int command_start(engine_t *eng, const access_scope_t *scope, int entity, cmd_kind_t kind,
                         const command_def_t *custom, const char *key_in, const json_t *body,
                         int64_t if_match, const engine_cmd_opts_t *opts, engine_result_t *r,
                         engine_wake_fn wake, void *user, engine_cmd_t **out)
{
    memset(r, 0, sizeof *r);
    *out = NULL;
    const entity_def_t *e = &eng->def->entities[entity];
    if (!scope) return r->code = chr_fail(&r->err, CHR_EFORBIDDEN, "", "no caller given");
    if (key_in && strlen(key_in) >= KEY_MAX)
        return r->code = chr_fail(&r->err, CHR_EINVAL, e->key, "%s is too long", e->key);
    engine_cmd_t *c = calloc(1, sizeof *c);
    if (!c) return r->code = chr_fail(&r->err, CHR_ENOMEM, "", "out of memory");
    *c = (engine_cmd_t){.eng = eng,
                        .scope = *scope,
                        .entity = entity,
                        .kind = kind,
                        .custom = custom,
                        .body = body,
                        .if_match = if_match,
                        .r = r,
                        .wake = wake,
                        .user = user};
    if (opts && opts->event_id) {
        if (!uuid_is_valid(opts->event_id)) {
            free(c);
            return r->code = chr_fail(&r->err, CHR_EINVAL, "id", "the event id must be a UUID");
        }
        snprintf(c->event_id, sizeof c->event_id, "%s", opts->event_id);
    }
    if (opts && opts->metadata && !(c->metadata = strdup(opts->metadata))) {
        free(c);
        return r->code = chr_fail(&r->err, CHR_ENOMEM, "", "out of memory");
    }
    if (scope->who) {
        c->who = *scope->who;
        c->scope.who = &c->who;
    }
    snprintf(c->tenant, sizeof c->tenant, "%s", scope->tenant ? scope->tenant : "");
    c->scope.tenant = c->tenant;
    /* A create under an owner rule: the owner field defaults to the caller. */
    const access_set_t *create_rules = &e->access[ACC_CREATE];
    const char *owner = access_owner_field(create_rules);
    if ((kind == CMD_CREATE || kind == CMD_UPSERT) && owner && strcmp(owner, e->key) != 0 &&
        json_is_object(body) && access_check(create_rules, &c->scope) == ACCESS_OWNED) {
        const json_t *given = json_object_get(body, owner);
        if (!given || json_is_null(given)) {
            c->own_body = json_deep_copy(body);
            if (!c->own_body ||
                json_object_set_new(c->own_body, owner, json_string(c->who.sub)) != 0) {
                json_decref(c->own_body);
                free(c->metadata);
                free(c);
                return r->code = chr_fail(&r->err, CHR_ENOMEM, "", "out of memory");
            }
            c->body = c->own_body;
        }
    }
    command_key(e, key_in, c->body, c->key, sizeof c->key, &c->generated);
    engine_stream_name(e, c->key, c->stream, sizeof c->stream);
    if (strlen(c->stream) > EVENT_NAME_MAX) {
        json_decref(c->own_body);
        free(c->metadata);
        free(c);
        return r->code =
                   chr_fail(&r->err, CHR_EINVAL, e->key,
                            "%s: must be at most %zu bytes long (the stream name \"%s-<key>\" "
                            "may have %d)",
                            e->key, EVENT_NAME_MAX - strlen(e->name) - 1, e->name, EVENT_NAME_MAX);
    }
    *out = c;
    c->stripe = stripe_of(c->stream);
    c->phase = PHASE_TURN;
    if (!turn_take(c)) return ENGINE_PENDING;
    return attempt_run(c);
}

int engine_command_start(engine_t *eng, const access_scope_t *scope, int entity, cmd_kind_t kind,
                         const command_def_t *custom, const char *key_in, const json_t *body,
                         int64_t if_match, engine_result_t *r, engine_wake_fn wake, void *user,
                         engine_cmd_t **out)
{
    return command_start(eng, scope, entity, kind, custom, key_in, body, if_match, NULL, r, wake,
                         user, out);
}

int engine_command_resume(engine_cmd_t *c)
{
    switch (c->phase) {
    case PHASE_TURN: /* turn_pass made us the owner */
        return attempt_run(c);
    case PHASE_COMMIT:
        return attempt_done(c);
    case PHASE_DONE:
        break;
    }
    return c->r->code;
}

void engine_command_free(engine_cmd_t *c)
{
    if (!c) return;
    stripe_t *s = c->stripe;
    if (s) {
        /* Only a command that still waits for its turn is listed; callers
         * never free one whose wake is due, so this is a guard. */
        pthread_mutex_lock(&s->lock);
        if (c->queued) {
            engine_cmd_t **pp = &s->head, *prev = NULL;
            while (*pp && *pp != c) {
                prev = *pp;
                pp = &(*pp)->next_waiter;
            }
            if (*pp) {
                *pp = c->next_waiter;
                if (s->tail == c) s->tail = prev;
            }
            c->queued = false;
        }
        bool owns = c->owns_turn;
        pthread_mutex_unlock(&s->lock);
        if (owns) turn_pass(c); /* woken with the turn, then abandoned */
    }
    attempt_clear(c);
    json_decref(c->own_body);
    free(c->metadata);
    free(c);
}

/* ---- the blocking form ------------------------------------------------- */

typedef struct sync_wait {
    sem_t sem;
} sync_wait_t;

static void sync_wake(void *user)
{
    sync_wait_t *w = user;
    sem_post(&w->sem);
}

int engine_command(engine_t *eng, const access_scope_t *scope, int entity, cmd_kind_t kind,
                   const command_def_t *custom, const char *key_in, const json_t *body,
                   int64_t if_match, engine_result_t *r)
{
    return engine_command_opts(eng, scope, entity, kind, custom, key_in, body, if_match, NULL, r);
}

int engine_command_opts(engine_t *eng, const access_scope_t *scope, int entity, cmd_kind_t kind,
                        const command_def_t *custom, const char *key_in, const json_t *body,
                        int64_t if_match, const engine_cmd_opts_t *opts, engine_result_t *r)
{
    sync_wait_t w;
    sem_init(&w.sem, 0, 0);
    engine_cmd_t *c;
    int rc = command_start(eng, scope, entity, kind, custom, key_in, body, if_match, opts, r,
                           sync_wake, &w, &c);
    while (rc == ENGINE_PENDING) {
        while (sem_wait(&w.sem) != 0) {
        } /* EINTR: keep waiting, the wake will come */
        rc = engine_command_resume(c);
    }
    engine_command_free(c);
    sem_destroy(&w.sem);
    return rc;
}

/* ---- reads -------------------------------------------------------------- */

static void strip_private(const entity_def_t *e, json_t *data);

int engine_get(engine_t *eng, const access_scope_t *scope, int entity, const char *key,
               json_t **out, int64_t *version, chr_err_t *err)
{
    const entity_def_t *e = &eng->def->entities[entity];
    entity_state_t st;
    entity_state_init(&st);
    int rc = visible_row(eng, eng->reads, scope, entity, ACC_GET, key, &st, err);
    if (!rc && st.deleted)
        rc = chr_fail(err, CHR_ENOTFOUND, "", "%s %s does not exist", e->name, key);
    if (!rc) {
        *out = entity_state_to_json(e, &st);
        if (version) *version = st.version;
        if (!*out) rc = chr_fail(err, CHR_ENOMEM, "", "out of memory");
    }
    entity_state_free(&st);
    return rc;
}

/* Calls fn for every event of the stream, oldest first; fn returns false to
 * stop. */
static int each_event(engine_t *eng, const char *stream, bool (*fn)(void *, const event_t *),
                      void *user, chr_err_t *err)
{
    int64_t from = 1;
    for (;;) {
        event_list_t page = {0};
        int rc = store_read_stream(eng->store, stream, from, HISTORY_PAGE, false, &page, err);
        if (rc) {
            event_list_free(&page);
            return rc;
        }
        bool go = true;
        for (size_t i = 0; i < page.len && go; i++) go = fn(user, &page.items[i]);
        size_t n = page.len;
        if (n) from = page.items[n - 1].version + 1;
        event_list_free(&page);
        if (!go || n < HISTORY_PAGE) return CHR_OK;
    }
}

typedef struct fold_ctx {
    const entity_def_t *e;
    entity_state_t st;
    int64_t at_us, version;
    int rc;
} fold_ctx_t;

static bool fold_one(void *user, const event_t *ev)
{
    fold_ctx_t *c = user;
    if (c->at_us >= 0 && ev->timestamp > c->at_us) return false;
    if (c->version > 0 && ev->version > c->version) return false;
    json_t *data = json_loads(ev->data, JSON_DECODE_ANY, NULL);
    c->rc = entity_evolve(c->e, &c->st, ev->type, data, ev->version, ev->timestamp);
    json_decref(data);
    return c->rc == CHR_OK;
}

int engine_get_past(engine_t *eng, const access_scope_t *scope, int entity, const char *key,
                    int64_t at_us, int64_t version, json_t **out, int64_t *version_out,
                    chr_err_t *err)
{
    const entity_def_t *e = &eng->def->entities[entity];
    entity_state_t row;
    entity_state_init(&row);
    int vrc = visible_row(eng, eng->store, scope, entity, ACC_GET, key, &row, err);
    entity_state_free(&row);
    if (vrc) return vrc;
    char stream[1200];
    engine_stream_name(e, key, stream, sizeof stream);
    if (strlen(stream) > EVENT_NAME_MAX) /* no such stream can exist */
        return chr_fail(err, CHR_ENOTFOUND, "", "%s %s did not exist", e->name, key);
    fold_ctx_t c = {.e = e, .at_us = at_us, .version = version};
    entity_state_init(&c.st);
    int rc = each_event(eng, stream, fold_one, &c, err);
    if (!rc && c.rc) rc = chr_fail(err, c.rc, "", "out of memory");
    if (!rc && (!c.st.data || c.st.deleted || (version > 0 && c.st.version != version)))
        rc = chr_fail(err, CHR_ENOTFOUND, "", "%s %s did not exist %s", e->name, key,
                      version > 0 ? "at that version" : "at that time");
    if (!rc) {
        *out = entity_state_to_json(e, &c.st);
        if (version_out) *version_out = c.st.version;
        if (!*out) rc = chr_fail(err, CHR_ENOMEM, "", "out of memory");
    }
    entity_state_free(&c.st);
    return rc;
}

char *engine_redacted_data(const engine_t *eng, const event_t *ev)
{
    int entity;
    const char *key;
    if (!eng || !ev->stream || !projection_stream_entity(&eng->proj, ev->stream, &entity, &key))
        return NULL;
    const entity_def_t *e = &eng->def->entities[entity];
    bool any = false;
    for (size_t i = 0; i < e->n_fields && !any; i++) any = e->fields[i].is_private;
    if (!any) return NULL;
    json_t *data = json_loads(ev->data, JSON_DECODE_ANY, NULL);
    if (!data) return NULL;
    strip_private(e, data);
    char *out = json_dumps(data, JSON_COMPACT | JSON_ENCODE_ANY);
    json_decref(data);
    return out ? out : strdup("null"); /* never fall back to the unredacted text */
}

/* Removes private fields from an event's data and its _previous. */
static void strip_private(const entity_def_t *e, json_t *data)
{
    if (!json_is_object(data)) return;
    json_t *prev = json_object_get(data, "_previous");
    for (size_t i = 0; i < e->n_fields; i++) {
        if (!e->fields[i].is_private) continue;
        json_object_del(data, e->fields[i].name);
        if (json_is_object(prev)) json_object_del(prev, e->fields[i].name);
    }
}

typedef struct history_ctx {
    const entity_def_t *e;
    json_t *arr;
    int rc;
} history_ctx_t;

static bool history_one(void *user, const event_t *ev)
{
    history_ctx_t *c = user;
    json_t *j = event_to_json(ev);
    if (!j) {
        c->rc = CHR_ENOMEM;
        return false;
    }
    strip_private(c->e, json_object_get(j, "data"));
    json_array_append_new(c->arr, j);
    return true;
}

int engine_history(engine_t *eng, const access_scope_t *scope, int entity, const char *key,
                   json_t **out, chr_err_t *err)
{
    const entity_def_t *e = &eng->def->entities[entity];
    entity_state_t row;
    entity_state_init(&row);
    int vrc = visible_row(eng, eng->store, scope, entity, ACC_HISTORY, key, &row, err);
    entity_state_free(&row);
    if (vrc == CHR_ENOTFOUND)
        return chr_fail(err, CHR_ENOTFOUND, "", "%s %s has no history", e->name, key);
    if (vrc) return vrc;
    char stream[1200];
    engine_stream_name(e, key, stream, sizeof stream);
    if (strlen(stream) > EVENT_NAME_MAX) /* no such stream can exist */
        return chr_fail(err, CHR_ENOTFOUND, "", "%s %s has no history", e->name, key);
    history_ctx_t c = {.e = e, .arr = json_array()};
    if (!c.arr) return chr_fail(err, CHR_ENOMEM, "", "out of memory");
    int rc = each_event(eng, stream, history_one, &c, err);
    if (!rc && c.rc) rc = chr_fail(err, c.rc, "", "out of memory");
    if (!rc && json_array_size(c.arr) == 0)
        rc = chr_fail(err, CHR_ENOTFOUND, "", "%s %s has no history", e->name, key);
    if (rc) {
        json_decref(c.arr);
        return rc;
    }
    *out = c.arr;
    return CHR_OK;
}

/* ---- lists -------------------------------------------------------------- */

json_t *engine_keep_fields(json_t *item, char *const *fields, size_t n)
{
    if (!fields || !item) return item;
    json_t *out = json_object();
    for (size_t i = 0; out && i < n; i++) {
        json_t *v = json_object_get(item, fields[i]);
        if (v) json_object_set(out, fields[i], v);
    }
    json_decref(item);
    return out;
}

#define LIST_SELECT_COLS 2 /* "_json", key */

typedef struct list_ctx {
    const entity_def_t *e;
    const query_t *q;
    char *const *fields;
    size_t n_fields;
    FILE *out; /* the JSON array being written */
    size_t rows;
    /* copies of the sort values and key of the limit-th row */
    store_val_t last[QUERY_MAX_SORT + 1];
    char *last_text[QUERY_MAX_SORT + 1];
    char *last_key;
    int rc;
} list_ctx_t;

static void forget_last(list_ctx_t *c)
{
    for (size_t i = 0; i <= QUERY_MAX_SORT; i++) {
        free(c->last_text[i]);
        c->last_text[i] = NULL;
    }
    free(c->last_key);
    c->last_key = NULL;
}

/* One row: its stored public JSON is copied as it is, or narrowed to the
 * route's fields. */
static int list_row(void *user, const store_val_t *v, size_t n)
{
    list_ctx_t *c = user;
    if (++c->rows > (size_t)c->q->limit) return 1; /* the probe row: a next page exists */
    if (n < LIST_SELECT_COLS + c->q->n_sort || v[0].type != SV_TEXT || v[1].type != SV_TEXT) {
        c->rc = CHR_ESTORE;
        return 1;
    }
    if (c->rows > 1) fputc(',', c->out);
    if (!c->fields) {
        fputs(v[0].s, c->out);
    } else {
        json_t *item = engine_keep_fields(json_loads(v[0].s, 0, NULL), c->fields, c->n_fields);
        char *text = item ? json_dumps(item, JSON_COMPACT) : NULL;
        json_decref(item);
        if (!text) {
            c->rc = CHR_ENOMEM;
            return 1;
        }
        fputs(text, c->out);
        free(text);
    }
    if ((size_t)c->q->limit == c->rows) { /* may be the last row of the page */
        forget_last(c);
        c->last_key = strdup(v[1].s);
        for (size_t i = 0; i < c->q->n_sort; i++) {
            c->last[i] = v[LIST_SELECT_COLS + i];
            if (c->last[i].type == SV_TEXT) {
                c->last_text[i] = strdup(c->last[i].s ? c->last[i].s : "");
                c->last[i].s = c->last_text[i];
                if (!c->last_text[i]) c->rc = CHR_ENOMEM;
            }
        }
        if (!c->last_key) c->rc = CHR_ENOMEM;
    }
    return c->rc ? 1 : 0;
}

int engine_list(engine_t *eng, const access_scope_t *scope, int entity, query_t *q,
                char *const *fields, size_t n_fields, char **out, size_t *out_len, char **next,
                chr_err_t *err)
{
    const entity_def_t *e = &eng->def->entities[entity];
    *next = NULL;
    *out = NULL;
    access_verdict_t v;
    int grc = gate(e, &e->access[ACC_LIST], "list", scope, &v, err);
    if (grc) return grc;
    /* the scope's predicates, ANDed with the client's filters */
    const char *tenant = access_tenant(scope);
    if (e->tenant_scoped && tenant && (grc = query_restrict(q, "tenant_id", true, tenant, err)))
        return grc;
    if (v == ACCESS_OWNED) {
        const char *owner = access_owner_field(&e->access[ACC_LIST]);
        if ((grc = query_restrict(q, owner, strcmp(owner, e->key) != 0, scope->who->sub, err)))
            return grc;
    }
    char select[160];
    snprintf(select, sizeof select, "\"_json\", \"%s\"", e->key);
    char *sql = NULL;
    store_val_t *params = NULL;
    size_t n_params = 0;
    int rc = query_sql(q, e, select, &sql, &params, &n_params, err);
    if (rc) return rc;
    char *text = NULL;
    size_t len = 0;
    list_ctx_t c = {.e = e, .q = q, .fields = fields, .n_fields = n_fields,
                    .out = open_memstream(&text, &len)};
    if (!c.out) rc = chr_fail(err, CHR_ENOMEM, "", "out of memory");
    if (!rc) {
        fputc('[', c.out);
        rc = store_query(eng->reads, sql, params, n_params, list_row, &c, err);
        fputc(']', c.out);
    }
    if (c.out) fclose(c.out);
    free(sql);
    free(params);
    if (!rc && c.rc) rc = chr_fail(err, c.rc, "", "reading %s failed", e->name);
    if (!rc && c.rows > (size_t)q->limit &&
        query_cursor(q, c.last, q->n_sort, c.last_key, next) != CHR_OK)
        rc = chr_fail(err, CHR_ENOMEM, "", "out of memory");
    forget_last(&c);
    if (rc) {
        free(text);
        free(*next);
        *next = NULL;
        return rc;
    }
    *out = text;
    *out_len = len;
    return CHR_OK;
}

/* ---- for logins ------------------------------------------------------------ */

int engine_exists(engine_t *eng, int entity, const char *key, bool *exists, chr_err_t *err)
{
    return projection_exists(&eng->proj, eng->store, entity, key, exists, err);
}

typedef struct find_ctx {
    char *key;
    json_t *doc;
    int rc;
} find_ctx_t;

static int find_row(void *user, const store_val_t *v, size_t n)
{
    find_ctx_t *c = user;
    if (n < 2 || v[0].type != SV_TEXT || v[1].type != SV_TEXT) {
        c->rc = CHR_ESTORE;
        return 1;
    }
    c->key = strdup(v[0].s);
    c->doc = json_loads(v[1].s, 0, NULL);
    if (!c->key || !c->doc) c->rc = CHR_ESTORE;
    return 1;
}

int engine_find_private(engine_t *eng, int entity, const char *tenant, const char *field,
                        const char *value, char **key, json_t **doc, chr_err_t *err)
{
    const entity_def_t *e = &eng->def->entities[entity];
    *key = NULL;
    *doc = NULL;
    /* "eq." keeps a value that starts with an operator name literal */
    size_t vlen = strlen(value);
    char *filter = malloc(vlen + 4);
    if (!filter) return chr_fail(err, CHR_ENOMEM, "", "out of memory");
    memcpy(filter, "eq.", 3);
    memcpy(filter + 3, value, vlen + 1);
    const char *names[] = {field, "limit"};
    const char *values[] = {filter, "1"};
    query_t q;
    memset(&q, 0, sizeof q);
    int rc = query_parse(e, NULL, names, values, 2, &q, err);
    free(filter);
    if (!rc && e->tenant_scoped && tenant) rc = query_restrict(&q, "tenant_id", true, tenant, err);
    char select[160];
    snprintf(select, sizeof select, "\"%s\", \"_doc\"", e->key);
    char *sql = NULL;
    store_val_t *params = NULL;
    size_t n_params = 0;
    find_ctx_t c = {0};
    if (!rc) rc = query_sql(&q, e, select, &sql, &params, &n_params, err);
    if (!rc) rc = store_query(eng->store, sql, params, n_params, find_row, &c, err);
    free(sql);
    free(params);
    query_free(&q);
    if (!rc && c.rc) rc = chr_fail(err, c.rc, "", "reading %s failed", e->name);
    if (!rc && !c.key) rc = chr_fail(err, CHR_ENOTFOUND, field, "no such %s", e->name);
    if (rc) {
        free(c.key);
        json_decref(c.doc);
        return rc;
    }
    *key = c.key;
    *doc = c.doc;
    return CHR_OK;
}

/* ---- the log ------------------------------------------------------------- */

/* The metadata tenant_id of an event into out, or NULL when it has none. */
static const char *event_tenant(const event_t *ev, char *out, size_t size)
{
    if (!ev->metadata) return NULL;
    json_t *m = json_loads(ev->metadata, 0, NULL);
    const char *t = doc_str(m, "tenant_id");
    bool fits = t && strlen(t) < size;
    if (fits) snprintf(out, size, "%s", t);
    json_decref(m);
    return fits ? out : NULL;
}

bool engine_event_visible(const engine_t *eng, const access_scope_t *scope, const event_t *ev)
{
    if (!scope) return false;
    const char *t = access_tenant(scope);
    if (scope->full && !t) return true;
    char buf[AUTH_SUB_MAX + 1];
    const char *et = event_tenant(ev, buf, sizeof buf);
    int entity;
    const char *key;
    if (eng && ev->stream && projection_stream_entity(&eng->proj, ev->stream, &entity, &key)) {
        const entity_def_t *e = &eng->def->entities[entity];
        if (access_check(&e->access[ACC_HISTORY], scope) != ACCESS_ALLOW) return false;
        if (!e->tenant_scoped) return true;
        return t && same_str(et, t);
    }
    if (!t) return et == NULL;
    return same_str(et, t);
}

void engine_filter_events(const engine_t *eng, const access_scope_t *scope, event_list_t *list)
{
    size_t kept = 0;
    for (size_t i = 0; i < list->len; i++) {
        if (engine_event_visible(eng, scope, &list->items[i])) {
            if (kept != i) list->items[kept] = list->items[i];
            kept++;
        } else {
            event_free(&list->items[i]);
        }
    }
    list->len = kept;
}

int engine_stream_access(engine_t *eng, const access_scope_t *scope, const char *stream,
                         bool write, char *out, size_t size, chr_err_t *err)
{
    if (!scope) return chr_fail(err, CHR_EFORBIDDEN, "", "no caller given");
    snprintf(out, size, "%s", stream);
    const char *t = access_tenant(scope);
    int entity;
    const char *key;
    if (!write && eng && projection_stream_entity(&eng->proj, stream, &entity, &key)) {
        if (scope->full && !t) return CHR_OK;
        entity_state_t row;
        entity_state_init(&row);
        int rc = visible_row(eng, eng->store, scope, entity, ACC_HISTORY, key, &row, err);
        entity_state_free(&row);
        if (rc == CHR_ENOTFOUND)
            return chr_fail(err, CHR_ENOTFOUND, "", "stream \"%s\" has no events", stream);
        return rc;
    }
    if (scope->full && !t) return CHR_OK;
    if (!t) {
        if (!strchr(stream, ':')) return CHR_OK;
        return chr_fail(err, CHR_EFORBIDDEN, "stream",
                        "stream names with ':' belong to tenants; this credential has none");
    }
    size_t n = strlen(t);
    if (strncmp(stream, t, n) == 0 && stream[n] == ':') return CHR_OK;
    int len = snprintf(out, size, "%s:%s", t, stream);
    if (len < 0 || (size_t)len >= size || (size_t)len > EVENT_NAME_MAX)
        return chr_fail(err, CHR_EINVAL, "stream",
                        "stream: with the tenant's prefix \"%s:\" the name is longer than %d bytes",
                        t, EVENT_NAME_MAX);
    return CHR_OK;
}
