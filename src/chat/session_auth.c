/* session_auth.c — who a session is, and until when: tokens (checked for
 * REST and for sessions), starting an authentication, the login read, the
 * cluster-mode wait for the bus before `ready`, and logout (revocations).
 * Does not own: the session itself (session.c: auth_ready, which makes an
 * authenticated session live and sends `ready`, its lifecycle, the
 * registry of users, dispatching messages, liveness).
 *
 * Session states:
 *
 *   NEW --auth (first frame) or a token at the handshake--> AUTHING
 *   AUTHING --the store confirms the login session (in cluster mode, and
 *             the bus its conversations' subscriptions: auth_wait_bus)
 *             --> AUTHED (ready sent)
 *   AUTHING --bad token, revoked, unknown user, timeout--> closed 4001
 *
 * While AUTHING the connection does not read; messages that were already
 * in the read buffer are kept (at most AUTH_QUEUE_MAX) and handled, in
 * order, right after `ready`.
 */
#include <stdlib.h>
#include <string.h>

#include "../core/alloc.h"
#include "../core/clock.h"
#include "../core/metrics.h"
#include "../ws/ws.h"
#include "auth.h"
#include "e2ee.h"
#include "session_int.h"

struct auth_op *bus_waiters;       /* sessions whose `ready` waits for the bus */
/* Authentications whose login read is in flight: a revocation that
 * commits after the read but is heard before its answer would otherwise
 * find neither a session nor a waiter to mark, and the session went on
 * for good with its login logged out (audit N4, embedded mode: `ready`
 * after the logout's 204, sends acknowledged, never closed). */
static struct auth_op *reading;
uv_timer_t      bus_wait_timer;

/* ---- tokens --------------------------------------------------------------------- */

typedef struct token_op {
    pl_job           job;
    pl_chat_token_cb cb;
    void            *arg;
    uint32_t         stamp;       /* the token's login stamp (auth.h)        */
} token_op;

/* 1 if the login row read for a token is that token's: its user's, not
 * revoked, and the login it was issued for, not a later one given its id
 * (a database restored from a backup: audit N4). */
static int login_is_tokens(const pl_job *j, uint32_t stamp) {
    return !j->login_out.revoked && j->login_out.user == j->user && pl_auth_stamp_ok(stamp, j->login_out.created);
}

static void token_done(pl_job *j) {
    token_op *op = (token_op *)j;
    int r = j->result;
    if (r == PL_STORE_OK && !login_is_tokens(j, op->stamp)) r = PL_STORE_ENOTFOUND;
    op->cb(op->arg, r, j->user, j->id);
    pl_job_release(j);
    free(op);
}

int pl_chat_check_token(const char *tok, size_t len, pl_chat_token_cb cb, void *arg) {
    int64_t user, login;
    uint32_t stamp;
    if (C.stopping) return PL_STORE_EUNAVAIL;
    if (pl_auth_verify_access(tok, len, pl_now_ms() / 1000, &user, &login, &stamp) != PL_AUTH_OK)
        return PL_STORE_ENOTFOUND;
    token_op *op = pl_calloc(1, sizeof *op);
    op->cb = cb;
    op->arg = arg;
    op->stamp = stamp;
    op->job.op = PL_READ_LOGIN;
    op->job.id = login;
    op->job.user = user;
    op->job.done = token_done;
    pl_store_submit(C.store, &op->job);
    return 0;
}

/* ---- authentication ------------------------------------------------------------ */

/* SSE: tells the opener how authentication ended (it answers the HTTP
 * request: the stream's head, or 401/503); 1 if the session goes on. */
static int sse_auth_result(auth_op *op, session *s, pl_job *j) {
    pl_conn *c = op->conn;
    int r = PL_STORE_OK;
    if (!s || !pl_conn_alive(c) || C.stopping || j->result == PL_STORE_EUNAVAIL) r = PL_STORE_EUNAVAIL;
    else if (j->result || !login_is_tokens(j, op->stamp)) r = PL_STORE_ENOTFOUND;
    if (r && s && c->session == s) session_discard(c);
    op->sse_cb(op->sse_arg, r);
    return r == PL_STORE_OK && c->session == s && chat_is_open(c);
}

static void reading_remove(auth_op *op) {
    if (op->rprev) op->rprev->rnext = op->rnext;
    else if (reading == op) reading = op->rnext;
    if (op->rnext) op->rnext->rprev = op->rprev;
    op->rnext = op->rprev = NULL;
}

void auth_release(auth_op *op) {
    for (uint32_t i = 0; i < op->npinned; i++) deliver_conv_unpin(op->pinned[i]);
    free(op->pinned);
    if (op->root) json_decref(op->root);
    pl_job_release(&op->job);
    CO.unref(op->conn);
    free(op);
}

/* Cluster mode: `ready` promises that whatever is published from then on
 * reaches the session, ephemeral frames (typing, receipts) included, so it
 * waits until the bus confirmed the subscription of every conversation
 * the session is in (a node already subscribed has nothing to wait for).
 * The wait is bounded by BUS_WAIT_MS and skipped while the bus is down;
 * events are never at stake (the heads check after the subscription fills
 * them in). 1 if op now waits (auth_ready follows), 0 to go on at once. */
static int auth_wait_bus(auth_op *op) {
    pl_job *j = &op->job;
    if (!C.bus || !C.bus->shared || !j->nconvs || !pl_bus_healthy(C.bus)) return 0;
    for (size_t i = 0; i < j->nconvs; i++) {
        chat_conv *cv = deliver_conv_pin(j->convs[i].id, j->convs[i].last_seq);
        if (!cv) continue;
        if (!op->pinned) op->pinned = pl_malloc((j->nconvs - i) * sizeof *op->pinned);
        op->pinned[op->npinned++] = cv;
    }
    if (!op->npinned) return 0;
    op->until = pl_mono_ms() + BUS_WAIT_MS;
    op->wnext = bus_waiters;
    bus_waiters = op;
    if (!uv_is_active((uv_handle_t *)&bus_wait_timer)) uv_timer_start(&bus_wait_timer, bus_wait_check, BUS_WAIT_TICK_MS, 0);
    return 1;
}

/* Sends the `ready` of every waiting session whose subscriptions are all
 * confirmed, or whose wait is over. */
void bus_wait_check(uv_timer_t *t) {
    (void)t;
    int64_t now = pl_mono_ms();
    int up = C.bus && pl_bus_healthy(C.bus);
    auth_op *go = NULL;
    for (auth_op **pp = &bus_waiters; *pp;) {
        auth_op *op = *pp;
        int alive = pl_conn_alive(op->conn) && op->conn->session == op->sess;
        while (op->nlive < op->npinned && op->pinned[op->nlive]->bus_live) op->nlive++;
        if (op->nlive < op->npinned && now < op->until && up && alive && !C.stopping) {
            pp = &op->wnext;
            continue;
        }
        if (op->nlive < op->npinned && alive && !C.stopping) pl_count(&pl_m_ready_bus_timeouts, 1);
        *pp = op->wnext;
        op->wnext = go;
        go = op;
    }
    while (go) {                              /* off the list first: auth_ready may add */
        auth_op *op = go;
        go = op->wnext;
        auth_ready(op);
    }
    if (bus_waiters && !C.stopping) uv_timer_start(&bus_wait_timer, bus_wait_check, BUS_WAIT_TICK_MS, 0);
}

void session_bus_live(void) {
    if (bus_waiters && !C.stopping) uv_timer_start(&bus_wait_timer, bus_wait_check, 0, 0);
}

/* The store confirmed (or not) the login: register the session, subscribe
 * it to its conversations, send `ready` (auth_ready), then handle what came
 * meanwhile. */
static void auth_done(pl_job *j) {
    auth_op *op = (auth_op *)j;
    pl_conn *c = op->conn;
    session *s = c->session;
    op->sess = s;
    reading_remove(op);
    if (op->revoked && j->result == PL_STORE_OK) j->result = PL_STORE_ENOTFOUND;   /* read before it */
    if (op->sse_cb) {
        if (!sse_auth_result(op, s, j)) goto out;
    } else if (!s || !pl_conn_alive(c) || C.stopping) {
        goto out;
    } else if (j->result == PL_STORE_EUNAVAIL) {
        CO.close(c, PL_CLOSE_TRY_AGAIN, "store unavailable: reconnect later");
        goto out;
    } else if (j->result || !login_is_tokens(j, op->stamp)) {
        CO.close(c, PL_WS_CLOSE_UNAUTHORIZED, op->revoked ? op->revoked : "bad or expired token");
        goto out;
    }
    if (auth_wait_bus(op)) return;
    auth_ready(op);
    return;
out:
    auth_release(op);
}

/* Checks the token's signature now and the login session in the store.
 * SSE (sse_cb): returns an error instead of closing. */
int auth_start(session *s, const char *tok, size_t len, json_t *root, json_t *cursors, int hold,
               pl_chat_sse_cb sse_cb, void *sse_arg) {
    int64_t user, login;
    uint32_t stamp;
    if (C.stopping) {
        if (sse_cb) return PL_STORE_EUNAVAIL;
        CO.close(s->conn, PL_WS_CLOSE_UNAUTHORIZED, "bad or expired token");
        return 0;
    }
    if (pl_auth_verify_access(tok, len, pl_now_ms() / 1000, &user, &login, &stamp) != PL_AUTH_OK) {
        if (sse_cb) return PL_STORE_ENOTFOUND;
        CO.close(s->conn, PL_WS_CLOSE_UNAUTHORIZED, "bad or expired token");
        return 0;
    }
    s->state = S_AUTHING;
    /* A WebSocket session stops reading only when a message arrives before
     * `ready` (pl_chat_ws_text): a resuming client sends nothing else, and
     * a pause and resume per authentication cost the loop two epoll_ctl
     * calls each (a reconnect storm's worth of them). */
    if (sse_cb) CO.pause(s->conn);
    auth_op *op = pl_calloc(1, sizeof *op);
    op->conn = s->conn;
    CO.ref(s->conn);
    op->root = root ? json_incref(root) : NULL;
    op->cursors = cursors;
    op->hold = hold;
    op->stamp = stamp;
    op->sse_cb = sse_cb;
    op->sse_arg = sse_arg;
    op->job.op = PL_READ_SESSION;
    op->job.id = login;
    op->job.user = user;
    op->job.done = auth_done;
    op->mlog_at = deliver_mlog_mark();       /* what the read may predate (auth_done) */
    op->rnext = reading;
    if (reading) reading->rprev = op;
    reading = op;
    pl_store_submit(C.store, &op->job);
    return 0;
}

/* ---- logout --------------------------------------------------------------------- */

void session_on_revoke(void *ud, int64_t user, int64_t login) {
    const char *why = login ? "session revoked" : "account deleted";   /* logout or a reused refresh token */
    chat_user *cu = pl_map_get(&C.users, user);
    for (session *s = cu ? cu->sessions : NULL; s; s = s->unext)
        if (!login || s->login == login) chat_close(s->conn, PL_WS_CLOSE_UNAUTHORIZED, why);
    for (auth_op *op = bus_waiters; op; op = op->wnext)   /* read before the revocation */
        if (op->job.user == user && (!login || op->job.id == login)) op->revoked = why;
    for (auth_op *op = reading; op; op = op->rnext)       /* its read may be, too */
        if (op->job.user == user && (!login || op->job.id == login)) op->revoked = why;
    if (C.hooks.login_revoked) C.hooks.login_revoked(user, login);
}

/* Cluster mode: a revocation published on the user's channel before this
 * node listened to it (a session authenticating here while its login was
 * revoked on another node, or any revocation during a Redis outage) never
 * arrives, so when the channel's subscription is confirmed the logins of
 * the user's sessions here are read again (deliver_on_user_ready). */
typedef struct login_check {
    pl_job job;
} login_check;

static void login_checked(pl_job *j) {
    if (!C.stopping && (j->result == PL_STORE_ENOTFOUND ||
                        (j->result == PL_STORE_OK && (j->login_out.revoked || j->login_out.user != j->user))))
        session_on_revoke(NULL, j->user, j->id);
    pl_job_release(j);
    free(j);
}

void session_check_logins(int64_t user) {
    chat_user *cu = pl_map_get(&C.users, user);
    for (session *s = cu ? cu->sessions : NULL; s && !C.stopping; s = s->unext) {
        int dup = 0;                              /* one read per login */
        for (session *o = cu->sessions; o != s && !dup; o = o->unext) dup = o->login == s->login;
        if (dup) continue;
        login_check *k = pl_calloc(1, sizeof *k);
        k->job.op = PL_READ_LOGIN;
        k->job.id = s->login;
        k->job.user = user;
        k->job.done = login_checked;
        pl_store_submit(C.store, &k->job);
    }
}

void pl_chat_revoke_login(int64_t user, int64_t login) {
    if (C.bus) pl_bus_publish_revoke(C.bus, user, login);
    if (login) pl_e2ee_device_gone(user, login);   /* its keys go too (e2ee.c) */
}
