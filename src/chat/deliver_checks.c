/* deliver_checks.c — batched checks against the store, once per loop
 * turn: after a bus subscription or a bus loss, the heads of the streams
 * (verify) and the memberships of the users (reconcile) are read again;
 * and long-poll watchers hear about changed streams (changed).
 *
 * Owns: the three batches (C.verify, C.reconcile, C.changed), the flusher
 * that sends them, and what their reads' answers do.
 * Not here: when a check is asked for (deliver.c's streams and bus
 * handlers).
 */
#include <stdlib.h>

#include "../core/alloc.h"
#include "chat_int.h"
#include "deliver_int.h"

static void flush_checks(uv_check_t *h);

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

void verify_add(int64_t conv) {
    push_id(&C.verify, &C.nverify, &C.capverify, conv);
    arm_flusher();
}

/* Long-poll watchers hear about changes once per loop turn, from the
 * flusher: never from inside a stream's processing (they may release it). */
void changed_add(int64_t conv) {
    if (!C.hooks.conv_changed) return;
    push_id(&C.changed, &C.nchanged, &C.capchanged, conv);
    arm_flusher();
}

void reconcile_add(int64_t user) {
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

/* One read of the store for every id in the list (*ids, *n, *cap), which it
 * takes over: the list starts again empty. */
static void submit_check(int64_t **ids, size_t *n, size_t *cap, pl_job_op read, void (*done)(pl_job *)) {
    if (!*n) return;
    check_op *op = pl_calloc(1, sizeof *op);
    op->ids = *ids;
    op->job.op = read;
    op->job.ids = op->ids;
    op->job.nids = *n;
    op->job.done = done;
    *ids = NULL;
    *n = *cap = 0;
    pl_store_submit(C.store, &op->job);
}

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
    submit_check(&C.verify, &C.nverify, &C.capverify, PL_READ_CONV_HEADS, heads_done);
    submit_check(&C.reconcile, &C.nreconcile, &C.capreconcile, PL_READ_MEMBERSHIPS, reconcile_done);
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
