/* conn.h — TCP listener and connections: reading, coalesced writes, closing.
 *
 * Owns: sockets. The listener and every connection are registered in one
 * epoll instance of our own, which the libuv loop polls as a single fd (a
 * uv_poll_t): a connection is a plain fd and a few bits, not a 248-byte
 * uv_tcp_t (design.md, "Sockets: one epoll of our own").
 * Each connection has a bounded-by-caller write queue of byte ranges of
 * refcounted buffers (pl_qent; adjacent ranges of one buffer merge into one
 * entry); queued data is flushed with one writev per connection just
 * before the loop sleeps (a uv_prepare handle); only a connection whose
 * kernel buffer is full waits for EPOLLOUT. Reads land in one shared
 * buffer; the upper layer keeps only what it must (see http/server.c).
 * Does not own: what the bytes mean (http/, ws/, chat/), or TLS itself
 * (net/tls.c). With pl_net_set_tls, new connections speak TLS: reads are
 * fed to the connection's pl_tls_conn and on_data sees plaintext; the write
 * queue holds plaintext, encrypted at flush time only as far as the kernel
 * takes it (so queue sizes, high water and slow-consumer limits still count
 * plaintext, and at most one flush's ciphertext waits in the TLS state).
 * A plaintext connection pays a NULL test of c->tls on read and flush.
 *
 * Connection states:
 *
 *   OPEN --pl_conn_close(graceful)--> CLOSING --queue written--> FIN sent
 *     |         (input read and discarded)                  |
 *     |                                     peer EOF or linger timeout
 *     |                                                     v
 *     `--read error / write error / pl_conn_close(0) ---> fd closed (closed)
 *                                                           |
 *                  on_close() at the next loop turn's prepare, then unref;
 *                                                    freed at refs == 0
 *
 * The graceful close lingers (RFC 9112 9.6): closing a socket that still has
 * unread input makes the kernel send a reset, which can destroy the response
 * still in flight (a proxy that sees the reset while forwarding a request
 * body drops the answer). So a closing connection keeps reading, discards
 * what arrives, half-closes once its queue is written, and is closed at the
 * peer's EOF or after at most CLOSE_LINGER_MS.
 *
 * Invariants:
 *   1. A connection is freed only when its refs drop to zero; asynchronous
 *      work (password hashing, store jobs) holds a reference, and checks
 *      pl_conn_alive() before writing.
 *   2. on_close runs exactly once, from the loop, never inside the upper
 *      layer's own on_data call stack.
 *   3. The epoll registration (ev_in, ev_out) includes EPOLLIN while reading
 *      is wanted (!paused) and EPOLLOUT while the kernel buffer is full
 *      (writing); an interest no longer wanted is dropped lazily, when its
 *      event fires (a pause and resume between two polls costs nothing).
 */
#ifndef PL_CONN_H
#define PL_CONN_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "../core/buf.h"
#include "../ws/ws.h"
#include "tls.h"

typedef struct pl_conn pl_conn;
typedef struct pl_net pl_net;

/* A write queue entry: bytes [off, off + len) of b, whose reference the
 * queue holds. Consecutive sends of adjacent bytes of one buffer extend
 * the last entry (pl_conn_send_part), so a fan-out turn's frames, encoded
 * back to back into one buffer, go out as one iovec entry. */
typedef struct pl_qent {
    pl_rbuf *b;
    uint32_t off, len;
} pl_qent;

typedef struct pl_net_handler {
    /* Bytes arrived; p is the shared read buffer (mutable, valid only during
     * the call). */
    void (*on_data)(pl_conn *c, uint8_t *p, size_t n);
    /* The connection is going away: release upper-layer state. */
    void (*on_close)(pl_conn *c);
    /* The connection's deadline passed (see pl_conn_set_deadline). */
    void (*on_timeout)(pl_conn *c);
    /* The write queue drained below the low-water mark after being high. */
    void (*on_drain)(pl_conn *c);
} pl_net_handler;

enum { PL_CONN_HTTP = 0, PL_CONN_WS = 1, PL_CONN_SSE = 2 /* http/server.c pl_http_stream_begin */ };

struct pl_conn {
    int          fd;           /* the socket; -1 once closed                 */
    uint32_t     refs;
    pl_net      *net;
    pl_conn     *next, *prev;  /* all connections (deadline sweep)           */
    pl_conn     *flush_next;   /* pending-flush list                         */
    int64_t      deadline;     /* monotonic ms; 0 = none                     */
    int64_t      ip_key;       /* the peer address as a map key (non-zero)  */
    pl_qent     *q;            /* write queue ring; NULL until used, and again
                                * once empty at a sweep (on_sweep)          */
    void        *http;         /* http/ state while a request is in progress */
    void        *session;      /* chat/ session once a WebSocket authenticated */
    pl_ws_reader *ws;          /* WebSocket reader while a frame or message
                                * is partly read (mode WS), else NULL: see
                                * pl_wsconn_on_data                          */
    pl_tls_conn *tls;          /* TLS state, NULL on a plaintext listener    */
    /* One per connection, idle ones included: the rest are 32-bit and bit
     * fields, so the struct stays within a 128-byte allocator block (the
     * assertion in conn.c). */
    uint8_t      mode;         /* PL_CONN_HTTP / PL_CONN_WS / PL_CONN_SSE    */
    uint8_t      ws_state;     /* ws/wsconn.c: open, close sent, ...        */
    uint8_t      closing : 1;  /* close requested: input discarded, no queueing */
    uint8_t      closed : 1;   /* the fd is closed; on_close is pending or ran */
    uint8_t      released : 1; /* on_close ran                               */
    uint8_t      in_flush : 1; /* on the pending-flush (or release) list     */
    uint8_t      writing : 1;  /* the kernel buffer is full: waiting for EPOLLOUT */
    uint8_t      ev_in : 1;    /* EPOLLIN is registered (invariant 3)        */
    uint8_t      ev_out : 1;   /* EPOLLOUT is registered                     */
    uint8_t      paused : 1;   /* reading stopped by the upper layer         */
    uint8_t      high : 1;     /* queue went above the high-water mark       */
    uint8_t      loopback : 1; /* the peer is on 127.0.0.0/8 or ::1         */
    uint8_t      peer_eof : 1; /* the peer half-closed (read EOF)           */
    uint8_t      shut : 1;     /* our FIN was requested (lingering close)   */
    uint8_t      corked : 1;   /* queued bytes wait for pl_conn_uncork        */
    uint8_t      cork_aged : 1; /* a sweep saw it corked (the next uncorks)  */
    uint32_t     id;           /* for logs                                   */
    uint32_t     last_rx;      /* monotonic ms of the last bytes received, the
                                * low 32 bits: read it with pl_conn_last_rx */
    uint32_t     qhead, qlen, qcap;   /* qcap: 0 or a power of two           */
    uint32_t     qoff;         /* bytes of q[qhead] already written          */
    uint32_t     qbytes;       /* bytes queued, not yet written (a queue that
                                * would pass 4 GiB closes the connection)   */
};

/* The monotonic ms (pl_mono_ms) of c's last received bytes, given now:
 * exact while the connection has been silent less than 49 days. */
static inline int64_t pl_conn_last_rx(const pl_conn *c, int64_t now) {
    return now - (int64_t)(uint32_t)((uint32_t)now - c->last_rx);
}

/* Checks addr as pl_net_listen reads it ("host:port", "[v6]:port", a host
 * name resolved now), binding nothing: 0, UV_EINVAL for a malformed address
 * or port, UV_EAI_NONAME for a name that does not resolve. */
int  pl_net_check_addr(const char *addr);
/* Creates the network layer on loop, listening on addr ("host:port",
 * "[v6]:port"). Returns 0 or a negative uv error. */
int  pl_net_listen(uv_loop_t *loop, const char *addr, const pl_net_handler *h,
                   void *ud, pl_net **out);
void *pl_net_data(pl_net *n);
/* The port the listener is bound to (the one the kernel chose for port 0). */
int   pl_net_port(pl_net *n);
/* Stops accepting new connections (drain). */
void pl_net_stop_accepting(pl_net *n);
/* Closes every connection immediately and the listener; frees when done. */
void pl_net_close(pl_net *n);
size_t pl_net_count(pl_net *n);
/* Connections not lingering after a graceful close (their FIN is sent and
 * they only wait for the peer's: nothing more can go either way). */
size_t pl_net_active(pl_net *n);
/* Connections accepted from now on speak TLS with t's current context
 * (borrowed: t outlives n; NULL: plaintext). */
void pl_net_set_tls(pl_net *n, pl_tls *t);
/* Caps open connections per client IP (0 = no cap); over it, a new
 * connection is closed at once. Loopback peers only if loopback_too (a
 * local proxy makes every client loopback: --rate-ip-loopback). */
void pl_net_set_max_per_ip(pl_net *n, int cap, int loopback_too);
/* A connection's queue above `high` bytes sets conn->high (ephemeral
 * frames are shed, replays pause); below `low` it clears and on_drain runs.
 * Defaults 256 KiB and 64 KiB. */
void pl_net_set_queue_marks(pl_net *n, size_t high, size_t low);
/* Sum of queued bytes over all connections, and the largest queue. */
void pl_net_queue_stats(pl_net *n, uint64_t *total, uint64_t *max);
/* Calls fn for each open connection. */
void pl_net_each(pl_net *n, void (*fn)(pl_conn *c, void *arg), void *arg);

/* Queues a reference to b (the caller keeps its own). No-op when closing. */
void pl_conn_send(pl_conn *c, pl_rbuf *b);
/* Queues bytes [off, off + len) of b (the caller keeps its reference; the
 * queue takes one unless the bytes directly follow its last entry's, in
 * the same buffer: then that entry grows). While the kernel buffer is full
 * or the connection is corked the bytes are copied instead, so that a
 * queue that waits keeps only its own bytes alive, not the rest of a large
 * shared buffer. No-op when closing. */
void pl_conn_send_part(pl_conn *c, pl_rbuf *b, size_t off, size_t len);
/* Queues a copy of p[0..n). */
void pl_conn_send_copy(pl_conn *c, const void *p, size_t n);
/* Corks c: what is queued from now on waits instead of going out at the
 * end of the loop turn, so that replies produced over a few turns (a
 * resume's `ready` and its first replayed page) leave in one write. A cork
 * ends at pl_conn_uncork, when the queue passes the high-water mark, at a
 * close, or at the second deadline sweep that finds it (250-500 ms): it
 * can delay bytes, never keep them. No-op when closing. */
void pl_conn_cork(pl_conn *c);
/* Ends the cork: the queue goes out at the end of this loop turn. */
void pl_conn_uncork(pl_conn *c);
/* Writes what the kernel takes of the queue now, in the middle of a loop
 * turn, rather than at its end: for a caller about to judge the queue full
 * (chat's slow-consumer bound) while a burst is being queued. Never closes
 * or calls back: an error is left for the turn's flush to find. Plain
 * connections only (TLS: no-op), not while the kernel buffer is full. */
void pl_conn_write_now(pl_conn *c);
/* Drops the queued bytes no write has begun: whatever the peer is getting
 * is whole (the entry being written stays), and what is queued next goes
 * out right after it (a slow consumer's close frame). TLS: no-op. */
void pl_conn_drop_unsent(pl_conn *c);
/* The same for a stream whose units span entries (an SSE event is its
 * data lines and then its end): the entries after the one being written
 * stay up to the first that starts a unit (starts(p, n) on its bytes), so
 * the peer gets whole units; that one and the rest go. TLS: no-op. */
void pl_conn_drop_unsent_units(pl_conn *c, int (*starts)(const uint8_t *p, size_t n));
/* Requests a close; if graceful, queued data is written first (bounded by a
 * 5 s timeout). */
void pl_conn_close(pl_conn *c, int graceful);
static inline int pl_conn_alive(const pl_conn *c) { return !c->closing; }
void pl_conn_ref(pl_conn *c);
void pl_conn_unref(pl_conn *c);
void pl_conn_pause(pl_conn *c);
void pl_conn_resume(pl_conn *c);
/* Absolute monotonic deadline in ms (0 clears); on_timeout fires after it. */
static inline void pl_conn_set_deadline(pl_conn *c, int64_t at) { c->deadline = at; }
/* The loop the connection's network layer runs on. */
uv_loop_t *pl_conn_loop(const pl_conn *c);
/* The peer's address (0), or -1. */
int pl_conn_peer(const pl_conn *c, struct sockaddr_storage *ss);

#endif
