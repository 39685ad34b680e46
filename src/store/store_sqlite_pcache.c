/* store_sqlite_pcache.c — a thin wrapper over SQLite's own page cache that
 * skips the truncation a commit asks for when the cache holds nothing to
 * truncate.
 *
 * Owns: the wrapper's methods and its per-cache bookkeeping (the largest
 * page number a cache may hold, and how many pages sit at the b-tree's
 * temporary page number); every page and every other decision stays with
 * SQLite's default cache (pcache1), which the wrapper calls.
 *
 * Why: every COMMIT ends with a truncation of the connection's page cache
 * to the database's size. pcache1 does that cheaply when nothing past the
 * size was ever cached, and otherwise walks its whole hash table (16,384
 * buckets for the writer's 64 MiB cache). A b-tree split that leaves its
 * new pages out of order (balance_nonroot) swaps their numbers through a
 * temporary one, the lock-byte page (1 GiB / page size + 1 = 262,145 at
 * 4 KiB), so pcache1 remembers that number as its largest key and the
 * next commit walks everything: 8.5-13 % of the store writer's time at
 * half of the 1:1 peak (docs/benchmarks.md "a page-cache scan in every
 * commit"). The swap leaves no page at the temporary number, which the
 * wrapper can see and pcache1 cannot.
 *
 * Invariants:
 *   1. A truncation to iLimit reaches pcache1 unless the wrapper knows that
 *      no page numbered iLimit or more is cached: none sits at the
 *      temporary number (counted through xRekey, the only way a page gets
 *      there: the lock-byte page is never read or written) and every
 *      other number ever fetched or rekeyed to is below iLimit (maxkey,
 *      an upper bound that only a truncation lowers). Skipping one is then
 *      exactly what pcache1 would have done: nothing.
 *   2. Everything else goes to pcache1 unchanged, with pcache1's own
 *      cache object; the wrapper keeps no page.
 *   3. Installed once, before SQLite's first use in the process
 *      (sqlite3_config refuses it later, and then the default stays).
 */
#include <string.h>

#include "sqlite_int.h"

/* SQLite's PENDING_BYTE (sqlite3PendingByte): fixed at 1 GiB in every
 * build that is not a test build of SQLite itself. Were it different, the
 * temporary number would simply count as an ordinary one (maxkey): every
 * truncation would reach pcache1 again, as without the wrapper. */
#define PC_PENDING_BYTE 0x40000000u

typedef struct pc_cache {
    sqlite3_pcache *inner;     /* pcache1's cache                          */
    unsigned        temp;      /* the b-tree's temporary page number       */
    unsigned        maxkey;    /* >= every other number cached (invariant 1) */
    int             ntemp;     /* pages now at `temp`                      */
} pc_cache;

static sqlite3_pcache_methods2 pc_inner;       /* pcache1's methods        */
static unsigned long pc_skipped, pc_passed;    /* truncations (tests)      */
static unsigned long pc_swaps;                 /* rekeys to `temp` (tests) */

static int pc_init(void *arg) {
    (void)arg;
    return pc_inner.xInit ? pc_inner.xInit(pc_inner.pArg) : SQLITE_OK;
}

static void pc_shutdown(void *arg) {
    (void)arg;
    if (pc_inner.xShutdown) pc_inner.xShutdown(pc_inner.pArg);
}

static sqlite3_pcache *pc_create(int page_size, int extra, int purgeable) {
    pc_cache *c = sqlite3_malloc(sizeof *c);
    if (!c) return NULL;
    c->inner = pc_inner.xCreate(page_size, extra, purgeable);
    if (!c->inner) {
        sqlite3_free(c);
        return NULL;
    }
    c->temp = page_size > 0 ? PC_PENDING_BYTE / (unsigned)page_size + 1 : 0;
    c->maxkey = 0;
    c->ntemp = 0;
    return (sqlite3_pcache *)c;
}

static void pc_cachesize(sqlite3_pcache *p, int n) { pc_inner.xCachesize(((pc_cache *)p)->inner, n); }

static int pc_pagecount(sqlite3_pcache *p) { return pc_inner.xPagecount(((pc_cache *)p)->inner); }

static sqlite3_pcache_page *pc_fetch(sqlite3_pcache *p, unsigned key, int create) {
    pc_cache *c = (pc_cache *)p;
    sqlite3_pcache_page *pg = pc_inner.xFetch(c->inner, key, create);
    if (pg && key > c->maxkey) c->maxkey = key;   /* even `temp`: then always passed on */
    return pg;
}

static void pc_unpin(sqlite3_pcache *p, sqlite3_pcache_page *pg, int discard) {
    pc_inner.xUnpin(((pc_cache *)p)->inner, pg, discard);
}

static void pc_rekey(sqlite3_pcache *p, sqlite3_pcache_page *pg, unsigned from, unsigned to) {
    pc_cache *c = (pc_cache *)p;
    pc_inner.xRekey(c->inner, pg, from, to);
    if (from == c->temp && c->ntemp > 0) c->ntemp--;
    if (to == c->temp) {
        c->ntemp++;
        __atomic_add_fetch(&pc_swaps, 1, __ATOMIC_RELAXED);
    }
    else if (to > c->maxkey) c->maxkey = to;
}

static void pc_truncate(sqlite3_pcache *p, unsigned limit) {
    pc_cache *c = (pc_cache *)p;
    if (c->ntemp == 0 && c->maxkey < limit) {     /* invariant 1 */
        __atomic_add_fetch(&pc_skipped, 1, __ATOMIC_RELAXED);
        return;
    }
    __atomic_add_fetch(&pc_passed, 1, __ATOMIC_RELAXED);
    pc_inner.xTruncate(c->inner, limit);
    if (limit <= c->temp) c->ntemp = 0;           /* pcache1 dropped them too */
    if (limit > 0 && c->maxkey >= limit) c->maxkey = limit - 1;
}

static void pc_destroy(sqlite3_pcache *p) {
    pc_cache *c = (pc_cache *)p;
    pc_inner.xDestroy(c->inner);
    sqlite3_free(c);
}

static void pc_shrink(sqlite3_pcache *p) {
    if (pc_inner.xShrink) pc_inner.xShrink(((pc_cache *)p)->inner);
}

static sqlite3_pcache_methods2 pc_methods = {
    .iVersion = 1, .pArg = NULL, .xInit = pc_init, .xShutdown = pc_shutdown, .xCreate = pc_create,
    .xCachesize = pc_cachesize, .xPagecount = pc_pagecount, .xFetch = pc_fetch, .xUnpin = pc_unpin,
    .xRekey = pc_rekey, .xTruncate = pc_truncate, .xDestroy = pc_destroy, .xShrink = pc_shrink,
};

int sq_pcache_install(void) {
    static int installed;
    if (installed) return 0;
    sqlite3_pcache_methods2 cur;
    memset(&cur, 0, sizeof cur);
    if (sqlite3_config(SQLITE_CONFIG_GETPCACHE2, &cur) != SQLITE_OK || !cur.xCreate)
        return -1;
    pc_inner = cur;
    pc_methods.iVersion = cur.iVersion;           /* pcache1's is 1 (xShrink included) */
    if (sqlite3_config(SQLITE_CONFIG_PCACHE2, &pc_methods) != SQLITE_OK) return -1;   /* invariant 3 */
    installed = 1;
    return 0;
}

void sq_pcache_counts(unsigned long *skipped, unsigned long *passed, unsigned long *swaps) {
    *skipped = __atomic_load_n(&pc_skipped, __ATOMIC_RELAXED);
    *passed = __atomic_load_n(&pc_passed, __ATOMIC_RELAXED);
    *swaps = __atomic_load_n(&pc_swaps, __ATOMIC_RELAXED);
}
