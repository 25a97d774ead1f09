/*
 * uri.h - percent-encoding of URI paths and query strings, and the checks a
 * decoded path parameter must pass. Pure functions, no allocation.
 * Not here: matching routes (router.c).
 */
#ifndef CHRONICLE_HTTP_URI_H
#define CHRONICLE_HTTP_URI_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "http/buf.h"

/* Decodes the n bytes at s into out (room for n + 1 bytes; out may equal
 * s). "%XX" becomes the byte 0xXX; when plus_is_space, '+' becomes ' '
 * (query strings). Returns the decoded length (out is NUL-terminated, but
 * may contain NULs from %00), or -1 when a '%' is not followed by two hex
 * digits. */
ssize_t http_pct_decode(const char *s, size_t n, char *out, bool plus_is_space);

#define HTTP_PARAM_MAX 255 /* bytes of a decoded path parameter */

/* Checks a decoded path segment used as a parameter: 1..HTTP_PARAM_MAX bytes of
 * well-formed UTF-8 without control characters (C0, DEL, C1; this includes
 * NUL), and not "." or "..". Returns NULL when fine, else a static phrase
 * saying what is wrong ("contains a control character", ...). */
const char *http_param_problem(const char *s, size_t n);

/* Appends s percent-encoded for use as one path segment: everything except
 * RFC 3986 unreserved characters is escaped (so '/' becomes %2F). */
void http_buf_pct_encode(http_buf_t *b, const char *s);

#endif
