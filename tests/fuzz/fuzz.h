/* fuzz.h — helpers shared by the libFuzzer drivers in tests/fuzz/.
 *
 * Owns: the input layout the drivers share, the CHECK that turns a broken
 * invariant into a crash libFuzzer records, and exact-size heap copies (so
 * ASan sees any read past the bytes a parser was given). Does not own the
 * parsers under test (src/) or the build (mk/fuzz.mk).
 *
 * Input layout, for drivers that split their input into feeds:
 *
 *   [nsplit] [nsplit chunk-size bytes] [data ...]
 *
 * Chunk i of the data has size sizes[i % nsplit] + 1 (1..256), so the fuzzer
 * chooses where the data is cut; nsplit = 0 means 1-byte chunks.
 */
#ifndef PL_FUZZ_H
#define PL_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A broken invariant: report it and abort, which libFuzzer counts as a crash
 * (and writes the input to a crash-* file). */
#define FZ_CHECK(expr) do { if (!(expr)) { \
    fprintf(stderr, "%s:%d: invariant broken: %s\n", __FILE__, __LINE__, #expr); \
    abort(); } } while (0)

/* A heap copy of exactly n bytes (at least one byte is allocated so the
 * pointer is never NULL; ASan still flags a read of p[n]). */
static inline uint8_t *fz_dup(const uint8_t *p, size_t n) {
    uint8_t *d = malloc(n ? n : 1);
    FZ_CHECK(d != NULL);
    if (n) memcpy(d, p, n);
    return d;
}

typedef struct fz_split {
    const uint8_t *sizes;    /* chunk sizes - 1, or NULL for 1-byte chunks */
    size_t         nsizes;
    const uint8_t *data;     /* what is left after the header              */
    size_t         len;
} fz_split;

/* Parses the header; returns 0, or -1 when the input is too short. */
static inline int fz_split_init(fz_split *s, const uint8_t *p, size_t n) {
    if (n < 1) return -1;
    s->nsizes = p[0] % 16;
    if (n < 1 + s->nsizes) return -1;
    s->sizes = s->nsizes ? p + 1 : NULL;
    s->data = p + 1 + s->nsizes;
    s->len = n - 1 - s->nsizes;
    return 0;
}

/* Size of chunk number i. */
static inline size_t fz_chunk(const fz_split *s, size_t i) {
    return s->nsizes ? (size_t)s->sizes[i % s->nsizes] + 1 : 1;
}

/* 64-bit FNV-1a, to compare payloads without keeping them. */
static inline uint64_t fz_hash(const uint8_t *p, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 1099511628211ull;
    return h;
}

/* Reference UTF-8 check written straight from RFC 3629's table (section 4),
 * independent of the DFA in ws.c. Returns the index of the first byte that
 * makes p[0..n) not a prefix of any valid UTF-8 string, or n; *boundary is
 * set to 1 when p[0..n) ends on a code point boundary. */
static inline size_t fz_utf8_scan(const uint8_t *p, size_t n, int *boundary) {
    size_t i = 0;
    *boundary = 1;
    while (i < n) {
        uint8_t c = p[i], lo = 0x80, hi = 0xBF;
        size_t k;
        if (c < 0x80) { i++; continue; }
        if (c >= 0xC2 && c <= 0xDF) k = 1;
        else if (c == 0xE0) { k = 2; lo = 0xA0; }          /* no overlongs    */
        else if (c >= 0xE1 && c <= 0xEC) k = 2;
        else if (c == 0xED) { k = 2; hi = 0x9F; }          /* no surrogates   */
        else if (c == 0xEE || c == 0xEF) k = 2;
        else if (c == 0xF0) { k = 3; lo = 0x90; }          /* no overlongs    */
        else if (c >= 0xF1 && c <= 0xF3) k = 3;
        else if (c == 0xF4) { k = 3; hi = 0x8F; }          /* <= U+10FFFF     */
        else return i;
        for (size_t j = 1; j <= k; j++) {
            uint8_t d;
            if (i + j >= n) { *boundary = 0; return n; }
            d = p[i + j];
            if (j == 1 ? (d < lo || d > hi) : (d < 0x80 || d > 0xBF)) return i + j;
        }
        i += k + 1;
    }
    return n;
}

static inline int fz_utf8_valid(const uint8_t *p, size_t n) {
    int boundary;
    return fz_utf8_scan(p, n, &boundary) == n && boundary;
}

#endif
