/* main.c — parleyd: reads the configuration, opens the store and the bus,
 * wires the layers together and runs the event loop until SIGTERM/SIGINT.
 *
 * Wiring (each arrow is a callback table set here):
 *   net (conn.c) --bytes--> http (server.c) --request--> api*.c
 *                                           --upgrade--> wsconn.c --text--> chat/
 *   store threads --done (uv_async)--> commit hook: chat publishes on the bus
 *                                  --> job callbacks (acks, replies)
 *   bus (local, or Redis in cluster mode) --events, heads, signals--> chat/
 *
 * Modes: no --store/--redis is embedded mode (SQLite in --data-dir, the
 * in-process bus). --store postgres://... (plus --redis redis://... for
 * several nodes) is cluster mode.
 *
 * Shutdown (P6): stop accepting; pause every connection; the store finishes
 * queued commits (their acks are queued, their events published); every
 * WebSocket gets a reconnect hint and 1001; when they are gone (or after
 * --shutdown-grace) the listener, the bus and the loop close; exit 0.
 */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <uv.h>

#include "../bus/bus.h"
#include "../chat/auth.h"
#include "../chat/chat.h"
#include "../core/alloc.h"
#include "../core/buf.h"
#include "../core/clock.h"
#include "../core/log.h"
#include "../http/server.h"
#include "../net/conn.h"
#include "../net/tls.h"
#include "../push/push.h"
#include "../store/store.h"
#include "../ws/wsconn.h"
#include "api.h"
#include "config.h"
#include "web.h"

static uv_loop_t  *loop;
static pl_net     *net;
static pl_store   *store;
static pl_bus     *bus;
static uv_async_t  store_wakeup;
static uv_signal_t sigterm, sigint;
static uv_signal_t sighup;       /* TLS: reread the certificate and key */
static pl_tls     *tls;          /* NULL: plaintext                     */
static uv_timer_t  stop_timer;
static pl_config   cfg;
static int         stopping;
static int64_t     drain_deadline;

static void on_data(pl_conn *c, uint8_t *p, size_t n) {
    if (c->mode == PL_CONN_HTTP) pl_http_on_data(c, p, n);
    else if (c->mode == PL_CONN_SSE) pl_http_stream_on_data(c, p, n);   /* GET /api/v1/events */
    else pl_wsconn_on_data(c, p, n);
}

static void on_close(pl_conn *c) {
    pl_http_on_close(c);
    if (c->mode == PL_CONN_WS) pl_wsconn_release(c);
    pl_chat_conn_closed(c);
}

static void on_timeout(pl_conn *c) {
    if (c->mode == PL_CONN_HTTP) pl_http_on_timeout(c);
    else if (c->mode == PL_CONN_SSE) pl_chat_sse_timeout(c);   /* heartbeats, slow cut */
    else pl_wsconn_on_timeout(c);
}

static void on_drain(pl_conn *c) {
    if (c->mode == PL_CONN_HTTP) pl_http_on_drain(c);   /* a streamed response (media) */
    else pl_chat_on_drain(c);
}

static void on_ws_open(pl_conn *c, const char *tok, size_t len, void *ud) {
    if (pl_api_admit_ip(c, 0)) {
        pl_wsconn_close(c, PL_WS_CLOSE_POLICY, "rate limited: too many connections from this address");
        return;
    }
    pl_chat_ws_open(c, tok, len);
}

static const char *upgrade_refused(pl_conn *c, const pl_http_req *r, void *ud) {
    if (!pl_api_origin_ok(c, r)) return "Origin not allowed";
    if (!pl_api_authorization_ok(r)) return PL_API_TWO_AUTHORIZATIONS;
    return NULL;
}

static void sample_gauges(pl_metrics_gauges *g) {
    g->connections = pl_net_count(net);
    g->sessions = pl_chat_session_count();
    pl_net_queue_stats(net, &g->outbound_bytes, &g->outbound_max_bytes);
    g->store_up = store ? pl_store_healthy(store) : 0;
    g->bus_up = bus ? pl_bus_healthy(bus) : 0;
}

/* /readyz: not while the database or Redis is unreachable. */
static int ready(const char **why) {
    if (!store || !pl_store_healthy(store)) {
        *why = "store unavailable";
        return 0;
    }
    if (!bus || !pl_bus_healthy(bus)) {
        *why = "bus unavailable";
        return 0;
    }
    return 1;
}

static void on_store_wakeup(uv_async_t *a) {
    if (store) pl_store_drain(store);
}

/* Called from the store's threads. */
static void store_notify(void *arg) { uv_async_send(&store_wakeup); }

static void finish_stop(void) {
    uv_timer_stop(&stop_timer);
    pl_net_close(net);           /* connections close later: they must not see the bus */
    pl_chat_set_bus(NULL);
    pl_bus_close(&bus);
    uv_close((uv_handle_t *)&stop_timer, NULL);
    uv_close((uv_handle_t *)&sigterm, NULL);
    uv_close((uv_handle_t *)&sigint, NULL);
    uv_close((uv_handle_t *)&sighup, NULL);
}

/* Every 100 ms during a drain: done when every client has closed (or is
 * only lingering: our side is finished, see net/conn.h), or when the grace
 * period is over. */
static void drain_check(uv_timer_t *t) {
    if (pl_net_active(net) == 0 || pl_mono_ms() >= drain_deadline) finish_stop();
}

static void pause_conn(pl_conn *c, void *arg) { pl_conn_pause(c); }

static void on_signal(uv_signal_t *s, int signum) {
    if (stopping++) return;
    pl_log(PL_LOG_INFO, 0, "draining", "\"signal\":%d,\"connections\":%zu", signum, pl_net_count(net));
    pl_net_stop_accepting(net);
    pl_net_each(net, pause_conn, NULL);
    pl_api_shutdown();
    pl_api_media_shutdown();
    pl_api_life_shutdown();
    pl_chat_shutdown();
    pl_push_stop();              /* before the store: its jobs' callbacks see it stopped */
    pl_store_close(&store);      /* finishes queued jobs: their callbacks run now */
    uv_close((uv_handle_t *)&store_wakeup, NULL);
    pl_chat_close_all(net, PL_WS_CLOSE_GOING_AWAY);
    drain_deadline = pl_mono_ms() + (int64_t)cfg.shutdown_grace * 1000;
    uv_timer_start(&stop_timer, drain_check, 100, 100);
}

/* SIGHUP: new connections get the certificate and key now in the files;
 * open ones keep theirs. A bad pair keeps the old one. */
static void on_sighup(uv_signal_t *s, int signum) {
    char err[512], desc[512];
    if (cfg.content_filter[0] && pl_chat_filter_load(cfg.content_filter, err, sizeof err))
        pl_log(PL_LOG_ERROR, 0, "content filter reload failed: keeping the previous rules", "\"reason\":\"%s\"",
               err);
    if (!tls) {
        pl_log(PL_LOG_INFO, 0, "sighup: no TLS to reload", "%s", "");
        return;
    }
    if (pl_tls_reload(tls, err, sizeof err)) {
        pl_log(PL_LOG_ERROR, 0, "tls reload failed: keeping the previous certificate", "\"reason\":\"%s\"", err);
        return;
    }
    pl_tls_describe(tls, desc, sizeof desc);
    pl_log(PL_LOG_INFO, 0, "tls reloaded", "\"certificate\":\"%s\"", desc);
}

static int tls_min_version(void) {
    return strcmp(cfg.tls_min, "1.2") == 0 ? 12 : strcmp(cfg.tls_min, "1.3") == 0 ? 13 : 0;
}

/* Before anything is opened: that --tls-cert and --tls-key go together
 * and load (a context built and dropped). 0, or -1 after printing why. */
static int tls_check(void) {
    int minv = tls_min_version();   /* 1.2 or 1.3: config.c refused anything else */
    if (!cfg.tls_cert[0] && !cfg.tls_key[0]) return 0;
    if (!cfg.tls_cert[0] || !cfg.tls_key[0]) {
        fprintf(stderr, "parleyd: %s and %s go together\n", pl_config_src("tls-cert"), pl_config_src("tls-key"));
        return -1;
    }
    pl_tls_opts o = {cfg.tls_cert, cfg.tls_key, minv, NULL, cfg.tls_openssl_records};
    pl_tls *t = NULL;
    char err[512];
    if (pl_tls_new(&o, &t, err, sizeof err)) {
        fprintf(stderr, "parleyd: %s, %s: %s\n", pl_config_src("tls-cert"), pl_config_src("tls-key"), err);
        return -1;
    }
    pl_tls_free(&t);
    return 0;
}

/* --tls-cert/--tls-key (checked by tls_check), with the ticket key the
 * store shares: 0 (tls set, or plaintext), or -1 after printing why. */
static int tls_setup(void) {
    if (!cfg.tls_cert[0]) return 0;
    uint8_t secret[32];
    int shared = pl_store_shared_secret(store, "tls-ticket-key", secret) == PL_STORE_OK;
    pl_tls_opts o = {cfg.tls_cert, cfg.tls_key, tls_min_version(), shared ? secret : NULL, cfg.tls_openssl_records};
    char err[512], desc[512];
    int r = pl_tls_new(&o, &tls, err, sizeof err);
    memset(secret, 0, sizeof secret);
    if (r) {
        fprintf(stderr, "parleyd: %s, %s: %s\n", pl_config_src("tls-cert"), pl_config_src("tls-key"), err);
        return -1;
    }
    pl_tls_describe(tls, desc, sizeof desc);
    pl_log(PL_LOG_INFO, 0, "tls on", "\"certificate\":\"%s\",\"min\":\"%s\",\"tickets\":\"%s\"", desc,
           cfg.tls_min, shared ? "shared" : "per process");
    pl_http_set_hsts(cfg.hsts_max_age);
    return 0;
}

/* A MESSAGE committed here: deliver it, and let the push worker look. */
static void on_committed(void *arg, pl_job *j) {
    pl_chat_committed(arg, j);
    if (j->event.kind == PL_EV_MESSAGE) pl_push_kick();
}

static void push_config(pl_push_config *pc) {
    *pc = (pl_push_config){cfg.push_webhook,   cfg.push_webhook_secret, cfg.push_fcm_url,   cfg.push_fcm_token,
                           cfg.push_apns_url,  cfg.push_apns_topic,     cfg.push_apns_token, cfg.push_previews,
                           cfg.push_apns_key,  cfg.push_apns_key_id,    cfg.push_apns_team_id,
                           cfg.push_fcm_credentials, cfg.large_group};
}

/* An http(s) URL with a host: http[s]://[userinfo@]host[:port][/...], the
 * host a name (letters, digits, '-', '.', '_') or [an IPv6 address], the
 * port 1 to 65535, and no space or control character anywhere: what curl
 * would refuse at every send is refused at start instead. */
static int push_url_ok(const char *u) {
    size_t n = strncmp(u, "http://", 7) == 0 ? 7 : strncmp(u, "https://", 8) == 0 ? 8 : 0;
    if (!n) return 0;
    for (const unsigned char *c = (const unsigned char *)u; *c; c++)
        if (*c <= ' ' || *c == 0x7f) return 0;
    const char *h = u + n, *end = h + strcspn(h, "/?#"), *p;
    for (p = h; p < end; p++)
        if (*p == '@') h = p + 1;                       /* after the userinfo */
    p = h;
    if (*p == '[') {
        while (++p < end && (isxdigit((unsigned char)*p) || *p == ':' || *p == '.')) {}
        if (p == h + 1 || p >= end || *p++ != ']') return 0;
    } else {
        while (p < end && (isalnum((unsigned char)*p) || strchr("-._", *p))) p++;
        if (p == h) return 0;
    }
    if (p < end && *p == ':') {
        long port = 0;
        const char *d = ++p;
        while (p < end && isdigit((unsigned char)*p) && p - d < 6) port = port * 10 + (*p++ - '0');
        if (p == d || port < 1 || port > 65535) return 0;
    }
    return p == end;
}

/* The push settings: endpoints are http(s) URLs with a host, and what goes
 * with an endpoint is not given without it. 0, or -1 after saying why. */
static int push_check(void) {
    const char *names[] = {"push-webhook", "push-fcm-url", "push-apns-url"};
    const char *urls[] = {cfg.push_webhook, cfg.push_fcm_url, cfg.push_apns_url};
    for (int i = 0; i < 3; i++)
        if (urls[i][0] && !push_url_ok(urls[i])) {
            fprintf(stderr, "parleyd: %s must be an http:// or https:// URL with a host (and a port from 1 to 65535)\n",
                    pl_config_src(names[i]));
            return -1;
        }
    const struct { const char *val, *name, *needs, *needs_val; } deps[] = {
        {cfg.push_webhook_secret, "push-webhook-secret", "--push-webhook", cfg.push_webhook},
        {cfg.push_fcm_token, "push-fcm-token", "--push-fcm-url", cfg.push_fcm_url},
        {cfg.push_apns_topic, "push-apns-topic", "--push-apns-url", cfg.push_apns_url},
        {cfg.push_apns_token, "push-apns-token", "--push-apns-url", cfg.push_apns_url},
        {cfg.push_apns_key, "push-apns-key", "--push-apns-url", cfg.push_apns_url},
        {cfg.push_apns_key_id, "push-apns-key-id", "--push-apns-key", cfg.push_apns_key},
        {cfg.push_apns_team_id, "push-apns-team-id", "--push-apns-key", cfg.push_apns_key},
    };
    /* both ways of authenticating to one service: which one is meant is not
     * for the server to guess (said first: "needs --push-fcm-url" named
     * the wrong setting for credentials and a token, audit U4) */
    if (cfg.push_fcm_token[0] && cfg.push_fcm_credentials[0]) {
        fprintf(stderr, "parleyd: %s and push-fcm-credentials: give one of them, not both\n",
                pl_config_src("push-fcm-token"));
        return -1;
    }
    if (cfg.push_apns_token[0] && cfg.push_apns_key[0]) {
        fprintf(stderr, "parleyd: %s and push-apns-key: give one of them, not both\n",
                pl_config_src("push-apns-token"));
        return -1;
    }
    for (size_t i = 0; i < sizeof deps / sizeof deps[0]; i++)
        if (deps[i].val[0] && !deps[i].needs_val[0]) {
            fprintf(stderr, "parleyd: %s needs %s\n", pl_config_src(deps[i].name), deps[i].needs);
            return -1;
        }
    if (cfg.push_apns_key[0] && (!cfg.push_apns_key_id[0] || !cfg.push_apns_team_id[0])) {
        fprintf(stderr, "parleyd: %s needs --push-apns-key-id and --push-apns-team-id\n",
                pl_config_src("push-apns-key"));
        return -1;
    }
    /* a service without what it authenticates with would refuse every
     * request, and refusals are dropped: no device ever told (audit U4) */
    if (cfg.push_fcm_url[0] && !cfg.push_fcm_token[0] && !cfg.push_fcm_credentials[0]) {
        fprintf(stderr, "parleyd: %s needs --push-fcm-credentials or --push-fcm-token\n",
                pl_config_src("push-fcm-url"));
        return -1;
    }
    if (cfg.push_apns_url[0] && !cfg.push_apns_topic[0]) {
        fprintf(stderr, "parleyd: %s needs --push-apns-topic (the app's bundle id)\n", pl_config_src("push-apns-url"));
        return -1;
    }
    if (cfg.push_apns_url[0] && !cfg.push_apns_token[0] && !cfg.push_apns_key[0]) {
        fprintf(stderr, "parleyd: %s needs --push-apns-key (with --push-apns-key-id and --push-apns-team-id) or "
                        "--push-apns-token\n", pl_config_src("push-apns-url"));
        return -1;
    }
    return 0;
}

static int is_postgres(const char *url) {
    return strncmp(url, "postgres://", 11) == 0 || strncmp(url, "postgresql://", 13) == 0;
}

/* What a setting's table bounds cannot say, checked before anything is
 * opened so that every bad value is exit 2 (README "Configuration"); a
 * well-formed address that cannot be bound later is exit 1, as a store that
 * cannot be reached. 0, or -1 after saying why. */
static int settings_check(void) {
    int r = pl_net_check_addr(cfg.listen);
    if (r) {
        fprintf(stderr, "parleyd: %s %s: %s\n", pl_config_src("listen"), cfg.listen,
                r == UV_EAI_NONAME ? "no such host" : "not host:port or [v6]:port (a port from 0 to 65535)");
        return -1;
    }
    if (cfg.store[0] && !is_postgres(cfg.store) && strcmp(cfg.store, "sqlite") != 0) {
        fprintf(stderr, "parleyd: %s %s: unknown store (empty for SQLite in --data-dir, or postgres://...)\n",
                pl_config_src("store"), cfg.store);
        return -1;
    }
    struct stat st;
    if (cfg.web_root[0] && stat(cfg.web_root, &st) != 0) {
        fprintf(stderr, "parleyd: %s %s: %s\n", pl_config_src("web-root"), cfg.web_root, strerror(errno));
        return -1;
    }
    if (cfg.web_root[0] && !S_ISDIR(st.st_mode)) {
        fprintf(stderr, "parleyd: %s %s: not a directory\n", pl_config_src("web-root"), cfg.web_root);
        return -1;
    }
    return 0;
}

/* A start that fails once the store is open: the store is closed (in
 * cluster mode that gives the node id's lease back at once, so a retry
 * with the same --node-id is not refused for the lease's 10 s) and so is
 * the bus. Returns rc. */
static int start_failed(int rc) {
    pl_chat_set_bus(NULL);
    if (bus) pl_bus_close(&bus);
    pl_store_close(&store);
    return rc;
}

/* Data files an older parleyd (before umask 077) left readable by other
 * users are made its user's alone: SQLite gives a new -wal and -shm the
 * database file's mode, so an upgraded data directory kept writing recent
 * messages where anyone could read them (audit V3). A directory others
 * may read is not changed (it may be the operator's doing): a warning. */
static void tighten_data_files(const char *dir) {
    static const char *const files[] = {"parley.db", "parley.db-wal", "parley.db-shm", "search.db",
                                        "search.db-wal", "search.db-shm", "token.key", "parley.lock"};
    char path[PATH_MAX];
    struct stat st;
    int n = 0;
    for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, files[i]);
        if (stat(path, &st) == 0 && S_ISREG(st.st_mode) && (st.st_mode & 077) &&
            chmod(path, st.st_mode & 0700) == 0)
            n++;
    }
    if (n)
        pl_log(PL_LOG_WARN, 0, "data files were readable by other users: now by the server's user only",
               "\"files\":%d", n);
    if (stat(dir, &st) == 0 && (st.st_mode & 077))
        pl_log(PL_LOG_WARN, 0, "the data directory is open to other users (chmod 700 it)", "\"mode\":\"%03o\"",
               (unsigned)(st.st_mode & 0777));
}

/* A start error's JSON log line, its reason escaped (a path may hold a '"'). */
static void log_reason(const char *msg, const char *reason) {
    pl_sbuf f;
    pl_sbuf_init(&f);
    pl_sbuf_adds(&f, "\"reason\":");
    pl_sbuf_add_json_str(&f, reason, strlen(reason));
    pl_log(PL_LOG_ERROR, 0, msg, "%s", pl_sbuf_cstr(&f));
    pl_sbuf_release(&f);
}

int main(int argc, char **argv) {
    umask(077);                  /* the database, index, key and media: ours alone (audit N3) */
    int r = pl_config_load(&cfg, argc, argv);
    if (r) return r > 0 ? 0 : 2;
    pl_log_level = pl_log_parse_level(cfg.log_level);    /* one of the list: config.c checked it */
    if (cfg.redis[0] && !is_postgres(cfg.store)) {
        fprintf(stderr, "parleyd: %s needs --store postgres://... (with SQLite one process owns the data)\n",
                pl_config_src("redis"));
        return 2;
    }
    if (push_check() || settings_check() || tls_check()) return 2;
    /* the settings that name files: read now, before anything is opened */
    char ferr[512];
    if (pl_chat_filter_load(cfg.content_filter, ferr, sizeof ferr)) {
        fprintf(stderr, "parleyd: %s %s: %s\n", pl_config_src("content-filter"), cfg.content_filter, ferr);
        return 2;
    }
    pl_push_config pc;
    push_config(&pc);
    const char *setting;
    if (pl_push_configure(&pc, &setting, ferr, sizeof ferr)) {   /* a file: named as every bad setting is */
        fprintf(stderr, "parleyd: %s: %s\n", setting ? pl_config_src(setting) : "push", ferr);
        return 2;
    }
    char gerr[256];
    if (pl_api_guard_init(&cfg, gerr, sizeof gerr)) {   /* its message starts with the setting's name */
        const char *which = strncmp(gerr, "trusted-proxies", 15) == 0 ? "trusted-proxies" : "allowed-origins";
        const char *from = pl_config_from(which);        /* a flag is "--name", as every other (audit K4) */
        fprintf(stderr, "parleyd: %s%s%s\n", from, from[0] ? "" : "--", gerr);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    struct stat dst;
    if (mkdir(cfg.data_dir, 0700) != 0 && (errno != EEXIST || stat(cfg.data_dir, &dst) != 0 || !S_ISDIR(dst.st_mode))) {
        char why[4400];
        snprintf(why, sizeof why, "cannot create the data directory %s: %s", cfg.data_dir,
                 errno == EEXIST ? "not a directory" : strerror(errno));
        fprintf(stderr, "parleyd: %s\n", why);
        log_reason("cannot start", why);
        return 1;
    }
    tighten_data_files(cfg.data_dir);
    char aerr[4400], dbpath[4200];
    struct stat dbst;
    snprintf(dbpath, sizeof dbpath, "%s/parley.db", cfg.data_dir);
    int had_db = !cfg.store[0] && stat(dbpath, &dbst) == 0;   /* embedded: the key lives beside it */
    int key_made = 0;
    if (pl_auth_init(cfg.data_dir, aerr, sizeof aerr, &key_made)) {
        fprintf(stderr, "parleyd: %s\n", aerr);
        log_reason("cannot start", aerr);
        return 1;
    }
    if (key_made && had_db)              /* audit N4: every client then got 401, unexplained */
        pl_log(PL_LOG_WARN, 0, "token.key was missing beside parley.db: a new key was made; access tokens "
               "issued before are refused (clients refresh)", NULL);
    loop = uv_default_loop();
    uv_async_init(loop, &store_wakeup, on_store_wakeup);

    char err[512] = "";
    pl_store_opts so = {
        .url = cfg.store,
        .data_dir = cfg.data_dir,
        .node_id = cfg.node_id,
        .readers = cfg.store_readers,
        .large_group = cfg.large_group,
        .workspace_members = cfg.workspace_max_members,
        .workspace_channels = cfg.workspace_max_channels,
        .retention = cfg.retention,
        .edit_window_ms = (int64_t)cfg.edit_window * 1000,
        .outbox = cfg.redis[0] != '\0',
        .push = cfg.push_webhook[0] || cfg.push_fcm_url[0] || cfg.push_fcm_credentials[0] || cfg.push_apns_url[0],
        .notify = store_notify,
        .committed = on_committed,
    };
    if (cfg.redis[0] && pl_bus_redis_probe(cfg.redis, err, sizeof err)) {   /* README: exit 1 */
        fprintf(stderr, "parleyd: %s: %s\n", pl_config_src("redis"), err);
        log_reason("cannot reach Redis", err);
        return 1;
    }
    if (pl_store_open(&so, &store, err, sizeof err)) {
        fprintf(stderr, "parleyd: cannot open the store: %s\n", err);
        log_reason("cannot open the store", err);
        return 1;
    }
    uint8_t shared[32];
    if (pl_store_shared_secret(store, "token-key", shared) == PL_STORE_OK) pl_auth_set_key(shared);

    pl_chat_hooks ch = {pl_api_conv_changed, pl_api_login_revoked};
    pl_chat_init(loop, store, &cfg, &ch);
    pl_bus_handlers bh;
    pl_chat_bus_handlers(&bh);
    if (cfg.redis[0]) {
        pl_bus_redis_opts ro = {
            .url = cfg.redis,
            .node = store->node_id,
            .prefix = cfg.redis_prefix,
            .user_rate = cfg.rate_user_msgs,
            .user_burst = cfg.rate_user_burst,
            .conv_rate = cfg.rate_conv_msgs,
            .conv_burst = cfg.rate_conv_burst,
            .ws_rate = cfg.rate_workspace_msgs,
            .ws_burst = cfg.rate_workspace_burst,
        };
        bus = pl_bus_redis_new(loop, &ro, &bh, err, sizeof err);
        if (!bus) {
            fprintf(stderr, "parleyd: cannot use Redis: %s\n", err);
            log_reason("cannot use Redis", err);
            pl_store_close(&store);
            return 1;
        }
    } else {
        bus = pl_bus_local_new(&bh, store->node_id);
    }
    pl_chat_set_bus(bus);
    pl_api_init(loop, store, &cfg);
    if (pl_api_media_init(loop, &cfg, err, sizeof err)) {   /* media: blob store, libmagic */
        fprintf(stderr, "parleyd: %s\n", err);
        log_reason("cannot start", err);
        return start_failed(1);
    }
    pl_api_life_init(loop, &cfg);               /* the retention purge's timer */
    pl_api_admins_check();
    pl_web_init(&cfg);
    if (pl_push_start(loop, store, err, sizeof err)) {
        fprintf(stderr, "parleyd: push: %s\n", err);
        log_reason("cannot start push", err);
        return start_failed(1);
    }
    pl_http_hooks hh = {pl_api_on_request, on_ws_open, upgrade_refused, NULL};
    pl_http_init(&hh);
    pl_wsconn_hooks wh = {pl_chat_ws_text, pl_chat_ws_timeout, pl_chat_ws_slow};
    pl_wsconn_init(&wh, (uint32_t)cfg.max_ws_message, (size_t)cfg.max_outbound);
    pl_net_handler nh = {on_data, on_close, on_timeout, on_drain};
    if (tls_setup()) return start_failed(2);
    r = pl_net_listen(loop, cfg.listen, &nh, NULL, &net);
    if (r) {
        fprintf(stderr, "parleyd: cannot listen on %s: %s\n", cfg.listen, uv_strerror(r));
        snprintf(err, sizeof err, "cannot listen on %s: %s", cfg.listen, uv_strerror(r));
        log_reason("cannot start", err);
        return start_failed(1);
    }
    pl_net_set_tls(net, tls);    /* before the loop runs: no connection yet */
    pl_net_set_max_per_ip(net, cfg.max_conns_per_ip, cfg.rate_ip_loopback);
    /* shed and pause well before the hard bound closes a slow consumer */
    pl_net_set_queue_marks(net, (size_t)cfg.max_outbound / 4, (size_t)cfg.max_outbound / 16);
    pl_api_set_gauges(sample_gauges);
    pl_api_set_ready(ready);
    uv_signal_init(loop, &sigterm);
    uv_signal_start(&sigterm, on_signal, SIGTERM);
    uv_signal_init(loop, &sigint);
    uv_signal_start(&sigint, on_signal, SIGINT);
    uv_signal_init(loop, &sighup);
    uv_signal_start(&sighup, on_sighup, SIGHUP);
    uv_timer_init(loop, &stop_timer);
    /* port 0: the kernel chose one, and this line is where a user finds it */
    char listen_at[sizeof cfg.listen + 8];
    size_t ll = strlen(cfg.listen);
    if (ll >= 2 && strcmp(cfg.listen + ll - 2, ":0") == 0)
        snprintf(listen_at, sizeof listen_at, "%.*s:%d", (int)(ll - 2), cfg.listen, pl_net_port(net));
    else
        snprintf(listen_at, sizeof listen_at, "%s", cfg.listen);
    /* at every --log-level: it is how a port 0 is found (README; audit N3) */
    pl_log_write(PL_LOG_INFO, 0, "listening",
                 "\"listen\":\"%s\",\"data_dir\":\"%s\",\"store\":\"%s\",\"bus\":\"%s\",\"node\":%d", listen_at,
                 cfg.data_dir, pl_store_name(store), bus->ops->name, store->node_id);

    uv_run(loop, UV_RUN_DEFAULT);

    pl_chat_free();              /* every connection is gone: the registry is empty */
    uv_run(loop, UV_RUN_DEFAULT);
    uv_loop_close(loop);
    pl_tls_free(&tls);
    pl_log(PL_LOG_INFO, 0, "stopped", "%s", "");
    return 0;
}
