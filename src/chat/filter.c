/* filter.c — the content filter (filter.h): parsing a rules file, and
 * checking a text against it.
 *
 * Owns: the compiled rules. Terms are kept sorted by their first word, so a
 * text is checked in one pass over its words with a binary search per word
 * (a thousand terms cost ten comparisons a word). Regexes are PCRE2's,
 * run one by one by its interpreter with a match limit, which is why a
 * file holds at most PL_FILTER_REGEX_MAX of them and why no pattern can
 * hold the event loop for long: glibc's POSIX regexec took 0.4-2 s on a
 * 16 KiB message for ordinary patterns (the filter audit); a pattern that
 * backtracks without end stops at PL_FILTER_MATCH_LIMIT and counts as no
 * match (h->limited says which). Not the JIT: the fuzzer found a pattern
 * (a repeated non-atomic lookahead, `(?*a|a){51}`) whose JIT code ignored
 * the match limit and ran for minutes on ten bytes; the interpreter gives
 * up in about a millisecond. Letters and digits are told from the rest by
 * glibc's Unicode tables (the C.UTF-8 locale's iswalnum), with a few
 * blocks of punctuation as the fallback should that locale be missing.
 * Ignorable code points (invisible ones: zero-width spaces and joiners,
 * soft hyphens, core/utf8.h pl_utf8_invisible; and combining marks) are
 * left out before anything is compared, for terms and regexes alike, so
 * "f\u200bree" and "fre\u0301e" are "free". Words are compared after ASCII
 * lowercasing. Nothing here is shared or locked: the event loop is the
 * only caller.
 */
#include "filter.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <locale.h>
#include <pcre2.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <wctype.h>

#include "../core/alloc.h"
#include "../core/clock.h"
#include "../core/utf8.h"

typedef struct term {
    char  *words;              /* lowercase words, each NUL-terminated, back to back */
    size_t nwords;
    int    action, line;
} term;

typedef struct rx_rule {
    pcre2_code *re;
    int         action, line;
} rx_rule;

struct pl_filter {
    term    *terms;            /* sorted by first word (strcmp)              */
    size_t   nterms;
    rx_rule *rx;
    size_t   nrx;
    pcre2_match_context *mctx;     /* the match limit                         */
    pcre2_match_data    *md;       /* one match's offsets (the loop is the only caller) */
};

typedef struct span { size_t start, end; } span;

/* ---- code points and words ----------------------------------------------------- */

/* The code point at p (valid UTF-8, at least one byte) and its length. */
static uint32_t cp_at(const uint8_t *p, size_t n, size_t *len) {
    uint32_t c = p[0];
    size_t k = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
    if (k > n) k = n;
    if (k == 1) { *len = 1; return c; }
    c &= 0x3Fu >> (k - 1);
    for (size_t i = 1; i < k; i++) c = (c << 6) | (p[i] & 0x3Fu);
    *len = k;
    return c;
}

/* Left out before comparing: invisible code points that are no spaces
 * or controls (those separate words), and combining marks. The blank
 * braille pattern U+2800 shows as a space: it separates words as one. */
static int ignorable(uint32_t c) {
    return c >= 0x80 && c != 0x2800 && !pl_utf8_space_or_control(c) &&
           (pl_utf8_invisible(c) || (c >= 0x300 && c <= 0x36F) || (c >= 0x1AB0 && c <= 0x1AFF) ||
            (c >= 0x1DC0 && c <= 0x1DFF) || (c >= 0x20D0 && c <= 0x20FF) || (c >= 0xFE20 && c <= 0xFE2F));
}

/* Punctuation and symbols outside ASCII, by block: they separate words
 * as ASCII's do (smart quotes, dashes, ellipses, CJK and fullwidth
 * punctuation, arrows, shapes, Braille, emoji). Latin-1's ordinals,
 * superscripts, fractions and micro sign stay word characters. */
static int punct_or_symbol(uint32_t c) {
    if (c <= 0xBF) return c >= 0xA1 && c != 0xAA && c != 0xB2 && c != 0xB3 && c != 0xB5 && c != 0xB9 && c != 0xBA &&
                          !(c >= 0xBC && c <= 0xBE);
    return c == 0xD7 || c == 0xF7 || (c >= 0x2010 && c <= 0x205E) || (c >= 0x20A0 && c <= 0x20CF) ||
           (c >= 0x2190 && c <= 0x2BFF) || (c >= 0x2E00 && c <= 0x2E7F) || (c >= 0x3000 && c <= 0x3004) ||
           (c >= 0x3008 && c <= 0x303F) || (c >= 0xFE10 && c <= 0xFE1F) || (c >= 0xFE30 && c <= 0xFE6F) ||
           (c >= 0xFF01 && c <= 0xFF0F) || (c >= 0xFF1A && c <= 0xFF20) || (c >= 0xFF3B && c <= 0xFF40) ||
           (c >= 0xFF5B && c <= 0xFF65) || (c >= 0x1F000 && c <= 0x1FAFF);
}

static locale_t utf8_ctype;            /* C.UTF-8's character classes, or 0 */
static int utf8_ctype_tried;

/* 1 word, 0 separator, 2 ignorable (inside a word, left out). */
static int cp_class(uint32_t c) {
    if (c < 0x80) return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
    if (ignorable(c)) return 2;
    if (utf8_ctype) return iswalnum_l((wint_t)c, utf8_ctype) != 0;
    return !pl_utf8_space_or_control(c) && !punct_or_symbol(c);
}

/* The words of t[0..n): spans appended to *out (grown as needed). */
static size_t words_of(const char *t, size_t n, span **out, size_t *cap) {
    const uint8_t *p = (const uint8_t *)t;
    size_t i = 0, nw = 0, k;
    while (i < n) {
        int cl = cp_class(cp_at(p + i, n - i, &k));
        if (!cl) {
            i += k;
            continue;
        }
        size_t start = i;
        int seen = 0;                          /* a word character, not only ignorables */
        while (i < n && (cl = cp_class(cp_at(p + i, n - i, &k))) != 0) {
            seen |= cl == 1;
            i += k;
        }
        if (!seen) continue;
        if (nw == *cap) {
            *cap = *cap ? *cap * 2 : 64;
            *out = pl_realloc(*out, *cap * sizeof **out);
        }
        (*out)[nw++] = (span){start, i};
    }
    return nw;
}

/* Base letters of Latin-1's and Latin Extended-A's letters ('?': the
 * letter itself, lowercased when it is a capital). */
static const char latin1_base[] = "aaaaaa?ceeeeiiiidnooooo?ouuuuy??aaaaaa?ceeeeiiiidnooooo?ouuuuy?y";
static const char latin_a_base[] =
    "aaaaaaccccccccddddeeeeeeeeeegggggggghhhhiiiiiiiiii??jjkkkllllllllllnnnnnnn??oooooo??rrrrrrssssssss"
    "ttttttuuuuuuuuuuuuwwyyyzzzzzzs";

/* Greek: capitals to small, the tonos and dialytika letters to their
 * vowel, final sigma to sigma. */
static uint32_t fold_greek(uint32_t c) {
    switch (c) {
    case 0x386: case 0x3AC: return 0x3B1;                     /* alpha   */
    case 0x388: case 0x3AD: return 0x3B5;                     /* epsilon */
    case 0x389: case 0x3AE: return 0x3B7;                     /* eta     */
    case 0x38A: case 0x3AF: case 0x390: case 0x3AA: case 0x3CA: return 0x3B9;   /* iota */
    case 0x38C: case 0x3CC: return 0x3BF;                     /* omicron */
    case 0x38E: case 0x3CD: case 0x3B0: case 0x3AB: case 0x3CB: return 0x3C5;   /* upsilon */
    case 0x38F: case 0x3CE: return 0x3C9;                     /* omega   */
    case 0x3C2: return 0x3C3;                                 /* final sigma */
    default: return c >= 0x391 && c <= 0x3A9 ? c + 0x20 : c;
    }
}

/* Cyrillic: capitals to small, the letters with a diacritic (й, ё, ѐ, ѝ,
 * ї, ў, ѓ, ќ) to their base letter. */
static uint32_t fold_cyrillic(uint32_t c) {
    if (c >= 0x410 && c <= 0x42F) c += 0x20;
    else if (c >= 0x400 && c <= 0x40F) c += 0x50;
    switch (c) {
    case 0x439: case 0x45D: return 0x438;                     /* й ѝ -> и */
    case 0x451: case 0x450: return 0x435;                     /* ё ѐ -> е */
    case 0x457: return 0x456;                                 /* ї -> і */
    case 0x45E: return 0x443;                                 /* ў -> у */
    case 0x453: return 0x433;                                 /* ѓ -> г */
    case 0x45C: return 0x43A;                                 /* ќ -> к */
    default: return c;
    }
}

/* A code point as words compare it: capitals of ASCII, Cyrillic and Greek
 * lowercased, Latin letters with diacritics (Latin-1, Latin Extended-A)
 * taken to their base letter, so "CAFÉ", "café" and "cafe\u0301" (its mark
 * left out before) are one word. */
static uint32_t fold(uint32_t c) {
    if (c < 0x80) return c >= 'A' && c <= 'Z' ? c + 32 : c;
    if (c >= 0xC0 && c <= 0xFF) {
        char b = latin1_base[c - 0xC0];
        return b != '?' ? (uint32_t)b : c <= 0xDE && c != 0xD7 && c != 0xDF ? c + 0x20 : c;
    }
    if (c >= 0x100 && c <= 0x17F) {
        char b = latin_a_base[c - 0x100];
        return b != '?' ? (uint32_t)b : c | 1;
    }
    if (c >= 0x370 && c <= 0x3CE) return fold_greek(c);
    if (c >= 0x400 && c <= 0x45F) return fold_cyrillic(c);
    return c;
}

/* c in UTF-8 into out (4 bytes at most); its length. */
static size_t put_cp(uint32_t c, uint8_t *out) {
    if (c < 0x80) return out[0] = (uint8_t)c, 1;
    if (c < 0x800) return out[0] = (uint8_t)(0xC0 | c >> 6), out[1] = (uint8_t)(0x80 | (c & 0x3F)), 2;
    if (c < 0x10000) {
        out[0] = (uint8_t)(0xE0 | c >> 12);
        out[1] = (uint8_t)(0x80 | ((c >> 6) & 0x3F));
        out[2] = (uint8_t)(0x80 | (c & 0x3F));
        return 3;
    }
    out[0] = (uint8_t)(0xF0 | c >> 18);
    out[1] = (uint8_t)(0x80 | ((c >> 12) & 0x3F));
    out[2] = (uint8_t)(0x80 | ((c >> 6) & 0x3F));
    out[3] = (uint8_t)(0x80 | (c & 0x3F));
    return 4;
}

/* A word's normal form appended to dst (never longer than the word:
 * folding only shortens or keeps a character's bytes): ignorable code
 * points left out, the rest folded. Returns the bytes written. */
static size_t normal_word(char *dst, const char *w, size_t n) {
    const uint8_t *p = (const uint8_t *)w;
    size_t o = 0, k;
    for (size_t i = 0; i < n; i += k) {
        uint32_t c = cp_at(p + i, n - i, &k);
        if (!ignorable(c)) o += put_cp(fold(c), (uint8_t *)dst + o);
    }
    return o;
}

/* Compares a rule's word (normal, NUL-terminated) with a word of the text
 * in its normal form, as strcmp would compare the two. */
static int word_cmp(const char *rule, const char *tok, size_t n) {
    const uint8_t *r = (const uint8_t *)rule, *p = (const uint8_t *)tok;
    uint8_t f[4];
    size_t k;
    for (size_t i = 0; i < n; i += k) {
        uint32_t c = cp_at(p + i, n - i, &k);
        if (ignorable(c)) continue;
        size_t fl = put_cp(fold(c), f);
        for (size_t j = 0; j < fl; j++) {
            if (*r != f[j]) return *r ? (int)*r - (int)f[j] : -1;
            r++;
        }
    }
    return *r ? 1 : 0;
}

/* ---- parsing ------------------------------------------------------------------- */

static int term_cmp(const void *a, const void *b) {
    return strcmp(((const term *)a)->words, ((const term *)b)->words);
}

static void fail(char *err, size_t errlen, int line, const char *why, const char *what) {
    if (line) snprintf(err, errlen, "line %d: %s%s", line, why, what ? what : "");
    else snprintf(err, errlen, "%s", why);
}

/* One rule line, trimmed and not empty: into f. 0, or -1 with err set. */
static int parse_rule(pl_filter *f, const char *l, size_t n, int line, size_t *capt, char *err, size_t errlen) {
    size_t a = 0;
    while (a < n && l[a] != ' ' && l[a] != '\t') a++;
    int action = a == 5 && !memcmp(l, "block", 5) ? PL_FILTER_BLOCK
               : a == 4 && !memcmp(l, "flag", 4)  ? PL_FILTER_FLAG
               : a == 4 && !memcmp(l, "mask", 4)  ? PL_FILTER_MASK : 0;
    if (!action) {
        char what[40];
        snprintf(what, sizeof what, "'%.*s' (block, flag or mask)", (int)(a > 20 ? 20 : a), l);
        fail(err, errlen, line, "unknown action ", what);
        return -1;
    }
    const char *p = l + a;
    size_t m = n - a;
    while (m && (*p == ' ' || *p == '\t')) p++, m--;
    if (!m) {
        fail(err, errlen, line, "no pattern after the action", NULL);
        return -1;
    }
    if (p[0] == '/') {                                       /* a regex */
        if (m < 2 || p[m - 1] != '/') {
            fail(err, errlen, line, "a regex must end with '/' (a term cannot start with one)", NULL);
            return -1;
        }
        if (m == 2) {
            fail(err, errlen, line, "an empty regex", NULL);
            return -1;
        }
        if (f->nrx == PL_FILTER_REGEX_MAX) {
            fail(err, errlen, line, "too many regexes (at most 256)", NULL);
            return -1;
        }
        int ec;
        PCRE2_SIZE eo;
        pcre2_code *re = pcre2_compile((PCRE2_SPTR)(p + 1), m - 2, PCRE2_UTF | PCRE2_UCP | PCRE2_CASELESS, &ec, &eo,
                                       NULL);
        if (!re) {
            char why[160];
            PCRE2_UCHAR msg[120];
            pcre2_get_error_message(ec, msg, sizeof msg);
            snprintf(why, sizeof why, "%s (at offset %zu)", (const char *)msg, (size_t)eo);
            fail(err, errlen, line, "bad regex: ", why);
            return -1;
        }
        f->rx[f->nrx++] = (rx_rule){re, action, line};     /* interpreted: see the top */
        return 0;
    }
    for (size_t i = 0; i + 1 < m; i++)
        if ((p[i] == ' ' || p[i] == '\t') && p[i + 1] == '#') {
            fail(err, errlen, line, "a comment must be on a line of its own", NULL);
            return -1;
        }
    span *ws = NULL;
    size_t wcap = 0, nw = words_of(p, m, &ws, &wcap);
    char *buf = pl_malloc(m + nw + 1), *o = buf;
    size_t kept = 0;
    for (size_t i = 0; i < nw; i++) {
        size_t w = normal_word(o, p + ws[i].start, ws[i].end - ws[i].start);
        if (!w) continue;                                    /* invisible only */
        o[w] = '\0';
        o += w + 1;
        kept++;
    }
    free(ws);
    if (!kept) {
        free(buf);
        fail(err, errlen, line, "a term needs a letter or a digit", NULL);
        return -1;
    }
    if (f->nterms == *capt) {
        *capt = *capt ? *capt * 2 : 16;
        f->terms = pl_realloc(f->terms, *capt * sizeof *f->terms);
    }
    f->terms[f->nterms++] = (term){buf, kept, action, line};
    return 0;
}

pl_filter *pl_filter_parse(const char *text, size_t len, char *err, size_t errlen) {
    if (!utf8_ctype_tried) {                 /* once; glibc's, freed with the process */
        utf8_ctype_tried = 1;
        utf8_ctype = newlocale(LC_CTYPE_MASK, "C.UTF-8", (locale_t)0);
    }
    if (len > PL_FILTER_FILE_MAX) {
        fail(err, errlen, 0, "the file is over 1 MiB", NULL);
        return NULL;
    }
    if (len >= 3 && !memcmp(text, "\xEF\xBB\xBF", 3)) {         /* a byte-order mark */
        text += 3;
        len -= 3;
    }
    if (memchr(text, '\0', len) || !pl_utf8_valid((const uint8_t *)text, len)) {
        int line = 1;                                   /* which line: the first bad one */
        for (size_t at = 0; at < len;) {
            const char *nl = memchr(text + at, '\n', len - at);
            size_t n = nl ? (size_t)(nl - text) - at : len - at;
            if (memchr(text + at, '\0', n) || !pl_utf8_valid((const uint8_t *)text + at, n)) break;
            at += n + 1;
            line++;
        }
        fail(err, errlen, line, "not UTF-8 text (or a NUL byte)", NULL);
        return NULL;
    }
    pl_filter *f = pl_calloc(1, sizeof *f);
    f->rx = pl_calloc(PL_FILTER_REGEX_MAX, sizeof *f->rx);
    f->mctx = pcre2_match_context_create(NULL);
    f->md = pcre2_match_data_create(1, NULL);
    if (!f->mctx || !f->md) abort();                         /* out of memory, as pl_malloc */
    pcre2_set_match_limit(f->mctx, PL_FILTER_MATCH_LIMIT);
    pcre2_set_depth_limit(f->mctx, PL_FILTER_MATCH_LIMIT);
    pcre2_set_heap_limit(f->mctx, 8192);                     /* KiB of backtracking memory */
    size_t capt = 0, pos = 0;
    int line = 0;
    while (pos < len) {
        const char *l = text + pos, *nl = memchr(l, '\n', len - pos);
        size_t n = nl ? (size_t)(nl - l) : len - pos;
        pos += n + (nl != NULL);
        line++;
        if (n > PL_FILTER_LINE_MAX) {
            fail(err, errlen, line, "longer than 1024 bytes", NULL);
            goto bad;
        }
        while (n && (l[n - 1] == '\r' || l[n - 1] == ' ' || l[n - 1] == '\t')) n--;
        while (n && (*l == ' ' || *l == '\t')) l++, n--;
        if (!n || *l == '#') continue;
        if (parse_rule(f, l, n, line, &capt, err, errlen)) goto bad;
    }
    if (f->nterms) qsort(f->terms, f->nterms, sizeof *f->terms, term_cmp);
    return f;
bad:
    pl_filter_free(f);
    return NULL;
}

pl_filter *pl_filter_load(const char *path, char *err, size_t errlen) {
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        snprintf(err, errlen, "cannot open %s", path);
        return NULL;
    }
    char *buf = pl_malloc(PL_FILTER_FILE_MAX + 1);
    size_t n = fread(buf, 1, PL_FILTER_FILE_MAX + 1, fp);
    int bad = ferror(fp);
    fclose(fp);
    pl_filter *f = NULL;
    if (bad) snprintf(err, errlen, "cannot read %s", path);
    else f = pl_filter_parse(buf, n, err, errlen);
    free(buf);
    return f;
}

void pl_filter_free(pl_filter *f) {
    if (!f) return;
    for (size_t i = 0; i < f->nterms; i++) free(f->terms[i].words);
    for (size_t i = 0; i < f->nrx; i++) pcre2_code_free(f->rx[i].re);
    pcre2_match_context_free(f->mctx);
    pcre2_match_data_free(f->md);
    free(f->terms);
    free(f->rx);
    free(f);
}

size_t pl_filter_rules(const pl_filter *f) { return f ? f->nterms + f->nrx : 0; }

/* ---- checking ------------------------------------------------------------------ */

typedef struct check {
    const char *text;
    size_t      len;
    uint8_t    *marks;         /* MASK: bytes to mask, allocated on first use */
    int         actions, line[3];   /* the first deciding line per action: mask, flag, block */
    int         limited;       /* a regex's line that stopped at its match limit */
} check;

static int slot(int action) { return action == PL_FILTER_MASK ? 0 : action == PL_FILTER_FLAG ? 1 : 2; }

static void matched(check *c, int action, int line, size_t start, size_t end) {
    c->actions |= action;
    int *l = &c->line[slot(action)];
    if (!*l || line < *l) *l = line;
    if (action == PL_FILTER_MASK) {
        if (!c->marks) c->marks = pl_calloc(c->len ? c->len : 1, 1);
        memset(c->marks + start, 1, end - start);
    }
}

/* Does term t match the words from w[i] on? */
static int term_at(const term *t, const check *c, const span *w, size_t nw, size_t i) {
    if (i + t->nwords > nw) return 0;
    const char *r = t->words;
    for (size_t k = 0; k < t->nwords; k++) {
        if (word_cmp(r, c->text + w[i + k].start, w[i + k].end - w[i + k].start)) return 0;
        r += strlen(r) + 1;
    }
    return 1;
}

static void check_terms(const pl_filter *f, check *c) {
    span *w = NULL;
    size_t cap = 0, nw = words_of(c->text, c->len, &w, &cap);
    for (size_t i = 0; i < nw && !(c->actions & PL_FILTER_BLOCK); i++) {
        const char *tok = c->text + w[i].start;
        size_t tl = w[i].end - w[i].start, lo = 0, hi = f->nterms;
        while (lo < hi) {                                    /* the first term >= the word */
            size_t mid = (lo + hi) / 2;
            if (word_cmp(f->terms[mid].words, tok, tl) < 0) lo = mid + 1;
            else hi = mid;
        }
        for (size_t t = lo; t < f->nterms && !word_cmp(f->terms[t].words, tok, tl); t++) {
            const term *r = &f->terms[t];
            if (term_at(r, c, w, nw, i)) matched(c, r->action, r->line, w[i].start, w[i + r->nwords - 1].end);
        }
    }
    free(w);
}

/* The regexes run on the text with its ignorable code points left out;
 * at[i] is where byte i of that came from, for masks. */
static void check_regexes(const pl_filter *f, check *c) {
    const uint8_t *p = (const uint8_t *)c->text;
    char *s = pl_malloc(c->len + 1);
    size_t *at = pl_malloc((c->len + 1) * sizeof *at), n = 0, k;
    for (size_t i = 0; i < c->len; i += k)
        if (!ignorable(cp_at(p + i, c->len - i, &k)))
            for (size_t j = 0; j < k; j++) at[n] = i + j, s[n++] = (char)p[i + j];
    s[n] = '\0';
    static const int order[3] = {PL_FILTER_BLOCK, PL_FILTER_FLAG, PL_FILTER_MASK};
    for (size_t i = 0; i < 3 * f->nrx && !(c->actions & PL_FILTER_BLOCK); i++) {
        const rx_rule *r = &f->rx[i % f->nrx];               /* blocks first, masks last */
        if (r->action != order[i / f->nrx]) continue;
        size_t from = 0;
        int64_t t0 = r->action == PL_FILTER_MASK ? pl_mono_us() : 0;
        int rc;
        while (from <= n && (rc = pcre2_match(r->re, (PCRE2_SPTR)s, n, from, PCRE2_NO_UTF_CHECK, f->md,
                                              f->mctx)) >= 0) {
            PCRE2_SIZE *ov = pcre2_get_ovector_pointer(f->md);
            size_t a = ov[0], b = ov[1];
            if (r->action != PL_FILTER_MASK) {
                matched(c, r->action, r->line, 0, 0);
                break;
            }
            if (b > a) matched(c, PL_FILTER_MASK, r->line, at[a], at[b - 1] + 1);
            if (pl_mono_us() - t0 > PL_FILTER_MASK_BUDGET_US) {   /* every match, each under its limit */
                rc = PCRE2_ERROR_MATCHLIMIT;
                break;
            }
            if (b > from) {
                from = b;
            } else {                                          /* an empty match moves on a character */
                from = b + 1;
                while (from < n && ((uint8_t)s[from] & 0xC0) == 0x80) from++;
            }
        }
        if (rc == PCRE2_ERROR_MATCHLIMIT || rc == PCRE2_ERROR_DEPTHLIMIT || rc == PCRE2_ERROR_HEAPLIMIT ||
            rc == PCRE2_ERROR_JIT_STACKLIMIT)
            if (!c->limited) c->limited = r->line;
    }
    free(at);
    free(s);
}

/* The text with every character that has a marked byte replaced by '*'. */
static char *mask_text(const check *c, size_t *outlen) {
    const uint8_t *p = (const uint8_t *)c->text;
    char *o = pl_malloc(c->len + 1);
    size_t n = 0, k;
    for (size_t i = 0; i < c->len; i += k) {
        cp_at(p + i, c->len - i, &k);
        int hit = 0;
        for (size_t j = 0; j < k; j++) hit |= c->marks[i + j];
        if (hit) o[n++] = '*';
        else memcpy(o + n, p + i, k), n += k;
    }
    o[n] = '\0';
    *outlen = n;
    return o;
}

int pl_filter_check(const pl_filter *f, const char *text, size_t len, pl_filter_hit *h) {
    memset(h, 0, sizeof *h);
    if (!f || !len) return 0;
    check c = {.text = text, .len = len};
    if (f->nterms) check_terms(f, &c);
    if (f->nrx && !(c.actions & PL_FILTER_BLOCK)) check_regexes(f, &c);
    h->actions = c.actions;
    h->limited = c.limited;
    h->line = c.actions & PL_FILTER_BLOCK ? c.line[2] : c.actions & PL_FILTER_FLAG ? c.line[1] : c.line[0];
    if ((c.actions & PL_FILTER_MASK) && !(c.actions & PL_FILTER_BLOCK)) h->masked = mask_text(&c, &h->masked_len);
    free(c.marks);
    return h->actions;
}

void pl_filter_hit_release(pl_filter_hit *h) {
    free(h->masked);
    h->masked = NULL;
}
