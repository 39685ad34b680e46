/* test_http.c — unit tests for src/http/http_parser.c: finding the end of a
 * head (incrementally), parsing request heads, and the lookup helpers. */
#include "test.h"
#include "http/http_parser.h"

#include <stdlib.h>

/* Parses the C string s as a whole head. */
static int parse(const char *s, pl_http_req *req) {
    return pl_http_parse(s, strlen(s), req);
}

/* 1 if the pl_str equals the C string z exactly. */
static int str_is(pl_str s, const char *z) {
    return s.p && s.n == strlen(z) && memcmp(s.p, z, s.n) == 0;
}

/* Parses "GET / HTTP/1.1", "Host: h", then the header lines in extra (each
 * ending in CRLF), then the blank line. */
static int parse_with(const char *extra, pl_http_req *req) {
    static char buf[8192];
    snprintf(buf, sizeof buf, "GET / HTTP/1.1\r\nHost: h\r\n%s\r\n", extra);
    return parse(buf, req);
}

/* ---- pl_http_head_end ---------------------------------------------------- */

TEST(http_head_end_whole) {
    const char *h = "GET / HTTP/1.1\r\nHost: a\r\n\r\nBODY";
    size_t scan = 0;
    CHECK_EQ(pl_http_head_end(h, strlen(h), &scan), strlen(h) - 4);
}

TEST(http_head_end_bare_lf) {
    const char *h = "GET / HTTP/1.1\nHost: a\n\nxx";
    size_t scan = 0;
    CHECK_EQ(pl_http_head_end(h, strlen(h), &scan), strlen(h) - 2);
    scan = 0;
    const char *m = "GET / HTTP/1.1\r\nHost: a\n\r\n";   /* mixed endings */
    CHECK_EQ(pl_http_head_end(m, strlen(m), &scan), strlen(m));
}

TEST(http_head_end_need_more) {
    const char *h = "GET / HTTP/1.1\r\nHost: a\r\n\r";
    size_t scan = 0;
    CHECK_EQ(pl_http_head_end(h, strlen(h), &scan), 0);
    CHECK(scan <= strlen(h) && scan + 3 >= strlen(h));
    CHECK_EQ(pl_http_head_end(h, 0, &scan), 0);         /* shrunk: safe */
    /* "\r\r\n" and "\r\n\r\r\n" are not blank lines. */
    const char *b = "GET / HTTP/1.1\r\r\n\r\r\n";
    scan = 0;
    CHECK_EQ(pl_http_head_end(b, strlen(b), &scan), 0);
}

/* Feeds a head one byte at a time with the scan offset carried. After each
 * call that needs more, the bytes more than 3 before *scan are overwritten
 * with '\n' in the buffer the parser sees: if it ever looked at them again it
 * would find a false "\n\n". So each byte is examined O(1) times, and the
 * total work is at most n + 3 bytes per call. */
TEST(http_head_end_one_byte_at_a_time) {
    const char *h = "GET /chat?x=1 HTTP/1.1\r\nHost: example.com\r\n"
                    "Upgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
    size_t n = strlen(h), scan = 0, end = 0, work = 0, calls = 0;
    char *buf = malloc(n);
    CHECK(buf);
    for (size_t len = 1; len <= n && !end; len++) {
        size_t before = scan;
        buf[len - 1] = h[len - 1];
        end = pl_http_head_end(buf, len, &scan);
        calls++;
        CHECK(scan >= before || end);
        work += len - (before < len ? before : len);
        if (!end) {
            CHECK(scan <= len && scan + 3 >= len);
            for (size_t i = 0; i + 3 < scan; i++) buf[i] = '\n';
        }
    }
    free(buf);
    CHECK_EQ(end, n);
    CHECK_EQ(calls, n);
    CHECK(work <= n + 3 * calls);
}

/* The terminator split across calls at every possible point. */
TEST(http_head_end_split_terminator) {
    const char *h = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";
    size_t n = strlen(h);
    for (size_t cut = n - 4; cut < n; cut++) {
        size_t scan = 0;
        CHECK_EQ(pl_http_head_end(h, cut, &scan), 0);
        CHECK_EQ(pl_http_head_end(h, n, &scan), n);
    }
    /* And in two-byte steps. */
    size_t scan = 0, end = 0;
    for (size_t len = 2; !end && len <= n + 1; len += 2)
        end = pl_http_head_end(h, len < n ? len : n, &scan);
    CHECK_EQ(end, n);
}

/* ---- pl_http_parse: good requests ---------------------------------------- */

TEST(http_parse_get_with_query) {
    pl_http_req r;
    CHECK_EQ(parse("GET /api/messages?conv=42&before=100 HTTP/1.1\r\n"
                   "Host: chat.example\r\nAccept: */*\r\n\r\n", &r), 0);
    CHECK_EQ(r.method, PL_HTTP_GET);
    CHECK(str_is(r.method_str, "GET"));
    CHECK(str_is(r.target, "/api/messages?conv=42&before=100"));
    CHECK(str_is(r.path, "/api/messages"));
    CHECK(str_is(r.query, "conv=42&before=100"));
    CHECK_EQ(r.minor, 1);
    CHECK_EQ(r.nheaders, 2);
    CHECK(str_is(r.headers[1].name, "Accept"));
    CHECK(str_is(r.headers[1].value, "*/*"));
    CHECK(str_is(r.host, "chat.example"));
    CHECK_EQ(r.content_length, -1);
    CHECK_EQ(r.keep_alive, 1);
    CHECK_EQ(r.upgrade_ws, 0);
    CHECK_EQ(r.ws_key.n, 0);
    CHECK(r.authorization.p == NULL);
    char v[16];
    CHECK(pl_http_query_get(r.query, "before", v, sizeof v));
    CHECK_STR(v, "100");
}

TEST(http_parse_no_query) {
    pl_http_req r;
    CHECK_EQ(parse("GET /x HTTP/1.1\r\nHost: a\r\n\r\n", &r), 0);
    CHECK(str_is(r.path, "/x"));
    CHECK_EQ(r.query.n, 0);
    CHECK_EQ(parse("GET /x? HTTP/1.1\r\nHost: a\r\n\r\n", &r), 0);
    CHECK(str_is(r.path, "/x"));
    CHECK_EQ(r.query.n, 0);
}

TEST(http_parse_post_content_length) {
    pl_http_req r;
    const char *h = "POST /api/login HTTP/1.1\r\nHost: a\r\n"
                    "Content-Type: application/json\r\nContent-Length: 27\r\n"
                    "Authorization: Bearer abc\r\n\r\n";
    CHECK_EQ(parse(h, &r), 0);
    CHECK_EQ(r.method, PL_HTTP_POST);
    CHECK_EQ(r.content_length, 27);
    CHECK(str_is(r.content_type, "application/json"));
    CHECK(str_is(r.authorization, "Bearer abc"));
    /* Duplicates that agree are fine; so is zero with leading zeros. */
    CHECK_EQ(parse_with("Content-Length: 5\r\ncontent-length: 5\r\n", &r), 0);
    CHECK_EQ(r.content_length, 5);
    CHECK_EQ(parse_with("Content-Length: 000\r\n", &r), 0);
    CHECK_EQ(r.content_length, 0);
    CHECK_EQ(parse_with("Content-Length: 9223372036854775807\r\n", &r), 0);
    CHECK(r.content_length == INT64_MAX);
}

TEST(http_parse_methods) {
    static const struct { const char *m; pl_http_method e; } t[] = {
        { "GET", PL_HTTP_GET }, { "HEAD", PL_HTTP_HEAD }, { "POST", PL_HTTP_POST },
        { "PUT", PL_HTTP_PUT }, { "DELETE", PL_HTTP_DELETE },
        { "PATCH", PL_HTTP_PATCH }, { "OPTIONS", PL_HTTP_OPTIONS },
        { "get", PL_HTTP_OTHER }, { "BREW", PL_HTTP_OTHER }, { "GETS", PL_HTTP_OTHER },
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        char buf[128];
        pl_http_req r;
        snprintf(buf, sizeof buf, "%s / HTTP/1.1\r\nHost: a\r\n\r\n", t[i].m);
        CHECK_EQ(parse(buf, &r), 0);
        CHECK_EQ(r.method, t[i].e);
        CHECK(str_is(r.method_str, t[i].m));
    }
}

TEST(http_parse_websocket_upgrade) {
    pl_http_req r;
    const char *h = "GET /ws HTTP/1.1\r\n"
                    "Host: chat.example:8080\r\n"
                    "Upgrade: websocket\r\n"
                    "Connection: keep-alive, Upgrade\r\n"
                    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                    "Sec-WebSocket-Version: 13\r\n"
                    "Sec-WebSocket-Protocol: parley.v1, chat\r\n"
                    "Sec-WebSocket-Protocol: later\r\n"
                    "Origin: https://chat.example\r\n\r\n";
    CHECK_EQ(parse(h, &r), 0);
    CHECK_EQ(r.upgrade_ws, 1);
    CHECK_EQ(r.keep_alive, 1);
    CHECK(str_is(r.ws_key, "dGhlIHNhbXBsZSBub25jZQ=="));
    CHECK(str_is(r.ws_version, "13"));
    CHECK(str_is(r.ws_protocol, "parley.v1, chat"));   /* first occurrence */
    CHECK(str_is(r.origin, "https://chat.example"));
    CHECK(str_is(r.host, "chat.example:8080"));
    CHECK(str_is(pl_http_header_get(&r, "sec-websocket-protocol"), "parley.v1, chat"));
    CHECK_EQ(r.nheaders, 8);
    CHECK_EQ(pl_http_header_count(&r, "SEC-WEBSOCKET-PROTOCOL"), 2);
    CHECK_EQ(pl_http_header_count(&r, "origin"), 1);
    CHECK_EQ(pl_http_header_count(&r, "authorization"), 0);
}

TEST(http_parse_upgrade_case_and_spread) {
    pl_http_req r;
    CHECK_EQ(parse_with("UPGRADE: WebSocket\r\nconnection: UPGRADE\r\n", &r), 0);
    CHECK_EQ(r.upgrade_ws, 1);
    /* The tokens may be spread over repeated fields. */
    CHECK_EQ(parse_with("Connection: keep-alive\r\nUpgrade: h2c, websocket\r\n"
                        "Connection: upgrade\r\n", &r), 0);
    CHECK_EQ(r.upgrade_ws, 1);
    /* Missing either half, or a token only as a substring, is not an upgrade. */
    CHECK_EQ(parse_with("Upgrade: websocket\r\n", &r), 0);
    CHECK_EQ(r.upgrade_ws, 0);
    CHECK_EQ(parse_with("Connection: Upgrade\r\n", &r), 0);
    CHECK_EQ(r.upgrade_ws, 0);
    CHECK_EQ(parse_with("Upgrade: websockets\r\nConnection: upgraded\r\n", &r), 0);
    CHECK_EQ(r.upgrade_ws, 0);
    /* RFC 9110 7.8: Upgrade is ignored in HTTP/1.0. */
    CHECK_EQ(parse("GET / HTTP/1.0\r\nUpgrade: websocket\r\n"
                   "Connection: upgrade\r\n\r\n", &r), 0);
    CHECK_EQ(r.upgrade_ws, 0);
}

TEST(http_parse_keep_alive_rules) {
    pl_http_req r;
    CHECK_EQ(parse("GET / HTTP/1.0\r\n\r\n", &r), 0);       /* no Host needed */
    CHECK_EQ(r.minor, 0);
    CHECK_EQ(r.keep_alive, 0);
    CHECK_EQ(parse("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", &r), 0);
    CHECK_EQ(r.keep_alive, 1);
    CHECK_EQ(parse("GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n", &r), 0);
    CHECK_EQ(r.keep_alive, 0);
    CHECK_EQ(parse_with("Connection: close\r\n", &r), 0);
    CHECK_EQ(r.keep_alive, 0);
    CHECK_EQ(parse_with("Connection: foo, CLOSE \r\n", &r), 0);
    CHECK_EQ(r.keep_alive, 0);
    CHECK_EQ(parse_with("Connection: closed\r\n", &r), 0);
    CHECK_EQ(r.keep_alive, 1);
    CHECK_EQ(parse_with("", &r), 0);
    CHECK_EQ(r.keep_alive, 1);
}

TEST(http_parse_value_trimming_and_lookup) {
    pl_http_req r;
    CHECK_EQ(parse_with("X-A: \t spaced out \t\r\nX-Empty:\r\nX-B:tight\r\n"
                        "x-a: second\r\nX-Utf8: caf\xc3\xa9\r\n", &r), 0);
    CHECK(str_is(pl_http_header_get(&r, "x-a"), "spaced out"));
    CHECK(str_is(pl_http_header_get(&r, "X-A"), "spaced out"));
    pl_str e = pl_http_header_get(&r, "x-empty");
    CHECK(e.p != NULL);
    CHECK_EQ(e.n, 0);
    CHECK(str_is(pl_http_header_get(&r, "X-B"), "tight"));
    CHECK(str_is(pl_http_header_get(&r, "x-utf8"), "caf\xc3\xa9"));
    CHECK(pl_http_header_get(&r, "x-missing").p == NULL);
    CHECK(pl_http_header_get(&r, "x-").p == NULL);
    CHECK(pl_http_header_get(&r, "x-a-longer").p == NULL);
}

TEST(http_parse_bare_lf_and_leading_crlf) {
    pl_http_req r;
    CHECK_EQ(parse("GET /a HTTP/1.1\nHost: x\n\n", &r), 0);
    CHECK(str_is(r.host, "x"));
    CHECK_EQ(parse("\r\nGET /a HTTP/1.1\r\nHost: x\r\n\r\n", &r), 0);
    CHECK(str_is(r.path, "/a"));
    CHECK_EQ(parse("\r\n\r\nGET /a HTTP/1.1\r\nHost: x\r\n\r\n", &r), PL_HTTP_EBAD);
}

TEST(http_parse_options_star) {
    pl_http_req r;
    CHECK_EQ(parse("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", &r), 0);
    CHECK(str_is(r.target, "*"));
    CHECK_EQ(parse("GET * HTTP/1.1\r\nHost: a\r\n\r\n", &r), PL_HTTP_EBAD);
    CHECK_EQ(parse("OPTIONS *x HTTP/1.1\r\nHost: a\r\n\r\n", &r), PL_HTTP_EBAD);
}

/* RFC 9112 3.2.2: a server MUST accept the absolute-form (audit Z: it was
 * 400); its path and query are the request's. Without a path it is EBAD. */
TEST(http_parse_absolute_form) {
    pl_http_req r;
    CHECK_EQ(parse("GET http://127.0.0.1:8080/healthz HTTP/1.1\r\nHost: a\r\n\r\n", &r), 0);
    CHECK(str_is(r.path, "/healthz"));
    CHECK(str_is(r.target, "/healthz"));
    CHECK_EQ(r.query.n, 0);
    CHECK_EQ(parse("GET HTTPS://chat.example/api/v1/x?a=1 HTTP/1.1\r\nHost: a\r\n\r\n", &r), 0);
    CHECK(str_is(r.path, "/api/v1/x"));
    CHECK(str_is(r.query, "a=1"));
    CHECK_EQ(parse("GET http://chat.example HTTP/1.1\r\nHost: a\r\n\r\n", &r), PL_HTTP_EBAD);
    CHECK_EQ(parse("GET http://chat.example?/x HTTP/1.1\r\nHost: a\r\n\r\n", &r), PL_HTTP_EBAD);
    CHECK_EQ(parse("GET ftp://chat.example/x HTTP/1.1\r\nHost: a\r\n\r\n", &r), PL_HTTP_EBAD);
    CHECK_EQ(parse("GET x/y HTTP/1.1\r\nHost: a\r\n\r\n", &r), PL_HTTP_EBAD);
}

/* ---- pl_http_parse: errors ------------------------------------------------ */

TEST(http_parse_bad_versions) {
    pl_http_req r;
    CHECK_EQ(parse("GET / HTTP/2.0\r\nHost: a\r\n\r\n", &r), PL_HTTP_EVERSION);
    CHECK_EQ(parse("GET / HTTP/1.2\r\nHost: a\r\n\r\n", &r), PL_HTTP_EVERSION);
    CHECK_EQ(parse("GET / HTTP/0.9\r\nHost: a\r\n\r\n", &r), PL_HTTP_EVERSION);
    CHECK_EQ(parse("GET / HTTP/1.10\r\nHost: a\r\n\r\n", &r), PL_HTTP_EBAD);
    CHECK_EQ(parse("GET / http/1.1\r\nHost: a\r\n\r\n", &r), PL_HTTP_EBAD);
    CHECK_EQ(parse("GET / HTTP/1.x\r\nHost: a\r\n\r\n", &r), PL_HTTP_EBAD);
    CHECK_EQ(parse("GET / HTTP/1.1 \r\nHost: a\r\n\r\n", &r), PL_HTTP_EBAD);
    CHECK_EQ(parse("GET /\r\n\r\n", &r), PL_HTTP_EBAD);            /* HTTP/0.9 */
}

TEST(http_parse_bad_request_line) {
    pl_http_req r;
    CHECK_EQ(parse("GET foo HTTP/1.1\r\nHost: a\r\n\r\n", &r), PL_HTTP_EBAD);
    CHECK_EQ(parse("GET  / HTTP/1.1\r\nHost: a\r\n\r\n", &r), PL_HTTP_EBAD);
    CHECK_EQ(parse("GET /  HTTP/1.1\r\nHost: a\r\n\r\n", &r), PL_HTTP_EBAD);
    CHECK_EQ(parse(" GET / HTTP/1.1\r\nHost: a\r\n\r\n", &r), PL_HTTP_EBAD);
    CHECK_EQ(parse("G(T / HTTP/1.1\r\nHost: a\r\n\r\n", &r), PL_HTTP_EBAD);
    CHECK_EQ(parse("GET /a\tb HTTP/1.1\r\nHost: a\r\n\r\n", &r), PL_HTTP_EBAD);
    CHECK_EQ(parse("GET /a\x7f HTTP/1.1\r\nHost: a\r\n\r\n", &r), PL_HTTP_EBAD);
    CHECK_EQ(parse("GET /caf\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n", &r), PL_HTTP_EBAD);
    CHECK_EQ(parse("GET /a\rb HTTP/1.1\r\nHost: a\r\n\r\n", &r), PL_HTTP_EBAD);
    CHECK_EQ(parse("\r\n\r\n", &r), PL_HTTP_EBAD);
    CHECK_EQ(parse("", &r), PL_HTTP_EBAD);
}

TEST(http_parse_missing_or_double_host) {
    pl_http_req r;
    CHECK_EQ(parse("GET / HTTP/1.1\r\nAccept: */*\r\n\r\n", &r), PL_HTTP_EBAD);
    CHECK_EQ(parse("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", &r), PL_HTTP_EBAD);
    CHECK_EQ(parse("GET / HTTP/1.1\r\nHost:\r\n\r\n", &r), 0);   /* empty is allowed */
    CHECK(r.host.p != NULL);
    CHECK_EQ(r.host.n, 0);
}

TEST(http_parse_bad_header_name) {
    pl_http_req r;
    CHECK_EQ(parse_with("Bad Name: x\r\n", &r), PL_HTTP_EBAD);
    CHECK_EQ(parse_with("X-Space : x\r\n", &r), PL_HTTP_EBAD);   /* RFC 9112 5.1 */
    CHECK_EQ(parse_with(": x\r\n", &r), PL_HTTP_EBAD);
    CHECK_EQ(parse_with("NoColon\r\n", &r), PL_HTTP_EBAD);
    CHECK_EQ(parse_with("X(y): x\r\n", &r), PL_HTTP_EBAD);
    CHECK_EQ(parse_with("X\xc3\xa9: x\r\n", &r), PL_HTTP_EBAD);
}

TEST(http_parse_obs_fold) {
    pl_http_req r;
    CHECK_EQ(parse_with("X-A: one\r\n two\r\n", &r), PL_HTTP_EBAD);
    CHECK_EQ(parse_with("X-A: one\r\n\ttwo\r\n", &r), PL_HTTP_EBAD);
    /* Whitespace before the first header is folding too (RFC 9112 2.2). */
    CHECK_EQ(parse("GET / HTTP/1.1\r\n Host: a\r\n\r\n", &r), PL_HTTP_EBAD);
}

TEST(http_parse_nul_and_bare_cr) {
    pl_http_req r;
    const char a[] = "GET / HTTP/1.1\r\nHost: a\r\nX-A: b\0c\r\n\r\n";
    CHECK_EQ(pl_http_parse(a, sizeof a - 1, &r), PL_HTTP_EBAD);
    const char b[] = "GET /\0 HTTP/1.1\r\nHost: a\r\n\r\n";
    CHECK_EQ(pl_http_parse(b, sizeof b - 1, &r), PL_HTTP_EBAD);
    const char c[] = "GET / HTTP/1.1\r\nX\0: a\r\nHost: a\r\n\r\n";
    CHECK_EQ(pl_http_parse(c, sizeof c - 1, &r), PL_HTTP_EBAD);
    CHECK_EQ(parse_with("X-A: b\rc\r\n", &r), PL_HTTP_EBAD);
    CHECK_EQ(parse_with("X-A: b\r\r\n", &r), PL_HTTP_EBAD);
    CHECK_EQ(parse_with("X-A: b\x01\r\n", &r), PL_HTTP_EBAD);
    CHECK_EQ(parse_with("X-A: b\x7f\r\n", &r), PL_HTTP_EBAD);
}

TEST(http_parse_incomplete_or_trailing) {
    pl_http_req r;
    CHECK_EQ(parse("GET / HTTP/1.1\r\nHost: a\r\n", &r), PL_HTTP_EBAD);
    CHECK_EQ(parse("GET / HTTP/1.1\r\nHost: a\r\n\r", &r), PL_HTTP_EBAD);
    CHECK_EQ(parse("GET / HTTP/1.1\r\nHost: a", &r), PL_HTTP_EBAD);
    CHECK_EQ(parse("GET / HTTP/1.1\r\nHost: a\r\n\r\nx", &r), PL_HTTP_EBAD);
    CHECK_EQ(pl_http_parse(NULL, 0, &r), PL_HTTP_EBAD);
}

TEST(http_parse_too_many_headers) {
    char buf[4096];
    pl_http_req r;
    size_t n = (size_t)snprintf(buf, sizeof buf, "GET / HTTP/1.1\r\nHost: a\r\n");
    for (int i = 1; i < PL_HTTP_MAX_HEADERS; i++)
        n += (size_t)snprintf(buf + n, sizeof buf - n, "X-%d: v\r\n", i);
    memcpy(buf + n, "\r\n", 3);
    CHECK_EQ(parse(buf, &r), 0);                       /* exactly 64 */
    CHECK_EQ(r.nheaders, PL_HTTP_MAX_HEADERS);
    n += (size_t)snprintf(buf + n, sizeof buf - n, "X-last: v\r\n\r\n");
    CHECK_EQ(parse(buf, &r), PL_HTTP_ETOOMANY);        /* 65 */
}

TEST(http_parse_transfer_encoding) {
    pl_http_req r;
    CHECK_EQ(parse("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", &r),
             PL_HTTP_ECHUNKED);
    CHECK_EQ(parse_with("Content-Length: 3\r\ntransfer-encoding: gzip, chunked\r\n", &r),
             PL_HTTP_ECHUNKED);
    CHECK_EQ(parse_with("Transfer-Encoding: identity\r\n", &r), PL_HTTP_ECHUNKED);
}

TEST(http_parse_bad_content_length) {
    pl_http_req r;
    CHECK_EQ(parse_with("Content-Length: 5\r\nContent-Length: 6\r\n", &r), PL_HTTP_ELENGTH);
    CHECK_EQ(parse_with("Content-Length: 5, 5\r\n", &r), PL_HTTP_ELENGTH);
    CHECK_EQ(parse_with("Content-Length: 9223372036854775808\r\n", &r), PL_HTTP_ELENGTH);
    CHECK_EQ(parse_with("Content-Length: 99999999999999999999999999\r\n", &r), PL_HTTP_ELENGTH);
    CHECK_EQ(parse_with("Content-Length: -1\r\n", &r), PL_HTTP_ELENGTH);
    CHECK_EQ(parse_with("Content-Length: +1\r\n", &r), PL_HTTP_ELENGTH);
    CHECK_EQ(parse_with("Content-Length: 0x10\r\n", &r), PL_HTTP_ELENGTH);
    CHECK_EQ(parse_with("Content-Length: 1 2\r\n", &r), PL_HTTP_ELENGTH);
    CHECK_EQ(parse_with("Content-Length:\r\n", &r), PL_HTTP_ELENGTH);
}

/* ---- pl_http_query_get ---------------------------------------------------- */

static pl_str S(const char *z) { return (pl_str){ z, strlen(z) }; }

TEST(http_query_get_decoding) {
    char v[64];
    pl_str q = S("name=hello%20world&plus=a+b+c&hex=%41%7a%2B&k%65y=enc&x+y=sp");
    CHECK(pl_http_query_get(q, "name", v, sizeof v));
    CHECK_STR(v, "hello world");
    CHECK(pl_http_query_get(q, "plus", v, sizeof v));
    CHECK_STR(v, "a b c");
    CHECK(pl_http_query_get(q, "hex", v, sizeof v));
    CHECK_STR(v, "Az+");
    CHECK(pl_http_query_get(q, "key", v, sizeof v));    /* keys are decoded too */
    CHECK_STR(v, "enc");
    CHECK(pl_http_query_get(q, "x y", v, sizeof v));
    CHECK_STR(v, "sp");
}

TEST(http_query_get_missing_and_empty) {
    char v[16] = "untouched";
    pl_str q = S("a=1&&empty=&flag&b=2&a=dup");
    CHECK(!pl_http_query_get(q, "missing", v, sizeof v));
    CHECK_STR(v, "untouched");
    CHECK(!pl_http_query_get(q, "A", v, sizeof v));     /* case-sensitive */
    CHECK(!pl_http_query_get(q, "", v, sizeof v));
    CHECK(pl_http_query_get(q, "empty", v, sizeof v));
    CHECK_STR(v, "");
    CHECK(pl_http_query_get(q, "flag", v, sizeof v));
    CHECK_STR(v, "");
    CHECK(pl_http_query_get(q, "a", v, sizeof v));
    CHECK_STR(v, "1");                                   /* first wins */
    CHECK(pl_http_query_get(q, "b", v, sizeof v));
    CHECK_STR(v, "2");
    CHECK(!pl_http_query_get(S(""), "a", v, sizeof v));
    CHECK(!pl_http_query_get((pl_str){ NULL, 0 }, "a", v, sizeof v));
    CHECK(!pl_http_query_get(S("ab=1"), "a", v, sizeof v));
    CHECK(!pl_http_query_get(S("a=1"), "ab", v, sizeof v));
    CHECK(pl_http_query_get(S("x=1&a=b=c"), "a", v, sizeof v));
    CHECK_STR(v, "b=c");
}

TEST(http_query_get_truncation) {
    char v[4];
    CHECK(pl_http_query_get(S("t=abcdef"), "t", v, sizeof v));
    CHECK_STR(v, "abc");
    CHECK(pl_http_query_get(S("t=%41%42%43%44"), "t", v, sizeof v));
    CHECK_STR(v, "ABC");
    char one[1] = { 'x' };
    CHECK(pl_http_query_get(S("t=abc"), "t", one, sizeof one));
    CHECK_EQ(one[0], '\0');
    CHECK(pl_http_query_get(S("t=abc"), "t", NULL, 0));  /* presence only */
}

TEST(http_query_get_bad_escapes) {
    char v[32];
    CHECK(pl_http_query_get(S("a=100%"), "a", v, sizeof v));
    CHECK_STR(v, "100%");
    CHECK(pl_http_query_get(S("a=%4"), "a", v, sizeof v));
    CHECK_STR(v, "%4");
    CHECK(pl_http_query_get(S("a=%zz%41"), "a", v, sizeof v));
    CHECK_STR(v, "%zzA");
    CHECK(pl_http_query_get(S("a=x%00y"), "a", v, sizeof v));  /* no hidden NUL */
    CHECK_STR(v, "x%00y");
    size_t n = 99;                                     /* ... but getn tells of it */
    CHECK(pl_http_query_getn(S("a=x%00y"), "a", v, sizeof v, &n));
    CHECK_EQ(n, 3);
    CHECK(memcmp(v, "x\0y\0", 4) == 0);
    CHECK(pl_http_query_getn(S("a=%41%2"), "a", v, sizeof v, &n));
    CHECK_EQ(n, 3);
    CHECK_STR(v, "A%2");
    CHECK(!pl_http_query_getn(S("b=1"), "a", v, sizeof v, &n));
    CHECK_EQ(n, 0);
    CHECK(pl_http_query_get(S("a=%%41"), "a", v, sizeof v));
    CHECK_STR(v, "%A");
    /* The value ends at the query's length even if the bytes go on. */
    const char *s = "a=%4142";
    CHECK(pl_http_query_get((pl_str){ s, 4 }, "a", v, sizeof v));
    CHECK_STR(v, "%4");
}

/* ---- pl_http_has_token ---------------------------------------------------- */

TEST(http_has_token_edges) {
    CHECK(pl_http_has_token(S("close"), "close"));
    CHECK(pl_http_has_token(S("CLOSE"), "close"));
    CHECK(pl_http_has_token(S("keep-alive, Upgrade"), "upgrade"));
    CHECK(pl_http_has_token(S(" \tupgrade\t , x"), "upgrade"));
    CHECK(pl_http_has_token(S(",,upgrade,,"), "upgrade"));
    CHECK(pl_http_has_token(S("a,b,c"), "c"));
    CHECK(!pl_http_has_token(S("upgraded"), "upgrade"));
    CHECK(!pl_http_has_token(S("upgrad"), "upgrade"));
    CHECK(!pl_http_has_token(S("no upgrade"), "upgrade"));
    CHECK(!pl_http_has_token(S("keep-alive;upgrade"), "upgrade"));
    CHECK(!pl_http_has_token(S(""), "upgrade"));
    CHECK(!pl_http_has_token(S(" , ,"), ""));
    CHECK(!pl_http_has_token((pl_str){ NULL, 0 }, "close"));
    /* Stops at v.n, not at a NUL. */
    const char *s = "close";
    CHECK(!pl_http_has_token((pl_str){ s, 4 }, "close"));
}

/* A query's parameter names: each once (audit S2: the first of two was
 * taken silently), compared decoded; more than 64 is refused outright. */
TEST(http_query_check_finds_a_repeated_name) {
    char dup[16];
    pl_str q = {"limit=1&after=2", 15};
    CHECK_EQ(pl_http_query_check(q, dup, sizeof dup), 0);
    pl_str q2 = {"limit=1&after=2&limit=3", 23};
    CHECK_EQ(pl_http_query_check(q2, dup, sizeof dup), 1);
    CHECK_STR(dup, "limit");
    pl_str q3 = {"lim%69t=1&&limit", 16};                  /* decoded, empty segments skipped */
    CHECK_EQ(pl_http_query_check(q3, dup, sizeof dup), 1);
    pl_str q4 = {"a%01b=1&a%01b=2", 15};                   /* a control byte shown as '?' */
    CHECK_EQ(pl_http_query_check(q4, dup, sizeof dup), 1);
    CHECK_STR(dup, "a?b");
    pl_str none = {NULL, 0};
    CHECK_EQ(pl_http_query_check(none, dup, sizeof dup), 0);
    char many[64 * 6 + 8];
    size_t n = 0;
    for (int i = 0; i < 65; i++) n += (size_t)snprintf(many + n, sizeof many - n, "%sp%d", i ? "&" : "", i);
    pl_str q5 = {many, n};
    CHECK_EQ(pl_http_query_check(q5, dup, sizeof dup), -1);
    q5.n = (size_t)(strstr(many, "&p64") - many);                  /* 64 exactly */
    CHECK_EQ(pl_http_query_check(q5, dup, sizeof dup), 0);
}
