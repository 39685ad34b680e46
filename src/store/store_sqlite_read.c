/* store_sqlite_read.c — the SQLite reads, run on reader threads, each on
 * its own read-only connection (see store_sqlite.c; store.h says what each
 * read returns).
 *
 * Every read resets its statements before returning; reads of several
 * statements run inside BEGIN ... COMMIT so they see one snapshot, and a
 * lingering read transaction never pins the WAL.
 */
#include "sqlite_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/alloc.h"
#include "../core/buf.h"
#include "../core/log.h"

#define RD_ERR(rc) ((rc) == SQLITE_DONE ? PL_STORE_ENOTFOUND : PL_STORE_EUNAVAIL)

static void r_begin(sq_reader *r) {
    sqlite3_step(r->r[R_BEGIN]);
    sqlite3_reset(r->r[R_BEGIN]);
}

static void r_commit(sq_reader *r) {
    sqlite3_step(r->r[R_COMMIT]);
    sqlite3_reset(r->r[R_COMMIT]);
}

static void user_row(sqlite3_stmt *st, pl_user *u, int with_hash) {
    u->id = sqlite3_column_int64(st, 0);
    const unsigned char *name = sqlite3_column_text(st, 1);
    snprintf(u->username, sizeof u->username, "%s", name ? (const char *)name : "");
    if (with_hash) u->pwhash = sq_col_text(st, 2, NULL);
    u->last_seen = sqlite3_column_int64(st, 3);
}

static int r_user(sq_reader *r, int id, pl_user *out, int with_hash) {
    sqlite3_stmt *st = r->r[id];
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) user_row(st, out, with_hash);
    sqlite3_reset(st);
    return rc == SQLITE_ROW ? PL_STORE_OK : RD_ERR(rc);
}

static int r_user_by_id(sq_reader *r, int64_t id, pl_user *out) {
    sqlite3_bind_int64(r->r[R_USER_BY_ID], 1, id);
    return r_user(r, R_USER_BY_ID, out, 0);
}

static int r_login(sq_reader *r, int64_t id, pl_login *out) {
    sqlite3_stmt *st = r->r[R_LOGIN];
    sqlite3_bind_int64(st, 1, id);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        out->id = sqlite3_column_int64(st, 0);
        out->user = sqlite3_column_int64(st, 1);
        const void *h = sqlite3_column_blob(st, 2);
        if (h && sqlite3_column_bytes(st, 2) == (int)sizeof out->refresh_hash)
            memcpy(out->refresh_hash, h, sizeof out->refresh_hash);
        out->expires = sqlite3_column_int64(st, 3);
        out->revoked = sqlite3_column_int(st, 4);
        const void *ph = sqlite3_column_blob(st, 5);
        if (ph && sqlite3_column_bytes(st, 5) == (int)sizeof out->prev_hash)
            memcpy(out->prev_hash, ph, sizeof out->prev_hash);
        out->rotated = sqlite3_column_int64(st, 6);
        out->created = sqlite3_column_int64(st, 7);
    }
    sqlite3_reset(st);
    return rc == SQLITE_ROW ? PL_STORE_OK : RD_ERR(rc);
}

/* Columns of CONV_COLUMNS (store_sqlite_stmts.c). */
static void conv_row(sqlite3_stmt *st, pl_conv *c) {
    memset(c, 0, sizeof *c);
    c->id = sqlite3_column_int64(st, 0);
    c->kind = sqlite3_column_int(st, 1);
    c->title = sq_col_text(st, 2, NULL);
    c->last_seq = sqlite3_column_int64(st, 3);
    c->last_ts = sqlite3_column_int64(st, 4);
    c->member_count = sqlite3_column_int64(st, 5);
    c->role = sqlite3_column_int(st, 6);
    c->joined_seq = sqlite3_column_int64(st, 7);
    c->delivered_seq = sqlite3_column_int64(st, 8);
    c->read_seq = sqlite3_column_int64(st, 9);
    c->unread = sqlite3_column_int64(st, 10);
    if (c->unread < 0) c->unread = 0;
    c->unread_mentions = sqlite3_column_int64(st, 11);
    c->notify = sqlite3_column_int(st, 12);
    c->e2ee = sqlite3_column_int(st, 13);
    c->workspace = sqlite3_column_int64(st, 14);
    c->is_private = sqlite3_column_int(st, 15);
    c->blocked = sqlite3_column_int(st, 16);
}
#define CONV_NCOLS 17

/* What an event row says of its current form beyond pl_event (EVENT_COLUMNS
 * 10..16), kept until its reactions are known. */
typedef struct ev_extra {
    int64_t edited_ts, deleted_ts, pinned_ts;
    int     has_parent;
    int64_t p_sender, p_deleted;
    char   *p_body;                 /* owned                                 */
    size_t  p_len;
} ev_extra;

/* EVENT_COLUMNS starting at column k; x (may be NULL) gets the marks. */
static void event_row_x(sqlite3_stmt *st, int k, int64_t conv, pl_event *e, ev_extra *x);
/* The event with its marks and, with reply (the statement selects the
 * parent's columns), its reply preview; no reactions (a conversation
 * list's last event, as the PostgreSQL store gives it). */
static void event_row(sqlite3_stmt *st, int k, int64_t conv, pl_event *e, int reply) {
    ev_extra x;
    event_row_x(st, k, conv, e, &x);
    pl_annot a = {.edited_ts = x.edited_ts, .deleted = x.deleted_ts > 0, .pinned = x.pinned_ts > 0};
    if (e->kind == PL_EV_EDIT) a.deleted = !e->body;
    if (reply && e->kind == PL_EV_MESSAGE && e->ref > 0) {
        a.reply_seq = e->ref;
        a.reply_deleted = !x.has_parent || x.p_deleted > 0 || !x.p_body;
        a.reply_sender = x.p_sender;
        a.reply_body = x.p_body;
        a.reply_len = x.p_len;
    }
    if (e->kind == PL_EV_MESSAGE || e->kind == PL_EV_EDIT) e->annot = pl_store__annot(&a);
    free(x.p_body);
}

static void event_row_x(sqlite3_stmt *st, int k, int64_t conv, pl_event *e, ev_extra *x) {
    memset(e, 0, sizeof *e);
    e->conv = conv;
    e->seq = sqlite3_column_int64(st, k + 0);
    e->id = (uint64_t)sqlite3_column_int64(st, k + 1);
    e->ts = sqlite3_column_int64(st, k + 2);
    e->kind = sqlite3_column_int(st, k + 3);
    e->sender = sqlite3_column_int64(st, k + 4);
    e->client_msg_id = sq_col_text(st, k + 5, NULL);
    e->body = sq_col_text(st, k + 6, &e->body_len);
    e->data = sq_col_text(st, k + 7, NULL);
    e->subject = sqlite3_column_int64(st, k + 8);
    e->ref = sqlite3_column_int64(st, k + 9);
    memset(x, 0, sizeof *x);
    x->edited_ts = sqlite3_column_int64(st, k + 10);
    x->deleted_ts = sqlite3_column_int64(st, k + 11);
    x->pinned_ts = sqlite3_column_int64(st, k + 12);
    x->has_parent = sqlite3_column_type(st, k + 16) != SQLITE_NULL &&
                    sqlite3_column_int(st, k + 16) == PL_EV_MESSAGE;
    if (x->has_parent) {
        x->p_sender = sqlite3_column_int64(st, k + 13);
        x->p_body = sq_col_text(st, k + 14, &x->p_len);
        x->p_deleted = sqlite3_column_int64(st, k + 15);
    }
}

/* Fills annot of every MESSAGE and EDIT in list (store.h: the current form)
 * from the rows' marks and the reactions of their seqs, "me" for viewer.
 * contiguous: list is one seq range (one reactions query), else one per
 * message. Frees the extras. */
static int annotate(sq_reader *r, int64_t conv, int64_t viewer, pl_event *list, ev_extra *xs, size_t n,
                    int contiguous) {
    sqlite3_stmt *st = r->r[R_REACTIONS];
    pl_annot_reaction *rs = NULL;
    size_t nr = 0, cap = 0;
    int rc = SQLITE_DONE, have_rows = 0, bad = 0;
    for (size_t i = 0; i < n; i++) {
        pl_event *e = &list[i];
        ev_extra *x = &xs[i];
        if (e->kind != PL_EV_MESSAGE && e->kind != PL_EV_EDIT) goto next_event;
        pl_annot a = {.edited_ts = x->edited_ts, .deleted = x->deleted_ts > 0, .pinned = x->pinned_ts > 0};
        if (e->kind == PL_EV_EDIT) {
            a.deleted = !e->body;
            e->annot = pl_store__annot(&a);
            goto next_event;
        }
        if (e->ref > 0) {
            a.reply_seq = e->ref;
            a.reply_deleted = !x->has_parent || x->p_deleted > 0 || !x->p_body;
            a.reply_sender = x->p_sender;
            a.reply_body = x->p_body;
            a.reply_len = x->p_len;
        }
        if (!a.deleted && !bad) {
            if (!contiguous || !have_rows) {            /* (re)bind the range */
                sqlite3_reset(st);
                sqlite3_bind_int64(st, 1, conv);
                sqlite3_bind_int64(st, 2, e->seq);
                sqlite3_bind_int64(st, 3, contiguous ? list[n - 1].seq : e->seq);
                sqlite3_bind_int64(st, 4, viewer);
                rc = sqlite3_step(st);
                have_rows = 1;
            }
            while (rc == SQLITE_ROW && sqlite3_column_int64(st, 0) < e->seq) rc = sqlite3_step(st);
            nr = 0;
            for (; rc == SQLITE_ROW && sqlite3_column_int64(st, 0) == e->seq; rc = sqlite3_step(st)) {
                if (nr == cap) {
                    cap = cap ? cap * 2 : 8;
                    rs = pl_realloc(rs, cap * sizeof *rs);
                }
                rs[nr].emoji = (const char *)pl_strdup((const char *)sqlite3_column_text(st, 1));
                rs[nr].count = sqlite3_column_int64(st, 2);
                rs[nr].me = sqlite3_column_int(st, 3) != 0;
                nr++;
            }
            if (rc != SQLITE_ROW && rc != SQLITE_DONE) bad = 1;
            a.reactions = rs;
            a.nreactions = nr;
        }
        e->annot = pl_store__annot(&a);
        for (size_t k = 0; k < nr; k++) free((char *)rs[k].emoji);
        nr = 0;
    next_event:
        free(x->p_body);
        x->p_body = NULL;
    }
    sqlite3_reset(st);
    free(rs);
    return bad ? PL_STORE_EUNAVAIL : PL_STORE_OK;
}

static int r_conv_list(sq_reader *r, int64_t user, int with_last, pl_conv **out, size_t *n) {
    sqlite3_stmt *st = r->r[with_last ? R_CONV_LIST_LAST : R_CONV_LIST];
    pl_conv *list = NULL;
    size_t len = 0, cap = 0;
    int rc;
    sqlite3_bind_int64(st, 1, user);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (len == cap) {
            cap = cap ? cap * 2 : 16;
            list = pl_realloc(list, cap * sizeof *list);
        }
        pl_conv *c = &list[len++];
        conv_row(st, c);
        if (with_last && sqlite3_column_type(st, CONV_NCOLS) != SQLITE_NULL) {
            c->last = pl_malloc(sizeof *c->last);
            event_row(st, CONV_NCOLS, c->id, c->last, 1);
        }
        if (with_last) {                          /* after the 17 of the last event */
            c->retention = sqlite3_column_int64(st, CONV_NCOLS + 17);
            c->ws_retention = sqlite3_column_int64(st, CONV_NCOLS + 18);
        }
    }
    sqlite3_reset(st);
    if (rc != SQLITE_DONE) {
        pl_conv_list_free(list, len);
        return PL_STORE_EUNAVAIL;
    }
    *out = list;
    *n = len;
    return PL_STORE_OK;
}

/* One conversation as user sees it, with its members. Inside a read
 * transaction of the caller's. */
static int r_conv_get(sq_reader *r, int64_t conv, int64_t user, pl_conv *out) {
    sqlite3_stmt *st = r->r[R_CONV_GET];
    sqlite3_bind_int64(st, 1, conv);
    sqlite3_bind_int64(st, 2, user);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) conv_row(st, out);
    sqlite3_reset(st);
    if (rc != SQLITE_ROW) return RD_ERR(rc);
    sqlite3_stmt *ms = r->r[R_CONV_MEMBERS];
    size_t cap = 0;
    sqlite3_bind_int64(ms, 1, conv);
    while ((rc = sqlite3_step(ms)) == SQLITE_ROW) {
        if (out->nmembers == cap) {
            cap = cap ? cap * 2 : 8;
            out->members = pl_realloc(out->members, cap * sizeof *out->members);
        }
        pl_member *m = &out->members[out->nmembers++];
        m->user = sqlite3_column_int64(ms, 0);
        m->role = sqlite3_column_int(ms, 1);
        m->joined_seq = sqlite3_column_int64(ms, 2);
        m->delivered_seq = sqlite3_column_int64(ms, 3);
        m->read_seq = sqlite3_column_int64(ms, 4);
        const unsigned char *un = sqlite3_column_text(ms, 5);
        snprintf(m->username, sizeof m->username, "%s", un ? (const char *)un : "");
    }
    sqlite3_reset(ms);
    if (rc != SQLITE_DONE) {
        pl_conv_release(out);
        return PL_STORE_EUNAVAIL;
    }
    return PL_STORE_OK;
}

/* The viewer's joined_seq, or ENOTFOUND / EUNAVAIL. */
static int r_joined(sq_reader *r, int64_t conv, int64_t user, int64_t *joined) {
    sqlite3_stmt *st = r->r[R_MEMBER];
    sqlite3_bind_int64(st, 1, conv);
    sqlite3_bind_int64(st, 2, user);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) *joined = sqlite3_column_int64(st, 1);
    sqlite3_reset(st);
    return rc == SQLITE_ROW ? PL_STORE_OK : RD_ERR(rc);
}

static int r_event_list(sq_reader *r, pl_job *j, sqlite3_stmt *st, int limit, int top, int contiguous);

static int r_events(sq_reader *r, pl_job *j) {
    int limit = j->limit;
    if (limit < 1) return PL_STORE_EINVAL;
    if (limit > PL_STORE_PAGE_MAX) limit = PL_STORE_PAGE_MAX;
    int64_t after = j->after;
    if (j->user) {
        int64_t joined = 1;
        int rc = r_joined(r, j->conv, j->user, &joined);
        if (rc) return rc;
        if (after < joined - 1) after = joined - 1;   /* invariant 4 of store.h */
    }
    int top = (j->flags & PL_READ_FROM_TOP) != 0;
    sqlite3_stmt *st = r->r[top ? R_EVENTS_DESC : R_EVENTS_ASC];
    sqlite3_bind_int64(st, 1, j->conv);
    sqlite3_bind_int64(st, 2, after);
    sqlite3_bind_int64(st, 3, j->before > 0 ? j->before : INT64_MAX);
    sqlite3_bind_int(st, 4, limit + 1);               /* one more: is there more? */
    return r_event_list(r, j, st, limit, top, 1);
}

/* Steps st (bound, at most limit + 1 rows of EVENT_COLUMNS from column
 * k) into *list and *xs (allocated), *len of them; *more when there was
 * one row past limit. The events' conversation: column 0 when k > 0, else
 * conv. Returns SQLite's last step code; st is reset. */
static int r_step_events(sqlite3_stmt *st, int k, int64_t conv, int limit, pl_event **list, ev_extra **xs,
                         size_t *len, int *more) {
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (*len == (size_t)limit) {
            *more = 1;
            continue;
        }
        if (!*list) {
            *list = pl_malloc((size_t)limit * sizeof **list);
            *xs = pl_malloc((size_t)limit * sizeof **xs);
        }
        event_row_x(st, k, k ? sqlite3_column_int64(st, 0) : conv, &(*list)[*len], &(*xs)[*len]);
        (*len)++;
    }
    sqlite3_reset(st);
    return rc;
}

/* Steps st (bound, at most limit + 1 rows) into j->events with their
 * current form; top: the rows came highest first (reversed here). */
static int r_event_list(sq_reader *r, pl_job *j, sqlite3_stmt *st, int limit, int top, int contiguous) {
    pl_event *list = NULL;
    ev_extra *xs = NULL;
    size_t len = 0;
    int rc = r_step_events(st, 0, j->conv, limit, &list, &xs, &len, &j->more);
    if (rc == SQLITE_DONE && top) {           /* always ascending for callers */
        for (size_t i = 0; i < len / 2; i++) {
            pl_event t = list[i];
            list[i] = list[len - 1 - i];
            list[len - 1 - i] = t;
            ev_extra tx = xs[i];
            xs[i] = xs[len - 1 - i];
            xs[len - 1 - i] = tx;
        }
    }
    if (rc == SQLITE_DONE) rc = annotate(r, j->conv, j->user, list, xs, len, contiguous);
    else {
        for (size_t i = 0; i < len; i++) free(xs[i].p_body);
        rc = PL_STORE_EUNAVAIL;
    }
    free(xs);
    if (rc != PL_STORE_OK) {
        pl_event_list_free(list, len);
        return rc;
    }
    j->events = list;
    j->nevents = len;
    return PL_STORE_OK;
}

static int r_pins(sq_reader *r, pl_job *j) {
    int64_t joined = 1;
    int rc = r_joined(r, j->conv, j->user, &joined);
    if (rc) return rc;
    sqlite3_stmt *st = r->r[R_PINS];
    sqlite3_bind_int64(st, 1, j->conv);
    sqlite3_bind_int64(st, 2, joined);
    sqlite3_bind_int(st, 3, PL_STORE_PINS_MAX + 1);
    rc = r_event_list(r, j, st, PL_STORE_PINS_MAX, 0, 0);
    j->more = 0;
    return rc;
}

static int r_mentions(sq_reader *r, pl_job *j) {
    int limit = j->limit < 1 ? 1 : j->limit > PL_STORE_PAGE_MAX ? PL_STORE_PAGE_MAX : j->limit;
    int64_t joined = 1;
    int rc = r_joined(r, j->conv, j->user, &joined);
    if (rc) return rc;
    int64_t after = j->after > joined - 1 ? j->after : joined - 1;
    sqlite3_stmt *st = r->r[R_MENTIONS];
    sqlite3_bind_int64(st, 1, j->conv);
    sqlite3_bind_int64(st, 2, j->user);
    sqlite3_bind_int64(st, 3, after);
    sqlite3_bind_int(st, 4, limit + 1);
    return r_event_list(r, j, st, limit, 0, 0);
}

static int r_receipts(sq_reader *r, pl_job *j) {
    int rc = r_conv_get(r, j->conv, j->user, &j->conv_out);
    if (rc || j->seq <= 0 || j->seq < j->conv_out.joined_seq) return rc;
    sqlite3_stmt *st = r->r[R_EVENT_AT];
    sqlite3_bind_int64(st, 1, j->conv);
    sqlite3_bind_int64(st, 2, j->seq);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        j->events = pl_malloc(sizeof *j->events);
        event_row(st, 0, j->conv, &j->events[0], 0);
        j->nevents = 1;
    }
    sqlite3_reset(st);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? PL_STORE_OK : PL_STORE_EUNAVAIL;
}

static int r_send_check(sq_reader *r, pl_job *j) {
    int src = 0;
    if (j->client_msg_id) {
        sqlite3_stmt *st = sq_prep(r->db, "SELECT seq, id, ts FROM events"
                                          " WHERE conv_id = ?1 AND sender = ?2 AND client_msg_id = ?3", &src);
        if (!st) return PL_STORE_EUNAVAIL;
        sqlite3_bind_int64(st, 1, j->conv);
        sqlite3_bind_int64(st, 2, j->user);
        sqlite3_bind_text(st, 3, j->client_msg_id, -1, SQLITE_STATIC);
        int rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) sq_dup_event(j, st);
        sqlite3_finalize(st);
        if (rc == SQLITE_ROW) return PL_STORE_OK;
        if (rc != SQLITE_DONE) return PL_STORE_EUNAVAIL;
    }
    int rc = sq_run(r->db, &src, NULL, "SELECT 1 FROM members WHERE conv_id = ?1 AND user_id = ?2", "ii", j->conv,
                    j->user);
    if (rc < 0) return PL_STORE_EUNAVAIL;
    if (!rc) j->why = "no such conversation";
    return rc ? PL_STORE_OK : PL_STORE_ENOTFOUND;
}

static int r_users_visible(sq_reader *r, pl_job *j) {
    j->users = pl_calloc(j->nids ? j->nids : 1, sizeof *j->users);
    for (size_t i = 0; i < j->nids; i++) {
        int64_t id = j->ids[i];
        if (id != j->user) {
            sqlite3_stmt *sh = r->r[R_SHARES];
            sqlite3_bind_int64(sh, 1, j->user);
            sqlite3_bind_int64(sh, 2, id);
            int rc = sqlite3_step(sh);
            sqlite3_reset(sh);
            if (rc == SQLITE_DONE) continue;
            if (rc != SQLITE_ROW) return PL_STORE_EUNAVAIL;
        }
        sqlite3_stmt *st = r->r[R_USER_SHORT];
        sqlite3_bind_int64(st, 1, id);
        int rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
            pl_user *u = &j->users[j->nusers++];
            u->id = sqlite3_column_int64(st, 0);
            const unsigned char *name = sqlite3_column_text(st, 1);
            snprintf(u->username, sizeof u->username, "%s", name ? (const char *)name : "");
            u->last_seen = sqlite3_column_int64(st, 2);
        }
        sqlite3_reset(st);
        if (rc != SQLITE_ROW && rc != SQLITE_DONE) return PL_STORE_EUNAVAIL;
    }
    return PL_STORE_OK;
}

static int r_conv_heads(sq_reader *r, pl_job *j) {
    j->heads = pl_calloc(j->nids ? j->nids : 1, sizeof *j->heads);
    sqlite3_stmt *st = r->r[R_CONV_HEAD];
    for (size_t i = 0; i < j->nids; i++) {
        sqlite3_bind_int64(st, 1, j->ids[i]);
        int rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) j->heads[i] = sqlite3_column_int64(st, 0);
        sqlite3_reset(st);
        if (rc != SQLITE_ROW && rc != SQLITE_DONE) return PL_STORE_EUNAVAIL;
    }
    return PL_STORE_OK;
}

static int r_memberships(sq_reader *r, pl_job *j) {
    size_t cap = 0;
    sqlite3_stmt *st = r->r[R_MEMBERSHIPS];
    for (size_t i = 0; i < j->nids; i++) {
        int rc;
        sqlite3_bind_int64(st, 1, j->ids[i]);
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
            if (j->nmships == cap) {
                cap = cap ? cap * 2 : 32;
                j->mships = pl_realloc(j->mships, cap * sizeof *j->mships);
            }
            pl_membership *m = &j->mships[j->nmships++];
            m->user = j->ids[i];
            m->conv = sqlite3_column_int64(st, 0);
            m->joined_seq = sqlite3_column_int64(st, 1);
            m->last_seq = sqlite3_column_int64(st, 2);
        }
        sqlite3_reset(st);
        if (rc != SQLITE_DONE) return PL_STORE_EUNAVAIL;
    }
    return PL_STORE_OK;
}

/* Invariant 8 of store.h: one statement; membership and joined_seq are in
 * its join. Each result gets its current form but its reactions (those are
 * per conversation; a client that shows the message reads them there). */
static int r_search(sq_reader *r, pl_job *j) {
    if (!j->query || strlen(j->query) > PL_STORE_QUERY_MAX) return PL_STORE_EINVAL;
    int limit = j->limit < 1 ? 1 : j->limit > PL_STORE_SEARCH_MAX ? PL_STORE_SEARCH_MAX : j->limit;
    char words[4 * PL_STORE_QUERY_MAX + 8];
    if (pl_store__fts5_query(j->query, words, sizeof words) == 0) return PL_STORE_OK;  /* no word */
    /* The words in the body; and, where the asker's conversations are few,
     * the conversation token (column conv) of one of them: FTS5 intersects
     * the lists instead of the join rejecting other conversations' matches
     * one by one (membership is still the join's). */
    pl_sbuf match;
    pl_sbuf_init(&match);
    pl_sbuf_printf(&match, "{body}: (%s)", words);
    if (j->conv > 0) {
        pl_sbuf_printf(&match, " AND conv: c%lld", (long long)j->conv);
    } else {
        sqlite3_stmt *cs = r->r[R_USER_CONVS];
        sqlite3_bind_int64(cs, 1, j->user);
        sqlite3_bind_int(cs, 2, SQ_SEARCH_CONVS + 1);
        int64_t cv[SQ_SEARCH_CONVS + 1];
        int nc = 0, crc;
        while ((crc = sqlite3_step(cs)) == SQLITE_ROW && nc <= SQ_SEARCH_CONVS) cv[nc++] = sqlite3_column_int64(cs, 0);
        sqlite3_reset(cs);
        if (crc != SQLITE_ROW && crc != SQLITE_DONE) {
            pl_sbuf_release(&match);
            return PL_STORE_EUNAVAIL;
        }
        if (nc == 0) {                                   /* a member of nothing */
            pl_sbuf_release(&match);
            return PL_STORE_OK;
        }
        if (nc <= SQ_SEARCH_CONVS) {
            pl_sbuf_adds(&match, " AND conv: (");
            for (int i = 0; i < nc; i++) pl_sbuf_printf(&match, "%sc%lld", i ? " OR " : "", (long long)cv[i]);
            pl_sbuf_addc(&match, ')');
        }
    }
    sqlite3_stmt *st = r->r[R_SEARCH];
    sqlite3_bind_int64(st, 1, j->user);
    sqlite3_bind_text(st, 2, match.p, (int)match.len, SQLITE_TRANSIENT);
    pl_sbuf_release(&match);
    sqlite3_bind_int64(st, 3, j->cursor > 0 ? j->cursor : INT64_MAX);
    sqlite3_bind_int64(st, 4, j->conv);
    sqlite3_bind_int64(st, 5, j->peer);
    sqlite3_bind_int64(st, 6, j->after > 0 ? j->after : 0);
    sqlite3_bind_int64(st, 7, j->before > 0 || (j->flags & PL_READ_BEFORE) ? j->before : INT64_MAX);
    sqlite3_bind_int(st, 8, (j->flags & PL_READ_MENTIONS_ME) != 0);
    sqlite3_bind_int(st, 9, limit + 1);
    sqlite3_bind_int(st, 10, (j->flags & PL_READ_HAS_MEDIA) != 0);
    pl_event *list = NULL;
    ev_extra *xs = NULL;
    char **snips = NULL;
    size_t len = 0;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (len == (size_t)limit) {
            j->more = 1;
            break;
        }
        if (!list) {
            list = pl_malloc((size_t)limit * sizeof *list);
            xs = pl_malloc((size_t)limit * sizeof *xs);
            snips = pl_calloc((size_t)limit, sizeof *snips);
        }
        event_row_x(st, 2, sqlite3_column_int64(st, 0), &list[len], &xs[len]);
        snips[len] = sq_col_text(st, 1, NULL);
        if (!snips[len]) snips[len] = pl_strdup("");
        len++;
    }
    sqlite3_reset(st);
    int bad = rc != SQLITE_ROW && rc != SQLITE_DONE;
    for (size_t i = 0; i < len; i++) {     /* the current form but reactions */
        ev_extra *x = &xs[i];
        pl_event *e = &list[i];
        pl_annot a = {.edited_ts = x->edited_ts, .deleted = x->deleted_ts > 0, .pinned = x->pinned_ts > 0};
        if (e->ref > 0) {
            a.reply_seq = e->ref;
            a.reply_deleted = !x->has_parent || x->p_deleted > 0 || !x->p_body;
            a.reply_sender = x->p_sender;
            a.reply_body = x->p_body;
            a.reply_len = x->p_len;
        }
        if (!bad) e->annot = pl_store__annot(&a);
        free(x->p_body);
    }
    free(xs);
    if (bad) {
        for (size_t i = 0; i < len; i++) free(snips[i]);
        free(snips);
        pl_event_list_free(list, len);
        j->more = 0;
        return PL_STORE_EUNAVAIL;
    }
    j->events = list;
    j->nevents = len;
    j->snippets = snips;
    if (j->more && len) j->out_id = (int64_t)list[len - 1].id;
    return PL_STORE_OK;
}

static int r_user_search(sq_reader *r, pl_job *j) {
    if (!j->query || strlen(j->query) > PL_STORE_QUERY_MAX) return PL_STORE_EINVAL;
    int limit = j->limit < 1 ? 1 : j->limit > PL_STORE_SEARCH_MAX ? PL_STORE_SEARCH_MAX : j->limit;
    char key[PL_STORE_QUERY_MAX + 1];
    pl_store__name_query(j->query, key);
    sqlite3_stmt *st = r->r[R_USER_SEARCH];
    sqlite3_bind_int64(st, 1, j->user);
    sqlite3_bind_text(st, 2, key, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 3, limit);
    j->users = pl_calloc((size_t)limit, sizeof *j->users);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW && j->nusers < (size_t)limit) {
        pl_user *u = &j->users[j->nusers++];
        u->id = sqlite3_column_int64(st, 0);
        const unsigned char *name = sqlite3_column_text(st, 1);
        snprintf(u->username, sizeof u->username, "%s", name ? (const char *)name : "");
        u->last_seen = sqlite3_column_int64(st, 2);
    }
    sqlite3_reset(st);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? PL_STORE_OK : PL_STORE_EUNAVAIL;
}

/* A user's own messages across conversations, by id (store.h invariant
 * 13: a data export). No index leads by sender (one would cost every
 * send), so this scans the log: an export is rare and runs on a reader. */
static int r_user_messages(sq_reader *r, pl_job *j) {
    int limit = j->limit < 1 ? 1 : j->limit > PL_STORE_PAGE_MAX ? PL_STORE_PAGE_MAX : j->limit;
    sqlite3_stmt *st = r->r[R_USER_MESSAGES];
    sqlite3_bind_int64(st, 1, j->user);
    sqlite3_bind_int64(st, 2, j->cursor > 0 ? j->cursor : 0);
    sqlite3_bind_int(st, 3, limit + 1);
    pl_event *list = NULL;
    ev_extra *xs = NULL;
    size_t len = 0;
    int rc = r_step_events(st, 1, 0, limit, &list, &xs, &len, &j->more);
    int bad = rc != SQLITE_DONE;
    for (size_t i = 0; i < len; i++) {          /* each its own conversation's reactions */
        if (bad) free(xs[i].p_body);
        else if (annotate(r, list[i].conv, j->user, &list[i], &xs[i], 1, 1) != PL_STORE_OK) bad = 1;
    }
    free(xs);
    if (bad) {
        pl_event_list_free(list, len);
        j->more = 0;
        return PL_STORE_EUNAVAIL;
    }
    j->events = list;
    j->nevents = len;
    return PL_STORE_OK;
}

static int r_dispatch(sq_reader *r, pl_job *j) {
    switch (j->op) {
    case PL_READ_USER_BY_NAME:
        if (!j->username) return PL_STORE_EINVAL;
        sqlite3_bind_text(r->r[R_USER_BY_NAME], 1, j->username, -1, SQLITE_STATIC);
        return r_user(r, R_USER_BY_NAME, &j->user_out, (j->flags & PL_READ_WITH_HASH) != 0);
    case PL_READ_USER_BY_ID:
        return r_user_by_id(r, j->user, &j->user_out);
    case PL_READ_LOGIN:
        return r_login(r, j->id, &j->login_out);
    case PL_READ_SESSION: {
        int rc = r_login(r, j->id, &j->login_out);
        if (!rc) rc = r_user_by_id(r, j->user, &j->user_out);
        if (!rc) rc = r_conv_list(r, j->user, 0, &j->convs, &j->nconvs);
        return rc;
    }
    case PL_READ_CONV_LIST:
        return r_conv_list(r, j->user, (j->flags & PL_READ_WITH_LAST) != 0, &j->convs, &j->nconvs);
    case PL_READ_CONV_GET: {
        int rc = r_conv_get(r, j->conv, j->user, &j->conv_out);
        if (rc == PL_STORE_OK && (rc = sq_read_conv_life(r, &j->conv_out)) != PL_STORE_OK)
            pl_conv_release(&j->conv_out);
        return rc;
    }
    case PL_READ_USER_MESSAGES:
        return r_user_messages(r, j);
    case PL_READ_EVENTS:
        return r_events(r, j);
    case PL_READ_RECEIPTS:
        return r_receipts(r, j);
    case PL_READ_USERS_VISIBLE:
        return r_users_visible(r, j);
    case PL_READ_SEND_CHECK:
        return r_send_check(r, j);
    case PL_READ_CONV_HEADS:
        return r_conv_heads(r, j);
    case PL_READ_MEMBERSHIPS:
        return r_memberships(r, j);
    case PL_READ_PINS:
        return r_pins(r, j);
    case PL_READ_MENTIONS:
        return r_mentions(r, j);
    case PL_READ_SEARCH:
        return r_search(r, j);
    case PL_READ_DEVICES:                 /* store_sqlite_keys.c */
        return sq_read_devices(r, j);
    case PL_READ_USER_SEARCH:
        return r_user_search(r, j);
    case PL_READ_MEDIA_GET:
    case PL_READ_MEDIA_LIST:
        return sq_read_media(r, j);
    case PL_READ_PUSH_DEVICES:            /* store_sqlite_push.c */
    case PL_READ_PUSH_TARGETS:
        return sq_read_push(r, j);
    case PL_READ_WORKSPACES:              /* store_sqlite_ws.c */
    case PL_READ_WORKSPACE_GET:
    case PL_READ_CHANNELS:
    case PL_READ_CONV_WORKSPACE:
        return sq_read_ws(r, j);
    case PL_READ_REPORTS:                 /* store_sqlite_reports.c */
    case PL_READ_BLOCKS:
        return sq_read_reports(r, j);
    default:
        return PL_STORE_EINVAL;
    }
}

/* pipeline.h: a reader thread's run_read. */
void sq_run_read(void *rctx, pl_job *j) {
    sq_reader *r = rctx;
    pl_job_release(j);
    j->more = 0;
    r_begin(r);                     /* one snapshot for multi-statement reads */
    int rc = r_dispatch(r, j);
    r_commit(r);
    if (rc) pl_job_release(j);
    if (rc == PL_STORE_EUNAVAIL)
        pl_log(PL_LOG_ERROR, 0, "store: read failed", "\"op\":%d,\"err\":\"%s\"", (int)j->op,
               sqlite3_errmsg(r->db));
    j->result = rc;
}
