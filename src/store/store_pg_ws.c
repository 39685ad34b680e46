/* store_pg_ws.c — workspaces and channels in the PostgreSQL backend
 * (store.h invariant 11): creating a workspace with its "general" channel,
 * its members joining and leaving, creating and joining channels, and the
 * reads of workspaces and of a workspace's channels.
 *
 * Owns: the jobs and reads over the statements W_WS_*, W_CHANNEL_CREATE
 * and R_WORKSPACE*, R_WS_MEMBERS, R_CHANNELS (store_pg_stmts_w.c, _r.c), and the locks
 * that keep a workspace's members and its channels' members consistent
 * across nodes (store_pg.c invariant 13):
 *   - a job that changes who is in a workspace or what channels it has
 *     (WORKSPACE_ADD, WORKSPACE_REMOVE, CHANNEL_CREATE) locks the
 *     workspace's row: at the start of its batch, after the conversations
 *     and in ascending id (pg_ws_lock_of, store_pg_write.c w_begin), and
 *     again in its own round trip (a no-op then; it covers a workspace
 *     created after the batch began). So the counters the quotas test
 *     (workspaces.member_count, channel_count) and a channel's name are
 *     checked and changed one job after the other, on any node. Its
 *     "general" channel, which WORKSPACE_ADD appends to, is locked with
 *     the batch's conversations (W_CONV_LOCK_MORE), in their order.
 *   - a job that puts someone into a channel because it is in the
 *     workspace (MEMBER_ADD, CHANNEL_JOIN) keeps that workspace_members row
 *     (FOR KEY SHARE, W_WS_CONV) to its COMMIT; WORKSPACE_REMOVE's delete
 *     of the row waits for it, and the removal then lists the channels
 *     (W_WS_CHANNELS_OF, a statement after the delete, so a snapshot after
 *     the wait): a channel joined meanwhile is in the list, never missed.
 * The events (CREATED of a channel, MEMBER_ADDED) go through pg_appended
 * like every append, so the outbox and the conversation counters see them.
 * Does not own: MEMBER_ADD, MEMBER_REMOVE (PL_JOB_EVICT included) and
 * MEMBER_LEAVE, which treat a channel as a group (store_pg_jobs.c); the
 * SQLite backend's twin.
 */
#include "pg_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/alloc.h"
#include "../core/lookalike.h"

#define WS_GENERAL "general"    /* the public channel every workspace has */

/* ---- locks ------------------------------------------------------------------- */

int64_t pg_ws_lock_of(const pl_job *j, int *with_general) {
    *with_general = 0;
    switch (j->op) {
    case PL_JOB_WORKSPACE_ADD:
        *with_general = j->id > 0;
        return j->id > 0 ? j->id : 0;
    case PL_JOB_WORKSPACE_REMOVE:
    case PL_JOB_WORKSPACE_ROLE:
    case PL_JOB_CHANNEL_CREATE:
        return j->id > 0 ? j->id : 0;
    case PL_JOB_RETENTION_SET:             /* a workspace's (store_pg_life.c) */
    case PL_JOB_HOLD_SET:
        return j->conv == 0 && j->id > 0 ? j->id : 0;
    default:
        return 0;
    }
}

/* W_WS_CONV: conv's workspace and private flag, user's roles in conv and
 * in the workspace (PL_ROLE_NONE: not in it); the row kept until COMMIT. */
typedef struct ws_conv {
    int     found;
    int64_t workspace;
    int     is_private;
    int     role;                 /* in the conversation                    */
    int     ws_role;              /* in its workspace                       */
} ws_conv;

static int ws_conv_get(pg_store *s, int64_t conv, int64_t user, ws_conv *c) {
    memset(c, 0, sizeof *c);
    pg_params p = {0};
    pg_param_i64(&p, conv);
    pg_param_i64(&p, user);
    int rc;
    PGresult *r = pg_w_query(s, W_WS_CONV, &p, &rc);
    if (!r) return rc;
    if (PQntuples(r) != 1) return PL_STORE_OK;
    c->found = 1;
    c->workspace = pg_i64(r, 0, 0);
    c->is_private = pg_i64(r, 0, 1) != 0;
    c->role = (int)pg_i64(r, 0, 2);
    c->ws_role = (int)pg_i64(r, 0, 3);
    return PL_STORE_OK;
}

int pg_ws_member_of_conv(pg_store *s, int64_t conv, int64_t user, int *in_ws) {
    ws_conv c;
    int rc = ws_conv_get(s, conv, user, &c);
    *in_ws = c.found && c.workspace > 0 ? c.ws_role : PL_ROLE_NONE;
    return rc;
}

int pg_ws_is_general(pg_store *s, int64_t conv, int *general) {
    pg_params p = {0};
    pg_param_i64(&p, conv);
    int rc;
    PGresult *r = pg_w_query(s, W_WS_IS_GENERAL, &p, &rc);
    if (!r) return rc;
    *general = PQntuples(r) > 0;
    return PL_STORE_OK;
}

/* W_WS_STATE of a workspace, after its row's lock (a statement before it,
 * so its snapshot is taken after any wait for the lock). */
typedef struct ws_state {
    int     found;
    int64_t general, member_count, channel_count;
    int     arole, prole;         /* actor's, peer's role (PL_ROLE_NONE: not in it) */
    int     pexists;              /* peer is a user                         */
    int     pgeneral;             /* peer's role in "general"               */
    int     name_taken;           /* a channel of the workspace has the name */
    int64_t users_in;             /* how many of the users asked are in it  */
} ws_state;

static int ws_state_get(pg_store *s, int64_t ws, int64_t actor, int64_t peer, const char *name,
                        pg_arr *users, ws_state *st) {
    memset(st, 0, sizeof *st);
    pg_arr *lock = &s->arr[4];
    pg_arr_start(lock, PG_INT8);
    pg_arr_i64(lock, ws);
    pg_params l = {0}, p = {0};
    pg_param_arr(&l, lock);
    pg_param_i64(&p, ws);
    pg_param_i64(&p, actor);
    pg_param_i64(&p, peer);
    pg_param_text(&p, name);
    if (!users) {
        users = &s->arr[5];
        pg_arr_start(users, PG_INT8);
    }
    pg_param_arr(&p, users);
    if (pg_w_send(s, W_WS_LOCK, &l, 0) < 0) return W_LOST;
    int rc;
    PGresult *r = pg_w_query(s, W_WS_STATE, &p, &rc);
    if (!r) return rc;
    if (PQntuples(r) != 1) return PL_STORE_OK;
    st->found = 1;
    st->general = pg_i64(r, 0, 0);
    st->member_count = pg_i64(r, 0, 1);
    st->channel_count = pg_i64(r, 0, 2);
    st->arole = (int)pg_i64(r, 0, 3);
    st->prole = (int)pg_i64(r, 0, 4);
    st->pexists = PQgetvalue(r, 0, 5)[0] == 't';
    st->pgeneral = (int)pg_i64(r, 0, 6);
    st->name_taken = PQgetvalue(r, 0, 7)[0] == 't';
    st->users_in = pg_i64(r, 0, 8);
    return PL_STORE_OK;
}

/* Queues W_CHANNEL_CREATE: the channel name in workspace ws, members
 * (creator first), its CREATED event (id, data). Its slot, or W_LOST. */
static int channel_send(pg_store *s, const char *name, int64_t now, pg_arr *members, uint64_t id,
                        int64_t creator, const char *data, int64_t ws, int is_private) {
    pg_params c = {0};
    pg_param_text(&c, name);
    pg_param_i64(&c, now);
    pg_param_i64(&c, members->n);
    pg_param_arr(&c, members);
    pg_param_i64(&c, (int64_t)id);
    pg_param_i64(&c, creator);
    pg_param_text(&c, data);
    pg_param_i64(&c, ws);
    pg_param_i64(&c, is_private);
    char *key = pl_lookalike_key(name, strlen(name));
    pg_param_text(&c, key);                         /* NULL: worked out later */
    int slot = pg_w_send(s, W_CHANNEL_CREATE, &c, 1);
    free(key);
    return slot;
}

/* Whether a channel of workspace ws has a name that looks like name
 * (core/lookalike.h) without being it: 1 (j->why set), 0, or the
 * store's error. Two all-ASCII names are told apart as typed. */
static int lookalike_taken(pg_store *s, pl_job *j, int64_t ws, const char *name) {
    char *key = pl_lookalike_key(name, strlen(name));
    if (!key) return 0;
    pg_params p = {0};
    pg_param_i64(&p, ws);
    pg_param_text(&p, key);
    int rc, taken = 0;
    PGresult *r = pg_w_query(s, W_CHANNEL_KEYS, &p, &rc);
    if (!r) {
        free(key);
        return rc;
    }
    for (int row = 0; row < PQntuples(r) && !taken; row++) {
        const char *title = PQgetvalue(r, row, 0);
        char *made = PQgetisnull(r, row, 1) ? pl_lookalike_key(title, strlen(title)) : NULL;
        const char *k = made ? made : PQgetisnull(r, row, 1) ? NULL : PQgetvalue(r, row, 1);
        taken = k && !strcmp(k, key) && strcmp(title, name) && !pl_lookalike_both_ascii(title, name);
        free(made);
    }
    free(key);
    if (taken) j->why = "the name looks like another channel's";
    return taken;
}

/* ---- jobs -------------------------------------------------------------------- */

/* The workspace, then (its id is in the channel's CREATED data) "general"
 * and the creator's membership of both: two round trips in one savepoint. */
static int ws_create(pg_store *s, pl_job *j, int64_t now) {
    if (!pl_store__workspace_name_ok(j->title)) {
        j->why = "bad workspace name";
        return PL_STORE_EINVAL;
    }
    pg_params w = {0};
    pg_param_text(&w, j->title);
    pg_param_i64(&w, j->user);
    pg_param_i64(&w, now);
    int sp = pg_w_send(s, W_SAVEPOINT, NULL, 0);
    int ws = sp < 0 ? sp : pg_w_send(s, W_WS_INSERT, &w, 1);
    if (ws < 0) return W_LOST;
    int rc = pg_w_sync(s);
    if (rc) return pg_sp_failed(s, j, sp, rc);
    if (PQntuples(s->w.res[ws]) != 1)                      /* no such user: nothing written */
        return pg_w_send(s, W_RELEASE, NULL, 0) < 0 ? W_LOST : PL_STORE_ENOTFOUND;
    int64_t wid = pg_i64(s->w.res[ws], 0, 0);

    char *data = pl_store__data_channel(WS_GENERAL, j->user, NULL, 0, wid, 0);
    uint64_t id = pl_idgen_next(&s->ids, now);
    pg_arr *members = &s->arr[0];
    pg_arr_start(members, PG_INT8);
    pg_arr_i64(members, j->user);
    pg_params f = {0};
    pg_param_i64(&f, wid);
    pg_param_i64(&f, j->user);
    pg_param_text(&f, WS_GENERAL);
    int cs = channel_send(s, WS_GENERAL, now, members, id, j->user, data, wid, 0);
    if (cs < 0 || pg_w_send(s, W_WS_FOUNDER, &f, 0) < 0 || pg_w_send(s, W_RELEASE, NULL, 0) < 0) {
        free(data);
        return W_LOST;
    }
    if ((rc = pg_w_sync(s)) != PL_STORE_OK) {
        free(data);
        return pg_sp_failed(s, j, -1, rc);                 /* the savepoint came before */
    }
    if (PQntuples(s->w.res[cs]) != 1) {                    /* a new workspace has no names */
        free(data);
        return W_FATAL;
    }
    pg_conv *e = pg_conv_created(s, pg_i64(s->w.res[cs], 0, 0), PL_CONV_CHANNEL, 1);
    pg_appended(s, e, j, 1, id, now, PL_EV_CREATED, j->user, 0, NULL, NULL, 0, data);
    e->dirty = 0;                                          /* the row has it all */
    j->out_id = wid;
    return PL_STORE_OK;
}

/* Checks in store.h's order; then the member's row, and its joining of
 * "general" (unless it still is in it: a removal whose evictions have not
 * run yet) in one savepoint. */
static int ws_add(pg_store *s, pl_job *j, int64_t now) {
    ws_state st;
    int rc = ws_state_get(s, j->id, j->user, j->peer, NULL, NULL, &st);
    if (rc) return rc;
    if (!st.found || st.arole == PL_ROLE_NONE) return PL_STORE_ENOTFOUND;
    if (st.arole != PL_ROLE_ADMIN) return PL_STORE_EFORBID;
    if (!st.pexists) return PL_STORE_ENOTFOUND;
    j->out_id = j->id;
    if (st.prole != PL_ROLE_NONE) return PL_STORE_OK;           /* already: nothing */
    if (s->ws_members > 0 && st.member_count >= s->ws_members) {
        j->why = "workspace full";
        return PL_STORE_EINVAL;
    }
    pg_conv *e = pg_conv_find(s, st.general);
    if (!e) return PL_STORE_ENOTFOUND;     /* created after the batch took its locks */
    pg_params m = {0};
    pg_param_i64(&m, j->id);
    pg_param_i64(&m, j->peer);
    rc = pg_member_join(s, j, e, j->peer, now, st.pgeneral == PL_ROLE_NONE, W_WS_JOIN, &m, -1, NULL);
    if (rc == PL_STORE_OK) j->created = 1;
    return rc;
}

/* Leave (peer == user, or 0) or removal by an admin. The channels peer is
 * still in are listed after the delete (see the top of the file); no
 * event: the caller evicts it from each. */
static int ws_remove(pg_store *s, pl_job *j) {
    int64_t peer = j->peer ? j->peer : j->user;
    ws_state st;
    int rc = ws_state_get(s, j->id, j->user, peer, NULL, NULL, &st);
    if (rc) return rc;
    if (!st.found || st.arole == PL_ROLE_NONE) return PL_STORE_ENOTFOUND;
    if (peer != j->user && st.arole != PL_ROLE_ADMIN) return PL_STORE_EFORBID;
    pg_params d = {0}, pr = {0};
    pg_param_i64(&d, j->id);
    pg_param_i64(&d, peer);
    pg_param_i64(&pr, j->id);
    int sp = -1, cs = -1;
    if (st.prole == PL_ROLE_NONE) {
        /* out already: an admin's repeated removal lists the channels a
         * removal cut short left it in (store.h), else there is nothing */
        if (peer == j->user) return PL_STORE_ENOTFOUND;
        if ((cs = pg_w_send(s, W_WS_CHANNELS_OF, &d, 1)) < 0) return W_LOST;
        if ((rc = pg_w_sync(s)) != PL_STORE_OK) return rc;
        if (PQntuples(s->w.res[cs]) == 0) return PL_STORE_ENOTFOUND;
    } else {
        sp = pg_w_send(s, W_SAVEPOINT, NULL, 0);
        if (sp < 0 || pg_w_send(s, W_WS_LEAVE, &d, 0) < 0 || pg_w_send(s, W_WS_PROMOTE, &pr, 0) < 0 ||
            (cs = pg_w_send(s, W_WS_CHANNELS_OF, &d, 1)) < 0 || pg_w_send(s, W_RELEASE, NULL, 0) < 0)
            return W_LOST;
        if ((rc = pg_w_sync(s)) != PL_STORE_OK) return pg_sp_failed(s, j, sp, rc);
    }
    const PGresult *r = s->w.res[cs];
    size_t n = (size_t)PQntuples(r);
    if (n) {
        j->out_ids = pl_malloc(n * sizeof *j->out_ids);
        for (size_t i = 0; i < n; i++) j->out_ids[i] = pg_i64(r, (int)i, 0);
    }
    j->nout = n;
    j->out_id = j->id;
    return PL_STORE_OK;
}

/* WORKSPACE_ROLE: the SQLite backend's checks in its order, under the
 * workspace's lock. */
static int ws_role_set(pg_store *s, pl_job *j) {
    ws_state st;
    int rc = ws_state_get(s, j->id, j->user, j->peer, NULL, NULL, &st);
    if (rc) return rc;
    if (!st.found || st.arole == PL_ROLE_NONE) return PL_STORE_ENOTFOUND;
    if (st.arole != PL_ROLE_ADMIN) return PL_STORE_EFORBID;
    if (st.prole == PL_ROLE_NONE) return PL_STORE_ENOTFOUND;
    j->out_id = j->id;
    if (st.prole == j->level) return PL_STORE_OK;
    pg_params p = {0};
    pg_param_i64(&p, j->id);
    pg_param_i64(&p, j->peer);
    if (j->level != PL_ROLE_ADMIN) {
        PGresult *r = pg_w_query(s, W_WS_OTHER_ADMIN, &p, &rc);
        if (!r) return rc;
        if (PQgetvalue(r, 0, 0)[0] != 't') {
            j->why = "the last admin: make another member admin first";
            return PL_STORE_EINVAL;
        }
    }
    pg_param_i64(&p, j->level);
    if (!pg_w_query(s, W_WS_SET_ROLE, &p, &rc)) return rc;
    j->created = 1;
    return PL_STORE_OK;
}

/* As GROUP_CREATE (the other members deduplicated in first-seen order, the
 * creator skipped), inside a workspace: the checks of store.h in its
 * order, under the workspace's lock. */
static int channel_create(pg_store *s, pl_job *j, int64_t now) {
    if (!pl_store__channel_name_ok(j->title)) {
        j->why = "bad channel name";
        return PL_STORE_EINVAL;
    }
    if (j->nmembers && !j->members) return PL_STORE_EINVAL;
    int64_t *all = pl_malloc((j->nmembers + 1) * sizeof *all);
    size_t n = 0;
    int outsider = 0;                    /* an id that can be in no workspace */
    char *data = NULL;
    pg_kset seen;
    pg_kset_init(&seen, j->nmembers + 1);
    all[n++] = j->user;
    pg_arr *others = &s->arr[0];
    pg_arr_start(others, PG_INT8);
    for (size_t i = 0; i < j->nmembers; i++) {
        int64_t u = j->members[i];
        if (u == j->user) continue;
        if (u <= 0) {
            outsider = 1;
            continue;
        }
        size_t k = pg_kset_slot(&seen, u, 0, NULL, NULL);
        if (seen.v[k] >= 0) continue;
        seen.v[k] = 1;
        all[n++] = u;
        pg_arr_i64(others, u);
    }
    ws_state st;
    int rc = ws_state_get(s, j->id, j->user, 0, j->title, others, &st);
    if (rc) goto out;
    rc = PL_STORE_ENOTFOUND;
    if (!st.found || st.arole == PL_ROLE_NONE) goto out;
    if (outsider || st.users_in != (int64_t)(n - 1)) {
        j->why = "not in the workspace";
        rc = PL_STORE_EFORBID;
        goto out;
    }
    rc = PL_STORE_ECONFLICT;
    if (st.name_taken) goto out;
    if ((rc = lookalike_taken(s, j, j->id, j->title)) != 0) {
        if (rc > 0) rc = PL_STORE_ECONFLICT;
        goto out;
    }
    rc = PL_STORE_ECONFLICT;
    if (s->ws_channels > 0 && st.channel_count >= s->ws_channels) {
        j->why = "too many channels";
        rc = PL_STORE_EINVAL;
        goto out;
    }
    int is_private = (j->flags & PL_JOB_PRIVATE) != 0;
    data = pl_store__data_channel(j->title, j->user, all + 1, n - 1, j->id, is_private);
    rc = PL_STORE_EINVAL;
    if (!data) goto out;
    uint64_t id = pl_idgen_next(&s->ids, now);
    pg_arr *members = &s->arr[0];
    pg_arr_start(members, PG_INT8);
    for (size_t i = 0; i < n; i++) pg_arr_i64(members, all[i]);
    int sp = pg_w_send(s, W_SAVEPOINT, NULL, 0);
    int cs = sp < 0 ? sp : channel_send(s, j->title, now, members, id, j->user, data, j->id, is_private);
    if (cs < 0 || pg_w_send(s, W_RELEASE, NULL, 0) < 0) {
        rc = W_LOST;
        goto out;
    }
    if ((rc = pg_w_sync(s)) != PL_STORE_OK) {
        rc = pg_sp_failed(s, j, sp, rc);
        goto out;
    }
    rc = PL_STORE_ECONFLICT;                        /* not expected under the lock */
    if (PQntuples(s->w.res[cs]) != 1) goto out;
    int64_t conv = pg_i64(s->w.res[cs], 0, 0);
    pg_conv *e = pg_conv_created(s, conv, PL_CONV_CHANNEL, (int64_t)n);
    pg_appended(s, e, j, 1, id, now, PL_EV_CREATED, j->user, 0, NULL, NULL, 0, data);
    data = NULL;                                    /* taken over */
    e->dirty = 0;
    j->out_id = conv;
    rc = PL_STORE_OK;
out:
    pg_kset_free(&seen);
    free(data);
    free(all);
    return rc;
}

/* A member of the workspace joins a public channel of it (conv locked by
 * the batch); a member already in it: nothing. */
static int channel_join(pg_store *s, pl_job *j, int64_t now) {
    int rc = pg_w_locked(s);
    if (rc) return rc;
    if (!pg_conv_find(s, j->conv)) return PL_STORE_ENOTFOUND;
    ws_conv c;
    if ((rc = ws_conv_get(s, j->conv, j->user, &c)) != PL_STORE_OK) return rc;
    pg_conv *e = pg_conv_find(s, j->conv);
    if (e->kind != PL_CONV_CHANNEL || !c.found) return PL_STORE_ENOTFOUND;
    j->out_id = j->conv;
    if (c.role != PL_ROLE_NONE) return PL_STORE_OK;            /* already */
    if (c.ws_role == PL_ROLE_NONE) return PL_STORE_ENOTFOUND;
    /* a private one everyone left: a workspace admin takes it back (invariant 11) */
    if (c.is_private && (c.ws_role != PL_ROLE_ADMIN || e->member_count > 0)) return PL_STORE_ENOTFOUND;
    pg_params pr = {0};
    pg_param_i64(&pr, j->conv);                              /* an empty channel: its admin now */
    rc = pg_member_join(s, j, e, j->user, now, 1, -1, NULL, W_PROMOTE, &pr);
    if (rc == PL_STORE_OK) j->created = 1;
    return rc;
}

int pg_job_ws(pg_store *s, pl_job *j, int64_t now) {
    switch (j->op) {
    case PL_JOB_WORKSPACE_CREATE: return ws_create(s, j, now);
    case PL_JOB_WORKSPACE_ADD:    return ws_add(s, j, now);
    case PL_JOB_WORKSPACE_REMOVE: return ws_remove(s, j);
    case PL_JOB_WORKSPACE_ROLE:   return ws_role_set(s, j);
    case PL_JOB_CHANNEL_CREATE:   return channel_create(s, j, now);
    case PL_JOB_CHANNEL_JOIN:     return channel_join(s, j, now);
    default:                      return PL_STORE_EINVAL;
    }
}

/* ---- reads ------------------------------------------------------------------- */

/* A row of WS_COLUMNS (store_pg_stmts_r.c). */
static void ws_row(const PGresult *r, int row, pl_workspace *w) {
    memset(w, 0, sizeof *w);
    w->id = pg_i64(r, row, 0);
    w->name = pg_text(r, row, 1, NULL);
    w->created_by = pg_i64(r, row, 2);
    w->created = pg_i64(r, row, 3);
    w->general = pg_i64(r, row, 4);
    w->member_count = pg_i64(r, row, 5);
    w->channel_count = pg_i64(r, row, 6);
    w->role = (int)pg_i64(r, row, 7);
    w->retention = pg_i64(r, row, 8);
    w->hold = pg_i64(r, row, 9) != 0;
}

static int r_workspaces(pg_reader *r, pl_job *j) {
    pg_params p = {0};
    pg_param_i64(&p, j->user);
    int rc;
    PGresult *res = pg_r_query(r, R_WORKSPACES, &p, &rc);
    if (!res) return rc;
    size_t n = (size_t)PQntuples(res);
    if (n) j->workspaces = pl_malloc(n * sizeof *j->workspaces);
    for (size_t i = 0; i < n; i++) ws_row(res, (int)i, &j->workspaces[i]);
    j->nworkspaces = n;
    return PL_STORE_OK;
}

/* The asker's row of the workspace, and (GET) its members or (CHANNELS)
 * its channels as the asker sees them: one snapshot, one round trip. */
static int r_workspace(pg_reader *r, pl_job *j) {
    int channels = j->op == PL_READ_CHANNELS;
    pg_params p = {0}, m = {0};
    pg_param_i64(&p, j->id);
    pg_param_i64(&p, j->user);
    pg_param_i64(&m, j->id);
    int ws, ls;
    if (pgc_send(&r->c, R_BEGIN, NULL, 0) < 0 || (ws = pgc_send(&r->c, R_WORKSPACE_GET, &p, 1)) < 0 ||
        (ls = pgc_send(&r->c, channels ? R_CHANNELS : R_WS_MEMBERS, channels ? &p : &m, 1)) < 0 ||
        pgc_send(&r->c, R_COMMIT, NULL, 0) < 0)
        return W_LOST;
    int rc = pg_r_sync(r);
    if (rc) return rc;
    if (PQntuples(r->c.res[ws]) != 1) return PL_STORE_ENOTFOUND;   /* not in it, or none */
    const PGresult *l = r->c.res[ls];
    size_t n = (size_t)PQntuples(l);
    if (channels) {
        if (n) j->convs = pl_malloc(n * sizeof *j->convs);
        for (size_t i = 0; i < n; i++) pg_conv_row(l, (int)i, &j->convs[i]);
        j->nconvs = n;
        return PL_STORE_OK;
    }
    j->workspaces = pl_malloc(sizeof *j->workspaces);
    j->nworkspaces = 1;
    pl_workspace *w = &j->workspaces[0];
    ws_row(r->c.res[ws], 0, w);
    w->members = n ? pl_calloc(n, sizeof *w->members) : NULL;
    w->nmembers = n;
    for (size_t i = 0; i < n; i++) {
        pl_member *mb = &w->members[i];
        mb->user = pg_i64(l, (int)i, 0);
        mb->role = (int)pg_i64(l, (int)i, 1);
        snprintf(mb->username, sizeof mb->username, "%s", PQgetvalue(l, (int)i, 2));
    }
    return PL_STORE_OK;
}

/* A channel's workspace (0: not a channel, or none). */
static int r_conv_workspace(pg_reader *r, pl_job *j) {
    pg_params p = {0};
    pg_param_i64(&p, j->conv);
    pg_param_i64(&p, j->user);
    int rc;
    PGresult *res = pg_r_query(r, R_CONV_WORKSPACE, &p, &rc);
    if (!res) return rc;
    j->out_id = PQntuples(res) == 1 && !pg_null(res, 0, 0) ? pg_i64(res, 0, 0) : 0;
    j->created = PQntuples(res) == 1 && PQgetvalue(res, 0, 1)[0] == 't';
    return PL_STORE_OK;
}

int pg_read_ws(pg_reader *r, pl_job *j) {
    if (j->op == PL_READ_CONV_WORKSPACE) return r_conv_workspace(r, j);
    return j->op == PL_READ_WORKSPACES ? r_workspaces(r, j) : r_workspace(r, j);
}
