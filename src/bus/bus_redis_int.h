/* bus_redis_int.h — what the Redis bus's files share (private to src/bus/;
 * the design note is at the top of bus_redis.c).
 *
 *   bus_redis.c      lifecycle, connections, liveness, shared helpers
 *   bus_redis_pub.c  publishing: pending heads, retries, outbox acks
 *   bus_redis_sub.c  subscriptions and what arrives on them
 *   bus_redis_req.c  Redis-side state: rate buckets, presence; scripts
 */
#ifndef PL_BUS_REDIS_INT_H
#define PL_BUS_REDIS_INT_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "../core/alloc.h"
#include "../core/buf.h"
#include "../core/log.h"
#include "../core/map.h"
#include "bus.h"
#include "redis_conn.h"

#define TICK_MS              1000
#define STALL_TICKS          10          /* cmd: ticks without a reply        */
#define UNHEALTHY_MS         2000        /* cmd: no reply this long: unhealthy */
#define BEAT_LAG_MS          10000       /* sub: heartbeat not received        */
#define NODE_GONE_MS         3000        /* no liveness beat from a node: gone */
#define NODE_OWN_BEAT_MS     2500        /* ... while this node's own came back */
#define NODE_IDS             1024        /* node ids 0..1023 (--node-id)       */
#define PUB_BYTES_MAX        (64u << 20) /* unanswered publish payloads       */
#define RETRY_MAX            65536       /* joins/revocations kept for retry  */
#define SUB_CHUNK            1000        /* channels per SUBSCRIBE command    */
#define RATE_TIMEOUT_MS      1000
#define PGET_TIMEOUT_MS      2000
#define PRESENCE_MARGIN_MS   60000
#define PREFIX_MAX           64
#define LOG_EVERY_MS         10000
#define NAME_MAX_LEN         (PREFIX_MAX + 32)

enum { S_RATE, S_PRES, S_COUNT };

typedef struct script {
    const char           *src;
    char                  sha[41];    /* "" until SCRIPT LOAD answered     */
    int                   loading;    /* a SCRIPT LOAD is in flight        */
    struct pl_bus_redis  *b;
} script;

enum { PUB_EVENT, PUB_HEAD, PUB_FLUSH, PUB_JOIN, PUB_REVOKE, PUB_ERASED, PUB_EPHEMERAL };

typedef struct pub_ent {          /* one PUBLISH awaiting its reply           */
    int64_t  a, b, c;             /* EVENT conv,seq,batch; HEAD/FLUSH conv,seq;
                                   * JOIN user,conv,seq; REVOKE user,login;
                                   * ERASED none                              */
    uint32_t bytes;               /* payload size (PUB_BYTES_MAX)             */
    uint8_t  kind;                /* PUB_*                                    */
} pub_ent;

typedef struct batch_rec {        /* a store batch (or merged failed ones)   */
    int64_t  batch;               /* highest batch id it stands for          */
    uint32_t remaining;           /* its event publishes not yet resolved    */
    uint32_t failed;              /* its publishes that failed (note 5)      */
} batch_rec;

typedef struct ring {             /* growable FIFO of fixed-size elements    */
    char  *buf;
    size_t esz, cap, head, len;   /* cap a power of two                      */
} ring;

typedef struct chan {             /* a c:<conv> or u:<user> channel          */
    int64_t id;
    char    kind;                 /* 'c' or 'u'                              */
    uint8_t want;                 /* chat/ wants it                          */
    uint8_t have;                 /* Redis confirmed SUBSCRIBE, no UNSUBSCRIBE since */
    uint8_t busy;                 /* an (UN)SUBSCRIBE is in flight           */
    uint8_t notify;               /* call *_ready at the next confirmation   */
    uint8_t round;                /* part of the resubscription round        */
} chan;

enum { OP_RATE, OP_PGET };

typedef struct op {               /* a rate_take or presence_get             */
    struct op          *prev, *next;  /* live list: not answered yet       */
    struct op          *qnext;        /* done queue: complete, to answer    */
    struct pl_bus_redis *b;
    int                 type;         /* OP_*                               */
    int                 refs;         /* hiredis callbacks still to come    */
    int                 complete;     /* result final (queued)              */
    int                 answered;     /* callback called (off the live list) */
    int64_t             t0;           /* mono ms, for the timeouts          */
    void               *arg;
    /* OP_RATE */
    pl_bus_rate_cb      rcb;
    int64_t             user, conv, ws, wait;
    const char         *scope;
    /* OP_PGET */
    pl_bus_presence_cb  pcb;
    int64_t            *users;
    size_t              nusers, next_user;
    pl_bus_presence    *views;
    size_t              nviews, cap;
} op;

typedef struct pl_bus_redis {
    pl_bus          base;             /* first: pl_bus * <-> pl_bus_redis *  */
    uv_loop_t      *loop;
    pl_redis_addr   addr;
    char            prefix[PREFIX_MAX + 1];
    size_t          plen;
    double          urate, uburst, crate, cburst, wrate, wburst;
    pl_rconn        cmd, sub;
    char            cmd_name[32], sub_name[32];  /* CLIENT SETNAME: parley-n<node>-cmd */
    uv_timer_t      tick;
    uv_idle_t       idle;             /* answers the done queue             */
    int             open;             /* handles/connections still closing  */
    int             stopping;         /* close() began: requests answer at once */
    int             closing;          /* close() freed the state: callbacks no-op */

    /* publishing */
    pl_sbuf         enc;              /* scratch payload                    */
    ring            pubs;             /* pub_ent, in hiredis reply order    */
    ring            batches;          /* batch_rec, increasing batch        */
    size_t          pub_bytes;        /* payload bytes in pubs              */
    int64_t         acked_upto;       /* last outbox_acked                  */
    pl_map          pending;          /* conv -> int64_t *max seq (note 4)  */
    size_t          flush_inflight;   /* pending heads sent, not replied    */
    pub_ent        *retry;            /* joins/revocations (note 6)         */
    size_t          nretry, retry_cap;
    pl_log_limit    retry_log;        /* "retry queue full", LOG_EVERY_MS   */
    uint64_t        cmd_sent, cmd_replied, cmd_seen;  /* stall detection    */
    int             stall_ticks;
    int64_t         unanswered_since; /* mono ms since cmd's commands got no
                                       * reply (over reconnects: a hung Redis
                                       * accepts them); 0 after any reply    */
    pl_log_limit    err_log;          /* error replies, every LOG_EVERY_MS  */
    script          scripts[S_COUNT];

    /* subscriptions */
    pl_map          convs, users;     /* id -> chan *                       */
    size_t          round_left;       /* round channels not yet confirmed   */
    int             round_active;
    int             sub_ready;        /* round done: healthy                */
    int             need_resync;      /* sub was lost since the last resync */
    uint64_t        sub_gen;          /* sub connections so far             */

    /* heartbeat (liveness of sub) */
    int64_t         beat_sent, beat_acked, beat_rx;
    int64_t         beat_lag_since;   /* mono ms; 0 = not lagging           */
    int             beat_busy;
    uint64_t        beat_gen;         /* sub_gen when the beat was sent     */

    /* other nodes' liveness: every node PUBLISHes a beat on "p" each tick */
    int64_t         sub_ready_at;     /* mono ms the last round completed   */
    int64_t         node_seen[NODE_IDS]; /* mono ms of node i's last beat, 0 never */
    int64_t         node_since[NODE_IDS]; /* node i's start (wall ms) its beats say, 0 unknown */
    int64_t         started;             /* this node's start, wall ms (its beats say it) */

    /* requests */
    op             *live_head, *live_tail;
    op             *done_head, *done_tail;

    /* receiving */
    int64_t        *convs_scratch;
    size_t          convs_cap;
    uint64_t        malformed;        /* messages dropped, in all           */
    pl_log_limit    malformed_log;    /* their line, every LOG_EVERY_MS     */
} pl_bus_redis;

#define B(pb) ((pl_bus_redis *)(pb))

static inline void ring_init(ring *r, size_t esz) { memset(r, 0, sizeof *r); r->esz = esz; }

static inline void *ring_at(ring *r, size_t i) { return r->buf + ((r->head + i) & (r->cap - 1)) * r->esz; }

static inline void *ring_push(ring *r) {
    if (r->len == r->cap) {
        size_t ncap = r->cap ? r->cap * 2 : 64;
        char *nb = pl_malloc(ncap * r->esz);
        for (size_t i = 0; i < r->len; i++) memcpy(nb + i * r->esz, ring_at(r, i), r->esz);
        free(r->buf);
        r->buf = nb;
        r->cap = ncap;
        r->head = 0;
    }
    return ring_at(r, r->len++);
}

static inline void ring_pop(ring *r) {
    r->head = (r->head + 1) & (r->cap - 1);
    r->len--;
}

static inline void ring_release(ring *r) { free(r->buf); ring_init(r, r->esz); }

/* ---- bus_redis.c ------------------------------------------------------------ */

/* prefix + tag + id into out (NAME_MAX_LEN bytes): ("c:", 17) -> "<prefix>c:17";
 * the tag alone when id < 0. Returns the length. */
size_t       pl_bus__redis_name(const pl_bus_redis *b, char *out, const char *tag, int64_t id);
void         pl_bus__redis_log_error(pl_bus_redis *b, const char *what, const redisReply *r);
/* The reply if it is a live one on cmd, else NULL (lost, or of a context
 * that is no longer current); counts replies for the stall check. */
redisReply  *pl_bus__redis_cmd_reply(pl_bus_redis *b, redisAsyncContext *ac, void *r);
/* Queues a command on cmd; -1 (fn never called) when cmd is not up. */
int          pl_bus__redis_cmd_send(pl_bus_redis *b, redisCallbackFn *fn, void *priv, int argc,
                                    const char **argv, const size_t *lens);
static inline void pl_bus__redis_enc_reset(pl_bus_redis *b) { b->enc.len = 0; }

/* ---- bus_redis_pub.c -------------------------------------------------------- */

void pl_bus__redis_event(pl_bus *pb, const pl_event *ev, int64_t batch);
void pl_bus__redis_head(pl_bus *pb, int64_t conv, int64_t seq);
void pl_bus__redis_join(pl_bus *pb, int64_t user, int64_t conv, int64_t seq);
void pl_bus__redis_revoke(pl_bus *pb, int64_t user, int64_t login);
void pl_bus__redis_keys_low(pl_bus *pb, int64_t user, int64_t device, int64_t count);
void pl_bus__redis_typing(pl_bus *pb, int64_t conv, int64_t user, int start);
void pl_bus__redis_conv_blocked(pl_bus *pb, int64_t conv, int blocked);
void pl_bus__redis_erased(pl_bus *pb);
void pl_bus__redis_receipt(pl_bus *pb, const pl_bus_receipt *r);
/* PUBLISHes b->enc on prefix+tag+id, tracked as e (notes 4-7) */
void pl_bus__redis_pub_send(pl_bus_redis *b, const char *tag, int64_t id, pub_ent *e);
/* publishes the pending heads and queued joins/revocations */
void pl_bus__redis_flush(pl_bus_redis *b);
void pl_bus__redis_pub_release(pl_bus_redis *b);

/* ---- bus_redis_sub.c -------------------------------------------------------- */

void pl_bus__redis_sub_conv(pl_bus *pb, int64_t conv, int on);
void pl_bus__redis_sub_user(pl_bus *pb, int64_t user, int on);
void pl_bus__redis_sub_up(void *ud);        /* pl_rconn up/down of sub */
void pl_bus__redis_sub_down(void *ud);
void pl_bus__redis_sub_release(pl_bus_redis *b);
void pl_bus__redis_beat_rx(pl_bus_redis *b, int64_t n);  /* own heartbeat n arrived */
int  pl_bus__redis_node_gone(pl_bus *pb, int node);       /* bus.h node_gone */
int64_t pl_bus__redis_node_since(pl_bus *pb, int node);  /* bus.h node_since */

/* ---- bus_redis_req.c -------------------------------------------------------- */

void pl_bus__redis_presence(pl_bus *pb, const pl_bus_presence *p);
void pl_bus__redis_rate(pl_bus *pb, int64_t user, int64_t conv, int64_t ws, pl_bus_rate_cb cb, void *arg);
void pl_bus__redis_rate_answer_now(pl_bus *pb);
void pl_bus__redis_presence_get(pl_bus *pb, const int64_t *users, size_t n, pl_bus_presence_cb cb, void *arg);
void pl_bus__redis_scripts_init(pl_bus_redis *b);
void pl_bus__redis_scripts_load(pl_bus_redis *b);   /* at every cmd connect */
void pl_bus__redis_req_tick(pl_bus_redis *b, int64_t now);  /* timeouts */
void pl_bus__redis_req_close(pl_bus_redis *b);      /* answers every request */
void pl_bus__redis_idle_cb(uv_idle_t *h);           /* answers the done queue */

#endif
