/* cmd_account.c — the account commands: register, login, logout, whoami,
 * users (docs/protocol.md section 1), delete-account ("Data lifecycle").
 *
 * Owns: reading the password ($PARLEY_PASSWORD, else one line of stdin,
 * not echoed on a terminal; never argv) and keeping it out of everything
 * but the one request body, which is wiped after use; the confirmation
 * that an account deletion needs (--yes, or the username typed).
 */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <termios.h>
#include <unistd.h>

#include "cli.h"
#include "core/alloc.h"
#include "core/buf.h"

/* ---- the password --------------------------------------------------------------- */

static struct termios saved_tty;                /* restored on a signal during the prompt */

static void restore_tty(int sig) {
    tcsetattr(STDIN_FILENO, TCSANOW, &saved_tty);
    signal(sig, SIG_DFL);
    raise(sig);
}

/* The password: a new string (wipe and free it), or NULL after a line on
 * stderr. */
static char *read_password(const char *cmd) {
    const char *env = getenv("PARLEY_PASSWORD");
    if (env && *env) return pl_strdup(env);      /* set but empty: as unset */
    int tty = isatty(STDIN_FILENO) && tcgetattr(STDIN_FILENO, &saved_tty) == 0;
    void (*old_int)(int) = SIG_DFL, (*old_term)(int) = SIG_DFL;
    if (tty) {
        fputs("Password: ", stderr);
        fflush(stderr);
        old_int = signal(SIGINT, restore_tty);
        old_term = signal(SIGTERM, restore_tty);
        struct termios quiet = saved_tty;
        quiet.c_lflag &= ~(tcflag_t)ECHO;
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet);
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t n = getline(&line, &cap, stdin);
    if (tty) {
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved_tty);
        signal(SIGINT, old_int);
        signal(SIGTERM, old_term);
        fputc('\n', stderr);
    }
    if (n < 0) {
        free(line);
        fprintf(stderr, "parley: %s: no password: set PARLEY_PASSWORD or give it on stdin\n", cmd);
        return NULL;
    }
    if (n > 0 && line[n - 1] == '\n') line[--n] = '\0';
    if (n > 0 && line[n - 1] == '\r') line[--n] = '\0';
    return line;
}

static void wipe_free(char *s) {
    if (!s) return;
    explicit_bzero(s, strlen(s));
    free(s);
}

/* ---- register, login ---------------------------------------------------------------- */

static int enter(pc_client *c, int argc, char **argv, int reg) {
    const char *cmd = argv[0];
    char **pos = pl_calloc((size_t)argc, sizeof *pos);
    int npos, rc = pc_args(cmd, argc, argv, NULL, 0, pos, &npos);
    const char *user = pos[0];
    free(pos);
    if (rc) return rc;
    if (npos != 1) return pc_usage_error(cmd, "give one USERNAME");
    if (!*user) return pc_usage_error(cmd, "\"%s\" is not a username", user);
    if (!pc_utf8(user, strlen(user))) return pc_usage_error(cmd, "the username is not valid UTF-8");
    char *pw = read_password(cmd);
    if (!pw) return PC_EXIT_USAGE;
    if (!pc_utf8(pw, strlen(pw))) {
        wipe_free(pw);
        fprintf(stderr, "parley: %s: the password is not valid UTF-8\n", cmd);
        return PC_EXIT_USAGE;
    }
    /* the body by hand, so the one copy of the password can be wiped */
    pl_sbuf body;
    pl_sbuf_init(&body);
    pl_sbuf_adds(&body, "{\"username\":");
    pl_sbuf_add_json_str(&body, user, strlen(user));
    pl_sbuf_adds(&body, ",\"password\":");
    pl_sbuf_add_json_str(&body, pw, strlen(pw));
    pl_sbuf_addc(&body, '}');
    wipe_free(pw);
    pc_resp r;
    pc_request_raw(c, "POST", reg ? "/api/v1/auth/register" : "/api/v1/auth/login", body.p, body.len, 0, &r);
    explicit_bzero(body.p, body.cap);
    pl_sbuf_release(&body);

    if (pc_exit_of(&r)) {
        rc = pc_fail(cmd, &r);
    } else if (pc_adopt_login(c, r.body)) {
        rc = PC_EXIT_REFUSED;
    } else if (c->json) {
        /* the answer without its tokens: stdout is no place for secrets */
        json_object_del(r.body, "access_token");
        json_object_del(r.body, "refresh_token");
        pc_print_json(r.body);
    } else {
        printf("%s %s (user %lld)\n", reg ? "registered" : "logged in as", c->sess.username,
               (long long)c->sess.user_id);
    }
    pc_resp_release(&r);
    return rc;
}

int pc_cmd_register(pc_client *c, int argc, char **argv) { return enter(c, argc, argv, 1); }
int pc_cmd_login(pc_client *c, int argc, char **argv) { return enter(c, argc, argv, 0); }

/* ---- logout ------------------------------------------------------------------------------ */

int pc_cmd_logout(pc_client *c, int argc, char **argv) {
    char **pos = pl_calloc((size_t)argc, sizeof *pos);
    int npos, rc = pc_args(argv[0], argc, argv, NULL, 0, pos, &npos);
    free(pos);
    if (rc) return rc;
    if (npos) return pc_usage_error(argv[0], "takes no arguments");
    pc_resp r;
    if (c->has_session && c->sess.refresh_token) {
        json_t *b = json_pack("{s:s}", "refresh_token", c->sess.refresh_token);
        pc_request(c, "POST", "/api/v1/auth/logout", b, 0, &r);
        json_decref(b);
    } else if (c->env_token) {
        pc_request(c, "POST", "/api/v1/auth/logout", NULL, 1, &r);
    } else {
        fprintf(stderr, "parley: logout: not logged in%s%s\n", c->other_server ? " to " : "",
                c->other_server ? c->server : "");
        return PC_EXIT_REFUSED;
    }
    /* 401: the server had ended the session already; the file goes too */
    if (pc_exit_of(&r) && r.status != 401) {
        rc = pc_fail("logout", &r);
    } else if (c->has_session && pc_session_remove(c->session_path)) {
        rc = PC_EXIT_REFUSED;
    } else if (!c->json) {
        printf("logged out%s\n", r.status == 401 ? " (the server had already ended the session)" : "");
    }
    pc_resp_release(&r);
    return rc;
}

/* ---- whoami, users ------------------------------------------------------------------------ */

int pc_cmd_whoami(pc_client *c, int argc, char **argv) {
    char **pos = pl_calloc((size_t)argc, sizeof *pos);
    int npos, rc = pc_args(argv[0], argc, argv, NULL, 0, pos, &npos);
    free(pos);
    if (rc) return rc;
    if (npos) return pc_usage_error(argv[0], "takes no arguments");
    json_t *me;
    if ((rc = pc_call(c, "whoami", "GET", "/api/v1/me", NULL, &me))) return rc;
    if ((rc = pc_want("whoami", me, "id", JSON_INTEGER)) || (rc = pc_want("whoami", me, "username", JSON_STRING))) {
        json_decref(me);
        return rc;
    }
    if (c->json) pc_print_json(me);
    else printf("%s (user %lld)\n", pc_jstr(me, "username"),
                (long long)json_integer_value(json_object_get(me, "id")));
    json_decref(me);
    return 0;
}

int pc_cmd_users(pc_client *c, int argc, char **argv) {
    char **pos = pl_calloc((size_t)argc, sizeof *pos);
    int npos, rc = pc_args(argv[0], argc, argv, NULL, 0, pos, &npos);
    char *q = npos == 1 ? pos[0] : NULL;
    free(pos);
    if (rc) return rc;
    if (!q) return pc_usage_error(argv[0], "give one QUERY (part of a username)");
    if ((rc = pc_query_arg(argv[0], q))) return rc;
    if (!pc_utf8(q, strlen(q))) return pc_usage_error(argv[0], "the query is not valid UTF-8");
    pl_sbuf path;
    pl_sbuf_init(&path);
    pc_path_add(c, &path, "/api/v1/users?q=", q);
    json_t *ans;
    rc = pc_call(c, "users", "GET", path.p, NULL, &ans);
    pl_sbuf_release(&path);
    if (rc == 0 && (rc = pc_want("users", ans, "users", JSON_ARRAY))) json_decref(ans);
    if (rc) return rc;
    size_t i;
    json_t *u;
    json_array_foreach(json_object_get(ans, "users"), i, u) {
        if (c->json) pc_print_json(u);
        else printf("%lld %s\n", (long long)json_integer_value(json_object_get(u, "id")),
                    pc_jstr(u, "username"));
    }
    json_decref(ans);
    return 0;
}

/* ---- delete-account -------------------------------------------------------------- */

/* Without --yes: one line of stdin (after a prompt on a terminal) must be
 * the username, ASCII case aside. 0, or PC_EXIT_USAGE after a line. */
static int confirm_deletion(const char *user) {
    int tty = isatty(STDIN_FILENO);
    if (tty) {
        fprintf(stderr, "This deletes the account %s for good: you leave every group, channel and workspace,\n"
                        "your messages are erased, and the name is free for anyone to take.\n"
                        "Type %s to confirm: ", user, user);
        fflush(stderr);
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t n = getline(&line, &cap, stdin);
    while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r')) line[--n] = '\0';
    int ok = n > 0 && strcasecmp(line, user) == 0;
    free(line);
    if (!ok) {
        fprintf(stderr, "parley: delete-account: not confirmed (type the username, or give --yes): "
                        "nothing was deleted\n");
        return PC_EXIT_USAGE;
    }
    return 0;
}

int pc_cmd_delete_account(pc_client *c, int argc, char **argv) {
    const char *cmd = "delete-account";
    pc_opt o[] = {{"--yes", 0, NULL, 0}};
    char **pos = pl_calloc((size_t)argc, sizeof *pos);
    int npos, rc = pc_args(cmd, argc, argv, o, 1, pos, &npos);
    free(pos);
    if (rc) return rc;
    if (npos) return pc_usage_error(cmd, "takes no arguments (the account is the one logged in)");
    /* who: also makes sure the access token is fresh (a wrong password is
     * the DELETE's 403) */
    json_t *me;
    if ((rc = pc_call(c, cmd, "GET", "/api/v1/me", NULL, &me))) return rc;
    char *user = pl_strdup(pc_jstr(me, "username"));
    int64_t uid = json_integer_value(json_object_get(me, "id"));
    json_decref(me);
    if (!o[0].set && (rc = confirm_deletion(user))) {
        free(user);
        return rc;
    }
    char *pw = read_password(cmd);
    if (!pw) {
        free(user);
        return PC_EXIT_USAGE;
    }
    pl_sbuf body;
    pl_sbuf_init(&body);
    pl_sbuf_adds(&body, "{\"password\":");
    pl_sbuf_add_json_str(&body, pw, strlen(pw));
    pl_sbuf_addc(&body, '}');
    wipe_free(pw);
    pc_resp r;
    pc_request_raw(c, "DELETE", "/api/v1/me", body.p, body.len, PC_AUTH_ONCE, &r);
    explicit_bzero(body.p, body.cap);
    pl_sbuf_release(&body);
    if (r.status == 403) {
        /* a wrong password, or an account that may not go (a server admin's):
         * the server's message says which, and nothing was deleted either way */
        rc = pc_fail_hint(cmd, &r, " (nothing was deleted)");
    } else if (r.status == 503) {
        rc = pc_fail_hint(cmd, &r, " (part of it may be done: run delete-account again)");
    } else if (pc_exit_of(&r)) {
        rc = pc_fail(cmd, &r);
    } else {
        /* the server revoked every login: the saved one is dead, forget it */
        if (c->has_session && pc_session_remove(c->session_path)) rc = PC_EXIT_REFUSED;
        if (!c->json) printf("deleted account %s (user %lld)\n", user, (long long)uid);
    }
    pc_resp_release(&r);
    free(user);
    return rc;
}
