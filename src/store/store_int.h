/* store_int.h — what the store backends share; nothing outside src/store
 * includes it.
 *
 * Owns: the JSON data of system events (so both backends write the same
 * bytes) and the map of own_unread deltas a batch accumulates (store.h
 * invariant 5: a send adds 1 for its sender, a moving read cursor
 * subtracts the own messages it passes; the batch flushes the deltas before
 * COMMIT). Used by one writer thread at a time.
 */
#ifndef PL_STORE_INT_H
#define PL_STORE_INT_H

#include <stddef.h>
#include <stdint.h>

/* {"user":N} (member events), a new string. */
char *pl_store__data_user(int64_t user);
/* {"kind":"group","title":..,"members":[creator, others..]}, a new string,
 * or NULL if the title is not valid UTF-8. */
char *pl_store__data_group(const char *title, int64_t creator, const int64_t *others, size_t n);

typedef struct pl_own_ent {
    int64_t conv, user;       /* key; conv 0 marks an empty slot            */
    int64_t delta;
} pl_own_ent;

typedef struct pl_own_map {   /* open addressing, power-of-two cap, <= 1/2 full */
    pl_own_ent *tab;
    size_t      cap, len;
} pl_own_map;

pl_own_ent *pl_own_find(pl_own_map *m, int64_t conv, int64_t user);
/* Adds d to the (conv, user) delta (a new entry starts at 0); may move
 * entries: pointers from pl_own_find are stale afterwards. */
void        pl_own_add(pl_own_map *m, int64_t conv, int64_t user, int64_t d);
void        pl_own_clear(pl_own_map *m);
void        pl_own_free(pl_own_map *m);
/* Iteration: for (size_t i = 0; i < m->cap; i++) if (m->tab[i].conv) ... */

#endif
