/* flow.c — flow control: a conversation whose fan-out falls behind pushes
 * back on its senders by holding their acks (flow.h).
 *
 * Owns: each stream's pushback state (chat_conv.flow_*), the held acks
 * (per connection, in order) and the refusals of senders that do not wait
 * for their acks. Does not own: what lags (deliver.c moves sent_seq, the
 * network layer sets conn->high) or how a send is stored (send.c).
 *
 * ---- Design note ------------------------------------------------------------
 *
 * Without it the server acknowledged sends as fast as it could commit them,
 * whatever its fan-out could deliver: the surplus piled up in subscriptions
 * catching up from the store and in write queues, and delivery latency grew
 * without bound while senders kept getting acks. Closed-loop senders (every
 * client: they wait for `sent` before they count a message as sent, and
 * keep a bounded number in flight) slow down when their acks slow down, so
 * holding acks bounds what the conversation owes its readers.
 *
 * Lag. Of the subscriptions of stream cv whose connections are open, at a
 * bound of b events:
 *   owed(b)    those the server itself owes b or more events: held (the
 *              handshake hold) or catching up from the store, behind the
 *              head by >= b, and not waiting for their own queue to drain;
 *   lagging(b) those behind by >= b for any reason, or whose write queue is
 *              above the high-water mark (delivered to the queue, not yet
 *              read by the client: the reader's doing).
 * need(cv) = max(2, ceil(--flow-share % of cv's open subscriptions)).
 *
 *       owed(L) >= 2  or  lagging(L) >= need
 *     OFF ----------------------------------> ON    (flow_engaged, conv_eval)
 *      ^                                      |
 *      `--------------------------------------'
 *       owed(L/2) < 2  and  lagging(L/2) < need
 *
 * with L = --flow-lag events (0: flow control off). Catch-up work the
 * server owes engages at two subscriptions, because the store is read once
 * per subscription and that work competes with new sends for the same
 * CPU: without pushback a few catching-up members never reach the head (the
 * measured failure of issue 11). Lag that readers cause engages only at
 * --flow-share (a percentile of the conversation's readers). A stream is
 * evaluated (conv_eval) at most once per loop turn (flow_turn ends a turn):
 * when a send to it completes (flow_ack) and, while acks are held, each
 * turn and every FLOW_TICK_MS (release).
 *
 * Invariants:
 *   1. An ack is sent only after its send committed (send.c calls
 *      flow_ack from the completion), exactly once: it is either sent at
 *      once or held in exactly one connection's queue until released,
 *      dropped only with its closed connection (nobody to tell).
 *   2. Acks of one connection leave in the order they were given to
 *      flow_ack: once one is held, every later one queues behind it.
 *   3. A single lagging subscription never engages a stream (both rules
 *      need two), and readers that do not read engage it only when they
 *      are --flow-share of its readers: one slow reader cannot throttle a
 *      conversation; it is handled by the slow-consumer contract alone
 *      (session.c).
 *   4. Sender latency is bounded: an ack is held at most FLOW_HOLD_MAX_MS,
 *      and a connection pushed back on (its conversation engaged, or an ack
 *      of it held) that is owed FLOW_CONN_HELD_MAX acks (held, or of sends
 *      admitted and still being stored: a burst arrives before any of its
 *      acks is held) gets its new sends refused (rate_limited, retry_after,
 *      nothing stored) instead of growing the backlog; while the server drains (C.stopping) nothing is
 *      held (the `reconnect` hint comes after every ack).
 *
 * Per node: in cluster mode each node fans out to its own subscriptions
 * and holds the acks of its own senders by its own subscriptions' lag; a
 * node whose readers keep up does not slow its senders down for another
 * node's. REST sends and message actions are not held.
 */
#include "flow.h"

#include <stdlib.h>
#include <string.h>

#include "../core/alloc.h"
#include "../core/clock.h"
#include "../core/metrics.h"
#include "../ws/ws.h"
#include "../ws/wsconn.h"
#include "chat_int.h"

typedef struct held_ack {
    struct held_ack *next;
    int64_t          conv;
    int64_t          since;       /* mono ms it was held                     */
    pl_rbuf         *frame;       /* the `sent` frame                        */
} held_ack;

typedef struct flow_conn {
    pl_conn          *conn;       /* a reference while anything is held      */
    held_ack         *head, *tail;
    uint32_t          n;
    struct flow_conn *next, *prev;   /* connections with held acks          */
} flow_conn;

static struct {
    pl_map      conns;            /* (intptr_t)conn -> flow_conn             */
    pl_map      owed;             /* (intptr_t)conn -> sends admitted, not yet
                                   * settled (a count cast to a pointer)    */
    flow_conn  *list;
    size_t      nheld;
    uint32_t    turn;             /* loop turns (flow_turn)                  */
    uv_check_t  check;
    uv_timer_t  tick;
    int         on;               /* init ran                                */
} F;

static void flow_check(uv_check_t *h);
static void flow_tick(uv_timer_t *t);

void flow_init(void) {
    memset(&F, 0, sizeof F);
    pl_map_init(&F.conns);
    pl_map_init(&F.owed);
    uv_check_init(C.loop, &F.check);
    uv_check_start(&F.check, flow_check);
    uv_unref((uv_handle_t *)&F.check);
    uv_timer_init(C.loop, &F.tick);
    uv_unref((uv_handle_t *)&F.tick);
    F.on = 1;
}

size_t flow_held(void) { return F.nheld; }

/* ---- the state machine --------------------------------------------------------- */

static void conv_eval(chat_conv *cv) {
    int64_t lag = C.cfg->flow_lag;
    cv->flow_turn = F.turn;
    cv->flow_evaluated = 1;
    if (lag <= 0) {
        cv->flow_on = 0;
        return;
    }
    int64_t bound = cv->flow_on ? (lag + 1) / 2 : lag;   /* release below half */
    size_t open = 0, owed = 0, lagging = 0;
    for (sub *x = cv->subs; x; x = x->next) {
        pl_conn *c = x->sess->conn;
        if (!chat_is_open(c)) continue;      /* being closed: not ours to wait for */
        open++;
        int behind = cv->published - x->sent_seq >= bound;
        int slow = c->high || x->sess->waiting_drain;    /* the reader's doing */
        if (behind && !slow && x->state != SUB_LIVE) owed++;
        if (behind || slow) lagging++;
    }
    int share = C.cfg->flow_share > 0 ? C.cfg->flow_share : 1;
    size_t need = (open * (size_t)share + 99) / 100;
    if (need < 2) need = 2;
    cv->flow_on = owed >= 2 || lagging >= need;
}

int flow_engaged(chat_conv *cv) {
    if (!cv || C.cfg->flow_lag <= 0 || C.stopping) return 0;
    if (!cv->flow_evaluated || cv->flow_turn != F.turn) conv_eval(cv);
    return cv->flow_on;
}

static int conv_engaged(int64_t conv) {
    chat_conv *cv = conv_find(conv);
    return cv && !cv->dying && flow_engaged(cv);
}

/* ---- held acks ------------------------------------------------------------------ */

static flow_conn *fc_get(pl_conn *c, int create) {
    flow_conn *fc = pl_map_get(&F.conns, (int64_t)(intptr_t)c);
    if (fc || !create) return fc;
    fc = pl_calloc(1, sizeof *fc);
    fc->conn = c;
    CO.ref(c);
    pl_map_put(&F.conns, (int64_t)(intptr_t)c, fc);
    fc->next = F.list;
    if (F.list) F.list->prev = fc;
    F.list = fc;
    if (!uv_is_active((uv_handle_t *)&F.tick)) uv_timer_start(&F.tick, flow_tick, FLOW_TICK_MS, FLOW_TICK_MS);
    return fc;
}

static void fc_free(flow_conn *fc) {
    while (fc->head) {
        held_ack *a = fc->head;
        fc->head = a->next;
        pl_rbuf_unref(&a->frame);
        free(a);
        F.nheld--;
    }
    pl_map_del(&F.conns, (int64_t)(intptr_t)fc->conn);
    if (fc->prev) fc->prev->next = fc->next;
    else F.list = fc->next;
    if (fc->next) fc->next->prev = fc->prev;
    CO.unref(fc->conn);
    free(fc);
    if (!F.list) uv_timer_stop(&F.tick);
}

static void ack_send(pl_conn *c, pl_rbuf *frame) {
    if (pl_conn_alive(c)) chat_deliver_reply(c, frame);
}

void flow_ack(pl_conn *c, int64_t conv, const char *json, size_t len) {
    pl_rbuf *frame = pl_ws_text_frame(json, len);
    flow_conn *fc = F.on ? fc_get(c, 0) : NULL;
    if (!fc && (!F.on || !pl_conn_alive(c) || !conv_engaged(conv))) {
        ack_send(c, frame);                  /* the common case */
        pl_rbuf_unref(&frame);
        return;
    }
    if (!fc) fc = fc_get(c, 1);
    held_ack *a = pl_calloc(1, sizeof *a);
    a->conv = conv;
    a->since = pl_mono_ms();
    a->frame = frame;
    if (fc->tail) fc->tail->next = a;
    else fc->head = a;
    fc->tail = a;
    fc->n++;
    F.nheld++;
    pl_count(&pl_m_flow_held, 1);
}

/* Sends of c admitted and not yet settled. A burst written without
 * waiting arrives before any of its acks can be held: counting only held
 * acks let 400 sends in 30 ms all through (audit L). */
static intptr_t owed_of(pl_conn *c) { return (intptr_t)pl_map_get(&F.owed, (int64_t)(intptr_t)c); }

int64_t flow_admit(pl_conn *c, int64_t conv) {
    if (!F.on) return 0;
    intptr_t owed = owed_of(c);              /* being stored */
    flow_conn *fc = fc_get(c, 0);
    intptr_t held = fc ? (intptr_t)fc->n : 0; /* stored, ack held */
    if (!C.stopping && owed + held >= FLOW_CONN_HELD_MAX && (held || conv_engaged(conv)))
        return FLOW_RETRY_MS;                /* pushed back on, and owed the most */
    pl_map_put(&F.owed, (int64_t)(intptr_t)c, (void *)(owed + 1));
    return 0;
}

void flow_settled(pl_conn *c) {
    if (!F.on) return;
    intptr_t owed = owed_of(c);
    if (owed <= 1) pl_map_del(&F.owed, (int64_t)(intptr_t)c);
    else pl_map_put(&F.owed, (int64_t)(intptr_t)c, (void *)(owed - 1));
}

/* Sends what may go now, in order, per connection (invariant 2); force:
 * everything (draining). */
static void release(int force) {
    int64_t now = pl_mono_ms();
    for (flow_conn *fc = F.list, *nx; fc; fc = nx) {
        nx = fc->next;
        if (!pl_conn_alive(fc->conn)) {       /* nobody left to tell */
            fc_free(fc);
            continue;
        }
        while (fc->head) {
            held_ack *a = fc->head;
            if (!force && now - a->since < FLOW_HOLD_MAX_MS && conv_engaged(a->conv)) break;
            fc->head = a->next;
            if (!fc->head) fc->tail = NULL;
            fc->n--;
            F.nheld--;
            ack_send(fc->conn, a->frame);
            pl_rbuf_unref(&a->frame);
            free(a);
        }
        if (!fc->head) fc_free(fc);
    }
}

void flow_turn(void) {
    F.turn++;
    if (F.list) release(0);
}

static void flow_check(uv_check_t *h) { flow_turn(); }

static void flow_tick(uv_timer_t *t) {
    F.turn++;                                /* a fresh look, even on a quiet loop */
    if (F.list) release(0);
}

void flow_shutdown(void) {
    if (!F.on) return;
    release(1);
    uv_check_stop(&F.check);
    uv_timer_stop(&F.tick);
}

void flow_free(void) {
    if (!F.on) return;
    while (F.list) fc_free(F.list);
    pl_map_release(&F.conns);
    pl_map_release(&F.owed);
    uv_close((uv_handle_t *)&F.check, NULL);
    uv_close((uv_handle_t *)&F.tick, NULL);
    F.on = 0;
}
