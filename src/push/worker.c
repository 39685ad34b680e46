/* worker.c — the push worker (see push.h).
 *
 * One pass at a time: PUSH_CLAIM (the writer leases up to
 * PL_PUSH_CLAIM_MAX rows) -> READ_PUSH_TARGETS (a reader expands them into
 * one pl_push per message and device, levels applied) -> which of those
 * users are connected (chat: this node's sessions, every node's presence)
 * -> the requests of the others go to the sender thread -> PUSH_DONE
 * (finished rows deleted, rows with a transient failure kept for their
 * failed devices and leased PL_PUSH_RETRY_MS, dead devices deleted). A
 * pass that claimed a full page starts the next at once. One device's
 * requests go one at a time in row order (order.h decides which may go;
 * the rest of a device's notifications in a pass wait for its request in
 * flight, and those another pass or an earlier kept row holds back are
 * deferred: kept in the outbox for the device, PL_PUSH_DEFER_MS, their
 * attempt given back). A crash anywhere
 * leaves the rows leased: they are sent again after the lease, so a
 * notification is sent at least once (a retry may repeat one; APNs
 * collapses repeats by apns-collapse-id).
 */
#include "push.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "../chat/chat.h"
#include "../core/alloc.h"
#include "../core/clock.h"
#include "../core/log.h"
#include "../core/metrics.h"
#include "jwt.h"
#include "order.h"
#include "sender.h"

typedef struct pass {
    pl_job    job;                /* first: the store's callbacks get &job    */
    int64_t  *rows;               /* claimed outbox rows (owned)              */
    size_t    nrows;
    int       full;               /* the claim took a whole page              */
    pl_push  *pushes;             /* taken from the targets read (owned)      */
    size_t    npushes;
    uint8_t  *outcome;            /* per push: pl_push_outcome, 0 = not sent  */
    int64_t  *failed_at;          /* per push: wall ms of a RETRY outcome     */
    size_t    pending;            /* requests at the sender or waiting behind
                                   * their device's (order.h)                 */
    int64_t   handed;             /* mono ms its requests went to the sender  */
    int64_t  *users;              /* the recipients, sorted, once (owned)      */
    pl_push_settled settled;      /* PUSH_DONE's inputs (owned)               */
    int       sending;            /* on W.sending (requests at the sender)    */
    struct pass *prev, *next;     /* W.sending's links                        */
} pass;

static struct {
    uv_loop_t      *loop;
    pl_store       *store;
    pl_push_config  cfg;
    char           *strings[11];  /* owned copies behind cfg                  */
    pl_jwt_key     *fcm_key;      /* --push-fcm-credentials: the account's key */
    char           *fcm_email, *fcm_token_uri;
    char           *fcm_token;    /* (owned) the OAuth 2 access token          */
    int64_t         fcm_expires;  /* mono ms                                  */
    int64_t         fcm_asked;    /* mono ms of the last token request         */
    int             fcm_asking;
    pl_jwt_key     *apns_key;     /* --push-apns-key: cfg.apns_token is minted */
    char           *apns_jwt;     /* (owned) every PL_JWT_RENEW_S             */
    int64_t         apns_jwt_at;  /* mono ms it was minted                    */
    pl_push_sender *sender;
    pl_push_order  *order;        /* which device's notification may go now    */
    uv_timer_t      tick, soon;
    uv_async_t      wake;
    int             configured, started, stopping, soon_armed;
    int             again;        /* a pass is wanted when one can start      */
    int             claim_rows;   /* rows the next pass claims (adapts)        */
    pass           *cur;          /* the pass claiming, reading, asking who is on */
    pass           *sending;      /* passes whose requests are out (a list)   */
    int             npasses;      /* passes between hand-off and PUSH_DONE    */
} W;

static void start_pass(void);

#define TOKEN_REQ ((uintptr_t)-1)  /* a sender request that is the OAuth exchange */
#define FCM_TOKEN_EARLY_MS 300000  /* a token is renewed this long before it ends */
#define FCM_TOKEN_RETRY_MS 10000   /* a failed exchange is tried again after     */

/* 1 when FCM requests can be made now (a token minted from credentials
 * that is not about to end, or none needed). */
static int fcm_ready(void) { return !W.fcm_key || (W.fcm_token && pl_mono_ms() < W.fcm_expires); }

/* RFC 7523: a signed assertion for a token (sender thread; answered in
 * fcm_token_answer). */
static void fcm_token_ask(void) {
    int64_t now = pl_mono_ms();
    if (!W.fcm_key || W.fcm_asking || !W.sender) return;
    if (W.fcm_token && now < W.fcm_expires - FCM_TOKEN_EARLY_MS) return;
    if (W.fcm_asked && now - W.fcm_asked < FCM_TOKEN_RETRY_MS) return;
    int64_t iat = pl_now_ms() / 1000;
    json_t *c = json_pack("{s:s,s:s,s:s,s:I,s:I}", "iss", W.fcm_email, "scope",
                          "https://www.googleapis.com/auth/firebase.messaging", "aud", W.fcm_token_uri, "iat",
                          (json_int_t)iat, "exp", (json_int_t)(iat + 3600));
    char *claims = json_dumps(c, JSON_COMPACT);
    json_decref(c);
    char *jwt = claims ? pl_jwt_sign(W.fcm_key, "{\"alg\":\"RS256\",\"typ\":\"JWT\"}", claims) : NULL;
    free(claims);
    if (!jwt) {
        pl_log(PL_LOG_ERROR, 0, "push: cannot sign the FCM token request", "%s", "");
        W.fcm_asked = now;
        return;
    }
    pl_push_req *r = pl_calloc(1, sizeof *r);
    r->http.url = pl_strdup(W.fcm_token_uri);
    r->http.headers[r->http.nheaders++] = pl_strdup("Content-Type: application/x-www-form-urlencoded");
    size_t n = strlen(jwt) + 80;
    r->http.body = malloc(n);
    snprintf(r->http.body, n, "grant_type=urn%%3Aietf%%3Aparams%%3Aoauth%%3Agrant-type%%3Ajwt-bearer&assertion=%s", jwt);
    r->http.body_len = strlen(r->http.body);
    free(jwt);
    r->arg = (void *)TOKEN_REQ;
    W.fcm_asking = 1;
    W.fcm_asked = now;
    pl_push_sender_submit(W.sender, r);
}

/* What a service's answer says about a refusal, for a log line: one word
 * of the services' published vocabularies, never the answer's text, which
 * may quote what was sent (a device token, a message's text) or, from the
 * token endpoint, a token (audits O5, O6; README: logs hold no tokens or
 * message text). The value of the first of the keys "reason" (APNs),
 * "errorCode" and "status" (FCM) and "error" (OAuth 2) that is one of the
 * words below, as a JSON string; "other" when the answer names something
 * else, "" when it names nothing. */
static const char *const known_reasons[] = {
    /* APNs */
    "BadCollapseId", "BadDeviceToken", "BadExpirationDate", "BadMessageId", "BadPriority", "BadTopic",
    "DeviceTokenNotForTopic", "DuplicateHeaders", "IdleTimeout", "InvalidPushType", "MissingDeviceToken",
    "MissingTopic", "PayloadEmpty", "TopicDisallowed", "BadCertificate", "BadCertificateEnvironment",
    "ExpiredProviderToken", "Forbidden", "InvalidProviderToken", "MissingProviderToken",
    "UnrelatedKeyIdInToken", "BadPath", "MethodNotAllowed", "ExpiredToken", "Unregistered", "PayloadTooLarge",
    "TooManyProviderTokenUpdates", "TooManyRequests", "InternalServerError", "ServiceUnavailable", "Shutdown",
    /* FCM error codes and google.rpc statuses */
    "UNSPECIFIED_ERROR", "INVALID_ARGUMENT", "UNREGISTERED", "SENDER_ID_MISMATCH", "QUOTA_EXCEEDED", "UNAVAILABLE",
    "INTERNAL", "THIRD_PARTY_AUTH_ERROR", "PERMISSION_DENIED", "UNAUTHENTICATED", "NOT_FOUND",
    "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "DEADLINE_EXCEEDED", "ABORTED", "ALREADY_EXISTS",
    /* OAuth 2 (RFC 6749 5.2) */
    "invalid_request", "invalid_client", "invalid_grant", "unauthorized_client", "unsupported_grant_type",
    "invalid_scope",
};

static void answer_reason(const pl_push_req *r, char out[48]) {
    static const char *const keys[] = {"\"reason\"", "\"errorCode\"", "\"status\"", "\"error\""};
    snprintf(out, 48, "\"\"");
    for (size_t k = 0; k < sizeof keys / sizeof *keys; k++) {
        size_t kl = strlen(keys[k]);
        const char *p = memmem(r->answer, r->answer_len, keys[k], kl), *end = r->answer + r->answer_len;
        if (!p) continue;
        p += kl;
        while (p < end && (*p == ' ' || *p == ':')) p++;
        if (p >= end || *p != '"') continue;
        const char *v = ++p;
        while (p < end && *p != '"') p++;
        snprintf(out, 48, "\"other\"");
        for (size_t i = 0; i < sizeof known_reasons / sizeof *known_reasons; i++)
            if ((size_t)(p - v) == strlen(known_reasons[i]) && memcmp(v, known_reasons[i], (size_t)(p - v)) == 0) {
                snprintf(out, 48, "\"%s\"", known_reasons[i]);
                return;
            }
        if (p < end) return;
    }
}

static void fcm_token_answer(const pl_push_req *r) {
    W.fcm_asking = 0;
    json_t *o = r->status == 200 ? json_loadb(r->answer, r->answer_len, 0, NULL) : NULL;
    json_t *t = json_object_get(o, "access_token"), *e = json_object_get(o, "expires_in");
    if (!json_is_string(t) || !json_is_integer(e) || json_integer_value(e) <= 0) {
        char why[48];
        answer_reason(r, why);
        pl_log(PL_LOG_ERROR, 0,
               r->status == 0     ? "push: the FCM token request got no answer"
               : r->status == 200 ? "push: the FCM token answer is not an access_token with a positive expires_in"
                                  : "push: the FCM token request was refused",
               "\"status\":%ld,\"reason\":%s", r->status, why);
    } else {
        free(W.fcm_token);
        W.fcm_token = pl_strdup(json_string_value(t));
        W.fcm_expires = pl_mono_ms() + (int64_t)json_integer_value(e) * 1000;
        W.cfg.fcm_token = W.fcm_token;
    }
    json_decref(o);
}

static void pass_free(pass *p) {
    pl_job_release(&p->job);
    free(p->rows);
    pl_push_list_free(p->pushes, p->npushes);
    free(p->outcome);
    free(p->failed_at);
    free(p->users);
    pl_push_settled_release(&p->settled);
    free(p);
}

/* A pass is over (its rows recorded, or left to their lease). again: it
 * claimed a full page, so more rows may wait. */
static void end_pass(pass *p, int again) {
    if (W.cur == p) W.cur = NULL;
    else W.npasses--;
    pass_free(p);
    if (again) W.again = 1;
    if (W.again && !W.stopping) start_pass();
}

static void sending_add(pass *p) {
    p->sending = 1;
    p->next = W.sending;
    if (W.sending) W.sending->prev = p;
    W.sending = p;
}

static void sending_remove(pass *p) {
    if (p->prev) p->prev->next = p->next;
    else W.sending = p->next;
    if (p->next) p->next->prev = p->prev;
    p->sending = 0;
    p->prev = p->next = NULL;
}

/* ---- 4. the outcomes ------------------------------------------------------- */

static void recorded(pl_job *j) {
    pass *p = (pass *)j;
    if (j->result && !W.stopping)
        pl_log(PL_LOG_WARN, 0, "push: outcomes not recorded (sent again after the lease)", "\"rows\":%zu",
               p->nrows);
    end_pass(p, p->full && !j->result);
}

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

void pl_push_settle(const int64_t *rows, size_t nrows, const pl_push *pushes, const uint8_t *outcome,
                    size_t npushes, pl_push_settled *out) {
    memset(out, 0, sizeof *out);
    out->done = pl_malloc((nrows ? nrows : 1) * sizeof *out->done);
    out->dead = pl_malloc((npushes ? npushes : 1) * sizeof *out->dead);
    out->retries = pl_malloc((nrows ? nrows : 1) * sizeof *out->retries);
    out->retry_devs = pl_malloc((npushes ? npushes : 1) * sizeof *out->retry_devs);
    for (size_t i = 0; i < npushes; i++)
        if (outcome[i] == PL_PUSH_GONE) out->dead[out->ndead++] = pushes[i].device;
    qsort(out->dead, out->ndead, sizeof *out->dead, cmp_i64);
    size_t k = 0;
    for (size_t i = 0; i < out->ndead; i++)           /* a device once */
        if (!k || out->dead[k - 1] != out->dead[i]) out->dead[k++] = out->dead[i];
    out->ndead = k;
    size_t i = 0, ndevs = 0;
    for (size_t r = 0; r < nrows; r++) {              /* one walk: pushes are in row order */
        size_t first = ndevs;
        while (i < npushes && pushes[i].outbox < rows[r]) i++;
        int tried = 0;
        for (; i < npushes && pushes[i].outbox == rows[r]; i++) {
            if (outcome[i] != PL_PUSH_RETRY && outcome[i] != PL_PUSH_DEFERRED) continue;
            out->retry_devs[ndevs++] = pushes[i].device;
            tried |= outcome[i] == PL_PUSH_RETRY;
        }
        if (ndevs == first) out->done[out->ndone++] = rows[r];
        else
            out->retries[out->nretries++] =
                (pl_push_retry){rows[r], out->retry_devs + first, ndevs - first, 0, !tried};
    }
}

void pl_push_settled_release(pl_push_settled *s) {
    free(s->done);
    free(s->dead);
    free(s->retries);
    free(s->retry_devs);
    memset(s, 0, sizeof *s);
}

static void finish(pass *p) {
    if (W.stopping) {
        end_pass(p, 0);
        return;
    }
    pl_job *j = &p->job;
    pl_job_release(j);
    memset(j, 0, sizeof *j);
    pl_push_settle(p->rows, p->nrows, p->pushes, p->outcome, p->npushes, &p->settled);
    int64_t now = pl_now_ms();
    /* a failed attempt is tried again PL_PUSH_RETRY_MS after its answer,
     * not after the pass's last answer (a request that hangs to its
     * timeout would double every other device's wait, audit U3); a row's
     * devices go together, after the first of their failures (so no
     * device's attempts begin further apart than that).
     * Deferred ones: back soon, the attempt given back. */
    for (size_t i = 0, k = 0; i < p->settled.nretries; i++) {
        pl_push_retry *r = &p->settled.retries[i];
        int64_t failed = 0;
        while (k < p->npushes && p->pushes[k].outbox < r->id) k++;      /* both in row order */
        for (; k < p->npushes && p->pushes[k].outbox == r->id; k++)
            if (p->outcome[k] == PL_PUSH_RETRY && p->failed_at[k] && (!failed || p->failed_at[k] < failed))
                failed = p->failed_at[k];
        r->expires = r->refund ? now + PL_PUSH_DEFER_MS : (failed ? failed : now) + PL_PUSH_RETRY_MS;
    }
    pl_push_order_rows_done(W.order, p->rows, p->nrows, p->settled.retries, p->settled.nretries);
    j->op = PL_JOB_PUSH_DONE;
    j->ids = p->settled.done;
    j->nids = p->settled.ndone;
    j->dead = p->settled.dead;
    j->ndead = p->settled.ndead;
    j->retries = p->settled.retries;
    j->nretries = p->settled.nretries;
    j->expires = now + PL_PUSH_RETRY_MS;
    j->done = recorded;
    pl_store_submit(W.store, j);
}

/* pushes[i]'s turn on its device (order.h GO): its request goes on *list
 * (1), or it cannot be made (0: outcome set, its device told). */
static int go(pass *p, size_t i, pl_push_req **list) {
    const pl_push *x = &p->pushes[i];
    pl_push_req *r = NULL;
    if (x->platform == PL_PUSH_FCM && !fcm_ready()) {      /* no OAuth token yet */
        p->outcome[i] = PL_PUSH_RETRY;
        p->failed_at[i] = pl_now_ms();
        pl_count(&pl_m_push_retry, 1);
    } else {
        r = pl_calloc(1, sizeof *r);
        if (pl_push_build(&W.cfg, x, &r->http) != 0) {     /* its platform is off now */
            free(r);
            r = NULL;
            p->outcome[i] = PL_PUSH_FAILED;
            pl_count(&pl_m_push_failed, 1);
        }
    }
    if (!r) {
        pl_push_order_settled(W.order, x->device, x->outbox, p->outcome[i] == PL_PUSH_RETRY, pl_mono_ms());
        return 0;
    }
    r->arg = p;
    r->index = i;
    r->lane = x->platform;                /* 1..3; lane 0 is the OAuth exchange */
    r->next = *list;
    *list = r;
    return 1;
}

/* device's request of p completed (settled): its next notification in p
 * goes on *list, or the rest of them are deferred (an earlier one was
 * kept, or p is past PL_PUSH_CHAIN_MS). The one that completed is still
 * in p->pending. */
static void advance(pass *p, int64_t device, pl_push_req **list) {
    int64_t now = pl_mono_ms();
    int stop = now - p->handed > PL_PUSH_CHAIN_MS;
    size_t k;
    int v;
    while ((v = pl_push_order_next(W.order, device, stop, &k, now))) {
        if (v == PL_PUSH_ORDER_GO && go(p, k, list)) return;
        if (v == PL_PUSH_ORDER_DEFER) p->outcome[k] = PL_PUSH_DEFERRED;
        p->pending--;
    }
}

/* The sender thread finished requests (loop thread, through W.wake). */
static void on_wake(uv_async_t *a) {
    pl_push_req *r = W.sender ? pl_push_sender_take(W.sender) : NULL;
    while (r) {
        pl_push_req *next = r->next;
        pass *p = r->arg;
        size_t i = r->index;
        if ((uintptr_t)r->arg == TOKEN_REQ) {
            fcm_token_answer(r);
        } else if (p && p->sending && i < p->npushes) {
            const pl_push *x = &p->pushes[i];
            pl_push_outcome o = pl_push_classify(x->platform, r->status, r->answer, r->answer_len);
            /* a token the service no longer takes, where the server mints
             * them: a fresh one, and the notification retried (audit U4) */
            if (o == PL_PUSH_FAILED && x->platform == PL_PUSH_FCM && r->status == 401 && W.fcm_key) {
                W.fcm_expires = 0;
                fcm_token_ask();
                o = PL_PUSH_RETRY;
            } else if (o == PL_PUSH_FAILED && x->platform == PL_PUSH_APNS && r->status == 403 && W.apns_key &&
                       memmem(r->answer, r->answer_len, "ExpiredProviderToken", 20)) {
                W.apns_jwt_at = -(int64_t)PL_JWT_RENEW_S * 1000;   /* renewed at the next pass */
                o = PL_PUSH_RETRY;
            }
            p->outcome[i] = (uint8_t)o;
            if (o == PL_PUSH_RETRY) p->failed_at[i] = pl_now_ms();
            switch (o) {
            case PL_PUSH_SENT: pl_count(&pl_m_push_sent, 1); break;
            case PL_PUSH_GONE: pl_count(&pl_m_push_gone, 1); break;
            case PL_PUSH_RETRY: pl_count(&pl_m_push_retry, 1); break;
            default: {
                char why[48];
                answer_reason(r, why);
                pl_count(&pl_m_push_failed, 1);
                pl_log(PL_LOG_WARN, 0, "push: refused",
                       "\"platform\":\"%s\",\"status\":%ld,\"device\":%lld,\"reason\":%s",
                       pl_push_platform_name(x->platform), r->status, (long long)x->device, why);
                break;
            }
            }
            pl_push_order_settled(W.order, x->device, x->outbox, o == PL_PUSH_RETRY, pl_mono_ms());
            pl_push_req *more = NULL;
            advance(p, x->device, &more);
            if (more) pl_push_sender_submit(W.sender, more);
            if (--p->pending == 0) {
                sending_remove(p);
                finish(p);
            }
        }
        free(r);
        r = next;
    }
}

static void sender_wake(void *arg) { uv_async_send(&W.wake); }

/* ---- 3. leave out who is connected, send the rest -------------------------- */

static void onlined(void *arg, const uint8_t *online, size_t n) {
    pass *p = arg;
    if (W.stopping) {
        end_pass(p, 0);
        return;
    }
    const int64_t *users = p->users;
    pl_push_req *list = NULL;
    int64_t now = pl_mono_ms();
    p->handed = now;
    for (size_t i = 0; i < p->npushes; i++) {   /* in row order, as order.h wants */
        const pl_push *x = &p->pushes[i];
        const int64_t *at = bsearch(&x->user, users, n, sizeof *users, cmp_i64);
        if (at && online[at - users]) {
            pl_count(&pl_m_push_online, 1);
            continue;
        }
        switch (pl_push_order_offer(W.order, x->device, x->outbox, p, i, now)) {
        case PL_PUSH_ORDER_DEFER:
            p->outcome[i] = PL_PUSH_DEFERRED;
            break;
        case PL_PUSH_ORDER_WAIT:
            p->pending++;
            break;
        default:
            p->pending++;
            if (!go(p, i, &list)) {
                advance(p, x->device, &list);   /* nothing waits behind it yet: the chain ends */
                p->pending--;
            }
            break;
        }
    }
    W.cur = NULL;                         /* hand-off: the next pass may start */
    W.npasses++;
    if (p->pending) {
        sending_add(p);
        pl_push_sender_submit(W.sender, list);
    } else {
        finish(p);
    }
    if ((p->full || W.again) && !W.stopping) start_pass();   /* a slow service holds only its pass */
}

/* ---- 2. who is to be told ------------------------------------------------- */

static void targeted(pl_job *j) {
    pass *p = (pass *)j;
    if (W.stopping || j->result) {
        if (j->result && !W.stopping)
            pl_log(PL_LOG_WARN, 0, "push: targets not read (sent again after the lease)", "\"rows\":%zu", p->nrows);
        end_pass(p, 0);
        return;
    }
    if (j->created > 0) {                            /* retries their recipients no longer get */
        pl_count(&pl_m_push_cancelled, (uint64_t)j->created);
        pl_log(PL_LOG_INFO, 0, "push: retries cancelled (recipient left, message deleted, or device gone)",
               "\"devices\":%d", j->created);
    }
    p->pushes = j->pushes;                           /* take them over */
    p->npushes = j->npushes;
    /* the next claim: more rows while they give few notifications (a
     * busy server whose users are mostly connected, or have no devices),
     * fewer when a pass grows large (large groups with many devices) */
    if (p->full && p->npushes < PL_PUSH_PASS_PUSHES / 2 && W.claim_rows < PL_PUSH_CLAIM_MAX) W.claim_rows *= 2;
    else if (p->npushes > PL_PUSH_PASS_PUSHES && W.claim_rows > PL_PUSH_CLAIM_MIN) W.claim_rows /= 2;
    j->pushes = NULL;
    j->npushes = 0;
    p->outcome = pl_calloc(p->npushes ? p->npushes : 1, 1);
    p->failed_at = pl_calloc(p->npushes ? p->npushes : 1, sizeof *p->failed_at);
    int64_t *users = p->users = pl_malloc((p->npushes ? p->npushes : 1) * sizeof *users);
    size_t n = 0;
    for (size_t i = 0; i < p->npushes; i++) users[n++] = p->pushes[i].user;
    qsort(users, n, sizeof *users, cmp_i64);
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (!k || users[k - 1] != users[i]) users[k++] = users[i];
    pl_job_release(j);
    pl_chat_users_online(users, k, onlined, p);
}

/* ---- 1. claim ---------------------------------------------------------------- */

static void claimed(pl_job *j) {
    pass *p = (pass *)j;
    if (!j->result && j->created > 0) pl_count(&pl_m_push_dropped, (uint64_t)j->created);
    if (!j->result && W.order) pl_push_order_forget(W.order, j->push_dropped, j->npush_dropped);
    if (W.stopping || j->result || j->nout == 0) {
        end_pass(p, 0);
        return;
    }
    p->rows = j->out_ids;                            /* take them over */
    p->nrows = j->nout;
    p->full = j->nout >= (size_t)p->job.limit;
    j->out_ids = NULL;
    j->nout = 0;
    pl_job_release(j);
    memset(j, 0, sizeof *j);
    j->op = PL_READ_PUSH_TARGETS;
    j->ids = p->rows;
    j->nids = p->nrows;
    j->after = W.cfg.large_group;
    j->done = targeted;
    pl_store_submit(W.store, j);
}

/* A fresh APNs provider token when the last is PL_JWT_RENEW_S old. */
static void renew_apns_token(void) {
    if (!W.apns_key || (W.apns_jwt && pl_mono_ms() - W.apns_jwt_at < (int64_t)PL_JWT_RENEW_S * 1000)) return;
    char *t = pl_jwt_es256(W.apns_key, W.cfg.apns_key_id, W.cfg.apns_team_id, pl_now_ms() / 1000);
    if (!t) {
        pl_log(PL_LOG_ERROR, 0, "push: cannot sign an APNs provider token", "%s", "");
        return;
    }
    free(W.apns_jwt);
    W.apns_jwt = t;
    W.apns_jwt_at = pl_mono_ms();
    W.cfg.apns_token = t;
}

static void start_pass(void) {
    if (W.stopping) return;
    fcm_token_ask();
    if (W.cur || W.npasses >= PL_PUSH_PASSES_MAX) {
        W.again = 1;                      /* when one ends */
        return;
    }
    W.again = 0;
    renew_apns_token();
    pass *p = pl_calloc(1, sizeof *p);
    W.cur = p;
    p->job.op = PL_JOB_PUSH_CLAIM;
    p->job.limit = W.claim_rows;
    p->job.expires = pl_now_ms() + PL_PUSH_LEASE_MS;
    p->job.done = claimed;
    pl_store_submit(W.store, &p->job);
}

static void on_tick(uv_timer_t *t) { start_pass(); }

static void on_soon(uv_timer_t *t) {
    W.soon_armed = 0;
    start_pass();
}

/* ---- the interface ----------------------------------------------------------- */

static const char *keep(int i, const char *s) {
    W.strings[i] = pl_strdup(s ? s : "");
    return W.strings[i];
}

/* --push-fcm-credentials: the service account's email, key and token URI;
 * the send URL from its project unless --push-fcm-url is set. */
static int fcm_credentials_load(char *err, size_t errlen) {
    json_error_t je;
    json_t *o = json_load_file(W.cfg.fcm_credentials, 0, &je);
    const char *email = json_string_value(json_object_get(o, "client_email"));
    const char *key = json_string_value(json_object_get(o, "private_key"));
    const char *uri = json_string_value(json_object_get(o, "token_uri"));
    const char *project = json_string_value(json_object_get(o, "project_id"));
    int rc = -1;
    if (!o)
        snprintf(err, errlen, "cannot read %s: %s", W.cfg.fcm_credentials, je.text);
    else if (!email || !key)
        snprintf(err, errlen, "%s has no client_email or private_key (a service account key file?)",
                 W.cfg.fcm_credentials);
    else if (uri && strncmp(uri, "https://", 8) != 0 && strncmp(uri, "http://", 7) != 0)
        snprintf(err, errlen, "%s: token_uri must be an http(s) URL", W.cfg.fcm_credentials);
    else if (!W.cfg.fcm_url[0] && !project)
        snprintf(err, errlen, "%s has no project_id: give --push-fcm-url", W.cfg.fcm_credentials);
    else if ((W.fcm_key = pl_jwt_rsa_parse(key, err, errlen)))
        rc = 0;
    if (rc == 0) {
        W.fcm_email = pl_strdup(email);
        W.fcm_token_uri = pl_strdup(uri ? uri : "https://oauth2.googleapis.com/token");
        if (!W.cfg.fcm_url[0]) {
            size_t n = strlen(project) + 64;
            free(W.strings[2]);
            W.strings[2] = pl_malloc(n);
            snprintf(W.strings[2], n, "https://fcm.googleapis.com/v1/projects/%s/messages:send", project);
            W.cfg.fcm_url = W.strings[2];
        }
    }
    json_decref(o);
    return rc;
}

int pl_push_configure(const pl_push_config *cfg, const char **setting, char *err, size_t errlen) {
    *setting = NULL;
    if (!pl_push_platform_enabled(cfg, PL_PUSH_WEBHOOK) && !pl_push_platform_enabled(cfg, PL_PUSH_FCM) &&
        !pl_push_platform_enabled(cfg, PL_PUSH_APNS) && !(cfg->fcm_credentials && cfg->fcm_credentials[0]))
        return 0;
    W.configured = 1;
    W.cfg.webhook = keep(0, cfg->webhook);
    W.cfg.webhook_secret = keep(1, cfg->webhook_secret);
    W.cfg.fcm_url = keep(2, cfg->fcm_url);
    W.cfg.fcm_token = keep(3, cfg->fcm_token);
    W.cfg.apns_url = keep(4, cfg->apns_url);
    W.cfg.apns_topic = keep(5, cfg->apns_topic);
    W.cfg.apns_token = keep(6, cfg->apns_token);
    W.cfg.previews = cfg->previews;
    W.cfg.large_group = cfg->large_group;
    W.cfg.apns_key_file = keep(7, cfg->apns_key_file);
    W.cfg.apns_key_id = keep(8, cfg->apns_key_id);
    W.cfg.apns_team_id = keep(9, cfg->apns_team_id);
    if (W.cfg.apns_key_file[0]) {
        if (!W.cfg.apns_key_id[0] || !W.cfg.apns_team_id[0]) {
            snprintf(err, errlen, "--push-apns-key needs --push-apns-key-id and --push-apns-team-id");
            return -1;
        }
        *setting = "push-apns-key";
        if (!(W.apns_key = pl_jwt_key_load(W.cfg.apns_key_file, err, errlen))) return -1;
        renew_apns_token();
        if (!W.apns_jwt) {
            snprintf(err, errlen, "cannot sign with %s", W.cfg.apns_key_file);
            return -1;
        }
        *setting = NULL;
    }
    W.cfg.fcm_credentials = keep(10, cfg->fcm_credentials);
    if (W.cfg.fcm_credentials[0] && fcm_credentials_load(err, errlen)) {
        *setting = "push-fcm-credentials";
        return -1;
    }
    return 0;
}

int pl_push_start(uv_loop_t *loop, pl_store *store, char *err, size_t errlen) {
    if (!W.configured) return 0;
    W.loop = loop;
    W.store = store;
    W.claim_rows = 64;
    W.order = pl_push_order_new();
    uv_async_init(loop, &W.wake, on_wake);     /* before the thread can wake it */
    W.sender = pl_push_sender_start(sender_wake, NULL);
    if (!W.sender) {
        snprintf(err, errlen, "cannot start the sender thread");
        return -1;
    }
    fcm_token_ask();
    uv_timer_init(loop, &W.tick);
    uv_timer_init(loop, &W.soon);
    uv_timer_start(&W.tick, on_tick, 200, PL_PUSH_TICK_MS);
    W.started = 1;
    pl_log(PL_LOG_INFO, 0, "push on", "\"webhook\":%s,\"fcm\":%s,\"apns\":%s,\"previews\":%s",
           W.cfg.webhook[0] ? "true" : "false", W.cfg.fcm_url[0] ? "true" : "false",
           W.cfg.apns_url[0] ? "true" : "false", W.cfg.previews ? "true" : "false");
    return 0;
}

int pl_push_enabled(void) { return W.started && !W.stopping; }

const pl_push_config *pl_push_config_get(void) { return &W.cfg; }

void pl_push_kick(void) {
    if (!W.started || W.stopping || W.soon_armed) return;
    W.soon_armed = 1;
    uv_timer_start(&W.soon, on_soon, 5, 0);
}

void pl_push_stop(void) {
    if (!W.started || W.stopping) return;
    W.stopping = 1;
    uv_timer_stop(&W.tick);
    uv_timer_stop(&W.soon);
    pl_push_sender_stop(W.sender);               /* joins: nothing wakes us after */
    W.sender = NULL;
    uv_close((uv_handle_t *)&W.tick, NULL);
    uv_close((uv_handle_t *)&W.soon, NULL);
    uv_close((uv_handle_t *)&W.wake, NULL);
    while (W.sending) {                   /* their requests were abandoned */
        pass *p = W.sending;
        sending_remove(p);
        end_pass(p, 0);
    }
    pl_push_order_free(&W.order);         /* after the passes: it points at none now */
    /* W.cfg's strings stay: REST handlers may still look until exit */
}
