/* store_pg.c — the PostgreSQL backend of store.h (cluster mode): opening,
 * the writer connection, the node id lease, the shared secret, readiness,
 * close; and the backend's design note.
 *
 * Owns: the writer connection (store_pg_write.c runs
 * the write jobs on it, one batch per transaction), one connection per
 * reader thread (store_pg_read.c), this node's row in node_leases and, in
 * outbox mode, its rows in bus_outbox until acknowledged. The push outbox
 * (push_outbox) belongs to every node alike (store_pg_push.c).
 * Does not own: the schema and its migrations (store_pg_schema.c), the
 * statements' SQL (store_pg_stmts_w.c, store_pg_stmts_r.c), threads and
 * queues (pipeline.c), the jobs (the caller's
 * until done() runs), publishing (bus/), durability (the database's).
 *
 * ---- The commit pipeline, across nodes ------------------------------------
 *
 *   writer thread (pipeline.c)            several parleyd nodes, one database
 *   pg_run_batch(jobs), one transaction, in round trips (pipelines):
 *     1. BEGIN; SELECT .. FROM conversations WHERE id = ANY(touched)
 *          ORDER BY id FOR UPDATE          <- lock order: ascending id
 *        with the first job's queries behind it (the server runs a
 *        pipeline in order, so they run under the locks)
 *     2. the jobs in submission order: consecutive sends (and receipts) as
 *        set operations, other jobs singly (the multi-statement ones in a
 *        SAVEPOINT); seqs come from the locked rows, kept in memory
 *     3. [lease renewal if due]; the run's INSERT, own_unread, conversation
 *        counters, last_seen (users locked in ascending id), the outbox
 *        row, COMMIT
 *     -> done() of every job only after COMMIT returned
 *   A batch of sends is two round trips and one WAL flush, whatever its size.
 *
 *   The writer's connection (store_pg.c, store_pg_write.c):
 *
 *        +----- pg_w_drop (lost) -----+
 *        v                            |
 *      DOWN --pg_w_connect (due)--> UP --pg_lease_renew finds the row gone
 *        ^   (backoff; batches         |   or taken--> LEASE LOST
 *        |    fail fast)               ^                 | (batches fail
 *        |                             +--pg_lease_reacquire   fast)
 *        +---------- pg_w_drop (lost) -------------------+
 *
 *   A reader's: UP --r_drop--> DOWN --r_ready (a read or a probe, when due)--> UP
 *
 * Invariants:
 *   1. The single writer of a conversation holds across nodes: every batch
 *      that appends to a conversation, or reads its counters, first locks
 *      its row (FOR UPDATE) and keeps the lock to COMMIT. Seqs, msg_no and
 *      the counters are computed from the locked row, so they are
 *      contiguous whichever node commits next. Batches lock all their
 *      conversations in one statement in ascending id, and lock users (for
 *      last_seen) in ascending id at the end, so two nodes never wait on
 *      each other in a cycle through these rows. Other waits (the same new
 *      username or direct pair inserted by two nodes, a login rotated on
 *      two nodes) can still deadlock in rare orders: PostgreSQL detects it
 *      and the batch is retried (5).
 *   2. A write job completes OK only after the COMMIT of its batch returned
 *      COMMIT with synchronous_commit = on (WAL flushed on the server).
 *   3. Idempotency: (conv, sender, client_msg_id) is UNIQUE in events; a
 *      send looks its key up first (before membership), under the
 *      conversation lock, so a retry on any node returns the original event
 *      (dup = 1), and a key twice in one batch is a dup of the first.
 *   4. No statement fails inside a batch transaction on a job's account
 *      (PostgreSQL aborts the whole transaction on any error): job-level
 *      outcomes are checked before the writes or come from ON CONFLICT DO
 *      NOTHING; the multi-statement jobs run in a SAVEPOINT, so an
 *      unexpected error fails that job alone (EUNAVAIL) and the batch goes
 *      on. A job that fails alone leaves the in-memory state as it was;
 *      after a batch failure that state is dropped (the next attempt
 *      rebuilds it from the locked rows).
 *   5. Failures:
 *      - deadlock_detected / serialization_failure: ROLLBACK, retry the
 *        whole batch (PG_RETRIES times), outputs reset.
 *      - connection lost before COMMIT was sent: the server rolled the
 *        transaction back; reconnect at once and retry the batch once
 *        (the common case is a stale connection after a server restart),
 *        else every job fails EUNAVAIL.
 *      - COMMIT sent but its reply lost: the outcome is unknown; every job
 *        fails EUNAVAIL (nothing acknowledged) and clients retry: a send's
 *        idempotency key returns the committed event if it did commit.
 *      - any other statement error: ROLLBACK, every job EUNAVAIL. A lock
 *        held by another node longer than lock_timeout (10 s) is one.
 *      - this process stalls inside a transaction (stopped, partitioned):
 *        the server ends the session after 30 s idle in it
 *        (idle_in_transaction_session_timeout), freeing its locks for the
 *        other nodes; TCP keepalives and tcp_user_timeout bound how long
 *        this side waits on a dead server (~10 s).
 *      After a lost connection the writer reconnects with backoff
 *      (PG_BACKOFF_MIN_MS doubling to PG_BACKOFF_MAX_MS, on the idle tick
 *      or the next batch); batches arriving meanwhile fail fast with
 *      EUNAVAIL. Unlike SQLite nothing is sticky: the database owns
 *      durability. A server restart is a lost connection on every thread.
 *   6. Node ids: pl_store_opts.node_id >= 0 is leased as asked, -1 leases
 *      the lowest free id; a live lease of another owner refuses the open.
 *      The lease lasts PG_LEASE_TTL_S (database clock) and is renewed by
 *      the writer when PG_LEASE_RENEW_MS old: on the idle tick, and inside
 *      a batch's transaction before COMMIT (the renewal locks the lease row
 *      until COMMIT, so no node can take the id while this one commits with
 *      it). If a renewal finds the row gone or owned by another, the lease
 *      is lost: batches fail EUNAVAIL, healthy() is 0 and the writer logs
 *      and tries to take the same id back (it is never changed at run
 *      time: the id generator and callers use it). Released at close.
 *   7. Outbox (o->outbox): a batch that appended events inserts one
 *      bus_outbox row (node, id = snowflake of its first appended event,
 *      increasing per node; convs, seqs = the highest seq it appended per
 *      conversation) in the same transaction; each job that appended an
 *      event gets out_batch = that id. OUTBOX_ACK deletes this node's rows
 *      up to an id; OUTBOX_TAKEOVER deletes and reports rows older than
 *      PG_TAKEOVER_DEAD_S of nodes whose lease expired or vanished, and
 *      rows of this node older than PG_TAKEOVER_OWN_S (an earlier
 *      incarnation's, or a batch whose COMMIT reply was lost).
 *   8. Readers: one connection per reader thread; a multi-statement read
 *      runs in one REPEATABLE READ READ ONLY transaction sent as one
 *      pipeline (one round trip). A read that loses its connection
 *      reconnects once at once and runs again (reads are idempotent), else
 *      fails EUNAVAIL; while the server is down reads fail fast (backoff,
 *      skipped as soon as any connection of this store succeeded again).
 *   9. healthy() is 1 while the writer and at least one reader are
 *      connected and the lease is held. An idle reader that is down is
 *      reconnected by probe reads the writer submits on its idle tick, so
 *      readiness comes back without traffic.
 *  10. Only the writer thread touches w, the conversation and own maps,
 *      the id generator and the lease state (before the threads start and
 *      after they stop, the opening/closing thread does); reader i touches
 *      only readers[i]. Shared flags are atomics.
 *  11. Message actions (store.h invariants 6 and 7; store_pg_actions.c)
 *      lock their conversation like any append (1), so their checks (the
 *      target, reaction and pin counts) and their writes see the same
 *      rows on every node; the target's row is rewritten to its current
 *      form in the action's SAVEPOINT, with the event. A send's mention
 *      rows and a reply's parent are part of its run (store_pg_runs.c).
 *      Reads build the current form (pl_event.annot) from the row, its
 *      parent and the page's reactions in one snapshot. A delete nulls
 *      the columns in place; PostgreSQL keeps the old row version until
 *      VACUUM reclaims it (unlike SQLite's secure_delete, not overwritten
 *      at once).
 *  12. Push (store.h invariant 10; store_pg_push.c): with opts.push a run
 *      of sends inserts its events and their push_outbox rows in one
 *      statement (W_SEND_INSERT_PUSH); without it the run's statement is
 *      unchanged. Claims lease rows with FOR UPDATE SKIP LOCKED, so a row
 *      is held by one node at a time; a lease is a time in ms of the
 *      claiming node's clock (pl_now_ms), so nodes' clocks should agree to
 *      well within a lease. Revoking a login deletes its push devices in
 *      the same statement (W_LOGIN_REVOKE).
 *  13. Workspaces (store.h invariant 11; store_pg_ws.c): a job that
 *      changes a workspace's members or channels locks the workspace's row
 *      at the start of its batch, after the conversations (1), in ascending
 *      id; the quotas' counters and the channel names are checked under
 *      it. A job that adds someone to a channel because it is in the
 *      workspace keeps that workspace_members row (KEY SHARE) to COMMIT,
 *      so a removal from the workspace, on any node, waits for it and then
 *      lists every channel the removed member is still in.
 *  14. Reports (store.h invariant 12; store_pg_reports.c) are rows of
 *      their own, no events: a report locks its conversation like a
 *      message action (11), checks its target as EDIT does and copies the
 *      message's sender, id, ts and body into its row in one INSERT ..
 *      SELECT; UNIQUE(conv_id, seq, reporter) keeps one per reporter. A
 *      resolution is one UPDATE .. WHERE resolved = 0, so of two at once
 *      (any nodes) one resolves and the other finds it resolved.
 *  15. The data lifecycle (store.h invariant 13; store_pg_life.c). A
 *      conversation's RETENTION_SET and HOLD_SET lock it with the batch
 *      (1), a workspace's the workspace (13). The purge finds its
 *      conversations as it goes, so it cannot lock them at the start of
 *      the batch: it locks them FOR UPDATE SKIP LOCKED, never waiting for
 *      one (a conversation another transaction holds, any node's, is left
 *      for the next purge), so it is in no cycle of waits through them;
 *      it then erases under those locks, and UPDATE .. WHERE deleted_ts = 0
 *      erases a message once. ACCOUNT_DELETE locks the user's row FOR
 *      UPDATE before it reads the memberships; the joins (DIRECT_OPEN,
 *      GROUP_CREATE, MEMBER_ADD, WORKSPACE_ADD) keep the row they found
 *      live FOR KEY SHARE to COMMIT, so a deleted user never becomes a
 *      member of anything. Like the other mid-batch user locks (media,
 *      push), these can deadlock in rare orders; PostgreSQL detects it
 *      and the batch is retried (5).
 *  16. Blocks (store.h invariant 14; store_pg_reports.c). The send path,
 *      EDIT, REACTION, and a member's RETENTION_SET and CONV_E2EE read
 *      conversations.blocked from the row their batch locked (1); a
 *      BLOCK's batch locks the pair's direct conversation at its start
 *      too (found by direct_key, in the same statement and order), and
 *      writes the flag under that lock and in the batch's map. So a send
 *      that commits after the block (any node) saw the flag set, and one
 *      before it was simply before. BLOCK and DIRECT_OPEN's creation take
 *      the pair's advisory lock to COMMIT, so a block never misses a
 *      direct conversation created at the same time on another node, nor
 *      does a creation miss a block.
 *  17. The key directory (store.h invariant 9; store_pg_keys.c): a claim
 *      locks the peer's e2ee_devices rows (ascending device) and an
 *      upload the device's logins row, each in a statement of its own
 *      before the statement that reads, so claims of one user's keys and
 *      uploads of one device see what the other nodes committed before
 *      them (the count a claim returns, the keys an upload finds held, a
 *      new device). Like the other mid-batch locks these can deadlock in
 *      rare orders (e.g. two batches claiming two users' keys in opposite
 *      orders); PostgreSQL detects it and the batch is retried (5).
 */
#include "pg_int.h"

#include <errno.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../core/alloc.h"
#include "../core/clock.h"
#include "../core/log.h"

/* ---- the writer connection ------------------------------------------------- */

/* Connects and prepares the writer; then checks the lease (it may have been
 * taken while the connection was down). Writer thread. */
int pg_w_connect(pg_store *s) {
    char err[320];
    if (pgc_open(&s->w, s->url, 'w', err, sizeof err) != 0 || pgc_prepare(&s->w, err, sizeof err) != 0) {
        pgc_close(&s->w);
        if (s->w_backoff_ms <= PG_BACKOFF_MIN_MS)   /* once per outage, not per attempt */
            pl_log(PL_LOG_ERROR, 0, "store: writer cannot reconnect", "\"err\":\"%s\"", err);
        s->w_seen_gen = __atomic_load_n(&s->connect_gen, __ATOMIC_ACQUIRE);
        s->w_next_try = pl_mono_ms() + s->w_backoff_ms;
        s->w_backoff_ms = s->w_backoff_ms * 2 > PG_BACKOFF_MAX_MS ? PG_BACKOFF_MAX_MS : s->w_backoff_ms * 2;
        return -1;
    }
    s->w_backoff_ms = PG_BACKOFF_MIN_MS;
    __atomic_add_fetch(&s->connect_gen, 1, __ATOMIC_RELEASE);
    __atomic_store_n(&s->w_up, 1, __ATOMIC_RELEASE);
    pl_log(PL_LOG_INFO, 0, "store: writer connected", "\"node\":%d", s->base.node_id);
    int held = pg_lease_renew(s);
    if (held < 0) {
        pg_w_drop(s, "lease renewal failed");
        return -1;
    }
    return 0;
}

void pg_w_drop(pg_store *s, const char *why) {
    if (s->w.pq)
        pl_log(PL_LOG_WARN, 0, "store: writer connection closed", "\"why\":\"%s\",\"err\":\"%s\"", why,
               s->w.errmsg);
    pgc_close(&s->w);
    __atomic_store_n(&s->w_up, 0, __ATOMIC_RELEASE);
    s->w_seen_gen = __atomic_load_n(&s->connect_gen, __ATOMIC_ACQUIRE);
    s->w_next_try = pl_mono_ms();             /* the first attempt at once */
}

/* ---- the node id lease (invariant 6) ---------------------------------------- */

static void lease_set_lost(pg_store *s, int lost) {
    s->lease_lost = lost;
    __atomic_store_n(&s->lease_ok, !lost, __ATOMIC_RELEASE);
}

/* Renews this node's lease (inside the open transaction, if any). Returns 1
 * held, 0 lost (logged, state set), or W_LOST / W_FATAL / W_RETRY. */
int pg_lease_renew(pg_store *s) {
    pg_params p = {0};
    pg_param_i64(&p, s->base.node_id);
    pg_param_text(&p, s->owner);
    pg_param_i64(&p, PG_LEASE_TTL_S);
    int64_t at = pl_mono_ms();
    int slot = pgc_send(&s->w, W_LEASE_RENEW, &p, 1);
    int rc = slot < 0 ? PG_GONE : pgc_sync(&s->w);
    if (rc != PG_OK) return rc == PG_GONE ? W_LOST : pgc_retryable(&s->w) ? W_RETRY : W_FATAL;
    if (PQntuples(s->w.res[slot]) == 1) {
        s->lease_at = at;
        if (s->lease_lost) {
            pl_log(PL_LOG_WARN, 0, "store: node id lease held again", "\"node\":%d", s->base.node_id);
            lease_set_lost(s, 0);
        }
        return 1;
    }
    if (!s->lease_lost)
        pl_log(PL_LOG_ERROR, 0,
               "store: NODE ID LEASE LOST: another node may use this id; refusing writes until it is back",
               "\"node\":%d", s->base.node_id);
    lease_set_lost(s, 1);
    s->lease_next_try = pl_mono_ms() + PG_BACKOFF_MIN_MS;
    return 0;
}

/* Takes this node's id back if it is free (not in a transaction). */
int pg_lease_reacquire(pg_store *s) {
    int64_t t = pl_mono_ms();
    if (t < s->lease_next_try) return -1;
    s->lease_next_try = t + PG_BACKOFF_MAX_MS;
    pg_params p = {0};
    pg_param_i64(&p, s->base.node_id);
    pg_param_text(&p, s->owner);
    pg_param_i64(&p, PG_LEASE_TTL_S);
    int slot = pgc_send(&s->w, W_LEASE_TAKE, &p, 1);
    int rc = slot < 0 ? PG_GONE : pgc_sync(&s->w);
    if (rc == PG_GONE) {
        pg_w_drop(s, "lease re-acquire");
        return -1;
    }
    if (rc != PG_OK || PQntuples(s->w.res[slot]) != 1) {
        pl_log(PL_LOG_ERROR, 0, "store: node id still taken by another node; refusing writes",
               "\"node\":%d", s->base.node_id);
        return -1;
    }
    s->lease_at = t;
    lease_set_lost(s, 0);
    pl_log(PL_LOG_WARN, 0, "store: node id lease re-acquired", "\"node\":%d", s->base.node_id);
    return 0;
}

/* At open: leases o->node_id, or the lowest free id when it is -1. */
static int lease_acquire(pg_store *s, int want, char *err, size_t errlen) {
    for (int attempt = 0; attempt < 20; attempt++) {
        pg_params p = {0};
        if (want >= 0) pg_param_i64(&p, want);
        pg_param_text(&p, s->owner);
        pg_param_i64(&p, PG_LEASE_TTL_S);
        int slot = pgc_send(&s->w, want >= 0 ? W_LEASE_TAKE : W_LEASE_ANY, &p, 1);
        if (slot < 0 || pgc_sync(&s->w) != PG_OK) {
            snprintf(err, errlen, "cannot lease a node id: %s", s->w.errmsg);
            return -1;
        }
        PGresult *r = s->w.res[slot];
        if (PQntuples(r) == 1) {
            s->base.node_id = (int)pg_i64(r, 0, 0);
            s->lease_at = pl_mono_ms();
            lease_set_lost(s, 0);
            return 0;
        }
        if (want < 0) continue;                  /* raced another node: again */
        pg_params q = {0};
        pg_param_i64(&q, want);
        slot = pgc_send(&s->w, W_LEASE_INFO, &q, 1);
        char who[96] = "?";
        long long left = 0;
        if (slot >= 0 && pgc_sync(&s->w) == PG_OK && PQntuples(s->w.res[slot]) == 1) {
            pg_clean_msg(who, sizeof who, PQgetvalue(s->w.res[slot], 0, 0));
            left = (long long)pg_i64(s->w.res[slot], 0, 1);
        }
        snprintf(err, errlen,
                 "node id %d is in use by another live parleyd (lease owner %s, expires in %lld s)", want,
                 who, left);
        return -1;
    }
    snprintf(err, errlen, "no free node id (0-1023) to lease");
    return -1;
}

static void lease_release(pg_store *s) {
    if (!s->w.pq || s->lease_lost) return;
    pg_params p = {0};
    pg_param_i64(&p, s->base.node_id);
    pg_param_text(&p, s->owner);
    if (pgc_send(&s->w, W_LEASE_RELEASE, &p, 0) >= 0 && pgc_sync(&s->w) == PG_OK)
        pl_log(PL_LOG_INFO, 0, "store: node id lease released", "\"node\":%d", s->base.node_id);
}

/* ---- the shared secret ------------------------------------------------------ */

/* Every node gets the same 32 bytes: the first one to ask inserts random
 * ones, the rest find them. Blocking, on a connection of its own (the
 * pipeline's belong to their threads); called before the loop runs. */
static int pg_shared_secret(pl_store *base, const char *name, uint8_t out[32]) {
    pg_store *s = (pg_store *)base;
    if (!name || !pg_utf8_ok(name)) return PL_STORE_EINVAL;
    pg_conn c = {0};
    char err[320];
    if (pgc_open(&c, s->url, 'w', err, sizeof err) != 0) {
        pl_log(PL_LOG_ERROR, 0, "store: shared secret: no connection", "\"err\":\"%s\"", err);
        return PL_STORE_EUNAVAIL;
    }
    uint8_t fresh[32];
    randombytes_buf(fresh, sizeof fresh);
    const char *v[2] = {name, (const char *)fresh};
    const int len[2] = {0, (int)sizeof fresh}, fmt[2] = {0, 1};
    int rc = PL_STORE_EUNAVAIL;
    PGresult *r = PQexecParams(c.pq, "INSERT INTO secrets(name, value) VALUES($1::text, $2::bytea)"
                               " ON CONFLICT (name) DO NOTHING", 2, NULL, v, len, fmt, 0);
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    PQclear(r);
    if (ok) {
        r = PQexecParams(c.pq, "SELECT value FROM secrets WHERE name = $1::text", 1, NULL, v, len, fmt, 1);
        if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1 && PQgetlength(r, 0, 0) == 32) {
            memcpy(out, PQgetvalue(r, 0, 0), 32);
            rc = PL_STORE_OK;
        }
        PQclear(r);
    }
    if (rc != PL_STORE_OK) {
        char m[200];
        pg_clean_msg(m, sizeof m, PQerrorMessage(c.pq));
        pl_log(PL_LOG_ERROR, 0, "store: shared secret failed", "\"err\":\"%s\"", m);
    }
    sodium_memzero(fresh, sizeof fresh);
    pgc_close(&c);
    return rc;
}

/* ---- readiness -------------------------------------------------------------- */

static void probe_done(pl_job *j) {
    pg_store *s = j->data;
    __atomic_sub_fetch(&s->probes, 1, __ATOMIC_ACQ_REL);
    free(j);
}

/* Invariant 9: one probe read per reader that is down, none while earlier
 * probes are in flight. Writer thread (idle tick). */
void pg_probe_readers(pg_store *s) {
    pl_pipeline *p = __atomic_load_n(&s->pipe, __ATOMIC_ACQUIRE);
    if (!p) return;
    int up = __atomic_load_n(&s->r_up, __ATOMIC_ACQUIRE);
    if (up >= s->nreaders || __atomic_load_n(&s->probes, __ATOMIC_ACQUIRE) > 0) return;
    for (int i = up; i < s->nreaders; i++) {
        pl_job *j = pl_calloc(1, sizeof *j);
        j->op = (pl_job_op)PG_READ_PROBE;
        j->done = probe_done;
        j->data = s;
        __atomic_add_fetch(&s->probes, 1, __ATOMIC_ACQ_REL);
        pl_pipeline_submit(p, j);
    }
}

static int pg_healthy(pl_store *base) {
    pg_store *s = (pg_store *)base;
    return __atomic_load_n(&s->w_up, __ATOMIC_ACQUIRE) && __atomic_load_n(&s->r_up, __ATOMIC_ACQUIRE) > 0 &&
           __atomic_load_n(&s->lease_ok, __ATOMIC_ACQUIRE);
}

/* ---- open, close ------------------------------------------------------------ */

static void pg_submit(pl_store *base, pl_job *j) { pl_pipeline_submit(((pg_store *)base)->pipe, j); }
static void pg_drain(pl_store *base) { pl_pipeline_drain(((pg_store *)base)->pipe); }

/* Search folds case and tells letters from punctuation by the database's
 * LC_CTYPE ('simple' text search: lower() and the parser's character
 * classes). Under C or POSIX only ASCII letters fold, so `привет` would not
 * find `Привет` and the apostrophe phones type (U+2019) would join words
 * (audit U): said once at open, with what to do. */
static void check_ctype(PGconn *c) {
    PGresult *r = PQexec(c, "SELECT current_setting('lc_ctype')");
    const char *ct = r && PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1 ? PQgetvalue(r, 0, 0) : NULL;
    if (ct && (!strcmp(ct, "C") || !strcmp(ct, "POSIX")))
        pl_log(PL_LOG_WARN, 0, "store: the database's LC_CTYPE is C: search folds the case of ASCII letters only;"
               " create the database with LC_CTYPE C.UTF-8 (README, Cluster mode)", "\"lc_ctype\":\"%s\"", ct);
    PQclear(r);
}

/* Frees everything but the pipeline (not started, or stopped); releases the
 * lease if this store holds it. */
static void pg_free(pg_store *s) {
    if (__atomic_load_n(&s->lease_ok, __ATOMIC_ACQUIRE)) lease_release(s);
    pgc_close(&s->w);
    for (int i = 0; i < s->nreaders; i++) pgc_close(&s->readers[i].c);
    for (size_t i = 0; i < sizeof s->arr / sizeof s->arr[0]; i++) pg_arr_free(&s->arr[i]);
    free(s->readers);
    pl_conv_map_free(&s->convs);
    pl_own_free(&s->own);
    free(s->lockids);
    free(s->seen);
    free(s->url);
    free(s);
}

static void pg_close(pl_store *base) {
    pg_store *s = (pg_store *)base;
    pl_pipeline *p = s->pipe;           /* s->pipe stays readable until the */
    pl_pipeline_stop(&p);               /* writer thread is joined          */
    pg_free(s);
}

static const pl_store_ops pg_ops = {
    .name = "postgres",
    .submit = pg_submit,
    .drain = pg_drain,
    .healthy = pg_healthy,
    .shared_secret = pg_shared_secret,
    .close = pg_close,
};

void pl_store_pg__hold(pl_store *base, int on) {
    if (!base || base->ops != &pg_ops) return;
    __atomic_store_n(&((pg_store *)base)->hold, on, __ATOMIC_SEQ_CST);
}

int pl_store_pg__held(pl_store *base) {
    if (!base || base->ops != &pg_ops) return 0;
    return __atomic_load_n(&((pg_store *)base)->hold, __ATOMIC_SEQ_CST) == 2;
}

int pl_store_pg_open(const pl_store_opts *o, pl_store **out, char *err, size_t errlen) {
    *out = NULL;
    err[0] = '\0';
    if (sodium_init() < 0) {
        snprintf(err, errlen, "cannot initialise libsodium");
        return PL_STORE_EUNAVAIL;
    }
    if (o->node_id < -1 || o->node_id > 1023) {
        snprintf(err, errlen, "node id %d out of range (0-1023, or -1 to lease one)", o->node_id);
        return PL_STORE_EUNAVAIL;
    }
    pg_store *s = pl_calloc(1, sizeof *s);
    s->base.ops = &pg_ops;
    s->base.node_id = o->node_id;
    s->url = pl_strdup(o->url);
    s->outbox = o->outbox != 0;
    s->push = o->push != 0;
    s->large_group = o->large_group;
    s->edit_window_ms = o->edit_window_ms;
    s->ws_members = o->workspace_members;
    s->ws_channels = o->workspace_channels;
    s->retention = o->retention;
    s->nreaders = o->readers > 0 ? o->readers : PG_READERS;
    s->readers = pl_calloc((size_t)s->nreaders, sizeof *s->readers);
    s->w_backoff_ms = PG_BACKOFF_MIN_MS;
    char host[64] = "?";
    gethostname(host, sizeof host - 1);
    uint8_t rnd[8];
    randombytes_buf(rnd, sizeof rnd);
    char hex[17];
    sodium_bin2hex(hex, sizeof hex, rnd, sizeof rnd);
    snprintf(s->owner, sizeof s->owner, "%.40s/%ld/%s", host, (long)getpid(), hex);

    if (pgc_open(&s->w, s->url, 'w', err, errlen) != 0 || pg_migrate(s->w.pq, err, errlen) != 0 ||
        pgc_prepare(&s->w, err, errlen) != 0 || lease_acquire(s, o->node_id, err, errlen) != 0)
        goto fail;
    check_ctype(s->w.pq);
    pl_idgen_init(&s->ids, s->base.node_id);
    s->w_up = 1;
    s->connect_gen = 1;
    for (int i = 0; i < s->nreaders; i++) {
        pg_reader *r = &s->readers[i];
        r->s = s;
        r->backoff_ms = PG_BACKOFF_MIN_MS;
        if (pgc_open(&r->c, s->url, 'r', err, errlen) != 0 || pgc_prepare(&r->c, err, errlen) != 0)
            goto fail;
        r->up = 1;
        s->r_up++;
    }
    void **rctx = pl_malloc((size_t)s->nreaders * sizeof *rctx);
    for (int i = 0; i < s->nreaders; i++) rctx[i] = &s->readers[i];
    pl_pipeline_cfg pc = {
        .batch_max = PG_BATCH_MAX,
        .nreaders = s->nreaders,
        .wctx = s,
        .rctx = rctx,
        .run_batch = pg_run_batch,
        .idle = pg_idle,
        .idle_ms = PG_IDLE_MS,
        .run_read = pg_run_read,
        .notify = o->notify,
        .notify_arg = o->notify_arg,
        .committed = o->committed,
        .committed_arg = o->committed_arg,
    };
    pl_pipeline *p = pl_pipeline_start(&pc);
    free(rctx);
    if (!p) {
        snprintf(err, errlen, "cannot start the store threads");
        goto fail;
    }
    __atomic_store_n(&s->pipe, p, __ATOMIC_RELEASE);
    pl_log(PL_LOG_INFO, 0, "store: PostgreSQL store open",
           "\"node\":%d,\"readers\":%d,\"outbox\":%d,\"push\":%d", s->base.node_id, s->nreaders,
           s->outbox, s->push);
    *out = &s->base;
    return PL_STORE_OK;
fail:
    pg_free(s);
    return PL_STORE_EUNAVAIL;
}
