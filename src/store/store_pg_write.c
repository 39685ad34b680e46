/* store_pg_write.c — the PostgreSQL writer's batch: one transaction per
 * batch of write jobs on the writer thread (see store_pg.c for the pipeline
 * across nodes and its invariants, which this file keeps).
 *
 * Owns: the batch's course (lock, jobs, flush, COMMIT), its retries and
 * failures, the idle tick, and the writer's per-batch state: the
 * conversation map (the locked rows' counters, kept in memory and written
 * back before COMMIT) and the own_unread deltas of the open transaction.
 * The jobs themselves are in store_pg_jobs.c (one at a time) and
 * store_pg_runs.c (consecutive sends or receipts as set operations).
 *
 * A batch, in round trips (a pipeline each; see pgc_sync):
 *   1. BEGIN + the lock on the conversations it touches (ascending id),
 *      queued (w_begin); they go with the first job's queries, and the
 *      locked rows fill the map at that first sync (pg_w_sync)
 *   2. per run of consecutive sends: the idempotency keys and the
 *      memberships of the whole run (two set queries); the run's events are
 *      then appended with one INSERT .. SELECT FROM unnest, queued into the
 *      next round trip. Consecutive receipts likewise (three statements per
 *      run). Other jobs run singly; a multi-statement one in a SAVEPOINT.
 *   3. [lease renewal when due] the queued INSERT, the flush of own_unread,
 *      conversations, last_seen, the outbox row, COMMIT (w_finish)
 * So a batch of sends costs two round trips and one WAL flush whatever its
 * size, and each job sees exactly what running the jobs one by one in
 * submission order would have shown it.
 */
#include "pg_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../core/alloc.h"
#include "../core/clock.h"
#include "../core/log.h"
#include "../core/metrics.h"

/* ---- the batch's state (the maps themselves are store_util.c's) ----------- */

static void conv_clear(pg_store *s) {
    pl_conv_map_clear(&s->convs);
}

/* ---- statements ------------------------------------------------------------ */

static int w_code(pg_store *s, int rc) {
    if (rc == PG_OK) return PL_STORE_OK;
    if (rc == PG_GONE) return W_LOST;
    return pgc_retryable(&s->w) ? W_RETRY : W_FATAL;
}

/* The rows of the lock query (queued by w_begin) fill the map at the first
 * sync of the batch: the statements queued after it ran under the locks. */
static void lock_rows(pg_store *s) {
    PGresult *r = s->w.res[s->lock_slot];
    s->lock_slot = -1;
    for (int row = 0; row < PQntuples(r); row++) {
        pg_conv *e = pg_conv_put(s, pg_i64(r, row, 0));
        e->kind = (int)pg_i64(r, row, 1);
        e->last_seq = pg_i64(r, row, 2);
        e->last_ts = pg_i64(r, row, 3);
        e->msg_count = pg_i64(r, row, 4);
        e->member_count = pg_i64(r, row, 5);
        e->e2ee = (int)pg_i64(r, row, 6);
        e->blocked = (int)pg_i64(r, row, 7);
    }
}

int pg_w_sync(pg_store *s) {
    int rc = w_code(s, pgc_sync(&s->w));
    if (rc == PL_STORE_OK && s->lock_slot >= 0) lock_rows(s);
    if (rc != PL_STORE_OK) s->lock_slot = -1;
    return rc;
}

int pg_w_locked(pg_store *s) { return s->lock_slot >= 0 ? pg_w_sync(s) : PL_STORE_OK; }

/* Queues a statement; its slot, or W_LOST. */
int pg_w_send(pg_store *s, int stmt, const pg_params *p, int want) {
    int slot = pgc_send(&s->w, stmt, p, want);
    return slot < 0 ? W_LOST : slot;
}

/* One statement now (with whatever was queued before it): its result or
 * NULL with *rc set. */
PGresult *pg_w_query(pg_store *s, int stmt, const pg_params *p, int *rc) {
    int slot = pg_w_send(s, stmt, p, 1);
    if (slot < 0) {
        *rc = slot;
        return NULL;
    }
    *rc = pg_w_sync(s);
    return *rc ? NULL : s->w.res[slot];
}

/* ---- job outputs ----------------------------------------------------------- */

void pg_reset_outputs(pl_job *j) {
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

static void fail_all(pl_job **jobs, size_t n) {
    for (size_t i = 0; i < n; i++) {
        pg_reset_outputs(jobs[i]);
        jobs[i]->result = PL_STORE_EUNAVAIL;
    }
}

static char *copy_n(const char *p, size_t n) {
    char *d = pl_malloc(n + 1);
    if (n) memcpy(d, p, n);
    d[n] = '\0';
    return d;
}

/* An event this batch appended to e (its statement succeeded or is queued
 * in the batch): the map moves and the job's event is filled. data is
 * taken over. */
void pg_appended(pg_store *s, pg_conv *e, pl_job *j, int64_t seq, uint64_t id, int64_t now,
                 int kind, int64_t sender, int64_t subject, const char *cmid, const char *body,
                 size_t body_len, char *data) {
    e->last_seq = seq;
    if (now > e->last_ts) e->last_ts = now;
    if (kind == PL_EV_MESSAGE) e->msg_count++;
    e->dirty = 1;
    e->appended = 1;
    if (!s->first_id) s->first_id = id;
    j->has_event = 1;
    j->event.conv = e->conv;
    j->event.seq = seq;
    j->event.id = id;
    j->event.ts = now;
    j->event.kind = kind;
    j->event.sender = sender;
    j->event.subject = subject;
    j->event.client_msg_id = cmid ? pl_strdup(cmid) : NULL;
    if (body) {
        j->event.body = copy_n(body, body_len);
        j->event.body_len = body_len;
    }
    j->event.data = data;
}

int pg_write_and_append(pg_store *s, pl_job *j, pg_conv *e, int stmt, const pg_params *p, int kind,
                        int64_t subject, char *data, int64_t now) {
    uint64_t id = pl_idgen_next(&s->ids, now);
    pg_params ev = {0};
    pg_event_params(&ev, e, id, now, kind, j->user, subject, data, 0, NULL, 0);
    int sp = pg_w_send(s, W_SAVEPOINT, NULL, 0), rc;
    if (sp < 0 || (stmt >= 0 && pg_w_send(s, stmt, p, 0) < 0) || pg_w_send(s, W_EVENT_INSERT, &ev, 0) < 0 ||
        pg_w_send(s, W_RELEASE, NULL, 0) < 0) {
        free(data);
        return W_LOST;
    }
    if ((rc = pg_w_sync(s)) != PL_STORE_OK) {
        free(data);
        return pg_sp_failed(s, j, sp, rc);
    }
    pg_appended(s, e, j, e->last_seq + 1, id, now, kind, j->user, subject, NULL, NULL, 0, data);
    j->created = 1;
    return PL_STORE_OK;
}

/* ---- small sets of the runs ------------------------------------------------ */

void pg_kset_init(pg_kset *k, size_t n) {
    k->cap = 16;
    while (k->cap < n * 2) k->cap *= 2;
    k->a = pl_calloc(k->cap, sizeof *k->a);
    k->b = pl_calloc(k->cap, sizeof *k->b);
    k->v = pl_malloc(k->cap * sizeof *k->v);
    for (size_t i = 0; i < k->cap; i++) k->v[i] = -1;
}

void pg_kset_free(pg_kset *k) {
    free(k->a);
    free(k->b);
    free(k->v);
}

/* The slot of (a, b): its value is -1 when new. match(i) decides equality
 * beyond (a, b) (NULL: none). */
size_t pg_kset_slot(pg_kset *k, int64_t a, int64_t b, int (*match)(void *, int), void *arg) {
    for (size_t i = pl_store__slot(a, b, k->cap);; i = (i + 1) & (k->cap - 1)) {
        if (k->v[i] < 0) {
            k->a[i] = a;
            k->b[i] = b;
            return i;
        }
        if (k->a[i] == a && k->b[i] == b && (!match || match(arg, k->v[i]))) return i;
    }
}

uint64_t pg_str_hash(const char *p) {
    uint64_t h = 1469598103934665603ull;               /* FNV-1a */
    for (; *p; p++) h = (h ^ (unsigned char)*p) * 1099511628211ull;
    return h;
}
int pg_cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

/* ---- the batch ------------------------------------------------------------------- */

/* Every job that appends to a conversation or reads its counters,
 * NOTIFY_SET (members rows change only under their conversation's lock),
 * REPORT (its checks and snapshot see the target as an action's do), and
 * a conversation's RETENTION_SET and HOLD_SET (its row is written; a
 * workspace's, conv 0, locks the workspace: pg_ws_lock_of). The purge
 * locks its conversations itself, SKIP LOCKED (store_pg_life.c). */
static int touches_conv(int op) {
    return op == PL_JOB_MESSAGE_SEND || op == PL_JOB_RECEIPT || op == PL_JOB_MEMBER_ADD ||
           op == PL_JOB_MEMBER_REMOVE || op == PL_JOB_MEMBER_LEAVE || op == PL_JOB_MEMBER_ROLE ||
           op == PL_JOB_MESSAGE_EDIT ||
           op == PL_JOB_MESSAGE_DELETE || op == PL_JOB_REACTION || op == PL_JOB_PIN ||
           op == PL_JOB_NOTIFY_SET || op == PL_JOB_CONV_E2EE || op == PL_JOB_DEVICES_ANNOUNCE ||
           op == PL_JOB_CHANNEL_JOIN || op == PL_JOB_REPORT || op == PL_JOB_RETENTION_SET ||
           op == PL_JOB_HOLD_SET;
}

/* BEGIN, and the lock on every existing conversation the batch touches, in
 * ascending id (invariant 1), queued: the first round trip of the batch
 * carries them, and their rows fill the map then (pg_w_sync). Then the
 * workspaces whose members or channels the batch changes, ascending too
 * (invariant 13), and with them the "general" channels it joins people to
 * and the direct conversations of the pairs it blocks or unblocks
 * (invariant 16; both in the conversations' lock, so in their order). */
static int w_begin(pg_store *s, pl_job **jobs, size_t n) {
    if (s->lockids_cap < n) {
        s->lockids_cap = n;
        s->lockids = pl_realloc(s->lockids, n * sizeof *s->lockids);
    }
    size_t m = 0;
    pg_arr *a = &s->arr[0], *ws = &s->arr[1], *gen = &s->arr[2], *pairs = &s->arr[3];
    pg_arr_start(ws, PG_INT8);
    pg_arr_start(gen, PG_INT8);
    pg_arr_start(pairs, PG_TEXT);
    for (size_t i = 0; i < n; i++) {
        int with_general = 0;
        char key[48];
        int64_t w = pg_ws_lock_of(jobs[i], &with_general);
        if (w) pg_arr_i64(ws, w);              /* duplicates: ANY() takes them */
        if (w && with_general) pg_arr_i64(gen, w);
        if (touches_conv(jobs[i]->op) && jobs[i]->conv) s->lockids[m++] = jobs[i]->conv;
        if (pg_block_key(jobs[i], key)) pg_arr_bytes(pairs, key, strlen(key));
    }
    qsort(s->lockids, m, sizeof *s->lockids, pg_cmp_i64);
    pg_arr_start(a, PG_INT8);
    for (size_t i = 0; i < m; i++)
        if (i == 0 || s->lockids[i] != s->lockids[i - 1]) pg_arr_i64(a, s->lockids[i]);
    if (pg_w_send(s, W_BEGIN, NULL, 0) < 0) return W_LOST;
    if (a->n || gen->n || pairs->n) {
        int more = gen->n || pairs->n;
        pg_params p = {0};
        pg_param_arr(&p, a);
        if (more) {
            pg_param_arr(&p, gen);
            pg_param_arr(&p, pairs);
        }
        int slot = pg_w_send(s, more ? W_CONV_LOCK_MORE : W_CONV_LOCK, &p, 1);
        if (slot < 0) return slot;
        s->lock_slot = slot;                      /* its rows: at the next sync */
    }
    if (ws->n) {
        pg_params p = {0};
        pg_param_arr(&p, ws);
        if (pg_w_send(s, W_WS_LOCK, &p, 0) < 0) return W_LOST;
    }
    return PL_STORE_OK;                           /* BEGIN goes with the next query */
}

/* Queues the writes the batch kept in memory, then COMMIT, in one round
 * trip (after the lease renewal's, when due: invariant 6). now: the batch's
 * time (W_CONV_FLUSH). */
static int w_finish(pg_store *s, pl_job **jobs, size_t n, int64_t now) {
    int rc;
    if ((rc = pg_w_locked(s)) != PL_STORE_OK) return rc;
    if (pl_mono_ms() - s->lease_at >= PG_LEASE_RENEW_MS) {
        rc = pg_lease_renew(s);
        if (rc <= 0) return rc == 0 ? W_LEASE : rc;
    }
    pg_arr *a = s->arr;
    pg_params p = {0};
    for (int i = 0; i < 3; i++) pg_arr_start(&a[i], PG_INT8);
    for (size_t i = 0; i < s->own.cap && s->own.len; i++) {
        pl_own_ent *o = &s->own.tab[i];
        if (!o->conv || !o->delta) continue;
        pg_arr_i64(&a[0], o->conv);
        pg_arr_i64(&a[1], o->user);
        pg_arr_i64(&a[2], o->delta);
    }
    if (a[0].n) {
        for (int i = 0; i < 3; i++) pg_param_arr(&p, &a[i]);
        if (pg_w_send(s, W_OWN_FLUSH, &p, 0) < 0) return W_LOST;
    }
    p.n = 0;
    for (int i = 0; i < 5; i++) pg_arr_start(&a[i], PG_INT8);
    for (size_t i = 0; i < s->convs.cap && s->convs.len; i++) {
        pg_conv *e = &s->convs.tab[i];
        if (!e->conv || !e->dirty) continue;
        pg_arr_i64(&a[0], e->conv);
        pg_arr_i64(&a[1], e->last_seq);
        pg_arr_i64(&a[2], e->last_ts);
        pg_arr_i64(&a[3], e->msg_count);
        pg_arr_i64(&a[4], e->member_count);
    }
    if (a[0].n) {
        for (int i = 0; i < 5; i++) pg_param_arr(&p, &a[i]);
        pg_param_i64(&p, now);
        if (pg_w_send(s, W_CONV_FLUSH, &p, 0) < 0) return W_LOST;
    }
    if (s->nseen) {
        p.n = 0;
        for (int i = 0; i < 3; i++) pg_arr_start(&a[i], PG_INT8);
        for (size_t i = 0; i < s->nseen; i += 2) {
            pg_arr_i64(&a[0], s->seen[i]);
            pg_arr_i64(&a[1], s->seen[i]);
            pg_arr_i64(&a[2], s->seen[i + 1]);
        }
        pg_param_arr(&p, &a[0]);
        if (pg_w_send(s, W_USERS_LOCK, &p, 0) < 0) return W_LOST;
        p.n = 0;
        pg_param_arr(&p, &a[1]);
        pg_param_arr(&p, &a[2]);
        if (pg_w_send(s, W_LAST_SEEN, &p, 0) < 0) return W_LOST;
    }
    if (s->outbox && s->first_id) {            /* conversations ascending */
        size_t m = 0;
        if (s->lockids_cap < s->convs.len) {
            s->lockids_cap = s->convs.len;
            s->lockids = pl_realloc(s->lockids, s->lockids_cap * sizeof *s->lockids);
        }
        for (size_t i = 0; i < s->convs.cap; i++)
            if (s->convs.tab[i].conv && s->convs.tab[i].appended) s->lockids[m++] = s->convs.tab[i].conv;
        qsort(s->lockids, m, sizeof *s->lockids, pg_cmp_i64);
        p.n = 0;
        pg_arr_start(&a[0], PG_INT8);
        pg_arr_start(&a[1], PG_INT8);
        for (size_t i = 0; i < m; i++) {
            pg_arr_i64(&a[0], s->lockids[i]);
            pg_arr_i64(&a[1], pg_conv_find(s, s->lockids[i])->last_seq);
        }
        pg_param_i64(&p, s->base.node_id);
        pg_param_i64(&p, (int64_t)s->first_id);
        pg_param_arr(&p, &a[0]);
        pg_param_arr(&p, &a[1]);
        if (pg_w_send(s, W_OUTBOX_INSERT, &p, 0) < 0) return W_LOST;
    }
    int cs = pg_w_send(s, W_COMMIT, NULL, 1);
    if (cs < 0) return W_LOST;
    s->commit_sent = 1;
    if ((rc = pg_w_sync(s)) != PL_STORE_OK) return rc;
    if (strcmp(PQcmdStatus(s->w.res[cs]), "COMMIT") != 0) {   /* the transaction had failed */
        pl_log(PL_LOG_ERROR, 0, "store: COMMIT rolled back", "\"status\":\"%s\"", PQcmdStatus(s->w.res[cs]));
        return W_FATAL;
    }
    if (s->outbox && s->first_id)
        for (size_t i = 0; i < n; i++)
            if (jobs[i]->has_event && !jobs[i]->dup) jobs[i]->out_batch = (int64_t)s->first_id;
    return PL_STORE_OK;
}

/* One attempt at the batch: every job's result set, or a W_* for all. */
static int w_attempt(pg_store *s, pl_job **jobs, size_t n, int64_t now) {
    s->commit_sent = 0;
    s->lock_slot = -1;
    s->first_id = 0;
    s->nseen = 0;
    conv_clear(s);
    pl_own_clear(&s->own);
    for (size_t i = 0; i < n; i++) pg_reset_outputs(jobs[i]);
    int rc = w_begin(s, jobs, n);
    if (rc) return rc;
    for (size_t i = 0; i < n;) {
        int op = jobs[i]->op;
        size_t k = i + 1;
        if (op == PL_JOB_MESSAGE_SEND || op == PL_JOB_RECEIPT)
            while (k < n && (int)jobs[k]->op == op) k++;
        if (op == PL_JOB_MESSAGE_SEND) rc = pg_run_sends(s, jobs + i, k - i, now);
        else if (op == PL_JOB_RECEIPT) rc = pg_run_receipts(s, jobs + i, k - i);
        else {
            rc = pg_run_job(s, jobs[i], now);
            if (rc > W_FATAL && rc != PL_STORE_OK) {
                const char *why = jobs[i]->why;          /* the reason stays */
                pg_reset_outputs(jobs[i]);
                jobs[i]->why = why;
            }
            if (rc > W_FATAL) jobs[i]->result = rc;
        }
        if (rc <= W_FATAL) return rc;
        i = k;
    }
    return w_finish(s, jobs, n, now);
}

/* Connected, lease held: may run a batch. Reconnects when due (at once if
 * force, or if another connection of this store succeeded since). */
static int w_ready(pg_store *s, int force) {
    if (!s->w.pq) {
        unsigned gen = __atomic_load_n(&s->connect_gen, __ATOMIC_ACQUIRE);
        if (!force && pl_mono_ms() < s->w_next_try && gen == s->w_seen_gen) return 0;
        if (pg_w_connect(s) != 0) return 0;
    }
    if (s->lease_lost && pg_lease_reacquire(s) != 0) return 0;
    return s->w.pq != NULL;
}

/* Ends a failed attempt: ROLLBACK on a live connection, else drop it. */
static void w_abort(pg_store *s, int rc) {
    if (rc != W_LOST && s->w.pq && pg_w_send(s, W_ROLLBACK, NULL, 0) >= 0 && pgc_sync(&s->w) == PG_OK) {
        conv_clear(s);
        pl_own_clear(&s->own);
        return;
    }
    pg_w_drop(s, rc == W_LOST ? "connection lost" : "rollback failed");
    conv_clear(s);
    pl_own_clear(&s->own);
}

/* pipeline.h: the writer thread's run_batch. */
void pg_run_batch(void *wctx, pl_job **jobs, size_t n) {
    pg_store *s = wctx;
    int one = 1;                                      /* test hook */
    if (__atomic_compare_exchange_n(&s->hold, &one, 2, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {
        while (__atomic_load_n(&s->hold, __ATOMIC_SEQ_CST)) {
            struct timespec ts = {0, 20000L};
            nanosleep(&ts, NULL);
        }
        fail_all(jobs, n);
        return;
    }
    int64_t now = pl_now_ms();
    if (now < s->last_ts) now = s->last_ts;          /* ts never goes backwards */
    s->last_ts = now;
    int64_t t0 = pl_mono_us();
    int retries = 0, reconnects = 0, rc;
    for (;;) {
        if (!w_ready(s, reconnects == 1)) {
            rc = s->w.pq ? W_LEASE : W_LOST;
            break;
        }
        rc = w_attempt(s, jobs, n, now);
        if (rc == PL_STORE_OK) {
            pl_count(&pl_m_commit_batches, 1);
            pl_count(&pl_m_commit_jobs, n);
            pl_observe(&pl_m_commit_batch_size, (double)n);
            pl_observe(&pl_m_commit_seconds, (double)(pl_mono_us() - t0) / 1e6);
            pg_probe_readers(s);
            return;
        }
        if (rc == W_RETRY)
            pg_log_failure(PL_LOG_WARN, &s->w, retries < PG_RETRIES ? "store: batch deadlocked; retrying"
                                                                   : "store: batch deadlocked; giving up");
        else if (rc == W_FATAL)
            pg_log_failure(PL_LOG_ERROR, &s->w, "store: batch failed");
        int committing = s->commit_sent;
        w_abort(s, rc);
        if (rc == W_RETRY && retries++ < PG_RETRIES) continue;
        if (rc == W_LOST && !committing && reconnects++ == 0) continue;   /* a stale connection */
        if (rc == W_LOST && committing)
            pl_log(PL_LOG_ERROR, 0, "store: connection lost during COMMIT; outcome unknown, nothing acknowledged",
                   "\"jobs\":%zu", n);
        break;
    }
    if (rc == W_LOST && !s->w.pq)
        pl_log(PL_LOG_DEBUG, 0, "store: database unavailable; batch failed", "\"jobs\":%zu", n);
    else if (rc == W_LEASE && pl_mono_ms() - s->lease_logged >= 1000) {   /* loud, not a flood */
        s->lease_logged = pl_mono_ms();
        pl_log(PL_LOG_ERROR, 0, "store: node id lease lost; writes refused", "\"node\":%d,\"jobs\":%zu",
               s->base.node_id, n);
    }
    pl_count(&pl_m_commit_failures, 1);
    fail_all(jobs, n);
    pg_probe_readers(s);
}

/* pipeline.h: the writer's idle tick (no write for PG_IDLE_MS). */
void pg_idle(void *wctx) {
    pg_store *s = wctx;
    if (w_ready(s, 0) && pl_mono_ms() - s->lease_at >= PG_LEASE_RENEW_MS) {
        int rc = pg_lease_renew(s);
        if (rc == W_LOST) pg_w_drop(s, "lease renewal");
        else if (rc < 0) pg_log_failure(PL_LOG_ERROR, &s->w, "store: lease renewal failed");
    }
    pg_probe_readers(s);
}
