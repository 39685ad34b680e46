/* bus_redis_pub.c — the Redis bus's publishing: PUBLISH on cmd, the FIFO
 * of replies, pending heads, retried joins/revocations and outbox acks
 * (design note in bus_redis.c, notes 4-7). */
#include "bus_redis_int.h"

#include <stdio.h>

#include "../core/clock.h"
#include "../core/log.h"
#include "../core/metrics.h"
#include "bus_codec.h"

/* The record an event of `batch` belongs to: the first with batch >= it. */
static batch_rec *batch_find(pl_bus_redis *b, int64_t batch) {
    size_t lo = 0, hi = b->batches.len;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (((batch_rec *)ring_at(&b->batches, mid))->batch < batch) lo = mid + 1;
        else hi = mid;
    }
    return lo < b->batches.len ? ring_at(&b->batches, lo) : NULL;
}

/* Counts one event publish of `batch`; returns the batch id to resolve it
 * by later (its record's, which only grows). */
static int64_t batch_add(pl_bus_redis *b, int64_t batch) {
    if (b->batches.len) {
        batch_rec *t = ring_at(&b->batches, b->batches.len - 1);
        if (t->batch >= batch || t->failed) {      /* same batch, or merge (note 5) */
            if (batch > t->batch) t->batch = batch;
            t->remaining++;
            return t->batch;
        }
    }
    batch_rec *r = ring_push(&b->batches);
    r->batch = batch;
    r->remaining = 1;
    r->failed = 0;
    return batch;
}

static void batch_resolve(pl_bus_redis *b, int64_t batch, int failed) {
    batch_rec *r = batch_find(b, batch);
    if (!r || !r->remaining) return;               /* cannot happen: the FIFO mirrors the adds */
    r->remaining--;
    if (failed) r->failed++;
}

static void ack_pump(pl_bus_redis *b) {
    int covered = b->pending.len == 0 && b->flush_inflight == 0;
    int64_t last = 0;
    while (b->batches.len) {
        batch_rec *r = ring_at(&b->batches, 0);
        if (r->remaining || (r->failed && !covered)) break;
        last = r->batch;
        ring_pop(&b->batches);
    }
    if (!last) return;
    b->acked_upto = last;
    if (b->base.h.outbox_acked) b->base.h.outbox_acked(b->base.h.ud, last);
}

static void pending_note(pl_bus_redis *b, int64_t conv, int64_t seq) {
    if (!conv) return;
    int64_t *v = pl_map_get(&b->pending, conv);
    if (!v) {
        v = pl_malloc(sizeof *v);
        *v = seq;
        pl_map_put(&b->pending, conv, v);
    } else if (seq > *v) {
        *v = seq;
    }
}

static void retry_add(pl_bus_redis *b, const pub_ent *e) {
    if (b->nretry >= RETRY_MAX) {
        if (pl_log_due(&b->retry_log, LOG_EVERY_MS, pl_mono_ms(), NULL))
            pl_log(PL_LOG_ERROR, 0, "bus retry queue full: join/revocation/erasure dropped", "\"kept\":%zu",
                   b->nretry);
        return;
    }
    if (b->nretry == b->retry_cap) {
        b->retry_cap = b->retry_cap ? b->retry_cap * 2 : 64;
        b->retry = pl_realloc(b->retry, b->retry_cap * sizeof *b->retry);
    }
    b->retry[b->nretry++] = *e;
}

/* note 4 and 6: a publish that was not handed over */
static void pub_failed(pl_bus_redis *b, const pub_ent *e) {
    switch (e->kind) {
    case PUB_EVENT:
        pending_note(b, e->a, e->b);
        if (e->c) batch_resolve(b, e->c, 1);
        break;
    case PUB_FLUSH:
        b->flush_inflight--;
        /* fall through */
    case PUB_HEAD:
        pending_note(b, e->a, e->b);
        break;
    case PUB_JOIN:
    case PUB_REVOKE:
    case PUB_ERASED:
        retry_add(b, e);
        break;
    default:
        return;                                    /* ephemeral: best effort */
    }
    pl_count(&pl_m_bus_publish_failures, 1);
}

static void pub_cb(redisAsyncContext *ac, void *r, void *priv) {
    pl_bus_redis *b = priv;
    if (b->closing || !b->pubs.len) return;
    pub_ent e = *(pub_ent *)ring_at(&b->pubs, 0);
    ring_pop(&b->pubs);
    b->pub_bytes -= e.bytes;
    redisReply *reply = pl_bus__redis_cmd_reply(b, ac, r);
    if (!reply || reply->type != REDIS_REPLY_INTEGER) {
        if (reply) pl_bus__redis_log_error(b, "PUBLISH", reply);
        pub_failed(b, &e);
        return;
    }
    pl_count(&pl_m_bus_published, 1);
    if (e.kind == PUB_FLUSH) b->flush_inflight--;
    if (e.kind == PUB_EVENT && e.c) batch_resolve(b, e.c, 0);
    if (e.kind == PUB_FLUSH || (e.kind == PUB_EVENT && e.c)) ack_pump(b);
}

/* PUBLISHes b->enc on the channel prefix+tag+id (id < 0: tag alone). */
void pl_bus__redis_pub_send(pl_bus_redis *b, const char *tag, int64_t id, pub_ent *e) {
    char ch[NAME_MAX_LEN];
    size_t chlen = pl_bus__redis_name(b, ch, tag, id);
    e->bytes = (uint32_t)b->enc.len;
    if (b->pub_bytes + b->enc.len > PUB_BYTES_MAX) {
        pub_failed(b, e);
        return;
    }
    const char *argv[] = {"PUBLISH", ch, b->enc.p};
    size_t lens[] = {7, chlen, b->enc.len};
    if (pl_bus__redis_cmd_send(b, pub_cb, b, 3, argv, lens)) {
        pub_failed(b, e);
        return;
    }
    *(pub_ent *)ring_push(&b->pubs) = *e;
    b->pub_bytes += e->bytes;
}

static void send_head(pl_bus_redis *b, int kind, int64_t conv, int64_t seq) {
    pl_bus__redis_enc_reset(b);
    pl_bus__enc_head(&b->enc, b->base.node, conv, seq);
    pub_ent e = {conv, seq, 0, 0, (uint8_t)kind};
    if (kind == PUB_FLUSH) b->flush_inflight++;
    pl_bus__redis_pub_send(b, "c:", conv, &e);
}

static void send_retry(pl_bus_redis *b, pub_ent *e) {
    pl_bus__redis_enc_reset(b);
    if (e->kind == PUB_ERASED) {                   /* on "p" (bus_redis.c note 2) */
        pl_bus__enc_erased(&b->enc, b->base.node);
        pl_bus__redis_pub_send(b, "p", -1, e);
        return;
    }
    if (e->kind == PUB_JOIN) pl_bus__enc_join(&b->enc, b->base.node, e->a, e->b, e->c);
    else pl_bus__enc_revoke(&b->enc, b->base.node, e->a, e->b);
    pl_bus__redis_pub_send(b, "u:", e->a, e);
}

/* Publishes every pending head and queued join/revocation (notes 4, 6). */
void pl_bus__redis_flush(pl_bus_redis *b) {
    if (!pl_rconn_is_up(&b->cmd)) return;
    size_t n = b->pending.len, k = 0;
    if (n) {
        int64_t (*h)[2] = pl_malloc(n * sizeof *h);
        for (size_t i = 0; i < b->pending.cap; i++) {
            pl_map_slot *s = &b->pending.slots[i];
            if (!s->key) continue;
            h[k][0] = s->key;
            h[k][1] = *(int64_t *)s->val;
            free(s->val);
            k++;
        }
        pl_map_release(&b->pending);
        for (size_t i = 0; i < k; i++) send_head(b, PUB_FLUSH, h[i][0], h[i][1]);
        free(h);
    }
    if (b->nretry) {
        pub_ent *r = b->retry;
        size_t nr = b->nretry;
        b->retry = NULL;
        b->nretry = b->retry_cap = 0;
        for (size_t i = 0; i < nr; i++) send_retry(b, &r[i]);
        free(r);
    }
    ack_pump(b);
}

void pl_bus__redis_event(pl_bus *pb, const pl_event *ev, int64_t batch) {
    pl_bus_redis *b = B(pb);
    if (b->base.h.event) b->base.h.event(b->base.h.ud, ev);
    if (b->closing) return;
    if (batch <= b->acked_upto) batch = 0;         /* not increasing: never ack twice */
    pub_ent e = {ev->conv, ev->seq, batch ? batch_add(b, batch) : 0, 0, PUB_EVENT};
    pl_bus__redis_enc_reset(b);
    pl_bus__enc_event(&b->enc, b->base.node, ev);
    pl_bus__redis_pub_send(b, "c:", ev->conv, &e);
}

void pl_bus__redis_head(pl_bus *pb, int64_t conv, int64_t seq) {
    pl_bus_redis *b = B(pb);
    if (b->base.h.head) b->base.h.head(b->base.h.ud, conv, seq);
    if (b->closing) return;
    send_head(b, PUB_HEAD, conv, seq);
}

void pl_bus__redis_join(pl_bus *pb, int64_t user, int64_t conv, int64_t seq) {
    pl_bus_redis *b = B(pb);
    if (b->base.h.join) b->base.h.join(b->base.h.ud, user, conv, seq);
    if (b->closing) return;
    pub_ent e = {user, conv, seq, 0, PUB_JOIN};
    send_retry(b, &e);
}

void pl_bus__redis_revoke(pl_bus *pb, int64_t user, int64_t login) {
    pl_bus_redis *b = B(pb);
    if (b->base.h.revoke) b->base.h.revoke(b->base.h.ud, user, login);
    if (b->closing) return;
    pub_ent e = {user, login, 0, 0, PUB_REVOKE};
    send_retry(b, &e);
}

void pl_bus__redis_keys_low(pl_bus *pb, int64_t user, int64_t device, int64_t count) {
    pl_bus_redis *b = B(pb);
    if (b->base.h.keys_low) b->base.h.keys_low(b->base.h.ud, user, device, count);
    if (b->closing || !pl_rconn_is_up(&b->cmd)) return;
    pl_bus__redis_enc_reset(b);
    pl_bus__enc_keys_low(&b->enc, b->base.node, user, device, count);
    pub_ent e = {0, 0, 0, 0, PUB_EPHEMERAL};
    pl_bus__redis_pub_send(b, "u:", user, &e);
}

void pl_bus__redis_typing(pl_bus *pb, int64_t conv, int64_t user, int start) {
    pl_bus_redis *b = B(pb);
    if (b->base.h.typing) b->base.h.typing(b->base.h.ud, conv, user, start, b->base.node);
    if (b->closing || !pl_rconn_is_up(&b->cmd)) return;
    pl_bus__redis_enc_reset(b);
    pl_bus__enc_typing(&b->enc, b->base.node, conv, user, start);
    pub_ent e = {0, 0, 0, 0, PUB_EPHEMERAL};
    pl_bus__redis_pub_send(b, "c:", conv, &e);
}

void pl_bus__redis_conv_blocked(pl_bus *pb, int64_t conv, int blocked) {
    pl_bus_redis *b = B(pb);
    if (b->base.h.conv_blocked) b->base.h.conv_blocked(b->base.h.ud, conv, blocked);
    if (b->closing || !pl_rconn_is_up(&b->cmd)) return;
    pl_bus__redis_enc_reset(b);
    pl_bus__enc_blocked(&b->enc, b->base.node, conv, blocked);
    pub_ent e = {0, 0, 0, 0, PUB_EPHEMERAL};
    pl_bus__redis_pub_send(b, "c:", conv, &e);
}

/* On "p", which every node subscribes to first and keeps (bus_redis.c note
 * 2); queued and re-sent like a join when not handed over (note 6): the
 * other nodes, still connected, would not resync, and their rings would
 * keep the erased text (audit L7). */
void pl_bus__redis_erased(pl_bus *pb) {
    pl_bus_redis *b = B(pb);
    if (b->base.h.erased) b->base.h.erased(b->base.h.ud);
    if (b->closing) return;
    pub_ent e = {0, 0, 0, 0, PUB_ERASED};
    send_retry(b, &e);
}

void pl_bus__redis_receipt(pl_bus *pb, const pl_bus_receipt *r) {
    pl_bus_redis *b = B(pb);
    if (b->base.h.receipt) b->base.h.receipt(b->base.h.ud, r);
    if (b->closing || !pl_rconn_is_up(&b->cmd)) return;
    pl_bus__redis_enc_reset(b);
    pl_bus__enc_receipt(&b->enc, b->base.node, r);
    pub_ent e = {0, 0, 0, 0, PUB_EPHEMERAL};
    pl_bus__redis_pub_send(b, "c:", r->conv, &e);
}

void pl_bus__redis_pub_release(pl_bus_redis *b) {
    for (size_t i = 0; i < b->pending.cap; i++)
        if (b->pending.slots[i].key) free(b->pending.slots[i].val);
    pl_map_release(&b->pending);
    ring_release(&b->pubs);
    ring_release(&b->batches);
    free(b->retry);
    b->retry = NULL;
    b->nretry = b->retry_cap = 0;
}
