/* deliver.c — conversation streams, subscriptions, replay, sync and history
 * (chat_int.h holds the design note and its invariants; this file keeps
 * them).
 *
 * Owns: chat_conv and sub lifecycles, ordering bus events per conversation,
 * gap fills from the store, the replay queue, `sync`, `history`, and the
 * checks that follow a bus subscription or a bus loss (conversation heads,
 * memberships).
 */
#include <stdlib.h>
#include <string.h>

#include "../core/alloc.h"
#include "../core/clock.h"
#include "../core/log.h"
#include "../core/metrics.h"
#include "../ws/ws.h"
#include "../ws/wsconn.h"
#include "chat_int.h"
#include "flow.h"

_Static_assert(sizeof(chat_conv) <= 128, "chat_conv must fit a 128-byte allocator block (chat_int.h)");
_Static_assert(HELD_MAX <= 32768 && TYPISTS_MAX <= 128, "chat_conv's held and typing counts (doubling capacities) must fit their fields");

static void conv_process(chat_conv *cv, const pl_event *ev);
static void conv_head(chat_conv *cv, int64_t seq);
static void conv_maybe_release(chat_conv *cv);
static void replay_turn(uv_idle_t *h);
static void replay_next(sub *x);
static void mention_read(sub *x);
static void sub_caught_up(sub *x);
static void sub_drop(sub *x);
static void flush_checks(uv_check_t *h);
static void gap_tick(uv_timer_t *t);
static void ring_free(chat_conv *cv);
static int64_t sub_target(const sub *x);

static pl_map rings;               /* conv id -> frame_ring (busy conversations) */
#define RING_MIN_SUBS 3            /* subscriptions a ring needs (the ring's note) */
static uint32_t ring_min_subs;     /* RING_MIN_SUBS; tests may raise it       */

void deliver_init(void) {
    pl_map_init(&C.convs);
    pl_map_init(&rings);
    ring_min_subs = RING_MIN_SUBS;
    uv_idle_init(C.loop, &C.replayer);
    uv_timer_init(C.loop, &C.gap_timer);
    uv_unref((uv_handle_t *)&C.gap_timer);
    uv_check_init(C.loop, &C.flusher);
    uv_unref((uv_handle_t *)&C.flusher);
    flow_init();
}

static pl_rbuf *event_frame(const pl_event *ev) {
    pl_sbuf s;
    pl_sbuf_init(&s);
    pl_proto_event(&s, ev);
    pl_rbuf *b = pl_ws_text_frame(s.p, s.len);
    pl_sbuf_release(&s);
    return b;
}

static int is_ws_open(pl_conn *c) { return chat_is_open(c); }   /* either transport */

/* ---- the frame arena ----------------------------------------------------------
 *
 * Live events' frames for WebSocket sessions are encoded back to back into
 * one shared buffer, the arena, and queued as byte ranges of it
 * (chat_deliver_event_part -> pl_conn_send_part). A connection that gets
 * several events in a loop turn (a busy group: dozens) then holds them as
 * one queue entry, one reference and one iovec, instead of one of each per
 * frame; the kernel copies one run instead of dozens of small segments
 * (benchmarks.md, "Issue 11: group fan-out cost per delivery").
 * Invariants:
 *   1. Bytes of the arena below arena->len are never rewritten while any
 *      queue holds a reference: the arena is reused from offset 0 only
 *      when this module holds its only reference (refs == 1).
 *   2. A full arena is replaced, not grown (queued ranges point into it);
 *      the last queue to write its range frees it.
 * Memory: a queue that is written each turn holds its ranges for that
 * turn only; one whose kernel buffer is full copies the ranges it gets
 * (pl_conn_send_part), so it keeps alive only the arenas of the ranges its
 * pending write took. Frames larger than ARENA_SIZE / 4 are encoded on
 * their own; SSE sessions get whole frames (sse.c rewrites them). Replay
 * pages (deliver_one) are encoded into it too, one frame per event and
 * subscription as before, minus an allocation each. */
#define ARENA_SIZE (64 * 1024)

static pl_rbuf *arena;            /* NULL until the first live event         */
static pl_sbuf  arena_json;       /* reused encoding scratch                 */

/* Encodes ev as a WebSocket text frame at the arena's end: the arena (a new
 * reference) and the frame's range, or NULL when it is too large. */
static pl_rbuf *arena_frame(const pl_event *ev, uint32_t *off, uint32_t *len) {
    arena_json.len = 0;
    pl_proto_event(&arena_json, ev);
    uint8_t hdr[14];
    size_t h = pl_ws_header(hdr, PL_WS_OP_TEXT, arena_json.len, NULL);
    size_t n = h + arena_json.len;
    if (n > ARENA_SIZE / 4) return NULL;
    if (arena && arena->refs == 1) arena->len = 0;          /* invariant 1 */
    if (arena && arena->cap - arena->len < n) pl_rbuf_unref(&arena);   /* invariant 2 */
    if (!arena) arena = pl_rbuf_new(ARENA_SIZE);
    *off = arena->len;
    *len = (uint32_t)n;
    memcpy(arena->data + arena->len, hdr, h);
    memcpy(arena->data + arena->len + h, arena_json.p, arena_json.len);
    arena->len += (uint32_t)n;
    return pl_rbuf_ref(arena);
}

/* Queues ev to x alone (a replay page): through the arena for a WebSocket
 * session, so a page's frames are one queue entry too and cost no
 * allocation each. Returns chat_deliver_event's result. */
static int deliver_one(sub *x, const pl_event *ev) {
    uint32_t off, len;
    pl_rbuf *b = NULL;
    int r;
    if (CO.send_part && x->sess->tp == TP_WS && (b = arena_frame(ev, &off, &len))) {
        r = chat_deliver_event_part(x, b, off, len);
    } else {
        b = event_frame(ev);
        r = chat_deliver_event(x, b, ev->seq);
    }
    pl_rbuf_unref(&b);
    return r;
}

/* ---- batched checks against the store (subscribe, then read) ------------ */

static void arm_flusher(void) {
    if (!uv_is_active((uv_handle_t *)&C.flusher)) uv_check_start(&C.flusher, flush_checks);
}

static void push_id(int64_t **a, size_t *n, size_t *cap, int64_t id) {
    if (*n == *cap) {
        *cap = *cap ? *cap * 2 : 64;
        *a = pl_realloc(*a, *cap * sizeof **a);
    }
    (*a)[(*n)++] = id;
}

static void verify_add(int64_t conv) {
    push_id(&C.verify, &C.nverify, &C.capverify, conv);
    arm_flusher();
}

/* Long-poll watchers hear about changes once per loop turn, from the
 * flusher: never from inside a stream's processing (they may release it). */
static void changed_add(int64_t conv) {
    if (!C.hooks.conv_changed) return;
    push_id(&C.changed, &C.nchanged, &C.capchanged, conv);
    arm_flusher();
}

static void reconcile_add(int64_t user) {
    push_id(&C.reconcile, &C.nreconcile, &C.capreconcile, user);
    arm_flusher();
}

typedef struct check_op {
    pl_job   job;                 /* first: the store hands back &job        */
    int64_t *ids;                 /* owned; job.ids points here              */
} check_op;

static void heads_done(pl_job *j) {
    check_op *op = (check_op *)j;
    if (j->result == PL_STORE_OK && !C.stopping)
        for (size_t i = 0; i < j->nids; i++) {
            chat_conv *cv = conv_find(op->ids[i]);
            if (cv && !cv->dying) {
                conv_head(cv, j->heads[i]);
                conv_maybe_release(cv);
            }
        }
    else if (j->result && !C.stopping)           /* try again next turn */
        for (size_t i = 0; i < j->nids; i++) verify_add(op->ids[i]);
    pl_job_release(j);
    free(op->ids);
    free(op);
}

static void reconcile_done(pl_job *j);

static void flush_checks(uv_check_t *h) {
    uv_check_stop(h);
    if (C.nchanged) {
        int64_t *ids = C.changed;
        size_t n = C.nchanged;
        C.changed = NULL;
        C.nchanged = C.capchanged = 0;
        for (size_t i = 0; i < n; i++) C.hooks.conv_changed(ids[i]);
        free(ids);
    }
    if (C.stopping) {
        C.nverify = C.nreconcile = 0;
        return;
    }
    if (C.nverify) {
        check_op *op = pl_calloc(1, sizeof *op);
        op->ids = C.verify;
        op->job.op = PL_READ_CONV_HEADS;
        op->job.ids = op->ids;
        op->job.nids = C.nverify;
        op->job.done = heads_done;
        C.verify = NULL;
        C.nverify = C.capverify = 0;
        pl_store_submit(C.store, &op->job);
    }
    if (C.nreconcile) {
        check_op *op = pl_calloc(1, sizeof *op);
        op->ids = C.reconcile;
        op->job.op = PL_READ_MEMBERSHIPS;
        op->job.ids = op->ids;
        op->job.nids = C.nreconcile;
        op->job.done = reconcile_done;
        C.reconcile = NULL;
        C.nreconcile = C.capreconcile = 0;
        pl_store_submit(C.store, &op->job);
    }
}

/* ---- streams ------------------------------------------------------------- */

chat_conv *conv_find(int64_t id) { return pl_map_get(&C.convs, id); }

/* The stream of conv, created (and subscribed on the bus) if absent with
 * published = seq. Invariant 5. */
static chat_conv *conv_open(int64_t id, int64_t seq) {
    chat_conv *cv = conv_find(id);
    if (cv) return cv;
    cv = pl_calloc(1, sizeof *cv);
    cv->id = id;
    cv->published = cv->known = seq;
    cv->members = -1;                         /* until a read or `created` says */
    pl_map_put(&C.convs, id, cv);
    pl_bus_subscribe_conv(C.bus, id, 1);      /* conv_ready -> a heads check */
    return cv;
}

static void held_clear(chat_conv *cv) {
    for (uint32_t i = 0; i < cv->nheld; i++) pl_event_release(&cv->held[i]);
    free(cv->held);
    cv->held = NULL;
    cv->nheld = cv->capheld = 0;
}

static void gaps_remove(chat_conv *cv) {
    if (!cv->in_gaps) return;
    cv->in_gaps = 0;
    if (cv->gprev) cv->gprev->gnext = cv->gnext;
    else C.gaps = cv->gnext;
    if (cv->gnext) cv->gnext->gprev = cv->gprev;
    cv->gnext = cv->gprev = NULL;
    if (!C.gaps) uv_timer_stop(&C.gap_timer);
}

static void gaps_add(chat_conv *cv, int64_t due) {
    cv->gap_at = due;
    if (cv->in_gaps) return;
    cv->in_gaps = 1;
    cv->gprev = NULL;
    cv->gnext = C.gaps;
    if (C.gaps) C.gaps->gprev = cv;
    C.gaps = cv;
    if (!uv_is_active((uv_handle_t *)&C.gap_timer)) uv_timer_start(&C.gap_timer, gap_tick, 10, 10);
}

static int processing;            /* conv_process is on the stack */

/* Frees a stream nobody follows any more (invariant 5). Call only where cv
 * is not used afterwards; inside conv_process it waits for the caller
 * (every entry point ends with it). */
static void conv_maybe_release(chat_conv *cv) {
    if (cv->nsubs || cv->watchers || cv->pins || cv->dying || processing) return;
    pl_map_del(&C.convs, cv->id);
    if (C.bus) pl_bus_subscribe_conv(C.bus, cv->id, 0);
    gaps_remove(cv);
    typing_clear_conv(cv);
    held_clear(cv);
    ring_free(cv);
    if (cv->filling) {                        /* freed when the fill returns */
        cv->dying = 1;
        return;
    }
    free(cv);
}

typedef struct fill_op {
    pl_job     job;
    chat_conv *cv;
} fill_op;

static void fill_done(pl_job *j);

static void fill_start(chat_conv *cv) {
    if (cv->filling || cv->dying || C.stopping || cv->known <= cv->published) return;
    gaps_remove(cv);
    fill_op *op = pl_calloc(1, sizeof *op);
    op->cv = cv;
    op->job.op = PL_READ_EVENTS;
    op->job.conv = cv->id;
    op->job.after = cv->published;
    op->job.before = cv->known + 1;
    op->job.limit = FILL_PAGE;
    op->job.done = fill_done;
    cv->filling = 1;
    pl_count(&pl_m_gap_fills, 1);
    pl_store_submit(C.store, &op->job);
}

/* A gap exists (known > published): fill it now (embedded mode: a gap
 * there only comes from a stream created between a read and a publish) or
 * after GAP_WAIT_MS, when the missing events may still come on the bus. */
static void gap_arm(chat_conv *cv) {
    if (cv->known <= cv->published) {
        gaps_remove(cv);
        return;
    }
    if (cv->filling) return;
    if (!C.bus->shared) fill_start(cv);
    else if (!cv->in_gaps) gaps_add(cv, pl_mono_ms() + GAP_WAIT_MS);
}

static void gap_tick(uv_timer_t *t) {
    int64_t now = pl_mono_ms();
    for (chat_conv *cv = C.gaps, *nx; cv; cv = nx) {
        nx = cv->gnext;
        if (cv->gap_at <= now) fill_start(cv);
    }
}

/* Processes held events that are next in line. */
static void held_drain(chat_conv *cv) {
    uint32_t k = 0;
    while (k < cv->nheld && cv->held[k].seq <= cv->published + 1) {
        if (cv->held[k].seq == cv->published + 1) conv_process(cv, &cv->held[k]);
        pl_event_release(&cv->held[k]);
        k++;
    }
    if (k) {
        memmove(cv->held, cv->held + k, (cv->nheld - k) * sizeof *cv->held);
        cv->nheld -= k;
    }
}

/* Keeps a copy of an event that came before its predecessors (bounded: a
 * full buffer drops it, and the fill reads it). */
static void held_add(chat_conv *cv, const pl_event *ev) {
    uint32_t i = 0;
    while (i < cv->nheld && cv->held[i].seq < ev->seq) i++;
    if (i < cv->nheld && cv->held[i].seq == ev->seq) return;
    if (cv->nheld == HELD_MAX) return;
    if (cv->nheld == cv->capheld) {
        cv->capheld = cv->capheld ? cv->capheld * 2 : 8;
        cv->held = pl_realloc(cv->held, cv->capheld * sizeof *cv->held);
    }
    memmove(cv->held + i + 1, cv->held + i, (cv->nheld - i) * sizeof *cv->held);
    pl_event_copy(&cv->held[i], ev);
    cv->nheld++;
}

/* An event from the bus (any order, duplicates, losses: bus.h). */
static void conv_bus_event(chat_conv *cv, const pl_event *ev) {
    if (!cv->nsubs) {                         /* watchers only: no order kept */
        if (ev->seq <= cv->published) return;
        cv->published = cv->known = ev->seq;
        changed_add(cv->id);
        return;
    }
    if (ev->seq <= cv->published) return;
    if (ev->seq == cv->published + 1) {
        conv_process(cv, ev);
        held_drain(cv);
    } else {
        if (ev->seq > cv->known) cv->known = ev->seq;
        held_add(cv, ev);
    }
    gap_arm(cv);
}

static void conv_head(chat_conv *cv, int64_t seq) {
    if (!cv->nsubs) {
        if (seq > cv->published) {
            cv->published = cv->known = seq;
            changed_add(cv->id);
        }
        return;
    }
    if (seq > cv->known) cv->known = seq;
    gap_arm(cv);
}

static void fill_done(pl_job *j) {
    fill_op *op = (fill_op *)j;
    chat_conv *cv = op->cv;
    cv->filling = 0;
    if (cv->dying) {
        free(cv);
    } else if (C.stopping) {
    } else if (j->result != PL_STORE_OK) {
        pl_log(PL_LOG_WARN, 0, "gap fill failed, retrying", "\"conversation\":%lld", (long long)cv->id);
        gaps_add(cv, pl_mono_ms() + 1000);
    } else {
        pl_count(&pl_m_gap_events, j->nevents);
        for (size_t i = 0; i < j->nevents && cv->nsubs; i++)
            if (j->events[i].seq == cv->published + 1) {
                conv_process(cv, &j->events[i]);
                held_drain(cv);
            }
        /* the store is the truth: what it does not have (yet) we stop waiting for */
        if (!j->nevents && !j->more && cv->known > cv->published && !cv->nheld) cv->known = cv->published;
        if (cv->nsubs) gap_arm(cv);
        if (cv->known > cv->published && j->nevents) fill_start(cv);
        conv_maybe_release(cv);
    }
    pl_job_release(j);
    free(op);
}

/* ---- recent frames of busy conversations ---------------------------------
 *
 * A conversation with at least RING_MIN_SUBS subscriptions here keeps the
 * frames of its last RING_FRAMES published events, at most RING_SUB_BYTES
 * per subscription (at the most it has had; RING_BYTES at most), all rings
 * together at most RING_TOTAL bytes (the budget: a ring that would pass it drops
 * its oldest frames, and no new ring starts while it is spent). A
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
 *   3. A message with attachments is held as a hole: its frame carries
 *      signed media URLs that expire (--media-url-ttl), and a replay signs
 *      them afresh (docs/protocol.md "Attachments in messages"). */
#define RING_FRAMES    256
#define RING_BYTES     (128 * 1024)
#define RING_SUB_BYTES (8 * 1024)
#define RING_TOTAL     ((size_t)64 * 1024 * 1024)

typedef struct frame_ring {
    int64_t  first;               /* seq of fr[head]                         */
    uint32_t head, n;
    size_t   bytes;
    size_t   cap;                 /* its bytes at most: grows with nsubs     */
    pl_rbuf *fr[RING_FRAMES];     /* NULL: dropped (invariant 2)             */
    int64_t  ref[RING_FRAMES];    /* the event's ref: a reply's parent, an action's target */
} frame_ring;

static size_t ring_total;           /* every ring's struct and frames (the budget) */

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

static void ring_free(chat_conv *cv) {
    if (!cv->has_ring) return;
    frame_ring *r = pl_map_get(&rings, cv->id);
    while (r && r->n) ring_drop_oldest(r);
    if (r) ring_total -= sizeof *r;
    free(r);
    pl_map_del(&rings, cv->id);
    cv->has_ring = 0;
}

/* Keeps ev's frame (bytes [off, off + len) of b when b is an arena, else
 * the whole of b; NULL: encoded here). */
static void ring_add(chat_conv *cv, const pl_event *ev, pl_rbuf *b, uint32_t off, uint32_t len, int whole) {
    frame_ring *r = cv->has_ring ? pl_map_get(&rings, cv->id) : NULL;
    if (!r) {
        if (cv->nsubs < ring_min_subs || ring_total + sizeof *r > RING_TOTAL) return;
        r = pl_calloc(1, sizeof *r);
        ring_total += sizeof *r;
        pl_map_put(&rings, cv->id, r);
        cv->has_ring = 1;
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
    while (r->n && (r->n == RING_FRAMES || r->bytes + flen > r->cap || ring_total + flen > RING_TOTAL))
        ring_drop_oldest(r);
    if (flen > r->cap || ring_total + flen > RING_TOTAL) {   /* no room: not kept, and no hole */
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
static void ring_serve(sub *x) {
    if (!x->conv->has_ring || x->mention_pending) return;
    frame_ring *r = pl_map_get(&rings, x->conv->id);
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

/* ---- subscriptions --------------------------------------------------------- */

sub *sub_find(session *s, int64_t conv) {
    if (s->submap) return pl_map_get(s->submap, conv);
    for (uint32_t i = 0; i < s->nsubs; i++)
        if (s->subs[i]->conv->id == conv) return s->subs[i];
    return NULL;
}

/* Adds x to the replay queue (invariant 4). */
static void rq_push(sub *x) {
    if (x->queued || x->reading || x->detached) return;
    x->queued = 1;
    x->qnext = NULL;
    if (C.rq_tail) C.rq_tail->qnext = x;
    else C.rq_head = x;
    C.rq_tail = x;
    if (!uv_is_active((uv_handle_t *)&C.replayer)) uv_idle_start(&C.replayer, replay_turn);
}

/* The last seq x may be sent now. */
static int64_t sub_target(const sub *x) {
    int64_t t = x->conv->published;
    if (x->end_seq && x->end_seq < t) t = x->end_seq;
    return t;
}

sub *sub_create(session *s, int64_t conv, int64_t stream_seq, int64_t sent_seq, int64_t floor, int state) {
    sub *x = sub_find(s, conv);
    if (x) return x;
    chat_conv *cv = conv_find(conv);
    if (!cv) cv = conv_open(conv, stream_seq);
    else if (!cv->nsubs) {                    /* a watched stream gets an order now */
        cv->published = cv->known = stream_seq;
        verify_add(conv);
    } else if (stream_seq > cv->known) {
        conv_head(cv, stream_seq);
    }
    if (sent_seq < 0) sent_seq = stream_seq > cv->published ? stream_seq : cv->published;
    if (sent_seq < floor) sent_seq = floor;
    x = pl_calloc(1, sizeof *x);
    x->conv = cv;
    x->sess = s;
    x->sent_seq = sent_seq;
    x->floor = floor;
    x->state = (uint8_t)state;
    x->next = cv->subs;
    if (cv->subs) cv->subs->prev = x;
    cv->subs = x;
    cv->nsubs++;
    if (s->nsubs == s->capsubs) {             /* the first lives in the session */
        if (!s->capsubs) {
            s->subs = &s->sub1;
            s->capsubs = 1;
        } else {
            uint32_t cap = s->capsubs == 1 ? 4 : s->capsubs * 2;
            if (s->subs == &s->sub1) {
                s->subs = pl_malloc(cap * sizeof *s->subs);
                s->subs[0] = s->sub1;
            } else {
                s->subs = pl_realloc(s->subs, cap * sizeof *s->subs);
            }
            s->capsubs = cap;
        }
    }
    s->subs[s->nsubs++] = x;
    if (s->submap) pl_map_put(s->submap, conv, x);
    else if (s->nsubs > SUBMAP_MIN) {
        s->submap = pl_calloc(1, sizeof *s->submap);
        pl_map_init(s->submap);
        for (uint32_t i = 0; i < s->nsubs; i++) pl_map_put(s->submap, s->subs[i]->conv->id, s->subs[i]);
    }
    if (state == SUB_LIVE && x->sent_seq < cv->published) sub_catch_up(x, 0);
    return x;
}

/* Takes x out of its session and its stream; frees it unless the replay
 * machinery still holds it (then it is freed there, being detached). */
static void sub_unlink(sub *x) {
    session *s = x->sess;
    chat_conv *cv = x->conv;
    for (uint32_t i = 0; i < s->nsubs; i++)
        if (s->subs[i] == x) {
            s->subs[i] = s->subs[--s->nsubs];
            break;
        }
    if (s->submap) pl_map_del(s->submap, cv->id);
    if (x->prev) x->prev->next = x->next;
    else cv->subs = x->next;
    if (x->next) x->next->prev = x->prev;
    cv->nsubs--;
    if (x->queued || x->reading) x->detached = 1;
    else free(x);
}

/* End of a membership: the removal was delivered. */
static void sub_drop(sub *x) {
    chat_conv *cv = x->conv;
    sub_unlink(x);
    conv_maybe_release(cv);
}

void sub_release_all(session *s) {
    while (s->nsubs) sub_drop(s->subs[s->nsubs - 1]);
    if (s->subs != &s->sub1) free(s->subs);
    s->subs = NULL;
    s->capsubs = 0;
    if (s->submap) {
        pl_map_release(s->submap);
        free(s->submap);
        s->submap = NULL;
    }
}

/* One `synced` per `sync` that asked for this conversation (two in one
 * read both wait for the replay in progress: audit R3). */
static void send_synced(sub *x) {
    int owed = x->report_synced;
    x->report_synced = 0;
    char msg[128];
    int len = snprintf(msg, sizeof msg, "{\"type\":\"synced\",\"conversation\":%lld,\"seq\":%lld%s}",
                       (long long)x->conv->id, (long long)x->sent_seq,
                       x->online_only ? ",\"online_only\":true" : "");
    x->online_only = 0;
    while (owed-- > 0) chat_send_text(x->sess->conn, msg, (size_t)len, 1);
}

/* x has everything up to its target. */
static void sub_caught_up(sub *x) {
    if (x->end_seq && x->sent_seq >= x->end_seq) {
        if (x->rejoin_seq) {                  /* removed, then added again */
            x->sent_seq = x->floor = x->rejoin_seq - 1;
            x->end_seq = x->rejoin_seq = 0;
            replay_next(x);
            return;
        }
        if (x->report_synced) send_synced(x);
        sub_drop(x);
        return;
    }
    x->state = SUB_LIVE;
    /* Caught up with what this node published; if the store already had
     * more when the sync came (events committed elsewhere and still on
     * their way over the bus, a gap fill under way), `synced` waits for
     * live delivery to reach it, so it still comes after every event the
     * sync asked for. */
    if (x->report_synced && x->sent_seq >= x->synced_at) send_synced(x);
}

static void session_wait_drain(session *s) {
    session_uncork(s);                        /* a corked queue cannot drain */
    if (s->waiting_drain) return;
    s->waiting_drain = 1;
    s->drain_since = pl_mono_ms();
    int64_t cut = s->drain_since + (int64_t)C.cfg->slow_timeout * 1000;
    if (!s->conn->deadline || cut < s->conn->deadline) s->conn->deadline = cut;
}

/* Decides x's next step after progress (invariant 4). */
static void replay_next(sub *x) {
    if (x->state != SUB_CATCHUP || x->detached) return;
    ring_serve(x);                            /* the recent part, without a read */
    if (x->sent_seq >= sub_target(x) && !x->mention_pending) {
        sub_caught_up(x);
        return;
    }
    pl_conn *c = x->sess->conn;
    if (!is_ws_open(c)) return;              /* a dead connection stops its replays */
    if (c->high) {
        session_wait_drain(x->sess);         /* on_drain queues it again */
        return;
    }
    rq_push(x);
}

void sub_catch_up(sub *x, int report_synced) {
    if (report_synced && x->report_synced < UINT8_MAX) x->report_synced++;
    x->state = SUB_CATCHUP;
    if (x->reading || x->queued) return;      /* its read's completion decides */
    if (x->sess->waiting_drain && (x->sent_seq < sub_target(x) || x->mention_pending)) return;
    replay_next(x);
}

void session_release_hold(session *s) {
    if (!s->held) return;
    s->held = 0;                              /* its removals (end_finish) wait for its
                                               * first message (session.c dispatch) */
    for (uint32_t i = 0; i < s->nsubs;) {     /* a sub may end and leave the array */
        sub *x = s->subs[i];
        uint32_t n = s->nsubs;
        if (x->state == SUB_HELD) sub_catch_up(x, 0);
        if (s->nsubs == n) i++;
    }
}

void session_replays_resume(session *s) {
    if (!s->waiting_drain) return;
    s->waiting_drain = 0;
    s->drain_since = 0;
    for (uint32_t i = 0; i < s->nsubs;) {
        sub *x = s->subs[i];
        uint32_t n = s->nsubs;
        if (x->state == SUB_CATCHUP && !x->queued && !x->reading) replay_next(x);
        if (s->nsubs == n) i++;
    }
}

/* A resume's `ready` and its first replayed page leave in one write: after
 * `ready`, a WebSocket session with a replay read to wait for is corked
 * until the first of its reads completes (or a queued replay turns out to
 * need none, or it must wait for a drain); the connection layer bounds the
 * cork in bytes and time (conn.h). In a reconnect storm that is one write
 * of about four per client, a write being the loop's costliest step there
 * (the kernel's loopback delivery; benchmarks.md "the storm's writes"). */
void session_cork_for_replay(session *s) {
    if (s->tp != TP_WS || !CO.cork || s->corked) return;
    for (uint32_t i = 0; i < s->nsubs; i++)
        if (s->subs[i]->reading || s->subs[i]->queued) {
            s->corked = 1;
            CO.cork(s->conn);
            return;
        }
}

void session_uncork(session *s) {
    if (!s->corked) return;
    s->corked = 0;
    if (CO.uncork) CO.uncork(s->conn);
}

/* ---- replay ------------------------------------------------------------- */

typedef struct replay_op {
    pl_job   job;
    sub     *x;
    uint32_t cost;                /* its share of C.inflight_cost            */
} replay_op;

/* The events a read for x may return (invariant 4): a page, or fewer when
 * the gap up to its target is smaller (seqs are unique, so a read of
 * (sent_seq, target] returns at most target - sent_seq events). A storm of
 * resumes, each a few events behind, keeps many small reads in flight
 * instead of waiting a store round trip per REPLAY_INFLIGHT sessions. */
static uint32_t replay_cost(const sub *x) {
    if (x->detached || x->state != SUB_CATCHUP) return 1;   /* not read for; its stream may be gone */
    if (x->mention_pending) return REPLAY_PAGE;
    int64_t gap = sub_target(x) - x->sent_seq;
    return gap < 1 ? 1 : gap > REPLAY_PAGE ? REPLAY_PAGE : (uint32_t)gap;
}

static int replay_fits(const sub *x) {
    return C.inflight < REPLAY_READS_MAX && C.inflight_cost + replay_cost(x) <= REPLAY_INFLIGHT * REPLAY_PAGE;
}

/* Replays read as the session's user, so that messages come in their
 * current form for it (reactions' "me"). The store answers such a read as
 * for that user's membership, which may be ahead of the stream's: a
 * removal it has not processed yet (refused), or a removal and a new
 * joining (a page from the new joining on). Then the page is read again as
 * the stream reads (no user: everything up to the removal, contiguous).
 * Returns 1 when it read again (the read slot stays taken). */
static int replay_read_as_stream(replay_op *op) {
    pl_job *j = &op->job;
    if (!j->user || op->x->detached || C.stopping) return 0;
    int refused = j->result == PL_STORE_ENOTFOUND;
    int skipped = j->result == PL_STORE_OK && (!j->nevents || j->events[0].seq != j->after + 1);
    if (!refused && !skipped) return 0;
    pl_job_release(j);
    j->user = 0;
    j->more = 0;
    j->result = PL_STORE_OK;
    pl_store_submit(C.store, j);
    return 1;
}

static void replay_done(pl_job *j) {
    replay_op *op = (replay_op *)j;
    sub *x = op->x;
    if (replay_read_as_stream(op)) return;
    C.inflight--;
    C.inflight_cost -= op->cost;
    x->reading = 0;
    if (x->detached || C.stopping) {
        if (x->detached) free(x);
        goto out;
    }
    pl_conn *c = x->sess->conn;
    session_uncork(x->sess);                  /* this page leaves with `ready` */
    if (j->result != PL_STORE_OK) {
        pl_log(PL_LOG_ERROR, c->id, "replay read failed", "\"conversation\":%lld", (long long)x->conv->id);
        if (is_ws_open(c)) chat_close(c, PL_CLOSE_TRY_AGAIN, "store unavailable: reconnect and sync");
        goto out;
    }
    for (size_t i = 0; i < j->nevents; i++) {
        const pl_event *ev = &j->events[i];
        if (ev->seq != x->sent_seq + 1 || ev->seq > sub_target(x)) break;
        if (deliver_one(x, ev)) goto out;     /* closing: nothing more for it */
        pl_count(&pl_m_frames_out, 1);
        x->sent_seq = ev->seq;
        if (c->high) break;                   /* invariant 4: wait for the drain */
    }
    replay_next(x);
out:
    pl_job_release(j);
    free(op);
    if (C.rq_head && !uv_is_active((uv_handle_t *)&C.replayer))
        uv_idle_start(&C.replayer, replay_turn);
}

/* Reads one page for x (its state was checked by the caller). */
static void replay_read(sub *x) {
    replay_op *op = pl_calloc(1, sizeof *op);
    op->x = x;
    op->job.op = PL_READ_EVENTS;
    op->job.conv = x->conv->id;
    op->job.user = x->end_seq ? 0 : x->sess->user;   /* removed: read as the stream */
    op->job.after = x->sent_seq;
    op->job.before = sub_target(x) + 1;      /* invariant 2: never above published */
    op->job.limit = REPLAY_PAGE;
    op->job.done = replay_done;
    op->cost = replay_cost(x);
    x->reading = 1;
    C.inflight++;
    C.inflight_cost += op->cost;
    pl_store_submit(C.store, &op->job);
}

/* Serves the queue round-robin within invariant 4's bounds. */
static void replay_turn(uv_idle_t *h) {
    while (C.rq_head && replay_fits(C.rq_head) && !C.stopping) {
        sub *x = C.rq_head;
        C.rq_head = x->qnext;
        if (!C.rq_head) C.rq_tail = NULL;
        x->queued = 0;
        if (x->detached) {
            free(x);
            continue;
        }
        session *s = x->sess;
        if (x->state != SUB_CATCHUP) {        /* nothing to read for it after all */
            session_uncork(s);
            continue;
        }
        if (x->sent_seq >= sub_target(x) && !x->mention_pending) {
            sub_caught_up(x);                 /* may free x */
            session_uncork(s);
            continue;
        }
        pl_conn *c = x->sess->conn;
        if (!is_ws_open(c)) continue;
        if (c->high) {
            session_wait_drain(x->sess);
            continue;
        }
        if (x->mention_pending) mention_read(x);
        else replay_read(x);
    }
    if (!C.rq_head || !replay_fits(C.rq_head) || C.stopping) uv_idle_stop(h);
}

/* ---- the membership log ---------------------------------------------------- */

/* Membership changes this loop processed, the last MLOG_MAX of them. A
 * session reads its conversations (PL_READ_SESSION) while the loop goes on
 * processing events, and is not among its user's sessions until the read
 * is back: a change processed in between reached none of its
 * subscriptions. Its read notes mlog_n when it is submitted and, once
 * authenticated, applies what came since (deliver_mlog_apply): a removal
 * its read predates ends its stream at that removal; an addition its read
 * predates subscribes it from that member_added. Without this, the first
 * left a removed user receiving the conversation and the second lost a
 * conversation for good (embedded mode; cluster mode reconciled additions
 * only). Entries are cheap and changes rare: 1,024 is far more than one
 * authentication's read can see. */
#define MLOG_MAX 1024

typedef struct mlog_ent {
    int64_t user, conv, seq;
    int     add;                            /* 1 member_added/created, 0 removed/left */
} mlog_ent;

static mlog_ent mlog[MLOG_MAX];
static uint64_t mlog_n;                     /* entries ever logged */

static void mlog_add(int64_t user, int64_t conv, int64_t seq, int add) {
    mlog[mlog_n % MLOG_MAX] = (mlog_ent){user, conv, seq, add};
    mlog_n++;
}

uint64_t deliver_mlog_mark(void) { return mlog_n; }

/* 1 if a change to user's membership of conv above seq was logged since mark. */
int deliver_mlog_changed(uint64_t mark, int64_t user, int64_t conv, int64_t seq) {
    if (mlog_n - mark > MLOG_MAX) return 1;
    for (uint64_t i = mark; i < mlog_n; i++) {
        const mlog_ent *e = &mlog[i % MLOG_MAX];
        if (e->user == user && e->conv == conv && e->seq > seq) return 1;
    }
    return 0;
}

static void join_session(session *s, int64_t conv, int64_t seq);
static void end_session(session *s, chat_conv *cv, int64_t seq);

/* After `ready`: the changes to s's user logged since mark, in order.
 * More than the log holds: the session cannot know what it missed, and is
 * closed to reconnect (1013). */
void deliver_mlog_apply(session *s, uint64_t mark) {
    if (mlog_n == mark) return;
    if (mlog_n - mark > MLOG_MAX) {
        chat_close(s->conn, PL_CLOSE_TRY_AGAIN, "membership changed during authentication: reconnect");
        return;
    }
    for (uint64_t i = mark; i < mlog_n && is_ws_open(s->conn); i++) {
        const mlog_ent *e = &mlog[i % MLOG_MAX];
        if (e->user != s->user) continue;
        if (e->add) {
            join_session(s, e->conv, e->seq);
            chat_conv *cv = conv_find(e->conv);
            if (cv) conv_head(cv, e->seq);      /* a stream opened just now reads up to it */
        } else if (conv_find(e->conv)) {
            end_session(s, conv_find(e->conv), e->seq);
        }
    }
    /* the events the loop already processed come from the store */
    for (uint64_t i = mark; i < mlog_n && is_ws_open(s->conn); i++) {
        const mlog_ent *e = &mlog[i % MLOG_MAX];
        sub *x = e->user == s->user ? sub_find(s, e->conv) : NULL;
        if (x && x->state == SUB_LIVE && x->sent_seq < x->conv->published) sub_catch_up(x, 0);
    }
}

/* ---- processing an event in order (seq == published + 1) ---------------- */

/* An authenticated session of a user who became a member of conv at seq
 * follows it from seq. */
static void join_session(session *s, int64_t conv, int64_t seq) {
    sub *x = sub_find(s, conv);
    if (x) {
        if (!x->end_seq || x->end_seq >= seq) return;     /* a member already */
        if (x->rejoin_seq) {                   /* a third change while lagging */
            if (x->rejoin_seq != seq)
                chat_close(s->conn, PL_CLOSE_SLOW_CONSUMER, "membership changed: reconnect and sync");
            return;
        }
        x->rejoin_seq = seq;
        return;
    }
    sub_create(s, conv, seq - 1, seq - 1, seq - 1, s->held ? SUB_HELD : SUB_LIVE);
}

/* A local user became a member of cv at seq: its sessions follow from seq. */
static void join_user(chat_conv *cv, int64_t user, int64_t seq) {
    mlog_add(user, cv->id, seq, 1);
    chat_user *u = pl_map_get(&C.users, user);
    if (!u) return;
    for (session *s = u->sessions; s; s = s->unext)
        if (s->state == S_AUTHED) join_session(s, cv->id, seq);
}

static void join_created(chat_conv *cv, const pl_event *ev) {
    json_t *d = ev->data ? json_loads(ev->data, 0, NULL) : NULL;
    json_t *members = json_object_get(d, "members");
    const char *kind = json_string_value(json_object_get(d, "kind"));
    size_t i;
    json_t *v;
    json_array_foreach(members, i, v) join_user(cv, json_integer_value(v), ev->seq);
    if (json_is_array(members) && kind) {
        cv->kind = strcmp(kind, "group") == 0 ? PL_CONV_GROUP
                 : strcmp(kind, "channel") == 0 ? PL_CONV_CHANNEL : PL_CONV_DIRECT;
        cv->members = (int64_t)json_array_size(members);
        cv->members_seq = ev->seq;
        if (cv->kind == PL_CONV_CHANNEL)          /* the per-workspace rate limit (wsrate.c) */
            wsrate_learn(cv->id, json_integer_value(json_object_get(d, "workspace")));
    }
    json_decref(d);
}

void conv_learn(chat_conv *cv, int kind, int64_t members, int64_t seq) {
    if (cv->members >= 0 && seq < cv->members_seq) return;   /* ours is more recent */
    cv->kind = kind;
    cv->members = members;
    cv->members_seq = seq;
}

/* Membership events the count does not include yet move it. */
static void conv_count(chat_conv *cv, const pl_event *ev, int removal) {
    if (cv->members < 0 || ev->seq <= cv->members_seq) return;
    if (ev->kind == PL_EV_MEMBER_ADDED) cv->members++;
    else if (removal && cv->members > 0) cv->members--;
    cv->members_seq = ev->seq;
}

/* A local user's removal (or leaving) at seq, before seq is delivered: its
 * subscriptions get end_seq = seq (invariant 2: nothing above seq can have
 * been sent, since seq is being processed only now). */
static void end_session(session *s, chat_conv *cv, int64_t seq) {
    sub *x = sub_find(s, cv->id);
    if (!x || x->sent_seq >= seq || x->floor >= seq) return;   /* an older removal */
    if (x->end_seq && x->end_seq < seq) {      /* removed, re-added, removed while lagging */
        if (x->rejoin_seq && x->rejoin_seq < seq)
            chat_close(s->conn, PL_CLOSE_SLOW_CONSUMER, "membership changed: reconnect and sync");
        return;
    }
    x->end_seq = seq;
}

static void end_mark(chat_conv *cv, int64_t user, int64_t seq) {
    mlog_add(user, cv->id, seq, 0);
    chat_user *u = pl_map_get(&C.users, user);
    for (session *s = u ? u->sessions : NULL; s; s = s->unext) end_session(s, cv, seq);
}

/* ... and after it was delivered: LIVE subscriptions that got it end now;
 * the others end when their replay reaches it. A HELD one (a handshake
 * session waiting for its first message) leaves its hold for this
 * conversation now: the ring holds the events up to the removal as they
 * are now, before any later one changed them (audit L5: released a second
 * later, they carried edits, reactions and pins made after the removal). */
static void end_finish(chat_conv *cv, int64_t user, int64_t seq) {
    chat_user *u = pl_map_get(&C.users, user);
    for (session *s = u ? u->sessions : NULL; s; s = s->unext) {
        sub *x = sub_find(s, cv->id);
        if (!x || x->end_seq != seq) continue;
        if (x->state == SUB_LIVE && x->sent_seq >= seq) {
            sub_caught_up(x);
        } else if (x->state == SUB_HELD && s->tp == TP_WS) {
            /* the `sync` it may still send first (within the hold or
             * after) is answered `synced` at the removal (deliver_sync) */
            s->resume = pl_realloc(s->resume, (s->nresume + 1) * sizeof *s->resume);
            s->resume[s->nresume++] = (pl_cursor){cv->id, seq};
            sub_catch_up(x, 0);
        }
    }
}

/* The member_removed seq of conv if s (a held WebSocket session) was
 * removed from it during its hold (end_finish), else 0. */
static int64_t held_end(const session *s, int64_t conv) {
    if (s->tp != TP_WS) return 0;
    for (uint32_t i = 0; i < s->nresume; i++)
        if (s->resume[i].conv == conv) return s->resume[i].seq;
    return 0;
}

static void conv_process(chat_conv *cv, const pl_event *ev) {
    processing++;
    int removal = ev->kind == PL_EV_MEMBER_REMOVED || ev->kind == PL_EV_MEMBER_LEFT;
    if (ev->kind == PL_EV_CREATED) join_created(cv, ev);
    else if (ev->kind == PL_EV_MEMBER_ADDED) join_user(cv, ev->subject, ev->seq);
    else if (removal) end_mark(cv, ev->subject, ev->seq);
    conv_count(cv, ev, removal);
    cv->published = ev->seq;
    if (cv->known < ev->seq) cv->known = ev->seq;
    if (ev->kind == PL_EV_MESSAGE && cv->ntyping) typing_stop(cv, ev->sender);
    pl_rbuf *frame = NULL;                    /* whole: SSE sessions, large frames */
    pl_rbuf *ab = NULL;                       /* the arena holding it (WebSocket) */
    uint32_t aoff = 0, alen = 0;
    int parts = CO.send_part != NULL;         /* 0 once the arena refused the frame */
    uint64_t queued = 0;                      /* counted once: an atomic add each cost 2% */
    for (sub *x = cv->subs; x; x = x->next) {
        if (x->state != SUB_LIVE || ev->seq <= x->sent_seq) continue;
        if (ev->seq != x->sent_seq + 1) {     /* cannot happen (invariant 3) */
            sub_catch_up(x, 0);
            continue;
        }
        int r, ws = x->sess->tp == TP_WS;
        if (parts && ws && !ab && !(ab = arena_frame(ev, &aoff, &alen))) parts = 0;
        if (parts && ws) {
            r = chat_deliver_event_part(x, ab, aoff, alen);
        } else {
            if (!frame) frame = event_frame(ev);
            r = chat_deliver_event(x, frame, ev->seq);
        }
        if (r == 0) {
            x->sent_seq = ev->seq;
            queued++;
            if (x->report_synced && x->sent_seq >= x->synced_at) send_synced(x);
        }
    }
    if (queued) pl_count(&pl_m_frames_out, queued);
    if (cv->has_ring || cv->nsubs >= ring_min_subs) {
        if (frame) ring_add(cv, ev, frame, 0, 0, 1);
        else ring_add(cv, ev, ab, aoff, alen, 0);
    }
    pl_rbuf_unref(&frame);
    if (ab) pl_rbuf_unref(&ab);
    if (removal) end_finish(cv, ev->subject, ev->seq);
    if (cv->watchers) changed_add(cv->id);
    processing--;
}

/* ---- bus handlers ----------------------------------------------------------- */

/* 1 if ev makes a user with local sessions a member. */
static int joins_local_user(const pl_event *ev) {
    if (ev->kind == PL_EV_MEMBER_ADDED) return pl_map_get(&C.users, ev->subject) != NULL;
    if (ev->kind != PL_EV_CREATED || !C.users.len) return 0;
    json_t *d = ev->data ? json_loads(ev->data, 0, NULL) : NULL;
    size_t i;
    json_t *v;
    int found = 0;
    json_array_foreach(json_object_get(d, "members"), i, v) found |= pl_map_get(&C.users, json_integer_value(v)) != NULL;
    json_decref(d);
    return found;
}

/* A membership event of a conversation this node does not follow: logged
 * for sessions still authenticating (the membership log). */
static void mlog_unfollowed(const pl_event *ev) {
    if (ev->kind == PL_EV_MEMBER_ADDED) mlog_add(ev->subject, ev->conv, ev->seq, 1);
    else if (ev->kind == PL_EV_MEMBER_REMOVED || ev->kind == PL_EV_MEMBER_LEFT) mlog_add(ev->subject, ev->conv, ev->seq, 0);
    else if (ev->kind == PL_EV_CREATED) {
        json_t *d = ev->data ? json_loads(ev->data, 0, NULL) : NULL;
        size_t i;
        json_t *v;
        json_array_foreach(json_object_get(d, "members"), i, v) mlog_add(json_integer_value(v), ev->conv, ev->seq, 1);
        json_decref(d);
    }
}

void deliver_on_event(void *ud, const pl_event *ev) {
    chat_conv *cv = conv_find(ev->conv);
    if (!cv) {
        if (!joins_local_user(ev)) {
            mlog_unfollowed(ev);
            return;
        }
        cv = conv_open(ev->conv, ev->seq - 1);
        conv_process(cv, ev);                 /* creates the subscriptions first */
        conv_maybe_release(cv);
        return;
    }
    if (cv->dying) return;
    conv_bus_event(cv, ev);
    conv_maybe_release(cv);
}

void deliver_on_head(void *ud, int64_t conv, int64_t seq) {
    chat_conv *cv = conv_find(conv);
    if (!cv || cv->dying || C.stopping) return;
    conv_head(cv, seq);
    conv_maybe_release(cv);
}

/* A local user became a member at seq (announced on the user's channel, for
 * nodes that did not follow the conversation yet). */
void deliver_on_join(void *ud, int64_t user, int64_t conv, int64_t seq) {
    mlog_add(user, conv, seq, 1);
    chat_user *u = pl_map_get(&C.users, user);
    if (!u || C.stopping) return;
    for (session *s = u->sessions; s; s = s->unext) {
        if (s->state != S_AUTHED || sub_find(s, conv)) continue;
        sub *x = sub_create(s, conv, seq - 1, seq - 1, seq - 1, s->held ? SUB_HELD : SUB_LIVE);
        conv_head(x->conv, seq);
    }
}

void deliver_on_conv_ready(void *ud, int64_t conv) {
    chat_conv *cv = conv_find(conv);
    if (!cv || C.stopping) return;
    verify_add(conv);
    if (!cv->bus_live) {
        cv->bus_live = 1;
        if (cv->pins) session_bus_live();
    }
}

chat_conv *deliver_conv_pin(int64_t conv, int64_t seq) {
    chat_conv *cv = conv_find(conv);
    if (cv && (cv->bus_live || cv->pins == UINT16_MAX)) return NULL;
    if (!cv) cv = conv_open(conv, seq);       /* the local bus confirms inside */
    if (cv->bus_live) {
        conv_maybe_release(cv);
        return NULL;
    }
    cv->pins++;
    return cv;
}

void deliver_conv_unpin(chat_conv *cv) {
    cv->pins--;
    conv_maybe_release(cv);
}

void deliver_on_user_ready(void *ud, int64_t user) {
    if (!C.bus || !C.bus->shared || C.stopping) return;
    reconcile_add(user);
    session_check_logins(user);
}

void deliver_on_resync(void *ud) {
    if (C.stopping) return;
    pl_count(&pl_m_bus_resyncs, 1);
    presence_resync();
    for (size_t i = 0; i < C.convs.cap; i++)
        if (C.convs.slots[i].key) verify_add(C.convs.slots[i].key);
    for (size_t i = 0; i < C.users.cap; i++)
        if (C.users.slots[i].key) reconcile_add(C.users.slots[i].key);
}

/* Memberships the bus may not have told us about (cluster mode): a session
 * without a subscription for one of its user's conversations gets one,
 * from the seq its user joined at. Removals come as events (heads). */
static void reconcile_done(pl_job *j) {
    check_op *op = (check_op *)j;
    if (j->result && !C.stopping)
        for (size_t i = 0; i < j->nids; i++) reconcile_add(op->ids[i]);
    for (size_t i = 0; j->result == PL_STORE_OK && !C.stopping && i < j->nmships; i++) {
        const pl_membership *m = &j->mships[i];
        chat_user *u = pl_map_get(&C.users, m->user);
        for (session *s = u ? u->sessions : NULL; s; s = s->unext) {
            if (s->state != S_AUTHED || sub_find(s, m->conv)) continue;
            sub *x = sub_create(s, m->conv, m->joined_seq - 1, m->joined_seq - 1, m->joined_seq - 1,
                                s->held ? SUB_HELD : SUB_CATCHUP);
            if (x->state == SUB_CATCHUP) sub_catch_up(x, 0);
            conv_head(x->conv, m->last_seq);
        }
    }
    pl_job_release(j);
    free(op->ids);
    free(op);
}

/* ---- watchers (long-polls) ------------------------------------------------ */

void pl_chat_watch(int64_t conv, int64_t after, int on) {
    if (C.stopping) return;
    chat_conv *cv = conv_find(conv);
    if (on) {
        if (!cv) cv = conv_open(conv, after);
        else if (!cv->nsubs && after < cv->published) cv->published = cv->known = after;
        cv->watchers++;
        return;
    }
    if (!cv || !cv->watchers) return;
    cv->watchers--;
    conv_maybe_release(cv);
}

/* ---- sync ------------------------------------------------------------------ */

static int conv_is_large(const chat_conv *cv) {
    int64_t lg = C.cfg->large_group;
    return lg > 0 && cv->kind != PL_CONV_DIRECT && cv->members > lg;
}

/* A large group (the design note): the cursor moves to the head, or to just
 * before the session's own removal so that it still gets that; its
 * mentions above the client's cursor are read first. */
static void sync_online_only(sub *x, int64_t cursor, int64_t top) {
    int64_t head = top;
    if (x->end_seq && head >= x->end_seq) head = x->end_seq - 1;
    if (head < cursor) head = cursor;
    x->sent_seq = head;
    x->online_only = 1;
    if (cursor < head) {
        x->mention_pending = 1;
        x->mention_after = cursor;
        x->mention_upto = head;
    }
}

/* The mentions of one sync, read page by page (ascending); the latest
 * MENTIONS_MAX are kept. The read holds the subscription's read slot
 * (x->reading) and one of the replay queue's. */
typedef struct mention_op {
    pl_job   job;
    sub     *x;
    int64_t  upto;
    pl_event keep[MENTIONS_MAX];
    size_t   nkeep;
} mention_op;

static void mention_keep(mention_op *op, pl_event *ev) {
    if (op->nkeep == MENTIONS_MAX) {          /* the oldest goes */
        pl_event_release(&op->keep[0]);
        memmove(op->keep, op->keep + 1, (MENTIONS_MAX - 1) * sizeof *op->keep);
        op->nkeep--;
    }
    op->keep[op->nkeep++] = *ev;              /* moved: the job no longer owns it */
    memset(ev, 0, sizeof *ev);
}

static void mention_send(sub *x, mention_op *op) {
    pl_conn *c = x->sess->conn;
    for (size_t i = 0; i < op->nkeep; i++) {
        pl_sbuf b;
        pl_sbuf_init(&b);
        pl_sbuf_printf(&b, "{\"type\":\"mention\",\"conversation\":%lld,\"event\":{", (long long)x->conv->id);
        pl_proto_event_fields(&b, &op->keep[i]);
        pl_sbuf_adds(&b, "}}");
        pl_rbuf *f = pl_ws_text_frame(b.p, b.len);
        pl_sbuf_release(&b);
        int failed = chat_deliver(c, f);
        pl_rbuf_unref(&f);
        if (failed) return;                   /* closing: nothing more for it */
        pl_count(&pl_m_frames_out, 1);
    }
}

static void mention_done(pl_job *j) {
    mention_op *op = (mention_op *)j;
    sub *x = op->x;
    int64_t last = j->after;
    /* not a member as far as the store knows (a removal this stream has
     * not processed yet): no mentions; the replay ends at the removal */
    int ok = j->result == PL_STORE_OK || j->result == PL_STORE_ENOTFOUND;
    for (size_t i = 0; ok && i < j->nevents; i++) {
        pl_event *ev = &j->events[i];
        if (ev->seq <= last || ev->seq > op->upto) continue;
        last = ev->seq;
        if (!x->end_seq || ev->seq < x->end_seq) mention_keep(op, ev);
    }
    int more = ok && j->more && j->nevents && last > j->after && last < op->upto;
    pl_job_release(j);
    if (more && !x->detached && !C.stopping && is_ws_open(x->sess->conn)) {
        j->after = last;                      /* the next page, in the same slot */
        j->more = 0;
        j->result = PL_STORE_OK;
        pl_store_submit(C.store, j);
        return;
    }
    C.inflight--;
    C.inflight_cost -= REPLAY_PAGE;
    x->reading = 0;
    if (x->detached || C.stopping) {
        if (x->detached) free(x);
    } else if (!ok) {
        pl_conn *c = x->sess->conn;
        pl_log(PL_LOG_ERROR, c->id, "mentions read failed", "\"conversation\":%lld", (long long)x->conv->id);
        if (is_ws_open(c)) chat_close(c, PL_CLOSE_TRY_AGAIN, "store unavailable: reconnect and sync");
    } else {
        session_uncork(x->sess);
        mention_send(x, op);
        replay_next(x);                       /* what was published meanwhile, then synced */
    }
    for (size_t i = 0; i < op->nkeep; i++) pl_event_release(&op->keep[i]);
    free(op);
    if (C.rq_head && !uv_is_active((uv_handle_t *)&C.replayer)) uv_idle_start(&C.replayer, replay_turn);
}

static void mention_read(sub *x) {
    mention_op *op = pl_calloc(1, sizeof *op);
    op->x = x;
    op->upto = x->mention_upto;
    op->job.op = PL_READ_MENTIONS;
    op->job.conv = x->conv->id;
    op->job.user = x->sess->user;
    op->job.after = x->mention_after;
    op->job.limit = MENTIONS_MAX;
    op->job.done = mention_done;
    x->mention_pending = 0;
    x->reading = 1;
    C.inflight++;
    C.inflight_cost += REPLAY_PAGE;           /* replay_cost of a mention read */
    pl_store_submit(C.store, &op->job);
}

/* Every cursor is applied before any replay starts: a replay served from
 * the frame ring goes out at once, and an SSE event's id carries every
 * conversation's sent_seq, so a conversation not yet applied would be
 * named at its head, not at its cursor (a resume from that id lost its
 * events). */
void deliver_sync(session *s, json_t *cursors, json_t *req) {
    void *it = NULL;
    int64_t conv, seq;
    size_t n = 0, cap = json_object_size(cursors);
    sub **catch_up = cap ? pl_malloc(cap * sizeof *catch_up) : NULL;
    while (pl_proto_cursor(cursors, &it, &conv, &seq) == 0) {
        sub *x = sub_find(s, conv);
        int64_t ended = x ? 0 : held_end(s, conv);
        if (ended) {                             /* its stream ended at the removal, sent */
            char msg[96];
            int len = snprintf(msg, sizeof msg, "{\"type\":\"synced\",\"conversation\":%lld,\"seq\":%lld}",
                               (long long)conv, (long long)ended);
            chat_send_text(s->conn, msg, (size_t)len, 1);
            continue;
        }
        if (!x) {
            pl_sbuf b;
            pl_sbuf_init(&b);
            pl_sbuf_adds(&b, "{\"type\":\"error\"");
            pl_proto_add_req(&b, req);
            pl_sbuf_printf(&b, ",\"code\":\"not_found\",\"message\":\"no such conversation\",\"conversation\":%lld}",
                           (long long)conv);
            chat_send_text(s->conn, b.p, b.len, 1);
            pl_sbuf_release(&b);
            continue;
        }
        int64_t top = x->conv->published > x->sent_seq ? x->conv->published : x->sent_seq;
        if (x->conv->known > top) top = x->conv->known;   /* committed, not yet published */
        if (seq > top) seq = top;                /* above the last seq: the last seq */
        x->synced_at = top;
        if (x->end_seq && x->synced_at > x->end_seq) x->synced_at = x->end_seq;
        if (seq < x->floor) seq = x->floor;      /* before joining: from joining */
        if (conv_is_large(x->conv)) sync_online_only(x, seq, top);
        else {
            /* A replay still owed to an earlier sync goes on from where it
             * is: a cursor above it would skip what that sync asked for
             * (audit R3: two syncs in one read, the first's events lost). */
            if (x->state != SUB_CATCHUP || seq < x->sent_seq) x->sent_seq = seq;
            x->online_only = 0;
        }
        if (n < cap) catch_up[n++] = x;
    }
    for (size_t i = 0; i < n; i++) sub_catch_up(catch_up[i], 1);
    free(catch_up);
}

/* ---- history ------------------------------------------------------------------ */

typedef struct hist_op {
    pl_job          job;
    pl_chat_json_cb cb;
    void           *arg;
} hist_op;

/* Encodes the page within the reply budget: the events nearest the paging
 * start are kept (the lowest for a forward page, the highest for a page
 * from the top), at least one; a page cut short says has_more. */
static void hist_done(pl_job *j) {
    hist_op *op = (hist_op *)j;
    if (j->result != PL_STORE_OK) {
        op->cb(op->arg, j->result, NULL, 0);
        goto out;
    }
    size_t budget = chat_reply_budget(), n = j->nevents, used = 0;
    int top = (j->flags & PL_READ_FROM_TOP) != 0;
    pl_sbuf *enc = n ? pl_calloc(n, sizeof *enc) : NULL;
    size_t first = 0, last = n;                  /* the kept range [first, last) */
    for (size_t k = 0; k < n; k++) {
        size_t i = top ? n - 1 - k : k;
        pl_sbuf_init(&enc[i]);
        pl_sbuf_addc(&enc[i], '{');
        pl_proto_event_fields(&enc[i], &j->events[i]);
        pl_sbuf_addc(&enc[i], '}');
        if (k && used + enc[i].len > budget) {
            if (top) first = i + 1;
            else last = i;
            pl_sbuf_release(&enc[i]);
            break;
        }
        used += enc[i].len + 1;
    }
    int more = j->more || first > 0 || last < n;
    pl_sbuf out;
    pl_sbuf_init(&out);
    pl_sbuf_printf(&out, "\"conversation\":%lld,\"events\":[", (long long)j->conv);
    for (size_t i = first; i < last; i++) {
        if (i > first) pl_sbuf_addc(&out, ',');
        pl_sbuf_add(&out, enc[i].p, enc[i].len);
    }
    for (size_t i = first; i < last; i++) pl_sbuf_release(&enc[i]);
    free(enc);
    pl_sbuf_printf(&out, "],\"has_more\":%s", more ? "true" : "false");
    op->cb(op->arg, PL_STORE_OK, out.p, out.len);
    pl_sbuf_release(&out);
out:
    pl_job_release(j);
    free(op);
}

int pl_chat_history(int64_t conv, int64_t user, int64_t after, int64_t before, int limit,
                    pl_chat_json_cb cb, void *arg) {
    if (C.stopping) return PL_STORE_EUNAVAIL;
    hist_op *op = pl_calloc(1, sizeof *op);
    op->cb = cb;
    op->arg = arg;
    op->job.op = PL_READ_EVENTS;
    op->job.conv = conv;
    op->job.user = user;
    op->job.after = after;
    op->job.before = before;
    op->job.limit = limit;
    op->job.flags = before > 0 && after == 0 ? PL_READ_FROM_TOP : 0;
    op->job.done = hist_done;
    pl_store_submit(C.store, &op->job);
    return 0;
}

void do_history(session *s, pl_msg *m) {
    ws_reply *r = ws_reply_new(s, m, "history");
    int rc = pl_chat_history(m->conv, s->user, m->after, m->before, m->limit, ws_reply_json, r);
    if (rc) ws_reply_json(r, rc, NULL, 0);
}

/* ---- shutdown ---------------------------------------------------------------- */

void deliver_shutdown(void) {
    flow_shutdown();                          /* held acks go out before `reconnect` */
    uv_idle_stop(&C.replayer);
    uv_timer_stop(&C.gap_timer);
    uv_check_stop(&C.flusher);
}

/* After the store closed (every read has completed): frees the streams and
 * the queue, closes the handles. */
void deliver_free(void) {
    while (C.rq_head) {
        sub *x = C.rq_head;
        C.rq_head = x->qnext;
        x->queued = 0;
        if (x->detached) free(x);
    }
    C.rq_tail = NULL;
    for (size_t i = 0; i < C.convs.cap; i++) {
        chat_conv *cv = C.convs.slots ? C.convs.slots[i].val : NULL;
        if (!C.convs.slots || !C.convs.slots[i].key) continue;
        typing_clear_conv(cv);
        held_clear(cv);
        ring_free(cv);
        free(cv);
    }
    pl_map_release(&C.convs);
    pl_map_release(&rings);
    free(C.verify);
    free(C.reconcile);
    free(C.changed);
    C.verify = C.reconcile = C.changed = NULL;
    uv_close((uv_handle_t *)&C.replayer, NULL);
    uv_close((uv_handle_t *)&C.gap_timer, NULL);
    uv_close((uv_handle_t *)&C.flusher, NULL);
    flow_free();
    pl_rbuf_unref(&arena);
    pl_sbuf_release(&arena_json);
}
