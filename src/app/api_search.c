/* api_search.c — REST search (docs/protocol.md "Search"): GET
 * /api/v1/search (messages the caller may read) and GET /api/v1/users?q=
 * (people it may see, for pickers).
 *
 * Owns: reading the query string into a pl_search_args (checked by
 * proto_search.c like the WebSocket `search`) and answering. The search itself is
 * chat/search.c's and the store's.
 */
#include <string.h>

#include "../proto/proto.h"
#include "api_int.h"

static void search_answered(void *arg, int result, const char *json, size_t len) {
    api_respond_members(arg, result, json, len, "bad search");
}

static void bad(pl_http_ctx *ctx, const char *msg) { pl_http_error(ctx, 400, "bad_request", msg); }

void h_search(pl_http_ctx *ctx) {
    char q[PL_STORE_QUERY_MAX + 2], cur[24];
    pl_search_args a = {0};
    int64_t limit = 0;
    if (pl_http_query_getn(ctx->req.query, "q", q, sizeof q, &a.q_len))
        a.q = q;                    /* q_len PL_STORE_QUERY_MAX + 1 when longer: too long; a NUL
                                     * ("%00") counts, for pl_proto_search_check to refuse */
    if (api_query_int(ctx, "conversation", &a.conv) || api_query_int(ctx, "sender", &a.sender)) {
        bad(ctx, "\"conversation\" and \"sender\" must be ids");
        return;
    }
    if (api_query_int(ctx, "after", &a.after) || api_query_int(ctx, "before", &a.before)) {
        bad(ctx, "\"after\" and \"before\" must be times in ms (0..2^53-1)");
        return;
    }
    a.has_after = pl_http_query_get(ctx->req.query, "after", NULL, 0);   /* 0 is a bound too */
    a.has_before = pl_http_query_get(ctx->req.query, "before", NULL, 0);
    if (api_query_int(ctx, "limit", &limit) || limit > PL_STORE_SEARCH_MAX ||
        (pl_http_query_get(ctx->req.query, "limit", NULL, 0) && limit == 0)) {
        bad(ctx, "\"limit\" must be 1..50");
        return;
    }
    a.limit = (int)limit;
    int flag;
    if (api_query_flag(ctx, "mentions", &flag)) return;
    a.mentions = flag;
    if (api_query_flag(ctx, "has_media", &flag)) return;   /* media */
    a.has_media = flag;
    if (pl_http_query_get(ctx->req.query, "cursor", cur, sizeof cur) &&   /* empty: as the WebSocket */
        pl_proto_search_cursor(cur, strlen(cur), &a.cursor)) {
        bad(ctx, "\"cursor\" must be a next_cursor of an earlier search");
        return;
    }
    pl_proto_err e = {0};
    if (pl_proto_search_check(&a, &e)) {
        bad(ctx, e.message);
        return;
    }
    int r = pl_chat_search(&a, ctx->user, search_answered, ctx);
    if (r) api_store_error(ctx, r, "");
}

void h_user_search(pl_http_ctx *ctx) {
    char q[PL_STORE_QUERY_MAX + 2];
    size_t qlen = 0;
    int64_t limit = 0;
    if (!pl_http_query_getn(ctx->req.query, "q", q, sizeof q, &qlen) || !qlen) {
        bad(ctx, "\"q\" must not be empty");
        return;
    }
    pl_search_args a = {.q = q, .q_len = qlen};
    pl_proto_err e = {0};
    if (pl_proto_search_check(&a, &e)) {  /* UTF-8 without NUL, not only spaces, <= 256 bytes */
        bad(ctx, e.message);
        return;
    }
    if (a.q_len > 32) {                 /* longer than any username: nobody */
        static const char none[] = "\"users\":[]";
        api_respond_members(ctx, PL_STORE_OK, none, sizeof none - 1, "");
        return;
    }
    if (api_query_int(ctx, "limit", &limit) || limit > PL_STORE_SEARCH_MAX ||
        (pl_http_query_get(ctx->req.query, "limit", NULL, 0) && limit == 0)) {
        bad(ctx, "\"limit\" must be 1..50");
        return;
    }
    int r = pl_chat_user_search(q, limit ? (int)limit : PL_PROTO_SEARCH_LIMIT, ctx->user, search_answered, ctx);
    if (r) api_store_error(ctx, r, "");
}
