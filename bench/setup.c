/* setup.c — the plan (who connects where) and its preparation over REST:
 * registering the users and creating their conversations, many requests at
 * once on keep-alive connections.
 *
 * Owns: the layout of each workload (pairs, one group, storm groups with a
 * feeder per worker), the worker slices, and a small event-driven HTTP/1.1
 * client (one epoll loop, --http-conc connections, one request in flight per
 * connection, Content-Length bodies only — what parleyd speaks). Does not
 * own: WebSocket clients (worker.c).
 *
 * A request that fails on the wire (connection reset) is retried on a fresh
 * connection up to 3 times; an HTTP error status fails the setup.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "bench.h"
#include "tlsc.h"
#include "core/alloc.h"
#include "core/buf.h"

#define PASSWORD "bench-password"

/* ---- a tiny HTTP/1.1 client ------------------------------------------------ */

typedef struct hjob_ops {
    /* Appends the whole request for job i to req. */
    void (*make)(int i, pl_sbuf *req, void *ud);
    /* The answer to job i; returns 0, or -1 (with *why set) to fail the setup. */
    int (*done)(int i, int status, const char *body, size_t len, void *ud, const char **why);
    void *ud;
} hjob_ops;

typedef struct hconn {
    int    fd;
    pb_ssl *ssl;         /* --tls, else NULL                   */
    int    srv;          /* the server it connects to          */
    int    job;          /* -1 when idle                       */
    int    attempts;
    pl_sbuf out;
    size_t out_off;
    char  *in;
    size_t in_len, in_cap;
} hconn;

typedef struct hrun {
    struct sockaddr_in dst[PB_MAX_SERVERS];
    int     ep;
    int     njobs, next, done;
    int     failed;
    int    *retry;       /* jobs to send again                 */
    int     nretry;
    char    err[256];
    const hjob_ops *ops;
} hrun;

static void hclose(hconn *c) {
    pb_tls_free(c->ssl);
    c->ssl = NULL;
    if (c->fd >= 0) close(c->fd);
    c->fd = -1;
}

static int hconnect(hrun *r, hconn *c) {
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c->fd < 0) return -1;
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(c->fd, (struct sockaddr *)&r->dst[c->srv], sizeof r->dst[c->srv]) != 0) {
        close(c->fd);
        c->fd = -1;
        return -1;
    }
    if (pb_tls_on()) {                  /* the socket is still blocking: handshake now */
        int ww;
        c->ssl = pb_tls_new(c->fd);
        if (!c->ssl || pb_tls_handshake(c->ssl, &ww) != 1) {
            hclose(c);
            errno = EPROTO;
            return -1;
        }
    }
    fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) | O_NONBLOCK);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    epoll_ctl(r->ep, EPOLL_CTL_ADD, c->fd, &ev);
    c->in_len = 0;
    return 0;
}

static void hdrop(hrun *r, hconn *c) {
    hclose(c);
    if (c->job >= 0) {
        if (++c->attempts > 3) {
            if (!r->failed)
                snprintf(r->err, sizeof r->err, "request %d failed on the wire 4 times", c->job);
            r->failed = 1;
        } else {
            r->retry[r->nretry++] = c->job;
        }
        c->job = -1;
    }
}

static void hflush(hrun *r, hconn *c) {
    while (c->out_off < c->out.len) {
        ssize_t k = c->ssl ? pb_tls_send(c->ssl, c->out.p + c->out_off, c->out.len - c->out_off)
                           : send(c->fd, c->out.p + c->out_off, c->out.len - c->out_off, MSG_NOSIGNAL);
        if (k > 0) {
            c->out_off += (size_t)k;
            continue;
        }
        if (k < 0 && errno == EINTR) continue;
        if (k < 0 && errno == EAGAIN) {
            struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
            epoll_ctl(r->ep, EPOLL_CTL_MOD, c->fd, &ev);
            return;
        }
        hdrop(r, c);
        return;
    }
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    epoll_ctl(r->ep, EPOLL_CTL_MOD, c->fd, &ev);
}

/* Gives c its next job if any. */
static void hstart(hrun *r, hconn *c) {
    if (r->failed || c->job >= 0) return;
    int job;
    if (r->nretry) job = r->retry[--r->nretry];
    else if (r->next < r->njobs) job = r->next++;
    else return;
    if (c->fd < 0 && hconnect(r, c) != 0) {
        if (!r->failed) snprintf(r->err, sizeof r->err, "cannot connect: %s", strerror(errno));
        r->failed = 1;
        return;
    }
    c->job = job;
    c->out.len = 0;
    c->out_off = 0;
    r->ops->make(job, &c->out, r->ops->ud);
    hflush(r, c);
}

static const char *find_ci(const char *h, size_t n, const char *needle) {
    size_t k = strlen(needle);
    for (size_t i = 0; i + k <= n; i++)
        if (!strncasecmp(h + i, needle, k)) return h + i;
    return NULL;
}

static void hread(hrun *r, hconn *c) {
    for (;;) {
        if (c->in_cap - c->in_len < 16384) {
            c->in_cap = c->in_cap ? c->in_cap * 2 : 65536;
            c->in = pl_realloc(c->in, c->in_cap);
        }
        ssize_t k = c->ssl ? pb_tls_recv(c->ssl, c->in + c->in_len, c->in_cap - c->in_len - 1)
                           : recv(c->fd, c->in + c->in_len, c->in_cap - c->in_len - 1, 0);
        if (k == 0 || (k < 0 && errno != EAGAIN && errno != EINTR)) {
            hdrop(r, c);
            return;
        }
        if (k < 0) break;
        c->in_len += (size_t)k;
    }
    while (c->job >= 0) {
        c->in[c->in_len] = '\0';
        char *end = strstr(c->in, "\r\n\r\n");
        if (!end) return;
        size_t head = (size_t)(end + 4 - c->in);
        const char *cl = find_ci(c->in, head, "\r\ncontent-length:");
        size_t blen = cl ? (size_t)strtoul(cl + 17, NULL, 10) : 0;
        if (c->in_len < head + blen) return;
        int status = atoi(c->in + 9);
        int close_after = find_ci(c->in, head, "\r\nconnection: close") != NULL;
        const char *why = NULL;
        int job = c->job;
        c->job = -1;
        c->attempts = 0;
        if (r->ops->done(job, status, c->in + head, blen, r->ops->ud, &why) != 0) {
            if (!r->failed)
                snprintf(r->err, sizeof r->err, "request %d: HTTP %d: %s: %.120s", job, status,
                         why ? why : "unexpected answer", c->in + head);
            r->failed = 1;
        }
        r->done++;
        memmove(c->in, c->in + head + blen, c->in_len - head - blen);
        c->in_len -= head + blen;
        if (close_after) hclose(c);
        hstart(r, c);
    }
}

/* Runs njobs requests over conc connections, connection i to server
 * i % nservers. Returns 0 or -1 (err set). */
static int http_batch(const pb_plan *p, int conc, int njobs, const hjob_ops *ops, char *err, size_t errlen) {
    hrun r;
    memset(&r, 0, sizeof r);
    for (int k = 0; k < p->nservers; k++) {
        r.dst[k].sin_family = AF_INET;
        r.dst[k].sin_port = htons((uint16_t)p->servers[k].port);
        inet_pton(AF_INET, p->servers[k].host, &r.dst[k].sin_addr);
    }
    r.ep = epoll_create1(EPOLL_CLOEXEC);
    r.njobs = njobs;
    r.ops = ops;
    r.retry = pl_calloc((size_t)conc + 1, sizeof *r.retry);
    if (conc > njobs) conc = njobs;
    hconn *cs = pl_calloc((size_t)(conc ? conc : 1), sizeof *cs);
    for (int i = 0; i < conc; i++) {
        cs[i].fd = -1;
        cs[i].srv = i % p->nservers;
        cs[i].job = -1;
        pl_sbuf_init(&cs[i].out);
    }
    for (int i = 0; i < conc; i++) hstart(&r, &cs[i]);
    struct epoll_event evs[256];
    int64_t last_progress = pb_now();
    int last_done = 0;
    while (r.done < njobs && !r.failed) {
        int n = epoll_wait(r.ep, evs, 256, 100);
        for (int i = 0; i < n; i++) {
            hconn *c = evs[i].data.ptr;
            if (c->fd < 0) continue;
            if (evs[i].events & EPOLLOUT) hflush(&r, c);
            if (c->fd >= 0 && (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP))) hread(&r, c);
        }
        for (int i = 0; i < conc && r.nretry; i++) hstart(&r, &cs[i]);
        if (r.done != last_done) {
            last_done = r.done;
            last_progress = pb_now();
        } else if (pb_now() - last_progress > 30 * PB_NS) {
            snprintf(r.err, sizeof r.err, "no answer for 30 s (%d of %d done)", r.done, njobs);
            r.failed = 1;
        }
    }
    for (int i = 0; i < conc; i++) {
        hclose(&cs[i]);
        pl_sbuf_release(&cs[i].out);
        free(cs[i].in);
    }
    free(cs);
    free(r.retry);
    close(r.ep);
    if (r.failed) snprintf(err, errlen, "%s", r.err);
    return r.failed ? -1 : 0;
}

static void add_request(pl_sbuf *req, const pb_plan *p, const char *path, const char *token,
                        const char *body, size_t blen) {
    pl_sbuf_printf(req, "POST %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\n"
                        "Content-Length: %zu\r\n", path, p->host, p->port, blen);
    if (token) pl_sbuf_printf(req, "Authorization: Bearer %s\r\n", token);
    pl_sbuf_adds(req, "\r\n");
    pl_sbuf_add(req, body, blen);
}

/* ---- registering ------------------------------------------------------------ */

static void make_register(int i, pl_sbuf *req, void *ud) {
    const pb_plan *p = ud;
    char body[160];
    int n = snprintf(body, sizeof body, "{\"username\":\"%s_%d\",\"password\":\"" PASSWORD "\"}", p->runid, i);
    add_request(req, p, "/api/v1/auth/register", NULL, body, (size_t)n);
}

static int done_register(int i, int status, const char *body, size_t len, void *ud, const char **why) {
    pb_plan *p = ud;
    if (status != 201) return -1;
    json_t *j = json_loadb(body, len, 0, NULL);
    json_int_t id = json_integer_value(json_object_get(json_object_get(j, "user"), "id"));
    const char *tok = json_string_value(json_object_get(j, "access_token"));
    if (!id || !tok) {
        json_decref(j);
        *why = "no user id or token";
        return -1;
    }
    p->c[i].user = id;
    p->c[i].token = pl_strdup(tok);
    json_decref(j);
    return 0;
}

/* ---- conversations ---------------------------------------------------------- */

/* One conversation to create: its creator (a client index), its members
 * (client indexes, the creator excluded), and whether it is a DM. */
typedef struct conv_job {
    int  creator;
    int *members;
    int  nmembers;
    int  direct;
} conv_job;

typedef struct conv_jobs {
    pb_plan  *p;
    conv_job *j;
    int       n;
} conv_jobs;

static void make_conv(int i, pl_sbuf *req, void *ud) {
    conv_jobs *cj = ud;
    const pb_plan *p = cj->p;
    const conv_job *j = &cj->j[i];
    pl_sbuf b;
    pl_sbuf_init(&b);
    if (j->direct) {
        pl_sbuf_printf(&b, "{\"kind\":\"direct\",\"user\":%lld}", (long long)p->c[j->members[0]].user);
    } else {
        pl_sbuf_adds(&b, "{\"kind\":\"group\",\"title\":\"bench\",\"members\":[");
        for (int k = 0; k < j->nmembers; k++)
            pl_sbuf_printf(&b, "%s%lld", k ? "," : "", (long long)p->c[j->members[k]].user);
        pl_sbuf_adds(&b, "]}");
    }
    add_request(req, p, "/api/v1/conversations", p->c[j->creator].token, b.p, b.len);
    pl_sbuf_release(&b);
}

static void add_conv(pb_client_plan *c, int64_t conv) {
    c->convs = pl_realloc(c->convs, (c->nconvs + 1) * sizeof *c->convs);
    c->convs[c->nconvs++] = conv;
}

static int done_conv(int i, int status, const char *body, size_t len, void *ud, const char **why) {
    conv_jobs *cj = ud;
    pb_plan *p = cj->p;
    const conv_job *j = &cj->j[i];
    if (status != 201 && status != 200) return -1;
    json_t *r = json_loadb(body, len, 0, NULL);
    int64_t conv = json_integer_value(json_object_get(r, "id"));
    json_decref(r);
    if (!conv) {
        *why = "no conversation id";
        return -1;
    }
    add_conv(&p->c[j->creator], conv);
    for (int k = 0; k < j->nmembers; k++) add_conv(&p->c[j->members[k]], conv);
    pl_map_put(&p->members, conv, (void *)(intptr_t)(j->nmembers + 1));
    return 0;
}

/* ---- layout ----------------------------------------------------------------- */

static int ceil_div(int a, int b) { return (a + b - 1) / b; }

/* Fills nclients, roles, worker slices and the conversations to create. */
static void layout(const pb_opts *o, pb_plan *p, conv_jobs *cj) {
    int n = o->clients;
    int nw = o->workers;
    if (o->wl == WL_DM && n % 2) n--;
    if (!nw) nw = ceil_div(n + (o->wl == WL_STORM), o->per_worker);
    if (nw < 1) nw = 1;
    int unit = (o->wl == WL_DM || (o->wl == WL_IDLE && o->idle_convs)) ? 2 : 1;
    if (nw > n / unit && o->wl != WL_STORM) nw = n / unit > 0 ? n / unit : 1;
    p->nworkers = nw;
    p->lo = pl_calloc((size_t)nw, sizeof *p->lo);
    p->hi = pl_calloc((size_t)nw, sizeof *p->hi);
    cj->n = 0;
    if (o->wl != WL_STORM) {
        p->nclients = n;
        p->c = pl_calloc((size_t)n, sizeof *p->c);
        int units = n / unit;
        for (int w = 0; w < nw; w++) {
            p->lo[w] = (int)((long)units * w / nw) * unit;
            p->hi[w] = (int)((long)units * (w + 1) / nw) * unit;
        }
        p->hi[nw - 1] = n;
        if (unit == 2) {
            cj->j = pl_calloc((size_t)(n / 2 + 1), sizeof *cj->j);
            for (int i = 0; i + 1 < n; i += 2) {
                conv_job *j = &cj->j[cj->n++];
                j->creator = i;
                j->members = pl_malloc(sizeof(int));
                j->members[0] = i + 1;
                j->nmembers = 1;
                j->direct = 1;
            }
        } else if (o->wl == WL_GROUP) {
            cj->j = pl_calloc(1, sizeof *cj->j);
            conv_job *j = &cj->j[cj->n++];
            j->creator = 0;
            j->nmembers = n - 1;
            j->members = pl_malloc(sizeof(int) * (size_t)(n > 1 ? n - 1 : 1));
            for (int i = 1; i < n; i++) j->members[i - 1] = i;
        }
        for (int i = 0; i < n; i++) p->c[i].role = o->wl == WL_DM ? ROLE_SEND : ROLE_RECV;
        if (o->wl == WL_GROUP) {
            int s = o->senders < 1 ? 1 : o->senders > n ? n : o->senders;
            for (int k = 0; k < s; k++) p->c[(int)((long)k * n / s)].role = ROLE_SEND;
        }
        return;
    }
    /* storm: per worker, a feeder then its share of the groups */
    int g = o->group_size < 1 ? 1 : o->group_size;
    int ngroups = ceil_div(n, g);
    if (nw > ngroups) nw = p->nworkers = ngroups;
    p->nclients = n + nw;
    p->c = pl_calloc((size_t)p->nclients, sizeof *p->c);
    cj->j = pl_calloc((size_t)ngroups, sizeof *cj->j);
    int next = 0, member = 0;
    for (int w = 0; w < nw; w++) {
        int g_lo = (int)((long)ngroups * w / nw), g_hi = (int)((long)ngroups * (w + 1) / nw);
        p->lo[w] = next;
        int feeder = next++;
        p->c[feeder].role = ROLE_FEEDER;
        for (int gi = g_lo; gi < g_hi; gi++) {
            int size = member + g <= n ? g : n - member;
            conv_job *j = &cj->j[cj->n++];
            j->creator = feeder;
            j->nmembers = size;
            j->members = pl_malloc(sizeof(int) * (size_t)size);
            for (int k = 0; k < size; k++) {
                p->c[next].role = ROLE_STORM;
                j->members[k] = next++;
            }
            member += size;
        }
        p->hi[w] = next;
    }
}

int pb_setup(const pb_opts *o, pb_plan *p, json_t **stats) {
    conv_jobs cj;
    memset(&cj, 0, sizeof cj);
    cj.p = p;
    layout(o, p, &cj);
    pl_map_init(&p->members);
    char err[300];

    int64_t t0 = pb_now();
    hjob_ops reg = {make_register, done_register, p};
    if (http_batch(p, o->http_conc, p->nclients, &reg, err, sizeof err) != 0) {
        fprintf(stderr, "parley-bench: registering users: %s\n", err);
        return -1;
    }
    int64_t t1 = pb_now();
    hjob_ops conv = {make_conv, done_conv, &cj};
    int nc = cj.n;
    /* one group creation carries every member: fewer connections suffice */
    if (http_batch(p, o->http_conc, nc, &conv, err, sizeof err) != 0) {
        fprintf(stderr, "parley-bench: creating conversations: %s\n", err);
        return -1;
    }
    int64_t t2 = pb_now();
    for (int i = 0; i < cj.n; i++) free(cj.j[i].members);
    free(cj.j);
    double rs = (double)(t1 - t0) / 1e9, cs = (double)(t2 - t1) / 1e9;
    *stats = json_pack("{s:i,s:f,s:f,s:i,s:f}", "users", p->nclients, "register_s", rs,
                       "register_per_s", rs > 0 ? p->nclients / rs : 0.0, "conversations", nc,
                       "conversations_s", cs);
    return 0;
}

int pb_wait_healthy(const char *host, int port, double timeout_s) {
    struct sockaddr_in dst;
    memset(&dst, 0, sizeof dst);
    dst.sin_family = AF_INET;
    dst.sin_port = htons((uint16_t)port);
    inet_pton(AF_INET, host, &dst.sin_addr);
    int64_t deadline = pb_now() + (int64_t)(timeout_s * 1e9);
    while (pb_now() < deadline) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        pb_ssl *ssl = NULL;
        int ww;
        if (fd >= 0 && connect(fd, (struct sockaddr *)&dst, sizeof dst) == 0 &&
            (!pb_tls_on() || ((ssl = pb_tls_new(fd)) && pb_tls_handshake(ssl, &ww) == 1))) {
            char req[256], buf[512];
            int n = snprintf(req, sizeof req, "GET /healthz HTTP/1.1\r\nHost: %s:%d\r\nConnection: close\r\n\r\n",
                             host, port);
            if ((ssl ? pb_tls_send(ssl, req, (size_t)n) : send(fd, req, (size_t)n, MSG_NOSIGNAL)) == n) {
                ssize_t k = ssl ? pb_tls_recv(ssl, buf, sizeof buf - 1) : recv(fd, buf, sizeof buf - 1, 0);
                if (k >= 12 && !strncmp(buf, "HTTP/1.1 200", 12)) {
                    pb_tls_free(ssl);
                    close(fd);
                    return 0;
                }
            }
        }
        pb_tls_free(ssl);
        if (fd >= 0) close(fd);
        usleep(50000);
    }
    return -1;
}
