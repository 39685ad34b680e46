/* api_push.c — push notification devices over REST (docs/protocol.md
 * "Push notifications"): the caller registers its device's token
 * (POST /api/v1/push/devices), lists its devices (GET) and removes one
 * (DELETE /api/v1/push/devices/{id}).
 *
 * A device belongs to the login session whose access token registered it,
 * like an end-to-end encryption device: logging out forgets it (store.h
 * invariant 10). Tokens are validated here (push/payload.c) and never
 * logged.
 */
#include "api_int.h"

#include <stdlib.h>
#include <string.h>

#include "../core/alloc.h"
#include "../push/push.h"

static json_t *device_json(const pl_push_device *d, int64_t login) {
    return json_pack("{s:I,s:s,s:s,s:I,s:b}", "id", (json_int_t)d->id, "platform", pl_push_platform_name(d->platform),
                     "token", d->token, "created", (json_int_t)d->created, "current", d->login == login);
}

json_t *api_push_devices_json(const pl_job *j, int64_t login) {
    json_t *a = json_array();
    for (size_t i = 0; i < j->npush_devices; i++) json_array_append_new(a, device_json(&j->push_devices[i], login));
    return a;
}

static void listed(pl_job *j) {
    api_op *op = j->data;
    if (j->result) {
        api_store_error(op->ctx, j->result, "could not read the devices");
    } else {
        pl_http_respond_json(op->ctx, 200, json_pack("{s:o,s:b}", "devices", api_push_devices_json(j, op->ctx->login),
                                                     "enabled", pl_push_enabled()));
    }
    api_op_free(op);
}

static void registered(pl_job *j) {
    api_op *op = j->data;
    if (j->result) {
        api_store_error(op->ctx, j->result, j->why ? j->why : "this session has ended; log in again");
    } else {
        pl_push_device d = {j->out_id, j->user, j->id, j->platform, (char *)j->token, 0};
        json_t *o = device_json(&d, j->id);
        json_object_del(o, "created");
        json_object_set_new(o, "changed", json_boolean(j->created));
        pl_http_respond_json(op->ctx, j->created ? 201 : 200, o);
    }
    api_op_free(op);
}

static void unregistered(pl_job *j) {
    api_op *op = j->data;
    if (j->result) api_store_error(op->ctx, j->result, "no such device");
    else pl_http_respond(op->ctx, 204, NULL, NULL, 0, NULL);
    api_op_free(op);
}

void h_push_devices(pl_http_ctx *ctx) {
    if (!api_allow(ctx, API_GET | API_POST)) return;
    if (api_method(ctx) == PL_HTTP_GET) {
        api_op *op = api_op_new(ctx, NULL);
        api_job_reset(op, PL_READ_PUSH_DEVICES, listed);
        op->job.user = ctx->user;
        api_submit(op);
        return;
    }
    json_t *o = api_body_object(ctx);
    if (!o) return;
    json_t *pv = json_object_get(o, "platform"), *tv = json_object_get(o, "token");
    int platform = json_is_string(pv) ? pl_push_platform_parse(json_string_value(pv)) : 0;
    const char *why = NULL;
    if (!platform) why = "platform must be \"webhook\", \"fcm\" or \"apns\"";
    else if (!json_is_string(tv)) why = "token must be a string";
    else why = pl_push_token_check(platform, json_string_value(tv), json_string_length(tv));
    if (!why && (!pl_push_enabled() || !pl_push_platform_enabled(pl_push_config_get(), platform)))
        why = "push notifications of this platform are not enabled on this server";
    if (why) {
        pl_http_error(ctx, 400, "bad_request", why);
        json_decref(o);
        return;
    }
    api_op *op = api_op_new(ctx, o);
    api_job_reset(op, PL_JOB_PUSH_REGISTER, registered);
    op->job.user = ctx->user;
    op->job.id = ctx->login;
    op->job.platform = platform;
    op->job.token = json_string_value(tv);
    api_submit(op);
}

void h_push_device(pl_http_ctx *ctx, int64_t id) {
    api_op *op = api_op_new(ctx, NULL);
    api_job_reset(op, PL_JOB_PUSH_UNREGISTER, unregistered);
    op->job.user = ctx->user;
    op->job.id = id;
    api_submit(op);
}
