/* sse.c — the event-stream reader (see sse.h).
 *
 * Per line (the spec's "interpret as an event stream"):
 *   ""            dispatch: the last event ID becomes the ID buffer; when
 *                 the data buffer is not empty, its text minus the last
 *                 "\n" goes to the callback; the data buffer empties
 *   ":..."        a comment (the server's `: ping` heartbeats): ignored
 *   "name:value"  a field (one space after the colon is dropped); "name"
 *                 alone is a field with an empty value
 *   data          appends value and "\n" to the data buffer
 *   id            sets the ID buffer (unless the value holds a NUL)
 *   event, retry  ignored: the server sends neither, and `type` in the data
 *                 says what an event is
 * Bytes arrive in any split: a line may end in one read and its LF (after a
 * CR) come in the next, which after_cr remembers.
 */
#include "sse.h"

#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"

void pc_sse_init(pc_sse *p) {
    memset(p, 0, sizeof *p);
    pl_sbuf_init(&p->line);
    pl_sbuf_init(&p->data);
    pl_sbuf_init(&p->idbuf);
}

void pc_sse_release(pc_sse *p) {
    pl_sbuf_release(&p->line);
    pl_sbuf_release(&p->data);
    pl_sbuf_release(&p->idbuf);
    free(p->last_id);
    memset(p, 0, sizeof *p);
}

void pc_sse_set_last_id(pc_sse *p, const char *id) {
    free(p->last_id);
    p->last_id = id ? pl_strdup(id) : NULL;
    p->idbuf.len = 0;
    if (id) pl_sbuf_adds(&p->idbuf, id);
}

void pc_sse_restart(pc_sse *p) {
    p->line.len = 0;
    p->data.len = 0;
    p->after_cr = 0;
    char *keep = p->last_id;
    p->last_id = NULL;
    pc_sse_set_last_id(p, keep);
    free(keep);
}

const char *pc_sse_last_id(const pc_sse *p) { return p->last_id && *p->last_id ? p->last_id : NULL; }

static int dispatch(pc_sse *p, pc_sse_fn fn, void *ud) {
    free(p->last_id);
    p->last_id = pl_strndup(p->idbuf.p ? p->idbuf.p : "", p->idbuf.len);
    if (p->data.len == 0) return 0;
    size_t n = p->data.len - 1;              /* without the last "\n" */
    p->data.p[n] = '\0';
    p->data.len = 0;
    return fn(ud, p->data.p, n);
}

static int line_done(pc_sse *p, pc_sse_fn fn, void *ud) {
    const char *l = p->line.p ? p->line.p : "";
    size_t n = p->line.len;
    p->line.len = 0;
    if (n == 0) return dispatch(p, fn, ud);
    if (l[0] == ':') return 0;
    const char *colon = memchr(l, ':', n);
    size_t fl = colon ? (size_t)(colon - l) : n;
    const char *v = colon ? colon + 1 : l + n;
    size_t vl = (size_t)(l + n - v);
    if (vl && *v == ' ') {
        v++;
        vl--;
    }
    if (fl == 4 && memcmp(l, "data", 4) == 0) {
        if (p->data.len + vl + 1 > PC_SSE_MAX) return -1;
        pl_sbuf_add(&p->data, v, vl);
        pl_sbuf_addc(&p->data, '\n');
    } else if (fl == 2 && memcmp(l, "id", 2) == 0 && !memchr(v, '\0', vl)) {
        p->idbuf.len = 0;
        pl_sbuf_add(&p->idbuf, v, vl);
    }
    return 0;
}

int pc_sse_feed(pc_sse *p, const char *buf, size_t n, pc_sse_fn fn, void *ud) {
    size_t i = 0;
    while (i < n) {
        if (p->after_cr) {
            p->after_cr = 0;
            if (buf[i] == '\n') {
                i++;
                continue;
            }
        }
        size_t j = i;
        while (j < n && buf[j] != '\r' && buf[j] != '\n') j++;
        if (p->line.len + (j - i) > PC_SSE_MAX) return -1;
        if (j > i) pl_sbuf_add(&p->line, buf + i, j - i);
        if (j == n) break;
        p->after_cr = buf[j] == '\r';
        i = j + 1;
        int r = line_done(p, fn, ud);
        if (r) return r;
    }
    return 0;
}
