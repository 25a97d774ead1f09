/*
 * principal.h - who is making a request: the subject, roles and tenant a
 * credential vouches for, and which credential it was. Filled by http/auth.c
 * for every authenticated request (http_req_t.principal) so handlers, and
 * the access rules and tenancy built on top, ask one place.
 *
 * Fixed-size and free of pointers so it can be copied (the token cache
 * hands out copies). Roles are NUL-terminated strings packed into roles_buf;
 * read them with auth_principal_role. Pure: no I/O.
 */
#ifndef CHRONICLE_AUTH_PRINCIPAL_H
#define CHRONICLE_AUTH_PRINCIPAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define AUTH_SUB_MAX 255    /* bytes of sub and tenant_id */
#define AUTH_NAME_MAX 127   /* bytes of an API key's name */
#define AUTH_MAX_ROLES 16   /* roles per principal */
#define AUTH_ROLES_BYTES 512 /* all roles, each with its NUL */

typedef enum auth_kind {
    AUTH_NONE = 0,   /* no credential (public route, or auth disabled) */
    AUTH_API_SECRET, /* one of API_SECRET: full access, no roles */
    AUTH_API_KEY,    /* a named key (API_KEYS_FILE or auth.api_keys) */
    AUTH_JWT,        /* a bearer JWT from an identity provider (or JWT_SECRET) */
    AUTH_LOGIN,      /* an access token this server issued at /v1/auth/login */
} auth_kind_t;

typedef struct auth_principal {
    auth_kind_t kind;
    char sub[AUTH_SUB_MAX + 1];       /* JWT subject, user key; "" for API secrets */
    char tenant_id[AUTH_SUB_MAX + 1]; /* "" when none */
    char key_name[AUTH_NAME_MAX + 1]; /* API key name; "" otherwise */
    char roles_buf[AUTH_ROLES_BYTES];
    uint16_t role_off[AUTH_MAX_ROLES];
    uint8_t n_roles;
} auth_principal_t;

/* The name of a kind: "none", "api_secret", "api_key", "jwt", "login". */
const char *auth_kind_name(auth_kind_t k);

/* Copies s (n bytes) into dst of size dst_size when it fits (NUL added).
 * Returns false, leaving dst empty, when it does not or s holds a NUL or a
 * control character. */
bool auth_copy_claim(char *dst, size_t dst_size, const char *s, size_t n);

/* Adds a role of n bytes. False when the role is empty, has a control
 * character, or there is no room (AUTH_MAX_ROLES / AUTH_ROLES_BYTES). */
bool auth_principal_add_role(auth_principal_t *p, const char *role, size_t n);

/* The i-th role (i < p->n_roles), borrowed from p. */
const char *auth_principal_role(const auth_principal_t *p, size_t i);

/* True when p has the role. */
bool auth_principal_has_role(const auth_principal_t *p, const char *role);

#endif
