/* ws.c — RFC 6455 framing: the resumable frame reader, frame headers,
 * masking, close payloads and the handshake accept key (UTF-8 validation is
 * core/utf8.c).
 *
 * Owns: turning bytes into messages and control frames, and the checks that
 * make a peer's bytes a protocol error (1002), bad data (1007) or too big
 * (1009). Does not own: sockets, timers, the close handshake's timing, or
 * what a message means (see ws.h).
 *
 * Design note: the reader.
 *
 *            first 2 header bytes          rest of header (ext len, mask)
 *   HEADER ---- check_start() ------> HEADER ---- start_frame() ----> PAYLOAD
 *     ^                                                                  |
 *     +------------- frame_done(): deliver, or wait for the next fragment -+
 *
 *   any check failing: fail() -> DEAD (feed returns the close code; only
 *   release is valid afterwards).
 *
 * Invariants:
 *   1. hdr[0..hdr_have) holds the header of the frame being read; the rules
 *      that need only the first two bytes (RSV, opcode, mask bit, control
 *      frame shape, fragmentation order) run as soon as those two arrive, the
 *      length rules (minimal encoding, top bit, max_msg) once the extended
 *      length is complete, so nothing of a bad frame is ever buffered.
 *   2. msg_opcode != 0 exactly while a fragmented message is in progress
 *      (its first frame had FIN=0 and its last has not completed); then
 *      buf[0..buf_len) holds its payload so far and buf_len <= max_msg.
 *   3. A frame wholly inside one feed that is a control frame or a complete
 *      unfragmented message is unmasked in place and delivered pointing into
 *      the caller's bytes (zero-copy). Otherwise its bytes are copied into
 *      buf as they arrive: data at buf + buf_len, a control frame's partial
 *      payload just after it, at buf + buf_len + mask_off (at most 125 bytes,
 *      so buf_cap never exceeds max_msg + 125, which is why init clamps
 *      max_msg).
 *   4. buf is freed as soon as what it holds is delivered: a message at its
 *      final frame, a buffered control frame unless a message is in progress.
 *      An idle reader (busy() == 0) owns no memory.
 *   5. Text is validated as it arrives (utf8 holds the state across frames
 *      and feeds), so a bad byte fails with 1007 even in a first fragment.
 *   6. State is updated before a callback runs, so a callback that stops the
 *      feed leaves a consistent reader (the bytes after that frame are simply
 *      not consumed).
 */
#include "ws.h"

#include <string.h>

#include <sodium.h>

#include "../core/alloc.h"

#if defined(__x86_64__)
_Static_assert(sizeof(pl_ws_reader) <= 64, "pl_ws_reader must fit in 64 bytes");
#endif

/* ---- the frame reader ----------------------------------------------------- */

enum { ST_HEADER = 0, ST_PAYLOAD = 1, ST_DEAD = 2 };

/* Delivered for empty payloads, so m->data is never NULL. */
static const uint8_t empty_payload[1];

void pl_ws_reader_init(pl_ws_reader *r, int is_client, uint32_t max_msg) {
    memset(r, 0, sizeof *r);
    r->state = ST_HEADER;
    r->is_client = is_client ? 1 : 0;
    /* Invariant 3: buf_cap <= max_msg + 125 must fit in 32 bits. */
    if (max_msg > UINT32_MAX - 125) max_msg = UINT32_MAX - 125;
    r->max_msg = max_msg;
    pl_utf8_init(&r->utf8);
}

static void buf_free(pl_ws_reader *r) {
    free(r->buf);
    r->buf = NULL;
    r->buf_len = r->buf_cap = 0;
}

void pl_ws_reader_release(pl_ws_reader *r) { buf_free(r); }

int pl_ws_reader_busy(const pl_ws_reader *r) {
    return r->state == ST_PAYLOAD || r->hdr_have != 0 || r->msg_opcode != 0 ||
           r->buf != NULL;
}

/* Makes buf hold at least need bytes (need <= max_msg + 125, invariant 3).
 * Grows geometrically, so a message that trickles in costs O(n) copies, but
 * only as bytes arrive: a header announcing a large frame allocates nothing. */
static void buf_reserve(pl_ws_reader *r, uint64_t need) {
    uint64_t cap, lim = (uint64_t)r->max_msg + 125;
    if (need <= r->buf_cap) return;
    cap = r->buf_cap ? r->buf_cap : 256;
    while (cap < need) cap *= 2;
    if (cap > lim) cap = lim;
    r->buf = pl_realloc(r->buf, (size_t)cap);
    r->buf_cap = (uint32_t)cap;
}

static int fail(pl_ws_reader *r, int code) {
    r->state = ST_DEAD;
    return code;
}

/* Header length implied by the first two bytes: 2, the extended length
 * (0, 2 or 8) and the masking key (0 or 4). */
static size_t hdr_need(const uint8_t *h) {
    uint8_t l7 = h[1] & 0x7F;
    return 2 + (l7 == 126 ? 2 : l7 == 127 ? 8 : 0) + ((h[1] & 0x80) ? 4 : 0);
}

/* The rules decidable from the first two header bytes (invariant 1). */
static int check_start(const pl_ws_reader *r) {
    uint8_t b0 = r->hdr[0], b1 = r->hdr[1];
    int masked = (b1 & 0x80) != 0;
    if (b0 & 0x70) return PL_WS_CLOSE_PROTOCOL;           /* RSV1-3     */
    if (masked == r->is_client) return PL_WS_CLOSE_PROTOCOL;
    switch (b0 & 0x0F) {
    case PL_WS_OP_CONT:
        if (!r->msg_opcode) return PL_WS_CLOSE_PROTOCOL;
        break;
    case PL_WS_OP_TEXT:
    case PL_WS_OP_BINARY:
        if (r->msg_opcode) return PL_WS_CLOSE_PROTOCOL;
        break;
    case PL_WS_OP_CLOSE:
    case PL_WS_OP_PING:
    case PL_WS_OP_PONG:                                   /* RFC 5.5   */
        if (!(b0 & 0x80) || (b1 & 0x7F) > 125) return PL_WS_CLOSE_PROTOCOL;
        break;
    default:
        return PL_WS_CLOSE_PROTOCOL;                       /* 3-7, B-F  */
    }
    return 0;
}

/* The whole header is in hdr: check the length and enter PAYLOAD. */
static int start_frame(pl_ws_reader *r) {
    const uint8_t *h = r->hdr;
    uint64_t len = h[1] & 0x7F;
    size_t at = 2;
    int op = h[0] & 0x0F, fin = h[0] >> 7;
    if (len == 126) {
        len = (uint64_t)h[2] << 8 | h[3];
        at = 4;
        if (len < 126) return PL_WS_CLOSE_PROTOCOL;       /* not minimal */
    } else if (len == 127) {
        len = 0;
        for (at = 2; at < 10; at++) len = len << 8 | h[at];
        if ((len >> 63) || len <= 0xFFFF) return PL_WS_CLOSE_PROTOCOL;
    }
    if (!(op & 8)) {
        /* Invariant 2 keeps so_far <= max_msg, so this cannot wrap. */
        uint64_t so_far = r->msg_opcode ? r->buf_len : 0;
        if (len > (uint64_t)r->max_msg - so_far) return PL_WS_CLOSE_TOO_BIG;
        if (op != PL_WS_OP_CONT) {
            pl_utf8_init(&r->utf8);
            if (!fin) r->msg_opcode = (uint8_t)op;
        }
    }
    if (h[1] & 0x80) memcpy(r->mask, h + at, 4);
    r->frame_opcode = (uint8_t)op;
    r->frame_fin = (uint8_t)fin;
    r->remaining = len;
    r->mask_off = 0;
    r->hdr_have = 0;
    r->state = ST_PAYLOAD;
    return 0;
}

/* RFC 6455 7.4.1/7.4.2 and the IANA registry: codes a peer may send. */
static int close_code_ok(unsigned c) {
    if (c >= 3000 && c <= 4999) return 1;
    if (c < 1000 || c > 1014) return 0;
    return c != 1004 && c != 1005 && c != 1006;
}

/* A complete control frame's payload d[0..len): check and deliver it. */
static int deliver_control(pl_ws_reader *r, int op, const uint8_t *d, size_t len,
                           pl_ws_cb cb, void *ud) {
    pl_ws_msg m;
    memset(&m, 0, sizeof m);
    m.opcode = op;
    m.data = len ? d : empty_payload;
    m.len = len;
    if (op == PL_WS_OP_PING) {
        m.kind = PL_WS_PING;
    } else if (op == PL_WS_OP_PONG) {
        m.kind = PL_WS_PONG;
    } else {
        m.kind = PL_WS_CLOSE;
        if (len == 0) {
            m.close_code = PL_WS_CLOSE_NO_STATUS;
        } else {
            if (len == 1) return fail(r, PL_WS_CLOSE_PROTOCOL);
            m.close_code = d[0] << 8 | d[1];
            if (!close_code_ok((unsigned)m.close_code)) return fail(r, PL_WS_CLOSE_PROTOCOL);
            if (!pl_utf8_valid(d + 2, len - 2)) return fail(r, PL_WS_CLOSE_BAD_DATA);
            m.data = len > 2 ? d + 2 : empty_payload;
            m.len = len - 2;
        }
    }
    return cb(ud, &m);
}

static int deliver_message(int op, const uint8_t *d, size_t len, pl_ws_cb cb, void *ud) {
    pl_ws_msg m;
    memset(&m, 0, sizeof m);
    m.kind = PL_WS_MESSAGE;
    m.opcode = op;
    m.data = len ? d : empty_payload;
    m.len = len;
    return cb(ud, &m);
}

/* In PAYLOAD with p[*ip..n) available (possibly none, for an empty frame):
 * consume what belongs to this frame and deliver it once complete. */
static int read_payload(pl_ws_reader *r, uint8_t *p, size_t n, size_t *ip,
                        pl_ws_cb cb, void *ud) {
    size_t i = *ip, avail = n - i, k;
    int op = r->frame_opcode, ctrl = op & 8;
    int msg_op = op == PL_WS_OP_CONT ? r->msg_opcode : op;
    uint8_t *d = p + i;
    int rc;

    /* Invariant 3: the zero-copy path. */
    if (r->mask_off == 0 && r->remaining <= avail &&
        (ctrl || (r->frame_fin && op != PL_WS_OP_CONT))) {
        size_t len = (size_t)r->remaining;
        if (!r->is_client) pl_ws_mask(d, len, r->mask, 0);
        *ip = i + len;
        r->remaining = 0;
        r->state = ST_HEADER;
        if (ctrl) return deliver_control(r, op, d, len, cb, ud);
        if (op == PL_WS_OP_TEXT && !pl_utf8_valid(d, len))
            return fail(r, PL_WS_CLOSE_BAD_DATA);
        return deliver_message(op, d, len, cb, ud);
    }

    /* The copying path: take what is here of this frame. */
    k = avail < r->remaining ? avail : (size_t)r->remaining;
    if (k) {
        if (!r->is_client) pl_ws_mask(d, k, r->mask, r->mask_off & 3);
        if (ctrl) {
            buf_reserve(r, (uint64_t)r->buf_len + 125);
            memcpy(r->buf + r->buf_len + r->mask_off, d, k);
        } else {
            if (msg_op == PL_WS_OP_TEXT && pl_utf8_feed(&r->utf8, d, k) < 0)
                return fail(r, PL_WS_CLOSE_BAD_DATA);
            buf_reserve(r, (uint64_t)r->buf_len + k);
            memcpy(r->buf + r->buf_len, d, k);
            r->buf_len += (uint32_t)k;
        }
        r->mask_off += (uint32_t)k;
        r->remaining -= k;
        *ip = i + k;
    }
    if (r->remaining) return 0;

    /* The frame is complete. */
    r->state = ST_HEADER;
    if (ctrl) {
        rc = deliver_control(r, op, r->buf + r->buf_len, r->mask_off, cb, ud);
        if (!r->msg_opcode) buf_free(r);                   /* invariant 4 */
        return rc;
    }
    if (!r->frame_fin) return 0;                           /* more fragments */
    if (msg_op == PL_WS_OP_TEXT && !pl_utf8_done(&r->utf8))
        return fail(r, PL_WS_CLOSE_BAD_DATA);
    r->msg_opcode = 0;
    rc = deliver_message(msg_op, r->buf, r->buf_len, cb, ud);
    buf_free(r);
    return rc;
}

/* Gathers header bytes from p[*ip..n); returns 0 with state PAYLOAD once the
 * header is complete and valid, 0 in HEADER if more bytes are needed, or a
 * close code. */
static int read_header(pl_ws_reader *r, const uint8_t *p, size_t n, size_t *ip) {
    size_t i = *ip, need, k;
    int rc;
    if (r->hdr_have < 2) {
        k = 2 - r->hdr_have;
        if (k > n - i) k = n - i;
        memcpy(r->hdr + r->hdr_have, p + i, k);
        r->hdr_have += (uint8_t)k;
        i += k;
        *ip = i;
        if (r->hdr_have < 2) return 0;
        if ((rc = check_start(r)) != 0) return fail(r, rc);
    }
    need = hdr_need(r->hdr);
    k = need - r->hdr_have;
    if (k > n - i) k = n - i;
    memcpy(r->hdr + r->hdr_have, p + i, k);
    r->hdr_have += (uint8_t)k;
    *ip = i + k;
    if (r->hdr_have < need) return 0;
    if ((rc = start_frame(r)) != 0) return fail(r, rc);
    return 0;
}

int pl_ws_reader_feed(pl_ws_reader *r, uint8_t *p, size_t n, pl_ws_cb cb, void *ud) {
    size_t i = 0;
    int rc;
    if (r->state == ST_DEAD) return PL_WS_CLOSE_PROTOCOL;
    while (i < n) {
        if (r->state == ST_HEADER) {
            if ((rc = read_header(r, p, n, &i)) != 0) return rc;
            if (r->state != ST_PAYLOAD) break;             /* need more */
        }
        /* Runs with i == n too, so an empty frame ending the feed is delivered. */
        if ((rc = read_payload(r, p, n, &i, cb, ud)) != 0) return rc;
    }
    return 0;
}

/* ---- writing frames ------------------------------------------------------- */

size_t pl_ws_header(uint8_t out[14], int opcode, uint64_t len, const uint8_t mask[4]) {
    uint8_t mbit = mask ? 0x80 : 0;
    size_t n = 2;
    out[0] = (uint8_t)(0x80 | (opcode & 0x0F));
    if (len < 126) {
        out[1] = (uint8_t)(mbit | len);
    } else if (len <= 0xFFFF) {
        out[1] = mbit | 126;
        out[2] = (uint8_t)(len >> 8);
        out[3] = (uint8_t)len;
        n = 4;
    } else {
        out[1] = mbit | 127;
        for (int k = 0; k < 8; k++) out[2 + k] = (uint8_t)(len >> (56 - 8 * k));
        n = 10;
    }
    if (mask) {
        memcpy(out + n, mask, 4);
        n += 4;
    }
    return n;
}

void pl_ws_mask(uint8_t *p, size_t n, const uint8_t mask[4], size_t off) {
    uint8_t m8[8];
    uint64_t mw, w;
    size_t i = 0;
    for (int k = 0; k < 8; k++) m8[k] = mask[(off + (size_t)k) & 3];
    memcpy(&mw, m8, 8);
    for (; n - i >= 8; i += 8) {
        memcpy(&w, p + i, 8);
        w ^= mw;
        memcpy(p + i, &w, 8);
    }
    for (; i < n; i++) p[i] ^= m8[i & 7];    /* i & 7 == i mod 4 in m8's pattern */
}

/* 1005 means "no status code" and must not be sent (RFC 7.4.1), so it gives
 * an empty payload. A reason longer than 123 bytes is cut at a code point
 * boundary, so a valid UTF-8 reason stays valid. */
size_t pl_ws_close_payload(uint8_t out[125], int code, const char *reason) {
    size_t n = reason ? strlen(reason) : 0;
    if (code == PL_WS_CLOSE_NO_STATUS) return 0;
    if (n > 123) {
        n = 123;
        while (n > 0 && ((uint8_t)reason[n] & 0xC0) == 0x80) n--;
    }
    out[0] = (uint8_t)(code >> 8);
    out[1] = (uint8_t)code;
    if (n) memcpy(out + 2, reason, n);
    return 2 + n;
}

/* ---- the handshake's SHA-1 ------------------------------------------------ */

/* SHA-1 (FIPS 180-4) of the accept key's 60 bytes. Written out here rather
 * than taken from OpenSSL: RFC 6455 uses it as a checksum, not for security,
 * and OpenSSL 3's one-shot SHA1() initialises its provider machinery on first
 * use, which costs a plaintext server 2.4 MiB of resident memory
 * (benchmarks.md, "Issue 11: memory per idle connection"). */
static uint32_t rol32(uint32_t x, int n) { return (x << n) | (x >> (32 - n)); }

static void sha1_block(uint32_t h[5], const uint8_t *p) {
    uint32_t w[80], a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
    for (int i = 16; i < 80; i++) w[i] = rol32(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
    for (int i = 0; i < 80; i++) {
        uint32_t f, k;
        if (i < 20)      { f = (b & c) | (~b & d);          k = 0x5A827999; }
        else if (i < 40) { f = b ^ c ^ d;                    k = 0x6ED9EBA1; }
        else if (i < 60) { f = (b & c) | (b & d) | (c & d); k = 0x8F1BBCDC; }
        else             { f = b ^ c ^ d;                    k = 0xCA62C1D6; }
        uint32_t t = rol32(a, 5) + f + e + k + w[i];
        e = d;
        d = c;
        c = rol32(b, 30);
        b = a;
        a = t;
    }
    h[0] += a;
    h[1] += b;
    h[2] += c;
    h[3] += d;
    h[4] += e;
}

void pl_ws_sha1(const uint8_t *p, size_t n, uint8_t out[20]) {
    uint32_t h[5] = {0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0};
    uint8_t last[128];
    size_t full = n & ~(size_t)63, rest = n - full;
    for (size_t i = 0; i < full; i += 64) sha1_block(h, p + i);
    memset(last, 0, sizeof last);
    if (rest) memcpy(last, p + full, rest);
    last[rest] = 0x80;                                  /* padding, then the bit length */
    size_t blocks = rest + 9 <= 64 ? 1 : 2;
    uint64_t bits = (uint64_t)n * 8;
    for (int k = 0; k < 8; k++) last[blocks * 64 - 1 - k] = (uint8_t)(bits >> (8 * k));
    for (size_t b = 0; b < blocks; b++) sha1_block(h, last + 64 * b);
    for (int i = 0; i < 5; i++) {
        out[4 * i] = (uint8_t)(h[i] >> 24);
        out[4 * i + 1] = (uint8_t)(h[i] >> 16);
        out[4 * i + 2] = (uint8_t)(h[i] >> 8);
        out[4 * i + 3] = (uint8_t)h[i];
    }
}

int pl_ws_accept_key(const char *key, size_t key_len, char out[29]) {
    static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    uint8_t raw[16], cat[24 + sizeof guid - 1], sha[20];
    size_t raw_len = 0;
    const char *end = NULL;
    out[0] = '\0';
    if (!key || key_len != 24) return -1;
    if (sodium_base642bin(raw, sizeof raw, key, key_len, NULL, &raw_len, &end,
                          sodium_base64_VARIANT_ORIGINAL) != 0 ||
        raw_len != sizeof raw || end != key + key_len)
        return -1;
    memcpy(cat, key, 24);
    memcpy(cat + 24, guid, sizeof guid - 1);
    pl_ws_sha1(cat, sizeof cat, sha);
    sodium_bin2base64(out, 29, sha, sizeof sha, sodium_base64_VARIANT_ORIGINAL);
    return 0;
}
