/* store_sqlite.c — the SQLite backend of store.h.
 *
 * Owns: the database file <dir>/parley.db, its schema and migrations, the
 * writer thread with its group-commit pipeline, the in-memory map of each
 * conversation's last seq, and the read connection used by the synchronous
 * reads.
 * Does not own: the jobs (the caller's until done() runs), the event loop
 * (notify() is the caller's way to be woken), JSON for the wire.
 *
 * ---- The commit pipeline -------------------------------------------------
 *
 *   loop thread                 writer thread                 loop thread
 *   pl_store_submit()           writer_main()                 sq_drain()
 *      |                           |                             |
 *      v                           v                             v
 *   [queue] --(cond signal)--> take <= BATCH_MAX jobs       pop [done], run
 *   (mu)                       BEGIN IMMEDIATE              job->done() in
 *                              run every job                submission order
 *                              flush dirty last_seq rows
 *                              COMMIT (one fsync) ------> [done] (mu) + notify()
 *                              or ROLLBACK + EUNAVAIL
 *
 * A job moves: queued (sq_submit) -> taken (writer_main) -> completed
 * (run_batch sets result) -> done-queued (writer_main) -> done (sq_drain).
 *
 * Invariants:
 *   1. Only the writer thread touches wdb, the w[] statements, the seq map,
 *      the id generator and `broken`. Only the loop thread touches rdb and
 *      the r[] statements. `mu` guards the two queues, `stopping` and
 *      `fail_commits`.
 *   2. A job is in the done-queue only after the COMMIT of its batch returned
 *      SQLITE_DONE on a connection with synchronous=FULL (the WAL was
 *      fsync'd), or with result PL_STORE_EUNAVAIL.
 *   3. seqs[conv].last_seq is the highest seq of conv inside the open
 *      transaction. It is bumped only after the event row was inserted, and
 *      written to conversations.last_seq (flush_dirty) before COMMIT, so the
 *      row and the log can never disagree after a crash. Any batch failure
 *      clears the whole map (it is reloaded lazily from the table).
 *   4. A job that fails on its own writes nothing: sends check membership
 *      and the idempotency key before their first write (no savepoint on the
 *      hot path); the rarer multi-statement jobs check first and also run in
 *      a savepoint; single-statement jobs rely on SQLite's statement
 *      atomicity (a constraint failure undoes only that statement). In every
 *      job the event append is the last write, so a rolled-back job never
 *      moved the seq map.
 *   5. After a failure at batch level (anything once BEGIN succeeded), the
 *      store is broken for good: the database state after a failed write or
 *      fsync is unknown, so nothing is acknowledged any more. A batch that
 *      was not committed but whose frames did reach the disk may reappear
 *      after a restart; its jobs were never acknowledged, and a client that
 *      retries a send gets the stored event back through the idempotency
 *      key.
 *
 * Known limits: the seq map grows with the number of conversations written
 * since start (32 bytes each at <= 50% load); unread counts scan the
 * conversation's events above the read cursor (bounded by the PK range but
 * not capped).
 */
#include "store.h"

#include "../core/alloc.h"
#include "../core/clock.h"
#include "../core/log.h"
#include "../core/metrics.h"

#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define BATCH_MAX       4096   /* jobs per transaction                      */
#define BUSY_TIMEOUT_MS 5000   /* another process holding the write lock    */
#define W_FATAL         (-100) /* internal: the whole batch must fail       */

/* Measured with 1000-send batches into 100 conversations:
 * each batch dirties about two leaf pages per conversation (events and the
 * idempotency index). A 64 MiB page cache stops the writer re-reading them
 * from the WAL, and checkpointing every 10000 pages (WAL <= ~40 MiB) instead
 * of 1000 copies each hot page once per many batches: 66k -> 90k sends/s,
 * with the same worst-case commit latency (~25 ms). */
#define WRITER_TUNING "PRAGMA cache_size = -65536; PRAGMA wal_autocheckpoint = 10000;"

/* ---- schema and migrations ---------------------------------------------- */

/* migrations[v] takes a database from user_version v to v + 1. Append only. */
static const char *const migrations[] = {
    /* 0 -> 1 */
    "CREATE TABLE users("
    "  id INTEGER PRIMARY KEY,"
    "  username TEXT NOT NULL UNIQUE,"
    "  pwhash TEXT NOT NULL,"
    "  created INTEGER NOT NULL);"
    "CREATE TABLE logins("
    "  id INTEGER PRIMARY KEY,"
    "  user_id INTEGER NOT NULL,"
    "  refresh_hash BLOB NOT NULL,"
    "  expires INTEGER NOT NULL,"
    "  revoked INTEGER NOT NULL DEFAULT 0,"
    "  created INTEGER NOT NULL);"
    "CREATE INDEX logins_user ON logins(user_id);"
    "CREATE TABLE conversations("
    "  id INTEGER PRIMARY KEY,"
    "  kind INTEGER NOT NULL,"
    "  title TEXT,"
    "  direct_key TEXT UNIQUE,"          /* "<min>:<max>" user ids, direct only */
    "  last_seq INTEGER NOT NULL DEFAULT 0,"
    "  last_ts INTEGER NOT NULL DEFAULT 0,"
    "  next_join INTEGER NOT NULL DEFAULT 0," /* next members.joined value */
    "  created INTEGER NOT NULL);"
    "CREATE TABLE members("
    "  conv_id INTEGER NOT NULL,"
    "  user_id INTEGER NOT NULL,"
    "  role INTEGER NOT NULL,"
    "  joined INTEGER NOT NULL,"           /* order of joining in the conv */
    "  delivered_seq INTEGER NOT NULL DEFAULT 0,"
    "  read_seq INTEGER NOT NULL DEFAULT 0,"
    "  PRIMARY KEY(conv_id, user_id)) WITHOUT ROWID;"
    "CREATE INDEX members_user ON members(user_id, conv_id);"
    "CREATE TABLE events("
    "  conv_id INTEGER NOT NULL,"
    "  seq INTEGER NOT NULL,"
    "  id INTEGER NOT NULL,"
    "  ts INTEGER NOT NULL,"
    "  kind INTEGER NOT NULL,"
    "  sender INTEGER NOT NULL,"
    "  client_msg_id TEXT,"
    "  body TEXT,"
    "  data TEXT,"
    "  PRIMARY KEY(conv_id, seq)) WITHOUT ROWID;"
    "CREATE UNIQUE INDEX events_idem ON events(conv_id, sender, client_msg_id)"
    "  WHERE client_msg_id IS NOT NULL;",
    /* 1 -> 2: presence's last seen survives restarts */
    "ALTER TABLE users ADD COLUMN last_seen INTEGER NOT NULL DEFAULT 0;",
};
#define SCHEMA_VERSION ((int)(sizeof migrations / sizeof migrations[0]))

/* ---- prepared statements ------------------------------------------------ */

enum {
    W_BEGIN, W_COMMIT, W_ROLLBACK, W_SAVEPOINT, W_RELEASE, W_ROLLBACK_TO,
    W_USER_INSERT, W_USER_EXISTS,
    W_LOGIN_INSERT, W_LOGIN_ROTATE, W_LOGIN_REVOKE,
    W_CONV_BY_KEY, W_CONV_INSERT, W_CONV_KIND, W_CONV_SEQ, W_CONV_UPDATE,
    W_CONV_NEXT_JOIN,
    W_MEMBER_ROLE, W_MEMBER_INSERT, W_MEMBER_DELETE, W_MEMBER_HAS_ADMIN,
    W_MEMBER_OLDEST, W_MEMBER_SET_ROLE,
    W_EVENT_DUP, W_EVENT_INSERT,
    W_MEMBER_CURSORS, W_MEMBER_SET_CURSORS, W_UNREAD, W_USER_LAST_SEEN,
    W__COUNT
};

static const char *const w_sql[W__COUNT] = {
    [W_BEGIN]       = "BEGIN IMMEDIATE",
    [W_COMMIT]      = "COMMIT",
    [W_ROLLBACK]    = "ROLLBACK",
    [W_SAVEPOINT]   = "SAVEPOINT job",
    [W_RELEASE]     = "RELEASE job",
    [W_ROLLBACK_TO] = "ROLLBACK TO job",
    [W_USER_INSERT] = "INSERT INTO users(username, pwhash, created) VALUES(?1, ?2, ?3)",
    [W_USER_EXISTS] = "SELECT 1 FROM users WHERE id = ?1",
    [W_LOGIN_INSERT] = "INSERT INTO logins(user_id, refresh_hash, expires, revoked, created)"
                       " VALUES(?1, ?2, ?3, 0, ?4)",
    [W_LOGIN_ROTATE] = "UPDATE logins SET refresh_hash = ?1, expires = ?2"
                       " WHERE id = ?3 AND revoked = 0 AND expires > ?4 AND refresh_hash = ?5",
    [W_LOGIN_REVOKE] = "UPDATE logins SET revoked = 1 WHERE id = ?1",
    [W_CONV_BY_KEY] = "SELECT id FROM conversations WHERE direct_key = ?1",
    [W_CONV_INSERT] = "INSERT INTO conversations(kind, title, direct_key, last_seq, last_ts,"
                      " next_join, created) VALUES(?1, ?2, ?3, 0, 0, ?4, ?5)",
    [W_CONV_KIND]   = "SELECT kind FROM conversations WHERE id = ?1",
    [W_CONV_SEQ]    = "SELECT last_seq FROM conversations WHERE id = ?1",
    [W_CONV_UPDATE] = "UPDATE conversations SET last_seq = ?1, last_ts = ?2 WHERE id = ?3",
    [W_CONV_NEXT_JOIN] = "UPDATE conversations SET next_join = next_join + 1 WHERE id = ?1"
                         " RETURNING next_join - 1",
    [W_MEMBER_ROLE] = "SELECT role FROM members WHERE conv_id = ?1 AND user_id = ?2",
    [W_MEMBER_INSERT] = "INSERT INTO members(conv_id, user_id, role, joined) VALUES(?1, ?2, ?3, ?4)",
    [W_MEMBER_DELETE] = "DELETE FROM members WHERE conv_id = ?1 AND user_id = ?2",
    [W_MEMBER_HAS_ADMIN] = "SELECT 1 FROM members WHERE conv_id = ?1 AND role = 2 LIMIT 1",
    [W_MEMBER_OLDEST] = "SELECT user_id FROM members WHERE conv_id = ?1 ORDER BY joined LIMIT 1",
    [W_MEMBER_SET_ROLE] = "UPDATE members SET role = ?1 WHERE conv_id = ?2 AND user_id = ?3",
    [W_EVENT_DUP]   = "SELECT seq, id, ts, body FROM events"
                      " WHERE conv_id = ?1 AND sender = ?2 AND client_msg_id = ?3",
    [W_EVENT_INSERT] = "INSERT INTO events(conv_id, seq, id, ts, kind, sender, client_msg_id,"
                       " body, data) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    [W_MEMBER_CURSORS] = "SELECT delivered_seq, read_seq FROM members WHERE conv_id = ?1 AND user_id = ?2",
    [W_MEMBER_SET_CURSORS] = "UPDATE members SET delivered_seq = ?1, read_seq = ?2"
                             " WHERE conv_id = ?3 AND user_id = ?4",
    [W_UNREAD]      = "SELECT count(*) FROM events WHERE conv_id = ?1 AND seq > ?2"
                      " AND kind = 2 AND sender <> ?3",
    [W_USER_LAST_SEEN] = "UPDATE users SET last_seen = ?1 WHERE id = ?2 AND last_seen < ?1",
};

enum {
    R_USER_BY_NAME, R_USER_BY_ID, R_LOGIN, R_CONV_LIST, R_CONV_GET,
    R_CONV_MEMBERS, R_MEMBER_ROLE, R_MEMBERS, R_EVENTS_ASC, R_EVENTS_DESC,
    R_SHARES,
    R__COUNT
};

/* unread: MESSAGE events (kind 2) from others above the read cursor, found
 * through the (conv_id, seq) primary key range. */
#define CONV_COLUMNS \
    "c.id, c.kind, c.title, c.last_seq, c.last_ts, m.read_seq, m.role," \
    " (SELECT count(*) FROM events e WHERE e.conv_id = c.id AND e.seq > m.read_seq" \
    "  AND e.kind = 2 AND e.sender <> m.user_id)"
#define EVENT_COLUMNS "seq, id, ts, kind, sender, client_msg_id, body, data"

static const char *const r_sql[R__COUNT] = {
    [R_USER_BY_NAME] = "SELECT id, username, pwhash, last_seen FROM users WHERE username = ?1",
    [R_USER_BY_ID]   = "SELECT id, username, pwhash, last_seen FROM users WHERE id = ?1",
    [R_LOGIN]        = "SELECT id, user_id, refresh_hash, expires, revoked FROM logins WHERE id = ?1",
    [R_CONV_LIST]    = "SELECT " CONV_COLUMNS " FROM members m"
                       " JOIN conversations c ON c.id = m.conv_id"
                       " WHERE m.user_id = ?1 ORDER BY c.last_ts DESC, c.id DESC",
    [R_CONV_GET]     = "SELECT " CONV_COLUMNS " FROM members m"
                       " JOIN conversations c ON c.id = m.conv_id"
                       " WHERE m.conv_id = ?1 AND m.user_id = ?2",
    [R_CONV_MEMBERS] = "SELECT m.user_id, m.role, m.delivered_seq, m.read_seq, u.username"
                       " FROM members m JOIN users u ON u.id = m.user_id"
                       " WHERE m.conv_id = ?1 ORDER BY m.joined",
    [R_MEMBER_ROLE]  = "SELECT role FROM members WHERE conv_id = ?1 AND user_id = ?2",
    [R_MEMBERS]      = "SELECT user_id FROM members WHERE conv_id = ?1",
    [R_EVENTS_ASC]   = "SELECT " EVENT_COLUMNS " FROM events"
                       " WHERE conv_id = ?1 AND seq > ?2 AND seq < ?3 ORDER BY seq LIMIT ?4",
    [R_EVENTS_DESC]  = "SELECT " EVENT_COLUMNS " FROM events"
                       " WHERE conv_id = ?1 AND seq > ?2 AND seq < ?3 ORDER BY seq DESC LIMIT ?4",
    [R_SHARES]       = "SELECT 1 FROM members a JOIN members b ON b.conv_id = a.conv_id"
                       " AND b.user_id = ?2 WHERE a.user_id = ?1 LIMIT 1",
};

/* ---- the seq map: conversation id -> last seq (writer only) ------------ */

typedef struct seq_ent {
    int64_t conv;      /* key; 0 marks an empty slot                     */
    int64_t last_seq;  /* highest seq inside the open transaction        */
    int64_t last_ts;   /* ts of that event, flushed with last_seq        */
    int     dirty;     /* listed in sq_store.dirty, not yet flushed      */
} seq_ent;

typedef struct seq_map {
    seq_ent *tab;      /* open addressing, linear probing                */
    size_t   cap;      /* power of two, 0 before first insert            */
    size_t   len;      /* used slots, kept <= cap / 2                    */
} seq_map;

static size_t seq_slot(const seq_map *m, int64_t conv) {
    uint64_t h = (uint64_t)conv * 0x9e3779b97f4a7c15ull;
    return (size_t)(h ^ (h >> 32)) & (m->cap - 1);
}

static seq_ent *seq_find(seq_map *m, int64_t conv) {
    if (!m->cap) return NULL;
    for (size_t i = seq_slot(m, conv);; i = (i + 1) & (m->cap - 1)) {
        if (m->tab[i].conv == conv) return &m->tab[i];
        if (m->tab[i].conv == 0) return NULL;
    }
}

/* Returns the slot for conv, a new zeroed one if absent. May move slots. */
static seq_ent *seq_put(seq_map *m, int64_t conv) {
    seq_ent *e = seq_find(m, conv);
    if (e) return e;
    if ((m->len + 1) * 2 > m->cap) {
        seq_map old = *m;
        m->cap = old.cap ? old.cap * 2 : 256;
        m->tab = pl_calloc(m->cap, sizeof *m->tab);
        m->len = 0;
        for (size_t i = 0; i < old.cap; i++) {
            if (!old.tab[i].conv) continue;
            size_t k = seq_slot(m, old.tab[i].conv);
            while (m->tab[k].conv) k = (k + 1) & (m->cap - 1);
            m->tab[k] = old.tab[i];
            m->len++;
        }
        free(old.tab);
    }
    size_t i = seq_slot(m, conv);
    while (m->tab[i].conv) i = (i + 1) & (m->cap - 1);
    m->tab[i].conv = conv;
    m->len++;
    return &m->tab[i];
}

static void seq_clear(seq_map *m) {
    if (m->cap) memset(m->tab, 0, m->cap * sizeof *m->tab);
    m->len = 0;
}

/* ---- the store ----------------------------------------------------------- */

typedef struct sq_store {
    pl_store      base;              /* ops table; must stay first            */
    void        (*notify)(void *);   /* wakes the loop; writer thread calls it */
    void         *notify_arg;
    sqlite3      *wdb;               /* writer connection (writer thread)     */
    sqlite3      *rdb;               /* read connection (loop thread)         */
    sqlite3_stmt *w[W__COUNT];       /* cached statements on wdb              */
    sqlite3_stmt *r[R__COUNT];       /* cached statements on rdb              */
    pthread_t     writer;
    int           writer_started;    /* writer must be joined on close        */
    pthread_mutex_t mu;              /* guards the fields down to fail_commits */
    pthread_cond_t  cv;              /* signalled on submit and on stop       */
    pl_job       *q_head, *q_tail;   /* submitted, not yet taken              */
    pl_job       *d_head, *d_tail;   /* completed, not yet drained            */
    int           stopping;          /* close() started: no more batches      */
    int           fail_commits;      /* fault hook: commits left to fail      */
    /* writer thread only */
    int           broken;            /* sticky: a batch failed after BEGIN    */
    int           fatal_rc;          /* SQLite code of the batch's failure    */
    const char   *fatal_what;        /* which step failed (static string)     */
    seq_map       seqs;              /* conv -> last seq (invariant 3)        */
    int64_t      *dirty;             /* convs whose last_seq moved this batch */
    size_t        ndirty, dirty_cap;
    pl_idgen      ids;               /* message ids                           */
    int64_t       last_ts;           /* ts of the previous batch, never less  */
} sq_store;

static const pl_store_ops sq_ops;

static void job_reset_outputs(pl_job *j) {
    j->result = PL_STORE_OK;
    j->out_id = 0;
    j->created = 0;
    j->dup = 0;
    j->has_event = 0;
    j->out_delivered = j->out_read = j->out_unread = 0;
    memset(&j->event, 0, sizeof j->event);
}

static char *col_text(sqlite3_stmt *st, int i) {
    if (sqlite3_column_type(st, i) == SQLITE_NULL) return NULL;
    const unsigned char *t = sqlite3_column_text(st, i);
    size_t n = (size_t)sqlite3_column_bytes(st, i);
    char *p = pl_malloc(n + 1);
    if (n) memcpy(p, t, n);
    p[n] = '\0';
    return p;
}

static char *copy_bytes(const char *s, size_t n) {
    char *p = pl_malloc(n + 1);
    if (n) memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

/* ---- writer: statement helpers ----------------------------------------- */

/* Records why the batch must fail and returns W_FATAL. */
static int w_fatal(sq_store *s, int rc, const char *what) {
    s->fatal_rc = rc;
    s->fatal_what = what;
    return W_FATAL;
}

static int w_exec(sq_store *s, int id) {
    int rc = sqlite3_step(s->w[id]);
    sqlite3_reset(s->w[id]);
    return rc == SQLITE_DONE ? PL_STORE_OK : w_fatal(s, rc, w_sql[id]);
}

/* Steps a bound one-row lookup: 1 with *out = column 0 when a row exists,
 * 0 when none, W_FATAL on error. Resets the statement. */
static int w_lookup(sq_store *s, int id, int64_t *out) {
    sqlite3_stmt *st = s->w[id];
    int rc = sqlite3_step(st);
    int found = rc == SQLITE_ROW;
    if (found && out) *out = sqlite3_column_int64(st, 0);
    sqlite3_reset(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) return w_fatal(s, rc, w_sql[id]);
    return found;
}

/* Steps a bound write: PL_STORE_OK, ECONFLICT on a constraint (the statement
 * was undone by SQLite, the transaction goes on), W_FATAL otherwise. */
static int w_write(sq_store *s, int id) {
    int rc = sqlite3_step(s->w[id]);
    sqlite3_reset(s->w[id]);
    if (rc == SQLITE_DONE) return PL_STORE_OK;
    if ((rc & 0xff) == SQLITE_CONSTRAINT) return PL_STORE_ECONFLICT;
    return w_fatal(s, rc, w_sql[id]);
}

static int w_user_exists(sq_store *s, int64_t user) {
    sqlite3_bind_int64(s->w[W_USER_EXISTS], 1, user);
    return w_lookup(s, W_USER_EXISTS, NULL);
}

/* Role of user in conv (PL_ROLE_NONE if not a member) or W_FATAL. */
static int w_member_role(sq_store *s, int64_t conv, int64_t user) {
    int64_t role = PL_ROLE_NONE;
    sqlite3_bind_int64(s->w[W_MEMBER_ROLE], 1, conv);
    sqlite3_bind_int64(s->w[W_MEMBER_ROLE], 2, user);
    int rc = w_lookup(s, W_MEMBER_ROLE, &role);
    return rc < 0 ? rc : rc ? (int)role : PL_ROLE_NONE;
}

/* Kind of conv, 0 if it does not exist, or W_FATAL. */
static int w_conv_kind(sq_store *s, int64_t conv) {
    int64_t kind = 0;
    sqlite3_bind_int64(s->w[W_CONV_KIND], 1, conv);
    int rc = w_lookup(s, W_CONV_KIND, &kind);
    return rc < 0 ? rc : rc ? (int)kind : 0;
}

static int w_member_insert(sq_store *s, int64_t conv, int64_t user, int role, int64_t joined) {
    sqlite3_stmt *st = s->w[W_MEMBER_INSERT];
    sqlite3_bind_int64(st, 1, conv);
    sqlite3_bind_int64(st, 2, user);
    sqlite3_bind_int(st, 3, role);
    sqlite3_bind_int64(st, 4, joined);
    return w_write(s, W_MEMBER_INSERT);
}

/* Inserts a conversation row; *conv gets its id. */
static int w_conv_insert(sq_store *s, int kind, const char *title, const char *key,
                         int64_t next_join, int64_t now, int64_t *conv) {
    sqlite3_stmt *st = s->w[W_CONV_INSERT];
    sqlite3_bind_int(st, 1, kind);
    if (title) sqlite3_bind_text(st, 2, title, -1, SQLITE_STATIC);
    else sqlite3_bind_null(st, 2);
    if (key) sqlite3_bind_text(st, 3, key, -1, SQLITE_STATIC);
    else sqlite3_bind_null(st, 3);
    sqlite3_bind_int64(st, 4, next_join);
    sqlite3_bind_int64(st, 5, now);
    int rc = w_write(s, W_CONV_INSERT);
    if (rc == PL_STORE_OK) *conv = sqlite3_last_insert_rowid(s->wdb);
    return rc;
}

/* The seq map entry of conv, loaded from conversations.last_seq on a miss;
 * NULL with *err = ENOTFOUND or W_FATAL. */
static seq_ent *w_seq_get(sq_store *s, int64_t conv, int *err) {
    seq_ent *e = seq_find(&s->seqs, conv);
    if (e) return e;
    int64_t last = 0;
    sqlite3_bind_int64(s->w[W_CONV_SEQ], 1, conv);
    int rc = w_lookup(s, W_CONV_SEQ, &last);
    if (rc <= 0) {
        *err = rc < 0 ? rc : PL_STORE_ENOTFOUND;
        return NULL;
    }
    e = seq_put(&s->seqs, conv);
    e->last_seq = last;
    return e;
}

/* Appends an event with conv's next seq and fills job->event. data is taken
 * over (freed on failure). The append is the last write of every job. */
static int w_append(sq_store *s, pl_job *j, int64_t now, int64_t conv, int kind,
                    int64_t sender, const char *cmid, const char *body, size_t body_len,
                    char *data) {
    int err = PL_STORE_OK;
    seq_ent *e = w_seq_get(s, conv, &err);
    if (!e) { free(data); return err; }
    int64_t seq = e->last_seq + 1;
    uint64_t id = pl_idgen_next(&s->ids, now);
    sqlite3_stmt *st = s->w[W_EVENT_INSERT];
    sqlite3_bind_int64(st, 1, conv);
    sqlite3_bind_int64(st, 2, seq);
    sqlite3_bind_int64(st, 3, (int64_t)id);
    sqlite3_bind_int64(st, 4, now);
    sqlite3_bind_int(st, 5, kind);
    sqlite3_bind_int64(st, 6, sender);
    if (cmid) sqlite3_bind_text(st, 7, cmid, -1, SQLITE_STATIC);
    else sqlite3_bind_null(st, 7);
    if (body) sqlite3_bind_text(st, 8, body, (int)body_len, SQLITE_STATIC);
    else sqlite3_bind_null(st, 8);
    if (data) sqlite3_bind_text(st, 9, data, -1, SQLITE_STATIC);
    else sqlite3_bind_null(st, 9);
    int rc = w_write(s, W_EVENT_INSERT);
    if (rc != PL_STORE_OK) {
        free(data);
        if (rc == PL_STORE_ECONFLICT) {   /* cannot happen: keys checked first */
            pl_log(PL_LOG_ERROR, 0, "store: event insert violated a constraint",
                   "\"conv\":%lld,\"seq\":%lld", (long long)conv, (long long)seq);
            return PL_STORE_EUNAVAIL;
        }
        return rc;
    }
    if (!e->dirty) {                     /* flush_dirty writes it before COMMIT */
        if (s->ndirty == s->dirty_cap) {
            s->dirty_cap = s->dirty_cap ? s->dirty_cap * 2 : 64;
            s->dirty = pl_realloc(s->dirty, s->dirty_cap * sizeof *s->dirty);
        }
        s->dirty[s->ndirty++] = conv;
        e->dirty = 1;
    }
    e->last_seq = seq;
    e->last_ts = now;
    j->has_event = 1;
    j->event.conv = conv;
    j->event.seq = seq;
    j->event.id = id;
    j->event.ts = now;
    j->event.kind = kind;
    j->event.sender = sender;
    j->event.client_msg_id = cmid ? pl_strdup(cmid) : NULL;
    j->event.body = body ? copy_bytes(body, body_len) : NULL;
    j->event.data = data;
    return PL_STORE_OK;
}

/* ---- writer: jobs ---------------------------------------------------------
 * Each returns PL_STORE_OK or a PL_STORE_E* for the job alone, or W_FATAL
 * when the batch must fail. See invariant 4 for what a failing job wrote. */

static int job_user_create(sq_store *s, pl_job *j, int64_t now) {
    if (!j->username || !j->pwhash) return PL_STORE_EINVAL;
    sqlite3_stmt *st = s->w[W_USER_INSERT];
    sqlite3_bind_text(st, 1, j->username, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, j->pwhash, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, now);
    int rc = w_write(s, W_USER_INSERT);     /* UNIQUE(username) -> ECONFLICT */
    if (rc == PL_STORE_OK) j->out_id = sqlite3_last_insert_rowid(s->wdb);
    return rc;
}

static int job_login_create(sq_store *s, pl_job *j, int64_t now) {
    int rc = w_user_exists(s, j->user);
    if (rc <= 0) return rc < 0 ? rc : PL_STORE_ENOTFOUND;
    sqlite3_stmt *st = s->w[W_LOGIN_INSERT];
    sqlite3_bind_int64(st, 1, j->user);
    sqlite3_bind_blob(st, 2, j->hash, sizeof j->hash, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, j->expires);
    sqlite3_bind_int64(st, 4, now);
    rc = w_write(s, W_LOGIN_INSERT);
    if (rc == PL_STORE_OK) j->out_id = sqlite3_last_insert_rowid(s->wdb);
    return rc;
}

/* Rotates only a live login presenting its current hash. */
static int job_login_rotate(sq_store *s, pl_job *j, int64_t now) {
    sqlite3_stmt *st = s->w[W_LOGIN_ROTATE];
    sqlite3_bind_blob(st, 1, j->hash2, sizeof j->hash2, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, j->expires);
    sqlite3_bind_int64(st, 3, j->id);
    sqlite3_bind_int64(st, 4, now);
    sqlite3_bind_blob(st, 5, j->hash, sizeof j->hash, SQLITE_STATIC);
    int rc = w_write(s, W_LOGIN_ROTATE);
    if (rc != PL_STORE_OK) return rc;
    if (sqlite3_changes(s->wdb) == 0) return PL_STORE_ENOTFOUND;
    j->out_id = j->id;
    return PL_STORE_OK;
}

static int job_login_revoke(sq_store *s, pl_job *j, int64_t now) {
    sqlite3_bind_int64(s->w[W_LOGIN_REVOKE], 1, j->id);
    int rc = w_write(s, W_LOGIN_REVOKE);
    if (rc != PL_STORE_OK) return rc;
    if (sqlite3_changes(s->wdb) == 0) return PL_STORE_ENOTFOUND;
    j->out_id = j->id;
    return PL_STORE_OK;
}

/* The hot path: no savepoint. Membership and the idempotency key are checked
 * before the only write (the append). */
static int job_send(sq_store *s, pl_job *j, int64_t now) {
    if (!j->body || j->body_len > INT_MAX) return PL_STORE_EINVAL;
    int role = w_member_role(s, j->conv, j->user);
    if (role <= 0) return role < 0 ? role : PL_STORE_ENOTFOUND;
    if (j->client_msg_id) {
        sqlite3_stmt *st = s->w[W_EVENT_DUP];
        sqlite3_bind_int64(st, 1, j->conv);
        sqlite3_bind_int64(st, 2, j->user);
        sqlite3_bind_text(st, 3, j->client_msg_id, -1, SQLITE_STATIC);
        int rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {      /* a retry: the stored event, nothing new */
            j->dup = 1;
            j->has_event = 1;
            j->event.conv = j->conv;
            j->event.seq = sqlite3_column_int64(st, 0);
            j->event.id = (uint64_t)sqlite3_column_int64(st, 1);
            j->event.ts = sqlite3_column_int64(st, 2);
            j->event.kind = PL_EV_MESSAGE;
            j->event.sender = j->user;
            j->event.client_msg_id = pl_strdup(j->client_msg_id);
            j->event.body = col_text(st, 3);
        }
        sqlite3_reset(st);
        if (rc == SQLITE_ROW) return PL_STORE_OK;
        if (rc != SQLITE_DONE) return w_fatal(s, rc, w_sql[W_EVENT_DUP]);
    }
    return w_append(s, j, now, j->conv, PL_EV_MESSAGE, j->user, j->client_msg_id,
                    j->body, j->body_len, NULL);
}

static char *data_user(int64_t user) {
    char buf[48];
    snprintf(buf, sizeof buf, "{\"user\":%lld}", (long long)user);
    return pl_strdup(buf);
}

static int job_direct_open(sq_store *s, pl_job *j, int64_t now) {
    if (j->user == j->peer) return PL_STORE_EINVAL;
    int rc = w_user_exists(s, j->user);
    if (rc <= 0) return rc < 0 ? rc : PL_STORE_ENOTFOUND;
    rc = w_user_exists(s, j->peer);
    if (rc <= 0) return rc < 0 ? rc : PL_STORE_ENOTFOUND;

    char key[48];
    int64_t lo = j->user < j->peer ? j->user : j->peer;
    int64_t hi = j->user < j->peer ? j->peer : j->user;
    snprintf(key, sizeof key, "%lld:%lld", (long long)lo, (long long)hi);
    int64_t conv = 0;
    sqlite3_bind_text(s->w[W_CONV_BY_KEY], 1, key, -1, SQLITE_STATIC);
    rc = w_lookup(s, W_CONV_BY_KEY, &conv);
    if (rc < 0) return rc;
    if (rc) {                                    /* the pair already has one */
        j->out_id = conv;
        return PL_STORE_OK;
    }
    if ((rc = w_conv_insert(s, PL_CONV_DIRECT, NULL, key, 2, now, &conv)) ||
        (rc = w_member_insert(s, conv, j->user, PL_ROLE_MEMBER, 0)) ||
        (rc = w_member_insert(s, conv, j->peer, PL_ROLE_MEMBER, 1)))
        return rc;
    char data[96];
    snprintf(data, sizeof data, "{\"kind\":\"direct\",\"members\":[%lld,%lld]}",
             (long long)j->user, (long long)j->peer);
    rc = w_append(s, j, now, conv, PL_EV_CREATED, j->user, NULL, NULL, 0, pl_strdup(data));
    if (rc != PL_STORE_OK) return rc;
    j->out_id = conv;
    j->created = 1;
    return PL_STORE_OK;
}

/* {"kind":"group","title":..,"members":[creator, others..]} or NULL if the
 * title is not valid UTF-8. */
static char *data_group(const char *title, int64_t creator, const int64_t *others, size_t n) {
    json_t *root = json_object(), *members = json_array();
    json_t *jt = json_string(title);
    char *out = NULL;
    if (!root || !members || !jt) goto done;
    json_array_append_new(members, json_integer(creator));
    for (size_t i = 0; i < n; i++) json_array_append_new(members, json_integer(others[i]));
    json_object_set_new(root, "kind", json_string("group"));
    json_object_set_new(root, "title", jt);
    jt = NULL;
    json_object_set_new(root, "members", members);
    members = NULL;
    size_t len = json_dumpb(root, NULL, 0, JSON_COMPACT);
    if (len == 0) goto done;
    out = pl_malloc(len + 1);
    if (json_dumpb(root, out, len, JSON_COMPACT) != len) {
        free(out);
        out = NULL;
        goto done;
    }
    out[len] = '\0';
done:
    json_decref(jt);
    json_decref(members);
    json_decref(root);
    return out;
}

static int job_group_create(sq_store *s, pl_job *j, int64_t now) {
    if (!j->title || (j->nmembers && !j->members)) return PL_STORE_EINVAL;
    int rc = w_user_exists(s, j->user);
    if (rc <= 0) return rc < 0 ? rc : PL_STORE_ENOTFOUND;

    /* the other members, deduplicated in first-seen order, creator skipped */
    int64_t *others = pl_malloc((j->nmembers ? j->nmembers : 1) * sizeof *others);
    size_t n = 0;
    seq_map seen = {0};
    char *data = NULL;
    rc = PL_STORE_OK;
    for (size_t i = 0; i < j->nmembers; i++) {
        int64_t u = j->members[i];
        if (u == j->user || (u != 0 && seq_find(&seen, u))) continue;
        if (u <= 0) { rc = PL_STORE_ENOTFOUND; goto out; }
        seq_put(&seen, u);
        int ex = w_user_exists(s, u);
        if (ex <= 0) { rc = ex < 0 ? ex : PL_STORE_ENOTFOUND; goto out; }
        others[n++] = u;
    }
    data = data_group(j->title, j->user, others, n);
    if (!data) { rc = PL_STORE_EINVAL; goto out; }

    int64_t conv = 0;
    if ((rc = w_conv_insert(s, PL_CONV_GROUP, j->title, NULL, (int64_t)n + 1, now, &conv)) ||
        (rc = w_member_insert(s, conv, j->user, PL_ROLE_ADMIN, 0)))
        goto out;
    for (size_t i = 0; i < n; i++)
        if ((rc = w_member_insert(s, conv, others[i], PL_ROLE_MEMBER, (int64_t)i + 1))) goto out;
    rc = w_append(s, j, now, conv, PL_EV_CREATED, j->user, NULL, NULL, 0, data);
    data = NULL;                                          /* taken over */
    if (rc == PL_STORE_OK) j->out_id = conv;
out:
    free(data);
    free(seen.tab);
    free(others);
    return rc;
}

/* After a member left or was removed: if members remain and none is an
 * admin, the earliest-joined one becomes admin. */
static int w_promote_if_needed(sq_store *s, int64_t conv) {
    sqlite3_bind_int64(s->w[W_MEMBER_HAS_ADMIN], 1, conv);
    int rc = w_lookup(s, W_MEMBER_HAS_ADMIN, NULL);
    if (rc != 0) return rc < 0 ? rc : PL_STORE_OK;
    int64_t oldest = 0;
    sqlite3_bind_int64(s->w[W_MEMBER_OLDEST], 1, conv);
    rc = w_lookup(s, W_MEMBER_OLDEST, &oldest);
    if (rc <= 0) return rc;                                 /* nobody left */
    sqlite3_stmt *st = s->w[W_MEMBER_SET_ROLE];
    sqlite3_bind_int(st, 1, PL_ROLE_ADMIN);
    sqlite3_bind_int64(st, 2, conv);
    sqlite3_bind_int64(st, 3, oldest);
    return w_write(s, W_MEMBER_SET_ROLE);
}

static int w_member_delete(sq_store *s, int64_t conv, int64_t user) {
    sqlite3_bind_int64(s->w[W_MEMBER_DELETE], 1, conv);
    sqlite3_bind_int64(s->w[W_MEMBER_DELETE], 2, user);
    return w_write(s, W_MEMBER_DELETE);
}

/* Checks shared by add and remove: conv exists and the actor is a member
 * (else ENOTFOUND: non-members cannot tell), it is a group (EINVAL), the
 * actor is an admin (EFORBID). */
static int w_check_admin(sq_store *s, pl_job *j) {
    int kind = w_conv_kind(s, j->conv);
    if (kind <= 0) return kind < 0 ? kind : PL_STORE_ENOTFOUND;
    int role = w_member_role(s, j->conv, j->user);
    if (role <= 0) return role < 0 ? role : PL_STORE_ENOTFOUND;
    if (kind != PL_CONV_GROUP) return PL_STORE_EINVAL;
    if (role != PL_ROLE_ADMIN) return PL_STORE_EFORBID;
    return PL_STORE_OK;
}

static int job_member_add(sq_store *s, pl_job *j, int64_t now) {
    int rc = w_check_admin(s, j);
    if (rc != PL_STORE_OK) return rc;
    rc = w_user_exists(s, j->peer);
    if (rc <= 0) return rc < 0 ? rc : PL_STORE_ENOTFOUND;
    j->out_id = j->conv;
    rc = w_member_role(s, j->conv, j->peer);
    if (rc != PL_ROLE_NONE) return rc < 0 ? rc : PL_STORE_OK;   /* no-op */
    int64_t joined = 0;
    sqlite3_bind_int64(s->w[W_CONV_NEXT_JOIN], 1, j->conv);
    rc = w_lookup(s, W_CONV_NEXT_JOIN, &joined);
    if (rc <= 0) return rc < 0 ? rc : PL_STORE_ENOTFOUND;
    if ((rc = w_member_insert(s, j->conv, j->peer, PL_ROLE_MEMBER, joined))) return rc;
    return w_append(s, j, now, j->conv, PL_EV_MEMBER_ADDED, j->user, NULL, NULL, 0,
                    data_user(j->peer));
}

static int job_member_remove(sq_store *s, pl_job *j, int64_t now) {
    int rc = w_check_admin(s, j);
    if (rc != PL_STORE_OK) return rc;
    rc = w_member_role(s, j->conv, j->peer);
    if (rc <= 0) return rc < 0 ? rc : PL_STORE_ENOTFOUND;
    if ((rc = w_member_delete(s, j->conv, j->peer)) ||
        (rc = w_promote_if_needed(s, j->conv)))
        return rc;
    j->out_id = j->conv;
    return w_append(s, j, now, j->conv, PL_EV_MEMBER_REMOVED, j->user, NULL, NULL, 0,
                    data_user(j->peer));
}

static int job_member_leave(sq_store *s, pl_job *j, int64_t now) {
    int kind = w_conv_kind(s, j->conv);
    if (kind <= 0) return kind < 0 ? kind : PL_STORE_ENOTFOUND;
    int rc = w_member_role(s, j->conv, j->user);
    if (rc <= 0) return rc < 0 ? rc : PL_STORE_ENOTFOUND;
    if (kind != PL_CONV_GROUP) return PL_STORE_EINVAL;
    if ((rc = w_member_delete(s, j->conv, j->user)) ||
        (rc = w_promote_if_needed(s, j->conv)))
        return rc;
    j->out_id = j->conv;
    return w_append(s, j, now, j->conv, PL_EV_MEMBER_LEFT, j->user, NULL, NULL, 0,
                    data_user(j->user));
}

/* Receipt cursors: clamp to the log, merge with max, write only if moved. */
static int job_receipt(sq_store *s, pl_job *j, int64_t now) {
    int role = w_member_role(s, j->conv, j->user);
    if (role <= 0) return role < 0 ? role : PL_STORE_ENOTFOUND;
    int err = PL_STORE_OK;
    seq_ent *e = w_seq_get(s, j->conv, &err);
    if (!e) return err;
    int64_t d = j->delivered < e->last_seq ? j->delivered : e->last_seq;
    int64_t r = j->read < e->last_seq ? j->read : e->last_seq;
    if (r > d) d = r;                               /* read implies delivered */
    sqlite3_stmt *st = s->w[W_MEMBER_CURSORS];
    sqlite3_bind_int64(st, 1, j->conv);
    sqlite3_bind_int64(st, 2, j->user);
    int rc = sqlite3_step(st);
    int64_t cd = 0, cr = 0;
    if (rc == SQLITE_ROW) {
        cd = sqlite3_column_int64(st, 0);
        cr = sqlite3_column_int64(st, 1);
    }
    sqlite3_reset(st);
    if (rc != SQLITE_ROW) return w_fatal(s, rc, w_sql[W_MEMBER_CURSORS]);
    int64_t nd = d > cd ? d : cd, nr = r > cr ? r : cr;
    j->created = nd != cd || nr != cr;
    if (j->created) {
        st = s->w[W_MEMBER_SET_CURSORS];
        sqlite3_bind_int64(st, 1, nd);
        sqlite3_bind_int64(st, 2, nr);
        sqlite3_bind_int64(st, 3, j->conv);
        sqlite3_bind_int64(st, 4, j->user);
        if (w_exec(s, W_MEMBER_SET_CURSORS) != PL_STORE_OK) return W_FATAL;
    }
    j->out_delivered = nd;
    j->out_read = nr;
    st = s->w[W_UNREAD];
    sqlite3_bind_int64(st, 1, j->conv);
    sqlite3_bind_int64(st, 2, nr);
    sqlite3_bind_int64(st, 3, j->user);
    rc = w_lookup(s, W_UNREAD, &j->out_unread);
    return rc < 0 ? rc : PL_STORE_OK;
}

static int job_last_seen(sq_store *s, pl_job *j, int64_t now) {
    sqlite3_stmt *st = s->w[W_USER_LAST_SEEN];
    sqlite3_bind_int64(st, 1, j->expires);
    sqlite3_bind_int64(st, 2, j->user);
    return w_exec(s, W_USER_LAST_SEEN) == PL_STORE_OK ? PL_STORE_OK : W_FATAL;
}

typedef int (*job_fn)(sq_store *s, pl_job *j, int64_t now);

/* Runs a multi-statement job inside a savepoint, so that a failure after its
 * first write (a constraint the checks did not foresee) leaves nothing. */
static int w_in_savepoint(sq_store *s, pl_job *j, int64_t now, job_fn fn) {
    if (w_exec(s, W_SAVEPOINT) != PL_STORE_OK) return W_FATAL;
    int rc = fn(s, j, now);
    if (rc == W_FATAL) return W_FATAL;
    if (rc != PL_STORE_OK) {
        if (rc == PL_STORE_ECONFLICT)          /* not a job's own error here */
            pl_log(PL_LOG_ERROR, 0, "store: unexpected constraint violation", "\"op\":%d",
                   (int)j->op);
        pl_event_release(&j->event);
        job_reset_outputs(j);
        if (w_exec(s, W_ROLLBACK_TO) != PL_STORE_OK) return W_FATAL;
        if (rc == PL_STORE_ECONFLICT) rc = PL_STORE_EUNAVAIL;
    }
    if (w_exec(s, W_RELEASE) != PL_STORE_OK) return W_FATAL;
    return rc;
}

static int w_run_job(sq_store *s, pl_job *j, int64_t now) {
    switch (j->op) {
    case PL_JOB_MESSAGE_SEND:  return job_send(s, j, now);
    case PL_JOB_USER_CREATE:   return job_user_create(s, j, now);
    case PL_JOB_LOGIN_CREATE:  return job_login_create(s, j, now);
    case PL_JOB_LOGIN_ROTATE:  return job_login_rotate(s, j, now);
    case PL_JOB_LOGIN_REVOKE:  return job_login_revoke(s, j, now);
    case PL_JOB_DIRECT_OPEN:   return w_in_savepoint(s, j, now, job_direct_open);
    case PL_JOB_GROUP_CREATE:  return w_in_savepoint(s, j, now, job_group_create);
    case PL_JOB_MEMBER_ADD:    return w_in_savepoint(s, j, now, job_member_add);
    case PL_JOB_MEMBER_REMOVE: return w_in_savepoint(s, j, now, job_member_remove);
    case PL_JOB_MEMBER_LEAVE:  return w_in_savepoint(s, j, now, job_member_leave);
    case PL_JOB_RECEIPT:       return job_receipt(s, j, now);
    case PL_JOB_LAST_SEEN:     return job_last_seen(s, j, now);
    }
    return PL_STORE_EINVAL;
}

/* Writes last_seq/last_ts of every conversation the batch appended to. */
static int w_flush_dirty(sq_store *s) {
    sqlite3_stmt *st = s->w[W_CONV_UPDATE];
    for (size_t i = 0; i < s->ndirty; i++) {
        seq_ent *e = seq_find(&s->seqs, s->dirty[i]);
        sqlite3_bind_int64(st, 1, e->last_seq);
        sqlite3_bind_int64(st, 2, e->last_ts);
        sqlite3_bind_int64(st, 3, e->conv);
        if (w_exec(s, W_CONV_UPDATE) != PL_STORE_OK) return W_FATAL;
        e->dirty = 0;
    }
    s->ndirty = 0;
    return PL_STORE_OK;
}

static void fail_all(pl_job *head) {
    for (pl_job *j = head; j; j = j->next) {
        pl_event_release(&j->event);
        job_reset_outputs(j);
        j->result = PL_STORE_EUNAVAIL;
    }
}

/* Runs one batch in one transaction and sets every job's result. */
static void w_run_batch(sq_store *s, pl_job *head) {
    int64_t now = pl_now_ms();
    if (now < s->last_ts) now = s->last_ts;      /* ts never goes backwards */
    s->last_ts = now;
    size_t njobs = 0;
    for (pl_job *j = head; j; j = j->next) {
        job_reset_outputs(j);
        njobs++;
    }
    if (s->broken) { fail_all(head); return; }
    int64_t t0 = pl_mono_us();

    /* BEGIN failing (another process holds the lock past the timeout) wrote
     * nothing: the batch fails but the store is not broken. */
    if (w_exec(s, W_BEGIN) != PL_STORE_OK) {
        pl_log(PL_LOG_ERROR, 0, "store: cannot begin a transaction", "\"rc\":%d,\"err\":\"%s\"",
               s->fatal_rc, sqlite3_errstr(s->fatal_rc));
        if (!sqlite3_get_autocommit(s->wdb)) w_exec(s, W_ROLLBACK);
        fail_all(head);
        return;
    }
    for (pl_job *j = head; j; j = j->next) {
        int rc = w_run_job(s, j, now);
        if (rc == W_FATAL) goto fail;
        j->result = rc;
    }
    if (w_flush_dirty(s) != PL_STORE_OK) goto fail;
    pthread_mutex_lock(&s->mu);
    int inject = s->fail_commits > 0;
    if (inject) s->fail_commits--;
    pthread_mutex_unlock(&s->mu);
    if (inject) {
        w_fatal(s, SQLITE_IOERR_FSYNC, "COMMIT (fault hook)");
        goto fail;
    }
    if (w_exec(s, W_COMMIT) == PL_STORE_OK) {
        pl_count(&pl_m_commit_batches, 1);
        pl_count(&pl_m_commit_jobs, njobs);
        pl_observe(&pl_m_commit_batch_size, (double)njobs);
        pl_observe(&pl_m_commit_seconds, (double)(pl_mono_us() - t0) / 1e6);
        return;
    }

fail:
    pl_count(&pl_m_commit_failures, 1);
    /* The database state is unknown from here on (invariant 5). */
    pl_log(PL_LOG_ERROR, 0, "store: batch failed, no longer accepting writes",
           "\"rc\":%d,\"err\":\"%s\",\"step\":\"%s\"", s->fatal_rc,
           sqlite3_errstr(s->fatal_rc), s->fatal_what ? s->fatal_what : "?");
    if (!sqlite3_get_autocommit(s->wdb)) {
        int rc = sqlite3_step(s->w[W_ROLLBACK]);
        sqlite3_reset(s->w[W_ROLLBACK]);
        (void)rc;
    }
    seq_clear(&s->seqs);
    s->ndirty = 0;
    s->broken = 1;
    fail_all(head);
}

static void *writer_main(void *arg) {
    sq_store *s = arg;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        while (!s->q_head && !s->stopping) pthread_cond_wait(&s->cv, &s->mu);
        if (!s->q_head) break;                     /* stopping, queue empty */
        pl_job *head = s->q_head, *tail = head;
        for (size_t n = 1; n < BATCH_MAX && tail->next; n++) tail = tail->next;
        s->q_head = tail->next;
        if (!s->q_head) s->q_tail = NULL;
        tail->next = NULL;
        pthread_mutex_unlock(&s->mu);

        w_run_batch(s, head);

        pthread_mutex_lock(&s->mu);
        if (s->d_tail) s->d_tail->next = head;
        else s->d_head = head;
        s->d_tail = tail;
        if (!s->stopping && s->notify) {   /* once stopping, close() drains */
            pthread_mutex_unlock(&s->mu);
            s->notify(s->notify_arg);
            pthread_mutex_lock(&s->mu);
        }
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

/* ---- loop thread: submit, drain ---------------------------------------- */

static void sq_submit(pl_store *base, pl_job *j) {
    sq_store *s = (sq_store *)base;
    j->next = NULL;
    pthread_mutex_lock(&s->mu);
    if (s->stopping) {             /* submitted from a done() during close */
        job_reset_outputs(j);
        j->result = PL_STORE_EUNAVAIL;
        if (s->d_tail) s->d_tail->next = j;
        else s->d_head = j;
        s->d_tail = j;
    } else {
        if (s->q_tail) s->q_tail->next = j;
        else s->q_head = j;
        s->q_tail = j;
        pthread_cond_signal(&s->cv);
    }
    pthread_mutex_unlock(&s->mu);
}

static void sq_drain(pl_store *base) {
    sq_store *s = (sq_store *)base;
    pthread_mutex_lock(&s->mu);
    pl_job *j = s->d_head;
    s->d_head = s->d_tail = NULL;
    pthread_mutex_unlock(&s->mu);
    while (j) {
        pl_job *next = j->next;    /* done() may free j */
        j->next = NULL;
        if (j->done) j->done(j);
        j = next;
    }
}

void pl_store_sqlite_fail_commits(pl_store *base, int n) {
    if (!base || base->ops != &sq_ops) return;
    sq_store *s = (sq_store *)base;
    pthread_mutex_lock(&s->mu);
    s->fail_commits = n;
    pthread_mutex_unlock(&s->mu);
}

/* ---- loop thread: reads --------------------------------------------------
 * Every read resets its statements before returning, which ends the read
 * connection's implicit transaction (a lingering one would pin the WAL). */

static int r_user(sq_store *s, int id, pl_user *out, int with_hash) {
    sqlite3_stmt *st = s->r[id];
    memset(out, 0, sizeof *out);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        out->id = sqlite3_column_int64(st, 0);
        const unsigned char *name = sqlite3_column_text(st, 1);
        snprintf(out->username, sizeof out->username, "%s", name ? (const char *)name : "");
        if (with_hash) out->pwhash = col_text(st, 2);
        out->last_seen = sqlite3_column_int64(st, 3);
    }
    sqlite3_reset(st);
    return rc == SQLITE_ROW ? PL_STORE_OK : rc == SQLITE_DONE ? PL_STORE_ENOTFOUND
                                                              : PL_STORE_EUNAVAIL;
}

static int sq_user_by_name(pl_store *base, const char *username, pl_user *out, int with_hash) {
    sq_store *s = (sq_store *)base;
    sqlite3_bind_text(s->r[R_USER_BY_NAME], 1, username, -1, SQLITE_STATIC);
    return r_user(s, R_USER_BY_NAME, out, with_hash);
}

static int sq_user_by_id(pl_store *base, int64_t id, pl_user *out) {
    sq_store *s = (sq_store *)base;
    sqlite3_bind_int64(s->r[R_USER_BY_ID], 1, id);
    return r_user(s, R_USER_BY_ID, out, 0);
}

static int sq_login_get(pl_store *base, int64_t id, pl_login *out) {
    sq_store *s = (sq_store *)base;
    sqlite3_stmt *st = s->r[R_LOGIN];
    memset(out, 0, sizeof *out);
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
    }
    sqlite3_reset(st);
    return rc == SQLITE_ROW ? PL_STORE_OK : rc == SQLITE_DONE ? PL_STORE_ENOTFOUND
                                                              : PL_STORE_EUNAVAIL;
}

static void r_conv_row(sqlite3_stmt *st, pl_conv *c) {
    memset(c, 0, sizeof *c);
    c->id = sqlite3_column_int64(st, 0);
    c->kind = sqlite3_column_int(st, 1);
    c->title = col_text(st, 2);
    c->last_seq = sqlite3_column_int64(st, 3);
    c->last_ts = sqlite3_column_int64(st, 4);
    c->read_seq = sqlite3_column_int64(st, 5);
    c->role = sqlite3_column_int(st, 6);
    c->unread = sqlite3_column_int64(st, 7);
}

static int sq_conv_list(pl_store *base, int64_t user, pl_conv **out, size_t *n) {
    sq_store *s = (sq_store *)base;
    sqlite3_stmt *st = s->r[R_CONV_LIST];
    pl_conv *list = NULL;
    size_t len = 0, cap = 0;
    int rc;
    *out = NULL;
    *n = 0;
    sqlite3_bind_int64(st, 1, user);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (len == cap) {
            cap = cap ? cap * 2 : 16;
            list = pl_realloc(list, cap * sizeof *list);
        }
        r_conv_row(st, &list[len++]);
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

static int sq_conv_get(pl_store *base, int64_t conv, int64_t user, pl_conv *out) {
    sq_store *s = (sq_store *)base;
    sqlite3_stmt *st = s->r[R_CONV_GET];
    memset(out, 0, sizeof *out);
    sqlite3_bind_int64(st, 1, conv);
    sqlite3_bind_int64(st, 2, user);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) r_conv_row(st, out);
    if (rc != SQLITE_ROW) {
        sqlite3_reset(st);
        return rc == SQLITE_DONE ? PL_STORE_ENOTFOUND : PL_STORE_EUNAVAIL;
    }
    /* members in the same read transaction as the conversation row */
    sqlite3_stmt *ms = s->r[R_CONV_MEMBERS];
    size_t cap = 0;
    sqlite3_bind_int64(ms, 1, conv);
    while ((rc = sqlite3_step(ms)) == SQLITE_ROW) {
        if (out->nmembers == cap) {
            cap = cap ? cap * 2 : 8;
            out->members = pl_realloc(out->members, cap * sizeof *out->members);
        }
        out->members[out->nmembers].user = sqlite3_column_int64(ms, 0);
        out->members[out->nmembers].role = sqlite3_column_int(ms, 1);
        out->members[out->nmembers].delivered_seq = sqlite3_column_int64(ms, 2);
        out->members[out->nmembers].read_seq = sqlite3_column_int64(ms, 3);
        const unsigned char *un = sqlite3_column_text(ms, 4);
        snprintf(out->members[out->nmembers].username, sizeof out->members[0].username, "%s",
                 un ? (const char *)un : "");
        out->nmembers++;
    }
    sqlite3_reset(ms);
    sqlite3_reset(st);
    if (rc != SQLITE_DONE) {
        pl_conv_release(out);
        return PL_STORE_EUNAVAIL;
    }
    return PL_STORE_OK;
}

/* A failing read answers 0: refusing is the safe side. */
static int sq_shares(pl_store *base, int64_t a, int64_t b) {
    sq_store *s = (sq_store *)base;
    sqlite3_stmt *st = s->r[R_SHARES];
    sqlite3_bind_int64(st, 1, a);
    sqlite3_bind_int64(st, 2, b);
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    return rc == SQLITE_ROW;
}

/* A failing read answers PL_ROLE_NONE: refusing is the safe side. */
static int sq_member_role(pl_store *base, int64_t conv, int64_t user) {
    sq_store *s = (sq_store *)base;
    sqlite3_stmt *st = s->r[R_MEMBER_ROLE];
    sqlite3_bind_int64(st, 1, conv);
    sqlite3_bind_int64(st, 2, user);
    int rc = sqlite3_step(st);
    int role = rc == SQLITE_ROW ? sqlite3_column_int(st, 0) : PL_ROLE_NONE;
    sqlite3_reset(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        pl_log(PL_LOG_ERROR, 0, "store: member_role failed", "\"rc\":%d", rc);
    return role;
}

static int sq_members(pl_store *base, int64_t conv, int64_t **out, size_t *n) {
    sq_store *s = (sq_store *)base;
    sqlite3_stmt *st = s->r[R_MEMBERS];
    int64_t *list = NULL;
    size_t len = 0, cap = 0;
    int rc;
    *out = NULL;
    *n = 0;
    sqlite3_bind_int64(st, 1, conv);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (len == cap) {
            cap = cap ? cap * 2 : 16;
            list = pl_realloc(list, cap * sizeof *list);
        }
        list[len++] = sqlite3_column_int64(st, 0);
    }
    sqlite3_reset(st);
    if (rc != SQLITE_DONE) {
        free(list);
        return PL_STORE_EUNAVAIL;
    }
    *out = list;
    *n = len;
    return PL_STORE_OK;
}

static int sq_events(pl_store *base, int64_t conv, int64_t after, int64_t before, int limit,
                     int from_top, pl_event **out, size_t *n) {
    sq_store *s = (sq_store *)base;
    *out = NULL;
    *n = 0;
    if (limit < 1) return PL_STORE_EINVAL;
    if (limit > PL_STORE_PAGE_MAX) limit = PL_STORE_PAGE_MAX;
    sqlite3_stmt *st = s->r[from_top ? R_EVENTS_DESC : R_EVENTS_ASC];
    sqlite3_bind_int64(st, 1, conv);
    sqlite3_bind_int64(st, 2, after);
    sqlite3_bind_int64(st, 3, before > 0 ? before : INT64_MAX);
    sqlite3_bind_int(st, 4, limit);
    pl_event *list = NULL;
    size_t len = 0;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (!list) list = pl_malloc((size_t)limit * sizeof *list);
        pl_event *e = &list[len++];
        e->conv = conv;
        e->seq = sqlite3_column_int64(st, 0);
        e->id = (uint64_t)sqlite3_column_int64(st, 1);
        e->ts = sqlite3_column_int64(st, 2);
        e->kind = sqlite3_column_int(st, 3);
        e->sender = sqlite3_column_int64(st, 4);
        e->client_msg_id = col_text(st, 5);
        e->body = col_text(st, 6);
        e->data = col_text(st, 7);
    }
    sqlite3_reset(st);
    if (rc != SQLITE_DONE) {
        pl_event_list_free(list, len);
        return PL_STORE_EUNAVAIL;
    }
    if (from_top) {                           /* always ascending for callers */
        for (size_t i = 0; i < len / 2; i++) {
            pl_event t = list[i];
            list[i] = list[len - 1 - i];
            list[len - 1 - i] = t;
        }
    }
    *out = list;
    *n = len;
    return PL_STORE_OK;
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

static int db_int(sqlite3 *db, const char *sql, int64_t *out) {
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

/* Brings the schema to SCHEMA_VERSION, one transaction per step. */
static int migrate(sqlite3 *db, const char **errmsg) {
    int64_t v = 0;
    if (db_int(db, "PRAGMA user_version", &v) != 0) {
        *errmsg = "cannot read the schema version";
        return -1;
    }
    if (v > SCHEMA_VERSION) {
        *errmsg = "the database was written by a newer Parley";
        return -1;
    }
    for (; v < SCHEMA_VERSION; v++) {
        char setv[48];
        snprintf(setv, sizeof setv, "PRAGMA user_version = %d", (int)v + 1);
        if (sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK) {
            *errmsg = "cannot lock the database for migration";
            return -1;
        }
        if (sqlite3_exec(db, migrations[v], NULL, NULL, NULL) != SQLITE_OK ||
            sqlite3_exec(db, setv, NULL, NULL, NULL) != SQLITE_OK ||
            sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
            sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
            *errmsg = "schema migration failed";
            return -1;
        }
    }
    return 0;
}

static int prepare_all(sqlite3 *db, const char *const *sql, sqlite3_stmt **st, int n) {
    for (int i = 0; i < n; i++)
        if (sqlite3_prepare_v3(db, sql[i], -1, SQLITE_PREPARE_PERSISTENT, &st[i], NULL) !=
            SQLITE_OK) {
            pl_log(PL_LOG_ERROR, 0, "store: prepare failed", "\"stmt\":%d,\"rc\":%d", i,
                   sqlite3_errcode(db));
            return -1;
        }
    return 0;
}

/* Frees everything but the writer thread (not running, or joined). */
static void sq_free(sq_store *s) {
    for (int i = 0; i < W__COUNT; i++) sqlite3_finalize(s->w[i]);
    for (int i = 0; i < R__COUNT; i++) sqlite3_finalize(s->r[i]);
    if (s->rdb && sqlite3_close(s->rdb) != SQLITE_OK)
        pl_log(PL_LOG_ERROR, 0, "store: closing the read connection failed", "%s", "");
    if (s->wdb && sqlite3_close(s->wdb) != SQLITE_OK)
        pl_log(PL_LOG_ERROR, 0, "store: closing the write connection failed", "%s", "");
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    free(s->seqs.tab);
    free(s->dirty);
    free(s);
}

static int open_conn(const char *path, int flags, sqlite3 **db) {
    if (sqlite3_open_v2(path, db, flags | SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK) return -1;
    sqlite3_extended_result_codes(*db, 1);
    sqlite3_busy_timeout(*db, BUSY_TIMEOUT_MS);
    return 0;
}

int pl_store_sqlite_open(const char *dir, int node, void (*notify)(void *), void *notify_arg,
                         pl_store **out, const char **errmsg) {
    static const char *unused;
    if (!errmsg) errmsg = &unused;
    *out = NULL;
    if (mkdir_p(dir) != 0) {
        *errmsg = "cannot create the data directory";
        return PL_STORE_EUNAVAIL;
    }
    size_t plen = strlen(dir) + sizeof "/parley.db";
    char *path = pl_malloc(plen);
    snprintf(path, plen, "%s/parley.db", dir);

    sq_store *s = pl_calloc(1, sizeof *s);
    s->base.ops = &sq_ops;
    s->notify = notify;
    s->notify_arg = notify_arg;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    pl_idgen_init(&s->ids, node);

    *errmsg = NULL;
    if (open_conn(path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, &s->wdb) != 0)
        *errmsg = "cannot open the database";
    else if (!db_text_is(s->wdb, "PRAGMA journal_mode = WAL", "wal"))
        *errmsg = "cannot switch the database to WAL";
    else if (sqlite3_exec(s->wdb, "PRAGMA synchronous = FULL", NULL, NULL, NULL) != SQLITE_OK)
        *errmsg = "cannot set synchronous = FULL";
    else if (sqlite3_exec(s->wdb, WRITER_TUNING, NULL, NULL, NULL) != SQLITE_OK)
        *errmsg = "cannot tune the write connection";
    else if (migrate(s->wdb, errmsg) != 0)
        ;
    else if (open_conn(path, SQLITE_OPEN_READWRITE, &s->rdb) != 0 ||
             sqlite3_exec(s->rdb, "PRAGMA query_only = 1", NULL, NULL, NULL) != SQLITE_OK)
        *errmsg = "cannot open the read connection";
    else if (prepare_all(s->wdb, w_sql, s->w, W__COUNT) != 0 ||
             prepare_all(s->rdb, r_sql, s->r, R__COUNT) != 0)
        *errmsg = "cannot prepare statements";
    else if (pthread_create(&s->writer, NULL, writer_main, s) != 0)
        *errmsg = "cannot start the writer thread";
    free(path);
    if (*errmsg) {
        sq_free(s);
        return PL_STORE_EUNAVAIL;
    }
    s->writer_started = 1;
    *out = &s->base;
    return PL_STORE_OK;
}

static void sq_close(pl_store *base) {
    sq_store *s = (sq_store *)base;
    pthread_mutex_lock(&s->mu);
    s->stopping = 1;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
    if (s->writer_started) pthread_join(s->writer, NULL);
    for (;;) {                   /* done() may submit more; those fail fast */
        pthread_mutex_lock(&s->mu);
        int more = s->d_head != NULL;
        pthread_mutex_unlock(&s->mu);
        if (!more) break;
        sq_drain(base);
    }
    sq_free(s);
}

static const pl_store_ops sq_ops = {
    .name = "sqlite",
    .submit = sq_submit,
    .user_by_name = sq_user_by_name,
    .user_by_id = sq_user_by_id,
    .login_get = sq_login_get,
    .conv_list = sq_conv_list,
    .conv_get = sq_conv_get,
    .member_role = sq_member_role,
    .members = sq_members,
    .events = sq_events,
    .shares = sq_shares,
    .drain = sq_drain,
    .close = sq_close,
};
