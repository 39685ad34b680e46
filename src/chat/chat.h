/* chat.h — live sessions, delivery and resume.
 *
 * Owns: the registry of authenticated WebSocket sessions (by user, and their
 * subscriptions by conversation), what each session has been sent, turning
 * committed events into frames for the right sessions, replaying missed
 * events on resume, and the WebSocket client messages (auth, send, sync,
 * history, ping). One registry per process (the event loop thread).
 * Does not own: storage (store/), cross-node routing (bus/), REST (app/api.c,
 * which calls the helpers below).
 *
 * Delivery design note — per (session, conversation) subscription `sub`:
 *
 *   sent_seq      highest seq of the conversation written to this session
 *   catching_up   1 while the gap after sent_seq is being read from the store
 *
 *   LIVE --cursor (sync) or gap detected--> CATCHING_UP
 *   CATCHING_UP --page read; short page and sent_seq >= conv.last_seq--> LIVE
 *
 * Invariants:
 *   1. A session is sent seq N of a conversation only after N-1 (sent_seq
 *      grows by exactly one per frame), so it sees every event once, in
 *      order: live events at or below sent_seq are dropped, a live event
 *      above sent_seq + 1 switches the sub to CATCHING_UP.
 *   2. Events reach this module only after they are durable (store job done),
 *      so whatever the store returns during catch-up is a superset of what
 *      live delivery has seen; conv.last_seq is the highest seq this node has
 *      seen committed, so "short page and sent_seq >= last_seq" means no
 *      committed event is missing (pitfalls: subscribe, then read, then
 *      drop live events at or below what was read).
 *   3. Catch-up reads one page per sub per loop turn and pauses while the
 *      connection's write queue is above its high-water mark (resumed by
 *      on_drain), so a replay never buffers without bound.
 */
#ifndef PL_CHAT_H
#define PL_CHAT_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "../app/config.h"
#include "../bus/bus.h"
#include "../core/buf.h"
#include "../net/conn.h"
#include "../store/store.h"

void pl_chat_init(uv_loop_t *loop, pl_store *store, pl_bus *bus, const pl_config *cfg);
/* bus handler: an event is durable; deliver it to local sessions. */
void pl_chat_on_event(void *ud, const pl_event *ev);
/* A store job appended ev durably: publish it (through the bus). */
void pl_chat_committed(const pl_event *ev);

/* WebSocket connection hooks. */
void pl_chat_ws_open(pl_conn *c, const char *token, size_t len);
void pl_chat_ws_text(pl_conn *c, const uint8_t *p, size_t n);
void pl_chat_ws_timeout(pl_conn *c);
void pl_chat_conn_closed(pl_conn *c);
void pl_chat_on_drain(pl_conn *c);

/* Verifies an access token and that its login session is live.
 * Returns 0 with user and login, or -1. */
int  pl_chat_check_token(const char *tok, size_t len, int64_t *user, int64_t *login);
/* Closes (4001) every live session of user opened with login. */
void pl_chat_revoke_login(int64_t user, int64_t login);
/* Shutdown, before the store closes: stops timers and queues every online
 * user's last seen. No store call is made after this. */
void pl_chat_shutdown(void);
/* Closes every WebSocket with code (1001 on shutdown). */
void pl_chat_close_all(pl_net *net, int code, const char *reason);

/* History page as JSON: appends {"conversation":..,"events":[..],"has_more":..}
 * members (without braces) to out. Returns a PL_STORE_* code (ENOTFOUND for
 * non-members). */
int  pl_chat_history(int64_t conv, int64_t user, int64_t after, int64_t before, int limit,
                     pl_sbuf *out);

/* Receipt cursors of conv's members and, if seq > 0, the aggregate for the
 * message at seq, as JSON members (no braces). PL_STORE_* code. */
int  pl_chat_receipts(int64_t conv, int64_t user, int64_t seq, pl_sbuf *out);
/* A PL_JOB_RECEIPT finished: announce moved cursors (no-op otherwise). */
void pl_chat_receipt_done(const pl_job *j);
/* Appends user's presence as a JSON object if asker may see it (shares a
 * conversation, or is the user); -1 otherwise. */
int  pl_chat_presence_of(int64_t asker, int64_t user, pl_sbuf *out);

/* Rate limits on sends (per user, then per conversation). 0 if admitted;
 * else -1 with the wait in ms and the limit's scope ("user", "conversation"). */
int  pl_chat_admit_send(int64_t user, int64_t conv, int64_t *retry_ms, const char **scope);
/* A send job finished: count it and publish its event (once, never for a
 * duplicate). t0_us: mono us when the send arrived (0 = unknown). */
void pl_chat_sent(const pl_job *j, int64_t t0_us);

/* Maps a PL_STORE_* error to a protocol error code and HTTP status. */
const char *pl_chat_error_code(int store_err, int *http_status);

size_t pl_chat_session_count(void);

#endif
