/*
 * evolve.c - entity_evolve: folds the events of one entity stream into its
 * state, and the public JSON view of that state; see decide.h. Pure. Not
 * here: deciding commands (decide.c), reading streams (the engine).
 */
#include "core/decide.h"

#include <string.h>

#include "core/timefmt.h"

void entity_state_init(entity_state_t *s)
{
    memset(s, 0, sizeof *s);
}

void entity_state_free(entity_state_t *s)
{
    if (!s) return;
    json_decref(s->data);
    entity_state_init(s);
}

static bool same(const char *a, const char *b)
{
    return a && b && strcmp(a, b) == 0;
}

/* True when type is an event that carries field values of e: its create or
 * update event or the event of one of its commands. */
static bool carries_fields(const entity_def_t *e, const char *type)
{
    if (same(type, e->ev_create) || same(type, e->ev_update)) return true;
    for (size_t i = 0; i < e->n_commands; i++)
        if (same(type, e->commands[i].event)) return true;
    return false;
}

/* Merges the key and field members of event_data into a copy of base (or a
 * new object when base is NULL). New reference, NULL on allocation
 * failure. */
static json_t *merged(const entity_def_t *e, const json_t *base, const json_t *event_data)
{
    json_t *out = base ? json_copy((json_t *)base) : json_object();
    if (!out) return NULL;
    const char *name;
    json_t *v;
    json_object_foreach((json_t *)event_data, name, v)
    {
        if (name[0] == '_') continue; /* _previous, _input: the record, not the state */
        /* tenant_id: set by the engine in the create event of a
         * tenant-scoped entity, never by a client (decide refuses it) */
        bool is_key = strcmp(name, e->key) == 0 ||
                      (e->tenant_scoped && strcmp(name, "tenant_id") == 0);
        if (!is_key && !entity_field(e, name)) continue;
        if (json_is_null(v)) {
            if (!is_key) json_object_del(out, name);
            continue;
        }
        if (json_object_set_new(out, name, json_deep_copy(v)) != 0) {
            json_decref(out);
            return NULL;
        }
    }
    return out;
}

int entity_evolve(const entity_def_t *e, entity_state_t *s, const char *event_type,
                  const json_t *event_data, int64_t version, int64_t timestamp_us)
{
    if (same(event_type, e->ev_delete)) {
        if (s->data) s->deleted = true;
    } else if (carries_fields(e, event_type) && json_is_object(event_data)) {
        bool fresh = !s->data || s->deleted;
        json_t *data = merged(e, fresh ? NULL : s->data, event_data);
        if (!data) return CHR_ENOMEM;
        json_decref(s->data);
        s->data = data;
        if (fresh) {
            s->deleted = false;
            s->created_at = timestamp_us;
        }
    }
    s->version = version;
    s->updated_at = timestamp_us;
    return CHR_OK;
}

/* Sets name in o to a deep copy of v, or to null when v is NULL. */
static int set_copy(json_t *o, const char *name, const json_t *v)
{
    return json_object_set_new(o, name, v ? json_deep_copy(v) : json_null());
}

static int set_time(json_t *o, const char *name, int64_t us)
{
    char buf[TIMEFMT_LEN + 1];
    time_format_us(us, buf);
    return json_object_set_new(o, name, json_string(buf));
}

json_t *entity_state_to_json(const entity_def_t *e, const entity_state_t *s)
{
    if (!s || !s->data) return NULL;
    json_t *o = json_object();
    if (!o) return NULL;
    int rc = set_copy(o, e->key, json_object_get(s->data, e->key));
    if (!rc && e->tenant_scoped) rc = set_copy(o, "tenant_id", json_object_get(s->data, "tenant_id"));
    for (size_t i = 0; !rc && i < e->n_fields; i++) {
        const field_def_t *f = &e->fields[i];
        if (f->is_private) continue;
        rc = set_copy(o, f->name, json_object_get(s->data, f->name));
    }
    if (!rc) rc = json_object_set_new(o, "version", json_integer(s->version));
    if (!rc) rc = set_time(o, "created_at", s->created_at);
    if (!rc) rc = set_time(o, "updated_at", s->updated_at);
    if (rc) {
        json_decref(o);
        return NULL;
    }
    return o;
}
