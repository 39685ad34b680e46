/* worker.c — one worker process of parley-bench: an epoll loop holding a
 * slice of the WebSocket clients, running the workload the parent commands
 * and checking every delivery.
 *
 * Owns: client sockets (connect to --server's servers round robin, from a
 * spread of 127.0.0.x source addresses: pb_server_of, pb_addr_of in bench.h;
 * the RFC 6455 opening handshake, masked client frames, the server's frames
 * through src/ws's reader in client mode), sending at a rate or a window,
 * the per-(client, conversation) ordering check, latency histograms, the
 * storm's drop / reconnect / resume. Does not own: the plan (made by the
 * parent before fork), merging and printing (main.c, report.c).
 *
 * Client states (client_* functions perform the transitions):
 *
 *   NEW/OFFLINE --client_connect()--> CONNECTING --on_connected()--> HANDSHAKE
 *     (--tls: CONNECTING --on_connected()--> TLS --tls_step()--> HANDSHAKE)
 *     --on_upgrade() (101 read)--> AUTH --on_ready() ("ready" read)--> READY
 *   any state --client_fail()--> CLOSED        (a failure; never retried)
 *   READY --storm_drop()--> OFFLINE            (on purpose; reconnected later)
 *
 * Invariants:
 *   1. For every client and conversation, rc.last is the highest seq applied
 *      in order. An event with seq == last + 1 is in order; seq <= last is a
 *      duplicate; seq > last + 1 is reordered (a hole of seq - last - 1 events
 *      that were skipped). A correct server produces only the first kind.
 *   2. rc.last survives a storm drop: the reconnect presents it as the cursor,
 *      so the replay must continue exactly at last + 1.
 *   3. Latency is recorded for a message only if it was sent inside the
 *      measurement window [measure, end); it is recorded whenever it arrives,
 *      so slow deliveries after the window still count (no survivorship).
 *   4. W.inflight is the sum of the clients' unacknowledged sends; a client
 *      that fails moves its share to W.unacked (sends never acknowledged).
 *
 * Message bodies start with the send time in CLOCK_MONOTONIC ns (one clock
 * for every process on the machine), then the sender's index and counter,
 * padded to --body bytes.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "bench.h"
#include "tlsc.h"
#include "core/alloc.h"
#include "core/buf.h"
#include "hdr.h"
#include "jscan.h"
#include "ws/ws.h"

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

#define READ_BUF        (256 * 1024)
#define READS_PER_WAKE  8
#define HANDSHAKE_MS    30000
#define RATE_INFLIGHT_CAP 10000     /* per sender in rate mode: a stalled server
                                      stops the bench from queueing forever */
#define TL_BUCKETS      720         /* timeline: 250 ms buckets, 3 minutes   */
#define TL_NS           250000000LL
#define WS_KEY          "dGhlIHNhbXBsZSBub25jZQ=="
#define WS_ACCEPT       "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="

enum { CS_NEW = 0, CS_CONNECTING, CS_HANDSHAKE, CS_AUTH, CS_READY, CS_OFFLINE, CS_CLOSED, CS_TLS };

/* Why a client failed; names index fail_names. */
enum {
    R_CONNECT = 0,       /* socket/bind/connect failed (refused, no ports, ...)   */
    R_EOF_UPGRADE,       /* closed or reset before the 101: the server's accept
                            failed (fd ceiling) or it dropped the connection       */
    R_BAD_UPGRADE,       /* answered, but not 101                                 */
    R_EOF_AUTH,          /* closed after 101, before `ready`                       */
    R_AUTH,              /* closed with 4001                                      */
    R_CLOSE_FRAME,       /* any other close frame from the server                 */
    R_LOST,              /* EOF or reset after `ready` (not asked for)            */
    R_PROTO,             /* the server broke WebSocket framing or sent bad JSON   */
    R_TIMEOUT,           /* handshake + auth not done in HANDSHAKE_MS             */
    R_COUNT
};
static const char *const fail_names[R_COUNT] = {
    "connect", "closed_before_upgrade", "bad_upgrade", "closed_before_ready",
    "auth_rejected", "close_frame", "connection_lost", "protocol", "handshake_timeout"};

enum { P_CONNECT = 0, P_IDLE, P_RUN, P_STOPPING, P_EXPECT, P_DONE };

typedef struct rconv {
    int64_t conv;
    int64_t last;        /* highest seq applied in order (invariant 1)       */
    int64_t last_ack;    /* highest seq acknowledged to this client's sends   */
    int64_t expect;      /* final seq it must reach (from the parent), 0 none */
    uint8_t synced;      /* storm: `synced` seen since the reconnect          */
} rconv;

typedef struct bclient {
    int          fd;
    pb_ssl      *ssl;          /* --tls: the connection's TLS, else NULL     */
    int          idx;          /* index in the plan                          */
    uint8_t      state;
    uint8_t      role;
    uint8_t      resuming;     /* storm: this connection resumes             */
    uint8_t      caught_up;    /* storm: ready and synced everywhere         */
    uint8_t      in_dirty;     /* on the flush list                          */
    uint8_t      epout;        /* EPOLLOUT is registered                     */
    uint8_t      pinged;       /* idle: a ping is outstanding                */
    pl_ws_reader rd;           /* the server's frames                        */
    char        *hs;           /* the 101 response head so far (handshake)   */
    uint32_t     hs_len;
    uint8_t     *out;          /* frames not yet written                     */
    uint32_t     out_len, out_off, out_cap;
    rconv       *rc;           /* per conversation, sorted by conv           */
    uint32_t     nrc;
    uint32_t     inflight;     /* sends not yet acknowledged                 */
    uint32_t     rr;           /* feeder: next conversation to send to       */
    uint64_t     cmid;         /* client_msg_id counter                      */
    int64_t      t_conn;       /* when the current connect started (ns)      */
    struct bclient *dirty_next;
} bclient;

typedef struct acked_conv { int64_t max_seq, count; } acked_conv;

typedef struct run_params {
    int64_t t0, measure, end;  /* end = INT64_MAX for open-ended runs        */
    double  rate;              /* this worker's messages/s; 0 = max          */
    int     window;
    int64_t drop, reconnect;   /* storm; 0 = none                            */
} run_params;

static struct {
    const pb_opts *o;
    const pb_plan *p;
    int            w, cmd_fd, rep_fd, ep;
    struct sockaddr_in dst[PB_MAX_SERVERS];   /* client i -> dst[pb_server_of(i)] */
    bclient       *cl;
    int            n;
    bclient      **senders;
    int            nsenders;
    bclient       *dirty;
    /* connecting */
    bclient      **cq;         /* clients to connect, in order               */
    int            cq_len, cq_pos, conn_inflight;
    int            conc;       /* handshakes allowed in flight now           */
    int            phase;
    int64_t        phase_deadline;
    run_params     run;
    int            sending;
    int            filled;     /* max mode: windows filled at t0             */
    uint64_t       k_sent;     /* rate mode: sends issued in this run        */
    uint32_t       rr;         /* rate mode: next sender                     */
    int            dropped, reconnect_started, storm_reported;
    /* counters (cumulative over runs unless noted) */
    int64_t        connected, ready_now, reconnected, failed;
    int64_t        fail_reason[R_COUNT];
    char           first_error[160];
    int64_t        sent, acked, deliveries, inflight, unacked;
    int64_t        win_acked, win_deliveries, win_sent;     /* this run */
    int64_t        dup_acks, ack_reordered, duplicated, reordered, holes;
    int64_t        errors, sync_mismatch, unexpected, ready_missing, throttled;
    int64_t        pongs, pinged;
    int64_t        per_server[PB_MAX_SERVERS];  /* first connects, by --server */
    json_t        *nodes;      /* X-Parley-Node of each first 101 -> count   */
    int64_t        storm_total, storm_caught, storm_failed, replayed;
    json_t        *error_codes;
    pl_map         acked_map;  /* conv -> acked_conv                          */
    pb_hdr         lat, ack, conn, recon, catchup;
    /* commands */
    char          *cmdbuf;
    size_t         cmd_len, cmd_cap;
    int64_t        now;        /* time of the current wakeup                  */
    double         cpu_at_run; /* this process's CPU seconds when the run began */
    /* timeline of the current run from t0: deliveries and the worst
     * latency per 250 ms, to tell steady queueing from stalls */
    uint32_t       tl_deliv[TL_BUCKETS];
    uint32_t       tl_maxlat_us[TL_BUCKETS];
    uint32_t       tl_acks[TL_BUCKETS];       /* acks (commits) per bucket  */
    uint32_t       tl_maxack_us[TL_BUCKETS];  /* worst send-to-ack latency   */
    uint64_t       rng;
    char          *body_pad;   /* --body bytes of 'x'                         */
    uint8_t        rbuf[READ_BUF];
} W;

static void client_fail(bclient *c, int reason, const char *detail);
static void flush_client(bclient *c);

/* ---- small helpers --------------------------------------------------------- */

static uint64_t rnd(void) {
    W.rng ^= W.rng << 13;
    W.rng ^= W.rng >> 7;
    W.rng ^= W.rng << 17;
    return W.rng;
}

static void report(json_t *obj) {
    char *s = json_dumps(obj, JSON_COMPACT);
    size_t n = strlen(s);
    s = pl_realloc(s, n + 2);
    s[n] = '\n';
    size_t off = 0;
    while (off < n + 1) {
        ssize_t k = write(W.rep_fd, s + off, n + 1 - off);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) _exit(3);                      /* the parent is gone */
        off += (size_t)k;
    }
    free(s);
    json_decref(obj);
}

static void note_error(const char *code, size_t n) {
    W.errors++;
    char key[64];
    if (n >= sizeof key) n = sizeof key - 1;
    memcpy(key, code, n);
    key[n] = '\0';
    json_t *v = json_object_get(W.error_codes, key);
    json_object_set_new(W.error_codes, key, json_integer(v ? json_integer_value(v) + 1 : 1));
}

static rconv *rc_find(bclient *c, int64_t conv) {
    if (c->nrc == 1) return c->rc[0].conv == conv ? &c->rc[0] : NULL;
    uint32_t lo = 0, hi = c->nrc;
    while (lo < hi) {
        uint32_t mid = (lo + hi) / 2;
        if (c->rc[mid].conv < conv) lo = mid + 1;
        else hi = mid;
    }
    return lo < c->nrc && c->rc[lo].conv == conv ? &c->rc[lo] : NULL;
}

static int cmp_rc(const void *a, const void *b) {
    const rconv *x = a, *y = b;
    return x->conv < y->conv ? -1 : x->conv > y->conv;
}

static void mark_dirty(bclient *c) {
    if (c->in_dirty) return;
    c->in_dirty = 1;
    c->dirty_next = W.dirty;
    W.dirty = c;
}

static void out_reserve(bclient *c, size_t extra) {
    if (c->out_off && c->out_off == c->out_len) c->out_off = c->out_len = 0;
    size_t need = (size_t)c->out_len + extra;
    if (need <= c->out_cap) return;
    if (c->out_off) {                               /* compact first */
        memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
        c->out_len -= c->out_off;
        c->out_off = 0;
        need = (size_t)c->out_len + extra;
        if (need <= c->out_cap) return;
    }
    size_t cap = c->out_cap ? c->out_cap : 512;
    while (cap < need) cap *= 2;
    c->out = pl_realloc(c->out, cap);
    c->out_cap = (uint32_t)cap;
}

static void queue_raw(bclient *c, const void *p, size_t n) {
    out_reserve(c, n);
    memcpy(c->out + c->out_len, p, n);
    c->out_len += (uint32_t)n;
    mark_dirty(c);
}

/* Queues one masked client frame (RFC 6455 5.3). */
static void queue_frame(bclient *c, int opcode, const void *p, size_t n) {
    uint32_t r = (uint32_t)rnd();
    uint8_t mask[4] = {(uint8_t)r, (uint8_t)(r >> 8), (uint8_t)(r >> 16), (uint8_t)(r >> 24)};
    out_reserve(c, n + 14);
    size_t h = pl_ws_header(c->out + c->out_len, opcode, n, mask);
    uint8_t *d = c->out + c->out_len + h;
    memcpy(d, p, n);
    pl_ws_mask(d, n, mask, 0);
    c->out_len += (uint32_t)(h + n);
    mark_dirty(c);
}

static void queue_text(bclient *c, const char *s, size_t n) { queue_frame(c, PL_WS_OP_TEXT, s, n); }

static void ep_set(bclient *c, int want_out) {
    if (c->epout == want_out) return;
    struct epoll_event ev = {.events = EPOLLIN | (want_out ? EPOLLOUT : 0), .data.ptr = c};
    epoll_ctl(W.ep, EPOLL_CTL_MOD, c->fd, &ev);
    c->epout = (uint8_t)want_out;
}

/* ---- connecting ------------------------------------------------------------ */

static int in_handshake(const bclient *c) {
    return c->state == CS_CONNECTING || c->state == CS_TLS || c->state == CS_HANDSHAKE || c->state == CS_AUTH;
}

static void conn_finished(bclient *c) {
    if (W.conn_inflight > 0) W.conn_inflight--;
}

static void client_connect(bclient *c) {
    c->t_conn = W.now;
    c->state = CS_CONNECTING;
    W.conn_inflight++;
    pl_ws_reader_init(&c->rd, 1, 16u << 20);
    c->out_len = c->out_off = 0;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        c->fd = -1;
        client_fail(c, R_CONNECT, strerror(errno));
        return;
    }
    c->fd = fd;
    int one = 1;
    setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in src;
    memset(&src, 0, sizeof src);
    src.sin_family = AF_INET;
    src.sin_addr.s_addr = htonl(0x7f000002u + (uint32_t)pb_addr_of(W.p, W.o->addrs, c->idx));
    if (bind(fd, (struct sockaddr *)&src, sizeof src) != 0) {
        client_fail(c, R_CONNECT, strerror(errno));
        return;
    }
    const struct sockaddr_in *dst = &W.dst[pb_server_of(W.p, c->idx)];
    if (connect(fd, (const struct sockaddr *)dst, sizeof *dst) != 0 && errno != EINPROGRESS) {
        client_fail(c, R_CONNECT, strerror(errno));
        return;
    }
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
    epoll_ctl(W.ep, EPOLL_CTL_ADD, fd, &ev);
    c->epout = 1;
}

static void pump_connects(void) {
    static int pumping;             /* a failing connect calls back in here */
    if (pumping) return;
    pumping = 1;
    int conc = W.conc;
    while (W.conn_inflight < conc && W.cq_pos < W.cq_len) client_connect(W.cq[W.cq_pos++]);
    pumping = 0;
}

static void tls_step(bclient *c);
static void send_upgrade(bclient *c);

static void on_connected(bclient *c) {
    int err = 0;
    socklen_t len = sizeof err;
    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err) {
        client_fail(c, R_CONNECT, strerror(err));
        return;
    }
    if (pb_tls_on()) {
        c->ssl = pb_tls_new(c->fd);
        if (!c->ssl) {
            client_fail(c, R_CONNECT, "SSL_new");
            return;
        }
        c->state = CS_TLS;
        tls_step(c);
        return;
    }
    send_upgrade(c);
}

/* --tls: drives the handshake; at its end, the WebSocket upgrade. */
static void tls_step(bclient *c) {
    int want_write = 0;
    int r = pb_tls_handshake(c->ssl, &want_write);
    if (r < 0) {
        client_fail(c, R_EOF_UPGRADE, "TLS handshake failed");
        return;
    }
    if (r == 0) {
        ep_set(c, want_write);
        return;
    }
    ep_set(c, 0);
    send_upgrade(c);
}

static void send_upgrade(bclient *c) {
    const pb_client_plan *pc = &W.p->c[c->idx];
    const struct pb_server *sv = &W.p->servers[pb_server_of(W.p, c->idx)];
    char req[2048];
    int with_token = !(c->resuming && W.o->resume == RESUME_AUTH);
    int n = snprintf(req, sizeof req,
                     "GET /ws HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Key: " WS_KEY "\r\nSec-WebSocket-Version: 13\r\n%s%s%s\r\n",
                     sv->host, sv->port, with_token ? "Authorization: Bearer " : "",
                     with_token ? pc->token : "", with_token ? "\r\n" : "");
    c->state = CS_HANDSHAKE;
    queue_raw(c, req, (size_t)n);
}

/* Cursors of every conversation, as a JSON object text: {"12":40,...}. */
static void add_cursors(pl_sbuf *s, const bclient *c) {
    pl_sbuf_addc(s, '{');
    for (uint32_t i = 0; i < c->nrc; i++)
        pl_sbuf_printf(s, "%s\"%lld\":%lld", i ? "," : "", (long long)c->rc[i].conv,
                       (long long)c->rc[i].last);
    pl_sbuf_addc(s, '}');
}

static void send_resume(bclient *c, const char *type) {
    pl_sbuf s;
    pl_sbuf_init(&s);
    pl_sbuf_printf(&s, "{\"type\":\"%s\",", type);
    if (!strcmp(type, "auth")) {
        pl_sbuf_adds(&s, "\"token\":");
        const char *tok = W.p->c[c->idx].token;
        pl_sbuf_add_json_str(&s, tok, strlen(tok));
        pl_sbuf_addc(&s, ',');
    }
    pl_sbuf_adds(&s, "\"cursors\":");
    add_cursors(&s, c);
    pl_sbuf_addc(&s, '}');
    queue_text(c, s.p, s.len);
    pl_sbuf_release(&s);
}

static void on_upgrade(bclient *c) {
    c->state = CS_AUTH;
    if (c->resuming && W.o->resume == RESUME_AUTH) send_resume(c, "auth");
}

static void storm_check_done(void);

static void maybe_caught_up(bclient *c) {
    if (c->caught_up || c->state != CS_READY) return;
    for (uint32_t i = 0; i < c->nrc; i++)
        if (!c->rc[i].synced) return;
    c->caught_up = 1;
    W.storm_caught++;
    pb_hdr_record(&W.catchup, (uint64_t)(W.now - W.run.reconnect));
    storm_check_done();
}

static void on_ready(bclient *c, const char *p, size_t n) {
    json_error_t jerr;
    json_t *j = json_loadb(p, n, 0, &jerr);
    json_t *list = json_object_get(j, "conversations");
    size_t seen = 0;
    for (size_t i = 0; i < json_array_size(list); i++) {
        json_t *e = json_array_get(list, i);
        rconv *r = rc_find(c, json_integer_value(json_object_get(e, "id")));
        if (!r) continue;
        seen++;
        if (!c->resuming) r->last = json_integer_value(json_object_get(e, "last_seq"));
    }
    json_decref(j);
    if (seen != c->nrc) W.ready_missing++;
    conn_finished(c);
    c->state = CS_READY;
    W.ready_now++;
    free(c->hs);
    c->hs = NULL;
    if (c->resuming) {
        W.reconnected++;
        pb_hdr_record(&W.recon, (uint64_t)(W.now - c->t_conn));
        if (W.o->resume == RESUME_SYNC) send_resume(c, "sync");
    } else {
        W.connected++;
        W.per_server[pb_server_of(W.p, c->idx)]++;
        pb_hdr_record(&W.conn, (uint64_t)(W.now - c->t_conn));
    }
    pump_connects();
}

/* Closes the socket; the client is never used again. */
static void client_fail(bclient *c, int reason, const char *detail) {
    if (c->state == CS_CLOSED) return;
    if (in_handshake(c)) conn_finished(c);
    if (c->state == CS_READY) W.ready_now--;
    if (c->fd >= 0) close(c->fd);
    c->fd = -1;
    pb_tls_free(c->ssl);
    c->ssl = NULL;
    c->state = CS_CLOSED;
    W.failed++;
    W.fail_reason[reason]++;
    if (!W.first_error[0])
        snprintf(W.first_error, sizeof W.first_error, "client %d: %s%s%s", c->idx,
                 fail_names[reason], detail ? ": " : "", detail ? detail : "");
    W.inflight -= c->inflight;
    W.unacked += c->inflight;
    c->inflight = 0;
    if (c->role == ROLE_STORM && c->resuming && !c->caught_up) {
        W.storm_failed++;
        storm_check_done();
    }
    pl_ws_reader_release(&c->rd);
    free(c->hs);
    c->hs = NULL;
    c->out_len = c->out_off = 0;
    pump_connects();
}

/* ---- sending ---------------------------------------------------------------- */

static void send_message(bclient *c, int64_t conv) {
    char buf[512 + 16384];
    int64_t t = pb_now();
    int pre = snprintf(buf, sizeof buf,
                       "{\"type\":\"send\",\"req\":%lld,\"conversation\":%lld,\"client_msg_id\":\"%d-%llu\","
                       "\"body\":\"%lld:%d:%llu:",
                       (long long)t, (long long)conv, c->idx, (unsigned long long)c->cmid, (long long)t,
                       c->idx, (unsigned long long)c->cmid);
    int body_have = pre - (int)(strstr(buf, "\"body\":\"") - buf) - 8;
    int pad = W.o->body_size - body_have;
    if (pad < 0) pad = 0;
    memcpy(buf + pre, W.body_pad, (size_t)pad);
    pre += pad;
    buf[pre++] = '"';
    buf[pre++] = '}';
    c->cmid++;
    queue_text(c, buf, (size_t)pre);
    c->inflight++;
    W.inflight++;
    W.sent++;
    if (t >= W.run.measure && t < W.run.end) W.win_sent++;
}

static int64_t send_target(bclient *c) {
    const pb_client_plan *pc = &W.p->c[c->idx];
    if (c->role == ROLE_FEEDER) return pc->convs[c->rr++ % pc->nconvs];
    return pc->convs[0];
}

/* Rate mode: issue every send that is due by now, round robin. */
static void send_due(void) {
    double elapsed = (double)(W.now - W.run.t0) / 1e9;
    uint64_t due = (uint64_t)(elapsed * W.run.rate) + 1;
    while (W.k_sent < due) {
        bclient *c = NULL;
        for (int tries = 0; tries < W.nsenders; tries++) {
            bclient *x = W.senders[W.rr++ % (uint32_t)W.nsenders];
            if (x->state == CS_READY && x->inflight < RATE_INFLIGHT_CAP) { c = x; break; }
        }
        if (!c) {                      /* nobody can send: count and move on */
            W.throttled += (int64_t)(due - W.k_sent);
            W.k_sent = due;
            break;
        }
        send_message(c, send_target(c));
        W.k_sent++;
    }
}

static void fill_windows(void) {
    for (int i = 0; i < W.nsenders; i++) {
        bclient *c = W.senders[i];
        while (c->state == CS_READY && c->inflight < (uint32_t)W.run.window) send_message(c, send_target(c));
    }
}

/* ---- receiving -------------------------------------------------------------- */

static int64_t body_time(jstr b) {
    int64_t v = 0;
    for (size_t i = 0; i < b.n && b.p[i] >= '0' && b.p[i] <= '9'; i++) v = v * 10 + (b.p[i] - '0');
    return v;
}

static void on_event(bclient *c, const jmsg *m) {
    rconv *r = rc_find(c, m->conversation);
    if (!r) {
        W.unexpected++;
        return;
    }
    int64_t s = m->seq;
    if (s == r->last + 1) {
        r->last = s;
    } else if (s <= r->last) {
        W.duplicated++;
        return;
    } else {
        W.reordered++;
        W.holes += s - r->last - 1;
        r->last = s;
    }
    if (c->resuming && !r->synced) W.replayed++;
    if (!JSTR_IS(m->kind, "message")) return;
    W.deliveries++;
    if (W.now >= W.run.measure && W.now < W.run.end) W.win_deliveries++;
    int64_t t = body_time(m->body);
    if (t >= W.run.measure && t < W.run.end && W.now >= t) pb_hdr_record(&W.lat, (uint64_t)(W.now - t));
    if (W.now >= W.run.t0 && t > 0 && W.now >= t) {
        int64_t b = (W.now - W.run.t0) / TL_NS;
        if (b < TL_BUCKETS) {
            W.tl_deliv[b]++;
            uint32_t us = (uint32_t)((W.now - t) / 1000);
            if (us > W.tl_maxlat_us[b]) W.tl_maxlat_us[b] = us;
        }
    }
}

static void on_sent(bclient *c, const jmsg *m) {
    if (c->inflight) {
        c->inflight--;
        W.inflight--;
    }
    W.acked++;
    if (m->duplicate) W.dup_acks++;
    rconv *r = rc_find(c, m->conversation);
    if (r) {
        if (m->seq <= r->last_ack) W.ack_reordered++;
        else r->last_ack = m->seq;
    }
    acked_conv *a = pl_map_get(&W.acked_map, m->conversation);
    if (!a) {
        a = pl_calloc(1, sizeof *a);
        pl_map_put(&W.acked_map, m->conversation, a);
    }
    a->count++;
    if (m->seq > a->max_seq) a->max_seq = m->seq;
    if (W.now >= W.run.measure && W.now < W.run.end) W.win_acked++;
    if (m->req >= W.run.measure && m->req < W.run.end && W.now >= m->req)
        pb_hdr_record(&W.ack, (uint64_t)(W.now - m->req));
    if (W.now >= W.run.t0 && m->req > 0 && W.now >= m->req) {
        int64_t b = (W.now - W.run.t0) / TL_NS;
        if (b < TL_BUCKETS) {
            W.tl_acks[b]++;
            uint32_t us = (uint32_t)((W.now - m->req) / 1000);
            if (us > W.tl_maxack_us[b]) W.tl_maxack_us[b] = us;
        }
    }
    if (W.sending && W.run.rate <= 0 && W.filled) {
        while (c->state == CS_READY && c->inflight < (uint32_t)W.run.window) send_message(c, send_target(c));
    }
}

static void on_synced(bclient *c, const jmsg *m) {
    rconv *r = rc_find(c, m->conversation);
    if (!r || !c->resuming) return;
    if (r->last != m->seq) W.sync_mismatch++;
    r->synced = 1;
    maybe_caught_up(c);
}

static void on_text(bclient *c, const uint8_t *p, size_t n) {
    jmsg m;
    if (jscan_msg((const char *)p, n, &m) != 0 || !m.type.n) {
        client_fail(c, R_PROTO, "unparsable message");
        return;
    }
    if (JSTR_IS(m.type, "event")) on_event(c, &m);
    else if (JSTR_IS(m.type, "sent")) on_sent(c, &m);
    else if (JSTR_IS(m.type, "ready")) on_ready(c, (const char *)p, n);
    else if (JSTR_IS(m.type, "synced")) on_synced(c, &m);
    else if (JSTR_IS(m.type, "pong")) {
        if (c->pinged) {
            c->pinged = 0;
            W.pongs++;
        }
    } else if (JSTR_IS(m.type, "error")) {
        note_error(m.code.p ? m.code.p : "?", m.code.n);
        if (m.req >= 0 && c->inflight) {      /* a send that failed */
            c->inflight--;
            W.inflight--;
        }
    }
    /* anything else (receipts, presence, typing) is not this bench's business */
}

static int on_frame(void *ud, const pl_ws_msg *m) {
    bclient *c = ud;
    switch (m->kind) {
    case PL_WS_MESSAGE:
        if (m->opcode != PL_WS_OP_TEXT) {
            client_fail(c, R_PROTO, "binary frame");
            return 1;
        }
        on_text(c, m->data, m->len);
        break;
    case PL_WS_PING:
        queue_frame(c, PL_WS_OP_PONG, m->data, m->len);
        break;
    case PL_WS_PONG:
        break;
    case PL_WS_CLOSE: {
        char d[32];
        snprintf(d, sizeof d, "close code %d", m->close_code);
        client_fail(c, m->close_code == 4001 ? R_AUTH : c->state == CS_READY ? R_CLOSE_FRAME : R_EOF_AUTH, d);
        return 1;
    }
    }
    return c->state == CS_CLOSED || c->state == CS_OFFLINE;
}

static void feed_ws(bclient *c, uint8_t *p, size_t n) {
    int r = pl_ws_reader_feed(&c->rd, p, n, on_frame, c);
    if (r >= 1000 && c->state != CS_CLOSED) {
        char d[32];
        snprintf(d, sizeof d, "ws reader %d", r);
        client_fail(c, R_PROTO, d);
    }
}

/* Behind HAProxy (deploy/haproxy.cfg) the 101 names the node that took the
 * connection: X-Parley-Node: nodeI. Counted, to show the balancer's spread. */
static void note_node(const char *head, size_t n) {
    static const char key[] = "\r\nx-parley-node:";
    size_t k = sizeof key - 1;
    for (size_t i = 0; i + k <= n; i++) {
        if (strncasecmp(head + i, key, k)) continue;
        const char *v = head + i + k;
        while (*v == ' ') v++;
        size_t len = strcspn(v, "\r\n");
        char name[64];
        if (len >= sizeof name) len = sizeof name - 1;
        memcpy(name, v, len);
        name[len] = '\0';
        json_t *cur = json_object_get(W.nodes, name);
        json_object_set_new(W.nodes, name, json_integer(cur ? json_integer_value(cur) + 1 : 1));
        return;
    }
}

static void feed_handshake(bclient *c, uint8_t *p, size_t n) {
    c->hs = pl_realloc(c->hs, c->hs_len + n + 1);
    memcpy(c->hs + c->hs_len, p, n);
    c->hs_len += (uint32_t)n;
    c->hs[c->hs_len] = '\0';
    char *end = strstr(c->hs, "\r\n\r\n");
    if (!end) {
        if (c->hs_len > 16384) client_fail(c, R_BAD_UPGRADE, "head too long");
        return;
    }
    size_t head = (size_t)(end + 4 - c->hs);
    if (strncmp(c->hs, "HTTP/1.1 101", 12) != 0 || !strstr(c->hs, WS_ACCEPT)) {
        char d[64];
        snprintf(d, sizeof d, "%.40s", c->hs);
        char *nl = strchr(d, '\r');
        if (nl) *nl = '\0';
        client_fail(c, R_BAD_UPGRADE, d);
        return;
    }
    if (!c->resuming) note_node(c->hs, head);
    on_upgrade(c);
    size_t rest = c->hs_len - head;
    if (rest) {
        uint8_t tmp[4096];
        uint8_t *q = rest <= sizeof tmp ? tmp : pl_malloc(rest);
        memcpy(q, c->hs + head, rest);
        free(c->hs);
        c->hs = NULL;
        feed_ws(c, q, rest);
        if (q != tmp) free(q);
    } else {
        free(c->hs);
        c->hs = NULL;
    }
    c->hs_len = 0;
}

static void on_eof(bclient *c, const char *detail) {
    int reason = c->state == CS_HANDSHAKE || c->state == CS_CONNECTING || c->state == CS_TLS ? R_EOF_UPGRADE
               : c->state == CS_AUTH ? R_EOF_AUTH : R_LOST;
    client_fail(c, reason, detail);
}

static void on_readable(bclient *c) {
    for (int i = 0; i < READS_PER_WAKE; i++) {
        ssize_t k = c->ssl ? pb_tls_recv(c->ssl, W.rbuf, sizeof W.rbuf) : recv(c->fd, W.rbuf, sizeof W.rbuf, 0);
        if (k > 0) {
            W.now = pb_now();
            if (c->state == CS_HANDSHAKE) feed_handshake(c, W.rbuf, (size_t)k);
            else feed_ws(c, W.rbuf, (size_t)k);
            if (c->state == CS_CLOSED || c->state == CS_OFFLINE) return;
            if (!c->ssl && (size_t)k < sizeof W.rbuf) return;   /* TLS: one record per read */
            continue;
        }
        if (k == 0) {
            on_eof(c, "EOF");
            return;
        }
        if (errno == EINTR) continue;
        if (errno != EAGAIN) on_eof(c, strerror(errno));
        return;
    }
}

static void flush_client(bclient *c) {
    while (c->out_off < c->out_len) {
        ssize_t k = c->ssl ? pb_tls_send(c->ssl, c->out + c->out_off, c->out_len - c->out_off)
                           : send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
        if (k > 0) {
            c->out_off += (uint32_t)k;
            continue;
        }
        if (k < 0 && errno == EINTR) continue;
        if (k < 0 && errno == EAGAIN) {
            ep_set(c, 1);
            return;
        }
        on_eof(c, k < 0 ? strerror(errno) : "short write");
        return;
    }
    c->out_off = c->out_len = 0;
    if (c->out_cap > 65536) {           /* a burst is over: give it back */
        free(c->out);
        c->out = NULL;
        c->out_cap = 0;
    }
    if (c->state != CS_CONNECTING) ep_set(c, 0);
}

static void flush_dirty(void) {
    while (W.dirty) {
        bclient *c = W.dirty;
        W.dirty = c->dirty_next;
        c->in_dirty = 0;
        if (c->state != CS_CLOSED && c->state != CS_OFFLINE && c->state != CS_CONNECTING && c->state != CS_TLS)
            flush_client(c);
    }
}

static void on_client_event(bclient *c, uint32_t ev) {
    if (c->state == CS_CLOSED || c->state == CS_OFFLINE) return;
    if (c->state == CS_CONNECTING) {
        if (ev & (EPOLLOUT | EPOLLERR | EPOLLHUP)) on_connected(c);
        if (c->state == CS_HANDSHAKE) flush_client(c);
        return;
    }
    if (c->state == CS_TLS) {
        tls_step(c);
        if (c->state == CS_HANDSHAKE) flush_client(c);
        return;
    }
    if (ev & (EPOLLIN | EPOLLERR | EPOLLHUP)) on_readable(c);
    if ((ev & EPOLLOUT) && c->state != CS_CLOSED && c->state != CS_OFFLINE) flush_client(c);
}

/* ---- storm ------------------------------------------------------------------ */

static void storm_drop(void) {
    for (int i = 0; i < W.n; i++) {
        bclient *c = &W.cl[i];
        if (c->role != ROLE_STORM || c->state != CS_READY) continue;
        close(c->fd);                 /* abrupt: no close handshake, like a lost network */
        c->fd = -1;
        pb_tls_free(c->ssl);
        c->ssl = NULL;
        c->state = CS_OFFLINE;
        W.ready_now--;
        pl_ws_reader_release(&c->rd);
        c->out_len = c->out_off = 0;
        W.storm_total++;
    }
    W.dropped = 1;
}

static void storm_reconnect(void) {
    W.cq_len = W.cq_pos = 0;
    for (int i = 0; i < W.n; i++) {
        bclient *c = &W.cl[i];
        if (c->role != ROLE_STORM || c->state != CS_OFFLINE) continue;
        c->resuming = 1;
        for (uint32_t k = 0; k < c->nrc; k++) c->rc[k].synced = 0;
        W.cq[W.cq_len++] = c;
    }
    W.reconnect_started = 1;
    W.conc = W.o->reconnect_conc > 0 ? W.o->reconnect_conc : W.cq_len + 1;   /* 0: all at once */
    pump_connects();
    storm_check_done();
}

static void storm_check_done(void) {
    if (W.storm_reported || !W.reconnect_started) return;
    if (W.storm_caught + W.storm_failed < W.storm_total) return;
    W.storm_reported = 1;
    json_t *o = json_pack("{s:s,s:I,s:I,s:I}", "ev", "storm_done", "total", (json_int_t)W.storm_total,
                          "caught_up", (json_int_t)W.storm_caught, "failed", (json_int_t)W.storm_failed);
    report(o);
}

/* ---- commands from the parent ---------------------------------------------- */

static void report_connected(void) {
    json_t *reasons = json_object();
    for (int r = 0; r < R_COUNT; r++)
        if (W.fail_reason[r]) json_object_set_new(reasons, fail_names[r], json_integer(W.fail_reason[r]));
    pl_sbuf h;
    pl_sbuf_init(&h);
    pb_hdr_dump(&W.conn, &h);
    json_t *per = json_array();
    for (int k = 0; k < W.p->nservers; k++) json_array_append_new(per, json_integer(W.per_server[k]));
    json_t *o = json_pack("{s:s,s:i,s:I,s:I,s:o,s:s,s:s%,s:o,s:O}", "ev", "connected", "w", W.w,
                          "connected", (json_int_t)W.connected, "failed", (json_int_t)W.failed,
                          "fail_reasons", reasons, "first_error", W.first_error, "conn", h.p ? h.p : "", h.len,
                          "per_server", per, "nodes", W.nodes);
    pl_sbuf_release(&h);
    report(o);
}

static double cpu_seconds(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
}

static void cmd_run(json_t *j) {
    W.cpu_at_run = cpu_seconds();
    W.run.t0 = json_integer_value(json_object_get(j, "t0"));
    W.run.measure = json_integer_value(json_object_get(j, "measure"));
    W.run.end = json_integer_value(json_object_get(j, "end"));
    if (W.run.end <= 0) W.run.end = INT64_MAX;
    W.run.rate = json_number_value(json_object_get(j, "rate"));
    W.run.window = (int)json_integer_value(json_object_get(j, "window"));
    if (W.run.window < 1) W.run.window = 1;
    W.run.drop = json_integer_value(json_object_get(j, "drop"));
    W.run.reconnect = json_integer_value(json_object_get(j, "reconnect"));
    W.win_acked = W.win_deliveries = W.win_sent = 0;
    W.k_sent = 0;
    W.filled = 0;
    W.sending = W.nsenders > 0;
    pb_hdr_reset(&W.lat);
    pb_hdr_reset(&W.ack);
    memset(W.tl_deliv, 0, sizeof W.tl_deliv);
    memset(W.tl_maxlat_us, 0, sizeof W.tl_maxlat_us);
    memset(W.tl_acks, 0, sizeof W.tl_acks);
    memset(W.tl_maxack_us, 0, sizeof W.tl_maxack_us);
    W.phase = P_RUN;
}

static void cmd_stop(void) {
    W.sending = 0;
    W.phase = P_STOPPING;
    W.phase_deadline = W.now + (int64_t)(W.o->timeout * 1e9);
    if (W.o->wl == WL_IDLE) {
        for (int i = 0; i < W.n; i++) {
            bclient *c = &W.cl[i];
            if (c->state != CS_READY) continue;
            static const char ping[] = "{\"type\":\"ping\",\"req\":\"idle\"}";
            queue_text(c, ping, sizeof ping - 1);
            c->pinged = 1;
            W.pinged++;
        }
    }
}

static void check_stopped(void) {
    int done = W.o->wl == WL_IDLE ? W.pongs >= W.pinged : W.inflight <= 0;
    if (!done && W.now < W.phase_deadline) return;
    json_t *o = json_pack("{s:s,s:f,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I}", "ev", "stopped", "cpu_s",
                          cpu_seconds() - W.cpu_at_run, "sent", (json_int_t)W.sent,
                          "win_sent", (json_int_t)W.win_sent, "win_acked", (json_int_t)W.win_acked,
                          "win_deliveries", (json_int_t)W.win_deliveries, "inflight_left", (json_int_t)W.inflight,
                          "pinged", (json_int_t)W.pinged, "pongs", (json_int_t)W.pongs,
                          "ready_now", (json_int_t)W.ready_now);
    int last = TL_BUCKETS;
    while (last > 0 && !W.tl_deliv[last - 1] && !W.tl_acks[last - 1]) last--;
    json_t *td = json_array(), *tm = json_array(), *ta = json_array(), *tx = json_array();
    for (int i = 0; i < last; i++) {
        json_array_append_new(td, json_integer(W.tl_deliv[i]));
        json_array_append_new(tm, json_integer(W.tl_maxlat_us[i]));
        json_array_append_new(ta, json_integer(W.tl_acks[i]));
        json_array_append_new(tx, json_integer(W.tl_maxack_us[i]));
    }
    json_object_set_new(o, "tl_deliv", td);
    json_object_set_new(o, "tl_maxlat_us", tm);
    json_object_set_new(o, "tl_acks", ta);
    json_object_set_new(o, "tl_maxack_us", tx);
    report(o);
    W.phase = P_IDLE;
}

static void cmd_finish(void) {
    json_t *list = json_array();
    for (size_t i = 0; i < W.acked_map.cap; i++) {
        if (!W.acked_map.slots[i].key) continue;
        acked_conv *a = W.acked_map.slots[i].val;
        json_array_append_new(list, json_pack("[I,I,I]", (json_int_t)W.acked_map.slots[i].key,
                                              (json_int_t)a->max_seq, (json_int_t)a->count));
    }
    report(json_pack("{s:s,s:o}", "ev", "acked", "convs", list));
}

static void cmd_expect(json_t *j) {
    pl_map m;
    pl_map_init(&m);
    json_t *list = json_object_get(j, "convs");
    for (size_t i = 0; i < json_array_size(list); i++) {
        json_t *e = json_array_get(list, i);
        int64_t conv = json_integer_value(json_array_get(e, 0));
        intptr_t seq = (intptr_t)json_integer_value(json_array_get(e, 1));
        if (conv && seq > 0) pl_map_put(&m, conv, (void *)seq);
    }
    for (int i = 0; i < W.n; i++)
        for (uint32_t k = 0; k < W.cl[i].nrc; k++)
            W.cl[i].rc[k].expect = (int64_t)(intptr_t)pl_map_get(&m, W.cl[i].rc[k].conv);
    pl_map_release(&m);
    W.phase = P_EXPECT;
    W.phase_deadline = W.now + (int64_t)(W.o->timeout * 1e9);
}

static int all_delivered(void) {
    for (int i = 0; i < W.n; i++) {
        bclient *c = &W.cl[i];
        if (c->state != CS_READY) continue;
        for (uint32_t k = 0; k < c->nrc; k++)
            if (c->rc[k].last < c->rc[k].expect) return 0;
    }
    return 1;
}

static void add_hdr(json_t *o, const char *key, const pb_hdr *h) {
    pl_sbuf s;
    pl_sbuf_init(&s);
    pb_hdr_dump(h, &s);
    json_object_set_new(o, key, json_stringn(s.p, s.len));
    pl_sbuf_release(&s);
}

static void report_result(void) {
    int64_t lost = 0, behind = 0;
    for (int i = 0; i < W.n; i++) {
        bclient *c = &W.cl[i];
        if (c->state != CS_READY) continue;
        for (uint32_t k = 0; k < c->nrc; k++)
            if (c->rc[k].last < c->rc[k].expect) {
                lost += c->rc[k].expect - c->rc[k].last;
                behind++;
            }
    }
    json_t *reasons = json_object();
    for (int r = 0; r < R_COUNT; r++)
        if (W.fail_reason[r]) json_object_set_new(reasons, fail_names[r], json_integer(W.fail_reason[r]));
    json_t *o = json_object();
    json_object_set_new(o, "ev", json_string("result"));
    json_object_set_new(o, "w", json_integer(W.w));
#define SETI(k, v) json_object_set_new(o, k, json_integer((json_int_t)(v)))
    SETI("connected", W.connected);
    SETI("reconnected", W.reconnected);
    SETI("failed", W.failed);
    SETI("ready_now", W.ready_now);
    SETI("sent", W.sent);
    SETI("acked", W.acked);
    SETI("unacked", W.unacked + W.inflight);
    SETI("deliveries", W.deliveries);
    SETI("dup_acks", W.dup_acks);
    SETI("ack_reordered", W.ack_reordered);
    SETI("duplicated", W.duplicated);
    SETI("reordered", W.reordered);
    SETI("holes", W.holes);
    SETI("lost", lost + W.holes);
    SETI("behind", behind);
    SETI("errors", W.errors);
    SETI("sync_mismatch", W.sync_mismatch);
    SETI("unexpected", W.unexpected);
    SETI("ready_missing", W.ready_missing);
    SETI("throttled", W.throttled);
    SETI("pinged", W.pinged);
    SETI("pongs", W.pongs);
    SETI("storm_total", W.storm_total);
    SETI("storm_caught", W.storm_caught);
    SETI("storm_failed", W.storm_failed);
    SETI("replayed", W.replayed);
#undef SETI
    json_object_set_new(o, "fail_reasons", reasons);
    json_object_set_new(o, "first_error", json_string(W.first_error));
    json_object_set(o, "error_codes", W.error_codes);
    add_hdr(o, "lat", &W.lat);
    add_hdr(o, "ack", &W.ack);
    add_hdr(o, "conn", &W.conn);
    add_hdr(o, "recon", &W.recon);
    add_hdr(o, "catchup", &W.catchup);
    report(o);
    W.phase = P_DONE;
}

static void on_command(json_t *j) {
    const char *cmd = json_string_value(json_object_get(j, "cmd"));
    if (!cmd) return;
    if (!strcmp(cmd, "run")) cmd_run(j);
    else if (!strcmp(cmd, "stop")) cmd_stop();
    else if (!strcmp(cmd, "finish")) cmd_finish();
    else if (!strcmp(cmd, "expect")) cmd_expect(j);
    else if (!strcmp(cmd, "quit")) _exit(0);
}

static void on_cmd_readable(void) {
    if (W.cmd_cap - W.cmd_len < 65536) {
        W.cmd_cap = W.cmd_cap ? W.cmd_cap * 2 : 131072;
        W.cmdbuf = pl_realloc(W.cmdbuf, W.cmd_cap);
    }
    ssize_t k = read(W.cmd_fd, W.cmdbuf + W.cmd_len, W.cmd_cap - W.cmd_len);
    if (k == 0) _exit(0);                       /* the parent went away */
    if (k < 0) return;
    W.cmd_len += (size_t)k;
    char *nl;
    while ((nl = memchr(W.cmdbuf, '\n', W.cmd_len))) {
        size_t line = (size_t)(nl - W.cmdbuf);
        json_t *j = json_loadb(W.cmdbuf, line, 0, NULL);
        memmove(W.cmdbuf, nl + 1, W.cmd_len - line - 1);
        W.cmd_len -= line + 1;
        if (j) {
            on_command(j);
            json_decref(j);
        }
    }
}

/* ---- the loop --------------------------------------------------------------- */

static void sweep_handshakes(void) {
    int64_t limit = W.now - (int64_t)HANDSHAKE_MS * 1000000;
    for (int i = 0; i < W.n; i++) {
        bclient *c = &W.cl[i];
        if (in_handshake(c) && c->t_conn < limit) client_fail(c, R_TIMEOUT, NULL);
    }
}

static void tick(void) {
    static int64_t last_sweep;
    if (W.now - last_sweep > 100000000) {
        last_sweep = W.now;
        sweep_handshakes();
    }
    switch (W.phase) {
    case P_CONNECT:
        pump_connects();
        if (W.cq_pos == W.cq_len && W.conn_inflight == 0) {
            report_connected();
            W.phase = P_IDLE;
        }
        break;
    case P_RUN:
        if (W.run.drop && !W.dropped && W.now >= W.run.drop) storm_drop();
        if (W.run.reconnect && W.dropped && !W.reconnect_started && W.now >= W.run.reconnect) storm_reconnect();
        if (W.reconnect_started && !W.storm_reported &&
            W.now > W.run.reconnect + (int64_t)(W.o->timeout * 1e9)) {
            W.storm_failed = W.storm_total - W.storm_caught;      /* stragglers */
            storm_check_done();
        }
        if (W.sending && W.now >= W.run.t0) {
            if (W.run.rate > 0) send_due();
            else if (!W.filled) {
                W.filled = 1;
                fill_windows();
            }
        }
        break;
    case P_STOPPING:
        check_stopped();
        break;
    case P_EXPECT:
        if (all_delivered() || W.now >= W.phase_deadline) report_result();
        break;
    default:
        break;
    }
}

static void init_clients(void) {
    const pb_plan *p = W.p;
    int lo = p->lo[W.w], hi = p->hi[W.w];
    W.n = hi - lo;
    W.cl = pl_calloc((size_t)W.n, sizeof *W.cl);
    W.cq = pl_calloc((size_t)W.n, sizeof *W.cq);
    W.senders = pl_calloc((size_t)W.n, sizeof *W.senders);
    for (int i = 0; i < W.n; i++) {
        bclient *c = &W.cl[i];
        const pb_client_plan *pc = &p->c[lo + i];
        c->fd = -1;
        c->idx = lo + i;
        c->role = pc->role;
        c->nrc = pc->nconvs;
        c->rc = pl_calloc(pc->nconvs ? pc->nconvs : 1, sizeof *c->rc);
        for (uint32_t k = 0; k < pc->nconvs; k++) c->rc[k].conv = pc->convs[k];
        qsort(c->rc, c->nrc, sizeof *c->rc, cmp_rc);
        if (c->role == ROLE_SEND || c->role == ROLE_FEEDER) W.senders[W.nsenders++] = c;
        W.cq[W.cq_len++] = c;
    }
}

void pb_worker_main(const pb_opts *o, const pb_plan *p, int w, int cmd_fd, int rep_fd) {
    memset(&W, 0, sizeof W);
    W.o = o;
    W.p = p;
    W.w = w;
    W.cmd_fd = cmd_fd;
    W.rep_fd = rep_fd;
    W.rng = 0x9e3779b97f4a7c15ULL ^ ((uint64_t)getpid() << 17) ^ (uint64_t)pb_now();
    W.error_codes = json_object();
    W.run.end = INT64_MAX;
    pl_map_init(&W.acked_map);
    W.body_pad = pl_malloc((size_t)o->body_size + 1);
    memset(W.body_pad, 'x', (size_t)o->body_size);
    signal(SIGPIPE, SIG_IGN);
    for (int k = 0; k < p->nservers; k++) {
        W.dst[k].sin_family = AF_INET;
        W.dst[k].sin_port = htons((uint16_t)p->servers[k].port);
        inet_pton(AF_INET, p->servers[k].host, &W.dst[k].sin_addr);
    }
    W.nodes = json_object();
    W.ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event cev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(W.ep, EPOLL_CTL_ADD, cmd_fd, &cev);
    init_clients();
    W.conc = o->connect_conc;
    W.now = pb_now();
    W.phase = P_CONNECT;

    struct epoll_event evs[512];
    for (;;) {
        struct timespec to = {0, 10000000};                      /* 10 ms */
        if (W.phase == P_RUN && W.sending && W.run.rate > 0) {
            /* wake when the next send is due, at most every 10 ms, at
             * least 200 us apart: at high rates sends leave in small
             * bursts, which keeps the bench's wakeups (and its share of
             * the CPUs it shares with the server) down. Latency is timed
             * from the actual send, so pacing adds no error. */
            double next = (double)W.run.t0 + (double)W.k_sent * 1e9 / W.run.rate;
            int64_t wait = (int64_t)next - pb_now();
            if (wait < 200000) wait = 200000;
            if (wait < 10000000) to.tv_nsec = wait;
        }
        int nev = epoll_pwait2(W.ep, evs, 512, &to, NULL);
        W.now = pb_now();
        for (int i = 0; i < nev; i++) {
            if (!evs[i].data.ptr) on_cmd_readable();
            else on_client_event(evs[i].data.ptr, evs[i].events);
        }
        W.now = pb_now();
        tick();
        flush_dirty();
    }
}
