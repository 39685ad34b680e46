/* jscan.c — top-level field scanner (see jscan.h). */
#include "jscan.h"

#include <string.h>

typedef struct cur { const char *p, *e; } cur;

static void ws(cur *c) {
    while (c->p < c->e && (*c->p == ' ' || *c->p == '\n' || *c->p == '\r' || *c->p == '\t')) c->p++;
}

/* At a '"': returns the raw contents and moves past the closing quote.
 * memchr finds the candidates (the bench reads millions of frames a
 * second: a byte loop here was half of its CPU); a quote preceded by an
 * odd run of backslashes is escaped. */
static int str(cur *c, jstr *out) {
    if (c->p >= c->e || *c->p != '"') return -1;
    const char *s = ++c->p;
    for (;;) {
        const char *q = memchr(c->p, '"', (size_t)(c->e - c->p));
        if (!q) return -1;
        const char *b = q;
        while (b > s && b[-1] == '\\') b--;
        if (((q - b) & 1) == 0) {
            out->p = s;
            out->n = (size_t)(q - s);
            c->p = q + 1;
            return 0;
        }
        c->p = q + 1;
    }
}

/* Skips any value; for numbers and literals leaves them in *raw. */
static int skip(cur *c, jstr *raw) {
    ws(c);
    if (c->p >= c->e) return -1;
    char ch = *c->p;
    if (ch == '"') return str(c, raw);
    if (ch == '{' || ch == '[') {
        int depth = 0;
        while (c->p < c->e) {
            ch = *c->p;
            if (ch == '"') {
                jstr t;
                if (str(c, &t)) return -1;
                continue;
            }
            if (ch == '{' || ch == '[') depth++;
            else if (ch == '}' || ch == ']') {
                if (--depth == 0) { c->p++; return 0; }
            }
            c->p++;
        }
        return -1;
    }
    const char *s = c->p;
    while (c->p < c->e && *c->p != ',' && *c->p != '}' && *c->p != ' ' && *c->p != '\n') c->p++;
    raw->p = s;
    raw->n = (size_t)(c->p - s);
    return raw->n ? 0 : -1;
}

static int64_t num(jstr s, int64_t dflt) {
    if (!s.n) return dflt;
    size_t i = 0;
    int neg = 0;
    if (s.p[0] == '-') { neg = 1; i = 1; }
    if (i >= s.n || s.p[i] < '0' || s.p[i] > '9') return dflt;
    int64_t v = 0;
    for (; i < s.n && s.p[i] >= '0' && s.p[i] <= '9'; i++) v = v * 10 + (s.p[i] - '0');
    return neg ? -v : v;
}

/* Digits at c as a number (no sign, no fraction); -1 if none. */
static int64_t digits(cur *c) {
    const char *s = c->p;
    int64_t v = 0;
    while (c->p < c->e && *c->p >= '0' && *c->p <= '9') v = v * 10 + (*c->p++ - '0');
    return c->p > s ? v : -1;
}

static int lit(cur *c, const char *s, size_t n) {
    if ((size_t)(c->e - c->p) < n || memcmp(c->p, s, n)) return 0;
    c->p += n;
    return 1;
}
#define LIT(c, s) lit((c), (s), sizeof(s) - 1)

/* The event frame both parleyd and the peers write, fields in this order:
 * {"type":"event","conversation":N,"seq":N,"id":"..","ts":N,"kind":"..",
 * "sender":N[,"client_msg_id":".."][,"body":".."]}. Most of what a fan-out
 * run reads; one pass with fixed keys instead of the generic scan. 1 with
 * m filled if p is exactly that, else 0 (the generic scan decides). */
static int event_fast(const char *p, size_t n, jmsg *m) {
    static const char pre[] = "{\"type\":\"event\",\"conversation\":";
    cur c = {p, p + n};
    jstr skipped;
    if (!LIT(&c, pre)) return 0;
    m->type.p = p + 9;                   /* "event" */
    m->type.n = 5;
    if ((m->conversation = digits(&c)) < 0 || !LIT(&c, ",\"seq\":") || (m->seq = digits(&c)) < 0 ||
        !LIT(&c, ",\"id\":") || str(&c, &skipped) || !LIT(&c, ",\"ts\":") || digits(&c) < 0 ||
        !LIT(&c, ",\"kind\":") || str(&c, &m->kind) || !LIT(&c, ",\"sender\":") || digits(&c) < 0)
        return 0;
    if (LIT(&c, ",\"client_msg_id\":") && str(&c, &m->cmid)) return 0;
    if (LIT(&c, ",\"body\":") && str(&c, &m->body)) return 0;
    return c.p + 1 == c.e && *c.p == '}';
}

int jscan_msg(const char *p, size_t n, jmsg *m) {
    memset(m, 0, sizeof *m);
    m->seq = -1;
    m->req = -1;
    if (event_fast(p, n, m)) return 0;
    memset(m, 0, sizeof *m);
    m->seq = -1;
    m->req = -1;
    cur c = {p, p + n};
    ws(&c);
    if (c.p >= c.e || *c.p != '{') return -1;
    c.p++;
    for (;;) {
        ws(&c);
        if (c.p < c.e && *c.p == '}') return 0;
        jstr key, val = {0, 0};
        if (str(&c, &key)) return -1;
        ws(&c);
        if (c.p >= c.e || *c.p != ':') return -1;
        c.p++;
        ws(&c);
        int is_str = c.p < c.e && *c.p == '"';
        if (skip(&c, &val)) return -1;
        switch (key.n) {
        case 3:
            if (!memcmp(key.p, "seq", 3)) m->seq = num(val, -1);
            else if (!memcmp(key.p, "req", 3)) m->req = is_str ? -1 : num(val, -1);
            break;
        case 4:
            if (!memcmp(key.p, "type", 4)) m->type = val;
            else if (!memcmp(key.p, "kind", 4)) m->kind = val;
            else if (!memcmp(key.p, "body", 4)) m->body = val;
            else if (!memcmp(key.p, "code", 4)) m->code = val;
            break;
        case 9:
            if (!memcmp(key.p, "duplicate", 9)) m->duplicate = JSTR_IS(val, "true");
            break;
        case 12:
            if (!memcmp(key.p, "conversation", 12)) m->conversation = num(val, 0);
            break;
        case 13:
            if (!memcmp(key.p, "client_msg_id", 13)) m->cmid = val;
            break;
        }
        ws(&c);
        if (c.p < c.e && *c.p == ',') { c.p++; continue; }
        if (c.p < c.e && *c.p == '}') return 0;
        return -1;
    }
}
