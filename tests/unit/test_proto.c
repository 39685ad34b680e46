/* test_proto.c — decoding and encoding the client protocol (src/proto). */
#include "test.h"

#include <stdlib.h>

#include "core/utf8.h"
#include "proto/proto.h"

static int decode(const char *s, pl_msg *m, pl_proto_err *e) {
    return pl_proto_decode(s, strlen(s), 16384, m, e);
}

TEST(proto_send_ok) {
    pl_msg m;
    pl_proto_err e;
    CHECK_EQ(decode("{\"type\":\"send\",\"req\":7,\"conversation\":12,\"client_msg_id\":\"c1\",\"body\":\"h\\u00e9\"}", &m, &e), 0);
    CHECK_EQ(m.type, PL_MSG_SEND);
    CHECK_EQ(m.conv, 12);
    CHECK_EQ(m.cmid_len, 2);
    CHECK_EQ(m.body_len, 3);           /* é is two bytes of UTF-8 */
    CHECK(json_is_integer(m.req));
    pl_msg_release(&m);
}

TEST(proto_bad_json_and_types) {
    pl_msg m;
    pl_proto_err e;
    CHECK_EQ(decode("{not json", &m, &e), -1);
    CHECK_STR(e.code, "bad_json");
    pl_msg_release(&m);
    CHECK_EQ(decode("[1,2]", &m, &e), -1);
    CHECK_STR(e.code, "bad_json");
    pl_msg_release(&m);
    CHECK_EQ(decode("{\"type\":\"dance\"}", &m, &e), -1);
    CHECK_STR(e.code, "unknown_type");
    pl_msg_release(&m);
    CHECK_EQ(decode("{\"type\":5}", &m, &e), -1);
    CHECK_STR(e.code, "bad_request");
    pl_msg_release(&m);
    CHECK_EQ(decode("{\"type\":\"send\",\"type\":\"send\"}", &m, &e), -1);   /* duplicate keys */
    CHECK_STR(e.code, "bad_json");
    CHECK_STR(e.message, "message repeats a key");   /* not "must be a JSON object" */
    pl_msg_release(&m);
    /* half of a surrogate pair: not JSON, though an object (audit S: the
     * error said "must be a JSON object") */
    CHECK_EQ(decode("{\"type\":\"send\",\"body\":\"\\ud83d\"}", &m, &e), -1);
    CHECK_STR(e.code, "bad_json");
    CHECK(strstr(e.message, "not valid JSON") != NULL);
    pl_msg_release(&m);
}

/* Each malformed message's error names the rule it broke (audit D2 L13:
 * a scalar, deep nesting and a NUL in a key were "not valid JSON", a NUL
 * in client_msg_id "must be 1-64 bytes", a NUL in type "must be a string"). */
TEST(proto_error_messages_name_the_rule) {
    pl_msg m;
    pl_proto_err e;
    const char *scalars[] = {"null", "5", "\"str\"", "true"};
    for (size_t i = 0; i < 4; i++) {
        CHECK_EQ(decode(scalars[i], &m, &e), -1);
        CHECK_STR(e.code, "bad_json");
        CHECK_STR(e.message, "message must be a JSON object");
        pl_msg_release(&m);
    }
    size_t depth = 2500;
    char *deep = malloc(2 * depth + 64);
    size_t n = (size_t)sprintf(deep, "{\"type\":\"ping\",\"x\":");
    for (size_t i = 0; i < depth; i++) deep[n++] = '[';
    for (size_t i = 0; i < depth; i++) deep[n++] = ']';
    deep[n++] = '}';
    deep[n] = '\0';
    CHECK_EQ(decode(deep, &m, &e), -1);
    CHECK_STR(e.code, "bad_json");
    CHECK(strstr(e.message, "deeper than 2048") != NULL);
    pl_msg_release(&m);
    free(deep);
    CHECK_EQ(decode("{\"type\":\"ping\",\"req\":1,\"a\\u0000\":1}", &m, &e), -1);
    CHECK_STR(e.code, "bad_json");
    CHECK_STR(e.message, "a key contains NUL");
    pl_msg_release(&m);
    CHECK_EQ(decode("{\"type\":\"send\",\"conversation\":1,\"client_msg_id\":\"a\\u0000b\",\"body\":\"x\"}", &m, &e), -1);
    CHECK_STR(e.code, "bad_request");
    CHECK_STR(e.message, "\"client_msg_id\" must not contain NUL");
    pl_msg_release(&m);
    CHECK_EQ(decode("{\"type\":\"ping\\u0000\"}", &m, &e), -1);
    CHECK_STR(e.code, "bad_request");
    CHECK_STR(e.message, "\"type\" must not contain NUL");
    pl_msg_release(&m);
}

TEST(proto_send_validation) {
    pl_msg m;
    pl_proto_err e;
    const char *bad[] = {
        "{\"type\":\"send\",\"client_msg_id\":\"c\",\"body\":\"b\"}",                        /* no conversation */
        "{\"type\":\"send\",\"conversation\":\"12\",\"client_msg_id\":\"c\",\"body\":\"b\"}", /* string id */
        "{\"type\":\"send\",\"conversation\":0,\"client_msg_id\":\"c\",\"body\":\"b\"}",
        "{\"type\":\"send\",\"conversation\":1,\"body\":\"b\"}",
        "{\"type\":\"send\",\"conversation\":1,\"client_msg_id\":\"\",\"body\":\"b\"}",
        "{\"type\":\"send\",\"conversation\":1,\"client_msg_id\":\"c\",\"body\":\"\"}",
        "{\"type\":\"send\",\"conversation\":1,\"client_msg_id\":\"c\",\"body\":7}",
        "{\"type\":\"send\",\"conversation\":1,\"client_msg_id\":\"c\",\"body\":\"b\",\"req\":[1]}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CHECK_EQ(decode(bad[i], &m, &e), -1);
        CHECK_STR(e.code, "bad_request");
        pl_msg_release(&m);
    }
    /* a 65-byte client_msg_id */
    char buf[256];
    snprintf(buf, sizeof buf, "{\"type\":\"send\",\"conversation\":1,\"client_msg_id\":\"%065d\",\"body\":\"b\"}", 0);
    CHECK_EQ(decode(buf, &m, &e), -1);
    pl_msg_release(&m);
}

TEST(proto_body_limit) {
    pl_msg m;
    pl_proto_err e;
    char *s = malloc(20000);
    int n = sprintf(s, "{\"type\":\"send\",\"req\":\"r\",\"conversation\":1,\"client_msg_id\":\"c\",\"body\":\"");
    memset(s + n, 'x', 16385);
    strcpy(s + n + 16385, "\"}");
    CHECK_EQ(pl_proto_decode(s, strlen(s), 16384, &m, &e), -1);
    CHECK_STR(e.code, "too_large");
    CHECK(e.req && json_is_string(e.req));   /* req still echoed */
    pl_msg_release(&m);
    s[n + 16384] = '"';
    strcpy(s + n + 16384, "\"}");
    CHECK_EQ(pl_proto_decode(s, strlen(s), 16384, &m, &e), 0);
    pl_msg_release(&m);
    free(s);
}

TEST(proto_invalid_utf8_rejected) {
    pl_msg m;
    pl_proto_err e;
    const char s[] = "{\"type\":\"send\",\"conversation\":1,\"client_msg_id\":\"c\",\"body\":\"\xc3\x28\"}";
    CHECK_EQ(pl_proto_decode(s, sizeof s - 1, 16384, &m, &e), -1);
    pl_msg_release(&m);
}

TEST(proto_sync_cursors) {
    pl_msg m;
    pl_proto_err e;
    CHECK_EQ(decode("{\"type\":\"sync\",\"cursors\":{\"12\":40,\"13\":0}}", &m, &e), 0);
    void *it = NULL;
    int64_t conv, seq, sum = 0;
    int count = 0;
    while (pl_proto_cursor(m.cursors, &it, &conv, &seq) == 0) { count++; sum += conv * 1000 + seq; }
    CHECK_EQ(count, 2);
    CHECK_EQ(sum, 12040 + 13000);
    pl_msg_release(&m);
    CHECK_EQ(decode("{\"type\":\"sync\",\"cursors\":{\"x\":1}}", &m, &e), -1);
    pl_msg_release(&m);
    CHECK_EQ(decode("{\"type\":\"sync\",\"cursors\":{\"1\":-1}}", &m, &e), -1);
    pl_msg_release(&m);
    CHECK_EQ(decode("{\"type\":\"sync\"}", &m, &e), -1);
    pl_msg_release(&m);
}

TEST(proto_history_paging) {
    pl_msg m;
    pl_proto_err e;
    CHECK_EQ(decode("{\"type\":\"history\",\"conversation\":3,\"before\":41,\"limit\":20}", &m, &e), 0);
    CHECK_EQ(m.before, 41);
    CHECK_EQ(m.limit, 20);
    pl_msg_release(&m);
    CHECK_EQ(decode("{\"type\":\"history\",\"conversation\":3}", &m, &e), 0);
    CHECK_EQ(m.limit, 50);
    pl_msg_release(&m);
    CHECK_EQ(decode("{\"type\":\"history\",\"conversation\":3,\"limit\":201}", &m, &e), -1);
    pl_msg_release(&m);
}

TEST(proto_encode_event) {
    pl_event ev = {0};
    ev.conv = 5; ev.seq = 9; ev.id = 123456789012345ULL; ev.ts = 1700000000000LL;
    ev.kind = PL_EV_MESSAGE; ev.sender = 2;
    ev.client_msg_id = "c\"1"; ev.body = "line\nbreak \x01";
    pl_sbuf s;
    pl_sbuf_init(&s);
    pl_proto_event(&s, &ev);
    json_t *o = json_loads(s.p, 0, NULL);
    CHECK(o != NULL);
    CHECK_STR(json_string_value(json_object_get(o, "type")), "event");
    CHECK_STR(json_string_value(json_object_get(o, "kind")), "message");
    CHECK_STR(json_string_value(json_object_get(o, "id")), "123456789012345");
    CHECK_STR(json_string_value(json_object_get(o, "body")), "line\nbreak \x01");
    CHECK_STR(json_string_value(json_object_get(o, "client_msg_id")), "c\"1");
    CHECK_EQ(json_integer_value(json_object_get(o, "seq")), 9);
    json_decref(o);
    pl_sbuf_release(&s);
}

TEST(proto_encode_sent_and_error) {
    pl_event ev = {0};
    ev.conv = 1; ev.seq = 2; ev.id = 3; ev.ts = 4; ev.kind = PL_EV_MESSAGE; ev.client_msg_id = "k";
    json_t *req = json_string("r\"q");
    pl_sbuf s;
    pl_sbuf_init(&s);
    pl_proto_sent(&s, &ev, 1, req, 1);
    json_t *o = json_loads(s.p, 0, NULL);
    CHECK(o != NULL);
    CHECK_STR(json_string_value(json_object_get(o, "req")), "r\"q");
    CHECK(json_is_true(json_object_get(o, "duplicate")));
    json_decref(o);
    pl_sbuf_release(&s);
    pl_proto_error(&s, req, "not_found", "no \"such\"");
    o = json_loads(s.p, 0, NULL);
    CHECK(o != NULL);
    CHECK_STR(json_string_value(json_object_get(o, "code")), "not_found");
    json_decref(o);
    json_decref(req);
    pl_sbuf_release(&s);
}

TEST(proto_receipts_presence_typing) {
    pl_msg m;
    pl_proto_err e;
    CHECK_EQ(decode("{\"type\":\"read\",\"conversation\":4,\"seq\":9}", &m, &e), 0);
    CHECK_EQ(m.type, PL_MSG_READ);
    CHECK_EQ(m.seq, 9);
    pl_msg_release(&m);
    /* 0 is below every cursor: accepted, a no-op (protocol.md "Receipts") */
    CHECK_EQ(decode("{\"type\":\"delivered\",\"conversation\":4,\"seq\":0}", &m, &e), 0);
    CHECK_EQ(m.type, PL_MSG_DELIVERED);
    CHECK_EQ(m.seq, 0);
    pl_msg_release(&m);
    CHECK_EQ(decode("{\"type\":\"read\",\"conversation\":4,\"seq\":-1}", &m, &e), -1);
    pl_msg_release(&m);
    CHECK_EQ(decode("{\"type\":\"read\",\"conversation\":4}", &m, &e), -1);
    pl_msg_release(&m);
    CHECK_EQ(decode("{\"type\":\"receipts\",\"conversation\":4}", &m, &e), 0);
    CHECK_EQ(m.seq, 0);
    pl_msg_release(&m);
    CHECK_EQ(decode("{\"type\":\"typing\",\"conversation\":4,\"state\":\"start\"}", &m, &e), 0);
    CHECK_EQ(m.typing, 1);
    pl_msg_release(&m);
    CHECK_EQ(decode("{\"type\":\"typing\",\"conversation\":4,\"state\":\"stop\"}", &m, &e), 0);
    CHECK_EQ(m.typing, 0);
    pl_msg_release(&m);
    CHECK_EQ(decode("{\"type\":\"typing\",\"conversation\":4,\"state\":\"maybe\"}", &m, &e), -1);
    pl_msg_release(&m);
    CHECK_EQ(decode("{\"type\":\"presence\",\"status\":\"away\"}", &m, &e), 0);
    CHECK_EQ(m.away, 1);
    pl_msg_release(&m);
    CHECK_EQ(decode("{\"type\":\"presence\",\"status\":\"invisible\"}", &m, &e), -1);
    pl_msg_release(&m);
    CHECK_EQ(decode("{\"type\":\"presence_query\",\"users\":[1,2,3]}", &m, &e), 0);
    CHECK_EQ(json_array_size(m.users), 3);
    pl_msg_release(&m);
    CHECK_EQ(decode("{\"type\":\"presence_query\",\"users\":[1,\"x\"]}", &m, &e), -1);
    pl_msg_release(&m);
    CHECK_EQ(decode("{\"type\":\"heartbeat\"}", &m, &e), 0);
    CHECK_EQ(m.type, PL_MSG_HEARTBEAT);
    pl_msg_release(&m);
}

TEST(proto_nul_in_body_is_bad_request_with_req) {
    pl_msg m;
    pl_proto_err e;
    CHECK_EQ(decode("{\"type\":\"send\",\"req\":3,\"conversation\":1,\"client_msg_id\":\"c\",\"body\":\"a\\u0000b\"}", &m, &e), -1);
    CHECK_STR(e.code, "bad_request");
    CHECK(e.req && json_integer_value(e.req) == 3);
    pl_msg_release(&m);
}

TEST(proto_cursor_keys_are_plain_digits) {
    pl_msg m;
    pl_proto_err e;
    const char *bad[] = {"{\"type\":\"sync\",\"cursors\":{\" 12\":1}}", "{\"type\":\"sync\",\"cursors\":{\"+12\":1}}",
                         "{\"type\":\"sync\",\"cursors\":{\"99999999999999999999\":1}}",
                         "{\"type\":\"sync\",\"cursors\":{\"0\":1}}", "{\"type\":\"sync\",\"cursors\":{\"\":1}}",
                         /* a leading zero, as in a path (audit V: "02" was conversation 2) */
                         "{\"type\":\"sync\",\"cursors\":{\"02\":1}}",
                         "{\"type\":\"auth\",\"token\":\"t\",\"cursors\":{\"02\":1}}",
                         "{\"type\":\"auth\",\"token\":\"t\",\"cursors\":{\"7\":1,\"007\":2}}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CHECK_EQ(decode(bad[i], &m, &e), -1);
        CHECK_STR(e.code, "bad_request");
        pl_msg_release(&m);
    }
}

/* Found by fuzz_proto after NUL was let through the parser: a req holding
 * U+0000 was echoed back with it. */
TEST(proto_fuzz_regress_nul_in_req_is_not_echoed) {
    pl_msg m;
    pl_proto_err e;
    CHECK_EQ(decode("{\"te\":\"ping\",\"req\":\"rrrrrrrrrr\\u0000b\"}", &m, &e), -1);
    CHECK_STR(e.code, "bad_request");
    CHECK(e.req == NULL);
    pl_msg_release(&m);
    CHECK_EQ(decode("{\"type\":\"ping\\u0000x\"}", &m, &e), -1);
    CHECK_STR(e.code, "bad_request");
    pl_msg_release(&m);
}

/* Issue 15 defect 5: every integer a client sends is at most 2^53 - 1, so
 * seq + 1 can never overflow and ids stay exact in every JSON reader. */
TEST(proto_integers_are_bounded_to_json_safe) {
    static const char *const bad[] = {
        "{\"type\":\"receipts\",\"conversation\":1,\"seq\":9223372036854775807}",
        "{\"type\":\"read\",\"conversation\":1,\"seq\":9007199254740992}",
        "{\"type\":\"delivered\",\"conversation\":9007199254740992,\"seq\":1}",
        "{\"type\":\"history\",\"conversation\":1,\"after\":9007199254740992}",
        "{\"type\":\"history\",\"conversation\":1,\"before\":9223372036854775807}",
        "{\"type\":\"sync\",\"cursors\":{\"1\":9007199254740992}}",
        "{\"type\":\"sync\",\"cursors\":{\"9007199254740992\":1}}",
        "{\"type\":\"send\",\"conversation\":9223372036854775807,\"client_msg_id\":\"c\",\"body\":\"x\"}",
        "{\"type\":\"presence_query\",\"users\":[9007199254740992]}",
        "{\"type\":\"ping\",\"req\":9007199254740992}",             /* req too (the third audit) */
        "{\"type\":\"ping\",\"req\":-5}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        pl_msg m;
        pl_proto_err e;
        int r = decode(bad[i], &m, &e);
        pl_msg_release(&m);
        CHECK_EQ(r, -1);
        CHECK_STR(e.code, "bad_request");
    }
    pl_msg m;
    pl_proto_err e;
    /* beyond int64 the JSON parser itself gives up: still out of range
     * (valid JSON, so not bad_json), cleanly */
    CHECK_EQ(decode("{\"type\":\"read\",\"conversation\":1,\"seq\":18446744073709551616}", &m, &e), -1);
    pl_msg_release(&m);
    CHECK_STR(e.code, "bad_request");
    CHECK_EQ(decode("{\"type\":\"read\",\"conversation\":9007199254740991,\"seq\":9007199254740991}", &m, &e), 0);
    CHECK_EQ(m.seq, 9007199254740991LL);
    pl_msg_release(&m);
    const char *bad_field = NULL;
    int lim;
    CHECK_EQ(pl_proto_paging(9007199254740992LL, 0, 10, &lim, &bad_field), -1);
    CHECK_STR(bad_field, "after");
}

/* ---- message actions ------------------------------------------------------ */

/* Decodes s, expecting bad_request whose message names field. */
static int refused_naming(const char *s, const char *code, const char *field) {
    pl_msg m;
    pl_proto_err e;
    int r = decode(s, &m, &e);
    pl_msg_release(&m);
    if (r != -1 || strcmp(e.code, code) != 0 || !strstr(e.message, field)) {
        fprintf(stderr, "  not refused as %s naming %s: %s (%s: %s)\n", code, field, s,
                r ? e.code : "accepted", r ? e.message : "");
        return 0;
    }
    return 1;
}

TEST(proto_send_reply_to) {
    pl_msg m;
    pl_proto_err e;
    CHECK_EQ(decode("{\"type\":\"send\",\"conversation\":12,\"client_msg_id\":\"c\",\"body\":\"b\",\"reply_to\":58}",
                    &m, &e), 0);
    CHECK_EQ(m.reply_to, 58);
    pl_msg_release(&m);
    CHECK_EQ(decode("{\"type\":\"send\",\"conversation\":12,\"client_msg_id\":\"c\",\"body\":\"b\"}", &m, &e), 0);
    CHECK_EQ(m.reply_to, 0);
    pl_msg_release(&m);
    CHECK_EQ(decode("{\"type\":\"send\",\"conversation\":12,\"client_msg_id\":\"c\",\"body\":\"b\",\"reply_to\":null}",
                    &m, &e), 0);
    CHECK_EQ(m.reply_to, 0);
    pl_msg_release(&m);
    CHECK(refused_naming("{\"type\":\"send\",\"conversation\":1,\"client_msg_id\":\"c\",\"body\":\"b\",\"reply_to\":0}",
                         "bad_request", "reply_to"));
    CHECK(refused_naming("{\"type\":\"send\",\"conversation\":1,\"client_msg_id\":\"c\",\"body\":\"b\",\"reply_to\":\"5\"}",
                         "bad_request", "reply_to"));
    CHECK(refused_naming("{\"type\":\"send\",\"conversation\":1,\"client_msg_id\":\"c\",\"body\":\"b\",\"reply_to\":-1}",
                         "bad_request", "reply_to"));
    CHECK(refused_naming("{\"type\":\"send\",\"conversation\":1,\"client_msg_id\":\"c\",\"body\":\"b\","
                         "\"reply_to\":9007199254740992}", "bad_request", "reply_to"));
    CHECK(refused_naming("{\"type\":\"send\",\"conversation\":1,\"client_msg_id\":\"c\",\"body\":\"b\",\"reply_to\":1.5}",
                         "bad_request", "reply_to"));
}

TEST(proto_edit_and_delete) {
    pl_msg m;
    pl_proto_err e;
    CHECK_EQ(decode("{\"type\":\"edit\",\"req\":7,\"conversation\":12,\"seq\":58,\"body\":\"ship on Monday\"}", &m, &e), 0);
    CHECK_EQ(m.type, PL_MSG_EDIT);
    CHECK_EQ(m.conv, 12);
    CHECK_EQ(m.seq, 58);
    CHECK_EQ(m.body_len, 14);
    CHECK(strncmp(m.body, "ship on Monday", 14) == 0);
    CHECK_EQ(json_integer_value(m.req), 7);
    pl_msg_release(&m);
    CHECK_EQ(decode("{\"type\":\"delete\",\"conversation\":12,\"seq\":58}", &m, &e), 0);
    CHECK_EQ(m.type, PL_MSG_DELETE);
    CHECK_EQ(m.seq, 58);
    pl_msg_release(&m);
    CHECK(refused_naming("{\"type\":\"edit\",\"seq\":1,\"body\":\"x\"}", "bad_request", "conversation"));
    CHECK(refused_naming("{\"type\":\"edit\",\"conversation\":1,\"body\":\"x\"}", "bad_request", "seq"));
    CHECK_EQ(decode("{\"type\":\"edit\",\"conversation\":1,\"seq\":0,\"body\":\"x\"}", &m, &e), 0);
    CHECK_EQ(m.seq, 0);                              /* no such message: not_found, later */
    pl_msg_release(&m);
    CHECK(refused_naming("{\"type\":\"edit\",\"conversation\":1,\"seq\":-1,\"body\":\"x\"}", "bad_request", "seq"));
    CHECK(refused_naming("{\"type\":\"edit\",\"conversation\":1,\"seq\":\"1\",\"body\":\"x\"}", "bad_request", "seq"));
    CHECK(refused_naming("{\"type\":\"edit\",\"conversation\":1,\"seq\":2}", "bad_request", "body"));
    CHECK(refused_naming("{\"type\":\"edit\",\"conversation\":1,\"seq\":2,\"body\":\"\"}", "bad_request", "body"));
    CHECK(refused_naming("{\"type\":\"edit\",\"conversation\":1,\"seq\":2,\"body\":3}", "bad_request", "body"));
    CHECK(refused_naming("{\"type\":\"edit\",\"conversation\":1,\"seq\":2,\"body\":\"a\\u0000\"}", "bad_request", "body"));
    CHECK(refused_naming("{\"type\":\"delete\",\"conversation\":1}", "bad_request", "seq"));
    CHECK(refused_naming("{\"type\":\"delete\",\"conversation\":1,\"seq\":9007199254740992}", "bad_request", "seq"));
    /* the same limit as a send's body; out of range is bad_request for actions */
    char *s = malloc(20000);
    int n = sprintf(s, "{\"type\":\"edit\",\"conversation\":1,\"seq\":2,\"body\":\"");
    memset(s + n, 'x', 16385);
    strcpy(s + n + 16385, "\"}");
    CHECK(refused_naming(s, "bad_request", "body"));
    strcpy(s + n + 16384, "\"}");
    CHECK_EQ(decode(s, &m, &e), 0);
    CHECK_EQ(m.body_len, 16384);
    pl_msg_release(&m);
    free(s);
}

TEST(proto_react_and_pin) {
    pl_msg m;
    pl_proto_err e;
    CHECK_EQ(decode("{\"type\":\"react\",\"conversation\":12,\"seq\":58,\"emoji\":\"\xf0\x9f\x91\x8d\"}", &m, &e), 0);
    CHECK_EQ(m.type, PL_MSG_REACT);
    CHECK_STR(m.emoji, "\xf0\x9f\x91\x8d");
    CHECK_EQ(m.remove, 0);
    pl_msg_release(&m);
    CHECK_EQ(decode("{\"type\":\"react\",\"conversation\":12,\"seq\":58,\"emoji\":\"\\ud83d\\udc4d\",\"op\":\"remove\"}",
                    &m, &e), 0);
    CHECK_EQ(m.remove, 1);
    CHECK_STR(m.emoji, "\xf0\x9f\x91\x8d");
    pl_msg_release(&m);
    CHECK_EQ(decode("{\"type\":\"react\",\"conversation\":12,\"seq\":58,\"emoji\":\"\xe2\x9c\x85\",\"op\":\"add\"}", &m, &e), 0);
    CHECK_EQ(m.remove, 0);
    pl_msg_release(&m);
    CHECK(refused_naming("{\"type\":\"react\",\"conversation\":1,\"seq\":2}", "bad_request", "emoji"));
    CHECK(refused_naming("{\"type\":\"react\",\"conversation\":1,\"seq\":2,\"emoji\":\"\"}", "bad_request", "emoji"));
    CHECK(refused_naming("{\"type\":\"react\",\"conversation\":1,\"seq\":2,\"emoji\":\":+1:\"}", "bad_request", "emoji"));
    CHECK(refused_naming("{\"type\":\"react\",\"conversation\":1,\"seq\":2,\"emoji\":\"\xf0\x9f\x91\x8d \"}",
                         "bad_request", "emoji"));
    CHECK(refused_naming("{\"type\":\"react\",\"conversation\":1,\"seq\":2,\"emoji\":\"\xf0\x9f\x91\x8d\\n\"}",
                         "bad_request", "emoji"));
    CHECK(refused_naming("{\"type\":\"react\",\"conversation\":1,\"seq\":2,\"emoji\":\"\xf0\x9f\x91\x8d\\u0000\"}",
                         "bad_request", "emoji"));
    CHECK(refused_naming("{\"type\":\"react\",\"conversation\":1,\"seq\":2,\"emoji\":7}", "bad_request", "emoji"));
    CHECK(refused_naming("{\"type\":\"react\",\"conversation\":1,\"seq\":2,\"emoji\":\"\xf0\x9f\x91\x8d\",\"op\":\"toggle\"}",
                         "bad_request", "op"));
    CHECK(refused_naming("{\"type\":\"react\",\"conversation\":1,\"emoji\":\"\xf0\x9f\x91\x8d\"}", "bad_request", "seq"));
    /* 32 bytes of emoji are fine, 33 are not */
    char buf[256], em[64] = "";
    for (int i = 0; i < 8; i++) strcat(em, "\xf0\x9f\x91\x8d");
    snprintf(buf, sizeof buf, "{\"type\":\"react\",\"conversation\":1,\"seq\":2,\"emoji\":\"%s\"}", em);
    CHECK_EQ(decode(buf, &m, &e), 0);
    pl_msg_release(&m);
    snprintf(buf, sizeof buf, "{\"type\":\"react\",\"conversation\":1,\"seq\":2,\"emoji\":\"%sx\"}", em);
    CHECK(refused_naming(buf, "bad_request", "emoji"));
    /* no Unicode White_Space nor control anywhere (not only ASCII ones) */
    const char *const spaced[] = {"\\u00a0", "\\u3000", "\\u2028", "\\u2029", "\\u0085", "\\u0080", "\\u009f",
                                  "\\u007f", "\\u1680", "\\u2000", "\\u200a", "\\u202f", "\\u205f", "\\u000b"};
    for (size_t i = 0; i < sizeof spaced / sizeof spaced[0]; i++) {
        snprintf(buf, sizeof buf, "{\"type\":\"react\",\"conversation\":1,\"seq\":2,\"emoji\":\"\xf0\x9f\x91\x8d%s\"}",
                 spaced[i]);
        CHECK(refused_naming(buf, "bad_request", "emoji"));
    }
    CHECK(!pl_proto_emoji_ok("\xc2\xa0\xf0\x9f\x91\x8d", 6));             /* U+00A0 first */
    CHECK(!pl_proto_emoji_ok("\xe3\x80\x80", 3));                         /* U+3000 alone */
    CHECK(!pl_proto_emoji_ok("\xf0\x9f\x91\x8d\xc2\x85", 6));             /* NEL (C1) */
    /* ZWJ sequences, variation selectors and a flag's tags are emoji */
    CHECK(pl_proto_emoji_ok("\xf0\x9f\x91\xa8\xe2\x80\x8d\xf0\x9f\x91\xa9\xe2\x80\x8d\xf0\x9f\x91\xa7", 18));
    CHECK(pl_proto_emoji_ok("\xe2\x9d\xa4\xef\xb8\x8f", 6));
    CHECK(pl_proto_emoji_ok("\xf0\x9f\x8f\xb3\xef\xb8\x8f\xe2\x80\x8d\xf0\x9f\x8c\x88", 14));
    CHECK(pl_proto_emoji_ok("1\xef\xb8\x8f\xe2\x83\xa3", 7));                            /* keycap 1 */
    const char eng[] = "\xf0\x9f\x8f\xb4\xf3\xa0\x81\xa7\xf3\xa0\x81\xa2\xf3\xa0\x81\xa5"
                       "\xf3\xa0\x81\xae\xf3\xa0\x81\xa7\xf3\xa0\x81\xbf";                   /* England */
    CHECK(pl_proto_emoji_ok(eng, sizeof eng - 1));
    /* but no other invisible character: U+200B, a lone ZWJ or selector, a
     * soft hyphen, a word joiner, a bidi override (audit T2) */
    CHECK(!pl_proto_emoji_ok("\xe2\x80\x8b\xf0\x9f\x91\x8d", 7));
    CHECK(!pl_proto_emoji_ok("\xe2\x80\x8d", 3));
    CHECK(!pl_proto_emoji_ok("\xef\xb8\x8f", 3));
    CHECK(!pl_proto_emoji_ok("\xc2\xad", 2));
    CHECK(!pl_proto_emoji_ok("\xe2\x81\xa0", 3));
    CHECK(!pl_proto_emoji_ok("\xe2\x80\xae", 3));
    CHECK(!pl_proto_emoji_ok("\xe2\x80\xae" "abc", 6));
    CHECK(!pl_proto_emoji_ok("\xf3\xa0\x81\xa7\xf0\x9f\x91\x8d", 8));                  /* a tag alone */
    /* the code point check itself: every White_Space and Cc, nothing else */
    for (uint32_t cp = 0; cp <= 0x10ffff; cp++) {
        int want = cp <= 0x20 || (cp >= 0x7f && cp <= 0xa0) || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200a) ||
                   cp == 0x2028 || cp == 0x2029 || cp == 0x202f || cp == 0x205f || cp == 0x3000;
        if (pl_utf8_space_or_control(cp) != want) {
            CHECK_EQ(cp, 0);
            break;
        }
    }

    CHECK_EQ(decode("{\"type\":\"pin\",\"conversation\":12,\"seq\":58}", &m, &e), 0);
    CHECK_EQ(m.type, PL_MSG_PIN);
    CHECK_EQ(m.remove, 0);
    pl_msg_release(&m);
    CHECK_EQ(decode("{\"type\":\"pin\",\"conversation\":12,\"seq\":58,\"op\":\"unpin\"}", &m, &e), 0);
    CHECK_EQ(m.remove, 1);
    pl_msg_release(&m);
    CHECK_EQ(decode("{\"type\":\"pin\",\"conversation\":12,\"seq\":58,\"op\":\"pin\"}", &m, &e), 0);
    CHECK_EQ(m.remove, 0);
    pl_msg_release(&m);
    CHECK(refused_naming("{\"type\":\"pin\",\"conversation\":12,\"seq\":58,\"op\":\"remove\"}", "bad_request", "op"));
    CHECK(refused_naming("{\"type\":\"pin\",\"conversation\":12}", "bad_request", "seq"));
    CHECK_EQ(decode("{\"type\":\"pins\",\"req\":\"p\",\"conversation\":12}", &m, &e), 0);
    CHECK_EQ(m.type, PL_MSG_PINS);
    CHECK_EQ(m.conv, 12);
    pl_msg_release(&m);
    CHECK(refused_naming("{\"type\":\"pins\"}", "bad_request", "conversation"));
}

TEST(proto_notify) {
    pl_msg m;
    pl_proto_err e;
    const char *levels[] = {"all", "mentions", "none"};
    for (int i = 0; i < 3; i++) {
        char buf[128];
        snprintf(buf, sizeof buf, "{\"type\":\"notify\",\"req\":14,\"conversation\":12,\"level\":\"%s\"}", levels[i]);
        CHECK_EQ(decode(buf, &m, &e), 0);
        CHECK_EQ(m.type, PL_MSG_NOTIFY);
        CHECK_EQ(m.level, i);
        CHECK_STR(pl_proto_notify_name(m.level), levels[i]);
        pl_msg_release(&m);
    }
    CHECK_EQ(PL_NOTIFY_MENTIONS, 1);
    CHECK(refused_naming("{\"type\":\"notify\",\"conversation\":12}", "bad_request", "level"));
    CHECK(refused_naming("{\"type\":\"notify\",\"conversation\":12,\"level\":\"loud\"}", "bad_request", "level"));
    CHECK(refused_naming("{\"type\":\"notify\",\"conversation\":12,\"level\":2}", "bad_request", "level"));
    CHECK(refused_naming("{\"type\":\"notify\",\"level\":\"all\"}", "bad_request", "conversation"));
}

TEST(proto_encode_ok_and_annotated_event) {
    json_t *req = json_integer(7);
    pl_sbuf s;
    pl_sbuf_init(&s);
    pl_proto_ok(&s, req, 12, 60, 1, 1);
    json_t *o = json_loads(s.p, 0, NULL);
    CHECK(o != NULL);
    CHECK_STR(json_string_value(json_object_get(o, "type")), "ok");
    CHECK_EQ(json_integer_value(json_object_get(o, "req")), 7);
    CHECK_EQ(json_integer_value(json_object_get(o, "conversation")), 12);
    CHECK_EQ(json_integer_value(json_object_get(o, "seq")), 60);
    CHECK(json_is_true(json_object_get(o, "changed")));
    json_decref(o);
    s.len = 0;
    pl_proto_ok(&s, NULL, 12, 0, 0, 0);          /* REST: no type, no seq */
    CHECK_EQ(s.len, strlen("{\"conversation\":12,\"changed\":false}"));
    CHECK(memcmp(s.p, "{\"conversation\":12,\"changed\":false}", s.len) == 0);
    s.len = 0;
    pl_proto_ok(&s, NULL, 12, 0, 1, 1);
    CHECK(memcmp(s.p, "{\"type\":\"ok\",\"conversation\":12,\"changed\":true}", s.len) == 0);
    json_decref(req);
    /* an edit event and a message with its current form */
    pl_event ev = {0};
    ev.conv = 12; ev.seq = 59; ev.id = 5; ev.ts = 6; ev.kind = PL_EV_MESSAGE; ev.sender = 1;
    ev.client_msg_id = "c-43"; ev.body = "agreed @bob"; ev.data = "{\"reply_to\":58,\"mentions\":[2]}";
    ev.ref = 58;
    ev.annot = "\"reply_preview\":{\"seq\":58,\"sender\":2,\"body\":\"shall we\"},\"pinned\":true";
    s.len = 0;
    pl_proto_event(&s, &ev);
    o = json_loads(s.p, 0, NULL);
    CHECK(o != NULL);
    CHECK_EQ(json_integer_value(json_object_get(json_object_get(o, "data"), "reply_to")), 58);
    CHECK_EQ(json_integer_value(json_object_get(json_object_get(o, "reply_preview"), "sender")), 2);
    CHECK(json_is_true(json_object_get(o, "pinned")));
    json_decref(o);
    const char *kinds[] = {"edit", "delete", "reaction", "pin"};
    for (int k = PL_EV_EDIT; k <= PL_EV_PIN; k++) CHECK_STR(pl_proto_kind_name(k), kinds[k - PL_EV_EDIT]);
    pl_sbuf_release(&s);
}

TEST(proto_search) {
    pl_msg m;
    pl_proto_err e;
    CHECK_EQ(decode("{\"type\":\"search\",\"req\":1,\"q\":\"h\\u00e9llo world\",\"conversation\":5,\"sender\":7,"
                    "\"after\":10,\"before\":20,\"mentions\":true,\"cursor\":\"9223372036854775807\",\"limit\":3}",
                    &m, &e), 0);
    CHECK_EQ(m.type, PL_MSG_SEARCH);
    CHECK_STR(m.search.q, "h\xc3\xa9llo world");
    CHECK_EQ(m.search.q_len, 12);
    CHECK_EQ(m.search.conv, 5);
    CHECK_EQ(m.search.sender, 7);
    CHECK_EQ(m.search.after, 10);
    CHECK_EQ(m.search.before, 20);
    CHECK_EQ(m.search.mentions, 1);
    CHECK_EQ(m.search.cursor, INT64_MAX);
    CHECK_EQ(m.search.limit, 3);
    pl_msg_release(&m);
    CHECK_EQ(decode("{\"type\":\"search\",\"q\":\"x\",\"cursor\":null,\"mentions\":null}", &m, &e), 0);
    CHECK_EQ(m.search.limit, PL_PROTO_SEARCH_LIMIT);
    CHECK_EQ(m.search.cursor, 0);
    CHECK_EQ(m.search.mentions, 0);
    CHECK_EQ(m.search.has_after, 0);
    CHECK_EQ(m.search.has_before, 0);
    pl_msg_release(&m);
    /* a before of 0 is a bound (matches nothing), not "left out"; null is */
    CHECK_EQ(decode("{\"type\":\"search\",\"q\":\"x\",\"before\":0}", &m, &e), 0);
    CHECK_EQ(m.search.has_before, 1);
    CHECK_EQ(m.search.before, 0);
    CHECK_EQ(m.search.has_after, 0);
    pl_msg_release(&m);
    CHECK_EQ(decode("{\"type\":\"search\",\"q\":\"x\",\"after\":0,\"before\":null}", &m, &e), 0);
    CHECK_EQ(m.search.has_after, 1);
    CHECK_EQ(m.search.has_before, 0);
    pl_msg_release(&m);
    char big[400];
    snprintf(big, sizeof big, "{\"type\":\"search\",\"q\":\"%0257d\"}", 0);
    const char *const bad[] = {
        "{\"type\":\"search\"}", "{\"type\":\"search\",\"q\":\"\"}", "{\"type\":\"search\",\"q\":\" \\t\"}",
        "{\"type\":\"search\",\"q\":\"a\\u0000b\"}", "{\"type\":\"search\",\"q\":7}",
        "{\"type\":\"search\",\"q\":\"a\",\"limit\":0}", "{\"type\":\"search\",\"q\":\"a\",\"limit\":51}",
        "{\"type\":\"search\",\"q\":\"a\",\"after\":5,\"before\":5}",
        "{\"type\":\"search\",\"q\":\"a\",\"after\":0,\"before\":0}",
        "{\"type\":\"search\",\"q\":\"a\",\"after\":3,\"before\":0}",
        "{\"type\":\"search\",\"q\":\"a\",\"after\":-1}", "{\"type\":\"search\",\"q\":\"a\",\"cursor\":\"0\"}", "{\"type\":\"search\",\"q\":\"a\",\"cursor\":\"01\"}",
        "{\"type\":\"search\",\"q\":\"a\",\"cursor\":\"9223372036854775808\"}",
        "{\"type\":\"search\",\"q\":\"a\",\"cursor\":\"12a\"}", "{\"type\":\"search\",\"q\":\"a\",\"cursor\":12}",
        "{\"type\":\"search\",\"q\":\"a\",\"mentions\":1}", "{\"type\":\"search\",\"q\":\"a\",\"sender\":\"x\"}",
        big};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CHECK_EQ(decode(bad[i], &m, &e), -1);
        CHECK_STR(e.code, "bad_request");
        pl_msg_release(&m);
    }
    big[strlen(big) - 3] = '\0';                           /* 256 bytes: fine */
    strcat(big, "\"}");
    CHECK_EQ(decode(big, &m, &e), 0);
    CHECK_EQ(m.search.q_len, 256);
    pl_msg_release(&m);
    /* invalid UTF-8 (REST decodes %xx into arbitrary bytes) */
    pl_search_args a = {.q = "a\xff", .q_len = 2};
    CHECK_EQ(pl_proto_search_check(&a, &e), -1);
    /* white space of other scripts alone is empty, as spaces are (audit J3) */
    pl_search_args ws = {.q = "\xe3\x80\x80\xc2\xa0 ", .q_len = 6};
    CHECK_EQ(pl_proto_search_check(&ws, &e), -1);
    CHECK_STR(e.message, "\"q\" must not be empty");
    pl_search_args cjk = {.q = "\xe3\x80\x80\xe6\x97\xa5", .q_len = 6};
    CHECK_EQ(pl_proto_search_check(&cjk, &e), 0);
    /* the answer */
    pl_event ev = {.conv = 3, .seq = 4, .id = 99, .ts = 5, .kind = PL_EV_MESSAGE, .sender = 6, .body = "a b"};
    char *snip[] = {"a \x02" "b\x03"};
    pl_sbuf s;
    pl_sbuf_init(&s);
    pl_proto_search_results(&s, &ev, snip, 1, 99);
    CHECK(strstr(s.p, "\"snippet\":\"a \\u0002b\\u0003\"") != NULL);
    CHECK(strstr(s.p, "\"next_cursor\":\"99\"") != NULL);
    CHECK(strncmp(s.p, "\"results\":[{\"conversation\":3,\"seq\":4,", 37) == 0);
    s.len = 0;
    pl_proto_search_results(&s, NULL, NULL, 0, 0);
    CHECK_EQ(s.len, strlen("\"results\":[],\"next_cursor\":null"));
    CHECK(memcmp(s.p, "\"results\":[],\"next_cursor\":null", s.len) == 0);
    pl_sbuf_release(&s);
}

/* end-to-end encryption: send's "kind" (docs/protocol.md "Ciphertext messages") */
TEST(proto_send_kind) {
    pl_msg m;
    pl_proto_err e;
    CHECK_EQ(decode("{\"type\":\"send\",\"conversation\":1,\"client_msg_id\":\"c\",\"kind\":\"ciphertext\","
                    "\"payloads\":[]}", &m, &e), 0);
    CHECK_EQ(m.body_len, 0);                /* no body: the payloads are checked by chat/e2ee.c */
    CHECK(m.body != NULL);
    pl_msg_release(&m);
    CHECK_EQ(decode("{\"type\":\"send\",\"conversation\":1,\"client_msg_id\":\"c\",\"kind\":\"text\","
                    "\"body\":\"b\"}", &m, &e), 0);
    CHECK_EQ(m.body_len, 1);
    pl_msg_release(&m);
    CHECK_EQ(decode("{\"type\":\"send\",\"conversation\":1,\"client_msg_id\":\"c\",\"kind\":\"text\"}", &m, &e), -1);
    pl_msg_release(&m);
    CHECK_EQ(decode("{\"type\":\"send\",\"conversation\":1,\"client_msg_id\":\"c\",\"kind\":7,\"body\":\"b\"}",
                    &m, &e), -1);
    CHECK_STR(e.code, "bad_request");
    CHECK(strstr(e.message, "kind") != NULL);
    pl_msg_release(&m);
}

/* A field given null is the field left out (protocol.md "Requests and
 * replies"), on the WebSocket as on REST (audit M2: a `"body": null`
 * beside attachments or in a ciphertext send was refused, and an auth's
 * `"req": null` was echoed into `ready`). */
TEST(proto_a_null_field_is_a_field_left_out) {
    pl_msg m;
    pl_proto_err e;
    CHECK_EQ(decode("{\"type\":\"send\",\"conversation\":1,\"client_msg_id\":\"c\",\"attachments\":[5],"
                    "\"body\":null}", &m, &e), 0);
    CHECK_EQ(m.nattach, 1);
    CHECK_EQ(m.body_len, 0);
    pl_msg_release(&m);
    CHECK_EQ(decode("{\"type\":\"send\",\"conversation\":1,\"client_msg_id\":\"c\",\"kind\":\"ciphertext\","
                    "\"payloads\":[],\"body\":null}", &m, &e), 0);
    CHECK_EQ(m.body_len, 0);
    pl_msg_release(&m);
    CHECK_EQ(decode("{\"type\":\"auth\",\"req\":null,\"token\":\"t\",\"cursors\":null}", &m, &e), 0);
    CHECK_EQ(m.type, PL_MSG_AUTH);
    CHECK(m.req == NULL && e.req == NULL);
    CHECK(json_object_get(m.root, "req") == NULL);   /* what auth_ready echoes */
    CHECK(m.cursors == NULL);
    pl_msg_release(&m);
    /* a required field given null is missing, as left out */
    CHECK_EQ(decode("{\"type\":\"send\",\"conversation\":1,\"client_msg_id\":\"c\",\"body\":null}", &m, &e), -1);
    CHECK_STR(e.code, "bad_request");
    pl_msg_release(&m);
    CHECK_EQ(decode("{\"type\":null,\"req\":3}", &m, &e), -1);
    CHECK_STR(e.message, "\"type\" must be a string");
    CHECK(e.req != NULL);                   /* a good req is still echoed */
    pl_msg_release(&m);
}

/* ---- the send fast path (proto.c fast_send) agrees with jansson ---------------- */

/* The outcome of one decode as text: fields, or the error. */
static void outcome(const char *s, size_t n, size_t max_body, int fast, char *out, size_t cap, int *was_fast) {
    pl_msg m;
    pl_proto_err e;
    pl_proto_fast = fast;
    int r = pl_proto_decode(s, n, max_body, &m, &e);
    pl_proto_fast = 1;
    *was_fast = !r && !m.root;
    char *req = e.req ? json_dumps(e.req, JSON_ENCODE_ANY | JSON_COMPACT) : NULL;
    if (r) {
        snprintf(out, cap, "ERR %s %s req=%s", e.code, e.message, req ? req : "-");
    } else {
        int o = snprintf(out, cap, "OK t=%d conv=%lld reply=%lld req=%s cmid=", (int)m.type, (long long)m.conv,
                         (long long)m.reply_to, req ? req : "-");
        if (m.type == PL_MSG_SEND) {
            for (size_t i = 0; i < m.cmid_len && o < (int)cap - 4; i++) o += snprintf(out + o, cap - o, "%02x", (unsigned char)m.client_msg_id[i]);
            o += snprintf(out + o, cap - o, " body=");
            for (size_t i = 0; i < m.body_len && o < (int)cap - 4; i++) o += snprintf(out + o, cap - o, "%02x", (unsigned char)m.body[i]);
            /* NUL-terminated like jansson's strings */
            if (m.client_msg_id[m.cmid_len] || m.body[m.body_len]) snprintf(out + o, cap - o, " UNTERMINATED");
        } else if (m.type == PL_MSG_AUTH) {
            o += snprintf(out + o, cap - o, " token=");
            for (size_t i = 0; i < m.token_len && o < (int)cap - 4; i++) o += snprintf(out + o, cap - o, "%02x", (unsigned char)m.token[i]);
            char *cur = m.cursors ? json_dumps(m.cursors, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
            o += snprintf(out + o, cap - o, " cursors=%s", cur ? cur : "-");
            free(cur);
            int64_t conv, seq, sum = 0;           /* what deliver_sync walks */
            void *it = NULL;
            while (m.cursors && pl_proto_cursor(m.cursors, &it, &conv, &seq) == 0) sum += conv * 7 + seq;
            o += snprintf(out + o, cap - o, " walk=%lld", (long long)sum);
            if (m.token[m.token_len]) snprintf(out + o, cap - o, " UNTERMINATED");
        }
    }
    free(req);
    pl_msg_release(&m);
}

static int fast_agrees(const char *s, size_t n, int *was_fast) {
    char a[4096], b[4096];
    int fa, fb;
    outcome(s, n, 100, 1, a, sizeof a, &fa);
    outcome(s, n, 100, 0, b, sizeof b, &fb);
    *was_fast = fa;
    if (strcmp(a, b)) fprintf(stderr, "  differ on %.*s\n    fast:    %s\n    jansson: %s\n", (int)n, s, a, b);
    return strcmp(a, b) == 0 && !fb;
}

/* How many of msgs[0..n) the two paths disagree on, or the fast path
 * takes when it should not (want_fast 0) or leaves when it should take. */
static unsigned paths_differ(const char *const *msgs, size_t n, int want_fast) {
    unsigned bad = 0;
    for (size_t i = 0; i < n; i++) {
        int fast;
        bad += !fast_agrees(msgs[i], strlen(msgs[i]), &fast) || fast != want_fast;
    }
    return bad;
}

/* Mutations of base, every byte replaced by each of subst[0..nsubst) and
 * every prefix: how many of them the two paths disagree on. */
static unsigned mutations_differ(const char *base, const char *subst, size_t nsubst) {
    size_t n = strlen(base);
    char buf[512];
    unsigned bad = 0;
    int fast;
    for (size_t i = 0; i < n; i++) {
        for (size_t k = 0; k < nsubst; k++) {
            memcpy(buf, base, n);
            buf[i] = subst[k];
            bad += !fast_agrees(buf, n, &fast);
        }
        bad += !fast_agrees(base, i, &fast);
    }
    return bad;
}

TEST(proto_send_fast_path_agrees_with_jansson) {
    static const char *const taken[] = {
        "{\"type\":\"send\",\"req\":7,\"conversation\":12,\"client_msg_id\":\"c1\",\"body\":\"hi\"}",
        " {\"body\" : \"x\\n\\\"y\\\\ \\/ \\b\\f\\r\\t\" , \"client_msg_id\":\"a\",\"conversation\":9007199254740991,\"type\":\"send\"}\n",
        "{\"type\":\"send\",\"req\":\"r-\\u00e9\",\"conversation\":1,\"client_msg_id\":\"\\u0041b\",\"body\":\"\\ud83d\\ude00 caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\"}",
        "{\"type\":\"send\",\"conversation\":3,\"client_msg_id\":\"x\",\"body\":\"b\",\"reply_to\":null}",
        "{\"type\":\"send\",\"conversation\":3,\"client_msg_id\":\"x\",\"body\":\"b\",\"reply_to\":41,\"req\":0}",
        "{\"type\":\"send\",\"conversation\":3,\"client_msg_id\":\"0123456789012345678901234567890123456789012345678901234567890123\",\"body\":\"b\"}",
    };
    CHECK_EQ(paths_differ(taken, sizeof taken / sizeof *taken, 1), 0);   /* these are the fast path's */
    static const char *const left[] = {          /* jansson decides, as before */
        "{\"type\":\"send\",\"conversation\":3,\"client_msg_id\":\"x\",\"body\":\"b\",\"kind\":\"text\"}",
        "{\"type\":\"send\",\"conversation\":3,\"client_msg_id\":\"x\",\"body\":\"b\",\"body\":\"c\"}",
        "{\"type\":\"send\",\"conversation\":-3,\"client_msg_id\":\"x\",\"body\":\"b\"}",
        "{\"type\":\"send\",\"conversation\":3.0,\"client_msg_id\":\"x\",\"body\":\"b\"}",
        "{\"type\":\"send\",\"conversation\":1e3,\"client_msg_id\":\"x\",\"body\":\"b\"}",
        "{\"type\":\"send\",\"conversation\":03,\"client_msg_id\":\"x\",\"body\":\"b\"}",
        "{\"type\":\"send\",\"conversation\":9007199254740992,\"client_msg_id\":\"x\",\"body\":\"b\"}",
        "{\"type\":\"send\",\"conversation\":0,\"client_msg_id\":\"x\",\"body\":\"b\"}",
        "{\"type\":\"send\",\"conversation\":3,\"client_msg_id\":\"\",\"body\":\"b\"}",
        "{\"type\":\"send\",\"conversation\":3,\"client_msg_id\":\"x\",\"body\":\"\"}",
        "{\"type\":\"send\",\"conversation\":3,\"client_msg_id\":\"x\",\"body\":\"a\\u0000b\"}",
        "{\"type\":\"send\",\"conversation\":3,\"client_msg_id\":\"x\",\"body\":\"\\ud800\"}",
        "{\"type\":\"send\",\"conversation\":3,\"client_msg_id\":\"x\",\"body\":\"\\udc00x\"}",
        "{\"type\":\"send\",\"conversation\":3,\"client_msg_id\":\"x\",\"body\":\"\xc0\xaf\"}",
        "{\"type\":\"send\",\"conversation\":3,\"client_msg_id\":\"x\",\"body\":\"\xed\xa0\x80\"}",
        "{\"type\":\"send\",\"conversation\":3,\"client_msg_id\":\"x\",\"body\":\"a\tb\"}",
        "{\"type\":\"send\",\"conversation\":3,\"client_msg_id\":\"x\",\"body\":\"b\"} x",
        "{\"type\":\"send\",\"conversation\":3,\"client_msg_id\":\"x\",\"body\":\"b\",}",
        "{\"type\":\"send\",\"conversation\":3,\"client_msg_id\":\"x\"}",
        "{\"type\":\"send\",\"conversation\":3,\"client_msg_id\":\"x\",\"body\":\"b\",\"reply_to\":0}",
        "{\"type\":\"send\",\"conversation\":3,\"client_msg_id\":\"x\",\"body\":\"b\",\"req\":-1}",
        "{\"type\":\"send\",\"conversation\":3,\"client_msg_id\":\"x\",\"body\":\"b\",\"req\":true}",
        "{\"type\":\"sen\\u0064\",\"conversation\":3,\"client_msg_id\":\"x\",\"body\":\"b\"}",
        "{\"ty\\u0070e\":\"send\",\"conversation\":3,\"client_msg_id\":\"x\",\"body\":\"b\"}",
        "{\"type\":\"edit\",\"conversation\":3,\"seq\":1,\"body\":\"b\"}",
        "{\"type\":\"send\",\"conversation\":3,\"client_msg_id\":\"x\",\"body\":\"01234567890123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789\"}",
    };
    CHECK_EQ(paths_differ(left, sizeof left / sizeof *left, 0), 0);
    /* mutations of a taken message: every byte replaced and every prefix */
    static const char subst[] = {'"', '\\', '}', ',', ':', ' ', '0', '9', 'u', 'x', '\x80', '\xff', '\x01', '-', 'e'};
    CHECK_EQ(mutations_differ(taken[2], subst, sizeof subst), 0);
}

/* ---- the auth fast path (proto.c fast_auth) agrees with jansson ---------------- */

TEST(proto_auth_fast_path_agrees_with_jansson) {
    static const char *const taken[] = {
        "{\"type\":\"auth\",\"token\":\"eyJhbGciOi.x-y_z\"}",
        "{\"type\":\"auth\",\"token\":\"t\",\"cursors\":{\"12\":0,\"7\":41,\"9007199254740991\":9007199254740991}}",
        " { \"cursors\" : { } , \"token\" : \"a\\/b\" , \"type\" : \"auth\" } ",
        "{\"token\":\"\",\"type\":\"auth\",\"cursors\":null}",
        "{\"type\":\"auth\",\"token\":\"caf\xc3\xa9\",\"cursors\":{\"12\":3}}",
    };
    CHECK_EQ(paths_differ(taken, sizeof taken / sizeof *taken, 1), 0);   /* these are the fast path's */
    static const char *const left[] = {          /* jansson decides, as before */
        "{\"type\":\"auth\",\"token\":\"t\",\"req\":1}",
        "{\"type\":\"auth\",\"token\":\"t\",\"token\":\"u\"}",
        "{\"type\":\"auth\",\"token\":7}",
        "{\"type\":\"auth\"}",
        "{\"type\":\"auth\",\"token\":\"t\",\"cursors\":{\"1\":1,\"1\":2}}",
        "{\"type\":\"auth\",\"token\":\"t\",\"cursors\":{\"0\":1}}",
        "{\"type\":\"auth\",\"token\":\"t\",\"cursors\":{\"0012\":3}}",
        "{\"type\":\"auth\",\"token\":\"t\",\"cursors\":{\"x\":1}}",
        "{\"type\":\"auth\",\"token\":\"t\",\"cursors\":{\"1\":-1}}",
        "{\"type\":\"auth\",\"token\":\"t\",\"cursors\":{\"1\":1.5}}",
        "{\"type\":\"auth\",\"token\":\"t\",\"cursors\":{\"1\":9007199254740992}}",
        "{\"type\":\"auth\",\"token\":\"t\",\"cursors\":{\"12345678901234567\":1}}",
        "{\"type\":\"auth\",\"token\":\"t\",\"cursors\":[]}",
        "{\"type\":\"auth\",\"token\":\"t\",\"cursors\":{\"1\":1,}}",
        "{\"type\":\"auth\",\"token\":\"a\\u0000b\"}",
        "{\"type\":\"auth\",\"token\":\"t\"} x",
        "{\"type\":\"au\\u0074h\",\"token\":\"t\"}",
        "{\"type\":\"sync\",\"cursors\":{\"1\":1}}",
    };
    CHECK_EQ(paths_differ(left, sizeof left / sizeof *left, 0), 0);
    /* more cursors than the limit: jansson's too_large */
    pl_sbuf b;
    pl_sbuf_init(&b);
    pl_sbuf_adds(&b, "{\"type\":\"auth\",\"token\":\"t\",\"cursors\":{");
    for (int i = 1; i <= 10001; i++) pl_sbuf_printf(&b, "%s\"%d\":1", i > 1 ? "," : "", i);
    pl_sbuf_adds(&b, "}}");
    int fast;
    CHECK(fast_agrees(b.p, b.len, &fast));
    CHECK(!fast);
    pl_sbuf_release(&b);
    /* mutations of a taken message: every byte replaced and every prefix */
    static const char subst[] = {'"', '\\', '}', '{', ',', ':', ' ', '0', '9', 'n', 'x', '\x80', '\x01', '-', 'e'};
    CHECK_EQ(mutations_differ(taken[1], subst, sizeof subst), 0);
}
