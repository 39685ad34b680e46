/* conn.c — listener, the connections' epoll, reads into a shared buffer,
 * queued vectored writes, deferred close, and the deadline sweep; for TLS
 * connections, moving ciphertext between the socket and net/tls.c (the
 * "TLS I/O" section). See conn.h. */
#include "conn.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "../core/alloc.h"
#include "../core/clock.h"
#include "../core/log.h"
#include "../core/map.h"
#include "../core/metrics.h"

#define READ_BUF_SIZE   (64 * 1024)
#define READS_PER_EVENT 4           /* reads of a full buffer per readiness  */
#define EVENTS_BATCH    1024        /* epoll_wait batch                      */
#define ACCEPTS_PER_EVENT 512       /* a storm's connects per loop turn      */
#define IOV_MAX_BATCH   1024        /* entries per vectored write (IOV_MAX):
                                       a fan-out turn queues one frame per
                                       event, often more than 64, and each
                                       writev costs a loopback skb and the
                                       receiver's wakeup (benchmarks.md,
                                       "group fan-out cost per delivery")  */
#define TLS_WRITE_CHUNK (64 * 1024) /* plaintext encrypted per SSL_write       */
#define PART_COPY_MIN   4096        /* a stalled queue's own tail buffer (pl_conn_send_part) */
#define CLOSE_LINGER_MS 5000        /* graceful close waits at most this long
                                       (flush, then the peer's EOF)            */

struct pl_net {
    uv_loop_t     *loop;
    int            epfd;           /* our epoll: the listener and connections */
    int            listen_fd;      /* -1 once stopped                        */
    int            nodelay;        /* accepted sockets inherit the listener's
                                      TCP_NODELAY: -1 not known yet, 1 yes,
                                      0 no (set on each, a syscall a client) */
    int            reserve_fd;     /* spent to shed connects at EMFILE       */
    pl_log_limit   shed_limit;     /* "out of file descriptors": its last line,
                                      and the connections shed since (held) */
    uv_poll_t      poller;         /* the loop's watch on epfd               */
    uv_prepare_t   flusher;        /* flushes pending writes before polling,
                                      and releases closed connections        */
    uv_timer_t     sweeper;        /* deadlines, four times a second         */
    pl_net_handler h;
    void          *ud;
    pl_conn        all;            /* sentinel of the all-connections list  */
    pl_conn       *flush_head;     /* pending-flush list                    */
    size_t         count;
    size_t         lingering;      /* of count: FIN sent, only discarding input */
    uint64_t       next_id;
    int            closing;
    int            handles_open;   /* for pl_net_close                      */
    int            max_per_ip;     /* 0 = no cap                            */
    int            max_per_ip_lo;  /* 1: loopback peers are capped too      */
    size_t         high_water;     /* queue bytes that set conn->high       */
    size_t         low_water;      /* ... and that clear it (on_drain)      */
    pl_map         per_ip;         /* ip_key -> open connections (as intptr) */
    pl_tls        *tls;            /* NULL: plaintext                       */
};

#if defined(__x86_64__)
_Static_assert(sizeof(pl_conn) <= 128, "pl_conn must fit a 128-byte allocator block (conn.h)");
#endif

static uint8_t read_buf[READ_BUF_SIZE];   /* shared: the loop is one thread */
static uint8_t plain_buf[READ_BUF_SIZE];  /* TLS: decrypted bytes for on_data */
static uint8_t tls_stage[TLS_WRITE_CHUNK]; /* TLS: small queue entries gathered */
static struct epoll_event events[EVENTS_BATCH];

static void conn_flush(pl_conn *c);
static void net_free(pl_net *n);
static void schedule_flush(pl_conn *c);
static void tls_read(pl_conn *c, const uint8_t *p, size_t n);
static void tls_flush(pl_conn *c);

void *pl_net_data(pl_net *n) { return n->ud; }
size_t pl_net_count(pl_net *n) { return n->count; }
size_t pl_net_active(pl_net *n) { return n->count - n->lingering; }
uv_loop_t *pl_conn_loop(const pl_conn *c) { return c->net->loop; }

int pl_conn_peer(const pl_conn *c, struct sockaddr_storage *ss) {
    socklen_t l = sizeof *ss;
    return c->fd >= 0 && getpeername(c->fd, (struct sockaddr *)ss, &l) == 0 ? 0 : -1;
}

void pl_conn_ref(pl_conn *c) { c->refs++; }

void pl_conn_unref(pl_conn *c) {
    if (--c->refs) return;
    while (c->qlen) {
        pl_rbuf_unref(&c->q[c->qhead].b);
        c->qhead = (c->qhead + 1) & (c->qcap - 1);
        c->qlen--;
    }
    free(c->q);
    free(c);
}

static void ip_count(pl_net *n, int64_t key, int delta) {
    intptr_t v = (intptr_t)pl_map_get(&n->per_ip, key) + delta;
    if (v > 0) pl_map_put(&n->per_ip, key, (void *)v);
    else pl_map_del(&n->per_ip, key);
}

/* Brings the epoll registration up to what c wants (invariant 3): adds an
 * interest at once; drops one only when `drop` (its event fired). */
static void sync_events(pl_conn *c, int drop) {
    int in = !c->paused, out = c->writing;
    if (!drop) {
        in |= c->ev_in;
        out |= c->ev_out;
    }
    if (c->closed || (in == c->ev_in && out == c->ev_out)) return;
    struct epoll_event e = {.events = (in ? EPOLLIN : 0u) | (out ? EPOLLOUT : 0u), .data.ptr = c};
    if (epoll_ctl(c->net->epfd, EPOLL_CTL_MOD, c->fd, &e) == 0) {
        c->ev_in = (uint8_t)in;
        c->ev_out = (uint8_t)out;
    }
}

/* on_close, from the flusher (invariant 2): the upper layer lets go. */
static void conn_release(pl_conn *c) {
    pl_net *n = c->net;
    c->released = 1;
    ip_count(n, c->ip_key, -1);
    c->prev->next = c->next;
    c->next->prev = c->prev;
    n->count--;
    if (c->shut) n->lingering--;
    pl_tls_conn_free(&c->tls);          /* no more I/O: the SSL state goes now */
    n->h.on_close(c);
    pl_conn_unref(c);
}

/* Closes the socket now, dropping whatever is queued; on_close follows
 * from the flusher. */
static void conn_destroy(pl_conn *c) {
    if (c->closed) return;
    c->closing = 1;
    c->closed = 1;
    c->writing = 0;
    close(c->fd);                       /* leaves the epoll: the only reference */
    c->fd = -1;
    schedule_flush(c);
}

/* A closing connection whose queue is written: closed if the peer already
 * half-closed, otherwise half-closed from our side (FIN) to linger until the
 * peer's EOF or the deadline. See "lingers" in conn.h. */
static void conn_finish(pl_conn *c) {
    if (c->closed || c->qlen || c->writing) return;
    if (c->shut) {                         /* lingering: the peer's EOF ends it */
        if (c->peer_eof) conn_destroy(c);
        return;
    }
    const uint8_t *tls_out;
    if (c->tls && (!pl_tls_conn_notified(c->tls) || pl_tls_conn_out(c->tls, &tls_out))) {
        schedule_flush(c);                 /* close_notify or an alert goes out first */
        return;
    }
    if (c->peer_eof || shutdown(c->fd, SHUT_WR) != 0) {
        conn_destroy(c);
        return;
    }
    c->shut = 1;
    c->net->lingering++;
}

void pl_conn_cork(pl_conn *c) {
    if (c->closing) return;
    c->corked = 1;
    c->cork_aged = 0;
}

void pl_conn_uncork(pl_conn *c) {
    if (!c->corked) return;
    c->corked = 0;
    if (c->qlen && !c->closed) schedule_flush(c);
}

void pl_conn_close(pl_conn *c, int graceful) {
    if (c->closed) return;
    pl_conn_uncork(c);                     /* what is queued goes first */
    if (!graceful) {
        conn_destroy(c);
        return;
    }
    if (!c->closing) {
        c->closing = 1;
        c->deadline = pl_mono_ms() + CLOSE_LINGER_MS;   /* the sweep cuts it off */
        if (c->paused && !c->peer_eof) {                /* read, to discard */
            c->paused = 0;
            sync_events(c, 0);
        }
    }
    conn_finish(c);
}

void pl_conn_pause(pl_conn *c) {
    if (c->paused || c->closing) return;
    c->paused = 1;                      /* EPOLLIN goes if it fires (invariant 3) */
}

void pl_conn_resume(pl_conn *c) {
    if (!c->paused || c->closing) return;
    c->paused = 0;
    sync_events(c, 0);
}

/* Readable: up to READS_PER_EVENT full buffers (level-triggered: the rest
 * comes at the next poll). */
static void conn_read(pl_conn *c) {
    for (int i = 0; i < READS_PER_EVENT && !c->paused && !c->closed; i++) {
        ssize_t r = read(c->fd, read_buf, sizeof read_buf);
        if (r > 0) {
            if (c->closing) continue;          /* lingering: discarded */
            c->last_rx = (uint32_t)pl_mono_ms();
            pl_conn_ref(c);
            if (c->tls) tls_read(c, read_buf, (size_t)r);
            else c->net->h.on_data(c, read_buf, (size_t)r);
            pl_conn_unref(c);
            if ((size_t)r < sizeof read_buf) return;
        } else if (r == 0) {
            /* EOF: flush what is queued (a half-closed peer may still
             * read), then close. */
            c->peer_eof = 1;
            c->paused = 1;
            pl_conn_close(c, 1);
            return;
        } else {
            if (errno == EAGAIN || errno == EINTR) return;
            conn_destroy(c);                   /* reset: the peer is gone */
            return;
        }
    }
}

static void schedule_flush(pl_conn *c) {
    if (c->in_flush || (c->corked && !c->closing)) return;
    c->in_flush = 1;
    c->flush_next = c->net->flush_head;
    c->net->flush_head = c;
    pl_conn_ref(c);
}

static pl_qent *queue_at(pl_conn *c, uint32_t i) { return &c->q[(c->qhead + i) & (c->qcap - 1)]; }

/* Appends bytes [off, off + len) of b; takes_ref: the caller's reference
 * passes to the queue (otherwise one is taken when a new entry is made).
 * Bytes that directly follow the last entry's in the same buffer extend
 * it (no write holds iovecs across loop turns: writev is synchronous). */
static void queue_push(pl_conn *c, pl_rbuf *b, size_t off, size_t len, int takes_ref) {
    if (c->qlen) {
        pl_qent *t = queue_at(c, c->qlen - 1);
        if (t->b == b && (size_t)t->off + t->len == off) {
            t->len += (uint32_t)len;
            if (takes_ref) pl_rbuf_unref(&b);
            goto counted;
        }
    }
    if (c->qlen == c->qcap) {
        uint32_t ncap = c->qcap ? c->qcap * 2 : 4;   /* a power of two: queue_at masks */
        pl_qent *nq = pl_malloc(ncap * sizeof *nq);
        for (uint32_t i = 0; i < c->qlen; i++) nq[i] = *queue_at(c, i);
        free(c->q);
        c->q = nq;
        c->qcap = ncap;
        c->qhead = 0;
    }
    pl_qent *e = &c->q[(c->qhead + c->qlen) & (c->qcap - 1)];
    e->b = takes_ref ? b : pl_rbuf_ref(b);
    e->off = (uint32_t)off;
    e->len = (uint32_t)len;
    c->qlen++;
counted:
    c->qbytes += len;
    if (c->qbytes > c->net->high_water) {
        c->high = 1;
        c->corked = 0;                     /* a cork never holds more (the caller flushes) */
    }
}

/* Whether n more bytes fit the queue's 32-bit count; if not the
 * connection is cut (no upper layer queues 4 GiB: the slow-consumer bound
 * and the streamed file bodies stop far below). */
static int queue_room(pl_conn *c, size_t n) {
    if (n <= (size_t)(UINT32_MAX - c->qbytes)) return 1;
    pl_log(PL_LOG_WARN, c->id, "write queue over 4 GiB: connection closed", "\"queued\":%u", c->qbytes);
    pl_conn_close(c, 0);
    return 0;
}

void pl_conn_send(pl_conn *c, pl_rbuf *b) {
    if (c->closing || b->len == 0) return;
    if (!queue_room(c, b->len)) return;
    queue_push(c, b, 0, b->len, 0);
    schedule_flush(c);
}

/* Appends p[0..n) to the queue's own tail buffer: the last entry's buffer
 * when only the queue references it, the entry ends at its end and it has
 * room (appending past len touches no byte a pending write points to);
 * otherwise a new buffer with room for more. */
static void queue_copy(pl_conn *c, const uint8_t *p, size_t n) {
    if (c->qlen) {
        pl_qent *t = queue_at(c, c->qlen - 1);
        pl_rbuf *b = t->b;
        if (b->refs == 1 && (size_t)t->off + t->len == b->len && b->cap - b->len >= n) {
            memcpy(b->data + b->len, p, n);
            b->len += (uint32_t)n;
            queue_push(c, b, b->len - n, n, 0);       /* extends t */
            return;
        }
    }
    pl_rbuf *nb = pl_rbuf_new(n > PART_COPY_MIN ? n : PART_COPY_MIN);
    memcpy(nb->data, p, n);
    nb->len = (uint32_t)n;
    queue_push(c, nb, 0, n, 1);
}

/* A range that extends the last entry costs nothing. Otherwise, while the
 * kernel buffer is full (c->writing) the queue may wait long (a dead peer:
 * until the slow-consumer bound or timeout), and a reference would keep
 * the whole shared buffer alive (64 KiB of deliver.c's frame arena, mostly
 * other connections' frames) for a few bytes: the range is copied. */
void pl_conn_send_part(pl_conn *c, pl_rbuf *b, size_t off, size_t len) {
    if (c->closing || len == 0 || !queue_room(c, len)) return;
    const pl_qent *t = c->qlen ? queue_at(c, c->qlen - 1) : NULL;
    int extends = t && t->b == b && (size_t)t->off + t->len == off;
    if ((c->writing || c->corked) && !extends && len < b->len) queue_copy(c, b->data + off, len);
    else queue_push(c, b, off, len, 0);
    schedule_flush(c);
}

void pl_conn_send_copy(pl_conn *c, const void *p, size_t n) {
    if (c->closing || n == 0 || !queue_room(c, n)) return;
    queue_push(c, pl_rbuf_copy(p, n), 0, n, 1);
    schedule_flush(c);
}

/* Drops `bytes` written bytes from the head of the queue. */
static void queue_consume(pl_conn *c, size_t bytes) {
    c->qbytes -= bytes;
    while (bytes > 0 && c->qlen) {
        pl_qent *e = &c->q[c->qhead];
        size_t left = e->len - c->qoff;
        if (bytes < left) {
            c->qoff += (uint32_t)bytes;
            return;
        }
        bytes -= left;
        c->qoff = 0;
        pl_rbuf_unref(&e->b);
        c->qhead = (c->qhead + 1) & (c->qcap - 1);
        c->qlen--;
    }
}

static size_t fill_iov(pl_conn *c, struct iovec *iov, size_t max) {
    size_t k = 0;
    for (uint32_t i = 0; i < c->qlen && k < max; i++, k++) {
        const pl_qent *e = queue_at(c, i);
        size_t off = i == 0 ? c->qoff : 0;
        iov[k].iov_base = e->b->data + e->off + off;
        iov[k].iov_len = e->len - off;
    }
    return k;
}

static void after_queue_change(pl_conn *c) {
    if (c->high && c->qbytes < c->net->low_water) {
        c->high = 0;
        if (!c->closing && c->net->h.on_drain) c->net->h.on_drain(c);
    }
    if (c->closing) conn_finish(c);
}

/* The kernel buffer is full: wait for EPOLLOUT. */
static void wait_writable(pl_conn *c) {
    c->writing = 1;
    sync_events(c, 0);
}

/* Writes the queue until it is empty or the kernel buffer is full (then
 * waits for EPOLLOUT): 0, or -1 at a write error (broken pipe, reset),
 * what failed still queued. */
static int write_queue(pl_conn *c) {
    static struct iovec iov[IOV_MAX_BATCH];
    while (c->qlen) {
        size_t k = fill_iov(c, iov, IOV_MAX_BATCH);
        ssize_t r = writev(c->fd, iov, (int)k);
        if (r < 0) {
            if (errno == EINTR) continue;
            if (errno != EAGAIN) return -1;
            wait_writable(c);
            return 0;
        }
        size_t want = 0;
        for (size_t i = 0; i < k; i++) want += iov[i].iov_len;
        queue_consume(c, (size_t)r);
        if ((size_t)r < want) {            /* kernel buffer full */
            wait_writable(c);
            return 0;
        }
    }
    return 0;
}

/* Writes as much as the kernel takes now; the rest waits for EPOLLOUT. */
static void conn_flush(pl_conn *c) {
    if (c->tls) {
        tls_flush(c);
        return;
    }
    if (c->closed || c->writing) return;
    if (write_queue(c)) {
        queue_consume(c, c->qbytes);       /* broken pipe, reset: drop it */
        conn_destroy(c);
        return;
    }
    after_queue_change(c);
}

/* An error is left queued: the turn's flush meets it again and destroys. */
void pl_conn_write_now(pl_conn *c) {
    if (c->tls || c->closed || c->writing) return;
    (void)write_queue(c);
}

void pl_conn_drop_unsent_units(pl_conn *c, int (*starts)(const uint8_t *p, size_t n)) {
    /* TLS: a write the library must retry may hold bytes of several entries
     * (tls_gather), so nothing is dropped */
    if (c->tls) return;
    uint32_t keep = c->qlen && c->qoff ? 1 : 0;   /* a write began the head */
    for (; starts && keep < c->qlen; keep++) {    /* the rest of its unit */
        pl_qent *e = queue_at(c, keep);
        if (starts(e->b->data + e->off, e->len)) break;
    }
    while (c->qlen > keep) {
        pl_qent *e = queue_at(c, c->qlen - 1);
        c->qbytes -= e->len - (c->qlen == 1 ? c->qoff : 0);
        pl_rbuf_unref(&e->b);
        c->qlen--;
    }
}

void pl_conn_drop_unsent(pl_conn *c) { pl_conn_drop_unsent_units(c, NULL); }

/* ---- TLS I/O -----------------------------------------------------------------
 *
 * Reads: the ciphertext read into read_buf is fed to the connection's TLS
 * state, which hands the plaintext to on_data from plain_buf. Writes:
 * tls_flush encrypts queued plaintext a chunk at a time and writes the
 * ciphertext; what the kernel does not take stays in the TLS state's
 * output until EPOLLOUT, and nothing more is encrypted until it is
 * written. So the queue (and its high-water and slow-consumer accounting)
 * holds plaintext, and at most one chunk of ciphertext per connection
 * waits in memory (plus what reads add meanwhile: handshake, alerts).
 * Invariant: after tls_drain, the TLS output is empty or c->writing is set.
 * A graceful close sends close_notify (tls_flush) before conn_finish's FIN.
 */

static int tls_deliver(void *arg, uint8_t *p, size_t n) {
    pl_conn *c = arg;
    c->net->h.on_data(c, p, n);
    return c->closing;
}

static void tls_read(pl_conn *c, const uint8_t *p, size_t n) {
    int r = pl_tls_conn_feed(c->tls, p, n, plain_buf, sizeof plain_buf, tls_deliver, c);
    if (r == PL_TLS_EPROTO) {
        pl_log(PL_LOG_INFO, c->id, "tls error", "\"reason\":\"%s\"", pl_tls_error());
        pl_conn_close(c, 1);               /* the alert goes out, then FIN */
    } else if (r == PL_TLS_EOF) {
        pl_conn_close(c, 1);
    }
    const uint8_t *o;
    if (!c->closed && pl_tls_conn_out(c->tls, &o)) schedule_flush(c);   /* handshake, tickets */
}

static void tls_fail(pl_conn *c) {
    queue_consume(c, c->qbytes);
    conn_destroy(c);
}

/* Writes the TLS output: 1 when the kernel took all of it; 0 when the rest
 * waits for EPOLLOUT, or the connection was destroyed. */
static int tls_drain(pl_conn *c) {
    const uint8_t *p;
    size_t n = pl_tls_conn_out(c->tls, &p);
    if (!n) return 1;
    ssize_t r = write(c->fd, p, n);
    if (r < 0 && (errno == EAGAIN || errno == EINTR)) r = 0;
    if (r < 0) {
        tls_fail(c);
        return 0;
    }
    pl_tls_conn_out_consume(c->tls, (size_t)r);
    if ((size_t)r == n) return 1;
    wait_writable(c);
    return 0;
}

/* Copies queued bytes from the head (not consumed) into tls_stage, up to
 * its size; returns how many. */
static size_t tls_gather(pl_conn *c) {
    size_t n = 0;
    for (uint32_t i = 0; i < c->qlen && n < sizeof tls_stage; i++) {
        const pl_qent *e = queue_at(c, i);
        size_t off = i == 0 ? c->qoff : 0, k = e->len - off;
        if (k > sizeof tls_stage - n) k = sizeof tls_stage - n;
        memcpy(tls_stage + n, e->b->data + e->off + off, k);
        n += k;
    }
    return n;
}

/* Encrypts the queue a chunk at a time: a large head entry directly, many
 * small ones (WebSocket frames) gathered first, so a burst becomes a few
 * full records and one write instead of a record and a write per frame. */
static void tls_flush(pl_conn *c) {
    if (c->closed || c->writing) return;
    pl_tls_conn *t = c->tls;
    int more = tls_drain(c);
    while (more && c->qlen && pl_tls_conn_ready(t)) {
        const pl_qent *e = &c->q[c->qhead];
        size_t left = e->len - c->qoff;
        const uint8_t *p = e->b->data + e->off + c->qoff;
        size_t n = left < TLS_WRITE_CHUNK ? left : TLS_WRITE_CHUNK;
        if (c->qlen > 1 && left < TLS_WRITE_CHUNK / 4) {
            p = tls_stage;
            n = tls_gather(c);
        }
        long r = pl_tls_conn_write(t, p, n);
        if (r < 0) {
            tls_fail(c);
            return;
        }
        if (r == 0) break;
        queue_consume(c, (size_t)r);
        more = tls_drain(c);
    }
    if (more && c->closing && !c->qlen) {
        pl_tls_conn_shutdown(t);
        tls_drain(c);
    }
    after_queue_change(c);
}

static void net_shut(pl_net *n);

/* Before the loop sleeps: each pending connection's queue goes out in one
 * writev, and closed connections are released (on_close). */
static void on_prepare(uv_prepare_t *p) {
    pl_net *n = p->data;
    while (n->flush_head) {
        pl_conn *c = n->flush_head;
        n->flush_head = c->flush_next;
        c->in_flush = 0;
        if (!c->closed) {
            if (!c->corked) conn_flush(c);     /* corked after it was listed: pl_conn_uncork lists it again */
        } else if (!c->released) {
            conn_release(c);
        }
        pl_conn_unref(c);
    }
    if (n->closing == 1 && n->count == 0) net_shut(n);
}

static void shed_log(pl_net *n, int64_t now);

static void on_sweep(uv_timer_t *t) {
    pl_net *n = t->data;
    int64_t now = pl_mono_ms();
    shed_log(n, now);                /* the refusals since the last line */
    for (pl_conn *c = n->all.next, *nx; c != &n->all; c = nx) {
        nx = c->next;
        if (c->corked) {           /* a cork lasts at most two sweeps */
            if (c->cork_aged) pl_conn_uncork(c);
            else c->cork_aged = 1;
        }
        if (c->q && !c->qlen) {    /* an empty ring goes: idle connections keep none */
            free(c->q);
            c->q = NULL;
            c->qhead = c->qcap = 0;
        }
        if (!c->deadline || c->deadline > now || c->closed) continue;
        c->deadline = 0;
        if (c->closing) {
            conn_destroy(c);       /* a graceful close that did not finish */
        } else {
            pl_conn_ref(c);
            n->h.on_timeout(c);
            nx = c->next;          /* the handler may have closed c */
            pl_conn_unref(c);
        }
    }
}

/* Readiness of one connection. An error or hang-up reads (to learn EOF or
 * the error) unless reading is paused: then nothing can come of it. */
static void conn_event(pl_conn *c, uint32_t ev) {
    if (c->closed) return;
    pl_conn_ref(c);
    if (ev & (EPOLLERR | EPOLLHUP)) {
        if (c->paused) {
            queue_consume(c, c->qbytes);
            conn_destroy(c);
            goto out;
        }
        ev |= EPOLLIN | (c->writing ? EPOLLOUT : 0u);
    }
    if ((ev & EPOLLOUT) && c->writing) {
        c->writing = 0;
        conn_flush(c);
    }
    if ((ev & EPOLLIN) && !c->paused && !c->closed) conn_read(c);
    sync_events(c, 1);
out:
    pl_conn_unref(c);
}

static void peer_key(pl_conn *c, const struct sockaddr_storage *peer) {
    c->ip_key = 1;
    if (peer->ss_family == AF_INET) {
        uint32_t a = ntohl(((const struct sockaddr_in *)peer)->sin_addr.s_addr);
        c->ip_key = (int64_t)a + 2;
        c->loopback = (a >> 24) == 127;
    } else if (peer->ss_family == AF_INET6) {
        const struct in6_addr *a6 = &((const struct sockaddr_in6 *)peer)->sin6_addr;
        uint64_t h = 1469598103934665603ULL;         /* FNV-1a of the address */
        for (int i = 0; i < 16; i++) h = (h ^ a6->s6_addr[i]) * 1099511628211ULL;
        c->ip_key = (int64_t)(h | (1ULL << 40));      /* never an IPv4 key    */
        c->loopback = IN6_IS_ADDR_LOOPBACK(a6);
    }
}

static void conn_accepted(pl_net *n, int fd, const struct sockaddr_storage *peer) {
    pl_conn *c = pl_calloc(1, sizeof *c);
    peer_key(c, peer);
    if (n->max_per_ip && (!c->loopback || n->max_per_ip_lo) &&
        (intptr_t)pl_map_get(&n->per_ip, c->ip_key) >= n->max_per_ip) {
        pl_count(&pl_m_conn_refused_ip, 1);
        close(fd);
        free(c);
        return;
    }
    if (n->nodelay != 1) {                 /* Linux: inherited from the listener */
        int v = 0;
        socklen_t vl = sizeof v;
        if (n->nodelay < 0) n->nodelay = getsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &v, &vl) == 0 && v;
        if (!n->nodelay) (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &(int){1}, sizeof(int));
    }
    struct epoll_event e = {.events = EPOLLIN, .data.ptr = c};
    if (epoll_ctl(n->epfd, EPOLL_CTL_ADD, fd, &e) != 0) {
        close(fd);
        free(c);
        return;
    }
    c->fd = fd;
    c->ev_in = 1;
    ip_count(n, c->ip_key, 1);
    c->last_rx = (uint32_t)pl_mono_ms();
    c->id = (uint32_t)++n->next_id;
    c->net = n;
    c->refs = 1;                           /* dropped in conn_release */
    c->next = n->all.next;
    c->prev = &n->all;
    n->all.next->prev = c;
    n->all.next = c;
    n->count++;
    if (n->tls) c->tls = pl_tls_conn_new(n->tls);
    n->h.on_data(c, NULL, 0);               /* lets the upper layer arm timers */
}

/* The "out of file descriptors" line: at most one a second, each saying
 * how many were shed since the one before (the sweep says the last). */
static void shed_log(pl_net *n, int64_t now) {
    int64_t shed;
    if (pl_log_flush(&n->shed_limit, 1000, now, &shed))
        pl_log(PL_LOG_WARN, 0, "out of file descriptors: connections refused", "\"refused\":%lld",
               (long long)shed);
}

/* Out of descriptors: the reserve one is spent to accept and close what
 * waits, so the listener does not stay readable (and the loop busy) until
 * a descriptor frees up. */
static void shed_connects(pl_net *n) {
    if (n->reserve_fd < 0) return;
    close(n->reserve_fd);
    int fd, shed = 0;
    while ((fd = accept4(n->listen_fd, NULL, NULL, SOCK_CLOEXEC)) >= 0) {
        close(fd);
        shed++;
    }
    n->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    pl_count(&pl_m_conn_refused_ip, (uint64_t)shed);
    pl_log_hold(&n->shed_limit, shed);
    shed_log(n, pl_mono_ms());
}

static void net_accept(pl_net *n) {
    for (int i = 0; i < ACCEPTS_PER_EVENT && n->listen_fd >= 0; i++) {
        struct sockaddr_storage peer;
        socklen_t pl = sizeof peer;
        int fd = accept4(n->listen_fd, (struct sockaddr *)&peer, &pl, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            conn_accepted(n, fd, &peer);
            continue;
        }
        if (errno == EINTR || errno == ECONNABORTED) continue;
        if (errno == EMFILE || errno == ENFILE) shed_connects(n);
        return;                            /* EAGAIN: none left */
    }
}

/* Our epoll has events: a bounded number of batches per loop turn (libuv
 * polls epfd level-triggered: what is left comes at the next turn). */
static void on_poll(uv_poll_t *p, int status, int evmask) {
    pl_net *n = p->data;
    for (int round = 0; round < 4; round++) {
        int k = epoll_wait(n->epfd, events, EVENTS_BATCH, 0);
        for (int i = 0; i < k; i++) {
            if (events[i].data.ptr) conn_event(events[i].data.ptr, events[i].events);
            else net_accept(n);
        }
        if (k < EVENTS_BATCH) return;
    }
}

/* host:port, [v6]:port, or name:port (resolved at start, IPv4 first:
 * `localhost` is 127.0.0.1 as in the default). */
static int parse_addr(const char *addr, struct sockaddr_storage *ss) {
    char host[256];
    const char *colon = strrchr(addr, ':');
    if (!colon || colon == addr || !colon[1]) return UV_EINVAL;
    size_t hl = (size_t)(colon - addr);
    if (hl >= sizeof host) return UV_EINVAL;
    memcpy(host, addr, hl);
    host[hl] = '\0';
    /* the port: plain digits (no sign, no blank); a host with a colon
     * must be bracketed ([::1]:8080) */
    long port = 0;
    for (const char *p = colon + 1; *p; p++) {
        if (*p < '0' || *p > '9' || p - colon > 5) return UV_EINVAL;
        port = port * 10 + (*p - '0');
    }
    if (port > 65535 || (host[0] != '[' && strchr(host, ':'))) return UV_EINVAL;
    if (host[0] == '[') {
        size_t l = strlen(host);
        if (l < 2 || host[l - 1] != ']') return UV_EINVAL;
        host[l - 1] = '\0';
        return uv_ip6_addr(host + 1, (int)port, (struct sockaddr_in6 *)ss);
    }
    if (uv_ip4_addr(host, (int)port, (struct sockaddr_in *)ss) == 0) return 0;
    static const int families[] = {AF_INET, AF_UNSPEC};
    for (int i = 0; i < 2; i++) {
        struct addrinfo hints = {.ai_family = families[i], .ai_socktype = SOCK_STREAM}, *res;
        if (getaddrinfo(host, NULL, &hints, &res) != 0) continue;
        memset(ss, 0, sizeof *ss);
        memcpy(ss, res->ai_addr, res->ai_addrlen);
        if (ss->ss_family == AF_INET6) ((struct sockaddr_in6 *)ss)->sin6_port = htons((uint16_t)port);
        else ((struct sockaddr_in *)ss)->sin_port = htons((uint16_t)port);
        freeaddrinfo(res);
        return 0;
    }
    return UV_EAI_NONAME;
}

int pl_net_check_addr(const char *addr) {
    struct sockaddr_storage ss;
    return parse_addr(addr, &ss);
}

/* A listening socket on ss: the fd, or a negative errno. */
static int listen_on(const struct sockaddr_storage *ss) {
    int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -errno;
    int one = 1, zero = 0;
    socklen_t sl = sizeof(struct sockaddr_in);
    (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);   /* the accepted inherit it */
    if (ss->ss_family == AF_INET6) {            /* dual stack, as libuv binds */
        (void)setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
        sl = sizeof(struct sockaddr_in6);
    }
    if (bind(fd, (const struct sockaddr *)ss, sl) != 0 || listen(fd, 4096) != 0) {
        int e = -errno;
        close(fd);
        return e;
    }
    return fd;
}

int pl_net_listen(uv_loop_t *loop, const char *addr, const pl_net_handler *h,
                  void *ud, pl_net **out) {
    struct sockaddr_storage ss;
    int r = parse_addr(addr, &ss);
    if (r) return r;
    int lfd = listen_on(&ss);
    if (lfd < 0) return lfd;
    int epfd = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event e = {.events = EPOLLIN, .data.ptr = NULL};
    if (epfd < 0 || epoll_ctl(epfd, EPOLL_CTL_ADD, lfd, &e) != 0) {
        r = -errno;
        if (epfd >= 0) close(epfd);
        close(lfd);
        return r;
    }
    pl_net *n = pl_calloc(1, sizeof *n);
    n->loop = loop;
    n->h = *h;
    n->ud = ud;
    n->all.next = n->all.prev = &n->all;
    n->epfd = epfd;
    n->listen_fd = lfd;
    n->nodelay = -1;
    n->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    n->high_water = 256 * 1024;
    n->low_water = 64 * 1024;
    uv_poll_init(loop, &n->poller, epfd);
    n->poller.data = n;
    uv_poll_start(&n->poller, UV_READABLE, on_poll);
    uv_prepare_init(loop, &n->flusher);
    n->flusher.data = n;
    uv_prepare_start(&n->flusher, on_prepare);
    uv_timer_init(loop, &n->sweeper);
    n->sweeper.data = n;
    uv_timer_start(&n->sweeper, on_sweep, 250, 250);
    *out = n;
    return 0;
}

int pl_net_port(pl_net *n) {
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (getsockname(n->listen_fd, (struct sockaddr *)&ss, &sl) != 0) return -1;
    return ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                          : ((struct sockaddr_in *)&ss)->sin_port);
}

void pl_net_set_max_per_ip(pl_net *n, int cap, int loopback_too) {
    n->max_per_ip = cap;
    n->max_per_ip_lo = loopback_too;
}

void pl_net_set_tls(pl_net *n, pl_tls *t) { n->tls = t; }

void pl_net_set_queue_marks(pl_net *n, size_t high, size_t low) {
    n->high_water = high;
    n->low_water = low;
}

void pl_net_queue_stats(pl_net *n, uint64_t *total, uint64_t *max) {
    *total = *max = 0;
    for (pl_conn *c = n->all.next; c != &n->all; c = c->next) {
        *total += c->qbytes;
        if (c->qbytes > *max) *max = c->qbytes;
    }
}

void pl_net_stop_accepting(pl_net *n) {
    if (n->listen_fd < 0) return;
    epoll_ctl(n->epfd, EPOLL_CTL_DEL, n->listen_fd, NULL);
    close(n->listen_fd);
    n->listen_fd = -1;
}

void pl_net_each(pl_net *n, void (*fn)(pl_conn *c, void *arg), void *arg) {
    for (pl_conn *c = n->all.next, *nx; c != &n->all; c = nx) {
        nx = c->next;
        if (!c->closed) fn(c, arg);
    }
}

static void net_free(pl_net *n) {
    close(n->epfd);
    if (n->reserve_fd >= 0) close(n->reserve_fd);
    pl_map_release(&n->per_ip);
    free(n);
}

static void on_net_handle_closed(uv_handle_t *h) {
    pl_net *n = h->data;
    if (--n->handles_open == 0) net_free(n);
}

/* The last connection is released: the loop's handles go, then n. */
static void net_shut(pl_net *n) {
    n->closing = 2;
    n->handles_open = 3;
    uv_close((uv_handle_t *)&n->poller, on_net_handle_closed);
    uv_close((uv_handle_t *)&n->flusher, on_net_handle_closed);
    uv_close((uv_handle_t *)&n->sweeper, on_net_handle_closed);
}

/* Queued bytes get one last write; every connection is closed now and
 * released (on_close) at the next loop turn, then n is freed. */
void pl_net_close(pl_net *n) {
    pl_net_stop_accepting(n);
    n->closing = 1;
    for (pl_conn *c = n->all.next, *nx; c != &n->all; c = nx) {
        nx = c->next;
        if (!c->closed) conn_flush(c);
        conn_destroy(c);
    }
}
