/* file.h — serving a file's bytes as an HTTP response: Range, ETag,
 * conditional requests, and writing as the connection drains.
 *
 * Owns: parsing the Range header (RFC 9110 14.2) and judging If-Range
 * (13.1.5), choosing 200/206/304/416,
 * multipart/byteranges for several ranges, and reading the file off the
 * loop (libuv's thread pool) in PL_HTTP_FILE_CHUNK pieces, one at a time,
 * only while the connection's write queue is below its high-water mark —
 * so serving a file of any size costs one chunk per connection.
 * Does not own: who may see the file, its headers of policy (the caller
 * passes Content-Disposition, CSP and Cache-Control in extra).
 */
#ifndef PL_HTTP_FILE_H
#define PL_HTTP_FILE_H

#include <stddef.h>
#include <stdint.h>

#include "server.h"

#define PL_HTTP_FILE_CHUNK  (64 * 1024)
#define PL_HTTP_RANGES_MAX  8      /* ranges of one request; more: 416    */

typedef struct pl_http_range { int64_t first, last; } pl_http_range;   /* inclusive */

#define PL_HTTP_RANGE_IGNORE   0   /* not a bytes range, or malformed: serve it all (200) */
#define PL_HTTP_RANGE_UNSAT  (-1)  /* no range overlaps the file: 416  */
#define PL_HTTP_RANGE_TOOMANY (-2) /* more than max ranges: 416          */

/* Parses the value of a Range header against a file of size bytes:
 * "bytes=" then comma-separated first-last, first- or -suffix. Returns the
 * number of satisfiable ranges written to out (clamped to the file; ranges
 * starting past its end are dropped), or a PL_HTTP_RANGE_* code. Pure. */
int pl_http_range_parse(const char *v, size_t n, int64_t size, pl_http_range *out, int max);

/* 1 if an If-None-Match value v names etag (as "etag", W/"etag" or *). */
int pl_http_etag_match(const char *v, size_t n, const char *etag);
/* 1 if an If-Range value v lets the Range apply: v is exactly the strong
 * entity-tag "etag" (RFC 9110 13.1.5, strong comparison). A weak tag, a
 * list, "*", an HTTP-date (a file response sends no Last-Modified to
 * compare it with) or a NULL etag: 0, and the whole file is sent. */
int pl_http_if_range_match(const char *v, size_t n, const char *etag);

typedef struct pl_http_file {
    const char *ctype;        /* Content-Type of the bytes                      */
    const char *etag;         /* sent quoted; NULL: none                        */
    const char *extra;        /* more header lines ("Name: v\r\n"...), or NULL  */
} pl_http_file;

/* Answers ctx (GET or HEAD) with the file fd of size bytes: 304 when
 * If-None-Match names the etag; a Range is ignored (200) on a HEAD (RFC
 * 9110 14.2: range handling is defined for GET only) and when an If-Range
 * does not match (pl_http_if_range_match); 206 for one range, 206
 * multipart/byteranges for several, 416 (with Content-Range: bytes * /size)
 * when none is satisfiable or more than PL_HTTP_RANGES_MAX are asked; else
 * 200. Takes over fd (closed when done) and ctx->data; strings of f are
 * copied. */
void pl_http_send_file(pl_http_ctx *ctx, int fd, int64_t size, const pl_http_file *f);

#endif
