/* origin.c — Origin, Host and CIDR parsing; the Origin decision (see
 * origin.h). Pure functions: no I/O, no allocation except the policy's
 * lists. */
#include "origin.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "../core/alloc.h"

static int lower(int c) { return c >= 'A' && c <= 'Z' ? c + 32 : c; }

static int host_char(int c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '-' || c == '_';
}

/* host[:port] in s[0..n), nothing else; fills host and port (default
 * def_port when absent). */
static int parse_authority(const char *s, size_t n, int def_port, pl_origin *out) {
    size_t i = 0, h = 0;
    if (n == 0) return -1;
    if (s[0] == '[') {                         /* IPv6 literal */
        out->host[h++] = '[';
        for (i = 1; i < n && s[i] != ']'; i++) {
            int c = lower((unsigned char)s[i]);
            if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || c == ':' || c == '.')) return -1;
            if (h >= PL_ORIGIN_HOST_MAX - 2) return -1;
            out->host[h++] = (char)c;
        }
        if (i >= n || i == 1) return -1;       /* no ']' or "[]" */
        out->host[h++] = ']';
        i++;
    } else {
        for (; i < n && s[i] != ':'; i++) {
            int c = lower((unsigned char)s[i]);
            if (!host_char(c)) return -1;
            if (h >= PL_ORIGIN_HOST_MAX - 1) return -1;
            out->host[h++] = (char)c;
        }
        if (h == 0) return -1;
    }
    out->host[h] = '\0';
    if (i == n) {
        out->port = def_port;
        return 0;
    }
    if (s[i] != ':') return -1;                /* e.g. "[::1]x" */
    i++;
    if (i == n || n - i > 5 || s[i] == '0') return -1;   /* "host:", too many digits, ":080" */
    long port = 0;
    for (; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return -1;
        port = port * 10 + (s[i] - '0');
    }
    if (port < 1 || port > 65535) return -1;
    out->port = (int)port;
    return 0;
}

int pl_origin_parse(const char *s, size_t n, pl_origin *out) {
    memset(out, 0, sizeof *out);
    if (!s) return -1;
    size_t k;
    if (n >= 7 && strncasecmp(s, "http://", 7) == 0) {
        out->https = 0;
        k = 7;
    } else if (n >= 8 && strncasecmp(s, "https://", 8) == 0) {
        out->https = 1;
        k = 8;
    } else {
        return -1;                             /* "null", other schemes, junk */
    }
    /* the authority runs to the end: a '/', '?', '#', '@', space or ','
     * anywhere in it fails the character checks */
    return parse_authority(s + k, n - k, out->https ? 443 : 80, out);
}

int pl_origin_parse_host(const char *s, size_t n, int https, pl_origin *out) {
    memset(out, 0, sizeof *out);
    if (!s) return -1;
    out->https = https ? 1 : 0;
    return parse_authority(s, n, https ? 443 : 80, out);
}

int pl_origin_same(const pl_origin *a, const pl_origin *b) {
    return a->https == b->https && a->port == b->port && strcmp(a->host, b->host) == 0;
}

/* ---- CIDR ------------------------------------------------------------------ */

int pl_cidr_parse(const char *s, size_t n, pl_cidr *out) {
    memset(out, 0, sizeof *out);
    char buf[64];
    if (!s || n == 0 || n >= sizeof buf) return -1;
    memcpy(buf, s, n);
    buf[n] = '\0';
    char *slash = strchr(buf, '/');
    long bits = -1;
    if (slash) {
        *slash = '\0';
        char *end;
        if (!slash[1] || slash[1] < '0' || slash[1] > '9') return -1;
        bits = strtol(slash + 1, &end, 10);
        if (*end) return -1;
    }
    if (inet_pton(AF_INET, buf, out->addr) == 1) {
        out->v6 = 0;
        if (bits > 32) return -1;
        out->bits = bits < 0 ? 32 : (int)bits;
    } else if (inet_pton(AF_INET6, buf, out->addr) == 1) {
        out->v6 = 1;
        if (bits > 128) return -1;
        out->bits = bits < 0 ? 128 : (int)bits;
    } else {
        return -1;
    }
    return 0;
}

static int prefix_eq(const uint8_t *a, const uint8_t *b, int bits) {
    int whole = bits / 8, rest = bits % 8;
    if (memcmp(a, b, (size_t)whole) != 0) return 0;
    if (!rest) return 1;
    uint8_t mask = (uint8_t)(0xff << (8 - rest));
    return (a[whole] & mask) == (b[whole] & mask);
}

int pl_cidr_match(const pl_cidr *c, const struct sockaddr *sa) {
    if (!sa) return 0;
    if (sa->sa_family == AF_INET) {
        const uint8_t *a = (const uint8_t *)&((const struct sockaddr_in *)sa)->sin_addr;
        return !c->v6 && prefix_eq(a, c->addr, c->bits);
    }
    if (sa->sa_family == AF_INET6) {
        const struct in6_addr *a6 = &((const struct sockaddr_in6 *)sa)->sin6_addr;
        if (IN6_IS_ADDR_V4MAPPED(a6)) return !c->v6 && prefix_eq(a6->s6_addr + 12, c->addr, c->bits);
        return c->v6 && prefix_eq(a6->s6_addr, c->addr, c->bits);
    }
    return 0;
}

/* ---- the policy ------------------------------------------------------------ */

/* Calls fn on each trimmed, non-empty entry of a comma-separated list;
 * stops at the first failure and names the entry in err. */
static int each_entry(const char *list, int (*fn)(void *arg, const char *s, size_t n), void *arg,
                      const char *what, char *err, size_t errlen) {
    const char *p = list ? list : "";
    while (*p) {
        while (*p == ' ' || *p == '\t' || *p == ',') p++;
        if (!*p) break;
        const char *s = p;
        while (*p && *p != ',') p++;
        const char *e = p;
        while (e > s && (e[-1] == ' ' || e[-1] == '\t')) e--;
        if (fn(arg, s, (size_t)(e - s))) {
            snprintf(err, errlen, "%s: bad entry \"%.*s\"", what, (int)(e - s), s);
            return -1;
        }
    }
    return 0;
}

static int add_allowed(void *arg, const char *s, size_t n) {
    pl_origin_policy *p = arg;
    pl_origin o;
    if (pl_origin_parse(s, n, &o)) return -1;
    p->allowed = pl_realloc(p->allowed, (p->nallowed + 1) * sizeof *p->allowed);
    p->allowed[p->nallowed++] = o;
    return 0;
}

static int add_trusted(void *arg, const char *s, size_t n) {
    pl_origin_policy *p = arg;
    pl_cidr c;
    if (pl_cidr_parse(s, n, &c)) return -1;
    p->trusted = pl_realloc(p->trusted, (p->ntrusted + 1) * sizeof *p->trusted);
    p->trusted[p->ntrusted++] = c;
    return 0;
}

int pl_origin_policy_init(pl_origin_policy *p, const char *allowed, const char *trusted,
                          char *err, size_t errlen) {
    memset(p, 0, sizeof *p);
    if (each_entry(allowed, add_allowed, p, "allowed-origins (scheme://host[:port])", err, errlen) ||
        each_entry(trusted, add_trusted, p, "trusted-proxies (IP or CIDR)", err, errlen)) {
        pl_origin_policy_release(p);
        return -1;
    }
    return 0;
}

void pl_origin_policy_release(pl_origin_policy *p) {
    free(p->allowed);
    free(p->trusted);
    memset(p, 0, sizeof *p);
}

int pl_origin_trusted(const pl_origin_policy *p, const struct sockaddr *peer) {
    for (size_t i = 0; peer && i < p->ntrusted; i++)
        if (pl_cidr_match(&p->trusted[i], peer)) return 1;
    return 0;
}

/* The first entry of a comma-separated header value, trimmed. */
static pl_str first_entry(pl_str v) {
    size_t e = 0;
    while (e < v.n && v.p[e] != ',') e++;
    size_t s = 0;
    while (s < e && (v.p[s] == ' ' || v.p[s] == '\t')) s++;
    while (e > s && (v.p[e - 1] == ' ' || v.p[e - 1] == '\t')) e--;
    return (pl_str){v.p + s, e - s};
}

int pl_origin_own(const pl_origin_policy *p, const pl_http_req *req, const struct sockaddr *peer,
                  int tls, pl_origin *out) {
    int https = tls ? 1 : 0;
    pl_str host = req->host;
    if (pl_origin_trusted(p, peer)) {
        pl_str proto = pl_http_header_get(req, "x-forwarded-proto");
        if (proto.p) {
            pl_str f = first_entry(proto);
            if (f.n == 5 && strncasecmp(f.p, "https", 5) == 0) https = 1;
        }
        pl_str fh = pl_http_header_get(req, "x-forwarded-host");
        if (fh.p) host = first_entry(fh);
    }
    if (!host.p) {
        memset(out, 0, sizeof *out);
        return -1;
    }
    return pl_origin_parse_host(host.p, host.n, https, out);
}

int pl_origin_allowed(const pl_origin_policy *p, const pl_http_req *req, const struct sockaddr *peer,
                      int tls) {
    if (!req->origin.p) return 1;              /* not a browser: nothing to check */
    size_t count = 0;
    for (size_t i = 0; i < req->nheaders; i++)
        if (req->headers[i].name.n == 6 && strncasecmp(req->headers[i].name.p, "origin", 6) == 0) count++;
    if (count != 1) return 0;
    pl_origin o, own;
    if (pl_origin_parse(req->origin.p, req->origin.n, &o)) return 0;
    if (pl_origin_own(p, req, peer, tls, &own) == 0 && pl_origin_same(&o, &own)) return 1;
    for (size_t i = 0; i < p->nallowed; i++)
        if (pl_origin_same(&o, &p->allowed[i])) return 1;
    return 0;
}
