/*
 * problem.h - RFC 9457 problem responses (application/problem+json).
 *
 * One table (problem.c) holds every problem chronicle answers with: its
 * slug (the "type" is "/problems/<slug>"), HTTP status, title, and which
 * chr_status_t codes of core and store map to it. Everything that fails a
 * request goes through here, so statuses and titles cannot drift.
 * Body: {"type","title","status","detail","instance","request_id"} plus
 * "errors":[{"field","message"}] for validation and any extra members.
 */
#ifndef CHRONICLE_HTTP_PROBLEM_H
#define CHRONICLE_HTTP_PROBLEM_H

#include <jansson.h>
#include <stdbool.h>

#include "core/error.h"
#include "http/request.h"

typedef enum http_problem {
    HTTP_P_BAD_REQUEST,
    HTTP_P_MALFORMED_JSON,
    HTTP_P_UNAUTHORIZED,
    HTTP_P_FORBIDDEN,
    HTTP_P_NOT_FOUND,
    HTTP_P_METHOD_NOT_ALLOWED,
    HTTP_P_NOT_ACCEPTABLE,
    HTTP_P_WRONG_EXPECTED_VERSION,
    HTTP_P_CONFLICT,
    HTTP_P_PRECONDITION_FAILED,
    HTTP_P_PAYLOAD_TOO_LARGE,
    HTTP_P_UNSUPPORTED_MEDIA_TYPE,
    HTTP_P_VALIDATION,
    HTTP_P_RATE_LIMITED,
    HTTP_P_INTERNAL,
    HTTP_P_SERVICE_UNAVAILABLE,
    HTTP_P_COUNT
} http_problem_t;

/* The HTTP status and slug of a problem. */
unsigned http_problem_status(http_problem_t p);
const char *http_problem_slug(http_problem_t p);

/* Answers req with problem p. detail is printf-style (any bytes; invalid
 * UTF-8 is replaced). extra (may be NULL; stolen) is a JSON object whose
 * members are added to the body. */
void http_problem(http_req_t *req, http_problem_t p, json_t *extra, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Like http_problem for a validation-style failure of one field: adds
 * "errors":[{"field":field,"message":detail}]. */
void http_problem_field(http_req_t *req, http_problem_t p, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* The problem a core/store error maps to. from_params: the input at fault
 * came from the path or query, so invalid input is a 400 bad-request rather
 * than a 422. */
http_problem_t http_problem_for_err(const chr_err_t *err, bool from_params);

/* Answers with the problem err maps to, with err's message as detail and,
 * for invalid input, errors naming err->field. For expected-version
 * conflicts adds expected_version and actual_version: expected_as_sent
 * (borrowed; may be NULL) is echoed when given, else the mode is rendered
 * from err->conflict.expected ("any", "stream_exists", "no_stream" or the
 * version). */
void http_problem_err(http_req_t *req, const chr_err_t *err, bool from_params,
                      json_t *expected_as_sent);

#endif
