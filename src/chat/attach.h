/* attach.h — a message's attachments: the media a send names, checked and
 * described for the message's data (docs/protocol.md "Media").
 *
 * Owns: turning `attachments: [ids]` into the JSON array the store keeps
 * in data.attachments — each id must be an upload of the sender; each entry
 * {id, kind, mime, size, name[, width, height, placeholder, thumb]}.
 * Does not own: signed URLs (added when an event is encoded, proto.c and
 * media.h), references and their removal (the store's triggers).
 */
#ifndef PL_ATTACH_H
#define PL_ATTACH_H

#include <stdint.h>

#include "../store/store.h"

/* Called on the loop thread: rc 0 with json (a new string, the callee's to
 * free), or PL_STORE_ENOTFOUND (an id that is no upload of user) or
 * PL_STORE_EUNAVAIL, json NULL. */
typedef void (*pl_attach_cb)(void *arg, int rc, char *json);

/* Reads ids[0..n) (n >= 1; ids copied) owned by user and answers through cb. */
void pl_attach_resolve(pl_store *st, int64_t user, const int64_t *ids, int n, pl_attach_cb cb, void *arg);

#endif
