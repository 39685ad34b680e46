/* blob.h — the blob store: content-addressed files, by SHA-256.
 *
 * Owns: where bytes live and how they get there durably. One backend: a
 * directory (embedded mode: <data-dir>/media; cluster mode: --media-dir, a
 * directory every node mounts, docs/design.md "Media"). Layout:
 *   <root>/ab/cd/<sha256>   a blob (immutable; "ab", "cd" its first hex digits)
 *   <root>/tmp/             single uploads being written
 *   <root>/uploads/<id>     resumable uploads (bytes so far) and <id>.json
 *   <root>/uploads/owners/<user>/<id>.<length>
 *                           an empty marker per resumable upload in
 *                           progress, for its owner's quota (made after
 *                           <id>.json, removed after it; one whose
 *                           <id>.json is gone is stale and removed)
 * A blob is written to a temp file, fsynced, renamed into place and its
 * directory fsynced, so a blob's path names complete content or nothing;
 * two uploads of the same content rename onto the same path (same bytes).
 *
 * Every function here blocks on the file system: call them off the event
 * loop (uv_queue_work), except pl_blob_path (no I/O).
 * Does not own: which rows reference a blob (store/), when one is garbage
 * (app/api_media.c asks the store, then pl_blob_remove).
 */
#ifndef PL_BLOB_H
#define PL_BLOB_H

#include <stddef.h>
#include <stdint.h>

typedef struct pl_blob_store pl_blob_store;

/* Creates root (and tmp/, uploads/) if missing. 0 or -1 with err. */
int  pl_blob_open(const char *root, pl_blob_store **out, char *err, size_t errlen);
void pl_blob_close(pl_blob_store **b);
const char *pl_blob_root(const pl_blob_store *b);

/* 1 if s is 64 lower-case hex digits. */
int  pl_blob_sha_ok(const char *s);
/* <root>/ab/cd/<sha>; -1 if it does not fit or sha is not a digest. */
int  pl_blob_path(const pl_blob_store *b, const char *sha, char *out, size_t cap);
/* A new empty temp file under <root>/tmp: its path in out, open fd in *fd. */
int  pl_blob_temp(pl_blob_store *b, char *out, size_t cap, int *fd);
/* Reads the file at path: its SHA-256 (hex) and size, and its first
 * head_cap bytes into head (*head_len). 0 or -errno. */
int  pl_blob_digest(const char *path, char sha[65], int64_t *size, void *head, size_t head_cap,
                    size_t *head_len);
/* Moves the complete file tmp into place as blob sha: fsync, rename (onto
 * an identical blob if one exists: its mtime is renewed, see remove),
 * fsync the directory. 0 or -errno. */
int  pl_blob_commit(pl_blob_store *b, const char *tmp, const char *sha);
/* Opens blob sha for reading: fd and size. 0 or -errno (-ENOENT). */
int  pl_blob_open_read(const pl_blob_store *b, const char *sha, int *fd, int64_t *size);
/* Whether need more bytes fit on root's file system leaving reserve bytes
 * free (statvfs: f_bavail * f_frsize, what an unprivileged writer may
 * take; the store's database shares this disk by default): 0, or -ENOSPC
 * when they would leave less. 0 when need or reserve is 0, or when
 * statvfs fails (the write itself then says). *avail (may be NULL) gets
 * the free bytes, -1 when unknown. One statvfs: cheap on a local disk. */
int  pl_blob_room(const pl_blob_store *b, int64_t need, int64_t reserve, int64_t *avail);
/* Removes blob sha unless it was written (or rewritten by a commit) less
 * than min_age_ms ago: an upload committing the same content while the
 * collector decided keeps it. 1 removed, 0 kept or absent, -errno. */
int  pl_blob_remove(pl_blob_store *b, const char *sha, int64_t min_age_ms);
/* Removes what abandoned uploads left: files under tmp/ and uploads/ not
 * written for min_age_ms (an upload in progress writes, so its file stays
 * fresh; a resumable upload's data and .json go together, judged by the
 * newer of the two; a .json without data goes by its own age; an upload
 * whose data file a PATCH holds locked is kept). Returns how many files
 * went. */
int  pl_blob_sweep(pl_blob_store *b, int64_t min_age_ms);

/* Resumable uploads in progress, by owner (the quota counts their declared
 * length from their creation, api_upload_resumable.c). mark: after
 * <uid>.json is written; 0 or -errno. unmark: after <uid>.json is removed
 * (the marker goes anyway once stale). uploads_of: how many of owner's
 * uploads are in progress, other than except (a uid, or NULL), and the sum
 * of their declared lengths in *bytes; removes stale markers on the way. */
int  pl_blob_upload_mark(pl_blob_store *b, int64_t owner, const char *uid, int64_t length);
void pl_blob_upload_unmark(pl_blob_store *b, int64_t owner, const char *uid, int64_t length);
int  pl_blob_uploads_of(pl_blob_store *b, int64_t owner, const char *except, int64_t *bytes);
/* Drops owner's resumable upload uid (length: its declared length, for
 * its marker) before it completes: its <uid>.json, then its data file and
 * marker go, under the upload's lock (api_upload.c invariant 4), so a
 * PATCH under way is never cut short. 0 dropped; -ENOENT no such upload in
 * progress (completed, dropped or swept since); -EBUSY a PATCH holds it;
 * another -errno when it cannot be opened or its .json removed now (then
 * nothing changed). A data file whose unlink fails after its .json went is
 * no longer an upload: the sweep takes it. */
int  pl_blob_upload_drop(pl_blob_store *b, int64_t owner, const char *uid, int64_t length);

#endif
