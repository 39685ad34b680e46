/* store_sqlite.c — the SQLite backend of store.h (embedded mode): opening,
 * schema and migrations, statements, the data directory lock, close.
 *
 * Owns: the database file <dir>/parley.db and its lock <dir>/parley.lock,
 * the writer connection (store_sqlite_write.c runs the jobs on it) and one
 * read-only connection per reader thread (store_sqlite_read.c), which also
 * attaches the search index <dir>/search.db as `s` (store_sqlite_index.c
 * owns that file and the thread that fills it).
 * Does not own: threads and queues (pipeline.c), the jobs (the caller's
 * until done() runs), JSON for the wire.
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
    /* 2 -> 3: visibility from joining (joined_seq), maintained unread counts
     * (msg_no, msg_count, own_unread), member counts, the member an event is
     * about (subject). Existing rows are backfilled. */
    "ALTER TABLE events ADD COLUMN subject INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE events ADD COLUMN msg_no INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE members ADD COLUMN joined_seq INTEGER NOT NULL DEFAULT 1;"
    "ALTER TABLE members ADD COLUMN own_unread INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE conversations ADD COLUMN msg_count INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE conversations ADD COLUMN member_count INTEGER NOT NULL DEFAULT 0;"
    "UPDATE events SET subject = json_extract(data, '$.user') WHERE kind IN (3, 4, 5);"
    "WITH c AS (SELECT conv_id, seq, sum(kind = 2) OVER (PARTITION BY conv_id ORDER BY seq) AS n"
    "           FROM events)"
    "  UPDATE events SET msg_no = c.n FROM c WHERE c.conv_id = events.conv_id AND c.seq = events.seq;"
    "UPDATE conversations SET"
    "  msg_count = (SELECT count(*) FROM events e WHERE e.conv_id = conversations.id AND e.kind = 2),"
    "  member_count = (SELECT count(*) FROM members m WHERE m.conv_id = conversations.id);"
    "UPDATE members SET joined_seq = coalesce((SELECT max(seq) FROM events e"
    "  WHERE e.conv_id = members.conv_id AND e.kind = 3 AND e.subject = members.user_id), 1);"
    "UPDATE members SET own_unread = (SELECT count(*) FROM events e WHERE e.conv_id = members.conv_id"
    "  AND e.seq > members.read_seq AND e.kind = 2 AND e.sender = members.user_id);",
    /* 3 -> 4: message actions (store.h invariant 6: ref, edited/deleted/
     * pinned marks, reactions), mentions (invariant 7), notification levels */
    "ALTER TABLE events ADD COLUMN ref INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE events ADD COLUMN edited_ts INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE events ADD COLUMN deleted_ts INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE events ADD COLUMN pinned_ts INTEGER NOT NULL DEFAULT 0;"
    "CREATE INDEX events_ref ON events(conv_id, ref) WHERE ref > 0;"
    "CREATE INDEX events_pinned ON events(conv_id, pinned_ts) WHERE pinned_ts > 0;"
    "CREATE TABLE reactions("
    "  conv_id INTEGER NOT NULL,"
    "  seq INTEGER NOT NULL,"
    "  emoji TEXT NOT NULL,"
    "  user_id INTEGER NOT NULL,"
    "  first_ts INTEGER NOT NULL,"
    "  PRIMARY KEY(conv_id, seq, emoji, user_id)) WITHOUT ROWID;"
    "CREATE TABLE mentions("
    "  conv_id INTEGER NOT NULL,"
    "  user_id INTEGER NOT NULL,"
    "  seq INTEGER NOT NULL,"
    "  PRIMARY KEY(conv_id, user_id, seq)) WITHOUT ROWID;"
    "CREATE INDEX mentions_seq ON mentions(conv_id, seq);"
    "ALTER TABLE members ADD COLUMN notify INTEGER NOT NULL DEFAULT 0;",
    /* 4 -> 5: refresh-token reuse detection (protocol.md "Refresh token
     * reuse"): the hash a rotation replaced and when */
    "ALTER TABLE logins ADD COLUMN prev_hash BLOB;"
    "ALTER TABLE logins ADD COLUMN rotated INTEGER NOT NULL DEFAULT 0;",
    /* 5 -> 6: full-text search (store.h invariant 8). One FTS5 row per
     * MESSAGE with a body, keyed by the event's snowflake id (so newest
     * first is rowid order); column conv holds the token c<conversation id>
     * so a search can intersect with the asker's conversations inside the
     * index (store_sqlite_read.c r_search). Indexing is asynchronous: a trigger queues a
     * new message in fts_pending inside the send's transaction and the
     * writer indexes the queue in transactions of its own after batches
     * (store_sqlite_write.c, sq_index); an edit takes the old text out of
     * the index at once and queues the new, a delete (body erased) takes
     * it out and unqueues it, both in their own transaction. The snippet
     * markers \x02 and \x03 are blanked out of the indexed copy. Existing
     * messages are queued (indexed after start). */
    "CREATE VIRTUAL TABLE events_fts USING fts5(body, conv, conv_id UNINDEXED, seq UNINDEXED,"
    "  tokenize = 'unicode61 remove_diacritics 0');"
    "CREATE TABLE fts_pending(id INTEGER PRIMARY KEY, conv_id INTEGER NOT NULL, seq INTEGER NOT NULL);"
    "CREATE TRIGGER events_fts_ai AFTER INSERT ON events WHEN new.kind = 2 AND new.body IS NOT NULL"
    " BEGIN INSERT OR REPLACE INTO fts_pending(id, conv_id, seq) VALUES(new.id, new.conv_id, new.seq); END;"
    "CREATE TRIGGER events_fts_au AFTER UPDATE OF body ON events WHEN new.kind = 2"
    " BEGIN DELETE FROM events_fts WHERE rowid = old.id;"
    "   DELETE FROM fts_pending WHERE id = old.id;"
    "   INSERT INTO fts_pending(id, conv_id, seq) SELECT new.id, new.conv_id, new.seq"
    "   WHERE new.body IS NOT NULL; END;"
    "CREATE TRIGGER events_fts_ad AFTER DELETE ON events WHEN old.kind = 2"
    " BEGIN DELETE FROM events_fts WHERE rowid = old.id; DELETE FROM fts_pending WHERE id = old.id; END;"
    "INSERT OR REPLACE INTO fts_pending(id, conv_id, seq)"
    "  SELECT id, conv_id, seq FROM events WHERE kind = 2 AND body IS NOT NULL;",
    /* 6 -> 7: reactions are listed in order of first use, which is the seq
     * of the reaction event that added the first one (a time ties within a
     * batch). Rows from before hold a time, which sorts after any seq;
     * only development databases of the day had them. */
    "ALTER TABLE reactions RENAME COLUMN first_ts TO first_seq;",
    /* 7 -> 8: end-to-end encryption (store.h invariant 9): the key directory, one
     * row per device (a login session) and its one-time prekeys; the
     * conversation mark */
    "CREATE TABLE e2ee_devices("
    "  device INTEGER PRIMARY KEY,"          /* logins.id */
    "  user_id INTEGER NOT NULL,"
    "  identity TEXT NOT NULL,"
    "  spk_id INTEGER NOT NULL,"
    "  spk TEXT NOT NULL,"
    "  spk_sig TEXT NOT NULL,"
    "  updated INTEGER NOT NULL);"
    "CREATE INDEX e2ee_devices_user ON e2ee_devices(user_id);"
    "CREATE TABLE e2ee_otks("
    "  device INTEGER NOT NULL,"
    "  key_id INTEGER NOT NULL,"
    "  key TEXT NOT NULL,"
    "  PRIMARY KEY(device, key_id)) WITHOUT ROWID;"
    "ALTER TABLE conversations ADD COLUMN e2ee INTEGER NOT NULL DEFAULT 0;",
    /* 8 -> 9: media (store_sqlite_media.c): a row per upload, blobs shared
     * by sha256; media_refs: the messages that reference a row (GC keeps
     * those). */
    "CREATE TABLE media("
    "  id INTEGER PRIMARY KEY,"
    "  owner INTEGER NOT NULL,"
    "  sha256 TEXT NOT NULL,"
    "  size INTEGER NOT NULL,"
    "  mime TEXT NOT NULL,"
    "  kind INTEGER NOT NULL,"
    "  name TEXT NOT NULL,"
    "  created INTEGER NOT NULL,"
    "  width INTEGER NOT NULL DEFAULT 0,"
    "  height INTEGER NOT NULL DEFAULT 0,"
    "  placeholder TEXT,"
    "  thumb_sha TEXT,"
    "  gc_after INTEGER NOT NULL);"
    "CREATE INDEX media_owner ON media(owner);"
    "CREATE INDEX media_sha ON media(sha256);"
    "CREATE INDEX media_thumb ON media(thumb_sha) WHERE thumb_sha IS NOT NULL;"
    "CREATE INDEX media_gc ON media(gc_after);"
    "CREATE TABLE media_refs("
    "  media_id INTEGER NOT NULL,"
    "  conv_id INTEGER NOT NULL,"
    "  seq INTEGER NOT NULL,"
    "  PRIMARY KEY(media_id, conv_id, seq)) WITHOUT ROWID;"
    "CREATE INDEX media_refs_msg ON media_refs(conv_id, seq);"
    /* a MESSAGE's data.attachments are its references; an edit keeps them;
     * a delete (or the row's removal) drops them and starts the grace period */
    "CREATE TRIGGER events_media_ai AFTER INSERT ON events"
    " WHEN new.kind = 2 AND instr(coalesce(new.data, ''), '\"attachments\"') > 0"
    " BEGIN INSERT OR IGNORE INTO media_refs(media_id, conv_id, seq)"
    "   SELECT json_extract(a.value, '$.id'), new.conv_id, new.seq"
    "   FROM json_each(new.data, '$.attachments') a; END;"
    "CREATE TRIGGER events_media_keep AFTER UPDATE OF data ON events"
    " WHEN new.kind = 2 AND new.deleted_ts = 0 AND instr(coalesce(old.data, ''), '\"attachments\"') > 0"
    "   AND json_extract(coalesce(new.data, '{}'), '$.attachments') IS NULL"
    " BEGIN UPDATE events SET data = json_set(coalesce(new.data, '{}'), '$.attachments',"
    "   json(json_extract(old.data, '$.attachments'))) WHERE conv_id = new.conv_id AND seq = new.seq; END;"
    "CREATE TRIGGER events_media_del AFTER UPDATE OF deleted_ts ON events"
    " WHEN new.kind = 2 AND new.deleted_ts > 0 AND old.deleted_ts = 0"
    " BEGIN UPDATE media SET gc_after = new.deleted_ts WHERE id IN"
    "   (SELECT media_id FROM media_refs WHERE conv_id = new.conv_id AND seq = new.seq);"
    "   DELETE FROM media_refs WHERE conv_id = new.conv_id AND seq = new.seq; END;"
    "CREATE TRIGGER events_media_ad AFTER DELETE ON events WHEN old.kind = 2"
    " BEGIN UPDATE media SET gc_after = max(gc_after, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)) WHERE id IN"
    "   (SELECT media_id FROM media_refs WHERE conv_id = old.conv_id AND seq = old.seq);"
    "   DELETE FROM media_refs WHERE conv_id = old.conv_id AND seq = old.seq; END;",
    /* 9 -> 10: the search index moves to its own file, search.db, filled by
     * a thread of its own (store_sqlite_index.c); parley.db keeps the
     * queue: every new message (op 0), changed text (1) and erased text or
     * removed row (2), in order (qid). search_pair ties a search.db to this
     * database (a new token: search.db is rebuilt from the queue). */
    "DROP TRIGGER events_fts_ai; DROP TRIGGER events_fts_au; DROP TRIGGER events_fts_ad;"
    "DROP TABLE events_fts; DROP TABLE fts_pending;"
    "CREATE TABLE fts_queue(qid INTEGER PRIMARY KEY, id INTEGER NOT NULL, conv_id INTEGER NOT NULL,"
    "  seq INTEGER NOT NULL, op INTEGER NOT NULL);"
    "CREATE TRIGGER events_fts_ai AFTER INSERT ON events WHEN new.kind = 2 AND new.body IS NOT NULL"
    " BEGIN INSERT INTO fts_queue(id, conv_id, seq, op) VALUES(new.id, new.conv_id, new.seq, 0); END;"
    "CREATE TRIGGER events_fts_au AFTER UPDATE OF body ON events WHEN new.kind = 2"
    " BEGIN INSERT INTO fts_queue(id, conv_id, seq, op)"
    "   VALUES(new.id, new.conv_id, new.seq, CASE WHEN new.body IS NULL THEN 2 ELSE 1 END); END;"
    "CREATE TRIGGER events_fts_ad AFTER DELETE ON events WHEN old.kind = 2"
    " BEGIN INSERT INTO fts_queue(id, conv_id, seq, op) VALUES(old.id, old.conv_id, old.seq, 2); END;"
    "CREATE TABLE search_pair(id INTEGER PRIMARY KEY CHECK (id = 1), token TEXT NOT NULL);"
    "INSERT INTO search_pair(id, token) VALUES(1, lower(hex(randomblob(16))));",
    /* 10 -> 11: a new event's search-queue row and media references are
     * written by the writer's code (store_sqlite_write.c, w_append), not by
     * AFTER INSERT triggers: a trigger makes the event insert a multi-write
     * statement, which SQLite runs with a statement journal, a copy of
     * every page it touches (11 % of the writer at the 1:1 peak,
     * docs/benchmarks.md "Issue 11: the event insert without triggers").
     * Edits and deletes keep their triggers. */
    "DROP TRIGGER events_fts_ai; DROP TRIGGER events_media_ai;",
    /* 11 -> 12: push notifications (store.h invariant 10,
     * store_sqlite_push.c): the tokens logins registered, and the outbox
     * the push worker drains (a row per MESSAGE while push is on; only:
     * NULL, or the device ids a retry goes to, comma-separated). */
    "CREATE TABLE push_devices("
    "  id INTEGER PRIMARY KEY,"
    "  user_id INTEGER NOT NULL,"
    "  login INTEGER NOT NULL,"
    "  platform INTEGER NOT NULL,"
    "  token TEXT NOT NULL,"
    "  created INTEGER NOT NULL,"
    "  UNIQUE(platform, token));"
    "CREATE INDEX push_devices_user ON push_devices(user_id);"
    "CREATE INDEX push_devices_login ON push_devices(login);"
    "CREATE TABLE push_outbox("
    "  id INTEGER PRIMARY KEY,"
    "  conv_id INTEGER NOT NULL,"
    "  seq INTEGER NOT NULL,"
    "  lease INTEGER NOT NULL DEFAULT 0,"
    "  attempts INTEGER NOT NULL DEFAULT 0,"
    "  only_devices TEXT);",
    /* 12 -> 13: workspaces and their channels (store.h invariant 11,
     * store_sqlite_ws.c): a channel is a conversation of kind 3 with a
     * workspace, a name (title) unique in it, and private 0/1. */
    "CREATE TABLE workspaces("
    "  id INTEGER PRIMARY KEY,"
    "  name TEXT NOT NULL,"
    "  created_by INTEGER NOT NULL,"
    "  created INTEGER NOT NULL,"
    "  general INTEGER NOT NULL DEFAULT 0,"
    "  next_join INTEGER NOT NULL DEFAULT 0);"
    "CREATE TABLE workspace_members("
    "  workspace_id INTEGER NOT NULL,"
    "  user_id INTEGER NOT NULL,"
    "  role INTEGER NOT NULL,"
    "  joined INTEGER NOT NULL,"          /* order of joining */
    "  PRIMARY KEY(workspace_id, user_id)) WITHOUT ROWID;"
    "CREATE INDEX workspace_members_user ON workspace_members(user_id, workspace_id);"
    "ALTER TABLE conversations ADD COLUMN workspace INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE conversations ADD COLUMN private INTEGER NOT NULL DEFAULT 0;"
    "CREATE UNIQUE INDEX conversations_channel ON conversations(workspace, title) WHERE kind = 3;",
    /* 13 -> 14: reports of messages (store.h invariant 12,
     * store_sqlite_reports.c), with a snapshot of the message */
    "CREATE TABLE reports("
    "  id INTEGER PRIMARY KEY,"
    "  conv_id INTEGER NOT NULL,"
    "  seq INTEGER NOT NULL,"
    "  reporter INTEGER NOT NULL,"
    "  sender INTEGER NOT NULL,"
    "  reason TEXT NOT NULL,"
    "  note TEXT,"
    "  body TEXT,"
    "  msg_id INTEGER NOT NULL,"
    "  msg_ts INTEGER NOT NULL,"
    "  created INTEGER NOT NULL,"
    "  resolved INTEGER NOT NULL DEFAULT 0,"
    "  resolved_by INTEGER NOT NULL DEFAULT 0,"
    "  UNIQUE(conv_id, seq, reporter));"
    "CREATE INDEX reports_conv ON reports(conv_id, id);"
    "CREATE INDEX reports_open ON reports(id) WHERE resolved = 0;",
    /* 14 -> 15: the data lifecycle (store.h invariant 13,
     * store_sqlite_life.c): retention and legal hold of conversations and
     * workspaces, deleted users. purged_seq / purge_next: the purge's place
     * in a conversation (every seq up to purged_seq is past; the next event
     * is not older than purge_next, ms), so a run skips, by the
     * conversations table alone, every conversation with nothing to erase.
     * erasures: deleted users whose messages the purge still looks for,
     * conversation by conversation (next_conv: done up to it) through
     * events_idem, so no index on the sender slows every send. */
    "ALTER TABLE conversations ADD COLUMN retention INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE conversations ADD COLUMN hold INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE conversations ADD COLUMN purged_seq INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE conversations ADD COLUMN purge_next INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE workspaces ADD COLUMN retention INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE workspaces ADD COLUMN hold INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE users ADD COLUMN deleted INTEGER NOT NULL DEFAULT 0;"
    "CREATE INDEX conversations_retention ON conversations(id) WHERE retention > 0;"
    "CREATE TABLE erasures(user_id INTEGER PRIMARY KEY, next_conv INTEGER NOT NULL);",
    /* 15 -> 16: blocks (store.h invariant 14, store_sqlite_reports.c);
     * conversations.blocked: a direct one under a block, read by the send
     * path with the conversation's state */
    "CREATE TABLE blocks(user_id INTEGER NOT NULL, blocked_id INTEGER NOT NULL, created INTEGER NOT NULL,"
    "  PRIMARY KEY(user_id, blocked_id)) WITHOUT ROWID;"
    "CREATE INDEX blocks_blocked ON blocks(blocked_id);"
    "ALTER TABLE conversations ADD COLUMN blocked INTEGER NOT NULL DEFAULT 0;",
    /* 16 -> 17: the conversations a deleted user's erasure pass found held
     * (store_sqlite_life.c): erased once the hold is released */
    "CREATE TABLE erasure_held(user_id INTEGER NOT NULL, conv_id INTEGER NOT NULL,"
    "  PRIMARY KEY(user_id, conv_id)) WITHOUT ROWID;",
    /* 17 -> 18: the MESSAGEs without a client_msg_id (the store allows
     * them; the API never stores one), for the deleted users' erasure,
     * which finds the others through events_idem. Partial: a send with a
     * client_msg_id writes nothing to it. */
    "CREATE INDEX events_no_cmid ON events(conv_id, sender) WHERE client_msg_id IS NULL AND kind = 2;",
    /* 18 -> 19: own_unread recounted where a member joined after the
     * start (joined_seq > 1): a receipt took a re-joined member's messages
     * of its earlier membership out of it, which it never counted (below
     * zero, unread stuck too high; job_receipt now counts from joined_seq) */
    "UPDATE members SET own_unread = (SELECT count(*) FROM events e WHERE e.conv_id = members.conv_id"
    "  AND e.seq > max(members.read_seq, members.joined_seq - 1) AND e.kind = 2 AND e.sender = members.user_id)"
    "  WHERE joined_seq > 1;",
    /* 19 -> 20: push device ids never come back (AUTOINCREMENT): a rowid
     * table hands the largest id out again once its row is deleted, so a
     * relay keyed on `device`, or a client unregistering an id it kept,
     * met another user's device (audit U2). PostgreSQL's identity column
     * never reuses one. */
    "CREATE TABLE push_devices_new("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  user_id INTEGER NOT NULL,"
    "  login INTEGER NOT NULL,"
    "  platform INTEGER NOT NULL,"
    "  token TEXT NOT NULL,"
    "  created INTEGER NOT NULL,"
    "  UNIQUE(platform, token));"
    "INSERT INTO push_devices_new(id, user_id, login, platform, token, created)"
    "  SELECT id, user_id, login, platform, token, created FROM push_devices;"
    "DROP TABLE push_devices;"
    "ALTER TABLE push_devices_new RENAME TO push_devices;"
    "CREATE INDEX push_devices_user ON push_devices(user_id);"
    "CREATE INDEX push_devices_login ON push_devices(login);",
    /* 20 -> 21: a channel's lookalike key (core/lookalike.h, store.h
     * invariant 11): a name that looks like another channel's is a
     * conflict. Channels made before get theirs when a channel is next
     * made in their workspace (store_sqlite_ws.c lookalike_taken). */
    "ALTER TABLE conversations ADD COLUMN name_key TEXT;"
    "CREATE INDEX conversations_channel_key ON conversations(workspace, name_key) WHERE kind = 3;",
};
#define SCHEMA_VERSION ((int)(sizeof migrations / sizeof migrations[0]))

/* ---- statements ---------------------------------------------------------- */

const char *const sq_w_sql[W__COUNT] = {
    [W_BEGIN]       = "BEGIN IMMEDIATE",
    [W_COMMIT]      = "COMMIT",
    [W_ROLLBACK]    = "ROLLBACK",
    [W_SAVEPOINT]   = "SAVEPOINT job",
    [W_RELEASE]     = "RELEASE job",
    [W_ROLLBACK_TO] = "ROLLBACK TO job",
    [W_USER_INSERT] = "INSERT INTO users(username, pwhash, created) VALUES(?1, ?2, ?3)",
    [W_USER_EXISTS] = "SELECT 1 FROM users WHERE id = ?1 AND deleted = 0",
    [W_LOGIN_INSERT] = "INSERT INTO logins(user_id, refresh_hash, expires, revoked, created)"
                       " VALUES(?1, ?2, ?3, 0, ?4)",
    [W_LOGIN_ROTATE] = "UPDATE logins SET prev_hash = refresh_hash, rotated = ?4,"
                       " refresh_hash = ?1, expires = ?2"
                       " WHERE id = ?3 AND revoked = 0 AND expires > ?4 AND refresh_hash = ?5",
    [W_LOGIN_REVOKE] = "UPDATE logins SET revoked = 1 WHERE id = ?1",
    [W_CONV_BY_KEY] = "SELECT id FROM conversations WHERE direct_key = ?1",
    [W_CONV_INSERT] = "INSERT INTO conversations(kind, title, direct_key, last_seq, last_ts,"
                      " next_join, created, msg_count, member_count, workspace, private)"
                      " VALUES(?1, ?2, ?3, 0, 0, ?4, ?5, 0, ?6, ?7, ?8)",
    [W_CONV_KIND]   = "SELECT kind FROM conversations WHERE id = ?1",
    [W_CONV_STATE]  = "SELECT last_seq, last_ts, msg_count, member_count, e2ee, blocked FROM conversations WHERE id = ?1",
    [W_CONV_UPDATE] = "UPDATE conversations SET last_seq = ?1, last_ts = ?2, msg_count = ?3,"
                      " member_count = ?4 WHERE id = ?5",
    [W_CONV_NEXT_JOIN] = "UPDATE conversations SET next_join = next_join + 1 WHERE id = ?1"
                         " RETURNING next_join - 1",
    [W_MEMBER_ROLE] = "SELECT role FROM members WHERE conv_id = ?1 AND user_id = ?2",
    [W_MEMBER_INSERT] = "INSERT INTO members(conv_id, user_id, role, joined, joined_seq)"
                        " VALUES(?1, ?2, ?3, ?4, ?5)",
    [W_MEMBER_DELETE] = "DELETE FROM members WHERE conv_id = ?1 AND user_id = ?2",
    [W_MEMBER_HAS_ADMIN] = "SELECT 1 FROM members WHERE conv_id = ?1 AND role = 2 LIMIT 1",
    [W_MEMBER_OLDEST] = "SELECT user_id FROM members WHERE conv_id = ?1 ORDER BY joined LIMIT 1",
    [W_MEMBER_SET_ROLE] = "UPDATE members SET role = ?1 WHERE conv_id = ?2 AND user_id = ?3",
    [W_MEMBER_OTHER_ADMIN] = "SELECT 1 FROM members WHERE conv_id = ?1 AND role = 2 AND user_id <> ?2 LIMIT 1",
    [W_EVENT_DUP]   = "SELECT seq, id, ts, body FROM events"
                      " WHERE conv_id = ?1 AND sender = ?2 AND client_msg_id = ?3",
    [W_EVENT_INSERT] = "INSERT INTO events(conv_id, seq, id, ts, kind, sender, client_msg_id,"
                       " body, data, subject, msg_no, ref)"
                       " VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"
                       " ON CONFLICT(conv_id, sender, client_msg_id) WHERE client_msg_id IS NOT NULL"
                       " DO NOTHING",
    [W_EVENT_AT]    = "SELECT kind, sender, msg_no FROM events WHERE conv_id = ?1 AND seq = ?2",
    [W_MEMBER_CURSORS] = "SELECT delivered_seq, read_seq, joined_seq, own_unread FROM members"
                         " WHERE conv_id = ?1 AND user_id = ?2",
    [W_MEMBER_SET_CURSORS] = "UPDATE members SET delivered_seq = ?1, read_seq = ?2"
                             " WHERE conv_id = ?3 AND user_id = ?4",
    [W_MENTIONS_ABOVE] = "SELECT count(*) FROM mentions WHERE conv_id = ?1 AND user_id = ?2 AND seq > ?3",
    [W_OWN_IN_RANGE] = "SELECT count(*) FROM events WHERE conv_id = ?1 AND seq > ?2 AND seq <= ?3"
                       " AND kind = 2 AND sender = ?4",
    [W_OWN_UNREAD_ADD] = "UPDATE members SET own_unread = own_unread + ?1 WHERE conv_id = ?2 AND user_id = ?3",
    [W_USER_LAST_SEEN] = "UPDATE users SET last_seen = ?1 WHERE id = ?2 AND last_seen < ?1",
    [W_MEMBER_JOINED] = "SELECT role, joined_seq FROM members WHERE conv_id = ?1 AND user_id = ?2",
    [W_TARGET]      = "SELECT kind, sender, ts, deleted_ts, body, ref, pinned_ts FROM events"
                      " WHERE conv_id = ?1 AND seq = ?2",
    [W_MEMBER_BY_NAME] = "SELECT m.user_id FROM members m JOIN users u ON u.id = m.user_id"
                         " WHERE m.conv_id = ?1 AND u.username = ?2",
    [W_MENTION_INSERT] = "INSERT OR IGNORE INTO mentions(conv_id, user_id, seq) VALUES(?1, ?2, ?3)",
    [W_MENTION_ALL] = "INSERT OR IGNORE INTO mentions(conv_id, user_id, seq)"
                      " SELECT conv_id, user_id, ?2 FROM members WHERE conv_id = ?1 AND user_id <> ?3",
    [W_MENTION_DELETE] = "DELETE FROM mentions WHERE conv_id = ?1 AND seq = ?2",
    [W_MSG_EDIT]    = "UPDATE events SET body = ?1, data = ?2, edited_ts = ?3 WHERE conv_id = ?4 AND seq = ?5",
    [W_MSG_ERASE]   = "UPDATE events SET body = NULL, data = NULL, deleted_ts = ?1, pinned_ts = 0,"
                      " edited_ts = 0 WHERE conv_id = ?2 AND seq = ?3",
    /* a deleted message's edits (6) and reactions (8) keep only their target */
    [W_EDITS_ERASE] = "UPDATE events SET body = NULL, data = json_object('target', ref)"
                      " WHERE conv_id = ?1 AND ref = ?2 AND ref > 0 AND kind IN (6, 8)",
    [W_REACTIONS_ERASE] = "DELETE FROM reactions WHERE conv_id = ?1 AND seq = ?2",
    [W_REACTION_HAS] = "SELECT 1 FROM reactions WHERE conv_id = ?1 AND seq = ?2 AND emoji = ?3"
                       " AND user_id = ?4",
    [W_REACTION_KINDS] = "SELECT count(DISTINCT emoji), coalesce(max(emoji = ?3), 0) FROM reactions"
                         " WHERE conv_id = ?1 AND seq = ?2",
    [W_REACTION_INSERT] = "INSERT INTO reactions(conv_id, seq, emoji, user_id, first_seq)"
                          " VALUES(?1, ?2, ?3, ?4, ?5)",
    [W_REACTION_DELETE] = "DELETE FROM reactions WHERE conv_id = ?1 AND seq = ?2 AND emoji = ?3"
                          " AND user_id = ?4",
    [W_REACTION_COUNT] = "SELECT count(*) FROM reactions WHERE conv_id = ?1 AND seq = ?2 AND emoji = ?3",
    [W_PIN_COUNT]   = "SELECT count(*) FROM events WHERE conv_id = ?1 AND pinned_ts > 0",
    [W_PIN_SET]     = "UPDATE events SET pinned_ts = ?1 WHERE conv_id = ?2 AND seq = ?3",
    [W_NOTIFY_SET]  = "UPDATE members SET notify = ?1 WHERE conv_id = ?2 AND user_id = ?3",
    /* the search queue's rows the indexer is done with (?1), always but
     * the newest, so that the next qid stays above what is done
     * (store_sqlite_index.c) */
    [W_FTS_PRUNE]   = "DELETE FROM fts_queue WHERE qid <= ?1 AND qid < (SELECT max(qid) FROM fts_queue)",
    [W_FTS_QUEUE]   = "INSERT INTO fts_queue(id, conv_id, seq, op) VALUES(?1, ?2, ?3, 0)",
    [W_PUSH_OUTBOX] = "INSERT INTO push_outbox(conv_id, seq) VALUES(?1, ?2)",
    [W_MEDIA_REFS]  = "INSERT OR IGNORE INTO media_refs(media_id, conv_id, seq)"
                      " SELECT json_extract(a.value, '$.id'), ?1, ?2 FROM json_each(?3, '$.attachments') a",
};

/* The asking member's view of a conversation. unread follows store.h
 * invariant 5: msg_no is looked up through the events primary key. */
#define CONV_COLUMNS \
    "c.id, c.kind, c.title, c.last_seq, c.last_ts, c.member_count, m.role, m.joined_seq," \
    " m.delivered_seq, m.read_seq," \
    " c.msg_count - coalesce((SELECT r.msg_no FROM events r WHERE r.conv_id = c.id" \
    "   AND r.seq = max(m.read_seq, m.joined_seq - 1)), 0) - m.own_unread," \
    " (SELECT count(*) FROM mentions x WHERE x.conv_id = c.id AND x.user_id = m.user_id" \
    "   AND x.seq > max(m.read_seq, m.joined_seq - 1)), m.notify, c.e2ee, c.workspace, c.private, c.blocked"
/* An event e with what its current form needs (store_sqlite_read.c
 * event_row): its marks and the parent p of a reply. */
#define EVENT_COLUMNS \
    "e.seq, e.id, e.ts, e.kind, e.sender, e.client_msg_id, e.body, e.data, e.subject, e.ref," \
    " e.edited_ts, e.deleted_ts, e.pinned_ts, p.sender, p.body, p.deleted_ts, p.kind"
#define EVENT_FROM \
    " FROM events e LEFT JOIN events p ON e.kind = 2 AND e.ref > 0 AND p.conv_id = e.conv_id" \
    " AND p.seq = e.ref"

const char *const sq_r_sql[R__COUNT] = {
    [R_BEGIN]        = "BEGIN",
    [R_COMMIT]       = "COMMIT",
    [R_USER_BY_NAME] = "SELECT id, username, pwhash, last_seen FROM users WHERE username = ?1 AND deleted = 0",
    [R_USER_BY_ID]   = "SELECT id, username, pwhash, last_seen FROM users WHERE id = ?1",
    [R_LOGIN]        = "SELECT id, user_id, refresh_hash, expires, revoked, prev_hash, rotated, created"
                       " FROM logins WHERE id = ?1",
    [R_CONV_LIST]    = "SELECT " CONV_COLUMNS " FROM members m"
                       " JOIN conversations c ON c.id = m.conv_id"
                       " WHERE m.user_id = ?1 ORDER BY c.last_ts DESC, c.id DESC",
    [R_CONV_LIST_LAST] = "SELECT " CONV_COLUMNS ", l.seq, l.id, l.ts, l.kind, l.sender,"
                       " l.client_msg_id, l.body, l.data, l.subject, l.ref, l.edited_ts,"
                       " l.deleted_ts, l.pinned_ts, p.sender, p.body, p.deleted_ts, p.kind, c.retention,"
                       " coalesce((SELECT w.retention FROM workspaces w WHERE w.id = c.workspace), 0)"
                       " FROM members m"
                       " JOIN conversations c ON c.id = m.conv_id"
                       " LEFT JOIN events l ON l.conv_id = c.id AND l.seq = c.last_seq"
                       "   AND c.last_seq >= m.joined_seq"
                       " LEFT JOIN events p ON l.kind = 2 AND l.ref > 0 AND p.conv_id = l.conv_id"
                       "   AND p.seq = l.ref"
                       " WHERE m.user_id = ?1 ORDER BY c.last_ts DESC, c.id DESC",
    [R_CONV_GET]     = "SELECT " CONV_COLUMNS " FROM members m"
                       " JOIN conversations c ON c.id = m.conv_id"
                       " WHERE m.conv_id = ?1 AND m.user_id = ?2",
    [R_CONV_MEMBERS] = "SELECT m.user_id, m.role, m.joined_seq, m.delivered_seq, m.read_seq, u.username"
                       " FROM members m JOIN users u ON u.id = m.user_id"
                       " WHERE m.conv_id = ?1 ORDER BY m.joined",
    [R_MEMBER]       = "SELECT role, joined_seq FROM members WHERE conv_id = ?1 AND user_id = ?2",
    [R_EVENTS_ASC]   = "SELECT " EVENT_COLUMNS EVENT_FROM
                       " WHERE e.conv_id = ?1 AND e.seq > ?2 AND e.seq < ?3 ORDER BY e.seq LIMIT ?4",
    [R_EVENTS_DESC]  = "SELECT " EVENT_COLUMNS EVENT_FROM
                       " WHERE e.conv_id = ?1 AND e.seq > ?2 AND e.seq < ?3 ORDER BY e.seq DESC LIMIT ?4",
    [R_EVENT_AT]     = "SELECT " EVENT_COLUMNS EVENT_FROM " WHERE e.conv_id = ?1 AND e.seq = ?2",
    [R_PINS]         = "SELECT " EVENT_COLUMNS EVENT_FROM
                       " WHERE e.conv_id = ?1 AND e.pinned_ts > 0 AND e.seq >= ?2"
                       " ORDER BY e.pinned_ts DESC, (SELECT max(pe.seq) FROM events pe"
                       "   WHERE pe.conv_id = e.conv_id AND pe.ref = e.seq AND pe.ref > 0 AND pe.kind = 9) DESC"
                       " LIMIT ?3",
    [R_MENTIONS]     = "SELECT " EVENT_COLUMNS " FROM mentions x JOIN events e ON e.conv_id = x.conv_id"
                       " AND e.seq = x.seq LEFT JOIN events p ON e.kind = 2 AND e.ref > 0"
                       " AND p.conv_id = e.conv_id AND p.seq = e.ref"
                       " WHERE x.conv_id = ?1 AND x.user_id = ?2 AND x.seq > ?3 ORDER BY x.seq LIMIT ?4",
    [R_REACTIONS]    = "SELECT seq, emoji, count(*), max(user_id = ?4), min(first_seq) AS f FROM reactions"
                       " WHERE conv_id = ?1 AND seq >= ?2 AND seq <= ?3 GROUP BY seq, emoji"
                       " ORDER BY seq, f, emoji",
    /* ?1 user, ?2 MATCH expression, ?3 below this id, ?4 conv (0: any), ?5
     * sender (0: any), ?6 <= ts < ?7, ?8 mentions of ?1 only, ?9 limit.
     * Membership and joined_seq are part of the join (invariant 8). */
    [R_SEARCH]       = "SELECT f.conv_id, snippet(events_fts, 0, char(2), char(3), '…', 24), " EVENT_COLUMNS
                       " FROM s.events_fts f"
                       " JOIN members m ON m.conv_id = f.conv_id AND m.user_id = ?1"
                       " JOIN events e ON e.conv_id = f.conv_id AND e.seq = f.seq"
                       " LEFT JOIN events p ON e.kind = 2 AND e.ref > 0 AND p.conv_id = e.conv_id"
                       "   AND p.seq = e.ref"
                       " WHERE events_fts MATCH ?2 AND f.rowid < ?3 AND (?4 = 0 OR f.conv_id = ?4)"
                       "   AND e.seq >= m.joined_seq AND e.kind = 2 AND e.body IS NOT NULL"
                       "   AND e.deleted_ts = 0 AND (?5 = 0 OR e.sender = ?5) AND e.ts >= ?6 AND e.ts < ?7"
                       /* the indexed text is the current one (not yet re-indexed after an edit) */
                       "   AND f.body = replace(replace(e.body, char(2), ' '), char(3), ' ')"
                       "   AND (?8 = 0 OR EXISTS (SELECT 1 FROM mentions x WHERE x.conv_id = e.conv_id"
                       "     AND x.user_id = ?1 AND x.seq = e.seq))"
                       "   AND (?10 = 0 OR EXISTS (SELECT 1 FROM media_refs r WHERE r.conv_id = e.conv_id"
                       "     AND r.seq = e.seq))"
                       " ORDER BY f.rowid DESC LIMIT ?9",
    [R_USER_CONVS]   = "SELECT conv_id FROM members WHERE user_id = ?1 LIMIT ?2",
    [R_USER_SEARCH]  = "SELECT id, username, last_seen FROM users WHERE instr(username, ?2) > 0 AND deleted = 0"
                       " AND (id = ?1 OR id IN (SELECT b.user_id FROM members a JOIN members b"
                       "   ON b.conv_id = a.conv_id WHERE a.user_id = ?1))"
                       " ORDER BY instr(username, ?2) > 1, username LIMIT ?3",
    [R_SHARES]       = "SELECT 1 FROM members a JOIN members b ON b.conv_id = a.conv_id"
                       " AND b.user_id = ?2 JOIN conversations c ON c.id = a.conv_id AND c.blocked = 0"
                       " WHERE a.user_id = ?1 LIMIT 1",
    [R_USER_SHORT]   = "SELECT id, username, last_seen FROM users WHERE id = ?1",
    [R_CONV_HEAD]    = "SELECT last_seq FROM conversations WHERE id = ?1",
    [R_MEMBERSHIPS]  = "SELECT m.conv_id, m.joined_seq, c.last_seq FROM members m"
                       " JOIN conversations c ON c.id = m.conv_id WHERE m.user_id = ?1",
    /* store.h invariant 13: no index leads by sender (one would cost every
     * send), so a data export scans the log (rare, on a reader) */
    [R_USER_MESSAGES] = "SELECT e.conv_id, " EVENT_COLUMNS EVENT_FROM
                        " WHERE e.sender = ?1 AND e.kind = 2 AND e.deleted_ts = 0 AND e.id > ?2"
                        " ORDER BY e.id LIMIT ?3",
};

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
static int migrate(sqlite3 *db, char *err, size_t errlen) {
    int64_t v = 0;
    if (db_int(db, "PRAGMA user_version", &v) != 0) {
        snprintf(err, errlen, "cannot read the schema version");
        return -1;
    }
    if (v > SCHEMA_VERSION) {
        snprintf(err, errlen, "the database was written by a newer Parley (schema %lld)", (long long)v);
        return -1;
    }
    int64_t from = v;
    for (; v < SCHEMA_VERSION; v++) {
        char setv[48];
        snprintf(setv, sizeof setv, "PRAGMA user_version = %d", (int)v + 1);
        if (sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK) {
            snprintf(err, errlen, "cannot lock the database for migration");
            return -1;
        }
        if (sqlite3_exec(db, migrations[v], NULL, NULL, NULL) != SQLITE_OK ||
            sqlite3_exec(db, setv, NULL, NULL, NULL) != SQLITE_OK ||
            sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
            snprintf(err, errlen, "schema migration %d -> %d failed: %s", (int)v, (int)v + 1,
                     sqlite3_errmsg(db));
            sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
            return -1;
        }
    }
    if (from < SCHEMA_VERSION)                      /* one way: an older parleyd refuses it now */
        pl_log(PL_LOG_INFO, 0, from ? "store: schema migrated" : "store: schema created", "\"from\":%lld,\"to\":%d",
               (long long)from, SCHEMA_VERSION);
    return 0;
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
    else if (migrate(s->wdb, err, errlen) != 0)
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
    if (!err[0] && db_int(s->wdb, "SELECT coalesce(min(qid), 1) - 1 FROM fts_queue", &s->fts_pruned) != 0)
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
