/* conn_int.h — private to net/conn.c and net/conn_life.c: the network
 * layer's state (struct pl_net) and the functions the two share.
 *
 * The connections are one module in two files:
 *   conn.c       the I/O path: the epoll dispatch (net_on_poll), reads,
 *                the write queues, the flush before the loop sleeps
 *                (net_on_prepare), corks, pause and resume, TLS I/O
 *   conn_life.c  the rest of a connection's life and the listener's:
 *                address parsing and the listening socket, accepting
 *                (the per-IP cap, shedding at EMFILE and its log line),
 *                closing (lingering, destroy, release), the deadline
 *                sweep, settings and queries, and pl_net_close
 * Each declaration below sits under the file that defines it.
 */
#ifndef PL_NET_CONN_INT_H
#define PL_NET_CONN_INT_H

#include "../core/log.h"
#include "../core/map.h"
#include "conn.h"

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

/* conn.c */
void conn_flush(pl_conn *c);
void schedule_flush(pl_conn *c);
void sync_events(pl_conn *c, int drop);
void net_on_prepare(uv_prepare_t *p);
void net_on_poll(uv_poll_t *p, int status, int evmask);

/* conn_life.c */
void conn_release(pl_conn *c);
void conn_destroy(pl_conn *c);
void conn_finish(pl_conn *c);
void net_accept(pl_net *n);
void net_shut(pl_net *n);

#endif
