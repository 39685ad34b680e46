/* test_pipeline.c — the store's writer thread (store/pipeline.c) with a fake
 * backend: which writes go into which batch, and the group-commit delay
 * (pipeline.h invariant 5). The fake run_batch records batch sizes and can
 * be held at a gate, so the tests decide what is queued when the writer
 * takes its next batch; no assertion depends on timing.
 */
#include "test.h"

#include <pthread.h>
#include <stdlib.h>

#include "core/clock.h"
#include "store/pipeline.h"

typedef struct fake {
    pthread_mutex_t mu;
    pthread_cond_t  cv;
    int             held;          /* run_batch waits while set             */
    int             hold_batch;    /* ... and while it is this batch (1-based) */
    int             running;       /* batches started                       */
    size_t          sizes[64];
    int             nbatches;
    int             done;          /* jobs completed (drain)                */
} fake;

static void f_run_batch(void *ctx, pl_job **jobs, size_t n) {
    fake *f = ctx;
    pthread_mutex_lock(&f->mu);
    f->running++;
    pthread_cond_broadcast(&f->cv);
    int me = f->running;
    while (f->held || (f->hold_batch && me == f->hold_batch)) pthread_cond_wait(&f->cv, &f->mu);
    if (f->nbatches < 64) f->sizes[f->nbatches++] = n;
    pthread_mutex_unlock(&f->mu);
    for (size_t i = 0; i < n; i++) jobs[i]->result = PL_STORE_OK;
}

static void f_run_read(void *ctx, pl_job *j) { j->result = PL_STORE_OK; }
static void f_notify(void *arg) {}
static void f_done(pl_job *j) { ((fake *)j->data)->done++; }

static void f_set(fake *f, int *field, int v) {
    pthread_mutex_lock(&f->mu);
    *field = v;
    pthread_cond_broadcast(&f->cv);
    pthread_mutex_unlock(&f->mu);
}

/* Waits (bounded) until the writer has started `want` batches. */
static int f_wait_running(fake *f, int want) {
    int64_t t0 = pl_mono_us();
    for (;;) {
        pthread_mutex_lock(&f->mu);
        int r = f->running;
        pthread_mutex_unlock(&f->mu);
        if (r >= want) return 0;
        if (pl_mono_us() - t0 > 10 * 1000000) return -1;
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
}

/* Drains until `want` jobs completed (bounded). */
static int f_wait_done(fake *f, pl_pipeline *p, int want) {
    int64_t t0 = pl_mono_us();
    while (f->done < want) {
        pl_pipeline_drain(p);
        if (pl_mono_us() - t0 > 10 * 1000000) return -1;
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    return 0;
}

/* The delay's clock, moved by hand (f_start_clocked). */
static int64_t f_now_us;
static int64_t f_clock(void) { return __atomic_load_n(&f_now_us, __ATOMIC_ACQUIRE); }

static pl_pipeline *f_start_cfg(fake *f, long linger_us, size_t from, size_t until, int64_t (*clock_us)(void)) {
    memset(f, 0, sizeof *f);
    pthread_mutex_init(&f->mu, NULL);
    pthread_cond_init(&f->cv, NULL);
    void *rctx[1] = {f};
    pl_pipeline_cfg cfg = {
        .batch_max = 100, .nreaders = 1, .wctx = f, .rctx = rctx, .run_batch = f_run_batch,
        .run_read = f_run_read, .notify = f_notify, .linger_us = linger_us, .linger_from = from,
        .linger_until = until, .clock_us = clock_us,
    };
    return pl_pipeline_start(&cfg);
}

static pl_pipeline *f_start(fake *f, long linger_us, size_t from, size_t until) {
    return f_start_cfg(f, linger_us, from, until, NULL);
}

static void f_submit(fake *f, pl_pipeline *p, pl_job *jobs, int from, int to) {
    for (int i = from; i < to; i++) {
        memset(&jobs[i], 0, sizeof jobs[i]);
        jobs[i].op = PL_JOB_LAST_SEEN;
        jobs[i].done = f_done;
        jobs[i].data = f;
        pl_pipeline_submit(p, &jobs[i]);
    }
}

/* After a batch of at least linger_from writes, the writer waits for
 * linger_until of them (here: an hour's delay, so only the count can end
 * it) instead of committing the three that are queued; a lone write after
 * a small batch does not wait at all. */
TEST(pipeline_group_commit_delay_waits_for_more_after_a_busy_batch) {
    fake f;
    pl_pipeline *p = f_start(&f, 3600L * 1000000L, 8, 10);
    CHECK(p != NULL);
    pl_job jobs[32];
    f_set(&f, &f.held, 1);
    f_submit(&f, p, jobs, 0, 1);                 /* batch 1: alone (nothing before it) */
    CHECK_EQ(f_wait_running(&f, 1), 0);
    f_submit(&f, p, jobs, 1, 9);                 /* queued behind it: batch 2, 8 writes */
    f_set(&f, &f.held, 0);
    CHECK_EQ(f_wait_done(&f, p, 9), 0);
    f_submit(&f, p, jobs, 9, 12);                /* 3 queued: the writer waits for 10 */
    struct timespec ts = {0, 50 * 1000000};
    nanosleep(&ts, NULL);
    pl_pipeline_drain(p);
    CHECK_EQ(f.done, 9);
    f_submit(&f, p, jobs, 12, 19);               /* 10 queued: batch 3 */
    CHECK_EQ(f_wait_done(&f, p, 19), 0);
    f_submit(&f, p, jobs, 19, 20);               /* after a batch of 10: waits again */
    nanosleep(&ts, NULL);
    pl_pipeline_drain(p);
    CHECK_EQ(f.done, 19);
    pl_pipeline_stop(&p);                        /* stop ends the wait; the write still runs */
    CHECK_EQ(f.done, 20);
    CHECK_EQ(f.nbatches, 4);
    CHECK_EQ(f.sizes[0], 1);
    CHECK_EQ(f.sizes[1], 8);
    CHECK_EQ(f.sizes[2], 10);
    CHECK_EQ(f.sizes[3], 1);
}

/* The delay counts from the oldest queued write's arrival: writes that
 * came in while the previous batch ran, and waited for it longer than the
 * delay, start at once instead of waiting a whole delay more (on the
 * delay's own clock, moved by hand: an hour's delay, and two hours pass
 * while batch 2 runs). */
TEST(pipeline_group_commit_delay_counts_from_the_oldest_write) {
    fake f;
    __atomic_store_n(&f_now_us, 1000000, __ATOMIC_RELEASE);
    pl_pipeline *p = f_start_cfg(&f, 3600L * 1000000L, 8, 10, f_clock);
    CHECK(p != NULL);
    pl_job jobs[32];
    f_set(&f, &f.held, 1);
    f_submit(&f, p, jobs, 0, 1);                 /* batch 1: alone */
    CHECK_EQ(f_wait_running(&f, 1), 0);
    f_submit(&f, p, jobs, 1, 9);                 /* batch 2: 8 writes, a busy batch */
    f_set(&f, &f.hold_batch, 2);                 /* batch 2 runs ... */
    f_set(&f, &f.held, 0);
    CHECK_EQ(f_wait_running(&f, 2), 0);
    f_submit(&f, p, jobs, 9, 12);                /* ... while 3 writes come in */
    __atomic_store_n(&f_now_us, 1000000 + 7200L * 1000000L, __ATOMIC_RELEASE);
    f_set(&f, &f.hold_batch, 0);                 /* two hours later it ends */
    CHECK_EQ(f_wait_done(&f, p, 12), 0);         /* batch 3 did not wait the hour */
    pl_pipeline_stop(&p);
    CHECK_EQ(f.nbatches, 3);
    CHECK_EQ(f.sizes[1], 8);
    CHECK_EQ(f.sizes[2], 3);
}

/* Small batches never wait: each write queued alone after a batch smaller
 * than linger_from is committed without a delay (here the delay would be an
 * hour, so a wait would fail the bounded drain). */
TEST(pipeline_group_commit_delay_spares_lone_writes) {
    fake f;
    pl_pipeline *p = f_start(&f, 3600L * 1000000L, 8, 10);
    CHECK(p != NULL);
    pl_job jobs[8];
    for (int i = 0; i < 8; i++) {
        f_submit(&f, p, jobs, i, i + 1);
        CHECK_EQ(f_wait_done(&f, p, i + 1), 0);
    }
    pl_pipeline_stop(&p);
    CHECK_EQ(f.nbatches, 8);
}

/* Without a delay configured the writer takes whatever is queued. The
 * third batch's writes are queued while the second is held, so that the
 * writer cannot take the first of them alone (it did, now and then, when
 * they were submitted to an idle writer). */
TEST(pipeline_without_delay_commits_what_is_queued) {
    fake f;
    pl_pipeline *p = f_start(&f, 0, 8, 10);
    CHECK(p != NULL);
    pl_job jobs[16];
    f_set(&f, &f.held, 1);
    f_set(&f, &f.hold_batch, 2);
    f_submit(&f, p, jobs, 0, 1);
    CHECK_EQ(f_wait_running(&f, 1), 0);
    f_submit(&f, p, jobs, 1, 9);
    f_set(&f, &f.held, 0);
    CHECK_EQ(f_wait_running(&f, 2), 0);
    f_submit(&f, p, jobs, 9, 12);
    f_set(&f, &f.hold_batch, 0);
    CHECK_EQ(f_wait_done(&f, p, 9), 0);
    CHECK_EQ(f_wait_done(&f, p, 12), 0);
    pl_pipeline_stop(&p);
    CHECK_EQ(f.nbatches, 3);
    CHECK_EQ(f.sizes[2], 3);
}
