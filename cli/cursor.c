/* cursor.c — the SSE id encoder (see cursor.h for the format). */
#include "cursor.h"

#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/codec.h"

static int by_conv(const void *a, const void *b) {
    const pc_cursor *x = a, *y = b;
    if (x->conv != y->conv) return x->conv < y->conv ? -1 : 1;
    return (x->seq > y->seq) - (x->seq < y->seq);
}

char *pc_cursor_id(pc_cursor *cur, size_t n) {
    if (n > 1) qsort(cur, n, sizeof *cur, by_conv);
    size_t k = 0;                            /* distinct conversations, highest seq */
    for (size_t i = 0; i < n; i++) {
        if (k && cur[k - 1].conv == cur[i].conv) cur[k - 1] = cur[i];
        else cur[k++] = cur[i];
    }
    uint8_t *bin = pl_malloc(10 + k * 20 + 4);
    size_t len = pl_varint_put(bin, k);
    int64_t prev = 0;
    for (size_t i = 0; i < k; i++) {
        len += pl_varint_put(bin + len, (uint64_t)(cur[i].conv - prev));
        len += pl_varint_put(bin + len, (uint64_t)(cur[i].seq < 0 ? 0 : cur[i].seq));
        prev = cur[i].conv;
    }
    uint32_t crc = pl_crc32_ieee(bin, len);
    for (int i = 0; i < 4; i++) bin[len++] = (uint8_t)(crc >> (8 * i));

    static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    char *out = pl_malloc(3 + (len * 4 + 2) / 3 + 1), *o = out;
    memcpy(o, "c1.", 3);
    o += 3;
    for (size_t i = 0; i < len; i += 3) {
        uint32_t v = (uint32_t)bin[i] << 16;
        if (i + 1 < len) v |= (uint32_t)bin[i + 1] << 8;
        if (i + 2 < len) v |= bin[i + 2];
        *o++ = b64[(v >> 18) & 63];
        *o++ = b64[(v >> 12) & 63];
        if (i + 1 < len) *o++ = b64[(v >> 6) & 63];
        if (i + 2 < len) *o++ = b64[v & 63];
    }
    *o = '\0';
    free(bin);
    return out;
}
