/*
 * buf.h - a growable byte buffer for building response bodies, with JSON
 * text helpers (escaped strings, integers).
 *
 * Allocation failure is sticky: after the first failed growth every append
 * is a no-op and b->oom stays true, so builders append freely and check
 * once at the end. Not here: parsing, or anything that needs a full JSON
 * value model (use jansson for that).
 */
#ifndef CHRONICLE_HTTP_BUF_H
#define CHRONICLE_HTTP_BUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct http_buf {
    char *data; /* NUL-terminated whenever len > 0 and !oom */
    size_t len, cap;
    bool oom;
} http_buf_t;

#define HTTP_BUF_INIT                                                                              \
    {                                                                                              \
        NULL, 0, 0, false                                                                          \
    }

/* Ensures room for extra more bytes (plus a NUL). Returns false on OOM. */
bool http_buf_reserve(http_buf_t *b, size_t extra);

void http_buf_append(http_buf_t *b, const void *p, size_t n);
void http_buf_puts(http_buf_t *b, const char *s);
void http_buf_putc(http_buf_t *b, char c);
void http_buf_i64(http_buf_t *b, int64_t v);
/* Appends us (microseconds since the epoch) as RFC 3339 UTC with
 * microseconds, unquoted: 2026-11-22T02:14:29.123456Z. */
void http_buf_timestamp(http_buf_t *b, int64_t us);
void http_buf_printf(http_buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Appends the n bytes at s as a quoted JSON string. Control characters,
 * quote and backslash are escaped; bytes that are not well-formed UTF-8
 * become U+FFFD, so the output is always valid JSON. */
void http_buf_json_str(http_buf_t *b, const char *s, size_t n);

/* Appends the n bytes at s unescaped, with every byte that is not part of
 * well-formed UTF-8 replaced by U+FFFD: makes arbitrary input safe to hand
 * to jansson, which rejects invalid UTF-8. */
void http_buf_utf8(http_buf_t *b, const char *s, size_t n);

/* Hands the contents to the caller: returns a heap string (caller frees;
 * never NULL unless OOM) and sets *len (may be NULL). b is reset. */
char *http_buf_steal(http_buf_t *b, size_t *len);

/* Drops the contents but keeps the allocation for reuse. */
void http_buf_clear(http_buf_t *b);

/* Frees the allocation; b may be reused after. */
void http_buf_free(http_buf_t *b);

#endif
