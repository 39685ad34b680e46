/* test_sqlite_vfs.c — the SQLite backend below the store contract: the VFS
 * shim that writes a commit's WAL frames at once (store_sqlite_vfs.c), the
 * checkpointer that keeps WAL copies out of the writer's commits
 * (store_sqlite_ckpt.c), the page-cache wrapper (store_sqlite_pcache.c), on raw connections in a mkdtemp directory, and
 * the search indexer's scheduling rule (store_sqlite_index.c). */
#include "test.h"

#include "core/metrics.h"
#include "store/sqlite_int.h"

#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static sqlite3 *v_open(const char *path, const char *vfs) {
    sqlite3 *db = NULL;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, vfs) != SQLITE_OK) {
        sqlite3_close(db);
        return NULL;
    }
    sqlite3_busy_timeout(db, 5000);
    return db;
}

static int64_t v_int(sqlite3 *db, const char *sql) {
    sqlite3_stmt *st;
    int64_t v = -1;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) return -2;
    if (sqlite3_step(st) == SQLITE_ROW) v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

static int v_ok(sqlite3 *db) {
    sqlite3_stmt *st;
    int ok = 0;
    if (sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, NULL) != SQLITE_OK) return 0;
    if (sqlite3_step(st) == SQLITE_ROW) ok = !strcmp((const char *)sqlite3_column_text(st, 0), "ok");
    sqlite3_finalize(st);
    return ok;
}

static void v_rm(const char *dir) {
    char cmd[160];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "  cannot remove %s\n", dir);
}

#define V_SETUP "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;" \
                " CREATE TABLE IF NOT EXISTS t(k INTEGER PRIMARY KEY, v TEXT);"
/* 200 rows of ~3 KiB: one transaction of ~800 KiB of WAL frames, past the
 * unix VFS's 128 KiB per write and the shim's chunks */
#define V_FILL  "WITH RECURSIVE n(k) AS (SELECT 1 UNION ALL SELECT k + 1 FROM n WHERE k < 200)" \
                " INSERT INTO t(k, v) SELECT k, k || '-' || hex(zeroblob(1500)) FROM n"

TEST(sqlite_vfs_large_commit_reaches_other_connections) {
    char dir[] = "/tmp/pl-vfs-XXXXXX", path[64];
    CHECK(mkdtemp(dir) != NULL);
    snprintf(path, sizeof path, "%s/v.db", dir);
    CHECK(sq_vfs() != NULL);
    sqlite3 *a = v_open(path, sq_vfs()), *b = v_open(path, sq_vfs()), *plain = v_open(path, NULL);
    CHECK(a && b && plain);
    CHECK_EQ(sqlite3_exec(a, V_SETUP, NULL, NULL, NULL), SQLITE_OK);
    CHECK_EQ(sqlite3_exec(a, "BEGIN; " V_FILL "; COMMIT;", NULL, NULL, NULL), SQLITE_OK);
    /* committed means on disk for every other connection, shim or not */
    CHECK_EQ(v_int(b, "SELECT count(*) FROM t"), 200);
    CHECK_EQ(v_int(plain, "SELECT sum(length(v)) FROM t"), v_int(a, "SELECT sum(length(v)) FROM t"));
    /* a transaction bigger than a small page cache spills frames and then
     * rewrites some of them before its commit: writes that go back inside
     * what the shim holds */
    CHECK_EQ(sqlite3_exec(a, "PRAGMA cache_size = 8; BEGIN;"
                             " UPDATE t SET v = (k * 7) || '-' || hex(zeroblob(1500));"
                             " UPDATE t SET v = (k * 3) || '-' || hex(zeroblob(1500)) WHERE k % 2 = 0;"
                             " COMMIT;", NULL, NULL, NULL), SQLITE_OK);
    int64_t want = 0;
    for (int k = 1; k <= 200; k++) want += k % 2 ? k * 7 : k * 3;
    const char *sum = "SELECT sum(CAST(substr(v, 1, instr(v, '-') - 1) AS INTEGER)) FROM t";
    CHECK_EQ(v_int(b, sum), want);
    CHECK_EQ(v_int(plain, sum), want);
    CHECK(v_ok(plain));
    sqlite3_close(a);
    sqlite3_close(b);
    sqlite3_close(plain);
    sqlite3 *again = v_open(path, NULL);        /* after the last close's checkpoint */
    CHECK(again);
    CHECK_EQ(v_int(again, sum), want);
    CHECK(v_ok(again));
    sqlite3_close(again);
    v_rm(dir);
}

/* store_sqlite_pcache.c invariant 1: commits after b-tree splits that
 * swapped page numbers through the lock-byte page skip the page cache's
 * truncation (which walked the whole cache), and a rollback that shrinks
 * the database still has its pages dropped: the data stays right. */
TEST(sqlite_pcache_skips_only_truncations_with_nothing_to_drop) {
    /* the wrapper must be configured before SQLite initialises; earlier
     * tests in this process closed every connection they opened */
    sqlite3_shutdown();
    CHECK_EQ(sq_pcache_install(), 0);
    CHECK_EQ(sqlite3_initialize(), SQLITE_OK);
    char dir[] = "/tmp/pl-vfs-XXXXXX", path[64];
    CHECK(mkdtemp(dir) != NULL);
    snprintf(path, sizeof path, "%s/p.db", dir);
    sqlite3 *db = v_open(path, sq_vfs()), *other = v_open(path, NULL);
    CHECK(db && other);
    CHECK_EQ(sqlite3_exec(db, "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA cache_size = -65536;"
                              " CREATE TABLE r(k BLOB PRIMARY KEY, v TEXT) WITHOUT ROWID;",
                          NULL, NULL, NULL), SQLITE_OK);
    unsigned long sk0, pa0, sw0, sk1, pa1, sw1, sk2, pa2, sw2;
    sq_pcache_counts(&sk0, &pa0, &sw0);
    /* random keys split leaves in the middle of the tree, commit by commit */
    for (int i = 0; i < 200; i++)
        CHECK_EQ(sqlite3_exec(db, "INSERT INTO r SELECT randomblob(16), hex(randomblob(40))"
                                  " FROM (WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n"
                                  " WHERE x < 50) SELECT x FROM n)", NULL, NULL, NULL), SQLITE_OK);
    sq_pcache_counts(&sk1, &pa1, &sw1);
    CHECK(sw1 > sw0);                     /* the swaps that made every commit walk the cache */
    CHECK(sk1 - sk0 >= 150);              /* ... and now those commits skip it */
    CHECK_EQ(v_int(db, "SELECT count(*) FROM r"), 10000);
    CHECK_EQ(v_int(other, "SELECT count(*) FROM r"), 10000);
    /* a transaction that grows the file and rolls back: its pages past
     * the old end are dropped (the truncation is passed on) */
    int64_t pages = v_int(db, "PRAGMA page_count");
    CHECK_EQ(sqlite3_exec(db, "BEGIN; INSERT INTO r SELECT randomblob(16), hex(randomblob(1500))"
                              " FROM (WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n"
                              " WHERE x < 2000) SELECT x FROM n);", NULL, NULL, NULL), SQLITE_OK);
    CHECK(v_int(db, "PRAGMA page_count") > pages + 1000);
    CHECK_EQ(sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL), SQLITE_OK);
    sq_pcache_counts(&sk2, &pa2, &sw2);
    CHECK(pa2 > pa1);
    CHECK_EQ(v_int(db, "PRAGMA page_count"), pages);
    CHECK_EQ(v_int(db, "SELECT count(*) FROM r"), 10000);
    /* the pages the rollback dropped are allocated again, with new contents */
    CHECK_EQ(sqlite3_exec(db, "INSERT INTO r SELECT randomblob(16), 'after' FROM (WITH RECURSIVE n(x) AS"
                              " (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 3000) SELECT x FROM n)",
                          NULL, NULL, NULL), SQLITE_OK);
    CHECK_EQ(v_int(db, "SELECT count(*) FROM r WHERE v = 'after'"), 3000);
    CHECK_EQ(v_int(other, "SELECT count(*) FROM r WHERE v = 'after'"), 3000);
    CHECK(v_ok(db));
    CHECK(v_ok(other));
    sqlite3_close(db);
    sqlite3_close(other);
    v_rm(dir);
}

/* Invariant 3: frames the kernel refuses fail the COMMIT, although the
 * write that failed happened only when the shim wrote its buffer out. */
TEST(sqlite_vfs_failed_write_fails_the_commit) {
    char dir[] = "/tmp/pl-vfs-XXXXXX", path[64];
    CHECK(mkdtemp(dir) != NULL);
    snprintf(path, sizeof path, "%s/v.db", dir);
    CHECK(sq_vfs() != NULL);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {                        /* files may not grow past 256 KiB */
        signal(SIGXFSZ, SIG_IGN);
        struct rlimit rl = {256 * 1024, 256 * 1024};
        sqlite3 *a = v_open(path, sq_vfs());
        if (!a || sqlite3_exec(a, V_SETUP, NULL, NULL, NULL) != SQLITE_OK) _exit(2);
        if (setrlimit(RLIMIT_FSIZE, &rl) != 0) _exit(3);
        int rc = sqlite3_exec(a, "BEGIN; " V_FILL "; COMMIT;", NULL, NULL, NULL);
        _exit(rc == SQLITE_OK ? 4 : 0);
    }
    int status = 0;
    CHECK_EQ(waitpid(pid, &status, 0), pid);
    CHECK(WIFEXITED(status));
    CHECK_EQ(WEXITSTATUS(status), 0);
    sqlite3 *plain = v_open(path, NULL);
    CHECK(plain);
    CHECK_EQ(v_int(plain, "SELECT count(*) FROM t"), 0);   /* nothing of it committed */
    CHECK(v_ok(plain));
    sqlite3_close(plain);
    v_rm(dir);
}

static int64_t v_size(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 ? (int64_t)st.st_size : -1;
}

/* Invariant 7 of store_sqlite.c: the thread copies the WAL, the writer
 * only restarts it once a tail is left, and the WAL stays bounded while
 * commits go on. */
/* One fill and a checkpoint of path through the shim: the pacing waits
 * it took (store_sqlite_vfs.c invariant 4), or -1. */
typedef struct v_fill { const char *path; int background; long waits; int ok; } v_fill;

static void *v_fill_main(void *arg) {
    v_fill *f = arg;
    if (f->background) sq_vfs_background();
    sqlite3 *db = v_open(f->path, sq_vfs());
    unsigned long before = sq_vfs_waits();
    f->ok = db && sqlite3_exec(db, V_SETUP "DELETE FROM t; " V_FILL, NULL, NULL, NULL) == SQLITE_OK &&
            sqlite3_wal_checkpoint_v2(db, NULL, SQLITE_CHECKPOINT_TRUNCATE, NULL, NULL) == SQLITE_OK &&
            v_int(db, "SELECT count(*) FROM t") == 200 && v_ok(db);
    f->waits = (long)(sq_vfs_waits() - before);
    sqlite3_close(db);
    return NULL;
}

/* Writes from a thread marked background (the checkpointer, the indexer)
 * wait for the disk every SQ_VFS_PACE bytes, in the WAL and in the
 * database file; the writer's (any other thread's) never do. */
TEST(sqlite_vfs_paces_background_writes_only) {
    char dir[] = "/tmp/pl-vfs-XXXXXX", path[64];
    CHECK(mkdtemp(dir) != NULL);
    snprintf(path, sizeof path, "%s/v.db", dir);
    CHECK(sq_vfs() != NULL);
    v_fill fg = {.path = path, .background = 0}, bg = {.path = path, .background = 1};
    pthread_t th;
    CHECK_EQ(pthread_create(&th, NULL, v_fill_main, &fg), 0);
    pthread_join(th, NULL);
    CHECK(fg.ok);
    CHECK_EQ(fg.waits, 0);
    CHECK_EQ(pthread_create(&th, NULL, v_fill_main, &bg), 0);
    pthread_join(th, NULL);
    CHECK(bg.ok);
    /* ~800 KiB of WAL frames and as much copied into v.db: three waits or
     * more in each */
    CHECK(bg.waits >= 6);
    v_rm(dir);
}

/* A store of just a writer connection on path (WAL, synchronous FULL,
 * table t) and its checkpointer, started; NULL if any step failed. */
static sq_store *v_ckpt_store(const char *path) {
    char err[256] = "";
    sq_store *s = calloc(1, sizeof *s);
    s->wdb = v_open(path, sq_vfs());
    if (!s->wdb || sqlite3_exec(s->wdb, V_SETUP, NULL, NULL, NULL) != SQLITE_OK ||
        sq_ckpt_open(s, path, err, sizeof err) != 0 || sq_ckpt_start(s) != 0) {
        fprintf(stderr, "  cannot set up a checkpointed store at %s: %s\n", path, err);
        return NULL;
    }
    return s;
}

TEST(sqlite_ckpt_copies_off_the_writer_and_restarts_the_wal) {
    char dir[] = "/tmp/pl-vfs-XXXXXX", path[64], wal[72];
    CHECK(mkdtemp(dir) != NULL);
    snprintf(path, sizeof path, "%s/v.db", dir);
    snprintf(wal, sizeof wal, "%s-wal", path);
    sq_store *s = v_ckpt_store(path);
    CHECK(s);
    uint64_t bg0 = pl_m_ckpt_background.v, wr0 = pl_m_ckpt_writer.v;
    /* ~18 frames a commit, 3x the WAL size at which the writer restarts it */
    int commits = 3 * SQ_CKPT_RESET / 18, restarted = 0;
    int64_t wal_max = 0, last = 0;
    sq_ckpt_stats st;
    for (int i = 0; i < commits; i++) {
        char sql[256];
        snprintf(sql, sizeof sql,
                 "WITH RECURSIVE n(k) AS (SELECT 1 UNION ALL SELECT k + 1 FROM n WHERE k < 16)"
                 " INSERT INTO t(v) SELECT %d || '-' || hex(zeroblob(1500)) FROM n", i);
        CHECK_EQ(sqlite3_exec(s->wdb, sql, NULL, NULL, NULL), SQLITE_OK);
        sq_ckpt_stats_get(s, &st);
        if (st.frames < last) restarted++;
        last = st.frames;
        sq_ckpt_after_batch(s, 0);
        /* the next commit restarts a WAL the writer's checkpoint finished */
        if (st.frames >= SQ_CKPT_RESET) {
            sq_ckpt_stats_get(s, &st);
            if (st.copied < st.frames) usleep(2000);   /* an idle moment for the thread */
        }
        int64_t size = v_size(wal);
        if (size > wal_max) wal_max = size;
    }
    sq_ckpt_stats_get(s, &st);
    CHECK(st.writer_left_max <= SQ_CKPT_TAIL);  /* the writer only ever a tail */
    CHECK(restarted >= 1);
    /* bounded: the WAL file never held more than one restart's worth */
    CHECK(wal_max < (int64_t)(SQ_CKPT_RESET + SQ_CKPT_STEP + SQ_CKPT_TAIL) * (4096 + 24));
    sq_ckpt_close(s);                           /* its thread joined: counts final */
    uint64_t bg = pl_m_ckpt_background.v - bg0, wr = pl_m_ckpt_writer.v - wr0;
    fprintf(stderr, "  (%d commits: %llu background checkpoints, %llu by the writer, at most %lld frames"
            " left to it, %d restarts, WAL at most %lld bytes)\n", commits, (unsigned long long)bg,
            (unsigned long long)wr, (long long)st.writer_left_max, restarted, (long long)wal_max);
    CHECK(bg >= 3);                             /* the thread did the copying (/metrics) */
    CHECK(wr >= 1);
    CHECK_EQ(v_int(s->wdb, "SELECT count(*) FROM t"), (int64_t)commits * 16);
    sqlite3_close(s->wdb);
    free(s);
    sqlite3 *plain = v_open(path, NULL);
    CHECK(plain);
    CHECK_EQ(v_int(plain, "SELECT count(*) FROM t"), (int64_t)commits * 16);
    CHECK(v_ok(plain));
    sqlite3_close(plain);
    v_rm(dir);
}

/* One batch of ~18 WAL frames on the writer connection, then the
 * pipeline's after-batch hook. */
static int v_batch(sq_store *s, int i) {
    char sql[256];
    snprintf(sql, sizeof sql,
             "WITH RECURSIVE n(k) AS (SELECT 1 UNION ALL SELECT k + 1 FROM n WHERE k < 16)"
             " INSERT INTO t(v) SELECT %d || '-' || hex(zeroblob(1500)) FROM n", i);
    int rc = sqlite3_exec(s->wdb, sql, NULL, NULL, NULL);
    sq_ckpt_after_batch(s, 0);
    return rc;
}

/* A reader that takes a fresh snapshot between the writer's batches (as
 * the search indexer's short reads of parley.db do) keeps the WAL from
 * restarting: every checkpoint can copy only up to its snapshot, one
 * batch short of the end, and the writer's tail rule saw that one batch
 * as a tail to checkpoint after every batch, each a copy and a sync of
 * the database on the commit path. After a checkpoint the WAL did not
 * restart from, the writer tries again only every SQ_CKPT_RETRY frames;
 * once the reader is gone, the WAL restarts. */
TEST(sqlite_ckpt_writer_does_not_checkpoint_every_batch_while_a_reader_holds_the_wal) {
    char dir[] = "/tmp/pl-vfs-XXXXXX", path[64];
    CHECK(mkdtemp(dir) != NULL);
    snprintf(path, sizeof path, "%s/v.db", dir);
    sq_store *s = v_ckpt_store(path);
    CHECK(s);
    sqlite3 *reader = v_open(path, sq_vfs());
    CHECK(reader);
    sqlite3_stmt *rd;
    CHECK_EQ(sqlite3_prepare_v2(reader, "SELECT max(k) FROM t", -1, &rd, NULL), SQLITE_OK);
    int i = 0, batches = (SQ_CKPT_RESET + 4 * SQ_CKPT_RETRY) / 16 + 50;   /* ~18 frames each */
    sq_ckpt_stats st;
    uint64_t wr0 = pl_m_ckpt_writer.v;
    int64_t last = 0, first_frames = 0;
    for (int b = 0; b < batches; b++, i++) {
        sqlite3_reset(rd);                  /* the last snapshot ends, a fresh one begins */
        CHECK_EQ(sqlite3_step(rd), SQLITE_ROW);
        CHECK_EQ(v_batch(s, i), SQLITE_OK);
        sq_ckpt_stats_get(s, &st);
        CHECK(st.frames >= last);           /* no restart while the reader is there */
        last = st.frames;
        if (b == 0) first_frames = st.frames;
        if (st.copied + SQ_CKPT_STEP < st.frames) usleep(2000);   /* the thread's copy */
    }
    uint64_t wr = pl_m_ckpt_writer.v - wr0;
    int64_t grown = last - first_frames;
    fprintf(stderr, "  (%d batches beside a reader: WAL %lld frames, %llu checkpoints by the writer)\n", batches,
            (long long)last, (unsigned long long)wr);
    CHECK(last >= SQ_CKPT_RESET + 2 * SQ_CKPT_RETRY);
    CHECK(wr >= 1);                          /* it did try */
    CHECK(wr <= (uint64_t)(grown / SQ_CKPT_RETRY) + 2);
    sqlite3_reset(rd);                      /* the reader is done */
    int restarted = 0;
    for (int b = 0; b < 2 * SQ_CKPT_RETRY / 18 + 4 && !restarted; b++, i++) {
        CHECK_EQ(v_batch(s, i), SQLITE_OK);
        sq_ckpt_stats_get(s, &st);
        restarted = st.frames < last;
        last = st.frames;
        if (st.copied + SQ_CKPT_STEP < st.frames) usleep(2000);
    }
    CHECK(restarted);
    sqlite3_finalize(rd);
    sqlite3_close(reader);
    sq_ckpt_close(s);
    CHECK_EQ(v_int(s->wdb, "SELECT count(*) FROM t"), (int64_t)i * 16);
    sqlite3_close(s->wdb);
    free(s);
    v_rm(dir);
}

/* The indexer yields the CPU entirely (SCHED_IDLE) while it is at most
 * SQ_INDEX_LAG_MAX messages behind and was last caught up at most
 * SQ_INDEX_BEHIND_MS ago; past either bound it stops yielding until it has
 * caught up: a burst goes to delivery, and neither load that does not end
 * nor a busy neighbour leaves search behind for long. */
TEST(sqlite_indexer_yields_within_its_lag_bound) {
    CHECK(sq_index_yields(1, 0, 0));
    CHECK(sq_index_yields(1, SQ_INDEX_LAG_MAX, SQ_INDEX_BEHIND_MS));
    CHECK(!sq_index_yields(1, SQ_INDEX_LAG_MAX + 1, 0));
    CHECK(!sq_index_yields(1, 10, SQ_INDEX_BEHIND_MS + 1));    /* a slow trickle, starved */
    CHECK(!sq_index_yields(0, 1, 0));                          /* once out: until caught up */
    CHECK(!sq_index_yields(0, SQ_INDEX_LAG_MAX / 4, 0));
    CHECK(sq_index_yields(0, 0, 0));
}

/* The embedded search's MATCH words: whitespace and ASCII punctuation
 * separate words, as the index's tokenizer does, so `mango,kiwi` asks for
 * both words anywhere, not for the two side by side (audit U: it found
 * `mango,kiwi` but not `kiwi, mango`); no FTS5 syntax gets through. */
TEST(sqlite_search_query_words) {
    char out[4 * PL_STORE_QUERY_MAX + 8];
    CHECK_EQ(pl_store__fts5_query("mango,kiwi", out, sizeof out), 2);
    CHECK_STR(out, "\"mango\" \"kiwi\"");
    CHECK_EQ(pl_store__fts5_query("  don't  e-mail\ta.b.c ", out, sizeof out), 7);
    CHECK_STR(out, "\"don\" \"t\" \"e\" \"mail\" \"a\" \"b\" \"c\"");
    CHECK_EQ(pl_store__fts5_query("\"NEAR(a b)\" OR x* ^y", out, sizeof out), 6);
    CHECK_STR(out, "\"NEAR\" \"a\" \"b\" \"OR\" \"x\" \"y\"");
    CHECK_EQ(pl_store__fts5_query("caf\xc3\xa9 don\xe2\x80\x99t", out, sizeof out), 2);   /* non-ASCII stays */
    CHECK_STR(out, "\"caf\xc3\xa9\" \"don\xe2\x80\x99t\"");
    CHECK_EQ(pl_store__fts5_query("\x02 ,;- \x03", out, sizeof out), 0);
    CHECK_STR(out, "");
    /* white space of other scripts separates words too (audit J3) */
    CHECK_EQ(pl_store__fts5_query("lunch\xe3\x80\x80" "friday\xc2\xa0" "plans\xe2\x80\x83x", out, sizeof out), 4);
    CHECK_STR(out, "\"lunch\" \"friday\" \"plans\" \"x\"");
    CHECK_EQ(pl_store__fts5_query("\xe3\x80\x80\xc2\xa0", out, sizeof out), 0);
}

/* PostgreSQL's snippet comes from the body with '<', '>', '&' and '/'
 * blanked (audit U: the parser dropped `<div>` and `&lt;` as markup; audit
 * J3: `yes/no` was one word) and a final sigma made a sigma: they are put
 * back from the body, byte for byte, markers kept. */
TEST(pg_snippet_restore) {
    const char *body = "use the <div> & <b>bold</b> tags";
    char s1[] = "use the  \x02" "div\x03     \x02" "b\x03 bold  b  tags";    /* the whole text */
    pl_store__snippet_restore(s1, body, strlen(body));
    CHECK_STR(s1, "use the <\x02" "div\x03> & <\x02" "b\x03>bold</b> tags");
    char s2[] = " \x02" "bold\x03  b  tags";                          /* a piece from the middle */
    pl_store__snippet_restore(s2, body, strlen(body));
    CHECK_STR(s2, ">\x02" "bold\x03</b> tags");
    char s3[] = "no such piece";
    pl_store__snippet_restore(s3, body, strlen(body));
    CHECK_STR(s3, "no such piece");
    char s4[] = "plain \x02" "text\x03";
    pl_store__snippet_restore(s4, "plain text", 10);
    CHECK_STR(s4, "plain \x02" "text\x03");
    /* '/' blanked and a final sigma made a sigma (audit J3) */
    const char *greek = "yes/no \xce\x9f\xce\xb4\xcf\x85\xcf\x83\xcf\x82";            /* Οδυσς */
    char s5[] = "yes \x02" "no\x03 \xce\x9f\xce\xb4\xcf\x85\xcf\x83\xcf\x83";
    pl_store__snippet_restore(s5, greek, strlen(greek));
    CHECK_STR(s5, "yes/\x02" "no\x03 \xce\x9f\xce\xb4\xcf\x85\xcf\x83\xcf\x82");
    /* a body's own marker bytes stay spaces: no highlight of its sender's
     * making (audit O4) */
    const char *fake = "a/b \x02" "fake\x03 real";
    char s6[] = "a b  fake  \x02" "real\x03";
    pl_store__snippet_restore(s6, fake, strlen(fake));
    CHECK_STR(s6, "a/b  fake  \x02" "real\x03");
}
