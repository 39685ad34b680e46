/* store_e2ee.c — what both backends share for end-to-end encryption
 * (store.h invariant 9): the send check of marked conversations and the
 * JSON data of ciphertext messages and E2EE events.
 *
 * Does not own: the key directory's SQL (store_sqlite_keys.c,
 * store_pg_keys.c), validating keys and payloads (the caller's: src/chat/
 * e2ee.c), anything cryptographic.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/alloc.h"
#include "store_int.h"

int pl_store__e2ee_send_check(int e2ee, const char *ciphertext, const char **why) {
    if (e2ee && !ciphertext) {
        *why = "the conversation is end-to-end encrypted: send ciphertext";
        return PL_STORE_EFORBID;
    }
    if (!e2ee && ciphertext) {
        *why = "ciphertext needs an end-to-end encrypted conversation";
        return PL_STORE_EINVAL;
    }
    return PL_STORE_OK;
}

char *pl_store__data_ciphertext(int64_t reply_to, const char *payloads) {
    size_t n = strlen(payloads) + 64;
    char *d = pl_malloc(n);
    if (reply_to > 0) snprintf(d, n, "{\"reply_to\":%lld,\"ciphertext\":%s}", (long long)reply_to, payloads);
    else snprintf(d, n, "{\"ciphertext\":%s}", payloads);
    return d;
}

char *pl_store__data_e2ee(int64_t user) {
    char *d = pl_malloc(48);
    if (user) snprintf(d, 48, "{\"op\":\"devices\",\"user\":%lld}", (long long)user);
    else snprintf(d, 48, "{\"op\":\"enabled\"}");
    return d;
}
