/* store_pg_push.c — push notifications in the PostgreSQL backend (store.h
 * invariant 10): the devices logins registered, the outbox's claims and
 * completions, and the read that turns claimed rows into notifications.
 *
 * Owns: running the statements W_PUSH_*, R_PUSH_* (store_pg_stmts_w.c, _r.c). The outbox
 * row a MESSAGE's append writes is part of the run's INSERT
 * (W_SEND_INSERT_PUSH, store_pg_runs.c), and a revoked login's devices go
 * in its revoke (W_LOGIN_REVOKE, store_pg_jobs.c). Only the node whose
 * writer session holds the push drainer lock claims (p_drainer: one node
 * sends, so a device's notifications keep their order across nodes); a
 * claim leases rows with FOR UPDATE SKIP LOCKED all the same, so two
 * sessions never hold one row at once; a batch that rolls back gives its
 * rows back. Claims and completions write in a
 * savepoint (pg_sp_failed); a registration's single write cannot fail on
 * the client's input (checked first), so it takes none.
 * Does not own: sending (src/push/), the SQLite backend's twin
 * (store_sqlite_push.c, the reference for each outcome).
 */
#include "pg_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/alloc.h"
#include "../core/clock.h"
#include "../core/log.h"

/* ---- the writer's jobs --------------------------------------------------------- */

/* One row per (platform, token): new, or moved from another login (the
 * device changed accounts); nothing is written when it is this login's
 * already. The user's row is locked before the count, so registrations of
 * one user on several nodes are checked one after the other. */
static int p_register(pg_store *s, pl_job *j, int64_t now) {
    if (!j->token || !j->token[0] || strlen(j->token) > PL_PUSH_TOKEN_MAX || !pg_utf8_ok(j->token) ||
        j->platform < PL_PUSH_WEBHOOK || j->platform > PL_PUSH_APNS) {
        j->why = "bad platform or token";
        return PL_STORE_EINVAL;
    }
    pg_params u = {0}, p = {0};
    pg_param_i64(&u, j->user);
    pg_param_i64(&p, j->user);
    pg_param_i64(&p, j->id);
    pg_param_i64(&p, now);
    pg_param_i64(&p, j->platform);
    pg_param_text(&p, j->token);
    int ls = pg_w_send(s, W_PUSH_USER_LOCK, &u, 0);
    int ss = ls < 0 ? ls : pg_w_send(s, W_PUSH_STATE, &p, 1);
    if (ss < 0) return W_LOST;
    int rc = pg_w_sync(s);
    if (rc) return rc;
    PGresult *r = s->w.res[ss];
    if (PQgetvalue(r, 0, 0)[0] != 't') return PL_STORE_ENOTFOUND;    /* no live login of user */
    int exists = !pg_null(r, 0, 1);
    if (exists && pg_i64(r, 0, 2) == j->id) {                         /* already this login's */
        j->out_id = pg_i64(r, 0, 1);
        return PL_STORE_OK;
    }
    if ((!exists || pg_i64(r, 0, 3) != j->user) && pg_i64(r, 0, 4) >= PL_PUSH_DEVICES_MAX) {
        j->why = "too many push devices";                             /* the user would hold more */
        return PL_STORE_EINVAL;
    }
    pg_params w = {0};
    pg_param_i64(&w, j->user);
    pg_param_i64(&w, j->id);
    pg_param_i64(&w, j->platform);
    pg_param_text(&w, j->token);
    pg_param_i64(&w, now);
    if (!(r = pg_w_query(s, W_PUSH_REGISTER, &w, &rc))) return rc;
    if (PQntuples(r) != 1) return W_FATAL;
    j->out_id = pg_i64(r, 0, 0);
    j->created = 1;
    return PL_STORE_OK;
}

static int p_unregister(pg_store *s, pl_job *j) {
    pg_params p = {0};
    pg_param_i64(&p, j->id);
    pg_param_i64(&p, j->user);
    int rc;
    PGresult *r = pg_w_query(s, W_PUSH_UNREGISTER, &p, &rc);
    if (!r) return rc;
    return pg_cmd_tuples(r) > 0 ? PL_STORE_OK : PL_STORE_ENOTFOUND;
}

/* 1 when this node is the push drainer (store.h PL_JOB_PUSH_CLAIM): the
 * writer's session holds PUSH_DRAINER_LOCK, taken here (a round trip) when
 * it did not on this connection yet; 0 when another session holds it;
 * -1: the query failed (*rc: W_LOST, W_RETRY, W_FATAL). *fresh = 1 when
 * it was taken just now. One
 * drainer at a time is what keeps a device's notifications in order across
 * nodes (docs/design.md "Push notifications", "Order"). */
static int p_drainer(pg_store *s, int *fresh, int *rc) {
    unsigned gen = __atomic_load_n(&s->connect_gen, __ATOMIC_ACQUIRE);
    *fresh = 0;
    if (s->push_drainer && s->push_drainer_gen == gen) return 1;
    PGresult *r = pg_w_query(s, W_PUSH_DRAINER, NULL, rc);
    if (!r) return -1;
    if (PQntuples(r) != 1 || PQgetvalue(r, 0, 0)[0] != 't') return 0;
    s->push_drainer = 1;
    s->push_drainer_gen = gen;
    *fresh = 1;
    pl_log(PL_LOG_INFO, 0, "push: this node drains the push outbox", "\"node\":%d", s->base.node_id);
    return 1;
}

/* Drops the rows out of attempts whose lease is over, then leases the
 * oldest free ones until j->expires: one round trip (two when this node
 * has just become the drainer: its first claim clears every lease). */
static int p_claim(pg_store *s, pl_job *j, int64_t now) {
    int fresh, drc = 0, dr = p_drainer(s, &fresh, &drc);
    if (dr < 0) return drc;
    if (!dr) return PL_STORE_OK;                 /* another node drains: no rows */
    pg_params d = {0}, c = {0};
    pg_param_i64(&d, now);                       /* among the rows a claim takes: */
    pg_param_i64(&d, PL_PUSH_ATTEMPTS);          /* never a scan of the whole outbox */
    pg_param_i64(&d, j->limit > 0 ? j->limit : 1);
    pg_param_i64(&c, now);
    pg_param_i64(&c, j->expires);
    pg_param_i64(&c, j->limit > 0 ? j->limit : 1);
    int sp = pg_w_send(s, W_SAVEPOINT, NULL, 0);
    int us = sp < 0 || !fresh ? sp : pg_w_send(s, W_PUSH_UNLEASE, NULL, 0);
    int ds = us < 0 ? us : pg_w_send(s, W_PUSH_DROP, &d, 1);
    int cs = ds < 0 ? ds : pg_w_send(s, W_PUSH_CLAIM, &c, 1);
    if (cs < 0 || pg_w_send(s, W_RELEASE, NULL, 0) < 0) return W_LOST;
    int rc = pg_w_sync(s);
    if (rc) return pg_sp_failed(s, j, sp, rc);
    const PGresult *dr_res = s->w.res[ds];
    int64_t dropped = PQntuples(dr_res);
    if (dropped > 0) {
        j->push_dropped = pl_malloc((size_t)dropped * sizeof *j->push_dropped);
        for (int i = 0; i < (int)dropped; i++) j->push_dropped[i] = pg_i64(dr_res, i, 0);
        j->npush_dropped = (size_t)dropped;
    }
    j->created = (int)dropped;
    if (dropped > 0)
        pl_log(PL_LOG_WARN, 0, "push: notifications dropped after their last attempt", "\"rows\":%lld",
               (long long)dropped);
    const PGresult *r = s->w.res[cs];
    size_t n = (size_t)PQntuples(r);
    if (n) {
        j->out_ids = pl_malloc(n * sizeof *j->out_ids);
        for (size_t i = 0; i < n; i++) j->out_ids[i] = pg_i64(r, (int)i, 0);
        qsort(j->out_ids, n, sizeof *j->out_ids, pg_cmp_i64);     /* RETURNING has no order */
    }
    j->nout = n;
    return PL_STORE_OK;
}

/* Rows finished, devices dead, rows to retry: one round trip. */
static int p_done(pg_store *s, pl_job *j) {
    pg_arr *ids = &s->arr[0], *dead = &s->arr[1], *rid = &s->arr[2], *rdev = &s->arr[3];
    pg_arr *rlease = &s->arr[4], *rrefund = &s->arr[5];
    pg_arr_start(ids, PG_INT8);
    pg_arr_start(dead, PG_INT8);
    pg_arr_start(rid, PG_INT8);
    pg_arr_start(rdev, PG_TEXT);
    pg_arr_start(rlease, PG_INT8);
    pg_arr_start(rrefund, PG_INT8);
    for (size_t i = 0; i < j->nids; i++) pg_arr_i64(ids, j->ids[i]);
    for (size_t i = 0; i < j->ndead; i++) pg_arr_i64(dead, j->dead[i]);
    for (size_t i = 0; i < j->nretries; i++) {
        char *list = pl_store__id_list(j->retries[i].devices, j->retries[i].ndevices);
        pg_arr_i64(rid, j->retries[i].id);
        pg_arr_bytes(rdev, list, strlen(list));
        pg_arr_i64(rlease, j->retries[i].expires ? j->retries[i].expires : j->expires);
        pg_arr_i64(rrefund, j->retries[i].refund != 0);
        free(list);
    }
    if (!ids->n && !dead->n && !rid->n) return PL_STORE_OK;
    pg_params f = {0}, d = {0}, r = {0};
    pg_param_arr(&f, ids);
    pg_param_arr(&d, dead);
    pg_param_arr(&r, rid);
    pg_param_arr(&r, rdev);
    pg_param_arr(&r, rlease);
    pg_param_arr(&r, rrefund);
    int sp = pg_w_send(s, W_SAVEPOINT, NULL, 0);
    if (sp < 0 || (ids->n && pg_w_send(s, W_PUSH_FINISH, &f, 0) < 0) ||
        (dead->n && pg_w_send(s, W_PUSH_DEAD, &d, 0) < 0) || (rid->n && pg_w_send(s, W_PUSH_RETRY, &r, 0) < 0) ||
        pg_w_send(s, W_RELEASE, NULL, 0) < 0)
        return W_LOST;
    int rc = pg_w_sync(s);
    return rc ? pg_sp_failed(s, j, sp, rc) : PL_STORE_OK;
}

int pg_job_push(pg_store *s, pl_job *j, int64_t now) {
    switch (j->op) {
    case PL_JOB_PUSH_REGISTER:   return p_register(s, j, now);
    case PL_JOB_PUSH_UNREGISTER: return p_unregister(s, j);
    case PL_JOB_PUSH_CLAIM:      return p_claim(s, j, now);
    case PL_JOB_PUSH_DONE:       return p_done(s, j);
    default:                     return PL_STORE_EINVAL;
    }
}

/* ---- reads ------------------------------------------------------------------ */

static int p_read_devices(pg_reader *r, pl_job *j) {
    pg_params p = {0};
    pg_param_i64(&p, j->user);
    int rc;
    PGresult *res = pg_r_query(r, R_PUSH_DEVICES, &p, &rc);
    if (!res) return rc;
    size_t n = (size_t)PQntuples(res);
    if (n) j->push_devices = pl_calloc(n, sizeof *j->push_devices);
    for (size_t i = 0; i < n; i++) {
        pl_push_device *d = &j->push_devices[i];
        d->id = pg_i64(res, (int)i, 0);
        d->user = pg_i64(res, (int)i, 1);
        d->login = pg_i64(res, (int)i, 2);
        d->platform = (int)pg_i64(res, (int)i, 3);
        d->token = pg_text(res, (int)i, 4, NULL);
        d->created = pg_i64(res, (int)i, 5);
    }
    j->npush_devices = n;
    return PL_STORE_OK;
}

/* The claimed rows' messages (R_PUSH_MSGS, a body once per row) and their
 * recipients' devices (R_PUSH_TARGETS) in one snapshot and one round trip,
 * both by outbox id: each target row takes its message's fields. */
/* Every push's badge: one query over the distinct recipients (a round
 * trip after the targets', its own snapshot: a count, not an event). */
static int p_badges(pg_reader *r, pl_job *j) {
    if (!j->npushes) return PL_STORE_OK;
    int64_t *u = pl_malloc(j->npushes * sizeof *u);
    size_t n = 0;
    for (size_t i = 0; i < j->npushes; i++) u[n++] = j->pushes[i].user;
    qsort(u, n, sizeof *u, pg_cmp_i64);
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (!k || u[k - 1] != u[i]) u[k++] = u[i];
    pg_arr a = {0};
    pg_arr_start(&a, PG_INT8);
    for (size_t i = 0; i < k; i++) pg_arr_i64(&a, u[i]);
    pg_params p = {0};
    pg_param_arr(&p, &a);
    int bs = pgc_send(&r->c, R_PUSH_BADGES, &p, 1);
    pg_arr_free(&a);
    if (bs < 0) {
        free(u);
        return W_LOST;
    }
    int rc = pg_r_sync(r);
    if (rc) {
        free(u);
        return rc;
    }
    const PGresult *br = r->c.res[bs];
    int64_t *badge = pl_calloc(k ? k : 1, sizeof *badge);
    for (int row = 0; row < PQntuples(br); row++) {
        int64_t user = pg_i64(br, row, 0);
        const int64_t *at = bsearch(&user, u, k, sizeof *u, pg_cmp_i64);
        if (at) badge[at - u] = pg_i64(br, row, 1);
    }
    for (size_t i = 0; i < j->npushes; i++) {
        const int64_t *at = bsearch(&j->pushes[i].user, u, k, sizeof *u, pg_cmp_i64);
        j->pushes[i].badge = at ? badge[at - u] : 0;
    }
    free(badge);
    free(u);
    return PL_STORE_OK;
}

static int p_read_targets(pg_reader *r, pl_job *j) {
    if (!j->nids) return PL_STORE_OK;
    pg_arr a = {0};
    pg_arr_start(&a, PG_INT8);
    for (size_t i = 0; i < j->nids; i++) pg_arr_i64(&a, j->ids[i]);
    pg_params m = {0}, t = {0}, o = {0};
    pg_param_arr(&m, &a);
    pg_param_arr(&o, &a);
    pg_param_arr(&t, &a);
    pg_param_i64(&t, pl_now_ms());
    pg_param_i64(&t, j->after > 0 ? j->after : 0);
    int ms = -1, ts = -1, os = -1;
    int lost = pgc_send(&r->c, R_BEGIN, NULL, 0) < 0 || (ms = pgc_send(&r->c, R_PUSH_MSGS, &m, 1)) < 0 ||
               (ts = pgc_send(&r->c, R_PUSH_TARGETS, &t, 1)) < 0 || (os = pgc_send(&r->c, R_PUSH_ONLY, &o, 1)) < 0 ||
               pgc_send(&r->c, R_COMMIT, NULL, 0) < 0;
    pg_arr_free(&a);
    if (lost) return W_LOST;
    int rc = pg_r_sync(r);
    if (rc) return rc;
    const PGresult *mr = r->c.res[ms], *tr = r->c.res[ts];
    int nm = PQntuples(mr), nt = PQntuples(tr), at = -1;
    char *body = NULL;                          /* the body of message row at, decoded */
    size_t body_len = 0;
    if (nt) j->pushes = pl_calloc((size_t)nt, sizeof *j->pushes);
    for (int row = 0, k = 0; row < nt; row++) {
        int64_t outbox = pg_i64(tr, row, 0);
        while (k < nm && pg_i64(mr, k, 0) < outbox) k++;
        if (k >= nm || pg_i64(mr, k, 0) != outbox) continue;       /* not expected: one snapshot */
        if (k != at) {
            free(body);
            body = pg_bytea(mr, k, 9, &body_len);
            at = k;
        }
        pl_push *p = &j->pushes[j->npushes++];
        p->outbox = outbox;
        p->conv = pg_i64(mr, k, 1);
        p->seq = pg_i64(mr, k, 2);
        p->id = (uint64_t)pg_i64(mr, k, 3);
        p->ts = pg_i64(mr, k, 4);
        p->sender = pg_i64(mr, k, 5);
        snprintf(p->sender_name, sizeof p->sender_name, "%s", PQgetvalue(mr, k, 6));
        p->conv_kind = (int)pg_i64(mr, k, 7);
        p->title = pg_text(mr, k, 8, NULL);
        p->encrypted = PQgetvalue(mr, k, 10)[0] == 't';
        if (body && body_len) {                 /* empty: a ciphertext message */
            p->body = pl_malloc(body_len + 1);
            memcpy(p->body, body, body_len + 1);
            p->body_len = body_len;
        }
        p->user = pg_i64(tr, row, 1);
        p->mention = PQgetvalue(tr, row, 2)[0] == 't';
        p->device = pg_i64(tr, row, 3);
        p->platform = (int)pg_i64(tr, row, 4);
        p->token = pg_text(tr, row, 5, NULL);
    }
    free(body);
    const PGresult *orr = r->c.res[os];
    for (int row = 0; row < PQntuples(orr); row++)
        j->created += (int)pl_store__push_cancelled(pg_i64(orr, row, 0), PQgetvalue(orr, row, 1), j->pushes,
                                                    j->npushes);
    return p_badges(r, j);
}

int pg_read_push(pg_reader *r, pl_job *j) {
    return j->op == PL_READ_PUSH_DEVICES ? p_read_devices(r, j) : p_read_targets(r, j);
}
