/* names.h — who "user 5" is: usernames for the human output, each
 * conversation's events named by its own member list (GET
 * /api/v1/conversations/{id}), fetched once per command.
 *
 * Owns: the cache and when it asks the server. A name that is missing
 * (someone added after the fetch) causes one more fetch of that
 * conversation per unknown user; someone not in the conversation's member
 * list (a member who left or was removed) stays unknown there, as the API
 * has no lookup by id, and is shown as "user 5", whatever other
 * conversations' lists say.
 */
#ifndef PC_NAMES_H
#define PC_NAMES_H

#include <jansson.h>
#include <stdint.h>

#include "http.h"

typedef struct pc_names pc_names;

/* A new, empty cache that fetches through c (borrowed: it must outlive
 * the cache). */
pc_names *pc_names_new(pc_client *c);
void      pc_names_free(pc_names **n);

/* Takes the members of a conversation object (borrowed) that the caller
 * fetched anyway, so that conversation needs no fetch of its own. */
void      pc_names_seed(pc_names *n, json_t *conv);

/* The name of user, who appears in an event of conv (borrowed, valid until
 * pc_names_free), or NULL when it cannot be known. */
const char *pc_names_get(pc_names *n, int64_t conv, int64_t user);

#endif
