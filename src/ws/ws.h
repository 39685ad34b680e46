/* ws.h — RFC 6455 framing: a resumable frame reader, frame header encoding,
 * the handshake accept key, and incremental UTF-8 validation.
 *
 * Owns: bytes <-> WebSocket messages. No I/O, no sockets, no JSON.
 * Does not own: the HTTP upgrade request (http/), the close handshake timing
 * and the connection state (net/), what messages mean (proto/).
 *
 * The reader is a state machine over (base, len) buffers fed as bytes arrive.
 * It keeps no buffer while idle: a frame that arrives whole inside one feed is
 * unmasked in place and handed to the callback pointing into the caller's
 * buffer; only a message split across feeds or fragments is copied into a
 * heap buffer, freed as soon as it is delivered. Control frames (ping, pong,
 * close) may arrive between the fragments of a message (RFC 6455 5.4) and
 * are delivered at once.
 *
 * Invariants:
 *   1. A text message is delivered only if it is valid UTF-8 as a whole;
 *      validation is incremental, so a bad byte fails the connection as soon
 *      as it arrives (even in a fragment before the final one) with 1007.
 *   2. After feed returns an error the reader is dead: call release only.
 */
#ifndef PL_WS_H
#define PL_WS_H

#include <stddef.h>
#include <stdint.h>

#include "../core/utf8.h"

enum {
    PL_WS_OP_CONT = 0x0, PL_WS_OP_TEXT = 0x1, PL_WS_OP_BINARY = 0x2,
    PL_WS_OP_CLOSE = 0x8, PL_WS_OP_PING = 0x9, PL_WS_OP_PONG = 0xA
};

/* Close codes (RFC 6455 7.4.1 and Parley's own, see docs/protocol.md). */
enum {
    PL_WS_CLOSE_NORMAL = 1000, PL_WS_CLOSE_GOING_AWAY = 1001,
    PL_WS_CLOSE_PROTOCOL = 1002, PL_WS_CLOSE_UNSUPPORTED = 1003,
    PL_WS_CLOSE_NO_STATUS = 1005, PL_WS_CLOSE_ABNORMAL = 1006,
    PL_WS_CLOSE_BAD_DATA = 1007, PL_WS_CLOSE_POLICY = 1008,
    PL_WS_CLOSE_TOO_BIG = 1009, PL_WS_CLOSE_INTERNAL = 1011,
    PL_WS_CLOSE_UNAUTHORIZED = 4001
};

/* UTF-8 validation (pl_utf8_*) is core/utf8.h's. */

/* ---- the frame reader --------------------------------------------------- */

typedef enum pl_ws_kind {
    PL_WS_MESSAGE = 1,   /* a complete text or binary message (opcode says which) */
    PL_WS_PING,          /* payload: application data to echo in a pong           */
    PL_WS_PONG,
    PL_WS_CLOSE          /* close_code (1005 if the frame had no code) and reason */
} pl_ws_kind;

typedef struct pl_ws_msg {
    pl_ws_kind     kind;
    int            opcode;      /* TEXT or BINARY for MESSAGE                 */
    const uint8_t *data;        /* payload, unmasked; valid only during the callback */
    size_t         len;
    int            close_code;  /* CLOSE only                                 */
} pl_ws_msg;

/* Return 0 to go on; any other value stops the feed, which returns it. */
typedef int (*pl_ws_cb)(void *ud, const pl_ws_msg *m);

/* A connection holds one only while a frame or message is partly read
 * (wsconn.c; on the stack otherwise); keep it small: sizeof(pl_ws_reader)
 * must stay at most 64 bytes on x86-64. */
typedef struct pl_ws_reader {
    /* Private; ordered widest first so the struct packs into 64 bytes. */
    uint64_t remaining;      /* payload bytes of the current frame still to come */
    uint8_t *buf;            /* heap assembly buffer, NULL while not needed */
    uint32_t buf_len;        /* bytes of the data message assembled in buf  */
    uint32_t buf_cap;        /* allocated size of buf                      */
    uint32_t max_msg;        /* largest message accepted (bytes)           */
    uint32_t mask_off;       /* payload bytes of this frame already received (mod 4 = mask offset) */
    pl_utf8  utf8;           /* validation state of the text message in progress */
    uint8_t  mask[4];        /* masking key of the current frame           */
    uint8_t  hdr[14];        /* partial header (up to 2+8+4 bytes)         */
    uint8_t  state;          /* header / payload / dead                    */
    uint8_t  hdr_have;       /* header bytes gathered so far               */
    uint8_t  is_client;      /* 1: we are the client; frames must be unmasked */
    uint8_t  msg_opcode;     /* TEXT/BINARY of the fragmented message in progress, 0 if none */
    uint8_t  frame_opcode;   /* opcode of the current frame                */
    uint8_t  frame_fin;      /* FIN bit of the current frame               */
} pl_ws_reader;

/* is_client = 0 for the server side (client frames must be masked),
 * 1 for a client (server frames must be unmasked). */
void pl_ws_reader_init(pl_ws_reader *r, int is_client, uint32_t max_msg);
void pl_ws_reader_release(pl_ws_reader *r);    /* frees buf; safe twice */

/* Feeds n bytes. p is modified (unmasked in place). Calls cb for each
 * complete message or control frame, in order.
 * Returns 0 when all bytes were consumed; a close code > 0 when the peer
 * violated the protocol (1002 framing, 1007 bad UTF-8, 1009 too big), which
 * the caller sends in a close frame before closing; or whatever non-zero
 * value cb returned (the remaining bytes are not consumed).
 * Checks: RSV bits set (no extension is negotiated) -> 1002; unknown opcode
 * -> 1002; mask bit wrong for the side -> 1002; control frame with FIN=0 or
 * payload > 125 -> 1002; CONT without a message in progress, or TEXT/BINARY
 * while one is in progress -> 1002; 64-bit length with the top bit set, or a
 * length not in its minimal encoding (RFC 6455 5.2: MUST) -> 1002; close payload
 * of 1 byte -> 1002; close code not valid to send (RFC 7.4.1/7.4.2: < 1000,
 * 1004-1006, 1015, 1016-2999 unassigned, >= 5000) -> 1002; close reason not
 * UTF-8 -> 1007; message > max_msg -> 1009 (checked from the frame headers,
 * before the payload is buffered). */
int  pl_ws_reader_feed(pl_ws_reader *r, uint8_t *p, size_t n, pl_ws_cb cb, void *ud);

/* 1 if the reader holds a partial frame or message (the connection is not idle). */
int  pl_ws_reader_busy(const pl_ws_reader *r);

/* ---- writing frames ----------------------------------------------------- */

/* Writes a header for a single unfragmented frame (FIN=1) with the given
 * opcode and payload length into out (at most 14 bytes). If mask is non-NULL
 * (client side) the mask bit and the 4 mask bytes are written too and the
 * caller must mask the payload with pl_ws_mask(). Returns the header length. */
size_t pl_ws_header(uint8_t out[14], int opcode, uint64_t len, const uint8_t mask[4]);

/* XORs p[0..n) with mask, starting at mask offset off. */
void   pl_ws_mask(uint8_t *p, size_t n, const uint8_t mask[4], size_t off);

/* Builds a close frame payload: 2-byte code + reason (truncated to 123
 * bytes, at a code point boundary). Returns its length; code 1005 ("no
 * status", never sent on the wire) gives an empty payload. reason may be NULL. */
size_t pl_ws_close_payload(uint8_t out[125], int code, const char *reason);

/* Sec-WebSocket-Accept for a Sec-WebSocket-Key: base64(SHA-1(key + GUID)).
 * out gets 28 chars and a NUL. Returns 0, or -1 if the key is not 24 chars of
 * base64 decoding to 16 bytes. */
int    pl_ws_accept_key(const char *key, size_t key_len, char out[29]);
/* SHA-1 of p[0..n) into out (the handshake's checksum; not for security). */
void   pl_ws_sha1(const uint8_t *p, size_t n, uint8_t out[20]);

#endif
