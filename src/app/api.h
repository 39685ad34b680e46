/* api.h — the REST API under /api/v1 and the other HTTP routes
 * (/healthz, the web client's static files).
 *
 * Owns: routing and the REST handlers (docs/protocol.md sections 1-2).
 * Does not own: HTTP mechanics (http/server.c), delivery (chat/), storage.
 */
#ifndef PL_API_H
#define PL_API_H

#include <uv.h>

#include "../http/server.h"
#include "../store/store.h"
#include "../core/metrics.h"
#include "config.h"

void pl_api_init(uv_loop_t *loop, pl_store *store, const pl_config *cfg);
/* From now on requests that need the store answer 503 (shutdown). */
void pl_api_shutdown(void);
/* Per-IP rate limits for a request (auth: also the auth-endpoint limit).
 * 0 if admitted, else ms to wait. Loopback peers are exempt unless
 * --rate-ip-loopback. */
int  pl_api_admit_ip(pl_conn *c, int auth);
/* A conversation got a committed event: answer its parked long-polls. */
void pl_api_conv_event(int64_t conv);
/* Sets the function that samples gauges for /metrics. */
void pl_api_set_gauges(void (*fn)(pl_metrics_gauges *g));
/* pl_http_hooks.on_request */
void pl_api_on_request(pl_http_ctx *ctx, void *ud);

#endif
