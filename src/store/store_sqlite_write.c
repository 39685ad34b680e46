/* store_sqlite_write.c — the SQLite writer: every write job, run in batches
 * on the writer thread (see store_sqlite.c for the pipeline and its
 * invariants, which this file keeps).
 *
 * Owns: the jobs' SQL, the conversation map (last_seq, msg_count,
 * member_count of conversations touched since start) and the own_unread
 * deltas of the open transaction.
 */
#include "sqlite_int.h"

#include <limits.h>
#include <stdio.h>
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

/* Records why the batch must fail and returns W_FATAL. */
static int w_fatal(sq_store *s, int rc, const char *what) {
    s->fatal_rc = rc;
    s->fatal_what = what;
    return W_FATAL;
}

static int w_exec(sq_store *s, int id) {
    int rc = sqlite3_step(s->w[id]);
    sqlite3_reset(s->w[id]);
    return rc == SQLITE_DONE ? PL_STORE_OK : w_fatal(s, rc, sq_w_sql[id]);
}

/* Steps a bound one-row lookup: 1 with *out = column 0 when a row exists,
 * 0 when none, W_FATAL on error. Resets the statement. */
static int w_lookup(sq_store *s, int id, int64_t *out) {
    sqlite3_stmt *st = s->w[id];
    int rc = sqlite3_step(st);
    int found = rc == SQLITE_ROW;
    if (found && out) *out = sqlite3_column_int64(st, 0);
    sqlite3_reset(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) return w_fatal(s, rc, sq_w_sql[id]);
    return found;
}

/* Steps a bound write: PL_STORE_OK, ECONFLICT on a constraint (the statement
 * was undone by SQLite, the transaction goes on), W_FATAL otherwise. */
static int w_write(sq_store *s, int id) {
    int rc = sqlite3_step(s->w[id]);
    sqlite3_reset(s->w[id]);
    if (rc == SQLITE_DONE) return PL_STORE_OK;
    if ((rc & 0xff) == SQLITE_CONSTRAINT) return PL_STORE_ECONFLICT;
    return w_fatal(s, rc, sq_w_sql[id]);
}

static int w_user_exists(sq_store *s, int64_t user) {
    sqlite3_bind_int64(s->w[W_USER_EXISTS], 1, user);
    return w_lookup(s, W_USER_EXISTS, NULL);
}

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

/* Kind of conv, 0 if it does not exist, or W_FATAL. */
static int w_conv_kind(sq_store *s, int64_t conv) {
    int64_t kind = 0;
    sqlite3_bind_int64(s->w[W_CONV_KIND], 1, conv);
    int rc = w_lookup(s, W_CONV_KIND, &kind);
    return rc < 0 ? rc : rc ? (int)kind : 0;
}

static int w_member_insert(sq_store *s, int64_t conv, int64_t user, int role, int64_t joined,
                           int64_t joined_seq) {
    sqlite3_stmt *st = s->w[W_MEMBER_INSERT];
    sqlite3_bind_int64(st, 1, conv);
    sqlite3_bind_int64(st, 2, user);
    sqlite3_bind_int(st, 3, role);
    sqlite3_bind_int64(st, 4, joined);
    sqlite3_bind_int64(st, 5, joined_seq);
    return w_write(s, W_MEMBER_INSERT);
}

/* Inserts a conversation row; *conv gets its id. */
static int w_conv_insert(sq_store *s, int kind, const char *title, const char *key,
                         int64_t next_join, int64_t nmembers, int64_t now, int64_t workspace,
                         int is_private, int64_t *conv) {
    sqlite3_stmt *st = s->w[W_CONV_INSERT];
    sqlite3_bind_int(st, 1, kind);
    if (title) sqlite3_bind_text(st, 2, title, -1, SQLITE_STATIC);
    else sqlite3_bind_null(st, 2);
    if (key) sqlite3_bind_text(st, 3, key, -1, SQLITE_STATIC);
    else sqlite3_bind_null(st, 3);
    sqlite3_bind_int64(st, 4, next_join);
    sqlite3_bind_int64(st, 5, now);
    sqlite3_bind_int64(st, 6, nmembers);
    sqlite3_bind_int64(st, 7, workspace);
    sqlite3_bind_int(st, 8, is_private);
    int rc = w_write(s, W_CONV_INSERT);
    if (rc == PL_STORE_OK) *conv = sqlite3_last_insert_rowid(s->wdb);
    return rc;
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
static int w_member_count(sq_store *s, int64_t conv, int64_t d) {
    int err = PL_STORE_OK;
    pl_conv_state *e = w_conv_state(s, conv, &err);
    if (!e) return err;
    e->member_count += d;
    mark_dirty(s, e);
    return PL_STORE_OK;
}

/* ---- jobs -----------------------------------------------------------------
 * Each returns PL_STORE_OK or a PL_STORE_E* for the job alone, or W_FATAL
 * when the batch must fail. See invariant 4 for what a failing job wrote. */

static int job_user_create(sq_store *s, pl_job *j, int64_t now) {
    if (!j->username || !j->pwhash) return PL_STORE_EINVAL;
    sqlite3_stmt *st = s->w[W_USER_INSERT];
    sqlite3_bind_text(st, 1, j->username, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, j->pwhash, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, now);
    int rc = w_write(s, W_USER_INSERT);     /* UNIQUE(username) -> ECONFLICT */
    if (rc == PL_STORE_OK) j->out_id = sqlite3_last_insert_rowid(s->wdb);
    return rc;
}

static int job_login_create(sq_store *s, pl_job *j, int64_t now) {
    int rc = w_user_exists(s, j->user);
    if (rc <= 0) return rc < 0 ? rc : PL_STORE_ENOTFOUND;
    sqlite3_stmt *st = s->w[W_LOGIN_INSERT];
    sqlite3_bind_int64(st, 1, j->user);
    sqlite3_bind_blob(st, 2, j->hash, sizeof j->hash, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, j->expires);
    sqlite3_bind_int64(st, 4, now);
    rc = w_write(s, W_LOGIN_INSERT);
    if (rc == PL_STORE_OK) {
        j->out_id = sqlite3_last_insert_rowid(s->wdb);
        j->login_out.created = now;            /* its access tokens' stamp */
    }
    return rc;
}

/* Rotates only a live login presenting its current hash. */
static int job_login_rotate(sq_store *s, pl_job *j, int64_t now) {
    sqlite3_stmt *st = s->w[W_LOGIN_ROTATE];
    sqlite3_bind_blob(st, 1, j->hash2, sizeof j->hash2, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, j->expires);
    sqlite3_bind_int64(st, 3, j->id);
    sqlite3_bind_int64(st, 4, now);
    sqlite3_bind_blob(st, 5, j->hash, sizeof j->hash, SQLITE_STATIC);
    int rc = w_write(s, W_LOGIN_ROTATE);
    if (rc != PL_STORE_OK) return rc;
    if (sqlite3_changes(s->wdb) == 0) return PL_STORE_ENOTFOUND;
    j->out_id = j->id;
    return PL_STORE_OK;
}

static int job_login_revoke(sq_store *s, pl_job *j, int64_t now) {
    sqlite3_bind_int64(s->w[W_LOGIN_REVOKE], 1, j->id);
    int rc = w_write(s, W_LOGIN_REVOKE);
    if (rc != PL_STORE_OK) return rc;
    if (sqlite3_changes(s->wdb) == 0) return PL_STORE_ENOTFOUND;
    if ((rc = sq_push_forget_login(s, j->id)) != PL_STORE_OK) return rc;
    j->out_id = j->id;
    return PL_STORE_OK;
}

/* ---- message features (store.h invariants 6 and 7) ------------------------ */

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
        if (e->member_count > s->large_group) {
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

static int job_edit(sq_store *s, pl_job *j, int64_t now) {
    if (!j->body || j->body_len > INT_MAX) return PL_STORE_EINVAL;
    w_target t;
    int rc = w_target_load(s, j, j->seq, &t);
    char *data = NULL, *edata = NULL;
    if (rc != PL_STORE_OK) goto out;
    if (t.sender != j->user) { j->why = "not your message"; rc = PL_STORE_EFORBID; goto out; }
    int e2err = PL_STORE_OK;                          /* invariant 9: no edits */
    pl_conv_state *ce = w_conv_state(s, j->conv, &e2err);
    if (!ce) { rc = e2err; goto out; }
    if (ce->e2ee || ce->blocked) {
        j->why = ce->e2ee ? "messages of an end-to-end encrypted conversation cannot be edited" : "blocked";
        rc = PL_STORE_EFORBID;
        goto out;
    }
    if (s->edit_window_ms > 0 && now - t.ts > s->edit_window_ms) {
        j->why = "edit window passed";
        rc = PL_STORE_EFORBID;
        goto out;
    }
    if (t.body && t.body_len == j->body_len && memcmp(t.body, j->body, j->body_len) == 0)
        goto out;                                     /* unchanged: no event */
    int64_t ids[PL_STORE_MENTIONS_MAX];
    size_t n = 0;
    int all = 0;
    if ((rc = w_mentions(s, j, j->body, j->body_len, t.role, ids, &n, &all)) != PL_STORE_OK) goto out;
    int64_t parent_sender = 0;
    if (t.ref > 0) {                                  /* keep the reply-to-me row */
        w_target p;
        int64_t saved = j->seq;
        int prc = w_target_load(s, j, t.ref, &p);
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
    if ((rc = w_mention_rows(s, j->conv, j->seq, j->user, ids, n, all, parent_sender)) != PL_STORE_OK)
        goto out;
    edata = pl_store__data_edit(j->seq, ids, n, all);
    rc = w_append(s, j, now, j->conv, PL_EV_EDIT, j->user, 0, j->seq, NULL, j->body, j->body_len, edata);
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

/* Erases the message at j->seq (invariant 6) with a DELETE event. */
static int job_delete(sq_store *s, pl_job *j, int64_t now) {
    w_target t;
    int rc = w_target_load(s, j, j->seq, &t);
    free(t.body);
    if (rc != PL_STORE_OK) return rc;
    if (t.sender != j->user) {
        int kind = w_conv_kind(s, j->conv);
        if (kind < 0) return kind;
        if (kind == PL_CONV_DIRECT || t.role != PL_ROLE_ADMIN) {
            j->why = "not your message";
            return PL_STORE_EFORBID;
        }
    }
    if ((rc = w_erase(s, j->conv, j->seq, now)) != PL_STORE_OK) return rc;
    rc = w_append(s, j, now, j->conv, PL_EV_DELETE, j->user, 0, j->seq, NULL, NULL, 0,
                  pl_store__data_target(j->seq, NULL));
    if (rc == PL_STORE_OK) j->created = 1;
    return rc;
}

static int job_reaction(sq_store *s, pl_job *j, int64_t now) {
    w_target t;
    int rc = w_target_load(s, j, j->seq, &t);
    free(t.body);
    if (rc != PL_STORE_OK) return rc;
    if (!pl_store__emoji_ok(j->emoji)) { j->why = "bad emoji"; return PL_STORE_EINVAL; }
    pl_conv_state *ce = w_conv_state(s, j->conv, &rc);
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
        pl_conv_state *e = w_conv_state(s, j->conv, &err);
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
    rc = w_append(s, j, now, j->conv, PL_EV_REACTION, j->user, 0, j->seq, NULL, NULL, 0,
                  pl_store__data_reaction(j->seq, j->emoji, remove, count));
    if (rc == PL_STORE_OK) j->created = 1;
    return rc;
}

static int job_pin(sq_store *s, pl_job *j, int64_t now) {
    w_target t;
    int rc = w_target_load(s, j, j->seq, &t);
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
    rc = w_append(s, j, now, j->conv, PL_EV_PIN, j->user, 0, j->seq, NULL, NULL, 0,
                  pl_store__data_target(j->seq, unpin ? "unpin" : "pin"));
    if (rc == PL_STORE_OK) j->created = 1;
    return rc;
}

static int job_notify_set(sq_store *s, pl_job *j, int64_t now) {
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

static int job_direct_open(sq_store *s, pl_job *j, int64_t now) {
    if (j->user == j->peer) return PL_STORE_EINVAL;
    int rc = w_user_exists(s, j->user);
    if (rc <= 0) return rc < 0 ? rc : PL_STORE_ENOTFOUND;
    rc = w_user_exists(s, j->peer);
    if (rc <= 0) return rc < 0 ? rc : PL_STORE_ENOTFOUND;

    char key[48];
    int64_t lo = j->user < j->peer ? j->user : j->peer;
    int64_t hi = j->user < j->peer ? j->peer : j->user;
    snprintf(key, sizeof key, "%lld:%lld", (long long)lo, (long long)hi);
    int64_t conv = 0;
    sqlite3_bind_text(s->w[W_CONV_BY_KEY], 1, key, -1, SQLITE_STATIC);
    rc = w_lookup(s, W_CONV_BY_KEY, &conv);
    if (rc < 0) return rc;
    if (rc) {                                    /* the pair already has one */
        j->out_id = conv;
        return PL_STORE_OK;
    }
    if ((rc = sq_blocked_pair(s, j->user, j->peer)) != 0) {   /* invariant 14 */
        if (rc < 0) return rc;
        j->why = "blocked";
        return PL_STORE_EFORBID;
    }
    if ((rc = w_conv_insert(s, PL_CONV_DIRECT, NULL, key, 2, 2, now, 0, 0, &conv)) ||
        (rc = w_member_insert(s, conv, j->user, PL_ROLE_MEMBER, 0, 1)) ||
        (rc = w_member_insert(s, conv, j->peer, PL_ROLE_MEMBER, 1, 1)))
        return rc;
    char data[96];
    snprintf(data, sizeof data, "{\"kind\":\"direct\",\"members\":[%lld,%lld]}",
             (long long)j->user, (long long)j->peer);
    rc = w_append(s, j, now, conv, PL_EV_CREATED, j->user, 0, 0, NULL, NULL, 0, pl_strdup(data));
    if (rc != PL_STORE_OK) return rc;
    j->out_id = conv;
    j->created = 1;
    return PL_STORE_OK;
}

/* A group, or (workspace != 0) a channel whose checks the caller made
 * (store_sqlite_ws.c). */
static int w_group_create(sq_store *s, pl_job *j, int64_t now, int64_t workspace, int is_private) {
    if (!j->title || (j->nmembers && !j->members)) return PL_STORE_EINVAL;
    int rc = w_user_exists(s, j->user);
    if (rc <= 0) return rc < 0 ? rc : PL_STORE_ENOTFOUND;

    /* the other members, deduplicated in first-seen order, creator skipped */
    int64_t *others = pl_malloc((j->nmembers ? j->nmembers : 1) * sizeof *others);
    size_t n = 0;
    char *data = NULL;
    rc = PL_STORE_OK;
    for (size_t i = 0; i < j->nmembers; i++) {
        int64_t u = j->members[i];
        if (u == j->user) continue;
        if (u <= 0) { rc = PL_STORE_ENOTFOUND; goto out; }
        int seen = 0;
        for (size_t k = 0; k < n && !seen; k++) seen = others[k] == u;
        if (seen) continue;
        int ex = w_user_exists(s, u);
        if (ex <= 0) { rc = ex < 0 ? ex : PL_STORE_ENOTFOUND; goto out; }
        others[n++] = u;
    }
    data = workspace ? pl_store__data_channel(j->title, j->user, others, n, workspace, is_private)
                     : pl_store__data_group(j->title, j->user, others, n);
    if (!data) { rc = PL_STORE_EINVAL; goto out; }

    int64_t conv = 0;
    if ((rc = w_conv_insert(s, workspace ? PL_CONV_CHANNEL : PL_CONV_GROUP, j->title, NULL, (int64_t)n + 1,
                            (int64_t)n + 1, now, workspace, is_private, &conv)) ||
        (rc = w_member_insert(s, conv, j->user, PL_ROLE_ADMIN, 0, 1)))
        goto out;
    for (size_t i = 0; i < n; i++)
        if ((rc = w_member_insert(s, conv, others[i], PL_ROLE_MEMBER, (int64_t)i + 1, 1))) goto out;
    rc = w_append(s, j, now, conv, PL_EV_CREATED, j->user, 0, 0, NULL, NULL, 0, data);
    data = NULL;                                          /* taken over */
    if (rc == PL_STORE_OK) j->out_id = conv;
out:
    free(data);
    free(others);
    return rc;
}

static int job_group_create(sq_store *s, pl_job *j, int64_t now) { return w_group_create(s, j, now, 0, 0); }

/* After a member left or was removed: if members remain and none is an
 * admin, the earliest-joined one becomes admin (*promoted gets it, else 0;
 * the departure's event says so: pl_store__data_departure). */
static int w_promote_if_needed(sq_store *s, int64_t conv, int64_t *promoted) {
    if (promoted) *promoted = 0;
    sqlite3_bind_int64(s->w[W_MEMBER_HAS_ADMIN], 1, conv);
    int rc = w_lookup(s, W_MEMBER_HAS_ADMIN, NULL);
    if (rc != 0) return rc < 0 ? rc : PL_STORE_OK;
    int64_t oldest = 0;
    sqlite3_bind_int64(s->w[W_MEMBER_OLDEST], 1, conv);
    rc = w_lookup(s, W_MEMBER_OLDEST, &oldest);
    if (rc <= 0) return rc;                                 /* nobody left */
    sqlite3_stmt *st = s->w[W_MEMBER_SET_ROLE];
    sqlite3_bind_int(st, 1, PL_ROLE_ADMIN);
    sqlite3_bind_int64(st, 2, conv);
    sqlite3_bind_int64(st, 3, oldest);
    if ((rc = w_write(s, W_MEMBER_SET_ROLE)) == PL_STORE_OK && promoted) *promoted = oldest;
    return rc;
}

static int w_member_delete(sq_store *s, int64_t conv, int64_t user) {
    pl_own_ent *o = pl_own_find(&s->own, conv, user);      /* a later re-join starts from 0 */
    if (o) o->delta = 0;
    sqlite3_bind_int64(s->w[W_MEMBER_DELETE], 1, conv);
    sqlite3_bind_int64(s->w[W_MEMBER_DELETE], 2, user);
    return w_write(s, W_MEMBER_DELETE);
}

/* Checks shared by add and remove: conv exists and the actor is a member
 * (else ENOTFOUND: non-members cannot tell), it is a group or a channel
 * (EINVAL), the actor is an admin (EFORBID). */
static int w_check_admin(sq_store *s, pl_job *j) {
    int kind = w_conv_kind(s, j->conv);
    if (kind <= 0) return kind < 0 ? kind : PL_STORE_ENOTFOUND;
    int role = w_member_role(s, j->conv, j->user);
    if (role <= 0) return role < 0 ? role : PL_STORE_ENOTFOUND;
    if (kind == PL_CONV_DIRECT) return PL_STORE_EINVAL;
    if (role != PL_ROLE_ADMIN) return PL_STORE_EFORBID;
    return PL_STORE_OK;
}

/* Makes peer a member of conv with a MEMBER_ADDED event by actor (no-op
 * when it is one). */
static int w_member_join(sq_store *s, pl_job *j, int64_t now, int64_t conv, int64_t actor, int64_t peer) {
    int rc = w_member_role(s, conv, peer);
    if (rc != PL_ROLE_NONE) return rc < 0 ? rc : PL_STORE_OK;   /* no-op */
    int err = PL_STORE_OK;
    pl_conv_state *e = w_conv_state(s, conv, &err);
    if (!e) return err;
    int64_t joined_seq = e->last_seq + 1;        /* the member_added event's */
    int64_t joined = 0;
    sqlite3_bind_int64(s->w[W_CONV_NEXT_JOIN], 1, conv);
    rc = w_lookup(s, W_CONV_NEXT_JOIN, &joined);
    if (rc <= 0) return rc < 0 ? rc : PL_STORE_ENOTFOUND;
    if ((rc = w_member_insert(s, conv, peer, PL_ROLE_MEMBER, joined, joined_seq)) ||
        (rc = w_member_count(s, conv, 1)))
        return rc;
    return w_append(s, j, now, conv, PL_EV_MEMBER_ADDED, actor, peer, 0, NULL, NULL, 0, pl_store__data_user(peer));
}

static int job_member_add(sq_store *s, pl_job *j, int64_t now) {
    int rc = w_check_admin(s, j);
    if (rc != PL_STORE_OK) return rc;
    /* the workspace first: to a channel an id no user has is "not in the
     * workspace" (403), as when the channel is created with it */
    if ((rc = sq_ws_channel_admits(s, j->conv, j->peer)) != PL_STORE_OK) {
        if (rc == PL_STORE_EFORBID) j->why = "not in the workspace";
        return rc;
    }
    rc = w_user_exists(s, j->peer);
    if (rc <= 0) return rc < 0 ? rc : PL_STORE_ENOTFOUND;
    j->out_id = j->conv;
    return w_member_join(s, j, now, j->conv, j->user, j->peer);
}

/* EINVAL (why) for a workspace's "general": its members leave it only
 * with the workspace (store.h invariant 11). */
static int w_not_general(sq_store *s, pl_job *j) {
    int rc = sq_ws_is_general(s, j->conv);
    if (rc <= 0) return rc;
    j->why = "everyone in the workspace is in #general";
    return PL_STORE_EINVAL;
}

static int job_member_remove(sq_store *s, pl_job *j, int64_t now) {
    int rc = j->flags & PL_JOB_EVICT ? sq_ws_evictable(s, j->conv, j->peer, j->user, &j->why) : w_check_admin(s, j);
    if (rc == PL_STORE_OK && !(j->flags & PL_JOB_EVICT)) rc = w_not_general(s, j);
    if (rc != PL_STORE_OK) return rc;
    rc = w_member_role(s, j->conv, j->peer);
    if (rc <= 0) return rc < 0 ? rc : PL_STORE_ENOTFOUND;
    int64_t promoted = 0;
    if ((rc = w_member_delete(s, j->conv, j->peer)) ||
        (rc = w_promote_if_needed(s, j->conv, &promoted)) ||
        (rc = w_member_count(s, j->conv, -1)))
        return rc;
    j->out_id = j->conv;
    return w_append(s, j, now, j->conv, PL_EV_MEMBER_REMOVED, j->user, j->peer, 0, NULL, NULL, 0,
                    pl_store__data_departure(j->peer, promoted));
}

static int job_member_role(sq_store *s, pl_job *j, int64_t now) {
    int rc = w_check_admin(s, j);
    if (rc != PL_STORE_OK) return rc;
    int prole = w_member_role(s, j->conv, j->peer);
    if (prole <= 0) return prole < 0 ? prole : PL_STORE_ENOTFOUND;
    j->out_id = j->conv;
    if (prole == j->level) return PL_STORE_OK;               /* no change, no event */
    if (j->level != PL_ROLE_ADMIN) {                         /* someone stays admin */
        sqlite3_bind_int64(s->w[W_MEMBER_OTHER_ADMIN], 1, j->conv);
        sqlite3_bind_int64(s->w[W_MEMBER_OTHER_ADMIN], 2, j->peer);
        if ((rc = w_lookup(s, W_MEMBER_OTHER_ADMIN, NULL)) <= 0) {
            if (rc < 0) return rc;
            j->why = "the last admin: make another member admin first";
            return PL_STORE_EINVAL;
        }
    }
    sqlite3_stmt *st = s->w[W_MEMBER_SET_ROLE];
    sqlite3_bind_int(st, 1, j->level);
    sqlite3_bind_int64(st, 2, j->conv);
    sqlite3_bind_int64(st, 3, j->peer);
    if ((rc = w_write(s, W_MEMBER_SET_ROLE)) != PL_STORE_OK) return rc;
    j->created = 1;
    return w_append(s, j, now, j->conv, PL_EV_MEMBER_ROLE, j->user, j->peer, 0, NULL, NULL, 0,
                    pl_store__data_role(j->peer, j->level));
}

static int job_member_leave(sq_store *s, pl_job *j, int64_t now) {
    int kind = w_conv_kind(s, j->conv);
    if (kind <= 0) return kind < 0 ? kind : PL_STORE_ENOTFOUND;
    int rc = w_member_role(s, j->conv, j->user);
    if (rc <= 0) return rc < 0 ? rc : PL_STORE_ENOTFOUND;
    if (kind == PL_CONV_DIRECT) return PL_STORE_EINVAL;
    if ((rc = w_not_general(s, j)) != PL_STORE_OK) return rc;
    int64_t promoted = 0;
    if ((rc = w_member_delete(s, j->conv, j->user)) ||
        (rc = w_promote_if_needed(s, j->conv, &promoted)) ||
        (rc = w_member_count(s, j->conv, -1)))
        return rc;
    j->out_id = j->conv;
    return w_append(s, j, now, j->conv, PL_EV_MEMBER_LEFT, j->user, j->user, 0, NULL, NULL, 0,
                    pl_store__data_departure(j->user, promoted));
}

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
static int job_receipt(sq_store *s, pl_job *j, int64_t now) {
    int err = PL_STORE_OK;
    pl_conv_state *e = w_conv_state(s, j->conv, &err);
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
     * cannot see (audit E3): it moves nothing */
    if (r < joined - 1) r = 0;
    if (d < joined - 1) d = 0;
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

static int job_last_seen(sq_store *s, pl_job *j, int64_t now) {
    sqlite3_stmt *st = s->w[W_USER_LAST_SEEN];
    sqlite3_bind_int64(st, 1, j->expires);
    sqlite3_bind_int64(st, 2, j->user);
    return w_exec(s, W_USER_LAST_SEEN) == PL_STORE_OK ? PL_STORE_OK : W_FATAL;
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
    case PL_JOB_USER_CREATE:   return job_user_create(s, j, now);
    case PL_JOB_LOGIN_CREATE:  return job_login_create(s, j, now);
    case PL_JOB_LOGIN_ROTATE:  return job_login_rotate(s, j, now);
    case PL_JOB_LOGIN_REVOKE:  return job_login_revoke(s, j, now);
    case PL_JOB_DIRECT_OPEN:   return w_in_savepoint(s, j, now, job_direct_open);
    case PL_JOB_GROUP_CREATE:  return w_in_savepoint(s, j, now, job_group_create);
    case PL_JOB_MEMBER_ADD:    return w_in_savepoint(s, j, now, job_member_add);
    case PL_JOB_MEMBER_REMOVE: return w_in_savepoint(s, j, now, job_member_remove);
    case PL_JOB_MEMBER_LEAVE:  return w_in_savepoint(s, j, now, job_member_leave);
    case PL_JOB_MEMBER_ROLE:   return w_in_savepoint(s, j, now, job_member_role);
    case PL_JOB_MESSAGE_EDIT:  return w_in_savepoint(s, j, now, job_edit);
    case PL_JOB_MESSAGE_DELETE: return w_in_savepoint(s, j, now, job_delete);
    case PL_JOB_REACTION:      return w_in_savepoint(s, j, now, job_reaction);
    case PL_JOB_PIN:           return w_in_savepoint(s, j, now, job_pin);
    case PL_JOB_NOTIFY_SET:    return job_notify_set(s, j, now);
    case PL_JOB_RECEIPT:       return job_receipt(s, j, now);
    case PL_JOB_LAST_SEEN:     return job_last_seen(s, j, now);
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

/* ---- for store_sqlite_keys.c (sqlite_int.h) ------------------------------ */

int sq_w_fatal(sq_store *s, int rc, const char *what) { return w_fatal(s, rc, what); }
int sq_w_member_role(sq_store *s, int64_t conv, int64_t user) { return w_member_role(s, conv, user); }
pl_conv_state *sq_w_conv_state(sq_store *s, int64_t conv, int *err) { return w_conv_state(s, conv, err); }
int sq_w_append(sq_store *s, pl_job *j, int64_t now, int64_t conv, int kind, int64_t sender,
                int64_t subject, char *data) {
    return w_append(s, j, now, conv, kind, sender, subject, 0, NULL, NULL, 0, data);
}
int sq_w_group_create(sq_store *s, pl_job *j, int64_t now, int64_t workspace, int is_private) {
    return w_group_create(s, j, now, workspace, is_private);
}
int sq_w_member_join(sq_store *s, pl_job *j, int64_t now, int64_t conv, int64_t actor, int64_t peer) {
    return w_member_join(s, j, now, conv, actor, peer);
}
int sq_w_user_exists(sq_store *s, int64_t user) { return w_user_exists(s, user); }
int sq_w_erase(sq_store *s, int64_t conv, int64_t seq, int64_t now) { return w_erase(s, conv, seq, now); }
int sq_w_promote_if_needed(sq_store *s, int64_t conv) { return w_promote_if_needed(s, conv, NULL); }
int sq_w_target_load(sq_store *s, pl_job *j, int64_t seq, sq_target *t) { return w_target_load(s, j, seq, t); }

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
