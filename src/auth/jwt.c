/* jwt.c - JWT verification and HS256 signing on libjwt; see jwt.h. */
#include "auth/jwt.h"

#include <errno.h>
#include <jwt.h>
#include <stdlib.h>
#include <string.h>

#include "core/query.h"

struct auth_jwt {
    char *secret, *secret_previous;
    char *pem;
    size_t pem_len;
    char *issuer, *audience;
    char *claim_sub, *claim_roles, *claim_tenant;
    int64_t leeway_s;
};

static char *dup_or_null(const char *s)
{
    return s && *s ? strdup(s) : NULL;
}

static bool dup_into(char **dst, const char *s, const char *dflt)
{
    *dst = strdup(s && *s ? s : dflt);
    return *dst != NULL;
}

int auth_jwt_new(const auth_jwt_cfg_t *cfg, auth_jwt_t **out, chr_err_t *err)
{
    *out = NULL;
    if (cfg->public_key_pem && *cfg->public_key_pem &&
        !strstr(cfg->public_key_pem, "-----BEGIN PUBLIC KEY-----"))
        return chr_fail(err, CHR_EINVAL, "JWT_PUBLIC_KEY_FILE",
                        "JWT_PUBLIC_KEY_FILE must hold a PEM public key (-----BEGIN PUBLIC "
                        "KEY-----), RSA for RS256 or EC P-256 for ES256");
    auth_jwt_t *j = calloc(1, sizeof *j);
    if (!j) return chr_fail(err, CHR_ENOMEM, "", "out of memory");
    j->secret = dup_or_null(cfg->secret);
    j->secret_previous = dup_or_null(cfg->secret_previous);
    j->pem = dup_or_null(cfg->public_key_pem);
    j->pem_len = j->pem ? strlen(j->pem) : 0;
    j->issuer = dup_or_null(cfg->issuer);
    j->audience = dup_or_null(cfg->audience);
    j->leeway_s = cfg->leeway_s;
    bool ok = dup_into(&j->claim_sub, cfg->claim_sub, "sub") &&
              dup_into(&j->claim_roles, cfg->claim_roles, "roles") &&
              dup_into(&j->claim_tenant, cfg->claim_tenant, "tenant_id");
    if (!ok || (cfg->secret && *cfg->secret && !j->secret) ||
        (cfg->secret_previous && *cfg->secret_previous && !j->secret_previous) ||
        (cfg->public_key_pem && *cfg->public_key_pem && !j->pem)) {
        auth_jwt_free(j);
        return chr_fail(err, CHR_ENOMEM, "", "out of memory");
    }
    *out = j;
    return CHR_OK;
}

static void free_secret(char *s)
{
    if (!s) return;
    memset(s, 0, strlen(s));
    free(s);
}

void auth_jwt_free(auth_jwt_t *j)
{
    if (!j) return;
    free_secret(j->secret);
    free_secret(j->secret_previous);
    free(j->pem);
    free(j->issuer);
    free(j->audience);
    free(j->claim_sub);
    free(j->claim_roles);
    free(j->claim_tenant);
    free(j);
}

bool auth_jwt_enabled(const auth_jwt_t *j)
{
    return j && (j->secret || j->secret_previous || j->pem);
}

const char *auth_jwt_issuer(const auth_jwt_t *j)
{
    return j->issuer ? j->issuer : "chronicle";
}

void auth_jwt_claim_names(const auth_jwt_t *j, const char **sub, const char **roles,
                          const char **tenant)
{
    *sub = j->claim_sub;
    *roles = j->claim_roles;
    *tenant = j->claim_tenant;
}

const char *auth_jwt_audience(const auth_jwt_t *j)
{
    return j->audience;
}

bool auth_jwt_looks_like(const char *token, size_t len)
{
    size_t dots = 0;
    for (size_t i = 0; i < len; i++)
        dots += token[i] == '.';
    return dots == 2;
}

/* Decodes one base64url segment as a JSON object. New reference or NULL. */
static json_t *segment_json(const char *s, size_t n)
{
    char tmp[AUTH_JWT_MAX_BYTES + 1];
    if (n == 0 || n > AUTH_JWT_MAX_BYTES) return NULL;
    memcpy(tmp, s, n);
    tmp[n] = '\0';
    size_t len = 0;
    unsigned char *raw = query_b64url_decode(tmp, &len);
    if (!raw) return NULL;
    json_t *j = json_loadb((const char *)raw, len, JSON_REJECT_DUPLICATES, NULL);
    free(raw);
    if (j && !json_is_object(j)) {
        json_decref(j);
        return NULL;
    }
    return j;
}

/* Follows a dotted claim name through nested objects. Borrowed or NULL. */
static json_t *claim(json_t *payload, const char *name)
{
    json_t *direct = json_object_get(payload, name);
    if (direct || !strchr(name, '.')) return direct;
    json_t *cur = payload;
    const char *p = name;
    while (cur && *p) {
        const char *dot = strchr(p, '.');
        size_t n = dot ? (size_t)(dot - p) : strlen(p);
        cur = json_is_object(cur) ? json_object_getn(cur, p, n) : NULL;
        p = dot ? dot + 1 : p + n;
    }
    return cur;
}

/* A NumericDate claim (integer or number) into *out. */
static bool numeric_date(const json_t *v, int64_t *out)
{
    if (json_is_integer(v)) {
        *out = (int64_t)json_integer_value(v);
        return true;
    }
    if (json_is_real(v)) {
        double d = json_real_value(v);
        if (!(d > -9.2e18 && d < 9.2e18)) return false;
        *out = (int64_t)d;
        return true;
    }
    return false;
}

/* Adds each role of a space/comma separated string. */
static bool roles_from_string(auth_principal_t *p, const char *s)
{
    while (*s) {
        while (*s == ' ' || *s == ',')
            s++;
        size_t n = strcspn(s, " ,");
        if (n && !auth_principal_add_role(p, s, n)) return false;
        s += n;
    }
    return true;
}

static auth_jwt_rc_t fail(const char **why, auth_jwt_rc_t rc, const char *msg)
{
    *why = msg;
    return rc;
}

/* Checks the signature of token with the key its alg selects. */
static auth_jwt_rc_t check_signature(const auth_jwt_t *j, const char *alg, const char *token,
                                     const char **why)
{
    const char *keys[2] = {NULL, NULL};
    size_t lens[2] = {0, 0};
    if (strcmp(alg, "HS256") == 0) {
        keys[0] = j->secret;
        keys[1] = j->secret_previous;
        if (!keys[0]) {
            keys[0] = keys[1];
            keys[1] = NULL;
        }
    } else if (strcmp(alg, "RS256") == 0 || strcmp(alg, "ES256") == 0) {
        keys[0] = j->pem;
    } else {
        return fail(why, AUTH_JWT_ALG, "the token's algorithm is not accepted (HS256, RS256, ES256)");
    }
    if (!keys[0]) return fail(why, AUTH_JWT_ALG, "no key is configured for the token's algorithm");
    for (size_t i = 0; i < 2 && keys[i]; i++) {
        lens[i] = keys[i] == j->pem ? j->pem_len : strlen(keys[i]);
        jwt_t *t = NULL;
        int rc = jwt_decode(&t, token, (const unsigned char *)keys[i], (int)lens[i]);
        if (rc == 0 && t && strcmp(jwt_alg_str(jwt_get_alg(t)), alg) == 0) {
            jwt_free(t);
            return AUTH_JWT_OK;
        }
        jwt_free(t);
    }
    return fail(why, AUTH_JWT_SIGNATURE, "the token's signature does not verify");
}

static auth_jwt_rc_t check_claims(const auth_jwt_t *j, json_t *pl, int64_t now,
                                  auth_principal_t *p, int64_t *exp, const char **why)
{
    int64_t t;
    json_t *v = json_object_get(pl, "exp");
    if (!v || !numeric_date(v, &t)) return fail(why, AUTH_JWT_EXPIRED, "the token has no exp");
    if (now > t + j->leeway_s) return fail(why, AUTH_JWT_EXPIRED, "the token has expired");
    *exp = t + j->leeway_s;
    v = json_object_get(pl, "nbf");
    if (v) {
        if (!numeric_date(v, &t)) return fail(why, AUTH_JWT_CLAIMS, "nbf is not a NumericDate");
        if (now + j->leeway_s < t) return fail(why, AUTH_JWT_NOT_YET, "the token is not yet valid");
    }
    if (j->issuer) {
        v = json_object_get(pl, "iss");
        if (!json_is_string(v) || strcmp(json_string_value(v), j->issuer) != 0)
            return fail(why, AUTH_JWT_ISSUER, "the token's issuer is not accepted");
    }
    if (j->audience) {
        v = json_object_get(pl, "aud");
        bool found = json_is_string(v) && strcmp(json_string_value(v), j->audience) == 0;
        size_t i;
        json_t *a;
        if (json_is_array(v)) json_array_foreach(v, i, a) {
                if (json_is_string(a) && strcmp(json_string_value(a), j->audience) == 0)
                    found = true;
            }
        if (!found) return fail(why, AUTH_JWT_AUDIENCE, "the token's audience is not accepted");
    }
    memset(p, 0, sizeof *p);
    v = claim(pl, j->claim_sub);
    if (!json_is_string(v) || json_string_length(v) == 0 ||
        !auth_copy_claim(p->sub, sizeof p->sub, json_string_value(v), json_string_length(v)))
        return fail(why, AUTH_JWT_CLAIMS, "the token's subject claim is missing or invalid");
    v = claim(pl, j->claim_tenant);
    if (v && !json_is_null(v) &&
        (!json_is_string(v) || !auth_copy_claim(p->tenant_id, sizeof p->tenant_id,
                                                json_string_value(v), json_string_length(v))))
        return fail(why, AUTH_JWT_CLAIMS, "the token's tenant claim is invalid");
    v = claim(pl, j->claim_roles);
    if (json_is_string(v)) {
        if (!roles_from_string(p, json_string_value(v)))
            return fail(why, AUTH_JWT_CLAIMS, "the token's roles claim is invalid");
    } else if (json_is_array(v)) {
        size_t i;
        json_t *r;
        json_array_foreach(v, i, r) {
            if (!json_is_string(r) ||
                !auth_principal_add_role(p, json_string_value(r), json_string_length(r)))
                return fail(why, AUTH_JWT_CLAIMS, "the token's roles claim is invalid");
        }
    } else if (v && !json_is_null(v)) {
        return fail(why, AUTH_JWT_CLAIMS, "the token's roles claim is invalid");
    }
    return AUTH_JWT_OK;
}

auth_jwt_rc_t auth_jwt_verify(const auth_jwt_t *j, const char *token, size_t len, int64_t now,
                              auth_principal_t *p, int64_t *exp, const char **why)
{
    *why = "";
    if (!auth_jwt_enabled(j)) return fail(why, AUTH_JWT_ALG, "JWTs are not accepted");
    if (len == 0 || len > AUTH_JWT_MAX_BYTES || memchr(token, '\0', len) ||
        !auth_jwt_looks_like(token, len))
        return fail(why, AUTH_JWT_MALFORMED, "the token is not a JWT");
    const char *d1 = memchr(token, '.', len);
    const char *d2 = memchr(d1 + 1, '.', len - (size_t)(d1 + 1 - token));
    if (d1 == token || d2 == d1 + 1) return fail(why, AUTH_JWT_MALFORMED, "the token is not a JWT");
    if (d2 == token + len - 1) return fail(why, AUTH_JWT_ALG, "the token is not signed");
    json_t *hdr = segment_json(token, (size_t)(d1 - token));
    json_t *pl = segment_json(d1 + 1, (size_t)(d2 - d1 - 1));
    auth_jwt_rc_t rc = AUTH_JWT_OK;
    const char *alg = hdr ? json_string_value(json_object_get(hdr, "alg")) : NULL;
    if (!hdr || !pl) {
        rc = fail(why, AUTH_JWT_MALFORMED, "the token is not a JWT");
    } else if (!alg) {
        rc = fail(why, AUTH_JWT_ALG, "the token's header has no alg");
    } else if (json_object_get(hdr, "crit")) {
        /* RFC 7515 4.1.11: extensions we do not understand must not be ignored */
        rc = fail(why, AUTH_JWT_ALG, "the token's header has critical extensions");
    } else {
        char copy[AUTH_JWT_MAX_BYTES + 1];
        memcpy(copy, token, len);
        copy[len] = '\0';
        rc = check_signature(j, alg, copy, why);
    }
    if (rc == AUTH_JWT_OK) rc = check_claims(j, pl, now, p, exp, why);
    if (rc == AUTH_JWT_OK) {
        p->kind = strcmp(alg, "HS256") == 0 && json_is_string(json_object_get(pl, "chr_sid"))
                      ? AUTH_LOGIN
                      : AUTH_JWT;
    }
    json_decref(hdr);
    json_decref(pl);
    return rc;
}

int auth_jwt_sign(const auth_jwt_t *j, const json_t *claims, char **out, chr_err_t *err)
{
    *out = NULL;
    if (!j || !j->secret)
        return chr_fail(err, CHR_EINVAL, "JWT_SECRET", "signing tokens needs JWT_SECRET");
    jwt_t *t = NULL;
    char *text = json_dumps(claims, JSON_COMPACT);
    int rc = text ? jwt_new(&t) : ENOMEM;
    if (!rc) rc = jwt_add_grants_json(t, text);
    if (!rc)
        rc = jwt_set_alg(t, JWT_ALG_HS256, (const unsigned char *)j->secret,
                         (int)strlen(j->secret));
    char *s = rc ? NULL : jwt_encode_str(t);
    free(text);
    jwt_free(t);
    if (!s) return chr_fail(err, CHR_ENOMEM, "", "cannot sign the token");
    *out = s; /* libjwt's strings are malloc'd: free() releases them */
    return CHR_OK;
}
