/* order.c — per-device order of push notifications (see order.h).
 *
 * Owns: a map from device id to its chain (the owning pass's waiting
 * notifications) and its held rows. Does not own the passes or their
 * notifications: worker.c does, and tells this file what became of them.
 */
#include "order.h"

#include <stdlib.h>
#include <string.h>

#include "../core/alloc.h"
#include "../core/map.h"

typedef struct waiting {            /* a notification behind the one in flight */
    int64_t row;
    size_t  index;                  /* in its pass                           */
} waiting;

typedef struct held {               /* a row kept in the outbox for the device */
    int64_t row;
    int64_t at;                     /* mono ms it was held (invariant 4)     */
} held;

typedef struct dev {
    int64_t     id;
    const void *owner;              /* the pass whose chain it is; NULL: none */
    int         busy;               /* a request in flight (invariant 1)      */
    waiting    *wait;               /* the chain's rest, in row order         */
    size_t      whead, wlen, wcap;  /* wait[whead .. whead + wlen)            */
    held       *held;               /* sorted by row, each row once           */
    size_t      nheld, heldcap;
} dev;

struct pl_push_order {
    pl_map devs;                    /* device id -> dev (owned)               */
};

pl_push_order *pl_push_order_new(void) {
    pl_push_order *o = pl_calloc(1, sizeof *o);
    pl_map_init(&o->devs);
    return o;
}

static void dev_free(dev *d) {
    free(d->wait);
    free(d->held);
    free(d);
}

void pl_push_order_free(pl_push_order **op) {
    pl_push_order *o = *op;
    if (!o) return;
    for (size_t i = 0; i < o->devs.cap; i++)
        if (o->devs.slots[i].key) dev_free(o->devs.slots[i].val);
    pl_map_release(&o->devs);
    free(o);
    *op = NULL;
}

size_t pl_push_order_devices(const pl_push_order *o) { return o->devs.len; }

static dev *dev_get(pl_push_order *o, int64_t id) {
    dev *d = pl_map_get(&o->devs, id);
    if (!d) {
        d = pl_calloc(1, sizeof *d);
        d->id = id;
        pl_map_put(&o->devs, id, d);
    }
    return d;
}

/* Frees d when nothing is left of it (no chain, no holds). */
static void dev_maybe_free(pl_push_order *o, dev *d) {
    if (d->owner || d->busy || d->wlen || d->nheld) return;
    pl_map_del(&o->devs, d->id);
    dev_free(d);
}

static void held_del(dev *d, int64_t row) {
    for (size_t i = 0; i < d->nheld; i++)
        if (d->held[i].row == row) {
            memmove(d->held + i, d->held + i + 1, (d->nheld - i - 1) * sizeof *d->held);
            d->nheld--;
            return;
        }
}

static void held_add(dev *d, int64_t row, int64_t now) {
    size_t i = 0;
    while (i < d->nheld && d->held[i].row < row) i++;
    if (i < d->nheld && d->held[i].row == row) {
        d->held[i].at = now;
        return;
    }
    if (d->nheld == d->heldcap) {
        d->heldcap = d->heldcap ? d->heldcap * 2 : 4;
        d->held = pl_realloc(d->held, d->heldcap * sizeof *d->held);
    }
    memmove(d->held + i + 1, d->held + i, (d->nheld - i) * sizeof *d->held);
    d->held[i] = (held){row, now};
    d->nheld++;
}

/* 1 when a row below `row` is held for d (invariant 3); stale holds go
 * first (invariant 4). */
static int held_before(dev *d, int64_t row, int64_t now) {
    size_t k = 0;
    for (size_t i = 0; i < d->nheld; i++)
        if (now - d->held[i].at < PL_PUSH_HOLD_MS) d->held[k++] = d->held[i];
    d->nheld = k;
    return d->nheld && d->held[0].row < row;
}

static void wait_push(dev *d, int64_t row, size_t index) {
    if (d->whead + d->wlen == d->wcap) {
        if (d->whead) {                              /* slide to the front first */
            memmove(d->wait, d->wait + d->whead, d->wlen * sizeof *d->wait);
            d->whead = 0;
        }
        if (d->wlen == d->wcap) {
            d->wcap = d->wcap ? d->wcap * 2 : 4;
            d->wait = pl_realloc(d->wait, d->wcap * sizeof *d->wait);
        }
    }
    size_t i = d->whead + d->wlen;                   /* in row order (offers mostly are) */
    while (i > d->whead && d->wait[i - 1].row > row) {
        d->wait[i] = d->wait[i - 1];
        i--;
    }
    d->wait[i] = (waiting){row, index};
    d->wlen++;
}

int pl_push_order_offer(pl_push_order *o, int64_t device, int64_t row, const void *owner, size_t index,
                        int64_t now) {
    dev *d = dev_get(o, device);
    held_del(d, row);                                /* it is back: not held now */
    if ((d->owner && d->owner != owner) || held_before(d, row, now)) {
        held_add(d, row, now);                       /* invariants 2 and 3 */
        return PL_PUSH_ORDER_DEFER;
    }
    if (!d->owner) {
        d->owner = owner;
        d->busy = 1;
        return PL_PUSH_ORDER_GO;
    }
    wait_push(d, row, index);
    return PL_PUSH_ORDER_WAIT;
}

void pl_push_order_keep(pl_push_order *o, int64_t device, int64_t row, int64_t now) {
    held_add(dev_get(o, device), row, now);
}

void pl_push_order_settled(pl_push_order *o, int64_t device, int64_t row, int kept, int64_t now) {
    dev *d = pl_map_get(&o->devs, device);
    if (!d) return;
    d->busy = 0;
    if (kept) held_add(d, row, now);
    else held_del(d, row);
}

int pl_push_order_next(pl_push_order *o, int64_t device, int stop, size_t *index, int64_t now) {
    dev *d = pl_map_get(&o->devs, device);
    if (!d || d->busy) return 0;
    if (!d->wlen) {                                  /* the chain is over */
        d->owner = NULL;
        dev_maybe_free(o, d);
        return 0;
    }
    waiting w = d->wait[d->whead++];
    d->wlen--;
    if (!d->wlen) d->whead = 0;
    *index = w.index;
    if (stop || held_before(d, w.row, now)) {
        held_add(d, w.row, now);
        return PL_PUSH_ORDER_DEFER;
    }
    d->busy = 1;
    return PL_PUSH_ORDER_GO;
}

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

static int cmp_retry(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = ((const pl_push_retry *)b)->id;
    return x < y ? -1 : x > y;
}

/* Drops every device's holds that over(arg, device, row) says are over; frees the devices
 * left empty (after the walk: the map moves entries on deletion). */
static void sweep(pl_push_order *o, int (*over)(const void *arg, int64_t device, int64_t row), const void *arg) {
    int64_t *empty = NULL;
    size_t nempty = 0;
    for (size_t i = 0; i < o->devs.cap; i++) {
        dev *d = o->devs.slots[i].key ? o->devs.slots[i].val : NULL;
        if (!d || !d->nheld) continue;
        size_t k = 0;
        for (size_t h = 0; h < d->nheld; h++)
            if (!over(arg, d->id, d->held[h].row)) d->held[k++] = d->held[h];
        d->nheld = k;
        if (!k && !d->owner && !d->busy && !d->wlen) {
            empty = pl_realloc(empty, (nempty + 1) * sizeof *empty);
            empty[nempty++] = d->id;
        }
    }
    for (size_t i = 0; i < nempty; i++) dev_free(pl_map_del(&o->devs, empty[i]));
    free(empty);
}

typedef struct done_arg {
    const int64_t *rows;
    size_t n;
    const pl_push_retry *retries;
    size_t nretries;
} done_arg;

static int over_done(const void *arg, int64_t device, int64_t row) {
    const done_arg *a = arg;
    if (!bsearch(&row, a->rows, a->n, sizeof *a->rows, cmp_i64)) return 0;     /* not this pass's */
    const pl_push_retry *r =
        a->nretries ? bsearch(&row, a->retries, a->nretries, sizeof *a->retries, cmp_retry) : NULL;
    if (!r) return 1;                                                       /* the row is done */
    for (size_t i = 0; i < r->ndevices; i++)
        if (r->devices[i] == device) return 0;                              /* kept for it */
    return 1;
}

void pl_push_order_rows_done(pl_push_order *o, const int64_t *rows, size_t n, const pl_push_retry *retries,
                             size_t nretries) {
    if (!n || !o->devs.len) return;
    done_arg a = {rows, n, retries, nretries};
    sweep(o, over_done, &a);
}

typedef struct forget_arg {
    int64_t *rows;
    size_t n;
} forget_arg;

static int over_forget(const void *arg, int64_t device, int64_t row) {
    const forget_arg *a = arg;
    (void)device;
    return bsearch(&row, a->rows, a->n, sizeof *a->rows, cmp_i64) != NULL;
}

void pl_push_order_forget(pl_push_order *o, const int64_t *rows, size_t n) {
    if (!n || !o->devs.len) return;
    forget_arg a = {pl_malloc(n * sizeof *rows), n};
    memcpy(a.rows, rows, n * sizeof *rows);
    qsort(a.rows, n, sizeof *a.rows, cmp_i64);
    sweep(o, over_forget, &a);
    free(a.rows);
}
