/* test_store.c — contract tests of store.h, run against the SQLite backend.
 *
 * Each test owns a fresh directory from mkdtemp (removed at the end) and a
 * store opened in a subdirectory of it (which open must create). Jobs are
 * completed the way the server does it: notify() wakes the test thread
 * through a condition variable, and the test thread calls pl_store_drain().
 */
#include "test.h"

#include "store/store.h"

#include <jansson.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

typedef struct tstore {
    char       root[64];       /* mkdtemp directory                      */
    char       dir[96];        /* root/data, the store's directory       */
    pl_store  *s;
    pthread_mutex_t mu;
    pthread_cond_t  cv;
    int        pending;        /* notify() calls not yet consumed (mu)   */
    int        notifies;       /* notify() calls in total (mu)           */
    int        ndone;          /* jobs whose done() ran                  */
    pl_job   **order;          /* jobs in the order done() saw them      */
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

static int t_open_store(tstore *t) {
    const char *err = NULL;
    return pl_store_sqlite_open(t->dir, 1, t_notify, t, &t->s, &err);
}

static int t_open(tstore *t) {
    memset(t, 0, sizeof *t);
    snprintf(t->root, sizeof t->root, "/tmp/pl-store-XXXXXX");
    if (!mkdtemp(t->root)) return -1;
    snprintf(t->dir, sizeof t->dir, "%s/data", t->root);
    pthread_mutex_init(&t->mu, NULL);
    pthread_cond_init(&t->cv, NULL);
    return t_open_store(t);
}

static int t_reopen(tstore *t) {
    pl_store_close(&t->s);
    return t_open_store(t);
}

static void t_finish(tstore *t) {
    static const char *const files[] = {"parley.db", "parley.db-wal", "parley.db-shm"};
    char p[160];
    pl_store_close(&t->s);
    for (size_t i = 0; i < 3; i++) {
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

/* Runs one job alone and returns its result (its event is released). */
static int t_run1(tstore *t, pl_job *j) {
    if (t_run(t, j, 1) != 0) return -99;
    pl_event_release(&j->event);
    return j->result;
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
    int rc = t_run1(t, &j);
    if (has_event) *has_event = j.has_event;
    return rc;
}

static int64_t t_last_seq(tstore *t, int64_t conv, int64_t user) {
    pl_conv c;
    if (pl_store_conv_get(t->s, conv, user, &c) != PL_STORE_OK) return -1;
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
        if (pl_store_events(t->s, conv, after, 0, PL_STORE_PAGE_MAX, 0, &ev, &n) != PL_STORE_OK)
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
    CHECK_EQ(version, 2);                          /* migrations: base schema, last_seen */
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
    CHECK_EQ(pl_store_user_by_name(t.s, "alice", &u, 1), PL_STORE_OK);
    CHECK_EQ(u.id, a);
    CHECK_STR(u.username, "alice");
    CHECK_STR(u.pwhash, "$argon2id$fake");
    free(u.pwhash);
    CHECK_EQ(pl_store_user_by_name(t.s, "bob", &u, 0), PL_STORE_OK);
    CHECK(u.pwhash == NULL);
    CHECK_EQ(pl_store_user_by_id(t.s, b, &u), PL_STORE_OK);
    CHECK_STR(u.username, "bob");
    CHECK_EQ(pl_store_user_by_name(t.s, "carol", &u, 0), PL_STORE_ENOTFOUND);
    CHECK_EQ(pl_store_user_by_id(t.s, 999, &u), PL_STORE_ENOTFOUND);

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
    CHECK_EQ(pl_store_user_by_name(t.s, "dave", &u, 0), PL_STORE_OK);
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
    CHECK_EQ(pl_store_login_get(t.s, login, &l), PL_STORE_OK);
    CHECK_EQ(l.user, a);
    CHECK_EQ(l.refresh_hash[31], 0x11);
    CHECK_EQ(l.expires, far);
    CHECK_EQ(l.revoked, 0);
    CHECK_EQ(pl_store_login_get(t.s, login + 100, &l), PL_STORE_ENOTFOUND);

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
    CHECK_EQ(pl_store_login_get(t.s, login, &l), PL_STORE_OK);
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
    CHECK_EQ(pl_store_login_get(t.s, login, &l), PL_STORE_OK);
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
    CHECK_EQ(pl_store_conv_get(t.s, conv, b, &cv), PL_STORE_OK);
    CHECK_EQ(cv.kind, PL_CONV_DIRECT);
    CHECK(cv.title == NULL);
    CHECK_EQ(cv.nmembers, 2);
    CHECK_EQ(cv.role, PL_ROLE_MEMBER);
    CHECK_EQ(role_of(&cv, a), PL_ROLE_MEMBER);
    pl_conv_release(&cv);
    CHECK_EQ(pl_store_conv_get(t.s, conv, c, &cv), PL_STORE_ENOTFOUND);

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
    CHECK_EQ(pl_store_conv_get(t.s, j.out_id, b, &cv), PL_STORE_OK);
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
    CHECK_EQ(pl_store_member_role(t.s, j.out_id, a), PL_ROLE_ADMIN);

    /* an unknown member fails the job and creates nothing */
    int64_t bad[] = {b, 999};
    CHECK_EQ(t_group(&t, a, "x", bad, 2), PL_STORE_ENOTFOUND);
    pl_conv *list;
    size_t n;
    CHECK_EQ(pl_store_conv_list(t.s, b, &list, &n), PL_STORE_OK);
    pl_conv_list_free(list, n);
    CHECK_EQ(n, 1);
    /* a creator alone is a group of one */
    int64_t solo = t_group(&t, c, "solo", NULL, 0);
    CHECK(solo > 0);
    CHECK_EQ(pl_store_conv_get(t.s, solo, c, &cv), PL_STORE_OK);
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
    CHECK_EQ(pl_store_member_role(t.s, g, c), PL_ROLE_MEMBER);

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
    CHECK_EQ(pl_store_member_role(t.s, g, c), PL_ROLE_NONE);
    pl_conv cv;
    CHECK_EQ(pl_store_conv_get(t.s, g, c, &cv), PL_STORE_ENOTFOUND);

    /* re-adding joins at the end; an admin removing itself promotes the
     * earliest-joined remaining member */
    CHECK_EQ(t_member_op(&t, PL_JOB_MEMBER_ADD, g, a, c, NULL), PL_STORE_OK);
    CHECK_EQ(t_member_op(&t, PL_JOB_MEMBER_REMOVE, g, a, a, NULL), PL_STORE_OK);
    CHECK_EQ(pl_store_member_role(t.s, g, b), PL_ROLE_ADMIN);
    CHECK_EQ(pl_store_member_role(t.s, g, c), PL_ROLE_MEMBER);
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
    pl_event_release(&j.event);
    CHECK_EQ(pl_store_member_role(t.s, g, a), PL_ROLE_NONE);
    CHECK_EQ(pl_store_member_role(t.s, g, c), PL_ROLE_ADMIN);
    CHECK_EQ(pl_store_member_role(t.s, g, b), PL_ROLE_MEMBER);
    CHECK_EQ(t_member_op(&t, PL_JOB_MEMBER_LEAVE, g, a, 0, NULL), PL_STORE_ENOTFOUND);

    /* a member leaving changes no roles */
    CHECK_EQ(t_member_op(&t, PL_JOB_MEMBER_LEAVE, g, b, 0, NULL), PL_STORE_OK);
    CHECK_EQ(pl_store_member_role(t.s, g, c), PL_ROLE_ADMIN);
    CHECK_EQ(pl_store_member_role(t.s, g, d), PL_ROLE_MEMBER);
    /* the last admin leaves: the only remaining member (d) is promoted */
    CHECK_EQ(t_member_op(&t, PL_JOB_MEMBER_LEAVE, g, c, 0, NULL), PL_STORE_OK);
    CHECK_EQ(pl_store_member_role(t.s, g, d), PL_ROLE_ADMIN);
    CHECK_EQ(t_member_op(&t, PL_JOB_MEMBER_LEAVE, g, d, 0, NULL), PL_STORE_OK);
    int64_t *ids;
    size_t n;
    CHECK_EQ(pl_store_members(t.s, g, &ids, &n), PL_STORE_OK);
    free(ids);
    CHECK_EQ(n, 0);
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
    int rc = pl_store_events(t->s, conv, after, before, limit, top, &ev, &n);
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
    CHECK_EQ(pl_store_events(t.s, g, 0, 3, 10, 0, &ev, &n), PL_STORE_OK);
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
    CHECK_EQ(pl_store_conv_list(t.s, a, &list, &n), PL_STORE_OK);
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
    CHECK_EQ(pl_store_conv_list(t.s, a, &list, &n), PL_STORE_OK);
    ok = n == 2 && list[0].id == d && list[0].unread == 1 && list[1].id == g;
    pl_conv_list_free(list, n);
    CHECK(ok);

    /* bob's view: alice's 2 and carol's 1 */
    pl_conv cv;
    CHECK_EQ(pl_store_conv_get(t.s, g, b, &cv), PL_STORE_OK);
    CHECK_EQ(cv.unread, 3);
    pl_conv_release(&cv);

    /* move alice's read cursor (receipts are not jobs yet: write it directly) */
    char p[160];
    snprintf(p, sizeof p, "%s/parley.db", t.dir);
    sqlite3 *db;
    CHECK_EQ(sqlite3_open(p, &db), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    char sql[128];
    snprintf(sql, sizeof sql, "UPDATE members SET read_seq = 4 WHERE conv_id = %lld AND user_id = %lld",
             (long long)g, (long long)a);
    int rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
    sqlite3_close(db);
    CHECK_EQ(rc, SQLITE_OK);
    CHECK_EQ(pl_store_conv_get(t.s, g, a, &cv), PL_STORE_OK);
    CHECK_EQ(cv.read_seq, 4);
    CHECK_EQ(cv.unread, 2);                       /* b3 (seq 5), c1 (seq 6) */
    pl_conv_release(&cv);
    CHECK_EQ(pl_store_conv_list(t.s, c, &list, &n), PL_STORE_OK);
    ok = n == 1 && list[0].unread == 5 && list[0].role == PL_ROLE_MEMBER;
    pl_conv_list_free(list, n);
    CHECK(ok);
    CHECK_EQ(pl_store_conv_list(t.s, 999, &list, &n), PL_STORE_OK);
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
    int64_t *ids;
    size_t n;
    CHECK_EQ(pl_store_members(t.s, g, &ids, &n), PL_STORE_OK);
    int64_t sum = 0;
    for (size_t i = 0; i < n; i++) sum += ids[i];
    free(ids);
    CHECK_EQ(n, 3);
    CHECK_EQ(sum, a + b + c);
    CHECK_EQ(pl_store_member_role(t.s, g, b), PL_ROLE_MEMBER);
    CHECK_EQ(pl_store_member_role(t.s, g, 999), PL_ROLE_NONE);
    CHECK_EQ(pl_store_member_role(t.s, 999, a), PL_ROLE_NONE);
    CHECK_EQ(pl_store_members(t.s, 999, &ids, &n), PL_STORE_OK);
    CHECK_EQ(n, 0);
    pl_conv cv;
    CHECK_EQ(pl_store_conv_get(t.s, 999, a, &cv), PL_STORE_ENOTFOUND);
    t_finish(&t);
}

/* ---- durability ---------------------------------------------------------- */

TEST(store_commit_failure_fails_batch_and_sticks) {
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
    CHECK_EQ(pl_store_user_by_name(t.s, "bob", &u, 0), PL_STORE_ENOTFOUND);
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
    CHECK_EQ(pl_store_user_by_id(t.s, b, &u), PL_STORE_OK);
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
    pl_store *s = NULL;
    const char *err = NULL;
    CHECK_EQ(pl_store_sqlite_open("/proc/parley-no-such-dir", 1, NULL, NULL, &s, &err),
             PL_STORE_EUNAVAIL);
    CHECK(s == NULL);
    CHECK(err != NULL);
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
    CHECK_EQ(pl_store_conv_get(t.s, g, b, &cv), PL_STORE_OK);
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
    CHECK_EQ(pl_store_shares(t.s, a, b), 1);
    CHECK_EQ(pl_store_shares(t.s, b, a), 1);
    CHECK_EQ(pl_store_shares(t.s, a, c), 0);
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
    CHECK_EQ(pl_store_user_by_id(t.s, a, &u), PL_STORE_OK);
    CHECK_EQ(u.last_seen, 5000);
    free(u.pwhash);
    t_finish(&t);
}
