/* fuzz_bus.c — libFuzzer driver for the Redis bus's message codec
 * (src/bus/bus_codec.c): what one node decodes from another over Redis.
 *
 * Checked for every input (one pub/sub payload, any bytes):
 *   1. pl_bus__decode returns 0 or -1, never reads past the payload (an
 *      exact-size heap copy), and names a reason on -1.
 *   2. On 0, what it decoded encodes back into a message that decodes to
 *      the same fields (strings byte for byte): decode(encode(decode(x))) is
 *      a fixed point, so no two nodes can disagree on what was said.
 *   3. Decoded strings are valid UTF-8 without NUL and lengths match.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bus/bus_codec.h"
#include "core/buf.h"
#include "fuzz.h"

static void encode(pl_sbuf *s, const pl_bus_msg *m) {
    switch (m->type) {
    case PL_BM_EVENT:    pl_bus__enc_event(s, m->origin, &m->ev); break;
    case PL_BM_HEAD:     pl_bus__enc_head(s, m->origin, m->head.conv, m->head.seq); break;
    case PL_BM_JOIN:     pl_bus__enc_join(s, m->origin, m->join.user, m->join.conv, m->join.seq); break;
    case PL_BM_REVOKE:   pl_bus__enc_revoke(s, m->origin, m->revoke.user, m->revoke.login); break;
    case PL_BM_TYPING:   pl_bus__enc_typing(s, m->origin, m->typing.conv, m->typing.user, m->typing.start); break;
    case PL_BM_BLOCKED:  pl_bus__enc_blocked(s, m->origin, m->blocked.conv, m->blocked.blocked); break;
    case PL_BM_RECEIPT:  pl_bus__enc_receipt(s, m->origin, &m->receipt); break;
    case PL_BM_PRESENCE: pl_bus__enc_presence(s, m->origin, &m->presence); break;
    case PL_BM_BEAT:     pl_bus__enc_beat(s, m->origin, m->beat.n, m->beat.since); break;
    case PL_BM_ERASED:   pl_bus__enc_erased(s, m->origin); break;
    case PL_BM_KEYS_LOW:
        pl_bus__enc_keys_low(s, m->origin, m->keys_low.user, m->keys_low.device, m->keys_low.count);
        break;
    default:             FZ_CHECK(!"decoded an unknown type");
    }
}

static int same_str(const char *a, const char *b) {
    if (!a || !b) return a == b;
    return strcmp(a, b) == 0;
}

static void check_str(const char *p) {
    if (p) FZ_CHECK(pl_bus__utf8_ok(p, strlen(p)));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *buf = (char *)fz_dup(data, size);
    pl_bus_msg m;
    int64_t *convs = NULL, *convs2 = NULL;
    size_t cap = 0, cap2 = 0;
    const char *why = NULL;
    int r = pl_bus__decode(buf, size, &m, &convs, &cap, &why);
    FZ_CHECK(r == 0 || r == -1);
    if (r) {
        FZ_CHECK(why != NULL);
        goto out;
    }
    if (m.type == PL_BM_EVENT) {
        check_str(m.ev.client_msg_id);
        check_str(m.ev.body);
        check_str(m.ev.data);
        if (m.ev.body) FZ_CHECK(m.ev.body_len == strlen(m.ev.body));
    }
    pl_sbuf s;
    pl_sbuf_init(&s);
    encode(&s, &m);
    char *again = (char *)fz_dup((const uint8_t *)s.p, s.len);
    pl_bus_msg m2;
    FZ_CHECK(pl_bus__decode(again, s.len, &m2, &convs2, &cap2, &why) == 0);
    FZ_CHECK(m2.type == m.type && m2.origin == m.origin);
    switch (m.type) {
    case PL_BM_EVENT:
        FZ_CHECK(m2.ev.conv == m.ev.conv && m2.ev.seq == m.ev.seq && m2.ev.id == m.ev.id &&
                 m2.ev.ts == m.ev.ts && m2.ev.kind == m.ev.kind && m2.ev.sender == m.ev.sender &&
                 m2.ev.subject == m.ev.subject);
        FZ_CHECK(same_str(m2.ev.client_msg_id, m.ev.client_msg_id) && same_str(m2.ev.body, m.ev.body) &&
                 same_str(m2.ev.data, m.ev.data));
        break;
    case PL_BM_PRESENCE:
        FZ_CHECK(m2.presence.user == m.presence.user && m2.presence.status == m.presence.status &&
                 m2.presence.nconvs == m.presence.nconvs);
        for (size_t i = 0; i < m.presence.nconvs; i++) FZ_CHECK(m2.presence.convs[i] == m.presence.convs[i]);
        break;
    case PL_BM_RECEIPT:
        FZ_CHECK(m2.receipt.conv == m.receipt.conv && m2.receipt.user == m.receipt.user &&
                 m2.receipt.delivered == m.receipt.delivered && m2.receipt.read == m.receipt.read &&
                 m2.receipt.unread == m.receipt.unread && m2.receipt.members == m.receipt.members &&
                 m2.receipt.peer == m.receipt.peer);
        break;
    case PL_BM_HEAD:
        FZ_CHECK(m2.head.conv == m.head.conv && m2.head.seq == m.head.seq);
        break;
    case PL_BM_JOIN:
        FZ_CHECK(m2.join.user == m.join.user && m2.join.conv == m.join.conv && m2.join.seq == m.join.seq);
        break;
    case PL_BM_REVOKE:
        FZ_CHECK(m2.revoke.user == m.revoke.user && m2.revoke.login == m.revoke.login);
        break;
    case PL_BM_TYPING:
        FZ_CHECK(m2.typing.conv == m.typing.conv && m2.typing.user == m.typing.user &&
                 m2.typing.start == m.typing.start);
        break;
    case PL_BM_KEYS_LOW:
        FZ_CHECK(m2.keys_low.user == m.keys_low.user && m2.keys_low.device == m.keys_low.device &&
                 m2.keys_low.count == m.keys_low.count);
        break;
    case PL_BM_BLOCKED:
        FZ_CHECK(m2.blocked.conv == m.blocked.conv && m2.blocked.blocked == m.blocked.blocked);
        break;
    case PL_BM_ERASED:                         /* no fields */
        break;
    default:
        FZ_CHECK(m2.beat.n == m.beat.n);
        break;
    }
    free(again);
    pl_sbuf_release(&s);
out:
    free(convs);
    free(convs2);
    free(buf);
    return 0;
}
