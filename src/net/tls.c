/* tls.c — OpenSSL contexts, reload, and per-connection TLS over an
 * in-memory BIO (see tls.h); after a TLS 1.3 handshake, the switch to
 * Parley's record layer (tls_rec.c) and the capture of what it needs.
 * No sockets, no event loop. */
#include "tls.h"
#include "tls_int.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "../core/alloc.h"

#define OUT_MIN_CAP    4096
#define TICKET_PERIOD  43200      /* s: a new ticket key every 12 hours */

static int64_t wall_seconds(void) { return (int64_t)time(NULL); }
int64_t (*pl_tls__clock)(void) = wall_seconds;

struct pl_tls {
    SSL_CTX *ctx;             /* the context new connections get            */
    char    *cert_file;       /* kept for reloads                           */
    char    *key_file;
    int      min_version;     /* 12 or 13                                   */
    int      openssl_records; /* 1: no switch to tls_rec.c after TLS 1.3    */
    uint8_t  secret[32];      /* the ticket keys of every period derive from it */
};

static BIO_METHOD *bio_method;   /* created once, shared by every connection */
char pl_tls__last_error[256];

const char *pl_tls_error(void) { return pl_tls__last_error; }

/* Makes s safe inside a JSON string in a log line (no quote, backslash or
 * control character). */
static void log_safe(char *s) {
    for (; *s; s++)
        if (*s == '"' || *s == '\\' || (unsigned char)*s < 0x20) *s = '?';
}

/* Records the first queued OpenSSL error (or why) and clears the queue. */
static void set_error(const char *why) {
    unsigned long e = ERR_get_error();
    if (e) {
        char r[200];
        ERR_error_string_n(e, r, sizeof r);
        snprintf(pl_tls__last_error, sizeof pl_tls__last_error, "%s: %s", why, r);
    } else {
        snprintf(pl_tls__last_error, sizeof pl_tls__last_error, "%s", why);
    }
    log_safe(pl_tls__last_error);
    ERR_clear_error();
}

/* ---- the in-memory BIO ------------------------------------------------------ */

uint8_t *pl_tls__out_reserve(pl_tls_conn *tc, size_t n) {
    if (tc->out_len + n > tc->out_cap || !tc->out) {       /* never NULL, even for 0 bytes */
        if (tc->out_off) {                          /* compact first */
            memmove(tc->out, tc->out + tc->out_off, tc->out_len - tc->out_off);
            tc->out_len -= tc->out_off;
            tc->out_off = 0;
        }
        if (tc->out_len + n > tc->out_cap || !tc->out) {
            size_t cap = tc->out_cap ? tc->out_cap : OUT_MIN_CAP;
            while (cap < tc->out_len + n) cap *= 2;
            tc->out = pl_realloc(tc->out, cap);
            tc->out_cap = cap;
        }
    }
    return tc->out + tc->out_len;
}

static int bio_write(BIO *b, const char *p, int len) {
    pl_tls_conn *tc = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    memcpy(pl_tls__out_reserve(tc, (size_t)len), p, (size_t)len);
    tc->out_len += (size_t)len;
    return len;
}

static int bio_read(BIO *b, char *p, int len) {
    pl_tls_conn *tc = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    if (tc->in_len == 0) {
        BIO_set_retry_read(b);
        return -1;
    }
    size_t n = (size_t)len < tc->in_len ? (size_t)len : tc->in_len;
    memcpy(p, tc->in, n);
    tc->in += n;
    tc->in_len -= n;
    return (int)n;
}

static long bio_ctrl(BIO *b, int cmd, long num, void *ptr) {
    pl_tls_conn *tc = BIO_get_data(b);
    switch (cmd) {
    case BIO_CTRL_FLUSH:   return 1;
    case BIO_CTRL_PENDING: return tc ? (long)tc->in_len : 0;
    default:               return 0;
    }
}

static int bio_create(BIO *b) {
    BIO_set_init(b, 1);
    return 1;
}

static int ensure_bio_method(void) {
    if (bio_method) return 0;
    bio_method = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "parley-mem");
    if (!bio_method) return -1;
    BIO_meth_set_write(bio_method, bio_write);
    BIO_meth_set_read(bio_method, bio_read);
    BIO_meth_set_ctrl(bio_method, bio_ctrl);
    BIO_meth_set_create(bio_method, bio_create);
    return 0;
}

/* ---- session tickets ----------------------------------------------------------
 *
 * The key of period p (TICKET_PERIOD seconds since the epoch) is derived
 * from the secret: name 16, HMAC 32, AES-256 32 bytes of two SHA-512
 * blocks. New tickets use the current period's key; a ticket of the
 * previous period still resumes (and is replaced by a fresh one); older ones
 * fall back to a full handshake. So keys rotate every 12 hours without any
 * state, and every process with the same secret agrees on them. */

typedef struct ticket_key { uint8_t name[16], hmac[32], aes[32]; } ticket_key;

static void derive_ticket_key(const pl_tls *t, int64_t period, ticket_key *k) {
    uint8_t in[32 + 18 + 8 + 1], md[2][64];
    memcpy(in, t->secret, 32);
    memcpy(in + 32, "parley tls tickets", 18);
    for (int i = 0; i < 8; i++) in[50 + i] = (uint8_t)((uint64_t)period >> (56 - 8 * i));
    for (int i = 0; i < 2; i++) {
        in[58] = (uint8_t)i;
        EVP_Digest(in, sizeof in, md[i], NULL, EVP_sha512(), NULL);
    }
    memcpy(k->name, md[0], 16);
    memcpy(k->hmac, md[0] + 16, 32);
    memcpy(k->aes, md[0] + 48, 16);
    memcpy(k->aes + 16, md[1], 16);
    OPENSSL_cleanse(md, sizeof md);
    OPENSSL_cleanse(in, sizeof in);
}

/* OpenSSL's ticket callback: 1 use this key, 2 valid but renew, 0 unknown
 * (full handshake), -1 error. */
static int ticket_cb(SSL *s, unsigned char name[16], unsigned char *iv, EVP_CIPHER_CTX *cctx,
                     EVP_MAC_CTX *hctx, int enc) {
    const pl_tls *t = SSL_CTX_get_app_data(SSL_get_SSL_CTX(s));
    int64_t period = pl_tls__clock() / TICKET_PERIOD;
    ticket_key k;
    int ret = 1;
    derive_ticket_key(t, period, &k);
    if (enc) {
        memcpy(name, k.name, 16);
        if (RAND_bytes(iv, EVP_MAX_IV_LENGTH) != 1 ||
            !EVP_EncryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, k.aes, iv))
            ret = -1;
    } else {
        if (memcmp(name, k.name, 16) != 0) {
            derive_ticket_key(t, period - 1, &k);
            ret = memcmp(name, k.name, 16) == 0 ? 2 : 0;
        }
        if (ret > 0 && !EVP_DecryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, k.aes, iv)) ret = -1;
    }
    if (ret > 0) {
        OSSL_PARAM params[] = {
            OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, k.hmac, sizeof k.hmac),
            OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0),
            OSSL_PARAM_construct_end()};
        if (!EVP_MAC_CTX_set_params(hctx, params)) ret = -1;
    }
    OPENSSL_cleanse(&k, sizeof k);
    return ret;
}

/* ---- what the record layer needs from the OpenSSL phase -----------------------
 *
 * OpenSSL 3.0 has no API returning the application traffic secrets, so
 * they come from the key log callback (the NSS key log lines
 * CLIENT_TRAFFIC_SECRET_0 / SERVER_TRAFFIC_SECRET_0, which OpenSSL builds
 * only for us and wipes after the call). Sequence numbers are not exposed
 * either: the message callback reports every record header OpenSSL reads
 * or writes and every handshake message, so from our Finished on (written
 * just before OpenSSL installs the server application key) each written
 * record header is one record under that key, and from the client's
 * Finished on each read header is one record under the client's key
 * (tls_int.h invariant 2 of tls_rec.c). A KeyUpdate handled by OpenSSL
 * would change keys we cannot see: that connection never switches. */

static int hexval(int c) {
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
         : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

static void keylog_cb(const SSL *ssl, const char *line) {
    pl_tls_conn *tc = SSL_get_app_data(ssl);
    pl_tls_keys *k;
    uint8_t bit;
    if (!tc) return;
    if (strncmp(line, "CLIENT_TRAFFIC_SECRET_0 ", 24) == 0) k = &tc->rd, bit = CAP_CLIENT_SECRET;
    else if (strncmp(line, "SERVER_TRAFFIC_SECRET_0 ", 24) == 0) k = &tc->wr, bit = CAP_SERVER_SECRET;
    else return;
    const char *hex = strrchr(line, ' ') + 1;
    size_t n = strlen(hex);
    if (n % 2 || n / 2 > PL_TLS_SECRET_MAX || n < 64) return;
    for (size_t i = 0; i < n / 2; i++) {
        int hi = hexval(hex[2 * i]), lo = hexval(hex[2 * i + 1]);
        if (hi < 0 || lo < 0) return;
        k->secret[i] = (uint8_t)(hi << 4 | lo);
    }
    tc->cap |= bit;
}

static void msg_cb(int write_p, int version, int type, const void *buf, size_t len, SSL *ssl, void *arg) {
    pl_tls_conn *tc = arg;
    (void)version, (void)ssl;
    if (type == SSL3_RT_HEADER) {
        if (write_p && (tc->cap & CAP_WRITE_APP)) tc->wr.seq++;
        if (!write_p && (tc->cap & CAP_READ_APP)) tc->rd.seq++;
    } else if (type == SSL3_RT_HANDSHAKE && len > 0) {
        uint8_t mt = *(const uint8_t *)buf;
        if (mt == SSL3_MT_FINISHED) tc->cap |= write_p ? CAP_WRITE_APP : CAP_READ_APP;
        if (mt == SSL3_MT_KEY_UPDATE) tc->cap |= CAP_NO_SWITCH;
    }
}

/* Hands a finished TLS 1.3 connection to tls_rec.c and frees the SSL, when
 * that is safe: the handshake is over and its tickets are in our output
 * (OpenSSL writes them before it reports the handshake finished), we hold
 * both secrets and the record counts, and OpenSSL holds no input it has
 * read but not processed (what is still in tc->in has not been read, and
 * goes to the record layer). 1 when switched. */
static int try_switch(pl_tls_conn *tc) {
    SSL *ssl = tc->ssl;
    const pl_tls *t = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));
    const uint8_t need = CAP_CLIENT_SECRET | CAP_SERVER_SECRET | CAP_READ_APP | CAP_WRITE_APP;
    if (t->openssl_records || (tc->cap & (need | CAP_NO_SWITCH)) != need || tc->shut ||
        !SSL_is_init_finished(ssl) || SSL_version(ssl) != TLS1_3_VERSION ||
        SSL_has_pending(ssl) || SSL_get_shutdown(ssl))
        return 0;
    const SSL_CIPHER *c = SSL_get_current_cipher(ssl);
    int suite = 0;
    switch (c ? SSL_CIPHER_get_protocol_id(c) : 0) {
    case 0x1301: suite = PL_TLS_SUITE_AES128; break;
    case 0x1302: suite = PL_TLS_SUITE_AES256; break;
    case 0x1303: suite = PL_TLS_SUITE_CHACHA; break;
    default: return 0;
    }
    if (pl_tls__rec_start(tc, suite)) {
        ERR_clear_error();
        tc->cap |= CAP_NO_SWITCH;
        return 0;
    }
    tc->resumed = (uint8_t)SSL_session_reused(ssl);
    SSL_free(ssl);
    tc->ssl = NULL;
    return 1;
}

/* ---- contexts ----------------------------------------------------------------- */

/* ALPN: HTTP/1.1 only; a client that offers ALPN without it is refused
 * (RFC 7301: no_application_protocol). */
static int alpn_select(SSL *s, const unsigned char **out, unsigned char *outlen,
                       const unsigned char *in, unsigned int inlen, void *arg) {
    static const unsigned char h11[] = "\x08http/1.1";
    unsigned char *sel = NULL;
    if (SSL_select_next_proto(&sel, outlen, h11, sizeof h11 - 1, in, inlen) == OPENSSL_NPN_NEGOTIATED) {
        *out = sel;
        return SSL_TLSEXT_ERR_OK;
    }
    return SSL_TLSEXT_ERR_ALERT_FATAL;
}

static SSL_CTX *ctx_load(pl_tls *t, char *err, size_t errlen) {
    ERR_clear_error();
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) {
        set_error("cannot create a TLS context");
        snprintf(err, errlen, "%s", pl_tls__last_error);
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, t->min_version == 12 ? TLS1_2_VERSION : TLS1_3_VERSION);
    /* the TLS 1.3 suites tls_rec.c speaks (OpenSSL's defaults, stated) */
    SSL_CTX_set_ciphersuites(ctx, "TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256:"
                                  "TLS_AES_128_GCM_SHA256");
    if (!t->openssl_records) SSL_CTX_set_keylog_callback(ctx, keylog_cb);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE |
                                 SSL_OP_NO_COMPRESSION);
    /* RELEASE_BUFFERS: record buffers are freed when empty (idle memory);
     * the write modes let pl_tls_conn_write take part of a queue entry */
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE |
                              SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    /* stateless tickets only: no per-client state on the server */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_num_tickets(ctx, 1);
    SSL_CTX_set_app_data(ctx, t);          /* for ticket_cb; t outlives its contexts' use */
    SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, ticket_cb);
    SSL_CTX_set_alpn_select_cb(ctx, alpn_select, NULL);
    const char *what = NULL;
    if (SSL_CTX_use_certificate_chain_file(ctx, t->cert_file) != 1) what = "cannot load the certificate";
    else if (SSL_CTX_use_PrivateKey_file(ctx, t->key_file, SSL_FILETYPE_PEM) != 1)
        what = ERR_GET_REASON(ERR_peek_last_error()) == X509_R_KEY_VALUES_MISMATCH
                   ? "the key does not match the certificate" : "cannot load the key";
    else if (SSL_CTX_check_private_key(ctx) != 1) what = "the key does not match the certificate";
    if (what) {
        set_error(what);
        snprintf(err, errlen, "%s", pl_tls__last_error);
        SSL_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

int pl_tls_new(const pl_tls_opts *o, pl_tls **out, char *err, size_t errlen) {
    *out = NULL;
    if (!o->cert_file || !*o->cert_file || !o->key_file || !*o->key_file) {
        snprintf(err, errlen, "TLS needs both a certificate and a key file");
        return -1;
    }
    if (o->min_version != 12 && o->min_version != 13) {
        snprintf(err, errlen, "TLS minimum version must be 1.2 or 1.3");
        return -1;
    }
    if (ensure_bio_method()) {
        snprintf(err, errlen, "cannot create the TLS BIO method");
        return -1;
    }
    pl_tls *t = pl_calloc(1, sizeof *t);
    t->cert_file = pl_strdup(o->cert_file);
    t->key_file = pl_strdup(o->key_file);
    t->min_version = o->min_version;
    t->openssl_records = o->openssl_records;
    if (o->ticket_secret) memcpy(t->secret, o->ticket_secret, 32);
    else if (RAND_bytes(t->secret, sizeof t->secret) != 1) {
        snprintf(err, errlen, "no randomness for the ticket keys");
        pl_tls_free(&t);
        return -1;
    }
    t->ctx = ctx_load(t, err, errlen);
    if (!t->ctx) {
        pl_tls_free(&t);
        return -1;
    }
    *out = t;
    return 0;
}

int pl_tls_reload(pl_tls *t, char *err, size_t errlen) {
    SSL_CTX *ctx = ctx_load(t, err, errlen);
    if (!ctx) return -1;
    SSL_CTX_free(t->ctx);        /* connections using it hold their own reference */
    t->ctx = ctx;
    return 0;
}

void pl_tls_free(pl_tls **tp) {
    pl_tls *t = *tp;
    if (!t) return;
    SSL_CTX_free(t->ctx);
    free(t->cert_file);
    free(t->key_file);
    OPENSSL_cleanse(t->secret, sizeof t->secret);
    free(t);
    *tp = NULL;
}

void pl_tls_describe(pl_tls *t, char *out, size_t outlen) {
    X509 *x = SSL_CTX_get0_certificate(t->ctx);
    out[0] = '\0';
    if (!x) return;
    char subj[256] = "";
    X509_NAME_oneline(X509_get_subject_name(x), subj, sizeof subj);
    BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get_serialNumber(x), NULL);
    char *hex = bn ? BN_bn2hex(bn) : NULL;
    snprintf(out, outlen, "%s serial=%s", subj, hex ? hex : "?");
    log_safe(out);
    OPENSSL_free(hex);
    BN_free(bn);
}

/* ---- connections -------------------------------------------------------------- */

pl_tls_conn *pl_tls_conn_new(pl_tls *t) {
    pl_tls_conn *tc = pl_calloc(1, sizeof *tc);
    tc->ssl = SSL_new(t->ctx);
    BIO *b = tc->ssl ? BIO_new(bio_method) : NULL;
    if (!b) abort();                            /* allocation failure: see alloc.h */
    BIO_set_data(b, tc);
    SSL_set_bio(tc->ssl, b, b);                 /* one reference, owned by ssl */
    SSL_set_accept_state(tc->ssl);
    if (!t->openssl_records) {
        SSL_set_app_data(tc->ssl, tc);          /* for keylog_cb */
        SSL_set_msg_callback(tc->ssl, msg_cb);
        SSL_set_msg_callback_arg(tc->ssl, tc);
    }
    return tc;
}

void pl_tls_conn_free(pl_tls_conn **tcp) {
    pl_tls_conn *tc = *tcp;
    if (!tc) return;
    SSL_free(tc->ssl);
    pl_tls__rec_release(tc);
    free(tc->out);
    free(tc);
    *tcp = NULL;
}

int pl_tls_conn_switched(const pl_tls_conn *tc) { return tc->ssl == NULL; }

/* SSL_read until the input is used up; the OpenSSL phase of feed. */
static int ssl_read_all(pl_tls_conn *tc, uint8_t *buf, size_t cap, pl_tls_deliver deliver, void *arg,
                        int *stop) {
    int rc = PL_TLS_OK;
    size_t have = 0;
    /* Nothing left to decrypt: do not call SSL_read. It would allocate a
     * fresh 16 KiB record buffer just to find no header, and keep it for
     * the idle connection (RELEASE_BUFFERS frees it only after a record is
     * consumed). */
    while (tc->in_len || SSL_has_pending(tc->ssl)) {
        int want = cap - have > INT_MAX ? INT_MAX : (int)(cap - have);
        int r = SSL_read(tc->ssl, buf + have, want);
        if (r > 0) {
            have += (size_t)r;
            if (have == cap) {
                *stop = deliver(arg, buf, have);
                have = 0;
                if (*stop) break;
            }
            continue;
        }
        int e = SSL_get_error(tc->ssl, r);
        if (e == SSL_ERROR_WANT_READ) break;   /* the input is used up (invariant 1) */
        if (e == SSL_ERROR_ZERO_RETURN) {
            rc = PL_TLS_EOF;
            ERR_clear_error();
        } else {
            set_error(SSL_is_init_finished(tc->ssl) ? "TLS record failure" : "TLS handshake failed");
            rc = PL_TLS_EPROTO;
        }
        break;
    }
    if (have && !*stop) *stop = deliver(arg, buf, have);
    return rc;
}

int pl_tls_conn_feed(pl_tls_conn *tc, const uint8_t *in, size_t n, uint8_t *buf, size_t cap,
                     pl_tls_deliver deliver, void *arg) {
    if (!tc->ssl) return pl_tls__rec_feed(tc, in, n, buf, cap, deliver, arg);
    int rc = PL_TLS_OK, stop = 0;
    tc->in = in;
    tc->in_len = n;
    ERR_clear_error();
    if (!SSL_is_init_finished(tc->ssl)) {
        int r = SSL_do_handshake(tc->ssl);
        if (r != 1) {
            if (SSL_get_error(tc->ssl, r) != SSL_ERROR_WANT_READ) {
                set_error("TLS handshake failed");
                rc = PL_TLS_EPROTO;
            }
            goto out;
        }
        /* Finished: OpenSSL stopped after the client's Finished, so what
         * follows it is still in tc->in, unread. */
        if (try_switch(tc)) {
            in = tc->in;
            n = tc->in_len;
            tc->in = NULL;
            tc->in_len = 0;
            return n ? pl_tls__rec_feed(tc, in, n, buf, cap, deliver, arg) : PL_TLS_OK;
        }
    }
    rc = ssl_read_all(tc, buf, cap, deliver, arg, &stop);
    if (rc == PL_TLS_OK && !stop && !tc->in_len) try_switch(tc);   /* a later chance */
out:
    if (tc->ssl) {
        tc->in = NULL;
        tc->in_len = 0;
    }
    return rc;
}

int pl_tls_conn_ready(const pl_tls_conn *tc) { return !tc->ssl || SSL_is_init_finished(tc->ssl); }

long pl_tls_conn_write(pl_tls_conn *tc, const void *p, size_t n) {
    if (!tc->ssl) return pl_tls__rec_write(tc, p, n);
    if (!SSL_is_init_finished(tc->ssl) || tc->shut) return 0;
    if (n == 0) return 0;
    ERR_clear_error();
    int r = SSL_write(tc->ssl, p, n > INT_MAX ? INT_MAX : (int)n);
    if (r > 0) return r;
    int e = SSL_get_error(tc->ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return 0;
    set_error("TLS write failed");
    return -1;
}

void pl_tls_conn_shutdown(pl_tls_conn *tc) {
    if (!tc->ssl) {
        pl_tls__rec_shutdown(tc);
        return;
    }
    if (tc->shut || !SSL_is_init_finished(tc->ssl)) return;
    tc->shut = 1;
    ERR_clear_error();
    SSL_shutdown(tc->ssl);       /* 0: close_notify sent, the peer's not awaited */
    ERR_clear_error();
}

int pl_tls_conn_notified(const pl_tls_conn *tc) {
    return tc->shut || (tc->ssl && !SSL_is_init_finished(tc->ssl));
}

size_t pl_tls_conn_out(pl_tls_conn *tc, const uint8_t **p) {
    *p = tc->out ? tc->out + tc->out_off : NULL;
    return tc->out_len - tc->out_off;
}

void pl_tls_conn_out_consume(pl_tls_conn *tc, size_t n) {
    tc->out_off += n;
    if (tc->out_off >= tc->out_len) {
        free(tc->out);
        tc->out = NULL;
        tc->out_off = tc->out_len = tc->out_cap = 0;
    }
}

const char *pl_tls_conn_version(const pl_tls_conn *tc) {
    return tc->ssl ? SSL_get_version(tc->ssl) : "TLSv1.3";
}

int pl_tls_conn_resumed(const pl_tls_conn *tc) {
    return tc->ssl ? SSL_session_reused(tc->ssl) : tc->resumed;
}
