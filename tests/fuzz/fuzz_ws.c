/* fuzz_ws.c — libFuzzer driver for RFC 6455 framing (src/ws/ws.c).
 *
 * Owns: the invariants of pl_ws_reader_feed as seen from outside, on both
 * sides (server: client frames must be masked; client: server frames must
 * not be), and of the encoders and the UTF-8 validator.
 *
 * Input: [flags] then the fz_split layout of fuzz.h (the fuzzer chooses where
 * the frames are cut). flags bit 0: side (1 = client); bits 1-3: max_msg from
 * a table (tiny limits reach 1009 with small inputs); bits 4-5: stop the
 * callback at event 1..3 (0 = never).
 *
 * Checked for every input:
 *   1. Each delivered event is well formed: data never NULL; a MESSAGE is
 *      TEXT or BINARY, at most max_msg bytes, and TEXT is valid UTF-8 by an
 *      independent RFC 3629 check; a control payload is at most 125 bytes; a
 *      CLOSE has 1005 and no reason, or a code a peer may send and a valid
 *      UTF-8 reason of at most 123 bytes.
 *   2. feed returns 0, 1002, 1007 or 1009 (or the callback's stop value),
 *      and a reader that failed stays failed.
 *   3. Whole, in fuzzer-chosen chunks, and byte by byte: the same events in
 *      the same order and the same result (the reader is resumable at every
 *      byte and its checks do not depend on how bytes arrive); and the same
 *      as model(), a plain whole-buffer reading of RFC 6455 written here
 *      independently of ws.c (so a check missing from the reader, such as
 *      the RSV bits or a close code, shows up as a difference).
 *   4. A callback that stops the feed at event k sees exactly the first k
 *      events of the whole run, and the reader can still be released.
 *   5. The UTF-8 DFA agrees with the reference, byte by byte and chunked,
 *      including the position of the first bad byte.
 *   6. pl_ws_header + pl_ws_mask round-trip through a reader of the other
 *      side; pl_ws_close_payload keeps a valid reason valid; pl_ws_accept_key
 *      never overruns.
 * Leaks (LeakSanitizer) mean a reader kept its buffer after release.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "ws/ws.h"

#define STOP_RC 77
#define MAX_EVENTS 32768      /* a frame is at least 2 bytes; inputs are capped at 64 KiB */

typedef struct ev {
    int      kind, opcode, close_code;
    size_t   len;
    uint64_t hash;
} ev;

typedef struct rec {
    ev       evs[MAX_EVENTS];
    size_t   n;
    uint32_t max_msg;        /* as clamped by the reader */
    size_t   stop_at;        /* 1-based; 0 = never stop */
} rec;

static const uint32_t max_msgs[8] = { 0, 1, 125, 126, 127, 4096, 65536, UINT32_MAX };

static int close_code_sendable(int c) {
    /* RFC 6455 7.4.1/7.4.2 and the IANA registry (1012-1014 assigned since). */
    if (c >= 3000 && c <= 4999) return 1;
    return c >= 1000 && c <= 1014 && c != 1004 && c != 1005 && c != 1006;
}

static int on_event(void *ud, const pl_ws_msg *m) {
    rec *r = ud;
    ev *e;
    FZ_CHECK(m->data != NULL);
    switch (m->kind) {
    case PL_WS_MESSAGE:
        FZ_CHECK(m->opcode == PL_WS_OP_TEXT || m->opcode == PL_WS_OP_BINARY);
        FZ_CHECK(m->len <= r->max_msg);
        if (m->opcode == PL_WS_OP_TEXT) FZ_CHECK(fz_utf8_valid(m->data, m->len));
        break;
    case PL_WS_PING:
    case PL_WS_PONG:
        FZ_CHECK(m->len <= 125);
        break;
    case PL_WS_CLOSE:
        if (m->close_code == PL_WS_CLOSE_NO_STATUS) {
            FZ_CHECK(m->len == 0);
        } else {
            FZ_CHECK(close_code_sendable(m->close_code));
            FZ_CHECK(m->len <= 123);
            FZ_CHECK(fz_utf8_valid(m->data, m->len));
        }
        break;
    default:
        FZ_CHECK(!"unknown event kind");
    }
    FZ_CHECK(r->n < MAX_EVENTS);
    e = &r->evs[r->n++];
    e->kind = m->kind;
    e->opcode = m->opcode;
    e->close_code = m->close_code;
    e->len = m->len;
    e->hash = fz_hash(m->data, m->len);
    return r->stop_at && r->n == r->stop_at ? STOP_RC : 0;
}

static void check_rc(int rc) {
    FZ_CHECK(rc == 0 || rc == STOP_RC || rc == PL_WS_CLOSE_PROTOCOL ||
             rc == PL_WS_CLOSE_BAD_DATA || rc == PL_WS_CLOSE_TOO_BIG);
}

/* Feeds data to a fresh reader in chunks (chunk == 0: all at once; else
 * sizes from sp), each chunk in its own exact-size heap copy. Returns the
 * first non-zero result, or 0. */
static int run(rec *r, int is_client, uint32_t max_msg, const uint8_t *data, size_t len,
               const fz_split *sp, int whole) {
    pl_ws_reader rd;
    int rc = 0;
    size_t i = 0, k = 0;
    pl_ws_reader_init(&rd, is_client, max_msg);
    r->max_msg = rd.max_msg;
    r->n = 0;
    while (i < len || (whole && i == 0)) {
        size_t c = whole ? len : fz_chunk(sp, k++);
        if (c > len - i) c = len - i;
        uint8_t *p = fz_dup(data + i, c);
        rc = pl_ws_reader_feed(&rd, p, c, on_event, r);
        free(p);
        i += c;
        check_rc(rc);
        if (rc) break;
        if (whole) break;
    }
    if (rc && rc != STOP_RC) {
        /* Invariant 2 of ws.h: a dead reader stays dead. */
        uint8_t b[2] = { 0x81, 0x80 };
        size_t before = r->n;
        FZ_CHECK(pl_ws_reader_feed(&rd, b, sizeof b, on_event, r) != 0);
        FZ_CHECK(r->n == before);
    }
    pl_ws_reader_release(&rd);
    pl_ws_reader_release(&rd);       /* safe twice */
    return rc;
}

/* ---- the reference model ------------------------------------------------ */

static void model_event(rec *r, int kind, int opcode, int close_code, const uint8_t *d, size_t n) {
    ev *e;
    FZ_CHECK(r->n < MAX_EVENTS);
    e = &r->evs[r->n++];
    e->kind = kind;
    e->opcode = opcode;
    e->close_code = close_code;
    e->len = n;
    e->hash = fz_hash(d, n);
}

/* 1 if t[0..n) cannot be the start of valid UTF-8 (a bad byte is there). */
static int utf8_bad_prefix(const uint8_t *t, size_t n) {
    int boundary;
    return fz_utf8_scan(t, n, &boundary) != n;
}

/* Reads data[0..len) as RFC 6455 says (5.2 framing and its MUSTs, 5.4
 * fragmentation, 5.5 control frames, 5.5.1 close bodies, 7.4 close codes,
 * 8.1 UTF-8, a max_msg limit on messages), all at once. Fills r->evs and
 * returns 0 (all bytes read, possibly ending inside a frame) or the close
 * code the reader must return. A text message is failed (1007) as soon as
 * its bytes so far cannot start valid UTF-8, even mid-frame. */
static int model(rec *r, int is_client, uint32_t max_msg, const uint8_t *data, size_t len) {
    uint8_t *msg = malloc(len + 1), *pl = malloc(len + 1);
    size_t msg_len = 0, i = 0;
    int msg_op = 0, rc = 0;
    FZ_CHECK(msg && pl);
    r->n = 0;
    while (i < len) {
        uint8_t b0, b1;
        int fin, op, masked, ctrl;
        uint64_t n;
        size_t at, avail;
        if (len - i < 2) break;
        b0 = data[i];
        b1 = data[i + 1];
        fin = b0 >> 7;
        op = b0 & 0xF;
        masked = b1 >> 7;
        ctrl = op >= 8;
        n = b1 & 0x7F;
        /* rules of the first two bytes */
        if (b0 & 0x70) { rc = 1002; break; }                       /* 5.2 RSV    */
        if (masked == is_client) { rc = 1002; break; }             /* 5.1, 5.3   */
        if (op != 0 && op != 1 && op != 2 && op != 8 && op != 9 && op != 10) { rc = 1002; break; }
        if (ctrl && (!fin || n > 125)) { rc = 1002; break; }       /* 5.5        */
        if (op == 0 && !msg_op) { rc = 1002; break; }              /* 5.4        */
        if ((op == 1 || op == 2) && msg_op) { rc = 1002; break; }
        /* the extended length and the masking key */
        at = i + 2 + (n == 126 ? 2 : n == 127 ? 8 : 0);
        if (at + (masked ? 4 : 0) > len) break;
        if (n == 126) {
            n = (uint64_t)data[i + 2] << 8 | data[i + 3];
            if (n < 126) { rc = 1002; break; }                      /* minimal   */
        } else if (n == 127) {
            n = 0;
            for (size_t k = 0; k < 8; k++) n = n << 8 | data[i + 2 + k];
            if ((n >> 63) || n <= 0xFFFF) { rc = 1002; break; }
        }
        if (!ctrl && n > (uint64_t)max_msg - (op == 0 ? msg_len : 0)) { rc = 1009; break; }
        if (!ctrl && op != 0) msg_len = 0;
        avail = len - at - (masked ? 4 : 0);
        if (avail > n) avail = (size_t)n;
        for (size_t k = 0; k < avail; k++)
            pl[k] = data[at + (masked ? 4 : 0) + k] ^ (masked ? data[at + (k & 3)] : 0);
        if (!ctrl) {
            int text = (op == 0 ? msg_op : op) == 1;
            memcpy(msg + msg_len, pl, avail);
            msg_len += avail;
            if (text && utf8_bad_prefix(msg, msg_len)) { rc = 1007; break; }
        }
        if (avail < n) break;                                       /* ends mid-frame */
        i = at + (masked ? 4 : 0) + (size_t)n;
        if (op == 9 || op == 10) {
            model_event(r, op == 9 ? PL_WS_PING : PL_WS_PONG, op, 0, pl, avail);
        } else if (op == 8) {
            int code = PL_WS_CLOSE_NO_STATUS;
            if (avail == 1) { rc = 1002; break; }                   /* 5.5.1      */
            if (avail >= 2) {
                code = pl[0] << 8 | pl[1];
                if (!close_code_sendable(code)) { rc = 1002; break; }   /* 7.4      */
                if (!fz_utf8_valid(pl + 2, avail - 2)) { rc = 1007; break; }
            }
            model_event(r, PL_WS_CLOSE, op, code, avail >= 2 ? pl + 2 : pl, avail >= 2 ? avail - 2 : 0);
        } else {
            int mop = op == 0 ? msg_op : op;
            if (!fin) {
                msg_op = mop;
                continue;
            }
            if (mop == 1 && !fz_utf8_valid(msg, msg_len)) { rc = 1007; break; }
            model_event(r, PL_WS_MESSAGE, mop, 0, msg, msg_len);
            msg_op = 0;
            msg_len = 0;
        }
    }
    free(msg);
    free(pl);
    return rc;
}

static void same_events(const rec *a, const rec *b, size_t n) {
    for (size_t i = 0; i < n; i++) {
        FZ_CHECK(a->evs[i].kind == b->evs[i].kind);
        FZ_CHECK(a->evs[i].opcode == b->evs[i].opcode);
        FZ_CHECK(a->evs[i].close_code == b->evs[i].close_code);
        FZ_CHECK(a->evs[i].len == b->evs[i].len);
        FZ_CHECK(a->evs[i].hash == b->evs[i].hash);
    }
}

static void check_utf8(const uint8_t *p, size_t n, const fz_split *sp) {
    int boundary;
    size_t bad = fz_utf8_scan(p, n, &boundary);
    pl_utf8 v;
    size_t i, k = 0;

    FZ_CHECK(pl_utf8_valid(p, n) == (bad == n && boundary));
    /* byte by byte: fails exactly at the first bad byte */
    pl_utf8_init(&v);
    for (i = 0; i < n; i++)
        if (pl_utf8_feed(&v, p + i, 1) < 0) break;
    FZ_CHECK(i == bad);
    if (bad == n) FZ_CHECK(pl_utf8_done(&v) == boundary);
    /* fuzzer-chosen chunks: fails in the chunk holding the first bad byte */
    pl_utf8_init(&v);
    for (i = 0; i < n;) {
        size_t c = fz_chunk(sp, k++);
        if (c > n - i) c = n - i;
        uint8_t *q = fz_dup(p + i, c);
        int r = pl_utf8_feed(&v, q, c);
        free(q);
        FZ_CHECK((r < 0) == (bad >= i && bad < i + c));
        if (r < 0) break;
        i += c;
    }
}

/* Invariant 6: what the encoders write, a reader of the other side reads. */
static void check_encoders(const uint8_t *data, size_t len, uint8_t flags) {
    static const uint8_t key[4] = { 0xa5, 0x00, 0x3c, 0xff };
    size_t plen = len > 300 ? 300 : len;
    int op = (flags & 0x40) && plen <= 125 ? PL_WS_OP_PING : PL_WS_OP_BINARY;
    int masked = flags & 1;            /* masked frames go to a server-side reader */
    uint8_t *f = malloc(14 + (plen > 125 ? plen : 125));
    size_t h;
    rec *r = calloc(1, sizeof *r);
    FZ_CHECK(f && r);

    h = pl_ws_header(f, op, plen, masked ? key : NULL);
    FZ_CHECK(h >= 2 && h <= 14);
    memcpy(f + h, data, plen);
    if (masked) {
        /* masking in two pieces at any offset equals masking at once */
        size_t cut = plen ? data[0] % (plen + 1) : 0;
        pl_ws_mask(f + h, cut, key, 0);
        pl_ws_mask(f + h + cut, plen - cut, key, cut);
        for (size_t i = 0; i < plen; i++) FZ_CHECK(f[h + i] == (data[i] ^ key[i & 3]));
    }
    FZ_CHECK(run(r, !masked, UINT32_MAX, f, h + plen, NULL, 1) == 0);
    FZ_CHECK(r->n == 1);
    FZ_CHECK(r->evs[0].kind == (op == PL_WS_OP_PING ? PL_WS_PING : PL_WS_MESSAGE));
    FZ_CHECK(r->evs[0].len == plen && r->evs[0].hash == fz_hash(data, plen));

    /* close payloads: a code and the input (to its first NUL) as reason */
    {
        uint8_t out[125];
        char *reason = calloc(1, plen + 1);
        int code = len >= 2 ? (data[0] << 8 | data[1]) : 1000;
        size_t rl, n;
        FZ_CHECK(reason);
        memcpy(reason, data, plen);
        rl = strlen(reason);
        n = pl_ws_close_payload(out, code, reason);
        if (code == PL_WS_CLOSE_NO_STATUS) {
            FZ_CHECK(n == 0);
        } else {
            FZ_CHECK(n >= 2 && n <= 125 && n - 2 <= rl);
            FZ_CHECK(((out[0] << 8) | out[1]) == (code & 0xFFFF));
            FZ_CHECK(memcmp(out + 2, reason, n - 2) == 0);
            if (rl <= 123) FZ_CHECK(n - 2 == rl);
            if (fz_utf8_valid((const uint8_t *)reason, rl)) {
                FZ_CHECK(fz_utf8_valid(out + 2, n - 2));
                if (close_code_sendable(code)) {
                    /* and a reader hands back the same code and reason */
                    h = pl_ws_header(f, PL_WS_OP_CLOSE, n, NULL);
                    memcpy(f + h, out, n);
                    FZ_CHECK(run(r, 1, 0, f, h + n, NULL, 1) == 0);
                    FZ_CHECK(r->n == 1 && r->evs[0].kind == PL_WS_CLOSE);
                    FZ_CHECK(r->evs[0].close_code == code && r->evs[0].len == n - 2);
                }
            }
        }
        free(reason);
    }

    /* the accept key: any 24 bytes */
    if (len >= 24) {
        char out[29];
        if (pl_ws_accept_key((const char *)data, 24, out) == 0) FZ_CHECK(strlen(out) == 28);
        else FZ_CHECK(out[0] == '\0');
    }
    free(r);
    free(f);
}

int LLVMFuzzerTestOneInput(const uint8_t *p, size_t n) {
    static rec whole, split, bytes, stop;
    fz_split sp;
    uint8_t flags;
    int is_client, rc_whole, rc;
    uint32_t max_msg;

    if (n < 1 || n > 65536) return 0;
    flags = p[0];
    if (fz_split_init(&sp, p + 1, n - 1) != 0) return 0;
    is_client = flags & 1;
    max_msg = max_msgs[(flags >> 1) & 7];

    rc_whole = run(&whole, is_client, max_msg, sp.data, sp.len, &sp, 1);

    rc = model(&split, is_client, whole.max_msg, sp.data, sp.len);
    FZ_CHECK(rc == rc_whole && split.n == whole.n);
    same_events(&whole, &split, whole.n);

    rc = run(&split, is_client, max_msg, sp.data, sp.len, &sp, 0);
    FZ_CHECK(rc == rc_whole && split.n == whole.n);
    same_events(&whole, &split, whole.n);

    if (sp.len <= 4096) {
        fz_split ones = { NULL, 0, sp.data, sp.len };
        rc = run(&bytes, is_client, max_msg, sp.data, sp.len, &ones, 0);
        FZ_CHECK(rc == rc_whole && bytes.n == whole.n);
        same_events(&whole, &bytes, whole.n);
    }

    stop.stop_at = (flags >> 4) & 3;
    if (stop.stop_at) {
        rc = run(&stop, is_client, max_msg, sp.data, sp.len, &sp, 0);
        if (whole.n >= stop.stop_at) {
            FZ_CHECK(rc == STOP_RC && stop.n == stop.stop_at);
        } else {
            FZ_CHECK(rc == rc_whole && stop.n == whole.n);
        }
        same_events(&whole, &stop, stop.n);
    }

    check_utf8(sp.data, sp.len, &sp);
    check_encoders(sp.data, sp.len, flags);
    return 0;
}
