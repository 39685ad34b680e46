/* store_sqlite_vfs.c — a VFS shim over SQLite's default (unix) VFS that
 * hands a transaction's WAL frames to the kernel in one write.
 *
 * Owns: the VFS "parley", its file wrapper and the WAL write buffer.
 *
 * Why: SQLite writes every WAL frame as two pwrite()s (the 24-byte frame
 * header, then the page), so a commit of 100 pages is 200 system calls
 * before its fsync: about 5 µs of the writer's CPU per frame here, against
 * under 1 µs per frame when the same bytes go in one pwrite()
 * (docs/benchmarks.md "Issue 11: one write per commit"). The shim keeps a
 * WAL file's writes in a buffer while each continues the previous one and
 * writes the buffer out before anything that must see the file as SQLite
 * wrote it: a sync, a read, the file's size, a truncation, a write
 * elsewhere, close, or a full buffer.
 *
 * Invariants:
 *   1. Only files SQLite opens as a WAL (SQLITE_OPEN_WAL) are buffered, and
 *      only writes from threads that are not background (invariant 4);
 *      every other write and every other call goes straight to the unix VFS.
 *   2. The buffer is written before xSync returns. A connection that writes
 *      through this VFS from a thread that is not background must use
 *      synchronous = FULL (the store's writer does): SQLite then syncs the
 *      WAL before it publishes a commit in the wal-index, so no other
 *      connection (its own file descriptor) can be told about a frame that
 *      is still in the buffer. A background thread's writes are never
 *      buffered, so its connection may use synchronous = NORMAL (the search
 *      indexer does: store_sqlite_index.c).
 *   3. A failed buffered write is reported by the call that wrote the
 *      buffer out (xSync for a commit), with the unix VFS's error code: the
 *      commit fails as it would have failed at the write itself.
 *   4. Writes from a background thread (sq_vfs_background: the checkpoint
 *      thread, the search indexer) are paced: after every SQ_VFS_PACE bytes
 *      written to a file the thread waits until the kernel has written
 *      them to the device (sync_file_range on a descriptor of its own for
 *      that file). Durability is unchanged (SQLite's xSync still follows);
 *      what changes is that a checkpoint's megabytes reach the disk in
 *      steps, so the writer's commit fsync waits behind one step instead
 *      of a whole checkpoint's fsync (docs/benchmarks.md "Issue 11: paced
 *      background writes"). A write-back error seen by the wait is seen
 *      again by the file's own fsync (Linux records it per open file).
 */
#include <fcntl.h>
#include <pthread.h>
#include <string.h>
#include <unistd.h>

#include "sqlite_int.h"

#define SQ_VFS_NAME "parley"
#define SQ_VFS_BUF   (2 * 1024 * 1024)  /* bytes buffered per WAL at most  */
#define SQ_VFS_CHUNK (64 * 1024)        /* bytes per write to the unix VFS */
#define SQ_VFS_PACE  (256 * 1024)       /* background bytes per wait (invariant 4) */

typedef struct wc_file {
    sqlite3_file   base;                 /* pMethods: wc_io                  */
    sqlite3_file  *real;                 /* the unix VFS's file, after this  */
    int            wal;                  /* buffered (invariant 1)           */
    unsigned char *buf;                  /* sqlite3_malloc'ed on first use   */
    int            len;
    sqlite3_int64  off;                  /* file offset of buf[0]            */
    const char    *name;                 /* the path, as SQLite opened it    */
    int            pace_fd;              /* invariant 4: -1 until needed     */
    sqlite3_int64  pace_lo, pace_hi;     /* the span written since the last wait */
    sqlite3_int64  pace_n;               /* and its bytes                    */
} wc_file;

static __thread int wc_background;       /* invariant 4                      */
static unsigned long wc_waits;           /* atomic: pacing waits, for tests  */

static sqlite3_vfs *wc_real;             /* the default VFS, set once        */

#define REAL(f) (((wc_file *)(f))->real)

/* Counts n bytes written at off; on a background thread, waits once
 * SQ_VFS_PACE of them are pending (invariant 4). Best effort: without a
 * descriptor of its own the file is simply not paced. */
static void wc_pace(wc_file *p, sqlite3_int64 off, int n) {
    if (!wc_background || !p->name) return;
    if (p->pace_n == 0 || off < p->pace_lo) p->pace_lo = off;
    if (p->pace_n == 0 || off + n > p->pace_hi) p->pace_hi = off + n;
    p->pace_n += n;
    if (p->pace_n < SQ_VFS_PACE) return;
    p->pace_n = 0;
    if (p->pace_fd == -1 && (p->pace_fd = open(p->name, O_RDONLY | O_CLOEXEC)) < 0) p->pace_fd = -2;
    if (p->pace_fd < 0) return;
    sync_file_range(p->pace_fd, p->pace_lo, p->pace_hi - p->pace_lo,
                    SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE | SYNC_FILE_RANGE_WAIT_AFTER);
    __atomic_fetch_add(&wc_waits, 1, __ATOMIC_RELAXED);
}

/* Writes the buffer out (invariant 3); 0 or the unix VFS's error. In
 * pieces: the unix VFS writes at most 128 KiB - 1 bytes per call (it masks
 * the length) and reports a longer write as SQLITE_FULL. */
static int wc_flush(wc_file *p) {
    int rc = SQLITE_OK;
    for (int at = 0; at < p->len && rc == SQLITE_OK; at += SQ_VFS_CHUNK) {
        int n = p->len - at < SQ_VFS_CHUNK ? p->len - at : SQ_VFS_CHUNK;
        rc = p->real->pMethods->xWrite(p->real, p->buf + at, n, p->off + at);
        if (rc == SQLITE_OK) wc_pace(p, p->off + at, n);
    }
    p->len = 0;
    return rc;
}

static int wc_close(sqlite3_file *f) {
    wc_file *p = (wc_file *)f;
    int rc = wc_flush(p);
    int rc2 = p->real->pMethods->xClose(p->real);
    if (p->pace_fd >= 0) close(p->pace_fd);
    sqlite3_free(p->buf);
    p->buf = NULL;
    return rc != SQLITE_OK ? rc : rc2;
}

static int wc_read(sqlite3_file *f, void *out, int n, sqlite3_int64 off) {
    wc_file *p = (wc_file *)f;
    int rc = wc_flush(p);
    return rc != SQLITE_OK ? rc : p->real->pMethods->xRead(p->real, out, n, off);
}

/* Writes straight to the unix VFS, paced (invariant 4). */
static int wc_write_through(wc_file *p, const void *in, int n, sqlite3_int64 off) {
    int rc = p->real->pMethods->xWrite(p->real, in, n, off);
    if (rc == SQLITE_OK) wc_pace(p, off, n);
    return rc;
}

static int wc_write(sqlite3_file *f, const void *in, int n, sqlite3_int64 off) {
    wc_file *p = (wc_file *)f;
    if (!p->wal || wc_background) {      /* invariant 1 */
        int rc = p->len ? wc_flush(p) : SQLITE_OK;
        return rc != SQLITE_OK ? rc : wc_write_through(p, in, n, off);
    }
    if (p->len > 0 && (off != p->off + p->len || p->len + n > SQ_VFS_BUF)) {
        int rc = wc_flush(p);
        if (rc != SQLITE_OK) return rc;
    }
    if (n > SQ_VFS_CHUNK) return wc_write_through(p, in, n, off);
    if (!p->buf && !(p->buf = sqlite3_malloc(SQ_VFS_BUF)))
        return wc_write_through(p, in, n, off);   /* unbuffered, not failed */
    if (p->len == 0) p->off = off;
    memcpy(p->buf + p->len, in, (size_t)n);
    p->len += n;
    return SQLITE_OK;
}

static int wc_truncate(sqlite3_file *f, sqlite3_int64 size) {
    wc_file *p = (wc_file *)f;
    int rc = wc_flush(p);
    return rc != SQLITE_OK ? rc : p->real->pMethods->xTruncate(p->real, size);
}

static int wc_sync(sqlite3_file *f, int flags) {
    wc_file *p = (wc_file *)f;
    int rc = wc_flush(p);
    p->pace_n = 0;                       /* the sync writes the rest         */
    return rc != SQLITE_OK ? rc : p->real->pMethods->xSync(p->real, flags);
}

static int wc_file_size(sqlite3_file *f, sqlite3_int64 *size) {
    wc_file *p = (wc_file *)f;
    int rc = wc_flush(p);
    return rc != SQLITE_OK ? rc : p->real->pMethods->xFileSize(p->real, size);
}

static int wc_lock(sqlite3_file *f, int l) { return REAL(f)->pMethods->xLock(REAL(f), l); }
static int wc_unlock(sqlite3_file *f, int l) { return REAL(f)->pMethods->xUnlock(REAL(f), l); }
static int wc_check_reserved(sqlite3_file *f, int *out) {
    return REAL(f)->pMethods->xCheckReservedLock(REAL(f), out);
}
static int wc_file_control(sqlite3_file *f, int op, void *arg) {
    return REAL(f)->pMethods->xFileControl(REAL(f), op, arg);
}
static int wc_sector_size(sqlite3_file *f) { return REAL(f)->pMethods->xSectorSize(REAL(f)); }
static int wc_device_chars(sqlite3_file *f) { return REAL(f)->pMethods->xDeviceCharacteristics(REAL(f)); }
static int wc_shm_map(sqlite3_file *f, int pg, int sz, int extend, void volatile **pp) {
    return REAL(f)->pMethods->xShmMap(REAL(f), pg, sz, extend, pp);
}
static int wc_shm_lock(sqlite3_file *f, int offset, int n, int flags) {
    return REAL(f)->pMethods->xShmLock(REAL(f), offset, n, flags);
}
static void wc_shm_barrier(sqlite3_file *f) { REAL(f)->pMethods->xShmBarrier(REAL(f)); }
static int  wc_shm_unmap(sqlite3_file *f, int del) { return REAL(f)->pMethods->xShmUnmap(REAL(f), del); }
static int  wc_fetch(sqlite3_file *f, sqlite3_int64 off, int n, void **pp) {
    return REAL(f)->pMethods->xFetch(REAL(f), off, n, pp);
}
static int wc_unfetch(sqlite3_file *f, sqlite3_int64 off, void *pg) {
    return REAL(f)->pMethods->xUnfetch(REAL(f), off, pg);
}

static const sqlite3_io_methods wc_io = {
    3,
    wc_close, wc_read, wc_write, wc_truncate, wc_sync, wc_file_size,
    wc_lock, wc_unlock, wc_check_reserved, wc_file_control, wc_sector_size, wc_device_chars,
    wc_shm_map, wc_shm_lock, wc_shm_barrier, wc_shm_unmap,
    wc_fetch, wc_unfetch,
};

static int wc_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *f, int flags, int *out_flags) {
    wc_file *p = (wc_file *)f;
    memset(p, 0, sizeof *p);
    p->real = (sqlite3_file *)&p[1];
    int rc = wc_real->xOpen(wc_real, name, p->real, flags, out_flags);
    if (rc != SQLITE_OK || !p->real->pMethods) return rc;   /* base.pMethods stays NULL: no close */
    /* the unix VFS's methods are version 3; wc_io forwards all of them */
    if (p->real->pMethods->iVersion < 3) {
        p->real->pMethods->xClose(p->real);
        return SQLITE_CANTOPEN;
    }
    p->wal = (flags & SQLITE_OPEN_WAL) != 0;
    p->name = name;                      /* valid until xClose (SQLite's rule) */
    p->pace_fd = -1;
    p->base.pMethods = &wc_io;
    (void)vfs;
    return SQLITE_OK;
}

static int wc_delete(sqlite3_vfs *v, const char *name, int sync_dir) {
    return wc_real->xDelete(wc_real, name, sync_dir);
}
static int wc_access(sqlite3_vfs *v, const char *name, int flags, int *out) {
    return wc_real->xAccess(wc_real, name, flags, out);
}
static int wc_full_pathname(sqlite3_vfs *v, const char *name, int n, char *out) {
    return wc_real->xFullPathname(wc_real, name, n, out);
}
static void *wc_dl_open(sqlite3_vfs *v, const char *path) { return wc_real->xDlOpen(wc_real, path); }
static void  wc_dl_error(sqlite3_vfs *v, int n, char *msg) { wc_real->xDlError(wc_real, n, msg); }
static void (*wc_dl_sym(sqlite3_vfs *v, void *h, const char *sym))(void) {
    return wc_real->xDlSym(wc_real, h, sym);
}
static void wc_dl_close(sqlite3_vfs *v, void *h) { wc_real->xDlClose(wc_real, h); }
static int  wc_randomness(sqlite3_vfs *v, int n, char *out) { return wc_real->xRandomness(wc_real, n, out); }
static int  wc_sleep(sqlite3_vfs *v, int us) { return wc_real->xSleep(wc_real, us); }
static int  wc_current_time(sqlite3_vfs *v, double *out) { return wc_real->xCurrentTime(wc_real, out); }
static int  wc_last_error(sqlite3_vfs *v, int n, char *out) { return wc_real->xGetLastError(wc_real, n, out); }
static int  wc_current_time64(sqlite3_vfs *v, sqlite3_int64 *out) {
    return wc_real->xCurrentTimeInt64(wc_real, out);
}

static sqlite3_vfs wc_vfs = {
    .iVersion = 2,
    .mxPathname = 0,                      /* set from the real VFS */
    .zName = SQ_VFS_NAME,
    .xOpen = wc_open,
    .xDelete = wc_delete,
    .xAccess = wc_access,
    .xFullPathname = wc_full_pathname,
    .xDlOpen = wc_dl_open,
    .xDlError = wc_dl_error,
    .xDlSym = wc_dl_sym,
    .xDlClose = wc_dl_close,
    .xRandomness = wc_randomness,
    .xSleep = wc_sleep,
    .xCurrentTime = wc_current_time,
    .xGetLastError = wc_last_error,
    .xCurrentTimeInt64 = wc_current_time64,
};

static const char *wc_name;

static void wc_register(void) {
    sqlite3_vfs *real = sqlite3_vfs_find(NULL);
    if (!real || real->iVersion < 2) return;
    wc_real = real;
    wc_vfs.szOsFile = (int)sizeof(wc_file) + real->szOsFile;
    wc_vfs.mxPathname = real->mxPathname;
    if (sqlite3_vfs_register(&wc_vfs, 0) == SQLITE_OK) wc_name = SQ_VFS_NAME;
}

void sq_vfs_background(void) { wc_background = 1; }

unsigned long sq_vfs_waits(void) { return __atomic_load_n(&wc_waits, __ATOMIC_RELAXED); }

const char *sq_vfs(void) {
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, wc_register);
    return wc_name;
}
