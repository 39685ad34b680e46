/* bus_redis_sub.c — the Redis bus's subscriptions (the state diagram and
 * notes 1-3 in bus_redis.c) and the messages they bring. */
#include "bus_redis_int.h"

#include <stdio.h>

#include "../core/clock.h"
#include "../core/log.h"
#include "../core/metrics.h"
#include "bus_codec.h"

static pl_map *chan_map(pl_bus_redis *b, char kind) { return kind == 'c' ? &b->convs : &b->users; }

static size_t chan_name(const pl_bus_redis *b, char *out, const chan *ch) {
    return pl_bus__redis_name(b, out, ch->kind == 'c' ? "c:" : "u:", ch->id);
}

static void sub_cb(redisAsyncContext *ac, void *r, void *priv);

static void chan_send(pl_bus_redis *b, chan *ch) {
    char name[NAME_MAX_LEN];
    const char *argv[] = {ch->want ? "SUBSCRIBE" : "UNSUBSCRIBE", name};
    size_t lens[] = {strlen(argv[0]), chan_name(b, name, ch)};
    if (redisAsyncCommandArgv(b->sub.ac, sub_cb, b, 2, argv, lens) == REDIS_OK) ch->busy = 1;
}

/* Moves ch one step towards what is wanted (diagram above). May call a
 * handler (last) or free ch. */
static void chan_kick(pl_bus_redis *b, chan *ch) {
    if (ch->busy) return;
    if (!ch->want && !ch->have) {
        free(pl_map_del(chan_map(b, ch->kind), ch->id));
        return;
    }
    if (!pl_rconn_is_up(&b->sub)) return;          /* the round will do it */
    if (ch->want != ch->have) {
        chan_send(b, ch);
        return;
    }
    if (ch->notify) {                              /* note 1 */
        ch->notify = 0;
        char kind = ch->kind;
        int64_t id = ch->id;
        if (kind == 'c' && b->base.h.conv_ready) b->base.h.conv_ready(b->base.h.ud, id);
        if (kind == 'u' && b->base.h.user_ready) b->base.h.user_ready(b->base.h.ud, id);
    }
}

static void subscribe(pl_bus_redis *b, char kind, int64_t id, int on) {
    if (b->closing || id <= 0) return;
    pl_map *m = chan_map(b, kind);
    chan *ch = pl_map_get(m, id);
    if (!ch) {
        if (!on) return;
        ch = pl_calloc(1, sizeof *ch);
        ch->id = id;
        ch->kind = kind;
        pl_map_put(m, id, ch);
    }
    ch->want = on ? 1 : 0;
    if (on) ch->notify = 1;
    chan_kick(b, ch);
}

void pl_bus__redis_sub_conv(pl_bus *pb, int64_t conv, int on) { subscribe(B(pb), 'c', conv, on); }
void pl_bus__redis_sub_user(pl_bus *pb, int64_t user, int on) { subscribe(B(pb), 'u', user, on); }

static void round_done(pl_bus_redis *b) {
    if (!b->round_active || b->round_left) return;
    b->round_active = 0;
    b->sub_ready = 1;
    b->sub_ready_at = pl_mono_ms();
    b->beat_lag_since = 0;
    if (b->need_resync) {
        b->need_resync = 0;
        pl_log(PL_LOG_INFO, 0, "bus resubscribed, resync", "\"convs\":%zu,\"users\":%zu", b->convs.len,
               b->users.len);
        if (b->base.h.resync) b->base.h.resync(b->base.h.ud);
    }
}

/* what a channel name (reply string) designates: 'c', 'u', 'p', 'n' or 0 */
static char parse_chan(const pl_bus_redis *b, const redisReply *r, int64_t *id) {
    if (r->type != REDIS_REPLY_STRING || r->len < b->plen + 1 || memcmp(r->str, b->prefix, b->plen))
        return 0;
    const char *s = r->str + b->plen;
    size_t n = r->len - b->plen;
    if (n == 1 && s[0] == 'p') return 'p';
    if (n < 3 || s[1] != ':' || (s[0] != 'c' && s[0] != 'u' && s[0] != 'n')) return 0;
    int64_t v = 0;
    for (size_t i = 2; i < n; i++) {
        if (s[i] < '0' || s[i] > '9' || v > (INT64_MAX - 9) / 10) return 0;
        v = v * 10 + (s[i] - '0');
    }
    *id = v;
    return s[0];
}

static void on_confirm(pl_bus_redis *b, const redisReply *name, int subscribed) {
    int64_t id = 0;
    char kind = parse_chan(b, name, &id);
    if (kind == 'p' || kind == 'n') {
        if (subscribed && b->round_active && b->round_left) {
            b->round_left--;
            round_done(b);
        }
        return;
    }
    if (kind != 'c' && kind != 'u') return;
    chan *ch = pl_map_get(chan_map(b, kind), id);
    if (!ch || !ch->busy) return;
    ch->busy = 0;
    ch->have = subscribed ? 1 : 0;
    int was_round = ch->round;
    ch->round = 0;
    if (was_round && b->round_left) b->round_left--;
    chan_kick(b, ch);                              /* ready (note 1) before resync */
    if (was_round && !b->closing) round_done(b);
}

/* A node is gone once this node has been subscribed to "p" for longer than
 * NODE_GONE_MS (so it would have heard every live node's beats, one a
 * second) and heard nothing from it (no beat, no other message) for as long, while its own beats keep
 * coming back on "p" (so it is not this node's subscription that lags:
 * Redis delivers a channel's messages in the order it took them). */
int pl_bus__redis_node_gone(pl_bus *pb, int node) {
    pl_bus_redis *b = (pl_bus_redis *)pb;
    int self = b->base.node;
    if (node == self || node < 0 || node >= NODE_IDS || !b->sub_ready) return 0;
    int64_t now = pl_mono_ms();
    if (now - b->sub_ready_at < NODE_GONE_MS || now - b->node_seen[self] > NODE_OWN_BEAT_MS) return 0;
    return now - b->node_seen[node] >= NODE_GONE_MS;
}

int64_t pl_bus__redis_node_since(pl_bus *pb, int node) {
    pl_bus_redis *b = (pl_bus_redis *)pb;
    if (node == b->base.node) return b->started;
    return node >= 0 && node < NODE_IDS ? b->node_since[node] : 0;
}

void pl_bus__redis_beat_rx(pl_bus_redis *b, int64_t n) {
    if (n > b->beat_rx) b->beat_rx = n;
    if (b->beat_rx >= b->beat_acked) b->beat_lag_since = 0;
}

static void malformed(pl_bus_redis *b, const char *why) {
    int64_t held;
    b->malformed++;
    if (!pl_log_due(&b->malformed_log, LOG_EVERY_MS, pl_mono_ms(), &held)) return;
    pl_log(PL_LOG_WARN, 0, "malformed bus messages dropped", "\"count\":%llu,\"total\":%llu,\"last\":\"%s\"",
           (unsigned long long)held + 1, (unsigned long long)b->malformed, why);   /* held, and this one */
}

static void on_message(pl_bus_redis *b, redisReply *payload) {
    if (payload->type != REDIS_REPLY_STRING) {
        malformed(b, "not a string");
        return;
    }
    pl_bus_msg m;
    const char *why = NULL;
    if (pl_bus__decode(payload->str, payload->len, &m, &b->convs_scratch, &b->convs_cap, &why)) {
        malformed(b, why);
        return;
    }
    /* any message of a node says it is alive, not only its beat: a node
     * just (re)started publishes its first presence view before its first
     * beat, and a view of a node taken for gone did not count, so the
     * first user to connect there was announced a slice later (audit X4:
     * 1.8 s to over 2.5 s) */
    if (m.origin >= 0 && m.origin < NODE_IDS) b->node_seen[m.origin] = pl_mono_ms();
    if (m.type == PL_BM_BEAT) {
        if (m.origin >= 0 && m.origin < NODE_IDS && m.beat.since) b->node_since[m.origin] = m.beat.since;
        if (m.origin == b->base.node) pl_bus__redis_beat_rx(b, m.beat.n);   /* on n:<node> or p */
        return;
    }
    if (m.origin == b->base.node) return;          /* guarantee 1: had it already */
    pl_count(&pl_m_bus_received, 1);
    const pl_bus_handlers *h = &b->base.h;
    switch (m.type) {
    case PL_BM_EVENT:
        if (h->event) h->event(h->ud, &m.ev);
        break;
    case PL_BM_HEAD:
        if (h->head) h->head(h->ud, m.head.conv, m.head.seq);
        break;
    case PL_BM_JOIN:
        if (h->join) h->join(h->ud, m.join.user, m.join.conv, m.join.seq);
        break;
    case PL_BM_REVOKE:
        if (h->revoke) h->revoke(h->ud, m.revoke.user, m.revoke.login);
        break;
    case PL_BM_KEYS_LOW:
        if (h->keys_low) h->keys_low(h->ud, m.keys_low.user, m.keys_low.device, m.keys_low.count);
        break;
    case PL_BM_TYPING:
        if (h->typing) h->typing(h->ud, m.typing.conv, m.typing.user, m.typing.start, m.origin);
        break;
    case PL_BM_BLOCKED:
        if (h->conv_blocked) h->conv_blocked(h->ud, m.blocked.conv, m.blocked.blocked);
        break;
    case PL_BM_ERASED:
        if (h->erased) h->erased(h->ud);
        break;
    case PL_BM_RECEIPT:
        if (h->receipt) h->receipt(h->ud, &m.receipt);
        break;
    case PL_BM_PRESENCE:
        if (h->presence) h->presence(h->ud, &m.presence);
        break;
    }
}

/* Every reply on sub: subscribe/unsubscribe confirmations and messages. */
static void sub_cb(redisAsyncContext *ac, void *r, void *priv) {
    pl_bus_redis *b = priv;
    redisReply *reply = r;
    if (b->closing || !reply || ac != b->sub.ac) return;
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 3 ||
        reply->element[0]->type != REDIS_REPLY_STRING)
        return;
    const char *kind = reply->element[0]->str;
    if (strcmp(kind, "message") == 0) on_message(b, reply->element[2]);
    else if (strcmp(kind, "subscribe") == 0) on_confirm(b, reply->element[1], 1);
    else if (strcmp(kind, "unsubscribe") == 0) on_confirm(b, reply->element[1], 0);
}

/* SUBSCRIBE commands of up to SUB_CHUNK channels (note 3) */
typedef struct sub_batch {
    pl_sbuf     names;
    size_t      n;
    size_t      offs[SUB_CHUNK], lens[SUB_CHUNK + 1];
    const char *argv[SUB_CHUNK + 1];
} sub_batch;

static void sb_flush(pl_bus_redis *b, sub_batch *sb) {
    if (!sb->n) return;
    sb->argv[0] = "SUBSCRIBE";
    memmove(sb->lens + 1, sb->lens, sb->n * sizeof *sb->lens);
    sb->lens[0] = 9;
    for (size_t k = 0; k < sb->n; k++) sb->argv[k + 1] = sb->names.p + sb->offs[k];
    redisAsyncCommandArgv(b->sub.ac, sub_cb, b, (int)sb->n + 1, sb->argv, sb->lens);
    sb->n = 0;
    sb->names.len = 0;
}

static void sb_add(pl_bus_redis *b, sub_batch *sb, const char *name, size_t len) {
    sb->offs[sb->n] = sb->names.len;
    sb->lens[sb->n] = len;
    pl_sbuf_add(&sb->names, name, len);
    if (++sb->n == SUB_CHUNK) sb_flush(b, sb);
}

/* The round: "p" and "n:<node>" first (note 2), then every wanted channel. */
void pl_bus__redis_sub_up(void *ud) {
    pl_bus_redis *b = ud;
    sub_batch *sb = pl_malloc(sizeof *sb);
    pl_sbuf_init(&sb->names);
    sb->n = 0;
    char name[NAME_MAX_LEN];
    b->sub_gen++;
    b->round_active = 1;
    b->round_left = 2;
    sb_add(b, sb, name, pl_bus__redis_name(b, name, "p", -1));
    sb_add(b, sb, name, pl_bus__redis_name(b, name, "n:", b->base.node));
    pl_map *maps[2] = {&b->convs, &b->users};
    for (int mi = 0; mi < 2; mi++) {
        pl_map *m = maps[mi];
        for (size_t i = 0; i < m->cap; i++) {
            chan *ch = m->slots[i].val;
            if (!m->slots[i].key || !ch->want) continue;
            ch->busy = 1;
            ch->round = 1;
            b->round_left++;
            sb_add(b, sb, name, chan_name(b, name, ch));
        }
    }
    sb_flush(b, sb);
    pl_sbuf_release(&sb->names);
    free(sb);
}

void pl_bus__redis_sub_down(void *ud) {
    pl_bus_redis *b = ud;
    b->sub_ready = 0;
    b->round_active = 0;
    b->round_left = 0;
    b->need_resync = 1;
    b->beat_acked = b->beat_rx = b->beat_sent;
    b->beat_lag_since = 0;
    pl_map *maps[2] = {&b->convs, &b->users};
    for (int mi = 0; mi < 2; mi++) {
        pl_map *m = maps[mi];
        for (size_t i = 0; i < m->cap;) {
            chan *ch = m->slots[i].val;
            if (!m->slots[i].key) { i++; continue; }
            ch->busy = ch->have = ch->round = 0;
            if (!ch->want) {
                free(pl_map_del(m, ch->id));       /* backward shift: look at i again */
                continue;
            }
            ch->notify = 1;
            i++;
        }
    }
}

void pl_bus__redis_sub_release(pl_bus_redis *b) {
    pl_map *maps[2] = {&b->convs, &b->users};
    for (int mi = 0; mi < 2; mi++) {
        for (size_t i = 0; i < maps[mi]->cap; i++)
            if (maps[mi]->slots[i].key) free(maps[mi]->slots[i].val);
        pl_map_release(maps[mi]);
    }
    free(b->convs_scratch);
    b->convs_scratch = NULL;
}
