/* sessions.c - refresh tokens, stored as digests; see sessions.h. */
#include "auth/sessions.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/query.h"
#include "core/uuid.h"

#define TABLE "chronicle_auth_refresh"
#define HASH_HEX (2 * 32 + 1)

static const char ddl[] =
    "CREATE TABLE IF NOT EXISTS " TABLE " (token_hash TEXT PRIMARY KEY, family TEXT NOT NULL, "
    "user_key TEXT NOT NULL, expires_at BIGINT NOT NULL, revoked INTEGER NOT NULL, "
    "created_at BIGINT NOT NULL)";
static const char ddl_index[] =
    "CREATE INDEX IF NOT EXISTS " TABLE "_family ON " TABLE " (family)";
static const char ddl_expiry[] =
    "CREATE INDEX IF NOT EXISTS " TABLE "_expires ON " TABLE " (expires_at)";

static void token_hash(const char *token, char out[HASH_HEX])
{
    unsigned char d[32];
    crypto_generichash(d, sizeof d, (const unsigned char *)token, strlen(token), NULL, 0);
    sodium_bin2hex(out, HASH_HEX, d, sizeof d);
}

typedef struct work {
    int kind; /* 0 init, 1 issue, 2 revoke family */
    const char *hash, *family, *user_key, *rotate_hash;
    int64_t expires_at, now;
} work_t;

static int apply(store_tx_t *tx, void *user, chr_err_t *err)
{
    work_t *w = user;
    int rc;
    if (w->kind == 0) {
        rc = store_tx_exec(tx, ddl, NULL, 0, NULL, err);
        if (!rc) rc = store_tx_exec(tx, ddl_index, NULL, 0, NULL, err);
        return rc ? rc : store_tx_exec(tx, ddl_expiry, NULL, 0, NULL, err);
    }
    if (w->kind == 2) {
        store_val_t f = {.type = SV_TEXT, .s = w->family};
        return store_tx_exec(tx, "UPDATE " TABLE " SET revoked = 1 WHERE family = ?", &f, 1,
                             NULL, err);
    }
    if (w->rotate_hash) {
        store_val_t h = {.type = SV_TEXT, .s = w->rotate_hash};
        int64_t changes = 0;
        rc = store_tx_exec(tx, "UPDATE " TABLE " SET revoked = 1 WHERE token_hash = ? AND revoked = 0",
                           &h, 1, &changes, err);
        if (rc) return rc;
        if (changes != 1) return chr_fail(err, CHR_ECONFLICT, "refresh_token", "already used");
    }
    /* each issue also drops rows that expired (an index range): the table
     * holds live sessions only, whatever the login rate */
    store_val_t now = {.type = SV_INT, .i = w->now};
    rc = store_tx_exec(tx, "DELETE FROM " TABLE " WHERE expires_at < ?", &now, 1, NULL, err);
    if (rc) return rc;
    store_val_t v[6] = {
        {.type = SV_TEXT, .s = w->hash},     {.type = SV_TEXT, .s = w->family},
        {.type = SV_TEXT, .s = w->user_key}, {.type = SV_INT, .i = w->expires_at},
        {.type = SV_INT, .i = 0},            {.type = SV_INT, .i = w->now},
    };
    return store_tx_exec(tx,
                         "INSERT INTO " TABLE " (token_hash, family, user_key, expires_at, "
                         "revoked, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                         v, 6, NULL, err);
}

static int run(store_t *s, work_t *w, chr_err_t *err)
{
    store_uow_t uow = {.apply = apply, .apply_user = w};
    return store_commit(s, &uow, err);
}

int auth_sessions_init(store_t *s, chr_err_t *err)
{
    work_t w = {.kind = 0};
    return run(s, &w, err);
}

int auth_sessions_issue(store_t *s, const char *user_key, int64_t now, int64_t ttl_s,
                        const char *rotate, const char *rotate_family,
                        char token[AUTH_REFRESH_TOKEN_LEN + 1], char family[AUTH_FAMILY_LEN + 1],
                        chr_err_t *err)
{
    unsigned char raw[32];
    randombytes_buf(raw, sizeof raw);
    char *t = query_b64url_encode(raw, sizeof raw);
    sodium_memzero(raw, sizeof raw);
    if (!t) return chr_fail(err, CHR_ENOMEM, "", "out of memory");
    snprintf(token, AUTH_REFRESH_TOKEN_LEN + 1, "%s", t);
    sodium_memzero(t, strlen(t));
    free(t);
    if (rotate_family)
        snprintf(family, AUTH_FAMILY_LEN + 1, "%s", rotate_family);
    else
        uuid_v7_generate(family);
    char hash[HASH_HEX], old[HASH_HEX];
    token_hash(token, hash);
    if (rotate) token_hash(rotate, old);
    work_t w = {.kind = 1, .hash = hash, .family = family, .user_key = user_key,
                .rotate_hash = rotate ? old : NULL, .expires_at = now + ttl_s, .now = now};
    int rc = run(s, &w, err);
    if (rc) sodium_memzero(token, AUTH_REFRESH_TOKEN_LEN + 1);
    return rc;
}

typedef struct lookup {
    auth_session_t *out;
    bool found;
} lookup_t;

static int lookup_row(void *user, const store_val_t *v, size_t n)
{
    lookup_t *l = user;
    if (n < 4 || v[0].type != SV_TEXT || v[1].type != SV_TEXT) return 1;
    snprintf(l->out->family, sizeof l->out->family, "%s", v[0].s);
    snprintf(l->out->user_key, sizeof l->out->user_key, "%s", v[1].s);
    l->out->expires_at = v[2].i;
    l->out->revoked = v[3].i != 0;
    l->found = true;
    return 1;
}

int auth_sessions_lookup(store_t *s, const char *token, auth_session_t *out, chr_err_t *err)
{
    memset(out, 0, sizeof *out);
    if (strlen(token) != AUTH_REFRESH_TOKEN_LEN)
        return chr_fail(err, CHR_ENOTFOUND, "refresh_token", "unknown refresh token");
    char hash[HASH_HEX];
    token_hash(token, hash);
    store_val_t h = {.type = SV_TEXT, .s = hash};
    lookup_t l = {.out = out};
    int rc = store_query(s,
                         "SELECT family, user_key, expires_at, revoked FROM " TABLE
                         " WHERE token_hash = ?",
                         &h, 1, lookup_row, &l, err);
    if (rc) return rc;
    if (!l.found) return chr_fail(err, CHR_ENOTFOUND, "refresh_token", "unknown refresh token");
    return CHR_OK;
}

int auth_sessions_revoke_family(store_t *s, const char *family, chr_err_t *err)
{
    work_t w = {.kind = 2, .family = family};
    return run(s, &w, err);
}
