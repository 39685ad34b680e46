/* auth.c — password hashing and token formats (see auth.h). */
#include "auth.h"

#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static uint8_t key[32];

void pl_auth_set_key(const uint8_t k[32]) { memcpy(key, k, sizeof key); }

/* Media's signed URLs (media/media.c) use HMAC-SHA-256(key, label) as their
 * key, so they share the token key's distribution but never its MACs. */
void pl_auth_derive_key(const char *label, uint8_t out[32]) {
    crypto_auth_hmacsha256(out, (const uint8_t *)label, strlen(label), key);
}

int pl_auth_init(const char *data_dir, char *err, size_t errlen, int *made) {
    *made = 0;
    if (sodium_init() < 0) { snprintf(err, errlen, "libsodium init failed"); return -1; }
    char path[4096];
    snprintf(path, sizeof path, "%s/token.key", data_dir);
    int fd = open(path, O_RDONLY);
    if (fd >= 0) {
        ssize_t n = read(fd, key, sizeof key);
        int e = errno;
        close(fd);
        if (n < 0) { snprintf(err, errlen, "cannot read %s: %s", path, strerror(e)); return -1; }   /* a directory, say */
        if (n != (ssize_t)sizeof key) { snprintf(err, errlen, "%s is damaged", path); return -1; }
        return 0;
    }
    if (errno != ENOENT) { snprintf(err, errlen, "cannot read %s: %s", path, strerror(errno)); return -1; }
    randombytes_buf(key, sizeof key);
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0) { snprintf(err, errlen, "cannot create %s: %s", path, strerror(errno)); return -1; }
    ssize_t n = write(fd, key, sizeof key);
    if (n != (ssize_t)sizeof key || fsync(fd) != 0) {          /* a full disk, say (audit E4) */
        snprintf(err, errlen, "cannot write %s: %s", path, n >= 0 && n < (ssize_t)sizeof key ? strerror(ENOSPC) : strerror(errno));
        close(fd);
        unlink(tmp);
        return -1;
    }
    close(fd);
    if (rename(tmp, path) != 0) {
        snprintf(err, errlen, "cannot create %s: %s", path, strerror(errno));
        unlink(tmp);
        return -1;
    }
    *made = 1;
    return 0;
}

static void sign(const char *msg, size_t len, char out[48]) {
    uint8_t mac[crypto_auth_hmacsha256_BYTES];
    crypto_auth_hmacsha256(mac, (const uint8_t *)msg, len, key);
    sodium_bin2base64(out, 48, mac, sizeof mac, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
}

int64_t pl_auth_access_expiry(int64_t now_ms, int ttl_s) {
    return (now_ms + 999) / 1000 + ttl_s;
}

/* The login's stamp: its creation millisecond, modulo 2^32 (49.7 days). */
static uint32_t login_stamp(int64_t created) { return (uint32_t)((uint64_t)created & 0xffffffffu); }

int pl_auth_stamp_ok(uint32_t stamp, int64_t created) { return stamp == login_stamp(created); }

/* The nonce part: 4 random bytes (no two tokens alike), then the login's
 * stamp, big-endian; signed with the rest. */
void pl_auth_access_token(int64_t user, int64_t login, int64_t login_created, int64_t expires_s, char *out) {
    uint8_t nonce[8];
    char nb[16];
    randombytes_buf(nonce, 4);
    uint32_t st = login_stamp(login_created);
    for (int i = 0; i < 4; i++) nonce[4 + i] = (uint8_t)(st >> (24 - 8 * i));
    sodium_bin2base64(nb, sizeof nb, nonce, sizeof nonce, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    int n = snprintf(out, PL_AUTH_TOKEN_MAX, "v1.%lld.%lld.%lld.%s", (long long)user,
                     (long long)login, (long long)expires_s, nb);
    char sig[48];
    sign(out, (size_t)n, sig);
    snprintf(out + n, PL_AUTH_TOKEN_MAX - (size_t)n, ".%s", sig);
}

/* Parses a decimal int64 in [p, end) with no sign or leading junk. */
static int parse_i64(const char *p, const char *end, int64_t *v) {
    if (p >= end || end - p > 18 || (*p == '0' && end - p > 1)) return -1;   /* no leading zero */
    int64_t x = 0;
    for (; p < end; p++) {
        if (*p < '0' || *p > '9') return -1;
        x = x * 10 + (*p - '0');
    }
    *v = x;
    return 0;
}

int pl_auth_verify_access(const char *tok, size_t len, int64_t now_s, int64_t *user, int64_t *login,
                          uint32_t *stamp) {
    if (len < 10 || len >= PL_AUTH_TOKEN_MAX || memcmp(tok, "v1.", 3) != 0) return PL_AUTH_BAD;
    const char *dots[5];
    int nd = 0;
    for (size_t i = 2; i < len && nd < 5; i++)
        if (tok[i] == '.') dots[nd++] = tok + i;
    if (nd != 5) return PL_AUTH_BAD;
    size_t signed_len = (size_t)(dots[4] - tok);
    char expect[48];
    sign(tok, signed_len, expect);
    size_t siglen = len - signed_len - 1;
    if (siglen != strlen(expect) || sodium_memcmp(expect, dots[4] + 1, siglen) != 0) return PL_AUTH_BAD;
    int64_t exp;
    if (parse_i64(dots[0] + 1, dots[1], user) || parse_i64(dots[1] + 1, dots[2], login) ||
        parse_i64(dots[2] + 1, dots[3], &exp))
        return PL_AUTH_BAD;
    uint8_t nonce[8];
    size_t nn = 0;
    if (sodium_base642bin(nonce, sizeof nonce, dots[3] + 1, (size_t)(dots[4] - dots[3] - 1), NULL, &nn, NULL,
                          sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0 || nn != sizeof nonce)
        return PL_AUTH_BAD;
    *stamp = (uint32_t)nonce[4] << 24 | (uint32_t)nonce[5] << 16 | (uint32_t)nonce[6] << 8 | nonce[7];
    if (exp <= now_s) return PL_AUTH_EXPIRED;
    return PL_AUTH_OK;
}

void pl_auth_refresh_token(int64_t login, char *out, uint8_t hash[32]) {
    uint8_t secret[32];
    randombytes_buf(secret, sizeof secret);
    int n = snprintf(out, PL_AUTH_TOKEN_MAX, "%lld.", (long long)login);
    sodium_bin2base64(out + n, PL_AUTH_TOKEN_MAX - (size_t)n, secret, sizeof secret,
                      sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    crypto_hash_sha256(hash, (const uint8_t *)out + n, strlen(out + n));
    sodium_memzero(secret, sizeof secret);
}

int pl_auth_parse_refresh(const char *tok, size_t len, int64_t *login, uint8_t hash[32]) {
    const char *dot = memchr(tok, '.', len);
    if (!dot || len >= PL_AUTH_TOKEN_MAX) return PL_AUTH_BAD;
    if (parse_i64(tok, dot, login)) return PL_AUTH_BAD;
    size_t rest = len - (size_t)(dot + 1 - tok);
    if (rest != 43) return PL_AUTH_BAD;      /* 32 bytes, base64url, no padding */
    crypto_hash_sha256(hash, (const uint8_t *)dot + 1, rest);
    return PL_AUTH_OK;
}

int pl_auth_hash_password(const char *pw, size_t len, unsigned ops, size_t mem_bytes,
                          char out[PL_AUTH_PWHASH_MAX]) {
    return crypto_pwhash_str_alg(out, pw, len, ops, mem_bytes, crypto_pwhash_ALG_ARGON2ID13);
}

int pl_auth_check_password(const char *hash, const char *pw, size_t len) {
    return crypto_pwhash_str_verify(hash, pw, len) == 0;
}

int pl_auth_normalize_username(const char *in, size_t len, char out[33]) {
    if (len < 3 || len > 32) return -1;
    for (size_t i = 0; i < len; i++) {
        char ch = in[i];
        if (ch >= 'A' && ch <= 'Z') ch = (char)(ch - 'A' + 'a');
        else if (!((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '_' ||
                   ch == '.' || ch == '-'))
            return -1;
        out[i] = ch;
    }
    out[len] = '\0';
    return 0;
}
