/* pg_int.h — shared inside the PostgreSQL backend (store_pg*.c) only.
 *
 * Owns: the backend's struct, its statement tables' names (their SQL:
 * store_pg_stmts_w.c, store_pg_stmts_r.c), the connection wrapper
 * (pipelined extended-protocol queries), parameter and array builders, and
 * the writer's per-batch conversation state. See store_pg.c for the design
 * note and its invariants.
 */
#ifndef PL_PG_INT_H
#define PL_PG_INT_H

#include <libpq-fe.h>
#include <stdint.h>

#include "pipeline.h"
#include "store_int.h"
#include "store.h"

#define PG_BATCH_MAX      4096   /* jobs per transaction                        */
#define PG_READERS        4      /* default reader threads                      */
#define PG_IDLE_MS        1000   /* writer idle tick: lease renewal, probes      */
#define PG_LEASE_TTL_S    10     /* node id lease lifetime                       */
#define PG_LEASE_RENEW_MS 2000   /* renew when the last renewal is this old      */
#define PG_BACKOFF_MIN_MS 100    /* reconnect backoff, doubling ...              */
#define PG_BACKOFF_MAX_MS 2000   /* ... up to this                               */
#define PG_RETRIES        3      /* batch retries after a deadlock/serialization */
#define PG_TAKEOVER_OWN_S 5      /* outbox rows of this node older than this ... */
#define PG_TAKEOVER_DEAD_S 2     /* ... or of dead nodes older than this are taken over */
#define PG_PIPE_MAX       32     /* queries in one round trip                    */
#define PG_MAXP           12     /* parameters of one statement                  */

/* Batch-level outcomes inside the writer (job-level ones are PL_STORE_E*). */
#define W_FATAL  (-100)          /* a statement failed: roll back, EUNAVAIL     */
#define W_RETRY  (-101)          /* deadlock / serialization failure: retry     */
#define W_LOST   (-102)          /* the connection is gone                      */
#define W_LEASE  (-103)          /* the node id lease is lost                   */

/* An internal read: reconnects an idle reader (see pg_probe_readers). */
#define PG_READ_PROBE 999

/* ---- writer statements -------------------------------------------------- */
enum {
    W_BEGIN, W_COMMIT, W_ROLLBACK, W_SAVEPOINT, W_RELEASE, W_ROLLBACK_TO,
    W_CONV_LOCK,
    W_USER_INSERT, W_LOGIN_INSERT, W_LOGIN_ROTATE, W_LOGIN_REVOKE,
    W_USERS_EXIST, W_CONV_BY_KEY, W_DIRECT_CREATE, W_GROUP_CREATE,
    W_MEMBER_CHECK, W_MEMBER_CHECK_ADD, W_MEMBER_JOIN, W_MEMBER_DELETE, W_PROMOTE, W_PROMOTE_WHO, W_EVENT_INSERT,
    W_MEMBER_OTHER_ADMIN, W_MEMBER_SET_ROLE, W_WS_OTHER_ADMIN, W_WS_SET_ROLE,
    W_SEND_DUPS, W_SEND_MEMBERS, W_SEND_PARENTS, W_SEND_NAMES, W_SEND_INSERT, W_SEND_INSERT_PUSH,
    W_MENTION_INSERT, W_MENTION_ALL, W_MENTION_ERASE,
    W_TARGET, W_MSG_EDIT, W_MSG_ERASE, W_EDITS_ERASE, W_REACTIONS_ERASE,
    W_REACT_STATE, W_REACT_ADD, W_REACT_DEL, W_PIN_COUNT, W_PIN_SET, W_NOTIFY_SET,
    W_RCPT_CURSORS, W_RCPT_LOOKUPS, W_RCPT_UPDATE,
    W_OWN_FLUSH, W_CONV_FLUSH, W_USERS_LOCK, W_LAST_SEEN,
    W_OUTBOX_INSERT, W_OUTBOX_ACK, W_OUTBOX_TAKEOVER,
    W_LEASE_RENEW, W_LEASE_TAKE, W_LEASE_ANY, W_LEASE_INFO, W_LEASE_RELEASE,
    /* end-to-end encryption (store_pg_keys.c) */
    W_KEYS_LOGIN_LOCK, W_KEYS_STATE, W_KEYS_DEVICE, W_KEYS_DROP, W_KEYS_ADD, W_KEYS_COUNT, W_KEYS_DELETE,
    W_KEYS_SHARES, W_KEYS_CLAIM_LOCK, W_KEYS_CLAIM, W_CONV_E2EE,
    W_MEDIA_LOCK, W_MEDIA_SUM, W_MEDIA_INSERT, W_MEDIA_THUMB, W_MEDIA_GC,   /* media (store_pg_media.c) */
    /* push notifications (store_pg_push.c) */
    W_PUSH_USER_LOCK, W_PUSH_STATE, W_PUSH_REGISTER, W_PUSH_UNREGISTER, W_PUSH_DROP, W_PUSH_CLAIM,
    W_PUSH_FINISH, W_PUSH_DEAD, W_PUSH_RETRY, W_PUSH_DRAINER, W_PUSH_UNLEASE,
    /* workspaces and channels (store_pg_ws.c) */
    W_CONV_LOCK_MORE, W_WS_LOCK, W_WS_STATE, W_WS_CONV, W_WS_INSERT, W_WS_FOUNDER, W_WS_JOIN, W_WS_LEAVE,
    W_WS_PROMOTE, W_WS_CHANNELS_OF, W_WS_IS_GENERAL, W_CHANNEL_KEYS, W_CHANNEL_CREATE,
    W_REPORT_TARGET, W_REPORT_INSERT, W_REPORT_REOPEN, W_REPORT_RESOLVE,   /* reports (store_pg_reports.c) */
    W_PAIR_LOCK, W_BLOCKED_PAIR, W_BLOCK_ADD, W_BLOCK_DEL, W_BLOCK_FLAG,   /* blocks (store_pg_reports.c) */
    /* the data lifecycle (store_pg_life.c) */
    W_LIFE_CONV_RETENTION, W_LIFE_WS_RETENTION, W_LIFE_CONV_HOLD, W_LIFE_WS_HOLD,
    W_LIFE_USER_LOCK, W_LIFE_USER_BUSY, W_LIFE_ACCOUNT_DELETE,
    W_PURGE_TOUCH, W_PURGE_CONVS, W_PURGE_SCAN, W_PURGE_ERASE, W_PURGE_MARK, W_PURGE_USERS,
    W__COUNT
};
extern const char *const pg_w_sql[W__COUNT];

/* ---- reader statements -------------------------------------------------- */
enum {
    R_BEGIN, R_COMMIT, R_ROLLBACK,
    R_USER_BY_NAME, R_USER_BY_ID, R_LOGIN, R_CONV_LIST, R_CONV_LIST_LAST, R_CONV_GET,
    R_CONV_MEMBERS, R_EVENTS_ASC, R_EVENTS_DESC, R_EVENTS_ASC_AS, R_EVENTS_DESC_AS,
    R_EVENT_AT_AS, R_USERS_VISIBLE, R_CONV_HEADS, R_MEMBERSHIPS,
    R_REACT_AT, R_MEMBER, R_PINS, R_REACT_PINS, R_MENTIONS, R_REACT_MENTIONS,
    R_SEARCH, R_USER_SEARCH,
    R_KEYS_SHARES, R_DEVICES,           /* end-to-end encryption (store_pg_keys.c) */
    R_MEDIA_GET, R_MEDIA_OWNED,         /* media (store_pg_media.c) */
    R_PUSH_DEVICES, R_PUSH_MSGS, R_PUSH_TARGETS, R_PUSH_ONLY, R_PUSH_BADGES, /* push notifications (store_pg_push.c) */
    R_WORKSPACES, R_WORKSPACE_GET, R_WS_MEMBERS, R_CHANNELS, R_CONV_WORKSPACE, /* workspaces (store_pg_ws.c) */
    R_SEND_CHECK,                                            /* store_pg_read.c */
    R_REPORT_ACCESS, R_REPORTS_CONV, R_REPORTS_OPEN, R_REPORTS_ALL, /* reports (store_pg_reports.c) */
    R_USER_MESSAGES, R_USER_MESSAGES_REACT,                      /* the data lifecycle (store_pg_life.c) */
    R_BLOCKS,                                                    /* blocks (store_pg_reports.c) */
    R__COUNT
};
extern const char *const pg_r_sql[R__COUNT];

/* ---- SQL fragments shared across files: SEARCH_BLANKS by the schema
 * (store_pg_schema.c) and R_SEARCH, PURGE_WS by both statement tables. */

/* The search text's translate() arguments: the snippet markers, '<', '>',
 * '&' and '/' become spaces, a final sigma a sigma (byte for byte; the
 * body, R_SEARCH's headline and its query alike; pl_store__snippet_restore
 * undoes it). */
#define SEARCH_BLANKS "E'\\x02\\x03<>&/\xcf\x82', '      \xcf\x83'"
/* a conversation c's workspace w (channels): the purge's (store_pg_stmts_w.c) and R_CONV_GET's */
#define PURGE_WS " LEFT JOIN workspaces w ON c.kind = 3 AND w.id = c.workspace"

/* ---- statement parameters ------------------------------------------------ */

/* Values of one statement. Integers go as text; bytea and arrays in binary.
 * Pointers are borrowed until the statement is sent (libpq copies them). */
typedef struct pg_params {
    int         n;
    const char *v[PG_MAXP];
    int         len[PG_MAXP];
    int         fmt[PG_MAXP];
    char        num[PG_MAXP][24];    /* text of the integer parameters       */
} pg_params;

void pg_param_i64(pg_params *p, int64_t x);
void pg_param_text(pg_params *p, const char *s);            /* NULL: SQL NULL    */
void pg_param_bytes(pg_params *p, const void *b, size_t n); /* bytea, binary     */

/* A one-dimensional array in PostgreSQL's binary format, built in place. */
typedef struct pg_arr {
    char    *buf;
    size_t   len, cap;
    uint32_t oid;          /* element type: PG_INT8, PG_TEXT, PG_BYTEA     */
    int32_t  n;            /* elements                                     */
    int      hasnull;
} pg_arr;
#define PG_BYTEA 17
#define PG_INT8  20
#define PG_TEXT  25

void pg_arr_start(pg_arr *a, uint32_t oid);     /* empties a, keeps its buffer */
void pg_arr_i64(pg_arr *a, int64_t x);
void pg_arr_bytes(pg_arr *a, const void *p, size_t n);   /* p NULL: NULL element */
void pg_arr_free(pg_arr *a);
void pg_param_arr(pg_params *p, pg_arr *a);        /* finishes a and adds it      */

/* ---- a connection: pipelined queries ----------------------------------- */

/* Every query goes through a pipeline: pgc_send() queues a prepared
 * statement, pgc_sync() sends the sync point and collects the results of
 * everything queued since the last one, in order. So the writer's trailing
 * statements (flushes, COMMIT) and a reader's BEGIN .. COMMIT cost one
 * round trip. After a failing statement the server skips the rest of the
 * pipeline; pgc_sync() reports the first failure. */
typedef struct pg_conn {
    PGconn             *pq;         /* NULL while down                         */
    const char *const  *sql;        /* statement table, prepared as <tag><i>   */
    int                 nsql;
    char                tag;        /* 'w' or 'r'                              */
    int                 nq;         /* queries queued since the last sync      */
    int                 qstmt[PG_PIPE_MAX];   /* statement of each             */
    unsigned char       want[PG_PIPE_MAX];    /* keep its result               */
    PGresult           *res[PG_PIPE_MAX];     /* kept results of the last sync */
    int                 nres;
    /* the first failure of the last sync */
    int                 err_slot;   /* -1: none                                */
    int                 err_stmt;
    char                sqlstate[6];
    char                errmsg[256];
} pg_conn;

#define PG_OK   0
#define PG_ERR  (-1)               /* a statement failed (see err_*)          */
#define PG_GONE (-2)               /* the connection is broken                */

/* Connects to url with the backend's settings; role 'w' or 'r' picks the
 * session settings. Does not prepare (see pgc_prepare). 0 or -1 with err. */
int  pgc_open(pg_conn *c, const char *url, char role, char *err, size_t errlen);
/* Prepares the statement table and enters pipeline mode. 0 or -1 with err. */
int  pgc_prepare(pg_conn *c, char *err, size_t errlen);
void pgc_close(pg_conn *c);
/* Queues statement stmt; returns its slot in the pipeline, or PG_GONE. */
int  pgc_send(pg_conn *c, int stmt, const pg_params *p, int want);
/* Syncs: PG_OK, PG_ERR or PG_GONE. Results of slots sent with want stay in
 * c->res[slot] until the next pgc_send after this sync. */
int  pgc_sync(pg_conn *c);
/* 1 if the last failure was a deadlock or serialization failure. */
int  pgc_retryable(const pg_conn *c);

/* Result helpers (text format). */
int64_t pg_i64(const PGresult *r, int row, int col);       /* NULL: 0         */
char   *pg_text(const PGresult *r, int row, int col, size_t *len);  /* NULL if NULL */
char   *pg_bytea(const PGresult *r, int row, int col, size_t *len); /* decoded   */
int     pg_null(const PGresult *r, int row, int col);

/* 1 if s is valid UTF-8 without NUL (what a text column accepts). */
int pg_utf8_ok(const char *s);
/* 1 if s[0..len) is valid UTF-8, NUL bytes allowed (what a message body
 * must be: the search index reads it as text, store.h invariant 8). */
int pg_utf8_ok_n(const char *s, size_t len);

/* ---- the writer's per-batch state --------------------------------------- */

typedef pl_conv_state pg_conv;   /* store_int.h */

typedef struct pg_store pg_store;

typedef struct pg_reader {
    pg_store   *s;
    pg_conn     c;
    int         up;               /* connected (mirrored in s->r_up)       */
    int64_t     next_try;         /* mono ms of the next reconnect attempt */
    int         backoff_ms;
    unsigned    seen_gen;         /* s->connect_gen when it last failed    */
} pg_reader;

struct pg_store {
    pl_store      base;            /* ops table; must stay first            */
    pl_pipeline  *pipe;
    char         *url;
    int           outbox;          /* record batches in bus_outbox          */
    int           push;            /* opts (store.h): a push_outbox row per MESSAGE */
    int64_t       large_group;     /* opts (store.h): @all needs an admin above */
    int64_t       edit_window_ms;  /* opts (store.h): 0, or how long edits may come */
    int64_t       ws_members;      /* opts.workspace_members (store.h invariant 11); 0: none */
    int64_t       ws_channels;     /* opts.workspace_channels; 0: none            */
    int64_t       retention;       /* opts.retention (store.h invariant 13), seconds; 0: none */
    char          owner[96];       /* this process's lease token            */
    pg_conn       w;               /* writer connection (writer thread)     */
    pg_reader    *readers;
    int           nreaders;
    /* writer thread only */
    pl_conv_map   convs;           /* the conversations the batch locked    */
    pl_own_map    own;       /* own_unread deltas of the open batch (store_int.h) */
    pl_idgen      ids;
    int64_t       last_ts;         /* ts of the previous batch, never less  */
    uint64_t      first_id;        /* snowflake of the batch's first append */
    int64_t       w_next_try;      /* mono ms of the next reconnect attempt */
    int           w_backoff_ms;
    unsigned      w_seen_gen;
    int64_t       lease_at;        /* mono ms the last renewal was sent     */
    int64_t       lease_next_try;  /* while lost: next re-acquire attempt   */
    int           lease_lost;
    int64_t       lease_logged;    /* mono ms of the last "lease lost" line  */
    int           commit_sent;     /* the open attempt sent its COMMIT      */
    int           lock_slot;       /* pipeline slot of the unsynced lock query, or -1 */
    pg_arr        arr[16];         /* scratch arrays                        */
    int64_t      *lockids;         /* scratch: conversations to lock        */
    size_t        lockids_cap;
    int64_t      *seen;            /* scratch: LAST_SEEN users and times    */
    size_t        nseen, seen_cap;
    /* any thread (atomics) */
    int           w_up;            /* writer connected                      */
    int           r_up;            /* readers connected                     */
    int           lease_ok;        /* !lease_lost, for healthy()            */
    unsigned      connect_gen;     /* bumped by every successful connect    */
    int           probes;          /* probe reads in flight                 */
    int           hold;            /* test hook: 1 wait, 2 the writer waits */
    /* writer thread only: push (store_pg_push.c) */
    int           push_drainer;    /* the writer's session holds PUSH_DRAINER_LOCK */
    unsigned      push_drainer_gen;/* ... taken on this connect_gen         */
};

/* Open addressing over int64 pairs (a, b) with an int value (-1: empty
 * slot); b may be a string's hash with the string compared by match. */
typedef struct pg_kset {
    int64_t *a, *b;
    int     *v;
    size_t   cap;
} pg_kset;

/* store_pg.c */
int  pg_w_connect(pg_store *s);                 /* writer: 0 or -1 (logged)  */
void pg_w_drop(pg_store *s, const char *why);   /* writer: close, back off   */
int  pg_lease_renew(pg_store *s);               /* 1 held, 0 lost, <0 W_*    */
int  pg_lease_reacquire(pg_store *s);           /* 0 held again, -1 not      */
void pg_probe_readers(pg_store *s);
/* store_pg_schema.c: brings the schema up to date at open, 0 or -1 (err) */
int  pg_migrate(PGconn *pq, char *err, size_t errlen);
/* store_pg_conn.c: logging (one line fit for a JSON log field) */
void pg_log_failure(int level, const pg_conn *c, const char *what);
void pg_clean_msg(char *dst, size_t n, const char *src);
/* store_pg_write.c: the batch and the writer's per-batch state */
void pg_run_batch(void *wctx, pl_job **jobs, size_t n);
void pg_idle(void *wctx);
static inline pg_conv *pg_conv_find(pg_store *s, int64_t conv) { return pl_conv_map_find(&s->convs, conv); }  /* NULL if not locked */
static inline pg_conv *pg_conv_put(pg_store *s, int64_t conv) { return pl_conv_map_put(&s->convs, conv); }  /* may move slots */
void     pg_kset_init(pg_kset *k, size_t n);
void     pg_kset_free(pg_kset *k);
/* The slot of (a, b): k->v[slot] is -1 when new; match(arg, v) decides
 * equality beyond (a, b) (NULL: none). */
size_t   pg_kset_slot(pg_kset *k, int64_t a, int64_t b, int (*match)(void *, int), void *arg);
uint64_t pg_str_hash(const char *p);
int      pg_cmp_i64(const void *a, const void *b);         /* qsort */
/* Queues a statement on the writer: its slot, or W_LOST. */
int      pg_w_send(pg_store *s, int stmt, const pg_params *p, int want);
/* Syncs the writer's pipeline: PL_STORE_OK or W_LOST / W_RETRY / W_FATAL.
 * The first sync of a batch also fills the map from the lock query. */
int      pg_w_sync(pg_store *s);
/* Syncs if the lock query's rows are not in the map yet: call before
 * pg_conv_find unless a sync happened since the batch began. */
int      pg_w_locked(pg_store *s);
/* One statement now (with what was queued before it): its result, or NULL
 * with *rc set. */
PGresult *pg_w_query(pg_store *s, int stmt, const pg_params *p, int *rc);
void     pg_reset_outputs(pl_job *j);
/* An event the batch appended to e at seq (its INSERT succeeded or is
 * queued in the batch): the map moves and the job's event is filled; data
 * is taken over. */
void     pg_appended(pg_store *s, pg_conv *e, pl_job *j, int64_t seq, uint64_t id, int64_t now,
                     int kind, int64_t sender, int64_t subject, const char *cmid, const char *body,
                     size_t body_len, char *data);
/* A job's one write and its event, in a SAVEPOINT: stmt with p (none when
 * stmt < 0), then e's next event (kind, by j->user, about subject, data
 * taken over), one round trip; on success the event is appended
 * (pg_appended) and j->created set. W_LOST, or pg_sp_failed's answer. */
int      pg_write_and_append(pg_store *s, pl_job *j, pg_conv *e, int stmt, const pg_params *p, int kind,
                             int64_t subject, char *data, int64_t now);
/* store_pg_jobs.c: one job that is neither a send nor a receipt */
int  pg_run_job(pg_store *s, pl_job *j, int64_t now);
/* A conversation this batch created (its row holds its final counters and
 * the batch appended its CREATED event): its new map entry. */
pg_conv *pg_conv_created(pg_store *s, int64_t conv, int kind, int64_t members);
int64_t pg_cmd_tuples(const PGresult *r);
/* Parameters of W_EVENT_INSERT for an event at e's next seq (not a
 * MESSAGE: msg_no stays); body may be NULL. */
void pg_event_params(pg_params *p, const pg_conv *e, uint64_t id, int64_t now, int kind, int64_t sender,
                     int64_t subject, const char *data, int64_t ref, const char *body, size_t body_len);
/* After a failed round trip holding [.. SAVEPOINT at sp .. the job's
 * statements]: the job fails alone (EUNAVAIL) if a statement after the
 * savepoint failed, else the batch does (rc). */
int  pg_sp_failed(pg_store *s, pl_job *j, int sp, int rc);
/* store_pg_actions.c: edit, delete, reaction, pin, notification level */
int  pg_run_action(pg_store *s, pl_job *j, int64_t now);
/* store_pg_runs.c: n consecutive sends / receipts */
int  pg_run_sends(pg_store *s, pl_job **jobs, size_t n, int64_t now);
int  pg_run_receipts(pg_store *s, pl_job **jobs, size_t n);
/* store_pg_read.c */
void pg_run_read(void *rctx, pl_job *j);
/* A row of CONV_COLUMNS (store_pg_stmts_r.c) into c (zeroed first). */
void pg_conv_row(const PGresult *res, int row, pl_conv *c);
/* A row of EV_COLUMNS (store_pg_stmts_r.c) from column k into e, in its current form
 * (store.h invariant 6), its reactions from rows [lo, hi) of react (NULL:
 * none; columns seq, emoji, count, me from column col on, by seq). */
void pg_event_row(const PGresult *res, int row, int k, int64_t conv, const PGresult *react, int lo, int hi,
                  int col, pl_event *e);
/* One reader statement now: its result, or NULL with *rc set. */
PGresult *pg_r_query(pg_reader *r, int stmt, const pg_params *p, int *rc);
/* Syncs what a read queued (pgc_send): PL_STORE_OK, EUNAVAIL (logged; an
 * open transaction rolled back) or W_LOST. */
int pg_r_sync(pg_reader *r);

/* ---- end-to-end encryption (store.h invariant 9): store_pg_keys.c -------- */
int  pg_job_e2ee(pg_store *s, pl_job *j, int64_t now);   /* KEYS_*, CONV_E2EE, DEVICES_ANNOUNCE */
int  pg_read_devices(pg_reader *r, pl_job *j);           /* PL_READ_DEVICES */
int  pg_job_media(pg_store *s, pl_job *j, int64_t now);   /* PL_JOB_MEDIA_* */
int  pg_read_media(pg_reader *r, pl_job *j);             /* PL_READ_MEDIA_GET */
/* ---- push notifications (store.h invariant 10): store_pg_push.c ---------- */
int  pg_job_push(pg_store *s, pl_job *j, int64_t now);   /* PL_JOB_PUSH_* */
int  pg_read_push(pg_reader *r, pl_job *j);              /* PL_READ_PUSH_DEVICES, _TARGETS */
/* The role of user in conv (PL_ROLE_NONE: not a member), one round trip
 * (store_pg_jobs.c); PL_STORE_OK or a W_* code. */
int  pg_member_role(pg_store *s, int64_t conv, int64_t user, int *role);
/* peer joins e, added by j->user (store_pg_jobs.c): in one savepoint and
 * one round trip, statement pre (pre_p; -1: none), then with join its
 * members row (joined_seq = the event's seq) and the MEMBER_ADDED event at
 * e's next seq, then statement post (-1: none); after the sync, e's counts
 * move and j's event is filled. PL_STORE_OK, W_LOST or the savepoint's
 * failure (pg_sp_failed). */
int  pg_member_join(pg_store *s, pl_job *j, pg_conv *e, int64_t peer, int64_t now, int join, int pre,
                    const pg_params *pre_p, int post, const pg_params *post_p);
/* ---- workspaces and channels (store.h invariant 11): store_pg_ws.c ------- */
int  pg_job_ws(pg_store *s, pl_job *j, int64_t now);     /* WORKSPACE_*, CHANNEL_* */
int  pg_read_ws(pg_reader *r, pl_job *j);                /* READ_WORKSPACES, _WORKSPACE_GET, _CHANNELS */
/* The workspace whose row a job locks at the start of its batch (0: none),
 * and with_general: whether its "general" channel is locked with the
 * batch's conversations (store_pg_write.c w_begin). */
int64_t pg_ws_lock_of(const pl_job *j, int *with_general);
/* For MEMBER_ADD to a channel and MEMBER_REMOVE with PL_JOB_EVICT (conv
 * locked): whether user is a member of conv's workspace (*in_ws), the row
 * kept from a removal until COMMIT. PL_STORE_OK or a W_* code. */
int  pg_ws_member_of_conv(pg_store *s, int64_t conv, int64_t user, int *in_ws);   /* *in_ws: the pl_role */
/* 1 in *general if conv is a workspace's "general" (no member leaves it,
 * nor is removed from it but with its workspace). */
int  pg_ws_is_general(pg_store *s, int64_t conv, int *general);

/* ---- moderation (store.h invariants 12 and 14): store_pg_reports.c ------- */
int  pg_job_report(pg_store *s, pl_job *j, int64_t now); /* REPORT, REPORT_RESOLVE, BLOCK */
int  pg_read_reports(pg_reader *r, pl_job *j);           /* READ_REPORTS, READ_BLOCKS */
/* 1 and the direct_key of its pair into key if j is a BLOCK whose pair's
 * direct conversation its batch locks at the start (store_pg_write.c
 * w_begin), else 0. */
int  pg_block_key(const pl_job *j, char key[48]);

/* ---- the data lifecycle (store.h invariant 13): store_pg_life.c ----------- */
int  pg_job_life(pg_store *s, pl_job *j, int64_t now);   /* RETENTION_SET, HOLD_SET, RETENTION_PURGE, ACCOUNT_DELETE */
int  pg_read_life(pg_reader *r, pl_job *j);              /* READ_USER_MESSAGES */

/* Test hooks: with hold on, the writer's next batch waits (held() says it
 * is waiting) until hold is off, then fails with EUNAVAIL without touching
 * the database; so a test can queue an exact batch behind it. */
void pl_store_pg__hold(pl_store *s, int on);
int  pl_store_pg__held(pl_store *s);

#endif
