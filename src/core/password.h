/*
 * password.h - password hashing for fields of type password and logins:
 * Argon2id through libsodium's crypto_pwhash_str (salted, self-describing
 * strings "$argon2id$v=19$m=...,t=...,p=...$salt$hash"), with the
 * interactive limits (64 MiB, about a tenth of a second). Pure (CPU only).
 * Not here: where hashes are stored (decide/projection) or logins (http).
 */
#ifndef CHRONICLE_CORE_PASSWORD_H
#define CHRONICLE_CORE_PASSWORD_H

#include <stdbool.h>
#include <stddef.h>

#define PASSWORD_HASH_MAX 128 /* crypto_pwhash_STRBYTES */

/* Hashes the n bytes of pw into out (NUL-terminated). Returns 0, or -1
 * when memory for the hash ran out. sodium_init must have run. */
int password_hash(const char *pw, size_t n, char out[PASSWORD_HASH_MAX]);

/* True when pw (n bytes) matches hash. A hash that is not an Argon2id
 * string is checked against a dummy hash instead (same cost), and false. */
bool password_verify(const char *hash, const char *pw, size_t n);

/* Makes the dummy hash of password_verify_dummy now (it takes as long as
 * a login), so the first unknown-user login is not slower than others. */
void password_prepare(void);

/* Spends the time of one verification and returns false: for logins of
 * unknown users, so they take as long as a wrong password. */
bool password_verify_dummy(const char *pw, size_t n);

#endif
