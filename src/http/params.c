/* params.c - checked query parameters; see params.h. */
#include "http/params.h"

#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "core/event.h"
#include "http/problem.h"

int http_parse_i64(const char *s, int64_t *out)
{
    if (!s || !*s) return -1;
    const char *p = s[0] == '-' ? s + 1 : s;
    if (!*p) return -1;
    for (const char *q = p; *q; q++)
        if (*q < '0' || *q > '9') return -1;
    errno = 0;
    char *end;
    long long v = strtoll(s, &end, 10);
    if (errno == ERANGE || *end) return -1;
    *out = v;
    return 0;
}

int http_param_int(http_req_t *req, const char *name, int64_t def, int64_t min, int64_t max,
                   int64_t *out)
{
    const char *v;
    size_t len;
    int rc = http_req_query(req, name, &v, &len);
    if (rc == 0) {
        *out = def;
        return 0;
    }
    int64_t n;
    if (rc < 0 || strlen(v) != len || http_parse_i64(v, &n) != 0 || n < min || n > max) {
        http_problem_field(req, HTTP_P_BAD_REQUEST, name,
                           "query parameter %s must be an integer from %lld to %lld", name,
                           (long long)min, (long long)max);
        return -1;
    }
    *out = n;
    return 0;
}

int http_param_choice(http_req_t *req, const char *name, const char *const *choices, int def,
                      int *index)
{
    const char *v;
    size_t len;
    int rc = http_req_query(req, name, &v, &len);
    if (rc == 0) {
        *index = def;
        return 0;
    }
    if (rc > 0)
        for (int i = 0; choices[i]; i++)
            if (strlen(choices[i]) == len && memcmp(choices[i], v, len) == 0) {
                *index = i;
                return 0;
            }
    char list[128] = "";
    size_t off = 0;
    for (int i = 0; choices[i] && off < sizeof list; i++) {
        int w = snprintf(list + off, sizeof list - off, "%s%s", i ? " or " : "", choices[i]);
        if (w < 0) break;
        off += (size_t)w;
    }
    http_problem_field(req, HTTP_P_BAD_REQUEST, name, "query parameter %s must be %s", name, list);
    return -1;
}

int http_param_names(http_req_t *req, const char *name, size_t max, const char ***items, size_t *n)
{
    *items = NULL;
    *n = 0;
    const char *v;
    size_t len;
    int rc = http_req_query(req, name, &v, &len);
    if (rc == 0) return 0;
    if (rc < 0) {
        http_problem_field(req, HTTP_P_BAD_REQUEST, name,
                           "query parameter %s has invalid percent-encoding", name);
        return -1;
    }
    size_t count = 1;
    for (size_t i = 0; i < len; i++)
        count += v[i] == ',';
    if (count > max) {
        http_problem_field(req, HTTP_P_BAD_REQUEST, name,
                           "query parameter %s lists %zu names; at most %zu are allowed", name,
                           count, max);
        return -1;
    }
    const char **list = http_req_alloc(req, count * sizeof *list);
    if (!list) {
        http_problem(req, HTTP_P_SERVICE_UNAVAILABLE, NULL, "out of memory");
        return -1;
    }
    size_t k = 0;
    const char *p = v, *end = v + len;
    while (k < count) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        const char *e = comma ? comma : end;
        char *item = http_req_strndup(req, p, (size_t)(e - p));
        if (!item) {
            http_problem(req, HTTP_P_SERVICE_UNAVAILABLE, NULL, "out of memory");
            return -1;
        }
        chr_err_t err;
        chr_err_clear(&err);
        /* strlen < length means a %00 inside: a control character */
        if (strlen(item) != (size_t)(e - p) || event_check_name(item, name, &err) != CHR_OK) {
            http_problem_field(req, HTTP_P_BAD_REQUEST, name,
                               "query parameter %s item %zu is not a valid name: %s", name, k + 1,
                               err.msg[0] ? err.msg : "it contains a NUL byte");
            return -1;
        }
        list[k++] = item;
        p = e + 1;
    }
    *items = list;
    *n = k;
    return 0;
}

bool http_body_object(http_req_t *req, json_t **out, bool required)
{
    *out = NULL;
    if (!req->body || req->body_len == 0) {
        if (!required) return true;
        http_problem(req, HTTP_P_MALFORMED_JSON, NULL,
                     "the body is empty; a JSON object is expected");
        return false;
    }
    json_error_t je;
    json_t *j = json_loadb(req->body, req->body_len, JSON_REJECT_DUPLICATES, &je);
    if (!j) {
        http_problem(req, HTTP_P_MALFORMED_JSON, NULL,
                     "the body is not valid JSON: %s (line %d, column %d)", je.text, je.line,
                     je.column);
        return false;
    }
    if (!json_is_object(j)) {
        json_decref(j);
        http_problem_field(req, HTTP_P_VALIDATION, "", "the body must be a JSON object");
        return false;
    }
    *out = j;
    return true;
}
