/*
 * url.h - database URLs as they may be shown: with any password replaced,
 * for messages, logs and command output.
 */
#ifndef CHRONICLE_UTIL_URL_H
#define CHRONICLE_UTIL_URL_H

#include <stddef.h>

/* Copies url into out (size bytes, always terminated; truncated if need
 * be) with the password of "scheme://user:password@host/..." and the value
 * of every "password=" query parameter replaced by "****". Text that is not
 * such a URL is copied as it is. Returns out. */
char *url_redact(const char *url, char *out, size_t size);

#endif
