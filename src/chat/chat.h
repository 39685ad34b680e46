/* chat.h — live sessions, delivery, resume, receipts, presence, typing.
 *
 * Owns: the registry of authenticated sessions (WebSocket or Server-Sent
 * Events; by user, with one
 * subscription per conversation), the order in which this node hands a
 * conversation's events to its sessions, replay on resume, receipts,
 * presence and typing, and the WebSocket client messages (auth, send, sync,
 * history, receipts, presence, typing, ping, the message actions). One
 * registry per process, on the event loop thread. Files: session.c
 * (lifecycle, dispatch, liveness), session_auth.c (tokens, auth, logout),
 * deliver.c (conversation streams, subscriptions, replay, sync,
 * history), sse.c (Server-Sent Events sessions: the transport
 * besides WebSocket), send.c, wsrate.c (the per-workspace rate limit's
 * lookups), actions.c (edits, deletes, reactions, pins, notification
 * levels), receipts.c, presence.c, typing.c; chat_int.h holds what they
 * share.
 * Does not own: storage (store/), transport between nodes (bus/), REST
 * (app/api*.c, which calls the asynchronous helpers below).
 *
 * Every helper that takes a callback returns 0 when it started (the
 * callback runs later, on the loop, exactly once) or a negative
 * PL_STORE_E* code when it could not start (the callback never runs).
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
#include "../proto/cursor_id.h"
#include "../store/store.h"
#include "filter.h"

/* Close codes of the protocol (docs/protocol.md section 5). */
#define PL_CLOSE_IDLE           4002
#define PL_CLOSE_SLOW_CONSUMER  4008
#define PL_CLOSE_TRY_AGAIN      1013   /* the store is unavailable: reconnect later */

typedef struct pl_chat_hooks {
    /* a conversation got events (or may have: a head moved); parked
     * long-polls re-check it */
    void (*conv_changed)(int64_t conv);
    /* a login was revoked (login 0: every login of the user, the account
     * deleted); parked long-polls of it are answered now (401) */
    void (*login_revoked)(int64_t user, int64_t login);
} pl_chat_hooks;

void pl_chat_init(uv_loop_t *loop, pl_store *store, const pl_config *cfg, const pl_chat_hooks *hooks);
/* The bus handlers chat/ implements; main creates the bus with them, then
 * hands the bus back. */
void pl_chat_bus_handlers(pl_bus_handlers *h);
/* NULL detaches it (shutdown, before the bus closes: connections closed
 * afterwards no longer unsubscribe). */
void pl_chat_set_bus(pl_bus *bus);
/* The store's commit hook (pl_store_opts.committed): a write job appended
 * a new event; publish it, once, from here (pitfalls: one place). */
void pl_chat_committed(void *arg, pl_job *j);

/* WebSocket connection hooks. */
void pl_chat_ws_open(pl_conn *c, const char *token, size_t len);
void pl_chat_ws_text(pl_conn *c, const uint8_t *p, size_t n);
void pl_chat_ws_timeout(pl_conn *c);
void pl_chat_ws_slow(pl_conn *c);
void pl_chat_conn_closed(pl_conn *c);
void pl_chat_on_drain(pl_conn *c);

/* Server-Sent Events sessions (docs/protocol.md "Server-Sent Events";
 * sse.c). The same session as a WebSocket's, receiving only: frames go out
 * as SSE events, conversation events with an `id:` that holds every
 * cursor of the session (proto/cursor_id.h).
 *
 * pl_chat_sse_open starts one on c, an HTTP connection still answering the
 * request: it checks tok (borrowed for the call), then reads the login
 * session. cb(arg, 0): authenticated; cb must write the response head at
 * once (http/server.c pl_http_stream_begin), after which the session
 * queues `ready`, and, if resuming (a Last-Event-ID came), replays from
 * resume[0..nresume) (taken over; sorted by conversation) as sync does,
 * then goes live. cb(arg, PL_STORE_ENOTFOUND): bad,
 * expired or revoked token (answer 401); other codes: answer 503. Returns
 * 0 (cb runs later, exactly once) or a PL_STORE_E* code (cb never runs;
 * resume was freed). */
typedef void (*pl_chat_sse_cb)(void *arg, int result);
int  pl_chat_sse_open(pl_conn *c, const char *tok, size_t len, int resuming, pl_cursor *resume,
                      size_t nresume, pl_chat_sse_cb cb, void *arg);
/* The connection's deadline passed: heartbeat (a `: ping` comment) or the
 * slow-consumer cut. */
void pl_chat_sse_timeout(pl_conn *c);

/* Token check: signature and expiry now, then the login session in the
 * store (not revoked, same user). cb(arg, result, user, login): result
 * PL_STORE_OK (valid), PL_STORE_ENOTFOUND (revoked or unknown), or the
 * store's error when it could not tell (PL_STORE_EUNAVAIL...): never a 401
 * for a token the store could not check. The call itself returns
 * PL_STORE_ENOTFOUND for a bad signature or an expired token,
 * PL_STORE_EUNAVAIL while stopping (cb is then not called), else 0. */
typedef void (*pl_chat_token_cb)(void *arg, int result, int64_t user, int64_t login);
int  pl_chat_check_token(const char *tok, size_t len, pl_chat_token_cb cb, void *arg);
/* Logout: closes (4001) the live sessions of user opened with login, on
 * every node; login 0: every session of user (its account was deleted). */
void pl_chat_revoke_login(int64_t user, int64_t login);

/* History page as JSON object members (no braces):
 * "conversation":..,"events":[..],"has_more":.. — at most max_bytes of
 * events (at least one event when any exists), has_more true when the page
 * ended early. result is a PL_STORE_* code (ENOTFOUND for non-members). */
typedef void (*pl_chat_json_cb)(void *arg, int result, const char *json, size_t len);
int  pl_chat_history(int64_t conv, int64_t user, int64_t after, int64_t before, int limit,
                     pl_chat_json_cb cb, void *arg);
/* Receipt cursors of conv's members and, if seq > 0, the aggregate for the
 * message at seq, as JSON members (no braces). */
int  pl_chat_receipts(int64_t conv, int64_t user, int64_t seq, pl_chat_json_cb cb, void *arg);
/* {"users":[{"user":..,"status":..,"last_seen":..},..]} for those of ids
 * the asker may see (itself, or sharing a conversation). */
int  pl_chat_presence_query(int64_t asker, const int64_t *ids, size_t n, pl_chat_json_cb cb, void *arg);
/* Whether each of ids is reachable live (push notifications go to users
 * who are not): a session authenticated on this node, or a status other
 * than offline from another node's view (cluster mode asks the bus; this
 * node's own view is not asked, its sessions are; the views of a node the
 * bus knows is gone are not trusted, pl_bus_node_gone). cb gets
 * online[i] for ids[i], maybe before this returns; after shutdown, all 0. */
typedef void (*pl_chat_online_cb)(void *arg, const uint8_t *online, size_t n);
void pl_chat_users_online(const int64_t *ids, size_t n, pl_chat_online_cb cb, void *arg);

/* A block changed the flag of direct conversation conv (PL_JOB_BLOCK's
 * conv_out): every node stops its typing indicators there, and takes none
 * while it is blocked. */
void pl_chat_conv_blocked(int64_t conv, int blocked);

/* Messages were erased without an event (a retention purge, a deleted
 * account's erasure: api_life.c): the recent frames every node keeps for
 * replays (deliver_ring.c; this node's at once, the others' through the
 * bus) are dropped, so no replay serves erased text; catching up reads the
 * store until the rings fill again. Nothing after pl_chat_shutdown. */
void pl_chat_erased(void);

/* The content filter (filter.h; docs/protocol.md "Content filter";
 * content.c). pl_chat_filter_load reads the rules file at path ("" or
 * NULL: no filter) and makes it the active one: 0, or -1 with err when the
 * file is bad, the active rules unchanged (at start: exit; on SIGHUP: keep
 * them). pl_chat_filter checks the text of j (a send or an edit) before
 * it is submitted: -1 when a block rule matched (j unchanged; answer
 * PL_CHAT_FILTERED, 422, or for a send look it up first: PL_READ_SEND_CHECK);
 * else 0, with j->body the text to store (*masked: the masked copy, the
 * caller's to free, when a mask rule matched) and *flag_line the rule's
 * line when pl_chat_filter_report must follow the commit (else 0). */
#define PL_CHAT_FILTERED     "filtered"
#define PL_CHAT_FILTERED_MSG "the message was refused by the server's content filter"
int  pl_chat_filter_load(const char *path, char *err, size_t errlen);
void pl_chat_filter_free(void);
int  pl_chat_filter(pl_job *j, char **masked, int *flag_line);
void pl_chat_filter_report(int64_t sender, int64_t conv, int64_t seq, int line);

/* Rate limits on sends (per user, then per conversation, then, in a
 * channel, per workspace; shared by all nodes in cluster mode). cb(arg, 0,
 * NULL) admitted, else the wait in ms and the limit's scope ("user",
 * "conversation", "workspace"). */
typedef void (*pl_chat_admit_cb)(void *arg, int64_t retry_ms, const char *scope);
int  pl_chat_admit_send(int64_t user, int64_t conv, pl_chat_admit_cb cb, void *arg);
/* A send job finished: count it. t0_us: mono us when it arrived (0 = unknown). */
void pl_chat_sent(const pl_job *j, int64_t t0_us);
/* A PL_JOB_RECEIPT finished: announce moved cursors (no-op otherwise). */
void pl_chat_receipt_done(const pl_job *j);

/* Long-polls: while a conversation is watched this node follows its events
 * (in cluster mode, subscribes to them); hooks.conv_changed reports the
 * ones that reach it from then on. on: 1 watch, 0 stop. Returns, for a new
 * watch, the last seq the stream has published (`after` for a stream the
 * watch creates): events up to it may have gone by before the watch and
 * are not reported, so a caller that read the store before watching reads
 * again when it is above what that read covered (api_history.c). */
int64_t pl_chat_watch(int64_t conv, int64_t after, int on);

/* Maps a PL_STORE_* error to a protocol error code and HTTP status. */
const char *pl_chat_error_code(int store_err, int *http_status);
/* The error of a failed send or message action: its code and HTTP status,
 * and *msg, the store's reason (job->why) or a plain one. */
const char *pl_chat_job_error(const pl_job *j, int *http_status, const char **msg);
/* The pinned messages of conv as JSON members (no braces):
 * "conversation":..,"events":[..] (most recently pinned first). */
/* The pinned messages from offset on, as many as the reply budget holds
 * (at least one), with has_more. */
int  pl_chat_pins(int64_t conv, int64_t user, int64_t offset, pl_chat_json_cb cb, void *arg);
/* Full-text search over what user may read (docs/protocol.md "Search"):
 * a (a checked pl_search_args, proto.h; copied) as JSON members (no
 * braces): "results":[..],"next_cursor":..; EINVAL for a bad query. */
struct pl_search_args;
int  pl_chat_search(const struct pl_search_args *a, int64_t user, pl_chat_json_cb cb, void *arg);
/* The users user may see (itself, or sharing a conversation) whose name
 * contains q (copied), as "users":[{"id":..,"username":..},..]. */
int  pl_chat_user_search(const char *q, int limit, int64_t user, pl_chat_json_cb cb, void *arg);

/* Shutdown, step 1 (before the store closes): stops timers and replays,
 * queues every online user's last seen. Reads that complete afterwards are
 * dropped; nothing new is read. */
void pl_chat_shutdown(void);
/* Step 2: closes every WebSocket with code (1001 on shutdown), after a
 * `reconnect` hint. */
void pl_chat_close_all(pl_net *net, int code);
/* Step 3, after the store closed and the connections are gone: frees the
 * registry. */
void pl_chat_free(void);

size_t pl_chat_session_count(void);

/* What chat/ does to connections, replaceable so that its state machines
 * can be tested with fake connections (tests/unit/test_deliver.c). The
 * defaults are net/ and ws/'s functions. */
typedef struct pl_chat_conn_ops {
    void (*send)(pl_conn *c, pl_rbuf *frame);          /* pl_conn_send       */
    void (*send_copy)(pl_conn *c, const void *p, size_t n);
    void (*close)(pl_conn *c, int code, const char *reason);   /* pl_wsconn_close */
    void (*pause)(pl_conn *c);
    void (*resume)(pl_conn *c);
    void (*ref)(pl_conn *c);
    void (*unref)(pl_conn *c);
    void (*shut)(pl_conn *c);   /* SSE close: pl_conn_close(c, 1) after the queue */
    /* pl_conn_send_part; NULL: event frames are sent whole (with send) */
    void (*send_part)(pl_conn *c, pl_rbuf *b, size_t off, size_t len);
    /* pl_conn_cork / pl_conn_uncork; NULL: never corked */
    void (*cork)(pl_conn *c);
    void (*uncork)(pl_conn *c);
    /* pl_conn_write_now (before judging a queue full),
     * pl_conn_drop_unsent_units (a slow consumer's events, before its
     * close; starts NULL: every entry is a frame); NULL: not done */
    void (*write_now)(pl_conn *c);
    void (*drop_unsent)(pl_conn *c, int (*starts)(const uint8_t *p, size_t n));
} pl_chat_conn_ops;
void pl_chat_set_conn_ops(const pl_chat_conn_ops *ops);

#endif
