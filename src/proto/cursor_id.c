/* cursor_id.c — the SSE id token (see cursor_id.h for the format). */
#include "cursor_id.h"

#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "../core/alloc.h"
#include "../core/codec.h"

#define PREFIX     "c1."
#define PREFIX_LEN 3
#define JSON_MAX   9007199254740991LL   /* 2^53 - 1 */

static int cmp_conv(const void *a, const void *b) {
    int64_t x = ((const pl_cursor *)a)->conv, y = ((const pl_cursor *)b)->conv;
    return x < y ? -1 : x > y;
}

void pl_cursor_sort(pl_cursor *cur, size_t n) {
    if (n > 1) qsort(cur, n, sizeof *cur, cmp_conv);
}

/* Reads a varint of at most 8 bytes (56 bits, enough for 2^53 - 1); -1 if
 * truncated or too long. */
static int get_varint(const uint8_t *p, size_t len, size_t *at, uint64_t *v) {
    uint64_t r = 0;
    for (int shift = 0; shift < 56; shift += 7) {
        if (*at >= len) return -1;
        uint8_t b = p[(*at)++];
        r |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *v = r;
            return 0;
        }
    }
    return -1;
}

void pl_cursor_id_encode(pl_sbuf *s, const pl_cursor *cur, size_t n) {
    size_t cap = 10 + n * 16 + 4;
    uint8_t stackbuf[1024], *bin = cap <= sizeof stackbuf ? stackbuf : pl_malloc(cap);
    size_t len = pl_varint_put(bin, n);
    int64_t prev = 0;
    for (size_t i = 0; i < n; i++) {
        len += pl_varint_put(bin + len, (uint64_t)(cur[i].conv - prev));
        len += pl_varint_put(bin + len, (uint64_t)cur[i].seq);
        prev = cur[i].conv;
    }
    uint32_t crc = pl_crc32_ieee(bin, len);
    for (int k = 0; k < 4; k++) bin[len++] = (uint8_t)(crc >> (8 * k));
    size_t b64 = sodium_base64_ENCODED_LEN(len, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    pl_sbuf_reserve(s, PREFIX_LEN + b64);
    pl_sbuf_add(s, PREFIX, PREFIX_LEN);
    sodium_bin2base64(s->p + s->len, b64, bin, len, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    s->len += b64 - 1;                       /* without the NUL it wrote */
    if (bin != stackbuf) free(bin);
}

int pl_cursor_id_decode(const char *id, size_t len, pl_cursor **out, size_t *n, const char **why) {
    *out = NULL;
    *n = 0;
    if (len > PL_CURSOR_ID_MAX_LEN) { *why = "Last-Event-ID too long"; return -1; }
    if (len < PREFIX_LEN || memcmp(id, PREFIX, PREFIX_LEN) != 0) {
        *why = "Last-Event-ID is not an id this server issued";
        return -1;
    }
    id += PREFIX_LEN;
    len -= PREFIX_LEN;
    for (size_t i = 0; i < len; i++) {           /* sodium would skip nothing, but be explicit */
        char ch = id[i];
        int ok = (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
                 ch == '-' || ch == '_';
        if (!ok) { *why = "Last-Event-ID is not base64url"; return -1; }
    }
    size_t cap = len * 3 / 4 + 3, blen = 0;
    uint8_t *bin = pl_malloc(cap ? cap : 1);
    int r = -1;
    pl_cursor *cur = NULL;
    if (sodium_base642bin(bin, cap, id, len, NULL, &blen, NULL, sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0) {
        *why = "Last-Event-ID is not base64url";
        goto out;
    }
    if (blen < 5) { *why = "Last-Event-ID is truncated"; goto out; }
    uint32_t crc = (uint32_t)bin[blen - 4] | (uint32_t)bin[blen - 3] << 8 | (uint32_t)bin[blen - 2] << 16 |
                   (uint32_t)bin[blen - 1] << 24;
    blen -= 4;
    if (pl_crc32_ieee(bin, blen) != crc) { *why = "Last-Event-ID is damaged (check failed)"; goto out; }
    size_t at = 0;
    uint64_t count;
    if (get_varint(bin, blen, &at, &count) || count > PL_CURSOR_ID_MAX_CONVS) {
        *why = "Last-Event-ID holds too many cursors";
        goto out;
    }
    cur = count ? pl_calloc((size_t)count, sizeof *cur) : NULL;
    int64_t prev = 0;
    for (size_t i = 0; i < count; i++) {
        uint64_t d, seq;
        if (get_varint(bin, blen, &at, &d) || get_varint(bin, blen, &at, &seq)) {
            *why = "Last-Event-ID is truncated or has a malformed number";
            goto out;
        }
        if (d == 0 && i > 0) {                 /* ids ascend: a zero step repeats one */
            *why = "Last-Event-ID repeats a conversation";
            goto out;
        }
        if (d == 0 || d > (uint64_t)(JSON_MAX - prev) || seq > (uint64_t)JSON_MAX) {
            *why = "Last-Event-ID has a cursor out of range";
            goto out;
        }
        prev += (int64_t)d;
        cur[i].conv = prev;
        cur[i].seq = (int64_t)seq;
    }
    if (at != blen) { *why = "Last-Event-ID has trailing bytes"; goto out; }
    *out = cur;
    *n = (size_t)count;
    cur = NULL;
    r = 0;
out:
    free(cur);
    free(bin);
    return r;
}
