/* wsconn.c — WebSocket connection handling (see wsconn.h). */
#include "wsconn.h"

#include <stdlib.h>
#include <string.h>

#include "../core/alloc.h"
#include "../core/clock.h"
#include "../core/log.h"
#include "ws.h"

#define CLOSE_WAIT_MS 2000

static pl_wsconn_hooks hooks;
static uint32_t max_msg = 1024 * 1024;
static size_t max_queue = 1024 * 1024;

void pl_wsconn_init(const pl_wsconn_hooks *h, uint32_t max_message, size_t max_queued) {
    hooks = *h;
    max_msg = max_message;
    max_queue = max_queued;
}

void pl_wsconn_open(pl_conn *c) {
    c->mode = PL_CONN_WS;
    c->ws_state = PL_WSS_OPEN;
    c->ws = NULL;                  /* between frames: see pl_wsconn_on_data */
    pl_conn_resume(c);
}

void pl_wsconn_release(pl_conn *c) {
    if (!c->ws) return;
    pl_ws_reader_release(c->ws);
    free(c->ws);
    c->ws = NULL;
}

pl_rbuf *pl_ws_text_frame(const char *s, size_t n) {
    uint8_t hdr[14];
    size_t h = pl_ws_header(hdr, PL_WS_OP_TEXT, n, NULL);
    pl_rbuf *b = pl_rbuf_new(h + n);
    memcpy(b->data, hdr, h);
    memcpy(b->data + h, s, n);
    b->len = (uint32_t)(h + n);
    return b;
}

static void send_frame(pl_conn *c, int opcode, const void *p, size_t n) {
    uint8_t hdr[14];
    size_t h = pl_ws_header(hdr, opcode, n, NULL);
    pl_rbuf *b = pl_rbuf_new(h + n);
    memcpy(b->data, hdr, h);
    if (n) memcpy(b->data + h, p, n);
    b->len = (uint32_t)(h + n);
    pl_conn_send(c, b);
    pl_rbuf_unref(&b);
}

void pl_wsconn_send_text(pl_conn *c, const char *s, size_t n) {
    if (c->ws_state != PL_WSS_OPEN) return;
    send_frame(c, PL_WS_OP_TEXT, s, n);
}

void pl_wsconn_close(pl_conn *c, int code, const char *reason) {
    if (!pl_conn_alive(c) || c->ws_state != PL_WSS_OPEN) return;
    uint8_t payload[125];
    size_t n = pl_ws_close_payload(payload, code, reason ? reason : "");
    send_frame(c, PL_WS_OP_CLOSE, payload, n);
    c->ws_state = PL_WSS_CLOSE_SENT;
    c->deadline = pl_mono_ms() + CLOSE_WAIT_MS;
    pl_log(PL_LOG_DEBUG, c->id, "ws close sent", "\"code\":%d", code);
}

static int on_frame(void *ud, const pl_ws_msg *m) {
    pl_conn *c = ud;
    if (!pl_conn_alive(c)) return 1;
    switch (m->kind) {
    case PL_WS_MESSAGE:
        if (c->ws_state != PL_WSS_OPEN) return 0;       /* discarded while closing */
        if (m->opcode != PL_WS_OP_TEXT) {
            pl_wsconn_close(c, PL_WS_CLOSE_UNSUPPORTED, "text frames only");
            return 0;
        }
        hooks.on_text(c, m->data, m->len);
        return 0;
    case PL_WS_PING:
        /* Pongs count against the queue's bound like every frame: a client
         * that pinged and read nothing had 149 MB of them queued, and was
         * never closed (audit Z). */
        if (c->ws_state != PL_WSS_OPEN) return 0;
        if (c->qbytes + m->len + 2 > max_queue) {
            pl_conn_write_now(c);            /* what the kernel takes now first */
            if (c->qbytes + m->len + 2 > max_queue) {
                if (hooks.on_slow) hooks.on_slow(c);
                return 0;
            }
        }
        send_frame(c, PL_WS_OP_PONG, m->data, m->len);
        return 0;
    case PL_WS_PONG:
        return 0;
    case PL_WS_CLOSE:
        if (c->ws_state == PL_WSS_OPEN) {
            /* echo the code (RFC 6455 5.5.1); no code -> empty close */
            uint8_t payload[125];
            size_t n = 0;
            if (m->close_code != PL_WS_CLOSE_NO_STATUS)
                n = pl_ws_close_payload(payload, m->close_code, "");
            send_frame(c, PL_WS_OP_CLOSE, payload, n);
            c->ws_state = PL_WSS_CLOSE_SENT;
        }
        pl_conn_close(c, 1);
        return 1;
    }
    return 0;
}

void pl_wsconn_on_data(pl_conn *c, uint8_t *p, size_t n) {
    if (!p) return;
    if (c->ws_state == PL_WSS_FAILED) return;        /* reader dead: discard */
    /* A reader that is not busy (between frames, no message in progress)
     * holds nothing but its settings, so an idle connection keeps none: a
     * feed that ends on a frame boundary runs on a fresh reader on the
     * stack, and only one that ends inside a frame or a fragmented message
     * moves the reader to the heap, until a feed ends on a boundary again. */
    pl_ws_reader local, *rd = c->ws;
    if (!rd) {
        pl_ws_reader_init(&local, 0, max_msg);
        rd = &local;
    }
    int r = pl_ws_reader_feed(rd, p, n, on_frame, c);
    if (r == 0 && pl_ws_reader_busy(rd)) {
        if (rd == &local) {
            c->ws = pl_malloc(sizeof *c->ws);
            *c->ws = local;        /* takes over its buffer, if any */
        }
    } else if (rd == &local) {
        pl_ws_reader_release(&local);
    } else {
        pl_wsconn_release(c);
    }
    if (r > 0 && r >= 1000) {
        pl_log(PL_LOG_INFO, c->id, "ws protocol error", "\"code\":%d", r);
        pl_wsconn_close(c, r, r == PL_WS_CLOSE_BAD_DATA ? "invalid UTF-8" :
                              r == PL_WS_CLOSE_TOO_BIG ? "message too big" : "protocol error");
        c->ws_state = PL_WSS_FAILED;   /* keep reading, discarding, until close */
    }
}

/* Closing: the peer did not answer our close within CLOSE_WAIT_MS. What
 * is still queued (our close frame, behind a full kernel buffer) gets the
 * graceful close's bounded wait before the FIN. */
void pl_wsconn_on_timeout(pl_conn *c) {
    if (c->ws_state == PL_WSS_OPEN) hooks.on_timeout(c);
    else pl_conn_close(c, c->qlen != 0);
}
