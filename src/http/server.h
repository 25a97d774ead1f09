/*
 * server.h - `chronicle serve`: the HTTP server over the event store.
 */
#ifndef CHRONICLE_HTTP_SERVER_H
#define CHRONICLE_HTTP_SERVER_H

#include "util/config.h"

/* Runs the server with cfg until SIGTERM/SIGINT: opens the store, listens,
 * serves, drains, closes. Returns the process exit code (0 after a clean
 * shutdown, 1 when it could not start). */
int http_serve_main(const config_t *cfg);

#endif
