/* origin.h — which browser origins may open a WebSocket or change state
 * over REST (docs/protocol.md "Origin checks"), and which peers are proxies
 * whose X-Forwarded-Host / X-Forwarded-Proto are believed.
 *
 * Owns: a strict parser for Origin values (scheme://host[:port] and nothing
 * else: no path, no userinfo, no "null", no list), Host values, CIDR lists,
 * and the decision for one request. Does not own: answering 403 (the
 * callers: http/server.c for the upgrade, app/api.c for REST) or the
 * settings (app/config.c: --allowed-origins, --trusted-proxies).
 *
 * The server's own origin is the one the client reached: scheme http (https
 * when the connection is TLS, or when a trusted proxy says
 * X-Forwarded-Proto: https), the host and port of
 * Host (of X-Forwarded-Host when a trusted proxy sets it; a missing port is
 * the scheme's default). Comparison is exact after lower-casing the scheme
 * and host and making the default port explicit, so http://h and
 * http://h:80 are one origin, and h.evil.example or h@evil.example are not h.
 */
#ifndef PL_HTTP_ORIGIN_H
#define PL_HTTP_ORIGIN_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "http_parser.h"

#define PL_ORIGIN_HOST_MAX 256

typedef struct pl_origin {
    int  https;                    /* 0: http, 1: https                      */
    char host[PL_ORIGIN_HOST_MAX]; /* lower case; IPv6 literals keep [ ]     */
    int  port;                     /* explicit, or the scheme's default      */
} pl_origin;

/* An Origin header value: "http" or "https" (any case), "://", a host
 * (letters, digits, '.', '-', '_', or a bracketed IPv6 literal), an optional
 * ":port" (1-65535), nothing more. 0, or -1 for anything else. */
int pl_origin_parse(const char *s, size_t n, pl_origin *out);
/* A Host (or X-Forwarded-Host) value "host[:port]" reached over https or
 * not. 0 or -1. */
int pl_origin_parse_host(const char *s, size_t n, int https, pl_origin *out);
/* 1 if a and b are the same origin. */
int pl_origin_same(const pl_origin *a, const pl_origin *b);

typedef struct pl_cidr {
    int     v6;                    /* 0: IPv4 (addr[0..3]), 1: IPv6          */
    uint8_t addr[16];
    int     bits;                  /* prefix length                          */
} pl_cidr;

/* "1.2.3.4", "10.0.0.0/8", "::1", "fd00::/8". 0 or -1. */
int pl_cidr_parse(const char *s, size_t n, pl_cidr *out);
/* 1 if sa (AF_INET or AF_INET6; IPv4-mapped IPv6 counts as IPv4) is in c. */
int pl_cidr_match(const pl_cidr *c, const struct sockaddr *sa);

typedef struct pl_origin_policy {
    pl_origin *allowed;            /* --allowed-origins                      */
    size_t     nallowed;
    pl_cidr   *trusted;            /* --trusted-proxies                      */
    size_t     ntrusted;
} pl_origin_policy;

/* Reads comma-separated lists (spaces around entries ignored; "" is an
 * empty list). 0, or -1 with a message naming the bad entry in err. */
int  pl_origin_policy_init(pl_origin_policy *p, const char *allowed, const char *trusted,
                           char *err, size_t errlen);
void pl_origin_policy_release(pl_origin_policy *p);
/* 1 if peer is one of the trusted proxies. */
int  pl_origin_trusted(const pl_origin_policy *p, const struct sockaddr *peer);
/* The origin the client reached (see the top of this file); 0, or -1 when
 * there is no usable Host. peer may be NULL (not trusted); tls is 1 when
 * the request came over TLS to this server. */
int  pl_origin_own(const pl_origin_policy *p, const pl_http_req *req, const struct sockaddr *peer,
                   int tls, pl_origin *out);
/* 1 if the request may go on: it has no Origin header, or exactly one whose
 * value is the server's own origin or on the allow-list. 0: refuse (403). */
int  pl_origin_allowed(const pl_origin_policy *p, const pl_http_req *req, const struct sockaddr *peer,
                       int tls);

#endif
