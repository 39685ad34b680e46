/* store_pg_actions.c — the PostgreSQL writer's message actions (store.h
 * invariant 6): edit, delete, reaction, pin, and the notification level
 * (see store_pg.c for the invariants; the SQLite backend's
 * store_sqlite_actions.c is the reference for each action's checks, their
 * order, the reasons in job->why and the outputs).
 *
 * Owns: each action's statements. An action costs two round trips: the
 * checks (the actor's membership, the target, and what the action needs
 * besides: reactions, pins, the members an edit mentions) in one, then its
 * writes and event in a SAVEPOINT (store_pg.c invariant 4) in the other.
 * The target may have been appended earlier in the same batch: its INSERT
 * is queued before the checks and runs first. The conversation is locked
 * by the batch (store_pg_write.c touches_conv), so nothing moves between
 * the checks and the writes.
 */
#include "pg_int.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "../core/alloc.h"

/* ---- the target ------------------------------------------------------------- */

/* A message an action targets, with the actor's membership (W_TARGET). */
typedef struct pg_target {
    int     member;               /* the actor is a member                  */
    int     role;                 /* the actor's                            */
    int64_t joined;
    int     exists;               /* an event at the seq                    */
    int     kind;
    int64_t sender, ts, deleted_ts, pinned_ts, ref;
    int64_t p_sender;             /* author of the message it replies to    */
    int     p_member;             /* ... still a member                     */
    char   *body;                 /* owned; asked for and not deleted       */
    size_t  body_len;
} pg_target;

static int target_send(pg_store *s, const pl_job *j, int want_body) {
    pg_params p = {0};
    pg_param_i64(&p, j->conv);
    pg_param_i64(&p, j->user);
    pg_param_i64(&p, j->seq);
    pg_param_text(&p, want_body ? "t" : "f");
    return pg_w_send(s, W_TARGET, &p, 1);
}

/* Reads the W_TARGET row and checks what every action checks, in the
 * SQLite backend's order (store.h: target errors). */
static int target_check(const PGresult *r, pl_job *j, pg_target *t) {
    memset(t, 0, sizeof *t);
    if (PQntuples(r) != 1) {
        j->why = "no such conversation";
        return PL_STORE_ENOTFOUND;
    }
    t->member = 1;
    t->role = (int)pg_i64(r, 0, 0);
    t->joined = pg_i64(r, 0, 1);
    t->exists = !pg_null(r, 0, 2);
    t->kind = (int)pg_i64(r, 0, 2);
    t->sender = pg_i64(r, 0, 3);
    t->ts = pg_i64(r, 0, 4);
    t->deleted_ts = pg_i64(r, 0, 5);
    t->pinned_ts = pg_i64(r, 0, 6);
    t->ref = pg_i64(r, 0, 7);
    t->p_sender = pg_i64(r, 0, 8);
    t->p_member = !pg_null(r, 0, 8) && PQgetvalue(r, 0, 9)[0] == 't';
    if (j->seq <= 0 || j->seq < t->joined || !t->exists) {
        j->why = "no such message";
        return PL_STORE_ENOTFOUND;
    }
    if (t->kind != PL_EV_MESSAGE) {
        j->why = "not a message";
        return PL_STORE_EINVAL;
    }
    if (t->deleted_ts) {
        j->why = "message deleted";
        return PL_STORE_EGONE;
    }
    t->body = pg_bytea(r, 0, 10, &t->body_len);
    return PL_STORE_OK;
}

/* The action's event at e's next seq, queued with its writes: data is
 * taken over. */
static int queue_event(pg_store *s, const pg_conv *e, uint64_t id, int64_t now, int kind, int64_t sender,
                       const char *data, int64_t ref, const char *body, size_t body_len) {
    pg_params ev = {0};
    pg_event_params(&ev, e, id, now, kind, sender, 0, data, ref, body, body_len);
    return pg_w_send(s, W_EVENT_INSERT, &ev, 0) < 0 ? W_LOST : PL_STORE_OK;
}

/* Runs the queued [SAVEPOINT at sp, writes, event, RELEASE]; on success the
 * event is the job's (data taken over). */
static int finish(pg_store *s, pl_job *j, int sp, pg_conv *e, uint64_t id, int64_t now, int kind,
                  char *data, const char *body, size_t body_len) {
    int rc;
    if (pg_w_send(s, W_RELEASE, NULL, 0) < 0) {
        free(data);
        return W_LOST;
    }
    if ((rc = pg_w_sync(s)) != PL_STORE_OK) {
        free(data);
        return pg_sp_failed(s, j, sp, rc);
    }
    pg_appended(s, e, j, e->last_seq + 1, id, now, kind, j->user, 0, NULL, body, body_len, data);
    j->event.ref = j->seq;
    j->created = 1;
    return PL_STORE_OK;
}

/* ---- mentions of an edit (store.h invariant 7) ----------------------------------- */

/* Queues the resolution of names[n] to members of conv (W_SEND_NAMES). */
static int names_send(pg_store *s, int64_t conv, pl_mention_name *names, int n) {
    pg_arr *c = &s->arr[0], *k = &s->arr[1];
    pg_arr_start(c, PG_INT8);
    pg_arr_start(k, PG_TEXT);
    for (int i = 0; i < n; i++) {
        pg_arr_i64(c, conv);
        pg_arr_bytes(k, names[i], strlen(names[i]));
    }
    pg_params p = {0};
    pg_param_arr(&p, c);
    pg_param_arr(&p, k);
    return pg_w_send(s, W_SEND_NAMES, &p, 1);
}

/* The named members but the author, in order of the names, at most
 * PL_STORE_MENTIONS_MAX (names of non-members do not count). */
static size_t names_ids(const PGresult *r, int n, int64_t author, int64_t *ids) {
    int64_t *by = pl_calloc((size_t)n, sizeof *by);
    for (int row = 0; row < PQntuples(r); row++) {
        int64_t i = pg_i64(r, row, 0) - 1;
        if (i >= 0 && i < n) by[i] = pg_i64(r, row, 1);
    }
    size_t m = 0;
    for (int i = 0; i < n && m < PL_STORE_MENTIONS_MAX; i++)
        if (by[i] > 0 && by[i] != author) ids[m++] = by[i];
    free(by);
    return m;
}

/* Queues the mention rows of the message at seq: ids, the author of the
 * message it replies to (if still a member), everyone else with all. */
static int mentions_queue(pg_store *s, int64_t conv, int64_t seq, int64_t author, const int64_t *ids,
                          size_t n, int all, int64_t parent_author) {
    pg_arr *c = &s->arr[0], *u = &s->arr[1], *q = &s->arr[2];
    pg_arr_start(c, PG_INT8);
    pg_arr_start(u, PG_INT8);
    pg_arr_start(q, PG_INT8);
    for (size_t i = 0; i <= n; i++) {
        int64_t who = i < n ? ids[i] : parent_author;
        if (who <= 0 || who == author) continue;
        pg_arr_i64(c, conv);
        pg_arr_i64(u, who);
        pg_arr_i64(q, seq);
    }
    pg_params p = {0};
    if (c->n) {
        pg_param_arr(&p, c);
        pg_param_arr(&p, u);
        pg_param_arr(&p, q);
        if (pg_w_send(s, W_MENTION_INSERT, &p, 0) < 0) return W_LOST;
    }
    if (all) {
        pg_arr_start(c, PG_INT8);
        pg_arr_start(u, PG_INT8);
        pg_arr_start(q, PG_INT8);
        pg_arr_i64(c, conv);
        pg_arr_i64(u, author);
        pg_arr_i64(q, seq);
        p.n = 0;
        pg_param_arr(&p, c);
        pg_param_arr(&p, u);
        pg_param_arr(&p, q);
        if (pg_w_send(s, W_MENTION_ALL, &p, 0) < 0) return W_LOST;
    }
    return PL_STORE_OK;
}

/* ---- the actions ------------------------------------------------------------------ */

static int job_edit(pg_store *s, pl_job *j, int64_t now) {
    if (!j->body || j->body_len > INT_MAX || !pg_utf8_ok_n(j->body, j->body_len)) return PL_STORE_EINVAL;
    int all = 0, nn;
    pl_mention_name *names = pl_store__mention_names(j->body, j->body_len, &nn, &all);
    int ts = target_send(s, j, 1), ns = -1, rc;
    if (ts >= 0 && nn) ns = names_send(s, j->conv, names, nn);
    free(names);
    if (ts < 0 || (nn && ns < 0)) return W_LOST;
    if ((rc = pg_w_sync(s)) != PL_STORE_OK) return rc;
    pg_target t;
    char *data = NULL, *edata = NULL;
    if ((rc = target_check(s->w.res[ts], j, &t)) != PL_STORE_OK) goto out;
    if (t.sender != j->user) {
        j->why = "not your message";
        rc = PL_STORE_EFORBID;
        goto out;
    }
    pg_conv *e = pg_conv_find(s, j->conv);            /* locked (the actor is a member) */
    if (!e) {
        rc = PL_STORE_ENOTFOUND;
        goto out;
    }
    rc = pl_store__edit_refused(e->e2ee, e->blocked, s->edit_window_ms, now - t.ts, &j->why);   /* invariants 9, 14 */
    if (rc) goto out;
    if (t.body && t.body_len == j->body_len && memcmp(t.body, j->body, j->body_len) == 0)
        goto out;                                     /* unchanged: no event */
    if (all && t.role != PL_ROLE_ADMIN && pl_store__large(e, s->large_group)) {
        j->why = "@all and @here need an admin in a large group";
        rc = PL_STORE_EFORBID;
        goto out;
    }
    int64_t ids[PL_STORE_MENTIONS_MAX];
    size_t n = ns >= 0 ? names_ids(s->w.res[ns], nn, j->user, ids) : 0;
    data = pl_store__data_message(t.ref, ids, n, all);    /* the message's, reply_to kept */
    edata = pl_store__data_edit(j->seq, ids, n, all);
    uint64_t id = pl_idgen_next(&s->ids, now);
    pg_params u = {0}, d = {0};
    pg_param_bytes(&u, j->body, j->body_len);
    pg_param_text(&u, data);
    pg_param_i64(&u, now);
    pg_param_i64(&u, j->conv);
    pg_param_i64(&u, j->seq);
    pg_param_i64(&d, j->conv);
    pg_param_i64(&d, j->seq);
    int sp = pg_w_send(s, W_SAVEPOINT, NULL, 0);
    if (sp < 0 || pg_w_send(s, W_MSG_EDIT, &u, 0) < 0 || pg_w_send(s, W_MENTION_ERASE, &d, 0) < 0 ||
        mentions_queue(s, j->conv, j->seq, j->user, ids, n, all, t.p_member ? t.p_sender : 0) ||
        queue_event(s, e, id, now, PL_EV_EDIT, j->user, edata, j->seq, j->body, j->body_len)) {
        rc = W_LOST;
        goto out;
    }
    rc = finish(s, j, sp, e, id, now, PL_EV_EDIT, edata, j->body, j->body_len);
    edata = NULL;                                     /* taken over */
out:
    free(t.body);
    free(data);
    free(edata);
    return rc;
}

/* Erases the message (invariant 6): body, data, marks, the bodies of its
 * edit events, its reactions and mention rows; the author, or an admin of a
 * group or a channel. */
static int job_delete(pg_store *s, pl_job *j, int64_t now) {
    int ts = target_send(s, j, 0), rc;
    if (ts < 0) return W_LOST;
    if ((rc = pg_w_sync(s)) != PL_STORE_OK) return rc;
    pg_target t;
    rc = target_check(s->w.res[ts], j, &t);
    free(t.body);
    if (rc != PL_STORE_OK) return rc;
    pg_conv *e = pg_conv_find(s, j->conv);
    if (!e) return PL_STORE_ENOTFOUND;
    if (t.sender != j->user && (e->kind == PL_CONV_DIRECT || t.role != PL_ROLE_ADMIN)) {
        j->why = "not your message";
        return PL_STORE_EFORBID;
    }
    char *data = pl_store__data_target(j->seq, NULL);  /* DELETE's, and what edits keep */
    uint64_t id = pl_idgen_next(&s->ids, now);
    pg_params m = {0}, ed = {0}, cs = {0};
    pg_param_i64(&m, now);
    pg_param_i64(&m, j->conv);
    pg_param_i64(&m, j->seq);
    pg_param_i64(&ed, j->conv);
    pg_param_i64(&ed, j->seq);
    pg_param_text(&ed, data);
    pg_param_i64(&cs, j->conv);
    pg_param_i64(&cs, j->seq);
    int sp = pg_w_send(s, W_SAVEPOINT, NULL, 0);
    if (sp < 0 || pg_w_send(s, W_MSG_ERASE, &m, 0) < 0 || pg_w_send(s, W_EDITS_ERASE, &ed, 0) < 0 ||
        pg_w_send(s, W_REACTIONS_ERASE, &cs, 0) < 0 || pg_w_send(s, W_MENTION_ERASE, &cs, 0) < 0 ||
        queue_event(s, e, id, now, PL_EV_DELETE, j->user, data, j->seq, NULL, 0)) {
        free(data);
        return W_LOST;
    }
    return finish(s, j, sp, e, id, now, PL_EV_DELETE, data, NULL, 0);
}

static int job_reaction(pg_store *s, pl_job *j, int64_t now) {
    int ok = pl_store__emoji_ok(j->emoji), remove = (j->flags & PL_JOB_REMOVE) != 0;
    int ts = target_send(s, j, 0), ss = -1, rc;
    if (ts < 0) return W_LOST;
    if (ok) {                                         /* a text value: valid UTF-8 only */
        pg_params p = {0};
        pg_param_i64(&p, j->conv);
        pg_param_i64(&p, j->seq);
        pg_param_text(&p, j->emoji);
        pg_param_i64(&p, j->user);
        if ((ss = pg_w_send(s, W_REACT_STATE, &p, 1)) < 0) return W_LOST;
    }
    if ((rc = pg_w_sync(s)) != PL_STORE_OK) return rc;
    pg_target t;
    rc = target_check(s->w.res[ts], j, &t);
    free(t.body);
    if (rc != PL_STORE_OK) return rc;
    if (!ok) {
        j->why = "bad emoji";
        return PL_STORE_EINVAL;
    }
    pg_conv *e = pg_conv_find(s, j->conv);
    if (!e) return PL_STORE_ENOTFOUND;
    if (e->blocked) {                                 /* store.h invariant 14 */
        j->why = "blocked";
        return PL_STORE_EFORBID;
    }
    const PGresult *r = s->w.res[ss];
    int has = PQgetvalue(r, 0, 0)[0] == 't';
    int64_t kinds = pg_i64(r, 0, 1), count = pg_i64(r, 0, 2);
    if (has != remove) return PL_STORE_OK;            /* nothing changes */
    if (!remove && count == 0 && kinds >= PL_STORE_REACTIONS_MAX) {
        j->why = "too many different reactions on this message";
        return PL_STORE_EINVAL;
    }
    count += remove ? -1 : 1;                         /* users with it after */
    char *data = pl_store__data_reaction(j->seq, j->emoji, remove, count);
    uint64_t id = pl_idgen_next(&s->ids, now);
    pg_params p = {0};
    pg_param_i64(&p, j->conv);
    pg_param_i64(&p, j->seq);
    pg_param_text(&p, j->emoji);
    pg_param_i64(&p, j->user);
    if (!remove) pg_param_i64(&p, e->last_seq + 1);       /* this event's seq: order of first use */
    int sp = pg_w_send(s, W_SAVEPOINT, NULL, 0);
    if (sp < 0 || pg_w_send(s, remove ? W_REACT_DEL : W_REACT_ADD, &p, 0) < 0 ||
        queue_event(s, e, id, now, PL_EV_REACTION, j->user, data, j->seq, NULL, 0)) {
        free(data);
        return W_LOST;
    }
    return finish(s, j, sp, e, id, now, PL_EV_REACTION, data, NULL, 0);
}

static int job_pin(pg_store *s, pl_job *j, int64_t now) {
    int unpin = (j->flags & PL_JOB_REMOVE) != 0;
    pg_params c = {0};
    pg_param_i64(&c, j->conv);
    int ts = target_send(s, j, 0), cs = ts < 0 ? ts : pg_w_send(s, W_PIN_COUNT, &c, 1), rc;
    if (cs < 0) return W_LOST;
    if ((rc = pg_w_sync(s)) != PL_STORE_OK) return rc;
    pg_target t;
    rc = target_check(s->w.res[ts], j, &t);
    free(t.body);
    if (rc != PL_STORE_OK) return rc;
    if ((t.pinned_ts > 0) != unpin) return PL_STORE_OK;    /* nothing changes */
    if (!unpin && pg_i64(s->w.res[cs], 0, 0) >= PL_STORE_PINS_MAX) {
        j->why = "too many pinned messages";
        return PL_STORE_EINVAL;
    }
    pg_conv *e = pg_conv_find(s, j->conv);
    if (!e) return PL_STORE_ENOTFOUND;
    char *data = pl_store__data_target(j->seq, unpin ? "unpin" : "pin");
    uint64_t id = pl_idgen_next(&s->ids, now);
    pg_params p = {0};
    pg_param_i64(&p, unpin ? 0 : now);
    pg_param_i64(&p, j->conv);
    pg_param_i64(&p, j->seq);
    int sp = pg_w_send(s, W_SAVEPOINT, NULL, 0);
    if (sp < 0 || pg_w_send(s, W_PIN_SET, &p, 0) < 0 ||
        queue_event(s, e, id, now, PL_EV_PIN, j->user, data, j->seq, NULL, 0)) {
        free(data);
        return W_LOST;
    }
    return finish(s, j, sp, e, id, now, PL_EV_PIN, data, NULL, 0);
}

/* Not an event: the member's row only. */
static int job_notify_set(pg_store *s, pl_job *j) {
    if (j->level < PL_NOTIFY_ALL || j->level > PL_NOTIFY_NONE) return PL_STORE_EINVAL;
    pg_params p = {0};
    pg_param_i64(&p, j->conv);
    pg_param_i64(&p, j->user);
    pg_param_i64(&p, j->level);
    int rc;
    PGresult *r = pg_w_query(s, W_NOTIFY_SET, &p, &rc);
    if (!r) return rc;
    if (pg_cmd_tuples(r) == 0) return PL_STORE_ENOTFOUND;
    j->created = 1;
    j->out_id = j->conv;
    return PL_STORE_OK;
}

int pg_run_action(pg_store *s, pl_job *j, int64_t now) {
    switch (j->op) {
    case PL_JOB_MESSAGE_EDIT:   return job_edit(s, j, now);
    case PL_JOB_MESSAGE_DELETE: return job_delete(s, j, now);
    case PL_JOB_REACTION:       return job_reaction(s, j, now);
    case PL_JOB_PIN:            return job_pin(s, j, now);
    case PL_JOB_NOTIFY_SET:     return job_notify_set(s, j);
    default:                    return PL_STORE_EINVAL;
    }
}
