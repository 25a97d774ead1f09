/*
 * decide.c - entity_decide: turns a create, update, upsert, delete or custom
 * command plus the entity's folded state into one event or a precise error
 * (422 with one message per field, 404, 409); see decide.h. Pure: no store,
 * no clock. Not here: folding events (evolve.c), refs, uniqueness, access.
 */
#include "core/decide.h"

#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/field.h"
#include "core/timefmt.h"

#define PREVIOUS_MEMBER "_previous"
#define INPUT_MEMBER "_input"
#define NOW_REF "$now"
#define INPUT_REF "$input."

/* ---- decision helpers --------------------------------------------------- */

/* Copies src into dst (size bytes) and, when it does not fit, cuts it at a
 * UTF-8 character boundary so the result stays valid text. */
static void copy_text(char *dst, size_t size, const char *src)
{
    size_t len = strlen(src);
    if (len >= size) {
        len = size - 1;
        while (len > 0 && ((unsigned char)src[len] & 0xc0) == 0x80)
            len--;
    }
    memcpy(dst, src, len);
    dst[len] = '\0';
}

/* Sets the decision's code and detail (printf-style) and returns code. */
static int decision_fail(decision_t *d, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int decision_fail(decision_t *d, int code, const char *fmt, ...)
{
    char buf[sizeof d->detail * 2];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    copy_text(d->detail, sizeof d->detail, buf);
    d->code = code;
    return code;
}

/* Ends a decision that ran out of memory: no errors, no event. */
static int decision_oom(decision_t *d)
{
    free(d->errors);
    d->errors = NULL;
    d->n_errors = 0;
    return decision_fail(d, CHR_ENOMEM, "out of memory while deciding the command");
}

/* Appends one field error (message printf-style). Returns CHR_OK or
 * CHR_ENOMEM. */
static int add_error(decision_t *d, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int add_error(decision_t *d, const char *field, const char *fmt, ...)
{
    field_error_t *grown = realloc(d->errors, (d->n_errors + 1) * sizeof *grown);
    if (!grown) return CHR_ENOMEM;
    d->errors = grown;
    field_error_t *fe = &d->errors[d->n_errors++];
    copy_text(fe->field, sizeof fe->field, field);
    char buf[sizeof fe->message * 2];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    copy_text(fe->message, sizeof fe->message, buf);
    return CHR_OK;
}

/* Ends a validation that found errors: CHR_EINVAL with the count in detail. */
static int fail_validation(decision_t *d)
{
    return decision_fail(d, CHR_EINVAL, "%zu field%s failed validation", d->n_errors,
                         d->n_errors == 1 ? "" : "s");
}

/* ---- values ------------------------------------------------------------- */

static bool is_system_field(const char *name)
{
    return strcmp(name, "version") == 0 || strcmp(name, "created_at") == 0 ||
           strcmp(name, "updated_at") == 0 || strcmp(name, "tenant_id") == 0;
}

static bool state_exists(const entity_state_t *s)
{
    return s && s->data && !s->deleted;
}

static bool state_deleted(const entity_state_t *s)
{
    return s && s->data && s->deleted;
}

/* The current value of a field, NULL when absent or JSON null. Borrowed. */
static const json_t *current_value(const entity_state_t *s, const char *name)
{
    const json_t *v = s && s->data ? json_object_get(s->data, name) : NULL;
    return json_is_null(v) ? NULL : v;
}

/* Equality of stored values: absent and null are the same, numbers compare
 * by value (1 == 1.0), everything else as jansson's json_equal. */
static bool values_equal(const json_t *a, const json_t *b)
{
    bool a_none = !a || json_is_null(a), b_none = !b || json_is_null(b);
    if (a_none || b_none) return a_none && b_none;
    if (json_is_number(a) && json_is_number(b)) {
        if (json_is_integer(a) && json_is_integer(b))
            return json_integer_value(a) == json_integer_value(b);
        double x = json_number_value(a), y = json_number_value(b);
        return !(x < y) && !(x > y);
    }
    return json_equal(a, b) != 0;
}

/* A deep copy of v, or JSON null when v is NULL. New reference; NULL only
 * on allocation failure. */
static json_t *copy_or_null(const json_t *v)
{
    return v ? json_deep_copy(v) : json_null();
}

/* Checks the syntax of a new key: key_valid and the key field's own rules
 * (max_length). Adds at most one error. */
static int check_key_syntax(decision_t *d, const entity_def_t *e, const char *key)
{
    if (!key_valid(key))
        return add_error(d, e->key,
                         "must be a key: 1-255 characters, no '/' or control characters");
    json_t *k = json_string(key);
    if (!k) return CHR_ENOMEM;
    char msg[sizeof d->errors[0].message];
    bool ok = field_check_value(&e->key_field, k, msg, sizeof msg);
    json_decref(k);
    return ok ? CHR_OK : add_error(d, e->key, "%s", msg);
}

/* Checks a body member named like the key: it must be a string equal to the
 * command's key (and, for a new entity, a valid key). JSON null counts as
 * absent. Adds at most one error. */
static int check_key_member(decision_t *d, const entity_def_t *e, const json_t *v,
                            const entity_cmd_t *cmd, bool is_new)
{
    if (json_is_null(v)) return CHR_OK;
    if (!json_is_string(v)) return add_error(d, e->key, "must be a string");
    if (strcmp(json_string_value(v), cmd->key) != 0)
        return add_error(d, e->key, "must equal the key \"%s\"", cmd->key);
    return is_new ? check_key_syntax(d, e, cmd->key) : CHR_OK;
}

/* Checks one value against a field and stores its normalised form under
 * name in vals. Adds an error instead when invalid. */
static int accept_value(decision_t *d, json_t *vals, const field_def_t *f, const char *name,
                        const json_t *v)
{
    char msg[sizeof d->errors[0].message];
    if (!field_check_value(f, v, msg, sizeof msg)) return add_error(d, name, "%s", msg);
    json_t *norm = field_normalize(f, v);
    if (!norm || json_object_set_new(vals, f->name, norm) != 0) return CHR_ENOMEM;
    return CHR_OK;
}

/* Fills in defaults and reports missing required fields for a set of field
 * definitions, in definition order. vals holds the accepted values; body is
 * consulted so a field whose value was rejected is not reported twice. */
static int complete_fields(decision_t *d, json_t *vals, const field_def_t *fields, size_t n,
                           const json_t *body)
{
    for (size_t i = 0; i < n; i++) {
        const field_def_t *f = &fields[i];
        if (json_object_get(vals, f->name)) continue;
        const json_t *given = json_object_get(body, f->name);
        if (given && !json_is_null(given)) continue; /* rejected above */
        if (f->default_value) {
            json_t *norm = field_normalize(f, f->default_value);
            if (!norm || json_object_set_new(vals, f->name, norm) != 0) return CHR_ENOMEM;
        } else if (f->required) {
            int rc = add_error(d, f->name, "is required");
            if (rc) return rc;
        }
    }
    return CHR_OK;
}

/* Starts event data with the key member. New reference, NULL on OOM. */
static json_t *event_with_key(const entity_def_t *e, const char *key)
{
    json_t *ev = json_object();
    if (ev && json_object_set_new(ev, e->key, json_string(key)) != 0) {
        json_decref(ev);
        return NULL;
    }
    return ev;
}

/* Moves every member of src into dst (dst keeps its order, src's appended). */
static int append_members(json_t *dst, json_t *src)
{
    const char *name;
    json_t *v;
    json_object_foreach(src, name, v)
    {
        if (json_object_set(dst, name, v) != 0) return CHR_ENOMEM;
    }
    return CHR_OK;
}

/* Turns changes + previous into the event data of an update-like event:
 * {key, changes..., "_previous": previous, "_input": extra}. Takes
 * ownership of extra (may be NULL). */
static int finish_change_event(decision_t *d, const entity_def_t *e, const char *key,
                               const char *type, json_t *changes, json_t *previous, json_t *extra)
{
    json_t *ev = event_with_key(e, key);
    bool failed = !ev || append_members(ev, changes) != 0 ||
                  json_object_set(ev, PREVIOUS_MEMBER, previous) != 0;
    if (!failed && extra)
        failed = json_object_set_new(ev, INPUT_MEMBER, extra) != 0;
    else
        json_decref(extra);
    if (failed) {
        json_decref(ev);
        return decision_oom(d);
    }
    d->code = CHR_OK;
    d->event_type = type;
    d->event_data = ev;
    return CHR_OK;
}

/* ---- create -------------------------------------------------------------- */

static int decide_create(const entity_def_t *e, const entity_state_t *s, const entity_cmd_t *cmd,
                         decision_t *d)
{
    if (state_exists(s))
        return decision_fail(d, CHR_ECONFLICT, "%s %s already exists", e->name, cmd->key);
    if (state_deleted(s) && !e->recreate_after_delete)
        return decision_fail(d, CHR_ECONFLICT, "%s %s was deleted and cannot be recreated", e->name,
                             cmd->key);

    int rc = CHR_OK;
    json_t *vals = json_object();
    if (!vals) return decision_oom(d);

    /* A key the body does not give is checked first: it came from the URL,
     * or was generated (an error when the client must give it). */
    const json_t *key_member = json_object_get(cmd->body, e->key);
    if (!key_member || json_is_null(key_member)) {
        if (!cmd->key_generated)
            rc = check_key_syntax(d, e, cmd->key);
        else if (e->key_field.required)
            rc = add_error(d, e->key, "is required");
    }

    const char *name;
    json_t *v;
    json_object_foreach((json_t *)cmd->body, name, v)
    {
        if (rc) break;
        const field_def_t *f;
        if (strcmp(name, e->key) == 0)
            rc = check_key_member(d, e, v, cmd, true);
        else if ((f = entity_field(e, name)) != NULL)
            rc = json_is_null(v) ? CHR_OK : accept_value(d, vals, f, name, v);
        else if (is_system_field(name))
            rc = add_error(d, name, "is read-only");
        else
            rc = add_error(d, name, "is not a field of %s", e->name);
    }
    if (!rc) rc = complete_fields(d, vals, e->fields, e->n_fields, cmd->body);
    if (rc) {
        json_decref(vals);
        return decision_oom(d);
    }
    if (d->n_errors) {
        json_decref(vals);
        return fail_validation(d);
    }

    /* The event: the key, then the fields in definition order. */
    json_t *ev = event_with_key(e, cmd->key);
    for (size_t i = 0; ev && i < e->n_fields; i++) {
        json_t *fv = json_object_get(vals, e->fields[i].name);
        if (fv && json_object_set(ev, e->fields[i].name, fv) != 0) {
            json_decref(ev);
            ev = NULL;
        }
    }
    json_decref(vals);
    if (!ev) return decision_oom(d);
    d->code = CHR_OK;
    d->event_type = e->ev_create;
    d->event_data = ev;
    return CHR_OK;
}

/* ---- update -------------------------------------------------------------- */

/* Records one change: changes[name] = value (null to clear) and
 * previous[name] = the old value (null when none). Takes value. */
static int record_change(json_t *changes, json_t *previous, const char *name, json_t *value,
                         const json_t *old)
{
    if (!value || json_object_set_new(changes, name, value) != 0) return CHR_ENOMEM;
    if (json_object_set_new(previous, name, copy_or_null(old)) != 0) return CHR_ENOMEM;
    return CHR_OK;
}

/* Applies one body member to an existing entity under PATCH rules. */
static int update_member(decision_t *d, const field_def_t *f, const char *name, const json_t *v,
                         const json_t *cur, json_t *changes, json_t *previous)
{
    if (json_is_null(v)) {
        if (f->required) return add_error(d, name, "is required");
        if (!cur) return CHR_OK;
        if (f->immutable) return add_error(d, name, "is immutable");
        return record_change(changes, previous, name, json_null(), cur);
    }
    char msg[sizeof d->errors[0].message];
    if (!field_check_value(f, v, msg, sizeof msg)) return add_error(d, name, "%s", msg);
    json_t *norm = field_normalize(f, v);
    if (!norm) return CHR_ENOMEM;
    if (values_equal(norm, cur)) {
        json_decref(norm);
        return CHR_OK;
    }
    if (f->immutable) {
        json_decref(norm);
        return add_error(d, name, "is immutable");
    }
    return record_change(changes, previous, name, norm, cur);
}

static int decide_update(const entity_def_t *e, const entity_state_t *s, const entity_cmd_t *cmd,
                         decision_t *d)
{
    json_t *changes = json_object(), *previous = json_object();
    int rc = changes && previous ? CHR_OK : CHR_ENOMEM;

    const char *name;
    json_t *v;
    json_object_foreach((json_t *)cmd->body, name, v)
    {
        if (rc) break;
        const field_def_t *f;
        if (strcmp(name, e->key) == 0)
            rc = check_key_member(d, e, v, cmd, false);
        else if ((f = entity_field(e, name)) != NULL)
            rc = update_member(d, f, name, v, current_value(s, name), changes, previous);
        else if (is_system_field(name))
            rc = add_error(d, name, "is read-only");
        else
            rc = add_error(d, name, "is not a field of %s", e->name);
    }
    if (rc) {
        rc = decision_oom(d);
    } else if (d->n_errors) {
        rc = fail_validation(d);
    } else if (json_object_size(changes) == 0) {
        d->code = CHR_OK; /* nothing changes: no event */
    } else {
        rc = finish_change_event(d, e, cmd->key, e->ev_update, changes, previous, NULL);
    }
    json_decref(changes);
    json_decref(previous);
    return rc;
}

/* PUT on an existing entity replaces it: the body is the whole new state.
 * A field the body leaves out takes its default, or null (so a required
 * field must be given); an immutable field left out keeps its value, since
 * it could not change anyway. The result is the update that turns the
 * current state into that one, under the same rules as PATCH. */
static int decide_replace(const entity_def_t *e, const entity_state_t *s, const entity_cmd_t *cmd,
                          decision_t *d)
{
    json_t *full = cmd->body ? json_copy((json_t *)cmd->body) : json_object();
    if (!full) return decision_oom(d);
    for (size_t i = 0; i < e->n_fields; i++) {
        const field_def_t *f = &e->fields[i];
        if (json_object_get(full, f->name) || f->immutable) continue;
        json_t *v = f->default_value ? json_deep_copy(f->default_value) : json_null();
        if (!v || json_object_set_new(full, f->name, v) != 0) {
            json_decref(full);
            return decision_oom(d);
        }
    }
    entity_cmd_t replaced = *cmd;
    replaced.body = full;
    int rc = decide_update(e, s, &replaced, d);
    json_decref(full);
    return rc;
}

/* ---- delete -------------------------------------------------------------- */

static int decide_delete(const entity_def_t *e, const entity_state_t *s, const entity_cmd_t *cmd,
                         decision_t *d)
{
    if (!state_exists(s))
        return decision_fail(d, CHR_ENOTFOUND, "%s %s does not exist", e->name, cmd->key);
    json_t *ev = event_with_key(e, cmd->key);
    if (!ev || json_object_set_new(ev, PREVIOUS_MEMBER, json_deep_copy(s->data)) != 0) {
        json_decref(ev);
        return decision_oom(d);
    }
    d->code = CHR_OK;
    d->event_type = e->ev_delete;
    d->event_data = ev;
    return CHR_OK;
}

/* ---- custom commands ----------------------------------------------------- */

static const field_def_t *command_input(const command_def_t *c, const char *name)
{
    for (size_t i = 0; i < c->n_input; i++)
        if (strcmp(c->input[i].name, name) == 0) return &c->input[i];
    return NULL;
}

/* Validates the body against the command's inputs into *input (new
 * reference, defaults applied, values normalised). */
static int validate_input(decision_t *d, const entity_def_t *e, const command_def_t *c,
                          const entity_cmd_t *cmd, json_t **input)
{
    json_t *in = json_object();
    if (!in) return CHR_ENOMEM;
    int rc = CHR_OK;
    const char *name;
    json_t *v;
    json_object_foreach((json_t *)cmd->body, name, v)
    {
        if (rc) break;
        const field_def_t *f = command_input(c, name);
        if (f)
            rc = json_is_null(v) ? CHR_OK : accept_value(d, in, f, name, v);
        else if (strcmp(name, e->key) == 0)
            rc = check_key_member(d, e, v, cmd, false);
        else
            rc = add_error(d, name, "is not an input of %s", c->name);
    }
    if (!rc) rc = complete_fields(d, in, c->input, c->n_input, cmd->body);
    if (rc) {
        json_decref(in);
        return rc;
    }
    *input = in;
    return CHR_OK;
}

/* Renders a value for a message as compact JSON ("null" when absent).
 * Returns false on allocation failure. */
static bool render_value(const json_t *v, char *out, size_t size)
{
    char *text = v ? json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    if (v && !text) return false;
    copy_text(out, size, text ? text : "null");
    free(text);
    return true;
}

/* Checks the command's "when" preconditions against the state. Returns
 * CHR_OK or fills d with CHR_ECONFLICT for the first failing field. */
static int check_when(decision_t *d, const entity_def_t *e, const command_def_t *c,
                      const entity_state_t *s)
{
    const char *name;
    json_t *want;
    json_object_foreach(c->when, name, want)
    {
        const json_t *cur = current_value(s, name);
        if (values_equal(cur, want)) continue;
        const field_def_t *f = entity_field(e, name);
        if (f && f->is_private)
            return decision_fail(d, CHR_ECONFLICT,
                                 "precondition failed: %s does not have the expected value", name);
        char cur_text[128], want_text[128];
        if (!render_value(cur, cur_text, sizeof cur_text) ||
            !render_value(want, want_text, sizeof want_text))
            return decision_oom(d);
        return decision_fail(d, CHR_ECONFLICT, "precondition failed: %s is %s, expected %s", name,
                             cur_text, want_text);
    }
    return CHR_OK;
}

/* Resolves one "set" entry: a constant, "$input.NAME" or "$now". *value is
 * a new reference, or NULL when the input is absent (the field is not set).
 * *source names what the client controls, for error messages. */
static int resolve_set(const json_t *spec, const json_t *input, int64_t now_us, json_t **value,
                       const char **source)
{
    *value = NULL;
    const char *text = json_string_value(spec);
    if (text && strncmp(text, INPUT_REF, strlen(INPUT_REF)) == 0) {
        *source = text + strlen(INPUT_REF);
        json_t *v = json_object_get(input, *source);
        if (v) *value = json_incref(v);
        return CHR_OK;
    }
    if (text && strcmp(text, NOW_REF) == 0) {
        char buf[TIMEFMT_LEN + 1];
        time_format_us(now_us, buf);
        *value = json_string(buf);
    } else {
        *value = json_deep_copy(spec);
    }
    return *value ? CHR_OK : CHR_ENOMEM;
}

/* Applies the command's "set" entries: every resolved field goes into
 * changes (whether or not it differs: a command is an intent), its old value
 * into previous. */
static int apply_set(decision_t *d, const entity_def_t *e, const command_def_t *c,
                     const entity_state_t *s, const entity_cmd_t *cmd, const json_t *input,
                     json_t *changes, json_t *previous)
{
    const char *name;
    json_t *spec;
    json_object_foreach(c->set, name, spec)
    {
        const field_def_t *f = entity_field(e, name);
        assert(f); /* the loader only accepts fields of e in "set" */
        if (!f) continue;
        const char *source = name;
        json_t *v;
        int rc = resolve_set(spec, input, cmd->now_us, &v, &source);
        if (rc) return rc;
        if (!v) continue;
        const json_t *cur = current_value(s, name);
        char msg[sizeof d->errors[0].message];
        if (json_is_null(v)) {
            json_decref(v);
            if (f->required) {
                rc = add_error(d, source, "is required");
            } else {
                rc = record_change(changes, previous, name, json_null(), cur);
            }
        } else if (!field_check_value(f, v, msg, sizeof msg)) {
            json_decref(v);
            rc = add_error(d, source, "%s", msg);
        } else {
            json_t *norm = field_normalize(f, v);
            json_decref(v);
            if (!norm) return CHR_ENOMEM;
            if (f->immutable && cur && !values_equal(norm, cur)) {
                json_decref(norm);
                rc = add_error(d, name, "is immutable");
            } else {
                rc = record_change(changes, previous, name, norm, cur);
            }
        }
        if (rc) return rc;
    }
    return CHR_OK;
}

static int decide_custom(const entity_def_t *e, const entity_state_t *s, const entity_cmd_t *cmd,
                         decision_t *d)
{
    const command_def_t *c = cmd->custom;
    if (!c) return decision_fail(d, CHR_EINVAL, "no command was given for %s", e->name);
    if (!state_exists(s))
        return decision_fail(d, CHR_ENOTFOUND, "%s %s does not exist", e->name, cmd->key);

    json_t *input = NULL;
    int rc = validate_input(d, e, c, cmd, &input);
    if (rc) return decision_oom(d);
    if (d->n_errors) {
        json_decref(input);
        return fail_validation(d);
    }
    if (check_when(d, e, c, s) != CHR_OK) {
        json_decref(input);
        return d->code;
    }

    json_t *changes = json_object(), *previous = json_object();
    rc = changes && previous ? apply_set(d, e, c, s, cmd, input, changes, previous) : CHR_ENOMEM;
    if (rc) {
        rc = decision_oom(d);
    } else if (d->n_errors) {
        rc = fail_validation(d);
    } else {
        rc = finish_change_event(d, e, cmd->key, c->event, changes, previous, input);
        input = NULL; /* taken */
    }
    json_decref(input);
    json_decref(changes);
    json_decref(previous);
    return rc;
}

/* ---- entry --------------------------------------------------------------- */

int entity_decide(const entity_def_t *e, const entity_state_t *state, const entity_cmd_t *cmd,
                  decision_t *out)
{
    assert(e && cmd && out);
    memset(out, 0, sizeof *out);
    if (!cmd->key) return decision_fail(out, CHR_EINVAL, "no key was given for %s", e->name);
    if (cmd->body && !json_is_object(cmd->body))
        return decision_fail(out, CHR_EINVAL, "the request body must be a JSON object");

    switch (cmd->kind) {
    case CMD_CREATE:
        return decide_create(e, state, cmd, out);
    case CMD_UPDATE:
        if (state_deleted(state) && !e->recreate_after_delete)
            return decision_fail(out, CHR_ECONFLICT, "%s %s was deleted", e->name, cmd->key);
        if (!state_exists(state))
            return decision_fail(out, CHR_ENOTFOUND, "%s %s does not exist", e->name, cmd->key);
        return decide_update(e, state, cmd, out);
    case CMD_UPSERT:
        if (state_exists(state)) return decide_replace(e, state, cmd, out);
        return decide_create(e, state, cmd, out);
    case CMD_DELETE:
        return decide_delete(e, state, cmd, out);
    case CMD_CUSTOM:
        return decide_custom(e, state, cmd, out);
    }
    return decision_fail(out, CHR_EINVAL, "unknown command kind %d", (int)cmd->kind);
}

void decision_free(decision_t *d)
{
    if (!d) return;
    free(d->errors);
    json_decref(d->event_data);
    memset(d, 0, sizeof *d);
}
