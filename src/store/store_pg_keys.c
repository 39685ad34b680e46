/* store_pg_keys.c — end-to-end encryption in the PostgreSQL backend
 * (store.h invariant 9): the key directory (upload, delete, claim, list)
 * and the conversation mark with its E2EE events.
 *
 * Owns: the jobs over the statements W_KEYS_*, W_CONV_E2EE, R_KEYS_SHARES
 * and R_DEVICES (store_pg_stmts_w.c, _r.c). Their writes go in one round trip inside a
 * savepoint, so a failing statement fails the job alone (pg_sp_failed).
 * A claim deletes the one-time prekeys it hands out in the batch's
 * transaction, skipping keys another transaction holds (FOR UPDATE SKIP
 * LOCKED): two claims, on any nodes, never get the same key; a batch that
 * rolls back gives its keys back. A claim first locks the peer's device
 * rows (W_KEYS_CLAIM_LOCK), so that the count it returns, from a later
 * statement, is what it left (keys_low); an upload first locks the
 * device's login row (W_KEYS_LOGIN_LOCK), so that what it reads (a new
 * device?, the keys held) is what committed before it: claims of one
 * device, and uploads of one device, run one after the other across
 * nodes (audit P1 F1-F3).
 * Does not own: validating keys (src/chat/e2ee.c), the send check
 * (store_e2ee.c, called from store_pg_runs.c).
 */
#include <stdlib.h>
#include <string.h>

#include "../core/alloc.h"
#include "../core/clock.h"
#include "pg_int.h"

/* ---- device rows ------------------------------------------------------------- */

/* Columns: device, identity, spk_id, spk, spk_sig, updated, otk_id, otk, count. */
static void device_rows(const PGresult *r, pl_job *j) {
    int n = PQntuples(r);
    j->devices = pl_calloc(n ? (size_t)n : 1, sizeof *j->devices);
    for (int row = 0; row < n; row++) {
        pl_device *d = &j->devices[j->ndevices++];
        d->id = pg_i64(r, row, 0);
        d->user = j->peer;
        d->identity = pg_text(r, row, 1, NULL);
        d->spk_id = pg_i64(r, row, 2);
        d->spk = pg_text(r, row, 3, NULL);
        d->spk_sig = pg_text(r, row, 4, NULL);
        d->updated = pg_i64(r, row, 5);
        if (!pg_null(r, row, 6)) {
            d->otk_id = pg_i64(r, row, 6);
            d->otk = pg_text(r, row, 7, NULL);
        }
        d->otk_count = pg_i64(r, row, 8);
    }
}

int pg_read_devices(pg_reader *r, pl_job *j) {
    pg_params p = {0};
    pg_param_i64(&p, j->user);
    pg_param_i64(&p, j->peer);
    int rc;
    PGresult *res = pg_r_query(r, R_KEYS_SHARES, &p, &rc);
    if (!res) return rc;
    if (PQgetvalue(res, 0, 0)[0] != 't') {
        j->why = "no such user, or no conversation shared with it";
        return PL_STORE_ENOTFOUND;
    }
    pg_params q = {0};
    pg_param_i64(&q, j->peer);
    pg_param_i64(&q, pl_now_ms());
    if (!(res = pg_r_query(r, R_DEVICES, &q, &rc))) return rc;
    device_rows(res, j);
    return PL_STORE_OK;
}

/* ---- the writer's jobs --------------------------------------------------------- */

static int k_upload(pg_store *s, pl_job *j, int64_t now) {
    const pl_keys_in *k = j->keys;
    if (!k || k->notks > PL_KEYS_OTK_UPLOAD || (k->identity && (!k->spk || !k->spk_sig)))
        return PL_STORE_EINVAL;
    for (size_t a = 0; a < k->notks; a++)        /* one row per id: ON CONFLICT needs it */
        for (size_t b = a + 1; b < k->notks; b++)
            if (k->otks[a].id == k->otks[b].id) {
                j->why = "duplicate one-time prekey id";
                return PL_STORE_EINVAL;
            }
    pg_arr up = {0};                             /* the ids uploaded: they replace, not add */
    pg_arr_start(&up, PG_INT8);
    for (size_t i = 0; i < k->notks; i++) pg_arr_i64(&up, k->otks[i].id);
    pg_params l = {0}, p = {0};                  /* the lock, then the state: one round trip */
    pg_param_i64(&l, j->id);
    pg_param_i64(&l, j->user);
    pg_param_i64(&l, now);
    pg_param_i64(&p, j->id);
    pg_param_arr(&p, &up);
    int rc;
    int ls = pg_w_send(s, W_KEYS_LOGIN_LOCK, &l, 1), ss = ls < 0 ? ls : pg_w_send(s, W_KEYS_STATE, &p, 1);
    pg_arr_free(&up);
    if (ss < 0) return W_LOST;
    if ((rc = pg_w_sync(s)) != PL_STORE_OK) return rc;
    if (PQntuples(s->w.res[ls]) != 1) {
        j->why = "no such device";
        return PL_STORE_ENOTFOUND;
    }
    PGresult *r = s->w.res[ss];
    int had = !pg_null(r, 0, 0);
    int changed = !had || (k->identity && strcmp(PQgetvalue(r, 0, 0), k->identity) != 0);
    int64_t held = k->replace_otks ? 0 : pg_i64(r, 0, 1);
    if (!had && !k->identity) {
        j->why = "upload the identity key and signed prekey first";
        return PL_STORE_EINVAL;
    }
    if (held + (int64_t)k->notks > PL_KEYS_OTK_HELD) {
        j->why = "too many one-time prekeys held";
        return PL_STORE_EINVAL;
    }
    int sp = pg_w_send(s, W_SAVEPOINT, NULL, 0);
    if (sp < 0) return W_LOST;
    if (k->identity) {
        pg_params d = {0};
        pg_param_i64(&d, j->id);
        pg_param_i64(&d, j->user);
        pg_param_text(&d, k->identity);
        pg_param_i64(&d, k->spk_id);
        pg_param_text(&d, k->spk);
        pg_param_text(&d, k->spk_sig);
        pg_param_i64(&d, now);
        if (pg_w_send(s, W_KEYS_DEVICE, &d, 0) < 0) return W_LOST;
    }
    pg_params dev = {0};
    pg_param_i64(&dev, j->id);
    if (k->replace_otks && pg_w_send(s, W_KEYS_DROP, &dev, 0) < 0) return W_LOST;
    pg_arr ids = {0}, keys = {0};
    if (k->notks) {
        pg_arr_start(&ids, PG_INT8);
        pg_arr_start(&keys, PG_TEXT);
        for (size_t i = 0; i < k->notks; i++) {
            pg_arr_i64(&ids, k->otks[i].id);
            pg_arr_bytes(&keys, k->otks[i].key, strlen(k->otks[i].key));
        }
        pg_params a = {0};
        pg_param_i64(&a, j->id);
        pg_param_arr(&a, &ids);
        pg_param_arr(&a, &keys);
        rc = pg_w_send(s, W_KEYS_ADD, &a, 0);
        pg_arr_free(&ids);
        pg_arr_free(&keys);
        if (rc < 0) return W_LOST;
    }
    int cs = pg_w_send(s, W_KEYS_COUNT, &dev, 1);
    if (cs < 0 || pg_w_send(s, W_RELEASE, NULL, 0) < 0) return W_LOST;
    if ((rc = pg_w_sync(s)) != PL_STORE_OK) return pg_sp_failed(s, j, sp, rc);
    j->out_id = pg_i64(s->w.res[cs], 0, 0);
    j->created = changed;
    return PL_STORE_OK;
}

static int k_delete(pg_store *s, pl_job *j) {
    pg_params p = {0};
    pg_param_i64(&p, j->id);
    pg_param_i64(&p, j->user);
    int rc;
    PGresult *r = pg_w_query(s, W_KEYS_DELETE, &p, &rc);
    if (!r) return rc;
    j->created = pg_i64(r, 0, 0) > 0;
    return PL_STORE_OK;
}

static int k_claim(pg_store *s, pl_job *j, int64_t now) {
    pg_params p = {0};
    pg_param_i64(&p, j->user);
    pg_param_i64(&p, j->peer);
    int rc;
    PGresult *r = pg_w_query(s, W_KEYS_SHARES, &p, &rc);
    if (!r) return rc;
    if (PQgetvalue(r, 0, 0)[0] != 't') {
        j->why = "no such user, or no conversation shared with it";
        return PL_STORE_ENOTFOUND;
    }
    pg_params q = {0};
    pg_param_i64(&q, j->peer);
    pg_param_i64(&q, now);
    pg_params l = {0};
    pg_param_i64(&l, j->peer);
    int sp = pg_w_send(s, W_SAVEPOINT, NULL, 0);
    int ls = sp < 0 ? sp : pg_w_send(s, W_KEYS_CLAIM_LOCK, &l, 0);
    int cs = ls < 0 ? ls : pg_w_send(s, W_KEYS_CLAIM, &q, 1);
    if (cs < 0 || pg_w_send(s, W_RELEASE, NULL, 0) < 0) return W_LOST;
    if ((rc = pg_w_sync(s)) != PL_STORE_OK) return pg_sp_failed(s, j, sp, rc);
    device_rows(s->w.res[cs], j);
    return PL_STORE_OK;
}

/* CONV_E2EE (mark) and DEVICES_ANNOUNCE, under the conversation's lock. */
static int k_conv(pg_store *s, pl_job *j, int64_t now) {
    int role = 0, rc;
    if ((rc = pg_member_role(s, j->conv, j->user, &role)) != PL_STORE_OK) return rc;
    pg_conv *e = pg_conv_find(s, j->conv);                 /* after a sync */
    if (!e || role == PL_ROLE_NONE) return PL_STORE_ENOTFOUND;
    j->out_id = j->conv;
    int mark = j->op == PL_JOB_CONV_E2EE;
    if (mark) {
        if (e->kind != PL_CONV_DIRECT && role != PL_ROLE_ADMIN) {     /* a group or a channel */
            j->why = "admins only";
            return PL_STORE_EFORBID;
        }
        if (e->e2ee) return PL_STORE_OK;                   /* already: no event */
        if (e->blocked) {                                  /* store.h invariant 14 */
            j->why = "blocked";
            return PL_STORE_EFORBID;
        }
    } else if (!e->e2ee || e->blocked) {
        return PL_STORE_OK;                                /* nothing to say there (a block: audit L4) */
    }
    int64_t subject = mark ? 0 : j->user;
    pg_params c = {0};
    pg_param_i64(&c, j->conv);
    rc = pg_write_and_append(s, j, e, mark ? W_CONV_E2EE : -1, &c, PL_EV_E2EE, subject,
                             pl_store__data_e2ee(subject), now);
    if (rc == PL_STORE_OK && mark) e->e2ee = 1;
    return rc;
}

int pg_job_e2ee(pg_store *s, pl_job *j, int64_t now) {
    switch (j->op) {
    case PL_JOB_KEYS_UPLOAD: return k_upload(s, j, now);
    case PL_JOB_KEYS_DELETE: return k_delete(s, j);
    case PL_JOB_KEYS_CLAIM:  return k_claim(s, j, now);
    case PL_JOB_CONV_E2EE:
    case PL_JOB_DEVICES_ANNOUNCE: return k_conv(s, j, now);
    default: return PL_STORE_EINVAL;
    }
}
