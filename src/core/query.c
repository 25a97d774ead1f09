/*
 * query.c - list query parsing, SQL generation and keyset cursors; see
 * query.h for the query language and the projection layout it assumes.
 *
 * Layout of this file: columns (which names may be filtered or sorted and
 * how they are stored), values (turning parameter text into bound values),
 * filters, sort, limit, cursors, SQL. Nothing here touches a database.
 */
#include "core/query.h"

#include "core/utf8.h"

#include <assert.h>
#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/field.h"
#include "core/timefmt.h"

/* Sentinels for NULL sort values: the lowest value of each storage type
 * (see query.h). The integer one is INT64_MIN + 1 so that it is a plain
 * bigint literal in PostgreSQL (-9223372036854775808 would be numeric). */
#define SENTINEL_INT (INT64_MIN + 1)
#define SENTINEL_INT_SQL "-9223372036854775807"
#define SENTINEL_BOOL (-1)
#define SENTINEL_BOOL_SQL "-1"
#define SENTINEL_REAL (-DBL_MAX)
#define SENTINEL_REAL_SQL "-1.7976931348623157e308"
#define SENTINEL_TEXT ""
#define SENTINEL_TEXT_SQL "''"

#define TIMESTAMP_MSG "must be an RFC 3339 timestamp such as 2026-01-02T03:04:05Z"

/* ---- small helpers ------------------------------------------------------ */

static char *dup_str(const char *s)
{
    size_t len = strlen(s);
    char *d = malloc(len + 1);
    if (d) memcpy(d, s, len + 1);
    return d;
}

static int oom(chr_err_t *err)
{
    return chr_fail(err, CHR_ENOMEM, "", "out of memory");
}


/* Strict decimal int64: optional '-', then digits, nothing else. */
static bool parse_i64(const char *s, int64_t *out)
{
    const char *p = s[0] == '-' ? s + 1 : s;
    if (*p < '0' || *p > '9') return false;
    for (const char *q = p; *q; q++)
        if (*q < '0' || *q > '9') return false;
    errno = 0;
    char *end;
    long long v = strtoll(s, &end, 10);
    if (errno == ERANGE || *end != '\0') return false;
    *out = (int64_t)v;
    return true;
}

/* Strict finite decimal number: JSON-like characters only (no blanks, hex,
 * inf or nan), the whole text consumed. */
static bool parse_double(const char *s, double *out)
{
    if (!*s) return false;
    for (const char *p = s; *p; p++)
        if (!strchr("0123456789+-.eE", *p)) return false;
    errno = 0;
    char *end;
    double d = strtod(s, &end);
    if (*end != '\0' || !isfinite(d)) return false;
    *out = d == 0 ? 0.0 : d; /* -0 and 0 are the same filter value */
    return true;
}

/* FNV-1a 64, continued from h. A checksum, not a MAC (see query.h). */
static uint64_t fnv1a(uint64_t h, const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)s[i];
        h *= UINT64_C(0x100000001b3);
    }
    return h;
}
#define FNV_SEED UINT64_C(0xcbf29ce484222325)

/* ---- growing string ----------------------------------------------------- */

typedef struct sbuf {
    char *p;
    size_t len, cap;
    bool failed;
} sbuf_t;

static void sb_addf(sbuf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void sb_addf(sbuf_t *b, const char *fmt, ...)
{
    if (b->failed) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        size_t room = b->cap - b->len;
        int n = vsnprintf(b->p ? b->p + b->len : NULL, room, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->failed = true;
            return;
        }
        if ((size_t)n < room) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = b->cap ? b->cap : 256;
        while (cap - b->len <= (size_t)n)
            cap *= 2;
        char *np = realloc(b->p, cap);
        if (!np) {
            b->failed = true;
            return;
        }
        b->p = np;
        b->cap = cap;
    }
}

/* Appends a double-quoted SQL identifier ("" doubles a quote). */
static void sb_ident(sbuf_t *b, const char *name)
{
    sb_addf(b, "\"");
    for (const char *p = name; *p; p++)
        sb_addf(b, *p == '"' ? "\"\"" : "%c", *p);
    sb_addf(b, "\"");
}

/* ---- columns ------------------------------------------------------------ */

typedef struct col {
    const char *name;
    query_kind_t kind;
    bool nullable;
    bool email;
    bool like_ok;             /* string, text, email, enum, ref, cron, key */
    const field_def_t *field; /* NULL for the key and system columns */
} col_t;

typedef enum { COL_OK, COL_UNKNOWN, COL_JSON } col_res_t;

static const field_def_t *find_field(const entity_def_t *e, const char *name)
{
    for (size_t i = 0; i < e->n_fields; i++)
        if (strcmp(e->fields[i].name, name) == 0) return &e->fields[i];
    return NULL;
}

/* Resolves a filter or sort name. A private field is COL_UNKNOWN unless
 * allow_private (trusted route options), so callers cannot tell it from a
 * field that does not exist. */
static col_res_t resolve_col(const entity_def_t *e, const char *name, bool allow_private, col_t *c)
{
    memset(c, 0, sizeof *c);
    c->name = name;
    if (strcmp(name, e->key) == 0) {
        c->kind = QK_TEXT;
        c->like_ok = true;
        return COL_OK;
    }
    if (strcmp(name, "version") == 0) {
        c->kind = QK_INT;
        return COL_OK;
    }
    if (strcmp(name, "created_at") == 0 || strcmp(name, "updated_at") == 0) {
        c->kind = QK_TIME;
        return COL_OK;
    }
    const field_def_t *f = find_field(e, name);
    if (!f || (f->is_private && !allow_private)) return COL_UNKNOWN;
    if (f->type == FT_JSON) return COL_JSON;
    c->field = f;
    c->nullable = true;
    switch (f->type) {
    case FT_INTEGER:
        c->kind = QK_INT;
        break;
    case FT_NUMBER:
        c->kind = QK_REAL;
        break;
    case FT_BOOLEAN:
        c->kind = QK_BOOL;
        break;
    case FT_TIMESTAMP:
        c->kind = QK_TSTEXT;
        break;
    default:
        c->kind = QK_TEXT;
        c->like_ok = true;
        c->email = f->type == FT_EMAIL;
        break;
    }
    return COL_OK;
}

/* ---- values ------------------------------------------------------------- */

static void val_free(store_val_t *v)
{
    if (v->type == SV_TEXT) free((void *)v->s);
    v->type = SV_NULL;
    v->s = NULL;
}

static void vals_free(store_val_t *v, size_t n)
{
    if (!v) return;
    for (size_t i = 0; i < n; i++)
        val_free(&v[i]);
    free(v);
}

/* Runs field_check_value on s as a JSON string; on success, when norm,
 * *norm gets field_normalize's text (new). Returns 0, 1 = invalid (msg
 * filled), or -1 = out of memory. */
static int check_as_json(const field_def_t *f, const char *s, char *msg, size_t size, char **norm)
{
    json_t *j = json_string(s);
    if (!j) return -1;
    int rc = 0;
    if (!field_check_value(f, j, msg, size)) {
        rc = 1;
    } else if (norm) {
        json_t *n = field_normalize(f, j);
        const char *t = n ? json_string_value(n) : NULL;
        *norm = t ? dup_str(t) : NULL;
        if (!*norm) rc = -1;
        json_decref(n);
    }
    json_decref(j);
    return rc;
}

/* The LIKE pattern of a like.value: '*' -> '%', and '%', '_', '\' escaped
 * with '\' (the SQL says ESCAPE '\'). New string or NULL. */
static char *like_pattern(const char *s)
{
    size_t len = strlen(s);
    char *out = malloc(2 * len + 1);
    if (!out) return NULL;
    size_t o = 0;
    for (const char *p = s; *p; p++) {
        if (*p == '*') {
            out[o++] = '%';
        } else {
            if (*p == '%' || *p == '_' || *p == '\\') out[o++] = '\\';
            out[o++] = *p;
        }
    }
    out[o] = '\0';
    return out;
}

/* Converts the text s of a filter on column c with operator op into a bound
 * value. param names the parameter in errors. */
static int convert_value(const col_t *c, query_op_t op, const char *param, const char *s,
                         store_val_t *out, chr_err_t *err)
{
    memset(out, 0, sizeof *out);
    char msg[320];
    switch (c->kind) {
    case QK_INT: {
        int64_t v;
        if (!parse_i64(s, &v))
            return chr_fail(err, CHR_EINVAL, param, "%s: must be an integer", param);
        out->type = SV_INT;
        out->i = v;
        return CHR_OK;
    }
    case QK_REAL: {
        double d;
        if (!parse_double(s, &d))
            return chr_fail(err, CHR_EINVAL, param, "%s: must be a number", param);
        out->type = SV_REAL;
        out->r = d;
        return CHR_OK;
    }
    case QK_BOOL:
        if (strcmp(s, "true") != 0 && strcmp(s, "false") != 0)
            return chr_fail(err, CHR_EINVAL, param, "%s: must be true or false", param);
        out->type = SV_INT;
        out->i = s[0] == 't';
        return CHR_OK;
    case QK_TIME: {
        int64_t us;
        if (time_parse_rfc3339(s, &us) != 0)
            return chr_fail(err, CHR_EINVAL, param, "%s: " TIMESTAMP_MSG, param);
        out->type = SV_INT;
        out->i = us;
        return CHR_OK;
    }
    case QK_TSTEXT: {
        if (!utf8_valid(s, strlen(s)))
            return chr_fail(err, CHR_EINVAL, param, "%s: " TIMESTAMP_MSG, param);
        char *norm = NULL;
        int rc = check_as_json(c->field, s, msg, sizeof msg, &norm);
        if (rc < 0) return oom(err);
        if (rc > 0) return chr_fail(err, CHR_EINVAL, param, "%s: %s", param, msg);
        out->type = SV_TEXT;
        out->s = norm;
        return CHR_OK;
    }
    case QK_TEXT: {
        if (!utf8_valid(s, strlen(s)))
            return chr_fail(err, CHR_EINVAL, param, "%s: must be valid UTF-8", param);
        if (op != QOP_LIKE && c->field && c->field->type == FT_ENUM) {
            int rc = check_as_json(c->field, s, msg, sizeof msg, NULL);
            if (rc < 0) return oom(err);
            if (rc > 0) return chr_fail(err, CHR_EINVAL, param, "%s: %s", param, msg);
        }
        char *t = op == QOP_LIKE ? like_pattern(s) : dup_str(s);
        if (!t) return oom(err);
        out->type = SV_TEXT;
        out->s = t;
        return CHR_OK;
    }
    }
    assert(!"unknown column kind");
    return chr_fail(err, CHR_EINVAL, param, "%s: cannot be filtered", param);
}

/* ---- filters ------------------------------------------------------------ */

static const struct {
    const char *name;
    query_op_t op;
} OPS[] = {
    {"eq", QOP_EQ}, {"neq", QOP_NEQ}, {"gt", QOP_GT},     {"gte", QOP_GTE},
    {"lt", QOP_LT}, {"lte", QOP_LTE}, {"like", QOP_LIKE}, {"in", QOP_IN},
};

static const char *op_name(query_op_t op)
{
    for (size_t i = 0; i < sizeof OPS / sizeof OPS[0]; i++)
        if (OPS[i].op == op) return OPS[i].name;
    return "is";
}

/* Splits "op.value" into op and value; anything else is eq with the whole
 * text (only a known operator name followed by '.' is an operator). */
static const char *split_op(const char *s, query_op_t *op)
{
    const char *dot = strchr(s, '.');
    *op = QOP_EQ;
    if (!dot) return s;
    size_t n = (size_t)(dot - s);
    for (size_t i = 0; i < sizeof OPS / sizeof OPS[0]; i++) {
        if (strlen(OPS[i].name) == n && memcmp(OPS[i].name, s, n) == 0) {
            *op = OPS[i].op;
            return dot + 1;
        }
    }
    return s;
}

static void filter_free(query_filter_t *f)
{
    free(f->column);
    vals_free(f->vals, f->n_vals);
    memset(f, 0, sizeof *f);
}

/* Appends a filter to q (taking nothing from the caller on failure). */
static int push_filter(query_t *q, const col_t *c, query_op_t op, store_val_t *vals, size_t n_vals,
                       chr_err_t *err)
{
    query_filter_t *nf = realloc(q->filters, (q->n_filters + 1) * sizeof *nf);
    char *col = dup_str(c->name);
    if (nf) q->filters = nf;
    if (!nf || !col) {
        free(col);
        vals_free(vals, n_vals);
        return oom(err);
    }
    query_filter_t *f = &q->filters[q->n_filters++];
    memset(f, 0, sizeof *f);
    f->column = col;
    f->kind = c->kind;
    f->nullable = c->nullable;
    f->email = c->email;
    f->op = op;
    f->vals = vals;
    f->n_vals = n_vals;
    return CHR_OK;
}

int query_restrict(query_t *q, const char *column, bool nullable, const char *value,
                   chr_err_t *err)
{
    store_val_t *val = calloc(1, sizeof *val);
    char *copy = dup_str(value);
    if (!val || !copy) {
        free(val);
        free(copy);
        return oom(err);
    }
    *val = (store_val_t){.type = SV_TEXT, .s = copy};
    col_t c = {.name = column, .kind = QK_TEXT, .nullable = nullable};
    return push_filter(q, &c, QOP_EQ, val, 1, err);
}

/* Parses one filter name=text: a query parameter ("op.value" syntax, public
 * fields only), or a route's fixed filter (trusted: private fields allowed,
 * the text is a plain value compared with eq). */
static int parse_filter(query_t *q, const entity_def_t *e, const char *name, const char *text,
                        bool fixed, chr_err_t *err)
{
    col_t c;
    switch (resolve_col(e, name, fixed, &c)) {
    case COL_UNKNOWN:
        return chr_fail(err, CHR_EINVAL, name, "%s: %s has no field %s", name, e->name, name);
    case COL_JSON:
        return chr_fail(err, CHR_EINVAL, name, "%s: json fields cannot be filtered", name);
    case COL_OK:
        break;
    }

    query_op_t op = QOP_EQ;
    const char *v = fixed ? text : split_op(text, &op);
    if (c.kind == QK_BOOL && op != QOP_EQ && op != QOP_NEQ && op != QOP_IN)
        return chr_fail(err, CHR_EINVAL, name,
                        "%s: operator %s does not apply to boolean fields (use eq, neq or in)",
                        name, op_name(op));
    if (op == QOP_LIKE && !c.like_ok)
        return chr_fail(err, CHR_EINVAL, name,
                        "%s: operator like applies only to string, text, email, enum, ref and "
                        "cron fields",
                        name);

    if (op != QOP_IN) {
        store_val_t *val = calloc(1, sizeof *val);
        if (!val) return oom(err);
        int rc = convert_value(&c, op, name, v, val, err);
        if (rc != CHR_OK) {
            free(val);
            return rc;
        }
        return push_filter(q, &c, op, val, 1, err);
    }

    size_t n = 1;
    for (const char *p = v; *p; p++)
        n += *p == ',';
    if (n > QUERY_MAX_IN_VALUES)
        return chr_fail(err, CHR_EINVAL, name, "%s: in takes at most %d values", name,
                        QUERY_MAX_IN_VALUES);
    store_val_t *vals = calloc(n, sizeof *vals);
    char *copy = dup_str(v);
    if (!vals || !copy) {
        free(vals);
        free(copy);
        return oom(err);
    }
    size_t i = 0;
    int rc = CHR_OK;
    for (char *item = copy; rc == CHR_OK && i < n; i++) {
        char *comma = strchr(item, ',');
        if (comma) *comma = '\0';
        rc = convert_value(&c, op, name, item, &vals[i], err);
        item = comma ? comma + 1 : item + strlen(item);
    }
    free(copy);
    if (rc != CHR_OK) {
        vals_free(vals, n);
        return rc;
    }
    return push_filter(q, &c, op, vals, n, err);
}

/* One entry of list_opts.fixed_filters: field -> value of the field's JSON
 * type, compared with eq (null: the field is unset). */
static int parse_fixed_filter(query_t *q, const entity_def_t *e, const char *name, const json_t *v,
                              chr_err_t *err)
{
    char buf[64];
    const char *text;
    switch (json_typeof(v)) {
    case JSON_STRING:
        text = json_string_value(v);
        break;
    case JSON_INTEGER:
        snprintf(buf, sizeof buf, "%lld", (long long)json_integer_value(v));
        text = buf;
        break;
    case JSON_REAL:
        snprintf(buf, sizeof buf, "%.17g", json_real_value(v));
        text = buf;
        break;
    case JSON_TRUE:
        text = "true";
        break;
    case JSON_FALSE:
        text = "false";
        break;
    case JSON_NULL: {
        col_t c;
        switch (resolve_col(e, name, true, &c)) {
        case COL_UNKNOWN:
            return chr_fail(err, CHR_EINVAL, name, "%s: %s has no field %s", name, e->name, name);
        case COL_JSON:
            return chr_fail(err, CHR_EINVAL, name, "%s: json fields cannot be filtered", name);
        case COL_OK:
            break;
        }
        return push_filter(q, &c, QOP_IS_NULL, NULL, 0, err);
    }
    default:
        return chr_fail(err, CHR_EINVAL, name,
                        "%s: a fixed filter must be a string, number, boolean or null", name);
    }
    return parse_filter(q, e, name, text, true, err);
}

/* ---- sort --------------------------------------------------------------- */

/* Parses "-a,b" into q->sort. Private, json and unknown fields are refused
 * (a sort value travels in the cursor, so private fields never qualify). */
static int parse_sort(query_t *q, const entity_def_t *e, const char *spec, chr_err_t *err)
{
    size_t n = 1;
    for (const char *p = spec; *p; p++)
        n += *p == ',';
    if (n > QUERY_MAX_SORT)
        return chr_fail(err, CHR_EINVAL, "sort", "sort: at most %d fields", QUERY_MAX_SORT);
    q->sort = calloc(n, sizeof *q->sort);
    char *copy = dup_str(spec);
    if (!q->sort || !copy) {
        free(copy);
        return oom(err);
    }
    int rc = CHR_OK;
    char *item = copy;
    for (size_t i = 0; i < n; i++) {
        char *comma = strchr(item, ',');
        if (comma) *comma = '\0';
        bool desc = item[0] == '-';
        const char *name = desc ? item + 1 : item;
        col_t c;
        if (!*name) {
            rc = chr_fail(err, CHR_EINVAL, "sort", "sort: empty field name");
            break;
        }
        col_res_t res = resolve_col(e, name, false, &c);
        if (res == COL_UNKNOWN) {
            rc = chr_fail(err, CHR_EINVAL, "sort", "sort: %s has no field %s", e->name, name);
            break;
        }
        if (res == COL_JSON) {
            rc = chr_fail(err, CHR_EINVAL, "sort", "sort: json field %s cannot be sorted on", name);
            break;
        }
        for (size_t k = 0; k < q->n_sort; k++) {
            if (strcmp(q->sort[k].column, name) == 0) {
                rc = chr_fail(err, CHR_EINVAL, "sort", "sort: %s is given more than once", name);
                break;
            }
        }
        if (rc != CHR_OK) break;
        query_sort_t *s = &q->sort[q->n_sort];
        s->column = dup_str(name);
        if (!s->column) {
            rc = oom(err);
            break;
        }
        s->kind = c.kind;
        s->nullable = c.nullable;
        s->desc = desc;
        q->n_sort++;
        if (comma) item = comma + 1;
    }
    free(copy);
    if (rc != CHR_OK) return rc;

    q->key_tiebreak = true;
    for (size_t k = 0; k < q->n_sort; k++)
        if (strcmp(q->sort[k].column, e->key) == 0) q->key_tiebreak = false;
    q->tiebreak_desc = q->sort[q->n_sort - 1].desc;
    return CHR_OK;
}

/* The fingerprint of what a cursor depends on: entity, key, sort terms. */
static void sort_check(const query_t *q, char out[17])
{
    uint64_t h = fnv1a(FNV_SEED, q->table, strlen(q->table) + 1);
    h = fnv1a(h, q->key, strlen(q->key) + 1);
    for (size_t i = 0; i < q->n_sort; i++) {
        h = fnv1a(h, q->sort[i].desc ? "-" : "+", 1);
        h = fnv1a(h, q->sort[i].column, strlen(q->sort[i].column) + 1);
    }
    snprintf(out, 17, "%016llx", (unsigned long long)h);
}

/* ---- base64url ---------------------------------------------------------- */

static const char B64URL[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

char *query_b64url_encode(const unsigned char *data, size_t len)
{
    char *out = malloc(len / 3 * 4 + 4 + 1);
    if (!out) return NULL;
    size_t o = 0, i = 0;
    for (; i + 3 <= len; i += 3) {
        uint32_t v = (uint32_t)data[i] << 16 | (uint32_t)data[i + 1] << 8 | data[i + 2];
        out[o++] = B64URL[v >> 18 & 63];
        out[o++] = B64URL[v >> 12 & 63];
        out[o++] = B64URL[v >> 6 & 63];
        out[o++] = B64URL[v & 63];
    }
    if (len - i == 1) {
        uint32_t v = (uint32_t)data[i] << 16;
        out[o++] = B64URL[v >> 18 & 63];
        out[o++] = B64URL[v >> 12 & 63];
    } else if (len - i == 2) {
        uint32_t v = (uint32_t)data[i] << 16 | (uint32_t)data[i + 1] << 8;
        out[o++] = B64URL[v >> 18 & 63];
        out[o++] = B64URL[v >> 12 & 63];
        out[o++] = B64URL[v >> 6 & 63];
    }
    out[o] = '\0';
    return out;
}

static int b64url_value(char c)
{
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '-') return 62;
    if (c == '_') return 63;
    return -1;
}

/* True when s is canonical base64url without padding: only the alphabet,
 * no length of 4k+1, zero bits after the last byte. */
static bool b64url_canonical(const char *s, size_t len)
{
    if (len % 4 == 1) return false;
    for (size_t i = 0; i < len; i++)
        if (b64url_value(s[i]) < 0) return false;
    int last = len ? b64url_value(s[len - 1]) : 0;
    return len % 4 == 2 ? (last & 0x0F) == 0 : len % 4 == 3 ? (last & 0x03) == 0 : true;
}

unsigned char *query_b64url_decode(const char *s, size_t *out_len)
{
    size_t len = strlen(s);
    if (!b64url_canonical(s, len)) return NULL;
    unsigned char *out = malloc(len / 4 * 3 + 3 + 1);
    if (!out) return NULL;
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < len; i++) {
        acc = acc << 6 | (uint32_t)b64url_value(s[i]);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (unsigned char)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    out[o] = '\0';
    *out_len = o;
    return out;
}

/* ---- cursors ------------------------------------------------------------ */

/* The kind of the i-th cursor value (the sort terms, then the key). */
static query_kind_t cursor_kind(const query_t *q, size_t i)
{
    return i < q->n_sort ? q->sort[i].kind : QK_TEXT;
}

/* The check of a cursor: fingerprint of the sort plus the values' JSON. */
static int cursor_check(const query_t *q, const json_t *values, char out[17])
{
    char *text = json_dumps(values, JSON_COMPACT);
    if (!text) return -1;
    uint64_t h = fnv1a(FNV_SEED, q->check, strlen(q->check) + 1);
    h = fnv1a(h, text, strlen(text));
    free(text);
    snprintf(out, 17, "%016llx", (unsigned long long)h);
    return 0;
}

int query_cursor(const query_t *q, const store_val_t *sort_vals, size_t n, const char *key,
                 char **cursor_out)
{
    *cursor_out = NULL;
    if (n != q->n_sort || !key) return CHR_EINVAL;
    json_t *values = json_array();
    if (!values) return CHR_ENOMEM;
    int rc = CHR_OK;
    for (size_t i = 0; i <= n && rc == CHR_OK; i++) {
        store_val_t keyv = {.type = SV_TEXT, .s = key};
        const store_val_t *v = i < n ? &sort_vals[i] : &keyv;
        query_kind_t kind = cursor_kind(q, i);
        json_t *j = NULL;
        if (v->type == SV_NULL && i < n) {
            j = json_null();
        } else if (kind == QK_TEXT || kind == QK_TSTEXT) {
            if (v->type != SV_TEXT || !v->s || !utf8_valid(v->s, strlen(v->s)))
                rc = CHR_EINVAL;
            else
                j = json_string(v->s);
        } else if (kind == QK_REAL) {
            double d = v->type == SV_INT ? (double)v->i : v->r;
            if ((v->type != SV_INT && v->type != SV_REAL) || !isfinite(d))
                rc = CHR_EINVAL;
            else
                j = json_real(d);
        } else {
            if (v->type != SV_INT)
                rc = CHR_EINVAL;
            else
                j = json_integer(v->i);
        }
        if (rc == CHR_OK && (!j || json_array_append_new(values, j) != 0)) rc = CHR_ENOMEM;
    }
    char check[17];
    if (rc == CHR_OK && cursor_check(q, values, check) != 0) rc = CHR_ENOMEM;
    json_t *check_j = rc == CHR_OK ? json_string(check) : NULL;
    if (rc == CHR_OK && (!check_j || json_array_insert_new(values, 0, check_j) != 0))
        rc = CHR_ENOMEM;
    char *text = rc == CHR_OK ? json_dumps(values, JSON_COMPACT) : NULL;
    if (rc == CHR_OK && !text) rc = CHR_ENOMEM;
    json_decref(values);
    if (rc != CHR_OK) return rc;
    *cursor_out = query_b64url_encode((const unsigned char *)text, strlen(text));
    free(text);
    return *cursor_out ? CHR_OK : CHR_ENOMEM;
}

/* Converts cursor value j of kind into a bound value; false when it has the
 * wrong type. Text is copied. */
static bool cursor_value(const json_t *j, query_kind_t kind, bool allow_null, store_val_t *out,
                         bool *nomem)
{
    memset(out, 0, sizeof *out);
    if (json_is_null(j) && allow_null) {
        switch (kind) {
        case QK_TEXT:
        case QK_TSTEXT:
            j = NULL;
            break;
        case QK_REAL:
            out->type = SV_REAL;
            out->r = SENTINEL_REAL;
            return true;
        case QK_BOOL:
            out->type = SV_INT;
            out->i = SENTINEL_BOOL;
            return true;
        default:
            out->type = SV_INT;
            out->i = SENTINEL_INT;
            return true;
        }
    }
    switch (kind) {
    case QK_TEXT:
    case QK_TSTEXT: {
        const char *s = j ? json_string_value(j) : SENTINEL_TEXT;
        if (!s || (j && strlen(s) != json_string_length(j))) return false;
        out->s = dup_str(s);
        if (!out->s) {
            *nomem = true;
            return false;
        }
        out->type = SV_TEXT;
        return true;
    }
    case QK_REAL:
        if (!json_is_number(j)) return false;
        out->type = SV_REAL;
        out->r = json_number_value(j);
        return isfinite(out->r);
    default:
        if (!json_is_integer(j)) return false;
        out->type = SV_INT;
        out->i = json_integer_value(j);
        return true;
    }
}

/* Decodes an after= token into q->after. */
static int parse_after(query_t *q, const char *token, chr_err_t *err)
{
    if (!b64url_canonical(token, strlen(token)))
        return chr_fail(err, CHR_EINVAL, "after", "after: invalid cursor");
    size_t len = 0;
    unsigned char *raw = query_b64url_decode(token, &len);
    if (!raw) return oom(err);
    /* jansson reports a failed allocation as json_error_out_of_memory, or
     * (when its lexer cannot start) with no message at all; every syntax
     * error has a message. */
    json_error_t jerr;
    memset(&jerr, 0, sizeof jerr);
    json_t *arr = json_loadb((const char *)raw, len, 0, &jerr);
    free(raw);
    if (!arr && (json_error_code(&jerr) == json_error_out_of_memory || !jerr.text[0]))
        return oom(err);
    size_t want = q->n_sort + 1;
    bool ok = arr && json_is_array(arr) && json_array_size(arr) == want + 1 &&
              json_is_string(json_array_get(arr, 0));
    json_t *values = ok ? json_array() : NULL;
    for (size_t i = 1; values && i <= want; i++)
        if (json_array_append(values, json_array_get(arr, i)) != 0) {
            json_decref(values);
            values = NULL;
        }
    if (ok && !values) {
        json_decref(arr);
        return oom(err);
    }
    char check[17];
    if (ok && cursor_check(q, values, check) != 0) {
        json_decref(values);
        json_decref(arr);
        return oom(err);
    }
    ok = ok && strcmp(check, json_string_value(json_array_get(arr, 0))) == 0;
    json_decref(values);

    bool nomem = false;
    if (ok) {
        q->after = calloc(want, sizeof *q->after);
        if (!q->after) nomem = true;
        for (size_t i = 0; q->after && ok && i < want; i++) {
            ok = cursor_value(json_array_get(arr, i + 1), cursor_kind(q, i), i < q->n_sort,
                              &q->after[i], &nomem);
            q->n_after = i + 1;
        }
    }
    json_decref(arr);
    if (nomem) return oom(err);
    if (!ok) return chr_fail(err, CHR_EINVAL, "after", "after: invalid cursor");
    return CHR_OK;
}

/* ---- parse -------------------------------------------------------------- */

static bool ignored(const list_opts_t *opts, const char *name)
{
    if (!opts || !opts->ignore) return false;
    for (const char *const *p = opts->ignore; *p; p++)
        if (strcmp(*p, name) == 0) return true;
    return false;
}

static int parse_limit(const char *s, int64_t max, int64_t *out, chr_err_t *err)
{
    int64_t v;
    if (!parse_i64(s, &v) || v < 1 || v > max)
        return chr_fail(err, CHR_EINVAL, "limit", "limit: must be an integer from 1 to %lld",
                        (long long)max);
    *out = v;
    return CHR_OK;
}

int query_parse(const entity_def_t *e, const list_opts_t *opts, const char *const *names,
                const char *const *values, size_t n, query_t *out, chr_err_t *err)
{
    static const list_opts_t none = {0};
    if (!opts) opts = &none;
    memset(out, 0, sizeof *out);
    out->table = dup_str(e->name);
    out->key = dup_str(e->key);
    if (!out->table || !out->key) {
        query_free(out);
        return oom(err);
    }

    int64_t max = opts->max_limit > 0 ? opts->max_limit : QUERY_MAX_LIMIT;
    out->limit = opts->default_limit > 0 ? opts->default_limit : QUERY_DEFAULT_LIMIT;
    if (out->limit > max) out->limit = max;

    int rc = CHR_OK;
    const char *sort = NULL, *limit = NULL, *after = NULL;
    if (opts->fixed_filters) {
        const char *name;
        json_t *v;
        json_object_foreach((json_t *)opts->fixed_filters, name, v)
        {
            rc = parse_fixed_filter(out, e, name, v, err);
            if (rc != CHR_OK) goto fail;
        }
    }
    for (size_t i = 0; i < n; i++) {
        const char *name = names[i] ? names[i] : "";
        const char *value = values && values[i] ? values[i] : "";
        if (ignored(opts, name)) continue;
        const char **slot = strcmp(name, "sort") == 0    ? &sort
                            : strcmp(name, "limit") == 0 ? &limit
                            : strcmp(name, "after") == 0 ? &after
                                                         : NULL;
        if (slot) {
            if (*slot) {
                rc = chr_fail(err, CHR_EINVAL, name, "%s: given more than once", name);
                goto fail;
            }
            *slot = value;
            continue;
        }
        rc = parse_filter(out, e, name, value, false, err);
        if (rc != CHR_OK) goto fail;
    }

    if (limit && (rc = parse_limit(limit, max, &out->limit, err)) != CHR_OK) goto fail;

    if (!sort) sort = opts->fixed_sort && *opts->fixed_sort ? opts->fixed_sort : e->key;
    if ((rc = parse_sort(out, e, sort, err)) != CHR_OK) goto fail;
    sort_check(out, out->check);

    if (after && *after && (rc = parse_after(out, after, err)) != CHR_OK) goto fail;
    return CHR_OK;

fail:
    query_free(out);
    return rc;
}

void query_free(query_t *q)
{
    if (!q) return;
    for (size_t i = 0; i < q->n_filters; i++)
        filter_free(&q->filters[i]);
    free(q->filters);
    for (size_t i = 0; i < q->n_sort; i++)
        free(q->sort[i].column);
    free(q->sort);
    vals_free(q->after, q->n_after);
    free(q->table);
    free(q->key);
    memset(q, 0, sizeof *q);
}

/* ---- SQL ---------------------------------------------------------------- */

typedef struct params {
    store_val_t *v;
    size_t n, cap;
    bool failed;
} params_t;

static void param_add(params_t *p, store_val_t v)
{
    if (p->failed) return;
    if (p->n == p->cap) {
        size_t cap = p->cap ? 2 * p->cap : 16;
        store_val_t *nv = realloc(p->v, cap * sizeof *nv);
        if (!nv) {
            p->failed = true;
            return;
        }
        p->v = nv;
        p->cap = cap;
    }
    p->v[p->n++] = v;
}

static const char *sentinel_sql(query_kind_t kind)
{
    switch (kind) {
    case QK_REAL:
        return SENTINEL_REAL_SQL;
    case QK_BOOL:
        return SENTINEL_BOOL_SQL;
    case QK_INT:
    case QK_TIME:
        return SENTINEL_INT_SQL;
    default:
        return SENTINEL_TEXT_SQL;
    }
}

/* The expression a sort term is ordered and compared by. */
static void sb_sort_expr(sbuf_t *b, const char *column, query_kind_t kind, bool nullable)
{
    if (!nullable) {
        sb_ident(b, column);
        return;
    }
    sb_addf(b, "coalesce(");
    sb_ident(b, column);
    sb_addf(b, ", %s)", sentinel_sql(kind));
}

/* A filter's column side: lower() for case-insensitive comparisons. */
static void sb_filter_lhs(sbuf_t *b, const query_filter_t *f)
{
    bool ci = f->email || f->op == QOP_LIKE;
    if (ci) sb_addf(b, "lower(");
    sb_ident(b, f->column);
    if (ci) sb_addf(b, ")");
}

static void sb_filter(sbuf_t *b, params_t *p, const query_filter_t *f)
{
    static const char *const cmp[] = {
        [QOP_EQ] = "=",   [QOP_NEQ] = "<>", [QOP_GT] = ">",
        [QOP_GTE] = ">=", [QOP_LT] = "<",   [QOP_LTE] = "<=",
    };
    const char *ph = f->email || f->op == QOP_LIKE ? "lower(?)" : "?";
    sb_addf(b, " AND ");
    switch (f->op) {
    case QOP_IS_NULL:
        sb_ident(b, f->column);
        sb_addf(b, " IS NULL");
        return;
    case QOP_LIKE:
        sb_filter_lhs(b, f);
        sb_addf(b, " LIKE %s ESCAPE '\\'", ph);
        break;
    case QOP_IN:
        sb_filter_lhs(b, f);
        sb_addf(b, " IN (");
        for (size_t i = 0; i < f->n_vals; i++)
            sb_addf(b, "%s%s", i ? ", " : "", ph);
        sb_addf(b, ")");
        break;
    case QOP_NEQ:
        if (f->nullable) {
            sb_addf(b, "(");
            sb_ident(b, f->column);
            sb_addf(b, " IS NULL OR ");
            sb_filter_lhs(b, f);
            sb_addf(b, " <> %s)", ph);
            break;
        }
        /* fall through */
    default:
        sb_filter_lhs(b, f);
        sb_addf(b, " %s %s", cmp[f->op], ph);
        break;
    }
    for (size_t i = 0; i < f->n_vals; i++)
        param_add(p, f->vals[i]);
}

/* The keyset condition "after the cursor" over terms t_1..t_m (the sort
 * terms, then the key unless it is one of them), index-friendly nested form:
 *   t1 >= v1 AND (t1 > v1 OR (t2 >= v2 AND (t2 > v2 OR ... tm > vm)))
 * with < / <= for descending terms. */
static void sb_keyset(sbuf_t *b, params_t *p, const query_t *q)
{
    size_t m = q->n_sort + (q->key_tiebreak ? 1 : 0);
    sb_addf(b, " AND ");
    for (size_t i = 0; i < m; i++) {
        bool is_key = i == q->n_sort;
        const char *col = is_key ? q->key : q->sort[i].column;
        query_kind_t kind = is_key ? QK_TEXT : q->sort[i].kind;
        bool nullable = is_key ? false : q->sort[i].nullable;
        bool desc = is_key ? q->tiebreak_desc : q->sort[i].desc;
        store_val_t v = q->after[is_key ? q->n_sort : i];
        if (i + 1 < m) {
            sb_addf(b, "(");
            sb_sort_expr(b, col, kind, nullable);
            sb_addf(b, " %s ? AND (", desc ? "<=" : ">=");
            param_add(p, v);
        }
        sb_sort_expr(b, col, kind, nullable);
        sb_addf(b, " %s ?", desc ? "<" : ">");
        param_add(p, v);
        if (i + 1 < m) sb_addf(b, " OR ");
    }
    for (size_t i = 0; i + 1 < m; i++)
        sb_addf(b, "))");
}

int query_sql(const query_t *q, const entity_def_t *e, const char *select_cols, char **sql_out,
              store_val_t **params_out, size_t *n_params_out, chr_err_t *err)
{
    assert(select_cols && *select_cols && q->n_sort > 0);
    assert(!e || strcmp(e->name, q->table) == 0); /* all else was copied at parse time */
    (void)e;
    *sql_out = NULL;
    *params_out = NULL;
    *n_params_out = 0;
    sbuf_t b = {0};
    params_t p = {0};

    sb_addf(&b, "SELECT %s", select_cols);
    for (size_t i = 0; i < q->n_sort; i++) {
        sb_addf(&b, ", ");
        sb_sort_expr(&b, q->sort[i].column, q->sort[i].kind, q->sort[i].nullable);
    }
    sb_addf(&b, " FROM ");
    sb_ident(&b, q->table);
    sb_addf(&b, " WHERE \"_deleted\" = 0");
    for (size_t i = 0; i < q->n_filters; i++)
        sb_filter(&b, &p, &q->filters[i]);
    if (q->after) sb_keyset(&b, &p, q);
    sb_addf(&b, " ORDER BY ");
    for (size_t i = 0; i < q->n_sort; i++) {
        if (i) sb_addf(&b, ", ");
        sb_sort_expr(&b, q->sort[i].column, q->sort[i].kind, q->sort[i].nullable);
        sb_addf(&b, q->sort[i].desc ? " DESC" : " ASC");
    }
    if (q->key_tiebreak) {
        sb_addf(&b, ", ");
        sb_ident(&b, q->key);
        sb_addf(&b, q->tiebreak_desc ? " DESC" : " ASC");
    }
    sb_addf(&b, " LIMIT ?");
    param_add(&p, (store_val_t){.type = SV_INT, .i = q->limit + 1});

    if (b.failed || p.failed) {
        free(b.p);
        free(p.v);
        return oom(err);
    }
    *sql_out = b.p;
    *params_out = p.v;
    *n_params_out = p.n;
    return CHR_OK;
}

char *query_index_columns(const entity_def_t *e, const char *sort)
{
    const char *names[] = {"sort"}, *values[] = {sort};
    query_t q;
    chr_err_t err = {0};
    if (query_parse(e, NULL, names, values, 1, &q, &err) != CHR_OK) {
        query_free(&q);
        return NULL;
    }
    sbuf_t b = {0};
    for (size_t i = 0; i < q.n_sort; i++) {
        if (i) sb_addf(&b, ", ");
        sb_sort_expr(&b, q.sort[i].column, q.sort[i].kind, q.sort[i].nullable);
        if (q.sort[i].desc) sb_addf(&b, " DESC");
    }
    if (q.key_tiebreak) {
        sb_addf(&b, ", ");
        sb_ident(&b, q.key);
        if (q.tiebreak_desc) sb_addf(&b, " DESC");
    }
    query_free(&q);
    if (b.failed || !b.p) {
        free(b.p);
        return NULL;
    }
    return b.p;
}
