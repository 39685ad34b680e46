/* pipeline.h — the threads behind every store backend: one writer that runs
 * write jobs in batches (group commit), reader threads that run read jobs,
 * and the done-queue that hands finished jobs back to the event loop.
 *
 * Owns: queues, threads, their lifecycle, submission order of write
 * completions. Does not own: what a job does (the backend's run_batch and
 * run_read), connections (the backend's, one per thread, passed as ctx).
 *
 *   loop thread             writer thread                 loop thread
 *   pl_pipeline_submit()    take <= batch_max writes      pl_pipeline_drain()
 *     write -> [wq] ------> run_batch(wctx, jobs, n) ---> [done] -> job->done()
 *     read  -> [rq] --.                                  ^   (submission order
 *                     `--> reader i: run_read(rctx[i]) -'    for writes)
 *
 * Invariants:
 *   1. A job is in exactly one place: a submit queue, a thread's hands, or
 *      the done-queue; only drain() calls done(), on the loop thread.
 *   2. Writes complete in submission order (one writer, FIFO batches).
 *   3. After stop begins, queued jobs still run; jobs submitted later
 *      complete with PL_STORE_EUNAVAIL without running.
 *   4. notify() is called after jobs are appended to the done-queue; the
 *      loop must then call drain(). Calls may coalesce.
 *   5. The group-commit delay (cfg.linger_us) only postpones the start of
 *      a batch, until its oldest write is at most linger_us old; it never
 *      splits, reorders or holds back a batch once taken, and stop() ends
 *      it at once.
 */
#ifndef PL_STORE_PIPELINE_H
#define PL_STORE_PIPELINE_H

#include <stddef.h>
#include <stdint.h>

#include "store.h"

typedef struct pl_pipeline pl_pipeline;

typedef struct pl_pipeline_cfg {
    size_t  batch_max;                 /* writes per batch                   */
    int     nreaders;                  /* reader threads (>= 1)              */
    void   *wctx;                      /* writer's context (its connection)  */
    void  **rctx;                      /* nreaders contexts (copied)         */
    /* writer thread: run every job of the batch and set each result */
    void  (*run_batch)(void *wctx, pl_job **jobs, size_t n);
    /* group-commit delay (0: none): when the previous batch had at least
     * linger_from writes and fewer than linger_until are queued, the
     * writer waits for more until the oldest queued write is linger_us
     * old before it starts the next batch. Writers at moderate load then
     * commit less often; a lone write never waits (its previous batch was
     * small), nor do writes that already waited through a long batch. */
    long    linger_us;
    size_t  linger_from, linger_until;
    /* monotonic µs for the delay (NULL: the system's; tests pass a fake) */
    int64_t (*clock_us)(void);
    /* writer thread, when no write came for idle_ms (0: never) */
    void  (*idle)(void *wctx);
    int     idle_ms;
    /* writer thread, after each batch's jobs were handed to the done-queue
     * (background work that must not delay their completion; may be NULL);
     * queued: whether more writes are already waiting */
    void  (*after_batch)(void *wctx, int queued);
    /* reader thread: run one read and set its result */
    void  (*run_read)(void *rctx, pl_job *j);
    void  (*notify)(void *arg);
    void   *notify_arg;
    /* drain(): before done() of a write that appended a new event */
    void  (*committed)(void *arg, pl_job *j);
    void   *committed_arg;
} pl_pipeline_cfg;

/* Starts the threads. Returns NULL if a thread could not start. */
pl_pipeline *pl_pipeline_start(const pl_pipeline_cfg *cfg);
void pl_pipeline_submit(pl_pipeline *p, pl_job *j);
/* Runs done() for every completed job, in completion order (loop thread). */
void pl_pipeline_drain(pl_pipeline *p);
/* Finishes queued jobs, joins the threads, drains until nothing is left
 * (done() may submit more; those fail fast), frees p and NULLs *pp. */
void pl_pipeline_stop(pl_pipeline **pp);

#endif
