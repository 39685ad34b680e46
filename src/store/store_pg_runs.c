/* store_pg_runs.c — the PostgreSQL writer's hot path: a run of consecutive
 * MESSAGE_SEND jobs, or of RECEIPT jobs, of one batch, as set operations
 * (see store_pg.c for the invariants; the SQLite backend's job_send and
 * job_receipt are the reference for each job's outcome).
 *
 * Owns: the per-run bookkeeping that makes a few statements give each job
 * exactly what running the jobs one by one in submission order would give
 * it: idempotency keys stored before the batch, or appended earlier in the
 * run (a dup of that one); membership as of the run's start (no member job
 * sits inside a run: the batch splits runs at every other job); the message
 * a reply names, stored before the run or appended earlier in it (no
 * delete sits inside a run either); cursors moving job by job.
 */
#include "pg_int.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "../core/alloc.h"

/* ---- runs of sends ------------------------------------------------------------ */

typedef struct send_x {
    int dup_row;           /* row of W_SEND_DUPS with the stored event, or -1 */
    int pair;              /* (conv, sender) index in the membership query */
    int done;              /* result already decided                    */
    int parent_row;        /* row of W_SEND_PARENTS (reply_to stored before the run), or -1 */
    int name_at, nnames;   /* its @names: names[name_at .. + nnames)    */
    int all;               /* @all 1, @here 2                           */
} send_x;

typedef struct send_pair { /* a (conv, sender) of the run               */
    int     member, role;
    int64_t joined;
} send_pair;

typedef struct key_ctx {   /* in-run idempotency keys: (conv, sender, cmid) */
    pl_job    **jobs;
    int64_t     conv;
    const char *cmid;
} key_ctx;

static int key_match(void *arg, int v) {
    key_ctx *k = arg;
    return k->jobs[v]->conv == k->conv && strcmp(k->jobs[v]->client_msg_id, k->cmid) == 0;
}

/* The message a reply names, as the checks and the preview need it. */
typedef struct send_parent {
    int         found, kind, deleted, member;  /* member: its author still is */
    int64_t     sender;
    const char *body;                           /* borrowed                  */
    size_t      len;
} send_parent;

/* Runs n consecutive MESSAGE_SEND jobs as if one by one: the idempotency
 * key first (stored before the batch or earlier in it: dup), then
 * membership, the message replied to (stored before the run, or appended
 * earlier in it), the mentions (store.h invariant 7: @names resolved to
 * members; membership does not change inside a run), then the append with
 * the conversation's next seq. One round trip of queries for the whole
 * run; the INSERT (with opts.push, and the outbox rows) and the mention
 * rows are queued into the next one. */
int pg_run_sends(pg_store *s, pl_job **jobs, size_t n, int64_t now) {
    send_x *x = pl_malloc(n * sizeof *x);
    int *dup_job = pl_malloc(n * sizeof *dup_job);     /* dup array index -> job */
    int *par_job = pl_malloc(n * sizeof *par_job);     /* parents array index -> job */
    int64_t *name_id = NULL;                            /* member of every @name of the run */
    size_t nnames = 0;
    send_pair *pr = pl_calloc(n, sizeof *pr);
    pg_kset pairs, keys, seqs;
    pg_kset_init(&pairs, n);
    pg_kset_init(&keys, n);
    pg_kset_init(&seqs, n);                             /* (conv, seq) appended -> job */
    pg_arr *dc = &s->arr[0], *du = &s->arr[1], *dk = &s->arr[2], *mc = &s->arr[3], *mu = &s->arr[4],
           *pc = &s->arr[5], *ps = &s->arr[6], *nc = &s->arr[7], *nk = &s->arr[8];
    pg_arr_start(dc, PG_INT8);
    pg_arr_start(du, PG_INT8);
    pg_arr_start(dk, PG_TEXT);
    pg_arr_start(mc, PG_INT8);
    pg_arr_start(mu, PG_INT8);
    pg_arr_start(pc, PG_INT8);
    pg_arr_start(ps, PG_INT8);
    pg_arr_start(nc, PG_INT8);
    pg_arr_start(nk, PG_TEXT);
    int npairs = 0, rc = PL_STORE_OK;
    for (size_t i = 0; i < n; i++) {
        pl_job *j = jobs[i];
        x[i].dup_row = x[i].pair = x[i].parent_row = -1;
        x[i].done = x[i].name_at = x[i].nnames = x[i].all = 0;
        if (!j->body || j->body_len > INT_MAX || j->seq < 0 || !pg_utf8_ok_n(j->body, j->body_len) ||
            (j->client_msg_id && !pg_utf8_ok(j->client_msg_id))) {
            j->result = PL_STORE_EINVAL;
            x[i].done = 1;
            continue;
        }
        if (j->client_msg_id) {
            dup_job[dk->n] = (int)i;
            pg_arr_i64(dc, j->conv);
            pg_arr_i64(du, j->user);
            pg_arr_bytes(dk, j->client_msg_id, strlen(j->client_msg_id));
        }
        size_t k = pg_kset_slot(&pairs, j->conv, j->user, NULL, NULL);
        if (pairs.v[k] < 0) {
            pairs.v[k] = npairs++;
            pg_arr_i64(mc, j->conv);
            pg_arr_i64(mu, j->user);
        }
        x[i].pair = pairs.v[k];
        if (j->seq > 0) {
            par_job[pc->n] = (int)i;
            pg_arr_i64(pc, j->conv);
            pg_arr_i64(ps, j->seq);
        }
        if (j->body_len && memchr(j->body, '@', j->body_len)) {
            /* every distinct name (not only the first PL_STORE_MENTIONS_MAX):
             * names of non-members do not count towards that cap */
            int nn;
            pl_mention_name *names = pl_store__mention_names(j->body, j->body_len, &nn, &x[i].all);
            x[i].name_at = (int)nnames;
            x[i].nnames = nn;
            for (int m = 0; m < nn; m++) {
                pg_arr_i64(nc, j->conv);
                pg_arr_bytes(nk, names[m], strlen(names[m]));
            }
            nnames += (size_t)nn;
            free(names);
        }
    }
    int ds = -1, ms = -1, ps_slot = -1, ns = -1;
    pg_params p = {0};
    if (dk->n) {
        pg_param_arr(&p, dc);
        pg_param_arr(&p, du);
        pg_param_arr(&p, dk);
        if ((ds = pg_w_send(s, W_SEND_DUPS, &p, 1)) < 0) { rc = ds; goto out; }
    }
    if (npairs) {
        p.n = 0;
        pg_param_arr(&p, mc);
        pg_param_arr(&p, mu);
        if ((ms = pg_w_send(s, W_SEND_MEMBERS, &p, 1)) < 0) { rc = ms; goto out; }
    }
    if (pc->n) {
        p.n = 0;
        pg_param_arr(&p, pc);
        pg_param_arr(&p, ps);
        if ((ps_slot = pg_w_send(s, W_SEND_PARENTS, &p, 1)) < 0) { rc = ps_slot; goto out; }
    }
    if (nc->n) {
        p.n = 0;
        pg_param_arr(&p, nc);
        pg_param_arr(&p, nk);
        if ((ns = pg_w_send(s, W_SEND_NAMES, &p, 1)) < 0) { rc = ns; goto out; }
    }
    if ((ds >= 0 || ms >= 0) && (rc = pg_w_sync(s)) != PL_STORE_OK) goto out;
    PGresult *dr = ds >= 0 ? s->w.res[ds] : NULL, *par = ps_slot >= 0 ? s->w.res[ps_slot] : NULL;
    if (dr)
        for (int r = 0; r < PQntuples(dr); r++) x[dup_job[pg_i64(dr, r, 0) - 1]].dup_row = r;
    if (ms >= 0)
        for (int r = 0; r < PQntuples(s->w.res[ms]); r++) {
            send_pair *q = &pr[pg_i64(s->w.res[ms], r, 0) - 1];
            q->member = 1;
            q->role = (int)pg_i64(s->w.res[ms], r, 1);
            q->joined = pg_i64(s->w.res[ms], r, 2);
        }
    if (par)
        for (int r = 0; r < PQntuples(par); r++) x[par_job[pg_i64(par, r, 0) - 1]].parent_row = r;
    if (nnames) {
        name_id = pl_calloc(nnames, sizeof *name_id);
        for (int r = 0; ns >= 0 && r < PQntuples(s->w.res[ns]); r++) {
            int64_t at = pg_i64(s->w.res[ns], r, 0) - 1;
            if (at >= 0 && (size_t)at < nnames) name_id[at] = pg_i64(s->w.res[ns], r, 1);
        }
    }

    pg_arr *ic = &s->arr[0], *is = &s->arr[1], *iid = &s->arr[2], *iu = &s->arr[3], *in = &s->arr[4],
           *ik = &s->arr[5], *ib = &s->arr[6], *idt = &s->arr[7], *ir = &s->arr[8], *xc = &s->arr[9],
           *xu = &s->arr[10], *xs = &s->arr[11], *ac = &s->arr[12], *au = &s->arr[13], *as = &s->arr[14];
    for (int a = 0; a < 15; a++) pg_arr_start(&s->arr[a], PG_INT8);
    pg_arr_start(ik, PG_TEXT);
    pg_arr_start(ib, PG_BYTEA);
    pg_arr_start(idt, PG_TEXT);
    key_ctx kc = {.jobs = jobs};
    for (size_t i = 0; i < n; i++) {
        pl_job *j = jobs[i];
        if (x[i].done) continue;
        j->result = PL_STORE_OK;
        if (x[i].dup_row >= 0) {             /* a retry: the stored event, nothing new */
            int r = x[i].dup_row;
            j->dup = 1;
            j->has_event = 1;
            j->event.conv = j->conv;
            j->event.seq = pg_i64(dr, r, 1);
            j->event.id = (uint64_t)pg_i64(dr, r, 2);
            j->event.ts = pg_i64(dr, r, 3);
            j->event.kind = PL_EV_MESSAGE;
            j->event.sender = j->user;
            j->event.client_msg_id = pl_strdup(j->client_msg_id);
            j->event.body = pg_bytea(dr, r, 4, &j->event.body_len);   /* NULL once deleted */
            continue;
        }
        size_t ks = 0;
        if (j->client_msg_id) {
            kc.conv = j->conv;
            kc.cmid = j->client_msg_id;
            ks = pg_kset_slot(&keys, j->conv ^ (int64_t)pg_str_hash(j->client_msg_id), j->user, key_match, &kc);
            if (keys.v[ks] >= 0) {           /* appended earlier in this run */
                pl_event_copy(&j->event, &jobs[keys.v[ks]]->event);
                free(j->event.data);          /* as a stored dup: the ack's fields only */
                free(j->event.annot);
                j->event.data = j->event.annot = NULL;
                j->event.ref = 0;
                j->dup = 1;
                j->has_event = 1;
                continue;
            }
        }
        pg_conv *e = pg_conv_find(s, j->conv);            /* locked (the map is in) */
        send_pair *q = &pr[x[i].pair];
        if (!e || !q->member) {
            if (j->seq > 0) j->why = "no such conversation";
            j->result = PL_STORE_ENOTFOUND;
            continue;
        }
        send_parent pa = {0};
        char *pbody = NULL;
        if (j->seq > 0) {
            if (x[i].parent_row >= 0) {          /* stored before the run */
                int r = x[i].parent_row;
                pa.found = 1;
                pa.kind = (int)pg_i64(par, r, 1);
                pa.sender = pg_i64(par, r, 2);
                pa.deleted = pg_i64(par, r, 4) > 0;
                pa.member = PQgetvalue(par, r, 5)[0] == 't';
            } else {                             /* appended earlier in the run? */
                size_t k = pg_kset_slot(&seqs, j->conv, j->seq, NULL, NULL);
                if (seqs.v[k] >= 0) {
                    pl_job *o = jobs[seqs.v[k]];
                    pa.found = 1;
                    pa.kind = PL_EV_MESSAGE;
                    pa.sender = o->user;
                    pa.member = 1;               /* membership holds through the run */
                    pa.body = o->body;
                    pa.len = o->body_len;
                }
            }
            if (j->seq < q->joined || !pa.found) {
                j->why = "no such message";
                j->result = PL_STORE_ENOTFOUND;
                continue;
            }
            if (pa.kind != PL_EV_MESSAGE) {
                j->why = "not a message";
                j->result = PL_STORE_EINVAL;
                continue;
            }
            if (pa.deleted) {
                j->why = "message deleted";
                j->result = PL_STORE_EGONE;
                continue;
            }
        }
        if (x[i].all && q->role != PL_ROLE_ADMIN && pl_store__large(e, s->large_group)) {
            j->why = "@all and @here need an admin in a large group";
            j->result = PL_STORE_EFORBID;
            continue;
        }
        if ((j->result = pl_store__e2ee_send_check(e->e2ee, j->ciphertext, &j->why)) != PL_STORE_OK)
            continue;                                 /* store.h invariant 9 */
        if (e->blocked) {                             /* invariant 14: the locked row's flag */
            j->why = "blocked";
            j->result = PL_STORE_EFORBID;
            continue;
        }
        int64_t ids[PL_STORE_MENTIONS_MAX];
        size_t nids = 0;
        for (int m = 0; m < x[i].nnames && nids < PL_STORE_MENTIONS_MAX; m++) {
            int64_t u = name_id[x[i].name_at + m];
            if (u > 0 && u != j->user) ids[nids++] = u;
        }
        int64_t seq = e->last_seq + 1;
        uint64_t id = pl_idgen_next(&s->ids, now);
        char *data = j->ciphertext ? pl_store__data_ciphertext(j->seq, j->ciphertext)
                                   : pl_store__data_message(j->seq, ids, nids, x[i].all);
        data = pl_store__data_attach(data, j->attach_json);   /* media: refs by trigger */
        pg_arr_i64(ic, j->conv);
        pg_arr_i64(is, seq);
        pg_arr_i64(iid, (int64_t)id);
        pg_arr_i64(iu, j->user);
        pg_arr_i64(in, e->msg_count + 1);
        pg_arr_bytes(ik, j->client_msg_id, j->client_msg_id ? strlen(j->client_msg_id) : 0);
        pg_arr_bytes(ib, j->body, j->body_len);
        pg_arr_bytes(idt, data, data ? strlen(data) : 0);
        pg_arr_i64(ir, j->seq);
        for (size_t m = 0; m <= nids; m++) {    /* mention rows: the named, the parent's author */
            int64_t u = m < nids ? ids[m] : pa.member ? pa.sender : 0;
            if (u <= 0 || u == j->user) continue;
            pg_arr_i64(xc, j->conv);
            pg_arr_i64(xu, u);
            pg_arr_i64(xs, seq);
        }
        if (x[i].all) {
            pg_arr_i64(ac, j->conv);
            pg_arr_i64(au, j->user);
            pg_arr_i64(as, seq);
        }
        pg_appended(s, e, j, seq, id, now, PL_EV_MESSAGE, j->user, 0, j->client_msg_id, j->body,
                    j->body_len, data);
        j->event.ref = j->seq;
        if (j->seq > 0) {                        /* its reply preview */
            if (x[i].parent_row >= 0) pa.body = pbody = pg_bytea(par, x[i].parent_row, 3, &pa.len);
            pl_annot an = {.reply_seq = j->seq, .reply_sender = pa.sender, .reply_body = pa.body,
                           .reply_len = pa.len};
            j->event.annot = pl_store__annot(&an);
            free(pbody);
        }
        pl_own_add(&s->own, j->conv, j->user, 1);
        if (j->client_msg_id) keys.v[ks] = (int)i;
        size_t k = pg_kset_slot(&seqs, j->conv, seq, NULL, NULL);
        seqs.v[k] = (int)i;
    }
    if (ic->n) {
        p.n = 0;
        pg_param_i64(&p, now);
        pg_param_arr(&p, ic);
        pg_param_arr(&p, is);
        pg_param_arr(&p, iid);
        pg_param_arr(&p, iu);
        pg_param_arr(&p, in);
        pg_param_arr(&p, ik);
        pg_param_arr(&p, ib);
        pg_param_arr(&p, idt);
        pg_param_arr(&p, ir);
        /* with push, the same INSERT also writes each MESSAGE's push_outbox
         * row (store.h invariant 10) */
        if (pg_w_send(s, s->push ? W_SEND_INSERT_PUSH : W_SEND_INSERT, &p, 0) < 0) rc = W_LOST;
    }
    if (rc == PL_STORE_OK && xc->n) {
        p.n = 0;
        pg_param_arr(&p, xc);
        pg_param_arr(&p, xu);
        pg_param_arr(&p, xs);
        if (pg_w_send(s, W_MENTION_INSERT, &p, 0) < 0) rc = W_LOST;
    }
    if (rc == PL_STORE_OK && ac->n) {
        p.n = 0;
        pg_param_arr(&p, ac);
        pg_param_arr(&p, au);
        pg_param_arr(&p, as);
        if (pg_w_send(s, W_MENTION_ALL, &p, 0) < 0) rc = W_LOST;
    }
out:
    pg_kset_free(&pairs);
    pg_kset_free(&keys);
    pg_kset_free(&seqs);
    free(name_id);
    free(pr);
    free(par_job);
    free(dup_job);
    free(x);
    return rc;
}

/* ---- runs of receipts ---------------------------------------------------------- */

typedef struct rcpt_pair {
    int     found;
    int64_t cd, cr;         /* cursors, moving job by job                   */
    int64_t joined, own;    /* joined_seq, own_unread of the row            */
    int     moved;
} rcpt_pair;

typedef struct rcpt_x {
    int     pair;           /* (conv, user) index in the cursor query        */
    int64_t nd, nr, cr;     /* cursors after the job; read cursor before it */
    int64_t base;
} rcpt_x;

/* Runs n consecutive RECEIPT jobs as if one by one (same rules as the
 * SQLite backend's job_receipt): cursors clamped to the log, merged with
 * max; own messages the read cursor passed leave own_unread; unread from
 * the counters. Three statements for the run. */
int pg_run_receipts(pg_store *s, pl_job **jobs, size_t n) {
    rcpt_x *x = pl_malloc(n * sizeof *x);
    rcpt_pair *pr = pl_calloc(n, sizeof *pr);
    pg_kset pairs;
    pg_kset_init(&pairs, n);
    pg_arr *pc = &s->arr[0], *pu = &s->arr[1];
    pg_arr_start(pc, PG_INT8);
    pg_arr_start(pu, PG_INT8);
    int npairs = 0, rc = PL_STORE_OK;
    for (size_t i = 0; i < n; i++) {
        pl_job *j = jobs[i];
        size_t k = pg_kset_slot(&pairs, j->conv, j->user, NULL, NULL);
        if (pairs.v[k] < 0) {
            pairs.v[k] = npairs++;
            pg_arr_i64(pc, j->conv);
            pg_arr_i64(pu, j->user);
        }
        x[i].pair = pairs.v[k];
    }
    if (npairs) {
        pg_params p = {0};
        pg_param_arr(&p, pc);
        pg_param_arr(&p, pu);
        PGresult *r = pg_w_query(s, W_RCPT_CURSORS, &p, &rc);
        if (!r) goto out;
        for (int row = 0; row < PQntuples(r); row++) {
            rcpt_pair *q = &pr[pg_i64(r, row, 0) - 1];
            q->found = 1;
            q->cd = pg_i64(r, row, 1);
            q->cr = pg_i64(r, row, 2);
            q->joined = pg_i64(r, row, 3);
            q->own = pg_i64(r, row, 4);
        }
    }
    /* pass 1: the cursors, job by job, and what each needs looked up */
    pg_arr *lc = &s->arr[0], *lu = &s->arr[1], *llo = &s->arr[2], *lhi = &s->arr[3], *lat = &s->arr[4],
           *lb = &s->arr[5];
    pg_arr_start(lc, PG_INT8);
    pg_arr_start(lu, PG_INT8);
    pg_arr_start(llo, PG_INT8);
    pg_arr_start(lhi, PG_INT8);
    pg_arr_start(lat, PG_INT8);
    pg_arr_start(lb, PG_INT8);
    int *look = pl_malloc(n * sizeof *look);           /* job -> lookup row, or -1 */
    for (size_t i = 0; i < n; i++) {
        pl_job *j = jobs[i];
        look[i] = -1;
        pg_conv *e = pg_conv_find(s, j->conv);            /* locked (the map is in) */
        if (!e || !pr[x[i].pair].found) {
            j->result = PL_STORE_ENOTFOUND;
            continue;
        }
        rcpt_pair *q = &pr[x[i].pair];
        int64_t d = j->delivered < e->last_seq ? j->delivered : e->last_seq;
        int64_t r = j->read < e->last_seq ? j->read : e->last_seq;
        if (r < q->joined) r = 0;                      /* before it joined: moves nothing (audit E3, M3) */
        if (d < q->joined) d = 0;
        if (r > d) d = r;                              /* read implies delivered */
        x[i].nd = d > q->cd ? d : q->cd;
        x[i].nr = r > q->cr ? r : q->cr;
        x[i].cr = q->cr;
        j->created = x[i].nd != q->cd || x[i].nr != q->cr;
        x[i].base = x[i].nr > q->joined - 1 ? x[i].nr : q->joined - 1;
        q->cd = x[i].nd;
        q->cr = x[i].nr;
        q->moved |= j->created;
        int moved_read = x[i].nr != x[i].cr;
        look[i] = lc->n;
        pg_arr_i64(lc, j->conv);
        pg_arr_i64(lu, j->user);
        /* own_unread counts from joined_seq: a re-joined member's earlier
         * messages are not in it (store_sqlite_receipts.c sq_job_receipt) */
        pg_arr_i64(llo, moved_read ? (x[i].cr > q->joined - 1 ? x[i].cr : q->joined - 1) : 0);
        pg_arr_i64(lhi, moved_read ? x[i].nr : 0);
        pg_arr_i64(lat, moved_read ? x[i].nr : 0);
        pg_arr_i64(lb, x[i].base > 0 ? x[i].base : 0);
        j->result = PL_STORE_OK;
    }
    if (lc->n) {
        pg_params p = {0};
        pg_param_arr(&p, lc);
        pg_param_arr(&p, lu);
        pg_param_arr(&p, llo);
        pg_param_arr(&p, lhi);
        pg_param_arr(&p, lat);
        pg_param_arr(&p, lb);
        PGresult *r = pg_w_query(s, W_RCPT_LOOKUPS, &p, &rc);
        if (!r) goto out2;
        int *row_of = pl_malloc((size_t)lc->n * sizeof *row_of);
        for (int row = 0; row < PQntuples(r); row++) row_of[pg_i64(r, row, 0) - 1] = row;
        /* pass 2: own_unread and the outputs, in order */
        for (size_t i = 0; i < n; i++) {
            if (look[i] < 0) continue;
            pl_job *j = jobs[i];
            int row = row_of[look[i]];
            rcpt_pair *q = &pr[x[i].pair];
            pg_conv *e = pg_conv_find(s, j->conv);
            pl_own_ent *pending = pl_own_find(&s->own, j->conv, j->user);   /* this batch, not flushed */
            int64_t own = q->own + (pending ? pending->delta : 0);
            if (x[i].nr != x[i].cr) {        /* own messages the cursor passed are read */
                int64_t passed = pg_i64(r, row, 1);
                if (passed) {
                    own -= passed;
                    pl_own_add(&s->own, j->conv, j->user, -passed);
                }
                if (!pg_null(r, row, 2) && pg_i64(r, row, 2) == PL_EV_MESSAGE && pg_i64(r, row, 3) != j->user)
                    j->out_peer = pg_i64(r, row, 3);
            }
            int64_t msg_no = x[i].base > 0 ? pg_i64(r, row, 4) : 0;
            j->out_delivered = x[i].nd;
            j->out_read = x[i].nr;
            j->out_unread = e->msg_count - msg_no - own;
            if (j->out_unread < 0) j->out_unread = 0;
            j->out_members = e->member_count;
            j->out_unread_mentions = pg_i64(r, row, 5);
        }
        free(row_of);
    }
    /* the cursors that moved, queued into the next round trip */
    pg_arr *uc = &s->arr[0], *uu = &s->arr[1], *ud = &s->arr[2], *ur = &s->arr[3];
    pg_arr_start(uc, PG_INT8);
    pg_arr_start(uu, PG_INT8);
    pg_arr_start(ud, PG_INT8);
    pg_arr_start(ur, PG_INT8);
    for (size_t k = 0; k < pairs.cap; k++) {
        if (pairs.v[k] < 0 || !pr[pairs.v[k]].moved) continue;
        pg_arr_i64(uc, pairs.a[k]);
        pg_arr_i64(uu, pairs.b[k]);
        pg_arr_i64(ud, pr[pairs.v[k]].cd);
        pg_arr_i64(ur, pr[pairs.v[k]].cr);
    }
    if (uc->n) {
        pg_params p = {0};
        pg_param_arr(&p, uc);
        pg_param_arr(&p, uu);
        pg_param_arr(&p, ud);
        pg_param_arr(&p, ur);
        if (pg_w_send(s, W_RCPT_UPDATE, &p, 0) < 0) rc = W_LOST;
    }
out2:
    free(look);
out:
    pg_kset_free(&pairs);
    free(pr);
    free(x);
    return rc;
}
