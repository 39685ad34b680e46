/* test_store_pg.c — the PostgreSQL side of the store contract tests
 * (test_store.c): a fresh database per test on the server $PARLEY_TEST_PG
 * names. Placeholder until the PostgreSQL backend lands. */
#include <stddef.h>

int t_pg_fresh_url(const char *base, char *out, size_t n);

int t_pg_fresh_url(const char *base, char *out, size_t n) {
    (void)base;
    (void)out;
    (void)n;
    return -1;
}
