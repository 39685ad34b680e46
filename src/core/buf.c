/* buf.c — refcounted buffers and the string builder (see buf.h). */
#include "buf.h"
#include "alloc.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

pl_rbuf *pl_rbuf_new(size_t cap) {
    pl_rbuf *b = pl_malloc(sizeof *b + cap);
    b->refs = 1;
    b->len = 0;
    b->cap = (uint32_t)cap;
    return b;
}

pl_rbuf *pl_rbuf_copy(const void *p, size_t n) {
    pl_rbuf *b = pl_rbuf_new(n);
    memcpy(b->data, p, n);
    b->len = (uint32_t)n;
    return b;
}

void pl_rbuf_unref(pl_rbuf **bp) {
    pl_rbuf *b = *bp;
    *bp = NULL;
    if (b && --b->refs == 0) free(b);
}

void pl_sbuf_init(pl_sbuf *s) { s->p = NULL; s->len = s->cap = 0; }

void pl_sbuf_release(pl_sbuf *s) { free(s->p); pl_sbuf_init(s); }

void pl_sbuf_reserve(pl_sbuf *s, size_t extra) {
    if (s->len + extra + 1 <= s->cap) return;
    size_t cap = s->cap ? s->cap : 64;
    while (cap < s->len + extra + 1) cap *= 2;
    s->p = pl_realloc(s->p, cap);
    s->cap = cap;
}

void pl_sbuf_add(pl_sbuf *s, const void *p, size_t n) {
    pl_sbuf_reserve(s, n);
    memcpy(s->p + s->len, p, n);
    s->len += n;
    s->p[s->len] = '\0';
}

void pl_sbuf_adds(pl_sbuf *s, const char *str) { pl_sbuf_add(s, str, strlen(str)); }

void pl_sbuf_addc(pl_sbuf *s, char c) { pl_sbuf_add(s, &c, 1); }

void pl_sbuf_printf(pl_sbuf *s, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n <= 0) return;
    pl_sbuf_reserve(s, (size_t)n);
    va_start(ap, fmt);
    vsnprintf(s->p + s->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    s->len += (size_t)n;
}

void pl_sbuf_addu(pl_sbuf *s, uint64_t v) {
    char tmp[24];
    char *p = tmp + sizeof tmp;
    do {
        *--p = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    pl_sbuf_add(s, p, (size_t)(tmp + sizeof tmp - p));
}

void pl_sbuf_addi(pl_sbuf *s, int64_t v) {
    if (v < 0) {
        pl_sbuf_addc(s, '-');
        pl_sbuf_addu(s, (uint64_t)0 - (uint64_t)v);
    } else {
        pl_sbuf_addu(s, (uint64_t)v);
    }
}

void pl_sbuf_add_json_str(pl_sbuf *s, const char *str, size_t n) {
    static const char hex[] = "0123456789abcdef";
    pl_sbuf_reserve(s, n + 2);
    s->p[s->len++] = '"';
    size_t run = 0;     /* start of the pending run of bytes needing no escape */
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)str[i];
        if (c >= 0x20 && c != '"' && c != '\\') continue;
        pl_sbuf_add(s, str + run, i - run);
        run = i + 1;
        char esc[6] = {'\\', 0, 0, 0, 0, 0};
        size_t elen = 2;
        switch (c) {
        case '"':  esc[1] = '"'; break;
        case '\\': esc[1] = '\\'; break;
        case '\n': esc[1] = 'n'; break;
        case '\r': esc[1] = 'r'; break;
        case '\t': esc[1] = 't'; break;
        case '\b': esc[1] = 'b'; break;
        case '\f': esc[1] = 'f'; break;
        default:
            esc[1] = 'u'; esc[2] = '0'; esc[3] = '0';
            esc[4] = hex[c >> 4]; esc[5] = hex[c & 15];
            elen = 6;
        }
        pl_sbuf_add(s, esc, elen);
    }
    pl_sbuf_add(s, str + run, n - run);
    pl_sbuf_addc(s, '"');
}

const char *pl_sbuf_cstr(pl_sbuf *s) {
    if (!s->p) pl_sbuf_reserve(s, 0), s->p[0] = '\0';
    return s->p;
}
