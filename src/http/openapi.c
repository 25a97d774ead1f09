/*
 * openapi.c - the OpenAPI 3.1 document of GET /openapi.json; see openapi.h.
 *
 * Everything in the document comes from data the server runs on:
 *   paths                 one operation per route: the core routes (routes.c's
 *                         table, each described by the matching row of
 *                         core_docs below; a core route without a row still
 *                         appears, with a generic answer), /openapi.json, and
 *                         every route of the app (handlers_entities.h), the
 *                         operation derived from its action and options;
 *   components.schemas    per entity E: "E" (what responses carry), "E.create",
 *                         "E.update" and "E.<command>" (request bodies), from
 *                         the definition's fields; the core shapes ("Event",
 *                         "Problem", "AppendRequest", ...);
 *   components.responses  one problem+json response per error status;
 *   components.headers / .parameters / .securitySchemes: shared pieces.
 * JSON Schema is 2020-12 (OpenAPI 3.1): "may be null" is a type array.
 *
 * Memory: the jansson tree is built, serialised once and dropped; the
 * http_openapi_t keeps only the text. Allocation failures set gen_t.oom
 * and are reported once at the end, so the builders stay straight-line
 * (every helper accepts NULL arguments left behind by a failed allocation).
 */
#include "http/openapi.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/field.h"
#include "core/query.h"
#include "http/buf.h"
#include "http/handlers.h"
#include "http/handlers_auth.h"
#include "http/response.h"

#ifndef CHRONICLE_VERSION
#define CHRONICLE_VERSION "0.0.0"
#endif

/* Keys: 1-255 bytes, no '/' and no control characters (C0, DEL, C1). */
#define KEY_PATTERN "^[^/\\x00-\\x1f\\x7f-\\x9f]+$"
/* string fields: one line without control characters. */
#define LINE_PATTERN "^[^\\x00-\\x1f\\x7f-\\x9f]*$"
/* text fields: tabs and line breaks allowed, other controls not. */
#define TEXT_PATTERN "^[^\\x00-\\x08\\x0b\\x0c\\x0e-\\x1f\\x7f-\\x9f]*$"

#define JSON_MEDIA "application/json"
#define PROBLEM_MEDIA "application/problem+json"

struct http_openapi {
    char *text; /* owned, NUL-terminated */
    size_t len;
};

/* The builder's state. All json_t members are owned by doc (or are doc). */
typedef struct gen {
    const definition_t *def; /* NULL without an app */
    bool auth;
    bool oom;
    json_t *doc;
    json_t *paths;   /* doc.paths */
    json_t *schemas; /* doc.components.schemas */
    json_t *op_ids;  /* operationId -> true: the ones used so far */
    json_t *shapes;  /* path with parameters emptied ("/a/{}") -> template used */
} gen_t;

/* ---- small builders ------------------------------------------------------ */

/* o[k] = v, stealing v; records OOM (v NULL, o NULL or the set failed). */
static void put(gen_t *g, json_t *o, const char *k, json_t *v)
{
    if (!v || json_object_set_new(o, k, v) != 0) g->oom = true;
}

/* Appends v (stolen) to a. */
static void push(gen_t *g, json_t *a, json_t *v)
{
    if (!v || json_array_append_new(a, v) != 0) g->oom = true;
}

/* o[k] as an object, created empty when absent. Borrowed; NULL on OOM. */
static json_t *obj_at(gen_t *g, json_t *o, const char *k)
{
    json_t *v = json_object_get(o, k);
    if (v) return v;
    put(g, o, k, json_object());
    return json_object_get(o, k);
}

/* o[k] as an array, created empty when absent. Borrowed; NULL on OOM. */
static json_t *arr_at(gen_t *g, json_t *o, const char *k)
{
    json_t *v = json_object_get(o, k);
    if (v) return v;
    put(g, o, k, json_array());
    return json_object_get(o, k);
}

static void put_str(gen_t *g, json_t *o, const char *k, const char *s)
{
    put(g, o, k, json_string(s));
}

static void put_int(gen_t *g, json_t *o, const char *k, int64_t v)
{
    put(g, o, k, json_integer((json_int_t)v));
}

/* A number as JSON: integral values as integers (so bounds read 0, not 0.0). */
static json_t *number(double d)
{
    if (d == floor(d) && fabs(d) < 9007199254740992.0) return json_integer((json_int_t)d);
    return json_real(d);
}

/* {"$ref": "#/components/<section>/<name>"}: a new reference. */
static json_t *ref(const char *section, const char *name)
{
    char target[320];
    snprintf(target, sizeof target, "#/components/%s/%s", section, name);
    return json_pack("{s:s}", "$ref", target);
}

/* "type": t, or [t, "null"] when nullable. New reference. */
static json_t *type_of(const char *t, bool nullable)
{
    return nullable ? json_pack("[s,s]", t, "null") : json_string(t);
}

/* {"type": t(, "null")}. New reference. */
static json_t *typed(const char *t, bool nullable)
{
    return json_pack("{s:o}", "type", type_of(t, nullable));
}

/* {"type": t, "description": d}. New reference. */
static json_t *typed_desc(const char *t, const char *d)
{
    return json_pack("{s:s, s:s}", "type", t, "description", d);
}

/* {"type": "string", "format": f}. New reference. */
static json_t *string_format(const char *f)
{
    return json_pack("{s:s, s:s}", "type", "string", "format", f);
}

/* {"type": "array", "items": items (stolen)}. New reference. */
static json_t *array_of(json_t *items)
{
    return items ? json_pack("{s:s, s:o}", "type", "array", "items", items) : NULL;
}

/* The text of b as a JSON string; frees b. New reference, NULL on OOM. */
static json_t *buf_string(http_buf_t *b)
{
    json_t *s = b->oom ? NULL : json_stringn(b->data ? b->data : "", b->len);
    http_buf_free(b);
    return s;
}

/* ---- field schemas -------------------------------------------------------- */

/* The JSON Schema type of a field type; NULL for json (any value). */
static const char *json_type_name(field_type_t t)
{
    switch (t) {
    case FT_INTEGER:
        return "integer";
    case FT_NUMBER:
        return "number";
    case FT_BOOLEAN:
        return "boolean";
    case FT_JSON:
        return NULL;
    default:
        return "string";
    }
}

/* The JSON Schema of one field (or command input). input: as a request
 * body accepts it (patterns, defaults, timestamps as RFC 3339 date-time or
 * plain date, private fields writeOnly); else as responses carry it.
 * nullable: null is allowed (a value that may be unset, or "no value" in a
 * request). New reference. */
static json_t *field_schema(gen_t *g, const field_def_t *f, bool input, bool nullable)
{
    json_t *s = json_object();
    http_buf_t d = HTTP_BUF_INIT;
    const char *t = json_type_name(f->type);
    if (t) put(g, s, "type", type_of(t, nullable));
    switch (f->type) {
    case FT_STRING:
        if (input) put_str(g, s, "pattern", LINE_PATTERN);
        break;
    case FT_TEXT:
        if (input) put_str(g, s, "pattern", TEXT_PATTERN);
        break;
    case FT_EMAIL:
        put_str(g, s, "format", "email");
        break;
    case FT_PASSWORD:
        put_str(g, s, "format", "password");
        if (input) put_int(g, s, "minLength", FIELD_PASSWORD_MIN_LENGTH);
        http_buf_puts(&d, "Stored as an Argon2id hash");
        break;
    case FT_CRON:
        http_buf_puts(&d, "A 5-field cron expression (minute hour day-of-month month "
                          "day-of-week), or @hourly, @daily, @weekly, @monthly, @yearly");
        break;
    case FT_REF:
        http_buf_printf(&d, "key of %s", f->ref_to);
        if (input) {
            put_int(g, s, "minLength", 1);
            put_int(g, s, "maxLength", FIELD_KEY_MAX_BYTES);
            put_str(g, s, "pattern", KEY_PATTERN);
        }
        break;
    case FT_TIMESTAMP:
        if (input) {
            put(g, s, "anyOf",
                json_pack("[o,o]", json_pack("{s:s}", "format", "date-time"),
                          json_pack("{s:s}", "format", "date")));
            http_buf_puts(&d, "An RFC 3339 timestamp (any offset) or a plain date, stored in "
                              "UTC with microseconds");
        } else {
            put_str(g, s, "format", "date-time");
        }
        break;
    case FT_JSON:
        http_buf_puts(&d, "Any JSON value");
        break;
    case FT_INTEGER:
    case FT_NUMBER:
    case FT_BOOLEAN:
    case FT_ENUM:
        break;
    }
    if (f->type == FT_ENUM) {
        json_t *values = json_array();
        for (size_t i = 0; i < f->n_values; i++)
            push(g, values, json_string(f->values[i]));
        if (nullable) push(g, values, json_null());
        put(g, s, "enum", values);
    }
    /* The loader makes type defaults explicit; text's (1 MiB) is left out as
     * a limit nobody chose. */
    int64_t max_len = field_max_length(f);
    if ((f->type == FT_STRING || f->type == FT_EMAIL || f->type == FT_TEXT ||
         f->type == FT_PASSWORD) &&
        max_len > 0 &&
        !(f->type == FT_TEXT && max_len == FIELD_TEXT_MAX_LENGTH))
        put_int(g, s, "maxLength", max_len);
    if (f->has_min) put(g, s, "minimum", number(f->min));
    if (f->has_max) put(g, s, "maximum", number(f->max));
    if (input && f->default_value) put(g, s, "default", json_deep_copy(f->default_value));
    if (f->unique) http_buf_puts(&d, d.len ? "; unique" : "Unique");
    if (f->immutable)
        http_buf_puts(&d, d.len ? "; immutable: set on create, never changed"
                                : "Immutable: set on create, never changed");
    if (f->is_private) {
        put(g, s, "writeOnly", json_true());
        http_buf_puts(&d, d.len ? "; private: stored, never returned"
                                : "Private: stored, never returned");
    }
    if (d.len || d.oom)
        put(g, s, "description", buf_string(&d));
    else
        http_buf_free(&d);
    if (!s) g->oom = true;
    return s;
}

/* The schema of an entity's key. input: as a request accepts it. New
 * reference. */
static json_t *key_schema(gen_t *g, const entity_def_t *e, bool input, bool nullable)
{
    json_t *s = json_object();
    put(g, s, "type", type_of("string", nullable));
    if (input) {
        put_int(g, s, "minLength", 1);
        put_int(g, s, "maxLength", field_max_length(&e->key_field));
        put_str(g, s, "pattern", KEY_PATTERN);
    }
    char d[160];
    snprintf(d, sizeof d, "The key of the %s entity (1-255 bytes, no '/' or control characters).",
             e->name);
    put_str(g, s, "description", d);
    return s;
}

/* An object schema {type, description, properties, required,
 * additionalProperties: false}; properties and required are stolen
 * (required is left out when empty). New reference. */
static json_t *object_schema(gen_t *g, const char *desc, json_t *props, json_t *required)
{
    json_t *s = json_object();
    put_str(g, s, "type", "object");
    if (desc) put_str(g, s, "description", desc);
    put(g, s, "properties", props);
    if (json_array_size(required))
        put(g, s, "required", required);
    else
        json_decref(required);
    put(g, s, "additionalProperties", json_false());
    return s;
}

/* "E": an entity as responses carry it. Every member is always present;
 * fields that are not required may be null (unset). */
static void entity_read_schema(gen_t *g, const entity_def_t *e)
{
    json_t *props = json_object(), *req = json_array();
    put(g, props, e->key, key_schema(g, e, false, false));
    push(g, req, json_string(e->key));
    for (size_t i = 0; i < e->n_fields; i++) {
        const field_def_t *f = &e->fields[i];
        if (f->is_private) continue;
        put(g, props, f->name, field_schema(g, f, false, !f->required));
        push(g, req, json_string(f->name));
    }
    json_t *version = typed_desc("integer", "The number of events in the entity's stream; its "
                                            "ETag is this number in quotes.");
    put_int(g, version, "minimum", 1);
    put(g, props, "version", version);
    put(g, props, "created_at", string_format("date-time"));
    put(g, props, "updated_at", string_format("date-time"));
    push(g, req, json_string("version"));
    push(g, req, json_string("created_at"));
    push(g, req, json_string("updated_at"));
    char d[512];
    snprintf(d, sizeof d,
             "A %s entity as the API returns it: the key, every non-private field (null when "
             "unset), version, created_at and updated_at. Events: %s (create), %s (update), %s "
             "(delete).",
             e->name, e->ev_create, e->ev_update, e->ev_delete);
    put(g, g->schemas, e->name, object_schema(g, d, props, req));
}

/* A request body schema over fields: the key member (optional, must match
 * the key in the path unless `create`), then each field. required_mode:
 * fields required by the definition and without default are required
 * (create, command input); otherwise none is (update: a required field may
 * only not be null). */
static json_t *body_schema(gen_t *g, const entity_def_t *e, const field_def_t *fields, size_t n,
                           bool create, bool required_mode, const char *desc)
{
    json_t *props = json_object(), *req = json_array();
    bool key_required = create && e->key_field.required;
    json_t *k = key_schema(g, e, true, !key_required);
    if (!create)
        put_str(g, k, "description",
                "The key; optional, and when given it must equal the key in the path.");
    else if (!key_required)
        put_str(g, k, "description",
                "The key; a UUIDv7 is generated when it is not given (1-255 bytes, no '/' or "
                "control characters).");
    put(g, props, e->key, k);
    if (key_required) push(g, req, json_string(e->key));
    for (size_t i = 0; i < n; i++) {
        const field_def_t *f = &fields[i];
        bool required = required_mode ? f->required && !f->default_value : false;
        bool nullable = required_mode ? !required : !f->required;
        put(g, props, f->name, field_schema(g, f, true, nullable));
        if (required) push(g, req, json_string(f->name));
    }
    return object_schema(g, desc, props, req);
}

/* "E.create", "E.update" and one "E.<command>" per command. */
static void entity_write_schemas(gen_t *g, const entity_def_t *e)
{
    char name[160], d[512];
    if (e->operations & OP_CREATE) {
        snprintf(name, sizeof name, "%s.create", e->name);
        snprintf(d, sizeof d,
                 "The body of a %s create: null means no value; fields with a default get it "
                 "when not given.",
                 e->name);
        put(g, g->schemas, name, body_schema(g, e, e->fields, e->n_fields, true, true, d));
    }
    if (e->operations & (OP_UPDATE | OP_UPSERT)) {
        snprintf(name, sizeof name, "%s.update", e->name);
        snprintf(d, sizeof d,
                 "The body of a %s update (merge): only the members given change; null clears "
                 "a field that is not required.",
                 e->name);
        put(g, g->schemas, name, body_schema(g, e, e->fields, e->n_fields, false, false, d));
    }
    for (size_t i = 0; i < e->n_commands; i++) {
        const command_def_t *c = &e->commands[i];
        snprintf(name, sizeof name, "%s.%s", e->name, c->name);
        snprintf(d, sizeof d, "The input of the %s command of %s; it emits %s.", c->name, e->name,
                 c->event);
        put(g, g->schemas, name, body_schema(g, e, c->input, c->n_input, false, true, d));
    }
}

/* The core schemas: events, problems, stream appends and reads, health. */
/* The consumers of the worker role (handlers_consumers.c, docs/worker.md). */
static void consumer_schemas(gen_t *g)
{
    json_t *s = g->schemas;
    json_t *when = json_pack("{s:[o,o]}", "anyOf", string_format("date-time"), typed("null", false));
    put(g, s, "Consumer",
        json_pack("{s:s, s:s, s:{s:o, s:{s:s, s:[s,s,s]}, s:o, s:o, s:o, s:o, s:o, s:o, s:o, "
                  "s:o, s:o, s:O, s:O}, s:[s,s,s,s,s]}",
                  "type", "object", "description",
                  "A durable consumer: position is its checkpoint (every event up to it is "
                  "handled), lag the events after it up to head. A reaction to another "
                  "instance's feed names it in feed; its head and lag are null.",
                  "properties", "name", typed("string", false), "kind", "type", "string", "enum",
                  "webhook", "audit_log", "reaction", "filter", typed("object", false), "feed",
                  typed("string", true), "position", typed("integer", false), "lag",
                  typed("integer", true), "delivered",
                  typed("integer", false), "dead_letters", typed("integer", false), "resets",
                  typed("integer", false), "head", typed("integer", true), "last_error",
                  typed("string", true), "last_error_at", when, "updated_at", when, "required",
                  "name", "kind", "position", "lag", "last_error"));
    json_decref(when);
    put(g, s, "ConsumerList",
        json_pack("{s:s, s:{s:o, s:o}, s:[s,s]}", "type", "object", "properties", "consumers",
                  array_of(ref("schemas", "Consumer")), "head", typed("integer", false),
                  "required", "consumers", "head"));
    put(g, s, "ConsumerReset",
        json_pack("{s:s, s:{s:{s:s, s:i, s:i}}, s:b}", "type", "object", "properties",
                  "position", "type", "integer", "minimum", 0, "default", 0,
                  "additionalProperties", 0));
    put(g, s, "DeadLetter",
        json_pack("{s:s, s:{s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o}, s:[s,s,s]}", "type",
                  "object", "properties", "id", typed("integer", false), "position",
                  typed("integer", false), "event_id", string_format("uuid"), "event_type",
                  typed("string", false), "attempts", typed("integer", false), "error",
                  typed("string", false), "retry_requested", typed("boolean", false),
                  "created_at", string_format("date-time"), "updated_at",
                  string_format("date-time"), "required", "id", "event_id", "error"));
    put(g, s, "DeadLetterPage",
        json_pack("{s:s, s:{s:o, s:o, s:o}, s:[s,s,s]}", "type", "object", "properties",
                  "consumer", typed("string", false), "dead_letters",
                  array_of(ref("schemas", "DeadLetter")), "next_after", typed("integer", false),
                  "required", "consumer", "dead_letters", "next_after"));
}

static void core_schemas(gen_t *g)
{
    json_t *s = g->schemas;
    json_t *uuid = string_format("uuid");
    put(g, s, "Event",
        json_pack("{s:s, s:s, s:{s:O, s:o, s:o, s:o, s:o, s:o, s:o, s:o}, s:[s,s,s,s,s,s,s,s], "
                  "s:b}",
                  "type", "object", "description",
                  "One event of the log. stream is the aggregate (<entity>-<key> for entities), "
                  "version its 1-based place in the stream, position its place in the whole log.",
                  "properties", "id", uuid, "stream", typed("string", false), "type",
                  typed("string", false), "version",
                  json_pack("{s:s, s:i}", "type", "integer", "minimum", 1), "position",
                  json_pack("{s:s, s:i}", "type", "integer", "minimum", 1), "data",
                  json_pack("{s:s}", "description", "Any JSON value."), "metadata",
                  typed("object", false), "timestamp", string_format("date-time"), "required", "id",
                  "stream", "type", "version", "position", "data", "metadata", "timestamp",
                  "additionalProperties", 0));
    put(g, s, "ProblemError",
        json_pack("{s:s, s:{s:o, s:o}, s:[s,s]}", "type", "object", "properties", "field",
                  typed("string", false), "message", typed("string", false), "required", "field",
                  "message"));
    put(g, s, "Problem",
        json_pack("{s:s, s:s, s:{s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o}, s:[s,s,s,s]}",
                  "type", "object", "description",
                  "An RFC 9457 problem: type is /problems/<slug>; errors names the fields at "
                  "fault; expected_version and actual_version come with wrong-expected-version.",
                  "properties", "type", string_format("uri-reference"), "title",
                  typed("string", false), "status", typed("integer", false), "detail",
                  typed("string", false), "instance", typed("string", false), "request_id",
                  typed("string", false), "errors", array_of(ref("schemas", "ProblemError")),
                  "expected_version",
                  json_pack("{s:[o,o]}", "anyOf", typed("integer", false), typed("string", false)),
                  "actual_version", typed("integer", false), "required", "type", "title", "status",
                  "detail"));
    put(g, s, "AppendEvent",
        json_pack("{s:s, s:{s:O, s:{s:s, s:i, s:i}, s:{s:s, s:{}}, s:o}, s:[s], s:b}", "type",
                  "object", "properties", "id", uuid, "type", "type", "string", "minLength", 1,
                  "maxLength", 255, "data", "description", "Any JSON value (default {}).",
                  "default", "metadata", typed("object", false), "required", "type",
                  "additionalProperties", 0));
    json_decref(uuid);
    put(g, s, "AppendRequest",
        json_pack("{s:s, s:{s:{s:s, s:[{s:s, s:i}, {s:s, s:[s,s,s]}], s:s}, s:{s:s, s:i, s:i, "
                  "s:o}}, s:[s], s:b}",
                  "type", "object", "properties", "expected_version", "description",
                  "The stream's version must be exactly this (0: the stream must not exist), "
                  "or any, no_stream, stream_exists.",
                  "anyOf", "type", "integer", "minimum", 0, "type", "string", "enum", "any",
                  "no_stream", "stream_exists", "default", "any", "events", "type", "array",
                  "minItems", 1, "maxItems", HTTP_MAX_EVENTS_PER_APPEND, "items",
                  ref("schemas", "AppendEvent"), "required", "events", "additionalProperties", 0));
    put(g, s, "AppendResponse",
        json_pack("{s:s, s:{s:o, s:o, s:o, s:o}, s:[s,s,s,s]}", "type", "object", "properties",
                  "stream", typed("string", false), "version", typed("integer", false), "positions",
                  array_of(typed("integer", false)), "ids", array_of(string_format("uuid")),
                  "required", "stream", "version", "positions", "ids"));
    put(g, s, "StreamPage",
        json_pack("{s:s, s:{s:o, s:o, s:o}, s:[s,s,s]}", "type", "object", "properties", "stream",
                  typed("string", false), "version",
                  typed_desc("integer", "The stream's current version."), "events",
                  array_of(ref("schemas", "Event")), "required", "stream", "version", "events"));
    put(g, s, "EventPage",
        json_pack("{s:s, s:{s:o, s:o, s:o}, s:[s,s,s]}", "type", "object", "properties", "events",
                  array_of(ref("schemas", "Event")), "next_after",
                  typed_desc("integer", "The position of the last event of the page (after "
                                        "when the page is empty): the next page's after."),
                  "head", typed_desc("integer", "The newest position in the store."), "required",
                  "events", "next_after", "head"));
    put(g, s, "Health",
        json_pack("{s:s, s:{s:{s:s, s:[s]}}, s:[s]}", "type", "object", "properties", "status",
                  "type", "string", "enum", "ok", "required", "status"));
    put(g, s, "Ready",
        json_pack("{s:s, s:{s:{s:s, s:[s]}}, s:[s]}", "type", "object", "properties", "status",
                  "type", "string", "enum", "ready", "required", "status"));
    put(g, s, "ComponentHealth",
        json_pack("{s:s, s:{s:o, s:o, s:o, s:o, s:o}, s:[s,s]}", "type", "object", "properties",
                  "component", typed("string", false), "status", typed("string", false),
                  "head_position", typed_desc("integer", "store: the newest position."),
                  "in_flight", typed_desc("integer", "http: requests in flight."), "subscribers",
                  typed_desc("integer", "http: open live-feed streams."), "required", "component",
                  "status"));
    consumer_schemas(g);
}

/* ---- shared responses, headers, parameters ------------------------------- */

static const struct problem_doc {
    int status;
    const char *name;
    const char *description;
} problem_docs[] = {
    {400, "BadRequest",
     "Bad request: malformed JSON, or a bad path, query or header parameter (errors names it)."},
    {401, "Unauthorized", "Missing or wrong bearer credential (or a failed login)."},
    {404, "NotFound", "Not found."},
    {409, "Conflict",
     "Conflict: the entity already exists, a unique value is taken, a command's precondition "
     "does not hold, an expected version did not hold, or a concurrent change won."},
    {412, "PreconditionFailed", "If-Match does not match the current version."},
    {413, "PayloadTooLarge", "The body (or an event) is larger than allowed."},
    {415, "UnsupportedMediaType", "The body was not sent as Content-Type: application/json."},
    {422, "ValidationFailed", "The body breaks a rule; errors names each field at fault."},
    {429, "TooManyRequests",
     "This client's rate limit for the route's class is used up; retry after Retry-After "
     "seconds."},
    {503, "ServiceUnavailable", "The store failed or the server is shutting down; retry."},
};

static void components(gen_t *g, json_t *comp)
{
    json_t *headers = obj_at(g, comp, "headers");
    put(g, headers, "X-Request-Id",
        json_pack("{s:s, s:o}", "description",
                  "The request's id: the client's X-Request-Id (1-128 printable ASCII "
                  "characters) or a new UUIDv7.",
                  "schema", typed("string", false)));
    put(g, headers, "ETag",
        json_pack("{s:s, s:o}", "description",
                  "The entity's version in quotes, e.g. \"3\"; send it back in If-Match.", "schema",
                  typed("string", false)));
    put(g, headers, "Location",
        json_pack("{s:s, s:o}", "description", "The URL of what was created.", "schema",
                  string_format("uri-reference")));
    put(g, headers, "Link",
        json_pack("{s:s, s:o}", "description",
                  "<URL>; rel=\"next\" when there is a next page (the same query with after=).",
                  "schema", typed("string", false)));
    put(g, headers, "Idempotent-Replay",
        json_pack("{s:s, s:{s:s, s:[s]}}", "description",
                  "true when the same events (same ids) were already stored: nothing was "
                  "stored again.",
                  "schema", "type", "string", "enum", "true"));
    put(g, headers, "Retry-After",
        json_pack("{s:s, s:o}", "description", "Whole seconds until the client may retry.",
                  "schema", typed("integer", false)));
    put(g, headers, "WWW-Authenticate",
        json_pack("{s:s, s:{s:s, s:[s]}}", "description", "The scheme to use.", "schema", "type",
                  "string", "enum", "Bearer"));

    json_t *responses = obj_at(g, comp, "responses");
    for (size_t i = 0; i < sizeof problem_docs / sizeof problem_docs[0]; i++) {
        const struct problem_doc *p = &problem_docs[i];
        if (p->status == 401 && !g->auth) continue;
        json_t *r = json_pack("{s:s, s:{s:o}, s:{s:{s:o}}}", "description", p->description,
                              "headers", "X-Request-Id", ref("headers", "X-Request-Id"), "content",
                              PROBLEM_MEDIA, "schema", ref("schemas", "Problem"));
        if (p->status == 401)
            put(g, json_object_get(r, "headers"), "WWW-Authenticate",
                ref("headers", "WWW-Authenticate"));
        if (p->status == 429)
            put(g, json_object_get(r, "headers"), "Retry-After", ref("headers", "Retry-After"));
        put(g, responses, p->name, r);
    }

    put(g, obj_at(g, comp, "parameters"), "If-Match",
        json_pack("{s:s, s:s, s:b, s:s, s:o}", "name", "If-Match", "in", "header", "required", 0,
                  "description",
                  "Only apply the change when the entity's version is this one (its ETag, e.g. "
                  "\"3\"); otherwise 412.",
                  "schema", typed("string", false)));
    if (g->auth)
        put(g, obj_at(g, comp, "securitySchemes"), "bearer",
            json_pack("{s:s, s:s, s:s}", "type", "http", "scheme", "bearer", "description",
                      "An API secret (API_SECRET), a named API key, or a JWT: from an "
                      "identity provider or from POST /v1/auth/login (docs/security.md)."));
}

/* ---- operations ------------------------------------------------------------ */

/* The path under which to document pattern: OpenAPI treats templates that
 * differ only in parameter names as the same path, so the first spelling of
 * each shape is used for all. Borrowed (from pattern or g->shapes). */
static const char *path_for(gen_t *g, const char *pattern)
{
    size_t n = strlen(pattern);
    char *shape = malloc(n + 1);
    if (!shape) {
        g->oom = true;
        return pattern;
    }
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        shape[k++] = pattern[i];
        if (pattern[i] == '{') {
            while (i + 1 < n && pattern[i + 1] != '}')
                i++;
        }
    }
    shape[k] = '\0';
    const json_t *known = json_object_get(g->shapes, shape);
    if (!known) {
        put(g, g->shapes, shape, json_string(pattern));
        known = json_object_get(g->shapes, shape);
    }
    free(shape);
    return known ? json_string_value(known) : pattern;
}

/* base, or base_2, base_3, ... : an operationId not used yet (recorded). */
static json_t *unique_op_id(gen_t *g, const char *base)
{
    char id[400];
    snprintf(id, sizeof id, "%s", base);
    for (int n = 2; json_object_get(g->op_ids, id); n++)
        snprintf(id, sizeof id, "%.380s_%d", base, n);
    put(g, g->op_ids, id, json_true());
    return json_string(id);
}

/* Starts the operation method + pattern: operationId, summary, tag, the
 * path parameters of the template (as plain strings; callers refine them)
 * and, with auth, "security": [] for public routes. Returns the operation
 * (borrowed from the document), or NULL on OOM or when the path already
 * has that method (the router refuses that, so it cannot happen). */
static json_t *op_new(gen_t *g, const char *method, const char *pattern, const char *op_id,
                      const char *summary, const char *tag, bool public_route)
{
    const char *tmpl = path_for(g, pattern);
    json_t *item = obj_at(g, g->paths, tmpl);
    char m[16];
    size_t i = 0;
    for (; method[i] && i + 1 < sizeof m; i++)
        m[i] = (char)(method[i] >= 'A' && method[i] <= 'Z' ? method[i] - 'A' + 'a' : method[i]);
    m[i] = '\0';
    if (!item || json_object_get(item, m)) return NULL;
    json_t *op = json_object();
    put(g, op, "operationId", unique_op_id(g, op_id));
    put_str(g, op, "summary", summary);
    if (tag) put(g, op, "tags", json_pack("[s]", tag));
    for (const char *p = strchr(tmpl, '{'); p; p = strchr(p + 1, '{')) {
        const char *close = strchr(p, '}');
        if (!close) break;
        push(g, arr_at(g, op, "parameters"),
             json_pack("{s:s%, s:s, s:b, s:o}", "name", p + 1, (size_t)(close - p - 1), "in",
                       "path", "required", 1, "schema", typed("string", false)));
    }
    if (public_route && g->auth) put(g, op, "security", json_array());
    put(g, item, m, op);
    return json_object_get(item, m);
}

/* Replaces the schema (and description) of every path parameter of op. */
static void path_param(gen_t *g, json_t *op, json_t *schema, const char *desc)
{
    size_t i;
    json_t *p;
    json_array_foreach(json_object_get(op, "parameters"), i, p)
    {
        const char *in = json_string_value(json_object_get(p, "in"));
        if (!in || strcmp(in, "path") != 0) continue;
        put(g, p, "schema", json_deep_copy(schema));
        if (desc) put_str(g, p, "description", desc);
    }
    json_decref(schema);
}

/* Adds a query or header parameter; schema is stolen. */
static void param(gen_t *g, json_t *op, const char *name, const char *in, const char *desc,
                  json_t *schema)
{
    json_t *p = json_pack("{s:s, s:s, s:o}", "name", name, "in", in, "schema", schema);
    if (desc) put_str(g, p, "description", desc);
    push(g, arr_at(g, op, "parameters"), p);
}

/* {"type": "integer", "minimum": min[, "maximum": max][, "default": def]};
 * max or def < 0: left out. New reference. */
static json_t *int_schema(gen_t *g, int64_t min, int64_t max, int64_t def)
{
    json_t *s = json_pack("{s:s, s:I}", "type", "integer", "minimum", (json_int_t)min);
    if (max >= 0) put_int(g, s, "maximum", max);
    if (def >= 0) put_int(g, s, "default", def);
    return s;
}

/* Adds the response status to op: {description, headers: X-Request-Id}.
 * Returns it (borrowed). */
static json_t *response(gen_t *g, json_t *op, int status, const char *desc)
{
    char code[8];
    snprintf(code, sizeof code, "%d", status);
    json_t *r = json_pack("{s:s, s:{s:o}}", "description", desc, "headers", "X-Request-Id",
                          ref("headers", "X-Request-Id"));
    json_t *responses = obj_at(g, op, "responses");
    put(g, responses, code, r);
    return json_object_get(responses, code);
}

/* Sets the schema (stolen) of media type media of response r. */
static void content(gen_t *g, json_t *r, const char *media, json_t *schema)
{
    put(g, obj_at(g, r, "content"), media, json_pack("{s:o}", "schema", schema));
}

/* Adds a shared header (components.headers) to response r. */
static void header(gen_t *g, json_t *r, const char *name)
{
    put(g, obj_at(g, r, "headers"), name, ref("headers", name));
}

/* The problem responses of op: codes (0-terminated), plus 401 when auth
 * applies to it. */
static void problems(gen_t *g, json_t *op, const int *codes)
{
    json_t *responses = obj_at(g, op, "responses");
    bool auth = g->auth && !json_object_get(op, "security");
    for (size_t i = 0; i < sizeof problem_docs / sizeof problem_docs[0]; i++) {
        const struct problem_doc *p = &problem_docs[i];
        bool want = p->status == 401 && auth;
        for (const int *c = codes; !want && *c; c++)
            want = *c == p->status;
        if (!want) continue;
        char code[8];
        snprintf(code, sizeof code, "%d", p->status);
        put(g, responses, code, ref("responses", p->name));
    }
}

/* A JSON request body of schema components.schemas[name]. */
static void request_body(gen_t *g, json_t *op, const char *name, bool required, const char *desc)
{
    json_t *b = json_pack("{s:b, s:{s:{s:o}}}", "required", required, "content", JSON_MEDIA,
                          "schema", ref("schemas", name));
    if (desc) put_str(g, b, "description", desc);
    put(g, op, "requestBody", b);
}

/* Moves op's responses after its other members (requestBody is added last
 * by some builders): the order people read an operation in. */
static void responses_last(gen_t *g, json_t *op)
{
    json_t *responses = json_incref(json_object_get(op, "responses"));
    if (!responses) return;
    json_object_del(op, "responses");
    put(g, op, "responses", responses);
}

/* ---- the core routes -------------------------------------------------------- */

typedef void (*core_doc_fn)(gen_t *g, json_t *op);

static void doc_health(gen_t *g, json_t *op)
{
    content(g, response(g, op, 200, "The process is running."), JSON_MEDIA,
            ref("schemas", "Health"));
    problems(g, op, (const int[]){0});
}

static void doc_ready(gen_t *g, json_t *op)
{
    content(g, response(g, op, 200, "The store answers."), JSON_MEDIA, ref("schemas", "Ready"));
    problems(g, op, (const int[]){503, 0});
}

static void doc_component(gen_t *g, json_t *op)
{
    path_param(g, op, json_pack("{s:s, s:[s,s]}", "type", "string", "enum", "store", "http"),
               "The component: store or http.");
    content(g, response(g, op, 200, "The component is healthy."), JSON_MEDIA,
            ref("schemas", "ComponentHealth"));
    problems(g, op, (const int[]){400, 404, 503, 0});
}

static void doc_metrics(gen_t *g, json_t *op)
{
    content(g, response(g, op, 200, "Prometheus text format 0.0.4."), "text/plain; version=0.0.4",
            typed("string", false));
    problems(g, op, (const int[]){0});
}

static const char stream_desc[] = "The stream's name (1-255 bytes; percent-encode '/').";

static void doc_stream_append(gen_t *g, json_t *op)
{
    path_param(g, op, json_pack("{s:s, s:i}", "type", "string", "minLength", 1), stream_desc);
    request_body(g, op, "AppendRequest", true,
                 "1-1000 events, stored atomically. Sending the same ids again stores nothing.");
    json_t *r = response(g, op, 201, "Appended (or replayed: Idempotent-Replay).");
    header(g, r, "Location");
    header(g, r, "Idempotent-Replay");
    content(g, r, JSON_MEDIA, ref("schemas", "AppendResponse"));
    problems(g, op, (const int[]){400, 409, 413, 415, 422, 503, 0});
}

static void doc_stream_read(gen_t *g, json_t *op)
{
    path_param(g, op, json_pack("{s:s, s:i}", "type", "string", "minLength", 1), stream_desc);
    param(g, op, "from", "query",
          "The first version to read (default 1 forward, the last backward).",
          int_schema(g, 0, -1, -1));
    param(g, op, "limit", "query", "Events per page.",
          int_schema(g, 1, HTTP_MAX_PAGE, HTTP_DEFAULT_PAGE));
    param(g, op, "direction", "query", NULL,
          json_pack("{s:s, s:[s,s], s:s}", "type", "string", "enum", "forward", "backward",
                    "default", "forward"));
    content(g, response(g, op, 200, "A page of the stream's events."), JSON_MEDIA,
            ref("schemas", "StreamPage"));
    problems(g, op, (const int[]){400, 404, 503, 0});
}

static void doc_events(gen_t *g, json_t *op)
{
    param(g, op, "after", "query", "Events after this position.", int_schema(g, 0, -1, 0));
    param(g, op, "limit", "query", "Events per page.",
          int_schema(g, 1, HTTP_MAX_PAGE, HTTP_DEFAULT_PAGE));
    param(g, op, "types", "query", "Only these event types, comma-separated.",
          typed("string", false));
    param(g, op, "Last-Event-ID", "header",
          "Live feed: resume after this position (the larger of it and after wins).",
          typed("string", false));
    json_t *r =
        response(g, op, 200, "A page of the log; with Accept: text/event-stream, the live feed.");
    content(g, r, JSON_MEDIA, ref("schemas", "EventPage"));
    content(g, r, "text/event-stream",
            typed_desc("string", "Server-Sent Events: per event \"id: <position>\", \"event: "
                                 "<type>\" and \"data: <Event JSON>\"; \": heartbeat\" comments "
                                 "while idle."));
    problems(g, op, (const int[]){400, 503, 0});
}

static void doc_consumers(gen_t *g, json_t *op)
{
    content(g, response(g, op, 200, "The consumers the app definition declares."), JSON_MEDIA,
            ref("schemas", "ConsumerList"));
    problems(g, op, (const int[]){503, 0});
}

static const char consumer_desc[] =
    "A consumer's name (webhooks[].name, audit_log, or a reaction's name).";

static void doc_consumer_reset(gen_t *g, json_t *op)
{
    path_param(g, op, typed("string", false), consumer_desc);
    request_body(g, op, "ConsumerReset", false,
                 "The position to rewind (or move) to; no body: 0, the start of the log.");
    content(g, response(g, op, 200, "The consumer after the reset."), JSON_MEDIA,
            ref("schemas", "Consumer"));
    problems(g, op, (const int[]){400, 404, 415, 422, 503, 0});
}

static void doc_dead_letters(gen_t *g, json_t *op)
{
    path_param(g, op, typed("string", false), consumer_desc);
    param(g, op, "after", "query", "Dead letters with an id above this.", int_schema(g, 0, -1, 0));
    param(g, op, "limit", "query", "Dead letters per page.",
          int_schema(g, 1, HTTP_MAX_PAGE, HTTP_DEFAULT_PAGE));
    content(g, response(g, op, 200, "The events the consumer gave up on, oldest first."),
            JSON_MEDIA, ref("schemas", "DeadLetterPage"));
    problems(g, op, (const int[]){400, 404, 503, 0});
}

static void doc_dead_letter_retry(gen_t *g, json_t *op)
{
    path_param(g, op, typed("string", false), "The consumer's name, then the dead letter's id.");
    content(g, response(g, op, 202,
                        "Marked for retry: the worker delivers it once more within a second and "
                        "removes it from the list when that succeeds."),
            JSON_MEDIA, ref("schemas", "DeadLetter"));
    problems(g, op, (const int[]){404, 415, 503, 0});
}

static void doc_openapi(gen_t *g, json_t *op)
{
    content(g, response(g, op, 200, "This document."), JSON_MEDIA, typed("object", false));
    problems(g, op, (const int[]){0});
}

/* ---- identity (handlers_auth.c) ---- */

static void auth_schemas(gen_t *g, bool logins)
{
    json_t *s = g->schemas;
    put(g, s, "Principal",
        json_pack("{s:s, s:s, s:{s:{s:s, s:[s,s,s,s,s]}, s:o, s:o, s:o, s:o}, s:[s,s,s,s,s]}",
                  "type", "object", "description", "Who the server takes the caller for.",
                  "properties", "kind", "type", "string", "enum", "none", "api_secret", "api_key",
                  "jwt", "login", "sub", typed("string", true), "roles",
                  array_of(typed("string", false)), "tenant_id", typed("string", true),
                  "key_name", typed("string", true), "required", "kind", "sub", "roles",
                  "tenant_id", "key_name"));
    if (!logins) return;
    put(g, s, "LoginRequest",
        json_pack("{s:s, s:{s:o, s:o}, s:[s,s]}", "type", "object", "properties", "email",
                  string_format("email"), "password", string_format("password"), "required",
                  "email", "password"));
    put(g, s, "RefreshRequest",
        json_pack("{s:s, s:{s:o}, s:[s]}", "type", "object", "properties", "refresh_token",
                  typed("string", false), "required", "refresh_token"));
    put(g, s, "Tokens",
        json_pack("{s:s, s:{s:o, s:{s:s, s:[s]}, s:o, s:o, s:o}, s:[s,s,s,s,s]}", "type",
                  "object", "properties", "access_token",
                  typed_desc("string", "An HS256 JWT for Authorization: Bearer."), "token_type",
                  "type", "string", "enum", "Bearer", "expires_in",
                  typed_desc("integer", "Seconds the access token is valid."), "refresh_token",
                  typed_desc("string", "Opaque; works once (POST /v1/auth/refresh)."),
                  "refresh_expires_in",
                  typed_desc("integer", "Seconds the refresh token is valid."), "required",
                  "access_token", "token_type", "expires_in", "refresh_token",
                  "refresh_expires_in"));
}

static void doc_me(gen_t *g, json_t *op)
{
    content(g, response(g, op, 200, "The caller's principal."), JSON_MEDIA,
            ref("schemas", "Principal"));
    problems(g, op, (const int[]){0});
}

static void doc_tokens(gen_t *g, json_t *op, const char *body, const char *desc)
{
    request_body(g, op, body, true, desc);
    content(g, response(g, op, 200, "New tokens (Cache-Control: no-store)."), JSON_MEDIA,
            ref("schemas", "Tokens"));
    problems(g, op, (const int[]){400, 401, 415, 422, 429, 503, 0});
}

static void doc_login(gen_t *g, json_t *op)
{
    doc_tokens(g, op, "LoginRequest",
               "The user's e-mail address and password. A wrong password and an unknown "
               "address get the same 401.");
}

static void doc_refresh(gen_t *g, json_t *op)
{
    doc_tokens(g, op, "RefreshRequest",
               "A refresh token; it is used up, and a used one presented again ends the "
               "session.");
}

static void doc_logout(gen_t *g, json_t *op)
{
    request_body(g, op, "RefreshRequest", true, "The session's current refresh token.");
    response(g, op, 204, "The session's refresh tokens are revoked (also for unknown tokens).");
    problems(g, op, (const int[]){400, 415, 422, 429, 503, 0});
}

/* Documentation of the core routes, by method and pattern. */
static const struct core_doc {
    const char *method, *pattern, *op_id, *summary, *tag;
    core_doc_fn fill;
} core_docs[] = {
    {"GET", "/health", "health", "Liveness", "operations", doc_health},
    {"GET", "/ready", "ready", "Readiness: the store answers", "operations", doc_ready},
    {"GET", "/internal/health/{component}", "componentHealth", "Health of one component",
     "operations", doc_component},
    {"GET", "/metrics", "metrics", "Prometheus metrics", "operations", doc_metrics},
    {"POST", "/v1/streams/{stream}", "streams.append", "Append events to a stream", "streams",
     doc_stream_append},
    {"GET", "/v1/streams/{stream}", "streams.read", "Read a stream", "streams", doc_stream_read},
    {"GET", "/v1/events", "events.list", "The global log, or its live feed", "events", doc_events},
    {"GET", "/v1/consumers", "consumers.list", "Consumers with position, lag and last error",
     "consumers", doc_consumers},
    {"POST", "/v1/consumers/{name}/reset", "consumers.reset", "Rewind a consumer", "consumers",
     doc_consumer_reset},
    {"GET", "/v1/consumers/{name}/dead-letters", "consumers.deadLetters",
     "A consumer's dead letters", "consumers", doc_dead_letters},
    {"POST", "/v1/consumers/{name}/dead-letters/{id}/retry", "consumers.retryDeadLetter",
     "Deliver a dead letter again", "consumers", doc_dead_letter_retry},
    {"GET", HTTP_OPENAPI_PATH, "openapi", "This OpenAPI document", "meta", doc_openapi},
    {"GET", "/v1/auth/me", "auth.me", "The caller's principal", "auth", doc_me},
    {"POST", "/v1/auth/login", "auth.login", "Log in with e-mail and password", "auth", doc_login},
    {"POST", "/v1/auth/refresh", "auth.refresh", "New tokens for a refresh token", "auth",
     doc_refresh},
    {"POST", "/v1/auth/logout", "auth.logout", "End a session", "auth", doc_logout},
};

/* An operationId for a route with no better name: prefix.method.path,
 * segments joined by '.', braces dropped, other characters but letters,
 * digits, '-' and '_' as '_'. */
static void path_op_id(const char *prefix, const char *method, const char *path, char *out,
                       size_t size)
{
    size_t k = (size_t)snprintf(out, size, "%s.", prefix);
    for (const char *m = method; *m && k + 1 < size; m++)
        out[k++] = (char)(*m >= 'A' && *m <= 'Z' ? *m - 'A' + 'a' : *m);
    for (const char *p = path; *p && k + 1 < size; p++) {
        char c = *p;
        if (c == '{' || c == '}') continue;
        if (c == '/')
            c = '.';
        else if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                   c == '-' || c == '_'))
            c = '_';
        out[k++] = c;
    }
    out[k < size ? k : size - 1] = '\0';
}

static void core_route_op(gen_t *g, const http_route_t *r)
{
    bool public_route = r->flags & HTTP_ROUTE_PUBLIC;
    for (size_t i = 0; i < sizeof core_docs / sizeof core_docs[0]; i++) {
        const struct core_doc *d = &core_docs[i];
        if (strcmp(d->method, r->method) != 0 || strcmp(d->pattern, r->pattern) != 0) continue;
        json_t *op = op_new(g, r->method, r->pattern, d->op_id, d->summary, d->tag, public_route);
        if (!op) return;
        d->fill(g, op);
        responses_last(g, op);
        return;
    }
    /* A core route nobody documented yet still appears. */
    char id[400];
    path_op_id("core", r->method, r->pattern, id, sizeof id);
    json_t *op = op_new(g, r->method, r->pattern, id, r->pattern, "operations", public_route);
    if (!op) return;
    content(g, response(g, op, 200, "OK."), JSON_MEDIA, json_object());
    problems(g, op, (const int[]){400, 503, 0});
}

/* ---- the app's routes -------------------------------------------------------- */

/* The schema of what route er returns per entity: "E", or only the route's
 * `fields`. New reference. */
static json_t *read_schema_for(gen_t *g, const entity_def_t *e, const route_def_t *app)
{
    if (!app || !app->fields) return ref("schemas", e->name);
    const json_t *all = json_object_get(json_object_get(g->schemas, e->name), "properties");
    json_t *props = json_object(), *req = json_array();
    for (size_t i = 0; i < app->n_fields; i++) {
        json_t *p = json_object_get(all, app->fields[i]);
        put(g, props, app->fields[i], p ? json_deep_copy(p) : json_object());
        push(g, req, json_string(app->fields[i]));
    }
    char d[160];
    snprintf(d, sizeof d, "A %s entity with the members this route returns.", e->name);
    return object_schema(g, d, props, req);
}

/* The query parameters of a list: limit, after, sort and one filter per
 * filterable name (the key, version, created_at, updated_at, fields that
 * are neither private nor json). */
static void list_params(gen_t *g, json_t *op, const entity_def_t *e, const route_def_t *app)
{
    int64_t max = app && app->max_limit > 0 ? app->max_limit : QUERY_MAX_LIMIT;
    int64_t def = app && app->limit > 0 ? app->limit : QUERY_DEFAULT_LIMIT;
    if (def > max) def = max;
    param(g, op, "limit", "query", "Page size.", int_schema(g, 1, max, def));
    param(g, op, "after", "query",
          "The cursor of the next page, as given in the Link header of the previous one.",
          typed("string", false));

    /* Sortable and filterable names, with whether like applies. */
    const char *names[3 + 256];
    bool like[3 + 256];
    size_t n = 0;
    names[n] = e->key;
    like[n++] = true;
    for (size_t i = 0; i < e->n_fields && n < 256; i++) {
        const field_def_t *f = &e->fields[i];
        if (f->is_private || f->type == FT_JSON) continue;
        names[n] = f->name;
        like[n++] = !(f->type == FT_INTEGER || f->type == FT_NUMBER || f->type == FT_BOOLEAN ||
                      f->type == FT_TIMESTAMP);
    }
    static const char *const sys[] = {"version", "created_at", "updated_at"};
    for (size_t i = 0; i < 3; i++) {
        names[n] = sys[i];
        like[n++] = false;
    }

    http_buf_t d = HTTP_BUF_INIT;
    http_buf_puts(&d, "Comma-separated names to sort by, each optionally prefixed with - for "
                      "descending, from: ");
    for (size_t i = 0; i < n; i++)
        http_buf_printf(&d, "%s%s", i ? ", " : "", names[i]);
    http_buf_puts(&d, ". The key breaks ties.");
    json_t *sort = typed("string", false);
    put_str(g, sort, "default", app && app->sort ? app->sort : e->key);
    json_t *desc = buf_string(&d);
    param(g, op, "sort", "query", json_string_value(desc), sort);
    json_decref(desc);
    if (!desc) g->oom = true;

    for (size_t i = 0; i < n; i++) {
        if (strcmp(names[i], "limit") == 0 || strcmp(names[i], "after") == 0 ||
            strcmp(names[i], "sort") == 0)
            continue; /* shadowed by the list parameters themselves */
        char fd[256];
        snprintf(fd, sizeof fd, "Filter: %s=value or %s=op.value, op in %s", names[i], names[i],
                 like[i] ? "eq,neq,gt,gte,lt,lte,like,in" : "eq,neq,gt,gte,lt,lte,in");
        param(g, op, names[i], "query", fd, typed("string", false));
    }
}

static const char *const action_names[] = {
    [EA_LIST] = "list",       [EA_CREATE] = "create", [EA_GET] = "get",
    [EA_UPDATE] = "update",   [EA_UPSERT] = "upsert", [EA_DELETE] = "delete",
    [EA_HISTORY] = "history",
};

static void app_route_op(gen_t *g, const http_entity_route_t *er)
{
    const entity_def_t *e = &g->def->entities[er->entity];
    const char *action = er->action == EA_COMMAND ? (er->command ? er->command->name : "command")
                                                  : action_names[er->action];
    char id[400], summary[256], name[160];
    if (er->app)
        path_op_id("app", er->method, er->pattern, id, sizeof id);
    else
        snprintf(id, sizeof id, "%s.%s", e->name, action);
    switch (er->action) {
    case EA_LIST:
        snprintf(summary, sizeof summary, "List %s", e->name);
        break;
    case EA_CREATE:
        snprintf(summary, sizeof summary, "Create one of %s", e->name);
        break;
    case EA_GET:
        snprintf(summary, sizeof summary, "Get one of %s (now or in the past)", e->name);
        break;
    case EA_UPDATE:
        snprintf(summary, sizeof summary, "Update one of %s", e->name);
        break;
    case EA_UPSERT:
        snprintf(summary, sizeof summary, "Create or update one of %s", e->name);
        break;
    case EA_DELETE:
        snprintf(summary, sizeof summary, "Delete one of %s", e->name);
        break;
    case EA_HISTORY:
        snprintf(summary, sizeof summary, "The events of one of %s, oldest first", e->name);
        break;
    case EA_COMMAND:
        snprintf(summary, sizeof summary, "Command %s on one of %s", action, e->name);
        break;
    }
    json_t *op = op_new(g, er->method, er->pattern, id, summary, e->name, http_entity_route_public(er));
    if (!op) return;
    if (er->app) {
        char d[320];
        snprintf(d, sizeof d, "The app's route for %s.%s.", e->name, er->app->action);
        put_str(g, op, "description", d);
    }
    if (er->key_param) {
        char d[200];
        snprintf(d, sizeof d, "The key (%s) of the %s entity.", e->key, e->name);
        path_param(g, op, json_pack("{s:s, s:i}", "type", "string", "minLength", 1), d);
    }
    json_t *r;
    bool key_write = er->action == EA_UPDATE || er->action == EA_UPSERT ||
                     er->action == EA_DELETE || er->action == EA_COMMAND;
    if (key_write) {
        push(g, arr_at(g, op, "parameters"), ref("parameters", "If-Match"));
        r = response(g, op, 200,
                     er->action == EA_DELETE ? "Deleted; the entity as it was." : "The entity.");
        header(g, r, "ETag");
        content(g, r, JSON_MEDIA, read_schema_for(g, e, er->app));
    }
    switch (er->action) {
    case EA_LIST:
        list_params(g, op, e, er->app);
        if (er->app && json_object_size(er->app->filters)) {
            char *f = json_dumps(er->app->filters, JSON_COMPACT);
            if (!f) g->oom = true;
            char d[640];
            snprintf(d, sizeof d, "The app's route for %s.list; always filtered by %s.", e->name,
                     f ? f : "");
            free(f);
            put_str(g, op, "description", d);
        }
        r = response(g, op, 200, "A page; Link names the next one.");
        header(g, r, "Link");
        content(g, r, JSON_MEDIA, array_of(read_schema_for(g, e, er->app)));
        problems(g, op, (const int[]){400, 503, 0});
        break;
    case EA_GET:
        param(g, op, "at", "query", "The state as of this moment (RFC 3339).",
              string_format("date-time"));
        param(g, op, "version", "query", "The state as of this version.", int_schema(g, 1, -1, -1));
        r = response(g, op, 200, "The entity.");
        header(g, r, "ETag");
        content(g, r, JSON_MEDIA, read_schema_for(g, e, er->app));
        problems(g, op, (const int[]){400, 404, 503, 0});
        break;
    case EA_HISTORY:
        content(g, response(g, op, 200, "Its events, oldest first (private fields removed)."),
                JSON_MEDIA, array_of(ref("schemas", "Event")));
        problems(g, op, (const int[]){400, 404, 503, 0});
        break;
    case EA_CREATE:
        snprintf(name, sizeof name, "%s.create", e->name);
        request_body(g, op, name, true, NULL);
        r = response(g, op, 201, "Created.");
        header(g, r, "ETag");
        header(g, r, "Location");
        content(g, r, JSON_MEDIA, read_schema_for(g, e, er->app));
        problems(g, op, (const int[]){400, 409, 413, 415, 422, 503, 0});
        break;
    case EA_UPDATE:
        snprintf(name, sizeof name, "%s.update", e->name);
        request_body(g, op, name, true, NULL);
        problems(g, op, (const int[]){400, 404, 409, 412, 413, 415, 422, 503, 0});
        break;
    case EA_UPSERT: {
        char d[320];
        snprintf(name, sizeof name, "%s.create", e->name);
        snprintf(d, sizeof d,
                 "The whole new state: creates the entity when absent, else replaces it "
                 "(members left out take their default or null; immutable ones keep "
                 "their value).");
        request_body(g, op, name, true, d);
        if (!er->app) { /* app routes answer 200 either way (handlers_entities.c) */
            r = response(g, op, 201, "Created.");
            header(g, r, "ETag");
            header(g, r, "Location");
            content(g, r, JSON_MEDIA, read_schema_for(g, e, er->app));
        }
        problems(g, op, (const int[]){400, 409, 412, 413, 415, 422, 503, 0});
        break;
    }
    case EA_DELETE:
        problems(g, op, (const int[]){400, 404, 409, 412, 503, 0});
        break;
    case EA_COMMAND:
        if (er->command) {
            bool needed = false;
            for (size_t i = 0; i < er->command->n_input; i++)
                needed |= er->command->input[i].required && !er->command->input[i].default_value;
            snprintf(name, sizeof name, "%s.%s", e->name, er->command->name);
            request_body(g, op, name, needed, NULL);
        }
        problems(g, op, (const int[]){400, 404, 409, 412, 413, 415, 422, 503, 0});
        break;
    }
    responses_last(g, op);
}

/* ---- the document ------------------------------------------------------------- */

static json_t *info(gen_t *g)
{
    const char *title = g->def && g->def->app ? g->def->app : "chronicle";
    char d[512];
    snprintf(d, sizeof d,
             "Generated by chronicle %s from %s. Errors are RFC 9457 application/problem+json. "
             "Every response carries X-Request-Id; GET routes also answer HEAD.",
             CHRONICLE_VERSION,
             g->def ? "the app definition" : "its core routes (no app definition)");
    return json_pack("{s:s, s:s, s:s}", "title", title, "version", CHRONICLE_VERSION, "description",
                     d);
}

int http_openapi_build(const definition_t *def, const http_app_routes_t *routes, bool auth,
                       http_openapi_t **out, chr_err_t *err)
{
    gen_t g = {.def = def, .auth = auth};
    g.doc = json_object();
    g.op_ids = json_object();
    g.shapes = json_object();
    put_str(&g, g.doc, "openapi", "3.1.0");
    put(&g, g.doc, "info", info(&g));
    g.paths = obj_at(&g, g.doc, "paths");
    json_t *comp = obj_at(&g, g.doc, "components");
    g.schemas = obj_at(&g, comp, "schemas");
    if (auth) put(&g, g.doc, "security", json_pack("[{s:[]}]", "bearer"));

    if (!g.oom && def) {
        for (size_t i = 0; i < def->n_entities; i++) {
            entity_read_schema(&g, &def->entities[i]);
            entity_write_schemas(&g, &def->entities[i]);
        }
    }
    if (!g.oom) core_schemas(&g);
    if (!g.oom) components(&g, comp);

    size_t n_core = 0;
    const http_route_t *core = http_core_routes(&n_core);
    for (size_t i = 0; !g.oom && i < n_core; i++)
        core_route_op(&g, &core[i]);
    if (!g.oom) core_route_op(&g, &(http_route_t){.method = "GET", .pattern = HTTP_OPENAPI_PATH});
    bool logins = def && def->auth.users_entity >= 0;
    if (!g.oom && auth) auth_schemas(&g, logins);
    const http_route_t *auth_routes = http_auth_route_table(&n_core);
    for (size_t i = 0; !g.oom && auth && i < n_core; i++)
        if (logins || !(auth_routes[i].flags & HTTP_ROUTE_RATE_AUTH))
            core_route_op(&g, &auth_routes[i]);
    if (def)
        for (size_t i = 0; !g.oom && i < http_app_routes_count(routes); i++)
            app_route_op(&g, http_app_route(routes, i));

    char *text = g.oom ? NULL : json_dumps(g.doc, JSON_INDENT(2));
    json_decref(g.doc);
    json_decref(g.op_ids);
    json_decref(g.shapes);
    http_openapi_t *doc = text ? malloc(sizeof *doc) : NULL;
    if (!doc) {
        free(text);
        return chr_fail(err, CHR_ENOMEM, "", "out of memory building the OpenAPI document");
    }
    doc->text = text;
    doc->len = strlen(text);
    *out = doc;
    return CHR_OK;
}

/* GET /openapi.json: the cached text, never copied (it outlives the
 * daemon). */
static void handle_openapi(http_req_t *req)
{
    const http_openapi_t *doc = req->match.route->data;
    struct MHD_Response *r =
        MHD_create_response_from_buffer(doc->len, (void *)doc->text, MHD_RESPMEM_PERSISTENT);
    if (r) MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, JSON_MEDIA);
    http_respond_mhd(req, MHD_HTTP_OK, r);
}

int http_openapi_add_route(http_router_t *r, const http_openapi_t *doc, chr_err_t *err)
{
    http_route_t route = {.method = "GET",
                          .pattern = HTTP_OPENAPI_PATH,
                          .handler = handle_openapi,
                          .flags = 0,
                          .data = doc};
    return http_router_add(r, &route, err);
}

const char *http_openapi_text(const http_openapi_t *doc, size_t *len)
{
    if (len) *len = doc->len;
    return doc->text;
}

void http_openapi_free(http_openapi_t *doc)
{
    if (!doc) return;
    free(doc->text);
    free(doc);
}
