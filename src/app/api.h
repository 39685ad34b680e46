/* api.h — the REST API under /api/v1 and the other HTTP routes (/healthz,
 * /readyz, /metrics, the web client's static files).
 *
 * Owns: routing and the REST handlers (docs/protocol.md sections 1-2, 7),
 * split by resource: api.c (routing, authentication, operations
 * endpoints), api_auth.c (accounts and tokens), api_conv.c (conversations,
 * members, sends, receipts, presence), api_history.c (history and its
 * long-poll), api_events.c (the Server-Sent Events stream).
 * Does not own: HTTP mechanics (http/server.c), delivery (chat/), storage.
 */
#ifndef PL_API_H
#define PL_API_H

#include <uv.h>

#include "../core/metrics.h"
#include "../http/server.h"
#include "../store/store.h"
#include "config.h"

void pl_api_init(uv_loop_t *loop, pl_store *store, const pl_config *cfg);
/* From now on requests that need the store answer 503 (shutdown). */
void pl_api_shutdown(void);
/* Per-IP rate limits for a request (auth: also the auth-endpoint limit).
 * 0 if admitted, else ms to wait. Loopback peers are exempt unless
 * --rate-ip-loopback. */
int  pl_api_admit_ip(pl_conn *c, int auth);
/* chat's conv_changed hook: a conversation may have new events; parked
 * long-polls re-check it. */
void pl_api_conv_changed(int64_t conv);
/* A login was revoked (0: every login of user): its parked long-polls are
 * answered now, 401 (audit W3: at the end of their wait before). */
void pl_api_login_revoked(int64_t user, int64_t login);
/* Sets the function that samples gauges for /metrics. */
void pl_api_set_gauges(void (*fn)(pl_metrics_gauges *g));
/* Sets the readiness check for /readyz: 1 ready, else 0 with a reason. */
void pl_api_set_ready(int (*fn)(const char **why));
/* The Origin allow-list (api_guard.c, docs/protocol.md "Origin checks"):
 * reads --allowed-origins and --trusted-proxies; 0, or -1 with err. */
int  pl_api_guard_init(const pl_config *cfg, char *err, size_t errlen);
/* 1 if the request on c has no Origin, or an allowed one; 0: refuse (403). */
int  pl_api_origin_ok(pl_conn *c, const pl_http_req *r);
/* 1 if the request has at most one Authorization header; 0: refuse it
 * (403 forbidden, PL_API_TWO_AUTHORIZATIONS), whatever its method, as two
 * Origin headers are: which one would count is not for a server to guess. */
int  pl_api_authorization_ok(const pl_http_req *r);
#define PL_API_TWO_AUTHORIZATIONS "more than one Authorization header"
/* 1 for POST, PUT, PATCH and DELETE: the requests the Origin check covers. */
int  pl_api_state_changing(const pl_http_req *r);
/* pl_http_hooks.on_request */
void pl_api_on_request(pl_http_ctx *ctx, void *ud);

/* Media (api_media.c): opens the blob store (--media-dir), libmagic and
 * the signed-URL key (call after the token key is final), starts the
 * collector and claims the upload routes' bodies for streaming. 0, or -1
 * with err. */
int  pl_api_media_init(uv_loop_t *loop, const pl_config *cfg, char *err, size_t errlen);
void pl_api_media_shutdown(void);
/* The purge of messages past their retention and of deleted accounts'
 * (api_life.c): a timer every cfg->purge_interval seconds; shutdown stops it. */
void pl_api_life_init(uv_loop_t *loop, const pl_config *cfg);
/* Warns (log) about --admins names nobody has registered (api_reports.c). */
void pl_api_admins_check(void);
void pl_api_life_shutdown(void);
int  pl_api_media_stream_pred(const pl_http_req *r);

#endif
