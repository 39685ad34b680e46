/* test_core.c — src/core: the int64 map, refcounted buffers, JSON escaping,
 * the lookalike key of names, the log line limiter. */
#include "test.h"

#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "core/lookalike.h"
#include "core/map.h"

TEST(map_put_get_del) {
    pl_map m;
    pl_map_init(&m);
    for (int64_t k = 1; k <= 5000; k++) pl_map_put(&m, k * 7919, (void *)(intptr_t)k);
    CHECK_EQ(m.len, 5000);
    for (int64_t k = 1; k <= 5000; k++) CHECK_EQ((intptr_t)pl_map_get(&m, k * 7919), k);
    /* delete every other key; the rest must stay reachable (backward shift) */
    for (int64_t k = 1; k <= 5000; k += 2) CHECK_EQ((intptr_t)pl_map_del(&m, k * 7919), k);
    for (int64_t k = 1; k <= 5000; k++) {
        void *v = pl_map_get(&m, k * 7919);
        if (k % 2) CHECK(v == NULL);
        else CHECK_EQ((intptr_t)v, k);
    }
    CHECK(pl_map_del(&m, 42) == NULL);
    CHECK_EQ(m.len, 2500);
    pl_map_release(&m);
}

TEST(map_replace) {
    pl_map m;
    pl_map_init(&m);
    pl_map_put(&m, -5, (void *)1);
    pl_map_put(&m, -5, (void *)2);
    CHECK_EQ(m.len, 1);
    CHECK_EQ((intptr_t)pl_map_get(&m, -5), 2);
    pl_map_release(&m);
}

TEST(rbuf_refcount) {
    pl_rbuf *b = pl_rbuf_copy("abc", 3);
    pl_rbuf *r = pl_rbuf_ref(b);
    CHECK_EQ(b->refs, 2);
    pl_rbuf_unref(&r);
    CHECK(r == NULL);
    CHECK_EQ(b->refs, 1);
    CHECK(memcmp(b->data, "abc", 3) == 0);
    pl_rbuf_unref(&b);
    CHECK(b == NULL);
}

TEST(sbuf_json_escape) {
    pl_sbuf s;
    pl_sbuf_init(&s);
    const char in[] = "a\"b\\c\n\x1f\xc3\xa9";
    pl_sbuf_add_json_str(&s, in, sizeof in - 1);
    CHECK_STR(pl_sbuf_cstr(&s), "\"a\\\"b\\\\c\\n\\u001f\xc3\xa9\"");
    pl_sbuf_release(&s);
    pl_sbuf_printf(&s, "%d-%s", 42, "x");
    pl_sbuf_addi(&s, -7);
    CHECK_STR(pl_sbuf_cstr(&s), "42-x-7");
    pl_sbuf_release(&s);
}

#include "core/ratelimit.h"

TEST(bucket_burst_then_refill) {
    pl_bucket b = {0};
    int64_t t = 1000;
    for (int i = 0; i < 10; i++) CHECK_EQ(pl_bucket_take(&b, 5, 10, 1, t), 0);   /* the burst */
    int64_t wait = pl_bucket_take(&b, 5, 10, 1, t);
    CHECK(wait > 0 && wait <= 201);                 /* one token every 200 ms */
    CHECK(pl_bucket_take(&b, 5, 10, 1, t + 100) > 0);
    CHECK_EQ(pl_bucket_take(&b, 5, 10, 1, t + 201), 0);
    CHECK(pl_bucket_take(&b, 5, 10, 1, t + 201) > 0);
    CHECK_EQ(pl_bucket_take(&b, 5, 10, 1, t + 10000), 0);   /* refilled, capped at burst */
    for (int i = 0; i < 9; i++) CHECK_EQ(pl_bucket_take(&b, 5, 10, 1, t + 10000), 0);
    CHECK(pl_bucket_take(&b, 5, 10, 1, t + 10000) > 0);
}

TEST(limiter_keys_and_sweep) {
    pl_limiter l;
    pl_limiter_init(&l, 10, 2);
    CHECK_EQ(pl_limiter_take(&l, 1, 1, 1000), 0);
    CHECK_EQ(pl_limiter_take(&l, 1, 1, 1000), 0);
    CHECK(pl_limiter_take(&l, 1, 1, 1000) > 0);       /* key 1 is out */
    CHECK_EQ(pl_limiter_take(&l, 2, 1, 1000), 0);     /* key 2 is not */
    pl_limiter_sweep(&l, 1050);                         /* not refilled yet */
    CHECK_EQ(l.buckets.len, 2);
    pl_limiter_sweep(&l, 1300);                         /* both full again */
    CHECK_EQ(l.buckets.len, 0);
    pl_limiter_release(&l);
    pl_limiter_init(&l, 0, 1);                          /* rate 0: unlimited */
    for (int i = 0; i < 100; i++) CHECK_EQ(pl_limiter_take(&l, 5, 1, 1000), 0);
    pl_limiter_release(&l);
}

TEST(sbuf_integers) {
    pl_sbuf s;
    pl_sbuf_init(&s);
    pl_sbuf_addi(&s, 0);
    pl_sbuf_addc(&s, ' ');
    pl_sbuf_addi(&s, -9223372036854775807LL - 1);
    pl_sbuf_addc(&s, ' ');
    pl_sbuf_addu(&s, 18446744073709551615ULL);
    pl_sbuf_addc(&s, ' ');
    pl_sbuf_addi(&s, 1234567);
    CHECK_STR(pl_sbuf_cstr(&s), "0 -9223372036854775808 18446744073709551615 1234567");
    pl_sbuf_release(&s);
}

#include "core/utf8.h"

/* pl_utf8_combining against a few marks of each kind and their neighbours;
 * pl_utf8_first decodes 1- to 4-byte code points. */
TEST(utf8_combining_marks) {
    static const uint32_t marks[] = {0x300, 0x301, 0x36f, 0x483, 0x489 /* Me */, 0x93e /* Mc */, 0x1ab0,
                                     0x1dc0, 0x20d0, 0x20dd /* Me */, 0xfe20, 0xfe0f, 0x1d165, 0xe0100, 0xe01ef};
    static const uint32_t others[] = {0, 'a', 0x2ff, 0x370, 0xe9, 0x482, 0x48a, 0x905, 0x200b, 0x202e,
                                      0x3042, 0x1f44d, 0xe01f0, 0x10ffff};
    for (size_t i = 0; i < sizeof marks / sizeof marks[0]; i++) CHECK(pl_utf8_combining(marks[i]));
    for (size_t i = 0; i < sizeof others / sizeof others[0]; i++) CHECK(!pl_utf8_combining(others[i]));
    CHECK_EQ(pl_utf8_first("", 0), 0);
    CHECK_EQ(pl_utf8_first("A", 1), 'A');
    CHECK_EQ(pl_utf8_first("\xcc\x81x", 3), 0x301);
    CHECK_EQ(pl_utf8_first("\xe6\x97\xa5", 3), 0x65e5);
    CHECK_EQ(pl_utf8_first("\xf0\x9f\x91\x8d", 4), 0x1f44d);
}

/* Names take the emoji a keyboard sends (a selector after a character, a
 * ZWJ between pictographs) but no other invisible formatting (audit G2). */
TEST(utf8_invisible_outside_emoji) {
    const char *ok[] = {"\xe2\x9d\xa4\xef\xb8\x8f Team",                                  /* ❤️ */
                        "\xf0\x9f\x91\xa8\xe2\x80\x8d\xf0\x9f\x91\xa9",                  /* 👨‍👩 */
                        "\xe2\x9d\xa4\xef\xb8\x8f\xe2\x80\x8d\xf0\x9f\x94\xa5",          /* ❤️‍🔥 */
                        "1\xef\xb8\x8f\xe2\x83\xa3", "plain", ""};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
        CHECK_EQ(pl_utf8_has_invisible_outside_emoji((const uint8_t *)ok[i], strlen(ok[i])), 0);
    const char *bad[] = {"\xef\xb8\x8fx",                        /* a selector first */
                         "a \xef\xb8\x8f",                       /* after a space */
                         "a\xe2\x80\x8d" "b",                    /* ZWJ between letters */
                         "\xe2\x9d\xa4\xe2\x80\x8d",             /* ZWJ last */
                         "\xe2\x80\x8d\xe2\x9d\xa4",             /* ZWJ first */
                         "a\xe2\x80\x8b" "b",                    /* ZWSP */
                         "\xe2\x80\xae" "evil",                  /* RLO */
                         "\xe2\x9d\xa4\xef\xb8\x8f\xef\xb8\x8f", /* a selector after a selector */
                         "general\xe2\xa0\x80",                /* U+2800, blank braille (audit O5) */
                         "general\xf0\x93\x90\xb0",           /* U+13430, a hieroglyph format control */
                         "general\xf0\x9b\xb2\xa0"};          /* U+1BCA0, a shorthand format control */
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        CHECK_EQ(pl_utf8_has_invisible_outside_emoji((const uint8_t *)bad[i], strlen(bad[i])), 1);
}

/* A preview's "first N characters" are what a reader sees as N: never an
 * accent without its letter, half a ZWJ family, half a flag (audit U2). */
TEST(utf8_prefix_cuts_between_characters) {
    CHECK_EQ(pl_utf8_prefix("abc", 3, 2), 2);
    CHECK_EQ(pl_utf8_prefix("abc", 3, 5), 3);
    CHECK_EQ(pl_utf8_prefix("\xc3\xa9" "x", 3, 1), 2);                         /* é precomposed */
    CHECK_EQ(pl_utf8_prefix("e\xcc\x81" "x", 4, 1), 3);                        /* e + U+0301 */
    const char fam[] = "a\xf0\x9f\x91\xa8\xe2\x80\x8d\xf0\x9f\x91\xa9\xe2\x80\x8d\xf0\x9f\x91\xa7" "b";
    CHECK_EQ(pl_utf8_prefix(fam, sizeof fam - 1, 2), sizeof fam - 2);          /* a + the family */
    CHECK_EQ(pl_utf8_prefix(fam, sizeof fam - 1, 1), 1);
    const char flags[] = "\xf0\x9f\x87\xab\xf0\x9f\x87\xb7\xf0\x9f\x87\xab\xf0\x9f\x87\xb7";   /* 🇫🇷🇫🇷 */
    CHECK_EQ(pl_utf8_prefix(flags, sizeof flags - 1, 1), 8);
    CHECK_EQ(pl_utf8_prefix(flags, sizeof flags - 1, 2), 16);
    const char odd[] = "\xf0\x9f\x87\xab\xf0\x9f\x87\xb7\xf0\x9f\x87\xab";   /* a flag and a lone indicator */
    CHECK_EQ(pl_utf8_prefix(odd, sizeof odd - 1, 1), 8);
    const char tone[] = "\xf0\x9f\x91\x8d\xf0\x9f\x8f\xbd" "x";              /* 👍🏽 */
    CHECK_EQ(pl_utf8_prefix(tone, sizeof tone - 1, 1), 8);
    const char heart[] = "\xe2\x9d\xa4\xef\xb8\x8f" "x";                     /* ❤️ */
    CHECK_EQ(pl_utf8_prefix(heart, sizeof heart - 1, 1), 6);
    const char key[] = "1\xef\xb8\x8f\xe2\x83\xa3" "x";                       /* 1️⃣ */
    CHECK_EQ(pl_utf8_prefix(key, sizeof key - 1, 1), 7);
}

/* Same key: names that look alike. The key is not for showing. */
static int same_key(const char *a, const char *b) {
    char *ka = pl_lookalike_key(a, strlen(a)), *kb = pl_lookalike_key(b, strlen(b));
    int same = ka && kb && !strcmp(ka, kb);
    free(ka);
    free(kb);
    return same;
}

TEST(lookalike_keys) {
    CHECK(same_key("general", "g\xd0\xb5" "neral"));                     /* Cyrillic ie */
    CHECK(same_key("general", "\xef\xbd\x87\xef\xbd\x85\xef\xbd\x8e\xef\xbd\x85\xef\xbd\x92"
                              "\xef\xbd\x81\xef\xbd\x8c"));                     /* fullwidth */
    CHECK(same_key("general", "\xe2\x84\x8a" "eneral"));                 /* U+210A script g */
    CHECK(same_key("caf\xc3\xa9", "cafe\xcc\x81"));                   /* NFC and NFD */
    CHECK(same_key("file", "\xef\xac\x81" "le"));                        /* the fi ligature */
    CHECK(same_key("stra\xc3\x9f" "e", "strasse"));                    /* case folding */
    CHECK(same_key("team1", "teaml"));         /* alike, but ASCII pairs are told apart: */
    CHECK(pl_lookalike_both_ascii("team1", "teaml"));
    CHECK(!pl_lookalike_both_ascii("general", "g\xd0\xb5" "neral"));
    CHECK(!same_key("general", "generals"));
    CHECK(!same_key("general", "general."));
    CHECK(!same_key("\xe6\x97\xa5\xe6\x9c\xac", "\xe6\x97\xa5"));
    CHECK(pl_lookalike_key("\xff", 1) == NULL);                       /* not UTF-8 */
}

#include "core/log.h"

/* pl_log_due: the first line goes, the ones within every_ms are held back
 * and counted, the next one (at exactly every_ms) says how many, and the
 * count restarts. Times are from 1000: a mono clock is never 0. */
TEST(log_limit_due_and_held) {
    pl_log_limit l = {0};
    int64_t held = -1;
    CHECK_EQ(pl_log_due(&l, 1000, 5000, &held), 1);         /* zeroed: due now */
    CHECK_EQ(held, 0);
    CHECK_EQ(pl_log_due(&l, 1000, 5000, &held), 0);         /* same ms */
    CHECK_EQ(pl_log_due(&l, 1000, 5500, &held), 0);
    CHECK_EQ(pl_log_due(&l, 1000, 5999, &held), 0);         /* 1 ms short */
    CHECK_EQ(l.held, 3);
    held = -1;
    CHECK_EQ(pl_log_due(&l, 1000, 6000, &held), 1);         /* exactly every_ms */
    CHECK_EQ(held, 3);
    CHECK_EQ(l.held, 0);                                    /* restarted */
    CHECK_EQ(pl_log_due(&l, 1000, 6999, &held), 0);         /* measured from 6000 */
    CHECK_EQ(pl_log_due(&l, 1000, 7000, &held), 1);
    CHECK_EQ(held, 1);
    CHECK_EQ(pl_log_due(&l, 1000, 60000, &held), 1);        /* a quiet spell: none held */
    CHECK_EQ(held, 0);
    CHECK_EQ(pl_log_due(&l, 1000, 60001, NULL), 0);         /* held may be NULL */
    CHECK_EQ(pl_log_due(&l, 1000, 61000, NULL), 1);
    CHECK_EQ(l.held, 0);
    l = (pl_log_limit){0};                                  /* zeroed again: due again */
    CHECK_EQ(pl_log_due(&l, 1000, 61001, &held), 1);
    l.at = 62000;                                           /* said by other means */
    CHECK_EQ(pl_log_due(&l, 1000, 62999, &held), 0);
    CHECK_EQ(pl_log_due(&l, 1000, 63000, &held), 1);
    CHECK_EQ(held, 1);
}

/* pl_log_hold / pl_log_flush: events in bulk (connections shed n at a
 * time) are added without a line; a flush writes one only with something
 * held and every_ms since the last, and a flush that writes none counts
 * nothing. */
TEST(log_limit_hold_and_flush) {
    pl_log_limit l = {0};
    int64_t held = -1;
    CHECK_EQ(pl_log_flush(&l, 1000, 5000, &held), 0);       /* nothing held: no line */
    CHECK_EQ(l.held, 0);
    CHECK_EQ(l.at, 0);
    pl_log_hold(&l, 0);
    CHECK_EQ(pl_log_flush(&l, 1000, 5000, &held), 0);       /* 0 shed: still nothing */
    pl_log_hold(&l, 7);
    CHECK_EQ(pl_log_flush(&l, 1000, 5000, &held), 1);
    CHECK_EQ(held, 7);
    pl_log_hold(&l, 40);
    CHECK_EQ(pl_log_flush(&l, 1000, 5100, &held), 0);       /* within the second */
    pl_log_hold(&l, 2);
    CHECK_EQ(pl_log_flush(&l, 1000, 5999, &held), 0);
    CHECK_EQ(l.held, 42);                                   /* flushes counted nothing */
    held = -1;
    CHECK_EQ(pl_log_flush(&l, 1000, 6000, &held), 1);       /* exactly every_ms */
    CHECK_EQ(held, 42);
    CHECK_EQ(pl_log_flush(&l, 1000, 9000, &held), 0);       /* restarted: nothing left */
    pl_log_hold(&l, 3);                                     /* mixed with pl_log_due */
    CHECK_EQ(pl_log_due(&l, 1000, 9000, &held), 1);
    CHECK_EQ(held, 3);
}
