/* ratelimit.h — token buckets.
 *
 * Owns: the arithmetic of a token bucket: `rate` tokens per second refill up
 * to `burst`; taking a token either succeeds or says how long until one is
 * there. The bucket is 16 bytes, embedded in its owner (a user, an IP, a
 * conversation); the rate and burst come from configuration at each call so
 * buckets need no setup (a zeroed bucket is full).
 */
#ifndef PL_RATELIMIT_H
#define PL_RATELIMIT_H

#include <stdint.h>

typedef struct pl_bucket {
    double  deficit;   /* tokens used beyond a full bucket (0 = full)      */
    int64_t last_ms;   /* monotonic ms of the last update; 0 = never used  */
} pl_bucket;

/* Takes `cost` tokens at now_ms. Returns 0 if allowed; otherwise the
 * milliseconds (> 0) until the tokens would be there, and takes nothing. */
int64_t pl_bucket_take(pl_bucket *b, double rate, double burst, double cost, int64_t now_ms);

#endif
