/* event.c - event validation, ownership and JSON encoding; see event.h. */
#include "core/event.h"

#include <stdlib.h>
#include <string.h>

#include "core/timefmt.h"
#include "core/utf8.h"


int event_check_name(const char *name, const char *field, chr_err_t *err)
{
    if (!name || !*name) return chr_fail(err, CHR_EINVAL, field, "%s must not be empty", field);
    size_t len = strlen(name);
    if (len > EVENT_NAME_MAX)
        return chr_fail(err, CHR_EINVAL, field, "%s is %zu bytes; at most %d are allowed", field,
                        len, EVENT_NAME_MAX);
    if (!utf8_valid(name, len))
        return chr_fail(err, CHR_EINVAL, field, "%s is not valid UTF-8", field);
    const unsigned char *s = (const unsigned char *)name;
    for (size_t i = 0; i < len; i++) {
        /* C0 controls and DEL; C1 controls are U+0080-U+009F, encoded C2 80-9F */
        if (s[i] < 0x20 || s[i] == 0x7f || (s[i] == 0xc2 && i + 1 < len && s[i + 1] <= 0x9f))
            return chr_fail(err, CHR_EINVAL, field,
                            "%s contains a control character at byte %zu", field, i);
    }
    return CHR_OK;
}

int event_validate(const event_t *ev, size_t max_bytes, const char *prefix, chr_err_t *err)
{
    char f[96];
    if (ev->id[0] && !uuid_is_valid(ev->id)) {
        snprintf(f, sizeof f, "%sid", prefix);
        return chr_fail(err, CHR_EINVAL, f, "%s must be a UUID (8-4-4-4-12 hex digits)", f);
    }
    snprintf(f, sizeof f, "%stype", prefix);
    int rc = event_check_name(ev->type, f, err);
    if (rc) return rc;

    size_t dlen = ev->data ? strlen(ev->data) : 0;
    size_t mlen = ev->metadata ? strlen(ev->metadata) : 0;
    size_t total = dlen + mlen + strlen(ev->type);
    if (total > max_bytes) {
        snprintf(f, sizeof f, "%sdata", prefix);
        return chr_fail(err, CHR_ETOOBIG, f, "event is %zu bytes; the limit is %zu", total,
                        max_bytes);
    }
    json_error_t je;
    snprintf(f, sizeof f, "%sdata", prefix);
    if (!ev->data) return chr_fail(err, CHR_EINVAL, f, "%s is required", f);
    json_t *j = json_loadb(ev->data, dlen, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &je);
    if (!j) return chr_fail(err, CHR_EINVAL, f, "%s is not valid JSON: %s", f, je.text);
    json_decref(j);
    if (ev->metadata) {
        snprintf(f, sizeof f, "%smetadata", prefix);
        j = json_loadb(ev->metadata, mlen, JSON_REJECT_DUPLICATES, &je);
        if (!j) return chr_fail(err, CHR_EINVAL, f, "%s is not valid JSON: %s", f, je.text);
        bool object = json_is_object(j);
        json_decref(j);
        if (!object) return chr_fail(err, CHR_EINVAL, f, "%s must be a JSON object", f);
    }
    return CHR_OK;
}

static char *dup_or_null(const char *s, int *oom)
{
    if (!s) return NULL;
    char *d = strdup(s);
    if (!d) *oom = 1;
    return d;
}

int event_init(event_t *ev, const char *id, const char *stream, const char *type,
               const char *data, const char *metadata)
{
    memset(ev, 0, sizeof *ev);
    if (id && strlen(id) > UUID_STR_LEN) return CHR_EINVAL; /* never truncate into a valid id */
    if (id) snprintf(ev->id, sizeof ev->id, "%s", id);
    int oom = 0;
    ev->stream = dup_or_null(stream, &oom);
    ev->type = dup_or_null(type, &oom);
    ev->data = dup_or_null(data ? data : "{}", &oom);
    ev->metadata = dup_or_null(metadata, &oom);
    if (oom) {
        event_free(ev);
        return CHR_ENOMEM;
    }
    return CHR_OK;
}

int event_copy(event_t *dst, const event_t *src)
{
    int rc = event_init(dst, src->id, src->stream, src->type, src->data, src->metadata);
    if (rc) return rc;
    dst->version = src->version;
    dst->position = src->position;
    dst->timestamp = src->timestamp;
    return CHR_OK;
}

void event_free(event_t *ev)
{
    if (!ev) return;
    free(ev->stream);
    free(ev->type);
    free(ev->data);
    free(ev->metadata);
    memset(ev, 0, sizeof *ev);
}

int event_list_push(event_list_t *list, event_t *ev)
{
    if (list->len == list->cap) {
        size_t cap = list->cap ? list->cap * 2 : 16;
        event_t *items = realloc(list->items, cap * sizeof *items);
        if (!items) return CHR_ENOMEM;
        list->items = items;
        list->cap = cap;
    }
    list->items[list->len++] = *ev;
    memset(ev, 0, sizeof *ev);
    return CHR_OK;
}

void event_list_free(event_list_t *list)
{
    for (size_t i = 0; i < list->len; i++) event_free(&list->items[i]);
    free(list->items);
    memset(list, 0, sizeof *list);
}

json_t *event_to_json(const event_t *ev)
{
    char ts[TIMEFMT_LEN + 1];
    time_format_us(ev->timestamp, ts);
    json_t *data = ev->data ? json_loads(ev->data, JSON_DECODE_ANY, NULL) : NULL;
    json_t *meta = ev->metadata ? json_loads(ev->metadata, 0, NULL) : json_object();
    return json_pack("{s:s, s:s, s:s, s:I, s:I, s:o, s:o, s:s}", "id", ev->id, "stream",
                     ev->stream ? ev->stream : "", "type", ev->type ? ev->type : "", "version",
                     (json_int_t)ev->version, "position", (json_int_t)ev->position, "data",
                     data ? data : json_null(), "metadata", meta ? meta : json_null(),
                     "timestamp", ts);
}
