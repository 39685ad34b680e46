/* bus_redis.c — the cluster mode's bus: Redis pub/sub between parleyd
 * nodes, plus the state they share in Redis (rate buckets, presence).
 *
 * Owns: the Redis bus's lifecycle, its two connections' roles and their
 * liveness checks, and this design note. The bus is four files sharing
 * bus_redis_int.h: this one, bus_redis_pub.c (publishing, pending heads,
 * outbox acks), bus_redis_sub.c (subscriptions, receiving) and
 * bus_redis_req.c (rate buckets, presence, Lua scripts). Does not own: the
 * message format (bus_codec.c), keeping a connection up (redis_conn.c),
 * what a node does with what it receives (chat/, through pl_bus_handlers).
 *
 * ---- Design note -----------------------------------------------------------
 *
 * Connections. Two hiredis async connections on the loop, each reconnecting
 * by itself (redis_conn.h: 50 ms doubling to 1 s, forever; connect timeout
 * 2 s; TCP keepalive): `cmd` carries every command (PUBLISH, EVAL/EVALSHA,
 * HGETALL, PING), `sub` only SUBSCRIBE/UNSUBSCRIBE and what they bring.
 * healthy() is 1 while cmd is up and sub is up with every wanted channel
 * confirmed (the resubscription round done), and cmd's commands have not
 * gone unanswered for UNHEALTHY_MS (a hung Redis keeps its connections).
 *
 * Channels (names prefixed with opts->prefix; pub/sub ignores SELECT, so
 * the prefix is what separates clusters sharing one Redis):
 *   c:<conv>   events, heads, typing, receipts of a conversation
 *   u:<user>   joins and revocations of a user
 *   p          presence, and every node's liveness beat, every node, always
 *   n:<node>   this node's heartbeat to itself, always (see liveness)
 * A node subscribes to c:/u: only while chat/ wants them (subscribe_conv /
 * subscribe_user). One channel per conversation rather than one per node:
 * a publisher then needs no membership knowledge, Redis fans out to exactly
 * the nodes that hold a live session of a member, and a node receives only
 * what it serves (plus its own publishes, which it drops by origin).
 *
 * Encoding: bus_codec.h (a type letter, the origin node, then fields;
 * strings length-prefixed; a final "."). Every message names its origin;
 * a node drops its own (its handlers got them synchronously: guarantee 1).
 * A malformed message is dropped, counted (b->malformed) and logged at
 * most every 10 s.
 *
 * Subscriptions. Each wanted channel has a `chan` record; at most one
 * (UN)SUBSCRIBE per channel is in flight, and a confirmation decides the
 * next step (the wanted state may have flipped meanwhile):
 *
 *            on: SUBSCRIBE                  confirmed
 *   (none) -----------------> SUBSCRIBING ------------> SUBSCRIBED
 *      ^                       | off (wait)               |     \ on again:
 *      |   confirmed, off      v                   off:   |      ready now
 *      +--------------- UNSUBSCRIBING <-------- UNSUBSCRIBE
 *                              | on (wait): confirmed -> SUBSCRIBE again
 *
 *   1. conv_ready/user_ready are called when Redis confirms a SUBSCRIBE
 *      that a subscribe(on) asked for and the channel is still wanted —
 *      never for a channel turned off meanwhile; a repeated on for a
 *      channel already confirmed gets its ready at once (inside the call,
 *      as bus.h allows).
 *   2. "p" and "n:<node>" are subscribed first and never unsubscribed, so
 *      the connection's subscription count never drops to 0 while
 *      (UN)SUBSCRIBEs are in flight (hiredis 0.14 leaves subscribed mode,
 *      and asserts, if it does).
 *   3. After the sub connection comes back, every wanted channel is
 *      re-subscribed in pipelined chunks of 1000 channels per command
 *      (the round); each confirmation calls its ready, and when the whole
 *      round is confirmed, `resync` is called once if the connection had
 *      been lost (not on the first connect: nothing was missed then).
 *
 * Publishing. Every publish calls this node's handler first, synchronously
 * (guarantee 1), then PUBLISHes on cmd. Event and head publishes are
 * tracked in a FIFO that mirrors hiredis' reply order:
 *   4. A publish is handed over when Redis replied to it. One that was not
 *      (cmd down, an error reply, or the connection lost with it in flight,
 *      or more than 64 MiB of publishes unanswered: a stuck Redis) becomes
 *      a pending head: conv -> max seq, one entry per conversation however
 *      many events failed. Pending heads are published when cmd comes back
 *      and on every 1 s tick while any remain (pl_m_bus_publish_failures
 *      counts each publish not handed over).
 *   5. outbox_acked(B) is called, in increasing B, once every event of
 *      every batch up to B was handed over: replied to by Redis, or, for
 *      one that failed, covered by a pending head that was then published
 *      and replied to. Batches are kept as FIFO records {batch, remaining,
 *      failed}; a record with failures waits until no pending head is left
 *      or in flight (conservative: acks may come later than necessary,
 *      never earlier). While publishes fail, new batches merge into the
 *      failed tail record, so records stay few during a long outage.
 *   6. Joins, revocations and erasures that were not handed over are
 *      queued (at most 65536, then dropped with a log) and re-published
 *      with the pending heads. Resync would not cover them: when only this
 *      node's cmd connection dropped, the other nodes lost nothing and do
 *      not resync, yet they would never hear of the join, the logout or
 *      the purge.
 *   7. Typing, receipts and presence are best effort: not sent while cmd
 *      is down, not retried (guarantee 5).
 *   A cmd reconnect alone does not call resync: what it can lose is this
 *   node's own publishes, and 4 and 6 re-send those; what this node
 *   receives travels on sub, whose loss does call resync.
 *
 * Liveness. A 1 s tick: on cmd, a PING when nothing is in flight, and a
 * reconnect when in-flight commands got no reply for 10 s; on sub, a
 * heartbeat PUBLISHed on n:<node> through cmd: a reply of 0 receivers
 * means Redis no longer holds this node's subscriptions, and a heartbeat
 * Redis delivered that sub has not received within 10 s means sub is
 * half-open or 10 s behind; either way sub reconnects (and resyncs).
 * Other nodes: every tick each node also PUBLISHes a beat on "p"; a node
 * subscribed for NODE_GONE_MS that heard nothing from node N for as long
 * (no beat, no other message) takes N for gone (node_gone: a node killed
 * without closing). The push
 * worker then no longer trusts N's presence views, which otherwise stay
 * until they expire (--presence-timeout).
 *
 * Failures:
 *   - Redis restarted or killed: both connections drop (EOF / RST), every
 *     in-flight publish becomes a pending head, both reconnect with the
 *     backoff, sub re-subscribes everything and calls ready for each then
 *     resync; cmd reloads the scripts and publishes the pending heads
 *     (another node's sub may still be reconnecting and miss them: its own
 *     resync covers that). The rate buckets and presence hashes are gone
 *     with a non-persistent Redis: buckets restart full, and presence_get
 *     finds nothing until nodes publish their users' presence again.
 *   - Redis slow: replies and messages come late (guarantee 1 allows it);
 *     past 64 MiB of unanswered publishes, events degrade to pending heads
 *     (memory stays bounded); no reply at all for 10 s drops cmd.
 *   - Redis hung (SIGSTOP in the tests): unhealthy after 2 s without a
 *     reply (/readyz 503), rate_take admits after 1 s,
 *     presence_get answers after 2 s, publishes wait (and are delivered if
 *     Redis resumes within 10 s; else cmd drops and they become heads).
 *   - A slow node: Redis disconnects a subscriber whose output buffer
 *     passes client-output-buffer-limit pubsub (32 MiB hard, 8 MiB for
 *     60 s by default). For this node that is a sub reconnect + resync:
 *     latency, never a message (chat/ reads the gap from the store). The
 *     sub connection drains up to 512 KiB per wakeup (redis_conn.c) so a
 *     busy loop does not fall behind by itself.
 *   - This node's connection drops (network): the same as a restart for
 *     this node only; the other nodes see nothing but late heads, joins
 *     and revocations.
 *
 * Shared rate limits. One Lua script (EVALSHA, loaded at connect; EVAL
 * when the SHA is not known yet or Redis answers NOSCRIPT) on keys
 * rl:u:<user>, rl:c:<conv> and, for a channel, rl:w:<workspace> (DMs and
 * groups send no third key): token buckets with Redis' TIME as the clock,
 * stored as "deficit:last_ms" with a PX expiry at the moment the bucket is
 * full again (a missing key is a full bucket). The user bucket is checked
 * first, then the conversation's, then the workspace's; a send is admitted
 * only if each has a token, and then takes one from each; a refusal takes
 * nothing from any and names the first bucket that refused with its wait
 * (the reply's code: 1 user, 2 conversation, 3 workspace). Rate 0 =
 * no limit for that scope. Fail open: while cmd is down, on an error
 * reply, or with no answer within 1 s, a send is admitted (a Redis outage
 * must not stop messaging; chat/'s per-node limits still apply).
 *
 * Presence. publish_presence stores this node's view in the hash
 * pr:<user>, field <node> = "status|last_active|expires", by a script that
 * pushes the key's expiry to at least expires + 60 s (never shortens it,
 * so another node's fresher view survives), and PUBLISHes it with the
 * user's conversations on "p". presence_get pipelines one HGETALL per user
 * and keeps the fields whose expires >= now (wall ms); with cmd down it
 * answers with nothing, after 2 s with what it has.
 *
 * Callbacks. rate_take and presence_get answer from a uv_idle callback on
 * the loop, never inline and never inside a hiredis callback; the one
 * exception is rate_answer_now (a drain begins), which answers the waiting
 * rate takes inline, admitted. close()
 * answers every unanswered one before it returns (rate: admitted;
 * presence: what had arrived, usually nothing), so each request gets
 * exactly one answer and the caller can free its arg there; nothing is
 * called after close returns. close frees the connections at once (their
 * pending replies come back as NULL and are ignored) and the bus itself
 * when its last uv handle has closed, so the loop must run after close.
 *
 * Measured (AMD EPYC, 2 vCPUs shared with other sessions' work: load
 * average 1.3-4.3; Redis 7.0.15 on loopback; release build; both nodes on
 * one loop in one process, so one core does both ends):
 *   - 200,000 events with 100-byte bodies over 1,000 conversations,
 *     published by node 1, received by node 2: 175,000-380,000 events/s
 *     (0.52-1.15 s, following the machine's load), outbox acks keeping
 *     pace. With hiredis' stock libuv adapter (one 16 KiB read per
 *     wakeup): 140,000-180,000 events/s, and bursts of 2,000 events per
 *     loop turn made Redis cut node 2's sub at the 32 MiB pubsub limit.
 *   - Subscribing 10,000 channels: 40-160 ms. A sub reconnect with 10,000
 *     channels: all confirmed and resync 65-76 ms after the connection was
 *     killed (178 ms once under load), of which 50 ms is the first backoff
 *     step and 8-40 ms goes from the first confirmation to the last.
 *     100,000 channels: 0.6 s to subscribe, 0.49 s from the kill to resync.
 */
#include "bus_redis_int.h"

#include <stdio.h>

#include "../core/clock.h"
#include "../core/log.h"
#include "../core/metrics.h"
#include "bus_codec.h"

/* ---- shared helpers -------------------------------------------------------- */

static size_t put_id(char *out, int64_t v) {
    char tmp[24];
    size_t n = 0;
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    do tmp[n++] = (char)('0' + u % 10); while ((u /= 10));
    size_t k = 0;
    if (v < 0) out[k++] = '-';
    while (n) out[k++] = tmp[--n];
    return k;
}

size_t pl_bus__redis_name(const pl_bus_redis *b, char *out, const char *tag, int64_t id) {
    size_t n = b->plen, t = strlen(tag);
    memcpy(out, b->prefix, n);
    memcpy(out + n, tag, t);
    n += t;
    if (id >= 0) n += put_id(out + n, id);
    out[n] = '\0';
    return n;
}

void pl_bus__redis_log_error(pl_bus_redis *b, const char *what, const redisReply *r) {
    if (!pl_log_due(&b->err_log, LOG_EVERY_MS, pl_mono_ms(), NULL)) return;
    char e[120];
    size_t j = 0;
    for (size_t i = 0; r && r->str && i < r->len && j + 1 < sizeof e; i++) {
        unsigned char ch = (unsigned char)r->str[i];
        e[j++] = (ch < 0x20 || ch == '"' || ch == '\\' || ch >= 0x7f) ? '?' : (char)ch;
    }
    e[j] = '\0';
    pl_log(PL_LOG_WARN, 0, "redis error reply", "\"command\":\"%s\",\"error\":\"%s\"", what,
           r ? e : "no reply");
}

redisReply *pl_bus__redis_cmd_reply(pl_bus_redis *b, redisAsyncContext *ac, void *r) {
    if (!r || ac != b->cmd.ac) return NULL;
    b->cmd_replied++;
    b->unanswered_since = 0;
    return r;
}

int pl_bus__redis_cmd_send(pl_bus_redis *b, redisCallbackFn *fn, void *priv, int argc, const char **argv,
                           const size_t *lens) {
    if (!pl_rconn_is_up(&b->cmd)) return -1;
    if (redisAsyncCommandArgv(b->cmd.ac, fn, priv, argc, argv, lens) != REDIS_OK) return -1;
    b->cmd_sent++;
    return 0;
}

/* ---- liveness ---------------------------------------------------------------- */

static void beat_cb(redisAsyncContext *ac, void *r, void *priv) {
    pl_bus_redis *b = priv;
    if (b->closing) return;
    redisReply *reply = pl_bus__redis_cmd_reply(b, ac, r);
    b->beat_busy = 0;
    if (!reply || reply->type != REDIS_REPLY_INTEGER) return;
    if (b->beat_gen != b->sub_gen || !b->sub_ready) return;
    if (reply->integer == 0) {
        pl_log(PL_LOG_WARN, 0, "redis no longer holds this node's subscriptions", "\"node\":%d", b->base.node);
        pl_rconn_drop(&b->sub, "subscriptions lost");
        return;
    }
    b->beat_acked = b->beat_sent;
    if (b->beat_rx < b->beat_acked && !b->beat_lag_since) b->beat_lag_since = pl_mono_ms();
}

static void ping_cb(redisAsyncContext *ac, void *r, void *priv) {
    pl_bus_redis *b = priv;
    if (!b->closing) pl_bus__redis_cmd_reply(b, ac, r);
}

static void tick_cmd(pl_bus_redis *b) {
    if (!pl_rconn_is_up(&b->cmd)) return;
    if (b->cmd_sent == b->cmd_replied) {
        b->stall_ticks = 0;
        const char *argv[] = {"PING"};
        size_t lens[] = {4};
        pl_bus__redis_cmd_send(b, ping_cb, b, 1, argv, lens);
    } else if (b->cmd_replied != b->cmd_seen) {
        b->stall_ticks = 0;
    } else {                                       /* no reply since the last tick */
        if (!b->unanswered_since) b->unanswered_since = pl_mono_ms() - TICK_MS;
        if (++b->stall_ticks >= STALL_TICKS) {
            pl_log(PL_LOG_WARN, 0, "redis not answering, reconnecting", "\"in_flight\":%llu",
                   (unsigned long long)(b->cmd_sent - b->cmd_replied));
            pl_rconn_drop(&b->cmd, "no reply for 10 s");
            return;
        }
    }
    b->cmd_seen = b->cmd_replied;
    if ((b->pending.len || b->nretry) && !b->flush_inflight) pl_bus__redis_flush(b);
    if (b->closing) return;                        /* an ack's handler closed the bus */
    if (b->sub_ready && !b->beat_busy) {
        char ch[NAME_MAX_LEN];
        size_t chlen = pl_bus__redis_name(b, ch, "n:", b->base.node);
        pl_bus__redis_enc_reset(b);
        pl_bus__enc_beat(&b->enc, b->base.node, b->beat_sent + 1, b->started);
        const char *argv[] = {"PUBLISH", ch, b->enc.p};
        size_t lens[] = {7, chlen, b->enc.len};
        if (pl_bus__redis_cmd_send(b, beat_cb, b, 3, argv, lens) == 0) {
            b->beat_sent++;
            b->beat_busy = 1;
            b->beat_gen = b->sub_gen;
        }
    }
    /* this node is alive, to every node (node_gone); n 0 moves no node's
     * own heartbeat count */
    char ch[NAME_MAX_LEN];
    size_t chlen = pl_bus__redis_name(b, ch, "p", -1);
    pl_bus__redis_enc_reset(b);
    pl_bus__enc_beat(&b->enc, b->base.node, 0, b->started);
    const char *argv[] = {"PUBLISH", ch, b->enc.p};
    size_t lens[] = {7, chlen, b->enc.len};
    pl_bus__redis_cmd_send(b, ping_cb, b, 3, argv, lens);
}

static void tick_cb(uv_timer_t *t) {
    pl_bus_redis *b = t->data;
    int64_t now = pl_mono_ms();
    tick_cmd(b);                                   /* may ack: a handler may close */
    if (b->closing) return;
    if (b->sub_ready && b->beat_lag_since && now - b->beat_lag_since > BEAT_LAG_MS) {
        pl_log(PL_LOG_WARN, 0, "bus subscription connection silent, reconnecting", "\"lag_ms\":%lld",
               (long long)(now - b->beat_lag_since));
        pl_rconn_drop(&b->sub, "heartbeat not received");
    }
    pl_bus__redis_req_tick(b, now);
}

/* ---- connections, lifecycle -------------------------------------------------- */

static void cmd_up(void *ud) {
    pl_bus_redis *b = ud;
    b->cmd_sent = b->cmd_replied = b->cmd_seen = 0;
    b->stall_ticks = 0;
    b->beat_busy = 0;
    pl_bus__redis_scripts_load(b);
    pl_bus__redis_flush(b);
}

static void cmd_down(void *ud) {
    pl_bus_redis *b = ud;
    b->beat_busy = 0;
}

static void maybe_free(pl_bus_redis *b) {
    if (--b->open == 0) free(b);
}

static void conn_closed(void *ud) { maybe_free(ud); }
static void handle_closed(uv_handle_t *h) { maybe_free(h->data); }

static int r_healthy(pl_bus *pb) {
    pl_bus_redis *b = B(pb);
    /* connected is not enough: a hung Redis (SIGSTOP, swapped out) keeps
     * the connections and accepts new ones, and answers nothing (audit C2:
     * /readyz said ready for 25-30 s while nothing crossed nodes) */
    int answering = !b->unanswered_since || pl_mono_ms() - b->unanswered_since < UNHEALTHY_MS;
    return pl_rconn_is_up(&b->cmd) && pl_rconn_is_up(&b->sub) && b->sub_ready && answering;
}

static void r_close(pl_bus *pb) {
    pl_bus_redis *b = B(pb);
    if (b->stopping) return;
    b->stopping = 1;
    pl_bus__redis_req_close(b);                    /* answers every request, now */
    b->closing = 1;
    pl_rconn_close(&b->cmd);                       /* pending replies: NULL, ignored */
    pl_rconn_close(&b->sub);
    uv_close((uv_handle_t *)&b->tick, handle_closed);
    uv_close((uv_handle_t *)&b->idle, handle_closed);
    pl_bus__redis_pub_release(b);
    pl_bus__redis_sub_release(b);
    pl_sbuf_release(&b->enc);
}

static const pl_bus_ops redis_ops = {
    .name = "redis",
    .publish_event = pl_bus__redis_event,
    .publish_head = pl_bus__redis_head,
    .publish_join = pl_bus__redis_join,
    .publish_revoke = pl_bus__redis_revoke,
    .publish_keys_low = pl_bus__redis_keys_low,
    .publish_typing = pl_bus__redis_typing,
    .publish_conv_blocked = pl_bus__redis_conv_blocked,
    .publish_erased = pl_bus__redis_erased,
    .publish_receipt = pl_bus__redis_receipt,
    .publish_presence = pl_bus__redis_presence,
    .subscribe_conv = pl_bus__redis_sub_conv,
    .subscribe_user = pl_bus__redis_sub_user,
    .rate_take = pl_bus__redis_rate,
    .rate_answer_now = pl_bus__redis_rate_answer_now,
    .presence_get = pl_bus__redis_presence_get,
    .healthy = r_healthy,
    .node_gone = pl_bus__redis_node_gone,
    .node_since = pl_bus__redis_node_since,
    .close = r_close,
};

#define PROBE_MS 5000      /* what a start waits for Redis to answer */

int pl_bus_redis_probe(const char *url, char *err, size_t errlen) { return pl_redis_probe(url, PROBE_MS, err, errlen); }

pl_bus *pl_bus_redis_new(struct uv_loop_s *loop, const pl_bus_redis_opts *o, const pl_bus_handlers *h,
                         char *err, size_t errlen) {
    if (!loop || !o || !h) {
        snprintf(err, errlen, "redis bus: missing loop, options or handlers");
        return NULL;
    }
    pl_redis_addr addr;
    if (pl_redis__parse_url(o->url, &addr, err, errlen)) return NULL;
    const char *prefix = o->prefix ? o->prefix : "";
    if (strlen(prefix) > PREFIX_MAX) {
        snprintf(err, errlen, "redis bus: prefix longer than %d bytes", PREFIX_MAX);
        return NULL;
    }
    if (o->node < 0 || o->node > 1023) {
        snprintf(err, errlen, "redis bus: node id %d outside 0..1023", o->node);
        return NULL;
    }
    pl_bus_redis *b = pl_calloc(1, sizeof *b);
    b->base.ops = &redis_ops;
    b->base.h = *h;
    b->base.node = o->node;
    b->started = pl_now_ms();
    b->base.shared = 1;
    b->loop = loop;
    b->addr = addr;
    memcpy(b->prefix, prefix, strlen(prefix) + 1);
    b->plen = strlen(prefix);
    b->urate = o->user_rate > 0 ? o->user_rate : 0;
    b->uburst = o->user_burst > 1 ? o->user_burst : 1;
    b->crate = o->conv_rate > 0 ? o->conv_rate : 0;
    b->cburst = o->conv_burst > 1 ? o->conv_burst : 1;
    b->wrate = o->ws_rate > 0 ? o->ws_rate : 0;
    b->wburst = o->ws_burst > 1 ? o->ws_burst : 1;
    pl_sbuf_init(&b->enc);
    ring_init(&b->pubs, sizeof(pub_ent));
    ring_init(&b->batches, sizeof(batch_rec));
    pl_map_init(&b->pending);
    pl_map_init(&b->convs);
    pl_map_init(&b->users);
    pl_bus__redis_scripts_init(b);

    pl_rconn_init(&b->cmd, loop, &b->addr, "cmd");
    b->cmd.select_db = 1;
    b->cmd.up = cmd_up;
    b->cmd.down = cmd_down;
    snprintf(b->cmd_name, sizeof b->cmd_name, "parley-n%d-cmd", o->node);
    snprintf(b->sub_name, sizeof b->sub_name, "parley-n%d-sub", o->node);
    b->cmd.client_name = b->cmd_name;
    pl_rconn_init(&b->sub, loop, &b->addr, "sub");
    b->sub.client_name = b->sub_name;
    b->sub.up = pl_bus__redis_sub_up;
    b->sub.down = pl_bus__redis_sub_down;
    b->cmd.closed = b->sub.closed = conn_closed;
    b->cmd.ud = b->sub.ud = b;
    uv_timer_init(loop, &b->tick);
    b->tick.data = b;
    uv_timer_start(&b->tick, tick_cb, TICK_MS, TICK_MS);
    uv_idle_init(loop, &b->idle);
    b->idle.data = b;
    b->open = 4;
    pl_rconn_start(&b->cmd);
    pl_rconn_start(&b->sub);
    return &b->base;
}
