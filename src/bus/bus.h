/* bus.h — everything that crosses nodes: committed events, conversation
 * heads, membership joins, login revocations, typing, receipts, presence
 * and shared rate limits.
 *
 * Owns: the contract between chat/ and a transport. The embedded mode's
 * local bus (bus_local.c) hands everything straight back to this process;
 * the Redis bus (bus_redis.c, cluster mode) publishes on Redis channels and
 * hands what other nodes published to the same handlers.
 * Does not own: which sessions get what (chat/), storage (store/).
 *
 * Delivery guarantees (what chat/ may and may not assume):
 *   1. Publishing hands the message to this node's own handlers first,
 *      synchronously, then to the other nodes. Other nodes get it at most
 *      once, possibly late, in publish order per publishing node only.
 *   2. Events may therefore arrive at a node duplicated, out of seq order
 *      or not at all. chat/ orders them by seq per conversation, drops what
 *      it has seen and reads gaps from the store; a `head` says "events up
 *      to seq exist" so that the last event of a quiet conversation is never
 *      stranded (pitfalls: Redis pub/sub is at most once).
 *   3. When the transport may have lost messages for this node (it lost its
 *      subscription connection, or fell behind), it calls `resync` once it
 *      is connected and subscribed again: chat/ then compares every live
 *      conversation's head and every local user's memberships with the
 *      store. Losing the transport costs latency, never a message.
 *   4. Events are published only after they are durable (store job done),
 *      exactly once per commit, from one place (chat/'s commit hook). A
 *      publish the transport could not hand over is retried as a `head` of
 *      its conversation when it reconnects; `outbox_acked` reports, in
 *      order, the store batches (pl_job.out_batch) all of whose events were
 *      handed over, so the store can forget them (PL_JOB_OUTBOX_ACK).
 *   5. Ephemeral messages (typing, receipts, presence) are best effort: they
 *      may be lost and are never retried.
 */
#ifndef PL_BUS_H
#define PL_BUS_H

#include <stddef.h>
#include <stdint.h>

#include "../store/store.h"

typedef struct pl_bus pl_bus;

/* A receipt cursor moved (PL_JOB_RECEIPT's outputs). */
typedef struct pl_bus_receipt {
    int64_t conv, user;
    int64_t delivered, read;  /* the user's cursors now                       */
    int64_t unread;           /* the user's unread count now (own sessions)   */
    int64_t members;          /* the conversation's member count              */
    int64_t peer;             /* author of the message read onto, or 0        */
    int64_t unread_mentions;  /* the user's unread mentions now; -1: unknown
                               * (from a node of a version before it)       */
} pl_bus_receipt;

/* A user's presence as one node sees it (merged over that node's sessions). */
typedef struct pl_bus_presence {
    int64_t        user;
    int            node;          /* who says so                              */
    int            status;        /* 0 offline, 1 away, 2 online              */
    int64_t        last_active;   /* wall ms                                  */
    int64_t        expires;       /* wall ms after which this view is stale   */
    int            refresh;       /* 1: re-published unchanged (presence.c)   */
    const int64_t *convs;         /* the user's conversations (borrowed)      */
    size_t         nconvs;
} pl_bus_presence;

/* Handlers, all called on the loop thread; pointers are borrowed for the
 * call. */
typedef struct pl_bus_handlers {
    void (*event)(void *ud, const pl_event *ev);
    void (*head)(void *ud, int64_t conv, int64_t seq);
    void (*join)(void *ud, int64_t user, int64_t conv, int64_t seq);
    void (*revoke)(void *ud, int64_t user, int64_t login);
    void (*typing)(void *ud, int64_t conv, int64_t user, int start, int origin_node);
    /* a block set (1) or lifted (0) the flag of direct conversation conv */
    void (*conv_blocked)(void *ud, int64_t conv, int blocked);
    /* some node's purge erased messages without an event (every node,
     * this one included; a publish that failed is sent again, and a node
     * whose subscription dropped gets a resync) */
    void (*erased)(void *ud);
    void (*receipt)(void *ud, const pl_bus_receipt *r);
    void (*presence)(void *ud, const pl_bus_presence *p);
    void (*resync)(void *ud);
    /* the subscription subscribe_conv/subscribe_user asked for is active:
     * whatever is published from now on reaches this node (chat/ then reads
     * what may have been published before: subscribe, then read). Called
     * once per subscribe call that turned a subscription on (possibly inside
     * it, for the local bus), and again for every subscription after a
     * reconnect, before `resync`. */
    void (*conv_ready)(void *ud, int64_t conv);
    void (*user_ready)(void *ud, int64_t user);
    /* every batch up to `batch` was handed over (guarantee 4) */
    void (*outbox_acked)(void *ud, int64_t batch);
    /* end-to-end encryption: a device of user holds only count one-time
     * prekeys (ephemeral, guarantee 5; may be NULL) */
    void (*keys_low)(void *ud, int64_t user, int64_t device, int64_t count);
    void *ud;
} pl_bus_handlers;

/* Answer to rate_take: 0 admitted, else the wait in ms and which limit. */
typedef void (*pl_bus_rate_cb)(void *arg, int64_t wait_ms, const char *scope);
/* Answer to presence_get: views of the asked users from every node that
 * still has a fresh one (n may be 0). */
typedef void (*pl_bus_presence_cb)(void *arg, const pl_bus_presence *views, size_t n);

typedef struct pl_bus_ops {
    const char *name;
    void (*publish_event)(pl_bus *b, const pl_event *ev, int64_t batch);
    void (*publish_head)(pl_bus *b, int64_t conv, int64_t seq);
    void (*publish_join)(pl_bus *b, int64_t user, int64_t conv, int64_t seq);
    void (*publish_revoke)(pl_bus *b, int64_t user, int64_t login);
    void (*publish_typing)(pl_bus *b, int64_t conv, int64_t user, int start);
    /* to the nodes subscribed to conv, this one included (ephemeral) */
    void (*publish_conv_blocked)(pl_bus *b, int64_t conv, int blocked);
    /* to every node, this one included; re-sent when the publish failed
     * (as a join): handlers.erased */
    void (*publish_erased)(pl_bus *b);
    void (*publish_receipt)(pl_bus *b, const pl_bus_receipt *r);
    /* stores p as this node's view of p->user (kept until p->expires) and
     * announces it to every node (including this one) */
    void (*publish_presence)(pl_bus *b, const pl_bus_presence *p);
    /* to the nodes subscribed to user (ephemeral; see handlers.keys_low) */
    void (*publish_keys_low)(pl_bus *b, int64_t user, int64_t device, int64_t count);
    /* this node wants (on) or no longer wants (off) a conversation's events,
     * heads, typing and receipts, or a user's joins and revocations */
    void (*subscribe_conv)(pl_bus *b, int64_t conv, int on);
    void (*subscribe_user)(pl_bus *b, int64_t user, int on);
    /* shared token buckets: one send by user into conv, a conversation of
     * workspace ws (a channel's; 0: none, and no workspace bucket is
     * touched), rates per second and bursts as in the configuration (0 rate
     * = no limit). cb is always called later, on the loop, never inline. */
    void (*rate_take)(pl_bus *b, int64_t user, int64_t conv, int64_t ws, pl_bus_rate_cb cb, void *arg);
    /* A drain begins: every rate_take not answered yet is answered now,
     * inline, admitted (fail open, as on a timeout), so that the sends
     * waiting on a hung Redis are answered before their connections close.
     * Later rate_takes are answered as usual. NULL: nothing ever waits. */
    void (*rate_answer_now)(pl_bus *b);
    /* every fresh view of these users, from all nodes; cb later, never inline */
    void (*presence_get)(pl_bus *b, const int64_t *users, size_t n, pl_bus_presence_cb cb, void *arg);
    /* 1 while connected (readyz) */
    int  (*healthy)(pl_bus *b);
    /* 1 when node is known to be gone: this node has heard every node's
     * liveness beat for a while and none from node lately (a node killed
     * without closing). 0 when it is alive or when this node cannot tell
     * (not subscribed, or not for long enough). NULL: never gone. */
    int  (*node_gone)(pl_bus *b, int node);
    /* When node's current process started (wall ms, by its own clock, as
     * its liveness beats say), 0 unknown; NULL: never known. A view node
     * published before then is a previous process's, whose sessions are
     * gone (a node restarted with the same id). */
    int64_t (*node_since)(pl_bus *b, int node);
    void (*close)(pl_bus *b);
} pl_bus_ops;

struct pl_bus {
    const pl_bus_ops *ops;
    pl_bus_handlers   h;
    int               node;    /* this node's id                          */
    int               shared;  /* 1 when other nodes exist (cluster mode) */
};

/* The embedded mode's bus: everything goes straight to h. shared is 0:
 * chat/ keeps rate limits and presence in process and never calls
 * rate_take or presence_get on it. */
pl_bus *pl_bus_local_new(const pl_bus_handlers *h, int node);

typedef struct pl_bus_redis_opts {
    const char *url;           /* redis://host:port[/db] or host:port      */
    int         node;
    const char *prefix;        /* key and channel prefix ("" = none)      */
    double      user_rate, user_burst;  /* sends per second per user       */
    double      conv_rate, conv_burst;  /* sends per second per conversation */
    double      ws_rate, ws_burst;      /* sends per second per workspace  */
} pl_bus_redis_opts;

/* At start, before the bus: whether the Redis at url answers (AUTH or
 * PING) within a few seconds, blocking. 0, or -1 with why in err. */
int pl_bus_redis_probe(const char *url, char *err, size_t errlen);

struct uv_loop_s;
/* The Redis bus; connects in the background (healthy() says when). NULL
 * with err set when the options are unusable. */
pl_bus *pl_bus_redis_new(struct uv_loop_s *loop, const pl_bus_redis_opts *o, const pl_bus_handlers *h,
                         char *err, size_t errlen);

static inline void pl_bus_publish_event(pl_bus *b, const pl_event *ev, int64_t batch) { b->ops->publish_event(b, ev, batch); }
static inline void pl_bus_publish_head(pl_bus *b, int64_t c, int64_t s) { b->ops->publish_head(b, c, s); }
static inline void pl_bus_publish_join(pl_bus *b, int64_t u, int64_t c, int64_t s) { b->ops->publish_join(b, u, c, s); }
static inline void pl_bus_publish_revoke(pl_bus *b, int64_t u, int64_t l) { b->ops->publish_revoke(b, u, l); }
static inline void pl_bus_publish_typing(pl_bus *b, int64_t c, int64_t u, int st) { b->ops->publish_typing(b, c, u, st); }
static inline void pl_bus_publish_conv_blocked(pl_bus *b, int64_t c, int bl) { b->ops->publish_conv_blocked(b, c, bl); }
static inline void pl_bus_publish_erased(pl_bus *b) { b->ops->publish_erased(b); }
static inline void pl_bus_publish_keys_low(pl_bus *b, int64_t u, int64_t d, int64_t n) { b->ops->publish_keys_low(b, u, d, n); }
static inline void pl_bus_publish_receipt(pl_bus *b, const pl_bus_receipt *r) { b->ops->publish_receipt(b, r); }
static inline void pl_bus_publish_presence(pl_bus *b, const pl_bus_presence *p) { b->ops->publish_presence(b, p); }
static inline int  pl_bus_node_gone(pl_bus *b, int node) { return b->ops->node_gone ? b->ops->node_gone(b, node) : 0; }
static inline int64_t pl_bus_node_since(pl_bus *b, int node) {
    return b->ops->node_since ? b->ops->node_since(b, node) : 0;
}
static inline void pl_bus_subscribe_conv(pl_bus *b, int64_t c, int on) { b->ops->subscribe_conv(b, c, on); }
static inline void pl_bus_subscribe_user(pl_bus *b, int64_t u, int on) { b->ops->subscribe_user(b, u, on); }
static inline void pl_bus_rate_take(pl_bus *b, int64_t u, int64_t c, int64_t ws, pl_bus_rate_cb cb, void *a) {
    b->ops->rate_take(b, u, c, ws, cb, a);
}
static inline void pl_bus_rate_answer_now(pl_bus *b) {
    if (b->ops->rate_answer_now) b->ops->rate_answer_now(b);
}
static inline void pl_bus_presence_get(pl_bus *b, const int64_t *u, size_t n, pl_bus_presence_cb cb, void *a) { b->ops->presence_get(b, u, n, cb, a); }
static inline int  pl_bus_healthy(pl_bus *b) { return b->ops->healthy(b); }
void pl_bus_close(pl_bus **b);

#endif
