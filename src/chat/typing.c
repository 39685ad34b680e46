/* typing.c — typing indicators (M12): ephemeral, never stored, expired by
 * the server, rate-limited, shed first under load.
 *
 * Owns: the typing entries of each conversation stream. A `typing` from a
 * session is published through the bus (this node's handler runs first);
 * every node keeps its own entries from what it receives, forwards them to
 * its sessions of that conversation other than the typist's, and expires
 * them by itself, so a node that dies leaves no indicator stuck anywhere.
 * The typist's node (the one that published the start) is the clock: it
 * expires its entry --typing-ttl after the typist's last refresh and then
 * publishes the `stop` to every node. The others hear only every
 * republish_ms() of refreshes, so they keep an entry that long beyond the
 * TTL and end it at that `stop` (audit X2: they expired it at the TTL
 * after the last start they heard, up to 2.5 s before the typist's node);
 * when the typist's node is gone (the bus's node_gone) no `stop` will come,
 * so they end it themselves at the TTL after the last start they heard, or
 * at once if that has passed (audit G3: a killed node's typist kept typing
 * at the others for TTL + republish_ms, after being announced offline).
 *
 * Bounds: a user's starts are published at most every TYPING_REFWD_MS per
 * conversation (refreshes in between only extend the entry); at most
 * TYPISTS_MAX typists per conversation are tracked; streams with more than
 * TYPING_FANOUT_MAX live sessions get no typing frames.
 */
#include <stdlib.h>
#include <string.h>

#include "../core/alloc.h"
#include "../core/clock.h"
#include "../ws/ws.h"
#include "../ws/wsconn.h"
#include "chat_int.h"

#define TYPING_REFWD_MS 3000          /* re-forward (and re-publish) a start this often */
#define TYPING_RATE     5.0           /* per user: tokens/s and burst       */
#define TYPING_BURST    10.0

static void typing_list_add(chat_conv *cv) {
    if (cv->in_typing) return;
    cv->in_typing = 1;
    cv->tprev = NULL;
    cv->tnext = C.typing;
    if (C.typing) C.typing->tprev = cv;
    C.typing = cv;
}

static void typing_list_remove(chat_conv *cv) {
    if (!cv->in_typing) return;
    cv->in_typing = 0;
    if (cv->tprev) cv->tprev->tnext = cv->tnext;
    else C.typing = cv->tnext;
    if (cv->tnext) cv->tnext->tprev = cv->tprev;
}

/* Sends a typing frame to every session in cv except the typist's own. */
static void typing_forward(chat_conv *cv, int64_t user, int start) {
    if (cv->nsubs > TYPING_FANOUT_MAX) return;
    char msg[128];
    int n = snprintf(msg, sizeof msg, "{\"type\":\"typing\",\"conversation\":%lld,\"user\":%lld,\"state\":\"%s\"}",
                     (long long)cv->id, (long long)user, start ? "start" : "stop");
    pl_rbuf *frame = NULL;
    for (sub *x = cv->subs; x; x = x->next) {
        if (x->sess->user == user || sub_removed(x)) continue;
        if (!frame) frame = pl_ws_text_frame(msg, (size_t)n);
        chat_deliver_ephemeral(x->sess->conn, frame);
    }
    pl_rbuf_unref(&frame);
}

static void typing_remove_at(chat_conv *cv, uint32_t i, int forward) {
    int64_t user = cv->typing[i].user;
    cv->typing[i] = cv->typing[--cv->ntyping];
    if (forward) typing_forward(cv, user, 0);
    if (!cv->ntyping) typing_list_remove(cv);
}

static typing_ent *typing_find(chat_conv *cv, int64_t user) {
    for (uint32_t i = 0; i < cv->ntyping; i++)
        if (cv->typing[i].user == user) return &cv->typing[i];
    return NULL;
}

void typing_stop(chat_conv *cv, int64_t user) {
    for (uint32_t i = 0; i < cv->ntyping; i++)
        if (cv->typing[i].user == user) {
            typing_remove_at(cv, i, 1);
            return;
        }
}

void typing_session_gone(session *s) {
    chat_user *u = chat_user_get(s->user);
    for (uint32_t i = 0; i < s->nsubs; i++) {
        chat_conv *cv = s->subs[i]->conv;
        if (!cv->ntyping || !typing_find(cv, s->user)) continue;
        int others = 0;
        for (session *o = u ? u->sessions : NULL; o && !others; o = o->unext)
            others = o != s && o->tp != TP_SSE && sub_find(o, cv->id) != NULL;   /* a stream cannot type */
        if (!others) pl_bus_publish_typing(C.bus, cv->id, s->user, 0);
    }
}

void typing_clear_conv(chat_conv *cv) {
    typing_list_remove(cv);
    free(cv->typing);
    cv->typing = NULL;
    cv->ntyping = cv->captyping = 0;
}

/* A block in a direct conversation: its indicators stop now, and no more
 * are taken or forwarded while it lasts (docs/protocol.md "Blocking a
 * user"). From any node, this one first. */
void typing_conv_blocked(void *ud, int64_t conv, int blocked) {
    (void)ud;
    chat_conv *cv = conv_find(conv);
    if (!cv) return;
    cv->blocked = blocked ? 1 : 0;
    while (blocked && cv->ntyping) typing_remove_at(cv, cv->ntyping - 1, 1);
}

void pl_chat_conv_blocked(int64_t conv, int blocked) {
    if (C.bus) pl_bus_publish_conv_blocked(C.bus, conv, blocked);
}

static int64_t republish_ms(void);

/* A typing signal from any node (this one first). */
void typing_on_bus(void *ud, int64_t conv, int64_t user, int start, int origin) {
    chat_conv *cv = conv_find(conv);
    if (!cv || cv->dying) return;
    if (cv->blocked && start) return;         /* its node may not know yet */
    if (!start) {
        typing_stop(cv, user);
        return;
    }
    int64_t now = pl_mono_ms();
    /* another node's typist: its node sends the stop (see the top) */
    int64_t ttl = C.cfg->typing_ttl + (C.bus && origin != C.bus->node ? republish_ms() : 0);
    typing_ent *t = typing_find(cv, user);
    if (t) {
        t->expires = now + ttl;
        t->origin = origin;
        if (now - t->forwarded >= TYPING_REFWD_MS) {
            t->forwarded = now;
            typing_forward(cv, user, 1);
        }
        return;
    }
    if (cv->ntyping >= TYPISTS_MAX) return;
    if (cv->ntyping == cv->captyping) {
        cv->captyping = cv->captyping ? cv->captyping * 2 : 2;
        cv->typing = pl_realloc(cv->typing, cv->captyping * sizeof *cv->typing);
    }
    cv->typing[cv->ntyping++] = (typing_ent){user, now + ttl, now, 0, origin};
    typing_list_add(cv);
    typing_forward(cv, user, 1);
}

/* How often a continuing `start` is published to the other nodes: often
 * enough that their entries (which expire --typing-ttl after the last one
 * they got) never lapse while the user keeps typing. */
static int64_t republish_ms(void) {
    int64_t half = C.cfg->typing_ttl / 2;
    return half < TYPING_REFWD_MS ? half : TYPING_REFWD_MS;
}

void do_typing(session *s, pl_msg *m) {
    sub *x = sub_find(s, m->conv);
    if (!x || x->end_seq) {
        chat_send_error(s->conn, m->req, "not_found", "no such conversation");
        return;
    }
    chat_conv *cv = x->conv;
    if (cv->blocked) {                        /* as a send there would be */
        chat_send_error(s->conn, m->req, "forbidden", "blocked");
        return;
    }
    chat_user *u = chat_user_get(s->user);
    if (!u || chat_limit_signal(s, m->req, &u->typing_tb, TYPING_RATE, TYPING_BURST)) return;
    typing_ent *t = typing_find(cv, s->user);
    int64_t now = pl_mono_ms();
    if (t && t->expires <= now) {             /* expired, not yet swept: a new start */
        typing_remove_at(cv, (uint32_t)(t - cv->typing), 1);
        t = NULL;
    }
    if (m->typing && t && now - t->published < republish_ms()) {
        t->expires = now + C.cfg->typing_ttl;   /* a refresh: nothing to publish yet */
        return;
    }
    if (!m->typing && !t) return;
    pl_bus_publish_typing(C.bus, cv->id, s->user, m->typing);
    if (m->typing && (t = typing_find(cv, s->user)) != NULL) t->published = now;
}

void typing_tick(int64_t now) {
    for (chat_conv *cv = C.typing, *nx; cv; cv = nx) {
        nx = cv->tnext;
        for (uint32_t i = 0; i < cv->ntyping;) {
            typing_ent *t = &cv->typing[i];
            if (t->expires > now && C.bus && t->origin != C.bus->node &&
                pl_bus_node_gone(C.bus, t->origin)) {
                t->expires -= republish_ms();     /* the TTL after the last start heard */
                t->origin = C.bus->node;          /* ... once: no stop will come */
            }
            if (t->expires > now) {
                i++;
                continue;
            }
            int64_t user = cv->typing[i].user;
            int ours = cv->typing[i].published != 0;   /* this node published its starts */
            typing_remove_at(cv, i, 1);
            /* the other nodes wait for this stop; here it finds nothing left */
            if (ours && C.bus) pl_bus_publish_typing(C.bus, cv->id, user, 0);
        }
    }
}
