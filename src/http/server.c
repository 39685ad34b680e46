/* server.c — HTTP/1.1 request loop on a connection and the WebSocket
 * upgrade (see server.h).
 *
 * Per-connection state machine (struct http_state, on the heap only while a
 * request is being read or answered; an idle keep-alive connection has none):
 *
 *   HEAD --head complete--> BODY --Content-Length bytes--> HANDLER
 *    ^                                                       |
 *    `------------------ answered (pl_http_respond) ---------'
 *
 *   HEAD: bytes are appended to buf; pl_http_head_end() scans them
 *         incrementally. Deadline: PL_HTTP_HEAD_TIMEOUT from the first byte
 *         of the request (slow-header clients are cut off).
 *   HANDLER: reading is paused; the context holds a connection reference.
 *         pl_http_respond() frees the context, drops the request's bytes,
 *         resumes reading and re-runs the loop on what is left (pipelining).
 *   Answers unread: while the connection's queue is above its high-water
 *         mark, no further request is taken and reading stays paused;
 *         pl_http_on_drain goes on once the client read (audit Z: a client
 *         that pipelined requests and read nothing had 583 MB queued). One
 *         that reads nothing for PL_HTTP_IDLE_TIMEOUT_MS is closed.
 *
 * Streamed request bodies (uploads) skip BODY: the handler takes the body
 * in chunks while in HANDLER; streamed responses (files) stay in HANDLER
 * until their last byte is queued. See "Streaming bodies and responses" at
 * the end of this file.
 */
#include "server.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/alloc.h"
#include "../core/clock.h"
#include "../core/log.h"
#include "../ws/ws.h"
#include "../ws/wsconn.h"

#define PL_HTTP_HEAD_TIMEOUT_MS 10000
#define PL_HTTP_IDLE_TIMEOUT_MS 60000

typedef struct http_state {
    char        *buf;        /* bytes of the current (and pipelined) requests */
    size_t       len, cap;
    size_t       scan;       /* pl_http_head_end's resume offset            */
    size_t       head_len;   /* 0 until the head is complete                */
    pl_http_ctx *ctx;        /* the request being answered, or NULL         */
    int          in_process; /* process() is on the stack: respond must not re-enter */
    int          continued;  /* this request's 100 Continue was sent          */
} http_state;

static pl_http_hooks hooks;

void pl_http_init(const pl_http_hooks *h) { hooks = *h; }

static int hsts_max_age;            /* TLS: Strict-Transport-Security (0: none) */
void pl_http_set_hsts(int max_age) { hsts_max_age = max_age; }

const char *pl_http_status_text(int status) {
    switch (status) {
    case 101: return "Switching Protocols";
    case 200: return "OK";
    case 201: return "Created";
    case 204: return "No Content";
    case 206: return "Partial Content";
    case 304: return "Not Modified";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 410: return "Gone";
    case 411: return "Length Required";
    case 413: return "Content Too Large";
    case 415: return "Unsupported Media Type";
    case 416: return "Range Not Satisfiable";
    case 426: return "Upgrade Required";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    case 507: return "Insufficient Storage";
    case 505: return "HTTP Version Not Supported";
    default:  return "Unknown";
    }
}

static void state_free(pl_conn *c) {
    http_state *st = c->http;
    if (!st) return;
    free(st->buf);
    free(st);
    c->http = NULL;
}

/* Writes a response head, and body if any, directly on a connection (no
 * context). A head of a streamed response has body NULL and len its
 * Content-Length. extra may bring its own Cache-Control (media responses). */
static void write_head_body(pl_conn *c, int status, const char *ctype, const void *body,
                            int64_t len, const char *extra, int keep_alive) {
    pl_sbuf s;
    pl_sbuf_init(&s);
    pl_sbuf_printf(&s, "HTTP/1.1 %d %s\r\nContent-Length: %lld\r\n", status,
                   pl_http_status_text(status), (long long)len);
    if (ctype) pl_sbuf_printf(&s, "Content-Type: %s\r\n", ctype);
    if (!extra || !strcasestr(extra, "Cache-Control:")) pl_sbuf_adds(&s, "Cache-Control: no-store\r\n");
    pl_sbuf_adds(&s, "X-Content-Type-Options: nosniff\r\nReferrer-Policy: no-referrer\r\n");
    if (c->tls && hsts_max_age) pl_sbuf_printf(&s, "Strict-Transport-Security: max-age=%d\r\n", hsts_max_age);
    /* one Connection header: a 426's "Connection: Upgrade" (RFC 9110 7.8)
     * and the close of a connection that ends go together */
    static const char upg[] = "Connection: Upgrade\r\n";
    const char *u = extra ? strstr(extra, upg) : NULL;
    if (!keep_alive) pl_sbuf_adds(&s, u ? "Connection: Upgrade, close\r\n" : "Connection: close\r\n");
    if (extra && u && !keep_alive) {
        pl_sbuf_add(&s, extra, (size_t)(u - extra));
        pl_sbuf_adds(&s, u + sizeof upg - 1);
    } else if (extra) {
        pl_sbuf_adds(&s, extra);
    }
    pl_sbuf_adds(&s, "\r\n");
    if (body && len) pl_sbuf_add(&s, body, (size_t)len);
    pl_conn_send_copy(c, s.p, s.len);
    pl_sbuf_release(&s);
}

static void write_response(pl_conn *c, int status, const char *ctype, const void *body,
                           size_t len, const char *extra, int keep_alive) {
    write_head_body(c, status, ctype, body ? body : "", (int64_t)len, extra, keep_alive);
}

static void error_and_close_x(pl_conn *c, int status, const char *code, const char *msg, const char *extra) {
    char body[256];
    int n = snprintf(body, sizeof body, "{\"error\":{\"code\":\"%s\",\"message\":\"%s\"}}", code, msg);
    write_response(c, status, "application/json", body, (size_t)n, extra, 0);
    state_free(c);
    pl_conn_close(c, 1);
}

static void error_and_close(pl_conn *c, int status, const char *code, const char *msg) {
    error_and_close_x(c, status, code, msg, NULL);
}

/* "Allow: GET, HEAD\r\n" for the method set allow (PL_HTTP_M bits). */
#define ALLOW_LINE_MAX 64
static void allow_line(unsigned allow, char out[ALLOW_LINE_MAX]) {
    static const char *const names[] = {
        [PL_HTTP_GET] = "GET", [PL_HTTP_HEAD] = "HEAD", [PL_HTTP_POST] = "POST", [PL_HTTP_PUT] = "PUT",
        [PL_HTTP_DELETE] = "DELETE", [PL_HTTP_PATCH] = "PATCH", [PL_HTTP_OPTIONS] = "OPTIONS",
    };
    size_t n = (size_t)snprintf(out, ALLOW_LINE_MAX, "Allow:");
    const char *sep = " ";
    for (size_t m = 0; m < sizeof names / sizeof names[0]; m++) {
        if (!names[m] || !(allow & PL_HTTP_M(m))) continue;
        n += (size_t)snprintf(out + n, ALLOW_LINE_MAX - n, "%s%s", sep, names[m]);
        sep = ", ";
    }
    snprintf(out + n, ALLOW_LINE_MAX - n, "\r\n");
}

static void process(pl_conn *c);
static int (*stream_pred)(const pl_http_req *req);
static int (*head_check)(pl_conn *c, const pl_http_req *req, const char **code, const char **msg);
static void stream_dispatch(pl_conn *c, http_state *st, pl_http_ctx *ctx);
static size_t stream_feed(pl_http_ctx *ctx, const uint8_t *p, size_t n);
static void stream_closed(pl_http_ctx *ctx);
static void req_rebase(pl_http_req *r, const char *old, size_t len, const char *now);

/* A streamed request answered before its body was read to the end: what
 * follows on the connection is body, not a request. */
static int keep_alive_of(const pl_http_ctx *ctx) {
    return ctx->req.keep_alive && !(ctx->streaming && ctx->body_left > 0);
}

static void finish(pl_http_ctx *ctx);

void pl_http_respond(pl_http_ctx *ctx, int status, const char *ctype, const void *body,
                     size_t len, const char *extra) {
    pl_conn *c = ctx->conn;
    http_state *st = c->http;
    if (pl_conn_alive(c) && st && st->ctx == ctx) {
        if (ctx->req.method == PL_HTTP_HEAD)   /* the length a GET gets, no body (RFC 9110 9.3.2) */
            write_head_body(c, status, ctype, NULL, (int64_t)len, extra, keep_alive_of(ctx));
        else
            write_response(c, status, ctype, body, len, extra, keep_alive_of(ctx));
    }
    finish(ctx);
}

/* The answer is queued: drops the request, goes on with the next one (or
 * closes), frees ctx. */
static void finish(pl_http_ctx *ctx) {
    pl_conn *c = ctx->conn;
    http_state *st = c->http;
    int keep = keep_alive_of(ctx);
    /* Closing but not yet closed (on_close still to run): the request's
     * bytes are still the connection's and are freed with it; only the
     * pointer to ctx must go. */
    if (!pl_conn_alive(c) && st && st->ctx == ctx) st->ctx = NULL;
    if (pl_conn_alive(c) && st && st->ctx == ctx) {
        /* drop the answered request's bytes */
        size_t used = st->head_len + ctx->body_len;
        memmove(st->buf, st->buf + used, st->len - used);
        st->len -= used;
        st->scan = 0;
        st->head_len = 0;
        st->continued = 0;
        st->ctx = NULL;
        if (!keep) {
            state_free(c);
            pl_conn_close(c, 1);
        } else {
            pl_conn_resume(c);
            if (!st->in_process) process(c);
        }
    }
    free(ctx->owned);
    free(ctx);
    pl_conn_unref(c);
}

/* Answers obj (consumed) as JSON, with extra header lines (or NULL). */
static void respond_json_x(pl_http_ctx *ctx, int status, json_t *obj, const char *extra) {
    char *s = json_dumps(obj, JSON_COMPACT);
    json_decref(obj);
    pl_http_respond(ctx, status, "application/json", s, strlen(s), extra);
    free(s);
}

void pl_http_respond_json(pl_http_ctx *ctx, int status, json_t *obj) { respond_json_x(ctx, status, obj, NULL); }

static json_t *error_body(const char *code, const char *msg) {
    return json_pack("{s:{s:s,s:s}}", "error", "code", code, "message", msg);
}

/* A 503 (the store or the process is unavailable) says when to try again,
 * as HAProxy's own 503 does (protocol.md, `unavailable`). */
void pl_http_error(pl_http_ctx *ctx, int status, const char *code, const char *msg) {
    respond_json_x(ctx, status, error_body(code, msg), status == 503 ? "Retry-After: 1\r\n" : NULL);
}

void pl_http_method_not_allowed(pl_http_ctx *ctx, unsigned allow, const char *msg) {
    char extra[ALLOW_LINE_MAX];
    allow_line(allow, extra);
    respond_json_x(ctx, 405, error_body("method_not_allowed", msg), extra);
}

/* Extracts the access token offered at the handshake, if any. An empty
 * one ("Authorization: Bearer" with nothing or only spaces after it, the
 * value being trimmed; or the subprotocol "bearer.") is offered all the
 * same: *tok is "" and the session closes with 4001 at once instead of
 * waiting for the auth timeout. */
static void handshake_token(const pl_http_req *r, const char **tok, size_t *tlen, int *want_proto) {
    static const char empty[] = "";
    *tok = NULL;
    *tlen = 0;
    *want_proto = 0;
    pl_str a = r->authorization;
    if (a.n >= 6 && strncasecmp(a.p, "Bearer", 6) == 0 && (a.n == 6 || a.p[6] == ' ' || a.p[6] == '\t')) {
        size_t i = 6;
        while (i < a.n && (a.p[i] == ' ' || a.p[i] == '\t')) i++;
        *tok = i < a.n ? a.p + i : empty;
        *tlen = a.n - i;
    }
    int from_header = *tok != NULL;
    /* Sec-WebSocket-Protocol: parley.v1, bearer.<token>; on one line or on
     * several, which mean the same (RFC 6455 11.3.4; audit C3: a second
     * line was not read) */
    for (size_t h = 0; h < r->nheaders; h++) {
        pl_str nm = r->headers[h].name;
        if (nm.n != 22 || strncasecmp(nm.p, "sec-websocket-protocol", 22) != 0) continue;
        const char *p = r->headers[h].value.p, *end = p + r->headers[h].value.n;
        while (p && p < end) {
            while (p < end && (*p == ' ' || *p == '\t' || *p == ',')) p++;
            const char *s = p;
            while (p < end && *p != ',' && *p != ' ' && *p != '\t') p++;
            size_t n = (size_t)(p - s);
            if (n == 9 && memcmp(s, "parley.v1", 9) == 0) *want_proto = 1;
            else if (n >= 7 && memcmp(s, "bearer.", 7) == 0 && !from_header) {
                /* two: which would count is not ours to guess (audit N4:
                 * the first did), a bad token as an empty one is */
                *tok = n > 7 && !*tok ? s + 7 : empty;
                *tlen = *tok == empty ? 0 : n - 7;
            }
        }
    }
}

/* A refused handshake: the answer is queued and st freed; the context and
 * the connection reference process() took for it are dropped here, as
 * pl_http_respond() does for a request (without this, every refused
 * handshake leaked its context and kept its connection alive for good). */
static int refuse(pl_conn *c, pl_http_ctx *ctx) {
    free(ctx);
    pl_conn_unref(c);                  /* conn.c holds a reference during on_data */
    return -1;
}

/* Answers the opening handshake; returns 0 if the connection is now WS. */
static int upgrade(pl_conn *c, http_state *st) {
    pl_http_ctx *hctx = st->ctx;
    pl_http_req *r = &hctx->req;
    char accept[29];
    const char *why = hooks.upgrade_refused ? hooks.upgrade_refused(c, r, hooks.ud) : NULL;
    if (why) {                                          /* Origin before anything else */
        error_and_close(c, 403, "forbidden", why);
        return refuse(c, hctx);
    }
    if (r->method != PL_HTTP_GET) {
        char allow[ALLOW_LINE_MAX];
        allow_line(PL_HTTP_M(PL_HTTP_GET), allow);
        error_and_close_x(c, 405, "method_not_allowed", "WebSocket needs GET", allow);
        return refuse(c, hctx);
    }
    if (r->ws_version.n != 2 || memcmp(r->ws_version.p, "13", 2) != 0) {
        static const char body[] =
            "{\"error\":{\"code\":\"bad_request\",\"message\":\"WebSocket version 13 only\"}}";
        write_response(c, 426, "application/json", body, sizeof body - 1, "Sec-WebSocket-Version: 13\r\n", 0);
        state_free(c);
        pl_conn_close(c, 1);
        return refuse(c, hctx);
    }
    /* RFC 6455 11.3.1: the header MUST NOT appear more than once (audit Z) */
    if (pl_http_header_count(r, "sec-websocket-key") != 1 || pl_ws_accept_key(r->ws_key.p, r->ws_key.n, accept) != 0) {
        error_and_close(c, 400, "bad_request", "bad Sec-WebSocket-Key");
        return refuse(c, hctx);
    }
    const char *tok;
    size_t tlen;
    int want_proto;
    handshake_token(r, &tok, &tlen, &want_proto);
    char tokbuf[512];
    if (tlen >= sizeof tokbuf) tlen = sizeof tokbuf - 1;  /* too long to be ours: fails verify */
    if (tok) memcpy(tokbuf, tok, tlen);
    tokbuf[tlen] = '\0';

    char head[384];
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n"
                     "Referrer-Policy: no-referrer\r\nX-Content-Type-Options: nosniff\r\n"
                     "Cache-Control: no-store\r\n%s\r\n",
                     accept, want_proto ? "Sec-WebSocket-Protocol: parley.v1\r\n" : "");
    pl_conn_send_copy(c, head, (size_t)n);

    /* bytes after the head already belong to the WebSocket */
    size_t used = st->head_len;
    size_t rest = st->len - used;
    uint8_t *left = NULL;
    if (rest) left = (uint8_t *)pl_strndup(st->buf + used, rest);
    pl_http_ctx *ctx = st->ctx;
    st->ctx = NULL;
    state_free(c);
    free(ctx);
    pl_conn_unref(c);
    c->deadline = 0;
    pl_wsconn_open(c);
    hooks.on_ws_open(c, tok ? tokbuf : NULL, tok ? tlen : 0, hooks.ud);
    if (left) {
        if (pl_conn_alive(c)) pl_wsconn_on_data(c, left, rest);
        free(left);
    }
    return 0;
}

/* The status, error code and message a request head that does not parse
 * is answered with (protocol.md sections 4 and 6). */
static const char *parse_error_status(int e, int *status, const char **code) {
    switch (e) {
    case PL_HTTP_ETOOMANY: *status = 431; *code = "too_large"; return "too many headers";
    case PL_HTTP_EVERSION: *status = 505; *code = "bad_request"; return "HTTP/1.0 or HTTP/1.1 only";
    case PL_HTTP_ECHUNKED: *status = 411; *code = "length_required"; return "Content-Length required";
    default:               *status = 400; *code = "bad_request"; return "malformed request";
    }
}

/* Runs the state machine over what is buffered. Loops (rather than
 * recursing through pl_http_respond) so pipelined requests cost no stack. */
static void process(pl_conn *c) {
    http_state *st;
    while ((st = c->http) && !st->ctx && pl_conn_alive(c) && c->mode == PL_CONN_HTTP) {
        if (c->high) {                     /* answers unread: pl_http_on_drain goes on */
            pl_conn_pause(c);
            c->deadline = pl_mono_ms() + PL_HTTP_IDLE_TIMEOUT_MS;
            return;
        }
        if (!st->head_len) {
            size_t h = pl_http_head_end(st->buf, st->len, &st->scan);
            if (!h) {
                if (st->len > PL_HTTP_MAX_HEAD) {
                    error_and_close(c, 431, "too_large", "request head too large");
                    return;
                }
                if (st->len == 0) {        /* idle between requests */
                    state_free(c);
                    c->deadline = pl_mono_ms() + PL_HTTP_IDLE_TIMEOUT_MS;
                }
                return;
            }
            if (h > PL_HTTP_MAX_HEAD) {
                error_and_close(c, 431, "too_large", "request head too large");
                return;
            }
            st->head_len = h;
        }
        pl_http_ctx *ctx = pl_calloc(1, sizeof *ctx);
        int e = pl_http_parse(st->buf, st->head_len, &ctx->req);
        if (e) {
            free(ctx);
            int status;
            const char *code;
            const char *msg = parse_error_status(e, &status, &code);
            error_and_close(c, status, code, msg);
            return;
        }
        int64_t cl = ctx->req.content_length;
        if (stream_pred && !ctx->req.upgrade_ws && stream_pred(&ctx->req)) {
            stream_dispatch(c, st, ctx);
            continue;
        }
        if (cl > PL_HTTP_MAX_BODY) {
            free(ctx);
            error_and_close(c, 413, "too_large", "body larger than 1 MiB");
            return;
        }
        if (cl < 0) cl = 0;
        if (st->len - st->head_len < (size_t)cl) {   /* body still coming */
            /* RFC 9110 10.1.1: a client that asked waits for this first */
            pl_str ex = pl_http_header_get(&ctx->req, "expect");
            if (!st->continued && st->len == st->head_len && ex.p && ex.n == 12 &&
                strncasecmp(ex.p, "100-continue", 12) == 0) {
                const char *code, *msg;
                int status = head_check ? head_check(c, &ctx->req, &code, &msg) : 0;
                if (status) {                     /* its final answer instead */
                    free(ctx);
                    error_and_close(c, status, code, msg);
                    return;
                }
                pl_conn_send_copy(c, "HTTP/1.1 100 Continue\r\n\r\n", 25);
                st->continued = 1;
            }
            free(ctx);
            return;
        }
        ctx->conn = c;
        pl_conn_ref(c);
        ctx->body = cl ? (const uint8_t *)st->buf + st->head_len : NULL;
        ctx->body_len = (size_t)cl;
        st->ctx = ctx;
        c->deadline = 0;
        /* An upgrade is answered before this returns, so it reads on without
         * a pause (a pause and resume cost two epoll_ctl calls: a reconnect
         * storm's worth of them, benchmarks.md "Issue 11: reconnect storm"). */
        if (ctx->req.upgrade_ws && ctx->req.path.n == 3 && memcmp(ctx->req.path.p, "/ws", 3) == 0) {
            upgrade(c, st);
            return;
        }
        pl_conn_pause(c);
        st->in_process = 1;
        hooks.on_request(ctx, hooks.ud);
        if ((st = c->http)) st->in_process = 0;
    }
}

void pl_http_on_data(pl_conn *c, uint8_t *p, size_t n) {
    if (!p) {                                   /* new connection */
        c->deadline = pl_mono_ms() + PL_HTTP_HEAD_TIMEOUT_MS;
        return;
    }
    http_state *st = c->http;
    if (st && st->ctx && st->ctx->streaming && st->ctx->body_waiting) {
        size_t take = stream_feed(st->ctx, p, n);   /* may answer and close */
        p += take;
        n -= take;
        if (!n || !pl_conn_alive(c)) return;
        st = c->http;                    /* pipelined bytes after the body */
    }
    if (!st) {
        st = c->http = pl_calloc(1, sizeof *st);
        c->deadline = pl_mono_ms() + PL_HTTP_HEAD_TIMEOUT_MS;
    }
    if (st->len + n > PL_HTTP_MAX_HEAD + PL_HTTP_MAX_BODY) {
        error_and_close(c, st->head_len ? 413 : 431, "too_large", "request too large");
        return;
    }
    if (st->len + n + 1 > st->cap) {
        size_t cap = st->cap ? st->cap : 1024;
        while (cap < st->len + n + 1) cap *= 2;
        char *old = st->buf;
        st->buf = pl_realloc(st->buf, cap);
        st->cap = cap;
        /* bytes pipelined behind a streamed body arrive while its handler
         * still holds the request: its strings follow the buffer */
        if (st->ctx && old && st->buf != old) req_rebase(&st->ctx->req, old, st->head_len, st->buf);
    }
    memcpy(st->buf + st->len, p, n);
    st->len += n;
    if (!st->ctx) process(c);
}

void pl_http_on_close(pl_conn *c) {
    http_state *st = c->http;
    pl_http_ctx *ctx = st ? st->ctx : NULL;
    if (ctx) {                           /* the handler still owns and answers it: */
        ctx->owned = st->buf;            /* its strings point into these bytes */
        st->buf = NULL;
        st->ctx = NULL;
    }
    state_free(c);
    if (ctx) stream_closed(ctx);         /* a streaming handler waiting on us learns it */
}

void pl_http_on_timeout(pl_conn *c) {
    http_state *st = c->http;
    if (st && st->ctx) {                 /* a streamed body stalled */
        pl_conn_close(c, 0);
        return;
    }
    if (st && st->len) {
        /* slow headers or body: answer and cut off */
        static const char body[] = "{\"error\":{\"code\":\"timeout\",\"message\":\"request took too long\"}}";
        write_response(c, 408, "application/json", body, sizeof body - 1, NULL, 0);
        state_free(c);
        pl_conn_close(c, 1);
    } else {
        pl_conn_close(c, 0);             /* idle keep-alive connection */
    }
}

/* ---- Streaming bodies and responses (server.h) ---------------------------
 *
 * A streamed request stays in HANDLER state (st->ctx set) for its whole
 * body. Its body bytes never enter st->buf for long: those that came with
 * the head are handed over by body_start and cut out of buf (the head stays:
 * ctx->req points into it); later ones go from the shared read buffer
 * straight to the handler (stream_feed). Reading is paused except while
 * ctx->body_waiting, so at most one read's worth is in flight:
 *
 *   dispatched --body_start--> WAITING --bytes--> BUSY --body_next--> WAITING
 *                                  \______ last byte: cb(fin 1) ______/
 *   connection closed: cb(fin -1) now if WAITING, else at the next
 *   body_start/body_next.
 */
#define PL_HTTP_BODY_IDLE_MS 60000   /* a body that stalls this long is cut off */

void pl_http_set_stream_pred(int (*pred)(const pl_http_req *req)) { stream_pred = pred; }

void pl_http_set_head_check(int (*check)(pl_conn *c, const pl_http_req *req, const char **code,
                                         const char **msg)) {
    head_check = check;
}

static void stream_dispatch(pl_conn *c, http_state *st, pl_http_ctx *ctx) {
    ctx->conn = c;
    pl_conn_ref(c);
    ctx->streaming = 1;
    ctx->body_left = ctx->req.content_length > 0 ? ctx->req.content_length : 0;
    st->ctx = ctx;
    c->deadline = 0;
    pl_conn_pause(c);
    st->in_process = 1;
    hooks.on_request(ctx, hooks.ud);
    if ((st = c->http)) st->in_process = 0;
}

/* Hands n bytes (the body's next) to the handler: returns how many it took. */
static size_t stream_feed(pl_http_ctx *ctx, const uint8_t *p, size_t n) {
    size_t take = (int64_t)n < ctx->body_left ? n : (size_t)ctx->body_left;
    ctx->body_waiting = 0;
    ctx->body_left -= (int64_t)take;
    pl_conn_pause(ctx->conn);
    ctx->conn->deadline = 0;
    ctx->body_cb(ctx, p, take, ctx->body_left == 0, ctx->body_ud);   /* may free ctx */
    return take;
}

static void stream_closed(pl_http_ctx *ctx) {
    if (ctx->streaming && ctx->body_waiting) {
        ctx->body_waiting = 0;
        ctx->body_cb(ctx, NULL, 0, -1, ctx->body_ud);
    } else if (ctx->on_drain) {
        ctx->on_drain(ctx);
    }
}

void pl_http_body_start(pl_http_ctx *ctx, pl_http_body_cb cb, void *ud) {
    pl_conn *c = ctx->conn;
    http_state *st = c->http;
    ctx->body_cb = cb;
    ctx->body_ud = ud;
    if (!pl_conn_alive(c) || !st || st->ctx != ctx) {
        cb(ctx, NULL, 0, -1, ud);
        return;
    }
    if (ctx->body_left == 0) {
        cb(ctx, NULL, 0, 1, ud);
        return;
    }
    pl_str ex = pl_http_header_get(&ctx->req, "expect");
    if (ex.p && ex.n == 12 && strncasecmp(ex.p, "100-continue", 12) == 0 && st->len == st->head_len)
        pl_conn_send_copy(c, "HTTP/1.1 100 Continue\r\n\r\n", 25);
    size_t have = st->len - st->head_len;
    if (have) {                          /* body bytes that came with the head */
        size_t take = (int64_t)have < ctx->body_left ? have : (size_t)ctx->body_left;
        uint8_t *tmp = pl_malloc(take);
        memcpy(tmp, st->buf + st->head_len, take);
        memmove(st->buf + st->head_len, st->buf + st->head_len + take, st->len - st->head_len - take);
        st->len -= take;
        stream_feed(ctx, tmp, take);
        free(tmp);
        return;
    }
    pl_http_body_next(ctx);
}

void pl_http_body_next(pl_http_ctx *ctx) {
    pl_conn *c = ctx->conn;
    http_state *st = c->http;
    if (!pl_conn_alive(c) || !st || st->ctx != ctx) {
        ctx->body_cb(ctx, NULL, 0, -1, ctx->body_ud);
        return;
    }
    if (ctx->body_left == 0) return;
    ctx->body_waiting = 1;
    c->deadline = pl_mono_ms() + PL_HTTP_BODY_IDLE_MS;
    pl_conn_resume(c);
}

void pl_http_respond_head(pl_http_ctx *ctx, int status, const char *ctype, int64_t len,
                          const char *extra) {
    pl_conn *c = ctx->conn;
    http_state *st = c->http;
    if (pl_conn_alive(c) && st && st->ctx == ctx)
        write_head_body(c, status, ctype, NULL, len, extra, keep_alive_of(ctx));
}

void pl_http_respond_end(pl_http_ctx *ctx) {
    ctx->on_drain = NULL;
    finish(ctx);
}

void pl_http_on_drain(pl_conn *c) {
    http_state *st = c->http;
    if (st && st->ctx) {
        if (st->ctx->on_drain) st->ctx->on_drain(st->ctx);   /* a streamed response */
        return;
    }
    if (!pl_conn_alive(c) || !c->paused || c->mode != PL_CONN_HTTP) return;
    pl_conn_resume(c);                   /* the answers were read: the next request */
    c->deadline = pl_mono_ms() + (st && st->len ? PL_HTTP_HEAD_TIMEOUT_MS : PL_HTTP_IDLE_TIMEOUT_MS);
    if (st && !st->in_process) process(c);
}

/* ---- Event streams (server.h) --------------------------------------------
 * A response without an end: close-delimited (RFC 9112 6.3 item 8), so no
 * chunked framing around each event. The connection is never HTTP again. */

int pl_http_stream_begin(pl_http_ctx *ctx, const char *extra) {
    pl_conn *c = ctx->conn;
    http_state *st = c->http;
    int r = -1;
    if (pl_conn_alive(c) && st && st->ctx == ctx) {
        pl_sbuf s;
        pl_sbuf_init(&s);
        pl_sbuf_adds(&s, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\n"
                         "Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n"
                         "Referrer-Policy: no-referrer\r\nX-Accel-Buffering: no\r\nConnection: close\r\n");
        if (c->tls && hsts_max_age) pl_sbuf_printf(&s, "Strict-Transport-Security: max-age=%d\r\n", hsts_max_age);
        if (extra) pl_sbuf_adds(&s, extra);
        pl_sbuf_adds(&s, "\r\n");
        pl_conn_send_copy(c, s.p, s.len);
        pl_sbuf_release(&s);
        st->ctx = NULL;
        state_free(c);                   /* pipelined bytes: nothing may follow a stream */
        c->mode = PL_CONN_SSE;
        c->deadline = 0;
        pl_conn_resume(c);               /* EOF must be seen: the client left */
        r = 0;
    } else if (st && st->ctx == ctx) {
        st->ctx = NULL;                  /* closing: as in finish() */
    }
    free(ctx->owned);
    free(ctx);
    pl_conn_unref(c);
    return r;
}

void pl_http_stream_on_data(pl_conn *c, uint8_t *p, size_t n) {
    (void)c, (void)p, (void)n;           /* a stream's client has nothing to say */
}

/* Moves the strings of r that pointed into old[0..len) to the same offsets
 * in now (the head buffer was reallocated under a live request). Every
 * pl_str of pl_http_req must be listed here. */
static void rebase1(pl_str *x, const char *old, size_t len, const char *now) {
    uintptr_t o = (uintptr_t)old, q = (uintptr_t)x->p;   /* old is freed: compare addresses only */
    if (x->p && q >= o && q <= o + len) x->p = now + (q - o);
}

static void req_rebase(pl_http_req *r, const char *old, size_t len, const char *now) {
    pl_str *all[] = {&r->method_str, &r->target, &r->path, &r->query, &r->ws_key, &r->ws_version,
                     &r->ws_protocol, &r->authorization, &r->origin, &r->content_type, &r->host};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) rebase1(all[i], old, len, now);
    for (size_t i = 0; i < r->nheaders; i++) {
        rebase1(&r->headers[i].name, old, len, now);
        rebase1(&r->headers[i].value, old, len, now);
    }
}

