/* test.h — the unit test harness: one list registers every test (libuv).
 *
 * A test file defines tests with TEST(name) { ... } and uses CHECK(expr) /
 * CHECK_EQ(a, b) / CHECK_STR(a, b). Each tests/unit/test_*.c is listed in
 * tests/unit/list.h with TEST_ENTRY(name) lines, and main.c runs them all,
 * printing "N passed, N failed" last. A failing CHECK returns from the test.
 */
#ifndef PL_TEST_H
#define PL_TEST_H

#include <stdio.h>
#include <string.h>
#include <stdint.h>

extern int pl_test_failed;   /* set by CHECK in the running test */

#define TEST(name) void test_##name(void); void test_##name(void)

#define CHECK(expr) do { if (!(expr)) { \
    fprintf(stderr, "  %s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #expr); \
    pl_test_failed = 1; return; } } while (0)

#define CHECK_EQ(a, b) do { long long _a = (long long)(a), _b = (long long)(b); \
    if (_a != _b) { fprintf(stderr, "  %s:%d: %s == %s failed: %lld != %lld\n", \
    __FILE__, __LINE__, #a, #b, _a, _b); pl_test_failed = 1; return; } } while (0)

#define CHECK_STR(a, b) do { const char *_a = (a), *_b = (b); \
    if (!_a || !_b || strcmp(_a, _b) != 0) { fprintf(stderr, \
    "  %s:%d: %s == %s failed: \"%s\" != \"%s\"\n", __FILE__, __LINE__, #a, #b, \
    _a ? _a : "(null)", _b ? _b : "(null)"); pl_test_failed = 1; return; } } while (0)

#endif
