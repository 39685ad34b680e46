/* pipeline.c — writer and reader threads of a store backend (see
 * pipeline.h for the design and its invariants). */
#include "pipeline.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

#include "../core/alloc.h"
#include "../core/clock.h"
#include "../core/metrics.h"

typedef struct jqueue {
    pl_job *head, *tail;
} jqueue;

static void jq_push(jqueue *q, pl_job *j) {
    j->next = NULL;
    if (q->tail) q->tail->next = j;
    else q->head = j;
    q->tail = j;
}

static pl_job *jq_pop(jqueue *q) {
    pl_job *j = q->head;
    if (j) {
        q->head = j->next;
        if (!q->head) q->tail = NULL;
        j->next = NULL;
    }
    return j;
}

typedef struct reader {
    pl_pipeline *p;
    void        *ctx;
    pthread_t    thread;
    int          started;
} reader;

struct pl_pipeline {
    pl_pipeline_cfg cfg;
    pthread_mutex_t mu;            /* guards everything below but the threads */
    pthread_cond_t  wcv;           /* writes queued, or stopping              */
    pthread_cond_t  rcv;           /* reads queued, or stopping               */
    jqueue          wq, rq, done;
    int             stopping;
    pthread_t       writer;
    int             writer_started;
    reader         *readers;
    pl_job        **batch;         /* writer thread only                      */
    size_t          wq_len;        /* writes in wq                            */
    size_t          last_n;        /* writes in the previous batch            */
    int64_t         wq_since;      /* mono µs the oldest queued write came in
                                    * (0: long ago, i.e. do not wait for it) */
    int             lingering;     /* the writer waits for more (invariant 5):
                                    * submit wakes it only at linger_until   */
};

/* Appends finished jobs to the done-queue and wakes the loop. */
static void complete(pl_pipeline *p, pl_job **jobs, size_t n) {
    pthread_mutex_lock(&p->mu);
    for (size_t i = 0; i < n; i++) jq_push(&p->done, jobs[i]);
    pthread_mutex_unlock(&p->mu);
    p->cfg.notify(p->cfg.notify_arg);
}

/* The group-commit delay (invariant 5), under mu: waits until linger_until
 * writes are queued, the oldest of them has waited linger_us, or stop
 * began. Counting from the oldest write's arrival, not from the end of the
 * previous batch, means that writes which came in while that batch ran
 * (and waited for it) are not held back a full delay more: a busy writer
 * whose batches take longer than the delay never waits, and at moderate
 * load a transaction starts about every linger_us (docs/benchmarks.md
 * "Issue 11: a group-commit delay counted from the oldest write"). */
static void linger(pl_pipeline *p) {
    int64_t left = p->wq_since + p->cfg.linger_us - p->cfg.clock_us();
    if (left <= 0) return;
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_nsec += (long)(left % 1000000L) * 1000L;
    dl.tv_sec += (time_t)(left / 1000000L) + dl.tv_nsec / 1000000000L;
    dl.tv_nsec %= 1000000000L;
    p->lingering = 1;
    while (p->wq_len < p->cfg.linger_until && !p->stopping)
        if (pthread_cond_timedwait(&p->wcv, &p->mu, &dl) == ETIMEDOUT) break;
    p->lingering = 0;
}

static void *writer_main(void *arg) {
    pl_pipeline *p = arg;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        if (!p->wq.head) {
            if (p->stopping) break;
            if (p->cfg.idle && p->cfg.idle_ms > 0) {
                struct timespec dl;
                clock_gettime(CLOCK_REALTIME, &dl);
                dl.tv_sec += p->cfg.idle_ms / 1000;
                dl.tv_nsec += (long)(p->cfg.idle_ms % 1000) * 1000000L;
                if (dl.tv_nsec >= 1000000000L) { dl.tv_sec++; dl.tv_nsec -= 1000000000L; }
                int rc = pthread_cond_timedwait(&p->wcv, &p->mu, &dl);
                if (rc == ETIMEDOUT && !p->wq.head && !p->stopping) {
                    pthread_mutex_unlock(&p->mu);
                    p->cfg.idle(p->cfg.wctx);
                    pthread_mutex_lock(&p->mu);
                }
            } else {
                pthread_cond_wait(&p->wcv, &p->mu);
            }
            continue;
        }
        if (p->cfg.linger_us > 0 && p->last_n >= p->cfg.linger_from && p->wq_len < p->cfg.linger_until)
            linger(p);
        size_t n = 0;
        pl_job *j;
        while (n < p->cfg.batch_max && (j = jq_pop(&p->wq)) != NULL) p->batch[n++] = j;
        p->wq_len -= n;
        p->wq_since = 0;               /* any left (a full batch) came in before now */
        p->last_n = n;
        pthread_mutex_unlock(&p->mu);
        p->cfg.run_batch(p->cfg.wctx, p->batch, n);
        complete(p, p->batch, n);
        if (p->cfg.after_batch) {
            pthread_mutex_lock(&p->mu);
            int queued = p->wq.head != NULL;
            pthread_mutex_unlock(&p->mu);
            p->cfg.after_batch(p->cfg.wctx, queued);
        }
        pthread_mutex_lock(&p->mu);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

static void *reader_main(void *arg) {
    reader *r = arg;
    pl_pipeline *p = r->p;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        pl_job *j = jq_pop(&p->rq);
        if (!j) {
            if (p->stopping) break;
            pthread_cond_wait(&p->rcv, &p->mu);
            continue;
        }
        pthread_mutex_unlock(&p->mu);
        p->cfg.run_read(r->ctx, j);
        pl_count(&pl_m_store_reads, 1);
        if (j->result == PL_STORE_EUNAVAIL) pl_count(&pl_m_store_read_failures, 1);
        complete(p, &j, 1);
        pthread_mutex_lock(&p->mu);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

pl_pipeline *pl_pipeline_start(const pl_pipeline_cfg *cfg) {
    pl_pipeline *p = pl_calloc(1, sizeof *p);
    p->cfg = *cfg;
    if (!p->cfg.clock_us) p->cfg.clock_us = pl_mono_us;
    if (p->cfg.batch_max < 1) p->cfg.batch_max = 1;
    if (p->cfg.nreaders < 1) p->cfg.nreaders = 1;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->wcv, NULL);
    pthread_cond_init(&p->rcv, NULL);
    p->batch = pl_malloc(p->cfg.batch_max * sizeof *p->batch);
    p->readers = pl_calloc((size_t)p->cfg.nreaders, sizeof *p->readers);
    int ok = pthread_create(&p->writer, NULL, writer_main, p) == 0;
    p->writer_started = ok;
    for (int i = 0; ok && i < p->cfg.nreaders; i++) {
        reader *r = &p->readers[i];
        r->p = p;
        r->ctx = cfg->rctx[i];
        ok = pthread_create(&r->thread, NULL, reader_main, r) == 0;
        r->started = ok;
    }
    if (!ok) {
        pl_pipeline_stop(&p);
        return NULL;
    }
    return p;
}

void pl_pipeline_submit(pl_pipeline *p, pl_job *j) {
    int write = !pl_job_is_read(j->op);
    pthread_mutex_lock(&p->mu);
    if (p->stopping) {                     /* invariant 3: fail fast */
        j->result = PL_STORE_EUNAVAIL;
        jq_push(&p->done, j);
        pthread_mutex_unlock(&p->mu);
        p->cfg.notify(p->cfg.notify_arg);
        return;
    }
    if (write && !p->wq.head) p->wq_since = p->cfg.clock_us();
    jq_push(write ? &p->wq : &p->rq, j);
    if (!write) pthread_cond_signal(&p->rcv);
    else if (++p->wq_len >= p->cfg.linger_until || !p->lingering) pthread_cond_signal(&p->wcv);
    pthread_mutex_unlock(&p->mu);
}

void pl_pipeline_drain(pl_pipeline *p) {
    pthread_mutex_lock(&p->mu);
    jqueue q = p->done;
    p->done.head = p->done.tail = NULL;
    pthread_mutex_unlock(&p->mu);
    pl_job *j;
    while ((j = jq_pop(&q)) != NULL) {
        if (p->cfg.committed && !pl_job_is_read(j->op) && j->result == PL_STORE_OK && j->has_event &&
            !j->dup)
            p->cfg.committed(p->cfg.committed_arg, j);
        j->done(j);
    }
}

void pl_pipeline_stop(pl_pipeline **pp) {
    pl_pipeline *p = *pp;
    if (!p) return;
    *pp = NULL;
    pthread_mutex_lock(&p->mu);
    p->stopping = 1;
    pthread_cond_broadcast(&p->wcv);
    pthread_cond_broadcast(&p->rcv);
    pthread_mutex_unlock(&p->mu);
    if (p->writer_started) pthread_join(p->writer, NULL);
    for (int i = 0; i < p->cfg.nreaders; i++)
        if (p->readers[i].started) pthread_join(p->readers[i].thread, NULL);
    for (;;) {                             /* done() may submit more: they fail fast */
        pthread_mutex_lock(&p->mu);
        int more = p->done.head != NULL;
        pthread_mutex_unlock(&p->mu);
        if (!more) break;
        pl_pipeline_drain(p);
    }
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->wcv);
    pthread_cond_destroy(&p->rcv);
    free(p->batch);
    free(p->readers);
    free(p);
}
