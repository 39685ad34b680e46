/* proto.h — the client protocol's messages: decoding and validating what
 * clients send, encoding what the server sends (docs/protocol.md).
 *
 * Owns: message shapes, field limits and error codes. Pure functions, no
 * I/O, no state: unit-tested in tests/unit/test_proto.c and fuzzed.
 * Defined in proto.c (decoding, the send path, encoding), proto_actions.c
 * (message actions) and proto_search.c (search); proto_int.h says which.
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
#define PL_PROTO_ATTACH_MAX 10   /* media ids one message may attach */
#define PL_PROTO_REQ_MAX  128        /* longest accepted "req" (as JSON text) */

typedef enum pl_msg_type {
    PL_MSG_AUTH = 1, PL_MSG_SEND, PL_MSG_SYNC, PL_MSG_HISTORY, PL_MSG_PING,
    PL_MSG_DELIVERED, PL_MSG_READ, PL_MSG_RECEIPTS, PL_MSG_HEARTBEAT,
    PL_MSG_PRESENCE, PL_MSG_PRESENCE_QUERY, PL_MSG_TYPING,
    /* message actions (docs/protocol.md "Message actions") */
    PL_MSG_EDIT, PL_MSG_DELETE, PL_MSG_REACT, PL_MSG_PIN, PL_MSG_PINS, PL_MSG_NOTIFY,
    PL_MSG_SEARCH                /* docs/protocol.md "Search" */
} pl_msg_type;

#define PL_PROTO_SEARCH_LIMIT 20     /* results of a search page by default  */

/* A search request (WebSocket `search`, REST GET /api/v1/search), checked by
 * pl_proto_search_check. */
typedef struct pl_search_args {
    const char *q;               /* NUL-terminated                       */
    size_t      q_len;
    int64_t     conv, sender;    /* 0: any                               */
    int64_t     after, before;   /* ts bounds, ms: after <= ts < before  */
    int         has_after;       /* after was given (else 0: no bound)   */
    int         has_before;      /* before was given: a bound even when 0
                                  * (nothing has ts < 0); else none      */
    int64_t     cursor;          /* from next_cursor; 0: the first page  */
    int         mentions;        /* only messages mentioning the asker   */
    int         has_media;       /* only messages with attachments       */
    int         limit;           /* 0: PL_PROTO_SEARCH_LIMIT             */
} pl_search_args;

#define PL_PROTO_PRESENCE_QUERY_MAX 200

/* A decoded client message. Strings point into root or own (valid until
 * pl_msg_release); whoever keeps them longer takes a reference to root and
 * takes own over (chat/send.c). req and cursors are root's, or (no root:
 * the send and auth fast paths) m's own references: keep them with
 * json_incref. */
typedef struct pl_msg {
    pl_msg_type type;
    json_t     *root;            /* NULL when the send fast path read it */
    char       *own;             /* SEND read by the fast path: its strings */
    json_t     *req;             /* borrowed from root or owned, or NULL */
    const char *token;           /* AUTH                                 */
    size_t      token_len;
    int64_t     conv;            /* SEND, HISTORY, actions               */
    const char *client_msg_id;   /* SEND                                 */
    size_t      cmid_len;
    const char *body;            /* SEND, EDIT                           */
    size_t      body_len;
    int64_t     reply_to;        /* SEND (optional, 0 = none)            */
    json_t     *cursors;         /* SYNC, AUTH (optional): object, validated */
    int64_t     after, before;   /* HISTORY; 0 = not given. PINS: after is
                                  * the offset into the list             */
    int         limit;           /* HISTORY, 1..PL_STORE_PAGE_MAX        */
    int64_t     seq;             /* DELIVERED, READ (> 0); RECEIPTS (0 = none);
                                  * EDIT, DELETE, REACT, PIN (>= 0: 0 is no
                                  * message, answered not_found)         */
    const char *emoji;           /* REACT: valid (pl_proto_emoji_ok)     */
    int         remove;          /* REACT: op "remove"; PIN: op "unpin"  */
    int         level;           /* NOTIFY: pl_notify_level              */
    int         away;            /* PRESENCE: 1 away, 0 online           */
    int         typing;          /* TYPING: 1 start, 0 stop              */
    json_t     *users;           /* PRESENCE_QUERY: array of positive ids */
    pl_search_args search;       /* SEARCH (q points into root)          */
    int64_t     attach[PL_PROTO_ATTACH_MAX]; /* SEND: media ids (docs "Media") */
    int         nattach;
} pl_msg;

typedef struct pl_proto_err {
    const char *code;            /* bad_json, bad_request, unknown_type, too_large */
    char        message[96];
    json_t     *req;             /* the req to echo, if it could be read (borrowed from root) */
} pl_proto_err;

/* Decodes one text message. Returns 0, or -1 with *err filled; in both
 * cases call pl_msg_release(m) afterwards. max_body bounds SEND bodies.
 * A plain `send` and a plain `auth` are read without jansson (root NULL);
 * pl_proto_fast = 0 turns that off (tests compare the two). */
int  pl_proto_decode(const char *data, size_t len, size_t max_body, pl_msg *m, pl_proto_err *err);
extern int pl_proto_fast;
void pl_msg_release(pl_msg *m);

/* Iterates a validated cursors object: returns 0 and the i-th pair, or -1
 * past the end. */
int  pl_proto_cursor(json_t *cursors, void **iter, int64_t *conv, int64_t *seq);

/* History paging arguments shared by REST and WebSocket: returns 0, or -1
 * with a message naming the bad field. */
int  pl_proto_paging(int64_t after, int64_t before, int64_t limit, int *limit_out, const char **bad);

/* Fields shared by the WebSocket messages and their REST forms; each
 * returns 0, or -1 with *err filled (bad_request naming the field, or
 * too_large). */
/* "body": 1..max_body bytes without NUL (send, edit); a longer one is
 * refused with the code too_long ("too_large" for sends, "bad_request" for
 * edits: protocol.md's table of action errors). */
int  pl_proto_body(json_t *o, size_t max_body, const char *too_long, const char **p, size_t *n,
                   pl_proto_err *err);
/* Optional "reply_to": absent or null (0), else a positive JSON-safe integer. */
int  pl_proto_reply_to(json_t *o, int64_t *out, pl_proto_err *err);
/* Encodes a MESSAGE's data that holds "attachments" (media.h
 * pl_media_data_with_urls: signed URLs added); unset: data as stored. Set
 * once at start (app/api_media.c), before any event is encoded. */
void pl_proto_set_attachment_encoder(void (*fn)(pl_sbuf *s, const char *data));
/* o["attachments"]: absent or null (n = 0), or an array of at most
 * PL_PROTO_ATTACH_MAX distinct media ids (> 0) into out. 0 or -1 (bad_request). */
int  pl_proto_attachments(json_t *o, int64_t *out, int *n, pl_proto_err *err);
/* send's "kind": absent or "text" (*ciphertext = 0), "ciphertext" (1: the
 * message carries "payloads" and no body: one is bad_request; end-to-end
 * encryption). */
int  pl_proto_send_kind(json_t *o, int *ciphertext, pl_proto_err *err);
/* "emoji" (pl_proto_emoji_ok) and the optional "op" ("add" or "remove"). */
int  pl_proto_reaction(json_t *o, const char **emoji, int *remove, pl_proto_err *err);
/* "level": "all", "mentions" or "none" (pl_notify_level). */
int  pl_proto_notify_level(json_t *o, int *level, pl_proto_err *err);
/* 1 if e[0..n) is an acceptable reaction: 1..PL_STORE_EMOJI_MAX bytes of
 * UTF-8 with at least one non-ASCII character and no Unicode White_Space,
 * control character (C0, DEL, C1) or NUL (pl_utf8_space_or_control; store.h;
 * the store checks it again). */
int  pl_proto_emoji_ok(const char *e, size_t n);
const char *pl_proto_notify_name(int level);
/* Checks a search request: q is 1..PL_STORE_QUERY_MAX bytes of UTF-8 with
 * a non-space character and no NUL (too long: bad_request too), before >
 * after when both are given (has_after, has_before; a given before of 0
 * alone is fine and matches nothing), limit 0 (becomes PL_PROTO_SEARCH_LIMIT) or
 * 1..PL_STORE_SEARCH_MAX. 0, or -1 with *err filled (bad_request). */
int  pl_proto_search_check(pl_search_args *a, pl_proto_err *err);
/* A next_cursor string: 1..19 decimal digits, 1..2^63-1. 0, or -1. */
int  pl_proto_search_cursor(const char *s, size_t n, int64_t *out);
/* The search answer's members (no braces): "results":[{<event fields>,
 * "snippet":".."},..],"next_cursor":".."|null. */
void pl_proto_search_results(pl_sbuf *s, const pl_event *evs, char *const *snippets, size_t n,
                             int64_t next_cursor);

/* ---- encoding (appends JSON text to s) ---------------------------------- */

/* {"conversation":..,"seq":..,"id":"..","ts":..,"kind":"..",...} without "type" */
void pl_proto_event_fields(pl_sbuf *s, const pl_event *ev);
/* {"type":"event",<fields>} */
void pl_proto_event(pl_sbuf *s, const pl_event *ev);
/* the `sent` ack; req may be NULL; with_type adds "type":"sent" */
void pl_proto_sent(pl_sbuf *s, const pl_event *ev, int dup, json_t *req, int with_type);
/* The answer to a message action: {"type":"ok","req":..,"conversation":..,
 * "seq":..,"changed":..} (seq only when > 0); without "type" when with_type
 * is 0 (REST). */
void pl_proto_ok(pl_sbuf *s, json_t *req, int64_t conv, int64_t seq, int changed, int with_type);
/* {"type":"error","req":..,"code":..,"message":..} */
void pl_proto_error(pl_sbuf *s, json_t *req, const char *code, const char *msg);
/* Appends ,"req":<json> if req is not NULL. */
void pl_proto_add_req(pl_sbuf *s, json_t *req);
const char *pl_proto_kind_name(int kind);

#endif
