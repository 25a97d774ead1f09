/*
 * projection.c - entity tables: their SQL, their rows, and rebuilding them
 * from the log. See projection.h for the layout. Identifiers in SQL text come
 * only from the validated definition (names match [a-z][a-z0-9_]*); every
 * value is a bound parameter.
 */
#include "engine/projection.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/query.h"
#include "core/timefmt.h"
#include "util/log.h"
#include "util/strmap.h"

#define REBUILD_PAGE 2000
#define SYNC_LEASE "projections-sync"
#define SYNC_RETRY_MS 100          /* between tries for the sync lease */
#define SYNC_LOG_EVERY_MS 30000    /* how often a waiting instance says so */
#define PROJECTION_FORMAT 2 /* bump when the table layout chronicle writes changes */
#define LAYOUT_TABLE "chronicle_projection_layout"
/* One row: the layout the tables were built for, the tables it made, and
 * whether the replay that fills them finished (a rebuild interrupted by a
 * crash is redone on the next start). */
#define LAYOUT_DDL                                                                              \
    "CREATE TABLE IF NOT EXISTS " LAYOUT_TABLE " (id INTEGER PRIMARY KEY, layout TEXT NOT NULL, " \
    "tables TEXT NOT NULL, built_at BIGINT NOT NULL, ready INTEGER NOT NULL)"

/* printf into a new heap string (NULL on allocation failure). */
static char *fmt(const char *f, ...) __attribute__((format(printf, 1, 2)));
static char *fmt(const char *f, ...)
{
    va_list ap;
    va_start(ap, f);
    char *s = NULL;
    if (vasprintf(&s, f, ap) < 0) s = NULL;
    va_end(ap);
    return s;
}

static const char *column_type(field_type_t t)
{
    switch (t) {
    case FT_INTEGER:
    case FT_BOOLEAN: return "BIGINT";      /* 64-bit in SQLite and PostgreSQL alike */
    case FT_NUMBER: return "DOUBLE PRECISION";
    default: return "TEXT";
    }
}

/* Builds every statement of one entity. */
static int build_entity(proj_entity_t *pe, const entity_def_t *e, const route_def_t *routes,
                        size_t n_routes)
{
    pe->def = e;
    FILE *cols = NULL, *ins = NULL, *vals = NULL, *upd = NULL;
    char *cols_s = NULL, *ins_s = NULL, *vals_s = NULL, *upd_s = NULL;
    size_t n1, n2, n3, n4;
    cols = open_memstream(&cols_s, &n1);
    ins = open_memstream(&ins_s, &n2);
    vals = open_memstream(&vals_s, &n3);
    upd = open_memstream(&upd_s, &n4);
    if (!cols || !ins || !vals || !upd) {
        if (cols) fclose(cols);
        if (ins) fclose(ins);
        if (vals) fclose(vals);
        if (upd) fclose(upd);
        free(cols_s);
        free(ins_s);
        free(vals_s);
        free(upd_s);
        return CHR_ENOMEM;
    }
    fprintf(cols, "\"%s\" TEXT PRIMARY KEY", e->key);
    fprintf(ins, "\"%s\"", e->key);
    fprintf(vals, "?");
    size_t n = 1, n_upd = 0;
    if (e->tenant_scoped) { /* set on create, never changed: not in the update list */
        fprintf(cols, ", \"tenant_id\" TEXT");
        fprintf(ins, ", \"tenant_id\"");
        fprintf(vals, ", ?");
        n++;
    }
    for (size_t i = 0; i < e->n_fields; i++) {
        const field_def_t *f = &e->fields[i];
        if (strcmp(f->name, e->key) == 0) continue;
        fprintf(cols, ", \"%s\" %s", f->name, column_type(f->type));
        fprintf(ins, ", \"%s\"", f->name);
        fprintf(vals, ", ?");
        fprintf(upd, "%s\"%s\" = excluded.\"%s\"", n_upd++ ? ", " : "", f->name, f->name);
        n++;
    }
    static const char *sys[] = {"version", "created_at", "updated_at", "_deleted", "_doc", "_json"};
    for (size_t i = 0; i < 6; i++) {
        fprintf(cols, ", \"%s\" %s NOT NULL", sys[i], i >= 4 ? "TEXT" : "BIGINT");
        fprintf(ins, ", \"%s\"", sys[i]);
        fprintf(vals, ", ?");
        fprintf(upd, "%s\"%s\" = excluded.\"%s\"", n_upd++ ? ", " : "", sys[i], sys[i]);
        n++;
    }
    fclose(cols);
    fclose(ins);
    fclose(vals);
    fclose(upd);
    pe->n_columns = n;
    pe->create_table = fmt("CREATE TABLE IF NOT EXISTS \"%s\" (%s)", e->name, cols_s);
    pe->drop_table = fmt("DROP TABLE IF EXISTS \"%s\"", e->name);
    pe->upsert_row = fmt("INSERT INTO \"%s\" (%s) VALUES (%s) ON CONFLICT (\"%s\") DO UPDATE SET %s",
                         e->name, ins_s, vals_s, e->key, upd_s);
    pe->select_state = fmt("SELECT \"_doc\", \"version\", \"created_at\", \"updated_at\", "
                           "\"_deleted\" FROM \"%s\" WHERE \"%s\" = ?",
                           e->name, e->key);
    pe->exists_live = fmt("SELECT 1 FROM \"%s\" WHERE \"%s\" = ? AND \"_deleted\" = 0", e->name,
                          e->key);
    if (e->tenant_scoped &&
        !(pe->exists_live_tenant = fmt("SELECT 1 FROM \"%s\" WHERE \"%s\" = ? AND \"_deleted\" = 0 "
                                       "AND \"tenant_id\" = ?",
                                       e->name, e->key))) {
        free(cols_s);
        free(ins_s);
        free(vals_s);
        free(upd_s);
        return CHR_ENOMEM;
    }
    free(cols_s);
    free(ins_s);
    free(vals_s);
    free(upd_s);

    /* Indexes: refs (lookups and joins), unique fields (partial, live rows),
     * and the system orderings lists use most. */
    size_t index_cap = e->n_fields + 6 + 2 * n_routes + e->n_unique;
    pe->create_indexes = calloc(index_cap, sizeof *pe->create_indexes);
    pe->unique_check = calloc(e->n_fields ? e->n_fields : 1, sizeof *pe->unique_check);
    pe->group_check = calloc(e->n_unique ? e->n_unique : 1, sizeof *pe->group_check);
    if (!pe->create_indexes || !pe->unique_check || !pe->group_check) return CHR_ENOMEM;
    /* Tenant-scoped: values are unique per tenant (tenant_id leads the
     * index and joins the check, bound last). */
    const char *t_col = e->tenant_scoped ? "\"tenant_id\", " : "";
    const char *t_and = e->tenant_scoped ? " AND \"tenant_id\" = ?" : "";
    for (size_t i = 0; i < e->n_fields; i++) {
        const field_def_t *f = &e->fields[i];
        if (strcmp(f->name, e->key) == 0) continue;
        if (f->unique) {
            pe->create_indexes[pe->n_indexes++] =
                fmt("CREATE UNIQUE INDEX IF NOT EXISTS \"%s_%s_unique\" ON \"%s\" (%s\"%s\") WHERE "
                    "\"_deleted\" = 0",
                    e->name, f->name, e->name, t_col, f->name);
            pe->unique_check[i] = fmt("SELECT 1 FROM \"%s\" WHERE \"%s\" = ? AND \"%s\" <> ? AND "
                                      "\"_deleted\" = 0%s LIMIT 1",
                                      e->name, f->name, e->key, t_and);
        } else if (f->type == FT_REF) {
            pe->create_indexes[pe->n_indexes++] =
                fmt("CREATE INDEX IF NOT EXISTS \"%s_%s_ref\" ON \"%s\" (\"%s\", \"created_at\")",
                    e->name, f->name, e->name, f->name);
        }
    }
    for (size_t u = 0; u < e->n_unique; u++) {
        const unique_group_t *g = &e->unique[u];
        char cols_l[1024] = "", where[1200] = "", name[160] = "";
        size_t lc = 0, lw = 0, ln = 0;
        for (size_t j = 0; j < g->n; j++) {
            lc += (size_t)snprintf(cols_l + lc, sizeof cols_l - lc, "%s\"%s\"", j ? ", " : "",
                                   g->fields[j]);
            lw += (size_t)snprintf(where + lw, sizeof where - lw, "\"%s\" = ? AND ", g->fields[j]);
            ln += (size_t)snprintf(name + ln, sizeof name - ln, "_%.20s", g->fields[j]);
        }
        pe->create_indexes[pe->n_indexes++] =
            fmt("CREATE UNIQUE INDEX IF NOT EXISTS \"%s%s_unique\" ON \"%s\" (%s%s) WHERE "
                "\"_deleted\" = 0",
                e->name, name, e->name, t_col, cols_l);
        pe->group_check[u] = fmt("SELECT 1 FROM \"%s\" WHERE %s\"%s\" <> ? AND \"_deleted\" = 0%s "
                                 "LIMIT 1",
                                 e->name, where, e->key, t_and);
        if (!pe->group_check[u]) return CHR_ENOMEM;
    }
    if (e->tenant_scoped) { /* one tenant's lists, in key and creation order, read in index order */
        pe->create_indexes[pe->n_indexes++] =
            fmt("CREATE INDEX IF NOT EXISTS \"%s_tenant_key\" ON \"%s\" (\"tenant_id\", \"%s\")",
                e->name, e->name, e->key);
        pe->create_indexes[pe->n_indexes++] = fmt(
            "CREATE INDEX IF NOT EXISTS \"%s_tenant_created\" ON \"%s\" (\"tenant_id\", "
            "\"created_at\", \"%s\")",
            e->name, e->name, e->key);
    }
    /* With the key as the tie-break lists append to every ORDER BY. */
    pe->create_indexes[pe->n_indexes++] =
        fmt("CREATE INDEX IF NOT EXISTS \"%s_created_key\" ON \"%s\" (\"created_at\", \"%s\")",
            e->name, e->name, e->key);
    if ((e->operations & (OP_UPDATE | OP_UPSERT | OP_DELETE)) || e->n_commands)
        pe->create_indexes[pe->n_indexes++] = fmt(
            "CREATE INDEX IF NOT EXISTS \"%s_updated_key\" ON \"%s\" (\"updated_at\", \"%s\")",
            e->name, e->name, e->key);
    /* The sort orders the definition's list routes declare. */
    for (size_t r = 0; r < n_routes; r++) {
        if (!routes[r].sort || strcmp(routes[r].action, "list") != 0) continue;
        if (pe->n_indexes >= index_cap) break;
        char *exprs = query_index_columns(e, routes[r].sort);
        if (!exprs) continue;
        /* Named by its columns, so a changed sort makes a new index. */
        uint32_t h = 2166136261u;
        for (const char *c = exprs; *c; c++) h = (h ^ (unsigned char)*c) * 16777619u;
        pe->create_indexes[pe->n_indexes++] =
            fmt("CREATE INDEX IF NOT EXISTS \"%s_sort_%08x\" ON \"%s\" (%s)", e->name, h,
                e->name, exprs);
        if (e->tenant_scoped && pe->n_indexes < index_cap) /* the same order within a tenant */
            pe->create_indexes[pe->n_indexes++] =
                fmt("CREATE INDEX IF NOT EXISTS \"%s_tsort_%08x\" ON \"%s\" (\"tenant_id\", %s)",
                    e->name, h, e->name, exprs);
        free(exprs);
    }
    if (!pe->create_table || !pe->drop_table || !pe->upsert_row || !pe->select_state ||
        !pe->exists_live)
        return CHR_ENOMEM;
    for (size_t i = 0; i < pe->n_indexes; i++)
        if (!pe->create_indexes[i]) return CHR_ENOMEM;
    return CHR_OK;
}

static void free_entity(proj_entity_t *pe)
{
    free(pe->create_table);
    free(pe->drop_table);
    free(pe->upsert_row);
    free(pe->select_state);
    free(pe->select_many);
    free(pe->upsert_many);
    free(pe->exists_live);
    free(pe->exists_live_tenant);
    if (pe->group_check && pe->def)
        for (size_t i = 0; i < pe->def->n_unique; i++) free(pe->group_check[i]);
    free(pe->group_check);
    for (size_t i = 0; i < pe->n_indexes; i++) free(pe->create_indexes[i]);
    free(pe->create_indexes);
    if (pe->unique_check && pe->def)
        for (size_t i = 0; i < pe->def->n_fields; i++) free(pe->unique_check[i]);
    free(pe->unique_check);
    for (size_t i = 0; i < pe->n_ref_by; i++) free(pe->ref_by[i].sql);
    free(pe->ref_by);
    memset(pe, 0, sizeof *pe);
}

/* Fills every entity's ref_by from the ref fields that point at it. */
static int build_ref_by(projections_t *p, const definition_t *def)
{
    for (size_t i = 0; i < def->n_entities; i++) {
        const entity_def_t *e = &def->entities[i];
        for (size_t j = 0; j < e->n_fields; j++) {
            const field_def_t *f = &e->fields[j];
            if (f->type != FT_REF || f->ref_entity < 0 || f->ref_keep) continue;
            proj_entity_t *target = &p->entities[f->ref_entity];
            struct proj_ref_by *grown =
                realloc(target->ref_by, (target->n_ref_by + 1) * sizeof *grown);
            if (!grown) return CHR_ENOMEM;
            target->ref_by = grown;
            char *sql = fmt("SELECT 1 FROM \"%s\" WHERE \"%s\" = ? AND \"%s\" <> ? LIMIT 1",
                            e->name, f->name, e->key);
            if (!sql) return CHR_ENOMEM;
            grown[target->n_ref_by++] = (struct proj_ref_by){(int)i, (int)j, sql};
        }
    }
    return CHR_OK;
}

int projections_init(projections_t *p, const definition_t *def, chr_err_t *err)
{
    memset(p, 0, sizeof *p);
    p->def = def;
    p->entities = calloc(def->n_entities ? def->n_entities : 1, sizeof *p->entities);
    if (!p->entities) return chr_fail(err, CHR_ENOMEM, "", "out of memory");
    for (size_t i = 0; i < def->n_entities; i++) {
        /* Only this entity's routes (route_def_t.entity) declare its sorts. */
        size_t n = 0;
        route_def_t *mine = calloc(def->n_routes ? def->n_routes : 1, sizeof *mine);
        for (size_t r = 0; mine && r < def->n_routes; r++)
            if (def->routes[r].entity == (int)i) mine[n++] = def->routes[r];
        int rc = mine ? build_entity(&p->entities[i], &def->entities[i], mine, n) : CHR_ENOMEM;
        free(mine);
        if (rc != CHR_OK) {
            projections_free(p);
            return chr_fail(err, CHR_ENOMEM, "", "out of memory building projection SQL");
        }
    }
    if (build_ref_by(p, def) != CHR_OK) {
        projections_free(p);
        return chr_fail(err, CHR_ENOMEM, "", "out of memory building projection SQL");
    }
    /* The stored layout also names the table format, so a chronicle whose
     * tables differ (a new system column) rebuilds them like a changed
     * definition. */
    char hash[65];
    definition_layout_hash(def, hash);
    snprintf(p->layout, sizeof p->layout, "%s/%d", hash, PROJECTION_FORMAT);
    return CHR_OK;
}

/* The read model's statements over several rows: select_many (the key,
 * then select_state's columns, for PROJ_LOAD_MANY keys) and upsert_many
 * (upsert_row's VALUES group PROJ_WRITE_MANY times). */
static int build_many(proj_entity_t *pe)
{
    const entity_def_t *e = pe->def;
    char keys[PROJ_LOAD_MANY * 3 + 1];
    size_t o = 0;
    for (int i = 0; i < PROJ_LOAD_MANY; i++)
        o += (size_t)snprintf(keys + o, sizeof keys - o, "%s?", i ? ", " : "");
    pe->select_many = fmt("SELECT \"%s\", \"_doc\", \"version\", \"created_at\", \"updated_at\", "
                          "\"_deleted\" FROM \"%s\" WHERE \"%s\" IN (%s)",
                          e->key, e->name, e->key, keys);
    /* upsert_row is "INSERT INTO t (cols) VALUES (?, ...) ON CONFLICT ..." */
    const char *v = strstr(pe->upsert_row, " VALUES (");
    const char *end = v ? strstr(v, ") ON CONFLICT") : NULL;
    if (!pe->select_many || !v || !end) return CHR_ENOMEM;
    size_t group = (size_t)(end + 1 - (v + 8)); /* "(?, ..., ?)" */
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) return CHR_ENOMEM;
    fprintf(f, "%.*s VALUES ", (int)(v - pe->upsert_row), pe->upsert_row);
    for (int i = 0; i < PROJ_WRITE_MANY; i++)
        fprintf(f, "%s%.*s", i ? ", " : "", (int)group, v + 8);
    fprintf(f, "%s", end + 1);
    if (fclose(f) != 0) {
        free(buf);
        return CHR_ENOMEM;
    }
    pe->upsert_many = buf;
    return CHR_OK;
}

int projections_init_read_model(projections_t *p, const definition_t *def, chr_err_t *err)
{
    int rc = projections_init(p, def, err);
    if (rc) return rc;
    p->read_model = true;
    size_t n = strlen(p->layout);
    snprintf(p->layout + n, sizeof p->layout - n, "/read");
    static const char uniq[] = "CREATE UNIQUE INDEX";
    for (size_t i = 0; i < def->n_entities; i++) {
        proj_entity_t *pe = &p->entities[i];
        if (build_many(pe) != CHR_OK) {
            projections_free(p);
            return chr_fail(err, CHR_ENOMEM, "", "out of memory building projection SQL");
        }
        for (size_t j = 0; j < pe->n_indexes; j++) {
            char *sql = pe->create_indexes[j];
            if (strncmp(sql, uniq, sizeof uniq - 1) != 0) continue;
            /* "CREATE UNIQUE INDEX x" -> "CREATE INDEX x" (same name). */
            memmove(sql + 7, sql + 14, strlen(sql + 14) + 1);
        }
    }
    return CHR_OK;
}

void projections_free(projections_t *p)
{
    if (p->entities && p->def)
        for (size_t i = 0; i < p->def->n_entities; i++) free_entity(&p->entities[i]);
    free(p->entities);
    memset(p, 0, sizeof *p);
}

bool projection_stream_entity(const projections_t *p, const char *stream, int *entity,
                              const char **key)
{
    const char *dash = strchr(stream, '-');
    if (!dash || dash == stream || !dash[1]) return false;
    size_t len = (size_t)(dash - stream);
    for (size_t i = 0; i < p->def->n_entities; i++) {
        const char *name = p->def->entities[i].name;
        if (strlen(name) == len && memcmp(name, stream, len) == 0) {
            *entity = (int)i;
            *key = dash + 1;
            return true;
        }
    }
    return false;
}

/* ---- reading and writing rows ------------------------------------------- */

typedef struct load_ctx {
    entity_state_t *state;
    int rc;
} load_ctx_t;

static int load_row(void *user, const store_val_t *v, size_t n)
{
    load_ctx_t *c = user;
    if (n < 5 || v[0].type != SV_TEXT) {
        c->rc = CHR_ESTORE;
        return 1;
    }
    json_t *doc = json_loads(v[0].s, 0, NULL);
    if (!doc) {
        c->rc = CHR_ESTORE;
        return 1;
    }
    json_decref(c->state->data);
    c->state->data = doc;
    c->state->version = v[1].i;
    c->state->created_at = v[2].i;
    c->state->updated_at = v[3].i;
    c->state->deleted = v[4].i != 0;
    return 1;
}

int projection_load(const projections_t *p, store_t *s, int entity, const char *key,
                    entity_state_t *state, chr_err_t *err)
{
    const proj_entity_t *pe = &p->entities[entity];
    store_val_t k = {.type = SV_TEXT, .s = key};
    load_ctx_t c = {.state = state, .rc = CHR_OK};
    int rc = store_query(s, pe->select_state, &k, 1, load_row, &c, err);
    if (rc) return rc;
    if (c.rc) return chr_fail(err, CHR_ESTORE, "", "projection row of %s %s is unreadable",
                              pe->def->name, key);
    return CHR_OK;
}

static int found_row(void *user, const store_val_t *v, size_t n);

int projection_exists(const projections_t *p, store_t *s, int entity, const char *key,
                      bool *exists, chr_err_t *err)
{
    store_val_t k = {.type = SV_TEXT, .s = key};
    *exists = false;
    return store_query(s, p->entities[entity].exists_live, &k, 1, found_row, exists, err);
}

static int tx_load_state(const proj_entity_t *pe, store_tx_t *tx, const char *key,
                         entity_state_t *state, chr_err_t *err)
{
    store_val_t k = {.type = SV_TEXT, .s = key};
    load_ctx_t c = {.state = state, .rc = CHR_OK};
    int rc = store_tx_query(tx, pe->select_state, &k, 1, load_row, &c, err);
    if (rc) return rc;
    if (c.rc) return chr_fail(err, CHR_ESTORE, "", "projection row of %s %s is unreadable",
                              pe->def->name, key);
    return CHR_OK;
}

static int found_row(void *user, const store_val_t *v, size_t n)
{
    (void)v;
    (void)n;
    *(bool *)user = true;
    return 1;
}

/* The column value of field f from the state's data. Text values point into
 * data (borrowed) or into scratch (a formatted number), valid while both
 * live. */
static store_val_t column_value(const field_def_t *f, const json_t *data, char *scratch,
                                size_t scratch_size)
{
    const json_t *v = data ? json_object_get(data, f->name) : NULL;
    if (!v || json_is_null(v)) return (store_val_t){.type = SV_NULL};
    switch (f->type) {
    case FT_INTEGER:
        if (json_is_integer(v)) return (store_val_t){.type = SV_INT, .i = json_integer_value(v)};
        return (store_val_t){.type = SV_NULL};
    case FT_NUMBER: return (store_val_t){.type = SV_REAL, .r = json_number_value(v)};
    case FT_BOOLEAN: return (store_val_t){.type = SV_INT, .i = json_is_true(v) ? 1 : 0};
    case FT_JSON: return (store_val_t){.type = SV_NULL}; /* lives in _doc and _json only */
    default:
        if (json_is_string(v)) return (store_val_t){.type = SV_TEXT, .s = json_string_value(v)};
        return (store_val_t){.type = SV_NULL};
    }
}

static int check_refs_and_unique(const projections_t *p, const proj_entity_t *pe,
                                 store_tx_t *tx, const char *key, const entity_state_t *state,
                                 chr_err_t *err)
{
    const entity_def_t *e = pe->def;
    /* the row's tenant: refs to tenant-scoped entities and unique values
     * are checked within it */
    const char *tenant = e->tenant_scoped ? json_string_value(json_object_get(state->data, "tenant_id"))
                                          : NULL;
    store_val_t tv = {.type = tenant ? SV_TEXT : SV_NULL, .s = tenant};
    for (size_t i = 0; i < e->n_fields; i++) {
        const field_def_t *f = &e->fields[i];
        json_t *v = json_object_get(state->data, f->name);
        if (!v || !json_is_string(v)) {
            if (!(f->unique && v && !json_is_null(v))) continue;
        }
        if (f->type == FT_REF && json_is_string(v)) {
            const proj_entity_t *target = &p->entities[f->ref_entity];
            store_val_t k[2] = {{.type = SV_TEXT, .s = json_string_value(v)}, tv};
            bool found = false;
            bool scoped = target->def->tenant_scoped;
            int rc = store_tx_query(tx, scoped ? target->exists_live_tenant : target->exists_live, k,
                                    scoped ? 2 : 1, found_row, &found, err);
            if (rc) return rc;
            if (!found)
                return chr_fail(err, CHR_EINVAL, f->name, "%s: %s \"%s\" does not exist", f->name,
                                target->def->name, json_string_value(v));
        }
        if (f->unique && pe->unique_check[i]) {
            char scratch[64];
            store_val_t params[3] = {column_value(f, state->data, scratch, sizeof scratch),
                                     {.type = SV_TEXT, .s = key}, tv};
            if (params[0].type == SV_NULL) continue;
            bool found = false;
            int rc = store_tx_query(tx, pe->unique_check[i], params, e->tenant_scoped ? 3 : 2,
                                    found_row, &found, err);
            if (rc) return rc;
            if (found)
                return chr_fail(err, CHR_ECONFLICT, f->name,
                                "%s: another %s already has this value", f->name, e->name);
        }
    }
    for (size_t u = 0; u < e->n_unique; u++) {
        const unique_group_t *g = &e->unique[u];
        store_val_t params[64];
        char scratch[64][64];
        size_t np = 0;
        bool any_null = false;
        for (size_t j = 0; j < g->n && np < 60; j++) {
            const field_def_t *f = entity_field(e, g->fields[j]);
            params[np] = column_value(f, state->data, scratch[np], sizeof scratch[np]);
            any_null |= params[np].type == SV_NULL;
            np++;
        }
        if (any_null) continue; /* like a unique index: NULLs never clash */
        params[np++] = (store_val_t){.type = SV_TEXT, .s = key};
        if (e->tenant_scoped) params[np++] = tv;
        bool found = false;
        int rc = store_tx_query(tx, pe->group_check[u], params, np, found_row, &found, err);
        if (rc) return rc;
        if (found) {
            char names[512] = "";
            size_t len = 0;
            for (size_t j = 0; j < g->n && len < sizeof names; j++)
                len += (size_t)snprintf(names + len, sizeof names - len, "%s%s", j ? ", " : "",
                                        g->fields[j]);
            return chr_fail(err, CHR_ECONFLICT, g->fields[0],
                            "%s: another %s already has the same %s", g->fields[0], e->name, names);
        }
    }
    return CHR_OK;
}

/* A delete must not leave refs pointing nowhere: refused (409) while a
 * live row of any entity refers to this one. (Deleted rows keep no column
 * values, so only live rows match.) */
static int check_not_referenced(const projections_t *p, const proj_entity_t *pe, store_tx_t *tx,
                                const char *key, chr_err_t *err)
{
    for (size_t i = 0; i < pe->n_ref_by; i++) {
        const struct proj_ref_by *rb = &pe->ref_by[i];
        store_val_t params[2] = {{.type = SV_TEXT, .s = key}, {.type = SV_TEXT, .s = key}};
        bool found = false;
        int rc = store_tx_query(tx, rb->sql, params, 2, found_row, &found, err);
        if (rc) return rc;
        if (found) {
            const entity_def_t *by = p->entities[rb->entity].def;
            return chr_fail(err, CHR_ECONFLICT, "",
                            "%s %s is referred to by %s (field %s): delete or change those first",
                            pe->def->name, key, by->name, by->fields[rb->field].name);
        }
    }
    return CHR_OK;
}

int projection_row_render(const projections_t *p, int entity, const char *key,
                          const entity_state_t *state, projection_row_t *row)
{
    const entity_def_t *e = p->entities[entity].def;
    memset(row, 0, sizeof *row);
    row->key = key;
    row->state = state;
    row->doc = json_dumps(state->data ? state->data : json_object(), JSON_COMPACT);
    json_t *view = state->data && !state->deleted ? entity_state_to_json(e, state) : NULL;
    row->pub = view ? json_dumps(view, JSON_COMPACT) : strdup("null");
    json_decref(view);
    if (!row->doc || !row->pub) {
        projection_row_free(row);
        return CHR_ENOMEM;
    }
    return CHR_OK;
}

void projection_row_free(projection_row_t *row)
{
    free(row->doc);
    free(row->pub);
    row->doc = row->pub = NULL;
}

/* The bound values of upsert_row for row: pe->n_columns of them into vals
 * (texts borrowed from row and its state; scratch has one slot per field).
 * Returns the count. */
static size_t row_values(const proj_entity_t *pe, const projection_row_t *row, store_val_t *vals,
                         char (*scratch)[512])
{
    const entity_def_t *e = pe->def;
    const entity_state_t *state = row->state;
    size_t k = 0;
    vals[k++] = (store_val_t){.type = SV_TEXT, .s = row->key};
    if (e->tenant_scoped) {
        const char *t = json_string_value(json_object_get(state->data, "tenant_id"));
        vals[k++] = (store_val_t){.type = t ? SV_TEXT : SV_NULL, .s = t};
    }
    for (size_t i = 0; i < e->n_fields; i++) {
        const field_def_t *f = &e->fields[i];
        if (strcmp(f->name, e->key) == 0) continue;
        /* A deleted row keeps no column values: it must not hold unique
         * values or refs that block other rows. */
        vals[k++] = state->deleted ? (store_val_t){.type = SV_NULL}
                                   : column_value(f, state->data, scratch[i], sizeof scratch[i]);
    }
    vals[k++] = (store_val_t){.type = SV_INT, .i = state->version};
    vals[k++] = (store_val_t){.type = SV_INT, .i = state->created_at};
    vals[k++] = (store_val_t){.type = SV_INT, .i = state->updated_at};
    vals[k++] = (store_val_t){.type = SV_INT, .i = state->deleted ? 1 : 0};
    vals[k++] = (store_val_t){.type = SV_TEXT, .s = row->doc};
    vals[k++] = (store_val_t){.type = SV_TEXT, .s = row->pub};
    return k;
}

int projection_write(const projections_t *p, store_tx_t *tx, int entity,
                     const projection_row_t *row, chr_err_t *err)
{
    const proj_entity_t *pe = &p->entities[entity];
    const entity_def_t *e = pe->def;
    const entity_state_t *state = row->state;
    const char *key = row->key;
    if (!row->replay && !p->read_model) {
        int rc = state->deleted ? check_not_referenced(p, pe, tx, key, err)
                                : check_refs_and_unique(p, pe, tx, key, state, err);
        if (rc) return rc;
    }
    size_t n = pe->n_columns;
    store_val_t *vals = calloc(n, sizeof *vals);
    char(*scratch)[512] = calloc(e->n_fields ? e->n_fields : 1, sizeof *scratch);
    if (!vals || !scratch) {
        free(vals);
        free(scratch);
        return chr_fail(err, CHR_ENOMEM, "", "out of memory");
    }
    size_t k = row_values(pe, row, vals, scratch);
    int rc = store_tx_exec(tx, pe->upsert_row, vals, k, NULL, err);
    free(vals);
    free(scratch);
    return rc;
}

/* ---- creating, checking and rebuilding the tables ----------------------- */

static int exec_all(store_tx_t *tx, const projections_t *p, bool drop, chr_err_t *err)
{
    int rc = CHR_OK;
    for (size_t i = 0; !rc && i < p->def->n_entities; i++) {
        const proj_entity_t *pe = &p->entities[i];
        if (drop) rc = store_tx_exec(tx, pe->drop_table, NULL, 0, NULL, err);
        if (!rc) rc = store_tx_exec(tx, pe->create_table, NULL, 0, NULL, err);
        for (size_t j = 0; !rc && j < pe->n_indexes; j++)
            rc = store_tx_exec(tx, pe->create_indexes[j], NULL, 0, NULL, err);
    }
    return rc;
}

typedef struct layout_row {
    char layout[80];
    char *tables; /* JSON array text, owned */
    bool found, ready;
} layout_row_t;

static int read_layout(void *user, const store_val_t *v, size_t n)
{
    layout_row_t *r = user;
    if (n >= 3 && v[0].type == SV_TEXT && v[1].type == SV_TEXT) {
        snprintf(r->layout, sizeof r->layout, "%s", v[0].s);
        r->tables = strdup(v[1].s);
        r->found = true;
        r->ready = v[2].type == SV_INT && v[2].i == 1;
    }
    return 1;
}

int projections_check_layout(const projections_t *p, store_tx_t *tx, chr_err_t *err)
{
    layout_row_t row = {0};
    int rc = store_tx_query(tx, "SELECT layout, tables, ready FROM " LAYOUT_TABLE " WHERE id = 1",
                            NULL, 0, read_layout, &row, err);
    free(row.tables);
    if (rc) return rc;
    if (!row.found || strcmp(row.layout, p->layout) != 0)
        return chr_fail(err, CHR_ECONFLICT, "",
                        "the stored projection layout is not this definition's (an instance with "
                        "another definition synced the tables)");
    return CHR_OK;
}

typedef struct sync_ctx {
    projections_t *p;
    bool force;     /* drop and recreate regardless of the stored layout */
    bool rebuild;   /* out: the tables were (re)created empty and need a replay */
    bool had_layout; /* out: tables of an earlier layout existed */
} sync_ctx_t;

/* The read model's checkpoint table and row; back to 0 when reset. */
static int reset_checkpoint(store_tx_t *tx, bool reset, chr_err_t *err)
{
    int rc = store_tx_exec(tx,
                           "CREATE TABLE IF NOT EXISTS " PROJECTION_CHECKPOINT_TABLE
                           " (id INTEGER PRIMARY KEY, position BIGINT NOT NULL, holder TEXT NOT "
                           "NULL, updated_at BIGINT NOT NULL)",
                           NULL, 0, NULL, err);
    if (rc) return rc;
    store_val_t now = {.type = SV_INT, .i = time_now_us()};
    return store_tx_exec(tx,
                         reset ? "INSERT INTO " PROJECTION_CHECKPOINT_TABLE
                                 " (id, position, holder, updated_at) VALUES (1, 0, '', ?) ON "
                                 "CONFLICT (id) DO UPDATE SET position = 0, updated_at = "
                                 "excluded.updated_at"
                               : "INSERT INTO " PROJECTION_CHECKPOINT_TABLE
                                 " (id, position, holder, updated_at) VALUES (1, 0, '', ?) ON "
                                 "CONFLICT (id) DO NOTHING",
                         &now, 1, NULL, err);
}

/* Runs in the writer: compares layouts, drops what the old layout had when
 * they differ, creates what is missing, records the new layout. */
static int sync_apply(store_tx_t *tx, void *user, chr_err_t *err)
{
    sync_ctx_t *c = user;
    projections_t *p = c->p;
    int rc = store_tx_exec(tx, LAYOUT_DDL, NULL, 0, NULL, err);
    if (rc) return rc;
    layout_row_t row = {0};
    rc = store_tx_query(tx, "SELECT layout, tables, ready FROM " LAYOUT_TABLE " WHERE id = 1", NULL,
                        0, read_layout, &row, err);
    if (rc) return rc;
    bool same = row.found && row.ready && strcmp(row.layout, p->layout) == 0;
    c->rebuild = c->force || !same;
    c->had_layout = row.found;
    /* The read model is refilled by the projector from position 0: the
     * checkpoint moves back with the tables, in this transaction, and first:
     * a projector's batch locks the checkpoint row before it writes rows, so
     * taking it before the tables' locks cannot deadlock with one (and makes
     * that batch fail, not land). */
    if (p->read_model) {
        rc = reset_checkpoint(tx, c->rebuild, err);
        if (rc) {
            free(row.tables);
            return rc;
        }
    }
    if (c->rebuild && row.tables) {
        /* Drop the tables the old layout made, whatever entities they were. */
        json_t *old = json_loads(row.tables, 0, NULL);
        size_t i;
        json_t *name;
        json_array_foreach(old, i, name)
        {
            const char *n = json_string_value(name);
            if (!n || !*n) continue;
            bool ok = true; /* names were validated when stored; check again */
            for (const char *q = n; *q; q++)
                if (!((*q >= 'a' && *q <= 'z') || (*q >= '0' && *q <= '9') || *q == '_')) ok = false;
            if (!ok) continue;
            char *sql = fmt("DROP TABLE IF EXISTS \"%s\"", n);
            if (!sql) {
                rc = chr_fail(err, CHR_ENOMEM, "", "out of memory");
                break;
            }
            rc = store_tx_exec(tx, sql, NULL, 0, NULL, err);
            free(sql);
            if (rc) break;
        }
        json_decref(old);
    }
    free(row.tables);
    if (rc) return rc;
    rc = exec_all(tx, p, c->rebuild, err);
    if (rc) return rc;
    json_t *tables = json_array();
    for (size_t i = 0; i < p->def->n_entities; i++)
        json_array_append_new(tables, json_string(p->def->entities[i].name));
    char *text = json_dumps(tables, JSON_COMPACT);
    json_decref(tables);
    if (!text) return chr_fail(err, CHR_ENOMEM, "", "out of memory");
    store_val_t vals[4] = {{.type = SV_TEXT, .s = p->layout},
                           {.type = SV_TEXT, .s = text},
                           {.type = SV_INT, .i = time_now_us()},
                           {.type = SV_INT, .i = c->rebuild && !p->read_model ? 0 : 1}};
    rc = store_tx_exec(tx,
                       "INSERT INTO " LAYOUT_TABLE " (id, layout, tables, built_at, ready) VALUES "
                       "(1, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET layout = excluded.layout, "
                       "tables = excluded.tables, built_at = excluded.built_at, ready = "
                       "excluded.ready",
                       vals, 4, NULL, err);
    free(text);
    return rc;
}

typedef struct replay_ctx {
    projections_t *p;
    event_list_t *events;
} replay_ctx_t;

/* Writes a folded state as its row. A rebuild reproduces what the log
 * says: the checks of refs and unique values were made when the events were
 * written, so the row is flagged replay and written without them. */
static int write_folded(const projections_t *p, store_tx_t *tx, int entity, const char *key,
                        const entity_state_t *st, chr_err_t *err)
{
    if (st->version <= 0) return CHR_OK;
    projection_row_t row;
    int rc = projection_row_render(p, entity, key, st, &row);
    row.replay = true;
    if (!rc) rc = projection_write(p, tx, entity, &row, err);
    projection_row_free(&row);
    return rc;
}

static int evolve_event(const proj_entity_t *pe, entity_state_t *st, const event_t *ev)
{
    json_t *data = json_loads(ev->data, JSON_DECODE_ANY, NULL);
    int rc = entity_evolve(pe->def, st, ev->type, data, ev->version, ev->timestamp);
    json_decref(data);
    return rc;
}

/* One row being folded in a batch of the read model. */
typedef struct folded {
    int entity;
    const char *key; /* borrowed from the event's stream */
    entity_state_t st;
    projection_row_t row;
} folded_t;

typedef struct many_ctx {
    folded_t *rows;
    const size_t *which; /* indexes into rows of the keys asked for */
    size_t n;
    int rc;
} many_ctx_t;

/* A row of select_many: the key, then select_state's columns. */
static int load_many_row(void *user, const store_val_t *v, size_t n)
{
    many_ctx_t *c = user;
    if (n < 6 || v[0].type != SV_TEXT) {
        c->rc = CHR_ESTORE;
        return 1;
    }
    for (size_t i = 0; i < c->n; i++) {
        folded_t *r = &c->rows[c->which[i]];
        if (strcmp(r->key, v[0].s) != 0) continue;
        load_ctx_t lc = {.state = &r->st, .rc = CHR_OK};
        load_row(&lc, v + 1, n - 1);
        if (lc.rc) c->rc = lc.rc;
        break;
    }
    return c->rc ? 1 : 0;
}

/* Loads the stored state of rows[which[0..n)] (one entity, n <=
 * PROJ_LOAD_MANY) in one statement; missing keys stay empty. */
static int load_many(const proj_entity_t *pe, store_tx_t *tx, folded_t *rows, const size_t *which,
                     size_t n, chr_err_t *err)
{
    store_val_t keys[PROJ_LOAD_MANY];
    for (size_t i = 0; i < PROJ_LOAD_MANY; i++) /* padded with the last key */
        keys[i] = (store_val_t){.type = SV_TEXT, .s = rows[which[i < n ? i : n - 1]].key};
    many_ctx_t c = {.rows = rows, .which = which, .n = n, .rc = CHR_OK};
    int rc = store_tx_query(tx, pe->select_many, keys, PROJ_LOAD_MANY, load_many_row, &c, err);
    if (!rc && c.rc)
        rc = chr_fail(err, CHR_ESTORE, "", "a projection row of %s is unreadable", pe->def->name);
    return rc;
}

/* Writes rows[which[0..n)] (one entity, rendered): PROJ_WRITE_MANY per
 * statement, the rest one by one. */
static int write_many(const projections_t *p, const proj_entity_t *pe, store_tx_t *tx, int entity,
                      folded_t *rows, const size_t *which, size_t n, chr_err_t *err)
{
    size_t cols = pe->n_columns, i = 0;
    store_val_t *vals = calloc(PROJ_WRITE_MANY * cols, sizeof *vals);
    char(*scratch)[512] = calloc(pe->def->n_fields ? pe->def->n_fields : 1, sizeof *scratch);
    int rc = vals && scratch ? CHR_OK : chr_fail(err, CHR_ENOMEM, "", "out of memory");
    for (; !rc && i + PROJ_WRITE_MANY <= n; i += PROJ_WRITE_MANY) {
        for (size_t j = 0; j < PROJ_WRITE_MANY; j++) /* texts are borrowed: scratch unused */
            row_values(pe, &rows[which[i + j]].row, vals + j * cols, scratch);
        rc = store_tx_exec(tx, pe->upsert_many, vals, PROJ_WRITE_MANY * cols, NULL, err);
    }
    for (; !rc && i < n; i++)
        rc = projection_write(p, tx, entity, &rows[which[i]].row, err);
    free(vals);
    free(scratch);
    return rc;
}

/* The read model (no checks, plain indexes): each row a batch touches is
 * loaded once (PROJ_LOAD_MANY at a time), folded through all its events in
 * log order, and written once (PROJ_WRITE_MANY at a time): a batch costs a
 * few statements per hundred rows rather than two per event. */
static int apply_grouped(const projections_t *p, store_tx_t *tx, const event_list_t *events,
                         chr_err_t *err)
{
    size_t cap = events->len ? events->len : 1;
    folded_t *rows = calloc(cap, sizeof *rows);
    size_t *which = calloc(cap, sizeof *which);
    strmap_t index = {0};
    size_t n = 0;
    int rc = rows && which ? CHR_OK : chr_fail(err, CHR_ENOMEM, "", "out of memory");
    /* The rows, in order of first appearance. */
    for (size_t i = 0; !rc && i < events->len; i++) {
        const event_t *ev = &events->items[i];
        int entity;
        const char *key;
        int64_t at;
        if (!projection_stream_entity(p, ev->stream, &entity, &key)) continue;
        if (strmap_get(&index, ev->stream, &at)) continue;
        if (strmap_put(&index, ev->stream, (int64_t)n) != 0) {
            rc = chr_fail(err, CHR_ENOMEM, "", "out of memory");
            break;
        }
        rows[n].entity = entity;
        rows[n].key = key;
        entity_state_init(&rows[n].st);
        n++;
    }
    /* Load, per entity. */
    for (size_t e = 0; !rc && e < p->def->n_entities; e++) {
        size_t m = 0;
        for (size_t i = 0; i < n; i++)
            if (rows[i].entity == (int)e) which[m++] = i;
        for (size_t i = 0; !rc && i < m; i += PROJ_LOAD_MANY)
            rc = load_many(&p->entities[e], tx, rows, which + i,
                           m - i < PROJ_LOAD_MANY ? m - i : PROJ_LOAD_MANY, err);
    }
    /* Fold, in log order. */
    for (size_t i = 0; !rc && i < events->len; i++) {
        const event_t *ev = &events->items[i];
        int entity;
        const char *key;
        int64_t at;
        if (!projection_stream_entity(p, ev->stream, &entity, &key)) continue;
        if (!strmap_get(&index, ev->stream, &at)) continue;
        rc = evolve_event(&p->entities[entity], &rows[at].st, ev);
    }
    /* Render and write, per entity. */
    for (size_t i = 0; !rc && i < n; i++)
        if (rows[i].st.version > 0 &&
            projection_row_render(p, rows[i].entity, rows[i].key, &rows[i].st, &rows[i].row))
            rc = chr_fail(err, CHR_ENOMEM, "", "out of memory");
    for (size_t e = 0; !rc && e < p->def->n_entities; e++) {
        size_t m = 0;
        for (size_t i = 0; i < n; i++)
            if (rows[i].entity == (int)e && rows[i].st.version > 0) which[m++] = i;
        if (m) rc = write_many(p, &p->entities[e], tx, (int)e, rows, which, m, err);
    }
    for (size_t i = 0; i < n; i++) {
        projection_row_free(&rows[i].row);
        entity_state_free(&rows[i].st);
    }
    strmap_free(&index);
    free(rows);
    free(which);
    return rc;
}

int projection_apply_events(const projections_t *p, store_tx_t *tx, const event_list_t *events,
                            chr_err_t *err)
{
    if (p->read_model) return apply_grouped(p, tx, events, err);
    /* Inline tables: row by row in log order, so that unique values handed
     * from one row to another never clash in between. */
    for (size_t i = 0; i < events->len; i++) {
        const event_t *ev = &events->items[i];
        int entity;
        const char *key;
        if (!projection_stream_entity(p, ev->stream, &entity, &key)) continue;
        const proj_entity_t *pe = &p->entities[entity];
        entity_state_t st;
        entity_state_init(&st);
        int rc = tx_load_state(pe, tx, key, &st, err);
        if (!rc) rc = evolve_event(pe, &st, ev);
        if (!rc) rc = write_folded(p, tx, entity, key, &st, err);
        entity_state_free(&st);
        if (rc) return rc;
    }
    return CHR_OK;
}

/* Runs in the writer: folds one page of events into the rows they touch. */
static int replay_apply(store_tx_t *tx, void *user, chr_err_t *err)
{
    replay_ctx_t *c = user;
    return projection_apply_events(c->p, tx, c->events, err);
}

static int replay_all(projections_t *p, store_t *s, int64_t *count, chr_err_t *err)
{
    int64_t after = 0;
    *count = 0;
    for (;;) {
        event_list_t page = {0};
        int rc = store_read_all(s, after, REBUILD_PAGE, NULL, 0, &page, err);
        if (rc) {
            event_list_free(&page);
            return rc;
        }
        if (page.len == 0) {
            event_list_free(&page);
            return CHR_OK;
        }
        after = page.items[page.len - 1].position;
        *count += (int64_t)page.len;
        replay_ctx_t rc_ctx = {.p = p, .events = &page};
        store_uow_t uow = {.apply = replay_apply, .apply_user = &rc_ctx};
        rc = store_commit(s, &uow, err);
        event_list_free(&page);
        if (rc) return rc;
    }
}

static int mark_ready(store_tx_t *tx, void *user, chr_err_t *err)
{
    (void)user;
    return store_tx_exec(tx, "UPDATE " LAYOUT_TABLE " SET ready = 1 WHERE id = 1", NULL, 0, NULL,
                         err);
}

static void sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

/* Takes the sync lease of s, waiting while another instance (or another
 * engine of this process) holds it: that one is creating or rebuilding the
 * tables, which this one then finds ready. */
static int sync_lease(store_t *s, store_lease_t **out, chr_err_t *err)
{
    int64_t waited = 0;
    for (;;) {
        chr_err_t e = {0};
        int rc = store_lease_try(s, SYNC_LEASE, out, &e);
        if (rc != CHR_ECONFLICT) {
            if (rc && err) *err = e;
            return rc;
        }
        if (waited % SYNC_LOG_EVERY_MS == 0)
            log_at(LOG_INFO, "waiting for another instance to finish syncing the projections",
                   LOG_I("waited_ms", waited));
        /* A lease is only ever tried (store.h): waiting for another's is a
         * retry, at a pace that costs nothing next to a rebuild. */
        sleep_ms(SYNC_RETRY_MS);
        waited += SYNC_RETRY_MS;
    }
}

static int sync_locked(projections_t *p, store_t *s, bool force, bool *rebuilt, int64_t *events,
                       chr_err_t *err)
{
    sync_ctx_t c = {.p = p, .force = force};
    store_uow_t uow = {.apply = sync_apply, .apply_user = &c};
    int rc = store_commit(s, &uow, err);
    if (rc) return rc;
    *rebuilt = false;
    *events = 0;
    if (!c.rebuild) return CHR_OK;
    if (p->read_model) { /* emptied, checkpoint 0: the projector refills it */
        *rebuilt = c.had_layout;
        return CHR_OK;
    }
    rc = replay_all(p, s, events, err);
    if (rc) return rc;
    /* New empty tables over an empty log are a creation, not a rebuild. */
    *rebuilt = c.had_layout || *events > 0;
    store_uow_t done = {.apply = mark_ready};
    return store_commit(s, &done, err);
}

static int sync_tables(projections_t *p, store_t *s, bool force, bool *rebuilt, int64_t *events,
                       chr_err_t *err)
{
    store_lease_t *lease = NULL;
    int rc = sync_lease(s, &lease, err);
    if (rc) return rc;
    rc = sync_locked(p, s, force, rebuilt, events, err);
    store_lease_release(lease);
    return rc;
}

int projections_sync(projections_t *p, store_t *s, bool *rebuilt, int64_t *events, chr_err_t *err)
{
    return sync_tables(p, s, false, rebuilt, events, err);
}

int projections_rebuild(projections_t *p, store_t *s, int64_t *events, chr_err_t *err)
{
    bool rebuilt;
    return sync_tables(p, s, true, &rebuilt, events, err);
}
