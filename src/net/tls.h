/* tls.h — TLS on parleyd's listening port (OpenSSL), with no I/O of its own.
 *
 * Owns: the server context (certificate chain, key, protocol floor, ALPN,
 * session tickets) and its reload; per-connection TLS state (an SSL object
 * and its in-memory BIO); turning ciphertext into plaintext and back.
 * Does not own: sockets (net/conn.c moves the bytes: it feeds what it read
 * to pl_tls_conn_feed and writes what pl_tls_conn_out holds), or what the
 * plaintext means (http/, ws/).
 *
 * The BIO under each SSL is Parley's own in-memory BIO rather than
 * BIO_s_mem: it reads the ciphertext straight from the caller's read buffer
 * during pl_tls_conn_feed (no copy, nothing kept afterwards: whatever
 * OpenSSL has not decrypted yet sits in its own record buffer), and it
 * appends output to a buffer that exists only while ciphertext is waiting
 * for the socket. A BIO_s_mem keeps its largest buffer for the connection's
 * lifetime, which an idle connection cannot afford (docs/design.md "TLS").
 * With SSL_MODE_RELEASE_BUFFERS OpenSSL frees its record buffers when they
 * are empty.
 *
 * After a TLS 1.3 handshake the connection leaves OpenSSL: tls.c captures
 * the application traffic secrets and record counts during the handshake,
 * hands them to Parley's own record layer (tls_rec.c) and frees the SSL
 * object (~12-15 KB), so an idle TLS 1.3 connection holds only this struct
 * (~300 bytes: keys, secrets, sequence numbers). TLS 1.2 connections, and
 * every connection with pl_tls_opts.openssl_records, stay on OpenSSL.
 *
 * Per-connection states (pl_tls_conn):
 *
 *   HANDSHAKE --Finished received (inside feed)--> READY --shutdown--> SHUT
 *       |                                          |  |
 *       |          TLS 1.3, tickets written,       |  `--(try_switch, in feed)--> SWITCHED
 *       |          no input held by OpenSSL        |       (tls_rec.c; SSL freed;
 *       |                                          |        same API, same states)
 *       `--- bad record, plain HTTP, alert --------+--> feed returns an
 *                                                       error: the caller
 *                                                       writes the output
 *                                                       (an alert) and closes
 *
 * Invariants:
 *   1. pl_tls_conn_feed consumes all of its input: when it returns, every
 *      byte was decrypted, is held in OpenSSL's record buffer, or was
 *      refused with an error (or deliver asked to stop: the connection is
 *      closing and the rest does not matter). It does not call SSL_read once
 *      the input is used up, so an idle connection keeps no record buffer.
 *   2. The BIO never refuses output (no SSL_ERROR_WANT_WRITE): callers bound
 *      the output by how much plaintext they hand to pl_tls_conn_write.
 *   3. Plaintext is accepted by pl_tls_conn_write only in READY.
 *
 * Reload (SIGHUP): pl_tls_reload builds a new SSL_CTX from the same files;
 * new connections use it, existing ones keep a reference to the context
 * they started with (OpenSSL counts it) and stay up. A context that fails to
 * load (unreadable file, key not matching the certificate) is not installed:
 * the old one stays and the error is returned.
 *
 * Session resumption: stateless tickets (no server-side session cache, so
 * nothing grows with the number of clients), one ticket per handshake. The
 * ticket keys are derived from a 32-byte secret and the 12-hour period:
 * the store's shared secret in cluster mode (every node resumes every
 * node's sessions), otherwise random per process. A ticket resumes during
 * its period and the next; keys survive reloads and need no state to
 * rotate.
 */
#ifndef PL_TLS_H
#define PL_TLS_H

#include <stddef.h>
#include <stdint.h>

typedef struct pl_tls pl_tls;
typedef struct pl_tls_conn pl_tls_conn;

typedef struct pl_tls_opts {
    const char    *cert_file;     /* PEM: the certificate, then its chain (borrowed, copied) */
    const char    *key_file;      /* PEM private key (borrowed, copied)                     */
    int            min_version;   /* 12 (TLS 1.2) or 13 (TLS 1.3, the default)             */
    const uint8_t *ticket_secret; /* 32 bytes, or NULL: random (borrowed)                   */
    int            openssl_records; /* 1: TLS 1.3 connections keep OpenSSL's record layer
                                       (no switch to tls_rec.c; ~15 KB more per connection) */
} pl_tls_opts;

/* Return codes of pl_tls_conn_feed. */
enum { PL_TLS_OK = 0, PL_TLS_EOF = -1, PL_TLS_EPROTO = -2 };

/* Loads the certificate and key. 0, or -1 with a reason in err. */
int  pl_tls_new(const pl_tls_opts *o, pl_tls **out, char *err, size_t errlen);
/* Reads the certificate and key files again (SIGHUP). 0: new connections
 * get them; -1 (reason in err): the previous ones stay. */
int  pl_tls_reload(pl_tls *t, char *err, size_t errlen);
/* Frees t (connections still open keep their context); NULLs *t. */
void pl_tls_free(pl_tls **t);
/* The serving certificate's subject and serial, for logs (JSON-safe) and tests. */
void pl_tls_describe(pl_tls *t, char *out, size_t outlen);

/* Per-connection state in the HANDSHAKE state (server side). */
pl_tls_conn *pl_tls_conn_new(pl_tls *t);
void pl_tls_conn_free(pl_tls_conn **tc);

/* Receives plaintext from pl_tls_conn_feed; p is valid during the call.
 * Returns nonzero to stop (the connection is closing). */
typedef int (*pl_tls_deliver)(void *arg, uint8_t *p, size_t n);

/* Decrypts in[0..n) (borrowed; all of it is consumed, invariant 1), calling
 * deliver with plaintext gathered in buf[0..cap) (the caller's scratch, not
 * overlapping in, cap >= 17 KiB: a whole record is opened into it). Handshake messages, tickets and alerts to send are
 * appended to the output (pl_tls_conn_out). Returns PL_TLS_OK,
 * PL_TLS_EOF (the peer sent close_notify) or PL_TLS_EPROTO (handshake or
 * record failure; reason in pl_tls_error()). */
int  pl_tls_conn_feed(pl_tls_conn *tc, const uint8_t *in, size_t n, uint8_t *buf, size_t cap,
                      pl_tls_deliver deliver, void *arg);
/* 1 once the handshake completed. */
int  pl_tls_conn_ready(const pl_tls_conn *tc);
/* 1 once Parley's record layer took over from OpenSSL (TLS 1.3). */
int  pl_tls_conn_switched(const pl_tls_conn *tc);
/* Encrypts up to n bytes of p into the output. Returns the bytes taken (>
 * 0), 0 when not READY or after close_notify, or -1 on a fatal error. After
 * a record-layer failure (a fatal alert is queued) plaintext is taken and
 * dropped, so the caller's queue drains and the alert goes out. */
long pl_tls_conn_write(pl_tls_conn *tc, const void *p, size_t n);
/* Queues close_notify once (READY only; no-op otherwise). */
void pl_tls_conn_shutdown(pl_tls_conn *tc);
/* 1 once close_notify is queued, or when none is due (handshake unfinished). */
int  pl_tls_conn_notified(const pl_tls_conn *tc);

/* Ciphertext waiting to be sent: sets *p, returns its length (0: none). */
size_t pl_tls_conn_out(pl_tls_conn *tc, const uint8_t **p);
/* The first n bytes of the output were sent; an emptied buffer is freed. */
void pl_tls_conn_out_consume(pl_tls_conn *tc, size_t n);

/* The negotiated protocol version ("TLSv1.3"). */
const char *pl_tls_conn_version(const pl_tls_conn *tc);
/* 1 if the handshake resumed a session (ticket). */
int  pl_tls_conn_resumed(const pl_tls_conn *tc);

/* The reason of the last PL_TLS_EPROTO or load failure (static storage). */
const char *pl_tls_error(void);

/* Seconds since the epoch for the ticket periods; tests replace it. */
extern int64_t (*pl_tls__clock)(void);

#endif
