/* map.c — int64 -> pointer hash map (see map.h). */
#include "map.h"
#include "alloc.h"

#include <stdlib.h>

static size_t hash64(int64_t k) {
    uint64_t x = (uint64_t)k;
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    return (size_t)x;
}

void pl_map_init(pl_map *m) { m->slots = NULL; m->cap = m->len = 0; }

void pl_map_release(pl_map *m) { free(m->slots); pl_map_init(m); }

void *pl_map_get(const pl_map *m, int64_t key) {
    if (!m->cap) return NULL;
    size_t mask = m->cap - 1;
    for (size_t i = hash64(key) & mask;; i = (i + 1) & mask) {
        if (m->slots[i].key == key) return m->slots[i].val;
        if (!m->slots[i].key) return NULL;
    }
}

static void grow(pl_map *m) {
    size_t ncap = m->cap ? m->cap * 2 : 16;
    pl_map_slot *old = m->slots;
    size_t ocap = m->cap;
    m->slots = pl_calloc(ncap, sizeof *m->slots);
    m->cap = ncap;
    m->len = 0;
    for (size_t i = 0; i < ocap; i++)
        if (old[i].key) pl_map_put(m, old[i].key, old[i].val);
    free(old);
}

void pl_map_put(pl_map *m, int64_t key, void *val) {
    if ((m->len + 1) * 4 > m->cap * 3) grow(m);   /* load factor at most 3/4 (map.h) */
    size_t mask = m->cap - 1;
    for (size_t i = hash64(key) & mask;; i = (i + 1) & mask) {
        if (m->slots[i].key == key) { m->slots[i].val = val; return; }
        if (!m->slots[i].key) {
            m->slots[i].key = key;
            m->slots[i].val = val;
            m->len++;
            return;
        }
    }
}

void *pl_map_del(pl_map *m, int64_t key) {
    if (!m->cap) return NULL;
    size_t mask = m->cap - 1, i = hash64(key) & mask;
    while (m->slots[i].key != key) {
        if (!m->slots[i].key) return NULL;
        i = (i + 1) & mask;
    }
    void *val = m->slots[i].val;
    /* backward-shift: pull later entries of the cluster into the hole */
    for (size_t j = (i + 1) & mask; m->slots[j].key; j = (j + 1) & mask) {
        size_t home = hash64(m->slots[j].key) & mask;
        /* move j to i if its home is not in (i, j] cyclically */
        if (((j - home) & mask) >= ((j - i) & mask)) {
            m->slots[i] = m->slots[j];
            i = j;
        }
    }
    m->slots[i].key = 0;
    m->slots[i].val = NULL;
    m->len--;
    return val;
}
