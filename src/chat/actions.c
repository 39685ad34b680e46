/* actions.c — message actions over the WebSocket: edit, delete, react, pin
 * (each appends an event), the pinned-message list, and notification levels
 * (docs/protocol.md "Message actions" and "Notification preferences").
 *
 * Owns: turning those client messages into store jobs, their `ok` and
 * `pins` replies, and how a failed send or action is reported (the store's
 * result and job->why become a protocol error; REST shares it through
 * pl_chat_job_error and pl_chat_pins). Edits, deletes, reactions and pins
 * are rate-limited like sends (chat_admit: per user, per conversation, per
 * workspace in a channel);
 * `pins` and `notify` write no event and are not.
 * Does not own: publishing or delivering the events an action appends: the
 * store's commit hook publishes them (send.c) and streams deliver them like
 * any event (deliver.c).
 */
#include <stdlib.h>
#include <string.h>

#include "../core/alloc.h"
#include "chat_int.h"

/* ---- errors ------------------------------------------------------------------ */

static const char *plain_reason(const pl_job *j) {
    int send = j->op == PL_JOB_MESSAGE_SEND;
    switch (j->result) {
    case PL_STORE_ENOTFOUND:
        return send && !j->seq ? "no such conversation"
             : j->op == PL_JOB_NOTIFY_SET || j->op == PL_READ_PINS ? "no such conversation"
             : "no such conversation or message";
    case PL_STORE_EINVAL:   return send ? "not a message" : "not possible for this message";
    case PL_STORE_EFORBID:  return "not allowed";
    case PL_STORE_EGONE:    return "the message was deleted";
    case PL_STORE_EUNAVAIL: return send ? "message not stored" : "unavailable, try again";
    default:                return "internal error";
    }
}

const char *pl_chat_job_error(const pl_job *j, int *status, const char **msg) {
    const char *code = pl_chat_error_code(j->result, status);
    int why_ok = j->why && (j->result == PL_STORE_EINVAL || j->result == PL_STORE_EFORBID ||
                            j->result == PL_STORE_EGONE || j->result == PL_STORE_ENOTFOUND);
    *msg = why_ok ? j->why : plain_reason(j);
    return code;
}

/* ---- edit, delete, react, pin, notify ------------------------------------------- */

typedef struct action_op {
    pl_job   job;                 /* first: the store hands back &job        */
    pl_conn *conn;                /* a reference                             */
    json_t  *root;                /* keeps the message's strings alive       */
    json_t  *req;
    char    *masked;              /* an edit's text as the content filter left it */
    int      flag_line;           /* a flag rule matched the edit: report it */
} action_op;

static void action_free(action_op *op) {
    pl_job_release(&op->job);
    free(op->masked);
    json_decref(op->root);
    CO.unref(op->conn);
    free(op);
}

static void action_done(pl_job *j) {
    action_op *op = (action_op *)j;
    if (!pl_conn_alive(op->conn)) {
    } else if (j->result) {
        int st;
        const char *msg;
        const char *code = pl_chat_job_error(j, &st, &msg);
        chat_send_error(op->conn, op->req, code, msg);
    } else {
        if (op->flag_line && j->has_event) pl_chat_filter_report(j->user, j->conv, j->seq, op->flag_line);
        /* notify writes no event: a level set is always a change */
        int changed = j->op == PL_JOB_NOTIFY_SET || j->has_event;
        pl_sbuf b;
        pl_sbuf_init(&b);
        pl_proto_ok(&b, op->req, j->conv, j->has_event ? j->event.seq : 0, changed, 1);
        chat_send_text(op->conn, b.p, b.len, 1);
        pl_sbuf_release(&b);
    }
    action_free(op);
}

/* Admitted: an edit's text through the content filter (content.c), then
 * the store. */
static void action_submit(action_op *op) {
    if (op->job.op == PL_JOB_MESSAGE_EDIT && pl_chat_filter(&op->job, &op->masked, &op->flag_line)) {
        if (pl_conn_alive(op->conn)) chat_send_error(op->conn, op->req, PL_CHAT_FILTERED, PL_CHAT_FILTERED_MSG);
        action_free(op);
        return;
    }
    pl_store_submit(C.store, &op->job);
}

static void action_admitted(void *arg, int64_t retry, const char *scope) {
    action_op *op = arg;
    if (retry) {
        chat_rate_limited(op->conn, op->req, retry, scope);
        action_free(op);
    } else if (C.stopping) {
        if (pl_conn_alive(op->conn)) chat_send_error(op->conn, op->req, "unavailable", "shutting down");
        action_free(op);
    } else {
        action_submit(op);
    }
}

/* The store job of a decoded action (strings borrowed from m->root). */
static void action_job(pl_job *j, const pl_msg *m, int64_t user) {
    j->user = user;
    j->conv = m->conv;
    j->seq = m->seq;
    switch (m->type) {
    case PL_MSG_EDIT:
        j->op = PL_JOB_MESSAGE_EDIT;
        j->body = m->body;
        j->body_len = m->body_len;
        break;
    case PL_MSG_DELETE:
        j->op = PL_JOB_MESSAGE_DELETE;
        break;
    case PL_MSG_REACT:
        j->op = PL_JOB_REACTION;
        j->emoji = m->emoji;
        j->flags = m->remove ? PL_JOB_REMOVE : 0;
        break;
    case PL_MSG_PIN:
        j->op = PL_JOB_PIN;
        j->flags = m->remove ? PL_JOB_REMOVE : 0;
        break;
    default:                      /* PL_MSG_NOTIFY */
        j->op = PL_JOB_NOTIFY_SET;
        j->level = m->level;
        j->seq = 0;
        break;
    }
}

void do_action(session *s, pl_msg *m) {
    if (m->type != PL_MSG_NOTIFY && m->seq == 0) {    /* no message has seq 0 */
        chat_send_error(s->conn, m->req, "not_found", "no such conversation or message");
        return;
    }
    action_op *op = pl_calloc(1, sizeof *op);
    action_job(&op->job, m, s->user);
    op->job.done = action_done;
    op->conn = s->conn;
    CO.ref(s->conn);
    op->root = json_incref(m->root);
    op->req = m->req;
    if (m->type == PL_MSG_NOTIFY) {
        pl_store_submit(C.store, &op->job);
        return;
    }
    int64_t retry = 0;
    const char *scope = NULL;
    sub *x = sub_find(s, m->conv);            /* a member takes from the conversation's buckets */
    switch (chat_admit(s->user, x && !x->end_seq ? m->conv : 0, &retry, &scope, action_admitted, op)) {
    case 0:
        action_submit(op);
        break;
    case 1:
        chat_rate_limited(op->conn, op->req, retry, scope);
        action_free(op);
        break;
    default:                                  /* the bus answers later */
        break;
    }
}

/* ---- pins -------------------------------------------------------------------------- */

typedef struct pins_op {
    pl_job          job;
    pl_chat_json_cb cb;
    void           *arg;
    int64_t         offset;
} pins_op;

static void pins_done(pl_job *j) {
    pins_op *op = (pins_op *)j;
    if (j->result) {
        op->cb(op->arg, j->result, NULL, 0);
    } else {
        pl_sbuf out;
        pl_sbuf_init(&out);
        pl_sbuf_printf(&out, "\"conversation\":%lld,\"events\":[", (long long)j->conv);
        size_t budget = chat_reply_budget(), i = op->offset < (int64_t)j->nevents ? (size_t)op->offset : j->nevents;
        size_t start = out.len;
        for (size_t first = i; i < j->nevents; i++) {   /* bounded like a history page */
            size_t mark = out.len;
            pl_sbuf_adds(&out, i > first ? ",{" : "{");
            pl_proto_event_fields(&out, &j->events[i]);
            pl_sbuf_addc(&out, '}');
            if (i > first && out.len - start > budget) {
                out.len = mark;
                break;
            }
        }
        pl_sbuf_printf(&out, "],\"has_more\":%s", i < j->nevents ? "true" : "false");
        op->cb(op->arg, PL_STORE_OK, out.p, out.len);
        pl_sbuf_release(&out);
    }
    pl_job_release(j);
    free(op);
}

int pl_chat_pins(int64_t conv, int64_t user, int64_t offset, pl_chat_json_cb cb, void *arg) {
    if (C.stopping) return PL_STORE_EUNAVAIL;
    pins_op *op = pl_calloc(1, sizeof *op);
    op->cb = cb;
    op->arg = arg;
    op->offset = offset;
    op->job.op = PL_READ_PINS;
    op->job.conv = conv;
    op->job.user = user;
    op->job.done = pins_done;
    pl_store_submit(C.store, &op->job);
    return 0;
}

void do_pins(session *s, pl_msg *m) {
    ws_reply *r = ws_reply_new(s, m, "pins");
    int rc = pl_chat_pins(m->conv, s->user, m->after, ws_reply_json, r);
    if (rc) ws_reply_json(r, rc, NULL, 0);
}
