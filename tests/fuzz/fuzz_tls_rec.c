/* fuzz_tls_rec.c — libFuzzer driver for Parley's TLS 1.3 record layer
 * (src/net/tls_rec.c) after the switch, without a handshake: a server-side
 * connection and a mirror "client" (the same layer, keys crossed) start
 * from fixed traffic secrets; the input is a script of client actions.
 *
 *   [suite] [chunk] then ops: [op] [len] [len bytes]
 *     op % 6 = 0  application data (len bytes)
 *              1  KeyUpdate, update_requested when op & 8
 *              2  a record of inner type bytes[0] holding bytes[1..]
 *              3  raw bytes on the wire
 *              4  flip bit bytes[1] % 8 of wire byte bytes[0]
 *              5  deliver: the wire to the server in `chunk`+1-byte
 *                 pieces, the server's output back to the client
 *
 * Invariants checked: no crash or leak anywhere; while the client sent only
 * well-formed records (ops 0, 1, 5), the server delivers exactly the
 * application data sent, in order, never fails, and everything it answers
 * (KeyUpdates) the client can open.
 */
#include "fuzz.h"
#include "net/tls_int.h"

static uint8_t expect[1 << 16], plain[65536];
static size_t exp_len, got_len;
static int exact;            /* only well-formed records so far */

static int to_server(void *arg, uint8_t *p, size_t n) {
    if (exact) {
        FZ_CHECK(got_len + n <= exp_len);
        FZ_CHECK(memcmp(expect + got_len, p, n) == 0);
    }
    got_len += n;
    return 0;
}

static int to_client(void *arg, uint8_t *p, size_t n) { return 0; }

static pl_tls_conn *conn(int suite, int server) {
    pl_tls_conn *t = calloc(1, sizeof *t);
    memset(t->rd.secret, server ? 0x11 : 0x22, sizeof t->rd.secret);
    memset(t->wr.secret, server ? 0x22 : 0x11, sizeof t->wr.secret);
    FZ_CHECK(pl_tls__rec_start(t, suite) == 0);
    return t;
}

static void conn_free(pl_tls_conn *t) {
    pl_tls__rec_release(t);
    free(t->out);
    free(t);
}

/* Delivers the client's output to the server, and the server's back.
 * Returns the server's last result. */
static int deliver(pl_tls_conn *c, pl_tls_conn *s, size_t chunk) {
    const uint8_t *o;
    size_t n = pl_tls_conn_out(c, &o);
    int rc = PL_TLS_OK;
    for (size_t off = 0; off < n && rc == PL_TLS_OK; off += chunk) {
        size_t k = n - off < chunk ? n - off : chunk;
        uint8_t *piece = fz_dup(o + off, k);
        rc = pl_tls__rec_feed(s, piece, k, plain, sizeof plain, to_server, NULL);
        free(piece);
    }
    pl_tls_conn_out_consume(c, n);
    if (exact) FZ_CHECK(rc == PL_TLS_OK);
    n = pl_tls_conn_out(s, &o);
    if (n) {
        uint8_t *back = fz_dup(o, n);
        int r = pl_tls__rec_feed(c, back, n, plain, sizeof plain, to_client, NULL);
        free(back);
        if (exact) FZ_CHECK(r == PL_TLS_OK);
        pl_tls_conn_out_consume(s, n);
    }
    return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 2) return 0;
    int suite = data[0] % 3 + 1;
    size_t chunk = (size_t)data[1] + 1, i = 2;
    pl_tls_conn *s = conn(suite, 1), *c = conn(suite, 0);
    int rc = PL_TLS_OK;
    exp_len = got_len = 0;
    exact = 1;
    while (i < size && rc == PL_TLS_OK) {
        uint8_t op = data[i++];
        size_t len = i < size ? data[i++] : 0;
        if (len > size - i) len = size - i;
        const uint8_t *p = data + i;
        i += len;
        switch (op % 6) {
        case 0:
            if (len && pl_tls__rec_write(c, p, len) == (long)len && exp_len + len <= sizeof expect) {
                memcpy(expect + exp_len, p, len);
                exp_len += len;
            } else if (len) {
                exact = 0;
            }
            break;
        case 1:
            pl_tls__rec_key_update(c, op & 8);
            break;
        case 2:
            if (len) pl_tls__rec_seal(c, p[0], p + 1, len - 1);
            exact = 0;
            break;
        case 3:
            memcpy(pl_tls__out_reserve(c, len), p, len);
            c->out_len += len;
            exact = 0;
            break;
        case 4:
            if (len >= 2 && c->out_len > c->out_off) {
                c->out[c->out_off + p[0] % (c->out_len - c->out_off)] ^= (uint8_t)(1u << (p[1] % 8));
                exact = 0;
            }
            break;
        default:
            rc = deliver(c, s, chunk);
        }
    }
    if (rc == PL_TLS_OK) rc = deliver(c, s, chunk);
    if (exact) FZ_CHECK(rc == PL_TLS_OK && got_len == exp_len);
    FZ_CHECK(s->pend == NULL || rc == PL_TLS_OK);
    conn_free(s);
    conn_free(c);
    return 0;
}
