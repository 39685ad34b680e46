/* store_sqlite_keys.c — end-to-end encryption in the SQLite backend
 * (store.h invariant 9): the key directory (upload, delete, claim, list)
 * and the conversation mark with its E2EE events.
 *
 * Owns: the SQL of the tables e2ee_devices and e2ee_otks and of
 * conversations.e2ee. The write jobs run on the writer thread inside a
 * savepoint (store_sqlite_write.c w_run_job), so a claim's DELETE of the
 * one-time prekey it hands out commits with the batch or not at all, and
 * the single writer makes two claims never see the same key. These jobs
 * are rare: their statements are prepared on use, not kept.
 * Does not own: validating keys (src/chat/e2ee.c), the send check
 * (store_e2ee.c, called from job_send).
 */
#include "sqlite_int.h"

#include <stdlib.h>
#include <string.h>

#include "../core/alloc.h"
#include "../core/clock.h"

#define K_ERR (-1000)     /* a statement failed (SQLite code in *src)       */

/* Runs a statement with up to three integer and two text parameters
 * (NULL text: not bound); 1 when it returned a row (*out = column 0),
 * 0 when none, K_ERR on failure. */
static int k_run(sqlite3 *db, const char *sql, int64_t a, int64_t b, int64_t c, const char *t4,
                 const char *t5, int64_t *out, int *src) {
    sqlite3_stmt *st = sq_prep(db, sql, src);
    if (!st) return K_ERR;
    int np = sqlite3_bind_parameter_count(st);
    if (np >= 1) sqlite3_bind_int64(st, 1, a);
    if (np >= 2) sqlite3_bind_int64(st, 2, b);
    if (np >= 3) sqlite3_bind_int64(st, 3, c);
    if (np >= 4 && t4) sqlite3_bind_text(st, 4, t4, -1, SQLITE_STATIC);
    if (np >= 5 && t5) sqlite3_bind_text(st, 5, t5, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    int found = rc == SQLITE_ROW;
    if (found && out) *out = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        *src = rc;
        return K_ERR;
    }
    return found;
}

/* ---- listing and claiming (shared by the writer's claim and the read) ----- */

/* j->devices: peer's live devices (asker must be peer or share a
 * conversation with it, a direct one under a block not counting), each with one one-time prekey taken when take. */
static int k_devices(sqlite3 *db, pl_job *j, int take, int *src) {
    int64_t now = pl_now_ms();
    int rc;
    if (j->user != j->peer) {
        rc = k_run(db, "SELECT 1 FROM members a JOIN members b ON b.conv_id = a.conv_id"
                       " AND b.user_id = ?2 JOIN conversations c ON c.id = a.conv_id AND c.blocked = 0"
                       " WHERE a.user_id = ?1 LIMIT 1",
                   j->user, j->peer, 0, NULL, NULL, NULL, src);
        if (rc <= 0) {
            j->why = "no such user, or no conversation shared with it";
            return rc < 0 ? rc : PL_STORE_ENOTFOUND;
        }
    }
    sqlite3_stmt *st = sq_prep(db, "SELECT d.device, d.identity, d.spk_id, d.spk, d.spk_sig, d.updated,"
                                  " (SELECT count(*) FROM e2ee_otks o WHERE o.device = d.device)"
                                  " FROM e2ee_devices d JOIN logins l ON l.id = d.device"
                                  " AND l.revoked = 0 AND l.expires > ?2"
                                  " WHERE d.user_id = ?1 ORDER BY d.device", src);
    if (!st) return K_ERR;
    sqlite3_bind_int64(st, 1, j->peer);
    sqlite3_bind_int64(st, 2, now);
    size_t cap = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (j->ndevices == cap) {
            cap = cap ? cap * 2 : 4;
            j->devices = pl_realloc(j->devices, cap * sizeof *j->devices);
        }
        pl_device *d = &j->devices[j->ndevices++];
        memset(d, 0, sizeof *d);
        d->id = sqlite3_column_int64(st, 0);
        d->user = j->peer;
        d->identity = sq_col_text(st, 1, NULL);
        d->spk_id = sqlite3_column_int64(st, 2);
        d->spk = sq_col_text(st, 3, NULL);
        d->spk_sig = sq_col_text(st, 4, NULL);
        d->updated = sqlite3_column_int64(st, 5);
        d->otk_count = sqlite3_column_int64(st, 6);
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) {
        *src = rc;
        return K_ERR;
    }
    if (!take) return PL_STORE_OK;
    sqlite3_stmt *pick = sq_prep(db, "DELETE FROM e2ee_otks WHERE device = ?1 AND key_id ="
                                    " (SELECT min(key_id) FROM e2ee_otks WHERE device = ?1)"
                                    " RETURNING key_id, key", src);
    if (!pick) return K_ERR;
    for (size_t i = 0; i < j->ndevices; i++) {
        pl_device *d = &j->devices[i];
        sqlite3_bind_int64(pick, 1, d->id);
        rc = sqlite3_step(pick);
        if (rc == SQLITE_ROW) {
            d->otk_id = sqlite3_column_int64(pick, 0);
            d->otk = sq_col_text(pick, 1, NULL);
            d->otk_count--;
            rc = sqlite3_step(pick);
        }
        sqlite3_reset(pick);
        if (rc != SQLITE_DONE) {
            sqlite3_finalize(pick);
            *src = rc;
            return K_ERR;
        }
    }
    sqlite3_finalize(pick);
    return PL_STORE_OK;
}

int sq_read_devices(sq_reader *r, pl_job *j) {
    int src = 0;
    int rc = k_devices(r->db, j, 0, &src);
    return rc == K_ERR ? PL_STORE_EUNAVAIL : rc;
}

/* ---- the writer's jobs ----------------------------------------------------- */

static int k_fatal(sq_store *s, int src) { return sq_w_fatal(s, src, "e2ee statement"); }

static int k_upload(sq_store *s, pl_job *j, int64_t now) {
    const pl_keys_in *k = j->keys;
    if (!k || k->notks > PL_KEYS_OTK_UPLOAD || (k->identity && (!k->spk || !k->spk_sig)))
        return PL_STORE_EINVAL;
    sqlite3 *db = s->wdb;
    int src = 0, rc;
    rc = k_run(db, "SELECT 1 FROM logins WHERE id = ?1 AND user_id = ?2 AND revoked = 0 AND expires > ?3",
               j->id, j->user, now, NULL, NULL, NULL, &src);
    if (rc <= 0) {
        j->why = "no such device";
        return rc < 0 ? k_fatal(s, src) : PL_STORE_ENOTFOUND;
    }
    char *old = NULL;
    sqlite3_stmt *st = sq_prep(db, "SELECT identity FROM e2ee_devices WHERE device = ?1", &src);
    if (!st) return k_fatal(s, src);
    sqlite3_bind_int64(st, 1, j->id);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) old = sq_col_text(st, 0, NULL);
    sqlite3_finalize(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) return k_fatal(s, rc);
    if (!old && !k->identity) {
        j->why = "upload the identity key and signed prekey first";
        return PL_STORE_EINVAL;
    }
    int64_t held = 0;                            /* after the upload: an id held is replaced */
    if (!k->replace_otks &&
        k_run(db, "SELECT count(*) FROM e2ee_otks WHERE device = ?1", j->id, 0, 0, NULL, NULL, &held, &src) < 0) {
        free(old);
        return k_fatal(s, src);
    }
    for (size_t i = 0; !k->replace_otks && i < k->notks; i++) {
        rc = k_run(db, "SELECT 1 FROM e2ee_otks WHERE device = ?1 AND key_id = ?2", j->id, k->otks[i].id, 0,
                   NULL, NULL, NULL, &src);
        if (rc < 0) {
            free(old);
            return k_fatal(s, src);
        }
        held -= rc;
    }
    if (held + (int64_t)k->notks > PL_KEYS_OTK_HELD) {
        free(old);
        j->why = "too many one-time prekeys held";
        return PL_STORE_EINVAL;
    }
    j->created = !old || (k->identity && strcmp(old, k->identity) != 0);
    free(old);
    if (k->identity) {
        st = sq_prep(db, "INSERT INTO e2ee_devices(device, user_id, identity, spk_id, spk, spk_sig, updated)"
                        " VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT(device) DO UPDATE SET"
                        " identity = excluded.identity, spk_id = excluded.spk_id, spk = excluded.spk,"
                        " spk_sig = excluded.spk_sig, updated = excluded.updated", &src);
        if (!st) return k_fatal(s, src);
        sqlite3_bind_int64(st, 1, j->id);
        sqlite3_bind_int64(st, 2, j->user);
        sqlite3_bind_text(st, 3, k->identity, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 4, k->spk_id);
        sqlite3_bind_text(st, 5, k->spk, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 6, k->spk_sig, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 7, now);
        rc = sqlite3_step(st);
        sqlite3_finalize(st);
        if (rc != SQLITE_DONE) return k_fatal(s, rc);
    }
    if (k->replace_otks &&
        k_run(db, "DELETE FROM e2ee_otks WHERE device = ?1", j->id, 0, 0, NULL, NULL, NULL, &src) < 0)
        return k_fatal(s, src);
    if (k->notks) {
        st = sq_prep(db, "INSERT OR REPLACE INTO e2ee_otks(device, key_id, key) VALUES(?1, ?2, ?3)", &src);
        if (!st) return k_fatal(s, src);
        for (size_t i = 0; i < k->notks; i++) {
            sqlite3_bind_int64(st, 1, j->id);
            sqlite3_bind_int64(st, 2, k->otks[i].id);
            sqlite3_bind_text(st, 3, k->otks[i].key, -1, SQLITE_STATIC);
            rc = sqlite3_step(st);
            sqlite3_reset(st);
            if (rc != SQLITE_DONE) {
                sqlite3_finalize(st);
                return k_fatal(s, rc);
            }
        }
        sqlite3_finalize(st);
    }
    if (k_run(db, "SELECT count(*) FROM e2ee_otks WHERE device = ?1", j->id, 0, 0, NULL, NULL, &j->out_id,
              &src) < 0)
        return k_fatal(s, src);
    return PL_STORE_OK;
}

static int k_delete(sq_store *s, pl_job *j) {
    int src = 0;
    if (k_run(s->wdb, "DELETE FROM e2ee_otks WHERE device = ?1 AND device IN"
                      " (SELECT device FROM e2ee_devices WHERE user_id = ?2)",
              j->id, j->user, 0, NULL, NULL, NULL, &src) < 0 ||
        k_run(s->wdb, "DELETE FROM e2ee_devices WHERE device = ?1 AND user_id = ?2",
              j->id, j->user, 0, NULL, NULL, NULL, &src) < 0)
        return k_fatal(s, src);
    j->created = sqlite3_changes(s->wdb) > 0;
    return PL_STORE_OK;
}

/* CONV_E2EE (mark) and DEVICES_ANNOUNCE: the append is the last write. */
static int k_conv(sq_store *s, pl_job *j, int64_t now) {
    int role = sq_w_member_role(s, j->conv, j->user);
    if (role < 0) return role;
    if (role == PL_ROLE_NONE) return PL_STORE_ENOTFOUND;
    int err = PL_STORE_OK, src = 0;
    pl_conv_state *e = sq_w_conv_state(s, j->conv, &err);
    if (!e) return err;
    j->out_id = j->conv;
    if (j->op == PL_JOB_DEVICES_ANNOUNCE) {
        /* nothing to say there; under a block the two share nothing, not
         * even when the other's devices change (audit L4) */
        if (!e->e2ee || e->blocked) return PL_STORE_OK;
        int rc = sq_w_append(s, j, now, j->conv, PL_EV_E2EE, j->user, j->user, pl_store__data_e2ee(j->user));
        j->created = rc == PL_STORE_OK;
        return rc;
    }
    int64_t kind = 0;
    if (k_run(s->wdb, "SELECT kind FROM conversations WHERE id = ?1", j->conv, 0, 0, NULL, NULL, &kind, &src) < 0)
        return k_fatal(s, src);
    if (kind != PL_CONV_DIRECT && role != PL_ROLE_ADMIN) {
        j->why = "admins only";
        return PL_STORE_EFORBID;
    }
    if (e->e2ee) return PL_STORE_OK;                      /* already: no event */
    if (e->blocked) {                                     /* invariant 14 */
        j->why = "blocked";
        return PL_STORE_EFORBID;
    }
    if (k_run(s->wdb, "UPDATE conversations SET e2ee = 1 WHERE id = ?1", j->conv, 0, 0, NULL, NULL, NULL,
              &src) < 0)
        return k_fatal(s, src);
    int rc = sq_w_append(s, j, now, j->conv, PL_EV_E2EE, j->user, 0, pl_store__data_e2ee(0));
    if (rc == PL_STORE_OK) {
        e = sq_w_conv_state(s, j->conv, &err);            /* the append may move entries */
        if (e) e->e2ee = 1;
        j->created = 1;
    }
    return rc;
}

int sq_job_e2ee(sq_store *s, pl_job *j, int64_t now) {
    int src = 0, rc;
    switch (j->op) {
    case PL_JOB_KEYS_UPLOAD: return k_upload(s, j, now);
    case PL_JOB_KEYS_DELETE: return k_delete(s, j);
    case PL_JOB_KEYS_CLAIM:
        rc = k_devices(s->wdb, j, 1, &src);
        return rc == K_ERR ? k_fatal(s, src) : rc;
    case PL_JOB_CONV_E2EE:
    case PL_JOB_DEVICES_ANNOUNCE: return k_conv(s, j, now);
    default: return PL_STORE_EINVAL;
    }
}
