/* store_pg_stmts_w.c — the writer's statements: pg_w_sql, the SQL of every
 * W_* statement (pg_int.h lists them), prepared on the writer's connection
 * (pgc_prepare, store_pg_conn.c).
 *
 * Owns: that SQL, and the fragments only the writer's statements use
 * (PAIR_LOCK, PUSH_DRAINER_LOCK, BLOCKED_PAIR, SEND_INSERT, PURGE_EFF,
 * PURGE_ERASE).
 * Does not own: running them (store_pg_write.c and the job files), the
 * schema (store_pg_schema.c), the readers' statements (store_pg_stmts_r.c),
 * the fragments both tables use (pg_int.h).
 *
 * Every statement is prepared with parameters (extended protocol); values
 * never go into SQL text. Bodies are BYTEA (any bytes, NUL included); text
 * columns hold valid UTF-8 only, so text inputs are checked first (EINVAL
 * for writes, ENOTFOUND for lookups) instead of failing a transaction.
 */
#include "pg_int.h"

/* ---- statements ---------------------------------------------------------- */

/* pg_advisory_xact_lock(PAIR_LOCK, hashtext(direct_key)): a pair of users'
 * lock, taken by BLOCK and by DIRECT_OPEN before it creates (store.h
 * invariant 14; store_pg_reports.c). The two-key form: a keyspace apart
 * from MIGRATION_LOCK's. A hash: two pairs may share a lock, and then
 * only wait for each other. */
#define PAIR_LOCK "1347174987"
/* pg_try_advisory_lock(PUSH_DRAINER_LOCK): session-level, held by the one
 * node whose push worker claims from push_outbox (store.h PL_JOB_PUSH_CLAIM;
 * docs/design.md "Push notifications", "Order"). Released when its session
 * ends. */
#define PUSH_DRAINER_LOCK "7523094288207667810"
/* whether $1 or $2 blocks the other (through the primary key, both ways) */
#define BLOCKED_PAIR "EXISTS (SELECT 1 FROM blocks WHERE (user_id = $1::bigint AND blocked_id = $2::bigint)" \
    " OR (user_id = $2::bigint AND blocked_id = $1::bigint))"

#define EVENT_INSERT_COLS "conv_id, seq, id, ts, kind, sender, subject, msg_no, client_msg_id, body, data"
/* a run of sends (store_pg_runs.c): $1 ts, then one array per column */
#define SEND_INSERT "INSERT INTO events(" EVENT_INSERT_COLS ", ref)" \
    " SELECT x.c, x.s, x.id, $1::bigint, 2, x.u, 0, x.n, x.k, x.b, x.d, x.r" \
    " FROM unnest($2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[], $6::bigint[]," \
    "   $7::text[], $8::bytea[], $9::text[], $10::bigint[]) AS x(c, s, id, u, n, k, b, d, r)"

/* The purge (store_pg_life.c): a conversation c's workspace w (channels),
 * its effective retention (store.h invariant 13; $2 the server's), and the
 * erasure of the MESSAGEs of t (conv_id, seq; their conversations locked)
 * as W_MSG_ERASE, W_EDITS_ERASE, W_REACTIONS_ERASE and W_MENTION_ERASE
 * erase a deleted one (the media trigger drops its references), in CTEs
 * over m, the rows that were live: no event, no counter moves. */
#define PURGE_EFF "(CASE WHEN c.retention > 0 THEN c.retention" \
    " WHEN c.kind = 3 AND coalesce(w.retention, 0) > 0 THEN w.retention ELSE $2::bigint END)"
#define PURGE_ERASE \
    " m AS (UPDATE events e SET body = NULL, data = NULL, deleted_ts = $1::bigint, pinned_ts = 0, edited_ts = 0" \
    "   FROM t WHERE e.conv_id = t.conv_id AND e.seq = t.seq AND e.kind = 2 AND e.deleted_ts = 0" \
    "   RETURNING e.conv_id, e.seq)," \
    " ed AS (UPDATE events e SET body = NULL, data = '{\"target\":' || e.ref || '}' FROM m" \
    "   WHERE e.conv_id = m.conv_id AND e.ref = m.seq AND e.ref > 0 AND e.kind IN (6, 8))," \
    " rx AS (DELETE FROM reactions r USING m WHERE r.conv_id = m.conv_id AND r.seq = m.seq)," \
    " mx AS (DELETE FROM mentions x USING m WHERE x.conv_id = m.conv_id AND x.seq = m.seq)"

const char *const pg_w_sql[W__COUNT] = {
    [W_BEGIN]       = "BEGIN",
    [W_COMMIT]      = "COMMIT",
    [W_ROLLBACK]    = "ROLLBACK",
    [W_SAVEPOINT]   = "SAVEPOINT job",
    [W_RELEASE]     = "RELEASE SAVEPOINT job",
    [W_ROLLBACK_TO] = "ROLLBACK TO SAVEPOINT job",
    [W_CONV_LOCK]   = "SELECT id, kind, last_seq, last_ts, msg_count, member_count, e2ee, blocked"
                      " FROM conversations WHERE id = ANY($1::bigint[]) ORDER BY id FOR UPDATE",
    [W_USER_INSERT] = "INSERT INTO users(username, pwhash, created) VALUES($1::text, $2::text, $3::bigint)"
                      " ON CONFLICT (username) DO NOTHING RETURNING id",
    /* a live user's, its row kept as W_USERS_EXIST's (an ACCOUNT_DELETE
     * revokes it, or it finds the user deleted) */
    [W_LOGIN_INSERT] = "INSERT INTO logins(user_id, refresh_hash, expires, revoked, created)"
                       " SELECT $1::bigint, $2::bytea, $3::bigint, 0, $4::bigint"
                       " WHERE EXISTS (SELECT 1 FROM users WHERE id = $1::bigint AND deleted = 0 FOR KEY SHARE)"
                       " RETURNING id",
    [W_LOGIN_ROTATE] = "UPDATE logins SET prev_hash = refresh_hash, rotated = $4::bigint,"
                       " refresh_hash = $1::bytea, expires = $2::bigint"
                       " WHERE id = $3::bigint AND revoked = 0 AND expires > $4::bigint"
                       " AND refresh_hash = $5::bytea",
    /* a revoked login's push devices go with it (store.h invariant 10) */
    [W_LOGIN_REVOKE] = "WITH r AS (UPDATE logins SET revoked = 1 WHERE id = $1::bigint RETURNING id),"
                       " d AS (DELETE FROM push_devices WHERE login IN (SELECT id FROM r))"
                       " SELECT count(*) FROM r",
    /* live users (a deleted one is unknown: store.h invariant 13), each row
     * kept (KEY SHARE) to COMMIT, so an ACCOUNT_DELETE of one of them (any
     * node; it locks the row FOR UPDATE first) waits and then sees the
     * membership this batch gives it, or this waits and finds it deleted */
    [W_USERS_EXIST] = "SELECT id FROM users WHERE id = ANY($1::bigint[]) AND deleted = 0 FOR KEY SHARE",
    [W_CONV_BY_KEY] = "SELECT id FROM conversations WHERE direct_key = $1::text",
    /* $1 key, $2 now, $3 user, $4 peer, $5 event id, $6 data. All or nothing;
     * no row when another transaction holds the pair (ON CONFLICT), or
     * when either of the two blocks the other (store.h invariant 14; run
     * under the pair's lock, W_PAIR_LOCK) */
    [W_DIRECT_CREATE] =
        "WITH c AS (INSERT INTO conversations(kind, title, direct_key, last_seq, last_ts, next_join,"
        "           created, msg_count, member_count)"
        "         SELECT 1, NULL, $1::text, 1, $2::bigint, 2, $2::bigint, 0, 2"
        "         WHERE NOT EXISTS (SELECT 1 FROM blocks WHERE (user_id = $3::bigint AND blocked_id = $4::bigint)"
        "           OR (user_id = $4::bigint AND blocked_id = $3::bigint))"
        "         ON CONFLICT (direct_key) DO NOTHING RETURNING id),"
        " m AS (INSERT INTO members(conv_id, user_id, role, joined, joined_seq)"
        "         SELECT c.id, x.u, 1, x.j, 1 FROM c, (VALUES ($3::bigint, 0), ($4::bigint, 1)) AS x(u, j)),"
        " e AS (INSERT INTO events(" EVENT_INSERT_COLS ")"
        "         SELECT c.id, 1, $5::bigint, $2::bigint, 1, $3::bigint, 0, 0, NULL, NULL, $6::text FROM c)"
        " SELECT id FROM c",
    /* $1 title, $2 now, $3 member count, $4 members (creator first), $5 event
     * id, $6 creator, $7 data */
    [W_GROUP_CREATE] =
        "WITH c AS (INSERT INTO conversations(kind, title, direct_key, last_seq, last_ts, next_join,"
        "           created, msg_count, member_count)"
        "         VALUES(2, $1::text, NULL, 1, $2::bigint, $3::bigint, $2::bigint, 0, $3::bigint)"
        "         RETURNING id),"
        " m AS (INSERT INTO members(conv_id, user_id, role, joined, joined_seq)"
        "         SELECT c.id, x.u, CASE WHEN x.j = 1 THEN 2 ELSE 1 END, x.j - 1, 1"
        "         FROM c, unnest($4::bigint[]) WITH ORDINALITY AS x(u, j)),"
        " e AS (INSERT INTO events(" EVENT_INSERT_COLS ")"
        "         SELECT c.id, 1, $5::bigint, $2::bigint, 1, $6::bigint, 0, 0, NULL, NULL, $7::text FROM c)"
        " SELECT id FROM c",
    [W_MEMBER_CHECK] = "SELECT (SELECT role FROM members WHERE conv_id = $1::bigint AND user_id = $2::bigint),"
                       " (SELECT role FROM members WHERE conv_id = $1::bigint AND user_id = $3::bigint),"
                       " EXISTS (SELECT 1 FROM users WHERE id = $3::bigint)",
    /* MEMBER_ADD's: the peer a live user, its row kept as W_USERS_EXIST's */
    [W_MEMBER_CHECK_ADD] = "SELECT (SELECT role FROM members WHERE conv_id = $1::bigint AND user_id = $2::bigint),"
                       " (SELECT role FROM members WHERE conv_id = $1::bigint AND user_id = $3::bigint),"
                       " EXISTS (SELECT 1 FROM users WHERE id = $3::bigint AND deleted = 0 FOR KEY SHARE)",
    [W_MEMBER_JOIN] = "WITH nj AS (UPDATE conversations SET next_join = next_join + 1 WHERE id = $1::bigint"
                      "   RETURNING next_join - 1 AS j)"
                      " INSERT INTO members(conv_id, user_id, role, joined, joined_seq)"
                      " SELECT $1::bigint, $2::bigint, 1, nj.j, $3::bigint FROM nj",
    [W_MEMBER_DELETE] = "DELETE FROM members WHERE conv_id = $1::bigint AND user_id = $2::bigint",
    [W_PROMOTE]     = "UPDATE members SET role = 2 WHERE conv_id = $1::bigint"
                      " AND user_id = (SELECT user_id FROM members WHERE conv_id = $1::bigint"
                      "   ORDER BY joined LIMIT 1)"
                      " AND NOT EXISTS (SELECT 1 FROM members WHERE conv_id = $1::bigint AND role = 2)",
    /* $1 conv, $2 the member leaving: whom W_PROMOTE would make admin */
    [W_PROMOTE_WHO] = "SELECT user_id FROM members WHERE conv_id = $1::bigint AND user_id <> $2::bigint"
                      " AND NOT EXISTS (SELECT 1 FROM members WHERE conv_id = $1::bigint AND role = 2"
                      "   AND user_id <> $2::bigint)"
                      " ORDER BY joined LIMIT 1",
    [W_MEMBER_OTHER_ADMIN] = "SELECT EXISTS (SELECT 1 FROM members WHERE conv_id = $1::bigint AND role = 2"
                       " AND user_id <> $2::bigint)",
    [W_MEMBER_SET_ROLE] = "UPDATE members SET role = $3::int WHERE conv_id = $1::bigint AND user_id = $2::bigint",
    [W_WS_OTHER_ADMIN] = "SELECT EXISTS (SELECT 1 FROM workspace_members WHERE workspace_id = $1::bigint"
                       " AND role = 2 AND user_id <> $2::bigint)",
    [W_WS_SET_ROLE] = "UPDATE workspace_members SET role = $3::int WHERE workspace_id = $1::bigint"
                      " AND user_id = $2::bigint",
    /* every event but MESSAGE: $10 ref, $11 body (EDIT only) */
    [W_EVENT_INSERT] = "INSERT INTO events(" EVENT_INSERT_COLS ", ref) VALUES($1::bigint, $2::bigint,"
                       " $3::bigint, $4::bigint, $5::int, $6::bigint, $7::bigint, $8::bigint, NULL,"
                       " $11::bytea, $9::text, $10::bigint)",
    /* sends, as sets: x.i is the position in the arrays (1-based). The
     * lookups (dups, members, parents; the receipts' below) take each
     * element's row through a LATERAL (... OFFSET 0) subquery, so by its
     * key's index whatever the statistics: without them (a database just
     * filled) and with a batch's arrays of a few hundred, a plain join's
     * plan (a custom plan: the first five of a connection, and every one
     * of a statement whose small calls cost less than its generic plan)
     * hash-joined all of members or events, 2.6-18 ms against 0.4-1.5 for
     * 200 elements in a reconnect storm's database. */
    [W_SEND_DUPS]   = "SELECT x.i, e.seq, e.id, e.ts, e.body"
                      " FROM unnest($1::bigint[], $2::bigint[], $3::text[]) WITH ORDINALITY AS x(c, u, k, i)"
                      " CROSS JOIN LATERAL (SELECT e.seq, e.id, e.ts, e.body FROM events e WHERE e.conv_id = x.c"
                      "   AND e.sender = x.u AND e.client_msg_id = x.k AND e.client_msg_id IS NOT NULL OFFSET 0) e",
    [W_SEND_MEMBERS] = "SELECT x.i, m.role, m.joined_seq"
                       " FROM unnest($1::bigint[], $2::bigint[]) WITH ORDINALITY AS x(c, u, i)"
                       " CROSS JOIN LATERAL (SELECT m.role, m.joined_seq FROM members m"
                       "   JOIN users u ON u.id = m.user_id AND u.deleted = 0"
                       "   WHERE m.conv_id = x.c AND m.user_id = x.u OFFSET 0) m",
    /* the messages replied to ($1 convs, $2 seqs): what the checks and the
     * preview need (a preview's 100 characters are at most 400 bytes), and
     * whether the parent's author is still a member (probed inside the
     * subquery: outside, it became a hash of all of members) */
    [W_SEND_PARENTS] = "SELECT x.i, p.kind, p.sender, substring(p.body FROM 1 FOR 400), p.deleted_ts, p.alive"
                       " FROM unnest($1::bigint[], $2::bigint[]) WITH ORDINALITY AS x(c, s, i)"
                       " CROSS JOIN LATERAL (SELECT p.kind, p.sender, p.body, p.deleted_ts,"
                       "   EXISTS (SELECT 1 FROM members m WHERE m.conv_id = p.conv_id AND m.user_id = p.sender)"
                       "   AS alive FROM events p WHERE p.conv_id = x.c AND p.seq = x.s OFFSET 0) p",
    /* @names ($2, lower case as usernames are stored) of members of $1 */
    [W_SEND_NAMES]  = "SELECT x.i, u.id FROM unnest($1::bigint[], $2::text[]) WITH ORDINALITY AS x(c, n, i)"
                      " JOIN users u ON u.username = x.n JOIN members m ON m.conv_id = x.c AND m.user_id = u.id",
    [W_SEND_INSERT] = SEND_INSERT,
    /* the same with opts.push (store.h invariant 10): each MESSAGE's outbox
     * row from the rows inserted, in the same statement (no parameter is
     * sent twice, no extra statement in the pipeline), ids given in seq
     * order: a device's notifications go in outbox id order (push/order.h) */
    [W_SEND_INSERT_PUSH] = "WITH e AS (" SEND_INSERT " RETURNING conv_id, seq)"
                      " INSERT INTO push_outbox(conv_id, seq) SELECT conv_id, seq FROM e ORDER BY conv_id, seq",
    /* mention rows (store.h invariant 7): ($1 conv, $2 user, $3 seq)...; with
     * @all every member of $1 but the sender $2 */
    [W_MENTION_INSERT] = "INSERT INTO mentions(conv_id, user_id, seq)"
                         " SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[])"
                         " ON CONFLICT DO NOTHING",
    [W_MENTION_ALL] = "INSERT INTO mentions(conv_id, user_id, seq) SELECT m.conv_id, m.user_id, x.s"
                      " FROM unnest($1::bigint[], $2::bigint[], $3::bigint[]) AS x(c, u, s)"
                      " JOIN members m ON m.conv_id = x.c AND m.user_id <> x.u ON CONFLICT DO NOTHING",
    [W_MENTION_ERASE] = "DELETE FROM mentions WHERE conv_id = $1::bigint AND seq = $2::bigint",
    /* message actions: the actor's membership ($1 conv, $2 actor; no row:
     * not a member), the target at $3 (NULLs: none), the author of the
     * message it replies to and whether that one is still a member, and
     * the target's body if $4 */
    [W_TARGET]      = "SELECT m.role, m.joined_seq, e.kind, e.sender, e.ts, e.deleted_ts, e.pinned_ts, e.ref,"
                      " p.sender, EXISTS (SELECT 1 FROM members pm WHERE pm.conv_id = $1::bigint"
                      "   AND pm.user_id = p.sender), CASE WHEN $4::bool THEN e.body END"
                      " FROM members m JOIN users u ON u.id = m.user_id AND u.deleted = 0"  /* not deleted */
                      " LEFT JOIN events e ON e.conv_id = $1::bigint AND e.seq = $3::bigint"
                      " LEFT JOIN events p ON e.kind = 2 AND e.ref > 0 AND p.conv_id = $1::bigint"
                      "   AND p.seq = e.ref"
                      " WHERE m.conv_id = $1::bigint AND m.user_id = $2::bigint",
    [W_MSG_EDIT]    = "UPDATE events SET body = $1::bytea, data = $2::text, edited_ts = $3::bigint"
                      " WHERE conv_id = $4::bigint AND seq = $5::bigint",
    /* a delete erases (invariant 6 of store.h): the message's body, data and
     * marks, the bodies of its edits, its reactions and mentions */
    [W_MSG_ERASE]   = "UPDATE events SET body = NULL, data = NULL, deleted_ts = $1::bigint, pinned_ts = 0,"
                      " edited_ts = 0 WHERE conv_id = $2::bigint AND seq = $3::bigint",
    /* a deleted message's edits (6) and reactions (8) keep only their target */
    [W_EDITS_ERASE] = "UPDATE events SET body = NULL, data = $3::text"          /* ref > 0: events_ref */
                      " WHERE conv_id = $1::bigint AND ref = $2::bigint AND ref > 0 AND kind IN (6, 8)",
    [W_REACTIONS_ERASE] = "DELETE FROM reactions WHERE conv_id = $1::bigint AND seq = $2::bigint",
    /* $1 conv, $2 seq, $3 emoji, $4 user: has it, distinct emoji, users of $3 */
    [W_REACT_STATE] = "SELECT EXISTS (SELECT 1 FROM reactions WHERE conv_id = $1::bigint AND seq = $2::bigint"
                      "   AND emoji = $3::text AND user_id = $4::bigint),"
                      " (SELECT count(DISTINCT emoji) FROM reactions WHERE conv_id = $1::bigint"
                      "   AND seq = $2::bigint),"
                      " (SELECT count(*) FROM reactions WHERE conv_id = $1::bigint AND seq = $2::bigint"
                      "   AND emoji = $3::text)",
    [W_REACT_ADD]   = "INSERT INTO reactions(conv_id, seq, emoji, user_id, first_seq)"
                      " VALUES($1::bigint, $2::bigint, $3::text, $4::bigint, $5::bigint) ON CONFLICT DO NOTHING",
    [W_REACT_DEL]   = "DELETE FROM reactions WHERE conv_id = $1::bigint AND seq = $2::bigint"
                      " AND emoji = $3::text AND user_id = $4::bigint",
    [W_PIN_COUNT]   = "SELECT count(*) FROM events WHERE conv_id = $1::bigint AND pinned_ts > 0",
    [W_PIN_SET]     = "UPDATE events SET pinned_ts = $1::bigint WHERE conv_id = $2::bigint AND seq = $3::bigint",
    [W_NOTIFY_SET]  = "UPDATE members SET notify = $3::smallint WHERE conv_id = $1::bigint AND user_id = $2::bigint",
    /* receipts, as sets */
    [W_RCPT_CURSORS] = "SELECT x.i, m.delivered_seq, m.read_seq, m.joined_seq, m.own_unread"
                       " FROM unnest($1::bigint[], $2::bigint[]) WITH ORDINALITY AS x(c, u, i)"
                       " CROSS JOIN LATERAL (SELECT m.delivered_seq, m.read_seq, m.joined_seq, m.own_unread"
                       "   FROM members m WHERE m.conv_id = x.c AND m.user_id = x.u OFFSET 0) m",
    [W_RCPT_LOOKUPS] = "SELECT x.i,"
                       " CASE WHEN x.hi > x.lo THEN (SELECT count(*) FROM events e WHERE e.conv_id = x.c"
                       "   AND e.seq > x.lo AND e.seq <= x.hi AND e.kind = 2 AND e.sender = x.u) ELSE 0 END,"
                       " a.kind, a.sender, b.msg_no,"
                       " (SELECT count(*) FROM mentions y WHERE y.conv_id = x.c AND y.user_id = x.u"
                       "   AND y.seq > x.base)"
                       " FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[],"
                       "   $6::bigint[]) WITH ORDINALITY AS x(c, u, lo, hi, at, base, i)"
                       " LEFT JOIN LATERAL (SELECT a.kind, a.sender FROM events a"
                       "   WHERE a.conv_id = x.c AND a.seq = x.at OFFSET 0) a ON true"
                       " LEFT JOIN LATERAL (SELECT b.msg_no FROM events b"
                       "   WHERE b.conv_id = x.c AND b.seq = x.base OFFSET 0) b ON true",
    [W_RCPT_UPDATE] = "UPDATE members m SET delivered_seq = x.d, read_seq = x.r"
                      " FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[]) AS x(c, u, d, r)"
                      " WHERE m.conv_id = x.c AND m.user_id = x.u",
    /* the flush before COMMIT */
    [W_OWN_FLUSH]   = "UPDATE members m SET own_unread = m.own_unread + x.d"
                      " FROM unnest($1::bigint[], $2::bigint[], $3::bigint[]) AS x(c, u, d)"
                      " WHERE m.conv_id = x.c AND m.user_id = x.u",
    /* $6 the batch's time: the purge's purge_at when the batch appended the
     * conversation's only live MESSAGEs (store_pg_life.c) */
    [W_CONV_FLUSH]  = "UPDATE conversations c SET last_seq = x.s, last_ts = x.t, msg_count = x.m,"
                      " member_count = x.k,"
                      " purge_at = CASE WHEN c.purge_at = 0 AND x.m > c.msg_count THEN $6::bigint ELSE c.purge_at END"
                      " FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[])"
                      "   AS x(id, s, t, m, k) WHERE c.id = x.id",
    [W_USERS_LOCK]  = "SELECT 1 FROM users WHERE id = ANY($1::bigint[]) ORDER BY id FOR NO KEY UPDATE",
    [W_LAST_SEEN]   = "UPDATE users u SET last_seen = v.t"
                      " FROM (SELECT x.id, max(x.t) AS t FROM unnest($1::bigint[], $2::bigint[]) AS x(id, t)"
                      "   GROUP BY x.id) v WHERE u.id = v.id AND u.last_seen < v.t",
    [W_OUTBOX_INSERT] = "INSERT INTO bus_outbox(node, id, convs, seqs)"
                        " VALUES($1::int, $2::bigint, $3::bigint[], $4::bigint[])",
    [W_OUTBOX_ACK]  = "DELETE FROM bus_outbox WHERE node = $1::int AND id <= $2::bigint",
    /* $1 node, $2 own age (s), $3 dead nodes' age (s) */
    [W_OUTBOX_TAKEOVER] =
        "WITH d AS (DELETE FROM bus_outbox o"
        "   WHERE (o.node = $1::int AND o.created < now() - make_interval(secs => $2::int))"
        "      OR (o.node <> $1::int AND o.created < now() - make_interval(secs => $3::int)"
        "          AND NOT EXISTS (SELECT 1 FROM node_leases l WHERE l.node_id = o.node"
        "                          AND l.expires > now()))"
        "   RETURNING o.convs, o.seqs)"
        " SELECT u.c, max(u.s) FROM d, unnest(d.convs, d.seqs) AS u(c, s) GROUP BY u.c ORDER BY u.c",
    /* $1 node, $2 owner, $3 ttl (s) */
    [W_LEASE_RENEW] = "UPDATE node_leases SET expires = now() + make_interval(secs => $3::int)"
                      " WHERE node_id = $1::int AND owner = $2::text RETURNING node_id",
    [W_LEASE_TAKE]  = "INSERT INTO node_leases(node_id, owner, expires)"
                      " VALUES($1::int, $2::text, now() + make_interval(secs => $3::int))"
                      " ON CONFLICT (node_id) DO UPDATE SET owner = EXCLUDED.owner, expires = EXCLUDED.expires"
                      " WHERE node_leases.expires <= now() OR node_leases.owner = EXCLUDED.owner"
                      " RETURNING node_id",
    /* the lowest id without a live lease: $1 owner, $2 ttl (s) */
    [W_LEASE_ANY]   = "INSERT INTO node_leases(node_id, owner, expires)"
                      " SELECT g, $1::text, now() + make_interval(secs => $2::int)"
                      " FROM generate_series(0, 1023) g"
                      " WHERE NOT EXISTS (SELECT 1 FROM node_leases l WHERE l.node_id = g AND l.expires > now())"
                      " ORDER BY g LIMIT 1"
                      " ON CONFLICT (node_id) DO UPDATE SET owner = EXCLUDED.owner, expires = EXCLUDED.expires"
                      " WHERE node_leases.expires <= now() RETURNING node_id",
    [W_LEASE_INFO]  = "SELECT owner, ceil(extract(epoch FROM expires - now()))::bigint FROM node_leases"
                      " WHERE node_id = $1::int",
    [W_LEASE_RELEASE] = "DELETE FROM node_leases WHERE node_id = $1::int AND owner = $2::text",
    /* ---- end-to-end encryption (store_pg_keys.c, store.h invariant 9) ---- */
    /* An upload locks the device's login row (it always exists, unlike the
     * e2ee_devices row of a new device) and then reads the device's state in
     * a statement of its own, so that the read's snapshot is taken after
     * the lock: two uploads of one device (any nodes) are checked one after
     * the other. (W_KEYS_STATE alone locked the e2ee_devices row, which a
     * new device does not have, and its count's snapshot predated its wait:
     * two nodes both saw a new device and announced it twice, audit P1 F3,
     * and both let 60 keys in beside 100 held, 220 > 200, audit P1 F2.)
     * NO KEY UPDATE conflicts with itself and with the login's rotation and
     * revocation (UPDATE): an upload waits for a revocation in flight and
     * then finds no live login.
     * $1 device, $2 user, $3 now: a row if it is a live login of the user. */
    [W_KEYS_LOGIN_LOCK] = "SELECT 1 FROM logins WHERE id = $1::bigint AND user_id = $2::bigint"
                          " AND revoked = 0 AND expires > $3::bigint FOR NO KEY UPDATE",
    /* $1 device: its identity key (row locked, against a delete), its
     * one-time prekeys */
    [W_KEYS_STATE]  = "SELECT (SELECT identity FROM e2ee_devices WHERE device = $1::bigint FOR UPDATE),"
                      " (SELECT count(*) FROM e2ee_otks WHERE device = $1::bigint"
                      "   AND NOT key_id = ANY($2::bigint[]))",      /* held, besides ids re-uploaded */
    [W_KEYS_DEVICE] = "INSERT INTO e2ee_devices(device, user_id, identity, spk_id, spk, spk_sig, updated)"
                      " VALUES($1::bigint, $2::bigint, $3::text, $4::bigint, $5::text, $6::text, $7::bigint)"
                      " ON CONFLICT (device) DO UPDATE SET identity = excluded.identity,"
                      " spk_id = excluded.spk_id, spk = excluded.spk, spk_sig = excluded.spk_sig,"
                      " updated = excluded.updated",
    [W_KEYS_DROP]   = "DELETE FROM e2ee_otks WHERE device = $1::bigint",
    [W_KEYS_ADD]    = "INSERT INTO e2ee_otks(device, key_id, key)"
                      " SELECT $1::bigint, x.i, x.k FROM unnest($2::bigint[], $3::text[]) AS x(i, k)"
                      " ON CONFLICT (device, key_id) DO UPDATE SET key = excluded.key",
    [W_KEYS_COUNT]  = "SELECT count(*) FROM e2ee_otks WHERE device = $1::bigint",
    [W_KEYS_DELETE] = "WITH d AS (DELETE FROM e2ee_devices WHERE device = $1::bigint AND user_id = $2::bigint"
                      "   RETURNING device),"
                      " o AS (DELETE FROM e2ee_otks WHERE device IN (SELECT device FROM d))"
                      " SELECT count(*) FROM d",
    /* $1 asker, $2 peer: may the asker see the peer's keys? (a direct
     * conversation under a block is not shared for this) */
    [W_KEYS_SHARES] = "SELECT $1::bigint = $2::bigint OR EXISTS (SELECT 1 FROM members a JOIN members b"
                      " ON b.conv_id = a.conv_id AND b.user_id = $2::bigint"
                      " JOIN conversations c ON c.id = a.conv_id AND c.blocked = 0 WHERE a.user_id = $1::bigint)",
    /* A claim locks the peer's device rows (in device order) and then
     * claims in a statement of its own, whose snapshot is taken after the
     * lock: claims of one device (any nodes) count one after the other, so
     * the count each returns is what it left. (The count of the claim's own
     * snapshot missed a key another node's claim was taking: two claims
     * that crossed 10 both reported 10, and no keys_low went out, audit P1
     * F1.) Uploads of the device lock its row too (W_KEYS_STATE).
     * $1 peer. */
    [W_KEYS_CLAIM_LOCK] = "SELECT 1 FROM e2ee_devices WHERE user_id = $1::bigint ORDER BY device"
                          " FOR NO KEY UPDATE",
    /* $1 peer, $2 now: each live device with one one-time prekey taken out
     * and the count it leaves; SKIP LOCKED passes over a key another
     * transaction is taking (a device the lock above did not see, being
     * created meanwhile), so no two claims (any nodes) get the same one. */
    [W_KEYS_CLAIM]  = "WITH d AS (SELECT d.device, d.identity, d.spk_id, d.spk, d.spk_sig, d.updated"
                      "   FROM e2ee_devices d JOIN logins l ON l.id = d.device AND l.revoked = 0"
                      "   AND l.expires > $2::bigint WHERE d.user_id = $1::bigint),"
                      " pick AS (SELECT o.device, o.key_id FROM d CROSS JOIN LATERAL"
                      "   (SELECT x.device, x.key_id FROM e2ee_otks x WHERE x.device = d.device"
                      "    ORDER BY x.key_id LIMIT 1 FOR UPDATE SKIP LOCKED) o),"
                      " del AS (DELETE FROM e2ee_otks t USING pick WHERE t.device = pick.device"
                      "   AND t.key_id = pick.key_id RETURNING t.device, t.key_id, t.key)"
                      " SELECT d.device, d.identity, d.spk_id, d.spk, d.spk_sig, d.updated, del.key_id, del.key,"
                      " (SELECT count(*) FROM e2ee_otks c WHERE c.device = d.device)"
                      "   - (del.device IS NOT NULL)::int"
                      " FROM d LEFT JOIN del ON del.device = d.device ORDER BY d.device",
    [W_CONV_E2EE]   = "UPDATE conversations SET e2ee = 1 WHERE id = $1::bigint",
    /* media (store_pg_media.c): the quota check locks the owner's row, then
     * sums in a statement of its own, so that the sum's snapshot is taken
     * after the lock: two uploads of one user are checked one after the
     * other. (One statement took its snapshot before it waited for the
     * lock, and missed the row the other upload had just committed: both
     * nodes let their upload in, audit P2 F1.) NO KEY UPDATE: a join's KEY
     * SHARE of the row (W_USERS_EXIST) does not wait. */
    [W_MEDIA_LOCK]  = "SELECT 1 FROM users WHERE id = $1::bigint FOR NO KEY UPDATE",
    [W_MEDIA_SUM]   = "SELECT coalesce(sum(size), 0) FROM media WHERE owner = $1::bigint",
    [W_MEDIA_INSERT] = "INSERT INTO media(id, owner, sha256, size, mime, kind, name, created, gc_after,"
                       " width, height, placeholder, thumb_sha)"
                       " VALUES($1::bigint, $2::bigint, $3::text, $4::bigint, $5::text, $6::smallint,"
                       " $7::text, $8::bigint, $8::bigint, $9::int, $10::int, nullif($11::text, ''),"
                       " nullif($12::text, '')) ON CONFLICT (id) DO NOTHING RETURNING id",
    [W_MEDIA_THUMB] = "UPDATE media SET width = $1::int, height = $2::int, placeholder = $3::text,"
                      " thumb_sha = nullif($4::text, '') WHERE id = $5::bigint RETURNING id",
    [W_MEDIA_GC]    = "WITH d AS (DELETE FROM media WHERE id IN (SELECT m.id FROM media m"
                      "   WHERE m.gc_after < $1::bigint AND NOT EXISTS (SELECT 1 FROM media_refs r"
                      "   WHERE r.media_id = m.id) LIMIT $2::int FOR UPDATE SKIP LOCKED)"
                      "   RETURNING id, sha256, thumb_sha),"
                      " x AS (SELECT sha256 AS sha FROM d UNION SELECT thumb_sha FROM d WHERE thumb_sha IS NOT NULL)"
                      " SELECT x.sha FROM x WHERE NOT EXISTS (SELECT 1 FROM media m"
                      "   WHERE (m.sha256 = x.sha OR m.thumb_sha = x.sha) AND m.id NOT IN (SELECT id FROM d))",
    /* ---- push notifications (store_pg_push.c, store.h invariant 10) ---- */
    /* a registration locks its user's row first, so two registrations of
     * one user (any nodes) are counted one after the other; W_PUSH_STATE
     * runs after it (a statement of its own: a snapshot taken after the
     * lock). $1 user, $2 login, $3 now, $4 platform, $5 token: a live login
     * of the user?, the token's row (locked) and its login and user, the
     * devices the user holds */
    [W_PUSH_USER_LOCK] = "SELECT 1 FROM users WHERE id = $1::bigint FOR NO KEY UPDATE",
    [W_PUSH_STATE]  = "SELECT EXISTS (SELECT 1 FROM logins WHERE id = $2::bigint AND user_id = $1::bigint"
                      "   AND revoked = 0 AND expires > $3::bigint), d.id, d.login, d.user_id,"
                      " (SELECT count(*) FROM push_devices WHERE user_id = $1::bigint)"
                      " FROM (SELECT 1) one LEFT JOIN LATERAL (SELECT id, login, user_id FROM push_devices"
                      "   WHERE platform = $4::smallint AND token = $5::text FOR UPDATE) d ON true",
    /* new, or moved to this login; ON CONFLICT: a row another node inserted
     * meanwhile is moved too, never a unique violation */
    [W_PUSH_REGISTER] = "INSERT INTO push_devices(user_id, login, platform, token, created)"
                        " VALUES($1::bigint, $2::bigint, $3::smallint, $4::text, $5::bigint)"
                        " ON CONFLICT (platform, token) DO UPDATE SET user_id = excluded.user_id,"
                        " login = excluded.login, created = excluded.created RETURNING id",
    [W_PUSH_UNREGISTER] = "DELETE FROM push_devices WHERE id = $1::bigint AND user_id = $2::bigint",
    /* $1 now, $2 attempts: rows out of attempts whose lease is over */
    [W_PUSH_DROP]   = "DELETE FROM push_outbox WHERE id IN (SELECT id FROM push_outbox"
                      "   WHERE lease < $1::bigint ORDER BY id LIMIT $3::int FOR UPDATE SKIP LOCKED)"
                      " AND attempts >= $2::int RETURNING id",
    /* $1 now, $2 lease end, $3 limit: the oldest rows whose lease is over;
     * SKIP LOCKED passes over rows another transaction is claiming, so no
     * two nodes hold a row at once */
    [W_PUSH_CLAIM]  = "UPDATE push_outbox SET lease = $2::bigint, attempts = attempts + 1"
                      " WHERE id IN (SELECT id FROM push_outbox WHERE lease < $1::bigint ORDER BY id"
                      "   LIMIT $3::int FOR UPDATE SKIP LOCKED) RETURNING id",
    [W_PUSH_FINISH] = "DELETE FROM push_outbox WHERE id = ANY($1::bigint[])",
    [W_PUSH_DEAD]   = "DELETE FROM push_devices WHERE id = ANY($1::bigint[])",
    /* $1 rows, $2 their device lists, $3 their lease ends, $4 attempts
     * given back (0 or 1) */
    [W_PUSH_RETRY]  = "UPDATE push_outbox o SET lease = x.l, only_devices = x.d,"
                      " attempts = greatest(o.attempts - x.r, 0)"
                      " FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::bigint[]) AS x(id, d, l, r)"
                      " WHERE o.id = x.id",
    /* the push drainer's lock (session-level): true when this session holds it */
    [W_PUSH_DRAINER] = "SELECT pg_try_advisory_lock(" PUSH_DRAINER_LOCK ")",
    /* the new drainer's first claim: every lease is a previous drainer's */
    [W_PUSH_UNLEASE] = "UPDATE push_outbox SET lease = 0 WHERE lease > 0",
    /* ---- workspaces and channels (store_pg_ws.c, store.h invariant 11) ---- */
    /* the batch's lock (W_CONV_LOCK) when it holds WORKSPACE_ADDs or BLOCKs:
     * also the "general" channels of the workspaces $2 and the direct
     * conversations of the pairs $3 (direct_key; store_pg_reports.c), in
     * the same ascending order */
    [W_CONV_LOCK_MORE] = "SELECT id, kind, last_seq, last_ts, msg_count, member_count, e2ee, blocked"
                       " FROM conversations WHERE id = ANY($1::bigint[] || ARRAY(SELECT general FROM workspaces"
                       "   WHERE id = ANY($2::bigint[])) || ARRAY(SELECT id FROM conversations"
                       "   WHERE direct_key = ANY($3::text[]))) ORDER BY id FOR UPDATE",
    [W_WS_LOCK]     = "SELECT id FROM workspaces WHERE id = ANY($1::bigint[]) ORDER BY id FOR UPDATE",
    /* $1 workspace, $2 actor, $3 peer, $4 a channel name, $5 users: its
     * general, counters, the roles of actor and peer (NULL: not in it),
     * whether peer is a live user (its row kept as W_USERS_EXIST's), peer's
     * role in general, whether the name is taken, how many of $5 are in it */
    [W_WS_STATE]    = "SELECT w.general, w.member_count, w.channel_count,"
                      " (SELECT role FROM workspace_members WHERE workspace_id = w.id AND user_id = $2::bigint),"
                      " (SELECT role FROM workspace_members WHERE workspace_id = w.id AND user_id = $3::bigint),"
                      " EXISTS (SELECT 1 FROM users WHERE id = $3::bigint AND deleted = 0 FOR KEY SHARE),"
                      " (SELECT role FROM members WHERE conv_id = w.general AND user_id = $3::bigint),"
                      " EXISTS (SELECT 1 FROM conversations WHERE workspace = w.id AND kind = 3"
                      "   AND title = $4::text),"
                      " (SELECT count(*) FROM workspace_members WHERE workspace_id = w.id"
                      "   AND user_id = ANY($5::bigint[]))"
                      " FROM workspaces w WHERE w.id = $1::bigint",
    /* $1 conv, $2 user: its workspace and private flag, user's role in it
     * and in its workspace; the workspace_members row is kept (KEY SHARE)
     * until COMMIT, so a WORKSPACE_REMOVE of user (any node) waits and then
     * sees what this batch did */
    [W_WS_CONV]     = "SELECT c.workspace, c.private,"
                      " (SELECT role FROM members WHERE conv_id = c.id AND user_id = $2::bigint), x.role"
                      " FROM conversations c LEFT JOIN LATERAL (SELECT x.role FROM workspace_members x"
                      "   WHERE x.workspace_id = c.workspace AND x.user_id = $2::bigint FOR KEY SHARE) x ON true"
                      " WHERE c.id = $1::bigint",
    /* $1 name, $2 creator, $3 now: no row if the creator is no live user
     * (its row kept as W_USERS_EXIST's) */
    [W_WS_INSERT]   = "INSERT INTO workspaces(name, created_by, created, general, member_count, channel_count,"
                      " next_join) SELECT $1::text, $2::bigint, $3::bigint, 0, 1, 0, 1"
                      " WHERE EXISTS (SELECT 1 FROM users WHERE id = $2::bigint AND deleted = 0 FOR KEY SHARE)"
                      " RETURNING id",
    /* after W_CHANNEL_CREATE of "general" ($3): the creator its admin */
    [W_WS_FOUNDER]  = "WITH x AS (INSERT INTO workspace_members(workspace_id, user_id, role, joined)"
                      "   VALUES($1::bigint, $2::bigint, 2, 0))"
                      " UPDATE workspaces SET general = (SELECT id FROM conversations WHERE workspace = $1::bigint"
                      "   AND kind = 3 AND title = $3::text) WHERE id = $1::bigint",
    [W_WS_JOIN]     = "WITH w AS (UPDATE workspaces SET next_join = next_join + 1, member_count = member_count + 1"
                      "   WHERE id = $1::bigint RETURNING next_join - 1 AS j)"
                      " INSERT INTO workspace_members(workspace_id, user_id, role, joined)"
                      " SELECT $1::bigint, $2::bigint, 1, w.j FROM w",
    [W_WS_LEAVE]    = "WITH d AS (DELETE FROM workspace_members WHERE workspace_id = $1::bigint"
                      "   AND user_id = $2::bigint RETURNING 1)"
                      " UPDATE workspaces SET member_count = member_count - (SELECT count(*) FROM d)"
                      " WHERE id = $1::bigint",
    [W_WS_PROMOTE]  = "UPDATE workspace_members SET role = 2 WHERE workspace_id = $1::bigint"
                      " AND user_id = (SELECT user_id FROM workspace_members WHERE workspace_id = $1::bigint"
                      "   ORDER BY joined LIMIT 1)"
                      " AND NOT EXISTS (SELECT 1 FROM workspace_members WHERE workspace_id = $1::bigint AND role = 2)",
    /* $1 workspace, $2 user: its channels user is in (a statement of its
     * own after W_WS_LEAVE: its snapshot is taken after the delete's wait) */
    [W_WS_CHANNELS_OF] = "SELECT m.conv_id FROM members m CROSS JOIN LATERAL (SELECT 1 FROM conversations c"
                       "   WHERE c.id = m.conv_id AND c.workspace = $1::bigint AND c.kind = 3 OFFSET 0) c"
                       " WHERE m.user_id = $2::bigint ORDER BY m.conv_id",
    [W_WS_IS_GENERAL] = "SELECT 1 FROM workspaces WHERE general = $1::bigint",
    /* as W_GROUP_CREATE, and $8 workspace, $9 private; no row when the name
     * is taken in the workspace */
    /* $1 workspace, $2 a lookalike key: its channels of that key, and
     * those whose key is not known yet (made before keys were kept) */
    [W_CHANNEL_KEYS] = "SELECT title, name_key FROM conversations WHERE workspace = $1::bigint AND kind = 3"
                       " AND (name_key = $2::text OR name_key IS NULL)",
    [W_CHANNEL_CREATE] =
        "WITH c AS (INSERT INTO conversations(kind, title, direct_key, last_seq, last_ts, next_join,"
        "           created, msg_count, member_count, workspace, private, name_key)"
        "         VALUES(3, $1::text, NULL, 1, $2::bigint, $3::bigint, $2::bigint, 0, $3::bigint, $8::bigint,"
        "           $9::smallint, $10::text)"
        "         ON CONFLICT (workspace, title) WHERE kind = 3 DO NOTHING RETURNING id),"
        " m AS (INSERT INTO members(conv_id, user_id, role, joined, joined_seq)"
        "         SELECT c.id, x.u, CASE WHEN x.j = 1 THEN 2 ELSE 1 END, x.j - 1, 1"
        "         FROM c, unnest($4::bigint[]) WITH ORDINALITY AS x(u, j)),"
        " e AS (INSERT INTO events(" EVENT_INSERT_COLS ")"
        "         SELECT c.id, 1, $5::bigint, $2::bigint, 1, $6::bigint, 0, 0, NULL, NULL, $7::text FROM c),"
        " w AS (UPDATE workspaces SET channel_count = channel_count + 1 FROM c WHERE workspaces.id = $8::bigint)"
        " SELECT id FROM c",
    /* ---- reports (store_pg_reports.c, store.h invariant 12) ---- */
    /* $1 conv, $2 user, $3 seq, $4 reporter (0: the content filter, user
     * the sender): user's joined_seq (no row: not a member), the target
     * (NULLs: none) and the reporter's report of it */
    [W_REPORT_TARGET] = "SELECT m.joined_seq, e.kind, e.sender, e.deleted_ts, r.id FROM members m"
                        " LEFT JOIN events e ON e.conv_id = $1::bigint AND e.seq = $3::bigint"
                        " LEFT JOIN reports r ON r.conv_id = $1::bigint AND r.seq = $3::bigint"
                        "   AND r.reporter = $4::bigint"
                        " WHERE m.conv_id = $1::bigint AND m.user_id = $2::bigint",
    /* $1 conv, $2 seq, $3 reporter, $4 reason, $5 note, $6 now: the
     * snapshot is the message's row as it is (an empty body: none) */
    [W_REPORT_INSERT] = "INSERT INTO reports(conv_id, seq, reporter, sender, reason, note, body, msg_id, msg_ts,"
                        " created) SELECT e.conv_id, e.seq, $3::bigint, e.sender, $4::text, $5::text,"
                        " nullif(e.body, ''::bytea), e.id, e.ts, $6::bigint FROM events e"
                        " WHERE e.conv_id = $1::bigint AND e.seq = $2::bigint"
                        " ON CONFLICT (conv_id, seq, reporter) DO NOTHING RETURNING id",
    /* $1 report: the content filter's, with the message's text as it is
     * now (an edit flagged again), and open again if it was resolved: a
     * row only then. An open one gets the new text too, so no moderator
     * reviews a text the message no longer has. */
    /* (no FOR UPDATE in o: a row locked and updated by one statement is
     * skipped by the UPDATE; the UPDATE takes the lock itself) */
    [W_REPORT_REOPEN] = "WITH o AS (SELECT resolved FROM reports WHERE id = $1::bigint),"
                        " u AS (UPDATE reports r SET resolved = 0, resolved_by = 0, body = nullif(e.body, ''::bytea)"
                        "   FROM events e WHERE r.id = $1::bigint AND e.conv_id = r.conv_id AND e.seq = r.seq"
                        "   RETURNING r.id)"
                        " SELECT u.id FROM u, o WHERE o.resolved <> 0",
    /* $1 report, $2 user, $3 a server admin, $4 now: whether it exists and
     * user may resolve it (an admin of its group or channel), and whether
     * this statement resolved it (a concurrent resolution, any node, makes
     * the UPDATE wait and then find it resolved) */
    [W_REPORT_RESOLVE] =
        "WITH r AS (SELECT r.id, $3::bool OR EXISTS (SELECT 1 FROM members m JOIN conversations c"
        "   ON c.id = m.conv_id WHERE m.conv_id = r.conv_id AND m.user_id = $2::bigint AND m.role = 2"
        "   AND c.kind <> 1 AND r.sender <> $2::bigint AND r.seq >= m.joined_seq) AS may"
        "   FROM reports r WHERE r.id = $1::bigint),"
        " u AS (UPDATE reports SET resolved = $4::bigint, resolved_by = $2::bigint"
        "   WHERE id = $1::bigint AND resolved = 0 AND (SELECT may FROM r) RETURNING id)"
        " SELECT r.may, (SELECT count(*) FROM u) FROM r",
    /* ---- blocks (store_pg_reports.c, store.h invariant 14) ---- */
    /* $1 the pair's direct_key */
    [W_PAIR_LOCK]   = "SELECT pg_advisory_xact_lock(" PAIR_LOCK ", hashtext($1::text))",
    [W_BLOCKED_PAIR] = "SELECT " BLOCKED_PAIR,
    /* $1 user, $2 peer, $3 now: whether peer is a live user (and user
     * too, its row kept, KEY SHARE, against an account deletion: that one
     * sees the block, or this finds user deleted), how many rows this
     * inserted (0: it was blocked already), whether user is live; the
     * unblock's $2 whatever, how many it deleted */
    [W_BLOCK_ADD]   = "WITH me AS (SELECT id FROM users WHERE id = $1::bigint AND deleted = 0 FOR KEY SHARE),"
                      " p AS (SELECT id FROM users WHERE id = $2::bigint AND deleted = 0 AND EXISTS (SELECT 1 FROM me)),"
                      " i AS (INSERT INTO blocks(user_id, blocked_id, created) SELECT $1::bigint, p.id, $3::bigint"
                      "   FROM p ON CONFLICT DO NOTHING RETURNING 1)"
                      " SELECT (SELECT count(*) FROM p), (SELECT count(*) FROM i), (SELECT count(*) FROM me)",
    [W_BLOCK_DEL]   = "WITH d AS (DELETE FROM blocks WHERE user_id = $1::bigint AND blocked_id = $2::bigint"
                      "   RETURNING 1)"
                      " SELECT 1, count(*) FROM d",
    /* $1 user, $2 peer, $3 their direct_key: the flag of their direct
     * conversation, where it changes (its row and the value) */
    [W_BLOCK_FLAG]  = "UPDATE conversations c SET blocked = x.v FROM (SELECT (" BLOCKED_PAIR ")::int AS v) x"
                      " WHERE c.direct_key = $3::text AND c.blocked <> x.v RETURNING c.id, c.blocked",
    /* ---- the data lifecycle (store_pg_life.c, store.h invariant 13) ---- */
    [W_LIFE_CONV_RETENTION] = "UPDATE conversations SET retention = $2::bigint WHERE id = $1::bigint",
    /* $1 workspace, $2 user, $3 seconds, $4 a server admin: user's role (no
     * row: no such workspace; NULL: not in it), set if an admin's */
    [W_LIFE_WS_RETENTION] =
        "WITH w AS (SELECT (SELECT role FROM workspace_members m WHERE m.workspace_id = w.id"
        "   AND m.user_id = $2::bigint) AS role FROM workspaces w WHERE w.id = $1::bigint),"
        " u AS (UPDATE workspaces SET retention = $3::bigint WHERE id = $1::bigint"
        "   AND ($4::bool OR (SELECT role FROM w) = 2))"
        " SELECT role FROM w",
    [W_LIFE_CONV_HOLD] = "UPDATE conversations SET hold = $2::smallint WHERE id = $1::bigint",
    [W_LIFE_WS_HOLD] = "UPDATE workspaces SET hold = $2::smallint WHERE id = $1::bigint RETURNING id",
    /* ACCOUNT_DELETE: the row locked first (a join's KEY SHARE waits, or
     * this waits for the join's COMMIT), then, a statement of its own (a
     * snapshot after the wait), whether it is in a group, a channel or a
     * workspace, and whether it blocks anyone */
    [W_LIFE_USER_LOCK] = "SELECT deleted FROM users WHERE id = $1::bigint FOR UPDATE",
    [W_LIFE_USER_BUSY] = "SELECT EXISTS (SELECT 1 FROM members m CROSS JOIN LATERAL (SELECT c.kind FROM conversations c"
                         "   WHERE c.id = m.conv_id OFFSET 0) c WHERE m.user_id = $1::bigint AND c.kind IN (2, 3))"
                         " OR EXISTS (SELECT 1 FROM workspace_members WHERE user_id = $1::bigint),"
                         " EXISTS (SELECT 1 FROM blocks WHERE user_id = $1::bigint)",
    /* $1 user, $2 now: the name no registration can take, no password, no
     * last seen, every login revoked with its push devices, the end-to-end
     * keys of its devices (the logins), its uploads garbage once
     * unreferenced (gc_after now, or earlier as it was) */
    [W_LIFE_ACCOUNT_DELETE] =
        "WITH u AS (UPDATE users SET deleted = $2::bigint, username = 'deleted#' || id, pwhash = '', last_seen = 0"
        "   WHERE id = $1::bigint AND deleted = 0 RETURNING id),"
        " l AS (UPDATE logins SET revoked = 1 WHERE user_id = $1::bigint AND revoked = 0),"
        " p AS (DELETE FROM push_devices WHERE user_id = $1::bigint"
        "   OR login IN (SELECT id FROM logins WHERE user_id = $1::bigint)),"
        " k AS (DELETE FROM e2ee_otks WHERE device IN (SELECT id FROM logins WHERE user_id = $1::bigint)),"
        " d AS (DELETE FROM e2ee_devices WHERE user_id = $1::bigint),"
        " g AS (UPDATE media SET gc_after = least(gc_after, $2::bigint) WHERE owner = $1::bigint)"
        " SELECT count(*) FROM u",
    /* $1 now, $2 conversations the batch appended to (locked): the flush's
     * purge_at (W_CONV_FLUSH) now, for a purge later in the same batch */
    [W_PURGE_TOUCH] = "UPDATE conversations SET purge_at = $1::bigint WHERE id = ANY($2::bigint[]) AND purge_at = 0",
    /* The purge (store_pg_life.c has its rounds). $1 now, $2 the server's
     * retention, $3 how many: conversations whose oldest live MESSAGE (by
     * purge_at) is due, not held, locked; SKIP LOCKED: one another
     * transaction holds is left for the next purge, so the purge never
     * waits for a conversation (store_pg.c invariant 15). The candidates
     * come from three small index scans, each filtered by its due time:
     * own retention (conversations_retention), channels of workspaces with
     * one, and with the server's the due purge_at (conversations_purge);
     * then each is checked exactly and locked by its key in a LATERAL,
     * only as the LIMIT takes them (no sort: a channel may come twice). A
     * join ordered by id walked the whole primary key instead (100,000
     * conversations: 42 ms for none due, against 1-3). */
    [W_PURGE_CONVS] =
        "SELECT c.id, c.purge_seq, c.cutoff FROM"
        "  (SELECT id FROM conversations WHERE retention > 0 AND purge_at <> 0"
        "     AND purge_at < $1::bigint - retention * 1000"
        "   UNION ALL SELECT x.id FROM workspaces v JOIN conversations x ON x.workspace = v.id AND x.kind = 3"
        "     WHERE v.retention > 0 AND x.retention = 0 AND x.purge_at <> 0"
        "     AND x.purge_at < $1::bigint - v.retention * 1000"
        "   UNION ALL SELECT id FROM conversations WHERE $2::bigint > 0 AND purge_at <> 0"
        "     AND purge_at < $1::bigint - $2::bigint * 1000 AND retention = 0) k"
        " CROSS JOIN LATERAL (SELECT c.id, c.purge_seq, $1::bigint - " PURGE_EFF " * 1000 AS cutoff"
        "   FROM conversations c" PURGE_WS " WHERE c.id = k.id AND c.hold = 0 AND coalesce(w.hold, 0) = 0"
        "   AND " PURGE_EFF " > 0 AND c.purge_at <> 0 AND c.purge_at < $1::bigint - " PURGE_EFF " * 1000"
        "   FOR UPDATE OF c SKIP LOCKED) c"
        " LIMIT $3::int",
    /* $1 conversations (locked), $2 their purge_seq, $3 rows each: the live
     * MESSAGEs above purge_seq, oldest first, through the primary key */
    [W_PURGE_SCAN] = "SELECT x.i, e.seq, e.ts FROM unnest($1::bigint[], $2::bigint[]) WITH ORDINALITY AS x(c, p, i)"
                     " CROSS JOIN LATERAL (SELECT e.seq, e.ts FROM events e WHERE e.conv_id = x.c AND e.seq > x.p"
                     "   AND e.kind = 2 AND e.deleted_ts = 0 ORDER BY e.seq LIMIT $3::int) e ORDER BY x.i, e.seq",
    /* $1 now, $2 conversations (locked), $3 seqs: erased as a delete
     * erases (PURGE_ERASE); how many */
    [W_PURGE_ERASE] = "WITH t AS (SELECT x.c AS conv_id, x.s AS seq"
                      "   FROM unnest($2::bigint[], $3::bigint[]) AS x(c, s)),"
                      PURGE_ERASE " SELECT count(*) FROM m",
    [W_PURGE_MARK]  = "UPDATE conversations c SET purge_seq = x.s, purge_at = x.t"
                      " FROM unnest($1::bigint[], $2::bigint[], $3::bigint[]) AS x(id, s, t) WHERE c.id = x.id",
    /* $1 now, $2 at most: live MESSAGEs of deleted users (users_deleted,
     * events_sender) outside held conversations, erased in the ones this
     * statement could lock (SKIP LOCKED, as W_PURGE_CONVS). The snapshot
     * is older than the locks: a delete committed in between is seen by
     * the UPDATE's recheck of deleted_ts (READ COMMITTED), so nothing is
     * erased twice. */
    [W_PURGE_USERS] =
        "WITH t0 AS MATERIALIZED (SELECT e.conv_id, e.seq FROM users u CROSS JOIN LATERAL"
        "   (SELECT e.conv_id, e.seq, e.id FROM events e WHERE e.sender = u.id AND e.kind = 2 AND e.deleted_ts = 0"
        "    AND NOT EXISTS (SELECT 1 FROM conversations c" PURGE_WS " WHERE c.id = e.conv_id"
        "      AND (c.hold <> 0 OR coalesce(w.hold, 0) <> 0))"
        "    ORDER BY e.id LIMIT $2::int) e WHERE u.deleted > 0 ORDER BY e.id LIMIT $2::int),"
        " l AS MATERIALIZED (SELECT c.id FROM conversations c" PURGE_WS
        "   WHERE c.id IN (SELECT conv_id FROM t0) AND c.hold = 0 AND coalesce(w.hold, 0) = 0"
        "   ORDER BY c.id FOR UPDATE OF c SKIP LOCKED),"
        " t AS (SELECT t0.conv_id, t0.seq FROM t0 JOIN l ON l.id = t0.conv_id),"
        PURGE_ERASE " SELECT count(*) FROM m",
};
