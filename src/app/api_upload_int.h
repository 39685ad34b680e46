/* api_upload_int.h — shared by the upload files only: api_upload.c (the
 * pipeline: a single POST and the body of every PATCH) and
 * api_upload_resumable.c (resumable uploads' files and locks). The rest of
 * the media module uses api_media_int.h; the upload routes are declared
 * there, for api_media.c.
 */
#ifndef PL_API_UPLOAD_INT_H
#define PL_API_UPLOAD_INT_H

#include "api_media_int.h"

/* One upload request (a POST, or a resumable upload's creation, GET,
 * DELETE or PATCH), from its head until it is answered; owned by its
 * handler, then by the pipeline's steps, and freed by up_free. */
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

/* api_upload.c: the op, its answers and logs, and the pipeline's entry
 * (a PATCH's body goes through the same steps as a POST's). */
up_op *up_new(pl_http_ctx *ctx);
void   up_free(up_op *op);
void   up_fail(up_op *op, int status, const char *code, const char *msg);
void   up_io_fail(up_op *op, const char *step, int err);
void   up_discard(up_op *op);
/* Whether size more fits the owner's quota (less op->pending): a store job
 * answered to done, PL_STORE_EFORBID when it does not (no row written). */
void   up_quota_check(up_op *op, int64_t size, int64_t quota, void (*done)(pl_job *));
int    up_params(pl_http_ctx *ctx, up_op *op, char *name, size_t cap);
int    up_size_ok(pl_http_ctx *ctx, const char *declared, int64_t len);
void   up_io_answer(pl_http_ctx *ctx, int err, const char *msg, const char *extra);
void   up_io_log(const pl_http_ctx *ctx, const char *step, int err, const char *uid, int64_t media,
                 int64_t avail);
void   up_w_body_room(uv_work_t *w);                    /* ROOM, on the thread pool */
void   up_after_body_room(uv_work_t *w, int status);    /* ... then reads the body   */

#endif
