/* chat_int.h — what the chat/ files share; nothing outside chat/ includes it.
 *
 * ---- Delivery design note ------------------------------------------------
 *
 * Two levels, both ordered by seq:
 *
 * A conversation stream (chat_conv, deliver.c) is this node's view of one
 * conversation's log. `published` is the highest seq this node has handed
 * to its subscriptions, contiguously: every event at or below it has been
 * processed, in order, exactly once. Events reach it from the bus (any
 * order, duplicates, losses: bus.h) and from the store (gap fills):
 *
 *   bus event seq == published + 1  --> process, then any held successors
 *   bus event seq <= published      --> drop (seen)
 *   bus event seq >  published + 1  --> hold it (bounded), and if the gap is
 *                                       still open after GAP_WAIT_MS (0 in
 *                                       embedded mode), read the gap from
 *                                       the store (fill) and process it
 *   head(seq), conv_ready, resync   --> known = max(known, head); fill
 *
 * A subscription (sub) is one session's cursor in one conversation:
 * sent_seq is the highest seq written to that session, floor the last seq
 * before it joined (visibility, store.h invariant 4), end_seq the seq of its
 * own removal (0 while a member).
 *
 *           sync/cursor behind, or release of a hold
 *   HELD -----------------------------------------> CATCHUP
 *                 (handshake auth: nothing is sent until the first message
 *                  or HOLD_MS, so a first `sync` sets the cursor exactly)
 *   CATCHUP --sent_seq reaches min(published, end_seq)--> LIVE (or gone at end_seq)
 *   LIVE --conversation processes seq N == sent_seq + 1--> LIVE, N delivered
 *   LIVE --sync with an older cursor--> CATCHUP
 *   any --own member_removed/left at R--> end_seq = R: delivered up to and
 *         including R, then the subscription is dropped
 *
 * Invariants:
 *   1. A session gets seq N of a conversation only after N-1 (sent_seq grows
 *      by exactly one per frame) and never a seq at or below its floor: each
 *      event once, in order, only what its user may see.
 *   2. Only committed events reach a conversation stream (the bus carries
 *      what the store's commit hook published; fills read the store), and a
 *      replay never reads above `published`: a session is never sent an
 *      event the conversation stream has not processed, so a removal at R
 *      (processed in order) always sets end_seq before anything above R can
 *      be sent to that member, held or catching up included.
 *   3. A LIVE subscription has sent_seq == published of its stream (or is
 *      ahead, when its session's own read saw a later head; then the stream
 *      is filling up to it and the subscription skips what it has).
 *   4. Replays are scheduled round-robin through one queue, one page per
 *      turn per subscription, with at most REPLAY_INFLIGHT pages' worth of
 *      events in flight (a read's worth is the smaller of a page and its
 *      gap, sub_target - sent_seq, which bounds what it can return) and at
 *      most REPLAY_READS_MAX reads;
 *      a subscription that is caught up is never read for; a session whose
 *      write queue is above its high-water mark waits for on_drain (and is
 *      closed with 4008 after slow-timeout); a dead connection stops its
 *      replays.
 *   5. A stream exists while it has subscriptions, long-poll watchers or
 *      pins, or lingers (a stream with recent frames, RING_LINGER_MS after
 *      the last of those went: deliver_ring.c), and while it exists this
 *      node is subscribed to it on the bus. A stream with subscriptions or
 *      recent frames is processed in order (`published` as above); one
 *      with watchers only just follows the head.
 *
 * Replays read as the session's user, so that messages come in their
 * current form for that user (reactions' "me"); when the store's view of
 * the membership is ahead of the stream's (a removal, or a removal and a
 * new joining, not processed here yet) the page is read again without the
 * user, as gap fills read, so invariants 1 and 2 hold as before.
 *
 * Large groups (more than --large-group members, as the stream last knew:
 * the session read's count, kept up to date by the membership events it
 * processes) are not replayed: a `sync` moves the cursor to the head (or
 * just before the session's own removal), then the subscription reads the
 * user's mentions above the client's cursor (PL_READ_MENTIONS, through the
 * replay queue, in CATCHUP so nothing live interleaves), sends the latest
 * MENTIONS_MAX of them as `mention` frames, replays whatever was published
 * meanwhile, and reports `synced` with online_only.
 */
#ifndef PL_CHAT_INT_H
#define PL_CHAT_INT_H

#include <jansson.h>

#include "../core/map.h"
#include "../core/ratelimit.h"
#include "../proto/proto.h"
#include "chat.h"

#define REPLAY_PAGE          PL_STORE_PAGE_MAX
#define REPLAY_INFLIGHT      32       /* pages' worth of replay events in flight */
#define REPLAY_READS_MAX     4096     /* replay reads in flight, all sessions (~1 KB
                                         each): a storm's resumes, a few events
                                         behind each, are held by the event
                                         bound above (~2,000 reads), not this */
#define FILL_PAGE            PL_STORE_PAGE_MAX
#define HELD_MAX             256      /* out-of-order bus events kept per stream */
#define GAP_WAIT_MS          30       /* cluster mode: wait this long for a missing event */
#define TICK_MS              250      /* presence and typing sweep            */
#define HOLD_MS              1000     /* handshake sessions wait this long for `sync` */
#define AUTH_QUEUE_MAX       64       /* messages kept while authenticating   */
#define BUS_WAIT_MS          1000     /* longest `ready` waits for the bus (session_auth.c) */
#define BUS_WAIT_TICK_MS     50       /* ... looked at this often, and on each confirmation */
#define PRESENCE_FANOUT_MAX  200      /* live sessions above which a stream gets no presence */
#define TYPING_FANOUT_MAX    200      /* ... and no typing                    */
#define TYPISTS_MAX          8        /* typing entries kept per conversation */
#define SUBMAP_MIN           16       /* subscriptions above which a session indexes them */
#define MENTIONS_MAX         50       /* mentions a large group's sync sends (the latest) */

typedef struct chat_conv chat_conv;
typedef struct session session;
typedef struct sub sub;

enum { SUB_LIVE = 0, SUB_HELD = 1, SUB_CATCHUP = 2 };

struct sub {
    chat_conv *conv;
    session   *sess;
    sub       *next, *prev;       /* in the stream's list                   */
    sub       *qnext;             /* replay queue                            */
    int64_t    sent_seq;          /* invariant 1                             */
    int64_t    floor;             /* joined_seq - 1                          */
    int64_t    end_seq;           /* own removal, or 0                       */
    int64_t    rejoin_seq;        /* re-added at this seq while ending, or 0 */
    int64_t    acked_delivered;   /* the user's cursors as the store last said */
    int64_t    acked_read;
    uint8_t    state;             /* SUB_*                                   */
    uint8_t    queued;            /* in the replay queue                     */
    uint8_t    reading;           /* a replay read is in flight              */
    uint8_t    report_synced;     /* how many `synced` to send when caught up
                                   * (one per sync) and sent_seq reached synced_at */
    uint8_t    detached;          /* its session is gone; freed when the read returns */
    uint8_t    online_only;       /* `synced` says online_only (a large group) */
    uint8_t    mention_pending;   /* a large group's sync: read its mentions first */
    int64_t    mention_after;     /* ... above the client's cursor            */
    int64_t    mention_upto;      /* ... up to the head its cursor moved to   */
    int64_t    synced_at;         /* the head the store had when sync came (the
                                   * stream may not have published it yet) */
};

/* 1 once x's user was removed from (or left) its conversation and not
 * added again: its stream ends at end_seq, and no ephemeral frame of the
 * conversation (typing, receipts, presence) reaches it any more, also
 * while its replay has not yet reached the removal (audit L5). */
static inline int sub_removed(const sub *x) { return x->end_seq && !x->rejoin_seq; }

typedef struct typing_ent {
    int64_t user;
    int64_t expires;              /* mono ms                                 */
    int64_t forwarded;            /* mono ms of the last forwarded start     */
    int64_t published;            /* mono ms of the last start this node published */
    int32_t origin;               /* the node that published the last start  */
} typing_ent;

struct chat_conv {
    int64_t     id;
    int64_t     published;        /* the design note                         */
    int64_t     known;            /* highest seq known to exist, >= published */
    int64_t     members;          /* member count as of members_seq; -1 unknown */
    int64_t     members_seq;
    sub        *subs;
    pl_event   *held;             /* out-of-order events, ascending seq      */
    int64_t     gap_at;           /* mono ms a fill is due (in the gap list) */
    chat_conv  *gnext, *gprev;    /* the gap list                            */
    typing_ent *typing;           /* who is typing here (never stored)       */
    chat_conv  *tnext, *tprev;    /* the list of streams with typing         */
    uint32_t    nsubs;
    uint32_t    watchers;         /* long-polls                              */
    uint32_t    flow_turn;
    uint16_t    nheld, capheld;   /* at most HELD_MAX                        */
    uint8_t     ntyping, captyping; /* at most TYPISTS_MAX                   */
    uint8_t     kind;             /* pl_conv_kind; 0 unknown                 */
    /* small counts and flags as bits: a node holds one of these per
     * conversation it follows (a DM per pair of users online); the
     * assertion in deliver.c keeps it within a 128-byte allocator block */
    uint8_t     in_gaps : 1;
    uint8_t     filling : 1;      /* a fill read is in flight                */
    uint8_t     dying : 1;        /* released: freed when its fill returns   */
    uint8_t     in_typing : 1;
    uint8_t     flow_on : 1;      /* pushing back on senders (flow.c)        */
    uint8_t     flow_evaluated : 1; /* flow_on was computed at flow_turn     */
    uint8_t     has_ring : 1;     /* keeps its recent frames (deliver_ring.c) */
    uint8_t     blocked : 1;      /* a direct one under a block: no typing
                                   * (typing.c; learned from the session
                                   * read and the bus's conv_blocked)      */
    uint8_t     bus_live : 1;     /* the bus confirmed its subscription     */
    uint16_t    pins;             /* sessions waiting for bus_live (session_auth.c) */
};

typedef struct chat_user {
    int64_t   id;
    session  *sessions;
    pl_bucket typing_tb;          /* rate limits on ephemeral signals        */
    pl_bucket presence_tb;
    int64_t   limited_at;         /* last rate_limited error sent (mono ms)  */
} chat_user;

typedef struct pending_msg {
    struct pending_msg *next;
    size_t              len;
    uint8_t             data[];
} pending_msg;

enum { S_NEW = 0, S_AUTHING = 1, S_AUTHED = 2 };

/* How a session's frames reach its client (docs/design.md "Transports").
 * Frames are built once as WebSocket text frames (the common case, shared
 * by every recipient); chat_deliver* hand them to the session's transport,
 * and sse.c re-encodes them, once per frame, for SSE sessions. */
enum { TP_WS = 0, TP_SSE = 1 };

/* One per connection, idle ones included: keep it within 120 bytes on
 * x86-64 (a 128-byte malloc chunk; the assertion in session.c), pointers
 * and 64-bit fields first, then the 32-bit ones, then the bytes. */
struct session {
    pl_conn   *conn;
    int64_t    user, login;
    session   *unext, *uprev;     /* the user's sessions                     */
    sub      **subs;              /* &sub1 while capsubs is 1: a session in one
                                   * conversation allocates no array       */
    sub       *sub1;
    uint32_t   nsubs, capsubs;
    pl_map    *submap;            /* conv -> sub once nsubs > SUBMAP_MIN     */
    int64_t    last_hb;           /* mono ms of the last message (heartbeat) */
    int64_t    drain_since;       /* mono ms the wait began                  */
    pending_msg *pq_head;         /* messages that came while authenticating */
    pl_cursor *resume;            /* SSE: the Last-Event-ID cursors, until applied;
                                   * a held WebSocket session: the conversations
                                   * it was removed from during the hold, at
                                   * their member_removed (deliver.c end_finish),
                                   * until its first message */
    uint32_t   nresume;
    uint32_t   pq_len;
    uint32_t   mark;              /* dedup generation for fan-out            */
    /* bits: the session stays within a 128-byte malloc chunk (the
     * assertion in session.c) */
    uint8_t    state : 2;         /* S_*                                     */
    uint8_t    away : 1;          /* the session said it is away            */
    uint8_t    held : 1;          /* live delivery held for a first `sync`   */
    uint8_t    waiting_drain : 1; /* replays paused on a full write queue    */
    uint8_t    tp : 1;            /* TP_WS or TP_SSE                         */
    uint8_t    resuming : 1;      /* SSE: opened with a Last-Event-ID        */
    uint8_t    corked : 1;        /* `ready` waits for the first replay page */
    uint8_t    ended : 1;         /* the server closed it: no longer counts for
                                   * presence (presence_session_ended)   */
};

typedef struct presence presence;

/* Process-wide state (the loop thread only). */
typedef struct chat_state {
    uv_loop_t       *loop;
    pl_store        *store;
    pl_bus          *bus;
    const pl_config *cfg;
    pl_chat_hooks    hooks;
    pl_map           users;       /* id -> chat_user                         */
    pl_map           convs;       /* id -> chat_conv                         */
    size_t           nsessions;
    int              stopping;    /* pl_chat_shutdown ran                    */
    /* deliver.c and deliver_*.c (deliver_int.h) */
    sub             *rq_head, *rq_tail;   /* replay queue                     */
    uint32_t         inflight;    /* replay reads in flight                  */
    uint32_t         inflight_cost; /* events those reads may return (invariant 4) */
    uv_idle_t        replayer;
    chat_conv       *gaps;        /* streams waiting for a missing event     */
    uv_timer_t       gap_timer;
    uv_timer_t       linger_timer; /* releases lingering streams (deliver_ring.c) */
    int64_t         *verify;      /* streams to check against the store      */
    size_t           nverify, capverify;
    int64_t         *reconcile;   /* users whose memberships to check        */
    size_t           nreconcile, capreconcile;
    int64_t         *changed;     /* watched streams that moved this turn    */
    size_t           nchanged, capchanged;
    uv_check_t       flusher;     /* sends the batched checks once per turn  */
    /* presence.c, typing.c */
    pl_map           presence;    /* user id -> presence                     */
    chat_conv       *typing;      /* streams with typing entries             */
    uv_timer_t       ticker;      /* presence and typing sweep               */
    uint32_t         mark;
    /* send.c */
    pl_limiter       user_sends;  /* embedded mode's message limits          */
    pl_limiter       conv_sends;
    int64_t          swept_at;
} chat_state;

extern chat_state C;
extern pl_chat_conn_ops CO;       /* connection operations (chat.h)          */

/* A reply to a WebSocket request, sent when an asynchronous helper answers:
 * ws_reply_json is a pl_chat_json_cb that sends {"type":..,"req":..,<json>}
 * or an error, and frees the reply. */
typedef struct ws_reply {
    pl_conn    *conn;             /* a reference                             */
    json_t     *root;             /* keeps req alive                          */
    json_t     *req;
    const char *type;
} ws_reply;

/* session.c (session_int.h: what it shares with session_auth.c) */
ws_reply *ws_reply_new(session *s, pl_msg *m, const char *type);
void      ws_reply_json(void *arg, int result, const char *json, size_t len);
int      chat_deliver(pl_conn *c, pl_rbuf *frame);          /* 0, or -1 (closed) */
int      chat_deliver_reply(pl_conn *c, pl_rbuf *frame);    /* a reply: see session.c */
void     chat_deliver_ephemeral(pl_conn *c, pl_rbuf *frame);
void     chat_send_text(pl_conn *c, const char *s, size_t n, int reply);
void     chat_send_error(pl_conn *c, json_t *req, const char *code, const char *msg);
/* The same with more fields (",\"k\":v..." JSON text, or NULL) before the
 * closing brace (and an `unavailable`'s retry_after). */
void     chat_send_error_with(pl_conn *c, json_t *req, const char *code, const char *msg, const char *fields);
chat_user *chat_user_get(int64_t id);
size_t   chat_reply_budget(void);
/* Closes c the way its transport does: a WebSocket close frame with code,
 * or (SSE) a final `close` event with code and reason, then end of stream. */
void     chat_close(pl_conn *c, int code, const char *reason);
/* A slow consumer: counted, logged, its unsent events dropped (whole ones
 * only), then closed with 4008. */
void     chat_close_slow(pl_conn *c);
/* A conversation event (x's conversation at seq) for x's session: as
 * chat_deliver, and an SSE session's event also carries its cursor id. */
int      chat_deliver_event(sub *x, pl_rbuf *frame, int64_t seq);
int      chat_deliver_event_part(sub *x, pl_rbuf *b, size_t off, size_t len);   /* WebSocket only */
int      chat_is_open(const pl_conn *c);   /* frames may still be queued */

/* session_auth.c (session_int.h: what it shares with session.c) */
/* A conversation's bus subscription was confirmed: sessions waiting for it
 * (their `ready`) are looked at on the next loop turn. */
void     session_bus_live(void);
/* The bus confirmed user's channel: the logins of its sessions here are
 * read again (a revocation published before may never have arrived). */
void     session_check_logins(int64_t user);

/* sse.c */
/* Queues frame (a WebSocket text frame) on SSE connection c; id: the
 * frame gets an `id:` line, the session's cursors, with id_for's
 * conversation (if not NULL) moved to seq by this event. The size check of the caller's contract comes
 * first: sse_frame_len says how many bytes it will queue. */
size_t   sse_frame_len(pl_conn *c, pl_rbuf *frame, int id, sub *id_for, int64_t seq);
void     sse_send(pl_conn *c, pl_rbuf *frame, int id, sub *id_for, int64_t seq);
void     sse_close(pl_conn *c, int code, const char *reason);
/* Whether a queue entry of an SSE stream begins an event (for
 * pl_conn_drop_unsent_units). */
int      sse_starts_event(const uint8_t *p, size_t n);
/* After `ready`: applies the Last-Event-ID cursors like a `sync`
 * (conversations it does not name: from their joining; ones the user left:
 * an error) and frees them. */
void     sse_resume(session *s);
/* Appends the session's cursor id (x's conversation at seq when x). */
void     sse_cursor_id(pl_sbuf *b, session *s, sub *x, int64_t seq);
void     sse_free(void);

/* deliver.c and deliver_*.c (deliver_int.h says which file owns what) */
void       deliver_init(void);
void       deliver_ring_min_subs(uint32_t n);   /* tests: subscriptions a ring needs (deliver_init: 3) */
void       deliver_shutdown(void);
void       deliver_free(void);
sub       *sub_find(session *s, int64_t conv);
sub       *sub_create(session *s, int64_t conv, int64_t stream_seq, int64_t sent_seq, int64_t floor, int state);
void       sub_release_all(session *s);
void       sub_catch_up(sub *x, int report_synced);
void       session_release_hold(session *s);
void       session_replays_resume(session *s);
void       session_cork_for_replay(session *s);
void       session_uncork(session *s);
void       deliver_sync(session *s, json_t *cursors, json_t *req);
void       deliver_on_event(void *ud, const pl_event *ev);
void       deliver_on_head(void *ud, int64_t conv, int64_t seq);
void       deliver_on_join(void *ud, int64_t user, int64_t conv, int64_t seq);
/* The stream of conv (opened at seq if absent, and so subscribed on the
 * bus), kept while an authenticating session waits for the bus to confirm
 * that subscription; NULL when it already did (or the count is full: no
 * wait then). deliver_conv_unpin releases it. */
chat_conv *deliver_conv_pin(int64_t conv, int64_t seq);
void       deliver_conv_unpin(chat_conv *cv);
/* The membership log (deliver_mlog.c): changes an authenticating session's read
 * may predate. */
uint64_t   deliver_mlog_mark(void);
int        deliver_mlog_changed(uint64_t mark, int64_t user, int64_t conv, int64_t seq);
void       deliver_mlog_apply(session *s, uint64_t mark);
void       deliver_on_resync(void *ud);
void       deliver_on_erased(void *ud);
void       deliver_on_conv_ready(void *ud, int64_t conv);
void       deliver_on_user_ready(void *ud, int64_t user);
void       deliver_user_added(chat_user *u);
void       do_history(session *s, pl_msg *m);
chat_conv *conv_find(int64_t id);
/* What a read said about cv's membership (kind, member count as of seq). */
void       conv_learn(chat_conv *cv, int kind, int64_t members, int64_t seq);

/* actions.c */
void do_action(session *s, pl_msg *m);   /* edit, delete, react, pin, notify */
void do_pins(session *s, pl_msg *m);

/* search.c */
void do_search(session *s, pl_msg *m);

/* send.c */
void send_init(void);
void send_free(void);
void do_send(session *s, pl_msg *m);
/* 0 admitted now; 1 refused now (*retry_ms, *scope set); 2 asked the bus
 * or the store (the conversation's workspace, wsrate.c): cb(arg, ...) runs
 * later. */
int  chat_admit(int64_t user, int64_t conv, int64_t *retry_ms, const char **scope,
                pl_chat_admit_cb cb, void *arg);
/* As chat_admit with conv's workspace known (ws: 0 none). */
int  chat_admit_ws(int64_t user, int64_t conv, int64_t ws, int64_t *retry_ms, const char **scope,
                   pl_chat_admit_cb cb, void *arg);
/* Counts a refusal and answers it with a rate_limited error. */
void chat_rate_limited(pl_conn *c, json_t *req, int64_t retry_ms, const char *scope);
void chat_outbox_acked(void *ud, int64_t batch);
void chat_outbox_start(void);   /* cluster mode: take over dead nodes' outboxes */
void chat_outbox_stop(void);

/* wsrate.c: the per-workspace rate limit (its design note) */
void    wsrate_init(void);
void    wsrate_free(void);
/* conv's workspace: 0 none (not a channel, or no workspace limit), > 0 the
 * workspace, -1 not known on this node: wsrate_lookup. */
int64_t wsrate_of(int64_t conv);
/* A channel's workspace (ws 0: conv is no channel), as a read said. */
void    wsrate_learn(int64_t conv, int64_t ws);
/* Reads conv's workspace on a reader thread (one read for the waiters of a
 * conversation), then admits as chat_admit_ws; cb runs later, once. */
void    wsrate_lookup(int64_t user, int64_t conv, pl_chat_admit_cb cb, void *arg);
/* REST: whether user is a member of conv (and conv's workspace), one
 * reader read, then admits as chat_admit_ws, a member on every bucket,
 * anyone else on the user's alone; cb runs later, once. */
void    wsrate_member_lookup(int64_t user, int64_t conv, pl_chat_admit_cb cb, void *arg);
/* Embedded mode: takes a token of ws's bucket; 0, or ms until one. */
int64_t wsrate_take(int64_t ws, int64_t now_ms);

/* receipts.c */
void do_receipt(session *s, pl_msg *m);
void do_receipts(session *s, pl_msg *m);
void receipts_on_bus(void *ud, const pl_bus_receipt *r);
void receipts_tick(int64_t now);        /* forgets old announced cursors */
void receipts_free(void);

/* presence.c */
void presence_init(void);
void presence_session_added(session *s);
void presence_session_gone(session *s);
/* s, still attached, was closed by the server (s->ended set): it stops
 * counting now, with this moment as its last activity. */
void presence_session_ended(session *s);
/* After a session of user was detached: with none left here, this node's
 * view goes out now instead of at the next tick (push reads it). */
void presence_user_detached(int64_t user);
void presence_resync(void);
void presence_tick(int64_t now);
int64_t presence_tick_ms(void);     /* the ticker's period: TICK_MS, less for small coalesce windows */
void presence_shutdown(void);
void do_presence_set(session *s, pl_msg *m);
void do_presence_query(session *s, pl_msg *m);
void presence_on_bus(void *ud, const pl_bus_presence *p);
int  chat_limit_signal(session *s, json_t *req, pl_bucket *b, double rate, double burst);

/* e2ee.c (public half: e2ee.h) */
void e2ee_on_keys_low(void *ud, int64_t user, int64_t device, int64_t count);

/* typing.c */
void typing_clear_conv(chat_conv *cv);
/* The bus's conv_blocked: a block set or lifted conv's flag. */
void typing_conv_blocked(void *ud, int64_t conv, int blocked);
void typing_stop(chat_conv *cv, int64_t user);
/* s is closing: its user stops typing where no other session of theirs here
 * follows the conversation (audit Y: the indicator stayed until it expired). */
void typing_session_gone(session *s);
void typing_tick(int64_t now);
void do_typing(session *s, pl_msg *m);
void typing_on_bus(void *ud, int64_t conv, int64_t user, int start, int origin);

#endif
