/* proto_int.h — what the proto*.c files share; only they include it (what
 * the rest of the program calls is in proto.h).
 *
 * The client protocol's messages are one module in three files (the cursor
 * token, cursor_id.c, has a header of its own):
 *   proto.c          pl_proto_decode and the frames of every message but
 *                    the two below (send, auth and its resume, sync,
 *                    history, receipts, typing, presence), the send and
 *                    auth fast paths, the fields of a send, and the frames
 *                    the server sends (events, sent, ok, error)
 *   proto_actions.c  the message actions (edit, delete, react, pin, pins,
 *                    notify): their decoding, the reaction emoji rule and
 *                    the notification level names
 *   proto_search.c   `search`: its decoding, the checks REST shares, the
 *                    cursor and the results' encoding
 * The field readers below are static inline so that pl_proto_decode keeps
 * them inline on the send path (the build has no LTO).
 */
#ifndef PL_PROTO_INT_H
#define PL_PROTO_INT_H

#include "proto.h"

#include <stdio.h>

/* ---- field readers: each returns 0, or -1 with *e filled ---------------- */

static inline int fail(pl_proto_err *e, const char *code, const char *fmt, const char *arg) {
    e->code = code;
    snprintf(e->message, sizeof e->message, fmt, arg);
    return -1;
}

/* Every integer a client sends is a JSON-safe integer (0..2^53-1): ids and
 * seqs stay exact in every JSON implementation, and arithmetic on them
 * (seq + 1) can never overflow. */
static inline int json_safe(json_t *v) {
    return json_is_integer(v) && json_integer_value(v) >= 0 && json_integer_value(v) <= PL_JSON_INT_MAX;
}

/* An integer id field: present, an integer, > 0 (and JSON-safe). */
static inline int get_id(json_t *o, const char *name, int64_t *out, pl_proto_err *e) {
    json_t *v = json_object_get(o, name);
    if (!v || !json_safe(v) || json_integer_value(v) == 0)
        return fail(e, "bad_request", "\"%s\" must be a positive integer (at most 2^53-1)", name);
    *out = json_integer_value(v);
    return 0;
}

/* An optional non-negative integer; 0 if absent. */
static inline int get_opt_seq(json_t *o, const char *name, int64_t *out, pl_proto_err *e) {
    json_t *v = json_object_get(o, name);
    *out = 0;
    if (!v || json_is_null(v)) return 0;
    if (!json_safe(v))
        return fail(e, "bad_request", "\"%s\" must be a non-negative integer (at most 2^53-1)", name);
    *out = json_integer_value(v);
    return 0;
}

/* A required non-negative integer. */
static inline int get_seq(json_t *o, const char *name, int64_t *out, pl_proto_err *e) {
    json_t *v = json_object_get(o, name);
    if (!v || !json_safe(v))
        return fail(e, "bad_request", "\"%s\" must be a non-negative integer (at most 2^53-1)", name);
    *out = json_integer_value(v);
    return 0;
}

static inline int get_str(json_t *o, const char *name, const char **p, size_t *n, pl_proto_err *e) {
    json_t *v = json_object_get(o, name);
    if (!v || !json_is_string(v)) return fail(e, "bad_request", "\"%s\" must be a string", name);
    *p = json_string_value(v);
    *n = json_string_length(v);
    return 0;
}

/* ---- the rarer message kinds, which pl_proto_decode hands on to --------- */

/* proto_actions.c: type is one of the message actions, or any other type
 * (unknown_type); conversation and target seq, then the action's fields. */
int  pl_proto__decode_action(const char *type, size_t max_body, pl_msg *m, pl_proto_err *e);

/* proto_search.c: a `search`; its arguments as pl_proto_search_check
 * leaves them. */
int  pl_proto__decode_search(pl_msg *m, pl_proto_err *e);

#endif
