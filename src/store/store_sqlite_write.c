/* store_sqlite_write.c — the SQLite writer: every write job, run in batches
 * on the writer thread (see store_sqlite.c for the pipeline and its
 * invariants, which this file keeps).
 *
 * Owns: the batch's course (BEGIN, the jobs, flush, COMMIT, failure), the
 * job dispatch and its savepoints, MESSAGE_SEND's SQL (the hot path: its
 * helpers stay static here; the other files reach them through the
 * sq_w_* wrappers), the role cache, the conversation map (last_seq,
 * msg_count, member_count of conversations touched since start) and the
 * own_unread deltas of the open transaction.
 *
 * Not the other jobs' SQL: accounts, logins and last seen are in
 * store_sqlite_accounts.c; conversations and members in
 * store_sqlite_members.c; edits, deletes, reactions, pins and the
 * notification level in store_sqlite_actions.c; receipts in
 * store_sqlite_receipts.c; the rest in the files sqlite_int.h lists.
 */
#include "sqlite_int.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "../core/alloc.h"
#include "../core/clock.h"
#include "../core/log.h"
#include "../core/metrics.h"

/* ---- the conversation map ----------------------------------------------- */

static void conv_clear(sq_store *s) {
    pl_conv_map_clear(&s->convs);
    s->ndirty = 0;
}

static void mark_dirty(sq_store *s, pl_conv_state *e) {
    if (e->dirty) return;
    if (s->ndirty == s->dirty_cap) {
        s->dirty_cap = s->dirty_cap ? s->dirty_cap * 2 : 64;
        s->dirty = pl_realloc(s->dirty, s->dirty_cap * sizeof *s->dirty);
    }
    s->dirty[s->ndirty++] = e->conv;
    e->dirty = 1;
}

/* ---- statement helpers --------------------------------------------------- */

#define W_DUP (-101)   /* internal: w_append met the idempotency key of a stored event */

static void reset_outputs(pl_job *j);

/* w_fatal, w_exec, w_lookup and w_write: sqlite_int.h (inline, shared with
 * the job files). */

/* The role cache. Every send checks its sender's membership, which as a
 * statement was ~6 % of the writer's time at the 1:1 peak; members change
 * rarely, and only through this writer. So the writer keeps the roles it
 * read in a direct-mapped table, (conv, user) -> role (PL_ROLE_NONE too).
 * A job that may change members (any job but those of w_keeps_members)
 * runs with the cache off and empties it after; a failed batch empties it
 * (its rollback). Keys are non-zero: conv 0 marks an empty entry. */
typedef struct sq_role {
    int64_t conv, user;
    int     role;
} sq_role;

static void roles_clear(sq_store *s) {
    if (s->roles) memset(s->roles, 0, SQ_ROLES * sizeof *s->roles);
}

static int w_keeps_members(pl_job_op op) {
    switch (op) {
    case PL_JOB_MESSAGE_SEND: case PL_JOB_MESSAGE_EDIT: case PL_JOB_MESSAGE_DELETE:
    case PL_JOB_REACTION: case PL_JOB_PIN: case PL_JOB_NOTIFY_SET: case PL_JOB_RECEIPT:
    case PL_JOB_LAST_SEEN: case PL_JOB_USER_CREATE: case PL_JOB_LOGIN_CREATE:
    case PL_JOB_LOGIN_ROTATE: case PL_JOB_LOGIN_REVOKE:
    case PL_JOB_PUSH_REGISTER: case PL_JOB_PUSH_UNREGISTER: case PL_JOB_PUSH_CLAIM: case PL_JOB_PUSH_DONE:
    case PL_JOB_REPORT: case PL_JOB_REPORT_RESOLVE:
        return 1;
    default:
        return 0;
    }
}

/* Role of user in conv (PL_ROLE_NONE if not a member) or W_FATAL. */
static int w_member_role(sq_store *s, int64_t conv, int64_t user) {
    sq_role *c = NULL;
    if (!s->roles_off && conv > 0) {
        if (!s->roles) s->roles = pl_calloc(SQ_ROLES, sizeof *s->roles);
        uint64_t h = ((uint64_t)conv * 0x9E3779B97F4A7C15ull) ^ ((uint64_t)user * 0xC2B2AE3D27D4EB4Full);
        c = &s->roles[(h >> 32) & (SQ_ROLES - 1)];
        if (c->conv == conv && c->user == user) return c->role;
    }
    int64_t role = PL_ROLE_NONE;
    sqlite3_bind_int64(s->w[W_MEMBER_ROLE], 1, conv);
    sqlite3_bind_int64(s->w[W_MEMBER_ROLE], 2, user);
    int rc = w_lookup(s, W_MEMBER_ROLE, &role);
    if (rc < 0) return rc;
    if (!rc) role = PL_ROLE_NONE;
    if (c) *c = (sq_role){conv, user, (int)role};
    return (int)role;
}

/* The map entry of conv, loaded from its row on a miss; NULL with *err =
 * ENOTFOUND or W_FATAL. */
static pl_conv_state *w_conv_state(sq_store *s, int64_t conv, int *err) {
    pl_conv_state *e = pl_conv_map_find(&s->convs, conv);
    if (e) return e;
    sqlite3_stmt *st = s->w[W_CONV_STATE];
    sqlite3_bind_int64(st, 1, conv);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        e = pl_conv_map_put(&s->convs, conv);
        e->last_seq = sqlite3_column_int64(st, 0);
        e->last_ts = sqlite3_column_int64(st, 1);
        e->msg_count = sqlite3_column_int64(st, 2);
        e->member_count = sqlite3_column_int64(st, 3);
        e->e2ee = sqlite3_column_int(st, 4);
        e->blocked = sqlite3_column_int(st, 5);
        e->kind = sqlite3_column_int(st, 6);
    }
    sqlite3_reset(st);
    if (rc == SQLITE_ROW) return e;
    *err = rc == SQLITE_DONE ? PL_STORE_ENOTFOUND : w_fatal(s, rc, sq_w_sql[W_CONV_STATE]);
    return NULL;
}

/* What an inserted event adds beside its row: a MESSAGE with text is
 * queued for the search index, and one with attachments references them
 * (migration 10 -> 11 says why this is code, not triggers). Either failing
 * fails the batch: the event row is already written. */
static int w_append_side(sq_store *s, int kind, int64_t conv, int64_t seq, uint64_t id, const char *body,
                         const char *data) {
    if (kind != PL_EV_MESSAGE) return PL_STORE_OK;
    if (body) {
        sqlite3_stmt *st = s->w[W_FTS_QUEUE];
        sqlite3_bind_int64(st, 1, (int64_t)id);
        sqlite3_bind_int64(st, 2, conv);
        sqlite3_bind_int64(st, 3, seq);
        if (w_exec(s, W_FTS_QUEUE) != PL_STORE_OK) return W_FATAL;
    }
    if (s->push) {                       /* store.h invariant 10 */
        sqlite3_stmt *st = s->w[W_PUSH_OUTBOX];
        sqlite3_bind_int64(st, 1, conv);
        sqlite3_bind_int64(st, 2, seq);
        if (w_exec(s, W_PUSH_OUTBOX) != PL_STORE_OK) return W_FATAL;
    }
    if (data && strstr(data, "\"attachments\"")) {
        sqlite3_stmt *st = s->w[W_MEDIA_REFS];
        sqlite3_bind_int64(st, 1, conv);
        sqlite3_bind_int64(st, 2, seq);
        sqlite3_bind_text(st, 3, data, -1, SQLITE_STATIC);
        if (w_exec(s, W_MEDIA_REFS) != PL_STORE_OK) return W_FATAL;
    }
    return PL_STORE_OK;
}

/* Appends an event with conv's next seq and fills job->event. data is taken
 * over (freed on failure). The append (and w_append_side) is the last write
 * of every job. W_DUP, with nothing written, when cmid is already taken by
 * an event of the sender in conv (the insert's ON CONFLICT DO NOTHING). */
static int w_append(sq_store *s, pl_job *j, int64_t now, int64_t conv, int kind, int64_t sender,
                    int64_t subject, int64_t ref, const char *cmid, const char *body, size_t body_len,
                    char *data) {
    int err = PL_STORE_OK;
    pl_conv_state *e = w_conv_state(s, conv, &err);
    if (!e) { free(data); return err; }
    int64_t seq = e->last_seq + 1;
    int64_t msg_no = e->msg_count + (kind == PL_EV_MESSAGE);
    uint64_t id = pl_idgen_next(&s->ids, now);
    sqlite3_stmt *st = s->w[W_EVENT_INSERT];
    sqlite3_bind_int64(st, 1, conv);
    sqlite3_bind_int64(st, 2, seq);
    sqlite3_bind_int64(st, 3, (int64_t)id);
    sqlite3_bind_int64(st, 4, now);
    sqlite3_bind_int(st, 5, kind);
    sqlite3_bind_int64(st, 6, sender);
    if (cmid) sqlite3_bind_text(st, 7, cmid, -1, SQLITE_STATIC);
    else sqlite3_bind_null(st, 7);
    if (body) sqlite3_bind_text(st, 8, body, (int)body_len, SQLITE_STATIC);
    else sqlite3_bind_null(st, 8);
    if (data) sqlite3_bind_text(st, 9, data, -1, SQLITE_STATIC);
    else sqlite3_bind_null(st, 9);
    sqlite3_bind_int64(st, 10, subject);
    sqlite3_bind_int64(st, 11, msg_no);
    sqlite3_bind_int64(st, 12, ref);
    int rc = w_write(s, W_EVENT_INSERT);
    if (rc == PL_STORE_OK && cmid && sqlite3_changes(s->wdb) == 0) {
        free(data);                      /* the key is taken: a retry (job_send) */
        return W_DUP;
    }
    if (rc != PL_STORE_OK) {
        free(data);
        if (rc == PL_STORE_ECONFLICT) {   /* cannot happen: keys checked first */
            pl_log(PL_LOG_ERROR, 0, "store: event insert violated a constraint",
                   "\"conv\":%lld,\"seq\":%lld", (long long)conv, (long long)seq);
            return PL_STORE_EUNAVAIL;
        }
        return rc;
    }
    if ((rc = w_append_side(s, kind, conv, seq, id, body, data)) != PL_STORE_OK) {
        free(data);
        return rc;
    }
    mark_dirty(s, e);
    e->last_seq = seq;
    e->last_ts = now;
    e->msg_count = msg_no;
    j->has_event = 1;
    j->event.conv = conv;
    j->event.seq = seq;
    j->event.id = id;
    j->event.ts = now;
    j->event.kind = kind;
    j->event.sender = sender;
    j->event.subject = subject;
    j->event.ref = ref;
    j->event.client_msg_id = cmid ? pl_strdup(cmid) : NULL;
    if (body) {
        j->event.body = pl_malloc(body_len + 1);
        memcpy(j->event.body, body, body_len);
        j->event.body[body_len] = '\0';
        j->event.body_len = body_len;
    }
    j->event.data = data;
    return PL_STORE_OK;
}

/* member_count of conv moves by d (the map entry exists: checked before). */
int sq_w_member_count(sq_store *s, int64_t conv, int64_t d) {
    int err = PL_STORE_OK;
    pl_conv_state *e = w_conv_state(s, conv, &err);
    if (!e) return err;
    e->member_count += d;
    mark_dirty(s, e);
    return PL_STORE_OK;
}

/* ---- sends (store.h invariant 7) ------------------------------------------ */

typedef sq_target w_target;      /* sqlite_int.h */

/* Loads the actor's membership and the target at seq, checking what every
 * action checks (store.h: target errors). */
static int w_target_load(sq_store *s, pl_job *j, int64_t seq, w_target *t) {
    memset(t, 0, sizeof *t);
    sqlite3_stmt *st = s->w[W_MEMBER_JOINED];
    sqlite3_bind_int64(st, 1, j->conv);
    sqlite3_bind_int64(st, 2, j->user);
    int rc = sqlite3_step(st);
    int64_t joined = 0;
    if (rc == SQLITE_ROW) {
        t->role = sqlite3_column_int(st, 0);
        joined = sqlite3_column_int64(st, 1);
    }
    sqlite3_reset(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) return w_fatal(s, rc, sq_w_sql[W_MEMBER_JOINED]);
    if (rc == SQLITE_DONE) { j->why = "no such conversation"; return PL_STORE_ENOTFOUND; }
    if (seq <= 0 || seq < joined) { j->why = "no such message"; return PL_STORE_ENOTFOUND; }
    st = s->w[W_TARGET];
    sqlite3_bind_int64(st, 1, j->conv);
    sqlite3_bind_int64(st, 2, seq);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        t->kind = sqlite3_column_int(st, 0);
        t->sender = sqlite3_column_int64(st, 1);
        t->ts = sqlite3_column_int64(st, 2);
        t->deleted_ts = sqlite3_column_int64(st, 3);
        t->body = sq_col_text(st, 4, &t->body_len);
        t->ref = sqlite3_column_int64(st, 5);
        t->pinned_ts = sqlite3_column_int64(st, 6);
    }
    sqlite3_reset(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) return w_fatal(s, rc, sq_w_sql[W_TARGET]);
    if (rc == SQLITE_DONE) { j->why = "no such message"; return PL_STORE_ENOTFOUND; }
    if (t->kind != PL_EV_MESSAGE) { j->why = "not a message"; return PL_STORE_EINVAL; }
    if (t->deleted_ts) { j->why = "message deleted"; return PL_STORE_EGONE; }
    return PL_STORE_OK;
}

/* The members a body mentions (invariant 7): ids[] (PL_STORE_MENTIONS_MAX
 * at most) of named members other than the sender, in order of first
 * appearance; names of non-members do not count towards the cap. *all for
 * @all/@here; EFORBID for @all/@here by a non-admin of a large group. */
static int w_mentions(sq_store *s, pl_job *j, const char *body, size_t len, int role,
                      int64_t *ids, size_t *n, int *all) {
    int nn;
    pl_mention_name *names = pl_store__mention_names(body, len, &nn, all);
    int rc = PL_STORE_OK;
    *n = 0;
    if (*all && s->large_group > 0 && role != PL_ROLE_ADMIN) {
        pl_conv_state *e = w_conv_state(s, j->conv, &rc);
        if (!e) goto out;
        if (pl_store__large(e, s->large_group)) {
            j->why = "@all and @here need an admin in a large group";
            rc = PL_STORE_EFORBID;
            goto out;
        }
    }
    for (int i = 0; i < nn && *n < PL_STORE_MENTIONS_MAX; i++) {
        int64_t id = 0;
        sqlite3_bind_int64(s->w[W_MEMBER_BY_NAME], 1, j->conv);
        sqlite3_bind_text(s->w[W_MEMBER_BY_NAME], 2, names[i], -1, SQLITE_STATIC);
        int found = w_lookup(s, W_MEMBER_BY_NAME, &id);
        if (found < 0) {
            rc = found;
            goto out;
        }
        if (found && id != j->user) ids[(*n)++] = id;
    }
out:
    free(names);
    return rc;
}

/* The mention rows of the message at seq (invariant 7): the named members,
 * everyone else for @all/@here, the author of the message it replies to. */
static int w_mention_rows(sq_store *s, int64_t conv, int64_t seq, int64_t sender, const int64_t *ids,
                          size_t n, int all, int64_t parent_sender) {
    sqlite3_stmt *st;
    if (all) {
        st = s->w[W_MENTION_ALL];
        sqlite3_bind_int64(st, 1, conv);
        sqlite3_bind_int64(st, 2, seq);
        sqlite3_bind_int64(st, 3, sender);
        if (w_exec(s, W_MENTION_ALL) != PL_STORE_OK) return W_FATAL;
    }
    for (size_t i = 0; i <= n; i++) {
        int64_t u = i < n ? ids[i] : parent_sender;
        if (u <= 0 || u == sender) continue;
        if (i == n && w_member_role(s, conv, u) <= 0) continue;   /* the parent's author left */
        st = s->w[W_MENTION_INSERT];
        sqlite3_bind_int64(st, 1, conv);
        sqlite3_bind_int64(st, 2, u);
        sqlite3_bind_int64(st, 3, seq);
        if (w_exec(s, W_MENTION_INSERT) != PL_STORE_OK) return W_FATAL;
    }
    return PL_STORE_OK;
}

/* A retry: the stored event of j's idempotency key (conv, sender,
 * client_msg_id) into j, as the ack of the original. 1 if there is one, 0
 * if not, W_FATAL. */
static int w_send_stored(sq_store *s, pl_job *j) {
    sqlite3_stmt *st = s->w[W_EVENT_DUP];
    sqlite3_bind_int64(st, 1, j->conv);
    sqlite3_bind_int64(st, 2, j->user);
    sqlite3_bind_text(st, 3, j->client_msg_id, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        sq_dup_event(j, st);
        j->event.body = sq_col_text(st, 3, &j->event.body_len);
    }
    sqlite3_reset(st);
    if (rc == SQLITE_ROW) return 1;
    return rc == SQLITE_DONE ? 0 : w_fatal(s, rc, sq_w_sql[W_EVENT_DUP]);
}

/* A new message: membership and the parent of a reply are checked before
 * the first write; the mention rows are written for the seq the append
 * then takes, and the append is last. Its insert finds a retry (W_DUP);
 * only a message with mention rows looks for one first, so that a retry
 * writes nothing. */
static int w_send_new(sq_store *s, pl_job *j, int64_t now) {
    int role, rc;
    w_target parent = {0};
    if (j->seq > 0) {                                 /* a reply */
        if ((rc = w_target_load(s, j, j->seq, &parent)) != PL_STORE_OK) {
            free(parent.body);
            return rc;
        }
        role = parent.role;
    } else {
        role = w_member_role(s, j->conv, j->user);
        if (role <= 0) return role < 0 ? role : PL_STORE_ENOTFOUND;
    }
    int64_t ids[PL_STORE_MENTIONS_MAX];
    size_t n = 0;
    int all = 0;
    char *data = NULL;
    if ((rc = w_mentions(s, j, j->body, j->body_len, role, ids, &n, &all)) != PL_STORE_OK) goto out;
    int err = PL_STORE_OK;
    pl_conv_state *e = w_conv_state(s, j->conv, &err);
    if (!e) { rc = err; goto out; }
    if ((rc = pl_store__e2ee_send_check(e->e2ee, j->ciphertext, &j->why)) != PL_STORE_OK) goto out;
    if (e->blocked) {                                  /* invariant 14 */
        j->why = "blocked";
        rc = PL_STORE_EFORBID;
        goto out;
    }
    if (n || all || j->seq) {
        if (j->client_msg_id && (rc = w_send_stored(s, j)) != 0) {
            rc = rc == 1 ? PL_STORE_OK : rc;
            goto out;
        }
        if ((rc = w_mention_rows(s, j->conv, e->last_seq + 1, j->user, ids, n, all, parent.sender)) !=
            PL_STORE_OK)
            goto out;
    }
    data = j->ciphertext ? pl_store__data_ciphertext(j->seq, j->ciphertext)
                         : pl_store__data_message(j->seq, ids, n, all);
    data = pl_store__data_attach(data, j->attach_json);   /* media: refs by trigger */
    rc = w_append(s, j, now, j->conv, PL_EV_MESSAGE, j->user, 0, j->seq, j->client_msg_id, j->body,
                  j->body_len, data);
    data = NULL;                                      /* taken over */
    if (rc != PL_STORE_OK) goto out;
    pl_own_add(&s->own, j->conv, j->user, 1);
    if (j->seq > 0) {
        pl_annot a = {.reply_seq = j->seq, .reply_sender = parent.sender, .reply_body = parent.body,
                      .reply_len = parent.body_len};
        j->event.annot = pl_store__annot(&a);
    }
out:
    free(data);
    free(parent.body);
    return rc;
}

/* The hot path: no savepoint. A retry gets the stored event, also when a
 * check would fail now (a sender removed after the original committed
 * still gets its ack). */
static int job_send(sq_store *s, pl_job *j, int64_t now) {
    if (!j->body || j->body_len > INT_MAX || j->seq < 0) return PL_STORE_EINVAL;
    int rc = w_send_new(s, j, now);
    if (rc == PL_STORE_OK || rc == W_FATAL || !j->client_msg_id) return rc;
    const char *why = j->why;
    reset_outputs(j);
    int found = w_send_stored(s, j);
    if (found) return found == 1 ? PL_STORE_OK : found;
    if (rc == W_DUP) {                   /* the insert saw the key, the lookup not */
        pl_log(PL_LOG_ERROR, 0, "store: idempotency key conflict without its event", "\"conv\":%lld",
               (long long)j->conv);
        return PL_STORE_EUNAVAIL;
    }
    j->why = why;
    return rc;
}

typedef int (*job_fn)(sq_store *s, pl_job *j, int64_t now);

static void reset_outputs(pl_job *j) {
    pl_job_release(j);
    j->result = PL_STORE_OK;
    j->out_id = 0;
    j->created = 0;
    j->dup = 0;
    j->out_delivered = j->out_read = j->out_unread = j->out_unread_mentions = j->out_members = j->out_peer = 0;
    j->out_batch = 0;
    j->why = NULL;
    memset(&j->event, 0, sizeof j->event);
}

/* Runs a multi-statement job inside a savepoint, so that a failure after its
 * first write (a constraint the checks did not foresee) leaves nothing. The
 * conversation map is not rolled back: these jobs move it only in their last
 * statements (member count just before the append, which is last). */
static int w_in_savepoint(sq_store *s, pl_job *j, int64_t now, job_fn fn) {
    if (w_exec(s, W_SAVEPOINT) != PL_STORE_OK) return W_FATAL;
    int rc = fn(s, j, now);
    if (rc == W_FATAL) return W_FATAL;
    if (rc != PL_STORE_OK) {
        /* a constraint no check foresaw, unless the job named it (why) */
        int unforeseen = rc == PL_STORE_ECONFLICT && !j->why;
        if (unforeseen)
            pl_log(PL_LOG_ERROR, 0, "store: unexpected constraint violation", "\"op\":%d",
                   (int)j->op);
        const char *why = j->why;
        reset_outputs(j);
        j->why = why;
        if (w_exec(s, W_ROLLBACK_TO) != PL_STORE_OK) return W_FATAL;
        if (unforeseen) rc = PL_STORE_EUNAVAIL;
    }
    if (w_exec(s, W_RELEASE) != PL_STORE_OK) return W_FATAL;
    return rc;
}

static int w_run_job_op(sq_store *s, pl_job *j, int64_t now) {
    switch (j->op) {
    case PL_JOB_MESSAGE_SEND:  return job_send(s, j, now);
    case PL_JOB_USER_CREATE:   return sq_job_user_create(s, j, now);
    case PL_JOB_LOGIN_CREATE:  return sq_job_login_create(s, j, now);
    case PL_JOB_LOGIN_ROTATE:  return sq_job_login_rotate(s, j, now);
    case PL_JOB_LOGIN_REVOKE:  return sq_job_login_revoke(s, j, now);
    case PL_JOB_DIRECT_OPEN:   return w_in_savepoint(s, j, now, sq_job_direct_open);
    case PL_JOB_GROUP_CREATE:  return w_in_savepoint(s, j, now, sq_job_group_create);
    case PL_JOB_MEMBER_ADD:    return w_in_savepoint(s, j, now, sq_job_member_add);
    case PL_JOB_MEMBER_REMOVE: return w_in_savepoint(s, j, now, sq_job_member_remove);
    case PL_JOB_MEMBER_LEAVE:  return w_in_savepoint(s, j, now, sq_job_member_leave);
    case PL_JOB_MEMBER_ROLE:   return w_in_savepoint(s, j, now, sq_job_member_role);
    case PL_JOB_MESSAGE_EDIT:  return w_in_savepoint(s, j, now, sq_job_edit);
    case PL_JOB_MESSAGE_DELETE: return w_in_savepoint(s, j, now, sq_job_delete);
    case PL_JOB_REACTION:      return w_in_savepoint(s, j, now, sq_job_reaction);
    case PL_JOB_PIN:           return w_in_savepoint(s, j, now, sq_job_pin);
    case PL_JOB_NOTIFY_SET:    return sq_job_notify_set(s, j, now);
    case PL_JOB_RECEIPT:       return sq_job_receipt(s, j, now);
    case PL_JOB_LAST_SEEN:     return sq_job_last_seen(s, j, now);
    case PL_JOB_OUTBOX_ACK:
    case PL_JOB_OUTBOX_TAKEOVER: return PL_STORE_OK;      /* no outbox in embedded mode */
    case PL_JOB_KEYS_UPLOAD:                               /* store_sqlite_keys.c */
    case PL_JOB_KEYS_DELETE:
    case PL_JOB_KEYS_CLAIM:
    case PL_JOB_CONV_E2EE:
    case PL_JOB_DEVICES_ANNOUNCE: return w_in_savepoint(s, j, now, sq_job_e2ee);
    case PL_JOB_MEDIA_CREATE:
    case PL_JOB_MEDIA_THUMB:
    case PL_JOB_MEDIA_GC:      return w_in_savepoint(s, j, now, sq_job_media);
    case PL_JOB_PUSH_REGISTER:                             /* store_sqlite_push.c */
    case PL_JOB_PUSH_UNREGISTER:
    case PL_JOB_PUSH_CLAIM:
    case PL_JOB_PUSH_DONE:     return w_in_savepoint(s, j, now, sq_job_push);
    case PL_JOB_WORKSPACE_CREATE:                          /* store_sqlite_ws.c */
    case PL_JOB_WORKSPACE_ADD:
    case PL_JOB_WORKSPACE_REMOVE:
    case PL_JOB_WORKSPACE_ROLE:
    case PL_JOB_CHANNEL_CREATE:
    case PL_JOB_CHANNEL_JOIN:  return w_in_savepoint(s, j, now, sq_job_ws);
    case PL_JOB_REPORT:                                    /* store_sqlite_reports.c */
    case PL_JOB_REPORT_RESOLVE:
    case PL_JOB_BLOCK:         return w_in_savepoint(s, j, now, sq_job_report);
    case PL_JOB_RETENTION_SET:                             /* store_sqlite_life.c */
    case PL_JOB_HOLD_SET:
    case PL_JOB_RETENTION_PURGE:
    case PL_JOB_ACCOUNT_DELETE: return w_in_savepoint(s, j, now, sq_job_life);
    default:                   return PL_STORE_EINVAL;
    }
}

static int w_run_job(sq_store *s, pl_job *j, int64_t now) {
    if (w_keeps_members(j->op)) return w_run_job_op(s, j, now);
    s->roles_off = 1;                    /* the role cache (above) */
    int rc = w_run_job_op(s, j, now);
    s->roles_off = 0;
    roles_clear(s);
    return rc;
}

/* ---- for the other writer files (sqlite_int.h) -------------------------- */

int sq_w_fatal(sq_store *s, int rc, const char *what) { return w_fatal(s, rc, what); }
int sq_w_member_role(sq_store *s, int64_t conv, int64_t user) { return w_member_role(s, conv, user); }
pl_conv_state *sq_w_conv_state(sq_store *s, int64_t conv, int *err) { return w_conv_state(s, conv, err); }
int sq_w_append(sq_store *s, pl_job *j, int64_t now, int64_t conv, int kind, int64_t sender,
                int64_t subject, char *data) {
    return w_append(s, j, now, conv, kind, sender, subject, 0, NULL, NULL, 0, data);
}
int sq_w_target_load(sq_store *s, pl_job *j, int64_t seq, sq_target *t) { return w_target_load(s, j, seq, t); }
int sq_w_append_full(sq_store *s, pl_job *j, int64_t now, int64_t conv, int kind, int64_t sender,
                     int64_t subject, int64_t ref, const char *cmid, const char *body, size_t body_len,
                     char *data) {
    return w_append(s, j, now, conv, kind, sender, subject, ref, cmid, body, body_len, data);
}
int sq_w_mentions(sq_store *s, pl_job *j, const char *body, size_t len, int role, int64_t *ids, size_t *n,
                  int *all) {
    return w_mentions(s, j, body, len, role, ids, n, all);
}
int sq_w_mention_rows(sq_store *s, int64_t conv, int64_t seq, int64_t sender, const int64_t *ids, size_t n,
                      int all, int64_t parent_sender) {
    return w_mention_rows(s, conv, seq, sender, ids, n, all, parent_sender);
}

/* Writes the conversation state and own_unread deltas the batch moved. */
static int w_flush(sq_store *s) {
    sqlite3_stmt *st = s->w[W_CONV_UPDATE];
    for (size_t i = 0; i < s->ndirty; i++) {
        pl_conv_state *e = pl_conv_map_find(&s->convs, s->dirty[i]);
        sqlite3_bind_int64(st, 1, e->last_seq);
        sqlite3_bind_int64(st, 2, e->last_ts);
        sqlite3_bind_int64(st, 3, e->msg_count);
        sqlite3_bind_int64(st, 4, e->member_count);
        sqlite3_bind_int64(st, 5, e->conv);
        if (w_exec(s, W_CONV_UPDATE) != PL_STORE_OK) return W_FATAL;
        e->dirty = 0;
    }
    s->ndirty = 0;
    st = s->w[W_OWN_UNREAD_ADD];
    for (size_t i = 0; i < s->own.cap && s->own.len; i++) {
        pl_own_ent *o = &s->own.tab[i];
        if (!o->conv || !o->delta) continue;
        sqlite3_bind_int64(st, 1, o->delta);
        sqlite3_bind_int64(st, 2, o->conv);
        sqlite3_bind_int64(st, 3, o->user);
        if (w_exec(s, W_OWN_UNREAD_ADD) != PL_STORE_OK) return W_FATAL;
    }
    pl_own_clear(&s->own);
    return PL_STORE_OK;
}

/* After a batch that deleted messages: their bodies are overwritten in the
 * database pages (secure_delete), but older page images may still sit in
 * the WAL; a TRUNCATE checkpoint copies the pages back and empties the WAL
 * file, so the erased text is gone from disk too (invariant 6). Best
 * effort: readers may hold it up (busy timeout), a later delete retries. */
static void w_checkpoint_erased(sq_store *s) {
    s->erased = 0;
    int rc = sqlite3_wal_checkpoint_v2(s->wdb, NULL, SQLITE_CHECKPOINT_TRUNCATE, NULL, NULL);
    if (rc != SQLITE_OK)
        pl_log(PL_LOG_WARN, 0, "store: checkpoint after a delete did not complete", "\"rc\":%d", rc);
}

/* The search queue's rows the indexer is done with, deleted inside the
 * batch once SQ_PRUNE_ROWS of them are (store_sqlite_index.c), a bounded
 * step per batch: the indexer's watermark becomes durable in jumps (one
 * per search.db checkpoint), and deleting a whole jump in one batch
 * stalled that batch's acks (docs/benchmarks.md "Issue 11: the queue
 * pruned in steps"). A prune, once started, goes on to the watermark it
 * started at; its step is at least twice the batch, so the queue, which
 * grows by at most one row per job, is pruned faster than it grows. */
static int w_prune_queue(sq_store *s, size_t n, int64_t *upto) {
    *upto = s->fts_pruned;
    if (s->fts_prune_to <= s->fts_pruned) {             /* none under way: start one? */
        int64_t done = sq_index_done(s);
        if (done - s->fts_pruned < SQ_PRUNE_ROWS) return PL_STORE_OK;
        s->fts_prune_to = done;
    }
    int64_t done = s->fts_prune_to, step = (int64_t)n * SQ_PRUNE_PER_JOB;
    if (step < SQ_PRUNE_STEP) step = SQ_PRUNE_STEP;
    if (done > s->fts_pruned + step) done = s->fts_pruned + step;
    sqlite3_bind_int64(s->w[W_FTS_PRUNE], 1, done);
    if (w_exec(s, W_FTS_PRUNE) != PL_STORE_OK) return W_FATAL;
    *upto = done;
    return PL_STORE_OK;
}

static void fail_all(pl_job **jobs, size_t n) {
    for (size_t i = 0; i < n; i++) {
        reset_outputs(jobs[i]);
        jobs[i]->result = PL_STORE_EUNAVAIL;
    }
}

/* Runs one batch in one transaction and sets every job's result
 * (pipeline.h: the writer thread's run_batch). */
void sq_run_batch(void *wctx, pl_job **jobs, size_t n) {
    sq_store *s = wctx;
    int64_t now = pl_now_ms();
    if (now < s->last_ts) now = s->last_ts;      /* ts never goes backwards */
    s->last_ts = now;
    for (size_t i = 0; i < n; i++) reset_outputs(jobs[i]);
    if (s->broken) { fail_all(jobs, n); return; }
    int64_t t0 = pl_mono_us();

    /* BEGIN failing (a checkpoint holding the lock past the timeout) wrote
     * nothing: the batch fails but the store is not broken. */
    if (w_exec(s, W_BEGIN) != PL_STORE_OK) {
        pl_log(PL_LOG_ERROR, 0, "store: cannot begin a transaction", "\"rc\":%d,\"err\":\"%s\"",
               s->fatal_rc, sqlite3_errstr(s->fatal_rc));
        if (!sqlite3_get_autocommit(s->wdb)) w_exec(s, W_ROLLBACK);
        fail_all(jobs, n);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        int rc = w_run_job(s, jobs[i], now);
        if (rc == W_FATAL) goto fail;
        if (rc != PL_STORE_OK) {
            const char *why = jobs[i]->why;
            reset_outputs(jobs[i]);
            jobs[i]->why = why;
        }
        jobs[i]->result = rc;
    }
    int64_t pruned;
    if (w_flush(s) != PL_STORE_OK || w_prune_queue(s, n, &pruned) != PL_STORE_OK) goto fail;
    int inject = __atomic_load_n(&s->fail_commits, __ATOMIC_SEQ_CST);
    if (inject > 0) {
        __atomic_fetch_sub(&s->fail_commits, 1, __ATOMIC_SEQ_CST);
        w_fatal(s, SQLITE_IOERR_FSYNC, "COMMIT (fault hook)");
        goto fail;
    }
    /* parley.db unlinked or replaced under us (its directory removed, say):
     * the commit would go to a file no restart finds (audit E4). One stat. */
    int moved = 0;
    if (sqlite3_file_control(s->wdb, "main", SQLITE_FCNTL_HAS_MOVED, &moved) != SQLITE_OK || moved) {
        pl_log(PL_LOG_ERROR, 0, "store: parley.db was removed or replaced while open: writes stopped; "
               "copy its open files back before stopping parleyd (README, Backups)", NULL);
        w_fatal(s, SQLITE_READONLY_DBMOVED, "COMMIT (the database file is gone)");
        goto fail;
    }
    if (w_exec(s, W_COMMIT) == PL_STORE_OK) {
        pl_count(&pl_m_commit_batches, 1);
        pl_count(&pl_m_commit_jobs, n);
        pl_observe(&pl_m_commit_batch_size, (double)n);
        pl_observe(&pl_m_commit_seconds, (double)(pl_mono_us() - t0) / 1e6);
        s->fts_pruned = pruned;
        if (s->erased) w_checkpoint_erased(s);
        int queued = 0;                      /* the search queue got rows: wake the indexer */
        for (size_t i = 0; i < n && !queued; i++)
            queued = jobs[i]->result == PL_STORE_OK && !jobs[i]->dup &&
                     (jobs[i]->op == PL_JOB_MESSAGE_SEND || jobs[i]->op == PL_JOB_MESSAGE_EDIT ||
                      jobs[i]->op == PL_JOB_MESSAGE_DELETE);
        if (queued) sq_index_kick(s);
        return;
    }

fail:
    pl_count(&pl_m_commit_failures, 1);
    /* The database state is unknown from here on (invariant 5). */
    pl_log(PL_LOG_ERROR, 0, "store: batch failed, no longer accepting writes",
           "\"rc\":%d,\"err\":\"%s\",\"step\":\"%s\"", s->fatal_rc,
           sqlite3_errstr(s->fatal_rc), s->fatal_what ? s->fatal_what : "?");
    if (!sqlite3_get_autocommit(s->wdb)) {
        int rc = sqlite3_step(s->w[W_ROLLBACK]);
        sqlite3_reset(s->w[W_ROLLBACK]);
        (void)rc;
    }
    conv_clear(s);
    roles_clear(s);
    pl_own_clear(&s->own);
    s->erased = 0;
    s->broken = 1;
    __atomic_store_n(&s->is_broken, 1, __ATOMIC_RELAXED);
    fail_all(jobs, n);
}
