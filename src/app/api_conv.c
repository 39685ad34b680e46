/* api_conv.c — conversations over REST: list, create, get, members, leave,
 * the HTTP send, the message actions (edit, delete, reactions, pins,
 * notification level), receipts, presence (docs/protocol.md section 2,
 * and the REST forms of section 3). History and its long-poll are in
 * api_history.c.
 */
#include "api_int.h"

#include <stdlib.h>
#include <string.h>

#include "../core/alloc.h"
#include "../core/clock.h"
#include "../chat/attach.h"
#include "../chat/e2ee.h"
#include "../proto/proto.h"

/* ---- conversations ------------------------------------------------------- */

static const char *role_name(int r) {
    return r == PL_ROLE_ADMIN ? "admin" : r == PL_ROLE_MEMBER ? "member" : "none";
}

const char *api_conv_kind_name(int kind) {
    return kind == PL_CONV_DIRECT ? "direct" : kind == PL_CONV_CHANNEL ? "channel" : "group";
}

static json_t *conv_json(const pl_conv *c, int with_members) {
    json_t *o = json_pack("{s:I,s:s,s:I,s:I,s:I,s:s,s:I}", "id", (json_int_t)c->id,
                          "kind", api_conv_kind_name(c->kind),
                          "last_seq", (json_int_t)c->last_seq, "unread", (json_int_t)c->unread,
                          "read_seq", (json_int_t)c->read_seq, "role", role_name(c->role),
                          "last_ts", (json_int_t)c->last_ts);
    json_object_set_new(o, "title", c->title ? json_string(c->title) : json_null());
    json_object_set_new(o, "unread_mentions", json_integer((json_int_t)c->unread_mentions));
    json_object_set_new(o, "notify", json_string(pl_proto_notify_name(c->notify)));
    json_object_set_new(o, "e2ee", json_boolean(c->e2ee));      /* end-to-end encrypted */
    json_object_set_new(o, "workspace", c->workspace ? json_integer((json_int_t)c->workspace) : json_null());
    json_object_set_new(o, "private", json_boolean(c->is_private));
    if (c->kind == PL_CONV_DIRECT) json_object_set_new(o, "blocked", json_boolean(c->blocked));
    /* its retention (CONV_GET, and the list read WITH_LAST) */
    int64_t r = c->retention ? c->retention : c->ws_retention ? c->ws_retention : A.cfg->retention;
    const char *from = c->retention ? "conversation" : c->ws_retention ? "workspace"
                     : A.cfg->retention ? "server" : NULL;
    json_object_set_new(o, "retention_seconds", json_integer((json_int_t)r));
    json_object_set_new(o, "retention_source", from ? json_string(from) : json_null());
    if (with_members) {
        json_t *m = json_array();
        for (size_t i = 0; i < c->nmembers; i++)
            json_array_append_new(m, json_pack("{s:I,s:s,s:s}", "id", (json_int_t)c->members[i].user,
                                               "username", c->members[i].username,
                                               "role", role_name(c->members[i].role)));
        json_object_set_new(o, "members", m);
    }
    return o;
}

static void conv_read(pl_job *j) {
    api_op *op = j->data;
    if (j->result) api_store_error(op->ctx, j->result, "no such conversation");
    else pl_http_respond_json(op->ctx, op->status ? op->status : 200, conv_json(&j->conv_out, 1));
    api_op_free(op);
}

/* Answers with the conversation as ctx->user sees it (status on success). */
void api_respond_conv(api_op *op, int64_t conv, int status) {
    op->status = status;
    api_job_reset(op, PL_READ_CONV_GET, conv_read);
    op->job.conv = conv;
    op->job.user = op->ctx->user;
    api_submit(op);
}

/* After a retention change (api_life.c): the conversation, or, for a
 * server admin who is not in it, {"id", "retention_seconds"} (op->login:
 * the value set). */
static void retention_conv_read(pl_job *j) {
    api_op *op = j->data;
    if (j->result == PL_STORE_ENOTFOUND)
        pl_http_respond_json(op->ctx, 200, json_pack("{s:I,s:I,s:o}", "id", (json_int_t)op->conv, "retention_seconds",
                                                     (json_int_t)op->login, "retention_source",
                                                     op->login ? json_string("conversation") : json_null()));
    else if (j->result) api_store_error(op->ctx, j->result, "no such conversation");
    else pl_http_respond_json(op->ctx, 200, conv_json(&j->conv_out, 1));
    api_op_free(op);
}

void api_respond_conv_retention(api_op *op, int64_t conv, int64_t seconds) {
    op->conv = conv;
    op->login = seconds;
    api_job_reset(op, PL_READ_CONV_GET, retention_conv_read);
    op->job.conv = conv;
    op->job.user = op->ctx->user;
    api_submit(op);
}

void h_conv_get(pl_http_ctx *ctx, int64_t conv) { api_respond_conv(api_op_new(ctx, NULL), conv, 200); }

/* A conversation created (or a direct one opened) with "e2ee": true was
 * marked end-to-end encrypted (protocol.md "End-to-end encryption"). */
static void created_marked(pl_job *j) {
    api_op *op = j->data;
    if (j->result) {
        api_store_error(op->ctx, j->result, j->why ? j->why : "could not mark the conversation");
        api_op_free(op);
        return;
    }
    api_respond_conv(op, j->conv, op->status);
}

void api_conv_changed(pl_job *j) {
    api_op *op = j->data;
    if (j->result) {
        /* a creation names no conversation: its unknown one is a user, as
         * when it is named by username (audit E5) */
        int creating = j->op == PL_JOB_DIRECT_OPEN || j->op == PL_JOB_GROUP_CREATE;
        api_store_error(op->ctx, j->result, j->why ? j->why : j->result == PL_STORE_EFORBID ? "admins only" :
                                            j->result == PL_STORE_EINVAL ? "not possible for this conversation" :
                                            creating ? "no such user" : "no such conversation or user");
        api_op_free(op);
        return;
    }
    pl_job_op what = j->op;
    int64_t conv = what == PL_JOB_MEMBER_ADD || what == PL_JOB_MEMBER_REMOVE ||
                   what == PL_JOB_MEMBER_LEAVE || what == PL_JOB_MEMBER_ROLE ? j->conv : j->out_id;
    if (what == PL_JOB_MEMBER_REMOVE || what == PL_JOB_MEMBER_LEAVE) {
        pl_http_respond(op->ctx, 204, NULL, NULL, 0, NULL);
        api_op_free(op);
        return;
    }
    int status = what == PL_JOB_MEMBER_ADD || what == PL_JOB_CHANNEL_JOIN || what == PL_JOB_MEMBER_ROLE ? 200
               : (what == PL_JOB_DIRECT_OPEN && !j->created) ? 200 : 201;
    if (what != PL_JOB_MEMBER_ADD && what != PL_JOB_CHANNEL_JOIN && what != PL_JOB_MEMBER_ROLE && op->root &&
        json_is_true(json_object_get(op->root, "e2ee"))) {
        op->status = status;
        api_job_reset(op, PL_JOB_CONV_E2EE, created_marked);
        op->job.conv = conv;
        op->job.user = op->ctx->user;
        api_submit(op);
        return;
    }
    api_respond_conv(op, conv, status);
}

static void direct_peer_read(pl_job *j) {
    api_op *op = j->data;
    if (api_user_read_failed(op)) return;
    int64_t peer = j->user_out.id;
    if (peer == op->ctx->user) {
        pl_http_error(op->ctx, 400, "bad_request", "a direct conversation needs another user");
        api_op_free(op);
        return;
    }
    api_job_reset(op, PL_JOB_DIRECT_OPEN, api_conv_changed);
    op->job.user = op->ctx->user;
    op->job.peer = peer;
    api_submit(op);
}

static int cmp_id(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Members a new group will have: the creator and the distinct others. */
static size_t group_size(const int64_t *ids, size_t n, int64_t creator) {
    int64_t *v = pl_malloc((n ? n : 1) * sizeof *v);
    memcpy(v, ids, n * sizeof *v);
    qsort(v, n, sizeof *v, cmp_id);
    size_t size = 1;
    for (size_t i = 0; i < n; i++)
        if (v[i] != creator && (i == 0 || v[i] != v[i - 1])) size++;
    free(v);
    return size;
}

int api_user_read_failed(api_op *op) {
    int r = op->job.result;
    if (!r) return 0;
    if (r == PL_STORE_ENOTFOUND) pl_http_error(op->ctx, 404, "not_found", "no such user");
    else api_store_error(op->ctx, r, "");
    api_op_free(op);
    return 1;
}

int64_t api_user_read_or_id0(api_op *op) {
    int r = op->job.result;
    if (r == PL_STORE_ENOTFOUND) return 0;
    if (r) {
        api_store_error(op->ctx, r, "");
        api_op_free(op);
        return -1;
    }
    return op->job.user_out.id;
}

int api_user_arg(api_op *op, json_t *o, int64_t *peer, pl_job_cb by_name_done, int as_id0) {
    json_t *u = json_object_get(o, "user"), *un = json_object_get(o, "username");
    if (u && un) {                       /* which one? never a silent choice (audit V) */
        pl_http_error(op->ctx, 400, "bad_request", "give \"user\" or \"username\", not both");
        api_op_free(op);
        return -1;
    }
    /* 0 is an id no user has: the store answers for it as for 999 */
    if (json_is_integer(u) && json_integer_value(u) >= 0 && json_integer_value(u) <= PL_JSON_INT_MAX) {
        *peer = json_integer_value(u);
        return 1;
    }
    if (json_is_string(un)) {
        if (pl_auth_normalize_username(json_string_value(un), json_string_length(un), op->username)) {
            if (as_id0) {
                *peer = 0;
                return 1;
            }
            pl_http_error(op->ctx, 404, "not_found", "no such user");
            api_op_free(op);
            return -1;
        }
        api_job_reset(op, PL_READ_USER_BY_NAME, by_name_done);
        op->job.username = op->username;
        return 0;
    }
    pl_http_error(op->ctx, 400, "bad_request", "\"user\" must be a user id (or \"username\" a name)");
    api_op_free(op);
    return -1;
}

int api_group_members(api_op *op, json_t *m, size_t *nout) {
    pl_http_ctx *ctx = op->ctx;
    if (m && !json_is_array(m)) {
        pl_http_error(ctx, 400, "bad_request", "\"members\" must be an array of user ids");
        api_op_free(op);
        return -1;
    }
    size_t n = m ? json_array_size(m) : 0;
    op->members = pl_calloc(n ? n : 1, sizeof *op->members);
    for (size_t i = 0; i < n; i++) {
        json_t *v = json_array_get(m, i);
        /* 0 is an id no user has: the store answers for it as for 999 */
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > PL_JSON_INT_MAX) {
            pl_http_error(ctx, 400, "bad_request", "\"members\" must be an array of user ids");
            api_op_free(op);
            return -1;
        }
        op->members[i] = json_integer_value(v);
    }
    if (group_size(op->members, n, ctx->user) > (size_t)A.cfg->max_group_members) {
        pl_http_error(ctx, 413, "too_large", "too many members");
        api_op_free(op);
        return -1;
    }
    *nout = n;
    return 0;
}

void h_conv_create(pl_http_ctx *ctx) {
    json_t *o = api_body_object(ctx);
    if (!o) return;
    const char *kind = json_string_value(json_object_get(o, "kind"));
    json_t *e2ee = json_object_get(o, "e2ee");
    if (e2ee && !json_is_boolean(e2ee)) {
        pl_http_error(ctx, 400, "bad_request", "\"e2ee\" must be true or false");
        json_decref(o);
        return;
    }
    /* a field of the other kind: a client that meant the other one, told
     * so rather than given a conversation it did not ask for (audit E3) */
    const char *stray = NULL;
    if (kind && strcmp(kind, "group") == 0 && (json_object_get(o, "user") || json_object_get(o, "username")))
        stray = "a group takes \"members\" (ids), not \"user\" or \"username\"";
    else if (kind && strcmp(kind, "direct") == 0 && (json_object_get(o, "members") || json_object_get(o, "title")))
        stray = "a direct conversation takes \"user\" or \"username\", not \"members\" or \"title\"";
    if (stray) {
        pl_http_error(ctx, 400, "bad_request", stray);
        json_decref(o);
        return;
    }
    api_op *op = api_op_new(ctx, o);
    if (kind && strcmp(kind, "direct") == 0) {
        int64_t peer = 0;
        int by = api_user_arg(op, o, &peer, direct_peer_read, 0);
        if (by < 0) return;
        if (by == 1) {
            if (peer == ctx->user) {
                pl_http_error(ctx, 400, "bad_request", "a direct conversation needs another user");
                api_op_free(op);
                return;
            }
            api_job_reset(op, PL_JOB_DIRECT_OPEN, api_conv_changed);
            op->job.user = ctx->user;
            op->job.peer = peer;
        }
    } else if (kind && strcmp(kind, "group") == 0) {
        json_t *t = json_object_get(o, "title");
        if (!api_name_ok(ctx, t, "title", PL_GROUP_TITLE_MAX)) {
            api_op_free(op);
            return;
        }
        size_t n = 0;
        if (api_group_members(op, json_object_get(o, "members"), &n) != 0) return;
        api_job_reset(op, PL_JOB_GROUP_CREATE, api_conv_changed);
        op->job.user = ctx->user;
        op->job.title = json_string_value(t);
        op->job.members = op->members;
        op->job.nmembers = n;
    } else {
        pl_http_error(ctx, 400, "bad_request", "\"kind\" must be \"direct\" or \"group\"");
        api_op_free(op);
        return;
    }
    api_submit(op);
}

json_t *api_conv_list_json(const pl_job *j) {
    json_t *arr = json_array();
    for (size_t i = 0; i < j->nconvs; i++) {
        json_t *o = conv_json(&j->convs[i], 0);
        json_t *last = NULL;
        if (j->convs[i].last) {
            pl_sbuf s;
            pl_sbuf_init(&s);
            pl_sbuf_addc(&s, '{');
            pl_proto_event_fields(&s, j->convs[i].last);
            pl_sbuf_addc(&s, '}');
            last = json_loadb(s.p, s.len, 0, NULL);
            pl_sbuf_release(&s);
        }
        json_object_set_new(o, "last", last ? last : json_null());
        json_array_append_new(arr, o);
    }
    return arr;
}

static void conv_list_read(pl_job *j) {
    api_op *op = j->data;
    if (j->result) api_store_error(op->ctx, j->result, "conversations unavailable");
    else pl_http_respond_json(op->ctx, 200, json_pack("{s:o}", "conversations", api_conv_list_json(j)));
    api_op_free(op);
}

void h_conv_list(pl_http_ctx *ctx) {
    api_op *op = api_op_new(ctx, NULL);
    api_job_reset(op, PL_READ_CONV_LIST, conv_list_read);
    op->job.user = ctx->user;
    op->job.flags = PL_READ_WITH_LAST;
    api_submit(op);
}

int api_role_arg(pl_http_ctx *ctx, json_t *o) {
    const char *r = json_string_value(json_object_get(o, "role"));
    int role = !r ? 0 : strcmp(r, "admin") == 0 ? PL_ROLE_ADMIN : strcmp(r, "member") == 0 ? PL_ROLE_MEMBER : 0;
    if (!role) {
        json_decref(o);
        pl_http_error(ctx, 400, "bad_request", "\"role\" must be \"admin\" or \"member\"");
    }
    return role;
}

/* POST /members: adds peer to op->conv. */
static void member_add_submit(api_op *op, int64_t peer) {
    api_job_reset(op, PL_JOB_MEMBER_ADD, api_conv_changed);
    op->job.conv = op->conv;
    op->job.user = op->ctx->user;
    op->job.peer = peer;
    api_submit(op);
}

/* POST /members with a username: the user found, the add as with an id. */
static void member_add_peer_read(pl_job *j) {
    api_op *op = j->data;
    int64_t peer = api_user_read_or_id0(op);
    if (peer >= 0) member_add_submit(op, peer);
}

void h_member_op(pl_http_ctx *ctx, int64_t conv, pl_job_op what, int64_t peer) {
    json_t *o = NULL;
    if (what == PL_JOB_MEMBER_ADD) {
        o = api_body_object(ctx);
        if (!o) return;
        api_op *op = api_op_new(ctx, o);
        op->conv = conv;
        int by = api_user_arg(op, o, &peer, member_add_peer_read, 1);
        if (by < 0) return;
        if (by == 0) api_submit(op);     /* {"username": ...}: looked up first */
        else member_add_submit(op, peer);
        return;
    }
    int role = 0;
    if (what == PL_JOB_MEMBER_ROLE && (!(o = api_body_object(ctx)) || !(role = api_role_arg(ctx, o)))) return;
    api_op *op = api_op_new(ctx, o);
    api_job_reset(op, what, api_conv_changed);
    op->job.conv = conv;
    op->job.user = ctx->user;
    op->job.peer = peer;
    op->job.level = role;
    api_submit(op);
}

/* ---- the HTTP send ------------------------------------------------------------ */

/* A proto field error as a REST answer. */
static void proto_error(pl_http_ctx *ctx, const pl_proto_err *e) {
    pl_http_error(ctx, strcmp(e->code, "too_large") == 0 ? 413 : 400, e->code, e->message);
}

/* A failed send or action, with the store's reason. */
static void job_error(pl_http_ctx *ctx, const pl_job *j) {
    int status;
    const char *msg;
    const char *code = pl_chat_job_error(j, &status, &msg);
    if (j->result == PL_STORE_EUNAVAIL) msg = "the store is unavailable; nothing was changed, try again";
    pl_http_error(ctx, status, code, msg);
}

/* A send the filter blocked, after PL_READ_SEND_CHECK (as chat/send.c's
 * send_checked): a retry's original answer, a stranger's 404, else 422. */
static void http_checked(pl_job *j) {
    api_op *op = j->data;
    if (j->result == PL_STORE_OK && j->dup) {
        pl_sbuf s;
        pl_sbuf_init(&s);
        pl_proto_sent(&s, &j->event, 1, NULL, 1);
        pl_http_respond(op->ctx, 200, "application/json", s.p, s.len, NULL);
        pl_sbuf_release(&s);
    } else if (j->result == PL_STORE_ENOTFOUND) {
        pl_http_error(op->ctx, 404, "not_found", "no such conversation");
    } else {
        pl_http_error(op->ctx, 422, PL_CHAT_FILTERED, PL_CHAT_FILTERED_MSG);
    }
    api_op_free(op);
}

/* Admitted: a send's or edit's text through the content filter
 * (chat/content.c; after the rate limits, so probing it costs tokens),
 * then the store. A blocked send is looked up first (http_checked). */
static void filter_submit(api_op *op) {
    int text = op->job.op == PL_JOB_MESSAGE_SEND || op->job.op == PL_JOB_MESSAGE_EDIT;
    if (text && pl_chat_filter(&op->job, &op->masked, &op->flag_line)) {
        if (op->job.op == PL_JOB_MESSAGE_EDIT) {
            pl_http_error(op->ctx, 422, PL_CHAT_FILTERED, PL_CHAT_FILTERED_MSG);
            api_op_free(op);
            return;
        }
        op->job.op = PL_READ_SEND_CHECK;
        op->job.done = http_checked;
    }
    api_submit(op);
}

static void http_sent(pl_job *j) {
    api_op *op = j->data;
    if (j->result) job_error(op->ctx, j);
    else {
        pl_chat_sent(j, op->t0_us);           /* the event was published just before */
        if (op->flag_line && !j->dup) pl_chat_filter_report(j->user, j->conv, j->event.seq, op->flag_line);
        pl_sbuf s;
        pl_sbuf_init(&s);
        pl_proto_sent(&s, &j->event, j->dup, NULL, 1);
        pl_http_respond(op->ctx, j->dup ? 200 : 201, "application/json", s.p, s.len, NULL);
        pl_sbuf_release(&s);
    }
    api_op_free(op);
}

static void send_admitted(void *arg, int64_t retry, const char *scope) {
    api_op *op = arg;
    if (retry) {
        api_too_many(op->ctx, retry, "messages", scope);
        api_op_free(op);
        return;
    }
    filter_submit(op);
}

static void send_go(api_op *op) {
    if (pl_chat_admit_send(op->job.user, op->job.conv, send_admitted, op)) {
        pl_http_error(op->ctx, 503, "unavailable", "shutting down");
        api_op_free(op);
    }
}

static void send_attached(void *arg, int rc, char *json) {
    api_op *op = arg;
    if (rc) {
        api_store_error(op->ctx, rc, rc == PL_STORE_ENOTFOUND ? "an attachment is not one of your uploads" : "");
        api_op_free(op);
        return;
    }
    op->job.attach_json = op->attach_json = json;
    if (!A.store) {
        pl_http_error(op->ctx, 503, "unavailable", "shutting down");
        api_op_free(op);
        return;
    }
    send_go(op);
}

void h_send(pl_http_ctx *ctx, int64_t conv) {
    json_t *o = api_body_object(ctx);
    if (!o) return;
    json_t *cm = json_object_get(o, "client_msg_id"), *b = json_object_get(o, "body");
    if (!json_is_string(cm) || json_string_length(cm) < 1 || json_string_length(cm) > PL_PROTO_CMID_MAX ||
        memchr(json_string_value(cm), 0, json_string_length(cm))) {
        int nul = json_is_string(cm) && json_string_length(cm) >= 1 && json_string_length(cm) <= PL_PROTO_CMID_MAX;
        json_decref(o);
        pl_http_error(ctx, 400, "bad_request",   /* the words the WebSocket uses (proto.c) */
                      nul ? "\"client_msg_id\" must not contain NUL" : "\"client_msg_id\" must be 1-64 bytes");
        return;
    }
    int64_t reply_to, attach[PL_PROTO_ATTACH_MAX];
    int ciphertext, nattach;
    pl_proto_err e;
    if (pl_proto_send_kind(o, &ciphertext, &e) || pl_proto_reply_to(o, &reply_to, &e) ||
        pl_proto_attachments(o, attach, &nattach, &e)) {
        json_decref(o);
        proto_error(ctx, &e);
        return;
    }
    if (nattach && ciphertext) {
        json_decref(o);
        pl_http_error(ctx, 400, "bad_request", "a ciphertext message carries no attachments");
        return;
    }
    if (nattach && (!b || (json_is_string(b) && !json_string_length(b))))
        b = NULL;                            /* attachments alone need no text */
    char *ct = NULL;
    if (nattach && !b) {
        /* media only: the body is "" */
    } else if (ciphertext) {                        /* end-to-end encryption (chat/e2ee.h) */
        const char *code, *why;
        if (!(ct = pl_e2ee_payloads(json_object_get(o, "payloads"), (size_t)A.cfg->max_body, &code, &why))) {
            json_decref(o);
            pl_http_error(ctx, code[0] == 't' ? 413 : 400, code, why);
            return;
        }
    } else if (!json_is_string(b) || json_string_length(b) == 0) {
        json_decref(o);
        pl_http_error(ctx, 400, "bad_request", "\"body\" must be a non-empty string");
        return;
    } else if (memchr(json_string_value(b), 0, json_string_length(b))) {
        json_decref(o);                             /* as an edit says it (audit S3) */
        pl_http_error(ctx, 400, "bad_request", "\"body\" must not contain NUL");
        return;
    } else if (json_string_length(b) > (size_t)A.cfg->max_body) {
        json_decref(o);
        pl_http_error(ctx, 413, "too_large", "\"body\" is too long");
        return;
    }
    api_op *op = api_op_new(ctx, o);
    op->t0_us = pl_mono_us();
    api_job_reset(op, PL_JOB_MESSAGE_SEND, http_sent);
    op->job.user = ctx->user;
    op->job.conv = conv;
    op->job.client_msg_id = json_string_value(cm);
    op->job.body = ct || !b ? "" : json_string_value(b);
    op->job.body_len = ct || !b ? 0 : json_string_length(b);
    op->job.ciphertext = op->ciphertext = ct;
    op->job.seq = reply_to;
    if (nattach) {                           /* media: resolve them first (chat/attach.h) */
        pl_attach_resolve(A.store, ctx->user, attach, nattach, send_attached, op);
        return;
    }
    send_go(op);
}

/* ---- message actions ------------------------------------------------------------ */

static void action_done(pl_job *j) {
    api_op *op = j->data;
    if (j->result) {
        job_error(op->ctx, j);
    } else {
        if (op->flag_line && j->has_event) pl_chat_filter_report(j->user, j->conv, j->seq, op->flag_line);
        int changed = j->op == PL_JOB_NOTIFY_SET || j->has_event;   /* notify: no event */
        pl_sbuf s;
        pl_sbuf_init(&s);
        pl_proto_ok(&s, NULL, j->conv, j->has_event ? j->event.seq : 0, changed, 0);
        pl_http_respond(op->ctx, 200, "application/json", s.p, s.len, NULL);
        pl_sbuf_release(&s);
    }
    api_op_free(op);
}

/* The body fields of an action into op->job; 0, or -1 after answering. */
static int action_fields(pl_http_ctx *ctx, api_op *op, json_t *o) {
    pl_proto_err e;
    memset(&e, 0, sizeof e);
    int r = 0;
    switch (op->job.op) {
    case PL_JOB_MESSAGE_EDIT:
        r = pl_proto_body(o, (size_t)A.cfg->max_body, "bad_request", &op->job.body, &op->job.body_len, &e);
        break;
    case PL_JOB_REACTION: {
        int remove = 0;
        r = pl_proto_reaction(o, &op->job.emoji, &remove, &e);
        op->job.flags = remove ? PL_JOB_REMOVE : 0;
        break;
    }
    default:                                   /* PL_JOB_NOTIFY_SET */
        r = pl_proto_notify_level(o, &op->job.level, &e);
        break;
    }
    if (r) proto_error(ctx, &e);
    return r;
}

void h_action(pl_http_ctx *ctx, int64_t conv, int64_t seq, pl_job_op what, int remove) {
    int with_body = what == PL_JOB_MESSAGE_EDIT || what == PL_JOB_REACTION || what == PL_JOB_NOTIFY_SET;
    json_t *o = with_body ? api_body_object(ctx) : NULL;
    if (with_body && !o) return;
    api_op *op = api_op_new(ctx, o);
    api_job_reset(op, what, action_done);
    op->job.conv = conv;
    op->job.user = ctx->user;
    op->job.seq = seq;
    op->job.flags = remove ? PL_JOB_REMOVE : 0;
    if (with_body && action_fields(ctx, op, o)) {
        api_op_free(op);
        return;
    }
    if (what == PL_JOB_NOTIFY_SET) {           /* no event: not rate-limited */
        api_submit(op);
        return;
    }
    if (pl_chat_admit_send(ctx->user, conv, send_admitted, op)) {   /* limited like sends */
        pl_http_error(ctx, 503, "unavailable", "shutting down");
        api_op_free(op);
    }
}

static void pins_answered(void *arg, int result, const char *json, size_t len) {
    api_respond_members(arg, result, json, len, "no such conversation");
}

void h_pins(pl_http_ctx *ctx, int64_t conv) {
    int64_t offset;
    if (api_query_int(ctx, "offset", &offset)) {
        pl_http_error(ctx, 400, "bad_request", "\"offset\" must be a non-negative integer");
        return;
    }
    int r = pl_chat_pins(conv, ctx->user, offset, pins_answered, ctx);
    if (r) api_store_error(ctx, r, "");
}

/* ---- receipts and presence ------------------------------------------------------- */

static void receipt_stored(pl_job *j) {
    api_op *op = j->data;
    if (j->result) api_store_error(op->ctx, j->result, "no such conversation");
    else {
        pl_chat_receipt_done(j);
        pl_http_respond(op->ctx, 204, NULL, NULL, 0, NULL);
    }
    api_op_free(op);
}

void h_receipt(pl_http_ctx *ctx, int64_t conv, int read) {
    json_t *o = api_body_object(ctx);
    if (!o) return;
    json_t *sq = json_object_get(o, "seq");
    if (!json_is_integer(sq) || json_integer_value(sq) < 0 || json_integer_value(sq) > PL_JSON_INT_MAX) {
        json_decref(o);
        pl_http_error(ctx, 400, "bad_request", "\"seq\" must be a non-negative integer (at most 2^53-1)");
        return;
    }
    api_op *op = api_op_new(ctx, o);
    api_job_reset(op, PL_JOB_RECEIPT, receipt_stored);
    op->job.conv = conv;
    op->job.user = ctx->user;
    op->job.delivered = json_integer_value(sq);
    op->job.read = read ? json_integer_value(sq) : 0;
    api_submit(op);
}

static void members_answered(void *arg, int result, const char *json, size_t len) {
    api_respond_members(arg, result, json, len, "no such conversation");
}

void h_receipts(pl_http_ctx *ctx, int64_t conv) {
    int64_t seq;
    if (api_query_int(ctx, "seq", &seq)) {
        pl_http_error(ctx, 400, "bad_request", "\"seq\" must be a non-negative integer (at most 2^53-1)");
        return;
    }
    int r = pl_chat_receipts(conv, ctx->user, seq, members_answered, ctx);
    if (r) api_store_error(ctx, r, "");
}

void h_presence(pl_http_ctx *ctx) {
    char list[4096];
    if (!pl_http_query_get(ctx->req.query, "users", list, sizeof list)) {
        pl_http_error(ctx, 400, "bad_request", "\"users\" (comma-separated ids) is required");
        return;
    }
    int64_t ids[PL_PROTO_PRESENCE_QUERY_MAX];
    size_t count = 0, given = 0;
    for (char *p = list, *tok; (tok = strsep(&p, ",")) != NULL;) {
        int zero = strcmp(tok, "0") == 0;      /* an id no user has: left out, as 999 is */
        int64_t id = zero ? 0 : api_parse_id(tok, strlen(tok));
        if ((!zero && id <= 0) || given++ == PL_PROTO_PRESENCE_QUERY_MAX) {
            pl_http_error(ctx, 400, "bad_request", "\"users\" must be up to 200 comma-separated ids");
            return;
        }
        if (!zero) ids[count++] = id;
    }
    int r = pl_chat_presence_query(ctx->user, ids, count, members_answered, ctx);
    if (r) api_store_error(ctx, r, "");
}
