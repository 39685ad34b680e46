/* fuzz_proto.c — libFuzzer driver for the client protocol decoder
 * (src/proto/proto.c).
 *
 * Owns: the contract of pl_proto_decode as proto.h states it, and the
 * encoders applied to what was decoded. Input: [max_body selector] then the
 * text of one WebSocket message (any bytes: the decoder must cope even with
 * what the frame reader would have refused).
 *
 * Checked for every input:
 *   1. decode returns 0 or -1; on -1 the error code is one of proto.h's and
 *      its message is NUL-terminated; the req it reports is a string of at
 *      most PL_PROTO_REQ_MAX - 2 bytes or an integer, and is the message's.
 *   2. On 0 the fields of the decoded type obey proto.h: ids positive, SEND
 *      client_msg_id 1-64 bytes and body 1..max_body bytes without NUL,
 *      HISTORY limit 1..PL_STORE_PAGE_MAX and non-negative bounds, cursors
 *      that pl_proto_cursor walks completely with positive conversation ids
 *      and non-negative seqs, receipts' seqs, typing and presence flags of
 *      0 or 1, presence queries of at most 200 positive ids.
 *   3. Re-encoding what was decoded gives JSON that parses back to the same
 *      values: an event and a `sent` ack built from a SEND (body, ids, req),
 *      an error echoing the req, and ,"req":<req> on its own.
 *   (1-3 on the jansson path, pl_proto_fast = 0.)
 *   4. The send and auth fast paths (pl_proto_fast = 1) take only sends
 *      and auths jansson accepts, with the same fields (req, token,
 *      cursors).
 * pl_msg_release runs in every case (LeakSanitizer checks the JSON tree).
 */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "fuzz.h"
#include "proto/proto.h"

static const size_t max_bodies[4] = { 0, 1, 16, 16384 };

/* Parses s[0..n) as one JSON object; aborts if it is not one. */
static json_t *load(const char *s, size_t n) {
    json_error_t err;
    json_t *o = json_loadb(s, n, 0, &err);
    if (!o || !json_is_object(o)) {
        fprintf(stderr, "not a JSON object (%s): %.*s\n", err.text, (int)(n > 400 ? 400 : n), s);
        FZ_CHECK(!"encoder wrote invalid JSON");
    }
    return o;
}

static void check_str(json_t *o, const char *key, const char *p, size_t n) {
    json_t *v = json_object_get(o, key);
    FZ_CHECK(v && json_is_string(v));
    FZ_CHECK(json_string_length(v) == n && memcmp(json_string_value(v), p, n) == 0);
}

static void check_req(json_t *o, json_t *req) {
    json_t *v = json_object_get(o, "req");
    if (!req) FZ_CHECK(v == NULL);
    else FZ_CHECK(v && json_equal(v, req));
}

static void check_req_value(json_t *req, json_t *root) {
    if (!req) return;
    FZ_CHECK(req == json_object_get(root, "req"));
    FZ_CHECK(json_is_integer(req) ||
             (json_is_string(req) && json_string_length(req) <= PL_PROTO_REQ_MAX - 2));
    /* ,"req":<req> on its own, wrapped into an object */
    pl_sbuf s;
    pl_sbuf_init(&s);
    pl_sbuf_adds(&s, "{\"x\":0");
    pl_proto_add_req(&s, req);
    pl_sbuf_addc(&s, '}');
    json_t *o = load(s.p, s.len);
    check_req(o, req);
    json_decref(o);
    pl_sbuf_release(&s);
}

static void check_error(const pl_proto_err *e, json_t *root) {
    static const char *codes[] = { "bad_json", "bad_request", "unknown_type", "too_large" };
    int known = 0;
    FZ_CHECK(e->code != NULL);
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++)
        known |= strcmp(e->code, codes[i]) == 0;
    FZ_CHECK(known);
    FZ_CHECK(memchr(e->message, '\0', sizeof e->message) != NULL);
    if (e->req) FZ_CHECK(root != NULL);
    check_req_value(e->req, root);

    pl_sbuf s;
    pl_sbuf_init(&s);
    pl_proto_error(&s, e->req, e->code, e->message);
    json_t *o = load(s.p, s.len);
    check_str(o, "type", "error", 5);
    check_str(o, "code", e->code, strlen(e->code));
    check_str(o, "message", e->message, strlen(e->message));
    check_req(o, e->req);
    json_decref(o);
    pl_sbuf_release(&s);
}

/* An event and a `sent` ack built from a decoded SEND. */
static void reencode_send(const pl_msg *m) {
    pl_event ev;
    memset(&ev, 0, sizeof ev);
    ev.conv = m->conv;
    ev.seq = 1;
    ev.id = 178120318523031552ull;
    ev.ts = 1732400000123;
    ev.kind = PL_EV_MESSAGE;
    ev.sender = 7;
    ev.client_msg_id = strndup(m->client_msg_id, m->cmid_len);
    ev.body = strndup(m->body, m->body_len);
    FZ_CHECK(ev.client_msg_id && ev.body);

    pl_sbuf s;
    pl_sbuf_init(&s);
    pl_proto_event(&s, &ev);
    json_t *o = load(s.p, s.len);
    check_str(o, "type", "event", 5);
    check_str(o, "kind", "message", 7);
    check_str(o, "body", m->body, m->body_len);
    check_str(o, "client_msg_id", m->client_msg_id, m->cmid_len);
    FZ_CHECK(json_integer_value(json_object_get(o, "conversation")) == m->conv);
    json_decref(o);
    pl_sbuf_release(&s);

    for (int with_type = 0; with_type < 2; with_type++) {
        pl_sbuf_init(&s);
        pl_proto_sent(&s, &ev, with_type, m->req, with_type);
        o = load(s.p, s.len);
        check_req(o, m->req);
        check_str(o, "client_msg_id", m->client_msg_id, m->cmid_len);
        FZ_CHECK(json_integer_value(json_object_get(o, "conversation")) == m->conv);
        FZ_CHECK(json_is_true(json_object_get(o, "duplicate")) == with_type);
        json_decref(o);
        pl_sbuf_release(&s);
    }
    free(ev.client_msg_id);
    free(ev.body);
}

static void check_cursors(json_t *cursors) {
    void *iter = NULL;
    int64_t conv, seq;
    size_t n = 0;
    FZ_CHECK(json_is_object(cursors));
    while (pl_proto_cursor(cursors, &iter, &conv, &seq) == 0) {
        FZ_CHECK(conv > 0 && seq >= 0);
        FZ_CHECK(json_integer_value(json_object_get(cursors, json_object_iter_key(iter))) == seq);
        FZ_CHECK(++n <= json_object_size(cursors));
    }
    FZ_CHECK(n == json_object_size(cursors));
}

static void check_msg(const pl_msg *m, size_t max_body) {
    FZ_CHECK(m->root && json_is_object(m->root));
    check_req_value(m->req, m->root);
    switch (m->type) {
    case PL_MSG_AUTH:
        FZ_CHECK(m->token != NULL);
        if (m->cursors) check_cursors(m->cursors);
        break;
    case PL_MSG_SEND:
        FZ_CHECK(m->conv > 0);
        FZ_CHECK(m->cmid_len >= 1 && m->cmid_len <= PL_PROTO_CMID_MAX);
        FZ_CHECK(memchr(m->client_msg_id, '\0', m->cmid_len) == NULL);
        FZ_CHECK(m->body_len >= 1 && m->body_len <= max_body);
        FZ_CHECK(memchr(m->body, '\0', m->body_len) == NULL);
        reencode_send(m);
        break;
    case PL_MSG_SYNC:
        FZ_CHECK(m->cursors != NULL);
        check_cursors(m->cursors);
        break;
    case PL_MSG_HISTORY:
        FZ_CHECK(m->conv > 0);
        FZ_CHECK(m->after >= 0 && m->before >= 0);
        FZ_CHECK(m->limit >= 1 && m->limit <= PL_STORE_PAGE_MAX);
        break;
    case PL_MSG_DELIVERED:
    case PL_MSG_READ:
        FZ_CHECK(m->conv > 0 && m->seq >= 0);   /* 0: a no-op, below every cursor */
        break;
    case PL_MSG_RECEIPTS:
        FZ_CHECK(m->conv > 0 && m->seq >= 0);
        break;
    case PL_MSG_TYPING:
        FZ_CHECK(m->conv > 0 && (m->typing == 0 || m->typing == 1));
        break;
    case PL_MSG_PRESENCE:
        FZ_CHECK(m->away == 0 || m->away == 1);
        break;
    case PL_MSG_PRESENCE_QUERY: {
        size_t i;
        json_t *v;
        FZ_CHECK(json_is_array(m->users));
        FZ_CHECK(json_array_size(m->users) <= PL_PROTO_PRESENCE_QUERY_MAX);
        json_array_foreach(m->users, i, v)
            FZ_CHECK(json_is_integer(v) && json_integer_value(v) >= 0);   /* 0: an id no user has, left out */
        break;
    }
    default:
        break;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *p, size_t n) {
    if (n < 1 || n > 65536) return 0;
    size_t max_body = max_bodies[p[0] & 3];
    char *text = (char *)fz_dup(p + 1, n - 1);
    pl_msg m;
    pl_proto_err e;
    pl_proto_fast = 0;               /* jansson: the contract above */
    int rc = pl_proto_decode(text, n - 1, max_body, &m, &e);
    pl_proto_fast = 1;
    FZ_CHECK(rc == 0 || rc == -1);
    if (rc == 0) check_msg(&m, max_body);
    else check_error(&e, m.root);
    /* 4. the fast paths take a message only if jansson accepts it as the
     *    same send or auth: same fields, same req, token and cursors */
    pl_msg f;
    pl_proto_err fe;
    int fr = pl_proto_decode(text, n - 1, max_body, &f, &fe);
    if (fr == 0 && !f.root && f.type == PL_MSG_AUTH) {
        FZ_CHECK(rc == 0 && m.type == PL_MSG_AUTH);
        FZ_CHECK(f.token_len == m.token_len && !memcmp(f.token, m.token, f.token_len) && !f.token[f.token_len]);
        FZ_CHECK((!f.cursors && !m.cursors) || (f.cursors && m.cursors && json_equal(f.cursors, m.cursors)));
        FZ_CHECK(!f.req);
    } else if (fr == 0 && !f.root) {
        FZ_CHECK(rc == 0 && m.type == PL_MSG_SEND && f.type == PL_MSG_SEND);
        FZ_CHECK(f.conv == m.conv && f.reply_to == m.reply_to);
        FZ_CHECK(f.cmid_len == m.cmid_len && !memcmp(f.client_msg_id, m.client_msg_id, f.cmid_len));
        FZ_CHECK(f.body_len == m.body_len && !memcmp(f.body, m.body, f.body_len));
        FZ_CHECK(!f.client_msg_id[f.cmid_len] && !f.body[f.body_len]);
        FZ_CHECK((!f.req && !m.req) || (f.req && m.req && json_equal(f.req, m.req)));
    }
    pl_msg_release(&f);
    pl_msg_release(&m);
    pl_msg_release(&m);              /* safe twice */
    free(text);
    return 0;
}
