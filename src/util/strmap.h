/*
 * strmap.h - a hash map from strings to int64 values (open addressing,
 * linear probing). Keys are copied. Not thread-safe: one owner at a time.
 */
#ifndef CHRONICLE_UTIL_STRMAP_H
#define CHRONICLE_UTIL_STRMAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct strmap_entry {
    char *key; /* NULL = empty slot */
    int64_t value;
} strmap_entry_t;

typedef struct strmap {
    strmap_entry_t *slots;
    size_t cap; /* power of two, 0 before first put */
    size_t len;
} strmap_t;

/* Finds key; returns true and sets *value when present. */
bool strmap_get(const strmap_t *m, const char *key, int64_t *value);

/* Inserts or replaces key's value. Returns 0, or -1 on allocation failure
 * (the map is unchanged then). */
int strmap_put(strmap_t *m, const char *key, int64_t value);

/* Removes key if present. */
void strmap_del(strmap_t *m, const char *key);

/* Removes everything but keeps the allocation. */
void strmap_clear(strmap_t *m);

/* Frees everything; the map may be reused afterwards. */
void strmap_free(strmap_t *m);

#endif
