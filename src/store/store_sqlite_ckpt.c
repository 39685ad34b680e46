/* store_sqlite_ckpt.c — parley.db's WAL checkpoints, off the writer's
 * commits (store_sqlite.c invariant 7).
 *
 * Owns: the checkpointer thread and its connection, the writer
 * connection's WAL hook, and the rule for when the writer itself
 * checkpoints.
 *
 * Why: with SQLite's automatic checkpoint the COMMIT that takes the WAL
 * past its limit also copies every page of it into parley.db and fsyncs
 * that: 10-40 ms at 30,000 msg/s, a stall that every message queued
 * behind it waits out (docs/benchmarks.md "Issue 11: checkpoints off the
 * writer"). Here a thread of its own does that copy (a PASSIVE checkpoint:
 * it never blocks the writer, which goes on appending). The WAL only
 * starts again from its beginning when a write transaction begins with
 * every frame copied, which under a steady stream the background copy
 * never quite reaches. So once the WAL is past SQ_CKPT_RESET frames and
 * the background copy is within SQ_CKPT_TAIL frames of its end, the
 * writer checkpoints between batches: only that tail is left to copy, and
 * its next transaction restarts the WAL. Past SQ_CKPT_MAX the writer
 * checkpoints whatever is left, which bounds the WAL if the background
 * copy falls behind.
 *
 * A reader that holds a snapshot when the writer's checkpoint ends keeps
 * the WAL from restarting (SQLite restarts it only when no reader uses
 * it); the tail is then one batch again, and the writer would checkpoint
 * after every batch while that reader lasts, each time copying a batch
 * and syncing parley.db on the commit path (the search indexer reads
 * parley.db in short statements, almost back to back at a high rate,
 * from a thread that yields its CPU). So after a checkpoint of its own
 * that the WAL did not restart from, the writer tries again only once the
 * WAL has grown by SQ_CKPT_RETRY frames.
 *
 * The frame counts: the hook reports the WAL's frames after each commit;
 * a checkpoint reports how many of them it copied. After the WAL restarts
 * the hook's count starts again from below the copied one, which resets
 * that too.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../core/alloc.h"
#include "../core/log.h"
#include "../core/metrics.h"
#include "sqlite_int.h"

struct sq_ckpt {
    sqlite3        *db;                 /* parley.db, only for checkpoints   */
    pthread_t       thread;
    int             started;
    pthread_mutex_t mu;
    pthread_cond_t  cv;
    int             kick, stop;         /* under mu                          */
    int             running;            /* under mu: a background copy runs  */
    int64_t         frames;             /* atomic: the WAL's frames          */
    int64_t         copied;             /* atomic: of those, copied          */
    int64_t         writer_left_max;    /* atomic: most frames left to the writer */
    int64_t         writer_at;          /* writer thread: the WAL's frames at its
                                         * last checkpoint, 0 once it restarted */
};

/* A stale count (a copy of the WAL before it restarted) is harmless: the
 * next commit's hook sees fewer frames than copied and resets it. */
static void ck_copied(sq_ckpt *c, int nckpt) {
    if (nckpt >= 0) __atomic_store_n(&c->copied, (int64_t)nckpt, __ATOMIC_RELEASE);
}

/* One PASSIVE checkpoint on db (the thread's connection or the writer's),
 * counted in /metrics under `by`. */
static void ck_run(sq_ckpt *c, sqlite3 *db, pl_counter *by, const char *who) {
    int nlog = -1, nckpt = -1;
    int rc = sqlite3_wal_checkpoint_v2(db, "main", SQLITE_CHECKPOINT_PASSIVE, &nlog, &nckpt);
    pl_count(by, 1);
    if (rc == SQLITE_OK) ck_copied(c, nckpt);
    else if (rc != SQLITE_BUSY && rc != SQLITE_LOCKED)
        pl_log(PL_LOG_WARN, 0, "store: checkpoint failed", "\"by\":\"%s\",\"rc\":%d,\"err\":\"%s\"", who, rc,
               sqlite3_errmsg(db));
}

static void *ck_main(void *arg) {
    sq_ckpt *c = arg;
    pthread_setname_np(pthread_self(), "pl-ckpt");
    sq_vfs_background();                    /* its copies leave the disk to commits */
    pthread_mutex_lock(&c->mu);
    for (;;) {
        while (!c->kick && !c->stop) pthread_cond_wait(&c->cv, &c->mu);
        if (c->stop) break;
        c->kick = 0;
        c->running = 1;
        pthread_mutex_unlock(&c->mu);
        ck_run(c, c->db, &pl_m_ckpt_background, "background");
        pthread_mutex_lock(&c->mu);
        c->running = 0;
    }
    pthread_mutex_unlock(&c->mu);
    return NULL;
}

/* The writer connection's WAL hook: runs inside its COMMIT, so it only
 * records and wakes. */
static int ck_hook(void *arg, sqlite3 *db, const char *name, int nframes) {
    sq_ckpt *c = arg;
    (void)db;
    (void)name;
    int64_t copied = __atomic_load_n(&c->copied, __ATOMIC_ACQUIRE);
    if (nframes < copied) {                  /* the WAL started again */
        copied = 0;
        __atomic_store_n(&c->copied, 0, __ATOMIC_RELEASE);
    }
    __atomic_store_n(&c->frames, (int64_t)nframes, __ATOMIC_RELEASE);
    if (nframes - copied >= SQ_CKPT_STEP) {
        pthread_mutex_lock(&c->mu);
        if (!c->running && !c->kick) {
            c->kick = 1;
            pthread_cond_signal(&c->cv);
        }
        pthread_mutex_unlock(&c->mu);
    }
    return SQLITE_OK;
}

int sq_ckpt_open(sq_store *s, const char *path, char *err, size_t errlen) {
    sq_ckpt *c = pl_calloc(1, sizeof *c);
    s->ck = c;
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cv, NULL);
    if (sqlite3_open_v2(path, &c->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, sq_vfs()) != SQLITE_OK) {
        snprintf(err, errlen, "cannot open a checkpoint connection to %s", path);
        return -1;
    }
    sqlite3_extended_result_codes(c->db, 1);
    sqlite3_busy_timeout(c->db, SQ_BUSY_MS);
    /* a connection finds the WAL on its first read; until then a
     * checkpoint does nothing */
    if (sqlite3_exec(c->db, "SELECT count(*) FROM sqlite_schema", NULL, NULL, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "cannot read %s for checkpoints", path);
        return -1;
    }
    /* replaces SQLite's automatic checkpoint on the writer connection */
    sqlite3_wal_hook(s->wdb, ck_hook, c);
    return 0;
}

int sq_ckpt_start(sq_store *s) {
    sq_ckpt *c = s->ck;
    if (pthread_create(&c->thread, NULL, ck_main, c) != 0) return -1;
    c->started = 1;
    return 0;
}

void sq_ckpt_after_batch(void *wctx, int queued) {
    sq_store *s = wctx;
    sq_ckpt *c = s->ck;
    (void)queued;
    if (!c || s->broken) return;
    int64_t frames = __atomic_load_n(&c->frames, __ATOMIC_ACQUIRE);
    int64_t copied = __atomic_load_n(&c->copied, __ATOMIC_ACQUIRE);
    if (frames < c->writer_at) c->writer_at = 0;          /* the WAL started again */
    if (frames < SQ_CKPT_RESET || (frames - copied > SQ_CKPT_TAIL && frames < SQ_CKPT_MAX)) return;
    if (c->writer_at && frames < c->writer_at + SQ_CKPT_RETRY && frames < SQ_CKPT_MAX) return;   /* a reader */
    pthread_mutex_lock(&c->mu);
    int running = c->running;
    pthread_mutex_unlock(&c->mu);
    if (running && frames < SQ_CKPT_MAX) return;   /* it ends soon; next batch */
    if (frames - copied > c->writer_left_max)   /* written by the writer only */
        __atomic_store_n(&c->writer_left_max, frames - copied, __ATOMIC_RELAXED);
    ck_run(c, s->wdb, &pl_m_ckpt_writer, "writer");
    c->writer_at = frames;
}

void sq_ckpt_stats_get(sq_store *s, sq_ckpt_stats *out) {
    memset(out, 0, sizeof *out);
    if (!s->ck) return;
    out->frames = __atomic_load_n(&s->ck->frames, __ATOMIC_ACQUIRE);
    out->copied = __atomic_load_n(&s->ck->copied, __ATOMIC_ACQUIRE);
    out->writer_left_max = __atomic_load_n(&s->ck->writer_left_max, __ATOMIC_RELAXED);
}

void sq_ckpt_close(sq_store *s) {
    sq_ckpt *c = s->ck;
    if (!c) return;
    if (c->started) sq_thread_stop(&c->mu, &c->cv, &c->stop, c->thread);
    if (s->wdb) sqlite3_wal_hook(s->wdb, NULL, NULL);
    if (c->db) sqlite3_close(c->db);
    pthread_cond_destroy(&c->cv);
    pthread_mutex_destroy(&c->mu);
    free(c);
    s->ck = NULL;
}
