/* store_pg.c — the PostgreSQL backend of store.h (cluster mode): opening,
 * schema and migrations, statements, connections, the node id lease, the
 * shared secret, close.
 *
 * Owns: the PostgreSQL schema, the writer connection (store_pg_write.c runs
 * the write jobs on it, one batch per transaction), one connection per
 * reader thread (store_pg_read.c), this node's row in node_leases and, in
 * outbox mode, its rows in bus_outbox until acknowledged. The push outbox
 * (push_outbox) belongs to every node alike (store_pg_push.c).
 * Does not own: threads and queues (pipeline.c), the jobs (the caller's
 * until done() runs), publishing (bus/), durability (the database's).
 *
 * ---- The commit pipeline, across nodes ------------------------------------
 *
 *   writer thread (pipeline.c)            several parleyd nodes, one database
 *   pg_run_batch(jobs), one transaction, in round trips (pipelines):
 *     1. BEGIN; SELECT .. FROM conversations WHERE id = ANY(touched)
 *          ORDER BY id FOR UPDATE          <- lock order: ascending id
 *        with the first job's queries behind it (the server runs a
 *        pipeline in order, so they run under the locks)
 *     2. the jobs in submission order: consecutive sends (and receipts) as
 *        set operations, other jobs singly (the multi-statement ones in a
 *        SAVEPOINT); seqs come from the locked rows, kept in memory
 *     3. [lease renewal if due]; the run's INSERT, own_unread, conversation
 *        counters, last_seen (users locked in ascending id), the outbox
 *        row, COMMIT
 *     -> done() of every job only after COMMIT returned
 *   A batch of sends is two round trips and one WAL flush, whatever its size.
 *
 *   The writer's connection (store_pg.c, store_pg_write.c):
 *
 *        +----- pg_w_drop (lost) -----+
 *        v                            |
 *      DOWN --pg_w_connect (due)--> UP --pg_lease_renew finds the row gone
 *        ^   (backoff; batches         |   or taken--> LEASE LOST
 *        |    fail fast)               ^                 | (batches fail
 *        |                             +--pg_lease_reacquire   fast)
 *        +---------- pg_w_drop (lost) -------------------+
 *
 *   A reader's: UP --r_drop--> DOWN --r_ready (a read or a probe, when due)--> UP
 *
 * Invariants:
 *   1. The single writer of a conversation holds across nodes: every batch
 *      that appends to a conversation, or reads its counters, first locks
 *      its row (FOR UPDATE) and keeps the lock to COMMIT. Seqs, msg_no and
 *      the counters are computed from the locked row, so they are
 *      contiguous whichever node commits next. Batches lock all their
 *      conversations in one statement in ascending id, and lock users (for
 *      last_seen) in ascending id at the end, so two nodes never wait on
 *      each other in a cycle through these rows. Other waits (the same new
 *      username or direct pair inserted by two nodes, a login rotated on
 *      two nodes) can still deadlock in rare orders: PostgreSQL detects it
 *      and the batch is retried (5).
 *   2. A write job completes OK only after the COMMIT of its batch returned
 *      COMMIT with synchronous_commit = on (WAL flushed on the server).
 *   3. Idempotency: (conv, sender, client_msg_id) is UNIQUE in events; a
 *      send looks its key up first (before membership), under the
 *      conversation lock, so a retry on any node returns the original event
 *      (dup = 1), and a key twice in one batch is a dup of the first.
 *   4. No statement fails inside a batch transaction on a job's account
 *      (PostgreSQL aborts the whole transaction on any error): job-level
 *      outcomes are checked before the writes or come from ON CONFLICT DO
 *      NOTHING; the multi-statement jobs run in a SAVEPOINT, so an
 *      unexpected error fails that job alone (EUNAVAIL) and the batch goes
 *      on. A job that fails alone leaves the in-memory state as it was;
 *      after a batch failure that state is dropped (the next attempt
 *      rebuilds it from the locked rows).
 *   5. Failures:
 *      - deadlock_detected / serialization_failure: ROLLBACK, retry the
 *        whole batch (PG_RETRIES times), outputs reset.
 *      - connection lost before COMMIT was sent: the server rolled the
 *        transaction back; reconnect at once and retry the batch once
 *        (the common case is a stale connection after a server restart),
 *        else every job fails EUNAVAIL.
 *      - COMMIT sent but its reply lost: the outcome is unknown; every job
 *        fails EUNAVAIL (nothing acknowledged) and clients retry: a send's
 *        idempotency key returns the committed event if it did commit.
 *      - any other statement error: ROLLBACK, every job EUNAVAIL. A lock
 *        held by another node longer than lock_timeout (10 s) is one.
 *      - this process stalls inside a transaction (stopped, partitioned):
 *        the server ends the session after 30 s idle in it
 *        (idle_in_transaction_session_timeout), freeing its locks for the
 *        other nodes; TCP keepalives and tcp_user_timeout bound how long
 *        this side waits on a dead server (~10 s).
 *      After a lost connection the writer reconnects with backoff
 *      (PG_BACKOFF_MIN_MS doubling to PG_BACKOFF_MAX_MS, on the idle tick
 *      or the next batch); batches arriving meanwhile fail fast with
 *      EUNAVAIL. Unlike SQLite nothing is sticky: the database owns
 *      durability. A server restart is a lost connection on every thread.
 *   6. Node ids: pl_store_opts.node_id >= 0 is leased as asked, -1 leases
 *      the lowest free id; a live lease of another owner refuses the open.
 *      The lease lasts PG_LEASE_TTL_S (database clock) and is renewed by
 *      the writer when PG_LEASE_RENEW_MS old: on the idle tick, and inside
 *      a batch's transaction before COMMIT (the renewal locks the lease row
 *      until COMMIT, so no node can take the id while this one commits with
 *      it). If a renewal finds the row gone or owned by another, the lease
 *      is lost: batches fail EUNAVAIL, healthy() is 0 and the writer logs
 *      and tries to take the same id back (it is never changed at run
 *      time: the id generator and callers use it). Released at close.
 *   7. Outbox (o->outbox): a batch that appended events inserts one
 *      bus_outbox row (node, id = snowflake of its first appended event,
 *      increasing per node; convs, seqs = the highest seq it appended per
 *      conversation) in the same transaction; each job that appended an
 *      event gets out_batch = that id. OUTBOX_ACK deletes this node's rows
 *      up to an id; OUTBOX_TAKEOVER deletes and reports rows older than
 *      PG_TAKEOVER_DEAD_S of nodes whose lease expired or vanished, and
 *      rows of this node older than PG_TAKEOVER_OWN_S (an earlier
 *      incarnation's, or a batch whose COMMIT reply was lost).
 *   8. Readers: one connection per reader thread; a multi-statement read
 *      runs in one REPEATABLE READ READ ONLY transaction sent as one
 *      pipeline (one round trip). A read that loses its connection
 *      reconnects once at once and runs again (reads are idempotent), else
 *      fails EUNAVAIL; while the server is down reads fail fast (backoff,
 *      skipped as soon as any connection of this store succeeded again).
 *   9. healthy() is 1 while the writer and at least one reader are
 *      connected and the lease is held. An idle reader that is down is
 *      reconnected by probe reads the writer submits on its idle tick, so
 *      readiness comes back without traffic.
 *  10. Only the writer thread touches w, the conversation and own maps,
 *      the id generator and the lease state (before the threads start and
 *      after they stop, the opening/closing thread does); reader i touches
 *      only readers[i]. Shared flags are atomics.
 *  11. Message actions (store.h invariants 6 and 7; store_pg_actions.c)
 *      lock their conversation like any append (1), so their checks (the
 *      target, reaction and pin counts) and their writes see the same
 *      rows on every node; the target's row is rewritten to its current
 *      form in the action's SAVEPOINT, with the event. A send's mention
 *      rows and a reply's parent are part of its run (store_pg_runs.c).
 *      Reads build the current form (pl_event.annot) from the row, its
 *      parent and the page's reactions in one snapshot. A delete nulls
 *      the columns in place; PostgreSQL keeps the old row version until
 *      VACUUM reclaims it (unlike SQLite's secure_delete, not overwritten
 *      at once).
 *  12. Push (store.h invariant 10; store_pg_push.c): with opts.push a run
 *      of sends inserts its events and their push_outbox rows in one
 *      statement (W_SEND_INSERT_PUSH); without it the run's statement is
 *      unchanged. Claims lease rows with FOR UPDATE SKIP LOCKED, so a row
 *      is held by one node at a time; a lease is a time in ms of the
 *      claiming node's clock (pl_now_ms), so nodes' clocks should agree to
 *      well within a lease. Revoking a login deletes its push devices in
 *      the same statement (W_LOGIN_REVOKE).
 *  13. Workspaces (store.h invariant 11; store_pg_ws.c): a job that
 *      changes a workspace's members or channels locks the workspace's row
 *      at the start of its batch, after the conversations (1), in ascending
 *      id; the quotas' counters and the channel names are checked under
 *      it. A job that adds someone to a channel because it is in the
 *      workspace keeps that workspace_members row (KEY SHARE) to COMMIT,
 *      so a removal from the workspace, on any node, waits for it and then
 *      lists every channel the removed member is still in.
 *  14. Reports (store.h invariant 12; store_pg_reports.c) are rows of
 *      their own, no events: a report locks its conversation like a
 *      message action (11), checks its target as EDIT does and copies the
 *      message's sender, id, ts and body into its row in one INSERT ..
 *      SELECT; UNIQUE(conv_id, seq, reporter) keeps one per reporter. A
 *      resolution is one UPDATE .. WHERE resolved = 0, so of two at once
 *      (any nodes) one resolves and the other finds it resolved.
 *  15. The data lifecycle (store.h invariant 13; store_pg_life.c). A
 *      conversation's RETENTION_SET and HOLD_SET lock it with the batch
 *      (1), a workspace's the workspace (13). The purge finds its
 *      conversations as it goes, so it cannot lock them at the start of
 *      the batch: it locks them FOR UPDATE SKIP LOCKED, never waiting for
 *      one (a conversation another transaction holds, any node's, is left
 *      for the next purge), so it is in no cycle of waits through them;
 *      it then erases under those locks, and UPDATE .. WHERE deleted_ts = 0
 *      erases a message once. ACCOUNT_DELETE locks the user's row FOR
 *      UPDATE before it reads the memberships; the joins (DIRECT_OPEN,
 *      GROUP_CREATE, MEMBER_ADD, WORKSPACE_ADD) keep the row they found
 *      live FOR KEY SHARE to COMMIT, so a deleted user never becomes a
 *      member of anything. Like the other mid-batch user locks (media,
 *      push), these can deadlock in rare orders; PostgreSQL detects it
 *      and the batch is retried (5).
 *  16. Blocks (store.h invariant 14; store_pg_reports.c). The send path,
 *      EDIT, REACTION, and a member's RETENTION_SET and CONV_E2EE read
 *      conversations.blocked from the row their batch locked (1); a
 *      BLOCK's batch locks the pair's direct conversation at its start
 *      too (found by direct_key, in the same statement and order), and
 *      writes the flag under that lock and in the batch's map. So a send
 *      that commits after the block (any node) saw the flag set, and one
 *      before it was simply before. BLOCK and DIRECT_OPEN's creation take
 *      the pair's advisory lock to COMMIT, so a block never misses a
 *      direct conversation created at the same time on another node, nor
 *      does a creation miss a block.
 *
 * Every statement is prepared with parameters (extended protocol); values
 * never go into SQL text. Bodies are BYTEA (any bytes, NUL included); text
 * columns hold valid UTF-8 only, so text inputs are checked first (EINVAL
 * for writes, ENOTFOUND for lookups) instead of failing a transaction.
 */
#include "pg_int.h"

#include <errno.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../core/alloc.h"
#include "../core/clock.h"
#include "../core/log.h"

/* ---- schema and migrations ---------------------------------------------- */

#define MIGRATION_LOCK "7523094288207667809"   /* pg_advisory_xact_lock key */
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

/* The search text's translate() arguments: the snippet markers, '<', '>',
 * '&' and '/' become spaces, a final sigma a sigma (byte for byte; the
 * body, R_SEARCH's headline and its query alike; pl_store__snippet_restore
 * undoes it). */
#define SEARCH_BLANKS "E'\\x02\\x03<>&/\xcf\x82', '      \xcf\x83'"

/* migrations[v] takes a database from version v to v + 1. Append only.
 * Version 1 is SQLite's version 3 plus what cluster mode adds. */
static const char *const migrations[] = {
    /* 0 -> 1 */
    "CREATE TABLE users("
    "  id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,"
    "  username TEXT NOT NULL UNIQUE,"
    "  pwhash TEXT NOT NULL,"
    "  created BIGINT NOT NULL,"
    "  last_seen BIGINT NOT NULL DEFAULT 0);"
    "CREATE TABLE logins("
    "  id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,"
    "  user_id BIGINT NOT NULL,"
    "  refresh_hash BYTEA NOT NULL,"
    "  expires BIGINT NOT NULL,"
    "  revoked INT NOT NULL DEFAULT 0,"
    "  created BIGINT NOT NULL);"
    "CREATE INDEX logins_user ON logins(user_id);"
    "CREATE TABLE conversations("
    "  id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,"
    "  kind INT NOT NULL,"
    "  title TEXT,"
    "  direct_key TEXT UNIQUE,"                 /* '<min>:<max>' user ids, direct only */
    "  last_seq BIGINT NOT NULL DEFAULT 0,"
    "  last_ts BIGINT NOT NULL DEFAULT 0,"
    "  next_join BIGINT NOT NULL DEFAULT 0,"    /* next members.joined value */
    "  created BIGINT NOT NULL,"
    "  msg_count BIGINT NOT NULL DEFAULT 0,"
    "  member_count BIGINT NOT NULL DEFAULT 0)"
    "  WITH (fillfactor = 70);"                 /* counters: HOT updates */
    "CREATE TABLE members("
    "  conv_id BIGINT NOT NULL,"
    "  user_id BIGINT NOT NULL,"
    "  role INT NOT NULL,"
    "  joined BIGINT NOT NULL,"                 /* order of joining in the conv */
    "  joined_seq BIGINT NOT NULL DEFAULT 1,"
    "  delivered_seq BIGINT NOT NULL DEFAULT 0,"
    "  read_seq BIGINT NOT NULL DEFAULT 0,"
    "  own_unread BIGINT NOT NULL DEFAULT 0,"
    "  PRIMARY KEY(conv_id, user_id))"
    "  WITH (fillfactor = 70);"                 /* cursors: HOT updates */
    "CREATE INDEX members_user ON members(user_id, conv_id);"
    "CREATE TABLE events("
    "  conv_id BIGINT NOT NULL,"
    "  seq BIGINT NOT NULL,"
    "  id BIGINT NOT NULL,"
    "  ts BIGINT NOT NULL,"
    "  kind INT NOT NULL,"
    "  sender BIGINT NOT NULL,"
    "  subject BIGINT NOT NULL DEFAULT 0,"
    "  msg_no BIGINT NOT NULL DEFAULT 0,"
    "  client_msg_id TEXT,"
    "  body BYTEA,"
    "  data TEXT,"
    "  PRIMARY KEY(conv_id, seq));"
    "CREATE UNIQUE INDEX events_idem ON events(conv_id, sender, client_msg_id)"
    "  WHERE client_msg_id IS NOT NULL;"
    "CREATE TABLE node_leases("
    "  node_id INT PRIMARY KEY,"
    "  owner TEXT NOT NULL,"
    "  expires TIMESTAMPTZ NOT NULL);"
    "CREATE TABLE bus_outbox("
    "  node INT NOT NULL,"
    "  id BIGINT NOT NULL,"
    "  convs BIGINT[] NOT NULL,"
    "  seqs BIGINT[] NOT NULL,"
    "  created TIMESTAMPTZ NOT NULL DEFAULT now(),"
    "  PRIMARY KEY(node, id));"
    "CREATE TABLE secrets("
    "  name TEXT PRIMARY KEY,"
    "  value BYTEA NOT NULL);",
    /* 1 -> 2: message actions (store.h invariant 6: ref, the edited,
     * deleted and pinned marks, reactions), mentions (invariant 7),
     * notification levels. The new columns have constant defaults: no
     * table rewrite. */
    "ALTER TABLE events ADD COLUMN ref BIGINT NOT NULL DEFAULT 0,"   /* reply_to / target seq */
    "  ADD COLUMN edited_ts BIGINT NOT NULL DEFAULT 0,"
    "  ADD COLUMN deleted_ts BIGINT NOT NULL DEFAULT 0,"
    "  ADD COLUMN pinned_ts BIGINT NOT NULL DEFAULT 0;"
    "CREATE INDEX events_ref ON events(conv_id, ref) WHERE ref > 0;"
    "CREATE INDEX events_pinned ON events(conv_id, pinned_ts) WHERE pinned_ts > 0;"
    "CREATE TABLE reactions("
    "  conv_id BIGINT NOT NULL,"
    "  seq BIGINT NOT NULL,"
    "  emoji TEXT NOT NULL,"
    "  user_id BIGINT NOT NULL,"
    "  first_ts BIGINT NOT NULL,"
    "  PRIMARY KEY(conv_id, seq, emoji, user_id));"
    "CREATE TABLE mentions("
    "  conv_id BIGINT NOT NULL,"
    "  user_id BIGINT NOT NULL,"
    "  seq BIGINT NOT NULL,"
    "  PRIMARY KEY(conv_id, user_id, seq));"
    "CREATE INDEX mentions_seq ON mentions(conv_id, seq);"
    "ALTER TABLE members ADD COLUMN notify SMALLINT NOT NULL DEFAULT 0;",
    /* 2 -> 3: refresh-token reuse detection (protocol.md "Refresh token
     * reuse"): the hash a rotation replaced and when */
    "ALTER TABLE logins ADD COLUMN IF NOT EXISTS prev_hash BYTEA,"
    "  ADD COLUMN IF NOT EXISTS rotated BIGINT NOT NULL DEFAULT 0;",
    /* 3 -> 4: full-text search (store.h invariant 8): a GIN index over the
     * 'simple' text search vector of every MESSAGE body (no stemming, no
     * stop words: the same for every language). An expression index, so
     * the writer's statements are unchanged and an edit or a delete
     * (body erased: out of the partial index) is reflected in the same
     * transaction; building it indexes the existing messages. The wrapper
     * is IMMUTABLE (convert_from is only STABLE: the bodies' encoding is
     * fixed: the writer accepts UTF-8 bodies only), leaves a body with a
     * NUL out (NULL: text cannot hold it) and blanks the snippet markers
     * \x02 and \x03. */
    "CREATE OR REPLACE FUNCTION parley_body_tsv(b bytea) RETURNS tsvector"
    "  LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $f$"
    "  SELECT CASE WHEN position('\\x00'::bytea IN b) = 0 THEN"
    "  to_tsvector('simple'::regconfig, translate(convert_from(b, 'UTF8'), E'\\x02\\x03', '  ')) END"
    "  $f$;"
    "CREATE INDEX IF NOT EXISTS events_fts ON events USING gin (parley_body_tsv(body))"
    "  WITH (fastupdate = off) WHERE kind = 2 AND body IS NOT NULL;",
    /* 4 -> 5: reactions are listed in order of first use, which is the seq
     * of the reaction event that added the first one (a time ties within a
     * batch). Rows from before hold a time, which sorts after any seq;
     * only development databases of the day had them. */
    "ALTER TABLE reactions RENAME COLUMN first_ts TO first_seq;",
    /* 5 -> 6: end-to-end encryption (store.h invariant 9): the key directory, one
     * row per device (a login session) and its one-time prekeys, which a
     * claim deletes (FOR UPDATE SKIP LOCKED: two nodes never take the same);
     * the conversation mark */
    "CREATE TABLE IF NOT EXISTS e2ee_devices("
    "  device BIGINT PRIMARY KEY,"
    "  user_id BIGINT NOT NULL,"
    "  identity TEXT NOT NULL,"
    "  spk_id BIGINT NOT NULL,"
    "  spk TEXT NOT NULL,"
    "  spk_sig TEXT NOT NULL,"
    "  updated BIGINT NOT NULL);"
    "CREATE INDEX IF NOT EXISTS e2ee_devices_user ON e2ee_devices(user_id);"
    "CREATE TABLE IF NOT EXISTS e2ee_otks("
    "  device BIGINT NOT NULL,"
    "  key_id BIGINT NOT NULL,"
    "  key TEXT NOT NULL,"
    "  PRIMARY KEY(device, key_id));"
    "ALTER TABLE conversations ADD COLUMN IF NOT EXISTS e2ee SMALLINT NOT NULL DEFAULT 0;",
    /* 6 -> 7: media (store_pg_media.c): a row per upload, blobs shared by
     * sha256; media_refs: the messages that reference a row (GC keeps
     * those). Idempotent, like the migrations before it. The update
     * trigger names no columns, so it depends on none (migration tests
     * drop and re-add events' columns). */
    "CREATE TABLE IF NOT EXISTS media("
    "  id BIGINT PRIMARY KEY,"
    "  owner BIGINT NOT NULL,"
    "  sha256 TEXT NOT NULL,"
    "  size BIGINT NOT NULL,"
    "  mime TEXT NOT NULL,"
    "  kind SMALLINT NOT NULL,"
    "  name TEXT NOT NULL,"
    "  created BIGINT NOT NULL,"
    "  width INT NOT NULL DEFAULT 0,"
    "  height INT NOT NULL DEFAULT 0,"
    "  placeholder TEXT,"
    "  thumb_sha TEXT,"
    "  gc_after BIGINT NOT NULL);"
    "CREATE INDEX IF NOT EXISTS media_owner ON media(owner);"
    "CREATE INDEX IF NOT EXISTS media_sha ON media(sha256);"
    "CREATE INDEX IF NOT EXISTS media_thumb ON media(thumb_sha) WHERE thumb_sha IS NOT NULL;"
    "CREATE INDEX IF NOT EXISTS media_gc ON media(gc_after);"
    "CREATE TABLE IF NOT EXISTS media_refs("
    "  media_id BIGINT NOT NULL,"
    "  conv_id BIGINT NOT NULL,"
    "  seq BIGINT NOT NULL,"
    "  PRIMARY KEY(media_id, conv_id, seq));"
    "CREATE INDEX IF NOT EXISTS media_refs_msg ON media_refs(conv_id, seq);"
    /* a MESSAGE's data.attachments are its references; an edit keeps them;
     * a delete (or the row's removal) drops them and starts the grace period */
    "CREATE OR REPLACE FUNCTION parley_media_ai() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
    "  INSERT INTO media_refs(media_id, conv_id, seq)"
    "    SELECT (a->>'id')::bigint, NEW.conv_id, NEW.seq"
    "    FROM jsonb_array_elements(NEW.data::jsonb->'attachments') a ON CONFLICT DO NOTHING;"
    "  RETURN NULL; END $$;"
    "CREATE OR REPLACE TRIGGER events_media_ai AFTER INSERT ON events FOR EACH ROW"
    "  WHEN (NEW.kind = 2 AND strpos(NEW.data, '\"attachments\"') > 0) EXECUTE FUNCTION parley_media_ai();"
    "CREATE OR REPLACE FUNCTION parley_media_bu() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
    "  IF NEW.deleted_ts > 0 AND OLD.deleted_ts = 0 THEN"
    "    UPDATE media SET gc_after = NEW.deleted_ts WHERE id IN"
    "      (SELECT media_id FROM media_refs WHERE conv_id = NEW.conv_id AND seq = NEW.seq);"
    "    DELETE FROM media_refs WHERE conv_id = NEW.conv_id AND seq = NEW.seq;"
    "  ELSIF NEW.deleted_ts = 0 AND (NEW.data IS NULL OR strpos(NEW.data, '\"attachments\"') = 0) THEN"
    "    NEW.data := jsonb_set(coalesce(NEW.data::jsonb, '{}'::jsonb), '{attachments}',"
    "      OLD.data::jsonb->'attachments')::text;"
    "  END IF;"
    "  RETURN NEW; END $$;"
    "CREATE OR REPLACE TRIGGER events_media_bu BEFORE UPDATE ON events FOR EACH ROW"
    "  WHEN (OLD.kind = 2 AND strpos(OLD.data, '\"attachments\"') > 0) EXECUTE FUNCTION parley_media_bu();"
    "CREATE OR REPLACE FUNCTION parley_media_ad() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
    "  UPDATE media SET gc_after = greatest(gc_after, (extract(epoch FROM clock_timestamp()) * 1000)::bigint)"
    "    WHERE id IN (SELECT media_id FROM media_refs WHERE conv_id = OLD.conv_id AND seq = OLD.seq);"
    "  DELETE FROM media_refs WHERE conv_id = OLD.conv_id AND seq = OLD.seq;"
    "  RETURN NULL; END $$;"
    "CREATE OR REPLACE TRIGGER events_media_ad AFTER DELETE ON events FOR EACH ROW"
    "  WHEN (OLD.kind = 2) EXECUTE FUNCTION parley_media_ad();",
    /* 7 -> 8: the search index takes new entries into GIN's pending list,
     * merged in bulk when it passes 256 kB (or by autovacuum): inserting a
     * message's words one by one into the entry tree was most of a send's
     * PostgreSQL time (1:1 peak, 20 users: 22 of 27 us per row in a
     * 60,000-row INSERT, 11 with the list). A search also scans the list:
     * +0.3-1.2 ms at 256 kB (+3-5 ms at the default 4 MB, why 3 -> 4 had
     * it off). Same rows, same transaction: search sees what is committed. */
    "ALTER INDEX IF EXISTS events_fts SET (fastupdate = on, gin_pending_list_limit = 256);",
    /* 8 -> 9: parley_body_tsv in PL/pgSQL, same result (so the index stays
     * as built): the SQL wrapper is not inlined (CASE is not strict,
     * convert_from not immutable), and a SQL function's call costs more
     * than a PL/pgSQL one's simple expressions: 60,000-row INSERTs into a
     * table with the index, 12-14 -> 10.5-11.3 us per row. */
    "CREATE OR REPLACE FUNCTION parley_body_tsv(b bytea) RETURNS tsvector"
    "  LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $f$ BEGIN"
    "  IF position('\\x00'::bytea IN b) <> 0 THEN RETURN NULL; END IF;"
    "  RETURN to_tsvector('simple'::regconfig, translate(convert_from(b, 'UTF8'), E'\\x02\\x03', '  '));"
    "  END $f$;",
    /* 9 -> 10: push notifications (store.h invariant 10, store_pg_push.c):
     * the tokens logins registered, one row per (platform, token), and the
     * outbox the push workers drain (a row per MESSAGE while opts.push is
     * on; only_devices: NULL, or the device ids a retry goes to,
     * comma-separated). Idempotent, like the migrations before it. */
    "CREATE TABLE IF NOT EXISTS push_devices("
    "  id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,"
    "  user_id BIGINT NOT NULL,"
    "  login BIGINT NOT NULL,"
    "  platform SMALLINT NOT NULL,"
    "  token TEXT NOT NULL,"
    "  created BIGINT NOT NULL,"
    "  UNIQUE(platform, token));"
    "CREATE INDEX IF NOT EXISTS push_devices_user ON push_devices(user_id);"
    "CREATE INDEX IF NOT EXISTS push_devices_login ON push_devices(login);"
    "CREATE TABLE IF NOT EXISTS push_outbox("
    "  id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,"
    "  conv_id BIGINT NOT NULL,"
    "  seq BIGINT NOT NULL,"
    "  lease BIGINT NOT NULL DEFAULT 0,"
    "  attempts INT NOT NULL DEFAULT 0,"
    "  only_devices TEXT);",
    /* 10 -> 11: workspaces and channels (store.h invariant 11,
     * store_pg_ws.c). A workspace row keeps its counters (member_count,
     * channel_count: the quotas; next_join: the next workspace_members.joined,
     * the order of joining), changed under its row lock. A channel is a
     * conversation of kind 3 with its workspace and private flag; its name
     * (the title) is unique in the workspace. The new columns have constant
     * defaults: no table rewrite. Idempotent, like the migrations before it. */
    "CREATE TABLE IF NOT EXISTS workspaces("
    "  id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,"
    "  name TEXT NOT NULL,"
    "  created_by BIGINT NOT NULL,"
    "  created BIGINT NOT NULL,"
    "  general BIGINT NOT NULL DEFAULT 0,"       /* its "general" channel */
    "  member_count BIGINT NOT NULL DEFAULT 0,"
    "  channel_count BIGINT NOT NULL DEFAULT 0,"
    "  next_join BIGINT NOT NULL DEFAULT 0);"
    "CREATE TABLE IF NOT EXISTS workspace_members("
    "  workspace_id BIGINT NOT NULL,"
    "  user_id BIGINT NOT NULL,"
    "  role INT NOT NULL,"
    "  joined BIGINT NOT NULL,"                  /* order of joining in the workspace */
    "  PRIMARY KEY(workspace_id, user_id));"
    "CREATE INDEX IF NOT EXISTS workspace_members_user ON workspace_members(user_id, workspace_id);"
    "ALTER TABLE conversations ADD COLUMN IF NOT EXISTS workspace BIGINT NOT NULL DEFAULT 0,"
    "  ADD COLUMN IF NOT EXISTS private SMALLINT NOT NULL DEFAULT 0;"
    "CREATE UNIQUE INDEX IF NOT EXISTS conversations_channel ON conversations(workspace, title)"
    "  WHERE kind = 3;",
    /* 11 -> 12: reports of messages (store.h invariant 12,
     * store_pg_reports.c): one row per (message, reporter) with the
     * snapshot of the message (sender, id, ts, body: BYTEA as events.body,
     * NULL for none); resolved 0 while open. Listed newest first per
     * conversation (reports_conv) or, open ones, across all of them
     * (reports_open). Idempotent, like the migrations before it. */
    "CREATE TABLE IF NOT EXISTS reports("
    "  id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,"
    "  conv_id BIGINT NOT NULL,"
    "  seq BIGINT NOT NULL,"
    "  reporter BIGINT NOT NULL,"
    "  sender BIGINT NOT NULL,"
    "  reason TEXT NOT NULL,"
    "  note TEXT,"
    "  body BYTEA,"
    "  msg_id BIGINT NOT NULL,"
    "  msg_ts BIGINT NOT NULL,"
    "  created BIGINT NOT NULL,"
    "  resolved BIGINT NOT NULL DEFAULT 0,"
    "  resolved_by BIGINT NOT NULL DEFAULT 0,"
    "  UNIQUE(conv_id, seq, reporter));"
    "CREATE INDEX IF NOT EXISTS reports_conv ON reports(conv_id, id);"
    "CREATE INDEX IF NOT EXISTS reports_open ON reports(id) WHERE resolved = 0;",
    /* 12 -> 13: the data lifecycle (store.h invariant 13, store_pg_life.c).
     * Retention in seconds (0: not set) and legal hold (0/1) of
     * conversations and workspaces; users.deleted (ms, 0: live). The
     * purge's bookkeeping per conversation (store_pg_life.c has the
     * rules): purge_seq, below which no MESSAGE is live any more, and
     * purge_at, the time of the oldest live MESSAGE above it (0: none;
     * the writer sets it when a batch appends the first one), filled here
     * from the messages there are. Indexes: events_sender, a user's live
     * messages (READ_USER_MESSAGES, the purge of deleted users' messages;
     * erased ones leave it, so it holds only what is left to do);
     * users_deleted, conversations_retention and conversations_purge, the
     * purge's candidates without a scan of conversations or events (their
     * columns change rarely, so the counters' updates stay HOT). The new
     * columns have constant defaults: no table rewrite; the indexes are
     * built in the migration's transaction (writes to events wait for the
     * build, as for events_fts). Idempotent, like the migrations before it. */
    "ALTER TABLE conversations ADD COLUMN IF NOT EXISTS retention BIGINT NOT NULL DEFAULT 0,"
    "  ADD COLUMN IF NOT EXISTS hold SMALLINT NOT NULL DEFAULT 0,"
    "  ADD COLUMN IF NOT EXISTS purge_seq BIGINT NOT NULL DEFAULT 0,"
    "  ADD COLUMN IF NOT EXISTS purge_at BIGINT NOT NULL DEFAULT 0;"
    "ALTER TABLE workspaces ADD COLUMN IF NOT EXISTS retention BIGINT NOT NULL DEFAULT 0,"
    "  ADD COLUMN IF NOT EXISTS hold SMALLINT NOT NULL DEFAULT 0;"
    "ALTER TABLE users ADD COLUMN IF NOT EXISTS deleted BIGINT NOT NULL DEFAULT 0;"
    "UPDATE conversations c SET purge_at = x.t FROM (SELECT conv_id, min(ts) AS t FROM events"
    "  WHERE kind = 2 AND deleted_ts = 0 GROUP BY conv_id) x WHERE x.conv_id = c.id AND c.purge_at = 0;"
    "CREATE INDEX IF NOT EXISTS events_sender ON events(sender, id) WHERE kind = 2 AND deleted_ts = 0;"
    "CREATE INDEX IF NOT EXISTS users_deleted ON users(id) WHERE deleted > 0;"
    "CREATE INDEX IF NOT EXISTS conversations_retention ON conversations(id) WHERE retention > 0;"
    "CREATE INDEX IF NOT EXISTS conversations_purge ON conversations(purge_at) WHERE purge_at <> 0;",
    /* 13 -> 14: blocks (store.h invariant 14, store_pg_reports.c): who
     * blocks whom (blocks_blocked: the rows naming a user as the blocked
     * one), and conversations.blocked, whether a block exists between the
     * two members of a direct conversation, kept by BLOCK in its
     * transaction and read by the send path with the locked row (W_CONV_LOCK).
     * A constant default: no table rewrite. Idempotent, like the
     * migrations before it. */
    "CREATE TABLE IF NOT EXISTS blocks("
    "  user_id BIGINT NOT NULL,"
    "  blocked_id BIGINT NOT NULL,"
    "  created BIGINT NOT NULL,"
    "  PRIMARY KEY(user_id, blocked_id));"
    "CREATE INDEX IF NOT EXISTS blocks_blocked ON blocks(blocked_id);"
    "ALTER TABLE conversations ADD COLUMN IF NOT EXISTS blocked SMALLINT NOT NULL DEFAULT 0;",
    /* 14 -> 15: own_unread recounted where a member joined after the
     * start: a receipt took a re-joined member's messages of its earlier
     * membership out of it (store_pg_runs.c now counts from joined_seq).
     * A recount: idempotent. */
    "UPDATE members m SET own_unread = (SELECT count(*) FROM events e WHERE e.conv_id = m.conv_id"
    "  AND e.seq > greatest(m.read_seq, m.joined_seq - 1) AND e.kind = 2 AND e.sender = m.user_id)"
    "  WHERE m.joined_seq > 1;",
    /* 15 -> 16: the search text blanks '<', '>' and '&' as well as the
     * snippet markers: the 'simple' parser took `<div>` and `&lt;` for an
     * HTML tag and entity and left them out, so a chat about markup found
     * nothing of it (audit U; embedded mode indexes `div` and `lt`). Each
     * is one byte for one space, so a snippet maps back onto the body
     * byte for byte (pl_store__snippet_restore). The index is rebuilt:
     * its function changed. */
    "CREATE OR REPLACE FUNCTION parley_body_tsv(b bytea) RETURNS tsvector"
    "  LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $f$ BEGIN"
    "  IF position('\\x00'::bytea IN b) <> 0 THEN RETURN NULL; END IF;"
    "  RETURN to_tsvector('simple'::regconfig, translate(convert_from(b, 'UTF8'), E'\\x02\\x03<>&', '     '));"
    "  END $f$;"
    "REINDEX INDEX events_fts;",
    /* 16 -> 17: a channel's lookalike key (core/lookalike.h, store.h
     * invariant 11): a name that looks like another channel's is a
     * conflict. Channels made before keep NULL; their keys are worked out
     * when a channel is made in their workspace (store_pg_ws.c; not
     * written back: that would lock conversation rows out of the writer's
     * order). Idempotent, like the migrations before it. */
    "ALTER TABLE conversations ADD COLUMN IF NOT EXISTS name_key TEXT;"
    "CREATE INDEX IF NOT EXISTS conversations_channel_key ON conversations(workspace, name_key) WHERE kind = 3;",
    /* 17 -> 18: the search text also blanks '/' (the 'simple' parser kept
     * `yes/no`, `TCP/IP` and the `/div` of `</div>` as one file-name word,
     * so `no` or `div` found nothing there: embedded mode splits them) and
     * makes a final sigma a sigma (lower() of `ΟΔΥΣΣΕΎΣ` ends in σ, the
     * lower-case word in ς), audit J3. Byte for byte, as before
     * (pl_store__snippet_restore). The index is rebuilt. */
    "CREATE OR REPLACE FUNCTION parley_body_tsv(b bytea) RETURNS tsvector"
    "  LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $f$ BEGIN"
    "  IF position('\\x00'::bytea IN b) <> 0 THEN RETURN NULL; END IF;"
    "  RETURN to_tsvector('simple'::regconfig, translate(convert_from(b, 'UTF8'), " SEARCH_BLANKS "));"
    "  END $f$;"
    "REINDEX INDEX events_fts;",
};
#define SCHEMA_VERSION ((int)(sizeof migrations / sizeof migrations[0]))

/* ---- statements ---------------------------------------------------------- */

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
#define PURGE_WS " LEFT JOIN workspaces w ON c.kind = 3 AND w.id = c.workspace"
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
                      " FROM members m LEFT JOIN events e ON e.conv_id = $1::bigint AND e.seq = $3::bigint"
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
    /* $1 device, $2 user, $3 now: a live login of the user?, the device's
     * identity key (row locked), its one-time prekeys */
    [W_KEYS_STATE]  = "SELECT EXISTS (SELECT 1 FROM logins WHERE id = $1::bigint AND user_id = $2::bigint"
                      "   AND revoked = 0 AND expires > $3::bigint),"
                      " (SELECT identity FROM e2ee_devices WHERE device = $1::bigint FOR UPDATE),"
                      " (SELECT count(*) FROM e2ee_otks WHERE device = $1::bigint"
                      "   AND NOT key_id = ANY($4::bigint[]))",      /* held, besides ids re-uploaded */
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
    /* $1 peer, $2 now: each live device with one one-time prekey taken out;
     * SKIP LOCKED passes over a key another transaction is taking, so no
     * two claims (any nodes) get the same one. The count is of the
     * statement's snapshot, less the key taken. */
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
    /* $1 user, $2 peer, $3 now: whether peer is a live user, and how many
     * rows this inserted (0: it was blocked already); the unblock's $2
     * whatever, how many it deleted */
    [W_BLOCK_ADD]   = "WITH p AS (SELECT id FROM users WHERE id = $2::bigint AND deleted = 0),"
                      " i AS (INSERT INTO blocks(user_id, blocked_id, created) SELECT $1::bigint, p.id, $3::bigint"
                      "   FROM p ON CONFLICT DO NOTHING RETURNING 1)"
                      " SELECT (SELECT count(*) FROM p), (SELECT count(*) FROM i)",
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
     * workspace */
    [W_LIFE_USER_LOCK] = "SELECT deleted FROM users WHERE id = $1::bigint FOR UPDATE",
    [W_LIFE_USER_BUSY] = "SELECT EXISTS (SELECT 1 FROM members m CROSS JOIN LATERAL (SELECT c.kind FROM conversations c"
                         "   WHERE c.id = m.conv_id OFFSET 0) c WHERE m.user_id = $1::bigint AND c.kind IN (2, 3))"
                         " OR EXISTS (SELECT 1 FROM workspace_members WHERE user_id = $1::bigint)",
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
                       " AND (m.mention OR $3::bigint = 0 OR (SELECT c.member_count FROM conversations c"
                       "   WHERE c.id = o.conv_id) <= $3::bigint)"
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

/* ---- the writer connection ------------------------------------------------- */

/* Connects and prepares the writer; then checks the lease (it may have been
 * taken while the connection was down). Writer thread. */
int pg_w_connect(pg_store *s) {
    char err[320];
    if (pgc_open(&s->w, s->url, 'w', err, sizeof err) != 0 || pgc_prepare(&s->w, err, sizeof err) != 0) {
        pgc_close(&s->w);
        if (s->w_backoff_ms <= PG_BACKOFF_MIN_MS)   /* once per outage, not per attempt */
            pl_log(PL_LOG_ERROR, 0, "store: writer cannot reconnect", "\"err\":\"%s\"", err);
        s->w_seen_gen = __atomic_load_n(&s->connect_gen, __ATOMIC_ACQUIRE);
        s->w_next_try = pl_mono_ms() + s->w_backoff_ms;
        s->w_backoff_ms = s->w_backoff_ms * 2 > PG_BACKOFF_MAX_MS ? PG_BACKOFF_MAX_MS : s->w_backoff_ms * 2;
        return -1;
    }
    s->w_backoff_ms = PG_BACKOFF_MIN_MS;
    __atomic_add_fetch(&s->connect_gen, 1, __ATOMIC_RELEASE);
    __atomic_store_n(&s->w_up, 1, __ATOMIC_RELEASE);
    pl_log(PL_LOG_INFO, 0, "store: writer connected", "\"node\":%d", s->base.node_id);
    int held = pg_lease_renew(s);
    if (held < 0) {
        pg_w_drop(s, "lease renewal failed");
        return -1;
    }
    return 0;
}

void pg_w_drop(pg_store *s, const char *why) {
    if (s->w.pq)
        pl_log(PL_LOG_WARN, 0, "store: writer connection closed", "\"why\":\"%s\",\"err\":\"%s\"", why,
               s->w.errmsg);
    pgc_close(&s->w);
    __atomic_store_n(&s->w_up, 0, __ATOMIC_RELEASE);
    s->w_seen_gen = __atomic_load_n(&s->connect_gen, __ATOMIC_ACQUIRE);
    s->w_next_try = pl_mono_ms();             /* the first attempt at once */
}

/* ---- the node id lease (invariant 6) ---------------------------------------- */

static void lease_set_lost(pg_store *s, int lost) {
    s->lease_lost = lost;
    __atomic_store_n(&s->lease_ok, !lost, __ATOMIC_RELEASE);
}

/* Renews this node's lease (inside the open transaction, if any). Returns 1
 * held, 0 lost (logged, state set), or W_LOST / W_FATAL / W_RETRY. */
int pg_lease_renew(pg_store *s) {
    pg_params p = {0};
    pg_param_i64(&p, s->base.node_id);
    pg_param_text(&p, s->owner);
    pg_param_i64(&p, PG_LEASE_TTL_S);
    int64_t at = pl_mono_ms();
    int slot = pgc_send(&s->w, W_LEASE_RENEW, &p, 1);
    int rc = slot < 0 ? PG_GONE : pgc_sync(&s->w);
    if (rc != PG_OK) return rc == PG_GONE ? W_LOST : pgc_retryable(&s->w) ? W_RETRY : W_FATAL;
    if (PQntuples(s->w.res[slot]) == 1) {
        s->lease_at = at;
        if (s->lease_lost) {
            pl_log(PL_LOG_WARN, 0, "store: node id lease held again", "\"node\":%d", s->base.node_id);
            lease_set_lost(s, 0);
        }
        return 1;
    }
    if (!s->lease_lost)
        pl_log(PL_LOG_ERROR, 0,
               "store: NODE ID LEASE LOST: another node may use this id; refusing writes until it is back",
               "\"node\":%d", s->base.node_id);
    lease_set_lost(s, 1);
    s->lease_next_try = pl_mono_ms() + PG_BACKOFF_MIN_MS;
    return 0;
}

/* Takes this node's id back if it is free (not in a transaction). */
int pg_lease_reacquire(pg_store *s) {
    int64_t t = pl_mono_ms();
    if (t < s->lease_next_try) return -1;
    s->lease_next_try = t + PG_BACKOFF_MAX_MS;
    pg_params p = {0};
    pg_param_i64(&p, s->base.node_id);
    pg_param_text(&p, s->owner);
    pg_param_i64(&p, PG_LEASE_TTL_S);
    int slot = pgc_send(&s->w, W_LEASE_TAKE, &p, 1);
    int rc = slot < 0 ? PG_GONE : pgc_sync(&s->w);
    if (rc == PG_GONE) {
        pg_w_drop(s, "lease re-acquire");
        return -1;
    }
    if (rc != PG_OK || PQntuples(s->w.res[slot]) != 1) {
        pl_log(PL_LOG_ERROR, 0, "store: node id still taken by another node; refusing writes",
               "\"node\":%d", s->base.node_id);
        return -1;
    }
    s->lease_at = t;
    lease_set_lost(s, 0);
    pl_log(PL_LOG_WARN, 0, "store: node id lease re-acquired", "\"node\":%d", s->base.node_id);
    return 0;
}

/* At open: leases o->node_id, or the lowest free id when it is -1. */
static int lease_acquire(pg_store *s, int want, char *err, size_t errlen) {
    for (int attempt = 0; attempt < 20; attempt++) {
        pg_params p = {0};
        if (want >= 0) pg_param_i64(&p, want);
        pg_param_text(&p, s->owner);
        pg_param_i64(&p, PG_LEASE_TTL_S);
        int slot = pgc_send(&s->w, want >= 0 ? W_LEASE_TAKE : W_LEASE_ANY, &p, 1);
        if (slot < 0 || pgc_sync(&s->w) != PG_OK) {
            snprintf(err, errlen, "cannot lease a node id: %s", s->w.errmsg);
            return -1;
        }
        PGresult *r = s->w.res[slot];
        if (PQntuples(r) == 1) {
            s->base.node_id = (int)pg_i64(r, 0, 0);
            s->lease_at = pl_mono_ms();
            lease_set_lost(s, 0);
            return 0;
        }
        if (want < 0) continue;                  /* raced another node: again */
        pg_params q = {0};
        pg_param_i64(&q, want);
        slot = pgc_send(&s->w, W_LEASE_INFO, &q, 1);
        char who[96] = "?";
        long long left = 0;
        if (slot >= 0 && pgc_sync(&s->w) == PG_OK && PQntuples(s->w.res[slot]) == 1) {
            pg_clean_msg(who, sizeof who, PQgetvalue(s->w.res[slot], 0, 0));
            left = (long long)pg_i64(s->w.res[slot], 0, 1);
        }
        snprintf(err, errlen,
                 "node id %d is in use by another live parleyd (lease owner %s, expires in %lld s)", want,
                 who, left);
        return -1;
    }
    snprintf(err, errlen, "no free node id (0-1023) to lease");
    return -1;
}

static void lease_release(pg_store *s) {
    if (!s->w.pq || s->lease_lost) return;
    pg_params p = {0};
    pg_param_i64(&p, s->base.node_id);
    pg_param_text(&p, s->owner);
    if (pgc_send(&s->w, W_LEASE_RELEASE, &p, 0) >= 0 && pgc_sync(&s->w) == PG_OK)
        pl_log(PL_LOG_INFO, 0, "store: node id lease released", "\"node\":%d", s->base.node_id);
}

/* ---- migrations ------------------------------------------------------------- */

static int exec_ok(PGconn *pq, const char *sql, ExecStatusType want) {
    PGresult *r = PQexec(pq, sql);
    int ok = PQresultStatus(r) == want;
    PQclear(r);
    return ok;
}

/* Brings the schema to SCHEMA_VERSION, one transaction per step, each
 * serialized across starting nodes by a transaction-scoped advisory lock
 * (a node that waited finds the work done and does nothing). */
static int migrate(PGconn *pq, char *err, size_t errlen) {
    char m[200];
    for (;;) {
        int v = -1;
        if (!exec_ok(pq, "BEGIN", PGRES_COMMAND_OK) ||
            !exec_ok(pq, "SELECT pg_advisory_xact_lock(" MIGRATION_LOCK ")", PGRES_TUPLES_OK) ||
            !exec_ok(pq, "CREATE TABLE IF NOT EXISTS parley_schema(version INT NOT NULL)", PGRES_COMMAND_OK))
            goto fail;
        PGresult *r = PQexec(pq, "SELECT version FROM parley_schema");
        if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) >= 1) v = atoi(PQgetvalue(r, 0, 0));
        else if (PQresultStatus(r) == PGRES_TUPLES_OK) v = 0;
        PQclear(r);
        if (v < 0) goto fail;
        if (v == 0 && !exec_ok(pq, "INSERT INTO parley_schema(version) SELECT 0 WHERE NOT EXISTS"
                                   " (SELECT 1 FROM parley_schema)", PGRES_COMMAND_OK))
            goto fail;
        if (v > SCHEMA_VERSION) {
            exec_ok(pq, "ROLLBACK", PGRES_COMMAND_OK);
            snprintf(err, errlen, "the database was written by a newer Parley (schema %d)", v);
            return -1;
        }
        if (v == SCHEMA_VERSION) {
            if (exec_ok(pq, "COMMIT", PGRES_COMMAND_OK)) return 0;
            goto fail;
        }
        if (!exec_ok(pq, migrations[v], PGRES_COMMAND_OK)) {
            pg_clean_msg(m, sizeof m, PQerrorMessage(pq));
            exec_ok(pq, "ROLLBACK", PGRES_COMMAND_OK);
            snprintf(err, errlen, "schema migration %d -> %d failed: %s", v, v + 1, m);
            return -1;
        }
        if (!exec_ok(pq, "UPDATE parley_schema SET version = version + 1", PGRES_COMMAND_OK) ||
            !exec_ok(pq, "COMMIT", PGRES_COMMAND_OK))
            goto fail;
        pl_log(PL_LOG_INFO, 0, "store: schema migrated", "\"to\":%d", v + 1);
    }
fail:
    pg_clean_msg(m, sizeof m, PQerrorMessage(pq));
    exec_ok(pq, "ROLLBACK", PGRES_COMMAND_OK);
    snprintf(err, errlen, "schema migration failed: %s", m);
    return -1;
}

/* ---- the shared secret ------------------------------------------------------ */

/* Every node gets the same 32 bytes: the first one to ask inserts random
 * ones, the rest find them. Blocking, on a connection of its own (the
 * pipeline's belong to their threads); called before the loop runs. */
static int pg_shared_secret(pl_store *base, const char *name, uint8_t out[32]) {
    pg_store *s = (pg_store *)base;
    if (!name || !pg_utf8_ok(name)) return PL_STORE_EINVAL;
    pg_conn c = {0};
    char err[320];
    if (pgc_open(&c, s->url, 'w', err, sizeof err) != 0) {
        pl_log(PL_LOG_ERROR, 0, "store: shared secret: no connection", "\"err\":\"%s\"", err);
        return PL_STORE_EUNAVAIL;
    }
    uint8_t fresh[32];
    randombytes_buf(fresh, sizeof fresh);
    const char *v[2] = {name, (const char *)fresh};
    const int len[2] = {0, (int)sizeof fresh}, fmt[2] = {0, 1};
    int rc = PL_STORE_EUNAVAIL;
    PGresult *r = PQexecParams(c.pq, "INSERT INTO secrets(name, value) VALUES($1::text, $2::bytea)"
                               " ON CONFLICT (name) DO NOTHING", 2, NULL, v, len, fmt, 0);
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    PQclear(r);
    if (ok) {
        r = PQexecParams(c.pq, "SELECT value FROM secrets WHERE name = $1::text", 1, NULL, v, len, fmt, 1);
        if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1 && PQgetlength(r, 0, 0) == 32) {
            memcpy(out, PQgetvalue(r, 0, 0), 32);
            rc = PL_STORE_OK;
        }
        PQclear(r);
    }
    if (rc != PL_STORE_OK) {
        char m[200];
        pg_clean_msg(m, sizeof m, PQerrorMessage(c.pq));
        pl_log(PL_LOG_ERROR, 0, "store: shared secret failed", "\"err\":\"%s\"", m);
    }
    sodium_memzero(fresh, sizeof fresh);
    pgc_close(&c);
    return rc;
}

/* ---- readiness -------------------------------------------------------------- */

static void probe_done(pl_job *j) {
    pg_store *s = j->data;
    __atomic_sub_fetch(&s->probes, 1, __ATOMIC_ACQ_REL);
    free(j);
}

/* Invariant 9: one probe read per reader that is down, none while earlier
 * probes are in flight. Writer thread (idle tick). */
void pg_probe_readers(pg_store *s) {
    pl_pipeline *p = __atomic_load_n(&s->pipe, __ATOMIC_ACQUIRE);
    if (!p) return;
    int up = __atomic_load_n(&s->r_up, __ATOMIC_ACQUIRE);
    if (up >= s->nreaders || __atomic_load_n(&s->probes, __ATOMIC_ACQUIRE) > 0) return;
    for (int i = up; i < s->nreaders; i++) {
        pl_job *j = pl_calloc(1, sizeof *j);
        j->op = (pl_job_op)PG_READ_PROBE;
        j->done = probe_done;
        j->data = s;
        __atomic_add_fetch(&s->probes, 1, __ATOMIC_ACQ_REL);
        pl_pipeline_submit(p, j);
    }
}

static int pg_healthy(pl_store *base) {
    pg_store *s = (pg_store *)base;
    return __atomic_load_n(&s->w_up, __ATOMIC_ACQUIRE) && __atomic_load_n(&s->r_up, __ATOMIC_ACQUIRE) > 0 &&
           __atomic_load_n(&s->lease_ok, __ATOMIC_ACQUIRE);
}

/* ---- open, close ------------------------------------------------------------ */

static void pg_submit(pl_store *base, pl_job *j) { pl_pipeline_submit(((pg_store *)base)->pipe, j); }
static void pg_drain(pl_store *base) { pl_pipeline_drain(((pg_store *)base)->pipe); }

/* Search folds case and tells letters from punctuation by the database's
 * LC_CTYPE ('simple' text search: lower() and the parser's character
 * classes). Under C or POSIX only ASCII letters fold, so `привет` would not
 * find `Привет` and the apostrophe phones type (U+2019) would join words
 * (audit U): said once at open, with what to do. */
static void check_ctype(PGconn *c) {
    PGresult *r = PQexec(c, "SELECT current_setting('lc_ctype')");
    const char *ct = r && PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1 ? PQgetvalue(r, 0, 0) : NULL;
    if (ct && (!strcmp(ct, "C") || !strcmp(ct, "POSIX")))
        pl_log(PL_LOG_WARN, 0, "store: the database's LC_CTYPE is C: search folds the case of ASCII letters only;"
               " create the database with LC_CTYPE C.UTF-8 (README, Cluster mode)", "\"lc_ctype\":\"%s\"", ct);
    PQclear(r);
}

/* Frees everything but the pipeline (not started, or stopped); releases the
 * lease if this store holds it. */
static void pg_free(pg_store *s) {
    if (__atomic_load_n(&s->lease_ok, __ATOMIC_ACQUIRE)) lease_release(s);
    pgc_close(&s->w);
    for (int i = 0; i < s->nreaders; i++) pgc_close(&s->readers[i].c);
    for (size_t i = 0; i < sizeof s->arr / sizeof s->arr[0]; i++) pg_arr_free(&s->arr[i]);
    free(s->readers);
    pl_conv_map_free(&s->convs);
    pl_own_free(&s->own);
    free(s->lockids);
    free(s->seen);
    free(s->url);
    free(s);
}

static void pg_close(pl_store *base) {
    pg_store *s = (pg_store *)base;
    pl_pipeline *p = s->pipe;           /* s->pipe stays readable until the */
    pl_pipeline_stop(&p);               /* writer thread is joined          */
    pg_free(s);
}

static const pl_store_ops pg_ops = {
    .name = "postgres",
    .submit = pg_submit,
    .drain = pg_drain,
    .healthy = pg_healthy,
    .shared_secret = pg_shared_secret,
    .close = pg_close,
};

void pl_store_pg__hold(pl_store *base, int on) {
    if (!base || base->ops != &pg_ops) return;
    __atomic_store_n(&((pg_store *)base)->hold, on, __ATOMIC_SEQ_CST);
}

int pl_store_pg__held(pl_store *base) {
    if (!base || base->ops != &pg_ops) return 0;
    return __atomic_load_n(&((pg_store *)base)->hold, __ATOMIC_SEQ_CST) == 2;
}

int pl_store_pg_open(const pl_store_opts *o, pl_store **out, char *err, size_t errlen) {
    *out = NULL;
    err[0] = '\0';
    if (sodium_init() < 0) {
        snprintf(err, errlen, "cannot initialise libsodium");
        return PL_STORE_EUNAVAIL;
    }
    if (o->node_id < -1 || o->node_id > 1023) {
        snprintf(err, errlen, "node id %d out of range (0-1023, or -1 to lease one)", o->node_id);
        return PL_STORE_EUNAVAIL;
    }
    pg_store *s = pl_calloc(1, sizeof *s);
    s->base.ops = &pg_ops;
    s->base.node_id = o->node_id;
    s->url = pl_strdup(o->url);
    s->outbox = o->outbox != 0;
    s->push = o->push != 0;
    s->large_group = o->large_group;
    s->edit_window_ms = o->edit_window_ms;
    s->ws_members = o->workspace_members;
    s->ws_channels = o->workspace_channels;
    s->retention = o->retention;
    s->nreaders = o->readers > 0 ? o->readers : PG_READERS;
    s->readers = pl_calloc((size_t)s->nreaders, sizeof *s->readers);
    s->w_backoff_ms = PG_BACKOFF_MIN_MS;
    char host[64] = "?";
    gethostname(host, sizeof host - 1);
    uint8_t rnd[8];
    randombytes_buf(rnd, sizeof rnd);
    char hex[17];
    sodium_bin2hex(hex, sizeof hex, rnd, sizeof rnd);
    snprintf(s->owner, sizeof s->owner, "%.40s/%ld/%s", host, (long)getpid(), hex);

    if (pgc_open(&s->w, s->url, 'w', err, errlen) != 0 || migrate(s->w.pq, err, errlen) != 0 ||
        pgc_prepare(&s->w, err, errlen) != 0 || lease_acquire(s, o->node_id, err, errlen) != 0)
        goto fail;
    check_ctype(s->w.pq);
    pl_idgen_init(&s->ids, s->base.node_id);
    s->w_up = 1;
    s->connect_gen = 1;
    for (int i = 0; i < s->nreaders; i++) {
        pg_reader *r = &s->readers[i];
        r->s = s;
        r->backoff_ms = PG_BACKOFF_MIN_MS;
        if (pgc_open(&r->c, s->url, 'r', err, errlen) != 0 || pgc_prepare(&r->c, err, errlen) != 0)
            goto fail;
        r->up = 1;
        s->r_up++;
    }
    void **rctx = pl_malloc((size_t)s->nreaders * sizeof *rctx);
    for (int i = 0; i < s->nreaders; i++) rctx[i] = &s->readers[i];
    pl_pipeline_cfg pc = {
        .batch_max = PG_BATCH_MAX,
        .nreaders = s->nreaders,
        .wctx = s,
        .rctx = rctx,
        .run_batch = pg_run_batch,
        .idle = pg_idle,
        .idle_ms = PG_IDLE_MS,
        .run_read = pg_run_read,
        .notify = o->notify,
        .notify_arg = o->notify_arg,
        .committed = o->committed,
        .committed_arg = o->committed_arg,
    };
    pl_pipeline *p = pl_pipeline_start(&pc);
    free(rctx);
    if (!p) {
        snprintf(err, errlen, "cannot start the store threads");
        goto fail;
    }
    __atomic_store_n(&s->pipe, p, __ATOMIC_RELEASE);
    pl_log(PL_LOG_INFO, 0, "store: PostgreSQL store open",
           "\"node\":%d,\"readers\":%d,\"outbox\":%d,\"push\":%d", s->base.node_id, s->nreaders,
           s->outbox, s->push);
    *out = &s->base;
    return PL_STORE_OK;
fail:
    pg_free(s);
    return PL_STORE_EUNAVAIL;
}
