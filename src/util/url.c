/*
 * url.c - see url.h. Only the shape of a URI is read (RFC 3986: the
 * authority runs from "//" to the first '/', '?' or '#'; its user
 * information ends at its last '@'), plus libpq's "password" parameter.
 */
#include "util/url.h"

#include <stdbool.h>
#include <string.h>

#define MASK "****"
#define SCHEME_CHARS "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+-."

/* Appends n bytes of s to out[*o..size), keeping room for the terminator. */
static void put(char *out, size_t size, size_t *o, const char *s, size_t n)
{
    while (n-- && *o + 1 < size)
        out[(*o)++] = *s++;
}

/* True when the query parameter starting at p is named "password". */
static bool password_param(const char *p)
{
    return strncmp(p, "password=", 9) == 0;
}

char *url_redact(const char *url, char *out, size_t size)
{
    if (!size) return out;
    size_t o = 0;
    const char *p = url;
    const char *scheme_end = strstr(url, "://");
    if (scheme_end && scheme_end > url && strspn(url, SCHEME_CHARS) == (size_t)(scheme_end - url)) {
        const char *auth = scheme_end + 3;
        size_t auth_len = strcspn(auth, "/?#");
        const char *at = NULL;
        for (const char *q = auth; q < auth + auth_len; q++)
            if (*q == '@') at = q;
        put(out, size, &o, url, (size_t)(auth - url));
        p = auth;
        if (at) {
            const char *colon = memchr(auth, ':', (size_t)(at - auth));
            if (colon) {
                put(out, size, &o, auth, (size_t)(colon + 1 - auth));
                put(out, size, &o, MASK, strlen(MASK));
                p = at;
            }
        }
    }
    /* The rest; in the query, every password= value is masked. */
    const char *query = strchr(p, '?');
    const char *frag = strchr(p, '#');
    if (query && frag && frag < query) query = NULL;
    if (!query) {
        put(out, size, &o, p, strlen(p));
    } else {
        put(out, size, &o, p, (size_t)(query + 1 - p));
        p = query + 1;
        while (*p) {
            size_t len = strcspn(p, "&#");
            if (password_param(p)) {
                put(out, size, &o, p, 9);
                put(out, size, &o, MASK, strlen(MASK));
            } else {
                put(out, size, &o, p, len);
            }
            p += len;
            if (*p == '#') {
                put(out, size, &o, p, strlen(p));
                break;
            }
            if (*p == '&') put(out, size, &o, p++, 1);
        }
    }
    out[o] = '\0';
    return out;
}
