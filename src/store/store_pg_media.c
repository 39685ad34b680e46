/* store_pg_media.c — media rows in the PostgreSQL backend (store.h
 * pl_media, PL_JOB_MEDIA_*, PL_READ_MEDIA_GET).
 *
 * Owns: running the media statements (store_pg_stmts_w.c, _r.c: W_MEDIA_*,
 * R_MEDIA_GET) and turning their rows into pl_media. Each job is a single
 * statement or two that cannot fail on a client's input (names and types
 * arrive sanitized, valid UTF-8), so no savepoint is taken. The quota check
 * locks the owner's users row and then sums (W_MEDIA_LOCK, W_MEDIA_SUM:
 * two statements, so the sum sees what committed before the lock was
 * granted), so two nodes' uploads for one user are checked one after the
 * other.
 * Does not own: the bytes (media/blob.c).
 */
#include "pg_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/alloc.h"

static void copy_val(const PGresult *r, int row, int col, char *out, size_t cap) {
    snprintf(out, cap, "%s", PQgetisnull(r, row, col) ? "" : PQgetvalue(r, row, col));
}

static int job_create(pg_store *s, pl_job *j, int64_t now) {
    const pl_media *m = j->media_in;
    if (!m || m->id < 0 || m->owner <= 0 || m->size < 0 || !pg_utf8_ok(m->name) || !pg_utf8_ok(m->mime) ||
        !pg_utf8_ok(m->placeholder) || !pg_utf8_ok(m->thumb_sha))
        return PL_STORE_EINVAL;
    int rc;
    PGresult *r;
    if (j->expires > 0) {               /* the lock, then the sum: one round trip */
        pg_params q = {0};
        pg_param_i64(&q, m->owner);
        int ls = pg_w_send(s, W_MEDIA_LOCK, &q, 1), ss = ls < 0 ? ls : pg_w_send(s, W_MEDIA_SUM, &q, 1);
        if (ss < 0) return W_LOST;
        if ((rc = pg_w_sync(s)) != PL_STORE_OK) return rc;
        if (PQntuples(s->w.res[ls]) != 1) return PL_STORE_ENOTFOUND;      /* no such user */
        if (pg_i64(s->w.res[ss], 0, 0) + m->size > j->expires) {
            j->why = "quota";
            return PL_STORE_EFORBID;
        }
    }
    if (m->id == 0) return PL_STORE_OK;      /* a resumable upload's reservation: no row */
    pg_params p = {0};
    pg_param_i64(&p, m->id);
    pg_param_i64(&p, m->owner);
    pg_param_text(&p, m->sha256);
    pg_param_i64(&p, m->size);
    pg_param_text(&p, m->mime);
    pg_param_i64(&p, m->kind);
    pg_param_text(&p, m->name);
    pg_param_i64(&p, now);
    pg_param_i64(&p, m->width);
    pg_param_i64(&p, m->height);
    pg_param_text(&p, m->placeholder);
    pg_param_text(&p, m->thumb_sha);
    if (!(r = pg_w_query(s, W_MEDIA_INSERT, &p, &rc))) return rc;
    if (PQntuples(r) != 1) return PL_STORE_ECONFLICT;           /* the id is taken */
    j->out_id = m->id;
    return PL_STORE_OK;
}

static int job_thumb(pg_store *s, pl_job *j) {
    const pl_media *m = j->media_in;
    if (!m || !pg_utf8_ok(m->placeholder) || !pg_utf8_ok(m->thumb_sha)) return PL_STORE_EINVAL;
    pg_params p = {0};
    pg_param_i64(&p, m->width);
    pg_param_i64(&p, m->height);
    pg_param_text(&p, m->placeholder);
    pg_param_text(&p, m->thumb_sha);
    pg_param_i64(&p, m->id);
    int rc;
    PGresult *r = pg_w_query(s, W_MEDIA_THUMB, &p, &rc);
    if (!r) return rc;
    return PQntuples(r) == 1 ? PL_STORE_OK : PL_STORE_ENOTFOUND;
}

static int job_gc(pg_store *s, pl_job *j) {
    pg_params p = {0};
    pg_param_i64(&p, j->expires);
    pg_param_i64(&p, j->limit > 0 ? j->limit : 1000);
    int rc;
    PGresult *r = pg_w_query(s, W_MEDIA_GC, &p, &rc);
    if (!r) return rc;
    size_t n = (size_t)PQntuples(r);
    if (n) j->media = pl_calloc(n, sizeof *j->media);
    for (size_t i = 0; i < n; i++) copy_val(r, (int)i, 0, j->media[i].sha256, sizeof j->media[i].sha256);
    j->nmedia = n;
    return PL_STORE_OK;
}

int pg_job_media(pg_store *s, pl_job *j, int64_t now) {
    switch (j->op) {
    case PL_JOB_MEDIA_CREATE: return job_create(s, j, now);
    case PL_JOB_MEDIA_THUMB:  return job_thumb(s, j);
    case PL_JOB_MEDIA_GC:     return job_gc(s, j);
    default:                  return PL_STORE_EINVAL;
    }
}

static void media_row(const PGresult *res, int row, pl_media *m) {
    m->id = pg_i64(res, row, 0);
    m->owner = pg_i64(res, row, 1);
    copy_val(res, row, 2, m->sha256, sizeof m->sha256);
    m->size = pg_i64(res, row, 3);
    copy_val(res, row, 4, m->mime, sizeof m->mime);
    m->kind = (int)pg_i64(res, row, 5);
    copy_val(res, row, 6, m->name, sizeof m->name);
    m->created = pg_i64(res, row, 7);
    m->width = (int)pg_i64(res, row, 8);
    m->height = (int)pg_i64(res, row, 9);
    copy_val(res, row, 10, m->placeholder, sizeof m->placeholder);
    copy_val(res, row, 11, m->thumb_sha, sizeof m->thumb_sha);
}

int pg_read_media(pg_reader *r, pl_job *j) {
    pg_params p = {0};
    int rc;
    PGresult *res;
    if (j->op == PL_READ_MEDIA_LIST) {
        pg_arr a = {0};
        pg_arr_start(&a, PG_INT8);
        for (size_t i = 0; i < j->nids; i++) pg_arr_i64(&a, j->ids[i]);
        pg_param_arr(&p, &a);
        pg_param_i64(&p, j->user);
        res = pg_r_query(r, R_MEDIA_OWNED, &p, &rc);
        pg_arr_free(&a);
        if (!res) return rc;
        int n = PQntuples(res);
        if (n) j->media = pl_calloc((size_t)n, sizeof *j->media);
        for (int i = 0; i < n; i++) media_row(res, i, &j->media[i]);
        j->nmedia = (size_t)n;
        return PL_STORE_OK;
    }
    pg_param_i64(&p, j->id);
    pg_param_i64(&p, j->user);
    if (!(res = pg_r_query(r, R_MEDIA_GET, &p, &rc))) return rc;
    if (PQntuples(res) != 1) return PL_STORE_ENOTFOUND;
    j->media = pl_calloc(1, sizeof *j->media);
    j->nmedia = 1;
    media_row(res, 0, j->media);
    return PL_STORE_OK;
}
