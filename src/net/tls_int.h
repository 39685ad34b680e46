/* tls_int.h — private to net/tls.c and net/tls_rec.c: the per-connection
 * TLS state, shared by the OpenSSL phase (tls.c: handshake, and TLS 1.2
 * for its whole life) and Parley's own TLS 1.3 record layer (tls_rec.c),
 * which takes the connection over after the handshake and frees the SSL.
 * Unit tests (tests/unit/test_tls.c) and the fuzzer (tests/fuzz/
 * fuzz_tls_rec.c) include it to look at the switch and to play the client;
 * nothing else may.
 */
#ifndef PL_TLS_INT_H
#define PL_TLS_INT_H

#include <openssl/ssl.h>
#include <stddef.h>
#include <stdint.h>

#include "tls.h"

#define PL_TLS_SECRET_MAX 48      /* SHA-384 */

/* One direction's traffic keys (RFC 8446 7.1, 7.3). */
typedef struct pl_tls_keys {
    uint8_t  secret[PL_TLS_SECRET_MAX]; /* application traffic secret N (KeyUpdate) */
    uint8_t  key[32];                   /* AEAD key (16 or 32 bytes used)           */
    uint8_t  iv[12];                    /* write IV: the nonce is iv XOR seq        */
    uint64_t seq;                       /* records protected with this key so far   */
} pl_tls_keys;

/* Suites the record layer speaks (the context allows exactly these). */
enum { PL_TLS_SUITE_NONE = 0, PL_TLS_SUITE_AES128 = 1, PL_TLS_SUITE_AES256 = 2,
       PL_TLS_SUITE_CHACHA = 3 };

/* Bits of pl_tls_conn.cap: what the OpenSSL phase captured for the switch. */
enum {
    CAP_CLIENT_SECRET = 1,     /* CLIENT_TRAFFIC_SECRET_0 logged (rd.secret)      */
    CAP_SERVER_SECRET = 2,     /* SERVER_TRAFFIC_SECRET_0 logged (wr.secret)      */
    CAP_READ_APP      = 4,     /* the client's Finished was read: rd.seq counts   */
    CAP_WRITE_APP     = 8,     /* our Finished was written: wr.seq counts         */
    CAP_NO_SWITCH     = 16,    /* a KeyUpdate went through OpenSSL: keys unknown  */
};

struct pl_tls_conn {
    SSL           *ssl;       /* NULL once the record layer took over (switched) */
    const uint8_t *in;        /* ciphertext being fed (borrowed, only in feed) */
    size_t         in_len;
    uint8_t       *out;       /* ciphertext to send; NULL while none        */
    size_t         out_off;   /* bytes of out already sent                  */
    size_t         out_len;   /* bytes of out filled                        */
    size_t         out_cap;
    uint8_t        shut;      /* close_notify (or a fatal alert) queued     */
    uint8_t        cap;       /* CAP_* bits, OpenSSL phase only             */
    uint8_t        suite;     /* PL_TLS_SUITE_*, once switched              */
    uint8_t        failed;    /* record layer: a fatal error; input and plaintext are dropped */
    uint8_t        ku_due;    /* record layer: the peer asked for our KeyUpdate */
    uint8_t        resumed;   /* the handshake resumed a session (kept past SSL_free) */
    uint16_t       pend_len;  /* bytes in pend                              */
    uint8_t       *pend;      /* a partial record, allocated only while one is pending */
    pl_tls_keys    rd, wr;    /* rd: the client's keys, wr: ours            */
};

/* tls.c: the reason of the last failure (pl_tls_error). */
extern char pl_tls__last_error[256];

/* tls.c: makes room for n more output bytes; returns where to write them
 * (the caller then adds what it wrote to out_len). */
uint8_t *pl_tls__out_reserve(pl_tls_conn *tc, size_t n);

/* tls_rec.c: the record layer (after pl_tls__rec_start succeeded). Same
 * contracts as pl_tls_conn_feed / _write / _shutdown in tls.h. */
int  pl_tls__rec_start(pl_tls_conn *tc, int suite);   /* 0, or -1: stay on OpenSSL */
int  pl_tls__rec_feed(pl_tls_conn *tc, const uint8_t *in, size_t n, uint8_t *buf, size_t cap,
                      pl_tls_deliver deliver, void *arg);
long pl_tls__rec_write(pl_tls_conn *tc, const void *p, size_t n);
void pl_tls__rec_shutdown(pl_tls_conn *tc);
void pl_tls__rec_release(pl_tls_conn *tc);            /* frees pend, wipes keys */
/* Sends KeyUpdate (request: update_requested) and moves to the next write
 * key; 0 or -1. */
int  pl_tls__rec_key_update(pl_tls_conn *tc, int request);
/* Appends one record of inner type `type` with p[0..n) (n <= 2^14) sealed
 * under our write key; 0 or -1 (sequence number exhausted). Tests and the
 * fuzzer also use it to play the client. */
int  pl_tls__rec_seal(pl_tls_conn *tc, uint8_t type, const uint8_t *p, size_t n);

/* Our write key is updated after this many records (RFC 8446 5.5: AES-GCM
 * keys must not protect more than 2^24.5 full records). Tests lower it. */
extern uint64_t pl_tls__rekey_after;

#endif
