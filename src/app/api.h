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
#include "config.h"

void pl_api_init(uv_loop_t *loop, pl_store *store, const pl_config *cfg);
/* From now on requests that need the store answer 503 (shutdown). */
void pl_api_shutdown(void);
/* pl_http_hooks.on_request */
void pl_api_on_request(pl_http_ctx *ctx, void *ud);

#endif
