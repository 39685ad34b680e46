/* api_keys.c — end-to-end encryption over REST (docs/protocol.md
 * "End-to-end encryption"): the key directory of the caller's device
 * (GET, PUT, DELETE /api/v1/keys), a user's devices and prekey bundles
 * (GET /api/v1/users/{id}/devices, POST /api/v1/users/{id}/bundle) and
 * marking a conversation end-to-end encrypted
 * (POST /api/v1/conversations/{id}/e2ee).
 *
 * A device is a login session: the access token's login id. So a user can
 * upload keys only for its own devices, and a device's keys stop being
 * listed or handed out when its login ends (logout deletes them).
 * Nothing here logs a key.
 */
#include "api_int.h"

#include <stdlib.h>
#include <string.h>

#include "../chat/e2ee.h"
#include "../core/alloc.h"

typedef struct keys_op {
    pl_job          job;          /* first: store callbacks get &job        */
    pl_http_ctx    *ctx;
    json_t         *root;         /* the upload's body: the keys point into it */
    pl_e2ee_upload  up;
} keys_op;

static keys_op *keys_op_new(pl_http_ctx *ctx, json_t *root, pl_job_op o, pl_job_cb done) {
    keys_op *k = pl_calloc(1, sizeof *k);
    k->ctx = ctx;
    k->root = root;
    k->job.op = o;
    k->job.done = done;
    k->job.data = k;
    k->job.user = ctx->user;
    return k;
}

static void keys_op_free(keys_op *k) {
    pl_job_release(&k->job);
    if (k->root) json_decref(k->root);
    free(k);
}

static void keys_submit(keys_op *k) {
    if (!A.store) {
        pl_http_error(k->ctx, 503, "unavailable", "shutting down");
        keys_op_free(k);
        return;
    }
    pl_store_submit(A.store, &k->job);
}

static void keys_error(keys_op *k, const char *fallback) {
    api_store_error(k->ctx, k->job.result, k->job.why ? k->job.why : fallback);
}

static json_t *device_json(const pl_device *d, int bundle) {
    json_t *o = json_pack("{s:I,s:s,s:{s:I,s:s,s:s}}", "device", (json_int_t)d->id, "identity_key", d->identity,
                          "signed_prekey", "id", (json_int_t)d->spk_id, "key", d->spk, "signature", d->spk_sig);
    if (bundle)
        json_object_set_new(o, "one_time_prekey",
                            d->otk ? json_pack("{s:I,s:s}", "id", (json_int_t)d->otk_id, "key", d->otk) : json_null());
    else
        json_object_set_new(o, "one_time_prekeys", json_integer((json_int_t)d->otk_count));
    return o;
}

static json_t *devices_json(const pl_job *j, int bundle) {
    json_t *a = json_array();
    for (size_t i = 0; i < j->ndevices; i++) json_array_append_new(a, device_json(&j->devices[i], bundle));
    return json_pack("{s:I,s:o}", "user", (json_int_t)j->peer, "devices", a);
}

/* ---- my device: /api/v1/keys ------------------------------------------------ */

static void uploaded(pl_job *j) {
    keys_op *k = j->data;
    if (j->result) {
        keys_error(k, "could not store the keys");
    } else {
        if (j->created) pl_e2ee_announce(k->ctx->user);   /* a new device, or a new identity */
        pl_http_respond_json(k->ctx, 200, json_pack("{s:I,s:I}", "device", (json_int_t)k->ctx->login,
                                                    "one_time_prekeys", (json_int_t)j->out_id));
    }
    keys_op_free(k);
}

static void deleted(pl_job *j) {
    keys_op *k = j->data;
    if (j->result) {
        keys_error(k, "could not delete the keys");
    } else {
        if (j->created) pl_e2ee_announce(k->ctx->user);
        pl_http_respond(k->ctx, 204, NULL, NULL, 0, NULL);
    }
    keys_op_free(k);
}

static void mine_read(pl_job *j) {
    keys_op *k = j->data;
    if (j->result) {
        keys_error(k, "could not read the keys");
        keys_op_free(k);
        return;
    }
    const pl_device *d = NULL;
    for (size_t i = 0; i < j->ndevices; i++)
        if (j->devices[i].id == k->ctx->login) d = &j->devices[i];
    if (!d) pl_http_error(k->ctx, 404, "not_found", "this device has no keys");
    else pl_http_respond_json(k->ctx, 200, device_json(d, 0));
    keys_op_free(k);
}

void h_keys(pl_http_ctx *ctx) {
    if (!api_allow(ctx, API_GET | API_PUT | API_DELETE)) return;
    int m = api_method(ctx);
    if (m == PL_HTTP_GET || m == PL_HTTP_DELETE) {
        keys_op *k = keys_op_new(ctx, NULL, m == PL_HTTP_GET ? PL_READ_DEVICES : PL_JOB_KEYS_DELETE,
                                 m == PL_HTTP_GET ? mine_read : deleted);
        k->job.peer = ctx->user;
        k->job.id = ctx->login;
        keys_submit(k);
        return;
    }
    json_t *o = api_body_object(ctx);
    if (!o) return;
    keys_op *k = keys_op_new(ctx, o, PL_JOB_KEYS_UPLOAD, uploaded);
    const char *why = NULL;
    if (pl_e2ee_parse_upload(o, &k->up, &why)) {
        pl_http_error(ctx, 400, "bad_request", why);
        keys_op_free(k);
        return;
    }
    k->job.id = ctx->login;
    k->job.keys = &k->up.keys;
    keys_submit(k);
}

/* ---- other users: devices and bundles ----------------------------------------- */

static void devices_read(pl_job *j) {
    keys_op *k = j->data;
    if (j->result) keys_error(k, "no such user");
    else pl_http_respond_json(k->ctx, 200, devices_json(j, 0));
    keys_op_free(k);
}

static void claimed(pl_job *j) {
    keys_op *k = j->data;
    if (j->result) {
        keys_error(k, "no such user");
    } else {
        for (size_t i = 0; i < j->ndevices; i++) pl_e2ee_claimed(j->peer, &j->devices[i]);
        pl_http_respond_json(k->ctx, 200, devices_json(j, 1));
    }
    keys_op_free(k);
}

void h_devices(pl_http_ctx *ctx, int64_t user) {
    keys_op *k = keys_op_new(ctx, NULL, PL_READ_DEVICES, devices_read);
    k->job.peer = user;
    keys_submit(k);
}

void h_bundle(pl_http_ctx *ctx, int64_t user) {
    keys_op *k = keys_op_new(ctx, NULL, PL_JOB_KEYS_CLAIM, claimed);
    k->job.peer = user;
    keys_submit(k);
}

/* ---- conversations ------------------------------------------------------------ */

static void marked(pl_job *j) {
    keys_op *k = j->data;
    if (j->result) keys_error(k, "no such conversation");
    else pl_http_respond_json(k->ctx, 200, json_pack("{s:I,s:b,s:b}", "id", (json_int_t)j->conv, "e2ee", 1,
                                                     "changed", j->created));
    keys_op_free(k);
}

void h_conv_e2ee(pl_http_ctx *ctx, int64_t conv) {
    keys_op *k = keys_op_new(ctx, NULL, PL_JOB_CONV_E2EE, marked);
    k->job.conv = conv;
    keys_submit(k);
}
