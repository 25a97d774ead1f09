/*
 * event.h - the event model: what an event is, which names are valid, and
 * how an event looks as JSON. Pure: no storage, no transport.
 *
 * An event_t owns its strings (heap copies); event_free releases them.
 * data and metadata are JSON texts as received (validated, not rewritten).
 */
#ifndef CHRONICLE_CORE_EVENT_H
#define CHRONICLE_CORE_EVENT_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/error.h"
#include "core/utf8.h"
#include "core/uuid.h"

#define EVENT_NAME_MAX 255                 /* stream and type names, bytes */
#define EVENT_DEFAULT_MAX_BYTES (1u << 20) /* type + data + metadata */

typedef struct event {
    char id[UUID_STR_LEN + 1]; /* "" on input means: generate one */
    char *stream;
    char *type;
    char *data;        /* JSON text, never NULL once valid */
    char *metadata;    /* JSON object text or NULL */
    int64_t version;   /* 1-based within the stream; set by the store */
    int64_t position;  /* global order; set by the store */
    int64_t timestamp; /* microseconds since epoch; set by the store if 0 */
} event_t;

typedef struct event_list {
    event_t *items;
    size_t len, cap;
} event_list_t;

/* Checks a stream name: 1-255 bytes of valid UTF-8 with no control
 * characters (C0, DEL, C1). On failure fills err naming field. */
int event_check_name(const char *name, const char *field, chr_err_t *err);


/* Validates one event for appending: id empty or a UUID, type a valid name,
 * data valid JSON, metadata absent or a JSON object, and the total size within
 * max_bytes. field_prefix (e.g. "events[3]") prefixes field names in err. */
int event_validate(const event_t *ev, size_t max_bytes, const char *field_prefix,
                   chr_err_t *err);

/* Initialises ev with copies of the given strings (data/metadata may be NULL;
 * NULL data becomes "{}"). id may be NULL or "" to let the store generate one.
 * Returns CHR_OK, CHR_EINVAL when id is longer than a UUID (it is never
 * truncated), or CHR_ENOMEM. */
int event_init(event_t *ev, const char *id, const char *stream, const char *type,
               const char *data, const char *metadata);

/* Deep copy of src into dst (which must not own anything yet). */
int event_copy(event_t *dst, const event_t *src);

/* Frees the strings owned by ev and zeroes it. */
void event_free(event_t *ev);

/* Appends an event to the list, taking ownership of ev's strings (ev is
 * zeroed). Returns CHR_OK or CHR_ENOMEM (then ev still owns its strings). */
int event_list_push(event_list_t *list, event_t *ev);

/* Frees every event of the list and the array. */
void event_list_free(event_list_t *list);

/* The event as a JSON object {id, stream, type, version, position, data,
 * metadata, timestamp}: a new reference, NULL on allocation failure.
 * Absent metadata is {}; data/metadata that fail to parse (cannot happen for
 * stored events) are emitted as null. */
json_t *event_to_json(const event_t *ev);

#endif
