/* test_store.c — contract tests of store.h, written once for every backend.
 *
 * Each test owns a fresh store: SQLite in a subdirectory of a mkdtemp
 * directory (which open must create), or, when $PARLEY_TEST_PG names a
 * PostgreSQL server, a fresh database on it (t_pg_fresh_url, in
 * test_store_pg.c). Tests that only make sense for one backend say so with
 * SQLITE_ONLY. Jobs, reads included, are completed the way the server does
 * it: notify() wakes the test thread through a condition variable, and the
 * test thread calls pl_store_drain().
 */
#include "test.h"

#include "store/store.h"

#include <jansson.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

typedef struct tstore {
    char       root[64];       /* mkdtemp directory                      */
    char       dir[96];        /* root/data, the store's directory       */
    char       url[256];       /* "" for SQLite, else a fresh PostgreSQL database */
    pl_store  *s;
    pthread_mutex_t mu;
    pthread_cond_t  cv;
    int        pending;        /* notify() calls not yet consumed (mu)   */
    int        notifies;       /* notify() calls in total (mu)           */
    int        ndone;          /* jobs whose done() ran                  */
    pl_job   **order;          /* jobs in the order done() saw them      */
    int64_t    large_group;    /* opts for the next open                 */
    int64_t    edit_window_ms;
    int        push;           /* opts.push for the next open            */
    int64_t    workspace_members;  /* opts quotas for the next open (invariant 11) */
    int64_t    workspace_channels;
    int64_t    retention;      /* opts.retention for the next open (invariant 13) */
    size_t     norder, order_cap;
} tstore;

static void t_notify(void *arg) {
    tstore *t = arg;
    pthread_mutex_lock(&t->mu);
    t->pending++;
    t->notifies++;
    pthread_cond_signal(&t->cv);
    pthread_mutex_unlock(&t->mu);
}

static void t_done(pl_job *j) {
    tstore *t = j->data;
    if (t->norder == t->order_cap) {
        t->order_cap = t->order_cap ? t->order_cap * 2 : 64;
        t->order = realloc(t->order, t->order_cap * sizeof *t->order);
    }
    t->order[t->norder++] = j;
    t->ndone++;
}

/* The backend under test: NULL for SQLite, or $PARLEY_TEST_PG. */
static const char *t_backend(void) {
    const char *pg = getenv("PARLEY_TEST_PG");
    return pg && pg[0] ? pg : NULL;
}

/* test_store_pg.c: creates a fresh database on the server base names and
 * writes its URL to out; 0 or -1. */
int t_pg_fresh_url(const char *base, char *out, size_t n);

static int t_open_store(tstore *t) {
    char err[256] = "";
    pl_store_opts o = {.url = t->url, .data_dir = t->dir, .node_id = 1,
                       .notify = t_notify, .notify_arg = t,
                       .large_group = t->large_group, .edit_window_ms = t->edit_window_ms,
                       .push = t->push, .workspace_members = t->workspace_members,
                       .workspace_channels = t->workspace_channels, .retention = t->retention};
    int rc = pl_store_open(&o, &t->s, err, sizeof err);
    if (rc) fprintf(stderr, "  store open failed: %s\n", err);
    return rc;
}

static int t_open(tstore *t) {
    memset(t, 0, sizeof *t);
    snprintf(t->root, sizeof t->root, "/tmp/pl-store-XXXXXX");
    if (!mkdtemp(t->root)) return -1;
    snprintf(t->dir, sizeof t->dir, "%s/data", t->root);
    pthread_mutex_init(&t->mu, NULL);
    pthread_cond_init(&t->cv, NULL);
    if (t_backend() && t_pg_fresh_url(t_backend(), t->url, sizeof t->url) != 0) return -1;
    return t_open_store(t);
}

/* Skips a test that only applies to the SQLite backend. */
#define SQLITE_ONLY() do { if (t_backend()) return; } while (0)

static int t_reopen(tstore *t) {
    pl_store_close(&t->s);
    return t_open_store(t);
}

static void t_finish(tstore *t) {
    static const char *const files[] = {"parley.db", "parley.db-wal", "parley.db-shm", "parley.lock",
                                        "search.db", "search.db-wal", "search.db-shm"};
    char p[160];
    pl_store_close(&t->s);
    for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
        snprintf(p, sizeof p, "%s/%s", t->dir, files[i]);
        unlink(p);
    }
    rmdir(t->dir);
    rmdir(t->root);
    free(t->order);
    pthread_mutex_destroy(&t->mu);
    pthread_cond_destroy(&t->cv);
}

/* Drains until ndone reaches target; -1 after 20 s without progress. */
static int t_wait(tstore *t, int target) {
    while (t->ndone < target) {
        struct timespec dl;
        clock_gettime(CLOCK_REALTIME, &dl);
        dl.tv_sec += 20;
        pthread_mutex_lock(&t->mu);
        while (!t->pending)
            if (pthread_cond_timedwait(&t->cv, &t->mu, &dl) != 0) {
                pthread_mutex_unlock(&t->mu);
                return -1;
            }
        t->pending = 0;
        pthread_mutex_unlock(&t->mu);
        pl_store_drain(t->s);
    }
    return 0;
}

static void t_init(tstore *t, pl_job *j, pl_job_op op) {
    memset(j, 0, sizeof *j);
    j->op = op;
    j->done = t_done;
    j->data = t;
}

/* Submits n jobs at once and waits for all of them. */
static int t_run(tstore *t, pl_job *jobs, size_t n) {
    int target = t->ndone + (int)n;
    for (size_t i = 0; i < n; i++) pl_store_submit(t->s, &jobs[i]);
    return t_wait(t, target);
}

/* Runs one job alone and returns its result (its outputs are released,
 * out_* numbers are kept). */
static int t_run1(tstore *t, pl_job *j) {
    if (t_run(t, j, 1) != 0) return -99;
    pl_job_release(j);
    return j->result;
}

/* Runs one read and returns its result; the caller releases the outputs. */
static int t_read(tstore *t, pl_job *j) {
    if (t_run(t, j, 1) != 0) return -99;
    return j->result;
}

/* ---- the old synchronous reads, as jobs (keeps the tests readable) ------- */

static int rd_user_by_name(tstore *t, const char *name, pl_user *u, int with_hash) {
    pl_job j;
    t_init(t, &j, PL_READ_USER_BY_NAME);
    j.username = name;
    j.flags = with_hash ? PL_READ_WITH_HASH : 0;
    int rc = t_read(t, &j);
    *u = j.user_out;                       /* takes over pwhash */
    return rc;
}

static int rd_user_by_id(tstore *t, int64_t id, pl_user *u) {
    pl_job j;
    t_init(t, &j, PL_READ_USER_BY_ID);
    j.user = id;
    int rc = t_read(t, &j);
    *u = j.user_out;
    return rc;
}

static int rd_login(tstore *t, int64_t id, pl_login *l) {
    pl_job j;
    t_init(t, &j, PL_READ_LOGIN);
    j.id = id;
    int rc = t_read(t, &j);
    *l = j.login_out;
    return rc;
}

static int rd_conv_get(tstore *t, int64_t conv, int64_t user, pl_conv *c) {
    pl_job j;
    t_init(t, &j, PL_READ_CONV_GET);
    j.conv = conv;
    j.user = user;
    int rc = t_read(t, &j);
    *c = j.conv_out;                       /* takes over title and members */
    return rc;
}

static int rd_conv_list(tstore *t, int64_t user, int flags, pl_conv **list, size_t *n) {
    pl_job j;
    t_init(t, &j, PL_READ_CONV_LIST);
    j.user = user;
    j.flags = flags;
    int rc = t_read(t, &j);
    *list = j.convs;
    *n = j.nconvs;
    return rc;
}

/* PL_ROLE_NONE when not a member. */
static int rd_role(tstore *t, int64_t conv, int64_t user) {
    pl_conv c;
    if (rd_conv_get(t, conv, user, &c) != PL_STORE_OK) return PL_ROLE_NONE;
    int role = c.role;
    pl_conv_release(&c);
    return role;
}

static int rd_events(tstore *t, int64_t conv, int64_t viewer, int64_t after, int64_t before,
                     int limit, int top, pl_event **ev, size_t *n, int *more) {
    pl_job j;
    t_init(t, &j, PL_READ_EVENTS);
    j.conv = conv;
    j.user = viewer;
    j.after = after;
    j.before = before;
    j.limit = limit;
    j.flags = top ? PL_READ_FROM_TOP : 0;
    int rc = t_read(t, &j);
    *ev = j.events;
    *n = j.nevents;
    if (more) *more = j.more;
    return rc;
}

/* 1 if a and b share a conversation (USERS_VISIBLE with one id). */
static int rd_shares(tstore *t, int64_t a, int64_t b) {
    pl_job j;
    t_init(t, &j, PL_READ_USERS_VISIBLE);
    j.user = a;
    j.ids = &b;
    j.nids = 1;
    int rc = t_read(t, &j);
    int found = rc == PL_STORE_OK && j.nusers == 1 && j.users[0].id == b;
    pl_job_release(&j);
    return found;
}

static int64_t t_user(tstore *t, const char *name) {
    pl_job j;
    t_init(t, &j, PL_JOB_USER_CREATE);
    j.username = name;
    j.pwhash = "$argon2id$fake";
    int rc = t_run1(t, &j);
    return rc == PL_STORE_OK ? j.out_id : rc;
}

static int64_t t_group(tstore *t, int64_t creator, const char *title, const int64_t *m, size_t n) {
    pl_job j;
    t_init(t, &j, PL_JOB_GROUP_CREATE);
    j.user = creator;
    j.title = title;
    j.members = m;
    j.nmembers = n;
    int rc = t_run1(t, &j);
    return rc == PL_STORE_OK ? j.out_id : rc;
}

static void t_send_init(tstore *t, pl_job *j, int64_t conv, int64_t user, const char *cmid,
                        const char *body) {
    t_init(t, j, PL_JOB_MESSAGE_SEND);
    j->conv = conv;
    j->user = user;
    j->client_msg_id = cmid;
    j->body = body;
    j->body_len = strlen(body);
}

static int t_member_op(tstore *t, pl_job_op op, int64_t conv, int64_t actor, int64_t peer,
                       int *has_event) {
    pl_job j;
    t_init(t, &j, op);
    j.conv = conv;
    j.user = actor;
    j.peer = peer;
    if (t_run(t, &j, 1) != 0) return -99;
    if (has_event) *has_event = j.has_event;        /* before the release clears it */
    pl_job_release(&j);
    return j.result;
}

static int64_t t_last_seq(tstore *t, int64_t conv, int64_t user) {
    pl_conv c;
    if (rd_conv_get(t, conv, user, &c) != PL_STORE_OK) return -1;
    int64_t v = c.last_seq;
    pl_conv_release(&c);
    return v;
}

/* Number of events in conv, checking their seqs run 1..n. -1 on a gap. */
static int64_t t_count_contiguous(tstore *t, int64_t conv) {
    int64_t after = 0;
    for (;;) {
        pl_event *ev;
        size_t n;
        if (rd_events(t, conv, 0, after, 0, PL_STORE_PAGE_MAX, 0, &ev, &n, NULL) != PL_STORE_OK)
            return -1;
        int ok = 1;
        for (size_t i = 0; i < n; i++)
            if (ev[i].seq != after + 1 + (int64_t)i) ok = 0;
        pl_event_list_free(ev, n);
        if (!ok) return -1;
        if (n == 0) return after;
        after += (int64_t)n;
    }
}

static int role_of(const pl_conv *c, int64_t user) {
    for (size_t i = 0; i < c->nmembers; i++)
        if (c->members[i].user == user) return c->members[i].role;
    return PL_ROLE_NONE;
}

static void t_sleep_ms(int ms) {
    struct timespec ts = {0, ms * 1000000L};
    nanosleep(&ts, NULL);
}

/* ---- open, users, logins ------------------------------------------------ */

TEST(store_open_creates_dir_and_schema) {
    SQLITE_ONLY();
    tstore t;
    CHECK_EQ(t_open(&t), PL_STORE_OK);
    char p[160];
    struct stat st;
    snprintf(p, sizeof p, "%s/parley.db", t.dir);
    CHECK(stat(p, &st) == 0);
    sqlite3 *db;
    CHECK_EQ(sqlite3_open_v2(p, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    sqlite3_stmt *q;
    CHECK_EQ(sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &q, NULL), SQLITE_OK);
    CHECK_EQ(sqlite3_step(q), SQLITE_ROW);
    int version = sqlite3_column_int(q, 0);
    sqlite3_finalize(q);
    CHECK_EQ(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &q, NULL), SQLITE_OK);
    CHECK_EQ(sqlite3_step(q), SQLITE_ROW);
    int wal = strcmp((const char *)sqlite3_column_text(q, 0), "wal") == 0;
    sqlite3_finalize(q);
    sqlite3_close(db);
    CHECK_EQ(version, 21);         /* migrations: base schema, last_seen, counters, actions, refresh reuse,
                                    * search, reaction order, e2ee key directory, media, search.db,
                                    * insert triggers to code, push, workspaces, reports, lifecycle,
                                    * blocks, held erasures, events_no_cmid, own_unread recount,
                                    * push device ids never reused, channel lookalike keys */
    CHECK(wal);
    CHECK_EQ(t_reopen(&t), PL_STORE_OK);          /* migration is idempotent */
    CHECK(t_user(&t, "alice") > 0);
    t_finish(&t);
}

TEST(store_user_create_and_lookup) {
    tstore t;
    CHECK_EQ(t_open(&t), PL_STORE_OK);
    int64_t a = t_user(&t, "alice");
    int64_t b = t_user(&t, "bob");
    CHECK(a > 0 && b > 0 && a != b);
    CHECK_EQ(t_user(&t, "alice"), PL_STORE_ECONFLICT);

    pl_user u;
    CHECK_EQ(rd_user_by_name(&t, "alice", &u, 1), PL_STORE_OK);
    CHECK_EQ(u.id, a);
    CHECK_STR(u.username, "alice");
    CHECK_STR(u.pwhash, "$argon2id$fake");
    free(u.pwhash);
    CHECK_EQ(rd_user_by_name(&t, "bob", &u, 0), PL_STORE_OK);
    CHECK(u.pwhash == NULL);
    CHECK_EQ(rd_user_by_id(&t, b, &u), PL_STORE_OK);
    CHECK_STR(u.username, "bob");
    CHECK_EQ(rd_user_by_name(&t, "carol", &u, 0), PL_STORE_ENOTFOUND);
    CHECK_EQ(rd_user_by_id(&t, 999, &u), PL_STORE_ENOTFOUND);

    /* a conflict fails alone inside its batch */
    pl_job j[3];
    const char *names[3] = {"carol", "bob", "dave"};
    for (int i = 0; i < 3; i++) {
        t_init(&t, &j[i], PL_JOB_USER_CREATE);
        j[i].username = names[i];
        j[i].pwhash = "h";
    }
    CHECK_EQ(t_run(&t, j, 3), 0);
    CHECK_EQ(j[0].result, PL_STORE_OK);
    CHECK_EQ(j[1].result, PL_STORE_ECONFLICT);
    CHECK_EQ(j[2].result, PL_STORE_OK);
    CHECK_EQ(rd_user_by_name(&t, "dave", &u, 0), PL_STORE_OK);
    t_finish(&t);
}

TEST(store_login_lifecycle) {
    tstore t;
    CHECK_EQ(t_open(&t), PL_STORE_OK);
    int64_t a = t_user(&t, "alice");
    int64_t far = 4102444800000LL;               /* 2100 */
    pl_job j;
    t_init(&t, &j, PL_JOB_LOGIN_CREATE);
    j.user = a;
    memset(j.hash, 0x11, 32);
    j.expires = far;
    CHECK_EQ(t_run1(&t, &j), PL_STORE_OK);
    int64_t login = j.out_id;
    CHECK(login > 0);

    t_init(&t, &j, PL_JOB_LOGIN_CREATE);
    j.user = 999;
    CHECK_EQ(t_run1(&t, &j), PL_STORE_ENOTFOUND);

    pl_login l;
    CHECK_EQ(rd_login(&t, login, &l), PL_STORE_OK);
    CHECK_EQ(l.user, a);
    CHECK_EQ(l.refresh_hash[31], 0x11);
    CHECK_EQ(l.expires, far);
    CHECK_EQ(l.revoked, 0);
    CHECK_EQ(rd_login(&t, login + 100, &l), PL_STORE_ENOTFOUND);

    /* rotate with the wrong old hash */
    t_init(&t, &j, PL_JOB_LOGIN_ROTATE);
    j.id = login;
    memset(j.hash, 0x22, 32);
    memset(j.hash2, 0x33, 32);
    j.expires = far;
    CHECK_EQ(t_run1(&t, &j), PL_STORE_ENOTFOUND);
    /* with the right one */
    memset(j.hash, 0x11, 32);
    CHECK_EQ(t_run1(&t, &j), PL_STORE_OK);
    CHECK_EQ(rd_login(&t, login, &l), PL_STORE_OK);
    CHECK_EQ(l.refresh_hash[0], 0x33);
    /* the old hash no longer rotates */
    CHECK_EQ(t_run1(&t, &j), PL_STORE_ENOTFOUND);

    /* an expired login does not rotate */
    pl_job e;
    t_init(&t, &e, PL_JOB_LOGIN_CREATE);
    e.user = a;
    memset(e.hash, 0x44, 32);
    e.expires = 1000;
    CHECK_EQ(t_run1(&t, &e), PL_STORE_OK);
    int64_t old = e.out_id;
    t_init(&t, &e, PL_JOB_LOGIN_ROTATE);
    e.id = old;
    memset(e.hash, 0x44, 32);
    e.expires = far;
    CHECK_EQ(t_run1(&t, &e), PL_STORE_ENOTFOUND);

    /* revoke, then rotation fails */
    t_init(&t, &j, PL_JOB_LOGIN_REVOKE);
    j.id = login;
    CHECK_EQ(t_run1(&t, &j), PL_STORE_OK);
    CHECK_EQ(rd_login(&t, login, &l), PL_STORE_OK);
    CHECK_EQ(l.revoked, 1);
    t_init(&t, &j, PL_JOB_LOGIN_ROTATE);
    j.id = login;
    memset(j.hash, 0x33, 32);
    j.expires = far;
    CHECK_EQ(t_run1(&t, &j), PL_STORE_ENOTFOUND);
    t_init(&t, &j, PL_JOB_LOGIN_REVOKE);
    j.id = 12345;
    CHECK_EQ(t_run1(&t, &j), PL_STORE_ENOTFOUND);
    t_finish(&t);
}

/* Reuse detection (protocol.md "Refresh token reuse"): a rotation keeps
 * the hash it replaced and when; a refused rotation changes nothing. */
TEST(store_login_rotation_keeps_previous) {
    tstore t;
    CHECK_EQ(t_open(&t), PL_STORE_OK);
    int64_t a = t_user(&t, "alice");
    int64_t far = 4102444800000LL;
    pl_job j;
    t_init(&t, &j, PL_JOB_LOGIN_CREATE);
    j.user = a;
    memset(j.hash, 0x11, 32);
    j.expires = far;
    CHECK_EQ(t_run1(&t, &j), PL_STORE_OK);
    int64_t login = j.out_id;
    pl_login l;
    static const uint8_t zero[32];
    CHECK_EQ(rd_login(&t, login, &l), PL_STORE_OK);
    CHECK(memcmp(l.prev_hash, zero, 32) == 0);       /* never rotated */
    CHECK_EQ(l.rotated, 0);

    int64_t before = (int64_t)time(NULL) * 1000 - 2000;
    t_init(&t, &j, PL_JOB_LOGIN_ROTATE);
    j.id = login;
    memset(j.hash, 0x11, 32);
    memset(j.hash2, 0x33, 32);
    j.expires = far;
    CHECK_EQ(t_run1(&t, &j), PL_STORE_OK);
    int64_t after = (int64_t)time(NULL) * 1000 + 2000;
    CHECK_EQ(rd_login(&t, login, &l), PL_STORE_OK);
    CHECK_EQ(l.refresh_hash[0], 0x33);
    CHECK_EQ(l.prev_hash[0], 0x11);
    CHECK_EQ(l.prev_hash[31], 0x11);
    CHECK(l.rotated >= before && l.rotated <= after);
    int64_t rotated = l.rotated;

    /* a refused rotation (the old hash again) leaves both as they are */
    CHECK_EQ(t_run1(&t, &j), PL_STORE_ENOTFOUND);
    CHECK_EQ(rd_login(&t, login, &l), PL_STORE_OK);
    CHECK_EQ(l.refresh_hash[0], 0x33);
    CHECK_EQ(l.prev_hash[0], 0x11);
    CHECK_EQ(l.rotated, rotated);

    /* the next rotation remembers only the hash it replaced */
    t_init(&t, &j, PL_JOB_LOGIN_ROTATE);
    j.id = login;
    memset(j.hash, 0x33, 32);
    memset(j.hash2, 0x55, 32);
    j.expires = far;
    CHECK_EQ(t_run1(&t, &j), PL_STORE_OK);
    CHECK_EQ(rd_login(&t, login, &l), PL_STORE_OK);
    CHECK_EQ(l.refresh_hash[0], 0x55);
    CHECK_EQ(l.prev_hash[0], 0x33);
    CHECK(l.rotated >= rotated);

    /* revoking keeps them readable (the refresh handler answers 401 either way) */
    t_init(&t, &j, PL_JOB_LOGIN_REVOKE);
    j.id = login;
    CHECK_EQ(t_run1(&t, &j), PL_STORE_OK);
    CHECK_EQ(rd_login(&t, login, &l), PL_STORE_OK);
    CHECK_EQ(l.revoked, 1);
    CHECK_EQ(l.prev_hash[0], 0x33);
    t_finish(&t);
}

/* ---- conversations ------------------------------------------------------ */

TEST(store_direct_open_once) {
    tstore t;
    CHECK_EQ(t_open(&t), PL_STORE_OK);
    int64_t a = t_user(&t, "alice"), b = t_user(&t, "bob"), c = t_user(&t, "carol");

    pl_job j[3];
    for (int i = 0; i < 3; i++) t_init(&t, &j[i], PL_JOB_DIRECT_OPEN);
    j[0].user = a; j[0].peer = b;
    j[1].user = b; j[1].peer = a;                 /* same pair, same batch */
    j[2].user = a; j[2].peer = c;
    CHECK_EQ(t_run(&t, j, 3), 0);
    CHECK_EQ(j[0].result, PL_STORE_OK);
    CHECK_EQ(j[0].created, 1);
    CHECK_EQ(j[0].has_event, 1);
    CHECK_EQ(j[0].event.seq, 1);
    CHECK_EQ(j[0].event.kind, PL_EV_CREATED);
    CHECK_EQ(j[0].event.sender, a);
    CHECK_EQ(j[0].event.conv, j[0].out_id);
    char want[64];
    snprintf(want, sizeof want, "{\"kind\":\"direct\",\"members\":[%lld,%lld]}",
             (long long)a, (long long)b);
    CHECK_STR(j[0].event.data, want);
    CHECK_EQ(j[1].result, PL_STORE_OK);
    CHECK_EQ(j[1].out_id, j[0].out_id);
    CHECK_EQ(j[1].created, 0);
    CHECK_EQ(j[1].has_event, 0);
    CHECK(j[2].out_id != j[0].out_id);
    for (int i = 0; i < 3; i++) pl_event_release(&j[i].event);
    int64_t conv = j[0].out_id;

    /* again in a later batch */
    pl_job k;
    t_init(&t, &k, PL_JOB_DIRECT_OPEN);
    k.user = a;
    k.peer = b;
    CHECK_EQ(t_run1(&t, &k), PL_STORE_OK);
    CHECK_EQ(k.out_id, conv);
    CHECK_EQ(k.created, 0);
    CHECK_EQ(k.has_event, 0);
    CHECK_EQ(t_count_contiguous(&t, conv), 1);    /* one CREATED event only */

    pl_conv cv;
    CHECK_EQ(rd_conv_get(&t, conv, b, &cv), PL_STORE_OK);
    CHECK_EQ(cv.kind, PL_CONV_DIRECT);
    CHECK(cv.title == NULL);
    CHECK_EQ(cv.nmembers, 2);
    CHECK_EQ(cv.role, PL_ROLE_MEMBER);
    CHECK_EQ(role_of(&cv, a), PL_ROLE_MEMBER);
    pl_conv_release(&cv);
    CHECK_EQ(rd_conv_get(&t, conv, c, &cv), PL_STORE_ENOTFOUND);

    k.peer = a;
    CHECK_EQ(t_run1(&t, &k), PL_STORE_EINVAL);
    k.peer = 999;
    CHECK_EQ(t_run1(&t, &k), PL_STORE_ENOTFOUND);
    t_finish(&t);
}

TEST(store_group_create_roles_and_data) {
    tstore t;
    CHECK_EQ(t_open(&t), PL_STORE_OK);
    int64_t a = t_user(&t, "alice"), b = t_user(&t, "bob"), c = t_user(&t, "carol");
    int64_t m[] = {b, a, c, b, c};                /* duplicates and the creator */
    pl_job j;
    t_init(&t, &j, PL_JOB_GROUP_CREATE);
    j.user = a;
    j.title = "Ops \"night\" \\ shift\n\xc3\xa9";
    j.members = m;
    j.nmembers = 5;
    CHECK_EQ(t_run(&t, &j, 1), 0);
    CHECK_EQ(j.result, PL_STORE_OK);
    CHECK_EQ(j.has_event, 1);
    CHECK_EQ(j.event.seq, 1);
    CHECK_EQ(j.event.kind, PL_EV_CREATED);
    json_error_t err;
    json_t *d = json_loads(j.event.data, 0, &err);
    pl_event_release(&j.event);
    CHECK(d != NULL);
    int ok = json_is_object(d) && strcmp(json_string_value(json_object_get(d, "kind")), "group") == 0 &&
             strcmp(json_string_value(json_object_get(d, "title")), j.title) == 0 &&
             json_array_size(json_object_get(d, "members")) == 3 &&
             json_integer_value(json_array_get(json_object_get(d, "members"), 0)) == a &&
             json_integer_value(json_array_get(json_object_get(d, "members"), 1)) == b &&
             json_integer_value(json_array_get(json_object_get(d, "members"), 2)) == c;
    json_decref(d);
    CHECK(ok);

    pl_conv cv;
    CHECK_EQ(rd_conv_get(&t, j.out_id, b, &cv), PL_STORE_OK);
    CHECK_EQ(cv.kind, PL_CONV_GROUP);
    CHECK_STR(cv.title, j.title);
    CHECK_EQ(cv.last_seq, 1);
    CHECK_EQ(cv.role, PL_ROLE_MEMBER);
    CHECK_EQ(cv.nmembers, 3);
    CHECK_EQ(cv.members[0].user, a);              /* ordered by joining */
    CHECK_EQ(cv.members[0].role, PL_ROLE_ADMIN);
    CHECK_EQ(cv.members[1].user, b);
    CHECK_EQ(cv.members[2].user, c);
    CHECK_EQ(cv.members[2].role, PL_ROLE_MEMBER);
    pl_conv_release(&cv);
    CHECK_EQ(rd_role(&t, j.out_id, a), PL_ROLE_ADMIN);

    /* an unknown member fails the job and creates nothing */
    int64_t bad[] = {b, 999};
    CHECK_EQ(t_group(&t, a, "x", bad, 2), PL_STORE_ENOTFOUND);
    pl_conv *list;
    size_t n;
    CHECK_EQ(rd_conv_list(&t, b, 0, &list, &n), PL_STORE_OK);
    pl_conv_list_free(list, n);
    CHECK_EQ(n, 1);
    /* a creator alone is a group of one */
    int64_t solo = t_group(&t, c, "solo", NULL, 0);
    CHECK(solo > 0);
    CHECK_EQ(rd_conv_get(&t, solo, c, &cv), PL_STORE_OK);
    CHECK_EQ(cv.nmembers, 1);
    pl_conv_release(&cv);
    CHECK_EQ(t_group(&t, 999, "x", NULL, 0), PL_STORE_ENOTFOUND);
    t_finish(&t);
}

TEST(store_member_add_remove_rules) {
    tstore t;
    CHECK_EQ(t_open(&t), PL_STORE_OK);
    int64_t a = t_user(&t, "alice"), b = t_user(&t, "bob"), c = t_user(&t, "carol"),
            d = t_user(&t, "dave");
    int64_t m[] = {b};
    int64_t g = t_group(&t, a, "g", m, 1);
    CHECK(g > 0);
    int ev = -1;

    CHECK_EQ(t_member_op(&t, PL_JOB_MEMBER_ADD, g, b, c, NULL), PL_STORE_EFORBID);
    CHECK_EQ(t_member_op(&t, PL_JOB_MEMBER_ADD, g, d, c, NULL), PL_STORE_ENOTFOUND);
    CHECK_EQ(t_member_op(&t, PL_JOB_MEMBER_ADD, g, a, 999, NULL), PL_STORE_ENOTFOUND);
    CHECK_EQ(t_member_op(&t, PL_JOB_MEMBER_ADD, 777, a, c, NULL), PL_STORE_ENOTFOUND);
    CHECK_EQ(t_member_op(&t, PL_JOB_MEMBER_ADD, g, a, b, &ev), PL_STORE_OK);
    CHECK_EQ(ev, 0);                              /* already a member */
    CHECK_EQ(t_last_seq(&t, g, a), 1);

    pl_job j;
    t_init(&t, &j, PL_JOB_MEMBER_ADD);
    j.conv = g; j.user = a; j.peer = c;
    CHECK_EQ(t_run(&t, &j, 1), 0);
    CHECK_EQ(j.result, PL_STORE_OK);
    CHECK_EQ(j.has_event, 1);
    CHECK_EQ(j.event.kind, PL_EV_MEMBER_ADDED);
    CHECK_EQ(j.event.seq, 2);
    CHECK_EQ(j.event.sender, a);
    char want[32];
    snprintf(want, sizeof want, "{\"user\":%lld}", (long long)c);
    CHECK_STR(j.event.data, want);
    pl_event_release(&j.event);
    CHECK_EQ(rd_role(&t, g, c), PL_ROLE_MEMBER);

    /* direct conversations do not change members */
    pl_job dj;
    t_init(&t, &dj, PL_JOB_DIRECT_OPEN);
    dj.user = a; dj.peer = b;
    CHECK_EQ(t_run1(&t, &dj), PL_STORE_OK);
    CHECK_EQ(t_member_op(&t, PL_JOB_MEMBER_ADD, dj.out_id, a, c, NULL), PL_STORE_EINVAL);
    CHECK_EQ(t_member_op(&t, PL_JOB_MEMBER_REMOVE, dj.out_id, a, b, NULL), PL_STORE_EINVAL);
    CHECK_EQ(t_member_op(&t, PL_JOB_MEMBER_LEAVE, dj.out_id, a, 0, NULL), PL_STORE_EINVAL);
    CHECK_EQ(t_member_op(&t, PL_JOB_MEMBER_ADD, dj.out_id, c, d, NULL), PL_STORE_ENOTFOUND);

    /* removal: admins only, peer must be a member */
    CHECK_EQ(t_member_op(&t, PL_JOB_MEMBER_REMOVE, g, b, c, NULL), PL_STORE_EFORBID);
    CHECK_EQ(t_member_op(&t, PL_JOB_MEMBER_REMOVE, g, a, d, NULL), PL_STORE_ENOTFOUND);
    CHECK_EQ(t_member_op(&t, PL_JOB_MEMBER_REMOVE, g, d, b, NULL), PL_STORE_ENOTFOUND);
    t_init(&t, &j, PL_JOB_MEMBER_REMOVE);
    j.conv = g; j.user = a; j.peer = c;
    CHECK_EQ(t_run(&t, &j, 1), 0);
    CHECK_EQ(j.result, PL_STORE_OK);
    CHECK_EQ(j.event.kind, PL_EV_MEMBER_REMOVED);
    CHECK_EQ(j.event.seq, 3);
    CHECK_STR(j.event.data, want);
    pl_event_release(&j.event);
    CHECK_EQ(rd_role(&t, g, c), PL_ROLE_NONE);
    pl_conv cv;
    CHECK_EQ(rd_conv_get(&t, g, c, &cv), PL_STORE_ENOTFOUND);

    /* re-adding joins at the end; an admin removing itself promotes the
     * earliest-joined remaining member */
    CHECK_EQ(t_member_op(&t, PL_JOB_MEMBER_ADD, g, a, c, NULL), PL_STORE_OK);
    CHECK_EQ(t_member_op(&t, PL_JOB_MEMBER_REMOVE, g, a, a, NULL), PL_STORE_OK);
    CHECK_EQ(rd_role(&t, g, b), PL_ROLE_ADMIN);
    CHECK_EQ(rd_role(&t, g, c), PL_ROLE_MEMBER);
    CHECK_EQ(t_last_seq(&t, g, b), 5);
    CHECK_EQ(t_count_contiguous(&t, g), 5);
    t_finish(&t);
}

TEST(store_member_leave_promotes_admin) {
    tstore t;
    CHECK_EQ(t_open(&t), PL_STORE_OK);
    int64_t a = t_user(&t, "alice"), b = t_user(&t, "bob"), c = t_user(&t, "carol"),
            d = t_user(&t, "dave");
    int64_t m[] = {c, b};                          /* c joined before b */
    int64_t g = t_group(&t, a, "g", m, 2);
    CHECK(g > 0);
    CHECK_EQ(t_member_op(&t, PL_JOB_MEMBER_ADD, g, a, d, NULL), PL_STORE_OK);
    CHECK_EQ(t_member_op(&t, PL_JOB_MEMBER_LEAVE, g, 999, 0, NULL), PL_STORE_ENOTFOUND);
    CHECK_EQ(t_member_op(&t, PL_JOB_MEMBER_LEAVE, 777, a, 0, NULL), PL_STORE_ENOTFOUND);

    pl_job j;
    t_init(&t, &j, PL_JOB_MEMBER_LEAVE);
    j.conv = g;
    j.user = a;
    CHECK_EQ(t_run(&t, &j, 1), 0);
    CHECK_EQ(j.result, PL_STORE_OK);
    CHECK_EQ(j.event.kind, PL_EV_MEMBER_LEFT);
    CHECK_EQ(j.event.sender, a);
    CHECK_EQ(j.event.seq, 3);
    /* the promotion is in the log, with the departure (audit B2: it was
     * in no event, and a client replaying the log saw no admin) */
    char want[80];
    snprintf(want, sizeof want, "{\"user\":%lld,\"new_admin\":%lld}", (long long)a, (long long)c);
    CHECK_STR(j.event.data, want);
    pl_event_release(&j.event);
    CHECK_EQ(rd_role(&t, g, a), PL_ROLE_NONE);
    CHECK_EQ(rd_role(&t, g, c), PL_ROLE_ADMIN);
    CHECK_EQ(rd_role(&t, g, b), PL_ROLE_MEMBER);
    CHECK_EQ(t_member_op(&t, PL_JOB_MEMBER_LEAVE, g, a, 0, NULL), PL_STORE_ENOTFOUND);

    /* a member leaving changes no roles */
    t_init(&t, &j, PL_JOB_MEMBER_LEAVE);
    j.conv = g;
    j.user = b;
    CHECK_EQ(t_run(&t, &j, 1), 0);
    CHECK_EQ(j.result, PL_STORE_OK);
    snprintf(want, sizeof want, "{\"user\":%lld}", (long long)b);
    CHECK_STR(j.event.data, want);
    pl_event_release(&j.event);
    CHECK_EQ(rd_role(&t, g, c), PL_ROLE_ADMIN);
    CHECK_EQ(rd_role(&t, g, d), PL_ROLE_MEMBER);
    /* the last admin is removed by itself: the only remaining member (d)
     * is promoted */
    t_init(&t, &j, PL_JOB_MEMBER_REMOVE);
    j.conv = g;
    j.user = c;
    j.peer = c;
    CHECK_EQ(t_run(&t, &j, 1), 0);
    CHECK_EQ(j.result, PL_STORE_OK);
    CHECK_EQ(j.event.kind, PL_EV_MEMBER_REMOVED);
    snprintf(want, sizeof want, "{\"user\":%lld,\"new_admin\":%lld}", (long long)c, (long long)d);
    CHECK_STR(j.event.data, want);
    pl_event_release(&j.event);
    CHECK_EQ(rd_role(&t, g, d), PL_ROLE_ADMIN);
    t_init(&t, &j, PL_JOB_MEMBER_LEAVE);           /* nobody left to promote */
    j.conv = g;
    j.user = d;
    CHECK_EQ(t_run(&t, &j, 1), 0);
    CHECK_EQ(j.result, PL_STORE_OK);
    snprintf(want, sizeof want, "{\"user\":%lld}", (long long)d);
    CHECK_STR(j.event.data, want);
    pl_event_release(&j.event);
    int64_t everyone[] = {a, b, c, d};
    for (int i = 0; i < 4; i++) CHECK_EQ(rd_role(&t, g, everyone[i]), PL_ROLE_NONE);
    CHECK_EQ(t_count_contiguous(&t, g), 6);       /* the log stays */
    t_finish(&t);
}

/* MEMBER_ROLE (audit G: there was no way to make someone else an admin):
 * admins only, members only, no change no event, the last admin stays. */
static int t_role(tstore *t, int64_t conv, int64_t actor, int64_t peer, int role, int *changed,
                  const char **why) {
    pl_job j;
    t_init(t, &j, PL_JOB_MEMBER_ROLE);
    j.conv = conv; j.user = actor; j.peer = peer; j.level = role;
    if (t_run(t, &j, 1)) return -100;
    if (changed) *changed = j.created;
    if (why) *why = j.why;
    if (j.has_event) pl_event_release(&j.event);
    return j.result;
}

TEST(store_member_role_changes_are_events) {
    tstore t;
    CHECK_EQ(t_open(&t), PL_STORE_OK);
    int64_t a = t_user(&t, "alice"), b = t_user(&t, "bob"), c = t_user(&t, "carol"),
            d = t_user(&t, "dave");
    int64_t m[] = {b, c};
    int64_t g = t_group(&t, a, "g", m, 2);
    CHECK(g > 0);
    int changed = -1;
    const char *why = NULL;
    CHECK_EQ(t_role(&t, g, b, c, PL_ROLE_ADMIN, NULL, NULL), PL_STORE_EFORBID);   /* not an admin */
    CHECK_EQ(t_role(&t, g, d, c, PL_ROLE_ADMIN, NULL, NULL), PL_STORE_ENOTFOUND); /* not a member */
    CHECK_EQ(t_role(&t, g, a, d, PL_ROLE_ADMIN, NULL, NULL), PL_STORE_ENOTFOUND); /* peer not one */
    CHECK_EQ(t_role(&t, 777, a, b, PL_ROLE_ADMIN, NULL, NULL), PL_STORE_ENOTFOUND);
    CHECK_EQ(t_last_seq(&t, g, a), 1);

    pl_job j;
    t_init(&t, &j, PL_JOB_MEMBER_ROLE);
    j.conv = g; j.user = a; j.peer = b; j.level = PL_ROLE_ADMIN;
    CHECK_EQ(t_run(&t, &j, 1), 0);
    CHECK_EQ(j.result, PL_STORE_OK);
    CHECK_EQ(j.created, 1);
    CHECK_EQ(j.has_event, 1);
    CHECK_EQ(j.event.kind, PL_EV_MEMBER_ROLE);
    CHECK_EQ(j.event.seq, 2);
    CHECK_EQ(j.event.sender, a);
    CHECK_EQ(j.event.subject, b);
    char want[64];
    snprintf(want, sizeof want, "{\"user\":%lld,\"role\":\"admin\"}", (long long)b);
    CHECK_STR(j.event.data, want);
    pl_event_release(&j.event);
    CHECK_EQ(rd_role(&t, g, b), PL_ROLE_ADMIN);

    CHECK_EQ(t_role(&t, g, a, b, PL_ROLE_ADMIN, &changed, NULL), PL_STORE_OK);    /* no change */
    CHECK_EQ(changed, 0);
    CHECK_EQ(t_last_seq(&t, g, a), 2);
    /* the new admin can act as one; demoting another admin is allowed */
    CHECK_EQ(t_member_op(&t, PL_JOB_MEMBER_ADD, g, b, d, NULL), PL_STORE_OK);
    CHECK_EQ(t_role(&t, g, b, a, PL_ROLE_MEMBER, &changed, NULL), PL_STORE_OK);
    CHECK_EQ(changed, 1);
    CHECK_EQ(rd_role(&t, g, a), PL_ROLE_MEMBER);
    CHECK_EQ(t_role(&t, g, a, c, PL_ROLE_ADMIN, NULL, NULL), PL_STORE_EFORBID);   /* a is not now */
    /* the last admin cannot step down: someone must stay admin */
    CHECK_EQ(t_role(&t, g, b, b, PL_ROLE_MEMBER, NULL, &why), PL_STORE_EINVAL);
    CHECK(why != NULL && strstr(why, "last admin") != NULL);
    CHECK_EQ(rd_role(&t, g, b), PL_ROLE_ADMIN);
    CHECK_EQ(t_count_contiguous(&t, g), 4);

    /* a direct conversation has no roles to change */
    pl_job dj;
    t_init(&t, &dj, PL_JOB_DIRECT_OPEN);
    dj.user = a; dj.peer = b;
    CHECK_EQ(t_run1(&t, &dj), PL_STORE_OK);
    CHECK_EQ(t_role(&t, dj.out_id, a, b, PL_ROLE_ADMIN, NULL, NULL), PL_STORE_EINVAL);
    t_finish(&t);
}

TEST(store_workspace_roles) {
    tstore t;
    CHECK_EQ(t_open(&t), PL_STORE_OK);
    int64_t a = t_user(&t, "alice"), b = t_user(&t, "bob"), c = t_user(&t, "carol");
    pl_job j;
    t_init(&t, &j, PL_JOB_WORKSPACE_CREATE);
    j.user = a;
    j.title = "acme";
    CHECK_EQ(t_run1(&t, &j), PL_STORE_OK);
    int64_t ws = j.out_id;
    t_init(&t, &j, PL_JOB_WORKSPACE_ADD);
    j.id = ws; j.user = a; j.peer = b;
    CHECK_EQ(t_run1(&t, &j), PL_STORE_OK);
    pl_job_release(&j);
    struct { int64_t actor, peer; int role, want, changed; } steps[] = {
        {b, a, PL_ROLE_MEMBER, PL_STORE_EFORBID, 0},     /* not an admin */
        {c, b, PL_ROLE_ADMIN, PL_STORE_ENOTFOUND, 0},    /* not in it */
        {a, c, PL_ROLE_ADMIN, PL_STORE_ENOTFOUND, 0},    /* peer not in it */
        {a, a, PL_ROLE_MEMBER, PL_STORE_EINVAL, 0},      /* the last admin */
        {a, b, PL_ROLE_ADMIN, PL_STORE_OK, 1},
        {a, b, PL_ROLE_ADMIN, PL_STORE_OK, 0},           /* no change */
        {b, a, PL_ROLE_MEMBER, PL_STORE_OK, 1},          /* bob is an admin now */
        {a, b, PL_ROLE_MEMBER, PL_STORE_EFORBID, 0},     /* alice is not */
        {b, b, PL_ROLE_MEMBER, PL_STORE_EINVAL, 0},
    };
    for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++) {
        t_init(&t, &j, PL_JOB_WORKSPACE_ROLE);
        j.id = ws;
        j.user = steps[i].actor; j.peer = steps[i].peer; j.level = steps[i].role;
        CHECK_EQ(t_run1(&t, &j), steps[i].want);
        if (steps[i].want == PL_STORE_OK) CHECK_EQ(j.created, steps[i].changed);
        CHECK_EQ(j.has_event, 0);
        pl_job_release(&j);
    }
    t_init(&t, &j, PL_JOB_WORKSPACE_ROLE);
    j.id = ws + 1000; j.user = a; j.peer = b; j.level = PL_ROLE_ADMIN;
    CHECK_EQ(t_run1(&t, &j), PL_STORE_ENOTFOUND);
    t_finish(&t);
}

/* ---- sends, seqs, group commit ------------------------------------------ */

TEST(store_seq_contiguous_across_batches) {
    tstore t;
    CHECK_EQ(t_open(&t), PL_STORE_OK);
    int64_t a = t_user(&t, "alice"), b = t_user(&t, "bob");
    int64_t m[] = {b};
    int64_t g1 = t_group(&t, a, "one", m, 1), g2 = t_group(&t, b, "two", &a, 1);
    CHECK(g1 > 0 && g2 > 0);
    int64_t want1 = 2, want2 = 2;
    char cmid[8][32];
    for (int round = 0; round < 5; round++) {
        pl_job j[8];
        for (int i = 0; i < 8; i++) {
            snprintf(cmid[i], sizeof cmid[i], "r%d-%d", round, i);
            t_send_init(&t, &j[i], i % 3 ? g1 : g2, i % 2 ? a : b, cmid[i], "hi");
        }
        CHECK_EQ(t_run(&t, j, 8), 0);
        for (int i = 0; i < 8; i++) {
            CHECK_EQ(j[i].result, PL_STORE_OK);
            CHECK_EQ(j[i].dup, 0);
            CHECK_EQ(j[i].has_event, 1);
            CHECK_EQ(j[i].event.seq, i % 3 ? want1++ : want2++);
            CHECK_STR(j[i].event.body, "hi");
            CHECK_STR(j[i].event.client_msg_id, cmid[i]);
            pl_event_release(&j[i].event);
        }
    }
    CHECK_EQ(t_last_seq(&t, g1, a), want1 - 1);
    CHECK_EQ(t_last_seq(&t, g2, a), want2 - 1);
    CHECK_EQ(t_count_contiguous(&t, g1), want1 - 1);
    CHECK_EQ(t_count_contiguous(&t, g2), want2 - 1);
    t_finish(&t);
}

TEST(store_group_commit_1000_sends) {
    enum { N = 1000, CONVS = 10 };
    tstore t;
    CHECK_EQ(t_open(&t), PL_STORE_OK);
    int64_t a = t_user(&t, "alice");
    int64_t conv[CONVS];
    for (int i = 0; i < CONVS; i++) CHECK((conv[i] = t_group(&t, a, "g", NULL, 0)) > 0);
    pl_job *j = calloc(N, sizeof *j);
    char (*cmid)[16] = calloc(N, sizeof *cmid);
    int before = t.notifies, first = t.ndone;
    for (int i = 0; i < N; i++) {
        snprintf(cmid[i], sizeof cmid[i], "m%d", i);
        t_send_init(&t, &j[i], conv[i % CONVS], a, cmid[i], cmid[i]);
        pl_store_submit(t.s, &j[i]);
    }
    int rc = t_wait(&t, first + N);
    int batches = t.notifies - before;
    int64_t next[CONVS];
    for (int i = 0; i < CONVS; i++) next[i] = 2;
    int bad = 0, unordered = 0;
    uint64_t last_id = 0;
    for (int i = 0; i < N; i++) {
        if (j[i].result != PL_STORE_OK || j[i].event.seq != next[i % CONVS]++) bad++;
        if (t.order[first + i] != &j[i] || j[i].event.id <= last_id) unordered++;
        last_id = j[i].event.id;
        pl_event_release(&j[i].event);
    }
    free(j);
    free(cmid);
    CHECK_EQ(rc, 0);
    CHECK_EQ(bad, 0);
    CHECK_EQ(unordered, 0);                       /* done() in submission order */
    CHECK(batches >= 1 && batches <= N);
    for (int i = 0; i < CONVS; i++) CHECK_EQ(t_count_contiguous(&t, conv[i]), 1 + N / CONVS);
    t_finish(&t);
}

TEST(store_send_idempotent_same_batch) {
    tstore t;
    CHECK_EQ(t_open(&t), PL_STORE_OK);
    int64_t a = t_user(&t, "alice"), b = t_user(&t, "bob");
    int64_t g = t_group(&t, a, "g", &b, 1);
    pl_job j[4];
    t_send_init(&t, &j[0], g, a, "c-1", "first");
    t_send_init(&t, &j[1], g, a, "c-1", "retry body differs");
    t_send_init(&t, &j[2], g, b, "c-1", "same key, other sender");
    t_send_init(&t, &j[3], g, a, "c-1", "again");
    CHECK_EQ(t_run(&t, j, 4), 0);
    for (int i = 0; i < 4; i++) CHECK_EQ(j[i].result, PL_STORE_OK);
    CHECK_EQ(j[0].dup, 0);
    CHECK_EQ(j[0].event.seq, 2);
    CHECK_EQ(j[2].dup, 0);
    CHECK_EQ(j[2].event.seq, 3);
    for (int i = 1; i < 4; i += 2) {
        CHECK_EQ(j[i].dup, 1);
        CHECK_EQ(j[i].has_event, 1);
        CHECK_EQ(j[i].event.seq, j[0].event.seq);
        CHECK_EQ(j[i].event.id, j[0].event.id);
        CHECK_EQ(j[i].event.ts, j[0].event.ts);
        CHECK_EQ(j[i].event.sender, a);
        CHECK_EQ(j[i].event.kind, PL_EV_MESSAGE);
        CHECK_STR(j[i].event.body, "first");      /* the stored event */
        CHECK_STR(j[i].event.client_msg_id, "c-1");
    }
    for (int i = 0; i < 4; i++) pl_event_release(&j[i].event);
    CHECK_EQ(t_last_seq(&t, g, a), 3);
    CHECK_EQ(t_count_contiguous(&t, g), 3);
    t_finish(&t);
}

TEST(store_send_idempotent_later_batch_and_reopen) {
    tstore t;
    CHECK_EQ(t_open(&t), PL_STORE_OK);
    int64_t a = t_user(&t, "alice");
    int64_t g = t_group(&t, a, "g", NULL, 0);
    pl_job o, r;
    t_send_init(&t, &o, g, a, "k", "hello");
    CHECK_EQ(t_run(&t, &o, 1), 0);
    CHECK_EQ(o.result, PL_STORE_OK);
    CHECK_EQ(o.dup, 0);
    for (int pass = 0; pass < 2; pass++) {
        if (pass == 1) CHECK_EQ(t_reopen(&t), PL_STORE_OK);
        t_send_init(&t, &r, g, a, "k", "hello");
        CHECK_EQ(t_run(&t, &r, 1), 0);
        CHECK_EQ(r.result, PL_STORE_OK);
        CHECK_EQ(r.dup, 1);
        CHECK_EQ(r.has_event, 1);
        CHECK_EQ(r.event.seq, o.event.seq);
        CHECK_EQ(r.event.id, o.event.id);
        CHECK_EQ(r.event.ts, o.event.ts);
        CHECK_STR(r.event.body, "hello");
        pl_event_release(&r.event);
        CHECK_EQ(t_last_seq(&t, g, a), 2);
        CHECK_EQ(t_count_contiguous(&t, g), 2);
    }
    /* a new key after the retries takes the next seq */
    t_send_init(&t, &r, g, a, "k2", "x");
    CHECK_EQ(t_run(&t, &r, 1), 0);
    CHECK_EQ(r.event.seq, 3);
    CHECK(r.event.id > o.event.id);
    pl_event_release(&r.event);
    pl_event_release(&o.event);
    t_finish(&t);
}

TEST(store_send_failures_isolated) {
    tstore t;
    CHECK_EQ(t_open(&t), PL_STORE_OK);
    int64_t a = t_user(&t, "alice"), b = t_user(&t, "bob"), c = t_user(&t, "carol");
    int64_t g = t_group(&t, a, "g", &b, 1);
    pl_job j[6];
    t_send_init(&t, &j[0], g, a, "1", "ok");
    t_send_init(&t, &j[1], g, c, "2", "not a member");
    t_send_init(&t, &j[2], g, b, "3", "ok");
    t_send_init(&t, &j[3], 4242, a, "4", "no such conv");
    t_init(&t, &j[4], PL_JOB_MEMBER_ADD);          /* forbidden, same batch */
    j[4].conv = g; j[4].user = b; j[4].peer = c;
    t_send_init(&t, &j[5], g, a, NULL, "no key");
    CHECK_EQ(t_run(&t, j, 6), 0);
    CHECK_EQ(j[0].result, PL_STORE_OK);
    CHECK_EQ(j[0].event.seq, 2);
    CHECK_EQ(j[1].result, PL_STORE_ENOTFOUND);
    CHECK_EQ(j[1].has_event, 0);
    CHECK(j[1].event.body == NULL);
    CHECK_EQ(j[2].result, PL_STORE_OK);
    CHECK_EQ(j[2].event.seq, 3);
    CHECK_EQ(j[3].result, PL_STORE_ENOTFOUND);
    CHECK_EQ(j[4].result, PL_STORE_EFORBID);
    CHECK_EQ(j[5].result, PL_STORE_OK);
    CHECK_EQ(j[5].event.seq, 4);
    CHECK(j[5].event.client_msg_id == NULL);
    for (int i = 0; i < 6; i++) pl_event_release(&j[i].event);
    CHECK_EQ(t_count_contiguous(&t, g), 4);

    /* a body with an embedded NUL and its exact length survives */
    pl_job z;
    t_send_init(&t, &z, g, a, "z", "x");
    z.body = "a\0b";
    z.body_len = 3;
    CHECK_EQ(t_run(&t, &z, 1), 0);
    CHECK_EQ(z.result, PL_STORE_OK);
    CHECK(memcmp(z.event.body, "a\0b", 4) == 0);
    pl_event_release(&z.event);
    t_finish(&t);
}

/* ---- reads ---------------------------------------------------------------- */

static int check_page(tstore *t, int64_t conv, int64_t after, int64_t before, int limit,
                      int top, int64_t first, int64_t last) {
    pl_event *ev;
    size_t n;
    int rc = rd_events(t, conv, 0, after, before, limit, top, &ev, &n, NULL);
    if (rc != PL_STORE_OK) return rc;
    int ok = (int64_t)n == (first ? last - first + 1 : 0);
    for (size_t i = 0; ok && i < n; i++) ok = ev[i].seq == first + (int64_t)i;
    pl_event_list_free(ev, n);
    return ok ? 0 : -50;
}

TEST(store_history_paging) {
    tstore t;
    CHECK_EQ(t_open(&t), PL_STORE_OK);
    int64_t a = t_user(&t, "alice");
    int64_t g = t_group(&t, a, "g", NULL, 0);
    enum { N = 250 };
    pl_job j[N];
    char cmid[N][12];
    for (int i = 0; i < N; i++) {
        snprintf(cmid[i], sizeof cmid[i], "%d", i);
        t_send_init(&t, &j[i], g, a, cmid[i], cmid[i]);
    }
    CHECK_EQ(t_run(&t, j, N), 0);
    for (int i = 0; i < N; i++) pl_event_release(&j[i].event);
    /* 251 events: CREATED, then messages "0".."249" */
    CHECK_EQ(check_page(&t, g, 0, 0, 50, 0, 1, 50), 0);
    CHECK_EQ(check_page(&t, g, 50, 0, 50, 0, 51, 100), 0);
    CHECK_EQ(check_page(&t, g, 240, 0, 50, 0, 241, 251), 0);
    CHECK_EQ(check_page(&t, g, 251, 0, 50, 0, 0, 0), 0);
    CHECK_EQ(check_page(&t, g, 0, 0, 10, 1, 242, 251), 0);        /* latest */
    CHECK_EQ(check_page(&t, g, 0, 100, 10, 1, 90, 99), 0);        /* before */
    CHECK_EQ(check_page(&t, g, 0, 5, 10, 1, 1, 4), 0);
    CHECK_EQ(check_page(&t, g, 10, 20, 50, 0, 11, 19), 0);        /* window */
    CHECK_EQ(check_page(&t, g, 10, 20, 3, 0, 11, 13), 0);
    CHECK_EQ(check_page(&t, g, 10, 20, 3, 1, 17, 19), 0);
    CHECK_EQ(check_page(&t, g, 0, 0, 1000, 0, 1, PL_STORE_PAGE_MAX), 0); /* cap */
    CHECK_EQ(check_page(&t, g, 0, 0, 1000, 1, 252 - PL_STORE_PAGE_MAX, 251), 0);
    CHECK_EQ(check_page(&t, g, 0, 0, 0, 0, 0, 0), PL_STORE_EINVAL);
    CHECK_EQ(check_page(&t, 9999, 0, 0, 10, 0, 0, 0), 0);

    pl_event *ev;
    size_t n;
    CHECK_EQ(rd_events(&t, g, 0, 0, 3, 10, 0, &ev, &n, NULL), PL_STORE_OK);
    CHECK_EQ(n, 2);
    int ok = ev[0].kind == PL_EV_CREATED && ev[0].data && !ev[0].body && ev[0].conv == g &&
             ev[1].kind == PL_EV_MESSAGE && ev[1].sender == a && !ev[1].data &&
             strcmp(ev[1].body, "0") == 0 && strcmp(ev[1].client_msg_id, "0") == 0 &&
             ev[1].id > ev[0].id && ev[1].ts >= ev[0].ts && ev[1].ts > 1700000000000LL;
    pl_event_list_free(ev, n);
    CHECK(ok);
    t_finish(&t);
}

TEST(store_conv_list_unread) {
    tstore t;
    CHECK_EQ(t_open(&t), PL_STORE_OK);
    int64_t a = t_user(&t, "alice"), b = t_user(&t, "bob"), c = t_user(&t, "carol");
    int64_t m[] = {b, c};
    int64_t g = t_group(&t, a, "g", m, 2);
    pl_job dj;
    t_init(&t, &dj, PL_JOB_DIRECT_OPEN);
    dj.user = a;
    dj.peer = b;
    CHECK_EQ(t_run1(&t, &dj), PL_STORE_OK);
    int64_t d = dj.out_id;
    t_sleep_ms(3);

    pl_job j[6];
    t_send_init(&t, &j[0], g, b, "b1", "x");
    t_send_init(&t, &j[1], g, b, "b2", "x");
    t_send_init(&t, &j[2], g, a, "a1", "x");
    t_send_init(&t, &j[3], g, b, "b3", "x");
    t_send_init(&t, &j[4], g, c, "c1", "x");
    t_send_init(&t, &j[5], g, a, "a2", "x");
    CHECK_EQ(t_run(&t, j, 6), 0);
    for (int i = 0; i < 6; i++) pl_event_release(&j[i].event);

    pl_conv *list;
    size_t n;
    CHECK_EQ(rd_conv_list(&t, a, 0, &list, &n), PL_STORE_OK);
    CHECK_EQ(n, 2);
    int ok = list[0].id == g && list[0].unread == 4 && list[0].last_seq == 7 &&
             list[0].role == PL_ROLE_ADMIN && list[0].read_seq == 0 && list[0].last_ts > 0 &&
             list[0].members == NULL && strcmp(list[0].title, "g") == 0 &&
             list[1].id == d && list[1].unread == 0 && list[1].last_seq == 1 &&
             list[1].kind == PL_CONV_DIRECT && list[1].title == NULL &&
             list[0].last_ts > list[1].last_ts;
    pl_conv_list_free(list, n);
    CHECK(ok);

    /* a newer event in the direct conversation puts it first */
    t_sleep_ms(3);
    pl_job s1;
    t_send_init(&t, &s1, d, b, "d1", "x");
    CHECK_EQ(t_run1(&t, &s1), PL_STORE_OK);
    CHECK_EQ(rd_conv_list(&t, a, 0, &list, &n), PL_STORE_OK);
    ok = n == 2 && list[0].id == d && list[0].unread == 1 && list[1].id == g;
    pl_conv_list_free(list, n);
    CHECK(ok);

    /* bob's view: alice's 2 and carol's 1 */
    pl_conv cv;
    CHECK_EQ(rd_conv_get(&t, g, b, &cv), PL_STORE_OK);
    CHECK_EQ(cv.unread, 3);
    pl_conv_release(&cv);

    /* move alice's read cursor to seq 4 */
    pl_job rj;
    t_init(&t, &rj, PL_JOB_RECEIPT);
    rj.conv = g;
    rj.user = a;
    rj.read = 4;
    CHECK_EQ(t_run1(&t, &rj), PL_STORE_OK);
    CHECK_EQ(rj.out_unread, 2);
    CHECK_EQ(rd_conv_get(&t, g, a, &cv), PL_STORE_OK);
    CHECK_EQ(cv.read_seq, 4);
    CHECK_EQ(cv.unread, 2);                       /* b3 (seq 5), c1 (seq 6) */
    pl_conv_release(&cv);
    CHECK_EQ(rd_conv_list(&t, c, 0, &list, &n), PL_STORE_OK);
    ok = n == 1 && list[0].unread == 5 && list[0].role == PL_ROLE_MEMBER;
    pl_conv_list_free(list, n);
    CHECK(ok);
    CHECK_EQ(rd_conv_list(&t, 999, 0, &list, &n), PL_STORE_OK);
    CHECK_EQ(n, 0);
    CHECK(list == NULL);
    t_finish(&t);
}

TEST(store_members_and_role_reads) {
    tstore t;
    CHECK_EQ(t_open(&t), PL_STORE_OK);
    int64_t a = t_user(&t, "alice"), b = t_user(&t, "bob"), c = t_user(&t, "carol");
    int64_t m[] = {c, b};
    int64_t g = t_group(&t, a, "g", m, 2);
    pl_conv mc;
    CHECK_EQ(rd_conv_get(&t, g, a, &mc), PL_STORE_OK);
    int64_t sum = 0;
    for (size_t i = 0; i < mc.nmembers; i++) sum += mc.members[i].user;
    size_t n = mc.nmembers;
    int64_t count = mc.member_count;
    pl_conv_release(&mc);
    CHECK_EQ(n, 3);
    CHECK_EQ(count, 3);
    CHECK_EQ(sum, a + b + c);
    CHECK_EQ(rd_role(&t, g, b), PL_ROLE_MEMBER);
    CHECK_EQ(rd_role(&t, g, 999), PL_ROLE_NONE);
    CHECK_EQ(rd_role(&t, 999, a), PL_ROLE_NONE);
    pl_conv cv;
    CHECK_EQ(rd_conv_get(&t, 999, a, &cv), PL_STORE_ENOTFOUND);
    t_finish(&t);
}

/* ---- durability ---------------------------------------------------------- */

TEST(store_commit_failure_fails_batch_and_sticks) {
    SQLITE_ONLY();                     /* the fault hook is SQLite's */
    tstore t;
    CHECK_EQ(t_open(&t), PL_STORE_OK);
    int64_t a = t_user(&t, "alice");
    int64_t g = t_group(&t, a, "g", NULL, 0);
    pl_job ok1;
    t_send_init(&t, &ok1, g, a, "ok", "kept");
    CHECK_EQ(t_run1(&t, &ok1), PL_STORE_OK);

    pl_store_sqlite_fail_commits(t.s, 1);
    pl_job j[5];
    t_send_init(&t, &j[0], g, a, "f1", "lost");
    t_send_init(&t, &j[1], g, a, "f2", "lost");
    t_send_init(&t, &j[2], g, a, "ok", "dup of a committed one");
    t_init(&t, &j[3], PL_JOB_USER_CREATE);
    j[3].username = "bob";
    j[3].pwhash = "h";
    t_send_init(&t, &j[4], g, 999, "f3", "not a member");
    CHECK_EQ(t_run(&t, j, 5), 0);
    for (int i = 0; i < 5; i++) {
        CHECK_EQ(j[i].result, PL_STORE_EUNAVAIL);
        CHECK_EQ(j[i].has_event, 0);
        CHECK_EQ(j[i].dup, 0);
        CHECK(j[i].event.body == NULL);
    }
    /* sticky: later jobs fail too, reads still work */
    pl_job later;
    t_send_init(&t, &later, g, a, "f4", "after");
    CHECK_EQ(t_run1(&t, &later), PL_STORE_EUNAVAIL);
    CHECK_EQ(t_last_seq(&t, g, a), 2);

    /* after a restart nothing of the failed batch exists, no seq was used */
    CHECK_EQ(t_reopen(&t), PL_STORE_OK);
    pl_user u;
    CHECK_EQ(rd_user_by_name(&t, "bob", &u, 0), PL_STORE_ENOTFOUND);
    CHECK_EQ(t_last_seq(&t, g, a), 2);
    CHECK_EQ(t_count_contiguous(&t, g), 2);
    t_send_init(&t, &later, g, a, "f1", "retried");
    CHECK_EQ(t_run(&t, &later, 1), 0);
    CHECK_EQ(later.result, PL_STORE_OK);
    CHECK_EQ(later.dup, 0);
    CHECK_EQ(later.event.seq, 3);
    pl_event_release(&later.event);
    t_finish(&t);
}

TEST(store_reopen_keeps_last_seq) {
    tstore t;
    CHECK_EQ(t_open(&t), PL_STORE_OK);
    int64_t a = t_user(&t, "alice"), b = t_user(&t, "bob");
    int64_t g = t_group(&t, a, "g", &b, 1);
    pl_job j[5];
    char cmid[5][12];
    for (int i = 0; i < 5; i++) {
        snprintf(cmid[i], sizeof cmid[i], "%d", i);
        t_send_init(&t, &j[i], g, i % 2 ? a : b, cmid[i], "m");
    }
    CHECK_EQ(t_run(&t, j, 5), 0);
    for (int i = 0; i < 5; i++) pl_event_release(&j[i].event);
    CHECK_EQ(t_reopen(&t), PL_STORE_OK);
    CHECK_EQ(t_last_seq(&t, g, b), 6);
    pl_job k;
    t_send_init(&t, &k, g, a, "new", "m");
    CHECK_EQ(t_run(&t, &k, 1), 0);
    CHECK_EQ(k.result, PL_STORE_OK);
    CHECK_EQ(k.event.seq, 7);
    pl_event_release(&k.event);
    CHECK_EQ(t_count_contiguous(&t, g), 7);
    pl_user u;
    CHECK_EQ(rd_user_by_id(&t, b, &u), PL_STORE_OK);
    CHECK_STR(u.username, "bob");
    t_finish(&t);
}

TEST(store_close_completes_queued_jobs) {
    enum { N = 300 };
    tstore t;
    CHECK_EQ(t_open(&t), PL_STORE_OK);
    int64_t a = t_user(&t, "alice");
    int64_t g = t_group(&t, a, "g", NULL, 0);
    pl_job *j = calloc(N, sizeof *j);
    for (int i = 0; i < N; i++) {
        t_send_init(&t, &j[i], g, a, NULL, "bye");
        pl_store_submit(t.s, &j[i]);
    }
    int first = t.ndone;
    pl_store_close(&t.s);                         /* no drain: close does it */
    int done = t.ndone - first, okc = 0, inorder = 1;
    for (int i = 0; i < N; i++) {
        if (j[i].result == PL_STORE_OK && j[i].event.seq == i + 2) okc++;
        if (t.order[first + i] != &j[i]) inorder = 0;
        pl_event_release(&j[i].event);
    }
    free(j);
    CHECK_EQ(done, N);
    CHECK_EQ(okc, N);
    CHECK(inorder);
    CHECK_EQ(t_open_store(&t), PL_STORE_OK);
    CHECK_EQ(t_last_seq(&t, g, a), N + 1);
    t_finish(&t);
}

TEST(store_open_fails_cleanly) {
    SQLITE_ONLY();
    pl_store *s = NULL;
    char err[256] = "";
    pl_store_opts o = {.data_dir = "/proc/parley-no-such-dir", .node_id = 1};
    CHECK_EQ(pl_store_open(&o, &s, err, sizeof err), PL_STORE_EUNAVAIL);
    CHECK(s == NULL);
    CHECK(err[0] != '\0');
    o.url = "mysql://nope";
    CHECK_EQ(pl_store_open(&o, &s, err, sizeof err), PL_STORE_EUNAVAIL);
    CHECK(strstr(err, "unknown store") != NULL);
}

/* Invariant 6 of store_sqlite.c: one process (one open store) per directory. */
TEST(store_sqlite_refuses_a_second_opener) {
    SQLITE_ONLY();
    tstore t;
    CHECK_EQ(t_open(&t), PL_STORE_OK);
    pl_store *s2 = NULL;
    char err[256] = "";
    pl_store_opts o = {.data_dir = t.dir, .node_id = 2, .notify = t_notify, .notify_arg = &t};
    CHECK_EQ(pl_store_open(&o, &s2, err, sizeof err), PL_STORE_EUNAVAIL);
    CHECK(s2 == NULL);
    CHECK(strstr(err, "in use") != NULL);
    CHECK(t_user(&t, "alice") > 0);                /* the first one is unharmed */
    pl_store_close(&t.s);                          /* the lock goes with it */
    CHECK_EQ(pl_store_open(&o, &s2, err, sizeof err), PL_STORE_OK);
    pl_store_close(&s2);
    CHECK_EQ(t_open_store(&t), PL_STORE_OK);
    t_finish(&t);
}

/* ---- receipts, last seen, shares ---------------------------------------- */

static int t_receipt(tstore *t, int64_t conv, int64_t user, int64_t d, int64_t r, pl_job *out) {
    t_init(t, out, PL_JOB_RECEIPT);
    out->conv = conv;
    out->user = user;
    out->delivered = d;
    out->read = r;
    return t_run1(t, out);
}

/* Like t_receipt but named for the new tests: out_* kept, outputs released. */
#define t_receipt_job t_receipt

TEST(store_receipts_monotonic_clamped) {
    tstore t;
    CHECK_EQ(t_open(&t), 0);
    int64_t a = t_user(&t, "ra"), b = t_user(&t, "rb"), c = t_user(&t, "rc");
    int64_t m[] = {b};
    int64_t g = t_group(&t, a, "r", m, 1);              /* seq 1: created */
    pl_job s[3];
    t_send_init(&t, &s[0], g, a, "m1", "one");
    t_send_init(&t, &s[1], g, a, "m2", "two");
    t_send_init(&t, &s[2], g, b, "m3", "three");        /* b's own message */
    CHECK_EQ(t_run(&t, s, 3), 0);
    for (int i = 0; i < 3; i++) pl_event_release(&s[i].event);
    pl_job j;
    CHECK_EQ(t_receipt(&t, g, b, 3, 0, &j), PL_STORE_OK);
    CHECK(j.created);
    CHECK_EQ(j.out_delivered, 3);
    CHECK_EQ(j.out_read, 0);
    CHECK_EQ(j.out_unread, 2);                          /* a's two messages */
    /* going backwards or repeating changes nothing */
    CHECK_EQ(t_receipt(&t, g, b, 2, 0, &j), PL_STORE_OK);
    CHECK(!j.created);
    CHECK_EQ(j.out_delivered, 3);
    CHECK_EQ(t_receipt(&t, g, b, 3, 0, &j), PL_STORE_OK);
    CHECK(!j.created);
    /* read implies delivered; above last_seq is clamped to 4 */
    CHECK_EQ(t_receipt(&t, g, b, 0, 99, &j), PL_STORE_OK);
    CHECK(j.created);
    CHECK_EQ(j.out_read, 4);
    CHECK_EQ(j.out_delivered, 4);
    CHECK_EQ(j.out_unread, 0);
    /* stored: visible through conv_get members and the unread count */
    pl_conv cv;
    CHECK_EQ(rd_conv_get(&t, g, b, &cv), PL_STORE_OK);
    CHECK_EQ(cv.read_seq, 4);
    CHECK_EQ(cv.unread, 0);
    int found = 0;
    for (size_t i = 0; i < cv.nmembers; i++)
        if (cv.members[i].user == b) {
            found = 1;
            CHECK_EQ(cv.members[i].read_seq, 4);
            CHECK_EQ(cv.members[i].delivered_seq, 4);
        }
    pl_conv_release(&cv);
    CHECK(found);
    /* non-members cannot move cursors */
    CHECK_EQ(t_receipt(&t, g, c, 1, 1, &j), PL_STORE_ENOTFOUND);
    t_finish(&t);
}

TEST(store_last_seen_and_shares) {
    tstore t;
    CHECK_EQ(t_open(&t), 0);
    int64_t a = t_user(&t, "la"), b = t_user(&t, "lb"), c = t_user(&t, "lc");
    int64_t m[] = {b};
    CHECK(t_group(&t, a, "g", m, 1) > 0);
    CHECK_EQ(rd_shares(&t, a, b), 1);
    CHECK_EQ(rd_shares(&t, b, a), 1);
    CHECK_EQ(rd_shares(&t, a, c), 0);
    pl_job j;
    t_init(&t, &j, PL_JOB_LAST_SEEN);
    j.user = a;
    j.expires = 5000;
    CHECK_EQ(t_run1(&t, &j), PL_STORE_OK);
    t_init(&t, &j, PL_JOB_LAST_SEEN);
    j.user = a;
    j.expires = 4000;                                   /* never backwards */
    CHECK_EQ(t_run1(&t, &j), PL_STORE_OK);
    CHECK_EQ(t_reopen(&t), 0);
    pl_user u;
    CHECK_EQ(rd_user_by_id(&t, a, &u), PL_STORE_OK);
    CHECK_EQ(u.last_seen, 5000);
    free(u.pwhash);
    t_finish(&t);
}

/* ---- store.h invariants 3-5: idempotency first, visibility, unread ------ */

/* Sends body (cmid's text when NULL) with key cmid: its seq, the store's
 * error, or -99; *data (when given) a copy of the event's data, or NULL. */
static int64_t t_send_body(tstore *t, int64_t conv, int64_t user, const char *cmid, const char *body,
                           char **data) {
    pl_job j;
    t_send_init(t, &j, conv, user, cmid, body ? body : cmid);
    if (t_run(t, &j, 1) != 0) return -99;
    int64_t seq = j.result == PL_STORE_OK ? j.event.seq : j.result;
    if (data) *data = j.event.data ? strdup(j.event.data) : NULL;
    pl_job_release(&j);
    return seq;
}

static int64_t t_send(tstore *t, int64_t conv, int64_t user, const char *cmid) {
    return t_send_body(t, conv, user, cmid, NULL, NULL);
}

static int64_t t_unread(tstore *t, int64_t conv, int64_t user) {
    pl_conv c;
    if (rd_conv_get(t, conv, user, &c) != PL_STORE_OK) return -1;
    int64_t u = c.unread;
    pl_conv_release(&c);
    pl_conv *list;
    size_t n;
    if (rd_conv_list(t, user, 0, &list, &n) != PL_STORE_OK) return -2;
    int64_t lu = -3;
    for (size_t i = 0; i < n; i++)
        if (list[i].id == conv) lu = list[i].unread;
    pl_conv_list_free(list, n);
    return lu == u ? u : -4;                     /* list and get agree */
}

/* A member removed and added again: its own messages from before count
 * for nothing in its new membership. Reading took them out of own_unread
 * anyway (counted from read_seq, 0 in the new row, not from joined_seq),
 * so own_unread went below zero and unread stayed too high for good, even
 * read up to the head (audit F, under membership churn). */
TEST(store_unread_after_a_member_is_added_again) {
    tstore t;
    CHECK_EQ(t_open(&t), PL_STORE_OK);
    int64_t a = t_user(&t, "ann"), b = t_user(&t, "bob"), c = t_user(&t, "cid");
    int64_t m[] = {b, c};
    int64_t g = t_group(&t, a, "g", m, 2);
    CHECK(g > 0);
    char cmid[16];
    for (int i = 0; i < 3; i++) {                   /* cid's own messages, then he goes */
        snprintf(cmid, sizeof cmid, "c%d", i);
        CHECK(t_send(&t, g, c, cmid) > 0);
    }
    CHECK_EQ(t_member_op(&t, PL_JOB_MEMBER_REMOVE, g, a, c, NULL), PL_STORE_OK);
    CHECK(t_send(&t, g, b, "b-away") > 0);
    CHECK_EQ(t_member_op(&t, PL_JOB_MEMBER_ADD, g, a, c, NULL), PL_STORE_OK);
    CHECK(t_send(&t, g, b, "b-1") > 0);
    CHECK(t_send(&t, g, c, "c-back") > 0);
    int64_t head = t_send(&t, g, a, "a-1");
    CHECK(head > 0);
    CHECK_EQ(t_unread(&t, g, c), 2);                /* b-1 and a-1 */
    pl_job j;
    CHECK_EQ(t_receipt(&t, g, c, head, head, &j), PL_STORE_OK);
    CHECK_EQ(j.out_unread, 0);
    pl_job_release(&j);
    CHECK_EQ(t_unread(&t, g, c), 0);
    CHECK(t_send(&t, g, b, "b-2") > 0);
    CHECK_EQ(t_unread(&t, g, c), 1);
    t_finish(&t);
}


/* A receipt that moves a cursor says the reader's unread mentions after it,
 * as a conversation's unread_mentions would (own sessions' frames). */
TEST(store_receipt_unread_mentions) {
    tstore t;
    CHECK_EQ(t_open(&t), PL_STORE_OK);
    int64_t a = t_user(&t, "mann"), b = t_user(&t, "mbob");
    int64_t m[] = {b};
    int64_t g = t_group(&t, a, "g", m, 1);                   /* seq 1 */
    CHECK_EQ(t_send(&t, g, a, "hi @mbob"), 2);
    CHECK_EQ(t_send(&t, g, a, "plain"), 3);
    CHECK_EQ(t_send(&t, g, a, "again @mbob"), 4);
    pl_job r;
    CHECK_EQ(t_receipt_job(&t, g, b, 0, 2, &r), PL_STORE_OK);
    CHECK(r.created);
    CHECK_EQ(r.out_unread, 2);
    CHECK_EQ(r.out_unread_mentions, 1);                      /* seq 4 */
    CHECK_EQ(t_receipt_job(&t, g, b, 0, 4, &r), PL_STORE_OK);
    CHECK_EQ(r.out_unread_mentions, 0);
    /* a mention sent in the batch before the read it is above */
    pl_job j[3];
    t_send_init(&t, &j[0], g, a, "x1", "@mbob one");            /* seq 5 */
    t_send_init(&t, &j[1], g, a, "x2", "@mbob two");            /* seq 6 */
    t_init(&t, &j[2], PL_JOB_RECEIPT);
    j[2].conv = g; j[2].user = b; j[2].read = 5;
    CHECK_EQ(t_run(&t, j, 3), 0);
    CHECK_EQ(j[2].result, PL_STORE_OK);
    CHECK_EQ(j[2].out_unread, 1);
    CHECK_EQ(j[2].out_unread_mentions, 1);                   /* seq 6 */
    for (int i = 0; i < 3; i++) pl_job_release(&j[i]);
    t_finish(&t);
}

TEST(store_unread_counters_exact) {
    tstore t;
    CHECK_EQ(t_open(&t), PL_STORE_OK);
    int64_t a = t_user(&t, "ua"), b = t_user(&t, "ub"), c = t_user(&t, "uc"), d = t_user(&t, "ud");
    int64_t m[] = {b, c};
    int64_t g = t_group(&t, a, "g", m, 2);                   /* seq 1 */
    CHECK_EQ(t_send(&t, g, b, "b1"), 2);
    CHECK_EQ(t_send(&t, g, a, "a1"), 3);
    CHECK_EQ(t_send(&t, g, b, "b2"), 4);
    CHECK_EQ(t_send(&t, g, c, "c1"), 5);
    CHECK_EQ(t_send(&t, g, a, "a2"), 6);
    CHECK_EQ(t_unread(&t, g, a), 3);                         /* b1 b2 c1: own never count */
    CHECK_EQ(t_unread(&t, g, b), 3);                         /* a1 c1 a2 */
    pl_job r;
    CHECK_EQ(t_receipt_job(&t, g, a, 0, 4, &r), PL_STORE_OK); /* read through b2 */
    CHECK_EQ(r.out_unread, 1);
    CHECK_EQ(t_unread(&t, g, a), 1);                         /* c1 */
    CHECK_EQ(t_send(&t, g, a, "a3"), 7);
    CHECK_EQ(t_unread(&t, g, a), 1);
    CHECK_EQ(t_receipt_job(&t, g, a, 0, 7, &r), PL_STORE_OK);
    CHECK_EQ(r.out_unread, 0);
    CHECK_EQ(t_unread(&t, g, a), 0);
    /* delivered alone never changes unread */
    CHECK_EQ(t_receipt_job(&t, g, b, 7, 0, &r), PL_STORE_OK);
    CHECK_EQ(r.out_unread, 4);                               /* a1 c1 a2 a3 */
    /* a send and a read in the same batch */
    pl_job j[3];
    t_send_init(&t, &j[0], g, b, "b3", "x");                 /* seq 8 */
    t_init(&t, &j[1], PL_JOB_RECEIPT);
    j[1].conv = g; j[1].user = b; j[1].read = 8;
    t_send_init(&t, &j[2], g, b, "b4", "x");                 /* seq 9 */
    CHECK_EQ(t_run(&t, j, 3), 0);
    CHECK_EQ(j[1].result, PL_STORE_OK);
    CHECK_EQ(j[1].out_unread, 0);
    for (int i = 0; i < 3; i++) pl_job_release(&j[i]);
    CHECK_EQ(t_unread(&t, g, b), 0);                         /* b4 is own */
    CHECK_EQ(t_unread(&t, g, a), 2);                         /* b3 b4 */
    /* a member added later counts only what came after joining */
    CHECK_EQ(t_member_op(&t, PL_JOB_MEMBER_ADD, g, a, d, NULL), PL_STORE_OK); /* seq 10 */
    CHECK_EQ(t_unread(&t, g, d), 0);
    CHECK_EQ(t_send(&t, g, c, "c2"), 11);
    CHECK_EQ(t_unread(&t, g, d), 1);
    CHECK_EQ(t_unread(&t, g, a), 3);                         /* member_added is not a message */
    CHECK_EQ(t_receipt_job(&t, g, d, 0, 11, &r), PL_STORE_OK);
    CHECK_EQ(r.out_unread, 0);
    /* survives a reopen (counters are rows, not memory) */
    CHECK_EQ(t_reopen(&t), PL_STORE_OK);
    CHECK_EQ(t_unread(&t, g, a), 3);
    CHECK_EQ(t_unread(&t, g, b), 1);
    CHECK_EQ(t_unread(&t, g, c), 7);                         /* b1 a1 b2 a2 a3 b3 b4 */
    t_finish(&t);
}

TEST(store_visibility_from_joining) {
    tstore t;
    CHECK_EQ(t_open(&t), PL_STORE_OK);
    int64_t a = t_user(&t, "va"), b = t_user(&t, "vb"), c = t_user(&t, "vc"), d = t_user(&t, "vd");
    int64_t g = t_group(&t, a, "g", &b, 1);                  /* seq 1 */
    for (int i = 0; i < 3; i++) {
        char k[16];
        snprintf(k, sizeof k, "m%d", i);
        CHECK_EQ(t_send(&t, g, a, k), 2 + i);                /* 2..4 */
    }
    CHECK_EQ(t_member_op(&t, PL_JOB_MEMBER_ADD, g, a, c, NULL), PL_STORE_OK);  /* 5 */
    CHECK_EQ(t_send(&t, g, b, "after"), 6);
    pl_event *ev;
    size_t n;
    int more;
    CHECK_EQ(rd_events(&t, g, c, 0, 0, 50, 0, &ev, &n, &more), PL_STORE_OK);
    int ok = n == 2 && ev[0].seq == 5 && ev[0].kind == PL_EV_MEMBER_ADDED && ev[0].subject == c &&
             ev[1].seq == 6 && !more;
    pl_event_list_free(ev, n);
    CHECK(ok);
    CHECK_EQ(rd_events(&t, g, c, 0, 6, 50, 1, &ev, &n, &more), PL_STORE_OK);
    ok = n == 1 && ev[0].seq == 5 && !more;
    pl_event_list_free(ev, n);
    CHECK(ok);
    CHECK_EQ(rd_events(&t, g, c, 0, 5, 50, 1, &ev, &n, &more), PL_STORE_OK);
    CHECK_EQ(n, 0);
    CHECK_EQ(more, 0);
    CHECK_EQ(rd_events(&t, g, b, 0, 0, 50, 0, &ev, &n, &more), PL_STORE_OK);
    pl_event_list_free(ev, n);
    CHECK_EQ(n, 6);
    CHECK_EQ(rd_events(&t, g, d, 0, 0, 50, 0, &ev, &n, &more), PL_STORE_ENOTFOUND);
    /* more: the paging direction within the visible range */
    CHECK_EQ(rd_events(&t, g, a, 0, 0, 3, 0, &ev, &n, &more), PL_STORE_OK);
    pl_event_list_free(ev, n);
    CHECK_EQ(n, 3);
    CHECK_EQ(more, 1);
    CHECK_EQ(rd_events(&t, g, a, 3, 0, 3, 0, &ev, &n, &more), PL_STORE_OK);
    pl_event_list_free(ev, n);
    CHECK_EQ(n, 3);
    CHECK_EQ(more, 0);
    CHECK_EQ(rd_events(&t, g, a, 0, 0, 2, 1, &ev, &n, &more), PL_STORE_OK);
    ok = n == 2 && ev[0].seq == 5 && ev[1].seq == 6 && more;
    pl_event_list_free(ev, n);
    CHECK(ok);
    /* receipts: the event at a seq before joining is not shown */
    pl_job r;
    t_init(&t, &r, PL_READ_RECEIPTS);
    r.conv = g; r.user = c; r.seq = 3;
    CHECK_EQ(t_read(&t, &r), PL_STORE_OK);
    ok = r.nevents == 0 && r.conv_out.nmembers == 3 && r.conv_out.joined_seq == 5;
    for (size_t i = 0; i < r.conv_out.nmembers; i++)
        if (r.conv_out.members[i].user == c && r.conv_out.members[i].joined_seq != 5) ok = 0;
    pl_job_release(&r);
    CHECK(ok);
    t_init(&t, &r, PL_READ_RECEIPTS);
    r.conv = g; r.user = c; r.seq = 6;
    CHECK_EQ(t_read(&t, &r), PL_STORE_OK);
    ok = r.nevents == 1 && r.events[0].seq == 6 && r.events[0].sender == b;
    pl_job_release(&r);
    CHECK(ok);
    t_init(&t, &r, PL_READ_RECEIPTS);
    r.conv = g; r.user = d; r.seq = 6;
    CHECK_EQ(t_read(&t, &r), PL_STORE_ENOTFOUND);
    pl_job_release(&r);
    /* the list's last event respects it too */
    pl_conv *list;
    CHECK_EQ(rd_conv_list(&t, c, PL_READ_WITH_LAST, &list, &n), PL_STORE_OK);
    ok = n == 1 && list[0].last && list[0].last->seq == 6 && list[0].last->body &&
         strcmp(list[0].last->body, "after") == 0 && list[0].joined_seq == 5 &&
         list[0].member_count == 3;
    pl_conv_list_free(list, n);
    CHECK(ok);
    t_finish(&t);
}

TEST(store_retry_after_removal_gets_original_ack) {
    tstore t;
    CHECK_EQ(t_open(&t), PL_STORE_OK);
    int64_t a = t_user(&t, "ra1"), b = t_user(&t, "rb1");
    int64_t g = t_group(&t, a, "g", &b, 1);
    CHECK_EQ(t_send(&t, g, b, "k1"), 2);
    CHECK_EQ(t_member_op(&t, PL_JOB_MEMBER_REMOVE, g, a, b, NULL), PL_STORE_OK);   /* 3 */
    pl_job j;
    t_send_init(&t, &j, g, b, "k1", "k1");
    CHECK_EQ(t_run(&t, &j, 1), 0);
    CHECK_EQ(j.result, PL_STORE_OK);
    CHECK_EQ(j.dup, 1);
    CHECK_EQ(j.event.seq, 2);
    pl_job_release(&j);
    CHECK_EQ(t_send(&t, g, b, "k2"), PL_STORE_ENOTFOUND);
    CHECK_EQ(t_count_contiguous(&t, g), 3);
    t_finish(&t);
}

TEST(store_receipt_reports_author_and_member_count) {
    tstore t;
    CHECK_EQ(t_open(&t), PL_STORE_OK);
    int64_t a = t_user(&t, "pa"), b = t_user(&t, "pb"), c = t_user(&t, "pc");
    int64_t m[] = {b, c};
    int64_t g = t_group(&t, a, "g", m, 2);
    CHECK_EQ(t_send(&t, g, a, "x"), 2);
    pl_job r;
    CHECK_EQ(t_receipt_job(&t, g, b, 0, 2, &r), PL_STORE_OK);
    CHECK(r.created);
    CHECK_EQ(r.out_peer, a);
    CHECK_EQ(r.out_members, 3);
    CHECK_EQ(t_receipt_job(&t, g, b, 0, 2, &r), PL_STORE_OK);
    CHECK(!r.created);
    CHECK_EQ(r.out_peer, 0);
    CHECK_EQ(t_send(&t, g, c, "y"), 3);
    CHECK_EQ(t_receipt_job(&t, g, c, 0, 3, &r), PL_STORE_OK);   /* onto its own message */
    CHECK_EQ(r.out_peer, 0);
    CHECK_EQ(t_member_op(&t, PL_JOB_MEMBER_LEAVE, g, c, 0, NULL), PL_STORE_OK);
    CHECK_EQ(t_receipt_job(&t, g, b, 4, 0, &r), PL_STORE_OK);
    CHECK_EQ(r.out_members, 2);
    t_finish(&t);
}

TEST(store_session_heads_memberships_reads) {
    tstore t;
    CHECK_EQ(t_open(&t), PL_STORE_OK);
    int64_t a = t_user(&t, "sa"), b = t_user(&t, "sb");
    int64_t g = t_group(&t, a, "g", &b, 1);
    CHECK_EQ(t_send(&t, g, a, "x"), 2);
    pl_job lj;
    t_init(&t, &lj, PL_JOB_LOGIN_CREATE);
    lj.user = b;
    lj.expires = 4102444800000LL;
    CHECK_EQ(t_run1(&t, &lj), PL_STORE_OK);
    pl_job j;
    t_init(&t, &j, PL_READ_SESSION);
    j.id = lj.out_id;
    j.user = b;
    CHECK_EQ(t_read(&t, &j), PL_STORE_OK);
    int ok = j.login_out.user == b && j.user_out.id == b && strcmp(j.user_out.username, "sb") == 0 &&
             j.nconvs == 1 && j.convs[0].id == g && j.convs[0].last_seq == 2 && j.convs[0].unread == 1;
    pl_job_release(&j);
    CHECK(ok);
    t_init(&t, &j, PL_READ_SESSION);
    j.id = lj.out_id + 100;
    j.user = b;
    CHECK_EQ(t_read(&t, &j), PL_STORE_ENOTFOUND);
    pl_job_release(&j);

    int64_t ids[] = {g, 424242};
    t_init(&t, &j, PL_READ_CONV_HEADS);
    j.ids = ids;
    j.nids = 2;
    CHECK_EQ(t_read(&t, &j), PL_STORE_OK);
    ok = j.heads && j.heads[0] == 2 && j.heads[1] == 0;
    pl_job_release(&j);
    CHECK(ok);

    int64_t users[] = {a, b, 999};
    t_init(&t, &j, PL_READ_MEMBERSHIPS);
    j.ids = users;
    j.nids = 3;
    CHECK_EQ(t_read(&t, &j), PL_STORE_OK);
    ok = j.nmships == 2;
    for (size_t i = 0; i < j.nmships; i++)
        ok = ok && j.mships[i].conv == g && j.mships[i].joined_seq == 1 && j.mships[i].last_seq == 2 &&
             (j.mships[i].user == a || j.mships[i].user == b);
    pl_job_release(&j);
    CHECK(ok);

    int64_t who[] = {a, b, 999};
    t_init(&t, &j, PL_READ_USERS_VISIBLE);
    j.user = a;
    j.ids = who;
    j.nids = 3;
    CHECK_EQ(t_read(&t, &j), PL_STORE_OK);
    ok = j.nusers == 2 && j.users[0].id == a && j.users[1].id == b &&
         strcmp(j.users[1].username, "sb") == 0;
    pl_job_release(&j);
    CHECK(ok);
    t_finish(&t);
}

/* A database written by the previous schema (version 2) is migrated with
 * its counters backfilled. */
TEST(store_migration_backfills_counters) {
    SQLITE_ONLY();
    tstore t;
    CHECK_EQ(t_open(&t), PL_STORE_OK);
    pl_store_close(&t.s);
    char p[160];
    snprintf(p, sizeof p, "%s/parley.db", t.dir);
    unlink(p);
    sqlite3 *db;
    CHECK_EQ(sqlite3_open(p, &db), SQLITE_OK);
    const char *v2 =
        "PRAGMA journal_mode = WAL;"
        "CREATE TABLE users(id INTEGER PRIMARY KEY, username TEXT NOT NULL UNIQUE, pwhash TEXT NOT NULL,"
        " created INTEGER NOT NULL, last_seen INTEGER NOT NULL DEFAULT 0);"
        "CREATE TABLE logins(id INTEGER PRIMARY KEY, user_id INTEGER NOT NULL, refresh_hash BLOB NOT NULL,"
        " expires INTEGER NOT NULL, revoked INTEGER NOT NULL DEFAULT 0, created INTEGER NOT NULL);"
        "CREATE INDEX logins_user ON logins(user_id);"
        "CREATE TABLE conversations(id INTEGER PRIMARY KEY, kind INTEGER NOT NULL, title TEXT,"
        " direct_key TEXT UNIQUE, last_seq INTEGER NOT NULL DEFAULT 0, last_ts INTEGER NOT NULL DEFAULT 0,"
        " next_join INTEGER NOT NULL DEFAULT 0, created INTEGER NOT NULL);"
        "CREATE TABLE members(conv_id INTEGER NOT NULL, user_id INTEGER NOT NULL, role INTEGER NOT NULL,"
        " joined INTEGER NOT NULL, delivered_seq INTEGER NOT NULL DEFAULT 0, read_seq INTEGER NOT NULL DEFAULT 0,"
        " PRIMARY KEY(conv_id, user_id)) WITHOUT ROWID;"
        "CREATE INDEX members_user ON members(user_id, conv_id);"
        "CREATE TABLE events(conv_id INTEGER NOT NULL, seq INTEGER NOT NULL, id INTEGER NOT NULL,"
        " ts INTEGER NOT NULL, kind INTEGER NOT NULL, sender INTEGER NOT NULL, client_msg_id TEXT,"
        " body TEXT, data TEXT, PRIMARY KEY(conv_id, seq)) WITHOUT ROWID;"
        "CREATE UNIQUE INDEX events_idem ON events(conv_id, sender, client_msg_id) WHERE client_msg_id IS NOT NULL;"
        "INSERT INTO users VALUES(1,'a','h',0,0),(2,'b','h',0,0),(3,'c','h',0,0);"
        "INSERT INTO conversations VALUES(7,2,'g',NULL,6,60,3,0);"
        "INSERT INTO members VALUES(7,1,2,0,0,3),(7,2,1,1,0,0),(7,3,1,2,0,0);"
        "INSERT INTO events VALUES(7,1,101,10,1,1,NULL,NULL,'{\"kind\":\"group\",\"title\":\"g\",\"members\":[1,2]}'),"
        " (7,2,102,20,2,2,'x1','hi',NULL),(7,3,103,30,2,1,'x2','yo',NULL),"
        " (7,4,104,40,3,1,NULL,NULL,'{\"user\":3}'),(7,5,105,50,2,2,'x3','hey',NULL),"
        " (7,6,106,60,2,1,'x4','ho',NULL);"
        "PRAGMA user_version = 2;";
    int rc = sqlite3_exec(db, v2, NULL, NULL, NULL);
    sqlite3_close(db);
    CHECK_EQ(rc, SQLITE_OK);
    CHECK_EQ(t_open_store(&t), PL_STORE_OK);
    CHECK_EQ(t_unread(&t, 7, 1), 1);        /* a read 3: b's x3 (5); x4 is own */
    CHECK_EQ(t_unread(&t, 7, 2), 2);        /* b read 0: a's x2, x4 */
    CHECK_EQ(t_unread(&t, 7, 3), 2);        /* c joined at 4: x3, x4 */
    pl_conv cv;
    CHECK_EQ(rd_conv_get(&t, 7, 3, &cv), PL_STORE_OK);
    int ok = cv.joined_seq == 4 && cv.member_count == 3;
    pl_conv_release(&cv);
    CHECK(ok);
    pl_event *ev;
    size_t n;
    CHECK_EQ(rd_events(&t, 7, 3, 0, 0, 50, 0, &ev, &n, NULL), PL_STORE_OK);
    ok = n == 3 && ev[0].seq == 4 && ev[0].subject == 3;
    pl_event_list_free(ev, n);
    CHECK(ok);
    CHECK_EQ(t_send(&t, 7, 3, "new"), 7);
    CHECK_EQ(t_unread(&t, 7, 2), 3);        /* and c's new one */
    t_finish(&t);
}

/* ---- store.h invariants 6 and 7: message actions, replies, mentions ------ */

/* Sends body (cmid = body) replying to reply_to; the new seq or the error;
 * the event's annot and data go to annot/data when given (caller frees). */
static int64_t t_say(tstore *t, int64_t conv, int64_t user, const char *body, int64_t reply_to,
                     char **annot, char **data) {
    pl_job j;
    t_send_init(t, &j, conv, user, body, body);
    j.seq = reply_to;
    if (t_run(t, &j, 1) != 0) return -99;
    int64_t seq = j.result == PL_STORE_OK ? j.event.seq : j.result;
    if (annot) *annot = j.event.annot ? strdup(j.event.annot) : NULL;
    if (data) *data = j.event.data ? strdup(j.event.data) : NULL;
    pl_job_release(&j);
    return seq;
}

/* Runs a message action; returns the result, *seq = the appended event's
 * seq (0 when nothing changed), *why = the reason. */
static int t_act(tstore *t, pl_job_op op, int64_t conv, int64_t user, int64_t target, const char *arg,
                 int flags, int64_t *seq, const char **why) {
    pl_job j;
    t_init(t, &j, op);
    j.conv = conv;
    j.user = user;
    j.seq = target;
    j.flags = flags;
    if (op == PL_JOB_REACTION) j.emoji = arg;
    else if (arg) {
        j.body = arg;
        j.body_len = strlen(arg);
    }
    if (t_run(t, &j, 1) != 0) return -99;
    if (seq) *seq = j.has_event ? j.event.seq : 0;
    if (why) *why = j.why;
    int rc = j.result;
    if (rc == PL_STORE_OK && !j.has_event && j.created) rc = -98;   /* created means an event */
    pl_job_release(&j);
    return rc;
}

/* The event at seq as viewer reads it (history), copied into *out. */
static int t_event_at(tstore *t, int64_t conv, int64_t viewer, int64_t seq, pl_event *out) {
    pl_event *ev;
    size_t n;
    int rc = rd_events(t, conv, viewer, seq - 1, seq + 1, 1, 0, &ev, &n, NULL);
    if (rc) return rc;
    if (n != 1 || ev[0].seq != seq) {
        pl_event_list_free(ev, n);
        return -97;
    }
    pl_event_copy(out, &ev[0]);
    pl_event_list_free(ev, n);
    return 0;
}

static int has(const char *s, const char *sub) { return s && strstr(s, sub) != NULL; }

/* 1 if the bytes of file contain needle. */
static int file_has(const char *path, const char *needle) {
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    size_t cap = 1 << 20, len = 0, nl = strlen(needle);
    char *buf = malloc(cap);
    size_t got;
    while ((got = fread(buf + len, 1, cap - len, f)) > 0) {
        len += got;
        if (len == cap) buf = realloc(buf, cap *= 2);
    }
    fclose(f);
    int found = 0;
    for (size_t i = 0; i + nl <= len && !found; i++) found = memcmp(buf + i, needle, nl) == 0;
    free(buf);
    return found;
}

TEST(store_msg_edit_and_current_form) {
    tstore t;
    t.edit_window_ms = 0;
    CHECK_EQ(t_open(&t), PL_STORE_OK);
    int64_t a = t_user(&t, "ann"), b = t_user(&t, "bob"), c = t_user(&t, "cid");
    int64_t m[] = {b, c};
    int64_t g = t_group(&t, a, "g", m, 2);
    CHECK_EQ(t_say(&t, g, a, "hello @bob", 0, NULL, NULL), 2);
    const char *why = NULL;
    int64_t seq = -1;
    CHECK_EQ(t_act(&t, PL_JOB_MESSAGE_EDIT, g, b, 2, "mine now", 0, &seq, &why), PL_STORE_EFORBID);
    CHECK_STR(why, "not your message");
    CHECK_EQ(t_act(&t, PL_JOB_MESSAGE_EDIT, g, a, 2, "hello @cid", 0, &seq, NULL), PL_STORE_OK);
    CHECK_EQ(seq, 3);
    CHECK_EQ(t_act(&t, PL_JOB_MESSAGE_EDIT, g, a, 2, "hello @cid", 0, &seq, NULL), PL_STORE_OK);
    CHECK_EQ(seq, 0);                                 /* unchanged: no event */
    CHECK_EQ(t_last_seq(&t, g, a), 3);
    pl_event e;
    CHECK_EQ(t_event_at(&t, g, b, 2, &e), 0);
    int ok = e.body && strcmp(e.body, "hello @cid") == 0 && has(e.annot, "\"edited_ts\":") &&
             has(e.data, "\"mentions\":[3]");
    pl_event_release(&e);
    CHECK(ok);
    CHECK_EQ(t_event_at(&t, g, b, 3, &e), 0);
    ok = e.kind == PL_EV_EDIT && e.ref == 2 && e.body && strcmp(e.body, "hello @cid") == 0 &&
         has(e.data, "\"target\":2");
    pl_event_release(&e);
    CHECK(ok);
    /* mentions follow the edit: cid is mentioned now, bob no more */
    pl_conv cv;
    CHECK_EQ(rd_conv_get(&t, g, c, &cv), PL_STORE_OK);
    CHECK_EQ(cv.unread_mentions, 1);
    pl_conv_release(&cv);
    CHECK_EQ(rd_conv_get(&t, g, b, &cv), PL_STORE_OK);
    CHECK_EQ(cv.unread_mentions, 0);
    pl_conv_release(&cv);
    /* targets that are not messages, do not exist, or are not visible */
    CHECK_EQ(t_act(&t, PL_JOB_MESSAGE_EDIT, g, a, 1, "x", 0, NULL, &why), PL_STORE_EINVAL);
    CHECK_STR(why, "not a message");
    CHECK_EQ(t_act(&t, PL_JOB_MESSAGE_EDIT, g, a, 3, "x", 0, NULL, NULL), PL_STORE_EINVAL);
    CHECK_EQ(t_act(&t, PL_JOB_MESSAGE_EDIT, g, a, 99, "x", 0, NULL, NULL), PL_STORE_ENOTFOUND);
    int64_t d = t_user(&t, "dan");
    CHECK_EQ(t_act(&t, PL_JOB_MESSAGE_EDIT, g, d, 2, "x", 0, NULL, NULL), PL_STORE_ENOTFOUND);
    CHECK_EQ(t_member_op(&t, PL_JOB_MEMBER_ADD, g, a, d, NULL), PL_STORE_OK);   /* seq 4 */
    CHECK_EQ(t_act(&t, PL_JOB_REACTION, g, d, 2, "\xF0\x9F\x91\x8D", 0, NULL, NULL), PL_STORE_ENOTFOUND);
    CHECK_EQ(t_last_seq(&t, g, a), 4);
    CHECK_EQ(t_count_contiguous(&t, g), 4);
    t_finish(&t);
}

TEST(store_msg_edit_window) {
    tstore t;
    memset(&t, 0, sizeof t);
    CHECK_EQ(t_open(&t), PL_STORE_OK);
    t.edit_window_ms = 1;
    CHECK_EQ(t_reopen(&t), PL_STORE_OK);
    int64_t a = t_user(&t, "ann"), b = t_user(&t, "bob");
    int64_t m[] = {b};
    int64_t g = t_group(&t, a, "g", m, 1);
    CHECK_EQ(t_say(&t, g, a, "typo", 0, NULL, NULL), 2);
    t_sleep_ms(20);
    const char *why = NULL;
    CHECK_EQ(t_act(&t, PL_JOB_MESSAGE_EDIT, g, a, 2, "fixed", 0, NULL, &why), PL_STORE_EFORBID);
    CHECK_STR(why, "edit window passed");
    CHECK_EQ(t_last_seq(&t, g, a), 2);
    t_finish(&t);
}

TEST(store_msg_delete_erases) {
    tstore t;
    CHECK_EQ(t_open(&t), PL_STORE_OK);
    int64_t a = t_user(&t, "ann"), b = t_user(&t, "bob"), c = t_user(&t, "cid");
    int64_t m[] = {b, c};
    int64_t g = t_group(&t, a, "g", m, 2);
    const char *secret = "zq-secret-body-71";
    pl_job sj;
    t_send_init(&t, &sj, g, b, "sec-1", secret);          /* the key is not secret */
    CHECK_EQ(t_run1(&t, &sj), PL_STORE_OK);
    CHECK_EQ(t_last_seq(&t, g, a), 2);
    CHECK_EQ(t_act(&t, PL_JOB_MESSAGE_EDIT, g, b, 2, "zq-secret-edit-72 @ann", 0, NULL, NULL), PL_STORE_OK);
    CHECK_EQ(t_act(&t, PL_JOB_REACTION, g, c, 2, "\xF0\x9F\x91\x8D", 0, NULL, NULL), PL_STORE_OK);
    CHECK_EQ(t_act(&t, PL_JOB_PIN, g, c, 2, NULL, 0, NULL, NULL), PL_STORE_OK);       /* seq 5 */
    CHECK_EQ(t_say(&t, g, c, "quoting", 2, NULL, NULL), 6);
    const char *why = NULL;
    CHECK_EQ(t_act(&t, PL_JOB_MESSAGE_DELETE, g, c, 2, NULL, 0, NULL, &why), PL_STORE_EFORBID);
    CHECK_STR(why, "not your message");
    int64_t seq = 0;
    CHECK_EQ(t_act(&t, PL_JOB_MESSAGE_DELETE, g, a, 2, NULL, 0, &seq, NULL), PL_STORE_OK);  /* admin */
    CHECK_EQ(seq, 7);
    pl_event e;
    CHECK_EQ(t_event_at(&t, g, c, 2, &e), 0);
    int ok = e.kind == PL_EV_MESSAGE && !e.body && !e.data && has(e.annot, "\"deleted\":true") &&
             !has(e.annot, "reactions") && !has(e.annot, "pinned") && e.client_msg_id;
    pl_event_release(&e);
    CHECK(ok);
    CHECK_EQ(t_event_at(&t, g, c, 3, &e), 0);             /* its edit */
    ok = e.kind == PL_EV_EDIT && !e.body && has(e.annot, "\"deleted\":true") && !has(e.data, "zq");
    pl_event_release(&e);
    CHECK(ok);
    CHECK_EQ(t_event_at(&t, g, c, 4, &e), 0);             /* its reaction: the target only */
    ok = e.kind == PL_EV_REACTION && e.ref == 2 && has(e.data, "{\"target\":2}") && !has(e.data, "emoji") &&
         !has(e.data, "\xF0\x9F\x91\x8D");
    pl_event_release(&e);
    CHECK(ok);
    CHECK_EQ(t_event_at(&t, g, c, 6, &e), 0);             /* a reply to it */
    ok = has(e.annot, "\"reply_preview\":{\"seq\":2,\"deleted\":true}");
    pl_event_release(&e);
    CHECK(ok);
    CHECK_EQ(t_event_at(&t, g, c, 7, &e), 0);
    ok = e.kind == PL_EV_DELETE && e.ref == 2 && e.sender == a && has(e.data, "{\"target\":2}");
    pl_event_release(&e);
    CHECK(ok);
    pl_conv cv;                                           /* its mention is gone too */
    CHECK_EQ(rd_conv_get(&t, g, a, &cv), PL_STORE_OK);
    CHECK_EQ(cv.unread_mentions, 0);
    pl_conv_release(&cv);
    pl_job pj;                                            /* and its pin */
    t_init(&t, &pj, PL_READ_PINS);
    pj.conv = g;
    pj.user = a;
    CHECK_EQ(t_read(&t, &pj), PL_STORE_OK);
    CHECK_EQ(pj.nevents, 0);
    pl_job_release(&pj);
    /* a deleted target is gone for every action; a retry still gets its ack */
    CHECK_EQ(t_act(&t, PL_JOB_MESSAGE_DELETE, g, b, 2, NULL, 0, NULL, NULL), PL_STORE_EGONE);
    CHECK_EQ(t_act(&t, PL_JOB_MESSAGE_EDIT, g, b, 2, "again", 0, NULL, NULL), PL_STORE_EGONE);
    CHECK_EQ(t_act(&t, PL_JOB_REACTION, g, a, 2, "\xF0\x9F\x91\x8D", 0, NULL, NULL), PL_STORE_EGONE);
    CHECK_EQ(t_act(&t, PL_JOB_PIN, g, a, 2, NULL, 0, NULL, NULL), PL_STORE_EGONE);
    CHECK_EQ(t_say(&t, g, a, "reply to gone", 2, NULL, NULL), PL_STORE_EGONE);
    pl_job rj;
    t_send_init(&t, &rj, g, b, "sec-1", "another body");
    CHECK_EQ(t_run(&t, &rj, 1), 0);
    ok = rj.result == PL_STORE_OK && rj.dup && rj.event.seq == 2 && !rj.event.body;
    pl_job_release(&rj);
    CHECK(ok);
    CHECK_EQ(t_last_seq(&t, g, a), 7);
    CHECK_EQ(t_count_contiguous(&t, g), 7);
    /* a direct conversation: only the author deletes */
    pl_job dj;
    t_init(&t, &dj, PL_JOB_DIRECT_OPEN);
    dj.user = a;
    dj.peer = b;
    CHECK_EQ(t_run1(&t, &dj), PL_STORE_OK);
    int64_t dm = dj.out_id;
    CHECK_EQ(t_say(&t, dm, a, "dm text", 0, NULL, NULL), 2);
    CHECK_EQ(t_act(&t, PL_JOB_MESSAGE_DELETE, dm, b, 2, NULL, 0, NULL, NULL), PL_STORE_EFORBID);
    CHECK_EQ(t_act(&t, PL_JOB_MESSAGE_DELETE, dm, a, 2, NULL, 0, NULL, NULL), PL_STORE_OK);
    if (!t_backend()) {                                   /* SQLite: gone from the files */
        pl_store_close(&t.s);
        char p[200];
        snprintf(p, sizeof p, "%s/parley.db", t.dir);
        CHECK(!file_has(p, "zq-secret-body-71"));
        CHECK(!file_has(p, "zq-secret-edit-72"));
        snprintf(p, sizeof p, "%s/parley.db-wal", t.dir);
        CHECK(!file_has(p, "zq-secret-body-71"));
        CHECK(!file_has(p, "zq-secret-edit-72"));
        static const char *const search_files[] = {"search.db", "search.db-wal"};
        for (size_t i = 0; i < 2; i++) {       /* the search index's file too */
            snprintf(p, sizeof p, "%s/%s", t.dir, search_files[i]);
            CHECK(!file_has(p, "zq-secret-body-71"));
            CHECK(!file_has(p, "zq-secret-edit-72"));
        }
        CHECK_EQ(t_open_store(&t), PL_STORE_OK);
    }
    t_finish(&t);
}

TEST(store_msg_reactions) {
    tstore t;
    CHECK_EQ(t_open(&t), PL_STORE_OK);
    int64_t a = t_user(&t, "ann"), b = t_user(&t, "bob");
    int64_t m[] = {b};
    int64_t g = t_group(&t, a, "g", m, 1);
    CHECK_EQ(t_say(&t, g, a, "react to me", 0, NULL, NULL), 2);
    const char *up = "\xF0\x9F\x91\x8D", *heart = "\xE2\x9D\xA4\xEF\xB8\x8F";
    int64_t seq = 0;
    CHECK_EQ(t_act(&t, PL_JOB_REACTION, g, b, 2, up, 0, &seq, NULL), PL_STORE_OK);
    CHECK_EQ(seq, 3);
    CHECK_EQ(t_act(&t, PL_JOB_REACTION, g, b, 2, up, 0, &seq, NULL), PL_STORE_OK);
    CHECK_EQ(seq, 0);                                     /* twice: nothing */
    CHECK_EQ(t_act(&t, PL_JOB_REACTION, g, a, 2, up, 0, &seq, NULL), PL_STORE_OK);
    CHECK_EQ(seq, 4);
    CHECK_EQ(t_act(&t, PL_JOB_REACTION, g, a, 2, heart, PL_JOB_REMOVE, &seq, NULL), PL_STORE_OK);
    CHECK_EQ(seq, 0);                                     /* removing none: nothing */
    CHECK_EQ(t_act(&t, PL_JOB_REACTION, g, b, 2, heart, 0, &seq, NULL), PL_STORE_OK);
    pl_event e;
    CHECK_EQ(t_event_at(&t, g, a, 4, &e), 0);
    int ok = e.kind == PL_EV_REACTION && has(e.data, "\"op\":\"add\"") && has(e.data, "\"count\":2");
    pl_event_release(&e);
    CHECK(ok);
    CHECK_EQ(t_event_at(&t, g, a, 2, &e), 0);
    ok = has(e.annot, "\"reactions\":[{\"emoji\":\"\xF0\x9F\x91\x8D\",\"count\":2,\"me\":true},"
                      "{\"emoji\":\"\xE2\x9D\xA4\xEF\xB8\x8F\",\"count\":1,\"me\":false}]");
    pl_event_release(&e);
    CHECK(ok);
    CHECK_EQ(t_act(&t, PL_JOB_REACTION, g, a, 2, up, PL_JOB_REMOVE, &seq, NULL), PL_STORE_OK);
    CHECK_EQ(seq, 6);
    CHECK_EQ(t_event_at(&t, g, a, 6, &e), 0);
    ok = has(e.data, "\"op\":\"remove\"") && has(e.data, "\"count\":1");
    pl_event_release(&e);
    CHECK(ok);
    /* bad emoji, and the cap on distinct emoji */
    const char *why = NULL;
    CHECK_EQ(t_act(&t, PL_JOB_REACTION, g, a, 2, "abc", 0, NULL, &why), PL_STORE_EINVAL);
    CHECK_STR(why, "bad emoji");
    CHECK_EQ(t_act(&t, PL_JOB_REACTION, g, a, 2, "", 0, NULL, NULL), PL_STORE_EINVAL);
    CHECK_EQ(t_act(&t, PL_JOB_REACTION, g, a, 2, "\xF0\x9F\x91 ", 0, NULL, NULL), PL_STORE_EINVAL);
    /* no Unicode White_Space nor control, also past ASCII: NBSP, NEL (C1),
     * U+3000, U+2028, U+202F */
    const char *const spaced[] = {"\xF0\x9F\x91\x8D\xC2\xA0", "\xC2\x85\xF0\x9F\x91\x8D", "\xE3\x80\x80",
                                  "\xF0\x9F\x91\x8D\xE2\x80\xA8\xF0\x9F\x91\x8D", "\xE2\x80\xAF\xE2\x9D\xA4",
                                  "\xF0\x9F\x91\x8D\xC2\x9F"};
    for (size_t i = 0; i < sizeof spaced / sizeof spaced[0]; i++)
        CHECK_EQ(t_act(&t, PL_JOB_REACTION, g, a, 2, spaced[i], 0, NULL, NULL), PL_STORE_EINVAL);
    char big[64];
    for (int i = 0; i < 11; i++) memcpy(big + 3 * i, "\xE2\x9D\xA4", 3);   /* 33 bytes */
    big[33] = '\0';
    CHECK_EQ(t_act(&t, PL_JOB_REACTION, g, a, 2, big, 0, NULL, NULL), PL_STORE_EINVAL);
    int64_t last = t_last_seq(&t, g, a);
    for (int i = 2; i < PL_STORE_REACTIONS_MAX; i++) {   /* 2 distinct so far */
        char emo[8] = "\xF0\x9F\x98\x80";
        emo[3] = (char)(0x80 + i);
        CHECK_EQ(t_act(&t, PL_JOB_REACTION, g, a, 2, emo, 0, NULL, NULL), PL_STORE_OK);
    }
    CHECK_EQ(t_act(&t, PL_JOB_REACTION, g, a, 2, "\xF0\x9F\x99\x80", 0, NULL, NULL), PL_STORE_EINVAL);
    CHECK_EQ(t_act(&t, PL_JOB_REACTION, g, a, 2, heart, 0, NULL, NULL), PL_STORE_OK);  /* known emoji */
    CHECK_EQ(t_last_seq(&t, g, a), last + PL_STORE_REACTIONS_MAX - 2 + 1);
    CHECK_EQ(t_count_contiguous(&t, g), t_last_seq(&t, g, a));
    t_finish(&t);
}

TEST(store_msg_pins) {
    tstore t;
    CHECK_EQ(t_open(&t), PL_STORE_OK);
    int64_t a = t_user(&t, "ann"), b = t_user(&t, "bob");
    int64_t m[] = {b};
    int64_t g = t_group(&t, a, "g", m, 1);
    CHECK_EQ(t_say(&t, g, a, "one", 0, NULL, NULL), 2);
    CHECK_EQ(t_say(&t, g, b, "two", 0, NULL, NULL), 3);
    int64_t seq = 0;
    CHECK_EQ(t_act(&t, PL_JOB_PIN, g, b, 2, NULL, 0, &seq, NULL), PL_STORE_OK);
    CHECK_EQ(seq, 4);
    CHECK_EQ(t_act(&t, PL_JOB_PIN, g, b, 2, NULL, 0, &seq, NULL), PL_STORE_OK);
    CHECK_EQ(seq, 0);
    t_sleep_ms(3);
    CHECK_EQ(t_act(&t, PL_JOB_PIN, g, a, 3, NULL, 0, &seq, NULL), PL_STORE_OK);
    CHECK_EQ(seq, 5);
    pl_job pj;
    t_init(&t, &pj, PL_READ_PINS);
    pj.conv = g;
    pj.user = a;
    CHECK_EQ(t_read(&t, &pj), PL_STORE_OK);
    int ok = pj.nevents == 2 && pj.events[0].seq == 3 && pj.events[1].seq == 2 &&
             has(pj.events[0].annot, "\"pinned\":true");
    pl_job_release(&pj);
    CHECK(ok);
    CHECK_EQ(t_act(&t, PL_JOB_PIN, g, a, 2, NULL, PL_JOB_REMOVE, &seq, NULL), PL_STORE_OK);
    CHECK_EQ(seq, 6);
    CHECK_EQ(t_act(&t, PL_JOB_PIN, g, a, 2, NULL, PL_JOB_REMOVE, &seq, NULL), PL_STORE_OK);
    CHECK_EQ(seq, 0);
    pl_event e;
    CHECK_EQ(t_event_at(&t, g, a, 6, &e), 0);
    ok = e.kind == PL_EV_PIN && has(e.data, "\"op\":\"unpin\"") && e.ref == 2;
    pl_event_release(&e);
    CHECK(ok);
    t_init(&t, &pj, PL_READ_PINS);
    pj.conv = g;
    pj.user = 99;
    CHECK_EQ(t_read(&t, &pj), PL_STORE_ENOTFOUND);
    pl_job_release(&pj);
    /* the cap */
    for (int i = 0; i < PL_STORE_PINS_MAX; i++) {
        char cm[16];
        snprintf(cm, sizeof cm, "p%d", i);
        CHECK(t_say(&t, g, a, cm, 0, NULL, NULL) > 0);
    }
    int64_t last = t_last_seq(&t, g, a), pinned = 1;        /* 3 is pinned */
    int refused = 0;
    for (int64_t s2 = 7; s2 <= last && !refused; s2++) {
        int rc = t_act(&t, PL_JOB_PIN, g, a, s2, NULL, 0, NULL, NULL);
        if (rc == PL_STORE_EINVAL) refused = 1;
        else {
            CHECK_EQ(rc, PL_STORE_OK);
            pinned++;
        }
    }
    CHECK(refused);
    CHECK_EQ(pinned, PL_STORE_PINS_MAX);
    t_finish(&t);
}

/* The writer's role cache (store_sqlite_write.c) follows every change of
 * members, inside a batch too: a non-member's refused send, then its
 * addition, then its send in the same transaction; a removal; an admin's
 * leaving that promotes the oldest member, whose @all in a large group is
 * then allowed. */
static int64_t t_direct(tstore *t, int64_t a, int64_t b);

TEST(store_membership_changes_reach_sends_at_once) {
    tstore t;
    memset(&t, 0, sizeof t);
    CHECK_EQ(t_open(&t), PL_STORE_OK);
    t.large_group = 1;                                  /* every group is large */
    CHECK_EQ(t_reopen(&t), PL_STORE_OK);
    int64_t a = t_user(&t, "ca1"), b = t_user(&t, "cb1"), c = t_user(&t, "cc1");
    int64_t g = t_group(&t, a, "g", &b, 1);
    CHECK_EQ(t_send(&t, g, b, "b1"), 2);               /* b's role is now known */
    pl_job j[3];
    t_send_init(&t, &j[0], g, c, "c1", "not yet");
    t_init(&t, &j[1], PL_JOB_MEMBER_ADD);
    j[1].conv = g;
    j[1].user = a;
    j[1].peer = c;
    t_send_init(&t, &j[2], g, c, "c2", "now a member");
    CHECK_EQ(t_run(&t, j, 3), 0);
    CHECK_EQ(j[0].result, PL_STORE_ENOTFOUND);
    CHECK_EQ(j[1].result, PL_STORE_OK);
    CHECK_EQ(j[2].result, PL_STORE_OK);
    for (int i = 0; i < 3; i++) pl_job_release(&j[i]);
    CHECK_EQ(t_member_op(&t, PL_JOB_MEMBER_REMOVE, g, a, c, NULL), PL_STORE_OK);
    CHECK_EQ(t_send(&t, g, c, "c3"), PL_STORE_ENOTFOUND);
    /* b may not @all while a is the admin; after a leaves, b (the oldest
     * member) is promoted and may */
    CHECK_EQ(t_say(&t, g, b, "@all one", 0, NULL, NULL), PL_STORE_EFORBID);
    CHECK_EQ(t_member_op(&t, PL_JOB_MEMBER_LEAVE, g, a, 0, NULL), PL_STORE_OK);
    CHECK(t_say(&t, g, b, "@all two", 0, NULL, NULL) > 0);
    CHECK_EQ(t_send(&t, g, a, "a-gone"), PL_STORE_ENOTFOUND);
    /* a direct conversation is never a large group, whatever the setting
     * (audit H4: at --large-group 1 its @all was refused: no admin there) */
    int64_t d = t_direct(&t, b, c), seq = 0;
    CHECK(d > 0);
    CHECK_EQ(t_say(&t, d, c, "@all in a DM", 0, NULL, NULL), 2);
    CHECK_EQ(t_act(&t, PL_JOB_MESSAGE_EDIT, d, c, 2, "@here in a DM", 0, &seq, NULL), PL_STORE_OK);
    t_finish(&t);
}

/* Sends body as user under key cmid (reply_to: a reply); the result, *seq
 * and *dup of the ack. */
static int t_send_key(tstore *t, int64_t conv, int64_t user, const char *cmid, const char *body,
                      int64_t reply_to, int64_t *seq, int *dup) {
    pl_job j;
    t_send_init(t, &j, conv, user, cmid, body);
    j.seq = reply_to;
    if (t_run(t, &j, 1) != 0) return -99;
    int rc = j.result;
    *seq = j.event.seq;
    *dup = j.dup;
    pl_job_release(&j);
    return rc;
}

static int64_t t_unread_mentions(tstore *t, int64_t conv, int64_t user) {
    pl_conv cv;
    if (rd_conv_get(t, conv, user, &cv) != PL_STORE_OK) return -1;
    int64_t n = cv.unread_mentions;
    pl_conv_release(&cv);
    return n;
}

/* A retry writes nothing, whatever its body now mentions or replies to: no
 * mention row for a seq the next message would then take (the send finds
 * a retry at its insert, or before the mention rows when it has some). */
TEST(store_retry_with_mentions_writes_nothing) {
    tstore t;
    CHECK_EQ(t_open(&t), PL_STORE_OK);
    int64_t a = t_user(&t, "ann"), b = t_user(&t, "bob");
    int64_t g = t_group(&t, a, "g", &b, 1);
    int64_t seq;
    int dup;
    CHECK_EQ(t_send_key(&t, g, a, "k1", "plain", 0, &seq, &dup), PL_STORE_OK);
    CHECK_EQ(seq, 2);
    CHECK_EQ(dup, 0);
    CHECK_EQ(t_send_key(&t, g, a, "k1", "now @bob and @all", 0, &seq, &dup), PL_STORE_OK);
    CHECK_EQ(seq, 2);
    CHECK_EQ(dup, 1);
    CHECK_EQ(t_send_key(&t, g, a, "k1", "a reply now", 2, &seq, &dup), PL_STORE_OK);
    CHECK_EQ(seq, 2);
    CHECK_EQ(dup, 1);
    CHECK_EQ(t_send_key(&t, g, a, "k2", "next", 0, &seq, &dup), PL_STORE_OK);
    CHECK_EQ(seq, 3);
    CHECK_EQ(dup, 0);
    CHECK_EQ(t_unread_mentions(&t, g, b), 0);
    /* a reply with a mention, then its retry */
    CHECK_EQ(t_send_key(&t, g, b, "kb", "from bob", 0, &seq, &dup), PL_STORE_OK);
    CHECK_EQ(seq, 4);
    CHECK_EQ(t_send_key(&t, g, a, "k3", "yes @bob", 4, &seq, &dup), PL_STORE_OK);
    CHECK_EQ(seq, 5);
    CHECK_EQ(t_unread_mentions(&t, g, b), 1);
    CHECK_EQ(t_send_key(&t, g, a, "k3", "yes @bob", 4, &seq, &dup), PL_STORE_OK);
    CHECK_EQ(seq, 5);
    CHECK_EQ(dup, 1);
    CHECK_EQ(t_send_key(&t, g, a, "k4", "after", 0, &seq, &dup), PL_STORE_OK);
    CHECK_EQ(seq, 6);
    CHECK_EQ(t_unread_mentions(&t, g, b), 1);
    CHECK_EQ(t_count_contiguous(&t, g), 6);
    t_finish(&t);
}

/* PL_STORE_MENTIONS_MAX counts mentioned members: unknown names and names
 * of non-members (and the sender) before them do not use it up; send and
 * edit, also with a body of about 16 KiB of unknown names. */
static char *t_mention_body(int unknown, const char *tail) {   /* "@n0000 @n0001 .. <tail>" */
    size_t cap = (size_t)unknown * 7 + strlen(tail) + 1, o = 0;
    char *s = malloc(cap);
    for (int i = 0; i < unknown; i++) o += (size_t)snprintf(s + o, cap - o, "@n%04d ", i);
    snprintf(s + o, cap - o, "%s", tail);
    return s;
}

TEST(store_mentions_cap_counts_members) {
    tstore t;
    memset(&t, 0, sizeof t);
    CHECK_EQ(t_open(&t), PL_STORE_OK);
    int64_t a = t_user(&t, "ann"), b = t_user(&t, "bob");
    CHECK_EQ(t_user(&t, "outsider") > 0, 1);
    int64_t ms[56];
    char name[16], tail[1200] = "";
    ms[0] = b;
    for (int i = 1; i < 56; i++) {
        snprintf(name, sizeof name, "mem%02d", i);
        ms[i] = t_user(&t, name);
    }
    int64_t g = t_group(&t, a, "g", ms, 56);
    /* 60 unknown names, a non-member, the sender, "@@bob" (no mention), then bob */
    char *body = t_mention_body(60, "@outsider @ann @@bob @BOB!");
    char *data = NULL;
    int64_t seq = t_send_body(&t, g, a, "c1", body, &data);
    CHECK(seq > 0);
    char want[1024];
    snprintf(want, sizeof want, "{\"mentions\":[%lld]}", (long long)b);
    CHECK_STR(data, want);
    free(data);
    free(body);
    /* a backslash escapes the @ (the web client shows \\@bob as "@bob"
     * text): no mention, and \\@all is not @all */
    CHECK(t_send_body(&t, g, a, "c1e", "ask \\@bob or \\@all, not @ann", &data) > 0);
    CHECK(data == NULL);
    /* the names looked up are bounded (the first 256 distinct ones): bob
     * after 300 unknown names is not found, after 250 he is */
    body = t_mention_body(300, "@bob");
    CHECK(t_send_body(&t, g, a, "c2x", body, &data) > 0);
    CHECK(data == NULL);
    free(body);
    body = t_mention_body(250, "@bob");
    CHECK(t_send_body(&t, g, a, "c2", body, &data) > 0);
    CHECK_STR(data, want);
    free(data);
    /* an edit to such a body mentions bob too */
    CHECK(t_send_body(&t, g, a, "c3", "plain", &data) > 0);
    free(data);
    int64_t plain = t_last_seq(&t, g, a), eseq = 0;
    CHECK_EQ(t_act(&t, PL_JOB_MESSAGE_EDIT, g, a, plain, body, 0, &eseq, NULL), PL_STORE_OK);
    CHECK(eseq > plain);
    free(body);
    pl_event e;
    CHECK_EQ(t_event_at(&t, g, b, plain, &e), 0);
    CHECK_STR(e.data, want);
    pl_event_release(&e);
    CHECK_EQ(t_event_at(&t, g, b, eseq, &e), 0);
    snprintf(want, sizeof want, "{\"target\":%lld,\"mentions\":[%lld]}", (long long)plain, (long long)b);
    CHECK_STR(e.data, want);
    pl_event_release(&e);
    /* unknown names, then 55 members in reverse: the first 50 of them */
    size_t o = 0;
    for (int i = 55; i >= 1; i--) o += (size_t)snprintf(tail + o, sizeof tail - o, "@mem%02d ", i);
    body = t_mention_body(70, tail);
    CHECK(t_send_body(&t, g, a, "c4", body, &data) > 0);
    free(body);
    o = (size_t)snprintf(want, sizeof want, "{\"mentions\":[");
    for (int i = 55; i >= 6; i--) o += (size_t)snprintf(want + o, sizeof want - o, "%s%lld", i < 55 ? "," : "",
                                                        (long long)ms[i]);
    snprintf(want + o, sizeof want - o, "]}");
    CHECK_STR(data, want);
    free(data);
    t_finish(&t);
}

TEST(store_mentions_counted) {
    tstore t;
    memset(&t, 0, sizeof t);
    CHECK_EQ(t_open(&t), PL_STORE_OK);
    t.large_group = 3;
    CHECK_EQ(t_reopen(&t), PL_STORE_OK);
    int64_t a = t_user(&t, "ann"), b = t_user(&t, "bob.x"), c = t_user(&t, "cid"), d = t_user(&t, "dan");
    int64_t out = t_user(&t, "outsider");
    int64_t m[] = {b, c};
    int64_t g = t_group(&t, a, "g", m, 2);                        /* 3 members: not large */
    char *data = NULL;
    CHECK_EQ(t_say(&t, g, a, "hi @BOB.X. and @outsider, mail a@cid.com @ann", 0, NULL, &data), 2);
    CHECK_STR(data, "{\"mentions\":[2]}");                        /* b only: not the sender */
    free(data);
    CHECK_EQ(t_say(&t, g, b, "@all look", 0, NULL, &data), 3);   /* a member may in a small group */
    CHECK_STR(data, "{\"mention_all\":\"all\"}");
    free(data);
    char *annot = NULL;
    CHECK_EQ(t_say(&t, g, c, "answering bob", 3, &annot, &data), 4);
    CHECK_STR(data, "{\"reply_to\":3}");
    CHECK_STR(annot, "\"reply_preview\":{\"seq\":3,\"sender\":2,\"body\":\"@all look\"}");
    free(data);
    free(annot);
    pl_conv cv;
    int64_t want[][2] = {{a, 1}, {b, 2}, {c, 1}};               /* a: @all; b: @bob, reply; c: @all */
    for (int i = 0; i < 3; i++) {
        CHECK_EQ(rd_conv_get(&t, g, want[i][0], &cv), PL_STORE_OK);
        CHECK_EQ(cv.unread_mentions, want[i][1]);
        CHECK_EQ(cv.notify, PL_NOTIFY_ALL);
        pl_conv_release(&cv);
    }
    CHECK_EQ(rd_conv_get(&t, g, out, &cv), PL_STORE_ENOTFOUND);
    /* the mention list of a resuming member */
    pl_job mj;
    t_init(&t, &mj, PL_READ_MENTIONS);
    mj.conv = g;
    mj.user = b;
    mj.after = 0;
    mj.limit = 50;
    CHECK_EQ(t_read(&t, &mj), PL_STORE_OK);
    int ok = mj.nevents == 2 && mj.events[0].seq == 2 && mj.events[1].seq == 4 &&
             has(mj.events[1].annot, "reply_preview");
    pl_job_release(&mj);
    CHECK(ok);
    /* muted still counts; reading moves it down; it survives a reopen */
    pl_job nj;
    t_init(&t, &nj, PL_JOB_NOTIFY_SET);
    nj.conv = g;
    nj.user = b;
    nj.level = PL_NOTIFY_NONE;
    CHECK_EQ(t_run1(&t, &nj), PL_STORE_OK);
    nj.user = out;
    CHECK_EQ(t_run1(&t, &nj), PL_STORE_ENOTFOUND);
    nj.user = b;
    nj.level = 7;
    CHECK_EQ(t_run1(&t, &nj), PL_STORE_EINVAL);
    CHECK_EQ(t_say(&t, g, a, "@bob.x again", 0, NULL, NULL), 5);
    CHECK_EQ(t_reopen(&t), PL_STORE_OK);
    CHECK_EQ(rd_conv_get(&t, g, b, &cv), PL_STORE_OK);
    ok = cv.unread_mentions == 3 && cv.notify == PL_NOTIFY_NONE;
    pl_conv_release(&cv);
    CHECK(ok);
    pl_job rj;
    CHECK_EQ(t_receipt(&t, g, b, 0, 4, &rj), PL_STORE_OK);
    CHECK_EQ(rd_conv_get(&t, g, b, &cv), PL_STORE_OK);
    CHECK_EQ(cv.unread_mentions, 1);
    pl_conv_release(&cv);
    /* a large group: @all and @here need an admin */
    CHECK_EQ(t_member_op(&t, PL_JOB_MEMBER_ADD, g, a, d, NULL), PL_STORE_OK);   /* 4 > 3 */
    const char *why = NULL;
    pl_job sj;
    t_send_init(&t, &sj, g, b, "h1", "@here now");
    CHECK_EQ(t_run(&t, &sj, 1), 0);
    CHECK_EQ(sj.result, PL_STORE_EFORBID);
    why = sj.why;
    pl_job_release(&sj);
    CHECK(why && strstr(why, "admin"));
    int64_t last = t_last_seq(&t, g, a);
    CHECK_EQ(t_say(&t, g, a, "@all from the admin", 0, NULL, NULL), last + 1);
    CHECK_EQ(rd_conv_get(&t, g, d, &cv), PL_STORE_OK);
    CHECK_EQ(cv.unread_mentions, 1);
    pl_conv_release(&cv);
    t_finish(&t);
}

TEST(store_reply_targets) {
    tstore t;
    CHECK_EQ(t_open(&t), PL_STORE_OK);
    int64_t a = t_user(&t, "ann"), b = t_user(&t, "bob"), c = t_user(&t, "cid");
    int64_t m[] = {b};
    int64_t g = t_group(&t, a, "g", m, 1);
    char longb[400];
    for (int i = 0; i < 150; i++) memcpy(longb + 2 * i, "\xC3\xA9", 2);   /* 150 x é */
    longb[300] = '\0';
    CHECK_EQ(t_say(&t, g, a, longb, 0, NULL, NULL), 2);
    char *annot = NULL;
    CHECK_EQ(t_say(&t, g, b, "short", 2, &annot, NULL), 3);
    char want[320];
    snprintf(want, sizeof want, "\"body\":\"%.*s\"}", 200, longb);       /* 100 characters */
    CHECK(has(annot, want));
    free(annot);
    pl_event e;
    CHECK_EQ(t_event_at(&t, g, a, 3, &e), 0);
    int ok = e.ref == 3 - 1 && has(e.annot, want);
    pl_event_release(&e);
    CHECK(ok);
    CHECK_EQ(t_say(&t, g, b, "to created", 1, NULL, NULL), PL_STORE_EINVAL);
    CHECK_EQ(t_say(&t, g, b, "to nothing", 99, NULL, NULL), PL_STORE_ENOTFOUND);
    CHECK_EQ(t_member_op(&t, PL_JOB_MEMBER_ADD, g, a, c, NULL), PL_STORE_OK);       /* 4 */
    CHECK_EQ(t_say(&t, g, c, "to before me", 2, NULL, NULL), PL_STORE_ENOTFOUND);
    CHECK_EQ(t_last_seq(&t, g, a), 4);
    t_finish(&t);
}

/* ---- search (store.h invariant 8) ---------------------------------------- */

/* Runs PL_READ_SEARCH; the caller releases j's outputs. */
static int t_search(tstore *t, pl_job *j, int64_t user, const char *q, int64_t conv, int64_t sender,
                    int64_t after, int64_t before, int flags, int64_t cursor, int limit) {
    t_init(t, j, PL_READ_SEARCH);
    j->user = user;
    j->query = q;
    j->conv = conv;
    j->peer = sender;
    j->after = after;
    j->before = before;
    j->flags = flags;
    j->cursor = cursor;
    j->limit = limit;
    return t_read(t, j);
}

/* The number of results of a one-page search, or a negative result. */
static int t_hits(tstore *t, int64_t user, const char *q, int64_t conv) {
    pl_job j;
    int rc = t_search(t, &j, user, q, conv, 0, 0, 0, 0, 0, PL_STORE_SEARCH_MAX);
    int n = rc ? rc : (int)j.nevents;
    pl_job_release(&j);
    return n;
}

/* Indexing is asynchronous in SQLite (store.h invariant 8): the number of
 * results once it is want, or what it is after 3 s. */
static int t_found(tstore *t, int64_t user, const char *q, int64_t conv, int want) {
    int n = 0;
    for (int i = 0; i < 300; i++) {
        n = t_hits(t, user, q, conv);
        if (n == want || n < 0) break;
        t_sleep_ms(10);
    }
    return n;
}

TEST(store_search_membership_and_visibility) {
    tstore t;
    CHECK_EQ(t_open(&t), PL_STORE_OK);
    int64_t a = t_user(&t, "ann"), b = t_user(&t, "bob"), c = t_user(&t, "cid"), d = t_user(&t, "dee");
    int64_t mb[] = {b};
    int64_t g1 = t_group(&t, a, "one", mb, 1);
    int64_t g2 = t_group(&t, c, "two", NULL, 0);
    CHECK(t_say(&t, g1, a, "Apple banana pie", 0, NULL, NULL) > 0);
    CHECK(t_say(&t, g2, c, "apple cherry tart", 0, NULL, NULL) > 0);
    CHECK_EQ(t_found(&t, a, "apple", 0, 1), 1);
    CHECK_EQ(t_found(&t, c, "apple", 0, 1), 1);
    CHECK_EQ(t_found(&t, b, "APPLE", 0, 1), 1);         /* case-insensitive */
    CHECK_EQ(t_found(&t, a, "apple", g2, 0), 0);        /* not a member: nothing, not an error */
    CHECK_EQ(t_found(&t, d, "apple", 0, 0), 0);
    CHECK_EQ(t_found(&t, a, "apple cherry", 0, 0), 0);  /* every word must match */
    CHECK_EQ(t_found(&t, c, "cherry apple", 0, 1), 1);
    pl_job j;
    CHECK_EQ(t_search(&t, &j, a, "banana", 0, 0, 0, 0, 0, 0, 10), PL_STORE_OK);
    CHECK_EQ(j.nevents, 1);
    CHECK_EQ(j.events[0].conv, g1);
    CHECK_EQ(j.events[0].kind, PL_EV_MESSAGE);
    CHECK_EQ(j.events[0].sender, a);
    CHECK_STR(j.events[0].body, "Apple banana pie");
    CHECK(has(j.snippets[0], "\x02" "banana" "\x03"));
    CHECK(!has(j.snippets[0], "\x02" "Apple"));
    CHECK(!j.more);
    pl_job_release(&j);
    /* FTS syntax in a query is just text */
    static const char *const odd[] = {"apple\"", "apple OR cherry", "NEAR(apple", "*", "(((", "apple*",
                                      "-apple", "\"\"", "apple AND", "\x02" "apple" "\x03", "^apple"};
    for (size_t i = 0; i < sizeof odd / sizeof odd[0]; i++) {
        int n = t_hits(&t, a, odd[i], 0);
        CHECK(n == 0 || n == 1);
    }
    CHECK_EQ(t_found(&t, a, "apple\"", 0, 1), 1);
    CHECK_EQ(t_found(&t, a, "(((", 0, 0), 0);
    /* joined_seq: a member added later finds only what it may see */
    CHECK(t_say(&t, g1, a, "kiwi early", 0, NULL, NULL) > 0);
    CHECK_EQ(t_member_op(&t, PL_JOB_MEMBER_ADD, g1, a, d, NULL), PL_STORE_OK);
    CHECK(t_say(&t, g1, a, "kiwi late", 0, NULL, NULL) > 0);
    CHECK_EQ(t_found(&t, d, "kiwi", 0, 1), 1);
    CHECK_EQ(t_found(&t, b, "kiwi", 0, 2), 2);
    CHECK_EQ(t_search(&t, &j, d, "kiwi", g1, 0, 0, 0, 0, 0, 10), PL_STORE_OK);
    CHECK(j.nevents == 1 && strcmp(j.events[0].body, "kiwi late") == 0);
    pl_job_release(&j);
    /* a removed member finds nothing of the conversation any more */
    CHECK_EQ(t_member_op(&t, PL_JOB_MEMBER_REMOVE, g1, a, b, NULL), PL_STORE_OK);
    CHECK_EQ(t_found(&t, b, "kiwi", 0, 0), 0);
    CHECK_EQ(t_found(&t, b, "apple", 0, 0), 0);
    /* bodies the index cannot read: with NUL (stored, not indexed); not
     * UTF-8 (PostgreSQL refuses it: its index reads bodies as text) */
    pl_job z;
    t_send_init(&t, &z, g1, a, "nul", "x");
    z.body = "nul\0kiwi";
    z.body_len = 8;
    CHECK_EQ(t_run(&t, &z, 1), 0);
    CHECK_EQ(z.result, PL_STORE_OK);
    pl_job_release(&z);
    t_send_init(&t, &z, g1, a, "bad", "not \xff utf-8 kiwi");
    CHECK_EQ(t_run(&t, &z, 1), 0);
    CHECK_EQ(z.result, t_backend() ? PL_STORE_EINVAL : PL_STORE_OK);
    pl_job_release(&z);
    CHECK_EQ(t_act(&t, PL_JOB_MESSAGE_EDIT, g1, a, 2, "edited \xfe", 0, NULL, NULL),
             t_backend() ? PL_STORE_EINVAL : PL_STORE_OK);
    /* too long a query */
    char longq[PL_STORE_QUERY_MAX + 2];
    memset(longq, 'x', sizeof longq - 1);
    longq[sizeof longq - 1] = '\0';
    CHECK_EQ(t_found(&t, a, longq, 0, PL_STORE_EINVAL), PL_STORE_EINVAL);
    t_finish(&t);
}

TEST(store_search_edit_reindexes_delete_removes) {
    tstore t;
    CHECK_EQ(t_open(&t), PL_STORE_OK);
    int64_t a = t_user(&t, "ann"), b = t_user(&t, "bob");
    int64_t mb[] = {b};
    int64_t g = t_group(&t, a, "g", mb, 1);
    int64_t s = t_say(&t, g, a, "original walrus text", 0, NULL, NULL);
    CHECK(s > 0);
    CHECK_EQ(t_found(&t, b, "walrus", 0, 1), 1);
    CHECK_EQ(t_act(&t, PL_JOB_MESSAGE_EDIT, g, a, s, "changed narwhal text", 0, NULL, NULL), PL_STORE_OK);
    CHECK_EQ(t_found(&t, b, "walrus", 0, 0), 0);
    CHECK_EQ(t_found(&t, b, "original", 0, 0), 0);
    CHECK_EQ(t_found(&t, b, "narwhal", 0, 1), 1);
    pl_job j;
    CHECK_EQ(t_search(&t, &j, b, "narwhal", 0, 0, 0, 0, 0, 0, 10), PL_STORE_OK);
    CHECK_EQ(j.nevents, 1);
    CHECK_EQ(j.events[0].seq, s);
    CHECK_STR(j.events[0].body, "changed narwhal text");
    CHECK(has(j.events[0].annot, "\"edited_ts\":"));
    pl_job_release(&j);
    /* the edit event's own text is not a second hit */
    CHECK_EQ(t_found(&t, b, "changed", 0, 1), 1);
    CHECK_EQ(t_act(&t, PL_JOB_MESSAGE_DELETE, g, a, s, NULL, 0, NULL, NULL), PL_STORE_OK);
    CHECK_EQ(t_found(&t, b, "narwhal", 0, 0), 0);
    CHECK_EQ(t_found(&t, a, "narwhal", 0, 0), 0);
    CHECK_EQ(t_found(&t, a, "text", 0, 0), 0);
    if (!t_backend()) {              /* erased from the index's bytes too (invariant 6) */
        static const char *const files[] = {"parley.db", "parley.db-wal", "search.db", "search.db-wal"};
        for (size_t i = 0; i < 4; i++) {
            char p[160];
            snprintf(p, sizeof p, "%s/%s", t.dir, files[i]);
            int k = 0;                        /* search.db: once the indexer took it out */
            while (file_has(p, "narwhal") && k++ < 300) t_sleep_ms(10);
            CHECK(!file_has(p, "narwhal"));   /* (the first text is also its client_msg_id) */
        }
    }
    /* deleted or edited before an indexing pass ran: never the old text */
    int64_t s2 = t_say(&t, g, a, "ephemeral puffin", 0, NULL, NULL);
    int64_t s3 = t_say(&t, g, a, "draft puffin", 0, NULL, NULL);
    CHECK_EQ(t_act(&t, PL_JOB_MESSAGE_DELETE, g, a, s2, NULL, 0, NULL, NULL), PL_STORE_OK);
    CHECK_EQ(t_act(&t, PL_JOB_MESSAGE_EDIT, g, a, s3, "final gannet", 0, NULL, NULL), PL_STORE_OK);
    CHECK_EQ(t_found(&t, b, "gannet", 0, 1), 1);
    t_sleep_ms(250);
    CHECK_EQ(t_hits(&t, b, "puffin", 0), 0);
    CHECK_EQ(t_hits(&t, b, "ephemeral", 0), 0);
    /* after a reopen too */
    CHECK_EQ(t_reopen(&t), PL_STORE_OK);
    CHECK_EQ(t_found(&t, a, "narwhal", 0, 0), 0);
    CHECK(t_say(&t, g, b, "fresh narwhal", 0, NULL, NULL) > 0);
    CHECK_EQ(t_found(&t, a, "narwhal", 0, 1), 1);
    t_finish(&t);
}

TEST(store_search_filters_and_paging) {
    tstore t;
    CHECK_EQ(t_open(&t), PL_STORE_OK);
    int64_t a = t_user(&t, "alice"), b = t_user(&t, "bobby");
    int64_t mb[] = {b};
    int64_t g = t_group(&t, a, "g", mb, 1);
    int64_t g2 = t_group(&t, a, "h", mb, 1);
    enum { N = 25 };
    int64_t ts[N];
    int mentions = 0, by_b = 0;
    for (int i = 0; i < N; i++) {
        char body[64];
        int ment = i % 4 == 0;
        snprintf(body, sizeof body, "%scommon word %d", ment ? "@bobby " : "", i);
        int64_t who = i % 3 == 0 ? b : a;
        int64_t conv = i % 5 == 0 ? g2 : g;
        pl_job j;
        t_send_init(&t, &j, conv, who, body, body);
        CHECK_EQ(t_run(&t, &j, 1), 0);
        CHECK_EQ(j.result, PL_STORE_OK);
        ts[i] = j.event.ts;
        pl_job_release(&j);
        mentions += ment && who == a;
        by_b += who == b;
        t_sleep_ms(2);
    }
    CHECK_EQ(t_found(&t, a, "common", 0, N), N);
    /* sender */
    pl_job j;
    CHECK_EQ(t_search(&t, &j, a, "common", 0, b, 0, 0, 0, 0, 50), PL_STORE_OK);
    CHECK_EQ(j.nevents, by_b);
    for (size_t i = 0; i < j.nevents; i++) CHECK_EQ(j.events[i].sender, b);
    pl_job_release(&j);
    /* conversation */
    CHECK_EQ(t_search(&t, &j, a, "common", g2, 0, 0, 0, 0, 0, 50), PL_STORE_OK);
    CHECK_EQ(j.nevents, 5);
    for (size_t i = 0; i < j.nevents; i++) CHECK_EQ(j.events[i].conv, g2);
    pl_job_release(&j);
    /* mentions of bobby (by alice; its own @bobby is no mention) */
    CHECK_EQ(t_search(&t, &j, b, "common", 0, 0, 0, 0, PL_READ_MENTIONS_ME, 0, 50), PL_STORE_OK);
    CHECK_EQ(j.nevents, mentions);
    for (size_t i = 0; i < j.nevents; i++) CHECK(has(j.events[i].body, "@bobby"));
    pl_job_release(&j);
    CHECK_EQ(t_search(&t, &j, a, "common", 0, 0, 0, 0, PL_READ_MENTIONS_ME, 0, 50), PL_STORE_OK);
    CHECK_EQ(j.nevents, 0);
    pl_job_release(&j);
    /* time range: after <= ts < before */
    int want = 0;
    for (int i = 0; i < N; i++) want += ts[i] >= ts[8] && ts[i] < ts[19];
    CHECK_EQ(t_search(&t, &j, a, "common", 0, 0, ts[8], ts[19], 0, 0, 50), PL_STORE_OK);
    CHECK_EQ(j.nevents, want);
    for (size_t i = 0; i < j.nevents; i++) CHECK(j.events[i].ts >= ts[8] && j.events[i].ts < ts[19]);
    pl_job_release(&j);
    /* pages of 7, newest first: no duplicates, no gaps, even with sends in between */
    uint64_t seen[N];
    size_t nseen = 0;
    int64_t cursor = 0;
    int pages = 0;
    for (;;) {
        CHECK_EQ(t_search(&t, &j, a, "common", 0, 0, 0, 0, 0, cursor, 7), PL_STORE_OK);
        pages++;
        for (size_t i = 0; i < j.nevents; i++) {
            CHECK(nseen < N);
            if (nseen) CHECK(j.events[i].id < seen[nseen - 1]);
            seen[nseen++] = j.events[i].id;
        }
        int more = j.more;
        if (more) CHECK_EQ(j.out_id, (int64_t)j.events[j.nevents - 1].id);
        cursor = j.out_id;
        pl_job_release(&j);
        if (pages == 1) CHECK(t_say(&t, g, a, "common newcomer", 0, NULL, NULL) > 0);
        if (!more) break;
        CHECK(pages < 10);
    }
    CHECK_EQ(nseen, N);
    CHECK_EQ(pages, 4);
    CHECK_EQ(t_found(&t, a, "common", 0, N + 1), N + 1);
    t_finish(&t);
}

/* More conversations than a search names in its MATCH (SQ_SEARCH_CONVS):
 * membership is the join's alone then. */
TEST(store_search_many_conversations) {
    tstore t;
    CHECK_EQ(t_open(&t), PL_STORE_OK);
    int64_t a = t_user(&t, "ann"), b = t_user(&t, "bob");
    enum { N = 70 };
    int64_t g[N];
    for (int i = 0; i < N; i++) CHECK((g[i] = t_group(&t, a, "g", i % 10 ? NULL : &b, i % 10 ? 0 : 1)) > 0);
    for (int i = 0; i < N; i++) {
        char body[32];
        snprintf(body, sizeof body, "osprey %d", i);
        CHECK(t_say(&t, g[i], a, body, 0, NULL, NULL) > 0);
    }
    CHECK_EQ(t_found(&t, a, "osprey", 0, PL_STORE_SEARCH_MAX), PL_STORE_SEARCH_MAX);
    CHECK_EQ(t_found(&t, b, "osprey", 0, N / 10), N / 10);    /* seven conversations */
    CHECK_EQ(t_found(&t, a, "osprey 69", 0, 1), 1);
    CHECK_EQ(t_found(&t, a, "osprey", g[69], 1), 1);
    CHECK_EQ(t_found(&t, b, "osprey", g[69], 0), 0);
    pl_job j;
    int64_t cursor = 0;
    int total = 0;
    for (int pages = 0; pages < 10; pages++) {
        CHECK_EQ(t_search(&t, &j, a, "osprey", 0, 0, 0, 0, 0, cursor, 30), PL_STORE_OK);
        total += (int)j.nevents;
        cursor = j.more ? j.out_id : 0;
        pl_job_release(&j);
        if (!cursor) break;
    }
    CHECK_EQ(total, N);
    t_finish(&t);
}

TEST(store_user_search) {
    tstore t;
    CHECK_EQ(t_open(&t), PL_STORE_OK);
    int64_t alice = t_user(&t, "alice"), alfred = t_user(&t, "alfred"), bob = t_user(&t, "bob");
    int64_t val = t_user(&t, "val"), zed = t_user(&t, "zed");
    int64_t m[] = {alfred, bob, val};
    CHECK(t_group(&t, alice, "g", m, 3) > 0);
    (void)zed;
    pl_job j;
    t_init(&t, &j, PL_READ_USER_SEARCH);
    j.user = alice;
    j.query = "AL";
    j.limit = 10;
    CHECK_EQ(t_read(&t, &j), PL_STORE_OK);
    CHECK_EQ(j.nusers, 3);                            /* prefix first, then by name */
    CHECK_STR(j.users[0].username, "alfred");
    CHECK_STR(j.users[1].username, "alice");
    CHECK_STR(j.users[2].username, "val");
    CHECK_EQ(j.users[1].id, alice);
    pl_job_release(&j);
    t_init(&t, &j, PL_READ_USER_SEARCH);
    j.user = alice;
    j.query = "zed";
    j.limit = 10;
    CHECK_EQ(t_read(&t, &j), PL_STORE_OK);
    CHECK_EQ(j.nusers, 0);                            /* shares nothing with alice */
    pl_job_release(&j);
    t_init(&t, &j, PL_READ_USER_SEARCH);
    j.user = zed;
    j.query = "e";
    j.limit = 10;
    CHECK_EQ(t_read(&t, &j), PL_STORE_OK);
    CHECK_EQ(j.nusers, 1);                            /* itself only */
    CHECK_EQ(j.users[0].id, zed);
    pl_job_release(&j);
    t_init(&t, &j, PL_READ_USER_SEARCH);
    j.user = alice;
    j.query = "%";
    j.limit = 2;
    CHECK_EQ(t_read(&t, &j), PL_STORE_OK);
    CHECK_EQ(j.nusers, 0);                            /* no pattern syntax */
    pl_job_release(&j);
    t_init(&t, &j, PL_READ_USER_SEARCH);
    j.user = alice;
    j.query = "";
    j.limit = 2;
    CHECK_EQ(t_read(&t, &j), PL_STORE_OK);
    CHECK_EQ(j.nusers, 2);                            /* limit */
    pl_job_release(&j);
    t_finish(&t);
}

/* Closes the store and opens <dir>/file; the SQLite result (*db is set
 * either way, for sqlite3_close). */
static int t_closed_open(tstore *t, const char *file, sqlite3 **db) {
    pl_store_close(&t->s);
    char p[200];
    snprintf(p, sizeof p, "%s/%s", t->dir, file);
    return sqlite3_open(p, db);
}

/* Closes the store and runs sql on <dir>/file; the SQLite result. */
static int t_closed_sql(tstore *t, const char *file, const char *sql) {
    sqlite3 *db;
    int rc = t_closed_open(t, file, &db);
    if (rc == SQLITE_OK) rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
    sqlite3_close(db);
    return rc;
}

/* Column 0 of sql's first row on db (opened with rc), -1 on an error;
 * closes db. */
static int64_t t_db_int(int rc, sqlite3 *db, const char *sql) {
    sqlite3_stmt *q = NULL;
    int64_t v = -1;
    if (rc == SQLITE_OK && sqlite3_prepare_v2(db, sql, -1, &q, NULL) == SQLITE_OK &&
        sqlite3_step(q) == SQLITE_ROW)
        v = sqlite3_column_int64(q, 0);
    sqlite3_finalize(q);
    sqlite3_close(db);
    return v;
}

/* Closes the store and returns column 0 of sql's first row on
 * <dir>/parley.db, -1 on an error. */
static int64_t t_closed_int(tstore *t, const char *sql) {
    sqlite3 *db = NULL;
    int rc = t_closed_open(t, "parley.db", &db);
    return t_db_int(rc, db, sql);
}

/* A database from before search (schema 5) gets its messages indexed. */
TEST(store_search_migration_backfills) {
    SQLITE_ONLY();
    tstore t;
    CHECK_EQ(t_open(&t), PL_STORE_OK);
    int64_t a = t_user(&t, "ann");
    int64_t g = t_group(&t, a, "g", NULL, 0);
    CHECK(t_say(&t, g, a, "old heron", 0, NULL, NULL) > 0);
    int64_t gone = t_say(&t, g, a, "old heron deleted", 0, NULL, NULL);
    CHECK_EQ(t_act(&t, PL_JOB_MESSAGE_DELETE, g, a, gone, NULL, 0, NULL, NULL), PL_STORE_OK);
    CHECK_EQ(t_closed_sql(&t, "parley.db",
                          "DROP INDEX conversations_channel_key;"                                 /* 20 -> 21 */
                              " ALTER TABLE conversations DROP COLUMN name_key;"
                              " DROP TRIGGER events_fts_au;"  /* 9 -> 10, 5 -> 6 (10 -> 11 dropped events_fts_ai) */
                              " DROP TRIGGER events_fts_ad; DROP TABLE fts_queue; DROP TABLE search_pair;"
                              " ALTER TABLE reactions RENAME COLUMN first_seq TO first_ts;"
                              " DROP TABLE e2ee_devices; DROP TABLE e2ee_otks;"     /* 7 -> 8 */
                              " ALTER TABLE conversations DROP COLUMN e2ee;"
                              " DROP TRIGGER events_media_keep;"   /* media (10 -> 11 dropped events_media_ai) */
                              " DROP TRIGGER events_media_del; DROP TRIGGER events_media_ad;"
                              " DROP TABLE media; DROP TABLE media_refs;"
                              " DROP INDEX events_no_cmid;"                                           /* 17 -> 18 */
                              " DROP TABLE erasure_held;"                                             /* 16 -> 17 */
                              " DROP TABLE blocks; ALTER TABLE conversations DROP COLUMN blocked;"   /* 15 -> 16 */
                              " DROP INDEX conversations_retention; DROP TABLE erasures;"         /* 14 -> 15 */
                              " ALTER TABLE conversations DROP COLUMN retention;"
                              " ALTER TABLE conversations DROP COLUMN hold;"
                              " ALTER TABLE conversations DROP COLUMN purged_seq;"
                              " ALTER TABLE conversations DROP COLUMN purge_next;"
                              " ALTER TABLE users DROP COLUMN deleted;"
                              " DROP TABLE push_devices; DROP TABLE push_outbox;"   /* 11 -> 12 */
                              " DROP TABLE workspaces; DROP TABLE workspace_members;"   /* 12 -> 13 */
                              " DROP INDEX conversations_channel;"
                              " ALTER TABLE conversations DROP COLUMN workspace;"
                              " ALTER TABLE conversations DROP COLUMN private;"
                              " DROP TABLE reports;"                                 /* 13 -> 14 */
                              " PRAGMA user_version = 5;"), SQLITE_OK);
    CHECK_EQ(t_open_store(&t), PL_STORE_OK);
    CHECK_EQ(t_found(&t, a, "heron", 0, 1), 1);
    t_finish(&t);
}

/* The index lives in search.db (store_sqlite_index.c): one deleted, or
 * taken from another data directory, is rebuilt from parley.db, and what
 * it held for the other database is gone. */
TEST(store_search_index_file_rebuilds) {
    SQLITE_ONLY();
    tstore t, o;
    CHECK_EQ(t_open(&t), PL_STORE_OK);
    CHECK_EQ(t_open(&o), PL_STORE_OK);
    int64_t a = t_user(&t, "ann");
    int64_t g = t_group(&t, a, "g", NULL, 0);
    CHECK(t_say(&t, g, a, "lonely kestrel", 0, NULL, NULL) > 0);
    CHECK_EQ(t_found(&t, a, "kestrel", 0, 1), 1);
    int64_t oa = t_user(&o, "otto");
    int64_t og = t_group(&o, oa, "og", NULL, 0);
    CHECK(t_say(&o, og, oa, "foreign kestrel", 0, NULL, NULL) > 0);
    CHECK_EQ(t_found(&o, oa, "kestrel", 0, 1), 1);
    pl_store_close(&t.s);
    pl_store_close(&o.s);
    char p[200], q[200];
    static const char *const sfx[] = {"", "-wal", "-shm"};
    for (size_t i = 0; i < 3; i++) {          /* deleted */
        snprintf(p, sizeof p, "%s/search.db%s", t.dir, sfx[i]);
        unlink(p);
    }
    CHECK_EQ(t_open_store(&t), PL_STORE_OK);
    CHECK_EQ(t_found(&t, a, "kestrel", 0, 1), 1);
    pl_store_close(&t.s);
    for (size_t i = 0; i < 3; i++) {          /* another directory's */
        snprintf(p, sizeof p, "%s/search.db%s", o.dir, sfx[i]);
        snprintf(q, sizeof q, "%s/search.db%s", t.dir, sfx[i]);
        unlink(q);
        if (access(p, F_OK) == 0) CHECK(link(p, q) == 0);
    }
    CHECK_EQ(t_open_store(&t), PL_STORE_OK);
    CHECK_EQ(t_found(&t, a, "kestrel", 0, 1), 1);
    CHECK_EQ(t_found(&t, a, "foreign", 0, 0), 0);
    CHECK(t_say(&t, g, a, "second kestrel", 0, NULL, NULL) > 0);
    CHECK_EQ(t_found(&t, a, "kestrel", 0, 2), 2);
    t_finish(&t);
    CHECK_EQ(t_open_store(&o), PL_STORE_OK);
    t_finish(&o);
}

/* A search.db whose watermark went back (restored from a backup) meets
 * messages it already holds: the indexer indexes them again, once each,
 * and goes on with new ones. */
TEST(store_search_index_watermark_back) {
    SQLITE_ONLY();
    tstore t;
    CHECK_EQ(t_open(&t), PL_STORE_OK);
    int64_t a = t_user(&t, "ann");
    int64_t g = t_group(&t, a, "g", NULL, 0);
    CHECK(t_say(&t, g, a, "heron one", 0, NULL, NULL) > 0);
    CHECK(t_say(&t, g, a, "heron two", 0, NULL, NULL) > 0);
    CHECK_EQ(t_found(&t, a, "heron", 0, 2), 2);
    CHECK_EQ(t_closed_sql(&t, "search.db", "UPDATE meta SET v = 0 WHERE k = 'done'"), SQLITE_OK);
    CHECK_EQ(t_open_store(&t), PL_STORE_OK);
    CHECK(t_say(&t, g, a, "heron three", 0, NULL, NULL) > 0);
    CHECK_EQ(t_found(&t, a, "heron", 0, 3), 3);
    t_sleep_ms(150);
    CHECK_EQ(t_hits(&t, a, "heron", 0), 3);
    t_finish(&t);
}

/* Column 0 of sql's first row on <dir>/parley.db, read beside the open
 * store; -1 on an error. */
static int64_t t_live_int(tstore *t, const char *sql) {
    char p[200];
    snprintf(p, sizeof p, "%s/parley.db", t->dir);
    sqlite3 *db = NULL;
    int rc = sqlite3_open_v2(p, &db, SQLITE_OPEN_READONLY, NULL);
    return t_db_int(rc, db, sql);
}

/* The indexer's commits do not fsync (store_sqlite_index.c "Durability"),
 * so the writer deletes search queue rows only up to what search.db has on
 * disk: what a checkpoint that copied the whole of its WAL covers. A reader
 * of an older index holds the checkpoint back, and the rows stay queued
 * until it is gone. */
TEST(store_search_queue_pruned_only_once_durable) {
    SQLITE_ONLY();
    tstore t;
    CHECK_EQ(t_open(&t), PL_STORE_OK);
    int64_t a = t_user(&t, "ann");
    int64_t g = t_group(&t, a, "g", NULL, 0);
    CHECK(t_say(&t, g, a, "heron first", 0, NULL, NULL) > 0);
    CHECK_EQ(t_found(&t, a, "heron", 0, 1), 1);
    char p[200];
    snprintf(p, sizeof p, "%s/search.db", t.dir);
    sqlite3 *r;
    sqlite3_stmt *q;
    CHECK_EQ(sqlite3_open_v2(p, &r, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    CHECK_EQ(sqlite3_exec(r, "BEGIN", NULL, NULL, NULL), SQLITE_OK);
    CHECK_EQ(sqlite3_prepare_v2(r, "SELECT count(*) FROM events_fts", -1, &q, NULL), SQLITE_OK);
    CHECK_EQ(sqlite3_step(q), SQLITE_ROW);              /* its snapshot: one message */
    enum { BATCH = 100, ROUNDS = 21 };                  /* past SQ_PRUNE_ROWS (2,000) */
    pl_job j[BATCH];
    char cm[BATCH][16], body[BATCH][32];
    for (int r2 = 0; r2 < ROUNDS; r2++) {
        for (int i = 0; i < BATCH; i++) {
            snprintf(cm[i], sizeof cm[i], "p%d", r2 * BATCH + i);
            snprintf(body[i], sizeof body[i], "egret %s", r2 == ROUNDS - 1 && i == BATCH - 1 ? "last" : "x");
            t_send_init(&t, &j[i], g, a, cm[i], body[i]);
        }
        CHECK_EQ(t_run(&t, j, BATCH), 0);
        for (int i = 0; i < BATCH; i++) pl_job_release(&j[i]);
    }
    CHECK_EQ(t_found(&t, a, "last", 0, 1), 1);          /* all indexed (in queue order) */
    t_sleep_ms(300);                                    /* its caught-up checkpoints */
    CHECK(t_say(&t, g, a, "kite", 0, NULL, NULL) > 0);  /* a batch: the writer's prune */
    CHECK_EQ(t_found(&t, a, "kite", 0, 1), 1);
    CHECK(t_live_int(&t, "SELECT count(*) FROM fts_queue") >= BATCH * ROUNDS);
    sqlite3_finalize(q);
    CHECK_EQ(sqlite3_exec(r, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(r);
    /* Pruned once durable, and in steps: a batch of one send deletes at
     * most SQ_PRUNE_STEP (512) rows, so 2,100 take several batches. */
    int64_t left = t_live_int(&t, "SELECT count(*) FROM fts_queue"), most = 0;
    int steps = 0;
    for (int i = 0; i < 100 && left >= BATCH; i++) {
        t_sleep_ms(50);
        char k[16];
        snprintf(k, sizeof k, "k%d", i);
        CHECK(t_say(&t, g, a, k, 0, NULL, NULL) > 0);
        int64_t now = t_live_int(&t, "SELECT count(*) FROM fts_queue");
        if (left + 1 - now > most) most = left + 1 - now;
        steps += now < left + 1;
        left = now;
    }
    CHECK(left >= 0 && left < BATCH);
    CHECK(most > 0 && most <= 512);
    CHECK(steps >= 4);
    t_finish(&t);
}

/* The indexer reads parley.db before its search.db transaction, not in
 * it (store_sqlite_index.c ix_pass_as): while its pass waits on
 * search.db's write lock (held here from outside), it holds no parley.db
 * snapshot, so a checkpoint of parley.db copies every frame, also those
 * written after the pass began. */
TEST(store_indexer_holds_no_snapshot_of_the_log) {
    SQLITE_ONLY();
    tstore t;
    CHECK_EQ(t_open(&t), PL_STORE_OK);
    int64_t a = t_user(&t, "ann");
    int64_t g = t_group(&t, a, "g", NULL, 0);
    CHECK(t_say(&t, g, a, "plover first", 0, NULL, NULL) > 0);
    CHECK_EQ(t_found(&t, a, "plover", 0, 1), 1);
    char p[200];
    snprintf(p, sizeof p, "%s/search.db", t.dir);
    sqlite3 *lock, *main_db;
    CHECK_EQ(sqlite3_open(p, &lock), SQLITE_OK);
    CHECK_EQ(sqlite3_exec(lock, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
    CHECK(t_say(&t, g, a, "avocet", 0, NULL, NULL) > 0);    /* the pass starts, then waits */
    t_sleep_ms(300);
    CHECK(t_say(&t, g, a, "curlew", 0, NULL, NULL) > 0);    /* frames past its start */
    snprintf(p, sizeof p, "%s/parley.db", t.dir);
    CHECK_EQ(sqlite3_open(p, &main_db), SQLITE_OK);
    CHECK_EQ(sqlite3_exec(main_db, "SELECT count(*) FROM sqlite_master", NULL, NULL, NULL), SQLITE_OK);
    int nlog = -1, nckpt = -1;
    int rc = sqlite3_wal_checkpoint_v2(main_db, "main", SQLITE_CHECKPOINT_PASSIVE, &nlog, &nckpt);
    sqlite3_close(main_db);
    CHECK_EQ(sqlite3_exec(lock, "ROLLBACK", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(lock);
    CHECK_EQ(rc, SQLITE_OK);
    CHECK(nlog > 0);
    CHECK_EQ(nckpt, nlog);
    CHECK_EQ(t_found(&t, a, "avocet", 0, 1), 1);            /* the pass went on */
    CHECK_EQ(t_found(&t, a, "curlew", 0, 1), 1);
    t_finish(&t);
}

/* ---- the cost of indexing (PARLEY_SEARCH_BENCH=1) ---------------------------- */

static double t_now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static int cmp_dbl(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Sends in batches of `size` over convs (bodies of 8 words of a 500-word
 * vocabulary); returns sends per second. */
static double t_bench_sends(tstore *t, int64_t u, const int64_t *convs, int nconv, int size, int rounds,
                            int *key) {
    pl_job *j = calloc((size_t)size, sizeof *j);
    char (*cm)[24] = calloc((size_t)size, sizeof *cm);
    char (*body)[128] = calloc((size_t)size, sizeof *body);
    double total = 0;
    for (int r = 0; r < rounds; r++) {
        for (int i = 0; i < size; i++) {
            int k = (*key)++;
            snprintf(cm[i], sizeof cm[i], "b%d", k);
            int o = 0;
            for (int w = 0; w < 8; w++)
                o += snprintf(body[i] + o, sizeof body[i] - (size_t)o, "%sw%03d", w ? " " : "",
                              (int)((unsigned)(k * 7919 + w * 104729) % 500));
            t_send_init(t, &j[i], convs[k % nconv], u, cm[i], body[i]);
        }
        double t0 = t_now_us();
        if (t_run(t, j, (size_t)size) != 0) break;
        total += t_now_us() - t0;
        for (int i = 0; i < size; i++) pl_job_release(&j[i]);
    }
    free(j);
    free(cm);
    free(body);
    return (double)size * rounds / (total / 1e6);
}

/* Drops PostgreSQL's search index (to measure without it). SQLite's index
 * is filled by a thread of its own (store_sqlite_index.c), beside the
 * writer, so there is nothing to compare there. */
static int t_drop_index(tstore *t) {
    PGconn *c = PQconnectdb(t->url);
    PGresult *r = PQexec(c, "DROP INDEX events_fts");
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    PQclear(r);
    PQfinish(c);
    return ok ? 0 : -1;
}

TEST(store_search_bench) {
    if (!getenv("PARLEY_SEARCH_BENCH")) return;
    tstore t;
    CHECK_EQ(t_open(&t), PL_STORE_OK);
    int64_t u = t_user(&t, "bench");
    enum { CONVS = 100 };
    int64_t convs[CONVS];
    int64_t few = t_user(&t, "few");              /* a member of one conversation of the 100 */
    for (int i = 0; i < CONVS; i++) CHECK((convs[i] = t_group(&t, u, "b", i ? NULL : &few, i ? 0 : 1)) > 0);
    int key = 0;
    int n_fill = atoi(getenv("PARLEY_SEARCH_BENCH")) > 1 ? atoi(getenv("PARLEY_SEARCH_BENCH")) : 50000;
    double fill = t_bench_sends(&t, u, convs, CONVS, 1000, n_fill / 1000, &key);
    CHECK(t_say(&t, convs[0], u, "zzsentinel zero", 0, NULL, NULL) > 0);
    CHECK_EQ(t_found(&t, u, "zero", 0, 1), 1);              /* the fill is indexed */
    double s0 = t_now_us();
    double b1000 = t_bench_sends(&t, u, convs, CONVS, 1000, 10, &key);
    CHECK(t_say(&t, convs[0], u, "zzsentinel one", 0, NULL, NULL) > 0);
    CHECK_EQ(t_found(&t, u, "one", 0, 1), 1);               /* everything before it is indexed */
    double sustained = 10001 / ((t_now_us() - s0) / 1e6);
    double b1 = t_bench_sends(&t, u, convs, CONVS, 1, 300, &key);
    /* from the acknowledgement to searchable, one message at a time */
    double vis[20];
    for (int i = 0; i < 20; i++) {
        char body[48];
        snprintf(body, sizeof body, "zzfresh%d now", i);
        CHECK(t_say(&t, convs[i], u, body, 0, NULL, NULL) > 0);
        double t0 = t_now_us();
        char q[24];
        snprintf(q, sizeof q, "zzfresh%d", i);
        while (t_hits(&t, u, q, 0) != 1) {
            CHECK(t_now_us() - t0 < 5e6);
            t_sleep_ms(1);
        }
        vis[i] = t_now_us() - t0;
        t_sleep_ms(i * 7 % 150);
    }
    qsort(vis, 20, sizeof vis[0], cmp_dbl);
    fprintf(stderr, "  acknowledged -> searchable: median %.1f ms, max %.1f ms\n", vis[10] / 1e3, vis[19] / 1e3);
    /* search latency over what is there */
    enum { Q = 300 };
    double lat[Q];
    for (int i = 0; i < Q; i++) {
        char q[32];
        if (i % 2) snprintf(q, sizeof q, "w%03d", (i * 37) % 500);
        else snprintf(q, sizeof q, "w%03d w%03d", (i * 37) % 500, (i * 91) % 500);
        pl_job j;
        double t0 = t_now_us();
        CHECK_EQ(t_search(&t, &j, u, q, 0, 0, 0, 0, 0, 0, 20), PL_STORE_OK);
        lat[i] = t_now_us() - t0;
        pl_job_release(&j);
    }
    qsort(lat, Q, sizeof lat[0], cmp_dbl);
    double lat2[Q];                               /* 99 % of the matches are not for it */
    for (int i = 0; i < Q; i++) {
        char q[32];
        snprintf(q, sizeof q, "w%03d", (i * 37) % 500);
        pl_job j;
        double t0 = t_now_us();
        CHECK_EQ(t_search(&t, &j, few, q, 0, 0, 0, 0, 0, 0, 20), PL_STORE_OK);
        lat2[i] = t_now_us() - t0;
        pl_job_release(&j);
    }
    qsort(lat2, Q, sizeof lat2[0], cmp_dbl);
    fprintf(stderr, "  search by a member of 1 of the 100 conversations: p50 %.2f ms, p95 %.2f ms, max %.2f ms\n",
            lat2[Q / 2] / 1e3, lat2[Q * 95 / 100] / 1e3, lat2[Q - 1] / 1e3);
    fprintf(stderr, "  %s, %d messages: indexed: %.0f sends/s in batches of 1000 (%.0f/s until all are"
            " searchable), %.0f sends/s one at a time; search (20 results) p50 %.2f ms, p95 %.2f ms\n",
            t.url[0] ? "postgresql" : "sqlite", key, b1000, sustained, b1, lat[Q / 2] / 1e3,
            lat[Q * 95 / 100] / 1e3);
    (void)fill;
    if (t.url[0]) {
        CHECK_EQ(t_drop_index(&t), 0);
        double n1000 = t_bench_sends(&t, u, convs, CONVS, 1000, 10, &key);
        double n1 = t_bench_sends(&t, u, convs, CONVS, 1, 300, &key);
        fprintf(stderr, "  without the index: %.0f sends/s in batches of 1000 (with it: %.1f us/send more to"
                " acknowledge, %.1f us/send more until searchable), %.0f sends/s one at a time (%.1f us/send"
                " more with it)\n", n1000, 1e6 / b1000 - 1e6 / n1000, 1e6 / sustained - 1e6 / n1000, n1,
                1e6 / b1 - 1e6 / n1);
    }
    t_finish(&t);
}

/* Reactions list in order of first use even when they were added in one
 * batch (one timestamp): the later emoji sorts first by its bytes, so an
 * order by time then bytes would put it first (failed intermittently). */
TEST(store_reactions_order_of_first_use_in_one_batch) {
    tstore t;
    CHECK_EQ(t_open(&t), PL_STORE_OK);
    int64_t a = t_user(&t, "ann"), b = t_user(&t, "bob");
    int64_t m[] = {b};
    int64_t g = t_group(&t, a, "g", m, 1);
    CHECK_EQ(t_say(&t, g, a, "react", 0, NULL, NULL), 2);
    pl_job j[2];
    const char *emo[2] = {"\xF0\x9F\x91\x8D", "\xE2\x9D\xA4"};   /* the second is byte-smaller */
    for (int i = 0; i < 2; i++) {
        t_init(&t, &j[i], PL_JOB_REACTION);
        j[i].conv = g;
        j[i].user = b;
        j[i].seq = 2;
        j[i].emoji = emo[i];
    }
    CHECK_EQ(t_run(&t, j, 2), 0);
    CHECK_EQ(j[0].result, PL_STORE_OK);
    CHECK_EQ(j[1].result, PL_STORE_OK);
    pl_job_release(&j[0]);
    pl_job_release(&j[1]);
    pl_event e;
    CHECK_EQ(t_event_at(&t, g, a, 2, &e), 0);
    int ok = has(e.annot, "\"reactions\":[{\"emoji\":\"\xF0\x9F\x91\x8D\"");
    pl_event_release(&e);
    CHECK(ok);
    t_finish(&t);
}

/* 1 if the page of g (after, before, limit, top) as viewer (0: none) is
 * exactly the seqs first..last, more as said, and each message at seq s in
 * it has the reactions rx[s] ("[...]"; NULL: no annot at all). */
static int t_page_is(tstore *t, int64_t g, int64_t viewer, int64_t after, int64_t before, int limit,
                     int top, int64_t first, int64_t last, int more, const char *const *rx) {
    pl_event *ev;
    size_t n;
    int m = -1;
    if (rd_events(t, g, viewer, after, before, limit, top, &ev, &n, &m) != PL_STORE_OK) return 0;
    int ok = (int64_t)n == last - first + 1 && m == more;
    for (size_t i = 0; i < n && ok; i++) {
        char want[256] = "";
        const char *r = rx[ev[i].seq];
        if (r) snprintf(want, sizeof want, "\"reactions\":%s", r);
        ok = ev[i].seq == first + (int64_t)i && (r ? ev[i].annot && !strcmp(ev[i].annot, want) : !ev[i].annot);
        if (!ok)
            fprintf(stderr, "  seq %lld (viewer %lld): annot %s, wanted %s\n", (long long)ev[i].seq,
                    (long long)viewer, ev[i].annot ? ev[i].annot : "-", r ? want : "-");
    }
    pl_event_list_free(ev, n);
    return ok;
}

/* A page carries its messages' reactions whichever way it is read: from
 * either end, as a member (me: that member's), as a member who joined
 * later (from its joined_seq on), without a viewer (me: false), cut short
 * by the limit (the reactions of the row read to tell "more" are not
 * anyone's). The PostgreSQL backend reads a page and its reactions in one
 * statement, the rows of the page then those of its reactions. */
TEST(store_page_reactions_every_direction) {
    tstore t;
    CHECK_EQ(t_open(&t), PL_STORE_OK);
    int64_t a = t_user(&t, "ann"), b = t_user(&t, "bob"), c = t_user(&t, "cat"), d = t_user(&t, "dan");
    int64_t m[] = {b};
    int64_t g = t_group(&t, a, "g", m, 1);                              /* 1 */
    CHECK_EQ(t_say(&t, g, a, "two", 0, NULL, NULL), 2);
    CHECK_EQ(t_say(&t, g, b, "three", 0, NULL, NULL), 3);
    CHECK_EQ(t_member_op(&t, PL_JOB_MEMBER_ADD, g, a, c, NULL), PL_STORE_OK);   /* 4: c joins */
    CHECK_EQ(t_say(&t, g, a, "five", 0, NULL, NULL), 5);
    CHECK_EQ(t_say(&t, g, b, "six", 0, NULL, NULL), 6);
    const char *up = "\xF0\x9F\x91\x8D", *heart = "\xE2\x9D\xA4";      /* heart: byte-smaller */
    CHECK_EQ(t_act(&t, PL_JOB_REACTION, g, b, 2, up, 0, NULL, NULL), PL_STORE_OK);      /* 7 */
    CHECK_EQ(t_act(&t, PL_JOB_REACTION, g, a, 2, up, 0, NULL, NULL), PL_STORE_OK);      /* 8 */
    CHECK_EQ(t_act(&t, PL_JOB_REACTION, g, c, 5, heart, 0, NULL, NULL), PL_STORE_OK);   /* 9 */
    CHECK_EQ(t_act(&t, PL_JOB_REACTION, g, b, 6, up, 0, NULL, NULL), PL_STORE_OK);      /* 10 */
    CHECK_EQ(t_act(&t, PL_JOB_REACTION, g, a, 6, heart, 0, NULL, NULL), PL_STORE_OK);   /* 11 */
    CHECK_EQ(t_last_seq(&t, g, a), 11);
#define UP(n, me) "{\"emoji\":\"\xF0\x9F\x91\x8D\",\"count\":" #n ",\"me\":" #me "}"
#define HEART(n, me) "{\"emoji\":\"\xE2\x9D\xA4\",\"count\":" #n ",\"me\":" #me "}"
    const char *as_a[12] = {[2] = "[" UP(2, true) "]", [5] = "[" HEART(1, false) "]",
                            [6] = "[" UP(1, false) "," HEART(1, true) "]"};
    const char *as_c[12] = {[2] = "[" UP(2, false) "]", [5] = "[" HEART(1, true) "]",
                            [6] = "[" UP(1, false) "," HEART(1, false) "]"};
    const char *none[12] = {[2] = "[" UP(2, false) "]", [5] = "[" HEART(1, false) "]",
                            [6] = "[" UP(1, false) "," HEART(1, false) "]"};
#undef UP
#undef HEART
    CHECK(t_page_is(&t, g, a, 0, 0, 4, 0, 1, 4, 1, as_a));           /* from the start, cut short */
    CHECK(t_page_is(&t, g, a, 4, 0, 50, 0, 5, 11, 0, as_a));         /* the rest */
    CHECK(t_page_is(&t, g, a, 0, 7, 3, 1, 4, 6, 1, as_a));           /* from the end, cut short */
    CHECK(t_page_is(&t, g, a, 1, 3, 50, 1, 2, 2, 0, as_a));          /* one message, from the end */
    CHECK(t_page_is(&t, g, c, 0, 0, 50, 1, 4, 11, 0, as_c));         /* from c's joining on */
    CHECK(t_page_is(&t, g, c, 0, 0, 50, 0, 4, 11, 0, as_c));
    CHECK(t_page_is(&t, g, c, 0, 6, 1, 1, 5, 5, 1, as_c));
    CHECK(t_page_is(&t, g, 0, 0, 0, 50, 0, 1, 11, 0, none));         /* no viewer */
    CHECK(t_page_is(&t, g, 0, 0, 7, 5, 1, 2, 6, 1, none));
    CHECK(t_page_is(&t, g, a, 11, 0, 50, 0, 1, 0, 0, as_a));         /* a member, nothing after */
    CHECK(t_page_is(&t, g, a, 0, 2, 50, 1, 1, 1, 0, as_a));
    pl_event *ev;
    size_t n;
    CHECK_EQ(rd_events(&t, g, d, 0, 0, 50, 0, &ev, &n, NULL), PL_STORE_ENOTFOUND);   /* not a member */
    CHECK_EQ(rd_events(&t, g, d, 0, 0, 50, 1, &ev, &n, NULL), PL_STORE_ENOTFOUND);
    t_finish(&t);
}

/* ---- end-to-end encryption (store.h invariant 9) -------------------------- */

static int64_t t_login(tstore *t, int64_t user) {
    pl_job j;
    t_init(t, &j, PL_JOB_LOGIN_CREATE);
    j.user = user;
    memset(j.hash, 7, sizeof j.hash);
    j.expires = (int64_t)time(NULL) * 1000 + 3600 * 1000;
    int rc = t_run1(t, &j);
    return rc == PL_STORE_OK ? j.out_id : rc;
}

/* Uploads keys for device (identity NULL: only prekeys ids first..first+n-1);
 * returns the result, *held = prekeys held, *created. */
static int t_upload(tstore *t, int64_t user, int64_t device, const char *identity, int64_t first, size_t n,
                    int replace, int64_t *held, int *created) {
    static char keys[PL_KEYS_OTK_HELD + 50][16];
    pl_prekey otks[PL_KEYS_OTK_HELD + 50];
    for (size_t i = 0; i < n; i++) {
        snprintf(keys[i], sizeof keys[i], "otk%lld", (long long)(first + (int64_t)i));
        otks[i].id = first + (int64_t)i;
        otks[i].key = keys[i];
    }
    pl_keys_in k = {.identity = identity, .spk_id = 1, .spk = identity ? "spk" : NULL,
                    .spk_sig = identity ? "sig" : NULL, .otks = otks, .notks = n, .replace_otks = replace};
    pl_job j;
    t_init(t, &j, PL_JOB_KEYS_UPLOAD);
    j.user = user;
    j.id = device;
    j.keys = &k;
    int rc = t_run1(t, &j);
    if (held) *held = j.out_id;
    if (created) *created = j.created;
    return rc;
}

/* A claim (take 1) or a listing of peer's devices as asker; the caller
 * releases j. */
static int t_devices(tstore *t, pl_job *j, int64_t asker, int64_t peer, int take) {
    t_init(t, j, take ? PL_JOB_KEYS_CLAIM : PL_READ_DEVICES);
    j->user = asker;
    j->peer = peer;
    return t_read(t, j);
}

TEST(store_e2ee_key_directory) {
    tstore t;
    CHECK_EQ(t_open(&t), 0);
    int64_t a = t_user(&t, "alice"), b = t_user(&t, "bob"), c = t_user(&t, "carol");
    int64_t da = t_login(&t, a), da2 = t_login(&t, a), db = t_login(&t, b);
    CHECK(da > 0 && da2 > 0 && db > 0);
    int64_t held = -1;
    int created = -1;
    /* prekeys before any identity, a login that is not mine: refused */
    CHECK_EQ(t_upload(&t, a, da, NULL, 1, 3, 0, &held, NULL), PL_STORE_EINVAL);
    CHECK_EQ(t_upload(&t, b, da, "idA", 1, 3, 0, &held, NULL), PL_STORE_ENOTFOUND);
    CHECK_EQ(t_upload(&t, a, da, "idA", 1, 5, 0, &held, &created), PL_STORE_OK);
    CHECK_EQ(held, 5);
    CHECK_EQ(created, 1);
    CHECK_EQ(t_upload(&t, a, da, "idA", 6, 2, 0, &held, &created), PL_STORE_OK);   /* same identity */
    CHECK_EQ(held, 7);
    CHECK_EQ(created, 0);
    CHECK_EQ(t_upload(&t, a, da, NULL, 3, 2, 0, &held, &created), PL_STORE_OK);     /* ids 3, 4 again */
    CHECK_EQ(held, 7);
    CHECK_EQ(t_upload(&t, a, da2, "idA2", 100, 2, 0, &held, &created), PL_STORE_OK);
    CHECK_EQ(created, 1);
    /* the cap on held prekeys */
    CHECK_EQ(t_upload(&t, a, da, NULL, 1000, PL_KEYS_OTK_UPLOAD, 0, &held, NULL), PL_STORE_OK);
    CHECK_EQ(held, 7 + PL_KEYS_OTK_UPLOAD);
    CHECK_EQ(t_upload(&t, a, da, NULL, 2000, PL_KEYS_OTK_UPLOAD, 0, &held, NULL), PL_STORE_EINVAL);
    /* at the cap, ids already held are replaced, not added (before: refused) */
    size_t to_cap = PL_KEYS_OTK_HELD - 7 - PL_KEYS_OTK_UPLOAD;
    CHECK_EQ(t_upload(&t, a, da, NULL, 3000, to_cap, 0, &held, NULL), PL_STORE_OK);
    CHECK_EQ(held, PL_KEYS_OTK_HELD);
    CHECK_EQ(t_upload(&t, a, da, NULL, 1000, PL_KEYS_OTK_UPLOAD, 0, &held, NULL), PL_STORE_OK);
    CHECK_EQ(held, PL_KEYS_OTK_HELD);
    CHECK_EQ(t_upload(&t, a, da, NULL, 1099, 2, 0, &held, NULL), PL_STORE_EINVAL);  /* 1100 is new */
    CHECK_EQ(t_upload(&t, a, da, NULL, 10, 3, 1, &held, NULL), PL_STORE_OK);        /* replace */
    CHECK_EQ(held, 3);

    /* strangers see nothing; sharing a conversation (or oneself) does */
    pl_job j;
    CHECK_EQ(t_devices(&t, &j, b, a, 0), PL_STORE_ENOTFOUND);
    pl_job_release(&j);
    CHECK_EQ(t_devices(&t, &j, b, a, 1), PL_STORE_ENOTFOUND);
    pl_job_release(&j);
    CHECK_EQ(t_devices(&t, &j, a, a, 0), PL_STORE_OK);
    CHECK_EQ(j.ndevices, 2);
    pl_job_release(&j);
    int64_t m[] = {b};
    CHECK(t_group(&t, a, "g", m, 1) > 0);
    CHECK_EQ(t_devices(&t, &j, b, a, 0), PL_STORE_OK);
    CHECK_EQ(j.ndevices, 2);
    CHECK_EQ(j.devices[0].id, da);
    CHECK_STR(j.devices[0].identity, "idA");
    CHECK_STR(j.devices[0].spk, "spk");
    CHECK_STR(j.devices[0].spk_sig, "sig");
    CHECK_EQ(j.devices[0].otk_count, 3);
    CHECK(j.devices[0].otk == NULL);
    CHECK_EQ(j.devices[1].id, da2);
    CHECK_EQ(j.devices[1].otk_count, 2);
    pl_job_release(&j);
    CHECK_EQ(t_devices(&t, &j, c, a, 1), PL_STORE_ENOTFOUND);   /* carol shares nothing */
    pl_job_release(&j);

    /* claims take the lowest id, once; then none is left */
    int64_t want[] = {10, 11, 12};
    for (int i = 0; i < 4; i++) {
        CHECK_EQ(t_devices(&t, &j, b, a, 1), PL_STORE_OK);
        CHECK_EQ(j.ndevices, 2);
        if (i < 3) {
            CHECK_EQ(j.devices[0].otk_id, want[i]);
            char k[16];
            snprintf(k, sizeof k, "otk%lld", (long long)want[i]);
            CHECK_STR(j.devices[0].otk, k);
            CHECK_EQ(j.devices[0].otk_count, 2 - i);
        } else {
            CHECK(j.devices[0].otk == NULL);
            CHECK_EQ(j.devices[0].otk_count, 0);
        }
        pl_job_release(&j);
    }
    /* a revoked login's device is no longer listed; delete removes keys */
    pl_job r;
    t_init(&t, &r, PL_JOB_LOGIN_REVOKE);
    r.id = da2;
    CHECK_EQ(t_run1(&t, &r), PL_STORE_OK);
    CHECK_EQ(t_devices(&t, &j, b, a, 0), PL_STORE_OK);
    CHECK_EQ(j.ndevices, 1);
    pl_job_release(&j);
    t_init(&t, &r, PL_JOB_KEYS_DELETE);
    r.user = b;                                   /* not bob's device: nothing */
    r.id = da;
    CHECK_EQ(t_run1(&t, &r), PL_STORE_OK);
    CHECK_EQ(r.created, 0);
    r.user = a;
    CHECK_EQ(t_run1(&t, &r), PL_STORE_OK);
    CHECK_EQ(r.created, 1);
    CHECK_EQ(t_devices(&t, &j, b, a, 0), PL_STORE_OK);
    CHECK_EQ(j.ndevices, 0);
    pl_job_release(&j);
    t_finish(&t);
}

/* Invariant 9: many claims at once (one batch) never get the same key, and
 * every key is handed out exactly once. */
TEST(store_e2ee_claims_never_twice) {
    tstore t;
    CHECK_EQ(t_open(&t), 0);
    int64_t a = t_user(&t, "alice"), b = t_user(&t, "bob");
    int64_t da = t_login(&t, a);
    int64_t m[] = {b};
    CHECK(t_group(&t, a, "g", m, 1) > 0);
    CHECK_EQ(t_upload(&t, a, da, "idA", 1, 50, 0, NULL, NULL), PL_STORE_OK);
    enum { N = 60 };
    pl_job *jobs = calloc(N, sizeof *jobs);
    for (int i = 0; i < N; i++) {
        t_init(&t, &jobs[i], PL_JOB_KEYS_CLAIM);
        jobs[i].user = b;
        jobs[i].peer = a;
    }
    CHECK_EQ(t_run(&t, jobs, N), 0);
    int seen[51] = {0}, got = 0, none = 0, bad = 0;
    for (int i = 0; i < N; i++) {
        if (jobs[i].result || jobs[i].ndevices != 1) bad++;
        else if (!jobs[i].devices[0].otk) none++;
        else if (jobs[i].devices[0].otk_id < 1 || jobs[i].devices[0].otk_id > 50 ||
                 seen[jobs[i].devices[0].otk_id]++)
            bad++;
        else got++;
        pl_job_release(&jobs[i]);
    }
    free(jobs);
    CHECK_EQ(bad, 0);
    CHECK_EQ(got, 50);
    CHECK_EQ(none, N - 50);
    t_finish(&t);
}

/* Invariant 9: the mark, plain sends refused, ciphertext stored with an
 * empty body and out of the search index, edits refused, device-list
 * events only in marked conversations. */
TEST(store_e2ee_conversations) {
    tstore t;
    CHECK_EQ(t_open(&t), 0);
    int64_t a = t_user(&t, "alice"), b = t_user(&t, "bob");
    int64_t m[] = {b};
    int64_t g = t_group(&t, a, "g", m, 1), g2 = t_group(&t, a, "plain", m, 1);
    CHECK(g > 0 && g2 > 0);
    CHECK(t_say(&t, g, a, "before secret", 0, NULL, NULL) > 0);
    pl_job j;
    /* a member who is not an admin may not mark a group */
    t_init(&t, &j, PL_JOB_CONV_E2EE);
    j.conv = g;
    j.user = b;
    CHECK_EQ(t_run1(&t, &j), PL_STORE_EFORBID);
    j.user = a;
    CHECK_EQ(t_run(&t, &j, 1), 0);
    CHECK_EQ(j.result, PL_STORE_OK);
    CHECK_EQ(j.has_event, 1);
    CHECK_EQ(j.event.kind, PL_EV_E2EE);
    CHECK(has(j.event.data, "\"enabled\""));
    pl_job_release(&j);
    t_init(&t, &j, PL_JOB_CONV_E2EE);                  /* again: no event */
    j.conv = g;
    j.user = a;
    CHECK_EQ(t_run1(&t, &j), PL_STORE_OK);
    CHECK_EQ(j.created, 0);
    pl_conv c;
    CHECK_EQ(rd_conv_get(&t, g, b, &c), PL_STORE_OK);
    CHECK_EQ(c.e2ee, 1);
    pl_conv_release(&c);
    CHECK_EQ(rd_conv_get(&t, g2, b, &c), PL_STORE_OK);
    CHECK_EQ(c.e2ee, 0);
    pl_conv_release(&c);

    /* plain refused; ciphertext into a plain conversation refused */
    t_send_init(&t, &j, g, b, "p1", "plain text");
    CHECK_EQ(t_run1(&t, &j), PL_STORE_EFORBID);
    const char *payloads = "[{\"device\":1,\"type\":0,\"body\":\"Y2lwaGVyc2VjcmV0\"}]";
    t_send_init(&t, &j, g2, b, "c0", "");
    j.ciphertext = payloads;
    CHECK_EQ(t_run1(&t, &j), PL_STORE_EINVAL);
    t_send_init(&t, &j, g, b, "c1", "");
    j.ciphertext = payloads;
    CHECK_EQ(t_run(&t, &j, 1), 0);
    CHECK_EQ(j.result, PL_STORE_OK);
    int64_t cseq = j.event.seq;
    CHECK(has(j.event.data, "\"ciphertext\":[{\"device\":1"));
    pl_job_release(&j);
    pl_event e;
    CHECK_EQ(t_event_at(&t, g, a, cseq, &e), 0);
    CHECK_EQ(e.kind, PL_EV_MESSAGE);
    CHECK_EQ(e.body_len, 0);
    CHECK(has(e.data, "Y2lwaGVyc2VjcmV0"));
    pl_event_release(&e);
    /* a retry is a dup */
    t_send_init(&t, &j, g, b, "c1", "");
    j.ciphertext = payloads;
    CHECK_EQ(t_run(&t, &j, 1), 0);
    CHECK_EQ(j.dup, 1);
    CHECK_EQ(j.event.seq, cseq);
    pl_job_release(&j);
    /* no edits; delete works */
    CHECK_EQ(t_act(&t, PL_JOB_MESSAGE_EDIT, g, b, cseq, "new text", 0, NULL, NULL), PL_STORE_EFORBID);
    /* search: the body (empty) and the payload text never match */
    CHECK_EQ(t_found(&t, a, "secret", 0, 1), 1);       /* the plain message from before */
    t_sleep_ms(50);                                    /* SQLite indexes asynchronously */
    CHECK_EQ(t_hits(&t, a, "Y2lwaGVyc2VjcmV0", 0), 0);
    CHECK_EQ(t_hits(&t, a, "ciphertext", 0), 0);
    CHECK_EQ(t_hits(&t, a, "device", 0), 0);

    /* device-list events: in the marked conversation only */
    t_init(&t, &j, PL_JOB_DEVICES_ANNOUNCE);
    j.conv = g;
    j.user = b;
    CHECK_EQ(t_run(&t, &j, 1), 0);
    CHECK_EQ(j.result, PL_STORE_OK);
    CHECK_EQ(j.has_event, 1);
    CHECK_EQ(j.event.kind, PL_EV_E2EE);
    CHECK_EQ(j.event.subject, b);
    CHECK(has(j.event.data, "\"devices\""));
    pl_job_release(&j);
    t_init(&t, &j, PL_JOB_DEVICES_ANNOUNCE);
    j.conv = g2;
    j.user = b;
    CHECK_EQ(t_run1(&t, &j), PL_STORE_OK);
    CHECK_EQ(j.has_event, 0);
    int64_t stranger = t_user(&t, "carol");
    t_init(&t, &j, PL_JOB_DEVICES_ANNOUNCE);
    j.conv = g;
    j.user = stranger;
    CHECK_EQ(t_run1(&t, &j), PL_STORE_ENOTFOUND);
    CHECK_EQ(t_count_contiguous(&t, g), cseq + 1);
    t_finish(&t);
}

/* ---- media (store.h pl_media, PL_JOB_MEDIA_*, PL_READ_MEDIA_GET) ------------- */

static void t_media(pl_media *m, int64_t id, int64_t owner, char shac, int64_t size) {
    memset(m, 0, sizeof *m);
    m->id = id;
    m->owner = owner;
    m->size = size;
    m->kind = 1;
    memset(m->sha256, shac, 64);
    m->sha256[64] = '\0';
    snprintf(m->mime, sizeof m->mime, "image/png");
    snprintf(m->name, sizeof m->name, "caf\xc3\xa9.png");
}

static int t_media_create(tstore *t, const pl_media *m, int64_t quota, const char **why) {
    pl_job j;
    t_init(t, &j, PL_JOB_MEDIA_CREATE);
    j.media_in = m;
    j.expires = quota;
    int rc = t_run1(t, &j);
    if (why) *why = j.why;
    return rc;
}

static int t_media_get(tstore *t, int64_t id, int64_t user, pl_media *out) {
    pl_job j;
    t_init(t, &j, PL_READ_MEDIA_GET);
    j.id = id;
    j.user = user;
    int rc = t_read(t, &j);
    if (rc == PL_STORE_OK && j.nmedia == 1 && out) *out = j.media[0];
    pl_job_release(&j);
    return rc;
}

TEST(store_media_create_get_quota) {
    tstore t;
    CHECK_EQ(t_open(&t), PL_STORE_OK);
    int64_t a = t_user(&t, "alice"), b = t_user(&t, "bob");
    pl_media m, got;
    t_media(&m, 1001, a, 'a', 600);
    const char *why = NULL;
    CHECK_EQ(t_media_create(&t, &m, 1000, &why), PL_STORE_OK);
    CHECK_EQ(t_media_get(&t, 1001, a, &got), PL_STORE_OK);       /* the owner */
    CHECK_EQ(got.owner, a);
    CHECK_EQ(got.size, 600);
    CHECK_EQ(got.kind, 1);
    CHECK_STR(got.sha256, m.sha256);
    CHECK_STR(got.mime, "image/png");
    CHECK_STR(got.name, "caf\xc3\xa9.png");
    CHECK_EQ(got.width, 0);
    CHECK_STR(got.placeholder, "");
    CHECK(got.created > 0);
    CHECK_EQ(t_media_get(&t, 1001, b, NULL), PL_STORE_ENOTFOUND); /* not shared with bob */
    CHECK_EQ(t_media_get(&t, 1001, 0, &got), PL_STORE_OK);       /* no check (signed URL) */
    CHECK_EQ(t_media_get(&t, 999, a, NULL), PL_STORE_ENOTFOUND);
    /* quota: 600 + 500 > 1000 refused, and nothing written; no quota: fine */
    t_media(&m, 1002, a, 'b', 500);
    CHECK_EQ(t_media_create(&t, &m, 1000, &why), PL_STORE_EFORBID);
    CHECK(why && strcmp(why, "quota") == 0);
    CHECK_EQ(t_media_get(&t, 1002, a, NULL), PL_STORE_ENOTFOUND);
    CHECK_EQ(t_media_create(&t, &m, 0, NULL), PL_STORE_OK);
    /* bob's quota is his own */
    t_media(&m, 1003, b, 'a', 900);
    CHECK_EQ(t_media_create(&t, &m, 1000, NULL), PL_STORE_OK);
    /* thumbnail fields */
    pl_media th;
    memset(&th, 0, sizeof th);
    th.id = 1001;
    th.width = 640;
    th.height = 480;
    snprintf(th.placeholder, sizeof th.placeholder, "LEHV6nWB2yk8pyo0adR*.7kCMdnj");
    memset(th.thumb_sha, 'c', 64);
    pl_job j;
    t_init(&t, &j, PL_JOB_MEDIA_THUMB);
    j.media_in = &th;
    CHECK_EQ(t_run1(&t, &j), PL_STORE_OK);
    CHECK_EQ(t_media_get(&t, 1001, a, &got), PL_STORE_OK);
    CHECK_EQ(got.width, 640);
    CHECK_EQ(got.height, 480);
    CHECK_STR(got.placeholder, "LEHV6nWB2yk8pyo0adR*.7kCMdnj");
    CHECK_STR(got.thumb_sha, th.thumb_sha);
    th.id = 4242;
    t_init(&t, &j, PL_JOB_MEDIA_THUMB);
    j.media_in = &th;
    CHECK_EQ(t_run1(&t, &j), PL_STORE_ENOTFOUND);
    t_finish(&t);
}

TEST(store_media_gc_shared_blobs) {
    tstore t;
    CHECK_EQ(t_open(&t), PL_STORE_OK);
    int64_t a = t_user(&t, "alice");
    pl_media m;
    t_media(&m, 1, a, 'a', 10);             /* two uploads of one content ... */
    CHECK_EQ(t_media_create(&t, &m, 0, NULL), PL_STORE_OK);
    t_media(&m, 2, a, 'a', 10);
    CHECK_EQ(t_media_create(&t, &m, 0, NULL), PL_STORE_OK);
    t_media(&m, 3, a, 'b', 10);             /* ... and one of another */
    CHECK_EQ(t_media_create(&t, &m, 0, NULL), PL_STORE_OK);
    pl_media th;
    memset(&th, 0, sizeof th);
    th.id = 3;
    memset(th.thumb_sha, 'c', 64);
    pl_job j;
    t_init(&t, &j, PL_JOB_MEDIA_THUMB);
    j.media_in = &th;
    CHECK_EQ(t_run1(&t, &j), PL_STORE_OK);

    /* a cutoff before they were made: nothing goes */
    t_init(&t, &j, PL_JOB_MEDIA_GC);
    j.expires = 1;
    CHECK_EQ(t_read(&t, &j), PL_STORE_OK);
    CHECK_EQ(j.nmedia, 0);
    pl_job_release(&j);
    CHECK_EQ(t_media_get(&t, 1, a, NULL), PL_STORE_OK);

    /* one row at a time: the shared blob is named only when its last row goes */
    t_init(&t, &j, PL_JOB_MEDIA_GC);
    j.expires = INT64_MAX / 2;
    j.limit = 1;
    CHECK_EQ(t_read(&t, &j), PL_STORE_OK);
    int first_named = (int)j.nmedia;        /* row 1 or 2 (shared): 0; row 3: 2 */
    pl_job_release(&j);
    int rows = 1, named = first_named;
    while (rows < 3) {
        t_init(&t, &j, PL_JOB_MEDIA_GC);
        j.expires = INT64_MAX / 2;
        j.limit = 1;
        CHECK_EQ(t_read(&t, &j), PL_STORE_OK);
        for (size_t i = 0; i < j.nmedia; i++)
            CHECK(j.media[i].sha256[0] == 'a' || j.media[i].sha256[0] == 'b' || j.media[i].sha256[0] == 'c');
        named += (int)j.nmedia;
        pl_job_release(&j);
        rows++;
    }
    CHECK_EQ(named, 3);                     /* 'a' once, 'b' and the thumbnail 'c' */
    CHECK_EQ(t_media_get(&t, 1, a, NULL), PL_STORE_ENOTFOUND);
    CHECK_EQ(t_media_get(&t, 3, a, NULL), PL_STORE_ENOTFOUND);
    t_finish(&t);
}

/* Membership decides every send, also right after it changed: a member
 * removed, re-added or leaving is refused or allowed at once, within one
 * batch as well as across batches (a writer-side cache of roles, tried for
 * issue 11, must keep this). */
TEST(store_send_follows_membership_changes) {
    tstore t;
    CHECK_EQ(t_open(&t), PL_STORE_OK);
    int64_t a = t_user(&t, "alice"), b = t_user(&t, "bob");
    int64_t g = t_group(&t, a, "g", &b, 1);
    CHECK(g > 0);
    CHECK(t_say(&t, g, b, "one", 0, NULL, NULL) > 0);                 /* bob's role is known */
    CHECK_EQ(t_member_op(&t, PL_JOB_MEMBER_REMOVE, g, a, b, NULL), PL_STORE_OK);
    CHECK_EQ(t_say(&t, g, b, "two", 0, NULL, NULL), PL_STORE_ENOTFOUND);
    CHECK_EQ(t_member_op(&t, PL_JOB_MEMBER_ADD, g, a, b, NULL), PL_STORE_OK);
    CHECK(t_say(&t, g, b, "three", 0, NULL, NULL) > 0);
    /* one batch: bob sends, leaves, sends again */
    pl_job j[3];
    t_send_init(&t, &j[0], g, b, NULL, "four");
    t_init(&t, &j[1], PL_JOB_MEMBER_LEAVE);
    j[1].conv = g;
    j[1].user = b;
    t_send_init(&t, &j[2], g, b, NULL, "five");
    CHECK_EQ(t_run(&t, j, 3), 0);
    CHECK_EQ(j[0].result, PL_STORE_OK);
    CHECK_EQ(j[1].result, PL_STORE_OK);
    CHECK_EQ(j[2].result, PL_STORE_ENOTFOUND);
    for (int i = 0; i < 3; i++) pl_job_release(&j[i]);
    CHECK(t_say(&t, g, a, "alice still", 0, NULL, NULL) > 0);
    t_finish(&t);
}

/* A new message's search-queue row and media references are written by
 * the writer's code since migration 10 -> 11 (the insert triggers made the
 * event insert run with a statement journal). Each is written exactly once:
 * a database migrated from 10 keeps no insert trigger that would add a
 * second queue row, and an attachment named twice is referenced once. */
TEST(store_event_insert_queues_and_references_once) {
    SQLITE_ONLY();
    tstore t;
    CHECK_EQ(t_open(&t), PL_STORE_OK);
    int64_t a = t_user(&t, "alice"), b = t_user(&t, "bob");
    int64_t g = t_group(&t, a, "g", &b, 1);
    CHECK(g > 0);
    /* back to schema 10: the two insert triggers as they were */
    CHECK_EQ(t_closed_sql(&t, "parley.db",
                          "DROP INDEX conversations_channel_key;"
                          "ALTER TABLE conversations DROP COLUMN name_key;"
                          "CREATE TRIGGER events_fts_ai AFTER INSERT ON events WHEN new.kind = 2"
                          " AND new.body IS NOT NULL BEGIN INSERT INTO fts_queue(id, conv_id, seq, op)"
                          " VALUES(new.id, new.conv_id, new.seq, 0); END;"
                          "CREATE TRIGGER events_media_ai AFTER INSERT ON events"
                          " WHEN new.kind = 2 AND instr(coalesce(new.data, ''), '\"attachments\"') > 0"
                          " BEGIN INSERT OR IGNORE INTO media_refs(media_id, conv_id, seq)"
                          " SELECT json_extract(a.value, '$.id'), new.conv_id, new.seq"
                          " FROM json_each(new.data, '$.attachments') a; END;"
                          "DROP INDEX events_no_cmid;"                                           /* 17 -> 18 */
                          "DROP TABLE erasure_held;"                                             /* 16 -> 17 */
                          "DROP TABLE blocks; ALTER TABLE conversations DROP COLUMN blocked;"   /* 15 -> 16 */
                          "DROP INDEX conversations_retention; DROP TABLE erasures;"         /* 14 -> 15 */
                          "ALTER TABLE conversations DROP COLUMN retention;"
                          "ALTER TABLE conversations DROP COLUMN hold;"
                          "ALTER TABLE conversations DROP COLUMN purged_seq;"
                          "ALTER TABLE conversations DROP COLUMN purge_next;"
                          "ALTER TABLE users DROP COLUMN deleted;"
                          "DROP TABLE push_devices; DROP TABLE push_outbox;"   /* 11 -> 12 */
                          "DROP TABLE workspaces; DROP TABLE workspace_members;"   /* 12 -> 13 */
                          "DROP INDEX conversations_channel;"
                          "ALTER TABLE conversations DROP COLUMN workspace;"
                          "ALTER TABLE conversations DROP COLUMN private;"
                          "DROP TABLE reports;"                                 /* 13 -> 14 */
                          "PRAGMA user_version = 10;"), SQLITE_OK);
    CHECK_EQ(t_open_store(&t), PL_STORE_OK);
    pl_media m;
    t_media(&m, 77, a, 'd', 10);
    CHECK_EQ(t_media_create(&t, &m, 0, NULL), PL_STORE_OK);
    pl_job j;
    t_send_init(&t, &j, g, a, "att twice", "heron");
    j.attach_json = "[{\"id\":77,\"kind\":\"file\",\"mime\":\"text/plain\",\"size\":10,\"name\":\"x\"},"
                    "{\"id\":77,\"kind\":\"file\",\"mime\":\"text/plain\",\"size\":10,\"name\":\"x\"}]";
    CHECK_EQ(t_run(&t, &j, 1), 0);
    CHECK_EQ(j.result, PL_STORE_OK);
    int64_t seq = j.event.seq;
    pl_job_release(&j);
    CHECK(t_say(&t, g, b, "plain words", 0, NULL, NULL) == seq + 1);
    CHECK_EQ(t_media_get(&t, 77, b, NULL), PL_STORE_OK);          /* referenced */
    CHECK_EQ(t_found(&t, a, "heron", 0, 1), 1);
    CHECK_EQ(t_closed_int(&t, "SELECT count(*) FROM sqlite_master WHERE type = 'trigger'"
                              " AND name IN ('events_fts_ai', 'events_media_ai')"), 0);
    char q[160];
    snprintf(q, sizeof q, "SELECT count(*) FROM fts_queue WHERE conv_id = %lld AND seq >= %lld AND op = 0",
             (long long)g, (long long)seq);
    CHECK_EQ(t_closed_int(&t, q), 2);                             /* one row each */
    snprintf(q, sizeof q, "SELECT count(*) FROM media_refs WHERE conv_id = %lld", (long long)g);
    CHECK_EQ(t_closed_int(&t, q), 1);
    CHECK_EQ(t_open_store(&t), PL_STORE_OK);
    t_finish(&t);
}

/* Attachments (store.h attach_json): a send references its media, so
 * members may read them; an edit keeps them in data; a delete drops the
 * references and starts the grace period; then GC names the blob. */
TEST(store_media_attachments_refs) {
    tstore t;
    CHECK_EQ(t_open(&t), PL_STORE_OK);
    int64_t a = t_user(&t, "alice"), b = t_user(&t, "bob"), c = t_user(&t, "carol");
    int64_t g = t_group(&t, a, "g", &b, 1);
    CHECK(g > 0);
    pl_media m;
    t_media(&m, 77, a, 'd', 10);
    CHECK_EQ(t_media_create(&t, &m, 0, NULL), PL_STORE_OK);
    CHECK_EQ(t_media_get(&t, 77, b, NULL), PL_STORE_ENOTFOUND);   /* not posted yet */
    /* what a send may attach: only the sender's own */
    pl_job j;
    int64_t ids[2] = {77, 78};
    t_init(&t, &j, PL_READ_MEDIA_LIST);
    j.user = a;
    j.ids = ids;
    j.nids = 2;
    CHECK_EQ(t_read(&t, &j), PL_STORE_OK);
    CHECK_EQ(j.nmedia, 1);
    CHECK_EQ(j.media[0].id, 77);
    pl_job_release(&j);
    t_init(&t, &j, PL_READ_MEDIA_LIST);
    j.user = b;
    j.ids = ids;
    j.nids = 2;
    CHECK_EQ(t_read(&t, &j), PL_STORE_OK);
    CHECK_EQ(j.nmedia, 0);
    pl_job_release(&j);

    t_send_init(&t, &j, g, a, "att1", "");
    j.attach_json = "[{\"id\":77,\"kind\":\"image\",\"mime\":\"image/png\",\"size\":10,\"name\":\"x.png\"}]";
    CHECK_EQ(t_run(&t, &j, 1), 0);
    CHECK_EQ(j.result, PL_STORE_OK);
    int64_t seq = j.event.seq;
    CHECK(j.event.data && strstr(j.event.data, "\"attachments\":[{\"id\":77"));
    pl_job_release(&j);
    CHECK_EQ(t_media_get(&t, 77, b, NULL), PL_STORE_OK);          /* a member now may */
    CHECK_EQ(t_media_get(&t, 77, c, NULL), PL_STORE_ENOTFOUND);   /* a stranger still not */

    /* an edit keeps the attachments */
    CHECK_EQ(t_act(&t, PL_JOB_MESSAGE_EDIT, g, a, seq, "now with text", 0, NULL, NULL), PL_STORE_OK);
    pl_event ev;
    CHECK_EQ(t_event_at(&t, g, b, seq, &ev), PL_STORE_OK);
    CHECK_STR(ev.body, "now with text");
    CHECK(ev.data && strstr(ev.data, "\"attachments\"") && strstr(ev.data, "77"));   /* PG: jsonb spacing */
    pl_event_release(&ev);

    /* referenced: GC leaves it, however old */
    t_init(&t, &j, PL_JOB_MEDIA_GC);
    j.expires = INT64_MAX / 2;
    CHECK_EQ(t_read(&t, &j), PL_STORE_OK);
    CHECK_EQ(j.nmedia, 0);
    pl_job_release(&j);
    CHECK_EQ(t_media_get(&t, 77, a, NULL), PL_STORE_OK);

    /* deleted: the reference goes, the member loses access, GC takes it after the grace */
    CHECK_EQ(t_act(&t, PL_JOB_MESSAGE_DELETE, g, a, seq, NULL, 0, NULL, NULL), PL_STORE_OK);
    CHECK_EQ(t_media_get(&t, 77, b, NULL), PL_STORE_ENOTFOUND);
    t_init(&t, &j, PL_JOB_MEDIA_GC);
    j.expires = 1;                                               /* a cutoff before the delete */
    CHECK_EQ(t_read(&t, &j), PL_STORE_OK);
    CHECK_EQ(j.nmedia, 0);
    pl_job_release(&j);
    t_init(&t, &j, PL_JOB_MEDIA_GC);
    j.expires = INT64_MAX / 2;
    CHECK_EQ(t_read(&t, &j), PL_STORE_OK);
    CHECK_EQ(j.nmedia, 1);
    CHECK(j.media[0].sha256[0] == 'd');
    pl_job_release(&j);
    CHECK_EQ(t_media_get(&t, 77, a, NULL), PL_STORE_ENOTFOUND);
    t_finish(&t);
}

/* ---- push notifications (store.h invariant 10) ------------------------------ */

/* Registers token on platform for user's login; the result, *id, *created
 * and *why (each when given). */
static int t_push_reg(tstore *t, int64_t user, int64_t login, int platform, const char *token, int64_t *id,
                      int *created, const char **why) {
    pl_job j;
    t_init(t, &j, PL_JOB_PUSH_REGISTER);
    j.user = user;
    j.id = login;
    j.platform = platform;
    j.token = token;
    int rc = t_run1(t, &j);
    if (id) *id = j.out_id;
    if (created) *created = j.created;
    if (why) *why = j.why;
    return rc;
}

static int t_push_unreg(tstore *t, int64_t user, int64_t device) {
    pl_job j;
    t_init(t, &j, PL_JOB_PUSH_UNREGISTER);
    j.user = user;
    j.id = device;
    return t_run1(t, &j);
}

/* The user's push devices into j (the caller releases it). */
static int t_push_devices(tstore *t, pl_job *j, int64_t user) {
    t_init(t, j, PL_READ_PUSH_DEVICES);
    j->user = user;
    return t_read(t, j);
}

static int t_push_dropped;              /* the last claim's rows dropped (out of attempts) */

/* Claims up to limit outbox rows leased until expires: their number (ids
 * into out, at most cap), or -(1000 - error). */
static int t_push_claim(tstore *t, int limit, int64_t expires, int64_t *out, size_t cap) {
    pl_job j;
    t_init(t, &j, PL_JOB_PUSH_CLAIM);
    j.limit = limit;
    j.expires = expires;
    if (t_run(t, &j, 1) != 0) return -1099;
    int n = j.result ? -(1000 - j.result) : (int)j.nout;
    t_push_dropped = j.created;
    for (size_t i = 0; i < j.nout; i++) {
        if (i > 0 && j.out_ids[i] <= j.out_ids[i - 1]) n = -2000;   /* ascending */
        if (i < cap) out[i] = j.out_ids[i];
    }
    pl_job_release(&j);
    return n;
}

static int t_push_done(tstore *t, const int64_t *ids, size_t nids, const int64_t *dead, size_t ndead,
                       const pl_push_retry *retries, size_t nretries, int64_t expires) {
    pl_job j;
    t_init(t, &j, PL_JOB_PUSH_DONE);
    j.ids = ids;
    j.nids = nids;
    j.dead = dead;
    j.ndead = ndead;
    j.retries = retries;
    j.nretries = nretries;
    j.expires = expires;
    return t_run1(t, &j);
}

/* The notifications of outbox rows ids into j (the caller releases it). */
static int t_push_targets(tstore *t, pl_job *j, const int64_t *ids, size_t n) {
    t_init(t, j, PL_READ_PUSH_TARGETS);
    j->ids = ids;
    j->nids = n;
    return t_read(t, j);
}

static int t_notify_set(tstore *t, int64_t conv, int64_t user, int level) {
    pl_job j;
    t_init(t, &j, PL_JOB_NOTIFY_SET);
    j.conv = conv;
    j.user = user;
    j.level = level;
    return t_run1(t, &j);
}

static int t_revoke(tstore *t, int64_t login) {
    pl_job j;
    t_init(t, &j, PL_JOB_LOGIN_REVOKE);
    j.id = login;
    return t_run1(t, &j);
}

#define T_FAR (4102444800000LL)          /* 2100: a lease that does not end in a test */

/* Registration: one row per (platform, token), moved between logins and
 * users, the cap, live logins only; unregister; a revoke takes the
 * login's devices. */
TEST(store_push_devices) {
    tstore t;
    CHECK_EQ(t_open(&t), PL_STORE_OK);
    int64_t a = t_user(&t, "alice"), b = t_user(&t, "bob");
    int64_t la = t_login(&t, a), la2 = t_login(&t, a), lb = t_login(&t, b), lr = t_login(&t, a);
    CHECK(la > 0 && la2 > 0 && lb > 0 && lr > 0);
    int64_t d1 = 0, id = 0;
    int created = -1;
    const char *why = NULL;
    CHECK_EQ(t_push_reg(&t, a, la, PL_PUSH_FCM, "tokA", &d1, &created, NULL), PL_STORE_OK);
    CHECK(d1 > 0);
    CHECK_EQ(created, 1);
    CHECK_EQ(t_push_reg(&t, a, la, PL_PUSH_FCM, "tokA", &id, &created, NULL), PL_STORE_OK);   /* again */
    CHECK_EQ(id, d1);
    CHECK_EQ(created, 0);
    /* another platform, same text: another device */
    int64_t d2 = 0;
    CHECK_EQ(t_push_reg(&t, a, la, PL_PUSH_APNS, "tokA", &d2, &created, NULL), PL_STORE_OK);
    CHECK(d2 > d1);
    CHECK_EQ(created, 1);
    /* not a's login; a revoked login; an expired one */
    CHECK_EQ(t_push_reg(&t, a, lb, PL_PUSH_FCM, "tokX", NULL, NULL, NULL), PL_STORE_ENOTFOUND);
    CHECK_EQ(t_revoke(&t, lr), PL_STORE_OK);
    CHECK_EQ(t_push_reg(&t, a, lr, PL_PUSH_FCM, "tokX", NULL, NULL, NULL), PL_STORE_ENOTFOUND);
    pl_job j;
    t_init(&t, &j, PL_JOB_LOGIN_CREATE);
    j.user = a;
    j.expires = 1;
    CHECK_EQ(t_run1(&t, &j), PL_STORE_OK);
    CHECK_EQ(t_push_reg(&t, a, j.out_id, PL_PUSH_FCM, "tokX", NULL, NULL, NULL), PL_STORE_ENOTFOUND);

    /* the token moves to bob's login: alice no longer lists it */
    CHECK_EQ(t_push_reg(&t, b, lb, PL_PUSH_FCM, "tokA", &id, &created, NULL), PL_STORE_OK);
    CHECK_EQ(id, d1);
    CHECK_EQ(created, 1);
    CHECK_EQ(t_push_devices(&t, &j, a), PL_STORE_OK);
    CHECK_EQ(j.npush_devices, 1);
    CHECK_EQ(j.push_devices[0].id, d2);
    CHECK_EQ(j.push_devices[0].platform, PL_PUSH_APNS);
    pl_job_release(&j);
    CHECK_EQ(t_push_devices(&t, &j, b), PL_STORE_OK);
    CHECK_EQ(j.npush_devices, 1);
    CHECK_EQ(j.push_devices[0].id, d1);
    CHECK_EQ(j.push_devices[0].user, b);
    CHECK_EQ(j.push_devices[0].login, lb);
    CHECK_EQ(j.push_devices[0].platform, PL_PUSH_FCM);
    CHECK_STR(j.push_devices[0].token, "tokA");
    CHECK(j.push_devices[0].created > 0);
    pl_job_release(&j);
    /* and back to alice's other login */
    CHECK_EQ(t_push_reg(&t, a, la2, PL_PUSH_FCM, "tokA", &id, &created, NULL), PL_STORE_OK);
    CHECK_EQ(id, d1);
    CHECK_EQ(created, 1);

    /* the cap: alice holds 2; new tokens up to PL_PUSH_DEVICES_MAX */
    char tok[32];
    for (int i = 2; i < PL_PUSH_DEVICES_MAX; i++) {
        snprintf(tok, sizeof tok, "cap%d", i);
        CHECK_EQ(t_push_reg(&t, a, i % 2 ? la : la2, PL_PUSH_WEBHOOK, tok, NULL, &created, NULL), PL_STORE_OK);
        CHECK_EQ(created, 1);
    }
    CHECK_EQ(t_push_reg(&t, a, la, PL_PUSH_WEBHOOK, "one too many", NULL, NULL, &why), PL_STORE_EINVAL);
    CHECK_STR(why, "too many push devices");
    CHECK_EQ(t_push_reg(&t, a, la, PL_PUSH_WEBHOOK, "cap3", NULL, &created, NULL), PL_STORE_OK);   /* held */
    CHECK_EQ(created, 0);
    CHECK_EQ(t_push_devices(&t, &j, a), PL_STORE_OK);
    CHECK_EQ(j.npush_devices, PL_PUSH_DEVICES_MAX);
    int ascending = 1;
    for (size_t i = 1; i < j.npush_devices; i++) ascending &= j.push_devices[i].id > j.push_devices[i - 1].id;
    CHECK(ascending);
    pl_job_release(&j);

    /* unregister: only one's own */
    CHECK_EQ(t_push_unreg(&t, b, d2), PL_STORE_ENOTFOUND);
    CHECK_EQ(t_push_unreg(&t, a, d2), PL_STORE_OK);
    CHECK_EQ(t_push_unreg(&t, a, d2), PL_STORE_ENOTFOUND);
    int64_t last = 0, next = 0;
    CHECK_EQ(t_push_reg(&t, a, la, PL_PUSH_WEBHOOK, "room again", &last, &created, NULL), PL_STORE_OK);
    CHECK_EQ(created, 1);
    /* an id is never handed out again, the largest one either (audit U2:
     * a rowid table gave a deleted newest device's id to the next one) */
    CHECK_EQ(t_push_unreg(&t, a, last), PL_STORE_OK);
    CHECK_EQ(t_push_reg(&t, a, la, PL_PUSH_WEBHOOK, "room once more", &next, &created, NULL), PL_STORE_OK);
    CHECK(next > last);

    /* rotating a login's refresh token keeps its devices */
    CHECK_EQ(t_push_devices(&t, &j, a), PL_STORE_OK);
    size_t before_rotate = j.npush_devices;
    pl_job_release(&j);
    t_init(&t, &j, PL_JOB_LOGIN_ROTATE);
    j.id = la;
    memset(j.hash, 7, sizeof j.hash);             /* t_login's */
    memset(j.hash2, 8, sizeof j.hash2);
    j.expires = (int64_t)time(NULL) * 1000 + 3600 * 1000;
    CHECK_EQ(t_run1(&t, &j), PL_STORE_OK);
    CHECK_EQ(t_push_devices(&t, &j, a), PL_STORE_OK);
    CHECK_EQ(j.npush_devices, before_rotate);
    pl_job_release(&j);

    /* revoking la takes its devices; la2's stay */
    CHECK_EQ(t_push_devices(&t, &j, a), PL_STORE_OK);
    size_t on_la = 0, total = j.npush_devices;
    for (size_t i = 0; i < j.npush_devices; i++) on_la += j.push_devices[i].login == la;
    pl_job_release(&j);
    CHECK(on_la > 0 && on_la < total);
    CHECK_EQ(t_revoke(&t, la), PL_STORE_OK);
    CHECK_EQ(t_push_devices(&t, &j, a), PL_STORE_OK);
    CHECK_EQ(j.npush_devices, total - on_la);
    int none_left = 1;
    for (size_t i = 0; i < j.npush_devices; i++) none_left &= j.push_devices[i].login == la2;
    CHECK(none_left);
    pl_job_release(&j);
    t_finish(&t);
}

/* The outbox: a row per MESSAGE only with opts.push; claims lease the
 * oldest free rows, a leased row is not claimed again before its lease
 * ends, a retry frees it, PL_PUSH_ATTEMPTS claims drop it; done deletes
 * rows and dead devices. Leases are set in the past (free at once) or far
 * ahead, so nothing waits on the clock. */
TEST(store_push_outbox_claims) {
    tstore t;
    CHECK_EQ(t_open(&t), PL_STORE_OK);
    int64_t a = t_user(&t, "alice"), b = t_user(&t, "bob"), c = t_user(&t, "carol");
    int64_t g = t_group(&t, a, "g", &b, 1);
    CHECK(g > 0);
    CHECK_EQ(t_send(&t, g, a, "before push"), 2);
    int64_t ids[16];
    CHECK_EQ(t_push_claim(&t, 100, T_FAR, ids, 16), 0);          /* push off: no rows */

    t.push = 1;
    CHECK_EQ(t_reopen(&t), PL_STORE_OK);
    CHECK_EQ(t_push_claim(&t, 100, T_FAR, ids, 16), 0);
    int64_t g2 = t_group(&t, a, "g2", &b, 1);                     /* created: no row */
    CHECK(g2 > 0);
    CHECK_EQ(t_member_op(&t, PL_JOB_MEMBER_ADD, g, a, c, NULL), PL_STORE_OK);   /* member_added: none */
    CHECK_EQ(t_push_claim(&t, 100, T_FAR, ids, 16), 0);
    /* three sends in one batch (one run), one alone, a dup, an action */
    pl_job s[4];
    t_send_init(&t, &s[0], g, a, "m1", "one");
    t_send_init(&t, &s[1], g, b, "m2", "two");
    t_send_init(&t, &s[2], g2, a, "m3", "three");
    t_send_init(&t, &s[3], g, a, "m1", "one");                     /* a dup: nothing new */
    CHECK_EQ(t_run(&t, s, 4), 0);
    CHECK_EQ(s[3].dup, 1);
    for (int i = 0; i < 4; i++) {
        CHECK_EQ(s[i].result, PL_STORE_OK);
        pl_job_release(&s[i]);
    }
    int64_t m4 = t_send(&t, g, c, "m4");
    CHECK(m4 > 0);
    CHECK_EQ(t_act(&t, PL_JOB_REACTION, g, b, m4, "\xF0\x9F\x91\x8D", 0, NULL, NULL), PL_STORE_OK);

    /* four rows: the oldest two, then the rest, then none while leased */
    int64_t r[4];
    CHECK_EQ(t_push_claim(&t, 2, T_FAR, r, 2), 2);
    CHECK_EQ(t_push_claim(&t, 100, T_FAR, r + 2, 2), 2);
    CHECK(r[0] < r[1] && r[1] < r[2] && r[2] < r[3]);
    CHECK_EQ(t_push_claim(&t, 100, T_FAR, ids, 16), 0);
    /* which message each row is: the targets read says (one row each) */
    pl_job tj;
    CHECK_EQ(t_push_targets(&t, &tj, r, 4), PL_STORE_OK);        /* nobody has a device yet */
    CHECK_EQ(tj.npushes, 0);
    pl_job_release(&tj);

    /* done: r[0] finished, a device dead, r[1] retried with a lease already
     * over; r[2] and r[3] stay leased far ahead */
    int64_t dev = 0;
    int64_t lb = t_login(&t, b);
    CHECK_EQ(t_push_reg(&t, b, lb, PL_PUSH_FCM, "dead one", &dev, NULL, NULL), PL_STORE_OK);
    pl_push_retry rt = {.id = r[1], .devices = &dev, .ndevices = 1};
    CHECK_EQ(t_push_done(&t, &r[0], 1, &dev, 1, &rt, 1, 1), PL_STORE_OK);
    CHECK_EQ(t_push_devices(&t, &tj, b), PL_STORE_OK);           /* the dead device is gone */
    CHECK_EQ(tj.npush_devices, 0);
    pl_job_release(&tj);
    /* r[1] comes back (a lease in the past: free again at once), counting
     * its claims: the first was above, PL_PUSH_ATTEMPTS in all */
    for (int i = 2; i <= PL_PUSH_ATTEMPTS; i++) {
        CHECK_EQ(t_push_claim(&t, 100, 1, ids, 16), 1);
        CHECK_EQ(ids[0], r[1]);
        CHECK_EQ(t_push_dropped, 0);
    }
    CHECK_EQ(t_push_claim(&t, 100, 1, ids, 16), 0);               /* out of attempts: dropped */
    CHECK_EQ(t_push_dropped, 1);
    rt.ndevices = 0;
    CHECK_EQ(t_push_done(&t, NULL, 0, NULL, 0, &rt, 1, 1), PL_STORE_OK);   /* gone: nothing to free */
    CHECK_EQ(t_push_claim(&t, 100, 1, ids, 16), 0);
    /* r[0] is deleted; a retry frees r[2] */
    rt.id = r[2];
    CHECK_EQ(t_push_done(&t, NULL, 0, NULL, 0, &rt, 1, 1), PL_STORE_OK);
    CHECK_EQ(t_push_claim(&t, 100, T_FAR, ids, 16), 1);
    CHECK_EQ(ids[0], r[2]);

    /* nothing is written without push, again: only the old rows are left
     * (SQLite frees every lease at open: they were a dead process's) */
    t.push = 0;
    CHECK_EQ(t_reopen(&t), PL_STORE_OK);
    CHECK(t_send(&t, g, a, "m5") > 0);
    int n = t_push_claim(&t, 100, T_FAR, ids, 16);
    CHECK(n >= 0 && n <= 2);
    for (int i = 0; i < n; i++) CHECK(ids[i] == r[2] || ids[i] == r[3]);
    t_finish(&t);
}

/* The notifications of claimed rows: members but the sender who joined
 * at or before the message, by level (all; mentions only when mentioned;
 * none), on the devices of live logins (a retried row: only its devices);
 * none for a deleted message; a ciphertext message has no body. */
TEST(store_push_targets) {
    tstore t;
    memset(&t, 0, sizeof t);
    CHECK_EQ(t_open(&t), PL_STORE_OK);
    t.push = 1;
    CHECK_EQ(t_reopen(&t), PL_STORE_OK);
    int64_t a = t_user(&t, "alice"), b = t_user(&t, "bob"), c = t_user(&t, "carol"), d = t_user(&t, "dave"),
            e = t_user(&t, "erin"), f = t_user(&t, "frank");
    int64_t la = t_login(&t, a), lb1 = t_login(&t, b), lb2 = t_login(&t, b), lc = t_login(&t, c),
            ld = t_login(&t, d), le = t_login(&t, e), lf = t_login(&t, f), lf2 = t_login(&t, f);
    int64_t da, db1, db2, dc, dd, de, df, df2;
    CHECK_EQ(t_push_reg(&t, a, la, PL_PUSH_FCM, "ta", &da, NULL, NULL), PL_STORE_OK);
    CHECK_EQ(t_push_reg(&t, b, lb1, PL_PUSH_FCM, "tb1", &db1, NULL, NULL), PL_STORE_OK);
    CHECK_EQ(t_push_reg(&t, b, lb2, PL_PUSH_APNS, "tb2", &db2, NULL, NULL), PL_STORE_OK);
    CHECK_EQ(t_push_reg(&t, c, lc, PL_PUSH_FCM, "tc", &dc, NULL, NULL), PL_STORE_OK);
    CHECK_EQ(t_push_reg(&t, d, ld, PL_PUSH_FCM, "td", &dd, NULL, NULL), PL_STORE_OK);
    CHECK_EQ(t_push_reg(&t, e, le, PL_PUSH_WEBHOOK, "te", &de, NULL, NULL), PL_STORE_OK);
    CHECK_EQ(t_push_reg(&t, f, lf, PL_PUSH_FCM, "tf", &df, NULL, NULL), PL_STORE_OK);
    CHECK_EQ(t_push_reg(&t, f, lf2, PL_PUSH_FCM, "tf2", &df2, NULL, NULL), PL_STORE_OK);
    int64_t m[] = {b, c, d, f};
    int64_t g = t_group(&t, a, "crew", m, 4);
    CHECK(g > 0);
    CHECK_EQ(t_notify_set(&t, g, c, PL_NOTIFY_MENTIONS), PL_STORE_OK);
    CHECK_EQ(t_notify_set(&t, g, d, PL_NOTIFY_NONE), PL_STORE_OK);
    /* frank: one login revoked, the other expired (rotated to a past expiry) */
    CHECK_EQ(t_revoke(&t, lf), PL_STORE_OK);
    pl_job j;
    t_init(&t, &j, PL_JOB_LOGIN_ROTATE);
    j.id = lf2;
    memset(j.hash, 7, sizeof j.hash);
    memset(j.hash2, 8, sizeof j.hash2);
    j.expires = 1;
    CHECK_EQ(t_run1(&t, &j), PL_STORE_OK);

    int64_t s1 = t_say(&t, g, a, "hello all", 0, NULL, NULL);
    int64_t s2 = t_say(&t, g, a, "hi @carol and @dave", 0, NULL, NULL);
    CHECK_EQ(t_member_op(&t, PL_JOB_MEMBER_ADD, g, a, e, NULL), PL_STORE_OK);   /* after s1, s2 */
    int64_t s3 = t_say(&t, g, b, "from bob", 0, NULL, NULL);
    int64_t s4 = t_say(&t, g, a, "regret", 0, NULL, NULL);
    CHECK(s1 > 0 && s2 == s1 + 1 && s3 == s2 + 2 && s4 == s3 + 1);
    CHECK_EQ(t_act(&t, PL_JOB_MESSAGE_DELETE, g, a, s4, NULL, 0, NULL, NULL), PL_STORE_OK);
    int64_t r[8];
    CHECK_EQ(t_push_claim(&t, 100, T_FAR, r, 8), 4);              /* s1 .. s4, in order */

    /* expected: (row, user, device, mention), by row, user, device */
    struct { int row; int64_t user, device; int mention; } want[] = {
        {0, b, db1, 0}, {0, b, db2, 0},                 /* s1: carol only when mentioned, dave never */
        {1, b, db1, 0}, {1, b, db2, 0}, {1, c, dc, 1},  /* s2: dave muted though named */
        {2, a, da, 0}, {2, e, de, 0},                   /* s3: not bob's own; erin joined before it */
    };
    size_t nwant = sizeof want / sizeof want[0];
    int64_t seqs[] = {s1, s2, s3};
    const char *bodies[] = {"hello all", "hi @carol and @dave", "from bob"};
    int64_t senders[] = {a, a, b};
    CHECK_EQ(t_push_targets(&t, &j, r, 4), PL_STORE_OK);
    CHECK_EQ(j.npushes, nwant);
    for (size_t i = 0; i < nwant; i++) {
        const pl_push *p = &j.pushes[i];
        int row = want[i].row;
        CHECK_EQ(p->outbox, r[row]);
        CHECK_EQ(p->conv, g);
        CHECK_EQ(p->seq, seqs[row]);
        CHECK(p->id > 0 && p->ts > 0);
        CHECK_EQ(p->sender, senders[row]);
        CHECK_STR(p->sender_name, senders[row] == a ? "alice" : "bob");
        CHECK_EQ(p->conv_kind, PL_CONV_GROUP);
        CHECK_STR(p->title, "crew");
        CHECK_STR(p->body, bodies[row]);
        CHECK_EQ(p->body_len, strlen(bodies[row]));
        CHECK_EQ(p->encrypted, 0);
        CHECK_EQ(p->user, want[i].user);
        CHECK_EQ(p->device, want[i].device);
        CHECK_EQ(p->mention, want[i].mention);
        CHECK_STR(p->token, p->device == da ? "ta" : p->device == db1 ? "tb1" : p->device == db2 ? "tb2"
                            : p->device == dc ? "tc" : "te");
        CHECK_EQ(p->platform, p->device == db2 ? PL_PUSH_APNS : p->device == de ? PL_PUSH_WEBHOOK : PL_PUSH_FCM);
    }
    /* badges: what the user's clients count, the conversation list's
     * unread (level all) or unread mentions (level mentions) */
    for (size_t i = 0; i < j.npushes; i++) {
        pl_conv *list = NULL;
        size_t nl = 0;
        CHECK_EQ(rd_conv_list(&t, j.pushes[i].user, 0, &list, &nl), PL_STORE_OK);
        int64_t want_badge = 0;
        for (size_t k = 0; k < nl; k++)
            want_badge += list[k].notify == PL_NOTIFY_ALL ? list[k].unread
                          : list[k].notify == PL_NOTIFY_MENTIONS ? list[k].unread_mentions : 0;
        pl_conv_list_free(list, nl);
        CHECK(want_badge > 0);
        CHECK_EQ(j.pushes[i].badge, want_badge);
    }
    pl_event ev;
    CHECK_EQ(t_event_at(&t, g, b, s1, &ev), 0);
    CHECK_EQ(j.pushes[0].id, ev.id);
    CHECK_EQ(j.pushes[0].ts, ev.ts);
    /* a large group (more members than `after`): only the mentioned */
    pl_job jl;
    t_init(&t, &jl, PL_READ_PUSH_TARGETS);
    jl.ids = r;
    jl.nids = 4;
    jl.after = 5;                                /* crew has 6 members now */
    CHECK_EQ(t_read(&t, &jl), PL_STORE_OK);
    CHECK_EQ(jl.npushes, 1);
    CHECK_EQ(jl.pushes[0].user, c);
    CHECK_EQ(jl.pushes[0].seq, s2);
    CHECK_EQ(jl.pushes[0].mention, 1);
    pl_job_release(&jl);
    jl.after = 6;                                /* not above: as before */
    CHECK_EQ(t_read(&t, &jl), PL_STORE_OK);
    CHECK_EQ(jl.npushes, nwant);
    pl_job_release(&jl);
    pl_event_release(&ev);
    pl_job_release(&j);
    CHECK_EQ(t_push_targets(&t, &j, &r[3], 1), PL_STORE_OK);      /* deleted: nothing */
    CHECK_EQ(j.npushes, 0);
    pl_job_release(&j);

    /* a retry of s1 to bob's second device only; to no device: nothing */
    pl_push_retry rt[2] = {{.id = r[0], .devices = &db2, .ndevices = 1}, {.id = r[1], .ndevices = 0}};
    CHECK_EQ(t_push_done(&t, NULL, 0, NULL, 0, rt, 2, T_FAR), PL_STORE_OK);
    CHECK_EQ(t_push_targets(&t, &j, r, 2), PL_STORE_OK);
    CHECK_EQ(j.npushes, 1);
    CHECK_EQ(j.pushes[0].outbox, r[0]);
    CHECK_EQ(j.pushes[0].device, db2);
    pl_job_release(&j);
    /* a device unregistered or revoked later is not pushed to either */
    CHECK_EQ(t_revoke(&t, le), PL_STORE_OK);
    CHECK_EQ(t_push_unreg(&t, a, da), PL_STORE_OK);
    CHECK_EQ(t_push_targets(&t, &j, &r[2], 1), PL_STORE_OK);
    CHECK_EQ(j.npushes, 0);
    pl_job_release(&j);

    /* a ciphertext message: a notification without a body; a direct
     * conversation has no title */
    t_init(&t, &j, PL_JOB_DIRECT_OPEN);
    j.user = a;
    j.peer = b;
    CHECK_EQ(t_run1(&t, &j), PL_STORE_OK);
    int64_t dm = j.out_id;
    t_init(&t, &j, PL_JOB_CONV_E2EE);
    j.conv = dm;
    j.user = a;
    CHECK_EQ(t_run1(&t, &j), PL_STORE_OK);
    t_send_init(&t, &j, dm, a, "c1", "");
    j.ciphertext = "[{\"device\":1,\"type\":0,\"body\":\"Y2lwaGVy\"}]";
    CHECK_EQ(t_run1(&t, &j), PL_STORE_OK);
    CHECK_EQ(t_push_claim(&t, 100, T_FAR, r, 8), 1);
    CHECK_EQ(t_push_targets(&t, &j, r, 1), PL_STORE_OK);
    CHECK_EQ(j.npushes, 2);                                       /* bob's two devices */
    CHECK_EQ(j.pushes[0].user, b);
    CHECK(j.pushes[0].body == NULL);
    CHECK_EQ(j.pushes[0].body_len, 0);
    CHECK(j.pushes[0].title == NULL);
    CHECK_EQ(j.pushes[0].conv_kind, PL_CONV_DIRECT);
    CHECK_EQ(j.pushes[0].encrypted, 1);
    pl_job_release(&j);
    t_finish(&t);
    (void)dd;
    (void)df;
    (void)df2;
}

/* ---- workspaces and channels (store.h invariant 11) ---------------------- */

/* WORKSPACE_CREATE: the workspace's id (or the error), *general its channel. */
static int64_t t_ws(tstore *t, int64_t user, const char *name, int64_t *general) {
    pl_job j;
    t_init(t, &j, PL_JOB_WORKSPACE_CREATE);
    j.user = user;
    j.title = name;
    if (t_run(t, &j, 1) != 0) return -99;
    if (general) *general = j.has_event ? j.event.conv : 0;
    int64_t rc = j.result == PL_STORE_OK ? j.out_id : j.result;
    pl_job_release(&j);
    return rc;
}

/* WORKSPACE_ADD or WORKSPACE_REMOVE: the result; *created, *why. */
static int t_ws_op(tstore *t, pl_job_op op, int64_t ws, int64_t actor, int64_t peer, int *created,
                   const char **why) {
    pl_job j;
    t_init(t, &j, op);
    j.id = ws;
    j.user = actor;
    j.peer = peer;
    if (t_run(t, &j, 1) != 0) return -99;
    if (created) *created = j.created;
    if (why) *why = j.why;
    int rc = j.result;
    pl_job_release(&j);
    return rc;
}

/* WORKSPACE_REMOVE: the result; the channels listed, ascending, in out
 * (at most cap), their number in *n. */
static int t_ws_remove(tstore *t, int64_t ws, int64_t actor, int64_t peer, int64_t *out, size_t cap,
                       size_t *n) {
    pl_job j;
    t_init(t, &j, PL_JOB_WORKSPACE_REMOVE);
    j.id = ws;
    j.user = actor;
    j.peer = peer;
    if (t_run(t, &j, 1) != 0) return -99;
    *n = j.nout;
    for (size_t i = 0; i < j.nout && i < cap; i++) out[i] = j.out_ids[i];
    int rc = j.result;
    if (rc == PL_STORE_OK && j.has_event) rc = -98;            /* no event */
    pl_job_release(&j);
    return rc;
}

/* CHANNEL_CREATE: the channel's id, or the error with *why. */
static int64_t t_channel(tstore *t, int64_t ws, int64_t user, const char *name, const int64_t *m,
                         size_t n, int flags, const char **why) {
    pl_job j;
    t_init(t, &j, PL_JOB_CHANNEL_CREATE);
    j.id = ws;
    j.user = user;
    j.title = name;
    j.members = m;
    j.nmembers = n;
    j.flags = flags;
    if (t_run(t, &j, 1) != 0) return -99;
    if (why) *why = j.why;
    int64_t rc = j.result == PL_STORE_OK ? j.out_id : j.result;
    pl_job_release(&j);
    return rc;
}

/* CHANNEL_JOIN: the result; *created, *seq (the event's, 0: none). */
static int t_join(tstore *t, int64_t conv, int64_t user, int *created, int64_t *seq) {
    pl_job j;
    t_init(t, &j, PL_JOB_CHANNEL_JOIN);
    j.conv = conv;
    j.user = user;
    if (t_run(t, &j, 1) != 0) return -99;
    if (created) *created = j.created;
    if (seq) *seq = j.has_event ? j.event.seq : 0;
    int rc = j.result;
    if (rc == PL_STORE_OK && j.has_event && (j.event.kind != PL_EV_MEMBER_ADDED || j.event.sender != user ||
                                             j.event.subject != user || j.out_id != conv))
        rc = -97;
    pl_job_release(&j);
    return rc;
}

/* MEMBER_REMOVE with PL_JOB_EVICT: the result; *seq of its event. */
static int t_evict(tstore *t, int64_t conv, int64_t actor, int64_t peer, int64_t *seq) {
    pl_job j;
    t_init(t, &j, PL_JOB_MEMBER_REMOVE);
    j.conv = conv;
    j.user = actor;
    j.peer = peer;
    j.flags = PL_JOB_EVICT;
    if (t_run(t, &j, 1) != 0) return -99;
    if (seq) *seq = j.has_event ? j.event.seq : 0;
    int rc = j.result;
    if (rc == PL_STORE_OK && (!j.has_event || j.event.kind != PL_EV_MEMBER_REMOVED || j.event.sender != actor ||
                              j.event.subject != peer))
        rc = -97;
    pl_job_release(&j);
    return rc;
}

static int rd_workspaces(tstore *t, int64_t user, pl_workspace **list, size_t *n) {
    pl_job j;
    t_init(t, &j, PL_READ_WORKSPACES);
    j.user = user;
    int rc = t_read(t, &j);
    *list = j.workspaces;                      /* taken over */
    *n = j.nworkspaces;
    return rc;
}

/* WORKSPACE_GET: *w is the one workspace (pl_workspace_list_free(*w, 1)). */
static int rd_workspace(tstore *t, int64_t ws, int64_t user, pl_workspace **w) {
    pl_job j;
    t_init(t, &j, PL_READ_WORKSPACE_GET);
    j.id = ws;
    j.user = user;
    int rc = t_read(t, &j);
    *w = NULL;
    if (rc == PL_STORE_OK && j.nworkspaces != 1) rc = -98;
    if (rc == PL_STORE_OK) *w = j.workspaces;
    else pl_workspace_list_free(j.workspaces, j.nworkspaces);
    return rc;
}

/* CONV_WORKSPACE: the workspace of conv (0: not a channel), or -(error). */
static int64_t rd_conv_ws(tstore *t, int64_t conv) {
    pl_job j;
    t_init(t, &j, PL_READ_CONV_WORKSPACE);
    j.conv = conv;
    int rc = t_read(t, &j);
    int64_t ws = rc == PL_STORE_OK ? j.out_id : -(int64_t)(rc < 0 ? -rc : rc + 1000);
    pl_job_release(&j);
    return ws;
}

static int rd_channels(tstore *t, int64_t ws, int64_t user, pl_conv **list, size_t *n) {
    pl_job j;
    t_init(t, &j, PL_READ_CHANNELS);
    j.id = ws;
    j.user = user;
    int rc = t_read(t, &j);
    *list = j.convs;
    *n = j.nconvs;
    return rc;
}

/* user's role in the workspace (PL_ROLE_NONE: not in it), as it reads it */
static int rd_ws_role(tstore *t, int64_t ws, int64_t user) {
    pl_workspace *w;
    if (rd_workspace(t, ws, user, &w) != PL_STORE_OK) return PL_ROLE_NONE;
    int role = w->role;
    pl_workspace_list_free(w, 1);
    return role;
}

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

/* 1 if data (CREATED of a channel) says kind "channel", the title, the
 * members in that order, the workspace and the private flag. */
static int channel_data_is(const char *data, const char *title, const int64_t *m, size_t n, int64_t ws,
                           int priv) {
    json_error_t err;
    json_t *d = data ? json_loads(data, 0, &err) : NULL;
    json_t *mem = json_object_get(d, "members");
    int ok = json_is_object(d) && json_is_string(json_object_get(d, "kind")) &&
             strcmp(json_string_value(json_object_get(d, "kind")), "channel") == 0 &&
             json_is_string(json_object_get(d, "title")) &&
             strcmp(json_string_value(json_object_get(d, "title")), title) == 0 &&
             json_array_size(mem) == n && json_integer_value(json_object_get(d, "workspace")) == ws &&
             json_is_boolean(json_object_get(d, "private")) &&
             json_boolean_value(json_object_get(d, "private")) == (priv != 0);
    for (size_t i = 0; ok && i < n; i++) ok = json_integer_value(json_array_get(mem, i)) == m[i];
    json_decref(d);
    return ok;
}

TEST(store_ws_create_and_general) {
    tstore t;
    CHECK_EQ(t_open(&t), PL_STORE_OK);
    int64_t a = t_user(&t, "alice"), b = t_user(&t, "bob");
    pl_job j;
    t_init(&t, &j, PL_JOB_WORKSPACE_CREATE);
    j.user = a;
    j.title = "Acme \xc3\xa9quipe";
    CHECK_EQ(t_run(&t, &j, 1), 0);
    CHECK_EQ(j.result, PL_STORE_OK);
    int64_t w = j.out_id, gen = j.event.conv;
    int ok = w > 0 && j.has_event && gen > 0 && j.event.seq == 1 && j.event.kind == PL_EV_CREATED &&
             j.event.sender == a && channel_data_is(j.event.data, "general", &a, 1, w, 0);
    pl_job_release(&j);
    CHECK(ok);

    /* "general": a public channel of the workspace, its creator the admin */
    pl_conv cv;
    CHECK_EQ(rd_conv_get(&t, gen, a, &cv), PL_STORE_OK);
    ok = cv.kind == PL_CONV_CHANNEL && cv.title && strcmp(cv.title, "general") == 0 && cv.workspace == w &&
         cv.is_private == 0 && cv.role == PL_ROLE_ADMIN && cv.member_count == 1 && cv.last_seq == 1 &&
         cv.nmembers == 1 && cv.members[0].user == a && cv.joined_seq == 1;
    pl_conv_release(&cv);
    CHECK(ok);
    CHECK_EQ(rd_conv_get(&t, gen, b, &cv), PL_STORE_ENOTFOUND);

    pl_workspace *ws;
    size_t n;
    CHECK_EQ(rd_workspaces(&t, a, &ws, &n), PL_STORE_OK);
    ok = n == 1 && ws[0].id == w && ws[0].name && strcmp(ws[0].name, "Acme \xc3\xa9quipe") == 0 &&
         ws[0].created_by == a && ws[0].created > 0 && ws[0].general == gen && ws[0].member_count == 1 &&
         ws[0].channel_count == 1 && ws[0].role == PL_ROLE_ADMIN && ws[0].members == NULL;
    pl_workspace_list_free(ws, n);
    CHECK(ok);
    CHECK_EQ(rd_workspaces(&t, b, &ws, &n), PL_STORE_OK);
    pl_workspace_list_free(ws, n);
    CHECK_EQ(n, 0);

    /* names: 1..PL_WORKSPACE_NAME_MAX bytes of UTF-8; each workspace has a
     * "general" of its own */
    char name[PL_WORKSPACE_NAME_MAX + 2];
    memset(name, 'n', sizeof name);
    name[PL_WORKSPACE_NAME_MAX] = '\0';
    int64_t gen2 = 0, w2 = t_ws(&t, a, name, &gen2);
    CHECK(w2 > 0 && w2 != w);
    CHECK(gen2 > 0 && gen2 != gen);
    name[PL_WORKSPACE_NAME_MAX] = 'n';
    name[PL_WORKSPACE_NAME_MAX + 1] = '\0';
    CHECK_EQ(t_ws(&t, a, name, NULL), PL_STORE_EINVAL);
    CHECK_EQ(t_ws(&t, a, "", NULL), PL_STORE_EINVAL);
    CHECK_EQ(t_ws(&t, a, NULL, NULL), PL_STORE_EINVAL);
    CHECK_EQ(t_ws(&t, a, "bad \xff", NULL), PL_STORE_EINVAL);
    CHECK_EQ(t_ws(&t, 999, "nobody's", NULL), PL_STORE_ENOTFOUND);
    CHECK_EQ(rd_workspaces(&t, a, &ws, &n), PL_STORE_OK);
    ok = n == 2 && ws[0].id == w && ws[1].id == w2 && ws[1].general == gen2 && ws[1].channel_count == 1;
    pl_workspace_list_free(ws, n);
    CHECK(ok);
    CHECK_EQ(t_count_contiguous(&t, gen2), 1);
    t_finish(&t);
}

TEST(store_ws_add_joins_general) {
    tstore t;
    CHECK_EQ(t_open(&t), PL_STORE_OK);
    int64_t a = t_user(&t, "alice"), b = t_user(&t, "bob"), c = t_user(&t, "carol"),
            d = t_user(&t, "dave"), e = t_user(&t, "erin");
    int64_t gen = 0, w = t_ws(&t, a, "w", &gen);
    CHECK(w > 0);
    pl_job j;
    t_init(&t, &j, PL_JOB_WORKSPACE_ADD);
    j.id = w;
    j.user = a;
    j.peer = b;
    CHECK_EQ(t_run(&t, &j, 1), 0);
    CHECK_EQ(j.result, PL_STORE_OK);
    char want[32];
    snprintf(want, sizeof want, "{\"user\":%lld}", (long long)b);
    int ok = j.created == 1 && j.out_id == w && j.has_event && j.event.conv == gen &&
             j.event.kind == PL_EV_MEMBER_ADDED && j.event.seq == 2 && j.event.sender == a &&
             j.event.subject == b && j.event.data && strcmp(j.event.data, want) == 0;
    pl_job_release(&j);
    CHECK(ok);
    int created = -1;
    CHECK_EQ(t_ws_op(&t, PL_JOB_WORKSPACE_ADD, w, a, b, &created, NULL), PL_STORE_OK);
    CHECK_EQ(created, 0);                                   /* already: nothing */
    CHECK_EQ(t_last_seq(&t, gen, a), 2);
    CHECK_EQ(t_ws_op(&t, PL_JOB_WORKSPACE_ADD, w, b, c, NULL, NULL), PL_STORE_EFORBID);  /* not an admin */
    CHECK_EQ(t_ws_op(&t, PL_JOB_WORKSPACE_ADD, w, d, c, NULL, NULL), PL_STORE_ENOTFOUND); /* not in it */
    CHECK_EQ(t_ws_op(&t, PL_JOB_WORKSPACE_ADD, w, a, 999, NULL, NULL), PL_STORE_ENOTFOUND);
    CHECK_EQ(t_ws_op(&t, PL_JOB_WORKSPACE_ADD, 777, a, c, NULL, NULL), PL_STORE_ENOTFOUND);
    CHECK_EQ(rd_ws_role(&t, w, c), PL_ROLE_NONE);
    CHECK_EQ(t_last_seq(&t, gen, a), 2);

    /* three adds in one batch (one a no-op): consecutive seqs in general */
    pl_job k[3];
    int64_t peers[3] = {c, b, d};
    for (int i = 0; i < 3; i++) {
        t_init(&t, &k[i], PL_JOB_WORKSPACE_ADD);
        k[i].id = w;
        k[i].user = a;
        k[i].peer = peers[i];
    }
    CHECK_EQ(t_run(&t, k, 3), 0);
    ok = k[0].result == PL_STORE_OK && k[0].created && k[0].event.seq == 3 && k[0].event.subject == c &&
         k[1].result == PL_STORE_OK && !k[1].created && !k[1].has_event &&
         k[2].result == PL_STORE_OK && k[2].created && k[2].event.seq == 4 && k[2].event.subject == d;
    for (int i = 0; i < 3; i++) pl_job_release(&k[i]);
    CHECK(ok);
    CHECK_EQ(t_count_contiguous(&t, gen), 4);

    /* the joiner sees general from its MEMBER_ADDED on */
    pl_conv cv;
    CHECK_EQ(rd_conv_get(&t, gen, d, &cv), PL_STORE_OK);
    ok = cv.role == PL_ROLE_MEMBER && cv.joined_seq == 4 && cv.member_count == 4 && cv.unread == 0 &&
         cv.workspace == w;
    pl_conv_release(&cv);
    CHECK(ok);
    pl_event *ev;
    size_t n;
    CHECK_EQ(rd_events(&t, gen, d, 0, 0, 50, 0, &ev, &n, NULL), PL_STORE_OK);
    ok = n == 1 && ev[0].seq == 4 && ev[0].kind == PL_EV_MEMBER_ADDED && ev[0].subject == d;
    pl_event_list_free(ev, n);
    CHECK(ok);
    CHECK_EQ(t_send(&t, gen, a, "hello"), 5);
    CHECK_EQ(t_unread(&t, gen, d), 1);

    /* the members, in joining order */
    pl_workspace *ws;
    CHECK_EQ(rd_workspace(&t, w, b, &ws), PL_STORE_OK);
    ok = ws->id == w && ws->role == PL_ROLE_MEMBER && ws->member_count == 4 && ws->general == gen &&
         ws->nmembers == 4 && ws->members[0].user == a && ws->members[0].role == PL_ROLE_ADMIN &&
         strcmp(ws->members[0].username, "alice") == 0 && ws->members[1].user == b &&
         ws->members[1].role == PL_ROLE_MEMBER && strcmp(ws->members[1].username, "bob") == 0 &&
         ws->members[2].user == c && ws->members[3].user == d && strcmp(ws->members[3].username, "dave") == 0;
    pl_workspace_list_free(ws, 1);
    CHECK(ok);
    CHECK_EQ(rd_workspace(&t, w, e, &ws), PL_STORE_ENOTFOUND);          /* not in it */
    CHECK_EQ(rd_workspace(&t, 777, a, &ws), PL_STORE_ENOTFOUND);
    t_finish(&t);
}

TEST(store_ws_member_quota) {
    tstore t;
    memset(&t, 0, sizeof t);
    CHECK_EQ(t_open(&t), PL_STORE_OK);
    t.workspace_members = 3;
    CHECK_EQ(t_reopen(&t), PL_STORE_OK);
    int64_t a = t_user(&t, "alice"), b = t_user(&t, "bob"), c = t_user(&t, "carol"),
            d = t_user(&t, "dave");
    int64_t gen = 0, w = t_ws(&t, a, "w", &gen);
    CHECK(w > 0);
    CHECK_EQ(t_ws_op(&t, PL_JOB_WORKSPACE_ADD, w, a, b, NULL, NULL), PL_STORE_OK);
    /* the last place and one beyond it in one batch */
    pl_job k[2];
    for (int i = 0; i < 2; i++) {
        t_init(&t, &k[i], PL_JOB_WORKSPACE_ADD);
        k[i].id = w;
        k[i].user = a;
        k[i].peer = i ? d : c;
    }
    CHECK_EQ(t_run(&t, k, 2), 0);
    int ok = k[0].result == PL_STORE_OK && k[1].result == PL_STORE_EINVAL && k[1].why &&
             strcmp(k[1].why, "workspace full") == 0 && !k[1].has_event;
    for (int i = 0; i < 2; i++) pl_job_release(&k[i]);
    CHECK(ok);
    const char *why = NULL;
    CHECK_EQ(t_ws_op(&t, PL_JOB_WORKSPACE_ADD, w, a, d, NULL, &why), PL_STORE_EINVAL);
    CHECK_STR(why, "workspace full");
    CHECK_EQ(rd_ws_role(&t, w, d), PL_ROLE_NONE);
    CHECK_EQ(t_count_contiguous(&t, gen), 3);               /* b and c joined general */
    CHECK_EQ(t_ws_op(&t, PL_JOB_WORKSPACE_ADD, w, a, c, NULL, NULL), PL_STORE_OK);  /* already in: fine */
    /* a place freed is a place */
    size_t n = 0;
    int64_t out[4];
    CHECK_EQ(t_ws_remove(&t, w, c, c, out, 4, &n), PL_STORE_OK);
    CHECK_EQ(t_ws_op(&t, PL_JOB_WORKSPACE_ADD, w, a, d, NULL, NULL), PL_STORE_OK);
    CHECK_EQ(rd_ws_role(&t, w, d), PL_ROLE_MEMBER);
    pl_workspace *ws;
    CHECK_EQ(rd_workspace(&t, w, a, &ws), PL_STORE_OK);
    ok = ws->member_count == 3 && ws->nmembers == 3;
    pl_workspace_list_free(ws, 1);
    CHECK(ok);
    t_finish(&t);
}

/* Evictions while the user is still in the workspace (the first step of a
 * removal or a leave, store.h invariant 11): by a workspace admin, or by
 * the user itself; nobody else. */
TEST(store_ws_evict_by_admin_or_self) {
    tstore t;
    CHECK_EQ(t_open(&t), PL_STORE_OK);
    int64_t a = t_user(&t, "alice"), b = t_user(&t, "bob"), c = t_user(&t, "carol");
    int64_t gen = 0, w = t_ws(&t, a, "w", &gen);
    CHECK(w > 0);
    CHECK_EQ(t_ws_op(&t, PL_JOB_WORKSPACE_ADD, w, a, b, NULL, NULL), PL_STORE_OK);
    CHECK_EQ(t_ws_op(&t, PL_JOB_WORKSPACE_ADD, w, a, c, NULL, NULL), PL_STORE_OK);
    int64_t dev = t_channel(&t, w, b, "dev", &c, 1, 0, NULL);         /* b its admin, c in it */
    CHECK(dev > 0);
    CHECK_EQ(t_evict(&t, dev, b, c, NULL), PL_STORE_EFORBID);        /* the channel's admin: no */
    CHECK_EQ(t_evict(&t, gen, c, b, NULL), PL_STORE_EFORBID);
    CHECK_EQ(rd_role(&t, dev, c), PL_ROLE_MEMBER);
    int64_t seq = 0;
    CHECK_EQ(t_evict(&t, dev, a, c, &seq), PL_STORE_OK);             /* the workspace's admin */
    CHECK(seq > 0);
    CHECK_EQ(rd_role(&t, dev, c), PL_ROLE_NONE);
    CHECK_EQ(t_evict(&t, gen, b, b, NULL), PL_STORE_OK);             /* itself */
    CHECK_EQ(rd_role(&t, gen, b), PL_ROLE_NONE);
    CHECK_EQ(rd_ws_role(&t, w, b), PL_ROLE_MEMBER);                  /* still in the workspace */
    t_finish(&t);
}

TEST(store_ws_remove_lists_channels_and_evict) {
    tstore t;
    CHECK_EQ(t_open(&t), PL_STORE_OK);
    int64_t a = t_user(&t, "alice"), b = t_user(&t, "bob"), c = t_user(&t, "carol"),
            d = t_user(&t, "dave");
    int64_t gen = 0, w = t_ws(&t, a, "w", &gen);
    CHECK(w > 0);
    CHECK_EQ(t_ws_op(&t, PL_JOB_WORKSPACE_ADD, w, a, b, NULL, NULL), PL_STORE_OK);
    CHECK_EQ(t_ws_op(&t, PL_JOB_WORKSPACE_ADD, w, a, c, NULL, NULL), PL_STORE_OK);
    int64_t dev = t_channel(&t, w, a, "dev", &b, 1, 0, NULL);
    int64_t secret = t_channel(&t, w, a, "secret", &b, 1, PL_JOB_PRIVATE, NULL);
    int64_t ops = t_channel(&t, w, a, "ops", NULL, 0, 0, NULL);           /* b is not in it */
    CHECK(dev > 0 && secret > 0 && ops > 0);
    int64_t g = t_group(&t, a, "plain group", &b, 1);
    CHECK(g > 0);

    /* only an admin removes another; outsiders and non-members: ENOTFOUND */
    int64_t out[8];
    size_t n = 99;
    CHECK_EQ(t_ws_remove(&t, w, c, b, out, 8, &n), PL_STORE_EFORBID);
    CHECK_EQ(t_ws_remove(&t, w, d, b, out, 8, &n), PL_STORE_ENOTFOUND);
    CHECK_EQ(t_ws_remove(&t, w, a, d, out, 8, &n), PL_STORE_ENOTFOUND);
    CHECK_EQ(t_ws_remove(&t, 777, a, b, out, 8, &n), PL_STORE_ENOTFOUND);
    CHECK_EQ(rd_ws_role(&t, w, b), PL_ROLE_MEMBER);

    /* a removal lists the channels b is still in, ascending, private ones too */
    int64_t want[3] = {gen, dev, secret};
    qsort(want, 3, sizeof want[0], cmp_i64);
    CHECK_EQ(t_ws_remove(&t, w, a, b, out, 8, &n), PL_STORE_OK);
    CHECK_EQ(n, 3);
    for (int i = 0; i < 3; i++) CHECK_EQ(out[i], want[i]);
    CHECK_EQ(rd_ws_role(&t, w, b), PL_ROLE_NONE);
    pl_workspace *ws;
    CHECK_EQ(rd_workspace(&t, w, b, &ws), PL_STORE_ENOTFOUND);
    CHECK_EQ(rd_ws_role(&t, w, a), PL_ROLE_ADMIN);
    CHECK_EQ(rd_role(&t, gen, b), PL_ROLE_MEMBER);      /* until the caller evicts it */
    /* out already, evictions pending: a repeated removal lists them again,
     * a leave by b itself finds nothing */
    n = 0;
    CHECK_EQ(t_ws_remove(&t, w, a, b, out, 8, &n), PL_STORE_OK);
    CHECK_EQ(n, 3);
    for (int i = 0; i < 3; i++) CHECK_EQ(out[i], want[i]);
    CHECK_EQ(t_ws_remove(&t, w, b, b, out, 8, &n), PL_STORE_ENOTFOUND);

    /* eviction: only from a channel, only someone out of its workspace; the
     * actor's membership and role are not checked */
    int64_t seq = 0, last = t_last_seq(&t, gen, a);
    CHECK_EQ(t_evict(&t, gen, b, c, NULL), PL_STORE_EFORBID);        /* c is in the workspace, b no admin */
    CHECK_EQ(t_evict(&t, g, a, b, NULL), PL_STORE_EFORBID);          /* a group */
    CHECK_EQ(t_evict(&t, ops, a, b, NULL), PL_STORE_EFORBID);        /* b is not in it */
    CHECK_EQ(t_evict(&t, gen, a, b, &seq), PL_STORE_OK);
    CHECK_EQ(seq, last + 1);
    CHECK_EQ(rd_role(&t, gen, b), PL_ROLE_NONE);
    CHECK_EQ(t_evict(&t, gen, a, b, NULL), PL_STORE_EFORBID);        /* done */
    CHECK_EQ(t_evict(&t, dev, d, b, NULL), PL_STORE_OK);             /* d: no member of anything */
    CHECK_EQ(t_evict(&t, secret, c, b, NULL), PL_STORE_OK);          /* c: not in secret */
    CHECK_EQ(rd_role(&t, dev, b), PL_ROLE_NONE);
    CHECK_EQ(rd_role(&t, secret, b), PL_ROLE_NONE);
    CHECK_EQ(rd_role(&t, secret, a), PL_ROLE_ADMIN);
    CHECK_EQ(rd_role(&t, g, b), PL_ROLE_MEMBER);                     /* groups are not touched */
    CHECK_EQ(t_ws_remove(&t, w, a, b, out, 8, &n), PL_STORE_ENOTFOUND);   /* nothing left */
    pl_event *ev;
    CHECK_EQ(rd_events(&t, dev, a, 0, 0, 50, 1, &ev, &n, NULL), PL_STORE_OK);
    int ok = n >= 1 && ev[n - 1].kind == PL_EV_MEMBER_REMOVED && ev[n - 1].sender == d &&
             ev[n - 1].subject == b;
    pl_event_list_free(ev, n);
    CHECK(ok);
    CHECK_EQ(t_ws_remove(&t, w, a, b, out, 8, &n), PL_STORE_ENOTFOUND);

    /* a leave lists its channels too; a member may leave */
    CHECK_EQ(t_ws_remove(&t, w, c, c, out, 8, &n), PL_STORE_OK);
    CHECK_EQ(n, 1);
    CHECK_EQ(out[0], gen);
    CHECK_EQ(rd_ws_role(&t, w, c), PL_ROLE_NONE);
    /* back in: the workspace and general again, not the channels it had */
    CHECK_EQ(t_evict(&t, gen, a, c, NULL), PL_STORE_OK);
    CHECK_EQ(t_ws_op(&t, PL_JOB_WORKSPACE_ADD, w, a, b, NULL, NULL), PL_STORE_OK);
    CHECK_EQ(rd_role(&t, gen, b), PL_ROLE_MEMBER);
    CHECK_EQ(rd_role(&t, dev, b), PL_ROLE_NONE);
    CHECK_EQ(t_evict(&t, gen, c, b, NULL), PL_STORE_EFORBID);        /* in the workspace again */
    t_finish(&t);
}

TEST(store_ws_leave_promotes_admin) {
    tstore t;
    CHECK_EQ(t_open(&t), PL_STORE_OK);
    int64_t a = t_user(&t, "alice"), b = t_user(&t, "bob"), c = t_user(&t, "carol");
    int64_t gen = 0, w = t_ws(&t, a, "w", &gen);
    CHECK(w > 0);
    CHECK_EQ(t_ws_op(&t, PL_JOB_WORKSPACE_ADD, w, a, c, NULL, NULL), PL_STORE_OK);   /* c before b */
    CHECK_EQ(t_ws_op(&t, PL_JOB_WORKSPACE_ADD, w, a, b, NULL, NULL), PL_STORE_OK);
    int64_t out[4];
    size_t n = 0;
    CHECK_EQ(t_ws_remove(&t, w, b, b, out, 4, &n), PL_STORE_OK);      /* a member leaving: no change */
    CHECK_EQ(rd_ws_role(&t, w, a), PL_ROLE_ADMIN);
    CHECK_EQ(rd_ws_role(&t, w, c), PL_ROLE_MEMBER);
    CHECK_EQ(t_ws_op(&t, PL_JOB_WORKSPACE_ADD, w, a, b, NULL, NULL), PL_STORE_OK);   /* b last again */
    CHECK_EQ(t_ws_remove(&t, w, a, a, out, 4, &n), PL_STORE_OK);      /* the only admin leaves */
    CHECK_EQ(n, 1);
    CHECK_EQ(out[0], gen);
    CHECK_EQ(rd_ws_role(&t, w, c), PL_ROLE_ADMIN);                     /* earliest-joined */
    CHECK_EQ(rd_ws_role(&t, w, b), PL_ROLE_MEMBER);
    pl_workspace *ws;
    CHECK_EQ(rd_workspace(&t, w, c, &ws), PL_STORE_OK);
    int ok = ws->member_count == 2 && ws->nmembers == 2 && ws->members[0].user == c &&
             ws->members[0].role == PL_ROLE_ADMIN && ws->members[1].user == b;
    pl_workspace_list_free(ws, 1);
    CHECK(ok);
    CHECK_EQ(t_ws_op(&t, PL_JOB_WORKSPACE_ADD, w, c, a, NULL, NULL), PL_STORE_OK);   /* c can add now */
    CHECK_EQ(rd_ws_role(&t, w, a), PL_ROLE_MEMBER);
    t_finish(&t);
}

TEST(store_channel_create_rules) {
    tstore t;
    CHECK_EQ(t_open(&t), PL_STORE_OK);
    int64_t a = t_user(&t, "alice"), b = t_user(&t, "bob"), c = t_user(&t, "carol");
    int64_t gen = 0, w = t_ws(&t, a, "w", &gen), w2 = t_ws(&t, a, "w2", NULL);
    CHECK(w > 0 && w2 > 0);
    CHECK_EQ(t_ws_op(&t, PL_JOB_WORKSPACE_ADD, w, a, b, NULL, NULL), PL_STORE_OK);

    int64_t m[] = {b, a, b};                      /* duplicates and the creator */
    pl_job j;
    t_init(&t, &j, PL_JOB_CHANNEL_CREATE);
    j.id = w;
    j.user = a;
    j.title = "dev";
    j.members = m;
    j.nmembers = 3;
    CHECK_EQ(t_run(&t, &j, 1), 0);
    CHECK_EQ(j.result, PL_STORE_OK);
    int64_t dev = j.out_id, both[] = {a, b};
    int ok = dev > 0 && dev != gen && j.has_event && j.event.conv == dev && j.event.seq == 1 &&
             j.event.kind == PL_EV_CREATED && j.event.sender == a &&
             channel_data_is(j.event.data, "dev", both, 2, w, 0);
    pl_job_release(&j);
    CHECK(ok);
    pl_conv cv;
    CHECK_EQ(rd_conv_get(&t, dev, b, &cv), PL_STORE_OK);
    ok = cv.kind == PL_CONV_CHANNEL && strcmp(cv.title, "dev") == 0 && cv.workspace == w && !cv.is_private &&
         cv.role == PL_ROLE_MEMBER && cv.nmembers == 2 && cv.members[0].user == a &&
         cv.members[0].role == PL_ROLE_ADMIN && cv.members[1].user == b && cv.joined_seq == 1;
    pl_conv_release(&cv);
    CHECK(ok);

    /* names: pl_store__channel_name_ok */
    const char *why = NULL;
    const char *bad[] = {"Dev", "", "two words", "tab\t", "a/b", "#dev", "caf\xc3", NULL};
    for (int i = 0; bad[i]; i++) {
        why = NULL;
        CHECK_EQ(t_channel(&t, w, a, bad[i], NULL, 0, 0, &why), PL_STORE_EINVAL);
        CHECK_STR(why, "bad channel name");
    }
    CHECK_EQ(t_channel(&t, w, a, NULL, NULL, 0, 0, &why), PL_STORE_EINVAL);
    char name[PL_CHANNEL_NAME_MAX + 2];
    memset(name, 'x', sizeof name);
    name[PL_CHANNEL_NAME_MAX + 1] = '\0';
    CHECK_EQ(t_channel(&t, w, a, name, NULL, 0, 0, &why), PL_STORE_EINVAL);
    name[PL_CHANNEL_NAME_MAX] = '\0';
    CHECK(t_channel(&t, w, a, name, NULL, 0, 0, NULL) > 0);
    CHECK(t_channel(&t, w, a, "caf\xc3\xa9-2_0.x", NULL, 0, 0, NULL) > 0);   /* non-ASCII letters */

    /* unique in the workspace, not across workspaces */
    CHECK_EQ(t_channel(&t, w, a, "dev", NULL, 0, 0, NULL), PL_STORE_ECONFLICT);
    CHECK_EQ(t_channel(&t, w, b, "general", NULL, 0, 0, NULL), PL_STORE_ECONFLICT);
    CHECK_EQ(t_channel(&t, w, a, "dev", NULL, 0, PL_JOB_PRIVATE, NULL), PL_STORE_ECONFLICT);
    int64_t dev2 = t_channel(&t, w2, a, "dev", NULL, 0, 0, NULL);
    CHECK(dev2 > 0 && dev2 != dev);

    /* members: only the workspace's; the creator must be in it */
    int64_t mc[] = {b, c};
    why = NULL;
    CHECK_EQ(t_channel(&t, w, a, "with-carol", mc, 2, 0, &why), PL_STORE_EFORBID);
    CHECK_STR(why, "not in the workspace");
    CHECK_EQ(t_channel(&t, w2, a, "with-bob", &b, 1, 0, &why), PL_STORE_EFORBID);   /* b: not in w2 */
    CHECK_EQ(t_channel(&t, w, c, "carols", NULL, 0, 0, NULL), PL_STORE_ENOTFOUND);
    CHECK_EQ(t_channel(&t, 777, a, "nowhere", NULL, 0, 0, NULL), PL_STORE_ENOTFOUND);
    pl_conv *list;
    size_t n;
    CHECK_EQ(rd_conv_list(&t, c, 0, &list, &n), PL_STORE_OK);     /* nothing was created for c */
    pl_conv_list_free(list, n);
    CHECK_EQ(n, 0);

    /* any member of the workspace creates channels; private ones */
    t_init(&t, &j, PL_JOB_CHANNEL_CREATE);
    j.id = w;
    j.user = b;
    j.title = "secret";
    j.members = &a;
    j.nmembers = 1;
    j.flags = PL_JOB_PRIVATE;
    CHECK_EQ(t_run(&t, &j, 1), 0);
    int64_t ba[] = {b, a};
    ok = j.result == PL_STORE_OK && channel_data_is(j.event.data, "secret", ba, 2, w, 1);
    int64_t secret = j.out_id;
    pl_job_release(&j);
    CHECK(ok);
    CHECK_EQ(rd_conv_get(&t, secret, a, &cv), PL_STORE_OK);
    ok = cv.is_private == 1 && cv.workspace == w && cv.role == PL_ROLE_MEMBER && cv.kind == PL_CONV_CHANNEL;
    pl_conv_release(&cv);
    CHECK(ok);
    CHECK_EQ(rd_role(&t, secret, b), PL_ROLE_ADMIN);
    pl_workspace *ws;
    CHECK_EQ(rd_workspace(&t, w, a, &ws), PL_STORE_OK);
    ok = ws->channel_count == 5;            /* general, dev, xxx.., café.., secret */
    pl_workspace_list_free(ws, 1);
    CHECK(ok);
    t_finish(&t);
}

/* Runs sql on the store's database from a connection of its own (the
 * store stays open: SQLite's WAL lets a second writer in between batches).
 * The number of rows changed, or -1. */
static int t_sql_changes(tstore *t, const char *sql) {
    if (t_backend()) {
        PGconn *c = PQconnectdb(t->url);
        PGresult *r = PQexec(c, sql);
        int n = PQresultStatus(r) == PGRES_COMMAND_OK ? atoi(PQcmdTuples(r)) : -1;
        PQclear(r);
        PQfinish(c);
        return n;
    }
    char p[160];
    snprintf(p, sizeof p, "%s/parley.db", t->dir);
    sqlite3 *db;
    if (sqlite3_open_v2(p, &db, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK) return -1;
    sqlite3_busy_timeout(db, 5000);
    int n = sqlite3_exec(db, sql, NULL, NULL, NULL) == SQLITE_OK ? sqlite3_changes(db) : -1;
    sqlite3_close(db);
    return n;
}

/* A name that looks like another channel's is a conflict (audit Y3), also
 * against channels made before the keys were kept (name_key NULL); two
 * all-ASCII names are told apart as typed. */
TEST(store_channel_lookalike_names) {
    tstore t;
    CHECK_EQ(t_open(&t), PL_STORE_OK);
    int64_t a = t_user(&t, "alice");
    int64_t ws = t_ws(&t, a, "Acme", NULL);
    CHECK(ws > 0);
    const char *why = NULL;
    CHECK(t_channel(&t, ws, a, "caf\xc3\xa9", NULL, 0, 0, NULL) > 0);
    CHECK_EQ(t_channel(&t, ws, a, "cafe\xcc\x81", NULL, 0, 0, &why), PL_STORE_ECONFLICT);
    CHECK_STR(why, "the name looks like another channel's");
    CHECK_EQ(t_channel(&t, ws, a, "g\xd0\xb5" "neral", NULL, 0, 0, &why), PL_STORE_ECONFLICT);
    CHECK(t_channel(&t, ws, a, "team1", NULL, 0, 0, NULL) > 0);
    CHECK(t_channel(&t, ws, a, "teaml", NULL, 0, 0, NULL) > 0);
    /* as if made by an older parleyd: no keys */
    CHECK_EQ(t_sql_changes(&t, "UPDATE conversations SET name_key = NULL WHERE kind = 3"), 4);
    CHECK_EQ(t_channel(&t, ws, a, "cafe\xcc\x81", NULL, 0, 0, &why), PL_STORE_ECONFLICT);
    CHECK_EQ(t_channel(&t, ws, a, "\xef\xbd\x87" "eneral", NULL, 0, 0, &why), PL_STORE_ECONFLICT);
    CHECK(t_channel(&t, ws, a, "random", NULL, 0, 0, NULL) > 0);
    /* SQLite writes the keys it worked out back; PostgreSQL leaves them
     * (store_pg_ws.c: no conversation row locked out of order) */
    CHECK_EQ(t_sql_changes(&t, "UPDATE conversations SET title = title WHERE kind = 3 AND name_key IS NULL"),
             t_backend() ? 4 : 0);
    t_finish(&t);
}

TEST(store_channel_quota) {
    tstore t;
    memset(&t, 0, sizeof t);
    CHECK_EQ(t_open(&t), PL_STORE_OK);
    t.workspace_channels = 3;
    CHECK_EQ(t_reopen(&t), PL_STORE_OK);
    int64_t a = t_user(&t, "alice");
    int64_t w = t_ws(&t, a, "w", NULL), w2 = t_ws(&t, a, "w2", NULL);   /* general counts */
    CHECK(w > 0 && w2 > 0);
    CHECK(t_channel(&t, w, a, "one", NULL, 0, 0, NULL) > 0);
    /* the last place and one beyond it in one batch; private ones count */
    pl_job k[2];
    const char *names[2] = {"two", "three"};
    for (int i = 0; i < 2; i++) {
        t_init(&t, &k[i], PL_JOB_CHANNEL_CREATE);
        k[i].id = w;
        k[i].user = a;
        k[i].title = names[i];
        k[i].flags = PL_JOB_PRIVATE;
    }
    CHECK_EQ(t_run(&t, k, 2), 0);
    int ok = k[0].result == PL_STORE_OK && k[1].result == PL_STORE_EINVAL && k[1].why &&
             strcmp(k[1].why, "too many channels") == 0 && !k[1].has_event;
    for (int i = 0; i < 2; i++) pl_job_release(&k[i]);
    CHECK(ok);
    const char *why = NULL;
    CHECK_EQ(t_channel(&t, w, a, "four", NULL, 0, 0, &why), PL_STORE_EINVAL);
    CHECK_STR(why, "too many channels");
    CHECK(t_channel(&t, w2, a, "three", NULL, 0, 0, NULL) > 0);        /* per workspace */
    pl_conv *list;
    size_t n;
    CHECK_EQ(rd_channels(&t, w, a, &list, &n), PL_STORE_OK);
    pl_conv_list_free(list, n);
    CHECK_EQ(n, 3);
    t_finish(&t);
}

TEST(store_channel_join_and_visibility) {
    tstore t;
    CHECK_EQ(t_open(&t), PL_STORE_OK);
    int64_t a = t_user(&t, "alice"), b = t_user(&t, "bob"), c = t_user(&t, "carol");
    int64_t gen = 0, w = t_ws(&t, a, "w", &gen);
    CHECK(w > 0);
    CHECK_EQ(t_ws_op(&t, PL_JOB_WORKSPACE_ADD, w, a, b, NULL, NULL), PL_STORE_OK);
    int64_t pub = t_channel(&t, w, a, "pub", NULL, 0, 0, NULL);
    int64_t priv = t_channel(&t, w, a, "priv", NULL, 0, PL_JOB_PRIVATE, NULL);
    int64_t g = t_group(&t, a, "g", NULL, 0);
    CHECK(pub > 0 && priv > 0 && g > 0);
    CHECK_EQ(t_send(&t, pub, a, "before-1"), 2);
    CHECK_EQ(t_send(&t, pub, a, "before-2"), 3);

    int created = -1;
    int64_t seq = -1;
    CHECK_EQ(t_join(&t, pub, b, &created, &seq), PL_STORE_OK);
    CHECK_EQ(created, 1);
    CHECK_EQ(seq, 4);
    CHECK_EQ(t_join(&t, pub, b, &created, &seq), PL_STORE_OK);        /* already: nothing */
    CHECK_EQ(created, 0);
    CHECK_EQ(seq, 0);
    CHECK_EQ(t_join(&t, priv, b, NULL, NULL), PL_STORE_ENOTFOUND);     /* private */
    CHECK_EQ(t_join(&t, pub, c, NULL, NULL), PL_STORE_ENOTFOUND);      /* not in the workspace */
    CHECK_EQ(t_join(&t, g, b, NULL, NULL), PL_STORE_ENOTFOUND);        /* a group */
    CHECK_EQ(t_join(&t, 777, b, NULL, NULL), PL_STORE_ENOTFOUND);
    CHECK_EQ(rd_role(&t, priv, b), PL_ROLE_NONE);
    CHECK_EQ(t_count_contiguous(&t, pub), 4);

    /* the joiner sees the channel from its MEMBER_ADDED on (invariant 4),
     * and its unread count starts there (invariant 5) */
    pl_conv cv;
    CHECK_EQ(rd_conv_get(&t, pub, b, &cv), PL_STORE_OK);
    int ok = cv.role == PL_ROLE_MEMBER && cv.joined_seq == 4 && cv.unread == 0 && cv.member_count == 2;
    pl_conv_release(&cv);
    CHECK(ok);
    CHECK_EQ(t_send(&t, pub, a, "after"), 5);
    CHECK_EQ(t_unread(&t, pub, b), 1);
    pl_event *ev;
    size_t n;
    CHECK_EQ(rd_events(&t, pub, b, 0, 0, 50, 0, &ev, &n, NULL), PL_STORE_OK);
    ok = n == 2 && ev[0].seq == 4 && ev[0].kind == PL_EV_MEMBER_ADDED && ev[0].sender == b &&
         ev[0].subject == b && ev[1].seq == 5 && ev[1].body && strcmp(ev[1].body, "after") == 0;
    pl_event_list_free(ev, n);
    CHECK(ok);
    CHECK_EQ(t_send(&t, pub, b, "mine"), 6);                           /* a member now */
    CHECK_EQ(t_unread(&t, pub, a), 1);

    /* several joins in one batch: consecutive seqs */
    CHECK_EQ(t_ws_op(&t, PL_JOB_WORKSPACE_ADD, w, a, c, NULL, NULL), PL_STORE_OK);
    int64_t pub2 = t_channel(&t, w, a, "pub2", NULL, 0, 0, NULL);
    pl_job k[3];
    int64_t who[3] = {c, b, c};
    int64_t where[3] = {pub, pub2, pub2};
    for (int i = 0; i < 3; i++) {
        t_init(&t, &k[i], PL_JOB_CHANNEL_JOIN);
        k[i].conv = where[i];
        k[i].user = who[i];
    }
    CHECK_EQ(t_run(&t, k, 3), 0);
    ok = k[0].result == PL_STORE_OK && k[0].event.seq == 7 && k[1].result == PL_STORE_OK &&
         k[1].event.seq == 2 && k[2].result == PL_STORE_OK && k[2].event.seq == 3 && k[2].created == 1;
    for (int i = 0; i < 3; i++) pl_job_release(&k[i]);
    CHECK(ok);
    CHECK_EQ(t_count_contiguous(&t, pub2), 3);
    t_finish(&t);
}

TEST(store_channel_member_add_needs_workspace) {
    tstore t;
    CHECK_EQ(t_open(&t), PL_STORE_OK);
    int64_t a = t_user(&t, "alice"), b = t_user(&t, "bob"), c = t_user(&t, "carol");
    int64_t w = t_ws(&t, a, "w", NULL);
    CHECK(w > 0);
    CHECK_EQ(t_ws_op(&t, PL_JOB_WORKSPACE_ADD, w, a, b, NULL, NULL), PL_STORE_OK);
    int64_t priv = t_channel(&t, w, a, "priv", NULL, 0, PL_JOB_PRIVATE, NULL);
    CHECK(priv > 0);
    pl_job j;
    t_init(&t, &j, PL_JOB_MEMBER_ADD);
    j.conv = priv;
    j.user = a;
    j.peer = c;
    CHECK_EQ(t_run(&t, &j, 1), 0);
    int ok = j.result == PL_STORE_EFORBID && j.why && strcmp(j.why, "not in the workspace") == 0 &&
             !j.has_event;
    pl_job_release(&j);
    CHECK(ok);
    CHECK_EQ(rd_role(&t, priv, c), PL_ROLE_NONE);
    CHECK_EQ(t_last_seq(&t, priv, a), 1);
    /* a workspace member: added as to a group (admins only) */
    int ev = -1;
    CHECK_EQ(t_member_op(&t, PL_JOB_MEMBER_ADD, priv, a, b, &ev), PL_STORE_OK);
    CHECK_EQ(ev, 1);
    CHECK_EQ(t_member_op(&t, PL_JOB_MEMBER_ADD, priv, a, b, &ev), PL_STORE_OK);
    CHECK_EQ(ev, 0);
    CHECK_EQ(rd_role(&t, priv, b), PL_ROLE_MEMBER);
    CHECK_EQ(t_ws_op(&t, PL_JOB_WORKSPACE_ADD, w, a, c, NULL, NULL), PL_STORE_OK);
    CHECK_EQ(t_member_op(&t, PL_JOB_MEMBER_ADD, priv, b, c, NULL), PL_STORE_EFORBID);  /* b: no admin */
    CHECK_EQ(t_member_op(&t, PL_JOB_MEMBER_ADD, priv, a, c, &ev), PL_STORE_OK);
    CHECK_EQ(ev, 1);
    CHECK_EQ(rd_role(&t, priv, c), PL_ROLE_MEMBER);
    /* out of the workspace: not added back */
    int64_t out[4];
    size_t n;
    CHECK_EQ(t_ws_remove(&t, w, a, c, out, 4, &n), PL_STORE_OK);
    CHECK_EQ(t_evict(&t, priv, a, c, NULL), PL_STORE_OK);
    CHECK_EQ(t_member_op(&t, PL_JOB_MEMBER_ADD, priv, a, c, NULL), PL_STORE_EFORBID);
    CHECK_EQ(t_count_contiguous(&t, priv), 4);                 /* created, b, c added, c removed */
    t_finish(&t);
}

static int conv_has_title(const pl_conv *x, const char *title) { return x->title && strcmp(x->title, title) == 0; }

TEST(store_channel_reads) {
    tstore t;
    CHECK_EQ(t_open(&t), PL_STORE_OK);
    int64_t a = t_user(&t, "alice"), b = t_user(&t, "bob"), c = t_user(&t, "carol");
    int64_t gen = 0, w = t_ws(&t, a, "w", &gen), gen2 = 0, w2 = t_ws(&t, b, "w2", &gen2);
    CHECK(w > 0 && w2 > 0);
    CHECK_EQ(t_ws_op(&t, PL_JOB_WORKSPACE_ADD, w, a, b, NULL, NULL), PL_STORE_OK);
    int64_t zeta = t_channel(&t, w, a, "zeta", NULL, 0, 0, NULL);                 /* b not in it */
    int64_t mine = t_channel(&t, w, a, "b-private", &b, 1, PL_JOB_PRIVATE, NULL);
    int64_t hidden = t_channel(&t, w, a, "a-private", NULL, 0, PL_JOB_PRIVATE, NULL);
    int64_t alpha = t_channel(&t, w, b, "alpha", NULL, 0, 0, NULL);
    CHECK(zeta > 0 && mine > 0 && hidden > 0 && alpha > 0);
    CHECK_EQ(t_send(&t, zeta, a, "z1"), 2);
    CHECK_EQ(t_send(&t, zeta, a, "z2"), 3);

    /* CHANNELS: public ones and b's private ones, by name; b's role or NONE */
    pl_conv *list;
    size_t n;
    CHECK_EQ(rd_channels(&t, w, b, &list, &n), PL_STORE_OK);
    int ok = n == 4 && conv_has_title(&list[0], "alpha") && conv_has_title(&list[1], "b-private") &&
             conv_has_title(&list[2], "general") && conv_has_title(&list[3], "zeta");
    for (size_t i = 0; ok && i < n; i++)
        ok = list[i].kind == PL_CONV_CHANNEL && list[i].workspace == w && list[i].members == NULL;
    ok = ok && list[0].id == alpha && list[0].role == PL_ROLE_ADMIN && !list[0].is_private &&
         list[1].id == mine && list[1].role == PL_ROLE_MEMBER && list[1].is_private == 1 &&
         list[1].member_count == 2 && list[2].id == gen && list[2].role == PL_ROLE_MEMBER &&
         list[2].joined_seq == 2 && list[3].id == zeta && list[3].role == PL_ROLE_NONE &&
         list[3].last_seq == 3 && list[3].last_ts > 0 && list[3].member_count == 1 && list[3].unread == 0 &&
         list[3].joined_seq == 0 && list[3].read_seq == 0 && list[3].unread_mentions == 0;
    pl_conv_list_free(list, n);
    CHECK(ok);
    /* a sees its own private one, not b's unless in it (it is) */
    CHECK_EQ(rd_channels(&t, w, a, &list, &n), PL_STORE_OK);
    ok = n == 5 && conv_has_title(&list[0], "a-private") && list[0].role == PL_ROLE_ADMIN &&
         conv_has_title(&list[1], "alpha") && list[1].role == PL_ROLE_NONE && list[4].id == zeta &&
         list[4].unread == 0 && list[4].role == PL_ROLE_ADMIN;
    pl_conv_list_free(list, n);
    CHECK(ok);
    CHECK_EQ(rd_channels(&t, w, c, &list, &n), PL_STORE_ENOTFOUND);   /* not in the workspace */
    pl_conv_list_free(list, n);
    CHECK_EQ(rd_channels(&t, 777, a, &list, &n), PL_STORE_ENOTFOUND);
    pl_conv_list_free(list, n);
    CHECK_EQ(rd_channels(&t, w2, a, &list, &n), PL_STORE_ENOTFOUND);
    pl_conv_list_free(list, n);
    /* a private channel is invisible to others, as one that does not exist */
    pl_conv cv;
    CHECK_EQ(rd_conv_get(&t, hidden, b, &cv), PL_STORE_ENOTFOUND);
    /* CONV_WORKSPACE: a channel's workspace, private ones too; else 0 */
    CHECK_EQ(rd_conv_ws(&t, zeta), w);
    CHECK_EQ(rd_conv_ws(&t, hidden), w);
    CHECK_EQ(rd_conv_ws(&t, gen2), w2);
    int64_t plain = t_group(&t, a, "g", &c, 1);
    CHECK(plain > 0);
    CHECK_EQ(rd_conv_ws(&t, plain), 0);
    CHECK_EQ(rd_conv_ws(&t, 987654321), 0);

    /* WORKSPACES: b's, by id, with its role and the counts */
    pl_workspace *ws;
    CHECK_EQ(rd_workspaces(&t, b, &ws, &n), PL_STORE_OK);
    ok = n == 2 && ws[0].id == w && ws[0].role == PL_ROLE_MEMBER && ws[0].member_count == 2 &&
         ws[0].channel_count == 5 && ws[0].general == gen && ws[0].created_by == a && ws[0].name &&
         strcmp(ws[0].name, "w") == 0 && ws[1].id == w2 && ws[1].role == PL_ROLE_ADMIN &&
         ws[1].member_count == 1 && ws[1].channel_count == 1 && ws[1].general == gen2 &&
         ws[1].created_by == b;
    pl_workspace_list_free(ws, n);
    CHECK(ok);

    /* every conversation object carries its workspace and private flag */
    int64_t grp = t_group(&t, a, "grp", &b, 1);
    CHECK(grp > 0);
    CHECK_EQ(rd_conv_list(&t, b, PL_READ_WITH_LAST, &list, &n), PL_STORE_OK);
    int seen = 0;
    ok = n == 5;                                   /* general, general2, b-private, alpha, grp */
    for (size_t i = 0; i < n; i++) {
        if (list[i].id == mine) seen++, ok = ok && list[i].workspace == w && list[i].is_private == 1;
        if (list[i].id == gen2) seen++, ok = ok && list[i].workspace == w2 && !list[i].is_private &&
                                              list[i].kind == PL_CONV_CHANNEL;
        if (list[i].id == grp) seen++, ok = ok && list[i].workspace == 0 && !list[i].is_private &&
                                             list[i].kind == PL_CONV_GROUP;
    }
    pl_conv_list_free(list, n);
    CHECK(ok);
    CHECK_EQ(seen, 3);
    CHECK_EQ(rd_conv_get(&t, mine, b, &cv), PL_STORE_OK);
    ok = cv.workspace == w && cv.is_private == 1;
    pl_conv_release(&cv);
    CHECK(ok);
    pl_job j;
    t_init(&t, &j, PL_READ_RECEIPTS);
    j.conv = mine;
    j.user = b;
    CHECK_EQ(t_read(&t, &j), PL_STORE_OK);
    ok = j.conv_out.workspace == w && j.conv_out.is_private == 1 && j.conv_out.kind == PL_CONV_CHANNEL;
    pl_job_release(&j);
    CHECK(ok);
    t_init(&t, &j, PL_JOB_LOGIN_CREATE);
    j.user = b;
    j.expires = 4102444800000LL;
    CHECK_EQ(t_run1(&t, &j), PL_STORE_OK);
    int64_t login = j.out_id;
    t_init(&t, &j, PL_READ_SESSION);
    j.id = login;
    j.user = b;
    CHECK_EQ(t_read(&t, &j), PL_STORE_OK);
    ok = j.nconvs == 5;
    for (size_t i = 0; i < j.nconvs; i++)
        if (j.convs[i].id == alpha) ok = ok && j.convs[i].workspace == w && !j.convs[i].is_private;
        else if (j.convs[i].id == grp) ok = ok && j.convs[i].workspace == 0;
    pl_job_release(&j);
    CHECK(ok);
    t_finish(&t);
}

/* A channel is a group in everything else: admins remove, members leave
 * (the last admin's leaving promotes), an admin deletes another's message,
 * a member does not; an admin marks it end-to-end encrypted. */
TEST(store_channel_group_behaviours) {
    tstore t;
    CHECK_EQ(t_open(&t), PL_STORE_OK);
    int64_t a = t_user(&t, "alice"), b = t_user(&t, "bob"), c = t_user(&t, "carol");
    int64_t gen = 0, w = t_ws(&t, a, "w", &gen);
    CHECK(w > 0);
    CHECK_EQ(t_ws_op(&t, PL_JOB_WORKSPACE_ADD, w, a, b, NULL, NULL), PL_STORE_OK);
    CHECK_EQ(t_ws_op(&t, PL_JOB_WORKSPACE_ADD, w, a, c, NULL, NULL), PL_STORE_OK);
    int64_t m[] = {b, c};
    int64_t ch = t_channel(&t, w, a, "dev", m, 2, 0, NULL);
    CHECK(ch > 0);
    int64_t sb = t_send(&t, ch, b, "from bob"), sc = t_send(&t, ch, c, "from carol");
    CHECK(sb == 2 && sc == 3);
    const char *why = NULL;
    CHECK_EQ(t_act(&t, PL_JOB_MESSAGE_DELETE, ch, c, sb, NULL, 0, NULL, &why), PL_STORE_EFORBID);
    int64_t seq = 0;
    CHECK_EQ(t_act(&t, PL_JOB_MESSAGE_DELETE, ch, a, sb, NULL, 0, &seq, NULL), PL_STORE_OK);   /* admin */
    CHECK_EQ(seq, 4);
    pl_event e;
    CHECK_EQ(t_event_at(&t, ch, b, sb, &e), PL_STORE_OK);
    int ok = e.body == NULL || e.body_len == 0;
    pl_event_release(&e);
    CHECK(ok);
    /* the e2ee mark: admins only, as in a group */
    pl_job j;
    t_init(&t, &j, PL_JOB_CONV_E2EE);
    j.conv = ch;
    j.user = b;
    CHECK_EQ(t_run1(&t, &j), PL_STORE_EFORBID);

    /* remove by an admin; EFORBID for a member; leave; promotion */
    CHECK_EQ(t_member_op(&t, PL_JOB_MEMBER_REMOVE, ch, b, c, NULL), PL_STORE_EFORBID);
    int ev = 0;
    CHECK_EQ(t_member_op(&t, PL_JOB_MEMBER_REMOVE, ch, a, c, &ev), PL_STORE_OK);
    CHECK_EQ(ev, 1);
    CHECK_EQ(rd_role(&t, ch, c), PL_ROLE_NONE);
    CHECK_EQ(t_member_op(&t, PL_JOB_MEMBER_LEAVE, ch, a, 0, &ev), PL_STORE_OK);
    CHECK_EQ(ev, 1);
    CHECK_EQ(rd_role(&t, ch, a), PL_ROLE_NONE);
    CHECK_EQ(rd_role(&t, ch, b), PL_ROLE_ADMIN);                  /* the remaining member */
    /* general is no channel to leave, nor to be removed from, but with the
     * workspace */
    CHECK_EQ(t_member_op(&t, PL_JOB_MEMBER_LEAVE, gen, c, 0, &ev), PL_STORE_EINVAL);
    CHECK_EQ(t_member_op(&t, PL_JOB_MEMBER_REMOVE, gen, a, c, &ev), PL_STORE_EINVAL);
    CHECK_EQ(rd_role(&t, gen, c), PL_ROLE_MEMBER);
    /* a channel everyone left: the next one in is its admin */
    CHECK_EQ(t_member_op(&t, PL_JOB_MEMBER_LEAVE, ch, b, 0, &ev), PL_STORE_OK);
    CHECK_EQ(t_join(&t, ch, c, NULL, NULL), PL_STORE_OK);
    CHECK_EQ(rd_role(&t, ch, c), PL_ROLE_ADMIN);
    CHECK_EQ(t_join(&t, ch, b, NULL, NULL), PL_STORE_OK);
    CHECK_EQ(rd_role(&t, ch, b), PL_ROLE_MEMBER);
    t_init(&t, &j, PL_JOB_CONV_E2EE);
    j.conv = ch;
    j.user = b;
    CHECK_EQ(t_run1(&t, &j), PL_STORE_EFORBID);                   /* b is no admin now */
    j.user = c;
    CHECK_EQ(t_run1(&t, &j), PL_STORE_OK);                        /* c is */
    CHECK_EQ(t_count_contiguous(&t, ch), 10);
    t_finish(&t);
}

/* ---- reports (store.h invariant 12) -------------------------------------- */

/* REPORT: the result; *id = out_id, *created, *why. */
static int t_report(tstore *t, int64_t conv, int64_t user, int64_t seq, const char *reason, const char *note,
                    int64_t *id, int *created, const char **why) {
    pl_job j;
    t_init(t, &j, PL_JOB_REPORT);
    j.conv = conv;
    j.user = user;
    j.seq = seq;
    j.title = reason;
    j.body = note;
    j.body_len = note ? strlen(note) : 0;
    if (t_run(t, &j, 1) != 0) return -99;
    if (id) *id = j.out_id;
    if (created) *created = j.created;
    if (why) *why = j.why;
    int rc = j.result;
    if (rc == PL_STORE_OK && j.has_event) rc = -98;            /* reports are no events */
    pl_job_release(&j);
    return rc;
}

/* REPORT_RESOLVE: the result; *created. */
static int t_resolve(tstore *t, int64_t id, int64_t user, int flags, int *created) {
    pl_job j;
    t_init(t, &j, PL_JOB_REPORT_RESOLVE);
    j.id = id;
    j.user = user;
    j.flags = flags;
    if (t_run(t, &j, 1) != 0) return -99;
    if (created) *created = j.created;
    int rc = j.result;
    if (rc == PL_STORE_OK && (j.has_event || j.out_id != id)) rc = -98;
    pl_job_release(&j);
    return rc;
}

/* READ_REPORTS: the result; the list is taken over (pl_report_list_free). */
static int rd_reports(tstore *t, int64_t conv, int64_t user, int flags, int64_t cursor, int limit,
                      pl_report **list, size_t *n, int *more) {
    pl_job j;
    t_init(t, &j, PL_READ_REPORTS);
    j.conv = conv;
    j.user = user;
    j.flags = flags;
    j.cursor = cursor;
    j.limit = limit;
    int rc = t_read(t, &j);
    *list = j.reports;
    *n = j.nreports;
    if (more) *more = j.more;
    return rc;
}

/* READ_REPORTS' ids into out (at most cap): the result; *n, *more. */
static int rd_report_ids(tstore *t, int64_t conv, int64_t user, int flags, int64_t cursor, int limit,
                         int64_t *out, size_t cap, size_t *n, int *more) {
    pl_report *l;
    int rc = rd_reports(t, conv, user, flags, cursor, limit, &l, n, more);
    for (size_t i = 0; i < *n && i < cap; i++) out[i] = l[i].id;
    pl_report_list_free(l, *n);
    return rc;
}

static int64_t t_direct(tstore *t, int64_t a, int64_t b) {
    pl_job j;
    t_init(t, &j, PL_JOB_DIRECT_OPEN);
    j.user = a;
    j.peer = b;
    int rc = t_run1(t, &j);
    return rc == PL_STORE_OK ? j.out_id : rc;
}

/* REPORT with PL_JOB_FILTER (the content filter's): filed in the sender's
 * name for its own message, stored with reporter 0, apart from members'
 * reports; a repeat returns it; the sender must still be a member. */
static int t_filter_report(tstore *t, int64_t conv, int64_t sender, int64_t seq, int64_t *id, int *created) {
    pl_job j;
    t_init(t, &j, PL_JOB_REPORT);
    j.conv = conv;
    j.user = sender;
    j.seq = seq;
    j.flags = PL_JOB_FILTER;
    j.title = "content filter";
    j.body = "rule at line 3 of the content filter";
    j.body_len = strlen(j.body);
    if (t_run(t, &j, 1) != 0) return -99;
    *id = j.out_id;
    *created = j.created;
    int rc = j.result;
    pl_job_release(&j);
    return rc;
}

/* SEND_CHECK: what a send the content filter blocked would have met
 * first: its retry's original answer, a stranger's ENOTFOUND, else OK. */
static int rd_send_check(tstore *t, int64_t conv, int64_t user, const char *cmid, int64_t *seq) {
    pl_job j;
    t_init(t, &j, PL_READ_SEND_CHECK);
    j.conv = conv;
    j.user = user;
    j.client_msg_id = cmid;
    int rc = t_read(t, &j);
    *seq = j.dup && j.has_event && j.event.client_msg_id && strcmp(j.event.client_msg_id, cmid) == 0 ? j.event.seq
                                                                                                  : -1;
    pl_job_release(&j);
    return rc;
}

TEST(store_send_check) {
    tstore t;
    CHECK_EQ(t_open(&t), PL_STORE_OK);
    int64_t a = t_user(&t, "ann"), b = t_user(&t, "bob"), e = t_user(&t, "eve");
    int64_t m[] = {b};
    int64_t g = t_group(&t, a, "g", m, 1);
    CHECK(g > 0);
    pl_job j;
    t_send_init(&t, &j, g, b, "k-1", "free crypto");
    CHECK_EQ(t_run(&t, &j, 1), 0);
    CHECK_EQ(j.result, PL_STORE_OK);
    int64_t sent = j.event.seq;
    pl_job_release(&j);
    int64_t seq = 0;
    CHECK_EQ(rd_send_check(&t, g, b, "k-1", &seq), PL_STORE_OK);      /* a retry */
    CHECK_EQ(seq, sent);
    CHECK_EQ(rd_send_check(&t, g, b, "k-2", &seq), PL_STORE_OK);      /* new: the filter answers */
    CHECK_EQ(seq, -1);
    CHECK_EQ(rd_send_check(&t, g, a, "k-1", &seq), PL_STORE_OK);      /* another sender's key */
    CHECK_EQ(seq, -1);
    CHECK_EQ(rd_send_check(&t, g, e, "k-1", &seq), PL_STORE_ENOTFOUND);
    CHECK_EQ(rd_send_check(&t, 999999, b, "k-1", &seq), PL_STORE_ENOTFOUND);
    CHECK_EQ(t_member_op(&t, PL_JOB_MEMBER_LEAVE, g, b, 0, NULL), PL_STORE_OK);
    CHECK_EQ(rd_send_check(&t, g, b, "k-1", &seq), PL_STORE_OK);      /* a retry after leaving: as SEND */
    CHECK_EQ(seq, sent);
    CHECK_EQ(rd_send_check(&t, g, b, "k-3", &seq), PL_STORE_ENOTFOUND);
    t_finish(&t);
}

/* An admin who joined later (made admin, or the longest-standing member
 * when the last admin left) neither lists nor resolves the reports of
 * messages from before it joined: history hides those messages from it
 * (audit E: the report carried their text and reporter). */
TEST(store_reports_of_messages_before_an_admin_joined) {
    tstore t;
    CHECK_EQ(t_open(&t), PL_STORE_OK);
    int64_t a = t_user(&t, "ann"), b = t_user(&t, "bob"), c = t_user(&t, "cid");
    int64_t m[] = {b};
    int64_t g = t_group(&t, a, "g", m, 1);
    CHECK(g > 0);
    pl_job j;
    t_send_init(&t, &j, g, b, "old-1", "said before cid came");
    CHECK_EQ(t_run(&t, &j, 1), 0);
    int64_t old_seq = j.event.seq;
    pl_job_release(&j);
    int64_t old_id = 0, new_id = 0;
    CHECK_EQ(t_report(&t, g, a, old_seq, "spam", NULL, &old_id, NULL, NULL), PL_STORE_OK);
    CHECK_EQ(t_member_op(&t, PL_JOB_MEMBER_ADD, g, a, c, NULL), PL_STORE_OK);
    t_send_init(&t, &j, g, b, "new-1", "said after");
    CHECK_EQ(t_run(&t, &j, 1), 0);
    int64_t new_seq = j.event.seq;
    pl_job_release(&j);
    CHECK_EQ(t_report(&t, g, a, new_seq, "spam", NULL, &new_id, NULL, NULL), PL_STORE_OK);
    CHECK_EQ(t_role(&t, g, a, c, PL_ROLE_ADMIN, NULL, NULL), PL_STORE_OK);

    int64_t ids[4];
    size_t n = 0;
    int more = 0;
    CHECK_EQ(rd_report_ids(&t, g, c, 0, 0, 10, ids, 4, &n, &more), PL_STORE_OK);
    CHECK_EQ(n, 1);
    CHECK_EQ(ids[0], new_id);
    CHECK_EQ(rd_report_ids(&t, g, a, 0, 0, 10, ids, 4, &n, &more), PL_STORE_OK);   /* ann saw both */
    CHECK_EQ(n, 2);
    CHECK_EQ(t_resolve(&t, old_id, c, 0, NULL), PL_STORE_ENOTFOUND);
    CHECK_EQ(t_resolve(&t, new_id, c, 0, NULL), PL_STORE_OK);
    CHECK_EQ(t_resolve(&t, old_id, a, 0, NULL), PL_STORE_OK);
    t_finish(&t);
}

TEST(store_report_by_the_content_filter) {
    tstore t;
    CHECK_EQ(t_open(&t), PL_STORE_OK);
    int64_t a = t_user(&t, "ann"), b = t_user(&t, "bob");
    int64_t m[] = {b};
    int64_t g = t_group(&t, a, "g", m, 1);
    CHECK(g > 0);
    CHECK_EQ(t_say(&t, g, b, "free crypto", 0, NULL, NULL), 2);
    int64_t r1 = 0, r2 = 0, mine = 0;
    int created = -1;
    CHECK_EQ(t_filter_report(&t, g, b, 2, &r1, &created), PL_STORE_OK);   /* its own message: fine */
    CHECK(r1 > 0);
    CHECK_EQ(created, 1);
    CHECK_EQ(t_filter_report(&t, g, b, 2, &r2, &created), PL_STORE_OK);
    CHECK_EQ(r2, r1);
    CHECK_EQ(created, 0);
    /* the sender still may not report its own message itself */
    CHECK_EQ(t_report(&t, g, b, 2, "spam", NULL, &mine, &created, NULL), PL_STORE_EINVAL);
    /* a member's report is another one */
    CHECK_EQ(t_report(&t, g, a, 2, "spam", NULL, &mine, &created, NULL), PL_STORE_OK);
    CHECK(mine != r1);
    CHECK_EQ(t_last_seq(&t, g, a), 2);                          /* no event */
    pl_report *l;
    size_t n;
    int more = -1;
    CHECK_EQ(rd_reports(&t, g, a, 0, 0, 10, &l, &n, &more), PL_STORE_OK);
    int ok = n == 2 && l[1].id == r1 && l[1].reporter == 0 && l[1].reporter_name[0] == '\0' && l[1].sender == b &&
             l[1].reason && strcmp(l[1].reason, "content filter") == 0 && l[1].note &&
             strcmp(l[1].note, "rule at line 3 of the content filter") == 0 && l[1].body &&
             strcmp(l[1].body, "free crypto") == 0 && l[0].reporter == a;
    pl_report_list_free(l, n);
    CHECK(ok);
    /* resolved, then edited into something the filter flags again: the
     * same report, open again, with the text as it is now */
    CHECK_EQ(t_resolve(&t, r1, a, 0, &created), PL_STORE_OK);
    CHECK_EQ(created, 1);
    CHECK_EQ(t_act(&t, PL_JOB_MESSAGE_EDIT, g, b, 2, "free crypto, really", 0, NULL, NULL), PL_STORE_OK);
    CHECK_EQ(t_filter_report(&t, g, b, 2, &r2, &created), PL_STORE_OK);
    CHECK_EQ(r2, r1);
    CHECK_EQ(created, 1);
    CHECK_EQ(t_filter_report(&t, g, b, 2, &r2, &created), PL_STORE_OK);   /* open: nothing */
    CHECK_EQ(created, 0);
    CHECK_EQ(rd_reports(&t, g, a, 0, 0, 10, &l, &n, &more), PL_STORE_OK);
    ok = n == 2 && l[1].id == r1 && l[1].resolved == 0 && l[1].resolved_by == 0 && l[1].body &&
         strcmp(l[1].body, "free crypto, really") == 0;
    pl_report_list_free(l, n);
    CHECK(ok);
    /* a member's report is not opened again by its repeat */
    CHECK_EQ(t_resolve(&t, mine, a, 0, &created), PL_STORE_OK);
    CHECK_EQ(t_report(&t, g, a, 2, "spam", NULL, &r2, &created, NULL), PL_STORE_OK);
    CHECK_EQ(created, 0);
    /* not a member (any more): not found, as for any reporter */
    CHECK_EQ(t_member_op(&t, PL_JOB_MEMBER_LEAVE, g, b, 0, NULL), PL_STORE_OK);
    CHECK_EQ(t_filter_report(&t, g, b, 2, &r2, &created), PL_STORE_ENOTFOUND);
    t_finish(&t);
}

/* The report keeps the message as it was reported: an edit or a delete
 * after it changes nothing of it; one report per (message, reporter). */
TEST(store_report_snapshot_and_repeat) {
    tstore t;
    CHECK_EQ(t_open(&t), PL_STORE_OK);
    int64_t a = t_user(&t, "ann"), b = t_user(&t, "bob"), c = t_user(&t, "cid");
    int64_t m[] = {b, c};
    int64_t g = t_group(&t, a, "g", m, 2);
    CHECK(g > 0);
    CHECK_EQ(t_say(&t, g, b, "buy cheap pills", 0, NULL, NULL), 2);
    pl_event ev;
    CHECK_EQ(t_event_at(&t, g, a, 2, &ev), 0);
    uint64_t msg_id = ev.id;
    int64_t msg_ts = ev.ts;
    pl_event_release(&ev);

    int64_t r1 = 0, r2 = 0, again = 0;
    int created = -1;
    const char *why = NULL;
    CHECK_EQ(t_report(&t, g, c, 2, "spam", "he sends this \xc3\xa0 everyone", &r1, &created, NULL), PL_STORE_OK);
    CHECK(r1 > 0);
    CHECK_EQ(created, 1);
    /* a repeat by the same reporter (another reason): the first one */
    CHECK_EQ(t_report(&t, g, c, 2, "abuse", NULL, &again, &created, &why), PL_STORE_OK);
    CHECK_EQ(again, r1);
    CHECK_EQ(created, 0);
    /* another reporter: a report of its own */
    CHECK_EQ(t_report(&t, g, a, 2, "scam", NULL, &r2, &created, NULL), PL_STORE_OK);
    CHECK(r2 > r1);
    CHECK_EQ(created, 1);
    CHECK_EQ(t_last_seq(&t, g, a), 2);                          /* no event */

    /* the author edits it: the reports keep the old text */
    CHECK_EQ(t_act(&t, PL_JOB_MESSAGE_EDIT, g, b, 2, "hello all", 0, NULL, NULL), PL_STORE_OK);
    pl_report *l;
    size_t n;
    int more = -1;
    CHECK_EQ(rd_reports(&t, g, a, 0, 0, 10, &l, &n, &more), PL_STORE_OK);
    int ok = n == 2 && more == 0 && l[0].id == r2 && l[1].id == r1;
    pl_report *p = ok ? &l[1] : NULL;
    ok = ok && p->conv == g && p->seq == 2 && p->conv_kind == PL_CONV_GROUP && p->reporter == c &&
         strcmp(p->reporter_name, "cid") == 0 && p->sender == b && strcmp(p->sender_name, "bob") == 0 &&
         p->reason && strcmp(p->reason, "spam") == 0 && p->note &&
         strcmp(p->note, "he sends this \xc3\xa0 everyone") == 0 && p->body &&
         strcmp(p->body, "buy cheap pills") == 0 && p->msg_id == msg_id && p->msg_ts == msg_ts &&
         p->created > 0 && p->resolved == 0 && p->resolved_by == 0;
    ok = ok && l[0].reporter == a && strcmp(l[0].reporter_name, "ann") == 0 && l[0].note == NULL &&
         l[0].reason && strcmp(l[0].reason, "scam") == 0 && l[0].body &&
         strcmp(l[0].body, "buy cheap pills") == 0 && l[0].created >= p->created;
    pl_report_list_free(l, n);
    CHECK(ok);

    /* ... and a delete: still there, with the text it had when reported */
    CHECK_EQ(t_act(&t, PL_JOB_MESSAGE_DELETE, g, b, 2, NULL, 0, NULL, NULL), PL_STORE_OK);
    CHECK_EQ(t_report(&t, g, c, 2, "spam", NULL, &again, &created, &why), PL_STORE_EGONE);
    CHECK_EQ(rd_reports(&t, g, a, 0, 0, 10, &l, &n, &more), PL_STORE_OK);
    ok = n == 2 && l[1].id == r1 && l[1].body && strcmp(l[1].body, "buy cheap pills") == 0 && l[1].sender == b &&
         l[1].msg_id == msg_id && l[0].body && strcmp(l[0].body, "buy cheap pills") == 0;
    pl_report_list_free(l, n);
    CHECK(ok);

    /* a message without text (attachments only) or a ciphertext one: no body */
    pl_media md;
    t_media(&md, 77, b, 'd', 10);
    CHECK_EQ(t_media_create(&t, &md, 0, NULL), PL_STORE_OK);
    pl_job j;
    t_send_init(&t, &j, g, b, "att1", "");
    j.attach_json = "[{\"id\":77,\"kind\":\"image\",\"mime\":\"image/png\",\"size\":10,\"name\":\"x.png\"}]";
    CHECK_EQ(t_run(&t, &j, 1), 0);
    CHECK_EQ(j.result, PL_STORE_OK);
    int64_t aseq = j.event.seq;                                 /* 5: after the edit and the delete */
    pl_job_release(&j);
    int64_t dm = t_direct(&t, b, c);
    CHECK(dm > 0);
    t_init(&t, &j, PL_JOB_CONV_E2EE);
    j.conv = dm;
    j.user = b;
    CHECK_EQ(t_run1(&t, &j), PL_STORE_OK);
    t_send_init(&t, &j, dm, b, "c1", "");
    j.ciphertext = "[{\"device\":1,\"type\":0,\"body\":\"Y2lwaGVy\"}]";
    CHECK_EQ(t_run(&t, &j, 1), 0);
    CHECK_EQ(j.result, PL_STORE_OK);
    int64_t cseq = j.event.seq;
    pl_job_release(&j);
    int64_t r3 = 0, r4 = 0;
    CHECK_EQ(aseq, 5);
    CHECK_EQ(t_report(&t, g, c, aseq, "nsfw", "", &r3, &created, NULL), PL_STORE_OK);
    CHECK_EQ(created, 1);
    CHECK_EQ(t_report(&t, dm, c, cseq, "harassment", NULL, &r4, &created, NULL), PL_STORE_OK);
    CHECK_EQ(created, 1);
    CHECK_EQ(rd_reports(&t, 0, 0, PL_READ_ADMIN, 0, 10, &l, &n, &more), PL_STORE_OK);
    ok = n == 4 && l[0].id == r4 && l[1].id == r3 && l[0].body == NULL && l[1].body == NULL &&
         l[1].note == NULL && l[0].conv == dm && l[0].conv_kind == PL_CONV_DIRECT && l[0].sender == b &&
         l[1].seq == aseq && l[1].sender == b;
    pl_report_list_free(l, n);
    CHECK(ok);
    CHECK_EQ(t_count_contiguous(&t, g), 5);
    t_finish(&t);
}

/* A report's target is checked as EDIT's; its reason and note as store.h
 * says; nothing is written when it fails. */
TEST(store_report_target_and_input_errors) {
    tstore t;
    CHECK_EQ(t_open(&t), PL_STORE_OK);
    int64_t a = t_user(&t, "ann"), b = t_user(&t, "bob"), c = t_user(&t, "cid"), d = t_user(&t, "dan");
    int64_t m[] = {b, c};
    int64_t g = t_group(&t, a, "g", m, 2);
    CHECK(g > 0);
    CHECK_EQ(t_say(&t, g, b, "one", 0, NULL, NULL), 2);
    CHECK_EQ(t_say(&t, g, b, "two", 0, NULL, NULL), 3);
    CHECK_EQ(t_act(&t, PL_JOB_MESSAGE_EDIT, g, b, 3, "two!", 0, NULL, NULL), PL_STORE_OK);   /* seq 4 */
    CHECK_EQ(t_act(&t, PL_JOB_MESSAGE_DELETE, g, b, 3, NULL, 0, NULL, NULL), PL_STORE_OK);   /* seq 5 */
    const char *why = NULL;
    int64_t id = -1;
    CHECK_EQ(t_report(&t, g, b, 2, "spam", NULL, NULL, NULL, &why), PL_STORE_EINVAL);
    CHECK_STR(why, "your own message");
    why = NULL;
    CHECK_EQ(t_report(&t, g, c, 1, "spam", NULL, NULL, NULL, &why), PL_STORE_EINVAL);      /* CREATED */
    CHECK_STR(why, "not a message");
    why = NULL;
    CHECK_EQ(t_report(&t, g, c, 4, "spam", NULL, NULL, NULL, &why), PL_STORE_EINVAL);      /* an EDIT */
    CHECK_STR(why, "not a message");
    CHECK_EQ(t_report(&t, g, c, 3, "spam", NULL, NULL, NULL, NULL), PL_STORE_EGONE);       /* deleted */
    CHECK_EQ(t_report(&t, g, c, 99, "spam", NULL, NULL, NULL, NULL), PL_STORE_ENOTFOUND);  /* no such seq */
    CHECK_EQ(t_report(&t, g, c, 0, "spam", NULL, NULL, NULL, NULL), PL_STORE_ENOTFOUND);
    CHECK_EQ(t_report(&t, g, d, 2, "spam", NULL, NULL, NULL, NULL), PL_STORE_ENOTFOUND);   /* not a member */
    CHECK_EQ(t_report(&t, 9999, c, 2, "spam", NULL, NULL, NULL, NULL), PL_STORE_ENOTFOUND);
    CHECK_EQ(t_member_op(&t, PL_JOB_MEMBER_ADD, g, a, d, NULL), PL_STORE_OK);              /* seq 6 */
    CHECK_EQ(t_report(&t, g, d, 2, "spam", NULL, NULL, NULL, NULL), PL_STORE_ENOTFOUND);   /* before joining */

    /* the reason: 1..32 bytes of UTF-8; the note: 0..PL_REPORT_NOTE_MAX */
    char reason[40], note[PL_REPORT_NOTE_MAX + 2];
    memset(reason, 'r', sizeof reason);
    reason[33] = '\0';
    const char *bad_reasons[] = {NULL, "", reason, "sp\xff" "am"};
    for (size_t i = 0; i < sizeof bad_reasons / sizeof *bad_reasons; i++) {
        why = NULL;
        CHECK_EQ(t_report(&t, g, c, 2, bad_reasons[i], NULL, NULL, NULL, &why), PL_STORE_EINVAL);
        CHECK_STR(why, "bad reason");
    }
    memset(note, 'n', sizeof note);
    note[PL_REPORT_NOTE_MAX + 1] = '\0';
    why = NULL;
    CHECK_EQ(t_report(&t, g, c, 2, "spam", note, NULL, NULL, &why), PL_STORE_EINVAL);
    CHECK_STR(why, "bad note");
    why = NULL;
    CHECK_EQ(t_report(&t, g, c, 2, "spam", "bad \xc3(", NULL, NULL, &why), PL_STORE_EINVAL);
    CHECK_STR(why, "bad note");
    pl_report *l;
    size_t n;
    CHECK_EQ(rd_reports(&t, 0, 0, PL_READ_ADMIN | PL_READ_RESOLVED, 0, 10, &l, &n, NULL), PL_STORE_OK);
    pl_report_list_free(l, n);
    CHECK_EQ(n, 0);                                             /* nothing written */

    /* the limits themselves are fine */
    reason[32] = '\0';
    note[PL_REPORT_NOTE_MAX] = '\0';
    int created = 0;
    CHECK_EQ(t_report(&t, g, c, 2, reason, note, &id, &created, NULL), PL_STORE_OK);
    CHECK(id > 0);
    CHECK_EQ(created, 1);
    CHECK_EQ(rd_reports(&t, g, a, 0, 0, 10, &l, &n, NULL), PL_STORE_OK);
    int ok = n == 1 && l[0].id == id && l[0].reason && strlen(l[0].reason) == 32 && l[0].note &&
             strlen(l[0].note) == PL_REPORT_NOTE_MAX && l[0].body && strcmp(l[0].body, "one") == 0;
    pl_report_list_free(l, n);
    CHECK(ok);
    /* a member may report in a direct conversation too */
    int64_t dm = t_direct(&t, b, d);
    CHECK(dm > 0);
    CHECK_EQ(t_say(&t, dm, b, "psst", 0, NULL, NULL), 2);
    CHECK_EQ(t_report(&t, dm, d, 2, "harassment", NULL, &id, &created, NULL), PL_STORE_OK);
    CHECK_EQ(created, 1);
    CHECK_EQ(t_report(&t, dm, c, 2, "spam", NULL, NULL, NULL, NULL), PL_STORE_ENOTFOUND);  /* not in it */
    CHECK_EQ(t_last_seq(&t, g, a), 6);                                   /* reports are no events */
    CHECK_EQ(t_count_contiguous(&t, g), 6);
    CHECK_EQ(t_last_seq(&t, dm, b), 2);
    t_finish(&t);
}

/* Only the conversation's admins (a group or a channel) or a server admin
 * resolve; anyone else cannot tell the report exists. */
/* A group's admin does not see, nor resolve, the reports of its own
 * messages (it could bury them): the server's admins do. */
TEST(store_report_of_an_admins_own_message) {
    tstore t;
    CHECK_EQ(t_open(&t), PL_STORE_OK);
    int64_t a = t_user(&t, "ann"), b = t_user(&t, "bob"), c = t_user(&t, "cid");
    int64_t m[] = {b, c};
    int64_t g = t_group(&t, a, "g", m, 2);
    CHECK(g > 0);
    CHECK_EQ(t_say(&t, g, a, "admin's rant", 0, NULL, NULL), 2);
    CHECK_EQ(t_say(&t, g, b, "member's rant", 0, NULL, NULL), 3);
    int64_t r1 = 0, r2 = 0;
    CHECK_EQ(t_report(&t, g, c, 2, "abuse", NULL, &r1, NULL, NULL), PL_STORE_OK);
    CHECK_EQ(t_report(&t, g, c, 3, "abuse", NULL, &r2, NULL, NULL), PL_STORE_OK);
    pl_report *l;
    size_t n;
    CHECK_EQ(rd_reports(&t, g, a, 0, 0, 10, &l, &n, NULL), PL_STORE_OK);
    int ok = n == 1 && l[0].id == r2;                           /* not r1 */
    pl_report_list_free(l, n);
    CHECK(ok);
    CHECK_EQ(t_resolve(&t, r1, a, 0, NULL), PL_STORE_ENOTFOUND);
    CHECK_EQ(rd_reports(&t, g, 0, PL_READ_ADMIN, 0, 10, &l, &n, NULL), PL_STORE_OK);
    ok = n == 2 && l[0].id == r2 && l[1].id == r1 && l[1].resolved == 0;
    pl_report_list_free(l, n);
    CHECK(ok);
    CHECK_EQ(t_resolve(&t, r1, a, PL_JOB_ADMIN, NULL), PL_STORE_OK);   /* as a server admin */
    /* a server admin asking for a conversation that does not exist: not
     * found, not an empty list (audit O) */
    CHECK_EQ(rd_reports(&t, g + 1000, 0, PL_READ_ADMIN, 0, 10, &l, &n, NULL), PL_STORE_ENOTFOUND);
    t_finish(&t);
}

TEST(store_report_resolve) {
    tstore t;
    CHECK_EQ(t_open(&t), PL_STORE_OK);
    int64_t a = t_user(&t, "ann"), b = t_user(&t, "bob"), c = t_user(&t, "cid"), e = t_user(&t, "eve");
    int64_t m[] = {b, c};
    int64_t g = t_group(&t, a, "g", m, 2);
    CHECK(g > 0);
    CHECK_EQ(t_say(&t, g, b, "rude", 0, NULL, NULL), 2);
    int64_t r1 = 0;
    CHECK_EQ(t_report(&t, g, c, 2, "abuse", NULL, &r1, NULL, NULL), PL_STORE_OK);
    CHECK(r1 > 0);
    int created = -1;
    CHECK_EQ(t_resolve(&t, r1, b, 0, NULL), PL_STORE_ENOTFOUND);         /* a member */
    CHECK_EQ(t_resolve(&t, r1, c, 0, NULL), PL_STORE_ENOTFOUND);         /* the reporter */
    CHECK_EQ(t_resolve(&t, r1, e, 0, NULL), PL_STORE_ENOTFOUND);         /* a stranger */
    CHECK_EQ(t_resolve(&t, r1 + 100, a, 0, NULL), PL_STORE_ENOTFOUND);   /* no such report */
    CHECK_EQ(t_resolve(&t, r1 + 100, a, PL_JOB_ADMIN, NULL), PL_STORE_ENOTFOUND);
    pl_report *l;
    size_t n;
    CHECK_EQ(rd_reports(&t, g, a, 0, 0, 10, &l, &n, NULL), PL_STORE_OK);
    int ok = n == 1 && l[0].id == r1 && l[0].resolved == 0 && l[0].resolved_by == 0;
    pl_report_list_free(l, n);
    CHECK(ok);                                                  /* still open */

    CHECK_EQ(t_resolve(&t, r1, a, 0, &created), PL_STORE_OK);           /* the group's admin */
    CHECK_EQ(created, 1);
    CHECK_EQ(t_resolve(&t, r1, a, 0, &created), PL_STORE_OK);           /* twice: nothing */
    CHECK_EQ(created, 0);
    CHECK_EQ(t_resolve(&t, r1, e, PL_JOB_ADMIN, &created), PL_STORE_OK);
    CHECK_EQ(created, 0);
    CHECK_EQ(rd_reports(&t, g, a, PL_READ_RESOLVED, 0, 10, &l, &n, NULL), PL_STORE_OK);
    ok = n == 1 && l[0].id == r1 && l[0].resolved > 0 && l[0].resolved >= l[0].created &&
         l[0].resolved_by == a;                                 /* the first resolution's */
    pl_report_list_free(l, n);
    CHECK(ok);
    CHECK_EQ(t_last_seq(&t, g, a), 2);                          /* no event */

    /* a direct conversation has no admins: a server admin only */
    int64_t dm = t_direct(&t, b, c);
    CHECK(dm > 0);
    CHECK_EQ(t_say(&t, dm, b, "hey", 0, NULL, NULL), 2);
    int64_t r2 = 0;
    CHECK_EQ(t_report(&t, dm, c, 2, "harassment", NULL, &r2, NULL, NULL), PL_STORE_OK);
    CHECK(r2 > r1);
    CHECK_EQ(t_resolve(&t, r2, b, 0, NULL), PL_STORE_ENOTFOUND);
    CHECK_EQ(t_resolve(&t, r2, c, 0, NULL), PL_STORE_ENOTFOUND);
    CHECK_EQ(t_resolve(&t, r2, a, 0, NULL), PL_STORE_ENOTFOUND);
    CHECK_EQ(t_resolve(&t, r2, e, PL_JOB_ADMIN, &created), PL_STORE_OK);
    CHECK_EQ(created, 1);
    CHECK_EQ(rd_reports(&t, dm, 0, PL_READ_ADMIN | PL_READ_RESOLVED, 0, 10, &l, &n, NULL), PL_STORE_OK);
    ok = n == 1 && l[0].id == r2 && l[0].resolved > 0 && l[0].resolved_by == e;
    pl_report_list_free(l, n);
    CHECK(ok);

    /* an admin no more cannot; the new admin can */
    CHECK_EQ(t_say(&t, g, c, "rude too", 0, NULL, NULL), 3);
    int64_t r3 = 0;
    CHECK_EQ(t_report(&t, g, b, 3, "abuse", NULL, &r3, NULL, NULL), PL_STORE_OK);
    CHECK_EQ(t_member_op(&t, PL_JOB_MEMBER_LEAVE, g, a, 0, NULL), PL_STORE_OK);
    CHECK_EQ(rd_role(&t, g, b), PL_ROLE_ADMIN);                 /* promoted: the earliest joined */
    CHECK_EQ(t_resolve(&t, r3, a, 0, NULL), PL_STORE_ENOTFOUND);
    CHECK_EQ(t_resolve(&t, r3, b, 0, &created), PL_STORE_OK);
    CHECK_EQ(created, 1);
    t_finish(&t);
}

/* The list: a group's or channel's admins see its reports, a server admin
 * any conversation's or all; open ones only unless PL_READ_RESOLVED;
 * newest first, in pages. */
TEST(store_report_list) {
    tstore t;
    CHECK_EQ(t_open(&t), PL_STORE_OK);
    int64_t a = t_user(&t, "ann"), b = t_user(&t, "bob"), c = t_user(&t, "cid"), d = t_user(&t, "dan"),
            e = t_user(&t, "eve");
    int64_t m[] = {b, c, d};
    int64_t g = t_group(&t, a, "g", m, 3);
    CHECK(g > 0);
    CHECK_EQ(t_say(&t, g, b, "one", 0, NULL, NULL), 2);
    CHECK_EQ(t_say(&t, g, b, "two", 0, NULL, NULL), 3);
    CHECK_EQ(t_say(&t, g, b, "three", 0, NULL, NULL), 4);
    int64_t r[4] = {0};
    CHECK_EQ(t_report(&t, g, c, 2, "spam", NULL, &r[0], NULL, NULL), PL_STORE_OK);
    CHECK_EQ(t_report(&t, g, c, 3, "spam", NULL, &r[1], NULL, NULL), PL_STORE_OK);
    CHECK_EQ(t_report(&t, g, c, 4, "spam", NULL, &r[2], NULL, NULL), PL_STORE_OK);
    CHECK_EQ(t_report(&t, g, d, 3, "abuse", "again", &r[3], NULL, NULL), PL_STORE_OK);
    CHECK(r[0] > 0 && r[1] > r[0] && r[2] > r[1] && r[3] > r[2]);

    int64_t ids[8];
    size_t n = 0;
    int more = -1;
    CHECK_EQ(rd_report_ids(&t, g, a, 0, 0, 10, ids, 8, &n, &more), PL_STORE_OK);
    CHECK_EQ(n, 4);
    CHECK(ids[0] == r[3] && ids[1] == r[2] && ids[2] == r[1] && ids[3] == r[0]);   /* newest first */
    CHECK_EQ(more, 0);
    pl_report *l;
    CHECK_EQ(rd_reports(&t, g, b, 0, 0, 10, &l, &n, NULL), PL_STORE_EFORBID);    /* a member */
    pl_report_list_free(l, n);
    CHECK_EQ(n, 0);
    CHECK_EQ(rd_reports(&t, g, c, 0, 0, 10, &l, &n, NULL), PL_STORE_EFORBID);    /* the reporter */
    pl_report_list_free(l, n);
    CHECK_EQ(rd_reports(&t, g, e, 0, 0, 10, &l, &n, NULL), PL_STORE_ENOTFOUND);  /* a stranger */
    pl_report_list_free(l, n);
    CHECK_EQ(rd_reports(&t, 9999, a, 0, 0, 10, &l, &n, NULL), PL_STORE_ENOTFOUND);
    pl_report_list_free(l, n);
    CHECK_EQ(rd_reports(&t, 0, a, 0, 0, 10, &l, &n, NULL), PL_STORE_EINVAL);     /* all: admins only */
    pl_report_list_free(l, n);
    CHECK_EQ(n, 0);

    /* a direct conversation: only with PL_READ_ADMIN */
    int64_t dm = t_direct(&t, b, c);
    CHECK(dm > 0);
    CHECK_EQ(t_say(&t, dm, b, "hey", 0, NULL, NULL), 2);
    int64_t rd = 0;
    CHECK_EQ(t_report(&t, dm, c, 2, "harassment", NULL, &rd, NULL, NULL), PL_STORE_OK);
    CHECK_EQ(rd_reports(&t, dm, c, 0, 0, 10, &l, &n, NULL), PL_STORE_ENOTFOUND);
    pl_report_list_free(l, n);
    CHECK_EQ(rd_reports(&t, dm, b, 0, 0, 10, &l, &n, NULL), PL_STORE_ENOTFOUND);
    pl_report_list_free(l, n);
    CHECK_EQ(rd_reports(&t, dm, e, PL_READ_ADMIN, 0, 10, &l, &n, NULL), PL_STORE_OK);
    int ok = n == 1 && l[0].id == rd && l[0].conv == dm && l[0].conv_kind == PL_CONV_DIRECT &&
             l[0].reporter == c && l[0].sender == b && strcmp(l[0].sender_name, "bob") == 0;
    pl_report_list_free(l, n);
    CHECK(ok);

    /* a channel's admin sees its reports, and only its */
    int64_t w = t_ws(&t, a, "w", NULL);
    CHECK(w > 0);
    CHECK_EQ(t_ws_op(&t, PL_JOB_WORKSPACE_ADD, w, a, b, NULL, NULL), PL_STORE_OK);
    CHECK_EQ(t_ws_op(&t, PL_JOB_WORKSPACE_ADD, w, a, c, NULL, NULL), PL_STORE_OK);
    int64_t cm[] = {b, c};
    int64_t ch = t_channel(&t, w, c, "dev", cm, 2, 0, NULL);     /* cid its admin */
    CHECK(ch > 0);
    CHECK_EQ(t_say(&t, ch, b, "off topic", 0, NULL, NULL), 2);
    int64_t rc_ = 0;
    CHECK_EQ(t_report(&t, ch, a, 2, "off-topic", NULL, &rc_, NULL, NULL), PL_STORE_ENOTFOUND);  /* not in it */
    CHECK_EQ(t_report(&t, ch, c, 2, "off-topic", NULL, &rc_, NULL, NULL), PL_STORE_OK);
    CHECK_EQ(rd_reports(&t, ch, c, 0, 0, 10, &l, &n, NULL), PL_STORE_OK);
    ok = n == 1 && l[0].id == rc_ && l[0].conv == ch && l[0].conv_kind == PL_CONV_CHANNEL;
    pl_report_list_free(l, n);
    CHECK(ok);
    CHECK_EQ(rd_reports(&t, ch, b, 0, 0, 10, &l, &n, NULL), PL_STORE_EFORBID);
    pl_report_list_free(l, n);
    CHECK_EQ(rd_reports(&t, ch, a, 0, 0, 10, &l, &n, NULL), PL_STORE_ENOTFOUND);  /* workspace admin, not in it */
    pl_report_list_free(l, n);
    CHECK_EQ(rd_report_ids(&t, g, a, 0, 0, 10, ids, 8, &n, NULL), PL_STORE_OK);   /* g's only */
    CHECK_EQ(n, 4);
    CHECK_EQ(ids[0], r[3]);

    /* resolved ones: out of the default list, in with PL_READ_RESOLVED */
    CHECK_EQ(t_resolve(&t, r[2], a, 0, NULL), PL_STORE_OK);
    CHECK_EQ(rd_report_ids(&t, g, a, 0, 0, 10, ids, 8, &n, &more), PL_STORE_OK);
    CHECK_EQ(n, 3);
    CHECK(ids[0] == r[3] && ids[1] == r[1] && ids[2] == r[0]);
    CHECK_EQ(more, 0);
    CHECK_EQ(rd_report_ids(&t, g, a, PL_READ_RESOLVED, 0, 10, ids, 8, &n, &more), PL_STORE_OK);
    CHECK_EQ(n, 4);
    CHECK(ids[0] == r[3] && ids[1] == r[2] && ids[2] == r[1] && ids[3] == r[0]);

    /* every conversation's, for a server admin */
    CHECK_EQ(rd_report_ids(&t, 0, 0, PL_READ_ADMIN, 0, 10, ids, 8, &n, &more), PL_STORE_OK);
    CHECK_EQ(n, 5);
    CHECK(ids[0] == rc_ && ids[1] == rd && ids[2] == r[3] && ids[3] == r[1] && ids[4] == r[0]);
    CHECK_EQ(more, 0);
    CHECK_EQ(rd_report_ids(&t, 0, e, PL_READ_ADMIN | PL_READ_RESOLVED, 0, 10, ids, 8, &n, &more), PL_STORE_OK);
    CHECK_EQ(n, 6);
    CHECK(ids[0] == rc_ && ids[1] == rd && ids[2] == r[3] && ids[3] == r[2] && ids[4] == r[1] && ids[5] == r[0]);
    CHECK_EQ(rd_report_ids(&t, g, e, PL_READ_ADMIN, 0, 10, ids, 8, &n, &more), PL_STORE_OK);
    CHECK_EQ(n, 3);
    CHECK_EQ(ids[0], r[3]);

    /* pages: ids below the cursor, at most limit, more when there are */
    CHECK_EQ(rd_report_ids(&t, g, a, 0, 0, 2, ids, 8, &n, &more), PL_STORE_OK);
    CHECK(n == 2 && ids[0] == r[3] && ids[1] == r[1]);
    CHECK_EQ(more, 1);
    CHECK_EQ(rd_report_ids(&t, g, a, 0, ids[1], 2, ids, 8, &n, &more), PL_STORE_OK);
    CHECK(n == 1 && ids[0] == r[0]);
    CHECK_EQ(more, 0);
    CHECK_EQ(rd_report_ids(&t, g, a, PL_READ_RESOLVED, 0, 2, ids, 8, &n, &more), PL_STORE_OK);
    CHECK(n == 2 && ids[0] == r[3] && ids[1] == r[2]);
    CHECK_EQ(more, 1);
    CHECK_EQ(rd_report_ids(&t, g, a, PL_READ_RESOLVED, ids[1], 2, ids, 8, &n, &more), PL_STORE_OK);
    CHECK(n == 2 && ids[0] == r[1] && ids[1] == r[0]);
    CHECK_EQ(more, 0);
    CHECK_EQ(rd_report_ids(&t, g, a, 0, r[0], 2, ids, 8, &n, &more), PL_STORE_OK);   /* nothing below */
    CHECK_EQ(n, 0);
    CHECK_EQ(more, 0);
    CHECK_EQ(rd_report_ids(&t, 0, 0, PL_READ_ADMIN, rd, 1, ids, 8, &n, &more), PL_STORE_OK);
    CHECK(n == 1 && ids[0] == r[3]);
    CHECK_EQ(more, 1);
    CHECK_EQ(rd_report_ids(&t, g, a, 0, 0, 0, ids, 8, &n, &more), PL_STORE_OK);   /* limit 0: 1 */
    CHECK(n == 1 && ids[0] == r[3]);
    CHECK_EQ(more, 1);
    CHECK_EQ(rd_report_ids(&t, g, a, 0, 0, 100000, ids, 8, &n, &more), PL_STORE_OK);   /* capped */
    CHECK_EQ(n, 3);
    CHECK_EQ(more, 0);
    t_finish(&t);
}

/* ---- the data lifecycle (invariant 13) -------------------------------------- */

static int64_t t_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* RETENTION_SET: the result; *seq of its event (0: none), *why. */
static int t_retention(tstore *t, int64_t conv, int64_t ws, int64_t user, int64_t seconds, int flags, int64_t *seq,
                       const char **why) {
    pl_job j;
    t_init(t, &j, PL_JOB_RETENTION_SET);
    j.conv = conv;
    j.id = ws;
    j.user = user;
    j.value = seconds;
    j.flags = flags;
    if (t_run(t, &j, 1) != 0) return -99;
    if (seq) *seq = j.has_event ? j.event.seq : 0;
    if (why) *why = j.why;
    int rc = j.result;
    char want[48];
    snprintf(want, sizeof want, "{\"seconds\":%lld}", (long long)seconds);
    if (rc == PL_STORE_OK && j.out_id != (conv ? conv : ws)) rc = -98;
    if (rc == PL_STORE_OK && conv && (!j.has_event || j.event.kind != PL_EV_RETENTION || j.event.sender != user ||
                                      !j.event.data || strcmp(j.event.data, want) != 0))
        rc = -97;
    if (rc == PL_STORE_OK && !conv && j.has_event) rc = -96;
    pl_job_release(&j);
    return rc;
}

static int t_hold(tstore *t, int64_t conv, int64_t ws, int release) {
    pl_job j;
    t_init(t, &j, PL_JOB_HOLD_SET);
    j.conv = conv;
    j.id = ws;
    j.flags = release ? PL_JOB_REMOVE : 0;
    if (t_run(t, &j, 1) != 0) return -99;
    int rc = j.result;
    if (rc == PL_STORE_OK && j.has_event) rc = -98;
    pl_job_release(&j);
    return rc;
}

/* RETENTION_PURGE as of clock: the messages erased, or the error. */
static int64_t t_purge(tstore *t, int64_t clock, int limit) {
    pl_job j;
    t_init(t, &j, PL_JOB_RETENTION_PURGE);
    j.expires = clock;
    j.limit = limit;
    if (t_run(t, &j, 1) != 0) return -99;
    int64_t rc = j.result == PL_STORE_OK ? j.out_id : j.result;
    if (j.has_event) rc = -98;
    pl_job_release(&j);
    return rc;
}

/* Purges until a run erases nothing: the total. */
static int64_t t_purge_all(tstore *t, int64_t clock) {
    int64_t total = 0, n;
    for (int i = 0; i < 1000 && (n = t_purge(t, clock, 100)) > 0; i++) total += n;
    return n < 0 ? n : total;
}

/* 1: the message at seq is erased (viewer's view), 0: it is not, <0: error. */
static int t_erased(tstore *t, int64_t conv, int64_t viewer, int64_t seq) {
    pl_event ev;
    int rc = t_event_at(t, conv, viewer, seq, &ev);
    if (rc) return rc < 0 ? rc : -rc;
    int erased = ev.kind == PL_EV_MESSAGE && !ev.body && !ev.data && has(ev.annot, "\"deleted\":true");
    int intact = ev.kind == PL_EV_MESSAGE && ev.body && !has(ev.annot, "\"deleted\":true");
    pl_event_release(&ev);
    return erased ? 1 : intact ? 0 : -95;
}

static int t_account_delete(tstore *t, int64_t user, const char **why) {
    pl_job j;
    t_init(t, &j, PL_JOB_ACCOUNT_DELETE);
    j.user = user;
    if (t_run(t, &j, 1) != 0) return -99;
    if (why) *why = j.why;
    int rc = j.result;
    if (rc == PL_STORE_OK && (j.has_event || j.out_id != user)) rc = -98;
    pl_job_release(&j);
    return rc;
}

/* Who may set a retention, its event, and the checks of its value. */
TEST(store_life_retention_set) {
    tstore t;
    CHECK_EQ(t_open(&t), PL_STORE_OK);
    int64_t a = t_user(&t, "ann"), b = t_user(&t, "bob"), c = t_user(&t, "cid");
    int64_t m[] = {b};
    int64_t g = t_group(&t, a, "g", m, 1), d = t_direct(&t, a, b);
    CHECK(g > 0 && d > 0);
    int64_t seq = -1;
    const char *why = NULL;
    CHECK_EQ(t_retention(&t, g, 0, b, 60, 0, &seq, NULL), PL_STORE_EFORBID);   /* a member */
    CHECK_EQ(t_retention(&t, g, 0, c, 60, 0, &seq, NULL), PL_STORE_ENOTFOUND); /* not one */
    CHECK_EQ(t_retention(&t, 999999, 0, a, 60, 0, &seq, NULL), PL_STORE_ENOTFOUND);
    CHECK_EQ(t_retention(&t, g, 0, a, -1, 0, &seq, &why), PL_STORE_EINVAL);
    CHECK(why && strcmp(why, "bad retention") == 0);
    CHECK_EQ(t_retention(&t, g, 0, a, PL_RETENTION_MAX + 1, 0, &seq, NULL), PL_STORE_EINVAL);
    CHECK_EQ(t_last_seq(&t, g, a), 1);                         /* nothing appended */
    CHECK_EQ(t_retention(&t, g, 0, a, 60, 0, &seq, NULL), PL_STORE_OK);
    CHECK_EQ(seq, 2);
    CHECK_EQ(t_retention(&t, d, 0, b, 3600, 0, &seq, NULL), PL_STORE_OK);   /* either in a DM */
    CHECK_EQ(seq, 2);
    CHECK_EQ(t_retention(&t, g, 0, c, PL_RETENTION_MAX, PL_JOB_ADMIN, &seq, NULL), PL_STORE_OK);
    CHECK_EQ(seq, 3);
    CHECK_EQ(t_retention(&t, 999999, 0, c, 5, PL_JOB_ADMIN, &seq, NULL), PL_STORE_ENOTFOUND);
    pl_conv cv;
    CHECK_EQ(rd_conv_get(&t, g, b, &cv), PL_STORE_OK);
    int ok = cv.retention == PL_RETENTION_MAX && cv.ws_retention == 0 && cv.hold == 0 && cv.last_seq == 3;
    pl_conv_release(&cv);
    CHECK(ok);
    CHECK_EQ(t_retention(&t, g, 0, a, 0, 0, &seq, NULL), PL_STORE_OK);      /* unset: an event too */
    CHECK_EQ(seq, 4);
    pl_event ev;
    CHECK_EQ(t_event_at(&t, g, b, 4, &ev), 0);
    ok = ev.kind == PL_EV_RETENTION && ev.sender == a && ev.data && strcmp(ev.data, "{\"seconds\":0}") == 0;
    pl_event_release(&ev);
    CHECK(ok);

    /* a workspace's: its admins, no event; its channels read it */
    int64_t w = t_ws(&t, a, "acme", NULL);
    CHECK(w > 0);
    CHECK_EQ(t_ws_op(&t, PL_JOB_WORKSPACE_ADD, w, a, b, NULL, NULL), PL_STORE_OK);
    int64_t ch = t_channel(&t, w, a, "news", NULL, 0, 0, NULL);
    CHECK(ch > 0);
    CHECK_EQ(t_retention(&t, 0, w, b, 60, 0, NULL, NULL), PL_STORE_EFORBID);
    CHECK_EQ(t_retention(&t, 0, w, c, 60, 0, NULL, NULL), PL_STORE_ENOTFOUND);
    CHECK_EQ(t_retention(&t, 0, 999999, a, 60, 0, NULL, NULL), PL_STORE_ENOTFOUND);
    CHECK_EQ(t_retention(&t, 0, w, a, 86400, 0, NULL, NULL), PL_STORE_OK);
    CHECK_EQ(t_retention(&t, 0, w, c, 86400 * 2, PL_JOB_ADMIN, NULL, NULL), PL_STORE_OK);
    CHECK_EQ(rd_conv_get(&t, ch, a, &cv), PL_STORE_OK);
    ok = cv.retention == 0 && cv.ws_retention == 86400 * 2 && cv.hold == 0;
    pl_conv_release(&cv);
    CHECK(ok);
    pl_workspace *wl;
    size_t n;
    CHECK_EQ(rd_workspaces(&t, b, &wl, &n), PL_STORE_OK);
    ok = n == 1 && wl[0].retention == 86400 * 2 && wl[0].hold == 0;
    pl_workspace_list_free(wl, n);
    CHECK(ok);

    /* holds: no event; a workspace's covers its channels */
    CHECK_EQ(t_hold(&t, 0, w, 0), PL_STORE_OK);
    CHECK_EQ(t_hold(&t, 999999, 0, 0), PL_STORE_ENOTFOUND);
    CHECK_EQ(t_hold(&t, 0, 999999, 0), PL_STORE_ENOTFOUND);
    CHECK_EQ(rd_conv_get(&t, ch, a, &cv), PL_STORE_OK);
    ok = cv.hold == 1;
    pl_conv_release(&cv);
    CHECK(ok);
    pl_workspace *one;
    CHECK_EQ(rd_workspace(&t, w, a, &one), PL_STORE_OK);
    ok = one->hold == 1 && one->retention == 86400 * 2;
    pl_workspace_list_free(one, 1);
    CHECK(ok);
    CHECK_EQ(t_hold(&t, 0, w, 1), PL_STORE_OK);
    CHECK_EQ(t_hold(&t, d, 0, 0), PL_STORE_OK);
    CHECK_EQ(rd_conv_get(&t, ch, a, &cv), PL_STORE_OK);
    ok = cv.hold == 0;
    pl_conv_release(&cv);
    CHECK_EQ(rd_conv_get(&t, d, b, &cv), PL_STORE_OK);
    ok = ok && cv.hold == 1 && cv.retention == 3600 && cv.last_seq == 2;
    pl_conv_release(&cv);
    CHECK(ok);
    t_finish(&t);
}

/* The purge erases what is older than the effective retention (its own,
 * its workspace's, the server's), as a delete does but with no event, and
 * leaves held conversations alone. */
TEST(store_life_purge) {
    tstore t;
    CHECK_EQ(t_open(&t), PL_STORE_OK);
    int64_t a = t_user(&t, "ann"), b = t_user(&t, "bob");
    int64_t m[] = {b};
    int64_t g = t_group(&t, a, "g", m, 1), d = t_direct(&t, a, b), keep = t_group(&t, a, "keep", m, 1);
    int64_t w = t_ws(&t, a, "acme", NULL);
    CHECK(g > 0 && d > 0 && keep > 0 && w > 0);
    CHECK_EQ(t_ws_op(&t, PL_JOB_WORKSPACE_ADD, w, a, b, NULL, NULL), PL_STORE_OK);
    int64_t ch = t_channel(&t, w, a, "news", m, 1, 0, NULL), own = t_channel(&t, w, a, "own", m, 1, 0, NULL);
    CHECK(ch > 0 && own > 0);
    CHECK_EQ(t_say(&t, g, b, "zebra one", 0, NULL, NULL), 2);
    CHECK_EQ(t_say(&t, g, a, "zebra two", 2, NULL, NULL), 3);
    CHECK_EQ(t_act(&t, PL_JOB_REACTION, g, a, 2, "\xf0\x9f\x91\x8d", 0, NULL, NULL), PL_STORE_OK);   /* 4 */
    CHECK_EQ(t_act(&t, PL_JOB_MESSAGE_EDIT, g, b, 2, "zebra uno", 0, NULL, NULL), PL_STORE_OK);      /* 5 */
    CHECK_EQ(t_act(&t, PL_JOB_PIN, g, a, 3, NULL, 0, NULL, NULL), PL_STORE_OK);                      /* 6 */
    CHECK_EQ(t_say(&t, d, a, "zebra direct", 0, NULL, NULL), 2);
    CHECK_EQ(t_say(&t, keep, a, "zebra kept", 0, NULL, NULL), 2);
    int64_t chs = t_say(&t, ch, a, "zebra channel", 0, NULL, NULL), owns = t_say(&t, own, a, "zebra own", 0, NULL, NULL);
    CHECK(chs > 1 && owns > 1);
    CHECK_EQ(t_found(&t, b, "zebra", 0, 6), 6);
    int64_t unread = t_unread(&t, g, b);
    CHECK_EQ(t_retention(&t, g, 0, a, 60, 0, NULL, NULL), PL_STORE_OK);     /* seq 7 */
    CHECK_EQ(t_retention(&t, d, 0, a, 3600, 0, NULL, NULL), PL_STORE_OK);
    CHECK_EQ(t_retention(&t, 0, w, a, 60, 0, NULL, NULL), PL_STORE_OK);
    CHECK_EQ(t_retention(&t, own, 0, a, 3600, 0, NULL, NULL), PL_STORE_OK); /* its own wins */

    /* nothing is old yet */
    CHECK_EQ(t_purge_all(&t, t_now_ms()), 0);
    CHECK_EQ(t_erased(&t, g, a, 2), 0);
    /* a minute on: the group's and the channel's go, not the DM's (an
     * hour), not the own channel's, not the group without one */
    int64_t later = t_now_ms() + 61000;
    CHECK_EQ(t_purge(&t, later, 1), 1);                        /* limit is a limit */
    CHECK_EQ(t_purge_all(&t, later), 2);
    CHECK_EQ(t_erased(&t, g, a, 2), 1);
    CHECK_EQ(t_erased(&t, g, b, 3), 1);
    CHECK_EQ(t_erased(&t, ch, a, chs), 1);
    CHECK_EQ(t_erased(&t, d, a, 2), 0);
    CHECK_EQ(t_erased(&t, own, a, owns), 0);
    CHECK_EQ(t_erased(&t, keep, a, 2), 0);
    /* ... no event, the log and unread as they were; the edit's text gone */
    CHECK_EQ(t_last_seq(&t, g, a), 7);
    CHECK_EQ(t_unread(&t, g, b), unread);
    pl_event ev;
    CHECK_EQ(t_event_at(&t, g, a, 5, &ev), 0);
    int ok = ev.kind == PL_EV_EDIT && !ev.body;
    pl_event_release(&ev);
    CHECK(ok);
    CHECK_EQ(t_found(&t, b, "zebra", 0, 3), 3);                 /* out of the index */
    CHECK_EQ(t_purge_all(&t, later), 0);                       /* once */

    /* an hour on: the DM's and the own channel's */
    int64_t hour = t_now_ms() + 3601000;
    CHECK_EQ(t_hold(&t, d, 0, 0), PL_STORE_OK);                /* ... but d is held */
    CHECK_EQ(t_purge_all(&t, hour), 1);
    CHECK_EQ(t_erased(&t, own, a, owns), 1);
    CHECK_EQ(t_erased(&t, d, a, 2), 0);
    CHECK_EQ(t_hold(&t, d, 0, 1), PL_STORE_OK);
    CHECK_EQ(t_purge_all(&t, hour), 1);
    CHECK_EQ(t_erased(&t, d, a, 2), 1);

    /* a message sent now is not older than the minute */
    CHECK_EQ(t_say(&t, g, a, "fresh", 0, NULL, NULL), 8);
    CHECK_EQ(t_purge_all(&t, t_now_ms()), 0);
    CHECK_EQ(t_erased(&t, g, a, 8), 0);
    /* a held workspace holds its channels */
    int64_t chs2 = t_say(&t, ch, b, "in the channel", 0, NULL, NULL);
    CHECK_EQ(chs2, chs + 1);
    CHECK_EQ(t_hold(&t, 0, w, 0), PL_STORE_OK);
    CHECK_EQ(t_purge_all(&t, t_now_ms() + 120000), 1);          /* g's "fresh" only */
    CHECK_EQ(t_erased(&t, ch, a, chs2), 0);
    CHECK_EQ(t_erased(&t, g, a, 8), 1);

    /* the server's retention applies where nothing else does */
    CHECK_EQ(t_say(&t, d, a, "an hour of its own", 0, NULL, NULL), 4);
    t.retention = 30;
    CHECK_EQ(t_reopen(&t), PL_STORE_OK);
    CHECK_EQ(t_purge_all(&t, t_now_ms() + 31000), 1);
    CHECK_EQ(t_erased(&t, keep, a, 2), 1);
    CHECK_EQ(t_erased(&t, d, a, 4), 0);                         /* its own is longer */
    CHECK_EQ(t_erased(&t, ch, a, chs2), 0);                     /* still held */
    CHECK_EQ(t_purge(&t, t_now_ms(), 0), 0);                    /* limit 0: 1, nothing to do */
    t_finish(&t);
}

/* Account deletion: only once out of every group, channel and workspace;
 * then no login, no keys, no name, no new membership; its messages are
 * erased by the purge except where held. */
TEST(store_life_account_delete) {
    tstore t;
    CHECK_EQ(t_open(&t), PL_STORE_OK);
    int64_t a = t_user(&t, "ann"), b = t_user(&t, "bob"), c = t_user(&t, "cid");
    int64_t m[] = {b};
    int64_t g = t_group(&t, a, "g", m, 1), d = t_direct(&t, a, b), e = t_direct(&t, b, c);
    int64_t w = t_ws(&t, a, "acme", NULL);
    CHECK(g > 0 && d > 0 && e > 0 && w > 0);
    CHECK_EQ(t_ws_op(&t, PL_JOB_WORKSPACE_ADD, w, a, b, NULL, NULL), PL_STORE_OK);
    int64_t login = t_login(&t, b);
    CHECK(login > 0);
    CHECK_EQ(t_push_reg(&t, b, login, 1, "tok-bob", NULL, NULL, NULL), PL_STORE_OK);
    CHECK_EQ(t_say(&t, g, b, "bob in g", 0, NULL, NULL), 2);
    CHECK_EQ(t_say(&t, g, a, "ann in g", 0, NULL, NULL), 3);
    CHECK_EQ(t_say(&t, d, b, "bob in d", 0, NULL, NULL), 2);
    CHECK_EQ(t_say(&t, d, a, "ann in d", 0, NULL, NULL), 3);
    CHECK_EQ(t_say(&t, e, b, "bob in e", 0, NULL, NULL), 2);
    pl_media md;
    t_media(&md, 4242, b, 'b', 10);
    CHECK_EQ(t_media_create(&t, &md, 0, NULL), PL_STORE_OK);

    const char *why = NULL;
    CHECK_EQ(t_account_delete(&t, b, &why), PL_STORE_ECONFLICT);
    CHECK(why && strcmp(why, "still a member") == 0);
    CHECK_EQ(t_member_op(&t, PL_JOB_MEMBER_LEAVE, g, b, b, NULL), PL_STORE_OK);
    CHECK_EQ(t_account_delete(&t, b, &why), PL_STORE_ECONFLICT);          /* the workspace */
    int64_t chs[8];
    size_t nch = 0;
    CHECK_EQ(t_ws_remove(&t, w, b, b, chs, 8, &nch), PL_STORE_OK);
    CHECK_EQ(nch, 1);                                          /* general */
    CHECK_EQ(t_account_delete(&t, b, &why), PL_STORE_ECONFLICT);          /* a channel */
    CHECK_EQ(t_evict(&t, chs[0], b, b, NULL), PL_STORE_OK);
    CHECK_EQ(t_hold(&t, e, 0, 0), PL_STORE_OK);
    CHECK_EQ(t_account_delete(&t, b, NULL), PL_STORE_OK);
    CHECK_EQ(t_account_delete(&t, b, NULL), PL_STORE_ENOTFOUND);          /* once */
    CHECK_EQ(t_account_delete(&t, 999999, NULL), PL_STORE_ENOTFOUND);

    /* the account: renamed, no password, logins revoked, devices gone */
    pl_user u;
    char name[40];
    snprintf(name, sizeof name, "deleted#%lld", (long long)b);
    CHECK_EQ(rd_user_by_id(&t, b, &u), PL_STORE_OK);
    int ok = strcmp(u.username, name) == 0;
    free(u.pwhash);
    CHECK(ok);
    CHECK_EQ(rd_user_by_name(&t, "bob", &u, 0), PL_STORE_ENOTFOUND);
    CHECK_EQ(rd_user_by_name(&t, name, &u, 1), PL_STORE_ENOTFOUND);
    pl_login l;
    CHECK_EQ(rd_login(&t, login, &l), PL_STORE_OK);
    CHECK_EQ(l.revoked, 1);
    pl_job j;
    CHECK_EQ(t_push_devices(&t, &j, b), PL_STORE_OK);
    CHECK_EQ(j.npush_devices, 0);
    pl_job_release(&j);
    CHECK(t_user(&t, "bob") > 0);                              /* the name is free again */

    /* a deleted user is an unknown one to everything that adds */
    int64_t ghost = 999999;
    int64_t gm[] = {b}, gx[] = {ghost};
    CHECK_EQ(t_group(&t, a, "again", gm, 1), t_group(&t, a, "again", gx, 1));
    CHECK(t_group(&t, a, "again", gm, 1) < 0);
    CHECK_EQ(t_member_op(&t, PL_JOB_MEMBER_ADD, g, a, b, NULL), t_member_op(&t, PL_JOB_MEMBER_ADD, g, a, ghost, NULL));
    CHECK(t_member_op(&t, PL_JOB_MEMBER_ADD, g, a, b, NULL) < 0);
    CHECK_EQ(t_ws_op(&t, PL_JOB_WORKSPACE_ADD, w, a, b, NULL, NULL), PL_STORE_ENOTFOUND);
    CHECK_EQ(t_direct(&t, c, b), t_direct(&t, c, ghost));
    CHECK(t_direct(&t, c, b) < 0);
    CHECK_EQ(t_direct(&t, a, b), PL_STORE_ENOTFOUND);           /* also the one there is */
    CHECK(t_channel(&t, w, a, "x", gm, 1, 0, NULL) < 0);
    CHECK_EQ(t_login(&t, b), t_login(&t, ghost));
    t_init(&t, &j, PL_READ_USER_SEARCH);
    j.user = c;
    j.query = "deleted";
    j.limit = 10;
    CHECK_EQ(t_read(&t, &j), PL_STORE_OK);
    CHECK_EQ(j.nusers, 0);
    pl_job_release(&j);
    /* the DM keeps its members (and the other one its history) */
    pl_conv cv;
    CHECK_EQ(rd_conv_get(&t, d, a, &cv), PL_STORE_OK);
    ok = cv.nmembers == 2;
    for (size_t i = 0; ok && i < cv.nmembers; i++)
        if (cv.members[i].user == b) ok = strcmp(cv.members[i].username, name) == 0;
    pl_conv_release(&cv);
    CHECK(ok);

    /* the purge erases its messages (not in the held e), now, not the others' */
    CHECK_EQ(t_purge_all(&t, t_now_ms()), 2);
    CHECK_EQ(t_erased(&t, g, a, 2), 1);
    CHECK_EQ(t_erased(&t, g, a, 3), 0);
    CHECK_EQ(t_erased(&t, d, a, 2), 1);
    CHECK_EQ(t_erased(&t, d, a, 3), 0);
    CHECK_EQ(t_erased(&t, e, c, 2), 0);
    CHECK_EQ(t_purge_all(&t, t_now_ms()), 0);
    /* the hold released: they go too */
    CHECK_EQ(t_hold(&t, e, 0, 1), PL_STORE_OK);
    CHECK_EQ(t_purge_all(&t, t_now_ms()), 1);
    CHECK_EQ(t_erased(&t, e, c, 2), 1);
    CHECK_EQ(t_purge_all(&t, t_now_ms()), 0);
    t_finish(&t);
}

/* A user's own messages, across conversations, by id, in pages. */
TEST(store_life_user_messages) {
    tstore t;
    CHECK_EQ(t_open(&t), PL_STORE_OK);
    int64_t a = t_user(&t, "ann"), b = t_user(&t, "bob");
    int64_t m[] = {b};
    int64_t g = t_group(&t, a, "g", m, 1), d = t_direct(&t, a, b);
    CHECK(g > 0 && d > 0);
    CHECK_EQ(t_say(&t, g, a, "one", 0, NULL, NULL), 2);
    CHECK_EQ(t_say(&t, d, a, "two", 0, NULL, NULL), 2);
    CHECK_EQ(t_say(&t, g, b, "not mine", 0, NULL, NULL), 3);
    CHECK_EQ(t_say(&t, g, a, "three", 2, NULL, NULL), 4);
    CHECK_EQ(t_say(&t, d, a, "gone", 0, NULL, NULL), 3);
    CHECK_EQ(t_act(&t, PL_JOB_MESSAGE_DELETE, d, a, 3, NULL, 0, NULL, NULL), PL_STORE_OK);
    CHECK_EQ(t_act(&t, PL_JOB_MESSAGE_EDIT, g, a, 2, "one!", 0, NULL, NULL), PL_STORE_OK);
    CHECK_EQ(t_act(&t, PL_JOB_REACTION, g, b, 2, "\xf0\x9f\x91\x8d", 0, NULL, NULL), PL_STORE_OK);
    static const char *const want[] = {"one!", "two", "three"};
    int64_t cursor = 0;
    size_t got = 0;
    for (int page = 0; page < 5; page++) {
        pl_job j;
        t_init(&t, &j, PL_READ_USER_MESSAGES);
        j.user = a;
        j.cursor = cursor;
        j.limit = 2;
        CHECK_EQ(t_read(&t, &j), PL_STORE_OK);
        int ok = 1;
        for (size_t i = 0; i < j.nevents; i++, got++) {
            pl_event *e = &j.events[i];
            ok = ok && got < 3 && e->kind == PL_EV_MESSAGE && e->sender == a && e->body &&
                 strcmp(e->body, want[got]) == 0 && (uint64_t)cursor < e->id;
            ok = ok && e->conv == (got == 1 ? d : g);
            if (got == 0) ok = ok && has(e->annot, "\"reactions\"") && has(e->annot, "\"edited_ts\"");
            if (got == 2) ok = ok && e->ref == 2;
            cursor = (int64_t)e->id;
        }
        int more = j.more, n = (int)j.nevents;
        pl_job_release(&j);
        CHECK(ok);
        CHECK_EQ(more, page == 0 ? 1 : 0);
        if (!more) {
            CHECK_EQ(n, 1);
            break;
        }
    }
    CHECK_EQ(got, 3);
    t_finish(&t);
}

/* ---- blocks (invariant 14) ------------------------------------------------------ */

static int t_block(tstore *t, int64_t user, int64_t peer, int remove, int *created) {
    pl_job j;
    t_init(t, &j, PL_JOB_BLOCK);
    j.user = user;
    j.peer = peer;
    j.flags = remove ? PL_JOB_REMOVE : 0;
    if (t_run(t, &j, 1) != 0) return -99;
    if (created) *created = j.created;
    int rc = j.result;
    if (rc == PL_STORE_OK && (j.has_event || j.out_id != peer)) rc = -98;
    pl_job_release(&j);
    return rc;
}

/* The ids user blocks, into out (at most cap): how many, or the error. */
static int rd_blocks(tstore *t, int64_t user, int64_t *out, size_t cap) {
    pl_job j;
    t_init(t, &j, PL_READ_BLOCKS);
    j.user = user;
    int rc = t_read(t, &j);
    int n = rc ? rc : (int)j.nusers;
    for (size_t i = 0; !rc && i < j.nusers && i < cap; i++) out[i] = j.users[i].id;
    pl_job_release(&j);
    return n;
}

static int rd_blocked_flag(tstore *t, int64_t conv, int64_t user) {
    pl_conv c;
    int rc = rd_conv_get(t, conv, user, &c);
    if (rc) return rc;
    int b = c.blocked;
    pl_conv_release(&c);
    return b;
}

/* A block, either way, stops sends, edits and reactions in the pair's
 * direct conversation and the creation of one; groups go on; unblocking
 * (both ways) lets it go on. */
/* BLOCK's conv_out: the pair's direct conversation and its flag, when the
 * flag changed (chat/ announces it); 0 when nothing changed. */
static int64_t t_block_conv(tstore *t, int64_t user, int64_t peer, int remove, int *blocked) {
    pl_job j;
    t_init(t, &j, PL_JOB_BLOCK);
    j.user = user;
    j.peer = peer;
    j.flags = remove ? PL_JOB_REMOVE : 0;
    if (t_run(t, &j, 1) != 0) return -99;
    int64_t conv = j.result == PL_STORE_OK ? j.conv_out.id : -j.result - 1000;
    *blocked = j.conv_out.blocked;
    pl_job_release(&j);
    return conv;
}

/* A block hides the pair from each other's presence queries unless they
 * share another conversation. */
TEST(store_block_announces_its_dm_and_hides_presence) {
    tstore t;
    CHECK_EQ(t_open(&t), PL_STORE_OK);
    int64_t a = t_user(&t, "ann"), b = t_user(&t, "bob"), c = t_user(&t, "cid");
    int64_t d = t_direct(&t, a, b), dc = t_direct(&t, a, c);
    int64_t m[] = {c};
    int64_t g = t_group(&t, a, "g", m, 1);
    CHECK(d > 0 && dc > 0 && g > 0);
    CHECK_EQ(rd_shares(&t, b, a), 1);
    int bl = -1;
    CHECK_EQ(t_block_conv(&t, a, b, 0, &bl), d);
    CHECK_EQ(bl, 1);
    CHECK_EQ(rd_shares(&t, b, a), 0);
    CHECK_EQ(rd_shares(&t, a, b), 0);
    CHECK_EQ(t_block_conv(&t, b, a, 0, &bl), 0);                   /* already blocked: no change */
    CHECK_EQ(t_block_conv(&t, a, b, 1, &bl), 0);                   /* b still blocks a */
    CHECK_EQ(rd_shares(&t, b, a), 0);
    CHECK_EQ(t_block_conv(&t, b, a, 1, &bl), d);                   /* neither now */
    CHECK_EQ(bl, 0);
    CHECK_EQ(rd_shares(&t, b, a), 1);
    CHECK_EQ(t_block_conv(&t, a, c, 0, &bl), dc);
    CHECK_EQ(rd_shares(&t, c, a), 1);                              /* they share the group */
    int64_t e = t_user(&t, "eve");
    CHECK_EQ(t_block_conv(&t, a, e, 0, &bl), 0);                   /* no direct conversation */
    t_finish(&t);
}

TEST(store_block_direct) {
    tstore t;
    CHECK_EQ(t_open(&t), PL_STORE_OK);
    int64_t a = t_user(&t, "ann"), b = t_user(&t, "bob"), c = t_user(&t, "cid");
    int64_t d = t_direct(&t, a, b);
    int64_t m[] = {b};
    int64_t g = t_group(&t, a, "g", m, 1);
    CHECK(d > 0 && g > 0);
    CHECK_EQ(t_say(&t, d, b, "hi", 0, NULL, NULL), 2);
    int created = -1;
    CHECK_EQ(t_block(&t, a, a, 0, NULL), PL_STORE_EINVAL);
    CHECK_EQ(t_block(&t, a, 999999, 0, NULL), PL_STORE_ENOTFOUND);
    CHECK_EQ(t_block(&t, a, b, 1, &created), PL_STORE_OK);          /* not blocked: nothing */
    CHECK_EQ(created, 0);
    CHECK_EQ(t_block(&t, a, b, 0, &created), PL_STORE_OK);
    CHECK_EQ(created, 1);
    CHECK_EQ(t_block(&t, a, b, 0, &created), PL_STORE_OK);          /* again: nothing */
    CHECK_EQ(created, 0);
    int64_t ids[4];
    CHECK_EQ(rd_blocks(&t, a, ids, 4), 1);
    CHECK_EQ(ids[0], b);
    CHECK_EQ(rd_blocks(&t, b, ids, 4), 0);
    CHECK_EQ(rd_blocked_flag(&t, d, a), 1);
    CHECK_EQ(rd_blocked_flag(&t, d, b), 1);
    CHECK_EQ(rd_blocked_flag(&t, g, b), 0);

    /* both ways: the blocked one and the blocker */
    pl_job j;
    t_send_init(&t, &j, d, b, "b-2", "are you there");
    CHECK_EQ(t_run(&t, &j, 1), 0);
    int ok = j.result == PL_STORE_EFORBID && j.why && strcmp(j.why, "blocked") == 0 && !j.has_event;
    pl_job_release(&j);
    CHECK(ok);
    t_send_init(&t, &j, d, a, "a-2", "go away");
    CHECK_EQ(t_run1(&t, &j), PL_STORE_EFORBID);
    const char *why = NULL;
    CHECK_EQ(t_act(&t, PL_JOB_MESSAGE_EDIT, d, b, 2, "hi!", 0, NULL, &why), PL_STORE_EFORBID);
    CHECK(why && strcmp(why, "blocked") == 0);
    CHECK_EQ(t_act(&t, PL_JOB_REACTION, d, b, 2, "\xf0\x9f\x91\x8d", 0, NULL, NULL), PL_STORE_EFORBID);
    /* nor its retention or its encryption, by its members */
    CHECK_EQ(t_retention(&t, d, 0, b, 1, 0, NULL, &why), PL_STORE_EFORBID);
    CHECK(why && strcmp(why, "blocked") == 0);
    pl_job e2;
    t_init(&t, &e2, PL_JOB_CONV_E2EE);
    e2.conv = d;
    e2.user = b;
    CHECK_EQ(t_run1(&t, &e2), PL_STORE_EFORBID);
    CHECK_EQ(t_act(&t, PL_JOB_MESSAGE_DELETE, d, b, 2, NULL, 0, NULL, NULL), PL_STORE_OK);   /* deletes apply */
    CHECK_EQ(t_last_seq(&t, d, a), 3);
    CHECK_EQ(t_say(&t, g, b, "in the group", 0, NULL, NULL), 2);   /* groups go on */
    /* the open: the one there is, for its history; no new one */
    CHECK_EQ(t_direct(&t, b, a), d);
    CHECK_EQ(t_block(&t, c, a, 0, NULL), PL_STORE_OK);
    pl_job o;
    t_init(&t, &o, PL_JOB_DIRECT_OPEN);
    o.user = a;
    o.peer = c;
    CHECK_EQ(t_run(&t, &o, 1), 0);
    ok = o.result == PL_STORE_EFORBID && o.why && strcmp(o.why, "blocked") == 0;
    pl_job_release(&o);
    CHECK(ok);

    /* b blocks a too; a unblocks: still blocked (b's); b unblocks: free */
    CHECK_EQ(t_block(&t, b, a, 0, NULL), PL_STORE_OK);
    CHECK_EQ(t_block(&t, a, b, 1, &created), PL_STORE_OK);
    CHECK_EQ(created, 1);
    t_send_init(&t, &j, d, a, "a-3", "sorry");
    CHECK_EQ(t_run1(&t, &j), PL_STORE_EFORBID);
    CHECK_EQ(t_reopen(&t), PL_STORE_OK);                            /* the flag is stored */
    CHECK_EQ(rd_blocked_flag(&t, d, a), 1);
    t_send_init(&t, &j, d, a, "a-3", "sorry");
    CHECK_EQ(t_run1(&t, &j), PL_STORE_EFORBID);
    CHECK_EQ(t_block(&t, b, a, 1, NULL), PL_STORE_OK);
    CHECK_EQ(rd_blocked_flag(&t, d, a), 0);
    CHECK_EQ(t_say(&t, d, a, "sorry", 0, NULL, NULL), 4);
    CHECK_EQ(t_block(&t, c, a, 1, NULL), PL_STORE_OK);
    CHECK(t_direct(&t, a, c) > 0);
    CHECK_EQ(rd_blocks(&t, a, ids, 4), 0);
    t_finish(&t);
}

/* A block and a send of the same batch: in submission order. */
TEST(store_block_in_one_batch) {
    tstore t;
    CHECK_EQ(t_open(&t), PL_STORE_OK);
    int64_t a = t_user(&t, "ann"), b = t_user(&t, "bob");
    int64_t d = t_direct(&t, a, b);
    CHECK(d > 0);
    CHECK_EQ(t_say(&t, d, b, "warm up", 0, NULL, NULL), 2);      /* the state is cached */
    pl_job js[3];
    t_send_init(&t, &js[0], d, b, "b-1", "before");
    t_init(&t, &js[1], PL_JOB_BLOCK);
    js[1].user = a;
    js[1].peer = b;
    t_send_init(&t, &js[2], d, b, "b-2", "after");
    CHECK_EQ(t_run(&t, js, 3), 0);
    int ok = js[0].result == PL_STORE_OK && js[1].result == PL_STORE_OK && js[2].result == PL_STORE_EFORBID;
    for (int i = 0; i < 3; i++) pl_job_release(&js[i]);
    CHECK(ok);
    t_finish(&t);
}

/* An account that blocks someone is not deleted until its blocks are
 * lifted (api_life.c unblocks each first: its direct conversations' flags
 * follow); a deleted account cannot block, and a block of it by someone
 * else stays theirs (audit G2 #4: a deleted account's block refused the
 * other member's sends for good). */
TEST(store_life_account_delete_lifts_its_blocks_first) {
    tstore t;
    CHECK_EQ(t_open(&t), PL_STORE_OK);
    int64_t a = t_user(&t, "ann"), b = t_user(&t, "bob"), c = t_user(&t, "cid");
    int64_t d = t_direct(&t, a, b);
    CHECK(d > 0);
    int created = 0, blocked = -1;
    CHECK_EQ(t_block(&t, b, a, 0, &created), PL_STORE_OK);
    CHECK_EQ(t_block(&t, c, b, 0, &created), PL_STORE_OK);        /* someone blocks b */
    CHECK_EQ(rd_blocked_flag(&t, d, a), 1);
    const char *why = NULL;
    CHECK_EQ(t_account_delete(&t, b, &why), PL_STORE_ECONFLICT);
    CHECK(why && strcmp(why, "still blocking") == 0);
    CHECK_EQ(t_block_conv(&t, b, a, 1, &blocked), d);             /* the unblock: the flag clears */
    CHECK_EQ(blocked, 0);
    CHECK_EQ(t_account_delete(&t, b, NULL), PL_STORE_OK);
    CHECK_EQ(rd_blocked_flag(&t, d, a), 0);
    CHECK_EQ(t_say(&t, d, a, "to no one", 0, NULL, NULL), 2);      /* a's sends are taken */
    pl_job j;                                                       /* the deleted cannot block */
    t_init(&t, &j, PL_JOB_BLOCK);
    j.user = b;
    j.peer = a;
    CHECK_EQ(t_run(&t, &j, 1), 0);
    int ok = j.result == PL_STORE_ENOTFOUND && j.why && !strcmp(j.why, "deleted");   /* the asker, not a */
    pl_job_release(&j);
    CHECK(ok);
    int64_t ids[4];
    CHECK_EQ(rd_blocks(&t, b, ids, 4), 0);
    CHECK_EQ(rd_blocks(&t, c, ids, 4), 1);                          /* c's block of b stays c's */
    CHECK_EQ(ids[0], b);
    t_finish(&t);
}

/* A conversation list's last event is the event in its current form, as
 * history gives it: a reply carries its parent's preview, in both stores
 * (audit K: SQLite left it out). */
TEST(store_conv_list_last_carries_the_reply_preview) {
    tstore t;
    CHECK_EQ(t_open(&t), PL_STORE_OK);
    int64_t a = t_user(&t, "lra"), b = t_user(&t, "lrb");
    int64_t g = t_group(&t, a, "g", &b, 1);
    CHECK_EQ(t_say(&t, g, a, "first", 0, NULL, NULL), 2);
    CHECK_EQ(t_say(&t, g, b, "second", 2, NULL, NULL), 3);
    pl_conv *list;
    size_t n;
    CHECK_EQ(rd_conv_list(&t, a, PL_READ_WITH_LAST, &list, &n), PL_STORE_OK);
    int ok = n == 1 && list[0].last && list[0].last->seq == 3 && list[0].last->annot &&
             strstr(list[0].last->annot, "\"reply_preview\":{\"seq\":2,\"sender\":1,\"body\":\"first\"}");
    if (!ok && n == 1 && list[0].last) fprintf(stderr, "annot: %s\n", list[0].last->annot ? list[0].last->annot : "(null)");
    pl_conv_list_free(list, n);
    CHECK(ok);
    t_finish(&t);
}
