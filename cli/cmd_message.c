/* cmd_message.c — the message commands: send, history, search
 * (docs/protocol.md section 2 "POST .../messages", history paging, "Search").
 *
 * Owns: the send retry rule and history paging.
 *
 * Sends are idempotent by client_msg_id: each message gets its key before
 * its first try (--id, or "cli-" and 16 random bytes in hex), and every
 * retry of that message reuses it, so a retry after a lost answer is
 * answered `duplicate` and stores nothing. Retried: no answer (network
 * error), 5xx and 429 (after their Retry-After when they have one, else
 * after a backoff from 0.5 s doubling), at most SEND_TRIES tries within
 * about SEND_BUDGET_MS; any other 4xx ends the command.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "core/alloc.h"
#include "core/buf.h"
#include "format.h"
#include "names.h"

#define SEND_TRIES     5
#define SEND_BUDGET_MS 30000
#define PAGE_MAX       200       /* the server's largest history page */
#define HISTORY_LIMIT  50        /* history without --limit */
#define SEARCH_PAGE    50        /* the server's largest search page */
#define SEARCH_LIMIT   20        /* search without --limit (the server's default page) */

static int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int64_t ms) {
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

/* ---- send ----------------------------------------------------------------------- */

static void random_cmid(char out[40]) {
    unsigned char b[16];
    size_t got = 0;
    while (got < sizeof b) {
        ssize_t n = getrandom(b + got, sizeof b - got, 0);
        if (n > 0) got += (size_t)n;
    }
    memcpy(out, "cli-", 4);
    for (size_t i = 0; i < sizeof b; i++) snprintf(out + 4 + 2 * i, 3, "%02x", b[i]);
}

/* Sends one message (with retries, see the top); prints its ack. */
static int send_one(pc_client *c, int64_t conv, const char *body, size_t len, const char *cmid,
                    int64_t reply_to) {
    char path[96];
    snprintf(path, sizeof path, "/api/v1/conversations/%lld/messages", (long long)conv);
    json_t *b = json_pack("{s:s,s:s%}", "client_msg_id", cmid, "body", body, len);
    if (reply_to) json_object_set_new(b, "reply_to", json_integer(reply_to));
    int64_t start = now_ms(), wait = 500;
    pc_resp r;
    for (int tries = 1;; tries++) {
        pc_request(c, "POST", path, b, 1, &r);
        int again = r.status == 0 || r.status >= 500 || r.status == 429;
        if (!again || tries == SEND_TRIES) break;
        /* an answer's Retry-After, on a 5xx (HAProxy's 503) as on a 429 */
        int64_t w = r.status && r.retry_after >= 0 ? r.retry_after * 1000 : wait;
        if (now_ms() - start + w > SEND_BUDGET_MS) break;
        pc_resp_release(&r);
        sleep_ms(w);
        wait *= 2;
    }
    json_decref(b);
    int rc = pc_exit_of(&r);
    if (rc == 0 && !(json_is_integer(json_object_get(r.body, "conversation")) &&
                     json_is_integer(json_object_get(r.body, "seq")))) {
        fprintf(stderr, "parley: send: the answer (HTTP %ld) is not an acknowledgement: the message may not "
                "be stored; send again with --id %s to be sure\n", r.status, cmid);
        rc = PC_EXIT_DOWN;
    } else if (rc) {
        rc = pc_fail_hint("send", &r, r.status == 401 ? pc_login_hint(c) : NULL);
    } else if (c->json) {
        pc_print_json(r.body);
    } else {
        printf("%lld#%lld%s\n", (long long)json_integer_value(json_object_get(r.body, "conversation")),
               (long long)json_integer_value(json_object_get(r.body, "seq")),
               json_is_true(json_object_get(r.body, "duplicate")) ? " (duplicate)" : "");
    }
    fflush(stdout);
    pc_resp_release(&r);
    return rc;
}

/* Checks and sends one body with a fresh key (or the given one). */
static int send_text(pc_client *c, int64_t conv, const char *text, size_t len, const char *id,
                     int64_t reply_to, const char *which) {
    /* --lines: the lines before this one were sent (README) */
    const char *unsent = strncmp(which, "line ", 5) == 0 ? "not sent, nor any line after it" : "nothing sent";
    if (len == 0) {
        fprintf(stderr, "parley: send: %s is empty: %s\n", which, unsent);
        return PC_EXIT_USAGE;
    }
    if (!pc_utf8(text, len) || memchr(text, '\0', len)) {
        fprintf(stderr, "parley: send: %s is not valid UTF-8 text: %s\n", which, unsent);
        return PC_EXIT_USAGE;
    }
    char cmid[40];
    if (!id) random_cmid(cmid);
    return send_one(c, conv, text, len, id ? id : cmid, reply_to);
}

/* --lines: each non-empty line of stdin, in order, as it is read (so a
 * pipe from a running program sends as it goes). */
static int send_lines(pc_client *c, int64_t conv, int64_t reply_to) {
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    int rc = 0;
    long lineno = 0;
    while (rc == 0 && (n = getline(&line, &cap, stdin)) >= 0) {
        lineno++;
        if (n > 0 && line[n - 1] == '\n') n--;
        if (n > 0 && line[n - 1] == '\r') n--;
        if (n == 0) continue;
        char which[48];
        snprintf(which, sizeof which, "line %ld", lineno);
        rc = send_text(c, conv, line, (size_t)n, NULL, reply_to, which);
    }
    free(line);
    return rc;
}

int pc_cmd_send(pc_client *c, int argc, char **argv) {
    pc_opt o[] = {{"--lines", 0, NULL, 0}, {"--id", 1, NULL, 0}, {"--reply-to", 1, NULL, 0}};
    char **pos = pl_calloc((size_t)argc, sizeof *pos);
    int npos, rc = pc_args("send", argc, argv, o, 3, pos, &npos);
    int64_t conv = 0, reply_to = 0;
    int dashdash = 0;                          /* "-" after "--" is text, not stdin */
    for (int i = 1; i < argc && !dashdash; i++) {
        if (npos == 2 && argv[i] == pos[1]) break;
        dashdash = strcmp(argv[i], "--") == 0;
    }
    int from_stdin = npos == 1 || (npos == 2 && strcmp(pos[1], "-") == 0 && !dashdash);
    size_t idlen = o[1].set ? strlen(o[1].value) : 0;
    if (rc == 0 && npos < 1)
        rc = pc_usage_error("send", "give CONV (and TEXT, or the message on stdin)");
    if (rc == 0 && o[0].set && !from_stdin)
        rc = pc_usage_error("send", "--lines reads stdin: give no TEXT");
    if (rc == 0 && o[1].set && o[0].set)
        rc = pc_usage_error("send", "--id names one message: not with --lines");
    if (rc == 0 && o[1].set && (idlen < 1 || idlen > 64 || !pc_utf8(o[1].value, idlen)))
        rc = pc_usage_error("send", "--id must be 1-64 bytes of UTF-8");
    if (rc == 0 && o[2].set) rc = pc_num("send", "--reply-to", o[2].value, 1, &reply_to);
    if (rc == 0 && !pc_token(c)) rc = pc_not_logged_in(c, "send");    /* no text leaves without one */
    if (rc == 0) rc = pc_conv_arg(c, "send", pos[0], &conv);
    if (rc) {
        free(pos);
        return rc;
    }
    if (o[0].set) {
        rc = send_lines(c, conv, reply_to);
    } else if (from_stdin) {
        pl_sbuf in;
        pl_sbuf_init(&in);
        char buf[65536];
        size_t n;
        while ((n = fread(buf, 1, sizeof buf, stdin)) > 0) pl_sbuf_add(&in, buf, n);
        if (in.len && in.p[in.len - 1] == '\n') in.len--;         /* one trailing newline */
        if (in.len && in.p[in.len - 1] == '\r') in.len--;
        rc = send_text(c, conv, in.p ? in.p : "", in.len, o[1].value, reply_to, "the message");
        pl_sbuf_release(&in);
    } else {
        char *text = pc_join(pos + 1, npos - 1);
        rc = send_text(c, conv, text, strlen(text), o[1].value, reply_to, "the message");
        free(text);
    }
    free(pos);
    return rc;
}

/* ---- history ------------------------------------------------------------------------ */

int pc_history(pc_client *c, const char *cmd, int64_t conv, int64_t after, int64_t before, int64_t limit,
               json_t **events) {
    json_t *out = json_array();
    int down = after < 0 && before > 0;       /* no after: the `limit` events just below `before` */
    if (after < 0) after = 0;
    int rc = 0;
    while ((int64_t)json_array_size(out) < limit) {
        int64_t want = limit - (int64_t)json_array_size(out);
        if (want > PAGE_MAX) want = PAGE_MAX;
        char path[160];
        if (down)
            snprintf(path, sizeof path, "/api/v1/conversations/%lld/messages?before=%lld&limit=%lld",
                     (long long)conv, (long long)before, (long long)want);
        else if (after == 0)                  /* the API reads after=0 as "no after": from the start */
            snprintf(path, sizeof path, "/api/v1/conversations/%lld/messages?after=0&limit=%lld",
                     (long long)conv, (long long)want);
        else
            snprintf(path, sizeof path, "/api/v1/conversations/%lld/messages?after=%lld&before=%lld&limit=%lld",
                     (long long)conv, (long long)after, (long long)before, (long long)want);
        json_t *page;
        if ((rc = pc_call(c, cmd, "GET", path, NULL, &page))) break;
        if ((rc = pc_want(cmd, page, "events", JSON_ARRAY))) {
            json_decref(page);
            break;
        }
        json_t *evs = json_object_get(page, "events");
        size_t n = json_array_size(evs);
        int more = json_is_true(json_object_get(page, "has_more")) && n > 0;
        for (size_t i = 0; i < n; i++) {
            json_t *ev = json_array_get(evs, i);
            if (!down && before > 0 && json_integer_value(json_object_get(ev, "seq")) >= before) {
                more = 0;                     /* the window's end (after=0 asked without it) */
                n = i;
                break;
            }
            if (down) json_array_insert(out, i, ev);   /* an older page goes first */
            else json_array_append(out, ev);
        }
        if (n) {
            if (down) before = json_integer_value(json_object_get(json_array_get(evs, 0), "seq"));
            else after = json_integer_value(json_object_get(json_array_get(evs, n - 1), "seq"));
        }
        json_decref(page);
        if (!more) break;
    }
    if (rc) {
        json_decref(out);
        out = NULL;
    }
    *events = out;
    return rc;
}

/* Prints events (human: names from the conversation's members). */
static void print_events(pc_client *c, json_t *events, pc_names *names) {
    pl_sbuf line;
    pl_sbuf_init(&line);
    size_t i;
    json_t *ev;
    json_array_foreach(events, i, ev) {
        if (c->json) {
            pc_print_json(ev);
        } else {
            pc_format_event(&line, ev, names);
            pc_format_flush(&line);
        }
    }
    pl_sbuf_release(&line);
}

int pc_cmd_history(pc_client *c, int argc, char **argv) {
    pc_opt o[] = {{"--limit", 1, NULL, 0}, {"--before", 1, NULL, 0}, {"--after", 1, NULL, 0}};
    char **pos = pl_calloc((size_t)argc, sizeof *pos);
    int npos, rc = pc_args("history", argc, argv, o, 3, pos, &npos);
    int64_t conv = 0, limit = HISTORY_LIMIT, before = 0, after = 0;
    if (rc == 0 && npos != 1) rc = pc_usage_error("history", "give one CONV");
    if (rc == 0 && o[0].set) rc = pc_num("history", "--limit", o[0].value, 1, &limit);
    if (rc == 0 && o[1].set) rc = pc_num("history", "--before", o[1].value, 1, &before);
    if (rc == 0 && o[2].set) rc = pc_num("history", "--after", o[2].value, 0, &after);
    if (rc == 0) rc = pc_conv_arg(c, "history", pos[0], &conv);
    free(pos);
    if (rc) return rc;
    json_t *cv;
    if ((rc = pc_conv_get(c, "history", conv, &cv))) return rc;
    if (!o[1].set && !o[2].set)               /* the latest ones */
        before = json_integer_value(json_object_get(cv, "last_seq")) + 1;
    pc_names *names = pc_names_new(c);
    pc_names_seed(names, cv);
    json_decref(cv);
    json_t *events;
    if ((rc = pc_history(c, "history", conv, o[2].set ? after : -1, before, limit, &events)) == 0) {
        print_events(c, events, names);
        json_decref(events);
    }
    pc_names_free(&names);
    return rc;
}

/* ---- search ----------------------------------------------------------------------------- */

int pc_cmd_search(pc_client *c, int argc, char **argv) {
    pc_opt o[] = {{"--conversation", 1, NULL, 0}, {"--limit", 1, NULL, 0}};
    char **pos = pl_calloc((size_t)argc, sizeof *pos);
    int npos, rc = pc_args("search", argc, argv, o, 2, pos, &npos);
    int64_t conv = 0, limit = 0;
    char *q = NULL;
    if (rc == 0 && npos < 1) rc = pc_usage_error("search", "give a QUERY");
    if (rc == 0) {
        q = pc_join(pos, npos);
        if (!pc_utf8(q, strlen(q))) rc = pc_usage_error("search", "the query is not valid UTF-8");
        else rc = pc_query_arg("search", q);
    }
    if (rc == 0 && o[1].set) rc = pc_num("search", "--limit", o[1].value, 1, &limit);
    if (rc == 0 && o[0].set) rc = pc_conv_arg(c, "search", o[0].value, &conv);
    free(pos);
    if (rc) {
        free(q);
        return rc;
    }
    /* pages of up to SEARCH_PAGE, following next_cursor until limit
     * results (protocol.md "Search": never a repeat or a gap) */
    if (!o[1].set) limit = SEARCH_LIMIT;
    pc_names *names = pc_names_new(c);
    char *cursor = NULL;
    for (int64_t got = 0; got < limit;) {
        int64_t want = limit - got < SEARCH_PAGE ? limit - got : SEARCH_PAGE;
        pl_sbuf path;
        pl_sbuf_init(&path);
        pc_path_add(c, &path, "/api/v1/search?q=", q);
        if (conv) pl_sbuf_printf(&path, "&conversation=%lld", (long long)conv);
        pl_sbuf_printf(&path, "&limit=%lld", (long long)want);
        if (cursor) pc_path_add(c, &path, "&cursor=", cursor);
        json_t *ans;
        rc = pc_call(c, "search", "GET", path.p, NULL, &ans);
        pl_sbuf_release(&path);
        if (rc) break;
        if ((rc = pc_want("search", ans, "results", JSON_ARRAY))) {
            json_decref(ans);
            break;
        }
        json_t *results = json_object_get(ans, "results");
        size_t n = json_array_size(results);
        while ((int64_t)json_array_size(results) > want)      /* never more than asked */
            json_array_remove(results, json_array_size(results) - 1);
        n = json_array_size(results);
        print_events(c, results, names);
        fflush(stdout);
        got += (int64_t)n;
        const char *next = json_string_value(json_object_get(ans, "next_cursor"));
        free(cursor);
        cursor = next && *next && n ? pl_strdup(next) : NULL;
        json_decref(ans);
        if (!cursor) break;
    }
    free(cursor);
    free(q);
    pc_names_free(&names);
    return rc;
}
