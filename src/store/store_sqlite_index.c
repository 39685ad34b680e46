/* store_sqlite_index.c — the embedded search index (store.h invariant 8):
 * its own database file, search.db, and the thread that fills it.
 *
 * Owns: search.db (the FTS5 table events_fts and a meta table), the indexer
 * thread and its connection, the pairing of search.db with parley.db.
 *
 * Why a second file and a thread of its own: FTS5 costs several µs per
 * message, which in parley.db was half of the store writer's time at peak
 * (docs/benchmarks.md "Issue 11: the search index off the writer"). SQLite
 * has one writer per database file, so only a separate file lets indexing
 * run beside the writer instead of between its batches.
 *
 * The queue. The sending, editing or deleting transaction appends to
 * fts_queue(qid, id, conv_id, seq, op) in parley.db (the writer's w_append
 * for a new message, triggers on events for the others): op 0 a
 * new message, 1 its text changed, 2 its text erased (delete) or the row
 * removed. The indexer reads the queue above its watermark `done` through an
 * ATTACHed parley.db (read only: it never takes parley.db's write lock)
 * into temp tables, each read a statement of its own, and then, in one
 * search.db transaction that reads nothing of parley.db (ix_pass_as),
 * takes out the rows of op >= 1, indexes the current text of every queued
 * message that still has one, and moves `done` (kept in search.db, so the
 * index and its watermark commit together). The writer deletes queue rows
 * at or below `durable` in its own batches (store_sqlite_write.c), in
 * steps, always keeping the newest row so that rowids never go back below
 * `done`.
 *
 * Durability: search.db is derived data, so the indexer's commits do not
 * fsync (synchronous = NORMAL, set on its own thread): a crash of the
 * process loses nothing, a power loss at most the passes since the last
 * checkpoint, whose messages the queue still holds. Each of those fsyncs
 * took 2-13 ms of the disk at 30,000 msg/s, and the writer's commit fsync
 * waited behind them (docs/benchmarks.md "Issue 11: paced background
 * writes"). The indexer checkpoints search.db itself when what it
 * committed is not yet durable and either the WAL has SQ_INDEX_CKPT_FRAMES
 * frames or SQ_INDEX_CKPT_MS passed since its last checkpoint (so about
 * once a second at most, plus when the WAL fills: a checkpoint fsyncs
 * twice). A checkpoint that copied the whole WAL has synced the WAL and
 * the file: only then does `durable` move up to the `done` it covers.
 *
 * Pairing: parley.db holds a random token (search_pair); search.db records
 * the token it was built for. A missing search.db, or one built for another
 * parley.db, is emptied and every message queued again, so a deleted or
 * mismatched index rebuilds itself in the background. So is one whose
 * watermark is past the newest queue row (an older parley.db restored
 * beside it): that queue's next rows would take qids already counted done.
 *
 * Reads never trust the index alone: PL_READ_SEARCH joins events and keeps
 * a hit only if the indexed text is the message's current text, so an old
 * (edited) or deleted text never matches, even before the indexer ran.
 * Erasure (invariant 6): after a pass that took out erased messages, the
 * index is rewritten without their words (FTS5 'optimize', unless
 * secure-delete is available) and search.db's WAL is checkpointed and
 * truncated.
 */
#include <errno.h>
#include <sched.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "../core/alloc.h"
#include "../core/clock.h"
#include "../core/log.h"
#include "sqlite_int.h"

#define IX_SCHEMA                                                                                  \
    "CREATE TABLE IF NOT EXISTS meta(k TEXT PRIMARY KEY, v) WITHOUT ROWID;"                        \
    "CREATE VIRTUAL TABLE IF NOT EXISTS events_fts USING fts5(body, conv, conv_id UNINDEXED,"      \
    "  seq UNINDEXED, tokenize = 'unicode61 remove_diacritics 0', columnsize = 0);"

#define IX_SECURE_DELETE "INSERT INTO events_fts(events_fts, rank) VALUES('secure-delete', 1)"

/* The pass's working set, read from parley.db before search.db's
 * transaction begins (ix_pass_as): in memory only, emptied after each
 * pass; auto_vacuum gives the pages back (a pass of long bodies must not
 * stay resident), secure_delete zeroes the texts it held. */
#define IX_TEMP                                                                                    \
    "PRAGMA temp_store = MEMORY; PRAGMA temp.auto_vacuum = FULL; PRAGMA temp.secure_delete = ON;"  \
    "CREATE TEMP TABLE ix_out(id INTEGER NOT NULL);"                                               \
    "CREATE TEMP TABLE ix_add(id INTEGER NOT NULL, body TEXT, conv TEXT, conv_id INTEGER, seq INTEGER);"

enum { IX_BEGIN, IX_COMMIT, IX_ROLLBACK, IX_HIGH, IX_NEWEST, IX_ERASED, IX_CLEAR_OUT, IX_CLEAR_ADD, IX_READ_OUT,
       IX_READ_ADD, IX_TAKE_OUT, IX_ADD, IX_ADD_REPLACE, IX_DONE, IX__COUNT };

static const char *const ix_sql[IX__COUNT] = {
    [IX_BEGIN]    = "BEGIN",               /* deferred: search.db only */
    [IX_COMMIT]   = "COMMIT",
    [IX_ROLLBACK] = "ROLLBACK",
    /* Reads of parley.db, each a statement of its own outside the
     * transaction, so that none holds a parley.db snapshot longer than it
     * runs (ix_pass_as). ?1 done, ?2 rows: the highest qid of this pass */
    [IX_HIGH]     = "SELECT max(qid) FROM (SELECT qid FROM m.fts_queue WHERE qid > ?1 ORDER BY qid LIMIT ?2)",
    [IX_NEWEST]   = "SELECT max(qid) FROM m.fts_queue",      /* the lag: newest - done */
    [IX_ERASED]   = "SELECT EXISTS (SELECT 1 FROM m.fts_queue WHERE qid > ?1 AND qid <= ?2 AND op = 2)",
    [IX_CLEAR_OUT] = "DELETE FROM temp.ix_out",
    [IX_CLEAR_ADD] = "DELETE FROM temp.ix_add",
    [IX_READ_OUT] = "INSERT INTO temp.ix_out(id)"
                    " SELECT id FROM m.fts_queue WHERE qid > ?1 AND qid <= ?2 AND op > 0",
    [IX_READ_ADD] = "INSERT INTO temp.ix_add(id, body, conv, conv_id, seq)"
                    " SELECT e.id, replace(replace(e.body, char(2), ' '), char(3), ' '), 'c' || e.conv_id,"
                    " e.conv_id, e.seq"
                    " FROM (SELECT DISTINCT conv_id, seq FROM m.fts_queue WHERE qid > ?1 AND qid <= ?2) q"
                    " JOIN m.events e ON e.conv_id = q.conv_id AND e.seq = q.seq"
                    " WHERE e.kind = 2 AND e.body IS NOT NULL AND e.deleted_ts = 0",
    /* search.db's transaction */
    [IX_TAKE_OUT] = "DELETE FROM events_fts WHERE rowid IN (SELECT id FROM temp.ix_out)",
    /* A message is in the index at most once: its op 0 row is queued once,
     * and a row of op > 0 took it out above. Plain INSERT (27 % cheaper
     * than OR REPLACE, which looks every rowid up first); a pass that
     * still meets one (a search.db restored with an older watermark) runs
     * again with OR REPLACE. */
#define IX_ADD_SQL(verb)                                                                           \
    verb " INTO events_fts(rowid, body, conv, conv_id, seq)"                                       \
    " SELECT id, body, conv, conv_id, seq FROM temp.ix_add"
    [IX_ADD]         = IX_ADD_SQL("INSERT"),
    [IX_ADD_REPLACE] = IX_ADD_SQL("INSERT OR REPLACE"),
    [IX_DONE]     = "INSERT OR REPLACE INTO meta(k, v) VALUES('done', ?1)",
};

struct sq_indexer {
    sqlite3        *db;                 /* search.db, parley.db attached as m */
    sqlite3_stmt   *st[IX__COUNT];
    int             secure;             /* FTS5 secure-delete is on          */
    pthread_t       thread;
    int             started;
    pid_t           tid;                /* atomic: the thread's, for its nice */
    pthread_mutex_t mu;
    pthread_cond_t  cv;
    int             kick;               /* atomic; the writer signals cv only
                                         * if mu is free (sq_index_kick)   */
    int             stop;               /* under mu                          */
    int64_t         deadline;           /* atomic: close's end (mono ms), 0  */
    int64_t         done;               /* atomic: the watermark committed   */
    int64_t         durable;            /* atomic: the watermark on disk     */
    int             frames;             /* indexer thread: search.db's WAL   */
    int64_t         ckpt_ms;            /* indexer thread: its last checkpoint */
    int64_t         lag;                /* indexer thread: queued past done  */
    int64_t         failed;             /* indexer thread: passes failed in a row */
    pl_log_limit    failed_log;         /* indexer thread: its failure line  */
    int             can_idle;           /* SCHED_IDLE can be left again      */
};

/* SQLite's progress handler on the indexer's connection: a statement still
 * running when close's budget is over is interrupted (SQLITE_INTERRUPT;
 * the pass's transaction rolls back and its messages stay queued). */
static int ix_progress(void *arg) {
    int64_t dl = __atomic_load_n(&((sq_indexer *)arg)->deadline, __ATOMIC_ACQUIRE);
    return dl && pl_mono_ms() >= dl;
}

static int ix_exec(sq_indexer *x, int id) {
    int rc = sqlite3_step(x->st[id]);
    sqlite3_reset(x->st[id]);
    return rc == SQLITE_DONE || rc == SQLITE_ROW ? 0 : rc;
}

static int64_t ix_scalar(sq_indexer *x, int id, int *rc) {
    sqlite3_stmt *st = x->st[id];
    int r = sqlite3_step(st);
    int64_t v = r == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL ? sqlite3_column_int64(st, 0) : -1;
    if (r != SQLITE_ROW) *rc = r;
    sqlite3_reset(st);
    return v;
}

/* search.db's WAL hook: runs in the indexer's COMMIT (the automatic
 * checkpoint is off: ix_checkpoint). */
static int ix_wal_hook(void *arg, sqlite3 *db, const char *name, int nframes) {
    (void)db;
    (void)name;
    ((sq_indexer *)arg)->frames = nframes;
    return SQLITE_OK;
}

/* Checkpoints search.db; when the whole WAL was copied (so the WAL and the
 * file were synced), the committed watermark is durable (the header note).
 * SQLITE_OK or the error; a reader that holds part of the WAL leaves
 * `durable` where it was until a later checkpoint. */
static int ix_checkpoint(sq_indexer *x, int mode) {
    int64_t done = __atomic_load_n(&x->done, __ATOMIC_ACQUIRE);
    int nlog = -1, nckpt = -1;
    int rc = sqlite3_wal_checkpoint_v2(x->db, "main", mode, &nlog, &nckpt);
    if (rc == SQLITE_OK && nlog >= 0 && nckpt == nlog) {
        __atomic_store_n(&x->durable, done, __ATOMIC_RELEASE);
        x->frames = 0;
    }
    return rc;
}

/* The index without erased words on disk (invariant 6). Best effort: a
 * reader holding the WAL delays the truncation to a later erasing pass. */
static void ix_erase_from_disk(sq_indexer *x) {
    if (!x->secure &&
        sqlite3_exec(x->db, "INSERT INTO events_fts(events_fts) VALUES('optimize')", NULL, NULL, NULL) != SQLITE_OK)
        pl_log(PL_LOG_WARN, 0, "store: search index rewrite after a delete failed", "\"err\":\"%s\"",
               sqlite3_errmsg(x->db));
    int rc = ix_checkpoint(x, SQLITE_CHECKPOINT_TRUNCATE);
    if (rc != SQLITE_OK)
        pl_log(PL_LOG_WARN, 0, "store: search index checkpoint after a delete did not complete", "\"rc\":%d", rc);
}

/* One pass over at most SQ_INDEX_ROWS queue rows. Returns the rows taken
 * (0: the queue is empty), or -1 on an error (logged; retried later).
 *
 * First what the pass needs from parley.db is copied into temp tables,
 * each read a statement of its own; only then does search.db's
 * transaction begin, which reads nothing of parley.db. A read of
 * parley.db held through the FTS5 work (tens of ms, longer when the
 * thread yields its CPU) kept parley.db's WAL from restarting and its
 * checkpoints from completing: the writer then checkpointed after almost
 * every batch (149 times in 10 s at the peak, 18 without the indexer;
 * docs/benchmarks.md "Issue 11: the indexer's reads of parley.db").
 * Separate snapshots are safe: queue rows in (done, high] never change
 * (the writer prunes only below the durable watermark), and a text that
 * changes after it was read has a queue row above high, which a later
 * pass takes out and indexes again. */
/* Empties the pass's temp tables. */
static void ix_clear(sq_indexer *x) {
    if (ix_exec(x, IX_CLEAR_OUT) || ix_exec(x, IX_CLEAR_ADD))
        pl_log(PL_LOG_WARN, 0, "store: cannot empty the indexer's temp tables", "\"err\":\"%s\"",
               sqlite3_errmsg(x->db));
}

static int ix_pass_as(sq_indexer *x, int replace) {
    int64_t done = __atomic_load_n(&x->done, __ATOMIC_ACQUIRE);
    int rc = 0;
    sqlite3_bind_int64(x->st[IX_HIGH], 1, done);
    sqlite3_bind_int(x->st[IX_HIGH], 2, SQ_INDEX_ROWS);
    int64_t high = ix_scalar(x, IX_HIGH, &rc);
    if (rc || high <= done) {
        if (!rc) x->lag = 0;
        return rc ? -1 : 0;
    }
    int64_t newest = ix_scalar(x, IX_NEWEST, &rc);
    x->lag = newest > high ? newest - high : 0;
    int64_t t0 = pl_mono_us();
    sqlite3_bind_int64(x->st[IX_ERASED], 1, done);
    sqlite3_bind_int64(x->st[IX_ERASED], 2, high);
    int erased = ix_scalar(x, IX_ERASED, &rc) == 1;
    const int reads[2] = {IX_READ_OUT, IX_READ_ADD};
    for (int i = 0; !rc && i < 2; i++) {
        sqlite3_bind_int64(x->st[reads[i]], 1, done);
        sqlite3_bind_int64(x->st[reads[i]], 2, high);
        rc = ix_exec(x, reads[i]);
    }
    if (!rc) rc = ix_exec(x, IX_BEGIN);
    const int steps[2] = {IX_TAKE_OUT, replace ? IX_ADD_REPLACE : IX_ADD};
    for (int i = 0; !rc && i < 2; i++) rc = ix_exec(x, steps[i]);
    if (!replace && (rc & 0xff) == SQLITE_CONSTRAINT) {
        ix_exec(x, IX_ROLLBACK);
        ix_clear(x);
        pl_log(PL_LOG_WARN, 0, "store: the search index already held a queued message; indexing again",
               "\"upto\":%lld", (long long)high);
        return ix_pass_as(x, 1);
    }
    if (!rc) {
        sqlite3_bind_int64(x->st[IX_DONE], 1, high);
        rc = ix_exec(x, IX_DONE);
    }
    if (!rc) rc = ix_exec(x, IX_COMMIT);
    if (rc && (rc & 0xff) == SQLITE_INTERRUPT) {
        pl_log(PL_LOG_INFO, 0, "store: search indexing stopped by close; the rest is indexed at the next start",
               "\"from\":%lld", (long long)done);
        if (!sqlite3_get_autocommit(x->db)) ix_exec(x, IX_ROLLBACK);
        return -1;
    }
    if (rc) {
        /* the first of a series, then a line a minute while it lasts (audit E4: 12 a second) */
        if (x->failed++ == 0) x->failed_log = (pl_log_limit){0};
        if (pl_log_due(&x->failed_log, 60000, pl_mono_ms(), NULL)) {
            pl_log(PL_LOG_ERROR, 0, "store: search indexing pass failed", "\"rc\":%d,\"err\":\"%s\",\"failed\":%lld",
                   rc, sqlite3_errmsg(x->db), (long long)x->failed);
        }
        if (!sqlite3_get_autocommit(x->db)) ix_exec(x, IX_ROLLBACK);
        ix_clear(x);
        return -1;
    }
    if (x->failed) {
        pl_log(PL_LOG_INFO, 0, "store: search indexing works again", "\"failed\":%lld", (long long)x->failed);
        x->failed = 0;
    }
    ix_clear(x);
    __atomic_store_n(&x->done, high, __ATOMIC_RELEASE);
    pl_log(PL_LOG_DEBUG, 0, "store: search index pass", "\"upto\":%lld,\"us\":%lld", (long long)high,
           (long long)(pl_mono_us() - t0));
    if (erased) ix_erase_from_disk(x);
    return (int)(high - done);
}

static int ix_pass(sq_indexer *x) { return ix_pass_as(x, 0); }

/* Waits on the condition for at most ms (mu held). */
static void ix_wait(sq_indexer *x, int64_t ms) {
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += ms / 1000;
    dl.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (dl.tv_nsec >= 1000000000L) { dl.tv_sec++; dl.tv_nsec -= 1000000000L; }
    pthread_cond_timedwait(&x->cv, &x->mu, &dl);
}

/* Linux: whether this process may take a thread out of SCHED_IDLE again
 * (root, CAP_SYS_NICE, or an RLIMIT_NICE that allows SQ_INDEX_NICE). A
 * thread of its own tries both ways and ends, stuck or not. */
static void *ix_probe_main(void *arg) {
    struct sched_param sp = {0};
    int *ok = arg;
    *ok = sched_setscheduler(0, SCHED_IDLE, &sp) == 0 && sched_setscheduler(0, SCHED_OTHER, &sp) == 0;
    return NULL;
}

static int ix_probe_idle(void) {
    pthread_t t;
    int ok = 0;
    if (pthread_create(&t, NULL, ix_probe_main, &ok) != 0) return 0;
    pthread_join(t, NULL);
    return ok;
}

int sq_index_yields(int yielding, int64_t lag, int64_t behind_ms) {
    return yielding ? lag <= SQ_INDEX_LAG_MAX && behind_ms <= SQ_INDEX_BEHIND_MS : lag == 0;
}

/* Delivery before search (invariant 8's thread): SCHED_IDLE while the
 * index is within SQ_INDEX_LAG_MAX messages of the queue's end and was
 * all caught up within SQ_INDEX_BEHIND_MS, so that a burst the cores
 * cannot carry goes to the loop and the writer and the index catches up
 * after it; past either bound nice SQ_INDEX_NICE until it is caught up
 * again, so that neither load that does not end nor a busy neighbour
 * process leaves search behind for longer. */
static int ix_set_yielding(sq_indexer *x, int yielding) {
    struct sched_param sp = {0};
    if (sched_setscheduler(0, yielding ? SCHED_IDLE : SCHED_OTHER, &sp) != 0) {
        x->can_idle = 0;
        yielding = 0;
    }
    if (!yielding && setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), SQ_INDEX_NICE) != 0)
        pl_log(PL_LOG_DEBUG, 0, "store: cannot lower the indexer's priority", "\"errno\":%d", errno);
    return yielding;
}

/* Passes when kicked (or every SQ_INDEX_EVERY_MS), at most one per
 * SQ_INDEX_GAP_MS unless the last one was full: each pass commits (and
 * fsyncs) a segment of its own, so under a steady stream of small batches
 * fewer, larger passes cost much less per message; back to back while
 * behind. */
static void *ix_main(void *arg) {
    sq_indexer *x = arg;
    pthread_setname_np(pthread_self(), "pl-indexer");
    __atomic_store_n(&x->tid, (pid_t)syscall(SYS_gettid), __ATOMIC_RELEASE);
    sq_vfs_background();                    /* its writes leave the disk to commits */
    /* from this thread only: the shim does not buffer a background
     * thread's WAL writes (store_sqlite_vfs.c invariant 2) */
    if (sqlite3_exec(x->db, "PRAGMA synchronous = NORMAL", NULL, NULL, NULL) != SQLITE_OK)
        pl_log(PL_LOG_WARN, 0, "store: the search index stays at synchronous = FULL", "\"err\":\"%s\"",
               sqlite3_errmsg(x->db));
    /* Delivery before search: when the cores are busy the indexer yields
     * to the loop and the writer (and lags, catching up when load drops);
     * on an idle core it runs at full speed. Linux: policy and nice are per
     * thread. */
    int yielding = ix_set_yielding(x, x->can_idle);
    int behind = 0, errors = 0;
    int64_t caught = pl_mono_ms();          /* when the queue was last all indexed */
    int64_t last = -SQ_INDEX_GAP_MS;
    for (;;) {
        pthread_mutex_lock(&x->mu);
        if (!behind) {
            if (errors >= 3)                /* failing: no kick makes it try sooner */
                for (int64_t t0 = pl_mono_ms(), now; !x->stop && (now = pl_mono_ms()) < t0 + SQ_INDEX_FAIL_MS;)
                    ix_wait(x, t0 + SQ_INDEX_FAIL_MS - now);
            else if (!__atomic_load_n(&x->kick, __ATOMIC_ACQUIRE) && !x->stop)
                ix_wait(x, SQ_INDEX_EVERY_MS);
            for (int64_t now; !x->stop && (now = pl_mono_ms()) < last + SQ_INDEX_GAP_MS;)
                ix_wait(x, last + SQ_INDEX_GAP_MS - now);
        }
        int stop = x->stop;
        __atomic_store_n(&x->kick, 0, __ATOMIC_RELEASE);
        pthread_mutex_unlock(&x->mu);
        if (stop) {                 /* close: what is queued, within its budget */
            while (!ix_progress(x) && ix_pass(x) > 0) {}
            break;
        }
        int64_t t = pl_mono_ms();
        int n = ix_pass(x);
        if (n > 0) last = t;
        if (__atomic_load_n(&x->durable, __ATOMIC_ACQUIRE) < x->done &&
            (x->frames >= SQ_INDEX_CKPT_FRAMES || t - x->ckpt_ms >= SQ_INDEX_CKPT_MS)) {
            x->ckpt_ms = t;
            ix_checkpoint(x, SQLITE_CHECKPOINT_PASSIVE);
        }
        errors = n < 0 ? errors + 1 : 0;
        behind = n >= SQ_INDEX_ROWS || (n < 0 && errors < 3);   /* errors: e.g. a lock timeout */
        int64_t now = pl_mono_ms();
        if (n >= 0 && x->lag == 0) caught = now;
        if (n >= 0 && x->can_idle && sq_index_yields(yielding, x->lag, now - caught) != yielding)
            yielding = ix_set_yielding(x, !yielding);
    }
    return NULL;
}

static int ix_text_is(sqlite3 *db, const char *sql, char *out, size_t n) {
    sqlite3_stmt *st;
    out[0] = '\0';
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) return -1;
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW && sqlite3_column_text(st, 0))
        snprintf(out, n, "%s", (const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : -1;
}

int sq_index_open(sq_store *s, const char *search_path, const char *main_path, char *err, size_t errlen) {
    sq_indexer *x = pl_calloc(1, sizeof *x);
    s->ix = x;
    pthread_mutex_init(&x->mu, NULL);
    pthread_cond_init(&x->cv, NULL);
    char mine[64], theirs[64];
    if (sqlite3_open_v2(search_path, &x->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                        sq_vfs()) != SQLITE_OK) {
        snprintf(err, errlen, "cannot open the search index %s", search_path);
        return -1;
    }
    sqlite3_extended_result_codes(x->db, 1);
    sqlite3_progress_handler(x->db, 1000, ix_progress, x);
    sqlite3_busy_timeout(x->db, SQ_BUSY_MS);
    char *attach = sqlite3_mprintf("ATTACH %Q AS m", main_path);
    int ok = sqlite3_exec(x->db, "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;"
                                 " PRAGMA secure_delete = ON; PRAGMA cache_size = -16384;",
                          NULL, NULL, NULL) == SQLITE_OK &&
             sqlite3_exec(x->db, IX_SCHEMA, NULL, NULL, NULL) == SQLITE_OK &&
             sqlite3_exec(x->db, attach, NULL, NULL, NULL) == SQLITE_OK &&
             sqlite3_exec(x->db, IX_TEMP, NULL, NULL, NULL) == SQLITE_OK &&
             ix_text_is(x->db, "SELECT token FROM m.search_pair", mine, sizeof mine) == 0 && mine[0] &&
             ix_text_is(x->db, "SELECT v FROM meta WHERE k = 'pair'", theirs, sizeof theirs) == 0;
    sqlite3_free(attach);
    /* Ahead: a parley.db restored from a backup beside the search.db that
     * went on after it. Queue rows never go back below `done` (the writer
     * keeps the newest), so a queue whose newest row is below `done` is an
     * older copy: its next messages would take qids the index counts as
     * done and never be indexed. */
    char past[8] = "";
    if (ok && strcmp(mine, theirs) == 0)
        ok = ix_text_is(x->db, "SELECT CAST(v AS INTEGER) > (SELECT coalesce(max(qid), 0) FROM m.fts_queue)"
                               " FROM meta WHERE k = 'done'", past, sizeof past) == 0;
    int ahead = ok && strcmp(past, "1") == 0;
    if (ok && (strcmp(mine, theirs) != 0 || ahead)) {
        /* new, built for another parley.db, or ahead of this one: empty it
         * and queue everything (in one parley.db transaction of the writer
         * connection, before any thread runs) */
        if (ahead)
            pl_log(PL_LOG_WARN, 0, "store: the search index is ahead of the database (parley.db restored from a backup?); rebuilding it", "%s", "");
        else if (theirs[0])
            pl_log(PL_LOG_WARN, 0, "store: the search index belongs to another database; rebuilding it", "%s", "");
        /* the queue first: a crash in between leaves the tokens apart, and
         * the next start does both again */
        char *reset = sqlite3_mprintf("BEGIN; DELETE FROM events_fts; DELETE FROM meta;"
                                      " INSERT INTO meta(k, v) VALUES('pair', %Q), ('done', 0); COMMIT;",
                                      mine);
        ok = sqlite3_exec(s->wdb, "BEGIN; DELETE FROM fts_queue;"
                                  " INSERT INTO fts_queue(id, conv_id, seq, op)"
                                  " SELECT id, conv_id, seq, 0 FROM events"
                                  " WHERE kind = 2 AND body IS NOT NULL AND deleted_ts = 0; COMMIT;",
                          NULL, NULL, NULL) == SQLITE_OK &&
             sqlite3_exec(x->db, reset, NULL, NULL, NULL) == SQLITE_OK;
        if (!ok && !sqlite3_get_autocommit(s->wdb)) sqlite3_exec(s->wdb, "ROLLBACK", NULL, NULL, NULL);
        sqlite3_free(reset);
    }
    if (ok) {
        char done[32];
        ok = ix_text_is(x->db, "SELECT v FROM meta WHERE k = 'done'", done, sizeof done) == 0;
        x->done = strtoll(done, NULL, 10);
    }
    /* nothing is durable before a checkpoint says so: a process that
     * crashed may have left passes in the page cache only */
    if (ok) {
        sqlite3_wal_hook(x->db, ix_wal_hook, x);           /* automatic checkpoints off */
        ix_checkpoint(x, SQLITE_CHECKPOINT_PASSIVE);
    }
    /* SQLite < 3.42 has no secure-delete for FTS5 (docs/design.md "Search") */
    if (ok) x->secure = sqlite3_exec(x->db, IX_SECURE_DELETE, NULL, NULL, NULL) == SQLITE_OK;
    for (int i = 0; ok && i < IX__COUNT; i++)
        ok = sqlite3_prepare_v3(x->db, ix_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &x->st[i], NULL) == SQLITE_OK;
    if (!ok) {
        snprintf(err, errlen, "cannot set up the search index %s: %s", search_path, sqlite3_errmsg(x->db));
        return -1;
    }
    return 0;
}

int sq_index_start(sq_store *s) {
    sq_indexer *x = s->ix;
    x->can_idle = ix_probe_idle();
    if (pthread_create(&x->thread, NULL, ix_main, x) != 0) return -1;
    x->started = 1;
    sq_index_kick(s);                        /* what a previous run left queued */
    return 0;
}

/* The writer never waits for the indexer's mutex: at SCHED_IDLE the
 * indexer can be off the CPU for a long time while it holds it (a priority
 * inversion that would stall every commit). If the mutex is taken the flag
 * alone is set; the indexer sees it at its next look, at most
 * SQ_INDEX_EVERY_MS later. */
void sq_index_kick(sq_store *s) {
    sq_indexer *x = s->ix;
    if (!x) return;
    __atomic_store_n(&x->kick, 1, __ATOMIC_RELEASE);
    if (pthread_mutex_trylock(&x->mu) != 0) return;
    pthread_cond_signal(&x->cv);
    pthread_mutex_unlock(&x->mu);
}

int64_t sq_index_done(sq_store *s) { return s->ix ? __atomic_load_n(&s->ix->durable, __ATOMIC_ACQUIRE) : 0; }

/* The thread finishes within budget_ms (and what SQLite takes to notice,
 * every 1,000 of its instructions). It may be at SCHED_IDLE in the middle
 * of a pass, where a busy machine would leave it waiting for a CPU for as
 * long as the machine stays busy (a drain under load took 11 s here):
 * first it gets an ordinary share again, as ix_set_yielding would. */
void sq_index_close_in(sq_store *s, int64_t budget_ms) {
    sq_indexer *x = s->ix;
    if (!x) return;
    int64_t dl = pl_mono_ms() + (budget_ms > 0 ? budget_ms : 0);
    __atomic_store_n(&x->deadline, dl > 0 ? dl : 1, __ATOMIC_RELEASE);
    if (x->started && x->can_idle) {
        struct sched_param sp = {0};
        pthread_setschedparam(x->thread, SCHED_OTHER, &sp);
        pid_t tid = __atomic_load_n(&x->tid, __ATOMIC_ACQUIRE);
        if (tid) setpriority(PRIO_PROCESS, (id_t)tid, 0);          /* best effort */
    }
    if (x->started) sq_thread_stop(&x->mu, &x->cv, &x->stop, x->thread);
    for (int i = 0; i < IX__COUNT; i++) sqlite3_finalize(x->st[i]);
    if (x->db) sqlite3_close(x->db);
    pthread_cond_destroy(&x->cv);
    pthread_mutex_destroy(&x->mu);
    free(x);
    s->ix = NULL;
}

void sq_index_close(sq_store *s) { sq_index_close_in(s, SQ_INDEX_CLOSE_MS); }
