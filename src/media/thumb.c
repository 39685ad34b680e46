/* thumb.c — image thumbnails with libvips (contract and guarantees in
 * thumb.h).
 *
 * Owns: libvips' process-wide settings (set once in pl_thumb_init) and the
 * path from a file on disk to a thumbnail file and its facts.
 * Does not own: threads (the caller's work queue), file naming, limits on
 * upload size.
 *
 * One call, in order (each step can fail alone; nothing is written until 6):
 *   1. open src_path as a VipsSource (no "[options]" parsing of the name)
 *   2. sniff the loader; anything not in ALLOWED is PL_THUMB_EUNSUPPORTED
 *   3. read the header only: dimensions, orientation, interlacing
 *   4. refuse a bomb (PL_THUMB_ETOOBIG) before a pixel is decoded
 *   5. vips_thumbnail_source (shrink-on-load, auto-rotate, to sRGB) into
 *      memory, watched by an "eval" handler that kills the pipeline at the
 *      deadline
 *   6. save JPEG (opaque) or WebP (alpha), metadata stripped, to a mkstemp
 *      file beside dst_path; fsync; rename; fsync the directory
 *   7. BlurHash from a <= 32x32 sRGB copy of the in-memory thumbnail
 *
 * libvips' error buffer is process-wide: a reason read from it may mix in
 * another thread's error, so err is for logs only and the return code is
 * what callers branch on.
 */
#include "thumb.h"

#include "blurhash.h"
#include "../core/clock.h"
#include "../core/log.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <vips/vips.h>
#include <vips/vector.h>   /* vips_vector_set_enabled */

int pl_thumb_timeout_ms = PL_THUMB_TIMEOUT_MS;

/* The loaders an upload may reach, by GType name: the one
 * vips_foreign_find_load_source names (it sniffs blocked loaders too, so
 * we check its answer here) and the base class we unblock. */
static const struct { const char *loader, *base, *mime; } ALLOWED[] = {
    { "VipsForeignLoadJpegSource",  "VipsForeignLoadJpeg",  "image/jpeg" },
    { "VipsForeignLoadPngSource",   "VipsForeignLoadPng",   "image/png"  },
    { "VipsForeignLoadWebpSource",  "VipsForeignLoadWebp",  "image/webp" },
    { "VipsForeignLoadNsgifSource", "VipsForeignLoadNsgif", "image/gif"  },
    { "VipsForeignLoadHeifSource",  "VipsForeignLoadHeif",  "image/heif" },
};

#define BLURHASH_SIDE 32     /* the placeholder is computed from <= 32x32 */
#define THUMB_QUALITY 80

static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static int init_result = -1;

/* libvips' warnings (a corrupt tile, an odd header) describe upload
 * content: debug level, one JSON line each instead of GLib's own format. */
static void on_vips_log(const gchar *domain, GLogLevelFlags level,
                        const gchar *message, gpointer user) {
    char clean[256];
    size_t n = 0;
    for (const char *p = message ? message : ""; *p && n < sizeof clean - 1; p++)
        clean[n++] = (*p == '"' || *p == '\\' || (unsigned char)*p < 0x20) ? ' ' : *p;
    clean[n] = '\0';
    pl_log(PL_LOG_DEBUG, 0, "libvips", "\"detail\":\"%s\"", clean);
}

static void init_vips(void) {
    if (VIPS_INIT("parleyd") != 0) {
        pl_log(PL_LOG_ERROR, 0, "libvips failed to start", "%s", "");
        return;
    }
    g_log_set_handler("VIPS", G_LOG_LEVEL_WARNING | G_LOG_LEVEL_MESSAGE |
                      G_LOG_LEVEL_INFO | G_LOG_LEVEL_DEBUG, on_vips_log, NULL);
    /* Every loader off, then only ours on: a new libvips with a new loader
     * stays closed until it is added to ALLOWED. */
    vips_block_untrusted_set(TRUE);
    vips_operation_block_set("VipsForeignLoad", TRUE);
    for (size_t i = 0; i < sizeof ALLOWED / sizeof ALLOWED[0]; i++)
        vips_operation_block_set(ALLOWED[i].base, FALSE);
    /* No cache: every call is independent, memory is released when it
     * returns, and a file replaced on disk is never served from a cache. */
    vips_cache_set_max(0);
    vips_cache_set_max_mem(0);
    vips_cache_set_max_files(0);
    vips_concurrency_set(1);
    /* No run-time generated code (liborc): with thumbnails made on several
     * work-queue threads at once, liborc's code allocator crashed freeing a
     * program (SEGV in orc_code_free; test_thumb's thumb_threads, about 1
     * run in 10 under ASan). The C paths give the same pixels, and no
     * executable memory is written at run time. */
    vips_vector_set_enabled(FALSE);
    init_result = 0;
}

int pl_thumb_init(void) {
    pthread_once(&init_once, init_vips);
    return init_result;
}

const char *pl_thumb_strerror(int code) {
    switch (code) {
    case 0:                     return "ok";
    case PL_THUMB_EINVAL:       return "invalid argument";
    case PL_THUMB_EUNSUPPORTED: return "not a supported image";
    case PL_THUMB_ETOOBIG:      return "image too large";
    case PL_THUMB_ECORRUPT:     return "corrupt or truncated image";
    case PL_THUMB_ETIMEOUT:     return "image took too long to decode";
    case PL_THUMB_EIO:          return "i/o error";
    default:                    return "unknown error";
    }
}

/* Fills err with "what" and, if libvips has one, the first line of its
 * reason; clears libvips' buffer (so it never fills). Returns code. */
static int fail(int code, char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int fail(int code, char *err, size_t errlen, const char *fmt, ...) {
    char *vips = vips_error_buffer_copy();
    if (err && errlen > 0) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
        if (vips && vips[0] && n >= 0 && (size_t)n < errlen) {
            size_t line = strcspn(vips, "\n");
            snprintf(err + n, errlen - (size_t)n, " (libvips: %.*s)", (int)line, vips);
        }
    }
    g_free(vips);
    return code;
}

/* The header of an opened source. */
typedef struct header {
    VipsSource *source;        /* owned                                    */
    const char *mime;          /* static                                   */
    int         width, height; /* upright                                  */
    int         whole;         /* the decoder must hold the whole image    */
} header;

static void header_release(header *h) {
    if (h->source) g_object_unref(h->source);
    h->source = NULL;
}

/* Steps 1-3. On success h->source is owned by h. */
static int read_header(const char *path, header *h, pl_thumb_info *out,
                       char *err, size_t errlen) {
    memset(h, 0, sizeof *h);
    h->source = vips_source_new_from_file(path);
    if (!h->source) return fail(PL_THUMB_EIO, err, errlen, "cannot open source");
    const char *loader = vips_foreign_find_load_source(h->source);
    for (size_t i = 0; loader && i < sizeof ALLOWED / sizeof ALLOWED[0]; i++)
        if (strcmp(loader, ALLOWED[i].loader) == 0) h->mime = ALLOWED[i].mime;
    if (!h->mime)
        return fail(PL_THUMB_EUNSUPPORTED, err, errlen,
                    "not a JPEG, PNG, WebP, GIF or HEIF image");
    VipsImage *img = vips_image_new_from_source(h->source, "",
        "access", VIPS_ACCESS_SEQUENTIAL, "fail_on", VIPS_FAIL_ON_ERROR, NULL);
    if (!img) return fail(PL_THUMB_ECORRUPT, err, errlen, "unreadable %s header", h->mime);
    int w = vips_image_get_width(img), hgt = vips_image_get_page_height(img);
    int v;
    if (strcmp(h->mime, "image/heif") == 0) {
        const char *comp = NULL;
        if (vips_image_get_typeof(img, "heif-compression") &&
            vips_image_get_string(img, "heif-compression", &comp) == 0 && comp &&
            (strcmp(comp, "av1") == 0 || strcmp(comp, "hevc") == 0))
            h->mime = comp[0] == 'a' ? "image/avif" : "image/heic";
    }
    if (strcmp(h->mime, "image/gif") == 0) h->whole = 1;
    if (vips_image_get_typeof(img, "interlaced") &&
        vips_image_get_int(img, "interlaced", &v) == 0 && v) h->whole = 1;
    if (vips_image_get_typeof(img, "jpeg-multiscan") &&
        vips_image_get_int(img, "jpeg-multiscan", &v) == 0 && v) h->whole = 1;
    int swap = vips_image_get_orientation_swap(img);
    g_object_unref(img);
    h->width = swap ? hgt : w;
    h->height = swap ? w : hgt;
    out->width = h->width;
    out->height = h->height;
    snprintf(out->mime, sizeof out->mime, "%s", h->mime);
    return 0;
}

int pl_thumb_probe(const char *src_path, pl_thumb_info *out, char *err, size_t errlen) {
    if (err && errlen) err[0] = '\0';
    if (!out) return fail(PL_THUMB_EINVAL, err, errlen, "no output");
    memset(out, 0, sizeof *out);
    if (pl_thumb_init() != 0) return fail(PL_THUMB_EINVAL, err, errlen, "libvips did not start");
    if (!src_path) return fail(PL_THUMB_EINVAL, err, errlen, "no path");
    header h;
    int rc = read_header(src_path, &h, out, err, errlen);
    header_release(&h);
    return rc;
}

/* Step 5's deadline: libvips emits "eval" on the image being computed as
 * each strip of output completes; past the deadline we set the kill flag,
 * which its workers check between strips. A thumbnail of a few dozen rows
 * may be a single strip, so this is a second line of defence: the pixel
 * limits are what bound a call (measured worst cases, one thread: 100 Mpx
 * PNG 1.0 s and 75 MB; 25 Mpx interlaced PNG 0.5 s and 120 MB; 25 Mpx
 * progressive JPEG 0.2 s and 114 MB). */
typedef struct deadline {
    int64_t    at_ms;
    atomic_int hit;
} deadline;

static void on_eval(VipsImage *image, VipsProgress *progress, void *user) {
    deadline *d = user;
    if (pl_mono_ms() >= d->at_ms) {
        atomic_store(&d->hit, 1);
        vips_image_set_kill(image, TRUE);
    }
}

/* Step 6. */
static int save_atomically(VipsImage *img, int webp, const char *dst,
                           char *err, size_t errlen) {
    char tmp[PATH_MAX];
    if (snprintf(tmp, sizeof tmp, "%s.tmp-XXXXXX", dst) >= (int)sizeof tmp)
        return fail(PL_THUMB_EINVAL, err, errlen, "destination path too long");
    int fd = mkostemp(tmp, O_CLOEXEC);
    if (fd < 0) return fail(PL_THUMB_EIO, err, errlen, "create %s: %s", tmp, strerror(errno));
    VipsTarget *target = vips_target_new_to_descriptor(fd);
    int rc = !target ? -1 : webp
        ? vips_webpsave_target(img, target, "Q", THUMB_QUALITY, "strip", TRUE, NULL)
        : vips_jpegsave_target(img, target, "Q", THUMB_QUALITY, "strip", TRUE,
                               "optimize_coding", TRUE, NULL);
    if (target) g_object_unref(target);
    const char *what = "encode";
    int saved_errno = 0;
    if (rc == 0 && fsync(fd) != 0) { rc = -1; what = "fsync"; saved_errno = errno; }
    if (close(fd) != 0 && rc == 0) { rc = -1; what = "close"; saved_errno = errno; }
    if (rc == 0 && rename(tmp, dst) != 0) { rc = -1; what = "rename"; saved_errno = errno; }
    if (rc != 0) {
        unlink(tmp);
        return fail(PL_THUMB_EIO, err, errlen, "%s thumbnail: %s", what,
                    saved_errno ? strerror(saved_errno) : "failed");
    }
    /* The rename itself must survive a crash (the caller records the
     * thumbnail right after). */
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", dst);
    char *slash = strrchr(dir, '/');
    if (slash == dir) slash[1] = '\0';
    else if (slash) *slash = '\0';
    else snprintf(dir, sizeof dir, ".");
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) { (void)fsync(dfd); close(dfd); }
    return 0;
}

/* Step 7: the placeholder, or "" if this image's colours cannot be made
 * sRGB (the thumbnail is still good). */
static void make_placeholder(VipsImage *mem, char *out, size_t outlen) {
    VipsObject *ctx = VIPS_OBJECT(vips_image_new());
    VipsImage **t = (VipsImage **)vips_object_local_array(ctx, 4);
    int w = vips_image_get_width(mem), h = vips_image_get_height(mem);
    int side = w > h ? w : h;
    double scale = side > BLURHASH_SIDE ? (double)BLURHASH_SIDE / side : 1.0;
    VipsImage *img = mem;
    size_t size = 0;
    void *rgb = NULL;
    out[0] = '\0';
    if (vips_resize(img, &t[0], scale, NULL) != 0) goto done;
    if (vips_colourspace(t[0], &t[1], VIPS_INTERPRETATION_sRGB, NULL) != 0) goto done;
    img = t[1];
    if (vips_image_hasalpha(img)) {  /* transparency shows as white */
        VipsArrayDouble *white = vips_array_double_newv(3, 255.0, 255.0, 255.0);
        int rc = vips_flatten(img, &t[2], "background", white, NULL);
        vips_area_unref(VIPS_AREA(white));
        if (rc != 0) goto done;
        img = t[2];
    }
    if (vips_cast_uchar(img, &t[3], NULL) != 0) goto done;
    img = t[3];
    if (vips_image_get_bands(img) != 3) goto done;
    rgb = vips_image_write_to_memory(img, &size);
    w = vips_image_get_width(img);
    h = vips_image_get_height(img);
    if (rgb && size == (size_t)w * h * 3)
        pl_blurhash_encode(out, outlen, 4, 3, w, h, rgb, (size_t)w * 3);
done:
    if (!out[0]) {  /* clear libvips' error buffer: it would only fill */
        g_free(vips_error_buffer_copy());
        pl_log(PL_LOG_DEBUG, 0, "thumbnail without placeholder", "%s", "");
    }
    g_free(rgb);
    g_object_unref(ctx);
}

int pl_thumb_make(const char *src_path, const char *dst_path, int max_side,
                  pl_thumb_info *out, char *err, size_t errlen) {
    if (err && errlen) err[0] = '\0';
    if (!out) return fail(PL_THUMB_EINVAL, err, errlen, "no output");
    memset(out, 0, sizeof *out);
    if (pl_thumb_init() != 0) return fail(PL_THUMB_EINVAL, err, errlen, "libvips did not start");
    if (!src_path || !dst_path || max_side < 16 || max_side > 4096)
        return fail(PL_THUMB_EINVAL, err, errlen, "no path or bad max_side");

    header h;
    int rc = read_header(src_path, &h, out, err, errlen);
    if (rc != 0) { header_release(&h); return rc; }
    long long pixels = (long long)h.width * h.height;
    long long limit = h.whole ? PL_THUMB_MAX_PIXELS / 4 : PL_THUMB_MAX_PIXELS;
    if (h.width > PL_THUMB_MAX_SIDE || h.height > PL_THUMB_MAX_SIDE || pixels > limit) {
        header_release(&h);
        return fail(PL_THUMB_ETOOBIG, err, errlen, "%dx%d %s%s exceeds %lld pixels",
                    out->width, out->height, out->mime, h.whole ? " (decoded whole)" : "",
                    limit);
    }

    VipsObject *ctx = VIPS_OBJECT(vips_image_new());
    VipsImage **t = (VipsImage **)vips_object_local_array(ctx, 4);
    deadline dl = { .at_ms = pl_mono_ms() + pl_thumb_timeout_ms };
    atomic_init(&dl.hit, 0);
    /* libvips 8.14's thumbnail_source ignores its own "fail_on" (a
     * truncated JPEG came out half grey); the loader option string is
     * passed on. Both are given, for versions that honour either. */
    if (vips_thumbnail_source(h.source, &t[0], max_side, "height", max_side,
                              "size", VIPS_SIZE_DOWN, "fail_on", VIPS_FAIL_ON_ERROR,
                              "option_string", "fail_on=error", NULL) != 0) {
        rc = fail(PL_THUMB_ECORRUPT, err, errlen, "cannot decode %s", out->mime);
        goto done;
    }
    vips_image_set_progress(t[0], TRUE);
    g_signal_connect(t[0], "eval", G_CALLBACK(on_eval), &dl);
    t[1] = vips_image_copy_memory(t[0]);
    if (!t[1]) {
        rc = atomic_load(&dl.hit)
            ? fail(PL_THUMB_ETIMEOUT, err, errlen, "decoding passed %d ms", pl_thumb_timeout_ms)
            : fail(PL_THUMB_ECORRUPT, err, errlen, "cannot decode %s", out->mime);
        goto done;
    }
    /* WebP only for an image that shows transparency: libvips loads every
     * GIF with an alpha band, opaque or not (audit N3: an opaque GIF got a
     * WebP thumbnail); an alpha band at its maximum everywhere is dropped */
    VipsImage *im = t[1];
    int webp = vips_image_hasalpha(im);
    double lowest = 0;
    if (webp && vips_extract_band(im, &t[2], vips_image_get_bands(im) - 1, NULL) == 0 &&
        vips_min(t[2], &lowest, NULL) == 0 && lowest >= (vips_image_get_format(im) == VIPS_FORMAT_USHORT ? 65535 : 255) &&
        vips_extract_band(im, &t[3], 0, "n", vips_image_get_bands(im) - 1, NULL) == 0) {
        im = t[3];
        webp = 0;
    }
    vips_error_clear();
    rc = save_atomically(im, webp, dst_path, err, errlen);
    if (rc != 0) goto done;
    out->thumb_width = vips_image_get_width(im);
    out->thumb_height = vips_image_get_height(im);
    snprintf(out->thumb_mime, sizeof out->thumb_mime, "%s", webp ? "image/webp" : "image/jpeg");
    make_placeholder(im, out->placeholder, sizeof out->placeholder);
done:
    g_object_unref(ctx);
    header_release(&h);
    return rc;
}
