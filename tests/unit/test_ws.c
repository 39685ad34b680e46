/* test_ws.c — RFC 6455 framing (src/ws/ws.c): the accept key, UTF-8
 * validation, every protocol check of the frame reader, zero-copy and
 * buffering behaviour, and header/mask/close-payload encoding.
 *
 * Frames are built here byte by byte (not with pl_ws_header), so the reader
 * is checked against an independent encoder; the round-trip test then checks
 * pl_ws_header against the reader. Every feed goes through a heap copy of
 * exactly the fed size, so ASan catches any read past n.
 */
#include "test.h"

#include <stdlib.h>

#include "ws/ws.h"

/* ---- helpers --------------------------------------------------------------- */

static const uint8_t test_mask[4] = { 0x37, 0xfa, 0x21, 0x3d };

/* Appends one frame to out: b0 is the first byte (FIN|RSV|opcode) as given;
 * the length uses its minimal encoding; masked frames use test_mask.
 * Returns the frame's size. */
static size_t mk(uint8_t *out, uint8_t b0, const void *payload, size_t len, int masked) {
    size_t n = 0;
    uint8_t mbit = masked ? 0x80 : 0;
    out[n++] = b0;
    if (len < 126) {
        out[n++] = (uint8_t)(mbit | len);
    } else if (len <= 0xFFFF) {
        out[n++] = mbit | 126;
        out[n++] = (uint8_t)(len >> 8);
        out[n++] = (uint8_t)len;
    } else {
        out[n++] = mbit | 127;
        for (int k = 7; k >= 0; k--) out[n++] = (uint8_t)((uint64_t)len >> (8 * k));
    }
    if (masked) {
        memcpy(out + n, test_mask, 4);
        n += 4;
    }
    for (size_t i = 0; i < len; i++)
        out[n + i] = ((const uint8_t *)payload)[i] ^ (masked ? test_mask[i & 3] : 0);
    return n + len;
}

#define FIN 0x80

/* What the callback saw. */
typedef struct ev {
    int      kind, opcode, close_code;
    size_t   len;
    uint32_t hash;           /* FNV-1a of the whole payload */
    uint8_t  head[64];       /* its first bytes             */
    int      in_input;       /* data pointed into the fed buffer */
} ev;

typedef struct rec {
    ev        evs[64];
    int       n;
    int       stop_at;       /* return stop_rc from event number stop_at (1-based) */
    int       stop_rc;
    const uint8_t *in_lo, *in_hi;   /* the buffer of the current feed */
} rec;

static uint32_t fnv(const uint8_t *p, size_t n) {
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 16777619u;
    return h;
}

static int on_msg(void *ud, const pl_ws_msg *m) {
    rec *r = ud;
    ev *e;
    if (r->n >= 64) return -99;
    e = &r->evs[r->n++];
    memset(e, 0, sizeof *e);
    e->kind = m->kind;
    e->opcode = m->opcode;
    e->close_code = m->kind == PL_WS_CLOSE ? m->close_code : 0;
    e->len = m->len;
    if (!m->data) return -98;
    e->hash = fnv(m->data, m->len);
    memcpy(e->head, m->data, m->len < 64 ? m->len : 64);
    e->in_input = m->data >= r->in_lo && m->data < r->in_hi;
    if (r->stop_at && r->n == r->stop_at) return r->stop_rc;
    return 0;
}

/* Feeds s[0..n) in chunks of at most chunk bytes, each through an exactly
 * sized heap copy. Returns the first non-zero feed result. */
static int feed_chunks(pl_ws_reader *r, rec *rc, const uint8_t *s, size_t n, size_t chunk) {
    size_t off = 0;
    while (off < n) {
        size_t k = n - off < chunk ? n - off : chunk;
        uint8_t *c = malloc(k);
        int ret;
        memcpy(c, s + off, k);
        rc->in_lo = c;
        rc->in_hi = c + k;
        ret = pl_ws_reader_feed(r, c, k, on_msg, rc);
        free(c);
        if (ret) return ret;
        off += k;
    }
    return 0;
}

static int feed_all(pl_ws_reader *r, rec *rc, const uint8_t *s, size_t n) {
    return feed_chunks(r, rc, s, n, n ? n : 1);
}

/* A fresh server-side reader (max 1 MiB) fed s whole; returns feed's result. */
static int server_feed(rec *rc, const uint8_t *s, size_t n) {
    pl_ws_reader r;
    int ret;
    pl_ws_reader_init(&r, 0, 1 << 20);
    ret = feed_all(&r, rc, s, n);
    pl_ws_reader_release(&r);
    return ret;
}

/* ---- accept key ------------------------------------------------------------ */

TEST(ws_accept_key_rfc_example) {
    char out[29];
    const char *key = "dGhlIHNhbXBsZSBub25jZQ==";
    CHECK_EQ(pl_ws_accept_key(key, strlen(key), out), 0);
    CHECK_STR(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
}

/* FIPS 180 vectors and every padding case: a one-block tail (55), a tail
 * that needs a second block (56, 119), whole blocks (64), several blocks. */
TEST(ws_sha1_vectors) {
    static const struct { size_t n; const char *hex; } v[] = {
        {0, "da39a3ee5e6b4b0d3255bfef95601890afd80709"},
        {55, "c1c8bbdc22796e28c0e15163d20899b65621d65a"},
        {56, "c2db330f6083854c99d4b5bfb6e8f29f201be699"},
        {64, "0098ba824b5c16427bd7a1122a5a442a25ec644d"},
        {119, "ee971065aaa017e0632a8ca6c77bb3bf8b1dfc56"},
        {200, "e61cfffe0d9195a525fc6cf06ca2d77119c24a40"},
    };
    uint8_t a[200], out[20];
    char hex[41];
    memset(a, 'a', sizeof a);
    pl_ws_sha1((const uint8_t *)"abc", 3, out);
    for (int i = 0; i < 20; i++) snprintf(hex + 2 * i, 3, "%02x", out[i]);
    CHECK_STR(hex, "a9993e364706816aba3e25717850c26c9cd0d89d");
    for (size_t k = 0; k < sizeof v / sizeof *v; k++) {
        pl_ws_sha1(a, v[k].n, out);
        for (int i = 0; i < 20; i++) snprintf(hex + 2 * i, 3, "%02x", out[i]);
        CHECK_STR(hex, v[k].hex);
    }
}

TEST(ws_accept_key_rejects_bad_keys) {
    char out[29];
    CHECK_EQ(pl_ws_accept_key("dGhlIHNhbXBsZSBub25jZQ=", 23, out), -1);
    CHECK_EQ(pl_ws_accept_key("dGhlIHNhbXBsZSBub25jZQ==x", 25, out), -1);
    CHECK_EQ(pl_ws_accept_key("dGhlIHNhbXBsZSBub25jZ!==", 24, out), -1);
    CHECK_EQ(pl_ws_accept_key("AAAAAAAAAAAAAAAAAAAAAAAA", 24, out), -1);   /* 18 bytes */
    CHECK_EQ(pl_ws_accept_key("AAAAAAAAAAAAAAAAAAAAAA==", 24, out), 0);
    /* Only key_len bytes are read: a longer string with the right prefix. */
    CHECK_EQ(pl_ws_accept_key("dGhlIHNhbXBsZSBub25jZQ==garbage", 24, out), 0);
    CHECK_STR(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
}

/* ---- UTF-8 ----------------------------------------------------------------- */

static int u8(const char *s, size_t n) { return pl_utf8_valid((const uint8_t *)s, n); }

TEST(ws_utf8_valid_and_invalid) {
    CHECK(u8("", 0));
    CHECK(u8("hello", 5));
    CHECK(u8("\xC3\xA9", 2));                   /* é  U+00E9  */
    CHECK(u8("\xE2\x82\xAC", 3));               /* €  U+20AC  */
    CHECK(u8("\xF0\x9F\x98\x80", 4));           /* 😀 U+1F600 */
    CHECK(u8("\xEF\xBF\xBF", 3));               /* U+FFFF     */
    CHECK(u8("\xF4\x8F\xBF\xBF", 4));           /* U+10FFFF   */
    CHECK(u8("\xED\x9F\xBF", 3));               /* U+D7FF     */
    CHECK(u8("\xEE\x80\x80", 3));               /* U+E000     */
    CHECK(u8("a\0b", 3));                       /* NUL is valid UTF-8 */
    CHECK(!u8("\xC0\x80", 2));                  /* overlong NUL */
    CHECK(!u8("\xC1\xBF", 2));                  /* overlong     */
    CHECK(!u8("\xE0\x80\x80", 3));              /* overlong     */
    CHECK(!u8("\xE0\x9F\xBF", 3));              /* overlong     */
    CHECK(!u8("\xF0\x80\x80\x80", 4));          /* overlong     */
    CHECK(!u8("\xF0\x8F\xBF\xBF", 4));          /* overlong     */
    CHECK(!u8("\xED\xA0\x80", 3));              /* U+D800 surrogate */
    CHECK(!u8("\xED\xBF\xBF", 3));              /* U+DFFF surrogate */
    CHECK(!u8("\xF4\x90\x80\x80", 4));          /* U+110000    */
    CHECK(!u8("\xF5\x80\x80\x80", 4));
    CHECK(!u8("\xFF", 1));
    CHECK(!u8("\x80", 1));                      /* lone continuation */
    CHECK(!u8("\xC3", 1));                      /* truncated    */
    CHECK(!u8("\xE2\x82", 2));
    CHECK(!u8("\xC3\x28", 2));
    CHECK(!u8("abcdefghijklmnop\xC3", 17));     /* after the ASCII fast path */
    CHECK(!u8("abcdefgh\xFF" "abcdefgh", 17));
}

TEST(ws_utf8_incremental) {
    pl_utf8 v;
    const uint8_t emoji[] = { 0xF0, 0x9F, 0x98, 0x80 };
    const uint8_t bad[] = { 'o', 'k', 0xED, 0xA0, 'x' };
    pl_utf8_init(&v);
    CHECK(pl_utf8_done(&v));
    for (int i = 0; i < 4; i++) {
        CHECK_EQ(pl_utf8_feed(&v, emoji + i, 1), 0);
        CHECK_EQ(pl_utf8_done(&v), i == 3);
    }
    /* The failure is reported at the first bad byte (0xA0 after 0xED). */
    pl_utf8_init(&v);
    CHECK_EQ(pl_utf8_feed(&v, bad, 3), 0);
    CHECK_EQ(pl_utf8_feed(&v, bad + 3, 1), -1);
    CHECK_EQ(pl_utf8_feed(&v, (const uint8_t *)"a", 1), -1);   /* stays failed */
    CHECK(!pl_utf8_done(&v));
}

/* Every code point, encoded by hand: valid except the surrogates. */
TEST(ws_utf8_every_code_point) {
    for (uint32_t c = 0; c <= 0x10FFFF; c++) {
        uint8_t b[4];
        size_t n;
        if (c < 0x80) { b[0] = (uint8_t)c; n = 1; }
        else if (c < 0x800) { b[0] = 0xC0 | c >> 6; b[1] = 0x80 | (c & 63); n = 2; }
        else if (c < 0x10000) {
            b[0] = 0xE0 | c >> 12; b[1] = 0x80 | ((c >> 6) & 63); b[2] = 0x80 | (c & 63); n = 3;
        } else {
            b[0] = 0xF0 | c >> 18; b[1] = 0x80 | ((c >> 12) & 63);
            b[2] = 0x80 | ((c >> 6) & 63); b[3] = 0x80 | (c & 63); n = 4;
        }
        CHECK_EQ(pl_utf8_valid(b, n), !(c >= 0xD800 && c <= 0xDFFF));
    }
}

/* ---- the reader: basics ------------------------------------------------------ */

TEST(ws_reader_fits_64_bytes) {
    CHECK(sizeof(pl_ws_reader) <= 64);
}

/* RFC 6455 5.7: a masked "Hello". */
static const uint8_t rfc_hello[] = { 0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d,
                                     0x7f, 0x9f, 0x4d, 0x51, 0x58 };

TEST(ws_masked_text_whole_is_zero_copy) {
    pl_ws_reader r;
    rec rc = {0};
    uint8_t in[sizeof rfc_hello];
    memcpy(in, rfc_hello, sizeof in);
    pl_ws_reader_init(&r, 0, 1024);
    rc.in_lo = in;
    rc.in_hi = in + sizeof in;
    CHECK_EQ(pl_ws_reader_feed(&r, in, sizeof in, on_msg, &rc), 0);
    CHECK_EQ(rc.n, 1);
    CHECK_EQ(rc.evs[0].kind, PL_WS_MESSAGE);
    CHECK_EQ(rc.evs[0].opcode, PL_WS_OP_TEXT);
    CHECK_EQ(rc.evs[0].len, 5);
    CHECK(memcmp(rc.evs[0].head, "Hello", 5) == 0);
    CHECK(rc.evs[0].in_input);                    /* pointed into our buffer */
    CHECK(memcmp(in + 6, "Hello", 5) == 0);       /* unmasked in place       */
    CHECK(r.buf == NULL);
    CHECK(!pl_ws_reader_busy(&r));
    pl_ws_reader_release(&r);
}

TEST(ws_masked_text_bytewise_same_result) {
    pl_ws_reader r;
    rec rc = {0};
    pl_ws_reader_init(&r, 0, 1024);
    for (size_t i = 0; i < sizeof rfc_hello; i++) {
        CHECK_EQ(feed_chunks(&r, &rc, rfc_hello + i, 1, 1), 0);
        CHECK_EQ(rc.n, i == sizeof rfc_hello - 1);
        if (i < sizeof rfc_hello - 1) CHECK(pl_ws_reader_busy(&r));
    }
    CHECK_EQ(rc.evs[0].kind, PL_WS_MESSAGE);
    CHECK_EQ(rc.evs[0].opcode, PL_WS_OP_TEXT);
    CHECK_EQ(rc.evs[0].len, 5);
    CHECK(memcmp(rc.evs[0].head, "Hello", 5) == 0);
    CHECK(r.buf == NULL);                          /* freed after delivery */
    CHECK(!pl_ws_reader_busy(&r));
    pl_ws_reader_release(&r);
}

/* A binary message of each length encoding, fed whole and in several chunk
 * sizes: every way gives the same message. */
TEST(ws_lengths_7_16_64_bit) {
    static const size_t lens[] = { 0, 1, 125, 126, 127, 1000, 65535, 65536, 70000 };
    static const size_t chunks[] = { 1, 2, 3, 7, 13, 4096 };
    size_t cap = 70000 + 14;
    uint8_t *payload = malloc(70000), *f = malloc(cap);
    for (size_t i = 0; i < 70000; i++) payload[i] = (uint8_t)(i * 7 + 3);
    for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++) {
        size_t len = lens[li], flen = mk(f, FIN | PL_WS_OP_BINARY, payload, len, 1);
        size_t want_hdr = 6 + (len < 126 ? 0 : len <= 0xFFFF ? 2 : 8);
        uint32_t h = fnv(payload, len);
        CHECK_EQ(flen, want_hdr + len);
        for (size_t ci = 0; ci <= sizeof chunks / sizeof chunks[0]; ci++) {
            pl_ws_reader r;
            rec rc = {0};
            size_t chunk = ci < sizeof chunks / sizeof chunks[0] ? chunks[ci] : flen;
            if (len > 1000 && chunk < 7) continue;    /* keep it quick */
            pl_ws_reader_init(&r, 0, 1 << 20);
            CHECK_EQ(feed_chunks(&r, &rc, f, flen, chunk), 0);
            CHECK_EQ(rc.n, 1);
            CHECK_EQ(rc.evs[0].kind, PL_WS_MESSAGE);
            CHECK_EQ(rc.evs[0].opcode, PL_WS_OP_BINARY);
            CHECK_EQ(rc.evs[0].len, len);
            CHECK_EQ(rc.evs[0].hash, h);
            CHECK(r.buf == NULL);
            CHECK(!pl_ws_reader_busy(&r));
            pl_ws_reader_release(&r);
        }
    }
    free(payload);
    free(f);
}

TEST(ws_empty_frames) {
    uint8_t s[64];
    size_t n = 0;
    rec rc = {0};
    n += mk(s + n, FIN | PL_WS_OP_TEXT, "", 0, 1);
    n += mk(s + n, FIN | PL_WS_OP_PING, "", 0, 1);
    n += mk(s + n, PL_WS_OP_TEXT, "", 0, 1);
    n += mk(s + n, PL_WS_OP_CONT, "", 0, 1);
    n += mk(s + n, FIN | PL_WS_OP_CONT, "", 0, 1);
    n += mk(s + n, FIN | PL_WS_OP_BINARY, "", 0, 1);
    CHECK_EQ(server_feed(&rc, s, n), 0);
    CHECK_EQ(rc.n, 4);
    CHECK_EQ(rc.evs[0].kind, PL_WS_MESSAGE);
    CHECK_EQ(rc.evs[0].len, 0);
    CHECK_EQ(rc.evs[1].kind, PL_WS_PING);
    CHECK_EQ(rc.evs[2].kind, PL_WS_MESSAGE);
    CHECK_EQ(rc.evs[2].opcode, PL_WS_OP_TEXT);
    CHECK_EQ(rc.evs[2].len, 0);
    CHECK_EQ(rc.evs[3].opcode, PL_WS_OP_BINARY);
}

/* ---- fragmentation and control frames in between ----------------------------- */

TEST(ws_fragmented_text_with_ping_in_the_middle) {
    uint8_t s[64];
    size_t n = 0, a, b;
    pl_ws_reader r;
    rec rc = {0};
    a = n += mk(s + n, PL_WS_OP_TEXT, "Hel", 3, 1);
    b = n += mk(s + n, FIN | PL_WS_OP_PING, "ping!", 5, 1);
    n += mk(s + n, FIN | PL_WS_OP_CONT, "lo", 2, 1);
    pl_ws_reader_init(&r, 0, 1024);
    CHECK_EQ(feed_chunks(&r, &rc, s, a, a), 0);
    CHECK_EQ(rc.n, 0);
    CHECK(pl_ws_reader_busy(&r));
    CHECK_EQ(feed_chunks(&r, &rc, s + a, b - a, b - a), 0);
    CHECK_EQ(rc.n, 1);                                  /* the ping, at once */
    CHECK_EQ(rc.evs[0].kind, PL_WS_PING);
    CHECK_EQ(rc.evs[0].len, 5);
    CHECK(memcmp(rc.evs[0].head, "ping!", 5) == 0);
    CHECK(pl_ws_reader_busy(&r));
    CHECK_EQ(feed_chunks(&r, &rc, s + b, n - b, n - b), 0);
    CHECK_EQ(rc.n, 2);
    CHECK_EQ(rc.evs[1].kind, PL_WS_MESSAGE);
    CHECK_EQ(rc.evs[1].opcode, PL_WS_OP_TEXT);
    CHECK_EQ(rc.evs[1].len, 5);
    CHECK(memcmp(rc.evs[1].head, "Hello", 5) == 0);
    CHECK(r.buf == NULL);
    CHECK(!pl_ws_reader_busy(&r));
    pl_ws_reader_release(&r);
}

/* A long stream mixing every kind of frame, with control frames between
 * fragments, gives the same events whatever the chunking. */
TEST(ws_any_chunking_gives_same_events) {
    static uint8_t s[4096];
    uint8_t big[300];
    size_t n = 0;
    rec whole = {0};
    for (size_t i = 0; i < sizeof big; i++) big[i] = (uint8_t)i;
    n += mk(s + n, FIN | PL_WS_OP_TEXT, "caf\xC3\xA9", 5, 1);
    n += mk(s + n, PL_WS_OP_BINARY, big, 200, 1);
    n += mk(s + n, FIN | PL_WS_OP_PONG, "pong", 4, 1);
    n += mk(s + n, PL_WS_OP_CONT, big + 200, 50, 1);
    n += mk(s + n, FIN | PL_WS_OP_PING, big, 125, 1);
    n += mk(s + n, FIN | PL_WS_OP_CONT, big + 250, 50, 1);
    n += mk(s + n, PL_WS_OP_TEXT, "\xF0\x9F", 2, 1);
    n += mk(s + n, FIN | PL_WS_OP_PING, "", 0, 1);
    n += mk(s + n, PL_WS_OP_CONT, "\x98", 1, 1);
    n += mk(s + n, FIN | PL_WS_OP_CONT, "\x80!", 2, 1);
    n += mk(s + n, FIN | PL_WS_OP_BINARY, big, 130, 1);
    n += mk(s + n, FIN | PL_WS_OP_CLOSE, "\x03\xe8" "bye", 5, 1);
    CHECK_EQ(server_feed(&whole, s, n), 0);
    CHECK_EQ(whole.n, 8);
    CHECK_EQ(whole.evs[1].kind, PL_WS_PONG);
    CHECK_EQ(whole.evs[2].kind, PL_WS_PING);
    CHECK_EQ(whole.evs[2].len, 125);
    CHECK_EQ(whole.evs[3].kind, PL_WS_MESSAGE);
    CHECK_EQ(whole.evs[3].opcode, PL_WS_OP_BINARY);
    CHECK_EQ(whole.evs[3].len, 300);
    CHECK_EQ(whole.evs[3].hash, fnv(big, 300));
    CHECK_EQ(whole.evs[4].kind, PL_WS_PING);
    CHECK_EQ(whole.evs[5].opcode, PL_WS_OP_TEXT);
    CHECK_EQ(whole.evs[5].len, 5);
    CHECK(memcmp(whole.evs[5].head, "\xF0\x9F\x98\x80!", 5) == 0);
    CHECK_EQ(whole.evs[7].kind, PL_WS_CLOSE);
    CHECK_EQ(whole.evs[7].close_code, 1000);
    CHECK_EQ(whole.evs[7].len, 3);
    CHECK(memcmp(whole.evs[7].head, "bye", 3) == 0);
    for (size_t chunk = 1; chunk < n; chunk++) {
        pl_ws_reader r;
        rec rc = {0};
        pl_ws_reader_init(&r, 0, 1024);
        CHECK_EQ(feed_chunks(&r, &rc, s, n, chunk), 0);
        CHECK_EQ(rc.n, whole.n);
        for (int e = 0; e < rc.n; e++) {
            CHECK_EQ(rc.evs[e].kind, whole.evs[e].kind);
            CHECK_EQ(rc.evs[e].opcode, whole.evs[e].opcode);
            CHECK_EQ(rc.evs[e].len, whole.evs[e].len);
            CHECK_EQ(rc.evs[e].hash, whole.evs[e].hash);
            CHECK_EQ(rc.evs[e].close_code, whole.evs[e].close_code);
        }
        CHECK(!pl_ws_reader_busy(&r));
        CHECK(r.buf == NULL);
        pl_ws_reader_release(&r);
    }
}

/* A control frame split across feeds is buffered, then the buffer is freed
 * (no message in progress), or kept (one is). */
TEST(ws_split_control_frame_buffer_lifetime) {
    uint8_t s[64];
    size_t n, m;
    pl_ws_reader r;
    rec rc = {0};
    n = mk(s, FIN | PL_WS_OP_PING, "abcdef", 6, 1);
    pl_ws_reader_init(&r, 0, 1024);
    CHECK_EQ(feed_chunks(&r, &rc, s, 9, 9), 0);
    CHECK(r.buf != NULL);
    CHECK_EQ(feed_chunks(&r, &rc, s + 9, n - 9, n - 9), 0);
    CHECK_EQ(rc.n, 1);
    CHECK(memcmp(rc.evs[0].head, "abcdef", 6) == 0);
    CHECK(!rc.evs[0].in_input);
    CHECK(r.buf == NULL);
    CHECK(!pl_ws_reader_busy(&r));

    m = mk(s, PL_WS_OP_BINARY, "xy", 2, 1);
    n = m + mk(s + m, FIN | PL_WS_OP_PONG, "abcdef", 6, 1);
    CHECK_EQ(feed_chunks(&r, &rc, s, n, 3), 0);
    CHECK_EQ(rc.n, 2);
    CHECK_EQ(rc.evs[1].kind, PL_WS_PONG);
    CHECK(memcmp(rc.evs[1].head, "abcdef", 6) == 0);
    CHECK(r.buf != NULL);                              /* "xy" still held */
    CHECK_EQ(r.buf_len, 2);
    n = mk(s, FIN | PL_WS_OP_CONT, "z", 1, 1);
    CHECK_EQ(feed_all(&r, &rc, s, n), 0);
    CHECK_EQ(rc.n, 3);
    CHECK_EQ(rc.evs[2].len, 3);
    CHECK(memcmp(rc.evs[2].head, "xyz", 3) == 0);
    CHECK(r.buf == NULL);
    pl_ws_reader_release(&r);
    pl_ws_reader_release(&r);                          /* safe twice */
}

/* ---- UTF-8 in the reader -------------------------------------------------------- */

TEST(ws_bad_utf8_in_first_fragment_fails_early) {
    uint8_t s[64];
    size_t n;
    pl_ws_reader r;
    rec rc = {0};
    n = mk(s, PL_WS_OP_TEXT, "ok\xFF", 3, 1);          /* FIN=0: more would follow */
    pl_ws_reader_init(&r, 0, 1024);
    CHECK_EQ(feed_all(&r, &rc, s, n), PL_WS_CLOSE_BAD_DATA);
    CHECK_EQ(rc.n, 0);
    pl_ws_reader_release(&r);

    /* The same when the bad byte trickles in: fails on that very byte. */
    pl_ws_reader_init(&r, 0, 1024);
    CHECK_EQ(feed_chunks(&r, &rc, s, n - 1, 1), 0);
    CHECK_EQ(feed_chunks(&r, &rc, s + n - 1, 1, 1), PL_WS_CLOSE_BAD_DATA);
    /* Dead afterwards. */
    CHECK(pl_ws_reader_feed(&r, s, 1, on_msg, &rc) != 0);
    pl_ws_reader_release(&r);

    /* A surrogate in an unfragmented frame. */
    n = mk(s, FIN | PL_WS_OP_TEXT, "\xED\xA0\x80", 3, 1);
    CHECK_EQ(server_feed(&rc, s, n), PL_WS_CLOSE_BAD_DATA);
    /* A message ending inside a code point. */
    n = mk(s, FIN | PL_WS_OP_TEXT, "ab\xE2\x82", 4, 1);
    CHECK_EQ(server_feed(&rc, s, n), PL_WS_CLOSE_BAD_DATA);
    pl_ws_reader_init(&r, 0, 1024);
    CHECK_EQ(feed_chunks(&r, &rc, s, n, 1), PL_WS_CLOSE_BAD_DATA);
    pl_ws_reader_release(&r);
    /* Binary is not validated. */
    n = mk(s, FIN | PL_WS_OP_BINARY, "\xFF\xFE", 2, 1);
    CHECK_EQ(server_feed(&rc, s, n), 0);
    CHECK_EQ(rc.n, 1);
}

TEST(ws_utf8_code_point_split_across_fragments) {
    uint8_t s[64];
    size_t n = 0;
    rec rc = {0};
    pl_ws_reader r;
    n += mk(s + n, PL_WS_OP_TEXT, "\xC3", 1, 1);
    n += mk(s + n, FIN | PL_WS_OP_CONT, "\xA9", 1, 1);
    CHECK_EQ(server_feed(&rc, s, n), 0);
    CHECK_EQ(rc.n, 1);
    CHECK_EQ(rc.evs[0].len, 2);
    CHECK(memcmp(rc.evs[0].head, "\xC3\xA9", 2) == 0);

    /* Split over three fragments, fed a byte at a time. */
    n = 0;
    n += mk(s + n, PL_WS_OP_TEXT, "x\xF0", 2, 1);
    n += mk(s + n, PL_WS_OP_CONT, "\x9F\x98", 2, 1);
    n += mk(s + n, FIN | PL_WS_OP_CONT, "\x80", 1, 1);
    pl_ws_reader_init(&r, 0, 1024);
    CHECK_EQ(feed_chunks(&r, &rc, s, n, 1), 0);
    CHECK_EQ(rc.n, 2);
    CHECK_EQ(rc.evs[1].len, 5);
    CHECK(memcmp(rc.evs[1].head, "x\xF0\x9F\x98\x80", 5) == 0);
    pl_ws_reader_release(&r);

    /* A split overlong is still caught, in the second fragment. */
    n = 0;
    n += mk(s + n, PL_WS_OP_TEXT, "\xE0", 1, 1);
    n += mk(s + n, PL_WS_OP_CONT, "\x80", 1, 1);
    CHECK_EQ(server_feed(&rc, s, n), PL_WS_CLOSE_BAD_DATA);
}

/* ---- limits ---------------------------------------------------------------------- */

TEST(ws_oversize_rejected_from_header) {
    uint8_t s[256], pay[101] = {0};
    size_t n;
    pl_ws_reader r;
    rec rc = {0};
    /* Exactly max_msg is fine. */
    pl_ws_reader_init(&r, 0, 100);
    n = mk(s, FIN | PL_WS_OP_BINARY, pay, 100, 1);
    CHECK_EQ(feed_all(&r, &rc, s, n), 0);
    CHECK_EQ(rc.n, 1);
    pl_ws_reader_release(&r);
    /* One more fails with only the header fed, nothing buffered. */
    n = mk(s, FIN | PL_WS_OP_BINARY, pay, 101, 1);
    pl_ws_reader_init(&r, 0, 100);
    CHECK_EQ(feed_all(&r, &rc, s, 6), PL_WS_CLOSE_TOO_BIG);
    CHECK(r.buf == NULL);
    pl_ws_reader_release(&r);

    /* Over max_msg in total across fragments: fails at the second header. */
    pl_ws_reader_init(&r, 0, 100);
    n = mk(s, PL_WS_OP_TEXT, pay, 60, 1);
    n += mk(s + n, FIN | PL_WS_OP_CONT, pay, 41, 1);
    CHECK_EQ(feed_all(&r, &rc, s, 66 + 6), PL_WS_CLOSE_TOO_BIG);
    pl_ws_reader_release(&r);

    /* A 64-bit length of 2^62 is refused without allocating. */
    {
        uint8_t h[14] = { FIN | PL_WS_OP_BINARY, 0x80 | 127, 0x40, 0, 0, 0, 0, 0, 0, 0,
                          1, 2, 3, 4 };
        pl_ws_reader_init(&r, 0, UINT32_MAX);
        CHECK_EQ(feed_all(&r, &rc, h, sizeof h), PL_WS_CLOSE_TOO_BIG);
        CHECK(r.buf == NULL);
        pl_ws_reader_release(&r);
    }
}

/* A frame header announcing a large frame allocates nothing by itself. */
TEST(ws_buffer_grows_only_as_bytes_arrive) {
    uint8_t h[10] = { FIN | PL_WS_OP_BINARY, 0x80 | 127, 0, 0, 0, 0, 0x0f, 0, 0, 0 };
    uint8_t m[4] = { 1, 2, 3, 4 }, b[10] = {0};
    pl_ws_reader r;
    rec rc = {0};
    pl_ws_reader_init(&r, 0, UINT32_MAX);
    CHECK_EQ(feed_all(&r, &rc, h, sizeof h), 0);
    CHECK_EQ(feed_all(&r, &rc, m, sizeof m), 0);
    CHECK(r.buf == NULL);
    CHECK(pl_ws_reader_busy(&r));
    CHECK_EQ(feed_all(&r, &rc, b, sizeof b), 0);
    CHECK(r.buf != NULL);
    CHECK(r.buf_cap < 4096);
    pl_ws_reader_release(&r);
    CHECK(r.buf == NULL);
}

/* ---- 1002 ---------------------------------------------------------------------- */

/* The result of feeding one frame whose first byte is b0 and payload p. */
static int one(uint8_t b0, const char *p, size_t len) {
    uint8_t s[256];
    rec rc = {0};
    size_t n = mk(s, b0, p, len, 1);
    return server_feed(&rc, s, n);
}

TEST(ws_rsv_bits_are_protocol_errors) {
    CHECK_EQ(one(FIN | 0x40 | PL_WS_OP_TEXT, "a", 1), PL_WS_CLOSE_PROTOCOL);
    CHECK_EQ(one(FIN | 0x20 | PL_WS_OP_TEXT, "a", 1), PL_WS_CLOSE_PROTOCOL);
    CHECK_EQ(one(FIN | 0x10 | PL_WS_OP_BINARY, "a", 1), PL_WS_CLOSE_PROTOCOL);
    CHECK_EQ(one(FIN | 0x10 | PL_WS_OP_PING, "", 0), PL_WS_CLOSE_PROTOCOL);
    CHECK_EQ(one(FIN | PL_WS_OP_TEXT, "a", 1), 0);
}

TEST(ws_reserved_opcodes_are_protocol_errors) {
    for (int op = 0; op < 16; op++) {
        int want = (op >= 3 && op <= 7) || op >= 0xB ? PL_WS_CLOSE_PROTOCOL : 0;
        if (op == PL_WS_OP_CONT) want = PL_WS_CLOSE_PROTOCOL;   /* no message */
        CHECK_EQ(one((uint8_t)(FIN | op), op == PL_WS_OP_CLOSE ? "\x03\xe8" : "", op == PL_WS_OP_CLOSE ? 2 : 0), want);
    }
}

TEST(ws_unmasked_frame_on_server_is_protocol_error) {
    uint8_t s[16];
    rec rc = {0};
    size_t n = mk(s, FIN | PL_WS_OP_TEXT, "hi", 2, 0);
    CHECK_EQ(server_feed(&rc, s, n), PL_WS_CLOSE_PROTOCOL);
    CHECK_EQ(rc.n, 0);
    n = mk(s, FIN | PL_WS_OP_PING, "", 0, 0);
    CHECK_EQ(server_feed(&rc, s, n), PL_WS_CLOSE_PROTOCOL);
}

TEST(ws_client_reader_wants_unmasked_frames) {
    uint8_t s[16];
    size_t n;
    pl_ws_reader r;
    rec rc = {0};
    pl_ws_reader_init(&r, 1, 1024);
    n = mk(s, FIN | PL_WS_OP_TEXT, "hi", 2, 0);
    CHECK_EQ(feed_chunks(&r, &rc, s, n, 1), 0);
    CHECK_EQ(feed_all(&r, &rc, s, n), 0);
    CHECK_EQ(rc.n, 2);
    CHECK(memcmp(rc.evs[0].head, "hi", 2) == 0);
    CHECK(memcmp(rc.evs[1].head, "hi", 2) == 0);
    n = mk(s, FIN | PL_WS_OP_TEXT, "hi", 2, 1);
    CHECK_EQ(feed_all(&r, &rc, s, n), PL_WS_CLOSE_PROTOCOL);
    pl_ws_reader_release(&r);
}

TEST(ws_bad_control_frames_are_protocol_errors) {
    char big[126];
    memset(big, 'x', sizeof big);
    CHECK_EQ(one(FIN | PL_WS_OP_PING, big, 125), 0);
    CHECK_EQ(one(FIN | PL_WS_OP_PING, big, 126), PL_WS_CLOSE_PROTOCOL);
    CHECK_EQ(one(FIN | PL_WS_OP_PONG, big, 126), PL_WS_CLOSE_PROTOCOL);
    CHECK_EQ(one(FIN | PL_WS_OP_CLOSE, big, 126), PL_WS_CLOSE_PROTOCOL);
    CHECK_EQ(one(PL_WS_OP_PING, "a", 1), PL_WS_CLOSE_PROTOCOL);      /* FIN=0 */
    CHECK_EQ(one(PL_WS_OP_PONG, "", 0), PL_WS_CLOSE_PROTOCOL);
    CHECK_EQ(one(PL_WS_OP_CLOSE, "", 0), PL_WS_CLOSE_PROTOCOL);
    /* Caught from the first two bytes, before any payload. */
    {
        uint8_t h[2] = { FIN | PL_WS_OP_PING, 0x80 | 126 };
        rec rc = {0};
        CHECK_EQ(server_feed(&rc, h, 2), PL_WS_CLOSE_PROTOCOL);
    }
}

TEST(ws_fragmentation_order_errors) {
    uint8_t s[64];
    size_t n;
    rec rc = {0};
    CHECK_EQ(one(FIN | PL_WS_OP_CONT, "a", 1), PL_WS_CLOSE_PROTOCOL);
    CHECK_EQ(one(PL_WS_OP_CONT, "a", 1), PL_WS_CLOSE_PROTOCOL);
    n = mk(s, PL_WS_OP_TEXT, "a", 1, 1);
    n += mk(s + n, FIN | PL_WS_OP_TEXT, "b", 1, 1);
    CHECK_EQ(server_feed(&rc, s, n), PL_WS_CLOSE_PROTOCOL);
    n = mk(s, PL_WS_OP_BINARY, "a", 1, 1);
    n += mk(s + n, PL_WS_OP_BINARY, "b", 1, 1);
    CHECK_EQ(server_feed(&rc, s, n), PL_WS_CLOSE_PROTOCOL);
    /* After a complete fragmented message, CONT is again out of order. */
    n = mk(s, PL_WS_OP_TEXT, "a", 1, 1);
    n += mk(s + n, FIN | PL_WS_OP_CONT, "b", 1, 1);
    n += mk(s + n, FIN | PL_WS_OP_CONT, "c", 1, 1);
    CHECK_EQ(server_feed(&rc, s, n), PL_WS_CLOSE_PROTOCOL);
    CHECK_EQ(rc.n, 1);
}

TEST(ws_non_minimal_lengths_are_protocol_errors) {
    rec rc = {0};
    uint8_t a[8] = { FIN | PL_WS_OP_BINARY, 0x80 | 126, 0, 125, 1, 2, 3, 4 };
    uint8_t b[14] = { FIN | PL_WS_OP_BINARY, 0x80 | 127, 0, 0, 0, 0, 0, 0, 0xff, 0xff,
                      1, 2, 3, 4 };
    uint8_t c[14] = { FIN | PL_WS_OP_BINARY, 0x80 | 127, 0x80, 0, 0, 0, 0, 0, 0, 1,
                      1, 2, 3, 4 };
    uint8_t d[8] = { FIN | PL_WS_OP_BINARY, 0x80 | 126, 0, 126, 1, 2, 3, 4 };
    CHECK_EQ(server_feed(&rc, a, sizeof a), PL_WS_CLOSE_PROTOCOL);
    CHECK_EQ(server_feed(&rc, b, sizeof b), PL_WS_CLOSE_PROTOCOL);
    CHECK_EQ(server_feed(&rc, c, sizeof c), PL_WS_CLOSE_PROTOCOL);   /* top bit */
    CHECK_EQ(server_feed(&rc, d, sizeof d), 0);                      /* needs payload */
}

/* ---- close frames ------------------------------------------------------------- */

static int close_with(int code, const char *reason, rec *rc) {
    uint8_t p[125], s[200];
    size_t n;
    p[0] = (uint8_t)(code >> 8);
    p[1] = (uint8_t)code;
    memcpy(p + 2, reason, strlen(reason));
    n = mk(s, FIN | PL_WS_OP_CLOSE, p, 2 + strlen(reason), 1);
    return server_feed(rc, s, n);
}

TEST(ws_close_frames) {
    static const int bad[] = { 0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000,
                               2999, 5000, 65535 };
    static const int good[] = { 1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010,
                                1011, 1012, 1013, 1014, 3000, 4001, 4999 };
    rec rc = {0};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        CHECK_EQ(close_with(bad[i], "", &rc), PL_WS_CLOSE_PROTOCOL);
    CHECK_EQ(rc.n, 0);
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        CHECK_EQ(close_with(good[i], "why", &rc), 0);
        CHECK_EQ(rc.evs[rc.n - 1].kind, PL_WS_CLOSE);
        CHECK_EQ(rc.evs[rc.n - 1].close_code, good[i]);
        CHECK_EQ(rc.evs[rc.n - 1].len, 3);
        CHECK(memcmp(rc.evs[rc.n - 1].head, "why", 3) == 0);
    }
    /* Empty payload: 1005 and no reason. */
    CHECK_EQ(one(FIN | PL_WS_OP_CLOSE, "", 0), 0);
    rc.n = 0;
    {
        uint8_t s[8];
        size_t n = mk(s, FIN | PL_WS_OP_CLOSE, "", 0, 1);
        CHECK_EQ(server_feed(&rc, s, n), 0);
        CHECK_EQ(rc.evs[0].close_code, PL_WS_CLOSE_NO_STATUS);
        CHECK_EQ(rc.evs[0].len, 0);
    }
    /* One byte of payload. */
    CHECK_EQ(one(FIN | PL_WS_OP_CLOSE, "\x03", 1), PL_WS_CLOSE_PROTOCOL);
    /* The reason must be UTF-8. */
    CHECK_EQ(close_with(1000, "\xC0\xAF", &rc), PL_WS_CLOSE_BAD_DATA);
    CHECK_EQ(close_with(1000, "caf\xC3\xA9", &rc), 0);
}

TEST(ws_close_frame_split_across_feeds) {
    uint8_t s[32];
    size_t n = mk(s, FIN | PL_WS_OP_CLOSE, "\x0f\xa1" "unauthorized", 14, 1);
    pl_ws_reader r;
    rec rc = {0};
    pl_ws_reader_init(&r, 0, 1024);
    CHECK_EQ(feed_chunks(&r, &rc, s, n, 1), 0);
    CHECK_EQ(rc.n, 1);
    CHECK_EQ(rc.evs[0].close_code, PL_WS_CLOSE_UNAUTHORIZED);
    CHECK_EQ(rc.evs[0].len, 12);
    CHECK(memcmp(rc.evs[0].head, "unauthorized", 12) == 0);
    CHECK(r.buf == NULL);
    pl_ws_reader_release(&r);
}

/* ---- the callback ------------------------------------------------------------- */

TEST(ws_callback_nonzero_stops_the_feed) {
    uint8_t s[64];
    size_t n = 0;
    pl_ws_reader r;
    rec rc = {0};
    n += mk(s + n, FIN | PL_WS_OP_TEXT, "one", 3, 1);
    n += mk(s + n, FIN | PL_WS_OP_TEXT, "two", 3, 1);
    n += mk(s + n, FIN | PL_WS_OP_TEXT, "three", 5, 1);
    rc.stop_at = 2;
    rc.stop_rc = 42;
    pl_ws_reader_init(&r, 0, 1024);
    CHECK_EQ(feed_all(&r, &rc, s, n), 42);
    CHECK_EQ(rc.n, 2);
    CHECK(memcmp(rc.evs[1].head, "two", 3) == 0);
    pl_ws_reader_release(&r);

    /* Also from a buffered message, whose buffer is still freed. */
    rc.n = 0;
    rc.stop_at = 1;
    rc.stop_rc = -7;
    pl_ws_reader_init(&r, 0, 1024);
    CHECK_EQ(feed_chunks(&r, &rc, s, n, 2), -7);
    CHECK_EQ(rc.n, 1);
    CHECK(r.buf == NULL);
    pl_ws_reader_release(&r);

    /* And from a control frame, whole or buffered. */
    n = mk(s, FIN | PL_WS_OP_PING, "p", 1, 1);
    n += mk(s + n, FIN | PL_WS_OP_TEXT, "after", 5, 1);
    for (size_t chunk = 2; chunk <= n; chunk += n - 2) {
        rc.n = 0;
        rc.stop_at = 1;
        rc.stop_rc = 9;
        pl_ws_reader_init(&r, 0, 1024);
        CHECK_EQ(feed_chunks(&r, &rc, s, n, chunk), 9);
        CHECK_EQ(rc.n, 1);
        CHECK_EQ(rc.evs[0].kind, PL_WS_PING);
        CHECK(r.buf == NULL);
        pl_ws_reader_release(&r);
    }
}

/* ---- writing ------------------------------------------------------------------ */

TEST(ws_header_round_trips_through_reader) {
    static const uint64_t lens[] = { 0, 125, 126, 65535, 65536 };
    static const size_t hlen[] = { 2, 2, 4, 4, 10 };
    const uint8_t key[4] = { 0xde, 0xad, 0xbe, 0xef };
    uint8_t *f = malloc(65536 + 14), *pay = malloc(65536);
    for (size_t i = 0; i < 65536; i++) pay[i] = (uint8_t)(i ^ (i >> 8));
    for (int masked = 0; masked <= 1; masked++) {
        for (size_t li = 0; li < 5; li++) {
            size_t len = (size_t)lens[li], h;
            pl_ws_reader r;
            rec rc = {0};
            h = pl_ws_header(f, PL_WS_OP_BINARY, len, masked ? key : NULL);
            CHECK_EQ(h, hlen[li] + (masked ? 4 : 0));
            memcpy(f + h, pay, len);
            if (masked) pl_ws_mask(f + h, len, key, 0);
            pl_ws_reader_init(&r, !masked, 1 << 20);
            CHECK_EQ(feed_all(&r, &rc, f, h + len), 0);
            CHECK_EQ(rc.n, 1);
            CHECK_EQ(rc.evs[0].opcode, PL_WS_OP_BINARY);
            CHECK_EQ(rc.evs[0].len, len);
            CHECK_EQ(rc.evs[0].hash, fnv(pay, len));
            pl_ws_reader_release(&r);
        }
    }
    free(f);
    free(pay);
}

TEST(ws_mask_offsets) {
    const uint8_t key[4] = { 1, 2, 4, 8 };
    uint8_t a[37], b[37];
    for (size_t i = 0; i < sizeof a; i++) a[i] = b[i] = (uint8_t)(i * 13);
    pl_ws_mask(a, sizeof a, key, 0);
    for (size_t i = 0; i < sizeof a; i++) CHECK_EQ(a[i], (uint8_t)(b[i] ^ key[i & 3]));
    /* Masking in pieces, with the running offset, is the same as at once. */
    for (size_t cut = 0; cut <= sizeof b; cut++) {
        uint8_t c[37];
        memcpy(c, b, sizeof c);
        pl_ws_mask(c, cut, key, 0);
        pl_ws_mask(c + cut, sizeof c - cut, key, cut);
        CHECK(memcmp(c, a, sizeof c) == 0);
    }
}

TEST(ws_close_payload_builder) {
    uint8_t out[125];
    char reason[200];
    size_t n;
    n = pl_ws_close_payload(out, 1000, "bye");
    CHECK_EQ(n, 5);
    CHECK(memcmp(out, "\x03\xe8" "bye", 5) == 0);
    CHECK_EQ(pl_ws_close_payload(out, 4001, NULL), 2);
    CHECK_EQ(out[0], 0x0f);
    CHECK_EQ(out[1], 0xa1);
    CHECK_EQ(pl_ws_close_payload(out, PL_WS_CLOSE_NO_STATUS, "x"), 0);
    memset(reason, 'a', 150);
    reason[150] = '\0';
    CHECK_EQ(pl_ws_close_payload(out, 1001, reason), 125);
    /* Truncation never splits a code point: 122 ASCII + "é" would cut it. */
    memset(reason, 'a', 122);
    memcpy(reason + 122, "\xC3\xA9tail", 7);
    n = pl_ws_close_payload(out, 1001, reason);
    CHECK_EQ(n, 124);
    CHECK(pl_utf8_valid(out + 2, n - 2));
    /* What it builds, the reader accepts. */
    {
        uint8_t s[140];
        rec rc = {0};
        size_t f = mk(s, FIN | PL_WS_OP_CLOSE, out, n, 1);
        CHECK_EQ(server_feed(&rc, s, f), 0);
        CHECK_EQ(rc.evs[0].close_code, 1001);
        CHECK_EQ(rc.evs[0].len, 122);
    }
}

/* ---- robustness ------------------------------------------------------------------ */

static uint32_t rnd(uint32_t *seed) {
    *seed = *seed * 1103515245u + 12345u;
    return *seed >> 16;
}

/* Random bytes and mutated valid streams, in random chunks: the reader may
 * fail but must stay in bounds (ASan) and deliver only sane events. */
TEST(ws_random_input_is_safe) {
    uint32_t seed = 12345;
    static uint8_t base[512], s[512];
    size_t bn = 0;
    bn += mk(base + bn, PL_WS_OP_TEXT, "h\xC3", 2, 1);
    bn += mk(base + bn, FIN | PL_WS_OP_PING, "pp", 2, 1);
    bn += mk(base + bn, FIN | PL_WS_OP_CONT, "\xA9llo", 4, 1);
    bn += mk(base + bn, FIN | PL_WS_OP_CLOSE, "\x03\xe8!", 3, 1);
    for (int iter = 0; iter < 20000; iter++) {
        pl_ws_reader r;
        rec rc = {0};
        size_t n, off = 0;
        int ret = 0;
        if (iter & 1) {
            n = rnd(&seed) % sizeof s;
            for (size_t i = 0; i < n; i++) s[i] = (uint8_t)rnd(&seed);
        } else {
            n = bn;
            memcpy(s, base, n);
            for (int k = (int)(rnd(&seed) % 4); k >= 0; k--) {
                size_t at = rnd(&seed) % n;
                s[at] = (uint8_t)rnd(&seed);
            }
        }
        pl_ws_reader_init(&r, iter % 3 == 0, 64 + rnd(&seed) % 512);
        while (off < n && ret == 0) {
            size_t k = 1 + rnd(&seed) % 40;
            if (k > n - off) k = n - off;
            ret = feed_chunks(&r, &rc, s + off, k, k);
            off += k;
        }
        for (int e = 0; e < rc.n; e++) {
            CHECK(rc.evs[e].kind >= PL_WS_MESSAGE && rc.evs[e].kind <= PL_WS_CLOSE);
            if (rc.evs[e].kind != PL_WS_MESSAGE) CHECK(rc.evs[e].len <= 125);
        }
        pl_ws_reader_release(&r);
    }
}

/* ---- the connection's reader (src/ws/wsconn.c) ------------------------------ */

#include "ws/wsconn.h"

static int wsc_texts;
static size_t wsc_last_len;

static void wsc_on_text(pl_conn *c, const uint8_t *data, size_t len) {
    (void)c;
    (void)data;
    wsc_texts++;
    wsc_last_len = len;
}

static void wsc_on_timeout(pl_conn *c) { (void)c; }

/* Feeds a copy of p[0..n) (the reader unmasks in place). */
static void wsc_feed(pl_conn *c, const uint8_t *p, size_t n) {
    uint8_t *cp = malloc(n ? n : 1);
    memcpy(cp, p, n);
    pl_wsconn_on_data(c, cp, n);
    free(cp);
}

/* An idle WebSocket keeps no reader: one exists only while a feed has ended
 * inside a frame or a fragmented message, and goes once one ends on a
 * message boundary (memory per idle connection, issue 11). */
TEST(wsconn_reader_only_while_a_frame_is_partial) {
    pl_wsconn_hooks h = {wsc_on_text, wsc_on_timeout, NULL};
    pl_wsconn_init(&h, 1 << 20, 1 << 20);
    pl_conn *c = calloc(1, sizeof *c);
    pl_wsconn_open(c);
    CHECK(c->ws == NULL);
    uint8_t f[300], g[300];
    size_t n = mk(f, 0x81, "hello", 5, 1);
    wsc_texts = 0;
    wsc_feed(c, f, n);                              /* whole frame */
    CHECK_EQ(wsc_texts, 1);
    CHECK(c->ws == NULL);
    wsc_feed(c, f, 3);                              /* header split */
    CHECK(c->ws != NULL);
    wsc_feed(c, f + 3, n - 3);
    CHECK_EQ(wsc_texts, 2);
    CHECK(c->ws == NULL);
    size_t m = mk(g, 0x01, "frag", 4, 1);           /* a fragmented message: */
    m += mk(g + m, 0x80, "ment", 4, 1);
    size_t first = mk(f, 0x01, "frag", 4, 1);
    wsc_feed(c, g, first);                          /* first fragment, whole */
    CHECK(c->ws != NULL);                           /* ... the message is not */
    wsc_feed(c, g + first, m - first);
    CHECK_EQ(wsc_texts, 3);
    CHECK_EQ(wsc_last_len, 8);
    CHECK(c->ws == NULL);
    uint8_t two[40];                                /* a message and half the next */
    size_t k = mk(two, 0x81, "one", 3, 1);
    size_t k2 = mk(two + k, 0x81, "second", 6, 1);
    wsc_feed(c, two, k + 4);
    CHECK_EQ(wsc_texts, 4);
    CHECK(c->ws != NULL);
    wsc_feed(c, two + k + 4, k2 - 4);
    CHECK_EQ(wsc_texts, 5);
    CHECK_EQ(wsc_last_len, 6);
    CHECK(c->ws == NULL);
    wsc_feed(c, two, 5);                            /* partial at close: freed there */
    CHECK(c->ws != NULL);
    pl_wsconn_release(c);
    CHECK(c->ws == NULL);
    pl_wsconn_release(c);                           /* safe twice */
    free(c);
}
