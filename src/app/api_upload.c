/* api_upload.c — media uploads over REST (docs/protocol.md "Media"): a
 * single POST /api/v1/media, and resumable ones (/api/v1/media/uploads...)
 * created, resumed with PATCH, asked where they stand and deleted.
 *
 * Owns: the upload pipeline (up_op and its thread-pool steps), the reserve
 * checks, thumbnails of uploaded images, resumable uploads' files and
 * locks, and the answers and logs of an upload's I/O failures.
 * Does not own: the routes, the module's state M and downloads
 * (api_media.c), HTTP streaming (http/server.c), policy (media/media.c),
 * bytes on disk (media/blob.c), rows (store/).
 *
 * An upload (one POST, or the last PATCH of a resumable one):
 *
 *   head: auth, limits --ROOM (thread pool: the reserve; a POST's temp file)
 *     --body_start--> chunk --WRITE (thread pool: the reserve, write)--> body_next ...
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
 *      head until its op is freed (session_lock); another gets 409 conflict,
 *      and so does a DELETE (pl_blob_upload_drop takes the same lock).
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
#include "api_media_int.h"

#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../core/alloc.h"
#include "../core/clock.h"
#include "../core/log.h"
#include "../http/file.h"
#include "../media/blob.h"
#include "../media/media.h"
#include "../media/thumb.h"

#define SNIFF_BYTES   8192
#define UPLOADS_MAX   16     /* resumable uploads in progress per user */

/* 1 if an I/O error (-errno) means the disk is full: 507, not 503. */
static int io_full(int err) { return err == -ENOSPC || err == -EDQUOT; }

/* Answers an I/O failure (invariant 6): err (-errno) ENOSPC or EDQUOT is
 * 507 insufficient_storage, anything else 503 unavailable with
 * Retry-After: 1 and msg. extra: more header lines (or NULL). */
static void io_answer(pl_http_ctx *ctx, int err, const char *msg, const char *extra) {
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
static void io_log(const pl_http_ctx *ctx, const char *step, int err, const char *uid, int64_t media,
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

typedef struct up_op {
    pl_job       job;          /* first: store callbacks get &job            */
    pl_http_ctx *ctx;
    uv_work_t    work;
    int          resumable;    /* PATCH of uploads/<uid>                     */
    char         uid[33];
    char         path[1200];   /* the file being written                     */
    int          fd;
    int          lock;         /* PATCH: holds the upload's lock (session_lock) */
    int          locked;       /* ... taken: offset is where the upload stands */
    uint8_t     *chunk;        /* the chunk being written (owned, reused)    */
    size_t       chunk_len, chunk_cap;
    int          fin;
    int          err;          /* work result: 0 or -errno                   */
    const char  *step;         /* ... the step that failed (for the log)     */
    size_t       wrote;        /* w_write: bytes of the chunk written        */
    int64_t      avail;        /* free bytes pl_blob_room saw (-1 unknown)   */
    int64_t      offset;       /* bytes in the file before this request (a
                                * PATCH: and its chunks written so far)     */
    int64_t      length;       /* resumable: the declared total              */
    int64_t      need;         /* the body's length (its Content-Length)     */
    int64_t      owner;        /* the caller (ctx->user, for the thread pool) */
    int64_t      pending;      /* declared lengths of the owner's other
                                * resumable uploads in progress (the quota) */
    int          npending;     /* ... how many                               */
    char         declared[128];
    char         want_sha[65];
    int          status;       /* finalize's refusal: status, code, message  */
    const char  *code, *msg;
    pl_media     m;
} up_op;

static void up_free(up_op *op) {
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
static void up_fail(up_op *op, int status, const char *code, const char *msg) {
    up_drop_temp(op);
    pl_http_error(op->ctx, status, code, msg);
    up_free(op);
}

/* up_fail for an I/O failure (-errno) in step (invariants 5, 6): logged;
 * a PATCH's answer says where its upload stands (Upload-Offset). */
static void up_io_fail(up_op *op, const char *step, int err) {
    char extra[64] = "";
    up_drop_temp(op);
    io_log(op->ctx, step, err, op->resumable ? op->uid : NULL, op->m.id, op->avail);
    if (op->locked) snprintf(extra, sizeof extra, "Upload-Offset: %lld\r\n", (long long)op->offset);
    io_answer(op->ctx, err, "the server cannot store the upload now; try again", extra);
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
static void up_discard(up_op *op) {
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
    pl_job_release(&op->job);
    memset(&op->job, 0, sizeof op->job);
    op->job.op = PL_JOB_MEDIA_CREATE;
    op->job.done = created;
    op->job.data = op;
    op->job.media_in = &op->m;
    /* the quota less what the owner's other uploads in progress reserve
     * (> 0: after_finalize refused the upload that did not fit) */
    op->job.expires = A.cfg->media_quota_mb ? (int64_t)A.cfg->media_quota_mb * 1024 * 1024 - op->pending : 0;
    pl_store_submit(A.store, &op->job);
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

static up_op *up_new(pl_http_ctx *ctx) {
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
static int up_params(pl_http_ctx *ctx, up_op *op, char *name, size_t cap) {
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
static int up_size_ok(pl_http_ctx *ctx, const char *declared, int64_t len) {
    if (len > max_limit() || len > kind_limit(pl_media_kind_of(declared))) {
        pl_http_error(ctx, 413, "too_large", "larger than the limit for its kind");
        return 0;
    }
    return 1;
}

/* ROOM (thread pool): room for the whole body (invariant 5), then for a
 * single upload the temp file it goes to (a PATCH has its file). */
static void w_body_room(uv_work_t *w) {
    up_op *op = w->data;
    op->step = "reserve";
    if ((op->err = pl_blob_room(M.blobs, op->need, M.reserve, &op->avail)) || op->resumable) return;
    op->step = "create";
    op->err = pl_blob_temp(M.blobs, op->path, sizeof op->path, &op->fd);
}

/* Reads the body (nothing of it is read before: a client that sent
 * Expect: 100-continue gets its refusal instead of the 100). */
static void after_body_room(uv_work_t *w, int status) {
    up_op *op = w->data;
    if (op->err) {
        if (!op->resumable) op->path[0] = '\0';   /* nothing was made */
        up_io_fail(op, op->step, op->err);
        return;
    }
    pl_http_body_start(op->ctx, up_chunk, op);
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
    uv_queue_work(M.loop, &op->work, w_body_room, after_body_room);
}

/* ---- resumable uploads ------------------------------------------------------------- */

static int uid_ok(pl_str s) {
    if (s.n != 32) return 0;
    for (size_t i = 0; i < 32; i++)
        if (!((s.p[i] >= '0' && s.p[i] <= '9') || (s.p[i] >= 'a' && s.p[i] <= 'f'))) return 0;
    return 1;
}

/* Answers for a resumable upload whose files cannot be reached now
 * (err: -errno, not ENOENT; invariant 6): logged, 503. */
static void session_unavailable(pl_http_ctx *ctx, up_op *op, const char *step, int err) {
    io_log(ctx, step, err, op->uid, 0, -1);
    io_answer(ctx, err, "the upload cannot be reached now; try again", NULL);
}

/* Loads uploads/<uid>.json into op (and the data file's size into
 * op->offset); answers 404 and returns -1 unless it exists and is the
 * caller's, or 503 when its files cannot be read now. */
static int session_load(pl_http_ctx *ctx, up_op *op, pl_str uid) {
    if (!uid_ok(uid)) goto missing;
    memcpy(op->uid, uid.p, 32);
    op->uid[32] = '\0';
    snprintf(op->path, sizeof op->path, "%s/uploads/%s", pl_blob_root(M.blobs), op->uid);
    char meta[1300];
    snprintf(meta, sizeof meta, "%s.json", op->path);
    int fd = open(meta, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT) goto missing;
        session_unavailable(ctx, op, "open", -errno);
        return -1;
    }
    json_t *o = json_loadfd(fd, 0, NULL);
    close(fd);
    if (!o) goto missing;
    json_int_t owner = json_integer_value(json_object_get(o, "owner"));
    op->length = json_integer_value(json_object_get(o, "length"));
    snprintf(op->m.name, sizeof op->m.name, "%s", json_string_value(json_object_get(o, "name")) ?: "file");
    snprintf(op->declared, sizeof op->declared, "%s", json_string_value(json_object_get(o, "type")) ?: "");
    snprintf(op->want_sha, sizeof op->want_sha, "%s", json_string_value(json_object_get(o, "sha256")) ?: "");
    json_decref(o);
    struct stat st;
    if (owner != ctx->user) goto missing;
    if (stat(op->path, &st) != 0) {
        if (errno == ENOENT) goto missing;
        session_unavailable(ctx, op, "stat", -errno);
        return -1;
    }
    op->offset = st.st_size;
    op->resumable = 1;
    return 0;
missing:
    pl_http_error(ctx, 404, "not_found", "no such upload");
    return -1;
}

/* Answers with where a resumable upload stands: {upload_id, offset, length}. */
static void respond_state(pl_http_ctx *ctx, int status, const char *uid, int64_t offset,
                          int64_t length, const char *extra) {
    json_t *res = json_pack("{s:s,s:I,s:I}", "upload_id", uid, "offset", (json_int_t)offset,
                            "length", (json_int_t)length);
    char *body = json_dumps(res, JSON_COMPACT);
    json_decref(res);
    pl_http_respond(ctx, status, "application/json", body, strlen(body), extra);
    free(body);
}

/* POST /api/v1/media/uploads?length=N&name=&type=&sha256=
 *
 * An upload in progress reserves its whole length against its owner's
 * quota from here until it completes, fails or is swept (protocol.md
 * "Resumable uploads"), and an owner has at most UPLOADS_MAX of them:
 *
 *   head: params, kind limit --CREATE (thread pool: data file, .json,
 *   marker; count the owner's others)--> cap, quota less the others
 *   --PL_JOB_MEDIA_CREATE with id 0 (the owner's media + this length
 *   within what is left, in the writer's transaction)--> 201
 *
 * The files are made before the others are counted, so two creations
 * racing each other each count the other (both may be refused, never
 * both taken over the quota). Known limit: the marker is counted by
 * whoever reads the directory after it is made, so a plain upload whose
 * FINALIZE counted just before a creation made its marker may pass with
 * it; the excess is at most one upload and lasts until one of them ends. */
static void session_created(up_op *op) {
    char extra[160];
    snprintf(extra, sizeof extra, "Location: /api/v1/media/uploads/%s\r\nUpload-Offset: 0\r\n", op->uid);
    respond_state(op->ctx, 201, op->uid, 0, op->length, extra);
    up_free(op);
}

/* -errno of a failed call that may not have set errno (jansson's). */
static int neg_errno(void) { return errno ? -errno : -EIO; }

/* CREATE (thread pool): room for the whole length (invariant 5), the data
 * file, its .json, the owner's marker; then the owner's others counted. */
static void w_session_create(uv_work_t *w) {
    up_op *op = w->data;
    char meta[1300];
    op->step = "reserve";
    if ((op->err = pl_blob_room(M.blobs, op->length, M.reserve, &op->avail))) return;
    op->step = "create";
    int fd = open(op->path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        op->err = -errno;
        return;
    }
    close(fd);
    snprintf(meta, sizeof meta, "%s.json", op->path);
    json_t *o = json_pack("{s:I,s:I,s:s,s:s,s:s}", "owner", (json_int_t)op->owner, "length",
                          (json_int_t)op->length, "name", op->m.name, "type", op->declared, "sha256", op->want_sha);
    errno = 0;
    fd = open(meta, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0 || json_dumpfd(o, fd, JSON_COMPACT) != 0) op->err = neg_errno();
    if (fd >= 0 && close(fd) != 0 && !op->err) op->err = neg_errno();
    json_decref(o);
    if (!op->err) op->err = pl_blob_upload_mark(M.blobs, op->owner, op->uid, op->length);
    if (!op->err) op->npending = pl_blob_uploads_of(M.blobs, op->owner, op->uid, &op->pending);
}

static void session_reserved(pl_job *j) {
    up_op *op = j->data;
    if (j->result) {
        up_discard(op);
        if (j->result == PL_STORE_EFORBID) up_fail(op, 413, "quota", "the storage quota would be exceeded");
        else {
            api_store_error(op->ctx, j->result, "could not reserve the upload");
            up_free(op);
        }
        return;
    }
    session_created(op);
}

static void after_session_create(uv_work_t *w, int status) {
    up_op *op = w->data;
    int64_t quota = (int64_t)A.cfg->media_quota_mb * 1024 * 1024;
    if (op->err) {                           /* what was made goes */
        up_discard(op);
        up_io_fail(op, op->step, op->err);
        return;
    }
    if (op->npending >= UPLOADS_MAX) {
        char msg[120];
        snprintf(msg, sizeof msg, "too many uploads in progress (%d): complete one, or wait until one is dropped",
                 UPLOADS_MAX);
        up_discard(op);
        up_fail(op, 413, "quota", msg);
        return;
    }
    if (quota > 0 && op->pending + op->length > quota) {
        up_discard(op);
        up_fail(op, 413, "quota", "the storage quota would be exceeded");
        return;
    }
    if (quota == 0) {
        session_created(op);
        return;
    }
    if (!A.store) {
        up_discard(op);
        up_fail(op, 503, "unavailable", "shutting down");
        return;
    }
    pl_job_release(&op->job);
    memset(&op->job, 0, sizeof op->job);
    op->m.id = 0;                            /* the quota only, no row */
    op->m.owner = op->owner;
    op->m.size = op->length;
    op->job.op = PL_JOB_MEDIA_CREATE;
    op->job.done = session_reserved;
    op->job.data = op;
    op->job.media_in = &op->m;
    op->job.expires = quota - op->pending;
    pl_store_submit(A.store, &op->job);
}

void h_session_create(pl_http_ctx *ctx) {
    up_op *op = up_new(ctx);
    int64_t len = 0;
    if (up_params(ctx, op, op->m.name, sizeof op->m.name)) { up_free(op); return; }
    if (api_query_int(ctx, "length", &len) || len <= 0) {
        char given[8];
        pl_http_error(ctx, 400, "bad_request",
                      pl_http_query_get(ctx->req.query, "length", given, sizeof given)
                          ? "length (the file's size in bytes) must be 1 to 2^53 - 1, digits without a leading zero"
                          : "length (the file's size in bytes) is required");
        up_free(op);
        return;
    }
    if (!up_size_ok(ctx, op->declared, len)) { up_free(op); return; }
    uint8_t r[16];
    randombytes_buf(r, sizeof r);
    sodium_bin2hex(op->uid, sizeof op->uid, r, sizeof r);
    snprintf(op->path, sizeof op->path, "%s/uploads/%s", pl_blob_root(M.blobs), op->uid);
    op->resumable = 1;
    op->length = len;
    uv_queue_work(M.loop, &op->work, w_session_create, after_session_create);
}

/* HEAD/GET .../uploads/{uid}: where it stands. */
void h_session_get(pl_http_ctx *ctx, pl_str uid) {
    up_op *op = up_new(ctx);
    if (session_load(ctx, op, uid)) { up_free(op); return; }
    char extra[96];
    snprintf(extra, sizeof extra, "Upload-Offset: %lld\r\nUpload-Length: %lld\r\n", (long long)op->offset,
             (long long)op->length);
    if (ctx->req.method == PL_HTTP_HEAD) {
        pl_http_respond(ctx, 204, NULL, NULL, 0, extra);
    } else {
        respond_state(ctx, 200, op->uid, op->offset, op->length, extra);
    }
    up_free(op);
}

/* DROP (thread pool): the upload's files and marker, under its lock. */
static void w_session_drop(uv_work_t *w) {
    up_op *op = w->data;
    op->err = pl_blob_upload_drop(M.blobs, op->owner, op->uid, op->length);
}

static void after_session_drop(uv_work_t *w, int status) {
    up_op *op = w->data;
    if (!op->err) pl_http_respond(op->ctx, 204, NULL, NULL, 0, NULL);
    else if (op->err == -ENOENT) pl_http_error(op->ctx, 404, "not_found", "no such upload");
    else if (op->err == -EBUSY) pl_http_error(op->ctx, 409, "conflict", "a PATCH of this upload is in progress");
    else session_unavailable(op->ctx, op, "drop", op->err);
    up_free(op);
}

/* DELETE .../uploads/{uid}: its owner abandons an upload in progress; its
 * bytes and its reservation of the quota go at once (not after
 * --media-gc-grace). 404 as GET answers (not the caller's, completed,
 * unknown); 409 while a PATCH holds it (invariant 4). */
void h_session_delete(pl_http_ctx *ctx, pl_str uid) {
    up_op *op = up_new(ctx);
    if (session_load(ctx, op, uid)) { up_free(op); return; }
    uv_queue_work(M.loop, &op->work, w_session_drop, after_session_drop);
}

/* Takes the upload's lock (invariant 4): an exclusive OFD lock (owned by
 * the open file, not the process, so two PATCHes in one process conflict
 * as well as two nodes) on its data file, opened into op->fd for the
 * writes, with op->lock a second descriptor of the same open file that
 * keeps the lock when finalize closes op->fd. The kernel drops the lock
 * with the last of the two, in up_free, however the PATCH ends (answered,
 * client gone, timed out, failed). Sets op->offset to the file's size
 * under the lock (op->locked). 0, or -1 after answering (404: the upload
 * was completed or dropped since session_load; 409 conflict; 503: its file
 * cannot be opened now); the caller frees op. */
static int session_lock(pl_http_ctx *ctx, up_op *op) {
    op->fd = open(op->path, O_WRONLY | O_APPEND | O_CLOEXEC);
    if (op->fd < 0) {
        if (errno == ENOENT) goto missing;
        session_unavailable(ctx, op, "open", -errno);
        return -1;
    }
    op->lock = fcntl(op->fd, F_DUPFD_CLOEXEC, 0);
    struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET};   /* the whole file */
    if (op->lock < 0 || fcntl(op->lock, F_OFD_SETLK, &fl) != 0) {
        if (op->lock >= 0 && (errno == EAGAIN || errno == EACCES))
            pl_http_error(ctx, 409, "conflict", "another PATCH of this upload is in progress");
        else
            session_unavailable(ctx, op, "lock", -errno);
        return -1;
    }
    struct stat held, now;                   /* still the upload's file, not a committed blob */
    if (fstat(op->fd, &held) != 0 || stat(op->path, &now) != 0) {
        if (errno == ENOENT) goto missing;
        session_unavailable(ctx, op, "stat", -errno);
        return -1;
    }
    if (held.st_ino != now.st_ino || held.st_dev != now.st_dev) goto missing;
    op->offset = held.st_size;
    op->locked = 1;
    return 0;
missing:
    pl_http_error(ctx, 404, "not_found", "no such upload");
    return -1;
}

/* PATCH .../uploads/{uid} with Upload-Offset: appends the body. */
void h_session_patch(pl_http_ctx *ctx, pl_str uid) {
    up_op *op = up_new(ctx);
    if (session_load(ctx, op, uid)) { up_free(op); return; }
    pl_str ov = pl_http_header_get(&ctx->req, "upload-offset");
    /* digits only ("abc", "-1", "0x0", "1e0", "0, 5" were read as 0), and
     * as every integer of the protocol no leading zero ("00") */
    int64_t at = !ov.p ? -1 : ov.n == 1 && ov.p[0] == '0' ? 0 : api_parse_id(ov.p, ov.n);
    int64_t cl = ctx->req.content_length;
    if (cl < 0) {                            /* as every body (protocol.md "HTTP limits") */
        op->path[0] = '\0';
        up_fail(op, 411, "length_required", "Content-Length is required");
        return;
    }
    const char *bad = !ov.p ? "Upload-Offset is required"
                    : at == 0 && !(ov.n == 1 && ov.p[0] == '0')
                        ? "Upload-Offset must be a byte offset: digits only, no leading zero"
                    : at < 0 ? "Upload-Offset is out of range" : NULL;
    if (bad) {
        op->path[0] = '\0';
        up_fail(op, 400, "bad_request", bad);
        return;
    }
    if (session_lock(ctx, op)) { up_free(op); return; }
    char extra[64];
    snprintf(extra, sizeof extra, "Upload-Offset: %lld\r\n", (long long)op->offset);
    if (at != op->offset) {
        char body[160];
        int n = snprintf(body, sizeof body, "{\"error\":{\"code\":\"offset_mismatch\",\"message\":"
                         "\"the upload is at another offset\",\"offset\":%lld}}", (long long)op->offset);
        pl_http_respond(ctx, 409, "application/json", body, (size_t)n, extra);
        up_free(op);
        return;
    }
    if (at + cl > op->length) {
        op->path[0] = '\0';
        up_fail(op, 413, "too_large", "more bytes than the upload's length");
        return;
    }
    op->need = cl;
    uv_queue_work(M.loop, &op->work, w_body_room, after_body_room);
}
