/* api_int.h — shared by the REST handlers (api*.c) only.
 *
 * Every handler is asynchronous: reads and writes are store jobs, password
 * hashing runs on libuv's thread pool. A handler keeps its state in an
 * api_op whose first member is the store job, and answers from the job's
 * completion. The request context stays valid until answered (server.h).
 */
#ifndef PL_API_INT_H
#define PL_API_INT_H

#include <jansson.h>
#include <string.h>

#include "../chat/auth.h"
#include "../chat/chat.h"
#include "../core/ratelimit.h"
#include "api.h"

typedef struct api_state {
    uv_loop_t       *loop;
    pl_store        *store;       /* NULL once shutting down               */
    const pl_config *cfg;
    char             dummy_hash[PL_AUTH_PWHASH_MAX];   /* equalises login timing */
    pl_limiter       ip_requests; /* HTTP requests and WebSocket opens per IP */
    pl_limiter       ip_auth;     /* register/login/refresh per IP         */
    int64_t          swept_at;
    int              draining;
    void           (*gauges)(pl_metrics_gauges *g);
    int            (*ready)(const char **why);
} api_state;

extern api_state A;

typedef struct api_op {
    pl_job       job;             /* first: store callbacks get &job        */
    pl_http_ctx *ctx;
    json_t      *root;            /* request body; job strings point into it */
    uv_work_t    work;
    int          ok;              /* work result                            */
    int          created;
    char         username[33];
    char        *password;        /* heap copy, wiped after hashing         */
    size_t       pwlen;
    char         pwhash[PL_AUTH_PWHASH_MAX];
    char         refresh[PL_AUTH_TOKEN_MAX];
    int64_t      user;
    int64_t      login;
    int64_t      login_created;   /* the login row's `created` (its tokens' stamp) */
    int64_t      conv;
    int64_t     *members;
    int          status;          /* the answer's status when it is ready   */
    char        *attach_json;     /* send: the attachments (chat/attach.h)  */
    char        *ciphertext;      /* a ciphertext send's payloads (owned; chat/e2ee.h) */
    int64_t      t0_us;           /* send: when the request was complete (pl_mono_us) */
    char        *masked;          /* send, edit: the text as the content filter left it */
    int          flag_line;       /* a flag rule matched: report after the commit */
    pl_event    *events;          /* GET /me/messages: the page, held while the
                                   * memberships are read (api_life.c)      */
    size_t       nevents;
} api_op;

api_op *api_op_new(pl_http_ctx *ctx, json_t *root);
void    api_op_free(api_op *op);
/* Clears a job (outputs and inputs) so the op can submit another. */
void    api_job_reset(api_op *op, pl_job_op o, pl_job_cb done);
void    api_submit(api_op *op);
void    api_store_error(pl_http_ctx *ctx, int r, const char *what);
void    api_too_many(pl_http_ctx *ctx, int64_t retry_ms, const char *what, const char *scope);
/* 401 unauthorized with WWW-Authenticate: Bearer: the access token is
 * missing, bad, expired or revoked (api.c). */
void    api_unauthorized(pl_http_ctx *ctx);
/* The body as a JSON object, or NULL after answering 400 (or 411 when the
 * request had no Content-Length at all). */
/* The token of an "Authorization: Bearer <token>" header (the scheme in
 * any case, then one or more spaces or tabs, RFC 9110 11.6.2): 1 with it
 * in *tok, 0 if there is none or it is empty. */
int api_bearer(const pl_http_req *r, pl_str *tok);
json_t *api_body_object(pl_http_ctx *ctx);
/* 1 if v is a string that may be a workspace name or a group title of at
 * most max bytes (pl_store__name_rule); else 0 after answering 400 with
 * the rule it breaks, naming the field ("name", "title"). */
int     api_name_ok(pl_http_ctx *ctx, json_t *v, const char *field, size_t max);
int64_t api_parse_id(const char *s, size_t n);
/* The id of a user, conversation or workspace in a path: as api_parse_id,
 * but "0", which nothing has (protocol.md), reads as API_NO_ID, an id
 * nothing has either, so that it is answered as any unknown one (audit
 * S3: it was answered as a malformed id, "no such member" where 999 got
 * "no such conversation or user"; an unblock of 0 was 404, of 999 200). */
#define API_NO_ID ((int64_t)PL_JSON_INT_MAX + 1)   /* no path gives it: above 2^53 - 1 is 400 */
int64_t api_parse_path_id(const char *s, size_t n);
/* Answers 404 (not a number: missing says what) or 400 (above 2^53 - 1)
 * for a bad path id (api_parse_id's); 1 if id is good. */
int     api_path_id_ok(pl_http_ctx *ctx, int64_t id, const char *missing);
/* 1 if the path segment s is lit. */
static inline int api_seg_is(pl_str s, const char *lit) { return s.n == strlen(lit) && memcmp(s.p, lit, s.n) == 0; }
/* The method a route dispatches on: HEAD is routed as GET, and
 * pl_http_respond sends a HEAD only the answer's head (RFC 9110 9.3.2).
 * The media routes and the SSE stream look at ctx->req.method themselves. */
static inline int api_method(const pl_http_ctx *ctx) {
    return ctx->req.method == PL_HTTP_HEAD ? PL_HTTP_GET : ctx->req.method;
}
/* The methods a route answers, as a set for api_allow. A route that
 * answers GET answers HEAD (api_method), so API_GET is both. No route
 * answers OPTIONS: Parley answers no CORS preflight (protocol.md "Origin
 * checks"). */
#define API_GET    (PL_HTTP_M(PL_HTTP_GET) | PL_HTTP_M(PL_HTTP_HEAD))
#define API_POST   PL_HTTP_M(PL_HTTP_POST)
#define API_PUT    PL_HTTP_M(PL_HTTP_PUT)
#define API_PATCH  PL_HTTP_M(PL_HTTP_PATCH)
#define API_DELETE PL_HTTP_M(PL_HTTP_DELETE)
/* A route states its methods once, here: 1 if the request's method is in
 * allow (API_* ored), else 0 after answering 405 method_not_allowed with
 * Allow listing them. */
int     api_allow(pl_http_ctx *ctx, unsigned allow);
/* Reads ?name=N (0..2^53-1, plain decimal digits without a sign or a
 * leading zero); 0 absent or ok, -1 invalid. */
int     api_query_int(pl_http_ctx *ctx, const char *name, int64_t *out);
/* ?name= as a boolean: 1 or true, 0 or false (absent: 0); 0, or -1 after
 * answering 400 naming it for anything else. */
int     api_query_flag(pl_http_ctx *ctx, const char *name, int *out);
/* Answers with {<json members>}, or the store error. */
void    api_respond_members(pl_http_ctx *ctx, int result, const char *json, size_t len, const char *what);

/* api_auth.c */
void h_register(pl_http_ctx *ctx);
void h_login(pl_http_ctx *ctx);
void h_refresh(pl_http_ctx *ctx);
void h_logout(pl_http_ctx *ctx);
void h_me(pl_http_ctx *ctx);
void h_user(pl_http_ctx *ctx, const char *name, size_t n);

/* api_conv.c */
void h_conv_list(pl_http_ctx *ctx);
void h_conv_create(pl_http_ctx *ctx);
void h_conv_get(pl_http_ctx *ctx, int64_t conv);
void h_member_op(pl_http_ctx *ctx, int64_t conv, pl_job_op what, int64_t peer);
/* The body's {"role": "admin" | "member"}: PL_ROLE_ADMIN or PL_ROLE_MEMBER,
 * or 0 after answering 400 (o is then released). */
int  api_role_arg(pl_http_ctx *ctx, json_t *o);
/* api_conv.c, for api_ws.c: the conversation object's kind; answering
 * with the conversation as op's user sees it; the done() of jobs that
 * create or change a conversation (answers with it, or the error: j->why
 * when set); a new group's or channel's "members" into op->members (*n of
 * them; -1 after answering 400/413 and freeing op). */
const char *api_conv_kind_name(int kind);
/* The conversations a PL_READ_CONV_LIST job read (WITH_LAST), as
 * GET /conversations lists them: a JSON array. */
json_t *api_conv_list_json(const pl_job *j);
void api_respond_conv(api_op *op, int64_t conv, int status);
/* As api_respond_conv (200), but a server admin who is not in conv gets
 * {"id", "retention_seconds": seconds, "retention_source"} (api_life.c). */
void api_respond_conv_retention(api_op *op, int64_t conv, int64_t seconds);
void api_conv_changed(pl_job *j);
int  api_group_members(api_op *op, json_t *members, size_t *n);
/* The user a body names, {"user": id} or {"username": name}: 1 with *peer
 * set; 0 with op's job reset to read the name (PL_READ_USER_BY_NAME,
 * by_name_done) for the caller to submit; -1 after answering 400/404 and
 * freeing op. With as_id0, a name no user can have is 1 with *peer 0 (an
 * id no user has: the store answers for it, after its own checks). */
int  api_user_arg(api_op *op, json_t *body, int64_t *peer, pl_job_cb by_name_done, int as_id0);
/* In by_name_done: 1 after answering a failed read (404 no such user, or
 * the store's error) and freeing op; 0 when j->user_out is the user. */
int  api_user_read_failed(api_op *op);
/* In by_name_done of a member add: the user found, 0 for no such user (the
 * store answers for id 0 as for any unknown id, after its role checks:
 * "admins only" comes first, audit Y3), or -1 after answering the store's
 * error and freeing op. */
int64_t api_user_read_or_id0(api_op *op);
/* api_ws.c: /api/v1/workspaces/... (s[0] == "workspaces"), and
 * POST /api/v1/conversations/{id}/join */
void h_ws_route(pl_http_ctx *ctx, pl_str *s, size_t n);
/* Answers with workspace ws as op's user sees it; the workspaces a
 * PL_READ_WORKSPACES job read, as a JSON array (for the export) */
void api_respond_ws(api_op *op, int64_t ws, int status);
/* As api_respond_ws (200), but a server admin who is not in ws gets
 * {"id", "retention_seconds": seconds} (api_life.c). */
void api_respond_ws_retention(api_op *op, int64_t ws, int64_t seconds);
json_t *api_ws_list_json(const pl_job *j);
void h_channel_join(pl_http_ctx *ctx, int64_t conv);
/* api_reports.c: POST .../messages/{seq}/report, GET /conversations/{id}/reports,
 * /api/v1/reports[/{id}/resolve] (s[0] == "reports") */
void h_report(pl_http_ctx *ctx, int64_t conv, int64_t seq);
/* 1 if name is one of --admins (case-insensitive) */
int  api_is_server_admin(const char *name);
void h_conv_reports(pl_http_ctx *ctx, int64_t conv);
void h_reports_route(pl_http_ctx *ctx, pl_str *s, size_t n);
/* api_reports.c: PUT/DELETE /api/v1/users/{id}/block, GET /api/v1/blocks */
void h_block(pl_http_ctx *ctx, int64_t peer, int remove);
void h_blocks(pl_http_ctx *ctx);
/* api_history.c: GET /conversations/{id}/messages and its long-poll;
 * api_polls_shutdown answers the parked requests (pl_api_shutdown) */
void h_history(pl_http_ctx *ctx, int64_t conv);
void api_polls_shutdown(void);
/* api_conv.c: the HTTP send, receipts, message actions, presence */
void h_send(pl_http_ctx *ctx, int64_t conv);
void h_receipt(pl_http_ctx *ctx, int64_t conv, int read);
void h_receipts(pl_http_ctx *ctx, int64_t conv);
/* The message actions (protocol.md "Message actions over REST"): op is
 * PL_JOB_MESSAGE_EDIT, _DELETE, PL_JOB_REACTION, PL_JOB_PIN (remove: unpin)
 * or PL_JOB_NOTIFY_SET (seq 0); the body, if any, is read here. */
void h_action(pl_http_ctx *ctx, int64_t conv, int64_t seq, pl_job_op op, int remove);
void h_pins(pl_http_ctx *ctx, int64_t conv);
void h_presence(pl_http_ctx *ctx);

/* api_events.c: GET /api/v1/events (Server-Sent Events) */
void h_events(pl_http_ctx *ctx);

/* api_keys.c: end-to-end encryption (protocol.md "End-to-end encryption") */
void h_keys(pl_http_ctx *ctx);                         /* GET, PUT, DELETE /keys */
void h_devices(pl_http_ctx *ctx, int64_t user);        /* GET /users/{id}/devices */
void h_bundle(pl_http_ctx *ctx, int64_t user);         /* POST /users/{id}/bundle */
void h_conv_e2ee(pl_http_ctx *ctx, int64_t conv);      /* POST /conversations/{id}/e2ee */

/* api_media.c (docs/protocol.md "Media") */
void h_media_route(pl_http_ctx *ctx, pl_str *s, size_t n);      /* s[0] == "media" */
void h_media_signed(pl_http_ctx *ctx, const char *id, size_t n); /* /media/{id}?exp&sig */

/* api_push.c (docs/protocol.md "Push notifications") */
void h_push_devices(pl_http_ctx *ctx);                 /* GET, POST /push/devices */
void h_push_device(pl_http_ctx *ctx, int64_t id);      /* DELETE /push/devices/{id} */
json_t *api_push_devices_json(const pl_job *j, int64_t login);   /* a READ_PUSH_DEVICES list */

/* api_life.c: the data lifecycle (docs/protocol.md "Data lifecycle"):
 * PUT .../retention, PUT/DELETE .../hold (ws: a workspace, else conv),
 * GET /me/export, GET /me/messages, DELETE /me */
void h_retention(pl_http_ctx *ctx, int64_t conv, int64_t ws);
void h_hold(pl_http_ctx *ctx, int64_t conv, int64_t ws, int release);
void h_me_export(pl_http_ctx *ctx);
void h_me_messages(pl_http_ctx *ctx);
void h_me_delete(pl_http_ctx *ctx);

/* api_search.c */
void h_search(pl_http_ctx *ctx);
void h_user_search(pl_http_ctx *ctx);

#endif
