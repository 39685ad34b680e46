/* api_auth.c — accounts and tokens: register, login, refresh, logout, me,
 * user lookup (docs/protocol.md section 1).
 *
 * Passwords are hashed and checked on libuv's thread pool (argon2id is slow
 * on purpose); an unknown user is checked against a dummy hash so timing
 * does not tell whether a name exists.
 */
#include "api_int.h"

#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "../core/alloc.h"
#include "../core/clock.h"
#include "../core/log.h"

static void respond_tokens(pl_http_ctx *ctx, int status, int64_t user, const char *username,
                           int64_t login, int64_t login_created, const char *refresh) {
    char access[PL_AUTH_TOKEN_MAX];
    int64_t exp = pl_auth_access_expiry(pl_now_ms(), A.cfg->access_ttl);
    pl_auth_access_token(user, login, login_created, exp, access);
    json_t *o = json_pack("{s:{s:I,s:s},s:s,s:i,s:s}", "user", "id", (json_int_t)user,
                          "username", username, "access_token", access,
                          "expires_in", A.cfg->access_ttl, "refresh_token", refresh);
    pl_http_respond_json(ctx, status, o);
}

static void login_created(pl_job *j) {
    api_op *op = j->data;
    if (j->result) api_store_error(op->ctx, j->result, "could not create the login session");
    else {
        /* the refresh token names the login id, known only now; its hash
         * covers only the secret after the dot */
        char tok[PL_AUTH_TOKEN_MAX];
        snprintf(tok, sizeof tok, "%lld.%s", (long long)j->out_id, strchr(op->refresh, '.') + 1);
        respond_tokens(op->ctx, op->created ? 201 : 200, op->user, op->username, j->out_id,
                       j->login_out.created, tok);
    }
    api_op_free(op);
}

/* Submits LOGIN_CREATE for op->user; answers from login_created. */
static void create_login(api_op *op) {
    api_job_reset(op, PL_JOB_LOGIN_CREATE, login_created);
    op->job.user = op->user;
    /* the secret part is what is hashed; the login id prefix is added later */
    pl_auth_refresh_token(0, op->refresh, op->job.hash);
    op->job.expires = pl_now_ms() + (int64_t)A.cfg->refresh_ttl * 1000;
    api_submit(op);
}

/* ---- register / login --------------------------------------------------- */

/* Reads and checks the body's username and password into op. At login a
 * username or password no account can have is a wrong one (401, like any
 * other); at register it is a bad request that says which rule. */
static int read_credentials(pl_http_ctx *ctx, json_t *o, api_op *op, int login) {
    json_t *u = json_object_get(o, "username"), *p = json_object_get(o, "password");
    if (!json_is_string(u) || !json_is_string(p)) {
        pl_http_error(ctx, 400, "bad_request", "\"username\" and \"password\" must be strings");
        return -1;
    }
    size_t pl = json_string_length(p);
    int bad_name = pl_auth_normalize_username(json_string_value(u), json_string_length(u), op->username) != 0;
    int bad_password = pl < 8 || pl > 256;
    if (login && (bad_name || bad_password)) {
        pl_http_error(ctx, 401, "unauthorized", "wrong username or password");
        return -1;
    }
    if (bad_name) {
        pl_http_error(ctx, 400, "bad_request", "username must be 3-32 of A-Z a-z 0-9 _ . -");
        return -1;
    }
    /* A mention ends at a trailing '.' or '-' (@alice. is alice): a name
     * ending so could not be mentioned, and passes for its stem. New names
     * only: login keeps the older rule for accounts made before. */
    char last = op->username[strlen(op->username) - 1];
    if (!login && (last == '.' || last == '-')) {
        pl_http_error(ctx, 400, "bad_request", "username must not end in '.' or '-'");
        return -1;
    }
    if (bad_password) {
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
        api_op_free(op);
    } else if (j->result) {
        api_store_error(op->ctx, j->result, "could not create the user");
        api_op_free(op);
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
    if (!op->ok || status) {
        pl_http_error(op->ctx, 500, "internal", "password hashing failed");
        api_op_free(op);
        return;
    }
    api_job_reset(op, PL_JOB_USER_CREATE, user_created);
    op->job.username = op->username;
    op->job.pwhash = op->pwhash;
    api_submit(op);
}

void h_register(pl_http_ctx *ctx) {
    json_t *o = api_body_object(ctx);
    if (!o) return;
    api_op *op = api_op_new(ctx, o);
    if (read_credentials(ctx, o, op, 0)) { api_op_free(op); return; }
    if (pl_auth_common_password(op->password, op->pwlen)) {
        pl_http_error(ctx, 400, "bad_request",
                      "this password is one of the 10,000 most common ones: choose another");
        api_op_free(op);
        return;
    }
    op->work.data = op;
    uv_queue_work(A.loop, &op->work, hash_work, hash_done);
}

static void verify_work(uv_work_t *w) {
    api_op *op = w->data;
    op->ok = pl_auth_check_password(op->pwhash, op->password, op->pwlen);
}

static void verify_done(uv_work_t *w, int status) {
    api_op *op = w->data;
    if (!op->ok || status || !op->user) {
        pl_http_error(op->ctx, 401, "unauthorized", "wrong username or password");
        api_op_free(op);
        return;
    }
    create_login(op);
}

static void login_user_read(pl_job *j) {
    api_op *op = j->data;
    if (j->result == PL_STORE_EUNAVAIL) {
        api_store_error(op->ctx, j->result, "");
        api_op_free(op);
        return;
    }
    if (j->result == PL_STORE_OK && j->user_out.pwhash) {
        op->user = j->user_out.id;
        snprintf(op->pwhash, sizeof op->pwhash, "%s", j->user_out.pwhash);
    } else {
        op->user = 0;                 /* still hash, so timing does not tell */
        snprintf(op->pwhash, sizeof op->pwhash, "%s", A.dummy_hash);
    }
    pl_job_release(j);
    op->work.data = op;
    uv_queue_work(A.loop, &op->work, verify_work, verify_done);
}

void h_login(pl_http_ctx *ctx) {
    json_t *o = api_body_object(ctx);
    if (!o) return;
    api_op *op = api_op_new(ctx, o);
    if (read_credentials(ctx, o, op, 1)) { api_op_free(op); return; }
    api_job_reset(op, PL_READ_USER_BY_NAME, login_user_read);
    op->job.username = op->username;
    op->job.flags = PL_READ_WITH_HASH;
    api_submit(op);
}

/* ---- refresh / logout --------------------------------------------------- */

static void refreshed_user(pl_job *j) {
    api_op *op = j->data;
    if (j->result) api_store_error(op->ctx, j->result == PL_STORE_ENOTFOUND ? PL_STORE_EUNAVAIL : j->result, "");
    else respond_tokens(op->ctx, 200, op->user, j->user_out.username, op->login, op->login_created, op->refresh);
    api_op_free(op);
}

static void refresh_login_read(pl_job *j);

static void rotated(pl_job *j) {
    api_op *op = j->data;
    if (j->result == PL_STORE_EUNAVAIL) {
        api_store_error(op->ctx, j->result, "");
        api_op_free(op);
        return;
    }
    if (j->result == PL_STORE_ENOTFOUND && !op->status) {
        /* another request rotated (or revoked) it between our read and our
         * write: read it again, once, to answer as if we had come second
         * (the two-tabs answer within the grace; audit C3) */
        uint8_t hash[32];
        memcpy(hash, j->hash, 32);
        op->status = 1;
        api_job_reset(op, PL_READ_LOGIN, refresh_login_read);
        op->job.id = op->login;
        memcpy(op->job.hash, hash, 32);
        api_submit(op);
        return;
    }
    if (j->result) {
        pl_http_error(op->ctx, 401, "unauthorized", "refresh token is not valid");
        api_op_free(op);
        return;
    }
    api_job_reset(op, PL_READ_USER_BY_ID, refreshed_user);
    op->job.user = op->user;
    api_submit(op);
}

/* What the login read says about a presented refresh token: 0 valid. */
static int refresh_valid(const pl_job *j, const uint8_t hash[32]) {
    const pl_login *l = &j->login_out;
    if (j->result || l->revoked || l->expires <= pl_now_ms()) return -1;
    return sodium_memcmp(l->refresh_hash, hash, 32) == 0 ? 0 : -1;
}

/* Reuse detection (protocol.md "Refresh token reuse"): 1 if the token is
 * the one the live login's last rotation replaced. */
static int refresh_reused(const pl_job *j, const uint8_t hash[32]) {
    const pl_login *l = &j->login_out;
    if (j->result || l->revoked || !l->rotated) return 0;
    return sodium_memcmp(l->prev_hash, hash, 32) == 0;
}

static void reuse_revoked(pl_job *j) {
    api_op *op = j->data;
    if (j->result && j->result != PL_STORE_ENOTFOUND) {
        api_store_error(op->ctx, j->result, "could not revoke the session");
    } else {
        pl_chat_revoke_login(op->user, op->login);   /* live WebSockets close with 4001 */
        pl_http_error(op->ctx, 401, "unauthorized",
                      "refresh token was already used: the login session is revoked, log in again");
    }
    api_op_free(op);
}

static void refresh_login_read(pl_job *j) {
    api_op *op = j->data;
    if (j->result == PL_STORE_EUNAVAIL) {
        api_store_error(op->ctx, j->result, "");
        api_op_free(op);
        return;
    }
    uint8_t hash[32];
    memcpy(hash, op->job.hash, 32);
    if (refresh_valid(j, hash)) {
        if (refresh_reused(j, hash)) {
            int64_t age = pl_now_ms() - j->login_out.rotated;
            if (age < (int64_t)A.cfg->refresh_reuse_grace * 1000) {
                /* another tab refreshed moments ago: refuse, keep the session */
                pl_http_error(op->ctx, 401, "unauthorized",
                              "refresh token was just rotated: use the newer one");
                api_op_free(op);
                return;
            }
            op->user = j->login_out.user;
            op->login = j->login_out.id;
            pl_log(PL_LOG_WARN, op->ctx->conn->id, "refresh token reuse: session revoked",
                   "\"user\":%lld,\"login\":%lld", (long long)op->user, (long long)op->login);
            api_job_reset(op, PL_JOB_LOGIN_REVOKE, reuse_revoked);
            op->job.id = op->login;
            api_submit(op);
            return;
        }
        pl_http_error(op->ctx, 401, "unauthorized", "refresh token is not valid");
        api_op_free(op);
        return;
    }
    op->user = j->login_out.user;
    op->login = j->login_out.id;
    op->login_created = j->login_out.created;
    api_job_reset(op, PL_JOB_LOGIN_ROTATE, rotated);
    op->job.id = op->login;
    memcpy(op->job.hash, hash, 32);
    pl_auth_refresh_token(op->login, op->refresh, op->job.hash2);
    op->job.expires = pl_now_ms() + (int64_t)A.cfg->refresh_ttl * 1000;
    api_submit(op);
}

/* Parses the body's refresh_token and reads its login; then done(). */
static void with_refresh_token(pl_http_ctx *ctx, json_t *o, pl_job_cb done) {
    json_t *t = json_object_get(o, "refresh_token");
    int64_t id;
    uint8_t hash[32];
    if (!json_is_string(t)) {
        json_decref(o);
        pl_http_error(ctx, 400, "bad_request", "\"refresh_token\" must be a string");
        return;
    }
    if (pl_auth_parse_refresh(json_string_value(t), json_string_length(t), &id, hash)) {
        json_decref(o);
        pl_http_error(ctx, 401, "unauthorized", "refresh token is not valid");
        return;
    }
    api_op *op = api_op_new(ctx, o);
    api_job_reset(op, PL_READ_LOGIN, done);
    op->job.id = id;
    memcpy(op->job.hash, hash, 32);     /* kept for the check */
    api_submit(op);
}

void h_refresh(pl_http_ctx *ctx) {
    json_t *o = api_body_object(ctx);
    if (o) with_refresh_token(ctx, o, refresh_login_read);
}

static void revoked(pl_job *j) {
    api_op *op = j->data;
    if (j->result) api_store_error(op->ctx, j->result, "could not log out");
    else {
        pl_chat_revoke_login(op->user, op->login);
        pl_http_respond(op->ctx, 204, NULL, NULL, 0, NULL);
    }
    api_op_free(op);
}

static void revoke_login(api_op *op) {
    api_job_reset(op, PL_JOB_LOGIN_REVOKE, revoked);
    op->job.id = op->login;
    api_submit(op);
}

static void logout_refresh_read(pl_job *j) {
    api_op *op = j->data;
    uint8_t hash[32];
    memcpy(hash, op->job.hash, 32);
    if (j->result == PL_STORE_EUNAVAIL) {
        api_store_error(op->ctx, j->result, "");
        api_op_free(op);
        return;
    }
    if (refresh_valid(j, hash)) {
        pl_http_error(op->ctx, 401, "unauthorized", "a valid refresh or access token is required");
        api_op_free(op);
        return;
    }
    op->user = j->login_out.user;
    op->login = j->login_out.id;
    revoke_login(op);
}

static void logout_bearer_checked(void *arg, int result, int64_t user, int64_t login) {
    pl_http_ctx *ctx = arg;
    if (result == PL_STORE_ENOTFOUND) {
        pl_http_error(ctx, 401, "unauthorized", "a valid refresh or access token is required");
        return;
    }
    if (result) {
        api_store_error(ctx, result, "could not check the access token");
        return;
    }
    api_op *op = api_op_new(ctx, NULL);
    op->user = user;
    op->login = login;
    revoke_login(op);
}

/* The body's refresh_token, when there is one, names the login to end
 * (checked: 400, 401); without one, the Bearer token's login ends. A
 * client sending both means the refresh token: answering 204 for the
 * header's login and leaving the named one live would be a logout that
 * did not happen (audit S2). */
void h_logout(pl_http_ctx *ctx) {
    json_t *o = NULL;
    if (ctx->body_len) {
        if (!(o = api_body_object(ctx))) return;
        json_t *t = json_object_get(o, "refresh_token");
        if (t && !json_is_null(t)) {
            with_refresh_token(ctx, o, logout_refresh_read);
            return;
        }
    }
    pl_str tok;
    if (api_bearer(&ctx->req, &tok)) {
        int rc = pl_chat_check_token(tok.p, tok.n, logout_bearer_checked, ctx);
        if (rc == 0 || rc == PL_STORE_EUNAVAIL) json_decref(o);
        if (rc == 0) return;
        if (rc == PL_STORE_EUNAVAIL) {
            pl_http_error(ctx, 503, "unavailable", "shutting down");
            return;
        }
    }
    json_decref(o);                    /* a body without a refresh token: none at all (audit C3) */
    pl_http_error(ctx, 401, "unauthorized", "a valid refresh or access token is required");
}

/* ---- users -------------------------------------------------------------- */

static void user_read(pl_job *j) {
    api_op *op = j->data;
    if (j->result == PL_STORE_ENOTFOUND) pl_http_error(op->ctx, 404, "not_found", "no such user");
    else if (j->result) api_store_error(op->ctx, j->result, "");
    else
        pl_http_respond_json(op->ctx, 200, json_pack("{s:I,s:s}", "id", (json_int_t)j->user_out.id,
                                                     "username", j->user_out.username));
    api_op_free(op);
}

void h_me(pl_http_ctx *ctx) {
    api_op *op = api_op_new(ctx, NULL);
    api_job_reset(op, PL_READ_USER_BY_ID, user_read);
    op->job.user = ctx->user;
    api_submit(op);
}

void h_user(pl_http_ctx *ctx, const char *name, size_t n) {
    api_op *op = api_op_new(ctx, NULL);
    if (pl_auth_normalize_username(name, n, op->username)) {
        pl_http_error(ctx, 404, "not_found", "no such user");
        api_op_free(op);
        return;
    }
    api_job_reset(op, PL_READ_USER_BY_NAME, user_read);
    op->job.username = op->username;
    api_submit(op);
}
