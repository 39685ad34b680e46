/* cli.h — what the command files of `parley` share: argument parsing,
 * usage errors, resolving CONV and USER arguments, history paging, and each
 * command's entry point.
 *
 * Commands (cmd_*.c, tail.c) take argv with argv[0] the command's name and
 * return the process's exit status (http.h: PC_EXIT_*). They print results
 * on stdout (human lines, or with --json the server's objects one per
 * line) and failures as one line on stderr: `parley: <what>: ...`.
 */
#ifndef PC_CLI_H
#define PC_CLI_H

#include <jansson.h>
#include <stdint.h>
#include <stdio.h>

#include "core/buf.h"
#include "http.h"

#define PC_JSON_INT_MAX 9007199254740991LL   /* 2^53 - 1: the API's integers */

/* o[key] as a string to print: "?" when the server's answer has none. */
static inline const char *pc_jstr(json_t *o, const char *key) {
    const char *s = json_string_value(json_object_get(o, key));
    return s ? s : "?";
}

/* ---- arguments (main.c) ---- */

typedef struct pc_opt {
    const char *name;            /* "--limit"                                */
    int         takes_value;     /* 1: "--limit N" or "--limit=N"            */
    const char *value;           /* what was given ("" for a flag)           */
    int         set;
} pc_opt;

/* Splits argv[1..argc) into options of opts[0..nopts) and positional
 * arguments (pos: room for argc pointers, borrowed from argv). "--" ends
 * the options; "-" is positional. 0, or PC_EXIT_USAGE after the usage. */
int pc_args(const char *cmd, int argc, char **argv, pc_opt *opts, size_t nopts, char **pos, int *npos);
/* pc_args without options: exactly `want` positional arguments (-1: at
 * least one), else a usage error saying what. */
int pc_plain_args(const char *cmd, int argc, char **argv, char **pos, int *npos, int want, const char *what);

/* Prints `parley: <cmd>: <message>` and the usage on stderr; returns
 * PC_EXIT_USAGE. */
int pc_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void pc_usage(FILE *f);

/* Parses a decimal integer in [min, 2^53 - 1]; 0, or a usage error naming
 * `what`. */
int pc_num(const char *cmd, const char *what, const char *s, int64_t min, int64_t *out);

/* A QUERY (users, search) must hold something other than blanks (space,
 * tab, CR, LF, FF, VT), as the server's search requires: 0, or a usage
 * error naming QUERY. */
int pc_query_arg(const char *cmd, const char *q);

/* args[0..n) joined by single spaces: a new string. */
char *pc_join(char **args, int n);

/* 1 when s[0..n) is valid UTF-8 (what JSON strings must be). */
int pc_utf8(const char *s, size_t n);

/* ---- CONV and USER arguments, conversations (cmd_conv.c) ---- */

/* A CONV argument: a conversation id, @username (the direct
 * conversation with that user, opened if needed), @deleted#ID (my direct
 * conversation with that deleted account, as `ls` names it; never opened),
 * or WS/#NAME (a channel: pc_channel_arg). 0, or the exit status after the
 * error line. */
int pc_conv_arg(pc_client *c, const char *cmd, const char *arg, int64_t *conv);
/* A USER argument (a username, "@" allowed in front) to its id. */
int pc_user_arg(pc_client *c, const char *cmd, const char *arg, int64_t *id);
/* The same, *user the server's {"id", "username"} (a new reference). */
int pc_user_lookup(pc_client *c, const char *cmd, const char *arg, json_t **user);
/* The same, with the name as the server stores it (for what is printed)
 * copied into stored[size]. */
int pc_user_stored(pc_client *c, const char *cmd, const char *arg, int64_t *id, char *stored, size_t size);
/* The stored username of the member of members (a borrowed JSON array of
 * {"username", ...}) named name, ASCII case aside as usernames compare;
 * NULL when none is. */
const char *pc_member_named(json_t *members, const char *name);
/* `group role` and `workspace role`: pos[0] its target (CONV, or WS when
 * ws), pos[1] USER, pos[2] admin or member; PATCHes the user's role there
 * and prints "bob is an admin of 12" ("of workspace 3"). 0, or the exit
 * status after the error line. */
int pc_role_set(pc_client *c, const char *cmd, char **pos, int ws);
/* GET /api/v1/conversations/{conv}: *out a new reference. */
int pc_conv_get(pc_client *c, const char *cmd, int64_t conv, json_t **out);

/* ---- WS and channel arguments, workspaces (cmd_workspace.c) ---- */

/* A WS argument: a workspace id (digits only), or the name of one of my
 * workspaces (exactly, else ignoring ASCII case; it must name only one).
 * 0, or the exit status after the error line. */
int pc_ws_arg(pc_client *c, const char *cmd, const char *arg, int64_t *ws);
/* A channel argument WS/#NAME or WS/NAME (split at the last '/'): the
 * channel's conversation id, found in the workspace's channel list. */
int pc_channel_arg(pc_client *c, const char *cmd, const char *arg, int64_t *conv);
/* GET /api/v1/workspaces without an error line: the array (a new
 * reference), or NULL when it failed. */
json_t *pc_ws_fetch(pc_client *c);
/* Appends the WS/#NAME of channel object conv (borrowed): the workspace's
 * name when it resolves back to it among workspaces (borrowed, may be
 * NULL), else its id. */
void pc_channel_label(pl_sbuf *s, json_t *workspaces, json_t *conv);

/* ---- history (cmd_message.c) ---- */

/* The events of conv in seq order, paging as needed (pages hold at most 200
 * events, and fewer when large): with after (>0), up to limit events above
 * it (and below before when before > 0); with before only, the limit events
 * just below it. *events: a new array. */
int pc_history(pc_client *c, const char *cmd, int64_t conv, int64_t after, int64_t before, int64_t limit,
               json_t **events);

/* ---- commands ---- */

int pc_cmd_register(pc_client *c, int argc, char **argv);
int pc_cmd_login(pc_client *c, int argc, char **argv);
int pc_cmd_logout(pc_client *c, int argc, char **argv);
int pc_cmd_whoami(pc_client *c, int argc, char **argv);
int pc_cmd_users(pc_client *c, int argc, char **argv);
int pc_cmd_conversations(pc_client *c, int argc, char **argv);
int pc_cmd_dm(pc_client *c, int argc, char **argv);
int pc_cmd_group(pc_client *c, int argc, char **argv);
int pc_cmd_leave(pc_client *c, int argc, char **argv);
int pc_cmd_members(pc_client *c, int argc, char **argv);
int pc_cmd_read(pc_client *c, int argc, char **argv);
int pc_cmd_send(pc_client *c, int argc, char **argv);
int pc_cmd_history(pc_client *c, int argc, char **argv);
int pc_cmd_search(pc_client *c, int argc, char **argv);
int pc_cmd_tail(pc_client *c, int argc, char **argv);
int pc_cmd_workspaces(pc_client *c, int argc, char **argv);
int pc_cmd_workspace(pc_client *c, int argc, char **argv);
int pc_cmd_channels(pc_client *c, int argc, char **argv);
int pc_cmd_channel(pc_client *c, int argc, char **argv);
int pc_cmd_report(pc_client *c, int argc, char **argv);
int pc_cmd_reports(pc_client *c, int argc, char **argv);
int pc_cmd_resolve(pc_client *c, int argc, char **argv);
int pc_cmd_retention(pc_client *c, int argc, char **argv);
int pc_cmd_hold(pc_client *c, int argc, char **argv);
int pc_cmd_export(pc_client *c, int argc, char **argv);
int pc_cmd_delete_account(pc_client *c, int argc, char **argv);
int pc_cmd_block(pc_client *c, int argc, char **argv);
int pc_cmd_unblock(pc_client *c, int argc, char **argv);
int pc_cmd_blocks(pc_client *c, int argc, char **argv);

#endif
