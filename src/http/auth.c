/* auth.c - constant-time bearer secret checks; see auth.h. */
#include "http/auth.h"

#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define DIGEST_LEN crypto_generichash_BYTES

struct http_auth {
    unsigned char key[crypto_generichash_KEYBYTES];
    size_t n;
    unsigned char (*digests)[DIGEST_LEN];
};

static void digest(const http_auth_t *a, const char *s, size_t n, unsigned char out[DIGEST_LEN])
{
    crypto_generichash(out, DIGEST_LEN, (const unsigned char *)s, n, a->key, sizeof a->key);
}

static bool blank(char c)
{
    return c == ' ' || c == '\t';
}

int http_auth_new(const char *csv, http_auth_t **out, chr_err_t *err)
{
    *out = NULL;
    if (!csv) return CHR_OK;
    size_t max = 1;
    for (const char *p = csv; *p; p++)
        max += *p == ',';
    http_auth_t *a = calloc(1, sizeof *a);
    if (!a || !(a->digests = calloc(max, sizeof *a->digests))) {
        free(a);
        return chr_fail(err, CHR_ENOMEM, "API_SECRET", "out of memory");
    }
    randombytes_buf(a->key, sizeof a->key);
    const char *p = csv;
    while (*p) {
        const char *comma = strchr(p, ',');
        const char *end = comma ? comma : p + strlen(p);
        const char *s = p, *e = end;
        while (s < e && blank(*s))
            s++;
        while (e > s && blank(e[-1]))
            e--;
        if (e > s) digest(a, s, (size_t)(e - s), a->digests[a->n++]);
        p = comma ? comma + 1 : end;
    }
    if (a->n == 0) {
        http_auth_free(a);
        return CHR_OK;
    }
    *out = a;
    return CHR_OK;
}

void http_auth_free(http_auth_t *a)
{
    if (!a) return;
    sodium_memzero(a->digests, a->n * sizeof *a->digests);
    sodium_memzero(a->key, sizeof a->key);
    free(a->digests);
    free(a);
}

bool http_auth_check(const http_auth_t *a, const char *h)
{
    if (!a) return true;
    if (!h) return false;
    while (blank(*h))
        h++;
    if (strncasecmp(h, "Bearer", 6) != 0 || !blank(h[6])) return false;
    const char *tok = h + 7;
    while (blank(*tok))
        tok++;
    size_t n = strlen(tok);
    while (n > 0 && blank(tok[n - 1]))
        n--;
    if (n == 0) return false;
    unsigned char d[DIGEST_LEN];
    digest(a, tok, n, d);
    int ok = 0;
    for (size_t i = 0; i < a->n; i++)
        ok |= sodium_memcmp(d, a->digests[i], DIGEST_LEN) == 0;
    sodium_memzero(d, sizeof d);
    return ok != 0;
}
