/* test_auth.c — src/chat/auth.c: token formats, signatures, usernames. */
#include "test.h"

#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "chat/auth.h"

static int init_once(void) {
    static int done;
    if (done) return 0;
    char dir[] = "/tmp/pl-auth-XXXXXX";
    if (!mkdtemp(dir)) return -1;
    char err[300];
    int made;
    if (pl_auth_init(dir, err, sizeof err, &made) || !made) return -1;
    done = 1;
    return 0;
}

/* A key that cannot be made says where and why (audit E4 F5: "cannot
 * create token.key" alone). */
TEST(auth_init_error_names_path_and_reason) {
    char err[300] = "";
    int made;
    CHECK_EQ(pl_auth_init("/nonexistent-parley-dir", err, sizeof err, &made), -1);
    CHECK_STR(err, "cannot create /nonexistent-parley-dir/token.key: No such file or directory");
    char dir[] = "/tmp/pl-auth-XXXXXX", sub[64];     /* a directory where the key should be */
    CHECK(mkdtemp(dir) != NULL);
    snprintf(sub, sizeof sub, "%s/token.key", dir);
    CHECK_EQ(mkdir(sub, 0700), 0);
    CHECK_EQ(pl_auth_init(dir, err, sizeof err, &made), -1);
    CHECK(strstr(err, "cannot read") && strstr(err, "Is a directory"));
    rmdir(sub);
    rmdir(dir);
}

TEST(auth_access_roundtrip) {
    CHECK_EQ(init_once(), 0);
    char tok[PL_AUTH_TOKEN_MAX];
    pl_auth_access_token(7, 3, 1796400000123, 2000, tok);
    int64_t u = 0, l = 0;
    uint32_t st = 0;
    CHECK_EQ(pl_auth_verify_access(tok, strlen(tok), 1000, &u, &l, &st), PL_AUTH_OK);
    CHECK_EQ(u, 7);
    CHECK_EQ(l, 3);
    /* the login it was issued for, not another with its id (audit N4) */
    CHECK(pl_auth_stamp_ok(st, 1796400000123));
    CHECK(!pl_auth_stamp_ok(st, 1796400000124));         /* the same second: another login (audit O8) */
    CHECK(!pl_auth_stamp_ok(st, 1796400001123));
    CHECK(!pl_auth_stamp_ok(st, 0));
    CHECK_EQ(pl_auth_verify_access(tok, strlen(tok), 2000, &u, &l, &st), PL_AUTH_EXPIRED);
}

TEST(auth_access_token_lives_its_whole_ttl) {
    /* issued late in a second, a one-second token was expired at the next
     * second boundary: a refresh and its retry could straddle it (the CI
     * flake in test_tail_refreshes_its_token_to_reconnect) */
    for (int64_t ms = 5000; ms < 6000; ms += 37) {
        for (int ttl = 1; ttl <= 3; ttl++) {
            int64_t exp = pl_auth_access_expiry(ms, ttl);
            CHECK(exp * 1000 - ms >= ttl * 1000);        /* valid while now_s < exp */
            CHECK(exp * 1000 - ms < (ttl + 1) * 1000);
        }
    }
    CHECK_EQ(init_once(), 0);
    char tok[PL_AUTH_TOKEN_MAX];
    pl_auth_access_token(7, 3, 1796400000123, pl_auth_access_expiry(5999, 1), tok);
    int64_t u, l;
    uint32_t st;
    CHECK_EQ(pl_auth_verify_access(tok, strlen(tok), 6, &u, &l, &st), PL_AUTH_OK);
    CHECK_EQ(pl_auth_verify_access(tok, strlen(tok), 7, &u, &l, &st), PL_AUTH_EXPIRED);
}

TEST(auth_forged_tokens_fail) {
    CHECK_EQ(init_once(), 0);
    char tok[PL_AUTH_TOKEN_MAX];
    pl_auth_access_token(7, 3, 1796400000123, 2000, tok);
    int64_t u, l;
    uint32_t st;
    char bad[PL_AUTH_TOKEN_MAX];
    /* change the user id and keep the signature */
    strcpy(bad, tok);
    bad[3] = '8';
    CHECK_EQ(pl_auth_verify_access(bad, strlen(bad), 1000, &u, &l, &st), PL_AUTH_BAD);
    /* flip the last signature char */
    strcpy(bad, tok);
    bad[strlen(bad) - 1] = bad[strlen(bad) - 1] == 'A' ? 'B' : 'A';
    CHECK_EQ(pl_auth_verify_access(bad, strlen(bad), 1000, &u, &l, &st), PL_AUTH_BAD);
    /* truncated, empty, garbage */
    CHECK_EQ(pl_auth_verify_access(tok, strlen(tok) - 1, 1000, &u, &l, &st), PL_AUTH_BAD);
    CHECK_EQ(pl_auth_verify_access("", 0, 1000, &u, &l, &st), PL_AUTH_BAD);
    CHECK_EQ(pl_auth_verify_access("v1.a.b.c.d.e", 12, 1000, &u, &l, &st), PL_AUTH_BAD);
}

TEST(auth_refresh_token) {
    CHECK_EQ(init_once(), 0);
    char tok[PL_AUTH_TOKEN_MAX];
    uint8_t h1[32], h2[32];
    pl_auth_refresh_token(42, tok, h1);
    int64_t login;
    CHECK_EQ(pl_auth_parse_refresh(tok, strlen(tok), &login, h2), PL_AUTH_OK);
    CHECK_EQ(login, 42);
    CHECK(memcmp(h1, h2, 32) == 0);
    CHECK_EQ(pl_auth_parse_refresh("42.short", 8, &login, h2), PL_AUTH_BAD);
    CHECK_EQ(pl_auth_parse_refresh("nodot", 5, &login, h2), PL_AUTH_BAD);
    /* the login id as every integer of the protocol: no leading zero (audit
     * N4: "031.<secret>" was login 31) */
    char padded[PL_AUTH_TOKEN_MAX + 2];
    snprintf(padded, sizeof padded, "0%s", tok);
    CHECK_EQ(pl_auth_parse_refresh(padded, strlen(padded), &login, h2), PL_AUTH_BAD);
}

TEST(auth_password_hash) {
    CHECK_EQ(init_once(), 0);
    char h[PL_AUTH_PWHASH_MAX];
    CHECK_EQ(pl_auth_hash_password("secret pw", 9, 1, 64 * 1024, h), 0);
    CHECK(strncmp(h, "$argon2id$", 10) == 0);
    CHECK_EQ(pl_auth_check_password(h, "secret pw", 9), 1);
    CHECK_EQ(pl_auth_check_password(h, "secret px", 9), 0);
}

TEST(auth_usernames) {
    char out[33];
    CHECK_EQ(pl_auth_normalize_username("Alice_1", 7, out), 0);
    CHECK_STR(out, "alice_1");
    CHECK_EQ(pl_auth_normalize_username("ab", 2, out), -1);
    CHECK_EQ(pl_auth_normalize_username("a b", 3, out), -1);
    CHECK_EQ(pl_auth_normalize_username("ali\xc3\xa9", 5, out), -1);
    CHECK_EQ(pl_auth_normalize_username("abcdefghijklmnopqrstuvwxyz0123456", 33, out), -1);
}
