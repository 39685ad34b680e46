/* store_pg_reports.c — moderation in the PostgreSQL backend: reports of
 * messages (store.h invariant 12): the report with its snapshot of the
 * message, its resolution, and the admins' list; and blocks (invariant 14).
 *
 * Owns: running the statements W_REPORT_*, R_REPORT* (store_pg_stmts_w.c, _r.c). A report
 * locks its conversation with the batch like a message action
 * (store_pg_write.c touches_conv), so its checks and the snapshot see the
 * same row on every node: one round trip checks (W_REPORT_TARGET: the
 * reporter's membership, the target, the reporter's earlier report), the
 * next inserts the row, copying the message's sender, id, ts and body in
 * the statement (the body never comes to this process). A resolution is
 * one statement (W_REPORT_RESOLVE). Each job writes one statement that
 * cannot fail on the client's input (checked first), so it takes no
 * savepoint. Reports are no events: no log, no outbox, no publishing.
 *
 * Blocks: the blocks table, and conversations.blocked of the pair's direct
 * conversation, which BLOCK sets in its transaction and in the batch's map
 * (W_BLOCK_*, W_PAIR_LOCK, R_BLOCKS). The send path (store_pg_runs.c), EDIT
 * and REACTION (store_pg_actions.c), and a member's RETENTION_SET
 * (store_pg_life.c) and CONV_E2EE (store_pg_keys.c) read the flag from the
 * map, that is from the conversation's row locked at the start of their
 * batch; they never read the blocks table. Across nodes (store_pg.c
 * invariant 16):
 *   - BLOCK and a send (or another of those jobs) in the pair's direct
 *     conversation meet on the conversation's row. The block's batch locks that row at
 *     its start, found by its direct_key, in ascending id with the batch's
 *     other conversations (pg_block_key, store_pg_write.c w_begin), like any
 *     job that touches a conversation, and keeps it to COMMIT. A batch
 *     that locked the row first (any node) commits before the block goes
 *     on: its sends were before the block. One that locks it after waits
 *     for the block's COMMIT, and its FOR UPDATE then returns the row the
 *     block committed (READ COMMITTED follows the update): blocked = 1, its
 *     sends are refused. No send commits after the block unrefused, none
 *     is lost or half done (a refused job writes nothing), and the lock
 *     order (ascending id, at the start) puts the block in no cycle. In one
 *     batch, the jobs after the block (submission order) see the map's
 *     flag, which the block sets.
 *   - BLOCK and DIRECT_OPEN of the same pair: the block's lookup of the
 *     conversation cannot see one created by a transaction that has not
 *     committed, nor can that creation's check see a block that has not.
 *     So both take the pair's lock (W_PAIR_LOCK, an advisory lock to
 *     COMMIT) before they look: DIRECT_OPEN before it checks the blocks
 *     and inserts (W_DIRECT_CREATE inserts nothing under a block), BLOCK
 *     before it writes the flag. Whichever commits second sees the other:
 *     the open refuses, or the block finds the new conversation and sets
 *     its flag (its row is then locked by the UPDATE, not at the start of
 *     the batch: the one wait out of order, for a conversation no batch
 *     could lock before it existed, and PostgreSQL breaks a cycle it might
 *     close; store_pg.c invariant 5).
 *   - BLOCK and the blocker's ACCOUNT_DELETE: a block keeps the blocker's
 *     users row (KEY SHARE, W_BLOCK_ADD) to COMMIT, as a join keeps the
 *     joiner's; the deletion locks that row FOR UPDATE and only then reads
 *     whether the user blocks anyone (W_LIFE_USER_BUSY). Either it sees
 *     the block (ECONFLICT "still blocking": the API lifts the blocks and
 *     asks again), or the block waits and finds its blocker deleted
 *     (ENOTFOUND, why "deleted"): no block outlives its account.
 * Does not own: the reasons' words (the API), the SQLite backend's twin
 * (store_sqlite_reports.c, the reference for each outcome and its order).
 */
#include "pg_int.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/alloc.h"

#define REPORT_REASON_MAX 32     /* bytes of a reason (store.h PL_JOB_REPORT) */

/* ---- the writer's jobs --------------------------------------------------------- */

/* The checks of store.h in the SQLite backend's order: the reason and the
 * note, the target as EDIT's (membership, seq, joined_seq, kind, deleted),
 * not the reporter's own message; then a repeat returns the first report. */
static int r_report(pg_store *s, pl_job *j, int64_t now) {
    size_t rlen = j->title ? strlen(j->title) : 0;
    if (rlen < 1 || rlen > REPORT_REASON_MAX || !pg_utf8_ok(j->title)) {
        j->why = "bad reason";
        return PL_STORE_EINVAL;
    }
    size_t nlen = j->body ? j->body_len : 0;       /* a text column: no NUL */
    if (nlen > PL_REPORT_NOTE_MAX || (nlen && (memchr(j->body, '\0', nlen) || !pg_utf8_ok_n(j->body, nlen)))) {
        j->why = "bad note";
        return PL_STORE_EINVAL;
    }
    int filter = (j->flags & PL_JOB_FILTER) != 0;
    int64_t reporter = filter ? 0 : j->user;       /* the filter's: 0 */
    pg_params t = {0};
    pg_param_i64(&t, j->conv);
    pg_param_i64(&t, j->user);
    pg_param_i64(&t, j->seq);
    pg_param_i64(&t, reporter);
    int rc;
    PGresult *r = pg_w_query(s, W_REPORT_TARGET, &t, &rc);
    if (!r) return rc;
    if (PQntuples(r) != 1) {
        j->why = "no such conversation";
        return PL_STORE_ENOTFOUND;
    }
    if (j->seq <= 0 || j->seq < pg_i64(r, 0, 0) || pg_null(r, 0, 1)) {
        j->why = "no such message";
        return PL_STORE_ENOTFOUND;
    }
    if (pg_i64(r, 0, 1) != PL_EV_MESSAGE) {
        j->why = "not a message";
        return PL_STORE_EINVAL;
    }
    if (pg_i64(r, 0, 3)) {
        j->why = "message deleted";
        return PL_STORE_EGONE;
    }
    if (!filter && pg_i64(r, 0, 2) == j->user) {
        j->why = "your own message";
        return PL_STORE_EINVAL;
    }
    if (!pg_null(r, 0, 4)) {                       /* a repeat: the first one */
        j->out_id = pg_i64(r, 0, 4);
        if (!filter) return PL_STORE_OK;
        pg_params o = {0};                          /* the filter's, resolved: open again */
        pg_param_i64(&o, j->out_id);
        PGresult *x = pg_w_query(s, W_REPORT_REOPEN, &o, &rc);
        if (!x) return rc;
        j->created = PQntuples(x) == 1;
        return PL_STORE_OK;
    }
    char *note = NULL;
    if (nlen) {
        note = pl_malloc(nlen + 1);
        memcpy(note, j->body, nlen);
        note[nlen] = '\0';
    }
    pg_params w = {0};
    pg_param_i64(&w, j->conv);
    pg_param_i64(&w, j->seq);
    pg_param_i64(&w, reporter);
    pg_param_text(&w, j->title);
    pg_param_text(&w, note);
    pg_param_i64(&w, now);
    r = pg_w_query(s, W_REPORT_INSERT, &w, &rc);
    free(note);
    if (!r) return rc;
    if (PQntuples(r) != 1) return W_FATAL;         /* not expected: the conversation is locked */
    j->out_id = pg_i64(r, 0, 0);
    j->created = 1;
    return PL_STORE_OK;
}

/* ENOTFOUND for a report that does not exist and for one user may not
 * resolve alike (store.h: nobody else can tell a report exists). */
static int r_resolve(pg_store *s, pl_job *j, int64_t now) {
    pg_params p = {0};
    pg_param_i64(&p, j->id);
    pg_param_i64(&p, j->user);
    pg_param_text(&p, (j->flags & PL_JOB_ADMIN) ? "t" : "f");
    pg_param_i64(&p, now);
    int rc;
    PGresult *r = pg_w_query(s, W_REPORT_RESOLVE, &p, &rc);
    if (!r) return rc;
    if (PQntuples(r) != 1 || PQgetvalue(r, 0, 0)[0] != 't') return PL_STORE_ENOTFOUND;
    j->out_id = j->id;
    j->created = pg_i64(r, 0, 1) > 0;              /* 0: it was resolved already */
    return PL_STORE_OK;
}

/* ---- blocks (invariant 14) ------------------------------------------------------ */

/* The direct_key of two users: "<min>:<max>". */
static void pair_key(int64_t a, int64_t b, char key[48]) {
    snprintf(key, 48, "%lld:%lld", (long long)(a < b ? a : b), (long long)(a < b ? b : a));
}

int pg_block_key(const pl_job *j, char key[48]) {
    if (j->op != PL_JOB_BLOCK || j->user <= 0 || j->peer <= 0 || j->user == j->peer) return 0;
    pair_key(j->user, j->peer, key);
    return 1;
}

/* In one round trip and a savepoint: the pair's lock, the row in or out,
 * then the flag of their direct conversation where it changes; the map's
 * entry follows (a conversation of the batch: locked at its start, or
 * created earlier in it). The checks in the SQLite backend's order. */
static int r_block(pg_store *s, pl_job *j, int64_t now) {
    if (j->peer == j->user) return PL_STORE_EINVAL;
    int remove = (j->flags & PL_JOB_REMOVE) != 0, rc;
    char key[48];
    pair_key(j->user, j->peer, key);
    pg_params k = {0}, w = {0}, f = {0};
    pg_param_text(&k, key);
    pg_param_i64(&w, j->user);
    pg_param_i64(&w, j->peer);
    if (!remove) pg_param_i64(&w, now);
    pg_param_i64(&f, j->user);
    pg_param_i64(&f, j->peer);
    pg_param_text(&f, key);
    int sp = pg_w_send(s, W_SAVEPOINT, NULL, 0), ws = -1, fs = -1;
    if (sp < 0 || pg_w_send(s, W_PAIR_LOCK, &k, 0) < 0 ||
        (ws = pg_w_send(s, remove ? W_BLOCK_DEL : W_BLOCK_ADD, &w, 1)) < 0 ||
        (fs = pg_w_send(s, W_BLOCK_FLAG, &f, 1)) < 0 || pg_w_send(s, W_RELEASE, NULL, 0) < 0)
        return W_LOST;
    if ((rc = pg_w_sync(s)) != PL_STORE_OK) return pg_sp_failed(s, j, sp, rc);
    const PGresult *r = s->w.res[ws], *x = s->w.res[fs];
    if (pg_i64(r, 0, 0) == 0) {                             /* no such (live) peer: nothing written */
        if (!remove && pg_i64(r, 0, 2) == 0) j->why = "deleted";   /* the blocker, meanwhile */
        return PL_STORE_ENOTFOUND;
    }
    j->out_id = j->peer;
    j->created = pg_i64(r, 0, 1) > 0;
    if (PQntuples(x) == 1) {                                /* the flag changed */
        pg_conv *e = pg_conv_find(s, pg_i64(x, 0, 0));
        if (e) e->blocked = (int)pg_i64(x, 0, 1);
        j->conv_out.id = pg_i64(x, 0, 0);                  /* announced by chat/ */
        j->conv_out.blocked = (int)pg_i64(x, 0, 1);
    }
    return PL_STORE_OK;
}

int pg_job_report(pg_store *s, pl_job *j, int64_t now) {
    switch (j->op) {
    case PL_JOB_REPORT:         return r_report(s, j, now);
    case PL_JOB_REPORT_RESOLVE: return r_resolve(s, j, now);
    case PL_JOB_BLOCK:          return r_block(s, j, now);
    default:                    return PL_STORE_EINVAL;
    }
}

/* ---- the list ------------------------------------------------------------------ */

/* A row of REPORT_COLUMNS (store_pg_stmts_r.c). */
static void report_row(const PGresult *r, int row, pl_report *p) {
    memset(p, 0, sizeof *p);
    p->id = pg_i64(r, row, 0);
    p->conv = pg_i64(r, row, 1);
    p->seq = pg_i64(r, row, 2);
    p->conv_kind = (int)pg_i64(r, row, 3);
    p->reporter = pg_i64(r, row, 4);
    snprintf(p->reporter_name, sizeof p->reporter_name, "%s", PQgetvalue(r, row, 5));
    p->sender = pg_i64(r, row, 6);
    snprintf(p->sender_name, sizeof p->sender_name, "%s", PQgetvalue(r, row, 7));
    p->reason = pg_text(r, row, 8, NULL);
    p->note = pg_text(r, row, 9, NULL);
    p->body = pg_bytea(r, row, 10, NULL);
    p->msg_id = (uint64_t)pg_i64(r, row, 11);
    p->msg_ts = pg_i64(r, row, 12);
    p->created = pg_i64(r, row, 13);
    p->resolved = pg_i64(r, row, 14);
    p->resolved_by = pg_i64(r, row, 15);
}

/* Those user blocks (id, username), by id: one statement. */
static int r_read_blocks(pg_reader *r, pl_job *j) {
    pg_params p = {0};
    pg_param_i64(&p, j->user);
    int rc;
    PGresult *res = pg_r_query(r, R_BLOCKS, &p, &rc);
    if (!res) return rc;
    size_t n = (size_t)PQntuples(res);
    if (n) j->users = pl_calloc(n, sizeof *j->users);
    for (size_t i = 0; i < n; i++) {
        j->users[i].id = pg_i64(res, (int)i, 0);
        snprintf(j->users[i].username, sizeof j->users[i].username, "%s", PQgetvalue(res, (int)i, 1));
    }
    j->nusers = n;
    return PL_STORE_OK;
}

/* A server admin's list is one statement; a conversation admin's is the
 * asker's access and the page in one snapshot and one round trip, the page
 * kept only if the access allows it. READ_BLOCKS: r_read_blocks. */
int pg_read_reports(pg_reader *r, pl_job *j) {
    if (j->op == PL_READ_BLOCKS) return r_read_blocks(r, j);
    int admin = (j->flags & PL_READ_ADMIN) != 0, resolved = (j->flags & PL_READ_RESOLVED) != 0;
    if (!j->conv && !admin) return PL_STORE_EINVAL;
    int limit = j->limit < 1 ? 1 : j->limit > PL_STORE_PAGE_MAX ? PL_STORE_PAGE_MAX : j->limit;
    pg_params p = {0}, a = {0};
    pg_param_i64(&p, j->cursor > 0 ? j->cursor : INT64_MAX);
    pg_param_i64(&p, limit + 1);                   /* one more: is there more? */
    int stmt = R_REPORTS_ALL;
    if (j->conv) {
        pg_param_i64(&p, j->conv);
        pg_param_text(&p, resolved ? "t" : "f");
        pg_param_i64(&p, admin ? 0 : j->user);      /* not the reports of one's own messages */
        stmt = R_REPORTS_CONV;
    } else if (!resolved) {
        stmt = R_REPORTS_OPEN;
    }
    int as = -1, ls, rc;
    if (!j->conv) {                                 /* a server admin's list of every conversation */
        if ((ls = pgc_send(&r->c, stmt, &p, 1)) < 0) return W_LOST;
    } else {                                        /* a server admin's too: the conversation must exist */
        pg_param_i64(&a, j->conv);
        pg_param_i64(&a, j->user);
        if (pgc_send(&r->c, R_BEGIN, NULL, 0) < 0 || (as = pgc_send(&r->c, R_REPORT_ACCESS, &a, 1)) < 0 ||
            (ls = pgc_send(&r->c, stmt, &p, 1)) < 0 || pgc_send(&r->c, R_COMMIT, NULL, 0) < 0)
            return W_LOST;
    }
    if ((rc = pg_r_sync(r)) != PL_STORE_OK) return rc;
    if (as >= 0) {
        const PGresult *x = r->c.res[as];
        if (PQntuples(x) != 1) return PL_STORE_ENOTFOUND;
        if (!admin && (pg_null(x, 0, 1) || pg_i64(x, 0, 0) == PL_CONV_DIRECT)) return PL_STORE_ENOTFOUND;
        if (!admin && pg_i64(x, 0, 1) != PL_ROLE_ADMIN) return PL_STORE_EFORBID;
    }
    const PGresult *l = r->c.res[ls];
    int rows = PQntuples(l);
    j->more = rows > limit;
    size_t n = (size_t)(rows > limit ? limit : rows);
    if (n) j->reports = pl_malloc(n * sizeof *j->reports);
    for (size_t i = 0; i < n; i++) report_row(l, (int)i, &j->reports[i]);
    j->nreports = n;
    return PL_STORE_OK;
}
