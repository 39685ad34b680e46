/* test_tls.c — net/tls.c without sockets: an OpenSSL client on memory BIOs
 * talks to a pl_tls_conn; the test carries the bytes between them. */
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <stdlib.h>
#include <unistd.h>

#include "net/tls.h"
#include "net/tls_int.h"
#include "test.h"

/* A self-signed P-256 certificate (CN=cn, serial) and its key, as PEM files
 * under dir; 0 or -1. */
static int make_cert(const char *dir, const char *name, const char *cn, long serial) {
    char path[256];
    EVP_PKEY *k = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    if (!k || !x) return -1;
    ASN1_INTEGER_set(X509_get_serialNumber(x), serial);
    X509_gmtime_adj(X509_getm_notBefore(x), -60);
    X509_gmtime_adj(X509_getm_notAfter(x), 3600);
    X509_set_pubkey(x, k);
    X509_NAME *nm = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(nm, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
    X509_set_issuer_name(x, nm);
    X509_sign(x, k, EVP_sha256());
    snprintf(path, sizeof path, "%s/%s.crt", dir, name);
    FILE *f = fopen(path, "w");
    if (!f) return -1;
    PEM_write_X509(f, x);
    fclose(f);
    snprintf(path, sizeof path, "%s/%s.key", dir, name);
    f = fopen(path, "w");
    if (!f) return -1;
    PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL);
    fclose(f);
    X509_free(x);
    EVP_PKEY_free(k);
    return 0;
}

typedef struct client {
    SSL *ssl;
    BIO *in, *out;     /* in: bytes from the server; out: bytes to it */
} client;

static void client_init(client *c, int max_version, const char *alpn) {
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (max_version) SSL_CTX_set_max_proto_version(ctx, max_version);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    c->ssl = SSL_new(ctx);
    SSL_CTX_free(ctx);                       /* the SSL holds its own reference */
    if (alpn) SSL_set_alpn_protos(c->ssl, (const unsigned char *)alpn, (unsigned)strlen(alpn));
    c->in = BIO_new(BIO_s_mem());
    c->out = BIO_new(BIO_s_mem());
    SSL_set_bio(c->ssl, c->in, c->out);
    SSL_set_connect_state(c->ssl);
}

static void client_free(client *c) { SSL_free(c->ssl); }

static char got[1 << 20];
static size_t got_len;

static int collect(void *arg, uint8_t *p, size_t n) {
    if (got_len + n <= sizeof got) memcpy(got + got_len, p, n), got_len += n;
    return 0;
}

/* Moves bytes both ways until neither side has anything to say; returns
 * the server's last feed result. */
static int pump(client *c, pl_tls_conn *s) {
    int rc = PL_TLS_OK;
    static uint8_t buf[16384], plain[65536];
    for (int round = 0; round < 20; round++) {
        int moved = 0;
        SSL_do_handshake(c->ssl);
        int n;
        while ((n = BIO_read(c->out, buf, sizeof buf)) > 0) {
            rc = pl_tls_conn_feed(s, buf, (size_t)n, plain, sizeof plain, collect, NULL);
            moved = 1;
            if (rc != PL_TLS_OK) break;
        }
        const uint8_t *o;
        size_t on;
        while ((on = pl_tls_conn_out(s, &o)) > 0) {
            BIO_write(c->in, o, (int)on);
            pl_tls_conn_out_consume(s, on);
            moved = 1;
        }
        if (!moved || rc != PL_TLS_OK) break;
    }
    ERR_clear_error();
    return rc;
}

static char dir[] = "/tmp/parley-tls-unitXXXXXX";

static pl_tls *server(int minv, const char *name) {
    char crt[256], key[256], err[256];
    snprintf(crt, sizeof crt, "%s/%s.crt", dir, name);
    snprintf(key, sizeof key, "%s/%s.key", dir, name);
    pl_tls_opts o = {crt, key, minv, NULL, 0};
    pl_tls *t = NULL;
    if (pl_tls_new(&o, &t, err, sizeof err)) fprintf(stderr, "  pl_tls_new: %s\n", err);
    return t;
}

static void remove_dir(void) {
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) fprintf(stderr, "  could not remove %s\n", dir);
}

static int setup(void) {
    static int done;
    if (done) return 0;
    if (!mkdtemp(dir)) return -1;
    atexit(remove_dir);                  /* whichever tests of this file run */
    if (make_cert(dir, "a", "parley-a", 1001) || make_cert(dir, "b", "parley-b", 2002)) return -1;
    done = 1;
    return 0;
}

TEST(tls_handshake_and_data) {
    CHECK_EQ(setup(), 0);
    pl_tls *t = server(13, "a");
    CHECK(t != NULL);
    client c;
    client_init(&c, 0, "\x08http/1.1");
    pl_tls_conn *s = pl_tls_conn_new(t);
    CHECK(!pl_tls_conn_ready(s));
    CHECK_EQ(pl_tls_conn_write(s, "x", 1), 0);       /* nothing before the handshake */
    CHECK_EQ(pump(&c, s), PL_TLS_OK);
    CHECK(SSL_is_init_finished(c.ssl));
    CHECK(pl_tls_conn_ready(s));
    CHECK_STR(pl_tls_conn_version(s), "TLSv1.3");
    const unsigned char *proto;
    unsigned plen;
    SSL_get0_alpn_selected(c.ssl, &proto, &plen);
    CHECK_EQ(plen, 8);
    CHECK(memcmp(proto, "http/1.1", 8) == 0);
    /* client -> server */
    got_len = 0;
    CHECK_EQ(SSL_write(c.ssl, "GET / HTTP/1.1\r\n\r\n", 18), 18);
    CHECK_EQ(pump(&c, s), PL_TLS_OK);
    CHECK_EQ(got_len, 18);
    CHECK(memcmp(got, "GET / HTTP/1.1\r\n\r\n", 18) == 0);
    /* server -> client, and the output buffer is gone once sent */
    CHECK_EQ(pl_tls_conn_write(s, "HTTP/1.1 200 OK\r\n", 17), 17);
    const uint8_t *o;
    CHECK(pl_tls_conn_out(s, &o) > 17);
    pump(&c, s);
    CHECK_EQ(pl_tls_conn_out(s, &o), 0);
    CHECK(o == NULL);
    char rb[64];
    CHECK_EQ(SSL_read(c.ssl, rb, sizeof rb), 17);
    CHECK(memcmp(rb, "HTTP/1.1 200 OK\r\n", 17) == 0);
    /* close_notify both ways */
    CHECK(!pl_tls_conn_notified(s));
    pl_tls_conn_shutdown(s);
    CHECK(pl_tls_conn_notified(s));
    SSL_shutdown(c.ssl);
    CHECK_EQ(pump(&c, s), PL_TLS_EOF);
    pl_tls_conn_free(&s);
    CHECK(s == NULL);
    client_free(&c);
    pl_tls_free(&t);
    CHECK(t == NULL);
}

TEST(tls_refuses_1_2_unless_allowed) {
    CHECK_EQ(setup(), 0);
    pl_tls *t13 = server(13, "a"), *t12 = server(12, "a");
    CHECK(t13 && t12);
    client c;
    client_init(&c, TLS1_2_VERSION, NULL);
    pl_tls_conn *s = pl_tls_conn_new(t13);
    CHECK_EQ(pump(&c, s), PL_TLS_EPROTO);
    CHECK(strstr(pl_tls_error(), "handshake") != NULL);
    CHECK(!pl_tls_conn_ready(s));
    CHECK(pl_tls_conn_notified(s));                 /* nothing to notify before READY */
    pl_tls_conn_free(&s);
    client_free(&c);

    client_init(&c, TLS1_2_VERSION, NULL);
    s = pl_tls_conn_new(t12);
    CHECK_EQ(pump(&c, s), PL_TLS_OK);
    CHECK(pl_tls_conn_ready(s));
    CHECK_STR(pl_tls_conn_version(s), "TLSv1.2");
    CHECK(!pl_tls_conn_switched(s));                /* TLS 1.2 stays on OpenSSL */
    got_len = 0;
    CHECK_EQ(SSL_write(c.ssl, "tls12", 5), 5);
    CHECK_EQ(pump(&c, s), PL_TLS_OK);
    CHECK_EQ(got_len, 5);
    pl_tls_conn_free(&s);
    client_free(&c);
    pl_tls_free(&t13);
    pl_tls_free(&t12);
}

TEST(tls_alpn_without_http11_refused) {
    CHECK_EQ(setup(), 0);
    pl_tls *t = server(13, "a");
    client c;
    client_init(&c, 0, "\x02h2");
    pl_tls_conn *s = pl_tls_conn_new(t);
    CHECK_EQ(pump(&c, s), PL_TLS_EPROTO);
    pl_tls_conn_free(&s);
    client_free(&c);
    pl_tls_free(&t);
}

TEST(tls_plain_http_is_an_error) {
    CHECK_EQ(setup(), 0);
    pl_tls *t = server(13, "a");
    pl_tls_conn *s = pl_tls_conn_new(t);
    uint8_t plain[1024];
    const char req[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    got_len = 0;
    CHECK_EQ(pl_tls_conn_feed(s, (const uint8_t *)req, sizeof req - 1, plain, sizeof plain, collect, NULL),
             PL_TLS_EPROTO);
    CHECK_EQ(got_len, 0);
    pl_tls_conn_free(&s);
    pl_tls_free(&t);
}

/* Reload: a bad pair keeps the old certificate; a good one is served to
 * new connections while an existing one keeps working. */
TEST(tls_reload) {
    CHECK_EQ(setup(), 0);
    char crt[256], key[256], cmd[600], err[256], desc[512];
    snprintf(crt, sizeof crt, "%s/live.crt", dir);
    snprintf(key, sizeof key, "%s/live.key", dir);
    snprintf(cmd, sizeof cmd, "cp %s/a.crt %s && cp %s/a.key %s", dir, crt, dir, key);
    CHECK_EQ(system(cmd), 0);
    pl_tls *t = server(13, "live");
    CHECK(t != NULL);
    pl_tls_describe(t, desc, sizeof desc);
    CHECK(strstr(desc, "CN=parley-a") && strstr(desc, "serial=03E9"));
    client old;
    client_init(&old, 0, NULL);
    pl_tls_conn *s_old = pl_tls_conn_new(t);
    CHECK_EQ(pump(&old, s_old), PL_TLS_OK);

    /* b's certificate with a's key: refused, a stays */
    snprintf(cmd, sizeof cmd, "cp %s/b.crt %s", dir, crt);
    CHECK_EQ(system(cmd), 0);
    CHECK_EQ(pl_tls_reload(t, err, sizeof err), -1);
    CHECK(strstr(err, "does not match") != NULL);
    pl_tls_describe(t, desc, sizeof desc);
    CHECK(strstr(desc, "CN=parley-a") != NULL);

    snprintf(cmd, sizeof cmd, "cp %s/b.key %s", dir, key);
    CHECK_EQ(system(cmd), 0);
    CHECK_EQ(pl_tls_reload(t, err, sizeof err), 0);
    pl_tls_describe(t, desc, sizeof desc);
    CHECK(strstr(desc, "CN=parley-b") && strstr(desc, "serial=07D2"));
    client fresh;
    client_init(&fresh, 0, NULL);
    pl_tls_conn *s_new = pl_tls_conn_new(t);
    CHECK_EQ(pump(&fresh, s_new), PL_TLS_OK);
    X509 *peer = SSL_get1_peer_certificate(fresh.ssl);
    CHECK(peer != NULL);
    CHECK_EQ(ASN1_INTEGER_get(X509_get_serialNumber(peer)), 2002);
    X509_free(peer);

    /* the old connection still works (its context outlived the reload) */
    got_len = 0;
    CHECK_EQ(SSL_write(old.ssl, "ping", 4), 4);
    CHECK_EQ(pump(&old, s_old), PL_TLS_OK);
    CHECK_EQ(got_len, 4);
    peer = SSL_get1_peer_certificate(old.ssl);
    CHECK_EQ(ASN1_INTEGER_get(X509_get_serialNumber(peer)), 1001);
    X509_free(peer);

    /* a missing file: refused, b stays */
    snprintf(cmd, sizeof cmd, "rm %s", key);
    CHECK_EQ(system(cmd), 0);
    CHECK_EQ(pl_tls_reload(t, err, sizeof err), -1);
    pl_tls_describe(t, desc, sizeof desc);
    CHECK(strstr(desc, "CN=parley-b") != NULL);

    pl_tls_conn_free(&s_old);
    pl_tls_conn_free(&s_new);
    client_free(&old);
    client_free(&fresh);
    pl_tls_free(&t);
}

static int64_t fake_now;
static int64_t fake_clock(void) { return fake_now; }

/* A full handshake to t, returning the client's session (with a ticket). */
static SSL_SESSION *ticket_from(pl_tls *t, SSL_SESSION *resume, int *resumed) {
    client c;
    client_init(&c, 0, NULL);
    if (resume) SSL_set_session(c.ssl, resume);
    pl_tls_conn *s = pl_tls_conn_new(t);
    SSL_SESSION *sess = NULL;
    if (pump(&c, s) == PL_TLS_OK) {
        char rb[8];
        SSL_read(c.ssl, rb, sizeof rb);             /* takes the ticket in */
        ERR_clear_error();
        *resumed = pl_tls_conn_resumed(s);
        sess = SSL_get1_session(c.ssl);
        SSL_shutdown(c.ssl);
    }
    pl_tls_conn_free(&s);
    client_free(&c);
    return sess;
}

/* Ticket keys rotate every 12 hours: a ticket resumes in its period and the
 * next, not after. */
TEST(tls_ticket_rotation) {
    CHECK_EQ(setup(), 0);
    uint8_t secret[32] = {9};
    char crt[256], key[256], err[256];
    snprintf(crt, sizeof crt, "%s/a.crt", dir);
    snprintf(key, sizeof key, "%s/a.key", dir);
    pl_tls_opts o = {crt, key, 13, secret, 0};
    pl_tls *t = NULL;
    CHECK_EQ(pl_tls_new(&o, &t, err, sizeof err), 0);
    int64_t (*wall)(void) = pl_tls__clock;
    pl_tls__clock = fake_clock;
    int resumed = -1;
    fake_now = 100 * 43200 + 5;
    SSL_SESSION *s1 = ticket_from(t, NULL, &resumed);
    pl_tls__clock = wall;                           /* restored if a CHECK returns */
    CHECK(s1 != NULL);
    pl_tls__clock = fake_clock;
    CHECK_EQ(resumed, 0);
    fake_now += 43200;                              /* the next period: still good */
    SSL_SESSION *s2 = ticket_from(t, s1, &resumed);
    CHECK_EQ(resumed, 1);
    fake_now += 43200;                              /* two periods on: s1 is too old */
    SSL_SESSION *s3 = ticket_from(t, s1, &resumed);
    CHECK_EQ(resumed, 0);
    SSL_SESSION *s4 = ticket_from(t, s2, &resumed);  /* s2, renewed a period ago: fine */
    CHECK_EQ(resumed, 1);
    pl_tls__clock = wall;
    SSL_SESSION_free(s1);
    SSL_SESSION_free(s2);
    SSL_SESSION_free(s3);
    SSL_SESSION_free(s4);
    pl_tls_free(&t);
}

/* A ticket from one connection resumes the next (stateless, no cache). */
TEST(tls_resumption) {
    CHECK_EQ(setup(), 0);
    uint8_t secret[32] = {1, 2, 3};
    char crt[256], key[256], err[256];
    snprintf(crt, sizeof crt, "%s/a.crt", dir);
    snprintf(key, sizeof key, "%s/a.key", dir);
    pl_tls_opts o = {crt, key, 13, secret, 0};
    pl_tls *t1 = NULL, *t2 = NULL;
    CHECK_EQ(pl_tls_new(&o, &t1, err, sizeof err), 0);
    CHECK_EQ(pl_tls_new(&o, &t2, err, sizeof err), 0);   /* another node, same secret */
    client c;
    client_init(&c, 0, NULL);
    pl_tls_conn *s = pl_tls_conn_new(t1);
    CHECK_EQ(pump(&c, s), PL_TLS_OK);
    char rb[8];
    SSL_read(c.ssl, rb, sizeof rb);                 /* takes the ticket in */
    ERR_clear_error();
    SSL_SESSION *sess = SSL_get1_session(c.ssl);
    CHECK(sess != NULL);
    CHECK(SSL_SESSION_is_resumable(sess));
    SSL_shutdown(c.ssl);        /* freed without it, OpenSSL marks the session not resumable */
    pl_tls_conn_free(&s);
    client_free(&c);

    client_init(&c, 0, NULL);
    SSL_set_session(c.ssl, sess);
    s = pl_tls_conn_new(t2);
    CHECK_EQ(pump(&c, s), PL_TLS_OK);
    CHECK(pl_tls_conn_resumed(s));
    CHECK(SSL_session_reused(c.ssl));
    SSL_SESSION_free(sess);
    pl_tls_conn_free(&s);
    client_free(&c);
    pl_tls_free(&t1);
    pl_tls_free(&t2);
}

TEST(tls_bad_options) {
    CHECK_EQ(setup(), 0);
    char err[256];
    pl_tls *t = NULL;
    pl_tls_opts o = {"", "", 13, NULL, 0};
    CHECK_EQ(pl_tls_new(&o, &t, err, sizeof err), -1);
    o = (pl_tls_opts){"/nonexistent.crt", "/nonexistent.key", 13, NULL, 0};
    CHECK_EQ(pl_tls_new(&o, &t, err, sizeof err), -1);
    CHECK(strstr(err, "certificate") != NULL);
    CHECK(t == NULL);
    o.min_version = 11;
    CHECK_EQ(pl_tls_new(&o, &t, err, sizeof err), -1);
}

/* ---- Parley's TLS 1.3 record layer (net/tls_rec.c) after the switch ----------- */

/* Reads everything the client can decrypt now into out; returns the bytes,
 * or -1 on a TLS error, -2 on close_notify. */
static long client_read_all(client *c, uint8_t *out, size_t cap) {
    size_t n = 0;
    for (;;) {
        int r = SSL_read(c->ssl, out + n, (int)(cap - n > 65536 ? 65536 : cap - n));
        if (r > 0) {
            n += (size_t)r;
            if (n == cap) return (long)n;
            continue;
        }
        int e = SSL_get_error(c->ssl, r);
        ERR_clear_error();
        if (e == SSL_ERROR_WANT_READ) return (long)n;
        return e == SSL_ERROR_ZERO_RETURN ? -2 : -1;
    }
}

/* Moves the server's output to the client. */
static void to_client(client *c, pl_tls_conn *s) {
    const uint8_t *o;
    size_t on;
    while ((on = pl_tls_conn_out(s, &o)) > 0) {
        BIO_write(c->in, o, (int)on);
        pl_tls_conn_out_consume(s, on);
    }
}

/* A TLS 1.3 client (suite: NULL for the defaults) that finished its
 * handshake with a fresh server connection, which switched. */
static pl_tls_conn *connect13(pl_tls *t, client *c, const char *suite, SSL_SESSION *resume) {
    client_init(c, 0, NULL);
    if (suite) SSL_set_ciphersuites(c->ssl, suite);
    if (resume) SSL_set_session(c->ssl, resume);
    pl_tls_conn *s = pl_tls_conn_new(t);
    if (pump(c, s) != PL_TLS_OK || !SSL_is_init_finished(c->ssl)) {
        pl_tls_conn_free(&s);
        return NULL;
    }
    return s;
}

static void fill(uint8_t *p, size_t n, unsigned seed) {
    for (size_t i = 0; i < n; i++) p[i] = (uint8_t)(seed + i * 131 + (i >> 9));
}

/* Data both ways after the switch: large (multi-record) and many small. */
static int exchange(client *c, pl_tls_conn *s, size_t big) {
    static uint8_t src[300000], dst[300000];
    if (big > sizeof src) return -1;
    fill(src, big, (unsigned)big);
    /* client -> server, large */
    got_len = 0;
    if (SSL_write(c->ssl, src, (int)big) != (int)big) return -2;
    if (pump(c, s) != PL_TLS_OK || got_len != big || memcmp(got, src, big)) return -3;
    /* server -> client, large: written as conn.c does, up to 64 KiB a call */
    for (size_t off = 0; off < big;) {
        size_t k = big - off < 65536 ? big - off : 65536;
        long w = pl_tls_conn_write(s, src + off, k);   /* OpenSSL: a record at a time */
        if (w <= 0) return -4;
        off += (size_t)w;
    }
    to_client(c, s);
    if (client_read_all(c, dst, sizeof dst) != (long)big || memcmp(dst, src, big)) return -5;
    /* many small ones, both ways */
    got_len = 0;
    for (int i = 0; i < 300; i++)
        if (SSL_write(c->ssl, src + i, 7) != 7) return -6;
    if (pump(c, s) != PL_TLS_OK || got_len != 2100) return -7;
    for (int i = 0; i < 300; i++)
        if (memcmp(got + 7 * i, src + i, 7)) return -8;
    for (int i = 0; i < 300; i++)
        if (pl_tls_conn_write(s, src + i, 5) != 5) return -9;
    to_client(c, s);
    if (client_read_all(c, dst, sizeof dst) != 1500) return -10;
    for (int i = 0; i < 300; i++)
        if (memcmp(dst + 5 * i, src + i, 5)) return -11;
    return 0;
}

TEST(tls13_switch_and_data) {
    CHECK_EQ(setup(), 0);
    pl_tls *t = server(13, "a");
    client c;
    pl_tls_conn *s = connect13(t, &c, NULL, NULL);
    CHECK(s != NULL);
    CHECK(pl_tls_conn_switched(s));
    CHECK(pl_tls_conn_ready(s));
    CHECK_STR(pl_tls_conn_version(s), "TLSv1.3");
    CHECK_EQ(s->rd.seq, 0);              /* nothing read under the client's key yet */
    CHECK_EQ(s->wr.seq, 1);              /* the ticket went out under ours */
    CHECK(s->pend == NULL);
    CHECK_EQ(exchange(&c, s, 100000), 0);
    CHECK(s->pend == NULL && s->out == NULL);   /* idle: no buffer */
    CHECK(sizeof *s <= 320);
    pl_tls_conn_free(&s);
    client_free(&c);
    pl_tls_free(&t);
}

/* Application data in the same flight as the client's Finished: OpenSSL
 * stops at the Finished and the record layer takes the rest. */
TEST(tls13_data_with_finished) {
    CHECK_EQ(setup(), 0);
    pl_tls *t = server(13, "a");
    client c;
    client_init(&c, 0, NULL);
    pl_tls_conn *s = pl_tls_conn_new(t);
    static uint8_t buf[65536], plain[65536];
    SSL_do_handshake(c.ssl);                                     /* ClientHello */
    int n = BIO_read(c.out, buf, sizeof buf);
    CHECK(n > 0);
    CHECK_EQ(pl_tls_conn_feed(s, buf, (size_t)n, plain, sizeof plain, collect, NULL), PL_TLS_OK);
    to_client(&c, s);
    CHECK_EQ(SSL_do_handshake(c.ssl), 1);                        /* Finished queued */
    CHECK_EQ(SSL_write(c.ssl, "early bird", 10), 10);
    n = BIO_read(c.out, buf, sizeof buf);
    got_len = 0;
    CHECK_EQ(pl_tls_conn_feed(s, buf, (size_t)n, plain, sizeof plain, collect, NULL), PL_TLS_OK);
    CHECK(pl_tls_conn_switched(s));
    CHECK_EQ(got_len, 10);
    CHECK(memcmp(got, "early bird", 10) == 0);
    CHECK_EQ(s->rd.seq, 1);
    CHECK_EQ(exchange(&c, s, 20000), 0);
    pl_tls_conn_free(&s);
    client_free(&c);
    pl_tls_free(&t);
}

/* One record fed in two pieces at every byte boundary, then a byte at a
 * time; the partial-record buffer exists only while a record is split. */
TEST(tls13_split_records) {
    CHECK_EQ(setup(), 0);
    pl_tls *t = server(13, "a");
    client c;
    pl_tls_conn *s = connect13(t, &c, NULL, NULL);
    CHECK(s != NULL && pl_tls_conn_switched(s));
    static uint8_t rec[512], plain[65536];
    const char msg[] = "split me anywhere, please";
    for (size_t cut = 0; cut < 48; cut++) {
        CHECK_EQ(SSL_write(c.ssl, msg, (int)sizeof msg), (int)sizeof msg);
        int n = BIO_read(c.out, rec, sizeof rec);
        CHECK_EQ(n, 5 + (int)sizeof msg + 1 + 16);
        got_len = 0;
        CHECK_EQ(pl_tls_conn_feed(s, rec, cut, plain, sizeof plain, collect, NULL), PL_TLS_OK);
        CHECK_EQ(got_len, 0);
        CHECK((cut == 0) == (s->pend == NULL));
        CHECK_EQ(pl_tls_conn_feed(s, rec + cut, (size_t)n - cut, plain, sizeof plain, collect, NULL),
                 PL_TLS_OK);
        CHECK_EQ(got_len, sizeof msg);
        CHECK(memcmp(got, msg, sizeof msg) == 0);
        CHECK(s->pend == NULL);
    }
    /* byte by byte, two records back to back */
    CHECK_EQ(SSL_write(c.ssl, msg, 10), 10);
    CHECK_EQ(SSL_write(c.ssl, msg + 10, 10), 10);
    int n = BIO_read(c.out, rec, sizeof rec);
    CHECK_EQ(n, 2 * (5 + 10 + 1 + 16));
    got_len = 0;
    for (int i = 0; i < n; i++)
        CHECK_EQ(pl_tls_conn_feed(s, rec + i, 1, plain, sizeof plain, collect, NULL), PL_TLS_OK);
    CHECK_EQ(got_len, 20);
    CHECK(memcmp(got, msg, 20) == 0);
    CHECK(s->pend == NULL);
    pl_tls_conn_free(&s);
    client_free(&c);
    pl_tls_free(&t);
}

/* KeyUpdate from the client, without and with update_requested, and our
 * own after pl_tls__rekey_after records. */
TEST(tls13_key_update) {
    CHECK_EQ(setup(), 0);
    pl_tls *t = server(13, "a");
    client c;
    pl_tls_conn *s = connect13(t, &c, NULL, NULL);
    CHECK(s != NULL && pl_tls_conn_switched(s));
    uint8_t old_rd[48], old_wr[48];
    memcpy(old_rd, s->rd.secret, 48);
    memcpy(old_wr, s->wr.secret, 48);
    CHECK_EQ(SSL_key_update(c.ssl, SSL_KEY_UPDATE_NOT_REQUESTED), 1);
    CHECK_EQ(exchange(&c, s, 40000), 0);
    CHECK(memcmp(old_rd, s->rd.secret, 48) != 0);
    CHECK(memcmp(old_wr, s->wr.secret, 48) == 0);   /* not asked: ours stays */
    CHECK_EQ(s->rd.seq, 3 + 300);                   /* restarted at the update */

    memcpy(old_rd, s->rd.secret, 48);
    CHECK_EQ(SSL_key_update(c.ssl, SSL_KEY_UPDATE_REQUESTED), 1);
    CHECK_EQ(exchange(&c, s, 40000), 0);
    CHECK(memcmp(old_rd, s->rd.secret, 48) != 0);
    CHECK(memcmp(old_wr, s->wr.secret, 48) != 0);   /* we answered with ours */

    /* two requests before we read: one answer, still in step */
    CHECK_EQ(SSL_key_update(c.ssl, SSL_KEY_UPDATE_REQUESTED), 1);
    CHECK_EQ(SSL_write(c.ssl, "a", 1), 1);
    CHECK_EQ(SSL_key_update(c.ssl, SSL_KEY_UPDATE_REQUESTED), 1);
    got_len = 0;
    CHECK_EQ(pump(&c, s), PL_TLS_OK);
    CHECK_EQ(got_len, 1);
    CHECK_EQ(exchange(&c, s, 1000), 0);

    /* ours, every 3 records */
    uint64_t saved = pl_tls__rekey_after;
    pl_tls__rekey_after = 3;
    memcpy(old_wr, s->wr.secret, 48);
    int r = exchange(&c, s, 100000);
    pl_tls__rekey_after = saved;
    CHECK_EQ(r, 0);
    CHECK(memcmp(old_wr, s->wr.secret, 48) != 0);
    CHECK(s->wr.seq < 3);
    pl_tls_conn_free(&s);
    client_free(&c);
    pl_tls_free(&t);
}

/* A flipped bit anywhere in a record: the connection fails, nothing of it
 * is delivered, the client gets bad_record_mac; later plaintext is dropped. */
TEST(tls13_corrupt_record) {
    CHECK_EQ(setup(), 0);
    pl_tls *t = server(13, "a");
    static uint8_t rec[512], plain[65536], dst[256];
    const char msg[] = "do not deliver";
    size_t len = 5 + sizeof msg + 1 + 16;
    for (size_t at = 0; at < len; at++) {
        client c;
        pl_tls_conn *s = connect13(t, &c, NULL, NULL);
        CHECK(s != NULL && pl_tls_conn_switched(s));
        CHECK_EQ(SSL_write(c.ssl, msg, (int)sizeof msg), (int)sizeof msg);
        CHECK_EQ(BIO_read(c.out, rec, sizeof rec), (int)len);
        rec[at] ^= at == 3 ? 0x80 : 0x01;     /* the length's high bit: too long */
        got_len = 0;
        int r = pl_tls_conn_feed(s, rec, len, plain, sizeof plain, collect, NULL);
        if (at == 3) {
            CHECK_EQ(r, PL_TLS_EPROTO);
        } else if (at == 4) {
            CHECK(r == PL_TLS_OK || r == PL_TLS_EPROTO);   /* shorter: fails now or waits */
            if (r == PL_TLS_OK) CHECK_EQ(pl_tls_conn_feed(s, rec, 32, plain, sizeof plain, collect, NULL),
                                         PL_TLS_EPROTO);
        } else {
            CHECK_EQ(r, PL_TLS_EPROTO);
        }
        CHECK_EQ(got_len, 0);
        CHECK(strstr(pl_tls_error(), "TLS record failure") != NULL);
        CHECK(pl_tls_conn_notified(s));               /* no close_notify after it */
        CHECK_EQ(pl_tls_conn_write(s, "x", 1), 1);    /* dropped */
        to_client(&c, s);
        CHECK_EQ(client_read_all(&c, dst, sizeof dst), -1);   /* the alert */
        pl_tls_conn_free(&s);
        client_free(&c);
    }
    pl_tls_free(&t);
}

/* Records that must not come after the handshake. */
TEST(tls13_unexpected_records) {
    CHECK_EQ(setup(), 0);
    pl_tls *t = server(13, "a");
    static uint8_t plain[65536];
    static const uint8_t ccs[] = {20, 3, 3, 0, 1, 1};
    static const uint8_t hs[] = {22, 3, 3, 0, 4, 24, 0, 0, 0};
    static const uint8_t bad_version[] = {23, 3, 1, 0, 17, 0};
    const uint8_t *recs[] = {ccs, hs, bad_version};
    size_t lens[] = {sizeof ccs, sizeof hs, sizeof bad_version};
    for (int i = 0; i < 3; i++) {
        client c;
        pl_tls_conn *s = connect13(t, &c, NULL, NULL);
        CHECK(s != NULL && pl_tls_conn_switched(s));
        CHECK_EQ(pl_tls_conn_feed(s, recs[i], lens[i], plain, sizeof plain, collect, NULL), PL_TLS_EPROTO);
        CHECK(s->pend == NULL);
        pl_tls_conn_free(&s);
        client_free(&c);
    }
    pl_tls_free(&t);
}

TEST(tls13_close_notify) {
    CHECK_EQ(setup(), 0);
    pl_tls *t = server(13, "a");
    static uint8_t dst[256];
    client c;
    pl_tls_conn *s = connect13(t, &c, NULL, NULL);
    CHECK(s != NULL && pl_tls_conn_switched(s));
    /* ours: data then close_notify; nothing is written after it */
    CHECK_EQ(pl_tls_conn_write(s, "bye", 3), 3);
    CHECK(!pl_tls_conn_notified(s));
    pl_tls_conn_shutdown(s);
    CHECK(pl_tls_conn_notified(s));
    CHECK_EQ(pl_tls_conn_write(s, "late", 4), 0);
    to_client(&c, s);
    CHECK_EQ(SSL_read(c.ssl, dst, sizeof dst), 3);
    CHECK_EQ(client_read_all(&c, dst, sizeof dst), -2);
    pl_tls_conn_free(&s);
    client_free(&c);
    /* the client's: data before it is delivered, then EOF */
    s = connect13(t, &c, NULL, NULL);
    CHECK(s != NULL);
    CHECK_EQ(SSL_write(c.ssl, "last words", 10), 10);
    SSL_shutdown(c.ssl);
    got_len = 0;
    CHECK_EQ(pump(&c, s), PL_TLS_EOF);
    CHECK_EQ(got_len, 10);
    pl_tls_conn_free(&s);
    client_free(&c);
    pl_tls_free(&t);
}

/* A ticket issued before the switch resumes, and the resumed connection
 * switches too. */
TEST(tls13_resume_after_switch) {
    CHECK_EQ(setup(), 0);
    pl_tls *t = server(13, "a");
    static uint8_t dst[256];
    client c;
    pl_tls_conn *s = connect13(t, &c, NULL, NULL);
    CHECK(s != NULL && pl_tls_conn_switched(s));
    CHECK_EQ(pl_tls_conn_write(s, "hi", 2), 2);
    to_client(&c, s);
    CHECK_EQ(client_read_all(&c, dst, sizeof dst), 2);   /* the ticket came first */
    SSL_SESSION *sess = SSL_get1_session(c.ssl);
    CHECK(sess != NULL && SSL_SESSION_is_resumable(sess));
    SSL_shutdown(c.ssl);
    pl_tls_conn_free(&s);
    client_free(&c);
    s = connect13(t, &c, NULL, sess);
    SSL_SESSION_free(sess);
    CHECK(s != NULL);
    CHECK(SSL_session_reused(c.ssl));
    CHECK(pl_tls_conn_resumed(s));
    CHECK(pl_tls_conn_switched(s));
    CHECK_EQ(exchange(&c, s, 30000), 0);
    pl_tls_conn_free(&s);
    client_free(&c);
    pl_tls_free(&t);
}

TEST(tls13_each_cipher_suite) {
    CHECK_EQ(setup(), 0);
    pl_tls *t = server(13, "a");
    const char *suites[] = {"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384",
                            "TLS_CHACHA20_POLY1305_SHA256"};
    for (int i = 0; i < 3; i++) {
        client c;
        pl_tls_conn *s = connect13(t, &c, suites[i], NULL);
        CHECK(s != NULL);
        CHECK_STR(SSL_CIPHER_get_name(SSL_get_current_cipher(c.ssl)), suites[i]);
        CHECK(pl_tls_conn_switched(s));
        CHECK_EQ(s->suite, i + 1);
        CHECK_EQ(exchange(&c, s, 50000), 0);
        CHECK_EQ(SSL_key_update(c.ssl, SSL_KEY_UPDATE_REQUESTED), 1);
        CHECK_EQ(exchange(&c, s, 20000), 0);
        pl_tls_conn_free(&s);
        client_free(&c);
    }
    /* a suite outside the three (CCM) is refused */
    client c;
    client_init(&c, 0, NULL);
    SSL_set_ciphersuites(c.ssl, "TLS_AES_128_CCM_SHA256");
    pl_tls_conn *s = pl_tls_conn_new(t);
    CHECK_EQ(pump(&c, s), PL_TLS_EPROTO);
    pl_tls_conn_free(&s);
    client_free(&c);
    pl_tls_free(&t);
}

/* openssl_records: TLS 1.3 stays on OpenSSL (the flag's escape hatch). */
TEST(tls13_openssl_records_option) {
    CHECK_EQ(setup(), 0);
    char crt[256], key[256], err[256];
    snprintf(crt, sizeof crt, "%s/a.crt", dir);
    snprintf(key, sizeof key, "%s/a.key", dir);
    pl_tls_opts o = {crt, key, 13, NULL, 1};
    pl_tls *t = NULL;
    CHECK_EQ(pl_tls_new(&o, &t, err, sizeof err), 0);
    client c;
    pl_tls_conn *s = connect13(t, &c, NULL, NULL);
    CHECK(s != NULL);
    CHECK(!pl_tls_conn_switched(s));
    CHECK_EQ(exchange(&c, s, 30000), 0);
    pl_tls_conn_free(&s);
    client_free(&c);
    pl_tls_free(&t);
}

/* Sequence numbers never wrap: the connection fails first. */
TEST(tls13_sequence_exhausted) {
    CHECK_EQ(setup(), 0);
    pl_tls *t = server(13, "a");
    static uint8_t rec[256], plain[65536];
    client c;
    pl_tls_conn *s = connect13(t, &c, NULL, NULL);
    CHECK(s != NULL && pl_tls_conn_switched(s));
    CHECK_EQ(SSL_write(c.ssl, "x", 1), 1);
    int n = BIO_read(c.out, rec, sizeof rec);
    s->rd.seq = UINT64_MAX;
    got_len = 0;
    CHECK_EQ(pl_tls_conn_feed(s, rec, (size_t)n, plain, sizeof plain, collect, NULL), PL_TLS_EPROTO);
    CHECK_EQ(got_len, 0);
    pl_tls_conn_free(&s);
    client_free(&c);

    s = connect13(t, &c, NULL, NULL);
    CHECK(s != NULL);
    uint64_t saved = pl_tls__rekey_after;
    pl_tls__rekey_after = UINT64_MAX;
    s->wr.seq = UINT64_MAX - 2;
    long r1 = pl_tls_conn_write(s, "y", 1);
    s->wr.seq = UINT64_MAX;
    long r2 = pl_tls_conn_write(s, "z", 1);
    pl_tls__rekey_after = saved;
    CHECK_EQ(r1, 1);
    CHECK_EQ(r2, -1);
    CHECK(pl_tls_conn_notified(s));
    pl_tls_conn_free(&s);
    client_free(&c);
    pl_tls_free(&t);
}

/* Records only a misbehaving client sends, sealed by a mirror of the
 * server's record layer (the client's keys): each closes the connection
 * with the right alert and delivers nothing. */
TEST(tls13_crafted_records) {
    CHECK_EQ(setup(), 0);
    pl_tls *t = server(13, "a");
    static uint8_t plain[65536], big[16386];
    struct { uint8_t type; const char *body; size_t len; uint8_t alert; } cases[] = {
        {22, "\x04\x00\x00\x00", 4, 10},            /* NewSessionTicket from a client */
        {22, "\x18\x00\x00\x01\x02", 5, 47},        /* KeyUpdate, bad request value  */
        {22, "\x18\x00\x00\x01", 4, 10},            /* KeyUpdate cut short            */
        {22, "\x18\x00\x00\x01\x00\x18", 6, 50},    /* KeyUpdate not ending the record */
        {21, "\x02\x28", 2, 0},                     /* a fatal alert: no answer       */
        {21, "\x01", 1, 50},                        /* a 1-byte alert                 */
        {20, "\x01", 1, 10},                        /* change_cipher_spec inside      */
        {0, "", 0, 10},                             /* all padding, no content type   */
        {23, NULL, 16385, 22},                      /* content over 2^14              */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        client c;
        pl_tls_conn *s = connect13(t, &c, NULL, NULL);
        CHECK(s != NULL && pl_tls_conn_switched(s));
        pl_tls_conn mirror = {0};
        mirror.suite = s->suite;
        mirror.wr = s->rd;
        const uint8_t *body = cases[i].body ? (const uint8_t *)cases[i].body : big;
        CHECK_EQ(pl_tls__rec_seal(&mirror, cases[i].type, body, cases[i].len), 0);
        got_len = 0;
        CHECK_EQ(pl_tls_conn_feed(s, mirror.out, mirror.out_len, plain, sizeof plain, collect, NULL),
                 PL_TLS_EPROTO);
        CHECK_EQ(got_len, 0);
        CHECK(pl_tls_conn_notified(s));
        /* our alert, if any, is what the client reads */
        const uint8_t *o;
        size_t on = pl_tls_conn_out(s, &o);
        CHECK_EQ(on != 0, cases[i].alert != 0 || cases[i].type != 21);
        if (on) {
            pl_tls_conn peer = {0};                      /* opens what we sent */
            peer.suite = s->suite;
            peer.rd = s->wr;
            peer.rd.seq--;                               /* the alert's own number */
            uint8_t *copy = malloc(on);
            memcpy(copy, o, on);
            got_len = 0;
            CHECK_EQ(pl_tls__rec_feed(&peer, copy, on, plain, sizeof plain, collect, NULL), PL_TLS_EPROTO);
            char want[64];
            snprintf(want, sizeof want, "TLS record failure: peer sent alert %u", cases[i].alert);
            CHECK_STR(pl_tls_error(), want);
            free(copy);
            pl_tls__rec_release(&peer);
            free(peer.out);
        }
        free(mirror.out);
        pl_tls_conn_free(&s);
        client_free(&c);
    }
    pl_tls_free(&t);
}

/* Padding after the content type is stripped (RFC 8446 5.4); an empty
 * application data record delivers nothing and is fine. */
TEST(tls13_padding_and_empty_records) {
    CHECK_EQ(setup(), 0);
    pl_tls *t = server(13, "a");
    static uint8_t plain[65536];
    client c;
    pl_tls_conn *s = connect13(t, &c, NULL, NULL);
    CHECK(s != NULL && pl_tls_conn_switched(s));
    pl_tls_conn mirror = {0};
    mirror.suite = s->suite;
    mirror.wr = s->rd;
    /* "abc", type 23, then padding: sealed as content with a zero "type" */
    CHECK_EQ(pl_tls__rec_seal(&mirror, 0, (const uint8_t *)"abc\x17\0\0\0\0\0", 9), 0);
    CHECK_EQ(pl_tls__rec_seal(&mirror, 23, (const uint8_t *)"", 0), 0);
    CHECK_EQ(pl_tls__rec_seal(&mirror, 23, (const uint8_t *)"def", 3), 0);
    got_len = 0;
    CHECK_EQ(pl_tls_conn_feed(s, mirror.out, mirror.out_len, plain, sizeof plain, collect, NULL), PL_TLS_OK);
    CHECK_EQ(got_len, 6);
    CHECK(memcmp(got, "abcdef", 6) == 0);
    CHECK_EQ(s->rd.seq, 3);
    free(mirror.out);
    /* the real client's next record reuses sequence number 0, which the
     * server has passed: its nonce no longer matches and it is refused */
    CHECK_EQ(exchange(&c, s, 1000), -3);
    CHECK(strstr(pl_tls_error(), "bad record MAC") != NULL);
    pl_tls_conn_free(&s);
    client_free(&c);
    pl_tls_free(&t);
}
