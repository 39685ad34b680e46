/* jwt.h — JSON Web Tokens the push services want (RFC 7515/7518):
 * APNs' provider token, signed ES256 (ECDSA P-256, SHA-256) under the key
 * Apple issues as a .p8 file; and the assertion a Google service account
 * signs RS256 to get an OAuth 2 access token for FCM (RFC 7523).
 *
 * Owns: loading those keys and signing. Apple accepts a token for an hour
 * and refuses one renewed more often than every 20 minutes, so the worker
 * mints one every PL_JWT_RENEW_S.
 */
#ifndef PL_PUSH_JWT_H
#define PL_PUSH_JWT_H

#include <stddef.h>
#include <stdint.h>

#define PL_JWT_RENEW_S 2400        /* 40 minutes                             */

typedef struct pl_jwt_key pl_jwt_key;

/* Reads a PEM EC P-256 private key (PKCS#8, as in Apple's .p8 files).
 * NULL with a reason in err. */
pl_jwt_key *pl_jwt_key_load(const char *path, char *err, size_t errlen);
/* A PEM RSA private key given as text (a service account's private_key). */
pl_jwt_key *pl_jwt_rsa_parse(const char *pem, char *err, size_t errlen);
void        pl_jwt_key_free(pl_jwt_key *k);
/* header_b64url-of(header) . b64url(claims) . signature: ES256 for an EC
 * key, RS256 for an RSA one. A new string, or NULL on failure. */
char *pl_jwt_sign(pl_jwt_key *k, const char *header, const char *claims);
/* {"alg":"ES256","kid":key_id} . {"iss":team,"iat":iat} . signature, as a
 * new string (NULL on failure). */
char *pl_jwt_es256(pl_jwt_key *k, const char *key_id, const char *team, int64_t iat);

#endif
