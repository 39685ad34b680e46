/* api_media_int.h — shared by the media handlers only: api_media.c (the
 * routes, media objects, downloads, the collector), api_upload.c (the
 * uploads) and api_upload_resumable.c (resumable uploads; what the two
 * upload files share is in api_upload_int.h). The rest of the program uses
 * api.h; the other REST handlers, api_int.h.
 */
#ifndef PL_API_MEDIA_INT_H
#define PL_API_MEDIA_INT_H

#include "api_int.h"

#include "../core/log.h"
#include "../media/blob.h"

/* A log line that may come with every request (a refused or failed
 * upload or download) comes at most once a second per kind (pl_log_due),
 * so a flood of them cannot flood the log; each says how many were held
 * back before it ("held_back"). */
#define MEDIA_LOG_EVERY_MS 1000

typedef struct api_media_state {
    pl_blob_store *blobs;
    uv_loop_t     *loop;
    uv_timer_t     gc_timer;
    int            gc_busy;
    int            up;
    int64_t        swept_at;     /* mono ms of the last sweep of abandoned uploads */
    int64_t        reserve;      /* bytes uploads leave free (--media-reserve)  */
    pl_log_limit   log_full;     /* uploads refused for lack of space        */
    pl_log_limit   log_io;       /* uploads failed on the disk or descriptors */
    pl_log_limit   log_read;     /* downloads that could not open their file */
} api_media_state;

/* The module's state, one for the process, as A is for the REST handlers.
 * Owned by api_media.c: pl_api_media_init sets blobs, loop and reserve
 * before any request, and nothing changes them after, so api_upload*.c
 * read them on the loop and in the thread pool; the collector's fields
 * (gc_*, up, swept_at) are api_media.c's alone. The log limits are
 * touched only through pl_log_due, on the loop thread. */
extern api_media_state M;

/* The wire form of a media row (a new reference); its URLs fresh (exp 0),
 * or expiring at exp (> 0: a signed URL's ?info=1). m: borrowed. */
json_t *api_media_json(const pl_media *m, int64_t exp);

/* The upload routes, which h_media_route dispatches to: api_upload.c */
void h_upload(pl_http_ctx *ctx);                       /* POST /api/v1/media            */
/* ... api_upload_resumable.c */
void h_session_create(pl_http_ctx *ctx);               /* POST .../media/uploads        */
void h_session_get(pl_http_ctx *ctx, pl_str uid);      /* HEAD, GET .../uploads/{uid}   */
void h_session_patch(pl_http_ctx *ctx, pl_str uid);    /* PATCH .../uploads/{uid}       */
void h_session_delete(pl_http_ctx *ctx, pl_str uid);   /* DELETE .../uploads/{uid}      */

#endif
