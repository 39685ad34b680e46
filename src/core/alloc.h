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

/* The release build links mimalloc (docs/design.md "Dependencies") with
 * its own defaults: a decommit delay of 0 (free spans back to the kernel
 * at once) saved ~100 bytes per idle connection but cost a madvise, and on
 * a VM a TLB shootdown across the other core, for every span freed: the
 * dm peak halved, the storm took a third longer (docs/benchmarks.md
 * "thirty-third session"). MIMALLOC_DECOMMIT_DELAY=0 in the environment
 * still chooses that. */

#endif
