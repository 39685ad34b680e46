/* store_pg_read.c — the PostgreSQL reads, run on reader threads, each on
 * its own connection (see store_pg.c, invariant 8; store.h says what each
 * read returns, and the SQLite backend's store_sqlite_read.c is the
 * reference for every result).
 *
 * Owns: reconnecting a reader, and the current form of the messages a read
 * returns (store.h invariant 6: pl_event.annot, from the row's marks, the
 * parent of a reply and the reactions of the page). A read of several
 * statements (SESSION, CONV_GET, RECEIPTS, PINS, MENTIONS) is one pipeline
 * BEGIN REPEATABLE READ .. COMMIT: one snapshot, one round trip; the others
 * are one statement each (EVENTS, a page with its reactions, too: PAGE in
 * store_pg_stmts_r.c).
 */
#include "pg_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/alloc.h"
#include "../core/clock.h"
#include "../core/log.h"

/* ---- the connection --------------------------------------------------------- */

/* Connected, or reconnected now if due (at once if force, or if another
 * connection of this store succeeded since this one last failed). */
static int r_ready(pg_reader *r, int force) {
    if (r->c.pq) return 1;
    pg_store *s = r->s;
    unsigned gen = __atomic_load_n(&s->connect_gen, __ATOMIC_ACQUIRE);
    int64_t now = pl_mono_ms();
    if (!force && now < r->next_try && gen == r->seen_gen) return 0;
    char err[320];
    if (pgc_open(&r->c, s->url, 'r', err, sizeof err) != 0 || pgc_prepare(&r->c, err, sizeof err) != 0) {
        pgc_close(&r->c);
        if (r->backoff_ms <= PG_BACKOFF_MIN_MS)       /* once per outage */
            pl_log(PL_LOG_WARN, 0, "store: reader cannot reconnect", "\"err\":\"%s\"", err);
        r->seen_gen = __atomic_load_n(&s->connect_gen, __ATOMIC_ACQUIRE);
        r->next_try = now + r->backoff_ms;
        r->backoff_ms = r->backoff_ms * 2 > PG_BACKOFF_MAX_MS ? PG_BACKOFF_MAX_MS : r->backoff_ms * 2;
        return 0;
    }
    r->backoff_ms = PG_BACKOFF_MIN_MS;
    r->up = 1;
    __atomic_add_fetch(&s->r_up, 1, __ATOMIC_ACQ_REL);
    __atomic_add_fetch(&s->connect_gen, 1, __ATOMIC_ACQ_REL);
    pl_log(PL_LOG_INFO, 0, "store: reader connected", "%s", "");
    return 1;
}

static void r_drop(pg_reader *r) {
    pl_log(PL_LOG_WARN, 0, "store: reader connection lost", "\"err\":\"%s\"", r->c.errmsg);
    pgc_close(&r->c);
    if (r->up) {
        r->up = 0;
        __atomic_sub_fetch(&r->s->r_up, 1, __ATOMIC_ACQ_REL);
    }
    r->seen_gen = __atomic_load_n(&r->s->connect_gen, __ATOMIC_ACQUIRE);
    r->next_try = pl_mono_ms();
}

/* Syncs the queued statements: PL_STORE_OK, EUNAVAIL (a statement failed;
 * logged; an open transaction rolled back) or W_LOST. */
static int r_sync(pg_reader *r) {
    int rc = pgc_sync(&r->c);
    if (rc == PG_OK) return PL_STORE_OK;
    if (rc == PG_GONE) return W_LOST;
    pg_log_failure(PL_LOG_ERROR, &r->c, "store: read failed");
    if (PQtransactionStatus(r->c.pq) != PQTRANS_IDLE) {
        if (pgc_send(&r->c, R_ROLLBACK, NULL, 0) < 0 || pgc_sync(&r->c) != PG_OK) return W_LOST;
    }
    return PL_STORE_EUNAVAIL;
}

/* One statement: its result, or NULL with *rc set. */
static PGresult *r_query(pg_reader *r, int stmt, const pg_params *p, int *rc) {
    int slot = pgc_send(&r->c, stmt, p, 1);
    if (slot < 0) {
        *rc = W_LOST;
        return NULL;
    }
    *rc = r_sync(r);
    return *rc ? NULL : r->c.res[slot];
}

PGresult *pg_r_query(pg_reader *r, int stmt, const pg_params *p, int *rc) { return r_query(r, stmt, p, rc); }
int pg_r_sync(pg_reader *r) { return r_sync(r); }

/* ---- rows ------------------------------------------------------------------ */

static void user_row(const PGresult *res, int row, pl_user *u, int with_hash) {
    u->id = pg_i64(res, row, 0);
    snprintf(u->username, sizeof u->username, "%s", PQgetvalue(res, row, 1));
    if (with_hash) u->pwhash = pg_text(res, row, 2, NULL);
    u->last_seen = pg_i64(res, row, 3);
}

static void login_row(const PGresult *res, pl_login *out) {
    out->id = pg_i64(res, 0, 0);
    out->user = pg_i64(res, 0, 1);
    size_t n = 0;
    char *h = pg_bytea(res, 0, 2, &n);
    if (h && n == sizeof out->refresh_hash) memcpy(out->refresh_hash, h, n);
    free(h);
    out->expires = pg_i64(res, 0, 3);
    out->revoked = (int)pg_i64(res, 0, 4);
    h = pg_bytea(res, 0, 5, &n);
    if (h && n == sizeof out->prev_hash) memcpy(out->prev_hash, h, n);
    free(h);
    out->rotated = pg_i64(res, 0, 6);
    out->created = pg_i64(res, 0, 7);
}

/* Columns of CONV_COLUMNS and of EV_COLUMNS (store_pg_stmts_r.c). */
#define CONV_NCOLS 17
#define EV_NCOLS 17
static void conv_row(const PGresult *res, int row, pl_conv *c) {
    memset(c, 0, sizeof *c);
    c->id = pg_i64(res, row, 0);
    c->kind = (int)pg_i64(res, row, 1);
    c->title = pg_text(res, row, 2, NULL);
    c->last_seq = pg_i64(res, row, 3);
    c->last_ts = pg_i64(res, row, 4);
    c->member_count = pg_i64(res, row, 5);
    c->role = (int)pg_i64(res, row, 6);
    c->joined_seq = pg_i64(res, row, 7);
    c->delivered_seq = pg_i64(res, row, 8);
    c->read_seq = pg_i64(res, row, 9);
    c->unread = pg_i64(res, row, 10);
    if (c->unread < 0) c->unread = 0;
    c->unread_mentions = pg_i64(res, row, 11);
    c->notify = (int)pg_i64(res, row, 12);
    c->e2ee = (int)pg_i64(res, row, 13);
    c->workspace = pg_i64(res, row, 14);
    c->is_private = (int)pg_i64(res, row, 15);
    c->blocked = (int)pg_i64(res, row, 16);
}

void pg_conv_row(const PGresult *res, int row, pl_conv *c) { conv_row(res, row, c); }

/* Reaction rows: rows [lo, hi) of r hold seq, emoji, count, me from column
 * col on, by seq (a whole R_REACT_* result, or the tail of a page's: PAGE
 * in store_pg_stmts_r.c). */
typedef struct react_rows {
    const PGresult *r;
    int             lo, hi;       /* the rows                                */
    int             col;          /* the column of seq                       */
} react_rows;

static react_rows react_all(const PGresult *r) { return (react_rows){r, 0, PQntuples(r), 0}; }

/* The reactions of seq in x (NULL: none), into rs (at most cap); their
 * number. Strings borrowed from x->r. */
static size_t reactions_of(const react_rows *x, int64_t seq, pl_annot_reaction *rs, size_t cap) {
    if (!x) return 0;
    int lo = x->lo, hi = x->hi, c = x->col;
    while (lo < hi) {                              /* the first row of seq */
        int mid = lo + (hi - lo) / 2;
        if (pg_i64(x->r, mid, c) < seq) lo = mid + 1;
        else hi = mid;
    }
    size_t n = 0;
    for (int row = lo; row < x->hi && n < cap && pg_i64(x->r, row, c) == seq; row++) {
        rs[n].emoji = PQgetvalue(x->r, row, c + 1);
        rs[n].count = pg_i64(x->r, row, c + 2);
        rs[n].me = PQgetvalue(x->r, row, c + 3)[0] == 't';
        n++;
    }
    return n;
}

/* EV_COLUMNS (store_pg_stmts_r.c) starting at column k, with the event's current
 * form in annot (store.h): a MESSAGE's marks, reply preview and, from
 * react (NULL: none), reactions; "deleted" on the EDIT of a deleted one. */
static void event_row(const PGresult *res, int row, int k, int64_t conv, const react_rows *react,
                      pl_event *e) {
    memset(e, 0, sizeof *e);
    e->conv = conv;
    e->seq = pg_i64(res, row, k + 0);
    e->id = (uint64_t)pg_i64(res, row, k + 1);
    e->ts = pg_i64(res, row, k + 2);
    e->kind = (int)pg_i64(res, row, k + 3);
    e->sender = pg_i64(res, row, k + 4);
    e->client_msg_id = pg_text(res, row, k + 5, NULL);
    e->body = pg_bytea(res, row, k + 6, &e->body_len);
    e->data = pg_text(res, row, k + 7, NULL);
    e->subject = pg_i64(res, row, k + 8);
    e->ref = pg_i64(res, row, k + 9);
    if (e->kind == PL_EV_EDIT) {
        pl_annot a = {.deleted = !e->body};
        e->annot = pl_store__annot(&a);
        return;
    }
    if (e->kind != PL_EV_MESSAGE) return;
    pl_annot a = {.edited_ts = pg_i64(res, row, k + 10), .deleted = pg_i64(res, row, k + 11) > 0,
                  .pinned = pg_i64(res, row, k + 12) > 0};
    char *pbody = NULL;
    if (e->ref > 0) {
        int found = !pg_null(res, row, k + 16);
        a.reply_seq = e->ref;
        a.reply_sender = pg_i64(res, row, k + 13);
        if (found) pbody = pg_bytea(res, row, k + 14, &a.reply_len);
        a.reply_body = pbody;
        a.reply_deleted = !found || pg_i64(res, row, k + 15) > 0 || !pbody;
    }
    pl_annot_reaction rs[PL_STORE_REACTIONS_MAX];
    if (!a.deleted) {
        a.nreactions = reactions_of(react, e->seq, rs, PL_STORE_REACTIONS_MAX);
        a.reactions = rs;
    }
    e->annot = pl_store__annot(&a);
    free(pbody);
}

void pg_event_row(const PGresult *res, int row, int k, int64_t conv, const PGresult *react, int lo, int hi,
                  int col, pl_event *e) {
    react_rows x = {react, lo, hi, col};
    event_row(res, row, k, conv, react ? &x : NULL, e);
}

static void conv_list(const PGresult *res, int with_last, pl_conv **out, size_t *n) {
    size_t len = (size_t)PQntuples(res);
    pl_conv *list = len ? pl_malloc(len * sizeof *list) : NULL;
    for (size_t i = 0; i < len; i++) {
        pl_conv *c = &list[i];
        conv_row(res, (int)i, c);
        if (with_last && !pg_null(res, (int)i, CONV_NCOLS)) {
            c->last = pl_malloc(sizeof *c->last);
            event_row(res, (int)i, CONV_NCOLS, c->id, NULL, c->last);
        }
        if (with_last) {                          /* after the last event's columns */
            c->retention = pg_i64(res, (int)i, CONV_NCOLS + EV_NCOLS);
            c->ws_retention = pg_i64(res, (int)i, CONV_NCOLS + EV_NCOLS + 1);
        }
    }
    *out = list;
    *n = len;
}

/* rows events of res from column k (at most limit), always ascending
 * (top: the rows came highest first), with their reactions from react. */
static void event_list(pl_job *j, const PGresult *res, int rows, int k, int limit, int top,
                       const react_rows *react) {
    size_t len = (size_t)(rows > limit ? limit : rows);
    pl_event *list = len ? pl_malloc(len * sizeof *list) : NULL;
    for (size_t i = 0; i < len; i++) {
        size_t at = top ? len - 1 - i : i;
        event_row(res, (int)i, k, j->conv, react, &list[at]);
    }
    j->events = list;
    j->nevents = len;
}

static void conv_members(const PGresult *res, pl_conv *c) {
    size_t n = (size_t)PQntuples(res);
    c->members = n ? pl_calloc(n, sizeof *c->members) : NULL;
    c->nmembers = n;
    for (size_t i = 0; i < n; i++) {
        pl_member *m = &c->members[i];
        m->user = pg_i64(res, (int)i, 0);
        m->role = (int)pg_i64(res, (int)i, 1);
        m->joined_seq = pg_i64(res, (int)i, 2);
        m->delivered_seq = pg_i64(res, (int)i, 3);
        m->read_seq = pg_i64(res, (int)i, 4);
        snprintf(m->username, sizeof m->username, "%s", PQgetvalue(res, (int)i, 5));
    }
}

/* ---- reads ------------------------------------------------------------------ */

static int r_user_by_name(pg_reader *r, pl_job *j) {
    if (!j->username) return PL_STORE_EINVAL;
    if (!pg_utf8_ok(j->username)) return PL_STORE_ENOTFOUND;  /* never stored */
    pg_params p = {0};
    pg_param_text(&p, j->username);
    int rc;
    PGresult *res = r_query(r, R_USER_BY_NAME, &p, &rc);
    if (!res) return rc;
    if (PQntuples(res) != 1) return PL_STORE_ENOTFOUND;
    user_row(res, 0, &j->user_out, (j->flags & PL_READ_WITH_HASH) != 0);
    return PL_STORE_OK;
}

static int r_user_by_id(pg_reader *r, pl_job *j) {
    pg_params p = {0};
    pg_param_i64(&p, j->user);
    int rc;
    PGresult *res = r_query(r, R_USER_BY_ID, &p, &rc);
    if (!res) return rc;
    if (PQntuples(res) != 1) return PL_STORE_ENOTFOUND;
    user_row(res, 0, &j->user_out, 0);
    return PL_STORE_OK;
}

static int r_login(pg_reader *r, pl_job *j) {
    pg_params p = {0};
    pg_param_i64(&p, j->id);
    int rc;
    PGresult *res = r_query(r, R_LOGIN, &p, &rc);
    if (!res) return rc;
    if (PQntuples(res) != 1) return PL_STORE_ENOTFOUND;
    login_row(res, &j->login_out);
    return PL_STORE_OK;
}

/* Login, user and conversation list in one snapshot. */
static int r_session(pg_reader *r, pl_job *j) {
    pg_params l = {0}, u = {0};
    pg_param_i64(&l, j->id);
    pg_param_i64(&u, j->user);
    int ls, us, cs;
    if (pgc_send(&r->c, R_BEGIN, NULL, 0) < 0 || (ls = pgc_send(&r->c, R_LOGIN, &l, 1)) < 0 ||
        (us = pgc_send(&r->c, R_USER_BY_ID, &u, 1)) < 0 || (cs = pgc_send(&r->c, R_CONV_LIST, &u, 1)) < 0 ||
        pgc_send(&r->c, R_COMMIT, NULL, 0) < 0)
        return W_LOST;
    int rc = r_sync(r);
    if (rc) return rc;
    if (PQntuples(r->c.res[ls]) != 1 || PQntuples(r->c.res[us]) != 1) return PL_STORE_ENOTFOUND;
    login_row(r->c.res[ls], &j->login_out);
    user_row(r->c.res[us], 0, &j->user_out, 0);
    conv_list(r->c.res[cs], 0, &j->convs, &j->nconvs);
    return PL_STORE_OK;
}

static int r_conv_list(pg_reader *r, pl_job *j) {
    int last = (j->flags & PL_READ_WITH_LAST) != 0;
    pg_params p = {0};
    pg_param_i64(&p, j->user);
    int rc;
    PGresult *res = r_query(r, last ? R_CONV_LIST_LAST : R_CONV_LIST, &p, &rc);
    if (!res) return rc;
    conv_list(res, last, &j->convs, &j->nconvs);
    return PL_STORE_OK;
}

/* The conversation as j->user sees it, with its members, and (RECEIPTS,
 * with_event) the event at j->seq if j->user may see it: one snapshot. */
static int r_conv_get(pg_reader *r, pl_job *j, int with_event) {
    pg_params p = {0}, m = {0}, e = {0};
    pg_param_i64(&p, j->conv);
    pg_param_i64(&p, j->user);
    pg_param_i64(&m, j->conv);
    pg_param_i64(&e, j->conv);
    pg_param_i64(&e, j->seq);
    pg_param_i64(&e, j->user);
    pg_params x = {0};
    pg_param_i64(&x, j->conv);
    pg_param_i64(&x, j->seq);
    pg_param_i64(&x, j->user);
    with_event = with_event && j->seq > 0;
    int cs, ms, es = -1, xs = -1;
    if (pgc_send(&r->c, R_BEGIN, NULL, 0) < 0 || (cs = pgc_send(&r->c, R_CONV_GET, &p, 1)) < 0 ||
        (ms = pgc_send(&r->c, R_CONV_MEMBERS, &m, 1)) < 0 ||
        (with_event && ((es = pgc_send(&r->c, R_EVENT_AT_AS, &e, 1)) < 0 ||
                        (xs = pgc_send(&r->c, R_REACT_AT, &x, 1)) < 0)) ||
        pgc_send(&r->c, R_COMMIT, NULL, 0) < 0)
        return W_LOST;
    int rc = r_sync(r);
    if (rc) return rc;
    if (PQntuples(r->c.res[cs]) != 1) return PL_STORE_ENOTFOUND;
    conv_row(r->c.res[cs], 0, &j->conv_out);
    if (j->op == PL_READ_CONV_GET) {                  /* store.h invariant 13: CONV_GET only */
        j->conv_out.retention = pg_i64(r->c.res[cs], 0, CONV_NCOLS);
        j->conv_out.ws_retention = pg_i64(r->c.res[cs], 0, CONV_NCOLS + 1);
        j->conv_out.hold = PQgetvalue(r->c.res[cs], 0, CONV_NCOLS + 2)[0] == 't';
    }
    conv_members(r->c.res[ms], &j->conv_out);
    if (es >= 0 && PQntuples(r->c.res[es]) == 1) {
        react_rows rx = react_all(r->c.res[xs]);
        j->events = pl_malloc(sizeof *j->events);
        event_row(r->c.res[es], 0, 0, j->conv, &rx, &j->events[0]);
        j->nevents = 1;
    }
    return PL_STORE_OK;
}

/* A page of the log and its reactions: one statement (PAGE in store_pg_stmts_r.c),
 * so one snapshot and one round trip. */
static int r_events(pg_reader *r, pl_job *j) {
    int limit = j->limit;
    if (limit < 1) return PL_STORE_EINVAL;
    if (limit > PL_STORE_PAGE_MAX) limit = PL_STORE_PAGE_MAX;
    int top = (j->flags & PL_READ_FROM_TOP) != 0;
    pg_params p = {0};
    pg_param_i64(&p, j->conv);
    pg_param_i64(&p, j->after);
    pg_param_i64(&p, j->before > 0 ? j->before : INT64_MAX);
    pg_param_i64(&p, limit + 1);                            /* one more: is there more? */
    int stmt = top ? R_EVENTS_DESC : R_EVENTS_ASC, k = 1;   /* k: after the part column */
    if (j->user) {               /* invariant 4 of store.h, in the same statement */
        pg_param_i64(&p, j->user);
        stmt = top ? R_EVENTS_DESC_AS : R_EVENTS_ASC_AS;
        k = 2;                                              /* and joined_seq */
    }
    int rc;
    const PGresult *res = r_query(r, stmt, &p, &rc);
    if (!res) return rc;
    int all = PQntuples(res), rows = 0;
    while (rows < all && pg_i64(res, rows, 0) == 0) rows++;   /* part 0: the page */
    react_rows x = {res, rows, all, k + EV_NCOLS};            /* part 1: its reactions */
    if (j->user && rows == 0) return PL_STORE_ENOTFOUND;       /* not a member */
    if (j->user && pg_null(res, 0, k)) rows = 0;               /* a member, empty page */
    j->more = rows > limit;
    event_list(j, res, rows, k, limit, top, &x);
    return PL_STORE_OK;
}

/* The pinned messages the member sees, most recently pinned first. */
static int r_pins(pg_reader *r, pl_job *j) {
    pg_params p = {0};
    pg_param_i64(&p, j->conv);
    pg_param_i64(&p, j->user);
    int ms, es, xs;
    if (pgc_send(&r->c, R_BEGIN, NULL, 0) < 0 || (ms = pgc_send(&r->c, R_MEMBER, &p, 1)) < 0 ||
        (es = pgc_send(&r->c, R_PINS, &p, 1)) < 0 || (xs = pgc_send(&r->c, R_REACT_PINS, &p, 1)) < 0 ||
        pgc_send(&r->c, R_COMMIT, NULL, 0) < 0)
        return W_LOST;
    int rc = r_sync(r);
    if (rc) return rc;
    if (PQntuples(r->c.res[ms]) != 1) return PL_STORE_ENOTFOUND;
    react_rows x = react_all(r->c.res[xs]);
    event_list(j, r->c.res[es], PQntuples(r->c.res[es]), 0, PL_STORE_PINS_MAX, 0, &x);
    return PL_STORE_OK;
}

/* The messages above after that mention the member (invariant 7). */
static int r_mentions(pg_reader *r, pl_job *j) {
    int limit = j->limit < 1 ? 1 : j->limit > PL_STORE_PAGE_MAX ? PL_STORE_PAGE_MAX : j->limit;
    pg_params p = {0};
    pg_param_i64(&p, j->conv);
    pg_param_i64(&p, j->user);
    pg_param_i64(&p, j->after);
    pg_param_i64(&p, limit + 1);
    int es, xs;
    if (pgc_send(&r->c, R_BEGIN, NULL, 0) < 0 || (es = pgc_send(&r->c, R_MENTIONS, &p, 1)) < 0 ||
        (xs = pgc_send(&r->c, R_REACT_MENTIONS, &p, 1)) < 0 || pgc_send(&r->c, R_COMMIT, NULL, 0) < 0)
        return W_LOST;
    int rc = r_sync(r);
    if (rc) return rc;
    const PGresult *res = r->c.res[es];
    int rows = PQntuples(res);
    if (rows == 0) return PL_STORE_ENOTFOUND;                  /* not a member */
    if (pg_null(res, 0, 1)) rows = 0;                          /* none */
    j->more = rows > limit;
    react_rows x = react_all(r->c.res[xs]);
    event_list(j, res, rows, 1, limit, 0, &x);
    return PL_STORE_OK;
}

static int r_users_visible(pg_reader *r, pl_job *j) {
    j->users = pl_calloc(j->nids ? j->nids : 1, sizeof *j->users);
    if (!j->nids) return PL_STORE_OK;
    pg_arr a = {0};
    pg_arr_start(&a, PG_INT8);
    for (size_t i = 0; i < j->nids; i++) pg_arr_i64(&a, j->ids[i]);
    pg_params p = {0};
    pg_param_i64(&p, j->user);
    pg_param_arr(&p, &a);
    int rc;
    PGresult *res = r_query(r, R_USERS_VISIBLE, &p, &rc);
    pg_arr_free(&a);
    if (!res) return rc;
    for (int row = 0; row < PQntuples(res) && (size_t)row < j->nids; row++) {
        pl_user *u = &j->users[j->nusers++];
        u->id = pg_i64(res, row, 0);
        snprintf(u->username, sizeof u->username, "%s", PQgetvalue(res, row, 1));
        u->last_seen = pg_i64(res, row, 2);
    }
    return PL_STORE_OK;
}

/* Invariant 8 of store.h: one statement; membership and joined_seq are in
 * its join. Each result gets its current form but its reactions (as in
 * the SQLite backend). */
static int r_search(pg_reader *r, pl_job *j) {
    if (!j->query || strlen(j->query) > PL_STORE_QUERY_MAX) return PL_STORE_EINVAL;
    if (!pg_utf8_ok(j->query)) return PL_STORE_EINVAL;
    int limit = j->limit < 1 ? 1 : j->limit > PL_STORE_SEARCH_MAX ? PL_STORE_SEARCH_MAX : j->limit;
    pg_params p = {0};
    pg_param_i64(&p, j->user);
    pg_param_text(&p, j->query);
    pg_param_i64(&p, j->cursor > 0 ? j->cursor : INT64_MAX);
    pg_param_i64(&p, j->conv);
    pg_param_i64(&p, j->peer);
    pg_param_i64(&p, j->after > 0 ? j->after : 0);
    pg_param_i64(&p, j->before > 0 || (j->flags & PL_READ_BEFORE) ? j->before : INT64_MAX);
    pg_param_text(&p, (j->flags & PL_READ_MENTIONS_ME) ? "true" : "false");
    pg_param_i64(&p, limit + 1);
    pg_param_text(&p, (j->flags & PL_READ_HAS_MEDIA) ? "true" : "false");
    int rc;
    PGresult *res = r_query(r, R_SEARCH, &p, &rc);
    if (!res) return rc;
    int rows = PQntuples(res);
    size_t len = (size_t)(rows > limit ? limit : rows);
    j->more = rows > limit;
    if (!len) return PL_STORE_OK;
    j->events = pl_malloc(len * sizeof *j->events);
    j->snippets = pl_calloc(len, sizeof *j->snippets);
    for (size_t i = 0; i < len; i++) {
        event_row(res, (int)i, 2, pg_i64(res, (int)i, 0), NULL, &j->events[i]);
        j->snippets[i] = pg_text(res, (int)i, 1, NULL);
        if (!j->snippets[i]) j->snippets[i] = pl_strdup("");
        pl_store__snippet_restore(j->snippets[i], j->events[i].body, j->events[i].body_len);
    }
    j->nevents = len;
    if (j->more) j->out_id = (int64_t)j->events[len - 1].id;
    return PL_STORE_OK;
}

static int r_user_search(pg_reader *r, pl_job *j) {
    if (!j->query || strlen(j->query) > PL_STORE_QUERY_MAX || !pg_utf8_ok(j->query)) return PL_STORE_EINVAL;
    int limit = j->limit < 1 ? 1 : j->limit > PL_STORE_SEARCH_MAX ? PL_STORE_SEARCH_MAX : j->limit;
    char key[PL_STORE_QUERY_MAX + 1];
    pl_store__name_query(j->query, key);
    pg_params p = {0};
    pg_param_i64(&p, j->user);
    pg_param_text(&p, key);
    pg_param_i64(&p, limit);
    int rc;
    PGresult *res = r_query(r, R_USER_SEARCH, &p, &rc);
    if (!res) return rc;
    j->users = pl_calloc((size_t)limit, sizeof *j->users);
    for (int row = 0; row < PQntuples(res) && row < limit; row++) {
        pl_user *u = &j->users[j->nusers++];
        u->id = pg_i64(res, row, 0);
        snprintf(u->username, sizeof u->username, "%s", PQgetvalue(res, row, 1));
        u->last_seen = pg_i64(res, row, 2);
    }
    return PL_STORE_OK;
}

static int r_conv_heads(pg_reader *r, pl_job *j) {
    j->heads = pl_calloc(j->nids ? j->nids : 1, sizeof *j->heads);
    if (!j->nids) return PL_STORE_OK;
    pg_arr a = {0};
    pg_arr_start(&a, PG_INT8);
    for (size_t i = 0; i < j->nids; i++) pg_arr_i64(&a, j->ids[i]);
    pg_params p = {0};
    pg_param_arr(&p, &a);
    int rc;
    PGresult *res = r_query(r, R_CONV_HEADS, &p, &rc);
    pg_arr_free(&a);
    if (!res) return rc;
    for (int row = 0; row < PQntuples(res); row++) {
        int64_t i = pg_i64(res, row, 0) - 1;
        if (i >= 0 && (size_t)i < j->nids) j->heads[i] = pg_i64(res, row, 1);
    }
    return PL_STORE_OK;
}

static int r_memberships(pg_reader *r, pl_job *j) {
    if (!j->nids) return PL_STORE_OK;
    pg_arr a = {0};
    pg_arr_start(&a, PG_INT8);
    for (size_t i = 0; i < j->nids; i++) pg_arr_i64(&a, j->ids[i]);
    pg_params p = {0};
    pg_param_arr(&p, &a);
    int rc;
    PGresult *res = r_query(r, R_MEMBERSHIPS, &p, &rc);
    pg_arr_free(&a);
    if (!res) return rc;
    size_t n = (size_t)PQntuples(res);
    if (n) j->mships = pl_malloc(n * sizeof *j->mships);
    for (size_t i = 0; i < n; i++) {
        pl_membership *m = &j->mships[i];
        m->user = pg_i64(res, (int)i, 0);
        m->conv = pg_i64(res, (int)i, 1);
        m->joined_seq = pg_i64(res, (int)i, 2);
        m->last_seq = pg_i64(res, (int)i, 3);
    }
    j->nmships = n;
    return PL_STORE_OK;
}

/* PL_READ_SEND_CHECK: store.h. */
static int r_send_check(pg_reader *r, pl_job *j) {
    pg_params p = {0};
    pg_param_i64(&p, j->conv);
    pg_param_i64(&p, j->user);
    pg_param_text(&p, j->client_msg_id);
    int rc;
    PGresult *res = r_query(r, R_SEND_CHECK, &p, &rc);
    if (!res) return rc;
    if (PQntuples(res) != 1) return PL_STORE_EUNAVAIL;
    if (!pg_null(res, 0, 1)) {                    /* a retry: the original's answer */
        j->dup = 1;
        j->has_event = 1;
        j->event.conv = j->conv;
        j->event.seq = pg_i64(res, 0, 1);
        j->event.id = (uint64_t)pg_i64(res, 0, 2);
        j->event.ts = pg_i64(res, 0, 3);
        j->event.kind = PL_EV_MESSAGE;
        j->event.sender = j->user;
        j->event.client_msg_id = pl_strdup(j->client_msg_id);
        return PL_STORE_OK;
    }
    if (PQgetvalue(res, 0, 0)[0] == 't') return PL_STORE_OK;
    j->why = "no such conversation";
    return PL_STORE_ENOTFOUND;
}

static int r_dispatch(pg_reader *r, pl_job *j) {
    switch ((int)j->op) {
    case PL_READ_USER_BY_NAME:  return r_user_by_name(r, j);
    case PL_READ_USER_BY_ID:    return r_user_by_id(r, j);
    case PL_READ_LOGIN:         return r_login(r, j);
    case PL_READ_SESSION:       return r_session(r, j);
    case PL_READ_CONV_LIST:     return r_conv_list(r, j);
    case PL_READ_CONV_GET:      return r_conv_get(r, j, 0);
    case PL_READ_EVENTS:        return r_events(r, j);
    case PL_READ_RECEIPTS:      return r_conv_get(r, j, 1);
    case PL_READ_USERS_VISIBLE: return r_users_visible(r, j);
    case PL_READ_SEND_CHECK:    return r_send_check(r, j);
    case PL_READ_CONV_HEADS:    return r_conv_heads(r, j);
    case PL_READ_MEMBERSHIPS:   return r_memberships(r, j);
    case PL_READ_PINS:          return r_pins(r, j);
    case PL_READ_MENTIONS:      return r_mentions(r, j);
    case PL_READ_SEARCH:        return r_search(r, j);
    case PL_READ_USER_SEARCH:   return r_user_search(r, j);
    case PL_READ_DEVICES:       return pg_read_devices(r, j);   /* store_pg_keys.c */
    case PL_READ_MEDIA_GET:
    case PL_READ_MEDIA_LIST:    return pg_read_media(r, j);     /* store_pg_media.c */
    case PL_READ_PUSH_DEVICES:
    case PL_READ_PUSH_TARGETS:  return pg_read_push(r, j);      /* store_pg_push.c */
    case PL_READ_WORKSPACES:
    case PL_READ_WORKSPACE_GET:
    case PL_READ_CHANNELS:
    case PL_READ_CONV_WORKSPACE: return pg_read_ws(r, j);       /* store_pg_ws.c */
    case PL_READ_REPORTS:                                       /* store_pg_reports.c */
    case PL_READ_BLOCKS:        return pg_read_reports(r, j);
    case PL_READ_USER_MESSAGES: return pg_read_life(r, j);      /* store_pg_life.c */
    default:                    return PL_STORE_EINVAL;
    }
}

/* pipeline.h: a reader thread's run_read. A lost connection is reconnected
 * at once and the read run again, once (reads are idempotent); then, or
 * while the database is down, the read fails with EUNAVAIL. */
void pg_run_read(void *rctx, pl_job *j) {
    pg_reader *r = rctx;
    pl_job_release(j);
    j->more = 0;
    if ((int)j->op == PG_READ_PROBE) {
        j->result = r_ready(r, 0) ? PL_STORE_OK : PL_STORE_EUNAVAIL;
        return;
    }
    int rc = W_LOST;
    for (int attempt = 0; attempt < 2 && rc == W_LOST; attempt++) {
        if (!r_ready(r, attempt > 0)) break;
        rc = r_dispatch(r, j);
        if (rc == W_LOST) {
            pl_job_release(j);
            j->more = 0;
            r_drop(r);
        }
    }
    if (rc == W_LOST) rc = PL_STORE_EUNAVAIL;
    if (rc) pl_job_release(j);
    j->result = rc;
}
