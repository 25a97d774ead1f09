/*
 * utf8.h - well-formed UTF-8 (RFC 3629): no overlong forms, no surrogates,
 * nothing above U+10FFFF. The one decoder every layer uses, so "valid
 * UTF-8" means the same thing in names, bodies, logs and queries. Pure.
 */
#ifndef CHRONICLE_CORE_UTF8_H
#define CHRONICLE_CORE_UTF8_H

#include <stdbool.h>
#include <stddef.h>

/* Length (1-4) of the well-formed sequence at s with n > 0 bytes left, or 0
 * when the bytes there are not one. */
size_t utf8_seq_len(const unsigned char *s, size_t n);

/* True when the len bytes at s are well-formed UTF-8. */
bool utf8_valid(const char *s, size_t len);

#endif
