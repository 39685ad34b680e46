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

/* Called once at the start of main: mimalloc (the release build's allocator)
 * gives a span of free memory back to the kernel at once instead of 25 ms
 * later. Its delayed decommit runs only when the same segment is touched
 * again, so a server that goes quiet after a wave of connections kept the
 * wave's transient buffers resident: ~200 bytes per idle connection
 * (docs/benchmarks.md "idle memory: mimalloc's delayed decommit"). The
 * MIMALLOC_DECOMMIT_DELAY environment variable, when set, wins. No-op
 * without mimalloc. */
void pl_alloc_tune(void);

#endif
