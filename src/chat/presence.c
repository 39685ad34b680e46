/* presence.c — online/away/offline and last seen (M11), merged over every
 * device on every node, announced coalesced to the sessions of users who
 * share a conversation.
 *
 * Owns: the presence table. Each node publishes, through the bus, its own
 * view of each of its users (merged over that node's sessions: online if
 * any session is online and heartbeating within --presence-timeout, away if
 * all are away), when it changes and every VIEW_REFRESH_MS (or a quarter
 * of --presence-timeout) while not offline, lasting --presence-timeout.
 * Every node keeps the fresh views of the users it has someone to tell
 * about and computes the user's status as the best of them, so devices on different nodes merge, and a node that dies stops
 * counting when its views expire (about --presence-timeout seconds).
 *
 * Announcements: at most once per --presence-coalesce ms per user, with the
 * state at that time, and only once a change has lasted that long; a state
 * that returns to what was last announced is not announced at all (a
 * flapping connection is invisible). Streams with
 * more than PRESENCE_FANOUT_MAX live sessions get none (clients query).
 * Last seen is written to the store when a user's last local session goes
 * offline, when a user comes online here, every LAST_SEEN_EVERY_MS while
 * online, by a node that announces offline from another node's views, and
 * at shutdown (so a crash leaves it at most LAST_SEEN_EVERY_MS early).
 *
 * The tick (every 250 ms; a quarter of --presence-coalesce when that is
 * under a second, at least 50 ms) does not walk the whole table: it handles the
 * "hot" entries (something happened to them: a session came or went, a
 * status was set, a view arrived from the bus, or an announcement waits
 * for its coalesce window) and a slice of the table, so that every entry
 * is still looked at once per sweep period (presence_timeout / 8, between
 * 250 ms and 2 s) for what only time changes: heartbeat timeouts, view
 * refreshes and expiry, forgetting the dead. Walking all of 19,000 users
 * four times a second was 7.6 % of the event loop's samples in a storm
 * run, and would not fit in the tick at a million.
 */
#include <stdlib.h>
#include <string.h>

#include "../core/alloc.h"
#include "../core/clock.h"
#include "../core/log.h"
#include "../core/metrics.h"
#include "../ws/ws.h"
#include "../ws/wsconn.h"
#include "chat_int.h"

#define VIEW_REFRESH_MS 20000         /* a node re-publishes its views this often,
                                       * or every quarter of --presence-timeout */
#define OFFLINE_KEEP_MS 120000        /* an offline view is kept this long       */
#define LAST_SEEN_EVERY_MS 300000     /* an online user's last seen is stored this
                                       * often (at a view refresh), so a crash
                                       * loses at most this much of it           */
#define PRESENCE_STALL_MS 3000       /* a gap between ticks that makes the other
                                       * nodes take this one for gone (the bus's
                                       * NODE_GONE_MS): views published again  */
#define PRESENCE_RATE   1.0           /* presence changes per user: tokens/s, burst */
#define PRESENCE_BURST  5.0

enum { ST_OFFLINE = 0, ST_AWAY = 1, ST_ONLINE = 2, ST_UNKNOWN = 3 };   /* UNKNOWN: `sent` only */
static const char *const status_names[] = {"offline", "away", "online"};

typedef struct pview {
    int      node;
    uint8_t  status;
    int64_t  last_active;         /* wall ms                                  */
    int64_t  expires;             /* wall ms                                  */
} pview;

struct presence {
    int64_t  user;
    pview    view0;               /* the first node's view (usually the only one) */
    pview   *more;                /* views of further nodes                   */
    uint32_t nviews, capmore;     /* nviews counts view0 too                  */
    int64_t *convs;               /* the user's conversations this node follows: from its
                                   * sessions here (kept after they are gone, so that going
                                   * offline reaches the same people) or from other nodes' views */
    uint32_t nconvs;
    /* the bytes share nconvs's word: one entry per user online, so the
     * struct stays within 96 bytes (the assertion below) */
    uint8_t  local_pub;           /* status of this node's last published view */
    uint8_t  dirty : 1;           /* publish at the next tick                 */
    uint8_t  hot : 1;             /* on the hot list (the next tick looks)     */
    uint8_t  since_event : 1;     /* changed_since is an event's time (touch), not
                                   * yet seen by a tick                       */
    uint8_t  unsure : 1;          /* an offline view published while the bus was
                                   * down: kept, and published again at the
                                   * resync (presence_resync)                 */
    uint8_t  sent;                /* status last announced                    */
    int64_t  pub_at;              /* mono ms of that publish (local_pub)      */
    int64_t  local_active;        /* wall ms: last heartbeat or disconnect here */
    int64_t  sent_at;             /* mono ms (sent)                           */
    int64_t  changed_since;       /* mono ms the merged status first read other
                                   * than `sent` (the event that made it so,
                                   * or the tick that saw it); 0 while they agree */
};
_Static_assert(sizeof(presence) <= 96, "presence must fit a 96-byte allocator block");

/* ---- rate limits on ephemeral signals (shared with typing.c) ------------- */

/* Takes a token from one of the user's buckets; on refusal tells the
 * session (at most once a second; with the message's req) and returns -1.
 * Nothing else is affected. */
int chat_limit_signal(session *s, json_t *req, pl_bucket *b, double rate, double burst) {
    chat_user *u = chat_user_get(s->user);
    int64_t now = pl_mono_ms();
    int64_t wait = pl_bucket_take(b, rate, burst, 1, now);
    if (!wait) return 0;
    if (u && now - u->limited_at >= 1000) {
        u->limited_at = now;
        pl_sbuf e;
        pl_sbuf_init(&e);
        pl_sbuf_adds(&e, "{\"type\":\"error\"");
        pl_proto_add_req(&e, req);
        pl_sbuf_printf(&e, ",\"code\":\"rate_limited\",\"message\":\"too many signals\",\"retry_after\":%.3f}",
                       (double)wait / 1000.0);
        chat_send_text(s->conn, e.p, e.len, 1);
        pl_sbuf_release(&e);
    }
    pl_count(&pl_m_rate_limited_signal, 1);
    return -1;
}

/* ---- the table ------------------------------------------------------------- */

static int64_t *local_convs(int64_t user, size_t *n);
static void keep_convs(presence *p, const int64_t *convs, size_t n);

/* The hot list: users the next tick must look at, each once (p->hot). */
static struct {
    int64_t *ids;
    size_t   n, cap;
    size_t   sweep_at;            /* the slice's next slot                    */
    int64_t  swept;               /* mono ms of the last slice                */
    int64_t  ticked;              /* mono ms of the last tick                 */
    uint8_t  as_changes;          /* the next tick publishes views as changes  */
    uint8_t  held;                /* this tick came late: it announces nothing */
    int64_t  wall_off;            /* wall ms less mono ms (wall_of)           */
} H;

static void mark_hot(presence *p) {
    if (p->hot) return;
    p->hot = 1;
    if (H.n == H.cap) {
        H.cap = H.cap ? H.cap * 2 : 64;
        H.ids = pl_realloc(H.ids, H.cap * sizeof *H.ids);
    }
    H.ids[H.n++] = p->user;
}

/* The wall time of a monotonic one (a session's last message). The offset
 * between the clocks is kept while it moves by no more than a millisecond
 * (reading the two clocks one after the other): the frames and
 * presence_query convert the same heartbeat to the same last_seen (audit
 * O9: a frame's was sometimes 1 ms below the query's). */
static int64_t wall_of(int64_t mono) {
    int64_t off = pl_now_ms() - pl_mono_ms();
    if (!H.wall_off || off - H.wall_off > 1 || H.wall_off - off > 1) H.wall_off = off;
    return mono + H.wall_off;
}

/* Something happened to p that may change its merged status (a session came
 * or went, a status was set, a view arrived): the next tick looks, and a
 * change it finds started now, not at the tick. A change is announced once
 * it has lasted the coalesce window from when it happened (audit O9: from
 * the tick that saw it, with 250 ms ticks, a 300 ms window was 500–750 ms,
 * and an `away` of 0.6 s was mostly never announced). */
static void touch(presence *p) {
    if (!p->changed_since) {
        p->changed_since = pl_mono_ms();
        p->since_event = 1;
    }
    mark_hot(p);
}

/* The tick's period: a quarter of the coalesce window, between 50 and
 * TICK_MS (250) ms, so that a change is announced within a quarter window
 * of having lasted one; TICK_MS when coalescing is off. */
int64_t presence_tick_ms(void) {
    int64_t q = (int64_t)C.cfg->presence_coalesce / 4;
    if (q <= 0 || q > TICK_MS) return TICK_MS;
    return q < 50 ? 50 : q;
}

void presence_init(void) {
    pl_map_init(&C.presence);
    memset(&H, 0, sizeof H);
}

static presence *presence_get(int64_t user) {
    presence *p = pl_map_get(&C.presence, user);
    if (!p) {
        p = pl_calloc(1, sizeof *p);
        p->user = user;
        p->sent = ST_OFFLINE;
        pl_map_put(&C.presence, user, p);
    }
    return p;
}

static void presence_free(presence *p) {
    free(p->more);
    free(p->convs);
    free(p);
}

static int tick_one(presence *p, int64_t now, int64_t wall);
static void publish_local(presence *p, int64_t now, int has_local);

/* In cluster mode a change of this node's view is published at once (the
 * entry is hot: the tick announces it as usual): the other nodes count its
 * window from when it arrives, so waiting for this node's next tick made
 * a change there up to a tick (250 ms) later than here (audit O9). A flap
 * is published twice, and the other nodes' windows swallow it as this
 * node's does. Not a session's arrival: its view names the conversations
 * of its subscriptions, made after (auth_ready). */
static void publish_at_once(presence *p) {
    if (C.bus && !C.stopping) publish_local(p, pl_mono_ms(), chat_user_get(p->user) != NULL);
}

void presence_session_added(session *s) {
    presence *p = presence_get(s->user);
    p->local_active = pl_now_ms();
    p->dirty = 1;
    touch(p);          /* published at the tick: its subscriptions come later */
}

/* The bus may have lost messages, or Redis its stored views (a restart),
 * or this node was stalled (presence_tick): every local view is published
 * again at the next tick, as a change, not a refresh. The other nodes may
 * have forgotten these users meanwhile (their views expired, and they were
 * announced offline): a refresh would be taken there for state the
 * sessions already know, and the users would stay offline for everyone
 * (audit A2); a change is announced. Where nothing was forgotten the view
 * is what the node holds already, and nothing is announced. */
void presence_resync(void) {
    H.as_changes = 1;
    for (size_t i = 0; i < C.presence.cap; i++) {
        if (!C.presence.slots || !C.presence.slots[i].key) continue;
        presence *p = C.presence.slots[i].val;
        if (chat_user_get(p->user) || p->local_pub != ST_OFFLINE || p->unsure) {
            p->dirty = 1;
            mark_hot(p);
        }
    }
}

void presence_session_gone(session *s) {
    presence *p = pl_map_get(&C.presence, s->user);
    if (!p) return;
    chat_user *u = chat_user_get(s->user);
    if (u && u->sessions == s && !s->unext) {   /* the last one: whom going offline reaches */
        size_t n = 0;
        int64_t *convs = local_convs(s->user, &n);
        keep_convs(p, convs, n);
        free(convs);
    }
    if (!s->ended) p->local_active = pl_now_ms();   /* ended: counted then */
    p->dirty = 1;
    touch(p);
}

void presence_session_ended(session *s) {
    presence *p = pl_map_get(&C.presence, s->user);
    if (!p) return;
    p->local_active = pl_now_ms();
    p->dirty = 1;
    touch(p);
    publish_at_once(p);
}

void presence_user_detached(int64_t user) {
    presence *p = pl_map_get(&C.presence, user);
    /* The last session here: publishes the offline view now (tick_one's
     * first step; the entry stays hot, so the tick still announces and
     * forgets it as usual): every node's push worker asks the views
     * whether the user is connected, and a message sent just after the
     * close was taken for "online" for up to a tick (audit Q). Sessions
     * left here: in cluster mode, what this node's view became. */
    if (!p || C.stopping) return;
    if (!chat_user_get(user)) tick_one(p, pl_mono_ms(), pl_now_ms());
    else publish_at_once(p);
}

void do_presence_set(session *s, pl_msg *m) {
    chat_user *u = chat_user_get(s->user);
    if (!u || chat_limit_signal(s, m->req, &u->presence_tb, PRESENCE_RATE, PRESENCE_BURST)) return;
    s->away = (uint8_t)m->away;
    presence *p = pl_map_get(&C.presence, s->user);
    if (p) {
        p->dirty = 1;
        touch(p);
        publish_at_once(p);
    }
}

/* This node's view of user: merged over its sessions here. */
static int local_status(int64_t user, int64_t now, int64_t *newest_hb) {
    chat_user *u = chat_user_get(user);
    int st = ST_OFFLINE;
    *newest_hb = 0;
    if (!u) return st;
    int64_t timeout = (int64_t)C.cfg->presence_timeout * 1000;
    for (session *s = u->sessions; s; s = s->unext) {
        if (s->state != S_AUTHED || s->ended) continue;
        if (s->last_hb > *newest_hb) *newest_hb = s->last_hb;
        if (now - s->last_hb >= timeout) continue;
        if (!s->away) st = ST_ONLINE;
        else if (st == ST_OFFLINE) st = ST_AWAY;
    }
    return st;
}

static pview *view_at(presence *p, uint32_t i) { return i ? &p->more[i - 1] : &p->view0; }

/* Whether a view still counts: not expired, not from another node the bus
 * knows is gone (killed without closing: its views would otherwise keep its
 * users online for up to --presence-timeout), and not published by an
 * earlier process of a node since restarted with the same id (audit G4: its
 * users came back online for a minute, and went without push). A view's
 * publication is its expiry less --presence-timeout, both by its node's
 * clock, as is the start its beats say. */
static int view_counts(int node, int64_t expires, int64_t wall) {
    if (expires <= wall) return 0;
    if (!C.bus) return 1;
    /* this node's own id too: Redis hands back the dead process's views
     * to the new one (audit O7) */
    int64_t since = pl_bus_node_since(C.bus, node);
    if (since && expires - (int64_t)C.cfg->presence_timeout * 1000 < since) return 0;
    return node == C.bus->node || !pl_bus_node_gone(C.bus, node);
}

/* The best view that counts; *last gets the latest activity any view
 * reports. */
static int merged_status(presence *p, int64_t wall, int64_t *last) {
    int st = ST_OFFLINE;
    *last = 0;
    for (uint32_t i = 0; i < p->nviews; i++) {
        const pview *v = view_at(p, i);
        if (v->last_active > *last) *last = v->last_active;
        if (v->status > st && view_counts(v->node, v->expires, wall)) st = v->status;
    }
    return st;
}

/* The conversations of a user with sessions here (deduplicated). */
static int64_t *local_convs(int64_t user, size_t *n) {
    chat_user *u = chat_user_get(user);
    size_t cap = 0, len = 0;
    int64_t *out = NULL;
    for (session *s = u ? u->sessions : NULL; s; s = s->unext)
        for (uint32_t i = 0; i < s->nsubs; i++) {
            if (sub_removed(s->subs[i])) continue;   /* no longer its conversation */
            int64_t id = s->subs[i]->conv->id;
            int dup = 0;                      /* one session has one sub per conversation */
            for (size_t k = 0; k < len && !dup && s != u->sessions; k++) dup = out[k] == id;
            if (dup) continue;
            if (len == cap) {
                cap = cap ? cap * 2 : 16;
                out = pl_realloc(out, cap * sizeof *out);
            }
            out[len++] = id;
        }
    *n = len;
    return out;
}

/* Replaces p->convs with a copy of convs[0..n). */
static void keep_convs(presence *p, const int64_t *convs, size_t n) {
    free(p->convs);
    p->convs = n ? pl_malloc(n * sizeof *p->convs) : NULL;
    if (n) memcpy(p->convs, convs, n * sizeof *convs);
    p->nconvs = (uint32_t)n;
}

/* How often a node re-publishes a view that is not offline. A view lasts
 * --presence-timeout from its publication, so a node that dies stops
 * counting between a refresh interval short of the timeout and the
 * timeout after its last publication, like a session whose heartbeats
 * stopped; a live node's views never lapse (three refreshes fit in one).
 * Views lasted timeout + 20 s before: 80 s after a crash at the default
 * 60 s, 30 s at 10 s (audit B). */
static int64_t view_refresh_ms(void) {
    int64_t q = (int64_t)C.cfg->presence_timeout * 1000 / 4;
    return q < VIEW_REFRESH_MS ? q : VIEW_REFRESH_MS;
}

static void publish_own(presence *p, int status, int64_t last_active, int64_t now, int refresh) {
    size_t n = 0;
    int64_t *convs = local_convs(p->user, &n);
    int64_t wall = pl_now_ms();
    int here = chat_user_get(p->user) != NULL;
    pl_bus_presence v = {
        .user = p->user,
        .node = C.bus->node,
        .status = status,
        .last_active = last_active,
        .expires = wall + (status == ST_OFFLINE ? OFFLINE_KEEP_MS : (int64_t)C.cfg->presence_timeout * 1000),
        .refresh = refresh,
        /* with sessions here, their conversations, none included (audit
         * E5: a user removed from its only conversation published the
         * last ones kept, and other nodes went on announcing it there);
         * without, whom its sessions could see */
        .convs = here ? convs : p->convs,
        .nconvs = here ? n : p->nconvs,
    };
    p->local_pub = (uint8_t)status;
    p->pub_at = now;
    p->dirty = 0;
    p->unsure = status == ST_OFFLINE && C.bus->shared && !pl_bus_healthy(C.bus);
    pl_bus_publish_presence(C.bus, &v);
    free(convs);
}

/* A view from any node (this one included: the bus hands ours back). */
void presence_on_bus(void *ud, const pl_bus_presence *v) {
    if (C.stopping) return;
    presence *p = pl_map_get(&C.presence, v->user);
    int own = v->node == C.bus->node, created = !p;
    if (!p) {
        int relevant = own;
        for (size_t i = 0; !relevant && i < v->nconvs; i++) relevant = conv_find(v->convs[i]) != NULL;
        if (!relevant) return;
        p = presence_get(v->user);
    }
    /* whom we can tell about it: none, once it shares nothing here (audit
     * E5: an empty list kept the old one, and a removed user's changes
     * went on reaching its former co-members on this node) */
    if (!own && !chat_user_get(v->user)) {
        free(p->convs);
        p->convs = NULL;
        p->nconvs = 0;
        for (size_t i = 0; i < v->nconvs; i++) {
            if (!conv_find(v->convs[i])) continue;
            p->convs = pl_realloc(p->convs, (p->nconvs + 1) * sizeof *p->convs);
            p->convs[p->nconvs++] = v->convs[i];
        }
    }
    uint32_t i = 0;
    while (i < p->nviews && view_at(p, i)->node != v->node) i++;
    if (i == p->nviews) {
        if (i && i - 1 == p->capmore) {
            p->capmore = p->capmore ? p->capmore * 2 : 2;
            p->more = pl_realloc(p->more, p->capmore * sizeof *p->more);
        }
        p->nviews++;
    }
    *view_at(p, i) = (pview){v->node, (uint8_t)v->status, v->last_active, v->expires};
    /* A view this node starts keeping only now (a conversation shared with
     * the user appeared since its last change) that its node re-publishes
     * unchanged: the state is older than this node's interest in it, and
     * nobody here is told of it, as a new co-member is not told in embedded
     * mode (audit K: the 15 s refresh announced "online" to sessions whose
     * view of the user had not changed). Later changes are announced. */
    if (created && !own && v->refresh) {
        int64_t last;
        p->sent = (uint8_t)merged_status(p, pl_now_ms(), &last);
    }
    /* A change to offline from a node this one keeps no entry for: what
     * its sessions last learned is unknown (presence_query said online,
     * if the user came online there before anyone here shared a
     * conversation with it; an announcement said offline, if this node
     * had forgotten the user), so whatever the state is once the window
     * has passed is announced (audit I2: the default `sent`, offline, made
     * it no change, and a session on another node kept seeing the user
     * online for good). */
    else if (created && !own && v->status == ST_OFFLINE) {
        p->sent = ST_UNKNOWN;
    }
    touch(p);
}

static void frame_fields(pl_sbuf *b, int64_t user, int status, int64_t last_seen) {
    pl_sbuf_printf(b, "\"user\":%lld,\"status\":\"%s\",\"last_seen\":%lld", (long long)user,
                   status_names[status], (long long)last_seen);
}

static void announce_to(const int64_t *convs, size_t n, int64_t user, pl_rbuf **frame, const pl_sbuf *b,
                        uint32_t mark) {
    for (size_t i = 0; i < n; i++) {
        chat_conv *cv = conv_find(convs[i]);
        if (!cv || cv->nsubs > PRESENCE_FANOUT_MAX || cv->blocked) continue;   /* not through a block */
        for (sub *x = cv->subs; x; x = x->next) {
            session *s = x->sess;
            if (s->user == user || s->mark == mark || sub_removed(x)) continue;
            s->mark = mark;
            if (!*frame) *frame = pl_ws_text_frame(b->p, b->len);
            chat_deliver_ephemeral(s->conn, *frame);
        }
    }
}

/* Tells the local sessions of everyone sharing a conversation with p. */
static void announce(presence *p, int status, int64_t last_seen) {
    pl_sbuf b;
    pl_sbuf_init(&b);
    pl_sbuf_adds(&b, "{\"type\":\"presence\",");
    frame_fields(&b, p->user, status, last_seen);
    pl_sbuf_addc(&b, '}');
    pl_rbuf *frame = NULL;
    uint32_t mark = ++C.mark;
    size_t n = 0;
    int64_t *mine = local_convs(p->user, &n);
    announce_to(mine, n, p->user, &frame, &b, mark);
    announce_to(p->convs, p->nconvs, p->user, &frame, &b, mark);
    free(mine);
    pl_rbuf_unref(&frame);
    pl_sbuf_release(&b);
}

static void last_seen_done(pl_job *j) {
    pl_job_release(j);
    free(j);
}

static void store_last_seen(int64_t user, int64_t when) {
    pl_job *j = pl_calloc(1, sizeof *j);
    j->op = PL_JOB_LAST_SEEN;
    j->user = user;
    j->expires = when;
    j->done = last_seen_done;
    pl_store_submit(C.store, j);
}

/* Publishes this node's view of p's user when it changed (or is due for
 * a refresh). */
static void publish_local(presence *p, int64_t now, int has_local) {
    if (has_local || p->local_pub != ST_OFFLINE || p->dirty) {
        int64_t hb;
        int st = local_status(p->user, now, &hb);
        /* the last heartbeat, in wall time; never backwards: a closed
         * session's later activity still counts (audit X3: an `away` after
         * a second device closed carried the first device's older time) */
        if (hb && wall_of(hb) > p->local_active) p->local_active = wall_of(hb);
        if (st != p->local_pub || p->dirty || (st != ST_OFFLINE && now - p->pub_at >= view_refresh_ms())) {
            /* offline with sessions still here: they timed out, or the
             * server ended them and their sockets linger */
            int went_offline = st == ST_OFFLINE && p->local_pub != ST_OFFLINE;
            /* Last seen survives a crash (audit Y: kill -9 left 0 for whoever
             * was online): written when the user comes online here, and
             * while online each time a refresh crosses a LAST_SEEN_EVERY_MS
             * boundary, besides when the user goes offline. */
            int keep = st != ST_OFFLINE && (p->local_pub == ST_OFFLINE ||
                                             now / LAST_SEEN_EVERY_MS != p->pub_at / LAST_SEEN_EVERY_MS);
            publish_own(p, st, p->local_active, now, st == p->local_pub && !H.as_changes);   /* unchanged: a refresh */
            if (went_offline || (keep && p->local_active > 0)) store_last_seen(p->user, p->local_active);
        }
    }
}

/* One entry's turn: publishes this node's view (publish_local), announces
 * the merged status when it settled. Returns 1 when the entry can be
 * forgotten; keeps it hot while an announcement waits. */
static int tick_one(presence *p, int64_t now, int64_t wall) {
    int has_local = chat_user_get(p->user) != NULL;
    publish_local(p, now, has_local);
    int64_t last;
    int st = merged_status(p, wall, &last);
    /* A change must hold for a coalesce window before it is announced
     * (protocol.md "Presence"): a flap that ends where it started (away
     * and back, a second device that connects and closes, a device
     * closing on one node just as another connected elsewhere, which
     * reads as offline here until the other node's view arrives) sends
     * nothing, and a change announced is one that lasted. Audit Y: only
     * going offline waited, so away-and-back within 0.2 s was announced
     * twice, `away` at once and `online` a window later. */
    if (p->since_event) {            /* an event's time: at most a tick ago (a late tick shifted it) */
        int64_t floor = now - presence_tick_ms();
        if (p->changed_since < floor) p->changed_since = floor;
        p->since_event = 0;
    }
    if (st == p->sent) p->changed_since = 0;
    else if (!p->changed_since) p->changed_since = now;
    int settled = !H.held && now - p->changed_since >= C.cfg->presence_coalesce;
    if (st != p->sent && settled && now - p->sent_at >= C.cfg->presence_coalesce) {
        p->sent = (uint8_t)st;
        p->sent_at = now;
        /* the entry leaves the hot list now: the next change starts its
         * own window (CI: left set, the first change after an
         * announcement, until a slice came round, was taken for one that
         * had lasted and announced at once; `away` and back in 0.2 s
         * announced twice) */
        p->changed_since = 0;
        announce(p, st, last);
        /* offline from another node's views (that node may be dead and
         * never write it): what presence_query reads later */
        if (st == ST_OFFLINE && !has_local && last > p->local_active) store_last_seen(p->user, last);
    }
    if (st != p->sent || p->dirty) mark_hot(p);         /* waits for its window */
    /* kept while the other nodes may not have heard its offline view */
    if (p->unsure) return 0;
    if (st != ST_OFFLINE || p->sent != ST_OFFLINE || has_local || p->local_pub != ST_OFFLINE) return 0;
    /* Kept while a view of a node taken for gone has not expired: a node
     * that was only paused comes back with its users still online, and
     * they are announced online again (audit A2: the entry was forgotten,
     * the node's next refresh was taken as known state, and its users
     * stayed offline for everyone else). */
    for (uint32_t i = 0; i < p->nviews; i++) {
        const pview *v = view_at(p, i);
        if (v->status != ST_OFFLINE && v->expires > wall) return 0;
    }
    return 1;
}

void presence_tick(int64_t now) {
    int64_t wall = pl_now_ms();
    size_t ndead = 0;
    int64_t dead[64];
    /* This node was stalled (SIGSTOP, a VM paused, swapped out) for as long
     * as the other nodes take a silent node for gone: they announced its
     * users offline and, past the views' life, forgot them. */
    if (H.ticked && now - H.ticked >= PRESENCE_STALL_MS && C.bus && C.bus->shared) {
        pl_log(PL_LOG_WARN, 0, "the event loop stalled: presence views published again",
               "\"stalled_ms\":%lld", (long long)(now - H.ticked));
        presence_resync();
    }
    /* A late tick (this loop was busy, descheduled or stopped): libuv runs
     * timers before it reads the sockets, so the views that arrived
     * meanwhile are still unread, and a change waiting for its window
     * would be taken for one that lasted (`away` and back within 0.2 s
     * was announced when the loop was busy for a second). The time the
     * loop did not look does not count toward a change's window, and this
     * tick announces nothing: the next one does, with the views read. */
    int64_t late = H.ticked ? now - H.ticked - presence_tick_ms() : 0;
    H.held = late > TICK_MS;
    H.ticked = now;
    /* the hot ones (the list is taken: tick_one may start the next one) */
    int64_t *ids = H.ids;
    size_t n = H.n;
    H.ids = NULL;
    H.n = H.cap = 0;
    for (size_t i = 0; i < n; i++) {
        presence *p = pl_map_get(&C.presence, ids[i]);
        if (!p) continue;
        p->hot = 0;
        if (H.held && p->changed_since) p->changed_since += late;
        if (tick_one(p, now, wall) && ndead < 64) dead[ndead++] = p->user;
    }
    free(ids);
    H.as_changes = 0;                 /* resync's entries were all hot */
    /* a slice: the whole table once per sweep period */
    int64_t sweep_ms = (int64_t)C.cfg->presence_timeout * 1000 / 8;
    if (sweep_ms < 250) sweep_ms = 250;
    if (sweep_ms > 2000) sweep_ms = 2000;
    int64_t elapsed = H.swept ? now - H.swept : sweep_ms;
    if (elapsed > sweep_ms) elapsed = sweep_ms;
    H.swept = now;
    size_t cap = C.presence.cap, per = cap ? (size_t)((int64_t)cap * elapsed / sweep_ms) + 1 : 0;
    for (size_t k = 0; k < per && k < cap; k++) {
        size_t i = H.sweep_at++ % cap;
        if (!C.presence.slots[i].key) continue;
        presence *p = C.presence.slots[i].val;
        if (tick_one(p, now, wall) && ndead < 64) dead[ndead++] = p->user;
    }
    for (size_t i = 0; i < ndead; i++) {   /* a hot one may be met again: listed twice */
        presence *d = pl_map_del(&C.presence, dead[i]);
        if (d) presence_free(d);
    }
}

/* Everyone here is about to go offline: keep their last seen. Views are not
 * withdrawn: clients reconnect elsewhere (no offline-online flap for them),
 * and the views end when this node is taken for gone. They are published
 * once more with the drain's start as their last activity, the last seen
 * stored here, so that the other nodes announce a user who does not come
 * back with that one time, not the view's older one (audit X2: the pushed
 * last_seen was the connect time, earlier than presence_query's). */
void presence_shutdown(void) {
    int64_t wall = pl_now_ms(), now = pl_mono_ms();
    for (size_t i = 0; i < C.presence.cap; i++) {
        if (!C.presence.slots[i].key) continue;
        presence *p = C.presence.slots[i].val;
        if (chat_user_get(p->user)) {
            store_last_seen(p->user, wall);
            int64_t hb;
            int st = local_status(p->user, now, &hb);
            if (C.bus && st != ST_OFFLINE) publish_own(p, st, wall, now, 1);
        } else if (p->local_pub != ST_OFFLINE) store_last_seen(p->user, p->local_active);
        presence_free(p);
    }
    pl_map_release(&C.presence);
    free(H.ids);
    memset(&H, 0, sizeof H);
}

/* ---- the query --------------------------------------------------------------------- */

typedef struct pquery {
    pl_job          job;
    pl_chat_json_cb cb;
    void           *arg;
    int64_t        *ids;          /* owned copy of the asked ids            */
} pquery;

/* Appends {"user":..,"status":..,"last_seen":..} for u; views from the bus
 * (other nodes, cluster mode) count like this node's, and so do u's
 * sessions here as they are now: a session that has just authenticated
 * is online at once, not when this node's view is next published (up to
 * a second later; audit B). */
static void query_one(pl_sbuf *out, const pl_user *u, const pl_bus_presence *views, size_t nv) {
    int64_t wall = pl_now_ms(), mono = pl_mono_ms(), last = u->last_seen, hb;
    int st = local_status(u->id, mono, &hb);
    if (hb && wall_of(hb) > last) last = wall_of(hb);
    presence *p = pl_map_get(&C.presence, u->id);
    if (p) {
        int64_t l;
        int m = merged_status(p, wall, &l);
        if (m > st) st = m;
        if (l > last) last = l;
    }
    for (size_t i = 0; i < nv; i++) {
        if (views[i].user != u->id) continue;
        if (views[i].status > st && view_counts(views[i].node, views[i].expires, wall)) st = views[i].status;
        if (views[i].last_active > last) last = views[i].last_active;
    }
    /* online and away: the latest activity known, as the pushed frames
     * say (audit X3: it was the query's own time) */
    pl_sbuf_addc(out, '{');
    frame_fields(out, u->id, st, last);
    pl_sbuf_addc(out, '}');
}

static void query_answer(pquery *q, const pl_bus_presence *views, size_t nv) {
    pl_sbuf out;
    pl_sbuf_init(&out);
    pl_sbuf_adds(&out, "\"users\":[");
    for (size_t i = 0; i < q->job.nusers; i++) {
        if (i) pl_sbuf_addc(&out, ',');
        query_one(&out, &q->job.users[i], views, nv);
    }
    pl_sbuf_addc(&out, ']');
    q->cb(q->arg, PL_STORE_OK, out.p, out.len);
    pl_sbuf_release(&out);
    pl_job_release(&q->job);
    free(q->ids);
    free(q);
}

static void query_views(void *arg, const pl_bus_presence *views, size_t n) { query_answer(arg, views, n); }

static void query_visible(pl_job *j) {
    pquery *q = (pquery *)j;
    if (j->result) {
        q->cb(q->arg, j->result, NULL, 0);
        pl_job_release(j);
        free(q->ids);
        free(q);
        return;
    }
    if (C.bus->shared && j->nusers && !C.stopping) {   /* other nodes' views */
        int64_t *ids = pl_malloc(j->nusers * sizeof *ids);
        for (size_t i = 0; i < j->nusers; i++) ids[i] = j->users[i].id;
        pl_bus_presence_get(C.bus, ids, j->nusers, query_views, q);
        free(ids);
        return;
    }
    query_answer(q, NULL, 0);
}

int pl_chat_presence_query(int64_t asker, const int64_t *ids, size_t n, pl_chat_json_cb cb, void *arg) {
    if (C.stopping) return PL_STORE_EUNAVAIL;
    pquery *q = pl_calloc(1, sizeof *q);
    q->cb = cb;
    q->arg = arg;
    q->ids = pl_malloc((n ? n : 1) * sizeof *q->ids);
    if (n) memcpy(q->ids, ids, n * sizeof *ids);
    q->job.op = PL_READ_USERS_VISIBLE;
    q->job.user = asker;
    q->job.ids = q->ids;
    q->job.nids = n;
    q->job.done = query_visible;
    pl_store_submit(C.store, &q->job);
    return 0;
}

/* ---- reachable users (push notifications) ------------------------------------------ */

typedef struct oquery {
    pl_chat_online_cb cb;
    void             *arg;
    size_t            n;
    int64_t          *ids;
    uint8_t          *online;
} oquery;

static void online_answer(oquery *q, const pl_bus_presence *views, size_t nv) {
    int64_t wall = pl_now_ms();
    for (size_t i = 0; i < nv; i++) {
        if (views[i].status == ST_OFFLINE || !view_counts(views[i].node, views[i].expires, wall)) continue;
        if (C.bus && views[i].node == C.bus->node) continue;   /* ours: the sessions, looked at */
        for (size_t k = 0; k < q->n; k++)
            if (q->ids[k] == views[i].user) q->online[k] = 1;
    }
    q->cb(q->arg, q->online, q->n);
    free(q->ids);
    free(q->online);
    free(q);
}

static void online_views(void *arg, const pl_bus_presence *views, size_t n) { online_answer(arg, views, n); }

void pl_chat_users_online(const int64_t *ids, size_t n, pl_chat_online_cb cb, void *arg) {
    oquery *q = pl_calloc(1, sizeof *q);
    q->cb = cb;
    q->arg = arg;
    q->n = n;
    q->ids = pl_malloc((n ? n : 1) * sizeof *q->ids);
    q->online = pl_calloc(n ? n : 1, 1);
    if (n) memcpy(q->ids, ids, n * sizeof *ids);
    int64_t wall = pl_now_ms();
    int self = C.bus ? C.bus->node : -1;
    for (size_t i = 0; i < n && !C.stopping; i++) {
        chat_user *u = chat_user_get(ids[i]);
        for (session *s = u ? u->sessions : NULL; s && !q->online[i]; s = s->unext)
            if (s->state == S_AUTHED && !s->ended) q->online[i] = 1;
        /* Other nodes' views only: this node's own lags its sessions by up
         * to a presence tick, so a message sent just after the user's last
         * session here closed was taken for "online" and never pushed
         * (audit Q). */
        presence *p = pl_map_get(&C.presence, ids[i]);
        for (uint32_t k = 0; p && k < p->nviews && !q->online[i]; k++) {
            const pview *v = view_at(p, k);
            if (v->node != self && v->status != ST_OFFLINE && view_counts(v->node, v->expires, wall))
                q->online[i] = 1;
        }
    }
    if (n && C.bus && C.bus->shared && !C.stopping) {     /* other nodes' views */
        pl_bus_presence_get(C.bus, q->ids, n, online_views, q);
        return;
    }
    online_answer(q, NULL, 0);
}

void do_presence_query(session *s, pl_msg *m) {
    size_t n = json_array_size(m->users);
    int64_t *ids = pl_malloc((n ? n : 1) * sizeof *ids);
    for (size_t i = 0; i < n; i++) ids[i] = json_integer_value(json_array_get(m->users, i));
    ws_reply *r = ws_reply_new(s, m, "presence");
    int rc = pl_chat_presence_query(s->user, ids, n, ws_reply_json, r);
    free(ids);
    if (rc) ws_reply_json(r, rc, NULL, 0);
}
