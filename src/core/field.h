/*
 * field.h - checking one JSON value against one field definition: type,
 * max_length, min/max, enum values, cron and e-mail syntax. Used for request
 * bodies, command inputs and definition defaults alike, so every place gives
 * the same message for the same mistake. Pure.
 */
#ifndef CHRONICLE_CORE_FIELD_H
#define CHRONICLE_CORE_FIELD_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/definition.h"

/* Type defaults of max_length (in characters) when a field sets none, and
 * the longest key in bytes. */
#define FIELD_STRING_MAX_LENGTH 255
#define FIELD_TEXT_MAX_LENGTH (1 << 20)
#define FIELD_EMAIL_MAX_LENGTH 254
#define FIELD_KEY_MAX_BYTES 255
#define FIELD_PASSWORD_MAX_LENGTH 128
#define FIELD_PASSWORD_MIN_LENGTH 8

/* Checks v (not NULL; JSON null is handled by the caller: it means "no
 * value") against f. Returns true when valid; otherwise writes a sentence
 * fragment into msg such as "must be a string of at most 255 characters" or
 * "must be one of: open, closed" (no field name: callers prefix it). ref
 * fields are checked for shape only (a valid key); existence is the
 * engine's job. */
bool field_check_value(const field_def_t *f, const json_t *v, char *msg, size_t msg_size);

/* Normalises a valid value for storage: timestamps become canonical RFC 3339
 * UTC with microseconds, e-mail domains are lower-cased, passwords become
 * an Argon2id hash string (a new salt each time: slow on purpose); other
 * values are returned as they are. Returns a new reference (NULL on allocation
 * failure). */
json_t *field_normalize(const field_def_t *f, const json_t *v);

/* True when s is a valid 5-field cron expression (minute hour day-of-month
 * month day-of-week; numbers, ranges a-b, lists a,b, steps * / n and a-b/n,
 * month and day names JAN-DEC / SUN-SAT, and the macros @hourly @daily
 * @weekly @monthly @yearly). */
bool cron_valid(const char *s);

/* True when s looks like an e-mail address: one '@', a non-empty local part
 * of printable ASCII without spaces, a domain of dot-separated labels. */
bool email_valid(const char *s);

/* The effective max_length of f in characters: f->max_length when set,
 * else the type default above (string, text, email); 0 = no limit. */
int64_t field_max_length(const field_def_t *f);

/* Looks up a field type by its name ("string", ...); false when unknown.
 * The inverse of field_type_name (definition.h). */
bool field_type_from_name(const char *name, field_type_t *out);

/* True when s is acceptable as an entity key: 1-255 bytes of UTF-8 with no
 * control characters and no '/'. */
bool key_valid(const char *s);

#endif
