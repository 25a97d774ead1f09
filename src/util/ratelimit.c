/* ratelimit.c - token buckets in a bounded table; see ratelimit.h. */
#include "util/ratelimit.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#define WAYS 8
#define LOCKS 64

typedef struct bucket {
    uint64_t tag; /* 0 = free */
    double tokens;
    int64_t last_ns;
} bucket_t;

struct ratelimit {
    unsigned char key[crypto_shorthash_KEYBYTES];
    size_t set_mask;
    bucket_t *buckets; /* (set_mask + 1) * WAYS */
    pthread_mutex_t locks[LOCKS];
};

int ratelimit_parse(const char *name, const char *text, ratelimit_rule_t *out, chr_err_t *err)
{
    out->rate = 0;
    out->burst = 0;
    if (!text || !*text || strcmp(text, "0") == 0 || strcmp(text, "off") == 0) return CHR_OK;
    errno = 0;
    char *end;
    double rate = strtod(text, &end);
    double burst = rate < 1 ? 1 : floor(rate);
    bool ok = errno == 0 && end != text && isfinite(rate) && rate > 0 && rate <= 1e9;
    if (ok && *end == '/') {
        const char *b = end + 1;
        long long n = strtoll(b, &end, 10);
        ok = end != b && n >= 1 && n <= 1000000000LL;
        burst = (double)n;
    }
    if (!ok || *end)
        return chr_fail(err, CHR_EINVAL, name,
                        "%s must be RATE or RATE/BURST (requests per second, e.g. 10/20 or "
                        "0.5/5), or off; not \"%s\"",
                        name, text);
    out->rate = rate;
    out->burst = burst;
    return CHR_OK;
}

ratelimit_t *ratelimit_new(size_t buckets)
{
    size_t sets = 8;
    while (sets * WAYS < buckets)
        sets <<= 1;
    ratelimit_t *rl = calloc(1, sizeof *rl);
    if (!rl) return NULL;
    rl->buckets = calloc(sets * WAYS, sizeof *rl->buckets);
    if (!rl->buckets) {
        free(rl);
        return NULL;
    }
    rl->set_mask = sets - 1;
    randombytes_buf(rl->key, sizeof rl->key);
    for (size_t i = 0; i < LOCKS; i++)
        pthread_mutex_init(&rl->locks[i], NULL);
    return rl;
}

void ratelimit_free(ratelimit_t *rl)
{
    if (!rl) return;
    for (size_t i = 0; i < LOCKS; i++)
        pthread_mutex_destroy(&rl->locks[i]);
    free(rl->buckets);
    free(rl);
}

bool ratelimit_take(ratelimit_t *rl, int cls, const char *key, size_t len,
                    const ratelimit_rule_t *rule, int64_t now_ns, int64_t *retry_after_s)
{
    *retry_after_s = 0;
    if (rule->rate <= 0) return true;
    unsigned char h[crypto_shorthash_BYTES];
    unsigned char buf[512];
    size_t n = len < sizeof buf - 1 ? len : sizeof buf - 1;
    buf[0] = (unsigned char)cls;
    memcpy(buf + 1, key, n);
    crypto_shorthash(h, buf, n + 1, rl->key);
    uint64_t tag;
    memcpy(&tag, h, sizeof tag);
    tag |= 1; /* never 0 (free) */
    size_t set = (size_t)(tag >> 1) & rl->set_mask;
    pthread_mutex_t *lock = &rl->locks[set % LOCKS];
    bucket_t *ways = &rl->buckets[set * WAYS];

    pthread_mutex_lock(lock);
    bucket_t *b = NULL, *victim = NULL;
    for (size_t i = 0; i < WAYS && !b; i++) {
        if (ways[i].tag == tag) {
            b = &ways[i];
        } else if (!victim || (victim->tag != 0 &&
                               (ways[i].tag == 0 || ways[i].last_ns < victim->last_ns))) {
            victim = &ways[i]; /* a free way, else the least recently used */
        }
    }
    if (!b) {
        b = victim;
        b->tag = tag;
        b->tokens = rule->burst;
        b->last_ns = now_ns;
    }
    if (now_ns > b->last_ns) {
        b->tokens += (double)(now_ns - b->last_ns) / 1e9 * rule->rate;
        if (b->tokens > rule->burst) b->tokens = rule->burst;
        b->last_ns = now_ns;
    }
    bool ok = b->tokens >= 1.0;
    if (ok) {
        b->tokens -= 1.0;
    } else {
        double wait = (1.0 - b->tokens) / rule->rate;
        int64_t s = (int64_t)ceil(wait);
        *retry_after_s = s < 1 ? 1 : s;
    }
    pthread_mutex_unlock(lock);
    return ok;
}
