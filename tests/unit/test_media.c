/* test_media.c — media policy (media/media.c), Range parsing and ETag
 * matching (http/file.c), the blob store (media/blob.c). */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/clock.h"
#include "http/file.h"
#include "media/blob.h"
#include "media/media.h"
#include "test.h"

static int rp(const char *v, int64_t size, pl_http_range *out) {
    return pl_http_range_parse(v, strlen(v), size, out, PL_HTTP_RANGES_MAX);
}

TEST(http_range_parse) {
    pl_http_range r[PL_HTTP_RANGES_MAX];
    CHECK_EQ(rp("bytes=0-9", 100, r), 1);
    CHECK_EQ(r[0].first, 0);
    CHECK_EQ(r[0].last, 9);
    CHECK_EQ(rp("bytes=50-", 100, r), 1);           /* open end */
    CHECK_EQ(r[0].first, 50);
    CHECK_EQ(r[0].last, 99);
    CHECK_EQ(rp("bytes=-10", 100, r), 1);           /* suffix */
    CHECK_EQ(r[0].first, 90);
    CHECK_EQ(r[0].last, 99);
    CHECK_EQ(rp("bytes=-1000", 100, r), 1);         /* suffix longer than the file */
    CHECK_EQ(r[0].first, 0);
    CHECK_EQ(rp("bytes=90-1000", 100, r), 1);       /* clamped */
    CHECK_EQ(r[0].last, 99);
    CHECK_EQ(rp("bytes=0-1, 5-6,-2", 100, r), 3);  /* several */
    CHECK_EQ(r[1].first, 5);
    CHECK_EQ(r[2].first, 98);
    CHECK_EQ(rp("bytes=100-", 100, r), PL_HTTP_RANGE_UNSAT);
    CHECK_EQ(rp("bytes=-0", 100, r), PL_HTTP_RANGE_UNSAT);
    CHECK_EQ(rp("bytes=200-300,0-0", 100, r), 1);   /* unsatisfiable ones dropped */
    CHECK_EQ(rp("bytes=0-0", 0, r), PL_HTTP_RANGE_UNSAT);
    CHECK_EQ(rp("bytes=5-1", 100, r), PL_HTTP_RANGE_IGNORE);   /* malformed: whole file */
    CHECK_EQ(rp("bytes=a-b", 100, r), PL_HTTP_RANGE_IGNORE);
    CHECK_EQ(rp("items=0-1", 100, r), PL_HTTP_RANGE_IGNORE);
    CHECK_EQ(rp("bytes=", 100, r), PL_HTTP_RANGE_IGNORE);
    CHECK_EQ(rp("bytes=0-1;x", 100, r), PL_HTTP_RANGE_IGNORE);
    /* huge positions are valid: a first past the file is unsatisfiable, a
     * last is clamped (RFC 9110; an audit found them served whole) */
    CHECK_EQ(rp("bytes=99999999999999999999-", 100, r), PL_HTTP_RANGE_UNSAT);
    CHECK_EQ(rp("bytes=9223372036854775807-9223372036854775807", 100, r), PL_HTTP_RANGE_UNSAT);
    CHECK_EQ(rp("bytes=0-9223372036854775807", 100, r), 1);
    CHECK_EQ(r[0].last, 99);
    CHECK_EQ(rp("bytes=10-99999999999999999999999", 100, r), 1);
    CHECK_EQ(r[0].first, 10);
    CHECK_EQ(r[0].last, 99);
    CHECK_EQ(rp("bytes=0-0,1-1,2-2,3-3,4-4,5-5,6-6,7-7,8-8", 100, r), PL_HTTP_RANGE_TOOMANY);
}

TEST(http_etag_match) {
    const char *e = "abc123";
    CHECK(pl_http_etag_match("\"abc123\"", 8, e));
    CHECK(pl_http_etag_match("W/\"abc123\"", 10, e));
    CHECK(pl_http_etag_match("\"x\", \"abc123\"", 13, e));
    CHECK(pl_http_etag_match("*", 1, e));
    CHECK(!pl_http_etag_match("\"abc12\"", 7, e));
    CHECK(!pl_http_etag_match("abc123", 6, e));      /* unquoted is not an entity tag */
    CHECK(!pl_http_etag_match("", 0, e));
}

/* If-Range compares strongly (RFC 9110 13.1.5): only the exact strong tag. */
static int ir(const char *v, const char *etag) { return pl_http_if_range_match(v, strlen(v), etag); }

TEST(http_if_range_match) {
    const char *e = "abc123";
    CHECK(ir("\"abc123\"", e));
    CHECK(!ir("W/\"abc123\"", e));                  /* weak: never */
    CHECK(!ir("\"abc12\"", e));
    CHECK(!ir("\"abc1234\"", e));
    CHECK(!ir("\"x\", \"abc123\"", e));            /* one tag, not a list */
    CHECK(!ir("*", e));
    CHECK(!ir("abc123", e));
    CHECK(!ir("\"", e));
    CHECK(!ir("", e));
    CHECK(!ir("Wed, 21 Oct 2015 07:28:00 GMT", e));  /* no Last-Modified to compare a date with */
    CHECK(!ir("\"abc123\"", NULL));
}

TEST(media_kinds_and_inert_types) {
    CHECK_EQ(pl_media_kind_of("image/png"), PL_MEDIA_IMAGE);
    CHECK_EQ(pl_media_kind_of("image/svg+xml"), PL_MEDIA_FILE);   /* scriptable */
    CHECK_EQ(pl_media_kind_of("video/mp4"), PL_MEDIA_VIDEO);
    CHECK_EQ(pl_media_kind_of("audio/ogg"), PL_MEDIA_AUDIO);
    CHECK_EQ(pl_media_kind_of("application/pdf"), PL_MEDIA_FILE);
    CHECK_EQ(pl_media_kind_of(NULL), PL_MEDIA_FILE);
    CHECK_STR(pl_media_serve_type("image/jpeg"), "image/jpeg");
    CHECK_STR(pl_media_serve_type("text/html"), "application/octet-stream");
    CHECK_STR(pl_media_serve_type("image/svg+xml"), "application/octet-stream");
    CHECK_STR(pl_media_serve_type("application/javascript"), "application/octet-stream");
    CHECK_STR(pl_media_serve_type("application/x-executable"), "application/octet-stream");
    char out[128];
    pl_media_pick_type("image/png", "text/html", out, sizeof out);       /* a lie: the bytes win */
    CHECK_STR(out, "text/html");
    pl_media_pick_type("audio/webm", "video/webm", out, sizeof out);     /* a voice note */
    CHECK_STR(out, "audio/webm");
    pl_media_pick_type("image/png", "application/octet-stream", out, sizeof out);  /* never upgraded */
    CHECK_STR(out, "application/octet-stream");
    pl_media_pick_type("text/html", "text/plain", out, sizeof out);      /* never made active */
    CHECK_STR(out, "text/plain");
    pl_media_pick_type("text/csv", "text/plain", out, sizeof out);       /* more precise, inert */
    CHECK_STR(out, "text/csv");
    pl_media_pick_type("bad type!", "image/png", out, sizeof out);
    CHECK_STR(out, "image/png");
    /* scripts, programs and unregistered x- types only libmagic may name
     * (audit J2 F1: application/x-sh was kept over text/plain) */
    static const char *const active[] = {
        "application/x-sh", "text/x-sh", "text/x-python", "application/x-php", "application/x-httpd-php",
        "text/x-perl", "application/x-tcl", "application/x-bat", "application/hta", "text/vbscript",
        "application/javascript", "application/xhtml+xml", "application/vnd.microsoft.portable-executable",
        "application/x-anything", "application/java-archive", "application/wasm",
        /* markup whose word is not html/xml alone (audit N3: kept as the mime) */
        "text/xsl", "application/xslt+xml", "text/vnd.wap.wml", "application/vnd.ms-htmlhelp",
        "application/mathml", "application/vnd.mozilla.xul+xml", NULL,
    };
    for (int i = 0; active[i]; i++) {
        pl_media_pick_type(active[i], "text/plain", out, sizeof out);
        CHECK_STR(out, "text/plain");
    }
    pl_media_pick_type("application/x-sh", "text/x-shellscript", out, sizeof out);   /* libmagic says so */
    CHECK_STR(out, "text/x-shellscript");
    pl_media_pick_type("application/pdf", "application/octet-stream", out, sizeof out);
    CHECK_STR(out, "application/pdf");
    pl_media_pick_type("text/markdown", "text/plain", out, sizeof out);
    CHECK_STR(out, "text/markdown");
}

TEST(media_sniff) {
    CHECK_EQ(pl_media_sniff_init(), 0);
    char out[128];
    static const unsigned char png[] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n', 0, 0, 0, 13,
                                        'I', 'H', 'D', 'R', 0, 0, 0, 1, 0, 0, 0, 1, 8, 2, 0, 0, 0};
    pl_media_sniff(png, sizeof png, out, sizeof out);
    CHECK_STR(out, "image/png");
    const char *html = "<!DOCTYPE html><html><body><script>alert(1)</script></body></html>";
    pl_media_sniff(html, strlen(html), out, sizeof out);
    CHECK_STR(out, "text/html");
    pl_media_sniff("", 0, out, sizeof out);
    CHECK_STR(out, "application/octet-stream");
}

TEST(media_sanitize_name) {
    char out[64];
    pl_media_sanitize_name("../../etc/passwd", 16, out, sizeof out);
    CHECK_STR(out, "passwd");
    pl_media_sanitize_name("C:\\Users\\x\\evil.exe", 19, out, sizeof out);
    CHECK_STR(out, "evil.exe");
    pl_media_sanitize_name("..hidden", 8, out, sizeof out);
    CHECK_STR(out, "hidden");
    pl_media_sanitize_name("a\"b\r\nc.txt", 10, out, sizeof out);
    CHECK_STR(out, "abc.txt");
    pl_media_sanitize_name("", 0, out, sizeof out);
    CHECK_STR(out, "file");
    pl_media_sanitize_name("/", 1, out, sizeof out);
    CHECK_STR(out, "file");
    pl_media_sanitize_name("caf\xc3\xa9 \xff.png", 11, out, sizeof out);   /* bad UTF-8 byte */
    CHECK_STR(out, "caf\xc3\xa9 _.png");
    char small[6];
    pl_media_sanitize_name("\xc3\xa9\xc3\xa9\xc3\xa9", 6, small, sizeof small);  /* cut on a character */
    CHECK_STR(small, "\xc3\xa9\xc3\xa9");
    /* audit J2 F4, F7.4: a decoded NUL, C1 controls and invisible
     * formatting go; other spaces become plain; an emoji keeps its own */
    pl_media_sanitize_name("nul\0x.txt", 9, out, sizeof out);
    CHECK_STR(out, "nulx.txt");
    pl_media_sanitize_name("\xe2\x80\xaegnp.exe", 10, out, sizeof out);          /* U+202E */
    CHECK_STR(out, "gnp.exe");
    pl_media_sanitize_name("a\xe2\x81\xa6" "b\xe2\x81\xa9\xe2\x80\x8b\xc2\x85.txt", 17, out, sizeof out);
    CHECK_STR(out, "ab.txt");
    pl_media_sanitize_name("\xef\xbb\xbf\xc2\xa0.a\xc2\xa0" "b \xe3\x80\x80", 14, out, sizeof out);
    CHECK_STR(out, "a b");
    pl_media_sanitize_name("\xe2\x9d\xa4\xef\xb8\x8f.png", 10, out, sizeof out);  /* ❤️ */
    CHECK_STR(out, "\xe2\x9d\xa4\xef\xb8\x8f.png");
    pl_media_sanitize_name("\xe2\x80\x8e", 3, out, sizeof out);
    CHECK_STR(out, "file");
    /* a thumbnail's name (F7.5) */
    pl_media_thumb_name("green.png", "jpg", out, sizeof out);
    CHECK_STR(out, "green.jpg");
    pl_media_thumb_name("photo", "webp", out, sizeof out);
    CHECK_STR(out, "photo.webp");
    pl_media_thumb_name("a.b.tar", "jpg", out, sizeof out);
    CHECK_STR(out, "a.b.jpg");
    char seven[7];
    pl_media_thumb_name("\xc3\xa9\xc3\xa9\xc3\xa9.png", "jpg", seven, sizeof seven);   /* cut whole */
    CHECK_STR(seven, "\xc3\xa9.jpg");
    pl_media_thumb_name("\xc3\xa9\xc3\xa9\xc3\xa9.png", "jpg", small, sizeof small);   /* no room */
    CHECK_STR(small, ".jpg");
    pl_sbuf s;
    pl_sbuf_init(&s);
    pl_media_disposition(&s, "r\xc3\xa9sum\xc3\xa9 \"x\".pdf", 1);
    pl_sbuf_addc(&s, '\0');
    CHECK_STR(s.p, "Content-Disposition: attachment; filename=\"r__sum__ _x_.pdf\"; "
                   "filename*=UTF-8''r%C3%A9sum%C3%A9%20%22x%22.pdf\r\n");
    pl_sbuf_release(&s);
}

TEST(media_signed_urls) {
    uint8_t k[32];
    memset(k, 7, sizeof k);
    pl_media_set_key(k);
    char sig[48];
    pl_media_sign(12345, 2000, sig);
    CHECK_EQ(pl_media_verify(12345, 2000, sig, strlen(sig), 1999), 0);
    CHECK_EQ(pl_media_verify(12345, 2000, sig, strlen(sig), 2001), -2);   /* expired */
    CHECK_EQ(pl_media_verify(12346, 2000, sig, strlen(sig), 1999), -1);   /* another id */
    CHECK_EQ(pl_media_verify(12345, 2001, sig, strlen(sig), 1999), -1);   /* a longer life */
    CHECK_EQ(pl_media_verify(12345, 2000, sig, strlen(sig) - 1, 1999), -1);
    char bad[48];
    memcpy(bad, sig, sizeof bad);
    bad[0] = bad[0] == 'A' ? 'B' : 'A';
    CHECK_EQ(pl_media_verify(12345, 2000, bad, strlen(bad), 1999), -1);
    memset(k, 8, sizeof k);                  /* another deployment's key */
    pl_media_set_key(k);
    CHECK_EQ(pl_media_verify(12345, 2000, sig, strlen(sig), 1999), -1);
    /* the expiry is never less than now + ttl (audit J2 F5: the current
     * second was truncated first, up to a second was lost) */
    char url[200];
    int64_t exp;
    pl_media_set_url_ttl(2);
    for (int i = 0; i < 12; i++) {
        int64_t before = pl_now_ms();
        pl_media_url(1, 0, url, sizeof url, &exp);
        CHECK(exp * 1000 >= before + 2000);
        CHECK(exp * 1000 <= pl_now_ms() + 2000 + 2000);
        struct timespec ts = {0, 170 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    pl_media_set_url_ttl(3600);
}

TEST(media_blob_store_dedup) {
    char root[] = "/tmp/pl-blob-XXXXXX";
    CHECK(mkdtemp(root) != NULL);
    char err[128];
    pl_blob_store *b;
    CHECK_EQ(pl_blob_open(root, &b, err, sizeof err), 0);
    char sha[2][65];
    for (int i = 0; i < 2; i++) {            /* the same bytes twice */
        char tmp[1200];
        int fd;
        CHECK_EQ(pl_blob_temp(b, tmp, sizeof tmp, &fd), 0);
        CHECK_EQ(write(fd, "hello", 5), 5);
        close(fd);
        int64_t size;
        char head[4];
        size_t hl;
        CHECK_EQ(pl_blob_digest(tmp, sha[i], &size, head, sizeof head, &hl), 0);
        CHECK_EQ(size, 5);
        CHECK_EQ(hl, 4);
        CHECK_EQ(pl_blob_commit(b, tmp, sha[i]), 0);
        CHECK(access(tmp, F_OK) != 0);       /* moved, not copied */
    }
    CHECK_STR(sha[0], "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824");
    CHECK_STR(sha[0], sha[1]);
    int fd;
    int64_t size;
    CHECK_EQ(pl_blob_open_read(b, sha[0], &fd, &size), 0);
    CHECK_EQ(size, 5);
    close(fd);
    CHECK_EQ(pl_blob_remove(b, sha[0], 60000), 0);   /* too fresh: kept */
    CHECK_EQ(pl_blob_remove(b, sha[0], 0), 1);
    CHECK(pl_blob_open_read(b, sha[0], &fd, &size) < 0);
    CHECK_EQ(pl_blob_remove(b, sha[0], 0), 0);       /* absent */
    CHECK(pl_blob_path(b, "../etc", (char[64]){0}, 64) < 0);
    char cmd[200];
    snprintf(cmd, sizeof cmd, "rm -rf %s", root);
    CHECK_EQ(system(cmd), 0);
    pl_blob_close(&b);
}

TEST(media_blob_sweep_abandoned) {
    char root[] = "/tmp/pl-sweep-XXXXXX";
    CHECK(mkdtemp(root) != NULL);
    char err[128], p[1200];
    pl_blob_store *b;
    CHECK_EQ(pl_blob_open(root, &b, err, sizeof err), 0);
    int fd;
    CHECK_EQ(pl_blob_temp(b, p, sizeof p, &fd), 0);            /* an abandoned single upload */
    close(fd);
    const char *names[] = {"uploads/aaaa", "uploads/aaaa.json", "uploads/bbbb.json"};
    for (int i = 0; i < 3; i++) {
        snprintf(p, sizeof p, "%s/%s", root, names[i]);
        FILE *f = fopen(p, "w");
        CHECK(f != NULL);
        fclose(f);
    }
    CHECK_EQ(pl_blob_sweep(b, 60000), 0);                        /* all fresh: kept */
    CHECK_EQ(pl_blob_sweep(b, 0), 4);                            /* temp, data + its .json, a lone .json */
    snprintf(p, sizeof p, "%s/uploads/aaaa.json", root);
    CHECK(access(p, F_OK) != 0);
    /* an upload a PATCH holds (api_upload_resumable.c's lock on its data file) stays */
    const char *held[] = {"uploads/cccc", "uploads/cccc.json"};
    for (int i = 0; i < 2; i++) {
        snprintf(p, sizeof p, "%s/%s", root, held[i]);
        FILE *f = fopen(p, "w");
        CHECK(f != NULL);
        fclose(f);
    }
    snprintf(p, sizeof p, "%s/uploads/cccc", root);
    int lk = open(p, O_WRONLY | O_APPEND | O_CLOEXEC);
    struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
    CHECK(lk >= 0 && fcntl(lk, F_OFD_SETLK, &fl) == 0);
    CHECK_EQ(pl_blob_sweep(b, 0), 0);
    CHECK(access(p, F_OK) == 0);
    close(lk);                                                   /* the PATCH ended */
    CHECK_EQ(pl_blob_sweep(b, 0), 2);
    CHECK(access(p, F_OK) != 0);
    char cmd[200];
    snprintf(cmd, sizeof cmd, "rm -rf %s", root);
    CHECK_EQ(system(cmd), 0);
    pl_blob_close(&b);
}

/* Resumable uploads in progress by owner, for the quota (audit J2 F2):
 * counted with their declared length while their .json exists; a marker
 * whose .json is gone is stale and removed (by the count or the sweep). */
TEST(media_blob_uploads_by_owner) {
    char root[] = "/tmp/pl-blob-XXXXXX", p[300], err[128];
    CHECK(mkdtemp(root) != NULL);
    pl_blob_store *b;
    CHECK_EQ(pl_blob_open(root, &b, err, sizeof err), 0);
    static const char *const uid[] = {"aaaa", "bbbb", "cccc"};
    for (int i = 0; i < 3; i++) {
        snprintf(p, sizeof p, "%s/uploads/%s.json", root, uid[i]);
        FILE *f = fopen(p, "w");
        CHECK(f != NULL);
        fclose(f);
        CHECK_EQ(pl_blob_upload_mark(b, i < 2 ? 7 : 8, uid[i], 1000 * (i + 1)), 0);
    }
    int64_t bytes;
    CHECK_EQ(pl_blob_uploads_of(b, 7, NULL, &bytes), 2);
    CHECK_EQ(bytes, 3000);
    CHECK_EQ(pl_blob_uploads_of(b, 7, "aaaa", &bytes), 1);        /* the one completing */
    CHECK_EQ(bytes, 2000);
    CHECK_EQ(pl_blob_uploads_of(b, 8, NULL, &bytes), 1);
    CHECK_EQ(bytes, 3000);
    CHECK_EQ(pl_blob_uploads_of(b, 9, NULL, &bytes), 0);
    pl_blob_upload_unmark(b, 7, "aaaa", 1000);                   /* completed */
    CHECK_EQ(pl_blob_uploads_of(b, 7, NULL, &bytes), 1);
    CHECK_EQ(bytes, 2000);
    snprintf(p, sizeof p, "%s/uploads/bbbb.json", root);         /* swept: the marker is stale */
    unlink(p);
    CHECK_EQ(pl_blob_uploads_of(b, 7, NULL, &bytes), 0);
    snprintf(p, sizeof p, "%s/uploads/cccc.json", root);
    unlink(p);
    CHECK_EQ(pl_blob_sweep(b, 0), 2);                            /* aaaa.json alone, cccc's marker */
    snprintf(p, sizeof p, "%s/uploads/owners/8", root);
    CHECK(access(p, F_OK) != 0);                                 /* empty: gone */
    char cmd[200];
    snprintf(cmd, sizeof cmd, "rm -rf %s", root);
    CHECK_EQ(system(cmd), 0);
    pl_blob_close(&b);
}
