/* api_history.c — a conversation's history over REST, GET
 * /conversations/{id}/messages, and its long-poll (?wait=N, the HTTP
 * fallback for receiving, M2): parked requests, their timers, their
 * second read of the store (the re-probe), the re-read of their login,
 * and their answer when chat/ reports an event (pl_api_conv_changed), a
 * login is revoked (pl_api_login_revoked) or the server drains
 * (api_polls_shutdown).
 * Does not own: the history read itself (chat/ pl_chat_history), the
 * conversation watch (pl_chat_watch), the other conversation routes
 * (api_conv.c).
 */
#include "api_int.h"

#include <stdlib.h>
#include <string.h>

#include "../core/alloc.h"
#include "../core/clock.h"
#include "../core/map.h"
#include "../proto/proto.h"

/* ---- history and the long-poll (the HTTP fallback for receiving, M2) -------
 * GET .../messages?after=S&wait=N with nothing above S parks the request
 * until the conversation gets an event or N seconds (at most 30) pass, then
 * answers as a plain history request would. Parked requests hang off a map
 * conversation -> list, each with its own timer (they are few: clients on
 * WebSocket never park); while any is parked on a conversation, chat/
 * follows it (pl_chat_watch) and reports its events (pl_api_conv_changed).
 *
 * The probe, then the park. The request is parked after a read of the
 * store (the probe) found nothing above `after`; an event committed after
 * that read and published before the watch began is not reported to it,
 * and it would wait for the next event or its whole wait. So the watch
 * says the head the stream has published; above `after`, the poll, parked
 * and watching already, reads once more (the re-probe): something there
 * answers it; nothing (only events this user does not see) leaves it
 * parked, and an event published meanwhile answers it as any parked poll
 * is answered. Not answered at once on the head alone: the probe reads as
 * the user, and a client shown an empty page for events it cannot see
 * polls again with the same `after`, to the same empty page, forever. A
 * stream the watch creates knows no head yet; the heads check after its
 * bus subscription reports what went by (chat.h pl_chat_watch). */

#define POLL_WAIT_MAX 30

typedef struct poll_wait {
    uv_timer_t        timer;
    pl_http_ctx      *ctx;
    int64_t           conv, after, before;
    int               limit;
    int64_t           deadline;         /* mono ms: the end of its wait           */
    int               reading;          /* a read is out on job                   */
    int               finished;         /* answered; freed when the read is back  */
    pl_job            job;              /* its re-probe, or its login check
                                         * (cluster mode), one at a time          */
    struct poll_wait *next, *prev;
} poll_wait;

#define POLL_LOGIN_CHECK_MS 2000        /* cluster mode: a parked poll's login read
                                         * this often (its node may have no session
                                         * of the user, so no revocation reaches it) */

static pl_map polls;                   /* conv -> first poll_wait */
static int    polls_closing;           /* api_polls_shutdown: no login re-read */

static void history_answered(void *arg, int result, const char *json, size_t len) {
    api_respond_members(arg, result, json, len, "no such conversation");
}

static void history_answer(pl_http_ctx *ctx, int64_t conv, int64_t after, int64_t before, int lim) {
    int r = pl_chat_history(conv, ctx->user, after, before, lim, history_answered, ctx);
    if (r) api_store_error(ctx, r, "history unavailable");
}

static void poll_free(uv_handle_t *h) {
    poll_wait *w = h->data;
    pl_job_release(&w->job);
    free(w);
}

/* A parked request's login is read again before it is answered: a logout
 * or an account deletion while it waited ends it with 401, not with the
 * events sent after (audit L4). op: user = after, login = before, status
 * = limit. */
static void poll_login_read(pl_job *j) {
    api_op *op = j->data;
    pl_http_ctx *ctx = op->ctx;
    int64_t conv = op->conv, after = op->user, before = op->login;
    int lim = op->status;
    int r = j->result;
    if (r == PL_STORE_OK && (j->login_out.revoked || j->login_out.user != ctx->user)) r = PL_STORE_ENOTFOUND;
    api_op_free(op);
    if (r == PL_STORE_ENOTFOUND)
        pl_http_error(ctx, 401, "unauthorized", "bad, expired or revoked access token");
    else if (r) api_store_error(ctx, r, "");
    else history_answer(ctx, conv, after, before, lim);
}

static void poll_finish(poll_wait *w) {
    if (w->prev) w->prev->next = w->next;
    else if (w->next) pl_map_put(&polls, w->conv, w->next);
    else pl_map_del(&polls, w->conv);
    if (w->next) w->next->prev = w->prev;
    uv_timer_stop(&w->timer);
    pl_chat_watch(w->conv, 0, 0);
    if (A.store && polls_closing) {         /* a drain: answered at once, as after a timeout */
        history_answer(w->ctx, w->conv, w->after, w->before, w->limit);
    } else if (A.store) {
        api_op *op = api_op_new(w->ctx, NULL);
        op->conv = w->conv;
        op->user = w->after;
        op->login = w->before;
        op->status = w->limit;
        api_job_reset(op, PL_READ_LOGIN, poll_login_read);
        op->job.id = w->ctx->login;
        api_submit(op);
    } else {
        pl_http_error(w->ctx, 503, "unavailable", "shutting down");
    }
    w->finished = 1;
    if (!w->reading) uv_close((uv_handle_t *)&w->timer, poll_free);   /* else when the read is back */
}

/* A read on w->job (done, the callback) as w's user. */
static void poll_read(poll_wait *w, pl_job_op op, pl_job_cb done) {
    pl_job_release(&w->job);
    memset(&w->job, 0, sizeof w->job);
    w->job.op = op;
    w->job.data = w;
    w->job.done = done;
    w->reading = 1;
    if (op == PL_READ_LOGIN) {
        w->job.id = w->ctx->login;
    } else {
        w->job.conv = w->conv;
        w->job.user = w->ctx->user;
        w->job.after = w->after;
        w->job.limit = 1;
    }
    pl_store_submit(A.store, &w->job);
}

/* 1 when the read on w->job is back and w, answered meanwhile, is closed. */
static int poll_read_back(poll_wait *w) {
    w->reading = 0;
    if (!w->finished) return 0;
    uv_close((uv_handle_t *)&w->timer, poll_free);
    return 1;
}

/* The re-probe (the note above): answered if it found something (or failed:
 * the answer's own read says why), else parked on. */
static void poll_reprobed(pl_job *j) {
    poll_wait *w = j->data;
    if (poll_read_back(w)) return;
    if (j->result != PL_STORE_OK || j->nevents) poll_finish(w);
}

/* Cluster mode's check of a parked poll's login (POLL_LOGIN_CHECK_MS). */
static void poll_login_checked(pl_job *j) {
    poll_wait *w = j->data;
    if (poll_read_back(w)) return;
    if (j->result == PL_STORE_ENOTFOUND ||
        (j->result == PL_STORE_OK && (j->login_out.revoked || j->login_out.user != w->ctx->user)))
        poll_finish(w);                     /* read once more there: 401 */
}

static void poll_timeout(uv_timer_t *t) {
    poll_wait *w = t->data;
    int64_t left = w->deadline - pl_mono_ms();
    if (left <= 0 || !A.cfg->redis[0]) {
        poll_finish(w);
        return;
    }
    uv_timer_start(&w->timer, poll_timeout, (uint64_t)(left < POLL_LOGIN_CHECK_MS ? left : POLL_LOGIN_CHECK_MS), 0);
    if (w->reading || !A.store) return;      /* a re-probe out: checked at the next tick */
    poll_read(w, PL_READ_LOGIN, poll_login_checked);
}

void pl_api_conv_changed(int64_t conv) {
    poll_wait *w;
    while ((w = pl_map_get(&polls, conv)) != NULL) poll_finish(w);
}

void pl_api_login_revoked(int64_t user, int64_t login) {
    size_t n = 0, cap = 0;
    poll_wait **hit = NULL;
    for (size_t i = 0; polls.slots && i < polls.cap; i++) {
        if (!polls.slots[i].key) continue;
        for (poll_wait *w = polls.slots[i].val; w; w = w->next)
            if (w->ctx->user == user && (!login || w->ctx->login == login)) {
                if (n == cap) hit = pl_realloc(hit, (cap = cap ? cap * 2 : 8) * sizeof *hit);
                hit[n++] = w;
            }
    }
    for (size_t i = 0; i < n; i++) poll_finish(hit[i]);     /* its login read again: 401 */
    free(hit);
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
    w->deadline = pl_mono_ms() + wait * 1000;
    uint64_t first = (uint64_t)wait * 1000;
    if (A.cfg->redis[0] && first > POLL_LOGIN_CHECK_MS) first = POLL_LOGIN_CHECK_MS;
    uv_timer_start(&w->timer, poll_timeout, first, 0);
    if (pl_chat_watch(conv, after, 1) > after) poll_read(w, PL_READ_EVENTS, poll_reprobed);
}

void api_polls_shutdown(void) {
    polls_closing = 1;
    for (size_t i = 0; i < polls.cap; i++)
        while (polls.slots && polls.slots[i].key) pl_api_conv_changed(polls.slots[i].key);
    pl_map_release(&polls);
}

static void poll_probe_read(pl_job *j) {
    api_op *op = j->data;
    pl_http_ctx *ctx = op->ctx;
    int64_t conv = j->conv, after = j->after, wait = op->user;
    int lim = op->status;
    int park = j->result == PL_STORE_OK && j->nevents == 0 && A.store;
    int result = j->result;
    api_op_free(op);
    if (park) poll_park(ctx, conv, after, 0, lim, wait);
    else if (result && result != PL_STORE_OK) api_store_error(ctx, result, "no such conversation");
    else history_answer(ctx, conv, after, 0, lim);
}

void h_history(pl_http_ctx *ctx, int64_t conv) {
    int64_t after, before, limit, wait;
    int lim;
    const char *bad = "after";
    int digits = 1;                    /* the value is not written as an integer at all */
    if (api_query_int(ctx, "after", &after) || (bad = "before", api_query_int(ctx, "before", &before)) ||
        (bad = "limit", api_query_int(ctx, "limit", &limit)) || (bad = "wait", api_query_int(ctx, "wait", &wait)) ||
        (digits = 0, wait > POLL_WAIT_MAX) || pl_proto_paging(after, before, limit, &lim, &bad)) {
        char msg[96];
        if (digits) snprintf(msg, sizeof msg, "\"%s\" must be an integer 0 to 2^53 - 1 (digits, no sign or leading zero)", bad);
        else snprintf(msg, sizeof msg, "\"%s\" is out of range", bad);
        pl_http_error(ctx, 400, "bad_request", msg);
        return;
    }
    if (wait > 0 && before == 0) {
        /* park only a member's request with nothing to return yet */
        api_op *op = api_op_new(ctx, NULL);
        api_job_reset(op, PL_READ_EVENTS, poll_probe_read);
        op->job.conv = conv;
        op->job.user = ctx->user;
        op->job.after = after;
        op->job.limit = 1;
        op->user = wait;
        op->status = lim;
        api_submit(op);
        return;
    }
    history_answer(ctx, conv, after, before, lim);
}
