/* session.c — WebSocket sessions: the registry of users and their
 * sessions, a session's lifecycle (auth_ready makes an authenticated one
 * live), dispatching client messages, liveness, shutdown, and the one place
 * frames are queued to a session.
 * Does not own: tokens, authentication up to `ready` and logout
 * (session_auth.c, with the session states); session_int.h is what the
 * two files share.
 *
 * The slow-consumer contract (P3): a connection's write queue is bounded by
 * --max-outbound bytes.
 *   - Events (chat_deliver) that do not fit, once what the kernel takes
 *     now is written, close it with 4008 (its unsent events dropped, so
 *     the close frame comes next); the client resumes from its cursors,
 *     losing nothing.
 *   - Replies the client asked for (chat_deliver_reply: history, receipts,
 *     ready, acks, errors) are bounded in size by the reply budget (pages
 *     end early with has_more) and are queued unless the queue is already
 *     at the bound: asking never gets the asker closed; asking without
 *     reading does.
 *   - Ephemeral frames (typing, presence, receipts) are dropped once the
 *     queue is above its high-water mark, and whenever they do not fit.
 * The contract is the transport's too: an SSE session (sse.c) is held to
 * the same bound with its frames' SSE sizes, and closed the SSE way.
 */
#include <stdlib.h>
#include <string.h>

#include "../core/alloc.h"
#include "../core/clock.h"
#include "../core/log.h"
#include "../core/metrics.h"
#include "../ws/ws.h"
#include "../ws/wsconn.h"
#include "session_int.h"

chat_state C;

#if defined(__x86_64__)
_Static_assert(sizeof(session) <= 120, "session must fit a 128-byte malloc chunk (chat_int.h)");
#endif

static void conn_shut(pl_conn *c) { pl_conn_close(c, 1); }
pl_chat_conn_ops CO = {pl_conn_send, pl_conn_send_copy, pl_wsconn_close, pl_conn_pause,
                       pl_conn_resume, pl_conn_ref, pl_conn_unref, conn_shut, pl_conn_send_part,
                       pl_conn_cork, pl_conn_uncork, pl_conn_write_now, pl_conn_drop_unsent_units};

void pl_chat_set_conn_ops(const pl_chat_conn_ops *ops) { CO = *ops; }

static void tick(uv_timer_t *t);
static void dispatch(session *s, const uint8_t *p, size_t n);

void pl_chat_init(uv_loop_t *loop, pl_store *store, const pl_config *cfg, const pl_chat_hooks *hooks) {
    memset(&C, 0, sizeof C);
    C.loop = loop;
    C.store = store;
    C.cfg = cfg;
    if (hooks) C.hooks = *hooks;
    pl_map_init(&C.users);
    deliver_init();
    presence_init();
    send_init();
    wsrate_init();
    uv_timer_init(loop, &C.ticker);
    uv_timer_start(&C.ticker, tick, (uint64_t)presence_tick_ms(), (uint64_t)presence_tick_ms());
    uv_unref((uv_handle_t *)&C.ticker);
    bus_waiters = NULL;
    uv_timer_init(loop, &bus_wait_timer);     /* active only while sessions wait */
}

void pl_chat_bus_handlers(pl_bus_handlers *h) {
    memset(h, 0, sizeof *h);
    h->event = deliver_on_event;
    h->head = deliver_on_head;
    h->join = deliver_on_join;
    h->revoke = session_on_revoke;
    h->typing = typing_on_bus;
    h->conv_blocked = typing_conv_blocked;
    h->erased = deliver_on_erased;            /* deliver_ring.c */
    h->receipt = receipts_on_bus;
    h->presence = presence_on_bus;
    h->resync = deliver_on_resync;
    h->conv_ready = deliver_on_conv_ready;
    h->user_ready = deliver_on_user_ready;
    h->outbox_acked = chat_outbox_acked;
    h->keys_low = e2ee_on_keys_low;          /* e2ee.c */
}

void pl_chat_set_bus(pl_bus *bus) {
    C.bus = bus;
    if (bus && bus->shared) chat_outbox_start();
}

size_t pl_chat_session_count(void) { return C.nsessions; }

const char *pl_chat_error_code(int r, int *status) {
    switch (r) {
    case PL_STORE_ENOTFOUND: *status = 404; return "not_found";
    case PL_STORE_ECONFLICT: *status = 409; return "conflict";
    case PL_STORE_EFORBID:   *status = 403; return "forbidden";
    case PL_STORE_EINVAL:    *status = 400; return "bad_request";
    case PL_STORE_EGONE:     *status = 410; return "gone";
    case PL_STORE_EUNAVAIL:  *status = 503; return "unavailable";
    default:                 *status = 500; return "internal";
    }
}

/* ---- queueing frames (the slow-consumer contract above) ------------------ */

/* An SSE connection has ws_state OPEN (0) until sse_close ends it, which
 * also makes it not alive: one test for both transports. */
int chat_is_open(const pl_conn *c) { return c->ws_state == PL_WSS_OPEN && pl_conn_alive(c); }

static int is_sse(const pl_conn *c) {
    const session *s = c->session;
    return s && s->tp == TP_SSE;
}

void chat_close(pl_conn *c, int code, const char *reason) {
    session *s = c->session;
    /* A session the server ends stops counting for presence now, not when
     * its client lets go of the socket, up to CLOSE_LINGER_MS later (audit
     * W2 F6: a revoked SSE stream whose client kept the socket was
     * announced offline 5 s late). A drain's 1001 does not: its client
     * reconnects to another node, and its user stays online there. */
    if (s && s->state == S_AUTHED && !s->ended && code != PL_WS_CLOSE_GOING_AWAY && chat_is_open(c)) {
        s->ended = 1;
        presence_session_ended(s);
    }
    if (is_sse(c)) sse_close(c, code, reason);
    else CO.close(c, code, reason);
}

/* The queued events are of no use to a client that must resync: they are
 * dropped so that the close comes next, after the frame (WebSocket) or
 * the event (SSE: its data lines and its end are separate entries) the
 * client is receiving. (An SSE stream kept its whole queue, up to
 * --max-outbound, ahead of its `close` event.) A client that does not read
 * again within the close's timeout is cut off after what its socket
 * holds, possibly in the middle of an event (protocol.md). */
void chat_close_slow(pl_conn *c) {
    pl_count(&pl_m_slow_consumer_closes, 1);
    pl_log(PL_LOG_INFO, c->id, "slow consumer closed", "\"queued\":%u", c->qbytes);
    if (CO.drop_unsent) CO.drop_unsent(c, is_sse(c) ? sse_starts_event : NULL);
    chat_close(c, PL_CLOSE_SLOW_CONSUMER, "slow consumer: reconnect and sync");
}

/* Whether n more bytes fit c's queue; when they do not, what the kernel
 * takes now is written first: a burst queued within one loop turn (a
 * batch of commits) is no sign that the client does not read. */
static int fits(pl_conn *c, size_t n) {
    size_t bound = (size_t)C.cfg->max_outbound;
    if (c->qbytes + n <= bound) return 1;
    if (CO.write_now) CO.write_now(c);
    /* One frame larger than the bound itself (a --max-body near it, or a
     * body of escaped characters) goes to a client with nothing queued:
     * closing for it closed every member, and every resume again at the
     * same event, for good (audit B3). It is the backlog that is bounded. */
    return c->qbytes + n <= bound || c->qbytes == 0;
}

/* The bytes frame will take in c's queue, and queueing it. id: an SSE
 * session's frame carries its cursor id (with x's conversation at seq). */
static size_t frame_len(pl_conn *c, pl_rbuf *frame, int id, sub *x, int64_t seq) {
    return is_sse(c) ? sse_frame_len(c, frame, id, x, seq) : frame->len;
}

static void frame_send(pl_conn *c, pl_rbuf *frame, int id, sub *x, int64_t seq) {
    if (is_sse(c)) sse_send(c, frame, id, x, seq);
    else CO.send(c, frame);
}

static int deliver(pl_conn *c, pl_rbuf *frame, int id, sub *x, int64_t seq) {
    if (!chat_is_open(c)) return -1;
    if (!fits(c, frame_len(c, frame, id, x, seq))) {
        chat_close_slow(c);
        return -1;
    }
    frame_send(c, frame, id, x, seq);
    return 0;
}

int chat_deliver(pl_conn *c, pl_rbuf *frame) { return deliver(c, frame, 0, NULL, 0); }

int chat_deliver_event(sub *x, pl_rbuf *frame, int64_t seq) { return deliver(x->sess->conn, frame, 1, x, seq); }

/* The same for a WebSocket session (not SSE) when CO.send_part is set: the
 * frame is bytes [off, off + len) of b (deliver.c's frame arena). */
int chat_deliver_event_part(sub *x, pl_rbuf *b, size_t off, size_t len) {
    pl_conn *c = x->sess->conn;
    if (!chat_is_open(c)) return -1;
    if (!fits(c, len)) {
        chat_close_slow(c);
        return -1;
    }
    CO.send_part(c, b, off, len);
    return 0;
}

int chat_deliver_reply(pl_conn *c, pl_rbuf *frame) {
    if (!chat_is_open(c)) return -1;
    if (!fits(c, 1)) {
        chat_close_slow(c);
        return -1;
    }
    frame_send(c, frame, 0, NULL, 0);
    return 0;
}

void chat_deliver_ephemeral(pl_conn *c, pl_rbuf *frame) {
    if (!chat_is_open(c)) return;
    if (c->high || c->qbytes + frame_len(c, frame, 0, NULL, 0) > (size_t)C.cfg->max_outbound) {
        pl_count(&pl_m_dropped_ephemeral, 1);
        return;
    }
    frame_send(c, frame, 0, NULL, 0);
}

/* Replies are pages of at most this many bytes of events (at least one). */
size_t chat_reply_budget(void) {
    size_t b = (size_t)C.cfg->max_outbound / 4;
    return b < 16384 ? 16384 : b;
}

void chat_send_text(pl_conn *c, const char *s, size_t n, int reply) {
    pl_rbuf *b = pl_ws_text_frame(s, n);
    if (reply) chat_deliver_reply(c, b);
    else chat_deliver(c, b);
    pl_rbuf_unref(&b);
}

void chat_send_error_with(pl_conn *c, json_t *req, const char *code, const char *msg, const char *fields) {
    pl_sbuf s;
    pl_sbuf_init(&s);
    pl_proto_error(&s, req, code, msg);
    int retry = strcmp(code, "unavailable") == 0;   /* when to try again, as REST's Retry-After */
    if ((retry || fields) && s.len && s.p[s.len - 1] == '}') {
        s.len--;
        if (fields) pl_sbuf_adds(&s, fields);
        pl_sbuf_adds(&s, retry ? ",\"retry_after\":1}" : "}");
    }
    chat_send_text(c, s.p, s.len, 1);
    pl_sbuf_release(&s);
}

void chat_send_error(pl_conn *c, json_t *req, const char *code, const char *msg) {
    chat_send_error_with(c, req, code, msg, NULL);
}

/* ---- asynchronous replies ------------------------------------------------------ */

ws_reply *ws_reply_new(session *s, pl_msg *m, const char *type) {
    ws_reply *r = pl_calloc(1, sizeof *r);
    r->conn = s->conn;
    CO.ref(s->conn);
    r->root = json_incref(m->root);
    r->req = m->req;
    r->type = type;
    return r;
}

void ws_reply_json(void *arg, int result, const char *json, size_t len) {
    ws_reply *r = arg;
    if (pl_conn_alive(r->conn)) {
        if (result) {
            int st;
            chat_send_error(r->conn, r->req, pl_chat_error_code(result, &st),
                            result == PL_STORE_ENOTFOUND ? "no such conversation" : "unavailable, try again");
        } else {
            pl_sbuf b;
            pl_sbuf_init(&b);
            pl_sbuf_printf(&b, "{\"type\":\"%s\"", r->type);
            pl_proto_add_req(&b, r->req);
            pl_sbuf_addc(&b, ',');
            pl_sbuf_add(&b, json, len);
            pl_sbuf_addc(&b, '}');
            chat_send_text(r->conn, b.p, b.len, 1);
            pl_sbuf_release(&b);
        }
    }
    json_decref(r->root);
    CO.unref(r->conn);
    free(r);
}

/* ---- users ------------------------------------------------------------------ */

chat_user *chat_user_get(int64_t id) { return pl_map_get(&C.users, id); }

static chat_user *user_attach(session *s) {
    chat_user *cu = pl_map_get(&C.users, s->user);
    if (!cu) {
        cu = pl_calloc(1, sizeof *cu);
        cu->id = s->user;
        pl_map_put(&C.users, s->user, cu);
        pl_bus_subscribe_user(C.bus, s->user, 1);     /* joins, revocations */
    }
    s->uprev = NULL;
    s->unext = cu->sessions;
    if (cu->sessions) cu->sessions->uprev = s;
    cu->sessions = s;
    return cu;
}

static void user_detach(session *s) {
    chat_user *cu = pl_map_get(&C.users, s->user);
    if (s->uprev) s->uprev->unext = s->unext;
    else if (cu) cu->sessions = s->unext;
    if (s->unext) s->unext->uprev = s->uprev;
    if (cu && !cu->sessions) {
        pl_map_del(&C.users, cu->id);
        if (C.bus) pl_bus_subscribe_user(C.bus, cu->id, 0);
        free(cu);
    }
}

/* ---- lifecycle ------------------------------------------------------------------ */

/* The next look at a quiet connection: its ping, or its idle timeout when
 * that comes first (--idle-timeout below --ping-interval; audit P: the
 * close waited for the first ping). */
static void liveness_arm(pl_conn *c) {
    int64_t ping = (int64_t)C.cfg->ping_interval * 1000, idle = (int64_t)C.cfg->idle_timeout * 1000;
    c->deadline = pl_conn_last_rx(c, pl_mono_ms()) + (ping < idle ? ping : idle);
}

static void pq_free(session *s) {
    while (s->pq_head) {
        pending_msg *p = s->pq_head;
        s->pq_head = p->next;
        free(p);
    }
    s->pq_len = 0;
    free(s->resume);
    s->resume = NULL;
    s->nresume = 0;
}

/* Forgets a session that never authenticated (its connection stays). */
void session_discard(pl_conn *c) {
    session *s = c->session;
    c->session = NULL;
    pq_free(s);
    C.nsessions--;
    free(s);
}

void auth_ready(auth_op *op) {
    pl_job *j = &op->job;
    pl_conn *c = op->conn;
    session *s = op->sess;
    if (!pl_conn_alive(c) || c->session != s || C.stopping) goto out;
    if (op->revoked) {                        /* while it waited for the bus */
        chat_close(c, PL_WS_CLOSE_UNAUTHORIZED, op->revoked);
        goto out;
    }
    s->user = j->user;
    s->login = j->id;
    s->state = S_AUTHED;
    s->last_hb = pl_mono_ms();
    user_attach(s);
    presence_session_added(s);
    if (s->tp == TP_SSE) c->deadline = pl_mono_ms() + (int64_t)C.cfg->sse_heartbeat * 1000;
    else liveness_arm(c);

    pl_sbuf b;
    pl_sbuf_init(&b);
    /* the auth message's req, if it had one (the fast path keeps cursors
     * alone: it takes no auth with a req) */
    json_t *req = op->root && op->root != op->cursors ? json_object_get(op->root, "req") : NULL;
    pl_sbuf_adds(&b, "{\"type\":\"ready\"");
    pl_proto_add_req(&b, req);
    pl_sbuf_printf(&b, ",\"protocol\":%d,\"user\":{\"id\":%lld,\"username\":",
                   PL_PROTO_VERSION, (long long)s->user);
    pl_sbuf_add_json_str(&b, j->user_out.username, strnlen(j->user_out.username, sizeof j->user_out.username));
    pl_sbuf_printf(&b, "},\"session\":%lld,\"conversations\":[", (long long)s->login);
    for (size_t i = 0; i < j->nconvs; i++) {
        const pl_conv *cv = &j->convs[i];
        /* from the read's seq when the user's membership changed since (the
         * change is then replayed to it: deliver_mlog_apply), else from
         * what the stream already published */
        int64_t from = deliver_mlog_changed(op->mlog_at, s->user, cv->id, cv->last_seq) ? cv->last_seq : -1;
        sub *x = sub_create(s, cv->id, cv->last_seq, from, cv->joined_seq - 1, op->hold ? SUB_HELD : SUB_LIVE);
        x->acked_delivered = cv->delivered_seq;
        x->acked_read = cv->read_seq;
        conv_learn(x->conv, cv->kind, cv->member_count, cv->last_seq);
        if (cv->kind == PL_CONV_DIRECT) x->conv->blocked = cv->blocked ? 1 : 0;
        if (cv->kind == PL_CONV_CHANNEL) wsrate_learn(cv->id, cv->workspace);
        pl_sbuf_printf(&b, "%s{\"id\":%lld,\"last_seq\":%lld,\"unread\":%lld,\"unread_mentions\":%lld,"
                       "\"notify\":\"%s\"}", i ? "," : "", (long long)cv->id, (long long)x->sent_seq,
                       (long long)cv->unread, (long long)cv->unread_mentions, pl_proto_notify_name(cv->notify));
    }
    pl_sbuf_adds(&b, "]}");
    if (s->tp == TP_SSE && !s->resuming) {    /* a new stream starts from here: an id */
        pl_rbuf *f = pl_ws_text_frame(b.p, b.len);
        deliver(c, f, 1, NULL, 0);
        pl_rbuf_unref(&f);
    } else {
        chat_send_text(c, b.p, b.len, 1);
    }
    pl_sbuf_release(&b);
    pl_log(PL_LOG_DEBUG, c->id, "ws authenticated", "\"user\":%lld", (long long)s->user);
    if (op->hold) {
        s->held = 1;
        c->deadline = pl_mono_ms() + HOLD_MS;
    }
    deliver_mlog_apply(s, op->mlog_at);
    if (op->cursors) deliver_sync(s, op->cursors, req);
    session_cork_for_replay(s);
    if (s->resuming) sse_resume(s);
    CO.resume(c);
    while (s->pq_head && pl_conn_alive(c) && c->session == s) {
        pending_msg *p = s->pq_head;
        s->pq_head = p->next;
        s->pq_len--;
        dispatch(s, p->data, p->len);
        free(p);
    }
    s->pq_len = 0;
out:
    auth_release(op);
}

void pl_chat_ws_open(pl_conn *c, const char *token, size_t len) {
    session *s = pl_calloc(1, sizeof *s);
    s->conn = c;
    c->session = s;
    C.nsessions++;
    c->deadline = pl_mono_ms() + (int64_t)C.cfg->auth_timeout * 1000;
    if (token) auth_start(s, token, len, NULL, NULL, 1, NULL, NULL);
}

int pl_chat_sse_open(pl_conn *c, const char *tok, size_t len, int resuming, pl_cursor *resume,
                     size_t nresume, pl_chat_sse_cb cb, void *arg) {
    session *s = pl_calloc(1, sizeof *s);
    s->conn = c;
    s->tp = TP_SSE;
    s->resuming = (uint8_t)(resuming != 0);
    s->resume = resume;
    s->nresume = nresume;
    c->session = s;
    C.nsessions++;
    int r = auth_start(s, tok, len, NULL, NULL, 0, cb, arg);
    if (r) session_discard(c);
    return r;
}

void pl_chat_conn_closed(pl_conn *c) {
    session *s = c->session;
    if (!s) return;
    c->session = NULL;
    pq_free(s);
    if (s->state == S_AUTHED) {
        presence_session_gone(s);
        typing_session_gone(s);
        sub_release_all(s);
        user_detach(s);
        presence_user_detached(s->user);
    }
    C.nsessions--;
    free(s);
}

/* ---- messages ------------------------------------------------------------------ */

/* 1 if a message its decoder refused still says `"type": "auth"`. */
static int says_auth(const pl_msg *m) {
    json_t *type = m->root ? json_object_get(m->root, "type") : NULL;
    return json_is_string(type) && strcmp(json_string_value(type), "auth") == 0;
}

void pl_chat_ws_text(pl_conn *c, const uint8_t *p, size_t n) {
    session *s = c->session;
    if (!s) return;
    pl_count(&pl_m_ws_messages_in, 1);
    if (s->state == S_AUTHING) {              /* keep it for after `ready` */
        if (s->pq_len >= AUTH_QUEUE_MAX) {
            CO.close(c, PL_WS_CLOSE_POLICY, "too many messages before authentication completed");
            return;
        }
        pending_msg *pm = pl_malloc(sizeof *pm + n);
        pm->next = NULL;
        pm->len = n;
        memcpy(pm->data, p, n);
        pending_msg **tail = &s->pq_head;   /* at most AUTH_QUEUE_MAX: no tail pointer */
        while (*tail) tail = &(*tail)->next;
        *tail = pm;
        s->pq_len++;
        CO.pause(c);                          /* no more until `ready` (auth_done resumes) */
        return;
    }
    if (s->state == S_NEW) {
        pl_msg m;
        pl_proto_err e;
        int r = pl_proto_decode((const char *)p, n, (size_t)C.cfg->max_body, &m, &e);
        if (r && says_auth(&m)) m.type = PL_MSG_AUTH;   /* refused before its type was read (a bad req) */
        /* an `auth`, but not a valid one, or a message that is not JSON at
         * all (a repeated key, say: it was "authenticate first", which
         * misled a client that had sent an `auth`): say why */
        /* !root: not read as JSON at all (bad JSON, a number past 64 bits:
         * audit R3); JSON but not an object (`[1]`, `null`: audit M2) */
        if (r && (m.type == PL_MSG_AUTH || !m.root || !json_is_object(m.root))) {
            char why[124];
            snprintf(why, sizeof why, "bad auth message: %s", e.message);
            CO.close(c, PL_WS_CLOSE_UNAUTHORIZED, why);
        } else if (r || m.type != PL_MSG_AUTH) {
            CO.close(c, PL_WS_CLOSE_UNAUTHORIZED, "authenticate first");
        } else {
            s->pq_len = 1;                    /* the `auth` is one of the 64 before `ready` */
            auth_start(s, m.token, m.token_len, m.root ? m.root : m.cursors, m.cursors, 0, NULL, NULL);
        }
        pl_msg_release(&m);
        return;
    }
    dispatch(s, p, n);
}

static void do_ping(session *s, pl_msg *m) {
    pl_sbuf b;
    pl_sbuf_init(&b);
    pl_sbuf_adds(&b, "{\"type\":\"pong\"");
    pl_proto_add_req(&b, m->req);
    pl_sbuf_addc(&b, '}');
    chat_send_text(s->conn, b.p, b.len, 1);
    pl_sbuf_release(&b);
}

static void dispatch_msg(session *s, const uint8_t *p, size_t n);

/* A WebSocket session's message. Its first ends what a hold kept for it:
 * the conversations it was removed from meanwhile (s->resume, deliver.c
 * end_finish), which that message, were it a `sync`, was answered from. */
static void dispatch(session *s, const uint8_t *p, size_t n) {
    dispatch_msg(s, p, n);
    if (s->tp == TP_WS && s->resume) {
        free(s->resume);
        s->resume = NULL;
        s->nresume = 0;
    }
}

/* One message of an authenticated session. */
static void dispatch_msg(session *s, const uint8_t *p, size_t n) {
    pl_conn *c = s->conn;
    pl_msg m;
    pl_proto_err e;
    int r = pl_proto_decode((const char *)p, n, (size_t)C.cfg->max_body, &m, &e);
    s->last_hb = pl_mono_ms();                 /* any message is a heartbeat */
    if (s->held) {                             /* the first message ends the hold */
        if (!r && m.type == PL_MSG_SYNC) {
            deliver_sync(s, m.cursors, m.req);
            session_release_hold(s);
            liveness_arm(c);
            pl_msg_release(&m);
            return;
        }
        session_release_hold(s);
        liveness_arm(c);
    }
    if (r) {
        /* a second `auth` is refused as one, malformed or not (audit O10:
         * one without a token was told `"token" must be a string`) */
        int auth = says_auth(&m);
        chat_send_error(c, e.req, auth ? "bad_request" : e.code, auth ? "already authenticated" : e.message);
        pl_msg_release(&m);
        return;
    }
    switch (m.type) {
    case PL_MSG_HEARTBEAT:       break;
    case PL_MSG_DELIVERED:
    case PL_MSG_READ:            do_receipt(s, &m); break;
    case PL_MSG_RECEIPTS:        do_receipts(s, &m); break;
    case PL_MSG_TYPING:          do_typing(s, &m); break;
    case PL_MSG_PRESENCE:        do_presence_set(s, &m); break;
    case PL_MSG_PRESENCE_QUERY:  do_presence_query(s, &m); break;
    case PL_MSG_AUTH:            chat_send_error(c, m.req, "bad_request", "already authenticated"); break;
    case PL_MSG_SEND:            do_send(s, &m); break;
    case PL_MSG_SYNC:            deliver_sync(s, m.cursors, m.req); break;
    case PL_MSG_HISTORY:         do_history(s, &m); break;
    case PL_MSG_PING:            do_ping(s, &m); break;
    case PL_MSG_EDIT:
    case PL_MSG_DELETE:
    case PL_MSG_REACT:
    case PL_MSG_PIN:
    case PL_MSG_NOTIFY:          do_action(s, &m); break;
    case PL_MSG_PINS:            do_pins(s, &m); break;
    case PL_MSG_SEARCH:          do_search(s, &m); break;
    }
    pl_msg_release(&m);
}

/* ---- liveness (P5) and the replay wait (P3) -------------------------------------
 * After ping-interval seconds of silence the server pings (and again each
 * interval while the silence lasts); after idle-timeout seconds of silence
 * (no pong, no message, no byte) it closes with 4002. A replay that waits
 * on a full queue longer than slow-timeout closes with 4008. The
 * connection's single deadline holds the next check; any byte received
 * moves last_rx, so a pong re-arms it. */

/* A ping's pong would pass --max-outbound (wsconn.h): as for any frame. */
void pl_chat_ws_slow(pl_conn *c) { chat_close_slow(c); }

void pl_chat_ws_timeout(pl_conn *c) {
    session *s = c->session;
    if (!s) return;
    if (s->tp == TP_SSE) {
        pl_chat_sse_timeout(c);
        return;
    }
    if (s->state != S_AUTHED) {
        CO.close(c, PL_WS_CLOSE_UNAUTHORIZED, "authentication timeout");
        return;
    }
    if (s->held) {                          /* no `sync` came: go live, losing nothing */
        session_release_hold(s);
        liveness_arm(c);
        return;
    }
    int64_t now = pl_mono_ms(), last_rx = pl_conn_last_rx(c, now), idle = now - last_rx;
    int64_t slow_cut = s->drain_since + (int64_t)C.cfg->slow_timeout * 1000;
    if (s->waiting_drain && now >= slow_cut) {
        chat_close_slow(c);
        return;
    }
    int64_t ping_ms = (int64_t)C.cfg->ping_interval * 1000, idle_ms = (int64_t)C.cfg->idle_timeout * 1000;
    if (idle >= idle_ms) {
        pl_count(&pl_m_idle_closes, 1);
        CO.close(c, PL_CLOSE_IDLE, "idle timeout");
        return;
    }
    if (idle < ping_ms) {
        liveness_arm(c);
    } else {                                /* silent for a ping interval: ping */
        uint8_t hdr[14];
        size_t h = pl_ws_header(hdr, PL_WS_OP_PING, 0, NULL);
        CO.send_copy(c, hdr, h);
        c->deadline = now + ping_ms < last_rx + idle_ms ? now + ping_ms : last_rx + idle_ms;
    }
    if (s->waiting_drain && slow_cut < c->deadline) c->deadline = slow_cut;
}

void pl_chat_on_drain(pl_conn *c) {
    session *s = c->session;
    if (s && s->state == S_AUTHED) session_replays_resume(s);
}

/* ---- shutdown ------------------------------------------------------------------- */

static void close_one(pl_conn *c, void *arg) {
    const int *code = arg;
    if (c->mode != PL_CONN_WS && !(is_sse(c) && c->mode == PL_CONN_SSE)) {
        pl_conn_close(c, 1);               /* after any response in flight */
        return;
    }
    /* the drain contract (P6): a hint, then 1001; the client reconnects
     * (to another node, or this one when it is back) and resumes */
    static const char hint[] = "{\"type\":\"reconnect\",\"reason\":\"shutdown\",\"retry_after_ms\":1000}";
    pl_rbuf *f = pl_ws_text_frame(hint, sizeof hint - 1);
    if (chat_is_open(c)) frame_send(c, f, 0, NULL, 0);   /* even past the bound: the last frame */
    pl_rbuf_unref(&f);
    chat_close(c, *code, "server shutting down");
    /* the drain paused every reader: read again to take the client's close
     * reply (data frames are discarded once ours is sent) and end the TCP
     * connection cleanly, not reset it when the close wait runs out
     * (audit N3) */
    if (c->mode == PL_CONN_WS) CO.resume(c);
}

void pl_chat_close_all(pl_net *net, int code) { pl_net_each(net, close_one, &code); }

void pl_chat_shutdown(void) {
    C.stopping = 1;
    uv_timer_stop(&C.ticker);
    if (C.bus) pl_bus_rate_answer_now(C.bus);   /* sends waiting on a hung Redis: "shutting down" */
    bus_wait_check(NULL);            /* the waiting sessions give up (no `ready`) */
    uv_timer_stop(&bus_wait_timer);
    chat_outbox_stop();
    deliver_shutdown();
    presence_shutdown();             /* queues last seen: the store is still open */
}

void pl_chat_free(void) {
    pl_chat_filter_free();
    sse_free();
    deliver_free();
    send_free();
    wsrate_free();
    receipts_free();
    pl_map_release(&C.users);
    uv_close((uv_handle_t *)&C.ticker, NULL);
    uv_close((uv_handle_t *)&bus_wait_timer, NULL);
}

static void tick(uv_timer_t *t) {
    int64_t now = pl_mono_ms();
    typing_tick(now);
    presence_tick(now);
    receipts_tick(now);
}
