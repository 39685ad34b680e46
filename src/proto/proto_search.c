/* proto_search.c — the client protocol's `search` (see proto.h,
 * docs/protocol.md "Search"): decoding the WebSocket message, the checks
 * REST's GET /api/v1/search shares (pl_proto_search_check), the paging
 * cursor and the results' encoding.
 *
 * Does not own: running the search (chat/search.c, the store), the query
 * string (app/api_search.c).
 */
#include "proto_int.h"

#include "../core/utf8.h"

#include <string.h>

static int utf8_ok(const unsigned char *p, size_t n) {
    for (size_t i = 0; i < n;) {
        unsigned char c = p[i];
        size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        if (!len || i + len > n) return 0;
        uint32_t cp = len == 1 ? c : len == 2 ? c & 0x1f : len == 3 ? c & 0x0f : c & 0x07;
        for (size_t k = 1; k < len; k++) {
            if ((p[i + k] & 0xc0) != 0x80) return 0;
            cp = cp << 6 | (p[i + k] & 0x3f);
        }
        if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
            (cp >= 0xd800 && cp <= 0xdfff))
            return 0;
        i += len;
    }
    return 1;
}

static int shows_something(uint32_t cp) { return !pl_utf8_space_or_control(cp); }

int pl_proto_search_check(pl_search_args *a, pl_proto_err *e) {
    if (!a->q) return fail(e, "bad_request", "%s", "\"q\" (a string: the words to find) is required");
    if (a->q_len > PL_STORE_QUERY_MAX)
        return fail(e, "bad_request", "%s", "\"q\" is too long (at most 256 bytes)");
    if (memchr(a->q, 0, a->q_len) || !utf8_ok((const unsigned char *)a->q, a->q_len))
        return fail(e, "bad_request", "%s", "\"q\" must be UTF-8 text without NUL");
    /* white space of every script counts as none (U+3000, U+00A0) */
    if (!pl_utf8_has((const uint8_t *)a->q, a->q_len, shows_something))
        return fail(e, "bad_request", "%s", "\"q\" must not be empty");
    if (a->after < 0 || a->after > PL_JSON_INT_MAX)
        return fail(e, "bad_request", "%s", "\"after\" must be a time in ms (0..2^53-1)");
    if (a->before < 0 || a->before > PL_JSON_INT_MAX)
        return fail(e, "bad_request", "%s", "\"before\" must be a time in ms (0..2^53-1)");
    if (a->has_before && a->has_after && a->after >= a->before)
        return fail(e, "bad_request", "%s", "\"before\" must be above \"after\"");
    if (a->conv < 0 || a->conv > PL_JSON_INT_MAX || a->sender < 0 || a->sender > PL_JSON_INT_MAX)
        return fail(e, "bad_request", "%s", "\"conversation\" and \"sender\" must be ids");
    if (a->limit == 0) a->limit = PL_PROTO_SEARCH_LIMIT;
    if (a->limit < 1 || a->limit > PL_STORE_SEARCH_MAX)
        return fail(e, "bad_request", "%s", "\"limit\" must be 1..50");
    return 0;
}

int pl_proto_search_cursor(const char *s, size_t n, int64_t *out) {
    if (n < 1 || n > 19 || s[0] == '0') return -1;   /* no leading zero, as every integer (audit I3) */
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return -1;
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    if (v == 0 || v > (uint64_t)INT64_MAX) return -1;
    *out = (int64_t)v;
    return 0;
}

int pl_proto__decode_search(pl_msg *m, pl_proto_err *e) {
    pl_search_args *a = &m->search;
    m->type = PL_MSG_SEARCH;
    json_t *q = json_object_get(m->root, "q");
    if (!q || json_is_null(q))                        /* as pl_proto_search_check says it for REST */
        return fail(e, "bad_request", "%s", "\"q\" (a string: the words to find) is required");
    if (get_str(m->root, "q", &a->q, &a->q_len, e)) return -1;
    int64_t limit;
    if (get_opt_seq(m->root, "conversation", &a->conv, e) || get_opt_seq(m->root, "sender", &a->sender, e) ||
        get_opt_seq(m->root, "after", &a->after, e) || get_opt_seq(m->root, "before", &a->before, e) ||
        get_opt_seq(m->root, "limit", &limit, e))
        return -1;
    json_t *v = json_object_get(m->root, "after");   /* given (0 too) or absent/null */
    a->has_after = v && !json_is_null(v);
    v = json_object_get(m->root, "before");
    a->has_before = v && !json_is_null(v);
    if (limit > PL_STORE_SEARCH_MAX) return fail(e, "bad_request", "%s", "\"limit\" must be 1..50");
    a->limit = (int)limit;
    v = json_object_get(m->root, "mentions");
    if (v && !json_is_null(v) && !json_is_boolean(v))
        return fail(e, "bad_request", "%s", "\"mentions\" must be a boolean");
    a->mentions = json_is_true(v);
    v = json_object_get(m->root, "has_media");
    if (v && !json_is_null(v) && !json_is_boolean(v))
        return fail(e, "bad_request", "%s", "\"has_media\" must be a boolean");
    a->has_media = json_is_true(v);
    v = json_object_get(m->root, "cursor");
    if (v && !json_is_null(v) &&
        (!json_is_string(v) || pl_proto_search_cursor(json_string_value(v), json_string_length(v), &a->cursor)))
        return fail(e, "bad_request", "%s", "\"cursor\" must be a next_cursor of an earlier search");
    v = json_object_get(m->root, "limit");           /* null: left out, as every optional field */
    if (v && !json_is_null(v) && limit == 0)
        return fail(e, "bad_request", "%s", "\"limit\" must be 1..50");
    return pl_proto_search_check(a, e);
}

void pl_proto_search_results(pl_sbuf *s, const pl_event *evs, char *const *snippets, size_t n,
                             int64_t next_cursor) {
    pl_sbuf_adds(s, "\"results\":[");
    for (size_t i = 0; i < n; i++) {
        pl_sbuf_adds(s, i ? ",{" : "{");
        pl_proto_event_fields(s, &evs[i]);
        pl_sbuf_adds(s, ",\"snippet\":");
        const char *sn = snippets && snippets[i] ? snippets[i] : "";
        pl_sbuf_add_json_str(s, sn, strlen(sn));
        pl_sbuf_addc(s, '}');
    }
    pl_sbuf_adds(s, "],\"next_cursor\":");
    if (next_cursor > 0) pl_sbuf_printf(s, "\"%lld\"", (long long)next_cursor);
    else pl_sbuf_adds(s, "null");
}
