/* e2ee.c — end-to-end encryption on the server side (see e2ee.h): checking
 * key uploads and ciphertext payloads, announcing device-list changes into
 * end-to-end encrypted conversations, and telling a device's owner that its
 * one-time prekeys run low.
 *
 * Owns: the shapes and limits of the key directory's uploads and of
 * ciphertext sends (docs/protocol.md "End-to-end encryption").
 * Does not own: storage of keys (store_*_keys.c), the REST routes
 * (src/app/api_keys.c), delivery (the E2EE events are log events; keys_low
 * crosses nodes on the bus like a revocation, best effort).
 */
#include "e2ee.h"

#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "../core/alloc.h"
#include "../core/buf.h"
#include "../core/log.h"
#include "../ws/wsconn.h"
#include "chat_int.h"

/* ---- base64 --------------------------------------------------------------- */

/* 1 if s (n bytes) is canonical padded standard base64 of want bytes
 * (want 0: of 1..cap bytes); the decoded bytes go to out (cap bytes). */
static int b64_ok(const char *s, size_t n, unsigned char *out, size_t cap, size_t want) {
    if (!n || n % 4 || n > sodium_base64_encoded_len(cap, sodium_base64_VARIANT_ORIGINAL) - 1) return 0;
    size_t len = 0;
    const char *end = NULL;
    if (sodium_base642bin(out, cap, s, n, NULL, &len, &end, sodium_base64_VARIANT_ORIGINAL) != 0 ||
        end != s + n || !len || (want && len != want))
        return 0;
    /* canonical: the unused bits of the last character are zero */
    char again[PL_KEYS_B64_MAX + 1];
    if (want && sodium_base64_encoded_len(want, sodium_base64_VARIANT_ORIGINAL) <= sizeof again) {
        sodium_bin2base64(again, sizeof again, out, len, sodium_base64_VARIANT_ORIGINAL);
        if (strlen(again) != n || memcmp(again, s, n) != 0) return 0;
    }
    return 1;
}

/* A JSON string that is a base64 key of want bytes; NULL if not. */
static const char *key_field(json_t *v, unsigned char *out, size_t want) {
    if (!json_is_string(v)) return NULL;
    const char *s = json_string_value(v);
    size_t n = json_string_length(v);
    if (n > PL_KEYS_B64_MAX || !b64_ok(s, n, out, want, want)) return NULL;
    return s;
}

/* A prekey id: a JSON integer 0..2^53-1. */
static int id_field(json_t *v, int64_t *out) {
    if (!json_is_integer(v)) return -1;
    json_int_t x = json_integer_value(v);
    if (x < 0 || x > PL_JSON_INT_MAX) return -1;
    *out = (int64_t)x;
    return 0;
}

/* ---- uploads ---------------------------------------------------------------- */

int pl_e2ee_parse_upload(json_t *o, pl_e2ee_upload *out, const char **why) {
    memset(out, 0, sizeof *out);
    pl_keys_in *k = &out->keys;
    k->otks = out->otks;
    json_t *ik = json_object_get(o, "identity_key"), *sp = json_object_get(o, "signed_prekey");
    json_t *otks = json_object_get(o, "one_time_prekeys"), *rep = json_object_get(o, "replace_one_time_prekeys");
    unsigned char idk[PL_KEYS_KEY_BYTES], spk[PL_KEYS_KEY_BYTES], sig[PL_KEYS_SIG_BYTES],
        tmp[PL_KEYS_KEY_BYTES];
    if (rep && !json_is_boolean(rep)) {
        *why = "\"replace_one_time_prekeys\" must be a boolean";
        return -1;
    }
    k->replace_otks = json_is_true(rep);
    if ((ik == NULL) != (sp == NULL)) {
        *why = "\"identity_key\" and \"signed_prekey\" go together";
        return -1;
    }
    if (ik) {
        if (!(k->identity = key_field(ik, idk, sizeof idk))) {
            *why = "\"identity_key\" must be the base64 of a 32-byte Ed25519 public key";
            return -1;
        }
        if (!json_is_object(sp) || id_field(json_object_get(sp, "id"), &k->spk_id)) {
            *why = "\"signed_prekey\" must be {\"id\":0..2^53-1,\"key\":..,\"signature\":..}";
            return -1;
        }
        if (!(k->spk = key_field(json_object_get(sp, "key"), spk, sizeof spk))) {
            *why = "\"signed_prekey.key\" must be the base64 of a 32-byte X25519 public key";
            return -1;
        }
        if (!(k->spk_sig = key_field(json_object_get(sp, "signature"), sig, sizeof sig))) {
            *why = "\"signed_prekey.signature\" must be the base64 of a 64-byte Ed25519 signature";
            return -1;
        }
        if (crypto_sign_verify_detached(sig, spk, sizeof spk, idk) != 0) {
            *why = "\"signed_prekey.signature\" does not verify with \"identity_key\"";
            return -1;
        }
    }
    if (otks && !json_is_array(otks)) {
        *why = "\"one_time_prekeys\" must be an array";
        return -1;
    }
    if (json_array_size(otks) > PL_KEYS_OTK_UPLOAD) {
        *why = "too many one-time prekeys in one upload (at most 100)";
        return -1;
    }
    size_t i;
    json_t *v;
    json_array_foreach(otks, i, v) {
        pl_prekey *p = &out->otks[i];
        if (!json_is_object(v) || id_field(json_object_get(v, "id"), &p->id) ||
            !(p->key = key_field(json_object_get(v, "key"), tmp, sizeof tmp))) {
            *why = "each one-time prekey must be {\"id\":0..2^53-1,\"key\":base64 of 32 bytes}";
            return -1;
        }
        for (size_t j = 0; j < i; j++)
            if (out->otks[j].id == p->id) {
                *why = "duplicate one-time prekey id";
                return -1;
            }
        k->notks = i + 1;
    }
    if (!ik && !k->notks && !k->replace_otks) {
        *why = "nothing to upload";
        return -1;
    }
    return 0;
}

/* ---- ciphertext sends ---------------------------------------------------------- */

char *pl_e2ee_payloads(json_t *payloads, size_t max_body, const char **code, const char **why) {
    *code = "bad_request";
    if (!json_is_array(payloads) || !json_array_size(payloads)) {
        *why = "\"payloads\" must be a non-empty array of {device, type, body}";
        return NULL;
    }
    if (json_array_size(payloads) > PL_E2EE_PAYLOADS_MAX) {
        *code = "too_large";
        *why = "too many payloads (at most 100 devices)";
        return NULL;
    }
    size_t each = 2 * max_body, total = 0, n = json_array_size(payloads);
    int64_t *devs = pl_malloc(n * sizeof *devs);
    unsigned char *scratch = pl_malloc(each + 4);
    json_t *out = json_array();
    size_t i;
    json_t *v;
    char *text = NULL;
    json_array_foreach(payloads, i, v) {
        json_t *d = json_object_get(v, "device"), *t = json_object_get(v, "type"), *b = json_object_get(v, "body");
        if (!json_is_object(v) || !json_is_integer(d) || json_integer_value(d) <= 0 ||
            json_integer_value(d) > PL_JSON_INT_MAX || !json_is_integer(t) || json_integer_value(t) < 0 ||
            json_integer_value(t) > PL_E2EE_TYPE_MAX || !json_is_string(b)) {
            *why = "each payload must be {\"device\":id,\"type\":0..255,\"body\":base64}";
            goto out;
        }
        size_t bl = json_string_length(b);
        total += bl;
        if (bl > each || total > 16 * max_body) {
            *code = "too_large";
            *why = bl > each ? "a payload's body is too long" : "the payloads are too long together";
            goto out;
        }
        if (!b64_ok(json_string_value(b), bl, scratch, each + 4, 0)) {
            *why = "a payload's body must be non-empty padded base64";
            goto out;
        }
        devs[i] = json_integer_value(d);
        for (size_t j = 0; j < i; j++)
            if (devs[j] == devs[i]) {
                *why = "one payload per device";
                goto out;
            }
        json_array_append_new(out, json_pack("{s:O,s:O,s:O}", "device", d, "type", t, "body", b));
    }
    text = json_dumps(out, JSON_COMPACT);
out:
    json_decref(out);
    free(devs);
    free(scratch);
    return text;
}

/* ---- device-list announcements ------------------------------------------------ */

typedef struct announce {
    pl_job  job;                  /* first                                   */
    int64_t user;
} announce;

static void announce_done(pl_job *j) {
    if (j->result && j->result != PL_STORE_ENOTFOUND)
        pl_log(PL_LOG_WARN, 0, "e2ee: a device-list event was not written", "\"conversation\":%lld,\"rc\":%d",
               (long long)j->conv, j->result);
    pl_job_release(j);
    free(j);
}

static void memberships_read(pl_job *j) {
    announce *a = (announce *)j;
    if (j->result == PL_STORE_OK && !C.stopping)
        for (size_t i = 0; i < j->nmships; i++) {
            pl_job *w = pl_calloc(1, sizeof *w);
            w->op = PL_JOB_DEVICES_ANNOUNCE;
            w->conv = j->mships[i].conv;
            w->user = a->user;
            w->done = announce_done;
            pl_store_submit(C.store, w);   /* committed: published by the commit hook */
        }
    else if (j->result)
        pl_log(PL_LOG_WARN, 0, "e2ee: device-list change not announced", "\"user\":%lld,\"rc\":%d",
               (long long)a->user, j->result);
    pl_job_release(j);
    free(a);
}

void pl_e2ee_announce(int64_t user) {
    if (C.stopping || !C.store) return;
    announce *a = pl_calloc(1, sizeof *a);
    a->user = user;
    a->job.op = PL_READ_MEMBERSHIPS;
    a->job.ids = &a->user;
    a->job.nids = 1;
    a->job.done = memberships_read;
    pl_store_submit(C.store, &a->job);
}

static void gone_done(pl_job *j) {
    if (j->result == PL_STORE_OK && j->created) pl_e2ee_announce(j->user);
    pl_job_release(j);
    free(j);
}

void pl_e2ee_device_gone(int64_t user, int64_t login) {
    if (C.stopping || !C.store) return;
    pl_job *j = pl_calloc(1, sizeof *j);
    j->op = PL_JOB_KEYS_DELETE;
    j->user = user;
    j->id = login;
    j->done = gone_done;
    pl_store_submit(C.store, j);
}

/* ---- running low ---------------------------------------------------------------- */

void pl_e2ee_claimed(int64_t user, const pl_device *d) {
    if (d->otk_count >= PL_E2EE_LOW || !C.bus) return;
    pl_bus_publish_keys_low(C.bus, user, d->id, d->otk_count);
}

/* bus handler: the sessions of user on this node hear it */
void e2ee_on_keys_low(void *ud, int64_t user, int64_t device, int64_t count) {
    chat_user *cu = chat_user_get(user);
    if (!cu) return;
    char msg[128];
    int n = snprintf(msg, sizeof msg, "{\"type\":\"keys_low\",\"device\":%lld,\"one_time_prekeys\":%lld}",
                     (long long)device, (long long)count);
    pl_rbuf *frame = NULL;
    for (session *s = cu->sessions; s; s = s->unext) {
        if (!frame) frame = pl_ws_text_frame(msg, (size_t)n);
        chat_deliver_ephemeral(s->conn, frame);
    }
    pl_rbuf_unref(&frame);
}
