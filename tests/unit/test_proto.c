/* test_proto.c — decoding and encoding the client protocol (src/proto). */
#include "test.h"

#include <stdlib.h>

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
    CHECK_EQ(decode("{\"type\":\"delivered\",\"conversation\":4,\"seq\":0}", &m, &e), -1);
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
                         "{\"type\":\"sync\",\"cursors\":{\"0\":1}}", "{\"type\":\"sync\",\"cursors\":{\"\":1}}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CHECK_EQ(decode(bad[i], &m, &e), -1);
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
    /* beyond int64 the JSON parser itself gives up: still refused, cleanly */
    CHECK_EQ(decode("{\"type\":\"read\",\"conversation\":1,\"seq\":18446744073709551616}", &m, &e), -1);
    pl_msg_release(&m);
    CHECK_STR(e.code, "bad_json");
    CHECK_EQ(decode("{\"type\":\"read\",\"conversation\":9007199254740991,\"seq\":9007199254740991}", &m, &e), 0);
    CHECK_EQ(m.seq, 9007199254740991LL);
    pl_msg_release(&m);
    const char *bad_field = NULL;
    int lim;
    CHECK_EQ(pl_proto_paging(9007199254740992LL, 0, 10, &lim, &bad_field), -1);
    CHECK_STR(bad_field, "after");
}
