/* test_store_pg.c — the PostgreSQL side of the store tests.
 *
 * t_pg_fresh_url() gives test_store.c's contract tests a fresh database per
 * test on the server $PARLEY_TEST_PG names (`make unit-pg` starts a
 * throwaway one with scripts/pg-scratch.sh). The tests here apply to
 * PostgreSQL only and return at once without $PARLEY_TEST_PG: opening and
 * migrating (also from schema 1, with data), several nodes on one database
 * (one conversation, idempotency across nodes, deadlocks, message actions),
 * node id leases, the outbox, the shared secret, statement errors inside a
 * batch (also in a message action), sends and actions that depend on each
 * other inside one batch, lost connections and a server restart
 * (that one also needs $PARLEY_TEST_PG_DIR, the scratch server's
 * directory), a differential test against the SQLite backend (the
 * reference; $PARLEY_PG_DIFF_SEED picks other random jobs), the purge on
 * two nodes among sends, edits and deletes, migration 12 -> 13 (the data
 * lifecycle) with data, blocks racing sends and direct opens on two nodes,
 * migration 13 -> 14 (blocks), claims and uploads of the E2EE key
 * directory overlapping on two nodes (kr_race holds a row the first node's
 * batch waits on), and a throughput measurement run only with
 * $PARLEY_PG_BENCH set.
 *
 * Jobs complete the way the server completes them: each store's notify()
 * wakes a drain thread of the test, which calls pl_store_drain(); done()
 * counts into a waiter the submitting thread sleeps on.
 */
#include "test.h"

#include "core/metrics.h"
#include "store/store.h"

#include <errno.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

int t_pg_fresh_url(const char *base, char *out, size_t n);
void pl_store_pg__hold(pl_store *s, int on);      /* pg_int.h */
int  pl_store_pg__held(pl_store *s);

/* ---- fresh databases --------------------------------------------------------- */

#define DB_PREFIX "parley_t_"

static int db_seq;
static char db_last[64];

/* Drops test databases left by processes that are gone, and this process's
 * previous one (its store is closed by now; ignored if it is not). */
static void drop_stale(PGconn *c) {
    PGresult *r = PQexec(c, "SELECT datname FROM pg_database WHERE datname LIKE 'parley\\_t\\_%'");
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        PQclear(r);
        return;
    }
    for (int i = 0; i < PQntuples(r); i++) {
        const char *name = PQgetvalue(r, i, 0);
        long pid = strtol(name + strlen(DB_PREFIX), NULL, 10);
        int mine = pid == (long)getpid();
        if (mine ? strcmp(name, db_last) != 0 : (pid > 0 && kill((pid_t)pid, 0) == 0)) continue;
        char *id = PQescapeIdentifier(c, name, strlen(name));
        char sql[160];
        snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS %s", id);
        PQfreemem(id);
        PQclear(PQexec(c, sql));
    }
    PQclear(r);
}

static void quiet(void *arg, const char *msg) {
    (void)arg;
    (void)msg;
}

/* URL of database name on the server c is connected to. */
static void url_of(PGconn *c, const char *name, char *out, size_t n) {
    const char *host = PQhost(c), *port = PQport(c), *user = PQuser(c);
    if (host && host[0] == '/')
        snprintf(out, n, "postgresql:///%s?host=%s&port=%s&user=%s", name, host, port, user);
    else
        snprintf(out, n, "postgresql://%s@%s:%s/%s", user, host, port, name);
}

int t_pg_fresh_url(const char *base, char *out, size_t n) {
    PGconn *c = PQconnectdb(base);
    if (PQstatus(c) != CONNECTION_OK) {
        fprintf(stderr, "  cannot connect to %s: %s", base, PQerrorMessage(c));
        PQfinish(c);
        return -1;
    }
    PQsetNoticeProcessor(c, quiet, NULL);
    drop_stale(c);
    char name[64], sql[128];
    snprintf(name, sizeof name, DB_PREFIX "%ld_%d", (long)getpid(), ++db_seq);
    snprintf(sql, sizeof sql, "CREATE DATABASE %s", name);     /* our own name: no quoting */
    PGresult *r = PQexec(c, sql);
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    if (!ok) fprintf(stderr, "  %s", PQerrorMessage(c));
    PQclear(r);
    if (ok) {
        snprintf(db_last, sizeof db_last, "%s", name);
        url_of(c, name, out, n);
    }
    PQfinish(c);
    return ok ? 0 : -1;
}

/* ---- a small harness: stores with drain threads, waiters ---------------------- */

typedef struct pnode {
    pl_store       *s;
    pthread_mutex_t mu;
    pthread_cond_t  cv;
    int             pending, stop;
    pthread_t       drainer;
} pnode;

typedef struct pwait {
    pthread_mutex_t mu;
    pthread_cond_t  cv;
    int             done;
} pwait;

/* Stores of the tests live in static slots, never reused: a failing CHECK
 * returns early and leaves its stores running, and their drain threads must
 * not find that memory reused. */
static pnode *n_slot(void) {
    static pnode pool[96];
    static int used;
    if (used == (int)(sizeof pool / sizeof pool[0])) abort();
    return &pool[used++];
}

static void n_notify(void *arg) {
    pnode *n = arg;
    pthread_mutex_lock(&n->mu);
    n->pending = 1;
    pthread_cond_signal(&n->cv);
    pthread_mutex_unlock(&n->mu);
}

static void *n_drain_main(void *arg) {
    pnode *n = arg;
    for (;;) {
        pthread_mutex_lock(&n->mu);
        while (!n->pending && !n->stop) pthread_cond_wait(&n->cv, &n->mu);
        int stop = n->stop;
        n->pending = 0;
        pthread_mutex_unlock(&n->mu);
        if (stop) return NULL;
        pl_store_drain(n->s);
    }
}

static int64_t open_large_group;                  /* opts.large_group of the next opens */
static int open_push;                             /* opts.push of the next opens */
static int64_t open_ws_members, open_ws_channels; /* opts.workspace_* of the next opens */

/* Opens a store on url (a SQLite one in data_dir when url is NULL). */
static int n_open_dir(pnode *n, const char *url, const char *data_dir, int node_id, int outbox,
                      char *err, size_t errlen) {
    memset(n, 0, sizeof *n);
    pthread_mutex_init(&n->mu, NULL);
    pthread_cond_init(&n->cv, NULL);
    pl_store_opts o = {.url = url, .data_dir = data_dir, .node_id = node_id, .outbox = outbox,
                       .large_group = open_large_group, .push = open_push,
                       .workspace_members = open_ws_members, .workspace_channels = open_ws_channels,
                       .notify = n_notify,
                       .notify_arg = n};
    int rc = pl_store_open(&o, &n->s, err, errlen);
    if (rc == 0) pthread_create(&n->drainer, NULL, n_drain_main, n);
    return rc;
}

static int n_open_opts(pnode *n, const char *url, int node_id, int outbox, char *err, size_t errlen) {
    return n_open_dir(n, url, NULL, node_id, outbox, err, errlen);
}

static int n_open(pnode *n, const char *url, int node_id, int outbox) {
    char err[256] = "";
    int rc = n_open_opts(n, url, node_id, outbox, err, sizeof err);
    if (rc) fprintf(stderr, "  store open failed: %s\n", err);
    return rc;
}

static void n_close(pnode *n) {
    if (!n->s) return;
    pthread_mutex_lock(&n->mu);
    n->stop = 1;
    pthread_cond_signal(&n->cv);
    pthread_mutex_unlock(&n->mu);
    pthread_join(n->drainer, NULL);
    pl_store_close(&n->s);                    /* finishes and drains the rest */
    pthread_mutex_destroy(&n->mu);
    pthread_cond_destroy(&n->cv);
}

static void w_init(pwait *w) {
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    w->done = 0;
}

static void w_done(pl_job *j) {
    pwait *w = j->data;
    pthread_mutex_lock(&w->mu);
    w->done++;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

/* Waits until w->done reaches target; -1 after 30 s. */
static int w_wait(pwait *w, int target) {
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += 30;
    pthread_mutex_lock(&w->mu);
    while (w->done < target)
        if (pthread_cond_timedwait(&w->cv, &w->mu, &dl) != 0) break;
    int ok = w->done >= target;
    pthread_mutex_unlock(&w->mu);
    return ok ? 0 : -1;
}

static void j_init(pl_job *j, pwait *w, pl_job_op op) {
    memset(j, 0, sizeof *j);
    j->op = op;
    j->done = w_done;
    j->data = w;
}

/* Submits n jobs to one store and waits for them. */
static int n_run(pnode *n, pl_job *jobs, size_t cnt) {
    pwait *w = jobs[0].data;
    int target = w->done + (int)cnt;
    for (size_t i = 0; i < cnt; i++) pl_store_submit(n->s, &jobs[i]);
    return w_wait(w, target);
}

/* Submits jobs as exactly one batch (PostgreSQL): queued behind a held
 * job (which then fails without running), then released. */
static int n_run_batch(pnode *n, pl_job *jobs, size_t cnt) {
    pwait *w = jobs[0].data;
    pl_job first;
    j_init(&first, w, PL_JOB_OUTBOX_ACK);
    int target = w->done + 1 + (int)cnt;
    pl_store_pg__hold(n->s, 1);
    pl_store_submit(n->s, &first);
    for (int i = 0; i < 5000 && !pl_store_pg__held(n->s); i++) {
        struct timespec ts = {0, 1000000L};
        nanosleep(&ts, NULL);
    }
    for (size_t i = 0; i < cnt; i++) pl_store_submit(n->s, &jobs[i]);
    pl_store_pg__hold(n->s, 0);
    return w_wait(w, target);
}

static int64_t n_user(pnode *n, const char *name) {
    pwait w;
    w_init(&w);
    pl_job j;
    j_init(&j, &w, PL_JOB_USER_CREATE);
    j.username = name;
    j.pwhash = "h";
    if (n_run(n, &j, 1)) return -99;
    return j.result ? j.result : j.out_id;
}

static int64_t n_group(pnode *n, int64_t creator, const int64_t *m, size_t cnt) {
    pwait w;
    w_init(&w);
    pl_job j;
    j_init(&j, &w, PL_JOB_GROUP_CREATE);
    j.user = creator;
    j.title = "g";
    j.members = m;
    j.nmembers = cnt;
    if (n_run(n, &j, 1)) return -99;
    pl_job_release(&j);
    return j.result ? j.result : j.out_id;
}

static void send_init(pl_job *j, pwait *w, int64_t conv, int64_t user, const char *cmid, const char *body) {
    j_init(j, w, PL_JOB_MESSAGE_SEND);
    j->conv = conv;
    j->user = user;
    j->client_msg_id = cmid;
    j->body = body;
    j->body_len = strlen(body);
}

/* Every event of conv (as no viewer), in order; -1 on failure. */
static int n_events(pnode *n, int64_t conv, pl_event **out, size_t *nout) {
    pwait w;
    w_init(&w);
    pl_event *all = NULL;
    size_t len = 0;
    int64_t after = 0;
    for (;;) {
        pl_job j;
        j_init(&j, &w, PL_READ_EVENTS);
        j.conv = conv;
        j.after = after;
        j.limit = PL_STORE_PAGE_MAX;
        if (n_run(n, &j, 1) || j.result) {
            pl_job_release(&j);
            pl_event_list_free(all, len);
            return -1;
        }
        if (j.nevents == 0) break;
        all = realloc(all, (len + j.nevents) * sizeof *all);
        memcpy(all + len, j.events, j.nevents * sizeof *all);
        len += j.nevents;
        after = j.events[j.nevents - 1].seq;
        free(j.events);                      /* the strings moved to all */
        j.events = NULL;
        j.nevents = 0;
        pl_job_release(&j);
    }
    *out = all;
    *nout = len;
    return 0;
}

/* 1 if conv's events run 1..n with seqs contiguous and ids and keys unique. */
static int check_log(pnode *n, int64_t conv, size_t *count) {
    pl_event *ev;
    size_t len;
    if (n_events(n, conv, &ev, &len)) return 0;
    int ok = 1;
    for (size_t i = 0; i < len && ok; i++) {
        if (ev[i].seq != (int64_t)i + 1) ok = 0;
        for (size_t k = 0; k < i && ok; k++) {
            if (ev[k].id == ev[i].id) ok = 0;
            if (ev[k].client_msg_id && ev[i].client_msg_id && ev[k].sender == ev[i].sender &&
                strcmp(ev[k].client_msg_id, ev[i].client_msg_id) == 0)
                ok = 0;
        }
    }
    pl_event_list_free(ev, len);
    if (count) *count = len;
    return ok;
}

static const char *pg_base(void) {
    const char *pg = getenv("PARLEY_TEST_PG");
    return pg && pg[0] ? pg : NULL;
}

#define PG_ONLY() do { if (!pg_base()) return; } while (0)

/* A libpq connection of the test's own to url (for setting up and looking). */
static PGconn *sql_conn(const char *url) {
    PGconn *c = PQconnectdb(url);
    if (PQstatus(c) != CONNECTION_OK) {
        fprintf(stderr, "  %s", PQerrorMessage(c));
        PQfinish(c);
        return NULL;
    }
    return c;
}

/* Runs constant SQL; returns the first column of the first row as an
 * integer (0 if none), or -1 on error. */
static long long sql_int(PGconn *c, const char *sql) {
    PGresult *r = PQexec(c, sql);
    long long v = -1;
    if (PQresultStatus(r) == PGRES_TUPLES_OK) v = PQntuples(r) ? atoll(PQgetvalue(r, 0, 0)) : 0;
    else if (PQresultStatus(r) == PGRES_COMMAND_OK) v = atoll(PQcmdTuples(r));
    else fprintf(stderr, "  sql failed: %s", PQerrorMessage(c));
    PQclear(r);
    return v;
}

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int64_t wall_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t mono_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- two nodes, one conversation ------------------------------------------------ */

enum { SENDERS = 8, PER_SENDER = 120, BURST = 6 };

typedef struct sender {
    pnode   *node;
    int64_t  conv, user;
    int      idx;
    pl_job   jobs[PER_SENDER];
    char     cmid[PER_SENDER][24];
    pwait    w;
} sender;

static void *sender_main(void *arg) {
    sender *sd = arg;
    w_init(&sd->w);
    for (int i = 0; i < PER_SENDER; i += BURST) {
        int k = i + BURST <= PER_SENDER ? BURST : PER_SENDER - i;
        for (int b = 0; b < k; b++) {
            snprintf(sd->cmid[i + b], sizeof sd->cmid[0], "s%d-%d", sd->idx, i + b);
            send_init(&sd->jobs[i + b], &sd->w, sd->conv, sd->user, sd->cmid[i + b], "x");
            pl_store_submit(sd->node->s, &sd->jobs[i + b]);
        }
        if (w_wait(&sd->w, i + k)) break;
    }
    return NULL;
}

/* Store invariant 1 across nodes: 8 senders on two stores (node ids 1 and
 * 2) append to one conversation at once. */
TEST(store_pg_two_nodes_one_conversation) {
    PG_ONLY();
    char url[256];
    CHECK_EQ(t_pg_fresh_url(pg_base(), url, sizeof url), 0);
    pnode *a = n_slot(), *b = n_slot();
    CHECK_EQ(n_open(a, url, 1, 0), 0);
    CHECK_EQ(n_open(b, url, 2, 0), 0);
    CHECK_EQ(a->s->node_id, 1);
    CHECK_EQ(b->s->node_id, 2);
    int64_t users[SENDERS];
    char name[16];
    for (int i = 0; i < SENDERS; i++) {
        snprintf(name, sizeof name, "u%d", i);
        users[i] = n_user(i % 2 ? b : a, name);
        CHECK(users[i] > 0);
    }
    int64_t g = n_group(a, users[0], users + 1, SENDERS - 1);
    CHECK(g > 0);
    sender *sd = calloc(SENDERS, sizeof *sd);
    pthread_t th[SENDERS];
    for (int i = 0; i < SENDERS; i++) {
        sd[i].node = i % 2 ? b : a;
        sd[i].conv = g;
        sd[i].user = users[i];
        sd[i].idx = i;
        pthread_create(&th[i], NULL, sender_main, &sd[i]);
    }
    for (int i = 0; i < SENDERS; i++) pthread_join(th[i], NULL);
    int bad = 0;
    char *seen = calloc(SENDERS * PER_SENDER + 2, 1);
    for (int i = 0; i < SENDERS; i++)
        for (int k = 0; k < PER_SENDER; k++) {
            pl_job *j = &sd[i].jobs[k];
            if (j->result != PL_STORE_OK || j->dup || j->event.seq < 2 ||
                j->event.seq > SENDERS * PER_SENDER + 1 || seen[j->event.seq])
                bad++;
            else seen[j->event.seq] = 1;
            pl_job_release(j);
        }
    free(seen);
    free(sd);
    CHECK_EQ(bad, 0);
    size_t count = 0;
    CHECK(check_log(a, g, &count));
    CHECK_EQ(count, 1 + SENDERS * PER_SENDER);
    CHECK(check_log(b, g, &count));
    CHECK_EQ(count, 1 + SENDERS * PER_SENDER);
    CHECK(pl_store_healthy(a->s) && pl_store_healthy(b->s));
    n_close(a);
    n_close(b);
}

/* Store invariant 3 across nodes: a retry through the other node returns
 * the original ack; the same key through both at once stores one copy. */
TEST(store_pg_idempotent_across_nodes) {
    PG_ONLY();
    char url[256];
    CHECK_EQ(t_pg_fresh_url(pg_base(), url, sizeof url), 0);
    pnode *a = n_slot(), *b = n_slot();
    CHECK_EQ(n_open(a, url, 1, 0), 0);
    CHECK_EQ(n_open(b, url, 2, 0), 0);
    int64_t u = n_user(a, "alice");
    int64_t g = n_group(a, u, NULL, 0);
    CHECK(g > 0);
    pwait w;
    w_init(&w);
    pl_job j1, j2;
    send_init(&j1, &w, g, u, "k1", "first");
    CHECK_EQ(n_run(a, &j1, 1), 0);
    CHECK_EQ(j1.result, PL_STORE_OK);
    CHECK_EQ(j1.dup, 0);
    send_init(&j2, &w, g, u, "k1", "retry");
    CHECK_EQ(n_run(b, &j2, 1), 0);
    CHECK_EQ(j2.result, PL_STORE_OK);
    CHECK_EQ(j2.dup, 1);
    CHECK_EQ(j2.event.seq, j1.event.seq);
    CHECK_EQ(j2.event.id, j1.event.id);
    CHECK_EQ(j2.event.ts, j1.event.ts);
    CHECK_STR(j2.event.body, "first");
    pl_job_release(&j1);
    pl_job_release(&j2);

    /* both nodes at once, many keys */
    enum { K = 50 };
    pl_job *ja = calloc(K, sizeof *ja), *jb = calloc(K, sizeof *jb);
    char (*cmid)[16] = calloc(K, sizeof *cmid);
    int target = w.done + 2 * K;
    for (int i = 0; i < K; i++) {
        snprintf(cmid[i], sizeof cmid[i], "both%d", i);
        send_init(&ja[i], &w, g, u, cmid[i], "a");
        send_init(&jb[i], &w, g, u, cmid[i], "b");
        pl_store_submit(a->s, &ja[i]);
        pl_store_submit(b->s, &jb[i]);
    }
    CHECK_EQ(w_wait(&w, target), 0);
    int bad = 0, dups = 0;
    for (int i = 0; i < K; i++) {
        if (ja[i].result || jb[i].result || ja[i].event.seq != jb[i].event.seq ||
            ja[i].event.id != jb[i].event.id || strcmp(ja[i].event.body, jb[i].event.body) != 0 ||
            ja[i].dup + jb[i].dup != 1)
            bad++;
        dups += ja[i].dup + jb[i].dup;
        pl_job_release(&ja[i]);
        pl_job_release(&jb[i]);
    }
    free(ja);
    free(jb);
    free(cmid);
    CHECK_EQ(bad, 0);
    CHECK_EQ(dups, K);
    size_t count = 0;
    CHECK(check_log(b, g, &count));
    CHECK_EQ(count, 2 + K);
    n_close(a);
    n_close(b);
}

/* Opening: an unreachable server is refused with the reason; nodes that
 * start at once on a new database migrate it once (the advisory lock). */
typedef struct opener {
    const char *url;
    int         node, rc;
    pnode      *n;
} opener;

static void *opener_main(void *arg) {
    opener *o = arg;
    char err[256] = "";
    o->rc = n_open_dir(o->n, o->url, NULL, o->node, 0, err, sizeof err);
    if (o->rc) fprintf(stderr, "  open %d: %s\n", o->node, err);
    return NULL;
}

TEST(store_pg_open) {
    PG_ONLY();
    char err[256] = "";
    pl_store *s = NULL;
    pl_store_opts o = {.url = "postgres://nobody@127.0.0.1:1/none", .node_id = 1};
    CHECK_EQ(pl_store_open(&o, &s, err, sizeof err), PL_STORE_EUNAVAIL);
    CHECK(s == NULL);
    CHECK(strstr(err, "cannot connect to PostgreSQL") != NULL);
    o.node_id = 1024;
    CHECK_EQ(pl_store_open(&o, &s, err, sizeof err), PL_STORE_EUNAVAIL);
    CHECK(strstr(err, "out of range") != NULL);

    char url[256];
    CHECK_EQ(t_pg_fresh_url(pg_base(), url, sizeof url), 0);
    enum { N = 4 };
    opener op[N];
    pthread_t th[N];
    for (int i = 0; i < N; i++) {
        op[i] = (opener){.url = url, .node = 10 + i, .n = n_slot()};
        pthread_create(&th[i], NULL, opener_main, &op[i]);
    }
    for (int i = 0; i < N; i++) pthread_join(th[i], NULL);
    for (int i = 0; i < N; i++) CHECK_EQ(op[i].rc, 0);
    PGconn *q = sql_conn(url);
    CHECK(q != NULL);
    CHECK_EQ(sql_int(q, "SELECT count(*) FROM parley_schema"), 1);
    CHECK_EQ(sql_int(q, "SELECT version FROM parley_schema"), 18);  /* ..., workspaces, reports, lifecycle, blocks */
    CHECK_EQ(sql_int(q, "SELECT count(*) FROM node_leases"), N);
    PQfinish(q);
    for (int i = 0; i < N; i++) n_close(op[i].n);
    pnode *a = n_slot();                                       /* reopen: nothing to do */
    CHECK_EQ(n_open(a, url, -1, 0), 0);
    CHECK_EQ(a->s->node_id, 0);
    n_close(a);
}

/* Store invariant 6: a live node id is refused, -1 leases the lowest free
 * one, close releases. */
TEST(store_pg_node_id_leases) {
    PG_ONLY();
    char url[256], err[256];
    CHECK_EQ(t_pg_fresh_url(pg_base(), url, sizeof url), 0);
    pnode *a = n_slot(), *b = n_slot(), *c = n_slot(), *d = n_slot();
    CHECK_EQ(n_open(a, url, 1, 0), 0);
    CHECK_EQ(n_open_opts(b, url, 1, 0, err, sizeof err), PL_STORE_EUNAVAIL);
    CHECK(b->s == NULL);
    CHECK(strstr(err, "node id 1 is in use by another live parleyd") != NULL);
    CHECK_EQ(n_open(c, url, -1, 0), 0);
    CHECK_EQ(c->s->node_id, 0);                         /* the lowest free */
    CHECK_EQ(n_open(d, url, -1, 0), 0);
    CHECK_EQ(d->s->node_id, 2);
    n_close(a);
    CHECK_EQ(n_open(b, url, 1, 0), 0);                /* released at close */
    CHECK_EQ(b->s->node_id, 1);
    /* an expired lease of a dead node is taken over */
    PGconn *q = sql_conn(url);
    CHECK(q != NULL);
    CHECK_EQ(sql_int(q, "INSERT INTO node_leases VALUES(7, 'dead', now() - interval '1 second')"), 1);
    n_close(d);
    CHECK_EQ(n_open(d, url, 7, 0), 0);
    CHECK_EQ(d->s->node_id, 7);
    CHECK_EQ(sql_int(q, "SELECT count(*) FROM node_leases WHERE node_id = 7 AND owner <> 'dead'"), 1);
    PQfinish(q);
    n_close(b);
    n_close(c);
    n_close(d);
}

/* Invariant 6: a node whose lease was taken refuses writes (and says it
 * is not healthy) until it has it back. */
TEST(store_pg_lease_lost_refuses_writes) {
    PG_ONLY();
    char url[256];
    CHECK_EQ(t_pg_fresh_url(pg_base(), url, sizeof url), 0);
    pnode *a = n_slot();
    CHECK_EQ(n_open(a, url, 3, 0), 0);
    int64_t u = n_user(a, "alice");
    int64_t g = n_group(a, u, NULL, 0);
    CHECK(g > 0);
    PGconn *q = sql_conn(url);
    CHECK(q != NULL);
    CHECK_EQ(sql_int(q, "UPDATE node_leases SET owner = 'thief', expires = now() + interval '1 hour'"
                        " WHERE node_id = 3"), 1);
    int unhealthy = 0;                       /* the idle tick's renewal sees it */
    for (int i = 0; i < 60 && !unhealthy; i++, sleep_ms(100)) unhealthy = !pl_store_healthy(a->s);
    CHECK(unhealthy);
    pwait w;
    w_init(&w);
    pl_job j;
    send_init(&j, &w, g, u, "x1", "x");
    CHECK_EQ(n_run(a, &j, 1), 0);
    CHECK_EQ(j.result, PL_STORE_EUNAVAIL);
    CHECK_EQ(sql_int(q, "UPDATE node_leases SET expires = now() - interval '1 second' WHERE node_id = 3"), 1);
    int ok = 0;
    for (int i = 0; i < 40 && !ok; i++) {         /* re-acquired within a few attempts */
        send_init(&j, &w, g, u, "x1", "x");
        CHECK_EQ(n_run(a, &j, 1), 0);
        ok = j.result == PL_STORE_OK;
        pl_job_release(&j);
        if (!ok) sleep_ms(250);
    }
    CHECK(ok);
    CHECK_EQ(pl_store_healthy(a->s), 1);
    CHECK_EQ(sql_int(q, "SELECT count(*) FROM node_leases WHERE node_id = 3 AND owner <> 'thief'"), 1);
    PQfinish(q);
    n_close(a);
}

/* Invariant 7: outbox rows per batch, acknowledged, taken over. */
TEST(store_pg_outbox) {
    PG_ONLY();
    char url[256];
    CHECK_EQ(t_pg_fresh_url(pg_base(), url, sizeof url), 0);
    pnode *a = n_slot(), *b = n_slot();
    CHECK_EQ(n_open(a, url, 1, 1), 0);
    CHECK_EQ(n_open(b, url, 2, 0), 0);                     /* no outbox */
    int64_t u = n_user(a, "alice");
    int64_t g1 = n_group(a, u, NULL, 0), g2 = n_group(a, u, NULL, 0);
    CHECK(g1 > 0 && g2 > 0);
    PGconn *q = sql_conn(url);
    CHECK(q != NULL);
    CHECK_EQ(sql_int(q, "SELECT count(*) FROM bus_outbox WHERE node = 1"), 2);   /* the creates */
    pwait w;
    w_init(&w);
    pl_job j[5];
    send_init(&j[0], &w, g1, u, "a", "x");
    send_init(&j[1], &w, g2, u, "b", "x");
    send_init(&j[2], &w, g1, u, "c", "x");
    send_init(&j[3], &w, g1, u, "a", "dup");
    send_init(&j[4], &w, g1, 999, "d", "not a member");
    CHECK_EQ(n_run_batch(a, j, 5), 0);                      /* one batch */
    int64_t batch = j[0].out_batch;
    CHECK(batch > 0);
    CHECK_EQ(j[1].out_batch, batch);
    CHECK_EQ(j[2].out_batch, batch);
    CHECK_EQ(j[3].dup, 1);
    CHECK_EQ(j[3].out_batch, 0);                             /* nothing appended */
    CHECK_EQ(j[4].result, PL_STORE_ENOTFOUND);
    CHECK_EQ((int64_t)j[0].event.id, batch);                 /* the first event's id */
    for (int i = 0; i < 5; i++) pl_job_release(&j[i]);
    CHECK(g1 < g2);                            /* conversations ascending, max seq each */
    char p1[24], p2[24], p3[24];
    snprintf(p1, sizeof p1, "%lld", (long long)batch);
    snprintf(p2, sizeof p2, "%lld", (long long)g1);
    snprintf(p3, sizeof p3, "%lld", (long long)g2);
    const char *pv[3] = {p1, p2, p3};
    PGresult *pr = PQexecParams(q, "SELECT count(*) FROM bus_outbox WHERE node = 1 AND id = $1::bigint"
                                " AND convs = ARRAY[$2::bigint, $3::bigint] AND seqs = ARRAY[3, 2]::bigint[]",
                                3, NULL, pv, NULL, NULL, 0);
    int rows = PQresultStatus(pr) == PGRES_TUPLES_OK ? atoi(PQgetvalue(pr, 0, 0)) : -1;
    PQclear(pr);
    CHECK_EQ(rows, 1);

    /* ack: this node's rows up to the id go; without outbox it is a no-op */
    pl_job ack;
    j_init(&ack, &w, PL_JOB_OUTBOX_ACK);
    ack.id = batch;
    CHECK_EQ(n_run(a, &ack, 1), 0);
    CHECK_EQ(ack.result, PL_STORE_OK);
    CHECK_EQ(sql_int(q, "SELECT count(*) FROM bus_outbox"), 0);
    CHECK_EQ(n_run(b, &ack, 1), 0);
    CHECK_EQ(ack.result, PL_STORE_OK);

    /* takeover: a dead node's old rows and this node's old rows; not a live
     * node's, not fresh ones */
    CHECK_EQ(sql_int(q, "INSERT INTO bus_outbox VALUES"
                        " (9, 1, ARRAY[100, 101], ARRAY[5, 7], now() - interval '10 seconds'),"
                        " (9, 2, ARRAY[100], ARRAY[6], now() - interval '9 seconds'),"
                        " (1, 3, ARRAY[102], ARRAY[1], now() - interval '6 seconds'),"
                        " (1, 4, ARRAY[103], ARRAY[1], now()),"
                        " (2, 5, ARRAY[104], ARRAY[1], now() - interval '10 seconds'),"
                        " (9, 6, ARRAY[105], ARRAY[1], now())"), 6);
    pl_job tk;
    j_init(&tk, &w, PL_JOB_OUTBOX_TAKEOVER);
    CHECK_EQ(n_run(a, &tk, 1), 0);
    CHECK_EQ(tk.result, PL_STORE_OK);
    CHECK_EQ(tk.nout, 3);
    int ok = tk.nout == 3 && tk.out_ids[0] == 100 && tk.heads[0] == 6 && tk.out_ids[1] == 101 &&
             tk.heads[1] == 7 && tk.out_ids[2] == 102 && tk.heads[2] == 1;
    pl_job_release(&tk);
    CHECK(ok);
    CHECK_EQ(sql_int(q, "SELECT count(*) FROM bus_outbox"), 3);
    j_init(&tk, &w, PL_JOB_OUTBOX_TAKEOVER);                  /* without outbox: no-op */
    CHECK_EQ(n_run(b, &tk, 1), 0);
    CHECK_EQ(tk.result, PL_STORE_OK);
    CHECK_EQ(tk.nout, 0);
    PQfinish(q);
    n_close(a);
    n_close(b);
}

TEST(store_pg_shared_secret) {
    PG_ONLY();
    char url[256];
    CHECK_EQ(t_pg_fresh_url(pg_base(), url, sizeof url), 0);
    pnode *a = n_slot(), *b = n_slot();
    CHECK_EQ(n_open(a, url, 1, 0), 0);
    CHECK_EQ(n_open(b, url, 2, 0), 0);
    uint8_t x[32], y[32], z[32], zero[32] = {0};
    CHECK_EQ(pl_store_shared_secret(a->s, "token", x), PL_STORE_OK);
    CHECK_EQ(pl_store_shared_secret(b->s, "token", y), PL_STORE_OK);
    CHECK(memcmp(x, y, 32) == 0);
    CHECK(memcmp(x, zero, 32) != 0);
    CHECK_EQ(pl_store_shared_secret(b->s, "other", z), PL_STORE_OK);
    CHECK(memcmp(x, z, 32) != 0);
    n_close(a);
    CHECK_EQ(n_open(a, url, 1, 0), 0);
    CHECK_EQ(pl_store_shared_secret(a->s, "token", z), PL_STORE_OK);
    CHECK(memcmp(x, z, 32) == 0);
    n_close(a);
    n_close(b);
}

/* ---- failures inside a batch (triggers make statements fail) ------------------- */

/* Invariant 4: an unexpected error in a multi-statement job fails that job
 * alone (its savepoint), the rest of the batch commits and no seq is
 * spent; an error in a statement of the batch's own fails the whole batch,
 * nothing of it committed. */
TEST(store_pg_statement_errors) {
    PG_ONLY();
    char url[256];
    CHECK_EQ(t_pg_fresh_url(pg_base(), url, sizeof url), 0);
    pnode *a = n_slot();
    CHECK_EQ(n_open(a, url, 1, 0), 0);
    int64_t u = n_user(a, "alice");
    int64_t g = n_group(a, u, NULL, 0);
    CHECK(g > 0);
    PGconn *q = sql_conn(url);
    CHECK(q != NULL);
    CHECK_EQ(sql_int(q, "INSERT INTO users(id, username, pwhash, created) VALUES(666, 'evil', 'h', 0)"), 1);
    CHECK_EQ(sql_int(q, "CREATE FUNCTION boom_m() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
                        " IF NEW.user_id = 666 THEN RAISE EXCEPTION 'boom'; END IF; RETURN NEW; END $$"), 0);
    CHECK_EQ(sql_int(q, "CREATE FUNCTION boom_e() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
                        " IF NEW.body = convert_to('boom', 'UTF8') THEN RAISE EXCEPTION 'boom'; END IF;"
                        " RETURN NEW; END $$"), 0);
    CHECK_EQ(sql_int(q, "CREATE TRIGGER boom BEFORE INSERT ON members FOR EACH ROW EXECUTE FUNCTION boom_m()"), 0);
    CHECK_EQ(sql_int(q, "CREATE TRIGGER boom BEFORE INSERT ON events FOR EACH ROW EXECUTE FUNCTION boom_e()"), 0);
    pwait w;
    w_init(&w);
    pl_job j[6];
    int64_t evil = 666;
    send_init(&j[0], &w, g, u, "s1", "one");
    j_init(&j[1], &w, PL_JOB_MEMBER_ADD);
    j[1].conv = g;
    j[1].user = u;
    j[1].peer = 666;
    send_init(&j[2], &w, g, u, "s2", "two");
    j_init(&j[3], &w, PL_JOB_GROUP_CREATE);
    j[3].user = u;
    j[3].title = "x";
    j[3].members = &evil;
    j[3].nmembers = 1;
    j_init(&j[4], &w, PL_JOB_DIRECT_OPEN);
    j[4].user = u;
    j[4].peer = 666;
    send_init(&j[5], &w, g, u, "s3", "three");
    CHECK_EQ(n_run_batch(a, j, 6), 0);
    CHECK_EQ(j[0].result, PL_STORE_OK);
    CHECK_EQ(j[0].event.seq, 2);
    CHECK_EQ(j[1].result, PL_STORE_EUNAVAIL);
    CHECK_EQ(j[1].has_event, 0);
    CHECK_EQ(j[2].result, PL_STORE_OK);
    CHECK_EQ(j[2].event.seq, 3);
    CHECK_EQ(j[3].result, PL_STORE_EUNAVAIL);
    CHECK_EQ(j[4].result, PL_STORE_EUNAVAIL);
    CHECK_EQ(j[5].result, PL_STORE_OK);
    CHECK_EQ(j[5].event.seq, 4);
    for (int i = 0; i < 6; i++) pl_job_release(&j[i]);
    size_t count = 0;
    CHECK(check_log(a, g, &count));
    CHECK_EQ(count, 4);
    CHECK_EQ(sql_int(q, "SELECT count(*) FROM conversations"), 1);
    CHECK_EQ(sql_int(q, "SELECT count(*) FROM members WHERE user_id = 666"), 0);

    /* the run's INSERT fails: the whole batch, nothing committed */
    send_init(&j[0], &w, g, u, "s4", "four");
    send_init(&j[1], &w, g, u, "s5", "boom");
    j_init(&j[2], &w, PL_JOB_USER_CREATE);
    j[2].username = "bob";
    j[2].pwhash = "h";
    CHECK_EQ(n_run_batch(a, j, 3), 0);
    for (int i = 0; i < 3; i++) {
        CHECK_EQ(j[i].result, PL_STORE_EUNAVAIL);
        CHECK_EQ(j[i].has_event, 0);
        pl_job_release(&j[i]);
    }
    CHECK_EQ(sql_int(q, "SELECT count(*) FROM users WHERE username = 'bob'"), 0);
    send_init(&j[0], &w, g, u, "s4", "four");                /* the retry */
    CHECK_EQ(n_run(a, j, 1), 0);
    CHECK_EQ(j[0].result, PL_STORE_OK);
    CHECK_EQ(j[0].dup, 0);
    CHECK_EQ(j[0].event.seq, 5);
    pl_job_release(&j[0]);
    CHECK(check_log(a, g, &count));
    CHECK_EQ(count, 5);
    CHECK(pl_store_healthy(a->s));
    PQfinish(q);
    n_close(a);
}

/* Invariant 1 and 5: a deadlock between two nodes (here on login rows,
 * made slow by a trigger) is detected by PostgreSQL and the losing batch is
 * retried: both complete OK. */
TEST(store_pg_deadlock_retried) {
    PG_ONLY();
    char url[256];
    CHECK_EQ(t_pg_fresh_url(pg_base(), url, sizeof url), 0);
    pnode *a = n_slot(), *b = n_slot();
    CHECK_EQ(n_open(a, url, 1, 0), 0);
    CHECK_EQ(n_open(b, url, 2, 0), 0);
    int64_t u = n_user(a, "alice");
    pwait w;
    w_init(&w);
    pl_job l[2];
    for (int i = 0; i < 2; i++) {
        j_init(&l[i], &w, PL_JOB_LOGIN_CREATE);
        l[i].user = u;
        l[i].expires = 4102444800000LL;
    }
    CHECK_EQ(n_run(a, l, 2), 0);
    CHECK(l[0].result == 0 && l[1].result == 0);
    PGconn *q = sql_conn(url);
    CHECK(q != NULL);
    CHECK_EQ(sql_int(q, "CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
                        " PERFORM pg_sleep(0.3); RETURN NULL; END $$"), 0);
    CHECK_EQ(sql_int(q, "CREATE TRIGGER slow AFTER UPDATE ON logins FOR EACH ROW EXECUTE FUNCTION slow()"), 0);
    long long before = sql_int(q, "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()");
    pl_job ja[2], jb[2];
    for (int i = 0; i < 2; i++) {
        j_init(&ja[i], &w, PL_JOB_LOGIN_REVOKE);
        j_init(&jb[i], &w, PL_JOB_LOGIN_REVOKE);
        ja[i].id = l[i].out_id;                      /* a: L1 then L2 */
        jb[i].id = l[1 - i].out_id;                  /* b: L2 then L1 */
    }
    pl_job ha, hb;                                   /* both held, released together */
    j_init(&ha, &w, PL_JOB_OUTBOX_ACK);
    j_init(&hb, &w, PL_JOB_OUTBOX_ACK);
    int target = w.done + 6;
    pl_store_pg__hold(a->s, 1);
    pl_store_pg__hold(b->s, 1);
    pl_store_submit(a->s, &ha);
    pl_store_submit(b->s, &hb);
    while (!pl_store_pg__held(a->s) || !pl_store_pg__held(b->s)) sleep_ms(1);
    for (int i = 0; i < 2; i++) {
        pl_store_submit(a->s, &ja[i]);
        pl_store_submit(b->s, &jb[i]);
    }
    pl_store_pg__hold(a->s, 0);
    pl_store_pg__hold(b->s, 0);
    CHECK_EQ(w_wait(&w, target), 0);
    for (int i = 0; i < 2; i++) {
        CHECK_EQ(ja[i].result, PL_STORE_OK);
        CHECK_EQ(jb[i].result, PL_STORE_OK);
    }
    long long after = before;
    for (int i = 0; i < 30 && after == before; i++, sleep_ms(100))
        after = sql_int(q, "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()");
    CHECK(after > before);                           /* there was one, and it was retried */
    CHECK_EQ(sql_int(q, "SELECT count(*) FROM logins WHERE revoked = 1"), 2);
    PQfinish(q);
    n_close(a);
    n_close(b);
}

/* ---- message actions, replies, mentions (store.h invariants 6 and 7) ------------- */

static void act_init(pl_job *j, pwait *w, pl_job_op op, int64_t conv, int64_t user, int64_t seq) {
    j_init(j, w, op);
    j->conv = conv;
    j->user = user;
    j->seq = seq;
}

/* The event at seq as viewer reads it (history), moved into *out; -1 if
 * the read fails or has no such event. */
static int n_event_at(pnode *n, int64_t conv, int64_t viewer, int64_t seq, pl_event *out) {
    pwait w;
    w_init(&w);
    pl_job j;
    j_init(&j, &w, PL_READ_EVENTS);
    j.conv = conv;
    j.user = viewer;
    j.after = seq - 1;
    j.before = seq + 1;
    j.limit = 1;
    int rc = n_run(n, &j, 1) || j.result || j.nevents != 1 ? -1 : 0;
    if (!rc) {
        *out = j.events[0];
        memset(&j.events[0], 0, sizeof j.events[0]);
    }
    pl_job_release(&j);
    return rc;
}

/* The conversation as user sees it (unread_mentions, notify); -1 if not. */
static int n_conv(pnode *n, int64_t conv, int64_t user, pl_conv *out) {
    pwait w;
    w_init(&w);
    pl_job j;
    j_init(&j, &w, PL_READ_CONV_GET);
    j.conv = conv;
    j.user = user;
    int rc = n_run(n, &j, 1) || j.result ? -1 : 0;
    if (!rc) {
        *out = j.conv_out;
        memset(&j.conv_out, 0, sizeof j.conv_out);
    }
    pl_job_release(&j);
    return rc;
}

static int has_str(const char *s, const char *sub) { return s && strstr(s, sub) != NULL; }

/* Schema 1 -> 2 on a database with data: the columns and tables come,
 * messages written before it read as before (no current form, no
 * mentions), and every action works on them. The downgrade to version 1
 * undoes exactly migration 1 -> 2. */
TEST(store_pg_migration_1_to_2) {
    PG_ONLY();
    char url[256];
    CHECK_EQ(t_pg_fresh_url(pg_base(), url, sizeof url), 0);
    pnode *a = n_slot();
    CHECK_EQ(n_open(a, url, 1, 0), 0);
    int64_t ann = n_user(a, "ann"), bob = n_user(a, "bob");
    int64_t g = n_group(a, ann, &bob, 1);
    CHECK(g > 0);
    pwait w;
    w_init(&w);
    pl_job j[3];
    send_init(&j[0], &w, g, ann, "m1", "old one @bob");
    send_init(&j[1], &w, g, bob, "m2", "old two");
    CHECK_EQ(n_run(a, j, 2), 0);
    CHECK(j[0].result == 0 && j[1].result == 0);
    pl_job_release(&j[0]);
    pl_job_release(&j[1]);
    n_close(a);
    PGconn *q = sql_conn(url);
    CHECK(q != NULL);
    CHECK_EQ(sql_int(q, "BEGIN"), 0);
    CHECK_EQ(sql_int(q, "ALTER TABLE events DROP COLUMN ref, DROP COLUMN edited_ts, DROP COLUMN deleted_ts,"
                        " DROP COLUMN pinned_ts"), 0);
    CHECK_EQ(sql_int(q, "DROP TABLE reactions, mentions"), 0);
    CHECK_EQ(sql_int(q, "ALTER TABLE members DROP COLUMN notify"), 0);
    CHECK_EQ(sql_int(q, "UPDATE events SET data = NULL WHERE kind = 2"), 2);   /* version 1 wrote none */
    CHECK_EQ(sql_int(q, "UPDATE parley_schema SET version = 1"), 1);
    CHECK_EQ(sql_int(q, "COMMIT"), 0);

    pnode *b = n_slot(), *c = n_slot();
    CHECK_EQ(n_open(b, url, 1, 0), 0);                      /* migrates */
    CHECK_EQ(n_open(c, url, 2, 0), 0);                      /* finds it done */
    CHECK_EQ(sql_int(q, "SELECT version FROM parley_schema"), 18);  /* ..., workspaces, reports, lifecycle, blocks */
    CHECK_EQ(sql_int(q, "SELECT count(*) FROM events WHERE ref = 0 AND edited_ts = 0 AND deleted_ts = 0"
                        " AND pinned_ts = 0"), 3);
    CHECK_EQ(sql_int(q, "SELECT count(*) FROM pg_indexes WHERE indexname IN ('events_ref', 'events_pinned',"
                        " 'mentions_seq')"), 3);
    CHECK_EQ(sql_int(q, "SELECT count(*) FROM pg_class WHERE relname = 'events_fts'"          /* 7 -> 8 */
                        " AND 'fastupdate=on' = ANY(reloptions) AND 'gin_pending_list_limit=256' = ANY(reloptions)"), 1);
    CHECK_EQ(sql_int(q, "SELECT count(*) FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang"   /* 8 -> 9 */
                        " WHERE p.proname = 'parley_body_tsv' AND l.lanname = 'plpgsql'"), 1);
    pl_event e;
    CHECK_EQ(n_event_at(c, g, bob, 2, &e), 0);
    int ok = e.body && strcmp(e.body, "old one @bob") == 0 && !e.annot && !e.data && e.ref == 0;
    pl_event_release(&e);
    CHECK(ok);
    pl_conv cv;
    CHECK_EQ(n_conv(c, g, bob, &cv), 0);
    ok = cv.unread == 1 && cv.unread_mentions == 0 && cv.notify == PL_NOTIFY_ALL;   /* no rows before */
    if (!ok) fprintf(stderr, "  unread %lld mentions %lld notify %d\n", (long long)cv.unread,
                     (long long)cv.unread_mentions, cv.notify);
    pl_conv_release(&cv);
    CHECK(ok);
    /* every action on the old messages */
    act_init(&j[0], &w, PL_JOB_REACTION, g, bob, 2);
    j[0].emoji = "\xF0\x9F\x91\x8D";
    act_init(&j[1], &w, PL_JOB_MESSAGE_EDIT, g, bob, 3);
    j[1].body = "new two @ann";
    j[1].body_len = strlen(j[1].body);
    send_init(&j[2], &w, g, ann, "m3", "answer");
    j[2].seq = 3;
    CHECK_EQ(n_run(b, j, 3), 0);
    for (int i = 0; i < 3; i++) CHECK_EQ(j[i].result, PL_STORE_OK);
    CHECK_EQ(j[2].event.seq, 6);
    CHECK_STR(j[2].event.annot, "\"reply_preview\":{\"seq\":3,\"sender\":2,\"body\":\"new two @ann\"}");
    for (int i = 0; i < 3; i++) pl_job_release(&j[i]);
    CHECK_EQ(n_event_at(c, g, ann, 2, &e), 0);
    ok = has_str(e.annot, "\"reactions\":[{\"emoji\":\"\xF0\x9F\x91\x8D\",\"count\":1,\"me\":false}]");
    pl_event_release(&e);
    CHECK(ok);
    CHECK_EQ(n_conv(c, g, ann, &cv), 0);
    ok = cv.unread_mentions == 1;                           /* the edit names ann; her own reply not */
    pl_conv_release(&cv);
    CHECK(ok);
    CHECK_EQ(n_conv(c, g, bob, &cv), 0);
    ok = cv.unread_mentions == 1;                           /* ann replied to bob */
    pl_conv_release(&cv);
    CHECK(ok);
    size_t count = 0;
    CHECK(check_log(c, g, &count));
    CHECK_EQ(count, 6);
    PQfinish(q);
    n_close(b);
    n_close(c);
}

/* One batch holding sends and actions that depend on each other: each job
 * sees exactly what the jobs before it did (a reply to a message appended
 * in the same run, actions on messages appended earlier in the batch, a
 * reply to a message deleted earlier in it, a dup after an edit). */
TEST(store_pg_actions_one_batch) {
    PG_ONLY();
    char url[256];
    CHECK_EQ(t_pg_fresh_url(pg_base(), url, sizeof url), 0);
    pnode *a = n_slot();
    CHECK_EQ(n_open(a, url, 1, 0), 0);
    int64_t ann = n_user(a, "ann"), bob = n_user(a, "bob"), cid = n_user(a, "cid");
    int64_t m[] = {bob, cid};
    int64_t g = n_group(a, ann, m, 2);
    CHECK(g > 0);
    pwait w;
    w_init(&w);
    enum { N = 13 };
    pl_job j[N];
    send_init(&j[0], &w, g, ann, "k0", "hello @bob");               /* 2 */
    send_init(&j[1], &w, g, bob, "k1", "re: hello");                /* 3, reply to 2 (same run) */
    j[1].seq = 2;
    send_init(&j[2], &w, g, cid, "k2", "re re @ann @cid");          /* 4, reply to 3 */
    j[2].seq = 3;
    send_init(&j[3], &w, g, cid, "k3", "to the future");            /* not there yet */
    j[3].seq = 9;
    send_init(&j[4], &w, g, cid, "k2", "dup of 4");                 /* dup in the run */
    act_init(&j[5], &w, PL_JOB_REACTION, g, bob, 2);                /* 5 */
    j[5].emoji = "\xE2\x9D\xA4";
    act_init(&j[6], &w, PL_JOB_MESSAGE_EDIT, g, ann, 2);            /* 6 */
    j[6].body = "hello @cid";
    j[6].body_len = strlen(j[6].body);
    send_init(&j[7], &w, g, ann, "k0", "dup of 2");                 /* dup: the current body */
    act_init(&j[8], &w, PL_JOB_MESSAGE_DELETE, g, ann, 3);          /* 7: an admin deletes bob's */
    send_init(&j[9], &w, g, cid, "k9", "reply to the deleted");     /* EGONE */
    j[9].seq = 3;
    act_init(&j[10], &w, PL_JOB_PIN, g, cid, 2);                    /* 8 */
    act_init(&j[11], &w, PL_JOB_NOTIFY_SET, g, cid, 0);
    j[11].level = PL_NOTIFY_MENTIONS;
    send_init(&j[12], &w, g, bob, "k12", "@all then");              /* 9 */
    CHECK_EQ(n_run_batch(a, j, N), 0);
    int64_t want_seq[N] = {2, 3, 4, 0, 4, 5, 6, 2, 7, 0, 8, 0, 9};
    int want_rc[N] = {0, 0, 0, PL_STORE_ENOTFOUND, 0, 0, 0, 0, 0, PL_STORE_EGONE, 0, 0, 0};
    for (int i = 0; i < N; i++) {
        if (j[i].result != want_rc[i] || (want_seq[i] && j[i].event.seq != want_seq[i]))
            fprintf(stderr, "  job %d: result %d seq %lld\n", i, j[i].result, (long long)j[i].event.seq);
        CHECK_EQ(j[i].result, want_rc[i]);
        if (want_seq[i]) CHECK_EQ(j[i].event.seq, want_seq[i]);
    }
    CHECK_STR(j[1].event.data, "{\"reply_to\":2}");
    CHECK_STR(j[1].event.annot, "\"reply_preview\":{\"seq\":2,\"sender\":1,\"body\":\"hello @bob\"}");
    CHECK_STR(j[2].event.data, "{\"reply_to\":3,\"mentions\":[1]}");
    CHECK_STR(j[3].why, "no such message");
    CHECK_EQ(j[4].dup, 1);
    CHECK(j[4].event.annot == NULL && j[4].event.data == NULL);
    CHECK_STR(j[5].event.data, "{\"target\":2,\"emoji\":\"\xE2\x9D\xA4\",\"op\":\"add\",\"count\":1}");
    CHECK_EQ(j[6].event.kind, PL_EV_EDIT);
    CHECK_EQ(j[6].event.ref, 2);
    CHECK_STR(j[6].event.data, "{\"target\":2,\"mentions\":[3]}");
    CHECK_EQ(j[7].dup, 1);
    CHECK_STR(j[7].event.body, "hello @cid");
    CHECK_STR(j[8].event.data, "{\"target\":3}");
    CHECK_STR(j[9].why, "message deleted");
    CHECK_STR(j[10].event.data, "{\"target\":2,\"op\":\"pin\"}");
    CHECK_EQ(j[11].created, 1);
    CHECK_EQ(j[11].has_event, 0);
    CHECK_STR(j[12].event.data, "{\"mention_all\":\"all\"}");
    for (int i = 0; i < N; i++) pl_job_release(&j[i]);

    /* the state afterwards */
    pl_event e;
    CHECK_EQ(n_event_at(a, g, bob, 2, &e), 0);
    int ok = e.body && strcmp(e.body, "hello @cid") == 0 && has_str(e.data, "\"mentions\":[3]") &&
             has_str(e.annot, "\"edited_ts\":") && has_str(e.annot, "\"pinned\":true") &&
             has_str(e.annot, "\"count\":1,\"me\":true");
    pl_event_release(&e);
    CHECK(ok);
    CHECK_EQ(n_event_at(a, g, cid, 4, &e), 0);                    /* a reply to the deleted */
    ok = has_str(e.annot, "\"reply_preview\":{\"seq\":3,\"deleted\":true}") && e.ref == 3;
    pl_event_release(&e);
    CHECK(ok);
    CHECK_EQ(n_event_at(a, g, cid, 3, &e), 0);
    ok = !e.body && !e.data && has_str(e.annot, "\"deleted\":true") && e.client_msg_id;
    pl_event_release(&e);
    CHECK(ok);
    /* mentions: ann by cid's @ann (4) and bob's @all (9), her reply row at
     * 3 went with it; bob by cid's reply to him (4), his @bob at 2 edited
     * away; cid by the edit (2) and @all */
    int64_t who[3] = {ann, bob, cid}, want[3] = {2, 1, 2};
    for (int i = 0; i < 3; i++) {
        pl_conv cv;
        CHECK_EQ(n_conv(a, g, who[i], &cv), 0);
        ok = cv.unread_mentions == want[i] && cv.notify == (who[i] == cid ? PL_NOTIFY_MENTIONS : 0);
        if (!ok) fprintf(stderr, "  user %lld: %lld mentions\n", (long long)who[i], (long long)cv.unread_mentions);
        pl_conv_release(&cv);
        CHECK(ok);
    }
    pl_job r;
    j_init(&r, &w, PL_READ_MENTIONS);
    r.conv = g;
    r.user = cid;
    r.limit = 1;
    CHECK_EQ(n_run(a, &r, 1), 0);
    ok = r.result == 0 && r.nevents == 1 && r.events[0].seq == 2 && r.more == 1 &&
         has_str(r.events[0].annot, "\"reactions\"");
    pl_job_release(&r);
    CHECK(ok);
    j_init(&r, &w, PL_READ_PINS);
    r.conv = g;
    r.user = cid;
    CHECK_EQ(n_run(a, &r, 1), 0);
    ok = r.result == 0 && r.nevents == 1 && r.events[0].seq == 2 && has_str(r.events[0].annot, "pinned");
    pl_job_release(&r);
    CHECK(ok);
    size_t count = 0;
    CHECK(check_log(a, g, &count));
    CHECK_EQ(count, 9);
    n_close(a);
}

/* Invariant 4 for actions: an unexpected error inside an action's
 * SAVEPOINT fails that action alone, spends no seq, leaves no event; the
 * rest of the batch commits. */
TEST(store_pg_action_fails_alone) {
    PG_ONLY();
    char url[256];
    CHECK_EQ(t_pg_fresh_url(pg_base(), url, sizeof url), 0);
    pnode *a = n_slot();
    CHECK_EQ(n_open(a, url, 1, 0), 0);
    int64_t ann = n_user(a, "ann");
    int64_t g = n_group(a, ann, NULL, 0);
    CHECK(g > 0);
    PGconn *q = sql_conn(url);
    CHECK(q != NULL);
    CHECK_EQ(sql_int(q, "CREATE FUNCTION boom_r() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
                        " IF NEW.emoji = convert_from('\\xe29880'::bytea, 'UTF8') THEN RAISE EXCEPTION 'boom';"
                        " END IF; RETURN NEW; END $$"), 0);
    CHECK_EQ(sql_int(q, "CREATE TRIGGER boom BEFORE INSERT ON reactions FOR EACH ROW EXECUTE FUNCTION boom_r()"), 0);
    pwait w;
    w_init(&w);
    pl_job j[5];
    send_init(&j[0], &w, g, ann, "s1", "one");                         /* 2 */
    act_init(&j[1], &w, PL_JOB_REACTION, g, ann, 2);                   /* boom */
    j[1].emoji = "\xE2\x98\x80";
    act_init(&j[2], &w, PL_JOB_REACTION, g, ann, 2);                   /* 3 */
    j[2].emoji = "\xE2\x98\x81";
    act_init(&j[3], &w, PL_JOB_PIN, g, ann, 2);                        /* 4 */
    send_init(&j[4], &w, g, ann, "s2", "two");                         /* 5 */
    CHECK_EQ(n_run_batch(a, j, 5), 0);
    CHECK_EQ(j[0].result, PL_STORE_OK);
    CHECK_EQ(j[1].result, PL_STORE_EUNAVAIL);
    CHECK_EQ(j[1].has_event, 0);
    CHECK_EQ(j[2].result, PL_STORE_OK);
    CHECK_EQ(j[2].event.seq, 3);
    CHECK_EQ(j[3].event.seq, 4);
    CHECK_EQ(j[4].event.seq, 5);
    for (int i = 0; i < 5; i++) pl_job_release(&j[i]);
    CHECK_EQ(sql_int(q, "SELECT count(*) FROM reactions"), 1);
    size_t count = 0;
    CHECK(check_log(a, g, &count));
    CHECK_EQ(count, 5);
    PQfinish(q);
    n_close(a);
}

/* Invariant 1 for actions: reactions and pins from two nodes on one
 * conversation serialize on its row lock: counts exact, caps held. */
TEST(store_pg_actions_two_nodes) {
    PG_ONLY();
    enum { U = 12, MSGS = 60 };
    char url[256];
    CHECK_EQ(t_pg_fresh_url(pg_base(), url, sizeof url), 0);
    pnode *a = n_slot(), *b = n_slot();
    CHECK_EQ(n_open(a, url, 1, 0), 0);
    CHECK_EQ(n_open(b, url, 2, 0), 0);
    int64_t users[U];
    char name[16];
    for (int i = 0; i < U; i++) {
        snprintf(name, sizeof name, "user%d", i);
        users[i] = n_user(a, name);
        CHECK(users[i] > 0);
    }
    int64_t g = n_group(a, users[0], users + 1, U - 1);
    CHECK(g > 0);
    pwait w;
    w_init(&w);
    pl_job *j = calloc(MSGS * 2, sizeof *j);
    char (*cm)[16] = calloc(MSGS, sizeof *cm);
    for (int i = 0; i < MSGS; i++) {
        snprintf(cm[i], sizeof cm[i], "m%d", i);
        send_init(&j[i], &w, g, users[0], cm[i], cm[i]);
    }
    CHECK_EQ(n_run(a, j, MSGS), 0);                                  /* seqs 2 .. MSGS + 1 */
    for (int i = 0; i < MSGS; i++) pl_job_release(&j[i]);
    /* every user reacts to message 2 and pins one message, half through each node */
    int target = w.done + 2 * U + MSGS;
    for (int i = 0; i < U; i++) {
        act_init(&j[i], &w, PL_JOB_REACTION, g, users[i], 2);
        j[i].emoji = "\xF0\x9F\x8E\x89";
        pl_store_submit(i % 2 ? b->s : a->s, &j[i]);
    }
    for (int i = 0; i < MSGS; i++) {
        act_init(&j[U + i], &w, PL_JOB_PIN, g, users[i % U], 2 + i);
        pl_store_submit(i % 2 ? a->s : b->s, &j[U + i]);
    }
    pl_job more[U];
    for (int i = 0; i < U; i++) {                     /* a second emoji, again */
        act_init(&more[i], &w, PL_JOB_REACTION, g, users[i], 2);
        more[i].emoji = "\xF0\x9F\x8E\x88";
        pl_store_submit(i % 2 ? a->s : b->s, &more[i]);
    }
    CHECK_EQ(w_wait(&w, target), 0);
    int pinned = 0, refused = 0, bad = 0;
    for (int i = 0; i < U; i++) bad += j[i].result != 0 || more[i].result != 0 || !j[i].has_event;
    for (int i = 0; i < MSGS; i++) {
        if (j[U + i].result == PL_STORE_OK && j[U + i].has_event) pinned++;
        else if (j[U + i].result == PL_STORE_EINVAL) refused++;
        else bad++;
    }
    CHECK_EQ(bad, 0);
    CHECK_EQ(pinned, PL_STORE_PINS_MAX);
    CHECK_EQ(refused, MSGS - PL_STORE_PINS_MAX);
    for (int i = 0; i < MSGS + U; i++) pl_job_release(&j[i]);
    for (int i = 0; i < U; i++) pl_job_release(&more[i]);
    free(j);
    free(cm);
    /* the counts in the REACTION events run 1..U per emoji, in seq order */
    pl_event *ev;
    size_t len;
    CHECK_EQ(n_events(b, g, &ev, &len), 0);
    int64_t seen1 = 0, seen2 = 0;
    for (size_t i = 0; i < len && !bad; i++) {
        if (ev[i].kind != PL_EV_REACTION) continue;
        char want[96];
        int first = has_str(ev[i].data, "\xF0\x9F\x8E\x89");
        snprintf(want, sizeof want, "\"count\":%lld}", (long long)(first ? ++seen1 : ++seen2));
        if (!has_str(ev[i].data, want)) bad = 1;
    }
    pl_event_list_free(ev, len);
    CHECK_EQ(bad, 0);
    CHECK_EQ(seen1, U);
    CHECK_EQ(seen2, U);
    size_t count = 0;
    CHECK(check_log(a, g, &count));
    CHECK_EQ(count, 1 + MSGS + 2 * U + PL_STORE_PINS_MAX);
    n_close(a);
    n_close(b);
}

/* ---- the SQLite backend is the reference ------------------------------------------ */

static uint32_t rnd_state;
static uint32_t rnd(void) {
    rnd_state = rnd_state * 1103515245u + 12345u;
    return (rnd_state >> 16) & 0x7fff;
}

static const char *const dkeys[] = {
    "k0", "k1", "k2", "k3", "k4", "k5", "k6", "k7", "k8", "k9", "k10", "k11", "k12", "k13",
    "k14", "k15", "k16", "k17", "k18", "k19", "k20", "k21", "k22", "k23", "k24", "k25",
};
static const char *const dbodies[] = {"a", "bb", "c c", "dddd", "e\xc3\xa9", "f", "g", "h",
                                      "hi @du1", "@du2 and @DU3. @du2", "@all hey", "@here @du0",
                                      "x@du4 no", "@du5-"};
static const char *const demoji[] = {"\xF0\x9F\x91\x8D", "\xE2\x9D\xA4", "\xF0\x9F\x8E\x89", "abc"};

/* One random job over users 1..nusers and conversations 1..maxconv (+1:
 * one that does not exist); members holds 4 int64 for a group create. */
static void gen_job(pl_job *j, pwait *w, int nusers, int64_t maxconv, int64_t *members) {
    int r = (int)(rnd() % 100);
    int64_t u = 1 + rnd() % (uint32_t)nusers, v = 1 + rnd() % (uint32_t)nusers;
    int64_t hot = maxconv < 4 ? maxconv : 4;                  /* most traffic: a few busy ones */
    int64_t c = rnd() % 4 ? 1 + rnd() % (uint32_t)hot : 1 + rnd() % (uint32_t)(maxconv + 1);
    if (r < 45) {
        const char *k = rnd() % 6 == 0 ? NULL : dkeys[rnd() % (sizeof dkeys / sizeof dkeys[0])];
        send_init(j, w, c, u, k, dbodies[rnd() % (sizeof dbodies / sizeof dbodies[0])]);
        if (rnd() % 4 == 0) j->seq = (int64_t)(rnd() % 30);           /* a reply */
        return;
    }
    if (rnd() % 25 == 0) {                       /* the data lifecycle (store.h invariant 13) */
        static const int64_t secs[] = {0, 1, 3600, -1};
        static const pl_job_op ops[] = {PL_JOB_RETENTION_SET, PL_JOB_RETENTION_SET, PL_JOB_RETENTION_SET,
                                        PL_JOB_RETENTION_SET, PL_JOB_HOLD_SET, PL_JOB_HOLD_SET,
                                        PL_JOB_RETENTION_PURGE, PL_JOB_RETENTION_PURGE, PL_JOB_RETENTION_PURGE,
                                        PL_JOB_ACCOUNT_DELETE};
        j_init(j, w, ops[rnd() % (sizeof ops / sizeof ops[0])]);
        j->conv = c;
        j->user = rnd() % 2 ? 1 + (c - 1) % nusers : u;        /* often the group's creator, its admin */
        j->value = secs[rnd() % 4];
        j->flags = rnd() % 8 == 0 ? PL_JOB_ADMIN : rnd() % 2 ? PL_JOB_REMOVE : 0;
        j->expires = wall_ms() + 10000;           /* retention 1 s: all due; 3600 s: none */
        j->limit = PL_STORE_PAGE_MAX * 50;
        return;
    }
    if (rnd() % 16 == 0) {                       /* blocks (store.h invariant 14): unblocks as often */
        j_init(j, w, PL_JOB_BLOCK);
        j->user = u;
        j->peer = rnd() % 12 == 0 ? 999 : v;     /* self: EINVAL; 999: ENOTFOUND */
        j->flags = rnd() % 2 ? PL_JOB_REMOVE : 0;
        return;
    }
    if (rnd() % 3 == 0) {                        /* message actions: a third of the rest */
        static const pl_job_op acts[] = {PL_JOB_MESSAGE_EDIT, PL_JOB_MESSAGE_DELETE, PL_JOB_REACTION,
                                         PL_JOB_REACTION, PL_JOB_PIN, PL_JOB_NOTIFY_SET};
        j_init(j, w, acts[rnd() % (sizeof acts / sizeof acts[0])]);
        j->conv = rnd() % 4 ? 1 + rnd() % (uint32_t)hot : c;
        /* group i (of the first ones) began with users i, i+1, i+2 */
        j->user = rnd() % 4 ? 1 + (j->conv - 1 + (int64_t)(rnd() % 3)) % nusers : u;
        j->seq = (int64_t)(rnd() % 30);
        j->body = dbodies[rnd() % (sizeof dbodies / sizeof dbodies[0])];
        j->body_len = strlen(j->body);
        j->emoji = demoji[rnd() % (sizeof demoji / sizeof demoji[0])];
        j->flags = rnd() % 3 == 0 ? PL_JOB_REMOVE : 0;
        j->level = (int)(rnd() % 4);
        return;
    }
    pl_job_op op = r < 70 ? PL_JOB_RECEIPT : r < 78 ? PL_JOB_MEMBER_ADD : r < 82 ? PL_JOB_MEMBER_REMOVE
                 : r < 84 ? PL_JOB_MEMBER_ROLE : r < 87 ? PL_JOB_MEMBER_LEAVE : r < 91 ? PL_JOB_DIRECT_OPEN
                 : r < 95 ? PL_JOB_LAST_SEEN : r < 97 ? PL_JOB_GROUP_CREATE : PL_JOB_LOGIN_CREATE;
    j_init(j, w, op);
    j->conv = c;
    j->user = u;
    j->peer = v;
    if (op == PL_JOB_MEMBER_ROLE) j->level = rnd() % 2 ? PL_ROLE_ADMIN : PL_ROLE_MEMBER;
    j->delivered = rnd() % 3 ? (int64_t)(rnd() % 40) : 0;
    j->read = rnd() % 2 ? (int64_t)(rnd() % 40) : 0;
    j->expires = op == PL_JOB_LOGIN_CREATE ? 4102444800000LL : (int64_t)rnd();
    j->title = "t";
    size_t n = rnd() % 4;
    for (size_t i = 0; i < n; i++) members[i] = rnd() % 10 == 0 ? 999 : 1 + rnd() % (uint32_t)nusers;
    j->members = members;
    j->nmembers = n;
}

static int str_eq(const char *a, const char *b) { return (!a && !b) || (a && b && strcmp(a, b) == 0); }

static int emoji_cmp(const void *a, const void *b) {
    const char *x = json_string_value(json_object_get(*(json_t *const *)a, "emoji"));
    const char *y = json_string_value(json_object_get(*(json_t *const *)b, "emoji"));
    return strcmp(x ? x : "", y ? y : "");
}

/* annot with its reactions sorted by emoji (their order of first use is
 * the batch's time, and the two backends batch differently) and edited_ts
 * true (a time), a new string or NULL. */
static char *annot_norm(const char *annot) {
    if (!annot) return NULL;
    size_t n = strlen(annot);
    char *txt = malloc(n + 3);
    txt[0] = '{';
    memcpy(txt + 1, annot, n);
    strcpy(txt + 1 + n, "}");
    json_t *o = json_loads(txt, 0, NULL);
    free(txt);
    if (!o) return strdup("(bad json)");
    if (json_object_get(o, "edited_ts")) json_object_set_new(o, "edited_ts", json_true());   /* a time */
    json_t *r = json_object_get(o, "reactions");
    if (json_is_array(r) && json_array_size(r) > 1) {
        size_t k = json_array_size(r);
        json_t **v = malloc(k * sizeof *v);
        for (size_t i = 0; i < k; i++) v[i] = json_incref(json_array_get(r, i));
        qsort(v, k, sizeof *v, emoji_cmp);
        json_array_clear(r);
        for (size_t i = 0; i < k; i++) json_array_append_new(r, v[i]);
        free(v);
    }
    char *out = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(o);
    return out;
}

static int annot_eq(const char *a, const char *b) {
    char *x = annot_norm(a), *y = annot_norm(b);
    int eq = str_eq(x, y);
    if (!eq) fprintf(stderr, "  annot %s (sqlite) != %s (pg)\n", x ? x : "-", y ? y : "-");
    free(x);
    free(y);
    return eq;
}

/* PL_READ_MENTIONS (ordered) and PL_READ_PINS (as a set: ties in the
 * pinning time are the batch's) of user in conv agree. */
static int same_lists(pnode *sq, pnode *pg, pwait *wq, pwait *wp, int64_t conv, int64_t user) {
    int ok = 1;
    for (int op = 0; op < 2 && ok; op++) {
        pl_job q, p;
        j_init(&q, wq, op ? PL_READ_PINS : PL_READ_MENTIONS);
        q.conv = conv;
        q.user = user;
        q.limit = PL_STORE_PAGE_MAX;
        p = q;
        p.data = wp;
        if (n_run(sq, &q, 1) || n_run(pg, &p, 1) || q.result != p.result || q.nevents != p.nevents ||
            q.more != p.more)
            ok = 0;
        for (size_t i = 0; ok && i < q.nevents; i++) {
            size_t k = i;
            if (op) for (k = 0; k < p.nevents && p.events[k].seq != q.events[i].seq; k++) {}
            ok = k < p.nevents && q.events[i].seq == p.events[k].seq &&
                 str_eq(q.events[i].body, p.events[k].body) && annot_eq(q.events[i].annot, p.events[k].annot);
        }
        if (!ok)
            fprintf(stderr, "  %s of user %lld in %lld differ: %d/%d, %zu/%zu events\n", op ? "pins" : "mentions",
                    (long long)user, (long long)conv, q.result, p.result, q.nevents, p.nevents);
        pl_job_release(&q);
        pl_job_release(&p);
    }
    return ok;
}

/* Everything but ids and times: a field-by-field diff, printed. */
static int same_job(const pl_job *x, const pl_job *y, int idx) {
#define SAME(f) do { if ((long long)x->f != (long long)y->f) { \
    fprintf(stderr, "  job %d (op %d): " #f " %lld (sqlite) != %lld (pg)\n", idx, (int)x->op, \
            (long long)x->f, (long long)y->f); return 0; } } while (0)
    SAME(result); SAME(out_id); SAME(created); SAME(dup); SAME(has_event);
    SAME(out_delivered); SAME(out_read); SAME(out_unread); SAME(out_members); SAME(out_peer);
    SAME(event.conv); SAME(event.seq); SAME(event.kind); SAME(event.sender); SAME(event.subject);
    SAME(event.body_len); SAME(event.ref);
#undef SAME
    if (!str_eq(x->why, y->why) || !str_eq(x->event.annot, y->event.annot)) {
        fprintf(stderr, "  job %d (op %d): why %s / %s, annot %s / %s\n", idx, (int)x->op,
                x->why ? x->why : "-", y->why ? y->why : "-", x->event.annot ? x->event.annot : "-",
                y->event.annot ? y->event.annot : "-");
        return 0;
    }
    if (!str_eq(x->event.client_msg_id, y->event.client_msg_id) || !str_eq(x->event.data, y->event.data) ||
        (x->event.body_len && memcmp(x->event.body, y->event.body, x->event.body_len) != 0)) {
        fprintf(stderr, "  job %d (op %d): event strings differ\n", idx, (int)x->op);
        return 0;
    }
    return 1;
}

static int same_conv(const pl_conv *x, const pl_conv *y) {
    int ok = x->id == y->id && x->kind == y->kind && str_eq(x->title, y->title) &&
             x->last_seq == y->last_seq && x->member_count == y->member_count && x->role == y->role &&
             x->joined_seq == y->joined_seq && x->delivered_seq == y->delivered_seq &&
             x->read_seq == y->read_seq && x->unread == y->unread && !x->last == !y->last &&
             x->unread_mentions == y->unread_mentions && x->notify == y->notify && x->blocked == y->blocked &&
             (!x->last || x->last->seq == y->last->seq) && x->nmembers == y->nmembers;
    for (size_t i = 0; ok && i < x->nmembers; i++)
        ok = x->members[i].user == y->members[i].user && x->members[i].role == y->members[i].role &&
             x->members[i].joined_seq == y->members[i].joined_seq &&
             x->members[i].read_seq == y->members[i].read_seq &&
             x->members[i].delivered_seq == y->members[i].delivered_seq;
    if (!ok)
        fprintf(stderr, "  conv %lld differs: unread %lld/%lld last_seq %lld/%lld members %lld/%lld"
                " mentions %lld/%lld blocked %d/%d\n", (long long)x->id, (long long)x->unread, (long long)y->unread,
                (long long)x->last_seq, (long long)y->last_seq, (long long)x->member_count,
                (long long)y->member_count, (long long)x->unread_mentions, (long long)y->unread_mentions,
                x->blocked, y->blocked);
    return ok;
}

static void rm_sqlite_dir(const char *root) {
    static const char *const files[] = {"parley.db", "parley.db-wal", "parley.db-shm", "parley.lock"};
    char p[160];
    for (size_t i = 0; i < 4; i++) {
        snprintf(p, sizeof p, "%s/data/%s", root, files[i]);
        unlink(p);
    }
    snprintf(p, sizeof p, "%s/data", root);
    rmdir(p);
    rmdir(root);
}

/* The same random jobs through both backends, PostgreSQL in large mixed
 * batches (runs of sends and receipts between other jobs), SQLite however
 * its writer batches them: every output and every read afterwards agree
 * (ids and times aside). */
TEST(store_pg_matches_sqlite) {
    PG_ONLY();
    enum { USERS = 6, GROUPS = 3, BATCHES = 60 };
    char url[256], root[64] = "/tmp/pl-pgdiff-XXXXXX", dir[96];
    CHECK_EQ(t_pg_fresh_url(pg_base(), url, sizeof url), 0);
    CHECK(mkdtemp(root) != NULL);
    snprintf(dir, sizeof dir, "%s/data", root);
    pnode *sq = n_slot(), *pg = n_slot();
    char err[256] = "";
    open_large_group = 3;                          /* groups grow past it: @all needs an admin */
    CHECK_EQ(n_open_dir(sq, NULL, dir, 1, 0, err, sizeof err), 0);
    CHECK_EQ(n_open(pg, url, 1, 0), 0);
    open_large_group = 0;
    char name[16];
    for (int i = 0; i < USERS; i++) {
        snprintf(name, sizeof name, "du%d", i);            /* @du0 .. in bodies */
        CHECK_EQ(n_user(sq, name), i + 1);
        CHECK_EQ(n_user(pg, name), i + 1);
    }
    for (int i = 0; i < GROUPS; i++) {
        int64_t m[] = {1 + (i + 1) % USERS, 1 + (i + 2) % USERS};
        CHECK_EQ(n_group(sq, 1 + i, m, 2), i + 1);
        CHECK_EQ(n_group(pg, 1 + i, m, 2), i + 1);
    }
    int64_t maxconv = GROUPS;
    const char *seed = getenv("PARLEY_PG_DIFF_SEED");      /* other runs: other seeds */
    rnd_state = seed ? (uint32_t)strtoul(seed, NULL, 10) : 20240601u;
    pwait wq, wp;
    w_init(&wq);
    w_init(&wp);
    int life[2] = {0};
    int64_t purged = 0;
    int jobs_total = 0, bad = 0, acts[3] = {0}, replies = 0, mentions = 0, whys = 0, blocks[2] = {0}, refused = 0;
    for (int b = 0; b < BATCHES && !bad; b++) {
        size_t n = 1 + rnd() % (b % 10 == 0 ? 400 : 60);
        pl_job *jq = calloc(n, sizeof *jq), *jp = calloc(n, sizeof *jp);
        int64_t (*mem)[4] = calloc(n, sizeof *mem);
        for (size_t i = 0; i < n; i++) {
            gen_job(&jq[i], &wq, USERS, maxconv, mem[i]);
            jp[i] = jq[i];
            jp[i].data = &wp;
        }
        if (n_run(sq, jq, n) || n_run_batch(pg, jp, n)) bad = 1;
        for (size_t i = 0; i < n && !bad; i++) {
            if (!same_job(&jq[i], &jp[i], jobs_total + (int)i)) bad = 1;
            int send = jq[i].op == PL_JOB_MESSAGE_SEND;
            if (!send && jq[i].op >= PL_JOB_MESSAGE_EDIT && jq[i].op <= PL_JOB_NOTIFY_SET)
                acts[jq[i].result == PL_STORE_OK ? jq[i].has_event : 2]++;
            if (send && jq[i].event.ref > 0 && !jq[i].dup) replies++;
            if (send && jq[i].event.data && strstr(jq[i].event.data, "mention")) mentions++;
            if (jq[i].why) whys++;
            if (jq[i].op == PL_JOB_BLOCK) blocks[jq[i].result == PL_STORE_OK ? 0 : 1]++;
            if (jq[i].why && strcmp(jq[i].why, "blocked") == 0) refused++;
            if (jq[i].op >= PL_JOB_RETENTION_SET && jq[i].op <= PL_JOB_ACCOUNT_DELETE)
                life[jq[i].result == PL_STORE_OK ? 0 : 1]++;
            if (jq[i].op == PL_JOB_RETENTION_PURGE && jq[i].result == PL_STORE_OK) purged += jq[i].out_id;
            if ((jq[i].op == PL_JOB_GROUP_CREATE || jq[i].op == PL_JOB_DIRECT_OPEN) && jq[i].out_id > maxconv)
                maxconv = jq[i].out_id;
        }
        for (size_t i = 0; i < n; i++) {
            pl_job_release(&jq[i]);
            pl_job_release(&jp[i]);
        }
        jobs_total += (int)n;
        free(jq);
        free(jp);
        free(mem);
    }
    CHECK_EQ(bad, 0);
    /* the state afterwards, through the reads */
    for (int64_t u = 1; u <= USERS && !bad; u++) {
        pl_job lq, lp;
        j_init(&lq, &wq, PL_READ_CONV_LIST);
        lq.user = u;
        lq.flags = PL_READ_WITH_LAST;
        lp = lq;
        lp.data = &wp;
        CHECK_EQ(n_run(sq, &lq, 1), 0);
        CHECK_EQ(n_run(pg, &lp, 1), 0);
        if (lq.nconvs != lp.nconvs) bad = 1;
        for (size_t i = 0; i < lq.nconvs && !bad; i++) {
            size_t k = 0;
            while (k < lp.nconvs && lp.convs[k].id != lq.convs[i].id) k++;
            if (k == lp.nconvs || !same_conv(&lq.convs[i], &lp.convs[k])) bad = 1;
            pl_job gq, gp;                                /* with members */
            j_init(&gq, &wq, PL_READ_CONV_GET);
            gq.conv = lq.convs[i].id;
            gq.user = u;
            gp = gq;
            gp.data = &wp;
            if (n_run(sq, &gq, 1) || n_run(pg, &gp, 1) || gq.result != gp.result ||
                !same_conv(&gq.conv_out, &gp.conv_out))
                bad = 1;
            pl_job_release(&gq);
            pl_job_release(&gp);
        }
        pl_job_release(&lq);
        pl_job_release(&lp);
        j_init(&lq, &wq, PL_READ_BLOCKS);                /* whom u blocks */
        lq.user = u;
        lp = lq;
        lp.data = &wp;
        CHECK_EQ(n_run(sq, &lq, 1), 0);
        CHECK_EQ(n_run(pg, &lp, 1), 0);
        if (lq.result != lp.result || lq.nusers != lp.nusers) bad = 1;
        for (size_t i = 0; i < lq.nusers && !bad; i++)
            if (lq.users[i].id != lp.users[i].id || strcmp(lq.users[i].username, lp.users[i].username) != 0) bad = 1;
        if (bad) fprintf(stderr, "  the blocks of user %lld differ\n", (long long)u);
        pl_job_release(&lq);
        pl_job_release(&lp);
    }
    CHECK_EQ(bad, 0);
    for (int64_t c = 1; c <= maxconv && !bad; c++) {
        pl_event *eq, *ep;
        size_t nq, np;
        CHECK_EQ(n_events(sq, c, &eq, &nq), 0);
        CHECK_EQ(n_events(pg, c, &ep, &np), 0);
        if (nq != np) bad = 1;
        for (size_t i = 0; i < nq && !bad; i++)
            if (eq[i].seq != ep[i].seq || eq[i].kind != ep[i].kind || eq[i].sender != ep[i].sender ||
                eq[i].subject != ep[i].subject || !str_eq(eq[i].client_msg_id, ep[i].client_msg_id) ||
                !str_eq(eq[i].data, ep[i].data) || !str_eq(eq[i].body, ep[i].body) || eq[i].ref != ep[i].ref ||
                !annot_eq(eq[i].annot, ep[i].annot))
                bad = 1;
        if (bad) fprintf(stderr, "  the logs of conversation %lld differ\n", (long long)c);
        for (int64_t u = 1; u <= USERS && !bad; u++) bad = !same_lists(sq, pg, &wq, &wp, c, u);
        pl_event_list_free(eq, nq);
        pl_event_list_free(ep, np);
    }
    CHECK_EQ(bad, 0);
    fprintf(stderr, "  (%d jobs, %lld conversations agree; actions: %d changed, %d not, %d refused;"
            " %d replies, %d with mentions, %d reasons; lifecycle: %d done, %d refused, %lld purged;"
            " blocks: %d done, %d refused, %d jobs refused \"blocked\")\n",
            jobs_total, (long long)maxconv, acts[1], acts[0], acts[2], replies, mentions, whys, life[0], life[1],
            (long long)purged, blocks[0], blocks[1], refused);
    n_close(sq);
    n_close(pg);
    rm_sqlite_dir(root);
}

/* ---- losing the database -------------------------------------------------------- */

enum { STREAM_KEYS = 100000 };

/* A client streaming sends in bursts until told to stop; a failed send is
 * retried later with the same key, as clients do. */
typedef struct stream {
    pnode   *node;
    int64_t  conv, user;
    volatile int acked;       /* keys acknowledged so far             */
    volatile int stop;        /* finish the keys in flight, then stop */
    int      failures;        /* bursts with an EUNAVAIL              */
    int64_t  worst_fail_ms;   /* longest time to a failed completion  */
    int64_t  seq[STREAM_KEYS];/* acknowledged seq of each key         */
    char     cmid[STREAM_KEYS][16];
} stream;

static void *stream_main(void *arg) {
    stream *st = arg;
    pwait w;
    w_init(&w);
    int next = 0, pending = 0;                 /* keys below next are acknowledged */
    int64_t give_up = mono_ms() + 120000;
    while (next < STREAM_KEYS - 4 && mono_ms() < give_up &&
           !(__atomic_load_n(&st->stop, __ATOMIC_ACQUIRE) && !pending)) {
        pl_job jobs[4];
        int k = 0;
        for (; k < 4; k++) {
            snprintf(st->cmid[next + k], sizeof st->cmid[0], "k%d", next + k);
            send_init(&jobs[k], &w, st->conv, st->user, st->cmid[next + k], st->cmid[next + k]);
        }
        int64_t t0 = mono_ms();
        int target = w.done + k;
        for (int i = 0; i < k; i++) pl_store_submit(st->node->s, &jobs[i]);
        if (w_wait(&w, target)) break;
        int64_t took = mono_ms() - t0;
        int failed = 0;
        for (int i = 0; i < k; i++) {
            if (jobs[i].result == PL_STORE_OK && !failed) {
                st->seq[next] = jobs[i].event.seq;
                next++;
            } else if (jobs[i].result != PL_STORE_OK) {
                failed = 1;
            }
            pl_job_release(&jobs[i]);
        }
        /* keys after a failure in the burst are sent again (possibly dups) */
        pending = failed;
        if (failed) {
            st->failures++;
            if (took > st->worst_fail_ms) st->worst_fail_ms = took;
            sleep_ms(20);
        }
        __atomic_store_n(&st->acked, next, __ATOMIC_RELEASE);
    }
    return NULL;
}

static void stream_wait(stream *st, int acked) {
    int64_t give_up = mono_ms() + 60000;
    while (__atomic_load_n(&st->acked, __ATOMIC_ACQUIRE) < acked && mono_ms() < give_up) sleep_ms(5);
}

/* Every key acknowledged is exactly once in the log, at its acked seq, and
 * the log is contiguous with nothing else in it. */
static int check_stream(pnode *n, stream *st, int64_t conv) {
    pl_event *ev;
    size_t len;
    if (n_events(n, conv, &ev, &len)) return 0;
    int ok = len == 1 + (size_t)st->acked;
    for (size_t i = 0; i < len && ok; i++) ok = ev[i].seq == (int64_t)i + 1;
    for (int k = 0; k < st->acked && ok; k++) {
        int64_t s = st->seq[k];
        ok = s >= 2 && (size_t)s <= len && ev[s - 1].client_msg_id &&
             strcmp(ev[s - 1].client_msg_id, st->cmid[k]) == 0;
    }
    if (!ok) fprintf(stderr, "  stream: %d acked, %zu events\n", st->acked, len);
    pl_event_list_free(ev, len);
    return ok;
}

/* Every connection of the store killed by the server (as a failover or an
 * operator would): batches in flight fail or are retried, nothing
 * acknowledged is lost, the store recovers by itself. */
TEST(store_pg_connections_killed) {
    PG_ONLY();
    char url[256];
    CHECK_EQ(t_pg_fresh_url(pg_base(), url, sizeof url), 0);
    pnode *a = n_slot();
    CHECK_EQ(n_open(a, url, 1, 0), 0);
    int64_t u = n_user(a, "alice");
    int64_t g = n_group(a, u, NULL, 0);
    CHECK(g > 0);
    PGconn *q = sql_conn(url);
    CHECK(q != NULL);
    stream *st = calloc(1, sizeof *st);
    st->node = a;
    st->conv = g;
    st->user = u;
    pthread_t th;
    pthread_create(&th, NULL, stream_main, st);
    for (int round = 0; round < 3; round++) {
        stream_wait(st, 80 * (round + 1));
        /* the writer at least (idle readers notice later); after an earlier
         * round it may still be reconnecting (backoff): wait for it, bounded */
        long long killed = 0;
        for (int tries = 0; tries < 100 && killed < 1; tries++) {
            if (tries) sleep_ms(50);
            killed = sql_int(q, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                                " WHERE application_name = 'parleyd' AND datname = current_database()");
        }
        CHECK(killed >= 1);
    }
    stream_wait(st, 300);
    __atomic_store_n(&st->stop, 1, __ATOMIC_RELEASE);
    pthread_join(th, NULL);
    int ok = check_stream(a, st, g);
    free(st);
    CHECK(ok);
    int healthy = 0;
    for (int i = 0; i < 50 && !healthy; i++, sleep_ms(100)) healthy = pl_store_healthy(a->s);
    CHECK(healthy);
    PQfinish(q);
    n_close(a);
}

static int scratch(const char *cmd) {
    const char *dir = getenv("PARLEY_TEST_PG_DIR");
    const char *script = getenv("PARLEY_TEST_PG_SCRIPT");
    char line[1024];
    snprintf(line, sizeof line, "%s %s %s >/dev/null", script && script[0] ? script : "scripts/pg-scratch.sh",
             cmd, dir);
    return system(line);
}

/* The server stops during a stream of sends: jobs fail fast with EUNAVAIL
 * while it is down, the store reports unhealthy, then everything succeeds
 * again after it is back; no acknowledged send is lost or duplicated. */
TEST(store_pg_server_restart) {
    PG_ONLY();
    const char *dir = getenv("PARLEY_TEST_PG_DIR");
    if (!dir || !dir[0]) {
        fprintf(stderr, "  (skipped: set PARLEY_TEST_PG_DIR to the scratch server's directory)\n");
        return;
    }
    char url[256];
    CHECK_EQ(t_pg_fresh_url(pg_base(), url, sizeof url), 0);
    pnode *a = n_slot();
    CHECK_EQ(n_open(a, url, 1, 0), 0);
    int64_t u = n_user(a, "alice");
    int64_t g = n_group(a, u, NULL, 0);
    CHECK(g > 0);
    stream *st = calloc(1, sizeof *st);
    st->node = a;
    st->conv = g;
    st->user = u;
    pthread_t th;
    pthread_create(&th, NULL, stream_main, st);
    stream_wait(st, 100);
    CHECK_EQ(scratch("stop"), 0);
    int acked_down = __atomic_load_n(&st->acked, __ATOMIC_ACQUIRE);
    int unhealthy = 0;
    for (int i = 0; i < 40 && !unhealthy; i++, sleep_ms(100)) unhealthy = !pl_store_healthy(a->s);
    sleep_ms(1500);
    int fails_down = st->failures;
    int acked_still = __atomic_load_n(&st->acked, __ATOMIC_ACQUIRE);
    /* reads fail fast too */
    pwait w;
    w_init(&w);
    pl_job r;
    j_init(&r, &w, PL_READ_CONV_LIST);
    r.user = u;
    int64_t t0 = mono_ms();
    CHECK_EQ(n_run(a, &r, 1), 0);
    int64_t read_ms = mono_ms() - t0;
    int read_rc = r.result;
    pl_job_release(&r);
    CHECK_EQ(scratch("start"), 0);
    stream_wait(st, acked_still + 100);         /* going again */
    __atomic_store_n(&st->stop, 1, __ATOMIC_RELEASE);
    pthread_join(th, NULL);
    int ok = check_stream(a, st, g);
    fprintf(stderr, "  (restart: %d acked before, %d failed bursts while down, worst failure %lld ms,"
            " read while down %lld ms)\n", acked_down, fails_down, (long long)st->worst_fail_ms,
            (long long)read_ms);
    int64_t worst = st->worst_fail_ms;
    free(st);
    CHECK(unhealthy);
    CHECK(fails_down > 0);
    CHECK(acked_still <= acked_down + 4);        /* nothing acknowledged while down */
    CHECK(worst < 3000);                         /* fail fast */
    CHECK_EQ(read_rc, PL_STORE_EUNAVAIL);
    CHECK(read_ms < 3000);
    CHECK(ok);
    int healthy = 0;
    for (int i = 0; i < 50 && !healthy; i++, sleep_ms(100)) healthy = pl_store_healthy(a->s);
    CHECK(healthy);
    n_close(a);
}

/* ---- throughput (PARLEY_PG_BENCH=1) ---------------------------------------------- */

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Batches of exactly `size` sends over 10 conversations: the batch is queued
 * behind a held one, then timed from release to the last done(). */
TEST(store_pg_bench_sends) {
    PG_ONLY();
    if (!getenv("PARLEY_PG_BENCH")) return;
    char url[256];
    CHECK_EQ(t_pg_fresh_url(pg_base(), url, sizeof url), 0);
    pnode *a = n_slot();
    CHECK_EQ(n_open(a, url, 1, 0), 0);
    enum { CONVS = 10 };
    int64_t u = n_user(a, "alice");
    int64_t conv[CONVS];
    for (int i = 0; i < CONVS; i++) CHECK((conv[i] = n_group(a, u, NULL, 0)) > 0);
    static const int sizes[] = {1, 10, 100, 1000, 4000};
    static char body[101];
    memset(body, 'b', 100);
    int key = 0;
    for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
        int size = sizes[si], rounds = size >= 1000 ? 30 : size >= 100 ? 60 : 300;
        pl_job *j = calloc((size_t)size, sizeof *j);
        char (*cmid)[16] = calloc((size_t)size, sizeof *cmid);
        pwait w;
        w_init(&w);
        double total_us = 0, commit_us = 0, *each = calloc((size_t)rounds, sizeof *each);
        for (int r = 0; r < rounds; r++) {
            pl_job first;
            j_init(&first, &w, PL_JOB_OUTBOX_ACK);
            pl_store_pg__hold(a->s, 1);
            pl_store_submit(a->s, &first);
            while (!pl_store_pg__held(a->s)) sleep_ms(1);
            int target = w.done + 1 + size;
            for (int i = 0; i < size; i++) {
                snprintf(cmid[i], sizeof cmid[i], "b%d", key++);
                send_init(&j[i], &w, conv[i % CONVS], u, cmid[i], body);
                pl_store_submit(a->s, &j[i]);
            }
            uint64_t c0 = __atomic_load_n(&pl_m_commit_seconds.sum_micro, __ATOMIC_RELAXED);
            struct timespec t0, t1;
            clock_gettime(CLOCK_MONOTONIC, &t0);
            pl_store_pg__hold(a->s, 0);               /* the held batch fails at once */
            CHECK_EQ(w_wait(&w, target), 0);
            clock_gettime(CLOCK_MONOTONIC, &t1);
            each[r] = (double)(t1.tv_sec - t0.tv_sec) * 1e6 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e3;
            total_us += each[r];
            commit_us += (double)(__atomic_load_n(&pl_m_commit_seconds.sum_micro, __ATOMIC_RELAXED) - c0);
            for (int i = 0; i < size; i++) {
                CHECK_EQ(j[i].result, PL_STORE_OK);
                pl_job_release(&j[i]);
            }
        }
        qsort(each, (size_t)rounds, sizeof *each, cmp_double);
        double per = total_us / rounds, med = each[rounds / 2], best = each[0];
        double cpb = commit_us / rounds;
        fprintf(stderr, "  batch %4d sends: release->done mean %6.0f us (%6.0f sends/s), median %6.0f us"
                " (%6.0f/s), best %6.0f us (%6.0f/s); BEGIN..COMMIT mean %6.0f us (%6.0f/s)\n",
                size, per, size / (per / 1e6), med, size / (med / 1e6), best, size / (best / 1e6), cpb,
                size / (cpb / 1e6));
        free(each);
        free(j);
        free(cmid);
    }
    n_close(a);
}

/* ---- end-to-end encryption: one-time prekeys across nodes (store.h 9) ------- */

enum { CLAIMERS = 4, CLAIMS = 25, CLAIM_BURST = 5, OTKS = 100 };

typedef struct claimer {
    pnode  *node;
    int64_t asker, peer;
    pl_job  jobs[CLAIMS];
    pwait   w;
} claimer;

static void *claimer_main(void *arg) {
    claimer *c = arg;
    w_init(&c->w);
    for (int i = 0; i < CLAIMS; i += CLAIM_BURST) {  /* bursts: batches of several claims */
        for (int k = i; k < i + CLAIM_BURST; k++) {
            j_init(&c->jobs[k], &c->w, PL_JOB_KEYS_CLAIM);
            c->jobs[k].user = c->asker;
            c->jobs[k].peer = c->peer;
            pl_store_submit(c->node->s, &c->jobs[k]);
        }
        if (w_wait(&c->w, i + CLAIM_BURST)) break;
    }
    return NULL;
}

/* Claims through two nodes at once (4 threads, 100 claims, 100 keys): each
 * key is handed out once, and no claim comes back empty while keys are
 * left (a claim blocked behind another node's would, without SKIP LOCKED). */
TEST(store_pg_e2ee_claims_across_nodes) {
    PG_ONLY();
    char url[256];
    CHECK_EQ(t_pg_fresh_url(pg_base(), url, sizeof url), 0);
    pnode *a = n_slot(), *b = n_slot();
    CHECK_EQ(n_open(a, url, 1, 0), 0);
    CHECK_EQ(n_open(b, url, 2, 0), 0);
    int64_t alice = n_user(a, "alice"), bob = n_user(b, "bob");
    CHECK(alice > 0 && bob > 0);
    CHECK(n_group(a, alice, &bob, 1) > 0);
    pwait w;
    w_init(&w);
    pl_job j;
    j_init(&j, &w, PL_JOB_LOGIN_CREATE);
    j.user = alice;
    j.expires = (int64_t)time(NULL) * 1000 + 3600 * 1000;
    CHECK_EQ(n_run(a, &j, 1), 0);
    int64_t device = j.out_id;
    CHECK(device > 0);
    static char keys[OTKS][16];
    pl_prekey otks[OTKS];
    for (int i = 0; i < OTKS; i++) {
        snprintf(keys[i], sizeof keys[i], "k%d", i + 1);
        otks[i].id = i + 1;
        otks[i].key = keys[i];
    }
    for (int half = 0; half < 2; half++) {          /* at most PL_KEYS_OTK_UPLOAD per upload */
        pl_keys_in k = {.identity = "id", .spk_id = 1, .spk = "s", .spk_sig = "g",
                        .otks = otks + half * OTKS / 2, .notks = OTKS / 2};
        j_init(&j, &w, PL_JOB_KEYS_UPLOAD);
        j.user = alice;
        j.id = device;
        j.keys = &k;
        CHECK_EQ(n_run(half ? b : a, &j, 1), 0);
        CHECK_EQ(j.result, PL_STORE_OK);
    }
    CHECK_EQ(j.out_id, OTKS);
    claimer *c = calloc(CLAIMERS, sizeof *c);
    pthread_t th[CLAIMERS];
    for (int i = 0; i < CLAIMERS; i++) {
        c[i].node = i % 2 ? b : a;
        c[i].asker = bob;
        c[i].peer = alice;
        pthread_create(&th[i], NULL, claimer_main, &c[i]);
    }
    for (int i = 0; i < CLAIMERS; i++) pthread_join(th[i], NULL);
    int seen[OTKS + 1] = {0}, got = 0, none = 0, bad = 0;
    for (int i = 0; i < CLAIMERS; i++)
        for (int k = 0; k < CLAIMS; k++) {
            pl_job *x = &c[i].jobs[k];
            if (x->result || x->ndevices != 1) bad++;
            else if (!x->devices[0].otk) none++;
            else if (x->devices[0].otk_id < 1 || x->devices[0].otk_id > OTKS || seen[x->devices[0].otk_id]++)
                bad++;
            else got++;
            pl_job_release(x);
        }
    free(c);
    CHECK_EQ(bad, 0);
    CHECK_EQ(got, OTKS);
    CHECK_EQ(none, CLAIMERS * CLAIMS - OTKS);
    n_close(a);
    n_close(b);
}

/* ---- the key directory's races across nodes (audit P1 F1-F3) ---------------- */

/* Two nodes, alice (in a group with bob) with a live login (her device) and
 * carol with a device of her own (the blocker's: see kr_race). */
typedef struct krace {
    char    url[256];
    pnode  *a, *b;
    int64_t alice, bob, carol, dev, dev2;
} krace;

static int64_t kr_login(pnode *n, int64_t user) {
    pwait w;
    w_init(&w);
    pl_job j;
    j_init(&j, &w, PL_JOB_LOGIN_CREATE);
    j.user = user;
    j.expires = (int64_t)time(NULL) * 1000 + 3600 * 1000;
    if (n_run(n, &j, 1) || j.result) return -1;
    return j.out_id;
}

/* *j: an upload to device of user of the identity "id" (none if !identity)
 * and the one-time prekeys first..first+n-1 (in otks, keys); when done,
 * out_id is the keys held. */
static void kr_upload_init(pl_job *j, pwait *w, pl_keys_in *k, pl_prekey *otks, char (*keys)[16],
                           int64_t user, int64_t device, int identity, int first, int n) {
    for (int i = 0; i < n; i++) {
        snprintf(keys[i], sizeof keys[i], "k%d", first + i);
        otks[i].id = first + i;
        otks[i].key = keys[i];
    }
    *k = (pl_keys_in){.identity = identity ? "id" : NULL, .spk_id = 1, .spk = "s", .spk_sig = "g",
                      .otks = otks, .notks = (size_t)n};
    j_init(j, w, PL_JOB_KEYS_UPLOAD);
    j->user = user;
    j->id = device;
    j->keys = k;
}

/* Runs such an upload through n: its result. */
static int kr_upload(pnode *n, int64_t user, int64_t device, int identity, int first, int cnt) {
    pwait w;
    w_init(&w);
    pl_job j;
    pl_keys_in k;
    static pl_prekey otks[PL_KEYS_OTK_UPLOAD];
    static char keys[PL_KEYS_OTK_UPLOAD][16];
    kr_upload_init(&j, &w, &k, otks, keys, user, device, identity, first, cnt);
    if (n_run(n, &j, 1)) return -1;
    return j.result;
}

static int kr_open(krace *r) {
    if (t_pg_fresh_url(pg_base(), r->url, sizeof r->url)) return -1;
    r->a = n_slot();
    r->b = n_slot();
    if (n_open(r->a, r->url, 1, 0) || n_open(r->b, r->url, 2, 0)) return -1;
    r->alice = n_user(r->a, "alice");
    r->bob = n_user(r->a, "bob");
    r->carol = n_user(r->a, "carol");
    if (r->alice <= 0 || r->bob <= 0 || r->carol <= 0 || n_group(r->a, r->alice, &r->bob, 1) <= 0) return -1;
    r->dev = kr_login(r->a, r->alice);
    r->dev2 = kr_login(r->a, r->carol);
    if (r->dev <= 0 || r->dev2 <= 0) return -1;
    return kr_upload(r->a, r->carol, r->dev2, 1, 1, 1);
}

/* Sessions of the test's database waiting on a lock. */
static long long kr_waiting(PGconn *q) {
    return sql_int(q, "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                      " AND wait_event_type = 'Lock'");
}

/* Polls until kr_waiting reaches n or *done reaches target (10 s at most). */
static int kr_until(PGconn *q, long long n, pwait *w, int target) {
    for (int i = 0; i < 2000; i++) {
        if (kr_waiting(q) >= n) return 0;
        if (w) {
            pthread_mutex_lock(&w->mu);
            int d = w->done >= target;
            pthread_mutex_unlock(&w->mu);
            if (d) return 0;
        }
        sleep_ms(5);
    }
    return -1;
}

/* Forces two jobs of the key directory to overlap across nodes: node a runs
 * *ja in a batch whose next job (carol deletes her device) waits on a row
 * the test's own transaction holds, so a's transaction stays open after
 * *ja ran; node b then runs *jb, which runs through or waits (on a), before
 * the test lets a commit. Each job has a waiter of its own (data). -1 if
 * something did not happen in time. */
static int kr_race(krace *r, pl_job *ja, pl_job *jb) {
    PGconn *c = sql_conn(r->url), *q = sql_conn(r->url);
    int rc = -1;
    pwait w;
    w_init(&w);
    pl_job first, del;
    j_init(&first, &w, PL_JOB_OUTBOX_ACK);
    j_init(&del, &w, PL_JOB_KEYS_DELETE);
    del.id = r->dev2;
    del.user = r->carol;
    pwait *wa = ja->data, *wb = jb->data;
    int ta = wa->done + 1, tb = wb->done + 1;
    char sql[160];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM (SELECT 1 FROM e2ee_devices WHERE device = %lld FOR UPDATE) x",
             (long long)r->dev2);
    if (!c || !q || sql_int(c, "BEGIN") < 0 || sql_int(c, sql) != 1) goto out;
    pl_store_pg__hold(r->a->s, 1);            /* one batch, as n_run_batch */
    pl_store_submit(r->a->s, &first);
    for (int i = 0; i < 5000 && !pl_store_pg__held(r->a->s); i++) sleep_ms(1);
    pl_store_submit(r->a->s, ja);
    pl_store_submit(r->a->s, &del);
    pl_store_pg__hold(r->a->s, 0);
    int ok = kr_until(q, 1, NULL, 0) == 0;    /* a: del waits on c */
    if (!ok) fprintf(stderr, "  a's batch did not wait\n");
    else {
        pl_store_submit(r->b->s, jb);
        ok = kr_until(q, 2, wb, tb) == 0;     /* b waits (on a), or is done */
        if (!ok) fprintf(stderr, "  b neither waited nor finished\n");
    }
    sql_int(c, "COMMIT");
    if (w_wait(&w, 2) || w_wait(wa, ta) || (ok && w_wait(wb, tb))) ok = 0;
    if (ok && del.result == PL_STORE_OK) rc = 0;
out:
    if (c) PQfinish(c);
    if (q) PQfinish(q);
    return rc;
}

static long long kr_held(krace *r) {
    PGconn *q = sql_conn(r->url);
    if (!q) return -1;
    char sql[120];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM e2ee_otks WHERE device = %lld", (long long)r->dev);
    long long n = sql_int(q, sql);
    PQfinish(q);
    return n;
}

/* Two claims of a device with 11 one-time prekeys overlap on two nodes: the
 * one that commits second reports the 9 left (below 10: keys_low), not the
 * 10 of its own snapshot. (Audit P1 F1: both reported 10.) */
TEST(store_pg_e2ee_claims_count_across_nodes) {
    PG_ONLY();
    krace r = {0};
    CHECK_EQ(kr_open(&r), 0);
    CHECK_EQ(kr_upload(r.a, r.alice, r.dev, 1, 1, 11), PL_STORE_OK);
    pwait wa, wb;
    w_init(&wa);
    w_init(&wb);
    pl_job ca, cb;
    j_init(&ca, &wa, PL_JOB_KEYS_CLAIM);
    ca.user = r.bob;
    ca.peer = r.alice;
    cb = ca;
    cb.data = &wb;
    CHECK_EQ(kr_race(&r, &ca, &cb), 0);
    CHECK_EQ(ca.result, PL_STORE_OK);
    CHECK_EQ(cb.result, PL_STORE_OK);
    CHECK(ca.ndevices == 1 && cb.ndevices == 1);
    CHECK(ca.devices[0].otk && cb.devices[0].otk);
    CHECK(ca.devices[0].otk_id != cb.devices[0].otk_id);
    int64_t na = ca.devices[0].otk_count, nb = cb.devices[0].otk_count;
    fprintf(stderr, "  claims reported %lld and %lld left\n", (long long)na, (long long)nb);
    pl_job_release(&ca);
    pl_job_release(&cb);
    CHECK_EQ(kr_held(&r), 9);
    CHECK_EQ(na < nb ? na : nb, 9);           /* the later one saw both */
    CHECK_EQ(na + nb, 19);
    n_close(r.a);
    n_close(r.b);
}

/* Two uploads of 60 new one-time prekeys to a device holding 100 overlap on
 * two nodes: the second sees the first's keys and is refused, 160 held.
 * (Audit P1 F2: both went in, 220 held.) */
TEST(store_pg_e2ee_upload_cap_across_nodes) {
    PG_ONLY();
    krace r = {0};
    CHECK_EQ(kr_open(&r), 0);
    CHECK_EQ(kr_upload(r.a, r.alice, r.dev, 1, 1, 100), PL_STORE_OK);
    pwait wa, wb;
    w_init(&wa);
    w_init(&wb);
    pl_job ua, ub;
    pl_keys_in ka, kb;
    static pl_prekey oa[60], ob[60];
    static char keya[60][16], keyb[60][16];
    kr_upload_init(&ua, &wa, &ka, oa, keya, r.alice, r.dev, 0, 101, 60);
    kr_upload_init(&ub, &wb, &kb, ob, keyb, r.alice, r.dev, 0, 201, 60);
    CHECK_EQ(kr_race(&r, &ua, &ub), 0);
    fprintf(stderr, "  results %d and %d, %lld held\n", ua.result, ub.result, kr_held(&r));
    CHECK_EQ(ua.result, PL_STORE_OK);
    CHECK_EQ(ua.out_id, 160);
    CHECK_EQ(ub.result, PL_STORE_EINVAL);
    CHECK(ub.why && strcmp(ub.why, "too many one-time prekeys held") == 0);
    CHECK_EQ(kr_held(&r), 160);
    n_close(r.a);
    n_close(r.b);
}

/* A new device's first upload, sent to two nodes at once: one of them
 * reports the device list changed (one e2ee devices event), the other
 * found it there. (Audit P1 F3: both saw no device, two events.) */
TEST(store_pg_e2ee_new_device_across_nodes) {
    PG_ONLY();
    krace r = {0};
    CHECK_EQ(kr_open(&r), 0);
    pwait wa, wb;
    w_init(&wa);
    w_init(&wb);
    pl_job ua, ub;
    pl_keys_in ka, kb;
    static pl_prekey oa[5], ob[5];
    static char keya[5][16], keyb[5][16];
    kr_upload_init(&ua, &wa, &ka, oa, keya, r.alice, r.dev, 1, 1, 5);
    kr_upload_init(&ub, &wb, &kb, ob, keyb, r.alice, r.dev, 1, 1, 5);
    CHECK_EQ(kr_race(&r, &ua, &ub), 0);
    fprintf(stderr, "  created %d and %d\n", ua.created, ub.created);
    CHECK_EQ(ua.result, PL_STORE_OK);
    CHECK_EQ(ub.result, PL_STORE_OK);
    CHECK_EQ(ua.created, 1);
    CHECK_EQ(ub.created, 0);
    CHECK_EQ(kr_held(&r), 5);
    n_close(r.a);
    n_close(r.b);
}

/* ---- push outbox claims across nodes (store.h invariant 10) ---------------- */

#define PUSH_MSGS     300
#define PUSH_CLAIMERS 4

typedef struct pclaimer {
    pnode   *node;
    int64_t *got;            /* rows claimed, in order of claiming */
    size_t   ngot, cap;
    int      failed;
} pclaimer;

/* Claims 16 rows at a time (leases far ahead: nothing comes back) until a
 * claim finds none. */
static void *pclaimer_main(void *arg) {
    pclaimer *c = arg;
    pwait w;
    w_init(&w);
    for (int round = 0; round < 1000; round++) {
        pl_job j;
        j_init(&j, &w, PL_JOB_PUSH_CLAIM);
        j.limit = 16;
        j.expires = 4102444800000LL;
        if (n_run(c->node, &j, 1) || j.result) {
            c->failed = 1;
            break;
        }
        size_t n = j.nout;
        if (c->ngot + n > c->cap) {
            c->cap = (c->ngot + n) * 2;
            c->got = realloc(c->got, c->cap * sizeof *c->got);
        }
        if (n) memcpy(c->got + c->ngot, j.out_ids, n * sizeof *c->got);
        c->ngot += n;
        pl_job_release(&j);
        if (n == 0) break;
    }
    return NULL;
}

/* Four threads claim the push outbox through two nodes at once: every row
 * is claimed exactly once (SKIP LOCKED: a row another node is claiming is
 * passed over, never taken twice or waited on). */
/* Two nodes of a fresh database with push on (*a id 1, *b id 2), a group of
 * alice (on a) and bob (on b), and n messages in it, the first `on_a` sent
 * through a and the rest through b (on_a < 0: alternating, alice's through
 * a, bob's through b). 0, or -1 (the nodes stay open, as a failing CHECK
 * leaves them: n_slot). */
static int push_nodes_with_messages(pnode **a, pnode **b, int n, int on_a) {
    char url[256];
    if (t_pg_fresh_url(pg_base(), url, sizeof url)) return -1;
    *a = n_slot();
    *b = n_slot();
    open_push = 1;
    int ra = n_open(*a, url, 1, 0), rb = ra ? -1 : n_open(*b, url, 2, 0);
    open_push = 0;
    if (ra || rb) return -1;
    int64_t alice = n_user(*a, "alice"), bob = n_user(*b, "bob");
    int64_t g = n_group(*a, alice, &bob, 1);
    if (g <= 0) return -1;
    pwait w;
    w_init(&w);
    pl_job *sends = calloc((size_t)n, sizeof *sends);
    char (*ids)[16] = calloc((size_t)n, sizeof *ids);
    for (int i = 0; i < n; i++) {
        int via_a = on_a < 0 ? i % 2 == 0 : i < on_a;
        snprintf(ids[i], sizeof ids[i], "m%d", i);
        send_init(&sends[i], &w, g, via_a ? alice : bob, ids[i], "hello");
        pl_store_submit(via_a ? (*a)->s : (*b)->s, &sends[i]);
    }
    if (w_wait(&w, n)) return -1;            /* jobs may be in flight: sends stays */
    int rc = 0;
    for (int i = 0; i < n; i++) {
        rc |= sends[i].result != PL_STORE_OK;
        pl_job_release(&sends[i]);
    }
    free(sends);
    free(ids);
    return rc ? -1 : 0;
}

TEST(store_pg_push_claims_across_nodes) {
    PG_ONLY();
    pnode *a, *b;
    CHECK_EQ(push_nodes_with_messages(&a, &b, PUSH_MSGS, -1), 0);
    pclaimer c[PUSH_CLAIMERS];
    pthread_t th[PUSH_CLAIMERS];
    memset(c, 0, sizeof c);
    for (int i = 0; i < PUSH_CLAIMERS; i++) {
        c[i].node = i % 2 ? b : a;
        pthread_create(&th[i], NULL, pclaimer_main, &c[i]);
    }
    for (int i = 0; i < PUSH_CLAIMERS; i++) pthread_join(th[i], NULL);
    size_t total = 0;
    int failed = 0;
    int64_t *all = malloc(PUSH_MSGS * 2 * sizeof *all);
    for (int i = 0; i < PUSH_CLAIMERS; i++) {
        failed |= c[i].failed;
        for (size_t k = 0; k < c[i].ngot && total < PUSH_MSGS * 2; k++) all[total++] = c[i].got[k];
        free(c[i].got);
    }
    int dup = 0;
    for (size_t x = 0; x < total; x++)
        for (size_t y = x + 1; y < total; y++) dup += all[x] == all[y];
    free(all);
    size_t by_a = 0, by_b = 0;
    for (int i = 0; i < PUSH_CLAIMERS; i++) *(c[i].node == a ? &by_a : &by_b) += c[i].ngot;
    n_close(a);
    n_close(b);
    CHECK_EQ(failed, 0);
    CHECK_EQ(dup, 0);
    CHECK_EQ(total, PUSH_MSGS);                        /* one row per message, each once */
    CHECK(by_a == 0 || by_b == 0);                     /* one node drains (the drainer lock) */
}

/* Claims once through n: the number of rows (leased far ahead), -1 on error. */
static long n_claim(pnode *n) {
    pwait w;
    w_init(&w);
    pl_job j;
    j_init(&j, &w, PL_JOB_PUSH_CLAIM);
    j.limit = 1000;
    j.expires = 4102444800000LL;
    long got = n_run(n, &j, 1) || j.result ? -1 : (long)j.nout;
    pl_job_release(&j);
    return got;
}

/* One node at a time claims from the push outbox (the drainer, docs/design.md
 * "Push notifications", "Order"), so two nodes never send one device's
 * notifications at once; when the drainer's session ends another node
 * takes over, and its first claim takes back every row the old one held. */
TEST(store_pg_push_one_drainer) {
    PG_ONLY();
    pnode *a, *b;
    CHECK_EQ(push_nodes_with_messages(&a, &b, 6, 3), 0);
    long first = n_claim(a), other = n_claim(b), again = n_claim(a);
    n_close(a);                                        /* the drainer's session ends */
    /* its backend lets go of the lock as it exits, after the client has
     * gone (a loaded CI machine's first claim came first and got 0);
     * the node's next pass takes over */
    long takeover = 0;
    for (int i = 0; i < 100 && takeover == 0; i++) {
        takeover = n_claim(b);
        if (takeover == 0) usleep(50000);
    }
    n_close(b);
    CHECK_EQ(first, 6);
    CHECK_EQ(other, 0);                                /* b is not the drainer */
    CHECK_EQ(again, 0);                                /* a holds every row */
    CHECK_EQ(takeover, 6);                             /* b drains, a's leases cleared */
}

/* ---- workspaces and channels across nodes (store.h invariant 11) ------------ */

static int64_t n_ws_job(pnode *n, pl_job_op op, int64_t ws, int64_t user, int64_t peer, const char *title,
                        const int64_t *m, size_t cnt) {
    pwait w;
    w_init(&w);
    pl_job j;
    j_init(&j, &w, op);
    j.id = ws;
    j.user = user;
    j.peer = peer;
    j.title = title;
    j.members = m;
    j.nmembers = cnt;
    if (n_run(n, &j, 1)) return -99;
    pl_job_release(&j);
    return j.result ? j.result : j.out_id;
}

/* 1 if bus_outbox has the row (node 1, id) with exactly these convs and seqs. */
static int outbox_row(PGconn *q, int64_t id, const int64_t *convs, const int64_t *seqs, int n) {
    char sql[512];
    int at = snprintf(sql, sizeof sql, "SELECT count(*) FROM bus_outbox WHERE node = 1 AND id = %lld"
                      " AND convs = ARRAY[", (long long)id);
    for (int i = 0; i < n; i++) at += snprintf(sql + at, sizeof sql - at, "%s%lld", i ? "," : "", (long long)convs[i]);
    at += snprintf(sql + at, sizeof sql - at, "]::bigint[] AND seqs = ARRAY[");
    for (int i = 0; i < n; i++) at += snprintf(sql + at, sizeof sql - at, "%s%lld", i ? "," : "", (long long)seqs[i]);
    snprintf(sql + at, sizeof sql - at, "]::bigint[]");
    return sql_int(q, sql) == 1;
}

/* Invariant 7 for the workspace jobs: their events are in the batch's
 * outbox row like any other; a removal appends nothing. */
TEST(store_pg_workspaces_outbox) {
    PG_ONLY();
    char url[256];
    CHECK_EQ(t_pg_fresh_url(pg_base(), url, sizeof url), 0);
    pnode *a = n_slot();
    CHECK_EQ(n_open(a, url, 1, 1), 0);
    int64_t u1 = n_user(a, "ann"), u2 = n_user(a, "bob");
    PGconn *q = sql_conn(url);
    CHECK(q != NULL);
    pwait w;
    w_init(&w);
    pl_job j[3];
    j_init(&j[0], &w, PL_JOB_WORKSPACE_CREATE);
    j[0].user = u1;
    j[0].title = "w";
    CHECK_EQ(n_run(a, j, 1), 0);
    CHECK_EQ(j[0].result, PL_STORE_OK);
    int64_t ws = j[0].out_id, gen = j[0].event.conv, one = 1;
    CHECK(j[0].out_batch > 0);
    CHECK(outbox_row(q, j[0].out_batch, &gen, &one, 1));
    pl_job_release(&j[0]);
    int64_t pub = n_ws_job(a, PL_JOB_CHANNEL_CREATE, ws, u1, 0, "pub", NULL, 0);
    CHECK(pub > gen);

    /* one batch: an add (general), a new channel, a join */
    j_init(&j[0], &w, PL_JOB_WORKSPACE_ADD);
    j[0].id = ws;
    j[0].user = u1;
    j[0].peer = u2;
    j_init(&j[1], &w, PL_JOB_CHANNEL_CREATE);
    j[1].id = ws;
    j[1].user = u1;
    j[1].title = "dev";
    j[1].members = &u2;
    j[1].nmembers = 1;
    j_init(&j[2], &w, PL_JOB_CHANNEL_JOIN);
    j[2].conv = pub;
    j[2].user = u2;
    CHECK_EQ(n_run_batch(a, j, 3), 0);
    for (int i = 0; i < 3; i++) CHECK_EQ(j[i].result, PL_STORE_OK);
    int64_t batch = j[0].out_batch, dev = j[1].out_id;
    CHECK(batch > 0 && dev > pub);
    CHECK_EQ(j[1].out_batch, batch);
    CHECK_EQ(j[2].out_batch, batch);
    CHECK_EQ((int64_t)j[0].event.id, batch);
    for (int i = 0; i < 3; i++) pl_job_release(&j[i]);
    int64_t convs[3] = {gen, pub, dev}, seqs[3] = {2, 2, 1};
    CHECK(outbox_row(q, batch, convs, seqs, 3));

    j_init(&j[0], &w, PL_JOB_WORKSPACE_REMOVE);
    j[0].id = ws;
    j[0].user = u2;
    j[0].peer = u2;
    CHECK_EQ(n_run(a, j, 1), 0);
    CHECK_EQ(j[0].result, PL_STORE_OK);
    CHECK_EQ(j[0].has_event, 0);
    CHECK_EQ(j[0].out_batch, 0);
    CHECK_EQ(j[0].nout, 3);
    pl_job_release(&j[0]);
    PQfinish(q);
    n_close(a);
}

/* Invariant 13 of store_pg.c: a removal from a workspace on one node while
 * another node joins the member to channels. Every channel it ends up in
 * is in the removal's list (nothing to evict is missed), and no join
 * lands after the removal. Several rounds, the removal submitted at
 * another point of the joins each time. */
TEST(store_pg_workspace_remove_races_joins) {
    PG_ONLY();
    enum { K = 24, ROUNDS = 4 };
    char url[256];
    CHECK_EQ(t_pg_fresh_url(pg_base(), url, sizeof url), 0);
    pnode *a = n_slot(), *b = n_slot();
    CHECK_EQ(n_open(a, url, 1, 0), 0);
    CHECK_EQ(n_open(b, url, 2, 0), 0);
    int64_t owner = n_user(a, "owner"), x = n_user(a, "xena");
    PGconn *q = sql_conn(url);
    CHECK(q != NULL);
    for (int round = 0; round < ROUNDS; round++) {
        int64_t ws = n_ws_job(a, PL_JOB_WORKSPACE_CREATE, 0, owner, 0, "w", NULL, 0);
        CHECK(ws > 0);
        CHECK_EQ(n_ws_job(b, PL_JOB_WORKSPACE_ADD, ws, owner, x, NULL, NULL, 0), ws);
        int64_t ch[K];
        for (int i = 0; i < K; i++) {
            char name[16];
            snprintf(name, sizeof name, "c%d", i);
            ch[i] = n_ws_job(i % 2 ? a : b, PL_JOB_CHANNEL_CREATE, ws, owner, 0, name, NULL, 0);
            CHECK(ch[i] > 0);
        }
        pwait w;
        w_init(&w);
        pl_job jn[K], rm;
        for (int i = 0; i < K; i++) {
            j_init(&jn[i], &w, PL_JOB_CHANNEL_JOIN);
            jn[i].conv = ch[i];
            jn[i].user = x;
        }
        j_init(&rm, &w, PL_JOB_WORKSPACE_REMOVE);
        rm.id = ws;
        rm.user = owner;
        rm.peer = x;
        int split = K * round / ROUNDS + 2;
        for (int i = 0; i < K; i++) {
            if (i == split) pl_store_submit(b->s, &rm);
            pl_store_submit(a->s, &jn[i]);
        }
        CHECK_EQ(w_wait(&w, K + 1), 0);
        CHECK_EQ(rm.result, PL_STORE_OK);
        int joined = 0;
        for (int i = 0; i < K; i++) {
            CHECK(jn[i].result == PL_STORE_OK || jn[i].result == PL_STORE_ENOTFOUND);
            joined += jn[i].result == PL_STORE_OK;
            pl_job_release(&jn[i]);
        }
        char sql[4096];
        int at = snprintf(sql, sizeof sql, "SELECT count(*) FROM members m JOIN conversations c ON c.id = m.conv_id"
                          " WHERE c.workspace = %lld AND m.user_id = %lld AND m.conv_id = ANY(ARRAY[0",
                          (long long)ws, (long long)x);
        for (size_t i = 0; i < rm.nout; i++) at += snprintf(sql + at, sizeof sql - at, ",%lld", (long long)rm.out_ids[i]);
        snprintf(sql + at, sizeof sql - at, "]::bigint[])");
        long long listed = sql_int(q, sql);
        snprintf(sql, sizeof sql, "SELECT count(*) FROM members m JOIN conversations c ON c.id = m.conv_id"
                 " WHERE c.workspace = %lld AND m.user_id = %lld", (long long)ws, (long long)x);
        long long in = sql_int(q, sql);
        size_t nout = rm.nout;
        pl_job_release(&rm);
        CHECK_EQ(in, (long long)joined + 1);                  /* the joins and general */
        CHECK_EQ(nout, (size_t)in);                           /* each one listed ... */
        CHECK_EQ(listed, in);                                 /* ... by its id */
    }
    PQfinish(q);
    n_close(a);
    n_close(b);
}

/* The quotas and channel names hold across nodes: two nodes add members
 * and create channels of one workspace at once. */
TEST(store_pg_workspace_quotas_across_nodes) {
    PG_ONLY();
    enum { N = 12 };
    char url[256];
    CHECK_EQ(t_pg_fresh_url(pg_base(), url, sizeof url), 0);
    open_ws_members = 5;
    open_ws_channels = 4;
    pnode *a = n_slot(), *b = n_slot();
    int ra = n_open(a, url, 1, 0), rb = n_open(b, url, 2, 0);
    open_ws_members = open_ws_channels = 0;
    CHECK(ra == 0 && rb == 0);
    int64_t owner = n_user(a, "owner"), u[N];
    for (int i = 0; i < N; i++) {
        char name[16];
        snprintf(name, sizeof name, "user%d", i);
        CHECK((u[i] = n_user(a, name)) > 0);
    }
    int64_t ws = n_ws_job(a, PL_JOB_WORKSPACE_CREATE, 0, owner, 0, "w", NULL, 0);
    CHECK(ws > 0);
    pwait w;
    w_init(&w);
    pl_job add[N], mk[N];
    static const char *const names[N] = {"same", "same", "c1", "c2", "c3", "c4", "c5", "c6", "c7", "c8",
                                         "c9", "c10"};
    for (int i = 0; i < N; i++) {
        j_init(&add[i], &w, PL_JOB_WORKSPACE_ADD);
        add[i].id = ws;
        add[i].user = owner;
        add[i].peer = u[i];
        j_init(&mk[i], &w, PL_JOB_CHANNEL_CREATE);
        mk[i].id = ws;
        mk[i].user = owner;
        mk[i].title = names[i];
    }
    for (int i = 0; i < N; i++) {
        pl_store_submit((i % 2 ? a : b)->s, &add[i]);
        pl_store_submit((i % 2 ? b : a)->s, &mk[i]);
    }
    CHECK_EQ(w_wait(&w, 2 * N), 0);
    int added = 0, full = 0, made = 0, many = 0, conflict = 0, same = 0;
    for (int i = 0; i < N; i++) {
        added += add[i].result == PL_STORE_OK;
        full += add[i].result == PL_STORE_EINVAL && add[i].why && strcmp(add[i].why, "workspace full") == 0;
        made += mk[i].result == PL_STORE_OK;
        same += i < 2 && mk[i].result == PL_STORE_OK;
        many += mk[i].result == PL_STORE_EINVAL && mk[i].why && strcmp(mk[i].why, "too many channels") == 0;
        conflict += mk[i].result == PL_STORE_ECONFLICT;
        pl_job_release(&add[i]);
        pl_job_release(&mk[i]);
    }
    CHECK_EQ(added, 4);                                       /* the owner and 4 */
    CHECK_EQ(full, N - 4);
    CHECK_EQ(made, 3);                                        /* general and 3 */
    CHECK_EQ(made + many + conflict, N);
    CHECK(same <= 1);
    PGconn *q = sql_conn(url);
    CHECK(q != NULL);
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM workspace_members WHERE workspace_id = %lld", (long long)ws);
    CHECK_EQ(sql_int(q, sql), 5);
    snprintf(sql, sizeof sql, "SELECT member_count * 100 + channel_count FROM workspaces WHERE id = %lld",
             (long long)ws);
    CHECK_EQ(sql_int(q, sql), 504);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM conversations WHERE workspace = %lld AND kind = 3", (long long)ws);
    CHECK_EQ(sql_int(q, sql), 4);
    PQfinish(q);
    n_close(a);
    n_close(b);
}

/* ---- the data lifecycle (store.h invariant 13; store_pg_life.c) ------------------- */

/* One lifecycle job: its result, or out_id when OK. */
static int64_t n_life(pnode *n, pl_job_op op, int64_t conv, int64_t id, int64_t user, int64_t value, int flags) {
    pwait w;
    w_init(&w);
    pl_job j;
    j_init(&j, &w, op);
    j.conv = conv;
    j.id = id;
    j.user = user;
    j.value = value;
    j.flags = flags;
    if (n_run(n, &j, 1)) return -99;
    pl_job_release(&j);
    return j.result ? j.result : j.out_id;
}

/* RETENTION_PURGE as of clock: the messages erased, or the error. */
static int64_t n_purge(pnode *n, pwait *w, int64_t clock, int limit) {
    pl_job j;
    j_init(&j, w, PL_JOB_RETENTION_PURGE);
    j.expires = clock;
    j.limit = limit;
    if (n_run(n, &j, 1)) return -99;
    int64_t rc = j.result ? j.result : j.has_event ? -98 : j.out_id;
    pl_job_release(&j);
    return rc;
}

/* Sends body to conv as user, one at a time; the seq or the error. */
static int64_t n_say(pnode *n, int64_t conv, int64_t user, const char *cmid, const char *body) {
    pwait w;
    w_init(&w);
    pl_job j;
    send_init(&j, &w, conv, user, cmid, body);
    if (n_run(n, &j, 1)) return -99;
    pl_job_release(&j);
    return j.result ? j.result : j.event.seq;
}

enum { LG = 6, LOLD = 100, LNEW = 60, LACTS = 60, LGONE = 20 };

/* A thread of store_pg_purge_two_nodes on one node. */
typedef struct lworker {
    pnode        *node;
    int           kind;            /* 0 purges, 1 sends, 2 edits and deletes */
    int           idx;
    const int64_t *convs;          /* the groups (LG)                        */
    const int64_t *users;          /* their four members; old seq s by users[s % 4] */
    int64_t       clock;           /* purges: the jobs' now                  */
    volatile int *stop;            /* purges: the others are done            */
    int64_t       erased;          /* purges: their out_id, summed           */
    int           purges;
    int           deleted;         /* edits and deletes: deletes that erased */
    int           bad;             /* jobs with an unexpected result         */
    char          cmid[LNEW][24];
    pl_job        jobs[8];
    pwait         w;
} lworker;

static void *lworker_main(void *arg) {
    lworker *x = arg;
    w_init(&x->w);
    if (x->kind == 0) {                      /* until one finds nothing after the others stopped */
        for (;;) {
            int stopped = *x->stop;
            int64_t n = n_purge(x->node, &x->w, x->clock, 37);
            x->purges++;
            if (n < 0) {
                x->bad++;
                break;
            }
            x->erased += n;
            if (stopped && n == 0) break;
        }
        return NULL;
    }
    uint32_t r = 12345u + (uint32_t)x->idx * 7919u;
    for (int i = 0; i < (x->kind == 1 ? LNEW : LACTS); i += 4) {   /* bursts: batches over several convs */
        int base = x->w.done;
        for (int k = 0; k < 4; k++) {
            pl_job *j = &x->jobs[k];
            r = r * 1103515245u + 12345u;
            int64_t conv = x->convs[(r >> 16) % LG];
            if (x->kind == 1) {
                snprintf(x->cmid[i + k], sizeof x->cmid[0], "n%d-%d", x->idx, i + k);
                send_init(j, &x->w, conv, x->users[(i + k) % 4], x->cmid[i + k], "new");
            } else {
                int64_t seq = 2 + (int64_t)((r >> 8) % LOLD);
                act_init(j, &x->w, (r >> 4) % 2 ? PL_JOB_MESSAGE_DELETE : PL_JOB_MESSAGE_EDIT, conv,
                         x->users[seq % 4], seq);
                j->body = "edited";
                j->body_len = 6;
            }
            pl_store_submit(x->node->s, j);
        }
        if (w_wait(&x->w, base + 4)) {
            x->bad++;
            break;
        }
        for (int k = 0; k < 4; k++) {
            pl_job *j = &x->jobs[k];
            if (j->result == PL_STORE_OK) {
                if (j->op == PL_JOB_MESSAGE_DELETE) x->deleted++;
            } else if (!(x->kind == 2 && j->result == PL_STORE_EGONE)) {
                fprintf(stderr, "  op %d: result %d (%s)\n", (int)j->op, j->result, j->why ? j->why : "-");
                x->bad++;
            }
            pl_job_release(j);
        }
    }
    return NULL;
}

/* The purge on two nodes at once, while both nodes send to the same
 * conversations (batches over several of them) and edit and delete the
 * messages being purged: every expired message and every message of a
 * deleted user is erased exactly once (the purges' counts and the deletes
 * that erased add up to them), held and new messages stay, the logs stay
 * contiguous, and no transaction deadlocks (pg_stat_database). */
TEST(store_pg_purge_two_nodes) {
    PG_ONLY();
    char url[256];
    CHECK_EQ(t_pg_fresh_url(pg_base(), url, sizeof url), 0);
    pnode *a = n_slot(), *b = n_slot();
    CHECK_EQ(n_open(a, url, 1, 0), 0);
    CHECK_EQ(n_open(b, url, 2, 0), 0);
    int64_t users[4], gone = n_user(a, "gone");
    char name[16];
    for (int i = 0; i < 4; i++) {
        snprintf(name, sizeof name, "u%d", i);
        CHECK((users[i] = n_user(i % 2 ? b : a, name)) > 0);
    }
    int64_t convs[LG], held = n_group(a, users[0], users + 1, 3);
    for (int i = 0; i < LG; i++) CHECK((convs[i] = n_group(i % 2 ? b : a, users[0], users + 1, 3)) > 0);
    int64_t dm[2] = {0, 0};
    pwait w;
    w_init(&w);
    for (int i = 0; i < 2; i++) {
        pl_job j;
        j_init(&j, &w, PL_JOB_DIRECT_OPEN);
        j.user = gone;
        j.peer = users[i];
        CHECK_EQ(n_run(a, &j, 1), 0);
        CHECK((dm[i] = j.out_id) > 0);
        pl_job_release(&j);
    }
    /* the old messages: seq s of each group by users[s % 4], in batches */
    for (int c = 0; c <= LG; c++) {
        int64_t conv = c < LG ? convs[c] : held;
        pl_job *jobs = calloc(LOLD, sizeof *jobs);
        char (*keys)[16] = calloc(LOLD, sizeof *keys);
        for (int i = 0; i < LOLD; i++) {
            snprintf(keys[i], sizeof keys[0], "o%d", i);
            send_init(&jobs[i], &w, conv, users[(i + 2) % 4], keys[i], i % 3 ? "old @u1" : "old");
        }
        int rc = n_run(c % 2 ? b : a, jobs, LOLD), bad = 0;
        for (int i = 0; i < LOLD; i++) {
            if (jobs[i].result || jobs[i].event.seq != i + 2) bad++;
            pl_job_release(&jobs[i]);
        }
        free(jobs);
        free(keys);
        CHECK_EQ(rc, 0);
        CHECK_EQ(bad, 0);
    }
    for (int i = 0; i < LGONE; i++) {
        snprintf(name, sizeof name, "g%d", i);
        CHECK_EQ(n_say(i % 2 ? b : a, dm[i % 2], gone, name, "bye"), 2 + i / 2);
    }
    CHECK_EQ(n_life(b, PL_JOB_ACCOUNT_DELETE, 0, 0, gone, 0, 0), gone);
    int64_t t1 = wall_ms();                        /* every old message is older than t1 + 1 */
    for (int c = 0; c <= LG; c++)
        CHECK_EQ(n_life(c % 2 ? a : b, PL_JOB_RETENTION_SET, c < LG ? convs[c] : held, 0, users[0], 1, 0),
                 c < LG ? convs[c] : held);
    CHECK_EQ(n_life(a, PL_JOB_HOLD_SET, held, 0, 0, 0, 0), held);
    while (wall_ms() < t1 + 5) sleep_ms(1);       /* the new ones are not */

    PGconn *q = sql_conn(url);
    CHECK(q != NULL);
    long long deadlocks = sql_int(q, "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()");
    volatile int stop = 0;
    lworker *x = calloc(6, sizeof *x);
    pthread_t th[6];
    for (int i = 0; i < 6; i++) {
        x[i] = (lworker){.node = i % 2 ? b : a, .kind = i / 2, .idx = i, .convs = convs, .users = users,
                         .clock = t1 + 1000 + 1, .stop = &stop};
        pthread_create(&th[i], NULL, lworker_main, &x[i]);
    }
    for (int i = 2; i < 6; i++) pthread_join(th[i], NULL);
    stop = 1;
    for (int i = 0; i < 2; i++) pthread_join(th[i], NULL);
    int bad = 0, deleted = 0;
    int64_t erased = 0;
    for (int i = 0; i < 6; i++) {
        bad += x[i].bad;
        erased += x[i].erased;
        deleted += x[i].deleted;
    }
    fprintf(stderr, "  (purged %lld by node 1 in %d jobs, %lld by node 2 in %d; %d deleted meanwhile)\n",
            (long long)x[0].erased, x[0].purges, (long long)x[1].erased, x[1].purges, deleted);
    free(x);
    CHECK_EQ(bad, 0);
    CHECK_EQ(erased + deleted, LG * LOLD + LGONE);     /* each once, by one of them */
    CHECK_EQ(n_purge(a, &w, t1 + 1000 + 1, 100), 0);
    /* the logs: the old messages erased, the held and the new ones not */
    for (int c = 0; c <= LG + 2; c++) {
        int64_t conv = c < LG ? convs[c] : c == LG ? held : dm[c - LG - 1];
        pl_event *ev;
        size_t len;
        CHECK_EQ(n_events(c % 2 ? a : b, conv, &ev, &len), 0);
        int wrong = 0, fresh = 0;
        for (size_t i = 0; i < len; i++) {
            if (ev[i].kind != PL_EV_MESSAGE) continue;
            int old = c > LG || ev[i].seq <= LOLD + 1;
            int erased_now = !ev[i].body && has_str(ev[i].annot, "\"deleted\":true");
            if (c == LG ? erased_now : old != erased_now) wrong++;
            if (!old) fresh++;
            if (ev[i].seq != (int64_t)i + 1) wrong++;
        }
        pl_event_list_free(ev, len);
        if (wrong) fprintf(stderr, "  conversation %lld: %d wrong\n", (long long)conv, wrong);
        CHECK_EQ(wrong, 0);
        CHECK(check_log(a, conv, NULL));
        if (c < LG) CHECK(fresh > 0 || LNEW * 2 < LG);
    }
    CHECK_EQ(sql_int(q, "SELECT count(*) FROM mentions m JOIN events e ON e.conv_id = m.conv_id AND e.seq = m.seq"
                        " WHERE e.deleted_ts > 0"), 0);
    n_close(a);
    n_close(b);                                     /* their backends' statistics flushed on exit */
    long long after = deadlocks;
    for (int i = 0; i < 10 && after == deadlocks; i++, sleep_ms(100))
        after = sql_int(q, "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()");
    PQfinish(q);
    CHECK_EQ(after, deadlocks);
}

/* Schema 12 -> 13 on a database with data: the columns and indexes come,
 * purge_at is filled from the live messages there are (so the purge finds
 * them without reading the log), the messages written before read as
 * before, and the purge, account deletion and a user's messages work on
 * them. The downgrade to 12 undoes exactly migration 12 -> 13; running it
 * again on a migrated database changes nothing. */
TEST(store_pg_migration_12_to_13) {
    PG_ONLY();
    char url[256];
    CHECK_EQ(t_pg_fresh_url(pg_base(), url, sizeof url), 0);
    pnode *a = n_slot();
    CHECK_EQ(n_open(a, url, 1, 0), 0);
    int64_t ann = n_user(a, "ann"), bob = n_user(a, "bob"), cid = n_user(a, "cid");
    int64_t g = n_group(a, ann, &bob, 1), empty = n_group(a, ann, &cid, 1);
    int64_t ws = n_ws_job(a, PL_JOB_WORKSPACE_CREATE, 0, ann, 0, "w", NULL, 0);
    CHECK(g > 0 && empty > 0 && ws > 0);
    CHECK_EQ(n_say(a, g, ann, "m1", "one"), 2);
    CHECK_EQ(n_say(a, g, bob, "m2", "two"), 3);
    CHECK_EQ(n_say(a, g, ann, "m3", "three"), 4);
    CHECK_EQ(n_say(a, empty, cid, "m4", "cid's"), 2);
    pwait w;
    w_init(&w);
    pl_job j;
    act_init(&j, &w, PL_JOB_MESSAGE_DELETE, g, ann, 2);
    CHECK_EQ(n_run(a, &j, 1), 0);
    CHECK_EQ(j.result, PL_STORE_OK);
    pl_job_release(&j);
    n_close(a);
    PGconn *q = sql_conn(url);
    CHECK(q != NULL);
    CHECK_EQ(sql_int(q, "BEGIN"), 0);
    CHECK_EQ(sql_int(q, "DROP INDEX events_sender, users_deleted, conversations_retention, conversations_purge"), 0);
    CHECK_EQ(sql_int(q, "ALTER TABLE conversations DROP COLUMN retention, DROP COLUMN hold, DROP COLUMN purge_seq,"
                        " DROP COLUMN purge_at"), 0);
    CHECK_EQ(sql_int(q, "ALTER TABLE workspaces DROP COLUMN retention, DROP COLUMN hold"), 0);
    CHECK_EQ(sql_int(q, "ALTER TABLE users DROP COLUMN deleted"), 0);
    CHECK_EQ(sql_int(q, "UPDATE parley_schema SET version = 12"), 1);
    CHECK_EQ(sql_int(q, "COMMIT"), 0);
    char sql[200];
    snprintf(sql, sizeof sql, "SELECT ts FROM events WHERE conv_id = %lld AND seq = 3", (long long)g);
    long long ts3 = sql_int(q, sql);
    CHECK(ts3 > 0);

    pnode *b = n_slot(), *c = n_slot();
    CHECK_EQ(n_open(b, url, 1, 0), 0);                      /* migrates */
    CHECK_EQ(n_open(c, url, 2, 0), 0);                      /* finds it done */
    CHECK_EQ(sql_int(q, "SELECT version FROM parley_schema"), 18);
    CHECK_EQ(sql_int(q, "SELECT count(*) FROM pg_indexes WHERE indexname IN ('events_sender', 'users_deleted',"
                        " 'conversations_retention', 'conversations_purge')"), 4);
    CHECK_EQ(sql_int(q, "SELECT count(*) FROM users WHERE deleted = 0"), 3);
    CHECK_EQ(sql_int(q, "SELECT count(*) FROM workspaces WHERE retention = 0 AND hold = 0"), 1);
    /* purge_at: the oldest live message's time (seq 2 is deleted), 0 where none */
    snprintf(sql, sizeof sql, "SELECT purge_at FROM conversations WHERE id = %lld", (long long)g);
    CHECK_EQ(sql_int(q, sql), ts3);
    CHECK_EQ(sql_int(q, "SELECT count(*) FROM conversations WHERE purge_at = 0 AND retention = 0 AND hold = 0"
                        " AND purge_seq = 0"), 1);                 /* the workspace's general */
    pl_event e;
    CHECK_EQ(n_event_at(c, g, bob, 3, &e), 0);
    int ok = e.body && strcmp(e.body, "two") == 0 && !e.annot;
    pl_event_release(&e);
    CHECK(ok);
    /* the lifecycle on the old messages */
    CHECK_EQ(n_life(b, PL_JOB_RETENTION_SET, g, 0, ann, 1, 0), g);
    /* at 3's own time nothing is past 1 s (not "now": on a loaded machine
     * the migration above took longer than that, and both went) */
    CHECK_EQ(n_purge(c, &w, ts3, 100), 0);
    CHECK_EQ(n_purge(c, &w, wall_ms() + 60000, 100), 2);    /* 3 and 4; 2 was deleted */
    CHECK_EQ(n_purge(b, &w, wall_ms() + 60000, 100), 0);
    CHECK_EQ(n_life(b, PL_JOB_ACCOUNT_DELETE, 0, 0, cid, 0, 0), PL_STORE_ECONFLICT);
    act_init(&j, &w, PL_JOB_MEMBER_LEAVE, empty, cid, 0);
    CHECK_EQ(n_run(b, &j, 1), 0);
    CHECK_EQ(j.result, PL_STORE_OK);
    pl_job_release(&j);
    j_init(&j, &w, PL_READ_USER_MESSAGES);
    j.user = cid;
    j.limit = 10;
    CHECK_EQ(n_run(c, &j, 1), 0);
    ok = j.result == PL_STORE_OK && j.nevents == 1 && j.events[0].conv == empty && j.events[0].body &&
         strcmp(j.events[0].body, "cid's") == 0 && !j.more;
    pl_job_release(&j);
    CHECK(ok);
    CHECK_EQ(n_life(b, PL_JOB_ACCOUNT_DELETE, 0, 0, cid, 0, 0), cid);
    CHECK_EQ(n_purge(c, &w, wall_ms(), 100), 1);            /* cid's message */
    CHECK_EQ(n_purge(c, &w, wall_ms(), 100), 0);

    /* once more over the migrated schema: idempotent */
    n_close(b);
    n_close(c);
    CHECK_EQ(sql_int(q, "SELECT count(*) FROM conversations WHERE purge_at <> 0"), 1);   /* empty's: stale, early */
    CHECK_EQ(sql_int(q, "UPDATE parley_schema SET version = 12"), 1);
    pnode *d = n_slot();
    CHECK_EQ(n_open(d, url, 1, 0), 0);
    CHECK_EQ(sql_int(q, "SELECT version FROM parley_schema"), 18);
    snprintf(sql, sizeof sql, "SELECT retention FROM conversations WHERE id = %lld", (long long)g);
    CHECK_EQ(sql_int(q, sql), 1);
    CHECK_EQ(n_purge(d, &w, wall_ms() + 60000, 100), 0);
    size_t count = 0;
    CHECK(check_log(d, g, &count));
    CHECK_EQ(count, 6);                                     /* created, 3 messages, a delete, retention */
    PQfinish(q);
    n_close(d);
}

/* ---- blocks (store.h invariant 14; store_pg.c invariant 16) ---------------------- */

static int64_t n_block(pnode *n, int64_t user, int64_t peer, int remove) {
    pwait w;
    w_init(&w);
    pl_job j;
    j_init(&j, &w, PL_JOB_BLOCK);
    j.user = user;
    j.peer = peer;
    j.flags = remove ? PL_JOB_REMOVE : 0;
    if (n_run(n, &j, 1)) return -99;
    pl_job_release(&j);
    return j.result ? j.result : j.out_id;
}

enum { BSENDERS = 4, BBURSTS = 30, BBURST = 6 };

/* A sender of store_pg_block_races_sends: bursts over the direct
 * conversation and the two groups, so its batches lock several
 * conversations. */
typedef struct bsender {
    pnode   *node;
    int64_t  direct, g[2], user[2];   /* user[k]: the direct one's two members */
    int      idx;
    pl_job   jobs[BBURSTS * BBURST];
    char     cmid[BBURSTS * BBURST][24];
    pwait    w;
} bsender;

static void *bsender_main(void *arg) {
    bsender *x = arg;
    w_init(&x->w);
    for (int b = 0; b < BBURSTS; b++) {
        for (int k = 0; k < BBURST; k++) {
            int i = b * BBURST + k;
            int64_t conv = k % 3 == 0 ? x->g[(b + k) % 2] : x->direct;
            snprintf(x->cmid[i], sizeof x->cmid[0], "s%d-%d", x->idx, i);
            send_init(&x->jobs[i], &x->w, conv, x->user[(x->idx + i) % 2], x->cmid[i], "hey");
            pl_store_submit(x->node->s, &x->jobs[i]);
        }
        if (w_wait(&x->w, (b + 1) * BBURST)) break;
        sleep_ms(b % 3);
    }
    return NULL;
}

/* A block on one node and sends on the other, racing. Node 2 blocks and
 * unblocks the pair again and again, each time in a batch that also sends
 * to the two groups (so it locks them and the direct conversation in
 * one order); node 1 sends bursts over the direct conversation and the
 * groups. A trigger of the test logs each change of the flag with the
 * conversation's last seq at that moment (the block holds the row's lock:
 * every send committed before it is at or below that seq, every send
 * committed after it above). Every send acknowledged in the direct
 * conversation lies where the flag was off, every other one was refused
 * "blocked" and left nothing; the log stays contiguous, nothing
 * deadlocks (pg_stat_database) and both nodes read the same flag. */
TEST(store_pg_block_races_sends) {
    PG_ONLY();
    char url[256];
    CHECK_EQ(t_pg_fresh_url(pg_base(), url, sizeof url), 0);
    pnode *a = n_slot(), *b = n_slot();
    CHECK_EQ(n_open(a, url, 1, 0), 0);
    CHECK_EQ(n_open(b, url, 2, 0), 0);
    int64_t ann = n_user(a, "ann"), bob = n_user(b, "bob"), cid = n_user(a, "cid");
    pwait w;
    w_init(&w);
    pl_job o;
    j_init(&o, &w, PL_JOB_DIRECT_OPEN);
    o.user = ann;
    o.peer = bob;
    CHECK_EQ(n_run(b, &o, 1), 0);
    int64_t d = o.out_id;
    pl_job_release(&o);
    int64_t m2[] = {bob, cid};
    int64_t g0 = n_group(a, ann, m2, 2), g1 = n_group(b, bob, &ann, 1);
    /* the direct one first in the lock order: a block that locked it after
     * the groups of its batch would close cycles with the senders' batches */
    CHECK(d > 0 && g0 > d && g1 > d);
    PGconn *q = sql_conn(url);
    CHECK(q != NULL);
    CHECK_EQ(sql_int(q, "CREATE TABLE flag_log(n BIGSERIAL PRIMARY KEY, conv BIGINT, last_seq BIGINT, v INT)"), 0);
    CHECK_EQ(sql_int(q, "CREATE FUNCTION flag_log() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
                        " INSERT INTO flag_log(conv, last_seq, v) VALUES(NEW.id, NEW.last_seq, NEW.blocked);"
                        " RETURN NULL; END $$"), 0);
    CHECK_EQ(sql_int(q, "CREATE TRIGGER flag_log AFTER UPDATE OF blocked ON conversations FOR EACH ROW"
                        " WHEN (OLD.blocked <> NEW.blocked) EXECUTE FUNCTION flag_log()"), 0);
    long long deadlocks = sql_int(q, "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()");

    bsender *x = calloc(BSENDERS, sizeof *x);
    pthread_t th[BSENDERS];
    for (int i = 0; i < BSENDERS; i++) {
        x[i] = (bsender){.node = a, .direct = d, .g = {g0, g1}, .user = {ann, bob}, .idx = i};
        pthread_create(&th[i], NULL, bsender_main, &x[i]);
    }
    /* the blocker: [send to g0, (un)block, send to g1] as one batch of node 2 */
    int rounds = 0, bad = 0;
    for (int running = 1; running;) {
        running = 0;
        for (int i = 0; i < BSENDERS; i++) {
            pthread_mutex_lock(&x[i].w.mu);
            running |= x[i].w.done < BBURSTS * BBURST;
            pthread_mutex_unlock(&x[i].w.mu);
        }
        pl_job jb[3];
        char k0[24], k1[24];
        snprintf(k0, sizeof k0, "b%d-0", rounds);
        snprintf(k1, sizeof k1, "b%d-1", rounds);
        send_init(&jb[0], &w, g0, cid, k0, "by");
        j_init(&jb[1], &w, PL_JOB_BLOCK);
        jb[1].user = rounds % 4 < 2 ? ann : bob;     /* ann's block, then bob's */
        jb[1].peer = rounds % 4 < 2 ? bob : ann;
        jb[1].flags = rounds % 2 ? PL_JOB_REMOVE : 0;
        send_init(&jb[2], &w, g1, bob, k1, "by");
        if (n_run_batch(b, jb, 3)) bad++;
        for (int i = 0; i < 3; i++) {
            if (jb[i].result != PL_STORE_OK || (i == 1 && jb[i].created != 1)) bad++;
            pl_job_release(&jb[i]);
        }
        rounds++;
        sleep_ms(1 + rounds % 4);
    }
    for (int i = 0; i < BSENDERS; i++) pthread_join(th[i], NULL);
    CHECK_EQ(bad, 0);
    CHECK(rounds >= 4);

    /* the flag's changes, in the order they took the row's lock */
    enum { FMAX = 4096 };
    static int64_t fseq[FMAX];
    static int fv[FMAX];
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT last_seq, v FROM flag_log WHERE conv = %lld ORDER BY n", (long long)d);
    PGresult *r = PQexec(q, sql);
    CHECK_EQ(PQresultStatus(r), PGRES_TUPLES_OK);
    int nf = PQntuples(r) < FMAX ? PQntuples(r) : FMAX;
    for (int i = 0; i < nf; i++) {
        fseq[i] = atoll(PQgetvalue(r, i, 0));
        fv[i] = atoi(PQgetvalue(r, i, 1));
    }
    PQclear(r);
    CHECK_EQ(nf, rounds);                          /* each (un)block changed it */
    int ok_direct = 0, refused = 0, after_unblock = 0, wrong = 0;
    for (int i = 0; i < BSENDERS; i++)
        for (int k = 0; k < BBURSTS * BBURST; k++) {
            pl_job *j = &x[i].jobs[k];
            if (j->conv != d) {
                if (j->result != PL_STORE_OK) wrong++;
            } else if (j->result == PL_STORE_OK) {
                int64_t s = j->event.seq;
                int f = -1;                        /* the last change below s */
                for (int c = 0; c < nf; c++)
                    if (fseq[c] < s) f = c;
                if (j->dup || !j->has_event || (f >= 0 && fv[f] != 0)) {
                    fprintf(stderr, "  send at seq %lld acknowledged under a block (change %d)\n", (long long)s, f);
                    wrong++;
                }
                ok_direct++;
                after_unblock += f >= 1;
            } else if (j->result == PL_STORE_EFORBID && j->why && strcmp(j->why, "blocked") == 0 && !j->has_event) {
                refused++;
            } else {
                fprintf(stderr, "  send: result %d (%s)\n", j->result, j->why ? j->why : "-");
                wrong++;
            }
            pl_job_release(j);
        }
    free(x);
    fprintf(stderr, "  (%d (un)blocks; %d sends to the direct one acknowledged, %d after an unblock, %d refused)\n",
            rounds, ok_direct, after_unblock, refused);
    CHECK_EQ(wrong, 0);
    CHECK(refused > 0);
    /* nothing lost, nothing half done: the messages are exactly the acknowledged ones */
    size_t count = 0;
    CHECK(check_log(a, d, &count));
    CHECK_EQ(count, (size_t)ok_direct + 1);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM events WHERE conv_id = %lld AND kind = 2", (long long)d);
    CHECK_EQ(sql_int(q, sql), ok_direct);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM blocks WHERE (user_id = %lld AND blocked_id = %lld)"
             " OR (user_id = %lld AND blocked_id = %lld)", (long long)ann, (long long)bob, (long long)bob,
             (long long)ann);
    long long blocked = sql_int(q, sql);
    CHECK_EQ(blocked, rounds % 2);
    pl_conv ca, cb;
    CHECK_EQ(n_conv(a, d, ann, &ca), 0);
    CHECK_EQ(n_conv(b, d, bob, &cb), 0);
    int fa = ca.blocked, fb = cb.blocked;
    pl_conv_release(&ca);
    pl_conv_release(&cb);
    CHECK_EQ(fa, (int)blocked);
    CHECK_EQ(fb, (int)blocked);
    n_close(a);
    n_close(b);                                    /* their backends' statistics flushed on exit */
    long long after = deadlocks;
    for (int i = 0; i < 10 && after == deadlocks; i++, sleep_ms(100))
        after = sql_int(q, "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()");
    PQfinish(q);
    CHECK_EQ(after, deadlocks);
}

/* A block on one node and the opening of the pair's direct conversation on
 * the other, at once, for many pairs (a few at a time, both nodes' batches
 * queued behind a hold and released together, one or the other first):
 * each pair ends with no conversation (the open refused "blocked") or with
 * one whose flag is set; never an unflagged conversation between two users
 * who block each other. */
TEST(store_pg_block_races_direct_open) {
    PG_ONLY();
    enum { PAIRS = 48, PER = 4 };
    char url[256];
    CHECK_EQ(t_pg_fresh_url(pg_base(), url, sizeof url), 0);
    pnode *a = n_slot(), *b = n_slot();
    CHECK_EQ(n_open(a, url, 1, 0), 0);
    CHECK_EQ(n_open(b, url, 2, 0), 0);
    int64_t u[PAIRS], v[PAIRS];
    for (int i = 0; i < PAIRS; i++) {
        char name[16];
        snprintf(name, sizeof name, "u%d", i);
        CHECK((u[i] = n_user(a, name)) > 0);
        snprintf(name, sizeof name, "v%d", i);
        CHECK((v[i] = n_user(b, name)) > 0);
    }
    pwait w;
    w_init(&w);
    pl_job op[PAIRS], bl[PAIRS];
    for (int i = 0; i < PAIRS; i++) {
        j_init(&op[i], &w, PL_JOB_DIRECT_OPEN);
        op[i].user = u[i];
        op[i].peer = v[i];
        j_init(&bl[i], &w, PL_JOB_BLOCK);
        bl[i].user = i % 2 ? u[i] : v[i];
        bl[i].peer = i % 2 ? v[i] : u[i];
    }
    pl_job ha, hb;
    for (int i = 0; i < PAIRS; i += PER) {
        j_init(&ha, &w, PL_JOB_OUTBOX_ACK);           /* both held, released together */
        j_init(&hb, &w, PL_JOB_OUTBOX_ACK);
        int target = w.done + 2 + 2 * PER;
        pl_store_pg__hold(a->s, 1);
        pl_store_pg__hold(b->s, 1);
        pl_store_submit(a->s, &ha);
        pl_store_submit(b->s, &hb);
        while (!pl_store_pg__held(a->s) || !pl_store_pg__held(b->s)) sleep_ms(1);
        for (int k = i; k < i + PER; k++) {
            pl_store_submit(a->s, &op[k]);
            pl_store_submit(b->s, &bl[k]);
        }
        int first = (i / PER) % 2;
        pl_store_pg__hold((first ? a : b)->s, 0);
        pl_store_pg__hold((first ? b : a)->s, 0);
        CHECK_EQ(w_wait(&w, target), 0);
    }
    int opened = 0, refused = 0, wrong = 0;
    for (int i = 0; i < PAIRS; i++) {
        if (bl[i].result != PL_STORE_OK || bl[i].created != 1) wrong++;
        if (op[i].result == PL_STORE_OK) {
            opened++;
            pl_conv c;
            if (n_conv(b, op[i].out_id, v[i], &c)) wrong++;
            else {
                if (!c.blocked) wrong++;
                pl_conv_release(&c);
            }
        } else if (op[i].result == PL_STORE_EFORBID && op[i].why && strcmp(op[i].why, "blocked") == 0) {
            refused++;
        } else {
            wrong++;
        }
        pl_job_release(&op[i]);
        pl_job_release(&bl[i]);
    }
    fprintf(stderr, "  (%d opened before the block, %d refused)\n", opened, refused);
    CHECK_EQ(wrong, 0);
    CHECK_EQ(opened + refused, PAIRS);
    PGconn *q = sql_conn(url);
    CHECK(q != NULL);
    CHECK_EQ(sql_int(q, "SELECT count(*) FROM conversations c WHERE c.kind = 1 AND c.blocked <> (EXISTS"
                        " (SELECT 1 FROM blocks b WHERE b.user_id || ':' || b.blocked_id = c.direct_key"
                        "  OR b.blocked_id || ':' || b.user_id = c.direct_key))::int"), 0);
    CHECK_EQ(sql_int(q, "SELECT count(*) FROM conversations WHERE kind = 1"), opened);
    PQfinish(q);
    n_close(a);
    n_close(b);
}

/* Schema 13 -> 14 on a database with a direct conversation: the table and
 * the flag come (0: no block yet), the conversation goes on as before and
 * takes a block; running it again changes nothing. */
TEST(store_pg_migration_13_to_14) {
    PG_ONLY();
    char url[256];
    CHECK_EQ(t_pg_fresh_url(pg_base(), url, sizeof url), 0);
    pnode *a = n_slot();
    CHECK_EQ(n_open(a, url, 1, 0), 0);
    int64_t ann = n_user(a, "ann"), bob = n_user(a, "bob");
    pwait w;
    w_init(&w);
    pl_job j;
    j_init(&j, &w, PL_JOB_DIRECT_OPEN);
    j.user = ann;
    j.peer = bob;
    CHECK_EQ(n_run(a, &j, 1), 0);
    int64_t d = j.out_id;
    pl_job_release(&j);
    CHECK(d > 0);
    CHECK_EQ(n_say(a, d, bob, "m1", "hi"), 2);
    n_close(a);
    PGconn *q = sql_conn(url);
    CHECK(q != NULL);
    CHECK_EQ(sql_int(q, "BEGIN"), 0);
    CHECK_EQ(sql_int(q, "DROP TABLE blocks"), 0);
    CHECK_EQ(sql_int(q, "ALTER TABLE conversations DROP COLUMN blocked"), 0);
    CHECK_EQ(sql_int(q, "UPDATE parley_schema SET version = 13"), 1);
    CHECK_EQ(sql_int(q, "COMMIT"), 0);
    for (int round = 0; round < 2; round++) {       /* migrates; then finds it done */
        pnode *b = n_slot();
        CHECK_EQ(n_open(b, url, 1, 0), 0);
        CHECK_EQ(sql_int(q, "SELECT version FROM parley_schema"), 18);
        CHECK_EQ(sql_int(q, "SELECT count(*) FROM pg_indexes WHERE indexname = 'blocks_blocked'"), 1);
        pl_conv c;
        CHECK_EQ(n_conv(b, d, ann, &c), 0);
        int flag = c.blocked;
        pl_conv_release(&c);
        CHECK_EQ(flag, round);
        if (round == 0) {
            CHECK_EQ(n_say(b, d, ann, "m2", "hello"), 3);
            CHECK_EQ(n_block(b, bob, ann, 0), ann);
            CHECK_EQ(n_say(b, d, ann, "m3", "still there?"), PL_STORE_EFORBID);
            CHECK_EQ(sql_int(q, "UPDATE parley_schema SET version = 13"), 1);
        }
        n_close(b);
    }
    PQfinish(q);
}

/* Schema 14 -> 15: own_unread recounted for members who joined after the
 * start (a receipt had taken a re-joined member's earlier messages out of
 * it: below zero, unread stuck too high; audit F). */
TEST(store_pg_migration_14_to_15) {
    PG_ONLY();
    char url[256];
    CHECK_EQ(t_pg_fresh_url(pg_base(), url, sizeof url), 0);
    pnode *a = n_slot();
    CHECK_EQ(n_open(a, url, 1, 0), 0);
    int64_t ann = n_user(a, "ann"), bob = n_user(a, "bob");
    pwait w;
    w_init(&w);
    pl_job j;
    j_init(&j, &w, PL_JOB_DIRECT_OPEN);
    j.user = ann;
    j.peer = bob;
    CHECK_EQ(n_run(a, &j, 1), 0);
    int64_t d = j.out_id;
    pl_job_release(&j);
    CHECK(d > 0);
    CHECK_EQ(n_say(a, d, bob, "m1", "hi"), 2);
    CHECK_EQ(n_say(a, d, bob, "m2", "again"), 3);
    n_close(a);
    PGconn *q = sql_conn(url);
    CHECK(q != NULL);
    /* bob as a member who joined at seq 2 with a broken count */
    CHECK_EQ(sql_int(q, "UPDATE members SET joined_seq = 2, own_unread = -7 WHERE user_id = 2"), 1);
    CHECK_EQ(sql_int(q, "UPDATE parley_schema SET version = 14"), 1);
    pnode *b = n_slot();
    CHECK_EQ(n_open(b, url, 1, 0), 0);
    CHECK_EQ(sql_int(q, "SELECT version FROM parley_schema"), 18);
    CHECK_EQ(sql_int(q, "SELECT own_unread FROM members WHERE user_id = 2"), 2);   /* seqs 2, 3 */
    n_close(b);
    PQfinish(q);
}
