/* store_sqlite_receipts.c — the SQLite writer's RECEIPT job: a member's
 * delivered and read cursors and its unread count (store.h invariant 5),
 * a job of the batch (store_sqlite_write.c), without a savepoint.
 *
 * Owns: the cursors' SQL and the unread arithmetic (msg_count, msg_no,
 * own_unread). Not the counters it reads: msg_count is the conversation
 * map's, and own_unread's deltas the open batch's (store_sqlite_write.c,
 * flushed before COMMIT).
 */
#include "sqlite_int.h"

/* Looks up kind, sender and msg_no of the event at seq (0 < seq). Returns
 * 1 found, 0 not, W_FATAL. */
static int w_event_at(sq_store *s, int64_t conv, int64_t seq, int *kind, int64_t *sender,
                      int64_t *msg_no) {
    sqlite3_stmt *st = s->w[W_EVENT_AT];
    sqlite3_bind_int64(st, 1, conv);
    sqlite3_bind_int64(st, 2, seq);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *kind = sqlite3_column_int(st, 0);
        *sender = sqlite3_column_int64(st, 1);
        *msg_no = sqlite3_column_int64(st, 2);
    }
    sqlite3_reset(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) return w_fatal(s, rc, sq_w_sql[W_EVENT_AT]);
    return rc == SQLITE_ROW;
}

/* Receipt cursors: clamp to the log, merge with max, write only if moved;
 * the unread count from the counters (store.h invariant 5). own_unread
 * changes go through the own map like a send's (flushed before COMMIT). */
int sq_job_receipt(sq_store *s, pl_job *j, int64_t now) {
    int err = PL_STORE_OK;
    pl_conv_state *e = sq_w_conv_state(s, j->conv, &err);
    if (!e) return err;
    sqlite3_stmt *st = s->w[W_MEMBER_CURSORS];
    sqlite3_bind_int64(st, 1, j->conv);
    sqlite3_bind_int64(st, 2, j->user);
    int rc = sqlite3_step(st);
    int64_t cd = 0, cr = 0, joined = 1, own = 0;
    if (rc == SQLITE_ROW) {
        cd = sqlite3_column_int64(st, 0);
        cr = sqlite3_column_int64(st, 1);
        joined = sqlite3_column_int64(st, 2);
        own = sqlite3_column_int64(st, 3);
    }
    sqlite3_reset(st);
    if (rc == SQLITE_DONE) return PL_STORE_ENOTFOUND;
    if (rc != SQLITE_ROW) return w_fatal(s, rc, sq_w_sql[W_MEMBER_CURSORS]);
    pl_own_ent *pending = pl_own_find(&s->own, j->conv, j->user);      /* this batch, not flushed */
    if (pending) own += pending->delta;
    int64_t d = j->delivered < e->last_seq ? j->delivered : e->last_seq;
    int64_t r = j->read < e->last_seq ? j->read : e->last_seq;
    /* a cursor below where the member joined would show it reading what it
     * cannot see (audit E3; one below, joined - 1, too: audit M3): it moves
     * nothing */
    if (r < joined) r = 0;
    if (d < joined) d = 0;
    if (r > d) d = r;                               /* read implies delivered */
    int64_t nd = d > cd ? d : cd, nr = r > cr ? r : cr;
    j->created = nd != cd || nr != cr;
    int kind = 0;
    int64_t sender = 0, msg_no = 0;
    if (nr != cr) {                    /* own messages the cursor passed are read */
        int64_t passed = 0;
        st = s->w[W_OWN_IN_RANGE];
        sqlite3_bind_int64(st, 1, j->conv);
        /* from where own_unread starts: a re-joined member's row is new
         * (read_seq 0), and its messages of an earlier membership, before
         * joined_seq, were never counted in it (audit F: they were taken
         * out, own_unread went below zero and unread stuck too high) */
        sqlite3_bind_int64(st, 2, cr > joined - 1 ? cr : joined - 1);
        sqlite3_bind_int64(st, 3, nr);
        sqlite3_bind_int64(st, 4, j->user);
        if ((rc = w_lookup(s, W_OWN_IN_RANGE, &passed)) < 0) return rc;
        if (passed) {
            own -= passed;
            pl_own_add(&s->own, j->conv, j->user, -passed);
        }
        if ((rc = w_event_at(s, j->conv, nr, &kind, &sender, &msg_no)) < 0) return rc;
        if (rc && kind == PL_EV_MESSAGE && sender != j->user) j->out_peer = sender;
    }
    if (j->created) {
        st = s->w[W_MEMBER_SET_CURSORS];
        sqlite3_bind_int64(st, 1, nd);
        sqlite3_bind_int64(st, 2, nr);
        sqlite3_bind_int64(st, 3, j->conv);
        sqlite3_bind_int64(st, 4, j->user);
        if (w_exec(s, W_MEMBER_SET_CURSORS) != PL_STORE_OK) return W_FATAL;
    }
    /* unread = msg_count - msg_no(max(read, joined - 1)) - own_unread */
    int64_t base = nr > joined - 1 ? nr : joined - 1;
    msg_no = 0;
    if (base > 0 && (rc = w_event_at(s, j->conv, base, &kind, &sender, &msg_no)) < 0) return rc;
    j->out_delivered = nd;
    j->out_read = nr;
    j->out_unread = e->msg_count - msg_no - own;
    if (j->out_unread < 0) j->out_unread = 0;
    j->out_members = e->member_count;
    if (j->created) {                  /* announced: with its unread mentions */
        st = s->w[W_MENTIONS_ABOVE];
        sqlite3_bind_int64(st, 1, j->conv);
        sqlite3_bind_int64(st, 2, j->user);
        sqlite3_bind_int64(st, 3, base);
        if ((rc = w_lookup(s, W_MENTIONS_ABOVE, &j->out_unread_mentions)) < 0) return rc;
    }
    return PL_STORE_OK;
}
