/* id.h — globally unique, time-sortable message ids (Snowflake-style).
 *
 * Owns: the id layout. 41 bits of milliseconds since PL_ID_EPOCH_MS, 10 bits
 * of node id (cluster mode gives each node its own), 12 bits of a counter
 * within the millisecond. A generator is not thread-safe: each writer owns
 * one. Ids are monotonic per generator even if the wall clock steps back
 * (the generator keeps using its last millisecond and borrows ahead when the
 * counter wraps).
 */
#ifndef PL_ID_H
#define PL_ID_H

#include <stdint.h>

#define PL_ID_EPOCH_MS 1704067200000LL   /* 2024-01-01T00:00:00Z */

typedef struct pl_idgen {
    int      node;        /* 0..1023                               */
    int64_t  last_ms;     /* millisecond of the last id (epoch-relative) */
    uint32_t counter;     /* ids issued in last_ms                 */
} pl_idgen;

void     pl_idgen_init(pl_idgen *g, int node);
/* now_ms: wall clock in ms since the Unix epoch. */
uint64_t pl_idgen_next(pl_idgen *g, int64_t now_ms);
/* The creation time (ms since the Unix epoch) encoded in an id. */
int64_t  pl_id_time(uint64_t id);

#endif
