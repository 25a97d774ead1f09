/* password.c - Argon2id hashing and verification; see password.h. */
#include "core/password.h"

#include <pthread.h>
#include <sodium.h>
#include <string.h>

#define OPS crypto_pwhash_OPSLIMIT_INTERACTIVE
#define MEM crypto_pwhash_MEMLIMIT_INTERACTIVE

_Static_assert(PASSWORD_HASH_MAX == crypto_pwhash_STRBYTES, "hash buffer size");

int password_hash(const char *pw, size_t n, char out[PASSWORD_HASH_MAX])
{
    return crypto_pwhash_str(out, pw, n, OPS, MEM) == 0 ? 0 : -1;
}

static char dummy[PASSWORD_HASH_MAX];
static pthread_once_t dummy_once = PTHREAD_ONCE_INIT;

/* A hash of random bytes with the same limits, made once per process. */
static void make_dummy(void)
{
    unsigned char pw[32];
    randombytes_buf(pw, sizeof pw);
    if (crypto_pwhash_str(dummy, (const char *)pw, sizeof pw, OPS, MEM) != 0) dummy[0] = '\0';
    sodium_memzero(pw, sizeof pw);
}

void password_prepare(void)
{
    pthread_once(&dummy_once, make_dummy);
}

bool password_verify_dummy(const char *pw, size_t n)
{
    pthread_once(&dummy_once, make_dummy);
    /* the outcome is false either way; only the time spent matters */
    volatile int sink = dummy[0] ? crypto_pwhash_str_verify(dummy, pw, n) : -1;
    (void)sink;
    return false;
}

bool password_verify(const char *hash, const char *pw, size_t n)
{
    if (!hash || strncmp(hash, "$argon2id$", 10) != 0 || strlen(hash) >= PASSWORD_HASH_MAX)
        return password_verify_dummy(pw, n);
    return crypto_pwhash_str_verify(hash, pw, n) == 0;
}
