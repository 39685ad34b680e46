/* sse.h — a resumable reader of the Server-Sent Events format (the WHATWG
 * "event stream" interpretation: fields, comments, CR/LF/CRLF line ends,
 * the last event ID), fed whatever bytes the network gives.
 *
 * Owns: framing only. No I/O, no JSON: the caller feeds bytes and gets each
 * event's data; what an event means is tail.c's. A parser lives as long as
 * a `tail` and is restarted for each connection; the last event ID survives
 * restarts (it is what a reconnect sends as Last-Event-ID).
 */
#ifndef PC_SSE_H
#define PC_SSE_H

#include <stddef.h>

#include "core/buf.h"

/* Largest line or event data accepted (the server's frames are one line of
 * JSON, far below this); more is a broken stream. */
#define PC_SSE_MAX (16u << 20)

/* Called for each dispatched event that has data (the `data:` lines joined
 * by "\n", NUL-terminated, borrowed). Return 0 to go on, anything else to
 * stop: pc_sse_feed returns it at once. */
typedef int (*pc_sse_fn)(void *ud, const char *data, size_t len);

typedef struct pc_sse {
    pl_sbuf line;        /* the line being read (without its end)          */
    pl_sbuf data;        /* the event's data buffer                        */
    pl_sbuf idbuf;       /* the last event ID buffer (an `id:` field)      */
    char   *last_id;     /* the last event ID, set at each dispatch (owned) */
    int     after_cr;    /* the previous byte was CR: a LF now is its pair */
} pc_sse;

void pc_sse_init(pc_sse *p);
void pc_sse_release(pc_sse *p);
/* A new connection: drops a partly read line and event, keeps the last
 * event ID. */
void pc_sse_restart(pc_sse *p);
/* Sets the last event ID (a resume point built elsewhere); borrowed. */
void pc_sse_set_last_id(pc_sse *p, const char *id);
/* The last event ID, or NULL when no event carried one yet. */
const char *pc_sse_last_id(const pc_sse *p);

/* Reads buf[0..n). 0: all consumed; the callback's non-zero value when it
 * stopped; -1 when a line or an event's data exceeds PC_SSE_MAX. */
int pc_sse_feed(pc_sse *p, const char *buf, size_t n, pc_sse_fn fn, void *ud);

#endif
