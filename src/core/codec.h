/* codec.h — small byte codecs shared by the server and its tools: LEB128
 * varints and CRC-32 (IEEE 802.3, the zlib/PNG one). Header only.
 * Owns: nothing but the arithmetic. Used by proto/cursor_id.c (the SSE id)
 * and cli/cursor.c (the same id, built by the command line). */
#ifndef PL_CODEC_H
#define PL_CODEC_H

#include <stddef.h>
#include <stdint.h>

/* CRC-32 of p[0..n), bitwise (ids are short: no table). */
static inline uint32_t pl_crc32_ieee(const uint8_t *p, size_t n) {
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1u)));
    }
    return ~c;
}

/* Writes v as a LEB128 varint (7 bits per byte, low group first) at p, which
 * has room for 10 bytes; returns the bytes written. */
static inline size_t pl_varint_put(uint8_t *p, uint64_t v) {
    size_t n = 0;
    while (v >= 0x80) {
        p[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    p[n++] = (uint8_t)v;
    return n;
}

#endif
