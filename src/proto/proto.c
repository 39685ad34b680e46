/* proto.c — decoding and encoding the client protocol (see proto.h):
 * pl_proto_decode with the send and auth fast paths, the frames of every
 * message but the actions (proto_actions.c) and search (proto_search.c),
 * the fields of a send, and every encoder of what the server sends (events,
 * sent, ok, error). The per-message path (a send in, its sent and events
 * out) stays in this file, static, so that it inlines. */
#include "proto_int.h"

#include "../core/utf8.h"

#include <stdlib.h>
#include <string.h>

static int check_cursors(json_t *c, pl_proto_err *e) {
    if (!json_is_object(c)) return fail(e, "bad_request", "%s", "\"cursors\" must be an object");
    if (json_object_size(c) > 10000) return fail(e, "too_large", "%s", "too many cursors");
    const char *k;
    json_t *v;
    json_object_foreach(c, k, v) {
        size_t kl = strlen(k);
        int digits = kl > 0 && kl <= 16 && k[0] != '0';   /* as a path id: no leading zero */
        for (size_t i = 0; digits && i < kl; i++) digits = k[i] >= '0' && k[i] <= '9';
        long long id = digits ? strtoll(k, NULL, 10) : 0;
        if (id <= 0 || id > PL_JSON_INT_MAX)
            return fail(e, "bad_request", "%s", "cursor keys must be conversation ids");
        if (!json_safe(v))
            return fail(e, "bad_request", "%s", "cursor values must be non-negative integers (at most 2^53-1)");
    }
    return 0;
}

int pl_proto_paging(int64_t after, int64_t before, int64_t limit, int *limit_out, const char **bad) {
    if (after < 0 || after > PL_JSON_INT_MAX) { *bad = "after"; return -1; }
    if (before < 0 || before > PL_JSON_INT_MAX) { *bad = "before"; return -1; }
    if (limit == 0) limit = 50;
    if (limit < 0 || limit > PL_STORE_PAGE_MAX) { *bad = "limit"; return -1; }
    *limit_out = (int)limit;            /* an empty window (before <= after + 1) is fine */
    return 0;
}

int pl_proto_body(json_t *o, size_t max_body, const char *too_long, const char **p, size_t *n, pl_proto_err *e) {
    if (get_str(o, "body", p, n, e)) return -1;
    if (*n > max_body) return fail(e, too_long, "%s", "\"body\" is too long");
    if (*n == 0) return fail(e, "bad_request", "%s", "\"body\" must not be empty");
    if (memchr(*p, 0, *n)) return fail(e, "bad_request", "%s", "\"body\" must not contain NUL");
    return 0;
}

int pl_proto_attachments(json_t *o, int64_t *out, int *n, pl_proto_err *e) {
    json_t *a = json_object_get(o, "attachments");
    *n = 0;
    if (!a || json_is_null(a)) return 0;
    if (!json_is_array(a) || json_array_size(a) > PL_PROTO_ATTACH_MAX)
        return fail(e, "bad_request", "%s", "\"attachments\" must be an array of at most 10 media ids");
    size_t i;
    json_t *v;
    json_array_foreach(a, i, v) {
        json_int_t id = json_is_integer(v) ? json_integer_value(v) : 0;
        if (id <= 0 || id > PL_JSON_INT_MAX)
            return fail(e, "bad_request", "%s", "\"attachments\" must hold media ids");
        for (int k = 0; k < *n; k++)
            if (out[k] == id) return fail(e, "bad_request", "%s", "\"attachments\" names a media twice");
        out[(*n)++] = id;
    }
    return 0;
}

int pl_proto_send_kind(json_t *o, int *ciphertext, pl_proto_err *e) {
    json_t *k = json_object_get(o, "kind");
    *ciphertext = 0;
    if (!k || json_is_null(k)) return 0;
    if (json_is_string(k) && strcmp(json_string_value(k), "text") == 0) return 0;
    if (json_is_string(k) && strcmp(json_string_value(k), "ciphertext") == 0) {
        *ciphertext = 1;
        if (json_object_get(o, "body"))   /* the text is in the payloads only */
            return fail(e, "bad_request", "%s", "a ciphertext message has no \"body\"");
        return 0;
    }
    return fail(e, "bad_request", "%s", "\"kind\" must be \"text\" or \"ciphertext\"");
}

int pl_proto_reply_to(json_t *o, int64_t *out, pl_proto_err *e) {
    json_t *v = json_object_get(o, "reply_to");
    *out = 0;
    if (!v || json_is_null(v)) return 0;
    return get_id(o, "reply_to", out, e);
}

/* ---- the send fast path ------------------------------------------------------
 * Every 1:1 and group message is a `send`; parsing it with jansson (an object,
 * its hash table, a value per member) was a third of the event loop's time
 * at the 1:1 peak (docs/benchmarks.md "Issue 11: decoding sends without
 * jansson"). fast_send reads the common shape in one pass with two
 * allocations: a flat object of type "send", conversation, client_msg_id,
 * body, optional req and reply_to, plain integers, strings in valid UTF-8
 * with the usual escapes. It only ever ACCEPTS: anything else (another key,
 * a duplicate, a number with a sign, fraction or exponent, \u0000, a lone
 * surrogate, a field out of range...) returns 0 and the message goes
 * through jansson, which gives the answer and the error it always gave.
 * test_proto.c checks both paths agree. */

int pl_proto_fast = 1;                  /* tests turn it off to compare */

typedef struct fs_str { const char *p; size_t n; int esc; } fs_str;

static const char *fs_ws(const char *p, const char *end) {
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) p++;
    return p;
}

static int fs_hex4(const char *p, unsigned *v) {
    *v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        unsigned d = c >= '0' && c <= '9' ? (unsigned)(c - '0') : c >= 'a' && c <= 'f' ? (unsigned)(c - 'a' + 10)
                   : c >= 'A' && c <= 'F' ? (unsigned)(c - 'A' + 10) : 16u;
        if (d > 15) return -1;
        *v = *v << 4 | d;
    }
    return 0;
}

/* A string at *pp (after its opening quote); its decoded length in s->n.
 * -1: not one fast_send takes. */
static int fs_string(const char **pp, const char *end, fs_str *s) {
    const char *p = *pp;
    s->p = p;
    s->n = 0;
    s->esc = 0;
    while (p < end && *p != '"') {
        const char *q = p;                   /* a run of plain ASCII */
        while (q < end && (unsigned char)*q >= 0x20 && (unsigned char)*q < 0x80 && *q != '"' && *q != '\\') q++;
        s->n += (size_t)(q - p);
        p = q;
        if (p >= end || *p == '"') break;
        if (*p == '\\') {
            if (end - p < 2) return -1;
            s->esc = 1;
            char c = p[1];
            if (c == 'u') {
                unsigned v, w;
                if (end - p < 6 || fs_hex4(p + 2, &v)) return -1;
                if (v == 0 || (v >= 0xDC00 && v <= 0xDFFF)) return -1;
                if (v >= 0xD800 && v <= 0xDBFF) {           /* a pair */
                    if (end - p < 12 || p[6] != '\\' || p[7] != 'u' || fs_hex4(p + 8, &w) ||
                        w < 0xDC00 || w > 0xDFFF)
                        return -1;
                    s->n += 4;
                    p += 12;
                    continue;
                }
                s->n += v < 0x80 ? 1 : v < 0x800 ? 2 : 3;
                p += 6;
                continue;
            }
            if (!strchr("\"\\/bfnrt", c) || !c) return -1;
            s->n++;
            p += 2;
            continue;
        }
        if ((unsigned char)*p < 0x20) return -1;   /* a control character */
        q = p;                               /* a run of non-ASCII: whole code points */
        while (q < end && (unsigned char)*q >= 0x80) q++;
        if (!pl_utf8_valid((const uint8_t *)p, (size_t)(q - p))) return -1;
        s->n += (size_t)(q - p);
        p = q;
    }
    if (p >= end) return -1;
    *pp = p + 1;
    return 0;
}

/* Writes the decoded string to out (s->n bytes). */
static void fs_decode(const fs_str *s, char *out) {
    if (!s->esc) {
        memcpy(out, s->p, s->n);
        return;
    }
    const char *p = s->p;
    for (size_t o = 0; o < s->n;) {
        if (*p != '\\') { out[o++] = *p++; continue; }
        char c = p[1];
        if (c != 'u') {
            out[o++] = c == 'b' ? '\b' : c == 'f' ? '\f' : c == 'n' ? '\n' : c == 'r' ? '\r' : c == 't' ? '\t' : c;
            p += 2;
            continue;
        }
        unsigned v, w;
        fs_hex4(p + 2, &v);
        p += 6;
        if (v >= 0xD800 && v <= 0xDBFF) {
            fs_hex4(p + 2, &w);
            p += 6;
            v = 0x10000 + ((v - 0xD800) << 10) + (w - 0xDC00);
        }
        if (v < 0x80) out[o++] = (char)v;
        else if (v < 0x800) { out[o++] = (char)(0xC0 | v >> 6); out[o++] = (char)(0x80 | (v & 0x3F)); }
        else if (v < 0x10000) {
            out[o++] = (char)(0xE0 | v >> 12);
            out[o++] = (char)(0x80 | (v >> 6 & 0x3F));
            out[o++] = (char)(0x80 | (v & 0x3F));
        } else {
            out[o++] = (char)(0xF0 | v >> 18);
            out[o++] = (char)(0x80 | (v >> 12 & 0x3F));
            out[o++] = (char)(0x80 | (v >> 6 & 0x3F));
            out[o++] = (char)(0x80 | (v & 0x3F));
        }
    }
}

/* A JSON-safe integer 0..2^53-1 without sign, fraction or exponent; -1 if not. */
static int64_t fs_int(const char **pp, const char *end) {
    const char *p = *pp;
    if (p >= end || *p < '0' || *p > '9' || (*p == '0' && p + 1 < end && p[1] >= '0' && p[1] <= '9')) return -1;
    int64_t v = 0;
    int digits = 0;
    while (p < end && *p >= '0' && *p <= '9') {
        if (++digits > 16) return -1;
        v = v * 10 + (*p++ - '0');
    }
    if (p < end && (*p == '.' || *p == 'e' || *p == 'E')) return -1;
    if (v > PL_JSON_INT_MAX) return -1;
    *pp = p;
    return v;
}

/* At a member of an object (after '{' or ','): reads its key, which has no
 * escapes, and the colon; *pp is left at the value. -1: not a shape the
 * fast paths take. */
static int fs_key(const char **pp, const char *end, const char **k, size_t *kl) {
    const char *p = fs_ws(*pp, end);
    if (p >= end || *p++ != '"') return -1;
    *k = p;
    while (p < end && *p != '"' && *p != '\\') p++;
    if (p >= end || *p != '"') return -1;
    *kl = (size_t)(p - *k);
    p = fs_ws(p + 1, end);
    if (p >= end || *p++ != ':') return -1;
    p = fs_ws(p, end);
    if (p >= end) return -1;
    *pp = p;
    return 0;
}

/* After a member's value: 1 at ',' (another member follows), 0 at the
 * object's '}', -1 otherwise; *pp is left past it. */
static int fs_next(const char **pp, const char *end) {
    const char *p = fs_ws(*pp, end);
    if (p >= end) return -1;
    *pp = p + 1;
    return *p == ',' ? 1 : *p == '}' ? 0 : -1;
}

/* 1: m holds the send; 0: not taken (nothing allocated), use jansson. */
static int fast_send(const char *data, size_t len, size_t max_body, pl_msg *m) {
    enum { F_TYPE = 1, F_REQ = 2, F_CONV = 4, F_CMID = 8, F_BODY = 16, F_REPLY = 32 };
    const char *p = data, *end = data + len;
    fs_str cmid = {0}, body = {0}, sreq = {0};
    int64_t conv = 0, reply = 0, ireq = -1;
    unsigned seen = 0;
    p = fs_ws(p, end);
    if (p >= end || *p++ != '{') return 0;
    for (int more = 1; more;) {
        const char *k;
        size_t kl;
        if (fs_key(&p, end, &k, &kl)) return 0;
        unsigned f = kl == 4 && !memcmp(k, "type", 4) ? F_TYPE : kl == 3 && !memcmp(k, "req", 3) ? F_REQ
                   : kl == 12 && !memcmp(k, "conversation", 12) ? F_CONV
                   : kl == 13 && !memcmp(k, "client_msg_id", 13) ? F_CMID
                   : kl == 4 && !memcmp(k, "body", 4) ? F_BODY : kl == 8 && !memcmp(k, "reply_to", 8) ? F_REPLY : 0;
        if (!f || (seen & f)) return 0;
        seen |= f;
        fs_str tmp;
        switch (f) {
        case F_TYPE:
            if (*p++ != '"' || fs_string(&p, end, &tmp) || tmp.esc || tmp.n != 4 || memcmp(tmp.p, "send", 4))
                return 0;
            break;
        case F_REQ:
            if (*p == '"') {
                p++;
                if (fs_string(&p, end, &sreq) || sreq.n > PL_PROTO_REQ_MAX - 2) return 0;
            } else if ((ireq = fs_int(&p, end)) < 0) {
                return 0;
            }
            break;
        case F_CONV:
            if ((conv = fs_int(&p, end)) <= 0) return 0;
            break;
        case F_CMID:
            if (*p++ != '"' || fs_string(&p, end, &cmid) || cmid.n < 1 || cmid.n > PL_PROTO_CMID_MAX) return 0;
            break;
        case F_BODY:
            if (*p++ != '"' || fs_string(&p, end, &body) || body.n < 1 || body.n > max_body) return 0;
            break;
        case F_REPLY:
            if (end - p >= 4 && !memcmp(p, "null", 4)) { p += 4; reply = 0; }
            else if ((reply = fs_int(&p, end)) <= 0) return 0;
            break;
        }
        if ((more = fs_next(&p, end)) < 0) return 0;
    }
    if (fs_ws(p, end) != end || (seen & (F_TYPE | F_CONV | F_CMID | F_BODY)) != (F_TYPE | F_CONV | F_CMID | F_BODY))
        return 0;
    char *own = malloc(cmid.n + body.n + 2);
    if (!own) return 0;
    fs_decode(&cmid, own);
    own[cmid.n] = '\0';
    fs_decode(&body, own + cmid.n + 1);
    own[cmid.n + 1 + body.n] = '\0';
    if (seen & F_REQ) {
        if (sreq.p) {
            char *r = malloc(sreq.n + 1);
            if (!r) { free(own); return 0; }
            fs_decode(&sreq, r);
            m->req = json_stringn_nocheck(r, sreq.n);
            free(r);
        } else {
            m->req = json_integer(ireq);
        }
        if (!m->req) { free(own); return 0; }
    }
    m->type = PL_MSG_SEND;
    m->own = own;
    m->conv = conv;
    m->client_msg_id = own;
    m->cmid_len = cmid.n;
    m->body = own + cmid.n + 1;
    m->body_len = body.n;
    m->reply_to = reply;
    return 1;
}

/* ---- the auth fast path ------------------------------------------------------
 * Every connection's first message, and in a reconnect storm 19,000 of them
 * at once: jansson's decode of it was 12 % of the loop's time while a storm
 * was being caught up (docs/benchmarks.md "Issue 11: reconnect storm,
 * fourth session"). fast_auth reads exactly {"type":"auth","token":"..",
 * "cursors":{"<conversation>":<seq>,..} or null} in any order, cursors
 * optional, with fast_send's strings and integers; keys of cursors plain
 * digits as check_cursors wants them, no duplicates, at most 10,000. Like
 * fast_send it only ever ACCEPTS (anything else, "req" included, goes to
 * jansson), and m->root stays NULL: the token is in m->own, the cursors
 * object is m's own reference (pl_msg_release drops it). */
static int fast_auth(const char *data, size_t len, pl_msg *m) {
    enum { F_TYPE = 1, F_TOKEN = 2, F_CURSORS = 4 };
    const char *p = data, *end = data + len;
    fs_str tok = {0};
    json_t *cursors = NULL;
    unsigned seen = 0;
    p = fs_ws(p, end);
    if (p >= end || *p++ != '{') return 0;
    for (int more = 1; more;) {
        const char *k;
        size_t kl;
        if (fs_key(&p, end, &k, &kl)) goto no;
        unsigned f = kl == 4 && !memcmp(k, "type", 4) ? F_TYPE : kl == 5 && !memcmp(k, "token", 5) ? F_TOKEN
                   : kl == 7 && !memcmp(k, "cursors", 7) ? F_CURSORS : 0;
        if (!f || (seen & f)) goto no;
        seen |= f;
        fs_str tmp;
        if (f == F_TYPE) {
            if (*p++ != '"' || fs_string(&p, end, &tmp) || tmp.esc || tmp.n != 4 || memcmp(tmp.p, "auth", 4))
                goto no;
        } else if (f == F_TOKEN) {
            if (*p++ != '"' || fs_string(&p, end, &tok)) goto no;
        } else if (end - p >= 4 && !memcmp(p, "null", 4)) {
            p += 4;
        } else {
            if (*p++ != '{' || !(cursors = json_object())) goto no;
            p = fs_ws(p, end);
            int cmore = 1;
            if (p < end && *p == '}') {
                p++;
                cmore = 0;
            }
            while (cmore) {                  /* "<conversation id>": <seq> */
                const char *ck;
                size_t cl, digits = 0;
                if (fs_key(&p, end, &ck, &cl) || cl < 1 || cl > 16 || ck[0] == '0') goto no;
                while (digits < cl && ck[digits] >= '0' && ck[digits] <= '9') digits++;
                if (digits != cl) goto no;
                char key[17];
                memcpy(key, ck, cl);
                key[cl] = '\0';
                long long id = strtoll(key, NULL, 10);
                int64_t v = fs_int(&p, end);
                if (id <= 0 || id > PL_JSON_INT_MAX || v < 0 || json_object_get(cursors, key) ||
                    json_object_size(cursors) >= 10000 ||
                    json_object_set_new_nocheck(cursors, key, json_integer(v)) ||
                    (cmore = fs_next(&p, end)) < 0)
                    goto no;
            }
        }
        if ((more = fs_next(&p, end)) < 0) goto no;
    }
    if (fs_ws(p, end) != end || (seen & (F_TYPE | F_TOKEN)) != (F_TYPE | F_TOKEN)) goto no;
    char *own = malloc(tok.n + 1);
    if (!own) goto no;
    fs_decode(&tok, own);
    own[tok.n] = '\0';
    m->type = PL_MSG_AUTH;
    m->own = own;
    m->token = own;
    m->token_len = tok.n;
    m->cursors = cursors;
    return 1;
no:
    if (cursors) json_decref(cursors);
    return 0;
}

int pl_proto_decode(const char *data, size_t len, size_t max_body, pl_msg *m, pl_proto_err *e) {
    memset(m, 0, sizeof *m);
    memset(e, 0, sizeof *e);
    if (pl_proto_fast && fast_send(data, len, max_body, m)) {
        e->req = m->req;
        return 0;
    }
    if (pl_proto_fast && fast_auth(data, len, m)) return 0;
    json_error_t jerr;
    m->root = json_loadb(data, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL | JSON_DECODE_ANY, &jerr);
    if (!m->root && json_error_code(&jerr) == json_error_duplicate_key)
        return fail(e, "bad_json", "%s", "message repeats a key");
    if (!m->root && json_error_code(&jerr) == json_error_stack_overflow)
        return fail(e, "bad_json", "%s", "message nests arrays and objects deeper than 2048 levels");
    if (!m->root && json_error_code(&jerr) == json_error_null_byte_in_key)
        return fail(e, "bad_json", "%s", "a key contains NUL");
    if (!m->root && json_error_code(&jerr) == json_error_numeric_overflow)   /* valid JSON, too big for us */
        return fail(e, "bad_request", "%s", "a number is out of range");
    if (!m->root)            /* e.g. half of a surrogate pair: an object, but not JSON */
        return fail(e, "bad_json", "%s", "message is not valid JSON (UTF-8 text; an escaped character must be whole)");
    if (!json_is_object(m->root))
        return fail(e, "bad_json", "%s", "message must be a JSON object");
    /* A field given null is the field left out (protocol.md, as REST's
     * api.c does): taken out once here, so no reader of the message (the
     * decoders below, auth_ready's req) can take a null for a value
     * (audit M2: `"body": null` beside attachments or in a ciphertext
     * send was refused, an auth's `"req": null` came back in `ready`). */
    const char *key;
    json_t *val;
    void *it;
    json_object_foreach_safe(m->root, it, key, val) {
        if (json_is_null(val)) json_object_del(m->root, key);
    }
    json_t *req = json_object_get(m->root, "req");
    if (req) {
        if (!json_is_string(req) && !json_is_integer(req))
            return fail(e, "bad_request", "%s", "\"req\" must be a string or an integer");
        if (json_is_integer(req) && (json_integer_value(req) < 0 || json_integer_value(req) > 9007199254740991LL))
            return fail(e, "bad_request", "%s", "\"req\" must be an integer from 0 to 2^53 - 1");
        if (json_is_string(req) && json_string_length(req) > PL_PROTO_REQ_MAX - 2)
            return fail(e, "bad_request", "%s", "\"req\" is too long");
        /* NUL is let through the JSON parser so bodies get a clear error;
         * a req with one is refused and never echoed back */
        if (json_is_string(req) && memchr(json_string_value(req), 0, json_string_length(req)))
            return fail(e, "bad_request", "%s", "\"req\" must not contain NUL");
        m->req = e->req = req;
    }
    json_t *t = json_object_get(m->root, "type");
    if (!t || !json_is_string(t))
        return fail(e, "bad_request", "%s", "\"type\" must be a string");
    if (memchr(json_string_value(t), 0, json_string_length(t)))
        return fail(e, "bad_request", "%s", "\"type\" must not contain NUL");
    const char *type = json_string_value(t);
    if (strcmp(type, "send") == 0) {
        m->type = PL_MSG_SEND;
        if (get_id(m->root, "conversation", &m->conv, e)) return -1;
        if (get_str(m->root, "client_msg_id", &m->client_msg_id, &m->cmid_len, e)) return -1;
        if (m->cmid_len < 1 || m->cmid_len > PL_PROTO_CMID_MAX || memchr(m->client_msg_id, 0, m->cmid_len))
            return fail(e, "bad_request", "%s",
                        m->cmid_len >= 1 && m->cmid_len <= PL_PROTO_CMID_MAX ? "\"client_msg_id\" must not contain NUL"
                                                                            : "\"client_msg_id\" must be 1-64 bytes");
        int ciphertext;                   /* end-to-end encryption: payloads, no body */
        if (pl_proto_send_kind(m->root, &ciphertext, e)) return -1;
        if (pl_proto_attachments(m->root, m->attach, &m->nattach, e)) return -1;   /* media */
        json_t *bv = json_object_get(m->root, "body");
        if (ciphertext && m->nattach) {
            return fail(e, "bad_request", "%s", "a ciphertext message carries no attachments");
        } else if (ciphertext || (m->nattach && (!bv || (json_is_string(bv) && !json_string_length(bv))))) {
            m->body = "";                 /* attachments alone need no text */
            m->body_len = 0;
        } else if (pl_proto_body(m->root, max_body, "too_large", &m->body, &m->body_len, e)) {
            return -1;
        }
        return pl_proto_reply_to(m->root, &m->reply_to, e);
    }
    if (strcmp(type, "auth") == 0) {
        m->type = PL_MSG_AUTH;
        if (get_str(m->root, "token", &m->token, &m->token_len, e)) return -1;
        json_t *c = json_object_get(m->root, "cursors");
        if (c && !json_is_null(c)) {
            if (check_cursors(c, e)) return -1;
            m->cursors = c;
        }
        return 0;
    }
    if (strcmp(type, "sync") == 0) {
        m->type = PL_MSG_SYNC;
        json_t *c = json_object_get(m->root, "cursors");
        if (!c) return fail(e, "bad_request", "%s", "\"cursors\" is required");
        if (check_cursors(c, e)) return -1;
        m->cursors = c;
        return 0;
    }
    if (strcmp(type, "history") == 0) {
        m->type = PL_MSG_HISTORY;
        if (get_id(m->root, "conversation", &m->conv, e)) return -1;
        int64_t limit;
        if (get_opt_seq(m->root, "after", &m->after, e) || get_opt_seq(m->root, "before", &m->before, e) ||
            get_opt_seq(m->root, "limit", &limit, e))
            return -1;
        const char *bad;
        if (pl_proto_paging(m->after, m->before, limit, &m->limit, &bad))
            return fail(e, "bad_request", "\"%s\" is out of range", bad);
        return 0;
    }
    if (strcmp(type, "ping") == 0) {
        m->type = PL_MSG_PING;
        return 0;
    }
    if (strcmp(type, "heartbeat") == 0) {
        m->type = PL_MSG_HEARTBEAT;
        return 0;
    }
    if (strcmp(type, "delivered") == 0 || strcmp(type, "read") == 0) {
        m->type = type[0] == 'd' ? PL_MSG_DELIVERED : PL_MSG_READ;
        if (get_id(m->root, "conversation", &m->conv, e)) return -1;
        return get_seq(m->root, "seq", &m->seq, e);   /* 0: below every cursor, a no-op */
    }
    if (strcmp(type, "receipts") == 0) {
        m->type = PL_MSG_RECEIPTS;
        if (get_id(m->root, "conversation", &m->conv, e)) return -1;
        return get_opt_seq(m->root, "seq", &m->seq, e);
    }
    if (strcmp(type, "typing") == 0) {
        m->type = PL_MSG_TYPING;
        if (get_id(m->root, "conversation", &m->conv, e)) return -1;
        const char *st = json_string_value(json_object_get(m->root, "state"));
        if (!st || (strcmp(st, "start") && strcmp(st, "stop")))
            return fail(e, "bad_request", "%s", "\"state\" must be \"start\" or \"stop\"");
        m->typing = st[2] == 'a';
        return 0;
    }
    if (strcmp(type, "presence") == 0) {
        m->type = PL_MSG_PRESENCE;
        const char *st = json_string_value(json_object_get(m->root, "status"));
        if (!st || (strcmp(st, "online") && strcmp(st, "away")))
            return fail(e, "bad_request", "%s", "\"status\" must be \"online\" or \"away\"");
        m->away = st[0] == 'a';
        return 0;
    }
    if (strcmp(type, "presence_query") == 0) {
        m->type = PL_MSG_PRESENCE_QUERY;
        json_t *u = json_object_get(m->root, "users");
        if (!json_is_array(u)) return fail(e, "bad_request", "%s", "\"users\" must be an array of user ids");
        if (json_array_size(u) > PL_PROTO_PRESENCE_QUERY_MAX)
            return fail(e, "too_large", "%s", "at most 200 users per presence_query");
        size_t i;
        json_t *v;
        json_array_foreach(u, i, v) if (!json_safe(v))   /* 0 is an id no user has: left out */
            return fail(e, "bad_request", "%s", "\"users\" must be an array of user ids");
        m->users = u;
        return 0;
    }
    if (strcmp(type, "search") == 0) return pl_proto__decode_search(m, e);
    return pl_proto__decode_action(type, max_body, m, e);
}

void pl_msg_release(pl_msg *m) {
    if (m->root) {
        json_decref(m->root);
    } else {                                   /* the fast paths' own */
        if (m->req) json_decref(m->req);
        if (m->cursors) json_decref(m->cursors);
    }
    free(m->own);
    m->root = NULL;
    m->req = NULL;
    m->cursors = NULL;
    m->own = NULL;
}

int pl_proto_cursor(json_t *cursors, void **iter, int64_t *conv, int64_t *seq) {
    if (!*iter) *iter = json_object_iter(cursors);
    else *iter = json_object_iter_next(cursors, *iter);
    if (!*iter) return -1;
    *conv = strtoll(json_object_iter_key(*iter), NULL, 10);
    *seq = json_integer_value(json_object_iter_value(*iter));
    return 0;
}

const char *pl_proto_kind_name(int kind) {
    switch (kind) {
    case PL_EV_CREATED:        return "created";
    case PL_EV_MESSAGE:        return "message";
    case PL_EV_MEMBER_ADDED:   return "member_added";
    case PL_EV_MEMBER_REMOVED: return "member_removed";
    case PL_EV_MEMBER_LEFT:    return "member_left";
    case PL_EV_EDIT:           return "edit";
    case PL_EV_DELETE:         return "delete";
    case PL_EV_REACTION:       return "reaction";
    case PL_EV_PIN:            return "pin";
    case PL_EV_E2EE:           return "e2ee";
    case PL_EV_RETENTION:      return "retention";
    case PL_EV_MEMBER_ROLE:    return "member_role";
    default:                   return "unknown";
    }
}

static void (*attach_encoder)(pl_sbuf *s, const char *data);

void pl_proto_set_attachment_encoder(void (*fn)(pl_sbuf *s, const char *data)) { attach_encoder = fn; }

/* The hot path (every event frame): plain appends, no printf. */
void pl_proto_event_fields(pl_sbuf *s, const pl_event *ev) {
    pl_sbuf_reserve(s, 160);
    pl_sbuf_adds(s, "\"conversation\":");
    pl_sbuf_addi(s, ev->conv);
    pl_sbuf_adds(s, ",\"seq\":");
    pl_sbuf_addi(s, ev->seq);
    pl_sbuf_adds(s, ",\"id\":\"");
    pl_sbuf_addu(s, ev->id);
    pl_sbuf_adds(s, "\",\"ts\":");
    pl_sbuf_addi(s, ev->ts);
    pl_sbuf_adds(s, ",\"kind\":\"");
    pl_sbuf_adds(s, pl_proto_kind_name(ev->kind));
    pl_sbuf_adds(s, "\",\"sender\":");
    pl_sbuf_addi(s, ev->sender);
    if (ev->client_msg_id) {
        pl_sbuf_adds(s, ",\"client_msg_id\":");
        pl_sbuf_add_json_str(s, ev->client_msg_id, strlen(ev->client_msg_id));
    }
    if (ev->body) {
        pl_sbuf_adds(s, ",\"body\":");
        pl_sbuf_add_json_str(s, ev->body, strlen(ev->body));
    }
    if (ev->data) {
        pl_sbuf_adds(s, ",\"data\":");
        if (attach_encoder && ev->kind == PL_EV_MESSAGE && strstr(ev->data, "\"attachments\""))
            attach_encoder(s, ev->data);   /* each attachment gets its signed URL (media) */
        else
            pl_sbuf_adds(s, ev->data); /* JSON object text written by the store */
    }
    if (ev->annot) {                   /* the current form: members written by the store */
        pl_sbuf_addc(s, ',');
        pl_sbuf_adds(s, ev->annot);
    }
}

void pl_proto_event(pl_sbuf *s, const pl_event *ev) {
    pl_sbuf_adds(s, "{\"type\":\"event\",");
    pl_proto_event_fields(s, ev);
    pl_sbuf_addc(s, '}');
}

void pl_proto_add_req(pl_sbuf *s, json_t *req) {
    if (!req) return;
    if (json_is_integer(req)) {              /* the common case, without json_dumps */
        pl_sbuf_adds(s, ",\"req\":");
        pl_sbuf_addi(s, json_integer_value(req));
        return;
    }
    char *r = json_dumps(req, JSON_ENCODE_ANY | JSON_COMPACT);
    if (!r) return;
    pl_sbuf_adds(s, ",\"req\":");
    pl_sbuf_adds(s, r);
    free(r);
}

void pl_proto_sent(pl_sbuf *s, const pl_event *ev, int dup, json_t *req, int with_type) {
    pl_sbuf_adds(s, with_type ? "{\"type\":\"sent\"" : "{\"ok\":true");
    pl_proto_add_req(s, req);
    pl_sbuf_adds(s, ",\"conversation\":");
    pl_sbuf_addi(s, ev->conv);
    pl_sbuf_adds(s, ",\"client_msg_id\":");
    pl_sbuf_add_json_str(s, ev->client_msg_id ? ev->client_msg_id : "",
                         ev->client_msg_id ? strlen(ev->client_msg_id) : 0);
    pl_sbuf_adds(s, ",\"id\":\"");
    pl_sbuf_addu(s, ev->id);
    pl_sbuf_adds(s, "\",\"seq\":");
    pl_sbuf_addi(s, ev->seq);
    pl_sbuf_adds(s, ",\"ts\":");
    pl_sbuf_addi(s, ev->ts);
    pl_sbuf_adds(s, dup ? ",\"duplicate\":true}" : ",\"duplicate\":false}");
}

void pl_proto_ok(pl_sbuf *s, json_t *req, int64_t conv, int64_t seq, int changed, int with_type) {
    if (with_type) {
        pl_sbuf_adds(s, "{\"type\":\"ok\"");
        pl_proto_add_req(s, req);
        pl_sbuf_adds(s, ",\"conversation\":");
    } else {
        pl_sbuf_adds(s, "{\"conversation\":");
    }
    pl_sbuf_addi(s, conv);
    if (seq > 0) {
        pl_sbuf_adds(s, ",\"seq\":");
        pl_sbuf_addi(s, seq);
    }
    pl_sbuf_adds(s, changed ? ",\"changed\":true}" : ",\"changed\":false}");
}

void pl_proto_error(pl_sbuf *s, json_t *req, const char *code, const char *msg) {
    pl_sbuf_adds(s, "{\"type\":\"error\"");
    pl_proto_add_req(s, req);
    pl_sbuf_adds(s, ",\"code\":");
    pl_sbuf_add_json_str(s, code, strlen(code));
    pl_sbuf_adds(s, ",\"message\":");
    pl_sbuf_add_json_str(s, msg, strlen(msg));
    pl_sbuf_addc(s, '}');
}
