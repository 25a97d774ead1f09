/*
 * definition.c - loading and validating the app definition (see
 * definition.h and docs/app-definition.md): JSON text in, a resolved,
 * read-only definition_t out, or the first error with its JSON path.
 *
 * Validation order is deterministic: at each object level unknown keys are
 * reported first (in document order), then known keys are checked in a fixed
 * order (app, entities, routes, schedules; per entity key, fields, operations, events,
 * commands, recreate_after_delete), and collections in document order
 * (jansson keeps the insertion order of object members).
 *
 * Not here: checking values of requests (field.c), deciding commands
 * (decide.c), the projection tables (engine/projection.c).
 */
#include "core/definition.h"
#include "core/mapping.h"

#include <assert.h>
#include <errno.h>
#include <math.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/cron.h"
#include "core/event.h"
#include "core/field.h"

#define NAME_RULE                                                                                  \
    "names must match ^[a-z][a-z0-9_]{0,62}$ because they become SQL identifiers and URL segments"
#define PATH_MAX_LEN 512
#define DEFINITION_MAX_BYTES (16u << 20)
#define ROUTE_MAX_LIMIT 1000
#define ROUTE_DEFAULT_LIMIT 50

static const char *const top_keys[] = {"app",       "entities", "routes",    "auth",
                                        "schedules", "webhooks", "audit_log", "feeds",
                                        "reactions", NULL};
static const char *const schedule_keys[] = {"cron",  "for_each", "cron_field", "timezone",
                                             "event", "data",     NULL};
static const char *const auth_keys[] = {"users", "api_keys", NULL};
static const char *const api_key_keys[] = {"name", "key_env", "roles", "tenant_id", NULL};
static const char *const entity_keys[] = {"key",      "fields",
                                          "operations", "events",
                                          "commands", "recreate_after_delete",
                                          "tenant_scoped", "unique",
                                          "access",   NULL};
static const char *const access_op_names[] = {"list",   "get",     "create", "update",
                                              "delete", "history", NULL};
static const char *const field_options[] = {"type",       "required", "default", "unique",
                                            "max_length", "min",      "max",     "immutable",
                                            "private",    "values",   "to",      "on_delete",
                                            NULL};
static const char *const event_keys[] = {"create", "update", "delete", NULL};
static const char *const command_keys[] = {"input", "when", "set", "event", NULL};
static const char *const op_names[] = {"create", "update", "upsert", "delete", NULL};
static const char *const reserved_entities[] = {"streams",  "events", "consumers", "auth",
                                                "openapi",  "health", "ready",     "metrics",
                                                "internal", NULL};
static const char *const reserved_fields[] = {"version", "created_at", "updated_at", "tenant_id",
                                              NULL};
static const char *const reserved_commands[] = {"history", "create", "list",   "get",
                                                "update",  "upsert", "delete", NULL};
static const char *const methods[] = {"GET", "POST", "PUT", "PATCH", "DELETE", NULL};
static const char *const reserved_segments[] = {"v1",           "health",   "ready", "metrics",
                                                "openapi.json", "internal", NULL};
static const char *const system_columns[] = {"version", "created_at", "updated_at", NULL};

/* What a field definition is for: options differ a little. */
typedef enum field_kind {
    FIELD_ENTITY, /* a column of the entity */
    FIELD_KEY,    /* the entity's key declared among its fields */
    FIELD_INPUT,  /* a command input */
} field_kind_t;

/* ---- small helpers --------------------------------------------------------- */

static bool in_list(const char *s, const char *const *list)
{
    for (size_t i = 0; list[i]; i++)
        if (strcmp(s, list[i]) == 0) return true;
    return false;
}

/* "a, b, c" into out (truncated to size). */
static void join(const char *const *list, char *out, size_t size)
{
    size_t off = 0;
    out[0] = '\0';
    for (size_t i = 0; list[i] && off < size; i++)
        off += (size_t)snprintf(out + off, size - off, "%s%s", i ? ", " : "", list[i]);
}

/* ^[a-z][a-z0-9_]{0,62}$ */
static bool name_valid(const char *s)
{
    if (!s || !(s[0] >= 'a' && s[0] <= 'z')) return false;
    size_t n = 1;
    for (const char *p = s + 1; *p; p++, n++) {
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_')) return false;
    }
    return n <= 63;
}

/* ^[A-Za-z][A-Za-z0-9_.:-]*$, 1-255 characters */
static bool event_type_valid(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > EVENT_NAME_MAX) return false;
    if (!((s[0] >= 'a' && s[0] <= 'z') || (s[0] >= 'A' && s[0] <= 'Z'))) return false;
    for (const char *p = s + 1; *p; p++) {
        char c = *p;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '.' || c == ':' || c == '-'))
            return false;
    }
    return true;
}

/* Fails with CHR_EINVAL, field = path and msg = "<path>: <problem>". */
static int bad(chr_err_t *err, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int bad(chr_err_t *err, const char *path, const char *fmt, ...)
{
    char problem[384];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(problem, sizeof problem, fmt, ap);
    va_end(ap);
    return chr_fail(err, CHR_EINVAL, path, "%s: %s", path, problem);
}

static int oom(chr_err_t *err)
{
    return chr_fail(err, CHR_ENOMEM, "", "out of memory loading the app definition");
}

/* Appends the NUL-terminated s to out (PATH_MAX_LEN bytes, holding *len),
 * truncating silently: paths only ever feed messages. */
static void append(char *out, size_t *len, const char *s)
{
    size_t n = strlen(s);
    if (n > PATH_MAX_LEN - 1 - *len) n = PATH_MAX_LEN - 1 - *len;
    memcpy(out + *len, s, n);
    *len += n;
    out[*len] = '\0';
}

/* path + "." + name into out (PATH_MAX_LEN bytes); just name at the root. */
static void child(char *out, const char *path, const char *name)
{
    size_t len = 0;
    out[0] = '\0';
    append(out, &len, path);
    if (path[0]) append(out, &len, ".");
    append(out, &len, name);
}

/* path + "[i]" into out (PATH_MAX_LEN bytes). */
static void item(char *out, const char *path, size_t i)
{
    char idx[32];
    snprintf(idx, sizeof idx, "[%zu]", i);
    size_t len = 0;
    out[0] = '\0';
    append(out, &len, path);
    append(out, &len, idx);
}

/* Reports the first member of obj (document order) not in allowed. what is
 * "key" or "option". */
static int check_keys(const json_t *obj, const char *path, const char *const *allowed,
                      const char *what, const char *context, chr_err_t *err)
{
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)obj, k, v) {
        if (in_list(k, allowed)) continue;
        char p[PATH_MAX_LEN], list[256];
        child(p, path, k);
        join(allowed, list, sizeof list);
        return bad(err, p, "unknown %s \"%s\"%s; allowed: %s", what, k, context, list);
    }
    return CHR_OK;
}

/* The normalised form of v (valid for f, or JSON null) as a value of its
 * own, sharing nothing with the parse tree: a new reference, NULL on
 * allocation failure. */
static json_t *own_value(const field_def_t *f, const json_t *v)
{
    if (json_is_null(v)) return json_null();
    json_t *n = field_normalize(f, v);
    if (n == v) {
        json_decref(n);
        n = json_deep_copy(v);
    }
    return n;
}

static int dup_str(const char *s, char **out, chr_err_t *err)
{
    *out = strdup(s);
    return *out ? CHR_OK : oom(err);
}

/* ---- freeing ------------------------------------------------------------- */

static void field_def_free(field_def_t *f)
{
    free(f->name);
    json_decref(f->default_value);
    for (size_t i = 0; i < f->n_values; i++)
        free(f->values[i]);
    free(f->values);
    free(f->ref_to);
    memset(f, 0, sizeof *f);
}

static void command_free(command_def_t *c)
{
    free(c->name);
    for (size_t i = 0; i < c->n_input; i++)
        field_def_free(&c->input[i]);
    free(c->input);
    json_decref(c->when);
    json_decref(c->set);
    free(c->event);
    access_set_free(&c->access);
    memset(c, 0, sizeof *c);
}

static void entity_free(entity_def_t *e)
{
    free(e->name);
    free(e->key);
    field_def_free(&e->key_field);
    for (size_t i = 0; i < e->n_fields; i++)
        field_def_free(&e->fields[i]);
    free(e->fields);
    free(e->ev_create);
    free(e->ev_update);
    free(e->ev_delete);
    for (size_t i = 0; i < e->n_commands; i++)
        command_free(&e->commands[i]);
    free(e->commands);
    for (size_t i = 0; i < ACC_N; i++)
        access_set_free(&e->access[i]);
    for (size_t i = 0; i < e->n_unique; i++) {
        for (size_t j = 0; j < e->unique[i].n; j++)
            free(e->unique[i].fields[j]);
        free(e->unique[i].fields);
    }
    free(e->unique);
    memset(e, 0, sizeof *e);
}

static void route_free(route_def_t *r)
{
    free(r->method);
    free(r->path);
    free(r->action);
    free(r->sort);
    json_decref(r->filters);
    for (size_t i = 0; i < r->n_fields; i++)
        free(r->fields[i]);
    free(r->fields);
    memset(r, 0, sizeof *r);
}

static void schedule_free(schedule_def_t *s)
{
    free(s->name);
    free(s->cron);
    free(s->zone);
    free(s->event);
    json_decref(s->data);
    memset(s, 0, sizeof *s);
}

static void free_strs(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

static void sink_filter_free(sink_filter_t *f)
{
    free_strs(f->types, f->n_types);
    free_strs(f->entities, f->n_entities);
    memset(f, 0, sizeof *f);
}

static void webhook_free(webhook_def_t *w)
{
    free(w->name);
    sink_filter_free(&w->filter);
    free(w->url);
    free(w->url_env);
    free(w->secret_env);
    memset(w, 0, sizeof *w);
}

void definition_free(definition_t *def)
{
    if (!def) return;
    for (size_t i = 0; i < def->n_feeds; i++) {
        free(def->feeds[i].name);
        free(def->feeds[i].url);
        free(def->feeds[i].url_env);
        free(def->feeds[i].secret_env);
    }
    free(def->feeds);
    for (size_t i = 0; i < def->n_reactions; i++) {
        reaction_def_t *r = &def->reactions[i];
        free(r->name);
        free(r->on);
        sink_filter_free(&r->filter);
        free(r->action);
        json_decref(r->with);
    }
    free(def->reactions);
    free(def->app);
    for (size_t i = 0; i < def->n_entities; i++)
        entity_free(&def->entities[i]);
    free(def->entities);
    for (size_t i = 0; i < def->n_routes; i++)
        route_free(&def->routes[i]);
    free(def->routes);
    for (size_t i = 0; i < def->n_schedules; i++)
        schedule_free(&def->schedules[i]);
    free(def->schedules);
    for (size_t i = 0; i < def->n_webhooks; i++)
        webhook_free(&def->webhooks[i]);
    free(def->webhooks);
    if (def->audit_log) {
        free(def->audit_log->path);
        free(def->audit_log->path_env);
        sink_filter_free(&def->audit_log->filter);
        free(def->audit_log);
    }
    free(def->auth.users);
    json_decref(def->auth.api_keys);
    free(def);
}

/* ---- lookups ------------------------------------------------------------- */

int definition_entity_index(const definition_t *def, const char *name)
{
    for (size_t i = 0; name && i < def->n_entities; i++)
        if (def->entities[i].name && strcmp(def->entities[i].name, name) == 0) return (int)i;
    return -1;
}

const entity_def_t *definition_entity(const definition_t *def, const char *name)
{
    int i = definition_entity_index(def, name);
    return i < 0 ? NULL : &def->entities[i];
}

const field_def_t *entity_field(const entity_def_t *e, const char *name)
{
    for (size_t i = 0; name && i < e->n_fields; i++)
        if (strcmp(e->fields[i].name, name) == 0) return &e->fields[i];
    return NULL;
}

const command_def_t *entity_command(const entity_def_t *e, const char *name)
{
    for (size_t i = 0; name && i < e->n_commands; i++)
        if (strcmp(e->commands[i].name, name) == 0) return &e->commands[i];
    return NULL;
}

const field_def_t *entity_field_or_key(const entity_def_t *e, const char *name)
{
    if (name && e->key && strcmp(name, e->key) == 0) return &e->key_field;
    return entity_field(e, name);
}

/* ---- fields -------------------------------------------------------------- */

/* Checks a name against NAME_RULE and a reserved list; what is "entity",
 * "field", "command" or "input". */
static int check_name(const char *name, const char *path, const char *what,
                      const char *const *reserved, chr_err_t *err)
{
    if (!name_valid(name)) return bad(err, path, "invalid %s name; " NAME_RULE, what);
    if (reserved && in_list(name, reserved)) {
        char list[256];
        join(reserved, list, sizeof list);
        return bad(err, path, "\"%s\" is reserved; %s names must not be one of: %s", name, what,
                   list);
    }
    return CHR_OK;
}

static int check_bool(const json_t *v, const char *path, bool *out, chr_err_t *err)
{
    if (!json_is_boolean(v)) return bad(err, path, "must be true or false");
    *out = json_is_true(v);
    return CHR_OK;
}

static const char *article(field_type_t t)
{
    return (t == FT_INTEGER || t == FT_ENUM || t == FT_EMAIL) ? "an" : "a";
}

/* Parses "values" of an enum field into f. */
static int parse_enum_values(const json_t *v, const char *path, field_def_t *f, chr_err_t *err)
{
    if (!json_is_array(v) || json_array_size(v) == 0)
        return bad(err, path, "must be a non-empty array of strings");
    size_t n = json_array_size(v);
    f->values = calloc(n, sizeof *f->values);
    if (!f->values) return oom(err);
    for (size_t i = 0; i < n; i++) {
        const json_t *s = json_array_get(v, i);
        char p[PATH_MAX_LEN];
        item(p, path, i);
        if (!json_is_string(s) || json_string_length(s) == 0)
            return bad(err, p, "must be a non-empty string");
        const char *str = json_string_value(s);
        if (strlen(str) != json_string_length(s))
            return bad(err, p, "must not contain NUL characters");
        for (size_t j = 0; j < i; j++)
            if (strcmp(f->values[j], str) == 0) return bad(err, p, "\"%s\" is listed twice", str);
        int rc = dup_str(str, &f->values[i], err);
        if (rc) return rc;
        f->n_values = i + 1;
    }
    return CHR_OK;
}

/* Which options apply to which types; NULL when any type may have it. */
static const char *option_restriction(const char *opt, field_type_t t)
{
    if (strcmp(opt, "max_length") == 0)
        return (t == FT_STRING || t == FT_TEXT || t == FT_EMAIL || t == FT_PASSWORD)
                   ? NULL
                   : "string, text, email and password";
    if (strcmp(opt, "min") == 0 || strcmp(opt, "max") == 0)
        return (t == FT_INTEGER || t == FT_NUMBER) ? NULL : "integer and number";
    if (strcmp(opt, "values") == 0) return t == FT_ENUM ? NULL : "enum";
    if (strcmp(opt, "to") == 0 || strcmp(opt, "on_delete") == 0)
        return t == FT_REF ? NULL : "ref";
    return NULL;
}

/* Parses one field definition spec (name already checked) into *f, which
 * the caller zeroed and frees on failure. entities is the definition's
 * "entities" object, for ref targets. */
static int parse_field(const char *name, const json_t *spec, const char *path, field_kind_t kind,
                       const json_t *entities, field_def_t *f, chr_err_t *err)
{
    char p[PATH_MAX_LEN];
    int rc;
    f->ref_entity = -1;
    if ((rc = dup_str(name, &f->name, err))) return rc;
    if (!json_is_object(spec))
        return bad(err, path, "must be an object such as {\"type\": \"string\"}");
    if ((rc = check_keys(spec, path, field_options, "option", "", err))) return rc;

    /* the type decides which options apply, so it comes first */
    const json_t *type = json_object_get(spec, "type");
    child(p, path, "type");
    if (!type) return bad(err, p, "is required; expected one of " FIELD_TYPE_NAMES);
    if (!json_is_string(type))
        return bad(err, p, "must be a string; expected one of " FIELD_TYPE_NAMES);
    if (!field_type_from_name(json_string_value(type), &f->type))
        return bad(err, p, "unknown type \"%s\"; expected one of " FIELD_TYPE_NAMES,
                   json_string_value(type));
    if (kind == FIELD_KEY && f->type != FT_STRING)
        return bad(err, p, "must be \"string\": this field is the entity's key");
    if (kind == FIELD_INPUT && f->type == FT_PASSWORD)
        return bad(err, p, "password fields cannot be command inputs");
    if (f->type == FT_PASSWORD) {
        const json_t *pv = json_object_get(spec, "private");
        child(p, path, "private");
        if (pv && !json_is_true(pv))
            return bad(err, p, "password fields are always private");
        child(p, path, "unique");
        if (json_is_true(json_object_get(spec, "unique")))
            return bad(err, p, "not allowed for password fields");
        child(p, path, "default");
        if (json_object_get(spec, "default"))
            return bad(err, p, "not allowed for password fields");
        child(p, path, "type");
    }

    const char *opt;
    const json_t *v;
    json_object_foreach((json_t *)spec, opt, v) {
        if (strcmp(opt, "type") == 0 || strcmp(opt, "default") == 0) continue;
        child(p, path, opt);
        const char *only = option_restriction(opt, f->type);
        if (only)
            return bad(err, p, "only allowed for %s fields, not %s", only,
                       field_type_name(f->type));
        if (kind == FIELD_KEY && (strcmp(opt, "private") == 0))
            return bad(err, p, "not allowed for the key field: the key is always returned");
        if (kind == FIELD_INPUT && (strcmp(opt, "unique") == 0 || strcmp(opt, "immutable") == 0 ||
                                    strcmp(opt, "private") == 0 || strcmp(opt, "on_delete") == 0))
            return bad(err, p, "not allowed for command inputs");

        if (strcmp(opt, "required") == 0) {
            if ((rc = check_bool(v, p, &f->required, err))) return rc;
        } else if (strcmp(opt, "unique") == 0) {
            if ((rc = check_bool(v, p, &f->unique, err))) return rc;
            if (f->unique && (f->type == FT_JSON || f->type == FT_TEXT))
                return bad(err, p, "not allowed for %s fields", field_type_name(f->type));
            if (kind == FIELD_KEY && !f->unique) return bad(err, p, "the key is always unique");
        } else if (strcmp(opt, "immutable") == 0) {
            if ((rc = check_bool(v, p, &f->immutable, err))) return rc;
            if (kind == FIELD_KEY && !f->immutable)
                return bad(err, p, "the key is always immutable");
        } else if (strcmp(opt, "private") == 0) {
            if ((rc = check_bool(v, p, &f->is_private, err))) return rc;
        } else if (strcmp(opt, "on_delete") == 0) {
            const char *mode = json_is_string(v) ? json_string_value(v) : "";
            if (strcmp(mode, "keep") != 0 && strcmp(mode, "restrict") != 0)
                return bad(err, p,
                           "must be \"restrict\" (the default: the target cannot be deleted "
                           "while this refers to it) or \"keep\" (it can; the ref is kept)");
            f->ref_keep = strcmp(mode, "keep") == 0;
        } else if (strcmp(opt, "max_length") == 0) {
            int64_t limit = kind == FIELD_KEY ? FIELD_KEY_MAX_BYTES : FIELD_TEXT_MAX_LENGTH;
            if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > limit)
                return bad(err, p, "must be an integer from 1 to %lld%s", (long long)limit,
                           kind == FIELD_KEY ? " (keys are at most 255 bytes)" : "");
            f->has_max_length = true;
            f->max_length = json_integer_value(v);
        } else if (strcmp(opt, "min") == 0 || strcmp(opt, "max") == 0) {
            if (!json_is_number(v)) return bad(err, p, "must be a number");
            if (strcmp(opt, "min") == 0) {
                f->has_min = true;
                f->min = json_number_value(v);
            } else {
                f->has_max = true;
                f->max = json_number_value(v);
            }
        } else if (strcmp(opt, "values") == 0) {
            if ((rc = parse_enum_values(v, p, f, err))) return rc;
        } else if (strcmp(opt, "to") == 0) {
            if (!json_is_string(v)) return bad(err, p, "must be the name of an entity");
            if (!json_object_get(entities, json_string_value(v))) {
                char list[256] = "";
                size_t off = 0;
                const char *en;
                const json_t *ev;
                json_object_foreach((json_t *)entities, en, ev) {
                    if (off < sizeof list)
                        off += (size_t)snprintf(list + off, sizeof list - off, "%s%s",
                                                off ? ", " : "", en);
                }
                return bad(err, p, "unknown entity \"%s\"; defined: %s", json_string_value(v),
                           list);
            }
            if ((rc = dup_str(json_string_value(v), &f->ref_to, err))) return rc;
        }
    }

    if (f->type == FT_ENUM && !f->values) {
        child(p, path, "values");
        return bad(err, p, "is required for enum fields (a non-empty array of strings)");
    }
    if (f->type == FT_REF && !f->ref_to) {
        child(p, path, "to");
        return bad(err, p, "is required for ref fields (the name of an entity)");
    }
    if (f->has_min && f->has_max && f->min > f->max) {
        child(p, path, "max");
        return bad(err, p, "must not be less than min");
    }
    if (kind == FIELD_KEY) f->unique = f->immutable = true;
    if (f->type == FT_PASSWORD) f->is_private = true;
    if (!f->has_max_length && field_max_length(f) > 0) {
        /* make the type default explicit for everyone reading the model */
        f->max_length = field_max_length(f);
        f->has_max_length = true;
    }

    const json_t *def = json_object_get(spec, "default");
    if (def) {
        child(p, path, "default");
        if (kind == FIELD_KEY)
            return bad(err, p, "not allowed for the key field: every entity needs its own key");
        if (json_is_null(def)) return bad(err, p, "must not be null; leave it out for no default");
        char msg[256];
        if (!field_check_value(f, def, msg, sizeof msg)) return bad(err, p, "%s", msg);
        f->default_value = own_value(f, def);
        if (!f->default_value) return oom(err);
    }
    return CHR_OK;
}

/* Parses a "fields"-shaped object (entity fields or command inputs) into a
 * new array. For entity fields the key (when declared) goes to e->key_field
 * instead. */
static int parse_fields(const json_t *obj, const char *path, field_kind_t kind, const char *key,
                        const json_t *entities, field_def_t **out, size_t *n_out,
                        field_def_t *key_field, chr_err_t *err)
{
    if (!json_is_object(obj))
        return bad(err, path, "must be an object of field name -> {\"type\": ...}");
    size_t n = json_object_size(obj);
    *out = n ? calloc(n, sizeof **out) : NULL;
    if (n && !*out) return oom(err);
    const char *name;
    const json_t *spec;
    json_object_foreach((json_t *)obj, name, spec) {
        char p[PATH_MAX_LEN];
        child(p, path, name);
        int rc = check_name(name, p, kind == FIELD_INPUT ? "input" : "field", reserved_fields, err);
        if (rc) return rc;
        field_def_t f;
        memset(&f, 0, sizeof f);
        bool is_key = key && strcmp(name, key) == 0;
        rc = parse_field(name, spec, p, is_key ? FIELD_KEY : kind, entities, &f, err);
        if (rc) {
            field_def_free(&f);
            return rc;
        }
        if (is_key) {
            field_def_free(key_field);
            *key_field = f;
        } else {
            (*out)[(*n_out)++] = f;
        }
    }
    return CHR_OK;
}

/* ---- entities -------------------------------------------------------------- */

/* PascalCase of an entity name plus suffix: status_updates -> StatusUpdatesCreated. */
static char *default_event(const char *entity, const char *suffix)
{
    size_t n = strlen(entity) + strlen(suffix) + 1;
    char *out = malloc(n);
    if (!out) return NULL;
    size_t o = 0;
    bool upper = true;
    for (const char *p = entity; *p; p++) {
        if (*p == '_') {
            upper = true;
            continue;
        }
        out[o++] = (upper && *p >= 'a' && *p <= 'z') ? (char)(*p - 'a' + 'A') : *p;
        upper = false;
    }
    memcpy(out + o, suffix, strlen(suffix) + 1);
    return out;
}

static int parse_operations(const json_t *v, const char *path, unsigned *ops, chr_err_t *err)
{
    char list[128];
    join(op_names, list, sizeof list);
    if (!json_is_array(v) || json_array_size(v) == 0)
        return bad(err, path, "must be a non-empty array of: %s", list);
    *ops = 0;
    for (size_t i = 0; i < json_array_size(v); i++) {
        const json_t *o = json_array_get(v, i);
        char p[PATH_MAX_LEN];
        item(p, path, i);
        if (!json_is_string(o)) return bad(err, p, "must be one of: %s", list);
        unsigned bit = 0;
        for (size_t k = 0; op_names[k]; k++)
            if (strcmp(json_string_value(o), op_names[k]) == 0) bit = 1u << k;
        if (!bit)
            return bad(err, p, "unknown operation \"%s\"; expected one of: %s",
                       json_string_value(o), list);
        if (*ops & bit) return bad(err, p, "\"%s\" is listed twice", json_string_value(o));
        *ops |= bit;
    }
    return CHR_OK;
}

static int parse_event_name(const json_t *v, const char *path, char **out, chr_err_t *err)
{
    if (!json_is_string(v) || !event_type_valid(json_string_value(v)) ||
        strlen(json_string_value(v)) != json_string_length(v))
        return bad(err, path,
                   "must be an event type name: 1-255 characters matching "
                   "^[A-Za-z][A-Za-z0-9_.:-]*$");
    free(*out);
    return dup_str(json_string_value(v), out, err);
}

static int parse_events(const json_t *v, const char *path, entity_def_t *e, chr_err_t *err)
{
    int rc;
    if (!(e->ev_create = default_event(e->name, "Created")) ||
        !(e->ev_update = default_event(e->name, "Updated")) ||
        !(e->ev_delete = default_event(e->name, "Deleted")))
        return oom(err);
    if (v) {
        if (!json_is_object(v))
            return bad(err, path, "must be an object such as {\"create\": \"TeamRegistered\"}");
        if ((rc = check_keys(v, path, event_keys, "key", "", err))) return rc;
        char p[PATH_MAX_LEN];
        const char *k;
        const json_t *name;
        json_object_foreach((json_t *)v, k, name) {
            child(p, path, k);
            char **slot = k[0] == 'c' ? &e->ev_create : k[0] == 'u' ? &e->ev_update : &e->ev_delete;
            if ((rc = parse_event_name(name, p, slot, err))) return rc;
        }
    }
    if (strcmp(e->ev_delete, e->ev_create) == 0 || strcmp(e->ev_delete, e->ev_update) == 0) {
        char p[PATH_MAX_LEN];
        child(p, path, "delete");
        return bad(err, p, "\"%s\" is also the %s event; the delete event must have its own type",
                   e->ev_delete, strcmp(e->ev_delete, e->ev_create) == 0 ? "create" : "update");
    }
    return CHR_OK;
}

/* True when input field in can be assigned to field target without
 * breaking target's rules: same type (enum values a subset, same ref
 * target, limits within target's), or a json target. On false writes why. */
static bool input_compatible(const field_def_t *in, const field_def_t *target, char *why,
                             size_t size)
{
    if (target->type == FT_JSON) return true;
    if (in->type != target->type) {
        snprintf(why, size, "input \"%s\" is %s %s but field \"%s\" is %s %s", in->name,
                 article(in->type), field_type_name(in->type), target->name, article(target->type),
                 field_type_name(target->type));
        return false;
    }
    if (in->type == FT_ENUM) {
        for (size_t i = 0; i < in->n_values; i++) {
            bool found = false;
            for (size_t j = 0; j < target->n_values; j++)
                if (strcmp(in->values[i], target->values[j]) == 0) found = true;
            if (!found) {
                snprintf(why, size, "input \"%s\" allows \"%s\", which field \"%s\" does not",
                         in->name, in->values[i], target->name);
                return false;
            }
        }
    }
    if (in->type == FT_REF && strcmp(in->ref_to, target->ref_to) != 0) {
        snprintf(why, size, "input \"%s\" refers to %s but field \"%s\" to %s", in->name,
                 in->ref_to, target->name, target->ref_to);
        return false;
    }
    if (field_max_length(target) > 0 && field_max_length(in) > field_max_length(target)) {
        snprintf(why, size,
                 "input \"%s\" allows %lld characters but field \"%s\" only %lld; give the "
                 "input a max_length",
                 in->name, (long long)field_max_length(in), target->name,
                 (long long)field_max_length(target));
        return false;
    }
    if ((target->has_min && (!in->has_min || in->min < target->min)) ||
        (target->has_max && (!in->has_max || in->max > target->max))) {
        snprintf(why, size,
                 "input \"%s\" allows values outside the min/max of field \"%s\"; give the "
                 "input the same bounds",
                 in->name, target->name);
        return false;
    }
    return true;
}

static const field_def_t *command_input(const command_def_t *c, const char *name)
{
    for (size_t i = 0; i < c->n_input; i++)
        if (strcmp(c->input[i].name, name) == 0) return &c->input[i];
    return NULL;
}

/* Checks "when" of a command: field (or key) -> value or null. */
static int parse_when(const json_t *v, const char *path, const entity_def_t *e, command_def_t *c,
                      chr_err_t *err)
{
    if (!json_is_object(v))
        return bad(err, path, "must be an object of field -> required current value");
    const char *k;
    const json_t *val;
    json_object_foreach((json_t *)v, k, val) {
        char p[PATH_MAX_LEN], msg[256];
        child(p, path, k);
        const field_def_t *f = entity_field_or_key(e, k);
        if (!f) return bad(err, p, "unknown field \"%s\" of %s", k, e->name);
        if (f->type == FT_PASSWORD) return bad(err, p, "cannot test password field \"%s\"", k);
        if (!json_is_null(val) && !field_check_value(f, val, msg, sizeof msg))
            return bad(err, p, "%s", msg);
    }
    c->when = json_object();
    if (!c->when) return oom(err);
    json_object_foreach((json_t *)v, k, val) {
        json_t *n = own_value(entity_field_or_key(e, k), val);
        if (!n || json_object_set_new(c->when, k, n)) return oom(err);
    }
    return CHR_OK;
}

/* Checks "set" of a command: field -> constant, "$input.NAME" or "$now". */
static int parse_set(const json_t *v, const char *path, const entity_def_t *e, command_def_t *c,
                     chr_err_t *err)
{
    if (!json_is_object(v) || json_object_size(v) == 0)
        return bad(err, path,
                   "must be a non-empty object of field -> value, \"$input.NAME\" or \"$now\"");
    const char *k;
    const json_t *val;
    json_object_foreach((json_t *)v, k, val) {
        char p[PATH_MAX_LEN], msg[256];
        child(p, path, k);
        if (strcmp(k, e->key) == 0) return bad(err, p, "the key cannot be changed");
        const field_def_t *f = entity_field(e, k);
        if (!f) return bad(err, p, "unknown field \"%s\" of %s", k, e->name);
        if (f->immutable) return bad(err, p, "field \"%s\" is immutable", k);
        if (f->type == FT_PASSWORD)
            return bad(err, p, "password field \"%s\" cannot be set by a command", k);
        const char *s = json_string_value(val);
        if (s && s[0] == '$') {
            if (strcmp(s, "$now") == 0) {
                if (f->type != FT_TIMESTAMP)
                    return bad(err, p, "\"$now\" can only set timestamp fields, not %s",
                               field_type_name(f->type));
            } else if (strncmp(s, "$input.", 7) == 0) {
                const field_def_t *in = command_input(c, s + 7);
                if (!in) return bad(err, p, "\"%s\": the command has no input \"%s\"", s, s + 7);
                if (!input_compatible(in, f, msg, sizeof msg)) return bad(err, p, "%s", msg);
            } else {
                return bad(err, p,
                           "unknown reference \"%s\"; expected \"$input.NAME\" or \"$now\" "
                           "(constant strings cannot start with \"$\")",
                           s);
            }
        } else if (json_is_null(val)) {
            if (f->required) return bad(err, p, "field \"%s\" is required and cannot be unset", k);
        } else if (!field_check_value(f, val, msg, sizeof msg)) {
            return bad(err, p, "%s", msg);
        }
    }
    c->set = json_object();
    if (!c->set) return oom(err);
    json_object_foreach((json_t *)v, k, val) {
        const char *s = json_string_value(val);
        json_t *n = (s && s[0] == '$') ? json_deep_copy(val) : own_value(entity_field(e, k), val);
        if (!n || json_object_set_new(c->set, k, n)) return oom(err);
    }
    return CHR_OK;
}

static int parse_command(const char *name, const json_t *spec, const char *path,
                         const json_t *entities, const entity_def_t *e, command_def_t *c,
                         chr_err_t *err)
{
    char p[PATH_MAX_LEN];
    int rc;
    if ((rc = dup_str(name, &c->name, err))) return rc;
    if (!json_is_object(spec))
        return bad(err, path, "must be an object with \"set\" and/or \"input\", and \"event\"");
    if ((rc = check_keys(spec, path, command_keys, "key", "", err))) return rc;
    const json_t *input = json_object_get(spec, "input");
    const json_t *when = json_object_get(spec, "when");
    const json_t *set = json_object_get(spec, "set");
    const json_t *event = json_object_get(spec, "event");
    if (input) {
        child(p, path, "input");
        if ((rc = parse_fields(input, p, FIELD_INPUT, NULL, entities, &c->input, &c->n_input, NULL,
                               err)))
            return rc;
    }
    if (when) {
        child(p, path, "when");
        if ((rc = parse_when(when, p, e, c, err))) return rc;
    }
    if (set) {
        child(p, path, "set");
        if ((rc = parse_set(set, p, e, c, err))) return rc;
    }
    child(p, path, "event");
    if (!event) return bad(err, p, "is required: the type of the event the command emits");
    if ((rc = parse_event_name(event, p, &c->event, err))) return rc;
    if (strcmp(c->event, e->ev_delete) == 0)
        return bad(err, p, "\"%s\" is the delete event of %s; a command needs its own event type",
                   c->event, e->name);
    if (!set && c->n_input == 0)
        return bad(err, path, "a command needs \"set\" or \"input\" (or both)");
    return CHR_OK;
}

static int parse_commands(const json_t *v, const char *path, const json_t *entities,
                          entity_def_t *e, chr_err_t *err)
{
    if (!json_is_object(v))
        return bad(err, path,
                   "must be an object of command name -> {\"set\": ..., \"event\": ...}");
    size_t n = json_object_size(v);
    e->commands = n ? calloc(n, sizeof *e->commands) : NULL;
    if (n && !e->commands) return oom(err);
    const char *name;
    const json_t *spec;
    json_object_foreach((json_t *)v, name, spec) {
        char p[PATH_MAX_LEN];
        child(p, path, name);
        int rc = check_name(name, p, "command", reserved_commands, err);
        if (rc) return rc;
        command_def_t c;
        memset(&c, 0, sizeof c);
        rc = parse_command(name, spec, p, entities, e, &c, err);
        if (rc) {
            command_free(&c);
            return rc;
        }
        e->commands[e->n_commands++] = c;
    }
    return CHR_OK;
}

/* "unique": [["a", "b"], ...]: groups of at least two distinct fields that
 * may be unique together (not json, text or private). */
static int parse_unique(const json_t *v, const char *path, entity_def_t *e, chr_err_t *err)
{
    if (!json_is_array(v) || json_array_size(v) == 0)
        return bad(err, path, "must be a non-empty array of field-name arrays, such as "
                              "[[\"workspace_id\", \"user_id\"]]");
    size_t n = json_array_size(v);
    e->unique = calloc(n, sizeof *e->unique);
    if (!e->unique) return oom(err);
    for (size_t i = 0; i < n; i++) {
        char p[PATH_MAX_LEN], q[PATH_MAX_LEN];
        item(p, path, i);
        const json_t *g = json_array_get(v, i);
        if (!json_is_array(g) || json_array_size(g) < 2)
            return bad(err, p, "must be an array of at least two field names (one field: use "
                               "the field's \"unique\" option)");
        unique_group_t *u = &e->unique[e->n_unique++];
        u->fields = calloc(json_array_size(g), sizeof *u->fields);
        if (!u->fields) return oom(err);
        for (size_t j = 0; j < json_array_size(g); j++) {
            item(q, p, j);
            const char *f = json_string_value(json_array_get(g, j));
            const field_def_t *fd = f ? entity_field(e, f) : NULL;
            if (!fd) return bad(err, q, "must name a field of %s", e->name);
            if (fd->type == FT_JSON || fd->type == FT_TEXT || fd->is_private)
                return bad(err, q, "\"%s\": json, text and private fields cannot be unique", f);
            for (size_t k = 0; k < u->n; k++)
                if (strcmp(u->fields[k], f) == 0) return bad(err, q, "\"%s\" is given twice", f);
            if (dup_str(f, &u->fields[u->n], err)) return CHR_ENOMEM;
            u->n++;
        }
    }
    return CHR_OK;
}

/* One rule set of "access": parsed, its owner field checked against e. */
static int parse_rule_set(const json_t *v, const char *path, const entity_def_t *e,
                          access_set_t *out, chr_err_t *err)
{
    char why[256];
    if (!access_parse(v, out, why, sizeof why)) return bad(err, path, "%s", why);
    const char *owner = access_owner_field(out);
    if (owner && strcmp(owner, e->key) != 0) {
        const field_def_t *f = entity_field(e, owner);
        if (!f) return bad(err, path, "owner:%s: %s has no field %s", owner, e->name, owner);
        if (f->type != FT_STRING && f->type != FT_REF && f->type != FT_EMAIL)
            return bad(err, path, "owner:%s: the owner field must be the key or a string, email "
                                  "or ref field, not %s", owner, field_type_name(f->type));
    }
    if (e->tenant_scoped && access_is_public(out))
        return bad(err, path, "public: %s is tenant_scoped, so every caller needs a tenant; "
                              "use authenticated", e->name);
    return CHR_OK;
}

/* "access": {"list": rule(s), ..., "<command>": rule(s)}; what is not
 * named is "authenticated". */
static int parse_access(const json_t *v, const char *path, entity_def_t *e, chr_err_t *err)
{
    if (v && !json_is_object(v))
        return bad(err, path, "must be an object of operation -> rule or array of rules");
    const char *name;
    const json_t *rule;
    json_object_foreach((json_t *)v, name, rule) {
        char p[PATH_MAX_LEN];
        child(p, path, name);
        if (!in_list(name, access_op_names) && !entity_command(e, name)) {
            char list[128];
            join(access_op_names, list, sizeof list);
            return bad(err, p, "unknown operation; expected one of %s or a command of %s", list,
                       e->name);
        }
    }
    for (size_t i = 0; i < ACC_N; i++) {
        char p[PATH_MAX_LEN];
        child(p, path, access_op_names[i]);
        const json_t *r = v ? json_object_get(v, access_op_names[i]) : NULL;
        int rc = r ? parse_rule_set(r, p, e, &e->access[i], err)
                   : (access_default(&e->access[i]) ? CHR_OK : oom(err));
        if (rc) return rc;
    }
    for (size_t i = 0; i < e->n_commands; i++) {
        char p[PATH_MAX_LEN];
        command_def_t *c = &e->commands[i];
        child(p, path, c->name);
        const json_t *r = v ? json_object_get(v, c->name) : NULL;
        int rc = r ? parse_rule_set(r, p, e, &c->access, err)
                   : (access_default(&c->access) ? CHR_OK : oom(err));
        if (rc) return rc;
    }
    return CHR_OK;
}

const char *access_op_name(access_op_t op)
{
    return op < ACC_N ? access_op_names[op] : "?";
}

static int parse_entity(const char *name, const json_t *spec, const char *path,
                        const json_t *entities, entity_def_t *e, chr_err_t *err)
{
    char p[PATH_MAX_LEN];
    int rc;
    if ((rc = dup_str(name, &e->name, err))) return rc;
    if (!json_is_object(spec)) return bad(err, path, "must be an object with at least \"fields\"");
    if ((rc = check_keys(spec, path, entity_keys, "key", "", err))) return rc;

    const json_t *key = json_object_get(spec, "key");
    child(p, path, "key");
    if (key && !json_is_string(key)) return bad(err, p, "must be the name of the key field");
    const char *key_name = key ? json_string_value(key) : "id";
    if (!name_valid(key_name)) return bad(err, p, "invalid key field name; " NAME_RULE);
    if (in_list(key_name, reserved_fields)) {
        char list[128];
        join(reserved_fields, list, sizeof list);
        return bad(err, p, "\"%s\" is reserved; the key must not be one of: %s", key_name, list);
    }
    if ((rc = dup_str(key_name, &e->key, err))) return rc;
    if ((rc = dup_str(key_name, &e->key_field.name, err))) return rc;
    e->key_field.type = FT_STRING;
    e->key_field.unique = e->key_field.immutable = true;
    e->key_field.has_max_length = true;
    e->key_field.max_length = FIELD_KEY_MAX_BYTES;
    e->key_field.ref_entity = -1;

    const json_t *fields = json_object_get(spec, "fields");
    child(p, path, "fields");
    if (!fields) return bad(err, p, "is required (use {} for an entity with only a key)");
    if ((rc = parse_fields(fields, p, FIELD_ENTITY, e->key, entities, &e->fields, &e->n_fields,
                           &e->key_field, err)))
        return rc;

    e->operations = OP_ALL;
    const json_t *ops = json_object_get(spec, "operations");
    child(p, path, "operations");
    if (ops && (rc = parse_operations(ops, p, &e->operations, err))) return rc;

    child(p, path, "events");
    if ((rc = parse_events(json_object_get(spec, "events"), p, e, err))) return rc;

    const json_t *cmds = json_object_get(spec, "commands");
    child(p, path, "commands");
    if (cmds && (rc = parse_commands(cmds, p, entities, e, err))) return rc;

    e->recreate_after_delete = true;
    const json_t *rad = json_object_get(spec, "recreate_after_delete");
    child(p, path, "recreate_after_delete");
    if (rad && (rc = check_bool(rad, p, &e->recreate_after_delete, err))) return rc;

    const json_t *ts = json_object_get(spec, "tenant_scoped");
    child(p, path, "tenant_scoped");
    if (ts && (rc = check_bool(ts, p, &e->tenant_scoped, err))) return rc;

    const json_t *uniq = json_object_get(spec, "unique");
    child(p, path, "unique");
    if (uniq && (rc = parse_unique(uniq, p, e, err))) return rc;

    child(p, path, "access");
    return parse_access(json_object_get(spec, "access"), p, e, err);
}

static int parse_entities(const json_t *v, definition_t *def, chr_err_t *err)
{
    if (!v) return bad(err, "entities", "is required: an object of entity name -> definition");
    if (!json_is_object(v))
        return bad(err, "entities", "must be an object of entity name -> definition");
    size_t n = json_object_size(v);
    if (n == 0) return bad(err, "entities", "must define at least one entity");
    def->entities = calloc(n, sizeof *def->entities);
    if (!def->entities) return oom(err);
    def->n_entities = n; /* zeroed entries free cleanly */
    size_t i = 0;
    const char *name;
    const json_t *spec;
    json_object_foreach((json_t *)v, name, spec) {
        char p[PATH_MAX_LEN];
        child(p, "entities", name);
        int rc = check_name(name, p, "entity", reserved_entities, err);
        if (rc) return rc;
        if ((rc = parse_entity(name, spec, p, v, &def->entities[i++], err))) return rc;
    }
    /* resolve ref targets to indexes; a ref to a tenant-scoped entity is
     * checked within the referring row's tenant, so it needs one */
    for (i = 0; i < def->n_entities; i++) {
        entity_def_t *e = &def->entities[i];
        for (size_t f = 0; f < e->n_fields; f++)
            if (e->fields[f].type == FT_REF) {
                e->fields[f].ref_entity = definition_entity_index(def, e->fields[f].ref_to);
                if (!e->tenant_scoped && def->entities[e->fields[f].ref_entity].tenant_scoped) {
                    char p[PATH_MAX_LEN], q[PATH_MAX_LEN];
                    child(p, "entities", e->name);
                    child(q, p, "fields");
                    child(p, q, e->fields[f].name);
                    return bad(err, p, "%s is tenant_scoped, so only tenant_scoped entities may "
                                       "refer to it; mark %s \"tenant_scoped\": true",
                               e->fields[f].ref_to, e->name);
                }
            }
        for (size_t c = 0; c < e->n_commands; c++)
            for (size_t f = 0; f < e->commands[c].n_input; f++) {
                field_def_t *in = &e->commands[c].input[f];
                if (in->type == FT_REF) in->ref_entity = definition_entity_index(def, in->ref_to);
            }
    }
    return CHR_OK;
}

/* ---- routes ---------------------------------------------------------------- */

static bool literal_segment(const char *s, size_t n)
{
    if (n == 0) return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '~' || c == '-'))
            return false;
    }
    return true;
}

/* ^[a-z_][a-z0-9_]*$ (at most 63 characters) */
static bool param_name_valid(const char *s, size_t n)
{
    if (n == 0 || n > 63 || !((s[0] >= 'a' && s[0] <= 'z') || s[0] == '_')) return false;
    for (size_t i = 1; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '_'))
            return false;
    return true;
}

/* Checks a route path; counts its {param} segments. */
static int check_route_path(const char *path, const char *where, int *n_params, chr_err_t *err)
{
    *n_params = 0;
    if (path[0] != '/') return bad(err, where, "the path must start with \"/\"");
    if (path[1] == '\0') return bad(err, where, "the path must have at least one segment");
    size_t len = strlen(path);
    if (path[len - 1] == '/') return bad(err, where, "the path must not end with \"/\"");
    const char *s = path + 1;
    bool first = true;
    for (;;) {
        const char *end = strchr(s, '/');
        size_t n = end ? (size_t)(end - s) : strlen(s);
        if (n == 0) return bad(err, where, "the path must not contain empty segments (\"//\")");
        if (first) {
            for (size_t i = 0; reserved_segments[i]; i++)
                if (strlen(reserved_segments[i]) == n && memcmp(s, reserved_segments[i], n) == 0)
                    return bad(err, where,
                               "paths under /v1/, /health, /ready, /metrics, /openapi.json and "
                               "/internal/ are reserved for chronicle");
            first = false;
        }
        if (s[0] == '{') {
            if (n < 2 || s[n - 1] != '}' || !param_name_valid(s + 1, n - 2))
                return bad(err, where,
                           "invalid path parameter \"%.*s\"; use {name} with name matching "
                           "^[a-z_][a-z0-9_]*$",
                           (int)n, s);
            (*n_params)++;
        } else if (!literal_segment(s, n)) {
            return bad(err, where,
                       "invalid path segment \"%.*s\"; use letters, digits, \".\", \"_\", \"~\", "
                       "\"-\" or a {param}",
                       (int)n, s);
        } else if ((n == 1 && s[0] == '.') || (n == 2 && s[0] == '.' && s[1] == '.')) {
            return bad(err, where, "the path must not contain \".\" or \"..\" segments");
        }
        if (!end) break;
        s = end + 1;
    }
    return CHR_OK;
}

/* Splits "entity.action" and checks both against the definition. */
static int parse_action(const definition_t *def, const char *text, const char *where,
                        route_def_t *r, chr_err_t *err)
{
    const char *dot = strchr(text, '.');
    if (!dot || dot == text || !dot[1])
        return bad(err, where, "the action must be \"entity.action\", e.g. \"teams.list\"");
    char ename[128];
    size_t en = (size_t)(dot - text);
    if (en >= sizeof ename) en = sizeof ename - 1;
    memcpy(ename, text, en);
    ename[en] = '\0';
    int idx = definition_entity_index(def, ename);
    if (idx < 0) {
        char list[256] = "";
        size_t off = 0;
        for (size_t i = 0; i < def->n_entities && off < sizeof list; i++)
            off += (size_t)snprintf(list + off, sizeof list - off, "%s%s", i ? ", " : "",
                                    def->entities[i].name);
        return bad(err, where, "unknown entity \"%s\"; defined: %s", ename, list);
    }
    const entity_def_t *e = &def->entities[idx];
    const char *action = dot + 1;
    static const char *const builtin[] = {"create", "list",   "get",     "update",
                                          "upsert", "delete", "history", NULL};
    if (!in_list(action, builtin) && !entity_command(e, action)) {
        char cmds[200] = "";
        size_t off = 0;
        for (size_t i = 0; i < e->n_commands && off < sizeof cmds; i++)
            off += (size_t)snprintf(cmds + off, sizeof cmds - off, "%s%s", i ? ", " : "",
                                    e->commands[i].name);
        return bad(err, where,
                   "unknown action \"%s\" of %s; expected create, list, get, update, upsert, "
                   "delete, history or a command (%s)",
                   action, e->name, e->n_commands ? cmds : "none defined");
    }
    for (size_t k = 0; op_names[k]; k++) {
        if (strcmp(action, op_names[k]) == 0 && !(e->operations & (1u << k)))
            return bad(err, where,
                       "%s.%s is not enabled: entities.%s.operations does not list \"%s\"", e->name,
                       action, e->name, action);
    }
    r->entity = idx;
    return dup_str(action, &r->action, err);
}

/* Which methods an action accepts, as a NULL-terminated list. */
static const char *const *action_methods(const char *action, bool command)
{
    static const char *const get[] = {"GET", NULL};
    static const char *const create[] = {"POST", "PUT", NULL};
    static const char *const update[] = {"PATCH", "PUT", "POST", NULL};
    static const char *const upsert[] = {"PUT", "POST", NULL};
    static const char *const del[] = {"DELETE", "POST", NULL};
    static const char *const post[] = {"POST", NULL};
    if (command) return post;
    if (!strcmp(action, "list") || !strcmp(action, "get") || !strcmp(action, "history")) return get;
    if (!strcmp(action, "create")) return create;
    if (!strcmp(action, "update")) return update;
    if (!strcmp(action, "upsert")) return upsert;
    return del;
}

static int parse_sort(const json_t *v, const char *where, const entity_def_t *e, route_def_t *r,
                      chr_err_t *err)
{
    if (!json_is_string(v) || json_string_length(v) == 0)
        return bad(err, where, "must be a string such as \"-created_at,name\"");
    const char *s = json_string_value(v);
    const char *start = s;
    for (;;) {
        const char *end = strchr(start, ',');
        size_t n = end ? (size_t)(end - start) : strlen(start);
        char name[128];
        const char *nm = start;
        if (n && *nm == '-') {
            nm++;
            n--;
        }
        if (n == 0 || n >= sizeof name)
            return bad(err, where,
                       "\"%s\": expected comma-separated field names, each "
                       "optionally prefixed with \"-\" for descending order",
                       s);
        memcpy(name, nm, n);
        name[n] = '\0';
        const field_def_t *f = entity_field_or_key(e, name);
        if (!f && !in_list(name, system_columns))
            return bad(err, where, "cannot sort by \"%s\": not a field of %s", name, e->name);
        if (f && f->is_private) return bad(err, where, "cannot sort by private field \"%s\"", name);
        if (f && f->type == FT_JSON)
            return bad(err, where, "cannot sort by json field \"%s\"", name);
        /* the same name twice is a mistake */
        for (const char *q = s; q < start;) {
            const char *qe = strchr(q, ',');
            const char *qn = *q == '-' ? q + 1 : q;
            if ((size_t)(qe - qn) == n && memcmp(qn, name, n) == 0)
                return bad(err, where, "sorts by \"%s\" twice", name);
            q = qe + 1;
        }
        if (!end) break;
        start = end + 1;
    }
    return dup_str(s, &r->sort, err);
}

static int parse_route_fields(const json_t *v, const char *where, const entity_def_t *e,
                              route_def_t *r, chr_err_t *err)
{
    if (!json_is_array(v) || json_array_size(v) == 0)
        return bad(err, where, "must be a non-empty array of field names");
    size_t n = json_array_size(v);
    r->fields = calloc(n, sizeof *r->fields);
    if (!r->fields) return oom(err);
    for (size_t i = 0; i < n; i++) {
        char p[PATH_MAX_LEN];
        item(p, where, i);
        const char *name = json_string_value(json_array_get(v, i));
        if (!name) return bad(err, p, "must be a field name");
        const field_def_t *f = entity_field_or_key(e, name);
        if (!f && !in_list(name, system_columns))
            return bad(err, p, "unknown field \"%s\" of %s", name, e->name);
        if (f && f->is_private) return bad(err, p, "\"%s\" is private and never returned", name);
        for (size_t j = 0; j < i; j++)
            if (strcmp(r->fields[j], name) == 0) return bad(err, p, "\"%s\" is listed twice", name);
        int rc = dup_str(name, &r->fields[i], err);
        if (rc) return rc;
        r->n_fields = i + 1;
    }
    return CHR_OK;
}

static int parse_filters(const json_t *v, const char *where, const entity_def_t *e, route_def_t *r,
                         chr_err_t *err)
{
    if (!json_is_object(v)) return bad(err, where, "must be an object of field -> value");
    const char *k;
    const json_t *val;
    json_object_foreach((json_t *)v, k, val) {
        char p[PATH_MAX_LEN], msg[256];
        child(p, where, k);
        const field_def_t *f = entity_field_or_key(e, k);
        if (!f) return bad(err, p, "unknown field \"%s\" of %s", k, e->name);
        if (f->type == FT_JSON) return bad(err, p, "cannot filter on json field \"%s\"", k);
        if (f->type == FT_PASSWORD)
            return bad(err, p, "cannot filter on password field \"%s\"", k);
        if (json_is_null(val)) return bad(err, p, "must not be null");
        if (!field_check_value(f, val, msg, sizeof msg)) return bad(err, p, "%s", msg);
    }
    r->filters = json_object();
    if (!r->filters) return oom(err);
    json_object_foreach((json_t *)v, k, val) {
        json_t *n = own_value(entity_field_or_key(e, k), val);
        if (!n || json_object_set_new(r->filters, k, n)) return oom(err);
    }
    return CHR_OK;
}

static int parse_limit(const json_t *v, const char *where, int64_t max, int64_t *out,
                       chr_err_t *err)
{
    if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > max)
        return bad(err, where, "must be an integer from 1 to %lld", (long long)max);
    *out = json_integer_value(v);
    return CHR_OK;
}

/* The options of an object route value, after "action" was resolved. */
static int parse_route_options(const definition_t *def, const json_t *spec, const char *where,
                               route_def_t *r, chr_err_t *err)
{
    static const char *const list_opts[] = {"action",  "sort",   "limit", "max_limit",
                                            "filters", "fields", NULL};
    static const char *const get_opts[] = {"action", "fields", NULL};
    static const char *const no_opts[] = {"action", NULL};
    const char *const *allowed = !strcmp(r->action, "list")  ? list_opts
                                 : !strcmp(r->action, "get") ? get_opts
                                                             : no_opts;
    char ctx[160];
    snprintf(ctx, sizeof ctx, " for a %s route", r->action);
    int rc = check_keys(spec, where, allowed, "option", ctx, err);
    if (rc) return rc;
    const entity_def_t *e = &def->entities[r->entity];
    char p[PATH_MAX_LEN];
    const json_t *v;
    /* max_limit first: limit is checked against it */
    if ((v = json_object_get(spec, "max_limit"))) {
        child(p, where, "max_limit");
        if ((rc = parse_limit(v, p, ROUTE_MAX_LIMIT, &r->max_limit, err))) return rc;
    }
    const char *k;
    json_object_foreach((json_t *)spec, k, v) {
        child(p, where, k);
        if (!strcmp(k, "sort")) {
            rc = parse_sort(v, p, e, r, err);
        } else if (!strcmp(k, "limit")) {
            if (r->max_limit && json_is_integer(v) && json_integer_value(v) > r->max_limit)
                rc = bad(err, p, "must not exceed max_limit (%lld)", (long long)r->max_limit);
            else
                rc = parse_limit(v, p, ROUTE_MAX_LIMIT, &r->limit, err);
        } else if (!strcmp(k, "filters")) {
            rc = parse_filters(v, p, e, r, err);
        } else if (!strcmp(k, "fields")) {
            rc = parse_route_fields(v, p, e, r, err);
        }
        if (rc) return rc;
    }
    if (r->max_limit && !r->limit && r->max_limit < ROUTE_DEFAULT_LIMIT) r->limit = r->max_limit;
    return CHR_OK;
}

/* Path shape for conflict checks: every {param} becomes {}. */
static void path_shape(const char *path, char *out, size_t size)
{
    size_t o = 0;
    for (const char *p = path; *p && o + 1 < size; p++) {
        out[o++] = *p;
        if (*p == '{') {
            while (*p && *p != '}')
                p++;
            if (!*p) break;
            if (o + 1 < size) out[o++] = '}';
        }
    }
    out[o] = '\0';
}

static int parse_route(const definition_t *def, const char *key, const json_t *val,
                       const char *where, route_def_t *r, chr_err_t *err)
{
    char p[PATH_MAX_LEN];
    int rc;
    const char *sp = strchr(key, ' ');
    char method[16] = "";
    if (sp && (size_t)(sp - key) < sizeof method) {
        memcpy(method, key, (size_t)(sp - key));
        method[sp - key] = '\0';
    }
    if (!sp || !in_list(method, methods) || strchr(sp + 1, ' '))
        return bad(err, where,
                   "a route is \"METHOD /path\" with METHOD one of GET, POST, PUT, PATCH, DELETE");
    const char *path = sp + 1;
    int n_params;
    if ((rc = check_route_path(path, where, &n_params, err))) return rc;
    if ((rc = dup_str(method, &r->method, err)) || (rc = dup_str(path, &r->path, err))) return rc;

    const json_t *action;
    if (json_is_string(val)) {
        action = val;
        snprintf(p, sizeof p, "%s", where);
    } else if (json_is_object(val)) {
        action = json_object_get(val, "action");
        child(p, where, "action");
        if (!action) return bad(err, p, "is required, e.g. \"teams.list\"");
        if (!json_is_string(action))
            return bad(err, p, "must be a string \"entity.action\", e.g. \"teams.list\"");
    } else {
        return bad(err, where,
                   "must be \"entity.action\" or an object {\"action\": \"entity.action\", ...}");
    }
    if ((rc = parse_action(def, json_string_value(action), p, r, err))) return rc;

    const entity_def_t *e = &def->entities[r->entity];
    bool command = entity_command(e, r->action) != NULL;
    const char *const *ok = action_methods(r->action, command);
    if (!in_list(r->method, ok)) {
        char list[64];
        join(ok, list, sizeof list);
        return bad(err, where, "%s cannot serve %s.%s; use %s", r->method, e->name, r->action,
                   list);
    }
    bool collection = !strcmp(r->action, "create") || !strcmp(r->action, "list");
    if (collection && n_params != 0)
        return bad(err, where, "%s.%s takes no path parameter", e->name, r->action);
    if (!collection && n_params != 1)
        return bad(err, where,
                   "%s.%s needs exactly one path parameter such as {%s}: it carries the key",
                   e->name, r->action, e->key);
    if (json_is_object(val) && (rc = parse_route_options(def, val, where, r, err))) return rc;
    return CHR_OK;
}

static int parse_routes(const json_t *v, definition_t *def, chr_err_t *err)
{
    if (!v) return CHR_OK;
    if (!json_is_object(v))
        return bad(err, "routes", "must be an object of \"METHOD /path\" -> \"entity.action\"");
    size_t n = json_object_size(v);
    if (n == 0) return CHR_OK;
    def->routes = calloc(n, sizeof *def->routes);
    if (!def->routes) return oom(err);
    const char *key;
    const json_t *val;
    json_object_foreach((json_t *)v, key, val) {
        char where[PATH_MAX_LEN];
        child(where, "routes", key);
        route_def_t *r = &def->routes[def->n_routes++];
        int rc = parse_route(def, key, val, where, r, err);
        if (rc) return rc;
        char shape[PATH_MAX_LEN], other[PATH_MAX_LEN];
        path_shape(r->path, shape, sizeof shape);
        for (size_t i = 0; i + 1 < def->n_routes; i++) {
            const route_def_t *o = &def->routes[i];
            path_shape(o->path, other, sizeof other);
            if (strcmp(o->method, r->method) == 0 && strcmp(shape, other) == 0)
                return bad(err, where, "conflicts with route \"%s %s\"", o->method, o->path);
        }
    }
    return CHR_OK;
}

/* ---- schedules --------------------------------------------------------------- */

/* Checks a schedule's data template: an object whose string members may be
 * "$tick", "$missed", "$schedule", and with for_each "$key" and
 * "$row.FIELD" (a field of e that is not private). */
static int check_schedule_data(const json_t *v, const char *path, const entity_def_t *e,
                               chr_err_t *err)
{
    if (!json_is_object(v))
        return bad(err, path,
                   "must be an object of name -> constant, \"$tick\", \"$missed\", "
                   "\"$schedule\", \"$key\" or \"$row.FIELD\"");
    const char *k;
    const json_t *val;
    json_object_foreach((json_t *)v, k, val) {
        const char *s = json_string_value(val);
        if (!s || s[0] != '$') continue;
        char p[PATH_MAX_LEN];
        child(p, path, k);
        if (strcmp(s, "$tick") == 0 || strcmp(s, "$missed") == 0 || strcmp(s, "$schedule") == 0)
            continue;
        if (!e && (strcmp(s, "$key") == 0 || strncmp(s, "$row.", 5) == 0))
            return bad(err, p, "\"%s\" needs for_each (a fixed schedule has no row)", s);
        if (e && strcmp(s, "$key") == 0) continue;
        if (e && strncmp(s, "$row.", 5) == 0) {
            const field_def_t *f = entity_field(e, s + 5);
            if (!f) return bad(err, p, "\"%s\": %s has no field \"%s\"", s, e->name, s + 5);
            if (f->is_private)
                return bad(err, p, "\"%s\": field \"%s\" is private and cannot go into events", s,
                           s + 5);
            continue;
        }
        return bad(err, p,
                   "unknown reference \"%s\"; expected \"$tick\", \"$missed\", \"$schedule\", "
                   "\"$key\" or \"$row.FIELD\" (constant strings cannot start with \"$\")",
                   s);
    }
    return CHR_OK;
}

static int parse_schedule(const definition_t *def, const char *name, const json_t *spec,
                          const char *path, schedule_def_t *s, chr_err_t *err)
{
    char p[PATH_MAX_LEN];
    s->entity = -1;
    s->cron_field = -1;
    int rc = check_name(name, path, "schedule", NULL, err);
    if (!rc) rc = dup_str(name, &s->name, err);
    if (rc) return rc;
    if (!json_is_object(spec)) return bad(err, path, "must be an object");
    if ((rc = check_keys(spec, path, schedule_keys, "key", "", err))) return rc;
    const json_t *cron = json_object_get(spec, "cron");
    const json_t *each = json_object_get(spec, "for_each");
    const json_t *cfield = json_object_get(spec, "cron_field");
    if (!cron == !each)
        return bad(err, path,
                   "needs exactly one of \"cron\" (a fixed expression) and \"for_each\" (an "
                   "entity with a cron field)");
    const entity_def_t *e = NULL;
    if (cron) {
        child(p, path, "cron");
        cron_t c;
        chr_err_t cerr = {0};
        if (!json_is_string(cron)) return bad(err, p, "must be a cron expression (a string)");
        if (cron_parse(json_string_value(cron), &c, &cerr))
            return bad(err, p, "invalid cron expression: %s", cerr.msg);
        if (cfield) {
            child(p, path, "cron_field");
            return bad(err, p, "only allowed with \"for_each\"");
        }
        if ((rc = dup_str(json_string_value(cron), &s->cron, err))) return rc;
    } else {
        child(p, path, "for_each");
        if (!json_is_string(each)) return bad(err, p, "must be the name of an entity");
        s->entity = definition_entity_index(def, json_string_value(each));
        if (s->entity < 0)
            return bad(err, p, "unknown entity \"%s\"", json_string_value(each));
        e = &def->entities[s->entity];
        child(p, path, "cron_field");
        if (!cfield)
            return bad(err, path, "\"for_each\" needs \"cron_field\": the field of %s holding "
                                  "each row's cron expression", e->name);
        if (!json_is_string(cfield)) return bad(err, p, "must be the name of a field");
        const char *fname = json_string_value(cfield);
        const field_def_t *f = entity_field(e, fname);
        if (!f) return bad(err, p, "unknown field \"%s\" of %s", fname, e->name);
        if (f->type != FT_CRON)
            return bad(err, p, "field \"%s\" is %s %s field, not a cron field", fname,
                       article(f->type), field_type_name(f->type));
        s->cron_field = (int)(f - e->fields);
    }
    const json_t *zone = json_object_get(spec, "timezone");
    child(p, path, "timezone");
    if (zone && !json_is_string(zone)) return bad(err, p, "must be a string");
    const char *ztext = zone ? json_string_value(zone) : "UTC";
    chr_err_t zerr = {0};
    if (cron_parse_zone(ztext, &s->offset_s, &zerr)) return bad(err, p, "%s", zerr.msg);
    if ((rc = dup_str(ztext, &s->zone, err))) return rc;
    child(p, path, "event");
    const json_t *ev = json_object_get(spec, "event");
    if (!ev) return bad(err, path, "needs \"event\": the type of the event emitted on each tick");
    if ((rc = parse_event_name(ev, p, &s->event, err))) return rc;
    const json_t *data = json_object_get(spec, "data");
    child(p, path, "data");
    if (data) {
        if ((rc = check_schedule_data(data, p, e, err))) return rc;
        s->data = json_deep_copy(data);
    } else {
        s->data = e ? json_pack("{s:s, s:s}", e->key, "$key", "tick", "$tick")
                    : json_pack("{s:s}", "tick", "$tick");
    }
    return s->data ? CHR_OK : oom(err);
}

static int parse_schedules(const json_t *v, definition_t *def, chr_err_t *err)
{
    if (!v) return CHR_OK;
    if (!json_is_object(v)) return bad(err, "schedules", "must be an object of name -> schedule");
    size_t n = json_object_size(v);
    if (n == 0) return CHR_OK;
    def->schedules = calloc(n, sizeof *def->schedules);
    if (!def->schedules) return oom(err);
    const char *key;
    const json_t *val;
    json_object_foreach((json_t *)v, key, val) {
        char where[PATH_MAX_LEN];
        child(where, "schedules", key);
        int rc = parse_schedule(def, key, val, where, &def->schedules[def->n_schedules++], err);
        if (rc) return rc;
    }
    return CHR_OK;
}

/* ---- auth ------------------------------------------------------------------ */

/* "users": an entity with an email field (type email, unique) and a
 * password field (type password). */
static int parse_auth_users(const json_t *v, definition_t *def, chr_err_t *err)
{
    const char *name = json_string_value(v);
    if (!name) return bad(err, "auth.users", "must be the name of an entity");
    int idx = definition_entity_index(def, name);
    if (idx < 0) return bad(err, "auth.users", "unknown entity \"%s\"", name);
    const entity_def_t *e = &def->entities[idx];
    const field_def_t *email = entity_field(e, "email");
    if (!email || email->type != FT_EMAIL || !email->unique)
        return bad(err, "auth.users",
                   "entity \"%s\" needs a field \"email\" of type email with \"unique\": true",
                   name);
    const field_def_t *pw = entity_field(e, "password");
    if (!pw || pw->type != FT_PASSWORD)
        return bad(err, "auth.users", "entity \"%s\" needs a field \"password\" of type password",
                   name);
    def->auth.users_entity = idx;
    return dup_str(name, &def->auth.users, err);
}

/* "api_keys": [{"name", "key_env", "roles"?, "tenant_id"?}]. Keys are
 * never written in a definition (it is checked in): only the name of the
 * environment variable that holds one. */
static int parse_api_keys(const json_t *v, definition_t *def, chr_err_t *err)
{
    if (!json_is_array(v)) return bad(err, "auth.api_keys", "must be an array of keys");
    size_t i;
    const json_t *k;
    json_array_foreach(v, i, k) {
        char p[PATH_MAX_LEN], q[PATH_MAX_LEN];
        item(p, "auth.api_keys", i);
        if (!json_is_object(k))
            return bad(err, p, "must be an object {\"name\", \"key_env\", \"roles\", \"tenant_id\"}");
        int rc = check_keys(k, p, api_key_keys, "member", "", err);
        if (rc) return rc;
        static const char *const required[] = {"name", "key_env", NULL};
        for (size_t r = 0; required[r]; r++) {
            const json_t *s = json_object_get(k, required[r]);
            child(q, p, required[r]);
            if (!json_is_string(s) || json_string_length(s) == 0 || json_string_length(s) > 127)
                return bad(err, q, "is required: a string of 1-127 characters");
        }
        const json_t *roles = json_object_get(k, "roles");
        child(q, p, "roles");
        size_t j;
        const json_t *r;
        if (roles && !json_is_array(roles)) return bad(err, q, "must be an array of role names");
        json_array_foreach(roles, j, r) {
            if (!json_is_string(r) || json_string_length(r) == 0)
                return bad(err, q, "must be an array of role names");
        }
        const json_t *t = json_object_get(k, "tenant_id");
        child(q, p, "tenant_id");
        if (t && (!json_is_string(t) || json_string_length(t) == 0))
            return bad(err, q, "must be a non-empty string");
    }
    def->auth.api_keys = json_deep_copy(v);
    return def->auth.api_keys ? CHR_OK : oom(err);
}

static int parse_auth(const json_t *v, definition_t *def, chr_err_t *err)
{
    def->auth.users_entity = -1;
    if (!v) return CHR_OK;
    if (!json_is_object(v))
        return bad(err, "auth", "must be an object with \"users\" and/or \"api_keys\"");
    int rc = check_keys(v, "auth", auth_keys, "key", "", err);
    if (!rc && json_object_get(v, "users"))
        rc = parse_auth_users(json_object_get(v, "users"), def, err);
    if (!rc && json_object_get(v, "api_keys"))
        rc = parse_api_keys(json_object_get(v, "api_keys"), def, err);
    return rc;
}

/* ---- loading --------------------------------------------------------------- */

static int parse_app(const json_t *v, definition_t *def, chr_err_t *err)
{
    const char *name = "chronicle";
    if (v) {
        name = json_string_value(v);
        if (!name || !key_valid(name) || strlen(name) != json_string_length(v))
            return bad(err, "app",
                       "must be a name: 1-255 characters, no '/' or control characters");
    }
    return dup_str(name, &def->app, err);
}

/* ---- consumers: webhooks and the audit log --------------------------------- */

static const char *const webhook_keys[] = {
    "name",       "events",       "entities",   "url",           "url_env",
    "secret_env", "timeout_ms",   "max_attempts", "backoff_ms",  "max_backoff_ms", NULL};
static const char *const audit_log_keys[] = {"path",   "path_env", "max_bytes",
                                             "max_files", "events", "entities", NULL};

/* ^[A-Z_][A-Z0-9_]{0,127}$: the name of an environment variable. */
static bool env_name_valid(const char *s)
{
    size_t n = 0;
    for (const char *p = s; *p; p++, n++) {
        char c = *p;
        if (!((c >= 'A' && c <= 'Z') || c == '_' || (n > 0 && c >= '0' && c <= '9'))) return false;
    }
    return n >= 1 && n <= 128;
}

/* An optional string member; *out stays NULL when absent. what says what
 * the string must be, check (may be NULL) decides. */
static int parse_opt_str(const json_t *obj, const char *path, const char *key,
                         bool (*check)(const char *), const char *what, char **out, chr_err_t *err)
{
    const json_t *v = json_object_get(obj, key);
    if (!v) return CHR_OK;
    char p[PATH_MAX_LEN];
    child(p, path, key);
    const char *text = json_string_value(v);
    if (!text || strlen(text) != json_string_length(v) || (check && !check(text)))
        return bad(err, p, "must be %s", what);
    return dup_str(text, out, err);
}

/* An optional integer member in [min, max]; *out keeps its default when absent. */
static int parse_opt_int(const json_t *obj, const char *path, const char *key, int64_t min,
                         int64_t max, int64_t *out, chr_err_t *err)
{
    const json_t *v = json_object_get(obj, key);
    if (!v) return CHR_OK;
    if (!json_is_integer(v) || json_integer_value(v) < min || json_integer_value(v) > max) {
        char p[PATH_MAX_LEN];
        child(p, path, key);
        return bad(err, p, "must be an integer from %lld to %lld", (long long)min,
                   (long long)max);
    }
    *out = json_integer_value(v);
    return CHR_OK;
}

/* "events" (event types) and "entities" (declared entities) of a consumer. */
static int parse_sink_filter(const definition_t *def, const json_t *obj, const char *path,
                             sink_filter_t *f, chr_err_t *err)
{
    static const char *const keys[] = {"events", "entities"};
    for (int k = 0; k < 2; k++) {
        const json_t *v = json_object_get(obj, keys[k]);
        if (!v) continue;
        char p[PATH_MAX_LEN];
        child(p, path, keys[k]);
        if (!json_is_array(v) || json_array_size(v) == 0)
            return bad(err, p, "must be a non-empty array of %s",
                       k ? "entity names" : "event types");
        size_t n = json_array_size(v);
        char **list = calloc(n, sizeof *list);
        if (!list) return oom(err);
        if (k) {
            f->entities = list;
            f->n_entities = n;
        } else {
            f->types = list;
            f->n_types = n;
        }
        for (size_t i = 0; i < n; i++) {
            char ip[PATH_MAX_LEN];
            item(ip, p, i);
            const char *text = json_string_value(json_array_get(v, i));
            if (!text || strlen(text) != json_string_length(json_array_get(v, i)))
                return bad(err, ip, "must be a string");
            if (!k && !event_type_valid(text))
                return bad(err, ip, "\"%s\" is not a valid event type", text);
            if (k && definition_entity_index(def, text) < 0)
                return bad(err, ip, "unknown entity \"%s\"", text);
            for (size_t j = 0; j < i; j++)
                if (strcmp(list[j], text) == 0) return bad(err, ip, "\"%s\" is repeated", text);
            if (dup_str(text, &list[i], err)) return CHR_ENOMEM;
        }
    }
    return CHR_OK;
}

static bool url_valid(const char *s)
{
    size_t n = strncmp(s, "http://", 7) == 0 ? 7 : strncmp(s, "https://", 8) == 0 ? 8 : 0;
    if (!n || !s[n] || strlen(s) > 2048) return false;
    for (const char *p = s; *p; p++)
        if ((unsigned char)*p <= ' ' || *p == 0x7f) return false;
    return true;
}

static bool consumer_name_valid(const char *s)
{
    return name_valid(s) && strlen(s) <= CONSUMER_NAME_MAX;
}

static int parse_webhook(const definition_t *def, const json_t *spec, const char *path, size_t idx,
                         webhook_def_t *w, chr_err_t *err)
{
    if (!json_is_object(spec)) return bad(err, path, "must be an object");
    int rc = check_keys(spec, path, webhook_keys, "key", "", err);
    if (rc) return rc;
    w->timeout_ms = 10000;
    w->max_attempts = 8;
    w->backoff_ms = 1000;
    w->max_backoff_ms = 300000;
    if ((rc = parse_opt_str(spec, path, "name", consumer_name_valid,
                            "a name matching ^[a-z][a-z0-9_]{0,47}$", &w->name, err)))
        return rc;
    if (!w->name) {
        char dflt[32];
        snprintf(dflt, sizeof dflt, "webhook_%zu", idx + 1);
        if ((rc = dup_str(dflt, &w->name, err))) return rc;
    }
    if (strcmp(w->name, AUDIT_LOG_CONSUMER) == 0) {
        char p[PATH_MAX_LEN];
        child(p, path, "name");
        return bad(err, p, "\"%s\" is reserved for the audit log", w->name);
    }
    for (size_t j = 0; j < idx; j++)
        if (strcmp(def->webhooks[j].name, w->name) == 0) {
            char p[PATH_MAX_LEN];
            child(p, path, "name");
            return bad(err, p, "\"%s\" is the name of webhooks[%zu] already", w->name, j);
        }
    if ((rc = parse_sink_filter(def, spec, path, &w->filter, err))) return rc;
    if ((rc = parse_opt_str(spec, path, "url", url_valid, "an http:// or https:// URL", &w->url,
                            err)) ||
        (rc = parse_opt_str(spec, path, "url_env", env_name_valid,
                            "an environment variable name (^[A-Z_][A-Z0-9_]*$)", &w->url_env,
                            err)) ||
        (rc = parse_opt_str(spec, path, "secret_env", env_name_valid,
                            "an environment variable name (^[A-Z_][A-Z0-9_]*$)", &w->secret_env,
                            err)))
        return rc;
    if (!w->url == !w->url_env)
        return bad(err, path, "needs exactly one of \"url\" and \"url_env\"");
    if ((rc = parse_opt_int(spec, path, "timeout_ms", 1, 600000, &w->timeout_ms, err)) ||
        (rc = parse_opt_int(spec, path, "max_attempts", 1, 100, &w->max_attempts, err)) ||
        (rc = parse_opt_int(spec, path, "backoff_ms", 1, 3600000, &w->backoff_ms, err)) ||
        (rc = parse_opt_int(spec, path, "max_backoff_ms", 1, 86400000, &w->max_backoff_ms, err)))
        return rc;
    if (w->max_backoff_ms < w->backoff_ms) {
        char p[PATH_MAX_LEN];
        child(p, path, "max_backoff_ms");
        return bad(err, p, "must be at least backoff_ms (%lld)", (long long)w->backoff_ms);
    }
    return CHR_OK;
}

static int parse_webhooks(const json_t *v, definition_t *def, chr_err_t *err)
{
    if (!v) return CHR_OK;
    if (!json_is_array(v)) return bad(err, "webhooks", "must be an array of webhook objects");
    size_t n = json_array_size(v);
    if (n == 0) return CHR_OK;
    def->webhooks = calloc(n, sizeof *def->webhooks);
    if (!def->webhooks) return oom(err);
    for (size_t i = 0; i < n; i++) {
        char p[PATH_MAX_LEN];
        item(p, "webhooks", i);
        def->n_webhooks = i + 1; /* freed by definition_free even when half parsed */
        int rc = parse_webhook(def, json_array_get(v, i), p, i, &def->webhooks[i], err);
        if (rc) return rc;
    }
    return CHR_OK;
}

static int parse_audit_log(const json_t *v, definition_t *def, chr_err_t *err)
{
    if (!v) return CHR_OK;
    if (!json_is_object(v)) return bad(err, "audit_log", "must be an object");
    int rc = check_keys(v, "audit_log", audit_log_keys, "key", "", err);
    if (rc) return rc;
    audit_log_def_t *a = calloc(1, sizeof *a);
    if (!a) return oom(err);
    def->audit_log = a;
    a->max_bytes = 10 << 20;
    a->max_files = 5;
    if ((rc = parse_opt_str(v, "audit_log", "path", NULL, "a file path", &a->path, err)) ||
        (rc = parse_opt_str(v, "audit_log", "path_env", env_name_valid,
                            "an environment variable name (^[A-Z_][A-Z0-9_]*$)", &a->path_env,
                            err)) ||
        (rc = parse_opt_int(v, "audit_log", "max_bytes", 1024, INT64_C(1) << 40, &a->max_bytes,
                            err)) ||
        (rc = parse_opt_int(v, "audit_log", "max_files", 1, 1000, &a->max_files, err)) ||
        (rc = parse_sink_filter(def, v, "audit_log", &a->filter, err)))
        return rc;
    if (a->path && !a->path[0]) return bad(err, "audit_log.path", "must not be empty");
    return a->path ? CHR_OK : dup_str("audit.log", &a->path, err);
}

/* ---- feeds and reactions ---------------------------------------------------- */

static const char *const feed_keys[] = {"url", "url_env", "secret_env", "timeout_ms", "poll_ms",
                                        NULL};
static const char *const reaction_keys[] = {"on",         "from",         "run",
                                            "with",       "max_attempts", "backoff_ms",
                                            "max_backoff_ms", NULL};

static int parse_feeds(const json_t *v, definition_t *def, chr_err_t *err)
{
    if (!v) return CHR_OK;
    if (!json_is_object(v)) return bad(err, "feeds", "must be an object of name -> feed");
    size_t n = json_object_size(v);
    if (n == 0) return CHR_OK;
    def->feeds = calloc(n, sizeof *def->feeds);
    if (!def->feeds) return oom(err);
    const char *key;
    json_t *spec;
    json_object_foreach((json_t *)v, key, spec)
    {
        char p[PATH_MAX_LEN];
        child(p, "feeds", key);
        feed_def_t *f = &def->feeds[def->n_feeds++];
        f->timeout_ms = 10000;
        f->poll_ms = 1000;
        if (!name_valid(key)) return bad(err, p, "the name must match ^[a-z][a-z0-9_]{0,62}$");
        if (!json_is_object(spec)) return bad(err, p, "must be an object");
        int rc = check_keys(spec, p, feed_keys, "key", "", err);
        if (rc || (rc = dup_str(key, &f->name, err))) return rc;
        if ((rc = parse_opt_str(spec, p, "url", url_valid, "an http:// or https:// URL", &f->url,
                                err)) ||
            (rc = parse_opt_str(spec, p, "url_env", env_name_valid,
                                "an environment variable name (^[A-Z_][A-Z0-9_]*$)", &f->url_env,
                                err)) ||
            (rc = parse_opt_str(spec, p, "secret_env", env_name_valid,
                                "an environment variable name (^[A-Z_][A-Z0-9_]*$)",
                                &f->secret_env, err)) ||
            (rc = parse_opt_int(spec, p, "timeout_ms", 1, 600000, &f->timeout_ms, err)) ||
            (rc = parse_opt_int(spec, p, "poll_ms", 10, 600000, &f->poll_ms, err)))
            return rc;
        if (!f->url == !f->url_env)
            return bad(err, p, "needs exactly one of \"url\" and \"url_env\"");
    }
    return CHR_OK;
}

/* Whether name is taken by another consumer already parsed. */
static bool consumer_name_taken(const definition_t *def, const char *name)
{
    if (strcmp(name, AUDIT_LOG_CONSUMER) == 0) return true;
    for (size_t i = 0; i < def->n_webhooks; i++)
        if (strcmp(def->webhooks[i].name, name) == 0) return true;
    for (size_t i = 0; i + 1 < def->n_reactions; i++)
        if (def->reactions[i].name && strcmp(def->reactions[i].name, name) == 0) return true;
    return false;
}

static int parse_reaction(definition_t *def, const char *name, const json_t *spec, const char *p,
                          reaction_def_t *r, chr_err_t *err)
{
    r->feed = -1;
    r->entity = -1;
    r->max_attempts = 10;
    r->backoff_ms = 500;
    r->max_backoff_ms = 60000;
    if (!consumer_name_valid(name))
        return bad(err, p, "the name must match ^[a-z][a-z0-9_]{0,47}$");
    if (consumer_name_taken(def, name))
        return bad(err, p, "\"%s\" is the name of another consumer (a webhook or the audit log)",
                   name);
    if (!json_is_object(spec)) return bad(err, p, "must be an object");
    int rc = check_keys(spec, p, reaction_keys, "key", "", err);
    if (rc || (rc = dup_str(name, &r->name, err))) return rc;
    char cp[PATH_MAX_LEN];
    const char *on = json_string_value(json_object_get(spec, "on"));
    child(cp, p, "on");
    if (!on || !event_type_valid(on)) return bad(err, cp, "must be an event type");
    if ((rc = dup_str(on, &r->on, err))) return rc;
    r->filter.types = calloc(1, sizeof *r->filter.types);
    if (!r->filter.types) return oom(err);
    r->filter.n_types = 1;
    if ((rc = dup_str(on, &r->filter.types[0], err))) return rc;

    const json_t *from = json_object_get(spec, "from");
    if (from) {
        child(cp, p, "from");
        const char *fn = json_string_value(from);
        for (size_t i = 0; fn && i < def->n_feeds; i++)
            if (strcmp(def->feeds[i].name, fn) == 0) r->feed = (int)i;
        if (r->feed < 0) return bad(err, cp, "must name one of the definition's feeds");
    }

    const char *run = json_string_value(json_object_get(spec, "run"));
    child(cp, p, "run");
    if (!run) return bad(err, cp, "must be \"entity.command\", e.g. \"tasks.create\"");
    route_def_t tmp = {0};
    rc = parse_action(def, run, cp, &tmp, err);
    if (rc) {
        free(tmp.action);
        return rc;
    }
    r->entity = tmp.entity;
    r->action = tmp.action;
    static const char *const reads[] = {"list", "get", "history", NULL};
    if (in_list(r->action, reads)) return bad(err, cp, "must be a command, not the read \"%s\"", r->action);

    const json_t *with = json_object_get(spec, "with");
    child(cp, p, "with");
    if (with && !json_is_object(with)) return bad(err, cp, "must be an object of field -> value");
    r->with = with ? json_deep_copy(with) : json_object();
    if (!r->with) return oom(err);
    const char *k;
    json_t *v;
    json_object_foreach(r->with, k, v)
    {
        const char *s = json_string_value(v);
        if (s && !mapping_value_valid(s)) {
            char mp[PATH_MAX_LEN];
            child(mp, cp, k);
            return bad(err, mp,
                       "\"%s\" is not a path: use $.id, $.type, $.stream, $.key, $.data[.field...] "
                       "or $.metadata[.field...] ($$ for a literal $)",
                       s);
        }
    }
    const entity_def_t *e = &def->entities[r->entity];
    if (strcmp(r->action, "create") != 0 && !json_object_get(r->with, e->key)) {
        return bad(err, cp, "must give the key \"%s\" of the %s to %s", e->key, e->name,
                   r->action);
    }
    if ((rc = parse_opt_int(spec, p, "max_attempts", 1, 100, &r->max_attempts, err)) ||
        (rc = parse_opt_int(spec, p, "backoff_ms", 1, 3600000, &r->backoff_ms, err)) ||
        (rc = parse_opt_int(spec, p, "max_backoff_ms", 1, 86400000, &r->max_backoff_ms, err)))
        return rc;
    if (r->max_backoff_ms < r->backoff_ms) {
        child(cp, p, "max_backoff_ms");
        return bad(err, cp, "must be at least backoff_ms (%lld)", (long long)r->backoff_ms);
    }
    return CHR_OK;
}

static int parse_reactions(const json_t *v, definition_t *def, chr_err_t *err)
{
    if (!v) return CHR_OK;
    if (!json_is_object(v)) return bad(err, "reactions", "must be an object of name -> reaction");
    size_t n = json_object_size(v);
    if (n == 0) return CHR_OK;
    def->reactions = calloc(n, sizeof *def->reactions);
    if (!def->reactions) return oom(err);
    const char *key;
    json_t *spec;
    json_object_foreach((json_t *)v, key, spec)
    {
        char p[PATH_MAX_LEN];
        child(p, "reactions", key);
        def->n_reactions++; /* freed by definition_free even when half parsed */
        int rc = parse_reaction(def, key, spec, p, &def->reactions[def->n_reactions - 1], err);
        if (rc) return rc;
    }
    return CHR_OK;
}

int definition_load(const char *json_text, size_t len, definition_t **out, chr_err_t *err)
{
    assert(out);
    *out = NULL;
    json_error_t je;
    json_t *root = json_loadb(json_text, len, JSON_REJECT_DUPLICATES, &je);
    if (!root)
        return chr_fail(err, CHR_EINVAL, "", "%s at line %d column %d", je.text, je.line,
                        je.column);
    int rc;
    definition_t *def = NULL;
    if (!json_is_object(root)) {
        rc = chr_fail(err, CHR_EINVAL, "", "the app definition must be a JSON object");
        goto done;
    }
    if ((rc = check_keys(root, "", top_keys, "key", "", err))) goto done;
    def = calloc(1, sizeof *def);
    if (!def) {
        rc = oom(err);
        goto done;
    }
    if ((rc = parse_app(json_object_get(root, "app"), def, err))) goto done;
    if ((rc = parse_entities(json_object_get(root, "entities"), def, err))) goto done;
    if ((rc = parse_routes(json_object_get(root, "routes"), def, err))) goto done;
    if ((rc = parse_schedules(json_object_get(root, "schedules"), def, err))) goto done;
    if ((rc = parse_webhooks(json_object_get(root, "webhooks"), def, err))) goto done;
    if ((rc = parse_audit_log(json_object_get(root, "audit_log"), def, err))) goto done;
    if ((rc = parse_auth(json_object_get(root, "auth"), def, err))) goto done;
    if ((rc = parse_feeds(json_object_get(root, "feeds"), def, err))) goto done;
    if ((rc = parse_reactions(json_object_get(root, "reactions"), def, err))) goto done;
done:
    json_decref(root);
    if (rc) {
        definition_free(def);
        return rc;
    }
    *out = def;
    return CHR_OK;
}

int definition_load_file(const char *path, definition_t **out, chr_err_t *err)
{
    assert(out);
    *out = NULL;
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return chr_fail(err, CHR_EINVAL, "", "cannot open app definition %s: %s", path,
                        strerror(errno));
    char *buf = NULL;
    size_t len = 0, cap = 0;
    int rc = CHR_OK;
    for (;;) {
        if (len == cap) {
            if (cap >= DEFINITION_MAX_BYTES) {
                rc = chr_fail(err, CHR_EINVAL, "", "app definition %s is larger than %u bytes",
                              path, DEFINITION_MAX_BYTES);
                break;
            }
            cap = cap ? cap * 2 : 16384;
            char *nb = realloc(buf, cap);
            if (!nb) {
                rc = oom(err);
                break;
            }
            buf = nb;
        }
        size_t got = fread(buf + len, 1, cap - len, fp);
        len += got;
        if (got == 0) {
            if (ferror(fp))
                rc = chr_fail(err, CHR_EINVAL, "", "cannot read app definition %s: %s", path,
                              strerror(errno));
            break;
        }
    }
    fclose(fp);
    if (rc == CHR_OK) rc = definition_load(buf, len, out, err);
    free(buf);
    return rc;
}

/* ---- layout hash ----------------------------------------------------------- */

/* Feeds "<tag> <len>:<text>\n" into the hash, so no two texts collide. */
static void hash_str(crypto_hash_sha256_state *st, const char *tag, const char *s)
{
    char head[64];
    size_t n = s ? strlen(s) : 0;
    int hn = snprintf(head, sizeof head, "%s %zu:", tag, n);
    crypto_hash_sha256_update(st, (const unsigned char *)head, (unsigned long long)hn);
    if (n) crypto_hash_sha256_update(st, (const unsigned char *)s, n);
    crypto_hash_sha256_update(st, (const unsigned char *)"\n", 1);
}

void definition_layout_hash(const definition_t *def, char out[65])
{
    /* what a projection table is made of: its name, key column, and per
     * field (in column order) name, type, uniqueness, ref target, enum
     * values. Entities in name order: their order in the file does not
     * change any table. "layout-1" is bumped when the table format changes. */
    int sodium =
        sodium_init(); /* idempotent; fails only without entropy, which sha256 does not need */
    (void)sodium;
    crypto_hash_sha256_state st;
    crypto_hash_sha256_init(&st);
    hash_str(&st, "chronicle", "layout-1");
    /* entities in name order, picked one by one (no allocation: n is small) */
    const char *prev = NULL;
    for (size_t i = 0; i < def->n_entities; i++) {
        const entity_def_t *e = NULL;
        for (size_t j = 0; j < def->n_entities; j++) {
            const entity_def_t *c = &def->entities[j];
            if ((!prev || strcmp(c->name, prev) > 0) && (!e || strcmp(c->name, e->name) < 0)) e = c;
        }
        assert(e); /* names are unique */
        prev = e->name;
        hash_str(&st, "entity", e->name);
        hash_str(&st, "key", e->key);
        for (size_t f = 0; f < e->n_fields; f++) {
            const field_def_t *fd = &e->fields[f];
            hash_str(&st, "field", fd->name);
            hash_str(&st, "type", field_type_name(fd->type));
            hash_str(&st, "unique", fd->unique ? "1" : "0");
            if (fd->type == FT_REF) hash_str(&st, "to", fd->ref_to);
            for (size_t v = 0; v < fd->n_values; v++)
                hash_str(&st, "value", fd->values[v]);
        }
        if (e->tenant_scoped) hash_str(&st, "tenant_scoped", "1");
        for (size_t u = 0; u < e->n_unique; u++) {
            hash_str(&st, "unique_group", e->name);
            for (size_t f = 0; f < e->unique[u].n; f++)
                hash_str(&st, "member", e->unique[u].fields[f]);
        }
        hash_str(&st, "end", e->name);
    }
    unsigned char digest[crypto_hash_sha256_BYTES];
    crypto_hash_sha256_final(&st, digest);
    sodium_bin2hex(out, 65, digest, sizeof digest);
}
