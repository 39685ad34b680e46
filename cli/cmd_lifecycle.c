/* cmd_lifecycle.c — the data lifecycle commands: retention, hold, export
 * (docs/protocol.md "Data lifecycle"). Account deletion is an account
 * command (cmd_account.c: it reads the password).
 *
 *   retention CONV [SECONDS]               a conversation's retention (set or show)
 *   retention --workspace WS [SECONDS]     a workspace's, for its channels
 *   hold [--release] CONV                  legal hold (server admins)
 *   hold [--release] --workspace WS
 *   export [FILE]                          my data as one JSON document
 *
 * Owns: how a duration is written on the command line (seconds, or a
 * number with a unit: 90m, 12h, 7d, 1y), the human line of a retention,
 * and assembling the export: GET /me/export, then every page of
 * GET /me/messages, written as one document whose "messages" is the full
 * array (what the web client's "Export my data" downloads too). Does not
 * own: who may set what (the server decides; its refusal is printed as it
 * comes), nor the range of a retention (0 to a century: the server's 400).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "core/alloc.h"
#include "core/buf.h"
#include "format.h"

#define MESSAGES_PAGE 200          /* the server's largest page of /me/messages */

static int64_t int_of(json_t *o, const char *key) { return json_integer_value(json_object_get(o, key)); }

/* ---- durations --------------------------------------------------------------------- */

/* SECONDS: digits, optionally followed by one unit: s, m, h, d or y (365
 * days). 0, or a usage error. */
static int duration_arg(const char *cmd, const char *arg, int64_t *out) {
    static const struct { char unit; int64_t mult; } units[] = {
        {'s', 1}, {'m', 60}, {'h', 3600}, {'d', 86400}, {'y', 31536000},
    };
    size_t n = strlen(arg);
    int64_t mult = 1;
    char *num = pl_strdup(arg);
    for (size_t i = 0; n > 1 && i < sizeof units / sizeof units[0]; i++) {
        if (arg[n - 1] == units[i].unit) {
            mult = units[i].mult;
            num[n - 1] = '\0';
        }
    }
    int64_t v = 0;
    int rc = 0;
    for (const char *p = num; *p && rc == 0; p++) {
        if (*p < '0' || *p > '9') rc = 1;
        else if ((v = v * 10 + (*p - '0')) > PC_JSON_INT_MAX / mult) rc = 2;
    }
    if (rc == 0 && !*num) rc = 1;
    free(num);
    if (rc == 1)
        return pc_usage_error(cmd, "SECONDS must be a number of seconds, or one with a unit (90m, 12h, 7d, 1y), "
                              "not \"%s\"", arg);
    if (rc == 2) return pc_usage_error(cmd, "SECONDS is too large: %s", arg);
    *out = v * mult;
    return 0;
}

/* "1 day (set by the workspace)", or "none (messages are kept for ever)". */
static void retention_words(pl_sbuf *s, int64_t secs, const char *source) {
    if (secs <= 0) {
        pl_sbuf_adds(s, "none (messages are kept for ever)");
        return;
    }
    pc_format_duration(s, secs);
    if (source) pl_sbuf_printf(s, " (set by the %s)", source);
}

/* ---- retention ----------------------------------------------------------------------- */

int pc_cmd_retention(pc_client *c, int argc, char **argv) {
    const char *cmd = "retention";
    pc_opt o[] = {{"--workspace", 1, NULL, 0}};
    char **pos = pl_calloc((size_t)argc, sizeof *pos);
    int npos, rc = pc_args(cmd, argc, argv, o, 1, pos, &npos);
    int ws_form = o[0].set;
    int64_t id = 0, secs = -1;
    const char *target = ws_form ? o[0].value : npos > 0 ? pos[0] : NULL;
    const char *secs_arg = ws_form ? (npos > 0 ? pos[0] : NULL) : (npos > 1 ? pos[1] : NULL);
    if (rc == 0 && (ws_form ? npos > 1 : npos < 1 || npos > 2))
        rc = pc_usage_error(cmd, ws_form ? "give --workspace WS and optionally SECONDS"
                                         : "give CONV and optionally SECONDS (0: none of its own)");
    if (rc == 0 && secs_arg) rc = duration_arg(cmd, secs_arg, &secs);
    if (rc == 0) rc = ws_form ? pc_ws_arg(c, cmd, target, &id) : pc_conv_arg(c, cmd, target, &id);
    free(pos);
    if (rc) return rc;

    char path[96];
    snprintf(path, sizeof path, ws_form ? "/api/v1/workspaces/%lld" : "/api/v1/conversations/%lld", (long long)id);
    json_t *ans;
    if (secs >= 0) {
        size_t n = strlen(path);
        snprintf(path + n, sizeof path - n, "/retention");
        json_t *b = json_pack("{s:I}", "seconds", (json_int_t)secs);
        rc = pc_call(c, cmd, "PUT", path, b, &ans);
        json_decref(b);
    } else {
        rc = pc_call(c, cmd, "GET", path, NULL, &ans);
    }
    /* every conversation and workspace answer has it (retention_source may be null) */
    if (rc == 0 && (rc = pc_want(cmd, ans, "retention_seconds", JSON_INTEGER))) json_decref(ans);
    if (rc) return rc;
    if (c->json) {
        pc_print_json(ans);
    } else {
        pl_sbuf line;
        pl_sbuf_init(&line);
        if (ws_form) {
            pl_sbuf_printf(&line, "retention of workspace %lld: ", (long long)id);
            if (int_of(ans, "retention_seconds") > 0) retention_words(&line, int_of(ans, "retention_seconds"), NULL);
            else pl_sbuf_adds(&line, "none (its channels follow their own, else the server's)");
        } else {
            pl_sbuf_printf(&line, "retention of %lld: ", (long long)id);
            retention_words(&line, int_of(ans, "retention_seconds"),
                            json_string_value(json_object_get(ans, "retention_source")));
        }
        pc_format_flush(&line);
        pl_sbuf_release(&line);
    }
    json_decref(ans);
    return 0;
}

/* ---- hold ------------------------------------------------------------------------------ */

int pc_cmd_hold(pc_client *c, int argc, char **argv) {
    const char *cmd = "hold";
    pc_opt o[] = {{"--workspace", 1, NULL, 0}, {"--release", 0, NULL, 0}};
    char **pos = pl_calloc((size_t)argc, sizeof *pos);
    int npos, rc = pc_args(cmd, argc, argv, o, 2, pos, &npos);
    int ws_form = o[0].set, release = o[1].set;
    int64_t id = 0;
    if (rc == 0 && npos != (ws_form ? 0 : 1))
        rc = pc_usage_error(cmd, "give one CONV, or --workspace WS (and --release to release the hold)");
    if (rc == 0) rc = ws_form ? pc_ws_arg(c, cmd, o[0].value, &id) : pc_conv_arg(c, cmd, pos[0], &id);
    free(pos);
    if (rc) return rc;
    char path[96];
    snprintf(path, sizeof path, ws_form ? "/api/v1/workspaces/%lld/hold" : "/api/v1/conversations/%lld/hold",
             (long long)id);
    json_t *ans;
    if ((rc = pc_call(c, cmd, release ? "DELETE" : "PUT", path, NULL, &ans))) return rc;
    if ((rc = pc_want(cmd, ans, "legal_hold", JSON_TRUE))) {
        json_decref(ans);
        return rc;
    }
    if (c->json) pc_print_json(ans);
    else printf("legal hold %s %s%lld\n", release ? "released on" : "on", ws_form ? "workspace " : "", (long long)id);
    json_decref(ans);
    return 0;
}

/* ---- export ------------------------------------------------------------------------------ */

/* Every message of mine, oldest first: the pages of GET /me/messages
 * appended to *all (a new array). */
static int my_messages(pc_client *c, json_t **all) {
    *all = json_array();
    pl_sbuf path;
    pl_sbuf_init(&path);
    char *after = NULL;
    int rc = 0;
    for (;;) {
        path.len = 0;
        pl_sbuf_printf(&path, "/api/v1/me/messages?limit=%d", MESSAGES_PAGE);
        if (after) pc_path_add(c, &path, "&after=", after);
        json_t *page;
        if ((rc = pc_call(c, "export", "GET", pl_sbuf_cstr(&path), NULL, &page))) break;
        if ((rc = pc_want("export", page, "messages", JSON_ARRAY))) {
            json_decref(page);
            break;
        }
        json_t *msgs = json_object_get(page, "messages");
        if (json_is_array(msgs)) json_array_extend(*all, msgs);
        /* a message id is a string; a number is taken too, so that a page
         * is never mistaken for the last one */
        json_t *nv = json_object_get(page, "next");
        char num[32];
        const char *next = json_string_value(nv);
        if (json_is_integer(nv)) {
            snprintf(num, sizeof num, "%lld", (long long)json_integer_value(nv));
            next = num;
        }
        /* the next page starts after a message this one held: a `next` that
         * does not move on (or a page with nothing) would never end */
        int more = next && json_array_size(msgs) > 0 && (!after || strcmp(next, after) != 0);
        if (next && !more) {
            fprintf(stderr, "parley: export: the server's pages do not move on (next %s): stopped\n", next);
            rc = PC_EXIT_DOWN;
        }
        free(after);
        after = more ? pl_strdup(next) : NULL;
        json_decref(page);
        if (!more) break;
    }
    free(after);
    pl_sbuf_release(&path);
    if (rc) {
        json_decref(*all);
        *all = NULL;
    }
    return rc;
}

/* Writes doc to file through a temporary file beside it (mode 0600: it is
 * personal data) renamed over it, so a failed export never leaves half a
 * document under the name. 0, or PC_EXIT_DOWN after a line on stderr (as
 * for a --cacert file that cannot be read: a local failure, not a refusal). */
static int write_file(const char *file, json_t *doc) {
    pl_sbuf tmp;
    pl_sbuf_init(&tmp);
    pl_sbuf_printf(&tmp, "%s.%ld.tmp", file, (long)getpid());
    int fd = open(pl_sbuf_cstr(&tmp), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
    int ok = f && json_dumpf(doc, f, JSON_INDENT(1)) == 0 && fputc('\n', f) != EOF && fflush(f) == 0 &&
             fsync(fileno(f)) == 0;
    int err = errno;
    if (f) ok = fclose(f) == 0 && ok;
    else if (fd >= 0) close(fd);
    if (ok && rename(pl_sbuf_cstr(&tmp), file) != 0) {
        ok = 0;
        err = errno;
    }
    if (!ok) {
        unlink(pl_sbuf_cstr(&tmp));
        fprintf(stderr, "parley: export: cannot write %s: %s\n", file, strerror(err));
    }
    pl_sbuf_release(&tmp);
    return ok ? 0 : PC_EXIT_DOWN;
}

int pc_cmd_export(pc_client *c, int argc, char **argv) {
    char **pos = pl_calloc((size_t)argc, sizeof *pos);
    int npos, rc = pc_args("export", argc, argv, NULL, 0, pos, &npos);
    const char *file = npos == 1 && strcmp(pos[0], "-") != 0 ? pos[0] : NULL;
    if (rc == 0 && npos > 1) rc = pc_usage_error("export", "give at most one FILE (without it, or -: stdout)");
    if (rc) {
        free(pos);
        return rc;
    }
    json_t *doc = NULL, *msgs = NULL;
    rc = pc_call(c, "export", "GET", "/api/v1/me/export", NULL, &doc);
    if (rc == 0 && !json_is_object(doc)) {
        fprintf(stderr, "parley: export: the server's answer is not an export object\n");
        rc = PC_EXIT_DOWN;
    }
    if (rc == 0) rc = pc_want("export", doc, "conversations", JSON_ARRAY);
    if (rc == 0) rc = my_messages(c, &msgs);
    if (rc == 0) {
        size_t n = json_array_size(msgs);
        json_object_set_new(doc, "messages", msgs);
        if (file) {
            rc = write_file(file, doc);
            if (rc == 0 && !c->json)
                printf("exported %zu message%s, %zu conversation%s to %s\n", n, n == 1 ? "" : "s",
                       json_array_size(json_object_get(doc, "conversations")),
                       json_array_size(json_object_get(doc, "conversations")) == 1 ? "" : "s", file);
        } else {
            /* --json: one compact line, as every --json output */
            json_dumpf(doc, stdout, c->json ? JSON_COMPACT : JSON_INDENT(1));
            fputc('\n', stdout);
            if (fflush(stdout) != 0 || ferror(stdout)) {
                fprintf(stderr, "parley: export: cannot write to stdout: %s\n", strerror(errno));
                rc = PC_EXIT_DOWN;
            }
        }
    }
    json_decref(doc);
    free(pos);
    return rc;
}
