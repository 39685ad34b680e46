/* alloc.h — allocation that never returns NULL.
 *
 * Owns: the one place where out-of-memory is handled. Every function here
 * aborts the process (after a log line) when the allocator fails, so callers
 * never check for NULL. Free with free().
 */
#ifndef PL_ALLOC_H
#define PL_ALLOC_H

#include <stddef.h>

void *pl_malloc(size_t n);
void *pl_calloc(size_t count, size_t size);
void *pl_realloc(void *p, size_t n);
char *pl_strdup(const char *s);
char *pl_strndup(const char *s, size_t n);

#endif
