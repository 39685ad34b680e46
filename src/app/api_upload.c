/* api_upload.c — media uploads over REST (docs/protocol.md "Media"): the
 * pipeline of a single POST /api/v1/media and of every PATCH of a
 * resumable one (api_upload_resumable.c creates, resumes and drops those).
 *
 * Owns: the upload pipeline (up_op and its thread-pool steps), the reserve
 * checks, thumbnails of uploaded images, and the answers and logs of an
 * upload's I/O failures (api_upload_int.h has what the two files share).
 * Does not own: resumable uploads' files and locks (api_upload_resumable.c),
 * the routes, the module's state M and downloads (api_media.c), HTTP
 * streaming (http/server.c), policy (media/media.c), bytes on disk
 * (media/blob.c), rows (store/).
 *
 * An upload (one POST, or the last PATCH of a resumable one):
 *
 *   head: auth, limits --ROOM (thread pool: the reserve; a POST's temp file
 *     and the owner's uploads in progress) --a POST's quota by its
 *     Content-Length (PL_JOB_MEDIA_CREATE with id 0: no row)--> body_start
 *     --> chunk --WRITE (thread pool: the reserve, write)--> body_next ...
 *   last chunk --> FINALIZE (thread pool: SHA-256, sniff, kind limit, digest)
 *     --> PL_JOB_MEDIA_CREATE (quota, in the writer's transaction)
 *     --> COMMIT (thread pool: fsync, rename into the blob store) --> 201
 *
 * Invariants (api_media.c's downloads and collector rely on 2 and 6 too):
 *   1. One chunk in flight per upload: reading stays paused while it is
 *      written (server.h), so an upload costs one chunk of memory.
 *   2. The row exists before the blob is in place, so the collector (which
 *      only removes blobs no row names) never takes a blob an upload is
 *      committing; a failed commit leaves a row without bytes, served 404
 *      (api_media.c's serve).
 *   3. A failed upload removes its temp file; a resumable one keeps its
 *      bytes until committed, until its last PATCH fails (the data and
 *      its .json both go), or until the collector sweeps it after an hour
 *      without writes (pl_blob_sweep; never while a PATCH holds it).
 *      While its .json exists it reserves its declared length against
 *      its owner's quota (blob.h's marker, counted by FINALIZE of every
 *      upload of that owner and by the creation of another).
 *   4. One PATCH at a time per resumable upload, on every node sharing the
 *      media dir: a PATCH holds a lock on the upload's data file from its
 *      head until its op is freed (session_lock, api_upload_resumable.c);
 *      another gets 409 conflict, and so does a DELETE (pl_blob_upload_drop
 *      takes the same lock).
 *   5. Uploads leave --media-reserve MiB free on the media dir's disk (the
 *      database's too, by default): checked before the body is read (its
 *      Content-Length; a resumable upload's whole length at its creation)
 *      and before each chunk is written (uploads racing each other), and
 *      answered as a write that failed with ENOSPC: 507.
 *   6. The disk failing (EIO, EROFS, EACCES) or the process out of
 *      descriptors (EMFILE, ENFILE) is an outage, not a bug and not a
 *      missing file: 503 unavailable with Retry-After (io_answer), logged
 *      at most once a second per kind (MEDIA_LOG_EVERY_MS). Only ENOENT
 *      is 404.
 */
#include "api_upload_int.h"

#include <errno.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../core/alloc.h"
#include "../core/clock.h"
#include "../core/log.h"
#include "../http/file.h"
#include "../media/blob.h"
#include "../media/media.h"
#include "../media/thumb.h"

#define SNIFF_BYTES   8192

/* 1 if an I/O error (-errno) means the disk is full: 507, not 503. */
static int io_full(int err) { return err == -ENOSPC || err == -EDQUOT; }

/* Answers an I/O failure (invariant 6): err (-errno) ENOSPC or EDQUOT is
 * 507 insufficient_storage, anything else 503 unavailable with
 * Retry-After: 1 and msg. extra: more header lines (or NULL). */
void up_io_answer(pl_http_ctx *ctx, int err, const char *msg, const char *extra) {
    int full = io_full(err);
    char head[160];
    snprintf(head, sizeof head, "%s%s", full ? "" : "Retry-After: 1\r\n", extra ? extra : "");
    json_t *o = json_pack("{s:{s:s,s:s}}", "error", "code", full ? "insufficient_storage" : "unavailable",
                          "message", full ? "the server's disk is too full to take this upload" : msg);
    char *body = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    pl_http_respond(ctx, full ? 507 : 503, "application/json", body, strlen(body), head);
    free(body);
}

/* Logs an upload's I/O failure or refusal in step (rate-limited): the
 * errno, the user and the upload (uid) or media id; never a file name.
 * avail: the free bytes pl_blob_room found (-1 unknown). */
void up_io_log(const pl_http_ctx *ctx, const char *step, int err, const char *uid, int64_t media,
               int64_t avail) {
    int full = io_full(err);
    int64_t held;
    if (!pl_log_due(full ? &M.log_full : &M.log_io, MEDIA_LOG_EVERY_MS, pl_mono_ms(), &held)) return;
    char name[32], why[80], id[64] = "";
    uv_err_name_r(err, name, sizeof name);
    uv_strerror_r(err, why, sizeof why);
    if (uid && uid[0]) snprintf(id, sizeof id, ",\"upload\":\"%s\"", uid);
    else if (media) snprintf(id, sizeof id, ",\"media\":%lld", (long long)media);
    if (full)
        pl_log(PL_LOG_WARN, ctx->conn->id, "media: upload refused, the disk is too full",
               "\"step\":\"%s\",\"errno\":\"%s\",\"user\":%lld%s,\"free_bytes\":%lld,\"reserve_bytes\":%lld,"
               "\"held_back\":%lld", step, name, (long long)ctx->user, id, (long long)avail,
               (long long)M.reserve, (long long)held);
    else
        pl_log(PL_LOG_ERROR, ctx->conn->id, "media: upload failed on the disk",
               "\"step\":\"%s\",\"errno\":\"%s\",\"error\":\"%s\",\"user\":%lld%s,\"held_back\":%lld", step,
               name, why, (long long)ctx->user, id, (long long)held);
}

/* ---- limits ---------------------------------------------------------------------- */

static int64_t kind_limit(int kind) {
    switch (kind) {
    case PL_MEDIA_IMAGE: return A.cfg->media_max_image;
    case PL_MEDIA_VIDEO: return A.cfg->media_max_video;
    case PL_MEDIA_AUDIO: return A.cfg->media_max_audio;
    default:             return A.cfg->media_max_file;
    }
}

static int64_t max_limit(void) {
    int64_t m = 0;
    for (int k = PL_MEDIA_IMAGE; k <= PL_MEDIA_FILE; k++)
        if (kind_limit(k) > m) m = kind_limit(k);
    return m;
}

/* ---- uploads ------------------------------------------------------------------- */

void up_free(up_op *op) {
    if (op->fd >= 0) close(op->fd);
    if (op->lock >= 0) close(op->lock);      /* the next PATCH may go on */
    pl_job_release(&op->job);
    free(op->chunk);
    free(op);
}

/* Closes the file being written and removes a single upload's temp file
 * (a resumable upload keeps its bytes: invariant 3). */
static void up_drop_temp(up_op *op) {
    if (op->fd >= 0) { close(op->fd); op->fd = -1; }
    if (!op->resumable && op->path[0]) unlink(op->path);
}

/* Answers an error, removes a single upload's temp file, frees op. */
void up_fail(up_op *op, int status, const char *code, const char *msg) {
    up_drop_temp(op);
    pl_http_error(op->ctx, status, code, msg);
    up_free(op);
}

/* up_fail for an I/O failure (-errno) in step (invariants 5, 6): logged;
 * a PATCH's answer says where its upload stands (Upload-Offset). */
void up_io_fail(up_op *op, const char *step, int err) {
    char extra[64] = "";
    up_drop_temp(op);
    up_io_log(op->ctx, step, err, op->resumable ? op->uid : NULL, op->m.id, op->avail);
    if (op->locked) snprintf(extra, sizeof extra, "Upload-Offset: %lld\r\n", (long long)op->offset);
    up_io_answer(op->ctx, err, "the server cannot store the upload now; try again", extra);
    up_free(op);
}

static void up_chunk(pl_http_ctx *ctx, const uint8_t *p, size_t n, int fin, void *ud);

/* WRITE (thread pool): the chunk, unless it would eat into the reserve
 * (invariant 5: other uploads may have taken the room since the head's
 * check). op->wrote: how much of it went, also when a write failed. */
static void w_write(uv_work_t *w) {
    up_op *op = w->data;
    op->wrote = 0;
    op->err = pl_blob_room(M.blobs, (int64_t)op->chunk_len, M.reserve, &op->avail);
    op->step = op->err ? "reserve" : "write";
    while (!op->err && op->wrote < op->chunk_len) {
        ssize_t k = write(op->fd, op->chunk + op->wrote, op->chunk_len - op->wrote);
        if (k < 0 && errno != EINTR) op->err = -errno;
        else if (k > 0) op->wrote += (size_t)k;
    }
}

/* FINALIZE: digest, sniff, limits (thread pool). */
static void w_finalize(uv_work_t *w) {
    up_op *op = w->data;
    uint8_t head[SNIFF_BYTES];
    size_t hl = 0;
    char sniffed[128];
    op->status = 0;
    op->step = "sync";
    if (op->fd >= 0 && fdatasync(op->fd) != 0) op->err = -errno;
    if (op->fd >= 0) { close(op->fd); op->fd = -1; }
    if (op->err) return;
    op->step = "read back";
    if ((op->err = pl_blob_digest(op->path, op->m.sha256, &op->m.size, head, sizeof head, &hl))) return;
    pl_media_sniff(head, hl, sniffed, sizeof sniffed);
    pl_media_pick_type(op->declared, sniffed, op->m.mime, sizeof op->m.mime);
    op->m.kind = pl_media_kind_of(op->m.mime);
    if (op->m.size > kind_limit(op->m.kind)) {
        op->status = 413, op->code = "too_large", op->msg = "larger than the limit for its kind";
    } else if (op->want_sha[0] && strcmp(op->want_sha, op->m.sha256) != 0) {
        op->status = 400, op->code = "digest_mismatch", op->msg = "the content does not match the sha256 given";
    }
    if (op->status) unlink(op->path);
    else op->npending = pl_blob_uploads_of(M.blobs, op->owner, op->resumable ? op->uid : NULL, &op->pending);
}

static void w_commit(uv_work_t *w) {
    up_op *op = w->data;
    op->err = pl_blob_commit(M.blobs, op->path, op->m.sha256);
    if (!op->err && op->resumable) {
        char meta[1300];
        snprintf(meta, sizeof meta, "%s.json", op->path);
        unlink(meta);
        pl_blob_upload_unmark(M.blobs, op->owner, op->uid, op->length);
    }
}

/* ---- thumbnails (media/thumb.h) -----------------------------------------------
 *
 * Made on the work queue as the last step of an image upload, before its
 * row is written: the upload's answer, and so every message that attaches
 * it, carries width, height and placeholder from the start (clients reserve
 * space; no later event is needed). Blocks (libvips): thread pool only. */
static void make_thumb(const char *src, pl_media *m) {
    char tmp[1200], sha[65], err[160];
    int fd;
    if (pl_blob_temp(M.blobs, tmp, sizeof tmp, &fd)) return;
    close(fd);
    pl_thumb_info info;
    memset(&info, 0, sizeof info);
    int rc = pl_thumb_make(src, tmp, PL_THUMB_DEFAULT_SIDE, &info, err, sizeof err);
    if (rc == 0) {
        int64_t size;
        uint8_t head[4];
        size_t hl;
        if (pl_blob_digest(tmp, sha, &size, head, sizeof head, &hl) == 0 && pl_blob_commit(M.blobs, tmp, sha) == 0)
            memcpy(m->thumb_sha, sha, sizeof sha);
        snprintf(m->placeholder, sizeof m->placeholder, "%s", info.placeholder);
    } else {
        pl_log(PL_LOG_INFO, 0, "media: no thumbnail", "\"code\":%d,\"why\":\"%s\"", rc, pl_thumb_strerror(rc));
    }
    unlink(tmp);
    if (rc == 0 || rc == PL_THUMB_ETOOBIG) {
        m->width = info.width;
        m->height = info.height;
    }
}

static void after_commit(uv_work_t *w, int status) {
    up_op *op = w->data;
    if (op->err) {                           /* its row stays, without bytes (invariant 2) */
        up_io_fail(op, "commit", op->err);
        return;
    }
    pl_http_respond_json(op->ctx, 201, api_media_json(&op->m, 0));
    up_free(op);
}

/* A resumable upload is over: its metadata goes, then its owner's marker
 * (blob.h: it no longer counts against the quota). */
static void session_end(up_op *op) {
    char meta[1300];
    snprintf(meta, sizeof meta, "%s.json", op->path);
    unlink(meta);
    pl_blob_upload_unmark(M.blobs, op->owner, op->uid, op->length);
}

/* The upload is over without a blob: its bytes, and a resumable one's
 * metadata, go (invariant 3). */
void up_discard(up_op *op) {
    unlink(op->path);
    if (op->resumable) session_end(op);
}

static void created(pl_job *j) {
    up_op *op = j->data;
    if (j->result == PL_STORE_EFORBID) {
        up_discard(op);
        up_fail(op, 413, "quota", "the storage quota would be exceeded");
        return;
    }
    if (j->result) {
        up_discard(op);
        api_store_error(op->ctx, j->result, "could not record the file");
        up_free(op);
        return;
    }
    uv_queue_work(M.loop, &op->work, w_commit, after_commit);
}

static void w_up_thumb(uv_work_t *w);
static void after_up_thumb(uv_work_t *w, int status);
static void up_create(up_op *op);

static void after_finalize(uv_work_t *w, int status) {
    up_op *op = w->data;
    if (op->err) {                           /* a resumable upload stays, complete */
        up_io_fail(op, op->step, op->err);
        return;
    }
    if (op->status) {
        if (op->resumable) session_end(op);  /* the upload is over: its metadata too */
        op->path[0] = '\0';                  /* finalize removed it */
        up_fail(op, op->status, op->code, op->msg);
        return;
    }
    int64_t quota = (int64_t)A.cfg->media_quota_mb * 1024 * 1024;
    if (quota > 0 && op->pending + op->m.size > quota) {   /* uploads in progress hold the rest */
        up_discard(op);
        up_fail(op, 413, "quota", "the storage quota would be exceeded");
        return;
    }
    if (op->m.kind == PL_MEDIA_IMAGE) {      /* the thumbnail first: the row carries it */
        uv_queue_work(M.loop, &op->work, w_up_thumb, after_up_thumb);
        return;
    }
    up_create(op);
}

/* THUMB (thread pool): for an image, a thumbnail blob, its dimensions and
 * placeholder, before the row is written. A file libvips refuses is kept
 * without (a corrupt image is still a file the user sent). */
static void w_up_thumb(uv_work_t *w) {
    up_op *op = w->data;
    make_thumb(op->path, &op->m);
}

static void after_up_thumb(uv_work_t *w, int status) { up_create(w->data); }

/* PL_JOB_MEDIA_CREATE of op->m (id 0: the quota check only), what may
 * be stored for its owner in expires (0: no quota), answered to done. */
static void media_job(up_op *op, void (*done)(pl_job *), int64_t expires) {
    pl_job_release(&op->job);
    memset(&op->job, 0, sizeof op->job);
    op->job.op = PL_JOB_MEDIA_CREATE;
    op->job.done = done;
    op->job.data = op;
    op->job.media_in = &op->m;
    op->job.expires = expires;
    pl_store_submit(A.store, &op->job);
}

/* Writes the row (quota checked in the writer's transaction). */
static void up_create(up_op *op) {
    if (!A.store) {
        up_fail(op, 503, "unavailable", "shutting down");
        return;
    }
    randombytes_buf(&op->m.id, sizeof op->m.id);
    op->m.id = (int64_t)((uint64_t)op->m.id & (uint64_t)PL_JSON_INT_MAX);
    if (op->m.id == 0) op->m.id = 1;
    op->m.owner = op->ctx->user;
    op->m.created = pl_now_ms();
    /* the quota less what the owner's other uploads in progress reserve
     * (> 0: after_finalize refused the upload that did not fit) */
    media_job(op, created, A.cfg->media_quota_mb ? (int64_t)A.cfg->media_quota_mb * 1024 * 1024 - op->pending : 0);
}

static void after_write(uv_work_t *w, int status) {
    up_op *op = w->data;
    op->offset += (int64_t)op->wrote;
    if (op->err) {
        up_io_fail(op, op->step, op->err);
        return;
    }
    if (!op->fin) {
        pl_http_body_next(op->ctx);
        return;
    }
    if (op->resumable && op->offset < op->length) {  /* a part: say where we are */
        char extra[64];
        snprintf(extra, sizeof extra, "Upload-Offset: %lld\r\n", (long long)op->offset);
        pl_http_respond(op->ctx, 204, NULL, NULL, 0, extra);
        up_free(op);
        return;
    }
    uv_queue_work(M.loop, &op->work, w_finalize, after_finalize);
}

static void up_chunk(pl_http_ctx *ctx, const uint8_t *p, size_t n, int fin, void *ud) {
    up_op *op = ud;
    if (fin < 0) {                           /* the client went away */
        up_fail(op, 400, "aborted", "connection closed");
        return;
    }
    op->fin = fin;
    op->chunk_len = n;
    if (n > op->chunk_cap) {                 /* one buffer per upload, reused */
        free(op->chunk);
        op->chunk_cap = n < PL_HTTP_FILE_CHUNK ? PL_HTTP_FILE_CHUNK : n;
        op->chunk = pl_malloc(op->chunk_cap);
    }
    if (n) memcpy(op->chunk, p, n);
    op->work.data = op;
    uv_queue_work(M.loop, &op->work, w_write, after_write);
}

up_op *up_new(pl_http_ctx *ctx) {
    up_op *op = pl_calloc(1, sizeof *op);
    op->ctx = ctx;
    op->owner = ctx->user;
    op->fd = -1;
    op->lock = -1;
    op->avail = -1;
    op->job.data = op;
    op->work.data = op;
    return op;
}

/* name, type and sha256 from the query (type falls back to Content-Type);
 * 0, or -1 after answering 400. */
int up_params(pl_http_ctx *ctx, up_op *op, char *name, size_t cap) {
    char raw[1024], sha[80] = "";
    size_t rl = 0;                           /* %00 decoded: a NUL, dropped as a control */
    pl_http_query_getn(ctx->req.query, "name", raw, sizeof raw, &rl);
    pl_media_sanitize_name(raw, rl, name, cap);
    if (!pl_http_query_get(ctx->req.query, "type", op->declared, sizeof op->declared)) {
        pl_str ct = ctx->req.content_type;
        snprintf(op->declared, sizeof op->declared, "%.*s", (int)(ct.n < 127 ? ct.n : 127), ct.p ? ct.p : "");
    }
    if (pl_http_query_get(ctx->req.query, "sha256", sha, sizeof sha)) {
        for (char *q = sha; *q; q++)
            if (*q >= 'A' && *q <= 'F') *q = (char)(*q - 'A' + 'a');
        if (!pl_blob_sha_ok(sha)) {
            pl_http_error(ctx, 400, "bad_request", "sha256 must be 64 hex digits");
            return -1;
        }
        memcpy(op->want_sha, sha, 65);
    }
    return 0;
}

/* 413 when len is over what the declared type's kind (or any kind) may be. */
int up_size_ok(pl_http_ctx *ctx, const char *declared, int64_t len) {
    if (len > max_limit() || len > kind_limit(pl_media_kind_of(declared))) {
        pl_http_error(ctx, 413, "too_large", "larger than the limit for its kind");
        return 0;
    }
    return 1;
}

/* ROOM (thread pool): room for the whole body (invariant 5), then for a
 * single upload the temp file it goes to (a PATCH has its file). */
void up_w_body_room(uv_work_t *w) {
    up_op *op = w->data;
    op->step = "reserve";
    if ((op->err = pl_blob_room(M.blobs, op->need, M.reserve, &op->avail)) || op->resumable) return;
    op->step = "create";
    if ((op->err = pl_blob_temp(M.blobs, op->path, sizeof op->path, &op->fd))) return;
    op->npending = pl_blob_uploads_of(M.blobs, op->owner, NULL, &op->pending);
}

static void body_start(up_op *op) { pl_http_body_start(op->ctx, up_chunk, op); }

/* The store's answer to a single upload's quota check by its
 * Content-Length (up_after_body_room). */
static void quota_checked(pl_job *j) {
    up_op *op = j->data;
    if (j->result == PL_STORE_EFORBID) {
        up_fail(op, 413, "quota", "the storage quota would be exceeded");
    } else if (j->result) {
        up_drop_temp(op);
        api_store_error(op->ctx, j->result, "could not check the storage quota");
        up_free(op);
    } else {
        pl_job_release(&op->job);
        memset(&op->job, 0, sizeof op->job);
        body_start(op);
    }
}

/* Reads the body (nothing of it is read before: a client that sent
 * Expect: 100-continue gets its refusal instead of the 100). A single
 * upload is first checked against its owner's quota by its Content-Length
 * (the owner's media plus the resumable uploads in progress, as FINALIZE
 * and the row's write check again at the end): audit N3, a user at the
 * quota got `100 Continue` and sent the whole body, up to 100 MiB written
 * to a temp file, before its `413 quota`. */
void up_after_body_room(uv_work_t *w, int status) {
    up_op *op = w->data;
    if (op->err) {
        if (!op->resumable) op->path[0] = '\0';   /* nothing was made */
        up_io_fail(op, op->step, op->err);
        return;
    }
    int64_t quota = (int64_t)A.cfg->media_quota_mb * 1024 * 1024;
    if (op->resumable || quota <= 0) {
        body_start(op);
        return;
    }
    if (op->pending + op->need > quota) {
        up_fail(op, 413, "quota", "the storage quota would be exceeded");
        return;
    }
    if (!A.store) {
        up_fail(op, 503, "unavailable", "shutting down");
        return;
    }
    up_quota_check(op, op->need, quota, quota_checked);
}

/* Asks the store whether size more fits op's owner's quota beside the
 * uploads in progress (op->pending): PL_JOB_MEDIA_CREATE with id 0, the
 * quota only, no row; done gets PL_STORE_EFORBID when it does not. */
void up_quota_check(up_op *op, int64_t size, int64_t quota, void (*done)(pl_job *)) {
    op->m.id = 0;
    op->m.owner = op->owner;
    op->m.size = size;
    media_job(op, done, quota - op->pending);
}

/* POST /api/v1/media */
void h_upload(pl_http_ctx *ctx) {
    int64_t cl = ctx->req.content_length;
    if (cl < 0) {
        pl_http_error(ctx, 411, "length_required", "Content-Length is required");
        return;
    }
    if (cl == 0) {
        pl_http_error(ctx, 400, "bad_request", "an upload needs a body");
        return;
    }
    up_op *op = up_new(ctx);
    if (up_params(ctx, op, op->m.name, sizeof op->m.name) || !up_size_ok(ctx, op->declared, cl)) {
        up_free(op);
        return;
    }
    op->need = cl;
    uv_queue_work(M.loop, &op->work, up_w_body_room, up_after_body_room);
}
