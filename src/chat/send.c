/* send.c — sends and the commit side of delivery: admitting a send (rate
 * limits), submitting it, acknowledging it, and publishing every committed
 * event exactly once (the store's commit hook), with the outbox that makes
 * "every committed event is published" survive a node's death.
 *
 * Owns: the embedded mode's message limiters (cluster mode shares them
 * through the bus), the outbox acknowledgements and takeovers.
 */
#include <stdlib.h>
#include <string.h>

#include "../core/alloc.h"
#include "../core/clock.h"
#include "../core/log.h"
#include "../core/metrics.h"
#include "chat_int.h"
#include "attach.h"
#include "e2ee.h"
#include "flow.h"

#define TAKEOVER_MS 2000              /* cluster mode: look for dead nodes' outboxes */

static struct {
    int64_t    acked;                 /* highest outbox batch the bus handed over */
    int64_t    ack_sent;              /* highest one the store was told about    */
    int        ack_inflight;
    uv_timer_t takeover;
    int        takeover_on;
} S;

static void takeover_tick(uv_timer_t *t);

void send_init(void) {
    memset(&S, 0, sizeof S);
    pl_limiter_init(&C.user_sends, C.cfg->rate_user_msgs, C.cfg->rate_user_burst);
    pl_limiter_init(&C.conv_sends, C.cfg->rate_conv_msgs, C.cfg->rate_conv_burst);
    uv_timer_init(C.loop, &S.takeover);
    uv_unref((uv_handle_t *)&S.takeover);
}

void send_free(void) {
    pl_limiter_release(&C.user_sends);
    pl_limiter_release(&C.conv_sends);
    uv_close((uv_handle_t *)&S.takeover, NULL);
}

/* ---- rate limits ------------------------------------------------------------ */
/* Sends and message actions (edit, delete, react, pin: each appends an
 * event) take from the same buckets, per user, per conversation and, in a
 * channel, per workspace (wsrate.c says which, maybe after a read). Only
 * a member takes from a conversation's and its workspace's buckets:
 * anyone else's request fails in the store anyway, and must not starve
 * the members (the second audit). conv 0: the user's bucket alone. */

int chat_admit(int64_t user, int64_t conv, int64_t *retry_ms, const char **scope,
               pl_chat_admit_cb cb, void *arg) {
    if (!conv) return chat_admit_ws(user, 0, 0, retry_ms, scope, cb, arg);
    int64_t ws = wsrate_of(conv);             /* 0 none, -1 not known here yet */
    if (ws < 0 && !C.stopping) {
        wsrate_lookup(user, conv, cb, arg);   /* then chat_admit_ws, cb later */
        return 2;
    }
    return chat_admit_ws(user, conv, ws > 0 ? ws : 0, retry_ms, scope, cb, arg);
}

int chat_admit_ws(int64_t user, int64_t conv, int64_t ws, int64_t *retry_ms, const char **scope,
                  pl_chat_admit_cb cb, void *arg) {
    if (!C.cfg->rate_user_msgs && !C.cfg->rate_conv_msgs && !ws) return 0;
    if (C.bus->shared) {                      /* one bucket for all nodes */
        pl_bus_rate_take(C.bus, user, conv, ws, cb, arg);
        return 2;
    }
    int64_t now = pl_mono_ms();
    if (now - C.swept_at >= 5000) {
        C.swept_at = now;
        pl_limiter_sweep(&C.user_sends, now);
        pl_limiter_sweep(&C.conv_sends, now);
    }
    int64_t w = pl_limiter_take(&C.user_sends, user, 1, now);
    if (w) {
        *retry_ms = w;
        *scope = "user";
        return 1;
    }
    w = conv ? pl_limiter_take(&C.conv_sends, conv, 1, now) : 0;
    if (w) {
        *retry_ms = w;
        *scope = "conversation";
        return 1;
    }
    if (ws && (w = wsrate_take(ws, now)) != 0) {
        *retry_ms = w;
        *scope = "workspace";
        return 1;
    }
    return 0;
}

static void count_limited(const char *scope) {
    if (!scope) return;
    pl_count(scope[0] == 'u' ? &pl_m_rate_limited_user
             : scope[0] == 'w' ? &pl_m_rate_limited_ws
             : scope[0] == 'o' ? &pl_m_rate_limited_overload : &pl_m_rate_limited_conv, 1);
}

typedef struct admit_wait {
    pl_chat_admit_cb cb;
    void            *arg;
} admit_wait;

static void admit_later(void *arg, int64_t wait_ms, const char *scope) {
    admit_wait *w = arg;
    count_limited(wait_ms ? scope : NULL);
    w->cb(w->arg, wait_ms, wait_ms ? scope : NULL);
    free(w);
}

typedef struct admit_now {
    uv_timer_t       t;
    pl_chat_admit_cb cb;
    void            *arg;
    int64_t          retry;
    const char      *scope;
} admit_now;

static void admit_now_closed(uv_handle_t *h) { free(h->data); }

static void admit_now_fire(uv_timer_t *t) {
    admit_now *a = t->data;
    a->cb(a->arg, a->retry, a->scope);
    uv_close((uv_handle_t *)&a->t, admit_now_closed);
}

int pl_chat_admit_send(int64_t user, int64_t conv, pl_chat_admit_cb cb, void *arg) {
    if (C.stopping) return PL_STORE_EUNAVAIL;
    int64_t retry = 0;
    const char *scope = NULL;
    admit_wait *w = pl_malloc(sizeof *w);
    w->cb = cb;
    w->arg = arg;
    if (C.cfg->rate_conv_msgs || C.cfg->rate_workspace_msgs) {   /* a member? one read says */
        wsrate_member_lookup(user, conv, admit_later, w);
        return 0;
    }
    int r = chat_admit(user, 0, &retry, &scope, admit_later, w);
    if (r == 2) return 0;
    free(w);
    count_limited(r ? scope : NULL);
    admit_now *a = pl_calloc(1, sizeof *a);   /* callbacks never run inline */
    a->cb = cb;
    a->arg = arg;
    a->retry = r ? retry : 0;
    a->scope = r ? scope : NULL;
    uv_timer_init(C.loop, &a->t);
    a->t.data = a;
    uv_timer_start(&a->t, admit_now_fire, 0, 0);
    return 0;
}

/* ---- sends over the WebSocket ----------------------------------------------- */

typedef struct send_op {
    pl_job   job;                 /* first: the store hands back &job        */
    pl_conn *conn;                /* a reference                             */
    json_t  *root;                /* keeps the message's strings alive,      */
    char    *own;                 /* or holds them (proto.h pl_msg.own)      */
    json_t  *req;                 /* a reference                             */
    int64_t  t0;                  /* mono us when the send arrived           */
    char    *ciphertext;          /* the payloads of a ciphertext send (e2ee.h) */
    char    *attach_json;         /* the attachments (attach.h), or NULL     */
    char    *masked;              /* the text as the content filter left it  */
    int      flag_line;           /* a flag rule matched: report after the commit */
    int      member;              /* the session follows the conversation    */
    int      flowed;              /* counted by flow_admit: flow_settled at the end */
} send_op;

void pl_chat_sent(const pl_job *j, int64_t t0_us) {
    if (j->result != PL_STORE_OK) return;
    if (j->dup) {
        pl_count(&pl_m_sends_dup, 1);
        return;
    }
    pl_count(&pl_m_sends, 1);
    if (t0_us) pl_observe(&pl_m_delivery_seconds, (double)(pl_mono_us() - t0_us) / 1e6);
}

static void send_free_op(send_op *op) {
    if (op->flowed) flow_settled(op->conn);
    pl_job_release(&op->job);
    json_decref(op->root);
    free(op->own);
    json_decref(op->req);
    CO.unref(op->conn);
    free(op->ciphertext);
    free(op->masked);
    free(op->attach_json);
    free(op);
}

static void send_done(pl_job *j) {
    send_op *op = (send_op *)j;
    pl_conn *c = op->conn;
    if (j->result == PL_STORE_OK) {
        pl_chat_sent(j, op->t0);              /* the event was published just before */
        if (op->flag_line && !j->dup) pl_chat_filter_report(j->user, j->conv, j->event.seq, op->flag_line);
        if (pl_conn_alive(c)) {
            pl_sbuf s;
            pl_sbuf_init(&s);
            pl_proto_sent(&s, &j->event, j->dup, op->req, 1);
            flow_ack(c, op->job.conv, s.p, s.len);   /* now, or when the fan-out catches up */
            pl_sbuf_release(&s);
        }
    } else if (pl_conn_alive(c)) {
        int st;
        const char *msg;
        const char *code = pl_chat_job_error(j, &st, &msg);
        chat_send_error(c, op->req, code, msg);
    }
    send_free_op(op);
}

void chat_rate_limited(pl_conn *c, json_t *req, int64_t retry, const char *scope) {
    count_limited(scope);
    if (pl_conn_alive(c)) {
        pl_sbuf b;
        pl_sbuf_init(&b);
        pl_sbuf_adds(&b, "{\"type\":\"error\"");
        pl_proto_add_req(&b, req);
        pl_sbuf_printf(&b, ",\"code\":\"rate_limited\",\"message\":\"too many messages (%s)\",\"retry_after\":%.3f}",
                       scope, (double)retry / 1000.0);
        chat_send_text(c, b.p, b.len, 1);
        pl_sbuf_release(&b);
    }
}

/* A send the filter blocked, after PL_READ_SEND_CHECK: a retry of a
 * stored send gets its original ack (idempotency first), a stranger the
 * store's not_found; only then `filtered`. */
static void send_checked(pl_job *j) {
    send_op *op = (send_op *)j;
    if (!pl_conn_alive(op->conn)) {
    } else if (j->result == PL_STORE_OK && j->dup) {
        pl_sbuf s;
        pl_sbuf_init(&s);
        pl_proto_sent(&s, &j->event, 1, op->req, 1);
        chat_send_text(op->conn, s.p, s.len, 1);
        pl_sbuf_release(&s);
    } else if (j->result == PL_STORE_ENOTFOUND) {
        chat_send_error(op->conn, op->req, "not_found", "no such conversation");
    } else {                                  /* a failed read too: nothing was stored */
        chat_send_error(op->conn, op->req, PL_CHAT_FILTERED, PL_CHAT_FILTERED_MSG);
    }
    send_free_op(op);
}

/* Admitted: the content filter (content.c; after the rate limits, so
 * probing it costs tokens), then the store. */
static void send_submit(send_op *op) {
    if (pl_chat_filter(&op->job, &op->masked, &op->flag_line)) {
        op->job.op = PL_READ_SEND_CHECK;      /* what the store would say first */
        op->job.done = send_checked;
    }
    pl_store_submit(C.store, &op->job);
}

static void send_admitted(void *arg, int64_t retry, const char *scope) {
    send_op *op = arg;
    if (retry) {
        chat_rate_limited(op->conn, op->req, retry, scope);
        send_free_op(op);
    } else if (C.stopping) {
        if (pl_conn_alive(op->conn)) chat_send_error(op->conn, op->req, "unavailable", "shutting down");
        send_free_op(op);
    } else {
        send_submit(op);
    }
}

static void send_admit(send_op *op);

/* The attachments are the sender's uploads (attach.h): now admit the send. */
static void send_attached(void *arg, int rc, char *json) {
    send_op *op = arg;
    if (rc) {
        if (pl_conn_alive(op->conn))
            chat_send_error(op->conn, op->req, rc == PL_STORE_EUNAVAIL ? "unavailable" : "not_found",
                            rc == PL_STORE_EUNAVAIL ? "the store is unavailable; nothing was changed, try again"
                                                    : "an attachment is not one of your uploads");
        send_free_op(op);
        return;
    }
    op->job.attach_json = op->attach_json = json;
    if (C.stopping) {
        if (pl_conn_alive(op->conn)) chat_send_error(op->conn, op->req, "unavailable", "shutting down");
        send_free_op(op);
        return;
    }
    send_admit(op);
}

void do_send(session *s, pl_msg *m) {
    char *ct = NULL;
    if (!m->body_len && !m->nattach) {        /* kind "ciphertext" (proto.c, e2ee.h) */
        const char *code, *why;
        ct = pl_e2ee_payloads(json_object_get(m->root, "payloads"), (size_t)C.cfg->max_body, &code, &why);
        if (!ct) {
            chat_send_error(s->conn, m->req, code, why);
            return;
        }
    }
    send_op *op = pl_calloc(1, sizeof *op);
    op->job.ciphertext = op->ciphertext = ct;
    op->t0 = pl_mono_us();
    op->job.op = PL_JOB_MESSAGE_SEND;
    op->job.user = s->user;
    op->job.conv = m->conv;
    op->job.client_msg_id = m->client_msg_id;
    op->job.body = m->body;
    op->job.body_len = m->body_len;
    op->job.seq = m->reply_to;                /* 0: not a reply */
    op->job.done = send_done;
    op->conn = s->conn;
    sub *x = sub_find(s, m->conv);            /* a member takes from the conversation's buckets */
    op->member = x && !x->end_seq;
    CO.ref(s->conn);
    op->root = json_incref(m->root);
    op->own = m->own;                         /* taken over */
    m->own = NULL;
    op->req = json_incref(m->req);
    if (m->nattach) {                         /* media: resolve them first */
        pl_attach_resolve(C.store, s->user, m->attach, m->nattach, send_attached, op);
        return;
    }
    send_admit(op);
}

static void send_admit(send_op *op) {
    int64_t retry = flow_admit(op->conn, op->job.conv);   /* too many acks owed (flow.h) */
    const char *scope = NULL;
    if (retry) {
        chat_rate_limited(op->conn, op->req, retry, "overloaded");
        send_free_op(op);
        return;
    }
    op->flowed = 1;
    switch (chat_admit(op->job.user, op->member ? op->job.conv : 0, &retry, &scope, send_admitted, op)) {
    case 0:
        send_submit(op);
        break;
    case 1:
        chat_rate_limited(op->conn, op->req, retry, scope);
        send_free_op(op);
        break;
    default:                                  /* the bus answers later */
        break;
    }
}

/* ---- publishing what committed (bus.h guarantee 4) ---------------------------- */

static void publish_created_joins(const pl_event *ev) {
    json_t *d = ev->data ? json_loads(ev->data, 0, NULL) : NULL;
    size_t i;
    json_t *v;
    json_array_foreach(json_object_get(d, "members"), i, v)
        pl_bus_publish_join(C.bus, json_integer_value(v), ev->conv, ev->seq);
    json_decref(d);
}

void pl_chat_committed(void *arg, pl_job *j) {
    if (!C.bus) return;
    pl_bus_publish_event(C.bus, &j->event, j->out_batch);
    if (!C.bus->shared) return;               /* embedded: the event itself joins them */
    if (j->event.kind == PL_EV_CREATED) publish_created_joins(&j->event);
    else if (j->event.kind == PL_EV_MEMBER_ADDED)
        pl_bus_publish_join(C.bus, j->event.subject, j->event.conv, j->event.seq);
}

/* ---- the outbox (cluster mode) -------------------------------------------------- */

static void ack_submit(void);

static void ack_done(pl_job *j) {
    S.ack_inflight = 0;
    if (j->result == PL_STORE_OK) S.ack_sent = j->id > S.ack_sent ? j->id : S.ack_sent;
    pl_job_release(j);
    free(j);
    if (S.acked > S.ack_sent && !C.stopping) ack_submit();
}

static void ack_submit(void) {
    if (S.ack_inflight || C.stopping) return;
    pl_job *j = pl_calloc(1, sizeof *j);
    j->op = PL_JOB_OUTBOX_ACK;
    j->id = S.acked;
    j->done = ack_done;
    S.ack_inflight = 1;
    pl_store_submit(C.store, j);
}

void chat_outbox_acked(void *ud, int64_t batch) {
    if (batch <= S.acked) return;
    S.acked = batch;
    ack_submit();
}

static void takeover_done(pl_job *j) {
    if (j->result == PL_STORE_OK && !C.stopping && C.bus)
        for (size_t i = 0; i < j->nout; i++) {
            pl_log(PL_LOG_INFO, 0, "announcing events of a node that died before publishing them",
                   "\"conversation\":%lld,\"seq\":%lld", (long long)j->out_ids[i], (long long)j->heads[i]);
            pl_bus_publish_head(C.bus, j->out_ids[i], j->heads[i]);
        }
    pl_job_release(j);
    free(j);
}

static void takeover_tick(uv_timer_t *t) {
    if (C.stopping) return;
    pl_job *j = pl_calloc(1, sizeof *j);
    j->op = PL_JOB_OUTBOX_TAKEOVER;
    j->done = takeover_done;
    pl_store_submit(C.store, j);
}

void chat_outbox_start(void) {
    if (S.takeover_on) return;
    S.takeover_on = 1;
    uv_timer_start(&S.takeover, takeover_tick, 100, TAKEOVER_MS);
}

void chat_outbox_stop(void) { uv_timer_stop(&S.takeover); }
