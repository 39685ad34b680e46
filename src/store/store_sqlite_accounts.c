/* store_sqlite_accounts.c — the SQLite writer's account jobs: USER_CREATE,
 * LOGIN_CREATE, LOGIN_ROTATE, LOGIN_REVOKE and LAST_SEEN, jobs of the
 * batch (store_sqlite_write.c), without a savepoint.
 *
 * Owns: the SQL of users' and logins' rows, and whether a user exists
 * (sq_w_user_exists, for the other job files). Not the push devices of a
 * revoked login (store_sqlite_push.c) nor the reads of accounts
 * (store_sqlite_read.c).
 */
#include "sqlite_int.h"

static int w_user_exists(sq_store *s, int64_t user) {
    sqlite3_bind_int64(s->w[W_USER_EXISTS], 1, user);
    return w_lookup(s, W_USER_EXISTS, NULL);
}
int sq_w_user_exists(sq_store *s, int64_t user) { return w_user_exists(s, user); }

int sq_job_user_create(sq_store *s, pl_job *j, int64_t now) {
    if (!j->username || !j->pwhash) return PL_STORE_EINVAL;
    sqlite3_stmt *st = s->w[W_USER_INSERT];
    sqlite3_bind_text(st, 1, j->username, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, j->pwhash, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, now);
    int rc = w_write(s, W_USER_INSERT);     /* UNIQUE(username) -> ECONFLICT */
    if (rc == PL_STORE_OK) j->out_id = sqlite3_last_insert_rowid(s->wdb);
    return rc;
}

int sq_job_login_create(sq_store *s, pl_job *j, int64_t now) {
    int rc = w_user_exists(s, j->user);
    if (rc <= 0) return rc < 0 ? rc : PL_STORE_ENOTFOUND;
    sqlite3_stmt *st = s->w[W_LOGIN_INSERT];
    sqlite3_bind_int64(st, 1, j->user);
    sqlite3_bind_blob(st, 2, j->hash, sizeof j->hash, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, j->expires);
    sqlite3_bind_int64(st, 4, now);
    rc = w_write(s, W_LOGIN_INSERT);
    if (rc == PL_STORE_OK) {
        j->out_id = sqlite3_last_insert_rowid(s->wdb);
        j->login_out.created = now;            /* its access tokens' stamp */
    }
    return rc;
}

/* Rotates only a live login presenting its current hash. */
int sq_job_login_rotate(sq_store *s, pl_job *j, int64_t now) {
    sqlite3_stmt *st = s->w[W_LOGIN_ROTATE];
    sqlite3_bind_blob(st, 1, j->hash2, sizeof j->hash2, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, j->expires);
    sqlite3_bind_int64(st, 3, j->id);
    sqlite3_bind_int64(st, 4, now);
    sqlite3_bind_blob(st, 5, j->hash, sizeof j->hash, SQLITE_STATIC);
    int rc = w_write(s, W_LOGIN_ROTATE);
    if (rc != PL_STORE_OK) return rc;
    if (sqlite3_changes(s->wdb) == 0) return PL_STORE_ENOTFOUND;
    j->out_id = j->id;
    return PL_STORE_OK;
}

int sq_job_login_revoke(sq_store *s, pl_job *j, int64_t now) {
    sqlite3_bind_int64(s->w[W_LOGIN_REVOKE], 1, j->id);
    int rc = w_write(s, W_LOGIN_REVOKE);
    if (rc != PL_STORE_OK) return rc;
    if (sqlite3_changes(s->wdb) == 0) return PL_STORE_ENOTFOUND;
    if ((rc = sq_push_forget_login(s, j->id)) != PL_STORE_OK) return rc;
    j->out_id = j->id;
    return PL_STORE_OK;
}

int sq_job_last_seen(sq_store *s, pl_job *j, int64_t now) {
    sqlite3_stmt *st = s->w[W_USER_LAST_SEEN];
    sqlite3_bind_int64(st, 1, j->expires);
    sqlite3_bind_int64(st, 2, j->user);
    return w_exec(s, W_USER_LAST_SEEN) == PL_STORE_OK ? PL_STORE_OK : W_FATAL;
}
