/* main.c — `parley`, the command-line client: global options, the command
 * table, usage, and the argument helpers every command uses (cli.h).
 *
 *   parley [--server URL] [--json] [--cacert FILE] COMMAND [ARGS...]
 *
 * Owns: the process (curl_global_init/cleanup, the exit status) and the
 * words on the command line. Does not own: any request (http.c) or what a
 * command does (cmd_account.c, cmd_conv.c, cmd_workspace.c, cmd_message.c,
 * cmd_report.c, cmd_block.c, cmd_lifecycle.c, tail.c).
 *
 * Global options are recognised before or after the command, up to a "--"
 * (which the command then sees: `parley send 12 -- --not-an-option`).
 */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "core/alloc.h"
#include "core/buf.h"
#include "core/utf8.h"

void pc_usage(FILE *f) {
    fputs(
"usage: parley [--server URL] [--json] [--cacert FILE] COMMAND [ARGS...]\n"
"\n"
"accounts:\n"
"  register USERNAME             create an account and log in (saves the session)\n"
"  login USERNAME                log in (saves the session)\n"
"  logout                        end the session; removes the session file\n"
"  whoami                        the logged-in user\n"
"  users QUERY                   you and the people you share a conversation with\n"
"                                whose name contains QUERY (at most 20)\n"
"  export [FILE]                 your data and every message you sent, as one JSON\n"
"                                document, to FILE (else stdout)\n"
"  delete-account [--yes]        delete your account: type the username to confirm\n"
"                                (or --yes), then the password\n"
"conversations (CONV: a conversation id, @USERNAME for the direct one (as ls\n"
"  shows it: @deleted#ID once that account is deleted), or WS/#NAME for a channel):\n"
"  conversations (or ls)         id, kind, name, unread count, last event\n"
"  dm USER                       open the direct conversation with USER; prints its id\n"
"  group create TITLE [USER...]  create a group; prints its id\n"
"  group add CONV USER           add a member (admins)\n"
"  group remove CONV USER        remove a member (admins)\n"
"  group role CONV USER ROLE     make a member admin or member (admins)\n"
"  leave CONV                    leave a group or a channel\n"
"  members CONV                  one `id username role` per line\n"
"  read CONV [SEQ]               mark read up to SEQ (default: the last event)\n"
"workspaces and channels (WS: a workspace id, or the name of one of yours):\n"
"  workspaces (or workspace list)  id, name, your role, member and channel counts\n"
"  workspace create NAME         create a workspace (and its #general); prints its id\n"
"  workspace show WS             its members: `id username role` per line\n"
"  workspace add WS USER         add a member (admins); also joins #general\n"
"  workspace remove WS USER      remove a member from it and its channels (admins)\n"
"  workspace role WS USER ROLE   make a member admin or member (admins)\n"
"  workspace leave WS            leave it and its channels\n"
"  channels WS (or channel list WS)\n"
"                                id, #name, public/private, joined or -, members\n"
"  channel create WS NAME [USER...] [--private]\n"
"                                create a channel; prints its id\n"
"  channel join CONV             join a public channel (CONV: e.g. Acme/#random)\n"
"  channel leave CONV            leave a channel (as leave CONV)\n"
"messages:\n"
"  send CONV [TEXT...]           send TEXT; without TEXT (or with -) all of stdin\n"
"       [--lines] [--id CLIENT_MSG_ID] [--reply-to SEQ]\n"
"                                --lines: each non-empty stdin line is a message\n"
"  history CONV [--limit N] [--before SEQ] [--after SEQ]\n"
"                                events in seq order (default: the last 50)\n"
"  tail [CONV...] [--last N] [--count N]\n"
"                                print events as they arrive (all conversations\n"
"                                when none is named); --last N: first the last N\n"
"                                of each; --count N: exit after N events\n"
"  search QUERY... [--conversation CONV] [--limit N]\n"
"                                messages containing every word, newest first\n"
"moderation:\n"
"  report CONV SEQ REASON [NOTE...]\n"
"                                report another user's message; REASON: spam,\n"
"                                abuse, harassment, illegal or other\n"
"  reports [CONV] [--all]        open reports, newest first, one per line: a\n"
"                                conversation's (its admins), or without CONV\n"
"                                every one (server admins); --all: resolved too\n"
"  resolve REPORT                mark a report done (admins)\n"
"  block USER, unblock USER      block a user: no messages, edits or reactions\n"
"                                between you in your direct conversation\n"
"  blocks                        the users you block: `id username` per line\n"
"data lifecycle:\n"
"  retention CONV [SECONDS]      how long CONV keeps messages; SECONDS sets it (also\n"
"                                90m, 12h, 7d, 1y; 0: none of its own)\n"
"  retention --workspace WS [SECONDS]\n"
"                                the same for a workspace's channels (its admins)\n"
"  hold [--release] CONV, hold [--release] --workspace WS\n"
"                                legal hold (server admins): retention and account\n"
"                                deletion erase nothing there; --release lifts it\n"
"  help                          this text\n"
"\n"
"options:\n"
"  --server URL    else $PARLEY_SERVER, the session's server, http://127.0.0.1:8080\n"
"  --json          print the server's JSON objects, one per line\n"
"  --cacert FILE   CA certificate for https (else $PARLEY_CACERT)\n"
"  -h, --help      this text;  --version  the version\n"
"\n"
"environment: PARLEY_TOKEN (an access token, used as is), PARLEY_PASSWORD\n"
"  (else one line of stdin), PARLEY_SESSION (the session file, else\n"
"  $XDG_CONFIG_HOME/parley/session.json or ~/.config/parley/session.json)\n"
"exit status: 0 ok, 1 refused by the server (4xx, or not logged in),\n"
"  2 bad usage, 3 server unreachable or failing (5xx)\n", f);
}

int pc_usage_error(const char *cmd, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "parley: %s%s", cmd ? cmd : "", cmd ? ": " : "");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    pc_usage(stderr);
    return PC_EXIT_USAGE;
}

int pc_args(const char *cmd, int argc, char **argv, pc_opt *opts, size_t nopts, char **pos, int *npos) {
    int only_pos = 0;
    *npos = 0;
    for (int i = 1; i < argc; i++) {
        char *a = argv[i];
        if (only_pos || a[0] != '-' || strcmp(a, "-") == 0) {
            pos[(*npos)++] = a;
            continue;
        }
        if (strcmp(a, "--") == 0) {
            only_pos = 1;
            continue;
        }
        const char *eq = strchr(a, '=');
        size_t nl = eq ? (size_t)(eq - a) : strlen(a);
        pc_opt *o = NULL;
        for (size_t k = 0; k < nopts && !o; k++)
            if (strlen(opts[k].name) == nl && memcmp(opts[k].name, a, nl) == 0) o = &opts[k];
        if (!o) return pc_usage_error(cmd, "unknown option %.*s (a text starting with '-' goes after --)",
                                      (int)nl, a);
        if (o->takes_value) {
            if (eq) o->value = eq + 1;
            else if (i + 1 < argc) o->value = argv[++i];
            else return pc_usage_error(cmd, "%s needs a value", o->name);
        } else if (eq) {
            return pc_usage_error(cmd, "%s takes no value", o->name);
        } else {
            o->value = "";
        }
        o->set = 1;
    }
    return 0;
}

int pc_plain_args(const char *cmd, int argc, char **argv, char **pos, int *npos, int want, const char *what) {
    int rc = pc_args(cmd, argc, argv, NULL, 0, pos, npos);
    if (rc) return rc;
    if (want >= 0 ? *npos != want : *npos < 1) return pc_usage_error(cmd, "%s", what);
    return 0;
}

int pc_query_arg(const char *cmd, const char *q) {
    if (!*q) return pc_usage_error(cmd, "QUERY must not be empty");
    if (!q[strspn(q, " \t\r\n\f\v")]) return pc_usage_error(cmd, "QUERY must not be only spaces");
    return 0;
}

int pc_num(const char *cmd, const char *what, const char *s, int64_t min, int64_t *out) {
    int64_t v = 0;
    const char *p = s;
    if (!*p) return pc_usage_error(cmd, "%s must be a number", what);
    for (; *p; p++) {
        if (*p < '0' || *p > '9') return pc_usage_error(cmd, "%s must be a number, not \"%s\"", what, s);
        v = v * 10 + (*p - '0');
        if (v > PC_JSON_INT_MAX) return pc_usage_error(cmd, "%s is too large: %s", what, s);
    }
    if (v < min) return pc_usage_error(cmd, "%s must be at least %lld", what, (long long)min);
    *out = v;
    return 0;
}

char *pc_join(char **args, int n) {
    pl_sbuf s;
    pl_sbuf_init(&s);
    for (int i = 0; i < n; i++) {
        if (i) pl_sbuf_addc(&s, ' ');
        pl_sbuf_adds(&s, args[i]);
    }
    return s.p ? s.p : pl_strdup("");
}

int pc_utf8(const char *s, size_t n) { return pl_utf8_valid((const uint8_t *)s, n); }

/* ---- the command table ------------------------------------------------------ */

typedef struct command {
    const char *name;
    int (*run)(pc_client *c, int argc, char **argv);
} command;

static const command commands[] = {
    {"register", pc_cmd_register},       {"login", pc_cmd_login},
    {"logout", pc_cmd_logout},           {"whoami", pc_cmd_whoami},
    {"users", pc_cmd_users},             {"conversations", pc_cmd_conversations},
    {"ls", pc_cmd_conversations},        {"dm", pc_cmd_dm},
    {"group", pc_cmd_group},             {"leave", pc_cmd_leave},
    {"members", pc_cmd_members},         {"read", pc_cmd_read},
    {"send", pc_cmd_send},               {"history", pc_cmd_history},
    {"search", pc_cmd_search},           {"tail", pc_cmd_tail},
    {"workspaces", pc_cmd_workspaces},   {"workspace", pc_cmd_workspace},
    {"channels", pc_cmd_channels},       {"channel", pc_cmd_channel},
    {"report", pc_cmd_report},           {"reports", pc_cmd_reports},
    {"resolve", pc_cmd_resolve},         {"retention", pc_cmd_retention},
    {"hold", pc_cmd_hold},               {"export", pc_cmd_export},
    {"delete-account", pc_cmd_delete_account},
    {"block", pc_cmd_block},             {"unblock", pc_cmd_unblock},
    {"blocks", pc_cmd_blocks},
};

int main(int argc, char **argv) {
    const char *server = NULL, *cacert = NULL;
    int json = 0;
    char **rest = pl_calloc((size_t)argc + 1, sizeof *rest);
    int nrest = 0, rc = PC_EXIT_OK, opts_done = 0;

    /* global options, anywhere before a "--" */
    for (int i = 1; i < argc; i++) {
        char *a = argv[i];
        if (opts_done || a[0] != '-') {
            rest[nrest++] = a;
            continue;
        }
        if (strcmp(a, "--") == 0) {
            opts_done = 1;
            rest[nrest++] = a;
        } else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            pc_usage(stdout);
            goto out;
        } else if (strcmp(a, "--version") == 0) {
            printf("parley %s (protocol 1, libcurl %s)\n", PC_VERSION, curl_version_info(CURLVERSION_NOW)->version);
            goto out;
        } else if (strcmp(a, "--json") == 0) {
            json = 1;
        } else if (strcmp(a, "--server") == 0 || strcmp(a, "--cacert") == 0) {
            if (i + 1 == argc) {
                rc = pc_usage_error(NULL, "%s needs a value", a);
                goto out;
            }
            if (strcmp(a, "--server") == 0) server = argv[++i];
            else cacert = argv[++i];
        } else if (strncmp(a, "--server=", 9) == 0) {
            server = a + 9;
        } else if (strncmp(a, "--cacert=", 9) == 0) {
            cacert = a + 9;
        } else {
            rest[nrest++] = a;            /* the command's own option */
        }
    }
    if (nrest == 0 || rest[0][0] == '-') {
        rc = nrest ? pc_usage_error(NULL, "unknown option %s", rest[0])
                   : pc_usage_error(NULL, "a command is needed");
        goto out;
    }
    if (strcmp(rest[0], "help") == 0) {
        pc_usage(stdout);
        goto out;
    }
    const command *cmd = NULL;
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (strcmp(commands[i].name, rest[0]) == 0) cmd = &commands[i];
    if (!cmd) {
        rc = pc_usage_error(NULL, "unknown command \"%s\"", rest[0]);
        goto out;
    }
    if (!cacert) {
        const char *e = getenv("PARLEY_CACERT");
        if (e && *e) cacert = e;
    }
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != 0) {
        fprintf(stderr, "parley: libcurl could not start\n");
        rc = PC_EXIT_DOWN;
        goto out;
    }
    pc_client c;
    rc = pc_client_init(&c, server, cacert, json);
    if (rc == 0) rc = cmd->run(&c, nrest, rest);
    pc_client_release(&c);
    curl_global_cleanup();
out:
    free(rest);
    fflush(stdout);
    return rc;
}
