/* store_sqlite.c — the SQLite backend of store.h (embedded mode): opening
 * (migrating the schema, preparing the statements), the data directory
 * lock, close.
 *
 * Owns: the database file <dir>/parley.db and its lock <dir>/parley.lock,
 * the writer connection (store_sqlite_write.c runs the jobs on it) and one
 * read-only connection per reader thread (store_sqlite_read.c), which also
 * attaches the search index <dir>/search.db as `s` (store_sqlite_index.c
 * owns that file and the thread that fills it).
 * Does not own: the schema and its migrations (store_sqlite_schema.c), the
 * statements' SQL (store_sqlite_stmts.c), threads and queues (pipeline.c),
 * the jobs (the caller's until done() runs), JSON for the wire.
 *
 * ---- The commit pipeline -------------------------------------------------
 *
 *   loop thread            writer thread (pipeline.c)          loop thread
 *   pl_store_submit() ---> sq_run_batch(jobs):                 drain: done()
 *                            BEGIN IMMEDIATE                   in submission
 *                            run every job (checks first,      order
 *                              the append last)
 *                            flush conversation state and
 *                              own_unread deltas
 *                            COMMIT (WAL fsync, synchronous=FULL)
 *                            or ROLLBACK + EUNAVAIL, sticky
 *   reads ---------------> reader i: sq_run_read(job) on its own connection
 *                          (WAL lets readers run beside the writer)
 *
 * Invariants:
 *   1. Only the writer thread touches wdb, w[], the conversation map, the
 *      own map, the id generator and `broken`; reader i touches only
 *      readers[i].
 *   2. A write job completes OK only after the COMMIT of its batch returned
 *      SQLITE_DONE with synchronous=FULL.
 *   3. The conversation map holds each conversation's last_seq, msg_count
 *      and member_count inside the open transaction; it moves only after the
 *      statement it reflects succeeded, is written back (flush) before
 *      COMMIT, and is cleared on any batch failure (reloaded lazily).
 *   4. A job that fails on its own writes nothing: sends check the
 *      idempotency key and membership before their first write; the
 *      multi-statement jobs check first and also run in a savepoint. The
 *      event append (with its search-queue row and media references,
 *      whose failure fails the batch) is the last write of every job.
 *   5. After a failure at batch level (anything once BEGIN succeeded) the
 *      store is broken for good: the database state after a failed write or
 *      fsync is unknown, so nothing is acknowledged any more. A batch that
 *      was not committed but reached the disk may reappear after a restart;
 *      its jobs were never acknowledged and a retried send gets the stored
 *      event back through the idempotency key.
 *   6. One process at a time: <dir>/parley.lock is held (flock) from open to
 *      close; a second parleyd on the same directory is refused at start.
 *   7. parley.db's WAL is copied back into the database by a thread of its
 *      own (store_sqlite_ckpt.c), never inside the writer's COMMIT; the
 *      writer only checkpoints between batches, to restart the WAL once
 *      nearly all of it is copied, or past a bound on its size.
 */
#include "sqlite_int.h"

#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../core/alloc.h"
#include "../core/log.h"

/* Measured with 1000-send batches into 100 conversations:
 * each batch dirties about two leaf pages per conversation (events and the
 * idempotency index). A 64 MiB page cache stops the writer re-reading them
 * from the WAL, and checkpointing every 10000 pages (WAL <= ~40 MiB) instead
 * of 1000 copies each hot page once per many batches: 66k -> 90k sends/s,
 * with the same worst-case commit latency (~25 ms). The automatic
 * checkpoint only serves the migrations: once open, store_sqlite_ckpt.c
 * takes over (invariant 7). */
#define WRITER_TUNING "PRAGMA cache_size = -65536; PRAGMA wal_autocheckpoint = 10000;"

/* A reader's page cache, 512 KiB instead of SQLite's 2 MiB: authentication
 * reads (users, logins, memberships) filled both readers' caches to the
 * bound, 4 MiB that showed up as ~200 bytes per idle connection at 19,000
 * (docs/benchmarks.md "Issue 11: memory per idle connection, third
 * session"). What a reader re-reads most (a conversation's recent events,
 * a group's catch-up) is a few pages; the rest comes from the OS page
 * cache with one pread per page. */
#define READER_TUNING "PRAGMA cache_size = -512;"

/* ---- helpers shared with the job files ---------------------------------- */

sqlite3_stmt *sq_prep(sqlite3 *db, const char *sql, int *src) {
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
    if (rc != SQLITE_OK) {
        *src = rc;
        sqlite3_finalize(st);
        return NULL;
    }
    return st;
}

int sq_run(sqlite3 *db, int *src, int64_t *out, const char *sql, const char *fmt, ...) {
    sqlite3_stmt *st = sq_prep(db, sql, src);
    if (!st) return SQ_RUN_ERR;
    va_list ap;
    va_start(ap, fmt);
    for (int i = 0; fmt[i]; i++) {
        if (fmt[i] == 'i') sqlite3_bind_int64(st, i + 1, va_arg(ap, int64_t));
        else sqlite3_bind_text(st, i + 1, va_arg(ap, const char *), -1, SQLITE_STATIC);
    }
    va_end(ap);
    int rc = sqlite3_step(st);
    int found = rc == SQLITE_ROW;
    if (found && out) *out = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        *src = rc;
        return SQ_RUN_ERR;
    }
    return found;
}

void sq_dup_event(pl_job *j, sqlite3_stmt *st) {
    j->dup = 1;
    j->has_event = 1;
    j->event.conv = j->conv;
    j->event.seq = sqlite3_column_int64(st, 0);
    j->event.id = (uint64_t)sqlite3_column_int64(st, 1);
    j->event.ts = sqlite3_column_int64(st, 2);
    j->event.kind = PL_EV_MESSAGE;
    j->event.sender = j->user;
    j->event.client_msg_id = pl_strdup(j->client_msg_id);
}

char *sq_col_text(sqlite3_stmt *st, int i, size_t *len) {
    if (sqlite3_column_type(st, i) == SQLITE_NULL) {
        if (len) *len = 0;
        return NULL;
    }
    const unsigned char *t = sqlite3_column_text(st, i);
    size_t n = (size_t)sqlite3_column_bytes(st, i);
    char *p = pl_malloc(n + 1);
    if (n) memcpy(p, t, n);
    p[n] = '\0';
    if (len) *len = n;
    return p;
}

/* ---- open, close --------------------------------------------------------- */

/* mkdir -p; 0 or -1. */
static int mkdir_p(const char *dir) {
    char *p = pl_strdup(dir);
    int rc = 0;
    for (char *c = p + 1; *c && rc == 0; c++) {
        if (*c != '/') continue;
        *c = '\0';
        if (mkdir(p, 0700) != 0 && errno != EEXIST) rc = -1;
        *c = '/';
    }
    if (rc == 0 && mkdir(p, 0700) != 0 && errno != EEXIST) rc = -1;
    free(p);
    return rc;
}

int sq_db_int(sqlite3 *db, const char *sql, int64_t *out) {
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) return -1;
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) *out = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return rc == SQLITE_ROW ? 0 : -1;
}

static int db_text_is(sqlite3 *db, const char *sql, const char *want) {
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) return 0;
    int ok = sqlite3_step(st) == SQLITE_ROW && sqlite3_column_text(st, 0) &&
             strcmp((const char *)sqlite3_column_text(st, 0), want) == 0;
    sqlite3_finalize(st);
    return ok;
}

static int prepare_all(sqlite3 *db, const char *const *sql, sqlite3_stmt **st, int n) {
    for (int i = 0; i < n; i++)
        if (sqlite3_prepare_v3(db, sql[i], -1, SQLITE_PREPARE_PERSISTENT, &st[i], NULL) != SQLITE_OK) {
            pl_log(PL_LOG_ERROR, 0, "store: prepare failed", "\"stmt\":%d,\"rc\":%d,\"err\":\"%s\"", i,
                   sqlite3_errcode(db), sqlite3_errmsg(db));
            return -1;
        }
    return 0;
}

static void close_db(sqlite3 **db, sqlite3_stmt **st, int n) {
    for (int i = 0; i < n; i++) {
        sqlite3_finalize(st[i]);
        st[i] = NULL;
    }
    if (*db && sqlite3_close(*db) != SQLITE_OK)
        pl_log(PL_LOG_ERROR, 0, "store: closing a connection failed", "%s", "");
    *db = NULL;
}

void sq_thread_stop(pthread_mutex_t *mu, pthread_cond_t *cv, int *stop, pthread_t thread) {
    pthread_mutex_lock(mu);
    *stop = 1;
    pthread_cond_signal(cv);
    pthread_mutex_unlock(mu);
    pthread_join(thread, NULL);
}

/* Frees everything but the pipeline (not started, or stopped). */
static void sq_free(sq_store *s) {
    sq_index_close(s);                 /* its thread first: it reads parley.db */
    sq_ckpt_close(s);
    close_db(&s->wdb, s->w, W__COUNT);
    for (int i = 0; i < s->nreaders; i++) close_db(&s->readers[i].db, s->readers[i].r, R__COUNT);
    free(s->readers);
    if (s->lock_fd >= 0) close(s->lock_fd);   /* releases the flock */
    pl_conv_map_free(&s->convs);
    free(s->dirty);
    pl_own_free(&s->own);
    free(s->roles);
    free(s);
}

/* Before SQLite's first use in the process: no global memory statistics.
 * With them (Debian's default), every sqlite3_malloc and free takes one
 * process-wide mutex, which the writer and every reader contend for; the
 * statistics are never read here (docs/benchmarks.md, "SQLite memory
 * statistics"); and the page-cache wrapper (store_sqlite_pcache.c). Later calls are refused by SQLite (already initialised),
 * which is harmless. */
static void sqlite_config_once(void) {
    sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
    if (sq_pcache_install() != 0)
        pl_log(PL_LOG_DEBUG, 0, "store: SQLite was initialised before the page-cache wrapper", "%s", "");
}

static int open_conn(const char *path, int flags, sqlite3 **db) {
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, sqlite_config_once);
    if (sqlite3_open_v2(path, db, flags | SQLITE_OPEN_NOMUTEX, sq_vfs()) != SQLITE_OK) return -1;
    sqlite3_extended_result_codes(*db, 1);
    sqlite3_busy_timeout(*db, SQ_BUSY_MS);
    return 0;
}

/* Invariant 6. */
static int lock_dir(sq_store *s, const char *dir, char *err, size_t errlen) {
    char path[4096];
    snprintf(path, sizeof path, "%s/parley.lock", dir);
    s->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (s->lock_fd < 0) {
        snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    if (flock(s->lock_fd, LOCK_EX | LOCK_NB) != 0) {
        snprintf(err, errlen, "the data directory %s is in use by another parleyd (%s is locked)",
                 dir, path);
        return -1;
    }
    return 0;
}

static void sq_submit(pl_store *base, pl_job *j) { pl_pipeline_submit(((sq_store *)base)->pipe, j); }
static void sq_drain(pl_store *base) { pl_pipeline_drain(((sq_store *)base)->pipe); }
static int  sq_healthy(pl_store *base) { return !__atomic_load_n(&((sq_store *)base)->is_broken, __ATOMIC_RELAXED); }

static void sq_close(pl_store *base) {
    sq_store *s = (sq_store *)base;
    pl_pipeline_stop(&s->pipe);
    sq_free(s);
}

static const pl_store_ops sq_ops = {
    .name = "sqlite",
    .submit = sq_submit,
    .drain = sq_drain,
    .healthy = sq_healthy,
    .shared_secret = NULL,
    .close = sq_close,
};

void pl_store_sqlite_fail_commits(pl_store *base, int n) {
    if (!base || base->ops != &sq_ops) return;
    __atomic_store_n(&((sq_store *)base)->fail_commits, n, __ATOMIC_SEQ_CST);
}

int pl_store_sqlite_open(const pl_store_opts *o, pl_store **out, char *err, size_t errlen) {
    *out = NULL;
    const char *dir = o->data_dir && o->data_dir[0] ? o->data_dir : ".";
    if (mkdir_p(dir) != 0) {
        snprintf(err, errlen, "cannot create the data directory %s: %s", dir, strerror(errno));
        return PL_STORE_EUNAVAIL;
    }
    sq_store *s = pl_calloc(1, sizeof *s);
    s->base.ops = &sq_ops;
    s->base.node_id = o->node_id < 0 ? 0 : o->node_id;
    s->lock_fd = -1;
    s->large_group = o->large_group;
    s->edit_window_ms = o->edit_window_ms;
    s->push = o->push;
    s->workspace_members = o->workspace_members;
    s->workspace_channels = o->workspace_channels;
    s->retention = o->retention;
    s->nreaders = o->readers > 0 ? o->readers : SQ_READERS;
    s->readers = pl_calloc((size_t)s->nreaders, sizeof *s->readers);
    pl_idgen_init(&s->ids, s->base.node_id);
    if (lock_dir(s, dir, err, errlen) != 0) {
        sq_free(s);
        return PL_STORE_EUNAVAIL;
    }
    size_t plen = strlen(dir) + sizeof "/parley.db";
    char *path = pl_malloc(plen);
    snprintf(path, plen, "%s/parley.db", dir);
    err[0] = '\0';
    if (open_conn(path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, &s->wdb) != 0)
        snprintf(err, errlen, "cannot open the database %s", path);
    else if (!db_text_is(s->wdb, "PRAGMA journal_mode = WAL", "wal"))
        snprintf(err, errlen, "cannot switch the database to WAL");
    else if (sqlite3_exec(s->wdb, "PRAGMA synchronous = FULL", NULL, NULL, NULL) != SQLITE_OK)
        snprintf(err, errlen, "cannot set synchronous = FULL");
    else if (sqlite3_exec(s->wdb, WRITER_TUNING, NULL, NULL, NULL) != SQLITE_OK ||
             sqlite3_exec(s->wdb, "PRAGMA secure_delete = ON", NULL, NULL, NULL) != SQLITE_OK)
        snprintf(err, errlen, "cannot tune the write connection");
    else if (sq_migrate(s->wdb, err, errlen) != 0)
        ;
    /* one process owns the file: every lease is a dead process's (invariant 10) */
    else if (sqlite3_exec(s->wdb, "UPDATE push_outbox SET lease = 0 WHERE lease > 0", NULL, NULL, NULL) != SQLITE_OK)
        snprintf(err, errlen, "cannot release the push outbox's leases");
    else if (prepare_all(s->wdb, sq_w_sql, s->w, W__COUNT) != 0)
        snprintf(err, errlen, "cannot prepare statements");
    size_t slen = strlen(dir) + sizeof "/search.db";
    char *spath = pl_malloc(slen);
    snprintf(spath, slen, "%s/search.db", dir);
    if (!err[0]) sq_index_open(s, spath, path, err, errlen);
    /* the writer prunes the queue in steps from its oldest row */
    if (!err[0] && sq_db_int(s->wdb, "SELECT coalesce(min(qid), 1) - 1 FROM fts_queue", &s->fts_pruned) != 0)
        snprintf(err, errlen, "cannot read the search queue");
    if (!err[0]) sq_ckpt_open(s, path, err, errlen);
    char *attach = sqlite3_mprintf("ATTACH %Q AS s", spath);
    for (int i = 0; !err[0] && i < s->nreaders; i++) {
        sq_reader *r = &s->readers[i];
        if (open_conn(path, SQLITE_OPEN_READWRITE, &r->db) != 0 ||
            sqlite3_exec(r->db, attach, NULL, NULL, NULL) != SQLITE_OK ||
            sqlite3_exec(r->db, "PRAGMA query_only = 1; " READER_TUNING, NULL, NULL, NULL) != SQLITE_OK)
            snprintf(err, errlen, "cannot open a read connection");
        else if (prepare_all(r->db, sq_r_sql, r->r, R__COUNT) != 0)
            snprintf(err, errlen, "cannot prepare statements");
    }
    sqlite3_free(attach);
    free(spath);
    free(path);
    if (err[0]) {
        sq_free(s);
        return PL_STORE_EUNAVAIL;
    }
    void **rctx = pl_malloc((size_t)s->nreaders * sizeof *rctx);
    for (int i = 0; i < s->nreaders; i++) rctx[i] = &s->readers[i];
    pl_pipeline_cfg pc = {
        .batch_max = SQ_BATCH_MAX,
        .linger_us = SQ_LINGER_US,
        .linger_from = SQ_LINGER_FROM,
        .linger_until = SQ_LINGER_UNTIL,
        .nreaders = s->nreaders,
        .wctx = s,
        .rctx = rctx,
        .run_batch = sq_run_batch,
        .after_batch = sq_ckpt_after_batch,
        .run_read = sq_run_read,
        .notify = o->notify,
        .notify_arg = o->notify_arg,
        .committed = o->committed,
        .committed_arg = o->committed_arg,
    };
    s->pipe = pl_pipeline_start(&pc);
    free(rctx);
    if (!s->pipe || sq_index_start(s) != 0 || sq_ckpt_start(s) != 0) {
        if (s->pipe) pl_pipeline_stop(&s->pipe);
        snprintf(err, errlen, "cannot start the store threads");
        sq_free(s);
        return PL_STORE_EUNAVAIL;
    }
    *out = &s->base;
    return PL_STORE_OK;
}
