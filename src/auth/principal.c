/* principal.c - the request principal's helpers; see principal.h. */
#include "auth/principal.h"

#include <string.h>

const char *auth_kind_name(auth_kind_t k)
{
    switch (k) {
    case AUTH_NONE:
        return "none";
    case AUTH_API_SECRET:
        return "api_secret";
    case AUTH_API_KEY:
        return "api_key";
    case AUTH_JWT:
        return "jwt";
    case AUTH_LOGIN:
        return "login";
    }
    return "none";
}

static bool clean(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f) return false;
    return true;
}

bool auth_copy_claim(char *dst, size_t dst_size, const char *s, size_t n)
{
    dst[0] = '\0';
    if (n >= dst_size || !clean(s, n)) return false;
    memcpy(dst, s, n);
    dst[n] = '\0';
    return true;
}

bool auth_principal_add_role(auth_principal_t *p, const char *role, size_t n)
{
    if (n == 0 || !clean(role, n) || p->n_roles >= AUTH_MAX_ROLES) return false;
    size_t off = p->n_roles ? p->role_off[p->n_roles - 1] +
                                  strlen(p->roles_buf + p->role_off[p->n_roles - 1]) + 1
                            : 0;
    if (off + n + 1 > sizeof p->roles_buf) return false;
    memcpy(p->roles_buf + off, role, n);
    p->roles_buf[off + n] = '\0';
    p->role_off[p->n_roles++] = (uint16_t)off;
    return true;
}

const char *auth_principal_role(const auth_principal_t *p, size_t i)
{
    return i < p->n_roles ? p->roles_buf + p->role_off[i] : NULL;
}

bool auth_principal_has_role(const auth_principal_t *p, const char *role)
{
    for (size_t i = 0; i < p->n_roles; i++)
        if (strcmp(p->roles_buf + p->role_off[i], role) == 0) return true;
    return false;
}
