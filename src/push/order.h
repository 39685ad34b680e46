/* order.h — the order of one device's push notifications.
 *
 * Owns: which notification of a device may go out now. A device's
 * notifications go one at a time, in outbox row order (the order of their
 * messages): the next only once the one before it has completed, sent or
 * refused for good; one kept for a retry holds back every later one of its
 * device. Different devices never wait for each other. Pure bookkeeping on
 * the loop thread, no I/O and no store: worker.c sends and records;
 * docs/design.md "Push notifications", "Order".
 *
 * The model. A pass (worker.c) offers its notifications in row order. Per
 * device there is at most one chain: the offering pass's notifications of
 * that device, one in flight and the rest waiting behind it. Rows "held"
 * for a device are rows kept in the outbox for it (a retry, or deferred
 * here) that are not in a chain now. Invariants:
 *   1. A device has at most one request in flight (its chain's head).
 *   2. A chain belongs to one pass: a notification of another pass for a
 *      busy device is deferred (kept in the outbox, offered again later),
 *      so one pass never waits for another's requests and a slow device
 *      holds up only the pass whose chain it is.
 *   3. Nothing goes out while an earlier row of its device is held: it is
 *      deferred, and held itself, until the earlier one is settled (sent,
 *      refused, or its row finished or dropped: pl_push_order_rows_done,
 *      pl_push_order_forget).
 *   4. A held row not offered again for PL_PUSH_HOLD_MS is forgotten (its
 *      row went some way this node did not see), so a device is never
 *      held back for good.
 *
 *   offer ──GO──▶ in flight ──settled──▶ next: GO (the chain's next)
 *     │ └─WAIT─▶ waiting ─────────────────────┘   or DEFER (held) or 0 (chain over)
 *     └─DEFER─▶ held ──(its row comes back)──▶ offer
 */
#ifndef PL_PUSH_ORDER_H
#define PL_PUSH_ORDER_H

#include <stddef.h>
#include <stdint.h>

#include "../store/store.h"

#define PL_PUSH_HOLD_MS 120000     /* invariant 4: twice a claim's lease      */

enum {
    PL_PUSH_ORDER_GO = 1,          /* send it now                             */
    PL_PUSH_ORDER_WAIT,            /* behind its device's request in flight   */
    PL_PUSH_ORDER_DEFER            /* keep it in the outbox for a later pass  */
};

typedef struct pl_push_order pl_push_order;

pl_push_order *pl_push_order_new(void);
/* Frees o (chains and holds are forgotten) and NULLs *o. */
void pl_push_order_free(pl_push_order **o);

/* The notification of outbox row `row` to `device`, index `index` of pass
 * `owner` (borrowed, compared only). A pass offers its notifications in
 * row order. Returns PL_PUSH_ORDER_*; DEFER holds the row. now: mono ms. */
int  pl_push_order_offer(pl_push_order *o, int64_t device, int64_t row, const void *owner, size_t index,
                         int64_t now);
/* A notification that was not offered is kept for a retry (e.g. no FCM
 * token yet): hold it. */
void pl_push_order_keep(pl_push_order *o, int64_t device, int64_t row, int64_t now);
/* The device's request in flight completed: kept = 1 when its row stays
 * in the outbox for this device (a transient failure), which then holds
 * back the chain's rest. */
void pl_push_order_settled(pl_push_order *o, int64_t device, int64_t row, int kept, int64_t now);
/* After settled: the chain's next step. GO: send *index; DEFER: *index is
 * kept (held), call again; 0: the chain is over. stop = 1: its pass takes
 * no more requests (too old), so the rest is deferred. */
int  pl_push_order_next(pl_push_order *o, int64_t device, int stop, size_t *index, int64_t now);
/* A pass's outcomes are recorded: for rows[n] (sorted), every hold that is
 * not among retries[nretries] (sorted by id: the rows kept, each for its
 * devices) is over. */
void pl_push_order_rows_done(pl_push_order *o, const int64_t *rows, size_t n, const pl_push_retry *retries,
                             size_t nretries);
/* Rows gone from the outbox (dropped after their last attempt): no hold
 * on them is kept. */
void pl_push_order_forget(pl_push_order *o, const int64_t *rows, size_t n);
/* Devices with a chain or holds (tests, leak checks). */
size_t pl_push_order_devices(const pl_push_order *o);

#endif
