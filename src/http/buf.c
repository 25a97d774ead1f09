/* buf.c - growable byte buffer and JSON text helpers; see buf.h. */
#include "http/buf.h"

#include "core/utf8.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/timefmt.h"

bool http_buf_reserve(http_buf_t *b, size_t extra)
{
    if (b->oom) return false;
    if (extra >= SIZE_MAX / 2 - b->len) {
        b->oom = true;
        return false;
    }
    size_t need = b->len + extra + 1;
    if (need <= b->cap) return true;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need)
        cap *= 2;
    char *d = realloc(b->data, cap);
    if (!d) {
        b->oom = true;
        return false;
    }
    b->data = d;
    b->cap = cap;
    return true;
}

void http_buf_append(http_buf_t *b, const void *p, size_t n)
{
    if (!http_buf_reserve(b, n)) return;
    if (n) memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
}

void http_buf_puts(http_buf_t *b, const char *s)
{
    http_buf_append(b, s, strlen(s));
}

void http_buf_putc(http_buf_t *b, char c)
{
    if (!http_buf_reserve(b, 1)) return;
    b->data[b->len++] = c;
    b->data[b->len] = '\0';
}

void http_buf_i64(http_buf_t *b, int64_t v)
{
    /* Hand-rolled: printf's machinery showed up in profiles of GET pages. */
    char tmp[24];
    size_t i = sizeof tmp;
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    do {
        tmp[--i] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0) tmp[--i] = '-';
    http_buf_append(b, tmp + i, sizeof tmp - i);
}

void http_buf_timestamp(http_buf_t *b, int64_t us)
{
    char ts[TIMEFMT_LEN + 1];
    time_format_us(us, ts);
    http_buf_append(b, ts, TIMEFMT_LEN);
}

void http_buf_printf(http_buf_t *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char tmp[256];
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if ((size_t)n < sizeof tmp) {
        http_buf_append(b, tmp, (size_t)n);
        return;
    }
    if (!http_buf_reserve(b, (size_t)n)) return;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}


void http_buf_json_str(http_buf_t *b, const char *str, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *s = (const unsigned char *)str;
    /* Worst case 6 output bytes per input byte, plus quotes. */
    if (!http_buf_reserve(b, n + 2)) return;
    http_buf_putc(b, '"');
    size_t i = 0;
    while (i < n) {
        size_t start = i;
        while (i < n && s[i] >= 0x20 && s[i] < 0x7f && s[i] != '"' && s[i] != '\\')
            i++;
        if (i > start) http_buf_append(b, s + start, i - start);
        if (i >= n) break;
        unsigned c = s[i];
        if (c == '"' || c == '\\') {
            char esc[2] = {'\\', (char)c};
            http_buf_append(b, esc, 2);
            i++;
        } else if (c == '\n') {
            http_buf_append(b, "\\n", 2);
            i++;
        } else if (c == '\r') {
            http_buf_append(b, "\\r", 2);
            i++;
        } else if (c == '\t') {
            http_buf_append(b, "\\t", 2);
            i++;
        } else if (c < 0x20 || c == 0x7f) {
            char esc[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
            http_buf_append(b, esc, 6);
            i++;
        } else {
            size_t len = utf8_seq_len(s + i, n - i);
            if (len) {
                http_buf_append(b, s + i, len);
                i += len;
            } else {
                http_buf_append(b, "\\ufffd", 6);
                i++;
            }
        }
    }
    http_buf_putc(b, '"');
}

void http_buf_utf8(http_buf_t *b, const char *str, size_t n)
{
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0;
    while (i < n) {
        size_t start = i;
        while (i < n && s[i] < 0x80)
            i++;
        if (i > start) http_buf_append(b, s + start, i - start);
        if (i >= n) break;
        size_t len = utf8_seq_len(s + i, n - i);
        if (len) {
            http_buf_append(b, s + i, len);
            i += len;
        } else {
            http_buf_append(b, "\xef\xbf\xbd", 3);
            i++;
        }
    }
}

char *http_buf_steal(http_buf_t *b, size_t *len)
{
    if (b->oom) {
        http_buf_free(b);
        if (len) *len = 0;
        return NULL;
    }
    if (!b->data && !http_buf_reserve(b, 0)) return NULL;
    if (b->len == 0) b->data[0] = '\0';
    char *d = b->data;
    if (len) *len = b->len;
    b->data = NULL;
    b->len = b->cap = 0;
    return d;
}

void http_buf_clear(http_buf_t *b)
{
    b->len = 0;
    b->oom = false;
    if (b->data) b->data[0] = '\0';
}

void http_buf_free(http_buf_t *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
    b->oom = false;
}
