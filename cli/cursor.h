/* cursor.h — building a Server-Sent Events id (a Last-Event-ID) from
 * per-conversation cursors, in the public format of docs/protocol.md
 * ("Server-Sent Events", Ids):
 *
 *     "c1." base64url-without-padding( varint(n)
 *         n x [ varint(conversation id - previous id)  varint(seq) ]
 *         CRC-32 (IEEE, little-endian, of the bytes before it) )
 *
 * Owns: encoding only (a client never needs to decode the server's ids: it
 * echoes them). Written from the document, not shared with the server's
 * src/proto/cursor_id.c, so `parley tail --last` checks the format as any
 * third-party client would.
 */
#ifndef PC_CURSOR_H
#define PC_CURSOR_H

#include <stddef.h>
#include <stdint.h>

typedef struct pc_cursor {
    int64_t conv;            /* conversation id, >= 1                      */
    int64_t seq;             /* the last seq the client has, >= 0           */
} pc_cursor;

/* The id of cur[0..n): a new string (free() it). Sorts cur by conversation;
 * a conversation listed twice keeps its highest seq. */
char *pc_cursor_id(pc_cursor *cur, size_t n);

#endif
