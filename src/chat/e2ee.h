/* e2ee.h — end-to-end encryption on the server side: what the server
 * checks of the key directory's uploads and of ciphertext sends, and the
 * device-list and running-low announcements (docs/protocol.md "End-to-end
 * encryption", docs/design.md "End-to-end encryption").
 *
 * The server never holds a private key or a plaintext: it checks shapes
 * and sizes, and one signature (the signed prekey's, by the identity key),
 * and routes opaque bytes.
 */
#ifndef PL_CHAT_E2EE_H
#define PL_CHAT_E2EE_H

#include <jansson.h>
#include <stdint.h>

#include "../store/store.h"

#define PL_E2EE_PAYLOADS_MAX 100  /* payloads (recipient devices) of one message */
#define PL_E2EE_TYPE_MAX     255  /* a payload's type: 0..255, the client's     */
#define PL_E2EE_LOW          10   /* one-time prekeys below which the owner hears */

/* The parsed body of a key upload; every string points into the JSON it
 * was parsed from (keep that alive). */
typedef struct pl_e2ee_upload {
    pl_keys_in keys;
    pl_prekey  otks[PL_KEYS_OTK_UPLOAD];
} pl_e2ee_upload;

/* Parses and checks {identity_key, signed_prekey:{id,key,signature},
 * one_time_prekeys:[{id,key}], replace_one_time_prekeys}: base64 (standard
 * alphabet, padded, canonical) of PL_KEYS_KEY_BYTES keys and a
 * PL_KEYS_SIG_BYTES signature that verifies (Ed25519) over the signed
 * prekey's bytes with the identity key; ids 0..2^53-1, distinct; at most
 * PL_KEYS_OTK_UPLOAD prekeys. Returns 0, or -1 with *why (a static
 * string) naming the defect. */
int   pl_e2ee_parse_upload(json_t *o, pl_e2ee_upload *out, const char **why);

/* Checks a send's "payloads" ([{device, type, body}]: 1..PAYLOADS_MAX,
 * distinct devices, bodies base64 of at most 2 * max_body characters,
 * all bodies together at most 16 * max_body) and returns them as compact
 * JSON text (a new string, only those three fields), or NULL with *code
 * ("bad_request" or "too_large") and *why set. */
char *pl_e2ee_payloads(json_t *payloads, size_t max_body, const char **code, const char **why);

/* A device list changed (a device's keys were added, replaced or
 * removed): every end-to-end encrypted conversation of user gets an E2EE
 * "devices" event (PL_JOB_DEVICES_ANNOUNCE per membership), delivered and
 * replayed like any event. Fire and forget. */
void  pl_e2ee_announce(int64_t user);

/* A login ended (logout, revocation): its device's keys are deleted and,
 * if it had any, the device-list change announced. Fire and forget. */
void  pl_e2ee_device_gone(int64_t user, int64_t login);

/* A claim left a device of user with count one-time prekeys: below
 * PL_E2EE_LOW the user's sessions get {"type":"keys_low",...} (on every
 * node). */
void  pl_e2ee_claimed(int64_t user, const pl_device *d);

#endif
