/* api_reports.c — moderation over REST: reports of messages (docs/protocol.md
 * "Reports"; store.h invariant 12): a member reports a message; a group's
 * or channel's admins, and the server's admins (--admins), list and
 * resolve them. Blocks (protocol.md "Blocking a user"; invariant 14).
 *
 * A server admin is a user whose name --admins lists; the caller's name is
 * read (one read) on the routes where it matters. Resolutions are logged
 * (ids only: logs never hold message text), the audit trail of moderation.
 */
#include "api_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "../chat/auth.h"
#include "../core/alloc.h"
#include "../core/log.h"

static const char *const reasons[] = {"spam", "abuse", "harassment", "illegal", "other"};

static int reason_ok(const char *r) {
    for (size_t i = 0; i < sizeof reasons / sizeof reasons[0]; i++)
        if (strcmp(r, reasons[i]) == 0) return 1;
    return 0;
}

/* The next name of --admins (comma-separated, spaces around ignored) from
 * *p: its start, with its length in *len (0 for an empty entry); NULL at
 * the end. */
static const char *admins_next(const char **p, size_t *len) {
    const char *s = *p;
    while (*s == ',' || *s == ' ') s++;
    if (!*s) return NULL;
    const char *e = s;
    while (*e && *e != ',') e++;
    const char *t = e;
    while (t > s && t[-1] == ' ') t--;
    *len = (size_t)(t - s);
    *p = e;
    return s;
}

/* 1 if name is one of --admins (case-insensitive: usernames are stored in
 * lower case). */
int api_is_server_admin(const char *name) {
    const char *p = A.cfg->admins, *a;
    size_t n = strlen(name), len;
    while ((a = admins_next(&p, &len)) != NULL)
        if (len == n && n && strncasecmp(a, name, n) == 0) return 1;
    return 0;
}

/* ---- --admins names nobody has registered ------------------------------------- */

typedef struct admin_check {
    pl_job job;
    char   name[33];
} admin_check;

static void admin_checked(pl_job *j) {
    admin_check *c = (admin_check *)j;
    if (j->result == PL_STORE_ENOTFOUND)
        pl_log(PL_LOG_WARN, 0, "--admins names a user who has not registered: whoever registers that name first "
               "is a server admin", "\"name\":\"%s\"", c->name);
    pl_job_release(j);
    free(c);
}

/* At start: warns about each --admins name that is not (yet) a user's
 * (the name goes to its first registrant), and about one that cannot be a
 * username at all. */
void pl_api_admins_check(void) {
    const char *p = A.cfg->admins, *a;
    size_t len;
    while ((a = admins_next(&p, &len)) != NULL) {
        if (!len) continue;
        admin_check *c = pl_calloc(1, sizeof *c);
        if (pl_auth_normalize_username(a, len, c->name)) {
            pl_log(PL_LOG_WARN, 0, "--admins names something that cannot be a username (3 to 32 letters, "
                   "digits, '_', '.', '-'): nobody can be that admin", "\"position\":%d", (int)(a - A.cfg->admins));
            free(c);
            continue;
        }
        c->job.op = PL_READ_USER_BY_NAME;
        c->job.username = c->name;
        c->job.done = admin_checked;
        pl_store_submit(A.store, &c->job);
    }
}

static json_t *report_json(const pl_report *r) {
    char id[24];
    snprintf(id, sizeof id, "%llu", (unsigned long long)r->msg_id);
    json_t *o = json_pack("{s:I,s:I,s:I,s:s,s:{s:I,s:s},s:{s:I,s:s},s:s,s:{s:s,s:I},s:I}", "id", (json_int_t)r->id,
                          "conversation", (json_int_t)r->conv, "seq", (json_int_t)r->seq, "kind",
                          api_conv_kind_name(r->conv_kind), "reporter", "id", (json_int_t)r->reporter, "username",
                          r->reporter_name, "sender", "id", (json_int_t)r->sender, "username", r->sender_name,
                          "reason", r->reason ? r->reason : "", "message", "id", id, "ts", (json_int_t)r->msg_ts,
                          "created", (json_int_t)r->created);
    if (!r->reporter) json_object_set_new(o, "reporter", json_null());   /* filed by the content filter */
    json_object_set_new(o, "note", r->note ? json_string(r->note) : json_null());
    json_object_set_new(json_object_get(o, "message"), "body", r->body ? json_string(r->body) : json_null());
    json_object_set_new(o, "resolved", r->resolved ? json_integer((json_int_t)r->resolved) : json_null());
    json_object_set_new(o, "resolved_by", r->resolved ? json_integer((json_int_t)r->resolved_by) : json_null());
    return o;
}

/* ---- reporting ----------------------------------------------------------------- */

static void reported(pl_job *j) {
    api_op *op = j->data;
    if (j->result) {
        api_store_error(op->ctx, j->result, j->why ? j->why : "no such message");
    } else {
        pl_http_respond_json(op->ctx, j->created ? 201 : 200,
                             json_pack("{s:I,s:I,s:I,s:b}", "id", (json_int_t)j->out_id, "conversation",
                                       (json_int_t)j->conv, "seq", (json_int_t)j->seq, "created", j->created));
    }
    api_op_free(op);
}

void h_report(pl_http_ctx *ctx, int64_t conv, int64_t seq) {
    json_t *o = api_body_object(ctx);
    if (!o) return;
    json_t *reason = json_object_get(o, "reason"), *note = json_object_get(o, "note");
    const char *why = NULL;
    if (!json_is_string(reason) || !reason_ok(json_string_value(reason)))
        why = "\"reason\" must be \"spam\", \"abuse\", \"harassment\", \"illegal\" or \"other\"";
    else if (note && !json_is_null(note) &&
             (!json_is_string(note) || json_string_length(note) > PL_REPORT_NOTE_MAX ||
              memchr(json_string_value(note), 0, json_string_length(note))))
        why = "\"note\" must be a string of at most 500 bytes";
    if (why) {
        pl_http_error(ctx, 400, "bad_request", why);
        json_decref(o);
        return;
    }
    api_op *op = api_op_new(ctx, o);
    api_job_reset(op, PL_JOB_REPORT, reported);
    op->job.conv = conv;
    op->job.seq = seq;
    op->job.user = ctx->user;
    op->job.title = json_string_value(reason);
    if (json_is_string(note) && json_string_length(note)) {
        op->job.body = json_string_value(note);
        op->job.body_len = json_string_length(note);
    }
    api_submit(op);
}

/* ---- reading and resolving: who asks first --------------------------------------- */

enum { R_LIST_CONV, R_LIST_ALL, R_RESOLVE };

/* op->conv: the conversation (R_LIST_CONV) or the report (R_RESOLVE);
 * op->status: what; op->login: resolved=1; op->user: before; op->created: limit */

static void listed(pl_job *j) {
    api_op *op = j->data;
    if (j->result) {
        api_store_error(op->ctx, j->result, j->result == PL_STORE_EFORBID ? "admins only" : "no such conversation");
    } else {
        json_t *a = json_array();
        for (size_t i = 0; i < j->nreports; i++) json_array_append_new(a, report_json(&j->reports[i]));
        json_t *o = json_pack("{s:o,s:b}", "reports", a, "has_more", j->more);
        if (j->more && j->nreports)
            json_object_set_new(o, "next_before", json_integer((json_int_t)j->reports[j->nreports - 1].id));
        pl_http_respond_json(op->ctx, 200, o);
    }
    api_op_free(op);
}

static void resolved(pl_job *j) {
    api_op *op = j->data;
    if (j->result) {
        api_store_error(op->ctx, j->result, "no such report");
    } else {
        if (j->created)          /* it changed now: a repeat resolves nothing */
            pl_log(PL_LOG_INFO, 0, "report resolved", "\"report\":%lld,\"by\":%lld,\"server_admin\":%s",
                   (long long)j->id, (long long)j->user, (j->flags & PL_JOB_ADMIN) ? "true" : "false");
        pl_http_respond_json(op->ctx, 200, json_pack("{s:I,s:b}", "id", (json_int_t)j->id, "changed", j->created));
    }
    api_op_free(op);
}

static void go(api_op *op, int server_admin) {
    int what = op->status;
    op->status = 0;
    if (what == R_RESOLVE) {
        api_job_reset(op, PL_JOB_REPORT_RESOLVE, resolved);
        op->job.id = op->conv;
        op->job.user = op->ctx->user;
        op->job.flags = server_admin ? PL_JOB_ADMIN : 0;
    } else {
        if (what == R_LIST_ALL && !server_admin) {
            pl_http_error(op->ctx, 403, "forbidden", "server admins only");
            api_op_free(op);
            return;
        }
        api_job_reset(op, PL_READ_REPORTS, listed);
        op->job.conv = what == R_LIST_ALL ? 0 : op->conv;
        op->job.user = op->ctx->user;
        op->job.flags = (server_admin ? PL_READ_ADMIN : 0) | (op->login ? PL_READ_RESOLVED : 0);
        op->job.cursor = op->user;
        op->job.limit = op->created;
    }
    api_submit(op);
}

static void asker_read(pl_job *j) {
    api_op *op = j->data;
    if (j->result && j->result != PL_STORE_ENOTFOUND) {
        api_store_error(op->ctx, j->result, "");
        api_op_free(op);
        return;
    }
    go(op, j->result == PL_STORE_OK && api_is_server_admin(j->user_out.username));
}

static void start(pl_http_ctx *ctx, int what, int64_t id) {
    api_op *op = api_op_new(ctx, NULL);
    op->status = what;
    op->conv = id;
    if (what != R_RESOLVE) {
        int64_t before = 0, limit = 0;
        int all = 0;
        const char *why = NULL;
        char given[24];
        if (api_query_int(ctx, "before", &before)) why = "\"before\" must be a report id";
        else if (api_query_int(ctx, "limit", &limit)) why = "\"limit\" must be 1-200";
        if (!pl_http_query_get(ctx->req.query, "limit", given, sizeof given)) limit = 50;   /* the default */
        if (!why && (limit < 1 || limit > PL_STORE_PAGE_MAX)) why = "\"limit\" must be 1-200";
        if (why) {
            pl_http_error(ctx, 400, "bad_request", why);
            api_op_free(op);
            return;
        }
        if (api_query_flag(ctx, "resolved", &all)) {   /* as search's and media's flags */
            api_op_free(op);
            return;
        }
        op->user = before;
        op->created = (int)limit;
        op->login = all;
    }
    if (!A.cfg->admins[0]) {                       /* no server admins: skip the read */
        go(op, 0);
        return;
    }
    int what_now = op->status;
    api_job_reset(op, PL_READ_USER_BY_ID, asker_read);
    op->status = what_now;
    op->job.user = ctx->user;
    api_submit(op);
}

void h_conv_reports(pl_http_ctx *ctx, int64_t conv) { start(ctx, R_LIST_CONV, conv); }

void h_reports_route(pl_http_ctx *ctx, pl_str *s, size_t n) {
    if (n == 1) {
        if (api_allow(ctx, API_GET)) start(ctx, R_LIST_ALL, 0);
        return;
    }
    int64_t id = api_parse_id(s[1].p, s[1].n);
    if (n != 3 || !api_seg_is(s[2], "resolve")) {
        pl_http_error(ctx, 404, "not_found", "no such route");
    } else if (api_allow(ctx, API_POST) && api_path_id_ok(ctx, id, "no such report")) {
        start(ctx, R_RESOLVE, id);
    }
}

/* ---- blocks (store.h invariant 14) --------------------------------------------------- */

static void blocked(pl_job *j) {
    api_op *op = j->data;
    if (j->result == PL_STORE_EINVAL) {
        pl_http_error(op->ctx, 400, "bad_request", "you cannot block yourself");
    } else if (j->result == PL_STORE_ENOTFOUND && j->why && !strcmp(j->why, "deleted")) {
        /* the asker's account was deleted after its token was checked
         * (audit O10: "no such user", of a peer that exists): its login
         * is revoked, as the next request would find */
        api_unauthorized(op->ctx);
    } else if (j->result) {
        api_store_error(op->ctx, j->result, "no such user");
    } else {
        if (j->conv_out.id) pl_chat_conv_blocked(j->conv_out.id, j->conv_out.blocked);   /* typing stops */
        pl_http_respond_json(op->ctx, 200, json_pack("{s:I,s:b,s:b}", "user",
                                                     (json_int_t)(j->peer == API_NO_ID ? 0 : j->peer), "blocked",
                                                     !(j->flags & PL_JOB_REMOVE), "changed", j->created));
    }
    api_op_free(op);
}

void h_block(pl_http_ctx *ctx, int64_t peer, int remove) {
    api_op *op = api_op_new(ctx, NULL);
    api_job_reset(op, PL_JOB_BLOCK, blocked);
    op->job.user = ctx->user;
    op->job.peer = peer;
    op->job.flags = remove ? PL_JOB_REMOVE : 0;
    api_submit(op);
}

static void blocks_read(pl_job *j) {
    api_op *op = j->data;
    if (j->result) {
        api_store_error(op->ctx, j->result, "");
    } else {
        json_t *a = json_array();
        for (size_t i = 0; i < j->nusers; i++)
            json_array_append_new(a, json_pack("{s:I,s:s}", "id", (json_int_t)j->users[i].id, "username",
                                               j->users[i].username));
        pl_http_respond_json(op->ctx, 200, json_pack("{s:o}", "blocked", a));
    }
    api_op_free(op);
}

void h_blocks(pl_http_ctx *ctx) {
    api_op *op = api_op_new(ctx, NULL);
    api_job_reset(op, PL_READ_BLOCKS, blocks_read);
    op->job.user = ctx->user;
    api_submit(op);
}
