/* conn.c — listener, reads into a shared buffer, queued vectored writes,
 * deferred close, and the once-a-second deadline sweep; for TLS
 * connections, moving ciphertext between the socket and net/tls.c (the
 * "TLS I/O" section). See conn.h. */
#include "conn.h"

#include <stdlib.h>
#include <string.h>

#include "../core/alloc.h"
#include "../core/clock.h"
#include "../core/log.h"
#include "../core/map.h"
#include "../core/metrics.h"

#define READ_BUF_SIZE   (64 * 1024)
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
    uv_tcp_t       listener;
    uv_prepare_t   flusher;        /* flushes pending writes before polling */
    uv_timer_t     sweeper;        /* deadlines, once a second              */
    pl_net_handler h;
    void          *ud;
    pl_conn        all;            /* sentinel of the all-connections list  */
    pl_conn       *flush_head;     /* pending-flush list                    */
    size_t         count;
    size_t         lingering;      /* of count: FIN sent, only discarding input */
    uint64_t       next_id;
    int            accepting;
    int            listener_open;  /* the listener's uv_close has not called back */
    int            closing;
    int            handles_open;   /* for pl_net_close                      */
    int            max_per_ip;     /* 0 = no cap                            */
    size_t         high_water;     /* queue bytes that set conn->high       */
    size_t         low_water;      /* ... and that clear it (on_drain)      */
    pl_map         per_ip;         /* ip_key -> open connections (as intptr) */
    pl_tls        *tls;            /* NULL: plaintext                       */
};

#if defined(__x86_64__)
_Static_assert(sizeof(pl_conn) <= 392, "pl_conn must fit a 400-byte malloc chunk (conn.h)");
#endif

static uint8_t read_buf[READ_BUF_SIZE];   /* shared: the loop is one thread */
static uint8_t plain_buf[READ_BUF_SIZE];  /* TLS: decrypted bytes for on_data */
static uint8_t tls_stage[TLS_WRITE_CHUNK]; /* TLS: small queue entries gathered */

typedef struct write_req {
    uv_write_t req;
    size_t     bytes;              /* queued bytes handed to this write
                                      (libuv keeps its own copy of the iov) */
} write_req;

static void conn_flush(pl_conn *c);
static void net_free(pl_net *n);
static void schedule_flush(pl_conn *c);
static void tls_read(pl_conn *c, const uint8_t *p, size_t n);
static void tls_flush(pl_conn *c);

void *pl_net_data(pl_net *n) { return n->ud; }
size_t pl_net_count(pl_net *n) { return n->count; }
size_t pl_net_active(pl_net *n) { return n->count - n->lingering; }

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

static void on_uv_close(uv_handle_t *h) {
    pl_conn *c = h->data;
    pl_net *n = c->net;
    ip_count(n, c->ip_key, -1);
    c->prev->next = c->next;
    c->next->prev = c->prev;
    n->count--;
    if (c->shut) n->lingering--;
    pl_tls_conn_free(&c->tls);          /* no more I/O: the SSL state goes now */
    n->h.on_close(c);
    pl_conn_unref(c);
    if (n->closing && --n->handles_open == 0) net_free(n);
}

/* Closes the socket now, dropping whatever is queued. */
static void conn_destroy(pl_conn *c) {
    if (c->closed) return;
    c->closing = 1;
    c->closed = 1;
    uv_close((uv_handle_t *)&c->tcp, on_uv_close);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);
static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf);

static void on_shutdown(uv_shutdown_t *req, int status) {
    pl_conn *c = req->data;
    free(req);
    if (status < 0 && !c->closed) conn_destroy(c);
    pl_conn_unref(c);
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
    if (c->peer_eof) {
        conn_destroy(c);
        return;
    }
    uv_shutdown_t *req = pl_malloc(sizeof *req);
    req->data = c;
    c->shut = 1;
    c->net->lingering++;
    pl_conn_ref(c);
    if (uv_shutdown(req, (uv_stream_t *)&c->tcp, on_shutdown) != 0) {
        free(req);
        pl_conn_unref(c);
        conn_destroy(c);
    }
}

void pl_conn_close(pl_conn *c, int graceful) {
    if (c->closed) return;
    if (!graceful) {
        conn_destroy(c);
        return;
    }
    if (!c->closing) {
        c->closing = 1;
        c->deadline = pl_mono_ms() + CLOSE_LINGER_MS;   /* the sweep cuts it off */
        if (c->paused && !c->peer_eof) {                /* read, to discard */
            c->paused = 0;
            uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
        }
    }
    conn_finish(c);
}

void pl_conn_pause(pl_conn *c) {
    if (c->paused || c->closing) return;
    uv_read_stop((uv_stream_t *)&c->tcp);
    c->paused = 1;
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
    buf->base = (char *)read_buf;
    buf->len = sizeof read_buf;
}

void pl_conn_resume(pl_conn *c) {
    if (!c->paused || c->closing) return;
    c->paused = 0;
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
    pl_conn *c = s->data;
    if (nread > 0) {
        if (c->closing) return;
        c->last_rx = pl_mono_ms();
        pl_conn_ref(c);
        if (c->tls) tls_read(c, (const uint8_t *)buf->base, (size_t)nread);
        else c->net->h.on_data(c, (uint8_t *)buf->base, (size_t)nread);
        pl_conn_unref(c);
    } else if (nread < 0) {
        /* EOF: flush what is queued (a half-closed peer may still read),
         * then close. An error: the peer is gone. */
        if (nread != UV_EOF) {
            conn_destroy(c);
            return;
        }
        c->peer_eof = 1;
        uv_read_stop(s);
        c->paused = 1;
        pl_conn_close(c, 1);
    }
}

static void schedule_flush(pl_conn *c) {
    if (c->in_flush) return;
    c->in_flush = 1;
    c->flush_next = c->net->flush_head;
    c->net->flush_head = c;
    pl_conn_ref(c);
}

static pl_qent *queue_at(pl_conn *c, uint32_t i) { return &c->q[(c->qhead + i) & (c->qcap - 1)]; }

/* Appends bytes [off, off + len) of b; takes_ref: the caller's reference
 * passes to the queue (otherwise one is taken when a new entry is made).
 * Bytes that directly follow the last entry's in the same buffer extend
 * it. That is safe while a uv_write is pending: its iovecs were fixed when
 * it was made and on_write consumes exactly their bytes from the head. */
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
    if (c->qbytes > c->net->high_water) c->high = 1;
}

void pl_conn_send(pl_conn *c, pl_rbuf *b) {
    if (c->closing || b->len == 0) return;
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
    if (c->closing || len == 0) return;
    const pl_qent *t = c->qlen ? queue_at(c, c->qlen - 1) : NULL;
    int extends = t && t->b == b && (size_t)t->off + t->len == off;
    if (c->writing && !extends && len < b->len) queue_copy(c, b->data + off, len);
    else queue_push(c, b, off, len, 0);
    schedule_flush(c);
}

void pl_conn_send_copy(pl_conn *c, const void *p, size_t n) {
    if (c->closing || n == 0) return;
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

static size_t fill_iov(pl_conn *c, uv_buf_t *iov, size_t max) {
    size_t k = 0;
    for (uint32_t i = 0; i < c->qlen && k < max; i++, k++) {
        const pl_qent *e = queue_at(c, i);
        size_t off = i == 0 ? c->qoff : 0;
        iov[k] = uv_buf_init((char *)e->b->data + e->off + off, (unsigned)(e->len - off));
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

static void on_write(uv_write_t *req, int status) {
    write_req *w = (write_req *)req;
    pl_conn *c = req->data;
    size_t bytes = w->bytes;
    free(w);
    c->writing = 0;
    c->inflight = 0;
    if (status < 0) {
        /* The peer is gone: nothing queued can be delivered. */
        queue_consume(c, c->qbytes);
        if (!c->closed) conn_destroy(c);
    } else {
        queue_consume(c, bytes);
        after_queue_change(c);
        if (c->qlen && !c->closed) conn_flush(c);
    }
    pl_conn_unref(c);
}

/* Writes as much as the kernel takes now; the rest goes to one uv_write. */
static void conn_flush(pl_conn *c) {
    if (c->tls) {
        tls_flush(c);
        return;
    }
    if (c->closed || c->writing) return;
    uv_buf_t iov[IOV_MAX_BATCH];         /* 16 KiB of the loop's stack */
    while (c->qlen) {
        size_t k = fill_iov(c, iov, IOV_MAX_BATCH);
        int r = uv_try_write((uv_stream_t *)&c->tcp, iov, (unsigned)k);
        if (r == UV_EAGAIN) break;
        if (r < 0) {                   /* broken pipe, reset: drop it */
            queue_consume(c, c->qbytes);
            conn_destroy(c);
            return;
        }
        size_t want = 0;
        for (size_t i = 0; i < k; i++) want += iov[i].len;
        queue_consume(c, (size_t)r);
        if ((size_t)r < want) break;   /* kernel buffer full */
    }
    if (c->qlen) {
        write_req *w = pl_malloc(sizeof *w);
        size_t k = fill_iov(c, iov, IOV_MAX_BATCH);
        w->bytes = 0;
        for (size_t i = 0; i < k; i++) w->bytes += iov[i].len;
        w->req.data = c;
        c->inflight = (uint32_t)k;
        c->writing = 1;
        pl_conn_ref(c);
        int r = uv_write(&w->req, (uv_stream_t *)&c->tcp, iov, (unsigned)k, on_write);
        if (r < 0) {
            free(w);
            c->writing = 0;
            c->inflight = 0;
            pl_conn_unref(c);
            queue_consume(c, c->qbytes);
            conn_destroy(c);
            return;
        }
    }
    after_queue_change(c);
}

/* ---- TLS I/O -----------------------------------------------------------------
 *
 * Reads: the ciphertext read into read_buf is fed to the connection's TLS
 * state, which hands the plaintext to on_data from plain_buf. Writes:
 * tls_flush encrypts queued plaintext a chunk at a time and writes the
 * ciphertext with uv_try_write; what the kernel does not take is detached
 * from the TLS state and handed to one uv_write, and nothing more is
 * encrypted until it completes. So the queue (and its high-water and
 * slow-consumer accounting) holds plaintext, and at most one chunk of
 * ciphertext per connection waits in memory.
 * Invariant: after tls_drain, the TLS output is empty or c->writing is set.
 * A graceful close sends close_notify (tls_flush) before conn_finish's FIN.
 */

typedef struct tls_write_req {
    uv_write_t req;
    uv_buf_t   buf;
    void      *block;              /* the detached output, freed when written */
} tls_write_req;

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

static void on_tls_write(uv_write_t *req, int status) {
    tls_write_req *w = (tls_write_req *)req;
    pl_conn *c = req->data;
    free(w->block);
    free(w);
    c->writing = 0;
    if (status < 0) {
        if (!c->closed) tls_fail(c);
    } else if (!c->closed) {
        tls_flush(c);
    }
    pl_conn_unref(c);
}

/* Writes the TLS output: 1 when the kernel took all of it; 0 when the rest
 * waits on a uv_write, or the connection was destroyed. */
static int tls_drain(pl_conn *c) {
    const uint8_t *p;
    size_t n = pl_tls_conn_out(c->tls, &p);
    if (!n) return 1;
    uv_buf_t b = uv_buf_init((char *)p, (unsigned)n);
    int r = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
    if (r == UV_EAGAIN) r = 0;
    if (r < 0) {
        tls_fail(c);
        return 0;
    }
    pl_tls_conn_out_consume(c->tls, (size_t)r);
    if ((size_t)r == n) return 1;
    tls_write_req *w = pl_malloc(sizeof *w);
    w->block = pl_tls_conn_out_detach(c->tls, &p, &n);
    w->buf = uv_buf_init((char *)p, (unsigned)n);
    w->req.data = c;
    c->writing = 1;
    pl_conn_ref(c);
    if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &w->buf, 1, on_tls_write) < 0) {
        free(w->block);
        free(w);
        c->writing = 0;
        pl_conn_unref(c);
        tls_fail(c);
    }
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

static void on_prepare(uv_prepare_t *p) {
    pl_net *n = p->data;
    while (n->flush_head) {
        pl_conn *c = n->flush_head;
        n->flush_head = c->flush_next;
        c->in_flush = 0;
        conn_flush(c);
        pl_conn_unref(c);
    }
}

static void on_sweep(uv_timer_t *t) {
    pl_net *n = t->data;
    int64_t now = pl_mono_ms();
    for (pl_conn *c = n->all.next, *nx; c != &n->all; c = nx) {
        nx = c->next;
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

/* Closes a just-accepted socket that is never registered (freed by libuv's
 * close callback; no on_close runs). */
static void refuse(pl_conn *c) {
    c->closed = c->closing = 1;
    uv_close((uv_handle_t *)&c->tcp, (uv_close_cb)free);
}

static void peer_key(pl_conn *c) {
    struct sockaddr_storage peer;
    int plen = sizeof peer;
    c->ip_key = 1;
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&peer, &plen) != 0) return;
    if (peer.ss_family == AF_INET) {
        uint32_t a = ntohl(((struct sockaddr_in *)&peer)->sin_addr.s_addr);
        c->ip_key = (int64_t)a + 2;
        c->loopback = (a >> 24) == 127;
    } else if (peer.ss_family == AF_INET6) {
        const struct in6_addr *a6 = &((struct sockaddr_in6 *)&peer)->sin6_addr;
        uint64_t h = 1469598103934665603ULL;         /* FNV-1a of the address */
        for (int i = 0; i < 16; i++) h = (h ^ a6->s6_addr[i]) * 1099511628211ULL;
        c->ip_key = (int64_t)(h | (1ULL << 40));      /* never an IPv4 key    */
        c->loopback = IN6_IS_ADDR_LOOPBACK(a6);
    }
}

static void on_connection(uv_stream_t *server, int status) {
    pl_net *n = server->data;
    if (status < 0) return;
    pl_conn *c = pl_calloc(1, sizeof *c);
    uv_tcp_init(n->loop, &c->tcp);
    c->tcp.data = c;
    if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0 || !n->accepting) {
        refuse(c);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    peer_key(c);
    if (n->max_per_ip && (intptr_t)pl_map_get(&n->per_ip, c->ip_key) >= n->max_per_ip) {
        pl_count(&pl_m_conn_refused_ip, 1);
        refuse(c);
        return;
    }
    ip_count(n, c->ip_key, 1);
    c->last_rx = pl_mono_ms();
    c->id = ++n->next_id;
    c->net = n;
    c->refs = 1;                           /* dropped in on_uv_close */
    c->next = n->all.next;
    c->prev = &n->all;
    n->all.next->prev = c;
    n->all.next = c;
    n->count++;
    c->paused = 1;
    if (n->tls) c->tls = pl_tls_conn_new(n->tls);
    pl_conn_resume(c);
    n->h.on_data(c, NULL, 0);               /* lets the upper layer arm timers */
}

static int parse_addr(const char *addr, struct sockaddr_storage *ss) {
    char host[128];
    const char *colon = strrchr(addr, ':');
    if (!colon || colon == addr) return UV_EINVAL;
    size_t hl = (size_t)(colon - addr);
    if (hl >= sizeof host) return UV_EINVAL;
    memcpy(host, addr, hl);
    host[hl] = '\0';
    int port = atoi(colon + 1);
    if (port < 0 || port > 65535) return UV_EINVAL;
    if (host[0] == '[') {
        size_t l = strlen(host);
        if (l < 2 || host[l - 1] != ']') return UV_EINVAL;
        host[l - 1] = '\0';
        return uv_ip6_addr(host + 1, port, (struct sockaddr_in6 *)ss);
    }
    return uv_ip4_addr(host, port, (struct sockaddr_in *)ss);
}

int pl_net_listen(uv_loop_t *loop, const char *addr, const pl_net_handler *h,
                  void *ud, pl_net **out) {
    struct sockaddr_storage ss;
    int r = parse_addr(addr, &ss);
    if (r) return r;
    pl_net *n = pl_calloc(1, sizeof *n);
    n->loop = loop;
    n->h = *h;
    n->ud = ud;
    n->all.next = n->all.prev = &n->all;
    n->accepting = 1;
    n->listener_open = 1;
    n->high_water = 256 * 1024;
    n->low_water = 64 * 1024;
    uv_tcp_init(loop, &n->listener);
    n->listener.data = n;
    r = uv_tcp_bind(&n->listener, (struct sockaddr *)&ss, 0);
    if (!r) r = uv_listen((uv_stream_t *)&n->listener, 4096, on_connection);
    if (r) {
        uv_close((uv_handle_t *)&n->listener, NULL);
        uv_run(loop, UV_RUN_NOWAIT);
        free(n);
        return r;
    }
    uv_prepare_init(loop, &n->flusher);
    n->flusher.data = n;
    uv_prepare_start(&n->flusher, on_prepare);
    uv_timer_init(loop, &n->sweeper);
    n->sweeper.data = n;
    uv_timer_start(&n->sweeper, on_sweep, 250, 250);
    *out = n;
    return 0;
}

void pl_net_set_max_per_ip(pl_net *n, int cap) { n->max_per_ip = cap; }

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

static void on_net_handle_closed(uv_handle_t *h);

static void on_listener_closed(uv_handle_t *h) {
    pl_net *n = h->data;
    n->listener_open = 0;
    if (n->closing) on_net_handle_closed(h);
}

/* The listener is embedded in n: n is freed only after its close callback
 * (pl_net_close counts it among the handles still closing). */
void pl_net_stop_accepting(pl_net *n) {
    if (!n->accepting) return;
    n->accepting = 0;
    uv_close((uv_handle_t *)&n->listener, on_listener_closed);
}

void pl_net_each(pl_net *n, void (*fn)(pl_conn *c, void *arg), void *arg) {
    for (pl_conn *c = n->all.next, *nx; c != &n->all; c = nx) {
        nx = c->next;
        if (!c->closed) fn(c, arg);
    }
}

static void net_free(pl_net *n) {
    pl_map_release(&n->per_ip);
    free(n);
}

static void on_net_handle_closed(uv_handle_t *h) {
    pl_net *n = h->data;
    if (--n->handles_open == 0) net_free(n);
}

void pl_net_close(pl_net *n) {
    pl_net_stop_accepting(n);
    on_prepare(&n->flusher);
    n->closing = 1;
    /* freed by the last close callback: the flusher, the sweeper, every
     * connection, and the listener if its close has not called back yet */
    n->handles_open = 2 + (int)n->count + n->listener_open;
    for (pl_conn *c = n->all.next, *nx; c != &n->all; c = nx) {
        nx = c->next;
        conn_destroy(c);
    }
    uv_close((uv_handle_t *)&n->flusher, on_net_handle_closed);
    uv_close((uv_handle_t *)&n->sweeper, on_net_handle_closed);
}
