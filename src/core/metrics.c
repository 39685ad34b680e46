/* metrics.c — the metric definitions and the Prometheus text renderer
 * (see metrics.h). */
#include "metrics.h"

static const double size_bounds[PL_HIST_BUCKETS] = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096};
static const double time_bounds[PL_HIST_BUCKETS] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
                                                    0.01, 0.025, 0.05, 0.1, 0.25, 1};

pl_counter pl_m_ws_messages_in, pl_m_sends, pl_m_sends_dup, pl_m_frames_out, pl_m_http_requests,
    pl_m_commit_batches, pl_m_commit_jobs, pl_m_commit_failures, pl_m_dropped_ephemeral,
    pl_m_slow_consumer_closes, pl_m_rate_limited_user, pl_m_rate_limited_conv, pl_m_rate_limited_ws, pl_m_rate_limited_ip,
    pl_m_rate_limited_signal, pl_m_rate_limited_overload, pl_m_conn_refused_ip, pl_m_idle_closes, pl_m_bus_published,
    pl_m_bus_received, pl_m_bus_reconnects, pl_m_bus_publish_failures, pl_m_bus_resyncs, pl_m_ready_bus_timeouts,
    pl_m_gap_fills, pl_m_gap_events, pl_m_store_reads, pl_m_store_read_failures, pl_m_flow_held,
    pl_m_ckpt_background, pl_m_ckpt_writer, pl_m_push_sent, pl_m_push_gone, pl_m_push_retry, pl_m_push_failed,
    pl_m_push_online, pl_m_push_dropped, pl_m_push_cancelled, pl_m_filter_blocked, pl_m_filter_flagged, pl_m_filter_masked;
pl_hist pl_m_commit_batch_size = {.bounds = size_bounds};
pl_hist pl_m_commit_seconds = {.bounds = time_bounds};
pl_hist pl_m_delivery_seconds = {.bounds = time_bounds};

void pl_observe(pl_hist *h, double v) {
    int i = 0;
    while (i < PL_HIST_BUCKETS && v > h->bounds[i]) i++;
    __atomic_fetch_add(&h->counts[i], 1, __ATOMIC_RELAXED);
    __atomic_fetch_add(&h->sum_micro, (uint64_t)(v * 1e6), __ATOMIC_RELAXED);
    __atomic_fetch_add(&h->n, 1, __ATOMIC_RELAXED);
}

static uint64_t rd(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }

static void counter(pl_sbuf *o, const char *name, const char *help, const char *labels, const pl_counter *c,
                    int header) {
    if (header) pl_sbuf_printf(o, "# HELP %s %s\n# TYPE %s counter\n", name, help, name);
    pl_sbuf_printf(o, "%s%s %llu\n", name, labels ? labels : "", (unsigned long long)rd(&c->v));
}

static void gauge(pl_sbuf *o, const char *name, const char *help, uint64_t v) {
    pl_sbuf_printf(o, "# HELP %s %s\n# TYPE %s gauge\n%s %llu\n", name, help, name, name,
                   (unsigned long long)v);
}

static void hist(pl_sbuf *o, const char *name, const char *help, const pl_hist *h) {
    pl_sbuf_printf(o, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    uint64_t cum = 0;
    for (int i = 0; i < PL_HIST_BUCKETS; i++) {
        cum += rd(&h->counts[i]);
        pl_sbuf_printf(o, "%s_bucket{le=\"%g\"} %llu\n", name, h->bounds[i], (unsigned long long)cum);
    }
    cum += rd(&h->counts[PL_HIST_BUCKETS]);
    pl_sbuf_printf(o, "%s_bucket{le=\"+Inf\"} %llu\n", name, (unsigned long long)cum);
    pl_sbuf_printf(o, "%s_sum %.6f\n%s_count %llu\n", name, (double)rd(&h->sum_micro) / 1e6, name,
                   (unsigned long long)cum);
}

void pl_metrics_render(pl_sbuf *o, const pl_metrics_gauges *g) {
    gauge(o, "parley_connections", "Open TCP connections (HTTP and WebSocket).", g->connections);
    gauge(o, "parley_sessions", "Authenticated WebSocket sessions.", g->sessions);
    gauge(o, "parley_outbound_queue_bytes", "Bytes queued for writing, all connections.", g->outbound_bytes);
    gauge(o, "parley_outbound_queue_max_bytes", "Bytes queued on the fullest connection.", g->outbound_max_bytes);
    gauge(o, "parley_draining", "1 while shutting down.", (uint64_t)g->draining);
    counter(o, "parley_ws_messages_in_total", "WebSocket messages received from clients.", NULL, &pl_m_ws_messages_in, 1);
    counter(o, "parley_messages_sent_total", "Messages durably stored and acknowledged.", NULL, &pl_m_sends, 1);
    counter(o, "parley_messages_duplicate_total", "Sends answered from the store as retries.", NULL, &pl_m_sends_dup, 1);
    counter(o, "parley_frames_out_total", "Conversation event frames queued to sessions.", NULL, &pl_m_frames_out, 1);
    counter(o, "parley_http_requests_total", "HTTP requests handled.", NULL, &pl_m_http_requests, 1);
    counter(o, "parley_commit_batches_total", "Store transactions committed.", NULL, &pl_m_commit_batches, 1);
    counter(o, "parley_commit_jobs_total", "Store jobs committed.", NULL, &pl_m_commit_jobs, 1);
    counter(o, "parley_commit_failures_total", "Store transactions that failed.", NULL, &pl_m_commit_failures, 1);
    counter(o, "parley_wal_checkpoints_total", "SQLite WAL checkpoints (embedded mode), by the thread that ran them.",
            "{by=\"background\"}", &pl_m_ckpt_background, 1);
    counter(o, "parley_wal_checkpoints_total", NULL, "{by=\"writer\"}", &pl_m_ckpt_writer, 0);
    counter(o, "parley_push_total",
            "Push notification requests by outcome, one per device and attempt (dropped: notifications given up, "
            "one each; online: not sent, the user was connected).",
            "{outcome=\"sent\"}", &pl_m_push_sent, 1);
    counter(o, "parley_push_total", NULL, "{outcome=\"gone\"}", &pl_m_push_gone, 0);
    counter(o, "parley_push_total", NULL, "{outcome=\"retry\"}", &pl_m_push_retry, 0);
    counter(o, "parley_push_total", NULL, "{outcome=\"failed\"}", &pl_m_push_failed, 0);
    counter(o, "parley_push_total", NULL, "{outcome=\"online\"}", &pl_m_push_online, 0);
    counter(o, "parley_push_total", NULL, "{outcome=\"dropped\"}", &pl_m_push_dropped, 0);
    counter(o, "parley_push_total", NULL, "{outcome=\"cancelled\"}", &pl_m_push_cancelled, 0);
    counter(o, "parley_dropped_total", "Ephemeral frames dropped for slow consumers.", "{kind=\"ephemeral\"}",
            &pl_m_dropped_ephemeral, 1);
    counter(o, "parley_slow_consumer_closes_total", "Connections closed because they did not read.", NULL,
            &pl_m_slow_consumer_closes, 1);
    counter(o, "parley_flow_held_acks_total", "Send acks held until a lagging conversation caught up (flow control).",
            NULL, &pl_m_flow_held, 1);
    counter(o, "parley_idle_closes_total", "Connections closed for not answering pings.", NULL, &pl_m_idle_closes, 1);
    counter(o, "parley_rate_limited_total", "Requests refused by a rate limit.", "{scope=\"user\"}",
            &pl_m_rate_limited_user, 1);
    counter(o, "parley_rate_limited_total", NULL, "{scope=\"conversation\"}", &pl_m_rate_limited_conv, 0);
    counter(o, "parley_rate_limited_total", NULL, "{scope=\"workspace\"}", &pl_m_rate_limited_ws, 0);
    counter(o, "parley_rate_limited_total", NULL, "{scope=\"ip\"}", &pl_m_rate_limited_ip, 0);
    counter(o, "parley_rate_limited_total", NULL, "{scope=\"signal\"}", &pl_m_rate_limited_signal, 0);
    counter(o, "parley_rate_limited_total", NULL, "{scope=\"overloaded\"}", &pl_m_rate_limited_overload, 0);
    counter(o, "parley_content_filter_total", "Sends and edits a content filter rule matched, by the action taken.",
            "{action=\"block\"}", &pl_m_filter_blocked, 1);
    counter(o, "parley_content_filter_total", NULL, "{action=\"flag\"}", &pl_m_filter_flagged, 0);
    counter(o, "parley_content_filter_total", NULL, "{action=\"mask\"}", &pl_m_filter_masked, 0);
    counter(o, "parley_connections_refused_total", "Connections refused: over the per-IP cap, or closed unanswered while out of file descriptors.", NULL,
            &pl_m_conn_refused_ip, 1);
    gauge(o, "parley_store_up", "1 while the store's connections are up.", (uint64_t)g->store_up);
    gauge(o, "parley_bus_up", "1 while the bus (Redis in cluster mode) is connected.", (uint64_t)g->bus_up);
    counter(o, "parley_store_reads_total", "Store reads completed.", NULL, &pl_m_store_reads, 1);
    counter(o, "parley_store_read_failures_total", "Store reads that failed (store unavailable).", NULL,
            &pl_m_store_read_failures, 1);
    counter(o, "parley_bus_published_total", "Messages handed to the bus transport.", NULL, &pl_m_bus_published, 1);
    counter(o, "parley_bus_received_total", "Bus messages received from other nodes.", NULL, &pl_m_bus_received, 1);
    counter(o, "parley_bus_reconnects_total", "Bus transport connections re-established.", NULL,
            &pl_m_bus_reconnects, 1);
    counter(o, "parley_bus_publish_failures_total", "Publishes not handed over (announced again as heads).",
            NULL, &pl_m_bus_publish_failures, 1);
    counter(o, "parley_bus_resyncs_total", "Head and membership checks after the bus may have lost messages.",
            NULL, &pl_m_bus_resyncs, 1);
    counter(o, "parley_ready_bus_timeouts_total",
            "Sessions whose ready went out before the bus confirmed their conversations' subscriptions.", NULL,
            &pl_m_ready_bus_timeouts, 1);
    counter(o, "parley_gap_fills_total", "Store reads of conversation events the bus did not bring.", NULL,
            &pl_m_gap_fills, 1);
    counter(o, "parley_gap_events_total", "Events found by gap fills.", NULL, &pl_m_gap_events, 1);
    hist(o, "parley_commit_batch_size", "Jobs per store transaction.", &pl_m_commit_batch_size);
    hist(o, "parley_commit_seconds", "Store transaction time, BEGIN to durable COMMIT.", &pl_m_commit_seconds);
    hist(o, "parley_delivery_seconds", "Time from a send's arrival to its frames being queued to recipients.",
         &pl_m_delivery_seconds);
}
