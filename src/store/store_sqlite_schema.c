/* store_sqlite_schema.c — the SQLite backend's schema: the migrations'
 * SQL, one step per version (PRAGMA user_version), and bringing parley.db
 * up to date at open.
 *
 * Owns: migrations[] (append only) and SCHEMA_VERSION. Does not own: the
 * statements that read and write these tables (store_sqlite_stmts.c), the
 * writer connection it migrates on (store_sqlite.c opens it), the design
 * note (store_sqlite.c).
 */
#include "sqlite_int.h"

#include <stdio.h>

#include "../core/log.h"

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

/* Brings the schema to SCHEMA_VERSION, one transaction per step. */
int sq_migrate(sqlite3 *db, char *err, size_t errlen) {
    int64_t v = 0;
    if (sq_db_int(db, "PRAGMA user_version", &v) != 0) {
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
