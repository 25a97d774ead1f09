/* token_cache.c - verified tokens by keyed digest; see token_cache.h. */
#include "auth/token_cache.h"

#include <pthread.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#define STRIPES 64
#define DIGEST AUTH_TOKEN_DIGEST_LEN

typedef struct entry {
    bool used;
    unsigned char digest[DIGEST];
    int64_t exp;
    auth_principal_t p;
} entry_t;

struct auth_token_cache {
    size_t mask;
    entry_t *slots;
    pthread_mutex_t locks[STRIPES];
};

auth_token_cache_t *auth_token_cache_new(size_t slots)
{
    size_t n = 64;
    while (n < slots)
        n <<= 1;
    auth_token_cache_t *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->slots = calloc(n, sizeof *c->slots);
    if (!c->slots) {
        free(c);
        return NULL;
    }
    c->mask = n - 1;
    for (size_t i = 0; i < STRIPES; i++)
        pthread_mutex_init(&c->locks[i], NULL);
    return c;
}

void auth_token_cache_free(auth_token_cache_t *c)
{
    if (!c) return;
    for (size_t i = 0; i < STRIPES; i++)
        pthread_mutex_destroy(&c->locks[i]);
    sodium_memzero(c->slots, (c->mask + 1) * sizeof *c->slots);
    free(c->slots);
    free(c);
}

static size_t slot_of(const auth_token_cache_t *c, const unsigned char d[DIGEST])
{
    uint64_t h;
    memcpy(&h, d, sizeof h);
    return (size_t)h & c->mask;
}

bool auth_token_cache_get(auth_token_cache_t *c, const unsigned char d[DIGEST], int64_t now,
                          auth_principal_t *p)
{
    size_t i = slot_of(c, d);
    pthread_mutex_t *lock = &c->locks[i % STRIPES];
    bool hit = false;
    pthread_mutex_lock(lock);
    entry_t *e = &c->slots[i];
    if (e->used && sodium_memcmp(e->digest, d, DIGEST) == 0) {
        if (now <= e->exp) {
            *p = e->p;
            hit = true;
        } else {
            e->used = false;
        }
    }
    pthread_mutex_unlock(lock);
    return hit;
}

void auth_token_cache_put(auth_token_cache_t *c, const unsigned char d[DIGEST], int64_t exp,
                          const auth_principal_t *p)
{
    size_t i = slot_of(c, d);
    pthread_mutex_t *lock = &c->locks[i % STRIPES];
    pthread_mutex_lock(lock);
    entry_t *e = &c->slots[i];
    e->used = true;
    memcpy(e->digest, d, DIGEST);
    e->exp = exp;
    e->p = *p;
    pthread_mutex_unlock(lock);
}
