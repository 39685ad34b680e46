/* redis_conn.h — one hiredis connection that keeps itself connected
 * (private to src/bus/).
 *
 * Owns: parsing a Redis URL, resolving the host off the loop, connecting
 * without blocking (hiredis async on libuv, through this file's own event
 * adapter: see redis_conn.c), AUTH/SELECT/CLIENT SETNAME, a connect
 * timeout, TCP keepalive, and reconnecting after any loss with a capped
 * exponential backoff, forever, until closed. Does not own: what is sent
 * on the connection (bus_redis*.c).
 *
 *              start / backoff timer
 *   DOWN ------------------------------> RESOLVING --(uv_getaddrinfo)--+
 *    ^  ^                                    (numeric hosts skip it)   |
 *    |  |  connect error, timeout (2 s), on every address            v
 *    |  +------------------------------------------------------- CONNECTING
 *    |                                                                  |
 *    |  EOF, error, pl_rconn_drop()                           onConnect(OK): AUTH,
 *    +---------------------------------------------- UP <---- SELECT, SETNAME, up()
 *
 *   any --pl_rconn_close()--> CLOSED (terminal; closed() once every handle
 *                                     and request has been given back)
 *
 * Invariants:
 *   1. c->ac is the live hiredis context exactly in CONNECTING and UP, and
 *      NULL otherwise; a context is forgotten (c->ac = NULL) before it is
 *      freed, so hiredis callbacks of a dying context recognise themselves
 *      by ac != c->ac and change nothing.
 *   2. Every way down passes through `gone`, which calls down() once if the
 *      connection had been UP and arms the backoff timer; the delay doubles
 *      from RC_BACKOFF_MIN_MS to RC_BACKOFF_MAX_MS and starts over only
 *      after a connection stayed up for RC_STABLE_MS, so a server that
 *      accepts and drops at once is retried at most once a second.
 *   3. No context is freed under its own feet: inside a reply callback
 *      hiredis itself defers redisAsyncFree until the callback returns
 *      (REDIS_IN_CALLBACK); inside onConnect (not flagged so by hiredis
 *      0.14) a dropped context is parked in c->zombie and freed from the
 *      next timer callback.
 */
#ifndef PL_REDIS_CONN_H
#define PL_REDIS_CONN_H

#include <stdint.h>
#include <uv.h>

#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "../core/log.h"

#define RC_BACKOFF_MIN_MS  50
#define RC_BACKOFF_MAX_MS  1000
#define RC_CONNECT_TIMEOUT_MS 2000
#define RC_STABLE_MS       2000
#define RC_MAX_ADDRS       4

/* A parsed redis://[[user]:password@]host[:port][/db] or host:port. */
typedef struct pl_redis_addr {
    char host[256];           /* name or numeric address (v6 without brackets) */
    int  port;                /* 6379 unless given                        */
    int  db;                  /* SELECTed on connections that ask for it  */
    char user[128];           /* "" = none (AUTH password only)           */
    char pass[256];           /* "" = no AUTH                             */
} pl_redis_addr;

/* 0, or -1 with a message in err. */
int pl_redis__parse_url(const char *url, pl_redis_addr *a, char *err, size_t errlen);
/* At start: connects to url and PINGs (AUTHs, with a password) within
 * timeout_ms, blocking. 0, or -1 with why in err. */
int pl_redis_probe(const char *url, int timeout_ms, char *err, size_t errlen);

enum { RC_DOWN, RC_RESOLVING, RC_CONNECTING, RC_UP, RC_CLOSED };

typedef struct pl_rconn {
    uv_loop_t            *loop;
    const pl_redis_addr  *addr;       /* borrowed, outlives the connection   */
    const char           *name;       /* "cmd" / "sub", for logs             */
    int                   select_db;  /* 1: SELECT addr->db after connecting */
    const char           *client_name;/* CLIENT SETNAME (borrowed), or NULL  */
    void (*up)(void *ud);             /* connected, AUTH/SELECT queued first */
    void (*down)(void *ud);           /* an UP connection was lost           */
    void (*closed)(void *ud);         /* after pl_rconn_close: all given back */
    void                 *ud;

    redisAsyncContext    *ac;         /* invariant 1                         */
    redisAsyncContext    *zombie;     /* dropped inside onConnect: freed later */
    int                   in_connect; /* inside onConnect (invariant 3)      */
    int                   state;      /* RC_*                                */
    int                   ever_up;    /* a later connect is a reconnect      */
    int                   backoff_ms; /* the next retry's delay              */
    int64_t               up_since;   /* mono ms of the last connect         */
    int64_t               fails;      /* failed attempts since the last UP   */
    int64_t               flaps;      /* connections in a row lost within RC_STABLE_MS */
    pl_log_limit          log;        /* the repeated lines (RC_LOG_EVERY_MS) */
    uv_timer_t            timer;      /* backoff, connect timeout            */
    uv_getaddrinfo_t      gai;
    char                  ips[RC_MAX_ADDRS][64];  /* the host's addresses, tried in order */
    int                   nips, ip_next;
    int                   gai_busy;   /* a resolution is in flight           */
    int                   timer_open; /* timer not yet closed                */
} pl_rconn;

void pl_rconn_init(pl_rconn *c, uv_loop_t *loop, const pl_redis_addr *addr, const char *name);
/* First attempt now (from the loop, never inline in a hiredis callback). */
void pl_rconn_start(pl_rconn *c);
static inline int pl_rconn_is_up(const pl_rconn *c) { return c->state == RC_UP && c->ac; }
/* Abandons the current connection (if any) and reconnects after the
 * backoff; `why` is logged. */
void pl_rconn_drop(pl_rconn *c, const char *why);
/* Stops for good: frees the context (its pending callbacks run with a NULL
 * reply, now or, inside one of its callbacks, when that returns) and closes
 * the timer; closed() is called from the loop once nothing is left. */
void pl_rconn_close(pl_rconn *c);

#endif
