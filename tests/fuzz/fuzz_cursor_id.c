/* fuzz_cursor_id.c — libFuzzer driver for the Server-Sent Events id codec
 * (src/proto/cursor_id.c): what a client sends as Last-Event-ID.
 *
 * Owns: the contract of pl_cursor_id_decode and pl_cursor_id_encode as
 * cursor_id.h states it. Input: [mode] then bytes.
 *   mode even: the bytes are a Last-Event-ID header value.
 *     1. decode returns 0 or -1; on -1 nothing is allocated and *why is a
 *        non-empty message; on 0 the cursors are strictly ascending
 *        conversations >= 1, conv and seq <= 2^53 - 1, at most
 *        PL_CURSOR_ID_MAX_CONVS of them.
 *     2. What decoded re-encodes to a token that decodes to the same
 *        cursors.
 *   mode odd: the bytes are cursors (16 bits of conversation delta, 32 of
 *     seq each, made valid); encode then decode gives them back exactly.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "fuzz.h"
#include "proto/cursor_id.h"

#define JSON_MAX 9007199254740991LL

static void same(const pl_cursor *a, size_t na, const char *id, size_t len) {
    pl_cursor *b;
    size_t nb;
    const char *why = NULL;
    FZ_CHECK(pl_cursor_id_decode(id, len, &b, &nb, &why) == 0);
    FZ_CHECK(nb == na);
    for (size_t i = 0; i < na; i++) FZ_CHECK(a[i].conv == b[i].conv && a[i].seq == b[i].seq);
    free(b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    int mode = data[0] & 1;
    const uint8_t *p = data + 1;
    size_t n = size - 1;
    pl_sbuf s;
    pl_sbuf_init(&s);
    if (mode == 0) {
        char *id = (char *)fz_dup(p, n);           /* exact size: ASan sees overreads */
        pl_cursor *c = (pl_cursor *)1;
        size_t nc = 99;
        const char *why = NULL;
        int r = pl_cursor_id_decode(id, n, &c, &nc, &why);
        FZ_CHECK(r == 0 || r == -1);
        if (r) {
            FZ_CHECK(c == NULL && nc == 0 && why && *why);
        } else {
            FZ_CHECK(nc <= PL_CURSOR_ID_MAX_CONVS && (nc == 0) == (c == NULL));
            for (size_t i = 0; i < nc; i++) {
                FZ_CHECK(c[i].conv >= 1 && c[i].conv <= JSON_MAX);
                FZ_CHECK(c[i].seq >= 0 && c[i].seq <= JSON_MAX);
                FZ_CHECK(i == 0 || c[i].conv > c[i - 1].conv);
            }
            pl_cursor_id_encode(&s, c, nc);
            same(c, nc, s.p, s.len);
            free(c);
        }
        free(id);
    } else {
        size_t nc = n / 6;
        if (nc > PL_CURSOR_ID_MAX_CONVS) nc = PL_CURSOR_ID_MAX_CONVS;
        pl_cursor *c = calloc(nc ? nc : 1, sizeof *c);
        FZ_CHECK(c != NULL);
        int64_t conv = 0;
        for (size_t i = 0; i < nc; i++) {
            const uint8_t *q = p + 6 * i;
            conv += 1 + ((int64_t)q[0] << 8 | q[1]);
            if (q[0] == 0xff) conv = JSON_MAX - (int64_t)(nc - i);   /* reach the top too */
            c[i].conv = conv;
            c[i].seq = (int64_t)((uint64_t)q[2] << 24 | (uint64_t)q[3] << 16 | (uint64_t)q[4] << 8 | q[5]);
            if (q[2] == 0xff) c[i].seq = JSON_MAX;
        }
        for (size_t i = 1; i < nc; i++)               /* keep them ascending */
            if (c[i].conv <= c[i - 1].conv) c[i].conv = c[i - 1].conv + 1;
        int ok = nc == 0 || c[nc - 1].conv <= JSON_MAX;
        if (ok) {
            pl_cursor_id_encode(&s, c, nc);
            if (s.len <= PL_CURSOR_ID_MAX_LEN) same(c, nc, s.p, s.len);   /* else refused: documented */
        }
        free(c);
    }
    pl_sbuf_release(&s);
    return 0;
}
