/*
 * config.h - the effective configuration: defaults, then environment, then
 * command-line flags (flags win). One table of options drives parsing,
 * --help text and `chronicle check-config` output, so they cannot drift.
 */
#ifndef CHRONICLE_UTIL_CONFIG_H
#define CHRONICLE_UTIL_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "core/error.h"
#include "store/store.h"

typedef struct config {
    char database_url[512]; /* DATABASE_URL / --database */
    char listen_host[256];  /* from --listen HOST:PORT */
    int port;               /* PORT / --port / --listen */
    char app_path[1024];    /* APP / --app: the app definition to serve */
    char api_secrets[2048]; /* API_SECRET / --api-secret: comma-separated */
    char log_level[16];     /* LOG_LEVEL / --log-level: debug|info|warn|error */
    store_sync_t sync;      /* SQLITE_SYNCHRONOUS / --sqlite-synchronous: full|normal */
    size_t max_body_bytes;  /* MAX_BODY_BYTES / --max-body-bytes */
    size_t max_event_bytes; /* MAX_EVENT_BYTES / --max-event-bytes */
    int max_connections;    /* MAX_CONNECTIONS / --max-connections */
    int connection_timeout; /* CONNECTION_TIMEOUT / --connection-timeout (seconds) */
    int threads;            /* HTTP_THREADS / --threads: 0 = one per core */
    int readers;            /* SQLITE_READERS / --readers: 0 = default */
    int shutdown_grace;     /* SHUTDOWN_GRACE / --shutdown-grace (seconds) */
    char role[16];          /* ROLE / --role: api|worker|all (default all) */
} config_t;

/* Fills cfg with defaults, then the environment. Returns CHR_OK or
 * CHR_EINVAL naming the variable and the problem in err. */
int config_from_env(config_t *cfg, chr_err_t *err);

/* Whether this instance serves the API (role api or all) / runs the
 * background roles - projector, consumers, schedules - (role worker or
 * all). A background role still runs on one instance at a time among those
 * sharing a database: each takes a store lease (store.h) first. */
bool config_serves_api(const config_t *cfg);
bool config_runs_worker(const config_t *cfg);

/* Applies one flag. argv[*i] is the flag ("--port" or "--port=8080"); a
 * separate value is taken from argv[*i + 1] and *i advanced. Returns CHR_OK,
 * CHR_EINVAL for a bad value, or CHR_ENOTFOUND when the flag is not a config
 * flag (the caller then reports it as unknown). */
int config_apply_flag(config_t *cfg, int argc, char **argv, int *i, chr_err_t *err);

/* Checks cross-field consistency (e.g. the listen address). */
int config_validate(const config_t *cfg, chr_err_t *err);

/* Writes every setting as "name = value  (source)" with secrets masked. */
void config_print(const config_t *cfg, FILE *out);

/* Writes the flag list for --help. */
void config_print_flags(FILE *out);

/* Store options derived from cfg. */
store_options_t config_store_options(const config_t *cfg);

#endif
