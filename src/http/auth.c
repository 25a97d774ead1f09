/* auth.c - bearer credentials: secrets, named keys, JWTs; see auth.h. */
#include "http/auth.h"

#include <errno.h>
#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "auth/token_cache.h"
#include "util/metrics.h"

#define DIGEST_LEN AUTH_TOKEN_DIGEST_LEN
#define KEY_MIN_BYTES 16
#define FILE_MAX_BYTES (1 << 20)
#define TOKEN_CACHE_SLOTS 4096

/* A named API key: its digest and the principal it stands for. */
typedef struct api_key {
    unsigned char digest[DIGEST_LEN];
    auth_principal_t p;
} api_key_t;

struct http_auth {
    unsigned char key[crypto_generichash_KEYBYTES];
    size_t n_secrets;
    unsigned char (*secrets)[DIGEST_LEN];
    size_t n_keys, cap_keys;
    api_key_t *keys;
    auth_jwt_t *jwt; /* NULL when no JWT secret or key is configured */
    auth_token_cache_t *cache;
};

static void digest(const http_auth_t *a, const char *s, size_t n, unsigned char out[DIGEST_LEN])
{
    crypto_generichash(out, DIGEST_LEN, (const unsigned char *)s, n, a->key, sizeof a->key);
}

static bool blank(char c)
{
    return c == ' ' || c == '\t';
}

static const char *env(const char *name)
{
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

/* API_SECRET: "s1,s2" (blanks around items ignored). */
static int add_secrets(http_auth_t *a, const char *csv, chr_err_t *err)
{
    if (!csv) return CHR_OK;
    size_t max = 1;
    for (const char *p = csv; *p; p++)
        max += *p == ',';
    a->secrets = calloc(max, sizeof *a->secrets);
    if (!a->secrets) return chr_fail(err, CHR_ENOMEM, "API_SECRET", "out of memory");
    const char *p = csv;
    while (*p) {
        const char *comma = strchr(p, ',');
        const char *end = comma ? comma : p + strlen(p);
        const char *s = p, *e = end;
        while (s < e && blank(*s))
            s++;
        while (e > s && blank(e[-1]))
            e--;
        if (e > s) digest(a, s, (size_t)(e - s), a->secrets[a->n_secrets++]);
        p = comma ? comma + 1 : end;
    }
    return CHR_OK;
}

/* Reads a whole file (at most FILE_MAX_BYTES) into a new string. */
static char *read_file(const char *path, const char *what, chr_err_t *err)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        chr_fail(err, CHR_EINVAL, what, "%s: cannot open %s: %s", what, path, strerror(errno));
        return NULL;
    }
    char *buf = malloc(FILE_MAX_BYTES + 1);
    size_t n = buf ? fread(buf, 1, FILE_MAX_BYTES + 1, f) : 0;
    bool bad = ferror(f) != 0;
    fclose(f);
    if (!buf || bad || n > FILE_MAX_BYTES) {
        free(buf);
        chr_fail(err, CHR_EINVAL, what, "%s: cannot read %s (or it is over 1 MiB)", what, path);
        return NULL;
    }
    buf[n] = '\0';
    return buf;
}

/* Adds one named key. spec: {name, key | key_env, roles?, tenant_id?};
 * literal keys only when allow_literal (a key file, not a definition). */
static int add_key(http_auth_t *a, const json_t *spec, const char *where, bool allow_literal,
                   chr_err_t *err)
{
    const char *name = json_string_value(json_object_get(spec, "name"));
    const char *key = allow_literal ? json_string_value(json_object_get(spec, "key")) : NULL;
    const char *key_env = json_string_value(json_object_get(spec, "key_env"));
    if (!json_is_object(spec) || !name || !*name)
        return chr_fail(err, CHR_EINVAL, where, "%s: each key needs a \"name\"", where);
    if (!key == !key_env)
        return chr_fail(err, CHR_EINVAL, where, "%s: key \"%s\" needs %s", where, name,
                        allow_literal ? "exactly one of \"key\" and \"key_env\"" : "\"key_env\"");
    if (key_env) {
        key = getenv(key_env);
        if (!key || !*key)
            return chr_fail(err, CHR_EINVAL, where,
                            "%s: key \"%s\": environment variable %s is not set", where, name,
                            key_env);
    }
    if (strlen(key) < KEY_MIN_BYTES)
        return chr_fail(err, CHR_EINVAL, where, "%s: key \"%s\" is shorter than %d bytes", where,
                        name, KEY_MIN_BYTES);
    for (size_t i = 0; i < a->n_keys; i++)
        if (strcmp(a->keys[i].p.key_name, name) == 0)
            return chr_fail(err, CHR_EINVAL, where, "%s: key name \"%s\" is used twice", where,
                            name);
    if (a->n_keys == a->cap_keys) {
        size_t cap = a->cap_keys ? 2 * a->cap_keys : 8;
        api_key_t *k = realloc(a->keys, cap * sizeof *k);
        if (!k) return chr_fail(err, CHR_ENOMEM, where, "out of memory");
        a->keys = k;
        a->cap_keys = cap;
    }
    api_key_t *k = &a->keys[a->n_keys];
    memset(k, 0, sizeof *k);
    k->p.kind = AUTH_API_KEY;
    if (!auth_copy_claim(k->p.key_name, sizeof k->p.key_name, name, strlen(name)) ||
        !auth_copy_claim(k->p.sub, sizeof k->p.sub, name, strlen(name)))
        return chr_fail(err, CHR_EINVAL, where, "%s: key name \"%s\" is too long", where, name);
    const json_t *tenant = json_object_get(spec, "tenant_id");
    if (tenant && (!json_is_string(tenant) ||
                   !auth_copy_claim(k->p.tenant_id, sizeof k->p.tenant_id,
                                    json_string_value(tenant), json_string_length(tenant))))
        return chr_fail(err, CHR_EINVAL, where, "%s: key \"%s\": tenant_id must be a string",
                        where, name);
    const json_t *roles = json_object_get(spec, "roles");
    size_t i;
    const json_t *r;
    if (roles && !json_is_array(roles))
        return chr_fail(err, CHR_EINVAL, where, "%s: key \"%s\": roles must be an array", where,
                        name);
    json_array_foreach(roles, i, r) {
        if (!json_is_string(r) ||
            !auth_principal_add_role(&k->p, json_string_value(r), json_string_length(r)))
            return chr_fail(err, CHR_EINVAL, where,
                            "%s: key \"%s\": roles must be at most %d non-empty strings", where,
                            name, AUTH_MAX_ROLES);
    }
    digest(a, key, strlen(key), k->digest);
    a->n_keys++;
    return CHR_OK;
}

/* API_KEYS_FILE: {"keys": [...]} or [...]. */
static int add_key_file(http_auth_t *a, const char *path, chr_err_t *err)
{
    char *text = read_file(path, "API_KEYS_FILE", err);
    if (!text) return err->code;
    json_error_t je;
    json_t *root = json_loads(text, JSON_REJECT_DUPLICATES, &je);
    sodium_memzero(text, strlen(text));
    free(text);
    if (!root)
        return chr_fail(err, CHR_EINVAL, "API_KEYS_FILE", "API_KEYS_FILE: %s at line %d", je.text,
                        je.line);
    json_t *keys = json_is_array(root) ? root : json_object_get(root, "keys");
    int rc = CHR_OK;
    if (!json_is_array(keys)) {
        rc = chr_fail(err, CHR_EINVAL, "API_KEYS_FILE",
                      "API_KEYS_FILE must hold {\"keys\": [{\"name\", \"key\" or \"key_env\", "
                      "\"roles\", \"tenant_id\"}]}");
    }
    size_t i;
    json_t *k;
    if (!rc) json_array_foreach(keys, i, k) {
            if ((rc = add_key(a, k, "API_KEYS_FILE", true, err))) break;
        }
    /* scrub literal keys from the parsed document before freeing it */
    if (json_is_array(keys)) json_array_foreach(keys, i, k) {
            json_t *lit = json_object_get(k, "key");
            if (json_is_string(lit))
                sodium_memzero((void *)json_string_value(lit), json_string_length(lit));
        }
    json_decref(root);
    return rc;
}

static int add_jwt(http_auth_t *a, chr_err_t *err)
{
    auth_jwt_cfg_t c = {
        .secret = env("JWT_SECRET"),
        .secret_previous = env("JWT_SECRET_PREVIOUS"),
        .issuer = env("JWT_ISSUER"),
        .audience = env("JWT_AUDIENCE"),
        .claim_sub = env("JWT_CLAIM_SUB"),
        .claim_roles = env("JWT_CLAIM_ROLES"),
        .claim_tenant = env("JWT_CLAIM_TENANT"),
        .leeway_s = 30,
    };
    const char *leeway = env("JWT_LEEWAY");
    if (leeway) {
        char *end;
        errno = 0;
        long long s = strtoll(leeway, &end, 10);
        if (errno || *end || end == leeway || s < 0 || s > 3600)
            return chr_fail(err, CHR_EINVAL, "JWT_LEEWAY",
                            "JWT_LEEWAY must be seconds from 0 to 3600, not \"%s\"", leeway);
        c.leeway_s = s;
    }
    if (c.secret && strlen(c.secret) < 32)
        return chr_fail(err, CHR_EINVAL, "JWT_SECRET",
                        "JWT_SECRET must be at least 32 bytes (HS256 keys should be random and "
                        "as long as the hash)");
    char *pem = NULL;
    const char *pem_path = env("JWT_PUBLIC_KEY_FILE");
    if (pem_path && !(pem = read_file(pem_path, "JWT_PUBLIC_KEY_FILE", err))) return err->code;
    c.public_key_pem = pem;
    int rc = CHR_OK;
    if (c.secret || c.secret_previous || pem) {
        rc = auth_jwt_new(&c, &a->jwt, err);
        if (!rc && !(a->cache = auth_token_cache_new(TOKEN_CACHE_SLOTS)))
            rc = chr_fail(err, CHR_ENOMEM, "", "out of memory");
    }
    free(pem);
    return rc;
}

int http_auth_new(const char *secrets_csv, const definition_t *def, http_auth_t **out,
                  chr_err_t *err)
{
    *out = NULL;
    http_auth_t *a = calloc(1, sizeof *a);
    if (!a) return chr_fail(err, CHR_ENOMEM, "API_SECRET", "out of memory");
    randombytes_buf(a->key, sizeof a->key);
    int rc = add_secrets(a, secrets_csv, err);
    const char *file = env("API_KEYS_FILE");
    if (!rc && file) rc = add_key_file(a, file, err);
    if (!rc && def && def->auth.api_keys) {
        size_t i;
        json_t *k;
        json_array_foreach(def->auth.api_keys, i, k) {
            if ((rc = add_key(a, k, "auth.api_keys", false, err))) break;
        }
    }
    if (!rc) rc = add_jwt(a, err);
    if (rc || (a->n_secrets == 0 && a->n_keys == 0 && !a->jwt)) {
        http_auth_free(a);
        return rc;
    }
    *out = a;
    return CHR_OK;
}

void http_auth_free(http_auth_t *a)
{
    if (!a) return;
    if (a->secrets) sodium_memzero(a->secrets, a->n_secrets * sizeof *a->secrets);
    if (a->keys) sodium_memzero(a->keys, a->n_keys * sizeof *a->keys);
    sodium_memzero(a->key, sizeof a->key);
    free(a->secrets);
    free(a->keys);
    auth_jwt_free(a->jwt);
    auth_token_cache_free(a->cache);
    free(a);
}

const auth_jwt_t *http_auth_jwt(const http_auth_t *a)
{
    return a ? a->jwt : NULL;
}

bool http_auth_bearer(const char *h, const char **tok_out, size_t *n_out)
{
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
    *tok_out = tok;
    *n_out = n;
    return true;
}

http_auth_rc_t http_auth_check(http_auth_t *a, const char *authorization, int64_t now,
                               auth_principal_t *p, const char **why)
{
    *why = "";
    memset(p, 0, sizeof *p);
    const char *tok;
    size_t n;
    if (!http_auth_bearer(authorization, &tok, &n)) {
        *why = "no bearer credential";
        return HTTP_AUTH_MISSING;
    }
    /* Every secret and key is compared, whatever matched before. */
    unsigned char d[DIGEST_LEN];
    digest(a, tok, n, d);
    int secret_ok = 0;
    for (size_t i = 0; i < a->n_secrets; i++)
        secret_ok |= sodium_memcmp(d, a->secrets[i], DIGEST_LEN) == 0;
    size_t key_match = SIZE_MAX;
    for (size_t i = 0; i < a->n_keys; i++)
        if (sodium_memcmp(d, a->keys[i].digest, DIGEST_LEN) == 0) key_match = i;
    if (secret_ok) {
        p->kind = AUTH_API_SECRET;
        return HTTP_AUTH_OK;
    }
    if (key_match != SIZE_MAX) {
        *p = a->keys[key_match].p;
        return HTTP_AUTH_OK;
    }
    if (!a->jwt || !auth_jwt_looks_like(tok, n)) {
        *why = "not a known secret or key";
        return HTTP_AUTH_INVALID;
    }
    /* the same keyed digest finds the token in the cache */
    if (auth_token_cache_get(a->cache, d, now, p)) {
        metrics_jwt_cache(1);
        return HTTP_AUTH_OK;
    }
    metrics_jwt_cache(0);
    int64_t exp = 0;
    if (auth_jwt_verify(a->jwt, tok, n, now, p, &exp, why) != AUTH_JWT_OK) {
        memset(p, 0, sizeof *p);
        return HTTP_AUTH_INVALID;
    }
    auth_token_cache_put(a->cache, d, exp, p);
    return HTTP_AUTH_OK;
}
