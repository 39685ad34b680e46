/* store_sqlite_push.c — push notifications in the SQLite backend (store.h
 * invariant 10): the devices logins registered, the outbox's claims and
 * completions, and the read that turns claimed rows into notifications.
 *
 * Owns: the SQL of push_devices and push_outbox, except the outbox row a
 * MESSAGE's append writes (W_PUSH_OUTBOX, store_sqlite_write.c). The write
 * jobs run on the writer thread inside a savepoint; one writer means a row
 * is claimed by one worker at a time. These jobs are rare next to sends
 * (a claim per worker pass): their statements are prepared on use.
 * Does not own: sending (src/push/), who is online (chat/presence.c).
 */
#include "sqlite_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/alloc.h"
#include "../core/clock.h"
#include "../core/log.h"

/* ---- the writer's jobs ----------------------------------------------------- */

static int p_fatal(sq_store *s, int src) { return sq_w_fatal(s, src, "push statement"); }

static int p_register(sq_store *s, pl_job *j, int64_t now) {
    int src = 0;
    size_t tlen = j->token ? strlen(j->token) : 0;
    if (j->platform < PL_PUSH_WEBHOOK || j->platform > PL_PUSH_APNS || !tlen || tlen > PL_PUSH_TOKEN_MAX) {
        j->why = "bad platform or token";
        return PL_STORE_EINVAL;
    }
    int64_t id = 0, login = 0, held = 0;
    int rc = sq_run(s->wdb, &src, NULL,
                   "SELECT 1 FROM logins WHERE id = ?1 AND user_id = ?2 AND revoked = 0 AND expires > ?3", "iii",
                   j->id, j->user, now);
    if (rc <= 0) return rc < 0 ? p_fatal(s, src) : PL_STORE_ENOTFOUND;
    rc = sq_run(s->wdb, &src, &id, "SELECT id FROM push_devices WHERE platform = ?1 AND token = ?2", "it",
               (int64_t)j->platform, j->token);
    if (rc < 0) return p_fatal(s, src);
    if (rc) {
        if (sq_run(s->wdb, &src, &login, "SELECT login FROM push_devices WHERE id = ?1", "i", id) < 0)
            return p_fatal(s, src);
        j->out_id = id;
        if (login == j->id) return PL_STORE_OK;          /* already this login's */
    }
    if (sq_run(s->wdb, &src, &held, "SELECT count(*) FROM push_devices WHERE user_id = ?1 AND id <> ?2", "ii",
              j->user, id) < 0)                          /* a move between its logins adds none */
        return p_fatal(s, src);
    if (held >= PL_PUSH_DEVICES_MAX) {
        j->why = "too many push devices";
        return PL_STORE_EINVAL;
    }
    if (id)                                              /* the device changed accounts */
        rc = sq_run(s->wdb, &src, NULL, "UPDATE push_devices SET user_id = ?1, login = ?2, created = ?3 WHERE id = ?4",
                   "iiii", j->user, j->id, now, id);
    else
        rc = sq_run(s->wdb, &src, &id,
                   "INSERT INTO push_devices(user_id, login, platform, token, created)"
                   " VALUES(?1, ?2, ?3, ?4, ?5) RETURNING id",
                   "iiiti", j->user, j->id, (int64_t)j->platform, j->token, now);
    if (rc < 0) return p_fatal(s, src);
    j->out_id = id;
    j->created = 1;
    return PL_STORE_OK;
}

static int p_unregister(sq_store *s, pl_job *j) {
    int src = 0;
    int rc = sq_run(s->wdb, &src, NULL, "DELETE FROM push_devices WHERE id = ?1 AND user_id = ?2 RETURNING id", "ii",
                   j->id, j->user);
    if (rc < 0) return p_fatal(s, src);
    return rc ? PL_STORE_OK : PL_STORE_ENOTFOUND;
}

static int p_claim(sq_store *s, pl_job *j, int64_t now) {
    int src = 0;
    int64_t limit = j->limit > 0 ? j->limit : 1;
    /* out of attempts, among the rows this claim takes (never a scan of
     * the whole outbox, which may be long behind a busy server); their ids
     * go back, so the worker stops holding devices for them */
    sqlite3_stmt *dst = sq_prep(s->wdb,
                               "DELETE FROM push_outbox WHERE id IN (SELECT id FROM push_outbox WHERE lease < ?1"
                               " ORDER BY id LIMIT ?3) AND attempts >= ?2 RETURNING id", &src);
    if (!dst) return p_fatal(s, src);
    sqlite3_bind_int64(dst, 1, now);
    sqlite3_bind_int64(dst, 2, PL_PUSH_ATTEMPTS);
    sqlite3_bind_int64(dst, 3, limit);
    int drc;
    while ((drc = sqlite3_step(dst)) == SQLITE_ROW) {
        j->push_dropped = pl_realloc(j->push_dropped, (j->npush_dropped + 1) * sizeof *j->push_dropped);
        j->push_dropped[j->npush_dropped++] = sqlite3_column_int64(dst, 0);
    }
    sqlite3_finalize(dst);
    if (drc != SQLITE_DONE) return p_fatal(s, drc);
    int64_t dropped = (int64_t)j->npush_dropped;
    j->created = (int)dropped;
    if (dropped)
        pl_log(PL_LOG_WARN, 0, "push: notifications dropped after their last attempt", "\"rows\":%lld",
               (long long)dropped);
    sqlite3_stmt *st = sq_prep(s->wdb,
                              "UPDATE push_outbox SET lease = ?2, attempts = attempts + 1 WHERE id IN"
                              " (SELECT id FROM push_outbox WHERE lease < ?1 ORDER BY id LIMIT ?3) RETURNING id",
                              &src);
    if (!st) return p_fatal(s, src);
    sqlite3_bind_int64(st, 1, now);
    sqlite3_bind_int64(st, 2, j->expires);
    sqlite3_bind_int64(st, 3, limit);
    size_t cap = 0;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (j->nout == cap) {
            cap = cap ? cap * 2 : 16;
            j->out_ids = pl_realloc(j->out_ids, cap * sizeof *j->out_ids);
        }
        j->out_ids[j->nout++] = sqlite3_column_int64(st, 0);
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) return p_fatal(s, rc);
    for (size_t a = 1; a < j->nout; a++)                 /* RETURNING has no order */
        for (size_t b = a; b > 0 && j->out_ids[b - 1] > j->out_ids[b]; b--) {
            int64_t t = j->out_ids[b];
            j->out_ids[b] = j->out_ids[b - 1];
            j->out_ids[b - 1] = t;
        }
    return PL_STORE_OK;
}

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

/* Deletes outbox rows ids[n]: one statement, run once per stretch of
 * consecutive ids (a pass's rows mostly are one). */
static int p_delete_rows(sq_store *s, const int64_t *ids, size_t n, int *src) {
    if (!n) return 0;
    int64_t *v = pl_malloc(n * sizeof *v);
    memcpy(v, ids, n * sizeof *v);
    qsort(v, n, sizeof *v, cmp_i64);
    sqlite3_stmt *st = sq_prep(s->wdb, "DELETE FROM push_outbox WHERE id BETWEEN ?1 AND ?2", src);
    int rc = st ? SQLITE_DONE : SQ_RUN_ERR;
    for (size_t i = 0; i < n && rc == SQLITE_DONE;) {
        size_t k = i;
        while (k + 1 < n && v[k + 1] <= v[k] + 1) k++;
        sqlite3_bind_int64(st, 1, v[i]);
        sqlite3_bind_int64(st, 2, v[k]);
        rc = sqlite3_step(st);
        sqlite3_reset(st);
        i = k + 1;
    }
    sqlite3_finalize(st);
    free(v);
    if (rc == SQLITE_DONE) return 0;
    if (rc != SQ_RUN_ERR) *src = rc;
    return SQ_RUN_ERR;
}

static int p_done(sq_store *s, pl_job *j) {
    int src = 0;
    if (p_delete_rows(s, j->ids, j->nids, &src) < 0) return p_fatal(s, src);
    for (size_t i = 0; i < j->ndead; i++)
        if (sq_run(s->wdb, &src, NULL, "DELETE FROM push_devices WHERE id = ?1", "i", j->dead[i]) < 0)
            return p_fatal(s, src);
    for (size_t i = 0; i < j->nretries; i++) {
        const pl_push_retry *r = &j->retries[i];
        char *only = pl_store__id_list(r->devices, r->ndevices);
        int rc = sq_run(s->wdb, &src, NULL,
                       "UPDATE push_outbox SET lease = ?1, only_devices = ?2, attempts = max(attempts - ?4, 0)"
                       " WHERE id = ?3", "itii", r->expires ? r->expires : j->expires, only, r->id,
                       (int64_t)(r->refund != 0));
        free(only);
        if (rc < 0) return p_fatal(s, src);
    }
    return PL_STORE_OK;
}

int sq_job_push(sq_store *s, pl_job *j, int64_t now) {
    switch (j->op) {
    case PL_JOB_PUSH_REGISTER:   return p_register(s, j, now);
    case PL_JOB_PUSH_UNREGISTER: return p_unregister(s, j);
    case PL_JOB_PUSH_CLAIM:      return p_claim(s, j, now);
    case PL_JOB_PUSH_DONE:       return p_done(s, j);
    default:                     return PL_STORE_EINVAL;
    }
}

int sq_push_forget_login(sq_store *s, int64_t login) {
    int src = 0;
    if (sq_run(s->wdb, &src, NULL, "DELETE FROM push_devices WHERE login = ?1", "i", login) < 0)
        return p_fatal(s, src);
    return PL_STORE_OK;
}

/* ---- reads ------------------------------------------------------------------ */

static int p_read_devices(sq_reader *r, pl_job *j) {
    int src = 0;
    sqlite3_stmt *st = sq_prep(r->db,
                              "SELECT id, login, platform, token, created FROM push_devices WHERE user_id = ?1"
                              " ORDER BY id", &src);
    if (!st) return PL_STORE_EUNAVAIL;
    sqlite3_bind_int64(st, 1, j->user);
    size_t cap = 0;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (j->npush_devices == cap) {
            cap = cap ? cap * 2 : 4;
            j->push_devices = pl_realloc(j->push_devices, cap * sizeof *j->push_devices);
        }
        pl_push_device *d = &j->push_devices[j->npush_devices++];
        d->id = sqlite3_column_int64(st, 0);
        d->user = j->user;
        d->login = sqlite3_column_int64(st, 1);
        d->platform = sqlite3_column_int(st, 2);
        d->token = sq_col_text(st, 3, NULL);
        d->created = sqlite3_column_int64(st, 4);
    }
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? PL_STORE_OK : PL_STORE_EUNAVAIL;
}

/* Whether device id is in the comma-separated list only (NULL: all are). */
static int p_only_has(const char *only, int64_t id) {
    if (!only) return 1;
    for (const char *p = only; *p;) {
        char *end;
        long long v = strtoll(p, &end, 10);
        if (end == p) return 0;
        if (v == id) return 1;
        p = *end == ',' ? end + 1 : end;
    }
    return 0;
}

/* One query per claimed row: its message (not deleted), the conversation,
 * the sender's name, and each (member, device) the level lets through. */
static const char *const targets_sql =
    "SELECT o.only_devices, e.conv_id, e.seq, e.id, e.ts, e.sender, u.username, c.kind, c.title, e.body,"
    "  m.user_id, EXISTS (SELECT 1 FROM mentions x WHERE x.conv_id = e.conv_id AND x.user_id = m.user_id"
    "    AND x.seq = e.seq) AS mentioned, d.id, d.platform, d.token, m.notify, c.member_count,"
    "  instr(coalesce(e.data, ''), '\"ciphertext\"') > 0"
    " FROM push_outbox o"
    " JOIN events e ON e.conv_id = o.conv_id AND e.seq = o.seq AND e.kind = 2 AND e.deleted_ts = 0"
    " JOIN conversations c ON c.id = e.conv_id"
    " JOIN users u ON u.id = e.sender"
    " JOIN members m ON m.conv_id = e.conv_id AND m.user_id <> e.sender AND m.joined_seq <= e.seq"
    "   AND m.notify <> 2"                               /* PL_NOTIFY_NONE */
    " JOIN push_devices d ON d.user_id = m.user_id"
    " JOIN logins l ON l.id = d.login AND l.revoked = 0 AND l.expires > ?2"
    " WHERE o.id = ?1 ORDER BY m.user_id, d.id";

/* A user's badge (pl_push.badge), by the unread counts of invariant 5. */
static const char *const badge_sql =
    "SELECT coalesce(sum(CASE m.notify"
    "  WHEN 0 THEN c.msg_count - coalesce((SELECT x.msg_no FROM events x WHERE x.conv_id = c.id"
    "    AND x.seq = max(m.read_seq, m.joined_seq - 1)), 0) - m.own_unread"
    "  WHEN 1 THEN (SELECT count(*) FROM mentions x WHERE x.conv_id = c.id AND x.user_id = m.user_id"
    "    AND x.seq > max(m.read_seq, m.joined_seq - 1))"
    "  ELSE 0 END), 0)"
    " FROM members m JOIN conversations c ON c.id = m.conv_id WHERE m.user_id = ?1";

/* Fills every push's badge, one query per recipient. 0, or -1. */
static int p_badges(sqlite3 *db, pl_job *j) {
    int src = 0, rc = SQLITE_DONE;
    if (!j->npushes) return 0;
    sqlite3_stmt *st = sq_prep(db, badge_sql, &src);
    if (!st) return -1;
    int64_t user = 0, badge = 0;
    for (size_t i = 0; i < j->npushes && rc == SQLITE_DONE; i++) {
        pl_push *p = &j->pushes[i];
        if (i == 0 || p->user != user) {                 /* per row, users come sorted */
            size_t k = 0;
            while (k < i && j->pushes[k].user != p->user) k++;
            if (k < i) {
                badge = j->pushes[k].badge;              /* seen in an earlier row */
            } else {
                sqlite3_reset(st);
                sqlite3_bind_int64(st, 1, p->user);
                rc = sqlite3_step(st);
                badge = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
                rc = rc == SQLITE_ROW ? SQLITE_DONE : rc;
            }
            user = p->user;
        }
        p->badge = badge;
    }
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : -1;
}

/* The retried rows among ids[j->nids] (sorted): their devices that got no
 * push are counted in j->created (PL_READ_PUSH_TARGETS). Retries are rare:
 * one statement over the ids' range, filtered to the rows claimed. */
static int p_count_cancelled(sqlite3 *db, pl_job *j, const int64_t *ids) {
    int src = 0, rc;
    sqlite3_stmt *st = sq_prep(db, "SELECT id, only_devices FROM push_outbox WHERE id BETWEEN ?1 AND ?2"
                                   " AND only_devices IS NOT NULL", &src);
    if (!st) return src ? src : SQLITE_ERROR;
    sqlite3_bind_int64(st, 1, ids[0]);
    sqlite3_bind_int64(st, 2, ids[j->nids - 1]);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        int64_t id = sqlite3_column_int64(st, 0);
        if (!bsearch(&id, ids, j->nids, sizeof *ids, cmp_i64)) continue;   /* another pass's */
        j->created += (int)pl_store__push_cancelled(id, (const char *)sqlite3_column_text(st, 1), j->pushes,
                                                    j->npushes);
    }
    sqlite3_finalize(st);
    return rc;
}

static int p_read_targets(sq_reader *r, pl_job *j) {
    int src = 0;
    sqlite3_stmt *st = sq_prep(r->db, targets_sql, &src);
    if (!st) {
        pl_log(PL_LOG_ERROR, 0, "store: push targets statement", "\"err\":\"%s\"", sqlite3_errmsg(r->db));
        return PL_STORE_EUNAVAIL;
    }
    int64_t now = pl_now_ms();
    int rc = SQLITE_DONE;
    size_t cap = 0;
    int64_t *ids = pl_malloc((j->nids ? j->nids : 1) * sizeof *ids);
    memcpy(ids, j->ids, j->nids * sizeof *ids);
    for (size_t a = 1; a < j->nids; a++)                 /* rows in id order */
        for (size_t b = a; b > 0 && ids[b - 1] > ids[b]; b--) {
            int64_t t = ids[b];
            ids[b] = ids[b - 1];
            ids[b - 1] = t;
        }
    for (size_t i = 0; i < j->nids && rc == SQLITE_DONE; i++) {
        sqlite3_reset(st);
        sqlite3_bind_int64(st, 1, ids[i]);
        sqlite3_bind_int64(st, 2, now);
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
            const char *only = (const char *)sqlite3_column_text(st, 0);
            int mentioned = sqlite3_column_int(st, 11);
            if (sqlite3_column_int(st, 15) == PL_NOTIFY_MENTIONS && !mentioned) continue;
            if (j->after > 0 && sqlite3_column_int(st, 7) != PL_CONV_DIRECT && sqlite3_column_int64(st, 16) > j->after &&
                !mentioned)
                continue;                                /* a large group: mentions only */
            if (!p_only_has(only, sqlite3_column_int64(st, 12))) continue;
            if (j->npushes == cap) {
                cap = cap ? cap * 2 : 16;
                j->pushes = pl_realloc(j->pushes, cap * sizeof *j->pushes);
            }
            pl_push *p = &j->pushes[j->npushes];
            memset(p, 0, sizeof *p);
            p->outbox = ids[i];
            p->conv = sqlite3_column_int64(st, 1);
            p->seq = sqlite3_column_int64(st, 2);
            p->id = (uint64_t)sqlite3_column_int64(st, 3);
            p->ts = sqlite3_column_int64(st, 4);
            p->sender = sqlite3_column_int64(st, 5);
            const char *name = (const char *)sqlite3_column_text(st, 6);
            snprintf(p->sender_name, sizeof p->sender_name, "%s", name ? name : "");
            p->conv_kind = sqlite3_column_int(st, 7);
            p->title = sq_col_text(st, 8, NULL);
            p->body = sq_col_text(st, 9, &p->body_len);
            if (p->body && !p->body_len) {
                free(p->body);
                p->body = NULL;
            }
            p->encrypted = sqlite3_column_int(st, 17);
            p->user = sqlite3_column_int64(st, 10);
            p->mention = mentioned;
            p->device = sqlite3_column_int64(st, 12);
            p->platform = sqlite3_column_int(st, 13);
            p->token = sq_col_text(st, 14, NULL);
            j->npushes++;
        }
    }
    sqlite3_finalize(st);
    if (rc == SQLITE_DONE && j->nids) rc = p_count_cancelled(r->db, j, ids);
    free(ids);
    if (rc == SQLITE_DONE && p_badges(r->db, j) != 0) rc = SQLITE_ERROR;
    if (rc != SQLITE_DONE) {
        pl_log(PL_LOG_ERROR, 0, "store: push targets read failed", "\"err\":\"%s\"", sqlite3_errmsg(r->db));
        return PL_STORE_EUNAVAIL;
    }
    return PL_STORE_OK;
}

int sq_read_push(sq_reader *r, pl_job *j) {
    return j->op == PL_READ_PUSH_DEVICES ? p_read_devices(r, j) : p_read_targets(r, j);
}
