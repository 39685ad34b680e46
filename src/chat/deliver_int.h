/* deliver_int.h — what the deliver*.c files share; only they include it
 * (what the rest of chat/ calls is in chat_int.h, with the design note).
 *
 * Delivery is one module in five files, one concern each:
 *   deliver.c         streams (ordering, gap fills), subscriptions, the
 *                     frame arena, processing an event in order, the bus
 *                     handlers, long-poll watchers, init and shutdown
 *   deliver_sync.c    the read side: catching up (the replay queue),
 *                     `sync` and `history`
 *   deliver_ring.c    recent frames of busy conversations
 *   deliver_mlog.c    the membership log
 *   deliver_checks.c  batched checks against the store (heads, memberships)
 * Each declaration below sits under the file that defines it; state is
 * owned (written) by that file, and the others only read it, except where
 * a comment says otherwise.
 */
#ifndef PL_CHAT_DELIVER_INT_H
#define PL_CHAT_DELIVER_INT_H

#include "chat_int.h"

/* Tiny helpers, static inline: called per frame or per replay step. */
static inline int is_ws_open(pl_conn *c) { return chat_is_open(c); }   /* either transport */

/* The last seq x may be sent now. */
static inline int64_t sub_target(const sub *x) {
    int64_t t = x->conv->published;
    if (x->end_seq && x->end_seq < t) t = x->end_seq;
    return t;
}

/* deliver.c */
pl_rbuf *event_frame(const pl_event *ev);            /* a new frame */
int      deliver_one(sub *x, const pl_event *ev);     /* a replay page's event */
void     conv_head(chat_conv *cv, int64_t seq);
void     conv_maybe_release(chat_conv *cv);
void     sub_caught_up(sub *x);                       /* may free x */
void     join_session(session *s, int64_t conv, int64_t seq);
void     end_session(session *s, chat_conv *cv, int64_t seq);

/* deliver_sync.c */
void     replay_next(sub *x);

/* deliver_ring.c (deliver_init sets both up, deliver_free releases the map) */
#define RING_MIN_SUBS 3            /* subscriptions a ring needs (the ring's note) */
#define RING_LINGER_MS 30000       /* a ring's stream, once nothing follows it */
extern pl_map   deliver_rings;     /* conv id -> frame_ring (busy conversations) */
extern uint32_t ring_min_subs;     /* RING_MIN_SUBS; tests may raise it       */
extern uint32_t ring_linger_ms;    /* RING_LINGER_MS; tests may lower it     */
extern size_t   ring_budget;       /* all rings' bytes at most; tests may lower it */
void     ring_init(void);
void     ring_release(void);
void     ring_free(chat_conv *cv);
int      ring_wanted(const chat_conv *cv);
int      ring_keep(chat_conv *cv);
void     ring_followed(chat_conv *cv);
void     ring_linger_sweep(void);
void     ring_add(chat_conv *cv, const pl_event *ev, pl_rbuf *b, uint32_t off, uint32_t len, int whole);
void     ring_serve(sub *x);

/* deliver_mlog.c */
void     mlog_add(int64_t user, int64_t conv, int64_t seq, int add);

/* deliver_checks.c */
void     verify_add(int64_t conv);
void     changed_add(int64_t conv);
void     reconcile_add(int64_t user);

#endif
