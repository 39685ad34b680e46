/* test_deliver.c — the delivery state machine (chat/) with a fake store and
 * fake connections: deterministic, no sockets, no timing.
 *
 * The fake store queues every job; a test inspects what chat/ asked for
 * (which read, with which bounds) and completes jobs itself with the
 * results it wants, in the order it wants: exactly the interleavings that
 * are rare over real sockets (a removal arriving while a replay read is in
 * flight, a read completing after shutdown). The fake connections record
 * every frame chat/ queues and the close code; a test can mark a queue full
 * (high) or drain it. The bus is the real local bus, or (for cluster-mode
 * behaviour) the same with shared = 1.
 */
#include "test.h"

#include <arpa/inet.h>
#include <jansson.h>
#include <netinet/in.h>
#include <poll.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include "app/api_int.h"
#include "chat/auth.h"
#include "chat/chat_int.h"
#include "chat/deliver_int.h"
#include "core/alloc.h"
#include "core/clock.h"
#include "core/metrics.h"
#include "ws/wsconn.h"

/* ---- fake connections ------------------------------------------------------ */

#define FRAMES_MAX 4096

typedef struct fconn {
    pl_conn   c;                   /* first: chat/ sees a pl_conn            */
    char     *frames[FRAMES_MAX];  /* payloads of the text frames queued     */
    size_t    nframes;
    int       close_code;          /* 0 while open                           */
    int       paused;
    int       shut;                /* SSE: the stream was ended              */
    int       sse;                 /* an SSE session: raw keeps the bytes    */
    pl_rbuf  *part;                /* the buffer of the last range queued (a
                                      reference, as a real queue holds)     */
    size_t    part_off, part_end;  /* ... and that range                     */
    int       adjacent;            /* ranges that followed the last one      */
    int       corked;              /* CO.cork without CO.uncork since        */
    int       corks;               /* CO.cork calls                          */
    size_t    corked_at;           /* frames queued when it was corked       */
    pl_sbuf   raw;
} fconn;

static char *frame_payload_at(const uint8_t *d) {
    size_t len = d[1] & 0x7f, off = 2;
    if (len == 126) { len = (size_t)d[2] << 8 | d[3]; off = 4; }
    else if (len == 127) {
        len = 0;
        for (int i = 0; i < 8; i++) len = len << 8 | d[2 + i];
        off = 10;
    }
    char *p = malloc(len + 1);
    memcpy(p, d + off, len);
    p[len] = '\0';
    return p;
}

static char *frame_payload(const pl_rbuf *b) { return frame_payload_at(b->data); }

static void f_send(pl_conn *c, pl_rbuf *b) {
    fconn *f = (fconn *)c;
    if (f->sse) pl_sbuf_add(&f->raw, b->data, b->len);
    else if (f->nframes < FRAMES_MAX) f->frames[f->nframes++] = frame_payload(b);
    c->qbytes += b->len;
}
/* An arena range (deliver.c): exactly one frame, never for SSE. */
static void f_send_part(pl_conn *c, pl_rbuf *b, size_t off, size_t n) {
    fconn *f = (fconn *)c;
    CHECK(!f->sse);
    CHECK(off + n <= b->len);
    if (f->nframes < FRAMES_MAX) f->frames[f->nframes++] = frame_payload_at(b->data + off);
    c->qbytes += n;
    if (f->part == b && f->part_end == off) f->adjacent++;
    pl_rbuf_unref(&f->part);
    f->part = pl_rbuf_ref(b);
    f->part_off = off;
    f->part_end = off + n;
}
static void f_send_copy(pl_conn *c, const void *p, size_t n) {
    fconn *f = (fconn *)c;
    if (f->sse) pl_sbuf_add(&f->raw, p, n);
    c->qbytes += n;
}
static void f_close(pl_conn *c, int code, const char *reason) {
    fconn *f = (fconn *)c;
    if (c->ws_state != PL_WSS_OPEN) return;
    f->close_code = code;
    c->ws_state = PL_WSS_CLOSE_SENT;
}
static void f_pause(pl_conn *c) { ((fconn *)c)->paused = 1; }
static void f_resume(pl_conn *c) { ((fconn *)c)->paused = 0; }
static void f_ref(pl_conn *c) { c->refs++; }
static void f_unref(pl_conn *c) { c->refs--; }
static void f_shut(pl_conn *c) { ((fconn *)c)->shut = 1; }
static void f_cork(pl_conn *c) {
    fconn *f = (fconn *)c;
    CHECK(!f->corked);                   /* corked once per resume */
    f->corked = 1;
    f->corks++;
    f->corked_at = f->nframes;
}
static void f_uncork(pl_conn *c) { ((fconn *)c)->corked = 0; }

static const pl_chat_conn_ops fake_ops = {f_send, f_send_copy, f_close, f_pause, f_resume, f_ref, f_unref, f_shut,
                                          f_send_part, f_cork, f_uncork, NULL, NULL};

static fconn *fconn_new(void) {
    fconn *f = calloc(1, sizeof *f);
    f->c.mode = PL_CONN_WS;
    f->c.ws_state = PL_WSS_OPEN;
    f->c.refs = 1;
    f->c.last_rx = (uint32_t)pl_mono_ms();
    return f;
}

static void fconn_free(fconn *f) {
    pl_rbuf_unref(&f->part);
    pl_sbuf_release(&f->raw);
    for (size_t i = 0; i < f->nframes; i++) free(f->frames[i]);
    free(f);
}

/* Frames of a type (NULL: any) since index *from; parsed, caller decrefs. */
static json_t *next_frame(fconn *f, size_t *from, const char *type) {
    while (*from < f->nframes) {
        json_t *o = json_loads(f->frames[(*from)++], 0, NULL);
        if (o && (!type || strcmp(json_string_value(json_object_get(o, "type")), type) == 0)) return o;
        json_decref(o);
    }
    return NULL;
}

/* The seqs of the events of conv this connection got, in order. */
static size_t event_seqs(fconn *f, int64_t conv, int64_t *out, size_t max) {
    size_t n = 0, at = 0;
    json_t *o;
    while ((o = next_frame(f, &at, "event")) != NULL) {
        if (json_integer_value(json_object_get(o, "conversation")) == conv && n < max)
            out[n++] = json_integer_value(json_object_get(o, "seq"));
        json_decref(o);
    }
    return n;
}

static int has_frame(fconn *f, const char *type) {
    size_t at = 0;
    json_t *o = next_frame(f, &at, type);
    json_decref(o);
    return o != NULL;
}

/* ---- fake store ---------------------------------------------------------------- */

#define JOBS_MAX 16384          /* a session coming online also queues a LAST_SEEN */

typedef struct fstore {
    pl_store base;
    pl_job  *q[JOBS_MAX];
    size_t   n;
    size_t   submitted;           /* in total                                 */
} fstore;

static void fs_submit(pl_store *s, pl_job *j) {
    fstore *f = (fstore *)s;
    if (f->n == JOBS_MAX) {                      /* a test's bug: say so, not UB */
        fprintf(stderr, "fake store: more than %d jobs queued\n", JOBS_MAX);
        abort();
    }
    f->q[f->n++] = j;
    f->submitted++;
}
static void fs_drain(pl_store *s) {}
static int  fs_healthy(pl_store *s) { return 1; }
static void fs_close(pl_store *s) {}
static const pl_store_ops fs_ops = {"fake", fs_submit, fs_drain, fs_healthy, NULL, fs_close};

/* Takes the first queued job of op (and conv, if non-zero) out of the queue. */
static pl_job *fs_take(fstore *f, int op, int64_t conv) {
    for (size_t i = 0; i < f->n; i++)
        if ((int)f->q[i]->op == op && (!conv || f->q[i]->conv == conv)) {
            pl_job *j = f->q[i];
            memmove(&f->q[i], &f->q[i + 1], (f->n - i - 1) * sizeof *f->q);
            f->n--;
            return j;
        }
    return NULL;
}

static size_t fs_count(fstore *f, int op) {
    size_t k = 0;
    for (size_t i = 0; i < f->n; i++) k += (int)f->q[i]->op == op;
    return k;
}

/* Completes every queued job of op with a plain success (no outputs). */
static void fs_ok_all(fstore *f, int op) {
    pl_job *j;
    while ((j = fs_take(f, op, 0)) != NULL) {
        if (op == PL_READ_CONV_HEADS && j->nids && !j->heads)   /* heads 0: nothing new */
            j->heads = pl_calloc(j->nids, sizeof *j->heads);
        j->result = PL_STORE_OK;
        j->done(j);
    }
}

/* Completes every queued job (shutdown: the store fails what is left). */
static void fs_fail_all(fstore *f) {
    while (f->n) {
        pl_job *j = f->q[0];
        memmove(&f->q[0], &f->q[1], (f->n - 1) * sizeof *f->q);
        f->n--;
        j->result = PL_STORE_EUNAVAIL;
        j->done(j);
    }
}

/* The event the fake log holds at seq (bodies "m<seq>", or big ones). */
static size_t big_body;            /* 0: small bodies                          */

static void make_event(pl_event *e, int64_t conv, int64_t seq, int kind, int64_t sender, int64_t subject) {
    memset(e, 0, sizeof *e);
    e->conv = conv;
    e->seq = seq;
    e->id = (uint64_t)(1000 + seq);
    e->ts = 1700000000000LL + seq;
    e->kind = kind;
    e->sender = sender;
    e->subject = subject;
    if (kind == PL_EV_MESSAGE) {
        char cm[32];
        snprintf(cm, sizeof cm, "c%lld", (long long)seq);
        e->client_msg_id = pl_strdup(cm);
        if (big_body) {
            e->body = pl_malloc(big_body + 1);
            memset(e->body, 0x01, big_body);
            e->body[big_body] = '\0';
            e->body_len = big_body;
        } else {
            char b[32];
            e->body_len = (size_t)snprintf(b, sizeof b, "m%lld", (long long)seq);
            e->body = pl_strdup(b);
        }
    } else if (kind != PL_EV_CREATED) {
        char d[48];
        snprintf(d, sizeof d, "{\"user\":%lld}", (long long)subject);
        e->data = pl_strdup(d);
    } else {
        e->data = pl_strdup("{\"kind\":\"group\",\"title\":\"t\",\"members\":[]}");
    }
}

/* Kind of each seq in the fake log of a test (default: messages by user 1). */
static int log_kind[512];
static int64_t log_subject[512];

/* Answers a READ_EVENTS job from the fake log: seqs after..before-1, at most
 * limit, up to `have` (what the log holds). */
static void fs_answer_events(pl_job *j, int64_t have) {
    int64_t lo = j->after + 1, hi = j->before > 0 ? j->before - 1 : have;
    if (hi > have) hi = have;
    size_t n = hi >= lo ? (size_t)(hi - lo + 1) : 0;
    if (n > (size_t)j->limit) {
        n = (size_t)j->limit;
        j->more = 1;
    }
    j->events = n ? pl_calloc(n, sizeof *j->events) : NULL;
    for (size_t i = 0; i < n; i++) {
        int64_t seq = lo + (int64_t)i;
        int k = seq < 512 && log_kind[seq] ? log_kind[seq] : PL_EV_MESSAGE;
        make_event(&j->events[i], j->conv, seq, k, 1, seq < 512 ? log_subject[seq] : 0);
    }
    j->nevents = n;
    j->result = PL_STORE_OK;
    j->done(j);
}

/* ---- the harness ------------------------------------------------------------------ */

typedef struct harness {
    uv_loop_t  loop;
    fstore     store;
    pl_bus    *bus;
    pl_config  cfg;
} harness;

static harness H;
static int64_t session_members;   /* member_count the session read says (0: 2) */
/* The session read says conversation c (< 64) is a channel of
 * channel_ws[c] when that is non-zero (h_start clears it). */
static int64_t channel_ws[64];

static void turn(void) {
    for (int i = 0; i < 4; i++) uv_run(&H.loop, UV_RUN_NOWAIT);
}

static void h_start(int shared) {
    memset(&H, 0, sizeof H);
    memset(log_kind, 0, sizeof log_kind);
    memset(log_subject, 0, sizeof log_subject);
    big_body = 0;
    session_members = 0;
    memset(channel_ws, 0, sizeof channel_ws);
    uv_loop_init(&H.loop);
    H.store.base.ops = &fs_ops;
    H.store.base.node_id = 1;
    pl_config *c = &H.cfg;
    c->max_body = 16384;
    c->auth_timeout = 10;
    c->presence_timeout = 60;
    c->presence_coalesce = 1000;
    c->typing_ttl = 5000;
    c->receipt_fanout_max = 100;
    c->max_outbound = 1048576;
    c->ping_interval = 30;
    c->idle_timeout = 75;
    c->slow_timeout = 30;
    if (sodium_init() < 0) abort();
    uint8_t key[32] = {1, 2, 3};
    pl_auth_set_key(key);
    pl_chat_init(&H.loop, &H.store.base, c, NULL);
    pl_chat_set_conn_ops(&fake_ops);
    pl_bus_handlers bh;
    pl_chat_bus_handlers(&bh);
    H.bus = pl_bus_local_new(&bh, 1);
    H.bus->shared = shared;
    pl_chat_set_bus(H.bus);
}

static void h_stop(fconn **conns, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (conns[i]) {
            conns[i]->c.closing = 1;
            pl_chat_conn_closed(&conns[i]->c);
        }
    pl_chat_shutdown();
    fs_fail_all(&H.store);
    turn();
    pl_chat_free();
    pl_bus_close(&H.bus);
    uv_run(&H.loop, UV_RUN_DEFAULT);
    uv_loop_close(&H.loop);
    for (size_t i = 0; i < n; i++)
        if (conns[i]) fconn_free(conns[i]);
}

typedef struct conv_spec {
    int64_t id, last_seq, joined_seq;
} conv_spec;


/* Answers the session read an authentication asked for: user's login, a
 * member of convs (groups). -1 when no read was asked for. */
static int h_answer_session(int64_t user, int64_t login, const conv_spec *convs, size_t n) {
    pl_job *j = fs_take(&H.store, PL_READ_SESSION, 0);
    if (!j) return -1;
    j->login_out.id = login;
    j->login_out.user = user;
    j->user_out.id = user;
    snprintf(j->user_out.username, sizeof j->user_out.username, "u%lld", (long long)user);
    j->convs = n ? pl_calloc(n, sizeof *j->convs) : NULL;
    for (size_t i = 0; i < n; i++) {
        j->convs[i].id = convs[i].id;
        j->convs[i].last_seq = convs[i].last_seq;
        j->convs[i].joined_seq = convs[i].joined_seq ? convs[i].joined_seq : 1;
        int64_t ws = convs[i].id >= 0 && convs[i].id < 64 ? channel_ws[convs[i].id] : 0;
        j->convs[i].kind = ws ? PL_CONV_CHANNEL : PL_CONV_GROUP;
        j->convs[i].workspace = ws;
        j->convs[i].member_count = session_members ? session_members : 2;
    }
    j->nconvs = n;
    j->result = PL_STORE_OK;
    j->done(j);
    return 0;
}

/* Starts the authentication of user at the handshake (held) or by a first
 * frame (live), and leaves its session read unanswered (h_auth_end). */
static fconn *h_auth_begin(int64_t user, int64_t login, int held) {
    fconn *f = fconn_new();
    char tok[PL_AUTH_TOKEN_MAX];
    pl_auth_access_token(user, login, 0, pl_now_ms() / 1000 + 600, tok);
    if (held) {
        pl_chat_ws_open(&f->c, tok, strlen(tok));
    } else {
        pl_chat_ws_open(&f->c, NULL, 0);
        char msg[256];
        int len = snprintf(msg, sizeof msg, "{\"type\":\"auth\",\"token\":\"%s\"}", tok);
        pl_chat_ws_text(&f->c, (const uint8_t *)msg, (size_t)len);
    }
    return f;
}

/* Answers that read (a member of convs) and the streams' heads check
 * (nothing new); 1 when f then has its `ready`. */
static int h_auth_end(fconn *f, int64_t user, int64_t login, const conv_spec *convs, size_t n) {
    if (h_answer_session(user, login, convs, n) != 0) return 0;
    fs_ok_all(&H.store, PL_READ_CONV_HEADS);
    turn();
    return has_frame(f, "ready");
}

/* A session of user authenticated at the handshake (held) or by a first
 * frame (live), subscribed to convs; `ready` is checked. */
static fconn *h_session(int64_t user, int64_t login, const conv_spec *convs, size_t n, int held) {
    fconn *f = h_auth_begin(user, login, held);
    return h_auth_end(f, user, login, convs, n) ? f : NULL;
}

/* Takes conv's replay read, which must start after `after`, and answers it
 * with the events up to upto; 0, or -1 when there was no such read. */
static int h_replay_read(int64_t conv, int64_t after, int64_t upto) {
    pl_job *j = fs_take(&H.store, PL_READ_EVENTS, conv);
    if (!j || j->after != after) return -1;
    fs_answer_events(j, upto);
    turn();
    return 0;
}

/* A live authentication of user (by a first frame) whose session read is
 * answered (a member of convs), its `ready` not checked: in cluster mode
 * it may wait for the bus. NULL when no read was asked for. */
static fconn *h_auth_read(int64_t user, int64_t login, const conv_spec *convs, size_t n) {
    fconn *f = h_auth_begin(user, login, 0);
    return h_answer_session(user, login, convs, n) == 0 ? f : NULL;
}

static void h_text(fconn *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void h_text(fconn *f, const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    pl_chat_ws_text(&f->c, (const uint8_t *)msg, (size_t)n);
    turn();
}

/* A committed event, published the way the commit hook does. */
static void h_publish(int64_t conv, int64_t seq, int kind, int64_t subject) {
    pl_event e;
    make_event(&e, conv, seq, kind, 1, subject);
    if (seq < 512) {
        log_kind[seq] = kind;
        log_subject[seq] = subject;
    }
    pl_bus_publish_event(H.bus, &e, 0);
    pl_event_release(&e);
    turn();
}

/* ---- tests ------------------------------------------------------------------------ */

/* Issue 15 defect 2: a catch-up page never reads above what the stream
 * has published, and a sync on a held session is exact. */
TEST(deliver_replay_is_capped_at_published_seq) {
    h_start(0);
    conv_spec cs = {10, 5, 1};
    fconn *s = h_session(2, 1, &cs, 1, 1);
    CHECK(s != NULL);
    h_publish(10, 6, PL_EV_MESSAGE, 0);            /* held: nothing sent yet */
    h_publish(10, 7, PL_EV_MESSAGE, 0);
    int64_t seqs[64];
    CHECK_EQ(event_seqs(s, 10, seqs, 64), 0);
    h_text(s, "{\"type\":\"sync\",\"cursors\":{\"10\":3}}");
    pl_job *j = fs_take(&H.store, PL_READ_EVENTS, 10);
    CHECK(j != NULL);
    CHECK_EQ(j->after, 3);
    CHECK_EQ(j->before, 8);                        /* published 7: never read past it */
    fs_answer_events(j, 9);                        /* the store already holds 8 and 9 */
    turn();
    size_t n = event_seqs(s, 10, seqs, 64);
    CHECK_EQ(n, 4);
    for (size_t i = 0; i < n; i++) CHECK_EQ(seqs[i], 4 + (int64_t)i);
    CHECK(has_frame(s, "synced"));
    h_publish(10, 8, PL_EV_MESSAGE, 0);            /* then live */
    CHECK_EQ(event_seqs(s, 10, seqs, 64), 5);
    CHECK_EQ(seqs[4], 8);
    CHECK_EQ(fs_count(&H.store, PL_READ_EVENTS), 0);
    fconn *all[] = {s};
    h_stop(all, 1);
}

/* A session's first subscription lives in the session; more move to an
 * array that grows (1 -> 4 -> 8). Live events reach every one of them
 * before and after the moves, and a removal unlinks the right one. ASan
 * checks the session's slot is never freed as an array. */
TEST(deliver_session_subscriptions_grow_from_the_inline_one) {
    h_start(0);
    conv_spec one = {20, 1, 1};
    fconn *a = h_session(3, 2, &one, 1, 0);     /* one conversation: inline only */
    CHECK(a != NULL);
    conv_spec cs[6];
    for (int i = 0; i < 6; i++) cs[i] = (conv_spec){20 + i, 1, 1};
    fconn *b = h_session(2, 1, cs, 6, 0);
    CHECK(b != NULL);
    int64_t seqs[8];
    for (int i = 0; i < 6; i++) h_publish(20 + i, 2, PL_EV_MESSAGE, 0);
    for (int i = 0; i < 6; i++) {
        CHECK_EQ(event_seqs(b, 20 + i, seqs, 8), 1);
        CHECK_EQ(seqs[0], 2);
    }
    CHECK_EQ(event_seqs(a, 20, seqs, 8), 1);
    h_publish(22, 3, PL_EV_MEMBER_REMOVED, 2);  /* b leaves conversation 22 */
    h_publish(22, 4, PL_EV_MESSAGE, 0);
    h_publish(25, 3, PL_EV_MESSAGE, 0);
    CHECK_EQ(event_seqs(b, 22, seqs, 8), 2);      /* 2, then its own removal */
    CHECK_EQ(seqs[1], 3);
    CHECK_EQ(event_seqs(b, 25, seqs, 8), 2);
    CHECK_EQ(seqs[1], 3);
    fconn *all[] = {a, b};
    h_stop(all, 2);
}

/* Whether f's events of conv are exactly seqs first .. first + n - 1. */
static int is_run(fconn *f, int64_t conv, int64_t first, size_t n) {
    int64_t seqs[64];
    if (event_seqs(f, conv, seqs, 64) != n) return 0;
    for (size_t i = 0; i < n; i++)
        if (seqs[i] != first + (int64_t)i) return 0;
    return 1;
}

/* A conversation with 16 or more subscriptions here keeps its recent
 * frames: a catching-up subscription whose next seq is among them gets the
 * rest without a store read (a busy group's members that fell behind read
 * again and again otherwise, benchmarks.md "Cluster mode, third session");
 * one further behind reads what is older, then takes the rest from the
 * frames, including one published while its read was in flight; and a
 * message edited since it was published is read from the store again. */
TEST(deliver_catch_up_near_the_head_comes_from_recent_frames) {
    h_start(0);
    conv_spec cs = {30, 1, 1};
    fconn *all[19];
    for (int i = 0; i < 16; i++) {
        all[i] = h_session(100 + i, 100 + i, &cs, 1, 0);
        CHECK(all[i] != NULL);
    }
    fconn *near = all[16] = h_session(200, 200, &cs, 1, 1);   /* held until their sync */
    fconn *far = all[17] = h_session(201, 201, &cs, 1, 1);
    fconn *mid = all[18] = h_session(202, 202, &cs, 1, 1);
    CHECK(near != NULL && far != NULL && mid != NULL);
    for (int64_t seq = 2; seq <= 10; seq++) h_publish(30, seq, PL_EV_MESSAGE, 0);
    int64_t seqs[64];
    CHECK_EQ(event_seqs(all[0], 30, seqs, 64), 9);

    h_text(near, "{\"type\":\"sync\",\"cursors\":{\"30\":5}}");
    turn();
    CHECK_EQ(fs_count(&H.store, PL_READ_EVENTS), 0);
    CHECK(is_run(near, 30, 6, 5));
    CHECK(has_frame(near, "synced"));
    h_publish(30, 11, PL_EV_MESSAGE, 0);          /* and live from there */
    CHECK_EQ(event_seqs(near, 30, seqs, 64), 6);
    CHECK_EQ(seqs[5], 11);

    h_text(far, "{\"type\":\"sync\",\"cursors\":{\"30\":0}}");
    pl_job *j = fs_take(&H.store, PL_READ_EVENTS, 30);
    CHECK(j != NULL);
    CHECK_EQ(j->after, 0);
    h_publish(30, 12, PL_EV_MESSAGE, 0);          /* while the read is in flight */
    fs_answer_events(j, 1);                       /* only seq 1 predates the frames */
    turn();
    CHECK_EQ(fs_count(&H.store, PL_READ_EVENTS), 0);
    CHECK(is_run(far, 30, 1, 12));
    CHECK(has_frame(far, "synced"));

    /* an edit of 8: the frames of 8 (as published) are no longer its
     * current form, so a subscription reaching 8 reads from the store */
    pl_event e;
    make_event(&e, 30, 13, PL_EV_EDIT, 1, 0);
    e.ref = 8;
    log_kind[13] = PL_EV_EDIT;
    pl_bus_publish_event(H.bus, &e, 0);
    pl_event_release(&e);
    turn();
    h_text(mid, "{\"type\":\"sync\",\"cursors\":{\"30\":5}}");
    j = fs_take(&H.store, PL_READ_EVENTS, 30);
    CHECK(j != NULL);
    CHECK_EQ(j->after, 7);                        /* 6 and 7 came from the frames */
    fs_answer_events(j, 13);
    turn();
    CHECK_EQ(fs_count(&H.store, PL_READ_EVENTS), 0);
    CHECK(is_run(mid, 30, 6, 8));
    CHECK(has_frame(mid, "synced"));
    h_stop(all, 19);
}

/* Three subscriptions are enough for recent frames (before: 16). In a
 * storm every member of every group comes back at once, and each read its
 * missed events from the store (docs/benchmarks.md "a storm's replays from
 * memory"). Two are not: a direct conversation's frames are kept only
 * while a subscription of it is held (the ring's note 4), and go at the
 * first event after. */
TEST(deliver_three_subscriptions_keep_recent_frames) {
    h_start(0);
    conv_spec group = {30, 1, 1}, dm = {31, 1, 1};
    fconn *all[5];
    all[0] = h_session(100, 100, &group, 1, 0);
    all[1] = h_session(101, 101, &group, 1, 0);
    fconn *late = all[2] = h_session(102, 102, &group, 1, 1);   /* held until its sync */
    all[3] = h_session(103, 103, &dm, 1, 0);
    fconn *dm_late = all[4] = h_session(104, 104, &dm, 1, 1);
    CHECK(all[0] && all[1] && late && all[3] && dm_late);
    for (int64_t seq = 2; seq <= 10; seq++) {
        h_publish(30, seq, PL_EV_MESSAGE, 0);
        h_publish(31, seq, PL_EV_MESSAGE, 0);
    }
    h_text(late, "{\"type\":\"sync\",\"cursors\":{\"30\":5}}");
    turn();
    CHECK_EQ(fs_count(&H.store, PL_READ_EVENTS), 0);
    CHECK(is_run(late, 30, 6, 5));
    CHECK(has_frame(late, "synced"));
    h_text(dm_late, "{\"type\":\"sync\",\"cursors\":{\"31\":5}}");
    turn();
    CHECK_EQ(fs_count(&H.store, PL_READ_EVENTS), 0);   /* held until now: its ring */
    CHECK(is_run(dm_late, 31, 6, 5));
    CHECK(conv_find(31)->has_ring);
    h_publish(31, 11, PL_EV_MESSAGE, 0);           /* two, none held: none kept */
    CHECK(!conv_find(31)->has_ring);
    h_publish(31, 12, PL_EV_MESSAGE, 0);
    CHECK(!conv_find(31)->has_ring);
    CHECK(is_run(dm_late, 31, 6, 7));
    h_stop(all, 5);
}

/* Audit L6: an erasure without an event (a retention purge, a deleted
 * account's messages) drops the recent frames (pl_chat_erased), so a
 * subscription catching up reads the store, whose copy is the erased
 * form; the next event starts the ring again. Before, the ring served the
 * erased text to every member catching up from it. */
TEST(deliver_erasure_drops_recent_frames) {
    h_start(0);
    conv_spec cs = {30, 1, 1};
    fconn *all[5];
    for (int i = 0; i < 3; i++) CHECK((all[i] = h_session(100 + i, 100 + i, &cs, 1, 0)) != NULL);
    fconn *late = all[3] = h_session(103, 103, &cs, 1, 1);      /* held until its sync */
    fconn *later = all[4] = h_session(104, 104, &cs, 1, 1);
    CHECK(late != NULL && later != NULL);
    for (int64_t seq = 2; seq <= 6; seq++) h_publish(30, seq, PL_EV_MESSAGE, 0);
    pl_chat_erased();
    h_text(late, "{\"type\":\"sync\",\"cursors\":{\"30\":3}}");
    CHECK_EQ(h_replay_read(30, 3, 6), 0);         /* the store, not the frames */
    CHECK_EQ(fs_count(&H.store, PL_READ_EVENTS), 0);
    CHECK(is_run(late, 30, 4, 3));
    CHECK(has_frame(late, "synced"));
    h_publish(30, 7, PL_EV_MESSAGE, 0);           /* kept again from here */
    h_publish(30, 8, PL_EV_MESSAGE, 0);
    h_text(later, "{\"type\":\"sync\",\"cursors\":{\"30\":6}}");
    CHECK_EQ(fs_count(&H.store, PL_READ_EVENTS), 0);
    CHECK(is_run(later, 30, 7, 2));
    h_stop(all, 5);
}

/* Closes f's session as its connection going away would (not h_stop's). */
static void h_leave(fconn *f) {
    f->c.closing = 1;
    pl_chat_conn_closed(&f->c);
    turn();
    fconn_free(f);
}

/* Leaves conversation conv lingering: three sessions (users from user on)
 * follow it, seqs 2..upto are published, and all three go. 0, or -1 when
 * a session could not be made. */
static int h_linger(int64_t conv, int64_t upto, int64_t user) {
    conv_spec cs = {conv, 1, 1};
    fconn *all[3];
    for (int i = 0; i < 3; i++)
        if ((all[i] = h_session(user + i, user + i, &cs, 1, 0)) == NULL) return -1;
    for (int64_t seq = 2; seq <= upto; seq++) h_publish(conv, seq, PL_EV_MESSAGE, 0);
    for (int i = 0; i < 3; i++) h_leave(all[i]);
    return 0;
}

/* A stream with recent frames outlives its last subscription by
 * RING_LINGER_MS, following the conversation meanwhile: members who come
 * back catch up from memory, an edit made while nobody followed still
 * drops the edited message's frame, and when its time is up (the sweep)
 * the stream goes. Before, the stream and its frames went with the last
 * subscription, and each returning member read from the store (a
 * reconnect storm: one read per member; in cluster mode a PostgreSQL
 * round trip each). */
TEST(deliver_a_stream_with_recent_frames_lingers) {
    h_start(0);
    conv_spec back_cs = {30, 9, 1};
    fconn *back[2];
    CHECK_EQ(h_linger(30, 5, 100), 0);
    CHECK(conv_find(30) != NULL);                 /* it lingers */
    for (int64_t seq = 6; seq <= 8; seq++) h_publish(30, seq, PL_EV_MESSAGE, 0);
    pl_event e;                                   /* an edit of 7 meanwhile */
    make_event(&e, 30, 9, PL_EV_EDIT, 1, 0);
    e.ref = 7;
    log_kind[9] = PL_EV_EDIT;
    pl_bus_publish_event(H.bus, &e, 0);
    pl_event_release(&e);
    turn();
    CHECK_EQ(conv_find(30)->published, 9);

    back[0] = h_session(100, 200, &back_cs, 1, 1);
    CHECK(back[0] != NULL);
    h_text(back[0], "{\"type\":\"sync\",\"cursors\":{\"30\":4}}");
    pl_job *j = fs_take(&H.store, PL_READ_EVENTS, 30);
    CHECK(j != NULL);
    CHECK_EQ(j->after, 6);                        /* 5 and 6 came from the frames */
    fs_answer_events(j, 9);
    turn();
    CHECK_EQ(fs_count(&H.store, PL_READ_EVENTS), 0);
    CHECK(is_run(back[0], 30, 5, 5));
    CHECK(has_frame(back[0], "synced"));
    h_publish(30, 10, PL_EV_MESSAGE, 0);          /* and live */
    CHECK(is_run(back[0], 30, 5, 6));

    /* It goes once its time is up, not before. */
    h_leave(back[0]);
    ring_linger_sweep();
    CHECK(conv_find(30) != NULL);
    ring_linger_ms = 0;
    ring_linger_sweep();
    CHECK(conv_find(30) == NULL);
    back_cs.last_seq = 10;                        /* then a member coming back reads */
    back[1] = h_session(101, 201, &back_cs, 1, 1);
    CHECK(back[1] != NULL);
    h_text(back[1], "{\"type\":\"sync\",\"cursors\":{\"30\":8}}");
    CHECK_EQ(h_replay_read(30, 8, 10), 0);
    CHECK(is_run(back[1], 30, 9, 2));
    fconn *none[1] = {back[1]};
    h_stop(none, 1);
}

/* Lingering rings give way: when the budget is spent, a followed stream's
 * new ring frees the oldest lingering one, and that stream is released at
 * the next turn (by the sweep's timer: the harness's loop has no other
 * handle keeping it alive, so the test calls the sweep). */
TEST(deliver_lingering_frames_give_way_to_followed_streams) {
    h_start(0);
    ring_budget = 6000;                           /* one ring's struct (~4.2 KB) and a little */
    conv_spec b = {31, 1, 1};
    fconn *all[3];
    CHECK_EQ(h_linger(30, 2, 100), 0);
    CHECK(conv_find(30) != NULL && conv_find(30)->has_ring);
    for (int i = 0; i < 3; i++) CHECK((all[i] = h_session(110 + i, 110 + i, &b, 1, 0)) != NULL);
    h_publish(31, 2, PL_EV_MESSAGE, 0);           /* 31's ring needs the room */
    CHECK(conv_find(31)->has_ring);
    CHECK(conv_find(30) != NULL && !conv_find(30)->has_ring);
    ring_linger_sweep();                          /* the timer's, at the next turn */
    CHECK(conv_find(30) == NULL);
    h_stop(all, 3);
}

/* An erasure without an event (pl_chat_erased) while a stream lingers:
 * its ring goes, and so does the stream (at the sweep's next turn: nothing
 * holds it now); a member coming back reads the store, whose copy is the
 * erased form (audit L6, with lingering: the ring had kept the erased text
 * for members who came back within RING_LINGER_MS). */
TEST(deliver_erasure_ends_lingering_streams) {
    h_start(0);
    conv_spec back_cs = {30, 6, 1};
    CHECK_EQ(h_linger(30, 6, 100), 0);
    CHECK(conv_find(30) != NULL && conv_find(30)->has_ring);      /* it lingers */
    pl_chat_erased();
    CHECK(conv_find(30) == NULL || !conv_find(30)->has_ring);
    ring_linger_sweep();                          /* the timer's, at the next turn */
    CHECK(conv_find(30) == NULL);
    fconn *back = h_session(100, 200, &back_cs, 1, 1);
    CHECK(back != NULL);
    h_text(back, "{\"type\":\"sync\",\"cursors\":{\"30\":3}}");
    CHECK_EQ(h_replay_read(30, 3, 6), 0);         /* the store, not the frames */
    CHECK(is_run(back, 30, 4, 3));
    fconn *none[1] = {back};
    h_stop(none, 1);
}

/* Audit L7: a purge that ends during a drain (the store's close runs its
 * callback after pl_chat_shutdown) still tells the bus, which is up until
 * the drain ends; every other node's rings go on hearing it. Before, it
 * told nobody: another node's lingering ring replayed the erased text. */
TEST(deliver_erasure_during_a_drain_still_reaches_the_bus) {
    h_start(0);
    conv_spec cs = {30, 1, 1};
    fconn *all[3];
    for (int i = 0; i < 3; i++) CHECK((all[i] = h_session(100 + i, 100 + i, &cs, 1, 0)) != NULL);
    h_publish(30, 2, PL_EV_MESSAGE, 0);
    CHECK(conv_find(30)->has_ring);
    pl_chat_shutdown();                           /* the drain began */
    pl_chat_erased();                             /* the purge's callback */
    CHECK(!conv_find(30)->has_ring);              /* the (local) bus delivered it */
    h_stop(all, 3);
}

/* A ring kept for a held subscription (note 4 of deliver_ring.c) does not
 * make its stream linger: a DM whose held session goes is released at
 * once, as before lingering. */
TEST(deliver_a_hold_ring_does_not_linger) {
    h_start(0);
    conv_spec cs = {10, 5, 1};
    fconn *s = h_session(2, 1, &cs, 1, 1);             /* held */
    CHECK(s != NULL);
    h_publish(10, 6, PL_EV_MESSAGE, 0);
    CHECK(conv_find(10)->has_ring);
    h_leave(s);
    CHECK(conv_find(10) == NULL);
    h_stop(NULL, 0);
}

/* A long-poll that watches a lingering stream holds it past its time: the
 * sweep then frees the ring, the stream follows the head for the watcher
 * without order (as a watched stream always did), and goes with the
 * watcher. Audit L7: a gap fill that was out meanwhile takes its answer as
 * the head. Before, a stream without order processed nothing of the answer
 * and, still seeing the gap, read the same page again, and again. */
TEST(deliver_a_watched_lingering_stream_drops_its_ring_and_its_fill_ends) {
    h_start(0);
    CHECK_EQ(h_linger(30, 2, 100), 0);
    pl_chat_watch(30, 2, 1);
    h_publish(30, 4, PL_EV_MESSAGE, 0);           /* 3 missing: a fill */
    pl_job *j = fs_take(&H.store, PL_READ_EVENTS, 30);
    CHECK(j != NULL);
    CHECK_EQ(conv_find(30)->published, 2);
    ring_linger_ms = 0;
    ring_linger_sweep();                          /* the watcher keeps it, without a ring */
    CHECK(conv_find(30) != NULL && !conv_find(30)->has_ring);
    fs_answer_events(j, 4);
    turn();
    CHECK_EQ(fs_count(&H.store, PL_READ_EVENTS), 0);   /* no second read */
    CHECK_EQ(conv_find(30)->published, 4);
    CHECK_EQ(conv_find(30)->known, 4);
    h_publish(30, 5, PL_EV_MESSAGE, 0);           /* the head, as it comes */
    CHECK_EQ(conv_find(30)->published, 5);
    pl_chat_watch(30, 0, 0);
    CHECK(conv_find(30) == NULL);
    h_stop(NULL, 0);
}

/* ---- long-polls over a stream (app/api_history.c) --------------------------
 * The REST long-poll for real, over a loopback socket, with its reads
 * answered by the fake store: a test orders them against the stream's
 * events. The router's token check is skipped (the request is user 1's). */

static pl_net *lp_net;

static void lp_request(pl_http_ctx *ctx, void *ud) {
    ctx->user = ctx->login = 1;
    h_history(ctx, 10);
}
static void lp_data(pl_conn *c, uint8_t *p, size_t n) { pl_http_on_data(c, p, n); }
static void lp_close(pl_conn *c) { pl_http_on_close(c); }
static void lp_timeout(pl_conn *c) { pl_http_on_timeout(c); }
static void lp_drain(pl_conn *c) { pl_http_on_drain(c); }

/* The REST module on the harness's loop and store, listening: 0 or -1. */
static int lp_start(void) {
    A.loop = &H.loop;
    A.store = &H.store.base;
    A.cfg = &H.cfg;
    C.hooks.conv_changed = pl_api_conv_changed;
    pl_http_hooks hooks = {.on_request = lp_request};
    pl_http_init(&hooks);
    pl_net_handler nh = {lp_data, lp_close, lp_timeout, lp_drain};
    return pl_net_listen(&H.loop, "127.0.0.1:0", &nh, NULL, &lp_net) ? -1 : 0;
}

static void lp_stop(void) {
    api_polls_shutdown();                         /* releases the map of parked polls */
    pl_net_close(lp_net);
    lp_net = NULL;
    memset(&A, 0, sizeof A);
}

/* Sends GET <path> on a new connection: its socket, or -1. */
static int lp_get(const char *path) {
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)pl_net_port(lp_net)),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    char rq[256];
    int n = snprintf(rq, sizeof rq, "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", path);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0 || send(fd, rq, (size_t)n, 0) != n) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Runs the loop until a job of op (and conv) is queued, then takes it. */
static pl_job *lp_take(int op, int64_t conv) {
    pl_job *j = NULL;
    for (int i = 0; i < 200 && !(j = fs_take(&H.store, op, conv)); i++) {
        uv_run(&H.loop, UV_RUN_NOWAIT);
        usleep(1000);
    }
    return j;
}

/* What came on fd while the loop ran a little (0 terminated; "" if nothing). */
static void lp_recv(int fd, char *buf, size_t cap) {
    size_t n = 0;
    for (int i = 0; i < 50; i++) {
        uv_run(&H.loop, UV_RUN_NOWAIT);
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 1) == 1) {
            ssize_t k = recv(fd, buf + n, cap - 1 - n, 0);
            if (k <= 0) break;
            n += (size_t)k;
        }
    }
    buf[n] = '\0';
}

/* Answers a parked poll's login read (user 1's, good), then its history
 * read with the log up to `have`. */
static int lp_answer(int64_t have) {
    pl_job *j = lp_take(PL_READ_LOGIN, 0);
    if (!j) return -1;
    j->login_out.id = j->login_out.user = 1;
    j->result = PL_STORE_OK;
    j->done(j);
    if (!(j = lp_take(PL_READ_EVENTS, 10))) return -1;
    fs_answer_events(j, have);
    return 0;
}

/* An event published between a long-poll's probe (the read that found
 * nothing above `after`) and its park, on a stream that a WebSocket
 * session keeps, reached the stream before the poll watched it: it was
 * never reported, and the poll waited for the next event or its whole
 * wait. Now the watch says the stream's head, and a poll that finds it
 * above its `after` reads once more. That read finding nothing (events
 * this user does not see) leaves the poll parked, not answered empty. */
TEST(deliver_a_long_poll_hears_of_an_event_between_its_probe_and_its_park) {
    h_start(0);
    conv_spec cs = {10, 5, 1};
    fconn *ws = h_session(2, 2, &cs, 1, 0);       /* keeps the stream, ordered */
    CHECK(ws != NULL);
    CHECK_EQ(lp_start(), 0);
    int fd = lp_get("/api/v1/conversations/10/messages?after=5&wait=20");
    CHECK(fd >= 0);
    pl_job *probe = lp_take(PL_READ_EVENTS, 10);
    CHECK(probe != NULL && probe->after == 5 && probe->limit == 1);
    h_publish(10, 6, PL_EV_MESSAGE, 0);           /* committed after the probe read */
    int64_t seqs[4];
    CHECK_EQ(event_seqs(ws, 10, seqs, 4), 1);
    fs_answer_events(probe, 5);                   /* the probe saw nothing: parked */
    pl_job *again = lp_take(PL_READ_EVENTS, 10);
    CHECK(again != NULL);                         /* before: no read, no answer for 20 s */
    CHECK_EQ(again->after, 5);
    fs_answer_events(again, 6);
    CHECK_EQ(lp_answer(6), 0);
    char buf[4096];
    lp_recv(fd, buf, sizeof buf);
    CHECK(strstr(buf, "HTTP/1.1 200") == buf && strstr(buf, "\"seq\":6") != NULL);
    close(fd);

    /* the second read sees nothing (6 not visible to this user, say) */
    fd = lp_get("/api/v1/conversations/10/messages?after=5&wait=20");
    CHECK(fd >= 0);
    fs_answer_events(lp_take(PL_READ_EVENTS, 10), 5);
    again = lp_take(PL_READ_EVENTS, 10);
    CHECK(again != NULL);
    fs_answer_events(again, 5);
    lp_recv(fd, buf, sizeof buf);
    CHECK_STR(buf, "");                           /* parked on, not answered empty */
    CHECK_EQ(fs_count(&H.store, PL_READ_LOGIN) + fs_count(&H.store, PL_READ_EVENTS), 0);
    h_publish(10, 7, PL_EV_MESSAGE, 0);           /* the next event answers it */
    CHECK_EQ(lp_answer(7), 0);
    lp_recv(fd, buf, sizeof buf);
    CHECK(strstr(buf, "HTTP/1.1 200") == buf && strstr(buf, "\"seq\":7") != NULL);
    close(fd);
    lp_stop();
    fconn *all[] = {ws};
    h_stop(all, 1);
}

/* The head a watch is given never goes down for a later watcher: a
 * stream followed by long-polls only once lowered its head to a new
 * watcher's `after`, and a third watcher between the two was then told a
 * head below an event that had gone by, so it would not read again. */
TEST(deliver_a_watch_is_given_the_head_the_stream_published) {
    h_start(0);
    CHECK_EQ(pl_chat_watch(20, 4, 1), 4);         /* a new stream: nothing known yet */
    fs_ok_all(&H.store, PL_READ_CONV_HEADS);
    h_publish(20, 5, PL_EV_MESSAGE, 0);
    CHECK_EQ(pl_chat_watch(20, 2, 1), 5);
    CHECK_EQ(pl_chat_watch(20, 4, 1), 5);         /* once 2: 5 went by unseen */
    for (int i = 0; i < 3; i++) pl_chat_watch(20, 0, 0);
    CHECK(conv_find(20) == NULL);
    h_stop(NULL, 0);
}

static int changed_21;
static void count_changed_21(int64_t conv) { changed_21 += conv == 21; }
static void keep_alive_cb(uv_timer_t *t) { (void)t; }

/* A stream a watch created starts at its first watcher's `after`, which
 * may be past the conversation's head; an event at or below it still
 * reaches the watchers (audit M6: a poll with after=50 on a head of 1 kept
 * every poll on the conversation waiting out its wait). */
TEST(deliver_a_watch_past_the_head_hears_of_events_below_it) {
    h_start(0);
    C.hooks.conv_changed = count_changed_21;
    changed_21 = 0;
    uv_timer_t alive;                             /* the flusher is unref'd: a turn needs */
    uv_timer_init(&H.loop, &alive);               /* something alive to run at all */
    uv_timer_start(&alive, keep_alive_cb, 60000, 0);
    CHECK_EQ(pl_chat_watch(21, 50, 1), 50);
    fs_ok_all(&H.store, PL_READ_CONV_HEADS);
    turn();
    CHECK_EQ(changed_21, 0);                      /* the heads check: 0, below 50, no event */
    h_publish(21, 2, PL_EV_MESSAGE, 0);
    CHECK_EQ(changed_21, 1);
    h_publish(21, 3, PL_EV_MESSAGE, 0);
    CHECK_EQ(changed_21, 2);
    CHECK_EQ(pl_chat_watch(21, 1, 1), 50);        /* a later watcher re-reads the store */
    for (int i = 0; i < 2; i++) pl_chat_watch(21, 0, 0);
    CHECK(conv_find(21) == NULL);
    C.hooks.conv_changed = NULL;
    uv_close((uv_handle_t *)&alive, NULL);
    h_stop(NULL, 0);
}

/* A small group's frames take at most RING_SUB_BYTES (8 KiB) per
 * subscription: three keep the newest ~24 KiB, and a subscription further
 * behind reads the rest from the store first. */
TEST(deliver_recent_frames_of_a_small_group_are_bounded) {
    h_start(0);
    conv_spec cs = {30, 1, 1};
    fconn *all[3];
    all[0] = h_session(100, 100, &cs, 1, 0);
    all[1] = h_session(101, 101, &cs, 1, 0);
    fconn *late = all[2] = h_session(102, 102, &cs, 1, 1);
    CHECK(all[0] && all[1] && late);
    big_body = 500;                               /* \u0001 each: frames of ~3 KiB */
    for (int64_t seq = 2; seq <= 20; seq++) h_publish(30, seq, PL_EV_MESSAGE, 0);
    CHECK(all[0]->nframes > 0 && strlen(all[0]->frames[all[0]->nframes - 1]) > 3000 &&
          strlen(all[0]->frames[all[0]->nframes - 1]) < 3300);
    h_text(late, "{\"type\":\"sync\",\"cursors\":{\"30\":1}}");
    CHECK_EQ(h_replay_read(30, 1, 13), 0);        /* 14..20 (7 frames) are kept */
    CHECK_EQ(fs_count(&H.store, PL_READ_EVENTS), 0);
    CHECK(is_run(late, 30, 2, 19));
    CHECK(has_frame(late, "synced"));
    big_body = 0;
    h_stop(all, 3);
}

/* A message with attachments is not replayed from the recent frames: its
 * frame's signed media URLs may have expired; the store's copy is signed
 * afresh (before: a replay from the frames carried the live frame's URLs). */
TEST(deliver_recent_frames_skip_messages_with_attachments) {
    h_start(0);
    conv_spec cs = {30, 1, 1};
    fconn *all[17];
    for (int i = 0; i < 16; i++) {
        all[i] = h_session(100 + i, 100 + i, &cs, 1, 0);
        CHECK(all[i] != NULL);
    }
    fconn *late = all[16] = h_session(200, 200, &cs, 1, 1);   /* held until its sync */
    CHECK(late != NULL);
    for (int64_t seq = 2; seq <= 6; seq++) {
        pl_event e;
        make_event(&e, 30, seq, PL_EV_MESSAGE, 1, 0);
        log_kind[seq] = PL_EV_MESSAGE;
        if (seq == 4) e.data = pl_strdup("{\"attachments\":[{\"id\":7,\"kind\":\"image\"}]}");
        pl_bus_publish_event(H.bus, &e, 0);
        pl_event_release(&e);
        turn();
    }
    h_text(late, "{\"type\":\"sync\",\"cursors\":{\"30\":1}}");
    int64_t seqs[16];
    CHECK_EQ(event_seqs(late, 30, seqs, 16), 2);   /* 2 and 3 from the frames */
    pl_job *j = fs_take(&H.store, PL_READ_EVENTS, 30);
    CHECK(j != NULL);
    CHECK_EQ(j->after, 3);                         /* 4 from the store */
    fs_answer_events(j, 6);
    turn();
    CHECK_EQ(event_seqs(late, 30, seqs, 16), 5);
    CHECK_EQ(seqs[4], 6);
    h_stop(all, 17);
}

/* Defect 2: a member removed while its replay read is in flight gets
 * everything up to and including its own member_removed, then nothing. */
TEST(deliver_removal_while_catching_up_ends_the_stream_exactly) {
    h_start(0);
    conv_spec cs = {10, 5, 1};
    fconn *s = h_session(2, 1, &cs, 1, 0);
    fconn *other = h_session(3, 2, &cs, 1, 0);
    CHECK(s && other);
    h_text(s, "{\"type\":\"sync\",\"cursors\":{\"10\":0}}");
    pl_job *first = fs_take(&H.store, PL_READ_EVENTS, 10);
    CHECK(first != NULL);
    CHECK_EQ(first->before, 6);
    h_publish(10, 6, PL_EV_MESSAGE, 0);
    h_publish(10, 7, PL_EV_MEMBER_REMOVED, 2);      /* user 2 removed at 7 */
    h_publish(10, 8, PL_EV_MESSAGE, 0);
    fs_answer_events(first, 8);
    turn();
    pl_job *second = fs_take(&H.store, PL_READ_EVENTS, 10);
    CHECK(second != NULL);
    CHECK_EQ(second->after, 5);
    CHECK_EQ(second->before, 8);                   /* capped at its removal, not at 8 */
    fs_answer_events(second, 8);
    turn();
    int64_t seqs[64];
    size_t n = event_seqs(s, 10, seqs, 64);
    CHECK_EQ(n, 7);
    CHECK_EQ(seqs[6], 7);                          /* ends with its member_removed */
    h_publish(10, 9, PL_EV_MESSAGE, 0);
    CHECK_EQ(event_seqs(s, 10, seqs, 64), 7);      /* nothing after it */
    CHECK(sub_find(s->c.session, 10) == NULL);
    CHECK_EQ(event_seqs(other, 10, seqs, 64), 4);  /* the others go on: 6 7 8 9 */
    fconn *all[] = {s, other};
    h_stop(all, 2);
}

/* The read of a session's conversations predates a removal the loop then
 * processed before the session was authenticated: the session gets the
 * events up to its member_removed, then nothing (before: it went live past
 * the removal and kept receiving the conversation). */
TEST(deliver_removal_during_authentication_ends_the_stream) {
    h_start(0);
    conv_spec cs = {10, 5, 1};
    fconn *other = h_session(3, 2, &cs, 1, 0);     /* keeps the stream followed */
    CHECK(other != NULL);
    fconn *s = h_auth_begin(2, 1, 0);
    h_publish(10, 6, PL_EV_MESSAGE, 0);
    h_publish(10, 7, PL_EV_MEMBER_REMOVED, 2);
    h_publish(10, 8, PL_EV_MESSAGE, 0);
    CHECK(h_auth_end(s, 2, 1, &cs, 1));            /* read at seq 5 */
    size_t at = 0;
    json_t *r = next_frame(s, &at, "ready");
    CHECK(r != NULL);
    CHECK_EQ(json_integer_value(json_object_get(json_array_get(json_object_get(r, "conversations"), 0),
                                                "last_seq")), 5);   /* what it has, not the head */
    json_decref(r);
    CHECK_EQ(h_replay_read(10, 5, 8), 0);
    int64_t seqs[16];
    CHECK_EQ(event_seqs(s, 10, seqs, 16), 2);
    CHECK_EQ(seqs[0], 6);
    CHECK_EQ(seqs[1], 7);                          /* ends with its member_removed */
    h_publish(10, 9, PL_EV_MESSAGE, 0);
    CHECK_EQ(event_seqs(s, 10, seqs, 16), 2);      /* nothing after it */
    CHECK(sub_find(s->c.session, 10) == NULL);
    fconn *all[] = {s, other};
    h_stop(all, 2);
}

/* ... and an addition: the session follows the conversation from its
 * member_added (before: it never got the conversation). */
TEST(deliver_addition_during_authentication_subscribes) {
    h_start(0);
    conv_spec cs = {10, 5, 1};
    fconn *other = h_session(3, 2, &cs, 1, 0);
    CHECK(other != NULL);
    fconn *s = h_auth_begin(2, 1, 0);
    h_publish(10, 6, PL_EV_MEMBER_ADDED, 2);
    h_publish(10, 7, PL_EV_MESSAGE, 0);
    CHECK(h_auth_end(s, 2, 1, NULL, 0));           /* read before the addition */
    CHECK_EQ(h_replay_read(10, 5, 7), 0);
    h_publish(10, 8, PL_EV_MESSAGE, 0);
    int64_t seqs[16];
    CHECK_EQ(event_seqs(s, 10, seqs, 16), 3);
    CHECK_EQ(seqs[0], 6);
    CHECK_EQ(seqs[2], 8);
    fconn *all[] = {s, other};
    h_stop(all, 2);
}

/* Defect 2: a held session (handshake auth, no message yet) removed meanwhile
 * still gets its member_removed (at the removal, from the recent frames:
 * deliver_a_held_session_ends_at_its_removal_at_once), and nothing above
 * it, also after its sync. */
TEST(deliver_held_session_gets_its_removal) {
    h_start(0);
    conv_spec cs = {10, 3, 1};
    fconn *s = h_session(2, 1, &cs, 1, 1);
    CHECK(s != NULL);
    h_publish(10, 4, PL_EV_MESSAGE, 0);
    h_publish(10, 5, PL_EV_MEMBER_REMOVED, 2);
    h_publish(10, 6, PL_EV_MESSAGE, 0);
    h_text(s, "{\"type\":\"sync\",\"cursors\":{\"10\":3}}");
    turn();
    CHECK_EQ(fs_count(&H.store, PL_READ_EVENTS), 0);
    CHECK(has_frame(s, "synced"));
    int64_t seqs[16];
    CHECK_EQ(event_seqs(s, 10, seqs, 16), 2);
    CHECK_EQ(seqs[0], 4);
    CHECK_EQ(seqs[1], 5);
    CHECK(sub_find(s->c.session, 10) == NULL);
    fconn *all[] = {s};
    h_stop(all, 1);
}

/* A session subscribed by a member_added never gets events from before it,
 * live or by sync (visibility from joining, defect 3). */
TEST(deliver_join_starts_at_member_added) {
    h_start(0);
    conv_spec cs = {10, 8, 1};
    fconn *member = h_session(1, 1, &cs, 1, 0);
    fconn *newbie = h_session(5, 2, NULL, 0, 0);
    CHECK(member && newbie);
    h_publish(10, 9, PL_EV_MEMBER_ADDED, 5);
    h_publish(10, 10, PL_EV_MESSAGE, 0);
    int64_t seqs[16];
    CHECK_EQ(event_seqs(newbie, 10, seqs, 16), 2);
    CHECK_EQ(seqs[0], 9);
    h_text(newbie, "{\"type\":\"sync\",\"cursors\":{\"10\":0}}");   /* from 0: from joining */
    pl_job *j = fs_take(&H.store, PL_READ_EVENTS, 10);
    CHECK(j != NULL);
    CHECK_EQ(j->after, 8);
    fs_answer_events(j, 10);
    turn();
    size_t n = event_seqs(newbie, 10, seqs, 16);
    CHECK_EQ(n, 4);
    CHECK_EQ(seqs[2], 9);
    CHECK_EQ(seqs[3], 10);
    fconn *all[] = {member, newbie};
    h_stop(all, 2);
}

/* The members the helper answers, wrapped into an object. */
static void history_cb(void *arg, int result, const char *json, size_t len) {
    json_t **out = arg;
    *out = NULL;
    if (result) return;
    char *wrapped = malloc(len + 3);
    wrapped[0] = '{';
    memcpy(wrapped + 1, json, len);
    wrapped[len + 1] = '}';
    wrapped[len + 2] = '\0';
    *out = json_loads(wrapped, 0, NULL);
    free(wrapped);
}

/* Defect 1: a page ends early when its bytes reach the reply budget (with
 * has_more), never with the asker closed; one event always fits. */
TEST(deliver_history_pages_are_bounded_by_bytes) {
    h_start(0);
    big_body = 16384;                              /* each escapes to ~98 KB */
    json_t *page = NULL;
    CHECK_EQ(pl_chat_history(10, 2, 0, 0, 200, history_cb, &page), 0);
    pl_job *j = fs_take(&H.store, PL_READ_EVENTS, 10);
    CHECK(j != NULL);
    CHECK_EQ(j->user, 2);                          /* the store checks membership and joining */
    fs_answer_events(j, 12);
    CHECK(page != NULL);
    size_t n = json_array_size(json_object_get(page, "events"));
    int more = json_is_true(json_object_get(page, "has_more"));
    json_decref(page);
    CHECK(n >= 1 && n < 12);
    CHECK(more);
    CHECK(n * 98000 <= chat_reply_budget() + 98500);
    /* a reply larger than the whole bound still goes to a reader that reads */
    fconn *f = fconn_new();
    pl_rbuf *b = pl_rbuf_new(2 * 1048576);
    b->len = 2 * 1048576;
    memset(b->data, 0, 4);
    b->data[0] = 0x81;
    b->data[1] = 0;
    CHECK_EQ(chat_deliver_reply(&f->c, b), 0);
    CHECK_EQ(f->close_code, 0);
    CHECK_EQ(chat_deliver_reply(&f->c, b), -1);    /* one that does not read is closed */
    CHECK_EQ(f->close_code, PL_CLOSE_SLOW_CONSUMER);
    pl_rbuf_unref(&b);
    fconn_free(f);
    h_stop(NULL, 0);
}

/* Defect 6: a replay stops at a connection that cannot take frames. */
TEST(deliver_replay_stops_on_a_closed_connection) {
    h_start(0);
    conv_spec cs = {10, 900, 1};
    fconn *s = h_session(2, 1, &cs, 1, 0);
    CHECK(s != NULL);
    h_text(s, "{\"type\":\"sync\",\"cursors\":{\"10\":0}}");
    pl_job *j = fs_take(&H.store, PL_READ_EVENTS, 10);
    CHECK(j != NULL);
    f_close(&s->c, 1000, "bye");                   /* closing while the read runs */
    fs_answer_events(j, 900);
    for (int i = 0; i < 10; i++) turn();
    CHECK_EQ(fs_count(&H.store, PL_READ_EVENTS), 0);
    fconn *all[] = {s};
    h_stop(all, 1);
}

/* Defect 6: at most REPLAY_INFLIGHT reads at once, served in turn: a session
 * that got a page waits behind the others before its next one. */
TEST(deliver_replays_are_bounded_and_round_robin) {
    h_start(0);
    enum { N = REPLAY_INFLIGHT + 8 };
    fconn *s[N];
    conv_spec cs = {10, 1000, 1};
    for (int i = 0; i < N; i++) {
        s[i] = h_session(100 + i, 1 + i, &cs, 1, 0);
        CHECK(s[i] != NULL);
    }
    for (int i = 0; i < N; i++) h_text(s[i], "{\"type\":\"sync\",\"cursors\":{\"10\":0}}");
    CHECK_EQ(fs_count(&H.store, PL_READ_EVENTS), REPLAY_INFLIGHT);
    pl_job *j = fs_take(&H.store, PL_READ_EVENTS, 10);   /* the first session's page */
    fs_answer_events(j, 1000);
    turn();
    /* the freed slot went to a session that had no page yet */
    CHECK_EQ(fs_count(&H.store, PL_READ_EVENTS), REPLAY_INFLIGHT);
    int64_t seqs[256];
    size_t got_first = event_seqs(s[0], 10, seqs, 256);
    CHECK_EQ(got_first, PL_STORE_PAGE_MAX);
    int newcomer = 0;
    for (size_t i = 0; i < H.store.n; i++)
        if (H.store.q[i]->op == PL_READ_EVENTS && H.store.q[i]->after == 0) newcomer++;
    CHECK_EQ(newcomer, REPLAY_INFLIGHT);           /* s[0]'s next page is queued behind */
    for (int i = 0; i < N; i++) {                  /* drain everything */
        pl_job *k;
        while ((k = fs_take(&H.store, PL_READ_EVENTS, 10)) != NULL) {
            fs_answer_events(k, 1000);
            turn();
        }
    }
    for (int i = 0; i < N; i++) {
        size_t n = event_seqs(s[i], 10, seqs, 256);
        CHECK(n > 0);
        CHECK(has_frame(s[i], "synced"));
        for (size_t k = 1; k < n; k++) CHECK_EQ(seqs[k], seqs[k - 1] + 1);
    }
    h_stop((fconn **)s, N);
}

/* Issue 11 (reconnect storm): the replay bound counts what reads may
 * return, not reads. Sessions a few events behind keep many small reads in
 * flight (up to REPLAY_READS_MAX); gaps of 100 fit 64 at once; the event
 * bound (REPLAY_INFLIGHT pages) holds throughout, and every session still
 * gets its events once, in order, then `synced`. */
static uint32_t inflight_events(void) {
    uint32_t sum = 0;
    for (size_t i = 0; i < H.store.n; i++) {
        pl_job *j = H.store.q[i];
        if (j->op != PL_READ_EVENTS) continue;
        int64_t span = j->before - 1 - j->after;
        sum += (uint32_t)(span < PL_STORE_PAGE_MAX ? span : PL_STORE_PAGE_MAX);
    }
    return sum;
}

TEST(deliver_replay_bound_counts_events_not_reads) {
    h_start(0);
    enum { N = REPLAY_READS_MAX + 8 };
    fconn **s = calloc(N, sizeof *s);
    conv_spec small = {10, 1, 1};                 /* gaps of 1: the read bound binds */
    for (int i = 0; i < N; i++) {
        s[i] = h_session(100 + i, 1 + i, &small, 1, 0);
        CHECK(s[i] != NULL);
    }
    for (int i = 0; i < N; i++) h_text(s[i], "{\"type\":\"sync\",\"cursors\":{\"10\":0}}");
    CHECK_EQ(fs_count(&H.store, PL_READ_EVENTS), REPLAY_READS_MAX);   /* not REPLAY_INFLIGHT */
    CHECK(inflight_events() <= REPLAY_INFLIGHT * PL_STORE_PAGE_MAX);
    pl_job *k;
    while ((k = fs_take(&H.store, PL_READ_EVENTS, 10)) != NULL) {
        fs_answer_events(k, 1);
        turn();
        CHECK(fs_count(&H.store, PL_READ_EVENTS) <= REPLAY_READS_MAX);
    }
    int64_t seqs[16];
    for (int i = 0; i < N; i++) {
        CHECK_EQ(event_seqs(s[i], 10, seqs, 16), 1);
        CHECK_EQ(seqs[0], 1);
        CHECK(has_frame(s[i], "synced"));
    }
    h_stop(s, N);
    free(s);

    h_start(0);
    enum { M = 80 };                              /* gaps of 100: 64 reads fill the bound */
    fconn *t[M];
    conv_spec mid = {20, 100, 1};
    for (int i = 0; i < M; i++) {
        t[i] = h_session(100 + i, 1 + i, &mid, 1, 0);
        CHECK(t[i] != NULL);
    }
    for (int i = 0; i < M; i++) h_text(t[i], "{\"type\":\"sync\",\"cursors\":{\"20\":0}}");
    CHECK_EQ(fs_count(&H.store, PL_READ_EVENTS), REPLAY_INFLIGHT * PL_STORE_PAGE_MAX / 100);
    CHECK_EQ(inflight_events(), REPLAY_INFLIGHT * PL_STORE_PAGE_MAX);
    while ((k = fs_take(&H.store, PL_READ_EVENTS, 20)) != NULL) {
        fs_answer_events(k, 100);
        turn();
        CHECK(inflight_events() <= REPLAY_INFLIGHT * PL_STORE_PAGE_MAX);
    }
    int64_t all[128];
    for (int i = 0; i < M; i++) {
        CHECK_EQ(event_seqs(t[i], 20, all, 128), 100);
        for (int q = 1; q < 100; q++) CHECK_EQ(all[q], all[q - 1] + 1);
        CHECK(has_frame(t[i], "synced"));
    }
    h_stop(t, M);
}

/* A session that leaves while its replay waits in the queue: the queue's
 * head is then a detached subscription whose stream is gone; weighing it
 * against the bound must not touch that stream (ASan: use after free), and
 * everyone else's replay completes. */
TEST(deliver_replay_queue_outlives_a_session_that_left) {
    h_start(0);
    enum { N = REPLAY_INFLIGHT };
    fconn *s[N + 1];
    conv_spec big = {10, 1000, 1}, own = {77, 1000, 1};
    for (int i = 0; i < N; i++) {
        s[i] = h_session(100 + i, 1 + i, &big, 1, 0);
        CHECK(s[i] != NULL);
    }
    s[N] = h_session(99, 99, &own, 1, 0);
    CHECK(s[N] != NULL);
    for (int i = 0; i < N; i++) h_text(s[i], "{\"type\":\"sync\",\"cursors\":{\"10\":0}}");
    h_text(s[N], "{\"type\":\"sync\",\"cursors\":{\"77\":0}}");
    CHECK_EQ(fs_count(&H.store, PL_READ_EVENTS), N);   /* the bound is full: 77 waits */
    s[N]->c.closing = 1;
    pl_chat_conn_closed(&s[N]->c);                     /* detached; stream 77 released */
    CHECK(conv_find(77) == NULL);
    pl_job *k;
    while ((k = fs_take(&H.store, PL_READ_EVENTS, 0)) != NULL) {
        CHECK(k->conv == 10);
        fs_answer_events(k, 1000);
        turn();
    }
    int64_t seqs[1024];
    for (int i = 0; i < N; i++) CHECK_EQ(event_seqs(s[i], 10, seqs, 1024), 1000);
    h_stop(s, N + 1);
}

/* Defect 6: a handshake session that missed nothing reads nothing when its
 * hold ends, however many conversations it has. */
TEST(deliver_hold_release_reads_nothing_when_caught_up) {
    h_start(0);
    enum { N = 500 };
    conv_spec *cs = calloc(N, sizeof *cs);
    for (int i = 0; i < N; i++) cs[i] = (conv_spec){100 + i, 7, 1};
    fconn *s = h_session(2, 1, cs, N, 1);
    free(cs);
    CHECK(s != NULL);
    size_t before = H.store.submitted;
    h_text(s, "{\"type\":\"ping\",\"req\":1}");     /* not a sync: the hold ends */
    for (int i = 0; i < 5; i++) turn();
    CHECK_EQ(H.store.submitted, before);
    CHECK(has_frame(s, "pong"));
    h_publish(100 + 42, 8, PL_EV_MESSAGE, 0);      /* and everything is live */
    int64_t seqs[4];
    CHECK_EQ(event_seqs(s, 142, seqs, 4), 1);
    CHECK(((session *)s->c.session)->submap != NULL);  /* many subscriptions: indexed */
    fconn *all[] = {s};
    h_stop(all, 1);
}

/* Defect 6: a replay that meets a full queue waits for it to drain, under
 * the slow timeout, and resumes on drain. */
TEST(deliver_replay_waits_for_drain_under_the_slow_timeout) {
    h_start(0);
    conv_spec cs = {10, 50, 1};
    fconn *s = h_session(2, 1, &cs, 1, 0);
    CHECK(s != NULL);
    s->c.high = 1;
    int64_t t0 = pl_mono_ms();
    h_text(s, "{\"type\":\"sync\",\"cursors\":{\"10\":0}}");
    CHECK_EQ(fs_count(&H.store, PL_READ_EVENTS), 0);
    session *ss = s->c.session;
    CHECK(ss->waiting_drain);
    CHECK(s->c.deadline > 0 && s->c.deadline <= t0 + 30 * 1000 + 1000);
    s->c.high = 0;
    pl_chat_on_drain(&s->c);
    turn();
    pl_job *j = fs_take(&H.store, PL_READ_EVENTS, 10);
    CHECK(j != NULL);
    fs_answer_events(j, 50);
    turn();
    int64_t seqs[64];
    CHECK_EQ(event_seqs(s, 10, seqs, 64), 50);
    fconn *all[] = {s};
    h_stop(all, 1);
}

/* A logout heard while a session's login read is in flight (the read made
 * before the revocation committed, its answer after the revocation was
 * heard): the session is closed 4001 instead of going on for good with a
 * logged-out login (audit N4, embedded mode: `ready` after the logout's
 * 204, its sends acknowledged). The user's other login is not touched. */
TEST(a_logout_during_the_login_read_closes_the_session) {
    h_start(0);
    conv_spec cs = {10, 5, 1};
    fconn *gone = h_auth_begin(1, 7, 0), *other = h_auth_begin(1, 8, 0);
    H.bus->h.revoke(H.bus->h.ud, 1, 7);           /* logout of login 7 */
    CHECK_EQ(h_answer_session(1, 7, &cs, 1), 0);  /* the row as read before it */
    CHECK_EQ(h_answer_session(1, 8, &cs, 1), 0);
    fs_ok_all(&H.store, PL_READ_CONV_HEADS);
    turn();
    CHECK(!has_frame(gone, "ready"));
    CHECK_EQ(gone->close_code, 4001);
    CHECK(has_frame(other, "ready"));
    CHECK_EQ(other->close_code, 0);
    fconn *all[] = {gone, other};
    h_stop(all, 2);
}

/* Defect 7: the session remembers the store's cursors, not the client's. */
TEST(receipts_remember_the_store_result_not_the_request) {
    h_start(0);
    conv_spec cs = {10, 5, 1};
    fconn *s = h_session(2, 1, &cs, 1, 0);
    CHECK(s != NULL);
    h_text(s, "{\"type\":\"read\",\"conversation\":10,\"seq\":1000000000000}");
    pl_job *j = fs_take(&H.store, PL_JOB_RECEIPT, 10);
    CHECK(j != NULL);
    CHECK_EQ(j->read, 1000000000000LL);
    j->result = PL_STORE_OK;
    j->out_read = j->out_delivered = 5;
    j->created = 1;
    j->done(j);
    turn();
    h_text(s, "{\"type\":\"read\",\"conversation\":10,\"seq\":5}");   /* nothing can move */
    CHECK_EQ(fs_count(&H.store, PL_JOB_RECEIPT), 0);
    h_text(s, "{\"type\":\"read\",\"conversation\":10,\"seq\":7}");   /* this can */
    j = fs_take(&H.store, PL_JOB_RECEIPT, 10);
    CHECK(j != NULL);
    j->result = PL_STORE_EUNAVAIL;                 /* failed: nothing remembered */
    j->done(j);
    turn();
    CHECK(has_frame(s, "error"));
    size_t at = 0;                                 /* which receipt to send again (audit G4) */
    json_t *e = next_frame(s, &at, "error");
    int named = e && strcmp(json_string_value(json_object_get(e, "code")), "unavailable") == 0 &&
                strcmp(json_string_value(json_object_get(e, "receipt")), "read") == 0 &&
                json_integer_value(json_object_get(e, "conversation")) == 10 &&
                json_integer_value(json_object_get(e, "seq")) == 7 &&
                json_integer_value(json_object_get(e, "retry_after")) == 1;
    json_decref(e);
    CHECK(named);
    h_text(s, "{\"type\":\"read\",\"conversation\":10,\"seq\":7}");   /* so it is retried */
    j = fs_take(&H.store, PL_JOB_RECEIPT, 10);
    CHECK(j != NULL);
    j->result = PL_STORE_OK;
    j->out_read = j->out_delivered = 7;
    j->created = 1;
    j->done(j);
    fconn *all[] = {s};
    h_stop(all, 1);
}

/* A receipt for a conversation this session has no subscription for goes
 * to the store, which knows the membership: in cluster mode a membership
 * made through another node reaches the session with its event after the
 * client had its answer (audit N1: `not_found` for a member). A
 * non-member gets the store's `not_found`. */
TEST(receipts_without_a_subscription_ask_the_store) {
    h_start(0);
    conv_spec cs = {10, 5, 1};
    fconn *s = h_session(2, 1, &cs, 1, 0);
    CHECK(s != NULL);
    h_text(s, "{\"type\":\"read\",\"conversation\":11,\"seq\":3}");
    CHECK(!has_frame(s, "error"));
    pl_job *j = fs_take(&H.store, PL_JOB_RECEIPT, 11);
    CHECK(j != NULL);
    j->result = PL_STORE_OK;                       /* a member: the store moved it */
    j->out_read = j->out_delivered = 3;
    j->created = 1;
    j->done(j);
    turn();
    CHECK(!has_frame(s, "error"));
    h_text(s, "{\"type\":\"delivered\",\"conversation\":12,\"seq\":3}");
    j = fs_take(&H.store, PL_JOB_RECEIPT, 12);
    CHECK(j != NULL);
    j->result = PL_STORE_ENOTFOUND;                /* not a member */
    j->done(j);
    turn();
    size_t at = 0;
    json_t *e = next_frame(s, &at, "error");
    int named = e && strcmp(json_string_value(json_object_get(e, "code")), "not_found") == 0 &&
                strcmp(json_string_value(json_object_get(e, "receipt")), "delivered") == 0 &&
                json_integer_value(json_object_get(e, "conversation")) == 12;
    json_decref(e);
    CHECK(named);
    fconn *all[] = {s};
    h_stop(all, 1);
}

/* Defect 9: above --receipt-fanout-max members, a receipt goes to the
 * reader's sessions and to the author it read, nobody else. */
TEST(receipts_in_large_groups_reach_reader_and_author) {
    h_start(0);
    H.cfg.receipt_fanout_max = 2;
    conv_spec cs = {10, 5, 1};
    fconn *author = h_session(1, 1, &cs, 1, 0), *reader = h_session(2, 2, &cs, 1, 0),
          *bystander = h_session(3, 3, &cs, 1, 0);
    CHECK(author && reader && bystander);
    pl_bus_receipt r = {10, 2, 5, 5, 0, 4, 1, 3};  /* 4 members > 2; read onto user 1's */
    pl_bus_publish_receipt(H.bus, &r);
    CHECK(has_frame(author, "receipt"));
    CHECK(has_frame(reader, "receipt"));
    CHECK(!has_frame(bystander, "receipt"));
    size_t at = 0;
    json_t *own = next_frame(reader, &at, "receipt");
    int with_unread = json_object_get(own, "unread") != NULL &&
                      json_integer_value(json_object_get(own, "unread_mentions")) == 3;
    json_decref(own);
    CHECK(with_unread);
    at = 0;                                        /* the reader's counts are its own */
    json_t *theirs = next_frame(author, &at, "receipt");
    int bare = theirs && !json_object_get(theirs, "unread") && !json_object_get(theirs, "unread_mentions");
    json_decref(theirs);
    CHECK(bare);
    pl_bus_receipt small = {10, 2, 6, 6, 0, 2, 0, -1};  /* 2 members: everyone; an older node's */
    pl_bus_publish_receipt(H.bus, &small);
    CHECK(has_frame(bystander, "receipt"));
    at = 0;
    json_t *f = next_frame(reader, &at, "receipt");
    json_decref(f);
    f = next_frame(reader, &at, "receipt");
    int unknown = f && json_object_get(f, "unread") && !json_object_get(f, "unread_mentions");
    json_decref(f);
    CHECK(unknown);
    fconn *all[] = {author, reader, bystander};
    h_stop(all, 3);
}

/* Audit P2 (cluster mode): two moves of a user's cursors committed on two
 * nodes reached the sessions in the other order, and every session got
 * read_seq 508 and then 506 (the own ones with the older unread). A
 * receipt at or below what was announced for its user is dropped; one
 * that moves either cursor goes out; another user's is its own. */
TEST(receipts_arriving_out_of_commit_order_never_go_backwards) {
    h_start(1);
    conv_spec cs = {10, 600, 1};
    fconn *reader = h_session(1, 1, &cs, 1, 0), *peer = h_session(2, 2, &cs, 1, 0);
    CHECK(reader && peer);
    pl_bus_receipt newer = {10, 1, 508, 508, 0, 2, 0, 0}, older = {10, 1, 506, 506, 1, 2, 0, 0};
    pl_bus_publish_receipt(H.bus, &newer);
    pl_bus_publish_receipt(H.bus, &older);
    pl_bus_publish_receipt(H.bus, &newer);         /* the same again: nothing moves */
    pl_bus_receipt delivered = {10, 1, 510, 508, 0, 2, 0, 0}, theirs = {10, 2, 3, 3, 0, 2, 0, 0};
    pl_bus_publish_receipt(H.bus, &delivered);     /* delivered moves: announced */
    pl_bus_publish_receipt(H.bus, &theirs);        /* another user's cursors */
    fconn *both[] = {reader, peer};
    for (int i = 0; i < 2; i++) {
        size_t at = 0;
        int64_t seen[8][3];
        int n = 0;
        json_t *f;
        while (n < 8 && (f = next_frame(both[i], &at, "receipt")) != NULL) {
            seen[n][0] = json_integer_value(json_object_get(f, "user"));
            seen[n][1] = json_integer_value(json_object_get(f, "delivered_seq"));
            seen[n][2] = json_integer_value(json_object_get(f, "read_seq"));
            n++;
            json_decref(f);
        }
        CHECK_EQ(n, 3);
        CHECK(seen[0][0] == 1 && seen[0][1] == 508 && seen[0][2] == 508);
        CHECK(seen[1][0] == 1 && seen[1][1] == 510 && seen[1][2] == 508);
        CHECK(seen[2][0] == 2 && seen[2][1] == 3 && seen[2][2] == 3);
    }
    h_stop(both, 2);
}

/* Embedded mode: an event that comes before its predecessors (a stream
 * created between a read and a publish) makes the stream read the gap and
 * deliver in order. */
TEST(deliver_gap_is_filled_from_the_store_in_order) {
    h_start(0);
    conv_spec cs = {10, 5, 1};
    fconn *s = h_session(2, 1, &cs, 1, 0);
    CHECK(s != NULL);
    h_publish(10, 8, PL_EV_MESSAGE, 0);            /* 6 and 7 never came */
    pl_job *j = fs_take(&H.store, PL_READ_EVENTS, 10);
    CHECK(j != NULL);
    CHECK_EQ(j->after, 5);
    CHECK_EQ(j->before, 9);
    CHECK_EQ(j->user, 0);
    fs_answer_events(j, 8);
    turn();
    int64_t seqs[16];
    size_t n = event_seqs(s, 10, seqs, 16);
    CHECK_EQ(n, 3);
    CHECK_EQ(seqs[0], 6);
    CHECK_EQ(seqs[2], 8);
    h_publish(10, 7, PL_EV_MESSAGE, 0);            /* a late duplicate is dropped */
    CHECK_EQ(event_seqs(s, 10, seqs, 16), 3);
    fconn *all[] = {s};
    h_stop(all, 1);
}

/* Cluster mode: events from the bus out of order are put back in order
 * without reading the store when the missing one arrives in time. */
TEST(deliver_out_of_order_bus_events_are_reordered) {
    h_start(1);
    conv_spec cs = {10, 5, 1};
    fconn *s = h_session(2, 1, &cs, 1, 0);
    CHECK(s != NULL);
    h_publish(10, 7, PL_EV_MESSAGE, 0);
    h_publish(10, 6, PL_EV_MESSAGE, 0);
    int64_t seqs[16];
    CHECK_EQ(event_seqs(s, 10, seqs, 16), 2);
    CHECK_EQ(seqs[0], 6);
    CHECK_EQ(seqs[1], 7);
    CHECK_EQ(fs_count(&H.store, PL_READ_EVENTS), 0);
    fconn *all[] = {s};
    h_stop(all, 1);
}

/* A cluster bus whose subscriptions are confirmed only when a test says
 * (bus_confirm), as Redis confirms a SUBSCRIBE a round trip later. */
static pl_bus_ops slow_bus_ops;
static int64_t    slow_bus_asked[16];
static size_t     slow_bus_nasked;

static void slow_sub_conv(pl_bus *b, int64_t conv, int on) {
    (void)b;
    if (on && slow_bus_nasked < 16) slow_bus_asked[slow_bus_nasked++] = conv;
}

static void h_slow_bus(void) {
    slow_bus_ops = *H.bus->ops;
    slow_bus_ops.subscribe_conv = slow_sub_conv;
    H.bus->ops = &slow_bus_ops;
    slow_bus_nasked = 0;
}

static void bus_confirm(int64_t conv) {
    H.bus->h.conv_ready(H.bus->h.ud, conv);
    turn();
}

/* Cluster mode (CI flake of test_signal_spam_is_limited_without_hurting_
 * messages): a typing frame published right after `ready` was lost when
 * the node's subscription to the conversation was not yet confirmed.
 * `ready` now waits for the confirmation; a second session of the same
 * conversation on the node does not wait. */
TEST(deliver_ready_waits_for_the_bus_subscription) {
    h_start(1);
    h_slow_bus();
    conv_spec cs[] = {{10, 5, 1}, {11, 3, 1}};
    fconn *a = h_auth_read(2, 1, cs, 2);
    CHECK(a != NULL);
    turn();
    CHECK_EQ(slow_bus_nasked, 2);
    CHECK(!has_frame(a, "ready"));
    bus_confirm(10);
    CHECK(!has_frame(a, "ready"));              /* 11 is not confirmed yet */
    h_text(a, "{\"type\":\"ping\",\"req\":\"p1\"}");   /* kept for after `ready` */
    CHECK(!has_frame(a, "pong"));
    bus_confirm(11);
    CHECK(has_frame(a, "ready"));
    CHECK(has_frame(a, "pong"));
    size_t at = 0;
    json_t *o = next_frame(a, &at, NULL);         /* `ready` first */
    CHECK_STR(json_string_value(json_object_get(o, "type")), "ready");
    json_decref(o);
    /* live now: a typing frame from another node reaches it */
    H.bus->h.typing(H.bus->h.ud, 10, 9, 1, 2);
    CHECK(has_frame(a, "typing"));
    /* a second session of conversation 10 on this node: nothing to wait for */
    fconn *b = h_auth_read(3, 2, cs, 1);
    CHECK(b != NULL);
    turn();
    CHECK(has_frame(b, "ready"));
    fconn *all[] = {a, b};
    h_stop(all, 2);
}

/* A logout (or account deletion) while `ready` waits for the bus: the
 * session read came before it, so the revocation must still close it. */
TEST(deliver_revoked_while_ready_waits_for_the_bus) {
    h_start(1);
    h_slow_bus();
    conv_spec cs = {10, 5, 1};
    fconn *a = h_auth_read(2, 1, &cs, 1);
    CHECK(a != NULL);
    fconn *b = h_auth_read(2, 7, &cs, 1);   /* another login of the same user */
    CHECK(b != NULL);
    turn();
    CHECK(!has_frame(a, "ready") && !has_frame(b, "ready"));
    H.bus->h.revoke(H.bus->h.ud, 2, 1);          /* login 1 logged out */
    bus_confirm(10);
    CHECK(!has_frame(a, "ready"));
    CHECK_EQ(a->close_code, PL_WS_CLOSE_UNAUTHORIZED);
    CHECK(has_frame(b, "ready"));
    CHECK_EQ(b->close_code, 0);
    fconn *all[] = {a, b};
    h_stop(all, 2);
}

/* Cluster mode: a logout on another node published before this node
 * listened to the user's channel never arrives here, so when the channel
 * is confirmed (user_ready: after the first session's attach, and after
 * every Redis reconnect) the logins of the user's sessions are read again,
 * once per login, and a revoked one is closed with 4001. */
TEST(deliver_logins_are_read_again_when_the_user_channel_is_confirmed) {
    h_start(1);
    conv_spec cs = {10, 5, 1};
    fconn *a = h_session(2, 1, &cs, 1, 0);
    fconn *a2 = h_session(2, 1, &cs, 1, 0);      /* a second socket of login 1 */
    fconn *b = h_session(2, 7, &cs, 1, 0);
    CHECK(a && a2 && b);
    CHECK_EQ(fs_count(&H.store, PL_READ_LOGIN), 0);
    H.bus->h.user_ready(H.bus->h.ud, 2);
    CHECK_EQ(fs_count(&H.store, PL_READ_LOGIN), 2);
    pl_job *j;
    while ((j = fs_take(&H.store, PL_READ_LOGIN, 0)) != NULL) {
        j->login_out.id = j->id;
        j->login_out.user = j->user;
        j->login_out.revoked = j->id == 1;
        j->result = PL_STORE_OK;
        j->done(j);
    }
    turn();
    CHECK_EQ(a->close_code, PL_WS_CLOSE_UNAUTHORIZED);
    CHECK_EQ(a2->close_code, PL_WS_CLOSE_UNAUTHORIZED);
    CHECK_EQ(b->close_code, 0);
    /* the store cannot tell: nothing is closed */
    H.bus->h.user_ready(H.bus->h.ud, 2);
    CHECK(fs_count(&H.store, PL_READ_LOGIN) >= 1);
    while ((j = fs_take(&H.store, PL_READ_LOGIN, 0)) != NULL) {
        j->result = PL_STORE_EUNAVAIL;
        j->done(j);
    }
    CHECK_EQ(b->close_code, 0);
    fconn *all[] = {a, a2, b};
    h_stop(all, 3);
}

/* The wait is bounded: an unconfirmed subscription delays `ready` by
 * BUS_WAIT_MS at most (counted), and a session closed while waiting
 * leaves no stream behind. */
TEST(deliver_ready_waits_for_the_bus_within_a_bound) {
    h_start(1);
    h_slow_bus();
    uint64_t timeouts0 = pl_m_ready_bus_timeouts.v;
    conv_spec cs = {10, 5, 1}, cs2 = {12, 1, 1};
    fconn *a = h_auth_read(2, 1, &cs, 1);
    CHECK(a != NULL);
    fconn *gone = h_auth_read(4, 3, &cs2, 1);
    CHECK(gone != NULL);
    turn();
    CHECK(!has_frame(a, "ready"));
    CHECK(conv_find(12) != NULL);
    gone->c.closing = 1;
    pl_chat_conn_closed(&gone->c);
    int64_t t0 = pl_mono_ms();
    while (!has_frame(a, "ready") && pl_mono_ms() - t0 < 5 * BUS_WAIT_MS) {
        uv_sleep(20);
        turn();
    }
    CHECK(has_frame(a, "ready"));
    CHECK(pl_mono_ms() - t0 >= BUS_WAIT_MS - 100);
    CHECK_EQ(pl_m_ready_bus_timeouts.v, timeouts0 + 1);   /* the closed one is not counted */
    CHECK(conv_find(12) == NULL);
    CHECK(!has_frame(gone, "ready"));
    fconn *all[] = {a, NULL};
    h_stop(all, 2);
    fconn_free(gone);
}

/* Shutdown while a session waits for the bus: it gets no `ready`, and
 * nothing leaks (ASan). */
TEST(deliver_shutdown_while_ready_waits_for_the_bus) {
    h_start(1);
    h_slow_bus();
    conv_spec cs = {10, 5, 1};
    fconn *a = h_auth_read(2, 1, &cs, 1);
    CHECK(a != NULL);
    turn();
    CHECK(!has_frame(a, "ready"));
    fconn *none[] = {NULL};
    h_stop(none, 1);                            /* a is still open at the shutdown */
    CHECK(!has_frame(a, "ready"));
    CHECK_EQ(a->c.refs, 1);                     /* the wait let go of it */
    a->c.closing = 1;
    pl_chat_conn_closed(&a->c);
    fconn_free(a);
}

/* Issue 11: live frames for WebSocket sessions are ranges of one shared
 * buffer, a recipient's consecutive frames adjacent (its queue holds them
 * as one entry); the buffer is written from the start again only once no
 * queue holds it. */
TEST(deliver_live_frames_are_adjacent_ranges_of_one_buffer) {
    h_start(0);
    conv_spec cs = {10, 5, 1};
    fconn *a = h_session(2, 1, &cs, 1, 0);
    fconn *b = h_session(3, 2, &cs, 1, 0);
    CHECK(a != NULL && b != NULL);
    h_publish(10, 6, PL_EV_MESSAGE, 0);
    CHECK(a->part != NULL);
    CHECK(a->part == b->part);                 /* encoded once, for both */
    CHECK_EQ(a->part_off, b->part_off);
    h_publish(10, 7, PL_EV_MESSAGE, 0);
    h_publish(10, 8, PL_EV_MESSAGE, 0);
    CHECK_EQ(a->adjacent, 2);
    CHECK_EQ(b->adjacent, 2);
    CHECK(a->part_off > 0);
    int64_t seqs[16];
    CHECK_EQ(event_seqs(a, 10, seqs, 16), 3);
    CHECK_EQ(seqs[0], 6);
    CHECK_EQ(seqs[2], 8);
    CHECK_EQ(event_seqs(b, 10, seqs, 16), 3);
    pl_rbuf *first = a->part;
    pl_rbuf_unref(&a->part);                   /* both queues written */
    pl_rbuf_unref(&b->part);
    h_publish(10, 9, PL_EV_MESSAGE, 0);
    CHECK(a->part == first);                   /* reused (same buffer, from 0) */
    CHECK_EQ(a->part_off, 0);
    CHECK_EQ(event_seqs(a, 10, seqs, 16), 4);
    CHECK_EQ(seqs[3], 9);
    big_body = 4096;                           /* escapes to ~24 KB: a frame of its own */
    h_publish(10, 10, PL_EV_MESSAGE, 0);
    big_body = 0;
    CHECK_EQ(a->part_off, 0);                  /* no new range */
    CHECK_EQ(event_seqs(a, 10, seqs, 16), 5);
    CHECK_EQ(seqs[4], 10);
    CHECK_EQ(event_seqs(b, 10, seqs, 16), 5);
    h_publish(10, 11, PL_EV_MESSAGE, 0);       /* and small ones use the arena again */
    CHECK(a->part_off > 0);
    CHECK_EQ(a->adjacent, 3);                  /* 7, 8, then 11 right after 9 */
    CHECK_EQ(event_seqs(a, 10, seqs, 16), 6);
    fconn *all[] = {a, b};
    h_stop(all, 2);
}

/* ... and a replay page's frames are adjacent ranges too (one entry). */
TEST(deliver_replay_page_frames_are_adjacent_ranges) {
    h_start(0);
    conv_spec cs = {10, 5, 1};
    fconn *s = h_session(2, 1, &cs, 1, 1);
    CHECK(s != NULL);
    h_publish(10, 6, PL_EV_MESSAGE, 0);
    h_publish(10, 7, PL_EV_MESSAGE, 0);
    h_text(s, "{\"type\":\"sync\",\"cursors\":{\"10\":3}}");
    pl_job *j = fs_take(&H.store, PL_READ_EVENTS, 10);
    CHECK(j != NULL);
    fs_answer_events(j, 7);
    turn();
    int64_t seqs[16];
    CHECK_EQ(event_seqs(s, 10, seqs, 16), 4);
    CHECK_EQ(seqs[0], 4);
    CHECK_EQ(seqs[3], 7);
    CHECK_EQ(s->adjacent, 3);
    fconn *all[] = {s};
    h_stop(all, 1);
}

/* Defect 4: reads that complete after shutdown are dropped: nothing is
 * sent, nothing new is read. */
TEST(deliver_reads_after_shutdown_are_dropped) {
    h_start(0);
    conv_spec cs = {10, 500, 1};
    fconn *s = h_session(2, 1, &cs, 1, 0);
    CHECK(s != NULL);
    h_text(s, "{\"type\":\"sync\",\"cursors\":{\"10\":0}}");
    pl_job *j = fs_take(&H.store, PL_READ_EVENTS, 10);
    CHECK(j != NULL);
    pl_chat_shutdown();
    size_t before = H.store.submitted, frames = s->nframes;
    fs_answer_events(j, 500);
    fs_ok_all(&H.store, PL_JOB_LAST_SEEN);
    for (int i = 0; i < 5; i++) turn();
    CHECK_EQ(H.store.submitted, before);
    CHECK_EQ(s->nframes, frames);
    s->c.closing = 1;
    pl_chat_conn_closed(&s->c);
    fs_fail_all(&H.store);
    pl_chat_free();
    pl_bus_close(&H.bus);
    uv_run(&H.loop, UV_RUN_DEFAULT);
    uv_loop_close(&H.loop);
    fconn_free(s);
}

/* Defect 9: typing fan-out is bounded (TYPISTS_MAX typists per conversation). */
TEST(typing_tracks_a_bounded_number_of_typists) {
    h_start(0);
    conv_spec cs = {10, 1, 1};
    fconn *watcher = h_session(1, 1, &cs, 1, 0);
    fconn *t[TYPISTS_MAX + 4];
    for (int i = 0; i < TYPISTS_MAX + 4; i++) {
        t[i] = h_session(10 + i, 10 + i, &cs, 1, 0);
        h_text(t[i], "{\"type\":\"typing\",\"conversation\":10,\"state\":\"start\"}");
    }
    size_t at = 0, starts = 0;
    json_t *o;
    while ((o = next_frame(watcher, &at, "typing")) != NULL) {
        starts++;
        json_decref(o);
    }
    CHECK_EQ(starts, TYPISTS_MAX);
    fconn *all[TYPISTS_MAX + 5];
    all[0] = watcher;
    for (int i = 0; i < TYPISTS_MAX + 4; i++) all[i + 1] = t[i];
    h_stop(all, TYPISTS_MAX + 5);
}

/* Messages that arrive while the store checks the token are kept and
 * handled in order right after `ready`. */
TEST(session_messages_during_authentication_are_kept_in_order) {
    h_start(0);
    fconn *f = fconn_new();
    char tok[PL_AUTH_TOKEN_MAX];
    pl_auth_access_token(2, 1, 0, pl_now_ms() / 1000 + 600, tok);
    pl_chat_ws_open(&f->c, NULL, 0);
    char msg[256];
    int len = snprintf(msg, sizeof msg, "{\"type\":\"auth\",\"token\":\"%s\"}", tok);
    pl_chat_ws_text(&f->c, (const uint8_t *)msg, (size_t)len);
    CHECK(!f->paused);                  /* reading stops only when something waits */
    static const char p1[] = "{\"type\":\"ping\",\"req\":1}", p2[] = "{\"type\":\"ping\",\"req\":2}";
    pl_chat_ws_text(&f->c, (const uint8_t *)p1, sizeof p1 - 1);
    CHECK(f->paused);
    pl_chat_ws_text(&f->c, (const uint8_t *)p2, sizeof p2 - 1);
    CHECK_EQ(f->nframes, 0);
    pl_job *j = fs_take(&H.store, PL_READ_SESSION, 0);
    CHECK(j != NULL);
    j->login_out.id = 1;
    j->login_out.user = 2;
    j->user_out.id = 2;
    j->result = PL_STORE_OK;
    j->done(j);
    turn();
    CHECK(!f->paused);
    CHECK_EQ(f->nframes, 3);
    CHECK(strstr(f->frames[0], "\"ready\"") != NULL);
    CHECK(strstr(f->frames[1], "\"req\":1") != NULL);
    CHECK(strstr(f->frames[2], "\"req\":2") != NULL);
    /* a revoked login is refused (4001) */
    fconn *g = fconn_new();
    pl_chat_ws_open(&g->c, tok, strlen(tok));
    j = fs_take(&H.store, PL_READ_SESSION, 0);
    CHECK(j != NULL);
    j->login_out.id = 1;
    j->login_out.user = 2;
    j->login_out.revoked = 1;
    j->result = PL_STORE_OK;
    j->done(j);
    CHECK_EQ(g->close_code, PL_WS_CLOSE_UNAUTHORIZED);
    fconn *all[] = {f, g};
    h_stop(all, 2);
}

/* A session authenticated by a first frame carrying resume cursors (the
 * reconnect path), in conversation 10 whose head is 7; NULL unless `ready`
 * was queued. */
static fconn *h_resume(int64_t user, int64_t login, int64_t cursor) {
    fconn *f = fconn_new();
    char tok[PL_AUTH_TOKEN_MAX], msg[512];
    pl_auth_access_token(user, login, 0, pl_now_ms() / 1000 + 600, tok);
    pl_chat_ws_open(&f->c, NULL, 0);
    int len = snprintf(msg, sizeof msg, "{\"type\":\"auth\",\"token\":\"%s\",\"cursors\":{\"10\":%lld}}", tok,
                       (long long)cursor);
    pl_chat_ws_text(&f->c, (const uint8_t *)msg, (size_t)len);
    conv_spec cs = {10, 7, 1};
    if (h_answer_session(user, login, &cs, 1) != 0) return NULL;
    return f->nframes && strstr(f->frames[0], "\"ready\"") ? f : NULL;
}

/* A turn, then the streams' head checks answered: every head is 7. */
static void h_turn_heads_at_7(void) {
    turn();
    pl_job *j;
    while ((j = fs_take(&H.store, PL_READ_CONV_HEADS, 0)) != NULL) {
        j->heads = pl_calloc(j->nids, sizeof *j->heads);
        for (size_t i = 0; i < j->nids; i++) j->heads[i] = 7;
        j->result = PL_STORE_OK;
        j->done(j);
    }
    turn();
}

/* The reconnect storm's writes: `ready` waits (the connection corked) for
 * the first replayed page, so both leave in one write; a resume with
 * nothing to read is never corked; a session that must wait for a drain
 * is uncorked (a corked queue cannot drain). */
TEST(deliver_resume_ready_leaves_with_the_first_replay_page) {
    h_start(0);
    fconn *f = h_resume(2, 1, 3);
    CHECK(f != NULL);
    CHECK_EQ(f->corks, 1);                         /* with `ready` in its queue */
    CHECK(f->corked);
    CHECK_EQ(f->corked_at, 1);
    h_turn_heads_at_7();
    CHECK(f->corked);                              /* while its read is out */
    pl_job *j = fs_take(&H.store, PL_READ_EVENTS, 10);
    CHECK(j != NULL);
    CHECK_EQ(j->after, 3);
    fs_answer_events(j, 7);
    turn();
    CHECK(!f->corked);
    int64_t seqs[16];
    CHECK_EQ(event_seqs(f, 10, seqs, 16), 4);
    CHECK_EQ(seqs[0], 4);
    CHECK(strstr(f->frames[f->nframes - 1], "\"synced\"") != NULL);

    fconn *g = h_resume(3, 2, 7);                  /* at the head: nothing to read */
    CHECK(g != NULL);
    h_turn_heads_at_7();
    CHECK_EQ(g->corks, 0);
    CHECK(has_frame(g, "synced"));
    CHECK_EQ(fs_count(&H.store, PL_READ_EVENTS), 0);

    fconn *h = h_resume(4, 3, 0);                  /* its queue fills before the read */
    CHECK(h != NULL);
    CHECK(h->corked);
    h->c.high = 1;
    h_turn_heads_at_7();
    CHECK(!h->corked);
    CHECK_EQ(fs_count(&H.store, PL_READ_EVENTS), 0);   /* waits for the drain */
    h->c.high = 0;
    pl_chat_on_drain(&h->c);
    turn();
    j = fs_take(&H.store, PL_READ_EVENTS, 10);
    CHECK(j != NULL);
    CHECK_EQ(j->after, 0);
    fs_answer_events(j, 7);
    turn();
    CHECK_EQ(event_seqs(h, 10, seqs, 16), 7);
    CHECK_EQ(h->corks, 1);
    fconn *all[] = {f, g, h};
    h_stop(all, 3);
}

/* ---- large groups (protocol.md "Large groups") ------------------------------- */

/* Answers a READ_MENTIONS job with messages at seqs[0..n) (ascending). */
static void fs_answer_mentions(pl_job *j, const int64_t *seqs, size_t n, int more) {
    j->events = n ? pl_calloc(n, sizeof *j->events) : NULL;
    for (size_t i = 0; i < n; i++) make_event(&j->events[i], j->conv, seqs[i], PL_EV_MESSAGE, 1, 0);
    j->nevents = n;
    j->more = more;
    j->result = PL_STORE_OK;
    j->done(j);
}

/* The frames of f from index *at on, as "type:seq" (events and mentions) or
 * "synced:seq[:online_only]", space-separated. */
static void frame_trace(fconn *f, size_t at, char *out, size_t cap) {
    size_t len = 0;
    out[0] = '\0';
    json_t *o;
    while ((o = next_frame(f, &at, NULL)) != NULL && len < cap) {
        const char *t = json_string_value(json_object_get(o, "type"));
        json_t *ev = json_object_get(o, "event");
        int64_t seq = json_integer_value(json_object_get(ev ? ev : o, "seq"));
        if (t && (strcmp(t, "event") == 0 || strcmp(t, "mention") == 0 || strcmp(t, "synced") == 0))
            len += (size_t)snprintf(out + len, cap - len, "%s%s:%lld%s", len ? " " : "", t, (long long)seq,
                                    json_is_true(json_object_get(o, "online_only")) ? ":online_only" : "");
        json_decref(o);
    }
}

/* A sync of a large group replays nothing: the user's mentions above its
 * cursor come first (as `mention`), then what was published meanwhile,
 * then `synced` with online_only, then live delivery. */
TEST(deliver_large_group_sync_sends_mentions_not_history) {
    h_start(0);
    H.cfg.large_group = 3;
    conv_spec cs = {10, 100, 1};
    session_members = 5;
    fconn *s = h_session(2, 1, &cs, 1, 0);
    CHECK(s != NULL);
    size_t at = s->nframes;
    h_text(s, "{\"type\":\"sync\",\"cursors\":{\"10\":40}}");
    CHECK_EQ(fs_count(&H.store, PL_READ_EVENTS), 0);       /* no replay */
    pl_job *j = fs_take(&H.store, PL_READ_MENTIONS, 10);
    CHECK(j != NULL);
    CHECK_EQ(j->user, 2);
    CHECK_EQ(j->after, 40);
    CHECK_EQ(j->limit, MENTIONS_MAX);
    h_publish(10, 101, PL_EV_MESSAGE, 0);                  /* while the read runs: held back */
    CHECK_EQ(s->nframes, at);
    int64_t ms[] = {45, 60, 101};                          /* 101 is above the head it moved to */
    fs_answer_mentions(j, ms, 3, 0);
    turn();
    pl_job *r = fs_take(&H.store, PL_READ_EVENTS, 10);     /* what came meanwhile */
    CHECK(r != NULL);
    CHECK_EQ(r->after, 100);
    CHECK_EQ(r->before, 102);
    fs_answer_events(r, 101);
    turn();
    h_publish(10, 102, PL_EV_MESSAGE, 0);
    char trace[512];
    frame_trace(s, at, trace, sizeof trace);
    CHECK_STR(trace, "mention:45 mention:60 event:101 synced:101:online_only event:102");
    size_t k = at;
    json_t *m = next_frame(s, &k, "mention");
    CHECK(m != NULL);
    int shape = json_integer_value(json_object_get(m, "conversation")) == 10 &&
                json_object_get(m, "seq") == NULL &&
                strcmp(json_string_value(json_object_get(json_object_get(m, "event"), "kind")), "message") == 0 &&
                json_integer_value(json_object_get(json_object_get(m, "event"), "conversation")) == 10;
    json_decref(m);
    CHECK(shape);
    /* a cursor at the head: nothing to read, synced at once */
    at = s->nframes;
    h_text(s, "{\"type\":\"sync\",\"cursors\":{\"10\":102}}");
    CHECK_EQ(fs_count(&H.store, PL_READ_MENTIONS), 0);
    frame_trace(s, at, trace, sizeof trace);
    CHECK_STR(trace, "synced:102:online_only");
    fconn *all[] = {s};
    h_stop(all, 1);
}

/* More than MENTIONS_MAX mentions above the cursor: the latest 50, read
 * page by page. */
TEST(deliver_large_group_sends_the_latest_mentions) {
    h_start(0);
    H.cfg.large_group = 10;
    conv_spec cs = {10, 300, 1};
    session_members = 11;
    fconn *s = h_session(2, 1, &cs, 1, 1);                 /* held: the first sync is exact */
    CHECK(s != NULL);
    size_t at = s->nframes;
    h_text(s, "{\"type\":\"sync\",\"cursors\":{\"10\":0}}");
    pl_job *j = fs_take(&H.store, PL_READ_MENTIONS, 10);
    CHECK(j != NULL);
    CHECK_EQ(j->after, 0);
    int64_t ms[MENTIONS_MAX];
    for (int i = 0; i < MENTIONS_MAX; i++) ms[i] = 1 + i * 2;            /* 1 .. 99 */
    fs_answer_mentions(j, ms, MENTIONS_MAX, 1);
    turn();
    j = fs_take(&H.store, PL_READ_MENTIONS, 10);           /* the next page */
    CHECK(j != NULL);
    CHECK_EQ(j->after, 99);
    for (int i = 0; i < 30; i++) ms[i] = 100 + i * 5;                   /* 100 .. 245 */
    fs_answer_mentions(j, ms, 30, 0);
    turn();
    CHECK_EQ(fs_count(&H.store, PL_READ_EVENTS), 0);
    int64_t seqs[MENTIONS_MAX + 8];
    size_t n = 0, k = at;
    json_t *o;
    while ((o = next_frame(s, &k, "mention")) != NULL) {
        if (n < MENTIONS_MAX + 8) seqs[n++] = json_integer_value(json_object_get(json_object_get(o, "event"), "seq"));
        json_decref(o);
    }
    CHECK_EQ(n, MENTIONS_MAX);
    CHECK_EQ(seqs[0], 61);                                 /* the 20 oldest were dropped */
    CHECK_EQ(seqs[19], 99);
    CHECK_EQ(seqs[20], 100);
    CHECK_EQ(seqs[MENTIONS_MAX - 1], 245);
    k = at;
    o = next_frame(s, &k, "synced");
    CHECK(o != NULL);
    int synced_ok = json_integer_value(json_object_get(o, "seq")) == 300 &&
                    json_is_true(json_object_get(o, "online_only"));
    json_decref(o);
    CHECK(synced_ok);
    fconn *all[] = {s};
    h_stop(all, 1);
}

/* At or below the threshold a group replays as always; one that grows past
 * it (member_added events the stream processed) is large at the next sync. */
TEST(deliver_group_becomes_large_when_it_grows) {
    h_start(0);
    H.cfg.large_group = 3;
    conv_spec cs = {10, 20, 1};
    session_members = 3;
    fconn *s = h_session(2, 1, &cs, 1, 0);
    CHECK(s != NULL);
    size_t at = s->nframes;
    h_text(s, "{\"type\":\"sync\",\"cursors\":{\"10\":18}}");
    CHECK_EQ(fs_count(&H.store, PL_READ_MENTIONS), 0);
    pl_job *r = fs_take(&H.store, PL_READ_EVENTS, 10);
    CHECK(r != NULL);
    CHECK_EQ(r->after, 18);
    fs_answer_events(r, 20);
    turn();
    char trace[256];
    frame_trace(s, at, trace, sizeof trace);
    CHECK_STR(trace, "event:19 event:20 synced:20");
    h_publish(10, 21, PL_EV_MEMBER_ADDED, 7);              /* 4 members now */
    at = s->nframes;
    h_text(s, "{\"type\":\"sync\",\"cursors\":{\"10\":18}}");
    CHECK_EQ(fs_count(&H.store, PL_READ_EVENTS), 0);
    pl_job *j = fs_take(&H.store, PL_READ_MENTIONS, 10);
    CHECK(j != NULL);
    fs_answer_mentions(j, NULL, 0, 0);
    turn();
    frame_trace(s, at, trace, sizeof trace);
    CHECK_STR(trace, "synced:21:online_only");
    /* a member leaves: 3 again, replayed again */
    h_publish(10, 22, PL_EV_MEMBER_LEFT, 7);
    at = s->nframes;
    h_text(s, "{\"type\":\"sync\",\"cursors\":{\"10\":21}}");
    r = fs_take(&H.store, PL_READ_EVENTS, 10);
    CHECK(r != NULL);
    fs_answer_events(r, 22);
    turn();
    frame_trace(s, at, trace, sizeof trace);
    CHECK_STR(trace, "event:22 synced:22");
    /* off (0): never large */
    H.cfg.large_group = 0;
    h_publish(10, 23, PL_EV_MEMBER_ADDED, 8);
    h_publish(10, 24, PL_EV_MEMBER_ADDED, 9);
    at = s->nframes;
    h_text(s, "{\"type\":\"sync\",\"cursors\":{\"10\":22}}");
    CHECK_EQ(fs_count(&H.store, PL_READ_MENTIONS), 0);
    r = fs_take(&H.store, PL_READ_EVENTS, 10);
    CHECK(r != NULL);
    fs_answer_events(r, 24);
    turn();
    frame_trace(s, at, trace, sizeof trace);
    CHECK_STR(trace, "event:23 event:24 synced:24");
    fconn *all[] = {s};
    h_stop(all, 1);
}

/* A member removed from a large group while its sync is under way still
 * gets its own member_removed (the cursor stops just before it), then
 * nothing. */
TEST(deliver_large_group_sync_still_ends_at_the_removal) {
    h_start(0);
    H.cfg.large_group = 3;
    conv_spec cs = {10, 30, 1};
    session_members = 9;
    fconn *s = h_session(2, 1, &cs, 1, 1);
    CHECK(s != NULL);
    h_publish(10, 31, PL_EV_MESSAGE, 0);
    size_t at = s->nframes;
    h_text(s, "{\"type\":\"sync\",\"cursors\":{\"10\":10}}");
    pl_job *j = fs_take(&H.store, PL_READ_MENTIONS, 10);
    CHECK(j != NULL);
    h_publish(10, 32, PL_EV_MEMBER_REMOVED, 2);
    h_publish(10, 33, PL_EV_MESSAGE, 0);
    int64_t ms[] = {12, 31};
    fs_answer_mentions(j, ms, 2, 0);
    turn();
    pl_job *r = fs_take(&H.store, PL_READ_EVENTS, 10);
    CHECK(r != NULL);
    CHECK_EQ(r->after, 31);
    CHECK_EQ(r->before, 33);                               /* up to its removal only */
    fs_answer_events(r, 33);
    turn();
    char trace[256];
    frame_trace(s, at, trace, sizeof trace);
    CHECK_STR(trace, "mention:12 mention:31 event:32 synced:32:online_only");
    CHECK(sub_find(s->c.session, 10) == NULL);
    fconn *all[] = {s};
    h_stop(all, 1);
}

/* A handshake session held for its first message whose user is removed
 * meanwhile leaves the hold for that conversation at the removal: what
 * came up to it is sent at once from the conversation's recent frames (its
 * form as of the removal, not a second later; the ring's note 4), then
 * member_removed, then nothing: no receipt, typing or edit frame of the
 * conversation reaches it after the removal (audit L5). A store read at
 * the removal, as before, ran after the edit committed behind it: in a
 * cluster the removed user got the edited text (test_group.py's
 * test_a_held_handshake_session_ends_at_its_removal, now and then). */
TEST(deliver_a_held_session_ends_at_its_removal_at_once) {
    h_start(0);
    conv_spec cs = {10, 5, 1};
    fconn *s = h_session(2, 1, &cs, 1, 1);             /* held */
    CHECK(s != NULL);
    size_t at = s->nframes;
    h_publish(10, 6, PL_EV_MESSAGE, 0);
    pl_event rm, ed;                                    /* the removal, then an edit of 6, one turn */
    make_event(&rm, 10, 7, PL_EV_MEMBER_REMOVED, 1, 2);
    make_event(&ed, 10, 8, PL_EV_EDIT, 1, 0);
    ed.ref = 6;
    log_kind[7] = PL_EV_MEMBER_REMOVED;
    log_subject[7] = 2;
    log_kind[8] = PL_EV_EDIT;
    pl_bus_publish_event(H.bus, &rm, 0);
    pl_bus_publish_event(H.bus, &ed, 0);
    pl_event_release(&rm);
    pl_event_release(&ed);
    turn();
    CHECK_EQ(fs_count(&H.store, PL_READ_EVENTS), 0);   /* no read: the frames as published */
    pl_bus_receipt rc = {10, 3, 6, 6, 0, 3, 0, -1};     /* another member reads, after it */
    pl_bus_publish_receipt(H.bus, &rc);
    turn();
    char trace[128];
    frame_trace(s, at, trace, sizeof trace);
    CHECK_STR(trace, "event:6 event:7");
    CHECK(!has_frame(s, "receipt"));
    CHECK(sub_find(s->c.session, 10) == NULL);
    /* its first message, a sync, after the hold ran out: synced at the
     * removal, as if it came first (audit O8: not_found) */
    session_release_hold(s->c.session);
    h_text(s, "{\"type\":\"sync\",\"cursors\":{\"10\":5}}");
    turn();
    frame_trace(s, at, trace, sizeof trace);
    CHECK_STR(trace, "event:6 event:7 synced:7");
    CHECK(!has_frame(s, "error"));
    fconn *all[] = {s};
    h_stop(all, 1);
}

/* The ring a held subscription started (the ring's note 4) serves its
 * catch-up when the hold ends, then goes at the next event: a DM with one
 * or two sessions does not keep one. */
TEST(deliver_a_ring_kept_for_a_hold_goes_after_it) {
    h_start(0);
    conv_spec cs = {10, 5, 1};
    fconn *s = h_session(2, 1, &cs, 1, 1);             /* held */
    CHECK(s != NULL);
    size_t at = s->nframes;
    CHECK(!conv_find(10)->has_ring);
    h_publish(10, 6, PL_EV_MESSAGE, 0);
    CHECK(conv_find(10)->has_ring);
    session_release_hold(s->c.session);
    turn();
    CHECK_EQ(fs_count(&H.store, PL_READ_EVENTS), 0);   /* from the frames */
    h_publish(10, 7, PL_EV_MESSAGE, 0);
    CHECK(!conv_find(10)->has_ring);
    char trace[64];
    frame_trace(s, at, trace, sizeof trace);
    CHECK_STR(trace, "event:6 event:7");
    fconn *all[] = {s};
    h_stop(all, 1);
}

/* Actions are submitted as their store jobs and answered with `ok` (seq
 * only when an event was appended) or the store's error with its reason. */
TEST(actions_reply_ok_or_the_store_error) {
    h_start(0);
    conv_spec cs = {10, 5, 1};
    fconn *s = h_session(2, 1, &cs, 1, 0);
    CHECK(s != NULL);
    h_text(s, "{\"type\":\"edit\",\"req\":1,\"conversation\":10,\"seq\":4,\"body\":\"new\"}");
    pl_job *j = fs_take(&H.store, PL_JOB_MESSAGE_EDIT, 10);
    CHECK(j != NULL);
    CHECK(j->user == 2 && j->seq == 4 && j->body_len == 3 && memcmp(j->body, "new", 3) == 0);
    j->result = PL_STORE_OK;
    j->has_event = 1;
    make_event(&j->event, 10, 6, PL_EV_EDIT, 2, 0);
    j->done(j);
    size_t at = 0;
    json_t *o = next_frame(s, &at, "ok");
    CHECK(o != NULL);
    int ok1 = json_integer_value(json_object_get(o, "req")) == 1 &&
              json_integer_value(json_object_get(o, "conversation")) == 10 &&
              json_integer_value(json_object_get(o, "seq")) == 6 && json_is_true(json_object_get(o, "changed"));
    json_decref(o);
    CHECK(ok1);
    h_text(s, "{\"type\":\"react\",\"req\":2,\"conversation\":10,\"seq\":4,\"emoji\":\"\xf0\x9f\x91\x8d\",\"op\":\"remove\"}");
    j = fs_take(&H.store, PL_JOB_REACTION, 10);
    CHECK(j != NULL);
    CHECK(j->flags == PL_JOB_REMOVE && strcmp(j->emoji, "\xf0\x9f\x91\x8d") == 0);
    j->result = PL_STORE_OK;                               /* nothing changed */
    j->done(j);
    o = next_frame(s, &at, "ok");
    CHECK(o != NULL);
    int ok2 = json_object_get(o, "seq") == NULL && json_is_false(json_object_get(o, "changed"));
    json_decref(o);
    CHECK(ok2);
    static const struct { int result; const char *why, *code, *message; } errs[] = {
        {PL_STORE_EGONE, "deleted", "gone", "deleted"},
        {PL_STORE_EFORBID, "not your message", "forbidden", "not your message"},
        {PL_STORE_EINVAL, "not a message", "bad_request", "not a message"},
        {PL_STORE_ENOTFOUND, NULL, "not_found", "no such conversation or message"},
        {PL_STORE_EUNAVAIL, NULL, "unavailable", NULL},
    };
    for (size_t i = 0; i < sizeof errs / sizeof errs[0]; i++) {
        h_text(s, "{\"type\":\"pin\",\"req\":%zu,\"conversation\":10,\"seq\":4,\"op\":\"unpin\"}", 10 + i);
        j = fs_take(&H.store, PL_JOB_PIN, 10);
        CHECK(j != NULL);
        CHECK_EQ(j->flags, PL_JOB_REMOVE);
        j->result = errs[i].result;
        j->why = errs[i].why;
        j->done(j);
        o = next_frame(s, &at, "error");
        CHECK(o != NULL);
        int same = json_integer_value(json_object_get(o, "req")) == (json_int_t)(10 + i) &&
                   strcmp(json_string_value(json_object_get(o, "code")), errs[i].code) == 0 &&
                   (!errs[i].message || strcmp(json_string_value(json_object_get(o, "message")), errs[i].message) == 0);
        json_decref(o);
        CHECK(same);
    }
    size_t before = H.store.submitted;               /* seq 0 is no message: not_found at once */
    h_text(s, "{\"type\":\"delete\",\"req\":20,\"conversation\":10,\"seq\":0}");
    CHECK_EQ(H.store.submitted, before);
    o = next_frame(s, &at, "error");
    CHECK(o != NULL);
    int nf = strcmp(json_string_value(json_object_get(o, "code")), "not_found") == 0;
    json_decref(o);
    CHECK(nf);
    h_text(s, "{\"type\":\"notify\",\"req\":3,\"conversation\":10,\"level\":\"none\"}");
    j = fs_take(&H.store, PL_JOB_NOTIFY_SET, 10);
    CHECK(j != NULL);
    CHECK_EQ(j->level, PL_NOTIFY_NONE);
    j->result = PL_STORE_OK;
    j->done(j);
    o = next_frame(s, &at, "ok");
    CHECK(o != NULL);
    int ok3 = json_integer_value(json_object_get(o, "req")) == 3 && json_is_true(json_object_get(o, "changed")) &&
              json_object_get(o, "seq") == NULL;
    json_decref(o);
    CHECK(ok3);
    h_text(s, "{\"type\":\"delete\",\"req\":4,\"conversation\":10,\"seq\":4}");
    j = fs_take(&H.store, PL_JOB_MESSAGE_DELETE, 10);
    CHECK(j != NULL);
    CHECK_EQ(j->seq, 4);
    j->result = PL_STORE_OK;
    j->has_event = 1;
    make_event(&j->event, 10, 7, PL_EV_DELETE, 2, 0);
    j->done(j);
    o = next_frame(s, &at, "ok");
    CHECK(o != NULL);
    int ok4 = json_integer_value(json_object_get(o, "seq")) == 7;
    json_decref(o);
    CHECK(ok4);
    h_text(s, "{\"type\":\"pins\",\"req\":5,\"conversation\":10}");
    j = fs_take(&H.store, PL_READ_PINS, 10);
    CHECK(j != NULL);
    CHECK_EQ(j->user, 2);
    j->events = pl_calloc(1, sizeof *j->events);
    make_event(&j->events[0], 10, 4, PL_EV_MESSAGE, 1, 0);
    j->events[0].annot = pl_strdup("\"pinned\":true");
    j->nevents = 1;
    j->result = PL_STORE_OK;
    j->done(j);
    o = next_frame(s, &at, "pins");
    CHECK(o != NULL);
    json_t *evs = json_object_get(o, "events");
    int pins_ok = json_integer_value(json_object_get(o, "req")) == 5 &&
                  json_integer_value(json_object_get(o, "conversation")) == 10 && json_array_size(evs) == 1 &&
                  json_is_true(json_object_get(json_array_get(evs, 0), "pinned")) &&
                  json_integer_value(json_object_get(json_array_get(evs, 0), "seq")) == 4;
    json_decref(o);
    CHECK(pins_ok);
    fconn *all[] = {s};
    h_stop(all, 1);
}

/* Action events (kinds 6..9) are delivered like messages, with their
 * current form, also when held back for reordering (copied). */
TEST(deliver_action_events_flow_like_messages) {
    h_start(1);                                            /* cluster mode: events may come out of order */
    conv_spec cs = {10, 5, 1};
    fconn *s = h_session(2, 1, &cs, 1, 0);
    CHECK(s != NULL);
    static const int kinds[] = {PL_EV_EDIT, PL_EV_REACTION, PL_EV_PIN, PL_EV_DELETE};   /* seqs 7, 8, 9, 6 */
    static const int64_t at_seq[] = {7, 8, 9, 6};
    for (int i = 0; i < 4; i++) {
        pl_event e;
        make_event(&e, 10, at_seq[i], kinds[i], 1, 0);
        free(e.data);
        e.data = pl_strdup("{\"target\":4}");
        e.ref = 4;
        e.annot = kinds[i] == PL_EV_EDIT ? pl_strdup("\"deleted\":true") : NULL;   /* an edit of a deleted message */
        pl_bus_publish_event(H.bus, &e, 0);
        pl_event_release(&e);
        turn();
    }
    CHECK_EQ(fs_count(&H.store, PL_READ_EVENTS), 0);
    char trace[256];
    frame_trace(s, 0, trace, sizeof trace);
    CHECK_STR(trace, "event:6 event:7 event:8 event:9");
    size_t at = 0;
    json_t *o = next_frame(s, &at, "event");
    json_decref(o);
    o = next_frame(s, &at, "event");                       /* 7, the edit */
    CHECK(o != NULL);
    int edit_ok = strcmp(json_string_value(json_object_get(o, "kind")), "edit") == 0 &&
                  json_is_true(json_object_get(o, "deleted")) &&
                  json_integer_value(json_object_get(json_object_get(o, "data"), "target")) == 4;
    json_decref(o);
    CHECK(edit_ok);
    fconn *all[] = {s};
    h_stop(all, 1);
}

/* Replays read as the session's user (messages' current form for it); a
 * read the store answers from a newer membership than the stream knows is
 * read again without the user, and the stream stays exact. */
TEST(deliver_replay_reads_as_the_user_then_as_the_stream) {
    h_start(0);
    conv_spec cs = {10, 9, 1};
    fconn *s = h_session(2, 1, &cs, 1, 0);
    CHECK(s != NULL);
    h_text(s, "{\"type\":\"sync\",\"cursors\":{\"10\":3}}");
    pl_job *j = fs_take(&H.store, PL_READ_EVENTS, 10);
    CHECK(j != NULL);
    CHECK_EQ(j->user, 2);
    j->result = PL_STORE_ENOTFOUND;                /* removed, as far as the store knows */
    j->done(j);
    turn();
    CHECK_EQ(s->close_code, 0);
    j = fs_take(&H.store, PL_READ_EVENTS, 10);     /* read again, as the stream */
    CHECK(j != NULL);
    CHECK_EQ(j->user, 0);
    CHECK_EQ(j->after, 3);
    fs_answer_events(j, 6);                        /* a short page: 4..6 */
    turn();
    j = fs_take(&H.store, PL_READ_EVENTS, 10);     /* the next page as the user again */
    CHECK(j != NULL);
    CHECK_EQ(j->user, 2);
    CHECK_EQ(j->after, 6);
    int64_t later[] = {8, 9};                      /* the store started later (a new joining) */
    fs_answer_mentions(j, later, 2, 0);            /* (messages at those seqs) */
    turn();
    j = fs_take(&H.store, PL_READ_EVENTS, 10);
    CHECK(j != NULL);
    CHECK_EQ(j->user, 0);
    CHECK_EQ(j->after, 6);
    fs_answer_events(j, 9);
    turn();
    int64_t seqs[16];
    size_t n = event_seqs(s, 10, seqs, 16);
    CHECK_EQ(n, 6);
    for (size_t i = 0; i < n; i++) CHECK_EQ(seqs[i], 4 + (int64_t)i);
    CHECK(has_frame(s, "synced"));
    CHECK_EQ(fs_count(&H.store, PL_READ_EVENTS), 0);
    fconn *all[] = {s};
    h_stop(all, 1);
}

/* Cluster mode: a new session's sync, while the events it asks for are
 * committed (its session read saw them) but still on their way over the
 * bus to this node's stream, gets every one of them before `synced`, whose
 * seq is the head the store had; not `synced` at the stream's older head
 * first (found by the integration suite, issue 12). */
TEST(deliver_sync_waits_for_committed_events_still_on_the_bus) {
    h_start(1);
    conv_spec old = {10, 0, 1};
    fconn *a = h_session(2, 1, &old, 1, 0);       /* the stream: published 0 */
    CHECK(a != NULL);
    conv_spec now = {10, 2, 1};
    fconn *b = h_session(2, 2, &now, 1, 1);       /* its read: 2 committed */
    CHECK(b != NULL);
    h_text(b, "{\"type\":\"sync\",\"cursors\":{\"10\":0}}");
    CHECK(!has_frame(b, "synced"));               /* nothing to send yet, and not done */
    h_publish(10, 1, PL_EV_MESSAGE, 0);
    h_publish(10, 2, PL_EV_MESSAGE, 0);
    size_t at = 0;
    json_t *o;
    int64_t got[8];
    size_t n = 0;
    int64_t synced = -1;
    while ((o = next_frame(b, &at, NULL)) != NULL) {
        const char *t = json_string_value(json_object_get(o, "type"));
        if (strcmp(t, "event") == 0 && n < 8) got[n++] = json_integer_value(json_object_get(o, "seq"));
        if (strcmp(t, "synced") == 0) {
            CHECK_EQ(synced, -1);
            CHECK_EQ(n, 2);                       /* after both events */
            synced = json_integer_value(json_object_get(o, "seq"));
        }
        json_decref(o);
    }
    CHECK_EQ(n, 2);
    CHECK_EQ(got[0], 1);
    CHECK_EQ(got[1], 2);
    CHECK_EQ(synced, 2);
    fconn *all[] = {a, b};
    h_stop(all, 2);
}

/* ---- Server-Sent Events sessions (chat/sse.c) -------------------------------------- */

typedef struct sse_ev {
    json_t *data;                  /* NULL for a comment-only block          */
    char    id[512];               /* "" when the event has no id            */
    int     comment;
} sse_ev;

/* Splits f's SSE bytes into events (complete ones only). */
static size_t sse_events(fconn *f, sse_ev *out, size_t max) {
    size_t n = 0;
    const char *p = f->raw.p, *end = p ? p + f->raw.len : NULL;
    while (p && p < end && n < max) {
        const char *blk = strstr(p, "\n\n");
        if (!blk) break;
        sse_ev *e = &out[n++];
        memset(e, 0, sizeof *e);
        for (const char *ln = p; ln < blk + 1;) {
            const char *nl = memchr(ln, '\n', (size_t)(blk + 1 - ln));
            size_t len = (size_t)(nl - ln);
            if (len >= 6 && memcmp(ln, "data: ", 6) == 0) e->data = json_loadb(ln + 6, len - 6, 0, NULL);
            else if (len >= 4 && memcmp(ln, "id: ", 4) == 0 && len - 4 < sizeof e->id) memcpy(e->id, ln + 4, len - 4);
            else if (len && ln[0] == ':') e->comment = 1;
            ln = nl + 1;
        }
        p = blk + 2;
    }
    return n;
}

static void sse_release(sse_ev *e, size_t n) {
    for (size_t i = 0; i < n; i++) json_decref(e[i].data);
}

static const char *ev_type(const sse_ev *e) {
    return e->data ? json_string_value(json_object_get(e->data, "type")) : "";
}

/* The cursor of conv in an id (-1: not named, -2: not a valid id). */
static int64_t id_cursor(const char *id, int64_t conv) {
    pl_cursor *c;
    size_t n;
    const char *why;
    if (pl_cursor_id_decode(id, strlen(id), &c, &n, &why)) return -2;
    int64_t r = -1;
    for (size_t i = 0; i < n; i++)
        if (c[i].conv == conv) r = c[i].seq;
    free(c);
    return r;
}

static int sse_result = 99;
static void sse_cb(void *arg, int result) { *(int *)arg = result; }

/* An SSE session of user over convs; resume (copied) when resuming. */
static fconn *h_sse(int64_t user, int64_t login, const conv_spec *convs, size_t n, int resuming,
                    const pl_cursor *resume, size_t nresume) {
    H.cfg.sse_heartbeat = 15;
    fconn *f = fconn_new();
    f->sse = 1;
    f->c.mode = PL_CONN_SSE;
    char tok[PL_AUTH_TOKEN_MAX];
    pl_auth_access_token(user, login, 0, pl_now_ms() / 1000 + 600, tok);
    pl_cursor *r = nresume ? pl_malloc(nresume * sizeof *r) : NULL;
    if (nresume) memcpy(r, resume, nresume * sizeof *r);
    sse_result = 99;
    if (pl_chat_sse_open(&f->c, tok, strlen(tok), resuming, r, nresume, sse_cb, &sse_result)) return NULL;
    pl_job *j = fs_take(&H.store, PL_READ_SESSION, 0);
    if (!j) return NULL;
    j->login_out.id = login;
    j->login_out.user = user;
    j->user_out.id = user;
    snprintf(j->user_out.username, sizeof j->user_out.username, "u%lld", (long long)user);
    j->convs = n ? pl_calloc(n, sizeof *j->convs) : NULL;
    for (size_t i = 0; i < n; i++) {
        j->convs[i].id = convs[i].id;
        j->convs[i].last_seq = convs[i].last_seq;
        j->convs[i].joined_seq = convs[i].joined_seq ? convs[i].joined_seq : 1;
        j->convs[i].kind = PL_CONV_GROUP;
        j->convs[i].member_count = 2;
    }
    j->nconvs = n;
    j->result = PL_STORE_OK;
    j->done(j);
    fs_ok_all(&H.store, PL_READ_CONV_HEADS);
    turn();
    return sse_result == 0 ? f : NULL;
}

/* Every conversation event carries the session's cursors after it; a new
 * stream's `ready` carries the starting ones; other frames carry none. */
TEST(sse_ids_hold_every_cursor) {
    h_start(0);
    conv_spec cs[] = {{10, 5, 1}, {11, 3, 1}};
    fconn *f = h_sse(2, 1, cs, 2, 0, NULL, 0);
    CHECK(f != NULL);
    h_publish(10, 6, PL_EV_MESSAGE, 0);
    h_publish(11, 4, PL_EV_MESSAGE, 0);
    h_publish(10, 7, PL_EV_MESSAGE, 0);
    pl_chat_sse_timeout(&f->c);                    /* a heartbeat */
    sse_ev ev[16];
    size_t n = sse_events(f, ev, 16);
    CHECK_EQ(n, 5);
    CHECK_STR(ev_type(&ev[0]), "ready");
    CHECK_EQ(id_cursor(ev[0].id, 10), 5);
    CHECK_EQ(id_cursor(ev[0].id, 11), 3);
    int64_t want[3][3] = {{10, 6, 3}, {11, 6, 4}, {10, 7, 4}};   /* conv; then cursors of 10, 11 */
    for (int i = 0; i < 3; i++) {
        CHECK_STR(ev_type(&ev[1 + i]), "event");
        CHECK_EQ(json_integer_value(json_object_get(ev[1 + i].data, "conversation")), want[i][0]);
        CHECK_EQ(id_cursor(ev[1 + i].id, 10), want[i][1]);
        CHECK_EQ(id_cursor(ev[1 + i].id, 11), want[i][2]);
    }
    CHECK(ev[4].comment && !ev[4].data && !ev[4].id[0]);
    CHECK(strstr(f->raw.p, ": ping\n\n") != NULL);
    CHECK(f->c.deadline > pl_mono_ms());           /* the next heartbeat is armed */
    sse_release(ev, n);
    fconn *all[] = {f};
    h_stop(all, 1);
}

/* A resume from an id: like a sync with its cursors; a conversation it does
 * not name (joined since) from its joining; one the user left: an error.
 * The resumed stream's `ready` has no id (the client's last one stays). */
TEST(sse_resume_is_exact) {
    h_start(0);
    conv_spec cs[] = {{10, 8, 1}, {11, 5, 1}, {12, 4, 2}};
    pl_cursor from[] = {{10, 6}, {11, 5}, {99, 3}};
    fconn *f = h_sse(2, 1, cs, 3, 1, from, 3);
    CHECK(f != NULL);
    pl_job *j10 = fs_take(&H.store, PL_READ_EVENTS, 10);
    pl_job *j12 = fs_take(&H.store, PL_READ_EVENTS, 12);
    CHECK(j10 && j12);
    CHECK(fs_take(&H.store, PL_READ_EVENTS, 11) == NULL);   /* up to date */
    CHECK_EQ(j10->after, 6);
    CHECK_EQ(j12->after, 1);                      /* from its joining at 2 */
    fs_answer_events(j10, 8);
    fs_answer_events(j12, 4);
    turn();
    sse_ev ev[32];
    size_t n = sse_events(f, ev, 32);
    CHECK_STR(ev_type(&ev[0]), "ready");
    CHECK(!ev[0].id[0]);
    int64_t got10[8], got12[8];
    size_t n10 = 0, n12 = 0, nsynced = 0, nerr = 0;
    const char *last_id = NULL;
    for (size_t i = 1; i < n; i++) {
        const char *t = ev_type(&ev[i]);
        if (strcmp(t, "event") == 0) {
            int64_t conv = json_integer_value(json_object_get(ev[i].data, "conversation"));
            int64_t seq = json_integer_value(json_object_get(ev[i].data, "seq"));
            if (conv == 10) got10[n10++] = seq;
            if (conv == 12) got12[n12++] = seq;
            CHECK(ev[i].id[0]);
            last_id = ev[i].id;
        } else if (strcmp(t, "synced") == 0) {
            nsynced++;
        } else if (strcmp(t, "error") == 0) {
            CHECK_EQ(json_integer_value(json_object_get(ev[i].data, "conversation")), 99);
            nerr++;
        }
    }
    CHECK_EQ(n10, 2);
    CHECK_EQ(got10[0], 7);
    CHECK_EQ(got10[1], 8);
    CHECK_EQ(n12, 3);
    CHECK_EQ(got12[0], 2);
    CHECK_EQ(got12[2], 4);
    CHECK_EQ(nsynced, 3);
    CHECK_EQ(nerr, 1);
    CHECK(last_id != NULL);
    CHECK_EQ(id_cursor(last_id, 10), 8);
    CHECK_EQ(id_cursor(last_id, 11), 5);
    CHECK_EQ(id_cursor(last_id, 12), 4);
    CHECK_EQ(id_cursor(last_id, 99), -1);         /* not a member: not named again */
    sse_release(ev, n);
    fconn *all[] = {f};
    h_stop(all, 1);
}

/* A resume served from the frame rings (conversations with at least 16
 * sessions here) goes out at once, conversation after conversation: every
 * id must name each conversation at what this stream sent of it, also the
 * ones whose replay has not started yet. Before, those were named at their
 * heads, and a resume from such an id lost their events. */
TEST(sse_resume_ids_from_the_frame_rings) {
    h_start(0);
    conv_spec cs[] = {{10, 1, 1}, {11, 1, 1}};
    fconn *all[17];
    for (int i = 0; i < 16; i++) {
        all[i] = h_session(100 + i, 100 + i, cs, 2, 0);
        CHECK(all[i] != NULL);
    }
    for (int64_t seq = 2; seq <= 5; seq++) {
        h_publish(10, seq, PL_EV_MESSAGE, 0);
        h_publish(11, seq, PL_EV_MESSAGE, 0);
    }
    conv_spec heads[] = {{10, 5, 1}, {11, 5, 1}};
    pl_cursor from[] = {{10, 2}, {11, 3}};
    fconn *f = all[16] = h_sse(2, 1, heads, 2, 1, from, 2);
    CHECK(f != NULL);
    CHECK_EQ(fs_count(&H.store, PL_READ_EVENTS), 0);   /* both from the rings */
    sse_ev ev[32];
    size_t n = sse_events(f, ev, 32);
    int64_t had[2] = {2, 3};
    int nev = 0, nsynced = 0;
    for (size_t i = 0; i < n; i++) {
        if (strcmp(ev_type(&ev[i]), "synced") == 0) nsynced++;
        if (strcmp(ev_type(&ev[i]), "event") != 0) continue;
        int64_t conv = json_integer_value(json_object_get(ev[i].data, "conversation"));
        int64_t seq = json_integer_value(json_object_get(ev[i].data, "seq"));
        int k = conv == 11;
        CHECK_EQ(seq, had[k] + 1);
        had[k] = seq;
        CHECK_EQ(id_cursor(ev[i].id, 10), had[0]);
        CHECK_EQ(id_cursor(ev[i].id, 11), had[1]);
        nev++;
    }
    CHECK_EQ(nev, 5);                              /* 3..5 of 10, 4..5 of 11 */
    CHECK_EQ(nsynced, 2);
    sse_release(ev, n);
    h_stop(all, 17);
}

/* The slow-consumer bound holds with SSE sizes; the close is a last `close`
 * event, then the end of the stream. Bad tokens never make a session. */
TEST(sse_slow_consumer_and_refusals) {
    h_start(0);
    conv_spec cs = {10, 1, 1};
    fconn *f = h_sse(2, 1, &cs, 1, 0, NULL, 0);
    CHECK(f != NULL);
    f->c.qbytes = (uint32_t)H.cfg.max_outbound - 10;   /* nearly full, not read */
    h_publish(10, 2, PL_EV_MESSAGE, 0);
    sse_ev ev[8];
    size_t n = sse_events(f, ev, 8);
    CHECK_EQ(n, 2);                                /* ready, then close: the event did not fit */
    CHECK_STR(ev_type(&ev[1]), "close");
    CHECK_EQ(json_integer_value(json_object_get(ev[1].data, "code")), PL_CLOSE_SLOW_CONSUMER);
    CHECK(f->shut);
    sse_release(ev, n);
    h_publish(10, 3, PL_EV_MESSAGE, 0);            /* nothing after the close */
    CHECK_EQ(sse_events(f, ev, 8), 2);
    sse_release(ev, 2);

    size_t before = pl_chat_session_count();
    fconn *g = fconn_new();
    g->sse = 1;
    sse_result = 99;
    CHECK_EQ(pl_chat_sse_open(&g->c, "v1.bad", 6, 0, NULL, 0, sse_cb, &sse_result), PL_STORE_ENOTFOUND);
    CHECK_EQ(sse_result, 99);                      /* the callback never runs on an error */
    CHECK(g->c.session == NULL);
    CHECK_EQ(pl_chat_session_count(), before);
    /* a revoked login: the callback says so, the session is gone */
    char tok[PL_AUTH_TOKEN_MAX];
    pl_auth_access_token(3, 7, 0, pl_now_ms() / 1000 + 600, tok);
    CHECK_EQ(pl_chat_sse_open(&g->c, tok, strlen(tok), 0, NULL, 0, sse_cb, &sse_result), 0);
    pl_job *j = fs_take(&H.store, PL_READ_SESSION, 0);
    CHECK(j != NULL);
    j->login_out.user = 3;
    j->login_out.revoked = 1;
    j->result = PL_STORE_OK;
    j->done(j);
    CHECK_EQ(sse_result, PL_STORE_ENOTFOUND);
    CHECK(g->c.session == NULL);
    CHECK_EQ(pl_chat_session_count(), before);
    CHECK(g->raw.len == 0);                        /* nothing was written: HTTP answers 401 */
    fconn *all[] = {f, g};
    h_stop(all, 2);
}

/* ---- flow control (chat/flow.c) ---------------------------------------------------- */

#include "chat/flow.h"

/* The loop's check handle ends each turn with flow_turn(); the test loop
 * has no listener to keep it alive, so the tests end turns themselves. */
static void fturn(void) {
    turn();
    flow_turn();
}

/* Takes the queued replay read of user's session in conv. */
static pl_job *fs_take_user_read(int64_t conv, int64_t user) {
    for (size_t i = 0; i < H.store.n; i++) {
        pl_job *j = H.store.q[i];
        if (j->op == PL_READ_EVENTS && j->conv == conv && j->user == user) {
            memmove(&H.store.q[i], &H.store.q[i + 1], (H.store.n - i - 1) * sizeof *H.store.q);
            H.store.n--;
            return j;
        }
    }
    return NULL;
}

/* Answers user's replay reads in conv from a log of `have` events until it
 * asks for nothing more (it is live). */
static void flow_catch_up(int64_t conv, int64_t user, int64_t have) {
    for (int k = 0; k < 64; k++) {
        fturn();
        pl_job *j = fs_take_user_read(conv, user);
        if (!j) return;
        fs_answer_events(j, have);
    }
}

/* A send from f (req = client_msg_id = "s<req>") to conv, committed at seq:
 * published the way the commit hook does, then completed. 0 if no store
 * job came (refused). */
static int flow_send(fconn *f, int req, int64_t conv, int64_t seq) {
    h_text(f, "{\"type\":\"send\",\"req\":%d,\"conversation\":%lld,\"client_msg_id\":\"s%d\",\"body\":\"b\"}", req,
           (long long)conv, req);
    pl_job *j = fs_take(&H.store, PL_JOB_MESSAGE_SEND, conv);
    if (!j) return 0;
    h_publish(conv, seq, PL_EV_MESSAGE, 0);
    flow_turn();
    j->result = PL_STORE_OK;
    make_event(&j->event, conv, seq, PL_EV_MESSAGE, 1, 0);
    j->done(j);
    return 1;
}

/* The reqs of f's `sent` frames, in order. */
static size_t sent_reqs(fconn *f, int64_t *out, size_t max) {
    size_t n = 0, at = 0;
    json_t *o;
    while ((o = next_frame(f, &at, "sent")) != NULL) {
        if (n < max) out[n++] = json_integer_value(json_object_get(o, "req"));
        json_decref(o);
    }
    return n;
}

static void flow_start(int lag) {
    h_start(0);
    H.cfg.flow_lag = lag;
    H.cfg.flow_share = 25;
    deliver_ring_min_subs(1000);    /* members catch up from the store, not from recent frames */
}
static void flow_stop(fconn **conns, size_t n) { h_stop(conns, n); }

/* A sender s (user 1, live), readers r1, r2 (users 2, 3) authenticated at
 * the handshake; 5 events published while they are held, then their holds
 * end: both catch up from the store, their reads left pending. */
static void flow_setup(fconn **s, fconn **r1, fconn **r2, int lag) {
    flow_start(lag);
    conv_spec cs[2] = {{10, 0, 1}, {11, 0, 1}};
    *s = h_session(1, 1, cs, 2, 0);
    *r1 = h_session(2, 1, cs, 1, 1);
    *r2 = h_session(3, 1, cs, 1, 1);
    for (int64_t q = 1; q <= 5; q++) h_publish(10, q, PL_EV_MESSAGE, 0);
    h_text(*r1, "{\"type\":\"ping\"}");           /* not a sync: the holds end */
    h_text(*r2, "{\"type\":\"ping\"}");
}

/* Pushback engages when two subscriptions are owed catch-up above the
 * bound, holds the ack (the send is durable: it was published), and
 * releases it once fewer than two lag by half the bound. */
TEST(flow_engages_above_the_bound_and_releases_below) {
    fconn *s, *r1, *r2;
    flow_setup(&s, &r1, &r2, 4);
    CHECK(s && r1 && r2);
    CHECK_EQ(fs_count(&H.store, PL_READ_EVENTS), 2);
    chat_conv *cv = conv_find(10);
    CHECK(cv != NULL && flow_engaged(cv));
    CHECK(flow_send(s, 1, 10, 6));
    int64_t reqs[8];
    CHECK_EQ(sent_reqs(s, reqs, 8), 0);           /* held */
    CHECK_EQ(flow_held(), 1);
    int64_t seqs[16];
    CHECK_EQ(event_seqs(s, 10, seqs, 16), 6);     /* and delivered live meanwhile */
    flow_catch_up(10, 2, 6);                      /* r1 catches up: one left behind */
    CHECK_EQ(event_seqs(r1, 10, seqs, 16), 6);
    fturn();
    CHECK(!flow_engaged(cv));
    CHECK_EQ(flow_held(), 0);
    CHECK_EQ(sent_reqs(s, reqs, 8), 1);
    CHECK_EQ(reqs[0], 1);
    fconn *all[] = {s, r1, r2};
    flow_stop(all, 3);
}

/* One slow reader (its queue above the high-water mark) or one member
 * catching up never holds a conversation's acks; readers that do not read
 * hold them only at --flow-share of the conversation. */
TEST(flow_single_slow_reader_does_not_engage) {
    flow_start(4);
    conv_spec cs = {10, 0, 1};
    fconn *s = h_session(1, 1, &cs, 1, 0);
    fconn *r[4];
    for (int i = 0; i < 4; i++) r[i] = h_session(2 + i, 1, &cs, 1, i == 3);
    CHECK(s && r[0] && r[1] && r[2] && r[3]);
    r[0]->c.high = 1;                             /* a reader that does not read */
    r[0]->c.qbytes = 300000;
    CHECK(flow_send(s, 1, 10, 1));
    int64_t reqs[8];
    CHECK_EQ(sent_reqs(s, reqs, 8), 1);           /* at once */
    for (int64_t q = 2; q <= 8; q++) h_publish(10, q, PL_EV_MESSAGE, 0);
    h_text(r[3], "{\"type\":\"ping\"}");          /* r3 catches up from 0, read pending */
    CHECK_EQ(fs_count(&H.store, PL_READ_EVENTS), 1);
    r[0]->c.high = 0;
    CHECK(flow_send(s, 2, 10, 9));                /* one member owed 8 events */
    CHECK_EQ(sent_reqs(s, reqs, 8), 2);
    r[0]->c.high = 1;                             /* a slow reader and a catching-up one: */
    CHECK(flow_send(s, 3, 10, 10));               /* 2 of 5 lag (need: max(2, 25 %)) */
    CHECK_EQ(sent_reqs(s, reqs, 8), 2);
    CHECK_EQ(flow_held(), 1);
    r[0]->c.high = 0;                             /* it read */
    fturn();
    CHECK_EQ(sent_reqs(s, reqs, 8), 3);
    CHECK_EQ(reqs[2], 3);
    CHECK(r[0]->close_code == 0 && r[3]->close_code == 0);   /* nobody was closed for it */
    fconn *all[] = {s, r[0], r[1], r[2], r[3]};
    flow_stop(all, 5);
}

/* Every committed send is acknowledged exactly once, in the order of the
 * connection's sends (an ack to a conversation that does not push back
 * waits behind a held one); a sender that does not wait for its acks is
 * refused past FLOW_CONN_HELD_MAX (nothing stored); a closed connection's
 * held acks are dropped. */
TEST(flow_acks_are_sent_once_in_order) {
    fconn *s, *r1, *r2;
    flow_setup(&s, &r1, &r2, 4);
    CHECK(s && r1 && r2);
    CHECK(flow_send(s, 1, 10, 6));
    CHECK(flow_send(s, 2, 10, 7));
    CHECK(flow_send(s, 3, 11, 1));                /* conversation 11 is not behind */
    CHECK(!flow_engaged(conv_find(11)));
    CHECK(flow_send(s, 4, 10, 8));
    int64_t reqs[FLOW_CONN_HELD_MAX + 8];
    CHECK_EQ(sent_reqs(s, reqs, 8), 0);
    CHECK_EQ(flow_held(), 4);
    int64_t seq = 8;
    for (int i = 5; i <= FLOW_CONN_HELD_MAX; i++) CHECK(flow_send(s, i, 10, ++seq));
    CHECK_EQ(flow_held(), FLOW_CONN_HELD_MAX);
    size_t before = H.store.submitted;
    CHECK(!flow_send(s, 999, 10, seq + 1));      /* refused, nothing stored */
    CHECK_EQ(H.store.submitted, before);
    size_t at = 0;
    json_t *e = next_frame(s, &at, "error");
    CHECK(e != NULL);
    int refused = strcmp(json_string_value(json_object_get(e, "code")), "rate_limited") == 0 &&
                  json_integer_value(json_object_get(e, "req")) == 999 &&
                  json_real_value(json_object_get(e, "retry_after")) > 0;
    json_decref(e);
    CHECK(refused);
    flow_catch_up(10, 2, seq);
    flow_catch_up(10, 3, seq);
    fturn();
    size_t n = sent_reqs(s, reqs, FLOW_CONN_HELD_MAX + 8);
    CHECK_EQ(n, FLOW_CONN_HELD_MAX);
    for (size_t i = 0; i < n; i++) CHECK_EQ(reqs[i], (int64_t)i + 1);
    CHECK_EQ(flow_held(), 0);
    /* held, then the sender goes away: dropped (nobody to tell), once */
    r1->c.high = r2->c.high = 1;                  /* two of three do not read */
    fturn();
    CHECK(flow_engaged(conv_find(10)));
    CHECK(flow_send(s, 1000, 10, ++seq));
    CHECK_EQ(flow_held(), 1);
    s->c.closing = 1;
    fturn();
    CHECK_EQ(flow_held(), 0);
    CHECK_EQ(sent_reqs(s, reqs, FLOW_CONN_HELD_MAX + 8), FLOW_CONN_HELD_MAX);
    s->c.closing = 0;
    r1->c.high = r2->c.high = 0;
    fconn *all[] = {s, r1, r2};
    flow_stop(all, 3);
}

/* Commits every queued send to conv in order, at *seq + 1, ...: published
 * as the commit hook does, then completed. */
static void flow_commit_queued(int64_t conv, int64_t *seq) {
    pl_job *j;
    while ((j = fs_take(&H.store, PL_JOB_MESSAGE_SEND, conv)) != NULL) {
        h_publish(conv, ++*seq, PL_EV_MESSAGE, 0);
        j->result = PL_STORE_OK;
        make_event(&j->event, conv, *seq, PL_EV_MESSAGE, 1, 0);
        j->done(j);
    }
}

/* A burst written without waiting: every send arrives before any of its
 * acks can be held (none has committed yet). While the conversation pushes
 * back, only FLOW_CONN_HELD_MAX of them are taken; the rest are refused
 * with nothing stored (audit L: 400 in 30 ms were all taken). A burst into
 * a conversation that does not push back is all taken. */
TEST(flow_a_burst_is_refused_past_the_owed_acks) {
    fconn *s, *r1, *r2;
    flow_setup(&s, &r1, &r2, 4);
    CHECK(s && r1 && r2);
    CHECK(flow_engaged(conv_find(10)));
    size_t before = H.store.submitted;
    for (int i = 1; i <= FLOW_CONN_HELD_MAX + 40; i++)
        h_text(s, "{\"type\":\"send\",\"req\":%d,\"conversation\":10,\"client_msg_id\":\"b%d\",\"body\":\"b\"}",
               i, i);
    CHECK_EQ(H.store.submitted - before, FLOW_CONN_HELD_MAX);   /* all still being stored */
    size_t at = 0, refused = 0;
    json_t *e;
    while ((e = next_frame(s, &at, "error")) != NULL) {
        refused += strcmp(json_string_value(json_object_get(e, "code")), "rate_limited") == 0 &&
                   strstr(json_string_value(json_object_get(e, "message")), "overloaded") != NULL;
        json_decref(e);
    }
    CHECK_EQ(refused, 40);
    /* they commit (acks held): still owed, still refused */
    int64_t seq = 5;
    flow_commit_queued(10, &seq);
    CHECK_EQ(flow_held(), FLOW_CONN_HELD_MAX);
    CHECK(!flow_send(s, 9999, 10, seq + 1));
    /* the readers catch up: the acks go, and sends are taken again */
    flow_catch_up(10, 2, seq);
    flow_catch_up(10, 3, seq);
    fturn();
    CHECK_EQ(flow_held(), 0);
    CHECK(flow_send(s, 10000, 10, ++seq));
    /* conversation 11 does not push back: a burst there is all taken */
    before = H.store.submitted;
    for (int i = 1; i <= FLOW_CONN_HELD_MAX + 40; i++)
        h_text(s, "{\"type\":\"send\",\"req\":%d,\"conversation\":11,\"client_msg_id\":\"c%d\",\"body\":\"b\"}",
               20000 + i, i);
    CHECK_EQ(H.store.submitted - before, FLOW_CONN_HELD_MAX + 40);
    int64_t s11 = 0;
    flow_commit_queued(11, &s11);
    fconn *all[] = {s, r1, r2};
    flow_stop(all, 3);
}

/* Off (--flow-lag 0): nothing is ever held. */
TEST(flow_off_holds_nothing) {
    fconn *s, *r1, *r2;
    flow_setup(&s, &r1, &r2, 0);
    CHECK(s && r1 && r2);
    CHECK(!flow_engaged(conv_find(10)));
    CHECK(flow_send(s, 1, 10, 6));
    int64_t reqs[4];
    CHECK_EQ(sent_reqs(s, reqs, 4), 1);
    fconn *all[] = {s, r1, r2};
    flow_stop(all, 3);
}

/* The drain (SIGTERM): held acks go out at once, before the `reconnect`
 * hint, and a send completing during the drain is not held. */
TEST(flow_held_acks_go_out_when_the_server_drains) {
    fconn *s, *r1, *r2;
    flow_setup(&s, &r1, &r2, 4);
    CHECK(s && r1 && r2);
    CHECK(flow_send(s, 1, 10, 6));
    h_text(s, "{\"type\":\"send\",\"req\":2,\"conversation\":10,\"client_msg_id\":\"s2\",\"body\":\"b\"}");
    pl_job *j = fs_take(&H.store, PL_JOB_MESSAGE_SEND, 10);
    CHECK(j != NULL);
    int64_t reqs[4];
    CHECK_EQ(sent_reqs(s, reqs, 4), 0);
    CHECK_EQ(flow_held(), 1);
    pl_chat_shutdown();
    CHECK_EQ(flow_held(), 0);
    CHECK_EQ(sent_reqs(s, reqs, 4), 1);
    j->result = PL_STORE_OK;                      /* the store finishes what was queued */
    make_event(&j->event, 10, 7, PL_EV_MESSAGE, 1, 0);
    j->done(j);
    CHECK_EQ(flow_held(), 0);
    CHECK_EQ(sent_reqs(s, reqs, 4), 2);
    CHECK(reqs[0] == 1 && reqs[1] == 2);
    fconn *all[] = {s, r1, r2};                   /* h_stop, without a second shutdown */
    for (size_t i = 0; i < 3; i++) {
        all[i]->c.closing = 1;
        pl_chat_conn_closed(&all[i]->c);
    }
    fs_fail_all(&H.store);
    turn();
    pl_chat_free();
    pl_bus_close(&H.bus);
    uv_run(&H.loop, UV_RUN_DEFAULT);
    uv_loop_close(&H.loop);
    for (size_t i = 0; i < 3; i++) fconn_free(all[i]);
}

/* ---- presence: the tick's hot list and slices (presence.c) -------------------- */

static size_t presence_frames(fconn *f, int64_t user, const char *status) {
    size_t at = 0, n = 0;
    json_t *o;
    while ((o = next_frame(f, &at, "presence")) != NULL) {
        if (json_integer_value(json_object_get(o, "user")) == user &&
            !strcmp(json_string_value(json_object_get(o, "status")), status))
            n++;
        json_decref(o);
    }
    return n;
}

/* The offline announcements of users lo..hi-1 among f's frames from *at
 * on; *at moves past them. Each frame is read once: reading all of them
 * for each user at each tick (300 x 600 JSON parses a tick) made the test
 * below take over a minute of real time on a loaded machine (CI), and the
 * views, which expire by the wall clock (presence_timeout after they are
 * published), expired under its simulated clock: users were announced
 * offline early (37 and 161 of 300 at the check, the rest not yet). */
static size_t offline_frames(fconn *f, size_t *at, int64_t lo, int64_t hi) {
    size_t n = 0;
    json_t *o;
    while ((o = next_frame(f, at, "presence")) != NULL) {
        int64_t u = json_integer_value(json_object_get(o, "user"));
        if (u >= lo && u < hi && !strcmp(json_string_value(json_object_get(o, "status")), "offline")) n++;
        json_decref(o);
    }
    return n;
}

/* A tick looks at what changed at once (a status set is announced at the
 * next tick, though the tick's slice of the table is one slot), and at
 * everyone else only a slice at a time: users whose heartbeats stopped are
 * announced offline as the slices come round, all of them within one
 * sweep period (presence_timeout / 8, here 2 s). */
TEST(presence_tick_handles_changes_at_once_and_the_rest_in_slices) {
    h_start(0);
    H.cfg.presence_coalesce = 0;
    enum { OTHERS = 300 };
    conv_spec cs = {10, 1, 1}, pairs[OTHERS];      /* the watcher and each other user */
    for (int i = 0; i < OTHERS; i++) pairs[i] = (conv_spec){1000 + i, 1, 1};
    fconn *all[OTHERS + 3];
    int64_t s0 = pl_mono_ms();
    fconn *alice = all[0] = h_session(1, 1, &cs, 1, 0);
    fconn *bob = all[1] = h_session(2, 2, &cs, 1, 0);
    fconn *watcher = all[2] = h_session(3, 3, pairs, OTHERS, 0);
    for (int i = 0; i < OTHERS; i++) all[3 + i] = h_session(100 + i, 100 + i, &pairs[i], 1, 0);
    /* the sessions' heartbeats are real time: on a loaded machine (make
     * test runs this beside the integration suites) their creation took
     * seconds once, and their timeouts came that far apart (37 of 300
     * offline within the sweep period) */
    int64_t spread = pl_mono_ms() - s0;
    int64_t t0 = pl_mono_ms() + 1000;
    presence_tick(t0);                        /* everyone new: hot, online */
    CHECK_EQ(presence_frames(bob, 1, "online"), 1);
    CHECK_EQ(presence_frames(watcher, 100, "online"), 1);
    presence_tick(t0 + 1);

    h_text(alice, "{\"type\":\"presence\",\"status\":\"away\"}");
    presence_tick(t0 + 2);                    /* a slice of one slot, alice hot */
    CHECK_EQ(presence_frames(bob, 1, "away"), 1);

    /* nobody heartbeats: after 60 s, offline, slice by slice (ticks every
     * 250 ms as the timer runs them) */
    int64_t t = t0 + 55000;
    size_t offline = 0, at = 0;
    while (offline == 0 && t < t0 + 62000) {
        presence_tick(t += 250);
        offline += offline_frames(watcher, &at, 100, 100 + OTHERS);
    }
    CHECK(offline > 0 && offline < OTHERS);   /* a first slice, not the table */
    for (int64_t k = 0; k < 8 + (spread + 249) / 250; k++) presence_tick(t += 250);
    offline += offline_frames(watcher, &at, 100, 100 + OTHERS);
    CHECK_EQ(offline, OTHERS);                /* within one sweep period (of the last timeout) */
    CHECK_EQ(presence_frames(bob, 1, "offline"), 1);
    h_stop(all, OTHERS + 3);
}

/* Cluster mode: the views of a node the bus knows is gone (killed without
 * closing) stop counting at once, so its users are announced offline by
 * the next slices instead of when their views expire (--presence-timeout
 * later), with the last activity their views reported. */
static int gone_node;
static int gone_node_fn(pl_bus *b, int node) { (void)b; return node == gone_node; }

TEST(presence_views_of_a_gone_node_stop_counting) {
    h_start(1);
    H.cfg.presence_coalesce = 0;
    static pl_bus_ops ops;
    ops = *H.bus->ops;
    ops.node_gone = gone_node_fn;
    H.bus->ops = &ops;
    gone_node = 0;
    conv_spec cs = {10, 1, 1};
    fconn *watcher = h_session(3, 3, &cs, 1, 0);
    CHECK(watcher != NULL);
    int64_t wall = pl_now_ms(), t = pl_mono_ms() + 1000;
    int64_t convs[] = {10};
    pl_bus_presence v = {.user = 7, .node = 2, .status = 2, .last_active = wall - 5000,
                         .expires = wall + 60000, .convs = convs, .nconvs = 1};
    H.bus->h.presence(H.bus->h.ud, &v);
    presence_tick(t);
    CHECK_EQ(presence_frames(watcher, 7, "online"), 1);
    for (int k = 0; k < 16; k++) presence_tick(t += 250);
    CHECK_EQ(presence_frames(watcher, 7, "offline"), 0);   /* node 2 is alive: still online */
    gone_node = 2;
    for (int k = 0; k < 16 && !presence_frames(watcher, 7, "offline"); k++) presence_tick(t += 250);
    CHECK_EQ(presence_frames(watcher, 7, "offline"), 1);
    size_t at = 0;
    json_t *o;
    int64_t last_seen = 0;
    while ((o = next_frame(watcher, &at, "presence")) != NULL) {
        if (!strcmp(json_string_value(json_object_get(o, "status")), "offline"))
            last_seen = json_integer_value(json_object_get(o, "last_seen"));
        json_decref(o);
    }
    CHECK_EQ(last_seen, wall - 5000);
    /* node 2 was only paused: its beats resume, its views count again, and
     * the user is announced online again (audit A2: never was) */
    for (int k = 0; k < 16; k++) presence_tick(t += 250);   /* sweeps that could forget the user */
    gone_node = 0;
    for (int k = 0; k < 16 && presence_frames(watcher, 7, "online") < 2; k++) presence_tick(t += 250);
    CHECK_EQ(presence_frames(watcher, 7, "online"), 2);
    fconn *all[] = {watcher};
    h_stop(all, 1);
}

/* A view of user from another node, as the bus hands it over. */
static void view_from(int64_t user, int node, int status, int64_t wall) {
    static int64_t convs[] = {10};
    pl_bus_presence v = {.user = user, .node = node, .status = status, .last_active = wall,
                         .expires = wall + 60000, .convs = convs, .nconvs = 1};
    H.bus->h.presence(H.bus->h.ud, &v);
}

/* A user removed from (or leaving) the only conversation it shared with
 * this node's sessions: its node's next view names no conversation, and
 * its changes reach no one here (audit E5: an empty list kept the old
 * one, and the former co-members on other nodes went on getting its
 * `away` and `offline`). */
TEST(presence_a_view_naming_no_conversation_reaches_no_one) {
    h_start(1);
    H.cfg.presence_coalesce = 0;
    conv_spec cs = {10, 1, 1};
    fconn *watcher = h_session(3, 3, &cs, 1, 0);
    CHECK(watcher != NULL);
    int64_t wall = pl_now_ms(), t = pl_mono_ms() + 1000;
    view_from(7, 2, 2, wall);                        /* in conversation 10: online */
    presence_tick(t += 250);
    CHECK_EQ(presence_frames(watcher, 7, "online"), 1);
    pl_bus_presence v = {.user = 7, .node = 2, .status = 1, .last_active = wall + 500,
                         .expires = wall + 60000, .convs = NULL, .nconvs = 0};
    H.bus->h.presence(H.bus->h.ud, &v);              /* removed, then away */
    for (int k = 0; k < 4; k++) presence_tick(t += 250);
    CHECK_EQ(presence_frames(watcher, 7, "away"), 0);
    fconn *all[] = {watcher};
    h_stop(all, 1);
}

/* A change that comes a window or more after the last announcement, before
 * a slice of the table has come round to its user again, waits its own
 * window like any other (CI: the announcement left its change's start set
 * until a slice reset it, so the next change counted from then: `away` and
 * back within 0.2 s, 1.3 s after `online` was announced, was announced
 * twice). Forty users, so that slices miss some of them. */
TEST(presence_a_change_after_an_announcement_waits_its_own_window) {
    h_start(1);
    H.cfg.presence_coalesce = 1000;
    enum { N = 40 };
    conv_spec cs = {10, 1, 1};
    fconn *watcher = h_session(3, 3, &cs, 1, 0);
    CHECK(watcher != NULL);
    int64_t wall = pl_now_ms(), t = pl_mono_ms() + 1000;
    for (int u = 0; u < N; u++) view_from(200 + u, 2, 2, wall);
    for (int k = 0; k < 9; k++) presence_tick(t += 250);      /* announced; slices go round */
    size_t online = 0, away = 0;
    for (int u = 0; u < N; u++) online += presence_frames(watcher, 200 + u, "online");
    CHECK_EQ(online, N);
    for (int u = 0; u < N; u++) view_from(200 + u, 2, 1, wall + 2250);   /* away ... */
    presence_tick(t += 250);
    for (int u = 0; u < N; u++) view_from(200 + u, 2, 2, wall + 2450);   /* ... and back */
    for (int k = 0; k < 8; k++) presence_tick(t += 250);
    for (int u = 0; u < N; u++) away += presence_frames(watcher, 200 + u, "away");
    CHECK_EQ(away, 0);
    fconn *all[] = {watcher};
    h_stop(all, 1);
}

/* A change counts from when it happened (the view's arrival, the status
 * set), not from the tick that saw it, and the ticker runs at a quarter of
 * a window under a second, so a change is announced within a quarter
 * window of having lasted one (audit O9: with 250 ms ticks counted from
 * the tick, a 300 ms window was 500-750 ms, and an `away` of 0.6 s was
 * mostly never announced). */
TEST(presence_a_change_counts_from_when_it_happened) {
    h_start(1);
    H.cfg.presence_coalesce = 1000;
    CHECK_EQ(presence_tick_ms(), 250);
    H.cfg.presence_coalesce = 0;
    CHECK_EQ(presence_tick_ms(), 250);
    H.cfg.presence_coalesce = 100;
    CHECK_EQ(presence_tick_ms(), 50);
    H.cfg.presence_coalesce = 300;
    CHECK_EQ(presence_tick_ms(), 75);
    conv_spec cs = {10, 1, 1};
    fconn *watcher = h_session(3, 3, &cs, 1, 0);
    CHECK(watcher != NULL);
    int64_t wall = pl_now_ms(), t = pl_mono_ms() + 1000;
    view_from(7, 2, 2, wall);
    for (int k = 0; k < 12; k++) presence_tick(t += 75);
    CHECK_EQ(presence_frames(watcher, 7, "online"), 1);
    view_from(7, 2, 1, wall + 1000);                   /* away, at most a tick before the next */
    for (int k = 0; k < 3; k++) presence_tick(t += 75);
    CHECK_EQ(presence_frames(watcher, 7, "away"), 0);  /* 225-300 ms: not yet */
    presence_tick(t += 75);
    CHECK_EQ(presence_frames(watcher, 7, "away"), 1);  /* 300-375 ms: lasted a window */
    for (int k = 0; k < 4; k++) presence_tick(t += 75);
    view_from(7, 2, 2, wall + 1600);                   /* back after 0.6 s */
    for (int k = 0; k < 8; k++) presence_tick(t += 75);
    CHECK_EQ(presence_frames(watcher, 7, "online"), 2);
    fconn *all[] = {watcher};
    h_stop(all, 1);
}

/* A tick that comes late (the loop was busy or descheduled) runs before
 * the sockets are read, so a view that undid a change may be waiting
 * unread: the time the loop did not look does not count toward the
 * change's window, and the late tick announces nothing (before, a loop
 * busy for a second announced an `away` undone 0.2 s later). A change
 * that lasts is still announced, a stall later. */
TEST(presence_a_late_tick_does_not_count_toward_the_window) {
    h_start(1);
    H.cfg.presence_coalesce = 1000;
    conv_spec cs = {10, 1, 1};
    fconn *watcher = h_session(3, 3, &cs, 1, 0);
    CHECK(watcher != NULL);
    int64_t wall = pl_now_ms(), t = pl_mono_ms() + 1000;
    view_from(7, 2, 2, wall);                          /* online on node 2 */
    for (int k = 0; k < 6; k++) presence_tick(t += 250);
    CHECK_EQ(presence_frames(watcher, 7, "online"), 1);
    view_from(7, 2, 1, wall + 1500);                   /* away ... */
    presence_tick(t += 250);
    presence_tick(t += 1500);                          /* the loop stalled 1.25 s */
    view_from(7, 2, 2, wall + 1700);                   /* ... and back, read after the stall */
    for (int k = 0; k < 8; k++) presence_tick(t += 250);
    CHECK_EQ(presence_frames(watcher, 7, "away"), 0);
    CHECK_EQ(presence_frames(watcher, 7, "online"), 1);
    view_from(7, 2, 1, wall + 5000);                   /* away for good, a stall within */
    presence_tick(t += 250);
    presence_tick(t += 1500);
    CHECK_EQ(presence_frames(watcher, 7, "away"), 0);
    presence_tick(t += 250);
    CHECK_EQ(presence_frames(watcher, 7, "away"), 0);  /* 0.75 s seen: not yet */
    for (int k = 0; k < 4; k++) presence_tick(t += 250);
    CHECK_EQ(presence_frames(watcher, 7, "away"), 1);
    fconn *all[] = {watcher};
    h_stop(all, 1);
}

/* Cluster mode: a node whose loop stalled (SIGSTOP, a paused VM) for as
 * long as the other nodes take a silent node for gone publishes its views
 * again as changes, not refreshes: those nodes announced its users offline
 * and, past the views' life, forgot them, and a refresh is taken there for
 * state already known (audit A2: after a pause longer than
 * --presence-timeout the users stayed offline for everyone). A resync
 * (Redis came back) does the same. */
static int pub_refresh[8], pub_status[8], npub;
static void (*pub_next)(pl_bus *b, const pl_bus_presence *p);
static void pub_spy(pl_bus *b, const pl_bus_presence *p) {
    if (npub < 8) {
        pub_refresh[npub] = p->refresh;
        pub_status[npub] = p->status;
    }
    npub++;
    pub_next(b, p);
}

/* Cluster mode (h_start(1) done): this node's presence publishes counted
 * by pub_spy, and user 1 authenticated in conversation 10. */
static fconn *spied_session(void) {
    static pl_bus_ops ops;
    ops = *H.bus->ops;
    pub_next = ops.publish_presence;
    ops.publish_presence = pub_spy;
    H.bus->ops = &ops;
    npub = 0;
    conv_spec cs = {10, 1, 1};
    return h_session(1, 1, &cs, 1, 0);
}

TEST(presence_views_are_published_as_changes_after_a_stall) {
    h_start(1);
    H.cfg.presence_timeout = 600;                 /* the session's heartbeat stays fresh */
    fconn *alice = spied_session();
    CHECK(alice != NULL);
    int64_t t = pl_mono_ms() + 1000;
    presence_tick(t);
    CHECK_EQ(npub, 1);
    CHECK(pub_refresh[0] == 0 && pub_status[0] == 2);   /* came online: a change */
    for (int k = 0; k < 4; k++) presence_tick(t += 250);
    CHECK_EQ(npub, 1);                            /* nothing new to say */
    presence_tick(t += 2500);                     /* a late tick, not a stall */
    CHECK_EQ(npub, 1);
    presence_tick(t += 9000);                     /* 9 s without a tick */
    CHECK_EQ(npub, 2);
    CHECK(pub_refresh[1] == 0 && pub_status[1] == 2);
    for (int k = 0; k < 4; k++) presence_tick(t += 250);
    CHECK_EQ(npub, 2);
    presence_tick(t += 20000);                    /* a stall the length of a refresh */
    CHECK_EQ(npub, 3);
    CHECK(pub_refresh[2] == 0);
    presence_tick(t += 250);
    presence_resync();                            /* Redis came back */
    presence_tick(t += 250);
    CHECK_EQ(npub, 4);
    CHECK(pub_refresh[3] == 0 && pub_status[3] == 2);
    for (int k = 0; k < 96; k++) presence_tick(t += 250);   /* 24 s: a plain refresh (20 s, in slices of 2 s) */
    CHECK_EQ(npub, 5);
    CHECK(pub_refresh[4] == 1);
    fconn *all[] = {alice};
    h_stop(all, 1);
}

/* An offline view published while the bus is down may never reach the
 * other nodes (the Redis publish is dropped): the entry is kept, and the
 * resync publishes it again (audit N6: a user who disconnected during a
 * Redis restart stayed online on the other nodes for ~60 s, until its
 * view expired). Once published with the bus up, it is forgotten. */
static int bus_down;
static int healthy_spy(pl_bus *b) { (void)b; return !bus_down; }

TEST(presence_an_offline_view_published_while_the_bus_is_down_is_published_again) {
    h_start(1);
    H.cfg.presence_coalesce = 0;
    fconn *alice = spied_session();
    CHECK(alice != NULL);
    static pl_bus_ops ops;
    ops = *H.bus->ops;
    ops.healthy = healthy_spy;
    H.bus->ops = &ops;
    int64_t t = pl_mono_ms() + 1000;
    presence_tick(t);
    CHECK_EQ(npub, 1);                            /* online */
    bus_down = 1;
    alice->c.closing = 1;
    pl_chat_conn_closed(&alice->c);
    for (int k = 0; k < 20; k++) presence_tick(t += 250);   /* past a sweep period */
    CHECK_EQ(npub, 2);
    CHECK_EQ(pub_status[1], 0);                   /* offline, into the outage */
    bus_down = 0;
    presence_resync();                            /* Redis came back */
    presence_tick(t += 250);
    CHECK_EQ(npub, 3);
    CHECK_EQ(pub_status[2], 0);                   /* said again */
    for (int k = 0; k < 20; k++) presence_tick(t += 250);
    presence_resync();
    presence_tick(t += 250);
    CHECK_EQ(npub, 3);                            /* heard: forgotten */
    h_stop(NULL, 0);
    fconn_free(alice);
}

/* A session the server closes (a revoked login: 4001) stops counting for
 * presence at once, not when its socket is let go (audit W2 F6: an SSE
 * client that kept its socket after the close was announced offline 5 s
 * late, with that later last_seen); nor is it taken for reachable by the
 * push decision meanwhile. A drain's close (1001) keeps it counting. */
static int online_seen[2];
static void online_cb(void *arg, const uint8_t *online, size_t n) {
    (void)arg;
    for (size_t i = 0; i < n && i < 2; i++) online_seen[i] = online[i];
}

TEST(presence_a_session_the_server_closed_stops_counting_at_once) {
    h_start(0);
    H.cfg.presence_coalesce = 0;
    conv_spec cs = {10, 1, 1};
    fconn *watcher = h_session(3, 3, &cs, 1, 0);
    fconn *bob = h_session(2, 2, &cs, 1, 0);
    CHECK(watcher && bob);
    int64_t t = pl_mono_ms() + 1000;
    presence_tick(t);
    CHECK_EQ(presence_frames(watcher, 2, "online"), 1);
    int64_t ids[] = {2, 3};
    pl_chat_users_online(ids, 2, online_cb, NULL);
    turn();
    CHECK(online_seen[0] == 1 && online_seen[1] == 1);
    pl_chat_revoke_login(2, 0);
    turn();
    CHECK_EQ(bob->close_code, PL_WS_CLOSE_UNAUTHORIZED);       /* closed, not freed */
    presence_tick(t += 250);
    CHECK_EQ(presence_frames(watcher, 2, "offline"), 1);
    pl_chat_users_online(ids, 2, online_cb, NULL);
    turn();
    CHECK(online_seen[0] == 0 && online_seen[1] == 1);
    /* a drain's close leaves the watcher counting */
    chat_close(&watcher->c, PL_WS_CLOSE_GOING_AWAY, "server shutting down");
    CHECK_EQ(watcher->close_code, PL_WS_CLOSE_GOING_AWAY);
    presence_tick(t += 250);
    pl_chat_users_online(ids, 2, online_cb, NULL);
    turn();
    CHECK_EQ(online_seen[1], 1);
    fconn *all[] = {watcher, bob};
    h_stop(all, 2);
}

/* In cluster mode a status set is published at once, not at the node's
 * next tick: the other nodes count its window from its arrival, so the
 * tick's wait made a change there up to 250 ms later than here (audit O9:
 * 1.45 s across nodes against 1.2 s). A session's arrival waits for the
 * tick (its subscriptions, which its view names, come after). */
TEST(presence_a_status_set_is_published_at_once) {
    h_start(1);
    H.cfg.presence_timeout = 600;
    fconn *alice = spied_session();
    CHECK(alice != NULL);
    CHECK_EQ(npub, 0);                            /* arrived: at the tick */
    int64_t t = pl_mono_ms() + 1000;
    presence_tick(t);
    CHECK_EQ(npub, 1);
    CHECK_EQ(pub_status[0], 2);
    h_text(alice, "{\"type\":\"presence\",\"status\":\"away\"}");
    CHECK_EQ(npub, 2);                            /* no tick in between */
    CHECK(pub_status[1] == 1 && pub_refresh[1] == 0);
    presence_tick(t += 250);
    CHECK_EQ(npub, 2);                            /* said already */
    h_text(alice, "{\"type\":\"presence\",\"status\":\"online\"}");
    CHECK_EQ(npub, 3);
    CHECK_EQ(pub_status[2], 2);
    fconn *all[] = {alice};
    h_stop(all, 1);
}

/* ---- the per-workspace rate limit (wsrate.c) ------------------------------------ */

static struct {
    int     answered;
    int64_t retry;
    const char *scope;
} AW[4];

static void ws_admitted(void *arg, int64_t retry, const char *scope) {
    int i = (int)(intptr_t)arg;
    AW[i].answered++;
    AW[i].retry = retry;
    AW[i].scope = scope;
}

static void ws_send(fconn *f, int req, int64_t conv) {
    h_text(f, "{\"type\":\"send\",\"req\":%d,\"conversation\":%lld,\"client_msg_id\":\"w%d\",\"body\":\"b\"}",
           req, (long long)conv, req);
}

/* The error frame answering req, or NULL. */
static json_t *error_for(fconn *f, int req) {
    size_t at = 0;
    json_t *e;
    while ((e = next_frame(f, &at, "error")) != NULL) {
        if (json_integer_value(json_object_get(e, "req")) == req) return e;
        json_decref(e);
    }
    return NULL;
}

/* Channels of one workspace share its bucket (burst 2 here); a group and
 * a DM never look their workspace up; a conversation this node knows
 * nothing of is read once, by one read for all its waiting sends, then
 * remembered. */
TEST(wsrate_channels_share_their_workspace_bucket) {
    h_start(0);
    H.cfg.rate_workspace_msgs = 1;
    H.cfg.rate_workspace_burst = 2;
    wsrate_free();                                 /* again, with the limit on */
    wsrate_init();
    uint64_t limited0 = pl_m_rate_limited_ws.v;
    channel_ws[10] = channel_ws[11] = 7;
    channel_ws[13] = 8;
    conv_spec cs[] = {{10, 1, 1}, {11, 1, 1}, {12, 1, 1}, {13, 1, 1}};
    fconn *s = h_session(2, 1, cs, 4, 0);
    CHECK(s != NULL);
    ws_send(s, 1, 10);
    ws_send(s, 2, 11);
    ws_send(s, 3, 10);                             /* the workspace's third in a burst of 2 */
    for (int i = 4; i < 8; i++) ws_send(s, i, 12); /* a group: no workspace */
    ws_send(s, 8, 13);                             /* another workspace */
    CHECK_EQ(fs_count(&H.store, PL_READ_CONV_WORKSPACE), 0);   /* the session read said it all */
    CHECK_EQ(fs_count(&H.store, PL_JOB_MESSAGE_SEND), 7);
    json_t *e = error_for(s, 3);
    CHECK(e != NULL);
    int ok = e && strcmp(json_string_value(json_object_get(e, "code")), "rate_limited") == 0 &&
             strcmp(json_string_value(json_object_get(e, "message")), "too many messages (workspace)") == 0 &&
             json_real_value(json_object_get(e, "retry_after")) > 0;
    json_decref(e);
    CHECK(ok);
    CHECK_EQ(pl_m_rate_limited_ws.v, limited0 + 1);

    /* a REST send: one read each says whether the sender is a member, and
     * the workspace; a member takes from the workspace's bucket */
    memset(AW, 0, sizeof AW);
    CHECK_EQ(pl_chat_admit_send(3, 30, ws_admitted, (void *)0), 0);
    CHECK_EQ(pl_chat_admit_send(4, 30, ws_admitted, (void *)1), 0);
    turn();
    CHECK_EQ(fs_count(&H.store, PL_READ_CONV_WORKSPACE), 2);
    CHECK(AW[0].answered == 0 && AW[1].answered == 0);
    for (int i = 0; i < 2; i++) {
        pl_job *j = fs_take(&H.store, PL_READ_CONV_WORKSPACE, 30);
        CHECK(j != NULL);
        j->result = PL_STORE_OK;
        j->out_id = 7;                             /* a channel of workspace 7: empty bucket */
        j->created = 1;                            /* a member */
        j->done(j);
    }
    turn();
    CHECK(AW[0].answered == 1 && AW[1].answered == 1);
    CHECK(AW[0].retry > 0 && AW[0].scope && strcmp(AW[0].scope, "workspace") == 0);
    CHECK(AW[1].retry > 0 && AW[1].scope && strcmp(AW[1].scope, "workspace") == 0);
    CHECK_EQ(pl_m_rate_limited_ws.v, limited0 + 3);

    /* not a member: the user's bucket alone (the store refuses it next),
     * so no stranger can empty a conversation's or a workspace's bucket */
    CHECK_EQ(pl_chat_admit_send(5, 30, ws_admitted, (void *)2), 0);
    turn();
    pl_job *j = fs_take(&H.store, PL_READ_CONV_WORKSPACE, 30);
    CHECK(j != NULL);
    j->result = PL_STORE_OK;
    j->out_id = 7;
    j->created = 0;
    j->done(j);
    turn();
    CHECK(AW[2].answered == 1 && AW[2].retry == 0 && !AW[2].scope);
    CHECK_EQ(pl_m_rate_limited_ws.v, limited0 + 3);
    /* and over the WebSocket: a conversation the session does not follow */
    channel_ws[14] = 7;                            /* a channel of workspace 7 it is not in */
    size_t sends = fs_count(&H.store, PL_JOB_MESSAGE_SEND);
    ws_send(s, 9, 14);
    CHECK(error_for(s, 9) == NULL);                /* to the store, which answers not_found */
    CHECK_EQ(fs_count(&H.store, PL_JOB_MESSAGE_SEND), sends + 1);
    CHECK_EQ(fs_count(&H.store, PL_READ_CONV_WORKSPACE), 0);

    /* not a channel: admitted */
    CHECK_EQ(pl_chat_admit_send(3, 31, ws_admitted, (void *)3), 0);
    turn();
    j = fs_take(&H.store, PL_READ_CONV_WORKSPACE, 31);
    CHECK(j != NULL);
    j->result = PL_STORE_OK;
    j->out_id = 0;
    j->created = 1;
    j->done(j);
    turn();
    CHECK(AW[3].answered == 1 && AW[3].retry == 0 && !AW[3].scope);
    fconn *all[] = {s};
    h_stop(all, 1);
}

/* Off (--rate-workspace-msgs 0): nothing is read, nothing is limited. */
TEST(wsrate_off_reads_nothing) {
    h_start(0);
    channel_ws[10] = 7;
    conv_spec cs[] = {{10, 1, 1}};
    fconn *s = h_session(2, 1, cs, 1, 0);
    CHECK(s != NULL);
    for (int i = 1; i <= 5; i++) ws_send(s, i, 10);
    memset(AW, 0, sizeof AW);
    CHECK_EQ(pl_chat_admit_send(3, 40, ws_admitted, (void *)0), 0);
    turn();
    CHECK_EQ(fs_count(&H.store, PL_READ_CONV_WORKSPACE), 0);
    CHECK_EQ(fs_count(&H.store, PL_JOB_MESSAGE_SEND), 5);
    CHECK(AW[0].answered == 1 && !AW[0].scope);
    fconn *all[] = {s};
    h_stop(all, 1);
}
