/* sqlite_int.h — shared inside the SQLite backend (store_sqlite*.c) only.
 *
 * Owns: the backend's struct, its statement tables and the writer's
 * in-memory conversation state. See store_sqlite.c for the design note.
 */
#ifndef PL_SQLITE_INT_H
#define PL_SQLITE_INT_H

#include <pthread.h>
#include <sqlite3.h>

#include "pipeline.h"
#include "store.h"
#include "store_int.h"

#define SQ_BATCH_MAX   4096   /* jobs per transaction                       */
#define SQ_READERS     2      /* default reader threads                     */
/* Group-commit delay (pipeline.h): after a batch of at least SQ_LINGER_FROM
 * writes the writer waits for SQ_LINGER_UNTIL of them, or until the oldest
 * queued write is SQ_LINGER_US old, before the next transaction: the wait
 * follows the load, 4 ms at 20,000 msg/s, 2 ms from about 60,000
 * (docs/benchmarks.md "a group-commit delay that follows the load").
 * Lone writes never wait. */
#define SQ_LINGER_US    4000
#define SQ_LINGER_FROM  8
#define SQ_LINGER_UNTIL 128
#define SQ_BUSY_MS     5000   /* wait on a lock held by a checkpoint         */
#define W_FATAL        (-100) /* internal: the whole batch must fail        */

/* ---- writer statements -------------------------------------------------- */
enum {
    W_BEGIN, W_COMMIT, W_ROLLBACK, W_SAVEPOINT, W_RELEASE, W_ROLLBACK_TO,
    W_USER_INSERT, W_USER_EXISTS,
    W_LOGIN_INSERT, W_LOGIN_ROTATE, W_LOGIN_REVOKE,
    W_CONV_BY_KEY, W_CONV_INSERT, W_CONV_KIND, W_CONV_STATE, W_CONV_UPDATE,
    W_CONV_NEXT_JOIN,
    W_MEMBER_ROLE, W_MEMBER_INSERT, W_MEMBER_DELETE, W_MEMBER_HAS_ADMIN,
    W_MEMBER_OLDEST, W_MEMBER_SET_ROLE, W_MEMBER_OTHER_ADMIN,
    W_EVENT_DUP, W_EVENT_INSERT, W_EVENT_AT,
    W_MEMBER_CURSORS, W_MEMBER_SET_CURSORS, W_OWN_IN_RANGE, W_MENTIONS_ABOVE, W_OWN_UNREAD_ADD,
    W_USER_LAST_SEEN,
    W_MEMBER_JOINED, W_TARGET, W_MEMBER_BY_NAME, W_MENTION_INSERT, W_MENTION_ALL,
    W_MENTION_DELETE, W_MSG_EDIT, W_MSG_ERASE, W_EDITS_ERASE, W_REACTIONS_ERASE,
    W_REACTION_HAS, W_REACTION_KINDS, W_REACTION_INSERT, W_REACTION_DELETE, W_REACTION_COUNT,
    W_PIN_COUNT, W_PIN_SET, W_NOTIFY_SET,
    W_FTS_PRUNE, W_FTS_QUEUE, W_MEDIA_REFS, W_PUSH_OUTBOX,
    W__COUNT
};
extern const char *const sq_w_sql[W__COUNT];   /* store_sqlite_stmts.c */

/* ---- reader statements -------------------------------------------------- */
enum {
    R_BEGIN, R_COMMIT,
    R_USER_BY_NAME, R_USER_BY_ID, R_LOGIN, R_CONV_LIST, R_CONV_LIST_LAST, R_CONV_GET,
    R_CONV_MEMBERS, R_MEMBER, R_EVENTS_ASC, R_EVENTS_DESC, R_EVENT_AT,
    R_SHARES, R_USER_SHORT, R_CONV_HEAD, R_MEMBERSHIPS, R_USER_MESSAGES, R_PINS, R_MENTIONS, R_REACTIONS,
    R_SEARCH, R_USER_CONVS, R_USER_SEARCH,
    R__COUNT
};
extern const char *const sq_r_sql[R__COUNT];   /* store_sqlite_stmts.c */

typedef struct sq_reader {
    sqlite3      *db;
    sqlite3_stmt *r[R__COUNT];
} sq_reader;

typedef struct sq_store {
    pl_store      base;              /* ops table; must stay first            */
    pl_pipeline  *pipe;
    sqlite3      *wdb;               /* writer connection (writer thread)     */
    sqlite3_stmt *w[W__COUNT];
    sq_reader    *readers;           /* one per reader thread                 */
    int           nreaders;
    int           lock_fd;           /* flock on <dir>/parley.lock            */
    int64_t       large_group;       /* opts (store.h)                        */
    int64_t       edit_window_ms;
    int           push;              /* opts.push: MESSAGEs fill push_outbox  */
    int64_t       workspace_members; /* opts: quotas (store.h invariant 11)  */
    int64_t       workspace_channels;
    int64_t       retention;        /* opts.retention: the server's, seconds */
    /* writer thread only */
    int           broken;            /* sticky: a batch failed after BEGIN    */
    int           fatal_rc;          /* SQLite code of the batch's failure    */
    const char   *fatal_what;        /* which statement failed                */
    pl_conv_map   convs;             /* conversations touched since start     */
    int64_t      *dirty;             /* convs whose state moved this batch    */
    size_t        ndirty, dirty_cap;
    pl_own_map    own;               /* own_unread deltas of the open batch   */
    struct sq_role *roles;           /* members' roles as last read (store_sqlite_write.c) */
    int           roles_off;         /* a job that may change members runs    */
    pl_idgen      ids;
    int64_t       last_ts;           /* ts of the previous batch, never less  */
    int           erased;            /* the batch deleted a message: checkpoint after COMMIT */
    int64_t       fts_pruned;        /* fts_queue rows up to this are deleted, */
    int64_t       fts_prune_to;      /* and up to this will be, in steps      */
    struct sq_indexer *ix;           /* store_sqlite_index.c                  */
    struct sq_ckpt *ck;              /* store_sqlite_ckpt.c                   */
    /* any thread */
    volatile int  fail_commits;      /* fault hook (atomic builtins)          */
    volatile int  is_broken;         /* mirror of broken for healthy()        */
} sq_store;

#define SQ_ROLES          4096  /* the writer's role cache: entries, a power of two */
#define SQ_INDEX_ROWS     2000  /* messages per search indexing transaction */
#define SQ_SEARCH_CONVS   64    /* a search names the asker's conversations
                                 * in the MATCH when it has at most this many */
#define SQ_INDEX_EVERY_MS 100   /* the indexer looks at the queue at least
                                 * this often without being woken */
#define SQ_INDEX_GAP_MS   50    /* and starts a pass at most this often
                                 * unless it is behind */
#define SQ_INDEX_FAIL_MS  1000  /* after failing passes (a full disk), one
                                 * try this often; one log line a minute */
#define SQ_INDEX_NICE     10    /* the indexer thread's nice value once it
                                 * stopped yielding: */
#define SQ_INDEX_LAG_MAX  200000 /* queued messages, or */
#define SQ_INDEX_BEHIND_MS 10000 /* ms since the queue was last all indexed,
                                  * past which the indexer leaves SCHED_IDLE
                                  * (until it has caught up) */
#define SQ_PRUNE_ROWS     2000  /* the writer deletes indexed queue rows in
                                 * a batch once this many are done, */
#define SQ_PRUNE_STEP     512   /* at most this many, or SQ_PRUNE_PER_JOB */
#define SQ_PRUNE_PER_JOB  2     /* per job of the batch if more: a whole
                                 * checkpoint's worth (15-23k rows at
                                 * 45,000 msg/s) in one batch was 3-8 ms */
#define SQ_INDEX_CKPT_FRAMES 1000 /* search.db WAL frames, or */
#define SQ_INDEX_CKPT_MS  1000  /* ms, between the indexer's checkpoints */
#define SQ_INDEX_CLOSE_MS 2000  /* at close, the indexer goes on with what is
                                 * queued for this long, then stops, even in
                                 * the middle of a pass (rolled back: the
                                 * queue keeps it for the next start) */

/* ---- the writer's statement helpers ------------------------------------- */
/* For the writer's files (store_sqlite_write.c and its job files), on the
 * writer thread: inline, for the send path. */

/* Records why the batch must fail and returns W_FATAL. */
static inline int w_fatal(sq_store *s, int rc, const char *what) {
    s->fatal_rc = rc;
    s->fatal_what = what;
    return W_FATAL;
}

static inline int w_exec(sq_store *s, int id) {
    int rc = sqlite3_step(s->w[id]);
    sqlite3_reset(s->w[id]);
    return rc == SQLITE_DONE ? PL_STORE_OK : w_fatal(s, rc, sq_w_sql[id]);
}

/* Steps a bound one-row lookup: 1 with *out = column 0 when a row exists,
 * 0 when none, W_FATAL on error. Resets the statement. */
static inline int w_lookup(sq_store *s, int id, int64_t *out) {
    sqlite3_stmt *st = s->w[id];
    int rc = sqlite3_step(st);
    int found = rc == SQLITE_ROW;
    if (found && out) *out = sqlite3_column_int64(st, 0);
    sqlite3_reset(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) return w_fatal(s, rc, sq_w_sql[id]);
    return found;
}

/* Steps a bound write: PL_STORE_OK, ECONFLICT on a constraint (the statement
 * was undone by SQLite, the transaction goes on), W_FATAL otherwise. */
static inline int w_write(sq_store *s, int id) {
    int rc = sqlite3_step(s->w[id]);
    sqlite3_reset(s->w[id]);
    if (rc == SQLITE_DONE) return PL_STORE_OK;
    if ((rc & 0xff) == SQLITE_CONSTRAINT) return PL_STORE_ECONFLICT;
    return w_fatal(s, rc, sq_w_sql[id]);
}

/* store_sqlite_write.c */
void sq_run_batch(void *wctx, pl_job **jobs, size_t n);

/* ---- jobs -----------------------------------------------------------------
 * Each returns PL_STORE_OK or a PL_STORE_E* for the job alone, or W_FATAL
 * when the batch must fail. See store_sqlite.c invariant 4 for what a
 * failing job wrote. */
/* store_sqlite_accounts.c: run without a savepoint */
int  sq_job_user_create(sq_store *s, pl_job *j, int64_t now);
int  sq_job_login_create(sq_store *s, pl_job *j, int64_t now);
int  sq_job_login_rotate(sq_store *s, pl_job *j, int64_t now);
int  sq_job_login_revoke(sq_store *s, pl_job *j, int64_t now);
int  sq_job_last_seen(sq_store *s, pl_job *j, int64_t now);
/* store_sqlite_members.c: each in a savepoint, with the role cache off */
int  sq_job_direct_open(sq_store *s, pl_job *j, int64_t now);
int  sq_job_group_create(sq_store *s, pl_job *j, int64_t now);
int  sq_job_member_add(sq_store *s, pl_job *j, int64_t now);
int  sq_job_member_remove(sq_store *s, pl_job *j, int64_t now);
int  sq_job_member_role(sq_store *s, pl_job *j, int64_t now);
int  sq_job_member_leave(sq_store *s, pl_job *j, int64_t now);
/* store_sqlite_actions.c: in a savepoint but NOTIFY_SET */
int  sq_job_edit(sq_store *s, pl_job *j, int64_t now);
int  sq_job_delete(sq_store *s, pl_job *j, int64_t now);
int  sq_job_reaction(sq_store *s, pl_job *j, int64_t now);
int  sq_job_pin(sq_store *s, pl_job *j, int64_t now);
int  sq_job_notify_set(sq_store *s, pl_job *j, int64_t now);
/* store_sqlite_receipts.c: run without a savepoint */
int  sq_job_receipt(sq_store *s, pl_job *j, int64_t now);
/* store_sqlite_index.c: the search index (store.h invariant 8) in
 * search.db, filled by a thread of its own from parley.db's fts_queue.
 * open: after parley.db's migrations, on the writer connection's thread
 * (a new or foreign search.db queues every message again); start: the
 * thread; kick: the writer committed queue rows; done: the qid up to which
 * the queue is indexed and on disk (any thread); close: stops and joins the
 * thread. */
typedef struct sq_indexer sq_indexer;
int     sq_index_open(sq_store *s, const char *search_path, const char *main_path, char *err, size_t errlen);
int     sq_index_start(sq_store *s);
void    sq_index_kick(sq_store *s);
int64_t sq_index_done(sq_store *s);
/* whether the indexer runs at SCHED_IDLE next, given whether it does now,
 * the messages queued past its watermark and how long ago it last had
 * none (store_sqlite_index.c) */
int     sq_index_yields(int yielding, int64_t lag, int64_t behind_ms);
void    sq_index_close(sq_store *s);
void    sq_index_close_in(sq_store *s, int64_t budget_ms);
/* store_sqlite_read.c */
void sq_run_read(void *rctx, pl_job *j);

/* store_sqlite.c: ends a backend thread (the indexer, the checkpointer)
 * that waits on cv under mu until *stop: sets it, wakes and joins it. */
void sq_thread_stop(pthread_mutex_t *mu, pthread_cond_t *cv, int *stop, pthread_t thread);
/* store_sqlite.c: steps sql once on db; 0 with *out = column 0 of its row,
 * -1 when it cannot be prepared or returned no row. */
int  sq_db_int(sqlite3 *db, const char *sql, int64_t *out);
/* store_sqlite_schema.c: brings parley.db's schema up to date at open (on
 * the writer connection, one transaction per step), 0 or -1 (err). */
int  sq_migrate(sqlite3 *db, char *err, size_t errlen);

/* store_sqlite_vfs.c: the VFS every connection opens with (NULL: SQLite's
 * default, if the shim could not be registered). Call only after the
 * SQLite configuration of open_conn (store_sqlite.c). */
const char *sq_vfs(void);
/* Marks the calling thread's writes through the shim as background: paced,
 * so that they leave the disk to the writer's commits (store_sqlite_vfs.c
 * invariant 4). sq_vfs_waits: the pacing waits so far (tests). */
void          sq_vfs_background(void);
unsigned long sq_vfs_waits(void);

/* store_sqlite_pcache.c: wraps SQLite's default page cache so that a
 * commit's truncation is skipped when nothing is cached past the database
 * (its invariant 1). install: before SQLite's first use (0, or -1 when
 * SQLite is already initialised: the default then stays); counts: the
 * truncations skipped and passed on, and the b-tree's swaps through the
 * temporary page number, so far (tests). */
int  sq_pcache_install(void);
void sq_pcache_counts(unsigned long *skipped, unsigned long *passed, unsigned long *swaps);

/* store_sqlite_ckpt.c: parley.db's WAL checkpoints off the writer's
 * commits (store_sqlite.c invariant 7). open: after the writer connection
 * (installs its WAL hook); start: the thread; after_batch: the pipeline's
 * hook on the writer thread; close: stops and joins the thread, before the
 * writer connection closes. */
#define SQ_CKPT_STEP  2000   /* frames the WAL grows by before a background copy */
#define SQ_CKPT_RESET 8000   /* the WAL's frames past which the writer restarts it */
#define SQ_CKPT_TAIL  1000   /* ... once no more than this many are left to copy */
#define SQ_CKPT_RETRY 500    /* ... and again after one the WAL did not restart
                              * from (a reader held it) once it grew this much */
#define SQ_CKPT_MAX   40000  /* ... or in any case (~160 MiB) */
typedef struct sq_ckpt sq_ckpt;
typedef struct sq_ckpt_stats {            /* (the checkpoints themselves are
                                         * counted in /metrics)            */
    int64_t frames, copied;            /* the WAL now, as last seen           */
    int64_t writer_left_max;           /* most frames left to the writer's    */
} sq_ckpt_stats;
int  sq_ckpt_open(sq_store *s, const char *path, char *err, size_t errlen);
int  sq_ckpt_start(sq_store *s);
void sq_ckpt_after_batch(void *wctx, int queued);
void sq_ckpt_stats_get(sq_store *s, sq_ckpt_stats *out);   /* any thread */
void sq_ckpt_close(sq_store *s);

/* ---- end-to-end encryption (store.h invariant 9) ------------------------- */
/* store_sqlite_keys.c: the key directory's jobs and read, and the
 * conversation mark; their statements are prepared on use (rare jobs). */
int  sq_job_e2ee(sq_store *s, pl_job *j, int64_t now);  /* a write job, in a savepoint */
int  sq_read_devices(sq_reader *r, pl_job *j);
/* store_sqlite_media.c: PL_JOB_MEDIA_* (in a savepoint) and PL_READ_MEDIA_GET */
int  sq_job_media(sq_store *s, pl_job *j, int64_t now);
int  sq_read_media(sq_reader *r, pl_job *j);
/* store_sqlite_push.c: PL_JOB_PUSH_* (in a savepoint), the push reads,
 * and the login revoke's device cleanup */
int  sq_job_push(sq_store *s, pl_job *j, int64_t now);
int  sq_push_forget_login(sq_store *s, int64_t login);
int  sq_read_push(sq_reader *r, pl_job *j);
/* store_sqlite_ws.c: workspaces and channels (store.h invariant 11):
 * PL_JOB_WORKSPACE_* and CHANNEL_* (in a savepoint), their reads, and the
 * checks MEMBER_ADD (admits: PL_STORE_OK unless conv is a channel and user
 * not in its workspace, EFORBID) and MEMBER_REMOVE with PL_JOB_EVICT
 * (evictable) make of channels. */
int  sq_job_ws(sq_store *s, pl_job *j, int64_t now);
int  sq_ws_channel_admits(sq_store *s, int64_t conv, int64_t user);
int  sq_ws_evictable(sq_store *s, int64_t conv, int64_t user, int64_t actor, const char **why);
int  sq_read_ws(sq_reader *r, pl_job *j);
int  sq_ws_is_general(sq_store *s, int64_t conv);     /* 1, 0, W_FATAL */
/* store_sqlite_reports.c: moderation. PL_JOB_REPORT, REPORT_RESOLVE and
 * BLOCK (in a savepoint), PL_READ_REPORTS and READ_BLOCKS (store.h
 * invariants 12 and 14); sq_blocked_pair: 1 if a or b blocks the other,
 * 0 if not, W_FATAL. */
int  sq_job_report(sq_store *s, pl_job *j, int64_t now);
int  sq_read_reports(sq_reader *r, pl_job *j);
int  sq_blocked_pair(sq_store *s, int64_t a, int64_t b);
/* store_sqlite_life.c: the data lifecycle (store.h invariant 13):
 * PL_JOB_RETENTION_SET, HOLD_SET, RETENTION_PURGE, ACCOUNT_DELETE (in a
 * savepoint), and CONV_GET's retention and hold (sq_read_conv_life). */
int  sq_job_life(sq_store *s, pl_job *j, int64_t now);
int  sq_read_conv_life(sq_reader *r, pl_conv *c);
/* The writer's helpers, for the files above and the job files: in
 * store_sqlite_write.c unless noted. */
int  sq_w_fatal(sq_store *s, int rc, const char *what);
int  sq_w_member_role(sq_store *s, int64_t conv, int64_t user);  /* PL_ROLE_NONE if not */
pl_conv_state *sq_w_conv_state(sq_store *s, int64_t conv, int *err);
/* Appends an event (not a MESSAGE) as the job's last write; data taken over. */
int  sq_w_append(sq_store *s, pl_job *j, int64_t now, int64_t conv, int kind, int64_t sender,
                 int64_t subject, char *data);

/* A group, or with workspace a channel (the caller checked the workspace
 * and the name): GROUP_CREATE's work (store_sqlite_members.c). */
int  sq_w_group_create(sq_store *s, pl_job *j, int64_t now, int64_t workspace, int is_private);
/* Makes peer a member of conv with a MEMBER_ADDED by actor (has_event);
 * nothing if it is one (store_sqlite_members.c). */
int  sq_w_member_join(sq_store *s, pl_job *j, int64_t now, int64_t conv, int64_t actor, int64_t peer);
/* 1, 0, W_FATAL (deleted: 0) (store_sqlite_accounts.c) */
int  sq_w_user_exists(sq_store *s, int64_t user);
/* Erases the MESSAGE at (conv, seq) as a delete does, without an event
 * (store_sqlite_actions.c). */
int  sq_w_erase(sq_store *s, int64_t conv, int64_t seq, int64_t now);
/* No admin left among conv's members: the earliest-joined becomes one
 * (store_sqlite_members.c). */
int  sq_w_promote_if_needed(sq_store *s, int64_t conv);
/* A message an action targets, as the writer sees it. */
typedef struct sq_target {
    int     kind;
    int64_t sender, ts, deleted_ts, ref, pinned_ts;
    char   *body;                 /* owned; NULL when deleted               */
    size_t  body_len;
    int     role;                 /* the actor's                            */
} sq_target;
/* Loads j->user's membership and the target at seq with the checks every
 * message action makes (store.h: target errors; j->why set); t->body is
 * the caller's to free, also on failure. */
int  sq_w_target_load(sq_store *s, pl_job *j, int64_t seq, sq_target *t);
/* Kind of conv, 0 if it does not exist, or W_FATAL (store_sqlite_members.c). */
int  sq_w_conv_kind(sq_store *s, int64_t conv);
/* member_count of conv moves by d in the conversation map (the entry
 * exists: checked before). */
int  sq_w_member_count(sq_store *s, int64_t conv, int64_t d);
/* The send's helpers, for the message actions (store_sqlite_actions.c) and
 * the member jobs: the static functions of the same name without sq_
 * (store_sqlite_write.c says what each does). sq_w_append_full is w_append
 * with every parameter: the message an event refers to (ref), the
 * idempotency key (cmid, borrowed) and a body (borrowed); data taken over. */
int  sq_w_append_full(sq_store *s, pl_job *j, int64_t now, int64_t conv, int kind, int64_t sender,
                      int64_t subject, int64_t ref, const char *cmid, const char *body, size_t body_len,
                      char *data);
int  sq_w_mentions(sq_store *s, pl_job *j, const char *body, size_t len, int role, int64_t *ids, size_t *n,
                   int *all);
int  sq_w_mention_rows(sq_store *s, int64_t conv, int64_t seq, int64_t sender, const int64_t *ids, size_t n,
                       int all, int64_t parent_sender);
/* Runs sql with its parameters given by fmt, one letter each: 'i' an
 * int64_t, 't' a string (borrowed). 1 when it returned a row (*out =
 * column 0 when out), 0 when none, SQ_RUN_ERR on failure (SQLite's code in
 * *src). For rare jobs: the statement is prepared on use. */
#define SQ_RUN_ERR (-1000)
int  sq_run(sqlite3 *db, int *src, int64_t *out, const char *sql, const char *fmt, ...);
/* Prepares sql on db (a rare job's statement, finalized by the caller);
 * NULL on failure with *src set to SQLite's code. */
sqlite3_stmt *sq_prep(sqlite3 *db, const char *sql, int *src);

/* Copies column i as a new NUL-terminated string (NULL for SQL NULL). */
char *sq_col_text(sqlite3_stmt *st, int i, size_t *len);
/* A stored send of j->user with j->client_msg_id found, its row's seq, id
 * and ts in columns 0-2: j answers as SEND answers a retry (dup). */
void  sq_dup_event(pl_job *j, sqlite3_stmt *st);

#endif
