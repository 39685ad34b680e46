/* web.c — serves the web client's static files (GET / and its assets).
 *
 * Owns: mapping a URL path to a file under the web root, safely: only
 * [A-Za-z0-9._-/] paths, no "..", no dotfiles; a small fixed set of content
 * types; files read whole (the client is a few small files). The web root is
 * --web-root, else ./web, else web/ beside the binary's build tree.
 */
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../core/alloc.h"
#include "../http/server.h"
#include "config.h"

#define WEB_MAX_FILE (4 * 1024 * 1024)

static char root[PATH_MAX + 32];

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

int pl_web_serve(pl_http_ctx *ctx, const pl_config *cfg) {
    if (!root[0]) find_root(cfg);
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
    char full[PATH_MAX + 320];
    snprintf(full, sizeof full, "%s/%s", root, rel);
    int fd = open(full, O_RDONLY);
    if (fd < 0) return -1;
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size > WEB_MAX_FILE) {
        close(fd);
        return -1;
    }
    char *buf = pl_malloc((size_t)st.st_size + 1);
    ssize_t got = read(fd, buf, (size_t)st.st_size);
    close(fd);
    if (got != st.st_size) {
        free(buf);
        return -1;
    }
    pl_http_respond(ctx, 200, content_type(rel), buf,
                    ctx->req.method == PL_HTTP_HEAD ? 0 : (size_t)got,
                    "Content-Security-Policy: default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data: blob:\r\n"
                    "X-Frame-Options: DENY\r\n");
    free(buf);
    return 0;
}
