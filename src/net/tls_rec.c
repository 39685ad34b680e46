/* tls_rec.c — Parley's own TLS 1.3 record layer (RFC 8446 5.2-5.5, 4.6.3,
 * 7.1-7.3), used after OpenSSL finished a TLS 1.3 handshake so the SSL
 * object (~12-15 KB) can be freed ("kTLS in user space", design.md "TLS").
 *
 * Owns: record framing, AEAD protection with the traffic keys OpenSSL
 * derived (captured by tls.c), sequence numbers, KeyUpdate both ways,
 * alerts (close_notify in and out, fatal alerts out). Does not own: the
 * handshake, certificates, tickets, or TLS 1.2 (all OpenSSL's, tls.c), nor
 * sockets (conn.c moves the output that tls.c's buffer holds).
 *
 * States once switched:
 *
 *   OPEN --peer close_notify--> feed returns PL_TLS_EOF (caller closes)
 *     |---pl_tls__rec_shutdown--> SHUT (close_notify queued; writes refused)
 *     `---bad record / peer alert / unexpected message--> FAILED (a fatal
 *         alert queued when it is ours; shut set; input and plaintext dropped)
 *
 * Invariants:
 *   1. Plaintext reaches deliver only from a record whose tag verified; a
 *      record that fails is wiped from the caller's buffer.
 *   2. rd.seq / wr.seq count every record protected with the current key,
 *      including those OpenSSL handled before the switch (tls.c counts
 *      them from its message callback), so nonces match the peer's.
 *   3. An idle connection holds no buffer: pend exists only while a partial
 *      record is waiting for the rest, and is freed when it completes.
 *   4. Everything is bounded: a record is at most 2^14+256 bytes of
 *      ciphertext and 2^14 of content; a sequence number never wraps (the
 *      connection fails first); our key is updated every
 *      pl_tls__rekey_after records; one KeyUpdate answer per feed however
 *      many the peer requests.
 *
 * Cipher contexts: one EVP_CIPHER_CTX per suite and direction for the
 * process (the event loop is one thread, like conn.c's buffers), keyed per
 * record: a context per connection would cost ~1 KB each, which is what the
 * switch is there to save. Re-keying is cheap: a 100-byte record is sealed
 * in 0.66 us with it (AES-128-GCM), 1.18 us through OpenSSL's record layer
 * (docs/benchmarks.md).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>

#include "../core/alloc.h"
#include "tls_int.h"

#define REC_HDR         5
#define REC_TAG         16
#define MAX_CONTENT     16384                  /* 2^14 */
#define MAX_CIPHERTEXT  (MAX_CONTENT + 256)    /* RFC 8446 5.2 */
#define CT_APPLICATION  23
#define CT_ALERT        21
#define CT_HANDSHAKE    22
#define CT_CCS          20
#define HS_KEY_UPDATE   24
#define OUT_CONTROL_MAX (1u << 20)             /* control records waiting: the peer does not read */

/* alert descriptions (RFC 8446 6) */
enum { AL_CLOSE_NOTIFY = 0, AL_UNEXPECTED = 10, AL_BAD_MAC = 20, AL_OVERFLOW = 22,
       AL_DECODE = 50, AL_PROTOCOL_VERSION = 70, AL_ILLEGAL = 47, AL_INTERNAL = 80 };

uint64_t pl_tls__rekey_after = 1ull << 24;

typedef struct suite_info {
    const char *cipher;     /* OpenSSL name      */
    const char *digest;     /* HKDF hash         */
    size_t      key_len;
    size_t      hash_len;
} suite_info;

static const suite_info suites[] = {
    [PL_TLS_SUITE_AES128] = {"AES-128-GCM", "SHA256", 16, 32},
    [PL_TLS_SUITE_AES256] = {"AES-256-GCM", "SHA384", 32, 48},
    [PL_TLS_SUITE_CHACHA] = {"ChaCha20-Poly1305", "SHA256", 32, 32},
};

static EVP_CIPHER_CTX *cctx[4][2];   /* [suite][1 = seal, 0 = open], made once */
static EVP_KDF *hkdf;

/* The shared context of suite s for sealing (enc 1) or opening (0). */
static EVP_CIPHER_CTX *cipher_ctx(int s, int enc) {
    if (cctx[s][enc]) return cctx[s][enc];
    EVP_CIPHER *c = EVP_CIPHER_fetch(NULL, suites[s].cipher, NULL);
    EVP_CIPHER_CTX *x = c ? EVP_CIPHER_CTX_new() : NULL;
    if (!x || !EVP_CipherInit_ex(x, c, NULL, NULL, NULL, enc)) abort();
    EVP_CIPHER_free(c);                           /* the context keeps its reference */
    return cctx[s][enc] = x;
}

/* HKDF-Expand-Label(secret, label, "", out_len) (RFC 8446 7.1), with
 * OpenSSL's HKDF in expand-only mode. 0 or -1. */
static int expand_label(int s, const uint8_t *secret, const char *label, uint8_t *out, size_t out_len) {
    uint8_t info[2 + 1 + 6 + 32 + 1];
    size_t ll = strlen(label), n = 0;
    if (ll > 32) return -1;
    info[n++] = (uint8_t)(out_len >> 8);
    info[n++] = (uint8_t)out_len;
    info[n++] = (uint8_t)(6 + ll);
    memcpy(info + n, "tls13 ", 6), n += 6;
    memcpy(info + n, label, ll), n += ll;
    info[n++] = 0;                                /* empty context */
    if (!hkdf && !(hkdf = EVP_KDF_fetch(NULL, OSSL_KDF_NAME_HKDF, NULL))) return -1;
    EVP_KDF_CTX *k = EVP_KDF_CTX_new(hkdf);
    if (!k) return -1;
    int mode = EVP_KDF_HKDF_MODE_EXPAND_ONLY;
    OSSL_PARAM p[] = {
        OSSL_PARAM_construct_int(OSSL_KDF_PARAM_MODE, &mode),
        OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, (char *)suites[s].digest, 0),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *)secret, suites[s].hash_len),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, info, n),
        OSSL_PARAM_construct_end()};
    int ok = EVP_KDF_derive(k, out, out_len, p) == 1;
    EVP_KDF_CTX_free(k);
    return ok ? 0 : -1;
}

/* key and iv from k->secret; seq restarts. */
static int derive_keys(int s, pl_tls_keys *k) {
    k->seq = 0;
    return expand_label(s, k->secret, "key", k->key, suites[s].key_len) ||
           expand_label(s, k->secret, "iv", k->iv, 12) ? -1 : 0;
}

/* application_traffic_secret_N+1 (RFC 8446 7.2), then its key and iv. */
static int next_secret(int s, pl_tls_keys *k) {
    uint8_t next[PL_TLS_SECRET_MAX];
    if (expand_label(s, k->secret, "traffic upd", next, suites[s].hash_len)) return -1;
    memcpy(k->secret, next, suites[s].hash_len);
    OPENSSL_cleanse(next, sizeof next);
    return derive_keys(s, k);
}

static void make_nonce(const pl_tls_keys *k, uint8_t nonce[12]) {
    memcpy(nonce, k->iv, 12);
    for (int i = 0; i < 8; i++) nonce[4 + i] ^= (uint8_t)(k->seq >> (56 - 8 * i));
}

int pl_tls__rec_start(pl_tls_conn *tc, int suite) {
    if (suite < PL_TLS_SUITE_AES128 || suite > PL_TLS_SUITE_CHACHA) return -1;
    uint64_t rseq = tc->rd.seq, wseq = tc->wr.seq;    /* counted during the OpenSSL phase */
    if (derive_keys(suite, &tc->rd) || derive_keys(suite, &tc->wr)) return -1;
    cipher_ctx(suite, 0);
    cipher_ctx(suite, 1);
    tc->rd.seq = rseq;
    tc->wr.seq = wseq;
    tc->suite = (uint8_t)suite;
    return 0;
}

void pl_tls__rec_release(pl_tls_conn *tc) {
    free(tc->pend);
    tc->pend = NULL;
    tc->pend_len = 0;
    OPENSSL_cleanse(&tc->rd, sizeof tc->rd);
    OPENSSL_cleanse(&tc->wr, sizeof tc->wr);
}

/* ---- sealing -------------------------------------------------------------------- */

/* Appends one record: p[0..n) (n <= 2^14) of inner type `type`, sealed with
 * our key. 0 or -1 (the sequence number would wrap, or a cipher failure). */
int pl_tls__rec_seal(pl_tls_conn *tc, uint8_t type, const uint8_t *p, size_t n) {
    if (tc->wr.seq == UINT64_MAX) return -1;
    size_t len = n + 1 + REC_TAG;
    uint8_t *r = pl_tls__out_reserve(tc, REC_HDR + len);
    r[0] = CT_APPLICATION;
    r[1] = 3;
    r[2] = 3;
    r[3] = (uint8_t)(len >> 8);
    r[4] = (uint8_t)len;
    memcpy(r + REC_HDR, p, n);
    r[REC_HDR + n] = type;
    uint8_t nonce[12];
    make_nonce(&tc->wr, nonce);
    EVP_CIPHER_CTX *x = cipher_ctx(tc->suite, 1);
    int l1, l2;
    if (!EVP_CipherInit_ex(x, NULL, NULL, tc->wr.key, nonce, 1) ||
        !EVP_CipherUpdate(x, NULL, &l1, r, REC_HDR) ||
        !EVP_CipherUpdate(x, r + REC_HDR, &l1, r + REC_HDR, (int)(n + 1)) ||
        !EVP_CipherFinal_ex(x, r + REC_HDR + l1, &l2) ||
        !EVP_CIPHER_CTX_ctrl(x, EVP_CTRL_AEAD_GET_TAG, REC_TAG, r + REC_HDR + n + 1))
        return -1;
    tc->out_len += REC_HDR + len;
    tc->wr.seq++;
    return 0;
}

int pl_tls__rec_key_update(pl_tls_conn *tc, int request) {
    const uint8_t ku[] = {HS_KEY_UPDATE, 0, 0, 1, request ? 1 : 0};
    return pl_tls__rec_seal(tc, CT_HANDSHAKE, ku, sizeof ku) || next_secret(tc->suite, &tc->wr) ? -1 : 0;
}

/* A fatal alert of ours (RFC 8446 6.2); the connection is done. */
static void fail(pl_tls_conn *tc, uint8_t desc) {
    if (!tc->shut && !tc->failed) {
        uint8_t a[2] = {2, desc};
        pl_tls__rec_seal(tc, CT_ALERT, a, 2);
    }
    tc->failed = tc->shut = 1;
}

long pl_tls__rec_write(pl_tls_conn *tc, const void *p, size_t n) {
    if (tc->failed) return (long)n;      /* closing after an error: plaintext is dropped */
    if (tc->shut || n == 0) return 0;
    const uint8_t *s = p;
    for (size_t off = 0; off < n;) {
        size_t k = n - off < MAX_CONTENT ? n - off : MAX_CONTENT;
        if (pl_tls__rec_seal(tc, CT_APPLICATION, s + off, k)) {
            tc->failed = tc->shut = 1;
            return -1;
        }
        off += k;
        if (tc->wr.seq >= pl_tls__rekey_after && pl_tls__rec_key_update(tc, 0)) {
            tc->failed = tc->shut = 1;
            return -1;
        }
    }
    return (long)n;
}

void pl_tls__rec_shutdown(pl_tls_conn *tc) {
    if (tc->shut) return;
    static const uint8_t cn[2] = {1, AL_CLOSE_NOTIFY};
    pl_tls__rec_seal(tc, CT_ALERT, cn, 2);            /* a wrapped seq: no close_notify, the FIN follows */
    tc->shut = 1;
}

/* ---- opening -------------------------------------------------------------------- */

/* Checks a record header: the record's total length, or 0 after failing
 * the connection (reason in *why). */
static size_t check_header(pl_tls_conn *tc, const uint8_t *h, const char **why) {
    size_t len = (size_t)h[3] << 8 | h[4];
    uint8_t al = AL_UNEXPECTED;
    if (h[0] == CT_CCS) {
        *why = "change_cipher_spec after the handshake";
    } else if (h[0] != CT_APPLICATION) {
        *why = "unprotected record after the handshake";
    } else if (h[1] != 3 || h[2] != 3) {
        *why = "bad record version";
        al = AL_PROTOCOL_VERSION;
    } else if (len > MAX_CIPHERTEXT) {
        *why = "record too long";
        al = AL_OVERFLOW;
    } else if (len < REC_TAG + 1) {
        *why = "record too short";
        al = AL_DECODE;
    } else {
        return REC_HDR + len;
    }
    fail(tc, al);
    return 0;
}

enum { REC_DATA = 0, REC_CONTROL = 1, REC_EOF = 2, REC_ERROR = 3 };

/* Handles a post-handshake handshake message (only KeyUpdate is allowed:
 * the server does not ask for client certificates, and a client sends no
 * tickets). The message must fill the record (a key change ends a record,
 * RFC 8446 5.1). */
static int on_handshake(pl_tls_conn *tc, const uint8_t *m, size_t n, const char **why) {
    if (n < 4 || m[0] != HS_KEY_UPDATE) {
        *why = "unexpected handshake message after the handshake";
        fail(tc, AL_UNEXPECTED);
        return REC_ERROR;
    }
    size_t body = (size_t)m[1] << 16 | (size_t)m[2] << 8 | m[3];
    if (body != 1 || n != 5) {
        *why = "bad KeyUpdate";
        fail(tc, n < 4 + body ? AL_UNEXPECTED : AL_DECODE);
        return REC_ERROR;
    }
    if (m[4] > 1) {
        *why = "bad KeyUpdate";
        fail(tc, AL_ILLEGAL);
        return REC_ERROR;
    }
    if (next_secret(tc->suite, &tc->rd)) {
        *why = "key update failed";
        fail(tc, AL_INTERNAL);
        return REC_ERROR;
    }
    if (m[4] == 1) tc->ku_due = 1;
    return REC_CONTROL;
}

/* Opens the record r[0..total) into out (room for total - 21 bytes); on
 * REC_DATA *plen is the application data left at out. */
static int open_record(pl_tls_conn *tc, const uint8_t *r, size_t total, uint8_t *out, size_t *plen,
                       const char **why) {
    size_t ct = total - REC_HDR - REC_TAG;
    if (ct > MAX_CONTENT + 1) {                      /* padding included (RFC 8446 5.4) */
        *why = "record too long";
        fail(tc, AL_OVERFLOW);
        return REC_ERROR;
    }
    if (tc->rd.seq == UINT64_MAX) {
        *why = "sequence number exhausted";
        fail(tc, AL_INTERNAL);
        return REC_ERROR;
    }
    uint8_t nonce[12];
    make_nonce(&tc->rd, nonce);
    EVP_CIPHER_CTX *x = cipher_ctx(tc->suite, 0);
    int l1 = 0, l2 = 0;
    int ok = EVP_CipherInit_ex(x, NULL, NULL, tc->rd.key, nonce, 0) &&
             EVP_CipherUpdate(x, NULL, &l1, r, REC_HDR) &&
             EVP_CipherUpdate(x, out, &l1, r + REC_HDR, (int)ct) &&
             EVP_CIPHER_CTX_ctrl(x, EVP_CTRL_AEAD_SET_TAG, REC_TAG, (void *)(r + REC_HDR + ct)) &&
             EVP_CipherFinal_ex(x, out + l1, &l2) == 1;
    if (!ok) {
        OPENSSL_cleanse(out, ct);                    /* invariant 1 */
        *why = "bad record MAC";
        fail(tc, AL_BAD_MAC);
        return REC_ERROR;
    }
    tc->rd.seq++;
    size_t n = ct;
    while (n > 0 && out[n - 1] == 0) n--;            /* padding (RFC 8446 5.4) */
    if (n == 0) {
        *why = "record without a content type";
        fail(tc, AL_UNEXPECTED);
        return REC_ERROR;
    }
    uint8_t type = out[--n];
    if (n > MAX_CONTENT) {
        OPENSSL_cleanse(out, ct);
        *why = "record content too long";
        fail(tc, AL_OVERFLOW);
        return REC_ERROR;
    }
    switch (type) {
    case CT_APPLICATION:
        *plen = n;
        return REC_DATA;
    case CT_ALERT:
        if (n == 2 && out[1] == AL_CLOSE_NOTIFY) return REC_EOF;
        if (n == 2) {
            static char alert_why[32];                /* the loop is one thread */
            snprintf(alert_why, sizeof alert_why, "peer sent alert %u", out[1]);
            *why = alert_why;
        } else {
            *why = "bad alert";
            fail(tc, AL_DECODE);
        }
        tc->failed = tc->shut = 1;                   /* no answer to a fatal alert */
        return REC_ERROR;
    case CT_HANDSHAKE:
        return on_handshake(tc, out, n, why);
    default:
        *why = "unexpected record type after the handshake";
        fail(tc, AL_UNEXPECTED);
        return REC_ERROR;
    }
}

/* Feed state shared by the helpers below. */
typedef struct feed_ctx {
    uint8_t       *buf;
    size_t         cap, have;      /* plaintext gathered in buf */
    pl_tls_deliver deliver;
    void          *arg;
    int            stop;           /* deliver asked to stop     */
    const char    *why;
} feed_ctx;

/* One complete record: opened into the caller's buffer after the
 * plaintext gathered so far (delivered first when there is no room). */
static int one_record(pl_tls_conn *tc, feed_ctx *f, const uint8_t *r, size_t total) {
    size_t room = total - REC_HDR - REC_TAG, n = 0;
    if (f->cap - f->have < room && f->have) {
        f->stop = f->deliver(f->arg, f->buf, f->have);
        f->have = 0;
        if (f->stop) return REC_DATA;
    }
    int k = open_record(tc, r, total, f->buf + f->have, &n, &f->why);
    if (k == REC_DATA) f->have += n;
    return k;
}

int pl_tls__rec_feed(pl_tls_conn *tc, const uint8_t *in, size_t n, uint8_t *buf, size_t cap,
                     pl_tls_deliver deliver, void *arg) {
    feed_ctx f = {buf, cap, 0, deliver, arg, 0, NULL};
    int k = REC_DATA;
    if (tc->failed) return PL_TLS_EPROTO;
    if (cap < MAX_CIPHERTEXT) abort();               /* the caller's buffer holds a record */
    /* first complete the pending partial record */
    while (tc->pend && n > 0 && k != REC_ERROR) {
        size_t want = REC_HDR, total = 0;           /* total: known once the header is in */
        if (tc->pend_len >= REC_HDR) total = want = REC_HDR + ((size_t)tc->pend[3] << 8 | tc->pend[4]);
        size_t take = want - tc->pend_len < n ? want - tc->pend_len : n;
        memcpy(tc->pend + tc->pend_len, in, take);
        tc->pend_len += (uint16_t)take;
        in += take;
        n -= take;
        if (tc->pend_len < want) break;              /* n is 0 */
        if (!total) {                                /* the header just completed */
            total = check_header(tc, tc->pend, &f.why);
            if (!total) { k = REC_ERROR; break; }
            tc->pend = pl_realloc(tc->pend, total);
            continue;
        }
        k = one_record(tc, &f, tc->pend, total);
        free(tc->pend);
        tc->pend = NULL;
        tc->pend_len = 0;
    }
    while (!tc->pend && k != REC_ERROR && k != REC_EOF && !f.stop && n > 0) {
        size_t total = REC_HDR;
        if (n >= REC_HDR && !(total = check_header(tc, in, &f.why))) {
            k = REC_ERROR;
            break;
        }
        if (n < total) {                             /* a partial record: keep it */
            tc->pend = pl_malloc(total);
            memcpy(tc->pend, in, n);
            tc->pend_len = (uint16_t)n;
            break;
        }
        k = one_record(tc, &f, in, total);
        in += total;
        n -= total;
    }
    if (f.have && !f.stop) f.stop = deliver(arg, buf, f.have);
    if (k == REC_ERROR) {
        snprintf(pl_tls__last_error, sizeof pl_tls__last_error, "TLS record failure: %s", f.why);
        free(tc->pend);
        tc->pend = NULL;
        tc->pend_len = 0;
        return PL_TLS_EPROTO;
    }
    if (tc->ku_due && !tc->shut) {
        tc->ku_due = 0;
        if (tc->out_len - tc->out_off > OUT_CONTROL_MAX || pl_tls__rec_key_update(tc, 0)) {
            snprintf(pl_tls__last_error, sizeof pl_tls__last_error, "TLS record failure: %s",
                     "KeyUpdate answers not read");
            tc->failed = tc->shut = 1;
            return PL_TLS_EPROTO;
        }
    }
    return k == REC_EOF ? PL_TLS_EOF : PL_TLS_OK;
}
