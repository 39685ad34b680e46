/* sse.c — Server-Sent Events sessions: the second transport of a chat
 * session (docs/protocol.md "Server-Sent Events", docs/design.md
 * "Transports").
 *
 * Owns: turning a session's frames into SSE events, the `id:` of
 * conversation events (every cursor of the session, proto/cursor_id.h),
 * resuming from a Last-Event-ID, heartbeats, and the SSE way of closing.
 * Does not own: the session (session.c: registry, the slow-consumer
 * contract; session_auth.c: authentication), delivery order
 * (deliver.c), HTTP (the stream's head is http/server.c's, the route
 * app/api_events.c's).
 *
 * The rest of chat/ builds every frame once, as a WebSocket text frame
 * shared by all recipients. An SSE session's frame is the same JSON as
 * `data: <json>\n`, made once per frame (a one-entry cache: fan-out hands
 * one frame to many sessions in a row) and shared by every SSE recipient,
 * followed by a per-session tail: `\n`, or `id: <cursors>\n\n` for a
 * conversation event and for the `ready` of a new stream.
 *
 * Ids. The id after an event of conversation C at seq N holds, for every
 * conversation of the session, the last seq written to it (sub.sent_seq),
 * with C at N. Frames without an id leave the client's last id as it was
 * (the SSE rules), so the last id a client saw always describes exactly
 * the events it got: a resume from it (sse_resume, like a `sync` with those
 * cursors) sends everything after, nothing twice. Conversations the id
 * does not name are the ones joined after it was made: they resume from
 * their joining.
 *
 * Known cost: an id grows by about 3-6 bytes per conversation of the user
 * and is computed per event per SSE session (a sort and an encode); the
 * transport is a fallback, and users with thousands of conversations
 * should use WebSocket (an id over PL_CURSOR_ID_MAX_LEN cannot be presented
 * back).
 */
#include <stdlib.h>
#include <string.h>

#include "../core/alloc.h"
#include "../core/clock.h"
#include "../core/log.h"
#include "../core/metrics.h"
#include "../ws/ws.h"
#include "../ws/wsconn.h"
#include "chat_int.h"

static pl_rbuf *cache_ws;         /* the last WebSocket frame re-encoded (a reference) */
static pl_rbuf *cache_sse;        /* ... as `data: <json>\n`                          */
static pl_rbuf *end_nl;           /* "\n": ends a frame without an id (shared)        */
static pl_sbuf  idbuf;            /* the id sse_frame_len computed for id_conn        */
static pl_conn *id_conn;

/* The payload of one of our own unmasked WebSocket frames. */
static void ws_payload(const pl_rbuf *b, const uint8_t **p, size_t *n) {
    const uint8_t *d = b->data;
    size_t len = d[1] & 0x7f, off = 2;
    if (len == 126) {
        len = (size_t)d[2] << 8 | d[3];
        off = 4;
    } else if (len == 127) {
        len = 0;
        for (int i = 0; i < 8; i++) len = len << 8 | d[2 + i];
        off = 10;
    }
    *p = d + off;
    *n = len;
}

/* `data: ` lines of text; a line break in it (none in the JSON the server
 * writes, which escapes them) would start another data line. */
static pl_rbuf *data_lines(const uint8_t *p, size_t n) {
    pl_sbuf s;
    pl_sbuf_init(&s);
    pl_sbuf_reserve(&s, n + 8);
    pl_sbuf_add(&s, "data: ", 6);
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '\n' || p[i] == '\r') {
            if (p[i] == '\r' && i + 1 < n && p[i + 1] == '\n') i++;
            pl_sbuf_add(&s, "\ndata: ", 7);
        } else {
            pl_sbuf_addc(&s, (char)p[i]);
        }
    }
    pl_sbuf_addc(&s, '\n');
    pl_rbuf *b = pl_rbuf_copy(s.p, s.len);
    pl_sbuf_release(&s);
    return b;
}

static pl_rbuf *sse_data(pl_rbuf *frame) {
    if (frame != cache_ws) {
        pl_rbuf_unref(&cache_ws);
        pl_rbuf_unref(&cache_sse);
        const uint8_t *p;
        size_t n;
        ws_payload(frame, &p, &n);
        cache_sse = data_lines(p, n);
        cache_ws = pl_rbuf_ref(frame);    /* held: its address cannot be reused meanwhile */
    }
    return cache_sse;
}

void sse_cursor_id(pl_sbuf *b, session *s, sub *x, int64_t seq) {
    pl_cursor stackv[64];
    pl_cursor *v = s->nsubs <= 64 ? stackv : pl_malloc(s->nsubs * sizeof *v);
    for (uint32_t i = 0; i < s->nsubs; i++) {
        v[i].conv = s->subs[i]->conv->id;
        v[i].seq = s->subs[i] == x ? seq : s->subs[i]->sent_seq;
    }
    pl_cursor_sort(v, s->nsubs);
    pl_cursor_id_encode(b, v, s->nsubs);
    if (v != stackv) free(v);
}

static void make_id(pl_conn *c, sub *x, int64_t seq) {
    idbuf.len = 0;
    pl_sbuf_add(&idbuf, "id: ", 4);
    sse_cursor_id(&idbuf, c->session, x, seq);
    pl_sbuf_add(&idbuf, "\n\n", 2);
    id_conn = c;
}

size_t sse_frame_len(pl_conn *c, pl_rbuf *frame, int id, sub *x, int64_t seq) {
    size_t n = sse_data(frame)->len;
    if (!id) return n + 1;
    make_id(c, x, seq);
    return n + idbuf.len;
}

void sse_send(pl_conn *c, pl_rbuf *frame, int id, sub *x, int64_t seq) {
    CO.send(c, sse_data(frame));
    if (!id) {
        if (!end_nl) end_nl = pl_rbuf_copy("\n", 1);
        CO.send(c, end_nl);
        return;
    }
    if (id_conn != c) make_id(c, x, seq);
    CO.send_copy(c, idbuf.p, idbuf.len);
    id_conn = NULL;
}

/* Whether a queue entry begins an event: data lines, a comment (the
 * heartbeat); not an event's end ("\n" or its "id: " line). */
int sse_starts_event(const uint8_t *p, size_t n) {
    return (n >= 5 && memcmp(p, "data:", 5) == 0) || (n >= 1 && p[0] == ':');
}

/* A last event, then the end of the stream (after what is queued). The
 * client reconnects with its last id, except after 4001 (log in again). */
void sse_close(pl_conn *c, int code, const char *reason) {
    if (!chat_is_open(c)) return;
    pl_sbuf b;
    pl_sbuf_init(&b);
    pl_sbuf_printf(&b, "data: {\"type\":\"close\",\"code\":%d,\"reason\":", code);
    pl_sbuf_add_json_str(&b, reason ? reason : "", reason ? strlen(reason) : 0);
    pl_sbuf_adds(&b, "}\n\n");
    CO.send_copy(c, b.p, b.len);                 /* even past the bound: the last frame */
    pl_sbuf_release(&b);
    c->ws_state = PL_WSS_CLOSE_SENT;             /* chat_is_open: no more frames */
    pl_log(PL_LOG_DEBUG, c->id, "sse closed", "\"code\":%d", code);
    CO.shut(c);
}

static int cmp_cursor(const void *k, const void *e) {
    int64_t a = *(const int64_t *)k, b = ((const pl_cursor *)e)->conv;
    return a < b ? -1 : a > b;
}

void sse_resume(session *s) {
    json_t *cursors = json_object();
    char key[24];
    for (uint32_t i = 0; i < s->nsubs; i++) {          /* not named: from its joining (0 -> floor) */
        int64_t conv = s->subs[i]->conv->id;
        const pl_cursor *r = s->nresume ? bsearch(&conv, s->resume, s->nresume, sizeof *s->resume, cmp_cursor) : NULL;
        snprintf(key, sizeof key, "%lld", (long long)conv);
        json_object_set_new(cursors, key, json_integer(r ? r->seq : 0));
    }
    for (size_t i = 0; i < s->nresume; i++) {          /* no longer a member: sync says not_found */
        snprintf(key, sizeof key, "%lld", (long long)s->resume[i].conv);
        if (!json_object_get(cursors, key)) json_object_set_new(cursors, key, json_integer(s->resume[i].seq));
    }
    free(s->resume);
    s->resume = NULL;
    s->nresume = 0;
    s->resuming = 0;
    deliver_sync(s, cursors, NULL);
    json_decref(cursors);
}

/* Heartbeats every --sse-heartbeat seconds (dropped while the queue is
 * above its high-water mark: the stream is not idle then). A heartbeat
 * sent also counts as the session's presence heartbeat (the client cannot
 * send one; keep --sse-heartbeat below --presence-timeout). The client
 * sends nothing on a stream, so there is no idle cut: a vanished client is
 * found by TCP (the heartbeats stay unacknowledged; app/api_events.c sets
 * TCP_USER_TIMEOUT to --idle-timeout). A replay stuck on a full queue for
 * --slow-timeout closes with 4008, as for WebSocket. */
void pl_chat_sse_timeout(pl_conn *c) {
    session *s = c->session;
    if (!s || !chat_is_open(c)) return;
    int64_t now = pl_mono_ms();
    int64_t slow_cut = s->drain_since + (int64_t)C.cfg->slow_timeout * 1000;
    if (s->waiting_drain && now >= slow_cut) {
        chat_close_slow(c);
        return;
    }
    if (!c->high) {                              /* the stream is read: the session is alive */
        CO.send_copy(c, ": ping\n\n", 8);
        s->last_hb = now;                        /* presence: what a WebSocket's messages do */
    }
    c->deadline = now + (int64_t)C.cfg->sse_heartbeat * 1000;
    if (s->waiting_drain && slow_cut < c->deadline) c->deadline = slow_cut;
}

void sse_free(void) {
    pl_rbuf_unref(&cache_ws);
    pl_rbuf_unref(&cache_sse);
    pl_rbuf_unref(&end_nl);
    pl_sbuf_release(&idbuf);
    memset(&idbuf, 0, sizeof idbuf);
    id_conn = NULL;
}
