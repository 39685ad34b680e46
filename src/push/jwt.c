/* jwt.c — JSON Web Tokens for APNs (ES256) and FCM's OAuth assertion
 * (RS256); see jwt.h. OpenSSL signs (for ECDSA, its DER signature becomes
 * the 64 bytes r || s that JWS wants); libsodium encodes base64url
 * without padding. */
#include "jwt.h"

#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/alloc.h"
#include "../core/buf.h"

struct pl_jwt_key {
    EVP_PKEY *pkey;
};

/* The pass phrase callback of the PEM reads: none. OpenSSL's default asks
 * for one on the terminal, so an encrypted key held the start at a prompt
 * (audit U4); without one, its read fails and the start says why. */
static int no_pass_phrase(char *buf, int size, int rwflag, void *u) {
    (void)buf, (void)size, (void)rwflag, (void)u;
    return -1;
}

/* 1 if the PEM text says its key is encrypted (PKCS#8 or the legacy form). */
static int pem_encrypted(const char *pem) {
    return pem && (strstr(pem, "BEGIN ENCRYPTED PRIVATE KEY") || strstr(pem, "Proc-Type: 4,ENCRYPTED"));
}

pl_jwt_key *pl_jwt_key_load(const char *path, char *err, size_t errlen) {
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "cannot read %s", path);
        return NULL;
    }
    char head[4096];
    size_t hn = fread(head, 1, sizeof head - 1, f);
    head[hn] = '\0';
    rewind(f);
    EVP_PKEY *pk = PEM_read_PrivateKey(f, NULL, no_pass_phrase, NULL);
    fclose(f);
    if (!pk && pem_encrypted(head)) {
        ERR_clear_error();
        snprintf(err, errlen, "%s is encrypted: give the key without a pass phrase (openssl pkey -in it -out plain.p8)",
                 path);
        return NULL;
    }
    if (!pk || EVP_PKEY_get_id(pk) != EVP_PKEY_EC || EVP_PKEY_get_bits(pk) != 256) {
        EVP_PKEY_free(pk);
        ERR_clear_error();
        snprintf(err, errlen, "%s is not a PEM EC P-256 private key (an APNs .p8 file)", path);
        return NULL;
    }
    pl_jwt_key *k = pl_calloc(1, sizeof *k);
    k->pkey = pk;
    return k;
}

void pl_jwt_key_free(pl_jwt_key *k) {
    if (!k) return;
    EVP_PKEY_free(k->pkey);
    free(k);
}

static void add_b64(pl_sbuf *b, const uint8_t *p, size_t n) {
    size_t cap = sodium_base64_ENCODED_LEN(n, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    char *t = pl_malloc(cap);
    sodium_bin2base64(t, cap, p, n, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    pl_sbuf_adds(b, t);
    free(t);
}

pl_jwt_key *pl_jwt_rsa_parse(const char *pem, char *err, size_t errlen) {
    BIO *b = BIO_new_mem_buf(pem, -1);
    EVP_PKEY *pk = b ? PEM_read_bio_PrivateKey(b, NULL, no_pass_phrase, NULL) : NULL;
    BIO_free(b);
    if (!pk && pem_encrypted(pem)) {
        ERR_clear_error();
        snprintf(err, errlen, "the private_key is encrypted: a service account's key has no pass phrase");
        return NULL;
    }
    if (!pk || EVP_PKEY_get_id(pk) != EVP_PKEY_RSA || EVP_PKEY_get_bits(pk) < 2048) {
        EVP_PKEY_free(pk);
        ERR_clear_error();
        snprintf(err, errlen, "the private_key is not a PEM RSA key of at least 2048 bits");
        return NULL;
    }
    pl_jwt_key *k = pl_calloc(1, sizeof *k);
    k->pkey = pk;
    return k;
}

/* The signature JWS wants over msg: RS256's as OpenSSL gives it; ES256's
 * DER turned into the 64 bytes r || s. */
static int sign(EVP_PKEY *pk, const pl_sbuf *msg, uint8_t *out, size_t *len) {
    int ec = EVP_PKEY_get_id(pk) == EVP_PKEY_EC, ok = 0;
    uint8_t der[600];
    size_t dlen = sizeof der;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (!ctx || EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, pk) != 1 ||
        EVP_DigestSign(ctx, der, &dlen, (const uint8_t *)msg->p, msg->len) != 1) {
        EVP_MD_CTX_free(ctx);
        return -1;
    }
    EVP_MD_CTX_free(ctx);
    if (!ec) {
        memcpy(out, der, dlen);
        *len = dlen;
        return 0;
    }
    const uint8_t *p = der;
    ECDSA_SIG *sig = d2i_ECDSA_SIG(NULL, &p, (long)dlen);
    if (sig) {
        const BIGNUM *r, *s;
        ECDSA_SIG_get0(sig, &r, &s);
        ok = BN_bn2binpad(r, out, 32) == 32 && BN_bn2binpad(s, out + 32, 32) == 32;
        ECDSA_SIG_free(sig);
    }
    *len = 64;
    return ok ? 0 : -1;
}

char *pl_jwt_sign(pl_jwt_key *k, const char *header, const char *claims) {
    pl_sbuf out;
    pl_sbuf_init(&out);
    add_b64(&out, (const uint8_t *)header, strlen(header));
    pl_sbuf_addc(&out, '.');
    add_b64(&out, (const uint8_t *)claims, strlen(claims));
    uint8_t sig[600];
    size_t slen = 0;
    char *res = NULL;
    if (sign(k->pkey, &out, sig, &slen) == 0) {
        pl_sbuf_addc(&out, '.');
        add_b64(&out, sig, slen);
        res = pl_strdup(pl_sbuf_cstr(&out));
    }
    pl_sbuf_release(&out);
    return res;
}

char *pl_jwt_es256(pl_jwt_key *k, const char *key_id, const char *team, int64_t iat) {
    pl_sbuf head, claims;
    pl_sbuf_init(&head);
    pl_sbuf_init(&claims);
    pl_sbuf_adds(&head, "{\"alg\":\"ES256\",\"kid\":");
    pl_sbuf_add_json_str(&head, key_id, strlen(key_id));
    pl_sbuf_addc(&head, '}');
    pl_sbuf_adds(&claims, "{\"iss\":");
    pl_sbuf_add_json_str(&claims, team, strlen(team));
    pl_sbuf_printf(&claims, ",\"iat\":%lld}", (long long)iat);
    char *res = pl_jwt_sign(k, pl_sbuf_cstr(&head), pl_sbuf_cstr(&claims));
    pl_sbuf_release(&head);
    pl_sbuf_release(&claims);
    return res;
}
