/* cursor_id.h — the Server-Sent Events id: a session's per-conversation
 * cursors as one opaque, compact token (docs/protocol.md "Server-Sent
 * Events", ids).
 *
 * Owns: the token's format, its encoding and its strict decoding. Pure
 * functions, no I/O, no state (tests/unit/test_cursor_id.c).
 * Does not own: what the cursors mean (chat/ applies them like a `sync`),
 * SSE framing (http/sse.c).
 *
 * Format: "c1." then base64url (no padding) of
 *     varint(n)  n x [ varint(conv - previous conv)  varint(seq) ]  crc32(le)
 * with conversations in strictly ascending order (the first delta is from
 * 0, every delta >= 1), conv and seq at most 2^53 - 1, and the last four
 * bytes the CRC-32 (IEEE) of everything before them. The token is validated,
 * not signed: forging one gains nothing a `sync` with the same cursors
 * would not give (the server still applies membership), and the check
 * turns a truncated or mangled header into a clear 400 instead of a resume
 * from the wrong place.
 */
#ifndef PL_CURSOR_ID_H
#define PL_CURSOR_ID_H

#include <stddef.h>
#include <stdint.h>

#include "../core/buf.h"

/* What a Last-Event-ID may hold: it must fit a request head (16 KiB, with
 * the other headers). A session with more conversations than this gets ids
 * all the same; resuming from one is refused (400), so such users should use
 * WebSocket (docs/protocol.md). About 3-6 characters per conversation. */
#define PL_CURSOR_ID_MAX_CONVS 4096   /* cursors one token may hold        */
#define PL_CURSOR_ID_MAX_LEN   14000  /* token characters accepted         */

typedef struct pl_cursor {
    int64_t conv;                     /* conversation id, >= 1             */
    int64_t seq;                      /* last seq delivered, >= 0          */
} pl_cursor;

/* Sorts cur[0..n) by conversation (ascending). */
void pl_cursor_sort(pl_cursor *cur, size_t n);
/* Appends the token of cur[0..n) (sorted, distinct, in range: the caller's
 * invariant) to s. */
void pl_cursor_id_encode(pl_sbuf *s, const pl_cursor *cur, size_t n);
/* Decodes id[0..len). 0: *out is a new array of *n cursors (free() it;
 * NULL when n is 0). -1: not a valid token, *why says why (static text),
 * nothing allocated. */
int  pl_cursor_id_decode(const char *id, size_t len, pl_cursor **out, size_t *n, const char **why);

#endif
