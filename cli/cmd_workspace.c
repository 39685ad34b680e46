/* cmd_workspace.c — the workspace and channel commands: workspaces,
 * workspace create/list/show/add/remove/leave, channels, channel
 * create/list/join/leave (docs/protocol.md "Workspaces and channels"), and
 * resolving WS arguments and WS/#NAME channel arguments for every command.
 *
 * Owns: how a workspace name or a channel name becomes an id. A WS argument
 * of digits only is an id, anything else a name matched against my
 * workspaces (GET /api/v1/workspaces): exactly, else ignoring ASCII case,
 * and it must match one (names are not unique: two workspaces may both be
 * "Acme", and then the id is needed). A channel WS/#NAME is looked up in the
 * workspace's channel list, which holds its public channels and the private
 * ones I am in, so a private channel I am not in is "no channel", as the
 * server's 404 says of it. Does not own: conversation commands that work on
 * channels as on groups (send, history, members, leave: cmd_conv.c,
 * cmd_message.c), which reach channels through pc_conv_arg.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cli.h"
#include "core/alloc.h"
#include "core/buf.h"
#include "format.h"

static int64_t int_of(json_t *o, const char *key) { return json_integer_value(json_object_get(o, key)); }

static int all_digits(const char *s) {
    if (!*s) return 0;
    for (; *s; s++)
        if (*s < '0' || *s > '9') return 0;
    return 1;
}

/* ---- WS and channel arguments --------------------------------------------------- */

/* GET /api/v1/workspaces: *out the array (a new reference). */
static int ws_list_get(pc_client *c, const char *cmd, json_t **out) {
    json_t *ans;
    int rc = pc_call(c, cmd, "GET", "/api/v1/workspaces", NULL, &ans);
    if (rc) return rc;
    if ((rc = pc_want(cmd, ans, "workspaces", JSON_ARRAY))) {
        json_decref(ans);
        return rc;
    }
    *out = json_incref(json_object_get(ans, "workspaces"));
    json_decref(ans);
    return 0;
}

json_t *pc_ws_fetch(pc_client *c) {
    pc_resp r;
    pc_request(c, "GET", "/api/v1/workspaces", NULL, 1, &r);
    json_t *a = r.status == 200 ? json_incref(json_object_get(r.body, "workspaces")) : NULL;
    pc_resp_release(&r);
    return a;
}

/* The workspaces of list named name: exactly, else (none exactly) ignoring
 * ASCII case. Returns how many; *id the first one's. */
static size_t ws_named(json_t *list, const char *name, int64_t *id, pl_sbuf *ids) {
    for (int fold = 0; fold < 2; fold++) {
        size_t n = 0, i;
        json_t *w;
        json_array_foreach(list, i, w) {
            const char *wn = json_string_value(json_object_get(w, "name"));
            if (!wn || (fold ? strcasecmp(wn, name) : strcmp(wn, name)) != 0) continue;
            if (n++ == 0) *id = int_of(w, "id");
            if (ids) pl_sbuf_printf(ids, "%s%lld", n > 1 ? ", " : "", (long long)int_of(w, "id"));
        }
        if (n) return n;
    }
    return 0;
}

int pc_ws_arg(pc_client *c, const char *cmd, const char *arg, int64_t *ws) {
    if (all_digits(arg)) return pc_num(cmd, "a workspace id", arg, 1, ws);
    if (!*arg || !pc_utf8(arg, strlen(arg)))
        return pc_usage_error(cmd, "\"%s\" is not a workspace (an id or a name)", arg);
    json_t *list;
    int rc = ws_list_get(c, cmd, &list);
    if (rc) return rc;
    pl_sbuf ids;
    pl_sbuf_init(&ids);
    size_t n = ws_named(list, arg, ws, &ids);
    if (n == 0) {
        fprintf(stderr, "parley: %s: you are in no workspace named \"%s\" (parley workspaces lists yours)\n", cmd,
                arg);
        rc = PC_EXIT_REFUSED;
    } else if (n > 1) {
        fprintf(stderr, "parley: %s: %zu of your workspaces are named \"%s\" (%s): give its id\n", cmd, n, arg,
                pl_sbuf_cstr(&ids));
        rc = PC_EXIT_REFUSED;
    }
    pl_sbuf_release(&ids);
    json_decref(list);
    return rc;
}

/* GET /api/v1/workspaces/{ws}/channels: *out the array (a new reference). */
static int channels_of(pc_client *c, const char *cmd, int64_t ws, json_t **out) {
    char path[96];
    snprintf(path, sizeof path, "/api/v1/workspaces/%lld/channels", (long long)ws);
    json_t *ans;
    int rc = pc_call(c, cmd, "GET", path, NULL, &ans);
    if (rc) return rc;
    if ((rc = pc_want(cmd, ans, "channels", JSON_ARRAY))) {
        json_decref(ans);
        return rc;
    }
    *out = json_incref(json_object_get(ans, "channels"));
    json_decref(ans);
    return 0;
}

int pc_channel_arg(pc_client *c, const char *cmd, const char *arg, int64_t *conv) {
    const char *slash = strrchr(arg, '/');     /* channel names have no '/'; workspace names may */
    const char *name = slash ? slash + 1 : "";
    if (*name == '#') name++;
    if (!slash || slash == arg || !*name || !pc_utf8(arg, strlen(arg)))
        return pc_usage_error(cmd, "\"%s\" is not a channel (WS/#NAME: a workspace id or name, a channel name)",
                              arg);
    char *ws_part = pl_strndup(arg, (size_t)(slash - arg));
    int64_t ws;
    json_t *chans = NULL;
    int rc = pc_ws_arg(c, cmd, ws_part, &ws);
    if (rc == 0) rc = channels_of(c, cmd, ws, &chans);
    if (rc == 0) {
        size_t i;
        json_t *ch, *found = NULL;
        for (int fold = 0; fold < 2 && !found; fold++) {
            json_array_foreach(chans, i, ch) {
                const char *t = json_string_value(json_object_get(ch, "title"));
                if (t && (fold ? strcasecmp(t, name) : strcmp(t, name)) == 0) {
                    found = ch;
                    break;
                }
            }
        }
        if (found) {
            *conv = int_of(found, "id");
        } else {
            fprintf(stderr, "parley: %s: no channel #%s in workspace %s (parley channels %s lists them)\n", cmd,
                    name, ws_part, ws_part);
            rc = PC_EXIT_REFUSED;
        }
    }
    json_decref(chans);
    free(ws_part);
    return rc;
}

void pc_channel_label(pl_sbuf *s, json_t *workspaces, json_t *conv) {
    int64_t ws = int_of(conv, "workspace");
    const char *wname = NULL;
    size_t i;
    json_t *w;
    json_array_foreach(workspaces, i, w) {
        if (int_of(w, "id") == ws) wname = json_string_value(json_object_get(w, "name"));
    }
    int64_t first = 0;
    /* the name only when it names this workspace back as a WS argument */
    if (wname && !all_digits(wname) && ws_named(workspaces, wname, &first, NULL) == 1 && first == ws)
        pc_format_text(s, wname, strlen(wname), 1);
    else
        pl_sbuf_printf(s, "%lld", (long long)ws);
    json_t *title = json_object_get(conv, "title");
    pl_sbuf_adds(s, "/#");
    pc_format_text(s, json_string_value(title) ? json_string_value(title) : "?", json_string_length(title), 1);
}

/* ---- helpers ------------------------------------------------------------------------ */

/* "3  "Acme"  admin  members 2  channels 4" */
static void print_ws_line(json_t *w) {
    pl_sbuf line;
    pl_sbuf_init(&line);
    json_t *name = json_object_get(w, "name");
    pl_sbuf_printf(&line, "%lld  \"", (long long)int_of(w, "id"));
    pc_format_text(&line, json_string_value(name) ? json_string_value(name) : "", json_string_length(name), 1);
    pl_sbuf_printf(&line, "\"  %s  members %lld  channels %lld", pc_jstr(w, "role"),
                   (long long)int_of(w, "member_count"), (long long)int_of(w, "channel_count"));
    pc_format_flush(&line);
    pl_sbuf_release(&line);
}

/* Prints the id of a created object, or with --json the object; an
 * answer without an id is not the API's (pc_want's exit status). */
static int print_created(pc_client *c, const char *cmd, json_t *o) {
    int rc = pc_want(cmd, o, "id", JSON_INTEGER);
    if (rc) return rc;
    if (c->json) pc_print_json(o);
    else printf("%lld\n", (long long)int_of(o, "id"));
    return 0;
}

/* ---- workspaces ----------------------------------------------------------------------- */

static int ws_list(pc_client *c, const char *cmd, int argc, char **argv, char **pos) {
    json_t *list;
    int npos, rc = pc_plain_args(cmd, argc, argv, pos, &npos, 0, "takes no arguments");
    if (rc || (rc = ws_list_get(c, cmd, &list))) return rc;
    size_t i;
    json_t *w;
    json_array_foreach(list, i, w) {
        if (c->json) pc_print_json(w);
        else print_ws_line(w);
    }
    json_decref(list);
    return 0;
}

static int ws_create(pc_client *c, int argc, char **argv, char **pos) {
    const char *cmd = "workspace create";
    int npos, rc = pc_plain_args(cmd, argc, argv, pos, &npos, 1, "give one NAME (quote a name with spaces)");
    if (rc) return rc;
    if (!*pos[0]) return pc_usage_error(cmd, "NAME must not be empty");
    if (!pc_utf8(pos[0], strlen(pos[0]))) return pc_usage_error(cmd, "the name must be UTF-8");
    json_t *b = json_pack("{s:s}", "name", pos[0]), *o;
    rc = pc_call(c, cmd, "POST", "/api/v1/workspaces", b, &o);
    json_decref(b);
    if (rc) return rc;
    rc = print_created(c, cmd, o);
    json_decref(o);
    return rc;
}

static int ws_show(pc_client *c, int argc, char **argv, char **pos) {
    const char *cmd = "workspace show";
    int64_t ws;
    int npos, rc = pc_plain_args(cmd, argc, argv, pos, &npos, 1, "give one WS");
    if (rc || (rc = pc_ws_arg(c, cmd, pos[0], &ws))) return rc;
    char path[64];
    snprintf(path, sizeof path, "/api/v1/workspaces/%lld", (long long)ws);
    json_t *o;
    if ((rc = pc_call(c, cmd, "GET", path, NULL, &o))) return rc;
    if ((rc = pc_want(cmd, o, "members", JSON_ARRAY))) {
        json_decref(o);
        return rc;
    }
    if (c->json) {
        pc_print_json(o);
    } else {
        size_t i;
        json_t *m;
        json_array_foreach(json_object_get(o, "members"), i, m) {
            printf("%lld %s %s\n", (long long)int_of(m, "id"), pc_jstr(m, "username"), pc_jstr(m, "role"));
        }
    }
    json_decref(o);
    return 0;
}

/* 1 when workspace ws has a member named user, with its stored name
 * copied into stored[size]; 0 when not; -1 with *rc the exit status after
 * the error line. */
static int ws_has_member(pc_client *c, const char *cmd, int64_t ws, const char *user, char *stored, size_t size,
                         int *rc) {
    char path[64];
    snprintf(path, sizeof path, "/api/v1/workspaces/%lld", (long long)ws);
    json_t *o;
    if ((*rc = pc_call(c, cmd, "GET", path, NULL, &o))) return -1;
    const char *n = pc_member_named(json_object_get(o, "members"), user);
    if (n) snprintf(stored, size, "%s", n);
    json_decref(o);
    return n != NULL;
}

/* workspace add|remove WS USER. Adding a member again changes nothing (the
 * server answers 200 all the same): "bob was already a member of workspace
 * 3", found in the members read before the add. */
static int ws_member(pc_client *c, int argc, char **argv, char **pos, int add) {
    const char *cmd = add ? "workspace add" : "workspace remove";
    int npos, rc = pc_plain_args(cmd, argc, argv, pos, &npos, 2, "give WS and USER");
    if (rc) return rc;
    const char *user = pos[1][0] == '@' ? pos[1] + 1 : pos[1];
    if (!*user || !pc_utf8(user, strlen(user))) return pc_usage_error(cmd, "\"%s\" is not a username", pos[1]);
    int64_t ws, uid;
    char stored[64];                                  /* the name as stored, once known */
    snprintf(stored, sizeof stored, "%s", user);
    if ((rc = pc_ws_arg(c, cmd, pos[0], &ws))) return rc;
    char path[96];
    json_t *o = NULL;
    int was = 0;
    if (add && (was = ws_has_member(c, cmd, ws, user, stored, sizeof stored, &rc)) < 0) return rc;
    if (add) {
        snprintf(path, sizeof path, "/api/v1/workspaces/%lld/members", (long long)ws);
        json_t *b = json_pack("{s:s}", "username", user);
        rc = pc_call(c, cmd, "POST", path, b, &o);
        json_decref(b);
    } else {
        if ((rc = pc_user_stored(c, cmd, pos[1], &uid, stored, sizeof stored))) return rc;
        snprintf(path, sizeof path, "/api/v1/workspaces/%lld/members/%lld", (long long)ws, (long long)uid);
        rc = pc_call(c, cmd, "DELETE", path, NULL, &o);
    }
    if (rc) return rc;
    const char *n;
    if (add && o && !was && (n = pc_member_named(json_object_get(o, "members"), user)))
        snprintf(stored, sizeof stored, "%s", n);           /* the new member's stored name (audit O5) */
    user = stored;
    if (c->json && o) pc_print_json(o);
    else if (!c->json && was) printf("%s was already a member of workspace %lld\n", user, (long long)ws);
    else if (!c->json)
        printf(add ? "added %s to workspace %lld\n" : "removed %s from workspace %lld\n", user, (long long)ws);
    json_decref(o);
    return 0;
}

/* workspace role WS USER admin|member */
static int ws_role(pc_client *c, int argc, char **argv, char **pos) {
    int npos, rc = pc_plain_args("workspace role", argc, argv, pos, &npos, 3, "give WS, USER and admin or member");
    return rc ? rc : pc_role_set(c, "workspace role", pos, 1);
}

static int ws_leave(pc_client *c, int argc, char **argv, char **pos) {
    const char *cmd = "workspace leave";
    int64_t ws;
    int npos, rc = pc_plain_args(cmd, argc, argv, pos, &npos, 1, "give one WS");
    if (rc || (rc = pc_ws_arg(c, cmd, pos[0], &ws))) return rc;
    char path[96];
    snprintf(path, sizeof path, "/api/v1/workspaces/%lld/leave", (long long)ws);
    json_t *o;
    if ((rc = pc_call(c, cmd, "POST", path, NULL, &o))) return rc;
    json_decref(o);
    if (!c->json) printf("left workspace %lld\n", (long long)ws);
    return 0;
}

int pc_cmd_workspaces(pc_client *c, int argc, char **argv) {
    char **pos = pl_calloc((size_t)argc, sizeof *pos);
    int rc = ws_list(c, "workspaces", argc, argv, pos);
    free(pos);
    return rc;
}

int pc_cmd_workspace(pc_client *c, int argc, char **argv) {
    if (argc < 2) return pc_usage_error("workspace", "create, list, show, add, remove, role or leave?");
    char **pos = pl_calloc((size_t)argc, sizeof *pos);
    const char *sub = argv[1];
    int rc;
    if (strcmp(sub, "create") == 0) rc = ws_create(c, argc - 1, argv + 1, pos);
    else if (strcmp(sub, "list") == 0) rc = ws_list(c, "workspace list", argc - 1, argv + 1, pos);
    else if (strcmp(sub, "show") == 0) rc = ws_show(c, argc - 1, argv + 1, pos);
    else if (strcmp(sub, "add") == 0) rc = ws_member(c, argc - 1, argv + 1, pos, 1);
    else if (strcmp(sub, "remove") == 0) rc = ws_member(c, argc - 1, argv + 1, pos, 0);
    else if (strcmp(sub, "leave") == 0) rc = ws_leave(c, argc - 1, argv + 1, pos);
    else if (strcmp(sub, "role") == 0) rc = ws_role(c, argc - 1, argv + 1, pos);
    else rc = pc_usage_error("workspace", "unknown subcommand \"%s\" (create, list, show, add, remove, role or leave)",
                             sub);
    free(pos);
    return rc;
}

/* ---- channels -------------------------------------------------------------------------- */

/* "41  #general  public   joined  members 2" */
static int ch_list(pc_client *c, const char *cmd, int argc, char **argv, char **pos) {
    int64_t ws;
    int npos, rc = pc_plain_args(cmd, argc, argv, pos, &npos, 1, "give one WS");
    if (rc || (rc = pc_ws_arg(c, cmd, pos[0], &ws))) return rc;
    json_t *chans;
    if ((rc = channels_of(c, cmd, ws, &chans))) return rc;
    pl_sbuf line;
    pl_sbuf_init(&line);
    size_t i;
    json_t *ch;
    json_array_foreach(chans, i, ch) {
        if (c->json) {
            pc_print_json(ch);
            continue;
        }
        json_t *title = json_object_get(ch, "title");
        pl_sbuf_printf(&line, "%lld  #", (long long)int_of(ch, "id"));
        pc_format_text(&line, json_string_value(title) ? json_string_value(title) : "?", json_string_length(title),
                       1);
        pl_sbuf_printf(&line, "  %-7s  %-6s  members %lld",
                       json_is_true(json_object_get(ch, "private")) ? "private" : "public",
                       json_is_true(json_object_get(ch, "joined")) ? "joined" : "-",
                       (long long)int_of(ch, "member_count"));
        pc_format_flush(&line);
    }
    pl_sbuf_release(&line);
    json_decref(chans);
    return 0;
}

/* channel create WS NAME [USER...] [--private] */
static int ch_create(pc_client *c, int argc, char **argv, char **pos) {
    const char *cmd = "channel create";
    pc_opt o[] = {{.name = "--private"}};
    int npos, rc = pc_args(cmd, argc, argv, o, 1, pos, &npos);
    if (rc) return rc;
    if (npos < 2) return pc_usage_error(cmd, "give WS and NAME (and USERs to add)");
    const char *name = pos[1][0] == '#' ? pos[1] + 1 : pos[1];
    if (!*name) return pc_usage_error(cmd, "NAME must not be empty");
    if (!pc_utf8(name, strlen(name))) return pc_usage_error(cmd, "\"%s\" is not a channel name", pos[1]);
    int64_t ws;
    if ((rc = pc_ws_arg(c, cmd, pos[0], &ws))) return rc;
    json_t *members = json_array();
    for (int i = 2; i < npos && rc == 0; i++) {
        int64_t id;
        if ((rc = pc_user_arg(c, cmd, pos[i], &id)) == 0) json_array_append_new(members, json_integer(id));
    }
    if (rc) {
        json_decref(members);
        return rc;
    }
    json_t *b = json_pack("{s:s,s:b,s:o}", "name", name, "private", o[0].set, "members", members), *ch;
    char path[96];
    snprintf(path, sizeof path, "/api/v1/workspaces/%lld/channels", (long long)ws);
    rc = pc_call(c, cmd, "POST", path, b, &ch);
    json_decref(b);
    if (rc) return rc;
    rc = print_created(c, cmd, ch);
    json_decref(ch);
    return rc;
}

/* channel join CONV, channel leave CONV (a channel only: anything else is
 * "404 not_found: no such channel", the server's answer to a join of it) */
static int ch_join_leave(pc_client *c, int argc, char **argv, char **pos, int join) {
    const char *cmd = join ? "channel join" : "channel leave";
    int64_t conv;
    int npos, rc = pc_plain_args(cmd, argc, argv, pos, &npos, 1, "give one channel (an id or WS/#NAME)");
    if (rc || (rc = pc_conv_arg(c, cmd, pos[0], &conv))) return rc;
    if (!join) {
        /* only a channel: a group or a direct conversation is refused as
         * join refuses it (the server's leave would take any of them) */
        json_t *cv;
        if ((rc = pc_conv_get(c, cmd, conv, &cv))) return rc;
        const char *kind = json_string_value(json_object_get(cv, "kind"));
        int channel = kind && strcmp(kind, "channel") == 0;
        json_decref(cv);
        if (!channel) {
            fprintf(stderr, "parley: %s: 404 not_found: no such channel\n", cmd);
            return PC_EXIT_REFUSED;
        }
    }
    char path[96];
    snprintf(path, sizeof path, "/api/v1/conversations/%lld/%s", (long long)conv, join ? "join" : "leave");
    json_t *o;
    if ((rc = pc_call(c, cmd, "POST", path, NULL, &o))) return rc;
    if (c->json && o) pc_print_json(o);
    else if (!c->json) printf("%s %lld\n", join ? "joined" : "left", (long long)conv);
    json_decref(o);
    return 0;
}

int pc_cmd_channels(pc_client *c, int argc, char **argv) {
    char **pos = pl_calloc((size_t)argc, sizeof *pos);
    int rc = ch_list(c, "channels", argc, argv, pos);
    free(pos);
    return rc;
}

int pc_cmd_channel(pc_client *c, int argc, char **argv) {
    if (argc < 2) return pc_usage_error("channel", "create, list, join or leave?");
    char **pos = pl_calloc((size_t)argc, sizeof *pos);
    const char *sub = argv[1];
    int rc;
    if (strcmp(sub, "create") == 0) rc = ch_create(c, argc - 1, argv + 1, pos);
    else if (strcmp(sub, "list") == 0) rc = ch_list(c, "channel list", argc - 1, argv + 1, pos);
    else if (strcmp(sub, "join") == 0) rc = ch_join_leave(c, argc - 1, argv + 1, pos, 1);
    else if (strcmp(sub, "leave") == 0) rc = ch_join_leave(c, argc - 1, argv + 1, pos, 0);
    else rc = pc_usage_error("channel", "unknown subcommand \"%s\" (create, list, join or leave)", sub);
    free(pos);
    return rc;
}
