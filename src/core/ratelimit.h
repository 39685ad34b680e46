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

#include "map.h"

typedef struct pl_bucket {
    double  deficit;   /* tokens used beyond a full bucket (0 = full)      */
    int64_t last_ms;   /* monotonic ms of the last update; 0 = never used  */
} pl_bucket;

/* Takes `cost` tokens at now_ms. Returns 0 if allowed; otherwise the
 * milliseconds (> 0) until the tokens would be there, and takes nothing. */
int64_t pl_bucket_take(pl_bucket *b, double rate, double burst, double cost, int64_t now_ms);

/* A set of buckets keyed by id (a user, a conversation, an IP), with one
 * rate and burst. Entries whose bucket has refilled are dropped by sweep, so
 * memory follows the number of recently active keys. rate 0 = unlimited. */
typedef struct pl_limiter {
    double  rate, burst;
    pl_map  buckets;          /* key -> pl_bucket*                        */
} pl_limiter;

void    pl_limiter_init(pl_limiter *l, double rate, double burst);
void    pl_limiter_release(pl_limiter *l);
/* 0 if allowed, else milliseconds until it would be. key must not be 0. */
int64_t pl_limiter_take(pl_limiter *l, int64_t key, double cost, int64_t now_ms);
/* Frees buckets that are full again. */
void    pl_limiter_sweep(pl_limiter *l, int64_t now_ms);

#endif
