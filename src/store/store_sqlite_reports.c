/* store_sqlite_reports.c — moderation in the SQLite backend: reports of
 * messages (store.h invariant 12) and blocks (invariant 14).
 *
 * Owns: the SQL of the reports table: the report (with its snapshot of the
 * message), its resolution, and the admins' list. A report checks its
 * target as every message action does (sq_w_target_load), and is no event:
 * nothing of it reaches a conversation's log. The blocks table, and
 * conversations.blocked of the pair's direct conversation, which a block
 * or unblock sets in the same transaction and in the writer's cached
 * state (the send path's check). Rare jobs: statements are prepared on use.
 */
#include "sqlite_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/alloc.h"
#include "../core/utf8.h"

#define REPORT_REASON_MAX 32

static int r_fatal(sq_store *s, int src) { return sq_w_fatal(s, src, "report statement"); }

/* The content filter flagged a message it had reported before (an edit):
 * its report gets the text as it is now, open or not (no moderator
 * reviews a text the message no longer has), and is open again if it was
 * resolved (created = 1 only then). */
static int reopen(sq_store *s, pl_job *j, int64_t id, const sq_target *t) {
    int src = 0;
    j->out_id = id;
    int64_t was = 0;
    if (sq_run(s->wdb, &src, &was, "SELECT resolved FROM reports WHERE id = ?1", "i", id) < 0) return r_fatal(s, src);
    sqlite3_stmt *st = sq_prep(s->wdb, "UPDATE reports SET resolved = 0, resolved_by = 0, body = ?2 WHERE id = ?1",
                               &src);
    if (!st) return r_fatal(s, src);
    sqlite3_bind_int64(st, 1, id);
    if (t->body && t->body_len) sqlite3_bind_text(st, 2, t->body, (int)t->body_len, SQLITE_STATIC);
    else sqlite3_bind_null(st, 2);
    int step = sqlite3_step(st);
    sqlite3_finalize(st);
    if (step != SQLITE_DONE) return r_fatal(s, step);
    j->created = was != 0;
    return PL_STORE_OK;
}

static int report(sq_store *s, pl_job *j, int64_t now) {
    size_t rlen = j->title ? strlen(j->title) : 0;
    if (!rlen || rlen > REPORT_REASON_MAX || !pl_utf8_valid((const uint8_t *)j->title, rlen)) {
        j->why = "bad reason";
        return PL_STORE_EINVAL;
    }
    size_t nlen = j->body ? j->body_len : 0;
    if (nlen > PL_REPORT_NOTE_MAX || (nlen && !pl_utf8_valid((const uint8_t *)j->body, nlen))) {
        j->why = "bad note";
        return PL_STORE_EINVAL;
    }
    int filter = (j->flags & PL_JOB_FILTER) != 0;
    int64_t reporter = filter ? 0 : j->user;       /* the filter's: 0 */
    sq_target t;
    int rc = sq_w_target_load(s, j, j->seq, &t);
    if (rc == PL_STORE_OK && !filter && t.sender == j->user) {
        j->why = "your own message";
        rc = PL_STORE_EINVAL;
    }
    int src = 0;
    int64_t id = 0, msg_id = 0;
    if (rc == PL_STORE_OK) {
        int found = sq_run(s->wdb, &src, &id, "SELECT id FROM reports WHERE conv_id = ?1 AND seq = ?2 AND reporter = ?3",
                           "iii", j->conv, j->seq, reporter);
        if (found < 0) rc = r_fatal(s, src);
        else if (found && filter) rc = reopen(s, j, id, &t);   /* the filter's: open again */
        else if (found) j->out_id = id;             /* a repeat: the first one */
        else if (sq_run(s->wdb, &src, &msg_id, "SELECT id FROM events WHERE conv_id = ?1 AND seq = ?2", "ii", j->conv,
                        j->seq) < 0)
            rc = r_fatal(s, src);
        else
            id = -1;                                /* to insert */
    }
    if (rc == PL_STORE_OK && id < 0) {
        sqlite3_stmt *st = sq_prep(s->wdb,
                                   "INSERT INTO reports(conv_id, seq, reporter, sender, reason, note, body, msg_id,"
                                   " msg_ts, created) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) RETURNING id",
                                   &src);
        if (!st) {
            rc = r_fatal(s, src);
        } else {
            sqlite3_bind_int64(st, 1, j->conv);
            sqlite3_bind_int64(st, 2, j->seq);
            sqlite3_bind_int64(st, 3, reporter);
            sqlite3_bind_int64(st, 4, t.sender);
            sqlite3_bind_text(st, 5, j->title, (int)rlen, SQLITE_STATIC);
            if (nlen) sqlite3_bind_text(st, 6, j->body, (int)nlen, SQLITE_STATIC);
            else sqlite3_bind_null(st, 6);
            if (t.body && t.body_len) sqlite3_bind_text(st, 7, t.body, (int)t.body_len, SQLITE_STATIC);
            else sqlite3_bind_null(st, 7);                  /* ciphertext, attachments only */
            sqlite3_bind_int64(st, 8, msg_id);
            sqlite3_bind_int64(st, 9, t.ts);
            sqlite3_bind_int64(st, 10, now);
            int step = sqlite3_step(st);
            if (step == SQLITE_ROW) {
                j->out_id = sqlite3_column_int64(st, 0);
                j->created = 1;
            }
            sqlite3_finalize(st);
            if (step != SQLITE_ROW) rc = r_fatal(s, step);
        }
    }
    free(t.body);
    return rc;
}

static int resolve(sq_store *s, pl_job *j, int64_t now) {
    int src = 0;
    int64_t conv = 0, resolved = 0, kind = 0;
    int rc = sq_run(s->wdb, &src, &conv, "SELECT conv_id FROM reports WHERE id = ?1", "i", j->id);
    if (rc <= 0) return rc < 0 ? r_fatal(s, src) : PL_STORE_ENOTFOUND;
    if (!(j->flags & PL_JOB_ADMIN)) {
        if (sq_run(s->wdb, &src, &kind, "SELECT kind FROM conversations WHERE id = ?1", "i", conv) < 0)
            return r_fatal(s, src);
        int role = sq_w_member_role(s, conv, j->user);
        if (role < 0) return role;
        if (kind == PL_CONV_DIRECT || role != PL_ROLE_ADMIN) return PL_STORE_ENOTFOUND;
        int64_t sender = 0;                          /* not a report of one's own message */
        if (sq_run(s->wdb, &src, &sender, "SELECT sender FROM reports WHERE id = ?1", "i", j->id) < 0)
            return r_fatal(s, src);
        if (sender == j->user) return PL_STORE_ENOTFOUND;
        int64_t seen = 0;                            /* nor of a message from before it joined */
        if (sq_run(s->wdb, &src, &seen, "SELECT r.seq >= m.joined_seq FROM reports r JOIN members m"
                   " ON m.conv_id = r.conv_id AND m.user_id = ?2 WHERE r.id = ?1", "ii", j->id, j->user) < 0)
            return r_fatal(s, src);
        if (!seen) return PL_STORE_ENOTFOUND;
    }
    j->out_id = j->id;
    if (sq_run(s->wdb, &src, &resolved, "SELECT resolved FROM reports WHERE id = ?1", "i", j->id) < 0)
        return r_fatal(s, src);
    if (resolved) return PL_STORE_OK;
    if (sq_run(s->wdb, &src, NULL, "UPDATE reports SET resolved = ?1, resolved_by = ?2 WHERE id = ?3", "iii", now,
               j->user, j->id) < 0)
        return r_fatal(s, src);
    j->created = 1;
    return PL_STORE_OK;
}

/* ---- blocks (invariant 14) ------------------------------------------------------ */

int sq_blocked_pair(sq_store *s, int64_t a, int64_t b) {
    int src = 0;
    int rc = sq_run(s->wdb, &src, NULL, "SELECT 1 FROM blocks WHERE (user_id = ?1 AND blocked_id = ?2)"
                    " OR (user_id = ?2 AND blocked_id = ?1)", "ii", a, b);
    return rc < 0 ? r_fatal(s, src) : rc;
}

static int block(sq_store *s, pl_job *j, int64_t now) {
    if (j->peer == j->user) return PL_STORE_EINVAL;
    int src = 0, rc, remove = (j->flags & PL_JOB_REMOVE) != 0;
    if (!remove) {                                  /* a deleted blocker too: it keeps none */
        rc = sq_w_user_exists(s, j->user);
        if (rc == 0) j->why = "deleted";
        if (rc > 0) rc = sq_w_user_exists(s, j->peer);
        if (rc <= 0) return rc < 0 ? rc : PL_STORE_ENOTFOUND;
    }
    rc = remove ? sq_run(s->wdb, &src, NULL, "DELETE FROM blocks WHERE user_id = ?1 AND blocked_id = ?2 RETURNING 1",
                         "ii", j->user, j->peer)
                : sq_run(s->wdb, &src, NULL, "INSERT INTO blocks(user_id, blocked_id, created) VALUES(?1, ?2, ?3)"
                         " ON CONFLICT DO NOTHING RETURNING 1", "iii", j->user, j->peer, now);
    if (rc < 0) return r_fatal(s, src);
    j->out_id = j->peer;
    j->created = rc;
    /* the pair's direct conversation, if any: its flag, row and cached */
    char key[48];
    int64_t lo = j->user < j->peer ? j->user : j->peer, hi = j->user < j->peer ? j->peer : j->user, conv = 0;
    snprintf(key, sizeof key, "%lld:%lld", (long long)lo, (long long)hi);
    rc = sq_run(s->wdb, &src, &conv, "SELECT id FROM conversations WHERE direct_key = ?1", "t", key);
    if (rc <= 0) return rc < 0 ? r_fatal(s, src) : PL_STORE_OK;
    int blocked = sq_blocked_pair(s, j->user, j->peer);
    if (blocked < 0) return blocked;
    int changed = sq_run(s->wdb, &src, NULL, "UPDATE conversations SET blocked = ?1 WHERE id = ?2 AND blocked <> ?1"
                         " RETURNING 1", "ii", (int64_t)blocked, conv);
    if (changed < 0) return r_fatal(s, src);
    if (changed) {                                  /* announced by chat/ */
        j->conv_out.id = conv;
        j->conv_out.blocked = blocked;
    }
    int err = PL_STORE_OK;
    pl_conv_state *e = sq_w_conv_state(s, conv, &err);
    if (!e) return err;
    e->blocked = blocked;
    return PL_STORE_OK;
}

int sq_job_report(sq_store *s, pl_job *j, int64_t now) {
    if (j->op == PL_JOB_BLOCK) return block(s, j, now);
    return j->op == PL_JOB_REPORT ? report(s, j, now) : resolve(s, j, now);
}


/* ---- the list --------------------------------------------------------------- */

static void name_copy(char dst[33], sqlite3_stmt *st, int i) {
    const char *v = (const char *)sqlite3_column_text(st, i);
    snprintf(dst, 33, "%s", v ? v : "");
}

static int read_blocks(sq_reader *r, pl_job *j);

int sq_read_reports(sq_reader *r, pl_job *j) {
    if (j->op == PL_READ_BLOCKS) return read_blocks(r, j);
    int admin = (j->flags & PL_READ_ADMIN) != 0, src = 0, rc;
    if (!j->conv && !admin) return PL_STORE_EINVAL;
    sqlite3_stmt *st;
    if (j->conv) {          /* a server admin's too: a conversation that does not exist is not found */
        st = sq_prep(r->db, "SELECT c.kind, m.role FROM conversations c LEFT JOIN members m ON m.conv_id = c.id"
                            " AND m.user_id = ?2 WHERE c.id = ?1", &src);
        if (!st) return PL_STORE_EUNAVAIL;
        sqlite3_bind_int64(st, 1, j->conv);
        sqlite3_bind_int64(st, 2, j->user);
        int kind = 0, member = 0, role = PL_ROLE_NONE;
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
            kind = sqlite3_column_int(st, 0);
            member = sqlite3_column_type(st, 1) != SQLITE_NULL;
            role = sqlite3_column_int(st, 1);
        }
        sqlite3_finalize(st);
        if (rc != SQLITE_ROW && rc != SQLITE_DONE) return PL_STORE_EUNAVAIL;
        if (rc == SQLITE_DONE) return PL_STORE_ENOTFOUND;
        if (!admin && (!member || kind == PL_CONV_DIRECT)) return PL_STORE_ENOTFOUND;
        if (!admin && role != PL_ROLE_ADMIN) return PL_STORE_EFORBID;
    }
    int limit = j->limit < 1 ? 1 : j->limit > PL_STORE_PAGE_MAX ? PL_STORE_PAGE_MAX : j->limit;
    st = sq_prep(r->db,
                 "SELECT r.id, r.conv_id, r.seq, c.kind, r.reporter, ur.username, r.sender, us.username, r.reason,"
                 " r.note, r.body, r.msg_id, r.msg_ts, r.created, r.resolved, r.resolved_by"
                 " FROM reports r JOIN conversations c ON c.id = r.conv_id"
                 " LEFT JOIN users ur ON ur.id = r.reporter LEFT JOIN users us ON us.id = r.sender"
                 " WHERE (?1 = 0 OR r.conv_id = ?1) AND (?2 OR r.resolved = 0) AND (?3 = 0 OR r.id < ?3)"
                 " AND r.sender <> ?5 AND (?5 = 0 OR r.seq >= (SELECT m.joined_seq FROM members m"
                 "   WHERE m.conv_id = r.conv_id AND m.user_id = ?5)) ORDER BY r.id DESC LIMIT ?4", &src);
    if (!st) return PL_STORE_EUNAVAIL;
    sqlite3_bind_int64(st, 1, j->conv);
    sqlite3_bind_int(st, 2, (j->flags & PL_READ_RESOLVED) != 0);
    sqlite3_bind_int64(st, 3, j->cursor);
    sqlite3_bind_int(st, 4, limit + 1);
    sqlite3_bind_int64(st, 5, admin ? 0 : j->user);   /* not the reports of one's own messages */
    j->reports = pl_calloc((size_t)limit, sizeof *j->reports);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (j->nreports == (size_t)limit) {
            j->more = 1;
            break;
        }
        pl_report *p = &j->reports[j->nreports++];
        p->id = sqlite3_column_int64(st, 0);
        p->conv = sqlite3_column_int64(st, 1);
        p->seq = sqlite3_column_int64(st, 2);
        p->conv_kind = sqlite3_column_int(st, 3);
        p->reporter = sqlite3_column_int64(st, 4);
        name_copy(p->reporter_name, st, 5);
        p->sender = sqlite3_column_int64(st, 6);
        name_copy(p->sender_name, st, 7);
        p->reason = sq_col_text(st, 8, NULL);
        p->note = sq_col_text(st, 9, NULL);
        p->body = sq_col_text(st, 10, NULL);
        p->msg_id = (uint64_t)sqlite3_column_int64(st, 11);
        p->msg_ts = sqlite3_column_int64(st, 12);
        p->created = sqlite3_column_int64(st, 13);
        p->resolved = sqlite3_column_int64(st, 14);
        p->resolved_by = sqlite3_column_int64(st, 15);
    }
    sqlite3_finalize(st);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? PL_STORE_OK : PL_STORE_EUNAVAIL;
}

static int read_blocks(sq_reader *r, pl_job *j) {
    int src = 0, rc;
    sqlite3_stmt *st = sq_prep(r->db, "SELECT u.id, u.username FROM blocks b JOIN users u ON u.id = b.blocked_id"
                                      " WHERE b.user_id = ?1 ORDER BY u.id", &src);
    if (!st) return PL_STORE_EUNAVAIL;
    sqlite3_bind_int64(st, 1, j->user);
    size_t cap = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (j->nusers == cap) {
            cap = cap ? cap * 2 : 8;
            j->users = pl_realloc(j->users, cap * sizeof *j->users);
        }
        pl_user *u = &j->users[j->nusers++];
        memset(u, 0, sizeof *u);
        u->id = sqlite3_column_int64(st, 0);
        name_copy(u->username, st, 1);
    }
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? PL_STORE_OK : PL_STORE_EUNAVAIL;
}
