/* deliver_ring.c — recent frames of busy conversations (the note below).
 *
 * Owns: each ring (deliver_rings, conv id -> frame_ring) and the budget of
 * all of them; keeping a frame as an event is processed (ring_add), serving
 * a catching-up subscription from it (ring_serve), freeing a stream's ring,
 * and every ring when messages were erased without an event (pl_chat_erased);
 * and the lingering of a ring's stream once nothing follows it (ring_keep,
 * ring_followed, ring_linger_sweep, the second note).
 * Not here: when a frame is added (conv_process, deliver.c) or served
 * (replay_next, deliver_sync.c).
 */
#include <stdlib.h>
#include <string.h>

#include "../core/alloc.h"
#include "../core/clock.h"
#include "../core/metrics.h"
#include "chat_int.h"
#include "deliver_int.h"

/* ---- recent frames of busy conversations ---------------------------------
 *
 * A conversation with at least RING_MIN_SUBS subscriptions here (or with a
 * held one: note 4) keeps the
 * frames of its last RING_FRAMES published events, at most RING_SUB_BYTES
 * per subscription (at the most it has had; RING_BYTES at most), all rings
 * together at most RING_TOTAL bytes (the budget: lingering rings give way
 * first, see below; then a ring that would pass it drops its oldest frames,
 * and no new ring starts while it is spent). A
 * subscription catching up whose next seq is among them gets the rest from
 * here, as the live subscriptions got it, instead of another store read.
 * Three subscriptions, not only big groups: when a node's clients all come
 * back at once (a storm), every member of every group read its missed
 * events from the store, one read per member (docs/benchmarks.md "a
 * storm's replays from memory").
 * Without this, in a busy group the members that fell behind each read a
 * page, the stream moved on during the read, and they read again: a read
 * per member per round that never converged while the store was the
 * bottleneck (benchmarks.md "Cluster mode, third session").
 * Invariants:
 *   1. The frames held are those of seqs first .. first + n - 1,
 *      consecutive and all <= published (added in conv_process, in order).
 *   2. A held frame is a message's current form as a replay would send it
 *      (docs/protocol.md: sync replays carry the current form): an edit,
 *      delete, reaction or pin of seq T drops the frames of T and of every
 *      event naming T (a reply's preview, an earlier edit), so a
 *      subscription that reaches a dropped frame reads from the store. A
 *      deleted message's text is not kept here either.
 *      An erasure without an event (retention, a deleted account's
 *      messages: the store's purge) names nothing here: the node whose
 *      purge erased any tells every node (pl_chat_erased, the bus's
 *      `erased`) and each drops all its rings (audit L6: a replay from the
 *      ring gave the text of messages history already showed as
 *      deleted); a node that may have missed that (a bus resync) drops
 *      them too.
 *   3. A message with attachments is held as a hole: its frame carries
 *      signed media URLs that expire (--media-url-ttl), and a replay signs
 *      them afresh (docs/protocol.md "Attachments in messages").
 *   4. A conversation with a subscription held for its session's first
 *      message (a handshake session, deliver_sync.c) keeps a ring too,
 *      however few follow it: if the user is removed during the hold, the
 *      subscription leaves it at the removal and is served what came up to
 *      it from here, as it was then (end_finish, deliver.c). A store read
 *      instead ran after whatever was committed meanwhile: in a cluster,
 *      whose node hears of the removal later, it gave a removed user the
 *      edit made after its removal (audit L5's test, failing now and then).
 *      Such a ring goes at the first event after no subscription is held
 *      and fewer than RING_MIN_SUBS follow, so DMs do not keep rings. */
#define RING_FRAMES    256
#define RING_BYTES     (128 * 1024)
#define RING_SUB_BYTES (8 * 1024)
#define RING_TOTAL     ((size_t)64 * 1024 * 1024)

/* ---- lingering ---------------------------------------------------------------
 *
 * When the last subscription (and watcher, and pin) of a stream with a ring
 * goes, the stream stays RING_LINGER_MS (ring_linger_ms) longer: it keeps
 * following the conversation on the bus, in order, and its ring keeps
 * the frames of what is committed meanwhile. Members coming back within
 * that time (a reconnect storm after a network blip, a node's clients
 * drained to another and back, a phone switching networks) catch up from
 * memory instead of one store read each: in cluster mode a PostgreSQL
 * round trip per member (docs/benchmarks.md "streams that linger").
 * A stream with a ring is processed in order whether or not anything
 * follows it (ordered(), deliver.c), so its frames stay exact (invariant
 * 1 above).
 * Lingering rings are the first to go when the budget is spent: a ring of
 * a followed stream that needs room frees the oldest lingering ring, whose
 * stream is then released at the next sweep (`unheld`). The sweep runs
 * once a second while any stream lingers. Whatever frees a lingering ring
 * ends its lingering the same way: the budget, an erasure (invariant 2:
 * deliver_on_erased frees every ring, so no lingering ring outlives an
 * erasure to replay erased text; audit L6), or the sweep itself, which at
 * the end of the time frees the ring of a stream that a watcher or pin
 * still holds (the stream then follows the head for them without order,
 * invariant 5 of chat_int.h). A ring kept for a hold (note 4) never
 * lingers.
 */
typedef struct frame_ring {
    int64_t  first;               /* seq of fr[head]                         */
    uint32_t head, n;
    size_t   bytes;
    size_t   cap;                 /* its bytes at most: grows with nsubs     */
    chat_conv *cv;                /* its stream                              */
    int64_t  idle_since;          /* mono ms nothing followed it any more;
                                     0 while followed                       */
    struct frame_ring *lnext, *lprev;   /* the lingering list, oldest first */
    uint8_t  linked;              /* on that list                            */
    uint8_t  for_hold;            /* started for a held subscription (note 4) */
    pl_rbuf *fr[RING_FRAMES];     /* NULL: dropped (invariant 2)             */
    int64_t  ref[RING_FRAMES];    /* the event's ref: a reply's parent, an action's target */
} frame_ring;

pl_map deliver_rings;              /* conv id -> frame_ring (busy conversations) */
uint32_t ring_min_subs;            /* RING_MIN_SUBS; tests may raise it       */
uint32_t ring_linger_ms;           /* RING_LINGER_MS; tests may lower it     */
size_t   ring_budget;              /* RING_TOTAL; tests may lower it          */
static size_t ring_total;           /* every ring's struct and frames (the budget) */
static frame_ring *linger_head, *linger_tail;
static int64_t *unheld;             /* streams whose lingering ring was freed */
static size_t nunheld, capunheld;

void ring_init(void) {
    ring_min_subs = RING_MIN_SUBS;
    ring_linger_ms = RING_LINGER_MS;
    ring_budget = RING_TOTAL;
    linger_head = linger_tail = NULL;
}

static void linger_unlink(frame_ring *r) {
    if (!r->linked) return;
    if (r->lprev) r->lprev->lnext = r->lnext;
    else linger_head = r->lnext;
    if (r->lnext) r->lnext->lprev = r->lprev;
    else linger_tail = r->lprev;
    r->lnext = r->lprev = NULL;
    r->linked = 0;
}

static void linger_sweep_cb(uv_timer_t *t) { ring_linger_sweep(); }

/* The sweep at the next loop turn (soon) or within a second, then every
 * second. */
static void linger_arm(int soon) {
    if (!soon && uv_is_active((uv_handle_t *)&C.linger_timer)) return;
    uv_timer_start(&C.linger_timer, linger_sweep_cb, soon ? 0 : 1000, 1000);
}

static void ring_drop(frame_ring *r, uint32_t i) {
    if (!r->fr[i]) return;
    r->bytes -= r->fr[i]->len;
    ring_total -= r->fr[i]->len;
    pl_rbuf_unref(&r->fr[i]);
}

static void ring_drop_oldest(frame_ring *r) {
    ring_drop(r, r->head);
    r->head = (r->head + 1) % RING_FRAMES;
    r->n--;
    r->first++;
}

void deliver_ring_min_subs(uint32_t n) { ring_min_subs = n; }

/* Frees cv's ring. A lingering stream (its ring on the list) is then held
 * by nothing: it is released at the next sweep (`unheld`), not here, since
 * the caller may still use cv. */
void ring_free(chat_conv *cv) {
    if (!cv->has_ring) return;
    frame_ring *r = pl_map_get(&deliver_rings, cv->id);
    int lingered = r && r->linked;
    while (r && r->n) ring_drop_oldest(r);
    if (r) {
        linger_unlink(r);
        ring_total -= sizeof *r;
    }
    free(r);
    pl_map_del(&deliver_rings, cv->id);
    cv->has_ring = 0;
    if (lingered && !C.stopping) {
        if (nunheld == capunheld) {
            capunheld = capunheld ? capunheld * 2 : 16;
            unheld = pl_realloc(unheld, capunheld * sizeof *unheld);
        }
        unheld[nunheld++] = cv->id;
        linger_arm(1);
    }
}

/* A held subscription of cv (note 4); none when a test raised
 * ring_min_subs to have its members catch up from the store. */
static int has_held(const chat_conv *cv) {
    if (ring_min_subs > RING_MIN_SUBS) return 0;
    for (const sub *x = cv->subs; x; x = x->next)
        if (x->state == SUB_HELD) return 1;
    return 0;
}

/* Whether cv's events are to be kept: it has a ring, or should start one.
 * (Below RING_MIN_SUBS the list it scans is that short.) */
int ring_wanted(const chat_conv *cv) {
    return cv->has_ring || cv->nsubs >= ring_min_subs || has_held(cv);
}

/* Makes room for `need` more bytes in the budget by freeing lingering
 * rings, oldest first (for a stream someone follows: never its own). */
static void linger_evict(size_t need) {
    while (linger_head && ring_total + need > ring_budget) ring_free(linger_head->cv);
}

/* Keeps ev's frame (bytes [off, off + len) of b when b is an arena, else
 * the whole of b; NULL: encoded here). */
void ring_add(chat_conv *cv, const pl_event *ev, pl_rbuf *b, uint32_t off, uint32_t len, int whole) {
    frame_ring *r = cv->has_ring ? pl_map_get(&deliver_rings, cv->id) : NULL;
    int busy = cv->nsubs >= ring_min_subs;
    if (!r) {
        if (!busy && !has_held(cv)) return;
        linger_evict(sizeof *r);
        if (ring_total + sizeof *r > ring_budget) return;
        r = pl_calloc(1, sizeof *r);
        r->cv = cv;
        ring_total += sizeof *r;
        pl_map_put(&deliver_rings, cv->id, r);
        cv->has_ring = 1;
        r->for_hold = !busy;
    } else if (r->for_hold) {                 /* note 4 */
        if (busy) r->for_hold = 0;
        else if (!has_held(cv)) {
            ring_free(cv);
            return;
        }
    }
    size_t cap = (size_t)cv->nsubs * RING_SUB_BYTES;
    if (cap > r->cap) r->cap = cap < RING_BYTES ? cap : RING_BYTES;
    if (r->n && r->first + r->n != ev->seq)   /* the stream's head jumped: start again */
        while (r->n) ring_drop_oldest(r);
    int action = ev->kind == PL_EV_EDIT || ev->kind == PL_EV_DELETE || ev->kind == PL_EV_REACTION ||
                 ev->kind == PL_EV_PIN;
    if (action && ev->ref > 0)                /* invariant 2 */
        for (uint32_t k = 0; k < r->n; k++) {
            uint32_t i = (r->head + k) % RING_FRAMES;
            if (r->first + k == ev->ref || r->ref[i] == ev->ref) ring_drop(r, i);
        }
    pl_rbuf *f;
    if (ev->kind == PL_EV_MESSAGE && ev->data && strstr(ev->data, "\"attachments\"")) {
        f = NULL;                             /* invariant 3: a hole */
    } else if (b && whole) {
        f = pl_rbuf_ref(b);
    } else if (b) {
        f = pl_rbuf_new(len);
        memcpy(f->data, b->data + off, len);
        f->len = len;
    } else {
        f = event_frame(ev);
    }
    if (f && f->len > RING_BYTES / 4) {       /* a huge frame: not kept, and no hole */
        pl_rbuf_unref(&f);
        while (r->n) ring_drop_oldest(r);
        return;
    }
    size_t flen = f ? f->len : 0;
    if (cv->nsubs) linger_evict(flen);
    while (r->n && (r->n == RING_FRAMES || r->bytes + flen > r->cap || ring_total + flen > ring_budget))
        ring_drop_oldest(r);
    if (flen > r->cap || ring_total + flen > ring_budget) {   /* no room: not kept, and no hole */
        pl_rbuf_unref(&f);
        return;
    }
    if (!r->n) r->first = ev->seq;
    r->fr[(r->head + r->n) % RING_FRAMES] = f;
    r->ref[(r->head + r->n) % RING_FRAMES] = ev->ref;
    r->n++;
    r->bytes += flen;
    ring_total += flen;
}

/* Sends x what the ring holds from its next seq on, up to its target or a
 * full queue. */
void ring_serve(sub *x) {
    if (!x->conv->has_ring || x->mention_pending) return;
    frame_ring *r = pl_map_get(&deliver_rings, x->conv->id);
    pl_conn *c = x->sess->conn;
    int64_t target = sub_target(x);
    while (r && x->sent_seq < target && !c->high) {
        int64_t seq = x->sent_seq + 1;
        if (seq < r->first || seq >= r->first + r->n) return;
        pl_rbuf *f = r->fr[(r->head + (uint32_t)(seq - r->first)) % RING_FRAMES];
        if (!f || chat_deliver_event(x, f, seq)) return;
        pl_count(&pl_m_frames_out, 1);
        x->sent_seq = seq;
    }
}

/* Some node's purge erased messages (the bus's `erased`, this node's
 * included), or this node may have missed that (a bus resync): every ring
 * goes, and with it every lingering stream (at the next sweep); the next
 * events start rings again. */
void deliver_on_erased(void *ud) {
    for (size_t i = 0; i < C.convs.cap; i++) {
        if (!C.convs.slots || !C.convs.slots[i].key) continue;
        chat_conv *cv = C.convs.slots[i].val;
        if (cv->has_ring) ring_free(cv);
    }
}

/* Also while stopping: a purge that ends during a drain (the store's close
 * runs its callbacks, the bus is still up) must still reach the other
 * nodes, whose rings would otherwise keep the erased text (audit L7). */
void pl_chat_erased(void) {
    if (C.bus) pl_bus_publish_erased(C.bus);  /* here too (bus.h) */
    else if (!C.stopping) deliver_on_erased(NULL);
}

/* Nothing follows cv any more (conv_maybe_release): 1 while it lingers
 * (kept), 0 when it may go. Its lingering starts at the first call. */
int ring_keep(chat_conv *cv) {
    if (!cv->has_ring || C.stopping) return 0;
    frame_ring *r = pl_map_get(&deliver_rings, cv->id);
    if (r->for_hold) return 0;                /* a hold's ring (note 4) goes with its hold */
    if (!r->idle_since) {
        int64_t now = pl_mono_ms();
        r->idle_since = now > 0 ? now : 1;
        r->lprev = linger_tail;
        if (linger_tail) linger_tail->lnext = r;
        else linger_head = r;
        linger_tail = r;
        r->linked = 1;
        linger_arm(0);
        return 1;
    }
    return r->linked;                         /* the sweep unlinks it when its time is up */
}

/* A subscription follows cv again: it no longer lingers. */
void ring_followed(chat_conv *cv) {
    if (!cv->has_ring) return;
    frame_ring *r = pl_map_get(&deliver_rings, cv->id);
    r->idle_since = 0;
    linger_unlink(r);
}

/* Releases the streams whose lingering is over, and those whose ring
 * linger_evict freed. */
void ring_linger_sweep(void) {
    int64_t now = pl_mono_ms();
    while (linger_head && now - linger_head->idle_since >= (int64_t)ring_linger_ms) {
        frame_ring *r = linger_head;
        chat_conv *cv = r->cv;
        linger_unlink(r);
        /* a long-poll or a session waiting for the bus holds the stream
         * now: it follows the head without a ring (invariant 5) */
        if (cv->watchers || cv->pins) ring_free(cv);
        conv_maybe_release(cv);               /* frees r, unless something holds it again */
    }
    for (size_t i = 0; i < nunheld; i++) {
        chat_conv *cv = conv_find(unheld[i]);
        if (cv) conv_maybe_release(cv);
    }
    nunheld = 0;
    if (!linger_head) uv_timer_stop(&C.linger_timer);
}

/* deliver_free: the streams are gone. */
void ring_release(void) {
    free(unheld);
    unheld = NULL;
    nunheld = capunheld = 0;
    linger_head = linger_tail = NULL;
}
