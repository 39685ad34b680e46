/* attach.c — resolving a send's attachments (see attach.h). */
#include "attach.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "../core/alloc.h"
#include "../media/media.h"

typedef struct attach_op {
    pl_job       job;              /* first */
    int64_t      ids[16];
    int          n;
    pl_attach_cb cb;
    void        *arg;
} attach_op;

static void resolved(pl_job *j) {
    attach_op *op = (attach_op *)j;
    char *json = NULL;
    int rc = j->result;
    if (!rc) {
        json_t *a = json_array();
        for (int i = 0; i < op->n && !rc; i++) {
            const pl_media *m = NULL;
            for (size_t k = 0; k < j->nmedia; k++)
                if (j->media[k].id == op->ids[i]) m = &j->media[k];
            if (!m) {
                rc = PL_STORE_ENOTFOUND;
                break;
            }
            json_t *o = json_pack("{s:I,s:s,s:s,s:I,s:s}", "id", (json_int_t)m->id, "kind",
                                  pl_media_kind_name(m->kind), "mime", m->mime, "size", (json_int_t)m->size,
                                  "name", m->name);
            if (m->width > 0) {
                json_object_set_new(o, "width", json_integer(m->width));
                json_object_set_new(o, "height", json_integer(m->height));
            }
            if (m->placeholder[0]) json_object_set_new(o, "placeholder", json_string(m->placeholder));
            if (m->thumb_sha[0]) json_object_set_new(o, "thumb", json_true());
            json_array_append_new(a, o);
        }
        if (!rc) json = json_dumps(a, JSON_COMPACT);
        json_decref(a);
    }
    pl_job_release(j);
    pl_attach_cb cb = op->cb;
    void *arg = op->arg;
    free(op);
    cb(arg, rc, json);
}

void pl_attach_resolve(pl_store *st, int64_t user, const int64_t *ids, int n, pl_attach_cb cb, void *arg) {
    attach_op *op = pl_calloc(1, sizeof *op);
    if (n > (int)(sizeof op->ids / sizeof op->ids[0])) n = (int)(sizeof op->ids / sizeof op->ids[0]);
    memcpy(op->ids, ids, (size_t)n * sizeof *ids);
    op->n = n;
    op->cb = cb;
    op->arg = arg;
    op->job.op = PL_READ_MEDIA_LIST;
    op->job.user = user;
    op->job.ids = op->ids;
    op->job.nids = (size_t)n;
    op->job.done = resolved;
    op->job.data = op;
    pl_store_submit(st, &op->job);
}
