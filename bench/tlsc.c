/* tlsc.c — parley-bench's TLS client (see tlsc.h). */
#include "tlsc.h"

#include <errno.h>
#include <limits.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

static SSL_CTX *ctx;

int pb_tls_init(void) {
    if (ctx) return 0;
    ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx) return -1;
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    SSL_CTX_set_options(ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);     /* a TCP EOF reads as EOF */
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                              SSL_MODE_ENABLE_PARTIAL_WRITE);
    static const unsigned char alpn[] = "\x08http/1.1";
    SSL_CTX_set_alpn_protos(ctx, alpn, sizeof alpn - 1);
    return 0;
}

int pb_tls_on(void) { return ctx != NULL; }

pb_ssl *pb_tls_new(int fd) {
    SSL *s = SSL_new(ctx);
    if (!s) return NULL;
    SSL_set_fd(s, fd);
    SSL_set_connect_state(s);
    return s;
}

int pb_tls_handshake(pb_ssl *s, int *want_write) {
    ERR_clear_error();
    int r = SSL_do_handshake(s);
    if (r == 1) return 1;
    int e = SSL_get_error(s, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        *want_write = e == SSL_ERROR_WANT_WRITE;
        return 0;
    }
    ERR_clear_error();
    return -1;
}

static ssize_t result(SSL *s, int r) {
    if (r > 0) return r;
    int e = SSL_get_error(s, r);
    ERR_clear_error();
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        errno = EAGAIN;
        return -1;
    }
    if (e == SSL_ERROR_ZERO_RETURN) return 0;
    if (e == SSL_ERROR_SYSCALL && errno == 0) return 0;     /* EOF without close_notify */
    if (e != SSL_ERROR_SYSCALL) errno = EIO;
    return -1;
}

ssize_t pb_tls_recv(pb_ssl *s, void *buf, size_t n) {
    ERR_clear_error();
    errno = 0;
    return result(s, SSL_read(s, buf, n > INT_MAX ? INT_MAX : (int)n));
}

ssize_t pb_tls_send(pb_ssl *s, const void *buf, size_t n) {
    ERR_clear_error();
    errno = 0;
    return result(s, SSL_write(s, buf, n > INT_MAX ? INT_MAX : (int)n));
}

void pb_tls_free(pb_ssl *s) {
    if (s) SSL_free(s);
}
