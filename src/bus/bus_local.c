/* bus_local.c — the embedded mode's bus: every publish goes straight to
 * this process's handlers (see bus.h). Nothing is subscribed, nothing is
 * lost, nothing crosses a process. */
#include "bus.h"

#include <stdlib.h>

#include "../core/alloc.h"

static void l_event(pl_bus *b, const pl_event *ev, int64_t batch) {
    b->h.event(b->h.ud, ev);
    if (batch && b->h.outbox_acked) b->h.outbox_acked(b->h.ud, batch);
}
static void l_head(pl_bus *b, int64_t conv, int64_t seq) { b->h.head(b->h.ud, conv, seq); }
static void l_join(pl_bus *b, int64_t user, int64_t conv, int64_t seq) { b->h.join(b->h.ud, user, conv, seq); }
static void l_revoke(pl_bus *b, int64_t user, int64_t login) { b->h.revoke(b->h.ud, user, login); }
static void l_erased(pl_bus *b) {
    if (b->h.erased) b->h.erased(b->h.ud);
}
static void l_conv_blocked(pl_bus *b, int64_t conv, int blocked) {
    if (b->h.conv_blocked) b->h.conv_blocked(b->h.ud, conv, blocked);
}
static void l_typing(pl_bus *b, int64_t conv, int64_t user, int start) {
    b->h.typing(b->h.ud, conv, user, start, b->node);
}
static void l_receipt(pl_bus *b, const pl_bus_receipt *r) { b->h.receipt(b->h.ud, r); }
static void l_presence(pl_bus *b, const pl_bus_presence *p) { b->h.presence(b->h.ud, p); }
static void l_keys_low(pl_bus *b, int64_t user, int64_t device, int64_t count) {
    if (b->h.keys_low) b->h.keys_low(b->h.ud, user, device, count);
}
static void l_sub_conv(pl_bus *b, int64_t id, int on) {
    if (on && b->h.conv_ready) b->h.conv_ready(b->h.ud, id);
}
static void l_sub_user(pl_bus *b, int64_t id, int on) {
    if (on && b->h.user_ready) b->h.user_ready(b->h.ud, id);
}
static void l_rate(pl_bus *b, int64_t u, int64_t c, int64_t ws, pl_bus_rate_cb cb, void *arg) {
    (void)b, (void)u, (void)c, (void)ws, (void)cb, (void)arg;
    abort();                                /* bus.h: never called on the local bus */
}
static void l_pget(pl_bus *b, const int64_t *u, size_t n, pl_bus_presence_cb cb, void *arg) {
    (void)b, (void)u, (void)n, (void)cb, (void)arg;
    abort();
}
static int  l_healthy(pl_bus *b) { (void)b; return 1; }
static void l_close(pl_bus *b) { free(b); }

static const pl_bus_ops local_ops = {
    .name = "local",
    .publish_event = l_event,
    .publish_head = l_head,
    .publish_join = l_join,
    .publish_revoke = l_revoke,
    .publish_typing = l_typing,
    .publish_conv_blocked = l_conv_blocked,
    .publish_erased = l_erased,
    .publish_receipt = l_receipt,
    .publish_presence = l_presence,
    .publish_keys_low = l_keys_low,
    .subscribe_conv = l_sub_conv,
    .subscribe_user = l_sub_user,
    .rate_take = l_rate,
    .presence_get = l_pget,
    .healthy = l_healthy,
    .close = l_close,
};

pl_bus *pl_bus_local_new(const pl_bus_handlers *h, int node) {
    pl_bus *b = pl_calloc(1, sizeof *b);
    b->ops = &local_ops;
    b->h = *h;
    b->node = node;
    b->shared = 0;
    return b;
}

void pl_bus_close(pl_bus **b) {
    if (!*b) return;
    (*b)->ops->close(*b);
    *b = NULL;
}
