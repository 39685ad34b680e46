/* web.c — serves the web client's static files (GET / and its assets).
 *
 * Owns: mapping a URL path to a file under the web root, safely: only
 * [A-Za-z0-9._-/] paths, no "..", no dotfiles; a small fixed set of content
 * types. The web root is --web-root, else ./web, else web/ beside the
 * binary's build tree. Files are read once (the client is a few small files)
 * and served from memory afterwards, so no request reads the disk on the
 * event loop; restart parleyd to serve edited files.
 */
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../core/alloc.h"
#include "../core/log.h"
#include "web.h"

#define WEB_MAX_FILE (4 * 1024 * 1024)
#define WEB_MAX_FILES 256

static char root[PATH_MAX + 32];

typedef struct web_file {
    char   *rel;                 /* path below the root                      */
    char   *data;
    size_t  len;
} web_file;

static web_file cache[WEB_MAX_FILES];
static size_t   ncache;

/* Reads root/rel into the cache if it is a regular file of at most
 * WEB_MAX_FILE bytes. */
static void load(const char *rel) {
    if (ncache == WEB_MAX_FILES) return;
    char full[PATH_MAX + 320];
    snprintf(full, sizeof full, "%s/%s", root, rel);
    int fd = open(full, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return;
    struct stat st;
    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size <= WEB_MAX_FILE) {
        char *buf = pl_malloc((size_t)st.st_size + 1);
        ssize_t got = read(fd, buf, (size_t)st.st_size);
        if (got == st.st_size) {
            cache[ncache].rel = pl_strdup(rel);
            cache[ncache].data = buf;
            cache[ncache].len = (size_t)got;
            ncache++;
        } else {
            free(buf);
        }
    }
    close(fd);
}

/* Loads every file of the web root and its subdirectories (two levels),
 * skipping dotfiles: what it finds now is all that is ever served. */
static void preload(const char *sub, int depth) {
    char dir[PATH_MAX + 320];
    snprintf(dir, sizeof dir, "%s%s%s", root, sub[0] ? "/" : "", sub);
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') continue;
        char rel[256];
        if ((size_t)snprintf(rel, sizeof rel, "%s%s%s", sub, sub[0] ? "/" : "", e->d_name) >= sizeof rel) continue;
        if (e->d_type == DT_DIR) {
            if (depth < 2 && strcmp(e->d_name, "node_modules")) preload(rel, depth + 1);
        } else {
            load(rel);
        }
    }
    closedir(d);
}

static const web_file *cached(const char *rel) {
    for (size_t i = 0; i < ncache; i++)
        if (strcmp(cache[i].rel, rel) == 0) return &cache[i];
    return NULL;
}

static const char *content_type(const char *path) {
    const char *dot = strrchr(path, '.');
    if (!dot) return "application/octet-stream";
    if (!strcmp(dot, ".html")) return "text/html; charset=utf-8";
    if (!strcmp(dot, ".js")) return "text/javascript; charset=utf-8";
    if (!strcmp(dot, ".css")) return "text/css; charset=utf-8";
    if (!strcmp(dot, ".svg")) return "image/svg+xml";
    if (!strcmp(dot, ".png")) return "image/png";
    if (!strcmp(dot, ".ico")) return "image/x-icon";
    if (!strcmp(dot, ".json")) return "application/json";
    return "application/octet-stream";
}

static void find_root(const pl_config *cfg) {
    struct stat st;
    if (cfg->web_root[0]) {
        snprintf(root, sizeof root, "%s", cfg->web_root);
        return;
    }
    if (stat("web/index.html", &st) == 0) {
        snprintf(root, sizeof root, "web");
        return;
    }
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = '\0';
        /* build/<variant>/parleyd -> ../../web */
        char *slash = strrchr(exe, '/');
        if (slash) {
            *slash = '\0';
            snprintf(root, sizeof root, "%s/../../web", exe);
            return;
        }
    }
    snprintf(root, sizeof root, "web");
}

void pl_web_init(const pl_config *cfg) {
    find_root(cfg);
    preload("", 0);
    if (!cached("index.html"))          /* a binary copied out of its tree: say why / is 404 */
        pl_log(PL_LOG_WARN, 0, "no web client: / answers 404 (set --web-root to the tree's web/)",
               "\"web_root\":\"%s\"", root);
}

int pl_web_serve(pl_http_ctx *ctx, const pl_config *cfg) {
    pl_str p = ctx->req.path;
    char rel[256];
    if (p.n == 1) snprintf(rel, sizeof rel, "index.html");
    else {
        if (p.n - 1 >= sizeof rel) return -1;
        for (size_t i = 1; i < p.n; i++) {
            char ch = p.p[i];
            if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
                  ch == '.' || ch == '_' || ch == '-' || ch == '/'))
                return -1;
            if (ch == '.' && p.p[i - 1] == '/') return -1;   /* "..", dotfiles */
        }
        memcpy(rel, p.p + 1, p.n - 1);
        rel[p.n - 1] = '\0';
    }
    const web_file *w = cached(rel);
    if (!w) return -1;
    if (ctx->req.method != PL_HTTP_GET && ctx->req.method != PL_HTTP_HEAD) {   /* the file exists: 405 */
        pl_http_method_not_allowed(ctx, PL_HTTP_M(PL_HTTP_GET) | PL_HTTP_M(PL_HTTP_HEAD),
                                   "method not allowed on this route");
        return 0;
    }
    /* connect-src 'self': the client talks to its own origin only; CSP 3's
     * 'self' also matches ws:/wss: to the same host and port (protocol.md
     * "Response headers") */
    pl_http_respond(ctx, 200, content_type(rel), w->data, w->len,
                    "Content-Security-Policy: default-src 'self'; connect-src 'self'; img-src 'self' data: blob:\r\n"
                    "X-Frame-Options: DENY\r\n");
    return 0;
}
