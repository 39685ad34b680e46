/* wsconn.h — a WebSocket on a connection: feeding the frame reader,
 * answering pings, the close handshake, and sending text frames.
 *
 * Owns: the per-connection WebSocket state after the upgrade. Does not own:
 * the meaning of messages (the on_text hook, chat/), framing details (ws.c).
 *
 * Close handshake (c->ws_state):
 *
 *   OPEN --peer close--> answer with close, close TCP after flush
 *     |
 *     `--pl_wsconn_close()--> CLOSE_SENT --peer close / EOF / 2 s--> close TCP
 *
 * In CLOSE_SENT the connection keeps reading (and discarding) so that the
 * peer's unread bytes do not make the kernel reset the connection before
 * our close frame is read.
 */
#ifndef PL_WSCONN_H
#define PL_WSCONN_H

#include <stddef.h>
#include <stdint.h>

#include "../core/buf.h"
#include "../net/conn.h"

enum { PL_WSS_OPEN = 0, PL_WSS_CLOSE_SENT = 1, PL_WSS_FAILED = 2 /* close sent, reader dead */ };

typedef struct pl_wsconn_hooks {
    /* A complete, valid UTF-8 text message. data is valid during the call. */
    void (*on_text)(pl_conn *c, const uint8_t *data, size_t len);
    /* The connection's deadline passed while open (auth timeout, idle). */
    void (*on_timeout)(pl_conn *c);
    /* A pong would take the queue past max_queue: the peer does not read
     * (it is closed as a slow consumer; NULL: the pong is not sent). */
    void (*on_slow)(pl_conn *c);
} pl_wsconn_hooks;

/* max_queue: the bytes a pong may find queued (--max-outbound). */
void pl_wsconn_init(const pl_wsconn_hooks *h, uint32_t max_message, size_t max_queue);

/* Switches a connection to WebSocket mode (called after the 101). */
void pl_wsconn_open(pl_conn *c);
void pl_wsconn_on_data(pl_conn *c, uint8_t *p, size_t n);
/* Frees the connection's frame reader, if it has one (at close). */
void pl_wsconn_release(pl_conn *c);
void pl_wsconn_on_timeout(pl_conn *c);

/* An unmasked text frame holding s[0..n), one reference, for sending to one
 * or many connections. */
pl_rbuf *pl_ws_text_frame(const char *s, size_t n);
void pl_wsconn_send_text(pl_conn *c, const char *s, size_t n);
/* Sends a close frame with code and reason and starts the close handshake. */
void pl_wsconn_close(pl_conn *c, int code, const char *reason);

#endif
