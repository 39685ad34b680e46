/* proto.h — the client protocol's messages: decoding and validating what
 * clients send, encoding what the server sends (docs/protocol.md).
 *
 * Owns: message shapes, field limits and error codes. Pure functions, no
 * I/O, no state: unit-tested in tests/unit/test_proto.c and fuzzed.
 * Does not own: what a message does (chat/), transport (ws/, http/).
 */
#ifndef PL_PROTO_H
#define PL_PROTO_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "../core/buf.h"
#include "../store/store.h"

#define PL_PROTO_VERSION 1
#define PL_PROTO_CMID_MAX 64
#define PL_PROTO_REQ_MAX  128        /* longest accepted "req" (as JSON text) */

typedef enum pl_msg_type {
    PL_MSG_AUTH = 1, PL_MSG_SEND, PL_MSG_SYNC, PL_MSG_HISTORY, PL_MSG_PING,
    PL_MSG_DELIVERED, PL_MSG_READ, PL_MSG_RECEIPTS, PL_MSG_HEARTBEAT,
    PL_MSG_PRESENCE, PL_MSG_PRESENCE_QUERY, PL_MSG_TYPING
} pl_msg_type;

#define PL_PROTO_PRESENCE_QUERY_MAX 200

/* A decoded client message. Strings point into root (valid until
 * pl_msg_release). */
typedef struct pl_msg {
    pl_msg_type type;
    json_t     *root;
    json_t     *req;             /* borrowed from root, or NULL          */
    const char *token;           /* AUTH                                 */
    size_t      token_len;
    int64_t     conv;            /* SEND, HISTORY                        */
    const char *client_msg_id;   /* SEND                                 */
    size_t      cmid_len;
    const char *body;            /* SEND                                 */
    size_t      body_len;
    json_t     *cursors;         /* SYNC, AUTH (optional): object, validated */
    int64_t     after, before;   /* HISTORY; 0 = not given               */
    int         limit;           /* HISTORY, 1..PL_STORE_PAGE_MAX        */
    int64_t     seq;             /* DELIVERED, READ (> 0); RECEIPTS (0 = none) */
    int         away;            /* PRESENCE: 1 away, 0 online           */
    int         typing;          /* TYPING: 1 start, 0 stop              */
    json_t     *users;           /* PRESENCE_QUERY: array of positive ids */
} pl_msg;

typedef struct pl_proto_err {
    const char *code;            /* bad_json, bad_request, unknown_type, too_large */
    char        message[96];
    json_t     *req;             /* the req to echo, if it could be read (borrowed from root) */
} pl_proto_err;

/* Decodes one text message. Returns 0, or -1 with *err filled; in both
 * cases call pl_msg_release(m) afterwards. max_body bounds SEND bodies. */
int  pl_proto_decode(const char *data, size_t len, size_t max_body, pl_msg *m, pl_proto_err *err);
void pl_msg_release(pl_msg *m);

/* Iterates a validated cursors object: returns 0 and the i-th pair, or -1
 * past the end. */
int  pl_proto_cursor(json_t *cursors, void **iter, int64_t *conv, int64_t *seq);

/* History paging arguments shared by REST and WebSocket: returns 0, or -1
 * with a message naming the bad field. */
int  pl_proto_paging(int64_t after, int64_t before, int64_t limit, int *limit_out, const char **bad);

/* ---- encoding (appends JSON text to s) ---------------------------------- */

/* {"conversation":..,"seq":..,"id":"..","ts":..,"kind":"..",...} without "type" */
void pl_proto_event_fields(pl_sbuf *s, const pl_event *ev);
/* {"type":"event",<fields>} */
void pl_proto_event(pl_sbuf *s, const pl_event *ev);
/* the `sent` ack; req may be NULL; with_type adds "type":"sent" */
void pl_proto_sent(pl_sbuf *s, const pl_event *ev, int dup, json_t *req, int with_type);
/* {"type":"error","req":..,"code":..,"message":..} */
void pl_proto_error(pl_sbuf *s, json_t *req, const char *code, const char *msg);
/* Appends ,"req":<json> if req is not NULL. */
void pl_proto_add_req(pl_sbuf *s, json_t *req);
const char *pl_proto_kind_name(int kind);

#endif
