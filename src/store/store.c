/* store.c — the backend-independent half of the store interface.
 *
 * Owns: releasing the structs store.h hands out (events, conversations and
 * their lists) and the wrappers that are not inline in store.h (drain,
 * close), which go through the backend's ops table.
 * Does not own: any storage; see store_sqlite.c.
 */
#include "store.h"

#include <stdlib.h>

void pl_event_release(pl_event *ev) {
    if (!ev) return;
    free(ev->client_msg_id);
    free(ev->body);
    free(ev->data);
    ev->client_msg_id = NULL;
    ev->body = NULL;
    ev->data = NULL;
}

void pl_conv_release(pl_conv *c) {
    if (!c) return;
    free(c->title);
    free(c->members);
    c->title = NULL;
    c->members = NULL;
    c->nmembers = 0;
}

void pl_conv_list_free(pl_conv *list, size_t n) {
    if (!list) return;
    for (size_t i = 0; i < n; i++) pl_conv_release(&list[i]);
    free(list);
}

void pl_event_list_free(pl_event *list, size_t n) {
    if (!list) return;
    for (size_t i = 0; i < n; i++) pl_event_release(&list[i]);
    free(list);
}

void pl_store_drain(pl_store *s) {
    s->ops->drain(s);
}

void pl_store_close(pl_store **s) {
    if (!s || !*s) return;
    (*s)->ops->close(*s);
    *s = NULL;
}
