/* bench.h — parley-bench: shared types of the parent (main.c, setup.c,
 * report.c) and the worker processes (worker.c).
 *
 * Owns: the options, the plan (which user each connection logs in as, which
 * conversations it is in, which worker holds it), and the line protocol
 * between the parent and its workers. Does not own: sockets (worker.c,
 * setup.c), numbers (hdr.c), output (report.c).
 *
 * Process shape:
 *
 *   parent: options -> start parleyd (embedded) or use --server's list ->
 *           setup over REST (users, conversations) -> plan -> fork workers
 *           -> drive phases -> merge -> table + JSON -> stop parleyd
 *
 * Several servers (--server a,b,c: the nodes of a cluster): client i connects
 * to server i % nservers, from source address (i / nservers) % addrs, so a
 * DM pair (i, i + 1) sits on two different nodes and a group's members are
 * spread over all of them (their events cross the cluster's bus). The REST
 * set-up spreads its keep-alive connections the same way. --server-pid's
 * processes (any number, not tied to the addresses: behind a load balancer
 * the address is the balancer's) are measured each and summed.
 *   worker: one epoll loop holding its slice of the connections (no thread
 *           per connection); obeys the parent's commands, reports results.
 *
 * The plan is built before fork, so each worker inherits it (tokens and
 * conversation ids) without copying it through a pipe.
 *
 * Parent <-> worker protocol: one JSON object per line on a pipe each way.
 *   worker -> parent  {"ev":"connected", ...}     all of its clients tried
 *   parent -> worker  {"cmd":"run", t0, measure, end, rate, window,
 *                      drop, reconnect}           start a run (times are
 *                                                 CLOCK_MONOTONIC ns)
 *   worker -> parent  {"ev":"storm_done", ...}    (storm) all caught up
 *   parent -> worker  {"cmd":"stop"}              stop sending
 *   worker -> parent  {"ev":"stopped", ...}       every send acked (or timed
 *                                                 out); window counters
 *   parent -> worker  {"cmd":"finish"}
 *   worker -> parent  {"ev":"acked","convs":[[conv,max_seq,count],...]}
 *   parent -> worker  {"cmd":"expect","convs":[[conv,seq],...]}
 *   worker -> parent  {"ev":"result", ...}        verification + histograms
 *   parent -> worker  {"cmd":"quit"}              close everything, exit
 */
#ifndef PB_BENCH_H
#define PB_BENCH_H

#include <stdint.h>
#include <time.h>

#include "core/map.h"

#define PB_MAX_SERVERS 64      /* --server addresses, --server-pid pids    */

typedef enum pb_workload { WL_IDLE = 0, WL_DM, WL_GROUP, WL_STORM } pb_workload;

enum { RESUME_AUTH = 0, RESUME_SYNC = 1 };

typedef struct pb_opts {
    pb_workload wl;
    int    clients;           /* N: connections of the workload              */
    int    workers;           /* worker processes; 0 = one per per_worker    */
    int    per_worker;        /* connections per worker when workers == 0    */
    int    addrs;             /* source addresses 127.0.0.2 ...              */
    double duration;          /* measured seconds of a run                   */
    double warmup;            /* seconds before the measurement window       */
    double rate;              /* total messages/s; 0 = as fast as acked      */
    double rate_frac;         /* > 0: probe the peak, then run at frac * peak */
    double probe;             /* measured seconds of the probe run           */
    int    window;            /* max in-flight sends per sender (max mode)   */
    int    senders;           /* group: members that send                    */
    int    group_size;        /* storm: storm clients per group              */
    int    body_size;         /* bytes of each message body                  */
    double hold;              /* idle: seconds to hold the connections       */
    double offline;           /* storm: seconds between drop and reconnect   */
    int    resume;            /* storm: RESUME_AUTH or RESUME_SYNC           */
    int    idle_convs;        /* idle: put each pair in a DM                 */
    int    tls;               /* --tls: wss/https to the server (bench/tlsc.c) */
    int    connect_conc;      /* handshakes in flight per worker             */
    int    reconnect_conc;    /* storm: the same for the reconnect, 0 = all  */
    int    http_conc;         /* setup: keep-alive connections               */
    double timeout;           /* seconds to wait for acks / deliveries       */
    char   server[4096];      /* host:port[,host:port...] of running servers,
                                 "" = embedded                               */
    int    server_pids[PB_MAX_SERVERS]; /* for RSS/CPU/fds when not embedded */
    int    nserver_pids;
    char   parleyd[1024];     /* binary to start in embedded mode            */
    char   server_args[1024]; /* extra arguments for it                      */
    char   json_path[1024];   /* where to write the JSON result, "" = none   */
    char   label[128];        /* free text recorded in the JSON              */
    int    keep_data;
    int    verbose;
} pb_opts;

/* Roles of a connection. */
enum { ROLE_RECV = 0, ROLE_SEND = 1, ROLE_FEEDER = 2, ROLE_STORM = 3 };

typedef struct pb_client_plan {
    int64_t  user;            /* user id                                     */
    char    *token;           /* access token (heap)                         */
    int64_t *convs;           /* conversations it is in (heap); convs[0] is
                                 the send target of a sender                 */
    uint32_t nconvs;
    uint8_t  role;
} pb_client_plan;

typedef struct pb_plan {
    int             nclients;
    pb_client_plan *c;
    int             nworkers;
    int            *lo, *hi;     /* worker w holds clients [lo[w], hi[w])     */
    pl_map          members;     /* conv -> (void *)(intptr_t) member count   */
    char            host[64];    /* the first server (REST Host header)      */
    int             port;
    int             nservers;    /* >= 1                                     */
    struct pb_server { char host[64]; int port; } servers[PB_MAX_SERVERS];
    char            runid[16];   /* prefix of usernames                      */
} pb_plan;

static inline int64_t pb_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

#define PB_NS 1000000000LL

/* Which server client idx connects to, and which source address it binds
 * (127.0.0.2 + the result): decorrelated, so each server sees every source
 * address. With one server: idx % addrs, as before. */
static inline int pb_server_of(const pb_plan *p, int idx) { return idx % p->nservers; }
static inline int pb_addr_of(const pb_plan *p, int addrs, int idx) { return (idx / p->nservers) % addrs; }

/* setup.c: registers users and creates conversations over REST, filling
 * plan->c[*].user/token/convs and plan->members. Returns 0 or -1 after
 * printing why. *stats gets a JSON object (new reference) with timings. */
struct json_t;
int  pb_setup(const pb_opts *o, pb_plan *plan, struct json_t **stats);
/* GET /healthz until 200 or timeout_s; 0 when up. */
int  pb_wait_healthy(const char *host, int port, double timeout_s);

/* worker.c: the worker process's main; never returns. */
void pb_worker_main(const pb_opts *o, const pb_plan *plan, int w, int cmd_fd, int rep_fd)
    __attribute__((noreturn));

#endif
