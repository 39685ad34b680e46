/* store_pg_jobs.c — the PostgreSQL writer's single jobs: accounts, logins,
 * conversations and their members, last seen, the outbox; message actions
 * are handed to store_pg_actions.c, push jobs to store_pg_push.c, reports
 * to store_pg_reports.c, the data lifecycle to store_pg_life.c (see
 * store_pg.c for the invariants; the SQLite backend's store_sqlite_write.c
 * and the files beside it (_members, _accounts, _receipts) are the
 * reference for each job's checks, their order and their outputs).
 *
 * Owns: each job's statements. Job-level outcomes are decided before the
 * writes (or by ON CONFLICT DO NOTHING); a job of several statements runs
 * in a SAVEPOINT so an unexpected error fails it alone (store_pg.c,
 * invariant 4). Each returns PL_STORE_OK or a PL_STORE_E* for the job, or a
 * W_* when the batch must fail.
 */
#include "pg_int.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/alloc.h"
#include "../core/log.h"

/* ---- helpers ---------------------------------------------------------------- */

int64_t pg_cmd_tuples(const PGresult *r) { return strtoll(PQcmdTuples((PGresult *)r), NULL, 10); }

void pg_event_params(pg_params *p, const pg_conv *e, uint64_t id, int64_t now, int kind, int64_t sender,
                     int64_t subject, const char *data, int64_t ref, const char *body, size_t body_len) {
    pg_param_i64(p, e->conv);
    pg_param_i64(p, e->last_seq + 1);
    pg_param_i64(p, (int64_t)id);
    pg_param_i64(p, now);
    pg_param_i64(p, kind);
    pg_param_i64(p, sender);
    pg_param_i64(p, subject);
    pg_param_i64(p, e->msg_count);
    pg_param_text(p, data);
    pg_param_i64(p, ref);
    if (body) pg_param_bytes(p, body, body_len);
    else pg_param_text(p, NULL);
}

/* ---- savepoints ------------------------------------------------------------ */

/* After a failed round trip that holds [.. SAVEPOINT at sp .. the job's
 * statements]: a failure at or before the savepoint (a queued statement of
 * an earlier job), of the connection, or a deadlock fails the batch; one
 * after it fails this job alone (invariant 4 of store_pg.c). */
int pg_sp_failed(pg_store *s, pl_job *j, int sp, int rc) {
    if (rc != W_FATAL || s->w.err_slot <= sp) return rc;
    pg_log_failure(PL_LOG_ERROR, &s->w, "store: job failed; rolled back to its savepoint");
    pg_reset_outputs(j);
    if (pg_w_send(s, W_ROLLBACK_TO, NULL, 0) < 0 || pg_w_send(s, W_RELEASE, NULL, 0) < 0) return W_LOST;
    rc = pg_w_sync(s);
    return rc ? rc : PL_STORE_EUNAVAIL;
}

/* ---- jobs ------------------------------------------------------------------- */

static int job_user_create(pg_store *s, pl_job *j, int64_t now) {
    if (!j->username || !j->pwhash || !pg_utf8_ok(j->username) || !pg_utf8_ok(j->pwhash))
        return PL_STORE_EINVAL;
    pg_params p = {0};
    pg_param_text(&p, j->username);
    pg_param_text(&p, j->pwhash);
    pg_param_i64(&p, now);
    int rc;
    PGresult *r = pg_w_query(s, W_USER_INSERT, &p, &rc);
    if (!r) return rc;
    if (PQntuples(r) != 1) return PL_STORE_ECONFLICT;   /* the username is taken */
    j->out_id = pg_i64(r, 0, 0);
    return PL_STORE_OK;
}

static int job_login_create(pg_store *s, pl_job *j, int64_t now) {
    pg_params p = {0};
    pg_param_i64(&p, j->user);
    pg_param_bytes(&p, j->hash, sizeof j->hash);
    pg_param_i64(&p, j->expires);
    pg_param_i64(&p, now);
    int rc;
    PGresult *r = pg_w_query(s, W_LOGIN_INSERT, &p, &rc);
    if (!r) return rc;
    if (PQntuples(r) != 1) return PL_STORE_ENOTFOUND;   /* no such user */
    j->out_id = pg_i64(r, 0, 0);
    j->login_out.created = now;                 /* its access tokens' stamp */
    return PL_STORE_OK;
}

/* Rotates only a live login presenting its current hash. */
static int job_login_rotate(pg_store *s, pl_job *j, int64_t now) {
    pg_params p = {0};
    pg_param_bytes(&p, j->hash2, sizeof j->hash2);
    pg_param_i64(&p, j->expires);
    pg_param_i64(&p, j->id);
    pg_param_i64(&p, now);
    pg_param_bytes(&p, j->hash, sizeof j->hash);
    int rc;
    PGresult *r = pg_w_query(s, W_LOGIN_ROTATE, &p, &rc);
    if (!r) return rc;
    if (pg_cmd_tuples(r) == 0) return PL_STORE_ENOTFOUND;
    j->out_id = j->id;
    return PL_STORE_OK;
}

/* Revokes the login and deletes its push devices (one statement). */
static int job_login_revoke(pg_store *s, pl_job *j, int64_t now) {
    pg_params p = {0};
    pg_param_i64(&p, j->id);
    int rc;
    PGresult *r = pg_w_query(s, W_LOGIN_REVOKE, &p, &rc);
    if (!r) return rc;
    if (pg_i64(r, 0, 0) == 0) return PL_STORE_ENOTFOUND;
    j->out_id = j->id;
    return PL_STORE_OK;
}

/* A conversation created by this batch: its row already holds its final
 * counters (no flush), and the batch appended its CREATED event. */
pg_conv *pg_conv_created(pg_store *s, int64_t conv, int kind, int64_t members) {
    pg_conv *e = pg_conv_put(s, conv);
    e->kind = kind;
    e->member_count = members;
    return e;
}

/* A pair that has a direct conversation gets it back; a new one is created
 * under the pair's lock unless either blocks the other (store.h invariant
 * 14; the lock: store_pg_reports.c). */
static int job_direct_open(pg_store *s, pl_job *j, int64_t now) {
    if (j->user == j->peer) return PL_STORE_EINVAL;
    char key[48];
    int64_t lo = j->user < j->peer ? j->user : j->peer;
    int64_t hi = j->user < j->peer ? j->peer : j->user;
    snprintf(key, sizeof key, "%lld:%lld", (long long)lo, (long long)hi);

    pg_arr *ids = &s->arr[0];
    pg_arr_start(ids, PG_INT8);
    pg_arr_i64(ids, j->user);
    pg_arr_i64(ids, j->peer);
    pg_params p = {0}, q = {0};
    pg_param_arr(&p, ids);
    pg_param_text(&q, key);
    int us = pg_w_send(s, W_USERS_EXIST, &p, 1), ks = us < 0 ? us : pg_w_send(s, W_CONV_BY_KEY, &q, 1);
    if (ks < 0) return ks;
    int rc = pg_w_sync(s);
    if (rc) return rc;
    if (PQntuples(s->w.res[us]) != 2) return PL_STORE_ENOTFOUND;
    if (PQntuples(s->w.res[ks]) == 1) {              /* the pair already has one */
        j->out_id = pg_i64(s->w.res[ks], 0, 0);
        return PL_STORE_OK;
    }

    uint64_t id = pl_idgen_next(&s->ids, now);
    char data[96];
    snprintf(data, sizeof data, "{\"kind\":\"direct\",\"members\":[%lld,%lld]}", (long long)j->user,
             (long long)j->peer);
    pg_params c = {0}, b = {0};
    pg_param_text(&c, key);
    pg_param_i64(&c, now);
    pg_param_i64(&c, j->user);
    pg_param_i64(&c, j->peer);
    pg_param_i64(&c, (int64_t)id);
    pg_param_text(&c, data);
    pg_param_i64(&b, j->user);
    pg_param_i64(&b, j->peer);
    int sp = pg_w_send(s, W_SAVEPOINT, NULL, 0), bs = -1, cs = -1;
    if (sp < 0 || pg_w_send(s, W_PAIR_LOCK, &q, 0) < 0 || (bs = pg_w_send(s, W_BLOCKED_PAIR, &b, 1)) < 0 ||
        (cs = pg_w_send(s, W_DIRECT_CREATE, &c, 1)) < 0 || pg_w_send(s, W_RELEASE, NULL, 0) < 0)
        return W_LOST;
    if ((rc = pg_w_sync(s)) != PL_STORE_OK) return pg_sp_failed(s, j, sp, rc);
    if (PQntuples(s->w.res[cs]) != 1) {
        /* another node created the pair meanwhile and committed (the pair's
         * lock or ON CONFLICT waited for it): that one is the conversation,
         * blocked or not; else a block stopped the creation */
        int blocked = PQgetvalue(s->w.res[bs], 0, 0)[0] == 't';
        PGresult *r = pg_w_query(s, W_CONV_BY_KEY, &q, &rc);
        if (!r) return rc;
        if (PQntuples(r) != 1) {
            if (!blocked) return PL_STORE_EUNAVAIL;
            j->why = "blocked";
            return PL_STORE_EFORBID;
        }
        j->out_id = pg_i64(r, 0, 0);
        return PL_STORE_OK;
    }
    int64_t conv = pg_i64(s->w.res[cs], 0, 0);
    pg_conv *e = pg_conv_created(s, conv, PL_CONV_DIRECT, 2);
    pg_appended(s, e, j, 1, id, now, PL_EV_CREATED, j->user, 0, NULL, NULL, 0, pl_strdup(data));
    e->dirty = 0;                                     /* the row has it all */
    j->out_id = conv;
    j->created = 1;
    return PL_STORE_OK;
}

static int has_i64(const int64_t *sorted, size_t n, int64_t v) {
    return bsearch(&v, sorted, n, sizeof v, pg_cmp_i64) != NULL;
}

static int job_group_create(pg_store *s, pl_job *j, int64_t now) {
    if (!j->title || (j->nmembers && !j->members)) return PL_STORE_EINVAL;
    pg_arr *ids = &s->arr[0];
    pg_arr_start(ids, PG_INT8);
    pg_arr_i64(ids, j->user);
    for (size_t i = 0; i < j->nmembers; i++) pg_arr_i64(ids, j->members[i]);
    pg_params p = {0};
    pg_param_arr(&p, ids);
    int rc;
    PGresult *r = pg_w_query(s, W_USERS_EXIST, &p, &rc);
    if (!r) return rc;
    size_t nfound = (size_t)PQntuples(r);
    int64_t *found = pl_malloc((nfound ? nfound : 1) * sizeof *found);
    for (size_t i = 0; i < nfound; i++) found[i] = pg_i64(r, (int)i, 0);
    qsort(found, nfound, sizeof *found, pg_cmp_i64);

    /* the other members, deduplicated in first-seen order, creator skipped;
     * the same checks in the same order as the SQLite backend */
    int64_t *all = pl_malloc((j->nmembers + 1) * sizeof *all);
    size_t n = 0;
    char *data = NULL;
    pg_kset seen;
    pg_kset_init(&seen, j->nmembers + 1);
    rc = PL_STORE_OK;
    all[n++] = j->user;
    if (!has_i64(found, nfound, j->user)) { rc = PL_STORE_ENOTFOUND; goto out; }
    for (size_t i = 0; i < j->nmembers; i++) {
        int64_t u = j->members[i];
        if (u == j->user) continue;
        if (u <= 0) { rc = PL_STORE_ENOTFOUND; goto out; }
        size_t k = pg_kset_slot(&seen, u, 0, NULL, NULL);
        if (seen.v[k] >= 0) continue;
        seen.v[k] = 1;
        if (!has_i64(found, nfound, u)) { rc = PL_STORE_ENOTFOUND; goto out; }
        all[n++] = u;
    }
    if (!pg_utf8_ok(j->title) || !(data = pl_store__data_group(j->title, j->user, all + 1, n - 1))) {
        rc = PL_STORE_EINVAL;
        goto out;
    }

    uint64_t id = pl_idgen_next(&s->ids, now);
    pg_arr_start(ids, PG_INT8);
    for (size_t i = 0; i < n; i++) pg_arr_i64(ids, all[i]);
    pg_params c = {0};
    pg_param_text(&c, j->title);
    pg_param_i64(&c, now);
    pg_param_i64(&c, (int64_t)n);
    pg_param_arr(&c, ids);
    pg_param_i64(&c, (int64_t)id);
    pg_param_i64(&c, j->user);
    pg_param_text(&c, data);
    int sp = pg_w_send(s, W_SAVEPOINT, NULL, 0);
    int cs = sp < 0 ? sp : pg_w_send(s, W_GROUP_CREATE, &c, 1);
    if (cs < 0 || pg_w_send(s, W_RELEASE, NULL, 0) < 0) { rc = W_LOST; goto out; }
    if ((rc = pg_w_sync(s)) != PL_STORE_OK) { rc = pg_sp_failed(s, j, sp, rc); goto out; }
    if (PQntuples(s->w.res[cs]) != 1) { rc = W_FATAL; goto out; }
    int64_t conv = pg_i64(s->w.res[cs], 0, 0);
    pg_conv *e = pg_conv_created(s, conv, PL_CONV_GROUP, (int64_t)n);
    pg_appended(s, e, j, 1, id, now, PL_EV_CREATED, j->user, 0, NULL, NULL, 0, data);
    data = NULL;                                      /* taken over */
    e->dirty = 0;
    j->out_id = conv;
out:
    pg_kset_free(&seen);
    free(data);
    free(all);
    free(found);
    return rc;
}

/* The roles of actor and peer in conv (PL_ROLE_NONE if not members) and
 * whether peer is a user (stmt W_MEMBER_CHECK), or a live user whose row is
 * kept to COMMIT (W_MEMBER_CHECK_ADD: store.h invariant 13). A round trip:
 * the map is filled after it. */
static int w_member_check(pg_store *s, int stmt, int64_t conv, int64_t actor, int64_t peer, int *arole,
                          int *prole, int *pexists) {
    pg_params p = {0};
    pg_param_i64(&p, conv);
    pg_param_i64(&p, actor);
    pg_param_i64(&p, peer);
    int rc;
    PGresult *r = pg_w_query(s, stmt, &p, &rc);
    if (!r) return rc;
    *arole = (int)pg_i64(r, 0, 0);
    *prole = (int)pg_i64(r, 0, 1);
    *pexists = PQgetvalue(r, 0, 2)[0] == 't';
    return PL_STORE_OK;
}

int pg_member_role(pg_store *s, int64_t conv, int64_t user, int *role) {
    int prole = 0, pexists = 0;
    return w_member_check(s, W_MEMBER_CHECK, conv, user, user, role, &prole, &pexists);
}

/* Checks shared by add and remove, in the SQLite backend's order: conv
 * exists and the actor is a member (else ENOTFOUND: non-members cannot
 * tell), it is a group or a channel (EINVAL), the actor is an admin
 * (EFORBID). */
static int w_check_admin(pg_conv *e, int arole) {
    if (!e || arole == PL_ROLE_NONE) return PL_STORE_ENOTFOUND;
    if (e->kind == PL_CONV_DIRECT) return PL_STORE_EINVAL;
    if (arole != PL_ROLE_ADMIN) return PL_STORE_EFORBID;
    return PL_STORE_OK;
}

int pg_member_join(pg_store *s, pl_job *j, pg_conv *e, int64_t peer, int64_t now, int join, int pre,
                   const pg_params *pre_p, int post, const pg_params *post_p) {
    uint64_t id = join ? pl_idgen_next(&s->ids, now) : 0;
    char *data = join ? pl_store__data_user(peer) : NULL;
    pg_params m = {0}, ev = {0};
    if (join) {
        pg_param_i64(&m, e->conv);
        pg_param_i64(&m, peer);
        pg_param_i64(&m, e->last_seq + 1);              /* joined at its member_added event */
        pg_event_params(&ev, e, id, now, PL_EV_MEMBER_ADDED, j->user, peer, data, 0, NULL, 0);
    }
    int sp = pg_w_send(s, W_SAVEPOINT, NULL, 0), rc;
    if (sp < 0 || (pre >= 0 && pg_w_send(s, pre, pre_p, 0) < 0) ||
        (join && (pg_w_send(s, W_MEMBER_JOIN, &m, 0) < 0 || pg_w_send(s, W_EVENT_INSERT, &ev, 0) < 0)) ||
        (post >= 0 && pg_w_send(s, post, post_p, 0) < 0) || pg_w_send(s, W_RELEASE, NULL, 0) < 0) {
        free(data);
        return W_LOST;
    }
    if ((rc = pg_w_sync(s)) != PL_STORE_OK) {
        free(data);
        return pg_sp_failed(s, j, sp, rc);
    }
    if (join) {
        e->member_count++;
        pg_appended(s, e, j, e->last_seq + 1, id, now, PL_EV_MEMBER_ADDED, j->user, peer, NULL, NULL, 0, data);
    }
    return PL_STORE_OK;
}

/* A channel takes only members of its workspace (store.h invariant 11). */
static int job_member_add(pg_store *s, pl_job *j, int64_t now) {
    int arole = 0, prole = 0, pexists = 0, rc;
    if ((rc = w_member_check(s, W_MEMBER_CHECK_ADD, j->conv, j->user, j->peer, &arole, &prole, &pexists)))
        return rc;
    pg_conv *e = pg_conv_find(s, j->conv);                   /* after a sync */
    if ((rc = w_check_admin(e, arole)) != PL_STORE_OK) return rc;
    if (!pexists && e->kind != PL_CONV_CHANNEL) return PL_STORE_ENOTFOUND;
    if (e->kind == PL_CONV_CHANNEL) {             /* an id no user has: not in it either */
        int in_ws = 0;
        if ((rc = pg_ws_member_of_conv(s, j->conv, j->peer, &in_ws)) != PL_STORE_OK) return rc;
        if (!in_ws) {
            j->why = "not in the workspace";
            return PL_STORE_EFORBID;
        }
        e = pg_conv_find(s, j->conv);
    }
    j->out_id = j->conv;
    if (prole != PL_ROLE_NONE) return PL_STORE_OK;               /* no-op */
    return pg_member_join(s, j, e, j->peer, now, 1, -1, NULL, -1, NULL);
}

/* Removes peer (by actor; peer == actor for a leave): the row goes, the
 * earliest-joined member becomes admin if none is left (the event's data
 * names it: pl_store__data_departure), the event is appended. Who that is
 * is read first: the conversation's lock keeps the members as they are. */
static int w_member_out(pg_store *s, pl_job *j, pg_conv *e, int64_t peer, int kind, int64_t now) {
    pg_params d = {0}, pr = {0}, ev = {0};
    pg_param_i64(&d, j->conv);
    pg_param_i64(&d, peer);
    int rc;
    PGresult *r = pg_w_query(s, W_PROMOTE_WHO, &d, &rc);
    if (!r) return rc;
    int64_t promoted = PQntuples(r) ? pg_i64(r, 0, 0) : 0;
    if (!(e = pg_conv_find(s, j->conv))) return PL_STORE_ENOTFOUND;   /* after a sync */
    uint64_t id = pl_idgen_next(&s->ids, now);
    char *data = pl_store__data_departure(peer, promoted);
    pg_param_i64(&pr, j->conv);
    pg_param_i64(&pr, promoted);
    pg_param_i64(&pr, PL_ROLE_ADMIN);
    pg_event_params(&ev, e, id, now, kind, j->user, peer, data, 0, NULL, 0);
    int sp = pg_w_send(s, W_SAVEPOINT, NULL, 0);
    if (sp < 0 || pg_w_send(s, W_MEMBER_DELETE, &d, 0) < 0 ||
        (promoted && pg_w_send(s, W_MEMBER_SET_ROLE, &pr, 0) < 0) ||
        pg_w_send(s, W_EVENT_INSERT, &ev, 0) < 0 || pg_w_send(s, W_RELEASE, NULL, 0) < 0) {
        free(data);
        return W_LOST;
    }
    if ((rc = pg_w_sync(s)) != PL_STORE_OK) {
        free(data);
        return pg_sp_failed(s, j, sp, rc);
    }
    pl_own_ent *o = pl_own_find(&s->own, j->conv, peer);       /* a later re-join starts from 0 */
    if (o) o->delta = 0;
    e->member_count--;
    j->out_id = j->conv;
    pg_appended(s, e, j, e->last_seq + 1, id, now, kind, j->user, peer, NULL, NULL, 0, data);
    return PL_STORE_OK;
}

/* EINVAL (why) for a workspace's "general": its members leave it only
 * with the workspace (store.h invariant 11). */
static int w_not_general(pg_store *s, pl_job *j, const pg_conv *e) {
    int general = 0, rc;
    if (e->kind != PL_CONV_CHANNEL) return PL_STORE_OK;
    if ((rc = pg_ws_is_general(s, j->conv, &general)) != PL_STORE_OK) return rc;
    if (!general) return PL_STORE_OK;
    j->why = "everyone in the workspace is in #general";
    return PL_STORE_EINVAL;
}

/* With PL_JOB_EVICT (store.h invariant 11): peer, a member of the channel,
 * is removed by the actor when peer is out of the workspace, or is the
 * actor, or the actor is an admin of the workspace (whatever the actor's
 * membership of the channel); anything else is EFORBID. */
static int job_member_remove(pg_store *s, pl_job *j, int64_t now) {
    int arole = 0, prole = 0, pexists = 0, rc;
    if ((rc = w_member_check(s, W_MEMBER_CHECK, j->conv, j->user, j->peer, &arole, &prole, &pexists)))
        return rc;
    pg_conv *e = pg_conv_find(s, j->conv);
    if (j->flags & PL_JOB_EVICT) {
        if (!e) return PL_STORE_ENOTFOUND;
        int in_ws = 1, actor_ws = PL_ROLE_NONE;
        if (e->kind == PL_CONV_CHANNEL && prole != PL_ROLE_NONE &&
            (rc = pg_ws_member_of_conv(s, j->conv, j->peer, &in_ws)) != PL_STORE_OK)
            return rc;
        if (in_ws && j->user == j->peer) in_ws = 0;           /* leaving: its own */
        if (in_ws && e->kind == PL_CONV_CHANNEL && prole != PL_ROLE_NONE &&
            (rc = pg_ws_member_of_conv(s, j->conv, j->user, &actor_ws)) != PL_STORE_OK)
            return rc;
        if (actor_ws == PL_ROLE_ADMIN) in_ws = 0;             /* a workspace admin's */
        if (e->kind != PL_CONV_CHANNEL || prole == PL_ROLE_NONE || in_ws) {
            j->why = e->kind != PL_CONV_CHANNEL ? "not a channel"
                     : prole == PL_ROLE_NONE    ? "not a member"
                                                : "still in the workspace";
            return PL_STORE_EFORBID;
        }
        return w_member_out(s, j, pg_conv_find(s, j->conv), j->peer, PL_EV_MEMBER_REMOVED, now);
    }
    if ((rc = w_check_admin(e, arole)) != PL_STORE_OK) return rc;
    if (prole == PL_ROLE_NONE) return PL_STORE_ENOTFOUND;
    if ((rc = w_not_general(s, j, e)) != PL_STORE_OK) return rc;
    return w_member_out(s, j, e, j->peer, PL_EV_MEMBER_REMOVED, now);
}

/* MEMBER_ROLE: the checks of a removal, in the SQLite backend's order;
 * no change is no event; demoting the last admin is refused. */
static int job_member_role(pg_store *s, pl_job *j, int64_t now) {
    int arole = 0, prole = 0, pexists = 0, rc;
    if ((rc = w_member_check(s, W_MEMBER_CHECK, j->conv, j->user, j->peer, &arole, &prole, &pexists)))
        return rc;
    pg_conv *e = pg_conv_find(s, j->conv);
    if ((rc = w_check_admin(e, arole)) != PL_STORE_OK) return rc;
    if (prole == PL_ROLE_NONE) return PL_STORE_ENOTFOUND;
    j->out_id = j->conv;
    if (prole == j->level) return PL_STORE_OK;
    pg_params p = {0};
    pg_param_i64(&p, j->conv);
    pg_param_i64(&p, j->peer);
    if (j->level != PL_ROLE_ADMIN) {
        PGresult *r = pg_w_query(s, W_MEMBER_OTHER_ADMIN, &p, &rc);
        if (!r) return rc;
        if (PQgetvalue(r, 0, 0)[0] != 't') {
            j->why = "the last admin: make another member admin first";
            return PL_STORE_EINVAL;
        }
    }
    pg_param_i64(&p, j->level);
    return pg_write_and_append(s, j, e, W_MEMBER_SET_ROLE, &p, PL_EV_MEMBER_ROLE, j->peer,
                               pl_store__data_role(j->peer, j->level), now);
}

static int job_member_leave(pg_store *s, pl_job *j, int64_t now) {
    int arole = 0, prole = 0, pexists = 0, rc;
    if ((rc = w_member_check(s, W_MEMBER_CHECK, j->conv, j->user, j->user, &arole, &prole, &pexists)))
        return rc;
    pg_conv *e = pg_conv_find(s, j->conv);
    if (!e || arole == PL_ROLE_NONE) return PL_STORE_ENOTFOUND;
    if (e->kind == PL_CONV_DIRECT) return PL_STORE_EINVAL;
    if ((rc = w_not_general(s, j, e)) != PL_STORE_OK) return rc;
    return w_member_out(s, j, e, j->user, PL_EV_MEMBER_LEFT, now);
}

/* Deferred to the end of the batch, where users are locked in id order
 * (invariant 1); last_seen only moves forward, so the order of the jobs
 * does not matter. */
static int job_last_seen(pg_store *s, pl_job *j) {
    if (s->nseen + 2 > s->seen_cap) {
        s->seen_cap = s->seen_cap ? s->seen_cap * 2 : 64;
        s->seen = pl_realloc(s->seen, s->seen_cap * sizeof *s->seen);
    }
    s->seen[s->nseen++] = j->user;
    s->seen[s->nseen++] = j->expires;
    return PL_STORE_OK;
}

static int job_outbox_ack(pg_store *s, pl_job *j) {
    if (!s->outbox) return PL_STORE_OK;
    pg_params p = {0};
    pg_param_i64(&p, s->base.node_id);
    pg_param_i64(&p, j->id);
    return pg_w_send(s, W_OUTBOX_ACK, &p, 0) < 0 ? W_LOST : PL_STORE_OK;
}

static int job_outbox_takeover(pg_store *s, pl_job *j) {
    if (!s->outbox) return PL_STORE_OK;
    pg_params p = {0};
    pg_param_i64(&p, s->base.node_id);
    pg_param_i64(&p, PG_TAKEOVER_OWN_S);
    pg_param_i64(&p, PG_TAKEOVER_DEAD_S);
    int rc;
    PGresult *r = pg_w_query(s, W_OUTBOX_TAKEOVER, &p, &rc);
    if (!r) return rc;
    size_t n = (size_t)PQntuples(r);
    if (n) {
        j->out_ids = pl_malloc(n * sizeof *j->out_ids);
        j->heads = pl_malloc(n * sizeof *j->heads);
        for (size_t i = 0; i < n; i++) {
            j->out_ids[i] = pg_i64(r, (int)i, 0);
            j->heads[i] = pg_i64(r, (int)i, 1);
        }
    }
    j->nout = n;
    return PL_STORE_OK;
}
int pg_run_job(pg_store *s, pl_job *j, int64_t now) {
    switch (j->op) {
    case PL_JOB_USER_CREATE:     return job_user_create(s, j, now);
    case PL_JOB_LOGIN_CREATE:    return job_login_create(s, j, now);
    case PL_JOB_LOGIN_ROTATE:    return job_login_rotate(s, j, now);
    case PL_JOB_LOGIN_REVOKE:    return job_login_revoke(s, j, now);
    case PL_JOB_DIRECT_OPEN:     return job_direct_open(s, j, now);
    case PL_JOB_GROUP_CREATE:    return job_group_create(s, j, now);
    case PL_JOB_MEMBER_ADD:      return job_member_add(s, j, now);
    case PL_JOB_MEMBER_REMOVE:   return job_member_remove(s, j, now);
    case PL_JOB_MEMBER_LEAVE:    return job_member_leave(s, j, now);
    case PL_JOB_MEMBER_ROLE:     return job_member_role(s, j, now);
    case PL_JOB_LAST_SEEN:       return job_last_seen(s, j);
    case PL_JOB_OUTBOX_ACK:      return job_outbox_ack(s, j);
    case PL_JOB_OUTBOX_TAKEOVER: return job_outbox_takeover(s, j);
    case PL_JOB_MESSAGE_EDIT:
    case PL_JOB_MESSAGE_DELETE:
    case PL_JOB_REACTION:
    case PL_JOB_PIN:
    case PL_JOB_NOTIFY_SET:      return pg_run_action(s, j, now);
    case PL_JOB_KEYS_UPLOAD:                                   /* store_pg_keys.c */
    case PL_JOB_KEYS_DELETE:
    case PL_JOB_KEYS_CLAIM:
    case PL_JOB_CONV_E2EE:
    case PL_JOB_DEVICES_ANNOUNCE: return pg_job_e2ee(s, j, now);
    case PL_JOB_MEDIA_CREATE:
    case PL_JOB_MEDIA_THUMB:
    case PL_JOB_MEDIA_GC:        return pg_job_media(s, j, now);   /* store_pg_media.c */
    case PL_JOB_PUSH_REGISTER:                                  /* store_pg_push.c */
    case PL_JOB_PUSH_UNREGISTER:
    case PL_JOB_PUSH_CLAIM:
    case PL_JOB_PUSH_DONE:       return pg_job_push(s, j, now);
    case PL_JOB_WORKSPACE_CREATE:                               /* store_pg_ws.c */
    case PL_JOB_WORKSPACE_ADD:
    case PL_JOB_WORKSPACE_REMOVE:
    case PL_JOB_WORKSPACE_ROLE:
    case PL_JOB_CHANNEL_CREATE:
    case PL_JOB_CHANNEL_JOIN:    return pg_job_ws(s, j, now);
    case PL_JOB_REPORT:                                         /* store_pg_reports.c */
    case PL_JOB_REPORT_RESOLVE:
    case PL_JOB_BLOCK:           return pg_job_report(s, j, now);
    case PL_JOB_RETENTION_SET:                                  /* store_pg_life.c */
    case PL_JOB_HOLD_SET:
    case PL_JOB_RETENTION_PURGE:
    case PL_JOB_ACCOUNT_DELETE:  return pg_job_life(s, j, now);
    default:                     return PL_STORE_EINVAL;
    }
}

