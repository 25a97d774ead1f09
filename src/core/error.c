/* error.c - filling chr_err_t; see error.h. */
#include "core/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int chr_fail(chr_err_t *err, int code, const char *field, const char *fmt, ...)
{
    if (!err) return code;
    err->code = code;
    snprintf(err->field, sizeof err->field, "%s", field ? field : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
    return code;
}

void chr_err_clear(chr_err_t *err)
{
    if (!err) return;
    memset(err, 0, sizeof *err);
}

const char *chr_status_name(int code)
{
    switch (code) {
    case CHR_OK: return "ok";
    case CHR_EINVAL: return "invalid";
    case CHR_ECONFLICT: return "conflict";
    case CHR_ENOTFOUND: return "not_found";
    case CHR_ETOOBIG: return "too_big";
    case CHR_ESTORE: return "store_error";
    case CHR_ENOMEM: return "out_of_memory";
    case CHR_EUNAVAILABLE: return "unavailable";
    case CHR_EPRECONDITION: return "precondition_failed";
    case CHR_EFORBIDDEN: return "forbidden";
    case CHR_EUNAUTHORIZED: return "unauthorized";
    default: return "unknown";
    }
}
