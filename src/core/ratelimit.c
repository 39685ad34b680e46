/* ratelimit.c — token buckets (see ratelimit.h). The bucket stores how far
 * below full it is, so a zeroed bucket is full and refill is one subtraction. */
#include "ratelimit.h"

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
