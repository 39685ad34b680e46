/* test_bus_redis.c — the Redis bus (src/bus/bus_redis*.c, bus_codec.c,
 * redis_conn.c).
 *
 * The codec tests always run. The bus tests start a real redis-server on a
 * free 127.0.0.1 port in a temp dir and run two bus instances (nodes 1 and
 * 2) on one uv loop in this process; they are skipped, with a note, when
 * redis-server is not installed. Every wait is bounded (WAIT): a test may
 * fail, never hang; redis-server is killed at the end of each test.
 */
#include "test.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <hiredis/hiredis.h>
#include <uv.h>

#include "bus/bus.h"
#include "bus/bus_codec.h"
#include "bus/redis_conn.h"
#include "core/alloc.h"
#include "core/clock.h"
#include "core/log.h"
#include "core/metrics.h"

/* ---- codec ----------------------------------------------------------------- */

static int str_same(const char *a, const char *b) { return (!a && !b) || (a && b && strcmp(a, b) == 0); }

static int ev_same(const pl_event *a, const pl_event *b) {
    return a->conv == b->conv && a->seq == b->seq && a->id == b->id && a->ts == b->ts && a->kind == b->kind &&
           a->sender == b->sender && a->subject == b->subject && str_same(a->client_msg_id, b->client_msg_id) &&
           str_same(a->body, b->body) && (a->body ? a->body_len : 0) == (b->body ? b->body_len : 0) &&
           (!a->body || memcmp(a->body, b->body, a->body_len) == 0) && str_same(a->data, b->data) &&
           a->ref == b->ref && str_same(a->annot, b->annot);
}

/* Decodes a heap copy of s (kept in *copy for the borrowed strings). */
static int dec(const pl_sbuf *s, pl_bus_msg *m, char **copy, int64_t **convs, size_t *cap) {
    *copy = pl_malloc(s->len + 1);
    memcpy(*copy, s->p, s->len);
    const char *why = NULL;
    return pl_bus__decode(*copy, s->len, m, convs, cap, &why);
}

/* Every byte value that valid UTF-8 can hold (0x01-0x7f, 0x80-0xbf as
 * continuations, 0xc2-0xf4 as leads), plus the format's own separators. */
static void every_byte_body(pl_sbuf *s) {
    for (int c = 1; c < 0x80; c++) pl_sbuf_addc(s, (char)c);
    for (int lead = 0xc2; lead <= 0xdf; lead++)
        for (int k = 0x80; k <= 0xbf; k++) pl_sbuf_addc(s, (char)lead), pl_sbuf_addc(s, (char)k);
    for (int lead = 0xe0; lead <= 0xef; lead++) {
        pl_sbuf_addc(s, (char)lead);
        pl_sbuf_addc(s, (char)(lead == 0xe0 ? 0xa0 : lead == 0xed ? 0x9f : 0xbf));
        pl_sbuf_addc(s, (char)0x80);
    }
    for (int lead = 0xf0; lead <= 0xf4; lead++) {
        pl_sbuf_addc(s, (char)lead);
        pl_sbuf_addc(s, (char)(lead == 0xf0 ? 0x90 : lead == 0xf4 ? 0x8f : 0xbf));
        pl_sbuf_addc(s, (char)0xbf);
        pl_sbuf_addc(s, (char)0x80);
    }
    pl_sbuf_adds(s, "|~|3:ab|.|E1|2|3.|||::~~..12:");
}

TEST(bus_codec_roundtrip) {
    pl_sbuf s;
    pl_sbuf_init(&s);
    int64_t *convs = NULL;
    size_t cap = 0;
    char *copy = NULL;
    pl_bus_msg m;
    pl_event full = {.conv = 9007199254740993LL, .seq = 42, .id = UINT64_MAX, .ts = 1700000000123LL,
                     .kind = PL_EV_MESSAGE, .sender = 7, .subject = 0, .client_msg_id = "cmid|1:x.",
                     .body = "h\xc3\xa9llo | 5:x ~ .", .data = NULL};
    full.body_len = strlen(full.body);
    pl_event sys = {.conv = 1, .seq = 1, .id = 0, .ts = -5, .kind = PL_EV_MEMBER_ADDED, .sender = 1,
                    .subject = 9, .client_msg_id = NULL, .body = NULL, .body_len = 0,
                    .data = "{\"user\":9,\"t\":\"a|b\"}"};
    pl_event empty = {.conv = 3, .seq = 2, .id = 1, .ts = 0, .kind = 2, .sender = -1, .subject = INT64_MIN,
                      .client_msg_id = "", .body = "", .body_len = 0, .data = ""};
    /* a reply with mentions: every string of an event at once */
    pl_event reply = {.conv = 4, .seq = 59, .id = 7, .ts = 1, .kind = PL_EV_MESSAGE, .sender = 1,
                      .client_msg_id = "c-43", .body = "agreed @bob", .body_len = 11,
                      .data = "{\"reply_to\":58,\"mentions\":[2]}", .ref = 58,
                      .annot = "\"reply_preview\":{\"seq\":58,\"sender\":2,\"body\":\"a|b\"}"};
    const pl_event *evs[] = {&full, &sys, &empty, &reply};
    for (int i = 0; i < 4; i++) {
        s.len = 0;
        pl_bus__enc_event(&s, 1023, evs[i]);
        CHECK_EQ(dec(&s, &m, &copy, &convs, &cap), 0);
        CHECK_EQ(m.type, PL_BM_EVENT);
        CHECK_EQ(m.origin, 1023);
        int same = ev_same(&m.ev, evs[i]);
        free(copy);
        CHECK(same);
    }

    s.len = 0;
    pl_bus__enc_head(&s, 0, 5, INT64_MAX);
    CHECK_EQ(dec(&s, &m, &copy, &convs, &cap), 0);
    free(copy);
    CHECK(m.type == PL_BM_HEAD && m.origin == 0 && m.head.conv == 5 && m.head.seq == INT64_MAX);

    s.len = 0;
    pl_bus__enc_join(&s, 2, 11, 12, 13);
    CHECK_EQ(dec(&s, &m, &copy, &convs, &cap), 0);
    free(copy);
    CHECK(m.type == PL_BM_JOIN && m.origin == 2 && m.join.user == 11 && m.join.conv == 12 && m.join.seq == 13);

    s.len = 0;
    pl_bus__enc_revoke(&s, 3, 21, 22);
    CHECK_EQ(dec(&s, &m, &copy, &convs, &cap), 0);
    free(copy);
    CHECK(m.type == PL_BM_REVOKE && m.revoke.user == 21 && m.revoke.login == 22);

    s.len = 0;                                        /* end-to-end encryption's keys_low */
    pl_bus__enc_keys_low(&s, 3, 23, 24, 9);
    CHECK_EQ(dec(&s, &m, &copy, &convs, &cap), 0);
    free(copy);
    CHECK(m.type == PL_BM_KEYS_LOW && m.origin == 3 && m.keys_low.user == 23 && m.keys_low.device == 24 &&
          m.keys_low.count == 9);

    s.len = 0;
    pl_bus__enc_typing(&s, 4, 31, 32, 1);
    CHECK_EQ(dec(&s, &m, &copy, &convs, &cap), 0);
    free(copy);
    CHECK(m.type == PL_BM_TYPING && m.origin == 4 && m.typing.conv == 31 && m.typing.user == 32 &&
          m.typing.start == 1);

    s.len = 0;                                        /* a block's flag of a direct conversation */
    pl_bus__enc_blocked(&s, 6, 33, 1);
    CHECK_EQ(dec(&s, &m, &copy, &convs, &cap), 0);
    free(copy);
    CHECK(m.type == PL_BM_BLOCKED && m.origin == 6 && m.blocked.conv == 33 && m.blocked.blocked == 1);

    s.len = 0;                                        /* a purge erased messages somewhere */
    pl_bus__enc_erased(&s, 7);
    CHECK_EQ(dec(&s, &m, &copy, &convs, &cap), 0);
    free(copy);
    CHECK(m.type == PL_BM_ERASED && m.origin == 7);

    pl_bus_receipt rc = {.conv = 41, .user = 42, .delivered = 43, .read = 44, .unread = 0, .members = 46,
                         .peer = 47, .unread_mentions = 2};
    s.len = 0;
    pl_bus__enc_receipt(&s, 5, &rc);
    CHECK_EQ(dec(&s, &m, &copy, &convs, &cap), 0);
    free(copy);
    CHECK(m.type == PL_BM_RECEIPT && memcmp(&m.receipt, &rc, sizeof rc) == 0);
    /* an older node's receipt, without unread_mentions: decoded, marked unknown */
    s.len = 0;
    pl_sbuf_adds(&s, "C5|41|42|43|44|0|46|47.");
    CHECK_EQ(dec(&s, &m, &copy, &convs, &cap), 0);
    free(copy);
    CHECK(m.type == PL_BM_RECEIPT && m.receipt.peer == 47 && m.receipt.unread_mentions == -1);

    int64_t pc[40];
    for (int i = 0; i < 40; i++) pc[i] = 1000 + i * 7919;
    pl_bus_presence p = {.user = 51, .node = 6, .status = 2, .last_active = 1700000000000LL,
                         .expires = 1700000060000LL, .convs = pc, .nconvs = 40};
    s.len = 0;
    pl_bus__enc_presence(&s, 6, &p);
    CHECK_EQ(dec(&s, &m, &copy, &convs, &cap), 0);
    free(copy);
    CHECK(m.type == PL_BM_PRESENCE && m.presence.user == 51 && m.presence.node == 6 && m.presence.status == 2 &&
          m.presence.last_active == p.last_active && m.presence.expires == p.expires);
    CHECK_EQ(m.presence.nconvs, 40);
    CHECK(memcmp(m.presence.convs, pc, sizeof pc) == 0);

    p.convs = NULL;
    p.nconvs = 0;
    s.len = 0;
    pl_bus__enc_presence(&s, 6, &p);
    CHECK_EQ(dec(&s, &m, &copy, &convs, &cap), 0);
    free(copy);
    CHECK(m.presence.nconvs == 0 && m.presence.convs == NULL && m.presence.refresh == 0);

    p.refresh = 1;                                  /* a view re-published unchanged */
    s.len = 0;
    pl_bus__enc_presence(&s, 6, &p);
    CHECK_EQ(dec(&s, &m, &copy, &convs, &cap), 0);
    free(copy);
    CHECK(m.presence.refresh == 1 && m.presence.status == 2);

    s.len = 0;
    pl_bus__enc_beat(&s, 7, 99, 1796400000123);
    CHECK_EQ(dec(&s, &m, &copy, &convs, &cap), 0);
    free(copy);
    CHECK(m.type == PL_BM_BEAT && m.origin == 7 && m.beat.n == 99 && m.beat.since == 1796400000123);
    s.len = 0;                                        /* an older node's beat: no start */
    pl_sbuf_adds(&s, "Z7|99.");
    CHECK_EQ(dec(&s, &m, &copy, &convs, &cap), 0);
    free(copy);
    CHECK(m.type == PL_BM_BEAT && m.beat.n == 99 && m.beat.since == 0);
    free(convs);
    pl_sbuf_release(&s);
}

TEST(bus_codec_bodies) {
    pl_sbuf body, s;
    pl_sbuf_init(&body);
    pl_sbuf_init(&s);
    every_byte_body(&body);
    CHECK(pl_bus__utf8_ok(body.p, body.len));
    int seen[256] = {0};
    for (size_t i = 0; i < body.len; i++) seen[(unsigned char)body.p[i]] = 1;
    for (int c = 1; c < 256; c++)
        if (!(c == 0xc0 || c == 0xc1 || c >= 0xf5)) CHECK(seen[c]);
    pl_event e = {.conv = 1, .seq = 2, .id = 3, .ts = 4, .kind = 2, .sender = 5,
                  .client_msg_id = body.p + body.len - 8, .body = body.p, .body_len = body.len, .data = body.p};
    pl_bus__enc_event(&s, 1, &e);
    char *copy;
    pl_bus_msg m;
    int64_t *convs = NULL;
    size_t cap = 0;
    CHECK_EQ(dec(&s, &m, &copy, &convs, &cap), 0);
    int same = ev_same(&m.ev, &e) && strlen(m.ev.body) == body.len;
    free(copy);
    CHECK(same);

    /* 1 MiB of multi-byte text */
    pl_sbuf big;
    pl_sbuf_init(&big);
    while (big.len < (1u << 20) - 4) pl_sbuf_add(&big, "\xe2\x82\xac|", 4);
    pl_event e2 = {.conv = 1, .seq = 1, .id = 1, .ts = 1, .kind = 2, .sender = 1, .body = big.p,
                   .body_len = big.len};
    s.len = 0;
    pl_bus__enc_event(&s, 1, &e2);
    CHECK_EQ(dec(&s, &m, &copy, &convs, &cap), 0);
    same = ev_same(&m.ev, &e2);
    free(copy);
    CHECK(same);

    /* the validator: what it must refuse */
    static const char *bad[] = {"\xc0\x80", "\xc1\xbf", "\xe0\x80\x80", "\xed\xa0\x80", "\xf0\x80\x80\x80",
                                "\xf4\x90\x80\x80", "\xf5\x80\x80\x80", "\xff", "\x80", "\xc3", "\xe2\x82"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) CHECK(!pl_bus__utf8_ok(bad[i], strlen(bad[i])));
    CHECK(!pl_bus__utf8_ok("a\0b", 3));
    pl_sbuf_release(&big);
    pl_sbuf_release(&body);
    pl_sbuf_release(&s);
    free(convs);
}

static int dec_str(const char *msg, size_t len) {
    char *copy = pl_malloc(len + 1);
    memcpy(copy, msg, len);
    pl_bus_msg m;
    int64_t *convs = NULL;
    size_t cap = 0;
    const char *why = NULL;
    int rc = pl_bus__decode(copy, len, &m, &convs, &cap, &why);
    if (rc) rc = why ? -1 : -2;                     /* a refusal always names why */
    free(copy);
    free(convs);
    return rc;
}

TEST(bus_codec_malformed) {
    pl_sbuf s;
    pl_sbuf_init(&s);
    int64_t pc[3] = {1, 2, 3};
    pl_bus_presence p = {.user = 1, .status = 1, .last_active = 2, .expires = 3, .convs = pc, .nconvs = 3};
    pl_bus_receipt rc = {1, 2, 3, 4, 5, 6, 7, 8};
    pl_event e = {.conv = 10, .seq = 11, .id = 12, .ts = 13, .kind = 2, .sender = 14, .client_msg_id = "k",
                  .body = "b|9:.", .body_len = 5, .data = "{}"};
    /* every proper prefix of every message type is refused */
    for (int t = 0; t < 10; t++) {
        s.len = 0;
        switch (t) {
        case 0: pl_bus__enc_event(&s, 1, &e); break;
        case 1: pl_bus__enc_head(&s, 1, 123, 456); break;
        case 2: pl_bus__enc_join(&s, 1, 1, 2, 3); break;
        case 3: pl_bus__enc_revoke(&s, 1, 1, 2); break;
        case 4: pl_bus__enc_typing(&s, 1, 1, 2, 0); break;
        case 5: pl_bus__enc_receipt(&s, 1, &rc); break;
        case 6: pl_bus__enc_presence(&s, 1, &p); break;
        case 7: pl_bus__enc_beat(&s, 1, 77, 5); break;
        case 8: pl_bus__enc_blocked(&s, 1, 5, 0); break;
        case 9: pl_bus__enc_erased(&s, 1); break;
        }
        CHECK_EQ(dec_str(s.p, s.len), 0);
        for (size_t n = 0; n < s.len; n++) CHECK_EQ(dec_str(s.p, n), -1);
    }
    static const struct { const char *m; size_t n; } bad[] = {
        {"", 0}, {".", 1}, {"B1|33|2.", 8}, {"H.", 2}, {"X1|2.", 5}, {"H1|2|3", 6}, {"H1|2.", 5},
        {"H1|2|3|x.", 9}, {"H1|2|3|4:ab.", 12}, {"H1|2|3|2:\xc0\x80.", 12}, {"H1|2|3|~x.", 10}, {"H1|2|3||.", 9},
        {"H1|2|3|99999999999999999999.", 28},
        {"H1|-|3.", 7}, {"H1||3.", 6}, {"H1|2|3x.", 8}, {"H1|99999999999999999999|3.", 26},
        {"H1|9223372036854775808|3.", 25}, {"H-1|2|3.", 8}, {"H99999999999|2|3.", 17}, {"H1|2|3..", 8},
        {"E1|1|1|1|1|2|1|0|~|9:ab|~.", 26}, {"E1|1|1|1|1|2|1|0|~|2:ab~.", 25},
        {"E1|1|1|1|1|2|1|0|~|2:\xc0\x80|~.", 26}, {"E1|1|1|1|1|2|1|0|~|3:a\0b|~.", 27},
        {"E1|1|1|1|1|2|1|0|~|:|~.", 23}, {"E1|1|1|1|1|2|1|0|~|x:ab|~.", 26},
        {"E1|1|1|1|1|99999999999|1|0|~|~|~.", 34}, {"E1|1|1|-1|1|2|1|0|~|~|~.", 25},
        {"E1|1|1|1|1|2|1|0|~x|~|~.", 24}, {"P1|2|2|3|4|1000000|1.", 21}, {"P1|2|2|3|4|-1.", 14},
        {"P1|2|2|3|4|2|1.", 15}, {"Z1.", 3}, {"T1|2|3|99999999999.", 19},
        {"C1|1|2|3|4|5|6|7|-2.", 20}, {"W.", 2}, {"W1|x.", 5},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (dec_str(bad[i].m, bad[i].n) != -1) fprintf(stderr, "  accepted bad[%zu]\n", i);
        CHECK_EQ(dec_str(bad[i].m, bad[i].n), -1);
    }
    /* fields appended by a newer version are read and dropped (a rolling
     * upgrade that only appends fields) */
    static const char *const newer[] = {"H1|2|3|4.", "H1|2|3|-4|2:ab|~|0:.", "R1|5|6|3:x|y."};
    for (size_t i = 0; i < sizeof newer / sizeof *newer; i++) CHECK_EQ(dec_str(newer[i], strlen(newer[i])), 0);
    s.len = 0;
    pl_bus__enc_receipt(&s, 1, &rc);
    s.len--;                                          /* the final "." */
    pl_sbuf_adds(&s, "|42|5:extra.");
    {
        pl_bus_msg m;
        int64_t *cv = NULL;
        size_t cap = 0;
        const char *why = NULL;
        char *copy = pl_malloc(s.len);
        memcpy(copy, s.p, s.len);
        CHECK_EQ(pl_bus__decode(copy, s.len, &m, &cv, &cap, &why), 0);
        CHECK_EQ(m.receipt.unread, 5);
        CHECK_EQ(m.receipt.peer, 7);
        CHECK_EQ(m.receipt.unread_mentions, 8);
        free(copy);
        free(cv);
    }
    /* random corruption of valid messages: refused or decoded, never a crash */
    uint64_t x = 0x9e3779b97f4a7c15ULL;
    for (int it = 0; it < 20000; it++) {
        s.len = 0;
        if (it % 3 == 0) pl_bus__enc_event(&s, 1, &e);
        else if (it % 3 == 1) pl_bus__enc_presence(&s, 1, &p);
        else pl_bus__enc_receipt(&s, 1, &rc);
        for (int k = 0; k < 1 + it % 4; k++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            s.p[x % s.len] = (char)(x >> 32);
        }
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        CHECK(dec_str(s.p, it % 5 ? s.len : x % (s.len + 1)) != -2);
    }
    pl_sbuf_release(&s);
}

TEST(bus_redis_url) {
    pl_redis_addr a;
    char err[200];
    CHECK_EQ(pl_redis__parse_url("redis://10.0.0.1:7000/3", &a, err, sizeof err), 0);
    CHECK(strcmp(a.host, "10.0.0.1") == 0 && a.port == 7000 && a.db == 3 && !a.pass[0]);
    CHECK_EQ(pl_redis__parse_url("localhost:6380", &a, err, sizeof err), 0);
    CHECK(strcmp(a.host, "localhost") == 0 && a.port == 6380 && a.db == 0);
    CHECK_EQ(pl_redis__parse_url("redis://h", &a, err, sizeof err), 0);
    CHECK(a.port == 6379);
    CHECK_EQ(pl_redis__parse_url("redis://u:p@w:d@[::1]:6379/", &a, err, sizeof err), 0);
    CHECK(strcmp(a.host, "::1") == 0 && strcmp(a.user, "u") == 0 && strcmp(a.pass, "p@w:d") == 0);
    CHECK_EQ(pl_redis__parse_url("redis://secret@h:1", &a, err, sizeof err), 0);
    CHECK(strcmp(a.pass, "secret") == 0 && !a.user[0]);
    const char *bad[] = {"", "redis://", "redis://h:0", "redis://h:65536", "redis://h:x", "http://h:1",
                         "redis://h:1/x", "redis://[::1", "h:1:2", "redis://:1"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) CHECK_EQ(pl_redis__parse_url(bad[i], &a, err, sizeof err), -1);
    pl_bus_handlers h = {0};
    pl_bus_redis_opts o = {.url = "redis://h:0", .node = 1};
    CHECK(pl_bus_redis_new(uv_default_loop(), &o, &h, err, sizeof err) == NULL && err[0]);
}

/* ---- a redis-server per test ------------------------------------------------- */

typedef struct rsrv {
    pid_t pid;
    int   port;
    char  dir[64];
    char  pass[32];                         /* --requirepass, "" for none */
} rsrv;

static const char *redis_server_path(void) {
    static char found[512];
    const char *path = getenv("PATH");
    static const char *fixed[] = {"/usr/bin/redis-server", "/usr/local/bin/redis-server", "/usr/sbin/redis-server"};
    for (size_t i = 0; i < 3; i++)
        if (access(fixed[i], X_OK) == 0) return fixed[i];
    while (path && *path) {
        size_t n = strcspn(path, ":");
        snprintf(found, sizeof found, "%.*s/redis-server", (int)n, path);
        if (access(found, X_OK) == 0) return found;
        path += n + (path[n] == ':');
    }
    return NULL;
}

static int free_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof sa;
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) || getsockname(fd, (struct sockaddr *)&sa, &len)) {
        if (fd >= 0) close(fd);
        return -1;
    }
    close(fd);
    return ntohs(sa.sin_port);
}

static redisContext *admin(int port) {
    struct timeval tv = {1, 0};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);
    if (c && c->err) {
        redisFree(c);
        return NULL;
    }
    if (c) redisSetTimeout(c, tv);
    return c;
}

static int rs_ready(int port, int ms) {
    int64_t end = pl_mono_ms() + ms;
    while (pl_mono_ms() < end) {
        redisContext *c = admin(port);
        if (c) {
            redisReply *r = redisCommand(c, "PING");
            int ok = r && (r->type == REDIS_REPLY_STATUS ||
                           (r->type == REDIS_REPLY_ERROR && strncmp(r->str, "NOAUTH", 6) == 0));
            if (r) freeReplyObject(r);
            redisFree(c);
            if (ok) return 1;
        }
        usleep(10000);
    }
    return 0;
}

/* 1 started, 0 not installed, -1 failed */
static int rs_start(rsrv *r) {
    const char *exe = redis_server_path();
    if (!exe) return 0;
    if (!r->dir[0]) {
        snprintf(r->dir, sizeof r->dir, "/tmp/pl-bus-redis-XXXXXX");
        if (!mkdtemp(r->dir)) return -1;
    }
    if (!r->port && (r->port = free_port()) <= 0) return -1;
    char port[16], log[128];
    snprintf(port, sizeof port, "%d", r->port);
    snprintf(log, sizeof log, "%s/redis.log", r->dir);
    fflush(NULL);
    r->pid = fork();
    if (r->pid < 0) return -1;
    if (r->pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0600);
        if (fd >= 0) dup2(fd, 1), dup2(fd, 2);
        if (r->pass[0])
            execl(exe, exe, "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                  "--daemonize", "no", "--dir", r->dir, "--requirepass", r->pass, (char *)NULL);
        else
            execl(exe, exe, "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                  "--daemonize", "no", "--dir", r->dir, (char *)NULL);
        _exit(127);
    }
    return rs_ready(r->port, 5000) ? 1 : -1;
}

static void rs_kill(rsrv *r, int sig) {
    if (r->pid <= 0) return;
    kill(r->pid, sig);
    waitpid(r->pid, NULL, 0);
    r->pid = 0;
}

static void rs_cleanup(rsrv *r) {
    rs_kill(r, SIGKILL);
    if (!r->dir[0]) return;
    char p[160];
    snprintf(p, sizeof p, "%s/redis.log", r->dir);
    unlink(p);
    snprintf(p, sizeof p, "%s/dump.rdb", r->dir);
    unlink(p);
    rmdir(r->dir);
    r->dir[0] = '\0';
}

/* ---- two nodes on one loop ---------------------------------------------------- */

#define MAXREC 64

typedef struct node {
    pl_bus   *bus;
    int       id;
    pl_event  ev[MAXREC];                 /* copies, freed by node_reset    */
    size_t    nev;
    struct { int64_t conv, seq; } head[MAXREC];
    size_t    nhead;
    struct { int64_t user, conv, seq; } join[MAXREC];
    size_t    njoin;
    struct { int64_t user, login; } revoke[MAXREC];
    size_t    nrevoke;
    struct { int64_t conv, user; int start, origin; } typing[MAXREC];
    size_t    ntyping;
    pl_bus_receipt receipt[MAXREC];
    size_t    nreceipt;
    pl_bus_presence pres[MAXREC];
    int64_t   pres_convs[MAXREC][8];
    size_t    npres;
    int64_t   conv_ready[MAXREC];
    size_t    nconv_ready;
    int64_t   last_conv_ready;
    int64_t   user_ready[MAXREC];
    size_t    nuser_ready;
    int       resyncs;
    size_t    ready_at_resync;            /* conv+user readies when resync came */
    int64_t   acked[MAXREC];
    size_t    nacked;
    int       close_on;                   /* CLOSE_ON_*: the handler closes the bus */
    int       nerased;
} node;

enum { CLOSE_ON_EVENT = 1, CLOSE_ON_ACK = 2, CLOSE_ON_READY = 4 };

static char *dup_or_null(const char *s) { return s ? pl_strdup(s) : NULL; }

static void h_event(void *ud, const pl_event *ev) {
    node *n = ud;
    if (n->nev == MAXREC) return;
    pl_event *d = &n->ev[n->nev++];
    *d = *ev;
    d->client_msg_id = dup_or_null(ev->client_msg_id);
    d->data = dup_or_null(ev->data);
    d->body = ev->body ? pl_strndup(ev->body, ev->body_len) : NULL;
    if (n->close_on & CLOSE_ON_EVENT) pl_bus_close(&n->bus);
}
static void h_erased(void *ud) { ((node *)ud)->nerased++; }
static void h_head(void *ud, int64_t conv, int64_t seq) {
    node *n = ud;
    if (n->nhead < MAXREC) n->head[n->nhead].conv = conv, n->head[n->nhead].seq = seq, n->nhead++;
}
static void h_join(void *ud, int64_t user, int64_t conv, int64_t seq) {
    node *n = ud;
    if (n->njoin < MAXREC)
        n->join[n->njoin].user = user, n->join[n->njoin].conv = conv, n->join[n->njoin].seq = seq, n->njoin++;
}
static void h_revoke(void *ud, int64_t user, int64_t login) {
    node *n = ud;
    if (n->nrevoke < MAXREC) n->revoke[n->nrevoke].user = user, n->revoke[n->nrevoke].login = login, n->nrevoke++;
}
static void h_typing(void *ud, int64_t conv, int64_t user, int start, int origin) {
    node *n = ud;
    if (n->ntyping == MAXREC) return;
    n->typing[n->ntyping].conv = conv;
    n->typing[n->ntyping].user = user;
    n->typing[n->ntyping].start = start;
    n->typing[n->ntyping].origin = origin;
    n->ntyping++;
}
static void h_receipt(void *ud, const pl_bus_receipt *r) {
    node *n = ud;
    if (n->nreceipt < MAXREC) n->receipt[n->nreceipt++] = *r;
}
static void h_presence(void *ud, const pl_bus_presence *p) {
    node *n = ud;
    if (n->npres == MAXREC) return;
    pl_bus_presence *d = &n->pres[n->npres];
    *d = *p;
    d->nconvs = p->nconvs < 8 ? p->nconvs : 8;
    if (d->nconvs) memcpy(n->pres_convs[n->npres], p->convs, d->nconvs * sizeof *p->convs);
    d->convs = n->pres_convs[n->npres];
    n->npres++;
}
static void h_resync(void *ud) {
    node *n = ud;
    n->resyncs++;
    n->ready_at_resync = n->nconv_ready + n->nuser_ready;
}
static void h_conv_ready(void *ud, int64_t conv) {
    node *n = ud;
    if (n->nconv_ready < MAXREC) n->conv_ready[n->nconv_ready] = conv;
    n->nconv_ready++;                       /* counts past MAXREC, keeps the first */
    n->last_conv_ready = conv;
    if (n->close_on & CLOSE_ON_READY) pl_bus_close(&n->bus);
}
static void h_user_ready(void *ud, int64_t user) {
    node *n = ud;
    if (n->nuser_ready < MAXREC) n->user_ready[n->nuser_ready++] = user;
}
static void h_acked(void *ud, int64_t batch) {
    node *n = ud;
    if (n->nacked < MAXREC) n->acked[n->nacked++] = batch;
    if (n->close_on & CLOSE_ON_ACK) pl_bus_close(&n->bus);
}

static void node_reset(node *n) {
    for (size_t i = 0; i < n->nev; i++) {
        free(n->ev[i].client_msg_id);
        free(n->ev[i].body);
        free(n->ev[i].data);
    }
    pl_bus *b = n->bus;
    int id = n->id;
    memset(n, 0, sizeof *n);
    n->bus = b;
    n->id = id;
}

typedef struct ctx {
    int        log_level;                  /* restored at the end          */
    uv_loop_t  loop;
    uv_timer_t pulse;                      /* keeps UV_RUN_ONCE from sleeping long */
    rsrv       rs;
    node       n[2];
} ctx;

static void pulse_cb(uv_timer_t *t) { (void)t; }

#define WAIT(c, cond, ms)                                                     \
    do {                                                                      \
        int64_t _end = pl_mono_ms() + (ms);                                   \
        while (!(cond) && pl_mono_ms() < _end) uv_run(&(c)->loop, UV_RUN_ONCE); \
    } while (0)
#define WAIT_CHECK(c, cond, ms) do { WAIT(c, cond, ms); CHECK(cond); } while (0)

static void pump(ctx *c, int ms) {
    int64_t end = pl_mono_ms() + ms;
    while (pl_mono_ms() < end) uv_run(&c->loop, UV_RUN_ONCE);
}

static double ws_rate, ws_burst = 1;      /* the workspace bucket: only t_rate_workspace sets it */

static pl_bus *node_bus(ctx *c, int i, double urate, double uburst, double crate, double cburst) {
    char url[64], err[256];
    snprintf(url, sizeof url, "redis://127.0.0.1:%d", c->rs.port);
    pl_bus_handlers h = {
        .event = h_event, .head = h_head, .join = h_join, .revoke = h_revoke, .typing = h_typing,
        .receipt = h_receipt, .presence = h_presence, .resync = h_resync, .conv_ready = h_conv_ready,
        .user_ready = h_user_ready, .outbox_acked = h_acked, .erased = h_erased, .ud = &c->n[i],
    };
    pl_bus_redis_opts o = {.url = url, .node = i + 1, .prefix = "t:", .user_rate = urate,
                           .user_burst = uburst, .conv_rate = crate, .conv_burst = cburst,
                           .ws_rate = ws_rate, .ws_burst = ws_burst};
    pl_bus *b = pl_bus_redis_new(&c->loop, &o, &h, err, sizeof err);
    if (!b) fprintf(stderr, "  pl_bus_redis_new: %s\n", err);
    return b;
}

/* 1 ready, 0 skipped (no redis-server), -1 failed (test marked failed) */
static int ctx_start(ctx *c, double urate, double uburst, double crate, double cburst) {
    memset(c, 0, sizeof *c);
    signal(SIGPIPE, SIG_IGN);
    c->log_level = pl_log_level;
    if (!getenv("PARLEY_TEST_LOG")) pl_log_level = PL_LOG_ERROR;   /* reconnect warnings are expected */
    int rc = rs_start(&c->rs);
    if (rc == 0) {
        printf("  skip: redis-server not found\n");
        pl_log_level = c->log_level;
        return 0;
    }
    uv_loop_init(&c->loop);
    uv_timer_init(&c->loop, &c->pulse);
    uv_timer_start(&c->pulse, pulse_cb, 5, 5);
    if (rc < 0) {
        fprintf(stderr, "  redis-server did not start\n");
        pl_test_failed = 1;
        return -1;
    }
    for (int i = 0; i < 2; i++) {
        c->n[i].id = i + 1;
        c->n[i].bus = node_bus(c, i, urate, uburst, crate, cburst);
        if (!c->n[i].bus) {
            pl_test_failed = 1;
            return -1;
        }
    }
    WAIT(c, pl_bus_healthy(c->n[0].bus) && pl_bus_healthy(c->n[1].bus), 5000);
    if (!pl_bus_healthy(c->n[0].bus) || !pl_bus_healthy(c->n[1].bus)) {
        fprintf(stderr, "  buses not healthy after 5 s\n");
        pl_test_failed = 1;
        return -1;
    }
    return 1;
}

static void ctx_stop(ctx *c) {
    for (int i = 0; i < 2; i++) {
        pl_bus_close(&c->n[i].bus);
        node_reset(&c->n[i]);
    }
    uv_close((uv_handle_t *)&c->pulse, NULL);
    /* everything the buses opened closes by itself: bounded anyway */
    int64_t end = pl_mono_ms() + 5000;
    while (uv_run(&c->loop, UV_RUN_NOWAIT) && pl_mono_ms() < end) usleep(1000);
    int rc = uv_loop_close(&c->loop);
    if (rc) {
        fprintf(stderr, "  uv_loop_close: %s (handles left open)\n", uv_strerror(rc));
        pl_test_failed = 1;
    }
    rs_cleanup(&c->rs);
    pl_log_level = c->log_level;
}

static void run_bus_test(void (*body)(ctx *), double urate, double uburst, double crate, double cburst) {
    static ctx c;
    int rc = ctx_start(&c, urate, uburst, crate, cburst);
    if (rc == 1) body(&c);
    if (rc != 0) ctx_stop(&c);
}

/* ---- admin helpers ------------------------------------------------------------ */

/* CLIENT KILL of the connection named `name` (CLIENT SETNAME); how many. */
static int kill_client(int port, const char *name) {
    redisContext *c = admin(port);
    if (!c) return -1;
    int killed = 0;
    redisReply *r = redisCommand(c, "CLIENT LIST");
    char want[64];
    snprintf(want, sizeof want, " name=%s ", name);
    for (char *line = r && r->type == REDIS_REPLY_STRING ? r->str : NULL; line && *line;) {
        char *eol = strchr(line, '\n');
        if (eol) *eol = '\0';
        long long id;
        if (strstr(line, want) && sscanf(line, "id=%lld", &id) == 1) {
            redisReply *k = redisCommand(c, "CLIENT KILL ID %lld", id);
            if (k && k->type == REDIS_REPLY_INTEGER) killed += (int)k->integer;
            if (k) freeReplyObject(k);
        }
        line = eol ? eol + 1 : NULL;
    }
    if (r) freeReplyObject(r);
    redisFree(c);
    return killed;
}

static long long admin_int(int port, const char *cmd, const char *arg) {
    redisContext *c = admin(port);
    if (!c) return -999;
    redisReply *r = redisCommand(c, "%s %s", cmd, arg);
    long long v = r && r->type == REDIS_REPLY_INTEGER ? r->integer : -998;
    if (r) freeReplyObject(r);
    redisFree(c);
    return v;
}

static int admin_publish(int port, const char *chan, const char *payload, size_t len) {
    redisContext *c = admin(port);
    if (!c) return -1;
    redisReply *r = redisCommand(c, "PUBLISH %s %b", chan, payload, len);
    int ok = r && r->type == REDIS_REPLY_INTEGER;
    if (r) freeReplyObject(r);
    redisFree(c);
    return ok ? 0 : -1;
}

static pl_event mk_event(int64_t conv, int64_t seq) {
    pl_event e = {.conv = conv, .seq = seq, .id = ((uint64_t)seq << 22) | 1, .ts = 1700000000000LL + seq,
                  .kind = PL_EV_MESSAGE, .sender = 7, .subject = 0, .client_msg_id = "cm",
                  .body = "hello", .body_len = 5, .data = NULL};
    return e;
}

static int64_t last_ack(const node *n) { return n->nacked ? n->acked[n->nacked - 1] : 0; }

/* ---- events, heads, subscriptions --------------------------------------------- */

static void t_events(ctx *c) {
    node *a = &c->n[0], *b = &c->n[1];
    pl_sbuf body;
    pl_sbuf_init(&body);
    every_byte_body(&body);
    pl_event e1 = mk_event(100, 1);
    pl_bus_publish_event(a->bus, &e1, 1);
    CHECK_EQ(a->nev, 1);                                   /* guarantee 1: synchronous */
    CHECK(ev_same(&a->ev[0], &e1));

    pl_bus_subscribe_conv(b->bus, 100, 1);
    CHECK_EQ(b->nconv_ready, 0);                           /* only once Redis confirmed */
    WAIT_CHECK(c, b->nconv_ready == 1, 5000);
    CHECK_EQ(b->conv_ready[0], 100);
    pl_bus_subscribe_conv(a->bus, 100, 1);                 /* a hears its own: drops them */
    WAIT_CHECK(c, a->nconv_ready == 1, 5000);

    pl_event e2 = {.conv = 100, .seq = 2, .id = 77, .ts = 1700000000001LL, .kind = PL_EV_MEMBER_ADDED,
                   .sender = 7, .subject = 9, .data = "{\"user\":9}"};
    pl_event e3 = {.conv = 100, .seq = 3, .id = UINT64_MAX, .ts = INT64_MAX, .kind = PL_EV_MESSAGE,
                   .sender = INT64_MAX, .client_msg_id = "k|1:.", .body = body.p, .body_len = body.len};
    pl_event e4 = mk_event(100, 4);
    pl_bus_publish_event(a->bus, &e2, 2);
    pl_bus_publish_event(a->bus, &e3, 2);
    pl_bus_publish_event(a->bus, &e4, 3);
    int same = a->nev == 4 && ev_same(&a->ev[1], &e2) && ev_same(&a->ev[2], &e3) && ev_same(&a->ev[3], &e4);
    pl_sbuf_release(&body);                                /* a->ev[] hold copies */
    CHECK(same);
    /* e1 was published before b subscribed, but its PUBLISH and b's
     * SUBSCRIBE went out on two connections in the same loop turn: Redis
     * may have taken the SUBSCRIBE first (seen once on a fresh machine),
     * and then b has e1 too, first. */
    WAIT(c, b->nev >= 3u + (b->nev > 0 && ev_same(&b->ev[0], &e1)), 5000);
    size_t skip = b->nev > 0 && ev_same(&b->ev[0], &e1);
    CHECK_EQ(b->nev, 3 + skip);
    for (size_t i = 0; i < 3; i++) CHECK(ev_same(&b->ev[skip + i], &a->ev[i + 1]));

    pl_bus_publish_head(a->bus, 100, 4);
    CHECK_EQ(a->nhead, 1);
    WAIT_CHECK(c, b->nhead == 1, 5000);
    CHECK(b->head[0].conv == 100 && b->head[0].seq == 4);
    /* a round trip through b: a has seen its own publishes come back by now */
    pl_bus_publish_head(b->bus, 100, 5);
    WAIT_CHECK(c, a->nhead == 2, 5000);
    CHECK_EQ(a->head[1].seq, 5);
    CHECK_EQ(a->nev, 4);

    WAIT_CHECK(c, last_ack(a) == 3, 5000);                 /* outbox acks, in order */
    for (size_t i = 1; i < a->nacked; i++) CHECK(a->acked[i] > a->acked[i - 1]);
    CHECK(a->acked[0] >= 1);
    CHECK_EQ(b->nacked, 0);

    /* unsubscribe: the SUBSCRIBE sent after it is confirmed after it */
    pl_bus_subscribe_conv(b->bus, 200, 1);
    pl_bus_subscribe_conv(b->bus, 100, 0);
    pl_bus_subscribe_conv(b->bus, 300, 1);
    WAIT_CHECK(c, b->nconv_ready == 3, 5000);
    pl_event e5 = mk_event(100, 5);
    pl_bus_publish_event(a->bus, &e5, 0);
    pl_bus_publish_head(a->bus, 200, 1);
    WAIT_CHECK(c, b->nhead == 3, 5000);                    /* [1] is b's own (100, 5) */
    CHECK_EQ(b->head[2].conv, 200);
    CHECK_EQ(b->nev, 3 + skip);

    /* repeats */
    size_t r0 = b->nconv_ready;
    pl_bus_subscribe_conv(b->bus, 400, 1);
    pl_bus_subscribe_conv(b->bus, 400, 1);                 /* still in flight: one ready */
    WAIT_CHECK(c, b->nconv_ready == r0 + 1, 5000);
    pump(c, 50);
    CHECK_EQ(b->nconv_ready, r0 + 1);
    pl_bus_subscribe_conv(b->bus, 400, 1);                 /* confirmed already: ready now */
    CHECK_EQ(b->nconv_ready, r0 + 2);
    pl_bus_subscribe_conv(b->bus, 500, 1);
    pl_bus_subscribe_conv(b->bus, 500, 0);
    pl_bus_subscribe_conv(b->bus, 500, 1);
    WAIT_CHECK(c, b->nconv_ready == r0 + 3, 5000);
    CHECK_EQ(b->last_conv_ready, 500);
    pl_bus_subscribe_conv(b->bus, 600, 1);
    pl_bus_subscribe_conv(b->bus, 600, 0);                 /* turned off before confirmed */
    pl_bus_subscribe_conv(b->bus, 700, 0);                 /* never on */
    pl_bus_subscribe_conv(b->bus, 800, 1);
    WAIT_CHECK(c, b->nconv_ready == r0 + 4, 5000);
    pump(c, 50);
    CHECK_EQ(b->nconv_ready, r0 + 4);                      /* none for 600 */
    CHECK_EQ(b->last_conv_ready, 800);
    pl_event e6 = mk_event(500, 1);
    pl_bus_publish_event(a->bus, &e6, 0);
    WAIT_CHECK(c, b->nev == 4 + skip, 5000);
    CHECK_EQ(b->ev[3 + skip].conv, 500);
    CHECK(pl_bus_healthy(a->bus) && pl_bus_healthy(b->bus));
}
TEST(bus_redis_events) { run_bus_test(t_events, 0, 1, 0, 1); }

/* ---- users, typing, receipts, presence ---------------------------------------- */

static void t_signals(ctx *c) {
    node *a = &c->n[0], *b = &c->n[1];
    pl_bus_subscribe_user(b->bus, 42, 1);
    pl_bus_subscribe_conv(b->bus, 100, 1);
    WAIT_CHECK(c, b->nuser_ready == 1 && b->nconv_ready == 1, 5000);
    CHECK_EQ(b->user_ready[0], 42);

    pl_bus_publish_join(a->bus, 43, 100, 6);               /* b does not follow user 43 */
    pl_bus_publish_join(a->bus, 42, 100, 7);
    CHECK_EQ(a->njoin, 2);
    WAIT_CHECK(c, b->njoin == 1, 5000);
    CHECK(b->join[0].user == 42 && b->join[0].conv == 100 && b->join[0].seq == 7);
    pl_bus_publish_revoke(a->bus, 42, 555);
    CHECK_EQ(a->nrevoke, 1);
    WAIT_CHECK(c, b->nrevoke == 1, 5000);
    CHECK(b->revoke[0].user == 42 && b->revoke[0].login == 555);

    pl_bus_publish_erased(a->bus);                         /* every node, a first */
    CHECK_EQ(a->nerased, 1);
    WAIT_CHECK(c, b->nerased == 1, 5000);
    pump(c, 50);
    CHECK_EQ(a->nerased, 1);                               /* not its own twice */

    pl_bus_publish_typing(a->bus, 100, 42, 1);
    CHECK(a->ntyping == 1 && a->typing[0].origin == 1);
    pl_bus_publish_typing(a->bus, 100, 42, 0);
    WAIT_CHECK(c, b->ntyping == 2, 5000);
    CHECK(b->typing[0].conv == 100 && b->typing[0].user == 42 && b->typing[0].start == 1 &&
          b->typing[0].origin == 1);
    CHECK_EQ(b->typing[1].start, 0);

    pl_bus_receipt rc = {.conv = 100, .user = 42, .delivered = 9, .read = 8, .unread = 3, .members = 12,
                         .peer = 7, .unread_mentions = 1};
    pl_bus_publish_receipt(a->bus, &rc);
    CHECK_EQ(a->nreceipt, 1);
    WAIT_CHECK(c, b->nreceipt == 1, 5000);
    CHECK(memcmp(&b->receipt[0], &rc, sizeof rc) == 0);

    int64_t convs[3] = {100, 200, 300};
    pl_bus_presence p = {.user = 42, .node = 1, .status = 2, .last_active = pl_now_ms() - 5,
                         .expires = pl_now_ms() + 60000, .convs = convs, .nconvs = 3};
    pl_bus_publish_presence(a->bus, &p);
    CHECK_EQ(a->npres, 1);
    WAIT_CHECK(c, b->npres == 1, 5000);                    /* "p": no subscription needed */
    CHECK(b->pres[0].user == 42 && b->pres[0].node == 1 && b->pres[0].status == 2 &&
          b->pres[0].last_active == p.last_active && b->pres[0].expires == p.expires);
    CHECK_EQ(b->pres[0].nconvs, 3);
    CHECK(memcmp(b->pres[0].convs, convs, sizeof convs) == 0);
    pl_bus_presence q = {.user = 99, .node = 2, .status = 1, .expires = pl_now_ms() + 1000};
    pl_bus_publish_presence(b->bus, &q);                   /* round trip: a dropped its own */
    WAIT_CHECK(c, a->npres == 2, 5000);
    CHECK(a->pres[1].user == 99 && a->ntyping == 2 && a->nreceipt == 1 && a->njoin == 2 && a->nrevoke == 1);
}
TEST(bus_redis_signals) { run_bus_test(t_signals, 0, 1, 0, 1); }

/* ---- loss of one connection (Redis stays up) ---------------------------------- */

static void t_conn_loss(ctx *c) {
    node *a = &c->n[0], *b = &c->n[1];
    pl_bus_subscribe_conv(b->bus, 100, 1);
    pl_bus_subscribe_user(b->bus, 42, 1);
    WAIT_CHECK(c, b->nconv_ready == 1 && b->nuser_ready == 1, 5000);
    uint64_t fails0 = pl_m_bus_publish_failures.v, rec0 = pl_m_bus_reconnects.v;

    /* a's cmd connection dies under a publish: the event becomes a head */
    CHECK_EQ(kill_client(c->rs.port, "parley-n1-cmd"), 1);
    pl_event e3 = mk_event(100, 3);
    pl_bus_publish_event(a->bus, &e3, 9);
    CHECK_EQ(a->nev, 1);
    WAIT_CHECK(c, b->nhead == 1, 5000);
    CHECK(b->head[0].conv == 100 && b->head[0].seq == 3);
    CHECK_EQ(b->nev, 0);
    CHECK(pl_m_bus_publish_failures.v > fails0);
    WAIT_CHECK(c, last_ack(a) == 9, 5000);
    CHECK(pl_m_bus_reconnects.v > rec0);

    /* a join under the same loss is re-published */
    CHECK_EQ(kill_client(c->rs.port, "parley-n1-cmd"), 1);
    pl_bus_publish_join(a->bus, 42, 100, 4);
    WAIT_CHECK(c, b->njoin == 1, 5000);
    CHECK(b->join[0].user == 42 && b->join[0].seq == 4);
    /* and so is an erasure (audit L7: b would keep the erased text) */
    CHECK_EQ(kill_client(c->rs.port, "parley-n1-cmd"), 1);
    int erased0 = b->nerased;
    pl_bus_publish_erased(a->bus);
    WAIT_CHECK(c, b->nerased == erased0 + 1, 5000);
    CHECK(a->resyncs == 0 && b->resyncs == 0);             /* a cmd loss alone: no resync */

    /* b's sub dies: ready again for each, then one resync */
    CHECK_EQ(kill_client(c->rs.port, "parley-n2-sub"), 1);
    WAIT_CHECK(c, b->resyncs == 1, 5000);
    CHECK(b->nconv_ready == 2 && b->nuser_ready == 2 && b->ready_at_resync == 4);
    CHECK_EQ(a->resyncs, 0);
    CHECK(pl_bus_healthy(b->bus));
    pl_event e4 = mk_event(100, 4);
    pl_bus_publish_event(a->bus, &e4, 10);
    WAIT_CHECK(c, b->nev == 1, 5000);
    CHECK_EQ(b->ev[0].seq, 4);
    WAIT_CHECK(c, last_ack(a) == 10, 5000);
    pump(c, 100);
    CHECK_EQ(b->resyncs, 1);
}
TEST(bus_redis_conn_loss) { run_bus_test(t_conn_loss, 0, 1, 0, 1); }

/* ---- Redis killed and restarted ------------------------------------------------ */

static void t_restart(ctx *c) {
    node *a = &c->n[0], *b = &c->n[1];
    pl_bus_subscribe_conv(b->bus, 100, 1);
    pl_bus_subscribe_user(b->bus, 42, 1);
    pl_bus_subscribe_conv(a->bus, 100, 1);
    WAIT_CHECK(c, b->nconv_ready == 1 && b->nuser_ready == 1 && a->nconv_ready == 1, 5000);
    uint64_t rec0 = pl_m_bus_reconnects.v, fails0 = pl_m_bus_publish_failures.v;

    rs_kill(&c->rs, SIGKILL);
    WAIT_CHECK(c, !pl_bus_healthy(a->bus) && !pl_bus_healthy(b->bus), 5000);
    pl_event e9 = mk_event(100, 9);
    pl_bus_publish_event(a->bus, &e9, 5);                  /* Redis down */
    CHECK_EQ(a->nev, 1);
    CHECK_EQ(pl_m_bus_publish_failures.v, fails0 + 1);
    pl_bus_publish_typing(a->bus, 100, 42, 1);             /* best effort: dropped */
    pump(c, 300);                                          /* a few failed reconnects */
    CHECK(!pl_bus_healthy(a->bus));
    CHECK_EQ(a->nacked, 0);

    CHECK_EQ(rs_start(&c->rs), 1);                         /* same port */
    WAIT_CHECK(c, pl_bus_healthy(a->bus) && pl_bus_healthy(b->bus), 10000);
    WAIT_CHECK(c, a->resyncs == 1 && b->resyncs == 1, 5000);
    CHECK(b->nconv_ready == 2 && b->nuser_ready == 2 && b->ready_at_resync == 4);
    CHECK(a->nconv_ready == 2 && a->ready_at_resync == 2);
    CHECK(pl_m_bus_reconnects.v >= rec0 + 4);
    WAIT_CHECK(c, last_ack(a) == 5, 5000);                 /* its head was handed over */
    pl_event e10 = mk_event(100, 10);
    pl_bus_publish_event(a->bus, &e10, 6);
    WAIT_CHECK(c, b->nev == 1, 5000);
    CHECK_EQ(b->ev[0].seq, 10);
    WAIT_CHECK(c, last_ack(a) == 6, 5000);
}
TEST(bus_redis_restart) { run_bus_test(t_restart, 0, 1, 0, 1); }

/* ---- shared rate limits --------------------------------------------------------- */

static struct {
    int         answered, admitted, refused, inline_calls;
    const char *scope[32];
    int64_t     wait[32];
} R;
static int in_call;

static void rate_cb(void *arg, int64_t wait_ms, const char *scope) {
    int i = (int)(intptr_t)arg;
    if (in_call) R.inline_calls++;
    R.answered++;
    if (scope) R.refused++;
    else R.admitted++;
    if (i >= 0 && i < 32) R.scope[i] = scope, R.wait[i] = wait_ms;
}

static void take_ws(pl_bus *b, int64_t user, int64_t conv, int64_t ws, int i) {
    in_call = 1;
    pl_bus_rate_take(b, user, conv, ws, rate_cb, (void *)(intptr_t)i);
    in_call = 0;
}

static void take(pl_bus *b, int64_t user, int64_t conv, int i) { take_ws(b, user, conv, 0, i); }

static void t_rate(ctx *c) {
    node *a = &c->n[0], *b = &c->n[1];
    memset(&R, 0, sizeof R);
    for (int i = 0; i < 10; i++) take(i % 2 ? b->bus : a->bus, 77, 100 + i, i);
    CHECK_EQ(R.answered, 0);                               /* never inline */
    WAIT_CHECK(c, R.answered == 10, 5000);
    CHECK_EQ(R.inline_calls, 0);
    CHECK_EQ(R.admitted, 5);                               /* one user across two nodes */
    CHECK_EQ(R.refused, 5);
    for (int i = 0; i < 10; i++)
        if (R.scope[i]) CHECK(strcmp(R.scope[i], "user") == 0 && R.wait[i] > 0);
        else CHECK_EQ(R.wait[i], 0);

    memset(&R, 0, sizeof R);                               /* a conversation's bucket (3) */
    for (int i = 0; i < 5; i++) take(i % 2 ? b->bus : a->bus, 1000 + i, 900, i);
    WAIT_CHECK(c, R.answered == 5, 5000);
    CHECK(R.admitted == 3 && R.refused == 2);
    for (int i = 0; i < 5; i++)
        if (R.scope[i]) CHECK(strcmp(R.scope[i], "conversation") == 0 && R.wait[i] > 0);

    memset(&R, 0, sizeof R);                               /* a refusal takes nothing */
    take(a->bus, 77, 950, 0);
    WAIT_CHECK(c, R.answered == 1, 5000);
    CHECK(R.scope[0] && strcmp(R.scope[0], "user") == 0);
    for (int i = 1; i <= 3; i++) take(b->bus, 2000 + i, 950, i);
    WAIT_CHECK(c, R.answered == 4, 5000);
    CHECK_EQ(R.admitted, 3);

    redisContext *adm = admin(c->rs.port);                 /* script cache flushed: EVAL */
    CHECK(adm);
    freeReplyObject(redisCommand(adm, "SCRIPT FLUSH"));
    redisFree(adm);
    memset(&R, 0, sizeof R);
    take(a->bus, 77, 951, 0);
    take(b->bus, 3000, 952, 1);
    WAIT_CHECK(c, R.answered == 2, 5000);
    CHECK(R.scope[0] && strcmp(R.scope[0], "user") == 0 && !R.scope[1]);
    adm = admin(c->rs.port);
    CHECK(adm);
    redisReply *info = redisCommand(adm, "INFO errorstats");
    int noscript = info && info->type == REDIS_REPLY_STRING && strstr(info->str, "errorstat_NOSCRIPT:count=");
    if (info) freeReplyObject(info);
    redisFree(adm);
    CHECK(noscript);                                       /* the fallback did run */
    memset(&R, 0, sizeof R);                               /* and the SHA is loaded again */
    take(a->bus, 77, 953, 0);
    WAIT_CHECK(c, R.answered == 1, 5000);
    CHECK(R.scope[0] && strcmp(R.scope[0], "user") == 0);

    rs_kill(&c->rs, SIGKILL);                              /* fail open */
    WAIT_CHECK(c, !pl_bus_healthy(a->bus), 5000);
    memset(&R, 0, sizeof R);
    take(a->bus, 77, 100, 0);
    take(b->bus, 77, 100, 1);
    CHECK_EQ(R.answered, 0);
    WAIT_CHECK(c, R.answered == 2, 5000);
    CHECK(R.admitted == 2 && R.inline_calls == 0 && !R.scope[0] && R.wait[0] == 0);
}
TEST(bus_redis_rate) { run_bus_test(t_rate, 0.001, 5, 0.001, 3); }

static void t_rate_unlimited(ctx *c) {
    memset(&R, 0, sizeof R);
    for (int i = 0; i < 20; i++) take(c->n[0].bus, 5, 6, i);
    CHECK_EQ(R.answered, 0);                               /* answered without Redis, later */
    WAIT_CHECK(c, R.answered == 20, 5000);
    CHECK(R.admitted == 20 && R.inline_calls == 0);
}
TEST(bus_redis_rate_unlimited) { run_bus_test(t_rate_unlimited, 0, 0, 0, 0); }

/* The workspace bucket (burst 4): shared by the channels of one workspace
 * across nodes, checked after the user's and the conversation's; a send
 * with no workspace (a DM, a group) never touches it. */
static void t_rate_workspace(ctx *c) {
    node *a = &c->n[0], *b = &c->n[1];
    memset(&R, 0, sizeof R);
    for (int i = 0; i < 6; i++) take_ws(i % 2 ? b->bus : a->bus, 100 + i, 500 + i % 3, 7, i);
    CHECK_EQ(R.answered, 0);                               /* never inline */
    WAIT_CHECK(c, R.answered == 6, 5000);
    CHECK(R.admitted == 4 && R.refused == 2 && R.inline_calls == 0);
    for (int i = 0; i < 6; i++)
        if (R.scope[i]) CHECK(strcmp(R.scope[i], "workspace") == 0 && R.wait[i] > 0);

    memset(&R, 0, sizeof R);                               /* another workspace, no workspace */
    take_ws(a->bus, 200, 600, 8, 0);
    for (int i = 1; i <= 5; i++) take_ws(b->bus, 200 + i, 700 + i, 0, i);
    WAIT_CHECK(c, R.answered == 6, 5000);
    CHECK_EQ(R.admitted, 6);

    memset(&R, 0, sizeof R);                               /* user before workspace; nothing taken */
    take_ws(a->bus, 300, 800, 9, 0);
    WAIT_CHECK(c, R.answered == 1, 5000);
    take_ws(a->bus, 300, 801, 9, 1);                       /* user 300's burst is 1 (below) */
    WAIT_CHECK(c, R.answered == 2, 5000);
    CHECK(!R.scope[0] && R.scope[1] && strcmp(R.scope[1], "user") == 0);
    for (int i = 2; i < 5; i++) take_ws(b->bus, 300 + i, 800 + i, 9, i);
    WAIT_CHECK(c, R.answered == 5, 5000);
    CHECK_EQ(R.admitted, 4);                               /* 1 + 3: the refusal took nothing */

    redisContext *adm = admin(c->rs.port);                 /* the key's name and expiry */
    CHECK(adm);
    redisReply *r = adm ? redisCommand(adm, "PTTL t:rl:w:9") : NULL;
    CHECK(r && r->type == REDIS_REPLY_INTEGER && r->integer > 0);
    if (r) freeReplyObject(r);
    r = adm ? redisCommand(adm, "EXISTS t:rl:w:0") : NULL;
    CHECK(r && r->type == REDIS_REPLY_INTEGER && r->integer == 0);
    if (r) freeReplyObject(r);
    if (adm) redisFree(adm);
}
TEST(bus_redis_rate_workspace) {
    ws_rate = 0.001, ws_burst = 4;
    run_bus_test(t_rate_workspace, 0.001, 1, 0.001, 3);
    ws_rate = 0, ws_burst = 1;
}

/* ---- presence_get --------------------------------------------------------------- */

static struct {
    int             answered, inline_calls;
    size_t          n;
    pl_bus_presence v[8];
} P;

static void pres_cb(void *arg, const pl_bus_presence *views, size_t n) {
    (void)arg;
    if (in_call) P.inline_calls++;
    P.answered++;
    P.n = n;
    for (size_t i = 0; i < n && i < 8; i++) P.v[i] = views[i];
}

static void pget(pl_bus *b, const int64_t *users, size_t n) {
    memset(&P, 0, sizeof P);
    in_call = 1;
    pl_bus_presence_get(b, users, n, pres_cb, NULL);
    in_call = 0;
}

static void t_presence(ctx *c) {
    node *a = &c->n[0], *b = &c->n[1];
    int64_t now = pl_now_ms(), cv[1] = {100};
    pl_bus_presence pa = {.user = 42, .node = 1, .status = 2, .last_active = now - 10, .expires = now + 60000,
                          .convs = cv, .nconvs = 1};
    pl_bus_presence pb = {.user = 42, .node = 2, .status = 1, .last_active = now - 20, .expires = now + 30000};
    pl_bus_presence pe = {.user = 43, .node = 2, .status = 2, .last_active = now - 5000, .expires = now - 1000};
    pl_bus_publish_presence(a->bus, &pa);
    pl_bus_publish_presence(b->bus, &pb);
    pl_bus_publish_presence(b->bus, &pe);
    WAIT_CHECK(c, a->npres == 3 && b->npres == 3, 5000);   /* each heard the other's */
    CHECK(a->pres[1].node == 2 && a->pres[1].nconvs == 0 && b->pres[2].node == 1 && b->pres[2].nconvs == 1);

    int64_t users[3] = {42, 43, 44};
    for (int tries = 0; tries < 50; tries++) {             /* b's stores travel on b's connection */
        pget(a->bus, users, 3);
        CHECK_EQ(P.answered, 0);
        WAIT_CHECK(c, P.answered == 1, 5000);
        if (P.n == 2) break;
        pump(c, 20);
    }
    CHECK_EQ(P.n, 2);
    CHECK_EQ(P.inline_calls, 0);
    int seen = 0;
    for (size_t i = 0; i < 2; i++) {
        const pl_bus_presence *v = &P.v[i];
        CHECK(v->user == 42 && v->convs == NULL && v->nconvs == 0);
        if (v->node == 1) CHECK(v->status == 2 && v->expires == pa.expires && v->last_active == pa.last_active);
        else CHECK(v->node == 2 && v->status == 1 && v->expires == pb.expires);
        seen |= 1 << v->node;
    }
    CHECK_EQ(seen, 6);
    CHECK(admin_int(c->rs.port, "PTTL", "t:pr:42") > 100000);   /* b did not shorten a's */
    CHECK(admin_int(c->rs.port, "PTTL", "t:pr:43") > 0);
    pget(b->bus, users + 1, 1);                            /* only an expired view */
    WAIT_CHECK(c, P.answered == 1, 5000);
    CHECK_EQ(P.n, 0);
    pget(b->bus, users, 0);
    WAIT_CHECK(c, P.answered == 1, 5000);
    CHECK_EQ(P.n, 0);

    rs_kill(&c->rs, SIGKILL);
    WAIT_CHECK(c, !pl_bus_healthy(a->bus), 5000);
    pget(a->bus, users, 3);
    CHECK_EQ(P.answered, 0);
    WAIT_CHECK(c, P.answered == 1, 5000);
    CHECK(P.n == 0 && P.inline_calls == 0);
}
TEST(bus_redis_presence) { run_bus_test(t_presence, 0, 1, 0, 1); }

/* Every node beats on "p" each second; one that has heard none from a node
 * for 3 s, while its own come back, takes it for gone (node_gone: a node
 * killed without closing; audit T). Never while it cannot tell: not
 * subscribed long enough, or Redis gone. */
static void t_node_gone(ctx *c) {
    node *a = &c->n[0], *b = &c->n[1];
    CHECK(!pl_bus_node_gone(a->bus, 2) && !pl_bus_node_gone(a->bus, 7));   /* too early to tell */
    pump(c, 3600);
    CHECK(!pl_bus_node_gone(a->bus, 2));                  /* b beats */
    CHECK(!pl_bus_node_gone(b->bus, 1));
    CHECK(!pl_bus_node_gone(a->bus, 1));                  /* itself */
    CHECK(pl_bus_node_gone(a->bus, 7));                   /* never heard of */
    CHECK(!pl_bus_node_gone(a->bus, -1) && !pl_bus_node_gone(a->bus, 5000));
    /* any message of a node says it is alive, not only a beat: a node just
     * started publishes a presence view before its first beat (audit X4:
     * its first user was announced online late) */
    pl_sbuf s;
    pl_sbuf_init(&s);
    pl_bus_presence v = {.user = 5, .node = 7, .status = 2, .last_active = 1, .expires = pl_now_ms() + 60000};
    pl_bus__enc_presence(&s, 7, &v);
    CHECK_EQ(admin_publish(c->rs.port, "t:p", s.p, s.len), 0);
    pl_sbuf_release(&s);
    WAIT_CHECK(c, !pl_bus_node_gone(a->bus, 7), 2000);
    pl_bus_close(&b->bus);                                /* no goodbye: as a kill */
    pump(c, 1500);
    CHECK(!pl_bus_node_gone(a->bus, 2));
    WAIT_CHECK(c, pl_bus_node_gone(a->bus, 2), 4000);
    rs_kill(&c->rs, SIGKILL);                             /* a cannot tell any more */
    WAIT_CHECK(c, !pl_bus_healthy(a->bus), 5000);
    CHECK(!pl_bus_node_gone(a->bus, 2) && !pl_bus_node_gone(a->bus, 7));
}
TEST(bus_redis_node_gone) { run_bus_test(t_node_gone, 0, 1, 0, 1); }

/* ---- close, malformed input, many channels ----------------------------------- */

static void t_close(ctx *c) {
    node *a = &c->n[0], *b = &c->n[1];
    int64_t users[1] = {42};
    memset(&R, 0, sizeof R);
    take(a->bus, 1, 1, 0);
    pget(a->bus, users, 1);
    pl_bus_subscribe_conv(a->bus, 100, 1);
    pl_event e = mk_event(100, 1);
    pl_bus_publish_event(a->bus, &e, 1);
    CHECK(R.answered == 0 && P.answered == 0);
    pl_bus_close(&a->bus);                                 /* answers both, inside close */
    CHECK(a->bus == NULL);
    CHECK(R.answered == 1 && R.admitted == 1 && P.answered == 1 && P.n == 0);
    pump(c, 100);
    CHECK(R.answered == 1 && P.answered == 1);
    CHECK_EQ(a->nacked, 0);                                /* nothing after close */

    /* b closes with a pending head and a dead cmd connection */
    pl_bus_subscribe_conv(b->bus, 100, 1);
    CHECK_EQ(kill_client(c->rs.port, "parley-n2-cmd"), 1);
    pl_bus_publish_event(b->bus, &e, 2);
    pump(c, 20);
    pl_bus_close(&b->bus);
}
TEST(bus_redis_close) { run_bus_test(t_close, 0.001, 5, 0, 1); }

static void t_malformed(ctx *c) {
    node *a = &c->n[0], *b = &c->n[1];
    pl_bus_subscribe_conv(b->bus, 100, 1);
    WAIT_CHECK(c, b->nconv_ready == 1, 5000);
    static const char *junk[] = {"garbage", "E1|1|1", "", "H1|100|5", "H2|100|5.", "\xff\xfe\x00\x01",
                                 "E1|100|1|1|1|2|1|0|~|999999:ab|~.", "P1|1|1|1|1|99999999|"};
    for (size_t i = 0; i < sizeof junk / sizeof junk[0]; i++)
        CHECK_EQ(admin_publish(c->rs.port, "t:c:100", junk[i], i == 5 ? 4 : strlen(junk[i])), 0);
    pl_bus_publish_head(a->bus, 100, 7);
    WAIT_CHECK(c, b->nhead >= 1, 5000);
    CHECK(b->nhead == 1 && b->head[0].seq == 7 && b->nev == 0);  /* "H2|100|5." is b's own id */
    CHECK(pl_bus_healthy(b->bus));
}
TEST(bus_redis_malformed) { run_bus_test(t_malformed, 0, 1, 0, 1); }

static void t_many(ctx *c) {
    node *a = &c->n[0], *b = &c->n[1];
    enum { N = 2500 };
    for (int i = 1; i <= N; i++) pl_bus_subscribe_conv(b->bus, i, 1);
    WAIT_CHECK(c, b->nconv_ready == N, 10000);
    CHECK_EQ(kill_client(c->rs.port, "parley-n2-sub"), 1);
    WAIT_CHECK(c, b->resyncs == 1, 10000);
    CHECK_EQ(b->nconv_ready, 2 * N);
    CHECK_EQ(b->ready_at_resync, 2 * N);
    for (int i = 1; i <= N; i += 499) pl_bus_publish_head(a->bus, i, 1);
    WAIT_CHECK(c, b->nhead == 6, 5000);
    for (int i = 1; i <= N; i++) pl_bus_subscribe_conv(b->bus, i, 0);
    pl_bus_subscribe_conv(b->bus, N + 1, 1);
    WAIT_CHECK(c, b->nconv_ready == 2 * N + 1, 5000);
    pl_bus_publish_head(a->bus, 1, 2);
    pl_bus_publish_head(a->bus, N + 1, 1);
    WAIT_CHECK(c, b->nhead == 7, 5000);
    CHECK_EQ(b->head[6].conv, N + 1);
}
TEST(bus_redis_many_channels) { run_bus_test(t_many, 0, 1, 0, 1); }

/* Closing from inside callbacks: the bus is freed only once the loop has
 * closed its handles; nothing runs after close returns. */
static pl_bus *close_me;
static void rate_close_cb(void *arg, int64_t wait_ms, const char *scope) {
    rate_cb(arg, wait_ms, scope);
    pl_bus_close(&close_me);
}

static void t_close_inside(ctx *c) {
    node *a = &c->n[0], *b = &c->n[1];
    /* b closes in its event handler (inside a hiredis reply on sub) */
    pl_bus_subscribe_conv(b->bus, 100, 1);
    WAIT_CHECK(c, b->nconv_ready == 1, 5000);
    b->close_on = CLOSE_ON_EVENT;
    pl_event e = mk_event(100, 1);
    pl_bus_publish_event(a->bus, &e, 0);
    pl_bus_publish_event(a->bus, &e, 0);                   /* a second one, in the same read */
    WAIT_CHECK(c, b->bus == NULL, 5000);
    pump(c, 50);
    CHECK_EQ(b->nev, 1);
    /* a closes in outbox_acked (inside a hiredis reply on cmd) */
    a->close_on = CLOSE_ON_ACK;
    pl_bus_publish_event(a->bus, &e, 1);
    pl_bus_publish_event(a->bus, &e, 2);
    WAIT_CHECK(c, a->bus == NULL, 5000);
    pump(c, 50);
    CHECK_EQ(a->nacked, 1);

    /* new buses on the same loop: close in conv_ready, and in a rate answer */
    a->close_on = b->close_on = 0;
    node_reset(a);
    node_reset(b);
    a->bus = node_bus(c, 0, 0.001, 5, 0, 1);
    b->bus = node_bus(c, 1, 0, 1, 0, 1);
    CHECK(a->bus && b->bus);
    WAIT_CHECK(c, pl_bus_healthy(a->bus) && pl_bus_healthy(b->bus), 5000);
    b->close_on = CLOSE_ON_READY;
    pl_bus_subscribe_conv(b->bus, 1, 1);
    pl_bus_subscribe_conv(b->bus, 2, 1);
    WAIT_CHECK(c, b->bus == NULL, 5000);
    CHECK_EQ(b->nconv_ready, 1);
    memset(&R, 0, sizeof R);
    close_me = a->bus;
    a->bus = NULL;
    pl_bus_rate_take(close_me, 1, 1, 0, rate_close_cb, (void *)0);
    pl_bus_rate_take(close_me, 1, 1, 0, rate_cb, (void *)1);
    WAIT_CHECK(c, close_me == NULL, 5000);
    CHECK_EQ(R.answered, 2);                               /* the second: answered by close */
    pump(c, 50);
    CHECK_EQ(R.answered, 2);
}
TEST(bus_redis_close_inside) { run_bus_test(t_close_inside, 0, 1, 0, 1); }

/* Redis hung (SIGSTOP): requests are answered anyway, then all recovers */
static void t_hung(ctx *c) {
    node *a = &c->n[0], *b = &c->n[1];
    pl_bus_subscribe_conv(b->bus, 100, 1);
    WAIT_CHECK(c, b->nconv_ready == 1, 5000);
    CHECK(pl_bus_healthy(a->bus) && pl_bus_healthy(b->bus));
    kill(c->rs.pid, SIGSTOP);
    memset(&R, 0, sizeof R);
    int64_t t0 = pl_mono_ms(), users[1] = {42};
    take(a->bus, 77, 100, 0);
    pget(a->bus, users, 1);
    pl_event e = mk_event(100, 1);
    pl_bus_publish_event(a->bus, &e, 1);
    WAIT(c, R.answered == 1 && P.answered == 1, 5000);
    int64_t took = pl_mono_ms() - t0;
    /* connected, but answering nothing: not healthy (/readyz 503) within
     * a few seconds (audit C2: it stayed healthy while nothing crossed) */
    WAIT_CHECK(c, !pl_bus_healthy(a->bus) && !pl_bus_healthy(b->bus), 5000);
    kill(c->rs.pid, SIGCONT);
    CHECK(R.answered == 1 && R.admitted == 1);             /* fail open after ~1 s */
    CHECK(P.answered == 1 && P.n == 0);
    CHECK(took < 3500);
    WAIT_CHECK(c, b->nev == 1, 5000);                      /* delivered once Redis runs again */
    WAIT_CHECK(c, last_ack(a) == 1, 5000);
    pump(c, 100);
    CHECK_EQ(R.answered, 1);                               /* the late reply is ignored */
    WAIT_CHECK(c, pl_bus_healthy(a->bus) && pl_bus_healthy(b->bus), 5000);
}
TEST(bus_redis_hung) { run_bus_test(t_hung, 0.001, 5, 0, 1); }

/* A drain with Redis hung (audit N6): rate_answer_now answers the waiting
 * rate takes at once, inline and admitted, and only them; a take after
 * it waits as usual; the late replies are ignored. */
static void t_rate_answer_now(ctx *c) {
    node *a = &c->n[0];
    CHECK(pl_bus_healthy(a->bus));
    kill(c->rs.pid, SIGSTOP);
    memset(&R, 0, sizeof R);
    memset(&P, 0, sizeof P);
    int64_t users[1] = {42};
    take(a->bus, 77, 100, 0);
    take(a->bus, 78, 101, 1);
    pget(a->bus, users, 1);
    pump(c, 50);
    CHECK_EQ(R.answered, 0);                               /* still waiting on Redis */
    pl_bus_rate_answer_now(a->bus);
    CHECK_EQ(R.answered, 2);                               /* now, inline */
    CHECK_EQ(R.admitted, 2);
    CHECK_EQ(P.answered, 0);                               /* presence is left alone */
    take(a->bus, 79, 102, 2);
    pump(c, 50);
    CHECK_EQ(R.answered, 2);                               /* a later take waits as before */
    WAIT(c, R.answered == 3 && P.answered == 1, 5000);
    kill(c->rs.pid, SIGCONT);
    CHECK_EQ(R.admitted, 3);
    WAIT_CHECK(c, pl_bus_healthy(a->bus), 5000);
    pump(c, 100);
    CHECK_EQ(R.answered, 3);                               /* the late replies are ignored */
}
TEST(bus_redis_rate_answer_now) { run_bus_test(t_rate_answer_now, 0.001, 5, 0, 1); }

/* AUTH and SELECT from the URL, a host name resolved off the loop (every
 * address tried: localhost may say ::1 first); a wrong password never
 * becomes healthy */
static void t_auth(ctx *c, const char *url_fmt, int want_healthy) {
    char url[96], err[256];
    snprintf(url, sizeof url, url_fmt, c->rs.port);
    pl_bus_handlers h = {.event = h_event, .ud = &c->n[0]};
    pl_bus_redis_opts o = {.url = url, .node = 1, .prefix = "t:", .user_rate = 0.001, .user_burst = 1};
    c->n[0].bus = pl_bus_redis_new(&c->loop, &o, &h, err, sizeof err);
    CHECK(c->n[0].bus);
    if (!want_healthy) {
        pump(c, 500);
        CHECK(!pl_bus_healthy(c->n[0].bus));
        return;
    }
    WAIT_CHECK(c, pl_bus_healthy(c->n[0].bus), 5000);
    memset(&R, 0, sizeof R);
    take(c->n[0].bus, 5, 6, 0);
    take(c->n[0].bus, 5, 6, 1);
    WAIT_CHECK(c, R.answered == 2, 5000);
    CHECK(R.admitted == 1 && R.refused == 1);                /* the script ran */
    redisContext *adm = admin(c->rs.port);
    CHECK(adm);
    redisReply *r1 = redisCommand(adm, "AUTH %s", c->rs.pass);
    redisReply *r2 = redisCommand(adm, "SELECT 3");
    redisReply *r3 = redisCommand(adm, "EXISTS t:rl:u:5");
    int ok = r3 && r3->type == REDIS_REPLY_INTEGER && r3->integer == 1;
    freeReplyObject(r1);
    freeReplyObject(r2);
    if (r3) freeReplyObject(r3);
    redisFree(adm);
    CHECK(ok);                                               /* in db 3 */
}

TEST(bus_redis_auth_db) {
    for (int pass = 0; pass < 2; pass++) {
        static ctx c;
        memset(&c, 0, sizeof c);
        snprintf(c.rs.pass, sizeof c.rs.pass, "s3cret");
        c.log_level = pl_log_level;
        if (!getenv("PARLEY_TEST_LOG")) pl_log_level = PL_LOG_ERROR + 1;   /* the refusal is logged */
        signal(SIGPIPE, SIG_IGN);
        int rc = rs_start(&c.rs);
        if (rc == 0) {
            printf("  skip: redis-server not found\n");
            pl_log_level = c.log_level;
            return;
        }
        uv_loop_init(&c.loop);
        uv_timer_init(&c.loop, &c.pulse);
        uv_timer_start(&c.pulse, pulse_cb, 5, 5);
        if (rc < 0) pl_test_failed = 1;
        else t_auth(&c, pass ? "redis://:wrong@127.0.0.1:%d/3" : "redis://:s3cret@localhost:%d/3", !pass);
        ctx_stop(&c);
        if (pl_test_failed) return;
    }
}

/* No Redis at all (a name that does not resolve; a local port that accepts
 * and never answers): never healthy, requests answered (fail open),
 * publishes kept as pending heads, close clean. Needs no redis-server. */
TEST(bus_redis_unreachable) {
    static ctx c;
    memset(&c, 0, sizeof c);
    c.log_level = pl_log_level;
    if (!getenv("PARLEY_TEST_LOG")) pl_log_level = PL_LOG_ERROR;
    uv_loop_init(&c.loop);
    uv_timer_init(&c.loop, &c.pulse);
    uv_timer_start(&c.pulse, pulse_cb, 5, 5);
    int silent = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t slen = sizeof sa;
    CHECK(silent >= 0 && bind(silent, (struct sockaddr *)&sa, sizeof sa) == 0 && listen(silent, 8) == 0 &&
          getsockname(silent, (struct sockaddr *)&sa, &slen) == 0);
    char url2[64];
    snprintf(url2, sizeof url2, "redis://127.0.0.1:%d", ntohs(sa.sin_port));
    const char *urls[2] = {"redis://no-such-host.invalid:6379", url2};
    pl_bus_handlers h = {.event = h_event, .outbox_acked = h_acked};
    for (int i = 0; i < 2; i++) {
        char err[256];
        h.ud = &c.n[i];
        pl_bus_redis_opts o = {.url = urls[i], .node = i + 1, .prefix = "t:", .user_rate = 1, .user_burst = 1};
        c.n[i].bus = pl_bus_redis_new(&c.loop, &o, &h, err, sizeof err);
    }
    if (c.n[0].bus && c.n[1].bus) {
        pump(&c, 1200);                                  /* a few attempts */
        memset(&R, 0, sizeof R);
        int64_t users[1] = {1};
        take(c.n[1].bus, 1, 1, 0);
        pget(c.n[1].bus, users, 1);
        pl_event e = mk_event(5, 1);
        pl_bus_publish_event(c.n[1].bus, &e, 1);
        WAIT(&c, R.answered == 1 && P.answered == 1, 3000);
    }
    int ok = c.n[0].bus && c.n[1].bus && !pl_bus_healthy(c.n[0].bus) && !pl_bus_healthy(c.n[1].bus) &&
             R.answered == 1 && R.admitted == 1 && P.answered == 1 && P.n == 0 && c.n[1].nev == 1 &&
             c.n[1].nacked == 0;
    for (int i = 0; i < 2; i++) {
        pl_bus_close(&c.n[i].bus);
        node_reset(&c.n[i]);
    }
    uv_close((uv_handle_t *)&c.pulse, NULL);
    int64_t end = pl_mono_ms() + 5000;
    while (uv_run(&c.loop, UV_RUN_NOWAIT) && pl_mono_ms() < end) usleep(1000);
    int closed = uv_loop_close(&c.loop) == 0;
    close(silent);
    pl_log_level = c.log_level;
    CHECK(ok);
    CHECK(closed);
}
