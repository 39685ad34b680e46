/* proto_actions.c — the message actions of the client protocol (see
 * proto.h, docs/protocol.md "Message actions"): decoding edit, delete,
 * react, pin, pins and notify, the fields they share with REST (reaction
 * emoji and op, notification level) and the level names.
 *
 * Does not own: the answer's frame (pl_proto_ok, proto.c), what an action
 * does (chat/actions.c).
 */
#include "proto_int.h"

#include "../core/utf8.h"

#include <stdio.h>
#include <string.h>

int pl_proto_emoji_ok(const char *p, size_t n) {
    if (n == 0 || n > PL_STORE_EMOJI_MAX) return 0;
    int non_ascii = 0;
    for (size_t i = 0; i < n && !non_ascii; i++) non_ascii = (unsigned char)p[i] >= 0x80;
    /* JSON strings are valid UTF-8 already; no Unicode space or control
     * (U+00A0, U+3000, U+2028, C1 ..), and no invisible character but an
     * emoji's own (a ZWJ between pictographs, a variation selector after a
     * character, a flag's tags), as in titles: a reaction of U+200B or one
     * that turns the text right to left is not an emoji (audit T2) */
    return non_ascii && !pl_utf8_has_space_or_control((const uint8_t *)p, n) &&
           !pl_utf8_has_invisible_outside_emoji((const uint8_t *)p, n);
}

/* An optional string field that is one of two words: *second = 1 for the
 * second, 0 for the first or when absent. */
static int get_op(json_t *o, const char *first, const char *second, int *is_second, pl_proto_err *e) {
    json_t *v = json_object_get(o, "op");
    *is_second = 0;
    if (!v || json_is_null(v)) return 0;
    const char *s = json_string_value(v);
    if (s && strcmp(s, first) == 0) return 0;
    if (s && strcmp(s, second) == 0) {
        *is_second = 1;
        return 0;
    }
    e->code = "bad_request";
    snprintf(e->message, sizeof e->message, "\"op\" must be \"%s\" or \"%s\"", first, second);
    return -1;
}

int pl_proto_reaction(json_t *o, const char **emoji, int *remove, pl_proto_err *e) {
    json_t *v = json_object_get(o, "emoji");
    if (!json_is_string(v) || memchr(json_string_value(v), 0, json_string_length(v)) ||
        !pl_proto_emoji_ok(json_string_value(v), json_string_length(v)))
        return fail(e, "bad_request", "%s",
                    "\"emoji\" must be 1-32 bytes, an emoji: no spaces, no invisible characters");
    *emoji = json_string_value(v);
    return get_op(o, "add", "remove", remove, e);
}

static const char *const notify_names[] = {"all", "mentions", "none"};

const char *pl_proto_notify_name(int level) {
    return level >= PL_NOTIFY_ALL && level <= PL_NOTIFY_NONE ? notify_names[level] : "all";
}

int pl_proto_notify_level(json_t *o, int *level, pl_proto_err *e) {
    const char *s = json_string_value(json_object_get(o, "level"));
    for (int i = PL_NOTIFY_ALL; s && i <= PL_NOTIFY_NONE; i++)
        if (strcmp(s, notify_names[i]) == 0) {
            *level = i;
            return 0;
        }
    return fail(e, "bad_request", "%s", "\"level\" must be \"all\", \"mentions\" or \"none\"");
}

/* The message actions: conversation and target seq, then their own fields. */
int pl_proto__decode_action(const char *type, size_t max_body, pl_msg *m, pl_proto_err *e) {
    if (strcmp(type, "edit") == 0) m->type = PL_MSG_EDIT;
    else if (strcmp(type, "delete") == 0) m->type = PL_MSG_DELETE;
    else if (strcmp(type, "react") == 0) m->type = PL_MSG_REACT;
    else if (strcmp(type, "pin") == 0) m->type = PL_MSG_PIN;
    else if (strcmp(type, "pins") == 0) m->type = PL_MSG_PINS;
    else if (strcmp(type, "notify") == 0) m->type = PL_MSG_NOTIFY;
    else return fail(e, "unknown_type", "%s", "unknown message type");
    if (get_id(m->root, "conversation", &m->conv, e)) return -1;
    if (m->type == PL_MSG_PINS) return get_opt_seq(m->root, "offset", &m->after, e);   /* paging */
    if (m->type == PL_MSG_NOTIFY) return pl_proto_notify_level(m->root, &m->level, e);
    /* seq 0 names no message: not_found (chat/), as any other missing seq */
    if (get_seq(m->root, "seq", &m->seq, e)) return -1;
    switch (m->type) {
    case PL_MSG_EDIT:  /* "a body out of range" is bad_request for actions */
        return pl_proto_body(m->root, max_body, "bad_request", &m->body, &m->body_len, e);
    case PL_MSG_REACT: return pl_proto_reaction(m->root, &m->emoji, &m->remove, e);
    case PL_MSG_PIN:   return get_op(m->root, "pin", "unpin", &m->remove, e);
    default:           return 0;
    }
}
