/* http.c — requests, the token refresh and the event stream over libcurl
 * (see http.h).
 *
 * Design note: credentials and the 401 rule.
 *   1. A request carries $PARLEY_TOKEN when it is set (never refreshed,
 *      never saved), else the session's access token, and only when the
 *      session file was written for the server being talked to: tokens are
 *      never sent to another server.
 *   2. A 401 on an authenticated request is followed by exactly one
 *      pc_refresh and, when it gives new tokens, exactly one retry; a second
 *      401 is the answer.
 *   3. pc_refresh runs under the session lock and first rereads the file:
 *      another `parley` process (a `tail` beside a `send`) may have rotated
 *      the pair already, and presenting the replaced refresh token after the
 *      server's grace period would revoke the login session
 *      (protocol.md "Refresh token reuse"). The rotated pair is saved before
 *      the request is retried, so a crash right after a refresh never
 *      leaves the file holding a dead refresh token.
 */
#include "http.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/buf.h"

#define DEFAULT_SERVER   "http://127.0.0.1:8080"
#define USER_AGENT       "parley/" PC_VERSION
#define CONNECT_TIMEOUT  10L      /* s */
#define REQUEST_TIMEOUT  60L      /* s, a whole REST request */
#define STREAM_SILENCE   90L      /* s without a byte: the stream is dead */
#define ERROR_BODY_MAX   65536    /* bytes kept of a non-200 stream answer */
#define GET_429_TRIES    3        /* GETs retried after a 429 */

/* ---- client ---------------------------------------------------------------- */

static int valid_server(const char *s) {
    const char *rest = strncasecmp(s, "http://", 7) == 0 ? s + 7 :
                       strncasecmp(s, "https://", 8) == 0 ? s + 8 : NULL;
    if (!rest || !*rest || *rest == '/') return 0;
    for (const char *p = s; *p; p++)
        if ((unsigned char)*p <= ' ' || *p == 0x7f) return 0;
    return 1;
}

/* Why the --cacert file cannot serve (NULL: it can): it must be a readable
 * regular file holding a PEM certificate, what libcurl's OpenSSL loads (a
 * directory opens for reading, and an empty or garbage file would
 * otherwise surface as an unreachable server at the first https request;
 * audit V2 #3). */
#define CACERT_MAX (16 << 20)
static const char *cacert_problem(const char *path) {
    static char why[128];
    FILE *f = fopen(path, "r");
    if (!f) return strerror(errno);
    struct stat st;
    const char *r = NULL;
    if (fstat(fileno(f), &st) != 0) {
        r = strerror(errno);
    } else if (S_ISDIR(st.st_mode)) {
        r = strerror(EISDIR);
    } else if (!S_ISREG(st.st_mode)) {
        r = "not a regular file";
    } else if (st.st_size > CACERT_MAX) {
        r = "larger than 16 MiB: not a certificate file";
    } else {
        pl_sbuf b;
        pl_sbuf_init(&b);
        char buf[8192];
        size_t n;
        while ((n = fread(buf, 1, sizeof buf, f)) > 0 && b.len < CACERT_MAX) pl_sbuf_add(&b, buf, n);
        if (ferror(f)) {
            snprintf(why, sizeof why, "%s", strerror(errno ? errno : EIO));
            r = why;
        } else if (b.len == 0) {
            r = "the file is empty (a PEM certificate, -----BEGIN CERTIFICATE-----, is needed)";
        } else {
            pl_sbuf_addc(&b, '\0');
            if (!strstr(b.p, "-----BEGIN CERTIFICATE-----") && !strstr(b.p, "-----BEGIN TRUSTED CERTIFICATE-----"))
                r = "no PEM certificate (-----BEGIN CERTIFICATE-----) in it";
        }
        pl_sbuf_release(&b);
    }
    fclose(f);
    return r;
}

int pc_client_init(pc_client *c, const char *server_opt, const char *cacert, int json) {
    memset(c, 0, sizeof *c);
    c->json = json;
    c->cacert = cacert;
    const char *t = getenv("PARLEY_TOKEN");
    c->env_token = t && *t ? t : NULL;
    c->session_path = pc_session_path();
    int loaded = pc_session_load(c->session_path, &c->sess) == 0;

    const char *env = getenv("PARLEY_SERVER");
    const char *s = server_opt ? server_opt : env && *env ? env :
                    loaded && c->sess.server ? c->sess.server : DEFAULT_SERVER;
    size_t n = strlen(s);
    while (n > 0 && s[n - 1] == '/') n--;
    c->server = pl_strndup(s, n);
    if (!valid_server(c->server)) {
        fprintf(stderr, "parley: bad server URL \"%s\": it must start with http:// or https://\n", s);
        return PC_EXIT_USAGE;
    }
    if (loaded && c->sess.server && strcmp(c->sess.server, c->server) == 0) c->has_session = 1;
    else if (loaded && c->sess.server) c->other_server = pl_strdup(c->sess.server);
    /* the CA file the login of this server's session used (audit C3: a
     * plain `parley whoami` after `--cacert ... login` failed) */
    if (!cacert && c->has_session && c->sess.cacert) c->cacert = cacert = c->cacert_own = pl_strdup(c->sess.cacert);
    /* checked whatever the scheme (README: exit 3), not only when an https
     * handshake first needs it: a typo is found before it matters */
    if (cacert) {
        const char *why = cacert_problem(cacert);
        if (why) {
            fprintf(stderr, "parley: cannot read the --cacert file %s: %s\n", cacert, why);
            return PC_EXIT_DOWN;
        }
    }
    c->curl = curl_easy_init();
    if (!c->curl) {
        fprintf(stderr, "parley: libcurl could not start\n");
        return PC_EXIT_DOWN;
    }
    return 0;
}

void pc_client_release(pc_client *c) {
    if (c->curl) curl_easy_cleanup(c->curl);
    if (c->stream) curl_easy_cleanup(c->stream);
    free(c->server);
    free(c->session_path);
    free(c->other_server);
    free(c->cacert_own);
    pc_session_release(&c->sess);
    memset(c, 0, sizeof *c);
}

const char *pc_token(const pc_client *c) {
    if (c->env_token) return c->env_token;
    return c->has_session ? c->sess.access_token : NULL;
}

/* Takes the fields of a login answer into a new session for c->server. */
static int session_from_answer(const pc_client *c, json_t *answer, pc_session *s) {
    json_t *u = json_object_get(answer, "user");
    const char *at = json_string_value(json_object_get(answer, "access_token"));
    const char *rt = json_string_value(json_object_get(answer, "refresh_token"));
    json_t *id = json_object_get(u, "id");
    const char *name = json_string_value(json_object_get(u, "username"));
    if (!json_is_integer(id) || !name || !at || !rt) return -1;
    memset(s, 0, sizeof *s);
    s->server = pl_strdup(c->server);
    s->user_id = json_integer_value(id);
    s->username = pl_strdup(name);
    s->access_token = pl_strdup(at);
    s->refresh_token = pl_strdup(rt);
    if (c->cacert) {                       /* kept for the commands after this one */
        char *abs = realpath(c->cacert, NULL);
        s->cacert = abs ? pl_strdup(abs) : NULL;
        free(abs);
    }
    return 0;
}

int pc_adopt_login(pc_client *c, json_t *answer) {
    pc_session s;
    if (session_from_answer(c, answer, &s)) {
        fprintf(stderr, "parley: the server's login answer has no user or tokens\n");
        return -1;
    }
    pc_session_release(&c->sess);
    c->sess = s;
    c->has_session = 1;
    return pc_session_save(c->session_path, &c->sess);
}

/* ---- one request -------------------------------------------------------------- */

typedef struct xfer {
    pl_sbuf  body;           /* what the answer's body collected            */
    size_t   cap;            /* most bytes kept in body (0: no limit)       */
    long     retry_after;    /* from the Retry-After header, or -1          */
    CURL    *h;
    long     status;         /* known once the body starts                  */
    int    (*on_data)(const char *p, size_t n, void *ud);
    void    *ud;
    int      stopped;        /* on_data asked to stop                       */
} xfer;

static size_t on_body(char *p, size_t size, size_t nmemb, void *ud) {
    xfer *x = ud;
    size_t n = size * nmemb;
    if (x->on_data) {
        if (!x->status) curl_easy_getinfo(x->h, CURLINFO_RESPONSE_CODE, &x->status);
        if (x->status == 200) {
            if (!x->on_data(p, n, x->ud)) {
                x->stopped = 1;
                return 0;                /* CURLE_WRITE_ERROR: ends the transfer */
            }
            return n;
        }
    }
    if (x->cap && x->body.len + n > x->cap) n = x->body.len < x->cap ? x->cap - x->body.len : 0;
    if (n) pl_sbuf_add(&x->body, p, n);
    return size * nmemb;
}

static size_t on_header(char *p, size_t size, size_t nmemb, void *ud) {
    xfer *x = ud;
    size_t n = size * nmemb;
    if (n > 12 && strncasecmp(p, "retry-after:", 12) == 0) {
        char tmp[32];
        size_t k = n - 12 < sizeof tmp - 1 ? n - 12 : sizeof tmp - 1;
        memcpy(tmp, p + 12, k);
        tmp[k] = '\0';
        char *end;
        long v = strtol(tmp, &end, 10);
        if (end != tmp && v >= 0) x->retry_after = v;
    }
    return n;
}

/* Options every request shares (the handle is reset: its connection stays). */
static void setup(pc_client *c, CURL *h, const char *url, xfer *x, char *errbuf) {
    curl_easy_reset(h);
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_USERAGENT, USER_AGENT);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, CONNECT_TIMEOUT);
    curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, x);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, x);
    if (c->cacert) curl_easy_setopt(h, CURLOPT_CAINFO, c->cacert);
    errbuf[0] = '\0';
}

static struct curl_slist *add_auth(struct curl_slist *hd, const char *token) {
    if (!token) return hd;
    pl_sbuf s;
    pl_sbuf_init(&s);
    pl_sbuf_printf(&s, "Authorization: Bearer %s", token);
    hd = curl_slist_append(hd, s.p);
    explicit_bzero(s.p, s.len);
    pl_sbuf_release(&s);
    return hd;
}

/* Fills r from a finished transfer. */
static void finish(pc_client *c, CURL *h, CURLcode rc, xfer *x, const char *errbuf, pc_resp *r) {
    memset(r, 0, sizeof *r);
    r->retry_after = x->retry_after;
    if (rc == CURLE_SSL_CACERT_BADFILE) {         /* PEM-looking, but OpenSSL took no certificate from it */
        snprintf(r->err, sizeof r->err, "cannot use the --cacert file %s: %s", c->cacert ? c->cacert : "?",
                 errbuf[0] ? errbuf : curl_easy_strerror(rc));
    } else if (rc != CURLE_OK && !(rc == CURLE_WRITE_ERROR && x->stopped)) {
        snprintf(r->err, sizeof r->err, "cannot reach %s: %s", c->server,
                 errbuf[0] ? errbuf : curl_easy_strerror(rc));
        size_t n = strlen(r->err);
        while (n && (r->err[n - 1] == '\n' || r->err[n - 1] == '.')) r->err[--n] = '\0';
    }
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &r->status);
    if (r->err[0] && !x->on_data) r->status = 0;     /* a REST answer cut short is none */
    pl_sbuf_addc(&x->body, '\0');
    r->len = x->body.len - 1;
    r->text = x->body.p;
    memset(&x->body, 0, sizeof x->body);
    if (r->len) r->body = json_loadb(r->text, r->len, 0, NULL);
}

static void perform(pc_client *c, const char *method, const char *path, const char *body, size_t len,
                    const char *token, pc_resp *r) {
    char errbuf[CURL_ERROR_SIZE];
    xfer x = {.retry_after = -1, .h = c->curl};
    pl_sbuf_init(&x.body);
    pl_sbuf url;
    pl_sbuf_init(&url);
    pl_sbuf_printf(&url, "%s%s", c->server, path);
    setup(c, c->curl, url.p, &x, errbuf);
    curl_easy_setopt(c->curl, CURLOPT_TIMEOUT, REQUEST_TIMEOUT);
    struct curl_slist *hd = curl_slist_append(NULL, "Accept: application/json");
    hd = curl_slist_append(hd, "Expect:");            /* no 100-continue round trip */
    if (body) hd = curl_slist_append(hd, "Content-Type: application/json");
    hd = add_auth(hd, token);
    curl_easy_setopt(c->curl, CURLOPT_HTTPHEADER, hd);
    if (strcmp(method, "GET") != 0) {
        if (strcmp(method, "POST") == 0) curl_easy_setopt(c->curl, CURLOPT_POST, 1L);
        else curl_easy_setopt(c->curl, CURLOPT_CUSTOMREQUEST, method);
        if (body || strcmp(method, "DELETE") != 0) {
            curl_easy_setopt(c->curl, CURLOPT_POSTFIELDSIZE, (long)(body ? len : 0));
            curl_easy_setopt(c->curl, CURLOPT_POSTFIELDS, body ? body : "");
        }
    }
    CURLcode rc = curl_easy_perform(c->curl);
    finish(c, c->curl, rc, &x, errbuf, r);
    curl_slist_free_all(hd);
    pl_sbuf_release(&url);
}

void pc_request_raw(pc_client *c, const char *method, const char *path, const char *body,
                    size_t len, int auth, pc_resp *r) {
    perform(c, method, path, body, len, auth ? pc_token(c) : NULL, r);
    /* rule 2: one refresh, one retry; a second round only when the first
     * took tokens another process had saved, which may have expired too */
    for (int round = 0; round < 2 && auth == PC_AUTH && r->status == 401 && pc_token(c) && !c->env_token; round++) {
        char *failed = pl_strdup(pc_token(c));
        int adopted = 0;
        int rc = pc_refresh(c, failed, &adopted, NULL);
        explicit_bzero(failed, strlen(failed));
        free(failed);
        if (rc) break;
        pc_resp_release(r);
        perform(c, method, path, body, len, pc_token(c), r);
        if (!adopted) break;
    }
}

void pc_request(pc_client *c, const char *method, const char *path, json_t *body, int auth, pc_resp *r) {
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    pc_request_raw(c, method, path, text, text ? strlen(text) : 0, auth, r);
    free(text);
}

void pc_resp_release(pc_resp *r) {
    json_decref(r->body);
    free(r->text);
    memset(r, 0, sizeof *r);
}

int pc_exit_of(const pc_resp *r) {
    if (r->status >= 200 && r->status < 300) return PC_EXIT_OK;
    if (r->status == 0 || r->status >= 500) return PC_EXIT_DOWN;
    return PC_EXIT_REFUSED;
}

int pc_fail_hint(const char *what, const pc_resp *r, const char *hint) {
    if (r->status == 0) {
        fprintf(stderr, "parley: %s: %s\n", what, r->err[0] ? r->err : "no answer");
        return PC_EXIT_DOWN;
    }
    json_t *e = json_object_get(r->body, "error");
    const char *code = json_string_value(json_object_get(e, "code"));
    const char *msg = json_string_value(json_object_get(e, "message"));
    if (code) {
        fprintf(stderr, "parley: %s: %ld %s: %s%s\n", what, r->status, code, msg ? msg : "", hint ? hint : "");
    } else {
        /* not the API's error shape (a proxy's page): its first line, bounded */
        size_t n = 0;
        while (n < r->len && n < 200 && r->text[n] != '\n' && r->text[n] != '\r') n++;
        fprintf(stderr, "parley: %s: HTTP %ld%s%.*s%s\n", what, r->status, n ? ": " : "", (int)n, r->text,
                hint ? hint : "");
    }
    return pc_exit_of(r);
}

int pc_fail(const char *what, const pc_resp *r) { return pc_fail_hint(what, r, NULL); }

const char *pc_login_hint(const pc_client *c) {
    if (c->env_token) return NULL;
    return c->switched ? " (the session file was logged in to another user meanwhile; this command never "
                         "changes accounts: log in again: parley login USERNAME)"
                       : PC_LOGIN_AGAIN;
}

int pc_not_logged_in(const pc_client *c, const char *what) {
    if (c->other_server)
        fprintf(stderr, "parley: %s: not logged in to %s (the session file is for %s: use --server %s, "
                "or log in)\n", what, c->server, c->other_server, c->other_server);
    else
        fprintf(stderr, "parley: %s: not logged in: run `parley login USERNAME` (or set PARLEY_TOKEN)\n", what);
    return PC_EXIT_REFUSED;
}

/* A 2xx answer must be the API's: a JSON object, or no body at all only
 * for 204 (audit V2 #5: a proxy's or another program's "200 OK" is not a
 * success). */
int pc_answer_ok(const char *what, const pc_resp *r) {
    if (r->status == 204 && r->len == 0) return 1;
    if (json_is_object(r->body)) return 1;
    size_t n = 0;
    while (n < r->len && n < 200 && r->text[n] != '\n' && r->text[n] != '\r') n++;
    fprintf(stderr, "parley: %s: the server's answer (HTTP %ld) is not the API's JSON: %s%.*s\n", what, r->status,
            r->len ? "" : "(no body)", (int)n, r->len ? r->text : "");
    return 0;
}

int pc_want(const char *what, json_t *o, const char *key, json_type type) {
    json_t *v = json_object_get(o, key);
    if (v && (json_typeof(v) == type || (type == JSON_TRUE && json_is_boolean(v)))) return 0;
    fprintf(stderr, "parley: %s: the server's answer is not the API's: %s \"%s\"\n", what,
            v ? "a wrong type for" : "no", key);
    return PC_EXIT_DOWN;
}

int pc_call(pc_client *c, const char *what, const char *method, const char *path, json_t *body,
            json_t **out) {
    *out = NULL;
    int anonymous = !pc_token(c);        /* asked all the same: unreachable is 3, not 1 */
    pc_resp r;
    for (int tries = 1;; tries++) {
        pc_request(c, method, path, body, 1, &r);
        /* a read is safe to repeat: wait out the per-IP request limit */
        if (r.status != 429 || strcmp(method, "GET") != 0 || tries == GET_429_TRIES) break;
        long wait = r.retry_after > 0 ? (r.retry_after < 5 ? r.retry_after : 5) : 1;
        pc_resp_release(&r);
        sleep((unsigned)wait);
    }
    int rc = pc_exit_of(&r);
    if (rc == 0 && !pc_answer_ok(what, &r)) {
        rc = PC_EXIT_DOWN;
    } else if (rc && r.status == 401 && anonymous) {
        rc = pc_not_logged_in(c, what);
    } else if (rc) {
        rc = pc_fail_hint(what, &r, r.status == 401 ? pc_login_hint(c) : NULL);
    } else {
        *out = r.body;
        r.body = NULL;
    }
    pc_resp_release(&r);
    return rc;
}

/* ---- token refresh (design note, rule 3) ------------------------------------- */

int pc_refresh(pc_client *c, const char *failed, int *adopted, pc_resp *out) {
    if (out) memset(out, 0, sizeof *out);
    *adopted = 0;
    if (c->env_token || !c->has_session) return PC_EXIT_REFUSED;
    int lock = pc_session_lock(c->session_path);
    pc_session disk;
    int loaded = pc_session_load(c->session_path, &disk) == 0;
    int rc = PC_EXIT_REFUSED;
    if (!loaded || !disk.server || strcmp(disk.server, c->server) != 0 || disk.user_id != c->sess.user_id) {
        c->switched = loaded && disk.server && strcmp(disk.server, c->server) == 0 && disk.user_id &&
                      disk.user_id != c->sess.user_id;
        c->has_session = 0;                       /* logged out, away, or another user logged in */
    } else if (failed && disk.access_token && strcmp(disk.access_token, failed) != 0) {
        pc_session_release(&c->sess);             /* another process refreshed */
        c->sess = disk;
        memset(&disk, 0, sizeof disk);
        *adopted = 1;
        rc = 0;
    } else if (disk.refresh_token) {
        json_t *b = json_pack("{s:s}", "refresh_token", disk.refresh_token);
        pc_resp r;
        pc_request(c, "POST", "/api/v1/auth/refresh", b, 0, &r);
        json_decref(b);
        rc = pc_exit_of(&r);
        if (rc == 0) {
            if (pc_adopt_login(c, r.body)) rc = PC_EXIT_REFUSED;
            pc_resp_release(&r);
        } else if (out) {
            *out = r;
        } else {
            pc_resp_release(&r);
        }
    }
    pc_session_release(&disk);
    pc_session_unlock(lock);
    return rc;
}

/* ---- the event stream -------------------------------------------------------- */

void pc_stream(pc_client *c, const char *path, const char *last_id,
               int (*on_data)(const char *p, size_t n, void *ud), void *ud, pc_resp *r) {
    if (!c->stream) c->stream = curl_easy_init();
    if (!c->stream) {
        memset(r, 0, sizeof *r);
        snprintf(r->err, sizeof r->err, "libcurl could not start");
        return;
    }
    char errbuf[CURL_ERROR_SIZE];
    xfer x = {.retry_after = -1, .h = c->stream, .cap = ERROR_BODY_MAX, .on_data = on_data, .ud = ud};
    pl_sbuf_init(&x.body);
    pl_sbuf url;
    pl_sbuf_init(&url);
    pl_sbuf_printf(&url, "%s%s", c->server, path);
    setup(c, c->stream, url.p, &x, errbuf);
    curl_easy_setopt(c->stream, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(c->stream, CURLOPT_LOW_SPEED_TIME, STREAM_SILENCE);
    struct curl_slist *hd = curl_slist_append(NULL, "Accept: text/event-stream");
    hd = add_auth(hd, pc_token(c));
    if (last_id) {
        pl_sbuf h;
        pl_sbuf_init(&h);
        pl_sbuf_printf(&h, "Last-Event-ID: %s", last_id);
        hd = curl_slist_append(hd, h.p);
        pl_sbuf_release(&h);
    }
    curl_easy_setopt(c->stream, CURLOPT_HTTPHEADER, hd);
    CURLcode rc = curl_easy_perform(c->stream);
    finish(c, c->stream, rc, &x, errbuf, r);
    curl_slist_free_all(hd);
    pl_sbuf_release(&url);
}

/* ---- small things --------------------------------------------------------------- */

void pc_path_add(pc_client *c, pl_sbuf *path, const char *text, const char *raw) {
    char *e = curl_easy_escape(c->curl, raw, 0);
    pl_sbuf_printf(path, "%s%s", text, e ? e : "");
    curl_free(e);
}

void pc_print_json(json_t *o) {
    char *s = json_dumps(o, JSON_COMPACT | JSON_ENCODE_ANY);
    if (s) {
        fputs(s, stdout);
        fputc('\n', stdout);
        free(s);
    }
}
