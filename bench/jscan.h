/* jscan.h — a one-pass scanner for the top-level fields of the server's
 * WebSocket messages (the hot path: every delivered event goes through it).
 *
 * Owns: pulling the few fields the bench needs (type, conversation, seq, req,
 * kind, body, duplicate, code) out of one JSON object without building a
 * tree. Nested objects and arrays are skipped (strings inside them are
 * honoured, escapes included). Strings are returned raw (still escaped):
 * the bench only compares them with ASCII constants or reads its own bodies,
 * which contain no escapes. Rare messages (`ready`) are parsed with jansson.
 * Does not own: validation. The server's JSON is trusted to be well formed;
 * a malformed message makes jscan_msg return -1 and the bench counts an error.
 */
#ifndef PB_JSCAN_H
#define PB_JSCAN_H

#include <stddef.h>
#include <stdint.h>

typedef struct jstr { const char *p; size_t n; } jstr;   /* n = 0: absent */

typedef struct jmsg {
    jstr    type, kind, body, code, cmid;
    int64_t conversation;   /* 0 if absent                                    */
    int64_t seq;            /* -1 if absent                                   */
    int64_t req;            /* numeric req, -1 if absent or not a number       */
    int     duplicate;      /* 1 if "duplicate":true                           */
} jmsg;

/* Scans the object p[0..n). Returns 0, or -1 if it is not an object. */
int jscan_msg(const char *p, size_t n, jmsg *m);

static inline int jstr_is(jstr s, const char *lit, size_t litlen) {
    return s.n == litlen && __builtin_memcmp(s.p, lit, litlen) == 0;
}
#define JSTR_IS(s, lit) jstr_is((s), (lit), sizeof(lit) - 1)

#endif
