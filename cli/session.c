/* session.c — the session file (see session.h). */
#include "session.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/buf.h"

char *pc_session_path(void) {
    const char *p = getenv("PARLEY_SESSION");
    if (p && *p) return pl_strdup(p);
    pl_sbuf s;
    pl_sbuf_init(&s);
    const char *xdg = getenv("XDG_CONFIG_HOME");
    if (xdg && xdg[0] == '/') {          /* the XDG spec ignores relative values */
        pl_sbuf_printf(&s, "%s/parley/session.json", xdg);
    } else {
        const char *home = getenv("HOME");
        if (!home || !*home) {
            struct passwd *pw = getpwuid(getuid());
            home = pw && pw->pw_dir ? pw->pw_dir : ".";
        }
        pl_sbuf_printf(&s, "%s/.config/parley/session.json", home);
    }
    return s.p;                          /* the caller frees it */
}

void pc_session_release(pc_session *s) {
    free(s->server);
    free(s->username);
    if (s->access_token) explicit_bzero(s->access_token, strlen(s->access_token));
    if (s->refresh_token) explicit_bzero(s->refresh_token, strlen(s->refresh_token));
    free(s->access_token);
    free(s->refresh_token);
    free(s->cacert);
    memset(s, 0, sizeof *s);
}

static char *dup_field(json_t *o, const char *key) {
    const char *v = json_string_value(json_object_get(o, key));
    return v && *v ? pl_strdup(v) : NULL;
}

int pc_session_load(const char *path, pc_session *s) {
    memset(s, 0, sizeof *s);
    FILE *f = fopen(path, "re");
    if (!f) {
        if (errno == ENOENT) return 1;
        fprintf(stderr, "parley: cannot read the session file %s: %s\n", path, strerror(errno));
        return -1;
    }
    json_error_t je;
    json_t *o = json_loadf(f, 0, &je);
    fclose(f);
    if (!json_is_object(o)) {
        fprintf(stderr, "parley: the session file %s is not a session (%s): log in again\n", path,
                o ? "not an object" : je.text);
        json_decref(o);
        return -1;
    }
    s->server = dup_field(o, "server");
    s->access_token = dup_field(o, "access_token");
    s->refresh_token = dup_field(o, "refresh_token");
    s->cacert = dup_field(o, "cacert");
    json_t *u = json_object_get(o, "user");
    if (json_is_object(u)) {
        json_t *id = json_object_get(u, "id");
        if (json_is_integer(id)) s->user_id = json_integer_value(id);
        s->username = dup_field(u, "username");
    }
    json_decref(o);
    return 0;
}

/* Creates the directories of path's parent that are missing, each 0700. */
static int make_parent(const char *path) {
    char *d = pl_strdup(path);
    char *slash = strrchr(d, '/');
    if (!slash || slash == d) {
        free(d);
        return 0;
    }
    *slash = '\0';
    for (char *p = d + 1;; p++) {
        if (*p != '/' && *p != '\0') continue;
        char c = *p;
        *p = '\0';
        if (mkdir(d, 0700) != 0 && errno != EEXIST) {
            fprintf(stderr, "parley: cannot create %s: %s\n", d, strerror(errno));
            free(d);
            return -1;
        }
        *p = c;
        if (c == '\0') break;
    }
    free(d);
    return 0;
}

static int write_all(int fd, const char *p, size_t n) {
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

int pc_session_save(const char *path, const pc_session *s) {
    if (make_parent(path)) return -1;
    json_t *o = json_object();
    json_object_set_new(o, "server", json_string(s->server ? s->server : ""));
    json_object_set_new(o, "user", json_pack("{s:I,s:s}", "id", (json_int_t)s->user_id,
                                             "username", s->username ? s->username : ""));
    json_object_set_new(o, "access_token", json_string(s->access_token ? s->access_token : ""));
    json_object_set_new(o, "refresh_token", json_string(s->refresh_token ? s->refresh_token : ""));
    if (s->cacert) json_object_set_new(o, "cacert", json_string(s->cacert));
    char *text = json_dumps(o, JSON_INDENT(2));
    json_decref(o);
    size_t len = strlen(text);

    pl_sbuf tmp;
    pl_sbuf_init(&tmp);
    pl_sbuf_printf(&tmp, "%s.XXXXXX", path);
    int fd = mkostemp(tmp.p, O_CLOEXEC);              /* created 0600 */
    int rc = -1;
    if (fd < 0) {
        fprintf(stderr, "parley: cannot write the session file %s: %s\n", path, strerror(errno));
    } else if (fchmod(fd, 0600) || write_all(fd, text, len) || write_all(fd, "\n", 1) || fsync(fd)) {
        fprintf(stderr, "parley: cannot write the session file %s: %s\n", path, strerror(errno));
        close(fd);
        unlink(tmp.p);
    } else if (close(fd) || rename(tmp.p, path)) {
        fprintf(stderr, "parley: cannot write the session file %s: %s\n", path, strerror(errno));
        unlink(tmp.p);
    } else {
        rc = 0;
    }
    explicit_bzero(text, len);
    free(text);
    pl_sbuf_release(&tmp);
    return rc;
}

int pc_session_remove(const char *path) {
    if (unlink(path) != 0 && errno != ENOENT) {
        fprintf(stderr, "parley: cannot remove the session file %s: %s\n", path, strerror(errno));
        return -1;
    }
    return 0;
}

int pc_session_lock(const char *path) {
    if (make_parent(path)) return -1;
    pl_sbuf s;
    pl_sbuf_init(&s);
    pl_sbuf_printf(&s, "%s.lock", path);
    int fd = open(s.p, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    pl_sbuf_release(&s);
    if (fd < 0) return -1;
    while (flock(fd, LOCK_EX) != 0) {
        if (errno != EINTR) {
            close(fd);
            return -1;
        }
    }
    return fd;
}

void pc_session_unlock(int fd) {
    if (fd >= 0) close(fd);                /* closing releases the flock */
}
