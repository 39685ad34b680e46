/* conn_life.c — a connection's life around the I/O path (conn.c): the
 * listener (address parsing, the listening socket, pl_net_listen),
 * accepting (the per-IP cap and its counts, TCP_NODELAY, shedding
 * connects at EMFILE with its rate-limited log line), closing (the
 * graceful lingering close, destroy, and release with on_close), the
 * deadline sweep, the settings and queries, and pl_net_close. Does not
 * own: reads, the write queues and flushing, TLS I/O (conn.c). See
 * conn.h for the connection states and conn_int.h for what the two
 * files share. */
#include "conn_int.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../core/alloc.h"
#include "../core/clock.h"
#include "../core/log.h"
#include "../core/map.h"
#include "../core/metrics.h"

#define ACCEPTS_PER_EVENT 512       /* a storm's connects per loop turn      */
#define CLOSE_LINGER_MS 5000        /* graceful close waits at most this long
                                       (flush, then the peer's EOF)            */

void *pl_net_data(pl_net *n) { return n->ud; }
size_t pl_net_count(pl_net *n) { return n->count; }
size_t pl_net_active(pl_net *n) { return n->count - n->lingering; }
uv_loop_t *pl_conn_loop(const pl_conn *c) { return c->net->loop; }

int pl_conn_peer(const pl_conn *c, struct sockaddr_storage *ss) {
    socklen_t l = sizeof *ss;
    return c->fd >= 0 && getpeername(c->fd, (struct sockaddr *)ss, &l) == 0 ? 0 : -1;
}

static void ip_count(pl_net *n, int64_t key, int delta) {
    intptr_t v = (intptr_t)pl_map_get(&n->per_ip, key) + delta;
    if (v > 0) pl_map_put(&n->per_ip, key, (void *)v);
    else pl_map_del(&n->per_ip, key);
}

/* on_close, from the flusher (invariant 2): the upper layer lets go. */
void conn_release(pl_conn *c) {
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
void conn_destroy(pl_conn *c) {
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
void conn_finish(pl_conn *c) {
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

void net_accept(pl_net *n) {
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
    uv_poll_start(&n->poller, UV_READABLE, net_on_poll);
    uv_prepare_init(loop, &n->flusher);
    n->flusher.data = n;
    uv_prepare_start(&n->flusher, net_on_prepare);
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
void net_shut(pl_net *n) {
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
