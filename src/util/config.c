/* config.c - defaults, environment and flags from one option table; see config.h. */
#include "util/config.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

typedef enum opt_kind { OPT_STR, OPT_INT, OPT_SIZE, OPT_SYNC, OPT_LISTEN, OPT_CHOICE } opt_kind_t;

typedef struct opt {
    const char *flag; /* without leading "--" */
    const char *env;
    opt_kind_t kind;
    size_t offset;
    size_t size;     /* for strings */
    long long min, max;
    const char *choices; /* for OPT_CHOICE: "a|b|c" */
    bool secret;
    const char *help;
} opt_t;

#define F(field) offsetof(config_t, field), sizeof(((config_t *)0)->field)

static const opt_t options[] = {
    {"database", "DATABASE_URL", OPT_STR, F(database_url), 0, 0, NULL, false,
     "event store: sqlite:PATH (default sqlite:./chronicle.db)"},
    {"listen", NULL, OPT_LISTEN, 0, 0, 0, 0, NULL, false,
     "HOST:PORT to bind (default 127.0.0.1:8080)"},
    {"port", "PORT", OPT_INT, F(port), 0, 65535, NULL, false, "TCP port (0 = any free port)"},
    {"app", "APP", OPT_STR, F(app_path), 0, 0, NULL, false,
     "app definition JSON file to serve (see docs/app-definition.md)"},
    {"api-secret", "API_SECRET", OPT_STR, F(api_secrets), 0, 0, NULL, true,
     "bearer secret(s), comma-separated; unset = no auth"},
    {"log-level", "LOG_LEVEL", OPT_CHOICE, F(log_level), 0, 0, "debug|info|warn|error", false,
     "log level (default info)"},
    {"sqlite-synchronous", "SQLITE_SYNCHRONOUS", OPT_SYNC, F(sync), 0, 0, NULL, false,
     "full (default, durable) or normal (may lose recent commits on power loss)"},
    {"max-body-bytes", "MAX_BODY_BYTES", OPT_SIZE, F(max_body_bytes), 1024, 1LL << 30, NULL, false,
     "largest request body (default 1048576)"},
    {"max-event-bytes", "MAX_EVENT_BYTES", OPT_SIZE, F(max_event_bytes), 64, 1LL << 30, NULL,
     false, "largest event: type + data + metadata (default 1048576)"},
    {"max-connections", "MAX_CONNECTIONS", OPT_INT, F(max_connections), 1, 1000000, NULL, false,
     "concurrent connections (default 10000)"},
    {"connection-timeout", "CONNECTION_TIMEOUT", OPT_INT, F(connection_timeout), 1, 86400, NULL,
     false, "idle connection timeout in seconds (default 60)"},
    {"threads", "HTTP_THREADS", OPT_INT, F(threads), 0, 1024, NULL, false,
     "HTTP worker threads (default 32 per core, at most 256; writes wait for their commit without a thread)"},
    {"readers", "SQLITE_READERS", OPT_INT, F(readers), 0, 256, NULL, false,
     "SQLite reader connections (default 8)"},
    {"shutdown-grace", "SHUTDOWN_GRACE", OPT_INT, F(shutdown_grace), 0, 3600, NULL, false,
     "seconds to finish in-flight requests on SIGTERM (default 10)"},
    {"role", "ROLE", OPT_CHOICE, F(role), 0, 0, "api|worker|all", false,
     "work this instance does: api (HTTP API), worker (background roles: projector, "
     "consumers, schedules; each on one instance at a time), all (default)"},
};
#define N_OPTIONS (sizeof options / sizeof options[0])

static int set_value(config_t *cfg, const opt_t *o, const char *name, const char *v,
                     chr_err_t *err)
{
    char *base = (char *)cfg;
    switch (o->kind) {
    case OPT_STR:
        if (strlen(v) >= o->size)
            return chr_fail(err, CHR_EINVAL, name, "%s is longer than %zu bytes", name, o->size - 1);
        memcpy(base + o->offset, v, strlen(v) + 1);
        return CHR_OK;
    case OPT_CHOICE: {
        size_t len = strlen(v);
        const char *c = o->choices;
        while (c && *c) {
            const char *bar = strchr(c, '|');
            size_t clen = bar ? (size_t)(bar - c) : strlen(c);
            if (clen == len && strncmp(c, v, len) == 0) {
                memcpy(base + o->offset, v, len + 1);
                return CHR_OK;
            }
            c = bar ? bar + 1 : NULL;
        }
        return chr_fail(err, CHR_EINVAL, name, "%s must be one of %s, not \"%s\"", name,
                        o->choices, v);
    }
    case OPT_INT:
    case OPT_SIZE: {
        errno = 0;
        char *end;
        long long n = strtoll(v, &end, 10);
        if (errno || end == v || *end || n < o->min || n > o->max)
            return chr_fail(err, CHR_EINVAL, name, "%s must be an integer from %lld to %lld, not \"%s\"",
                            name, o->min, o->max, v);
        if (o->kind == OPT_INT)
            *(int *)(base + o->offset) = (int)n;
        else
            *(size_t *)(base + o->offset) = (size_t)n;
        return CHR_OK;
    }
    case OPT_SYNC:
        if (strcasecmp(v, "full") == 0) {
            cfg->sync = STORE_SYNC_FULL;
        } else if (strcasecmp(v, "normal") == 0) {
            cfg->sync = STORE_SYNC_NORMAL;
        } else {
            return chr_fail(err, CHR_EINVAL, name, "%s must be full or normal, not \"%s\"", name, v);
        }
        return CHR_OK;
    case OPT_LISTEN: {
        const char *colon = strrchr(v, ':');
        if (!colon || colon == v || (size_t)(colon - v) >= sizeof cfg->listen_host)
            return chr_fail(err, CHR_EINVAL, name, "%s must be HOST:PORT, not \"%s\"", name, v);
        errno = 0;
        char *end;
        long port = strtol(colon + 1, &end, 10);
        if (errno || end == colon + 1 || *end || port < 0 || port > 65535)
            return chr_fail(err, CHR_EINVAL, name, "%s has an invalid port in \"%s\"", name, v);
        memcpy(cfg->listen_host, v, (size_t)(colon - v));
        cfg->listen_host[colon - v] = '\0';
        cfg->port = (int)port;
        return CHR_OK;
    }
    }
    return CHR_EINVAL;
}

int config_from_env(config_t *cfg, chr_err_t *err)
{
    memset(cfg, 0, sizeof *cfg);
    snprintf(cfg->database_url, sizeof cfg->database_url, "sqlite:./chronicle.db");
    snprintf(cfg->listen_host, sizeof cfg->listen_host, "127.0.0.1");
    cfg->port = 8080;
    snprintf(cfg->log_level, sizeof cfg->log_level, "info");
    snprintf(cfg->role, sizeof cfg->role, "all");
    cfg->sync = STORE_SYNC_FULL;
    cfg->max_body_bytes = 1u << 20;
    cfg->max_event_bytes = EVENT_DEFAULT_MAX_BYTES;
    cfg->max_connections = 10000;
    cfg->connection_timeout = 60;
    cfg->shutdown_grace = 10;
    for (size_t i = 0; i < N_OPTIONS; i++) {
        const opt_t *o = &options[i];
        if (!o->env) continue;
        const char *v = getenv(o->env);
        if (!v || !*v) continue;
        int rc = set_value(cfg, o, o->env, v, err);
        if (rc) return rc;
    }
    return CHR_OK;
}

int config_apply_flag(config_t *cfg, int argc, char **argv, int *i, chr_err_t *err)
{
    const char *arg = argv[*i];
    if (strncmp(arg, "--", 2) != 0) return CHR_ENOTFOUND;
    const char *name = arg + 2, *eq = strchr(name, '=');
    size_t nlen = eq ? (size_t)(eq - name) : strlen(name);
    for (size_t k = 0; k < N_OPTIONS; k++) {
        const opt_t *o = &options[k];
        if (strlen(o->flag) != nlen || strncmp(o->flag, name, nlen) != 0) continue;
        char fname[64];
        snprintf(fname, sizeof fname, "--%s", o->flag);
        const char *v;
        if (eq) {
            v = eq + 1;
        } else if (*i + 1 < argc) {
            v = argv[++*i];
        } else {
            return chr_fail(err, CHR_EINVAL, fname, "%s needs a value", fname);
        }
        return set_value(cfg, o, fname, v, err);
    }
    return CHR_ENOTFOUND;
}

int config_validate(const config_t *cfg, chr_err_t *err)
{
    if (!cfg->listen_host[0])
        return chr_fail(err, CHR_EINVAL, "--listen", "the listen host must not be empty");
    if (cfg->max_event_bytes > cfg->max_body_bytes)
        return chr_fail(err, CHR_EINVAL, "MAX_EVENT_BYTES",
                        "MAX_EVENT_BYTES (%zu) exceeds MAX_BODY_BYTES (%zu): such events could never arrive",
                        cfg->max_event_bytes, cfg->max_body_bytes);
    return CHR_OK;
}

static void mask_secrets(const char *v, char *out, size_t size)
{
    /* Show how many secrets there are, never any of their characters. */
    if (!*v) {
        snprintf(out, size, "(unset)");
        return;
    }
    int n = 1;
    for (const char *p = v; *p; p++) n += *p == ',';
    snprintf(out, size, "****** (%d secret%s)", n, n == 1 ? "" : "s");
}

void config_print(const config_t *cfg, FILE *out)
{
    const char *base = (const char *)cfg;
    for (size_t i = 0; i < N_OPTIONS; i++) {
        const opt_t *o = &options[i];
        char val[600];
        switch (o->kind) {
        case OPT_STR:
        case OPT_CHOICE:
            if (o->secret)
                mask_secrets(base + o->offset, val, sizeof val);
            else
                snprintf(val, sizeof val, "%s", *(base + o->offset) ? base + o->offset : "(unset)");
            break;
        case OPT_INT: snprintf(val, sizeof val, "%d", *(const int *)(base + o->offset)); break;
        case OPT_SIZE: snprintf(val, sizeof val, "%zu", *(const size_t *)(base + o->offset)); break;
        case OPT_SYNC: snprintf(val, sizeof val, "%s", cfg->sync == STORE_SYNC_FULL ? "full" : "normal"); break;
        case OPT_LISTEN: snprintf(val, sizeof val, "%s:%d", cfg->listen_host, cfg->port); break;
        }
        fprintf(out, "%-20s %s\n", o->flag, val);
    }
}

void config_print_flags(FILE *out)
{
    for (size_t i = 0; i < N_OPTIONS; i++) {
        const opt_t *o = &options[i];
        char left[64];
        snprintf(left, sizeof left, "--%s%s%s", o->flag, o->env ? "  $" : "", o->env ? o->env : "");
        fprintf(out, "  %-44s %s\n", left, o->help);
    }
}

store_options_t config_store_options(const config_t *cfg)
{
    store_options_t o = {
        .max_event_bytes = cfg->max_event_bytes,
        .sync = cfg->sync,
        .readers = cfg->readers,
        .migrate = true,
    };
    return o;
}

bool config_serves_api(const config_t *cfg)
{
    return strcmp(cfg->role, "worker") != 0;
}

bool config_runs_worker(const config_t *cfg)
{
    return strcmp(cfg->role, "api") != 0;
}
