/* deliver_sync.c — the read side of delivery: a session catching up
 * (chat_int.h's design note: the CATCHUP state, invariants 1, 2 and 4).
 *
 * Owns: the replay queue and its store reads (subscriptions in CATCHUP, a
 * session waiting for its write queue to drain, the cork that sends a
 * resume's `ready` with its first page), `sync` (a large group's mentions
 * included) and `history`.
 * Not here: subscriptions and live delivery (deliver.c), the recent frames
 * a replay is served from before it reads (deliver_ring.c).
 */
#include <stdlib.h>
#include <string.h>

#include "../core/alloc.h"
#include "../core/clock.h"
#include "../core/log.h"
#include "../core/metrics.h"
#include "../ws/wsconn.h"
#include "chat_int.h"
#include "deliver_int.h"

static void replay_turn(uv_idle_t *h);
static void mention_read(sub *x);

/* ---- catching up (subscriptions in CATCHUP) ------------------------------ */

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

static void session_wait_drain(session *s) {
    session_uncork(s);                        /* a corked queue cannot drain */
    if (s->waiting_drain) return;
    s->waiting_drain = 1;
    s->drain_since = pl_mono_ms();
    int64_t cut = s->drain_since + (int64_t)C.cfg->slow_timeout * 1000;
    if (!s->conn->deadline || cut < s->conn->deadline) s->conn->deadline = cut;
}

/* Decides x's next step after progress (invariant 4). */
void replay_next(sub *x) {
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

/* The member_removed seq of conv if s (a held WebSocket session) was
 * removed from it during its hold (end_finish), else 0. */
static int64_t held_end(const session *s, int64_t conv) {
    if (s->tp != TP_WS) return 0;
    for (uint32_t i = 0; i < s->nresume; i++)
        if (s->resume[i].conv == conv) return s->resume[i].seq;
    return 0;
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
