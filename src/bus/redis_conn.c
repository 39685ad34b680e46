/* redis_conn.c — a hiredis connection that keeps itself connected (see
 * redis_conn.h for the state diagram and invariants). */
#include "redis_conn.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#include "../core/alloc.h"
#include "../core/clock.h"
#include "../core/log.h"
#include "../core/metrics.h"

#define RC_LOG_EVERY_MS 30000     /* "still unreachable" at most this often */
#define RC_READS_PER_WAKEUP 32    /* 16 KiB reads (hiredis' buffer) per wakeup */

/* ---- event adapter --------------------------------------------------------
 * hiredis' own libuv adapter (adapters/libuv.h) does one 16 KiB read per
 * wakeup, which caps what a busy loop drains from the sub connection (one
 * read per loop iteration): measured, a node publishing in bursts fell
 * behind its own subscription until Redis cut it at the 32 MiB pubsub
 * output limit. This one drains up to RC_READS_PER_WAKEUP reads while the
 * socket has data (libuv's own cap for streams), and on a poll error lets
 * hiredis read the error instead of ignoring it. Same hooks otherwise. */

typedef struct rc_ev {
    redisAsyncContext *ac;        /* NULL once hiredis cleaned up          */
    uv_poll_t          poll;
    int                events;    /* UV_READABLE | UV_WRITABLE wanted       */
} rc_ev;

static void ev_poll_cb(uv_poll_t *h, int status, int events) {
    rc_ev *p = h->data;
    if (status < 0) events = UV_READABLE;          /* hiredis reads the error and disconnects */
    for (int i = 0; i < RC_READS_PER_WAKEUP && p->ac && (events & UV_READABLE); i++) {
        redisAsyncHandleRead(p->ac);
        int avail = 0;
        if (!p->ac || ioctl(p->ac->c.fd, FIONREAD, &avail) || avail <= 0) break;
    }
    if (p->ac && (events & UV_WRITABLE)) redisAsyncHandleWrite(p->ac);
}

static void ev_update(rc_ev *p, int add, int del) {
    p->events = (p->events | add) & ~del;
    if (p->events) uv_poll_start(&p->poll, p->events, ev_poll_cb);
    else uv_poll_stop(&p->poll);
}

static void ev_add_read(void *d) { ev_update(d, UV_READABLE, 0); }
static void ev_del_read(void *d) { ev_update(d, 0, UV_READABLE); }
static void ev_add_write(void *d) { ev_update(d, UV_WRITABLE, 0); }
static void ev_del_write(void *d) { ev_update(d, 0, UV_WRITABLE); }
static void ev_closed(uv_handle_t *h) { free(h->data); }

static void ev_cleanup(void *d) {
    rc_ev *p = d;
    if (uv_is_closing((uv_handle_t *)&p->poll)) return;
    p->ac = NULL;
    uv_close((uv_handle_t *)&p->poll, ev_closed);
}

static int ev_attach(redisAsyncContext *ac, uv_loop_t *loop) {
    if (ac->ev.data) return REDIS_ERR;
    rc_ev *p = pl_calloc(1, sizeof *p);
    if (uv_poll_init(loop, &p->poll, ac->c.fd) != 0) {
        free(p);
        return REDIS_ERR;
    }
    p->ac = ac;
    p->poll.data = p;
    ac->ev.addRead = ev_add_read;
    ac->ev.delRead = ev_del_read;
    ac->ev.addWrite = ev_add_write;
    ac->ev.delWrite = ev_del_write;
    ac->ev.cleanup = ev_cleanup;
    ac->ev.data = p;
    return REDIS_OK;
}

/* ---- URL ----------------------------------------------------------------- */

static int copy_part(char *dst, size_t cap, const char *s, size_t n) {
    if (n >= cap) return -1;
    memcpy(dst, s, n);
    dst[n] = '\0';
    return 0;
}

static int parse_uint(const char *s, size_t n, long max, int *out) {
    if (n == 0 || n > 10) return -1;
    long v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return -1;
        v = v * 10 + (s[i] - '0');
    }
    if (v > max) return -1;
    *out = (int)v;
    return 0;
}

int pl_redis__parse_url(const char *url, pl_redis_addr *a, char *err, size_t errlen) {
    memset(a, 0, sizeof *a);
    a->port = 6379;
    if (!url || !*url) goto bad;
    const char *s = url;
    if (strncmp(s, "redis://", 8) == 0) s += 8;
    else if (strstr(s, "://")) goto bad;
    const char *at = strrchr(s, '@');
    if (at) {
        const char *colon = memchr(s, ':', (size_t)(at - s));
        if (colon) {
            if (copy_part(a->user, sizeof a->user, s, (size_t)(colon - s)) ||
                copy_part(a->pass, sizeof a->pass, colon + 1, (size_t)(at - colon - 1)))
                goto bad;
        } else if (copy_part(a->pass, sizeof a->pass, s, (size_t)(at - s))) {
            goto bad;                   /* "password@host", as redis-cli reads it */
        }
        s = at + 1;
    }
    const char *h = s, *hend;
    if (*s == '[') {
        h = s + 1;
        hend = strchr(h, ']');
        if (!hend) goto bad;
        s = hend + 1;
    } else {
        hend = s + strcspn(s, ":/");
        s = hend;
    }
    if (hend == h || copy_part(a->host, sizeof a->host, h, (size_t)(hend - h))) goto bad;
    if (*s == ':') {
        s++;
        size_t n = strcspn(s, "/");
        if (parse_uint(s, n, 65535, &a->port) || a->port == 0) goto bad;
        s += n;
    }
    if (*s == '/') {
        s++;
        size_t n = strlen(s);
        if (n && parse_uint(s, n, 1000000, &a->db)) goto bad;
        s += n;
    }
    if (*s) goto bad;
    return 0;
bad:
    snprintf(err, errlen, "bad Redis URL (want redis://[[user]:password@]host[:port][/db] or host:port)");
    return -1;
}

/* ---- connection ---------------------------------------------------------- */

/* hiredis error strings, made safe for a JSON log field */
static const char *clean(char *dst, size_t cap, const char *src) {
    size_t j = 0;
    for (size_t i = 0; src && src[i] && j + 1 < cap; i++) {
        unsigned char ch = (unsigned char)src[i];
        dst[j++] = (ch < 0x20 || ch == '"' || ch == '\\' || ch >= 0x7f) ? '?' : (char)ch;
    }
    dst[j] = '\0';
    return dst;
}

static void attempt(pl_rconn *c);

/* invariant 3 */
static void release_ac(pl_rconn *c, redisAsyncContext *ac) {
    if (c->in_connect) c->zombie = ac;
    else redisAsyncFree(ac);
}

static void free_zombie(pl_rconn *c) {
    redisAsyncContext *z = c->zombie;
    c->zombie = NULL;
    if (z) redisAsyncFree(z);
}

static void retry_cb(uv_timer_t *t) {
    pl_rconn *c = t->data;
    free_zombie(c);
    if (c->state == RC_DOWN) attempt(c);
}

/* invariant 2: every way down. Logs once per outage, then at most every
 * RC_LOG_EVERY_MS while it lasts (also for a server that accepts and then
 * drops or refuses AUTH: c->flaps). */
static void gone(pl_rconn *c, const char *why) {
    if (c->state == RC_CLOSED) return;
    int was_up = c->state == RC_UP;
    int64_t now = pl_mono_ms();
    char e[160], h[160];
    c->state = RC_DOWN;
    clean(e, sizeof e, why);
    if (was_up && now - c->up_since >= RC_STABLE_MS) {
        pl_log(PL_LOG_WARN, 0, "redis connection lost", "\"link\":\"%s\",\"error\":\"%s\"", c->name, e);
        c->backoff_ms = RC_BACKOFF_MIN_MS;
        c->flaps = 0;
        c->log.at = now;                          /* said: the next waits */
    } else if (was_up) {
        if (++c->flaps == 1) c->log = (pl_log_limit){0};   /* the first of a series: log now */
        if (pl_log_due(&c->log, RC_LOG_EVERY_MS, now, NULL))
            pl_log(PL_LOG_WARN, 0, "redis connection dropped right after connecting",
                   "\"link\":\"%s\",\"times\":%lld,\"error\":\"%s\"", c->name, (long long)c->flaps, e);
    } else {
        if (++c->fails == 1) c->log = (pl_log_limit){0};
        if (pl_log_due(&c->log, RC_LOG_EVERY_MS, now, NULL))
            pl_log(PL_LOG_WARN, 0, "redis unreachable, retrying",
                   "\"link\":\"%s\",\"host\":\"%s\",\"port\":%d,\"attempts\":%lld,\"error\":\"%s\"",
                   c->name, clean(h, sizeof h, c->addr->host), c->addr->port, (long long)c->fails, e);
    }
    int delay = c->backoff_ms;
    c->backoff_ms = c->backoff_ms * 2 > RC_BACKOFF_MAX_MS ? RC_BACKOFF_MAX_MS : c->backoff_ms * 2;
    uv_timer_start(&c->timer, retry_cb, (uint64_t)delay, 0);
    if (was_up && c->down) c->down(c->ud);
}

static void setup_cb(redisAsyncContext *ac, void *r, void *priv) {
    pl_rconn *c = priv;
    redisReply *reply = r;
    if (ac != c->ac || !reply || reply->type != REDIS_REPLY_ERROR) return;
    char e[160];
    if (!c->flaps || pl_log_due(&c->log, RC_LOG_EVERY_MS, pl_mono_ms(), NULL))
        pl_log(PL_LOG_ERROR, 0, "redis refused AUTH or SELECT", "\"link\":\"%s\",\"error\":\"%s\"", c->name,
               clean(e, sizeof e, reply->str));
    pl_rconn_drop(c, "AUTH or SELECT refused");
}

static void connect_ip(pl_rconn *c);

/* A connection attempt failed before UP: the host's next address, or the
 * backoff once every address failed. */
static void attempt_failed(pl_rconn *c, const char *why) {
    if (c->state != RC_CLOSED && c->ip_next + 1 < c->nips) {
        c->ip_next++;
        connect_ip(c);
        return;
    }
    gone(c, why);
}

static void on_connect(const redisAsyncContext *cac, int status) {
    pl_rconn *c = cac->data;
    if (!c || cac != c->ac) return;
    if (status != REDIS_OK) {
        char e[160];
        clean(e, sizeof e, cac->errstr);
        c->ac = NULL;                            /* hiredis frees it when we return */
        attempt_failed(c, e);
        return;
    }
    redisAsyncContext *ac = c->ac;
    c->state = RC_UP;
    c->up_since = pl_mono_ms();
    uv_timer_stop(&c->timer);
    if (c->ever_up) pl_count(&pl_m_bus_reconnects, 1);
    if (!c->flaps)
        pl_log(PL_LOG_INFO, 0, c->ever_up ? "redis reconnected" : "redis connected",
               "\"link\":\"%s\",\"attempts\":%lld", c->name, (long long)c->fails + 1);
    c->ever_up = 1;
    c->fails = 0;
    c->in_connect = 1;
    if (c->addr->pass[0]) {
        if (c->addr->user[0])
            redisAsyncCommand(ac, setup_cb, c, "AUTH %s %s", c->addr->user, c->addr->pass);
        else
            redisAsyncCommand(ac, setup_cb, c, "AUTH %s", c->addr->pass);
    }
    if (c->select_db && c->addr->db) redisAsyncCommand(ac, setup_cb, c, "SELECT %d", c->addr->db);
    if (c->client_name) redisAsyncCommand(ac, NULL, NULL, "CLIENT SETNAME %s", c->client_name);
    if (c->up) c->up(c->ud);                  /* may drop or close: invariant 3 */
    c->in_connect = 0;
}

static void on_disconnect(const redisAsyncContext *cac, int status) {
    pl_rconn *c = cac->data;
    (void)status;
    if (!c || cac != c->ac) return;
    char e[160];
    clean(e, sizeof e, cac->errstr ? cac->errstr : "closed by the server");
    c->ac = NULL;                                /* hiredis frees it when we return */
    gone(c, e[0] ? e : "closed by the server");
}

static void connect_timeout_cb(uv_timer_t *t) {
    pl_rconn *c = t->data;
    if (c->state != RC_CONNECTING) return;
    redisAsyncContext *ac = c->ac;
    c->ac = NULL;
    redisAsyncFree(ac);                          /* not connected: no callbacks */
    attempt_failed(c, "connect timeout");
}

static void connect_ip(pl_rconn *c) {
    redisAsyncContext *ac = redisAsyncConnect(c->ips[c->ip_next], c->addr->port);
    if (!ac) {
        attempt_failed(c, "out of memory");
        return;
    }
    if (ac->err) {
        char e[160];
        clean(e, sizeof e, ac->errstr);
        redisAsyncFree(ac);
        attempt_failed(c, e);
        return;
    }
    ac->data = c;
    if (ev_attach(ac, c->loop) != REDIS_OK) {
        redisAsyncFree(ac);
        attempt_failed(c, "cannot watch the socket");
        return;
    }
    redisEnableKeepAlive(&ac->c);
    c->ac = ac;
    c->state = RC_CONNECTING;
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    uv_timer_start(&c->timer, connect_timeout_cb, RC_CONNECT_TIMEOUT_MS, 0);
}

static void maybe_closed(pl_rconn *c) {
    if (c->state == RC_CLOSED && !c->timer_open && !c->gai_busy && c->closed) c->closed(c->ud);
}

static void gai_cb(uv_getaddrinfo_t *req, int status, struct addrinfo *res) {
    pl_rconn *c = req->data;
    c->gai_busy = 0;
    if (c->state == RC_CLOSED) {
        uv_freeaddrinfo(res);
        maybe_closed(c);
        return;
    }
    c->nips = c->ip_next = 0;
    for (struct addrinfo *ai = status == 0 ? res : NULL; ai && c->nips < RC_MAX_ADDRS; ai = ai->ai_next) {
        char *ip = c->ips[c->nips];
        if (ai->ai_family == AF_INET6)
            uv_ip6_name((const struct sockaddr_in6 *)ai->ai_addr, ip, sizeof c->ips[0]);
        else if (ai->ai_family == AF_INET)
            uv_ip4_name((const struct sockaddr_in *)ai->ai_addr, ip, sizeof c->ips[0]);
        else
            continue;
        c->nips++;
    }
    uv_freeaddrinfo(res);
    if (!c->nips) {
        gone(c, status ? uv_strerror(status) : "no address");
        return;
    }
    connect_ip(c);
}

static void attempt(pl_rconn *c) {
    unsigned char tmp[sizeof(struct in6_addr)];
    if (inet_pton(AF_INET, c->addr->host, tmp) == 1 || inet_pton(AF_INET6, c->addr->host, tmp) == 1) {
        size_t n = strlen(c->addr->host);             /* numeric: at most 45 bytes */
        if (n >= sizeof c->ips[0]) n = sizeof c->ips[0] - 1;
        memcpy(c->ips[0], c->addr->host, n);
        c->ips[0][n] = '\0';
        c->nips = 1;
        c->ip_next = 0;
        connect_ip(c);
        return;
    }
    /* names are resolved on libuv's thread pool: getaddrinfo blocks */
    struct addrinfo hints;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    c->state = RC_RESOLVING;
    c->gai.data = c;
    int rc = uv_getaddrinfo(c->loop, &c->gai, gai_cb, c->addr->host, NULL, &hints);
    if (rc) {
        c->state = RC_DOWN;
        gone(c, uv_strerror(rc));
        return;
    }
    c->gai_busy = 1;
}

void pl_rconn_init(pl_rconn *c, uv_loop_t *loop, const pl_redis_addr *addr, const char *name) {
    memset(c, 0, sizeof *c);
    c->loop = loop;
    c->addr = addr;
    c->name = name;
    c->state = RC_DOWN;
    c->backoff_ms = RC_BACKOFF_MIN_MS;
    uv_timer_init(loop, &c->timer);
    c->timer.data = c;
    c->timer_open = 1;
}

void pl_rconn_start(pl_rconn *c) {
    if (c->state == RC_DOWN) uv_timer_start(&c->timer, retry_cb, 0, 0);
}

void pl_rconn_drop(pl_rconn *c, const char *why) {
    if (c->state != RC_UP && c->state != RC_CONNECTING) return;
    redisAsyncContext *ac = c->ac;
    c->ac = NULL;
    release_ac(c, ac);           /* inside its own reply callback: deferred by hiredis */
    gone(c, why);
}

static void timer_closed(uv_handle_t *h) {
    pl_rconn *c = h->data;
    free_zombie(c);
    c->timer_open = 0;
    maybe_closed(c);
}

void pl_rconn_close(pl_rconn *c) {
    if (c->state == RC_CLOSED) return;
    redisAsyncContext *ac = c->ac;
    c->state = RC_CLOSED;
    c->ac = NULL;
    if (ac) release_ac(c, ac);
    if (c->gai_busy) uv_cancel((uv_req_t *)&c->gai);
    uv_close((uv_handle_t *)&c->timer, timer_closed);
}

int pl_redis_probe(const char *url, int timeout_ms, char *err, size_t errlen) {
    pl_redis_addr a;
    if (pl_redis__parse_url(url, &a, err, errlen)) return -1;
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    redisContext *c = redisConnectWithTimeout(a.host, a.port, tv);
    if (!c || c->err) {
        snprintf(err, errlen, "cannot connect to Redis at %s:%d: %s", a.host, a.port,
                 c ? c->errstr : "out of memory");
        if (c) redisFree(c);
        return -1;
    }
    redisSetTimeout(c, tv);
    redisReply *r;
    if (a.pass[0])
        r = a.user[0] ? redisCommand(c, "AUTH %s %s", a.user, a.pass) : redisCommand(c, "AUTH %s", a.pass);
    else
        r = redisCommand(c, "PING");
    int ok = r && r->type != REDIS_REPLY_ERROR;
    if (!ok)
        snprintf(err, errlen, "Redis at %s:%d %s: %s", a.host, a.port, a.pass[0] ? "refused the password" : "does not answer PING",
                 r ? r->str : c->errstr);
    if (r) freeReplyObject(r);
    redisFree(c);
    return ok ? 0 : -1;
}
