/* auth.h — credentials: password hashes, access tokens, refresh tokens.
 *
 * Owns: the formats and the signing key. Access tokens are
 *   "v1.<user>.<login>.<expires_s>.<nonce>.<sig>"
 * (nonce: 8 random bytes, so no two tokens are alike) with sig = base64url(HMAC-SHA-256(key, everything before ".<sig>")); the
 * key is 32 random bytes kept in <data-dir>/token.key (created 0600 on first
 * start), or in cluster mode in the database, shared by every node. Refresh tokens are "<login>.<base64url(32 random bytes)>"; only
 * SHA-256 of the random part is stored (a leaked database cannot mint
 * sessions). Passwords are argon2id (libsodium crypto_pwhash_str_alg).
 * Does not own: checking that a login session is not revoked (the caller
 * asks the store), running the slow hash off the loop (the caller queues it).
 */
#ifndef PL_AUTH_H
#define PL_AUTH_H

#include <stddef.h>
#include <stdint.h>

#define PL_AUTH_TOKEN_MAX   160   /* room for any token we issue, with NUL */
#define PL_AUTH_PWHASH_MAX  128   /* crypto_pwhash_STRBYTES                */

/* Initialises libsodium and loads/creates the key (*made: 1 when created
 * now). 0 or -1 with err. */
int  pl_auth_init(const char *data_dir, char *err, size_t errlen, int *made);
/* Replaces the key (cluster mode: one key shared by every node, kept in the
 * database, so any node verifies any node's tokens). */
void pl_auth_set_key(const uint8_t k[32]);
/* A key for another purpose: HMAC-SHA-256(key, label). Call after the key
 * is set (it follows pl_auth_set_key only if called again). */
void pl_auth_derive_key(const char *label, uint8_t out[32]);

/* The expiry (seconds) of an access token issued at now_ms that must live
 * ttl_s seconds: rounded up, so it never lives less (a token is expired
 * from its expiry second on, and rounding down would leave a one-second
 * token as little as a millisecond). */
int64_t pl_auth_access_expiry(int64_t now_ms, int ttl_s);
/* out gets a NUL-terminated access token (at most PL_AUTH_TOKEN_MAX) of
 * login, created at login_created (ms: the login row's `created`, which the
 * token carries as a stamp, pl_auth_stamp_ok). */
void pl_auth_access_token(int64_t user, int64_t login, int64_t login_created, int64_t expires_s, char *out);

enum { PL_AUTH_OK = 0, PL_AUTH_BAD = -1, PL_AUTH_EXPIRED = -2 };
/* Verifies signature and expiry (against now_s); *stamp gets the login's
 * stamp the token carries. */
int  pl_auth_verify_access(const char *tok, size_t len, int64_t now_s,
                           int64_t *user, int64_t *login, uint32_t *stamp);
/* 1 if a token's stamp is that of the login row created at created (ms,
 * compared modulo 2^32):
 * the row is the one the token was issued for, not a later login that
 * took its id (a database restored from a backup, or made anew beside the
 * same token key, numbers logins again: audit N4). */
int  pl_auth_stamp_ok(uint32_t stamp, int64_t created);

/* A new refresh secret for login: out gets the token, hash its SHA-256. */
void pl_auth_refresh_token(int64_t login, char *out, uint8_t hash[32]);
/* Splits a refresh token; 0 or PL_AUTH_BAD. */
int  pl_auth_parse_refresh(const char *tok, size_t len, int64_t *login, uint8_t hash[32]);

/* Slow (argon2id): call off the event loop. 0 or -1. */
int  pl_auth_hash_password(const char *pw, size_t len, unsigned ops, size_t mem_bytes,
                           char out[PL_AUTH_PWHASH_MAX]);
/* Slow: 1 if pw matches hash. */
int  pl_auth_check_password(const char *hash, const char *pw, size_t len);

/* 1 if pw is on the bundled list of the 10,000 most common passwords of 8
 * bytes or more (data/common-passwords.txt, compared ASCII
 * case-insensitively; NIST SP 800-63B 5.1.1.2). common_passwords.c. */
int  pl_auth_common_password(const char *pw, size_t len);

/* Usernames: 3-32 of [A-Za-z0-9_.-]; lower-cased into out (33 bytes). */
int  pl_auth_normalize_username(const char *in, size_t len, char out[33]);

#endif
