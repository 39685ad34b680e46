/* test_origin.c — the Origin parser and matcher, CIDR lists, trusted
 * X-Forwarded-* (src/http/origin.c; docs/protocol.md "Origin checks"). */
#include "test.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include "chat/auth.h"
#include "http/origin.h"

static int parses(const char *s) {
    pl_origin o;
    return pl_origin_parse(s, strlen(s), &o) == 0;
}

TEST(origin_parse_strict) {
    pl_origin o;
    CHECK_EQ(pl_origin_parse("http://localhost:8080", 21, &o), 0);
    CHECK_EQ(o.https, 0);
    CHECK_STR(o.host, "localhost");
    CHECK_EQ(o.port, 8080);
    CHECK_EQ(pl_origin_parse("HTTPS://Chat.Example.COM", 24, &o), 0);
    CHECK_EQ(o.https, 1);
    CHECK_STR(o.host, "chat.example.com");
    CHECK_EQ(o.port, 443);                       /* the default made explicit */
    CHECK(parses("http://127.0.0.1"));
    CHECK(parses("http://[::1]:8080"));
    CHECK(parses("http://xn--bcher-kva.example"));
    CHECK(parses("https://a.b-c_d.example:65535"));

    static const char *const bad[] = {
        "null", "", "http://", "https://", "http:/host", "http//host", "ftp://host", "ws://host",
        "file://", "http://host/", "http://host/path", "evil.example/host", "http://evil.example/host",
        "http://host@evil.example", "http://user:pw@host", "http://host?x", "http://host#f",
        "http://host:", "http://host:0", "http://host:65536", "http://host:123456", "http://host:8a",
        "http://host:+80", "http://ho st", " http://host", "http://host ", "http://host, http://other",
        "http://host http://other", "http://h%6fst", "http://[::1", "http://[]", "http://[::1]x",
        "http://[::g]", "http://hôst", "http://host\\@evil", "http://:80",
        "http://host:080", "http://host:00080",          /* the port exactly: no leading zero */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (parses(bad[i])) {
            fprintf(stderr, "  accepted %s\n", bad[i]);
            CHECK(!"a malformed Origin was accepted");
        }
    }
    /* NUL inside: the length counts, not the C string */
    CHECK(pl_origin_parse("http://host\0.evil", 17, &o) != 0);
}

TEST(origin_same_is_exact) {
    pl_origin a, b;
    CHECK_EQ(pl_origin_parse("http://host:80", 14, &a), 0);
    CHECK_EQ(pl_origin_parse("http://HOST", 11, &b), 0);
    CHECK(pl_origin_same(&a, &b));
    CHECK_EQ(pl_origin_parse("https://host:80", 15, &b), 0);
    CHECK(!pl_origin_same(&a, &b));              /* scheme differs */
    CHECK_EQ(pl_origin_parse("http://host:8080", 16, &b), 0);
    CHECK(!pl_origin_same(&a, &b));              /* port differs */
    CHECK_EQ(pl_origin_parse("http://host.evil.example", 24, &b), 0);
    CHECK(!pl_origin_same(&a, &b));
    CHECK_EQ(pl_origin_parse("http://evilhost", 15, &b), 0);
    CHECK(!pl_origin_same(&a, &b));
    CHECK_EQ(pl_origin_parse_host("host", 4, 0, &b), 0);
    CHECK(pl_origin_same(&a, &b));
    CHECK_EQ(pl_origin_parse_host("host:443", 8, 1, &b), 0);
    CHECK_EQ(pl_origin_parse("https://host", 12, &a), 0);
    CHECK(pl_origin_same(&a, &b));
    CHECK(pl_origin_parse_host("host/x", 6, 0, &b) != 0);
    CHECK(pl_origin_parse_host("", 0, 0, &b) != 0);
}

static struct sockaddr_storage addr(const char *ip) {
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    struct sockaddr_in *a4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, ip, &a4->sin_addr) == 1) a4->sin_family = AF_INET;
    else if (inet_pton(AF_INET6, ip, &a6->sin6_addr) == 1) a6->sin6_family = AF_INET6;
    return ss;
}

TEST(origin_cidr) {
    pl_cidr c;
    CHECK_EQ(pl_cidr_parse("127.0.0.0/8", 11, &c), 0);
    struct sockaddr_storage s = addr("127.1.2.3");
    CHECK(pl_cidr_match(&c, (struct sockaddr *)&s));
    s = addr("128.0.0.1");
    CHECK(!pl_cidr_match(&c, (struct sockaddr *)&s));
    s = addr("::ffff:127.0.0.1");                /* IPv4-mapped counts as IPv4 */
    CHECK(pl_cidr_match(&c, (struct sockaddr *)&s));
    s = addr("::1");
    CHECK(!pl_cidr_match(&c, (struct sockaddr *)&s));
    CHECK_EQ(pl_cidr_parse("::1", 3, &c), 0);
    CHECK(pl_cidr_match(&c, (struct sockaddr *)&s));
    CHECK_EQ(pl_cidr_parse("10.1.2.0/23", 11, &c), 0);
    s = addr("10.1.3.255");
    CHECK(pl_cidr_match(&c, (struct sockaddr *)&s));
    s = addr("10.1.4.0");
    CHECK(!pl_cidr_match(&c, (struct sockaddr *)&s));
    CHECK_EQ(pl_cidr_parse("fd00::/8", 8, &c), 0);
    s = addr("fd12::5");
    CHECK(pl_cidr_match(&c, (struct sockaddr *)&s));
    CHECK_EQ(pl_cidr_parse("0.0.0.0/0", 9, &c), 0);
    s = addr("8.8.8.8");
    CHECK(pl_cidr_match(&c, (struct sockaddr *)&s));
    CHECK(pl_cidr_parse("10.0.0.0/33", 11, &c) != 0);
    CHECK(pl_cidr_parse("10.0.0.0/", 9, &c) != 0);
    CHECK(pl_cidr_parse("10.0.0.0/-1", 11, &c) != 0);
    CHECK(pl_cidr_parse("::1/129", 7, &c) != 0);
    CHECK(pl_cidr_parse("localhost", 9, &c) != 0);
    CHECK(pl_cidr_parse("", 0, &c) != 0);
}

/* Parses a request head into req (buf must outlive it). */
static int head(const char *buf, pl_http_req *req) {
    memset(req, 0, sizeof *req);
    return pl_http_parse(buf, strlen(buf), req);
}

TEST(origin_policy_decides) {
    pl_origin_policy p;
    char err[128];
    CHECK(pl_origin_policy_init(&p, "http://evil.example/x", "", err, sizeof err) != 0);
    CHECK(strstr(err, "evil.example/x") != NULL);
    CHECK(pl_origin_policy_init(&p, "", "10.0.0.0/99", err, sizeof err) != 0);
    CHECK_EQ(pl_origin_policy_init(&p, " https://app.example.com , http://localhost:3000", "127.0.0.0/8, ::1",
                                   err, sizeof err), 0);
    CHECK_EQ(p.nallowed, 2);
    CHECK_EQ(p.ntrusted, 2);
    struct sockaddr_storage lo = addr("127.0.0.1"), far = addr("203.0.113.7");
    const struct sockaddr *LO = (struct sockaddr *)&lo, *FAR = (struct sockaddr *)&far;
    pl_http_req r;
    struct { const char *req; const struct sockaddr *peer; int ok; } cases[] = {
        /* no Origin: a non-browser client */
        {"GET /ws HTTP/1.1\r\nHost: h:8080\r\n\r\n", FAR, 1},
        /* own origin, as the client reached it */
        {"GET /ws HTTP/1.1\r\nHost: h:8080\r\nOrigin: http://h:8080\r\n\r\n", FAR, 1},
        {"GET /ws HTTP/1.1\r\nHost: H:8080\r\nOrigin: http://h:8080\r\n\r\n", FAR, 1},
        {"GET /ws HTTP/1.1\r\nHost: h\r\nOrigin: http://h:80\r\n\r\n", FAR, 1},
        {"GET /ws HTTP/1.1\r\nHost: h:8080\r\nOrigin: http://h:8081\r\n\r\n", FAR, 0},
        {"GET /ws HTTP/1.1\r\nHost: h:8080\r\nOrigin: https://h:8080\r\n\r\n", FAR, 0},
        {"GET /ws HTTP/1.1\r\nHost: h:8080\r\nOrigin: null\r\n\r\n", FAR, 0},
        {"GET /ws HTTP/1.1\r\nHost: h:8080\r\nOrigin: \r\n\r\n", FAR, 0},
        {"GET /ws HTTP/1.1\r\nHost: h:8080\r\nOrigin: http://h.evil.example:8080\r\n\r\n", FAR, 0},
        {"GET /ws HTTP/1.1\r\nHost: h:8080\r\nOrigin: http://evil.example/h:8080\r\n\r\n", FAR, 0},
        {"GET /ws HTTP/1.1\r\nHost: h:8080\r\nOrigin: http://h:8080@evil.example\r\n\r\n", FAR, 0},
        {"GET /ws HTTP/1.1\r\nHost: h:8080\r\nOrigin: https://evil.example\r\n\r\n", FAR, 0},
        /* two Origin headers: refused even if the first is good */
        {"GET /ws HTTP/1.1\r\nHost: h:8080\r\nOrigin: http://h:8080\r\nOrigin: http://x\r\n\r\n", FAR, 0},
        /* the allow-list */
        {"GET /ws HTTP/1.1\r\nHost: h:8080\r\nOrigin: https://app.example.com\r\n\r\n", FAR, 1},
        {"GET /ws HTTP/1.1\r\nHost: h:8080\r\nOrigin: https://app.example.com:443\r\n\r\n", FAR, 1},
        {"GET /ws HTTP/1.1\r\nHost: h:8080\r\nOrigin: http://app.example.com\r\n\r\n", FAR, 0},
        {"GET /ws HTTP/1.1\r\nHost: h:8080\r\nOrigin: http://localhost:3000\r\n\r\n", FAR, 1},
        /* X-Forwarded-*: believed from a trusted proxy only */
        {"GET /ws HTTP/1.1\r\nHost: backend:8080\r\nX-Forwarded-Host: chat.example\r\n"
         "X-Forwarded-Proto: https\r\nOrigin: https://chat.example\r\n\r\n", LO, 1},
        {"GET /ws HTTP/1.1\r\nHost: backend:8080\r\nX-Forwarded-Host: chat.example\r\n"
         "X-Forwarded-Proto: https\r\nOrigin: https://chat.example\r\n\r\n", FAR, 0},
        {"GET /ws HTTP/1.1\r\nHost: backend:8080\r\nX-Forwarded-Host: chat.example\r\n"
         "X-Forwarded-Proto: https\r\nOrigin: http://backend:8080\r\n\r\n", FAR, 1},
        {"GET /ws HTTP/1.1\r\nHost: backend:8080\r\nX-Forwarded-Host: chat.example\r\n"
         "X-Forwarded-Proto: https\r\nOrigin: http://backend:8080\r\n\r\n", LO, 0},
        {"GET /ws HTTP/1.1\r\nHost: h:8080\r\nX-Forwarded-Proto: https\r\nOrigin: https://h:8080\r\n\r\n", LO, 1},
        {"GET /ws HTTP/1.1\r\nHost: b\r\nX-Forwarded-Host: chat.example:8443, other\r\n"
         "X-Forwarded-Proto: https, http\r\nOrigin: https://chat.example:8443\r\n\r\n", LO, 1},
        {"GET /ws HTTP/1.1\r\nHost: b\r\nX-Forwarded-Host: chat.example\r\nOrigin: http://chat.example\r\n\r\n",
         NULL, 0},
        /* HTTP/1.0 without Host: only the allow-list can match */
        {"GET /ws HTTP/1.0\r\nOrigin: http://h\r\n\r\n", FAR, 0},
        {"GET /ws HTTP/1.0\r\nOrigin: http://localhost:3000\r\n\r\n", FAR, 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        CHECK_EQ(head(cases[i].req, &r), 0);
        int got = pl_origin_allowed(&p, &r, cases[i].peer, 0);
        if (got != cases[i].ok) {
            fprintf(stderr, "  case %zu: got %d for %s\n", i, got, cases[i].req);
            CHECK(!"wrong Origin decision");
        }
    }
    pl_origin_policy_release(&p);

    /* no trusted proxies: loopback's X-Forwarded-Host is ignored */
    CHECK_EQ(pl_origin_policy_init(&p, "", "", err, sizeof err), 0);
    CHECK_EQ(head("GET /ws HTTP/1.1\r\nHost: b:1\r\nX-Forwarded-Host: chat.example\r\n"
                  "Origin: http://chat.example\r\n\r\n", &r), 0);
    CHECK_EQ(pl_origin_allowed(&p, &r, LO, 0), 0);
    CHECK_EQ(head("GET /ws HTTP/1.1\r\nHost: b:1\r\nX-Forwarded-Host: chat.example\r\n"
                  "Origin: http://b:1\r\n\r\n", &r), 0);
    CHECK_EQ(pl_origin_allowed(&p, &r, LO, 0), 1);
    pl_origin_policy_release(&p);
}

/* Over TLS the own origin is https (scheme, host and port of Host; 443 by
 * default); an http origin on the same host and port is another origin. */
TEST(origin_policy_tls) {
    pl_origin_policy p;
    pl_http_req r;
    char err[128];
    struct sockaddr_storage far = addr("203.0.113.9");
    const struct sockaddr *FAR = (struct sockaddr *)&far;
    CHECK_EQ(pl_origin_policy_init(&p, "", "127.0.0.0/8", err, sizeof err), 0);
    CHECK_EQ(head("GET /ws HTTP/1.1\r\nHost: h:8443\r\nOrigin: https://h:8443\r\n\r\n", &r), 0);
    CHECK_EQ(pl_origin_allowed(&p, &r, FAR, 1), 1);
    CHECK_EQ(pl_origin_allowed(&p, &r, FAR, 0), 0);
    CHECK_EQ(head("GET /ws HTTP/1.1\r\nHost: h:8443\r\nOrigin: http://h:8443\r\n\r\n", &r), 0);
    CHECK_EQ(pl_origin_allowed(&p, &r, FAR, 1), 0);
    CHECK_EQ(pl_origin_allowed(&p, &r, FAR, 0), 1);
    CHECK_EQ(head("GET /ws HTTP/1.1\r\nHost: h\r\nOrigin: https://h:443\r\n\r\n", &r), 0);
    CHECK_EQ(pl_origin_allowed(&p, &r, FAR, 1), 1);
    CHECK_EQ(head("GET /ws HTTP/1.1\r\nHost: h\r\nOrigin: https://h.evil.example\r\n\r\n", &r), 0);
    CHECK_EQ(pl_origin_allowed(&p, &r, FAR, 1), 0);
    pl_origin_policy_release(&p);
}

TEST(auth_common_passwords) {
    CHECK(pl_auth_common_password("password", 8));
    CHECK(pl_auth_common_password("PassWord", 8));          /* case-insensitive */
    CHECK(pl_auth_common_password("12345678", 8));
    CHECK(pl_auth_common_password("iloveyou", 8));
    CHECK(pl_auth_common_password("Trustno1", 8));
    CHECK(pl_auth_common_password("felicidade", 10));       /* near the end of the list */
    CHECK(!pl_auth_common_password("correct horse battery", 21));
    CHECK(!pl_auth_common_password("password\0", 9));       /* the length counts */
    CHECK(!pl_auth_common_password("passwor", 7));
    CHECK(!pl_auth_common_password("", 0));
    char longpw[300];
    memset(longpw, 'a', sizeof longpw);
    CHECK(!pl_auth_common_password(longpw, sizeof longpw));
}
