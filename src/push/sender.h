/* sender.h — the thread that talks to push services.
 *
 * Owns: a thread with one libcurl multi handle: requests queued by the
 * loop are sent (at most PL_PUSH_INFLIGHT at once, connections kept and
 * reused, HTTP/2 over TLS where the service speaks it, as APNs demands,
 * at most PL_PUSH_LANE_MAX of one service, taken from the services' queues
 * in turn), and each completes with the answer's status and first bytes. The loop
 * is told through wake() and takes what completed. Nothing here blocks
 * the loop, and nothing here decides what to send (worker.c).
 */
#ifndef PL_PUSH_SENDER_H
#define PL_PUSH_SENDER_H

#include <stdint.h>

#include "payload.h"

#define PL_PUSH_INFLIGHT   32      /* requests in flight at once             */
#define PL_PUSH_LANES      4       /* requests queue by lane (a service) ... */
#define PL_PUSH_LANE_MAX   16      /* ... and at most this many of one lane are
                                    * in flight: one that hangs cannot take
                                    * every slot from the others            */
#define PL_PUSH_TIMEOUT_MS 10000   /* a request's whole time                 */
#define PL_PUSH_ANSWER_MAX 4096    /* bytes of an answer kept (classify; an OAuth token) */

typedef struct pl_push_req {
    pl_push_http       http;      /* the request (owned; released by the sender once sent) */
    void              *arg;       /* the caller's                           */
    size_t             index;     /* the caller's                           */
    int                lane;      /* 0 .. PL_PUSH_LANES - 1 (the service)  */
    long               status;    /* out: HTTP status, 0 if none arrived    */
    char               answer[PL_PUSH_ANSWER_MAX]; /* out: the answer's first bytes */
    size_t             answer_len;
    struct pl_push_req *next;
} pl_push_req;

typedef struct pl_push_sender pl_push_sender;

/* Starts the thread; wake(arg) runs on it whenever requests completed. */
pl_push_sender *pl_push_sender_start(void (*wake)(void *arg), void *arg);
/* Queues a list of requests (linked by next); takes them over. */
void pl_push_sender_submit(pl_push_sender *s, pl_push_req *list);
/* The completed requests, in no particular order (NULL: none); the
 * caller frees them. */
pl_push_req *pl_push_sender_take(pl_push_sender *s);
/* Stops the thread (requests in flight are abandoned: the outbox sends
 * them again later) and frees everything. */
void pl_push_sender_stop(pl_push_sender *s);

#endif
