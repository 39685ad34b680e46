/* test_thumb.c — media/thumb.c: thumbnails of real files made here with
 * libvips (PNG, JPEG, WebP-with-alpha, GIF, TIFF) or by hand (EXIF, bombs,
 * garbage), each test in its own mkdtemp directory.
 */
#include "test.h"

#include "media/blurhash.h"
#include "media/thumb.h"

#include <dirent.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <vips/vips.h>

/* LeakSanitizer: x265, the HEVC encoder libheif uses when
 * thumb_webp_heic_avif writes its HEIC fixture, leaks one 1168-byte block
 * per process (x265_malloc from its encoder set-up, never freed). Only the
 * tests encode HEIC; parleyd decodes it (libde265) and writes JPEG or WebP,
 * and those paths leak nothing. This hook is LSan's built-in suppression
 * list, compiled into the unit-test binary so that the suite passes
 * however it is run (`make unit`, `build/asan/unit-tests thumb`) without
 * an LSAN_OPTIONS file. One definition per binary: add lines here. */
const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void) {
    return "leak:libx265.so\n";
}

typedef struct tdir {
    char root[64];
} tdir;

static int tdir_init(tdir *d) {
    if (pl_thumb_init() != 0) return -1;
    snprintf(d->root, sizeof d->root, "/tmp/pl-thumb-XXXXXX");
    return mkdtemp(d->root) ? 0 : -1;
}

static void tdir_path(const tdir *d, const char *name, char *out, size_t n) {
    snprintf(out, n, "%s/%s", d->root, name);
}

/* Number of entries in the directory (tmp files left behind show here). */
static int tdir_count(const tdir *d) {
    DIR *dir = opendir(d->root);
    int n = 0;
    for (struct dirent *e; dir && (e = readdir(dir));)
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
    if (dir) closedir(dir);
    return n;
}

static void tdir_release(tdir *d) {
    DIR *dir = opendir(d->root);
    char p[512];
    for (struct dirent *e; dir && (e = readdir(dir));)
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
            tdir_path(d, e->d_name, p, sizeof p);
            unlink(p);
        }
    if (dir) closedir(dir);
    rmdir(d->root);
}

static int write_file(const char *path, const void *data, size_t len) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t n = fwrite(data, 1, len, f);
    return fclose(f) == 0 && n == len ? 0 : -1;
}

static unsigned char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *buf = malloc(n > 0 ? (size_t)n : 1);
    *len = fread(buf, 1, (size_t)n, f);
    fclose(f);
    return buf;
}

static int contains(const unsigned char *buf, size_t len, const char *needle) {
    size_t n = strlen(needle);
    for (size_t i = 0; i + n <= len; i++)
        if (memcmp(buf + i, needle, n) == 0) return 1;
    return 0;
}

/* Pixel kinds for make_image. */
enum { SOLID, HALVES, NOISE };

/* A bands-deep 8-bit image: SOLID is rgba[] everywhere; HALVES is rgba[]
 * on the left half and blue on the right; NOISE is pseudo-random (so it
 * compresses badly and a truncation cuts real data). New reference. */
static VipsImage *make_image(int w, int h, int bands, int kind, const uint8_t rgba[4]) {
    size_t size = (size_t)w * h * bands;
    uint8_t *px = malloc(size);
    unsigned s = 1;
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int b = 0; b < bands; b++) {
                uint8_t v = rgba[b];
                if (kind == HALVES && x >= w / 2) v = (uint8_t[4]){ 0, 0, 255, 255 }[b];
                if (kind == NOISE) { s = s * 1103515245u + 12345u; v = (uint8_t)(s >> 16); }
                px[((size_t)y * w + x) * bands + b] = v;
            }
    VipsImage *img = vips_image_new_from_memory_copy(px, size, w, h, bands, VIPS_FORMAT_UCHAR);
    free(px);
    if (img && bands >= 3) img->Type = VIPS_INTERPRETATION_sRGB;
    if (img && bands < 3) img->Type = VIPS_INTERPRETATION_B_W;
    return img;
}

static int save_png(VipsImage *img, const char *path) {
    int rc = vips_pngsave(img, path, NULL);
    g_object_unref(img);
    return rc;
}

static int save_jpeg(VipsImage *img, const char *path) {
    int rc = vips_jpegsave(img, path, "Q", 95, NULL);
    g_object_unref(img);
    return rc;
}

/* The 8-bit sRGB pixel at (x, y) of an image file, in px[3]. */
static int pixel_at(const char *path, int x, int y, int px[3]) {
    VipsImage *img = vips_image_new_from_file(path, NULL);
    if (!img) return -1;
    double *v = NULL;
    int n = 0;
    int rc = vips_getpoint(img, &v, &n, x, y, NULL);
    for (int i = 0; rc == 0 && i < 3; i++) px[i] = (int)v[i < n ? i : 0];
    g_free(v);
    g_object_unref(img);
    return rc;
}

static int near(int a, int b, int tolerance) { return abs(a - b) <= tolerance; }

/* The placeholder's DC colour. */
static long placeholder_dc(const pl_thumb_info *info) {
    return pl_blurhash_decode83(info->placeholder + 2, 4);
}

/* 4x3 components: 28 characters, size flag 3 + 2*9 = 21 = "L". */
static int placeholder_ok(const pl_thumb_info *info) {
    if (strlen(info->placeholder) != 28 || info->placeholder[0] != 'L') return 0;
    for (int i = 0; i < 28; i++)
        if (pl_blurhash_decode83(info->placeholder + i, 1) < 0) return 0;
    return 1;
}

TEST(thumb_png_landscape) {
    tdir d;
    CHECK(tdir_init(&d) == 0);
    char src[128], dst[128], err[256];
    tdir_path(&d, "a.png", src, sizeof src);
    tdir_path(&d, "a.thumb", dst, sizeof dst);
    int ok = save_png(make_image(400, 200, 3, SOLID, (uint8_t[4]){ 10, 120, 250, 255 }), src) == 0;
    pl_thumb_info info;
    int rc = pl_thumb_make(src, dst, 100, &info, err, sizeof err);
    int px[3] = { 0 };
    ok = ok && pixel_at(dst, 50, 25, px) == 0;
    size_t len = 0;
    unsigned char *bytes = read_file(dst, &len);
    int jpeg = bytes && len > 3 && bytes[0] == 0xFF && bytes[1] == 0xD8;
    free(bytes);
    int files = tdir_count(&d);
    tdir_release(&d);
    CHECK(ok);
    if (rc != 0) fprintf(stderr, "  err: %s\n", err);
    CHECK_EQ(rc, 0);
    CHECK_EQ(info.width, 400);
    CHECK_EQ(info.height, 200);
    CHECK_EQ(info.thumb_width, 100);
    CHECK_EQ(info.thumb_height, 50);
    CHECK_STR(info.mime, "image/png");
    CHECK_STR(info.thumb_mime, "image/jpeg");
    CHECK(jpeg);
    CHECK_EQ(files, 2);   /* src and dst: no temporary file left */
    CHECK(placeholder_ok(&info));
    long dc = placeholder_dc(&info);
    CHECK(near((int)(dc >> 16), 10, 2) && near((int)(dc >> 8 & 255), 120, 2) &&
          near((int)(dc & 255), 250, 2));
    CHECK(near(px[0], 10, 4) && near(px[1], 120, 4) && near(px[2], 250, 4));
}

TEST(thumb_jpeg_portrait_aspect) {
    tdir d;
    CHECK(tdir_init(&d) == 0);
    char src[128], dst[128], err[256];
    tdir_path(&d, "p.jpg", src, sizeof src);
    tdir_path(&d, "p.thumb", dst, sizeof dst);
    int ok = save_jpeg(make_image(300, 900, 3, SOLID, (uint8_t[4]){ 200, 30, 40, 255 }), src) == 0;
    /* dst exists already: it is replaced whole. */
    ok = ok && write_file(dst, "old", 3) == 0;
    pl_thumb_info info;
    int rc = pl_thumb_make(src, dst, 96, &info, err, sizeof err);
    struct stat st;
    ok = ok && stat(dst, &st) == 0 && st.st_size > 100;
    tdir_release(&d);
    CHECK(ok);
    CHECK_EQ(rc, 0);
    CHECK_STR(info.mime, "image/jpeg");
    CHECK_EQ(info.width, 300);
    CHECK_EQ(info.height, 900);
    CHECK_EQ(info.thumb_width, 32);
    CHECK_EQ(info.thumb_height, 96);
    CHECK(placeholder_ok(&info));
    long dc = placeholder_dc(&info);
    CHECK(near((int)(dc >> 16), 200, 4) && near((int)(dc >> 8 & 255), 30, 4) &&
          near((int)(dc & 255), 40, 4));
}

/* Smaller than max_side: same size, never upscaled; grey stays valid. */
TEST(thumb_small_grey_not_upscaled) {
    tdir d;
    CHECK(tdir_init(&d) == 0);
    char src[128], dst[128], err[256];
    tdir_path(&d, "g.png", src, sizeof src);
    tdir_path(&d, "g.thumb", dst, sizeof dst);
    int ok = save_png(make_image(40, 30, 1, SOLID, (uint8_t[4]){ 128 }), src) == 0;
    pl_thumb_info info;
    int rc = pl_thumb_make(src, dst, 320, &info, err, sizeof err);
    tdir_release(&d);
    CHECK(ok);
    CHECK_EQ(rc, 0);
    CHECK_EQ(info.thumb_width, 40);
    CHECK_EQ(info.thumb_height, 30);
    CHECK(placeholder_ok(&info));
    CHECK_EQ(placeholder_dc(&info), 0x808080);
}

/* Transparency survives: the thumbnail is WebP with alpha. */
TEST(thumb_alpha_gives_webp) {
    tdir d;
    CHECK(tdir_init(&d) == 0);
    char src[128], dst[128], err[256];
    tdir_path(&d, "t.png", src, sizeof src);
    tdir_path(&d, "t.thumb", dst, sizeof dst);
    int ok = save_png(make_image(64, 64, 4, SOLID, (uint8_t[4]){ 0, 0, 0, 0 }), src) == 0;
    pl_thumb_info info;
    int rc = pl_thumb_make(src, dst, 32, &info, err, sizeof err);
    size_t len = 0;
    unsigned char *bytes = read_file(dst, &len);
    int webp = bytes && len > 12 && memcmp(bytes, "RIFF", 4) == 0 && memcmp(bytes + 8, "WEBP", 4) == 0;
    free(bytes);
    VipsImage *back = vips_image_new_from_file(dst, NULL);
    int alpha = back && vips_image_hasalpha(back);
    if (back) g_object_unref(back);
    tdir_release(&d);
    CHECK(ok);
    CHECK_EQ(rc, 0);
    CHECK_STR(info.thumb_mime, "image/webp");
    CHECK(webp);
    CHECK(alpha);
    CHECK_EQ(placeholder_dc(&info), 0xFFFFFF);   /* transparent shows as white */
}

/* A 120x60 GIF of two halves (rgba the left one's), thumbnailed to 60
 * wide: 0, or -100 when it could not be made. */
static int gif_thumb(int bands, const uint8_t rgba[4], pl_thumb_info *info) {
    tdir d;
    if (tdir_init(&d) != 0) return -100;
    char src[128], dst[128], err[256];
    tdir_path(&d, "a.gif", src, sizeof src);
    tdir_path(&d, "a.thumb", dst, sizeof dst);
    VipsImage *img = make_image(120, 60, bands, HALVES, rgba);
    int ok = vips_gifsave(img, src, NULL) == 0;
    g_object_unref(img);
    int rc = ok ? pl_thumb_make(src, dst, 60, info, err, sizeof err) : -100;
    tdir_release(&d);
    return rc;
}

TEST(thumb_gif_first_frame) {
    pl_thumb_info info;
    CHECK_EQ(gif_thumb(3, (uint8_t[4]){ 255, 0, 0, 255 }, &info), 0);
    CHECK_STR(info.mime, "image/gif");
    CHECK_EQ(info.thumb_width, 60);
    CHECK_EQ(info.thumb_height, 30);
    /* opaque: a JPEG thumbnail (libvips loads a GIF with an alpha band
     * whatever it holds; audit N3: this one was WebP) */
    CHECK_STR(info.thumb_mime, "image/jpeg");
}

/* A GIF with a transparent colour keeps it: WebP. */
TEST(thumb_gif_transparent_is_webp) {
    pl_thumb_info info;
    CHECK_EQ(gif_thumb(4, (uint8_t[4]){ 255, 0, 0, 0 }, &info), 0);   /* the left half clear */
    CHECK_STR(info.thumb_mime, "image/webp");
}

/* WebP, HEIC (HEVC) and AVIF (AV1) originals, the formats phones send. */
TEST(thumb_webp_heic_avif) {
    tdir d;
    CHECK(tdir_init(&d) == 0);
    static const char *const names[] = { "a.webp", "a.heic", "a.avif" };
    static const char *const mimes[] = { "image/webp", "image/heic", "image/avif" };
    int saved[3], rc[3], tw[3], th[3];
    char mime[3][32];
    for (int i = 0; i < 3; i++) {
        char src[128], dst[128], err[256];
        tdir_path(&d, names[i], src, sizeof src);
        tdir_path(&d, "out.thumb", dst, sizeof dst);
        VipsImage *img = make_image(160, 120, 3, HALVES, (uint8_t[4]){ 255, 0, 0, 255 });
        saved[i] = i == 0 ? vips_webpsave(img, src, NULL)
                 : vips_heifsave(img, src, "compression", i == 1
                                 ? VIPS_FOREIGN_HEIF_COMPRESSION_HEVC
                                 : VIPS_FOREIGN_HEIF_COMPRESSION_AV1, NULL);
        g_object_unref(img);
        pl_thumb_info info;
        rc[i] = pl_thumb_make(src, dst, 80, &info, err, sizeof err);
        if (rc[i] != 0) fprintf(stderr, "  %s: %s\n", names[i], err);
        tw[i] = info.thumb_width;
        th[i] = info.thumb_height;
        snprintf(mime[i], sizeof mime[i], "%s", info.mime);
    }
    tdir_release(&d);
    for (int i = 0; i < 3; i++) {
        CHECK_EQ(saved[i], 0);
        CHECK_EQ(rc[i], 0);
        CHECK_STR(mime[i], mimes[i]);
        CHECK_EQ(tw[i], 80);
        CHECK_EQ(th[i], 60);
    }
}

/* An APP1 EXIF segment: big-endian TIFF, IFD0 = { Orientation = 6,
 * GPSInfo -> GPS IFD }, GPS IFD = { GPSLatitudeRef "N", GPSMapDatum
 * "PLGPSMARK" } (the marker lets the test find GPS data in a file). */
static const unsigned char EXIF_APP1[] = {
    0xFF, 0xE1, 0x00, 2 + 6 + 78,
    'E', 'x', 'i', 'f', 0, 0,
    /* TIFF header, IFD0 at 8 */
    'M', 'M', 0x00, 0x2A, 0x00, 0x00, 0x00, 0x08,
    /* IFD0 at 8: 2 entries */
    0x00, 0x02,
    0x01, 0x12, 0x00, 0x03, 0x00, 0x00, 0x00, 0x01, 0x00, 0x06, 0x00, 0x00, /* Orientation SHORT 6 */
    0x88, 0x25, 0x00, 0x04, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 38,   /* GPSInfo LONG -> 38 */
    0x00, 0x00, 0x00, 0x00,                                                 /* no next IFD */
    /* GPS IFD at 38: 2 entries */
    0x00, 0x02,
    0x00, 0x01, 0x00, 0x02, 0x00, 0x00, 0x00, 0x02, 'N', 0, 0, 0,           /* GPSLatitudeRef "N" */
    0x00, 0x12, 0x00, 0x02, 0x00, 0x00, 0x00, 0x0A, 0x00, 0x00, 0x00, 68,   /* GPSMapDatum -> 68 */
    0x00, 0x00, 0x00, 0x00,
    /* data at 68 */
    'P', 'L', 'G', 'P', 'S', 'M', 'A', 'R', 'K', 0,
};

/* Orientation 6 means "turn 90 degrees clockwise to show": the stored
 * image's left (red) half becomes the top. The original's reported size
 * is upright, and the thumbnail carries no EXIF, so no GPS. */
TEST(thumb_exif_orientation_and_strip) {
    tdir d;
    CHECK(tdir_init(&d) == 0);
    char plain[128], src[128], dst[128], err[256];
    tdir_path(&d, "plain.jpg", plain, sizeof plain);
    tdir_path(&d, "exif.jpg", src, sizeof src);
    tdir_path(&d, "exif.thumb", dst, sizeof dst);
    int ok = save_jpeg(make_image(200, 100, 3, HALVES, (uint8_t[4]){ 255, 0, 0, 255 }), plain) == 0;
    size_t len = 0;
    unsigned char *jpg = ok ? read_file(plain, &len) : NULL;
    ok = jpg && len > 2 && jpg[0] == 0xFF && jpg[1] == 0xD8;
    if (ok) {   /* SOI, our APP1, then the rest of the file */
        size_t n = 2 + sizeof EXIF_APP1 + len - 2;
        unsigned char *with = malloc(n);
        memcpy(with, jpg, 2);
        memcpy(with + 2, EXIF_APP1, sizeof EXIF_APP1);
        memcpy(with + 2 + sizeof EXIF_APP1, jpg + 2, len - 2);
        ok = write_file(src, with, n) == 0;
        free(with);
    }
    free(jpg);
    unsigned char *orig = ok ? read_file(src, &len) : NULL;
    int orig_has_gps = orig && contains(orig, len, "PLGPSMARK");
    free(orig);

    pl_thumb_info info;
    int rc = pl_thumb_make(src, dst, 100, &info, err, sizeof err);
    int top[3] = { 0 }, bottom[3] = { 0 };
    ok = ok && pixel_at(dst, 25, 10, top) == 0 && pixel_at(dst, 25, 90, bottom) == 0;
    unsigned char *thumb = read_file(dst, &len);
    int thumb_has_exif = !thumb || contains(thumb, len, "PLGPSMARK") || contains(thumb, len, "Exif");
    free(thumb);
    VipsImage *back = vips_image_new_from_file(dst, NULL);
    int meta = !back || vips_image_get_typeof(back, "exif-data") ||
               vips_image_get_typeof(back, "icc-profile-data") ||
               vips_image_get_typeof(back, "xmp-data");
    if (back) g_object_unref(back);
    tdir_release(&d);
    CHECK(ok);
    CHECK(orig_has_gps);
    if (rc != 0) fprintf(stderr, "  err: %s\n", err);
    CHECK_EQ(rc, 0);
    CHECK_EQ(info.width, 100);
    CHECK_EQ(info.height, 200);
    CHECK_EQ(info.thumb_width, 50);
    CHECK_EQ(info.thumb_height, 100);
    CHECK(top[0] > 200 && top[2] < 60);       /* red on top    */
    CHECK(bottom[2] > 200 && bottom[0] < 60); /* blue below    */
    CHECK(!thumb_has_exif);
    CHECK(!meta);
}

/* Garbage, text, an empty file, a missing file and formats outside the
 * allow-list all fail cleanly and write nothing. */
TEST(thumb_rejects_non_images) {
    tdir d;
    CHECK(tdir_init(&d) == 0);
    char p[128], dst[128], err[256];
    tdir_path(&d, "out.thumb", dst, sizeof dst);
    pl_thumb_info info;
    int rc[8];
    int n = 0;

    unsigned char junk[4096];
    unsigned s = 99;
    for (size_t i = 0; i < sizeof junk; i++) { s = s * 1103515245u + 12345u; junk[i] = (unsigned char)(s >> 16); }
    tdir_path(&d, "junk", p, sizeof p);
    write_file(p, junk, sizeof junk);
    rc[n++] = pl_thumb_make(p, dst, 64, &info, err, sizeof err);

    tdir_path(&d, "empty", p, sizeof p);
    write_file(p, "", 0);
    rc[n++] = pl_thumb_make(p, dst, 64, &info, err, sizeof err);

    tdir_path(&d, "image.svg", p, sizeof p);
    const char *svg = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"10\" height=\"10\">"
                      "<rect width=\"10\" height=\"10\" fill=\"red\"/></svg>";
    write_file(p, svg, strlen(svg));
    rc[n++] = pl_thumb_make(p, dst, 64, &info, err, sizeof err);

    tdir_path(&d, "image.ppm", p, sizeof p);   /* an "untrusted" libvips loader */
    write_file(p, "P6\n2 2\n255\n\1\2\3\4\5\6\7\10\11\12\13\14", 23);
    rc[n++] = pl_thumb_make(p, dst, 64, &info, err, sizeof err);

    tdir_path(&d, "image.tif", p, sizeof p);   /* trusted by libvips, not by us */
    VipsImage *img = make_image(16, 16, 3, SOLID, (uint8_t[4]){ 1, 2, 3, 255 });
    int tiff_ok = vips_tiffsave(img, p, NULL) == 0;
    g_object_unref(img);
    rc[n++] = pl_thumb_make(p, dst, 64, &info, err, sizeof err);
    int probe_tiff = pl_thumb_probe(p, &info, err, sizeof err);

    tdir_path(&d, "missing.png", p, sizeof p);
    rc[n++] = pl_thumb_make(p, dst, 64, &info, err, sizeof err);

    int dst_exists = access(dst, F_OK) == 0;
    int files = tdir_count(&d);
    tdir_release(&d);
    CHECK(tiff_ok);
    CHECK_EQ(rc[0], PL_THUMB_EUNSUPPORTED);
    CHECK_EQ(rc[1], PL_THUMB_EUNSUPPORTED);
    CHECK_EQ(rc[2], PL_THUMB_EUNSUPPORTED);
    CHECK_EQ(rc[3], PL_THUMB_EUNSUPPORTED);
    CHECK_EQ(rc[4], PL_THUMB_EUNSUPPORTED);
    CHECK_EQ(probe_tiff, PL_THUMB_EUNSUPPORTED);
    CHECK_EQ(rc[5], PL_THUMB_EIO);
    CHECK(!dst_exists);
    CHECK_EQ(files, 5);   /* the five inputs, no temporary files */
    CHECK(strlen(err) > 0);
}

/* A file cut in half (JPEG and PNG of noise) is an error, never a crash
 * or a half-grey thumbnail. */
TEST(thumb_truncated) {
    tdir d;
    CHECK(tdir_init(&d) == 0);
    char full[128], cut[128], dst[128], err[256];
    tdir_path(&d, "out.thumb", dst, sizeof dst);
    int rc[2] = { 0, 0 };
    int ok = 1;
    for (int i = 0; i < 2; i++) {
        tdir_path(&d, i ? "full.png" : "full.jpg", full, sizeof full);
        tdir_path(&d, i ? "cut.png" : "cut.jpg", cut, sizeof cut);
        VipsImage *img = make_image(256, 256, 3, NOISE, (uint8_t[4]){ 0 });
        ok = ok && (i ? save_png(img, full) : save_jpeg(img, full)) == 0;
        size_t len = 0;
        unsigned char *bytes = read_file(full, &len);
        ok = ok && bytes && write_file(cut, bytes, len / 2) == 0;
        free(bytes);
        pl_thumb_info info;
        rc[i] = pl_thumb_make(cut, dst, 64, &info, err, sizeof err);
    }
    int dst_exists = access(dst, F_OK) == 0;
    int files = tdir_count(&d);
    tdir_release(&d);
    CHECK(ok);
    CHECK_EQ(rc[0], PL_THUMB_ECORRUPT);
    CHECK_EQ(rc[1], PL_THUMB_ECORRUPT);
    CHECK(!dst_exists);
    CHECK_EQ(files, 4);
}

/* Rewrites the first SOF0/SOF2 marker's height and width. */
static int patch_jpeg_size(unsigned char *jpg, size_t len, int w, int h) {
    for (size_t i = 2; i + 9 < len; i++)
        if (jpg[i] == 0xFF && (jpg[i + 1] == 0xC0 || jpg[i + 1] == 0xC2)) {
            jpg[i + 5] = (unsigned char)(h >> 8); jpg[i + 6] = (unsigned char)h;
            jpg[i + 7] = (unsigned char)(w >> 8); jpg[i + 8] = (unsigned char)w;
            return 0;
        }
    return -1;
}

static uint32_t crc32_png(const unsigned char *p, size_t n) {
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1)));
    }
    return c ^ 0xFFFFFFFFu;
}

static void put32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)(v >> 24); p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);  p[3] = (unsigned char)v;
}

/* Headers that promise more pixels than allowed are refused before
 * decoding (a real decode of these would need gigabytes), and report the
 * size they claim; pl_thumb_probe still reads them. */
TEST(thumb_refuses_bombs) {
    tdir d;
    CHECK(tdir_init(&d) == 0);
    char small[128], p[128], dst[128], err[256];
    tdir_path(&d, "small.jpg", small, sizeof small);
    tdir_path(&d, "out.thumb", dst, sizeof dst);
    int ok = save_jpeg(make_image(64, 64, 3, NOISE, (uint8_t[4]){ 0 }), small) == 0;
    size_t len = 0;
    unsigned char *jpg = ok ? read_file(small, &len) : NULL;
    pl_thumb_info info, probe;
    int rc_jpeg = 0, rc_side = 0, rc_probe = -100;

    ok = jpg && patch_jpeg_size(jpg, len, 60000, 60000) == 0;
    tdir_path(&d, "bomb.jpg", p, sizeof p);
    ok = ok && write_file(p, jpg, len) == 0;
    rc_jpeg = pl_thumb_make(p, dst, 64, &info, err, sizeof err);
    int jw = info.width, jh = info.height;
    rc_probe = pl_thumb_probe(p, &probe, err, sizeof err);

    ok = ok && patch_jpeg_size(jpg, len, 40000, 100) == 0;   /* 4 Mpx, one side too long */
    tdir_path(&d, "long.jpg", p, sizeof p);
    ok = ok && write_file(p, jpg, len) == 0;
    rc_side = pl_thumb_make(p, dst, 64, &info, err, sizeof err);
    free(jpg);

    /* PNG: signature, IHDR 20000x20000 RGB8 (400 Mpx), a few zero bytes
     * of IDAT, IEND. */
    unsigned char png[8 + 25 + 12 + 12] = { 0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n' };
    unsigned char *c = png + 8;
    put32(c, 13); memcpy(c + 4, "IHDR", 4); put32(c + 8, 20000); put32(c + 12, 20000);
    c[16] = 8; c[17] = 2; c[18] = 0; c[19] = 0; c[20] = 0;
    put32(c + 21, crc32_png(c + 4, 17));
    c += 25;
    put32(c, 0); memcpy(c + 4, "IDAT", 4); put32(c + 8, crc32_png(c + 4, 4));
    c += 12;
    put32(c, 0); memcpy(c + 4, "IEND", 4); put32(c + 8, crc32_png(c + 4, 4));
    tdir_path(&d, "bomb.png", p, sizeof p);
    ok = ok && write_file(p, png, sizeof png) == 0;
    pl_thumb_info pinfo;
    int rc_png = pl_thumb_make(p, dst, 64, &pinfo, err, sizeof err);

    int dst_exists = access(dst, F_OK) == 0;
    tdir_release(&d);
    CHECK(ok);
    CHECK_EQ(rc_jpeg, PL_THUMB_ETOOBIG);
    CHECK_EQ(jw, 60000);
    CHECK_EQ(jh, 60000);
    CHECK_EQ(rc_probe, 0);
    CHECK_EQ(probe.width, 60000);
    CHECK_STR(probe.mime, "image/jpeg");
    CHECK_EQ(rc_side, PL_THUMB_ETOOBIG);
    CHECK_EQ(rc_png, PL_THUMB_ETOOBIG);
    CHECK_EQ(pinfo.width, 20000);
    CHECK_STR(pinfo.mime, "image/png");
    CHECK(!dst_exists);
}

/* With no time at all, decoding a large image is stopped by the deadline
 * (checked between strips of output: a 1000-row thumbnail has dozens). */
TEST(thumb_timeout) {
    tdir d;
    CHECK(tdir_init(&d) == 0);
    char src[128], dst[128], err[256];
    tdir_path(&d, "big.png", src, sizeof src);
    tdir_path(&d, "big.thumb", dst, sizeof dst);
    int ok = save_png(make_image(2000, 2000, 3, SOLID, (uint8_t[4]){ 9, 9, 9, 255 }), src) == 0;
    pl_thumb_info info;
    int saved = pl_thumb_timeout_ms;
    pl_thumb_timeout_ms = 0;
    int rc = pl_thumb_make(src, dst, 1000, &info, err, sizeof err);
    int dst_exists = access(dst, F_OK) == 0;
    pl_thumb_timeout_ms = saved;
    int rc_again = pl_thumb_make(src, dst, 64, &info, err, sizeof err);
    tdir_release(&d);
    CHECK(ok);
    CHECK_EQ(rc, PL_THUMB_ETIMEOUT);
    CHECK(!dst_exists);
    CHECK_EQ(rc_again, 0);
}

TEST(thumb_bad_arguments) {
    tdir d;
    CHECK(tdir_init(&d) == 0);
    char src[128], dst[128], err[256];
    tdir_path(&d, "a.png", src, sizeof src);
    tdir_path(&d, "a.thumb", dst, sizeof dst);
    int ok = save_png(make_image(20, 20, 3, SOLID, (uint8_t[4]){ 1, 2, 3, 255 }), src) == 0;
    pl_thumb_info info;
    int r1 = pl_thumb_make(src, dst, 0, &info, err, sizeof err);
    int r2 = pl_thumb_make(src, dst, 64, NULL, err, sizeof err);
    int r3 = pl_thumb_make(NULL, dst, 64, &info, NULL, 0);
    tdir_path(&d, "no/such/dir/a.thumb", dst, sizeof dst);
    int r4 = pl_thumb_make(src, dst, 64, &info, err, sizeof err);
    int probe = pl_thumb_probe(src, &info, err, sizeof err);
    int files = tdir_count(&d);
    tdir_release(&d);
    CHECK(ok);
    CHECK_EQ(r1, PL_THUMB_EINVAL);
    CHECK_EQ(r2, PL_THUMB_EINVAL);
    CHECK_EQ(r3, PL_THUMB_EINVAL);
    CHECK_EQ(r4, PL_THUMB_EIO);
    CHECK_EQ(files, 1);
    CHECK_EQ(probe, 0);
    CHECK_EQ(info.width, 20);
    CHECK_EQ(info.thumb_width, 0);
    CHECK_STR(info.placeholder, "");
    CHECK_STR(pl_thumb_strerror(PL_THUMB_ETOOBIG), "image too large");
}

/* Several threads at once (as libuv's pool runs them) get the same
 * results as one. */
typedef struct job {
    const char   *src;
    char          dst[128];
    pl_thumb_info info;
    int           rc;
} job;

static void *run_job(void *arg) {
    job *j = arg;
    for (int i = 0; i < 3 && j->rc == 0; i++)
        j->rc = pl_thumb_make(j->src, j->dst, 48, &j->info, NULL, 0);
    return NULL;
}

TEST(thumb_threads) {
    tdir d;
    CHECK(tdir_init(&d) == 0);
    char src[128];
    tdir_path(&d, "n.jpg", src, sizeof src);
    int ok = save_jpeg(make_image(300, 200, 3, NOISE, (uint8_t[4]){ 0 }), src) == 0;
    job jobs[4];
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        memset(&jobs[i], 0, sizeof jobs[i]);
        jobs[i].src = src;
        snprintf(jobs[i].dst, sizeof jobs[i].dst, "%s/t%d", d.root, i);
        pthread_create(&th[i], NULL, run_job, &jobs[i]);
    }
    for (int i = 0; i < 4; i++) pthread_join(th[i], NULL);
    tdir_release(&d);
    CHECK(ok);
    for (int i = 0; i < 4; i++) {
        CHECK_EQ(jobs[i].rc, 0);
        CHECK_EQ(jobs[i].info.thumb_width, 48);
        CHECK_EQ(jobs[i].info.thumb_height, 32);
        CHECK_STR(jobs[i].info.placeholder, jobs[0].info.placeholder);
    }
}
