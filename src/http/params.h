/*
 * params.h - typed query and header parameters for handlers. Each helper
 * either yields a checked value or answers the request with a 400
 * bad-request problem naming the parameter, so handlers read:
 *     if (http_param_int(req, "limit", 100, 1, 1000, &limit)) return;
 * Not here: path parameters (the router decodes and checks those).
 */
#ifndef CHRONICLE_HTTP_PARAMS_H
#define CHRONICLE_HTTP_PARAMS_H

#include <stddef.h>
#include <jansson.h>
#include <stdint.h>

#include "http/request.h"

/* Parses a decimal integer (digits only, optional leading '-'; no blanks,
 * no overflow). Returns 0 and sets *out, or -1. */
int http_parse_i64(const char *s, int64_t *out);

/* Query parameter name as an integer in [min, max]; *out = def when
 * absent. Returns 0, or -1 after answering 400. */
int http_param_int(http_req_t *req, const char *name, int64_t def, int64_t min, int64_t max,
                   int64_t *out);

/* Query parameter name as one of the words in choices (NULL-terminated);
 * *index = def when absent. Returns 0, or -1 after answering 400. */
int http_param_choice(http_req_t *req, const char *name, const char *const *choices, int def,
                      int *index);

/* Query parameter name as a comma-separated list of event/stream names
 * (each checked with event_check_name), at most max items. *items is an
 * arena array of arena strings, *n 0 when absent. Returns 0, or -1 after
 * answering 400. */
int http_param_names(http_req_t *req, const char *name, size_t max, const char ***items, size_t *n);

/* The request body as a JSON object: *out is a new reference, or NULL for
 * an empty body when !required. Returns false after answering 400
 * malformed-json (empty when required, or not JSON) or 422 (not an
 * object). */
bool http_body_object(http_req_t *req, json_t **out, bool required);

#endif
