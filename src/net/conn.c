/* conn.c — the connections' I/O path: the epoll dispatch, reads into a
 * shared buffer, queued vectored writes flushed before the loop sleeps,
 * corks, pause and resume; for TLS connections, moving ciphertext between
 * the socket and net/tls.c (the "TLS I/O" section). The listener,
 * accepting, closing, the deadline sweep and teardown are in conn_life.c;
 * struct pl_net is in conn_int.h. See conn.h. */
#include "conn_int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/uio.h>
#include <unistd.h>

#include "../core/alloc.h"
#include "../core/clock.h"
#include "../core/log.h"

#define READ_BUF_SIZE   (64 * 1024)
#define READS_PER_EVENT 4           /* reads of a full buffer per readiness  */
#define EVENTS_BATCH    1024        /* epoll_wait batch                      */
#define IOV_MAX_BATCH   1024        /* entries per vectored write (IOV_MAX):
                                       a fan-out turn queues one frame per
                                       event, often more than 64, and each
                                       writev costs a loopback skb and the
                                       receiver's wakeup (benchmarks.md,
                                       "group fan-out cost per delivery")  */
#define TLS_WRITE_CHUNK (64 * 1024) /* plaintext encrypted per SSL_write       */
#define PART_COPY_MIN   4096        /* a stalled queue's own tail buffer (pl_conn_send_part) */

#if defined(__x86_64__)
_Static_assert(sizeof(pl_conn) <= 128, "pl_conn must fit a 128-byte allocator block (conn.h)");
#endif

static uint8_t read_buf[READ_BUF_SIZE];   /* shared: the loop is one thread */
static uint8_t plain_buf[READ_BUF_SIZE];  /* TLS: decrypted bytes for on_data */
static uint8_t tls_stage[TLS_WRITE_CHUNK]; /* TLS: small queue entries gathered */
static struct epoll_event events[EVENTS_BATCH];

static void tls_read(pl_conn *c, const uint8_t *p, size_t n);
static void tls_flush(pl_conn *c);

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

/* Brings the epoll registration up to what c wants (invariant 3): adds an
 * interest at once; drops one only when `drop` (its event fired). */
void sync_events(pl_conn *c, int drop) {
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

void schedule_flush(pl_conn *c) {
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
void conn_flush(pl_conn *c) {
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

/* Before the loop sleeps: each pending connection's queue goes out in one
 * writev, and closed connections are released (on_close). */
void net_on_prepare(uv_prepare_t *p) {
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

/* Our epoll has events: a bounded number of batches per loop turn (libuv
 * polls epfd level-triggered: what is left comes at the next turn). */
void net_on_poll(uv_poll_t *p, int status, int evmask) {
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
