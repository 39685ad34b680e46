/* main.c — parleyd: reads the configuration, opens the store, wires the
 * layers together and runs the event loop until SIGTERM/SIGINT.
 *
 * Wiring (each arrow is a callback table set here):
 *   net (conn.c) --bytes--> http (server.c) --request--> api.c
 *                                           --upgrade--> wsconn.c --text--> chat.c
 *   store writer --done (uv_async)--> job callbacks --committed event--> bus --> chat.c
 *
 * Shutdown: stop accepting, tell WebSocket clients 1001 (reconnect), let the
 * store finish queued commits (their acks are flushed), close, exit 0.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <uv.h>

#include "../bus/bus.h"
#include "../chat/auth.h"
#include "../chat/chat.h"
#include "../core/clock.h"
#include "../core/log.h"
#include "../http/server.h"
#include "../net/conn.h"
#include "../store/store.h"
#include "../ws/wsconn.h"
#include "api.h"
#include "config.h"

static uv_loop_t  *loop;
static pl_net     *net;
static pl_store   *store;
static pl_bus     *bus;
static uv_async_t  store_wakeup;
static uv_signal_t sigterm, sigint;
static uv_timer_t  stop_timer;
static pl_config   cfg;
static int         stopping;
static int64_t     drain_deadline;

static void on_data(pl_conn *c, uint8_t *p, size_t n) {
    if (c->mode == PL_CONN_HTTP) pl_http_on_data(c, p, n);
    else pl_wsconn_on_data(c, p, n);
}

static void on_close(pl_conn *c) {
    pl_http_on_close(c);
    if (c->mode == PL_CONN_WS) pl_ws_reader_release(&c->ws);
    pl_chat_conn_closed(c);
}

static void on_timeout(pl_conn *c) {
    if (c->mode == PL_CONN_HTTP) pl_http_on_timeout(c);
    else pl_wsconn_on_timeout(c);
}

static void on_ws_open(pl_conn *c, const char *tok, size_t len, void *ud) {
    if (pl_api_admit_ip(c, 0)) {
        pl_wsconn_close(c, PL_WS_CLOSE_POLICY, "rate limited: too many connections from this address");
        return;
    }
    pl_chat_ws_open(c, tok, len);
}

static void sample_gauges(pl_metrics_gauges *g) {
    g->connections = pl_net_count(net);
    g->sessions = pl_chat_session_count();
    pl_net_queue_stats(net, &g->outbound_bytes, &g->outbound_max_bytes);
}

static void on_store_wakeup(uv_async_t *a) { pl_store_drain(store); }

/* The bus delivers committed events to WebSocket sessions and long-polls. */
static void on_bus_event(void *ud, const pl_event *ev) {
    pl_chat_on_event(ud, ev);
    pl_api_conv_event(ev->conv);
}

/* Called from the store's writer thread. */
static void store_notify(void *arg) { uv_async_send(&store_wakeup); }

static void finish_stop(void) {
    uv_timer_stop(&stop_timer);
    pl_net_close(net);
    uv_close((uv_handle_t *)&stop_timer, NULL);
    uv_close((uv_handle_t *)&sigterm, NULL);
    uv_close((uv_handle_t *)&sigint, NULL);
}

/* Every 100 ms during a drain: done when every client has closed, or when
 * the grace period is over. */
static void drain_check(uv_timer_t *t) {
    if (pl_net_count(net) == 0 || pl_mono_ms() >= drain_deadline) finish_stop();
}

static void pause_conn(pl_conn *c, void *arg) { pl_conn_pause(c); }

/* SIGTERM/SIGINT, the drain (P6): no new connections or requests; every
 * queued commit finishes and its ack is queued; WebSockets then get a
 * reconnect hint and 1001 after their acks; the process exits 0 when the
 * clients have closed or shutdown-grace seconds have passed. */
static void on_signal(uv_signal_t *s, int signum) {
    if (stopping++) return;
    pl_log(PL_LOG_INFO, 0, "draining", "\"signal\":%d,\"connections\":%zu", signum, pl_net_count(net));
    pl_net_stop_accepting(net);
    pl_net_each(net, pause_conn, NULL);
    pl_api_shutdown();
    pl_chat_shutdown();
    pl_store_close(&store);      /* joins the writer; runs every job's callback */
    uv_close((uv_handle_t *)&store_wakeup, NULL);
    pl_chat_close_all(net, PL_WS_CLOSE_GOING_AWAY, "server shutting down");
    drain_deadline = pl_mono_ms() + (int64_t)cfg.shutdown_grace * 1000;
    uv_timer_start(&stop_timer, drain_check, 100, 100);
}

int main(int argc, char **argv) {
    int r = pl_config_load(&cfg, argc, argv);
    if (r) return r > 0 ? 0 : 2;
    int lvl = pl_log_parse_level(cfg.log_level);
    if (lvl < 0) {
        fprintf(stderr, "parleyd: unknown log level %s\n", cfg.log_level);
        return 2;
    }
    pl_log_level = lvl;
    signal(SIGPIPE, SIG_IGN);
    mkdir(cfg.data_dir, 0700);
    const char *err = NULL;
    if (pl_auth_init(cfg.data_dir, &err)) {
        fprintf(stderr, "parleyd: %s\n", err);
        return 1;
    }
    loop = uv_default_loop();
    uv_async_init(loop, &store_wakeup, on_store_wakeup);
    if (pl_store_sqlite_open(cfg.data_dir, cfg.node_id, store_notify, NULL, &store, &err)) {
        fprintf(stderr, "parleyd: cannot open the store in %s: %s\n", cfg.data_dir, err ? err : "?");
        return 1;
    }
    bus = pl_bus_local_new(on_bus_event, NULL);
    pl_chat_init(loop, store, bus, &cfg);
    pl_api_init(loop, store, &cfg);
    pl_http_hooks hh = {pl_api_on_request, on_ws_open, NULL};
    pl_http_init(&hh);
    pl_wsconn_hooks wh = {pl_chat_ws_text, pl_chat_ws_timeout};
    pl_wsconn_init(&wh, (uint32_t)cfg.max_ws_message);
    pl_net_handler nh = {on_data, on_close, on_timeout, pl_chat_on_drain};
    r = pl_net_listen(loop, cfg.listen, &nh, NULL, &net);
    if (r) {
        fprintf(stderr, "parleyd: cannot listen on %s: %s\n", cfg.listen, uv_strerror(r));
        return 1;
    }
    pl_net_set_max_per_ip(net, cfg.max_conns_per_ip);
    /* shed and pause well before the hard bound closes a slow consumer */
    pl_net_set_queue_marks(net, (size_t)cfg.max_outbound / 4, (size_t)cfg.max_outbound / 16);
    pl_api_set_gauges(sample_gauges);
    uv_signal_init(loop, &sigterm);
    uv_signal_start(&sigterm, on_signal, SIGTERM);
    uv_signal_init(loop, &sigint);
    uv_signal_start(&sigint, on_signal, SIGINT);
    uv_timer_init(loop, &stop_timer);
    pl_log(PL_LOG_INFO, 0, "listening", "\"listen\":\"%s\",\"data_dir\":\"%s\"", cfg.listen, cfg.data_dir);

    uv_run(loop, UV_RUN_DEFAULT);

    pl_bus_close(&bus);
    uv_loop_close(loop);
    pl_log(PL_LOG_INFO, 0, "stopped", "%s", "");
    return 0;
}
