/* store_sqlite_members.c — the SQLite writer's conversations and their
 * members: DIRECT_OPEN, GROUP_CREATE, MEMBER_ADD, MEMBER_REMOVE,
 * MEMBER_ROLE and MEMBER_LEAVE, jobs of the batch (store_sqlite_write.c),
 * each in a savepoint with the role cache off.
 *
 * Owns: the SQL of conversations' and members' rows, the rules of admins
 * (who adds, removes and changes roles; a group keeps one), and the group
 * code channels reuse (sq_w_group_create, sq_w_member_join for
 * store_sqlite_ws.c). Not the member counts: the conversation map's
 * (sq_w_member_count, store_sqlite_write.c); not workspaces' rules
 * (store_sqlite_ws.c); not a member's notification level
 * (store_sqlite_actions.c).
 */
#include "sqlite_int.h"

#include <stdio.h>
#include <stdlib.h>

#include "../core/alloc.h"

/* Kind of conv, 0 if it does not exist, or W_FATAL. */
int sq_w_conv_kind(sq_store *s, int64_t conv) {
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

int sq_job_direct_open(sq_store *s, pl_job *j, int64_t now) {
    if (j->user == j->peer) return PL_STORE_EINVAL;
    int rc = sq_w_user_exists(s, j->user);
    if (rc <= 0) return rc < 0 ? rc : PL_STORE_ENOTFOUND;
    rc = sq_w_user_exists(s, j->peer);
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
    rc = sq_w_append_full(s, j, now, conv, PL_EV_CREATED, j->user, 0, 0, NULL, NULL, 0, pl_strdup(data));
    if (rc != PL_STORE_OK) return rc;
    j->out_id = conv;
    j->created = 1;
    return PL_STORE_OK;
}

/* A group, or (workspace != 0) a channel whose checks the caller made
 * (store_sqlite_ws.c). */
static int w_group_create(sq_store *s, pl_job *j, int64_t now, int64_t workspace, int is_private) {
    if (!j->title || (j->nmembers && !j->members)) return PL_STORE_EINVAL;
    int rc = sq_w_user_exists(s, j->user);
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
        int ex = sq_w_user_exists(s, u);
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
    rc = sq_w_append_full(s, j, now, conv, PL_EV_CREATED, j->user, 0, 0, NULL, NULL, 0, data);
    data = NULL;                                          /* taken over */
    if (rc == PL_STORE_OK) j->out_id = conv;
out:
    free(data);
    free(others);
    return rc;
}
int sq_w_group_create(sq_store *s, pl_job *j, int64_t now, int64_t workspace, int is_private) {
    return w_group_create(s, j, now, workspace, is_private);
}

int sq_job_group_create(sq_store *s, pl_job *j, int64_t now) { return w_group_create(s, j, now, 0, 0); }

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
int sq_w_promote_if_needed(sq_store *s, int64_t conv) { return w_promote_if_needed(s, conv, NULL); }

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
    int kind = sq_w_conv_kind(s, j->conv);
    if (kind <= 0) return kind < 0 ? kind : PL_STORE_ENOTFOUND;
    int role = sq_w_member_role(s, j->conv, j->user);
    if (role <= 0) return role < 0 ? role : PL_STORE_ENOTFOUND;
    if (kind == PL_CONV_DIRECT) return PL_STORE_EINVAL;
    if (role != PL_ROLE_ADMIN) return PL_STORE_EFORBID;
    return PL_STORE_OK;
}

/* Makes peer a member of conv with a MEMBER_ADDED event by actor (no-op
 * when it is one). */
static int w_member_join(sq_store *s, pl_job *j, int64_t now, int64_t conv, int64_t actor, int64_t peer) {
    int rc = sq_w_member_role(s, conv, peer);
    if (rc != PL_ROLE_NONE) return rc < 0 ? rc : PL_STORE_OK;   /* no-op */
    int err = PL_STORE_OK;
    pl_conv_state *e = sq_w_conv_state(s, conv, &err);
    if (!e) return err;
    int64_t joined_seq = e->last_seq + 1;        /* the member_added event's */
    int64_t joined = 0;
    sqlite3_bind_int64(s->w[W_CONV_NEXT_JOIN], 1, conv);
    rc = w_lookup(s, W_CONV_NEXT_JOIN, &joined);
    if (rc <= 0) return rc < 0 ? rc : PL_STORE_ENOTFOUND;
    if ((rc = w_member_insert(s, conv, peer, PL_ROLE_MEMBER, joined, joined_seq)) ||
        (rc = sq_w_member_count(s, conv, 1)))
        return rc;
    return sq_w_append_full(s, j, now, conv, PL_EV_MEMBER_ADDED, actor, peer, 0, NULL, NULL, 0,
                            pl_store__data_user(peer));
}
int sq_w_member_join(sq_store *s, pl_job *j, int64_t now, int64_t conv, int64_t actor, int64_t peer) {
    return w_member_join(s, j, now, conv, actor, peer);
}

int sq_job_member_add(sq_store *s, pl_job *j, int64_t now) {
    int rc = w_check_admin(s, j);
    if (rc != PL_STORE_OK) return rc;
    /* the workspace first: to a channel an id no user has is "not in the
     * workspace" (403), as when the channel is created with it */
    if ((rc = sq_ws_channel_admits(s, j->conv, j->peer)) != PL_STORE_OK) {
        if (rc == PL_STORE_EFORBID) j->why = "not in the workspace";
        return rc;
    }
    rc = sq_w_user_exists(s, j->peer);
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

int sq_job_member_remove(sq_store *s, pl_job *j, int64_t now) {
    int rc = j->flags & PL_JOB_EVICT ? sq_ws_evictable(s, j->conv, j->peer, j->user, &j->why) : w_check_admin(s, j);
    if (rc == PL_STORE_OK && !(j->flags & PL_JOB_EVICT)) rc = w_not_general(s, j);
    if (rc != PL_STORE_OK) return rc;
    rc = sq_w_member_role(s, j->conv, j->peer);
    if (rc <= 0) return rc < 0 ? rc : PL_STORE_ENOTFOUND;
    int64_t promoted = 0;
    if ((rc = w_member_delete(s, j->conv, j->peer)) ||
        (rc = w_promote_if_needed(s, j->conv, &promoted)) ||
        (rc = sq_w_member_count(s, j->conv, -1)))
        return rc;
    j->out_id = j->conv;
    return sq_w_append_full(s, j, now, j->conv, PL_EV_MEMBER_REMOVED, j->user, j->peer, 0, NULL, NULL, 0,
                            pl_store__data_departure(j->peer, promoted));
}

int sq_job_member_role(sq_store *s, pl_job *j, int64_t now) {
    int rc = w_check_admin(s, j);
    if (rc != PL_STORE_OK) return rc;
    int prole = sq_w_member_role(s, j->conv, j->peer);
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
    return sq_w_append_full(s, j, now, j->conv, PL_EV_MEMBER_ROLE, j->user, j->peer, 0, NULL, NULL, 0,
                            pl_store__data_role(j->peer, j->level));
}

int sq_job_member_leave(sq_store *s, pl_job *j, int64_t now) {
    int kind = sq_w_conv_kind(s, j->conv);
    if (kind <= 0) return kind < 0 ? kind : PL_STORE_ENOTFOUND;
    int rc = sq_w_member_role(s, j->conv, j->user);
    if (rc <= 0) return rc < 0 ? rc : PL_STORE_ENOTFOUND;
    if (kind == PL_CONV_DIRECT) return PL_STORE_EINVAL;
    if ((rc = w_not_general(s, j)) != PL_STORE_OK) return rc;
    int64_t promoted = 0;
    if ((rc = w_member_delete(s, j->conv, j->user)) ||
        (rc = w_promote_if_needed(s, j->conv, &promoted)) ||
        (rc = sq_w_member_count(s, j->conv, -1)))
        return rc;
    j->out_id = j->conv;
    return sq_w_append_full(s, j, now, j->conv, PL_EV_MEMBER_LEFT, j->user, j->user, 0, NULL, NULL, 0,
                            pl_store__data_departure(j->user, promoted));
}
