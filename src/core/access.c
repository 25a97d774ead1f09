/* access.c - access rules and their evaluation; see access.h. Pure. */
#include "core/access.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const access_scope_t access_scope_full = {.full = true, .who = NULL, .tenant = NULL};

static bool field_name_ok(const char *s)
{
    if (!(s[0] >= 'a' && s[0] <= 'z')) return false;
    size_t n = 1;
    for (const char *p = s + 1; *p; p++, n++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_')) return false;
    return n <= 63;
}

static bool role_name_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 127) return false;
    for (const char *p = s; *p; p++)
        if ((unsigned char)*p <= ' ' || *p == 0x7f || *p == ',') return false;
    return true;
}

static bool parse_one(const char *text, access_rule_t *r, char *why, size_t size)
{
    memset(r, 0, sizeof *r);
    if (strcmp(text, "public") == 0) {
        r->kind = ACCESS_PUBLIC;
        return true;
    }
    if (strcmp(text, "authenticated") == 0) {
        r->kind = ACCESS_AUTHENTICATED;
        return true;
    }
    if (strncmp(text, "role:", 5) == 0) {
        if (!role_name_ok(text + 5)) {
            snprintf(why, size, "\"%s\": a role name is 1-127 characters without spaces, commas or "
                                "control characters", text);
            return false;
        }
        r->kind = ACCESS_ROLE;
    } else if (strncmp(text, "owner:", 6) == 0) {
        if (!field_name_ok(text + 6)) {
            snprintf(why, size, "\"%s\": owner: must name a field of the entity", text);
            return false;
        }
        r->kind = ACCESS_OWNER;
    } else {
        snprintf(why, size, "unknown rule \"%s\"; expected public, authenticated, role:<name> or "
                            "owner:<field>", text);
        return false;
    }
    r->arg = strdup(strchr(text, ':') + 1);
    if (!r->arg) {
        snprintf(why, size, "out of memory");
        return false;
    }
    return true;
}

bool access_parse(const json_t *v, access_set_t *out, char *why, size_t size)
{
    memset(out, 0, sizeof *out);
    out->owner = -1;
    size_t n = json_is_string(v) ? 1 : json_is_array(v) ? json_array_size(v) : 0;
    if (n == 0) {
        snprintf(why, size, "must be a rule (public, authenticated, role:<name>, owner:<field>) or "
                            "a non-empty array of rules, any of which admits the caller");
        return false;
    }
    out->rules = calloc(n, sizeof *out->rules);
    if (!out->rules) {
        snprintf(why, size, "out of memory");
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        const json_t *item = json_is_string(v) ? v : json_array_get(v, i);
        if (!json_is_string(item)) {
            snprintf(why, size, "[%zu]: must be a string rule", i);
            access_set_free(out);
            return false;
        }
        const char *text = json_string_value(item);
        for (size_t j = 0; j < i; j++)
            if (strcmp(json_string_value(json_array_get(v, j)), text) == 0) {
                snprintf(why, size, "\"%s\" is given twice", text);
                access_set_free(out);
                return false;
            }
        if (!parse_one(text, &out->rules[i], why, size)) {
            access_set_free(out);
            return false;
        }
        out->n = i + 1;
        if (out->rules[i].kind == ACCESS_OWNER) {
            if (out->owner >= 0) {
                snprintf(why, size, "at most one owner: rule per operation");
                access_set_free(out);
                return false;
            }
            out->owner = (int)i;
        }
    }
    return true;
}

bool access_default(access_set_t *out)
{
    memset(out, 0, sizeof *out);
    out->owner = -1;
    out->rules = calloc(1, sizeof *out->rules);
    if (!out->rules) return false;
    out->rules[0].kind = ACCESS_AUTHENTICATED;
    out->n = 1;
    out->is_default = true;
    return true;
}

void access_set_free(access_set_t *s)
{
    if (!s) return;
    for (size_t i = 0; i < s->n; i++)
        free(s->rules[i].arg);
    free(s->rules);
    memset(s, 0, sizeof *s);
    s->owner = -1;
}

bool access_is_public(const access_set_t *s)
{
    for (size_t i = 0; i < s->n; i++)
        if (s->rules[i].kind == ACCESS_PUBLIC) return true;
    return false;
}

const char *access_owner_field(const access_set_t *s)
{
    return s->owner >= 0 ? s->rules[s->owner].arg : NULL;
}

access_verdict_t access_check(const access_set_t *s, const access_scope_t *scope)
{
    if (scope->full) return ACCESS_ALLOW;
    const auth_principal_t *who = scope->who && scope->who->kind != AUTH_NONE ? scope->who : NULL;
    bool owned = false;
    for (size_t i = 0; i < s->n; i++) {
        const access_rule_t *r = &s->rules[i];
        switch (r->kind) {
        case ACCESS_PUBLIC: return ACCESS_ALLOW;
        case ACCESS_AUTHENTICATED:
            if (who) return ACCESS_ALLOW;
            break;
        case ACCESS_ROLE:
            if (who && auth_principal_has_role(who, r->arg)) return ACCESS_ALLOW;
            break;
        case ACCESS_OWNER:
            if (who && who->sub[0]) owned = true;
            break;
        }
    }
    if (owned) return ACCESS_OWNED;
    return who ? ACCESS_FORBIDDEN : ACCESS_UNAUTHENTICATED;
}

bool access_owns(const access_scope_t *scope, const char *value)
{
    const auth_principal_t *who = scope->who;
    return who && who->sub[0] && value && strcmp(who->sub, value) == 0;
}

const char *access_tenant(const access_scope_t *scope)
{
    return scope->tenant && scope->tenant[0] ? scope->tenant : NULL;
}
