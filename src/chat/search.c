/* search.c — full-text search over the messages a user may read, and the
 * people it may see (docs/protocol.md "Search"), for the WebSocket `search`
 * message and REST (GET /api/v1/search, GET /api/v1/users?q=).
 *
 * Owns: turning a checked request into a PL_READ_SEARCH / USER_SEARCH job
 * and its answer into JSON. Membership, visibility and ranking are the
 * store's (store.h invariant 8); nothing is filtered here.
 * Does not own: validating the request (proto_search.c), the HTTP side (api*.c).
 */
#include <stdlib.h>
#include <string.h>

#include "../core/alloc.h"
#include "chat_int.h"

typedef struct search_op {
    pl_job          job;          /* first: the store hands back &job        */
    pl_chat_json_cb cb;
    void           *arg;
    char           *q;            /* the job's query (owned)                 */
} search_op;

static void search_done(pl_job *j) {
    search_op *op = (search_op *)j;
    if (j->result) {
        op->cb(op->arg, j->result, NULL, 0);
    } else {
        pl_sbuf out;
        pl_sbuf_init(&out);
        if (j->op == PL_READ_SEARCH) {
            pl_proto_search_results(&out, j->events, j->snippets, j->nevents, j->more ? j->out_id : 0);
        } else {
            pl_sbuf_adds(&out, "\"users\":[");
            for (size_t i = 0; i < j->nusers; i++) {
                pl_sbuf_printf(&out, "%s{\"id\":%lld,\"username\":", i ? "," : "", (long long)j->users[i].id);
                pl_sbuf_add_json_str(&out, j->users[i].username, strlen(j->users[i].username));
                pl_sbuf_addc(&out, '}');
            }
            pl_sbuf_addc(&out, ']');
        }
        op->cb(op->arg, PL_STORE_OK, out.p, out.len);
        pl_sbuf_release(&out);
    }
    pl_job_release(j);
    free(op->q);
    free(op);
}

static search_op *op_new(pl_job_op what, const char *q, size_t n, int64_t user, int limit,
                         pl_chat_json_cb cb, void *arg) {
    search_op *op = pl_calloc(1, sizeof *op);
    op->cb = cb;
    op->arg = arg;
    op->q = pl_malloc(n + 1);
    memcpy(op->q, q, n);
    op->q[n] = '\0';
    op->job.op = what;
    op->job.user = user;
    op->job.query = op->q;
    op->job.limit = limit;
    op->job.done = search_done;
    return op;
}

int pl_chat_search(const pl_search_args *a, int64_t user, pl_chat_json_cb cb, void *arg) {
    if (C.stopping) return PL_STORE_EUNAVAIL;
    search_op *op = op_new(PL_READ_SEARCH, a->q, a->q_len, user, a->limit, cb, arg);
    op->job.conv = a->conv;
    op->job.peer = a->sender;
    op->job.after = a->after;
    op->job.before = a->before;
    op->job.cursor = a->cursor;
    op->job.flags = (a->mentions ? PL_READ_MENTIONS_ME : 0) | (a->has_media ? PL_READ_HAS_MEDIA : 0) |
                    (a->has_before ? PL_READ_BEFORE : 0);
    pl_store_submit(C.store, &op->job);
    return 0;
}

int pl_chat_user_search(const char *q, int limit, int64_t user, pl_chat_json_cb cb, void *arg) {
    if (C.stopping) return PL_STORE_EUNAVAIL;
    search_op *op = op_new(PL_READ_USER_SEARCH, q, strlen(q), user, limit, cb, arg);
    pl_store_submit(C.store, &op->job);
    return 0;
}

void do_search(session *s, pl_msg *m) {
    ws_reply *r = ws_reply_new(s, m, "search");
    int rc = pl_chat_search(&m->search, s->user, ws_reply_json, r);
    if (rc) ws_reply_json(r, rc, NULL, 0);
}
