/*
 * field.c - checking and normalising one JSON value against one field
 * definition, and the syntax checks behind it (cron, e-mail, keys); see
 * field.h. Not here: whether a ref points at an existing row (the engine
 * knows the store), nor loading field definitions (definition.c).
 */
#include "core/field.h"

#include <assert.h>
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/cron.h"
#include <sodium.h>

#include "core/event.h"
#include "core/password.h"
#include "core/timefmt.h"

#define CRON_EXPECTED "must be a cron expression of 5 fields (minute hour day month weekday)"

static const char *const type_names[] = {
    [FT_STRING] = "string", [FT_TEXT] = "text",       [FT_INTEGER] = "integer",
    [FT_NUMBER] = "number", [FT_BOOLEAN] = "boolean", [FT_TIMESTAMP] = "timestamp",
    [FT_ENUM] = "enum",     [FT_JSON] = "json",       [FT_REF] = "ref",
    [FT_CRON] = "cron",     [FT_EMAIL] = "email",     [FT_PASSWORD] = "password",
};

const char *field_type_name(field_type_t t)
{
    if ((unsigned)t >= sizeof type_names / sizeof type_names[0]) return "unknown";
    return type_names[t];
}

bool field_type_from_name(const char *name, field_type_t *out)
{
    for (size_t i = 0; i < sizeof type_names / sizeof type_names[0]; i++) {
        if (name && strcmp(name, type_names[i]) == 0) {
            *out = (field_type_t)i;
            return true;
        }
    }
    return false;
}

int64_t field_max_length(const field_def_t *f)
{
    if (f->has_max_length) return f->max_length;
    switch (f->type) {
    case FT_STRING:
        return FIELD_STRING_MAX_LENGTH;
    case FT_TEXT:
        return FIELD_TEXT_MAX_LENGTH;
    case FT_EMAIL:
        return FIELD_EMAIL_MAX_LENGTH;
    case FT_PASSWORD:
        return FIELD_PASSWORD_MAX_LENGTH;
    default:
        return 0;
    }
}

/* ---- small text helpers ------------------------------------------------ */

/* Number of UTF-8 code points in the len valid bytes at s. */
static size_t utf8_chars(const char *s, size_t len)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++)
        if (((unsigned char)s[i] & 0xc0) != 0x80) n++;
    return n;
}

/* True when the len bytes at s (valid UTF-8) contain a control character:
 * C0 (except the bytes in `allowed`), DEL, or C1 (U+0080-U+009F, C2 80-9F).
 * Embedded NUL bytes count as controls too. */
static bool has_control(const char *str, size_t len, const char *allowed)
{
    const unsigned char *s = (const unsigned char *)str;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < 0x20) {
            if (s[i] != 0 && allowed && strchr(allowed, s[i])) continue;
            return true;
        }
        if (s[i] == 0x7f) return true;
        if (s[i] == 0xc2 && i + 1 < len && s[i + 1] >= 0x80 && s[i + 1] <= 0x9f) return true;
    }
    return false;
}

/* Formats a bound for messages: integral values without a fraction. */
static void fmt_bound(double d, char *out, size_t size)
{
    if (d == floor(d) && fabs(d) < 1e15)
        snprintf(out, size, "%lld", (long long)d);
    else
        snprintf(out, size, "%.15g", d);
}

/* ---- keys, e-mail, cron ------------------------------------------------ */

bool key_valid(const char *s)
{
    if (!s) return false;
    size_t len = strlen(s);
    if (len == 0 || len > FIELD_KEY_MAX_BYTES || !utf8_valid(s, len)) return false;
    if (memchr(s, '/', len)) return false;
    return !has_control(s, len, NULL);
}

static bool domain_label_char(unsigned char c)
{
    return isalnum(c) || c == '-';
}

bool email_valid(const char *s)
{
    if (!s) return false;
    const char *at = strchr(s, '@');
    if (!at || at == s || strchr(at + 1, '@')) return false;
    for (const char *p = s; p < at; p++)
        if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f) return false;
    /* domain: labels of letters, digits and '-' (not at either end), at
     * least two of them, each 1-63 characters */
    const char *d = at + 1;
    size_t labels = 0;
    for (;;) {
        const char *start = d;
        while (*d && *d != '.') {
            if (!domain_label_char((unsigned char)*d)) return false;
            d++;
        }
        size_t n = (size_t)(d - start);
        if (n == 0 || n > 63 || start[0] == '-' || d[-1] == '-') return false;
        labels++;
        if (!*d) break;
        d++; /* skip '.' */
    }
    return labels >= 2 && strlen(at + 1) <= 253;
}

bool cron_valid(const char *s)
{
    cron_t c;
    return cron_parse(s, &c, NULL) == CHR_OK;
}

/* ---- values -------------------------------------------------------------- */

static bool failf(char *msg, size_t size, const char *fmt, const char *arg)
{
    if (msg && size) snprintf(msg, size, fmt, arg);
    return false;
}

static bool fail(char *msg, size_t size, const char *text)
{
    return failf(msg, size, "%s", text);
}

/* Writes "must be one of: a, b, c" (truncated to size) and returns false. */
static bool enum_fail(const field_def_t *f, char *msg, size_t size)
{
    if (!msg || !size) return false;
    size_t off = (size_t)snprintf(msg, size, "must be one of: ");
    for (size_t i = 0; i < f->n_values && off < size; i++)
        off += (size_t)snprintf(msg + off, size - off, "%s%s", i ? ", " : "", f->values[i]);
    return false;
}

/* Checks the text types (string, text, email, cron, ref, timestamp, enum):
 * v must be a JSON string without embedded NUL. */
static bool check_text_value(const field_def_t *f, const json_t *v, char *msg, size_t size)
{
    const char *s = json_string_value(v);
    size_t len = json_string_length(v);
    if (!utf8_valid(s, len)) return fail(msg, size, "must be valid UTF-8");
    bool has_nul = strlen(s) != len;

    switch (f->type) {
    case FT_STRING:
    case FT_TEXT:
    case FT_EMAIL:
    case FT_PASSWORD: {
        if (f->type == FT_PASSWORD && utf8_chars(s, len) < FIELD_PASSWORD_MIN_LENGTH)
            return fail(msg, size, "must be at least 8 characters long");
        if (f->type == FT_TEXT) {
            if (has_control(s, len, "\t\n\r"))
                return fail(msg, size,
                            "must not contain control characters other than tab and line breaks");
        } else if (has_control(s, len, NULL)) {
            return fail(msg, size,
                        f->type == FT_EMAIL ? "must be an e-mail address"
                                            : "must be a single line without control characters");
        }
        int64_t max = field_max_length(f);
        if (max > 0 && utf8_chars(s, len) > (uint64_t)max) {
            if (msg && size)
                snprintf(msg, size, "must be at most %lld characters long", (long long)max);
            return false;
        }
        if (f->type == FT_EMAIL && !email_valid(s))
            return fail(msg, size, "must be an e-mail address");
        return true;
    }
    case FT_TIMESTAMP: {
        int64_t us;
        if (has_nul || time_parse_rfc3339(s, &us) != 0)
            return fail(msg, size, "must be an RFC 3339 timestamp such as 2026-01-02T03:04:05Z");
        return true;
    }
    case FT_CRON: {
        cron_t c;
        chr_err_t cerr = {0};
        if (has_nul) return fail(msg, size, CRON_EXPECTED);
        if (cron_parse(s, &c, &cerr) != CHR_OK)
            return failf(msg, size, CRON_EXPECTED ": %s", cerr.msg);
        return true;
    }
    case FT_REF:
        if (has_nul || !key_valid(s))
            return fail(msg, size, "must be a key: 1-255 characters, no '/' or control characters");
        return true;
    case FT_ENUM:
        for (size_t i = 0; !has_nul && i < f->n_values; i++)
            if (strcmp(s, f->values[i]) == 0) return true;
        return enum_fail(f, msg, size);
    default:
        assert(!"not a text type");
        return false;
    }
}

/* Checks min/max of a numeric field against d. */
static bool check_bounds(const field_def_t *f, double d, char *msg, size_t size)
{
    char b[64];
    if (f->has_min && d < f->min) {
        fmt_bound(f->min, b, sizeof b);
        return failf(msg, size, "must be at least %s", b);
    }
    if (f->has_max && d > f->max) {
        fmt_bound(f->max, b, sizeof b);
        return failf(msg, size, "must be at most %s", b);
    }
    return true;
}

bool field_check_value(const field_def_t *f, const json_t *v, char *msg, size_t msg_size)
{
    assert(f && v);
    switch (f->type) {
    case FT_STRING:
    case FT_TEXT:
        if (!json_is_string(v)) return fail(msg, msg_size, "must be a string");
        return check_text_value(f, v, msg, msg_size);
    case FT_EMAIL:
        if (!json_is_string(v)) return fail(msg, msg_size, "must be an e-mail address");
        return check_text_value(f, v, msg, msg_size);
    case FT_PASSWORD:
        if (!json_is_string(v)) return fail(msg, msg_size, "must be a string");
        return check_text_value(f, v, msg, msg_size);
    case FT_TIMESTAMP:
        if (!json_is_string(v))
            return fail(msg, msg_size,
                        "must be an RFC 3339 timestamp such as 2026-01-02T03:04:05Z");
        return check_text_value(f, v, msg, msg_size);
    case FT_CRON:
        if (!json_is_string(v))
            return fail(msg, msg_size, CRON_EXPECTED);
        return check_text_value(f, v, msg, msg_size);
    case FT_REF:
        if (!json_is_string(v))
            return fail(msg, msg_size,
                        "must be a key: 1-255 characters, no '/' or control characters");
        return check_text_value(f, v, msg, msg_size);
    case FT_ENUM:
        if (!json_is_string(v)) return enum_fail(f, msg, msg_size);
        return check_text_value(f, v, msg, msg_size);
    case FT_INTEGER:
        if (!json_is_integer(v)) return fail(msg, msg_size, "must be an integer");
        return check_bounds(f, (double)json_integer_value(v), msg, msg_size);
    case FT_NUMBER: {
        if (!json_is_number(v)) return fail(msg, msg_size, "must be a number");
        double d = json_number_value(v);
        if (!isfinite(d)) return fail(msg, msg_size, "must be a finite number");
        return check_bounds(f, d, msg, msg_size);
    }
    case FT_BOOLEAN:
        if (!json_is_boolean(v)) return fail(msg, msg_size, "must be true or false");
        return true;
    case FT_JSON:
        return true;
    }
    assert(!"unknown field type");
    return fail(msg, msg_size, "has an unknown type");
}

json_t *field_normalize(const field_def_t *f, const json_t *v)
{
    json_t *mv = (json_t *)v; /* jansson's reference counting takes non-const */
    if (f->type == FT_PASSWORD && json_is_string(v)) {
        char hash[PASSWORD_HASH_MAX];
        if (password_hash(json_string_value(v), json_string_length(v), hash) != 0) return NULL;
        json_t *out = json_string(hash);
        sodium_memzero(hash, sizeof hash);
        return out;
    }
    if (f->type == FT_TIMESTAMP && json_is_string(v)) {
        int64_t us;
        if (time_parse_rfc3339(json_string_value(v), &us) != 0) return json_incref(mv);
        char buf[TIMEFMT_LEN + 1];
        time_format_us(us, buf);
        return json_string(buf);
    }
    if (f->type == FT_EMAIL && json_is_string(v)) {
        const char *s = json_string_value(v);
        const char *at = strchr(s, '@');
        if (!at) return json_incref(mv);
        size_t len = json_string_length(v);
        char *copy = malloc(len + 1);
        if (!copy) return NULL;
        memcpy(copy, s, len + 1);
        for (char *p = copy + (at - s) + 1; *p; p++)
            if (*p >= 'A' && *p <= 'Z') *p = (char)(*p - 'A' + 'a');
        json_t *out = json_stringn(copy, len);
        free(copy);
        return out;
    }
    return json_incref(mv);
}
