/* api_events.c — GET /api/v1/events: the Server-Sent Events stream, the
 * receiving half of the HTTP fallback (docs/protocol.md "Server-Sent
 * Events"; sending is POST .../messages).
 *
 * Owns: the route's checks (method, bearer token, Last-Event-ID) and their
 * HTTP errors, and turning the request into a stream once chat/ has
 * authenticated the session. Does not own: the session and its frames
 * (chat/session.c, chat/sse.c), the stream's HTTP mechanics
 * (http/server.c pl_http_stream_begin), the id format (proto/cursor_id.h).
 */
#include "api_int.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "../core/log.h"

static void unauthorized(pl_http_ctx *ctx, const char *msg) {
    json_t *o = json_pack("{s:{s:s,s:s}}", "error", "code", "unauthorized", "message", msg);
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    pl_http_respond(ctx, 401, "application/json", s, strlen(s), "WWW-Authenticate: Bearer\r\n");
    free(s);
}

/* A client that vanished without a FIN or RST leaves the heartbeats
 * unacknowledged: the kernel gives up after --idle-timeout (the WebSocket
 * idle cut's counterpart; a stream's client never sends). */
static void set_user_timeout(pl_conn *c) {
    unsigned int ms = (unsigned int)A.cfg->idle_timeout * 1000u;
    if (c->fd >= 0) (void)setsockopt(c->fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &ms, sizeof ms);
}

static void started(void *arg, int result) {
    pl_http_ctx *ctx = arg;
    if (result == PL_STORE_ENOTFOUND) {
        unauthorized(ctx, "bad, expired or revoked access token");
    } else if (result) {
        pl_http_error(ctx, 503, "unavailable", "the store is unavailable; reconnect later");
    } else {
        pl_conn *c = ctx->conn;
        if (pl_http_stream_begin(ctx, NULL) == 0) {
            set_user_timeout(c);
            pl_log(PL_LOG_DEBUG, c->id, "sse stream", "%s", "\"opened\":true");
        }
    }
}

void h_events(pl_http_ctx *ctx) {
    const unsigned allow = PL_HTTP_M(PL_HTTP_GET);   /* not HEAD: a stream has no head of its own */
    if (!(allow & PL_HTTP_M(ctx->req.method))) {
        pl_http_method_not_allowed(ctx, allow, "GET only");
        return;
    }
    pl_str tok;
    if (!api_bearer(&ctx->req, &tok)) {
        unauthorized(ctx, "a valid access token is required (Authorization: Bearer)");
        return;
    }
    pl_cursor *cur = NULL;
    size_t n = 0;
    pl_str lei = pl_http_header_get(&ctx->req, "last-event-id");
    int resuming = lei.p != NULL && lei.n > 0;   /* an empty one: a first connect (some libraries send it) */
    if (resuming) {
        const char *why;
        if (pl_cursor_id_decode(lei.p, lei.n, &cur, &n, &why)) {
            pl_http_error(ctx, 400, "bad_request", why);
            return;
        }
    }
    int rc = pl_chat_sse_open(ctx->conn, tok.p, tok.n, resuming, cur, n, started, ctx);
    if (rc == PL_STORE_ENOTFOUND) unauthorized(ctx, "bad, expired or revoked access token");
    else if (rc) pl_http_error(ctx, 503, "unavailable", "shutting down");
}
