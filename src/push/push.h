/* push.h — push notifications for users who are not connected (M10).
 *
 * Owns: the push worker on the event loop. It drains the push outbox
 * (store.h invariant 10): claims rows, reads who is to be notified on which
 * device, leaves out users connected to any node, hands the requests to
 * the sender thread (sender.h) and records the outcomes (rows done or to
 * retry, dead tokens forgotten). One device's notifications go out one at
 * a time in message order (order.h). Every node runs one; in cluster mode
 * only the node holding the store's push drainer lock gets rows, so one
 * node sends at a time. docs/design.md "Push notifications".
 */
#ifndef PL_PUSH_H
#define PL_PUSH_H

#include <uv.h>

#include "../store/store.h"
#include "payload.h"

#define PL_PUSH_CLAIM_MIN  16      /* outbox rows per pass: adapts between   */
#define PL_PUSH_CLAIM_MAX  1024    /* these, so that a pass holds about      */
#define PL_PUSH_PASS_PUSHES 4096   /* this many notifications (memory bound) */
#define PL_PUSH_LEASE_MS   60000   /* a claim holds its rows this long       */
#define PL_PUSH_PASSES_MAX 8       /* passes with requests out at once: a slow
                                    * service holds up only its own pass     */
#define PL_PUSH_RETRY_MS   10000   /* a row to retry is claimed again after  */
#define PL_PUSH_DEFER_MS   2000    /* a row deferred (an earlier notification of
                                    * its device comes first) is claimed again
                                    * after this, its attempt given back      */
#define PL_PUSH_CHAIN_MS   10000   /* a pass starts no request this long after
                                    * it handed off: its device's rest waits
                                    * for a later pass (bounds a pass by about
                                    * two request timeouts, under its lease) */
#define PL_PUSH_DEFERRED   5       /* a pass's outcome (beside pl_push_outcome):
                                    * not sent, kept for a later pass         */
#define PL_PUSH_TICK_MS    1000    /* the worker looks at the outbox this often
                                    * (and when a message commits here)     */

/* Takes cfg (copied) when it has any endpoint, and reads its key files
 * (the APNs key, the FCM service account): 0, or -1 with the reason in err
 * and, when a file is at fault, *setting naming its setting
 * ("push-apns-key", "push-fcm-credentials"; else NULL). Called before
 * anything is opened, so a bad file stops the start first. */
int  pl_push_configure(const pl_push_config *cfg, const char **setting, char *err, size_t errlen);
/* Starts the worker configured above (nothing when push is off): 0, or -1
 * with the reason in err (no thread). */
int  pl_push_start(uv_loop_t *loop, pl_store *store, char *err, size_t errlen);
/* 1 while started: messages fill the outbox, devices may register. */
int  pl_push_enabled(void);
/* The configuration in use (platforms enabled, for the REST routes). */
const pl_push_config *pl_push_config_get(void);
/* A MESSAGE committed on this node: look at the outbox soon. */
void pl_push_kick(void);
/* What a pass's outcomes mean for the outbox (PUSH_DONE's inputs): rows
 * whose every notification was sent, refused for good or not needed (the
 * user was connected) are done; a row with transient failures or deferred
 * notifications (PL_PUSH_DEFERRED) is kept for those devices only, and
 * when every one of them was deferred (none tried) its retry has refund
 * set; devices the service called gone are dead (each once). pushes are
 * in row order (as READ_PUSH_TARGETS gives them); outcome[i] is
 * pushes[i]'s pl_push_outcome or PL_PUSH_DEFERRED, 0 when not sent. The
 * retries' expires are left 0 (the caller's). */
typedef struct pl_push_settled {
    int64_t       *done;
    size_t         ndone;
    int64_t       *dead;
    size_t         ndead;
    pl_push_retry *retries;          /* devices point into retry_devs       */
    size_t         nretries;
    int64_t       *retry_devs;
} pl_push_settled;
void pl_push_settle(const int64_t *rows, size_t nrows, const pl_push *pushes, const uint8_t *outcome,
                    size_t npushes, pl_push_settled *out);
void pl_push_settled_release(pl_push_settled *s);

/* Before the store closes: stops the timer and the sender thread. Rows
 * claimed and not finished stay leased; they are sent after their lease
 * (by this node when it is back, or another). */
void pl_push_stop(void);

#endif
