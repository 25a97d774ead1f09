/* uuid.c - UUIDv7 generation and syntax check; see uuid.h. */
#include "core/uuid.h"

#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static pthread_mutex_t uuid_lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t last_ms;
static uint16_t last_seq;

static void format(char out[UUID_STR_LEN + 1], const uint8_t b[16])
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10) out[o++] = '-';
        out[o++] = hex[b[i] >> 4];
        out[o++] = hex[b[i] & 15];
    }
    out[o] = '\0';
}

/* randombytes_buf costs a getrandom(2) call each time; drawing 4 KiB at a
 * time per thread keeps ids cheap without weakening them. */
static _Thread_local uint8_t pool[4096];
static _Thread_local size_t pool_left;

static void random_bytes(uint8_t *out, size_t n)
{
    if (pool_left < n) {
        randombytes_buf(pool, sizeof pool);
        pool_left = sizeof pool;
    }
    memcpy(out, pool + sizeof pool - pool_left, n);
    sodium_memzero(pool + sizeof pool - pool_left, n);
    pool_left -= n;
}

void uuid_v7_generate_at(char out[UUID_STR_LEN + 1], uint64_t ms)
{
    uint8_t b[16];
    random_bytes(b, sizeof b);

    /* A 12-bit sequence within the millisecond keeps ids monotonic in this
     * process; if it overflows we borrow the next millisecond. */
    pthread_mutex_lock(&uuid_lock);
    if (ms <= last_ms) {
        ms = last_ms;
        if (++last_seq > 0x0fff) {
            ms++;
            last_seq = 0;
        }
    } else {
        last_seq = (uint16_t)(b[6] & 0x03); /* small random start, room to count */
    }
    last_ms = ms;
    uint16_t seq = last_seq;
    pthread_mutex_unlock(&uuid_lock);

    for (int i = 0; i < 6; i++) b[i] = (uint8_t)(ms >> (40 - 8 * i));
    b[6] = (uint8_t)(0x70 | ((seq >> 8) & 0x0f));
    b[7] = (uint8_t)(seq & 0xff);
    b[8] = (uint8_t)(0x80 | (b[8] & 0x3f));
    format(out, b);
}

void uuid_v7_generate(char out[UUID_STR_LEN + 1])
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uuid_v7_generate_at(out, (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u);
}

bool uuid_is_valid(const char *s)
{
    if (!s) return false;
    for (int i = 0; i < UUID_STR_LEN; i++) {
        char c = s[i];
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (c != '-') return false;
        } else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'))) {
            return false;
        }
    }
    return s[UUID_STR_LEN] == '\0';
}

void uuid_v8_from_hash(const unsigned char h_in[16], char out[UUID_STR_LEN + 1])
{
    unsigned char h[16];
    memcpy(h, h_in, sizeof h);
    h[6] = (unsigned char)((h[6] & 0x0f) | 0x80); /* version 8 */
    h[8] = (unsigned char)((h[8] & 0x3f) | 0x80); /* variant 10 */
    static const char hexd[] = "0123456789abcdef";
    size_t o = 0;
    for (size_t i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10) out[o++] = '-';
        out[o++] = hexd[h[i] >> 4];
        out[o++] = hexd[h[i] & 15];
    }
    out[o] = '\0';
}
