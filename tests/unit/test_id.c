/* test_id.c — the Snowflake id generator (src/core/id.c): layout, and
 * monotonicity through clock steps and counter wrap. */
#include "test.h"

#include "core/id.h"

#define T0 (PL_ID_EPOCH_MS + 86400000LL)      /* a day after the epoch */

static int64_t id_ms(uint64_t id) { return (int64_t)(id >> 22); }
static int id_node(uint64_t id) { return (int)((id >> 12) & 0x3ff); }
static int id_counter(uint64_t id) { return (int)(id & 0xfff); }

TEST(id_monotonic) {
    pl_idgen g;
    pl_idgen_init(&g, 7);
    uint64_t prev = 0;
    int64_t now = T0;
    for (int i = 0; i < 20000; i++) {
        if (i % 100 == 0) now += 1;               /* mixes same-ms and new-ms ids */
        uint64_t id = pl_idgen_next(&g, now);
        CHECK(id > prev);
        prev = id;
    }
    CHECK(prev < (1ull << 63));                   /* fits a signed 64-bit column */
}

TEST(id_layout_and_node_bits) {
    pl_idgen g;
    pl_idgen_init(&g, 5);
    uint64_t id = pl_idgen_next(&g, T0 + 123);
    CHECK_EQ(id_ms(id), 86400000LL + 123);
    CHECK_EQ(id_node(id), 5);
    CHECK_EQ(id_counter(id), 0);
    CHECK_EQ(pl_id_time(id), T0 + 123);
    CHECK_EQ(id_counter(pl_idgen_next(&g, T0 + 123)), 1);

    pl_idgen h;
    pl_idgen_init(&h, 1023);
    CHECK_EQ(id_node(pl_idgen_next(&h, T0)), 1023);
    pl_idgen_init(&h, 1024 + 3);                  /* masked to 10 bits */
    CHECK_EQ(id_node(pl_idgen_next(&h, T0)), 3);
    /* two nodes in the same millisecond never collide */
    pl_idgen x, y;
    pl_idgen_init(&x, 1);
    pl_idgen_init(&y, 2);
    CHECK(pl_idgen_next(&x, T0) != pl_idgen_next(&y, T0));
    /* before the epoch clamps to 0 ms */
    pl_idgen_init(&h, 9);
    CHECK_EQ(id_ms(pl_idgen_next(&h, 1000)), 0);
}

TEST(id_clock_going_backwards) {
    pl_idgen g;
    pl_idgen_init(&g, 1);
    uint64_t a = pl_idgen_next(&g, T0 + 5000);
    uint64_t b = pl_idgen_next(&g, T0);           /* clock stepped back 5 s */
    uint64_t c = pl_idgen_next(&g, T0 + 1);
    CHECK(b > a);
    CHECK(c > b);
    CHECK_EQ(pl_id_time(b), T0 + 5000);           /* keeps its last ms */
    CHECK_EQ(id_counter(b), 1);
    uint64_t d = pl_idgen_next(&g, T0 + 5001);    /* clock caught up */
    CHECK(d > c);
    CHECK_EQ(pl_id_time(d), T0 + 5001);
    CHECK_EQ(id_counter(d), 0);
}

TEST(id_counter_wrap_within_one_ms) {
    pl_idgen g;
    pl_idgen_init(&g, 2);
    uint64_t prev = 0, id = 0;
    for (int i = 0; i < 4096; i++) {
        id = pl_idgen_next(&g, T0);
        CHECK(id > prev);
        CHECK_EQ(pl_id_time(id), T0);
        CHECK_EQ(id_counter(id), i);
        prev = id;
    }
    id = pl_idgen_next(&g, T0);                   /* 4097th: borrows T0 + 1 */
    CHECK(id > prev);
    CHECK_EQ(pl_id_time(id), T0 + 1);
    CHECK_EQ(id_counter(id), 0);
    CHECK_EQ(id_node(id), 2);
    prev = id;
    id = pl_idgen_next(&g, T0 + 1);               /* the real T0 + 1 continues */
    CHECK(id > prev);
    CHECK_EQ(id_counter(id), 1);
}
