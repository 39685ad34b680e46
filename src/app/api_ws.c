/* api_ws.c — workspaces and their channels over REST (docs/protocol.md
 * "Workspaces and channels"; store.h invariant 11): create and list
 * workspaces, add and remove members (leaving included), list and create
 * channels, and join a public channel (POST /conversations/{id}/join, routed
 * here from api.c).
 *
 * A user removed from a workspace (or leaving it) is first removed from
 * each of its channels, one MEMBER_REMOVE with PL_JOB_EVICT per channel,
 * while it is still in the workspace (so that a crash midway leaves a
 * removal that can be repeated), then from the workspace, then from any
 * channel it joined meanwhile, before the answer: the member_removed
 * events go through the ordinary path (the channel's log, its fan-out, the
 * sessions' unsubscription).
 */
#include "api_int.h"

#include <stdlib.h>
#include <string.h>

#include "../core/alloc.h"

static const char *role_name(int r) {
    return r == PL_ROLE_ADMIN ? "admin" : r == PL_ROLE_MEMBER ? "member" : "none";
}

static json_t *ws_json(const pl_workspace *w, int with_members) {
    json_t *o = json_pack("{s:I,s:s,s:s,s:I,s:I,s:I,s:I,s:I,s:I}", "id", (json_int_t)w->id, "name",
                          w->name ? w->name : "", "role", role_name(w->role), "general", (json_int_t)w->general,
                          "member_count", (json_int_t)w->member_count, "channel_count",
                          (json_int_t)w->channel_count, "created", (json_int_t)w->created, "created_by",
                          (json_int_t)w->created_by, "retention_seconds", (json_int_t)w->retention);
    if (with_members) {
        json_t *m = json_array();
        for (size_t i = 0; i < w->nmembers; i++)
            json_array_append_new(m, json_pack("{s:I,s:s,s:s}", "id", (json_int_t)w->members[i].user, "username",
                                               w->members[i].username, "role", role_name(w->members[i].role)));
        json_object_set_new(o, "members", m);
    }
    return o;
}

/* Answers with the quota errors as 413 quota, the others as the store's. */
static void ws_error(pl_http_ctx *ctx, const pl_job *j, const char *what) {
    if (j->result == PL_STORE_EINVAL && j->why &&
        (strcmp(j->why, "workspace full") == 0 || strcmp(j->why, "too many channels") == 0))
        pl_http_error(ctx, 413, "quota", j->why);
    else if (j->result == PL_STORE_ECONFLICT)
        pl_http_error(ctx, 409, "conflict",
                      j->why && strstr(j->why, "looks like") ? j->why
                                                             : "a channel of that name exists in this workspace");
    else
        api_store_error(ctx, j->result, j->why ? j->why : what);
}

/* ---- reading ------------------------------------------------------------------ */

json_t *api_ws_list_json(const pl_job *j) {
    json_t *a = json_array();
    for (size_t i = 0; i < j->nworkspaces; i++) json_array_append_new(a, ws_json(&j->workspaces[i], 0));
    return a;
}

static void ws_read(pl_job *j) {
    api_op *op = j->data;
    if (j->result == PL_STORE_ENOTFOUND && op->ok) {        /* api_respond_ws_retention */
        pl_http_respond_json(op->ctx, 200, json_pack("{s:I,s:I}", "id", (json_int_t)j->id, "retention_seconds",
                                                     (json_int_t)op->login));
    } else if (j->result || (j->op == PL_READ_WORKSPACE_GET && !j->nworkspaces)) {
        ws_error(op->ctx, j, "no such workspace");
    } else if (j->op == PL_READ_WORKSPACE_GET) {
        pl_http_respond_json(op->ctx, op->status ? op->status : 200, ws_json(&j->workspaces[0], 1));
    } else {
        pl_http_respond_json(op->ctx, 200, json_pack("{s:o}", "workspaces", api_ws_list_json(j)));
    }
    api_op_free(op);
}

void api_respond_ws_retention(api_op *op, int64_t ws, int64_t seconds) {
    op->ok = 1;
    op->login = seconds;
    api_respond_ws(op, ws, 200);
}

/* Answers with workspace ws as op's user sees it. */
void api_respond_ws(api_op *op, int64_t ws, int status) {
    op->status = status;
    api_job_reset(op, PL_READ_WORKSPACE_GET, ws_read);
    op->job.id = ws;
    op->job.user = op->ctx->user;
    api_submit(op);
}

static void channels_read(pl_job *j) {
    api_op *op = j->data;
    if (j->result) {
        ws_error(op->ctx, j, "no such workspace");
        api_op_free(op);
        return;
    }
    json_t *a = json_array();
    for (size_t i = 0; i < j->nconvs; i++) {
        const pl_conv *c = &j->convs[i];
        json_array_append_new(a, json_pack("{s:I,s:s,s:s,s:I,s:b,s:I,s:I,s:I,s:b,s:s}", "id", (json_int_t)c->id,
                                           "kind", api_conv_kind_name(c->kind), "title", c->title ? c->title : "",
                                           "workspace", (json_int_t)c->workspace, "private", c->is_private,
                                           "member_count", (json_int_t)c->member_count, "last_seq",
                                           (json_int_t)c->last_seq, "last_ts", (json_int_t)c->last_ts, "joined",
                                           c->role != PL_ROLE_NONE, "role", role_name(c->role)));
    }
    pl_http_respond_json(op->ctx, 200, json_pack("{s:o}", "channels", a));
    api_op_free(op);
}

/* ---- changing ------------------------------------------------------------------ */

static void ws_created(pl_job *j) {
    api_op *op = j->data;
    if (j->result) {
        ws_error(op->ctx, j, "could not create the workspace");
        api_op_free(op);
        return;
    }
    api_respond_ws(op, j->out_id, 201);
}

static void ws_added(pl_job *j) {
    api_op *op = j->data;
    if (j->result) {
        ws_error(op->ctx, j, j->result == PL_STORE_EFORBID ? "admins only" : "no such workspace or user");
        api_op_free(op);
        return;
    }
    api_respond_ws(op, j->id, 200);
}

static void ws_add_peer_read(pl_job *j) {
    api_op *op = j->data;
    int64_t peer = api_user_read_or_id0(op);
    if (peer < 0) return;
    api_job_reset(op, PL_JOB_WORKSPACE_ADD, ws_added);
    op->job.id = op->conv;                      /* the workspace */
    op->job.user = op->ctx->user;
    op->job.peer = peer;
    api_submit(op);
}

/* Removing op->login from workspace op->conv (see the top of the file):
 * phase 1 evicts it from the channels it is in (op->members[op->user ..
 * op->created)), phase 2 removes it from the workspace, phase 3 evicts it
 * from what it joined meanwhile (WORKSPACE_REMOVE's list). A crash in
 * phase 1 leaves it in the workspace, where the removal can be repeated. */
static void ws_removed(pl_job *j);
static void evicted(pl_job *j);

static void evict_next(api_op *op) {
    size_t at = (size_t)op->user, n = (size_t)op->created;
    if (at < n) {
        op->user++;
        api_job_reset(op, PL_JOB_MEMBER_REMOVE, evicted);
        op->job.conv = op->members[at];
        op->job.user = op->ctx->user;
        op->job.peer = op->login;
        op->job.flags = PL_JOB_EVICT;
        api_submit(op);
    } else if (op->status == 1) {                   /* phase 1 done */
        op->status = 2;
        api_job_reset(op, PL_JOB_WORKSPACE_REMOVE, ws_removed);
        op->job.id = op->conv;
        op->job.user = op->ctx->user;
        op->job.peer = op->login;
        api_submit(op);
    } else {
        pl_http_respond(op->ctx, 204, NULL, NULL, 0, NULL);
        api_op_free(op);
    }
}

static void evicted(pl_job *j) {
    api_op *op = j->data;
    if (j->result == PL_STORE_EFORBID && op->status == 1 && !(j->why && strcmp(j->why, "not a member") == 0)) {
        /* the caller may not remove it: the workspace removal says why */
        op->user = op->created;
    } else if (j->result && j->result != PL_STORE_ENOTFOUND && j->result != PL_STORE_EFORBID) {
        /* the store failed; the client repeats the removal, which goes on
         * from what is left (EFORBID, ENOTFOUND: it left meanwhile) */
        api_store_error(op->ctx, j->result, "could not remove the user from a channel");
        api_op_free(op);
        return;
    }
    evict_next(op);
}

static void ws_removed(pl_job *j) {
    api_op *op = j->data;
    if (j->result) {
        ws_error(op->ctx, j, j->result == PL_STORE_EFORBID ? "admins only" : "no such workspace or member");
        api_op_free(op);
        return;
    }
    free(op->members);
    op->members = pl_malloc((j->nout ? j->nout : 1) * sizeof *op->members);
    if (j->nout) memcpy(op->members, j->out_ids, j->nout * sizeof *op->members);
    op->created = (int)j->nout;
    op->user = 0;
    op->status = 3;
    evict_next(op);
}

/* Phase 1's list: the channels the user is in (as it sees them). */
static void ws_remove_listed(pl_job *j) {
    api_op *op = j->data;
    if (j->result && j->result != PL_STORE_ENOTFOUND) {
        api_store_error(op->ctx, j->result, "could not read the channels");
        api_op_free(op);
        return;
    }
    size_t n = 0;
    op->members = pl_malloc((j->nconvs ? j->nconvs : 1) * sizeof *op->members);
    for (size_t i = 0; i < j->nconvs; i++)
        if (j->convs[i].role != PL_ROLE_NONE) op->members[n++] = j->convs[i].id;
    op->created = (int)n;
    op->user = 0;
    evict_next(op);
}

static void ws_remove(pl_http_ctx *ctx, int64_t ws, int64_t peer) {
    api_op *op = api_op_new(ctx, NULL);
    op->conv = ws;
    op->login = peer;
    op->status = 1;
    api_job_reset(op, PL_READ_CHANNELS, ws_remove_listed);
    op->job.id = ws;
    op->job.user = peer;
    api_submit(op);
}

static void channel_created(pl_job *j) {
    api_op *op = j->data;
    if (j->result) {
        ws_error(op->ctx, j, j->result != PL_STORE_ENOTFOUND ? ""
                             : j->op == PL_JOB_CHANNEL_JOIN ? "no such channel" : "no such workspace");
        api_op_free(op);
        return;
    }
    api_conv_changed(j);
}

/* ---- the handlers ---------------------------------------------------------------- */

static void h_ws_create(pl_http_ctx *ctx) {
    json_t *o = api_body_object(ctx);
    if (!o) return;
    json_t *name = json_object_get(o, "name");
    if (!api_name_ok(ctx, name, "name", PL_WORKSPACE_NAME_MAX)) {
        json_decref(o);
        return;
    }
    api_op *op = api_op_new(ctx, o);
    api_job_reset(op, PL_JOB_WORKSPACE_CREATE, ws_created);
    op->job.user = ctx->user;
    op->job.title = json_string_value(name);
    api_submit(op);
}

static void h_ws_add(pl_http_ctx *ctx, int64_t ws) {
    json_t *o = api_body_object(ctx);
    if (!o) return;
    api_op *op = api_op_new(ctx, o);
    op->conv = ws;
    int64_t peer = 0;
    int by = api_user_arg(op, o, &peer, ws_add_peer_read, 1);
    if (by < 0) return;
    if (by == 1) {
        api_job_reset(op, PL_JOB_WORKSPACE_ADD, ws_added);
        op->job.id = ws;
        op->job.user = ctx->user;
        op->job.peer = peer;
    }
    api_submit(op);
}

static void ws_role_changed(pl_job *j) {
    api_op *op = j->data;
    if (j->result) {
        ws_error(op->ctx, j, j->result == PL_STORE_EFORBID ? "admins only" : "no such workspace or member");
        api_op_free(op);
        return;
    }
    api_respond_ws(op, j->id, 200);
}

/* PATCH .../members/{user} {"role": "admin" | "member"} */
static void h_ws_role(pl_http_ctx *ctx, int64_t ws, int64_t peer) {
    json_t *o = api_body_object(ctx);
    int role;
    if (!o || !(role = api_role_arg(ctx, o))) return;
    api_op *op = api_op_new(ctx, o);
    api_job_reset(op, PL_JOB_WORKSPACE_ROLE, ws_role_changed);
    op->job.id = ws;
    op->job.user = ctx->user;
    op->job.peer = peer;
    op->job.level = role;
    api_submit(op);
}

static void h_channel_create(pl_http_ctx *ctx, int64_t ws) {
    json_t *o = api_body_object(ctx);
    if (!o) return;
    json_t *name = json_object_get(o, "name"), *priv = json_object_get(o, "private"),
           *e2ee = json_object_get(o, "e2ee");
    const char *why = NULL;
    if (!json_is_string(name) || memchr(json_string_value(name), 0, json_string_length(name)) ||
        !pl_store__channel_name_ok(json_string_value(name)))
        why = "\"name\" must be 1-80 bytes: lowercase ASCII letters, digits, '-', '_', '.' and non-ASCII "
              "characters other than spaces, control and invisible formatting characters, not starting with a "
              "combining mark";
    else if (priv && !json_is_boolean(priv))
        why = "\"private\" must be true or false";
    else if (e2ee && !json_is_boolean(e2ee))
        why = "\"e2ee\" must be true or false";
    if (why) {
        pl_http_error(ctx, 400, "bad_request", why);
        json_decref(o);
        return;
    }
    api_op *op = api_op_new(ctx, o);
    size_t n = 0;
    if (api_group_members(op, json_object_get(o, "members"), &n) != 0) return;
    api_job_reset(op, PL_JOB_CHANNEL_CREATE, channel_created);
    op->job.id = ws;
    op->job.user = ctx->user;
    op->job.title = json_string_value(name);
    op->job.members = op->members;
    op->job.nmembers = n;
    op->job.flags = json_is_true(priv) ? PL_JOB_PRIVATE : 0;
    api_submit(op);
}

void h_channel_join(pl_http_ctx *ctx, int64_t conv) {
    api_op *op = api_op_new(ctx, NULL);
    api_job_reset(op, PL_JOB_CHANNEL_JOIN, channel_created);
    op->job.conv = conv;
    op->job.user = ctx->user;
    api_submit(op);
}

void h_ws_route(pl_http_ctx *ctx, pl_str *s, size_t n) {
    int m = api_method(ctx);
    if (n == 1) {
        if (!api_allow(ctx, API_GET | API_POST)) return;
        if (m == PL_HTTP_POST) {
            h_ws_create(ctx);
        } else {
            api_op *op = api_op_new(ctx, NULL);
            api_job_reset(op, PL_READ_WORKSPACES, ws_read);
            op->job.user = ctx->user;
            api_submit(op);
        }
        return;
    }
    int64_t ws = api_parse_path_id(s[1].p, s[1].n);
    if (!api_path_id_ok(ctx, ws, "no such workspace")) return;
    if (n == 2) {
        if (api_allow(ctx, API_GET)) api_respond_ws(api_op_new(ctx, NULL), ws, 200);
    } else if (n == 3 && api_seg_is(s[2], "members")) {
        if (api_allow(ctx, API_POST)) h_ws_add(ctx, ws);
    } else if (n == 4 && api_seg_is(s[2], "members")) {
        int64_t peer = api_parse_path_id(s[3].p, s[3].n);
        if (!api_allow(ctx, API_DELETE | API_PATCH) || !api_path_id_ok(ctx, peer, "no such member")) return;
        if (m == PL_HTTP_PATCH) h_ws_role(ctx, ws, peer);
        else ws_remove(ctx, ws, peer);
    } else if (n == 3 && api_seg_is(s[2], "leave")) {
        if (api_allow(ctx, API_POST)) ws_remove(ctx, ws, ctx->user);
    } else if (n == 3 && api_seg_is(s[2], "retention")) {     /* api_life.c */
        if (api_allow(ctx, API_PUT)) h_retention(ctx, 0, ws);
    } else if (n == 3 && api_seg_is(s[2], "hold")) {
        if (api_allow(ctx, API_PUT | API_DELETE)) h_hold(ctx, 0, ws, m == PL_HTTP_DELETE);
    } else if (n == 3 && api_seg_is(s[2], "channels")) {
        if (!api_allow(ctx, API_GET | API_POST)) return;
        if (m == PL_HTTP_POST) {
            h_channel_create(ctx, ws);
        } else {
            api_op *op = api_op_new(ctx, NULL);
            api_job_reset(op, PL_READ_CHANNELS, channels_read);
            op->job.id = ws;
            op->job.user = ctx->user;
            api_submit(op);
        }
    } else {
        pl_http_error(ctx, 404, "not_found", "no such route");
    }
}
