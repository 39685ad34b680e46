/* store_media.c — what both backends share about media: the attachments a
 * MESSAGE's data carries (store.h attach_json). */
#include <jansson.h>
#include <stdlib.h>

#include "../core/alloc.h"
#include "store_int.h"

char *pl_store__data_attach(char *data, const char *attach_json) {
    if (!attach_json) return data;
    json_t *o = data ? json_loads(data, 0, NULL) : json_object();
    json_t *a = json_loads(attach_json, JSON_DECODE_ANY, NULL);
    if (!o || !json_is_object(o) || !a || !json_is_array(a)) {   /* ours: cannot happen */
        json_decref(o);
        json_decref(a);
        return data;
    }
    json_object_set_new(o, "attachments", a);
    char *out = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    free(data);
    return out;
}
