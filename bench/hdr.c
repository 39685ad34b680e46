/* hdr.c — the log-linear latency histogram (see hdr.h). */
#include "hdr.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"

static unsigned bucket_of(uint64_t v) {
    if (v < PB_HDR_LINEAR) return (unsigned)v;
    unsigned e = 63u - (unsigned)__builtin_clzll(v);          /* >= 8 */
    unsigned shift = e - 7;
    return PB_HDR_LINEAR + (e - 8) * PB_HDR_SUB + (unsigned)((v >> shift) - PB_HDR_SUB);
}

/* The highest value that lands in bucket i. */
static uint64_t bucket_high(unsigned i) {
    if (i < PB_HDR_LINEAR) return i;
    unsigned level = (i - PB_HDR_LINEAR) / PB_HDR_SUB;
    unsigned sub = (i - PB_HDR_LINEAR) % PB_HDR_SUB;
    unsigned shift = level + 1;
    uint64_t low = (uint64_t)(sub + PB_HDR_SUB) << shift;
    return low + (((uint64_t)1 << shift) - 1);
}

void pb_hdr_reset(pb_hdr *h) { memset(h, 0, sizeof *h); }

void pb_hdr_record(pb_hdr *h, uint64_t v) {
    if (!h->count || v < h->min) h->min = v;
    if (v > h->max) h->max = v;
    h->count++;
    h->sum += (double)v;
    h->b[bucket_of(v)]++;
}

void pb_hdr_merge(pb_hdr *into, const pb_hdr *from) {
    if (!from->count) return;
    if (!into->count || from->min < into->min) into->min = from->min;
    if (from->max > into->max) into->max = from->max;
    into->count += from->count;
    into->sum += from->sum;
    for (unsigned i = 0; i < PB_HDR_BUCKETS; i++) into->b[i] += from->b[i];
}

uint64_t pb_hdr_percentile(const pb_hdr *h, double q) {
    if (!h->count) return 0;
    if (q >= 100.0) return h->max;
    uint64_t want = (uint64_t)((q / 100.0) * (double)h->count + 0.5);
    if (want < 1) want = 1;
    uint64_t seen = 0;
    for (unsigned i = 0; i < PB_HDR_BUCKETS; i++) {
        seen += h->b[i];
        if (seen >= want) {
            uint64_t v = bucket_high(i);
            return v > h->max ? h->max : v;
        }
    }
    return h->max;
}

double pb_hdr_mean(const pb_hdr *h) { return h->count ? h->sum / (double)h->count : 0.0; }

void pb_hdr_dump(const pb_hdr *h, pl_sbuf *out) {
    pl_sbuf_printf(out, "%" PRIu64 " %" PRIu64 " %" PRIu64 " %.0f", h->count, h->min, h->max, h->sum);
    for (unsigned i = 0; i < PB_HDR_BUCKETS; i++)
        if (h->b[i]) pl_sbuf_printf(out, " %u:%" PRIu64, i, h->b[i]);
}

int pb_hdr_parse(pb_hdr *h, const char *s) {
    pb_hdr t;
    pb_hdr_reset(&t);
    char *end;
    t.count = strtoull(s, &end, 10);
    if (end == s) return -1;
    s = end;
    t.min = strtoull(s, &end, 10);
    s = end;
    t.max = strtoull(s, &end, 10);
    s = end;
    t.sum = strtod(s, &end);
    if (end == s) return -1;
    s = end;
    while (*s == ' ') {
        unsigned long i = strtoul(s + 1, &end, 10);
        if (*end != ':' || i >= PB_HDR_BUCKETS) return -1;
        t.b[i] = strtoull(end + 1, &end, 10);
        s = end;
    }
    if (*s) return -1;
    pb_hdr_merge(h, &t);
    return 0;
}
