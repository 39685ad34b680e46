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
    /* Asked before a WebSocket handshake is answered: 0 refuses it with 403
     * forbidden (an Origin that is not allowed, docs/protocol.md "Origin
     * checks"). NULL: every handshake may proceed. */
    int  (*upgrade_ok)(pl_conn *c, const pl_http_req *req, void *ud);
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

const char *pl_http_status_text(int status);

#endif
