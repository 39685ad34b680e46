/* hdr.h — an HDR-style latency histogram: log-linear buckets, fixed memory,
 * mergeable across processes.
 *
 * Owns: recording values (nanoseconds) with a relative error under 1/128
 * (< 0.8 %), percentiles, and the sparse text form the workers send to the
 * parent. Values below 256 ns are exact. The largest value kept exactly is
 * max (tracked on the side); percentiles report the highest value equivalent
 * to the bucket they fall in, as HdrHistogram does, so they never understate.
 *
 * Layout: values v < 256 go to bucket v. Above, v in [2^e, 2^(e+1)) with
 * e >= 8 goes to one of 128 sub-buckets of width 2^(e-7):
 *   index = 256 + (e - 8) * 128 + ((v >> (e - 7)) - 128).
 * 56 exponent levels cover every uint64 value; 7,424 counters = 58 KiB.
 */
#ifndef PB_HDR_H
#define PB_HDR_H

#include <stdint.h>

#define PB_HDR_SUB     128
#define PB_HDR_LINEAR  256
#define PB_HDR_LEVELS  56
#define PB_HDR_BUCKETS (PB_HDR_LINEAR + PB_HDR_LEVELS * PB_HDR_SUB)

typedef struct pb_hdr {
    uint64_t count;                    /* values recorded                    */
    uint64_t min, max;                 /* exact extremes (min valid if count) */
    double   sum;                      /* for the mean                       */
    uint64_t b[PB_HDR_BUCKETS];        /* counts per bucket                  */
} pb_hdr;

void     pb_hdr_reset(pb_hdr *h);
void     pb_hdr_record(pb_hdr *h, uint64_t v);
void     pb_hdr_merge(pb_hdr *into, const pb_hdr *from);
/* The value at percentile q (0..100): the highest value equivalent to the
 * bucket holding the q-th percentile (max for q == 100). 0 when empty. */
uint64_t pb_hdr_percentile(const pb_hdr *h, double q);
double   pb_hdr_mean(const pb_hdr *h);

/* Sparse text form "count min max sum i:n i:n ..." (no newline) appended to
 * out; pb_hdr_parse merges such a string into h. Returns 0 or -1 if malformed. */
struct pl_sbuf;
void     pb_hdr_dump(const pb_hdr *h, struct pl_sbuf *out);
int      pb_hdr_parse(pb_hdr *h, const char *s);

#endif
