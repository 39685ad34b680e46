/* store_sqlite_ws.c — workspaces and channels in the SQLite backend
 * (store.h invariant 11).
 *
 * Owns: the SQL of workspaces and workspace_members, the workspace jobs
 * (create, add, remove), the channel jobs (create, join), the checks
 * MEMBER_ADD and an eviction make of a channel, and the three reads.
 * Channels themselves are conversations: their creation and joins go
 * through the writer's group code (sq_w_group_create, sq_w_member_join), so
 * their logs, counters and role rules are a group's. The jobs are rare next
 * to sends: their statements are prepared on use (sq_run).
 */
#include "sqlite_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/alloc.h"
#include "../core/lookalike.h"

static int ws_fatal(sq_store *s, int src) { return sq_w_fatal(s, src, "workspace statement"); }

/* The role of user in workspace ws (PL_ROLE_NONE when not in it), or
 * W_FATAL. */
static int ws_role(sq_store *s, int64_t ws, int64_t user) {
    int src = 0;
    int64_t role = PL_ROLE_NONE;
    int rc = sq_run(s->wdb, &src, &role, "SELECT role FROM workspace_members WHERE workspace_id = ?1 AND user_id = ?2",
                    "ii", ws, user);
    if (rc < 0) return ws_fatal(s, src);
    return rc ? (int)role : PL_ROLE_NONE;
}

/* Adds user to ws with role, after everyone there. */
static int ws_member_insert(sq_store *s, int64_t ws, int64_t user, int role) {
    int src = 0;
    int64_t joined = 0;
    if (sq_run(s->wdb, &src, &joined, "UPDATE workspaces SET next_join = next_join + 1 WHERE id = ?1"
               " RETURNING next_join - 1", "i", ws) < 0 ||
        sq_run(s->wdb, &src, NULL, "INSERT INTO workspace_members(workspace_id, user_id, role, joined)"
               " VALUES(?1, ?2, ?3, ?4)", "iiii", ws, user, (int64_t)role, joined) < 0)
        return ws_fatal(s, src);
    return PL_STORE_OK;
}

static int ws_create(sq_store *s, pl_job *j, int64_t now) {
    if (!pl_store__workspace_name_ok(j->title)) {
        j->why = "bad workspace name";
        return PL_STORE_EINVAL;
    }
    int rc = sq_w_user_exists(s, j->user);
    if (rc <= 0) return rc < 0 ? rc : PL_STORE_ENOTFOUND;
    int src = 0;
    int64_t ws = 0;
    if (sq_run(s->wdb, &src, &ws, "INSERT INTO workspaces(name, created_by, created) VALUES(?1, ?2, ?3)"
               " RETURNING id", "tii", j->title, j->user, now) < 0)
        return ws_fatal(s, src);
    if ((rc = ws_member_insert(s, ws, j->user, PL_ROLE_ADMIN)) != PL_STORE_OK) return rc;
    /* its "general" channel: the group code, with the job's inputs lent */
    const char *name = j->title;
    const int64_t *members = j->members;
    size_t nmembers = j->nmembers;
    j->title = "general";
    j->members = NULL;
    j->nmembers = 0;
    rc = sq_w_group_create(s, j, now, ws, 0);
    j->title = name;
    j->members = members;
    j->nmembers = nmembers;
    if (rc != PL_STORE_OK) return rc;
    if (sq_run(s->wdb, &src, NULL, "UPDATE workspaces SET general = ?1 WHERE id = ?2", "ii", j->out_id, ws) < 0)
        return ws_fatal(s, src);
    j->out_id = ws;
    return PL_STORE_OK;
}

static int ws_add(sq_store *s, pl_job *j, int64_t now) {
    int src = 0;
    int64_t general = 0, count = 0;
    int rc = sq_run(s->wdb, &src, &general, "SELECT general FROM workspaces WHERE id = ?1", "i", j->id);
    if (rc <= 0) return rc < 0 ? ws_fatal(s, src) : PL_STORE_ENOTFOUND;
    int role = ws_role(s, j->id, j->user);
    if (role <= 0) return role < 0 ? role : PL_STORE_ENOTFOUND;
    if (role != PL_ROLE_ADMIN) return PL_STORE_EFORBID;
    rc = sq_w_user_exists(s, j->peer);
    if (rc <= 0) return rc < 0 ? rc : PL_STORE_ENOTFOUND;
    j->out_id = j->id;
    if ((role = ws_role(s, j->id, j->peer)) != PL_ROLE_NONE) return role < 0 ? role : PL_STORE_OK;
    if (s->workspace_members > 0) {
        if (sq_run(s->wdb, &src, &count, "SELECT count(*) FROM workspace_members WHERE workspace_id = ?1", "i",
                   j->id) < 0)
            return ws_fatal(s, src);
        if (count >= s->workspace_members) {
            j->why = "workspace full";
            return PL_STORE_EINVAL;
        }
    }
    if ((rc = ws_member_insert(s, j->id, j->peer, PL_ROLE_MEMBER)) != PL_STORE_OK ||
        (rc = sq_w_member_join(s, j, now, general, j->user, j->peer)) != PL_STORE_OK)
        return rc;
    j->out_id = j->id;
    j->created = 1;
    return PL_STORE_OK;
}

static int ws_remove(sq_store *s, pl_job *j) {
    int src = 0;
    int rc = sq_run(s->wdb, &src, NULL, "SELECT 1 FROM workspaces WHERE id = ?1", "i", j->id);
    if (rc <= 0) return rc < 0 ? ws_fatal(s, src) : PL_STORE_ENOTFOUND;
    int role = ws_role(s, j->id, j->user);
    if (role <= 0) return role < 0 ? role : PL_STORE_ENOTFOUND;
    if (j->peer != j->user && role != PL_ROLE_ADMIN) return PL_STORE_EFORBID;
    if ((role = ws_role(s, j->id, j->peer)) < 0) return role;
    /* out already: an admin's repeated removal lists the channels a removal
     * cut short left it in (store.h), else there is nothing to do */
    int out = role == PL_ROLE_NONE;
    if (out && j->peer == j->user) return PL_STORE_ENOTFOUND;
    if (!out && (sq_run(s->wdb, &src, NULL, "DELETE FROM workspace_members WHERE workspace_id = ?1 AND user_id = ?2",
                        "ii", j->id, j->peer) < 0 ||
        /* no admin left: the earliest-joined member becomes one */
        sq_run(s->wdb, &src, NULL,
               "UPDATE workspace_members SET role = 2 WHERE workspace_id = ?1 AND user_id = (SELECT user_id"
               " FROM workspace_members WHERE workspace_id = ?1 ORDER BY joined LIMIT 1)"
               " AND NOT EXISTS (SELECT 1 FROM workspace_members WHERE workspace_id = ?1 AND role = 2)",
               "i", j->id) < 0))
        return ws_fatal(s, src);
    sqlite3_stmt *st = sq_prep(s->wdb,
                               "SELECT c.id FROM conversations c JOIN members m ON m.conv_id = c.id"
                               " AND m.user_id = ?2 WHERE c.workspace = ?1 AND c.kind = 3 ORDER BY c.id", &src);
    if (!st) return ws_fatal(s, src);
    sqlite3_bind_int64(st, 1, j->id);
    sqlite3_bind_int64(st, 2, j->peer);
    size_t cap = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (j->nout == cap) {
            cap = cap ? cap * 2 : 8;
            j->out_ids = pl_realloc(j->out_ids, cap * sizeof *j->out_ids);
        }
        j->out_ids[j->nout++] = sqlite3_column_int64(st, 0);
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) return ws_fatal(s, rc);
    if (out && !j->nout) return PL_STORE_ENOTFOUND;
    j->out_id = j->id;
    return PL_STORE_OK;
}

/* Whether a channel of workspace ws has a name that looks like title
 * (key: its pl_lookalike_key) without being it: 1 (j->why set), 0, or
 * W_FATAL. Two all-ASCII names are told apart as typed. Channels made
 * before the keys were kept (name_key NULL) get theirs on the way. */
static int lookalike_taken(sq_store *s, pl_job *j, int64_t ws, const char *key) {
    int src = 0, rc, taken = 0;
    sqlite3_stmt *st = sq_prep(s->wdb, "SELECT id, title, name_key FROM conversations WHERE workspace = ?1"
                                       " AND kind = 3 AND (name_key = ?2 OR name_key IS NULL)", &src);
    if (!st) return ws_fatal(s, src);
    sqlite3_bind_int64(st, 1, ws);
    sqlite3_bind_text(st, 2, key, -1, SQLITE_STATIC);
    int64_t *ids = NULL;
    char **keys = NULL;
    size_t n = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *title = (const char *)sqlite3_column_text(st, 1);
        const char *k = (const char *)sqlite3_column_text(st, 2);
        char *made = NULL;
        if (!k && title) {
            k = made = pl_lookalike_key(title, strlen(title));
            if (made) {
                ids = pl_realloc(ids, (n + 1) * sizeof *ids);
                keys = pl_realloc(keys, (n + 1) * sizeof *keys);
                ids[n] = sqlite3_column_int64(st, 0);
                keys[n++] = made;
            }
        }
        if (k && title && !strcmp(k, key) && strcmp(title, j->title) && !pl_lookalike_both_ascii(title, j->title))
            taken = 1;
    }
    sqlite3_finalize(st);
    for (size_t i = 0; i < n && rc == SQLITE_DONE; i++)
        if (sq_run(s->wdb, &src, NULL, "UPDATE conversations SET name_key = ?1 WHERE id = ?2", "ti", keys[i],
                   ids[i]) < 0)
            rc = src ? src : SQLITE_ERROR;
    for (size_t i = 0; i < n; i++) free(keys[i]);
    free(keys);
    free(ids);
    if (rc != SQLITE_DONE) return ws_fatal(s, rc);
    if (taken) j->why = "the name looks like another channel's";
    return taken;
}

static int channel_create(sq_store *s, pl_job *j, int64_t now) {
    int src = 0;
    int rc = sq_run(s->wdb, &src, NULL, "SELECT 1 FROM workspaces WHERE id = ?1", "i", j->id);
    if (rc <= 0) return rc < 0 ? ws_fatal(s, src) : PL_STORE_ENOTFOUND;
    int role = ws_role(s, j->id, j->user);
    if (role <= 0) return role < 0 ? role : PL_STORE_ENOTFOUND;
    if (!pl_store__channel_name_ok(j->title)) {
        j->why = "bad channel name";
        return PL_STORE_EINVAL;
    }
    if (j->nmembers && !j->members) return PL_STORE_EINVAL;
    for (size_t i = 0; i < j->nmembers; i++) {
        int64_t u = j->members[i];
        if (u == j->user) continue;
        if ((role = ws_role(s, j->id, u)) < 0) return role;
        if (role != PL_ROLE_NONE) continue;
        j->why = "not in the workspace";                /* no such user included */
        return PL_STORE_EFORBID;
    }
    rc = sq_run(s->wdb, &src, NULL, "SELECT 1 FROM conversations WHERE workspace = ?1 AND kind = 3 AND title = ?2",
                "it", j->id, j->title);
    if (rc < 0) return ws_fatal(s, src);
    if (rc) {
        j->why = "name taken";                 /* the job's own conflict (w_in_savepoint) */
        return PL_STORE_ECONFLICT;
    }
    char *key = pl_lookalike_key(j->title, strlen(j->title));
    if (key && (rc = lookalike_taken(s, j, j->id, key)) != 0) {
        free(key);
        return rc < 0 ? rc : PL_STORE_ECONFLICT;
    }
    if (s->workspace_channels > 0) {                /* after a taken name (409 before 413, as PostgreSQL's) */
        int64_t count = 0;
        rc = sq_run(s->wdb, &src, &count, "SELECT count(*) FROM conversations WHERE workspace = ?1 AND kind = 3",
                    "i", j->id);
        if (rc < 0 || count >= s->workspace_channels) {
            free(key);
            if (rc < 0) return ws_fatal(s, src);
            j->why = "too many channels";
            return PL_STORE_EINVAL;
        }
    }
    rc = sq_w_group_create(s, j, now, j->id, (j->flags & PL_JOB_PRIVATE) != 0);
    if (rc == PL_STORE_OK && key &&
        sq_run(s->wdb, &src, NULL, "UPDATE conversations SET name_key = ?1 WHERE id = ?2", "ti", key, j->out_id) < 0)
        rc = ws_fatal(s, src);
    free(key);
    return rc;
}

static int channel_join(sq_store *s, pl_job *j, int64_t now) {
    int src = 0;
    int64_t ws = 0, priv = 0;
    int rc = sq_run(s->wdb, &src, &ws, "SELECT workspace FROM conversations WHERE id = ?1 AND kind = 3", "i", j->conv);
    if (rc <= 0) return rc < 0 ? ws_fatal(s, src) : PL_STORE_ENOTFOUND;
    int wsrole = ws_role(s, ws, j->user), role;
    if (wsrole <= 0) return wsrole < 0 ? wsrole : PL_STORE_ENOTFOUND;
    if ((role = sq_w_member_role(s, j->conv, j->user)) != PL_ROLE_NONE) {
        if (role < 0) return role;
        j->out_id = j->conv;                   /* already in it */
        return PL_STORE_OK;
    }
    if (sq_run(s->wdb, &src, &priv, "SELECT private FROM conversations WHERE id = ?1", "i", j->conv) < 0)
        return ws_fatal(s, src);
    if (priv) {        /* one everyone left: a workspace admin takes it back (invariant 11) */
        int err = 0;
        pl_conv_state *e = sq_w_conv_state(s, j->conv, &err);
        if (!e) return err;
        if (wsrole != PL_ROLE_ADMIN || e->member_count > 0) return PL_STORE_ENOTFOUND;
    }
    j->out_id = j->conv;
    if ((rc = sq_w_member_join(s, j, now, j->conv, j->user, j->user)) != PL_STORE_OK ||
        (rc = sq_w_promote_if_needed(s, j->conv)) != PL_STORE_OK)      /* an empty channel: its admin now */
        return rc;
    j->created = 1;
    return PL_STORE_OK;
}

static int ws_role_set(sq_store *s, pl_job *j) {
    int src = 0;
    int rc = sq_run(s->wdb, &src, NULL, "SELECT 1 FROM workspaces WHERE id = ?1", "i", j->id);
    if (rc <= 0) return rc < 0 ? ws_fatal(s, src) : PL_STORE_ENOTFOUND;
    int role = ws_role(s, j->id, j->user);
    if (role <= 0) return role < 0 ? role : PL_STORE_ENOTFOUND;
    if (role != PL_ROLE_ADMIN) return PL_STORE_EFORBID;
    if ((role = ws_role(s, j->id, j->peer)) <= 0) return role < 0 ? role : PL_STORE_ENOTFOUND;
    j->out_id = j->id;
    if (role == j->level) return PL_STORE_OK;                  /* no change */
    if (j->level != PL_ROLE_ADMIN) {
        rc = sq_run(s->wdb, &src, NULL, "SELECT 1 FROM workspace_members WHERE workspace_id = ?1 AND role = 2"
                    " AND user_id <> ?2 LIMIT 1", "ii", j->id, j->peer);
        if (rc < 0) return ws_fatal(s, src);
        if (!rc) {
            j->why = "the last admin: make another member admin first";
            return PL_STORE_EINVAL;
        }
    }
    if (sq_run(s->wdb, &src, NULL, "UPDATE workspace_members SET role = ?1 WHERE workspace_id = ?2 AND user_id = ?3",
               "iii", (int64_t)j->level, j->id, j->peer) < 0)
        return ws_fatal(s, src);
    j->created = 1;
    return PL_STORE_OK;
}

int sq_ws_is_general(sq_store *s, int64_t conv) {
    int src = 0;
    int rc = sq_run(s->wdb, &src, NULL, "SELECT 1 FROM workspaces WHERE general = ?1", "i", conv);
    return rc < 0 ? ws_fatal(s, src) : rc;
}

int sq_job_ws(sq_store *s, pl_job *j, int64_t now) {
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

/* The workspace of conv when it is a channel (0 otherwise, or when conv
 * does not exist: *exists), or W_FATAL. */
static int64_t channel_ws(sq_store *s, int64_t conv, int *exists) {
    int src = 0;
    int64_t kind = 0, ws = 0;
    int rc = sq_run(s->wdb, &src, &kind, "SELECT kind FROM conversations WHERE id = ?1", "i", conv);
    if (rc < 0) return ws_fatal(s, src);
    *exists = rc;
    if (!rc || kind != PL_CONV_CHANNEL) return 0;
    if (sq_run(s->wdb, &src, &ws, "SELECT workspace FROM conversations WHERE id = ?1", "i", conv) < 0)
        return ws_fatal(s, src);
    return ws;
}

int sq_ws_channel_admits(sq_store *s, int64_t conv, int64_t user) {
    int exists = 0;
    int64_t ws = channel_ws(s, conv, &exists);
    if (ws <= 0) return ws < 0 ? (int)ws : PL_STORE_OK;
    int role = ws_role(s, ws, user);
    if (role < 0) return role;
    return role != PL_ROLE_NONE ? PL_STORE_OK : PL_STORE_EFORBID;
}

int sq_ws_evictable(sq_store *s, int64_t conv, int64_t user, int64_t actor, const char **why) {
    int exists = 0;
    int64_t ws = channel_ws(s, conv, &exists);
    if (ws < 0) return (int)ws;
    if (!exists) return PL_STORE_ENOTFOUND;
    if (!ws) {
        *why = "not a channel";
        return PL_STORE_EFORBID;
    }
    int role = sq_w_member_role(s, conv, user);
    if (role < 0) return role;
    if (role == PL_ROLE_NONE) {
        *why = "not a member";
        return PL_STORE_EFORBID;
    }
    if ((role = ws_role(s, ws, user)) < 0) return role;
    if (role == PL_ROLE_NONE || actor == user) return PL_STORE_OK;       /* out, or leaving */
    if ((role = ws_role(s, ws, actor)) < 0) return role;
    if (role == PL_ROLE_ADMIN) return PL_STORE_OK;                          /* a workspace admin */
    *why = "still in the workspace";
    return PL_STORE_EFORBID;
}

/* ---- reads ---------------------------------------------------------------- */

#define WS_COLUMNS \
    "w.id, w.name, w.created_by, w.created, w.general," \
    " (SELECT count(*) FROM workspace_members x WHERE x.workspace_id = w.id)," \
    " (SELECT count(*) FROM conversations c WHERE c.workspace = w.id AND c.kind = 3), m.role," \
    " w.retention, w.hold" \
    " FROM workspace_members m JOIN workspaces w ON w.id = m.workspace_id"

static int r_workspaces(sq_reader *r, pl_job *j, int one) {
    int src = 0;
    sqlite3_stmt *st = sq_prep(r->db, one ? "SELECT " WS_COLUMNS " WHERE m.user_id = ?1 AND w.id = ?2"
                                          : "SELECT " WS_COLUMNS " WHERE m.user_id = ?1 ORDER BY w.id", &src);
    if (!st) return PL_STORE_EUNAVAIL;
    sqlite3_bind_int64(st, 1, j->user);
    if (one) sqlite3_bind_int64(st, 2, j->id);
    size_t cap = 0;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (j->nworkspaces == cap) {
            cap = cap ? cap * 2 : 8;
            j->workspaces = pl_realloc(j->workspaces, cap * sizeof *j->workspaces);
        }
        pl_workspace *w = &j->workspaces[j->nworkspaces++];
        memset(w, 0, sizeof *w);
        w->id = sqlite3_column_int64(st, 0);
        w->name = sq_col_text(st, 1, NULL);
        w->created_by = sqlite3_column_int64(st, 2);
        w->created = sqlite3_column_int64(st, 3);
        w->general = sqlite3_column_int64(st, 4);
        w->member_count = sqlite3_column_int64(st, 5);
        w->channel_count = sqlite3_column_int64(st, 6);
        w->role = sqlite3_column_int(st, 7);
        w->retention = sqlite3_column_int64(st, 8);           /* invariant 13 */
        w->hold = sqlite3_column_int(st, 9);
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) return PL_STORE_EUNAVAIL;
    if (!one) return PL_STORE_OK;
    if (!j->nworkspaces) return PL_STORE_ENOTFOUND;
    pl_workspace *w = &j->workspaces[0];
    st = sq_prep(r->db, "SELECT m.user_id, m.role, u.username FROM workspace_members m"
                        " JOIN users u ON u.id = m.user_id WHERE m.workspace_id = ?1 ORDER BY m.joined", &src);
    if (!st) return PL_STORE_EUNAVAIL;
    sqlite3_bind_int64(st, 1, w->id);
    cap = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (w->nmembers == cap) {
            cap = cap ? cap * 2 : 16;
            w->members = pl_realloc(w->members, cap * sizeof *w->members);
        }
        pl_member *m = &w->members[w->nmembers++];
        memset(m, 0, sizeof *m);
        m->user = sqlite3_column_int64(st, 0);
        m->role = sqlite3_column_int(st, 1);
        const char *name = (const char *)sqlite3_column_text(st, 2);
        snprintf(m->username, sizeof m->username, "%s", name ? name : "");
    }
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? PL_STORE_OK : PL_STORE_EUNAVAIL;
}

static int r_channels(sq_reader *r, pl_job *j) {
    int src = 0;
    sqlite3_stmt *st = sq_prep(r->db, "SELECT 1 FROM workspace_members WHERE workspace_id = ?1 AND user_id = ?2",
                               &src);
    if (!st) return PL_STORE_EUNAVAIL;
    sqlite3_bind_int64(st, 1, j->id);
    sqlite3_bind_int64(st, 2, j->user);
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_ROW) return rc == SQLITE_DONE ? PL_STORE_ENOTFOUND : PL_STORE_EUNAVAIL;
    st = sq_prep(r->db,
                 "SELECT c.id, c.title, c.private, c.last_seq, c.last_ts, c.member_count, coalesce(m.role, 0),"
                 " coalesce(m.joined_seq, 0), coalesce(m.delivered_seq, 0), coalesce(m.read_seq, 0),"
                 " coalesce(m.notify, 0)"
                 " FROM conversations c LEFT JOIN members m ON m.conv_id = c.id AND m.user_id = ?2"
                 " WHERE c.workspace = ?1 AND c.kind = 3 AND (c.private = 0 OR m.user_id IS NOT NULL"
                 "   OR (c.member_count = 0 AND EXISTS (SELECT 1 FROM workspace_members w"   /* to rescue it */
                 "     WHERE w.workspace_id = ?1 AND w.user_id = ?2 AND w.role = 2)))"
                 " ORDER BY c.title", &src);
    if (!st) return PL_STORE_EUNAVAIL;
    sqlite3_bind_int64(st, 1, j->id);
    sqlite3_bind_int64(st, 2, j->user);
    size_t cap = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (j->nconvs == cap) {
            cap = cap ? cap * 2 : 16;
            j->convs = pl_realloc(j->convs, cap * sizeof *j->convs);
        }
        pl_conv *c = &j->convs[j->nconvs++];
        memset(c, 0, sizeof *c);
        c->id = sqlite3_column_int64(st, 0);
        c->kind = PL_CONV_CHANNEL;
        c->title = sq_col_text(st, 1, NULL);
        c->workspace = j->id;
        c->is_private = sqlite3_column_int(st, 2);
        c->last_seq = sqlite3_column_int64(st, 3);
        c->last_ts = sqlite3_column_int64(st, 4);
        c->member_count = sqlite3_column_int64(st, 5);
        c->role = sqlite3_column_int(st, 6);
        c->joined_seq = sqlite3_column_int64(st, 7);
        c->delivered_seq = sqlite3_column_int64(st, 8);
        c->read_seq = sqlite3_column_int64(st, 9);
        c->notify = sqlite3_column_int(st, 10);
    }
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? PL_STORE_OK : PL_STORE_EUNAVAIL;
}

/* A channel's workspace (0: not a channel, or none). */
static int r_conv_workspace(sq_reader *r, pl_job *j) {
    int src = 0;
    int64_t ws = 0;
    int rc = sq_run(r->db, &src, &ws, "SELECT workspace FROM conversations WHERE id = ?1 AND kind = 3", "i", j->conv);
    if (rc < 0) return PL_STORE_EUNAVAIL;
    j->out_id = rc ? ws : 0;
    if (j->user > 0) {
        rc = sq_run(r->db, &src, NULL, "SELECT 1 FROM members WHERE conv_id = ?1 AND user_id = ?2", "ii", j->conv,
                    j->user);
        if (rc < 0) return PL_STORE_EUNAVAIL;
        j->created = rc;
    }
    return PL_STORE_OK;
}

int sq_read_ws(sq_reader *r, pl_job *j) {
    switch (j->op) {
    case PL_READ_CONV_WORKSPACE: return r_conv_workspace(r, j);
    case PL_READ_WORKSPACES:    return r_workspaces(r, j, 0);
    case PL_READ_WORKSPACE_GET: return r_workspaces(r, j, 1);
    case PL_READ_CHANNELS:      return r_channels(r, j);
    default:                    return PL_STORE_EINVAL;
    }
}
