/* receipts.c — delivered/read receipts (M6): moving a user's cursors,
 * announcing moves to the sessions that should know, and the cursor and
 * aggregate query.
 *
 * Owns: the receipt messages and frames. Cursors live in the store (per
 * user, per conversation); a session remembers the cursors the store last
 * reported (never the client's unclamped value) so it can skip receipts
 * that cannot move anything.
 *
 * Who hears about a move: every live session of the reader's user (with its
 * new unread count: read on one device, badge cleared on the others), and
 * in conversations of at most --receipt-fanout-max MEMBERS every member's
 * sessions; in larger ones only the author of the message the read cursor
 * moved onto (its "read" tick), the others fetch aggregates. The decision
 * is made on every node from the same numbers, so it does not depend on
 * where sessions live.
 *
 * Also owns (cluster mode) the cursors last announced per user and
 * conversation, which keep announcements from going backwards (below).
 */
#include <stdlib.h>
#include <string.h>

#include "../core/alloc.h"
#include "../core/clock.h"
#include "../core/map.h"
#include "../ws/ws.h"
#include "../ws/wsconn.h"
#include "chat_int.h"

/* ---- moving cursors --------------------------------------------------------- */

void pl_chat_receipt_done(const pl_job *j) {
    if (j->result || !j->created || !C.bus) return;
    pl_bus_receipt r = {j->conv, j->user, j->out_delivered, j->out_read, j->out_unread,
                        j->out_members, j->out_peer, j->out_unread_mentions};
    pl_bus_publish_receipt(C.bus, &r);
}

typedef struct receipt_op {
    pl_job   job;
    pl_conn *conn;                /* a reference                             */
    json_t  *root;
    json_t  *req;
} receipt_op;

/* The store's cursors for this session's subscription. */
static void remember(pl_conn *c, int64_t conv, int64_t delivered, int64_t read) {
    session *s = c->session;
    sub *x = s && s->state == S_AUTHED ? sub_find(s, conv) : NULL;
    if (!x) return;
    if (delivered > x->acked_delivered) x->acked_delivered = delivered;
    if (read > x->acked_read) x->acked_read = read;
}

/* A receipt's error names the receipt (audit G4: without a req, which a
 * receipt needs none of, a client could not tell which to send again). */
static void receipt_error(pl_conn *c, json_t *req, const char *code, const char *msg, const char *type,
                          int64_t conv, int64_t seq) {
    char fields[96];
    snprintf(fields, sizeof fields, ",\"receipt\":\"%s\",\"conversation\":%lld,\"seq\":%lld", type,
             (long long)conv, (long long)seq);
    chat_send_error_with(c, req, code, msg, fields);
}

static void receipt_done(pl_job *j) {
    receipt_op *op = (receipt_op *)j;
    if (j->result) {
        if (pl_conn_alive(op->conn)) {
            int st, read = j->read != 0;
            receipt_error(op->conn, op->req, pl_chat_error_code(j->result, &st),
                          j->result == PL_STORE_ENOTFOUND ? "no such conversation" : "receipt not stored",
                          read ? "read" : "delivered", j->conv, read ? j->read : j->delivered);
        }
    } else {
        remember(op->conn, j->conv, j->out_delivered, j->out_read);
        pl_chat_receipt_done(j);
    }
    json_decref(op->root);
    CO.unref(op->conn);
    pl_job_release(j);
    free(op);
}

/* Without a subscription the store decides: in cluster mode a membership
 * made through another node reaches this session with its event a moment
 * after the client had its answer (audit N1: a `read` sent then was
 * `not_found`); a non-member gets `not_found` from the store. */
void do_receipt(session *s, pl_msg *m) {
    sub *x = sub_find(s, m->conv);
    int read = m->type == PL_MSG_READ;
    /* the store already has as much: nothing can move */
    if (x && (read ? m->seq <= x->acked_read : m->seq <= x->acked_delivered)) return;
    receipt_op *op = pl_calloc(1, sizeof *op);
    op->job.op = PL_JOB_RECEIPT;
    op->job.conv = m->conv;
    op->job.user = s->user;
    op->job.delivered = m->seq;
    op->job.read = read ? m->seq : 0;
    op->job.done = receipt_done;
    op->conn = s->conn;
    CO.ref(s->conn);
    op->root = json_incref(m->root);
    op->req = m->req;
    pl_store_submit(C.store, &op->job);
}

/* ---- announced cursors (cluster mode) ----------------------------------------- */
/* Each node publishes the receipts it committed, so two moves of a user's
 * cursors committed on two nodes can reach a node in the other order
 * (audit P2: every session got read_seq 508 and then 506, the own ones
 * with the older unread count). What is published is the store's cursors
 * after the move, and those grow in commit order in both fields at once
 * (each move is a max under the conversation's lock), so a receipt whose
 * cursors are both at or below the last ones announced here for that user
 * and conversation is an older one arriving late: it moves nothing and is
 * dropped. Kept RC_KEEP_MS after the last announcement (far beyond any
 * reordering on the bus), swept by the ticker. Embedded mode's bus
 * delivers in commit order: nothing is kept. Ids at or above 2^31 (not met
 * in practice) are announced as they come, as before. */
#define RC_KEEP_MS  30000
#define RC_SWEEP_MS 10000

typedef struct rc_ent {
    int64_t delivered, read;
    int64_t at;                   /* mono ms of the last announcement        */
} rc_ent;

static pl_map  announced;         /* conv << 32 | user -> rc_ent             */
static int64_t rc_swept;

/* 1 when r is older than what was announced; else records it. */
static int receipt_stale(const pl_bus_receipt *r) {
    if (!C.bus || !C.bus->shared || r->conv <= 0 || r->user <= 0 || r->conv >= (1LL << 31) ||
        r->user >= (1LL << 31))
        return 0;
    int64_t key = r->conv << 32 | r->user;
    rc_ent *e = pl_map_get(&announced, key);
    if (e && r->delivered <= e->delivered && r->read <= e->read) return 1;
    if (!e) {
        e = pl_calloc(1, sizeof *e);
        pl_map_put(&announced, key, e);
    }
    if (r->delivered > e->delivered) e->delivered = r->delivered;
    if (r->read > e->read) e->read = r->read;
    e->at = pl_mono_ms();
    return 0;
}

void receipts_tick(int64_t now) {
    if (now - rc_swept < RC_SWEEP_MS || !announced.len) return;
    rc_swept = now;
    int64_t *old = NULL;
    size_t n = 0, cap = 0;
    for (size_t i = 0; i < announced.cap; i++) {
        rc_ent *e = announced.slots[i].val;
        if (!announced.slots[i].key || now - e->at < RC_KEEP_MS) continue;
        if (n == cap) old = pl_realloc(old, (cap = cap ? 2 * cap : 64) * sizeof *old);
        old[n++] = announced.slots[i].key;
    }
    for (size_t i = 0; i < n; i++) free(pl_map_del(&announced, old[i]));  /* deleting moves slots */
    free(old);
}

void receipts_free(void) {
    for (size_t i = 0; i < announced.cap; i++)
        if (announced.slots[i].key) free(announced.slots[i].val);
    pl_map_release(&announced);
    rc_swept = 0;
}

/* A cursor moved somewhere (this node or another): tell the local sessions
 * that should know (the rules at the top of this file). */
void receipts_on_bus(void *ud, const pl_bus_receipt *r) {
    chat_conv *cv = conv_find(r->conv);
    if (!cv || receipt_stale(r)) return;
    char other[192], own[256];
    int on = snprintf(other, sizeof other,
                      "{\"type\":\"receipt\",\"conversation\":%lld,\"user\":%lld,\"delivered_seq\":%lld,\"read_seq\":%lld}",
                      (long long)r->conv, (long long)r->user, (long long)r->delivered, (long long)r->read);
    int wn = snprintf(own, sizeof own,
                      "{\"type\":\"receipt\",\"conversation\":%lld,\"user\":%lld,\"delivered_seq\":%lld,\"read_seq\":%lld,\"unread\":%lld",
                      (long long)r->conv, (long long)r->user, (long long)r->delivered, (long long)r->read,
                      (long long)r->unread);
    if (r->unread_mentions >= 0)        /* unknown from a node of an older version */
        wn += snprintf(own + wn, sizeof own - (size_t)wn, ",\"unread_mentions\":%lld", (long long)r->unread_mentions);
    own[wn++] = '}';
    int everyone = r->members <= C.cfg->receipt_fanout_max;
    pl_rbuf *fo = NULL, *fw = NULL;
    for (sub *x = cv->subs; x; x = x->next) {
        if (sub_removed(x)) continue;         /* no longer a member */
        if (x->sess->user == r->user) {
            if (r->delivered > x->acked_delivered) x->acked_delivered = r->delivered;
            if (r->read > x->acked_read) x->acked_read = r->read;
            if (!fw) fw = pl_ws_text_frame(own, (size_t)wn);
            chat_deliver_ephemeral(x->sess->conn, fw);
        } else if (everyone || (r->peer && x->sess->user == r->peer)) {
            if (!fo) fo = pl_ws_text_frame(other, (size_t)on);
            chat_deliver_ephemeral(x->sess->conn, fo);
        }
    }
    pl_rbuf_unref(&fo);
    pl_rbuf_unref(&fw);
}

/* ---- the query ---------------------------------------------------------------- */

typedef struct receipts_q {
    pl_job          job;
    pl_chat_json_cb cb;
    void           *arg;
} receipts_q;

/* Members other than the sender who could see the message (joined at or
 * before it) and whose cursor is at or above it. */
static void aggregate(pl_sbuf *out, const pl_conv *c, const pl_event *ev, int read) {
    size_t count = 0;
    pl_sbuf users;
    pl_sbuf_init(&users);
    for (size_t i = 0; i < c->nmembers; i++) {
        const pl_member *mb = &c->members[i];
        int64_t cur = read ? mb->read_seq : mb->delivered_seq;
        if (mb->user == ev->sender || mb->joined_seq > ev->seq || cur < ev->seq) continue;
        pl_sbuf_printf(&users, "%s%lld", count ? "," : "", (long long)mb->user);
        count++;
    }
    pl_sbuf_printf(out, "\"%s\":{\"count\":%zu,\"users\":[", read ? "read" : "delivered", count);
    if (users.len) pl_sbuf_add(out, users.p, users.len);
    pl_sbuf_adds(out, "]}");
    pl_sbuf_release(&users);
}

static void receipts_q_done(pl_job *j) {
    receipts_q *q = (receipts_q *)j;
    if (j->result) {
        q->cb(q->arg, j->result, NULL, 0);
    } else {
        const pl_conv *c = &j->conv_out;
        pl_sbuf out;
        pl_sbuf_init(&out);
        pl_sbuf_printf(&out, "\"conversation\":%lld,\"members\":[", (long long)j->conv);
        for (size_t i = 0; i < c->nmembers; i++)
            pl_sbuf_printf(&out, "%s{\"user\":%lld,\"delivered_seq\":%lld,\"read_seq\":%lld}", i ? "," : "",
                           (long long)c->members[i].user, (long long)c->members[i].delivered_seq,
                           (long long)c->members[i].read_seq);
        pl_sbuf_addc(&out, ']');
        if (j->seq > 0 && j->nevents == 1) {
            const pl_event *ev = &j->events[0];
            pl_sbuf_printf(&out, ",\"message\":{\"seq\":%lld,\"sender\":%lld,", (long long)ev->seq,
                           (long long)ev->sender);
            aggregate(&out, c, ev, 0);
            pl_sbuf_addc(&out, ',');
            aggregate(&out, c, ev, 1);
            pl_sbuf_addc(&out, '}');
        } else if (j->seq > 0) {
            pl_sbuf_adds(&out, ",\"message\":null");
        }
        q->cb(q->arg, PL_STORE_OK, out.p, out.len);
        pl_sbuf_release(&out);
    }
    pl_job_release(j);
    free(q);
}

int pl_chat_receipts(int64_t conv, int64_t user, int64_t seq, pl_chat_json_cb cb, void *arg) {
    if (C.stopping) return PL_STORE_EUNAVAIL;
    receipts_q *q = pl_calloc(1, sizeof *q);
    q->cb = cb;
    q->arg = arg;
    q->job.op = PL_READ_RECEIPTS;
    q->job.conv = conv;
    q->job.user = user;
    q->job.seq = seq;
    q->job.done = receipts_q_done;
    pl_store_submit(C.store, &q->job);
    return 0;
}

void do_receipts(session *s, pl_msg *m) {
    ws_reply *r = ws_reply_new(s, m, "receipts");
    int rc = pl_chat_receipts(m->conv, s->user, m->seq, ws_reply_json, r);
    if (rc) ws_reply_json(r, rc, NULL, 0);
}
