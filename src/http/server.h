/* server.h — HTTP/1.1 on a connection: reading requests, answering them,
 * and upgrading to WebSocket.
 *
 * Owns: the per-connection HTTP state (head buffer, body, keep-alive,
 * pipelining one request at a time), response writing, the RFC 6455 opening
 * handshake. Does not own: routes (app/api.c registers a handler), what
 * WebSocket messages mean (chat/).
 *
 * A request is handed to the handler as a pl_http_ctx. The handler answers
 * it exactly once with pl_http_respond*, now or later (after a store job or
 * password hashing); reading from the connection is paused meanwhile, so
 * requests on one connection are answered in order. The context (and the
 * request it points into) lives until it is answered, even when the
 * connection closes first (the context then owns the request's bytes, and
 * answering it only frees it).
 */
#ifndef PL_HTTP_SERVER_H
#define PL_HTTP_SERVER_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "../net/conn.h"
#include "http_parser.h"

#define PL_HTTP_MAX_HEAD  (16 * 1024)
#define PL_HTTP_MAX_BODY  (1024 * 1024)

typedef struct pl_http_ctx {
    pl_conn       *conn;       /* a reference is held until answered       */
    pl_http_req    req;        /* points into the connection's head buffer */
    const uint8_t *body;       /* Content-Length bytes, NULL if none       */
    size_t         body_len;
    int64_t        user;       /* set by the router after authentication   */
    int64_t        login;
    void          *data;       /* handler's                                */
    char          *owned;      /* the request's bytes once the connection closed */
    /* streaming (server.c "Streaming bodies and responses"; 0/NULL otherwise) */
    int            streaming;  /* the body is handed over in chunks (pl_http_body_start) */
    int            body_waiting; /* the server reads for the handler (not busy) */
    int64_t        body_left;  /* body bytes not yet handed to the handler  */
    void         (*body_cb)(struct pl_http_ctx *ctx, const uint8_t *p, size_t n, int fin, void *ud);
    void          *body_ud;
    /* set by a streaming response: called when the connection's write queue
     * drained below its low-water mark, and once when the connection closes */
    void         (*on_drain)(struct pl_http_ctx *ctx);
} pl_http_ctx;

typedef struct pl_http_hooks {
    /* A complete request (not a WebSocket upgrade). */
    void (*on_request)(pl_http_ctx *ctx, void *ud);
    /* A WebSocket handshake was answered with 101; the connection is now in
     * WS mode. token is the access token presented at the handshake
     * (Authorization: Bearer or the bearer.<token> subprotocol), NULL if
     * none, "" (token_len 0) if one was offered empty ("Bearer" with nothing
     * or only spaces after it, or "bearer."): that fails at once (4001);
     * borrowed for the call. */
    void (*on_ws_open)(pl_conn *c, const char *token, size_t token_len, void *ud);
    /* Asked before a WebSocket handshake is answered: NULL lets it proceed,
     * a message (static) refuses it with 403 forbidden and that message (an
     * Origin that is not allowed, two Authorization headers: docs/protocol.md
     * "Origin checks"). A NULL hook: every handshake may proceed. */
    const char *(*upgrade_refused)(pl_conn *c, const pl_http_req *req, void *ud);
    void *ud;
} pl_http_hooks;

void pl_http_init(const pl_http_hooks *hooks);

/* Connection callbacks for PL_CONN_HTTP mode (wired by app/main.c). */
void pl_http_on_data(pl_conn *c, uint8_t *p, size_t n);
void pl_http_on_close(pl_conn *c);
void pl_http_on_timeout(pl_conn *c);

/* Answers ctx and frees it. extra_headers: "Name: value\r\n..." or NULL. */
void pl_http_respond(pl_http_ctx *ctx, int status, const char *content_type,
                     const void *body, size_t len, const char *extra_headers);
/* Answers with a JSON body; takes over obj (decref'd). */
void pl_http_respond_json(pl_http_ctx *ctx, int status, json_t *obj);
/* {"error":{"code":code,"message":msg}} with status. */
void pl_http_error(pl_http_ctx *ctx, int status, const char *code, const char *msg);
/* A set of methods: PL_HTTP_M(PL_HTTP_GET) | PL_HTTP_M(PL_HTTP_HEAD) ... */
#define PL_HTTP_M(m) (1u << (m))
/* 405 method_not_allowed (body as pl_http_error's, with msg) carrying
 * Allow: the methods of the set allow, in pl_http_method order (RFC 9110
 * 15.5.6: a 405 lists the target's methods). */
void pl_http_method_not_allowed(pl_http_ctx *ctx, unsigned allow, const char *msg);

const char *pl_http_status_text(int status);
/* Every response on a TLS connection carries Strict-Transport-Security:
 * max-age=max_age (0: none; the 101 of an upgrade has none). */
void pl_http_set_hsts(int max_age);

/* A request that asks `Expect: 100-continue` before a body still to come
 * is first shown to check (if set): a status it returns (with an error
 * code and message) is the request's answer instead of the 100, and the
 * connection is closed (RFC 9110 10.1.1: a refused request gets its final
 * status, not an invitation to send the body). 0: the 100 goes out. */
void pl_http_set_head_check(int (*check)(pl_conn *c, const pl_http_req *req, const char **code,
                                         const char **msg));

/* ---- streaming bodies and responses (media uploads and downloads) -------
 *
 * A route the predicate claims (pl_http_set_stream_pred) is dispatched as
 * soon as its head is complete, whatever its Content-Length: ctx->body is
 * NULL, ctx->streaming 1, ctx->body_left the declared length (0 when none).
 * Nothing of the body is read until the handler calls pl_http_body_start;
 * then cb gets the body in chunks as they arrive (p valid only during the
 * call: copy it), and reading stays paused after each chunk until the
 * handler calls pl_http_body_next — so a slow disk slows the client (TCP
 * backpressure) and a body of any size costs one chunk of memory (at most
 * 64 KiB, or what was buffered with the head). fin is 1 on the last chunk
 * (n may be 0 for an empty body), -1 when the connection went away (p NULL):
 * the handler must still answer (pl_http_respond only frees then). An
 * answer before the body was read to its end closes the connection. A
 * request carrying `Expect: 100-continue` gets its 100 from body_start. */
typedef void (*pl_http_body_cb)(pl_http_ctx *ctx, const uint8_t *p, size_t n, int fin, void *ud);
void pl_http_set_stream_pred(int (*pred)(const pl_http_req *req));
void pl_http_body_start(pl_http_ctx *ctx, pl_http_body_cb cb, void *ud);
void pl_http_body_next(pl_http_ctx *ctx);

/* A response whose body the handler writes itself: the head (with
 * Content-Length len) now; then the handler queues the bytes with
 * pl_conn_send*, watching ctx->on_drain while ctx->conn->high, and calls
 * pl_http_respond_end when all len bytes are queued (or the connection is
 * gone: pl_conn_alive). http/file.c serves files this way. */
void pl_http_respond_head(pl_http_ctx *ctx, int status, const char *content_type,
                          int64_t len, const char *extra_headers);
void pl_http_respond_end(pl_http_ctx *ctx);
/* Connection callback (wired by app/main.c): the write queue drained. */
void pl_http_on_drain(pl_conn *c);

/* ---- event streams (Server-Sent Events; server.c "Event streams") --------
 * Answers ctx with the head of an endless text/event-stream response (200,
 * no Content-Length, Cache-Control: no-store, X-Accel-Buffering: no,
 * Connection: close; extra_headers may add more) and frees ctx. The
 * connection leaves HTTP for good: its mode becomes PL_CONN_SSE, anything
 * pipelined after the request is dropped, and whatever the client sends
 * from now on is read and discarded (pl_http_stream_on_data; EOF still
 * closes it). The caller then queues events with pl_conn_send* and ends
 * the stream with pl_conn_close. Returns 0, or -1 when the connection is
 * already gone (ctx freed all the same). */
int  pl_http_stream_begin(pl_http_ctx *ctx, const char *extra_headers);
/* Connection callback for PL_CONN_SSE mode (wired by app/main.c). */
void pl_http_stream_on_data(pl_conn *c, uint8_t *p, size_t n);

#endif
