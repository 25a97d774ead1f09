/* handlers_auth.c - login, refresh and logout; see handlers_auth.h. */
#include "http/handlers_auth.h"

#include <errno.h>
#include <jansson.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "auth/jwt.h"
#include "auth/sessions.h"
#include "core/password.h"
#include "engine/entity.h"
#include "http/auth.h"
#include "http/gate.h"
#include "http/problem.h"
#include "http/request.h"
#include "http/response.h"

#define ACCESS_TTL_DEFAULT 900
#define REFRESH_TTL_DEFAULT (30 * 24 * 3600)

/* Set once at start, read-only while serving. */
static int64_t access_ttl = ACCESS_TTL_DEFAULT;
static int64_t refresh_ttl = REFRESH_TTL_DEFAULT;

static const char login_failed[] = "the e-mail address or the password is wrong";
static const char refresh_failed[] = "the refresh token is not valid";

/* The body as a JSON object, then the raw body scrubbed (it may hold a
 * password). Parse errors never echo the body: no jansson "near" text. */
static json_t *body_object(http_req_t *req)
{
    json_t *j = req->body ? json_loadb(req->body, req->body_len, JSON_REJECT_DUPLICATES, NULL)
                          : NULL;
    if (req->body) sodium_memzero(req->body, req->body_len);
    if (!j) {
        http_problem(req, HTTP_P_MALFORMED_JSON, NULL, "the body must be a JSON object");
        return NULL;
    }
    if (!json_is_object(j)) {
        json_decref(j);
        http_problem_field(req, HTTP_P_VALIDATION, "", "the body must be a JSON object");
        return NULL;
    }
    return j;
}

/* Zeroes a string member in place (a password) before the document goes. */
static void scrub(json_t *obj, const char *name)
{
    json_t *v = json_object_get(obj, name);
    if (json_is_string(v)) sodium_memzero((char *)json_string_value(v), json_string_length(v));
}

static const char *string_member(http_req_t *req, json_t *body, const char *name)
{
    const char *s = json_string_value(json_object_get(body, name));
    if (!s || !*s || strlen(s) != json_string_length(json_object_get(body, name))) {
        http_problem_field(req, HTTP_P_VALIDATION, name, "%s is required: a non-empty string",
                           name);
        return NULL;
    }
    return s;
}

static engine_t *users_engine(http_req_t *req, int *entity)
{
    const engine_t *eng = req->ctx->engine;
    *entity = eng->def->auth.users_entity;
    return (engine_t *)eng;
}

/* Signs an access token for the user (key, state doc) in session sid and
 * answers 200 with both tokens. */
static void answer_tokens(http_req_t *req, const char *key, const json_t *doc, const char *sid,
                          const char *refresh)
{
    const auth_jwt_t *j = http_auth_jwt(req->ctx->auth);
    const char *c_sub, *c_roles, *c_tenant;
    auth_jwt_claim_names(j, &c_sub, &c_roles, &c_tenant);
    int64_t now = (int64_t)time(NULL);
    json_t *claims = json_pack("{s:s, s:s, s:I, s:I, s:s}", c_sub, key, "iss",
                               auth_jwt_issuer(j), "iat", (json_int_t)now, "exp",
                               (json_int_t)(now + access_ttl), "chr_sid", sid);
    chr_err_t err;
    chr_err_clear(&err);
    if (!claims) {
        http_problem(req, HTTP_P_SERVICE_UNAVAILABLE, NULL, "out of memory");
        return;
    }
    if (auth_jwt_audience(j)) json_object_set_new(claims, "aud", json_string(auth_jwt_audience(j)));
    json_t *roles = json_object_get(doc, "roles");
    if (json_is_array(roles) || json_is_string(roles))
        json_object_set_new(claims, c_roles, json_deep_copy(roles));
    json_t *tenant = json_object_get(doc, "tenant_id");
    if (json_is_string(tenant)) json_object_set_new(claims, c_tenant, json_deep_copy(tenant));
    char *token = NULL;
    int rc = auth_jwt_sign(j, claims, &token, &err);
    json_decref(claims);
    if (rc) {
        http_problem_err(req, &err, false, NULL);
        return;
    }
    json_t *out = json_pack("{s:s, s:s, s:I, s:s, s:I}", "access_token", token, "token_type",
                            "Bearer", "expires_in", (json_int_t)access_ttl, "refresh_token",
                            refresh, "refresh_expires_in", (json_int_t)refresh_ttl);
    free(token);
    http_req_add_header(req, "Cache-Control", "no-store");
    if (!out) {
        http_problem(req, HTTP_P_SERVICE_UNAVAILABLE, NULL, "out of memory");
        return;
    }
    http_respond_json(req, 200, out);
}

static void handle_login(http_req_t *req)
{
    json_t *body = body_object(req);
    if (!body) return;
    int entity;
    engine_t *eng = users_engine(req, &entity);
    const char *email = string_member(req, body, "email");
    const char *pw = email ? string_member(req, body, "password") : NULL;
    if (!pw) {
        scrub(body, "password");
        json_decref(body);
        return;
    }
    size_t pw_len = strlen(pw);
    char *key = NULL;
    json_t *doc = NULL;
    chr_err_t err;
    chr_err_clear(&err);
    /* A tenant-scoped users entity: e-mails are unique per tenant, so the
     * login names its tenant. */
    const json_t *tj = json_object_get(body, "tenant_id");
    const char *tenant = json_is_string(tj) ? json_string_value(tj) : NULL;
    int rc = eng->def->entities[entity].tenant_scoped && !tenant
                 ? CHR_ENOTFOUND
                 : engine_find_private(eng, entity, tenant, "email", email, &key, &doc, &err);
    bool ok = false;
    if (rc == CHR_OK) {
        ok = password_verify(json_string_value(json_object_get(doc, "password")), pw, pw_len);
    } else if (rc == CHR_ENOTFOUND || rc == CHR_EINVAL) {
        ok = password_verify_dummy(pw, pw_len); /* same cost as a wrong password */
    }
    scrub(body, "password");
    json_decref(body);
    if (rc != CHR_OK && rc != CHR_ENOTFOUND && rc != CHR_EINVAL) {
        http_problem_err(req, &err, false, NULL);
    } else if (!ok) {
        http_unauthorized(req, login_failed);
    } else {
        char refresh[AUTH_REFRESH_TOKEN_LEN + 1], family[AUTH_FAMILY_LEN + 1];
        rc = auth_sessions_issue(req->ctx->store, key, (int64_t)time(NULL), refresh_ttl, NULL,
                                 NULL, refresh, family, &err);
        if (rc)
            http_problem_err(req, &err, false, NULL);
        else
            answer_tokens(req, key, doc, family, refresh);
        sodium_memzero(refresh, sizeof refresh);
    }
    free(key);
    json_decref(doc);
}

/* Reads {"refresh_token"} and looks its session up: *rc is the lookup's
 * code (CHR_ENOTFOUND for an unknown token). Returns the body (the caller
 * scrubs and frees it; *token points into it), or NULL when the request
 * was answered (malformed body). */
static json_t *session_of(http_req_t *req, const char **token, auth_session_t *s, int *rc,
                          chr_err_t *err)
{
    chr_err_clear(err);
    json_t *body = body_object(req);
    if (!body) return NULL;
    *token = string_member(req, body, "refresh_token");
    if (!*token) {
        json_decref(body);
        return NULL;
    }
    *rc = auth_sessions_lookup(req->ctx->store, *token, s, err);
    return body;
}

static void handle_refresh(http_req_t *req)
{
    const char *token;
    auth_session_t s;
    chr_err_t err;
    int rc;
    json_t *body = session_of(req, &token, &s, &rc, &err);
    if (!body) return;
    int entity;
    engine_t *eng = users_engine(req, &entity);
    json_t *doc = NULL;
    int64_t version;
    if (rc == CHR_OK && s.revoked) {
        /* a used token again: someone holds a copy; end the whole session */
        rc = auth_sessions_revoke_family(req->ctx->store, s.family, &err);
        if (!rc) rc = CHR_ENOTFOUND;
    } else if (rc == CHR_OK && s.expires_at < (int64_t)time(NULL)) {
        rc = CHR_ENOTFOUND;
    } else if (rc == CHR_OK) {
        rc = engine_get(eng, &access_scope_full, entity, s.user_key, &doc, &version, &err);
        if (rc == CHR_ENOTFOUND) (void)auth_sessions_revoke_family(req->ctx->store, s.family, &err);
    }
    char refresh[AUTH_REFRESH_TOKEN_LEN + 1], family[AUTH_FAMILY_LEN + 1];
    if (rc == CHR_OK)
        rc = auth_sessions_issue(req->ctx->store, s.user_key, (int64_t)time(NULL), refresh_ttl,
                                 token, s.family, refresh, family, &err);
    scrub(body, "refresh_token");
    json_decref(body);
    if (rc == CHR_ENOTFOUND || rc == CHR_ECONFLICT)
        http_unauthorized(req, refresh_failed);
    else if (rc)
        http_problem_err(req, &err, false, NULL);
    else
        answer_tokens(req, s.user_key, doc, family, refresh);
    sodium_memzero(refresh, sizeof refresh);
    json_decref(doc);
}

static void handle_logout(http_req_t *req)
{
    const char *token;
    auth_session_t s;
    chr_err_t err;
    int rc;
    json_t *body = session_of(req, &token, &s, &rc, &err);
    if (!body) return;
    if (rc == CHR_OK) rc = auth_sessions_revoke_family(req->ctx->store, s.family, &err);
    scrub(body, "refresh_token");
    json_decref(body);
    if (rc && rc != CHR_ENOTFOUND) {
        http_problem_err(req, &err, false, NULL);
        return;
    }
    http_req_add_header(req, "Cache-Control", "no-store");
    http_respond(req, 204, NULL, NULL, 0);
}

/* GET /v1/auth/me: the caller's principal, as the server sees it. */
static void handle_me(http_req_t *req)
{
    const auth_principal_t *p = &req->principal;
    json_t *roles = json_array();
    for (size_t i = 0; roles && i < p->n_roles; i++)
        json_array_append_new(roles, json_string(auth_principal_role(p, i)));
    json_t *out = json_pack("{s:s, s:s?, s:o, s:s?, s:s?}", "kind", auth_kind_name(p->kind),
                            "sub", p->sub[0] ? p->sub : NULL, "roles", roles, "tenant_id",
                            p->tenant_id[0] ? p->tenant_id : NULL, "key_name",
                            p->key_name[0] ? p->key_name : NULL);
    if (!out) {
        http_problem(req, HTTP_P_SERVICE_UNAVAILABLE, NULL, "out of memory");
        return;
    }
    http_respond_json(req, 200, out);
}

/* GET /v1/auth/me first, then the login routes (HTTP_ROUTE_RATE_AUTH). */
static const unsigned flags = HTTP_ROUTE_PUBLIC | HTTP_ROUTE_JSON_BODY | HTTP_ROUTE_RATE_AUTH;
static const http_route_t routes[] = {
    {"GET", "/v1/auth/me", handle_me, 0, NULL},
    {"POST", "/v1/auth/login", handle_login, flags, NULL},
    {"POST", "/v1/auth/refresh", handle_refresh, flags, NULL},
    {"POST", "/v1/auth/logout", handle_logout, flags, NULL},
};

static int ttl(const char *name, int64_t dflt, int64_t *out, chr_err_t *err)
{
    *out = dflt;
    const char *v = getenv(name);
    if (!v || !*v) return CHR_OK;
    char *end;
    errno = 0;
    long long n = strtoll(v, &end, 10);
    if (errno || *end || end == v || n < 1 || n > 366LL * 24 * 3600)
        return chr_fail(err, CHR_EINVAL, name, "%s must be seconds from 1 to 31622400, not \"%s\"",
                        name, v);
    *out = n;
    return CHR_OK;
}

const http_route_t *http_auth_route_table(size_t *n)
{
    *n = sizeof routes / sizeof routes[0];
    return routes;
}

int http_auth_routes_add(http_ctx_t *ctx, http_router_t *r, chr_err_t *err)
{
    if (ctx->auth) {
        int rc = http_router_add(r, &routes[0], err);
        if (rc) return rc;
    }
    if (!ctx->engine || ctx->engine->def->auth.users_entity < 0) return CHR_OK;
    const auth_jwt_t *j = http_auth_jwt(ctx->auth);
    if (!j || !getenv("JWT_SECRET") || !*getenv("JWT_SECRET"))
        return chr_fail(err, CHR_EINVAL, "JWT_SECRET",
                        "the definition's auth.users needs JWT_SECRET to sign access tokens");
    int rc = ttl("AUTH_ACCESS_TTL", ACCESS_TTL_DEFAULT, &access_ttl, err);
    if (!rc) rc = ttl("AUTH_REFRESH_TTL", REFRESH_TTL_DEFAULT, &refresh_ttl, err);
    if (!rc) rc = auth_sessions_init(ctx->store, err);
    for (size_t i = 1; !rc && i < sizeof routes / sizeof routes[0]; i++)
        rc = http_router_add(r, &routes[i], err);
    if (!rc) password_prepare();
    return rc;
}
