/*
 * webhook.c - the webhook effect; see webhook.h. One curl easy handle per
 * webhook, reused across deliveries so the connection to the receiver is
 * kept alive. Only the consumer's own thread touches it.
 */
#include "worker/webhook.h"

#include <curl/curl.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "util/log.h"
#include "worker/curl_opts.h"
#include "worker/event_body.h"

typedef struct webhook {
    char *url;
    char *secret; /* NULL: unsigned */
    long timeout_ms;
    const engine_t *eng;
    CURL *curl;
} webhook_t;

/* Discards the receiver's body. */
static size_t discard(char *ptr, size_t size, size_t n, void *user)
{
    (void)ptr;
    (void)user;
    return size * n;
}

/* Aborts a transfer once the runtime stops. */
static int progress(void *user, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un)
{
    (void)dt;
    (void)dn;
    (void)ut;
    (void)un;
    return atomic_load((const atomic_bool *)user) ? 1 : 0;
}

static struct curl_slist *add_header(struct curl_slist *list, const char *name, const char *value,
                                     bool *ok)
{
    char line[256];
    snprintf(line, sizeof line, "%s: %s", name, value);
    struct curl_slist *l = curl_slist_append(list, line);
    if (!l) *ok = false;
    return l ? l : list;
}

static int webhook_deliver(void *user, const event_t *ev, const consumer_delivery_t *d,
                           chr_err_t *err)
{
    webhook_t *w = user;
    if (!w->curl && !(w->curl = curl_easy_init()))
        return chr_fail(err, CHR_ENOMEM, "", "cannot create a curl handle");
    char *body = worker_event_body(w->eng, ev);
    if (!body) return chr_fail(err, CHR_ENOMEM, "", "out of memory");
    size_t len = strlen(body);
    char attempt[16];
    snprintf(attempt, sizeof attempt, "%d", d->attempt);
    bool ok = true;
    struct curl_slist *h = NULL;
    h = add_header(h, "Content-Type", "application/json", &ok);
    h = add_header(h, "User-Agent", "chronicle/" CHRONICLE_VERSION, &ok);
    h = add_header(h, "X-Chronicle-Delivery", d->delivery_id, &ok);
    h = add_header(h, "X-Chronicle-Attempt", attempt, &ok);
    h = add_header(h, "X-Chronicle-Consumer", d->consumer, &ok);
    h = add_header(h, "X-Chronicle-Event-Id", ev->id, &ok);
    h = add_header(h, "Expect", "", &ok); /* no 100-continue round trip */
    if (w->secret) {
        char sig[WEBHOOK_SIGNATURE_MAX];
        webhook_signature(w->secret, (int64_t)time(NULL), body, len, sig);
        h = add_header(h, "X-Chronicle-Signature", sig, &ok);
    }
    int rc = CHR_OK;
    if (!ok) {
        rc = chr_fail(err, CHR_ENOMEM, "", "out of memory");
        goto out;
    }
    CURL *c = w->curl;
    worker_curl_common(c, w->url, h, w->timeout_ms);
    curl_easy_setopt(c, CURLOPT_POST, 1L);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, discard);
    curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, progress);
    curl_easy_setopt(c, CURLOPT_XFERINFODATA, (void *)d->stop);
    CURLcode cc = curl_easy_perform(c);
    if (cc != CURLE_OK) {
        rc = chr_fail(err, CHR_EUNAVAILABLE, "", "POST %s: %s", w->url, curl_easy_strerror(cc));
        goto out;
    }
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    if (status < 200 || status > 299)
        rc = chr_fail(err, CHR_EUNAVAILABLE, "", "POST %s: the receiver answered %ld", w->url,
                      status);
out:
    curl_slist_free_all(h);
    free(body);
    return rc;
}

static void webhook_free(void *user)
{
    webhook_t *w = user;
    if (!w) return;
    if (w->curl) curl_easy_cleanup(w->curl);
    free(w->url);
    if (w->secret) {
        sodium_memzero(w->secret, strlen(w->secret));
        free(w->secret);
    }
    free(w);
}

int webhook_effect_new(const webhook_def_t *def, const char *url, const char *secret,
                       const engine_t *eng, consumer_effect_t *out, chr_err_t *err)
{
    webhook_t *w = calloc(1, sizeof *w);
    if (!w) return chr_fail(err, CHR_ENOMEM, "", "out of memory");
    w->url = strdup(url);
    w->secret = secret ? strdup(secret) : NULL;
    w->timeout_ms = (long)def->timeout_ms;
    w->eng = eng;
    if (!w->url || (secret && !w->secret)) {
        webhook_free(w);
        return chr_fail(err, CHR_ENOMEM, "", "out of memory");
    }
    *out = (consumer_effect_t){.deliver = webhook_deliver, .free = webhook_free, .user = w};
    return CHR_OK;
}
