/* feed_source.c - a remote feed as a consumer source; see feed_source.h.
 * Only the consumer's own thread touches a source. */
#include "worker/feed_source.h"

#include <curl/curl.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/timefmt.h"
#include "worker/curl_opts.h"

typedef struct feed_src {
    char *base;
    char *auth; /* "Authorization: Bearer ..." or NULL */
    long timeout_ms;
    int64_t poll_ms;
    int64_t last_read_us;
    CURL *curl;
} feed_src_t;

typedef struct body {
    char *p;
    size_t len;
    bool oom;
} body_t;

static size_t collect(char *ptr, size_t size, size_t n, void *user)
{
    body_t *b = user;
    size_t add = size * n;
    char *p = realloc(b->p, b->len + add + 1);
    if (!p) {
        b->oom = true;
        return 0;
    }
    memcpy(p + b->len, ptr, add);
    b->len += add;
    p[b->len] = '\0';
    b->p = p;
    return add;
}

/* GET base + path_query: the parsed JSON answer of a 200 in *out. */
static int get_json(feed_src_t *f, const char *path_query, json_t **out, chr_err_t *err)
{
    *out = NULL;
    if (!f->curl && !(f->curl = curl_easy_init()))
        return chr_fail(err, CHR_ENOMEM, "", "cannot create a curl handle");
    size_t n = strlen(f->base) + strlen(path_query) + 1;
    char *url = malloc(n);
    if (!url) return chr_fail(err, CHR_ENOMEM, "", "out of memory");
    snprintf(url, n, "%s%s", f->base, path_query);
    struct curl_slist *h = curl_slist_append(NULL, "Accept: application/json");
    struct curl_slist *h2 = h && f->auth ? curl_slist_append(h, f->auth) : h;
    body_t b = {0};
    int rc = CHR_OK;
    if (!h2) {
        rc = chr_fail(err, CHR_ENOMEM, "", "out of memory");
        goto out;
    }
    h = h2;
    CURL *c = f->curl;
    worker_curl_common(c, url, h, f->timeout_ms);
    curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    CURLcode cc = curl_easy_perform(c);
    if (b.oom) {
        rc = chr_fail(err, CHR_ENOMEM, "", "out of memory");
        goto out;
    }
    if (cc != CURLE_OK) {
        rc = chr_fail(err, CHR_EUNAVAILABLE, "", "GET %s: %s", url, curl_easy_strerror(cc));
        goto out;
    }
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    json_t *j = b.p ? json_loads(b.p, 0, NULL) : NULL;
    if (status != 200) {
        const char *detail = json_string_value(json_object_get(j, "detail"));
        rc = chr_fail(err, CHR_EUNAVAILABLE, "", "GET %s: answered %ld%s%s", url, status,
                      detail ? ": " : "", detail ? detail : "");
        json_decref(j);
    } else if (!json_is_object(j)) {
        rc = chr_fail(err, CHR_EUNAVAILABLE, "", "GET %s: the answer is not a JSON object", url);
        json_decref(j);
    } else {
        *out = j;
    }
out:
    curl_slist_free_all(h);
    free(b.p);
    free(url);
    return rc;
}

int feed_event_from_json(const json_t *j, event_t *ev, chr_err_t *err)
{
    const char *id = json_string_value(json_object_get(j, "id"));
    const char *stream = json_string_value(json_object_get(j, "stream"));
    const char *type = json_string_value(json_object_get(j, "type"));
    const json_t *pos = json_object_get(j, "position"), *data = json_object_get(j, "data");
    if (!id || !uuid_is_valid(id) || !stream || !type || !json_is_integer(pos) || !data)
        return chr_fail(err, CHR_EINVAL, "", "the feed sent an event without id, stream, type, "
                        "position or data");
    const json_t *meta = json_object_get(j, "metadata");
    char *data_s = json_dumps(data, JSON_COMPACT | JSON_ENCODE_ANY);
    char *meta_s = json_is_object(meta) ? json_dumps(meta, JSON_COMPACT) : NULL;
    int rc = data_s && (!json_is_object(meta) || meta_s)
                 ? event_init(ev, id, stream, type, data_s, meta_s)
                 : CHR_ENOMEM;
    free(data_s);
    free(meta_s);
    if (rc) return chr_fail(err, rc, "", rc == CHR_ENOMEM ? "out of memory" : "a bad event id");
    ev->position = json_integer_value(pos);
    ev->version = json_integer_value(json_object_get(j, "version"));
    const char *ts = json_string_value(json_object_get(j, "timestamp"));
    if (!ts || time_parse_rfc3339(ts, &ev->timestamp) != CHR_OK) ev->timestamp = 0;
    return CHR_OK;
}

static int feed_read(void *user, int64_t after, size_t limit, const sink_filter_t *flt,
                     event_list_t *out, int64_t *scanned, chr_err_t *err)
{
    feed_src_t *f = user;
    f->last_read_us = time_now_us();
    if (limit > 1000) limit = 1000; /* the feed's largest page */
    char q[4096];
    int n = snprintf(q, sizeof q, "/v1/events?after=%lld&limit=%zu", (long long)after, limit);
    for (size_t i = 0; flt && i < flt->n_types && n > 0 && (size_t)n < sizeof q; i++)
        n += snprintf(q + n, sizeof q - (size_t)n, "%s%s", i ? "," : "&types=", flt->types[i]);
    if (n < 0 || (size_t)n >= sizeof q) return chr_fail(err, CHR_EINVAL, "", "too many types");
    json_t *j;
    int rc = get_json(f, q, &j, err);
    if (rc) return rc;
    const json_t *events = json_object_get(j, "events");
    const json_t *next = json_object_get(j, "next_after");
    if (!json_is_array(events) || !json_is_integer(next)) {
        json_decref(j);
        return chr_fail(err, CHR_EUNAVAILABLE, "", "the feed's answer has no events or next_after");
    }
    size_t i;
    const json_t *e;
    json_array_foreach(events, i, e)
    {
        event_t ev = {0};
        if ((rc = feed_event_from_json(e, &ev, err)) || (rc = event_list_push(out, &ev))) {
            event_free(&ev);
            json_decref(j);
            return rc == CHR_ENOMEM ? chr_fail(err, rc, "", "out of memory") : rc;
        }
    }
    /* next_after, not head: the server moves it past what its read covered
     * only (a head read after the page could cover events it never saw). */
    int64_t last = out->len ? out->items[out->len - 1].position : after;
    int64_t n_after = json_integer_value(next);
    *scanned = n_after > last ? n_after : last;
    json_decref(j);
    return CHR_OK;
}

/* Caught up: CHR_OK once poll_ms passed since the last read. */
static int feed_wait(void *user, int64_t after, int timeout_ms)
{
    (void)after;
    feed_src_t *f = user;
    int64_t left_us = f->last_read_us + f->poll_ms * 1000 - time_now_us();
    if (left_us <= 0) return CHR_OK;
    int64_t us = left_us < (int64_t)timeout_ms * 1000 ? left_us : (int64_t)timeout_ms * 1000;
    struct timespec ts = {(time_t)(us / 1000000), (long)(us % 1000000) * 1000L};
    nanosleep(&ts, NULL);
    return us == left_us ? CHR_OK : CHR_ENOTFOUND;
}

/* A dead letter to retry: the page of one event just before its position. */
static int feed_get(void *user, const char *id, int64_t position, event_t *out, chr_err_t *err)
{
    event_list_t l = {0};
    int64_t scanned;
    int rc = feed_read(user, position - 1, 1, NULL, &l, &scanned, err);
    if (rc == CHR_OK && (l.len != 1 || strcmp(l.items[0].id, id) != 0))
        rc = chr_fail(err, CHR_ENOTFOUND, "", "event %s is no longer at position %lld of the feed",
                      id, (long long)position);
    if (rc == CHR_OK) {
        *out = l.items[0];
        l.len = 0;
    }
    event_list_free(&l);
    return rc;
}

static void feed_free(void *user)
{
    feed_src_t *f = user;
    if (!f) return;
    if (f->curl) curl_easy_cleanup(f->curl);
    free(f->base);
    if (f->auth) {
        sodium_memzero(f->auth, strlen(f->auth));
        free(f->auth);
    }
    free(f);
}

int feed_source_new(const feed_def_t *def, const char *url, const char *secret,
                    consumer_source_t *out, chr_err_t *err)
{
    feed_src_t *f = calloc(1, sizeof *f);
    if (!f) return chr_fail(err, CHR_ENOMEM, "", "out of memory");
    f->timeout_ms = (long)def->timeout_ms;
    f->poll_ms = def->poll_ms;
    f->base = strdup(url);
    if (f->base) {
        size_t n = strlen(f->base);
        while (n > 0 && f->base[n - 1] == '/')
            f->base[--n] = '\0';
    }
    if (secret) {
        size_t n = strlen(secret) + sizeof "Authorization: Bearer ";
        if ((f->auth = malloc(n))) snprintf(f->auth, n, "Authorization: Bearer %s", secret);
    }
    if (!f->base || (secret && !f->auth)) {
        feed_free(f);
        return chr_fail(err, CHR_ENOMEM, "", "out of memory");
    }
    *out = (consumer_source_t){
        .read = feed_read, .wait = feed_wait, .get = feed_get, .free = feed_free, .user = f};
    return CHR_OK;
}
