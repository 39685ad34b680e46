/* metrics.h — process-wide counters and histograms, rendered as Prometheus
 * text (exposition format 0.0.4) at /metrics.
 *
 * Owns: the metric registry. Metrics are static objects (one definition
 * each, in metrics.c) updated with relaxed atomics, so the store writer
 * thread and the loop thread can both update them without locks. Gauges that
 * are cheaper to read than to maintain (connections, queue bytes) are
 * sampled by a callback when /metrics is scraped.
 */
#ifndef PL_METRICS_H
#define PL_METRICS_H

#include <stdint.h>

#include "buf.h"

typedef struct pl_counter { uint64_t v; } pl_counter;

#define PL_HIST_BUCKETS 12
typedef struct pl_hist {
    const double *bounds;               /* PL_HIST_BUCKETS upper bounds (+Inf implied) */
    uint64_t      counts[PL_HIST_BUCKETS + 1];
    uint64_t      sum_micro;            /* sum of observations in millionths */
    uint64_t      n;
} pl_hist;

static inline void pl_count(pl_counter *c, uint64_t by) { __atomic_fetch_add(&c->v, by, __ATOMIC_RELAXED); }
void pl_observe(pl_hist *h, double v);

/* The metrics (see metrics.c for names and help). */
extern pl_counter pl_m_ws_messages_in;       /* client WebSocket messages        */
extern pl_counter pl_m_sends;                /* messages acknowledged (new)      */
extern pl_counter pl_m_sends_dup;            /* retries answered from the store  */
extern pl_counter pl_m_filter_blocked, pl_m_filter_flagged, pl_m_filter_masked;   /* content filter */
extern pl_counter pl_m_frames_out;           /* event frames queued to sessions  */
extern pl_counter pl_m_http_requests;
extern pl_counter pl_m_commit_batches;
extern pl_counter pl_m_commit_jobs;
extern pl_counter pl_m_commit_failures;
extern pl_counter pl_m_dropped_ephemeral;    /* typing/presence/receipt frames shed */
extern pl_counter pl_m_slow_consumer_closes;
extern pl_counter pl_m_flow_held;           /* acks held by flow control (chat/flow.c) */
extern pl_counter pl_m_rate_limited_user;
extern pl_counter pl_m_rate_limited_conv;
extern pl_counter pl_m_rate_limited_ws;
extern pl_counter pl_m_rate_limited_ip;
extern pl_counter pl_m_rate_limited_signal;
extern pl_counter pl_m_rate_limited_overload;   /* flow control's refusals (flow.h) */
extern pl_counter pl_m_conn_refused_ip;      /* over the per-IP cap, or no fds   */
extern pl_counter pl_m_idle_closes;
extern pl_counter pl_m_bus_published;       /* messages handed to the bus transport */
extern pl_counter pl_m_bus_received;        /* messages from other nodes       */
extern pl_counter pl_m_bus_reconnects;      /* transport connections re-established */
extern pl_counter pl_m_bus_publish_failures;/* publishes not handed over (retried as heads) */
extern pl_counter pl_m_bus_resyncs;         /* head/membership checks after a bus loss */
extern pl_counter pl_m_ready_bus_timeouts;  /* `ready` sent before the bus confirmed */
extern pl_counter pl_m_gap_fills;           /* reads of events the bus did not bring */
extern pl_counter pl_m_gap_events;          /* events those reads found        */
extern pl_counter pl_m_store_reads;         /* read jobs completed             */
extern pl_counter pl_m_store_read_failures; /* read jobs that failed (unavailable) */
extern pl_counter pl_m_ckpt_background;     /* WAL checkpoints by the checkpoint thread */
extern pl_counter pl_m_ckpt_writer;         /* ... by the writer, to restart the WAL */
extern pl_counter pl_m_push_sent;           /* push requests a service accepted */
extern pl_counter pl_m_push_gone;           /* ... refused: the device is gone  */
extern pl_counter pl_m_push_retry;          /* ... to be tried again            */
extern pl_counter pl_m_push_failed;         /* ... refused otherwise            */
extern pl_counter pl_m_push_online;         /* not sent: the user was connected */
extern pl_counter pl_m_push_dropped;        /* given up after the last attempt  */
extern pl_counter pl_m_push_cancelled;      /* a retry's device no longer told  */
extern pl_hist    pl_m_commit_batch_size;    /* jobs per transaction            */
extern pl_hist    pl_m_commit_seconds;       /* BEGIN..COMMIT                   */
extern pl_hist    pl_m_delivery_seconds;     /* send received -> frames queued  */

/* Sampled gauges, filled by the application when scraped. */
typedef struct pl_metrics_gauges {
    uint64_t connections;
    uint64_t sessions;
    uint64_t outbound_bytes;                 /* queued, all connections         */
    uint64_t outbound_max_bytes;             /* largest single queue            */
    int      draining;
    int      store_up;                       /* 1 while the store can serve     */
    int      bus_up;                         /* 1 while the bus is connected    */
} pl_metrics_gauges;

void pl_metrics_render(pl_sbuf *out, const pl_metrics_gauges *g);

#endif
