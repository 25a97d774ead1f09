/*
 * test_jwt.c - unit tests of auth/jwt.h and auth/token_cache.h.
 *
 * HS256 tokens are built here by hand (base64url + libsodium's HMAC-SHA256),
 * so the verifier is checked against an independent signer; RS256/ES256 keys
 * are generated with the openssl CLI into CHRONICLE_TEST_TMP and tokens
 * signed with libjwt. Covers: each algorithm accepted, bad signature,
 * expired, not yet valid (and the leeway), issuer, audience (string and
 * array), alg none, HS256 signed with the public key's PEM text (algorithm
 * confusion), a token of the other key type, truncation, missing exp/sub,
 * claim names (nested), roles as array or string, the previous secret,
 * oversized claims, our own signing, and the cache's expiry.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <jwt.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "auth/jwt.h"
#include "auth/token_cache.h"
#include "core/query.h"

#define SECRET "0123456789abcdef0123456789abcdef-test"
#define NOW 1800000000LL

static char rsa_pub[4096], rsa_priv[8192], ec_pub[4096], ec_priv[8192];

static char *slurp(const char *path, char *buf, size_t size)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t n = fread(buf, 1, size - 1, f);
    fclose(f);
    buf[n] = '\0';
    return buf;
}

/* Generates the RSA and EC key pairs with openssl (once). */
static int make_keys(void **state)
{
    (void)state;
    const char *tmp = getenv("CHRONICLE_TEST_TMP");
    char dir[512];
    snprintf(dir, sizeof dir, "%s/jwt-keys-%ld", tmp ? tmp : "/tmp", (long)getpid());
    mkdir(tmp ? tmp : "/tmp", 0700);
    mkdir(dir, 0700);
    char cmd[2048];
    snprintf(cmd, sizeof cmd,
             "cd %s && openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out rsa.key "
             "2>/dev/null && openssl pkey -in rsa.key -pubout -out rsa.pub 2>/dev/null && "
             "openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out ec.key "
             "2>/dev/null && openssl pkey -in ec.key -pubout -out ec.pub 2>/dev/null",
             dir);
    if (system(cmd) != 0) return -1;
    char p[600];
    snprintf(p, sizeof p, "%s/rsa.pub", dir);
    if (!slurp(p, rsa_pub, sizeof rsa_pub)) return -1;
    snprintf(p, sizeof p, "%s/rsa.key", dir);
    if (!slurp(p, rsa_priv, sizeof rsa_priv)) return -1;
    snprintf(p, sizeof p, "%s/ec.pub", dir);
    if (!slurp(p, ec_pub, sizeof ec_pub)) return -1;
    snprintf(p, sizeof p, "%s/ec.key", dir);
    if (!slurp(p, ec_priv, sizeof ec_priv)) return -1;
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    return system(cmd) == 0 ? 0 : -1;
}

static char *b64(const void *data, size_t n)
{
    return query_b64url_encode(data, n);
}

/* header.payload.HMAC-SHA256(key) built without libjwt. New string. */
static char *hs256(const char *header, const char *payload, const char *key)
{
    char *h = b64(header, strlen(header)), *p = b64(payload, strlen(payload));
    char signing[4096];
    snprintf(signing, sizeof signing, "%s.%s", h, p);
    unsigned char mac[crypto_auth_hmacsha256_BYTES];
    crypto_auth_hmacsha256_state st;
    crypto_auth_hmacsha256_init(&st, (const unsigned char *)key, strlen(key));
    crypto_auth_hmacsha256_update(&st, (const unsigned char *)signing, strlen(signing));
    crypto_auth_hmacsha256_final(&st, mac);
    char *s = b64(mac, sizeof mac);
    size_t n = strlen(signing) + strlen(s) + 2;
    char *out = malloc(n);
    snprintf(out, n, "%s.%s", signing, s);
    free(h);
    free(p);
    free(s);
    return out;
}

static const char HS_HEADER[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";

/* A payload with sub and the given extra members (JSON text without braces). */
static char *payload(const char *extra)
{
    static char buf[2048];
    snprintf(buf, sizeof buf, "{\"sub\":\"user-1\"%s%s}", extra && *extra ? "," : "",
             extra ? extra : "");
    return buf;
}

static char *exp_ok(void)
{
    static char buf[64];
    snprintf(buf, sizeof buf, "\"exp\":%lld", NOW + 300);
    return buf;
}

/* Signs claims with libjwt and a private key PEM. New string. */
static char *pem_sign(jwt_alg_t alg, const char *priv, const char *claims)
{
    jwt_t *t = NULL;
    assert_int_equal(jwt_new(&t), 0);
    assert_int_equal(jwt_add_grants_json(t, claims), 0);
    assert_int_equal(jwt_set_alg(t, alg, (const unsigned char *)priv, (int)strlen(priv)), 0);
    char *s = jwt_encode_str(t);
    jwt_free(t);
    assert_non_null(s);
    return s;
}

static auth_jwt_t *verifier(const auth_jwt_cfg_t *c)
{
    auth_jwt_t *j = NULL;
    chr_err_t err;
    if (auth_jwt_new(c, &j, &err) != CHR_OK) fail_msg("auth_jwt_new: %s", err.msg);
    return j;
}

static auth_jwt_rc_t verify(const auth_jwt_t *j, const char *tok, auth_principal_t *p)
{
    int64_t exp;
    const char *why;
    return auth_jwt_verify(j, tok, strlen(tok), NOW, p, &exp, &why);
}

static void expect(const auth_jwt_t *j, const char *tok, auth_jwt_rc_t want)
{
    auth_principal_t p;
    auth_jwt_rc_t got = verify(j, tok, &p);
    if (got != want) fail_msg("token %.60s...: got %d, want %d", tok, got, want);
}

static void test_hs256_accept_and_claims(void **state)
{
    (void)state;
    auth_jwt_t *j = verifier(&(auth_jwt_cfg_t){.secret = SECRET});
    char extra[512];
    snprintf(extra, sizeof extra, "%s,\"roles\":[\"admin\",\"ops\"],\"tenant_id\":\"t-1\"", exp_ok());
    char *tok = hs256(HS_HEADER, payload(extra), SECRET);
    auth_principal_t p;
    assert_int_equal(verify(j, tok, &p), AUTH_JWT_OK);
    assert_int_equal(p.kind, AUTH_JWT);
    assert_string_equal(p.sub, "user-1");
    assert_string_equal(p.tenant_id, "t-1");
    assert_int_equal(p.n_roles, 2);
    assert_string_equal(auth_principal_role(&p, 0), "admin");
    assert_string_equal(auth_principal_role(&p, 1), "ops");
    assert_true(auth_principal_has_role(&p, "ops"));
    assert_false(auth_principal_has_role(&p, "op"));
    free(tok);

    /* roles as one space/comma separated string; chr_sid marks our own tokens */
    snprintf(extra, sizeof extra, "%s,\"roles\":\"a b,c\",\"chr_sid\":\"s-1\"", exp_ok());
    tok = hs256(HS_HEADER, payload(extra), SECRET);
    assert_int_equal(verify(j, tok, &p), AUTH_JWT_OK);
    assert_int_equal(p.kind, AUTH_LOGIN);
    assert_int_equal(p.n_roles, 3);
    assert_string_equal(auth_principal_role(&p, 2), "c");
    free(tok);

    /* OIDC's sid (identity providers' own session claim) does not make a login token */
    snprintf(extra, sizeof extra, "%s,\"sid\":\"idp-session\"", exp_ok());
    tok = hs256(HS_HEADER, payload(extra), SECRET);
    assert_int_equal(verify(j, tok, &p), AUTH_JWT_OK);
    assert_int_equal(p.kind, AUTH_JWT);
    free(tok);

    /* a critical header extension is refused even with a good signature */
    tok = hs256("{\"alg\":\"HS256\",\"crit\":[\"b64\"],\"b64\":false}", payload(exp_ok()), SECRET);
    expect(j, tok, AUTH_JWT_ALG);
    free(tok);
    auth_jwt_free(j);
}

static void test_hs256_rejections(void **state)
{
    (void)state;
    auth_jwt_t *j = verifier(&(auth_jwt_cfg_t){.secret = SECRET, .leeway_s = 10});
    char extra[256];
    char *tok;

    tok = hs256(HS_HEADER, payload(exp_ok()), "another-secret-another-secret-xx");
    expect(j, tok, AUTH_JWT_SIGNATURE);
    free(tok);

    snprintf(extra, sizeof extra, "\"exp\":%lld", NOW - 11); /* beyond the leeway */
    tok = hs256(HS_HEADER, payload(extra), SECRET);
    expect(j, tok, AUTH_JWT_EXPIRED);
    free(tok);
    snprintf(extra, sizeof extra, "\"exp\":%lld", NOW - 5); /* within it */
    tok = hs256(HS_HEADER, payload(extra), SECRET);
    expect(j, tok, AUTH_JWT_OK);
    free(tok);

    snprintf(extra, sizeof extra, "%s,\"nbf\":%lld", exp_ok(), NOW + 60);
    tok = hs256(HS_HEADER, payload(extra), SECRET);
    expect(j, tok, AUTH_JWT_NOT_YET);
    free(tok);

    tok = hs256(HS_HEADER, payload(""), SECRET); /* no exp */
    expect(j, tok, AUTH_JWT_EXPIRED);
    free(tok);

    snprintf(extra, sizeof extra, "{\"exp\":%lld}", NOW + 60); /* no sub */
    tok = hs256(HS_HEADER, extra, SECRET);
    expect(j, tok, AUTH_JWT_CLAIMS);
    free(tok);

    snprintf(extra, sizeof extra, "%s,\"roles\":[1]", exp_ok());
    tok = hs256(HS_HEADER, payload(extra), SECRET);
    expect(j, tok, AUTH_JWT_CLAIMS);
    free(tok);

    char big[1024];
    int off = snprintf(big, sizeof big, "%s,\"tenant_id\":\"", exp_ok());
    memset(big + off, 'a', 400);
    snprintf(big + off + 400, sizeof big - (size_t)off - 400, "\"");
    tok = hs256(HS_HEADER, payload(big), SECRET);
    expect(j, tok, AUTH_JWT_CLAIMS); /* 400 bytes: refused, not cut */
    free(tok);

    /* alg none, with or without a signature */
    char *h = b64("{\"alg\":\"none\"}", 14), *pl = b64(payload(exp_ok()), strlen(payload(exp_ok())));
    char none[1024];
    snprintf(none, sizeof none, "%s.%s.", h, pl);
    expect(j, none, AUTH_JWT_ALG);
    snprintf(none, sizeof none, "%s.%s.c2ln", h, pl);
    expect(j, none, AUTH_JWT_ALG);
    free(h);
    free(pl);

    /* truncated, mangled, not a JWT */
    tok = hs256(HS_HEADER, payload(exp_ok()), SECRET);
    size_t n = strlen(tok);
    for (size_t cut = 1; cut < n; cut += 7) {
        char *t = strndup(tok, n - cut);
        auth_principal_t p;
        if (verify(j, t, &p) == AUTH_JWT_OK) fail_msg("truncated by %zu accepted", cut);
        free(t);
    }
    tok[n - 3] = tok[n - 3] == 'A' ? 'B' : 'A';
    expect(j, tok, AUTH_JWT_SIGNATURE);
    free(tok);
    expect(j, "abc", AUTH_JWT_MALFORMED);
    expect(j, "a.b.c", AUTH_JWT_MALFORMED);
    expect(j, "..", AUTH_JWT_MALFORMED);
    auth_jwt_free(j);
}

static void test_issuer_audience_claim_names(void **state)
{
    (void)state;
    auth_jwt_t *j = verifier(&(auth_jwt_cfg_t){.secret = SECRET,
                                               .issuer = "https://idp.example",
                                               .audience = "chronicle-api",
                                               .claim_sub = "uid",
                                               .claim_roles = "realm_access.roles",
                                               .claim_tenant = "org"});
    char c[512];
    char *tok;
    snprintf(c, sizeof c,
             "{\"uid\":\"u-9\",\"exp\":%lld,\"iss\":\"https://idp.example\",\"aud\":[\"x\","
             "\"chronicle-api\"],\"realm_access\":{\"roles\":[\"editor\"]},\"org\":\"acme\"}",
             NOW + 60);
    tok = hs256(HS_HEADER, c, SECRET);
    auth_principal_t p;
    assert_int_equal(verify(j, tok, &p), AUTH_JWT_OK);
    assert_string_equal(p.sub, "u-9");
    assert_string_equal(p.tenant_id, "acme");
    assert_int_equal(p.n_roles, 1);
    assert_string_equal(auth_principal_role(&p, 0), "editor");
    free(tok);

    snprintf(c, sizeof c,
             "{\"uid\":\"u-9\",\"exp\":%lld,\"iss\":\"https://evil.example\",\"aud\":\"chronicle-api\"}",
             NOW + 60);
    tok = hs256(HS_HEADER, c, SECRET);
    expect(j, tok, AUTH_JWT_ISSUER);
    free(tok);
    snprintf(c, sizeof c, "{\"uid\":\"u-9\",\"exp\":%lld,\"aud\":\"chronicle-api\"}", NOW + 60);
    tok = hs256(HS_HEADER, c, SECRET);
    expect(j, tok, AUTH_JWT_ISSUER); /* iss required once configured */
    free(tok);
    snprintf(c, sizeof c,
             "{\"uid\":\"u-9\",\"exp\":%lld,\"iss\":\"https://idp.example\",\"aud\":\"other\"}",
             NOW + 60);
    tok = hs256(HS_HEADER, c, SECRET);
    expect(j, tok, AUTH_JWT_AUDIENCE);
    free(tok);
    snprintf(c, sizeof c, "{\"uid\":\"u-9\",\"exp\":%lld,\"iss\":\"https://idp.example\"}",
             NOW + 60);
    tok = hs256(HS_HEADER, c, SECRET);
    expect(j, tok, AUTH_JWT_AUDIENCE);
    free(tok);
    auth_jwt_free(j);
}

static void test_previous_secret(void **state)
{
    (void)state;
    const char *old = "the-old-secret-the-old-secret-xx";
    auth_jwt_t *j = verifier(&(auth_jwt_cfg_t){.secret = SECRET, .secret_previous = old});
    char *a = hs256(HS_HEADER, payload(exp_ok()), SECRET), *b = hs256(HS_HEADER, payload(exp_ok()), old);
    expect(j, a, AUTH_JWT_OK);
    expect(j, b, AUTH_JWT_OK);
    auth_jwt_free(j);
    j = verifier(&(auth_jwt_cfg_t){.secret = SECRET}); /* rotation over */
    expect(j, b, AUTH_JWT_SIGNATURE);
    free(a);
    free(b);
    auth_jwt_free(j);
}

static void test_rs256_es256(void **state)
{
    (void)state;
    char claims[256];
    snprintf(claims, sizeof claims, "{\"sub\":\"ext-1\",\"exp\":%lld}", NOW + 60);
    struct {
        const char *pub, *priv, *other_priv;
        jwt_alg_t alg, other_alg;
    } cases[] = {
        {rsa_pub, rsa_priv, ec_priv, JWT_ALG_RS256, JWT_ALG_ES256},
        {ec_pub, ec_priv, rsa_priv, JWT_ALG_ES256, JWT_ALG_RS256},
    };
    for (size_t i = 0; i < 2; i++) {
        auth_jwt_t *j = verifier(&(auth_jwt_cfg_t){.public_key_pem = cases[i].pub});
        char *tok = pem_sign(cases[i].alg, cases[i].priv, claims);
        auth_principal_t p;
        assert_int_equal(verify(j, tok, &p), AUTH_JWT_OK);
        assert_string_equal(p.sub, "ext-1");
        assert_int_equal(p.kind, AUTH_JWT);
        free(tok);
        /* the other key type: signature fails */
        tok = pem_sign(cases[i].other_alg, cases[i].other_priv, claims);
        expect(j, tok, AUTH_JWT_SIGNATURE);
        free(tok);
        /* HS256 with the public key's PEM as the HMAC secret: no HS key configured */
        tok = hs256(HS_HEADER, claims, cases[i].pub);
        expect(j, tok, AUTH_JWT_ALG);
        free(tok);
        auth_jwt_free(j);
        /* with a JWT_SECRET too, the HS256 token is checked against it, never the PEM */
        j = verifier(&(auth_jwt_cfg_t){.secret = SECRET, .public_key_pem = cases[i].pub});
        tok = hs256(HS_HEADER, claims, cases[i].pub);
        expect(j, tok, AUTH_JWT_SIGNATURE);
        free(tok);
        auth_jwt_free(j);
    }
    auth_jwt_t *j = NULL;
    chr_err_t err;
    assert_int_equal(auth_jwt_new(&(auth_jwt_cfg_t){.public_key_pem = "not a key"}, &j, &err),
                     CHR_EINVAL);
    assert_null(j);
}

static void test_sign_roundtrip(void **state)
{
    (void)state;
    auth_jwt_t *j = verifier(&(auth_jwt_cfg_t){.secret = SECRET});
    json_t *c = json_pack("{s:s, s:I, s:s, s:[s]}", "sub", "k-1", "exp", (json_int_t)NOW + 60,
                          "chr_sid", "fam", "roles", "member");
    char *tok = NULL;
    chr_err_t err;
    assert_int_equal(auth_jwt_sign(j, c, &tok, &err), CHR_OK);
    auth_principal_t p;
    assert_int_equal(verify(j, tok, &p), AUTH_JWT_OK);
    assert_int_equal(p.kind, AUTH_LOGIN);
    assert_string_equal(p.sub, "k-1");
    assert_true(auth_principal_has_role(&p, "member"));
    free(tok);
    json_decref(c);
    auth_jwt_free(j);
    j = verifier(&(auth_jwt_cfg_t){.public_key_pem = ec_pub});
    c = json_pack("{s:s}", "sub", "x");
    assert_int_equal(auth_jwt_sign(j, c, &tok, &err), CHR_EINVAL); /* no secret to sign with */
    json_decref(c);
    auth_jwt_free(j);
}

static void test_token_cache(void **state)
{
    (void)state;
    auth_token_cache_t *c = auth_token_cache_new(64);
    auth_principal_t p = {.kind = AUTH_JWT}, got;
    snprintf(p.sub, sizeof p.sub, "cached");
    unsigned char d[AUTH_TOKEN_DIGEST_LEN], other[AUTH_TOKEN_DIGEST_LEN];
    crypto_generichash(d, sizeof d, (const unsigned char *)"aaa.bbb.ccc", 11, NULL, 0);
    crypto_generichash(other, sizeof other, (const unsigned char *)"aaa.bbb.ccd", 11, NULL, 0);
    assert_false(auth_token_cache_get(c, d, 100, &got));
    auth_token_cache_put(c, d, 200, &p);
    assert_true(auth_token_cache_get(c, d, 150, &got));
    assert_string_equal(got.sub, "cached");
    assert_true(auth_token_cache_get(c, d, 200, &got));
    assert_false(auth_token_cache_get(c, other, 150, &got)); /* another token */
    assert_false(auth_token_cache_get(c, d, 201, &got));     /* expired */
    assert_false(auth_token_cache_get(c, d, 150, &got));     /* and dropped */
    auth_token_cache_free(c);
}

int main(void)
{
    if (sodium_init() < 0) return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hs256_accept_and_claims),
        cmocka_unit_test(test_hs256_rejections),
        cmocka_unit_test(test_issuer_audience_claim_names),
        cmocka_unit_test(test_previous_secret),
        cmocka_unit_test(test_rs256_es256),
        cmocka_unit_test(test_sign_roundtrip),
        cmocka_unit_test(test_token_cache),
    };
    return cmocka_run_group_tests(tests, make_keys, NULL);
}
