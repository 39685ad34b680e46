/* store_pg_stmts_r.c — the readers' statements: pg_r_sql, the SQL of every
 * R_* statement (pg_int.h lists them), prepared on each reader's connection
 * (pgc_prepare, store_pg_conn.c).
 *
 * Owns: that SQL, and the fragments only the readers' statements use
 * (CONV_COLUMNS, EV_COLUMNS, PAGE, WS_COLUMNS, REPORT_COLUMNS, ...): the
 * column lists store_pg_read.c and the job files decode.
 * Does not own: running them (store_pg_read.c and the job files), the
 * writer's statements (store_pg_stmts_w.c, whose top comment says how
 * values are passed), the fragments both tables use (pg_int.h).
 */
#include "pg_int.h"

/* The asking member's view of a conversation. unread follows store.h
 * invariant 5: msg_no is looked up through the events primary key;
 * unread_mentions invariant 7: a range of the mentions primary key. The
 * member's row is m, its conversation c (CONV_OF_M); with m all NULL (no
 * member: R_CHANNELS) the per-member columns are NULL, read as 0. */
#define CONV_COLUMNS \
    "c.id, c.kind, c.title, c.last_seq, c.last_ts, c.member_count, m.role, m.joined_seq," \
    " m.delivered_seq, m.read_seq," \
    " c.msg_count - coalesce((SELECT r.msg_no FROM events r WHERE r.conv_id = c.id" \
    "   AND r.seq = greatest(m.read_seq, m.joined_seq - 1)), 0) - m.own_unread," \
    " (SELECT count(*) FROM mentions x WHERE x.conv_id = c.id AND x.user_id = m.user_id" \
    "   AND x.seq > greatest(m.read_seq, m.joined_seq - 1)), m.notify, c.e2ee, c.workspace, c.private, c.blocked"
/* The conversation c of the members rows m, looked up per row through its
 * primary key in a subquery the planner may not flatten (OFFSET 0), as in
 * R_MEMBERSHIPS: without statistics (a database just filled, before
 * autovacuum's first ANALYZE) a plain join hash-joined all of
 * conversations for every conversation list: in a reconnect storm's
 * database (1,000 conversations) 0.24-0.27 ms of PostgreSQL's CPU a call
 * against 0.04-0.06, and half of its statement time in the storm. */
#define CONV_OF_M " CROSS JOIN LATERAL (SELECT c.id, c.kind, c.title, c.last_seq, c.last_ts, c.member_count," \
    " c.msg_count, c.e2ee, c.workspace, c.private, c.blocked, c.retention FROM conversations c WHERE c.id = m.conv_id" \
    " OFFSET 0) c"
/* An event e with what its current form needs (store_pg_read.c event_row):
 * its marks, and the parent p of a reply (400 bytes hold the preview's 100
 * characters). EV_COLUMNS_V: the same through a subquery v. */
#define EV_COLUMNS \
    "e.seq, e.id, e.ts, e.kind, e.sender, e.client_msg_id, e.body, e.data, e.subject, e.ref," \
    " e.edited_ts, e.deleted_ts, e.pinned_ts, p.sender AS p_sender," \
    " substring(p.body FROM 1 FOR 400) AS p_body, p.deleted_ts AS p_deleted, p.seq AS p_seq"
/* A subquery with LIMIT 1, not a plain LEFT JOIN: PostgreSQL then tests
 * "is a reply" once per row (a one-time filter) and probes the index only
 * for replies; the join probed it for every event (a page read of 256
 * events: 1.7 -> 1.3 ms, benchmarks.md "Cluster mode, third session"). */
#define EV_PARENT " LEFT JOIN LATERAL (SELECT p.sender, p.body, p.deleted_ts, p.seq FROM events p" \
    " WHERE e.kind = 2 AND e.ref > 0 AND p.conv_id = e.conv_id AND p.seq = e.ref LIMIT 1) p ON true"
#define EV_FROM " FROM events e" EV_PARENT
#define EV_COLUMNS_V \
    "v.seq, v.id, v.ts, v.kind, v.sender, v.client_msg_id, v.body, v.data, v.subject, v.ref," \
    " v.edited_ts, v.deleted_ts, v.pinned_ts, v.p_sender, v.p_body, v.p_deleted, v.p_seq"
/* Reactions of the messages in the IN (...) that follows, viewer $V: per
 * message and emoji, in order of first use (ties: byte order) */
#define REACT_SELECT(V) \
    "SELECT r.seq, r.emoji, count(*), bool_or(r.user_id = " V "::bigint), min(r.first_seq) AS f" \
    " FROM reactions r WHERE r.conv_id = $1::bigint AND r.seq IN "
#define REACT_ORDER " GROUP BY r.seq, r.emoji ORDER BY r.seq, f, r.emoji COLLATE \"C\""
/* A page of the log and its reactions in one statement: one snapshot, one
 * round trip, no transaction (it was BEGIN, the page, its reactions,
 * COMMIT: four statements a read, the most frequent read of a reconnect
 * storm). SRC is the page (a subquery whose columns NULLS has a NULL for
 * each), materialized once as the CTE page. The rows: first the page's
 * (part 0 and SRC's columns, in page order DIR), then its reactions' (part
 * 1 and r_seq, emoji, n, me, f: per message and emoji, by seq, then in
 * order of first use, ties byte order), ME saying if a row is the viewer's;
 * DIR is "" or " DESC".
 * A page is a run of consecutive seqs, so its reactions are one range of
 * the reactions key, read with one index scan instead of one probe per
 * event (0.65 -> 0.28 ms for 256 events without reactions). Rows of seqs
 * outside the page (a range with holes) are ignored by event_row. */
#define PAGE(SRC, NULLS, ME, DIR) \
    "WITH page AS (" SRC ")" \
    " SELECT 0 AS part, page.*, NULL::bigint AS r_seq, NULL::text COLLATE \"C\" AS emoji, NULL::bigint AS n," \
    "   NULL::bool AS me, NULL::bigint AS f FROM page" \
    " UNION ALL SELECT 1, " NULLS ", r.seq, r.emoji COLLATE \"C\", count(*), bool_or(" ME "), min(r.first_seq)" \
    "   FROM reactions r, (SELECT min(page.seq) AS lo, max(page.seq) AS hi FROM page) b" \
    "   WHERE r.conv_id = $1::bigint AND r.seq >= b.lo AND r.seq <= b.hi GROUP BY r.seq, r.emoji" \
    " ORDER BY part, seq" DIR ", r_seq, f, emoji"
/* An outbox row o's MESSAGE e, unless it is gone or deleted (store.h
 * invariant 10), looked up through the events key (as CONV_OF_M) */
#define PUSH_OUTBOX_MSG " CROSS JOIN LATERAL (SELECT e.id, e.ts, e.sender, e.body," \
    "   strpos(coalesce(e.data, ''), '\"ciphertext\"') > 0 AS encrypted FROM events e" \
    " WHERE e.conv_id = o.conv_id AND e.seq = o.seq AND e.kind = 2 AND e.deleted_ts = 0 OFFSET 0) e"
/* A NULL for each of EV_COLUMNS */
#define EV_NULLS "NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL"
/* A page as viewer $5 (store.h invariant 4): no row if not a member, else
 * its joined_seq and the page from there on (event columns NULL when the
 * page is empty) */
#define PAGE_AS(DIR) \
    PAGE("SELECT m.joined_seq, " EV_COLUMNS_V " FROM members m LEFT JOIN LATERAL" \
         " (SELECT " EV_COLUMNS EV_FROM " WHERE e.conv_id = $1::bigint" \
         "   AND e.seq > greatest($2::bigint, m.joined_seq - 1) AND e.seq < $3::bigint" \
         "   ORDER BY e.seq" DIR " LIMIT $4::int) v ON true" \
         " WHERE m.conv_id = $1::bigint AND m.user_id = $5::bigint", \
         "NULL, " EV_NULLS, "r.user_id = $5::bigint", DIR)
/* A workspace w as its member m sees it (pl_workspace) */
#define WS_COLUMNS "w.id, w.name, w.created_by, w.created, w.general, w.member_count, w.channel_count, m.role," \
    " w.retention, w.hold"
/* A report r (pl_report; store_pg_reports.c report_row), the names and
 * the conversation's kind looked up per row returned (below the LIMIT) */
#define REPORT_COLUMNS "r.id, r.conv_id, r.seq, (SELECT c.kind FROM conversations c WHERE c.id = r.conv_id)," \
    " r.reporter, (SELECT u.username FROM users u WHERE u.id = r.reporter), r.sender," \
    " (SELECT u.username FROM users u WHERE u.id = r.sender), r.reason, r.note, r.body, r.msg_id, r.msg_ts," \
    " r.created, r.resolved, r.resolved_by"
/* The viewer's first visible seq minus one (0 without a viewer) */
#define JOINED_BEFORE(V) \
    "coalesce((SELECT joined_seq FROM members WHERE conv_id = $1::bigint AND user_id = " V "::bigint), 1) - 1"

const char *const pg_r_sql[R__COUNT] = {
    [R_BEGIN]        = "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY",
    [R_COMMIT]       = "COMMIT",
    [R_ROLLBACK]     = "ROLLBACK",
    [R_USER_BY_NAME] = "SELECT id, username, pwhash, last_seen FROM users WHERE username = $1::text"
                       " AND deleted = 0",                        /* store.h invariant 13 */
    [R_USER_BY_ID]   = "SELECT id, username, pwhash, last_seen FROM users WHERE id = $1::bigint",
    [R_LOGIN]        = "SELECT id, user_id, refresh_hash, expires, revoked, prev_hash, rotated, created"
                       " FROM logins WHERE id = $1::bigint",
    [R_CONV_LIST]    = "SELECT " CONV_COLUMNS " FROM members m" CONV_OF_M
                       " WHERE m.user_id = $1::bigint ORDER BY c.last_ts DESC, c.id DESC",
    /* the last event's reactions, pin, edit, delete would be later events:
     * it has none of them, only its reply preview */
    [R_CONV_LIST_LAST] = "SELECT " CONV_COLUMNS ", e.seq, e.id, e.ts, e.kind, e.sender,"
                       " e.client_msg_id, e.body, e.data, e.subject, e.ref, e.edited_ts, e.deleted_ts,"
                       " e.pinned_ts, p.sender, substring(p.body FROM 1 FOR 400), p.deleted_ts, p.seq,"
                       " c.retention, coalesce((SELECT w.retention FROM workspaces w WHERE w.id = c.workspace), 0)"
                       " FROM members m" CONV_OF_M
                       " LEFT JOIN events e ON e.conv_id = c.id AND e.seq = c.last_seq"
                       "   AND c.last_seq >= m.joined_seq" EV_PARENT
                       " WHERE m.user_id = $1::bigint ORDER BY c.last_ts DESC, c.id DESC",
    /* and after CONV_COLUMNS (CONV_GET only): its retention, its
     * workspace's, whether either holds it (store.h invariant 13) */
    [R_CONV_GET]     = "SELECT " CONV_COLUMNS ", l.retention, l.ws_retention, l.hold FROM members m" CONV_OF_M
                       " CROSS JOIN LATERAL (SELECT c.retention, coalesce(w.retention, 0) AS ws_retention,"
                       "   c.hold <> 0 OR coalesce(w.hold, 0) <> 0 AS hold FROM conversations c" PURGE_WS
                       "   WHERE c.id = m.conv_id OFFSET 0) l"
                       " WHERE m.conv_id = $1::bigint AND m.user_id = $2::bigint",
    [R_CONV_MEMBERS] = "SELECT m.user_id, m.role, m.joined_seq, m.delivered_seq, m.read_seq, u.username"
                       " FROM members m JOIN users u ON u.id = m.user_id"
                       " WHERE m.conv_id = $1::bigint ORDER BY m.joined",
    /* $1 conv, $2 after, $3 before, $4 limit; the _AS forms $5 the viewer */
    [R_EVENTS_ASC]   = PAGE("SELECT " EV_COLUMNS EV_FROM " WHERE e.conv_id = $1::bigint"
                            " AND e.seq > $2::bigint AND e.seq < $3::bigint ORDER BY e.seq LIMIT $4::int",
                            EV_NULLS, "false", ""),
    [R_EVENTS_DESC]  = PAGE("SELECT " EV_COLUMNS EV_FROM " WHERE e.conv_id = $1::bigint"
                            " AND e.seq > $2::bigint AND e.seq < $3::bigint ORDER BY e.seq DESC LIMIT $4::int",
                            EV_NULLS, "false", " DESC"),
    [R_EVENTS_ASC_AS] = PAGE_AS(""),
    [R_EVENTS_DESC_AS] = PAGE_AS(" DESC"),
    [R_EVENT_AT_AS]  = "SELECT " EV_COLUMNS EV_FROM " JOIN members m ON m.conv_id = e.conv_id"
                       " AND m.user_id = $3::bigint AND e.seq >= m.joined_seq"
                       " WHERE e.conv_id = $1::bigint AND e.seq = $2::bigint",
    [R_USERS_VISIBLE] = "SELECT u.id, u.username, u.last_seen"
                       " FROM unnest($2::bigint[]) WITH ORDINALITY AS x(id, i) JOIN users u ON u.id = x.id"
                       " WHERE x.id = $1::bigint OR EXISTS (SELECT 1 FROM members a JOIN members b"
                       "   ON b.conv_id = a.conv_id AND b.user_id = x.id JOIN conversations c ON c.id = a.conv_id"
                       "   AND c.blocked = 0 WHERE a.user_id = $1::bigint)"
                       " ORDER BY x.i",
    /* These two look rows up per id through LATERAL subqueries that the
     * planner may not flatten (OFFSET 0): without statistics (a database
     * just filled, before autovacuum's first ANALYZE) it hash-joined whole
     * tables instead, 4.7 ms a call against 0.45, and a cluster's reconnect
     * storm spent PostgreSQL's CPU on it (benchmarks.md "Cluster mode,
     * third session"). */
    [R_CONV_HEADS]   = "SELECT x.i, c.last_seq FROM unnest($1::bigint[]) WITH ORDINALITY AS x(id, i)"
                       " CROSS JOIN LATERAL (SELECT c.last_seq FROM conversations c WHERE c.id = x.id OFFSET 0) c",
    [R_MEMBERSHIPS]  = "SELECT x.id, m.conv_id, m.joined_seq, c.last_seq"
                       " FROM unnest($1::bigint[]) WITH ORDINALITY AS x(id, i)"
                       " CROSS JOIN LATERAL (SELECT m.conv_id, m.joined_seq FROM members m"
                       "   WHERE m.user_id = x.id OFFSET 0) m"
                       " CROSS JOIN LATERAL (SELECT c.last_seq FROM conversations c WHERE c.id = m.conv_id OFFSET 0) c"
                       " ORDER BY x.i, m.conv_id",
    /* $1 conv, $2 seq, $3 viewer */
    [R_REACT_AT]     = REACT_SELECT("$3") "($2::bigint)" REACT_ORDER,
    [R_MEMBER]       = "SELECT joined_seq FROM members WHERE conv_id = $1::bigint AND user_id = $2::bigint",
    /* $1 conv, $2 viewer: most recently pinned first (within one ms: the
     * latest pin event first) */
    [R_PINS]         = "SELECT " EV_COLUMNS EV_FROM " JOIN members m ON m.conv_id = e.conv_id"
                       " AND m.user_id = $2::bigint AND e.seq >= m.joined_seq"
                       " WHERE e.conv_id = $1::bigint AND e.pinned_ts > 0 ORDER BY e.pinned_ts DESC,"
                       " (SELECT max(q.seq) FROM events q WHERE q.conv_id = e.conv_id AND q.ref = e.seq"
                       "   AND q.ref > 0 AND q.kind = 9) DESC, e.seq DESC",     /* ref > 0: events_ref */
    [R_REACT_PINS]   = REACT_SELECT("$2") "(SELECT e.seq FROM events e WHERE e.conv_id = $1::bigint"
                       "   AND e.pinned_ts > 0)" REACT_ORDER,
    /* $1 conv, $2 viewer, $3 after, $4 limit: as R_EVENTS_ASC_AS, over the
     * viewer's mention rows (taken first, by their key, then joined) */
    /* $1 user, $2 query text, $3 below this id, $4 conv (0: any), $5 sender
     * (0: any), $6 <= ts < $7, $8 mentions of $1 only, $9 limit. Membership
     * and joined_seq are part of the join (store.h invariant 8). */
    [R_SEARCH]       = "SELECT e.conv_id, ts_headline('simple'::regconfig,"
                       "   translate(convert_from(e.body, 'UTF8'), " SEARCH_BLANKS "), q.q,"
                       "   'StartSel=\x02, StopSel=\x03, MaxWords=24, MinWords=12, ShortWord=0'), " EV_COLUMNS
                       " FROM plainto_tsquery('simple'::regconfig, translate($2::text, " SEARCH_BLANKS "))"
                       "   AS q(q), events e"
                       " JOIN members m ON m.conv_id = e.conv_id AND m.user_id = $1::bigint"
                       "   AND e.seq >= m.joined_seq" EV_PARENT
                       " WHERE e.kind = 2 AND e.body IS NOT NULL AND parley_body_tsv(e.body) @@ q.q"
                       "   AND e.id < $3::bigint AND ($4::bigint = 0 OR e.conv_id = $4::bigint)"
                       "   AND e.deleted_ts = 0 AND ($5::bigint = 0 OR e.sender = $5::bigint)"
                       "   AND e.ts >= $6::bigint AND e.ts < $7::bigint"
                       "   AND (NOT $8::bool OR EXISTS (SELECT 1 FROM mentions x WHERE x.conv_id = e.conv_id"
                       "     AND x.user_id = $1::bigint AND x.seq = e.seq))"
                       "   AND (NOT $10::bool OR EXISTS (SELECT 1 FROM media_refs r WHERE r.conv_id = e.conv_id"
                       "     AND r.seq = e.seq))"
                       " ORDER BY e.id DESC LIMIT $9::int",
    /* end-to-end encryption (store_pg_keys.c): $1 asker, $2 peer; $1 peer, $2 now */
    [R_KEYS_SHARES]  = "SELECT $1::bigint = $2::bigint OR EXISTS (SELECT 1 FROM members a JOIN members b"
                       " ON b.conv_id = a.conv_id AND b.user_id = $2::bigint"
                       " JOIN conversations c ON c.id = a.conv_id AND c.blocked = 0 WHERE a.user_id = $1::bigint)",
    [R_DEVICES]      = "SELECT d.device, d.identity, d.spk_id, d.spk, d.spk_sig, d.updated, NULL, NULL,"
                       " (SELECT count(*) FROM e2ee_otks c WHERE c.device = d.device)"
                       " FROM e2ee_devices d JOIN logins l ON l.id = d.device AND l.revoked = 0"
                       " AND l.expires > $2::bigint WHERE d.user_id = $1::bigint ORDER BY d.device",
    [R_MEDIA_OWNED]  = "SELECT id, owner, sha256, size, mime, kind, name, created, width, height,"
                       " coalesce(placeholder, ''), coalesce(thumb_sha, '') FROM media"
                       " WHERE id = ANY($1::bigint[]) AND owner = $2::bigint",
    [R_MEDIA_GET]    = "SELECT id, owner, sha256, size, mime, kind, name, created, width, height,"
                       " coalesce(placeholder, ''), coalesce(thumb_sha, '') FROM media m"
                       " WHERE m.id = $1::bigint AND ($2::bigint = 0 OR m.owner = $2::bigint OR EXISTS"
                       " (SELECT 1 FROM media_refs x JOIN members b ON b.conv_id = x.conv_id"
                       "  AND b.user_id = $2::bigint WHERE x.media_id = m.id AND x.seq >= b.joined_seq))",
    [R_USER_SEARCH]  = "SELECT id, username, last_seen FROM users WHERE strpos(username, $2::text) > 0"
                       " AND deleted = 0 AND (id = $1::bigint OR id IN (SELECT b.user_id FROM members a JOIN members b"
                       "   ON b.conv_id = a.conv_id WHERE a.user_id = $1::bigint))"
                       " ORDER BY strpos(username, $2::text) > 1, username COLLATE \"C\" LIMIT $3::int",
    /* push notifications (store_pg_push.c): $1 user */
    [R_PUSH_DEVICES] = "SELECT id, user_id, login, platform, token, created FROM push_devices"
                       " WHERE user_id = $1::bigint ORDER BY id",
    /* $1 outbox ids: per row, its MESSAGE if not deleted (PUSH_OUTBOX_MSG),
     * the conversation and the sender's name; the body once per row */
    [R_PUSH_MSGS]    = "SELECT o.id, o.conv_id, o.seq, e.id, e.ts, e.sender, u.username, c.kind, c.title, e.body,"
                       " e.encrypted"
                       " FROM push_outbox o" PUSH_OUTBOX_MSG
                       " CROSS JOIN LATERAL (SELECT c.kind, c.title FROM conversations c"
                       "   WHERE c.id = o.conv_id OFFSET 0) c"
                       " LEFT JOIN users u ON u.id = e.sender"
                       " WHERE o.id = ANY($1::bigint[]) ORDER BY o.id",
    /* $1 outbox ids, $2 now, $3 large group (0: none; above it, mentions
     * only): per row, each member but the sender who joined
     * at or before it and whose level lets it through (0 all; 1 mentions:
     * when a mentions row names it, store.h invariant 7), times each of
     * its devices of a live login (a retried row: only its devices) */
    /* $1 outbox ids: the retried ones and their devices */
    [R_PUSH_ONLY]    = "SELECT id, only_devices FROM push_outbox WHERE id = ANY($1::bigint[])"
                       " AND only_devices IS NOT NULL",
    [R_PUSH_TARGETS] = "SELECT o.id, m.user_id, m.mention, d.id, d.platform, d.token"
                       " FROM push_outbox o" PUSH_OUTBOX_MSG
                       " CROSS JOIN LATERAL (SELECT m.user_id, m.notify, EXISTS (SELECT 1 FROM mentions x"
                       "   WHERE x.conv_id = m.conv_id AND x.user_id = m.user_id AND x.seq = o.seq) AS mention"
                       "   FROM members m WHERE m.conv_id = o.conv_id AND m.user_id <> e.sender"
                       "   AND m.joined_seq <= o.seq AND m.notify IN (0, 1) OFFSET 0) m"
                       " CROSS JOIN LATERAL (SELECT d.id, d.platform, d.token FROM push_devices d"
                       "   JOIN logins l ON l.id = d.login AND l.revoked = 0 AND l.expires > $2::bigint"
                       "   WHERE d.user_id = m.user_id OFFSET 0) d"
                       " WHERE o.id = ANY($1::bigint[]) AND (m.notify = 0 OR m.mention)"
                       " AND (m.mention OR $3::bigint = 0 OR (SELECT c.member_count <= $3::bigint OR c.kind = 1"
                       "   FROM conversations c WHERE c.id = o.conv_id))"
                       " AND (o.only_devices IS NULL"
                       "   OR d.id = ANY(string_to_array(o.only_devices, ',')::bigint[]))"
                       " ORDER BY o.id, m.user_id, d.id",
    /* $1 users: each one's badge (pl_push.badge), by invariant 5's counts */
    [R_PUSH_BADGES]  = "SELECT m.user_id, coalesce(sum(CASE m.notify"
                       "  WHEN 0 THEN c.msg_count - coalesce((SELECT x.msg_no FROM events x WHERE x.conv_id = c.id"
                       "    AND x.seq = greatest(m.read_seq, m.joined_seq - 1)), 0) - m.own_unread"
                       "  WHEN 1 THEN (SELECT count(*) FROM mentions x WHERE x.conv_id = c.id AND x.user_id = m.user_id"
                       "    AND x.seq > greatest(m.read_seq, m.joined_seq - 1))"
                       "  ELSE 0 END), 0) FROM members m JOIN conversations c ON c.id = m.conv_id"
                       " WHERE m.user_id = ANY($1::bigint[]) GROUP BY m.user_id",
    [R_MENTIONS]     = "SELECT m.joined_seq, " EV_COLUMNS_V " FROM members m LEFT JOIN LATERAL"
                       " (SELECT " EV_COLUMNS " FROM (SELECT x.seq FROM mentions x WHERE x.conv_id = $1::bigint"
                       "     AND x.user_id = $2::bigint AND x.seq > greatest($3::bigint, m.joined_seq - 1)"
                       "     ORDER BY x.seq LIMIT $4::int) x"
                       "   JOIN events e ON e.conv_id = $1::bigint AND e.seq = x.seq" EV_PARENT ") v"
                       " ON true WHERE m.conv_id = $1::bigint AND m.user_id = $2::bigint ORDER BY v.seq",
    [R_REACT_MENTIONS] = REACT_SELECT("$2") "(SELECT x.seq FROM mentions x WHERE x.conv_id = $1::bigint"
                       "   AND x.user_id = $2::bigint AND x.seq > greatest($3::bigint, " JOINED_BEFORE("$2") ")"
                       "   ORDER BY x.seq LIMIT $4::int)" REACT_ORDER,
    /* workspaces and channels (store_pg_ws.c): $1 user; $1 workspace, $2 user */
    [R_WORKSPACES]   = "SELECT " WS_COLUMNS " FROM workspace_members m JOIN workspaces w ON w.id = m.workspace_id"
                       " WHERE m.user_id = $1::bigint ORDER BY w.id",
    [R_WORKSPACE_GET] = "SELECT " WS_COLUMNS " FROM workspace_members m JOIN workspaces w ON w.id = m.workspace_id"
                       " WHERE m.workspace_id = $1::bigint AND m.user_id = $2::bigint",
    [R_WS_MEMBERS]   = "SELECT m.user_id, m.role, u.username FROM workspace_members m JOIN users u ON u.id = m.user_id"
                       " WHERE m.workspace_id = $1::bigint ORDER BY m.joined",
    /* its public channels and the private ones $2 is in (or, for a
     * workspace admin, that everyone has left: to rescue them), by name
     * (bytes, as SQLite orders them); the conversations_channel index holds them */
    [R_CHANNELS]     = "SELECT " CONV_COLUMNS " FROM conversations c LEFT JOIN members m ON m.conv_id = c.id"
                       "   AND m.user_id = $2::bigint"
                       " WHERE c.workspace = $1::bigint AND c.kind = 3 AND (c.private = 0 OR m.user_id IS NOT NULL"
                       "   OR (c.member_count = 0 AND EXISTS (SELECT 1 FROM workspace_members w"
                       "     WHERE w.workspace_id = $1::bigint AND w.user_id = $2::bigint AND w.role = 2)))"
                       " ORDER BY c.title COLLATE \"C\", c.id",
    /* $1 conv, $2 user: a channel's workspace (NULL: not a channel), and
     * whether user is a member */
    /* $1 conv, $2 user, $3 client_msg_id (NULL: none): one row, whether
     * user is a member and its stored send with that key (NULLs: none) */
    [R_SEND_CHECK] = "SELECT EXISTS (SELECT 1 FROM members WHERE conv_id = $1::bigint AND user_id = $2::bigint),"
                     " e.seq, e.id, e.ts FROM (SELECT 1) x LEFT JOIN events e ON e.conv_id = $1::bigint"
                     " AND e.sender = $2::bigint AND e.client_msg_id = $3::text",
    [R_CONV_WORKSPACE] = "SELECT (SELECT workspace FROM conversations WHERE id = $1::bigint AND kind = 3),"
                         " EXISTS (SELECT 1 FROM members WHERE conv_id = $1::bigint AND user_id = $2::bigint)",
    /* reports (store_pg_reports.c): $1 conv, $2 user: the conversation's
     * kind and user's role (no row: not a member) */
    [R_REPORT_ACCESS] = "SELECT c.kind, m.role FROM conversations c LEFT JOIN members m ON m.conv_id = c.id"
                       " AND m.user_id = $2::bigint WHERE c.id = $1::bigint",
    /* newest first, ids below $1, at most $2 (_CONV: of conversation $3,
     * resolved ones too if $4, none about messages of $5, a conversation
     * admin who is no server admin, nor about messages from before $5
     * joined); each through the index its order reads */
    [R_REPORTS_CONV] = "SELECT " REPORT_COLUMNS " FROM reports r WHERE r.conv_id = $3::bigint"
                       " AND r.id < $1::bigint AND ($4::bool OR r.resolved = 0) AND r.sender <> $5::bigint"
                       " AND ($5::bigint = 0 OR r.seq >= (SELECT m.joined_seq FROM members m"
                       "   WHERE m.conv_id = $3::bigint AND m.user_id = $5::bigint))"
                       " ORDER BY r.id DESC LIMIT $2::int",
    [R_REPORTS_OPEN] = "SELECT " REPORT_COLUMNS " FROM reports r WHERE r.resolved = 0 AND r.id < $1::bigint"
                       " ORDER BY r.id DESC LIMIT $2::int",
    [R_REPORTS_ALL]  = "SELECT " REPORT_COLUMNS " FROM reports r WHERE r.id < $1::bigint"
                       " ORDER BY r.id DESC LIMIT $2::int",
    /* the data lifecycle (store_pg_life.c): $1 user, $2 ids above, $3 at
     * most: its live MESSAGEs by id (events_sender), each with its
     * conversation; their reactions ("me": $1's own) per message and
     * emoji, by conversation and seq, then in order of first use */
    [R_USER_MESSAGES] = "SELECT e.conv_id, " EV_COLUMNS EV_FROM " WHERE e.sender = $1::bigint AND e.kind = 2"
                       " AND e.deleted_ts = 0 AND e.id > $2::bigint ORDER BY e.id LIMIT $3::int",
    [R_USER_MESSAGES_REACT] =
        "SELECT p.conv_id, p.seq, r.emoji, count(*), bool_or(r.user_id = $1::bigint), min(r.first_seq) AS f"
        " FROM (SELECT e.conv_id, e.seq FROM events e WHERE e.sender = $1::bigint AND e.kind = 2"
        "   AND e.deleted_ts = 0 AND e.id > $2::bigint ORDER BY e.id LIMIT $3::int) p"
        " CROSS JOIN LATERAL (SELECT r.emoji, r.first_seq, r.user_id FROM reactions r WHERE r.conv_id = p.conv_id"
        "   AND r.seq = p.seq OFFSET 0) r"
        " GROUP BY p.conv_id, p.seq, r.emoji ORDER BY p.conv_id, p.seq, f, r.emoji COLLATE \"C\"",
    /* blocks (store_pg_reports.c): $1 user: those it blocks, by id */
    [R_BLOCKS]       = "SELECT u.id, u.username FROM blocks b JOIN users u ON u.id = b.blocked_id"
                       " WHERE b.user_id = $1::bigint ORDER BY u.id",
};
