/* tail.c — `parley tail [CONV...] [--last N] [--count N]`: follows the
 * Server-Sent Events stream (GET /api/v1/events) and prints the events of
 * the named conversations (all when none is named) as they arrive.
 *
 * Owns: the follow loop — where a stream starts, what is printed, and when
 * and how it reconnects. Does not own: the SSE framing (sse.c), the id
 * format (cursor.c), requests and the token refresh (http.c).
 *
 * Design note: resuming without gaps or repeats.
 *   1. The resume point is the parser's last event ID: the id of the last
 *      complete event the stream dispatched (the server puts one on every
 *      conversation event and on a new stream's `ready`, and it holds every
 *      cursor of the session). A reconnect presents it as Last-Event-ID, so
 *      the server sends exactly what follows it, in order.
 *   2. Without --last the first stream has no Last-Event-ID and is live
 *      from its `ready`, whose id is the resume point from then on: a drop
 *      before the first event loses nothing either.
 *   3. With --last N the first Last-Event-ID is built (cursor.c) from every
 *      conversation of the user at the last_seq GET /conversations gave:
 *      the named ones after printing their events up to that seq, the
 *      others so they are not replayed from their start.
 *   4. printed[conv] only grows; an event at or below it is not printed
 *      again (the server's guarantee, enforced once more here). A first
 *      stream's `ready` sets it to each conversation's head.
 *   5. A large group is not replayed on resume: the server moves its
 *      cursor to the head and says `synced` with online_only; tail then
 *      prints what it skipped from history (fill_skipped).
 *
 *   CONNECT --200--> STREAMING --event--> print (stop at --count: exit 0)
 *      ^                |
 *      |                +--close 4001, or 401 at CONNECT--> pc_refresh --+
 *      |                +--close 1001/1013/4008, reconnect--> wait ------+
 *      |                +--end of stream, network error--> backoff ------+
 *      +---------------------------------------------------------------- +
 *   CONNECT --no answer or 5xx--> backoff and again (exit 3 if no stream
 *   was ever opened); --429--> wait Retry-After; --other 4xx--> exit 1.
 *   pc_cmd_tail()'s loop performs CONNECT (pc_stream) and picks the next
 *   transition from how the stream ended (after_stream); on_frame()
 *   handles STREAMING's frames.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "core/alloc.h"
#include "core/buf.h"
#include "cursor.h"
#include "format.h"
#include "names.h"
#include "sse.h"

#define BACKOFF_MIN_MS   250
#define BACKOFF_MAX_MS   5000
#define RESTART_WAIT_MS  1000     /* after close 1001/1013 without retry_after_ms */
#define SLOW_WAIT_MS     250      /* after close 4008 */
#define MAX_AUTH_ROUNDS  3        /* 401s in a row, refreshed each time, before giving up */

typedef struct tail {
    pc_client *c;
    pc_names  *names;            /* NULL with --json                         */
    int64_t   *only;             /* the conversations to print (none: all)   */
    size_t     nonly;
    int64_t    count;            /* stop after this many (0: never)          */
    int64_t    printed_n;
    pc_cursor *printed;          /* per conversation, the last seq printed   */
    size_t     nprinted, capprinted;
    pc_sse     sse;
    pl_sbuf    line;
    int        done;             /* --count reached                          */
    int        fresh;            /* this stream started without a Last-Event-ID */
    int        broken;           /* the stream broke the SSE format          */
    int        frames;           /* frames seen on this connection           */
    int        close_code;       /* the last `close` event's code, or 0      */
    int64_t    retry_ms;         /* retry_after_ms of `close`/`reconnect`, -1 */
} tail;

static void sleep_ms(int64_t ms) {
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

static int wanted(const tail *t, int64_t conv) {
    if (!t->nonly) return 1;
    for (size_t i = 0; i < t->nonly; i++)
        if (t->only[i] == conv) return 1;
    return 0;
}

static pc_cursor *printed_of(tail *t, int64_t conv) {
    for (size_t i = 0; i < t->nprinted; i++)
        if (t->printed[i].conv == conv) return &t->printed[i];
    if (t->nprinted == t->capprinted) {
        t->capprinted = t->capprinted ? t->capprinted * 2 : 16;
        t->printed = pl_realloc(t->printed, t->capprinted * sizeof *t->printed);
    }
    t->printed[t->nprinted] = (pc_cursor){.conv = conv, .seq = 0};
    return &t->printed[t->nprinted++];
}

/* Prints one event unless printed before (rule 4); 1 when --count is met. */
static int print_event(tail *t, json_t *ev) {
    int64_t conv = json_integer_value(json_object_get(ev, "conversation"));
    int64_t seq = json_integer_value(json_object_get(ev, "seq"));
    pc_cursor *p = printed_of(t, conv);
    if (seq <= p->seq) return 0;
    p->seq = seq;
    if (t->c->json) {
        pc_print_json(ev);
    } else {
        pc_format_event(&t->line, ev, t->names);
        pc_format_flush(&t->line);
    }
    fflush(stdout);
    if (t->count && ++t->printed_n >= t->count) {
        t->done = 1;
        return 1;
    }
    return 0;
}

/* Rule 5: a large group resumed "online only" (the server moved its
 * cursor to the head without replaying: protocol.md "Large groups"): what
 * was skipped comes from history, so nothing is skipped here either. */
static int fill_skipped(tail *t, int64_t conv, int64_t head) {
    pc_cursor *p = printed_of(t, conv);
    if (head <= p->seq) return 0;
    json_t *events = NULL;
    int stop = 0;
    if (pc_history(t->c, "tail", conv, p->seq, head + 1, head - p->seq, &events) != 0) return 0;
    size_t i;
    json_t *ev;
    json_array_foreach(events, i, ev) {
        json_t *frame = json_pack("{s:s}", "type", "event");      /* as the stream sends them */
        json_object_update(frame, ev);
        stop = print_event(t, frame);
        json_decref(frame);
        if (stop) break;
    }
    json_decref(events);
    return stop;
}

/* One SSE event (STREAMING): returns 1 to stop the stream. */
static int on_frame(void *ud, const char *data, size_t len) {
    tail *t = ud;
    t->frames++;
    json_t *o = json_loadb(data, len, 0, NULL);
    const char *type = json_string_value(json_object_get(o, "type"));
    int stop = 0;
    if (!type) {
        /* not an object of the protocol: skipped */
    } else if (strcmp(type, "event") == 0) {
        if (wanted(t, json_integer_value(json_object_get(o, "conversation")))) stop = print_event(t, o);
    } else if (strcmp(type, "ready") == 0 && t->fresh) {     /* live from these heads (rule 2) */
        size_t i;
        json_t *cv;
        json_array_foreach(json_object_get(o, "conversations"), i, cv) {
            pc_cursor *p = printed_of(t, json_integer_value(json_object_get(cv, "id")));
            int64_t head = json_integer_value(json_object_get(cv, "last_seq"));
            if (p->seq < head) p->seq = head;
        }
    } else if (strcmp(type, "synced") == 0 && json_is_true(json_object_get(o, "online_only"))) {
        int64_t conv = json_integer_value(json_object_get(o, "conversation"));
        if (wanted(t, conv)) stop = fill_skipped(t, conv, json_integer_value(json_object_get(o, "seq")));
    } else if (strcmp(type, "close") == 0 || strcmp(type, "reconnect") == 0) {
        json_t *ms = json_object_get(o, "retry_after_ms");
        if (json_is_integer(ms)) t->retry_ms = json_integer_value(ms);
        if (type[0] == 'c') t->close_code = (int)json_integer_value(json_object_get(o, "code"));
    }
    json_decref(o);
    return stop;
}

static int on_bytes(const char *p, size_t n, void *ud) {
    tail *t = ud;
    int r = pc_sse_feed(&t->sse, p, n, on_frame, t);
    if (r < 0) t->broken = 1;
    return r == 0;
}

/* Rule 3: prints the last n events of each conversation to follow and sets
 * the first resume point. */
static int start_from_last(tail *t, int64_t n) {
    pc_client *c = t->c;
    json_t *list;
    int rc = pc_call(c, "tail", "GET", "/api/v1/conversations", NULL, &list);
    if (rc) return rc;
    json_t *convs = json_object_get(list, "conversations");
    size_t nconvs = json_array_size(convs), i;
    pc_cursor *cur = pl_calloc(nconvs ? nconvs : 1, sizeof *cur);
    json_t *cv;
    json_array_foreach(convs, i, cv) {
        cur[i].conv = json_integer_value(json_object_get(cv, "id"));
        cur[i].seq = json_integer_value(json_object_get(cv, "last_seq"));
    }
    /* the server lists each conversation once: pc_cursor_id only sorts cur
     * (by id), the order in which all of them are printed when none is named */
    char *id = pc_cursor_id(cur, nconvs);
    for (size_t k = 0; k < (t->nonly ? t->nonly : nconvs) && rc == 0 && !t->done; k++) {
        int64_t conv = t->nonly ? t->only[k] : cur[k].conv, last = -1;
        for (size_t j = 0; j < nconvs; j++)
            if (cur[j].conv == conv) last = cur[j].seq;
        if (last < 0) continue;                   /* not a member any more */
        json_t *events = NULL;
        if (n > 0 && last > 0) rc = pc_history(c, "tail", conv, -1, last + 1, n, &events);
        size_t e;
        json_t *ev;
        json_array_foreach(events, e, ev) {
            json_t *frame = json_pack("{s:s}", "type", "event");   /* as the stream sends them */
            json_object_update(frame, ev);
            int stop = print_event(t, frame);
            json_decref(frame);
            if (stop) break;
        }
        json_decref(events);
        pc_cursor *p = printed_of(t, conv);
        if (p->seq < last) p->seq = last;
    }
    pc_sse_set_last_id(&t->sse, id);
    free(id);
    free(cur);
    json_decref(list);
    return rc;
}

/* The next wait of the exponential backoff (ms). */
static int64_t next_backoff(int64_t *backoff) {
    int64_t w = *backoff;
    *backoff = *backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : *backoff * 2;
    return w;
}

/* How the stream ended, as the wait before the next CONNECT (ms), or -1
 * when the token must be refreshed first. */
static int64_t after_stream(tail *t, int64_t *backoff) {
    switch (t->close_code) {
    case 4001:
        return -1;
    case 1001:
    case 1013:
        return t->retry_ms >= 0 ? t->retry_ms : RESTART_WAIT_MS;
    case 4008:
        return t->retry_ms >= 0 ? t->retry_ms : SLOW_WAIT_MS;
    default:
        if (t->frames) *backoff = BACKOFF_MIN_MS;  /* it worked for a while */
        return next_backoff(backoff);
    }
}

int pc_cmd_tail(pc_client *c, int argc, char **argv) {
    pc_opt o[] = {{"--last", 1, NULL, 0}, {"--count", 1, NULL, 0}};
    char **pos = pl_calloc((size_t)argc, sizeof *pos);
    int npos, rc = pc_args("tail", argc, argv, o, 2, pos, &npos);
    tail t;
    memset(&t, 0, sizeof t);
    t.c = c;
    pc_sse_init(&t.sse);
    pl_sbuf_init(&t.line);
    int64_t last = 0;
    if (rc == 0 && o[0].set) rc = pc_num("tail", "--last", o[0].value, 0, &last);
    if (rc == 0 && o[1].set) rc = pc_num("tail", "--count", o[1].value, 1, &t.count);
    if (rc == 0 && !pc_token(c)) {
        json_t *me = NULL;
        rc = pc_call(c, "tail", "GET", "/api/v1/me", NULL, &me);     /* says "not logged in" */
        json_decref(me);
    }
    t.only = pl_calloc((size_t)(npos ? npos : 1), sizeof *t.only);
    if (!c->json) t.names = pc_names_new(c);
    for (int i = 0; i < npos && rc == 0; i++) {
        rc = pc_conv_arg(c, "tail", pos[i], &t.only[t.nonly]);
        json_t *cv = NULL;
        if (rc == 0) rc = pc_conv_get(c, "tail", t.only[t.nonly], &cv);   /* a member? */
        if (rc == 0 && t.names) pc_names_seed(t.names, cv);
        json_decref(cv);
        t.nonly++;
    }
    free(pos);
    if (rc == 0 && o[0].set) rc = start_from_last(&t, last);

    int64_t backoff = BACKOFF_MIN_MS;
    int opened = 0, auth_rounds = 0;
    while (rc == 0 && !t.done) {
        pc_sse_restart(&t.sse);
        t.frames = t.close_code = t.broken = 0;
        t.retry_ms = -1;
        char *used = pl_strdup(pc_token(c) ? pc_token(c) : "");
        t.fresh = pc_sse_last_id(&t.sse) == NULL;
        pc_resp r;
        pc_stream(c, "/api/v1/events", pc_sse_last_id(&t.sse), on_bytes, &t, &r);
        int64_t wait = 0;
        if (t.done) {
            /* --count met */
        } else if (r.status == 200) {
            opened = 1;
            if (t.broken)
                fprintf(stderr, "parley: tail: the stream broke the event-stream format; reconnecting\n");
            if (t.frames) auth_rounds = 0;
            wait = after_stream(&t, &backoff);
        } else if (r.status == 401) {
            wait = -1;
        } else if (r.status == 429) {
            wait = r.retry_after > 0 ? r.retry_after * 1000 : BACKOFF_MAX_MS;
        } else if (r.status == 0 || r.status >= 500) {
            if (!opened) rc = pc_fail("tail", &r);           /* never reached it */
            wait = after_stream(&t, &backoff);
        } else {
            rc = pc_fail("tail", &r);
        }
        if (rc == 0 && !t.done && wait < 0) {                  /* refresh, then at once */
            int adopted;
            pc_resp rr;
            memset(&rr, 0, sizeof rr);
            int x = ++auth_rounds > MAX_AUTH_ROUNDS ? PC_EXIT_REFUSED : pc_refresh(c, used, &adopted, &rr);
            if (x == PC_EXIT_DOWN) {
                wait = next_backoff(&backoff);                 /* the server is away: later */
            } else if (x) {
                const char *hint = pc_login_hint(c);          /* NULL: PARLEY_TOKEN wins over a login */
                if (rr.status) rc = pc_fail_hint("tail", &rr, hint);
                else if (r.status == 401) rc = pc_fail_hint("tail", &r, hint);
                else {
                    fprintf(stderr, "parley: tail: the server ended the login session (close 4001): "
                                    "log in again\n");
                    rc = PC_EXIT_REFUSED;
                }
            } else {
                wait = 0;
            }
            pc_resp_release(&rr);
        }
        explicit_bzero(used, strlen(used));
        free(used);
        pc_resp_release(&r);
        if (rc == 0 && !t.done && wait > 0) sleep_ms(wait);
    }
    pc_names_free(&t.names);
    pc_sse_release(&t.sse);
    pl_sbuf_release(&t.line);
    free(t.printed);
    free(t.only);
    return rc;
}
