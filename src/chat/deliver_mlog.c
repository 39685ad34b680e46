/* deliver_mlog.c — the membership log (the note below): membership
 * changes this loop processed, for sessions whose authentication read may
 * predate them.
 *
 * Owns: the log (mlog, mlog_n) and applying it to a session once it is
 * authenticated (deliver_mlog_apply).
 * Not here: what a membership change does to the streams and
 * subscriptions (join_session, end_session: deliver.c, which also logs
 * each change it processes).
 */
#include "chat_int.h"
#include "deliver_int.h"

/* ---- the membership log ---------------------------------------------------- */

/* Membership changes this loop processed, the last MLOG_MAX of them. A
 * session reads its conversations (PL_READ_SESSION) while the loop goes on
 * processing events, and is not among its user's sessions until the read
 * is back: a change processed in between reached none of its
 * subscriptions. Its read notes mlog_n when it is submitted and, once
 * authenticated, applies what came since (deliver_mlog_apply): a removal
 * its read predates ends its stream at that removal; an addition its read
 * predates subscribes it from that member_added. Without this, the first
 * left a removed user receiving the conversation and the second lost a
 * conversation for good (embedded mode; cluster mode reconciled additions
 * only). Entries are cheap and changes rare: 1,024 is far more than one
 * authentication's read can see. */
#define MLOG_MAX 1024

typedef struct mlog_ent {
    int64_t user, conv, seq;
    int     add;                            /* 1 member_added/created, 0 removed/left */
} mlog_ent;

static mlog_ent mlog[MLOG_MAX];
static uint64_t mlog_n;                     /* entries ever logged */

void mlog_add(int64_t user, int64_t conv, int64_t seq, int add) {
    mlog[mlog_n % MLOG_MAX] = (mlog_ent){user, conv, seq, add};
    mlog_n++;
}

uint64_t deliver_mlog_mark(void) { return mlog_n; }

/* 1 if a change to user's membership of conv above seq was logged since mark. */
int deliver_mlog_changed(uint64_t mark, int64_t user, int64_t conv, int64_t seq) {
    if (mlog_n - mark > MLOG_MAX) return 1;
    for (uint64_t i = mark; i < mlog_n; i++) {
        const mlog_ent *e = &mlog[i % MLOG_MAX];
        if (e->user == user && e->conv == conv && e->seq > seq) return 1;
    }
    return 0;
}

/* After `ready`: the changes to s's user logged since mark, in order.
 * More than the log holds: the session cannot know what it missed, and is
 * closed to reconnect (1013). */
void deliver_mlog_apply(session *s, uint64_t mark) {
    if (mlog_n == mark) return;
    if (mlog_n - mark > MLOG_MAX) {
        chat_close(s->conn, PL_CLOSE_TRY_AGAIN, "membership changed during authentication: reconnect");
        return;
    }
    for (uint64_t i = mark; i < mlog_n && is_ws_open(s->conn); i++) {
        const mlog_ent *e = &mlog[i % MLOG_MAX];
        if (e->user != s->user) continue;
        if (e->add) {
            join_session(s, e->conv, e->seq);
            chat_conv *cv = conv_find(e->conv);
            if (cv) conv_head(cv, e->seq);      /* a stream opened just now reads up to it */
        } else if (conv_find(e->conv)) {
            end_session(s, conv_find(e->conv), e->seq);
        }
    }
    /* the events the loop already processed come from the store */
    for (uint64_t i = mark; i < mlog_n && is_ws_open(s->conn); i++) {
        const mlog_ent *e = &mlog[i % MLOG_MAX];
        sub *x = e->user == s->user ? sub_find(s, e->conv) : NULL;
        if (x && x->state == SUB_LIVE && x->sent_seq < x->conv->published) sub_catch_up(x, 0);
    }
}
