/* session_int.h — what session.c and session_auth.c share; only they
 * include it (what the rest of chat/ calls is in chat_int.h).
 *
 * Sessions are one module in two files, one concern each:
 *   session.c       init and shutdown, queueing frames (the transport seam
 *                   and the slow-consumer contract), the registry of users,
 *                   a session's lifecycle (auth_ready: an authenticated
 *                   session goes live), dispatching client messages,
 *                   liveness
 *   session_auth.c  tokens, starting an authentication, the login read, the
 *                   wait for the bus, logout
 * Each declaration below sits under the file that defines it. The
 * per-message path (pl_chat_ws_text, dispatch) and the queueing of frames
 * stay static in session.c, where they inline.
 */
#ifndef PL_CHAT_SESSION_INT_H
#define PL_CHAT_SESSION_INT_H

#include "chat_int.h"

/* session_auth.c */
/* An authentication in progress: the login read, then (cluster mode) the
 * wait for the bus; auth_ready ends it. */
typedef struct auth_op {
    pl_job   job;
    pl_conn *conn;                /* a reference                             */
    json_t  *root;                /* a reference keeping cursors alive: the auth
                                   * message, or (fast path) cursors itself  */
    json_t  *cursors;
    int      hold;
    uint32_t stamp;               /* the token's login stamp (auth.h)        */
    pl_chat_sse_cb sse_cb;        /* SSE: told how authentication ended     */
    void    *sse_arg;
    uint64_t mlog_at;             /* the membership log when the read was submitted */
    /* waiting for the bus (auth_wait_bus) */
    session    *sess;             /* the connection's when the read came back */
    struct auth_op *wnext;        /* bus_waiters                              */
    chat_conv **pinned;           /* streams whose subscription is unconfirmed */
    uint32_t    npinned, nlive;   /* nlive: pinned[0..nlive) are confirmed   */
    int64_t     until;            /* mono ms: `ready` goes out anyway         */
    const char *revoked;          /* its login was revoked meanwhile: why     */
    struct auth_op *rnext, *rprev;  /* reading: submitted, not yet answered   */
} auth_op;
extern auth_op    *bus_waiters;       /* sessions whose `ready` waits for the bus */
extern uv_timer_t  bus_wait_timer;    /* pl_chat_init, _shutdown and _free drive it */
void bus_wait_check(uv_timer_t *t);
/* Checks the token's signature now and the login session in the store.
 * SSE (sse_cb): returns an error instead of closing. */
int  auth_start(session *s, const char *tok, size_t len, json_t *root, json_t *cursors, int hold,
                pl_chat_sse_cb sse_cb, void *sse_arg);
void auth_release(auth_op *op);
void session_on_revoke(void *ud, int64_t user, int64_t login);   /* the bus's revoke handler */

/* session.c */
/* The login is confirmed (and the bus, in cluster mode): registers the
 * session, subscribes it to its conversations, sends `ready`, then handles
 * the messages kept meanwhile; releases op. */
void auth_ready(auth_op *op);
void session_discard(pl_conn *c);     /* forgets a session that never authenticated */

#endif
