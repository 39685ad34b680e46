/* bus_codec.h — the Redis bus's message format (private to src/bus/).
 *
 * Owns: encoding what crosses nodes into one Redis pub/sub payload, and
 * decoding it back, as pure functions (no I/O, no globals) so that they are
 * unit-tested on their own. Does not own: channels (bus_redis*.c),
 * connections (redis_conn.c).
 *
 * Format (text, readable in `redis-cli monitor`, one payload per message):
 *
 *   message = type origin *("|" field) "."   "." ends every message
 *   type    = one letter (PL_BM_*)
 *   origin  = int: the publishing node's id
 *   field   = int | str | nil                 which one is fixed per type
 *   int     = ["-"] 1*DIGIT                   int64 (uint64 for event ids)
 *   str     = len ":" len*OCTET               len decimal; the octets are
 *                                             UTF-8 without NUL, anything
 *                                             else (even "|") is allowed
 *   nil     = "~"                             a NULL string
 *
 *   E origin|conv|seq|id|ts|kind|sender|subject|client_msg_id|body|data
 *   H origin|conv|seq                         head
 *   J origin|user|conv|seq                    join
 *   R origin|user|login                       revocation
 *   T origin|conv|user|start                  typing
 *   B origin|conv|blocked                     a direct conversation's block flag
 *   W origin                                  messages were erased without an
 *                                             event (the purge): drop what is
 *                                             kept of recent events
 *   C origin|conv|user|delivered|read|unread|members|peer      receipt
 *   P origin|user|status|last_active|expires|n|conv_1|...|conv_n presence
 *   Z origin|n[|since]                        heartbeat; since: the node's start, wall ms
 *                                             (appended: 0 when absent)
 *
 *   e.g. node 3, a head of conversation 100 at seq 7:   H3|100|7.
 *        an event with body "a|b", no client_msg_id:   E3|100|8|...|~|3:a|b|~.
 *
 * Strings are length-prefixed, so a body holding separators, digits or
 * anything that looks like a header decodes byte for byte; the final "."
 * makes every proper prefix of a message invalid (a cut after a digit
 * would otherwise read as a smaller number). A decoder that finds anything
 * but exactly one well-formed message (wrong type, a number out of range,
 * a length past the end, invalid UTF-8, a NUL, trailing bytes, no final
 * ".") rejects the whole payload. Fields after a type's last one are read
 * (each must be a well-formed number, str or nil) and dropped: a newer
 * version may append fields to a type, and a node of this version still
 * understands the message (what makes a rolling upgrade possible from
 * this version on; appending is the only change allowed to a type).
 */
#ifndef PL_BUS_CODEC_H
#define PL_BUS_CODEC_H

#include <stddef.h>
#include <stdint.h>

#include "../core/buf.h"
#include "bus.h"

enum {
    PL_BM_EVENT = 'E',
    PL_BM_HEAD = 'H',
    PL_BM_JOIN = 'J',
    PL_BM_REVOKE = 'R',
    PL_BM_TYPING = 'T',
    PL_BM_BLOCKED = 'B',
    PL_BM_RECEIPT = 'C',
    PL_BM_PRESENCE = 'P',
    PL_BM_KEYS_LOW = 'K',
    PL_BM_BEAT = 'Z',
    PL_BM_ERASED = 'W'
};

/* A decoded message. Every pointer in it is borrowed: strings point into
 * the decoded buffer, presence.convs into the caller's scratch array. */
typedef struct pl_bus_msg {
    int type;                                             /* PL_BM_*           */
    int origin;                                           /* publishing node   */
    union {
        pl_event ev;                                      /* E (never release) */
        struct { int64_t conv, seq; } head;               /* H                 */
        struct { int64_t user, conv, seq; } join;         /* J                 */
        struct { int64_t user, login; } revoke;           /* R                 */
        struct { int64_t conv, user; int start; } typing; /* T                 */
        struct { int64_t conv; int blocked; } blocked;    /* B                 */
        pl_bus_receipt receipt;                           /* C                 */
        pl_bus_presence presence;                         /* P (node = origin) */
        struct { int64_t n, since; } beat;                /* Z                 */
        struct { int64_t user, device, count; } keys_low; /* K                 */
    };
} pl_bus_msg;

/* Encoders append one message to s (they do not reset it). */
void pl_bus__enc_event(pl_sbuf *s, int origin, const pl_event *ev);
void pl_bus__enc_head(pl_sbuf *s, int origin, int64_t conv, int64_t seq);
void pl_bus__enc_join(pl_sbuf *s, int origin, int64_t user, int64_t conv, int64_t seq);
void pl_bus__enc_revoke(pl_sbuf *s, int origin, int64_t user, int64_t login);
void pl_bus__enc_typing(pl_sbuf *s, int origin, int64_t conv, int64_t user, int start);
void pl_bus__enc_blocked(pl_sbuf *s, int origin, int64_t conv, int blocked);
void pl_bus__enc_erased(pl_sbuf *s, int origin);
void pl_bus__enc_receipt(pl_sbuf *s, int origin, const pl_bus_receipt *r);
void pl_bus__enc_presence(pl_sbuf *s, int origin, const pl_bus_presence *p);
void pl_bus__enc_beat(pl_sbuf *s, int origin, int64_t n, int64_t since);
void pl_bus__enc_keys_low(pl_sbuf *s, int origin, int64_t user, int64_t device, int64_t count);

/* Decodes buf[0..len) into m, in place: the separator after each string
 * (a "|" or the final ".") is overwritten with NUL so that m's strings
 * point into buf (and buf is no longer a valid message). A
 * presence message's conversations go to *convs (grown with pl_realloc;
 * the caller owns and frees it, and may reuse it across calls).
 * Returns 0, or -1 with *why set to a fixed string naming the defect. */
int pl_bus__decode(char *buf, size_t len, pl_bus_msg *m, int64_t **convs, size_t *convs_cap,
                   const char **why);

/* 1 if p[0..n) is UTF-8 (RFC 3629: no overlong forms, no surrogates, at
 * most U+10FFFF) without a NUL byte. */
int pl_bus__utf8_ok(const char *p, size_t n);

#endif
