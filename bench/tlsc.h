/* tlsc.h — parley-bench's TLS client (--tls): OpenSSL over the bench's own
 * sockets, for measuring a parleyd that serves wss/https itself.
 *
 * Owns: one client SSL_CTX (TLS 1.2 or later, no certificate verification:
 * the bench talks to a server on loopback it started or was pointed at) and
 * the mapping of SSL_read/SSL_write onto recv(2)/send(2) conventions. Does
 * not own: sockets, epoll interest, or what the bytes mean (setup.c,
 * worker.c).
 */
#ifndef PB_TLSC_H
#define PB_TLSC_H

#include <stddef.h>
#include <sys/types.h>

typedef struct ssl_st pb_ssl;

/* Turns TLS on for every connection the bench opens; 0 or -1. */
int  pb_tls_init(void);
/* 1 after pb_tls_init. */
int  pb_tls_on(void);
/* A client SSL on fd (connect state); NULL on allocation failure. */
pb_ssl *pb_tls_new(int fd);
/* One step of the handshake on a non-blocking fd: 1 done, 0 wait (*want_write
 * says for which direction), -1 failed. */
int  pb_tls_handshake(pb_ssl *s, int *want_write);
/* recv(2)/send(2) over TLS: bytes moved, 0 at EOF (recv), or -1 with errno
 * EAGAIN (OpenSSL waits on the socket) or EIO. */
ssize_t pb_tls_recv(pb_ssl *s, void *buf, size_t n);
ssize_t pb_tls_send(pb_ssl *s, const void *buf, size_t n);
/* Frees s (no close_notify: the bench closes abruptly); NULL is a no-op. */
void pb_tls_free(pb_ssl *s);

#endif
