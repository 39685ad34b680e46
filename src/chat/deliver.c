/* deliver.c — conversation streams, subscriptions and live delivery
 * (chat_int.h holds the design note and its invariants; the deliver*.c
 * files keep them, and deliver_int.h says which file has what).
 *
 * Owns: chat_conv and sub lifecycles, ordering bus events per conversation,
 * gap fills from the store, the frame arena, processing an event in order
 * (live fan-out, membership changes), the bus handlers, long-poll watchers,
 * init and shutdown.
 * Not here: catching up, `sync` and `history` (deliver_sync.c), recent
 * frames (deliver_ring.c), the membership log (deliver_mlog.c), the checks
 * that follow a bus subscription or a bus loss (deliver_checks.c).
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
#include "deliver_int.h"
#include "flow.h"

_Static_assert(sizeof(chat_conv) <= 128, "chat_conv must fit a 128-byte allocator block (chat_int.h)");
_Static_assert(HELD_MAX <= 32768 && TYPISTS_MAX <= 128, "chat_conv's held and typing counts (doubling capacities) must fit their fields");

static void conv_process(chat_conv *cv, const pl_event *ev);
static void sub_drop(sub *x);
static void gap_tick(uv_timer_t *t);

void deliver_init(void) {
    pl_map_init(&C.convs);
    pl_map_init(&deliver_rings);
    ring_init();
    uv_idle_init(C.loop, &C.replayer);
    uv_timer_init(C.loop, &C.gap_timer);
    uv_unref((uv_handle_t *)&C.gap_timer);
    uv_timer_init(C.loop, &C.linger_timer);
    uv_unref((uv_handle_t *)&C.linger_timer);
    uv_check_init(C.loop, &C.flusher);
    uv_unref((uv_handle_t *)&C.flusher);
    flow_init();
}

pl_rbuf *event_frame(const pl_event *ev) {
    pl_sbuf s;
    pl_sbuf_init(&s);
    pl_proto_event(&s, ev);
    pl_rbuf *b = pl_ws_text_frame(s.p, s.len);
    pl_sbuf_release(&s);
    return b;
}

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
int deliver_one(sub *x, const pl_event *ev) {
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

/* Frees a stream nobody follows any more (invariant 5), once it no longer
 * lingers (ring_keep). Call only where cv is not used afterwards; inside
 * conv_process it waits for the caller (every entry point ends with it). */
void conv_maybe_release(chat_conv *cv) {
    if (cv->nsubs || cv->watchers || cv->pins || cv->dying || processing) return;
    if (ring_keep(cv)) return;
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

/* Whether cv processes its events in order (invariant 5): with
 * subscriptions, or with recent frames to keep exact (a lingering stream). */
static int ordered(const chat_conv *cv) { return cv->nsubs || cv->has_ring; }

/* An event from the bus (any order, duplicates, losses: bus.h). */
static void conv_bus_event(chat_conv *cv, const pl_event *ev) {
    if (!ordered(cv)) {                       /* watchers only: no order kept */
        if (ev->seq > cv->published) cv->published = cv->known = ev->seq;
        /* reported at or below the head too: a stream the watch created
         * starts at its first watcher's `after`, which may be past the
         * conversation's head (audit M6: a poll with after=50 on a head
         * of 1 kept every poll on the conversation waiting out its wait) */
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

void conv_head(chat_conv *cv, int64_t seq) {
    if (!ordered(cv)) {
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
    } else if (!ordered(cv)) {
        /* it lost its order meanwhile (its last subscription, or a lingering
         * ring, went; watchers hold it): the head is all it follows now,
         * and reading the gap again would not close it (audit L7) */
        int64_t head = cv->known;
        if (j->nevents && j->events[j->nevents - 1].seq > head) head = j->events[j->nevents - 1].seq;
        cv->published = cv->known = head;
        if (cv->watchers) changed_add(cv->id);
        conv_maybe_release(cv);
    } else {
        pl_count(&pl_m_gap_events, j->nevents);
        for (size_t i = 0; i < j->nevents && ordered(cv); i++)
            if (j->events[i].seq == cv->published + 1) {
                conv_process(cv, &j->events[i]);
                held_drain(cv);
            }
        /* the store is the truth: what it does not have (yet) we stop waiting for */
        if (!j->nevents && !j->more && cv->known > cv->published && !cv->nheld) cv->known = cv->published;
        if (ordered(cv)) gap_arm(cv);
        if (cv->known > cv->published && j->nevents) fill_start(cv);
        conv_maybe_release(cv);
    }
    pl_job_release(j);
    free(op);
}

/* ---- subscriptions --------------------------------------------------------- */

sub *sub_find(session *s, int64_t conv) {
    if (s->submap) return pl_map_get(s->submap, conv);
    for (uint32_t i = 0; i < s->nsubs; i++)
        if (s->subs[i]->conv->id == conv) return s->subs[i];
    return NULL;
}

sub *sub_create(session *s, int64_t conv, int64_t stream_seq, int64_t sent_seq, int64_t floor, int state) {
    sub *x = sub_find(s, conv);
    if (x) return x;
    chat_conv *cv = conv_find(conv);
    if (!cv) cv = conv_open(conv, stream_seq);
    else if (!ordered(cv)) {                  /* a watched stream gets an order now */
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
    ring_followed(cv);
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
void sub_caught_up(sub *x) {
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

/* ---- processing an event in order (seq == published + 1) ---------------- */

/* An authenticated session of a user who became a member of conv at seq
 * follows it from seq. */
void join_session(session *s, int64_t conv, int64_t seq) {
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
void end_session(session *s, chat_conv *cv, int64_t seq) {
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
 * later, they carried edits, reactions and pins made after the removal; a
 * conversation with a held subscription keeps a ring for that, the ring's
 * note 4). */
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
    if (ring_wanted(cv)) {
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
    deliver_on_erased(ud);                    /* an `erased` may have been lost */
    presence_resync();
    for (size_t i = 0; i < C.convs.cap; i++)
        if (C.convs.slots[i].key) verify_add(C.convs.slots[i].key);
    for (size_t i = 0; i < C.users.cap; i++)
        if (C.users.slots[i].key) reconcile_add(C.users.slots[i].key);
}

/* ---- watchers (long-polls) ------------------------------------------------ */

/* A new watch is given `published` as it stands: every event the stream
 * was told of is at or below it, or is reported when it is processed (an
 * ordered stream's held or missing ones, and those above the head a
 * stream takes when it gets an order, sub_create). A watch leaves it as
 * it is: lowered to the watch's `after` (as it once was, so that the
 * events above would be reported), what lay between would be neither
 * reported nor below the head the next watch is given. A stream the watch
 * creates starts at `after`; what went by before its bus subscription,
 * the heads check after the subscription's confirmation reports
 * (conv_ready -> verify_add -> conv_head). */
int64_t pl_chat_watch(int64_t conv, int64_t after, int on) {
    if (C.stopping) return 0;
    chat_conv *cv = conv_find(conv);
    if (on) {
        if (!cv) cv = conv_open(conv, after);
        cv->watchers++;
        return cv->published;
    }
    if (!cv || !cv->watchers) return 0;
    cv->watchers--;
    conv_maybe_release(cv);
    return 0;
}

/* ---- shutdown ---------------------------------------------------------------- */

void deliver_shutdown(void) {
    flow_shutdown();                          /* held acks go out before `reconnect` */
    uv_idle_stop(&C.replayer);
    uv_timer_stop(&C.gap_timer);
    uv_timer_stop(&C.linger_timer);
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
    pl_map_release(&deliver_rings);
    ring_release();
    free(C.verify);
    free(C.reconcile);
    free(C.changed);
    C.verify = C.reconcile = C.changed = NULL;
    uv_close((uv_handle_t *)&C.replayer, NULL);
    uv_close((uv_handle_t *)&C.gap_timer, NULL);
    uv_close((uv_handle_t *)&C.linger_timer, NULL);
    uv_close((uv_handle_t *)&C.flusher, NULL);
    flow_free();
    pl_rbuf_unref(&arena);
    pl_sbuf_release(&arena_json);
}
