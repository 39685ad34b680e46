/* api_upload_resumable.c — resumable media uploads over REST
 * (docs/protocol.md "Resumable uploads"): /api/v1/media/uploads created
 * (POST), asked where they stand (HEAD, GET), resumed (PATCH) and
 * abandoned (DELETE).
 *
 * Owns: resumable uploads' files (the data file and its .json), their
 * locks, the cap on uploads in progress per user and the reservation of
 * their declared length against the quota at creation.
 * Does not own: the pipeline a PATCH's body goes through, the answers and
 * logs of I/O failures (api_upload.c), the routes (api_media.c), the
 * marker and the sweep of abandoned uploads (media/blob.c).
 *
 * "invariant N" below is the upload pipeline's, numbered in api_upload.c.
 */
#include "api_upload_int.h"

#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../media/blob.h"

#define UPLOADS_MAX   16     /* resumable uploads in progress per user */

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
    up_io_log(ctx, step, err, op->uid, 0, -1);
    up_io_answer(ctx, err, "the upload cannot be reached now; try again", NULL);
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
    up_quota_check(op, op->length, quota, session_reserved);
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
                    : pl_http_header_count(&ctx->req, "upload-offset") > 1 ? "Upload-Offset is given twice"
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
    uv_queue_work(M.loop, &op->work, up_w_body_room, up_after_body_room);
}
