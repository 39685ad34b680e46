/* ratelimit.c — token buckets (see ratelimit.h). The bucket stores how far
 * below full it is, so a zeroed bucket is full and refill is one subtraction. */
#include "ratelimit.h"

#include <stdlib.h>

#include "alloc.h"

int64_t pl_bucket_take(pl_bucket *b, double rate, double burst, double cost, int64_t now_ms) {
    if (b->last_ms) {
        double refill = (double)(now_ms - b->last_ms) * rate / 1000.0;
        b->deficit = refill >= b->deficit ? 0 : b->deficit - refill;
    }
    b->last_ms = now_ms;
    if (b->deficit + cost <= burst) {
        b->deficit += cost;
        return 0;
    }
    double need = b->deficit + cost - burst;          /* tokens missing */
    int64_t ms = (int64_t)(need * 1000.0 / rate) + 1;
    return ms > 0 ? ms : 1;
}

void pl_limiter_init(pl_limiter *l, double rate, double burst) {
    l->rate = rate;
    l->burst = burst;
    pl_map_init(&l->buckets);
}

void pl_limiter_release(pl_limiter *l) {
    for (size_t i = 0; i < l->buckets.cap; i++)
        if (l->buckets.slots[i].key) free(l->buckets.slots[i].val);
    pl_map_release(&l->buckets);
}

int64_t pl_limiter_take(pl_limiter *l, int64_t key, double cost, int64_t now_ms) {
    if (l->rate <= 0) return 0;
    pl_bucket *b = pl_map_get(&l->buckets, key);
    if (!b) {
        b = pl_calloc(1, sizeof *b);
        pl_map_put(&l->buckets, key, b);
    }
    return pl_bucket_take(b, l->rate, l->burst, cost, now_ms);
}

void pl_limiter_sweep(pl_limiter *l, int64_t now_ms) {
    for (size_t i = 0; i < l->buckets.cap;) {
        pl_map_slot *sl = &l->buckets.slots[i];
        pl_bucket *b = sl->val;
        if (sl->key && (double)(now_ms - b->last_ms) * l->rate / 1000.0 >= b->deficit) {
            free(pl_map_del(&l->buckets, sl->key));   /* backward shift: look at i again */
            continue;
        }
        i++;
    }
}
