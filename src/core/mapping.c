/* mapping.c - a reaction's field mapping; see mapping.h. */
#include "core/mapping.h"

#include <string.h>

/* The root a path starts from and where its member names begin. */
typedef enum { ROOT_NONE, ROOT_ID, ROOT_TYPE, ROOT_STREAM, ROOT_KEY, ROOT_DATA, ROOT_META } root_t;

static root_t path_root(const char *s, const char **rest)
{
    static const struct {
        const char *name;
        root_t root;
        bool members;
    } roots[] = {{"id", ROOT_ID, false},     {"type", ROOT_TYPE, false},
                 {"stream", ROOT_STREAM, false}, {"key", ROOT_KEY, false},
                 {"data", ROOT_DATA, true},  {"metadata", ROOT_META, true}};
    if (strncmp(s, "$.", 2) != 0) return ROOT_NONE;
    s += 2;
    for (size_t i = 0; i < sizeof roots / sizeof roots[0]; i++) {
        size_t n = strlen(roots[i].name);
        if (strncmp(s, roots[i].name, n) != 0) continue;
        if (s[n] == '\0' || (roots[i].members && s[n] == '.')) {
            *rest = s + n;
            return roots[i].root;
        }
    }
    return ROOT_NONE;
}

bool mapping_value_valid(const char *s)
{
    if (s[0] != '$' || s[1] == '$') return true;
    const char *rest;
    if (path_root(s, &rest) == ROOT_NONE) return false;
    /* members: ".name" repeated, names not empty */
    for (const char *p = rest; *p; p++)
        if (*p == '.' && (p[1] == '.' || p[1] == '\0')) return false;
    return true;
}

/* The value at members ".a.b" of root (borrowed), or NULL. */
static json_t *descend(json_t *v, const char *rest)
{
    while (v && *rest == '.') {
        const char *name = rest + 1, *dot = strchr(name, '.');
        size_t n = dot ? (size_t)(dot - name) : strlen(name);
        v = json_is_object(v) ? json_object_getn(v, name, n) : NULL;
        rest = name + n;
    }
    return v;
}

/* The value of path s for ev: a new reference, or NULL when it leads
 * nowhere. *rc gets CHR_EINVAL for unparsable data. */
static json_t *path_value(const char *s, const event_t *ev, json_t **data, json_t **meta, int *rc)
{
    const char *rest = "";
    switch (path_root(s, &rest)) {
    case ROOT_ID:
        return json_string(ev->id);
    case ROOT_TYPE:
        return ev->type ? json_string(ev->type) : NULL;
    case ROOT_STREAM:
        return ev->stream ? json_string(ev->stream) : NULL;
    case ROOT_KEY: {
        const char *dash = ev->stream ? strchr(ev->stream, '-') : NULL;
        return dash && dash[1] ? json_string(dash + 1) : NULL;
    }
    case ROOT_DATA:
        if (!*data && !(*data = json_loads(ev->data ? ev->data : "{}", JSON_DECODE_ANY, NULL)))
            *rc = CHR_EINVAL;
        return json_incref(descend(*data, rest));
    case ROOT_META:
        if (!*meta && !(*meta = json_loads(ev->metadata ? ev->metadata : "{}", 0, NULL)))
            *rc = CHR_EINVAL;
        return json_incref(descend(*meta, rest));
    case ROOT_NONE:
        break;
    }
    return NULL;
}

int mapping_apply(const json_t *tmpl, const event_t *ev, json_t **out, chr_err_t *err)
{
    *out = NULL;
    json_t *body = json_object(), *data = NULL, *meta = NULL;
    int rc = body ? CHR_OK : CHR_ENOMEM;
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)tmpl, k, v)
    {
        if (rc) break;
        const char *s = json_string_value(v);
        json_t *val;
        if (s && s[0] == '$' && s[1] == '$')
            val = json_string(s + 1);
        else if (s && s[0] == '$')
            val = path_value(s, ev, &data, &meta, &rc);
        else
            val = json_deep_copy(v);
        if (val && json_object_set_new(body, k, val) != 0) rc = CHR_ENOMEM;
    }
    json_decref(data);
    json_decref(meta);
    if (rc) {
        json_decref(body);
        return rc == CHR_EINVAL ? chr_fail(err, rc, "", "event %s: data or metadata is not JSON", ev->id)
                                : chr_fail(err, rc, "", "out of memory");
    }
    *out = body;
    return CHR_OK;
}
