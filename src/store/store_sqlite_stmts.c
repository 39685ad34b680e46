/* store_sqlite_stmts.c — the SQLite backend's prepared statements: sq_w_sql,
 * the SQL of every W_* statement (prepared on the writer connection), and
 * sq_r_sql, of every R_* statement (prepared on each reader's connection);
 * sqlite_int.h lists them, store_sqlite.c prepares them at open.
 *
 * Owns: that SQL, and the fragments only the readers' statements use
 * (CONV_COLUMNS, EVENT_COLUMNS, EVENT_FROM): the column lists
 * store_sqlite_read.c decodes. Does not own: running them (the writer's
 * and readers' files), the rare jobs' statements (prepared on use in their
 * own files), the schema (store_sqlite_schema.c).
 */
#include "sqlite_int.h"

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
    [W_CONV_STATE]  = "SELECT last_seq, last_ts, msg_count, member_count, e2ee, blocked, kind FROM conversations"
                      " WHERE id = ?1",
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
