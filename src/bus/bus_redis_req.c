/* bus_redis_req.c — what the Redis bus keeps in Redis: shared rate buckets
 * and presence views (design note in bus_redis.c), the Lua scripts they
 * run, and the requests (rate_take, presence_get) answered from the loop. */
#include "bus_redis_int.h"

#include <stdio.h>

#include "../core/clock.h"
#include "../core/log.h"
#include "../core/metrics.h"
#include "bus_codec.h"

static const char RATE_LUA[] =
    "if redis.replicate_commands then redis.replicate_commands() end\n"
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "local function level(key, rate)\n"
    "  local v = redis.call('GET', key)\n"
    "  if not v then return 0 end\n"
    "  local d, last = string.match(v, '^([^:]+):([^:]+)$')\n"
    "  d, last = tonumber(d), tonumber(last)\n"
    "  if not d or not last then return 0 end\n"
    "  local e = now - last\n"
    "  if e < 0 then e = 0 end\n"
    "  d = d - e * rate / 1000\n"
    "  if d < 0 then d = 0 end\n"
    "  return d\n"
    "end\n"
    "local function store(key, d, rate)\n"
    "  redis.call('SET', key, string.format('%.6f:%d', d, now), 'PX', math.floor(d * 1000 / rate) + 1)\n"
    "end\n"
    "local ur, ub = tonumber(ARGV[1]), tonumber(ARGV[2])\n"
    "local cr, cb = tonumber(ARGV[3]), tonumber(ARGV[4])\n"
    "local wr, wb = tonumber(ARGV[5] or '0'), tonumber(ARGV[6] or '1')\n"
    "if not KEYS[3] then wr = 0 end\n"
    "local ud, cd, wd = 0, 0, 0\n"
    "if ur > 0 then\n"
    "  ud = level(KEYS[1], ur) + 1\n"
    "  if ud > ub then return {1, math.floor((ud - ub) * 1000 / ur) + 1} end\n"
    "end\n"
    "if cr > 0 then\n"
    "  cd = level(KEYS[2], cr) + 1\n"
    "  if cd > cb then return {2, math.floor((cd - cb) * 1000 / cr) + 1} end\n"
    "end\n"
    "if wr > 0 then\n"
    "  wd = level(KEYS[3], wr) + 1\n"
    "  if wd > wb then return {3, math.floor((wd - wb) * 1000 / wr) + 1} end\n"
    "end\n"
    "if ur > 0 then store(KEYS[1], ud, ur) end\n"
    "if cr > 0 then store(KEYS[2], cd, cr) end\n"
    "if wr > 0 then store(KEYS[3], wd, wr) end\n"
    "return {0, 0}\n";

static const char PRES_LUA[] =
    "redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])\n"
    "local ttl = tonumber(ARGV[3])\n"
    "if redis.call('PTTL', KEYS[1]) < ttl then redis.call('PEXPIRE', KEYS[1], ttl) end\n"
    "return 1\n";

static void load_cb(redisAsyncContext *ac, void *r, void *priv) {
    script *s = priv;
    pl_bus_redis *b = s->b;
    if (b->closing) return;
    s->loading = 0;
    redisReply *reply = pl_bus__redis_cmd_reply(b, ac, r);
    if (reply && reply->type == REDIS_REPLY_STRING && reply->len == 40)
        memcpy(s->sha, reply->str, 41);
    else if (reply)
        pl_bus__redis_log_error(b, "SCRIPT LOAD", reply);
}

static void script_load(pl_bus_redis *b, script *s) {
    s->sha[0] = '\0';
    if (s->loading) return;
    const char *argv[] = {"SCRIPT", "LOAD", s->src};
    size_t lens[] = {6, 4, strlen(s->src)};
    if (pl_bus__redis_cmd_send(b, load_cb, s, 3, argv, lens) == 0) s->loading = 1;
}

void pl_bus__redis_scripts_init(pl_bus_redis *b) {
    b->scripts[S_RATE].src = RATE_LUA;
    b->scripts[S_PRES].src = PRES_LUA;
    for (int i = 0; i < S_COUNT; i++) b->scripts[i].b = b;
}

/* Redis may have restarted (empty script cache): forget the SHAs, reload. */
void pl_bus__redis_scripts_load(pl_bus_redis *b) {
    for (int i = 0; i < S_COUNT; i++) {
        b->scripts[i].loading = 0;
        script_load(b, &b->scripts[i]);
    }
}

static int is_noscript(const redisReply *r) {
    return r && r->type == REDIS_REPLY_ERROR && r->str && strncmp(r->str, "NOSCRIPT", 8) == 0;
}

/* EVALSHA when the SHA is known, else EVAL; args[0..nkeys) are keys. */
static int script_call(pl_bus_redis *b, int which, redisCallbackFn *fn, void *priv, int nkeys,
                       const char **args, const size_t *lens, int nargs) {
    script *s = &b->scripts[which];
    if (nargs > 9) return -1;
    const char *argv[12];
    size_t alen[12];
    char nk[4];
    snprintf(nk, sizeof nk, "%d", nkeys);
    if (s->sha[0]) argv[0] = "EVALSHA", alen[0] = 7, argv[1] = s->sha, alen[1] = 40;
    else argv[0] = "EVAL", alen[0] = 4, argv[1] = s->src, alen[1] = strlen(s->src);
    argv[2] = nk, alen[2] = strlen(nk);
    for (int i = 0; i < nargs; i++) argv[3 + i] = args[i], alen[3 + i] = lens[i];
    return pl_bus__redis_cmd_send(b, fn, priv, 3 + nargs, argv, alen);
}

static void pres_cb(redisAsyncContext *ac, void *r, void *priv) {
    pl_bus_redis *b = priv;
    if (b->closing) return;
    redisReply *reply = pl_bus__redis_cmd_reply(b, ac, r);
    if (is_noscript(reply)) script_load(b, &b->scripts[S_PRES]);   /* this one is lost: best effort */
    else if (reply && reply->type == REDIS_REPLY_ERROR) pl_bus__redis_log_error(b, "presence store", reply);
}

void pl_bus__redis_presence(pl_bus *pb, const pl_bus_presence *p) {
    pl_bus_redis *b = B(pb);
    if (b->base.h.presence) b->base.h.presence(b->base.h.ud, p);
    if (b->closing || !pl_rconn_is_up(&b->cmd)) return;
    char key[NAME_MAX_LEN], field[16], val[80], ttl[24];
    int64_t ms = p->expires + PRESENCE_MARGIN_MS - pl_now_ms();
    if (ms < 1000) ms = 1000;
    size_t klen = pl_bus__redis_name(b, key, "pr:", p->user);
    int flen = snprintf(field, sizeof field, "%d", b->base.node);
    int vlen = snprintf(val, sizeof val, "%d|%lld|%lld", p->status, (long long)p->last_active,
                        (long long)p->expires);
    int tlen = snprintf(ttl, sizeof ttl, "%lld", (long long)ms);
    const char *args[] = {key, field, val, ttl};
    size_t lens[] = {klen, (size_t)flen, (size_t)vlen, (size_t)tlen};
    script_call(b, S_PRES, pres_cb, b, 1, args, lens, 4);
    pl_bus__redis_enc_reset(b);
    pl_bus__enc_presence(&b->enc, b->base.node, p);
    pub_ent e = {0, 0, 0, 0, PUB_EPHEMERAL};
    pl_bus__redis_pub_send(b, "p", -1, &e);
}

static op *op_new(pl_bus_redis *b, int type, void *arg) {
    op *o = pl_calloc(1, sizeof *o);
    o->b = b;
    o->type = type;
    o->arg = arg;
    o->t0 = pl_mono_ms();
    o->prev = b->live_tail;
    if (b->live_tail) b->live_tail->next = o;
    else b->live_head = o;
    b->live_tail = o;
    return o;
}

static void op_free(op *o) {
    free(o->users);
    free(o->views);
    free(o);
}

/* The result is final: queue the answer for the idle callback. */
static void op_finish(pl_bus_redis *b, op *o) {
    if (o->complete) return;
    o->complete = 1;
    o->qnext = NULL;
    if (b->done_tail) b->done_tail->qnext = o;
    else b->done_head = o;
    b->done_tail = o;
    if (!b->stopping) uv_idle_start(&b->idle, pl_bus__redis_idle_cb);
}

static void op_answer(pl_bus_redis *b, op *o) {
    if (o->prev) o->prev->next = o->next;
    else b->live_head = o->next;
    if (o->next) o->next->prev = o->prev;
    else b->live_tail = o->prev;
    o->answered = 1;
    if (o->type == OP_RATE) {
        if (o->rcb) o->rcb(o->arg, o->wait, o->scope);
    } else if (o->pcb) {
        o->pcb(o->arg, o->views, o->nviews);
    }
    if (!o->refs) op_free(o);
}

void pl_bus__redis_idle_cb(uv_idle_t *h) {
    pl_bus_redis *b = h->data;
    /* only what is queued now: answers may queue more (for the next turn);
     * a close inside an answer answers the rest itself */
    op *q = b->done_head;
    b->done_head = b->done_tail = NULL;
    while (q && !b->stopping) {
        op *o = q;
        q = o->qnext;
        op_answer(b, o);
    }
    if (!b->done_head && !b->stopping) uv_idle_stop(&b->idle);
}

/* a hiredis reply for an op arrived (or was abandoned); 1 = ignore it */
static int op_reply_gone(op *o) {
    o->refs--;
    if (o->b->closing || o->complete) {
        if (o->answered && !o->refs) op_free(o);
        return 1;
    }
    return 0;
}

static void rate_cb(redisAsyncContext *ac, void *r, void *priv);

/* Keys rl:u:<user>, rl:c:<conv> and, for a channel with a workspace limit,
 * rl:w:<workspace>; a DM or group sends two keys and four arguments, as
 * before workspaces had limits. */
static int rate_send(pl_bus_redis *b, op *o) {
    char uk[NAME_MAX_LEN], ck[NAME_MAX_LEN], wk[NAME_MAX_LEN], a[6][32];
    int ws = o->ws > 0 && b->wrate > 0;
    const char *args[9];
    size_t lens[9];
    int n = 0;
    args[n] = uk, lens[n++] = pl_bus__redis_name(b, uk, "rl:u:", o->user);
    args[n] = ck, lens[n++] = pl_bus__redis_name(b, ck, "rl:c:", o->conv);
    if (ws) args[n] = wk, lens[n++] = pl_bus__redis_name(b, wk, "rl:w:", o->ws);
    int nkeys = n;
    double v[6] = {b->urate, b->uburst, o->conv > 0 ? b->crate : 0, b->cburst, b->wrate, b->wburst};
    for (int i = 0; i < (ws ? 6 : 4); i++, n++) {
        args[n] = a[i];
        lens[n] = (size_t)snprintf(a[i], sizeof a[i], "%.17g", v[i]);
    }
    if (script_call(b, S_RATE, rate_cb, o, nkeys, args, lens, n)) return -1;
    o->refs++;
    return 0;
}

static void rate_cb(redisAsyncContext *ac, void *r, void *priv) {
    op *o = priv;
    pl_bus_redis *b = o->b;
    if (op_reply_gone(o)) return;
    redisReply *reply = pl_bus__redis_cmd_reply(b, ac, r);
    if (is_noscript(reply)) {                    /* script cache flushed: EVAL this one */
        script_load(b, &b->scripts[S_RATE]);     /* forgets the SHA: rate_send EVALs */
        if (rate_send(b, o) == 0) return;
        reply = NULL;
    }
    if (reply && reply->type == REDIS_REPLY_ARRAY && reply->elements == 2 &&
        reply->element[0]->type == REDIS_REPLY_INTEGER && reply->element[1]->type == REDIS_REPLY_INTEGER) {
        long long code = reply->element[0]->integer, wait = reply->element[1]->integer;
        if (code >= 1 && code <= 3) {
            o->wait = wait > 0 ? wait : 1;
            o->scope = code == 1 ? "user" : code == 2 ? "conversation" : "workspace";
        }
    } else if (reply) {
        pl_bus__redis_log_error(b, "rate script", reply);  /* fail open */
    }
    op_finish(b, o);
}

void pl_bus__redis_rate(pl_bus *pb, int64_t user, int64_t conv, int64_t ws, pl_bus_rate_cb cb, void *arg) {
    pl_bus_redis *b = B(pb);
    op *o = op_new(b, OP_RATE, arg);
    o->rcb = cb;
    o->user = user;
    o->conv = conv;
    o->ws = ws;
    if (b->stopping || (b->urate <= 0 && b->crate <= 0 && (ws <= 0 || b->wrate <= 0)) || rate_send(b, o))
        op_finish(b, o);
}

/* "status|last_active|expires" */
static int parse_view(const char *s, pl_bus_presence *v) {
    char *end;
    long long st = strtoll(s, &end, 10);
    if (end == s || *end != '|' || st < 0 || st > 2) return -1;
    s = end + 1;
    long long la = strtoll(s, &end, 10);
    if (end == s || *end != '|') return -1;
    s = end + 1;
    long long ex = strtoll(s, &end, 10);
    if (end == s || *end) return -1;
    v->status = (int)st;
    v->last_active = la;
    v->expires = ex;
    return 0;
}

static void pget_cb(redisAsyncContext *ac, void *r, void *priv) {
    op *o = priv;
    pl_bus_redis *b = o->b;
    size_t idx = o->next_user++;
    if (op_reply_gone(o)) return;
    redisReply *reply = pl_bus__redis_cmd_reply(b, ac, r);
    if (reply && reply->type == REDIS_REPLY_ARRAY && idx < o->nusers) {
        int64_t now = pl_now_ms();
        for (size_t i = 0; i + 1 < reply->elements; i += 2) {
            redisReply *f = reply->element[i], *v = reply->element[i + 1];
            if (f->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING) continue;
            pl_bus_presence view = {0};
            char *end;
            long node = strtol(f->str, &end, 10);
            if (end == f->str || *end || node < 0 || node > INT32_MAX) continue;
            if (parse_view(v->str, &view) || view.expires < now) continue;
            view.user = o->users[idx];
            view.node = (int)node;
            if (o->nviews == o->cap) {
                o->cap = o->cap ? o->cap * 2 : 8;
                o->views = pl_realloc(o->views, o->cap * sizeof *o->views);
            }
            o->views[o->nviews++] = view;
        }
    } else if (reply) {
        pl_bus__redis_log_error(b, "HGETALL", reply);
    }
    if (!o->refs) op_finish(b, o);
}

void pl_bus__redis_presence_get(pl_bus *pb, const int64_t *users, size_t n, pl_bus_presence_cb cb, void *arg) {
    pl_bus_redis *b = B(pb);
    op *o = op_new(b, OP_PGET, arg);
    o->pcb = cb;
    if (!b->stopping && n && pl_rconn_is_up(&b->cmd)) {
        o->users = pl_malloc(n * sizeof *o->users);
        memcpy(o->users, users, n * sizeof *o->users);
        o->nusers = n;
        for (size_t i = 0; i < n; i++) {
            char key[NAME_MAX_LEN];
            const char *argv[] = {"HGETALL", key};
            size_t lens[] = {7, pl_bus__redis_name(b, key, "pr:", users[i])};
            if (pl_bus__redis_cmd_send(b, pget_cb, o, 2, argv, lens)) break;
            o->refs++;
        }
    }
    if (!o->refs) op_finish(b, o);
}

void pl_bus__redis_req_tick(pl_bus_redis *b, int64_t now) {
    for (op *o = b->live_head; o; o = o->next) {
        if (o->complete) continue;
        if (now - o->t0 >= (o->type == OP_RATE ? RATE_TIMEOUT_MS : PGET_TIMEOUT_MS)) op_finish(b, o);
    }
}

/* rate_answer_now(): the rate takes whose answers are queued for the idle
 * callback, then those still waiting on Redis, answered now in the order
 * they came (admitted unless Redis had refused them). Presence requests
 * are left to the idle callback. A waiting one stays allocated until its
 * hiredis reply comes back (NULL at close), as in close(). */
void pl_bus__redis_rate_answer_now(pl_bus *pb) {
    pl_bus_redis *b = B(pb);
    op *q = b->done_head, *keep = NULL, *keep_tail = NULL;
    b->done_head = b->done_tail = NULL;
    while (q) {                                   /* queued answers: rates now */
        op *o = q;
        q = o->qnext;
        if (o->type == OP_RATE) {
            op_answer(b, o);
            continue;
        }
        o->qnext = NULL;
        if (keep_tail) keep_tail->qnext = o;
        else keep = o;
        keep_tail = o;
    }
    if (keep_tail) {                              /* before any queued meanwhile */
        keep_tail->qnext = b->done_head;
        if (!b->done_head) b->done_tail = keep_tail;
        b->done_head = keep;
    }
    op *stop = b->live_tail;                      /* not those the answers add */
    for (op *o = b->live_head, *next; o; o = next) {
        int last = o == stop;
        next = o->next;
        if (o->type == OP_RATE && !o->complete) {
            o->complete = 1;
            op_answer(b, o);
        }
        if (last) break;
    }
}

/* close(): every unanswered request is answered now, before close returns
 * (rate: admitted; presence: what arrived). Answers may add requests
 * (b->stopping: complete at once), answered the same way. Requests still
 * awaiting hiredis replies stay allocated until those come back (NULL). */
void pl_bus__redis_req_close(pl_bus_redis *b) {
    while (b->live_head) {
        op *o = b->live_head;
        o->complete = 1;
        op_answer(b, o);
    }
    b->done_head = b->done_tail = NULL;
}
