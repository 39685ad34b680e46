/* store_util.c — helpers shared by the store backends (see store_int.h). */
#include "store_int.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/alloc.h"
#include "../core/utf8.h"

char *pl_store__data_user(int64_t user) {
    char buf[48];
    snprintf(buf, sizeof buf, "{\"user\":%lld}", (long long)user);
    return pl_strdup(buf);
}

char *pl_store__data_departure(int64_t user, int64_t new_admin) {
    if (!new_admin) return pl_store__data_user(user);
    char buf[80];
    snprintf(buf, sizeof buf, "{\"user\":%lld,\"new_admin\":%lld}", (long long)user, (long long)new_admin);
    return pl_strdup(buf);
}

char *pl_store__data_role(int64_t user, int role) {
    char buf[64];
    snprintf(buf, sizeof buf, "{\"user\":%lld,\"role\":\"%s\"}", (long long)user,
             role == PL_ROLE_ADMIN ? "admin" : "member");
    return pl_strdup(buf);
}

/* The CREATED data of a group (workspace 0) or a channel. */
static char *data_created(const char *title, int64_t creator, const int64_t *others, size_t n,
                          int64_t workspace, int is_private) {
    json_t *root = json_object(), *members = json_array();
    json_t *jt = json_string(title);
    char *out = NULL;
    if (!root || !members || !jt) goto done;
    json_array_append_new(members, json_integer(creator));
    for (size_t i = 0; i < n; i++) json_array_append_new(members, json_integer(others[i]));
    json_object_set_new(root, "kind", json_string(workspace ? "channel" : "group"));
    json_object_set_new(root, "title", jt);
    jt = NULL;
    json_object_set_new(root, "members", members);
    members = NULL;
    if (workspace) {
        json_object_set_new(root, "workspace", json_integer(workspace));
        json_object_set_new(root, "private", json_boolean(is_private));
    }
    size_t len = json_dumpb(root, NULL, 0, JSON_COMPACT);
    if (len == 0) goto done;
    out = pl_malloc(len + 1);
    if (json_dumpb(root, out, len, JSON_COMPACT) != len) {
        free(out);
        out = NULL;
        goto done;
    }
    out[len] = '\0';
done:
    json_decref(jt);
    json_decref(members);
    json_decref(root);
    return out;
}

char *pl_store__data_group(const char *title, int64_t creator, const int64_t *others, size_t n) {
    return data_created(title, creator, others, n, 0, 0);
}

char *pl_store__data_channel(const char *name, int64_t creator, const int64_t *others, size_t n,
                             int64_t workspace, int is_private) {
    return data_created(name, creator, others, n, workspace, is_private);
}

static int other_space(uint32_t cp) {
    return cp != 0x20 && pl_utf8_space_or_control(cp) && !pl_utf8_control(cp);
}

int pl_store__name_rule(const char *name, size_t len, size_t max) {
    const uint8_t *p = (const uint8_t *)name;
    if (!name || len == 0 || len > max) return PL_NAME_LENGTH;
    if (!pl_utf8_valid(p, len)) return PL_NAME_UTF8;
    if (pl_utf8_has(p, len, pl_utf8_control)) return PL_NAME_CONTROL;
    if (pl_utf8_has(p, len, other_space)) return PL_NAME_SPACE;
    if (pl_utf8_has_invisible_outside_emoji(p, len)) return PL_NAME_INVISIBLE;
    if (name[0] == ' ' || name[len - 1] == ' ') return PL_NAME_EDGE_SPACE;
    if (pl_utf8_combining(pl_utf8_first(name, len))) return PL_NAME_COMBINING;
    return PL_NAME_OK;
}

int pl_store__workspace_name_ok(const char *name) {
    return name && pl_store__name_rule(name, strlen(name), PL_WORKSPACE_NAME_MAX) == PL_NAME_OK;
}

int pl_store__channel_name_ok(const char *name) {
    size_t len = name ? strlen(name) : 0;
    if (len == 0 || len > PL_CHANNEL_NAME_MAX || !pl_utf8_valid((const uint8_t *)name, len)) return 0;
    for (const unsigned char *p = (const unsigned char *)name; *p; p++) {
        if (*p >= 0x80) continue;
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-' || *p == '_' || *p == '.'))
            return 0;
    }
    return !pl_utf8_has_invisible_outside_emoji((const uint8_t *)name, len) &&
           !pl_utf8_combining(pl_utf8_first(name, len));
}

size_t pl_store__slot(int64_t a, int64_t b, size_t cap) {
    uint64_t h = (uint64_t)a * 0x9e3779b97f4a7c15ull ^ (uint64_t)b * 0xc2b2ae3d27d4eb4full;
    return (size_t)(h ^ (h >> 29)) & (cap - 1);
}

pl_own_ent *pl_own_find(pl_own_map *m, int64_t conv, int64_t user) {
    if (!m->cap) return NULL;
    for (size_t i = pl_store__slot(conv, user, m->cap);; i = (i + 1) & (m->cap - 1)) {
        if (m->tab[i].conv == conv && m->tab[i].user == user) return &m->tab[i];
        if (m->tab[i].conv == 0) return NULL;
    }
}

void pl_own_add(pl_own_map *m, int64_t conv, int64_t user, int64_t d) {
    pl_own_ent *e = pl_own_find(m, conv, user);
    if (!e) {
        if ((m->len + 1) * 2 > m->cap) {
            pl_own_ent *old = m->tab;
            size_t ocap = m->cap;
            m->cap = ocap ? ocap * 2 : 64;
            m->tab = pl_calloc(m->cap, sizeof *m->tab);
            m->len = 0;
            for (size_t i = 0; i < ocap; i++) {
                if (!old[i].conv) continue;
                size_t k = pl_store__slot(old[i].conv, old[i].user, m->cap);
                while (m->tab[k].conv) k = (k + 1) & (m->cap - 1);
                m->tab[k] = old[i];
                m->len++;
            }
            free(old);
        }
        size_t i = pl_store__slot(conv, user, m->cap);
        while (m->tab[i].conv) i = (i + 1) & (m->cap - 1);
        e = &m->tab[i];
        e->conv = conv;
        e->user = user;
        e->delta = 0;
        m->len++;
    }
    e->delta += d;
}

void pl_own_clear(pl_own_map *m) {
    if (m->cap) memset(m->tab, 0, m->cap * sizeof *m->tab);
    m->len = 0;
}

void pl_own_free(pl_own_map *m) {
    free(m->tab);
    m->tab = NULL;
    m->cap = m->len = 0;
}

pl_conv_state *pl_conv_map_find(pl_conv_map *m, int64_t conv) {
    if (!m->cap || conv == 0) return NULL;
    for (size_t i = pl_store__slot(conv, 0, m->cap);; i = (i + 1) & (m->cap - 1)) {
        if (m->tab[i].conv == conv) return &m->tab[i];
        if (m->tab[i].conv == 0) return NULL;
    }
}

pl_conv_state *pl_conv_map_put(pl_conv_map *m, int64_t conv) {
    pl_conv_state *e = pl_conv_map_find(m, conv);
    if (e) return e;
    if ((m->len + 1) * 2 > m->cap) {
        pl_conv_state *old = m->tab;
        size_t ocap = m->cap;
        m->cap = ocap ? ocap * 2 : 256;
        m->tab = pl_calloc(m->cap, sizeof *m->tab);
        m->len = 0;
        for (size_t i = 0; i < ocap; i++) {
            if (!old[i].conv) continue;
            size_t k = pl_store__slot(old[i].conv, 0, m->cap);
            while (m->tab[k].conv) k = (k + 1) & (m->cap - 1);
            m->tab[k] = old[i];
            m->len++;
        }
        free(old);
    }
    size_t i = pl_store__slot(conv, 0, m->cap);
    while (m->tab[i].conv) i = (i + 1) & (m->cap - 1);
    memset(&m->tab[i], 0, sizeof m->tab[i]);
    m->tab[i].conv = conv;
    m->len++;
    return &m->tab[i];
}

void pl_conv_map_clear(pl_conv_map *m) {
    if (m->cap) memset(m->tab, 0, m->cap * sizeof *m->tab);
    m->len = 0;
}

void pl_conv_map_free(pl_conv_map *m) {
    free(m->tab);
    m->tab = NULL;
    m->cap = m->len = 0;
}

/* ---- message features ------------------------------------------------------ */

static int name_char(unsigned char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '.' || c == '-';
}

/* FNV-1a of a name, for the distinctness check of mentions_parse. */
static uint32_t name_hash(const char *s) {
    uint32_t h = 2166136261u;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 16777619u;
    return h;
}

int pl_store__mentions_parse(const char *body, size_t len, char names[][33], int max, int *all) {
    int n = 0;
    uint16_t slot[2 * PL_STORE_MENTION_NAMES_MAX];  /* index + 1 of a name in names[]; 0: empty */
    size_t cap = 16;                                /* used: a power of two >= 2 * max */
    *all = 0;
    if (max > PL_STORE_MENTION_NAMES_MAX) max = PL_STORE_MENTION_NAMES_MAX;
    if (max < 0) max = 0;
    while (cap < 2 * (size_t)max) cap <<= 1;
    memset(slot, 0, cap * sizeof *slot);
    for (size_t i = 0; i < len; i++) {
        if (body[i] != '@') continue;
        if (i > 0 && (name_char((unsigned char)body[i - 1]) || body[i - 1] == '@' || body[i - 1] == '\\')) continue;
        size_t k = i + 1;
        while (k < len && name_char((unsigned char)body[k])) k++;
        size_t nl = k - (i + 1);
        while (nl > 0 && (body[i + nl] == '.' || body[i + nl] == '-')) nl--;
        if (nl < 3 || nl > 32) {
            i = k - 1 < i ? i : k - 1;
            continue;
        }
        char name[33];
        for (size_t c = 0; c < nl; c++) {
            char ch = body[i + 1 + c];
            name[c] = (ch >= 'A' && ch <= 'Z') ? (char)(ch - 'A' + 'a') : ch;
        }
        name[nl] = '\0';
        i = k - 1;
        if (strcmp(name, "all") == 0) { *all = 1; continue; }
        if (strcmp(name, "here") == 0) { if (*all != 1) *all = 2; continue; }
        if (n >= max) continue;                       /* still looking for @all/@here */
        size_t h = name_hash(name) & (cap - 1);
        while (slot[h] && strcmp(names[slot[h] - 1], name) != 0) h = (h + 1) & (cap - 1);
        if (slot[h]) continue;                        /* seen */
        memcpy(names[n++], name, nl + 1);
        slot[h] = (uint16_t)n;
    }
    return n;
}

pl_mention_name *pl_store__mention_names(const char *body, size_t len, int *n, int *all) {
    size_t ats = 0;                                   /* every name follows an '@' */
    for (const char *p = body, *end = body + len; p < end && ats < PL_STORE_MENTION_NAMES_MAX; p++) {
        p = memchr(p, '@', (size_t)(end - p));
        if (!p) break;
        ats++;
    }
    *n = 0;
    *all = 0;
    if (ats == 0) return NULL;
    pl_mention_name *names = pl_malloc(ats * sizeof *names);
    *n = pl_store__mentions_parse(body, len, names, (int)ats, all);
    if (*n == 0) {
        free(names);
        return NULL;
    }
    return names;
}

static void add_ids(json_t *o, const char *key, const int64_t *ids, size_t n) {
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++) json_array_append_new(a, json_integer(ids[i]));
    json_object_set_new(o, key, a);
}

/* Compact JSON text of o (which is freed), a new string. */
static char *dump_free(json_t *o) {
    char *t = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(o);
    char *out = t ? pl_strdup(t) : NULL;
    free(t);
    return out;
}

char *pl_store__data_message(int64_t reply_to, const int64_t *ids, size_t n, int all) {
    if (!reply_to && !n && !all) return NULL;
    json_t *o = json_object();
    if (reply_to) json_object_set_new(o, "reply_to", json_integer(reply_to));
    if (n) add_ids(o, "mentions", ids, n);
    if (all) json_object_set_new(o, "mention_all", json_string(all == 1 ? "all" : "here"));
    return dump_free(o);
}

char *pl_store__data_edit(int64_t target, const int64_t *ids, size_t n, int all) {
    json_t *o = json_object();
    json_object_set_new(o, "target", json_integer(target));
    if (n) add_ids(o, "mentions", ids, n);
    if (all) json_object_set_new(o, "mention_all", json_string(all == 1 ? "all" : "here"));
    return dump_free(o);
}

char *pl_store__data_target(int64_t target, const char *op) {
    json_t *o = json_object();
    json_object_set_new(o, "target", json_integer(target));
    if (op) json_object_set_new(o, "op", json_string(op));
    return dump_free(o);
}

char *pl_store__data_reaction(int64_t target, const char *emoji, int remove, int64_t count) {
    json_t *o = json_object();
    json_object_set_new(o, "target", json_integer(target));
    json_object_set_new(o, "emoji", json_string(emoji));
    json_object_set_new(o, "op", json_string(remove ? "remove" : "add"));
    json_object_set_new(o, "count", json_integer(count));
    return dump_free(o);
}

int pl_store__edit_refused(int e2ee, int blocked, int64_t window_ms, int64_t age_ms, const char **why) {
    if (e2ee || blocked) {
        *why = e2ee ? "messages of an end-to-end encrypted conversation cannot be edited" : "blocked";
        return PL_STORE_EFORBID;
    }
    if (window_ms > 0 && age_ms > window_ms) {
        *why = "edit window passed";
        return PL_STORE_EFORBID;
    }
    return PL_STORE_OK;
}

int pl_store__emoji_ok(const char *e) {
    if (!e) return 0;
    size_t n = strlen(e);
    if (n == 0 || n > PL_STORE_EMOJI_MAX) return 0;
    int non_ascii = 0;
    for (size_t i = 0; i < n && !non_ascii; i++) non_ascii = (unsigned char)e[i] >= 0x80;
    if (!non_ascii || !pl_utf8_valid((const uint8_t *)e, n)) return 0;
    /* no Unicode space or control (U+00A0, U+3000, U+2028, C1 ..); ZWJ and
     * variation selectors are part of many emoji and fine */
    return !pl_utf8_has_space_or_control((const uint8_t *)e, n);
}

size_t pl_store__preview_len(const char *s, size_t len) { return pl_utf8_prefix(s, len, PL_STORE_PREVIEW_CHARS); }

char *pl_store__id_list(const int64_t *ids, size_t n) {
    char *out = pl_malloc(n * 21 + 1);
    size_t k = 0;
    out[0] = '\0';
    for (size_t i = 0; i < n; i++) k += (size_t)sprintf(out + k, "%s%lld", i ? "," : "", (long long)ids[i]);
    return out;
}

size_t pl_store__push_cancelled(int64_t outbox, const char *only, const pl_push *pushes, size_t n) {
    size_t cancelled = 0;
    for (const char *p = only; p && *p;) {
        char *end;
        long long dev = strtoll(p, &end, 10);
        if (end == p) break;                         /* not ours: written by pl_store__id_list */
        size_t i = 0;
        while (i < n && !(pushes[i].outbox == outbox && pushes[i].device == dev)) i++;
        cancelled += i == n;
        p = *end == ',' ? end + 1 : end;
    }
    return cancelled;
}

char *pl_store__annot(const pl_annot *a) {
    json_t *o = json_object();
    if (a->deleted) json_object_set_new(o, "deleted", json_true());
    if (a->edited_ts && !a->deleted) json_object_set_new(o, "edited_ts", json_integer(a->edited_ts));
    if (a->pinned && !a->deleted) json_object_set_new(o, "pinned", json_true());
    if (a->nreactions && !a->deleted) {
        json_t *arr = json_array();
        for (size_t i = 0; i < a->nreactions; i++) {
            json_t *r = json_object();
            json_object_set_new(r, "emoji", json_string(a->reactions[i].emoji));
            json_object_set_new(r, "count", json_integer(a->reactions[i].count));
            json_object_set_new(r, "me", json_boolean(a->reactions[i].me));
            json_array_append_new(arr, r);
        }
        json_object_set_new(o, "reactions", arr);
    }
    if (a->reply_seq && !a->deleted) {
        json_t *p = json_object();
        json_object_set_new(p, "seq", json_integer(a->reply_seq));
        if (a->reply_deleted || !a->reply_body) {
            json_object_set_new(p, "deleted", json_true());
        } else {
            json_object_set_new(p, "sender", json_integer(a->reply_sender));
            size_t n = pl_store__preview_len(a->reply_body, a->reply_len);
            json_object_set_new(p, "body", json_stringn(a->reply_body, n));
        }
        json_object_set_new(o, "reply_preview", p);
    }
    if (json_object_size(o) == 0) {
        json_decref(o);
        return NULL;
    }
    char *t = dump_free(o);                   /* "{...}": keep the members */
    if (!t) return NULL;
    size_t n = strlen(t);
    memmove(t, t + 1, n - 2);
    t[n - 2] = '\0';
    return t;
}

/* ---- search (store.h invariant 8) --------------------------------------------- */

/* The bytes of the UTF-8 character at p, never past a NUL. */
static size_t char_len(const char *p) {
    unsigned char c = (unsigned char)*p;
    size_t n = c < 0x80 ? 1 : c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : 2, i = 1;
    while (i < n && p[i]) i++;
    return i;
}

/* The bytes of the character at p (valid UTF-8, not at its end) when it
 * is part of a word: an ASCII letter or digit, or a non-ASCII character
 * that is not white space (U+3000, U+00A0, U+2003 separate words as the
 * space does, audit J3); else 0. */
static size_t word_char(const char *p) {
    unsigned char c = (unsigned char)*p;
    if (c < 0x80) return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
    size_t n = char_len(p);
    return pl_utf8_space_or_control(pl_utf8_first(p, n)) ? 0 : n;
}

int pl_store__fts5_query(const char *q, char *out, size_t cap) {
    size_t o = 0;
    int n = 0;
    out[0] = '\0';
    const char *p = q;
    /* A word is a run of ASCII letters and digits and non-ASCII
     * characters but white space: ASCII punctuation separates words as it
     * does in the index, so
     * `mango,kiwi` asks for both words, not for the two side by side
     * (audit U; protocol.md "every word"). Non-ASCII punctuation stays in
     * the quoted string, where FTS5's tokenizer splits it likewise. */
    while (*p && n < PL_STORE_SEARCH_TERMS) {
        size_t w;
        while (*p && !word_char(p)) p += char_len(p);
        const char *s = p;
        while (*p && (w = word_char(p)) > 0) p += w;
        if (p == s) continue;
        if (o + (size_t)(p - s) + 4 > cap) break;   /* a space, two quotes, the NUL */
        if (n) out[o++] = ' ';
        out[o++] = '"';
        memcpy(out + o, s, (size_t)(p - s));
        o += (size_t)(p - s);
        out[o++] = '"';
        out[o] = '\0';
        n++;
    }
    return n;
}

/* Byte i of body as PostgreSQL's search text has it (R_SEARCH,
 * parley_body_tsv): the snippet markers, '<', '>', '&' and '/' blanked, a
 * final sigma (U+03C2, CF 82) made a sigma (U+03C3, CF 83), byte for byte. */
static char search_byte(const char *body, size_t i) {
    char c = body[i];
    if (c == PL_STORE_SNIPPET_START || c == PL_STORE_SNIPPET_END || c == '<' || c == '>' || c == '&' || c == '/')
        return ' ';
    if (c == '\x82' && i > 0 && body[i - 1] == '\xcf') return '\x83';
    return c;
}

void pl_store__snippet_restore(char *snippet, const char *body, size_t len) {
    if (!body) return;
    size_t d = 0;
    while (d < len && search_byte(body, d) == body[d]) d++;
    if (d == len) return;                         /* the search text is the body */
    size_t n = strlen(snippet), fl = 0;
    char *f = pl_malloc(n + 1);                   /* the piece, markers out */
    for (size_t i = 0; i < n; i++)
        if (snippet[i] != PL_STORE_SNIPPET_START && snippet[i] != PL_STORE_SNIPPET_END) f[fl++] = snippet[i];
    size_t at = SIZE_MAX;
    for (size_t o = 0; fl && o + fl <= len && at == SIZE_MAX; o++) {
        size_t i = 0;
        while (i < fl && search_byte(body, o + i) == f[i]) i++;
        if (i == fl) at = o;
    }
    free(f);
    if (at == SIZE_MAX) return;
    for (size_t i = 0, k = at; i < n; i++) {
        if (snippet[i] == PL_STORE_SNIPPET_START || snippet[i] == PL_STORE_SNIPPET_END) continue;
        char b = body[k++];                       /* the body's own markers stay blanked (audit O4) */
        if (b != PL_STORE_SNIPPET_START && b != PL_STORE_SNIPPET_END) snippet[i] = b;
    }
}

void pl_store__name_query(const char *q, char out[PL_STORE_QUERY_MAX + 1]) {
    size_t i = 0;
    for (; q[i] && i < PL_STORE_QUERY_MAX; i++)
        out[i] = (q[i] >= 'A' && q[i] <= 'Z') ? (char)(q[i] - 'A' + 'a') : q[i];
    out[i] = '\0';
}
