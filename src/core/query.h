/*
 * query.h - list queries: turning the query parameters of GET /v1/{entity}
 * (and of an app's list routes) into a checked query_t, and a query_t into
 * dialect-neutral SQL over an entity's projection table, with keyset
 * pagination through opaque cursors.
 *
 * Pure: no I/O. The SQL text is built only from the definition (table and
 * column names, operators, sentinels); every value that came from a request
 * is a bound parameter. Not here: running the query, building the response
 * or the Link header (the HTTP layer), the `at`/`version` of a single read.
 *
 * Query parameters understood by query_parse:
 *   field=value, field=op.value  filter; op is one of eq, neq, gt, gte, lt,
 *                                lte, like, in. A prefix before the first '.'
 *                                that is not an operator name is part of the
 *                                value (name=foo.bar means eq "foo.bar"); to
 *                                match a value that starts with an operator
 *                                name write it out: name=eq.gt.5.
 *                                in: comma-separated values (no quoting).
 *                                like: '*' is the wildcard; matching ignores
 *                                case (ASCII in SQLite) on every backend.
 *                                neq also matches rows where the field is
 *                                unset (NULL); gt/gte/lt/lte/like never do.
 *                                A field filtered twice: both must hold.
 *   sort=-created_at,name        '-' = descending; default: the route's fixed
 *                                sort, else the key ascending. The key breaks
 *                                ties (in the direction of the last term).
 *   limit=N                      1..max_limit (route's, else 1000); default
 *                                the route's limit, else 50.
 *   after=CURSOR                 the next page, from query_cursor. An empty
 *                                value means the first page.
 * Filterable and sortable: the key, version, created_at, updated_at and every
 * entity field that is neither private nor json. A private field is reported
 * exactly as a field that does not exist.
 *
 * Projection layout assumed by query_sql: table "<entity>", one column per
 * field named as the field, the key column named as the key, and "version",
 * "created_at", "updated_at" (INTEGER microseconds), "_deleted" (0/1).
 * integer/boolean columns hold INTEGER (booleans 0/1), number REAL,
 * timestamp fields canonical RFC 3339 text (time_format_us), the rest TEXT.
 *
 * NULLs in sort columns: sorting and the keyset comparison both use
 * coalesce(column, sentinel) with the lowest value of the column's type as
 * sentinel ('' for text, -9223372036854775807 for integers and times, -1 for
 * booleans, -1.7976931348623157e308 for numbers), so unset values come first
 * ascending and last descending, on SQLite and PostgreSQL alike.
 */
#ifndef CHRONICLE_CORE_QUERY_H
#define CHRONICLE_CORE_QUERY_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/definition.h"
#include "core/error.h"
#include "store/store.h"

#define QUERY_DEFAULT_LIMIT 50
#define QUERY_MAX_LIMIT 1000
#define QUERY_MAX_IN_VALUES 100 /* values of one in.a,b,c filter */
#define QUERY_MAX_SORT 8        /* terms of one sort= */

/* Options of one list route. All may be zero/NULL; borrowed for the call. */
typedef struct list_opts {
    const char *fixed_sort;      /* default sort ("-created_at"); NULL = the key */
    int64_t default_limit;       /* 0 = QUERY_DEFAULT_LIMIT (clamped to max_limit) */
    int64_t max_limit;           /* 0 = QUERY_MAX_LIMIT */
    const json_t *fixed_filters; /* object field -> value, always ANDed, as
                                    route_def_t.filters: a value of the field's
                                    type compared with eq (no "op." syntax);
                                    null means "is unset". May name private
                                    fields (the route's author is trusted),
                                    never json ones. */
    const char *const *ignore;   /* NULL-terminated parameter names handled
                                    elsewhere (e.g. "at"); NULL = none */
} list_opts_t;

typedef enum query_op {
    QOP_EQ,
    QOP_NEQ,
    QOP_GT,
    QOP_GTE,
    QOP_LT,
    QOP_LTE,
    QOP_LIKE,
    QOP_IN,
    QOP_IS_NULL, /* only from fixed_filters: value JSON null */
} query_op_t;

/* How a column is stored and compared. */
typedef enum query_kind {
    QK_TEXT,   /* string, text, email, enum, ref, cron, the key */
    QK_TSTEXT, /* timestamp fields: canonical RFC 3339 text */
    QK_INT,    /* integer fields, version */
    QK_REAL,   /* number fields */
    QK_BOOL,   /* boolean fields: INTEGER 0/1 */
    QK_TIME,   /* created_at, updated_at: INTEGER microseconds */
} query_kind_t;

typedef struct query_filter {
    char *column; /* owned */
    query_kind_t kind;
    bool nullable; /* an entity field (not the key or a system column) */
    bool email;    /* compared case-insensitively */
    query_op_t op;
    store_val_t *vals; /* owned array; SV_TEXT strings owned too */
    size_t n_vals;     /* 1, or the number of values of in, 0 for is-null */
} query_filter_t;

typedef struct query_sort {
    char *column; /* owned */
    query_kind_t kind;
    bool nullable;
    bool desc;
} query_sort_t;

/* A parsed list query. Everything it points to is owned by it and released
 * by query_free. Read-only after query_parse; safe to share between threads
 * for reading. */
typedef struct query {
    char *table; /* owned: the entity name */
    char *key;   /* owned: the key column */
    query_filter_t *filters;
    size_t n_filters;
    query_sort_t *sort; /* the sort terms as given (or defaulted) */
    size_t n_sort;      /* = number of sort columns query_sql appends */
    bool key_tiebreak;  /* the key is appended to ORDER BY (not a sort term) */
    bool tiebreak_desc;
    int64_t limit;      /* page size; query_sql asks for limit + 1 rows */
    store_val_t *after; /* owned: decoded cursor, one value per sort term
                           plus the key (NULL when no cursor) */
    size_t n_after;
    char check[17]; /* hex fingerprint of entity + sort spec */
} query_t;

/* Parses the decoded query parameters names[i]=values[i] (i < n, in request
 * order; a NULL value counts as "") of a list of entity e. opts may be NULL.
 * On success fills *out (the caller releases it with query_free). On failure
 * returns CHR_EINVAL with err->field = the parameter at fault ("status",
 * "sort", "limit", "after") and err->msg = "<param>: <problem>", or
 * CHR_ENOMEM; *out is then empty (query_free on it is harmless). */
int query_parse(const entity_def_t *e, const list_opts_t *opts, const char *const *names,
                const char *const *values, size_t n, query_t *out, chr_err_t *err);

/* Builds
 *   SELECT <select_cols>, <sort exprs> FROM "<entity>"
 *   WHERE "_deleted" = 0 AND <filters> AND <after the cursor>
 *   ORDER BY <sort exprs> <dir>, ["<key>" <dir>] LIMIT ?
 * select_cols is SQL text from the caller (never user input), non-empty.
 * The q->n_sort sort expressions start at result column index
 * (number of columns in select_cols); their row values are exactly what
 * query_cursor expects, never NULL. The LIMIT parameter is q->limit + 1 so
 * the caller can tell whether a next page exists.
 * On success *sql_out is a new string and *params_out a new array of
 * *n_params_out values, both freed by the caller with free(); the text of
 * SV_TEXT parameters is borrowed from q (valid while q lives). e must be
 * the entity q was parsed for (asserted; the SQL is built from q alone).
 * Returns CHR_OK or CHR_ENOMEM.
 *
 * Typical use by a list handler:
 *     query_parse(e, &opts, names, values, n, &q, &err)      -> 400 on EINVAL
 *     query_sql(&q, e, "\"<key>\", \"_doc\"", &sql, &p, &np, &err)
 *     store_query(s, sql, p, np, row_fn, ...)  rows 0..q.limit-1 are the page;
 *         a row number q.limit means there is a next page, whose cursor is
 *         query_cursor(&q, &vals[2], q.n_sort, <key of row q.limit-1>, &c)
 *     free(sql); free(p); query_free(&q); free(c);
 * (store_row_fn values are borrowed for one call: keep copies of the last
 * page row's sort values, or build its cursor inside the callback.) */
int query_sql(const query_t *q, const entity_def_t *e, const char *select_cols, char **sql_out,
              store_val_t **params_out, size_t *n_params_out, chr_err_t *err);

/* The opaque after= token of the page that follows a row: sort_vals are the
 * row's q->n_sort sort values as selected by query_sql (n must equal
 * q->n_sort; SV_NULL is accepted and means "unset"), key its key. On success
 * *cursor_out is a new URL-safe string (base64url, no padding) the caller
 * frees with free(). Returns CHR_OK, CHR_EINVAL (n or a value's type does not
 * match the sort) or CHR_ENOMEM.
 * The token carries the values and a fingerprint of the entity and sort; it
 * is a checksum, not a signature: a forged cursor can only select a starting
 * point, which filters allow anyway. */
int query_cursor(const query_t *q, const store_val_t *sort_vals, size_t n, const char *key,
                 char **cursor_out);

/* The column list of an index that serves lists of e ordered by sort (a
 * route's fixed sort, e.g. "-created_at,name"): the same expressions, in
 * the same directions, as query_sql's ORDER BY, so the database can walk
 * the index instead of sorting. A new string (caller frees), or NULL when
 * sort is not valid for e or memory ran out. */
char *query_index_columns(const entity_def_t *e, const char *sort);

/* Releases everything q owns and empties it. q may be empty or NULL. */
/* Adds "column" = value (text) to q's filters: the predicates the engine
 * adds for tenancy and owner rules. column must come from the definition
 * (a field, the key or "tenant_id"). */
int query_restrict(query_t *q, const char *column, bool nullable, const char *value,
                   chr_err_t *err);

void query_free(query_t *q);

/* base64url without padding. query_b64url_encode returns a new string (NULL
 * on allocation failure). query_b64url_decode returns a new buffer of *out_len
 * bytes plus a terminating NUL, or NULL when s is not canonical base64url
 * (padding, stray characters, non-zero trailing bits) or on allocation
 * failure. */
char *query_b64url_encode(const unsigned char *data, size_t len);
unsigned char *query_b64url_decode(const char *s, size_t *out_len);

#endif
