/* test_cursor_id.c — the SSE id token (proto/cursor_id.c): round trips,
 * the exact bytes of a known token, and every way a Last-Event-ID header
 * can be wrong (each refused, nothing allocated). */
#include "test.h"

#include <sodium.h>
#include <stdlib.h>

#include "core/buf.h"
#include "proto/cursor_id.h"

static char *encode(const pl_cursor *c, size_t n) {
    pl_sbuf s;
    pl_sbuf_init(&s);
    pl_cursor_id_encode(&s, c, n);
    char *r = strdup(pl_sbuf_cstr(&s));
    pl_sbuf_release(&s);
    return r;
}

TEST(cursor_id_round_trip) {
    pl_cursor in[] = {{1, 0}, {2, 57}, {12, 40}, {130, 1}, {9007199254740991LL, 9007199254740991LL}};
    size_t n = sizeof in / sizeof in[0];
    char *id = encode(in, n);
    CHECK(strncmp(id, "c1.", 3) == 0);
    pl_cursor *out;
    size_t m;
    const char *why = NULL;
    CHECK_EQ(pl_cursor_id_decode(id, strlen(id), &out, &m, &why), 0);
    CHECK_EQ(m, n);
    for (size_t i = 0; i < n; i++) {
        CHECK_EQ(out[i].conv, in[i].conv);
        CHECK_EQ(out[i].seq, in[i].seq);
    }
    free(out);
    free(id);
}

TEST(cursor_id_empty_and_compact) {
    char *id = encode(NULL, 0);                  /* a user without conversations */
    pl_cursor *out = (pl_cursor *)1;
    size_t m = 9;
    const char *why;
    CHECK_EQ(pl_cursor_id_decode(id, strlen(id), &out, &m, &why), 0);
    CHECK_EQ(m, 0);
    CHECK(out == NULL);
    free(id);
    /* 100 conversations with ids near each other and seqs in the thousands:
     * about 4 characters each */
    pl_cursor many[100];
    for (int i = 0; i < 100; i++) many[i] = (pl_cursor){1000 + 3 * i, 5000 + i};
    id = encode(many, 100);
    CHECK(strlen(id) < 100 * 5 + 16);
    CHECK_EQ(pl_cursor_id_decode(id, strlen(id), &out, &m, &why), 0);
    CHECK_EQ(m, 100);
    CHECK_EQ(out[99].conv, 1297);
    CHECK_EQ(out[99].seq, 5099);
    free(out);
    free(id);
}

/* The format is a contract with clients that stored an id: pin its bytes. */
TEST(cursor_id_known_bytes) {
    pl_cursor in[] = {{12, 40}, {13, 0}};
    char *id = encode(in, 2);
    /* varints: 02 | 0c 28 | 01 00 | crc32 le */
    uint8_t bin[16];
    size_t blen;
    CHECK_EQ(sodium_base642bin(bin, sizeof bin, id + 3, strlen(id) - 3, NULL, &blen, NULL,
                               sodium_base64_VARIANT_URLSAFE_NO_PADDING), 0);
    CHECK_EQ(blen, 9);
    CHECK_EQ(bin[0], 2);
    CHECK_EQ(bin[1], 12);
    CHECK_EQ(bin[2], 40);
    CHECK_EQ(bin[3], 1);
    CHECK_EQ(bin[4], 0);
    CHECK_STR(id, "c1.AgwoAQDcPXHZ");              /* what web/conn.js encodeCursorId makes too */
    free(id);
    pl_cursor doc[] = {{12, 57}, {13, 9}};          /* docs/protocol.md's example */
    id = encode(doc, 2);
    CHECK_STR(id, "c1.Agw5AQk_TEm9");
    free(id);
}

TEST(cursor_id_sort) {
    pl_cursor v[] = {{30, 1}, {4, 2}, {17, 3}};
    pl_cursor_sort(v, 3);
    CHECK_EQ(v[0].conv, 4);
    CHECK_EQ(v[1].conv, 17);
    CHECK_EQ(v[2].conv, 30);
    CHECK_EQ(v[2].seq, 1);
}

static int refused(const char *id, size_t len) {
    pl_cursor *out = (pl_cursor *)1;
    size_t m = 7;
    const char *why = NULL;
    int r = pl_cursor_id_decode(id, len, &out, &m, &why);
    return r == -1 && out == NULL && m == 0 && why && *why;
}

/* Builds "c1." + base64url(bin) with a correct check appended. */
static char *forge(const uint8_t *bin, size_t n) {
    uint8_t buf[64];
    memcpy(buf, bin, n);
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < n; i++) {
        c ^= buf[i];
        for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1u)));
    }
    c = ~c;
    for (int k = 0; k < 4; k++) buf[n + k] = (uint8_t)(c >> (8 * k));
    char *s = malloc(3 + 100);
    memcpy(s, "c1.", 3);
    sodium_bin2base64(s + 3, 100, buf, n + 4, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    return s;
}

TEST(cursor_id_bad_input) {
    CHECK(refused("", 0));
    CHECK(refused("42", 2));                      /* not ours */
    CHECK(refused("c2.AAAA", 7));                 /* another version */
    CHECK(refused("c1.", 3));                     /* nothing */
    CHECK(refused("c1.AA==", 7));                 /* padding, not base64url */
    CHECK(refused("c1.A+/B", 7));                 /* base64, not base64url */
    CHECK(refused("c1.AB CD", 8));
    pl_cursor in[] = {{12, 40}, {13, 0}};
    char *id = encode(in, 2);
    size_t len = strlen(id);
    CHECK(refused(id, len - 1));                  /* truncated */
    id[5] = id[5] == 'A' ? 'B' : 'A';             /* one character changed */
    CHECK(refused(id, len));
    free(id);
    char *longid = malloc(PL_CURSOR_ID_MAX_LEN + 2);
    memset(longid, 'A', PL_CURSOR_ID_MAX_LEN + 1);
    memcpy(longid, "c1.", 3);
    CHECK(refused(longid, PL_CURSOR_ID_MAX_LEN + 1));
    free(longid);
    /* well-checked but wrong inside */
    static const uint8_t dup[] = {2, 12, 40, 0, 1};               /* delta 0: repeated conversation */
    static const uint8_t zero[] = {1, 0, 5};                      /* conversation 0 */
    static const uint8_t shortv[] = {2, 12, 40};                  /* says 2, holds 1 */
    static const uint8_t trail[] = {1, 12, 40, 7};                /* trailing byte */
    static const uint8_t huge[] = {1, 1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f};   /* seq 2^56-1 */
    static const uint8_t toomany[] = {0x81, 0x40};                /* 8193 cursors */
    const uint8_t *bad[] = {dup, zero, shortv, trail, huge, toomany};
    size_t lens[] = {sizeof dup, sizeof zero, sizeof shortv, sizeof trail, sizeof huge, sizeof toomany};
    for (size_t i = 0; i < 6; i++) {
        char *f = forge(bad[i], lens[i]);
        if (!refused(f, strlen(f))) fprintf(stderr, "  forged case %zu accepted\n", i);
        CHECK(refused(f, strlen(f)));
        free(f);
    }
    /* each says which problem it is (audit H2) */
    const char *whys[] = {"Last-Event-ID repeats a conversation", "Last-Event-ID has a cursor out of range",
                          "Last-Event-ID is truncated or has a malformed number", "Last-Event-ID has trailing bytes",
                          "Last-Event-ID has a cursor out of range", "Last-Event-ID holds too many cursors"};
    for (size_t i = 0; i < 6; i++) {
        char *f = forge(bad[i], lens[i]);
        pl_cursor *o = NULL;
        size_t k = 0;
        const char *w = NULL;
        CHECK_EQ(pl_cursor_id_decode(f, strlen(f), &o, &k, &w), -1);
        CHECK_STR(w, whys[i]);
        free(o);
        free(f);
    }
    static const uint8_t good[] = {1, 12, 40};                    /* the forger itself is right */
    char *f = forge(good, sizeof good);
    pl_cursor *out;
    size_t m;
    const char *why;
    CHECK_EQ(pl_cursor_id_decode(f, strlen(f), &out, &m, &why), 0);
    CHECK_EQ(m, 1);
    CHECK_EQ(out[0].seq, 40);
    free(out);
    free(f);
}
