/* blob.c — the directory blob store (see blob.h). */
#include "blob.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "../core/alloc.h"

struct pl_blob_store {
    char root[1024];
};

static int mkdir_ok(const char *p) { return mkdir(p, 0700) == 0 || errno == EEXIST ? 0 : -1; }

int pl_blob_open(const char *root, pl_blob_store **out, char *err, size_t errlen) {
    if (strlen(root) > 900) {
        snprintf(err, errlen, "media directory path too long");
        return -1;
    }
    char p[1100];
    const char *subs[] = {"", "/tmp", "/uploads"};
    for (int i = 0; i < 3; i++) {
        snprintf(p, sizeof p, "%s%s", root, subs[i]);
        if (mkdir_ok(p)) {
            snprintf(err, errlen, "cannot create %s: %s", p, strerror(errno));
            return -1;
        }
    }
    pl_blob_store *b = pl_calloc(1, sizeof *b);
    snprintf(b->root, sizeof b->root, "%s", root);
    *out = b;
    return 0;
}

void pl_blob_close(pl_blob_store **b) {
    free(*b);
    *b = NULL;
}

const char *pl_blob_root(const pl_blob_store *b) { return b->root; }

int pl_blob_sha_ok(const char *s) {
    if (!s) return 0;
    for (int i = 0; i < 64; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) return 0;
    return s[64] == '\0';
}

int pl_blob_path(const pl_blob_store *b, const char *sha, char *out, size_t cap) {
    if (!pl_blob_sha_ok(sha)) return -1;
    int n = snprintf(out, cap, "%s/%.2s/%.2s/%s", b->root, sha, sha + 2, sha);
    return n > 0 && (size_t)n < cap ? 0 : -1;
}

int pl_blob_temp(pl_blob_store *b, char *out, size_t cap, int *fd) {
    uint8_t r[12];
    char hex[25];
    randombytes_buf(r, sizeof r);
    sodium_bin2hex(hex, sizeof hex, r, sizeof r);
    snprintf(out, cap, "%s/tmp/%s", b->root, hex);
    *fd = open(out, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    return *fd < 0 ? -errno : 0;
}

int pl_blob_digest(const char *path, char sha[65], int64_t *size, void *head, size_t head_cap,
                   size_t *head_len) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -errno;
    crypto_hash_sha256_state st;
    crypto_hash_sha256_init(&st);
    uint8_t *buf = pl_malloc(256 * 1024);
    int64_t total = 0;
    *head_len = 0;
    int rc = 0;
    for (;;) {
        ssize_t n = read(fd, buf, 256 * 1024);
        if (n < 0) {
            if (errno == EINTR) continue;
            rc = -errno;
            break;
        }
        if (n == 0) break;
        if (*head_len < head_cap) {
            size_t k = head_cap - *head_len < (size_t)n ? head_cap - *head_len : (size_t)n;
            memcpy((uint8_t *)head + *head_len, buf, k);
            *head_len += k;
        }
        crypto_hash_sha256_update(&st, buf, (unsigned long long)n);
        total += n;
    }
    free(buf);
    close(fd);
    if (rc) return rc;
    uint8_t d[32];
    crypto_hash_sha256_final(&st, d);
    sodium_bin2hex(sha, 65, d, sizeof d);
    *size = total;
    return 0;
}

static int fsync_dir(const char *dir) {
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return -errno;
    int rc = fsync(fd) ? -errno : 0;
    close(fd);
    return rc;
}

int pl_blob_commit(pl_blob_store *b, const char *tmp, const char *sha) {
    char path[1200], dir[1200];
    if (pl_blob_path(b, sha, path, sizeof path)) return -EINVAL;
    int fd = open(tmp, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -errno;
    int rc = fsync(fd) ? -errno : 0;
    close(fd);
    if (rc) return rc;
    snprintf(dir, sizeof dir, "%s/%.2s", b->root, sha);
    if (mkdir_ok(dir)) return -errno;
    snprintf(dir, sizeof dir, "%s/%.2s/%.2s", b->root, sha, sha + 2);
    if (mkdir_ok(dir)) return -errno;
    if (rename(tmp, path)) return -errno;          /* onto an identical blob: same bytes, new mtime */
    return fsync_dir(dir);
}

int pl_blob_open_read(const pl_blob_store *b, const char *sha, int *fd, int64_t *size) {
    char path[1200];
    if (pl_blob_path(b, sha, path, sizeof path)) return -EINVAL;
    *fd = open(path, O_RDONLY | O_CLOEXEC);
    if (*fd < 0) return -errno;
    struct stat st;
    if (fstat(*fd, &st)) {
        int e = -errno;
        close(*fd);
        return e;
    }
    *size = st.st_size;
    return 0;
}

static int64_t age_ms(const struct stat *st) {
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    return ((int64_t)now.tv_sec - st->st_mtim.tv_sec) * 1000 + ((int64_t)now.tv_nsec - st->st_mtim.tv_nsec) / 1000000;
}

int pl_blob_room(const pl_blob_store *b, int64_t need, int64_t reserve, int64_t *avail) {
    struct statvfs vs;
    if (avail) *avail = -1;
    if (need <= 0 || reserve <= 0 || statvfs(b->root, &vs) != 0) return 0;
    unsigned long long room = (unsigned long long)vs.f_bavail * vs.f_frsize;
    if (room > INT64_MAX) room = INT64_MAX;
    if (avail) *avail = (int64_t)room;
    return (int64_t)room < reserve || (int64_t)room - reserve < need ? -ENOSPC : 0;
}

/* The OFD lock a PATCH holds on a resumable upload's data file
 * (api_upload.c invariant 4), taken without waiting: 0 with the descriptor
 * in *fd, -EBUSY when a PATCH holds it, or -errno when the file cannot be
 * opened (-ENOENT: gone). A PATCH that locks after the sweep (or a drop)
 * unlinked the file finds its path gone and answers 404. */
static int upload_lock(const char *path, int *fd) {
    *fd = open(path, O_WRONLY | O_CLOEXEC);              /* a write lock needs a writer */
    if (*fd < 0) return -errno;
    struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET};   /* the whole file */
    if (fcntl(*fd, F_OFD_SETLK, &fl) != 0) {
        int e = errno == EAGAIN || errno == EACCES ? -EBUSY : -errno;
        close(*fd);
        *fd = -1;
        return e;
    }
    return 0;
}

/* upload_lock for the sweep: the descriptor, or -1 for any failure. */
static int upload_trylock(const char *path) {
    int fd;
    return upload_lock(path, &fd) ? -1 : fd;
}

/* ---- resumable uploads by owner (the quota) --------------------------------- */

static void owner_dir(const pl_blob_store *b, int64_t owner, char *out, size_t cap) {
    snprintf(out, cap, "%s/uploads/owners/%lld", b->root, (long long)owner);
}

int pl_blob_upload_mark(pl_blob_store *b, int64_t owner, const char *uid, int64_t length) {
    char dir[1200], p[1300];
    for (int tries = 0; tries < 3; tries++) {            /* the sweep may rmdir an empty one */
        snprintf(dir, sizeof dir, "%s/uploads/owners", b->root);
        if (mkdir_ok(dir)) return -errno;
        owner_dir(b, owner, dir, sizeof dir);
        if (mkdir_ok(dir)) return -errno;
        snprintf(p, sizeof p, "%s/%s.%lld", dir, uid, (long long)length);
        int fd = open(p, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
        if (fd >= 0) {
            close(fd);
            return 0;
        }
        if (errno != ENOENT) return -errno;
    }
    return -ENOENT;
}

void pl_blob_upload_unmark(pl_blob_store *b, int64_t owner, const char *uid, int64_t length) {
    char dir[1200], p[1300];
    owner_dir(b, owner, dir, sizeof dir);
    snprintf(p, sizeof p, "%s/%s.%lld", dir, uid, (long long)length);
    unlink(p);
}

/* 1 if marker name "<uid>.<length>" is stale: its upload's
 * .json is gone (completed, failed or swept); *uid_len gets the uid's. */
static int marker_stale(const pl_blob_store *b, const char *name, size_t *uid_len) {
    const char *dot = strchr(name, '.');
    char meta[1200];
    struct stat st;
    *uid_len = dot ? (size_t)(dot - name) : strlen(name);
    snprintf(meta, sizeof meta, "%s/uploads/%.*s.json", b->root, (int)*uid_len, name);
    return !dot || stat(meta, &st) != 0;
}

int pl_blob_uploads_of(pl_blob_store *b, int64_t owner, const char *except, int64_t *bytes) {
    char dir[1200], p[1500];
    int n = 0;
    *bytes = 0;
    owner_dir(b, owner, dir, sizeof dir);
    DIR *d = opendir(dir);
    if (!d) return 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t ul;
        if (e->d_name[0] == '.') continue;
        if (marker_stale(b, e->d_name, &ul)) {
            snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
            unlink(p);
            continue;
        }
        if (except && strlen(except) == ul && strncmp(e->d_name, except, ul) == 0) continue;
        n++;
        *bytes += strtoll(e->d_name + ul + 1, NULL, 10);
    }
    closedir(d);
    return n;
}

int pl_blob_upload_drop(pl_blob_store *b, int64_t owner, const char *uid, int64_t length) {
    char p[1200], meta[1300];
    int fd, rc;
    snprintf(p, sizeof p, "%s/uploads/%s", b->root, uid);
    snprintf(meta, sizeof meta, "%s.json", p);
    if ((rc = upload_lock(p, &fd))) return rc;
    struct stat held, now;                   /* still the upload's file, not a blob it became */
    if (fstat(fd, &held) != 0) rc = -errno;
    else if (stat(p, &now) != 0) rc = -errno;
    else if (held.st_ino != now.st_ino || held.st_dev != now.st_dev) rc = -ENOENT;
    if (!rc && unlink(meta) != 0) rc = -errno;       /* -ENOENT: completed or swept */
    if (!rc) {
        unlink(p);
        pl_blob_upload_unmark(b, owner, uid, length);
    }
    close(fd);
    return rc;
}

/* The sweep's part for markers: stale ones go, then empty owner dirs. */
static int sweep_markers(pl_blob_store *b) {
    char root[1100], dir[1400], p[1700];
    int removed = 0;
    snprintf(root, sizeof root, "%s/uploads/owners", b->root);
    DIR *d = opendir(root);
    if (!d) return 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        snprintf(dir, sizeof dir, "%s/%s", root, e->d_name);
        DIR *o = opendir(dir);
        if (!o) continue;
        struct dirent *m;
        while ((m = readdir(o))) {
            size_t ul;
            if (m->d_name[0] == '.' || !marker_stale(b, m->d_name, &ul)) continue;
            snprintf(p, sizeof p, "%s/%s", dir, m->d_name);
            if (unlink(p) == 0) removed++;
        }
        closedir(o);
        rmdir(dir);                                      /* only if empty */
    }
    closedir(d);
    return removed;
}

int pl_blob_sweep(pl_blob_store *b, int64_t min_age_ms) {
    static const char *const subs[] = {"tmp", "uploads"};
    int removed = 0;
    for (int k = 0; k < 2; k++) {
        char dir[1100];
        snprintf(dir, sizeof dir, "%s/%s", b->root, subs[k]);
        DIR *d = opendir(dir);
        if (!d) continue;
        struct dirent *e;
        while ((e = readdir(d))) {
            if (e->d_name[0] == '.') continue;
            size_t n = strlen(e->d_name);
            char p[1400], meta[1410];
            struct stat st, sm;
            snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
            if (k == 1 && n > 5 && strcmp(e->d_name + n - 5, ".json") == 0) {
                snprintf(meta, sizeof meta, "%.*s", (int)(strlen(p) - 5), p);
                if (stat(meta, &sm) == 0) continue;          /* judged with its data */
            }
            if (lstat(p, &st) || !S_ISREG(st.st_mode) || age_ms(&st) < min_age_ms) continue;
            if (k == 1 && n > 5 && strcmp(e->d_name + n - 5, ".json") == 0) {   /* metadata alone */
                if (unlink(p) == 0) removed++;
                continue;
            }
            int lock = -1;
            if (k == 1) {
                snprintf(meta, sizeof meta, "%s.json", p);
                if (stat(meta, &sm) == 0 && age_ms(&sm) < min_age_ms) continue;
                if ((lock = upload_trylock(p)) < 0) continue;      /* a PATCH holds it */
                if (unlink(meta) == 0) removed++;
            }
            if (unlink(p) == 0) removed++;
            if (lock >= 0) close(lock);
        }
        closedir(d);
    }
    return removed + sweep_markers(b);
}

int pl_blob_remove(pl_blob_store *b, const char *sha, int64_t min_age_ms) {
    char path[1200];
    if (pl_blob_path(b, sha, path, sizeof path)) return -EINVAL;
    struct stat st;
    if (stat(path, &st)) return errno == ENOENT ? 0 : -errno;
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    int64_t age = ((int64_t)now.tv_sec - st.st_mtim.tv_sec) * 1000 +
                  ((int64_t)now.tv_nsec - st.st_mtim.tv_nsec) / 1000000;
    if (age < min_age_ms) return 0;
    if (unlink(path)) return errno == ENOENT ? 0 : -errno;
    return 1;
}
