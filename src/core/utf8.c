/* utf8.c — UTF-8 validation, one-shot and incremental (utf8.h). Used by
 * the WebSocket reader (text frames, close reasons) and the protocol's send
 * fast path (proto.c); the white-space/control check of reaction emoji
 * (proto.c, store_util.c). */
#include "utf8.h"

#include <string.h>

/* Bjoern Hoehrmann's DFA (http://bjoern.hoehrmann.de/utf-8/decoder/dfa/):
 * the first 256 entries map a byte to a class, the rest map state + class to
 * the next state. States are multiples of 12; 0 accepts, 12 rejects for good.
 * It rejects overlongs, surrogates (ED A0..BF) and code points > U+10FFFF,
 * exactly as RFC 3629's table (checked exhaustively for all 1-4 byte inputs
 * when this was written). */
#define UTF8_ACCEPT 0
#define UTF8_REJECT 12

static const uint8_t utf8d[] = {
    0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,
    0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,
    0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,
    0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,
    1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,9,9,9,9,9,9,9,9,9,9,9,9,9,9,9,9,
    7,7,7,7,7,7,7,7,7,7,7,7,7,7,7,7,7,7,7,7,7,7,7,7,7,7,7,7,7,7,7,7,
    8,8,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,2,
    10,3,3,3,3,3,3,3,3,3,3,3,3,4,3,3, 11,6,6,6,5,8,8,8,8,8,8,8,8,8,8,8,

    0,12,24,36,60,96,84,12,12,12,48,72, 12,12,12,12,12,12,12,12,12,12,12,12,
    12, 0,12,12,12,12,12, 0,12, 0,12,12, 12,24,12,12,12,12,12,24,12,24,12,12,
    12,12,12,12,12,12,12,24,12,12,12,12, 12,24,12,12,12,12,12,12,12,24,12,12,
    12,12,12,12,12,12,12,36,12,36,12,12, 12,36,12,12,12,12,12,36,12,36,12,12,
    12,36,12,12,12,12,12,12,12,12,12,12,
};

void pl_utf8_init(pl_utf8 *v) { v->state = UTF8_ACCEPT; }

int pl_utf8_feed(pl_utf8 *v, const uint8_t *p, size_t n) {
    uint32_t s = v->state;
    size_t i = 0;
    if (s == UTF8_REJECT) return -1;
    while (i < n) {
        if (s == UTF8_ACCEPT) {
            /* Chat text is mostly ASCII: skip it a word at a time. */
            uint64_t w;
            while (n - i >= 8) {
                memcpy(&w, p + i, 8);
                if (w & 0x8080808080808080ull) break;
                i += 8;
            }
            if (i == n) break;
        }
        s = utf8d[256 + s + utf8d[p[i++]]];
        if (s == UTF8_REJECT) break;
    }
    v->state = s;
    return s == UTF8_REJECT ? -1 : 0;
}

int pl_utf8_done(const pl_utf8 *v) { return v->state == UTF8_ACCEPT; }

int pl_utf8_valid(const uint8_t *p, size_t n) {
    pl_utf8 v;
    pl_utf8_init(&v);
    return pl_utf8_feed(&v, p, n) == 0 && pl_utf8_done(&v);
}

int pl_utf8_space_or_control(uint32_t cp) {
    if (cp <= 0x20 || (cp >= 0x7f && cp <= 0xa0)) return 1;   /* C0, space, DEL, C1 (NEL), NBSP */
    if (cp >= 0x2000 && cp <= 0x200a) return 1;                /* EN QUAD .. HAIR SPACE */
    switch (cp) {
    case 0x1680: case 0x2028: case 0x2029: case 0x202f: case 0x205f: case 0x3000: return 1;
    default: return 0;
    }
}

int pl_utf8_control(uint32_t cp) { return cp <= 0x1f || (cp >= 0x7f && cp <= 0x9f); }

int pl_utf8_has(const uint8_t *p, size_t n, int (*pred)(uint32_t)) {
    size_t i = 0;
    while (i < n) {
        uint8_t c = p[i];
        size_t len = c < 0xc0 ? 1 : c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : 2;
        if (len > n - i) len = 1;                     /* cut short: the lead byte alone */
        uint32_t cp = len == 1 ? c : len == 2 ? c & 0x1fu : len == 3 ? c & 0x0fu : c & 0x07u;
        for (size_t k = 1; k < len; k++) cp = cp << 6 | (p[i + k] & 0x3fu);
        if (pred(cp)) return 1;
        i += len;
    }
    return 0;
}

int pl_utf8_has_space_or_control(const uint8_t *p, size_t n) {
    return pl_utf8_has(p, n, pl_utf8_space_or_control);
}

int pl_utf8_invisible(uint32_t cp) {
    if (cp != 0x20 && pl_utf8_space_or_control(cp)) return 1;
    if ((cp >= 0x200b && cp <= 0x200f) || (cp >= 0x202a && cp <= 0x202e) || (cp >= 0x2060 && cp <= 0x206f) ||
        (cp >= 0x180b && cp <= 0x180f) || (cp >= 0xfe00 && cp <= 0xfe0f) || (cp >= 0xfff0 && cp <= 0xfffb) ||
        (cp >= 0x1d173 && cp <= 0x1d17a) || (cp >= 0xe0000 && cp <= 0xe0fff))
        return 1;
    switch (cp) {
    case 0x00ad: case 0x034f: case 0x061c: case 0x115f: case 0x1160: case 0x17b4: case 0x17b5:
    case 0x3164: case 0xfeff: case 0xffa0:
        return 1;
    default:
        return 0;
    }
}

int pl_utf8_has_invisible(const uint8_t *p, size_t n) { return pl_utf8_has(p, n, pl_utf8_invisible); }

size_t pl_utf8_prefix(const char *s, size_t len, size_t chars) {
    size_t i = 0;
    for (size_t c = 0; i < len && c < chars; c++) {
        i++;
        while (i < len && ((unsigned char)s[i] & 0xC0) == 0x80) i++;
    }
    return i;
}
