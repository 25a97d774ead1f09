/*
 * error.h - the one status convention of chronicle.
 *
 * Every fallible function returns 0 (CHR_OK) or a negative chr_status_t and,
 * when given one, fills a chr_err_t the caller can show or map to HTTP. The
 * mapping to HTTP status codes lives in one table in src/http (not here):
 * this header knows nothing about transports.
 */
#ifndef CHRONICLE_CORE_ERROR_H
#define CHRONICLE_CORE_ERROR_H

#include <stdint.h>

typedef enum chr_status {
    CHR_OK = 0,
    CHR_EINVAL = -1,     /* bad input: the message says which and why */
    CHR_ECONFLICT = -2,  /* expected version or idempotency conflict */
    CHR_ENOTFOUND = -3,  /* stream, event or row does not exist */
    CHR_ETOOBIG = -4,    /* an event or request exceeds a configured limit */
    CHR_ESTORE = -5,     /* the store failed (I/O, corruption, unreachable) */
    CHR_ENOMEM = -6,     /* allocation failed */
    CHR_EUNAVAILABLE = -7, /* the store is closed or shutting down */
    CHR_EPRECONDITION = -8, /* an If-Match version did not match */
    CHR_EFORBIDDEN = -9,    /* the caller's credential does not allow this */
    CHR_EUNAUTHORIZED = -10, /* the operation needs a credential and none was given */
} chr_status_t;

/* Conflict details for CHR_ECONFLICT on an expected-version mismatch. */
typedef struct chr_conflict {
    int64_t expected; /* as requested (see STORE_ANY etc. in store.h) */
    int64_t actual;   /* the stream's version when the append was decided */
} chr_conflict_t;

typedef struct chr_err {
    int code;           /* a chr_status_t */
    char msg[384];      /* human-readable, names the offending input */
    char field[128];    /* the input field at fault, "" when not applicable */
    chr_conflict_t conflict;
} chr_err_t;

/* Fills err (when non-NULL) with code, field and a printf-style message and
 * returns code, so callers can write `return chr_fail(err, CHR_EINVAL, ...)`. */
int chr_fail(chr_err_t *err, int code, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Resets err to CHR_OK with empty message. */
void chr_err_clear(chr_err_t *err);

/* A short stable name for a status ("conflict", "invalid", ...). */
const char *chr_status_name(int code);

#endif
