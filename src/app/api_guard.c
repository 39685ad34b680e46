/* api_guard.c — the Origin allow-list for WebSocket upgrades and
 * state-changing REST requests (docs/protocol.md "Origin checks"): the
 * settings --allowed-origins and --trusted-proxies read once, and the check
 * for one request with its peer's address; and the refusal of a request
 * with two Authorization headers (the same section). */
#include <string.h>
#include <uv.h>

#include "../core/log.h"
#include "../http/origin.h"
#include "api.h"

static pl_origin_policy policy;

int pl_api_guard_init(const pl_config *cfg, char *err, size_t errlen) {
    pl_origin_policy_release(&policy);
    return pl_origin_policy_init(&policy, cfg->allowed_origins, cfg->trusted_proxies, err, errlen);
}

int pl_api_origin_ok(pl_conn *c, const pl_http_req *r) {
    if (!r->origin.p) return 1;                /* no Origin: not a browser */
    struct sockaddr_storage peer;
    const struct sockaddr *sa = NULL;
    if (pl_conn_peer(c, &peer) == 0) sa = (struct sockaddr *)&peer;
    if (pl_origin_allowed(&policy, r, sa, c->tls != NULL)) return 1;
    pl_log(PL_LOG_INFO, c->id, "origin refused", "\"origin_len\":%zu", r->origin.n);
    return 0;
}

int pl_api_authorization_ok(const pl_http_req *r) {
    return pl_http_header_count(r, "authorization") <= 1;
}

int pl_api_state_changing(const pl_http_req *r) {
    return r->method == PL_HTTP_POST || r->method == PL_HTTP_PUT || r->method == PL_HTTP_PATCH ||
           r->method == PL_HTTP_DELETE;
}
