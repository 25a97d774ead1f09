/* policy.c - the pure rules of delivery; see policy.h. */
#include "worker/policy.h"

#include <sodium.h>
#include <stdio.h>
#include <string.h>

bool consumer_filter_match(const sink_filter_t *f, const char *type, const char *stream)
{
    if (f->n_types) {
        bool hit = false;
        for (size_t i = 0; i < f->n_types && !hit; i++)
            hit = type && strcmp(f->types[i], type) == 0;
        if (!hit) return false;
    }
    if (f->n_entities) {
        bool hit = false;
        for (size_t i = 0; i < f->n_entities && !hit; i++) {
            size_t n = strlen(f->entities[i]);
            hit = stream && strncmp(stream, f->entities[i], n) == 0 && stream[n] == '-' &&
                  stream[n + 1] != '\0';
        }
        if (!hit) return false;
    }
    return true;
}

int64_t consumer_backoff_ms(int attempt, int64_t base_ms, int64_t max_ms, double rand01)
{
    if (attempt < 1) attempt = 1;
    if (base_ms < 1) base_ms = 1;
    if (max_ms < base_ms) max_ms = base_ms;
    int64_t d = base_ms;
    for (int i = 1; i < attempt && d < max_ms; i++)
        d = d > max_ms / 2 ? max_ms : d * 2;
    if (d > max_ms) d = max_ms;
    if (rand01 < 0) rand01 = 0;
    if (rand01 >= 1) rand01 = 0.999999;
    int64_t half = d / 2;
    int64_t out = (d - half) + (int64_t)((double)half * rand01);
    return out < 1 ? 1 : out;
}

void consumer_delivery_id(const char *name, int64_t epoch, const char *event_id,
                          char out[CONSUMER_DELIVERY_ID_LEN + 1])
{
    crypto_generichash_state st;
    unsigned char digest[16];
    char ep[32];
    int en = snprintf(ep, sizeof ep, "%lld", (long long)epoch);
    crypto_generichash_init(&st, NULL, 0, sizeof digest);
    crypto_generichash_update(&st, (const unsigned char *)"chronicle-delivery", 19);
    crypto_generichash_update(&st, (const unsigned char *)name, strlen(name) + 1);
    crypto_generichash_update(&st, (const unsigned char *)ep, (unsigned long long)en + 1);
    crypto_generichash_update(&st, (const unsigned char *)event_id, strlen(event_id));
    crypto_generichash_final(&st, digest, sizeof digest);
    sodium_bin2hex(out, CONSUMER_DELIVERY_ID_LEN + 1, digest, sizeof digest);
}

void webhook_signature(const char *secret, int64_t ts, const char *body, size_t len,
                       char out[WEBHOOK_SIGNATURE_MAX])
{
    crypto_auth_hmacsha256_state st;
    unsigned char mac[crypto_auth_hmacsha256_BYTES];
    char prefix[32];
    int pn = snprintf(prefix, sizeof prefix, "%lld.", (long long)ts);
    crypto_auth_hmacsha256_init(&st, (const unsigned char *)secret, strlen(secret));
    crypto_auth_hmacsha256_update(&st, (const unsigned char *)prefix, (unsigned long long)pn);
    crypto_auth_hmacsha256_update(&st, (const unsigned char *)body, len);
    crypto_auth_hmacsha256_final(&st, mac);
    char hex[2 * sizeof mac + 1];
    sodium_bin2hex(hex, sizeof hex, mac, sizeof mac);
    snprintf(out, WEBHOOK_SIGNATURE_MAX, "t=%lld,v1=%s", (long long)ts, hex);
}
