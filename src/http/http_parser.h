/* http_parser.h — HTTP/1.1 request head parsing (RFC 9112), no I/O.
 *
 * Owns: turning the bytes of a request head into a pl_http_req, and finding
 * where a head ends as bytes trickle in. Does not own: bodies (the caller
 * reads Content-Length bytes), routing, responses.
 *
 * Shape: the caller appends arriving bytes to its head buffer and calls
 * pl_http_head_end() with a scan offset it keeps between calls, so each byte
 * is looked at once however slowly the head arrives (slowloris clients cost
 * O(n), not O(n^2)). Once the end is found, pl_http_parse() parses the whole
 * head in one pass. The pl_http_req points into the caller's buffer (no
 * allocation); it is valid while that buffer is.
 */
#ifndef PL_HTTP_PARSER_H
#define PL_HTTP_PARSER_H

#include <stddef.h>
#include <stdint.h>

#define PL_HTTP_MAX_HEADERS 64

/* Errors (negative). */
#define PL_HTTP_EBAD      (-1)   /* malformed: answer 400                    */
#define PL_HTTP_ETOOMANY  (-2)   /* more than PL_HTTP_MAX_HEADERS: 431       */
#define PL_HTTP_EVERSION  (-3)   /* not HTTP/1.0 or HTTP/1.1: 505            */
#define PL_HTTP_ECHUNKED  (-4)   /* Transfer-Encoding present: 411 (we need Content-Length) */
#define PL_HTTP_ELENGTH   (-5)   /* bad or duplicate-conflicting Content-Length: 400 */

typedef struct pl_str { const char *p; size_t n; } pl_str;

typedef struct pl_http_header { pl_str name, value; } pl_http_header;

typedef enum pl_http_method {
    PL_HTTP_OTHER = 0, PL_HTTP_GET, PL_HTTP_HEAD, PL_HTTP_POST, PL_HTTP_PUT,
    PL_HTTP_DELETE, PL_HTTP_PATCH, PL_HTTP_OPTIONS
} pl_http_method;

typedef struct pl_http_req {
    pl_http_method method;
    pl_str   method_str;
    pl_str   target;          /* request-target as sent: path and ?query     */
    pl_str   path;            /* target up to '?'                            */
    pl_str   query;           /* after '?', without it; n = 0 if none        */
    int      minor;           /* HTTP/1.<minor>                              */
    pl_http_header headers[PL_HTTP_MAX_HEADERS];
    size_t   nheaders;
    int64_t  content_length;  /* -1 if absent                                */
    int      keep_alive;      /* 1.1 default on, "Connection: close" off; 1.0 default off, keep-alive on */
    int      upgrade_ws;      /* "Upgrade: websocket" (case-insensitive) and Connection has the "upgrade" token */
    pl_str   ws_key;          /* Sec-WebSocket-Key, n = 0 if absent          */
    pl_str   ws_version;      /* Sec-WebSocket-Version                       */
    pl_str   ws_protocol;     /* Sec-WebSocket-Protocol (first occurrence)   */
    pl_str   authorization;   /* Authorization                               */
    pl_str   origin;          /* Origin                                      */
    pl_str   content_type;
    pl_str   host;
} pl_http_req;

/* Scans buf[*scan .. len) for the end of the head ("\r\n\r\n"; a bare
 * "\n\n" is accepted too). Returns the head length (bytes up to and including
 * the blank line) when found, 0 when more bytes are needed (*scan advanced so
 * the next call starts where this one stopped, minus the up to 3 bytes a
 * terminator may straddle). */
size_t pl_http_head_end(const char *buf, size_t len, size_t *scan);

/* Parses a complete head of len bytes (as returned by pl_http_head_end).
 * Returns 0 or a PL_HTTP_E* error. Rejects: bad method token, a target not
 * starting with '/' (except "*" for OPTIONS), control characters or spaces in
 * the target, header names that are not tokens, obsolete line folding, NUL
 * anywhere, a missing Host on HTTP/1.1 (EBAD). Header values are trimmed of
 * surrounding spaces and tabs. */
int pl_http_parse(const char *buf, size_t len, pl_http_req *req);

/* Case-insensitive lookup; returns the first value, or a pl_str with p NULL. */
pl_str pl_http_header_get(const pl_http_req *req, const char *name);
/* How many header fields are named name (case-insensitive). */
size_t pl_http_header_count(const pl_http_req *req, const char *name);

/* Finds query parameter name in a query string; percent-decodes its value
 * into out (NUL-terminated, truncated to cap-1). Returns 1 if present.
 * "%00" stays the three characters, so that no NUL hides in out. */
int pl_http_query_get(pl_str query, const char *name, char *out, size_t cap);
/* The same, but "%00" decodes to a NUL byte and *len (not NULL) is the
 * value's decoded length (bytes written before the terminating NUL), for a
 * caller that refuses a NUL in the value as a JSON string with one is. */
int pl_http_query_getn(pl_str query, const char *name, char *out, size_t cap, size_t *len);

/* Checks a query string's parameter names: 0 if each appears once, 1 if
 * one repeats (its decoded name, truncated, into dup), -1 if there are
 * more than 64 parameters. */
int pl_http_query_check(pl_str query, char *dup, size_t cap);

/* 1 if the comma-separated header value v contains token t (case-insensitive). */
int pl_http_has_token(pl_str v, const char *t);

#endif
