/* strmap.c - string -> int64 hash map; see strmap.h. */
#include "util/strmap.h"

#include <stdlib.h>
#include <string.h>

static uint64_t hash(const char *s)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    while (*s) {
        h ^= (unsigned char)*s++;
        h *= 1099511628211ull;
    }
    return h;
}

static size_t find_slot(const strmap_t *m, const char *key)
{
    size_t mask = m->cap - 1, i = hash(key) & mask;
    while (m->slots[i].key && strcmp(m->slots[i].key, key) != 0) i = (i + 1) & mask;
    return i;
}

bool strmap_get(const strmap_t *m, const char *key, int64_t *value)
{
    if (m->cap == 0) return false;
    size_t i = find_slot(m, key);
    if (!m->slots[i].key) return false;
    *value = m->slots[i].value;
    return true;
}

static int grow(strmap_t *m)
{
    size_t cap = m->cap ? m->cap * 2 : 64;
    strmap_entry_t *slots = calloc(cap, sizeof *slots);
    if (!slots) return -1;
    strmap_t n = {slots, cap, 0};
    for (size_t i = 0; i < m->cap; i++) {
        if (!m->slots[i].key) continue;
        size_t j = find_slot(&n, m->slots[i].key);
        n.slots[j] = m->slots[i];
        n.len++;
    }
    free(m->slots);
    *m = n;
    return 0;
}

int strmap_put(strmap_t *m, const char *key, int64_t value)
{
    if ((m->len + 1) * 4 > m->cap * 3 && grow(m) != 0) return -1;
    size_t i = find_slot(m, key);
    if (!m->slots[i].key) {
        char *k = strdup(key);
        if (!k) return -1;
        m->slots[i].key = k;
        m->len++;
    }
    m->slots[i].value = value;
    return 0;
}

void strmap_del(strmap_t *m, const char *key)
{
    if (m->cap == 0) return;
    size_t mask = m->cap - 1, i = find_slot(m, key);
    if (!m->slots[i].key) return;
    free(m->slots[i].key);
    m->slots[i].key = NULL;
    m->len--;
    /* Re-seat the rest of the probe run so lookups do not stop early. */
    for (size_t j = (i + 1) & mask; m->slots[j].key; j = (j + 1) & mask) {
        strmap_entry_t e = m->slots[j];
        m->slots[j].key = NULL;
        size_t k = find_slot(m, e.key);
        m->slots[k] = e;
    }
}

void strmap_clear(strmap_t *m)
{
    for (size_t i = 0; i < m->cap; i++) {
        free(m->slots[i].key);
        m->slots[i].key = NULL;
    }
    m->len = 0;
}

void strmap_free(strmap_t *m)
{
    strmap_clear(m);
    free(m->slots);
    memset(m, 0, sizeof *m);
}
