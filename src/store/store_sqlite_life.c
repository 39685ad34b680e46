/* store_sqlite_life.c — the data lifecycle in the SQLite backend (store.h
 * invariant 13): retention, legal hold, the purge, account deletion.
 *
 * Owns: the SQL of the retention and hold columns (conversations,
 * workspaces), the purge's bookkeeping (conversations.purged_seq and
 * purge_next, the erasures table: migration 14 -> 15 in store_sqlite_schema.c says
 * why; erasure_held: the conversations a deleted user's pass found held,
 * erased once released), and account deletion. The erasing itself is a delete's
 * (sq_w_erase), without the DELETE event. Rare jobs: statements are
 * prepared on use. The purge runs on the writer thread like every write,
 * so a run is bounded: j->limit messages, one conversations scan, and at
 * most ERASE_CONVS conversations probed for a deleted user's messages.
 * Does not own: when the purge runs (chat/life.c), who may ask (the API).
 */
#include "sqlite_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/alloc.h"

#define PURGE_LIMIT_MAX 10000
#define ERASE_CONVS     256     /* conversations probed per run for one deleted user */

static int l_fatal(sq_store *s, int src) { return sq_w_fatal(s, src, "lifecycle statement"); }

/* A user's live MESSAGEs in a conversation: through events_idem (conv_id,
 * sender, client_msg_id), and events_no_cmid for those without a
 * client_msg_id (migration 17 -> 18). INDEXED BY: without statistics the
 * planner prefers the primary key's conv_id range, a scan of the whole
 * conversation. */
static const char SENDER_MESSAGES[] =
    "SELECT seq FROM events INDEXED BY events_idem WHERE conv_id = ?1 AND sender = ?2"
    " AND client_msg_id IS NOT NULL AND kind = 2 AND deleted_ts = 0"
    " UNION ALL SELECT seq FROM events INDEXED BY events_no_cmid WHERE conv_id = ?1 AND sender = ?2"
    " AND client_msg_id IS NULL AND kind = 2 AND deleted_ts = 0 LIMIT ?3";

/* Erases up to *left of user's live MESSAGEs in conv (ms: SENDER_MESSAGES,
 * seqs: room for *left); *n: how many. */
static int erase_sender(sq_store *s, sqlite3_stmt *ms, int64_t *seqs, int64_t conv, int64_t user, int64_t now,
                        int *left, int *erased, int *n) {
    int step, rc = PL_STORE_OK;
    *n = 0;
    sqlite3_bind_int64(ms, 1, conv);
    sqlite3_bind_int64(ms, 2, user);
    sqlite3_bind_int64(ms, 3, *left);
    while ((step = sqlite3_step(ms)) == SQLITE_ROW) seqs[(*n)++] = sqlite3_column_int64(ms, 0);
    sqlite3_reset(ms);
    if (step != SQLITE_DONE) return l_fatal(s, step);
    for (int k = 0; k < *n && rc == PL_STORE_OK; k++) rc = sq_w_erase(s, conv, seqs[k], now);
    *left -= *n;
    *erased += *n;
    return rc;
}

/* ---- retention and hold ------------------------------------------------------ */

static int ws_role(sq_store *s, int64_t ws, int64_t user, int *role) {
    int src = 0;
    int64_t v = 0;
    int rc = sq_run(s->wdb, &src, &v, "SELECT role FROM workspace_members WHERE workspace_id = ?1 AND user_id = ?2",
                    "ii", ws, user);
    if (rc < 0) return l_fatal(s, src);
    *role = rc ? (int)v : PL_ROLE_NONE;
    return PL_STORE_OK;
}

static int retention_set(sq_store *s, pl_job *j, int64_t now) {
    if (j->value < 0 || j->value > PL_RETENTION_MAX) {
        j->why = "bad retention";
        return PL_STORE_EINVAL;
    }
    int src = 0, rc, admin = (j->flags & PL_JOB_ADMIN) != 0;
    int64_t kind = 0;
    if (j->conv) {
        rc = sq_run(s->wdb, &src, &kind, "SELECT kind FROM conversations WHERE id = ?1", "i", j->conv);
        if (rc <= 0) return rc < 0 ? l_fatal(s, src) : PL_STORE_ENOTFOUND;
        if (!admin) {
            int role = sq_w_member_role(s, j->conv, j->user);
            if (role < 0) return role;
            if (role == PL_ROLE_NONE) return PL_STORE_ENOTFOUND;
            if (kind != PL_CONV_DIRECT && role != PL_ROLE_ADMIN) return PL_STORE_EFORBID;
            int err = PL_STORE_OK;
            pl_conv_state *e = sq_w_conv_state(s, j->conv, &err);
            if (!e) return err;
            if (e->blocked) {                          /* invariant 14 */
                j->why = "blocked";
                return PL_STORE_EFORBID;
            }
        }
        if (sq_run(s->wdb, &src, NULL, "UPDATE conversations SET retention = ?1 WHERE id = ?2", "ii", j->value,
                   j->conv) < 0)
            return l_fatal(s, src);
        j->out_id = j->conv;
        char data[48];
        snprintf(data, sizeof data, "{\"seconds\":%lld}", (long long)j->value);
        rc = sq_w_append(s, j, now, j->conv, PL_EV_RETENTION, j->user, 0, pl_strdup(data));
        if (rc == PL_STORE_OK) j->created = 1;
        return rc;
    }
    rc = sq_run(s->wdb, &src, NULL, "SELECT 1 FROM workspaces WHERE id = ?1", "i", j->id);
    if (rc <= 0) return rc < 0 ? l_fatal(s, src) : PL_STORE_ENOTFOUND;
    if (!admin) {
        int role = PL_ROLE_NONE;
        if ((rc = ws_role(s, j->id, j->user, &role)) != PL_STORE_OK) return rc;
        if (role == PL_ROLE_NONE) return PL_STORE_ENOTFOUND;
        if (role != PL_ROLE_ADMIN) return PL_STORE_EFORBID;
    }
    if (sq_run(s->wdb, &src, NULL, "UPDATE workspaces SET retention = ?1 WHERE id = ?2", "ii", j->value, j->id) < 0)
        return l_fatal(s, src);
    j->out_id = j->id;
    return PL_STORE_OK;
}

static int hold_set(sq_store *s, pl_job *j) {
    int src = 0;
    int64_t on = (j->flags & PL_JOB_REMOVE) ? 0 : 1;
    int rc = j->conv ? sq_run(s->wdb, &src, NULL, "UPDATE conversations SET hold = ?1 WHERE id = ?2 RETURNING id",
                              "ii", on, j->conv)
                     : sq_run(s->wdb, &src, NULL, "UPDATE workspaces SET hold = ?1 WHERE id = ?2 RETURNING id",
                              "ii", on, j->id);
    if (rc <= 0) return rc < 0 ? l_fatal(s, src) : PL_STORE_ENOTFOUND;
    j->out_id = j->conv ? j->conv : j->id;
    return PL_STORE_OK;
}

/* ---- the purge ----------------------------------------------------------------- */

typedef struct purge_conv {
    int64_t conv, purged_seq, retention;
} purge_conv;

/* Conversations with an effective retention, not held, whose next event
 * (purge_next) may be past it. */
static const char PURGE_CANDIDATES[] =
    "SELECT id, purged_seq, r FROM (SELECT c.id, c.purged_seq, c.purge_next,"
    "   CASE WHEN c.retention > 0 THEN c.retention"
    "        WHEN coalesce(w.retention, 0) > 0 THEN w.retention ELSE ?1 END AS r"
    "   FROM conversations c LEFT JOIN workspaces w ON w.id = c.workspace"
    "   WHERE c.hold = 0 AND coalesce(w.hold, 0) = 0"
    "     AND (?1 > 0 OR c.retention > 0 OR coalesce(w.retention, 0) > 0))"
    " WHERE r > 0 AND purge_next < ?2 - r * 1000 ORDER BY id";

static int purge_candidates(sq_store *s, int64_t clock, purge_conv **out, size_t *n) {
    int src = 0;
    sqlite3_stmt *st = sq_prep(s->wdb, PURGE_CANDIDATES, &src);
    if (!st) return l_fatal(s, src);
    sqlite3_bind_int64(st, 1, s->retention);
    sqlite3_bind_int64(st, 2, clock);
    size_t cap = 0;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (*n == cap) {
            cap = cap ? cap * 2 : 16;
            *out = pl_realloc(*out, cap * sizeof **out);
        }
        (*out)[(*n)++] = (purge_conv){sqlite3_column_int64(st, 0), sqlite3_column_int64(st, 1),
                                      sqlite3_column_int64(st, 2)};
    }
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? PL_STORE_OK : l_fatal(s, rc);
}

/* Erases conv's MESSAGEs older than its retention from purged_seq on, at
 * most *left of them, and moves its place. */
static int purge_conv_run(sq_store *s, const purge_conv *c, int64_t clock, int64_t now, int *left, int *erased) {
    int64_t cutoff = clock - c->retention * 1000;
    int src = 0;
    sqlite3_stmt *st = sq_prep(s->wdb, "SELECT seq, ts, kind, deleted_ts FROM events WHERE conv_id = ?1 AND seq > ?2"
                                       " ORDER BY seq LIMIT ?3", &src);
    if (!st) return l_fatal(s, src);
    int64_t *seqs = pl_malloc((size_t)*left * sizeof *seqs);
    int nseqs = 0, rows = 0, rc;
    int64_t place = c->purged_seq, next = 0;
    sqlite3_bind_int64(st, 1, c->conv);
    sqlite3_bind_int64(st, 2, c->purged_seq);
    sqlite3_bind_int64(st, 3, PURGE_LIMIT_MAX);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        rows++;
        int64_t seq = sqlite3_column_int64(st, 0), ts = sqlite3_column_int64(st, 1);
        if (ts >= cutoff) {                    /* the log is in time order from here */
            next = ts;
            break;
        }
        if (sqlite3_column_int(st, 2) == PL_EV_MESSAGE && sqlite3_column_int64(st, 3) == 0) {
            if (nseqs == *left) {              /* this one is the next run's */
                next = ts;
                break;
            }
            seqs[nseqs++] = seq;
        }
        place = seq;
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        free(seqs);
        return l_fatal(s, rc);
    }
    /* the end of the log: whatever comes next is not older than now, or
     * (a full scan window) the rest is looked at next time */
    if (rc == SQLITE_DONE) next = rows == PURGE_LIMIT_MAX ? 0 : now;
    for (int i = 0; i < nseqs; i++) {
        if ((rc = sq_w_erase(s, c->conv, seqs[i], now)) != PL_STORE_OK) {
            free(seqs);
            return rc;
        }
    }
    free(seqs);
    *left -= nseqs;
    *erased += nseqs;
    if (sq_run(s->wdb, &src, NULL, "UPDATE conversations SET purged_seq = ?1, purge_next = ?2 WHERE id = ?3", "iii",
               place, next, c->conv) < 0)
        return l_fatal(s, src);
    return PL_STORE_OK;
}

/* A deleted user's messages, ERASE_CONVS conversations at a time. */
static int purge_deleted(sq_store *s, int64_t now, int *left, int *erased) {
    int src = 0;
    sqlite3_stmt *es = sq_prep(s->wdb, "SELECT user_id, next_conv FROM erasures ORDER BY user_id LIMIT 1", &src);
    if (!es) return l_fatal(s, src);
    int rc = sqlite3_step(es);
    int64_t user = rc == SQLITE_ROW ? sqlite3_column_int64(es, 0) : 0;
    int64_t from = rc == SQLITE_ROW ? sqlite3_column_int64(es, 1) : 0;
    sqlite3_finalize(es);
    if (rc == SQLITE_DONE) return PL_STORE_OK;
    if (rc != SQLITE_ROW) return l_fatal(s, rc);
    /* held conversations are passed over (invariant 13) */
    sqlite3_stmt *cs = sq_prep(s->wdb, "SELECT c.id, c.hold OR coalesce(w.hold, 0) FROM conversations c"
                                       " LEFT JOIN workspaces w ON w.id = c.workspace"
                                       " WHERE c.id > ?1 ORDER BY c.id LIMIT ?2", &src);
    if (!cs) return l_fatal(s, src);
    sqlite3_bind_int64(cs, 1, from);
    sqlite3_bind_int64(cs, 2, ERASE_CONVS);
    int64_t convs[ERASE_CONVS], held[ERASE_CONVS], last = from;
    int nconvs = 0, nheld = 0, nrows = 0;
    while ((rc = sqlite3_step(cs)) == SQLITE_ROW) {
        nrows++;
        last = sqlite3_column_int64(cs, 0);
        if (!sqlite3_column_int(cs, 1)) convs[nconvs++] = last;
        else held[nheld++] = last;
    }
    sqlite3_finalize(cs);
    if (rc != SQLITE_DONE) return l_fatal(s, rc);
    for (int i = 0; i < nheld; i++)            /* again once released (purge_released) */
        if (sq_run(s->wdb, &src, NULL, "INSERT OR IGNORE INTO erasure_held(user_id, conv_id) VALUES(?1, ?2)", "ii",
                   user, held[i]) < 0)
            return l_fatal(s, src);
    if (nrows == 0) {                          /* every conversation looked at */
        if (sq_run(s->wdb, &src, NULL, "DELETE FROM erasures WHERE user_id = ?1", "i", user) < 0)
            return l_fatal(s, src);
        return PL_STORE_OK;
    }
    sqlite3_stmt *ms = sq_prep(s->wdb, SENDER_MESSAGES, &src);
    if (!ms) return l_fatal(s, src);
    int64_t *seqs = pl_malloc((size_t)*left * sizeof *seqs);
    rc = PL_STORE_OK;
    for (int i = 0; i < nconvs && rc == PL_STORE_OK; i++) {
        int n = 0;
        rc = erase_sender(s, ms, seqs, convs[i], user, now, left, erased, &n);
        if (rc == PL_STORE_OK && *left == 0) { /* this conversation again next time */
            last = convs[i] - 1;
            break;
        }
    }
    sqlite3_finalize(ms);
    free(seqs);
    if (rc != PL_STORE_OK) return rc;
    if (sq_run(s->wdb, &src, NULL, "UPDATE erasures SET next_conv = ?1 WHERE user_id = ?2", "ii", last, user) < 0)
        return l_fatal(s, src);
    return PL_STORE_OK;
}

/* A deleted user's messages in conversations its pass found held and that
 * are held no more. */
static int purge_released(sq_store *s, int64_t now, int *left, int *erased) {
    int src = 0, rc;
    sqlite3_stmt *st = sq_prep(s->wdb, "SELECT h.user_id, h.conv_id FROM erasure_held h"
                                       " JOIN conversations c ON c.id = h.conv_id"
                                       " LEFT JOIN workspaces w ON w.id = c.workspace"
                                       " WHERE c.hold = 0 AND coalesce(w.hold, 0) = 0 LIMIT 64", &src);
    if (!st) return l_fatal(s, src);
    int64_t users[64], convs[64];
    int n = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        users[n] = sqlite3_column_int64(st, 0);
        convs[n++] = sqlite3_column_int64(st, 1);
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) return l_fatal(s, rc);
    sqlite3_stmt *ms = sq_prep(s->wdb, SENDER_MESSAGES, &src);
    if (!ms) return l_fatal(s, src);
    int64_t *seqs = pl_malloc((size_t)*left * sizeof *seqs);
    rc = PL_STORE_OK;
    for (int i = 0; i < n && *left > 0 && rc == PL_STORE_OK; i++) {
        int k = 0, asked = *left;
        rc = erase_sender(s, ms, seqs, convs[i], users[i], now, left, erased, &k);
        if (rc == PL_STORE_OK && k < asked &&             /* all of them: done with the pair */
            sq_run(s->wdb, &src, NULL, "DELETE FROM erasure_held WHERE user_id = ?1 AND conv_id = ?2", "ii",
                   users[i], convs[i]) < 0)
            rc = l_fatal(s, src);
    }
    sqlite3_finalize(ms);
    free(seqs);
    return rc;
}

static int purge(sq_store *s, pl_job *j, int64_t now) {
    int limit = j->limit < 1 ? 1 : j->limit > PURGE_LIMIT_MAX ? PURGE_LIMIT_MAX : j->limit;
    int64_t clock = j->expires > 0 ? j->expires : now;
    purge_conv *cands = NULL;
    size_t ncands = 0;
    int left = limit, erased = 0;
    int rc = purge_candidates(s, clock, &cands, &ncands);
    for (size_t i = 0; rc == PL_STORE_OK && i < ncands && left > 0; i++)
        rc = purge_conv_run(s, &cands[i], clock, now, &left, &erased);
    free(cands);
    if (rc == PL_STORE_OK && left > 0) rc = purge_deleted(s, now, &left, &erased);
    if (rc == PL_STORE_OK && left > 0) rc = purge_released(s, now, &left, &erased);
    if (rc != PL_STORE_OK) return rc;
    j->out_id = erased;
    return PL_STORE_OK;
}

/* ---- account deletion ------------------------------------------------------------ */

static int account_delete(sq_store *s, pl_job *j, int64_t now) {
    int src = 0;
    int rc = sq_run(s->wdb, &src, NULL, "SELECT 1 FROM users WHERE id = ?1 AND deleted = 0", "i", j->user);
    if (rc <= 0) return rc < 0 ? l_fatal(s, src) : PL_STORE_ENOTFOUND;
    rc = sq_run(s->wdb, &src, NULL,
                "SELECT 1 FROM members m JOIN conversations c ON c.id = m.conv_id"
                " WHERE m.user_id = ?1 AND c.kind <> 1"
                " UNION ALL SELECT 1 FROM workspace_members WHERE user_id = ?1 LIMIT 1", "i", j->user);
    if (rc < 0) return l_fatal(s, src);
    if (rc) {
        j->why = "still a member";
        return PL_STORE_ECONFLICT;
    }
    /* the blocks it made go first, each an unblock that clears its direct
     * conversation's flag (api_life.c): a block is the user's own data */
    rc = sq_run(s->wdb, &src, NULL, "SELECT 1 FROM blocks WHERE user_id = ?1 LIMIT 1", "i", j->user);
    if (rc < 0) return l_fatal(s, src);
    if (rc) {
        j->why = "still blocking";
        return PL_STORE_ECONFLICT;
    }
    static const char *const sql[] = {
        "UPDATE users SET deleted = ?2, username = 'deleted#' || id, pwhash = '', last_seen = 0 WHERE id = ?1",
        "UPDATE logins SET revoked = 1 WHERE user_id = ?1",
        "DELETE FROM push_devices WHERE user_id = ?1",
        "DELETE FROM e2ee_otks WHERE device IN (SELECT device FROM e2ee_devices WHERE user_id = ?1)",
        "DELETE FROM e2ee_devices WHERE user_id = ?1",
        "UPDATE media SET gc_after = min(gc_after, ?2) WHERE owner = ?1",
        "INSERT OR REPLACE INTO erasures(user_id, next_conv) VALUES(?1, 0)",
    };
    for (size_t i = 0; i < sizeof sql / sizeof sql[0]; i++)
        if (sq_run(s->wdb, &src, NULL, sql[i], "ii", j->user, now) < 0) return l_fatal(s, src);
    j->out_id = j->user;
    return PL_STORE_OK;
}

int sq_job_life(sq_store *s, pl_job *j, int64_t now) {
    switch (j->op) {
    case PL_JOB_RETENTION_SET:   return retention_set(s, j, now);
    case PL_JOB_HOLD_SET:        return hold_set(s, j);
    case PL_JOB_RETENTION_PURGE: return purge(s, j, now);
    case PL_JOB_ACCOUNT_DELETE:  return account_delete(s, j, now);
    default:                     return PL_STORE_EINVAL;
    }
}

/* ---- reads ---------------------------------------------------------------------------- */

int sq_read_conv_life(sq_reader *r, pl_conv *c) {
    int src = 0;
    sqlite3_stmt *st = sq_prep(r->db, "SELECT c.retention, coalesce(w.retention, 0), c.hold OR coalesce(w.hold, 0)"
                                      " FROM conversations c LEFT JOIN workspaces w ON w.id = c.workspace"
                                      " WHERE c.id = ?1", &src);
    if (!st) return PL_STORE_EUNAVAIL;
    sqlite3_bind_int64(st, 1, c->id);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        c->retention = sqlite3_column_int64(st, 0);
        c->ws_retention = sqlite3_column_int64(st, 1);
        c->hold = sqlite3_column_int(st, 2);
    }
    sqlite3_finalize(st);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? PL_STORE_OK : PL_STORE_EUNAVAIL;
}
