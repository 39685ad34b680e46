/* file.c — file responses with Range and ETag (see file.h).
 *
 * A response is a list of parts, each some text (a multipart boundary and
 * headers, or nothing) then a byte range of the file; a last part holds
 * the closing boundary. pump() walks them:
 *
 *   TEXT --queued--> RANGE --chunk read (thread pool)--> queued --> RANGE ...
 *     the read is issued only while the queue is below its high-water mark;
 *     above it, ctx->on_drain wakes pump() when the queue drained.
 *   all parts queued, or the connection gone: close fd, pl_http_respond_end.
 *
 * Invariants: at most one read is in flight (fs->reading); on_drain while a
 * read is in flight does nothing (its completion pumps); the connection's
 * close calls on_drain once, and pump() then finishes.
 */
#include "file.h"

#include <fcntl.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "../core/alloc.h"
#include "../core/buf.h"
#include "../core/log.h"

/* ---- parsing ------------------------------------------------------------ */

/* Digits as a number; past int64 it saturates at INT64_MAX (a valid
 * position far beyond any file: RFC 9110 clamps it, it is not an error). */
static int parse_num(const char **p, const char *end, int64_t *out) {
    const char *s = *p;
    int64_t v = 0;
    while (*p < end && **p >= '0' && **p <= '9') {
        int d = **p - '0';
        v = v > (INT64_MAX - d) / 10 ? INT64_MAX : v * 10 + d;
        (*p)++;
    }
    if (*p == s) return -1;
    *out = v;
    return 0;
}

int pl_http_range_parse(const char *v, size_t n, int64_t size, pl_http_range *out, int max) {
    const char *p = v, *end = v + n;
    if (n < 6 || strncasecmp(p, "bytes=", 6) != 0) return PL_HTTP_RANGE_IGNORE;
    p += 6;
    int got = 0, specs = 0;
    for (;;) {
        while (p < end && (*p == ' ' || *p == '\t')) p++;
        if (p >= end) break;
        if (*p == ',') { p++; continue; }
        int64_t a = -1, b = -1;
        if (*p == '-') {                     /* suffix: the last b bytes */
            p++;
            if (parse_num(&p, end, &b)) return PL_HTTP_RANGE_IGNORE;
        } else {
            if (parse_num(&p, end, &a) || p >= end || *p != '-') return PL_HTTP_RANGE_IGNORE;
            p++;
            if (p < end && *p >= '0' && *p <= '9') {
                if (parse_num(&p, end, &b)) return PL_HTTP_RANGE_IGNORE;
                if (b < a) return PL_HTTP_RANGE_IGNORE;
            }
        }
        while (p < end && (*p == ' ' || *p == '\t')) p++;
        if (p < end && *p != ',') return PL_HTTP_RANGE_IGNORE;
        if (++specs > max) return PL_HTTP_RANGE_TOOMANY;
        pl_http_range r;
        if (a < 0) {                         /* -b */
            if (b == 0 || size == 0) continue;
            r.first = b >= size ? 0 : size - b;
            r.last = size - 1;
        } else {
            if (a >= size) continue;
            r.first = a;
            r.last = (b < 0 || b >= size) ? size - 1 : b;
        }
        out[got++] = r;
    }
    if (specs == 0) return PL_HTTP_RANGE_IGNORE;
    return got ? got : PL_HTTP_RANGE_UNSAT;
}

int pl_http_etag_match(const char *v, size_t n, const char *etag) {
    size_t el = strlen(etag);
    const char *p = v, *end = v + n;
    while (p < end) {
        while (p < end && (*p == ' ' || *p == '\t' || *p == ',')) p++;
        if (p >= end) break;
        if (*p == '*') return 1;
        if (end - p >= 2 && p[0] == 'W' && p[1] == '/') p += 2;
        if (p < end && *p == '"') {
            const char *s = ++p;
            while (p < end && *p != '"') p++;
            if ((size_t)(p - s) == el && memcmp(s, etag, el) == 0) return 1;
            if (p < end) p++;
        } else {
            while (p < end && *p != ',') p++;
        }
    }
    return 0;
}

int pl_http_if_range_match(const char *v, size_t n, const char *etag) {
    if (!etag) return 0;
    size_t el = strlen(etag);
    return n == el + 2 && v[0] == '"' && v[n - 1] == '"' && memcmp(v + 1, etag, el) == 0;
}

/* ---- sending -------------------------------------------------------------- */

typedef struct part {
    char   *pre;              /* text before the range (owned), or NULL    */
    size_t  pre_len;
    int64_t off, len;         /* the file's bytes                          */
} part;

typedef struct fsend {
    pl_http_ctx *ctx;
    uv_fs_t      req;
    int          fd;
    part        *parts;
    int          nparts;
    int          cur;         /* part being sent                           */
    int          pre_done;    /* its text is queued                        */
    int64_t      pos;         /* bytes of its range queued                 */
    int          reading;     /* a read is in flight                       */
    uint8_t     *buf;         /* PL_HTTP_FILE_CHUNK                        */
} fsend;

static void pump(fsend *fs);

static void fs_done(fsend *fs) {
    uv_fs_t cl;
    uv_fs_close(NULL, &cl, fs->fd, NULL);
    uv_fs_req_cleanup(&cl);
    for (int i = 0; i < fs->nparts; i++) free(fs->parts[i].pre);
    free(fs->parts);
    free(fs->buf);
    pl_http_ctx *ctx = fs->ctx;
    ctx->data = NULL;
    free(fs);
    pl_http_respond_end(ctx);
}

static void on_drain(pl_http_ctx *ctx) {
    fsend *fs = ctx->data;
    if (!fs->reading) pump(fs);
}

static void on_read(uv_fs_t *req) {
    fsend *fs = req->data;
    ssize_t r = req->result;
    uv_fs_req_cleanup(req);
    fs->reading = 0;
    pl_conn *c = fs->ctx->conn;
    if (!pl_conn_alive(c)) { fs_done(fs); return; }
    if (r <= 0) {                            /* the file shrank or failed: cut off */
        pl_log(PL_LOG_ERROR, c->id, "file response: read failed", "\"err\":%zd", r);
        pl_conn_close(c, 0);
        fs_done(fs);
        return;
    }
    pl_conn_send_copy(c, fs->buf, (size_t)r);
    fs->pos += r;
    pump(fs);
}

static void pump(fsend *fs) {
    for (;;) {
        pl_conn *c = fs->ctx->conn;
        if (!pl_conn_alive(c) || fs->cur >= fs->nparts) { fs_done(fs); return; }
        part *pt = &fs->parts[fs->cur];
        if (!fs->pre_done) {
            if (pt->pre_len) pl_conn_send_copy(c, pt->pre, pt->pre_len);
            fs->pre_done = 1;
        }
        if (fs->pos >= pt->len) {
            fs->cur++;
            fs->pre_done = 0;
            fs->pos = 0;
            continue;
        }
        if (c->high) return;                 /* on_drain resumes */
        int64_t want = pt->len - fs->pos;
        if (want > PL_HTTP_FILE_CHUNK) want = PL_HTTP_FILE_CHUNK;
        uv_buf_t b = uv_buf_init((char *)fs->buf, (unsigned)want);
        fs->req.data = fs;
        fs->reading = 1;
        if (uv_fs_read(pl_conn_loop(c), &fs->req, fs->fd, &b, 1, pt->off + fs->pos, on_read) < 0) {
            fs->reading = 0;
            pl_conn_close(c, 0);
            fs_done(fs);
        }
        return;
    }
}

static void close_fd(int fd) {
    uv_fs_t cl;
    uv_fs_close(NULL, &cl, fd, NULL);
    uv_fs_req_cleanup(&cl);
}

void pl_http_send_file(pl_http_ctx *ctx, int fd, int64_t size, const pl_http_file *f) {
    pl_sbuf h;
    pl_sbuf_init(&h);
    pl_sbuf_adds(&h, "Accept-Ranges: bytes\r\n");
    if (f->etag) pl_sbuf_printf(&h, "ETag: \"%s\"\r\n", f->etag);
    if (f->extra) pl_sbuf_adds(&h, f->extra);
    pl_sbuf_addc(&h, '\0');

    pl_str inm = pl_http_header_get(&ctx->req, "if-none-match");
    if (f->etag && inm.p && pl_http_etag_match(inm.p, inm.n, f->etag)) {
        close_fd(fd);
        pl_http_respond(ctx, 304, NULL, NULL, 0, h.p);
        pl_sbuf_release(&h);
        return;
    }
    pl_http_range rg[PL_HTTP_RANGES_MAX];
    int nr = PL_HTTP_RANGE_IGNORE;
    /* RFC 9110 14.2: Range is defined for GET only; a HEAD answers what a
     * GET without it would (200, the whole length). */
    pl_str rv = ctx->req.method == PL_HTTP_GET ? pl_http_header_get(&ctx->req, "range") : (pl_str){0};
    pl_str ir = pl_http_header_get(&ctx->req, "if-range");
    if (ir.p && !pl_http_if_range_match(ir.p, ir.n, f->etag)) rv.p = NULL;   /* another version: all of it */
    /* given twice: which one counts is not ours to guess, and a Range we
     * cannot read is ignored (audit N3: the first one was served) */
    if (rv.p && pl_http_header_count(&ctx->req, "range") > 1) rv.p = NULL;
    if (rv.p) nr = pl_http_range_parse(rv.p, rv.n, size, rg, PL_HTTP_RANGES_MAX);
    if (nr < 0) {
        close_fd(fd);
        h.len--;                             /* drop the NUL */
        pl_sbuf_printf(&h, "Content-Range: bytes */%lld\r\n", (long long)size);
        pl_sbuf_addc(&h, '\0');
        char body[160];
        int bn = snprintf(body, sizeof body,
                          "{\"error\":{\"code\":\"range_not_satisfiable\",\"message\":\"%s\"}}",
                          nr == PL_HTTP_RANGE_TOOMANY ? "too many ranges" : "no range overlaps the file");
        pl_http_respond(ctx, 416, "application/json", body, (size_t)bn, h.p);
        pl_sbuf_release(&h);
        return;
    }
    fsend *fs = pl_calloc(1, sizeof *fs);
    fs->ctx = ctx;
    fs->fd = fd;
    int status = 200;
    int64_t total = 0;
    char boundary[40] = "";
    if (nr == 0) {
        fs->nparts = 1;
        fs->parts = pl_calloc(1, sizeof *fs->parts);
        fs->parts[0].len = size;
        total = size;
    } else if (nr == 1) {
        status = 206;
        fs->nparts = 1;
        fs->parts = pl_calloc(1, sizeof *fs->parts);
        fs->parts[0].off = rg[0].first;
        fs->parts[0].len = rg[0].last - rg[0].first + 1;
        total = fs->parts[0].len;
        h.len--;
        pl_sbuf_printf(&h, "Content-Range: bytes %lld-%lld/%lld\r\n", (long long)rg[0].first,
                       (long long)rg[0].last, (long long)size);
        pl_sbuf_addc(&h, '\0');
    } else {
        status = 206;
        uint64_t rnd;                          /* random: no address leaks, no guessing it */
        randombytes_buf(&rnd, sizeof rnd);
        snprintf(boundary, sizeof boundary, "parley-%016llx", (unsigned long long)rnd);
        fs->nparts = nr + 1;
        fs->parts = pl_calloc((size_t)fs->nparts, sizeof *fs->parts);
        for (int i = 0; i <= nr; i++) {
            pl_sbuf t;
            pl_sbuf_init(&t);
            if (i < nr) {
                pl_sbuf_printf(&t, "%s--%s\r\nContent-Type: %s\r\nContent-Range: bytes %lld-%lld/%lld\r\n\r\n",
                               i ? "\r\n" : "", boundary, f->ctype, (long long)rg[i].first,
                               (long long)rg[i].last, (long long)size);
                fs->parts[i].off = rg[i].first;
                fs->parts[i].len = rg[i].last - rg[i].first + 1;
            } else {
                pl_sbuf_printf(&t, "\r\n--%s--\r\n", boundary);
            }
            fs->parts[i].pre_len = t.len;
            fs->parts[i].pre = pl_malloc(t.len ? t.len : 1);
            memcpy(fs->parts[i].pre, t.p, t.len);
            total += (int64_t)t.len + fs->parts[i].len;
            pl_sbuf_release(&t);
        }
    }
    char ctype[200];
    if (boundary[0]) snprintf(ctype, sizeof ctype, "multipart/byteranges; boundary=%s", boundary);
    else snprintf(ctype, sizeof ctype, "%s", f->ctype);
    pl_http_respond_head(ctx, status, ctype, total, h.p);
    pl_sbuf_release(&h);
    if (ctx->req.method == PL_HTTP_HEAD) fs->cur = fs->nparts;   /* nothing more */
    fs->buf = pl_malloc(PL_HTTP_FILE_CHUNK);
    ctx->data = fs;
    ctx->on_drain = on_drain;
    pump(fs);
}
