/* main.c — runs every unit test registered in list.h; an optional argument
 * selects tests whose name contains it. Ends with "N passed, N failed". */
#include "test.h"

int pl_test_failed;

#define TEST_ENTRY(name) void test_##name(void);
#include "list.h"
#undef TEST_ENTRY

static const struct { const char *name; void (*fn)(void); } tests[] = {
#define TEST_ENTRY(name) { #name, test_##name },
#include "list.h"
#undef TEST_ENTRY
};

int main(int argc, char **argv) {
    int passed = 0, failed = 0;
    for (size_t i = 0; i < sizeof tests / sizeof tests[0]; i++) {
        if (argc > 1 && !strstr(tests[i].name, argv[1])) continue;
        pl_test_failed = 0;
        tests[i].fn();
        printf("%s %s\n", pl_test_failed ? "FAIL" : "ok  ", tests[i].name);
        if (pl_test_failed) failed++; else passed++;
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
