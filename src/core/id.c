/* id.c — Snowflake id generator; see id.h for the layout. */
#include "id.h"

void pl_idgen_init(pl_idgen *g, int node) {
    g->node = node & 0x3ff;
    g->last_ms = 0;
    g->counter = 0;
}

uint64_t pl_idgen_next(pl_idgen *g, int64_t now_ms) {
    int64_t ms = now_ms - PL_ID_EPOCH_MS;
    if (ms < 0) ms = 0;
    if (ms > g->last_ms) {          /* a new millisecond: restart the counter */
        g->last_ms = ms;
        g->counter = 0;
    } else if (++g->counter > 0xfff) { /* same or earlier ms: borrow the next */
        g->last_ms++;
        g->counter = 0;
    }
    return ((uint64_t)g->last_ms << 22) | ((uint64_t)g->node << 12) | g->counter;
}

int64_t pl_id_time(uint64_t id) {
    return (int64_t)(id >> 22) + PL_ID_EPOCH_MS;
}
