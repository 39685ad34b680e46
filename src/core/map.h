/* map.h — an open-addressing hash map from non-zero int64 keys to pointers.
 *
 * Owns: nothing it points to. Linear probing with backward-shift deletion
 * (no tombstones), power-of-two capacity, load factor at most 3/4 (with the
 * mixing hash below, a hit probes about 2.5 slots, a miss about 8.5: four
 * slots share a cache line; 1/2 cost a registry of N entries up to 64 N
 * bytes, 3/4 up to 43 N). Used for the chat registries (users and
 * conversations by id) on the loop thread.
 */
#ifndef PL_MAP_H
#define PL_MAP_H

#include <stddef.h>
#include <stdint.h>

typedef struct pl_map_slot { int64_t key; void *val; } pl_map_slot;

typedef struct pl_map {
    pl_map_slot *slots;   /* NULL until the first insert; key 0 = empty */
    size_t       cap;     /* power of two                               */
    size_t       len;
} pl_map;

void  pl_map_init(pl_map *m);
void  pl_map_release(pl_map *m);
void *pl_map_get(const pl_map *m, int64_t key);
/* Inserts or replaces; key must not be 0. */
void  pl_map_put(pl_map *m, int64_t key, void *val);
/* Removes key; returns its value or NULL. */
void *pl_map_del(pl_map *m, int64_t key);
/* Iteration: for (size_t i = 0; i < m->cap; i++) if (m->slots[i].key) ... */

#endif
