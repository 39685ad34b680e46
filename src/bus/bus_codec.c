/* bus_codec.c — the Redis bus's message format (see bus_codec.h). */
#include "bus_codec.h"

#include <string.h>

#include "../core/alloc.h"

/* ---- encoding ------------------------------------------------------------ */

static void enc_head(pl_sbuf *s, int type, int origin) {
    pl_sbuf_reserve(s, 24);
    s->p[s->len++] = (char)type;
    pl_sbuf_addi(s, origin);
}

static void enc_end(pl_sbuf *s) { pl_sbuf_addc(s, '.'); }

static void f_int(pl_sbuf *s, int64_t v) {
    pl_sbuf_addc(s, '|');
    pl_sbuf_addi(s, v);
}

static void f_str(pl_sbuf *s, const char *p, size_t n) {
    if (!p) {
        pl_sbuf_add(s, "|~", 2);
        return;
    }
    pl_sbuf_reserve(s, n + 24);
    pl_sbuf_addc(s, '|');
    pl_sbuf_addu(s, n);
    pl_sbuf_addc(s, ':');
    pl_sbuf_add(s, p, n);
}

void pl_bus__enc_event(pl_sbuf *s, int origin, const pl_event *ev) {
    enc_head(s, PL_BM_EVENT, origin);
    f_int(s, ev->conv);
    f_int(s, ev->seq);
    pl_sbuf_addc(s, '|');
    pl_sbuf_addu(s, ev->id);
    f_int(s, ev->ts);
    f_int(s, ev->kind);
    f_int(s, ev->sender);
    f_int(s, ev->subject);
    f_str(s, ev->client_msg_id, ev->client_msg_id ? strlen(ev->client_msg_id) : 0);
    f_str(s, ev->body, ev->body ? ev->body_len : 0);
    f_str(s, ev->data, ev->data ? strlen(ev->data) : 0);
    f_int(s, ev->ref);
    f_str(s, ev->annot, ev->annot ? strlen(ev->annot) : 0);
    enc_end(s);
}

void pl_bus__enc_head(pl_sbuf *s, int origin, int64_t conv, int64_t seq) {
    enc_head(s, PL_BM_HEAD, origin);
    f_int(s, conv);
    f_int(s, seq);
    enc_end(s);
}

void pl_bus__enc_join(pl_sbuf *s, int origin, int64_t user, int64_t conv, int64_t seq) {
    enc_head(s, PL_BM_JOIN, origin);
    f_int(s, user);
    f_int(s, conv);
    f_int(s, seq);
    enc_end(s);
}

void pl_bus__enc_revoke(pl_sbuf *s, int origin, int64_t user, int64_t login) {
    enc_head(s, PL_BM_REVOKE, origin);
    f_int(s, user);
    f_int(s, login);
    enc_end(s);
}

void pl_bus__enc_keys_low(pl_sbuf *s, int origin, int64_t user, int64_t device, int64_t count) {
    enc_head(s, PL_BM_KEYS_LOW, origin);
    f_int(s, user);
    f_int(s, device);
    f_int(s, count);
    enc_end(s);
}

void pl_bus__enc_typing(pl_sbuf *s, int origin, int64_t conv, int64_t user, int start) {
    enc_head(s, PL_BM_TYPING, origin);
    f_int(s, conv);
    f_int(s, user);
    f_int(s, start ? 1 : 0);
    enc_end(s);
}

void pl_bus__enc_blocked(pl_sbuf *s, int origin, int64_t conv, int blocked) {
    enc_head(s, PL_BM_BLOCKED, origin);
    f_int(s, conv);
    f_int(s, blocked ? 1 : 0);
    enc_end(s);
}

void pl_bus__enc_erased(pl_sbuf *s, int origin) {
    enc_head(s, PL_BM_ERASED, origin);
    enc_end(s);
}

void pl_bus__enc_receipt(pl_sbuf *s, int origin, const pl_bus_receipt *r) {
    enc_head(s, PL_BM_RECEIPT, origin);
    f_int(s, r->conv);
    f_int(s, r->user);
    f_int(s, r->delivered);
    f_int(s, r->read);
    f_int(s, r->unread);
    f_int(s, r->members);
    f_int(s, r->peer);
    f_int(s, r->unread_mentions);               /* appended: older nodes drop it */
    enc_end(s);
}

void pl_bus__enc_presence(pl_sbuf *s, int origin, const pl_bus_presence *p) {
    enc_head(s, PL_BM_PRESENCE, origin);
    f_int(s, p->user);
    f_int(s, p->status);
    f_int(s, p->last_active);
    f_int(s, p->expires);
    f_int(s, p->refresh ? 1 : 0);
    size_t n = p->convs ? p->nconvs : 0;
    f_int(s, (int64_t)n);
    pl_sbuf_reserve(s, n * 12);
    for (size_t i = 0; i < n; i++) f_int(s, p->convs[i]);
    enc_end(s);
}

void pl_bus__enc_beat(pl_sbuf *s, int origin, int64_t n, int64_t since) {
    enc_head(s, PL_BM_BEAT, origin);
    f_int(s, n);
    f_int(s, since);                            /* appended: older nodes drop it */
    enc_end(s);
}

/* ---- decoding ------------------------------------------------------------ */

int pl_bus__utf8_ok(const char *s, size_t n) {
    const unsigned char *p = (const unsigned char *)s, *end = p + n;
    while (p < end) {
        unsigned c = *p;
        if (c >= 0x01 && c < 0x80) { p++; continue; }
        size_t k;
        unsigned lo = 0x80, hi = 0xbf;               /* bounds of the second byte */
        if (c >= 0xc2 && c <= 0xdf) k = 1;
        else if (c >= 0xe0 && c <= 0xef) {
            k = 2;
            if (c == 0xe0) lo = 0xa0;                 /* overlong */
            if (c == 0xed) hi = 0x9f;                 /* surrogates */
        } else if (c >= 0xf0 && c <= 0xf4) {
            k = 3;
            if (c == 0xf0) lo = 0x90;                 /* overlong */
            if (c == 0xf4) hi = 0x8f;                 /* above U+10FFFF */
        } else
            return 0;                                 /* NUL, continuation, 0xc0/c1, 0xf5+ */
        if ((size_t)(end - p) <= k) return 0;
        if (p[1] < lo || p[1] > hi) return 0;
        for (size_t i = 2; i <= k; i++)
            if (p[i] < 0x80 || p[i] > 0xbf) return 0;
        p += k + 1;
    }
    return 1;
}

/* A reader over buf[0..len - 1) (the final "." excluded). Strings are
 * NUL-terminated only once the whole message has decoded: the byte after a
 * string is the next field's "|" (or the final "."), which the next read
 * still needs to see. */
typedef struct rd {
    char       *p, *end;
    const char *why;          /* the first defect found                    */
    char       *term[4];      /* where the strings read so far end (an event
                               * has the most: cmid, body, data, annot)      */
    int         nterm;
} rd;

static int fail(rd *r, const char *why) {
    if (!r->why) r->why = why;
    return -1;
}

static int sep(rd *r) {
    if (r->p >= r->end || *r->p != '|') return fail(r, "missing field");
    r->p++;
    return 0;
}

/* Digits up to "|" or the end; neg allows a leading "-". The magnitude must
 * fit max (as a negative number: max + 1). */
static int num(rd *r, int neg_ok, uint64_t max, uint64_t *mag, int *neg) {
    *neg = 0;
    if (neg_ok && r->p < r->end && *r->p == '-') *neg = 1, r->p++;
    const char *start = r->p;
    uint64_t v = 0;
    while (r->p < r->end && *r->p >= '0' && *r->p <= '9') {
        unsigned d = (unsigned)(*r->p - '0');
        if (v > (UINT64_MAX - d) / 10) return fail(r, "number out of range");
        v = v * 10 + d;
        r->p++;
    }
    if (r->p == start || (r->p < r->end && *r->p != '|')) return fail(r, "bad number");
    if (v > max + (uint64_t)*neg) return fail(r, "number out of range");
    *mag = v;
    return 0;
}

static int r_i64(rd *r, int64_t *out) {
    uint64_t v;
    int neg;
    if (sep(r) || num(r, 1, (uint64_t)INT64_MAX, &v, &neg)) return -1;
    *out = neg ? (int64_t)(0 - v) : (int64_t)v;
    return 0;
}

static int r_u64(rd *r, uint64_t *out) {
    int neg;
    return sep(r) || num(r, 0, UINT64_MAX, out, &neg) ? -1 : 0;
}

static int r_int(rd *r, int *out) {
    int64_t v;
    if (r_i64(r, &v)) return -1;
    if (v < INT32_MIN || v > INT32_MAX) return fail(r, "number out of range");
    *out = (int)v;
    return 0;
}

/* A str or nil; *out points into the buffer (terminated at the end). */
static int r_str(rd *r, char **out, size_t *outlen) {
    if (sep(r)) return -1;
    *out = NULL;
    *outlen = 0;
    if (r->p < r->end && *r->p == '~') {
        r->p++;
        if (r->p < r->end && *r->p != '|') return fail(r, "bad nil");
        return 0;
    }
    uint64_t n = 0;
    const char *start = r->p;
    while (r->p < r->end && *r->p >= '0' && *r->p <= '9') {
        n = n * 10 + (uint64_t)(*r->p - '0');
        r->p++;
        if (n > (uint64_t)(r->end - r->p)) return fail(r, "string past the end");
    }
    if (r->p == start || r->p >= r->end || *r->p != ':') return fail(r, "bad string length");
    r->p++;
    if (n > (uint64_t)(r->end - r->p)) return fail(r, "string past the end");
    char *s = r->p;
    r->p += n;
    if (r->p < r->end && *r->p != '|') return fail(r, "bad string length");
    if (!pl_bus__utf8_ok(s, (size_t)n)) return fail(r, "string not UTF-8 or holds NUL");
    *out = s;
    *outlen = (size_t)n;
    r->term[r->nterm++] = r->p;
    return 0;
}

/* One field of any kind, read and dropped: a field a newer version
 * appended (a number, a str or nil; each as well-formed as if it were
 * known). */
static int skip_field(rd *r) {
    if (sep(r)) return -1;
    if (r->p < r->end && *r->p == '~') {
        r->p++;
        return r->p == r->end || *r->p == '|' ? 0 : fail(r, "bad nil");
    }
    const char *q = r->p;
    while (q < r->end && *q >= '0' && *q <= '9') q++;
    if (q < r->end && *q == ':' && q > r->p) {       /* a str: len ":" octets */
        uint64_t n = 0;
        for (const char *d = r->p; d < q; d++) {
            n = n * 10 + (uint64_t)(*d - '0');
            if (n > (uint64_t)(r->end - q)) return fail(r, "string past the end");
        }
        const char *s = q + 1;
        if (n > (uint64_t)(r->end - s)) return fail(r, "string past the end");
        r->p = (char *)s + n;
        if (r->p < r->end && *r->p != '|') return fail(r, "bad string length");
        return pl_bus__utf8_ok(s, (size_t)n) ? 0 : fail(r, "string not UTF-8 or holds NUL");
    }
    uint64_t v;
    int neg;
    return num(r, 1, (uint64_t)INT64_MAX, &v, &neg);
}

int pl_bus__decode(char *buf, size_t len, pl_bus_msg *m, int64_t **convs, size_t *convs_cap,
                   const char **why) {
    rd r = {buf, buf + len - 1, NULL, {0}, 0};   /* end: the final "." */
    memset(m, 0, sizeof *m);
    if (len < 3) { *why = "too short"; return -1; }
    if (buf[len - 1] != '.') { *why = "no final ."; return -1; }
    m->type = (unsigned char)*r.p++;
    uint64_t origin;
    int neg;
    if (num(&r, 0, INT32_MAX, &origin, &neg)) goto bad;
    m->origin = (int)origin;
    switch (m->type) {
    case PL_BM_EVENT: {
        pl_event *e = &m->ev;
        size_t n1, n3, n4;
        if (r_i64(&r, &e->conv) || r_i64(&r, &e->seq) || r_u64(&r, &e->id) || r_i64(&r, &e->ts) ||
            r_int(&r, &e->kind) || r_i64(&r, &e->sender) || r_i64(&r, &e->subject) ||
            r_str(&r, &e->client_msg_id, &n1) || r_str(&r, &e->body, &e->body_len) ||
            r_str(&r, &e->data, &n3) || r_i64(&r, &e->ref) || r_str(&r, &e->annot, &n4))
            goto bad;
        break;
    }
    case PL_BM_HEAD:
        if (r_i64(&r, &m->head.conv) || r_i64(&r, &m->head.seq)) goto bad;
        break;
    case PL_BM_JOIN:
        if (r_i64(&r, &m->join.user) || r_i64(&r, &m->join.conv) || r_i64(&r, &m->join.seq)) goto bad;
        break;
    case PL_BM_REVOKE:
        if (r_i64(&r, &m->revoke.user) || r_i64(&r, &m->revoke.login)) goto bad;
        break;
    case PL_BM_KEYS_LOW:
        if (r_i64(&r, &m->keys_low.user) || r_i64(&r, &m->keys_low.device) || r_i64(&r, &m->keys_low.count))
            goto bad;
        break;
    case PL_BM_TYPING:
        if (r_i64(&r, &m->typing.conv) || r_i64(&r, &m->typing.user) || r_int(&r, &m->typing.start) ||
            (m->typing.start != 0 && m->typing.start != 1))    /* a flag: exactly 0 or 1 */
            goto bad;
        break;
    case PL_BM_BLOCKED:
        if (r_i64(&r, &m->blocked.conv) || r_int(&r, &m->blocked.blocked) ||
            (m->blocked.blocked != 0 && m->blocked.blocked != 1))
            goto bad;
        break;
    case PL_BM_RECEIPT: {
        pl_bus_receipt *c = &m->receipt;
        if (r_i64(&r, &c->conv) || r_i64(&r, &c->user) || r_i64(&r, &c->delivered) ||
            r_i64(&r, &c->read) || r_i64(&r, &c->unread) || r_i64(&r, &c->members) || r_i64(&r, &c->peer))
            goto bad;
        c->unread_mentions = -1;                /* an older node's: not sent */
        if (r.p < r.end && *r.p == '|' && r_i64(&r, &c->unread_mentions)) goto bad;
        if (c->unread_mentions < -1) { fail(&r, "bad unread_mentions"); goto bad; }
        break;
    }
    case PL_BM_PRESENCE: {
        pl_bus_presence *p = &m->presence;
        int64_t n;
        if (r_i64(&r, &p->user) || r_int(&r, &p->status) || r_i64(&r, &p->last_active) ||
            r_i64(&r, &p->expires) || r_int(&r, &p->refresh) || r_i64(&r, &n))
            goto bad;
        if (p->status < 0 || p->status > 2) { fail(&r, "bad status"); goto bad; }  /* offline/away/online */
        if (p->refresh < 0 || p->refresh > 1) { fail(&r, "bad refresh"); goto bad; }
        /* each conversation takes at least 2 bytes ("|" and a digit): a
         * count beyond that is a lie, refused before allocating for it */
        if (n < 0 || (uint64_t)n > (uint64_t)(r.end - r.p) / 2) { fail(&r, "bad count"); goto bad; }
        if ((size_t)n > *convs_cap) {
            size_t cap = *convs_cap ? *convs_cap : 16;
            while (cap < (size_t)n) cap *= 2;
            *convs = pl_realloc(*convs, cap * sizeof **convs);
            *convs_cap = cap;
        }
        for (int64_t i = 0; i < n; i++)
            if (r_i64(&r, &(*convs)[i])) goto bad;
        p->node = m->origin;
        p->convs = n ? *convs : NULL;
        p->nconvs = (size_t)n;
        break;
    }
    case PL_BM_ERASED:
        break;
    case PL_BM_BEAT:
        if (r_i64(&r, &m->beat.n)) goto bad;
        if (r.p < r.end && *r.p == '|' && r_i64(&r, &m->beat.since)) goto bad;   /* else 0 (memset) */
        if (m->beat.since < 0) { fail(&r, "bad since"); goto bad; }
        break;
    default:
        fail(&r, "unknown type");
        goto bad;
    }
    while (r.p < r.end && *r.p == '|')             /* fields a newer version added: dropped */
        if (skip_field(&r)) goto bad;
    if (r.p != r.end) { fail(&r, "trailing bytes"); goto bad; }
    for (int i = 0; i < r.nterm; i++) *r.term[i] = '\0';
    return 0;
bad:
    *why = r.why ? r.why : "malformed";
    return -1;
}
