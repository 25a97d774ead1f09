/* event_json.c - events as JSON text; see event_json.h. */
#include "http/event_json.h"

#include <stdlib.h>
#include <string.h>

/* Appends stored JSON text; fallback when absent. Text with a line break
 * (only possible as insignificant whitespace) is re-encoded compactly. */
static void raw_json(http_buf_t *b, const char *text, const char *fallback, size_t flags)
{
    if (!text) {
        http_buf_puts(b, fallback);
        return;
    }
    size_t n = strlen(text);
    if (n == 0) {
        http_buf_puts(b, fallback);
        return;
    }
    if (!memchr(text, '\n', n) && !memchr(text, '\r', n)) {
        http_buf_append(b, text, n);
        return;
    }
    json_t *j = json_loadb(text, n, flags, NULL);
    char *compact = j ? json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    json_decref(j);
    http_buf_puts(b, compact ? compact : fallback);
    free(compact);
}

/* Set once at start when an app is served, read-only afterwards. */
static const engine_t *redactor;

void http_event_json_redact_with(const engine_t *eng)
{
    redactor = eng;
}

void http_event_json(http_buf_t *b, const event_t *ev)
{
    char *redacted = redactor ? engine_redacted_data(redactor, ev) : NULL;
    const char *stream = ev->stream ? ev->stream : "";
    const char *type = ev->type ? ev->type : "";
    http_buf_reserve(b, 160 + strlen(stream) + strlen(type) + (ev->data ? strlen(ev->data) : 4) +
                            (ev->metadata ? strlen(ev->metadata) : 2));
    http_buf_puts(b, "{\"id\":");
    http_buf_json_str(b, ev->id, strlen(ev->id));
    http_buf_puts(b, ",\"stream\":");
    http_buf_json_str(b, stream, strlen(stream));
    http_buf_puts(b, ",\"type\":");
    http_buf_json_str(b, type, strlen(type));
    http_buf_puts(b, ",\"version\":");
    http_buf_i64(b, ev->version);
    http_buf_puts(b, ",\"position\":");
    http_buf_i64(b, ev->position);
    http_buf_puts(b, ",\"data\":");
    raw_json(b, redacted ? redacted : ev->data, "null", JSON_DECODE_ANY);
    free(redacted);
    http_buf_puts(b, ",\"metadata\":");
    raw_json(b, ev->metadata, "{}", 0);
    http_buf_puts(b, ",\"timestamp\":\"");
    http_buf_timestamp(b, ev->timestamp);
    http_buf_puts(b, "\"}");
}

void http_event_list_json(http_buf_t *b, const event_list_t *list)
{
    http_buf_putc(b, '[');
    for (size_t i = 0; i < list->len; i++) {
        if (i) http_buf_putc(b, ',');
        http_event_json(b, &list->items[i]);
    }
    http_buf_putc(b, ']');
}
