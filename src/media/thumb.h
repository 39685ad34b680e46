/* thumb.h — image thumbnails and placeholders, with libvips.
 *
 * Owns: turning an uploaded image file into a small JPEG or WebP thumbnail
 * plus the facts a client needs before it downloads anything: the
 * original's dimensions (upright, after EXIF orientation), the thumbnail's,
 * its type, and a BlurHash placeholder (media/blurhash.h).
 * Does not own: where files live, upload limits, HTTP, the event loop. The
 * caller (the media upload path) runs pl_thumb_make on a libuv work-queue
 * thread: every call here blocks on disk and CPU and must never run on the
 * event loop thread.
 *
 * What it guarantees:
 *   1. Thread-safe: any number of threads may call
 *      pl_thumb_probe/pl_thumb_make at once. No call keeps state between
 *      calls (libvips' operation cache is off).
 *   2. Only JPEG, PNG, WebP, GIF (first frame) and HEIF/AVIF are decoded;
 *      every other libvips loader (SVG, PDF, TIFF, ImageMagick, ...) is
 *      blocked, so an upload cannot reach their parsers.
 *   3. Decompression bombs are refused from the header, before any pixel
 *      is decoded: more than PL_THUMB_MAX_PIXELS (a quarter of that for
 *      interlaced PNG and progressive JPEG, which libvips/libjpeg must hold
 *      whole in memory), or a side over PL_THUMB_MAX_SIDE. JPEG and WebP
 *      decode shrunk (shrink-on-load), so memory stays near the thumbnail's
 *      size; other formats stream through line buffers.
 *   4. Decoding stops after PL_THUMB_TIMEOUT_MS, checked by libvips
 *      between strips of output (so a thumbnail of a few dozen rows, one
 *      strip, is bounded by the pixel limits alone: about 1 s at worst);
 *      the call then fails with PL_THUMB_ETIMEOUT.
 *   5. The thumbnail carries no metadata: EXIF (GPS, camera, orientation),
 *      XMP, IPTC and ICC profiles are stripped; pixels are converted to sRGB
 *      and turned upright first.
 *   6. dst_path appears whole or not at all: the thumbnail is written to a
 *      temporary file beside it (mode 0600), fsynced, then renamed over
 *      dst_path. On failure nothing is left behind.
 *   7. A truncated or corrupt file fails (PL_THUMB_ECORRUPT); it never gives
 *      a half-grey thumbnail.
 */
#ifndef PL_THUMB_H
#define PL_THUMB_H

#include <stddef.h>

#define PL_THUMB_MAX_PIXELS  100000000LL /* 100 megapixels, original's size */
#define PL_THUMB_MAX_SIDE    30000       /* pixels, either side            */
#define PL_THUMB_TIMEOUT_MS  10000       /* decoding + resizing, one call  */
#define PL_THUMB_DEFAULT_SIDE 320        /* a sensible max_side for chat   */

/* The deadline of one pl_thumb_make, PL_THUMB_TIMEOUT_MS unless changed
 * before any worker runs (tests lower it). */
extern int pl_thumb_timeout_ms;

/* Return codes (0 is success). */
#define PL_THUMB_EINVAL       (-1) /* bad argument, or libvips did not start */
#define PL_THUMB_EUNSUPPORTED (-2) /* not an image of an allowed type (or unreadable) */
#define PL_THUMB_ETOOBIG      (-3) /* over the pixel limits (see 3.)         */
#define PL_THUMB_ECORRUPT     (-4) /* truncated or corrupt image data        */
#define PL_THUMB_ETIMEOUT     (-5) /* took longer than PL_THUMB_TIMEOUT_MS   */
#define PL_THUMB_EIO          (-6) /* cannot open src_path, or writing dst_path failed */

typedef struct pl_thumb_info {
    int  width, height;             /* the original's, upright (EXIF orientation applied) */
    int  thumb_width, thumb_height; /* the thumbnail's; 0 from pl_thumb_probe */
    char placeholder[64];           /* BlurHash, 4x3 components (28 chars); "" from probe */
    char mime[32];                  /* the original's type: "image/jpeg", "image/png",
                                       "image/webp", "image/gif", "image/heic",
                                       "image/avif" (or "image/heif" for others) */
    char thumb_mime[16];            /* "image/jpeg", or "image/webp" when the original
                                       has transparency; "" from pl_thumb_probe */
} pl_thumb_info;

/* Initialises libvips once for the process (VIPS_INIT), blocks every loader
 * but the allowed ones, turns off libvips' operation cache, makes each
 * call use one thread (parallelism comes from the caller's work queue), and
 * routes libvips' warnings to pl_log at debug level. Idempotent and
 * thread-safe (pthread_once); returns 0, or -1 if libvips cannot start.
 * Optional: the first pl_thumb_probe/pl_thumb_make calls it. Starting
 * libvips costs about 50 ms (250 ms under ASan: it loads its modules), so
 * parleyd leaves it to the first upload instead of paying it at every
 * start. */
int pl_thumb_init(void);

/* Reads only the header of src_path: fills out->width, height and mime
 * (thumb_* and placeholder are zeroed). No pixel limit applies, so this is
 * the call for images too big to thumbnail. Returns 0 or a PL_THUMB_E*
 * code with a one-line reason in err (for logs, not for clients; err may be
 * NULL). src_path and out are borrowed. */
int pl_thumb_probe(const char *src_path, pl_thumb_info *out, char *err, size_t errlen);

/* Makes a thumbnail of src_path that fits in max_side x max_side (never
 * upscaled; max_side 16..4096) at dst_path, and fills out. Returns 0, or a
 * PL_THUMB_E* code with a one-line reason in err (err may be NULL). When
 * the code is PL_THUMB_ETOOBIG, out->width, height and mime are still
 * filled from the header. All pointers are borrowed. Blocks: call it from
 * a worker thread. */
int pl_thumb_make(const char *src_path, const char *dst_path, int max_side,
                  pl_thumb_info *out, char *err, size_t errlen);

/* A fixed description of a PL_THUMB_E* code ("ok" for 0). */
const char *pl_thumb_strerror(int code);

#endif
