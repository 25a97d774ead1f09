/* worker.c - the definition's consumers on a consumer runtime; see worker.h. */
#include "worker/worker.h"

#include <curl/curl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "util/log.h"
#include "worker/audit_log.h"
#include "worker/consumer.h"
#include "worker/consumer_store.h"
#include "worker/feed_source.h"
#include "worker/reaction.h"
#include "worker/webhook.h"

struct worker {
    consumer_runtime_t *rt;
    bool curl;
};

/* The worker of this process, for worker_poke: the HTTP handlers of the
 * same process reach it without the server wiring it through. */
static pthread_mutex_t running_lock = PTHREAD_MUTEX_INITIALIZER;
static worker_t *running;

void worker_poke(const char *name)
{
    pthread_mutex_lock(&running_lock);
    if (running) consumer_runtime_poke(running->rt, name);
    pthread_mutex_unlock(&running_lock);
}

size_t worker_consumers(const definition_t *def, worker_consumer_info_t *out, size_t max)
{
    size_t n = 0;
    if (!def) return 0;
    for (size_t i = 0; i < def->n_webhooks; i++, n++)
        if (n < max)
            out[n] = (worker_consumer_info_t){def->webhooks[i].name, "webhook",
                                              &def->webhooks[i].filter, NULL};
    if (def->audit_log) {
        if (n < max)
            out[n] = (worker_consumer_info_t){AUDIT_LOG_CONSUMER, "audit_log",
                                              &def->audit_log->filter, NULL};
        n++;
    }
    for (size_t i = 0; i < def->n_reactions; i++, n++) {
        const reaction_def_t *r = &def->reactions[i];
        if (n < max)
            out[n] = (worker_consumer_info_t){r->name, "reaction", &r->filter,
                                              r->feed >= 0 ? def->feeds[r->feed].name : NULL};
    }
    return n;
}

/* A consumer that cannot run: say why in the log and in its row. */
static void disable(store_t *s, const char *name, const char *why)
{
    log_at(LOG_WARN, "consumer not started", LOG_S("consumer", name), LOG_S("reason", why));
    chr_err_t err;
    chr_err_clear(&err);
    if (consumer_store_ensure(s, name, &err) == CHR_OK)
        consumer_store_set_error(s, name, why, &err);
}

/* The value of environment variable name, NULL when unset or empty. */
static const char *env(const char *name)
{
    const char *v = name ? getenv(name) : NULL;
    return v && *v ? v : NULL;
}

static int curl_init(worker_t *w, chr_err_t *err)
{
    if (!w->curl) {
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
            return chr_fail(err, CHR_ENOMEM, "", "libcurl failed to initialise");
        w->curl = true;
    }
    return CHR_OK;
}

static int add_webhook(worker_t *w, store_t *s, const webhook_def_t *def, const engine_t *eng,
                       chr_err_t *err)
{
    const char *url = def->url ? def->url : env(def->url_env);
    const char *secret = def->secret_env ? env(def->secret_env) : NULL;
    char why[256];
    if (!url) {
        snprintf(why, sizeof why, "environment variable %s (the webhook's URL) is not set",
                 def->url_env);
        disable(s, def->name, why);
        return CHR_OK;
    }
    if (strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0) {
        snprintf(why, sizeof why, "%s is not an http:// or https:// URL", def->url_env);
        disable(s, def->name, why);
        return CHR_OK;
    }
    if (def->secret_env && !secret) {
        snprintf(why, sizeof why, "environment variable %s (the webhook's secret) is not set",
                 def->secret_env);
        disable(s, def->name, why);
        return CHR_OK;
    }
    int rc = curl_init(w, err);
    if (rc) return rc;
    consumer_spec_t spec = {
        .name = def->name,
        .kind = "webhook",
        .filter = &def->filter,
        .max_attempts = (int)def->max_attempts,
        .backoff_ms = def->backoff_ms,
        .max_backoff_ms = def->max_backoff_ms,
    };
    rc = webhook_effect_new(def, url, secret, eng, &spec.effect, err);
    return rc ? rc : consumer_runtime_add(w->rt, &spec, err);
}

static int add_reaction(worker_t *w, store_t *s, const definition_t *d, const reaction_def_t *def,
                        engine_t *eng, chr_err_t *err)
{
    consumer_spec_t spec = {
        .name = def->name,
        .kind = "reaction",
        .filter = &def->filter,
        .max_attempts = (int)def->max_attempts,
        .backoff_ms = def->backoff_ms,
        .max_backoff_ms = def->max_backoff_ms,
    };
    if (def->feed >= 0) {
        const feed_def_t *f = &d->feeds[def->feed];
        const char *url = f->url ? f->url : env(f->url_env);
        const char *secret = f->secret_env ? env(f->secret_env) : NULL;
        char why[256];
        if (!url || (strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0)) {
            snprintf(why, sizeof why,
                     "environment variable %s (the URL of feed %s) is not set to an http:// or "
                     "https:// URL", f->url_env, f->name);
            disable(s, def->name, why);
            return CHR_OK;
        }
        if (f->secret_env && !secret) /* fine for an instance without API_SECRET */
            log_at(LOG_INFO, "feed followed without a secret", LOG_S("consumer", def->name),
                   LOG_S("feed", f->name), LOG_S("unset", f->secret_env));
        int rc = curl_init(w, err);
        if (!rc) rc = feed_source_new(f, url, secret, &spec.source, err);
        if (rc) return rc;
    }
    int rc = reaction_effect_new(def, eng, &spec.effect, err);
    if (rc) {
        if (spec.source.free) spec.source.free(spec.source.user);
        return rc;
    }
    return consumer_runtime_add(w->rt, &spec, err);
}

static int add_audit_log(worker_t *w, const audit_log_def_t *def, const engine_t *eng,
                         chr_err_t *err)
{
    const char *path = env(def->path_env);
    if (!path) path = def->path;
    consumer_spec_t spec = {
        .name = AUDIT_LOG_CONSUMER,
        .kind = "audit_log",
        .filter = &def->filter,
        .max_attempts = 10,
        .backoff_ms = 100,
        .max_backoff_ms = 10000,
    };
    int rc = audit_log_effect_new(def, path, eng, &spec.effect, err);
    if (rc == CHR_OK) log_at(LOG_INFO, "audit log", LOG_S("path", path));
    return rc ? rc : consumer_runtime_add(w->rt, &spec, err);
}

int worker_start(const config_t *cfg, store_t *s, const definition_t *def, engine_t *eng,
                 worker_t **out, chr_err_t *err)
{
    *out = NULL;
    if (!config_runs_worker(cfg) || !def ||
        (!def->n_webhooks && !def->audit_log && !(eng && def->n_reactions)))
        return CHR_OK;
    worker_t *w = calloc(1, sizeof *w);
    if (!w) return chr_fail(err, CHR_ENOMEM, "", "out of memory");
    int rc = consumer_runtime_new(s, &w->rt, err);
    for (size_t i = 0; rc == CHR_OK && i < def->n_webhooks; i++)
        rc = add_webhook(w, s, &def->webhooks[i], eng, err);
    if (rc == CHR_OK && def->audit_log) rc = add_audit_log(w, def->audit_log, eng, err);
    for (size_t i = 0; rc == CHR_OK && eng && i < def->n_reactions; i++)
        rc = add_reaction(w, s, def, &def->reactions[i], eng, err);
    if (rc == CHR_OK) rc = consumer_runtime_start(w->rt, err);
    if (rc) {
        worker_stop(w);
        return rc;
    }
    pthread_mutex_lock(&running_lock);
    running = w;
    pthread_mutex_unlock(&running_lock);
    *out = w;
    return CHR_OK;
}

void worker_stop(worker_t *w)
{
    if (!w) return;
    pthread_mutex_lock(&running_lock);
    if (running == w) running = NULL;
    pthread_mutex_unlock(&running_lock);
    consumer_runtime_free(w->rt);
    if (w->curl) curl_global_cleanup();
    free(w);
}
