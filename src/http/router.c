/* router.c - compiled route patterns and path matching; see router.h. */
#include "http/router.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http/uri.h"
#include "util/metrics.h"

typedef struct seg {
    const char *lit; /* literal text (not NUL-terminated), NULL for a parameter */
    size_t len;
    char name[64]; /* parameter name */
} seg_t;

typedef struct compiled {
    http_route_t route;
    seg_t segs[HTTP_MAX_SEGMENTS];
    size_t n_segs;
    unsigned score; /* bit (HTTP_MAX_SEGMENTS-1-i) set when segment i is literal */
    int metrics_id;
} compiled_t;

struct http_router {
    compiled_t *routes;
    size_t n, cap;
};

http_router_t *http_router_new(void)
{
    return calloc(1, sizeof(http_router_t));
}

void http_router_free(http_router_t *r)
{
    if (!r) return;
    free(r->routes);
    free(r);
}

static bool name_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

static int compile(const http_route_t *route, compiled_t *c, chr_err_t *err)
{
    const char *p = route->pattern;
    memset(c, 0, sizeof *c);
    c->route = *route;
    if (!p || p[0] != '/')
        return chr_fail(err, CHR_EINVAL, "pattern", "route pattern \"%s\" must start with '/'",
                        p ? p : "");
    if (!route->method || !*route->method || !route->handler)
        return chr_fail(err, CHR_EINVAL, "pattern", "route \"%s\" needs a method and a handler", p);
    if (strcmp(p, "/") == 0) return CHR_OK; /* the root: zero segments */
    size_t n_params = 0;
    while (*p == '/') {
        const char *s = p + 1, *e = strchr(s, '/');
        size_t len = e ? (size_t)(e - s) : strlen(s);
        if (len == 0)
            return chr_fail(err, CHR_EINVAL, "pattern", "route pattern \"%s\" has an empty segment",
                            route->pattern);
        if (c->n_segs == HTTP_MAX_SEGMENTS)
            return chr_fail(err, CHR_EINVAL, "pattern",
                            "route pattern \"%s\" has more than %d segments", route->pattern,
                            HTTP_MAX_SEGMENTS);
        seg_t *sg = &c->segs[c->n_segs];
        if (s[0] == '{') {
            if (len < 3 || s[len - 1] != '}' || len - 2 >= sizeof sg->name)
                return chr_fail(err, CHR_EINVAL, "pattern",
                                "route pattern \"%s\": a parameter must be a whole segment {name}",
                                route->pattern);
            for (size_t i = 1; i + 1 < len; i++)
                if (!name_char(s[i]))
                    return chr_fail(err, CHR_EINVAL, "pattern",
                                    "route pattern \"%s\": parameter names use A-Z a-z 0-9 _",
                                    route->pattern);
            memcpy(sg->name, s + 1, len - 2);
            sg->name[len - 2] = '\0';
            for (size_t k = 0; k < c->n_segs; k++)
                if (!c->segs[k].lit && strcmp(c->segs[k].name, sg->name) == 0)
                    return chr_fail(err, CHR_EINVAL, "pattern",
                                    "route pattern \"%s\" repeats parameter {%s}", route->pattern,
                                    sg->name);
            if (++n_params > HTTP_MAX_PARAMS)
                return chr_fail(err, CHR_EINVAL, "pattern",
                                "route pattern \"%s\" has more than %d parameters", route->pattern,
                                HTTP_MAX_PARAMS);
        } else {
            if (memchr(s, '{', len) || memchr(s, '}', len))
                return chr_fail(err, CHR_EINVAL, "pattern",
                                "route pattern \"%s\": a parameter must be a whole segment {name}",
                                route->pattern);
            sg->lit = s;
            sg->len = len;
            c->score |= 1u << (HTTP_MAX_SEGMENTS - 1 - c->n_segs);
        }
        c->n_segs++;
        p = s + len;
    }
    return CHR_OK;
}

int http_router_add(http_router_t *r, const http_route_t *route, chr_err_t *err)
{
    compiled_t c;
    int rc = compile(route, &c, err);
    if (rc) return rc;
    for (size_t i = 0; i < r->n; i++)
        if (strcmp(r->routes[i].route.method, route->method) == 0 &&
            strcmp(r->routes[i].route.pattern, route->pattern) == 0)
            return chr_fail(err, CHR_EINVAL, "pattern", "route %s %s is defined twice",
                            route->method, route->pattern);
    c.metrics_id = metrics_route(route->pattern);
    if (c.metrics_id < 0) c.metrics_id = METRICS_ROUTE_UNMATCHED;
    if (r->n == r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 16;
        compiled_t *routes = realloc(r->routes, cap * sizeof *routes);
        if (!routes) return chr_fail(err, CHR_ENOMEM, "", "out of memory");
        r->routes = routes;
        r->cap = cap;
    }
    r->routes[r->n++] = c;
    return CHR_OK;
}

typedef struct rawseg {
    const char *s;
    size_t len;
} rawseg_t;

static bool method_fits(const char *route_method, const char *method)
{
    if (strcmp(route_method, method) == 0) return true;
    return strcmp(method, "HEAD") == 0 && strcmp(route_method, "GET") == 0;
}

static bool shape_fits(const compiled_t *c, const rawseg_t *segs, size_t n)
{
    if (c->n_segs != n) return false;
    for (size_t i = 0; i < n; i++) {
        if (c->segs[i].lit) {
            if (c->segs[i].len != segs[i].len ||
                memcmp(c->segs[i].lit, segs[i].s, segs[i].len) != 0)
                return false;
        } else if (segs[i].len == 0) {
            return false;
        }
    }
    return true;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static void build_allow(const http_router_t *r, const rawseg_t *segs, size_t n, http_match_t *m)
{
    const char *names[32];
    size_t k = 0;
    for (size_t i = 0; i < r->n && k < 32; i++) {
        if (!shape_fits(&r->routes[i], segs, n)) continue;
        bool dup = false;
        for (size_t j = 0; j < k; j++)
            dup = dup || strcmp(names[j], r->routes[i].route.method) == 0;
        if (!dup) names[k++] = r->routes[i].route.method;
    }
    qsort(names, k, sizeof names[0], cmp_str);
    size_t off = 0;
    m->allow[0] = '\0';
    for (size_t j = 0; j < k; j++) {
        int w = snprintf(m->allow + off, sizeof m->allow - off, "%s%s", j ? ", " : "", names[j]);
        if (w < 0 || (size_t)w >= sizeof m->allow - off) break;
        off += (size_t)w;
    }
}

void http_router_match(const http_router_t *r, const char *method, const char *path,
                       size_t path_len, char *scratch, http_match_t *m)
{
    memset(m, 0, sizeof *m);
    m->kind = HTTP_MATCH_NOT_FOUND;
    m->route_id = METRICS_ROUTE_UNMATCHED;
    if (path_len == 0 || path[0] != '/') return;

    rawseg_t segs[HTTP_MAX_SEGMENTS];
    size_t n = 0;
    if (path_len > 1) {
        size_t i = 1;
        while (i <= path_len) {
            if (n == HTTP_MAX_SEGMENTS) return; /* deeper than any pattern */
            const char *s = path + i;
            const char *e = memchr(s, '/', path_len - i);
            size_t len = e ? (size_t)(e - s) : path_len - i;
            segs[n].s = s;
            segs[n].len = len;
            n++;
            i += len + 1;
        }
    }

    const compiled_t *best = NULL, *any_shape = NULL;
    for (size_t i = 0; i < r->n; i++) {
        const compiled_t *c = &r->routes[i];
        if (!shape_fits(c, segs, n)) continue;
        if (!any_shape || c->score > any_shape->score) any_shape = c;
        if (!method_fits(c->route.method, method)) continue;
        if (!best || c->score > best->score) best = c;
    }
    if (!best) {
        if (any_shape) {
            m->kind = HTTP_MATCH_METHOD;
            m->route = &any_shape->route; /* for its flags (public or not) only */
            m->route_id = any_shape->metrics_id;
            m->pattern = any_shape->route.pattern;
            build_allow(r, segs, n, m);
        }
        return;
    }

    m->route = &best->route;
    m->route_id = best->metrics_id;
    m->pattern = best->route.pattern;
    char *out = scratch;
    for (size_t i = 0; i < n; i++) {
        if (best->segs[i].lit) continue;
        http_param_t *p = &m->params[m->n_params++];
        p->name = best->segs[i].name;
        ssize_t len = http_pct_decode(segs[i].s, segs[i].len, out, false);
        const char *why =
            len < 0 ? "has invalid percent-encoding" : http_param_problem(out, (size_t)len);
        if (why) {
            m->kind = HTTP_MATCH_BAD_PARAM;
            m->bad_param = p->name;
            m->bad_reason = why;
            return;
        }
        p->value = out;
        p->len = (size_t)len;
        out += len + 1;
    }
    m->kind = HTTP_MATCH_OK;
}

const char *http_match_param(const http_match_t *m, const char *name)
{
    for (size_t i = 0; i < m->n_params; i++)
        if (strcmp(m->params[i].name, name) == 0) return m->params[i].value;
    return NULL;
}
