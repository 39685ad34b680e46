/* flow.h — flow control for conversations whose fan-out falls behind
 * (chat/ only; flow.c has the design note). When too many of a
 * conversation's subscriptions on this node lag behind its head, the acks
 * of WebSocket sends to it are held until they catch up: a send is still
 * durable when its ack is sent, the ack only waits. A sender that goes on
 * sending without waiting for its acks is refused once it is owed
 * FLOW_CONN_HELD_MAX acks (held, or of sends still being stored), while it
 * is pushed back on (rate_limited, nothing stored).
 */
#ifndef PL_CHAT_FLOW_H
#define PL_CHAT_FLOW_H

#include <stddef.h>
#include <stdint.h>

#include "../net/conn.h"

#define FLOW_CONN_HELD_MAX 256    /* acks owed per connection before refusals */
#define FLOW_HOLD_MAX_MS   5000   /* an ack is never held longer than this    */
#define FLOW_RETRY_MS      250    /* the retry_after of a refusal             */
#define FLOW_TICK_MS       20     /* re-evaluation while acks are held        */

typedef struct chat_conv chat_conv;

void flow_init(void);
/* Sends every held ack now (the server is draining) and from now on holds
 * none. */
void flow_shutdown(void);
void flow_free(void);

/* The ack (a JSON text, copied) of a committed send to conv, for c: sent
 * now, or held while conv pushes back or an earlier ack of c is held (acks
 * keep their order per connection). c is borrowed (a reference is taken
 * while held). */
void flow_ack(pl_conn *c, int64_t conv, const char *json, size_t len);

/* Before a send to conv from c is stored: 0 to go on (the send is then
 * counted as owed an ack until flow_settled), or the retry_after (ms) of a
 * refusal, when c is owed FLOW_CONN_HELD_MAX acks (held, or of sends still
 * being stored) while conv pushes back or one of c's acks is held. */
int64_t flow_admit(pl_conn *c, int64_t conv);
/* A send flow_admit let through ended (acked, held or refused by the
 * store): c is owed one fewer ack. */
void flow_settled(pl_conn *c);

/* 1 if cv pushes back on its senders now (evaluated at most once per loop
 * turn; the state machine in flow.c). */
int flow_engaged(chat_conv *cv);

/* The end of a loop turn (the loop's check handle calls it): streams are
 * evaluated again from now on, and held acks that may go are sent. */
void flow_turn(void);

/* Held acks in total (tests, metrics). */
size_t flow_held(void);

#endif
