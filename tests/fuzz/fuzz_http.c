/* fuzz_http.c — libFuzzer driver for HTTP/1.1 request heads
 * (src/http/http_parser.c).
 *
 * Owns: the invariants of pl_http_head_end, pl_http_parse and the lookups as
 * seen from outside. Input: the fz_split layout of fuzz.h; the data arrives
 * in fuzzer-chosen chunks, as it would from a socket.
 *
 * Checked for every input:
 *   1. pl_http_head_end fed incrementally (the server's way: the buffer
 *      grows, *scan is kept) finds the same end as one call on everything,
 *      as a call with a stale *scan past len, and as a naive search for the
 *      first blank line ("\n\n" or "\n\r\n"); *scan never passes len.
 *   2. pl_http_parse on that head, on the whole input, and on every prefix
 *      cut at a chunk boundary returns 0 or a PL_HTTP_E* code, reading only
 *      inside the bytes given (each parse gets an exact-size heap copy); it
 *      never accepts bytes without a blank line, and accepts a whole input
 *      only when its first blank line ends it.
 *   3. A successful parse is self-consistent: every pl_str lies inside the
 *      buffer; path + "?" + query == target; method, version and the
 *      convenience fields agree with the header list (first occurrence);
 *      header names are tokens and values carry no surrounding OWS; HTTP/1.1
 *      has a Host; Upgrade is ignored in HTTP/1.0; header_get finds each
 *      header's first occurrence case-insensitively.
 *   4. pl_http_query_get on the parsed query (names taken from the query and
 *      from the input) always NUL-terminates within cap, and finds every key
 *      that needs no decoding; pl_http_has_token agrees with a naive split.
 */
#include <ctype.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "http/http_parser.h"

static int inside(pl_str s, const char *buf, size_t len) {
    if (!s.p) return s.n == 0;
    return s.p >= buf && s.p <= buf + len && s.n <= (size_t)(buf + len - s.p);
}

static int ieq(pl_str a, pl_str b) {
    if (a.n != b.n) return 0;
    for (size_t i = 0; i < a.n; i++)
        if (tolower((unsigned char)a.p[i]) != tolower((unsigned char)b.p[i])) return 0;
    return 1;
}

static int ieq_z(pl_str a, const char *z) {
    pl_str b = { z, strlen(z) };
    return ieq(a, b);
}

static int is_tchar(unsigned char c) {
    return isalnum(c) || (c && strchr("!#$%&'*+-.^_`|~", c));
}

/* The first value of header `name`, by a plain scan of the list. */
static pl_str first_value(const pl_http_req *r, const char *name) {
    for (size_t i = 0; i < r->nheaders; i++)
        if (ieq_z(r->headers[i].name, name)) return r->headers[i].value;
    return (pl_str){ NULL, 0 };
}

static int same_str(pl_str a, pl_str b) {
    return a.p == b.p && a.n == b.n;
}

/* Naive pl_http_has_token: split on commas, trim spaces and tabs. */
static int naive_has_token(pl_str v, const char *t) {
    size_t i = 0;
    while (v.p && i <= v.n) {
        size_t j = i;
        while (j < v.n && v.p[j] != ',') j++;
        size_t a = i, b = j;
        while (a < b && (v.p[a] == ' ' || v.p[a] == '\t')) a++;
        while (b > a && (v.p[b - 1] == ' ' || v.p[b - 1] == '\t')) b--;
        pl_str el = { v.p + a, b - a };
        if (b > a && ieq_z(el, t)) return 1;
        i = j + 1;
    }
    return 0;
}

static void check_query(pl_str q, const uint8_t *extra, size_t extra_len) {
    char out[64];
    static const size_t caps[] = { 1, 2, 7, sizeof out };
    size_t pos = 0;
    /* every key in the query: found when it needs no decoding */
    while (q.p && pos < q.n) {
        const char *seg = q.p + pos, *amp = memchr(seg, '&', q.n - pos);
        size_t sn = amp ? (size_t)(amp - seg) : q.n - pos;
        const char *eq = memchr(seg, '=', sn);
        size_t kn = eq ? (size_t)(eq - seg) : sn;
        pos += sn + 1;
        if (kn == 0 || kn >= 64 || memchr(seg, '%', kn) || memchr(seg, '+', kn)) continue;
        char name[64];
        memcpy(name, seg, kn);
        name[kn] = '\0';
        for (size_t c = 0; c < sizeof caps / sizeof caps[0]; c++) {
            memset(out, 'Z', sizeof out);
            FZ_CHECK(pl_http_query_get(q, name, out, caps[c]) == 1);
            FZ_CHECK(memchr(out, '\0', caps[c]) != NULL);
        }
    }
    /* a name from the input */
    if (extra_len) {
        char name[17];
        size_t nl = extra_len < 16 ? extra_len : 16;
        memcpy(name, extra, nl);
        name[nl] = '\0';
        memset(out, 'Z', sizeof out);
        if (pl_http_query_get(q, name, out, sizeof out))
            FZ_CHECK(memchr(out, '\0', sizeof out) != NULL);
        FZ_CHECK(pl_http_query_get(q, name, NULL, 0) == pl_http_query_get(q, name, out, 1));
    }
}

static void check_req(const pl_http_req *r, const char *buf, size_t len,
                      const uint8_t *extra, size_t extra_len) {
    FZ_CHECK(r->minor == 0 || r->minor == 1);
    FZ_CHECK(inside(r->method_str, buf, len) && r->method_str.n > 0);
    for (size_t i = 0; i < r->method_str.n; i++)
        FZ_CHECK(is_tchar((unsigned char)r->method_str.p[i]));
    FZ_CHECK(inside(r->target, buf, len) && r->target.n > 0);
    FZ_CHECK(r->target.p[0] == '/' || (r->target.n == 1 && r->target.p[0] == '*' &&
                                       r->method == PL_HTTP_OPTIONS));
    for (size_t i = 0; i < r->target.n; i++)
        FZ_CHECK(r->target.p[i] > 0x20 && r->target.p[i] < 0x7f);
    /* path "?" query == target, split at the first '?' */
    FZ_CHECK(r->path.p == r->target.p && r->path.n <= r->target.n);
    FZ_CHECK(memchr(r->path.p, '?', r->path.n) == NULL);
    if (r->path.n < r->target.n) {
        FZ_CHECK(r->target.p[r->path.n] == '?');
        FZ_CHECK(r->query.p == r->target.p + r->path.n + 1);
        FZ_CHECK(r->path.n + 1 + r->query.n == r->target.n);
    } else {
        FZ_CHECK(r->query.n == 0);
    }
    FZ_CHECK(r->nheaders <= PL_HTTP_MAX_HEADERS);
    FZ_CHECK(r->content_length >= -1);
    for (size_t i = 0; i < r->nheaders; i++) {
        const pl_http_header *h = &r->headers[i];
        FZ_CHECK(inside(h->name, buf, len) && inside(h->value, buf, len) && h->name.n > 0);
        for (size_t j = 0; j < h->name.n; j++) FZ_CHECK(is_tchar((unsigned char)h->name.p[j]));
        if (h->value.n) {
            FZ_CHECK(h->value.p[0] != ' ' && h->value.p[0] != '\t');
            FZ_CHECK(h->value.p[h->value.n - 1] != ' ' && h->value.p[h->value.n - 1] != '\t');
        }
        for (size_t j = 0; j < h->value.n; j++) {
            unsigned char c = (unsigned char)h->value.p[j];
            FZ_CHECK(c >= 0x20 || c == '\t');
            FZ_CHECK(c != 0x7f);
        }
        /* header_get: the first occurrence, case-insensitively */
        if (h->name.n < 128) {
            char name[128];
            memcpy(name, h->name.p, h->name.n);
            name[h->name.n] = '\0';
            for (size_t j = 0; j < h->name.n; j++)
                if (j & 1) name[j] = (char)toupper((unsigned char)name[j]);
            FZ_CHECK(same_str(pl_http_header_get(r, name), first_value(r, name)));
        }
    }
    FZ_CHECK(pl_http_header_get(r, "no-such-header-here").p == NULL);
    if (r->minor >= 1) FZ_CHECK(r->host.p != NULL);
    FZ_CHECK(same_str(r->host, first_value(r, "host")));
    FZ_CHECK(same_str(r->ws_key, first_value(r, "sec-websocket-key")));
    FZ_CHECK(same_str(r->ws_version, first_value(r, "sec-websocket-version")));
    FZ_CHECK(same_str(r->ws_protocol, first_value(r, "sec-websocket-protocol")));
    FZ_CHECK(same_str(r->authorization, first_value(r, "authorization")));
    FZ_CHECK(same_str(r->origin, first_value(r, "origin")));
    FZ_CHECK(same_str(r->content_type, first_value(r, "content-type")));
    FZ_CHECK(first_value(r, "transfer-encoding").p == NULL);    /* ECHUNKED otherwise */
    if ((r->content_length >= 0) != (first_value(r, "content-length").p != NULL))
        FZ_CHECK(!"content_length disagrees with the headers");
    if (r->upgrade_ws) FZ_CHECK(r->minor == 1);
    /* Connection tokens */
    for (size_t i = 0; i < r->nheaders; i++) {
        pl_str v = r->headers[i].value;
        FZ_CHECK(pl_http_has_token(v, "upgrade") == naive_has_token(v, "upgrade"));
        FZ_CHECK(pl_http_has_token(v, "close") == naive_has_token(v, "close"));
    }
    check_query(r->query, extra, extra_len);
}

/* Parses p[0..n) from an exact-size copy; checks the result. */
static int parse(const uint8_t *p, size_t n, const uint8_t *extra, size_t extra_len) {
    char *buf = (char *)fz_dup(p, n);
    pl_http_req *r = malloc(sizeof *r);
    FZ_CHECK(r != NULL);
    int rc = pl_http_parse(buf, n, r);
    FZ_CHECK(rc == 0 || rc == PL_HTTP_EBAD || rc == PL_HTTP_ETOOMANY || rc == PL_HTTP_EVERSION ||
             rc == PL_HTTP_ECHUNKED || rc == PL_HTTP_ELENGTH);
    if (rc == 0) check_req(r, buf, n, extra, extra_len);
    free(r);
    free(buf);
    return rc;
}

/* The first blank line's end, by the definition in http_parser.h. */
static size_t naive_head_end(const uint8_t *p, size_t n) {
    for (size_t i = 1; i < n; i++) {
        if (p[i] != '\n') continue;
        if (p[i - 1] == '\n') return i + 1;
        if (i >= 2 && p[i - 1] == '\r' && p[i - 2] == '\n') return i + 1;
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *p, size_t n) {
    fz_split sp;
    if (n > 65536 || fz_split_init(&sp, p, n) != 0) return 0;
    const uint8_t *d = sp.data;
    size_t len = sp.len, want = naive_head_end(d, len), found = 0, scan = 0, have = 0, k = 0;
    char *buf = (char *)fz_dup(d, len);

    /* 1. incrementally, the way server.c calls it */
    while (have < len) {
        size_t c = fz_chunk(&sp, k++);
        if (c > len - have) c = len - have;
        have += c;
        found = pl_http_head_end(buf, have, &scan);
        FZ_CHECK(scan <= have);
        if (found) {
            FZ_CHECK(found <= have);
            /* 2. a prefix cut where the head was found parses safely */
            parse(d, found, d, len);
            break;
        }
        if (k < 64) FZ_CHECK(parse(d, have, NULL, 0) != 0);   /* no blank line yet */
    }
    FZ_CHECK(found == want);
    scan = 0;
    FZ_CHECK(pl_http_head_end(buf, len, &scan) == want);
    scan = len + 1 + (len ? d[0] : 0);           /* a stale offset past len */
    FZ_CHECK(pl_http_head_end(buf, len, &scan) == want);
    free(buf);

    /* a complete head ends at its first blank line */
    if (parse(d, len, d, len) == 0) FZ_CHECK(want == len);
    return 0;
}
