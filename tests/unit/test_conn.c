/* test_conn.c — net/conn.c on a real loopback socket: the lingering
 * graceful close (the answer arrives whole, then FIN; input after it is
 * read and discarded, not reset; on_close once, at the peer's EOF), and a
 * lingering connection no longer counting as active (a drain does not wait
 * for it). */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/clock.h"
#include "http/server.h"
#include "net/conn.h"
#include "test.h"

static pl_conn *last_conn;
static int      closes;
static size_t   received;

static void t_data(pl_conn *c, uint8_t *p, size_t n) {
    if (!p) last_conn = c;
    else received += n;
}
static void t_close(pl_conn *c) { closes++; }
static void t_timeout(pl_conn *c) {}

/* A port free on 127.0.0.1 now. */
static int free_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t l = sizeof a;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0 || getsockname(fd, (struct sockaddr *)&a, &l) != 0) {
        close(fd);
        return -1;
    }
    close(fd);
    return ntohs(a.sin_port);
}

static void spin(uv_loop_t *loop, int turns) {
    for (int i = 0; i < turns; i++) {
        uv_run(loop, UV_RUN_NOWAIT);
        usleep(2000);
    }
}

/* A listener on a free loopback port (*n) whose connections call h, and a
 * client connected to it: returns the client's fd with the server's side
 * in *c, or -1. h's on_data must call t_data. */
/* Initialises loop, listens on it with h, connects a client socket and
 * spins until the server's connection exists: the client fd (-1 on
 * failure), *n and *c (NULL when it did not come). */
static int t_connect_with(uv_loop_t *loop, const pl_net_handler *h, pl_net **n, pl_conn **c) {
    char addr[32];
    uv_loop_init(loop);
    int port = free_port();
    *n = NULL;
    *c = NULL;
    if (port <= 0) return -1;
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    if (pl_net_listen(loop, addr, h, NULL, n) != 0) return -1;
    last_conn = NULL;
    closes = 0;
    received = 0;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    for (int i = 0; i < 200 && !last_conn; i++) spin(loop, 1);
    *c = last_conn;
    return fd;
}

static int t_connect(uv_loop_t *loop, pl_net **n, pl_conn **c) {
    pl_net_handler h = {t_data, t_close, t_timeout, NULL};
    return t_connect_with(loop, &h, n, c);
}

/* Spins until on_close has run `want` times in all (or gives up). */
static void wait_closes(uv_loop_t *loop, int want) {
    for (int i = 0; i < 200 && closes < want; i++) spin(loop, 1);
}

/* Closes n and runs the loop until its handles are gone; returns
 * uv_loop_close's result (0: nothing left open). */
static int t_shut(uv_loop_t *loop, pl_net *n) {
    pl_net_close(n);
    uv_run(loop, UV_RUN_DEFAULT);
    return uv_loop_close(loop);
}

/* recv with a short poll; -2 when nothing came. */
static ssize_t recv_some(int fd, uv_loop_t *loop, char *buf, size_t n) {
    for (int i = 0; i < 200; i++) {
        spin(loop, 1);
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 0) == 1) return recv(fd, buf, n, 0);
    }
    return -2;
}

TEST(conn_graceful_close_lingers) {
    uv_loop_t loop;
    pl_net *n;
    pl_conn *c;
    int fd = t_connect(&loop, &n, &c);
    CHECK(fd >= 0 && c != NULL);
    CHECK_EQ(pl_net_count(n), 1);
    CHECK_EQ(pl_net_active(n), 1);

    /* The client has sent bytes the server never reads as a request (the
     * upper layer closes at once, as an early 413 does). */
    CHECK_EQ(send(fd, "unread input", 12, 0), 12);
    pl_conn_send_copy(c, "answer", 6);
    pl_conn_close(c, 1);
    spin(&loop, 5);

    /* The answer, then EOF: an orderly FIN, not a reset. */
    char buf[64];
    ssize_t r = recv_some(fd, &loop, buf, sizeof buf);
    CHECK_EQ(r, 6);
    CHECK(memcmp(buf, "answer", 6) == 0);
    r = recv_some(fd, &loop, buf, sizeof buf);
    CHECK_EQ(r, 0);

    /* Lingering: still open, not active, on_close not yet run; what the
     * client still sends is read and dropped (no reset, no on_data). */
    CHECK_EQ(pl_net_count(n), 1);
    CHECK_EQ(pl_net_active(n), 0);
    CHECK_EQ(closes, 0);
    static char more[256 * 1024];
    memset(more, 'x', sizeof more);
    size_t sent = 0;
    while (sent < sizeof more) {
        spin(&loop, 1);
        ssize_t w = send(fd, more + sent, sizeof more - sent, MSG_DONTWAIT);
        if (w < 0 && errno == EAGAIN) continue;
        CHECK(w > 0);                         /* EPIPE/ECONNRESET: it was reset */
        sent += (size_t)w;
    }
    spin(&loop, 10);
    CHECK_EQ(received, 0);
    CHECK_EQ(closes, 0);

    /* The peer's EOF ends it: on_close once. */
    close(fd);
    wait_closes(&loop, 1);
    CHECK_EQ(closes, 1);
    CHECK_EQ(pl_net_count(n), 0);
    CHECK_EQ(pl_net_active(n), 0);

    CHECK_EQ(t_shut(&loop, n), 0);
}

/* Reads from fd until want bytes came (spinning the loop); returns them. */
static size_t recv_all(int fd, uv_loop_t *loop, char *buf, size_t want) {
    size_t got = 0;
    for (int i = 0; i < 2000 && got < want; i++) {
        spin(loop, 1);
        ssize_t r;
        while (got < want && (r = recv(fd, buf + got, want - got, MSG_DONTWAIT)) > 0) got += (size_t)r;
    }
    return got;
}

/* pl_conn_send_part: adjacent ranges of one buffer become one queue entry
 * (one reference), anything else a new one; while the kernel buffer is
 * full (waiting for EPOLLOUT) ranges are copied into one buffer of the
 * queue's own instead of keeping b alive; the peer gets the bytes in
 * order either way. */
TEST(conn_send_part_merges_adjacent_ranges) {
    uv_loop_t loop;
    pl_net *n;
    pl_conn *c;
    int fd = t_connect(&loop, &n, &c);
    CHECK(fd >= 0 && c != NULL);

    pl_rbuf *b = pl_rbuf_copy("aaabbbccc", 9);
    pl_conn_send_part(c, b, 0, 3);
    pl_conn_send_part(c, b, 3, 3);            /* follows: the entry grows */
    CHECK_EQ(c->qlen, 1);
    CHECK_EQ(c->qbytes, 6);
    CHECK_EQ(b->refs, 2);
    pl_conn_send_copy(c, "X", 1);
    pl_conn_send_part(c, b, 6, 3);            /* after another buffer: new entry */
    pl_conn_send_part(c, b, 0, 3);            /* not adjacent: new entry */
    CHECK_EQ(c->qlen, 4);
    CHECK_EQ(c->qbytes, 13);
    CHECK_EQ(b->refs, 4);
    char buf[64];
    CHECK_EQ(recv_all(fd, &loop, buf, 13), 13);
    CHECK(memcmp(buf, "aaabbbXcccaaa", 13) == 0);
    CHECK_EQ(c->qlen, 0);
    CHECK_EQ(b->refs, 1);

    /* The client does not read: the kernel buffer fills and part of a
     * large entry waits for EPOLLOUT. */
    size_t big = 16 * 1024 * 1024;
    char *blob = malloc(big);
    for (size_t i = 0; i < big; i++) blob[i] = (char)('0' + i % 10);
    pl_conn_send_copy(c, blob, big);
    spin(&loop, 3);
    CHECK(c->writing);
    pl_conn_send_part(c, b, 0, 3);            /* stalled: copied, b not kept alive */
    pl_conn_send_part(c, b, 3, 3);
    pl_conn_send_part(c, b, 6, 3);
    CHECK_EQ(c->qlen, 2);                     /* the blob, then one copy of the three */
    CHECK_EQ(b->refs, 1);
    CHECK_EQ(c->qbytes > 9, 1);
    char *got = malloc(big + 9);
    CHECK_EQ(recv_all(fd, &loop, got, big + 9), big + 9);
    CHECK(memcmp(got, blob, big) == 0);
    CHECK(memcmp(got + big, "aaabbbccc", 9) == 0);
    CHECK_EQ(c->qlen, 0);
    CHECK_EQ(c->qbytes, 0);
    CHECK_EQ(b->refs, 1);
    free(blob);
    free(got);
    pl_rbuf_unref(&b);

    close(fd);
    wait_closes(&loop, 1);
    CHECK_EQ(closes, 1);
    CHECK_EQ(t_shut(&loop, n), 0);
}

/* Nothing a corked connection queues is written until pl_conn_uncork, and
 * a cork ends by itself: above the high-water mark, at a graceful close
 * (the queue first, then FIN), and at the second deadline sweep (250-500
 * ms). A corked queue copies shared ranges instead of holding the buffer. */
TEST(conn_cork_delays_bytes_and_never_keeps_them) {
    uv_loop_t loop;
    pl_net *n;
    pl_conn *c;
    int fd = t_connect(&loop, &n, &c);
    CHECK(fd >= 0 && c != NULL);
    pl_net_set_queue_marks(n, 4096, 1024);
    char buf[8192];

    pl_conn_send_copy(c, "ready", 5);        /* queued, then corked in the same turn */
    pl_conn_cork(c);
    spin(&loop, 10);
    CHECK_EQ(recv(fd, buf, sizeof buf, MSG_DONTWAIT), -1);
    pl_rbuf *b = pl_rbuf_copy("page+synced", 11);
    pl_conn_send_part(c, b, 0, 4);            /* corked: a copy, b not kept */
    CHECK_EQ(b->refs, 1);
    pl_conn_uncork(c);
    CHECK_EQ(recv_all(fd, &loop, buf, 9), 9);
    CHECK(memcmp(buf, "readypage", 9) == 0);
    pl_rbuf_unref(&b);

    /* above the high-water mark */
    pl_conn_cork(c);
    static char big[6000];
    memset(big, 'h', sizeof big);
    pl_conn_send_copy(c, big, sizeof big);
    CHECK(!c->corked);
    CHECK_EQ(recv_all(fd, &loop, buf, sizeof big), sizeof big);

    /* the sweep: at most two of them (250 ms apart) */
    pl_conn_cork(c);
    pl_conn_send_copy(c, "late", 4);
    spin(&loop, 10);
    CHECK_EQ(recv(fd, buf, sizeof buf, MSG_DONTWAIT), -1);
    int64_t t0 = pl_mono_ms();
    size_t got = 0;
    while (got < 4 && pl_mono_ms() - t0 < 2000) {
        spin(&loop, 1);
        ssize_t r = recv(fd, buf + got, 4 - got, MSG_DONTWAIT);
        if (r > 0) got += (size_t)r;
    }
    CHECK_EQ(got, 4);
    CHECK(memcmp(buf, "late", 4) == 0);
    CHECK(pl_mono_ms() - t0 < 1000);

    /* a graceful close writes what the cork held, then FIN */
    pl_conn_cork(c);
    pl_conn_send_copy(c, "bye", 3);
    pl_conn_close(c, 1);
    CHECK_EQ(recv_all(fd, &loop, buf, 3), 3);
    CHECK(memcmp(buf, "bye", 3) == 0);
    ssize_t r = -2;
    for (int i = 0; i < 200 && r != 0; i++) {
        spin(&loop, 1);
        r = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
    }
    CHECK_EQ(r, 0);
    close(fd);
    wait_closes(&loop, 1);
    CHECK_EQ(closes, 1);
    CHECK_EQ(t_shut(&loop, n), 0);
}

#define BIG_N (32u << 20)                      /* more than the kernel buffers hold */

/* Queues BIG_N bytes (prefix, then letters) on c and writes what the
 * kernel takes now: the head stays queued, partly written. Returns the
 * bytes (the caller frees them), or NULL if the write did not stop part
 * way. */
static char *t_queue_past_the_kernel(pl_conn *c, const char *prefix) {
    char *big = malloc(BIG_N);
    if (!big) return NULL;
    size_t k = strlen(prefix);
    memcpy(big, prefix, k);
    for (size_t i = k; i < BIG_N; i++) big[i] = (char)('a' + i % 26);
    pl_conn_send_copy(c, big, BIG_N);
    pl_conn_write_now(c);
    if (!c->writing || c->qoff == 0 || c->qbytes >= BIG_N) {
        free(big);
        return NULL;
    }
    return big;
}

/* pl_conn_write_now writes the queue in the middle of a turn, without the
 * loop; pl_conn_drop_unsent then drops what no write began, keeping the
 * entry a partial write began, so the peer gets whole entries and then
 * what is queued next. */
TEST(conn_write_now_and_drop_unsent_keep_the_stream_whole) {
    uv_loop_t loop;
    pl_net *n;
    pl_conn *c;
    int fd = t_connect(&loop, &n, &c);
    CHECK(fd >= 0 && c != NULL);
    char buf[64];

    pl_conn_send_copy(c, "abc", 3);
    pl_conn_write_now(c);                     /* no loop turn */
    CHECK_EQ(c->qbytes, 0);
    CHECK_EQ(c->qlen, 0);
    ssize_t r = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
    CHECK_EQ(r, 3);
    CHECK(memcmp(buf, "abc", 3) == 0);

    /* nothing written yet: everything goes */
    pl_conn_send_copy(c, "x", 1);
    pl_conn_send_copy(c, "y", 1);
    pl_conn_drop_unsent(c);
    CHECK_EQ(c->qlen, 0);
    CHECK_EQ(c->qbytes, 0);

    /* a head the kernel took part of stays; the rest goes */
    size_t big_n = BIG_N;
    char *big = t_queue_past_the_kernel(c, "");
    CHECK(big != NULL);
    CHECK_EQ(c->qlen, 1);
    pl_conn_send_copy(c, "dropped", 7);
    pl_conn_send_copy(c, "dropped too", 11);
    size_t left = c->qbytes - 18;
    pl_conn_drop_unsent(c);
    CHECK_EQ(c->qlen, 1);
    CHECK_EQ(c->qbytes, left);
    pl_conn_send_copy(c, "END", 3);
    char *got = malloc(big_n + 16);
    CHECK(got != NULL);
    CHECK_EQ(recv_all(fd, &loop, got, big_n + 3), big_n + 3);
    CHECK(memcmp(got, big, big_n) == 0);
    CHECK(memcmp(got + big_n, "END", 3) == 0);
    spin(&loop, 5);
    CHECK_EQ(recv(fd, buf, sizeof buf, MSG_DONTWAIT), -1);   /* nothing more */
    free(got);
    free(big);

    close(fd);
    wait_closes(&loop, 1);
    CHECK_EQ(t_shut(&loop, n), 0);
}

static int t_starts_unit(const uint8_t *p, size_t n) { return n >= 5 && memcmp(p, "data:", 5) == 0; }

/* Units that span entries (an SSE event: its data lines, then its end):
 * pl_conn_drop_unsent_units keeps the rest of the unit being written and
 * drops from the next unit on. Before, the SSE slow-consumer close kept
 * its whole queue (up to --max-outbound) ahead of its `close` event. */
TEST(conn_drop_unsent_units_keeps_the_unit_being_written_whole) {
    uv_loop_t loop;
    pl_net *n;
    pl_conn *c;
    int fd = t_connect(&loop, &n, &c);
    CHECK(fd >= 0 && c != NULL);
    char buf[64];

    /* nothing written: the end of a unit whose start went out stays */
    pl_conn_send_copy(c, "data: x\n", 8);
    pl_conn_write_now(c);
    CHECK_EQ(recv(fd, buf, sizeof buf, MSG_DONTWAIT), 8);
    pl_conn_send_copy(c, "\n", 1);
    pl_conn_send_copy(c, "data: y\n", 8);
    pl_conn_send_copy(c, "\n", 1);
    pl_conn_drop_unsent_units(c, t_starts_unit);
    CHECK_EQ(c->qlen, 1);
    CHECK_EQ(c->qbytes, 1);

    /* a head the kernel took part of, its end, then whole units: those go */
    size_t big_n = BIG_N;
    char *big = t_queue_past_the_kernel(c, "data: ");
    CHECK(big != NULL);
    pl_conn_send_copy(c, "id: 1\n\n", 7);
    pl_conn_send_copy(c, "data: dropped\n", 14);
    pl_conn_send_copy(c, "\n", 1);
    pl_conn_drop_unsent_units(c, t_starts_unit);
    CHECK_EQ(c->qlen, 2);
    pl_conn_send_copy(c, "END", 3);
    char *got = malloc(big_n + 32);
    CHECK(got != NULL);
    size_t want = 1 + big_n + 7 + 3;
    CHECK_EQ(recv_all(fd, &loop, got, want), want);
    CHECK(got[0] == '\n');
    CHECK(memcmp(got + 1, big, big_n) == 0);
    CHECK(memcmp(got + 1 + big_n, "id: 1\n\nEND", 10) == 0);
    spin(&loop, 5);
    CHECK_EQ(recv(fd, buf, sizeof buf, MSG_DONTWAIT), -1);
    free(got);
    free(big);

    close(fd);
    wait_closes(&loop, 1);
    CHECK_EQ(t_shut(&loop, n), 0);
}

/* Pausing costs no syscall until input arrives: then EPOLLIN is dropped
 * (the level-triggered poll would report it every turn), nothing reaches
 * on_data, and resume registers it again and delivers what waited. */
TEST(conn_pause_holds_input_until_resume) {
    uv_loop_t loop;
    pl_net *n;
    pl_conn *c;
    int fd = t_connect(&loop, &n, &c);
    CHECK(fd >= 0 && c != NULL);
    CHECK(c->ev_in);

    pl_conn_pause(c);
    pl_conn_resume(c);                        /* between two polls: nothing changes */
    CHECK(c->ev_in);
    CHECK_EQ(send(fd, "one", 3, 0), 3);
    for (int i = 0; i < 200 && received < 3; i++) spin(&loop, 1);
    CHECK_EQ(received, 3);

    pl_conn_pause(c);
    CHECK(c->ev_in);                          /* dropped lazily */
    CHECK_EQ(send(fd, "two", 3, 0), 3);
    spin(&loop, 20);
    CHECK_EQ(received, 3);
    CHECK(!c->ev_in);                         /* it fired while paused */
    pl_conn_resume(c);
    CHECK(c->ev_in);
    for (int i = 0; i < 200 && received < 6; i++) spin(&loop, 1);
    CHECK_EQ(received, 6);

    close(fd);
    wait_closes(&loop, 1);
    CHECK_EQ(closes, 1);
    CHECK_EQ(t_shut(&loop, n), 0);
}

/* Accepted sockets have TCP_NODELAY (every frame goes out at once): the
 * listener's, inherited on Linux, so the accept path skips a setsockopt a
 * client (a reconnect storm's worth); the first accept checks it. */
TEST(conn_accepted_sockets_have_nodelay) {
    uv_loop_t loop;
    pl_net *n;
    pl_conn *c;
    int fd = t_connect(&loop, &n, &c);
    CHECK(fd >= 0 && c != NULL);
    int v = 0;
    socklen_t vl = sizeof v;
    CHECK_EQ(getsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &v, &vl), 0);
    CHECK_EQ(v, 1);
    close(fd);
    wait_closes(&loop, 1);
    CHECK_EQ(t_shut(&loop, n), 0);
}

/* pl_net_close closes every connection at once but runs on_close at the
 * next loop turn (main.c unsets the bus in between), and frees the network
 * layer after the last one. */
TEST(conn_net_close_releases_connections_on_the_next_turn) {
    uv_loop_t loop;
    pl_net *n;
    pl_conn *c;
    int fd = t_connect(&loop, &n, &c);
    CHECK(fd >= 0 && c != NULL);
    pl_conn_send_copy(c, "bye", 3);
    pl_net_close(n);
    CHECK_EQ(closes, 0);
    CHECK(c->closed);
    uv_run(&loop, UV_RUN_DEFAULT);            /* returns once every handle is closed */
    CHECK_EQ(closes, 1);
    char buf[8];
    CHECK_EQ(recv(fd, buf, sizeof buf, 0), 3); /* the queue's last write */
    close(fd);
    CHECK_EQ(uv_loop_close(&loop), 0);
}

/* The connection keeps its receive time and queue count in 32 bits (one
 * allocator block per connection): the time reads back exactly across the
 * 32-bit wrap, and a queue that would pass 4 GiB cuts the connection
 * instead of wrapping its count. */
TEST(conn_32_bit_fields_wrap_and_overflow_safely) {
    pl_conn k = {0};
    int64_t now = ((int64_t)7 << 32) + 1000;     /* just past a wrap */
    k.last_rx = (uint32_t)(now - 3000);            /* 3 s earlier: before the wrap */
    CHECK_EQ(pl_conn_last_rx(&k, now), now - 3000);
    k.last_rx = (uint32_t)now;
    CHECK_EQ(pl_conn_last_rx(&k, now), now);
    now = ((int64_t)1 << 40) + 123456789;
    k.last_rx = (uint32_t)(now - (int64_t)40 * 86400 * 1000);   /* 40 days */
    CHECK_EQ(pl_conn_last_rx(&k, now), now - (int64_t)40 * 86400 * 1000);

    uv_loop_t loop;
    pl_net *n;
    pl_conn *c;
    int fd = t_connect(&loop, &n, &c);
    CHECK(fd >= 0 && c != NULL);
    c->qbytes = UINT32_MAX - 4;                  /* as if 4 GiB were waiting */
    pl_conn_send_copy(c, "12345678", 8);
    CHECK(c->closed);
    CHECK_EQ(c->qlen, 0);
    c->qbytes = 0;
    wait_closes(&loop, 1);
    CHECK_EQ(closes, 1);
    close(fd);
    CHECK_EQ(t_shut(&loop, n), 0);
}

/* Out of descriptors, the listener would stay readable and the loop spin:
 * waiting connects are accepted with the reserve descriptor and closed,
 * and once descriptors free up, connections are accepted again. */
TEST(conn_out_of_descriptors_sheds_connects) {
    uv_loop_t loop;
    pl_net *n;
    pl_conn *c;
    int fd = t_connect(&loop, &n, &c);
    CHECK(fd >= 0 && c != NULL);
    struct sockaddr_in a;
    socklen_t al = sizeof a;
    CHECK_EQ(getpeername(fd, (struct sockaddr *)&a, &al), 0);

    int cl[3];
    for (int i = 0; i < 3; i++) cl[i] = socket(AF_INET, SOCK_STREAM, 0);
    int probe = dup(0);                       /* the lowest free descriptor */
    close(probe);
    struct rlimit old, low;
    CHECK_EQ(getrlimit(RLIMIT_NOFILE, &old), 0);
    low = old;
    low.rlim_cur = (rlim_t)probe;             /* every descriptor is taken */
    CHECK_EQ(setrlimit(RLIMIT_NOFILE, &low), 0);
    for (int i = 0; i < 3; i++) CHECK_EQ(connect(cl[i], (struct sockaddr *)&a, sizeof a), 0);
    spin(&loop, 10);
    CHECK_EQ(setrlimit(RLIMIT_NOFILE, &old), 0);
    CHECK_EQ(pl_net_count(n), 1);
    for (int i = 0; i < 3; i++) {             /* closed by the server: EOF or reset */
        char b;
        struct pollfd p = {.fd = cl[i], .events = POLLIN};
        CHECK_EQ(poll(&p, 1, 1000), 1);
        CHECK(recv(cl[i], &b, 1, 0) <= 0);
        close(cl[i]);
    }

    last_conn = NULL;                         /* descriptors again: accepted */
    int again = socket(AF_INET, SOCK_STREAM, 0);
    CHECK_EQ(connect(again, (struct sockaddr *)&a, sizeof a), 0);
    for (int i = 0; i < 200 && !last_conn; i++) spin(&loop, 1);
    CHECK(last_conn != NULL);
    CHECK_EQ(pl_net_count(n), 2);

    close(again);
    close(fd);
    wait_closes(&loop, 2);
    CHECK_EQ(closes, 2);
    CHECK_EQ(t_shut(&loop, n), 0);
}

/* ---- http/server.c over a real socket ------------------------------------ */

static pl_http_ctx *held;
static int          http_closes;

static void h_request(pl_http_ctx *ctx, void *ud) { held = ctx; }
static void h_data(pl_conn *c, uint8_t *p, size_t n) {
    t_data(c, p, n);
    pl_http_on_data(c, p, n);
}
static void h_close(pl_conn *c) {
    http_closes++;
    pl_http_on_close(c);
}

/* A handler answers a request after its connection started closing but
 * before the close completed (http/file.c finishing a download whose
 * client went away): the answer frees the context, and the close that
 * follows must not touch it. (The CI run of 2026-12-01 died here under
 * ASan: heap-use-after-free in pl_http_on_close, in the browser's media
 * scenario.) Also: answered after the close completed, the context owns
 * the request's bytes, which stay readable until the answer frees them.
 * The same for an event stream begun on a closing connection. */
TEST(http_answer_while_connection_closes) {
    pl_http_hooks hooks = {.on_request = h_request};
    pl_http_init(&hooks);
    pl_net_handler h = {h_data, h_close, t_timeout, pl_http_on_drain};
    for (int late = 0; late < 4; late++) {   /* 2, 3: as an event stream */
        uv_loop_t loop;
        pl_net *n;
        pl_conn *c;
        held = NULL;
        http_closes = 0;
        int fd = t_connect_with(&loop, &h, &n, &c);
        CHECK(fd >= 0 && c != NULL);
        const char *rq = "GET /file HTTP/1.1\r\nHost: x\r\n\r\n";
        CHECK_EQ(send(fd, rq, strlen(rq), 0), (ssize_t)strlen(rq));
        for (int i = 0; i < 200 && !held; i++) spin(&loop, 1);
        CHECK(held != NULL);
        pl_http_ctx *ctx = held;
        pl_conn_close(c, 0);                  /* closing; on_close not yet run */
        CHECK_EQ(http_closes, 0);
        if (late & 1) {
            spin(&loop, 5);
            CHECK_EQ(http_closes, 1);
            CHECK(ctx->req.path.n == 5 && memcmp(ctx->req.path.p, "/file", 5) == 0);
        }
        if (late < 2) {
            pl_http_respond_head(ctx, 200, "text/plain", 2, NULL);
            pl_http_respond_end(ctx);
        } else {
            CHECK_EQ(pl_http_stream_begin(ctx, NULL), -1);
        }
        spin(&loop, 5);
        CHECK_EQ(http_closes, 1);
        close(fd);
        CHECK_EQ(t_shut(&loop, n), 0);
    }
}
