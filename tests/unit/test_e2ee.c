/* test_e2ee.c — what the server checks of end-to-end encryption's uploads
 * and ciphertext payloads (src/chat/e2ee.c). */
#include "test.h"

#include <jansson.h>
#include <sodium.h>
#include <stdlib.h>

#include "chat/e2ee.h"

static void b64(const unsigned char *b, size_t n, char *out, size_t cap) {
    sodium_bin2base64(out, cap, b, n, sodium_base64_VARIANT_ORIGINAL);
}

/* A valid upload body with n one-time prekeys; sig_ok 0 signs other bytes. */
static json_t *upload(int n, int sig_ok) {
    unsigned char pk[32], sk[64], spk[32], sig[64];
    char ik64[64], spk64[64], sig64[100];
    crypto_sign_keypair(pk, sk);
    randombytes_buf(spk, sizeof spk);
    crypto_sign_detached(sig, NULL, spk, sizeof spk, sk);
    if (!sig_ok) sig[0] ^= 1;
    b64(pk, 32, ik64, sizeof ik64);
    b64(spk, 32, spk64, sizeof spk64);
    b64(sig, 64, sig64, sizeof sig64);
    json_t *otks = json_array();
    for (int i = 0; i < n; i++) json_array_append_new(otks, json_pack("{s:i,s:s}", "id", i, "key", spk64));
    return json_pack("{s:s,s:{s:i,s:s,s:s},s:o}", "identity_key", ik64, "signed_prekey", "id", 1, "key", spk64,
                     "signature", sig64, "one_time_prekeys", otks);
}

TEST(e2ee_parse_upload) {
    pl_e2ee_upload up;
    const char *why = NULL;
    json_t *o = upload(3, 1);
    CHECK_EQ(pl_e2ee_parse_upload(o, &up, &why), 0);
    CHECK(up.keys.identity != NULL && up.keys.spk != NULL && up.keys.spk_sig != NULL);
    CHECK_EQ(up.keys.notks, 3);
    CHECK_EQ(up.keys.otks[2].id, 2);
    json_decref(o);
    o = upload(0, 0);                                           /* a signature that does not verify */
    CHECK_EQ(pl_e2ee_parse_upload(o, &up, &why), -1);
    CHECK(strstr(why, "verify") != NULL);
    json_decref(o);
    o = upload(PL_KEYS_OTK_UPLOAD + 1, 1);
    CHECK_EQ(pl_e2ee_parse_upload(o, &up, &why), -1);
    CHECK(strstr(why, "too many") != NULL);
    json_decref(o);
    o = upload(1, 1);                                           /* a 33-byte key, unpadded base64 */
    json_object_set_new(o, "identity_key", json_string("eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4"));
    CHECK_EQ(pl_e2ee_parse_upload(o, &up, &why), -1);
    json_object_set_new(o, "identity_key", json_string("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAB="));
    CHECK_EQ(pl_e2ee_parse_upload(o, &up, &why), -1);           /* not canonical (stray low bits) */
    CHECK(strstr(why, "identity_key") != NULL);
    json_decref(o);
    o = json_pack("{s:[{s:i,s:s},{s:i,s:s}]}", "one_time_prekeys", "id", 1, "key",
                  "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", "id", 1, "key",
                  "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=");
    CHECK_EQ(pl_e2ee_parse_upload(o, &up, &why), -1);
    CHECK(strstr(why, "duplicate") != NULL);
    json_decref(o);
}

TEST(e2ee_payloads) {
    const char *code, *why;
    json_t *p = json_loads("[{\"device\":4,\"type\":1,\"body\":\"aGk=\",\"extra\":1}]", 0, NULL);
    char *t = pl_e2ee_payloads(p, 16, &code, &why);
    CHECK_STR(t, "[{\"device\":4,\"type\":1,\"body\":\"aGk=\"}]");  /* only the three fields */
    free(t);
    json_decref(p);
    static const char *const bad[] = {
        "[]", "{}", "[{\"device\":4,\"type\":1}]", "[{\"device\":0,\"type\":1,\"body\":\"aGk=\"}]",
        "[{\"device\":4,\"type\":-1,\"body\":\"aGk=\"}]", "[{\"device\":4,\"type\":1,\"body\":\"aGk\"}]",
        "[{\"device\":4,\"type\":1,\"body\":\"aGk=\"},{\"device\":4,\"type\":1,\"body\":\"aGk=\"}]",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        p = json_loads(bad[i], 0, NULL);
        t = pl_e2ee_payloads(p, 16, &code, &why);
        json_decref(p);
        if (t) fprintf(stderr, "  accepted %s\n", bad[i]);
        CHECK(t == NULL);
        CHECK_STR(code, "bad_request");
    }
    p = json_loads("[{\"device\":4,\"type\":1,\"body\":\"aGVsbG8gd29ybGQgaGVsbG8gd29ybGQgaGVsbG8=\"}]", 0, NULL);
    t = pl_e2ee_payloads(p, 16, &code, &why);                   /* 40 characters > 2 * 16 */
    json_decref(p);
    CHECK(t == NULL);
    CHECK_STR(code, "too_large");
}
