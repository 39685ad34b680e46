/* api.c — routing, authentication of REST requests, the operations
 * endpoints, and what every handler shares (see api.h, api_int.h).
 *
 * Nothing here logs a password, a token or a message body.
 */
#include "api_int.h"

#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "../core/alloc.h"
#include "../core/clock.h"
#include "../core/log.h"
#include "../core/metrics.h"
#include "../core/ratelimit.h"
#include "../proto/proto.h"
#include "web.h"

api_state A;

/* ---- shared helpers ------------------------------------------------------ */

api_op *api_op_new(pl_http_ctx *ctx, json_t *root) {
    api_op *op = pl_calloc(1, sizeof *op);
    op->ctx = ctx;
    op->root = root;
    op->job.data = op;
    return op;
}

void api_op_free(api_op *op) {
    pl_job_release(&op->job);
    if (op->root) json_decref(op->root);
    if (op->password) {
        sodium_memzero(op->password, op->pwlen);
        free(op->password);
    }
    free(op->members);
    free(op->ciphertext);
    free(op->masked);
    free(op->attach_json);
    pl_event_list_free(op->events, op->nevents);
    free(op);
}

void api_job_reset(api_op *op, pl_job_op o, pl_job_cb done) {
    pl_job_release(&op->job);
    memset(&op->job, 0, sizeof op->job);
    op->job.op = o;
    op->job.done = done;
    op->job.data = op;
}

/* Submits op's job, or answers 503 when the store is closing. */
void api_submit(api_op *op) {
    if (!A.store) {
        pl_http_error(op->ctx, 503, "unavailable", "shutting down");
        api_op_free(op);
        return;
    }
    pl_store_submit(A.store, &op->job);
}

void api_store_error(pl_http_ctx *ctx, int r, const char *what) {
    int status;
    const char *code = pl_chat_error_code(r, &status);
    if (r == PL_STORE_EUNAVAIL) what = "the store is unavailable; nothing was changed, try again";
    pl_http_error(ctx, status, code, what);
}

/* 429 with Retry-After (whole seconds, at least 1) and retry_after (s);
 * the message says "too many <what> (<scope>)". */
void api_too_many(pl_http_ctx *ctx, int64_t retry_ms, const char *what, const char *scope) {
    char extra[64], body[192];
    snprintf(extra, sizeof extra, "Retry-After: %lld\r\n", (long long)((retry_ms + 999) / 1000));
    int n = snprintf(body, sizeof body,
                     "{\"error\":{\"code\":\"rate_limited\",\"message\":\"too many %s (%s)\","
                     "\"retry_after\":%.3f}}", what, scope, (double)retry_ms / 1000.0);
    pl_http_respond(ctx, 429, "application/json", body, (size_t)n, extra);
}

int pl_api_admit_ip(pl_conn *c, int auth) {
    if (c->loopback && !A.cfg->rate_ip_loopback) return 0;
    int64_t now = pl_mono_ms();
    if (now - A.swept_at > 5000) {
        A.swept_at = now;
        pl_limiter_sweep(&A.ip_requests, now);
        pl_limiter_sweep(&A.ip_auth, now);
    }
    int64_t w = pl_limiter_take(&A.ip_requests, c->ip_key, 1, now);
    if (!w && auth) w = pl_limiter_take(&A.ip_auth, c->ip_key, 1, now);
    if (w) pl_count(&pl_m_rate_limited_ip, 1);
    return (int)(w > 0x7fffffff ? 0x7fffffff : w);
}

int api_bearer(const pl_http_req *r, pl_str *tok) {
    pl_str a = r->authorization;
    if (a.n <= 7 || strncasecmp(a.p, "Bearer", 6) != 0 || (a.p[6] != ' ' && a.p[6] != '\t')) return 0;
    size_t i = 7;
    while (i < a.n && (a.p[i] == ' ' || a.p[i] == '\t')) i++;
    tok->p = a.p + i;
    tok->n = a.n - i;
    return tok->n > 0;
}

json_t *api_body_object(pl_http_ctx *ctx) {
    if (ctx->req.content_length < 0) {     /* a body without a length (protocol.md 6) */
        ctx->req.keep_alive = 0;           /* whatever follows is not a request */
        pl_http_error(ctx, 411, "length_required", "Content-Length is required for a body");
        return NULL;
    }
    if (!ctx->body_len) {
        pl_http_error(ctx, 400, "bad_json", "a JSON object body is required");
        return NULL;
    }
    json_error_t jerr;
    json_t *o = json_loadb((const char *)ctx->body, ctx->body_len,
                           JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL | JSON_DECODE_ANY, &jerr);
    if (!o && json_error_code(&jerr) == json_error_numeric_overflow) {   /* valid JSON, too big for us */
        pl_http_error(ctx, 400, "bad_request", "a number is out of range");
        return NULL;
    }
    if (!o && json_error_code(&jerr) == json_error_duplicate_key) {   /* as the WebSocket says it */
        pl_http_error(ctx, 400, "bad_json", "body repeats a key");
        return NULL;
    }
    if (!o && json_error_code(&jerr) == json_error_stack_overflow) {
        pl_http_error(ctx, 400, "bad_json", "body nests arrays and objects deeper than 2048 levels");
        return NULL;
    }
    if (!o && json_error_code(&jerr) == json_error_null_byte_in_key) {
        pl_http_error(ctx, 400, "bad_json", "a key contains NUL");
        return NULL;
    }
    if (!o) {                 /* e.g. half of a surrogate pair: an object, but not JSON */
        pl_http_error(ctx, 400, "bad_json", "body is not valid JSON (UTF-8 text; an escaped character must be whole)");
        return NULL;
    }
    if (!json_is_object(o)) {
        json_decref(o);
        pl_http_error(ctx, 400, "bad_json", "body must be a JSON object");
        return NULL;
    }
    /* A field given as null is the field left out, as in WebSocket messages
     * (protocol.md): an optional one takes its default, a required one is
     * missing. Said once here rather than by every route (audit S2). */
    const char *key;
    json_t *v;
    void *tmp;
    json_object_foreach_safe(o, tmp, key, v) {
        if (json_is_null(v)) json_object_del(o, key);
    }
    return o;
}

int api_name_ok(pl_http_ctx *ctx, json_t *v, const char *field, size_t max) {
    char msg[160];
    const char *rule = NULL;
    if (!json_is_string(v)) {
        rule = "must be a string";
    } else {
        switch (pl_store__name_rule(json_string_value(v), json_string_length(v), max)) {
        case PL_NAME_OK:         return 1;
        case PL_NAME_LENGTH:     break;
        case PL_NAME_UTF8:       rule = "must be UTF-8"; break;
        case PL_NAME_CONTROL:    rule = "must not contain control characters"; break;
        case PL_NAME_SPACE:      rule = "must not contain spaces other than the plain one"; break;
        case PL_NAME_INVISIBLE:
            rule = "must not contain invisible formatting characters (zero-width characters, direction marks and "
                   "overrides; emoji selectors and joiners are fine)";
            break;
        case PL_NAME_EDGE_SPACE: rule = "must not start or end with a space"; break;
        case PL_NAME_COMBINING:  rule = "must not start with a combining mark"; break;
        }
    }
    if (rule) snprintf(msg, sizeof msg, "\"%s\" %s", field, rule);
    else snprintf(msg, sizeof msg, "\"%s\" must be 1-%zu bytes", field, max);
    pl_http_error(ctx, 400, "bad_request", msg);
    return 0;
}

/* A positive decimal id of at most 2^53 - 1; 0 if not a number, -1 if
 * all digits but above 2^53 - 1 (the client's integer is out of range:
 * 400, not 404). */
int64_t api_parse_id(const char *s, size_t n) {
    if (n == 0 || (n > 1 && s[0] == '0')) return 0;   /* "01" names nothing */
    int64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return 0;
        if (v > PL_JSON_INT_MAX) continue;             /* keep checking digits */
        v = v * 10 + (s[i] - '0');
    }
    return v <= PL_JSON_INT_MAX ? v : -1;
}

int64_t api_parse_path_id(const char *s, size_t n) {
    return n == 1 && s[0] == '0' ? API_NO_ID : api_parse_id(s, n);
}

int api_path_id_ok(pl_http_ctx *ctx, int64_t id, const char *missing) {
    if (id > 0) return 1;
    if (id < 0) pl_http_error(ctx, 400, "bad_request", "an id in the path is above 2^53 - 1");
    else pl_http_error(ctx, 404, "not_found", missing);
    return 0;
}

int api_query_int(pl_http_ctx *ctx, const char *name, int64_t *out) {
    char buf[24];
    *out = 0;
    if (!pl_http_query_get(ctx->req.query, name, buf, sizeof buf)) return 0;
    if (strcmp(buf, "0") == 0) return 0;
    int64_t v = api_parse_id(buf, strlen(buf));   /* as a path id: no sign, space or leading zero */
    if (v <= 0) return -1;
    *out = v;
    return 0;
}

int api_query_flag(pl_http_ctx *ctx, const char *name, int *out) {
    char v[16], msg[64];
    *out = 0;
    if (!pl_http_query_get(ctx->req.query, name, v, sizeof v)) return 0;
    if (strcmp(v, "1") == 0 || strcmp(v, "true") == 0) *out = 1;
    else if (strcmp(v, "0") != 0 && strcmp(v, "false") != 0) {   /* empty too (audit U) */
        snprintf(msg, sizeof msg, "\"%s\" must be 1, 0, true or false", name);
        pl_http_error(ctx, 400, "bad_request", msg);
        return -1;
    }
    return 0;
}

void api_respond_members(pl_http_ctx *ctx, int result, const char *json, size_t len, const char *what) {
    if (result) {
        api_store_error(ctx, result, what);
        return;
    }
    pl_sbuf s;
    pl_sbuf_init(&s);
    pl_sbuf_addc(&s, '{');
    pl_sbuf_add(&s, json, len);
    pl_sbuf_addc(&s, '}');
    pl_http_respond(ctx, 200, "application/json", s.p, s.len, NULL);
    pl_sbuf_release(&s);
}

/* ---- routing --------------------------------------------------------------- */

/* Splits path into up to max segments (no allocation); max + 1 if more. */
/* The path's segments: "/a/b" is a, b and "/" none. An empty segment (a
 * doubled or a trailing slash) or more than max is max + 1: no route has
 * it (protocol.md "Identifiers": paths are exact; audit P found
 * "/api/v1//me/" reaching /api/v1/me). */
static size_t split_path(pl_str path, pl_str *seg, size_t max) {
    size_t n = 0;
    const char *p = path.p, *end = path.p + path.n;
    if (p < end && *p == '/') p++;
    while (p < end) {
        const char *s = p;
        while (p < end && *p != '/') p++;
        if (p == s || n == max) return max + 1;
        seg[n].p = s;
        seg[n].n = (size_t)(p - s);
        n++;
        if (p < end && ++p == end) return max + 1;   /* a trailing slash */
    }
    return n;
}

int api_allow(pl_http_ctx *ctx, unsigned allow) {
    if (allow & PL_HTTP_M(ctx->req.method)) return 1;
    pl_http_method_not_allowed(ctx, allow, "method not allowed on this route");
    return 0;
}

/* .../messages/{seq}[/reactions] and .../pins/{seq}: the message actions
 * (s[0] is "messages" or "pins"). */
static void message_route(pl_http_ctx *ctx, int64_t conv, pl_str *s, size_t n) {
    int m = api_method(ctx);
    int pins = api_seg_is(s[0], "pins");
    int report = n == 3 && !pins && api_seg_is(s[2], "report");
    if (n == 3 && (pins || (!api_seg_is(s[2], "reactions") && !report))) {
        pl_http_error(ctx, 404, "not_found", "no such route");
        return;
    }
    int64_t seq = api_parse_id(s[1].p, s[1].n);
    if (report) {                                     /* api_reports.c */
        if (api_allow(ctx, API_POST) && api_path_id_ok(ctx, seq, "no such message")) h_report(ctx, conv, seq);
        return;
    }
    if (n == 3) {
        if (api_allow(ctx, API_POST) && api_path_id_ok(ctx, seq, "no such message"))
            h_action(ctx, conv, seq, PL_JOB_REACTION, 0);
        return;
    }
    if (!api_allow(ctx, API_DELETE | (pins ? API_PUT : API_PATCH)) || !api_path_id_ok(ctx, seq, "no such message"))
        return;
    if (pins) h_action(ctx, conv, seq, PL_JOB_PIN, m == PL_HTTP_DELETE);
    else h_action(ctx, conv, seq, m == PL_HTTP_DELETE ? PL_JOB_MESSAGE_DELETE : PL_JOB_MESSAGE_EDIT, 0);
}

/* The routes behind an access token; ctx->user is set. */
static void authed_route(pl_http_ctx *ctx) {
    pl_str seg[8];
    size_t n = split_path(ctx->req.path, seg, 8) - 2;
    pl_str *s = seg + 2;
    int m = api_method(ctx);
    if (n == 1 && api_seg_is(s[0], "events")) {  /* GET went to h_events: any other method */
        pl_http_method_not_allowed(ctx, PL_HTTP_M(PL_HTTP_GET), "GET only");
        return;
    }
    if (api_seg_is(s[0], "media")) {             /* api_media.c */
        h_media_route(ctx, s, n);
        return;
    }
    if (api_seg_is(s[0], "reports")) {       /* api_reports.c */
        h_reports_route(ctx, s, n);
        return;
    }
    if (api_seg_is(s[0], "workspaces")) {    /* api_ws.c */
        h_ws_route(ctx, s, n);
        return;
    }
    if (n == 1 && api_seg_is(s[0], "me")) {
        if (!api_allow(ctx, API_GET | API_DELETE)) return;
        if (m == PL_HTTP_GET) h_me(ctx);
        else h_me_delete(ctx);                             /* api_life.c */
        return;
    }
    if (n == 2 && api_seg_is(s[0], "me") && (api_seg_is(s[1], "export") || api_seg_is(s[1], "messages"))) {
        if (!api_allow(ctx, API_GET)) return;
        if (api_seg_is(s[1], "export")) h_me_export(ctx);
        else h_me_messages(ctx);
        return;
    }
    if (n == 2 && api_seg_is(s[0], "users")) {
        if (api_allow(ctx, API_GET)) h_user(ctx, s[1].p, s[1].n);
        return;
    }
    /* push notification devices (api_push.c) */
    if (n >= 2 && api_seg_is(s[0], "push") && api_seg_is(s[1], "devices")) {
        int64_t id = n == 3 ? api_parse_id(s[2].p, s[2].n) : 0;
        if (n == 2) h_push_devices(ctx);
        else if (api_allow(ctx, API_DELETE) && api_path_id_ok(ctx, id, "no such device")) h_push_device(ctx, id);
        return;
    }
    /* end-to-end encryption (api_keys.c) */
    if (n == 1 && api_seg_is(s[0], "keys")) {
        h_keys(ctx);
        return;
    }
    if (n == 3 && api_seg_is(s[0], "users") && api_seg_is(s[2], "block")) {   /* api_reports.c */
        int64_t peer = api_parse_path_id(s[1].p, s[1].n);
        if (api_allow(ctx, API_PUT | API_DELETE) && api_path_id_ok(ctx, peer, "no such user"))
            h_block(ctx, peer, m == PL_HTTP_DELETE);
        return;
    }
    if (n == 1 && api_seg_is(s[0], "blocks")) {
        if (api_allow(ctx, API_GET)) h_blocks(ctx);
        return;
    }
    if (n == 3 && api_seg_is(s[0], "users")) {
        int64_t peer = api_parse_id(s[1].p, s[1].n);
        int bundle = api_seg_is(s[2], "bundle");
        /* id 0 as any id no user has (the store's answer; audit Z3) */
        if (!api_allow(ctx, bundle ? API_POST : API_GET) ||
            !api_path_id_ok(ctx, peer, "no such user, or no conversation shared with it"))
            return;
        if (bundle) h_bundle(ctx, peer);
        else h_devices(ctx, peer);
        return;
    }
    if (n == 1 && api_seg_is(s[0], "presence")) {
        if (api_allow(ctx, API_GET)) h_presence(ctx);
        return;
    }
    if (n == 1 && (api_seg_is(s[0], "search") || api_seg_is(s[0], "users"))) {
        if (!api_allow(ctx, API_GET)) return;
        if (api_seg_is(s[0], "search")) h_search(ctx);
        else h_user_search(ctx);
        return;
    }
    if (n == 1) {
        if (!api_allow(ctx, API_GET | API_POST)) return;
        if (m == PL_HTTP_GET) h_conv_list(ctx);
        else h_conv_create(ctx);
        return;
    }
    int64_t conv = api_parse_path_id(s[1].p, s[1].n);
    if (!api_path_id_ok(ctx, conv, "no such conversation")) return;
    if (n == 2) {
        if (api_allow(ctx, API_GET)) h_conv_get(ctx, conv);
        return;
    }
    if (n == 3 && api_seg_is(s[2], "messages")) {
        if (!api_allow(ctx, API_GET | API_POST)) return;
        if (m == PL_HTTP_GET) h_history(ctx, conv);
        else h_send(ctx, conv);
        return;
    }
    if (n == 3 && api_seg_is(s[2], "members")) {
        if (api_allow(ctx, API_POST)) h_member_op(ctx, conv, PL_JOB_MEMBER_ADD, 0);
        return;
    }
    if (n == 4 && api_seg_is(s[2], "members")) {
        int64_t peer = api_parse_path_id(s[3].p, s[3].n);
        if (api_allow(ctx, API_DELETE | API_PATCH) && api_path_id_ok(ctx, peer, "no such member"))
            h_member_op(ctx, conv, m == PL_HTTP_PATCH ? PL_JOB_MEMBER_ROLE : PL_JOB_MEMBER_REMOVE, peer);
        return;
    }
    if (n == 3 && (api_seg_is(s[2], "read") || api_seg_is(s[2], "delivered"))) {
        if (api_allow(ctx, API_POST)) h_receipt(ctx, conv, api_seg_is(s[2], "read"));
        return;
    }
    if (n == 3 && api_seg_is(s[2], "receipts")) {
        if (api_allow(ctx, API_GET)) h_receipts(ctx, conv);
        return;
    }
    if (n == 3 && api_seg_is(s[2], "reports")) {  /* api_reports.c */
        if (api_allow(ctx, API_GET)) h_conv_reports(ctx, conv);
        return;
    }
    if (n == 3 && api_seg_is(s[2], "join")) {     /* api_ws.c */
        if (api_allow(ctx, API_POST)) h_channel_join(ctx, conv);
        return;
    }
    if (n == 3 && api_seg_is(s[2], "leave")) {
        if (api_allow(ctx, API_POST)) h_member_op(ctx, conv, PL_JOB_MEMBER_LEAVE, 0);
        return;
    }
    if (n == 3 && api_seg_is(s[2], "e2ee")) {         /* api_keys.c */
        if (api_allow(ctx, API_POST)) h_conv_e2ee(ctx, conv);
        return;
    }
    if (n == 3 && api_seg_is(s[2], "pins")) {
        if (api_allow(ctx, API_GET)) h_pins(ctx, conv);
        return;
    }
    if (n == 3 && api_seg_is(s[2], "retention")) {    /* api_life.c */
        if (api_allow(ctx, API_PUT)) h_retention(ctx, conv, 0);
        return;
    }
    if (n == 3 && api_seg_is(s[2], "hold")) {
        if (api_allow(ctx, API_PUT | API_DELETE)) h_hold(ctx, conv, 0, m == PL_HTTP_DELETE);
        return;
    }
    if (n == 3 && api_seg_is(s[2], "notify")) {
        if (api_allow(ctx, API_PUT)) h_action(ctx, conv, 0, PL_JOB_NOTIFY_SET, 0);
        return;
    }
    if (n >= 4 && (api_seg_is(s[2], "messages") || api_seg_is(s[2], "pins"))) {
        message_route(ctx, conv, s + 2, n - 2);
        return;
    }
    pl_http_error(ctx, 404, "not_found", "no such route");
}

void api_unauthorized(pl_http_ctx *ctx) {
    static const char body[] =
        "{\"error\":{\"code\":\"unauthorized\",\"message\":\"a valid access token is required\"}}";
    pl_http_respond(ctx, 401, "application/json", body, sizeof body - 1, "WWW-Authenticate: Bearer\r\n");
}

static void token_checked(void *arg, int result, int64_t user, int64_t login) {
    pl_http_ctx *ctx = arg;
    if (result == PL_STORE_ENOTFOUND) {
        api_unauthorized(ctx);
        return;
    }
    if (result) {                   /* the store could not tell: not the token's fault */
        api_store_error(ctx, result, "could not check the access token");
        return;
    }
    ctx->user = user;
    ctx->login = login;
    if (!A.store) pl_http_error(ctx, 503, "unavailable", "shutting down");
    else authed_route(ctx);
}

static void operations(pl_http_ctx *ctx, pl_str what) {
    if (api_seg_is(what, "healthz")) {
        pl_http_respond(ctx, 200, "text/plain", "ok\n", 3, NULL);
    } else if (api_seg_is(what, "readyz")) {
        const char *why = "draining";
        if (!A.draining && A.store && (!A.ready || A.ready(&why))) {
            pl_http_respond(ctx, 200, "text/plain", "ready\n", 6, NULL);
        } else {
            char body[96];
            int n = snprintf(body, sizeof body, "%s\n", why);
            pl_http_respond(ctx, 503, "text/plain", body, (size_t)n, NULL);
        }
    } else {
        pl_metrics_gauges g = {0};
        if (A.gauges) A.gauges(&g);
        g.draining = A.draining;
        pl_sbuf s;
        pl_sbuf_init(&s);
        pl_metrics_render(&s, &g);
        pl_http_respond(ctx, 200, "text/plain; version=0.0.4", s.p, s.len, NULL);
        pl_sbuf_release(&s);
    }
}

/* Before a 100 Continue (server.h pl_http_set_head_check): the Origin
 * check, which comes first for every request, answers before the body. */
static int api_head_check(pl_conn *c, const pl_http_req *r, const char **code, const char **msg) {
    if (!pl_api_state_changing(r) || pl_api_origin_ok(c, r)) return 0;
    *code = "forbidden";
    *msg = "Origin not allowed";
    return 403;
}

/* 0 after answering 400 for a query string that gives a parameter twice
 * (which of two values counts is not for us to guess) or more than 64. */
static int query_ok(pl_http_ctx *ctx) {
    char dup[40], msg[96];
    int qc = pl_http_query_check(ctx->req.query, dup, sizeof dup);
    if (!qc) return 1;
    if (qc < 0) snprintf(msg, sizeof msg, "the query has more than 64 parameters");
    else snprintf(msg, sizeof msg, "the query gives \"%s\" more than once", dup);
    pl_http_error(ctx, 400, "bad_request", msg);
    return 0;
}

void pl_api_on_request(pl_http_ctx *ctx, void *ud) {
    pl_str seg[8];
    size_t n = split_path(ctx->req.path, seg, 8);
    pl_count(&pl_m_http_requests, 1);
    if (pl_api_state_changing(&ctx->req) && !pl_api_origin_ok(ctx->conn, &ctx->req)) {
        pl_http_error(ctx, 403, "forbidden", "Origin not allowed");   /* protocol.md "Origin checks" */
        return;
    }
    if (!pl_api_authorization_ok(&ctx->req)) {                          /* the same section */
        pl_http_error(ctx, 403, "forbidden", PL_API_TWO_AUTHORIZATIONS);
        return;
    }
    if (n == 1 && (api_seg_is(seg[0], "healthz") || api_seg_is(seg[0], "readyz") || api_seg_is(seg[0], "metrics"))) {
        if (api_allow(ctx, API_GET)) operations(ctx, seg[0]);
        return;
    }
    /* register, login and refresh: not logout, which must never be
     * refused for want of a login budget (audit B3) */
    int auth_route = n == 4 && api_seg_is(seg[2], "auth") && !api_seg_is(seg[3], "logout");
    int64_t wait = pl_api_admit_ip(ctx->conn, auth_route);
    if (wait) {
        api_too_many(ctx, wait, "requests", "ip");
        return;
    }
    if (!A.store) {
        pl_http_error(ctx, 503, "unavailable", "shutting down");
        return;
    }
    if (n == 1 && api_seg_is(seg[0], "ws")) {   /* a WebSocket URL asked for without the upgrade */
        if (!api_allow(ctx, API_GET)) return;
        static const char body[] = "{\"error\":{\"code\":\"bad_request\",\"message\":\"WebSocket upgrade required\"}}";
        pl_http_respond(ctx, 426, "application/json", body, sizeof body - 1,
                        "Upgrade: websocket\r\nConnection: Upgrade\r\n");
        return;
    }
    if (n == 2 && api_seg_is(seg[0], "media")) {
        /* a signed URL: no token (api_media.c) */
        if (api_allow(ctx, API_GET) && query_ok(ctx)) h_media_signed(ctx, seg[1].p, seg[1].n);
        return;
    }
    if (n < 2 || n > 8 || !api_seg_is(seg[0], "api") || !api_seg_is(seg[1], "v1")) {
        if (pl_web_serve(ctx, A.cfg) == 0) return;   /* a file of the web client (405 if not GET/HEAD) */
        pl_http_error(ctx, 404, "not_found", "no such route");
        return;
    }
    pl_str *s = seg + 2;
    n -= 2;
    if (n == 2 && api_seg_is(s[0], "auth")) {
        int known_auth = api_seg_is(s[1], "register") || api_seg_is(s[1], "login") ||
                         api_seg_is(s[1], "refresh") || api_seg_is(s[1], "logout");
        if (!known_auth) { pl_http_error(ctx, 404, "not_found", "no such route"); return; }
        if (!api_allow(ctx, API_POST)) return;
        if (api_seg_is(s[1], "register")) h_register(ctx);
        else if (api_seg_is(s[1], "login")) h_login(ctx);
        else if (api_seg_is(s[1], "refresh")) h_refresh(ctx);
        else h_logout(ctx);
        return;
    }
    if (n == 1 && api_seg_is(s[0], "events") && ctx->req.method == PL_HTTP_GET) {
        if (query_ok(ctx)) h_events(ctx);   /* the SSE stream authenticates itself */
        return;
    }
    /* everything else needs an access token */
    int known = (n == 1 && api_seg_is(s[0], "events")) ||   /* another method: 405 once the token is good */
                (n == 1 && (api_seg_is(s[0], "me") || api_seg_is(s[0], "conversations") ||
                            api_seg_is(s[0], "presence") || api_seg_is(s[0], "search") ||
                            api_seg_is(s[0], "users"))) ||
                (n == 2 && (api_seg_is(s[0], "users") || api_seg_is(s[0], "conversations"))) ||
                (n == 2 && api_seg_is(s[0], "me") &&                            /* api_life.c */
                 (api_seg_is(s[1], "export") || api_seg_is(s[1], "messages"))) ||
                (n >= 3 && n <= 5 && api_seg_is(s[0], "conversations")) ||
                (n == 1 && api_seg_is(s[0], "keys")) ||                       /* e2ee: api_keys.c */
                (n == 1 && api_seg_is(s[0], "blocks")) ||                     /* api_reports.c */
                ((n == 2 || n == 3) && api_seg_is(s[0], "push") && api_seg_is(s[1], "devices")) ||  /* api_push.c */
                (n >= 1 && n <= 3 && api_seg_is(s[0], "media")) ||             /* api_media.c */
                (n >= 1 && n <= 4 && api_seg_is(s[0], "workspaces")) ||        /* api_ws.c */
                ((n == 1 || n == 3) && api_seg_is(s[0], "reports")) ||          /* api_reports.c */
                (n == 3 && api_seg_is(s[0], "users") &&
                 (api_seg_is(s[2], "devices") || api_seg_is(s[2], "bundle") || api_seg_is(s[2], "block")));
    if (!known) {
        pl_http_error(ctx, 404, "not_found", "no such route");
        return;
    }
    if (!query_ok(ctx)) return;
    pl_str tok;
    if (!api_bearer(&ctx->req, &tok)) {
        api_unauthorized(ctx);
        return;
    }
    int rc = pl_chat_check_token(tok.p, tok.n, token_checked, ctx);
    if (rc == PL_STORE_EUNAVAIL) pl_http_error(ctx, 503, "unavailable", "shutting down");
    else if (rc) api_unauthorized(ctx);
}

void pl_api_shutdown(void) {
    api_polls_shutdown();           /* parked long-polls are answered now */
    A.store = NULL;
    A.draining = 1;
    pl_limiter_release(&A.ip_requests);
    pl_limiter_release(&A.ip_auth);
}

void pl_api_set_gauges(void (*fn)(pl_metrics_gauges *g)) { A.gauges = fn; }
void pl_api_set_ready(int (*fn)(const char **why)) { A.ready = fn; }

void pl_api_init(uv_loop_t *loop, pl_store *store, const pl_config *cfg) {
    A.loop = loop;
    A.store = store;
    A.cfg = cfg;
    pl_http_set_head_check(api_head_check);
    pl_limiter_init(&A.ip_requests, cfg->rate_ip_requests, cfg->rate_ip_burst);
    pl_limiter_init(&A.ip_auth, cfg->rate_ip_auth / 60.0, cfg->rate_ip_auth ? cfg->rate_ip_auth : 1);
    /* a real argon2id string with the configured cost, for unknown users */
    pl_auth_hash_password("not a real password", 19, (unsigned)cfg->argon2_ops,
                          (size_t)cfg->argon2_mem * 1024, A.dummy_hash);
}
