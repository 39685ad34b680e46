/* chat.c — sessions, subscriptions, fan-out and resume (see chat.h for the
 * delivery design note and its invariants). */
#include "chat.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "../core/alloc.h"
#include "../core/clock.h"
#include "../core/log.h"
#include "../core/map.h"
#include "../core/metrics.h"
#include "../core/ratelimit.h"
#include "../proto/proto.h"
#include "../ws/ws.h"
#include "../ws/wsconn.h"
#include "auth.h"

#define REPLAY_PAGE        PL_STORE_PAGE_MAX
#define REPLAY_SESSIONS_PER_TURN 64
#define TICK_MS              250      /* presence and typing sweep          */
#define HOLD_MS              1000     /* a handshake-authenticated session waits this long for `sync` */
#define TYPING_REFWD_MS      3000     /* re-forward a held `start` this often */
#define PRESENCE_FANOUT_MAX  200      /* live sessions above which a conversation gets no presence */
#define TYPING_RATE 5.0               /* per user: tokens/s and burst       */
#define TYPING_BURST 10.0
#define PRESENCE_RATE 1.0
#define PRESENCE_BURST 5.0

typedef struct chat_conv chat_conv;
typedef struct session session;

typedef struct sub {
    chat_conv  *conv;
    session    *sess;
    struct sub *next, *prev;      /* in conv's list                        */
    int64_t     sent_seq;         /* invariant 1                           */
    int64_t     acked_delivered;  /* receipts this session already sent    */
    int64_t     acked_read;
    uint8_t     catching_up;
    uint8_t     report_synced;    /* send `synced` when caught up (sync)   */
} sub;

typedef struct typing_ent {
    int64_t user;
    int64_t expires;              /* monotonic ms                          */
    int64_t forwarded;            /* monotonic ms of the last forwarded start */
} typing_ent;

struct chat_conv {
    int64_t     id;
    int64_t     last_seq;         /* highest committed seq seen (inv. 2)   */
    sub        *subs;             /* subscriptions of local sessions       */
    size_t      nsubs;
    typing_ent *typing;           /* who is typing here (never stored)     */
    uint32_t    ntyping, captyping;
    chat_conv  *tnext, *tprev;    /* the list of conversations with typing */
    uint8_t     in_typing;
};

typedef struct chat_user {
    int64_t   id;
    session  *sessions;
    pl_bucket typing_tb;          /* rate limits on ephemeral signals      */
    pl_bucket presence_tb;
    int64_t   limited_at;         /* last rate_limited error sent (mono ms) */
} chat_user;

/* Presence of a user with live sessions, or going offline (kept until the
 * offline state has been announced). */
typedef struct presence {
    int64_t user;
    int64_t last_active;          /* wall ms of the last heartbeat or disconnect */
    int64_t sent_at;              /* mono ms of the last announcement      */
    uint8_t sent;                 /* status last announced (offline first) */
} presence;

enum { ST_OFFLINE = 0, ST_AWAY = 1, ST_ONLINE = 2 };
static const char *const status_names[] = {"offline", "away", "online"};

struct session {
    pl_conn   *conn;
    int64_t    user, login;
    session   *unext, *uprev;     /* the user's sessions                   */
    session   *rnext, *rprev;     /* the replay list                       */
    sub      **subs;
    uint32_t   nsubs, capsubs;
    int64_t    last_hb;           /* mono ms of the last message (heartbeat) */
    uint32_t   mark;              /* dedup generation for presence fan-out */
    uint8_t    authed;
    uint8_t    in_replay;
    uint8_t    waiting_drain;     /* replay paused on a full write queue   */
    uint8_t    away;              /* the session said it is away           */
    uint8_t    held;              /* live delivery held for a first `sync` */
    int64_t    drain_since;       /* mono ms the replay began waiting for the queue to drain */
    char       username[33];
};

static struct {
    uv_loop_t       *loop;
    pl_store        *store;
    pl_bus          *bus;
    const pl_config *cfg;
    pl_map           users;       /* id -> chat_user                       */
    pl_map           convs;       /* id -> chat_conv                       */
    session         *replay;      /* sessions with subs catching up        */
    uv_idle_t        replayer;
    size_t           nsessions;
    pl_map           presence;    /* user id -> presence                   */
    chat_conv       *typing;      /* conversations with typing entries     */
    uv_timer_t       ticker;      /* presence and typing sweep             */
    uint32_t         mark;
    pl_limiter       user_sends;  /* message rate per user                 */
    pl_limiter       conv_sends;  /* message rate per conversation         */
    int64_t          swept_at;    /* last limiter sweep (mono ms)          */
} C;

static void tick(uv_timer_t *t);
static void typing_clear_conv(chat_conv *cv);
static void typing_stop(chat_conv *cv, int64_t user);
static void liveness_arm(pl_conn *c);

static void replay_turn(uv_idle_t *h);
static int  session_auth(session *s, const char *tok, size_t len, json_t *cursors, int hold);
static void release_hold(session *s);

void pl_chat_init(uv_loop_t *loop, pl_store *store, pl_bus *bus, const pl_config *cfg) {
    C.loop = loop;
    C.store = store;
    C.bus = bus;
    C.cfg = cfg;
    pl_map_init(&C.users);
    pl_map_init(&C.convs);
    uv_idle_init(loop, &C.replayer);
    uv_unref((uv_handle_t *)&C.replayer);
    pl_map_init(&C.presence);
    pl_limiter_init(&C.user_sends, cfg->rate_user_msgs, cfg->rate_user_burst);
    pl_limiter_init(&C.conv_sends, cfg->rate_conv_msgs, cfg->rate_conv_burst);
    uv_timer_init(loop, &C.ticker);
    uv_timer_start(&C.ticker, tick, TICK_MS, TICK_MS);
    uv_unref((uv_handle_t *)&C.ticker);
}

size_t pl_chat_session_count(void) { return C.nsessions; }

const char *pl_chat_error_code(int r, int *status) {
    switch (r) {
    case PL_STORE_ENOTFOUND: *status = 404; return "not_found";
    case PL_STORE_ECONFLICT: *status = 409; return "conflict";
    case PL_STORE_EFORBID:   *status = 403; return "forbidden";
    case PL_STORE_EINVAL:    *status = 400; return "bad_request";
    case PL_STORE_EUNAVAIL:  *status = 503; return "unavailable";
    default:                 *status = 500; return "internal";
    }
}

/* ---- sending to one session ---------------------------------------------
 * The slow-consumer contract (P3): a connection's write queue is bounded by
 * max-outbound bytes. Ephemeral frames (typing, presence, receipts) are
 * dropped once the queue is above the high-water mark (conn->high); a frame
 * that must not be dropped (an event, an ack, a reply) and does not fit
 * closes the connection with 4008, and the client resumes from its cursors
 * on reconnect, losing nothing. */

#define PL_CLOSE_SLOW_CONSUMER 4008
#define PL_CLOSE_IDLE          4002

static int deliver(pl_conn *c, pl_rbuf *frame) {
    if (c->ws_state != PL_WSS_OPEN || !pl_conn_alive(c)) return -1;
    if (c->qbytes + frame->len > (size_t)C.cfg->max_outbound) {
        pl_count(&pl_m_slow_consumer_closes, 1);
        pl_log(PL_LOG_INFO, c->id, "slow consumer closed", "\"queued\":%zu", c->qbytes);
        pl_wsconn_close(c, PL_CLOSE_SLOW_CONSUMER, "slow consumer: reconnect and sync");
        return -1;
    }
    pl_conn_send(c, frame);
    return 0;
}

static void deliver_ephemeral(pl_conn *c, pl_rbuf *frame) {
    if (c->high) {
        pl_count(&pl_m_dropped_ephemeral, 1);
        return;
    }
    deliver(c, frame);
}

static void send_sbuf(pl_conn *c, pl_sbuf *s) {
    pl_rbuf *b = pl_ws_text_frame(s->p, s->len);
    deliver(c, b);
    pl_rbuf_unref(&b);
}

static void send_error(pl_conn *c, json_t *req, const char *code, const char *msg) {
    pl_sbuf s;
    pl_sbuf_init(&s);
    pl_proto_error(&s, req, code, msg);
    send_sbuf(c, &s);
    pl_sbuf_release(&s);
}

static pl_rbuf *event_frame(const pl_event *ev) {
    pl_sbuf s;
    pl_sbuf_init(&s);
    pl_proto_event(&s, ev);
    pl_rbuf *b = pl_ws_text_frame(s.p, s.len);
    pl_sbuf_release(&s);
    return b;
}

/* ---- the registry ------------------------------------------------------- */

static chat_conv *conv_get(int64_t id, int64_t last_seq_if_new) {
    chat_conv *cv = pl_map_get(&C.convs, id);
    if (!cv) {
        cv = pl_calloc(1, sizeof *cv);
        cv->id = id;
        cv->last_seq = last_seq_if_new;
        pl_map_put(&C.convs, id, cv);
    }
    return cv;
}

static sub *session_sub(session *s, int64_t conv) {
    for (uint32_t i = 0; i < s->nsubs; i++)
        if (s->subs[i]->conv->id == conv) return s->subs[i];
    return NULL;
}

static sub *subscribe(session *s, int64_t conv, int64_t db_last_seq, int64_t sent_seq) {
    sub *x = session_sub(s, conv);
    if (x) return x;
    chat_conv *cv = conv_get(conv, db_last_seq);
    x = pl_calloc(1, sizeof *x);
    x->conv = cv;
    x->sess = s;
    x->sent_seq = sent_seq < 0 ? cv->last_seq : sent_seq;
    x->next = cv->subs;
    if (cv->subs) cv->subs->prev = x;
    cv->subs = x;
    cv->nsubs++;
    if (s->nsubs == s->capsubs) {
        s->capsubs = s->capsubs ? s->capsubs * 2 : 4;
        s->subs = pl_realloc(s->subs, s->capsubs * sizeof *s->subs);
    }
    s->subs[s->nsubs++] = x;
    return x;
}

static void unsubscribe(session *s, int64_t conv) {
    for (uint32_t i = 0; i < s->nsubs; i++) {
        sub *x = s->subs[i];
        if (x->conv->id != conv) continue;
        chat_conv *cv = x->conv;
        if (x->prev) x->prev->next = x->next;
        else cv->subs = x->next;
        if (x->next) x->next->prev = x->prev;
        if (--cv->nsubs == 0) {
            typing_clear_conv(cv);
            pl_map_del(&C.convs, cv->id);
            free(cv);
        }
        free(x);
        s->subs[i] = s->subs[--s->nsubs];
        return;
    }
}

static void replay_add(session *s) {
    if (s->in_replay) return;
    s->in_replay = 1;
    s->rprev = NULL;
    s->rnext = C.replay;
    if (C.replay) C.replay->rprev = s;
    C.replay = s;
    if (!uv_is_active((uv_handle_t *)&C.replayer)) uv_idle_start(&C.replayer, replay_turn);
}

static void replay_remove(session *s) {
    if (!s->in_replay) return;
    s->in_replay = 0;
    if (s->rprev) s->rprev->rnext = s->rnext;
    else C.replay = s->rnext;
    if (s->rnext) s->rnext->rprev = s->rprev;
    s->rnext = s->rprev = NULL;
    if (!C.replay) uv_idle_stop(&C.replayer);
}

static void start_catchup(sub *x, int report) {
    x->catching_up = 1;
    if (report) x->report_synced = 1;
    if (!x->sess->waiting_drain) replay_add(x->sess);
}

/* ---- catch-up ----------------------------------------------------------- */

/* Sends the next page of x's gap; returns 1 while more remains. */
static int replay_sub(sub *x) {
    session *s = x->sess;
    pl_event *evs = NULL;
    size_t n = 0;
    int r = pl_store_events(C.store, x->conv->id, x->sent_seq, 0, REPLAY_PAGE, 0, &evs, &n);
    if (r) {
        pl_log(PL_LOG_ERROR, s->conn->id, "replay read failed", "\"conversation\":%lld", (long long)x->conv->id);
        pl_wsconn_close(s->conn, PL_WS_CLOSE_INTERNAL, "store unavailable");
        x->catching_up = 0;
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        if (evs[i].seq != x->sent_seq + 1) break;     /* cannot happen: seqs are contiguous */
        pl_rbuf *b = event_frame(&evs[i]);
        int ok = deliver(s->conn, b);
        pl_rbuf_unref(&b);
        if (ok) break;
        pl_count(&pl_m_frames_out, 1);
        x->sent_seq = evs[i].seq;
        if (s->conn->high && i + 1 < n) {        /* invariant 3: wait for the drain */
            pl_event_list_free(evs, n);
            return 1;
        }
    }
    pl_event_list_free(evs, n);
    if (n == REPLAY_PAGE || x->sent_seq < x->conv->last_seq) return 1;
    x->catching_up = 0;
    if (x->report_synced) {
        x->report_synced = 0;
        char msg[96];
        int len = snprintf(msg, sizeof msg, "{\"type\":\"synced\",\"conversation\":%lld,\"seq\":%lld}",
                           (long long)x->conv->id, (long long)x->sent_seq);
        pl_rbuf *f = pl_ws_text_frame(msg, (size_t)len);
        deliver(s->conn, f);
        pl_rbuf_unref(&f);
    }
    return 0;
}


/* One page per catching-up sub of each session in the replay list. */
static void replay_turn(uv_idle_t *h) {
    int budget = REPLAY_SESSIONS_PER_TURN;
    for (session *s = C.replay, *nx; s && budget-- > 0; s = nx) {
        nx = s->rnext;
        int more = 0;
        for (uint32_t i = 0; i < s->nsubs && pl_conn_alive(s->conn); i++) {
            sub *x = s->subs[i];
            if (!x->catching_up) continue;
            if (s->conn->high) { more = 1; break; }
            more |= replay_sub(x);
        }
        if (!more || !pl_conn_alive(s->conn)) {
            replay_remove(s);
        } else if (s->conn->high) {           /* invariant 3: wait for on_drain */
            replay_remove(s);
            s->waiting_drain = 1;
            s->drain_since = pl_mono_ms();
            int64_t cut = s->drain_since + (int64_t)C.cfg->slow_timeout * 1000;
            if (!s->conn->deadline || cut < s->conn->deadline) s->conn->deadline = cut;
        }
    }
}

void pl_chat_on_drain(pl_conn *c) {
    session *s = c->session;
    if (!s || !s->waiting_drain) return;
    s->waiting_drain = 0;
    s->drain_since = 0;
    for (uint32_t i = 0; i < s->nsubs; i++)
        if (s->subs[i]->catching_up) { replay_add(s); break; }
}

/* ---- fan-out ------------------------------------------------------------ */

static int64_t data_user(const pl_event *ev) {
    json_t *d = ev->data ? json_loads(ev->data, 0, NULL) : NULL;
    int64_t u = d ? json_integer_value(json_object_get(d, "user")) : 0;
    json_decref(d);
    return u;
}

static void subscribe_user(int64_t user, int64_t conv, int64_t sent_seq) {
    chat_user *u = pl_map_get(&C.users, user);
    if (!u) return;
    for (session *s = u->sessions; s; s = s->unext)
        if (s->authed) subscribe(s, conv, sent_seq, sent_seq);
}

static void unsubscribe_user(int64_t user, int64_t conv) {
    chat_user *u = pl_map_get(&C.users, user);
    if (!u) return;
    for (session *s = u->sessions; s; s = s->unext) unsubscribe(s, conv);
}

void pl_chat_on_event(void *ud, const pl_event *ev) {
    /* new members are subscribed just before their first event */
    if (ev->kind == PL_EV_CREATED) {
        json_t *d = ev->data ? json_loads(ev->data, 0, NULL) : NULL;
        json_t *m = json_object_get(d, "members");
        size_t i;
        json_t *v;
        json_array_foreach(m, i, v) subscribe_user(json_integer_value(v), ev->conv, ev->seq - 1);
        json_decref(d);
    } else if (ev->kind == PL_EV_MEMBER_ADDED) {
        subscribe_user(data_user(ev), ev->conv, ev->seq - 1);
    }
    chat_conv *cv = pl_map_get(&C.convs, ev->conv);
    if (cv) {
        if (ev->seq > cv->last_seq) cv->last_seq = ev->seq;
        if (ev->kind == PL_EV_MESSAGE && cv->ntyping) typing_stop(cv, ev->sender);
        pl_rbuf *frame = NULL;
        for (sub *x = cv->subs; x; x = x->next) {
            if (x->catching_up || ev->seq <= x->sent_seq) continue;
            if (ev->seq != x->sent_seq + 1) {            /* invariant 1: a gap */
                start_catchup(x, 0);
                continue;
            }
            if (!frame) frame = event_frame(ev);
            if (deliver(x->sess->conn, frame) == 0) {
                x->sent_seq = ev->seq;
                pl_count(&pl_m_frames_out, 1);
            }
        }
        pl_rbuf_unref(&frame);
    }
    /* removed members get their removal, then nothing more */
    if (ev->kind == PL_EV_MEMBER_REMOVED || ev->kind == PL_EV_MEMBER_LEFT)
        unsubscribe_user(data_user(ev), ev->conv);
}

void pl_chat_committed(const pl_event *ev) { pl_bus_publish(C.bus, ev); }

/* ---- ephemeral signals: rate limits ------------------------------------- */

/* Takes a token from one of u's buckets; on refusal tells the session (at
 * most once a second) and returns -1. Nothing else is affected. */
static int limit_signal(session *s, pl_bucket *b, double rate, double burst) {
    chat_user *u = pl_map_get(&C.users, s->user);
    int64_t now = pl_mono_ms();
    int64_t wait = pl_bucket_take(b, rate, burst, 1, now);
    if (!wait) return 0;
    if (u && now - u->limited_at >= 1000) {
        u->limited_at = now;
        char msg[160];
        int n = snprintf(msg, sizeof msg,
                         "{\"type\":\"error\",\"code\":\"rate_limited\",\"message\":\"too many signals\","
                         "\"retry_after\":%.3f}", (double)wait / 1000.0);
        pl_rbuf *f = pl_ws_text_frame(msg, (size_t)n);
        deliver(s->conn, f);
        pl_rbuf_unref(&f);
    }
    pl_count(&pl_m_rate_limited_signal, 1);
    return -1;
}

/* ---- typing ------------------------------------------------------------- */

/* Sends a typing frame to every session in cv except the typist's own;
 * dropped for connections whose write queue is above its high-water mark
 * (ephemeral signals are shed first). */
static void typing_forward(chat_conv *cv, int64_t user, int start) {
    char msg[128];
    int n = snprintf(msg, sizeof msg, "{\"type\":\"typing\",\"conversation\":%lld,\"user\":%lld,\"state\":\"%s\"}",
                     (long long)cv->id, (long long)user, start ? "start" : "stop");
    pl_rbuf *frame = NULL;
    for (sub *x = cv->subs; x; x = x->next) {
        if (x->sess->user == user) continue;
        if (!frame) frame = pl_ws_text_frame(msg, (size_t)n);
        deliver_ephemeral(x->sess->conn, frame);
    }
    pl_rbuf_unref(&frame);
}

static void typing_list_add(chat_conv *cv) {
    if (cv->in_typing) return;
    cv->in_typing = 1;
    cv->tprev = NULL;
    cv->tnext = C.typing;
    if (C.typing) C.typing->tprev = cv;
    C.typing = cv;
}

static void typing_list_remove(chat_conv *cv) {
    if (!cv->in_typing) return;
    cv->in_typing = 0;
    if (cv->tprev) cv->tprev->tnext = cv->tnext;
    else C.typing = cv->tnext;
    if (cv->tnext) cv->tnext->tprev = cv->tprev;
}

static void typing_remove_at(chat_conv *cv, uint32_t i, int forward) {
    int64_t user = cv->typing[i].user;
    cv->typing[i] = cv->typing[--cv->ntyping];
    if (forward) typing_forward(cv, user, 0);
    if (!cv->ntyping) typing_list_remove(cv);
}

static void typing_stop(chat_conv *cv, int64_t user) {
    for (uint32_t i = 0; i < cv->ntyping; i++)
        if (cv->typing[i].user == user) {
            typing_remove_at(cv, i, 1);
            return;
        }
}

static void typing_clear_conv(chat_conv *cv) {
    typing_list_remove(cv);
    free(cv->typing);
    cv->typing = NULL;
    cv->ntyping = cv->captyping = 0;
}

static void do_typing(session *s, pl_msg *m) {
    sub *x = session_sub(s, m->conv);
    if (!x) {
        send_error(s->conn, m->req, "not_found", "no such conversation");
        return;
    }
    chat_user *u = pl_map_get(&C.users, s->user);
    if (!u || limit_signal(s, &u->typing_tb, TYPING_RATE, TYPING_BURST)) return;
    chat_conv *cv = x->conv;
    if (!m->typing) {
        typing_stop(cv, s->user);
        return;
    }
    int64_t now = pl_mono_ms();
    for (uint32_t i = 0; i < cv->ntyping; i++) {
        typing_ent *t = &cv->typing[i];
        if (t->user != s->user) continue;
        t->expires = now + C.cfg->typing_ttl;
        if (now - t->forwarded >= TYPING_REFWD_MS) {
            t->forwarded = now;
            typing_forward(cv, s->user, 1);
        }
        return;
    }
    if (cv->ntyping == cv->captyping) {
        cv->captyping = cv->captyping ? cv->captyping * 2 : 2;
        cv->typing = pl_realloc(cv->typing, cv->captyping * sizeof *cv->typing);
    }
    cv->typing[cv->ntyping++] = (typing_ent){s->user, now + C.cfg->typing_ttl, now};
    typing_list_add(cv);
    typing_forward(cv, s->user, 1);
}

static void typing_expire(int64_t now) {
    for (chat_conv *cv = C.typing, *nx; cv; cv = nx) {
        nx = cv->tnext;
        for (uint32_t i = 0; i < cv->ntyping;)
            if (cv->typing[i].expires <= now) typing_remove_at(cv, i, 1);
            else i++;
    }
}

/* ---- receipts ----------------------------------------------------------- */

void pl_chat_receipt_done(const pl_job *j) {
    if (j->result || !j->created) return;
    chat_conv *cv = pl_map_get(&C.convs, j->conv);
    if (!cv) return;
    char other[192], own[224];
    int on = snprintf(other, sizeof other,
                      "{\"type\":\"receipt\",\"conversation\":%lld,\"user\":%lld,\"delivered_seq\":%lld,\"read_seq\":%lld}",
                      (long long)j->conv, (long long)j->user, (long long)j->out_delivered, (long long)j->out_read);
    int wn = snprintf(own, sizeof own,
                      "{\"type\":\"receipt\",\"conversation\":%lld,\"user\":%lld,\"delivered_seq\":%lld,\"read_seq\":%lld,\"unread\":%lld}",
                      (long long)j->conv, (long long)j->user, (long long)j->out_delivered,
                      (long long)j->out_read, (long long)j->out_unread);
    int everyone = cv->nsubs <= (size_t)C.cfg->receipt_fanout_max;
    pl_rbuf *fo = NULL, *fw = NULL;
    for (sub *x = cv->subs; x; x = x->next) {
        if (x->sess->user == j->user) {
            if (!fw) fw = pl_ws_text_frame(own, (size_t)wn);
            deliver_ephemeral(x->sess->conn, fw);
        } else if (everyone) {
            if (!fo) fo = pl_ws_text_frame(other, (size_t)on);
            deliver_ephemeral(x->sess->conn, fo);
        }
    }
    pl_rbuf_unref(&fo);
    pl_rbuf_unref(&fw);
}

typedef struct receipt_op {
    pl_job   job;
    pl_conn *conn;                /* a reference                            */
} receipt_op;

static void receipt_done(pl_job *j) {
    receipt_op *op = (receipt_op *)j;
    if (j->result && pl_conn_alive(op->conn)) {
        int st;
        send_error(op->conn, NULL, pl_chat_error_code(j->result, &st),
                   j->result == PL_STORE_ENOTFOUND ? "no such conversation" : "receipt not stored");
    }
    pl_chat_receipt_done(j);
    pl_conn_unref(op->conn);
    free(op);
}

static void do_receipt(session *s, pl_msg *m) {
    sub *x = session_sub(s, m->conv);
    if (!x) {
        send_error(s->conn, m->req, "not_found", "no such conversation");
        return;
    }
    int read = m->type == PL_MSG_READ;
    /* this session already said as much: nothing can move */
    if (read ? m->seq <= x->acked_read : m->seq <= x->acked_delivered) return;
    if (read) x->acked_read = m->seq;
    if (m->seq > x->acked_delivered) x->acked_delivered = m->seq;
    receipt_op *op = pl_calloc(1, sizeof *op);
    op->job.op = PL_JOB_RECEIPT;
    op->job.conv = m->conv;
    op->job.user = s->user;
    op->job.delivered = m->seq;
    op->job.read = read ? m->seq : 0;
    op->job.done = receipt_done;
    op->conn = s->conn;
    pl_conn_ref(s->conn);
    pl_store_submit(C.store, &op->job);
}

int pl_chat_receipts(int64_t conv, int64_t user, int64_t seq, pl_sbuf *out) {
    pl_conv c;
    int r = pl_store_conv_get(C.store, conv, user, &c);
    if (r) return r;
    pl_sbuf_printf(out, "\"conversation\":%lld,\"members\":[", (long long)conv);
    for (size_t i = 0; i < c.nmembers; i++)
        pl_sbuf_printf(out, "%s{\"user\":%lld,\"delivered_seq\":%lld,\"read_seq\":%lld}", i ? "," : "",
                       (long long)c.members[i].user, (long long)c.members[i].delivered_seq,
                       (long long)c.members[i].read_seq);
    pl_sbuf_addc(out, ']');
    pl_event *ev = NULL;
    size_t n = 0;
    if (seq > 0 && pl_store_events(C.store, conv, seq - 1, seq + 1, 1, 0, &ev, &n) == 0 && n == 1) {
        int64_t sender = ev[0].sender;
        for (int pass = 0; pass < 2; pass++) {
            size_t count = 0;
            pl_sbuf users;
            pl_sbuf_init(&users);
            for (size_t i = 0; i < c.nmembers; i++) {
                const pl_member *mb = &c.members[i];
                int64_t cur = pass ? mb->read_seq : mb->delivered_seq;
                if (mb->user == sender || cur < seq) continue;
                pl_sbuf_printf(&users, "%s%lld", count ? "," : "", (long long)mb->user);
                count++;
            }
            if (!pass) pl_sbuf_printf(out, ",\"message\":{\"seq\":%lld,\"sender\":%lld,", (long long)seq, (long long)sender);
            pl_sbuf_printf(out, "\"%s\":{\"count\":%zu,\"users\":[%s]}%s", pass ? "read" : "delivered", count,
                           users.p ? users.p : "", pass ? "}" : ",");
            pl_sbuf_release(&users);
        }
    } else if (seq > 0) {
        pl_sbuf_adds(out, ",\"message\":null");
    }
    pl_event_list_free(ev, n);
    pl_conv_release(&c);
    return 0;
}

static void do_receipts(session *s, pl_msg *m) {
    pl_sbuf b;
    pl_sbuf_init(&b);
    pl_sbuf_adds(&b, "{\"type\":\"receipts\"");
    pl_proto_add_req(&b, m->req);
    pl_sbuf_addc(&b, ',');
    int r = pl_chat_receipts(m->conv, s->user, m->seq, &b);
    if (r) {
        int st;
        send_error(s->conn, m->req, pl_chat_error_code(r, &st), "no such conversation");
    } else {
        pl_sbuf_addc(&b, '}');
        send_sbuf(s->conn, &b);
    }
    pl_sbuf_release(&b);
}

/* ---- presence ----------------------------------------------------------- */

static presence *presence_get(int64_t user) {
    presence *p = pl_map_get(&C.presence, user);
    if (!p) {
        p = pl_calloc(1, sizeof *p);
        p->user = user;
        p->sent = ST_OFFLINE;
        pl_map_put(&C.presence, user, p);
    }
    return p;
}

/* The user's status now, merged over their sessions (invariant: online if
 * any session is online and heartbeating). */
static int presence_status(int64_t user, int64_t now, int64_t *newest_hb) {
    chat_user *u = pl_map_get(&C.users, user);
    int st = ST_OFFLINE;
    if (newest_hb) *newest_hb = 0;
    if (!u) return st;
    int64_t timeout = (int64_t)C.cfg->presence_timeout * 1000;
    for (session *s = u->sessions; s; s = s->unext) {
        if (newest_hb && s->last_hb > *newest_hb) *newest_hb = s->last_hb;
        if (now - s->last_hb >= timeout) continue;
        if (!s->away) st = ST_ONLINE;
        else if (st == ST_OFFLINE) st = ST_AWAY;
    }
    return st;
}

static void presence_frame(pl_sbuf *b, const presence *p, int status, int64_t last_seen) {
    pl_sbuf_printf(b, "\"user\":%lld,\"status\":\"%s\",\"last_seen\":%lld", (long long)p->user,
                   status_names[status], (long long)last_seen);
}

/* Announces p's status to the sessions of everyone sharing a conversation. */
static void presence_announce(presence *p, int status) {
    pl_conv *list = NULL;
    size_t n = 0;
    if (pl_store_conv_list(C.store, p->user, &list, &n) != 0) return;
    pl_sbuf b;
    pl_sbuf_init(&b);
    pl_sbuf_adds(&b, "{\"type\":\"presence\",");
    presence_frame(&b, p, status, p->last_active);
    pl_sbuf_addc(&b, '}');
    pl_rbuf *frame = NULL;
    uint32_t mark = ++C.mark;
    for (size_t i = 0; i < n; i++) {
        chat_conv *cv = pl_map_get(&C.convs, list[i].id);
        if (!cv || cv->nsubs > PRESENCE_FANOUT_MAX) continue;
        for (sub *x = cv->subs; x; x = x->next) {
            session *s = x->sess;
            if (s->user == p->user || s->mark == mark) continue;
            s->mark = mark;
            if (!frame) frame = pl_ws_text_frame(b.p, b.len);
            deliver_ephemeral(s->conn, frame);
        }
    }
    pl_rbuf_unref(&frame);
    pl_sbuf_release(&b);
    pl_conv_list_free(list, n);
}

static void last_seen_done(pl_job *j) { free(j); }

/* Coalesced announcements: a change is announced at most once per
 * presence-coalesce ms, with the state at that time; a state that returns to
 * what was last announced is not announced at all. */
static void presence_sweep(int64_t now) {
    int64_t wall = pl_now_ms();
    size_t ndead = 0;
    int64_t dead[64];
    for (size_t i = 0; i < C.presence.cap; i++) {
        if (!C.presence.slots[i].key) continue;
        presence *p = C.presence.slots[i].val;
        int64_t hb;
        int st = presence_status(p->user, now, &hb);
        if (hb) p->last_active = wall - (now - hb);    /* the last heartbeat, in wall time */
        if (st != p->sent && now - p->sent_at >= C.cfg->presence_coalesce) {
            p->sent = (uint8_t)st;
            p->sent_at = now;
            presence_announce(p, st);
        }
        if (st == ST_OFFLINE && p->sent == ST_OFFLINE && !pl_map_get(&C.users, p->user) && ndead < 64)
            dead[ndead++] = p->user;
    }
    for (size_t i = 0; i < ndead; i++) {
        presence *p = pl_map_del(&C.presence, dead[i]);
        pl_job *j = pl_calloc(1, sizeof *j);
        j->op = PL_JOB_LAST_SEEN;
        j->user = p->user;
        j->expires = p->last_active;
        j->done = last_seen_done;
        pl_store_submit(C.store, j);
        free(p);
    }
}

static void do_presence_set(session *s, pl_msg *m) {
    chat_user *u = pl_map_get(&C.users, s->user);
    if (!u || limit_signal(s, &u->presence_tb, PRESENCE_RATE, PRESENCE_BURST)) return;
    s->away = (uint8_t)m->away;
}

/* Appends {"user":..,"status":..,"last_seen":..} for user, or nothing. */
int pl_chat_presence_of(int64_t asker, int64_t user, pl_sbuf *out) {
    if (user != asker && !pl_store_shares(C.store, asker, user)) return -1;
    presence *p = pl_map_get(&C.presence, user);
    int st = presence_status(user, pl_mono_ms(), NULL);
    int64_t last = 0;
    if (p) last = st != ST_OFFLINE ? pl_now_ms() : p->last_active;
    else {
        pl_user u;
        if (pl_store_user_by_id(C.store, user, &u) != 0) return -1;
        free(u.pwhash);
        last = u.last_seen;
    }
    presence tmp = {.user = user};
    pl_sbuf_addc(out, '{');
    presence_frame(out, &tmp, st, last);
    pl_sbuf_addc(out, '}');
    return 0;
}

static void do_presence_query(session *s, pl_msg *m) {
    pl_sbuf b;
    pl_sbuf_init(&b);
    pl_sbuf_adds(&b, "{\"type\":\"presence\"");
    pl_proto_add_req(&b, m->req);
    pl_sbuf_adds(&b, ",\"users\":[");
    size_t i, k = 0;
    json_t *v;
    json_array_foreach(m->users, i, v) {
        size_t before = b.len;
        if (k) pl_sbuf_addc(&b, ',');
        if (pl_chat_presence_of(s->user, json_integer_value(v), &b) == 0) k++;
        else b.len = before;
    }
    pl_sbuf_adds(&b, "]}");
    send_sbuf(s->conn, &b);
    pl_sbuf_release(&b);
}

void pl_chat_shutdown(void) {
    uv_timer_stop(&C.ticker);
    uv_close((uv_handle_t *)&C.ticker, NULL);
    uv_idle_stop(&C.replayer);
    uv_close((uv_handle_t *)&C.replayer, NULL);
    /* everyone is about to go offline: keep their last seen */
    int64_t wall = pl_now_ms();
    for (size_t i = 0; i < C.presence.cap; i++) {
        if (!C.presence.slots[i].key) continue;
        presence *p = C.presence.slots[i].val;
        pl_job *j = pl_calloc(1, sizeof *j);
        j->op = PL_JOB_LAST_SEEN;
        j->user = p->user;
        j->expires = pl_map_get(&C.users, p->user) ? wall : p->last_active;
        j->done = last_seen_done;
        pl_store_submit(C.store, j);
        free(p);
    }
    pl_map_release(&C.presence);
    pl_limiter_release(&C.user_sends);
    pl_limiter_release(&C.conv_sends);
}

static void tick(uv_timer_t *t) {
    int64_t now = pl_mono_ms();
    typing_expire(now);
    presence_sweep(now);
    if (now - C.swept_at >= 5000) {
        C.swept_at = now;
        pl_limiter_sweep(&C.user_sends, now);
        pl_limiter_sweep(&C.conv_sends, now);
    }
}

/* ---- sessions ----------------------------------------------------------- */

int pl_chat_check_token(const char *tok, size_t len, int64_t *user, int64_t *login) {
    if (pl_auth_verify_access(tok, len, pl_now_ms() / 1000, user, login) != PL_AUTH_OK) return -1;
    pl_login l;
    if (pl_store_login_get(C.store, *login, &l) != 0) return -1;
    if (l.revoked || l.user != *user) return -1;
    return 0;
}

void pl_chat_ws_open(pl_conn *c, const char *token, size_t len) {
    session *s = pl_calloc(1, sizeof *s);
    s->conn = c;
    c->session = s;
    C.nsessions++;
    if (token) {
        if (session_auth(s, token, len, NULL, 1) != 0)
            pl_wsconn_close(c, PL_WS_CLOSE_UNAUTHORIZED, "bad or expired token");
        return;
    }
    c->deadline = pl_mono_ms() + (int64_t)C.cfg->auth_timeout * 1000;
}

static void do_sync(session *s, json_t *cursors, json_t *req);

/* Authenticates s: registers it, subscribes it to its conversations (live
 * from now), sends `ready`, then handles cursors as a sync.
 *
 * hold (authentication at the handshake, where no cursors can be given):
 * every subscription starts in catch-up without being replayed, so nothing
 * is sent live until the session's first message or HOLD_MS. If that message
 * is a `sync`, its cursors are applied before anything was sent, and the
 * stream is exact (no duplicate, no reordering at the seam); otherwise each
 * subscription replays from its `ready` seq, so nothing is lost either. */
static int session_auth(session *s, const char *tok, size_t len, json_t *cursors, int hold) {
    int64_t user, login;
    if (pl_chat_check_token(tok, len, &user, &login) != 0) return -1;
    pl_user u;
    if (pl_store_user_by_id(C.store, user, &u) != 0) return -1;
    free(u.pwhash);
    pl_conv *list = NULL;
    size_t n = 0;
    if (pl_store_conv_list(C.store, user, &list, &n) != 0) return -1;

    s->user = user;
    s->login = login;
    s->authed = 1;
    s->last_hb = pl_mono_ms();
    presence_get(user)->last_active = pl_now_ms();
    memcpy(s->username, u.username, sizeof s->username);
    liveness_arm(s->conn);
    chat_user *cu = pl_map_get(&C.users, user);
    if (!cu) {
        cu = pl_calloc(1, sizeof *cu);
        cu->id = user;
        pl_map_put(&C.users, user, cu);
    }
    s->unext = cu->sessions;
    if (cu->sessions) cu->sessions->uprev = s;
    cu->sessions = s;

    pl_sbuf b;
    pl_sbuf_init(&b);
    pl_sbuf_printf(&b, "{\"type\":\"ready\",\"protocol\":%d,\"user\":{\"id\":%lld,\"username\":",
                   PL_PROTO_VERSION, (long long)user);
    pl_sbuf_add_json_str(&b, s->username, strlen(s->username));
    pl_sbuf_printf(&b, "},\"session\":%lld,\"conversations\":[", (long long)login);
    for (size_t i = 0; i < n; i++) {
        sub *x = subscribe(s, list[i].id, list[i].last_seq, -1);
        x->catching_up = (uint8_t)hold;
        pl_sbuf_printf(&b, "%s{\"id\":%lld,\"last_seq\":%lld,\"unread\":%lld}", i ? "," : "",
                       (long long)list[i].id, (long long)x->sent_seq, (long long)list[i].unread);
    }
    pl_sbuf_adds(&b, "]}");
    pl_conv_list_free(list, n);
    send_sbuf(s->conn, &b);
    pl_sbuf_release(&b);
    pl_log(PL_LOG_DEBUG, s->conn->id, "ws authenticated", "\"user\":%lld", (long long)user);
    if (hold) {
        s->held = 1;
        s->conn->deadline = pl_mono_ms() + HOLD_MS;
    }
    if (cursors) do_sync(s, cursors, NULL);
    return 0;
}

static void release_hold(session *s) {
    if (!s->held) return;
    s->held = 0;
    for (uint32_t i = 0; i < s->nsubs; i++)
        if (s->subs[i]->catching_up) start_catchup(s->subs[i], 0);
    liveness_arm(s->conn);
}

void pl_chat_conn_closed(pl_conn *c) {
    session *s = c->session;
    if (!s) return;
    c->session = NULL;
    replay_remove(s);
    if (s->authed) {
        presence *p = pl_map_get(&C.presence, s->user);
        if (p) p->last_active = pl_now_ms();
    }
    while (s->nsubs) unsubscribe(s, s->subs[s->nsubs - 1]->conv->id);
    free(s->subs);
    if (s->authed) {
        chat_user *cu = pl_map_get(&C.users, s->user);
        if (s->uprev) s->uprev->unext = s->unext;
        else if (cu) cu->sessions = s->unext;
        if (s->unext) s->unext->uprev = s->uprev;
        if (cu && !cu->sessions) {
            pl_map_del(&C.users, cu->id);
            free(cu);
        }
    }
    C.nsessions--;
    free(s);
}

/* Liveness (P5): after ping-interval seconds of silence the server pings
 * (and again each interval while the silence lasts); after idle-timeout
 * seconds of silence (no pong, no message, no byte) it closes with 4002. The
 * connection's single deadline holds the next check; any byte received moves
 * last_rx, so a pong re-arms it. */
static void liveness_arm(pl_conn *c) {
    c->deadline = c->last_rx + (int64_t)C.cfg->ping_interval * 1000;
}

void pl_chat_ws_timeout(pl_conn *c) {
    session *s = c->session;
    if (!s) return;
    if (!s->authed) {
        pl_wsconn_close(c, PL_WS_CLOSE_UNAUTHORIZED, "authentication timeout");
        return;
    }
    if (s->held) {                          /* no `sync` came: go live, losing nothing */
        release_hold(s);
        return;
    }
    int64_t now = pl_mono_ms(), idle = now - c->last_rx;
    int64_t slow_cut = s->drain_since + (int64_t)C.cfg->slow_timeout * 1000;
    if (s->waiting_drain && now >= slow_cut) {  /* a replay that stays stuck (P3) */
        pl_count(&pl_m_slow_consumer_closes, 1);
        pl_wsconn_close(c, PL_CLOSE_SLOW_CONSUMER, "slow consumer: reconnect and sync");
        return;
    }
    int64_t ping_ms = (int64_t)C.cfg->ping_interval * 1000, idle_ms = (int64_t)C.cfg->idle_timeout * 1000;
    if (idle >= idle_ms) {
        pl_count(&pl_m_idle_closes, 1);
        pl_wsconn_close(c, PL_CLOSE_IDLE, "idle timeout");
        return;
    }
    if (idle < ping_ms) {                      /* heard from it recently */
        liveness_arm(c);
        if (s->waiting_drain && slow_cut < c->deadline) c->deadline = slow_cut;
        return;
    }
    /* silent for a ping interval: ping (again every interval while silent) */
    uint8_t hdr[14];
    size_t h = pl_ws_header(hdr, PL_WS_OP_PING, 0, NULL);
    pl_conn_send_copy(c, hdr, h);
    c->deadline = now + ping_ms < c->last_rx + idle_ms ? now + ping_ms : c->last_rx + idle_ms;
    if (s->waiting_drain && slow_cut < c->deadline) c->deadline = slow_cut;
}

void pl_chat_revoke_login(int64_t user, int64_t login) {
    chat_user *cu = pl_map_get(&C.users, user);
    if (!cu) return;
    for (session *s = cu->sessions; s; s = s->unext)
        if (s->login == login) pl_wsconn_close(s->conn, PL_WS_CLOSE_UNAUTHORIZED, "logged out");
}

static void close_one(pl_conn *c, void *arg) {
    const int *code = arg;
    if (c->mode != PL_CONN_WS) {
        pl_conn_close(c, 1);               /* after any response in flight */
        return;
    }
    /* the drain contract (P6): a hint, then 1001; the client reconnects
     * (to another node, or this one when it is back) and resumes */
    static const char hint[] = "{\"type\":\"reconnect\",\"reason\":\"shutdown\",\"retry_after_ms\":1000}";
    pl_rbuf *f = pl_ws_text_frame(hint, sizeof hint - 1);
    pl_conn_send(c, f);                    /* even past the bound: it is the last frame */
    pl_rbuf_unref(&f);
    pl_wsconn_close(c, *code, "server shutting down");
}

void pl_chat_close_all(pl_net *net, int code, const char *reason) {
    (void)reason;
    pl_net_each(net, close_one, &code);
}

/* ---- client messages ---------------------------------------------------- */

typedef struct send_op {
    pl_job   job;                 /* first: the store hands back &job       */
    pl_conn *conn;                /* a reference                            */
    json_t  *root;                /* keeps the message's strings alive      */
    json_t  *req;
    int64_t  t0;                  /* mono us when the send arrived          */
} send_op;

int pl_chat_admit_send(int64_t user, int64_t conv, int64_t *retry_ms, const char **scope) {
    int64_t now = pl_mono_ms();
    int64_t w = pl_limiter_take(&C.user_sends, user, 1, now);
    if (w) {
        *retry_ms = w;
        *scope = "user";
        pl_count(&pl_m_rate_limited_user, 1);
        return -1;
    }
    w = pl_limiter_take(&C.conv_sends, conv, 1, now);
    if (w) {
        *retry_ms = w;
        *scope = "conversation";
        pl_count(&pl_m_rate_limited_conv, 1);
        return -1;
    }
    return 0;
}

void pl_chat_sent(const pl_job *j, int64_t t0_us) {
    if (j->result != PL_STORE_OK) return;
    if (j->dup) {
        pl_count(&pl_m_sends_dup, 1);
        return;
    }
    pl_count(&pl_m_sends, 1);
    if (j->has_event) pl_chat_committed(&j->event);
    if (t0_us) pl_observe(&pl_m_delivery_seconds, (double)(pl_mono_us() - t0_us) / 1e6);
}

static void send_done(pl_job *j) {
    send_op *op = (send_op *)j;
    pl_conn *c = op->conn;
    if (j->result == PL_STORE_OK) {
        if (pl_conn_alive(c)) {
            pl_sbuf s;
            pl_sbuf_init(&s);
            pl_proto_sent(&s, &j->event, j->dup, op->req, 1);
            send_sbuf(c, &s);
            pl_sbuf_release(&s);
        }
        pl_chat_sent(j, op->t0);
    } else if (pl_conn_alive(c)) {
        int st;
        const char *code = pl_chat_error_code(j->result, &st);
        send_error(c, op->req, code, j->result == PL_STORE_ENOTFOUND ? "no such conversation"
                                                                    : "message not stored");
    }
    pl_event_release(&j->event);
    json_decref(op->root);
    pl_conn_unref(c);
    free(op);
}

static void do_send(session *s, pl_msg *m) {
    int64_t retry;
    const char *scope;
    if (pl_chat_admit_send(s->user, m->conv, &retry, &scope)) {
        pl_sbuf b;
        pl_sbuf_init(&b);
        pl_sbuf_adds(&b, "{\"type\":\"error\"");
        pl_proto_add_req(&b, m->req);
        pl_sbuf_printf(&b, ",\"code\":\"rate_limited\",\"message\":\"too many messages (%s)\",\"retry_after\":%.3f}",
                       scope, (double)retry / 1000.0);
        send_sbuf(s->conn, &b);
        pl_sbuf_release(&b);
        return;
    }
    send_op *op = pl_calloc(1, sizeof *op);
    op->t0 = pl_mono_us();
    op->job.op = PL_JOB_MESSAGE_SEND;
    op->job.user = s->user;
    op->job.conv = m->conv;
    op->job.client_msg_id = m->client_msg_id;
    op->job.body = m->body;
    op->job.body_len = m->body_len;
    op->job.done = send_done;
    op->conn = s->conn;
    pl_conn_ref(s->conn);
    op->root = json_incref(m->root);
    op->req = m->req;
    pl_store_submit(C.store, &op->job);
}

static void do_sync(session *s, json_t *cursors, json_t *req) {
    void *it = NULL;
    int64_t conv, seq;
    while (pl_proto_cursor(cursors, &it, &conv, &seq) == 0) {
        sub *x = session_sub(s, conv);
        if (!x) {
            pl_sbuf b;
            pl_sbuf_init(&b);
            pl_sbuf_adds(&b, "{\"type\":\"error\"");
            pl_proto_add_req(&b, req);
            pl_sbuf_printf(&b, ",\"code\":\"not_found\",\"message\":\"no such conversation\",\"conversation\":%lld}",
                           (long long)conv);
            send_sbuf(s->conn, &b);
            pl_sbuf_release(&b);
            continue;
        }
        if (seq > x->conv->last_seq && seq > x->sent_seq)
            seq = x->conv->last_seq > x->sent_seq ? x->conv->last_seq : x->sent_seq;
        x->sent_seq = seq;
        start_catchup(x, 1);
    }
}

int pl_chat_history(int64_t conv, int64_t user, int64_t after, int64_t before, int limit,
                    pl_sbuf *out) {
    if (pl_store_member_role(C.store, conv, user) == PL_ROLE_NONE) return PL_STORE_ENOTFOUND;
    int from_top = before > 0 && after == 0;
    pl_event *evs = NULL;
    size_t n = 0;
    int r = pl_store_events(C.store, conv, after, before, limit, from_top, &evs, &n);
    if (r) return r;
    int more = 0;
    if (from_top) {
        more = n > 0 && evs[0].seq > after + 1;
    } else if (n == (size_t)limit) {
        pl_event *probe = NULL;
        size_t pn = 0;
        if (pl_store_events(C.store, conv, evs[n - 1].seq, before, 1, 0, &probe, &pn) == 0) {
            more = pn > 0;
            pl_event_list_free(probe, pn);
        }
    }
    pl_sbuf_printf(out, "\"conversation\":%lld,\"events\":[", (long long)conv);
    for (size_t i = 0; i < n; i++) {
        pl_sbuf_adds(out, i ? ",{" : "{");
        pl_proto_event_fields(out, &evs[i]);
        pl_sbuf_addc(out, '}');
    }
    pl_sbuf_printf(out, "],\"has_more\":%s", more ? "true" : "false");
    pl_event_list_free(evs, n);
    return 0;
}

static void do_history(session *s, pl_msg *m) {
    pl_sbuf b;
    pl_sbuf_init(&b);
    pl_sbuf_adds(&b, "{\"type\":\"history\"");
    pl_proto_add_req(&b, m->req);
    pl_sbuf_addc(&b, ',');
    int r = pl_chat_history(m->conv, s->user, m->after, m->before, m->limit, &b);
    if (r) {
        int st;
        send_error(s->conn, m->req, pl_chat_error_code(r, &st),
                   r == PL_STORE_ENOTFOUND ? "no such conversation" : "history unavailable");
    } else {
        pl_sbuf_addc(&b, '}');
        send_sbuf(s->conn, &b);
    }
    pl_sbuf_release(&b);
}

void pl_chat_ws_text(pl_conn *c, const uint8_t *p, size_t n) {
    session *s = c->session;
    if (!s) return;
    pl_count(&pl_m_ws_messages_in, 1);
    pl_msg m;
    pl_proto_err e;
    int r = pl_proto_decode((const char *)p, n, (size_t)C.cfg->max_body, &m, &e);
    if (!s->authed) {
        if (r || m.type != PL_MSG_AUTH)
            pl_wsconn_close(c, PL_WS_CLOSE_UNAUTHORIZED, "authenticate first");
        else if (session_auth(s, m.token, m.token_len, m.cursors, 0) != 0)
            pl_wsconn_close(c, PL_WS_CLOSE_UNAUTHORIZED, "bad or expired token");
        pl_msg_release(&m);
        return;
    }
    s->last_hb = pl_mono_ms();                 /* any message is a heartbeat */
    if (s->held) {                             /* the first message ends the hold */
        if (!r && m.type == PL_MSG_SYNC) {
            do_sync(s, m.cursors, m.req);
            release_hold(s);
            pl_msg_release(&m);
            return;
        }
        release_hold(s);
    }
    if (r) {
        send_error(c, e.req, e.code, e.message);
        pl_msg_release(&m);
        return;
    }
    switch (m.type) {
    case PL_MSG_HEARTBEAT:
        break;
    case PL_MSG_DELIVERED:
    case PL_MSG_READ:
        do_receipt(s, &m);
        break;
    case PL_MSG_RECEIPTS:
        do_receipts(s, &m);
        break;
    case PL_MSG_TYPING:
        do_typing(s, &m);
        break;
    case PL_MSG_PRESENCE:
        do_presence_set(s, &m);
        break;
    case PL_MSG_PRESENCE_QUERY:
        do_presence_query(s, &m);
        break;
    case PL_MSG_AUTH:
        send_error(c, m.req, "bad_request", "already authenticated");
        break;
    case PL_MSG_SEND:
        do_send(s, &m);
        break;
    case PL_MSG_SYNC:
        do_sync(s, m.cursors, m.req);
        break;
    case PL_MSG_HISTORY:
        do_history(s, &m);
        break;
    case PL_MSG_PING: {
        pl_sbuf b;
        pl_sbuf_init(&b);
        pl_sbuf_adds(&b, "{\"type\":\"pong\"");
        pl_proto_add_req(&b, m.req);
        pl_sbuf_addc(&b, '}');
        send_sbuf(c, &b);
        pl_sbuf_release(&b);
        break;
    }
    }
    pl_msg_release(&m);
}
