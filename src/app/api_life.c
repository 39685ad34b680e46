/* api_life.c — the data lifecycle over REST (docs/protocol.md "Data
 * lifecycle"; store.h invariant 13).
 *
 * Owns: setting a conversation's or workspace's retention, legal holds
 * (server admins, logged: the audit trail), a user's export
 * (GET /me/export, GET /me/messages), account deletion (DELETE /me), and
 * the timer that runs the store's purge. Account deletion leaves with the
 * ordinary jobs first (every channel, group and workspace, so each leaves
 * its ordinary event), then closes the account; a member added meanwhile
 * makes ACCOUNT_DELETE answer ECONFLICT and the leaving starts again.
 * Does not own: what the purge erases (the store), the conversation and
 * workspace objects (api_conv.c, api_ws.c).
 */
#include "api_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/alloc.h"
#include "../core/buf.h"
#include "../core/clock.h"
#include "../core/log.h"
#include "../chat/e2ee.h"
#include "../proto/proto.h"

#define PURGE_BATCH   1000    /* messages one purge job erases at most          */
#define DELETE_ROUNDS 3       /* leave-everything passes before giving up (409) */
#define EXPORT_PAGE   100     /* /me/messages' default page                     */

static struct {
    uv_loop_t  *loop;
    uv_timer_t  timer;
    int         up, busy;
    pl_job      job;
} L;

/* ---- retention and legal hold ---------------------------------------------------- */

enum { T_RETENTION = 1, T_HOLD, T_RELEASE };

static void life_error(api_op *op, const pl_job *j, const char *what) {
    if (j->result == PL_STORE_EFORBID) pl_http_error(op->ctx, 403, "forbidden", j->why ? j->why : "admins only");
    else api_store_error(op->ctx, j->result, j->why ? j->why : what);
}

static void retention_set(pl_job *j) {
    api_op *op = j->data;
    if (j->result) {
        life_error(op, j, op->conv ? "no such conversation" : "no such workspace");
        api_op_free(op);
        return;
    }
    int64_t ws = j->id, seconds = j->value;
    if (op->conv) api_respond_conv_retention(op, op->conv, seconds);
    else api_respond_ws_retention(op, ws, seconds);
}

static void hold_set(pl_job *j) {
    api_op *op = j->data;
    if (j->result) {
        life_error(op, j, op->conv ? "no such conversation" : "no such workspace");
    } else {
        int on = op->status == T_HOLD;
        int64_t id = op->conv ? op->conv : j->id;
        pl_log(PL_LOG_INFO, 0, on ? "legal hold set" : "legal hold released", "\"%s\":%lld,\"by\":%lld",
               op->conv ? "conversation" : "workspace", (long long)id, (long long)op->ctx->user);
        pl_http_respond_json(op->ctx, 200, json_pack("{s:I,s:b}", op->conv ? "conversation" : "workspace",
                                                     (json_int_t)id, "legal_hold", on));
    }
    api_op_free(op);
}

/* 1 after answering a read that failed (its row must exist: a missing one
 * is the store's failure, 503) and freeing op; 0 when it did not fail. */
static int read_failed(api_op *op, pl_job *j) {
    if (!j->result) return 0;
    api_store_error(op->ctx, j->result == PL_STORE_ENOTFOUND ? PL_STORE_EUNAVAIL : j->result, "");
    api_op_free(op);
    return 1;
}

/* The asker's name read: server admin or not, then the job. */
static void asker_read(pl_job *j) {
    api_op *op = j->data;
    if (read_failed(op, j)) return;
    int admin = api_is_server_admin(j->user_out.username);
    int64_t ws = op->user, value = op->login;
    if (op->status != T_RETENTION && !admin) {
        pl_http_error(op->ctx, 403, "forbidden", "server admins only");
        api_op_free(op);
        return;
    }
    api_job_reset(op, op->status == T_RETENTION ? PL_JOB_RETENTION_SET : PL_JOB_HOLD_SET,
                  op->status == T_RETENTION ? retention_set : hold_set);
    op->job.conv = op->conv;
    op->job.id = op->conv ? 0 : ws;
    op->job.user = op->ctx->user;
    op->job.value = value;
    op->job.flags = op->status == T_RETENTION ? (admin ? PL_JOB_ADMIN : 0) : op->status == T_RELEASE ? PL_JOB_REMOVE : 0;
    api_submit(op);
}

static void start(pl_http_ctx *ctx, json_t *body, int what, int64_t conv, int64_t ws, int64_t value) {
    api_op *op = api_op_new(ctx, body);
    op->status = what;
    op->conv = conv;
    op->user = ws;
    op->login = value;
    api_job_reset(op, PL_READ_USER_BY_ID, asker_read);
    op->job.user = ctx->user;
    api_submit(op);
}

void h_retention(pl_http_ctx *ctx, int64_t conv, int64_t ws) {
    json_t *o = api_body_object(ctx);
    if (!o) return;
    json_t *v = json_object_get(o, "seconds");
    if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > PL_RETENTION_MAX) {
        pl_http_error(ctx, 400, "bad_request", "\"seconds\" must be an integer from 0 to 3155760000");
        json_decref(o);
        return;
    }
    start(ctx, o, T_RETENTION, conv, ws, (int64_t)json_integer_value(v));
}

void h_hold(pl_http_ctx *ctx, int64_t conv, int64_t ws, int release) {
    start(ctx, NULL, release ? T_RELEASE : T_HOLD, conv, ws, 0);
}

/* ---- export --------------------------------------------------------------------------- */

/* op->root holds the answer as it grows: user, conversations, workspaces,
 * push devices (each a read), then it goes out. */
static void export_step(api_op *op, pl_job_op next, pl_job_cb done) {
    api_job_reset(op, next, done);
    op->job.user = op->ctx->user;
    api_submit(op);
}

static void export_devices(pl_job *j) {
    api_op *op = j->data;
    if (read_failed(op, j)) return;
    json_object_set_new(op->root, "push_devices", api_push_devices_json(j, op->ctx->login));
    json_object_set_new(op->root, "messages", json_string("/api/v1/me/messages"));
    pl_http_respond_json(op->ctx, 200, json_incref(op->root));
    api_op_free(op);
}

static void export_workspaces(pl_job *j) {
    api_op *op = j->data;
    if (read_failed(op, j)) return;
    json_object_set_new(op->root, "workspaces", api_ws_list_json(j));
    export_step(op, PL_READ_PUSH_DEVICES, export_devices);
}

static void export_convs(pl_job *j) {
    api_op *op = j->data;
    if (read_failed(op, j)) return;
    json_object_set_new(op->root, "conversations", api_conv_list_json(j));
    export_step(op, PL_READ_WORKSPACES, export_workspaces);
}

static void export_user(pl_job *j) {
    api_op *op = j->data;
    if (read_failed(op, j)) return;
    op->root = json_pack("{s:I,s:{s:I,s:s}}", "exported", (json_int_t)pl_now_ms(), "user", "id",
                         (json_int_t)j->user_out.id, "username", j->user_out.username);
    api_job_reset(op, PL_READ_CONV_LIST, export_convs);   /* export_step, with the flag set before submitting */
    op->job.user = op->ctx->user;
    op->job.flags = PL_READ_WITH_LAST;
    api_submit(op);
}

void h_me_export(pl_http_ctx *ctx) {
    api_op *op = api_op_new(ctx, NULL);
    export_step(op, PL_READ_USER_BY_ID, export_user);
}

/* In a conversation the user has left or was removed from (or rejoined
 * since: a message from before its latest joining; audit L4), its own
 * message keeps only what is its own: what others did after it was gone
 * (the parent's later edit quoted in reply_preview, reactions, a pin) is
 * not for it to read (protocol.md: access ends at the removal; audit L3).
 * Its own edits are kept: they were made while it was a member. */
static void own_form_only(pl_event *e) {
    if (!e->annot) return;
    char *wrapped = NULL;
    if (asprintf(&wrapped, "{%s}", e->annot) < 0) wrapped = NULL;
    json_t *o = wrapped ? json_loads(wrapped, 0, NULL) : NULL;
    free(wrapped);
    json_t *ed = o ? json_object_get(o, "edited_ts") : NULL;
    free(e->annot);
    e->annot = NULL;
    if (json_is_integer(ed) && asprintf(&e->annot, "\"edited_ts\":%lld", (long long)json_integer_value(ed)) < 0)
        e->annot = NULL;
    json_decref(o);
}

static void memberships_read(pl_job *j) {
    api_op *op = j->data;
    if (j->result) {
        api_store_error(op->ctx, j->result, "");
        api_op_free(op);
        return;
    }
    pl_sbuf s;
    pl_sbuf_init(&s);
    pl_sbuf_adds(&s, "{\"messages\":[");
    for (size_t i = 0; i < op->nevents; i++) {
        pl_event *e = &op->events[i];
        int member = 0;                     /* and the message after its (latest) joining */
        for (size_t k = 0; k < j->nmships && !member; k++)
            member = j->mships[k].conv == e->conv && e->seq > j->mships[k].joined_seq;
        if (!member) own_form_only(e);
        pl_sbuf_printf(&s, "%s{\"conversation\":%lld,", i ? "," : "", (long long)e->conv);
        pl_proto_event_fields(&s, e);
        pl_sbuf_addc(&s, '}');
    }
    if (op->created && op->nevents)
        pl_sbuf_printf(&s, "],\"next\":\"%llu\"}", (unsigned long long)op->events[op->nevents - 1].id);
    else
        pl_sbuf_adds(&s, "],\"next\":null}");
    pl_http_respond(op->ctx, 200, "application/json", s.p, s.len, NULL);
    pl_sbuf_release(&s);
    api_op_free(op);
}

/* The page first, then the user's memberships: a conversation left
 * between the two reads counts as left (the safe side). */
static void messages_read(pl_job *j) {
    api_op *op = j->data;
    if (j->result) {
        api_store_error(op->ctx, j->result, "");
        api_op_free(op);
        return;
    }
    op->events = j->events;                 /* held across the next read */
    op->nevents = j->nevents;
    op->created = j->more;
    j->events = NULL;
    j->nevents = 0;
    api_job_reset(op, PL_READ_MEMBERSHIPS, memberships_read);
    op->job.ids = &op->user;
    op->job.nids = 1;
    api_submit(op);
}

void h_me_messages(pl_http_ctx *ctx) {
    char after[32];
    int64_t limit = EXPORT_PAGE;
    unsigned long long cursor = 0;
    int bad = 0;
    if (pl_http_query_get(ctx->req.query, "limit", after, sizeof after) &&
        (api_query_int(ctx, "limit", &limit) || limit < 1 || limit > PL_STORE_PAGE_MAX)) {
        pl_http_error(ctx, 400, "bad_request", "\"limit\" must be 1-200");
        return;
    }
    if (pl_http_query_get(ctx->req.query, "after", after, sizeof after)) {
        char *end;
        cursor = strtoull(after, &end, 10);
        /* digits only, without a leading zero, as every query integer (protocol.md) */
        bad = after[0] < '0' || after[0] > '9' || (after[0] == '0' && after[1]) || *end ||
              cursor > (unsigned long long)INT64_MAX;
    }
    if (bad) {
        pl_http_error(ctx, 400, "bad_request",
                      "\"after\" must be a message id (digits without a leading zero, at most 2^63 - 1)");
        return;
    }
    api_op *op = api_op_new(ctx, NULL);
    op->user = ctx->user;
    api_job_reset(op, PL_READ_USER_MESSAGES, messages_read);
    op->job.user = ctx->user;
    op->job.cursor = (int64_t)cursor;
    op->job.limit = (int)limit;
    api_submit(op);
}

/* ---- account deletion ------------------------------------------------------------------- */

/* op->members: what is left to leave, as id * 2 + 1 for a channel (evicted:
 * MEMBER_REMOVE with PL_JOB_EVICT, which also takes "general") and id * 2
 * for a group (MEMBER_LEAVE); op->created: how many, op->user: the next.
 * op->status: the pass (1..DELETE_ROUNDS). op->login: 1 while leaving
 * conversations, 2 while leaving workspaces (members: their ids), 3 while
 * lifting the blocks the user made (members: the blocked users' ids; each
 * an unblock, so a direct conversation's flag is cleared and announced as
 * any unblock's). */
static void leave_next(api_op *op);
static void delete_list(api_op *op);
static void ws_listed(pl_job *j);
static void blocks_listed(pl_job *j);

static void closed(pl_job *j) {
    api_op *op = j->data;
    if (j->result == PL_STORE_ECONFLICT && op->status < DELETE_ROUNDS) {   /* added meanwhile */
        op->status++;
        delete_list(op);
        return;
    }
    if (j->result == PL_STORE_ECONFLICT) {
        /* added to a conversation, or a block made, by another request
         * at every pass (audit O10: a block said "still a member") */
        pl_http_error(op->ctx, 409, "conflict",
                      j->why && !strcmp(j->why, "still blocking")
                          ? "a block was made meanwhile: send the request again"
                          : "still a member of a conversation: send the request again");
    } else if (j->result && j->result != PL_STORE_ENOTFOUND) {
        api_store_error(op->ctx, j->result, "");
    } else {
        /* ENOTFOUND: the account, there when this request was signed in,
         * was deleted meanwhile by another request of the same user (two
         * devices at once): what was asked for is done, so 204 here too
         * (it was a 503 "nothing was changed": audit P2 F2) */
        pl_chat_revoke_login(op->ctx->user, 0);         /* every session, on every node: 4001 */
        if (!j->result) {
            pl_e2ee_announce(op->ctx->user);            /* its keys went: e2ee direct ones say so */
            pl_log(PL_LOG_INFO, 0, "account deleted", "\"user\":%lld", (long long)op->ctx->user);
        }
        pl_http_respond(op->ctx, 204, NULL, NULL, 0, NULL);
    }
    api_op_free(op);
}

static void left(pl_job *j) {
    api_op *op = j->data;
    if (j->result == PL_STORE_EUNAVAIL) {      /* the store failed: the client repeats */
        api_store_error(op->ctx, j->result, "");
        api_op_free(op);
        return;
    }
    if (op->login == 3 && !j->result && j->conv_out.id)
        pl_chat_conv_blocked(j->conv_out.id, j->conv_out.blocked);   /* as h_block's unblock */
    leave_next(op);                            /* ENOTFOUND and the like: gone meanwhile */
}

static void leave_next(api_op *op) {
    size_t at = (size_t)op->user;
    if (at < (size_t)op->created) {
        op->user++;
        int64_t v = op->members[at];
        if (op->login == 3) {
            api_job_reset(op, PL_JOB_BLOCK, left);
            op->job.flags = PL_JOB_REMOVE;
            op->job.user = op->ctx->user;
            op->job.peer = v;
            api_submit(op);
            return;
        }
        if (op->login == 2) {
            api_job_reset(op, PL_JOB_WORKSPACE_REMOVE, left);
            op->job.id = v;
        } else {
            api_job_reset(op, v & 1 ? PL_JOB_MEMBER_REMOVE : PL_JOB_MEMBER_LEAVE, left);
            op->job.conv = v >> 1;
            op->job.flags = v & 1 ? PL_JOB_EVICT : 0;
        }
        op->job.user = op->job.peer = op->ctx->user;
        api_submit(op);
        return;
    }
    if (op->login == 1) {                      /* then the workspaces */
        api_job_reset(op, PL_READ_WORKSPACES, ws_listed);
        op->login = 2;
        op->job.user = op->ctx->user;
        api_submit(op);
        return;
    }
    if (op->login == 2) {                      /* then the blocks */
        api_job_reset(op, PL_READ_BLOCKS, blocks_listed);
        op->login = 3;
        op->job.user = op->ctx->user;
        api_submit(op);
        return;
    }
    api_job_reset(op, PL_JOB_ACCOUNT_DELETE, closed);
    op->job.user = op->ctx->user;
    api_submit(op);
}

static void take_list(api_op *op, size_t n) {
    free(op->members);
    op->members = pl_malloc((n ? n : 1) * sizeof *op->members);
    op->created = 0;
    op->user = 0;
}

static void ws_listed(pl_job *j) {
    api_op *op = j->data;
    if (read_failed(op, j)) return;
    take_list(op, j->nworkspaces);
    for (size_t i = 0; i < j->nworkspaces; i++) op->members[op->created++] = j->workspaces[i].id;
    leave_next(op);
}

static void blocks_listed(pl_job *j) {
    api_op *op = j->data;
    if (read_failed(op, j)) return;
    take_list(op, j->nusers);
    for (size_t i = 0; i < j->nusers; i++) op->members[op->created++] = j->users[i].id;
    leave_next(op);
}

static void convs_listed(pl_job *j) {
    api_op *op = j->data;
    if (read_failed(op, j)) return;
    take_list(op, j->nconvs);
    for (size_t i = 0; i < j->nconvs; i++) {
        const pl_conv *c = &j->convs[i];
        if (c->kind != PL_CONV_DIRECT) op->members[op->created++] = c->id * 2 + (c->kind == PL_CONV_CHANNEL);
    }
    op->login = 1;
    leave_next(op);
}

static void delete_list(api_op *op) {
    api_job_reset(op, PL_READ_CONV_LIST, convs_listed);
    op->job.user = op->ctx->user;
    api_submit(op);
}

static void verify_work(uv_work_t *w) {
    api_op *op = w->data;
    op->ok = pl_auth_check_password(op->pwhash, op->password, op->pwlen);
}

static void verified(uv_work_t *w, int status) {
    api_op *op = w->data;
    if (!op->ok || status) {
        /* not 401: that says the token is bad, and clients refresh on it */
        pl_http_error(op->ctx, 403, "forbidden", "wrong password");
        api_op_free(op);
        return;
    }
    op->status = 1;
    delete_list(op);
}

/* The account went while this request was on its way, deleted by another
 * request of the same user (two devices at once): what was asked for is
 * done, so 204, as closed() answers a deletion that lost the race at its
 * last step. The fresh-clone CI met the race between the name and the
 * hash reads (a 503 "nothing was changed" for a deleted account). */
static void already_deleted(api_op *op) {
    pl_chat_revoke_login(op->ctx->user, 0);
    pl_http_respond(op->ctx, 204, NULL, NULL, 0, NULL);
    api_op_free(op);
}

static int deleted_name(const char *name) { return strncmp(name, "deleted#", 8) == 0; }

static void hash_read(pl_job *j) {
    api_op *op = j->data;
    if (j->result == PL_STORE_ENOTFOUND || (!j->result && deleted_name(j->user_out.username))) {
        already_deleted(op);                   /* renamed deleted#<id> meanwhile */
        return;
    }
    if (j->result || !j->user_out.pwhash || j->user_out.id != op->ctx->user) {
        api_store_error(op->ctx, j->result && j->result != PL_STORE_ENOTFOUND ? j->result : PL_STORE_EUNAVAIL, "");
        api_op_free(op);
        return;
    }
    snprintf(op->pwhash, sizeof op->pwhash, "%s", j->user_out.pwhash);
    pl_job_release(j);
    op->work.data = op;
    uv_queue_work(A.loop, &op->work, verify_work, verified);
}

static void name_read(pl_job *j) {
    api_op *op = j->data;
    if (!j->result && deleted_name(j->user_out.username)) {
        already_deleted(op);
        return;
    }
    if (read_failed(op, j)) return;
    snprintf(op->username, sizeof op->username, "%s", j->user_out.username);
    if (api_is_server_admin(op->username)) {
        /* the role follows the name, which deletion frees: whoever
         * registered it next would be a server admin */
        pl_http_error(op->ctx, 403, "forbidden",
                      "a server admin's account cannot be deleted while --admins names it");
        api_op_free(op);
        return;
    }
    api_job_reset(op, PL_READ_USER_BY_NAME, hash_read);
    op->job.username = op->username;
    op->job.flags = PL_READ_WITH_HASH;
    api_submit(op);
}

void h_me_delete(pl_http_ctx *ctx) {
    json_t *o = api_body_object(ctx);
    if (!o) return;
    json_t *pw = json_object_get(o, "password");
    if (!json_is_string(pw) || !json_string_length(pw)) {
        pl_http_error(ctx, 400, "bad_request", "\"password\" is required to delete the account");
        json_decref(o);
        return;
    }
    api_op *op = api_op_new(ctx, o);
    op->pwlen = json_string_length(pw);
    op->password = pl_malloc(op->pwlen + 1);
    memcpy(op->password, json_string_value(pw), op->pwlen + 1);
    api_job_reset(op, PL_READ_USER_BY_ID, name_read);
    op->job.user = ctx->user;
    api_submit(op);
}

/* ---- the purge --------------------------------------------------------------------------- */

static void purged(pl_job *j);

static void purge_submit(void) {
    L.busy = 1;
    memset(&L.job, 0, sizeof L.job);
    L.job.op = PL_JOB_RETENTION_PURGE;
    L.job.expires = pl_now_ms();
    L.job.limit = PURGE_BATCH;
    L.job.done = purged;
    pl_store_submit(A.store, &L.job);
}

static void purged(pl_job *j) {
    int again = !j->result && j->out_id >= PURGE_BATCH && L.up;
    if (j->result) pl_log(PL_LOG_WARN, 0, "retention purge failed", "\"rc\":%d", j->result);
    else if (j->out_id) {
        pl_log(PL_LOG_INFO, 0, "retention: messages erased", "\"count\":%lld", (long long)j->out_id);
        pl_chat_erased();                       /* no replay from memory serves them */
    }
    pl_job_release(j);
    L.busy = 0;
    if (again && A.store) purge_submit();       /* more to do: the next batch at once */
}

static void purge_tick(uv_timer_t *t) {
    if (!L.busy && A.store) purge_submit();
}

void pl_api_life_init(uv_loop_t *loop, const pl_config *cfg) {
    L.loop = loop;
    L.up = 1;
    uv_timer_init(loop, &L.timer);
    uint64_t every = (uint64_t)cfg->purge_interval * 1000;
    uv_timer_start(&L.timer, purge_tick, every, every);
    uv_unref((uv_handle_t *)&L.timer);
}

void pl_api_life_shutdown(void) {
    if (!L.up) return;
    L.up = 0;
    uv_timer_stop(&L.timer);
    uv_close((uv_handle_t *)&L.timer, NULL);
}
