/* api_media.c — media over REST (docs/protocol.md "Media"): media objects
 * and downloads, with a bearer token or a signed URL; the collector of
 * unreferenced uploads; the media routes.
 *
 * Owns: the media routes (the upload ones dispatch to api_upload*.c), the
 * module's state M and its rate-limited log (api_media_int.h), the wire
 * form of a media object, downloads and the collector's timer.
 * Does not own: uploads (api_upload*.c), HTTP streaming (http/server.c,
 * http/file.c), policy (media/media.c), bytes on disk (media/blob.c),
 * rows (store/).
 *
 * The invariants are numbered with the upload pipeline, in api_upload.c.
 * This file relies on two of them: 2 (a row may be without its blob,
 * served 404; the collector only removes blobs no row names) and 6 (a
 * file that cannot be opened now is 503, logged at most once a second per
 * kind, MEDIA_LOG_EVERY_MS, through M's pl_log_limit; only ENOENT is 404).
 */
#include "api_media_int.h"

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
#include "../proto/proto.h"

#define GC_BATCH      500

api_media_state M;               /* set by pl_api_media_init (api_media_int.h) */

/* ---- media objects ------------------------------------------------------------- */

/* The wire form of a media row; its URLs fresh (exp 0), or expiring at
 * exp (> 0: a signed URL's ?info=1, which must not renew the capability
 * it was given: the second audit of old areas found one renewed for ever). */
json_t *api_media_json(const pl_media *m, int64_t exp) {
    char url[200];
    if (exp > 0) pl_media_url_at(m->id, 0, exp, url, sizeof url);
    else pl_media_url(m->id, 0, url, sizeof url, &exp);
    json_t *o = json_pack("{s:I,s:s,s:s,s:I,s:s,s:s,s:I,s:s,s:I}", "id", (json_int_t)m->id,
                          "kind", pl_media_kind_name(m->kind), "mime", m->mime, "size", (json_int_t)m->size,
                          "name", m->name, "sha256", m->sha256, "created", (json_int_t)m->created,
                          "url", url, "url_expires", (json_int_t)exp);
    if (m->width > 0) {
        json_object_set_new(o, "width", json_integer(m->width));
        json_object_set_new(o, "height", json_integer(m->height));
    }
    if (m->placeholder[0]) json_object_set_new(o, "placeholder", json_string(m->placeholder));
    if (m->thumb_sha[0]) {
        pl_media_url_at(m->id, 1, exp, url, sizeof url);
        json_object_set_new(o, "thumb_url", json_string(url));
    }
    return o;
}

/* ---- downloads ------------------------------------------------------------------ */

typedef struct dl_op {
    pl_job       job;          /* first */
    pl_http_ctx *ctx;
    int          signed_url;   /* reached through /media/{id}?exp&sig     */
    int64_t      signed_exp;   /* ... its exp                             */
    int          thumb;        /* ?thumb=: the thumbnail, not the file    */
    int          info;         /* ?info=: the media object, not the bytes */
} dl_op;

/* A file that cannot be opened now (err: -errno; api_upload.c invariant
 * 6): logged, 503. Only a missing one is 404 (the caller's). */
static void serve_unavailable(dl_op *op, const pl_media *m, int err) {
    int64_t held;
    if (pl_log_due(&M.log_read, MEDIA_LOG_EVERY_MS, pl_mono_ms(), &held)) {
        char name[32], why[80];
        uv_err_name_r(err, name, sizeof name);
        uv_strerror_r(err, why, sizeof why);
        pl_log(PL_LOG_ERROR, op->ctx->conn->id, "media: cannot open a file to serve",
               "\"step\":\"open\",\"errno\":\"%s\",\"error\":\"%s\",\"media\":%lld,\"thumb\":%s,"
               "\"held_back\":%lld", name, why, (long long)m->id, op->thumb ? "true" : "false", (long long)held);
    }
    pl_http_error(op->ctx, 503, "unavailable", "the file cannot be read now; try again");
}

static void serve(dl_op *op, const pl_media *m) {
    pl_http_ctx *ctx = op->ctx;
    const char *sha = op->thumb ? m->thumb_sha : m->sha256;
    int fd, e = -ENOENT;
    int64_t size;
    if (sha[0]) e = pl_blob_open_read(M.blobs, sha, &fd, &size);
    /* no thumbnail, no bytes (api_upload.c invariant 2), a bad digest */
    if (e == -ENOENT || e == -EINVAL) {
        pl_http_error(ctx, 404, "not_found", "no such media");
        return;
    }
    if (e) {
        serve_unavailable(op, m, e);
        return;
    }
    const char *ctype = pl_media_serve_type(m->mime), *name = m->name;
    char tname[PL_MEDIA_NAME_MAX + 8];
    if (op->thumb) {                         /* ours: a JPEG, or a WebP when transparent */
        uint8_t magic[12] = {0};
        int webp = pread(fd, magic, sizeof magic, 0) == 12 && memcmp(magic + 8, "WEBP", 4) == 0;
        ctype = webp ? "image/webp" : "image/jpeg";
        pl_media_thumb_name(m->name, webp ? "webp" : "jpg", tname, sizeof tname);   /* saved as what it is */
        name = tname;
    }
    pl_sbuf h;
    pl_sbuf_init(&h);
    pl_sbuf_adds(&h, "Content-Security-Policy: default-src 'none'; sandbox\r\n"
                     "Cross-Origin-Resource-Policy: same-origin\r\n");
    pl_sbuf_printf(&h, "Cache-Control: private, max-age=%d, immutable\r\n",
                   op->signed_url ? A.cfg->media_url_ttl : 3600);
    pl_media_disposition(&h, name, op->thumb ? 0 : !pl_media_inline_ok(m->mime));
    pl_sbuf_addc(&h, '\0');
    pl_http_file f = {ctype, sha, h.p};
    pl_http_send_file(ctx, fd, size, &f);
    pl_sbuf_release(&h);
}

static void got_media(pl_job *j) {
    dl_op *op = j->data;
    if (j->result || !j->nmedia) {
        if (j->result == PL_STORE_EUNAVAIL) api_store_error(op->ctx, j->result, "");
        else pl_http_error(op->ctx, 404, "not_found", "no such media");
    } else if (op->info) {
        pl_http_respond_json(op->ctx, 200, api_media_json(&j->media[0], op->signed_exp));
    } else {
        serve(op, &j->media[0]);
    }
    pl_job_release(j);
    free(op);
}

static void fetch(pl_http_ctx *ctx, int64_t id, int64_t user, int64_t signed_exp) {
    int thumb, info;
    if (api_query_flag(ctx, "info", &info) || api_query_flag(ctx, "thumb", &thumb)) return;
    dl_op *op = pl_calloc(1, sizeof *op);
    op->ctx = ctx;
    op->signed_url = signed_exp > 0;
    op->signed_exp = signed_exp;
    op->thumb = thumb;
    op->info = info;
    op->job.op = PL_READ_MEDIA_GET;
    op->job.id = id;
    op->job.user = user;
    op->job.done = got_media;
    op->job.data = op;
    pl_store_submit(A.store, &op->job);
}

/* GET|HEAD /media/{id}?exp=..&sig=..: no token; the signature is the key. */
void h_media_signed(pl_http_ctx *ctx, const char *idp, size_t idn) {
    int64_t id = api_parse_id(idp, idn), exp = 0;
    char sig[64] = "";
    if (!api_path_id_ok(ctx, id, "no such media")) return;   /* above 2^53 - 1: 400 */
    if (api_query_int(ctx, "exp", &exp) || !exp || !pl_http_query_get(ctx->req.query, "sig", sig, sizeof sig)) {
        pl_http_error(ctx, 403, "forbidden", "a signed URL needs exp and sig");
        return;
    }
    int v = pl_media_verify(id, exp, sig, strlen(sig), pl_now_ms() / 1000);
    if (v) {
        pl_http_error(ctx, 403, "forbidden", v == -2 ? "the signed URL has expired" : "bad signature");
        return;
    }
    fetch(ctx, id, 0, exp);
}

/* /api/v1/media[/...]: s[0] is "media", n segments after /api/v1. */
void h_media_route(pl_http_ctx *ctx, pl_str *s, size_t n) {
    int m = ctx->req.method;
    if (n == 1) {
        if (api_allow(ctx, API_POST)) h_upload(ctx);
        return;
    }
    if (n == 2 && s[1].n == 7 && memcmp(s[1].p, "uploads", 7) == 0) {
        if (api_allow(ctx, API_POST)) h_session_create(ctx);
        return;
    }
    if (n == 3 && s[1].n == 7 && memcmp(s[1].p, "uploads", 7) == 0) {
        if (!api_allow(ctx, API_GET | API_PATCH | API_DELETE)) return;   /* HEAD: h_session_get's own answer */
        if (m == PL_HTTP_PATCH) h_session_patch(ctx, s[2]);
        else if (m == PL_HTTP_DELETE) h_session_delete(ctx, s[2]);
        else h_session_get(ctx, s[2]);
        return;
    }
    if (n == 2) {
        int64_t id = api_parse_id(s[1].p, s[1].n);
        if (api_allow(ctx, API_GET) && api_path_id_ok(ctx, id, "no such media")) fetch(ctx, id, ctx->user, 0);
        return;
    }
    pl_http_error(ctx, 404, "not_found", "no such route");
}

/* The routes whose body streams (server.h): uploads. */
int pl_api_media_stream_pred(const pl_http_req *r) {
    static const char pre[] = "/api/v1/media";
    if (r->method != PL_HTTP_POST && r->method != PL_HTTP_PATCH) return 0;
    return r->path.n >= sizeof pre - 1 && memcmp(r->path.p, pre, sizeof pre - 1) == 0 &&
           (r->path.n == sizeof pre - 1 || r->path.p[sizeof pre - 1] == '/');
}

/* ---- the collector ------------------------------------------------------------- */

typedef struct gc_op {
    pl_job    job;            /* first */
    uv_work_t work;
    int       removed;
    int       sweep;          /* also sweep abandoned uploads (blob.h)     */
} gc_op;

/* Abandoned uploads (temp files, unfinished resumable ones) go once not
 * written for the grace period, and never sooner than this: a stalled
 * upload has 60 s before its connection is cut. */
#define SWEEP_MIN_AGE_MS  (3600 * 1000LL)
#define SWEEP_EVERY_MS    (600 * 1000LL)

static void w_remove(uv_work_t *w) {
    gc_op *op = w->data;
    int64_t age = (int64_t)A.cfg->media_gc_grace * 1000;
    for (size_t i = 0; i < op->job.nmedia; i++)
        if (pl_blob_remove(M.blobs, op->job.media[i].sha256, age) > 0) op->removed++;
    if (op->sweep) op->removed += pl_blob_sweep(M.blobs, age > SWEEP_MIN_AGE_MS ? age : SWEEP_MIN_AGE_MS);
}

static void after_remove(uv_work_t *w, int status) {
    gc_op *op = w->data;
    if (op->removed) pl_log(PL_LOG_INFO, 0, "media: blobs collected", "\"count\":%d", op->removed);
    pl_job_release(&op->job);
    free(op);
    M.gc_busy = 0;
}

static void gc_done(pl_job *j) {
    gc_op *op = j->data;
    int64_t now = pl_mono_ms();
    if (!j->result && M.up && now - M.swept_at >= SWEEP_EVERY_MS) {
        M.swept_at = now;
        op->sweep = 1;
    }
    if (j->result || (!j->nmedia && !op->sweep) || !M.up) {
        pl_job_release(j);
        free(op);
        M.gc_busy = 0;
        return;
    }
    op->work.data = op;
    uv_queue_work(M.loop, &op->work, w_remove, after_remove);
}

static void gc_tick(uv_timer_t *t) {
    if (M.gc_busy || !A.store) return;
    M.gc_busy = 1;
    gc_op *op = pl_calloc(1, sizeof *op);
    op->job.op = PL_JOB_MEDIA_GC;
    op->job.expires = pl_now_ms() - (int64_t)A.cfg->media_gc_grace * 1000;
    op->job.limit = GC_BATCH;
    op->job.done = gc_done;
    op->job.data = op;
    pl_store_submit(A.store, &op->job);
}

/* ---- setup --------------------------------------------------------------------- */

int pl_api_media_init(uv_loop_t *loop, const pl_config *cfg, char *err, size_t errlen) {
    char root[1100];
    if (cfg->media_dir[0]) snprintf(root, sizeof root, "%s", cfg->media_dir);
    else snprintf(root, sizeof root, "%s/media", cfg->data_dir);
    if (pl_blob_open(root, &M.blobs, err, errlen)) return -1;
    if (cfg->store[0] && !cfg->media_dir[0])
        pl_log(PL_LOG_WARN, 0, "media: cluster mode without --media-dir: each node keeps its own uploads",
               "\"dir\":\"%s\"", root);
    if (pl_media_sniff_init()) {
        snprintf(err, errlen, "cannot load libmagic's database");
        return -1;
    }
    uint8_t k[32];
    pl_auth_derive_key("media-url", k);
    pl_media_set_key(k);
    pl_media_set_url_ttl(cfg->media_url_ttl);
    pl_proto_set_attachment_encoder(pl_media_data_with_urls);
    sodium_memzero(k, sizeof k);
    M.loop = loop;
    M.up = 1;
    M.reserve = (int64_t)cfg->media_reserve * 1024 * 1024;
    M.swept_at = pl_mono_ms() - SWEEP_EVERY_MS;   /* the first pass sweeps */
    uv_timer_init(loop, &M.gc_timer);
    int64_t every = (int64_t)cfg->media_gc_grace * 500;
    if (every < 500) every = 500;
    if (every > 60000) every = 60000;
    uv_timer_start(&M.gc_timer, gc_tick, (uint64_t)every, (uint64_t)every);
    uv_unref((uv_handle_t *)&M.gc_timer);
    pl_http_set_stream_pred(pl_api_media_stream_pred);
    return 0;
}

void pl_api_media_shutdown(void) {
    if (!M.up) return;
    M.up = 0;
    uv_timer_stop(&M.gc_timer);
    uv_close((uv_handle_t *)&M.gc_timer, NULL);
}
