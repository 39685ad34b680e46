/* store_sqlite_media.c — media rows in the SQLite backend (store.h
 * pl_media, PL_JOB_MEDIA_*, PL_READ_MEDIA_GET).
 *
 * Owns: the SQL of the tables media and media_refs. Media jobs are rare
 * next to messages: their statements are prepared on use, not kept. The
 * quota check and the insert run in the writer's batch, so two uploads of
 * one user racing each other cannot both pass a quota only one fits.
 * Does not own: the bytes (media/blob.c), what a kind or a type means
 * (media/media.c).
 */
#include "sqlite_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/alloc.h"
#include "../core/log.h"

#define MEDIA_COLS "id, owner, sha256, size, mime, kind, name, created, width, height," \
                   " coalesce(placeholder, ''), coalesce(thumb_sha, '')"

static void copy_text(sqlite3_stmt *st, int i, char *out, size_t cap) {
    const unsigned char *t = sqlite3_column_text(st, i);
    snprintf(out, cap, "%s", t ? (const char *)t : "");
}

static void media_row(sqlite3_stmt *st, pl_media *m) {
    memset(m, 0, sizeof *m);
    m->id = sqlite3_column_int64(st, 0);
    m->owner = sqlite3_column_int64(st, 1);
    copy_text(st, 2, m->sha256, sizeof m->sha256);
    m->size = sqlite3_column_int64(st, 3);
    copy_text(st, 4, m->mime, sizeof m->mime);
    m->kind = sqlite3_column_int(st, 5);
    copy_text(st, 6, m->name, sizeof m->name);
    m->created = sqlite3_column_int64(st, 7);
    m->width = sqlite3_column_int(st, 8);
    m->height = sqlite3_column_int(st, 9);
    copy_text(st, 10, m->placeholder, sizeof m->placeholder);
    copy_text(st, 11, m->thumb_sha, sizeof m->thumb_sha);
}

static sqlite3_stmt *prep(sqlite3 *db, const char *sql) {
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
        pl_log(PL_LOG_ERROR, 0, "store: media statement failed to prepare", "\"err\":\"%s\"",
               sqlite3_errmsg(db));
        sqlite3_finalize(st);
        return NULL;
    }
    return st;
}

static int job_create(sq_store *s, pl_job *j, int64_t now) {
    const pl_media *m = j->media_in;
    if (!m || m->id < 0 || m->owner <= 0 || m->size < 0) return PL_STORE_EINVAL;
    sqlite3_stmt *st;
    if (j->expires > 0) {
        if (!(st = prep(s->wdb, "SELECT coalesce(sum(size), 0) FROM media WHERE owner = ?1"))) return W_FATAL;
        sqlite3_bind_int64(st, 1, m->owner);
        int64_t used = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
        sqlite3_finalize(st);
        if (used + m->size > j->expires) {
            j->why = "quota";
            return PL_STORE_EFORBID;
        }
    }
    if (m->id == 0) return PL_STORE_OK;      /* a resumable upload's reservation: no row */
    if (!(st = prep(s->wdb, "INSERT INTO media(id, owner, sha256, size, mime, kind, name, created, gc_after,"
                            " width, height, placeholder, thumb_sha)"
                            " VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8, ?9, ?10, nullif(?11, ''), nullif(?12, ''))")))
        return W_FATAL;
    sqlite3_bind_int(st, 9, m->width);
    sqlite3_bind_int(st, 10, m->height);
    sqlite3_bind_text(st, 11, m->placeholder, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 12, m->thumb_sha, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 1, m->id);
    sqlite3_bind_int64(st, 2, m->owner);
    sqlite3_bind_text(st, 3, m->sha256, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, m->size);
    sqlite3_bind_text(st, 5, m->mime, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 6, m->kind);
    sqlite3_bind_text(st, 7, m->name, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 8, now);
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc == SQLITE_CONSTRAINT) return PL_STORE_ECONFLICT;    /* the id is taken */
    if (rc != SQLITE_DONE) return W_FATAL;
    j->out_id = m->id;
    return PL_STORE_OK;
}

static int job_thumb(sq_store *s, pl_job *j) {
    const pl_media *m = j->media_in;
    if (!m) return PL_STORE_EINVAL;
    sqlite3_stmt *st = prep(s->wdb, "UPDATE media SET width = ?1, height = ?2, placeholder = ?3,"
                                    " thumb_sha = nullif(?4, '') WHERE id = ?5");
    if (!st) return W_FATAL;
    sqlite3_bind_int(st, 1, m->width);
    sqlite3_bind_int(st, 2, m->height);
    sqlite3_bind_text(st, 3, m->placeholder, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, m->thumb_sha, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 5, m->id);
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) return W_FATAL;
    return sqlite3_changes(s->wdb) ? PL_STORE_OK : PL_STORE_ENOTFOUND;
}

static void add_sha(pl_job *j, size_t *cap, const char *sha) {
    for (size_t i = 0; i < j->nmedia; i++)
        if (strcmp(j->media[i].sha256, sha) == 0) return;
    if (j->nmedia == *cap) {
        *cap = *cap ? *cap * 2 : 16;
        j->media = pl_realloc(j->media, *cap * sizeof *j->media);
    }
    pl_media *m = &j->media[j->nmedia++];
    memset(m, 0, sizeof *m);
    snprintf(m->sha256, sizeof m->sha256, "%s", sha);
}

/* Deletes the garbage rows, then keeps the blobs no row names any more. */
static int job_gc(sq_store *s, pl_job *j) {
    int limit = j->limit > 0 ? j->limit : 1000;
    sqlite3_stmt *st = prep(s->wdb, "DELETE FROM media WHERE id IN (SELECT m.id FROM media m"
                                    " WHERE m.gc_after < ?1 AND NOT EXISTS (SELECT 1 FROM media_refs r"
                                    " WHERE r.media_id = m.id) LIMIT ?2)"
                                    " RETURNING sha256, coalesce(thumb_sha, '')");
    if (!st) return W_FATAL;
    sqlite3_bind_int64(st, 1, j->expires);
    sqlite3_bind_int(st, 2, limit);
    size_t cap = 0;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        for (int c = 0; c < 2; c++) {
            const unsigned char *t = sqlite3_column_text(st, c);
            if (t && t[0]) add_sha(j, &cap, (const char *)t);
        }
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) return W_FATAL;
    if (!j->nmedia) return PL_STORE_OK;
    if (!(st = prep(s->wdb, "SELECT 1 FROM media WHERE sha256 = ?1 OR thumb_sha = ?1 LIMIT 1"))) return W_FATAL;
    size_t keep = 0;
    for (size_t i = 0; i < j->nmedia; i++) {
        sqlite3_bind_text(st, 1, j->media[i].sha256, -1, SQLITE_STATIC);
        rc = sqlite3_step(st);
        sqlite3_reset(st);
        if (rc == SQLITE_DONE) j->media[keep++] = j->media[i];   /* nobody names it */
        else if (rc != SQLITE_ROW) { sqlite3_finalize(st); return W_FATAL; }
    }
    sqlite3_finalize(st);
    j->nmedia = keep;
    return PL_STORE_OK;
}

int sq_job_media(sq_store *s, pl_job *j, int64_t now) {
    switch (j->op) {
    case PL_JOB_MEDIA_CREATE: return job_create(s, j, now);
    case PL_JOB_MEDIA_THUMB:  return job_thumb(s, j);
    case PL_JOB_MEDIA_GC:     return job_gc(s, j);
    default:                  return PL_STORE_EINVAL;
    }
}

static int read_owned(sq_reader *r, pl_job *j) {
    sqlite3_stmt *st = prep(r->db, "SELECT " MEDIA_COLS " FROM media WHERE id = ?1 AND owner = ?2");
    if (!st) return PL_STORE_EUNAVAIL;
    if (j->nids) j->media = pl_calloc(j->nids, sizeof *j->media);
    int rc = SQLITE_DONE;
    for (size_t i = 0; i < j->nids; i++) {
        sqlite3_bind_int64(st, 1, j->ids[i]);
        sqlite3_bind_int64(st, 2, j->user);
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) media_row(st, &j->media[j->nmedia++]);
        sqlite3_reset(st);
        if (rc != SQLITE_ROW && rc != SQLITE_DONE) break;
    }
    sqlite3_finalize(st);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? PL_STORE_OK : PL_STORE_EUNAVAIL;
}

int sq_read_media(sq_reader *r, pl_job *j) {
    if (j->op == PL_READ_MEDIA_LIST) return read_owned(r, j);
    sqlite3_stmt *st = prep(r->db, "SELECT " MEDIA_COLS " FROM media m WHERE m.id = ?1 AND"
                                   " (?2 = 0 OR m.owner = ?2 OR EXISTS (SELECT 1 FROM media_refs x"
                                   "  JOIN members b ON b.conv_id = x.conv_id AND b.user_id = ?2"
                                   "  WHERE x.media_id = m.id AND x.seq >= b.joined_seq))");
    if (!st) return PL_STORE_EUNAVAIL;
    sqlite3_bind_int64(st, 1, j->id);
    sqlite3_bind_int64(st, 2, j->user);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        j->media = pl_calloc(1, sizeof *j->media);
        media_row(st, j->media);
        j->nmedia = 1;
    }
    sqlite3_finalize(st);
    if (rc == SQLITE_ROW) return PL_STORE_OK;
    return rc == SQLITE_DONE ? PL_STORE_ENOTFOUND : PL_STORE_EUNAVAIL;
}
