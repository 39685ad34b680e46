/* store_pg_life.c — the data lifecycle in the PostgreSQL backend (store.h
 * invariant 13): retention and legal hold settings, the purge of expired
 * messages and of deleted users' messages, account deletion, and the read
 * of a user's own messages.
 *
 * Owns: running the statements W_LIFE_*, W_PURGE_* and R_USER_MESSAGES*
 * (store_pg_stmts_w.c, _r.c; migration 12 -> 13 in store_pg_schema.c has
 * the columns and indexes), and
 * the purge's bookkeeping in each conversation's row:
 *   P1. No MESSAGE of a conversation at or below purge_seq is live: the
 *       purge reads on from there, so it reads the tombstones it left once,
 *       not at every purge.
 *   P2. purge_at is 0 when no MESSAGE above purge_seq is live, else at most
 *       the ts of the oldest live one (up to the skew below). The purge
 *       writes both under the conversation's lock; the writer's flush
 *       (W_CONV_FLUSH) sets purge_at to the batch's time when the batch
 *       appended MESSAGEs to a conversation whose purge_at is 0 (a purge
 *       later in the same batch sets it first: W_PURGE_TOUCH); a delete
 *       leaves it (too early is harmless: the purge looks and moves it on).
 *   So a conversation is a candidate only when its effective retention
 *   makes its purge_at due, and the candidates come from three small index
 *   scans (W_PURGE_CONVS): a purge with nothing to do reads neither the
 *   events nor all of the conversations, however big the database.
 *
 * A purge job (one SAVEPOINT around it: store_pg.c invariant 4) runs rounds:
 *   1. W_PURGE_CONVS: up to PURGE_CONVS candidates, locked FOR UPDATE SKIP
 *      LOCKED: one another transaction holds (a batch appending to it,
 *      another node's purge) is left for the next purge, so the purge
 *      never waits for a conversation (store_pg.c invariant 15);
 *   2. W_PURGE_SCAN, a statement after the locks (its snapshot has all that
 *      was committed before them): the live MESSAGEs above each one's
 *      purge_seq, oldest first, a page each;
 *   3. here, in seq order, every one older than its cutoff is taken up to
 *      the first that is not (or the job's limit), and W_PURGE_ERASE erases
 *      them while W_PURGE_MARK moves purge_seq and purge_at, one round trip.
 *   Each candidate leaves a round with erasures or not due any more, so
 *   the rounds end: when none is due, or at the limit (a page that was all
 *   due leaves its conversation due for the next round). Then the deleted
 *   users' messages: W_PURGE_USERS, one statement a round (find, lock SKIP
 *   LOCKED, erase), until it erases nothing or the limit is reached. The
 *   erasure is a delete's (PURGE_ERASE in store_pg_stmts_w.c) without its event:
 *   no seq, no counter and no unread count moves, and UPDATE .. WHERE
 *   deleted_ts = 0 erases a message once whichever node gets to it.
 * Known limit: a seq's ts can be lower than an earlier seq's by the time a
 * batch waited for the conversation's lock (its time is taken before), so
 * such a message, behind a younger one, is erased when that one is (at
 * most lock_timeout, 10 s, late). A conversation held by other
 * transactions at every purge is left until one finds it free.
 * Does not own: the permission and input rules (store.h), the SQLite
 * backend's twin (the reference for every outcome and its order), the
 * worker that submits purges (the caller).
 */
#include "pg_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/alloc.h"
#include "../core/log.h"

#define PURGE_LIMIT_MAX 10000   /* rows of one RETENTION_PURGE (store.h)        */
#define PURGE_CONVS     64      /* conversations locked by one round            */
#define PURGE_PAGE_MIN  64      /* live MESSAGEs read of a conversation in a    */
#define PURGE_PAGE_MAX  1024    /* round: the limit left shared, within these   */

/* ---- settings ----------------------------------------------------------------- */

/* PL_EV_RETENTION's data: {"seconds":N}, a new string. */
static char *data_seconds(int64_t seconds) {
    char buf[48];
    snprintf(buf, sizeof buf, "{\"seconds\":%lld}", (long long)seconds);
    return pl_strdup(buf);
}

/* A workspace's: one statement checks and sets (its row is locked by the
 * batch: pg_ws_lock_of). A conversation's (locked by the batch): the
 * checks, then its row and the event in one savepoint. */
static int retention_set(pg_store *s, pl_job *j, int64_t now) {
    if (j->value < 0 || j->value > PL_RETENTION_MAX) {
        j->why = "bad retention";
        return PL_STORE_EINVAL;
    }
    int admin = (j->flags & PL_JOB_ADMIN) != 0, rc;
    if (!j->conv) {
        pg_params p = {0};
        pg_param_i64(&p, j->id);
        pg_param_i64(&p, j->user);
        pg_param_i64(&p, j->value);
        pg_param_text(&p, admin ? "t" : "f");
        PGresult *r = pg_w_query(s, W_LIFE_WS_RETENTION, &p, &rc);
        if (!r) return rc;
        if (PQntuples(r) != 1) return PL_STORE_ENOTFOUND;
        int role = (int)pg_i64(r, 0, 0);
        if (!admin && role == PL_ROLE_NONE) return PL_STORE_ENOTFOUND;
        if (!admin && role != PL_ROLE_ADMIN) return PL_STORE_EFORBID;
        j->out_id = j->id;
        return PL_STORE_OK;
    }
    int role = PL_ROLE_NONE;
    if ((rc = pg_member_role(s, j->conv, j->user, &role)) != PL_STORE_OK) return rc;
    pg_conv *e = pg_conv_find(s, j->conv);            /* after a sync */
    if (!e || (!admin && role == PL_ROLE_NONE)) return PL_STORE_ENOTFOUND;
    if (!admin && e->kind != PL_CONV_DIRECT && role != PL_ROLE_ADMIN) return PL_STORE_EFORBID;
    if (!admin && e->blocked) {                       /* store.h invariant 14: not by its members */
        j->why = "blocked";
        return PL_STORE_EFORBID;
    }
    pg_params u = {0};
    pg_param_i64(&u, j->conv);
    pg_param_i64(&u, j->value);
    rc = pg_write_and_append(s, j, e, W_LIFE_CONV_RETENTION, &u, PL_EV_RETENTION, 0, data_seconds(j->value), now);
    if (rc == PL_STORE_OK) j->out_id = j->conv;
    return rc;
}

/* The caller checked the asker is a server admin. A conversation's is
 * queued (its row is locked by the batch, so it exists: nothing to wait
 * for); a workspace's is one statement. */
static int hold_set(pg_store *s, pl_job *j) {
    int on = (j->flags & PL_JOB_REMOVE) == 0, rc;
    pg_params p = {0};
    if (!j->conv) {
        pg_param_i64(&p, j->id);
        pg_param_i64(&p, on);
        PGresult *r = pg_w_query(s, W_LIFE_WS_HOLD, &p, &rc);
        if (!r) return rc;
        if (PQntuples(r) != 1) return PL_STORE_ENOTFOUND;
        j->out_id = j->id;
        return PL_STORE_OK;
    }
    if ((rc = pg_w_locked(s)) != PL_STORE_OK) return rc;
    if (!pg_conv_find(s, j->conv)) return PL_STORE_ENOTFOUND;
    pg_param_i64(&p, j->conv);
    pg_param_i64(&p, on);
    if (pg_w_send(s, W_LIFE_CONV_HOLD, &p, 0) < 0) return W_LOST;   /* goes with the next round trip */
    j->out_id = j->conv;
    return PL_STORE_OK;
}

/* ---- account deletion ------------------------------------------------------------ */

/* The user's row is locked first and its memberships read after the lock
 * (W_LIFE_USER_LOCK, W_LIFE_USER_BUSY; one round trip): a join of the user
 * on any node keeps the row (KEY SHARE, W_USERS_EXIST) to its COMMIT, so
 * either this sees the membership, or the join waits and then finds the
 * user deleted; a block the user makes does the same (W_BLOCK_ADD). Then everything of store.h's list in one statement, in a
 * savepoint (the new name is unique: a user a test named so fails alone). */
static int account_delete(pg_store *s, pl_job *j, int64_t now) {
    pg_params p = {0};
    pg_param_i64(&p, j->user);
    int ls = pg_w_send(s, W_LIFE_USER_LOCK, &p, 1), bs = ls < 0 ? ls : pg_w_send(s, W_LIFE_USER_BUSY, &p, 1), rc;
    if (bs < 0) return W_LOST;
    if ((rc = pg_w_sync(s)) != PL_STORE_OK) return rc;
    const PGresult *l = s->w.res[ls];
    if (PQntuples(l) != 1 || pg_i64(l, 0, 0) != 0) return PL_STORE_ENOTFOUND;   /* none, or deleted */
    if (PQgetvalue(s->w.res[bs], 0, 0)[0] == 't') {
        j->why = "still a member";
        return PL_STORE_ECONFLICT;
    }
    if (PQgetvalue(s->w.res[bs], 0, 1)[0] == 't') {   /* api_life.c unblocks first */
        j->why = "still blocking";
        return PL_STORE_ECONFLICT;
    }
    pg_params d = {0};
    pg_param_i64(&d, j->user);
    pg_param_i64(&d, now);
    int sp = pg_w_send(s, W_SAVEPOINT, NULL, 0);
    int ds = sp < 0 ? sp : pg_w_send(s, W_LIFE_ACCOUNT_DELETE, &d, 1);
    if (ds < 0 || pg_w_send(s, W_RELEASE, NULL, 0) < 0) return W_LOST;
    if ((rc = pg_w_sync(s)) != PL_STORE_OK) return pg_sp_failed(s, j, sp, rc);
    if (pg_i64(s->w.res[ds], 0, 0) != 1) return W_FATAL;    /* not expected: the row is locked */
    j->out_id = j->user;
    return PL_STORE_OK;
}

/* ---- the purge ------------------------------------------------------------------- */

/* A purge job's course. */
typedef struct purge_run {
    int64_t  now;           /* the batch's time: the erasures' deleted_ts      */
    int64_t  clock;         /* the job's (expires; 0: now): the cutoffs'       */
    int64_t  budget;        /* messages it may still erase                     */
    int64_t  erased;
    int      sp;            /* the SAVEPOINT's slot until its round trip, then -1 */
} purge_run;

/* One statement now (purge_run.sp: the first one carries the savepoint). */
static PGresult *purge_query(pg_store *s, purge_run *u, int stmt, const pg_params *p, int *rc) {
    PGresult *r = pg_w_query(s, stmt, p, rc);
    if (r) u->sp = -1;
    return r;
}

/* The candidates one round locked (copied out of W_PURGE_CONVS's result). */
typedef struct purge_convs {
    int64_t conv[PURGE_CONVS];
    int64_t purge_seq[PURGE_CONVS];
    int64_t cutoff[PURGE_CONVS];    /* ts below it are due                    */
    int     n;
} purge_convs;

/* Rounds 2 and 3 (see the top of the file) over the locked candidates c:
 * the messages erased into *erased (at most u->budget), or a W_* code. */
static int purge_convs_erase(pg_store *s, purge_run *u, const purge_convs *c, int64_t *erased) {
    int64_t budget = u->budget;
    int64_t per = budget / c->n + 1;
    int64_t page = per < PURGE_PAGE_MIN ? PURGE_PAGE_MIN : per > PURGE_PAGE_MAX ? PURGE_PAGE_MAX : per;
    if (page > budget + 1) page = budget + 1;      /* the first that is not taken, seen */
    pg_arr *ca = &s->arr[0], *pa = &s->arr[1];
    pg_arr_start(ca, PG_INT8);
    pg_arr_start(pa, PG_INT8);
    for (int i = 0; i < c->n; i++) {
        pg_arr_i64(ca, c->conv[i]);
        pg_arr_i64(pa, c->purge_seq[i]);
    }
    pg_params p = {0};
    pg_param_arr(&p, ca);
    pg_param_arr(&p, pa);
    pg_param_i64(&p, page);
    int rc;
    PGresult *r = purge_query(s, u, W_PURGE_SCAN, &p, &rc);
    if (!r) return rc;
    /* targets (conv, seq) and each candidate's new purge_seq and purge_at */
    pg_arr *tc = &s->arr[0], *ts = &s->arr[1], *mc = &s->arr[2], *ms = &s->arr[3], *ma = &s->arr[4];
    pg_arr_start(tc, PG_INT8);
    pg_arr_start(ts, PG_INT8);
    pg_arr_start(mc, PG_INT8);
    pg_arr_start(ms, PG_INT8);
    pg_arr_start(ma, PG_INT8);
    int rows = PQntuples(r), row = 0;
    int64_t left = budget;
    for (int i = 0; i < c->n; i++) {
        int64_t next_seq = c->purge_seq[i], next_at = 0, last_ts = 0;
        int got = 0, stopped = 0;
        for (; row < rows && pg_i64(r, row, 0) == i + 1; row++, got++) {
            int64_t seq = pg_i64(r, row, 1), t = pg_i64(r, row, 2);
            if (stopped) continue;
            if (left > 0 && t < c->cutoff[i]) {    /* due: erased */
                pg_arr_i64(tc, c->conv[i]);
                pg_arr_i64(ts, seq);
                left--;
                next_seq = seq;
                last_ts = t;
            } else {                               /* the oldest live one left */
                stopped = 1;
                next_seq = seq - 1;
                next_at = t;
            }
        }
        if (!stopped && got == page) next_at = last_ts;   /* more may be due: due again */
        pg_arr_i64(mc, c->conv[i]);
        pg_arr_i64(ms, next_seq);
        pg_arr_i64(ma, next_at);
    }
    int64_t want = tc->n;
    int es = -1;
    if (want) {
        pg_params e = {0};
        pg_param_i64(&e, u->now);
        pg_param_arr(&e, tc);
        pg_param_arr(&e, ts);
        if ((es = pg_w_send(s, W_PURGE_ERASE, &e, 1)) < 0) return W_LOST;
    }
    pg_params m = {0};
    pg_param_arr(&m, mc);
    pg_param_arr(&m, ms);
    pg_param_arr(&m, ma);
    if (pg_w_send(s, W_PURGE_MARK, &m, 0) < 0) return W_LOST;
    if ((rc = pg_w_sync(s)) != PL_STORE_OK) return rc;
    *erased = es >= 0 ? pg_i64(s->w.res[es], 0, 0) : 0;
    if (*erased != want) {                         /* P1 would not hold: the job fails */
        pl_log(PL_LOG_ERROR, 0, "store: purge erased other rows than it read", "\"read\":%lld,\"erased\":%lld",
               (long long)want, (long long)*erased);
        return W_FATAL;
    }
    return PL_STORE_OK;
}

/* Expired MESSAGEs (retention): rounds until none is due or the limit is
 * reached. Each candidate a round returns leaves it with erasures, or not
 * due any more (its purge_at moved on, or 0), so the rounds end. */
static int purge_expired(pg_store *s, purge_run *u) {
    purge_convs c;
    while (u->budget > 0) {
        pg_params p = {0};
        pg_param_i64(&p, u->clock);
        pg_param_i64(&p, s->retention);
        pg_param_i64(&p, PURGE_CONVS);
        int rc;
        PGresult *r = purge_query(s, u, W_PURGE_CONVS, &p, &rc);
        if (!r) return rc;
        c.n = 0;
        for (int i = 0; i < PQntuples(r) && i < PURGE_CONVS; i++) {
            int64_t conv = pg_i64(r, i, 0);
            int seen = 0;                          /* a channel may come twice */
            for (int k = 0; k < c.n && !seen; k++) seen = c.conv[k] == conv;
            if (seen) continue;
            c.conv[c.n] = conv;
            c.purge_seq[c.n] = pg_i64(r, i, 1);
            c.cutoff[c.n] = pg_i64(r, i, 2);
            c.n++;
        }
        if (!c.n) break;
        int64_t got = 0;
        if ((rc = purge_convs_erase(s, u, &c, &got)) != PL_STORE_OK) return rc;
        u->erased += got;
        u->budget -= got;
    }
    return PL_STORE_OK;
}

/* Deleted users' MESSAGEs: W_PURGE_USERS until it finds nothing to erase. */
static int purge_deleted_users(pg_store *s, purge_run *u) {
    while (u->budget > 0) {
        pg_params p = {0};
        pg_param_i64(&p, u->now);
        pg_param_i64(&p, u->budget);
        int rc;
        PGresult *r = purge_query(s, u, W_PURGE_USERS, &p, &rc);
        if (!r) return rc;
        int64_t got = pg_i64(r, 0, 0);
        u->erased += got;
        u->budget -= got;
        if (!got) break;
    }
    return PL_STORE_OK;
}

/* j->expires is the job's now (store.h; 0: the batch's): the cutoffs come
 * from it; the erasures are dated by the batch's time, as a delete's are.
 * A limit out of 1..PURGE_LIMIT_MAX is taken as the nearest one. */
static int purge(pg_store *s, pl_job *j, int64_t now) {
    int64_t limit = j->limit < 1 ? 1 : j->limit > PURGE_LIMIT_MAX ? PURGE_LIMIT_MAX : j->limit;
    purge_run u = {.now = now, .clock = j->expires > 0 ? j->expires : now, .budget = limit,
                   .sp = pg_w_send(s, W_SAVEPOINT, NULL, 0)};
    if (u.sp < 0) return W_LOST;
    /* MESSAGEs the batch appended before this job have no purge_at yet
     * where it was 0 (the flush comes at the end: P2): theirs now */
    pg_arr *a = &s->arr[0];
    pg_arr_start(a, PG_INT8);
    for (size_t i = 0; i < s->convs.cap && s->convs.len; i++)
        if (s->convs.tab[i].conv && s->convs.tab[i].appended) pg_arr_i64(a, s->convs.tab[i].conv);
    if (a->n) {
        pg_params t = {0};
        pg_param_i64(&t, now);
        pg_param_arr(&t, a);
        if (pg_w_send(s, W_PURGE_TOUCH, &t, 0) < 0) return W_LOST;
    }
    int rc = purge_expired(s, &u);
    if (rc == PL_STORE_OK) rc = purge_deleted_users(s, &u);
    if (rc == W_FATAL && s->w.err_slot < 0) {     /* ours, not a statement's: roll back */
        if (pg_w_send(s, W_ROLLBACK_TO, NULL, 0) < 0 || pg_w_send(s, W_RELEASE, NULL, 0) < 0) return W_LOST;
        return (rc = pg_w_sync(s)) ? rc : PL_STORE_EUNAVAIL;
    }
    if (rc != PL_STORE_OK) return pg_sp_failed(s, j, u.sp, rc);
    if (pg_w_send(s, W_RELEASE, NULL, 0) < 0) return W_LOST;        /* goes with the next round trip */
    j->out_id = u.erased;
    return PL_STORE_OK;
}

int pg_job_life(pg_store *s, pl_job *j, int64_t now) {
    switch (j->op) {
    case PL_JOB_RETENTION_SET:   return retention_set(s, j, now);
    case PL_JOB_HOLD_SET:        return hold_set(s, j);
    case PL_JOB_RETENTION_PURGE: return purge(s, j, now);
    case PL_JOB_ACCOUNT_DELETE:  return account_delete(s, j, now);
    default:                     return PL_STORE_EINVAL;
    }
}

/* ---- a user's messages -------------------------------------------------------------- */

/* The rows [*lo, *hi) of x (ordered by conversation, then seq, in columns 0
 * and 1) that are (conv, seq)'s. */
static void react_range(const PGresult *x, int64_t conv, int64_t seq, int *lo, int *hi) {
    int a = 0, b = PQntuples(x);
    while (a < b) {                                /* the first row not below */
        int mid = a + (b - a) / 2;
        int64_t c = pg_i64(x, mid, 0), q = pg_i64(x, mid, 1);
        if (c < conv || (c == conv && q < seq)) a = mid + 1;
        else b = mid;
    }
    *lo = a;
    while (a < PQntuples(x) && pg_i64(x, a, 0) == conv && pg_i64(x, a, 1) == seq) a++;
    *hi = a;
}

/* The page and its reactions in one snapshot and one round trip; each
 * message's current form as PL_READ_EVENTS gives it to the user (its reactions' "me"). A
 * limit out of 1..PL_STORE_PAGE_MAX is taken as the nearest one. */
static int r_user_messages(pg_reader *r, pl_job *j) {
    int limit = j->limit < 1 ? 1 : j->limit > PL_STORE_PAGE_MAX ? PL_STORE_PAGE_MAX : j->limit;
    pg_params p = {0};
    pg_param_i64(&p, j->user);
    pg_param_i64(&p, j->cursor > 0 ? j->cursor : 0);
    pg_param_i64(&p, limit + 1);                   /* one more: is there more? */
    int es, xs;
    if (pgc_send(&r->c, R_BEGIN, NULL, 0) < 0 || (es = pgc_send(&r->c, R_USER_MESSAGES, &p, 1)) < 0 ||
        (xs = pgc_send(&r->c, R_USER_MESSAGES_REACT, &p, 1)) < 0 || pgc_send(&r->c, R_COMMIT, NULL, 0) < 0)
        return W_LOST;
    int rc = pg_r_sync(r);
    if (rc) return rc;
    const PGresult *res = r->c.res[es], *x = r->c.res[xs];
    int rows = PQntuples(res);
    j->more = rows > limit;
    size_t n = (size_t)(rows > limit ? limit : rows);
    j->events = n ? pl_malloc(n * sizeof *j->events) : NULL;
    for (size_t i = 0; i < n; i++) {
        int64_t conv = pg_i64(res, (int)i, 0), seq = pg_i64(res, (int)i, 1);
        int lo, hi;
        react_range(x, conv, seq, &lo, &hi);
        pg_event_row(res, (int)i, 1, conv, x, lo, hi, 1, &j->events[i]);
    }
    j->nevents = n;
    return PL_STORE_OK;
}

int pg_read_life(pg_reader *r, pl_job *j) {
    return j->op == PL_READ_USER_MESSAGES ? r_user_messages(r, j) : PL_STORE_EINVAL;
}
