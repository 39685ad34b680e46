/* buf.h — reference-counted byte buffers and a growable string builder.
 *
 * Owns: pl_rbuf, the unit of outgoing data. A frame sent to many connections
 * (fan-out) is encoded once into an rbuf and every connection's write queue
 * holds a reference (mosquitto's message store, h2o's shared chunks). Not
 * thread-safe: rbufs live on the event loop thread.
 *
 * pl_sbuf is a plain growable buffer for building text (JSON, HTTP heads).
 */
#ifndef PL_BUF_H
#define PL_BUF_H

#include <stddef.h>
#include <stdint.h>

typedef struct pl_rbuf {
    uint32_t refs;     /* references held; freed when it drops to 0 */
    uint32_t len;      /* bytes used in data                        */
    uint32_t cap;      /* bytes allocated for data                  */
    uint8_t  data[];
} pl_rbuf;

/* A new buffer with capacity cap and one reference (the caller's). */
pl_rbuf *pl_rbuf_new(size_t cap);
/* A new buffer holding a copy of p[0..n), one reference. */
pl_rbuf *pl_rbuf_copy(const void *p, size_t n);
static inline pl_rbuf *pl_rbuf_ref(pl_rbuf *b) { b->refs++; return b; }
/* Drops the caller's reference and NULLs *b. */
void pl_rbuf_unref(pl_rbuf **b);

typedef struct pl_sbuf {
    char  *p;          /* heap, NUL-terminated when len > 0 or after pl_sbuf_cstr */
    size_t len;
    size_t cap;
} pl_sbuf;

void  pl_sbuf_init(pl_sbuf *s);
void  pl_sbuf_release(pl_sbuf *s);
void  pl_sbuf_reserve(pl_sbuf *s, size_t extra);
void  pl_sbuf_add(pl_sbuf *s, const void *p, size_t n);
void  pl_sbuf_adds(pl_sbuf *s, const char *str);
void  pl_sbuf_addc(pl_sbuf *s, char c);
void  pl_sbuf_printf(pl_sbuf *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void  pl_sbuf_addi(pl_sbuf *s, int64_t v);
void  pl_sbuf_addu(pl_sbuf *s, uint64_t v);
/* Appends str as a JSON string literal (with quotes), escaping as RFC 8259
 * requires. str must be valid UTF-8 (it is passed through unchanged). */
void  pl_sbuf_add_json_str(pl_sbuf *s, const char *str, size_t n);
const char *pl_sbuf_cstr(pl_sbuf *s);

#endif
