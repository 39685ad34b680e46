/* api.c — REST handlers and routing (see api.h).
 *
 * Handlers that need the store's writer or a password hash are
 * asynchronous: they keep their state in an api_op (whose first member is
 * the store job) and answer from the job's or the work's completion. Reads
 * are synchronous and bounded. Nothing here logs a password, a token or a
 * message body.
 */
#include "api.h"

#include <jansson.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "../chat/auth.h"
#include "../chat/chat.h"
#include "../core/alloc.h"
#include "../core/clock.h"
#include "../core/log.h"
#include "../core/metrics.h"
#include "../core/ratelimit.h"
#include "../proto/proto.h"

static struct {
    uv_loop_t       *loop;
    pl_store        *store;
    const pl_config *cfg;
    char             dummy_hash[PL_AUTH_PWHASH_MAX];   /* equalises login timing */
    pl_limiter       ip_requests;  /* HTTP requests and WebSocket opens per IP */
    pl_limiter       ip_auth;      /* register/login/refresh per IP            */
    int64_t          swept_at;
    int              draining;
    void           (*gauges)(pl_metrics_gauges *g);
} A;

typedef struct api_op {
    pl_job       job;          /* first: store callbacks get &job          */
    pl_http_ctx *ctx;
    json_t      *root;         /* request body; job strings point into it  */
    uv_work_t    work;
    int          ok;           /* work result                              */
    int          created;
    char         username[33];
    char        *password;     /* heap copy, wiped after hashing           */
    size_t       pwlen;
    char         pwhash[PL_AUTH_PWHASH_MAX];
    char         refresh[PL_AUTH_TOKEN_MAX];
    int64_t      user;
    int64_t     *members;
} api_op;

static api_op *op_new(pl_http_ctx *ctx, json_t *root) {
    api_op *op = pl_calloc(1, sizeof *op);
    op->ctx = ctx;
    op->root = root;
    op->job.data = op;
    return op;
}

static void op_free(api_op *op) {
    pl_event_release(&op->job.event);
    if (op->root) json_decref(op->root);
    if (op->password) {
        sodium_memzero(op->password, op->pwlen);
        free(op->password);
    }
    free(op->members);
    free(op);
}

/* Clears a job's outputs so the op can submit another. */
static void job_reset(pl_job *j, pl_job_op o, pl_job_cb done) {
    pl_event_release(&j->event);
    j->op = o;
    j->result = 0;
    j->out_id = 0;
    j->created = j->dup = j->has_event = 0;
    memset(&j->event, 0, sizeof j->event);
    j->done = done;
}

static void store_error(pl_http_ctx *ctx, int r, const char *what) {
    int status;
    const char *code = pl_chat_error_code(r, &status);
    pl_http_error(ctx, status, code, what);
}

/* ---- request helpers ---------------------------------------------------- */

/* 429 with Retry-After (whole seconds, at least 1) and retry_after (s). */
static void too_many(pl_http_ctx *ctx, int64_t retry_ms, const char *scope) {
    char extra[64], body[192];
    snprintf(extra, sizeof extra, "Retry-After: %lld\r\n", (long long)((retry_ms + 999) / 1000));
    int n = snprintf(body, sizeof body,
                     "{\"error\":{\"code\":\"rate_limited\",\"message\":\"too many requests (%s)\","
                     "\"retry_after\":%.3f}}", scope, (double)retry_ms / 1000.0);
    pl_http_respond(ctx, 429, "application/json", body, (size_t)n, extra);
}

int pl_api_admit_ip(pl_conn *c, int auth) {
    if (c->loopback && !A.cfg->rate_ip_loopback) return 0;
    int64_t now = pl_mono_ms();
    if (now - A.swept_at > 5000) {
        A.swept_at = now;
        pl_limiter_sweep(&A.ip_requests, now);
        pl_limiter_sweep(&A.ip_auth, now);
    }
    int64_t w = pl_limiter_take(&A.ip_requests, c->ip_key, 1, now);
    if (!w && auth) w = pl_limiter_take(&A.ip_auth, c->ip_key, 1, now);
    if (w) pl_count(&pl_m_rate_limited_ip, 1);
    return (int)(w > 0x7fffffff ? 0x7fffffff : w);
}

static json_t *body_object(pl_http_ctx *ctx) {
    if (!ctx->body_len) {
        pl_http_error(ctx, 400, "bad_json", "a JSON object body is required");
        return NULL;
    }
    json_t *o = json_loadb((const char *)ctx->body, ctx->body_len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, NULL);
    if (!o || !json_is_object(o)) {
        json_decref(o);
        pl_http_error(ctx, 400, "bad_json", "body must be a JSON object");
        return NULL;
    }
    return o;
}

static int authenticate(pl_http_ctx *ctx) {
    pl_str a = ctx->req.authorization;
    if (a.n > 7 && strncasecmp(a.p, "Bearer ", 7) == 0 &&
        pl_chat_check_token(a.p + 7, a.n - 7, &ctx->user, &ctx->login) == 0)
        return 0;
    static const char body[] =
        "{\"error\":{\"code\":\"unauthorized\",\"message\":\"a valid access token is required\"}}";
    pl_http_respond(ctx, 401, "application/json", body, sizeof body - 1, "WWW-Authenticate: Bearer\r\n");
    return -1;
}

/* Parses a positive decimal id from s[0..n); 0 if invalid. */
static int64_t parse_id(const char *s, size_t n) {
    if (n == 0 || n > 18) return 0;
    int64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return 0;
        v = v * 10 + (s[i] - '0');
    }
    return v;
}

static int query_int(pl_http_ctx *ctx, const char *name, int64_t *out) {
    char buf[24];
    *out = 0;
    if (!pl_http_query_get(ctx->req.query, name, buf, sizeof buf)) return 0;
    char *end;
    long long v = strtoll(buf, &end, 10);
    if (!buf[0] || *end || v < 0) return -1;
    *out = v;
    return 0;
}

/* ---- tokens ------------------------------------------------------------- */

static void respond_tokens(pl_http_ctx *ctx, int status, int64_t user, const char *username,
                           int64_t login, const char *refresh) {
    char access[PL_AUTH_TOKEN_MAX];
    int64_t exp = pl_now_ms() / 1000 + A.cfg->access_ttl;
    pl_auth_access_token(user, login, exp, access);
    json_t *o = json_pack("{s:{s:I,s:s},s:s,s:i,s:s}", "user", "id", (json_int_t)user,
                          "username", username, "access_token", access,
                          "expires_in", A.cfg->access_ttl, "refresh_token", refresh);
    pl_http_respond_json(ctx, status, o);
}

static void login_created(pl_job *j) {
    api_op *op = j->data;
    if (j->result) store_error(op->ctx, j->result, "could not create the login session");
    else {
        /* the refresh token names the login id, known only now; its hash
         * covers only the secret after the dot */
        char tok[PL_AUTH_TOKEN_MAX];
        snprintf(tok, sizeof tok, "%lld.%s", (long long)j->out_id, strchr(op->refresh, '.') + 1);
        respond_tokens(op->ctx, op->created ? 201 : 200, op->user, op->username, j->out_id, tok);
    }
    op_free(op);
}

/* Submits LOGIN_CREATE for op->user; answers from login_created. */
static void create_login(api_op *op) {
    job_reset(&op->job, PL_JOB_LOGIN_CREATE, login_created);
    op->job.user = op->user;
    /* the secret part is what is hashed; the login id prefix is added later */
    pl_auth_refresh_token(0, op->refresh, op->job.hash);
    op->job.expires = pl_now_ms() + (int64_t)A.cfg->refresh_ttl * 1000;
    pl_store_submit(A.store, &op->job);
}

/* ---- register / login --------------------------------------------------- */

static int read_credentials(pl_http_ctx *ctx, json_t *o, api_op *op) {
    json_t *u = json_object_get(o, "username"), *p = json_object_get(o, "password");
    if (!json_is_string(u) || !json_is_string(p)) {
        pl_http_error(ctx, 400, "bad_request", "\"username\" and \"password\" must be strings");
        return -1;
    }
    if (pl_auth_normalize_username(json_string_value(u), json_string_length(u), op->username)) {
        pl_http_error(ctx, 400, "bad_request", "username must be 3-32 of A-Z a-z 0-9 _ . -");
        return -1;
    }
    size_t pl = json_string_length(p);
    if (pl < 8 || pl > 256) {
        pl_http_error(ctx, 400, "bad_request", "password must be 8-256 bytes");
        return -1;
    }
    op->password = pl_strndup(json_string_value(p), pl);
    op->pwlen = pl;
    return 0;
}

static void user_created(pl_job *j) {
    api_op *op = j->data;
    if (j->result == PL_STORE_ECONFLICT) {
        pl_http_error(op->ctx, 409, "conflict", "username taken");
        op_free(op);
    } else if (j->result) {
        store_error(op->ctx, j->result, "could not create the user");
        op_free(op);
    } else {
        op->user = j->out_id;
        op->created = 1;
        create_login(op);
    }
}

static void hash_work(uv_work_t *w) {
    api_op *op = w->data;
    op->ok = pl_auth_hash_password(op->password, op->pwlen, (unsigned)A.cfg->argon2_ops,
                                   (size_t)A.cfg->argon2_mem * 1024, op->pwhash) == 0;
}

static void hash_done(uv_work_t *w, int status) {
    api_op *op = w->data;
    if (!A.store) {
        pl_http_error(op->ctx, 503, "unavailable", "shutting down");
        op_free(op);
        return;
    }
    if (!op->ok || status) {
        pl_http_error(op->ctx, 500, "internal", "password hashing failed");
        op_free(op);
        return;
    }
    job_reset(&op->job, PL_JOB_USER_CREATE, user_created);
    op->job.username = op->username;
    op->job.pwhash = op->pwhash;
    pl_store_submit(A.store, &op->job);
}

static void h_register(pl_http_ctx *ctx) {
    json_t *o = body_object(ctx);
    if (!o) return;
    api_op *op = op_new(ctx, o);
    if (read_credentials(ctx, o, op)) { op_free(op); return; }
    op->work.data = op;
    uv_queue_work(A.loop, &op->work, hash_work, hash_done);
}

static void verify_work(uv_work_t *w) {
    api_op *op = w->data;
    op->ok = pl_auth_check_password(op->pwhash, op->password, op->pwlen);
}

static void verify_done(uv_work_t *w, int status) {
    api_op *op = w->data;
    if (!A.store) {
        pl_http_error(op->ctx, 503, "unavailable", "shutting down");
        op_free(op);
        return;
    }
    if (!op->ok || status || !op->user) {
        pl_http_error(op->ctx, 401, "unauthorized", "wrong username or password");
        op_free(op);
        return;
    }
    create_login(op);
}

static void h_login(pl_http_ctx *ctx) {
    json_t *o = body_object(ctx);
    if (!o) return;
    api_op *op = op_new(ctx, o);
    if (read_credentials(ctx, o, op)) { op_free(op); return; }
    pl_user u;
    if (pl_store_user_by_name(A.store, op->username, &u, 1) == 0) {
        op->user = u.id;
        snprintf(op->pwhash, sizeof op->pwhash, "%s", u.pwhash ? u.pwhash : A.dummy_hash);
        free(u.pwhash);
    } else {
        op->user = 0;            /* still hash, so timing does not tell */
        snprintf(op->pwhash, sizeof op->pwhash, "%s", A.dummy_hash);
    }
    op->work.data = op;
    uv_queue_work(A.loop, &op->work, verify_work, verify_done);
}

/* ---- refresh / logout --------------------------------------------------- */

/* Checks a refresh token against its login; 0 with *l filled, or -1. */
static int check_refresh(const char *tok, size_t len, pl_login *l, uint8_t hash[32]) {
    int64_t id;
    if (pl_auth_parse_refresh(tok, len, &id, hash)) return -1;
    if (pl_store_login_get(A.store, id, l)) return -1;
    if (l->revoked || l->expires <= pl_now_ms()) return -1;
    if (sodium_memcmp(l->refresh_hash, hash, 32) != 0) return -1;
    return 0;
}

static void rotated(pl_job *j) {
    api_op *op = j->data;
    if (j->result) {
        pl_http_error(op->ctx, 401, "unauthorized", "refresh token is not valid");
    } else {
        pl_user u;
        if (pl_store_user_by_id(A.store, op->user, &u) == 0) {
            free(u.pwhash);
            respond_tokens(op->ctx, 200, op->user, u.username, j->id, op->refresh);
        } else {
            pl_http_error(op->ctx, 401, "unauthorized", "refresh token is not valid");
        }
    }
    op_free(op);
}

static void h_refresh(pl_http_ctx *ctx) {
    json_t *o = body_object(ctx);
    if (!o) return;
    json_t *t = json_object_get(o, "refresh_token");
    if (!json_is_string(t)) {
        json_decref(o);
        pl_http_error(ctx, 400, "bad_request", "\"refresh_token\" must be a string");
        return;
    }
    pl_login l;
    uint8_t hash[32];
    if (check_refresh(json_string_value(t), json_string_length(t), &l, hash)) {
        json_decref(o);
        pl_http_error(ctx, 401, "unauthorized", "refresh token is not valid");
        return;
    }
    api_op *op = op_new(ctx, o);
    op->user = l.user;
    job_reset(&op->job, PL_JOB_LOGIN_ROTATE, rotated);
    op->job.id = l.id;
    memcpy(op->job.hash, hash, 32);
    pl_auth_refresh_token(l.id, op->refresh, op->job.hash2);
    op->job.expires = pl_now_ms() + (int64_t)A.cfg->refresh_ttl * 1000;
    pl_store_submit(A.store, &op->job);
}

static void revoked(pl_job *j) {
    api_op *op = j->data;
    if (j->result) store_error(op->ctx, j->result, "could not log out");
    else {
        pl_chat_revoke_login(op->user, j->id);
        pl_http_respond(op->ctx, 204, NULL, NULL, 0, NULL);
    }
    op_free(op);
}

static void h_logout(pl_http_ctx *ctx) {
    int64_t user = 0, login = 0;
    json_t *o = NULL;
    pl_str a = ctx->req.authorization;
    if (a.n > 7 && strncasecmp(a.p, "Bearer ", 7) == 0 &&
        pl_chat_check_token(a.p + 7, a.n - 7, &user, &login) == 0) {
        /* bearer logout */
    } else if (ctx->body_len) {
        o = body_object(ctx);
        if (!o) return;
        json_t *t = json_object_get(o, "refresh_token");
        pl_login l;
        uint8_t hash[32];
        if (!json_is_string(t) || check_refresh(json_string_value(t), json_string_length(t), &l, hash)) {
            json_decref(o);
            pl_http_error(ctx, 401, "unauthorized", "a valid refresh or access token is required");
            return;
        }
        user = l.user;
        login = l.id;
    } else {
        pl_http_error(ctx, 401, "unauthorized", "a valid refresh or access token is required");
        return;
    }
    api_op *op = op_new(ctx, o);
    op->user = user;
    job_reset(&op->job, PL_JOB_LOGIN_REVOKE, revoked);
    op->job.id = login;
    pl_store_submit(A.store, &op->job);
}

/* ---- users -------------------------------------------------------------- */

static void h_me(pl_http_ctx *ctx) {
    pl_user u;
    if (pl_store_user_by_id(A.store, ctx->user, &u)) {
        pl_http_error(ctx, 404, "not_found", "no such user");
        return;
    }
    free(u.pwhash);
    pl_http_respond_json(ctx, 200, json_pack("{s:I,s:s}", "id", (json_int_t)u.id, "username", u.username));
}

static void h_user(pl_http_ctx *ctx, const char *name, size_t n) {
    char norm[33];
    pl_user u;
    if (pl_auth_normalize_username(name, n, norm) || pl_store_user_by_name(A.store, norm, &u, 0)) {
        pl_http_error(ctx, 404, "not_found", "no such user");
        return;
    }
    free(u.pwhash);
    pl_http_respond_json(ctx, 200, json_pack("{s:I,s:s}", "id", (json_int_t)u.id, "username", u.username));
}

/* ---- conversations ------------------------------------------------------ */

static const char *role_name(int r) {
    return r == PL_ROLE_ADMIN ? "admin" : r == PL_ROLE_MEMBER ? "member" : "none";
}

static json_t *conv_json(const pl_conv *c, int with_members) {
    json_t *o = json_pack("{s:I,s:s,s:I,s:I,s:I,s:s,s:I}", "id", (json_int_t)c->id,
                          "kind", c->kind == PL_CONV_DIRECT ? "direct" : "group",
                          "last_seq", (json_int_t)c->last_seq, "unread", (json_int_t)c->unread,
                          "read_seq", (json_int_t)c->read_seq, "role", role_name(c->role),
                          "last_ts", (json_int_t)c->last_ts);
    json_object_set_new(o, "title", c->title ? json_string(c->title) : json_null());
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

static void respond_conv(pl_http_ctx *ctx, int64_t conv, int status) {
    pl_conv c;
    int r = pl_store_conv_get(A.store, conv, ctx->user, &c);
    if (r) {
        store_error(ctx, r, "no such conversation");
        return;
    }
    pl_http_respond_json(ctx, status, conv_json(&c, 1));
    pl_conv_release(&c);
}

static void conv_changed(pl_job *j) {
    api_op *op = j->data;
    if (j->result) {
        store_error(op->ctx, j->result, j->result == PL_STORE_EFORBID ? "admins only" :
                                        j->result == PL_STORE_EINVAL ? "not possible for this conversation" :
                                        "no such conversation or user");
    } else {
        if (j->has_event) pl_chat_committed(&j->event);
        int64_t conv = j->op == PL_JOB_MEMBER_ADD || j->op == PL_JOB_MEMBER_REMOVE ||
                       j->op == PL_JOB_MEMBER_LEAVE ? j->conv : j->out_id;
        if (j->op == PL_JOB_MEMBER_REMOVE || j->op == PL_JOB_MEMBER_LEAVE)
            pl_http_respond(op->ctx, 204, NULL, NULL, 0, NULL);
        else
            respond_conv(op->ctx, conv, j->op == PL_JOB_MEMBER_ADD ? 200 :
                                        (j->op == PL_JOB_DIRECT_OPEN && !j->created) ? 200 : 201);
    }
    op_free(op);
}

static void h_conv_create(pl_http_ctx *ctx) {
    json_t *o = body_object(ctx);
    if (!o) return;
    const char *kind = json_string_value(json_object_get(o, "kind"));
    api_op *op = op_new(ctx, o);
    job_reset(&op->job, PL_JOB_DIRECT_OPEN, conv_changed);
    op->job.user = ctx->user;
    if (kind && strcmp(kind, "direct") == 0) {
        json_t *u = json_object_get(o, "user"), *un = json_object_get(o, "username");
        if (json_is_integer(u) && json_integer_value(u) > 0) {
            op->job.peer = json_integer_value(u);
        } else if (json_is_string(un)) {
            char norm[33];
            pl_user pu;
            if (pl_auth_normalize_username(json_string_value(un), json_string_length(un), norm) ||
                pl_store_user_by_name(A.store, norm, &pu, 0)) {
                pl_http_error(ctx, 404, "not_found", "no such user");
                op_free(op);
                return;
            }
            free(pu.pwhash);
            op->job.peer = pu.id;
        } else {
            pl_http_error(ctx, 400, "bad_request", "\"user\" must be a user id (or \"username\" a name)");
            op_free(op);
            return;
        }
        if (op->job.peer == ctx->user) {
            pl_http_error(ctx, 400, "bad_request", "a direct conversation needs another user");
            op_free(op);
            return;
        }
    } else if (kind && strcmp(kind, "group") == 0) {
        json_t *t = json_object_get(o, "title"), *m = json_object_get(o, "members");
        if (!json_is_string(t) || json_string_length(t) < 1 || json_string_length(t) > 128 ||
            memchr(json_string_value(t), 0, json_string_length(t))) {
            pl_http_error(ctx, 400, "bad_request", "\"title\" must be 1-128 bytes");
            op_free(op);
            return;
        }
        if (m && !json_is_array(m)) {
            pl_http_error(ctx, 400, "bad_request", "\"members\" must be an array of user ids");
            op_free(op);
            return;
        }
        size_t n = m ? json_array_size(m) : 0;
        if (n > (size_t)A.cfg->max_group_members) {
            pl_http_error(ctx, 413, "too_large", "too many members");
            op_free(op);
            return;
        }
        op->members = pl_calloc(n ? n : 1, sizeof *op->members);
        for (size_t i = 0; i < n; i++) {
            json_t *v = json_array_get(m, i);
            if (!json_is_integer(v) || json_integer_value(v) <= 0) {
                pl_http_error(ctx, 400, "bad_request", "\"members\" must be an array of user ids");
                op_free(op);
                return;
            }
            op->members[i] = json_integer_value(v);
        }
        op->job.op = PL_JOB_GROUP_CREATE;
        op->job.title = json_string_value(t);
        op->job.members = op->members;
        op->job.nmembers = n;
    } else {
        pl_http_error(ctx, 400, "bad_request", "\"kind\" must be \"direct\" or \"group\"");
        op_free(op);
        return;
    }
    pl_store_submit(A.store, &op->job);
}

static void h_conv_list(pl_http_ctx *ctx) {
    pl_conv *list = NULL;
    size_t n = 0;
    int r = pl_store_conv_list(A.store, ctx->user, &list, &n);
    if (r) {
        store_error(ctx, r, "conversations unavailable");
        return;
    }
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++) {
        json_t *o = conv_json(&list[i], 0);
        pl_event *ev = NULL;
        size_t en = 0;
        json_t *last = json_null();
        if (list[i].last_seq && pl_store_events(A.store, list[i].id, 0, 0, 1, 1, &ev, &en) == 0 && en == 1) {
            pl_sbuf s;
            pl_sbuf_init(&s);
            pl_sbuf_addc(&s, '{');
            pl_proto_event_fields(&s, &ev[0]);
            pl_sbuf_addc(&s, '}');
            json_decref(last);
            last = json_loadb(s.p, s.len, 0, NULL);
            pl_sbuf_release(&s);
        }
        pl_event_list_free(ev, en);
        json_object_set_new(o, "last", last ? last : json_null());
        json_array_append_new(arr, o);
    }
    pl_conv_list_free(list, n);
    pl_http_respond_json(ctx, 200, json_pack("{s:o}", "conversations", arr));
}

static void h_member_op(pl_http_ctx *ctx, int64_t conv, pl_job_op what, int64_t peer) {
    json_t *o = NULL;
    if (what == PL_JOB_MEMBER_ADD) {
        o = body_object(ctx);
        if (!o) return;
        json_t *u = json_object_get(o, "user");
        if (!json_is_integer(u) || json_integer_value(u) <= 0) {
            json_decref(o);
            pl_http_error(ctx, 400, "bad_request", "\"user\" must be a user id");
            return;
        }
        peer = json_integer_value(u);
    }
    api_op *op = op_new(ctx, o);
    job_reset(&op->job, what, conv_changed);
    op->job.conv = conv;
    op->job.user = ctx->user;
    op->job.peer = peer;
    pl_store_submit(A.store, &op->job);
}

/* ---- long-poll (the HTTP fallback for receiving, M2) ---------------------
 * GET .../messages?after=S&wait=N with nothing above S parks the request
 * until the conversation gets an event or N seconds (at most 30) pass, then
 * answers as a plain history request would. Parked requests hang off a map
 * conversation -> list; each has its own timer (they are few: clients on
 * WebSocket never park). */

#define POLL_WAIT_MAX 30

typedef struct poll_wait {
    uv_timer_t        timer;
    pl_http_ctx      *ctx;
    int64_t           conv, after, before;
    int               limit;
    struct poll_wait *next, *prev;
} poll_wait;

static pl_map polls;                   /* conv -> first poll_wait */

static void history_answer(pl_http_ctx *ctx, int64_t conv, int64_t after, int64_t before, int lim);

static void poll_free(uv_handle_t *h) { free(h->data); }

static void poll_finish(poll_wait *w) {
    if (w->prev) w->prev->next = w->next;
    else if (w->next) pl_map_put(&polls, w->conv, w->next);
    else pl_map_del(&polls, w->conv);
    if (w->next) w->next->prev = w->prev;
    uv_timer_stop(&w->timer);
    if (A.store) history_answer(w->ctx, w->conv, w->after, w->before, w->limit);
    else pl_http_error(w->ctx, 503, "unavailable", "shutting down");
    uv_close((uv_handle_t *)&w->timer, poll_free);
}

static void poll_timeout(uv_timer_t *t) { poll_finish(t->data); }

void pl_api_conv_event(int64_t conv) {
    poll_wait *w;
    while ((w = pl_map_get(&polls, conv)) != NULL) poll_finish(w);
}

static void poll_park(pl_http_ctx *ctx, int64_t conv, int64_t after, int64_t before, int lim, int64_t wait) {
    poll_wait *w = pl_calloc(1, sizeof *w);
    w->ctx = ctx;
    w->conv = conv;
    w->after = after;
    w->before = before;
    w->limit = lim;
    w->next = pl_map_get(&polls, conv);
    if (w->next) w->next->prev = w;
    pl_map_put(&polls, conv, w);
    uv_timer_init(A.loop, &w->timer);
    w->timer.data = w;
    uv_timer_start(&w->timer, poll_timeout, (uint64_t)wait * 1000, 0);
}

static void history_answer(pl_http_ctx *ctx, int64_t conv, int64_t after, int64_t before, int lim) {
    pl_sbuf s;
    pl_sbuf_init(&s);
    pl_sbuf_addc(&s, '{');
    int r = pl_chat_history(conv, ctx->user, after, before, lim, &s);
    if (r) store_error(ctx, r, "no such conversation");
    else {
        pl_sbuf_addc(&s, '}');
        pl_http_respond(ctx, 200, "application/json", s.p, s.len, NULL);
    }
    pl_sbuf_release(&s);
}

static void h_history(pl_http_ctx *ctx, int64_t conv) {
    int64_t after, before, limit, wait;
    int lim;
    const char *bad = "after";
    if (query_int(ctx, "after", &after) || (bad = "before", query_int(ctx, "before", &before)) ||
        (bad = "limit", query_int(ctx, "limit", &limit)) || (bad = "wait", query_int(ctx, "wait", &wait)) ||
        wait > POLL_WAIT_MAX || pl_proto_paging(after, before, limit, &lim, &bad)) {
        char msg[64];
        snprintf(msg, sizeof msg, "\"%s\" is out of range", bad);
        pl_http_error(ctx, 400, "bad_request", msg);
        return;
    }
    if (wait > 0 && before == 0) {
        /* park only a member's request with nothing to return yet */
        pl_event *ev = NULL;
        size_t n = 0;
        int role = pl_store_member_role(A.store, conv, ctx->user);
        int r = role ? pl_store_events(A.store, conv, after, 0, 1, 0, &ev, &n) : PL_STORE_ENOTFOUND;
        pl_event_list_free(ev, n);
        if (r == 0 && n == 0) {
            poll_park(ctx, conv, after, before, lim, wait);
            return;
        }
    }
    history_answer(ctx, conv, after, before, lim);
}

static void http_sent(pl_job *j) {
    api_op *op = j->data;
    if (j->result) store_error(op->ctx, j->result, "no such conversation");
    else {
        pl_chat_sent(j, 0);
        pl_sbuf s;
        pl_sbuf_init(&s);
        pl_proto_sent(&s, &j->event, j->dup, NULL, 1);
        pl_http_respond(op->ctx, j->dup ? 200 : 201, "application/json", s.p, s.len, NULL);
        pl_sbuf_release(&s);
    }
    op_free(op);
}

static void h_send(pl_http_ctx *ctx, int64_t conv) {
    json_t *o = body_object(ctx);
    if (!o) return;
    json_t *cm = json_object_get(o, "client_msg_id"), *b = json_object_get(o, "body");
    if (!json_is_string(cm) || json_string_length(cm) < 1 || json_string_length(cm) > PL_PROTO_CMID_MAX ||
        memchr(json_string_value(cm), 0, json_string_length(cm))) {
        json_decref(o);
        pl_http_error(ctx, 400, "bad_request", "\"client_msg_id\" must be 1-64 bytes");
        return;
    }
    if (!json_is_string(b) || json_string_length(b) == 0 || memchr(json_string_value(b), 0, json_string_length(b))) {
        json_decref(o);
        pl_http_error(ctx, 400, "bad_request", "\"body\" must be a non-empty string");
        return;
    }
    if (json_string_length(b) > (size_t)A.cfg->max_body) {
        json_decref(o);
        pl_http_error(ctx, 413, "too_large", "\"body\" is too long");
        return;
    }
    int64_t retry;
    const char *scope;
    if (pl_chat_admit_send(ctx->user, conv, &retry, &scope)) {
        json_decref(o);
        too_many(ctx, retry, scope);
        return;
    }
    api_op *op = op_new(ctx, o);
    job_reset(&op->job, PL_JOB_MESSAGE_SEND, http_sent);
    op->job.user = ctx->user;
    op->job.conv = conv;
    op->job.client_msg_id = json_string_value(cm);
    op->job.body = json_string_value(b);
    op->job.body_len = json_string_length(b);
    pl_store_submit(A.store, &op->job);
}

/* ---- receipts and presence ---------------------------------------------- */

static void receipt_stored(pl_job *j) {
    api_op *op = j->data;
    if (j->result) store_error(op->ctx, j->result, "no such conversation");
    else {
        pl_chat_receipt_done(j);
        pl_http_respond(op->ctx, 204, NULL, NULL, 0, NULL);
    }
    op_free(op);
}

static void h_receipt(pl_http_ctx *ctx, int64_t conv, int read) {
    json_t *o = body_object(ctx);
    if (!o) return;
    json_t *sq = json_object_get(o, "seq");
    if (!json_is_integer(sq) || json_integer_value(sq) <= 0) {
        json_decref(o);
        pl_http_error(ctx, 400, "bad_request", "\"seq\" must be a positive integer");
        return;
    }
    api_op *op = op_new(ctx, o);
    job_reset(&op->job, PL_JOB_RECEIPT, receipt_stored);
    op->job.conv = conv;
    op->job.user = ctx->user;
    op->job.delivered = json_integer_value(sq);
    op->job.read = read ? json_integer_value(sq) : 0;
    pl_store_submit(A.store, &op->job);
}

static void h_receipts(pl_http_ctx *ctx, int64_t conv) {
    int64_t seq;
    if (query_int(ctx, "seq", &seq)) {
        pl_http_error(ctx, 400, "bad_request", "\"seq\" must be a non-negative integer");
        return;
    }
    pl_sbuf s;
    pl_sbuf_init(&s);
    pl_sbuf_addc(&s, '{');
    int r = pl_chat_receipts(conv, ctx->user, seq, &s);
    if (r) store_error(ctx, r, "no such conversation");
    else {
        pl_sbuf_addc(&s, '}');
        pl_http_respond(ctx, 200, "application/json", s.p, s.len, NULL);
    }
    pl_sbuf_release(&s);
}

static void h_presence(pl_http_ctx *ctx) {
    char list[4096];
    if (!pl_http_query_get(ctx->req.query, "users", list, sizeof list)) {
        pl_http_error(ctx, 400, "bad_request", "\"users\" (comma-separated ids) is required");
        return;
    }
    pl_sbuf s;
    pl_sbuf_init(&s);
    pl_sbuf_adds(&s, "{\"users\":[");
    size_t k = 0, count = 0;
    for (char *p = list, *tok; (tok = strsep(&p, ",")) != NULL;) {
        int64_t id = parse_id(tok, strlen(tok));
        if (!id || ++count > PL_PROTO_PRESENCE_QUERY_MAX) {
            pl_sbuf_release(&s);
            pl_http_error(ctx, 400, "bad_request", "\"users\" must be up to 200 comma-separated ids");
            return;
        }
        size_t before = s.len;
        if (k) pl_sbuf_addc(&s, ',');
        if (pl_chat_presence_of(ctx->user, id, &s) == 0) k++;
        else s.len = before;
    }
    pl_sbuf_adds(&s, "]}");
    pl_http_respond(ctx, 200, "application/json", s.p, s.len, NULL);
    pl_sbuf_release(&s);
}

/* ---- routing ------------------------------------------------------------ */

/* Splits path into up to 8 segments (no allocation). */
static size_t split_path(pl_str path, pl_str *seg, size_t max) {
    size_t n = 0;
    const char *p = path.p, *end = path.p + path.n;
    while (p < end && n < max) {
        while (p < end && *p == '/') p++;
        if (p >= end) break;
        const char *s = p;
        while (p < end && *p != '/') p++;
        seg[n].p = s;
        seg[n].n = (size_t)(p - s);
        n++;
    }
    return p < end ? max + 1 : n;
}

static int seg_is(pl_str s, const char *lit) { return s.n == strlen(lit) && memcmp(s.p, lit, s.n) == 0; }

static void method_not_allowed(pl_http_ctx *ctx) {
    pl_http_error(ctx, 405, "method_not_allowed", "method not allowed on this route");
}

extern int pl_web_serve(pl_http_ctx *ctx, const pl_config *cfg);

void pl_api_on_request(pl_http_ctx *ctx, void *ud) {
    pl_str seg[8];
    size_t n = split_path(ctx->req.path, seg, 8);
    int m = ctx->req.method;
    pl_count(&pl_m_http_requests, 1);
    if (n == 1 && seg_is(seg[0], "healthz")) {
        pl_http_respond(ctx, 200, "text/plain", "ok\n", 3, NULL);
        return;
    }
    if (n == 1 && seg_is(seg[0], "readyz")) {
        if (A.draining || !A.store) pl_http_respond(ctx, 503, "text/plain", "draining\n", 9, NULL);
        else pl_http_respond(ctx, 200, "text/plain", "ready\n", 6, NULL);
        return;
    }
    if (n == 1 && seg_is(seg[0], "metrics")) {
        pl_metrics_gauges g = {0};
        if (A.gauges) A.gauges(&g);
        g.draining = A.draining;
        pl_sbuf s;
        pl_sbuf_init(&s);
        pl_metrics_render(&s, &g);
        pl_http_respond(ctx, 200, "text/plain; version=0.0.4", s.p, s.len, NULL);
        pl_sbuf_release(&s);
        return;
    }
    int auth_route = n == 4 && seg_is(seg[2], "auth");
    int64_t wait = pl_api_admit_ip(ctx->conn, auth_route);
    if (wait) {
        too_many(ctx, wait, "ip");
        return;
    }
    if (!A.store) {
        pl_http_error(ctx, 503, "unavailable", "shutting down");
        return;
    }
    if (n == 1 && seg_is(seg[0], "ws")) {   /* a WebSocket URL asked for without the upgrade */
        static const char body[] = "{\"error\":{\"code\":\"bad_request\",\"message\":\"WebSocket upgrade required\"}}";
        pl_http_respond(ctx, 426, "application/json", body, sizeof body - 1,
                        "Upgrade: websocket\r\nConnection: Upgrade\r\n");
        return;
    }
    if (n < 2 || n > 8 || !seg_is(seg[0], "api") || !seg_is(seg[1], "v1")) {
        if ((m == PL_HTTP_GET || m == PL_HTTP_HEAD) && pl_web_serve(ctx, A.cfg) == 0) return;
        pl_http_error(ctx, 404, "not_found", "no such route");
        return;
    }
    pl_str *s = seg + 2;
    n -= 2;
    if (n == 2 && seg_is(s[0], "auth")) {
        int known_auth = seg_is(s[1], "register") || seg_is(s[1], "login") ||
                         seg_is(s[1], "refresh") || seg_is(s[1], "logout");
        if (!known_auth) { pl_http_error(ctx, 404, "not_found", "no such route"); return; }
        if (m != PL_HTTP_POST) { method_not_allowed(ctx); return; }
        if (seg_is(s[1], "register")) h_register(ctx);
        else if (seg_is(s[1], "login")) h_login(ctx);
        else if (seg_is(s[1], "refresh")) h_refresh(ctx);
        else if (seg_is(s[1], "logout")) h_logout(ctx);
        else pl_http_error(ctx, 404, "not_found", "no such route");
        return;
    }
    /* everything else needs an access token */
    int known = (n == 1 && (seg_is(s[0], "me") || seg_is(s[0], "conversations") ||
                            seg_is(s[0], "presence"))) ||
                (n == 2 && (seg_is(s[0], "users") || seg_is(s[0], "conversations"))) ||
                (n >= 3 && n <= 4 && seg_is(s[0], "conversations"));
    if (!known) {
        pl_http_error(ctx, 404, "not_found", "no such route");
        return;
    }
    if (authenticate(ctx)) return;
    if (n == 1 && seg_is(s[0], "me")) {
        if (m != PL_HTTP_GET) method_not_allowed(ctx);
        else h_me(ctx);
        return;
    }
    if (n == 2 && seg_is(s[0], "users")) {
        if (m != PL_HTTP_GET) method_not_allowed(ctx);
        else h_user(ctx, s[1].p, s[1].n);
        return;
    }
    if (n == 1 && seg_is(s[0], "presence")) {
        if (m != PL_HTTP_GET) method_not_allowed(ctx);
        else h_presence(ctx);
        return;
    }
    if (n == 1) {
        if (m == PL_HTTP_GET) h_conv_list(ctx);
        else if (m == PL_HTTP_POST) h_conv_create(ctx);
        else method_not_allowed(ctx);
        return;
    }
    int64_t conv = parse_id(s[1].p, s[1].n);
    if (!conv) {
        pl_http_error(ctx, 404, "not_found", "no such conversation");
        return;
    }
    if (n == 2) {
        if (m != PL_HTTP_GET) method_not_allowed(ctx);
        else respond_conv(ctx, conv, 200);
        return;
    }
    if (n == 3 && seg_is(s[2], "messages")) {
        if (m == PL_HTTP_GET) h_history(ctx, conv);
        else if (m == PL_HTTP_POST) h_send(ctx, conv);
        else method_not_allowed(ctx);
        return;
    }
    if (n == 3 && seg_is(s[2], "members")) {
        if (m == PL_HTTP_POST) h_member_op(ctx, conv, PL_JOB_MEMBER_ADD, 0);
        else method_not_allowed(ctx);
        return;
    }
    if (n == 4 && seg_is(s[2], "members")) {
        int64_t peer = parse_id(s[3].p, s[3].n);
        if (m != PL_HTTP_DELETE) method_not_allowed(ctx);
        else if (!peer) pl_http_error(ctx, 404, "not_found", "no such member");
        else h_member_op(ctx, conv, PL_JOB_MEMBER_REMOVE, peer);
        return;
    }
    if (n == 3 && (seg_is(s[2], "read") || seg_is(s[2], "delivered"))) {
        if (m != PL_HTTP_POST) method_not_allowed(ctx);
        else h_receipt(ctx, conv, seg_is(s[2], "read"));
        return;
    }
    if (n == 3 && seg_is(s[2], "receipts")) {
        if (m != PL_HTTP_GET) method_not_allowed(ctx);
        else h_receipts(ctx, conv);
        return;
    }
    if (n == 3 && seg_is(s[2], "leave")) {
        if (m != PL_HTTP_POST) method_not_allowed(ctx);
        else h_member_op(ctx, conv, PL_JOB_MEMBER_LEAVE, 0);
        return;
    }
    pl_http_error(ctx, 404, "not_found", "no such route");
}

void pl_api_shutdown(void) {
    /* parked long-polls are answered now, while the store is still open */
    for (size_t i = 0; i < polls.cap; i++)
        while (polls.slots && polls.slots[i].key) pl_api_conv_event(polls.slots[i].key);
    pl_map_release(&polls);
    A.store = NULL;
    A.draining = 1;
    pl_limiter_release(&A.ip_requests);
    pl_limiter_release(&A.ip_auth);
}

void pl_api_set_gauges(void (*fn)(pl_metrics_gauges *g)) { A.gauges = fn; }

void pl_api_init(uv_loop_t *loop, pl_store *store, const pl_config *cfg) {
    A.loop = loop;
    A.store = store;
    A.cfg = cfg;
    pl_limiter_init(&A.ip_requests, cfg->rate_ip_requests, cfg->rate_ip_burst);
    pl_limiter_init(&A.ip_auth, cfg->rate_ip_auth / 60.0, cfg->rate_ip_auth ? cfg->rate_ip_auth : 1);
    /* a real argon2id string with the configured cost, for unknown users */
    pl_auth_hash_password("not a real password", 19, (unsigned)cfg->argon2_ops,
                          (size_t)cfg->argon2_mem * 1024, A.dummy_hash);
}
