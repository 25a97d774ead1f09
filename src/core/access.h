/*
 * access.h - access rules: who may run an operation on an entity, and
 * which rows a caller may see. Pure: no I/O, no HTTP.
 *
 * A rule set is a list of rules of which any one admits the caller:
 *   public         anyone, with or without a credential
 *   authenticated  any valid credential
 *   role:<name>    a credential carrying the role
 *   owner:<field>  a credential whose subject equals the row's field (the
 *                  key or a string, email or ref field); at most one per set
 * A set is written in the definition as a string or an array of strings.
 *
 * access_check answers for one caller before any row is read: allowed,
 * allowed only for rows it owns (the owner rule is the only one that can
 * admit it), or denied (no credential: unauthenticated; else forbidden).
 */
#ifndef CHRONICLE_CORE_ACCESS_H
#define CHRONICLE_CORE_ACCESS_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "auth/principal.h"

typedef enum access_kind {
    ACCESS_PUBLIC,
    ACCESS_AUTHENTICATED,
    ACCESS_ROLE,
    ACCESS_OWNER,
} access_kind_t;

typedef struct access_rule {
    access_kind_t kind;
    char *arg; /* role name or owner field; NULL otherwise (owned) */
} access_rule_t;

typedef struct access_set {
    access_rule_t *rules; /* owned */
    size_t n;
    int owner;            /* index into rules of the owner rule, -1 when none */
    bool is_default;      /* not written in the definition ("authenticated") */
} access_set_t;

/* The caller, as the engine sees it. Built from the request's principal. */
typedef struct access_scope {
    bool full;                    /* API_SECRET or auth disabled: no rule or tenant applies
                                     (tenant, when set, still confines) */
    const auth_principal_t *who;  /* NULL when the request carries no credential */
    const char *tenant;           /* the caller's tenant; NULL or "" when none */
} access_scope_t;

/* Full access, no tenant: for internal callers (logins, tools, tests). */
extern const access_scope_t access_scope_full;

typedef enum access_verdict {
    ACCESS_ALLOW,         /* every row the tenant confines to */
    ACCESS_OWNED,         /* only rows whose owner field equals the caller's sub */
    ACCESS_UNAUTHENTICATED,
    ACCESS_FORBIDDEN,
} access_verdict_t;

/* Parses a rule set ("role:admin" or ["owner:owner_id", "role:admin"]).
 * Field names of owner rules are only checked for syntax here; the caller
 * checks they name fields. On failure returns false with a message in why
 * (size bytes); *out is left empty. */
bool access_parse(const json_t *v, access_set_t *out, char *why, size_t size);

/* The set {"authenticated"}, marked as the default. False on OOM. */
bool access_default(access_set_t *out);

void access_set_free(access_set_t *s);

/* Whether the set holds a public rule. */
bool access_is_public(const access_set_t *s);

/* The owner field of the set, or NULL. */
const char *access_owner_field(const access_set_t *s);

/* The verdict for a caller. A scope with full access is always allowed. */
access_verdict_t access_check(const access_set_t *s, const access_scope_t *scope);

/* For an ACCESS_OWNED verdict: whether a row whose owner field holds value
 * (NULL when unset) belongs to the caller. */
bool access_owns(const access_scope_t *scope, const char *value);

/* The caller's tenant, or NULL when it has none. */
const char *access_tenant(const access_scope_t *scope);

#endif
