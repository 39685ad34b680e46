/* wsrate.c — the per-workspace rate limit's half in chat/: which workspace
 * a conversation is in, and the embedded mode's workspace buckets.
 *
 * Owns: a cache from conversation to workspace (channels) or "none" (any
 * other conversation), the reader reads that fill it, coalesced per
 * conversation, and the in-process workspace limiter (cluster mode shares
 * the buckets through the bus: pl_bus_rate_take's ws).
 * Does not own: the user and conversation buckets, or admitting a send
 * (send.c chat_admit), which asks here first.
 *
 * How a send learns its workspace (docs/design.md "Workspaces and
 * channels", rate limits):
 *   1. The limit off (--rate-workspace-msgs 0): nothing is looked up.
 *   2. The node's stream of the conversation (chat_conv, deliver.c) knows
 *      its kind, and it is not a channel: none. This is every DM and group
 *      send over a WebSocket (the sender's session is subscribed), so the
 *      hot path costs one map lookup it already paid for, no read, no key.
 *   3. The cache: filled for channels by what the session reads already
 *      carry (pl_conv.workspace in the auth read, "workspace" in a channel's
 *      `created` event) and by 4. A conversation's kind and workspace never
 *      change, so an entry is never stale; the cache holds at most
 *      CACHE_MAX entries and is emptied when full (it refills by reads).
 *   4. Otherwise (a REST send to a conversation this node follows no stream
 *      of, a channel joined after the auth read): one PL_READ_CONV_WORKSPACE
 *      on a reader thread, never the writer; sends to the same conversation
 *      while it is in flight wait for the same read. A failed read admits on
 *      the user and conversation buckets alone (fail open, not cached).
 */
#include <stdint.h>
#include <stdlib.h>

#include "../core/alloc.h"
#include "../core/clock.h"
#include "chat_int.h"

#define CACHE_MAX  65536             /* conversations remembered (~1.5 MB at most) */
#define WS_NONE    ((void *)(intptr_t)-1)   /* cached: not a channel            */

typedef struct ws_wait {
    struct ws_wait  *next;
    int64_t          user;
    pl_chat_admit_cb cb;
    void            *arg;
} ws_wait;

typedef struct ws_lookup {
    pl_job   job;                     /* first: the store hands back &job        */
    ws_wait *waiters;                 /* in arrival order                         */
    ws_wait **tail;
} ws_lookup;

static struct {
    pl_map     cache;                 /* conv -> workspace as a pointer, or WS_NONE */
    pl_map     pending;               /* conv -> ws_lookup in flight             */
    pl_limiter sends;                 /* embedded mode's buckets, by workspace   */
    int64_t    swept_at;
} W;

void wsrate_init(void) {
    pl_map_init(&W.cache);
    pl_map_init(&W.pending);
    pl_limiter_init(&W.sends, C.cfg->rate_workspace_msgs, C.cfg->rate_workspace_burst);
    W.swept_at = 0;
}

void wsrate_free(void) {
    pl_map_release(&W.cache);
    pl_map_release(&W.pending);       /* lookups in flight: none after the store closed */
    pl_limiter_release(&W.sends);
}

void wsrate_learn(int64_t conv, int64_t ws) {
    if (!C.cfg->rate_workspace_msgs || conv <= 0) return;
    if (W.cache.len >= CACHE_MAX && !pl_map_get(&W.cache, conv)) {
        pl_map_release(&W.cache);
        pl_map_init(&W.cache);
    }
    pl_map_put(&W.cache, conv, ws > 0 ? (void *)(intptr_t)ws : WS_NONE);
}

int64_t wsrate_of(int64_t conv) {
    if (!C.cfg->rate_workspace_msgs) return 0;
    chat_conv *cv = conv_find(conv);
    if (cv && cv->kind && cv->kind != PL_CONV_CHANNEL) return 0;
    void *v = pl_map_get(&W.cache, conv);
    if (!v) return -1;
    return v == WS_NONE ? 0 : (int64_t)(intptr_t)v;
}

int64_t wsrate_take(int64_t ws, int64_t now_ms) {
    if (now_ms - W.swept_at >= 5000) {
        W.swept_at = now_ms;
        pl_limiter_sweep(&W.sends, now_ms);
    }
    return pl_limiter_take(&W.sends, ws, 1, now_ms);
}

/* After a read: admits as chat_admit_ws and answers cb now, unless the bus
 * answers it later. While stopping: admitted here; the callers refuse what
 * comes after shutdown themselves (the store is closing). */
static void admit_after_read(int64_t user, int64_t conv, int64_t ws, pl_chat_admit_cb cb, void *arg) {
    int64_t retry = 0;
    const char *scope = NULL;
    int r = C.stopping ? 0 : chat_admit_ws(user, conv, ws, &retry, &scope, cb, arg);
    if (r == 0) cb(arg, 0, NULL);
    else if (r == 1) cb(arg, retry, scope);
}

static void lookup_done(pl_job *j) {
    ws_lookup *l = (ws_lookup *)j;
    int64_t conv = j->conv, ws = 0;
    pl_map_del(&W.pending, conv);
    if (j->result == PL_STORE_OK) {
        ws = j->out_id;
        wsrate_learn(conv, ws);
    }
    for (ws_wait *w = l->waiters, *next; w; w = next) {
        next = w->next;
        admit_after_read(w->user, conv, ws, w->cb, w->arg);
        free(w);
    }
    pl_job_release(j);
    free(l);
}

typedef struct member_lookup {
    pl_job           job;             /* first: the store hands back &job        */
    pl_chat_admit_cb cb;
    void            *arg;
} member_lookup;

static void member_done(pl_job *j) {
    member_lookup *l = (member_lookup *)j;
    int64_t conv = j->conv, ws = 0;
    int member = 1;                           /* a failed read: as a member (fail open) */
    if (j->result == PL_STORE_OK) {
        ws = C.cfg->rate_workspace_msgs ? j->out_id : 0;
        member = j->created;
        wsrate_learn(conv, j->out_id);
    }
    admit_after_read(j->user, member ? conv : 0, member ? ws : 0, l->cb, l->arg);
    pl_job_release(j);
    free(l);
}

void wsrate_member_lookup(int64_t user, int64_t conv, pl_chat_admit_cb cb, void *arg) {
    member_lookup *l = pl_calloc(1, sizeof *l);
    l->cb = cb;
    l->arg = arg;
    l->job.op = PL_READ_CONV_WORKSPACE;
    l->job.conv = conv;
    l->job.user = user;
    l->job.done = member_done;
    pl_store_submit(C.store, &l->job);
}

void wsrate_lookup(int64_t user, int64_t conv, pl_chat_admit_cb cb, void *arg) {
    ws_wait *w = pl_calloc(1, sizeof *w);
    w->user = user;
    w->cb = cb;
    w->arg = arg;
    ws_lookup *l = pl_map_get(&W.pending, conv);
    if (l) {
        *l->tail = w;
        l->tail = &w->next;
        return;
    }
    l = pl_calloc(1, sizeof *l);
    l->waiters = w;
    l->tail = &w->next;
    l->job.op = PL_READ_CONV_WORKSPACE;
    l->job.conv = conv;
    l->job.done = lookup_done;
    pl_map_put(&W.pending, conv, l);
    pl_store_submit(C.store, &l->job);
}
