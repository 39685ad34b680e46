/* cmd_conv.c — the conversation commands: conversations (ls), dm, group
 * create/add/remove, leave, members, read (docs/protocol.md section 2 and
 * "Receipts"), and resolving CONV and USER arguments for every command (a
 * channel's WS/#NAME is cmd_workspace.c's).
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cli.h"
#include "core/alloc.h"
#include "core/buf.h"
#include "format.h"
#include "names.h"

#define PREVIEW_CHARS 60              /* a conversation's last event, cut */

/* ---- arguments --------------------------------------------------------------- */

static const char *bare_name(const char *arg) { return arg[0] == '@' ? arg + 1 : arg; }

/* POST /api/v1/conversations {"kind": "direct", "username": name}. */
static int open_direct(pc_client *c, const char *cmd, const char *name, json_t **conv) {
    json_t *b = json_pack("{s:s,s:s}", "kind", "direct", "username", name);
    int rc = pc_call(c, cmd, "POST", "/api/v1/conversations", b, conv);
    json_decref(b);
    return rc;
}

/* The id N of "@deleted#N", the name `ls` shows for a deleted account
 * (protocol.md: renamed "deleted#<id>"), else 0. */
static int64_t deleted_user(const char *arg) {
    static const char pre[] = "@deleted#";
    if (strncmp(arg, pre, sizeof pre - 1) != 0) return 0;
    const char *p = arg + sizeof pre - 1;
    if (*p < '1' || *p > '9' || strlen(p) > 16) return 0;
    int64_t id = 0;
    for (; *p >= '0' && *p <= '9'; p++) id = id * 10 + (*p - '0');
    return *p || id > PC_JSON_INT_MAX ? 0 : id;
}

/* My direct conversation with deleted user `user`: no one can open one
 * with that name (it is no username), so it is looked for among my direct
 * conversations, by their members, as `ls` names them. */
static int deleted_direct(pc_client *c, const char *cmd, int64_t user, int64_t *conv) {
    json_t *list;
    int rc = pc_call(c, cmd, "GET", "/api/v1/conversations", NULL, &list);
    if (rc) return rc;
    size_t i, k;
    json_t *cv, *m;
    *conv = 0;
    json_array_foreach(json_object_get(list, "conversations"), i, cv) {
        const char *kind = json_string_value(json_object_get(cv, "kind"));
        if (!kind || strcmp(kind, "direct") != 0) continue;
        json_t *full;
        int64_t id = json_integer_value(json_object_get(cv, "id"));
        if ((rc = pc_conv_get(c, cmd, id, &full))) break;
        json_array_foreach(json_object_get(full, "members"), k, m) {
            if (json_integer_value(json_object_get(m, "id")) == user) *conv = id;
        }
        json_decref(full);
        if (*conv) break;
    }
    json_decref(list);
    if (rc == 0 && !*conv) {
        fprintf(stderr, "parley: %s: no direct conversation with deleted#%lld (parley ls lists them)\n", cmd,
                (long long)user);
        rc = PC_EXIT_REFUSED;
    }
    return rc;
}

int pc_conv_arg(pc_client *c, const char *cmd, const char *arg, int64_t *conv) {
    int64_t gone = deleted_user(arg);
    if (gone) return deleted_direct(c, cmd, gone, conv);
    if (arg[0] == '@') {
        if (!arg[1] || !pc_utf8(arg, strlen(arg)))
            return pc_usage_error(cmd, "\"%s\" is not a conversation (an id, @username or WS/#channel)", arg);
        json_t *o;
        int rc = open_direct(c, cmd, arg + 1, &o);
        if (rc) return rc;
        *conv = json_integer_value(json_object_get(o, "id"));
        json_decref(o);
        return 0;
    }
    if (strchr(arg, '/')) return pc_channel_arg(c, cmd, arg, conv);
    const char *p = arg;
    while (*p >= '0' && *p <= '9') p++;
    if (p == arg || *p)
        return pc_usage_error(cmd, "\"%s\" is not a conversation (an id, @username or WS/#channel)", arg);
    return pc_num(cmd, "a conversation id", arg, 1, conv);
}

int pc_user_lookup(pc_client *c, const char *cmd, const char *arg, json_t **user) {
    const char *name = bare_name(arg);
    if (!*name || !pc_utf8(name, strlen(name))) return pc_usage_error(cmd, "\"%s\" is not a username", arg);
    pl_sbuf path;
    pl_sbuf_init(&path);
    pc_path_add(c, &path, "/api/v1/users/", name);
    int rc = pc_call(c, cmd, "GET", path.p, NULL, user);
    pl_sbuf_release(&path);
    return rc;
}

int pc_user_stored(pc_client *c, const char *cmd, const char *arg, int64_t *id, char *stored, size_t size) {
    json_t *u;
    int rc = pc_user_lookup(c, cmd, arg, &u);
    if (rc) return rc;
    /* what it goes on with (audit M1: without them, user 0 and the typed name) */
    if ((rc = pc_want(cmd, u, "id", JSON_INTEGER)) || (rc = pc_want(cmd, u, "username", JSON_STRING))) {
        json_decref(u);
        return rc;
    }
    *id = json_integer_value(json_object_get(u, "id"));
    snprintf(stored, size, "%s", json_string_value(json_object_get(u, "username")));
    json_decref(u);
    return 0;
}

int pc_user_arg(pc_client *c, const char *cmd, const char *arg, int64_t *id) {
    char stored[64];
    return pc_user_stored(c, cmd, arg, id, stored, sizeof stored);
}

const char *pc_member_named(json_t *members, const char *name) {
    const char *found = NULL;
    size_t i;
    json_t *m;
    json_array_foreach(members, i, m) {
        const char *u = json_string_value(json_object_get(m, "username"));
        if (u && strcasecmp(u, name) == 0) found = u;
    }
    return found;
}

int pc_conv_get(pc_client *c, const char *cmd, int64_t conv, json_t **out) {
    char path[64];
    snprintf(path, sizeof path, "/api/v1/conversations/%lld", (long long)conv);
    return pc_call(c, cmd, "GET", path, NULL, out);
}

/* ---- conversations ------------------------------------------------------------ */

/* My user id: the session's, or (with $PARLEY_TOKEN) GET /me's. */
static int64_t self_id(pc_client *c) {
    if (!c->env_token && c->has_session && c->sess.user_id) return c->sess.user_id;
    pc_resp r;
    pc_request(c, "GET", "/api/v1/me", NULL, 1, &r);
    int64_t id = r.status == 200 ? json_integer_value(json_object_get(r.body, "id")) : 0;
    pc_resp_release(&r);
    return id;
}

/* A direct conversation's name: "@" and the other member's username (its
 * member list also names the senders of its preview). */
static void direct_name(pl_sbuf *s, pc_client *c, pc_names *names, int64_t conv, int64_t me) {
    json_t *o;
    char path[64];
    snprintf(path, sizeof path, "/api/v1/conversations/%lld", (long long)conv);
    pc_resp r;
    pc_request(c, "GET", path, NULL, 1, &r);
    if (r.status == 200) pc_names_seed(names, r.body);
    const char *other = NULL;
    size_t i;
    json_array_foreach(json_object_get(r.body, "members"), i, o) {
        if (json_integer_value(json_object_get(o, "id")) != me)
            other = json_string_value(json_object_get(o, "username"));
    }
    if (other) pl_sbuf_printf(s, "@%s", other);
    else pl_sbuf_adds(s, "(direct)");
    pc_resp_release(&r);
}

int pc_cmd_conversations(pc_client *c, int argc, char **argv) {
    char **pos = pl_calloc((size_t)argc, sizeof *pos);
    int npos, rc = pc_plain_args(argv[0], argc, argv, pos, &npos, 0, "takes no arguments");
    free(pos);
    if (rc) return rc;
    json_t *ans;
    if ((rc = pc_call(c, argv[0], "GET", "/api/v1/conversations", NULL, &ans))) return rc;
    if ((rc = pc_want(argv[0], ans, "conversations", JSON_ARRAY))) {
        json_decref(ans);
        return rc;
    }
    pc_names *names = c->json ? NULL : pc_names_new(c);
    int64_t me = c->json ? 0 : self_id(c);
    json_t *workspaces = NULL;                /* fetched for the first channel */
    int ws_fetched = 0;
    pl_sbuf line;
    pl_sbuf_init(&line);
    size_t i;
    json_t *cv;
    json_array_foreach(json_object_get(ans, "conversations"), i, cv) {
        if (c->json) {
            pc_print_json(cv);
            continue;
        }
        int64_t id = json_integer_value(json_object_get(cv, "id"));
        const char *kind = json_string_value(json_object_get(cv, "kind"));
        json_t *title = json_object_get(cv, "title");
        pl_sbuf_printf(&line, "%lld  %-6s  ", (long long)id, kind ? kind : "?");
        if (kind && strcmp(kind, "channel") == 0) {
            if (!ws_fetched++) workspaces = pc_ws_fetch(c);
            pc_channel_label(&line, workspaces, cv);
        } else if (json_is_string(title)) {
            pl_sbuf_addc(&line, '"');
            pc_format_text(&line, json_string_value(title), json_string_length(title), 1);
            pl_sbuf_addc(&line, '"');
        } else {
            direct_name(&line, c, names, id, me);
            /* either member's block (protocol.md "Blocking a user") */
            if (json_is_true(json_object_get(cv, "blocked"))) pl_sbuf_adds(&line, "  blocked");
        }
        pl_sbuf_printf(&line, "  unread %lld  ", (long long)json_integer_value(json_object_get(cv, "unread")));
        json_t *last = json_object_get(cv, "last");
        if (json_is_object(last)) pc_format_preview(&line, last, names, PREVIEW_CHARS);
        else pl_sbuf_adds(&line, "-");
        pc_format_flush(&line);
    }
    pl_sbuf_release(&line);
    pc_names_free(&names);
    json_decref(workspaces);
    json_decref(ans);
    return 0;
}

/* ---- dm, group ----------------------------------------------------------------------- */

int pc_cmd_dm(pc_client *c, int argc, char **argv) {
    char **pos = pl_calloc((size_t)argc, sizeof *pos);
    int npos, rc = pc_plain_args(argv[0], argc, argv, pos, &npos, 1, "give one USER");
    const char *user = pos[0];
    free(pos);
    if (rc) return rc;
    const char *name = bare_name(user);
    if (!*name || !pc_utf8(name, strlen(name))) return pc_usage_error(argv[0], "\"%s\" is not a username", user);
    json_t *o;
    if ((rc = open_direct(c, "dm", name, &o))) return rc;
    if ((rc = pc_want("dm", o, "id", JSON_INTEGER))) {
        json_decref(o);
        return rc;
    }
    if (c->json) pc_print_json(o);
    else printf("%lld\n", (long long)json_integer_value(json_object_get(o, "id")));
    json_decref(o);
    return 0;
}

static int group_create(pc_client *c, int argc, char **argv, char **pos) {
    const char *cmd = "group create";
    int npos, rc = pc_plain_args(cmd, argc, argv, pos, &npos, -1, "give a TITLE (and USERs to add)");
    if (rc) return rc;
    const char *title = pos[0];
    if (!*title) return pc_usage_error(cmd, "TITLE must not be empty");
    if (!pc_utf8(title, strlen(title))) return pc_usage_error(cmd, "the title must be UTF-8");
    json_t *members = json_array();
    for (int i = 1; i < npos && rc == 0; i++) {
        int64_t id;
        if ((rc = pc_user_arg(c, cmd, pos[i], &id)) == 0) json_array_append_new(members, json_integer(id));
    }
    if (rc) {
        json_decref(members);
        return rc;
    }
    json_t *b = json_pack("{s:s,s:s,s:o}", "kind", "group", "title", title, "members", members);
    json_t *o;
    rc = pc_call(c, cmd, "POST", "/api/v1/conversations", b, &o);
    json_decref(b);
    if (rc) return rc;
    if ((rc = pc_want(cmd, o, "id", JSON_INTEGER))) {
        json_decref(o);
        return rc;
    }
    if (c->json) pc_print_json(o);
    else printf("%lld\n", (long long)json_integer_value(json_object_get(o, "id")));
    json_decref(o);
    return 0;
}

/* group add|remove CONV USER. Adding a member again changes nothing (the
 * server answers 200 all the same): "bob was already a member of 12",
 * found in the member list read before the add. An add names the user to
 * the server by name, so its answer for one that does not exist comes
 * after its admin check, as the REST route's (audit O4: a non-admin got
 * the lookup's "no such user" here, 403 there). */
static int group_member(pc_client *c, int argc, char **argv, char **pos, int add) {
    const char *cmd = add ? "group add" : "group remove";
    int npos, rc = pc_plain_args(cmd, argc, argv, pos, &npos, 2, "give CONV and USER");
    if (rc) return rc;
    const char *bare = bare_name(pos[1]);       /* checked as pc_user_lookup checks it */
    if (!*bare || !pc_utf8(bare, strlen(bare))) return pc_usage_error(cmd, "\"%s\" is not a username", pos[1]);
    int64_t conv, user = 0;
    char shown[64];                                   /* the name as stored, once known */
    snprintf(shown, sizeof shown, "%s", bare);
    if ((rc = pc_conv_arg(c, cmd, pos[0], &conv))) return rc;
    if (!add && (rc = pc_user_stored(c, cmd, pos[1], &user, shown, sizeof shown))) return rc;
    char path[96];
    json_t *o = NULL;
    int was = 0;
    if (add) {
        json_t *cv;
        const char *name = bare_name(pos[1]), *n;
        if ((rc = pc_conv_get(c, cmd, conv, &cv))) return rc;
        if ((n = pc_member_named(json_object_get(cv, "members"), name))) {
            was = 1;
            snprintf(shown, sizeof shown, "%s", n);
        }
        json_decref(cv);
        snprintf(path, sizeof path, "/api/v1/conversations/%lld/members", (long long)conv);
        json_t *b = json_pack("{s:s}", "username", name);
        rc = pc_call(c, cmd, "POST", path, b, &o);
        json_decref(b);
    } else {
        snprintf(path, sizeof path, "/api/v1/conversations/%lld/members/%lld", (long long)conv, (long long)user);
        rc = pc_call(c, cmd, "DELETE", path, NULL, &o);
    }
    if (rc) return rc;
    const char *n;
    if (add && o && !was && (n = pc_member_named(json_object_get(o, "members"), bare_name(pos[1]))))
        snprintf(shown, sizeof shown, "%s", n);             /* the new member's stored name */
    if (c->json && o) pc_print_json(o);
    else if (!c->json && was) printf("%s was already a member of %lld\n", shown, (long long)conv);
    else if (!c->json) printf(add ? "added %s to %lld\n" : "removed %s from %lld\n", shown, (long long)conv);
    json_decref(o);
    return 0;
}

int pc_role_set(pc_client *c, const char *cmd, char **pos, int ws) {
    if (strcmp(pos[2], "admin") != 0 && strcmp(pos[2], "member") != 0)
        return pc_usage_error(cmd, "the role is admin or member, not \"%s\"", pos[2]);
    int64_t id, user;
    char shown[64];                                   /* the name as stored */
    int rc = ws ? pc_ws_arg(c, cmd, pos[0], &id) : pc_conv_arg(c, cmd, pos[0], &id);
    if (rc || (rc = pc_user_stored(c, cmd, pos[1], &user, shown, sizeof shown))) return rc;
    char path[96];
    snprintf(path, sizeof path, "/api/v1/%s/%lld/members/%lld", ws ? "workspaces" : "conversations",
             (long long)id, (long long)user);
    json_t *b = json_pack("{s:s}", "role", pos[2]), *o = NULL;
    rc = pc_call(c, cmd, "PATCH", path, b, &o);
    json_decref(b);
    if (rc) return rc;
    if (c->json && o) pc_print_json(o);
    else if (!c->json)
        printf("%s is %s of %s%lld\n", shown, strcmp(pos[2], "admin") == 0 ? "an admin" : "a member",
               ws ? "workspace " : "", (long long)id);
    json_decref(o);
    return 0;
}

/* group role CONV USER admin|member */
static int group_role(pc_client *c, int argc, char **argv, char **pos) {
    int npos, rc = pc_plain_args("group role", argc, argv, pos, &npos, 3, "give CONV, USER and admin or member");
    return rc ? rc : pc_role_set(c, "group role", pos, 0);
}

int pc_cmd_group(pc_client *c, int argc, char **argv) {
    if (argc < 2) return pc_usage_error("group", "create, add, remove or role?");
    char **pos = pl_calloc((size_t)argc, sizeof *pos);
    int rc;
    if (strcmp(argv[1], "create") == 0) rc = group_create(c, argc - 1, argv + 1, pos);
    else if (strcmp(argv[1], "add") == 0) rc = group_member(c, argc - 1, argv + 1, pos, 1);
    else if (strcmp(argv[1], "remove") == 0) rc = group_member(c, argc - 1, argv + 1, pos, 0);
    else if (strcmp(argv[1], "role") == 0) rc = group_role(c, argc - 1, argv + 1, pos);
    else rc = pc_usage_error("group", "unknown subcommand \"%s\" (create, add, remove or role)", argv[1]);
    free(pos);
    return rc;
}

/* ---- leave, members, read ------------------------------------------------------------ */

/* The one CONV argument of a command (leave, members). */
static int one_conv(pc_client *c, int argc, char **argv, int64_t *conv) {
    char **pos = pl_calloc((size_t)argc, sizeof *pos);
    int npos, rc = pc_plain_args(argv[0], argc, argv, pos, &npos, 1, "give one CONV");
    if (rc == 0) rc = pc_conv_arg(c, argv[0], pos[0], conv);
    free(pos);
    return rc;
}

int pc_cmd_leave(pc_client *c, int argc, char **argv) {
    int64_t conv;
    int rc = one_conv(c, argc, argv, &conv);
    if (rc) return rc;
    char path[96];
    snprintf(path, sizeof path, "/api/v1/conversations/%lld/leave", (long long)conv);
    json_t *o;
    if ((rc = pc_call(c, "leave", "POST", path, NULL, &o))) return rc;
    json_decref(o);
    if (!c->json) printf("left %lld\n", (long long)conv);
    return 0;
}

int pc_cmd_members(pc_client *c, int argc, char **argv) {
    int64_t conv;
    int rc = one_conv(c, argc, argv, &conv);
    if (rc) return rc;
    json_t *o;
    if ((rc = pc_conv_get(c, "members", conv, &o))) return rc;
    if ((rc = pc_want("members", o, "members", JSON_ARRAY))) {
        json_decref(o);
        return rc;
    }
    size_t i;
    json_t *m;
    json_array_foreach(json_object_get(o, "members"), i, m) {
        if (c->json) pc_print_json(m);
        else printf("%lld %s %s\n", (long long)json_integer_value(json_object_get(m, "id")),
                    pc_jstr(m, "username"), pc_jstr(m, "role"));
    }
    json_decref(o);
    return 0;
}

int pc_cmd_read(pc_client *c, int argc, char **argv) {
    char **pos = pl_calloc((size_t)argc, sizeof *pos);
    int npos, rc = pc_args(argv[0], argc, argv, NULL, 0, pos, &npos);
    int64_t conv = 0, seq = 0;
    if (rc == 0 && (npos < 1 || npos > 2)) rc = pc_usage_error(argv[0], "give CONV and optionally SEQ");
    if (rc == 0 && npos == 2) rc = pc_num(argv[0], "SEQ", pos[1], 1, &seq);
    if (rc == 0) rc = pc_conv_arg(c, argv[0], pos[0], &conv);
    free(pos);
    if (rc) return rc;
    json_t *cv;                               /* the cursor the server will hold: */
    if ((rc = pc_conv_get(c, "read", conv, &cv))) return rc;
    if ((rc = pc_want("read", cv, "last_seq", JSON_INTEGER)) || (rc = pc_want("read", cv, "read_seq", JSON_INTEGER))) {
        json_decref(cv);
        return rc;
    }
    int64_t last = json_integer_value(json_object_get(cv, "last_seq"));
    int64_t had = json_integer_value(json_object_get(cv, "read_seq"));
    json_decref(cv);
    if (!seq || seq > last) seq = last;       /* at most the last event ... */
    char path[96];
    snprintf(path, sizeof path, "/api/v1/conversations/%lld/read", (long long)conv);
    json_t *b = json_pack("{s:I}", "seq", (json_int_t)seq), *o;
    rc = pc_call(c, "read", "POST", path, b, &o);
    json_decref(b);
    json_decref(o);
    if (rc == 0 && !c->json)                  /* ... and never back */
        printf("read %lld up to #%lld\n", (long long)conv, (long long)(seq > had ? seq : had));
    return rc;
}
