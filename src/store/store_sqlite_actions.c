/* store_sqlite_actions.c — the SQLite writer's message actions (store.h
 * invariants 6 and 7): edit, delete, reaction, pin, and the notification
 * level; jobs of the batch (store_sqlite_write.c), all but the last in a
 * savepoint.
 *
 * Owns: each action's SQL and checks, and the erasure of a message
 * (invariant 6; the data lifecycle's purges erase through sq_w_erase).
 * Not the target's load, the mentions or the event append: a send needs
 * them too, so they stay static in store_sqlite_write.c, reached here
 * through sq_w_target_load, sq_w_mentions, sq_w_mention_rows and
 * sq_w_append_full.
 */
#include "sqlite_int.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

typedef sq_target w_target;      /* sqlite_int.h */

int sq_job_edit(sq_store *s, pl_job *j, int64_t now) {
    if (!j->body || j->body_len > INT_MAX) return PL_STORE_EINVAL;
    w_target t;
    int rc = sq_w_target_load(s, j, j->seq, &t);
    char *data = NULL, *edata = NULL;
    if (rc != PL_STORE_OK) goto out;
    if (t.sender != j->user) { j->why = "not your message"; rc = PL_STORE_EFORBID; goto out; }
    int e2err = PL_STORE_OK;                          /* invariant 9: no edits */
    pl_conv_state *ce = sq_w_conv_state(s, j->conv, &e2err);
    if (!ce) { rc = e2err; goto out; }
    rc = pl_store__edit_refused(ce->e2ee, ce->blocked, s->edit_window_ms, now - t.ts, &j->why);
    if (rc) goto out;
    if (t.body && t.body_len == j->body_len && memcmp(t.body, j->body, j->body_len) == 0)
        goto out;                                     /* unchanged: no event */
    int64_t ids[PL_STORE_MENTIONS_MAX];
    size_t n = 0;
    int all = 0;
    if ((rc = sq_w_mentions(s, j, j->body, j->body_len, t.role, ids, &n, &all)) != PL_STORE_OK) goto out;
    int64_t parent_sender = 0;
    if (t.ref > 0) {                                  /* keep the reply-to-me row */
        w_target p;
        int64_t saved = j->seq;
        int prc = sq_w_target_load(s, j, t.ref, &p);
        j->seq = saved;
        j->why = NULL;
        if (prc == W_FATAL) { free(p.body); rc = W_FATAL; goto out; }
        parent_sender = p.sender;
        free(p.body);
    }
    data = pl_store__data_message(t.ref, ids, n, all);
    sqlite3_stmt *st = s->w[W_MSG_EDIT];
    sqlite3_bind_text(st, 1, j->body, (int)j->body_len, SQLITE_STATIC);
    if (data) sqlite3_bind_text(st, 2, data, -1, SQLITE_STATIC);
    else sqlite3_bind_null(st, 2);
    sqlite3_bind_int64(st, 3, now);
    sqlite3_bind_int64(st, 4, j->conv);
    sqlite3_bind_int64(st, 5, j->seq);
    if ((rc = w_exec(s, W_MSG_EDIT)) != PL_STORE_OK) goto out;
    sqlite3_bind_int64(s->w[W_MENTION_DELETE], 1, j->conv);
    sqlite3_bind_int64(s->w[W_MENTION_DELETE], 2, j->seq);
    if ((rc = w_exec(s, W_MENTION_DELETE)) != PL_STORE_OK) goto out;
    if ((rc = sq_w_mention_rows(s, j->conv, j->seq, j->user, ids, n, all, parent_sender)) != PL_STORE_OK)
        goto out;
    edata = pl_store__data_edit(j->seq, ids, n, all);
    rc = sq_w_append_full(s, j, now, j->conv, PL_EV_EDIT, j->user, 0, j->seq, NULL, j->body, j->body_len,
                          edata);
    edata = NULL;
    if (rc == PL_STORE_OK) j->created = 1;
out:
    free(t.body);
    free(data);
    free(edata);
    return rc;
}

/* Erases the MESSAGE at seq (invariant 6): body, data, marks, mention rows,
 * reactions, and the bodies of its edit events (its media references and
 * search entry go by trigger). */
static int w_erase(sq_store *s, int64_t conv, int64_t seq, int64_t now) {
    sqlite3_stmt *st = s->w[W_MSG_ERASE];
    sqlite3_bind_int64(st, 1, now);
    sqlite3_bind_int64(st, 2, conv);
    sqlite3_bind_int64(st, 3, seq);
    int rc = w_exec(s, W_MSG_ERASE);
    if (rc != PL_STORE_OK) return rc;
    static const int erase[] = {W_EDITS_ERASE, W_REACTIONS_ERASE, W_MENTION_DELETE};
    for (size_t i = 0; i < sizeof erase / sizeof erase[0]; i++) {
        sqlite3_bind_int64(s->w[erase[i]], 1, conv);
        sqlite3_bind_int64(s->w[erase[i]], 2, seq);
        if ((rc = w_exec(s, erase[i])) != PL_STORE_OK) return rc;
    }
    s->erased = 1;
    return PL_STORE_OK;
}
int sq_w_erase(sq_store *s, int64_t conv, int64_t seq, int64_t now) { return w_erase(s, conv, seq, now); }

/* Erases the message at j->seq (invariant 6) with a DELETE event. */
int sq_job_delete(sq_store *s, pl_job *j, int64_t now) {
    w_target t;
    int rc = sq_w_target_load(s, j, j->seq, &t);
    free(t.body);
    if (rc != PL_STORE_OK) return rc;
    if (t.sender != j->user) {
        int kind = sq_w_conv_kind(s, j->conv);
        if (kind < 0) return kind;
        if (kind == PL_CONV_DIRECT || t.role != PL_ROLE_ADMIN) {
            j->why = "not your message";
            return PL_STORE_EFORBID;
        }
    }
    if ((rc = w_erase(s, j->conv, j->seq, now)) != PL_STORE_OK) return rc;
    rc = sq_w_append_full(s, j, now, j->conv, PL_EV_DELETE, j->user, 0, j->seq, NULL, NULL, 0,
                          pl_store__data_target(j->seq, NULL));
    if (rc == PL_STORE_OK) j->created = 1;
    return rc;
}

int sq_job_reaction(sq_store *s, pl_job *j, int64_t now) {
    w_target t;
    int rc = sq_w_target_load(s, j, j->seq, &t);
    free(t.body);
    if (rc != PL_STORE_OK) return rc;
    if (!pl_store__emoji_ok(j->emoji)) { j->why = "bad emoji"; return PL_STORE_EINVAL; }
    pl_conv_state *ce = sq_w_conv_state(s, j->conv, &rc);
    if (!ce) return rc;
    if (ce->blocked) { j->why = "blocked"; return PL_STORE_EFORBID; }   /* invariant 14 */
    int remove = (j->flags & PL_JOB_REMOVE) != 0;
    sqlite3_stmt *st = s->w[W_REACTION_HAS];
    sqlite3_bind_int64(st, 1, j->conv);
    sqlite3_bind_int64(st, 2, j->seq);
    sqlite3_bind_text(st, 3, j->emoji, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, j->user);
    int has = w_lookup(s, W_REACTION_HAS, NULL);
    if (has < 0) return has;
    if (has != remove) return PL_STORE_OK;                  /* nothing changes */
    if (!remove) {
        st = s->w[W_REACTION_KINDS];
        sqlite3_bind_int64(st, 1, j->conv);
        sqlite3_bind_int64(st, 2, j->seq);
        sqlite3_bind_text(st, 3, j->emoji, -1, SQLITE_STATIC);
        rc = sqlite3_step(st);
        int64_t kinds = 0, known = 0;
        if (rc == SQLITE_ROW) {
            kinds = sqlite3_column_int64(st, 0);
            known = sqlite3_column_int64(st, 1);
        }
        sqlite3_reset(st);
        if (rc != SQLITE_ROW) return w_fatal(s, rc, sq_w_sql[W_REACTION_KINDS]);
        if (!known && kinds >= PL_STORE_REACTIONS_MAX) {
            j->why = "too many different reactions on this message";
            return PL_STORE_EINVAL;
        }
    }
    int id = remove ? W_REACTION_DELETE : W_REACTION_INSERT;
    st = s->w[id];
    sqlite3_bind_int64(st, 1, j->conv);
    sqlite3_bind_int64(st, 2, j->seq);
    sqlite3_bind_text(st, 3, j->emoji, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, j->user);
    if (!remove) {                                  /* this event's seq: order of first use */
        int err = PL_STORE_OK;
        pl_conv_state *e = sq_w_conv_state(s, j->conv, &err);
        if (!e) return err;
        sqlite3_bind_int64(st, 5, e->last_seq + 1);
    }
    if ((rc = w_exec(s, id)) != PL_STORE_OK) return rc;
    int64_t count = 0;
    st = s->w[W_REACTION_COUNT];
    sqlite3_bind_int64(st, 1, j->conv);
    sqlite3_bind_int64(st, 2, j->seq);
    sqlite3_bind_text(st, 3, j->emoji, -1, SQLITE_STATIC);
    if ((rc = w_lookup(s, W_REACTION_COUNT, &count)) < 0) return rc;
    rc = sq_w_append_full(s, j, now, j->conv, PL_EV_REACTION, j->user, 0, j->seq, NULL, NULL, 0,
                          pl_store__data_reaction(j->seq, j->emoji, remove, count));
    if (rc == PL_STORE_OK) j->created = 1;
    return rc;
}

int sq_job_pin(sq_store *s, pl_job *j, int64_t now) {
    w_target t;
    int rc = sq_w_target_load(s, j, j->seq, &t);
    free(t.body);
    if (rc != PL_STORE_OK) return rc;
    int unpin = (j->flags & PL_JOB_REMOVE) != 0;
    if ((t.pinned_ts > 0) != unpin) return PL_STORE_OK;     /* nothing changes */
    if (!unpin) {
        int64_t pins = 0;
        sqlite3_bind_int64(s->w[W_PIN_COUNT], 1, j->conv);
        if ((rc = w_lookup(s, W_PIN_COUNT, &pins)) < 0) return rc;
        if (pins >= PL_STORE_PINS_MAX) { j->why = "too many pinned messages"; return PL_STORE_EINVAL; }
    }
    sqlite3_stmt *st = s->w[W_PIN_SET];
    sqlite3_bind_int64(st, 1, unpin ? 0 : now);
    sqlite3_bind_int64(st, 2, j->conv);
    sqlite3_bind_int64(st, 3, j->seq);
    if ((rc = w_exec(s, W_PIN_SET)) != PL_STORE_OK) return rc;
    rc = sq_w_append_full(s, j, now, j->conv, PL_EV_PIN, j->user, 0, j->seq, NULL, NULL, 0,
                          pl_store__data_target(j->seq, unpin ? "unpin" : "pin"));
    if (rc == PL_STORE_OK) j->created = 1;
    return rc;
}

int sq_job_notify_set(sq_store *s, pl_job *j, int64_t now) {
    if (j->level < PL_NOTIFY_ALL || j->level > PL_NOTIFY_NONE) return PL_STORE_EINVAL;
    sqlite3_stmt *st = s->w[W_NOTIFY_SET];
    sqlite3_bind_int(st, 1, j->level);
    sqlite3_bind_int64(st, 2, j->conv);
    sqlite3_bind_int64(st, 3, j->user);
    int rc = w_exec(s, W_NOTIFY_SET);
    if (rc != PL_STORE_OK) return rc;
    if (sqlite3_changes(s->wdb) == 0) return PL_STORE_ENOTFOUND;
    j->created = 1;
    j->out_id = j->conv;
    return PL_STORE_OK;
}
