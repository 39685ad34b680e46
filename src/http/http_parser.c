/* http_parser.c — HTTP/1.1 request heads (RFC 9112): finding the end of a
 * head as bytes trickle in, and parsing a complete head in one pass.
 *
 * Owns: the request line, header fields, and the few semantics the server
 * needs from them (Content-Length, keep-alive, WebSocket upgrade, Host).
 * Does not own: bodies, routing, responses, or any buffer: every pl_str in a
 * pl_http_req points into the caller's bytes, and nothing here allocates.
 *
 * Design note: two passes, each linear.
 *   1. pl_http_head_end() looks at each new byte once. A byte is only ever
 *      compared against '\n'; when it matches, the up to two bytes before it
 *      are read (O(1)) to see whether it closes a blank line. So the caller's
 *      *scan can always advance to len, and a head that arrives one byte at a
 *      time costs O(n) in total, not O(n^2).
 *   2. pl_http_parse() trusts nothing about its input (it is fuzzed directly):
 *      every read is bounded by len, and a head that does not end with exactly
 *      one blank line at len is EBAD.
 *   3. Lines end in CRLF or a bare LF (RFC 9112 2.2 allows the latter); a CR
 *      anywhere else is EBAD, as is NUL anywhere.
 *   4. The first error found wins, scanning left to right; the semantic checks
 *      that need every header (Host, keep-alive, upgrade) run last.
 *
 * Targets: origin-form ("/..."), "*" for OPTIONS, and absolute-form
 * ("http://host/...", which RFC 9112 3.2.2 says a server MUST accept; audit
 * Z): its path and query are the request's, and one without a path is
 * EBAD. Known limits, on purpose: the target must be visible ASCII; chunked
 * bodies are refused (ECHUNKED -> 411).
 */
#include "http_parser.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

/* ---- Character classes ------------------------------------------------- */

/* tchar (RFC 9110 5.6.2): "!#$%&'*+-.^_`|~", DIGIT, ALPHA. */
static int is_tchar(unsigned char c) {
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
        return 1;
    return c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static int is_ows(unsigned char c) { return c == ' ' || c == '\t'; }

static unsigned char lower(unsigned char c) {
    return (c >= 'A' && c <= 'Z') ? (unsigned char)(c + ('a' - 'A')) : c;
}

/* ASCII case-insensitive comparison of s[0..n) with the C string z. */
static int str_ieq(const char *s, size_t n, const char *z) {
    size_t i;
    for (i = 0; i < n; i++) {
        if (z[i] == '\0' || lower((unsigned char)s[i]) != lower((unsigned char)z[i]))
            return 0;
    }
    return z[i] == '\0';
}

static int str_eq(const char *s, size_t n, const char *z) {
    return strlen(z) == n && memcmp(s, z, n) == 0;
}

static int hexval(unsigned char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* ---- Finding the end of the head --------------------------------------- */

size_t pl_http_head_end(const char *buf, size_t len, size_t *scan) {
    size_t i = *scan;
    if (i > len) i = 0;      /* the caller's buffer shrank: start over, safely */
    for (; i < len; i++) {
        if (buf[i] != '\n') continue;
        /* A blank line is LF, optionally CR, then this LF. */
        if (i >= 1 && buf[i - 1] == '\n') goto found;
        if (i >= 2 && buf[i - 1] == '\r' && buf[i - 2] == '\n') goto found;
    }
    *scan = len;             /* every byte before len has been looked at */
    return 0;
found:
    *scan = i + 1;
    return i + 1;
}

/* ---- Parsing a complete head ------------------------------------------- */

/* Finds the line starting at *pos: sets [*ls, *le) to its content without the
 * CRLF or LF and moves *pos past the terminator. Returns 0, or EBAD for a NUL
 * or a CR not followed by LF in the line, or a line with no terminator. */
static int next_line(const char *buf, size_t len, size_t *pos, size_t *ls, size_t *le) {
    size_t i;
    *ls = *pos;
    for (i = *pos; i < len; i++) {
        unsigned char c = (unsigned char)buf[i];
        if (c == '\n') {
            *le = i;
            *pos = i + 1;
            return 0;
        }
        if (c == '\0') return PL_HTTP_EBAD;
        if (c == '\r') {
            if (i + 1 < len && buf[i + 1] == '\n') {
                *le = i;
                *pos = i + 2;
                return 0;
            }
            return PL_HTTP_EBAD;           /* bare CR */
        }
    }
    return PL_HTTP_EBAD;                   /* ran out of bytes mid-line */
}

static pl_http_method method_of(const char *s, size_t n) {
    static const struct { const char *name; pl_http_method m; } tab[] = {
        { "GET", PL_HTTP_GET }, { "HEAD", PL_HTTP_HEAD }, { "POST", PL_HTTP_POST },
        { "PUT", PL_HTTP_PUT }, { "DELETE", PL_HTTP_DELETE },
        { "PATCH", PL_HTTP_PATCH }, { "OPTIONS", PL_HTTP_OPTIONS },
    };
    for (size_t i = 0; i < sizeof tab / sizeof tab[0]; i++)
        if (str_eq(s, n, tab[i].name)) return tab[i].m;   /* case-sensitive */
    return PL_HTTP_OTHER;
}

/* request-line = method SP request-target SP HTTP-version, single spaces. */
static int parse_request_line(const char *s, size_t n, pl_http_req *req) {
    size_t i = 0, t0, t1;

    while (i < n && is_tchar((unsigned char)s[i])) i++;
    if (i == 0 || i >= n || s[i] != ' ') return PL_HTTP_EBAD;
    req->method_str = (pl_str){ s, i };
    req->method = method_of(s, i);

    t0 = ++i;
    while (i < n) {
        unsigned char c = (unsigned char)s[i];
        if (c == ' ') break;
        if (c < 0x21 || c > 0x7e) return PL_HTTP_EBAD;   /* CTL, DEL, non-ASCII */
        i++;
    }
    t1 = i;
    if (t1 == t0 || i >= n) return PL_HTTP_EBAD;
    req->target = (pl_str){ s + t0, t1 - t0 };
    if (s[t0] == '*' && t1 - t0 == 1) {
        if (req->method != PL_HTTP_OPTIONS) return PL_HTTP_EBAD;
    } else if (s[t0] != '/') {
        size_t sch = t1 - t0 >= 8 && strncasecmp(s + t0, "https://", 8) == 0 ? 8
                   : t1 - t0 >= 7 && strncasecmp(s + t0, "http://", 7) == 0  ? 7 : 0;
        const char *slash = sch ? memchr(s + t0 + sch, '/', t1 - t0 - sch) : NULL;
        const char *qm = sch ? memchr(s + t0 + sch, '?', t1 - t0 - sch) : NULL;
        if (!slash || (qm && qm < slash)) return PL_HTTP_EBAD;   /* not absolute-form, or no path */
        t0 = (size_t)(slash - s);
        req->target = (pl_str){ s + t0, t1 - t0 };
    }
    const char *q = memchr(s + t0, '?', t1 - t0);
    if (q) {
        req->path = (pl_str){ s + t0, (size_t)(q - (s + t0)) };
        req->query = (pl_str){ q + 1, (size_t)(s + t1 - (q + 1)) };
    } else {
        req->path = req->target;
        req->query = (pl_str){ s + t1, 0 };
    }

    /* HTTP-version = "HTTP" "/" DIGIT "." DIGIT, case-sensitive. Well formed
     * but not 1.0 or 1.1 is EVERSION (505); anything else is EBAD. */
    const char *v = s + t1 + 1;
    size_t vn = n - (t1 + 1);
    if (vn != 8 || memcmp(v, "HTTP/", 5) != 0 || v[6] != '.' ||
        v[5] < '0' || v[5] > '9' || v[7] < '0' || v[7] > '9')
        return PL_HTTP_EBAD;
    if (v[5] != '1' || (v[7] != '0' && v[7] != '1')) return PL_HTTP_EVERSION;
    req->minor = v[7] - '0';
    return 0;
}

/* Content-Length = 1*DIGIT, no sign, no spaces inside, no comma lists. */
static int parse_length(pl_str v, int64_t *out) {
    int64_t n = 0;
    if (v.n == 0) return PL_HTTP_ELENGTH;
    for (size_t i = 0; i < v.n; i++) {
        unsigned char c = (unsigned char)v.p[i];
        if (c < '0' || c > '9') return PL_HTTP_ELENGTH;
        if (n > (INT64_MAX - (c - '0')) / 10) return PL_HTTP_ELENGTH;
        n = n * 10 + (c - '0');
    }
    *out = n;
    return 0;
}

/* The convenience fields keep the first occurrence, like pl_http_header_get. */
static void first(pl_str *field, pl_str value) {
    if (!field->p) *field = value;
}

/* field-line = field-name ":" OWS field-value OWS. Stores the header and
 * fills the convenience fields it names. */
static int parse_header(const char *s, size_t n, pl_http_req *req) {
    size_t i = 0;
    pl_str name, value;

    if (n > 0 && is_ows((unsigned char)s[0])) return PL_HTTP_EBAD;  /* obs-fold */
    while (i < n && is_tchar((unsigned char)s[i])) i++;
    if (i == 0 || i >= n || s[i] != ':') return PL_HTTP_EBAD;     /* incl. "Name :" */
    name = (pl_str){ s, i };

    size_t v0 = i + 1, v1 = n;
    for (size_t j = v0; j < n; j++) {
        unsigned char c = (unsigned char)s[j];
        if ((c < 0x20 && c != '\t') || c == 0x7f) return PL_HTTP_EBAD;
    }
    while (v0 < v1 && is_ows((unsigned char)s[v0])) v0++;
    while (v1 > v0 && is_ows((unsigned char)s[v1 - 1])) v1--;
    value = (pl_str){ s + v0, v1 - v0 };

    if (req->nheaders == PL_HTTP_MAX_HEADERS) return PL_HTTP_ETOOMANY;
    req->headers[req->nheaders].name = name;
    req->headers[req->nheaders].value = value;
    req->nheaders++;

    if (str_ieq(name.p, name.n, "content-length")) {
        int64_t cl;
        int rc = parse_length(value, &cl);
        if (rc) return rc;
        if (req->content_length >= 0 && req->content_length != cl) return PL_HTTP_ELENGTH;
        req->content_length = cl;
    } else if (str_ieq(name.p, name.n, "transfer-encoding")) {
        return PL_HTTP_ECHUNKED;
    } else if (str_ieq(name.p, name.n, "host")) {
        if (req->host.p) return PL_HTTP_EBAD;     /* RFC 9112 3.2: two Hosts */
        req->host = value;
    } else if (str_ieq(name.p, name.n, "sec-websocket-key")) {
        first(&req->ws_key, value);
    } else if (str_ieq(name.p, name.n, "sec-websocket-version")) {
        first(&req->ws_version, value);
    } else if (str_ieq(name.p, name.n, "sec-websocket-protocol")) {
        first(&req->ws_protocol, value);
    } else if (str_ieq(name.p, name.n, "authorization")) {
        first(&req->authorization, value);
    } else if (str_ieq(name.p, name.n, "origin")) {
        first(&req->origin, value);
    } else if (str_ieq(name.p, name.n, "content-type")) {
        first(&req->content_type, value);
    }
    return 0;
}

/* keep_alive and upgrade_ws look at every Connection and Upgrade field. */
static void connection_semantics(pl_http_req *req) {
    int want_close = 0, keep = 0, conn_upgrade = 0, ws = 0;
    for (size_t i = 0; i < req->nheaders; i++) {
        const pl_http_header *h = &req->headers[i];
        if (str_ieq(h->name.p, h->name.n, "connection")) {
            want_close |= pl_http_has_token(h->value, "close");
            keep |= pl_http_has_token(h->value, "keep-alive");
            conn_upgrade |= pl_http_has_token(h->value, "upgrade");
        } else if (str_ieq(h->name.p, h->name.n, "upgrade")) {
            ws |= pl_http_has_token(h->value, "websocket");
        }
    }
    req->keep_alive = req->minor >= 1 ? !want_close : (keep && !want_close);
    /* RFC 9110 7.8: a server MUST ignore Upgrade in an HTTP/1.0 request. */
    req->upgrade_ws = req->minor >= 1 && ws && conn_upgrade;
}

int pl_http_parse(const char *buf, size_t len, pl_http_req *req) {
    size_t pos = 0, ls, le;
    int rc;

    memset(req, 0, sizeof *req);
    req->content_length = -1;
    if (!buf) return PL_HTTP_EBAD;

    /* RFC 9112 2.2: ignore one empty line before the request-line. */
    if (len >= 2 && buf[0] == '\r' && buf[1] == '\n') pos = 2;
    else if (len >= 1 && buf[0] == '\n') pos = 1;

    if ((rc = next_line(buf, len, &pos, &ls, &le)) != 0) return rc;
    if ((rc = parse_request_line(buf + ls, le - ls, req)) != 0) return rc;

    for (;;) {
        if ((rc = next_line(buf, len, &pos, &ls, &le)) != 0) return rc;
        if (le == ls) break;                      /* the blank line */
        if ((rc = parse_header(buf + ls, le - ls, req)) != 0) return rc;
    }
    if (pos != len) return PL_HTTP_EBAD;          /* bytes after the blank line */

    if (req->minor >= 1 && !req->host.p) return PL_HTTP_EBAD;
    connection_semantics(req);
    return 0;
}

/* ---- Lookups ------------------------------------------------------------ */

pl_str pl_http_header_get(const pl_http_req *req, const char *name) {
    for (size_t i = 0; i < req->nheaders; i++) {
        const pl_http_header *h = &req->headers[i];
        if (str_ieq(h->name.p, h->name.n, name)) return h->value;
    }
    return (pl_str){ NULL, 0 };
}

size_t pl_http_header_count(const pl_http_req *req, const char *name) {
    size_t n = 0;
    for (size_t i = 0; i < req->nheaders; i++)
        n += str_ieq(req->headers[i].name.p, req->headers[i].name.n, name) != 0;
    return n;
}

/* Decodes one byte of form-urlencoded text at s[*i], s[0..n): "+" is a space,
 * "%XX" a byte. A "%" not followed by two hex digits stays a literal "%", and
 * so does "%00" (which would cut a C string short) unless nul (the caller
 * keeps the length, and so sees the NUL). */
static unsigned char decode_at(const char *s, size_t n, size_t *i, int nul) {
    unsigned char c = (unsigned char)s[*i];
    (*i)++;
    if (c == '+') return ' ';
    if (c == '%' && *i + 2 <= n) {
        int hi = hexval((unsigned char)s[*i]), lo = hexval((unsigned char)s[*i + 1]);
        if (hi >= 0 && lo >= 0 && (nul || (hi | lo) != 0)) {
            *i += 2;
            return (unsigned char)(hi << 4 | lo);
        }
    }
    return c;
}

/* 1 if the decoded s[0..n) equals name exactly (case-sensitive). */
static int key_eq(const char *s, size_t n, const char *name) {
    size_t i = 0, j = 0;
    while (i < n) {
        if (name[j] == '\0') return 0;
        if (decode_at(s, n, &i, 0) != (unsigned char)name[j]) return 0;
        j++;
    }
    return name[j] == '\0';
}

int pl_http_query_get(pl_str query, const char *name, char *out, size_t cap) {
    return pl_http_query_getn(query, name, out, cap, NULL);
}

int pl_http_query_getn(pl_str query, const char *name, char *out, size_t cap, size_t *len) {
    size_t pos = 0;
    if (len) *len = 0;
    if (!query.p || !name) return 0;
    while (pos < query.n) {
        const char *seg = query.p + pos;
        const char *amp = memchr(seg, '&', query.n - pos);
        size_t sn = amp ? (size_t)(amp - seg) : query.n - pos;
        pos += sn + 1;
        if (sn == 0) continue;                    /* "a=1&&b=2" */

        const char *eq = memchr(seg, '=', sn);
        size_t kn = eq ? (size_t)(eq - seg) : sn;
        if (!key_eq(seg, kn, name)) continue;

        if (out && cap > 0) {
            const char *v = eq ? eq + 1 : seg + sn;
            size_t vn = (size_t)(seg + sn - v), i = 0, o = 0;
            while (i < vn && o + 1 < cap) out[o++] = (char)decode_at(v, vn, &i, len != NULL);
            out[o] = '\0';
            if (len) *len = o;
        }
        return 1;
    }
    return 0;
}

/* Decoded key of the segment at seg (up to '=' or its end) into out. */
static size_t query_key(const char *seg, size_t sn, char *out, size_t cap) {
    const char *eq = memchr(seg, '=', sn);
    size_t kn = eq ? (size_t)(eq - seg) : sn, i = 0, o = 0;
    while (i < kn && o + 1 < cap) out[o++] = (char)decode_at(seg, kn, &i, 0);
    out[o] = '\0';
    return o;
}

int pl_http_query_check(pl_str query, char *dup, size_t cap) {
    enum { MAX_PARAMS = 64, KEY_MAX = 64 };
    char keys[MAX_PARAMS][KEY_MAX];
    size_t nk = 0, pos = 0;
    if (cap) dup[0] = '\0';
    while (query.p && pos < query.n) {
        const char *seg = query.p + pos;
        const char *amp = memchr(seg, '&', query.n - pos);
        size_t sn = amp ? (size_t)(amp - seg) : query.n - pos;
        pos += sn + 1;
        if (sn == 0) continue;
        if (nk == MAX_PARAMS) return -1;
        query_key(seg, sn, keys[nk], KEY_MAX);
        for (size_t k = 0; k < nk; k++) {
            if (strcmp(keys[k], keys[nk]) == 0) {
                size_t o = 0;          /* printable ASCII: it goes into a message */
                for (const char *q = keys[nk]; *q && o + 1 < cap; q++)
                    dup[o++] = (*q >= 0x20 && *q < 0x7f) ? *q : '?';
                if (cap) dup[o] = '\0';
                return 1;
            }
        }
        nk++;
    }
    return 0;
}

int pl_http_has_token(pl_str v, const char *t) {
    size_t pos = 0;
    if (!v.p || !t) return 0;
    while (pos < v.n) {
        const char *el = v.p + pos;
        const char *comma = memchr(el, ',', v.n - pos);
        size_t en = comma ? (size_t)(comma - el) : v.n - pos;
        pos += en + 1;
        while (en > 0 && is_ows((unsigned char)el[0])) { el++; en--; }
        while (en > 0 && is_ows((unsigned char)el[en - 1])) en--;
        if (en > 0 && str_ieq(el, en, t)) return 1;
    }
    return 0;
}
