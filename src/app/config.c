/* config.c — the settings table and its readers (see config.h). */
#include "config.h"

#include "../core/version.h"
#include "../proto/proto.h"

#include <ctype.h>
#include <stddef.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct setting {
    const char *name;
    int         is_int;
    long        min, max;
    const char *def;
    size_t      off;
    size_t      size;     /* for strings */
    const char *help;
    const char *const *choices;   /* a string from a list: the list (NULL-ended) */
    const char *choices_text;     /* ... as the refusal says it              */
} setting;

#define S(n, f, d, h) {n, 0, 0, 0, d, offsetof(pl_config, f), sizeof(((pl_config *)0)->f), h, NULL, NULL}
#define L(n, f, d, h, list, text) {n, 0, 0, 0, d, offsetof(pl_config, f), sizeof(((pl_config *)0)->f), h, list, text}
#define I(n, f, lo, hi, d, h) {n, 1, lo, hi, d, offsetof(pl_config, f), 0, h, NULL, NULL}

/* Checked where they are read, like numbers, so that a bad value in the
 * environment or the file is refused even when a flag overrides it. */
static const char *const log_levels[] = {"debug", "info", "warn", "error", NULL};
static const char *const tls_versions[] = {"1.3", "1.2", NULL};

static const setting table[] = {
    S("listen", listen, "127.0.0.1:8080", "address and port to serve on (host:port, [v6]:port)"),
    S("data-dir", data_dir, "./parley-data", "directory for the database and the token key"),
    L("log-level", log_level, "info", "debug, info, warn or error", log_levels, "debug, info, warn or error"),
    S("config", config_file, "", "optional file of `name value` lines"),
    S("web-root", web_root, "", "directory of the web client (default: ./web next to the binary's tree)"),
    I("access-ttl", access_ttl, 1, 86400, "900", "access token lifetime, seconds"),
    I("refresh-ttl", refresh_ttl, 60, 31536000, "2592000", "refresh token lifetime, seconds"),
    I("argon2-ops", argon2_ops, 1, 10, "2", "argon2id passes (opslimit)"),
    I("argon2-mem", argon2_mem, 8, 1048576, "65536", "argon2id memory, KiB"),
    I("max-body", max_body, 1, 1048576, "16384", "largest message body, bytes"),
    I("max-ws-message", max_ws_message, 1024, 16777216, "1048576", "largest WebSocket message, bytes"),
    I("auth-timeout", auth_timeout, 1, 600, "10", "seconds a WebSocket has to authenticate"),
    I("node-id", node_id, -1, 1023, "-1", "node id in message ids, unique per node; -1: 0 in embedded mode, leased from the database in cluster mode"),
    S("store", store, "", "where data lives: empty for SQLite in data-dir, or postgres://user@host:port/db (cluster mode)"),
    S("redis", redis, "", "Redis for the cluster bus, presence and shared rate limits: redis://host:port (empty: one process)"),
    S("redis-prefix", redis_prefix, "parley:", "prefix of Parley's keys and channels in Redis"),
    I("store-readers", store_readers, 0, 64, "0", "store reader threads (0: 2 for SQLite, 4 for PostgreSQL)"),
    I("max-group-members", max_group_members, 2, 1000000, "10000", "members a group may be created with"),
    S("admins", admins, "", "usernames of the server's admins, comma-separated: they read and resolve every report (docs/protocol.md \"Reports\")"),
    S("content-filter", content_filter, "", "file of content filter rules checked against every message and edit (docs/protocol.md \"Content filter\"); reread on SIGHUP"),
    I("workspace-max-members", workspace_max_members, 0, 100000000, "100000", "members a workspace may have (0: no limit)"),
    I("workspace-max-channels", workspace_max_channels, 0, 10000000, "10000", "channels a workspace may have, private ones and general included (0: no limit)"),
    I("retention", retention, 0, 2147483647, "0", "seconds a message is kept where neither its conversation nor its workspace sets a retention (0: for ever; docs/protocol.md \"Data lifecycle\")"),
    I("purge-interval", purge_interval, 1, 86400, "60", "seconds between passes that erase messages past their retention and those of deleted accounts"),
    I("large-group", large_group, 0, 100000000, "1000", "members above which a group is large: not replayed on sync (mentions only), @all/@here for admins only (0: off)"),
    I("edit-window", edit_window, 0, 315360000, "0", "seconds after sending during which a message may be edited (0: always)"),
    I("presence-timeout", presence_timeout, 1, 3600, "60", "seconds without a heartbeat before a session counts as gone"),
    I("presence-coalesce", presence_coalesce, 0, 60000, "1000", "ms between presence updates about one user"),
    I("typing-ttl", typing_ttl, 500, 60000, "5000", "ms a typing indicator lasts unless refreshed"),
    I("rate-user-msgs", rate_user_msgs, 0, 1000000, "20", "messages per second per user (0: no limit)"),
    I("rate-user-burst", rate_user_burst, 1, 1000000, "100", "messages a user may send at once"),
    I("rate-conv-msgs", rate_conv_msgs, 0, 1000000, "200", "messages per second per conversation (0: no limit)"),
    I("rate-conv-burst", rate_conv_burst, 1, 1000000, "400", "messages a conversation takes at once"),
    I("rate-workspace-msgs", rate_workspace_msgs, 0, 1000000, "1000", "messages per second per workspace, in all its channels (0: no limit)"),
    I("rate-workspace-burst", rate_workspace_burst, 1, 1000000, "2000", "messages a workspace's channels take at once"),
    I("rate-ip-requests", rate_ip_requests, 0, 1000000, "100", "HTTP requests and WebSocket opens per second per IP (0: no limit)"),
    I("rate-ip-burst", rate_ip_burst, 1, 1000000, "200", "requests an IP may make at once"),
    I("rate-ip-auth", rate_ip_auth, 0, 1000000, "60", "register/login/refresh per minute per IP (0: no limit)"),
    I("rate-ip-loopback", rate_ip_loopback, 0, 1, "0", "1: IP limits apply to loopback clients too (a local proxy makes everyone loopback)"),
    I("max-conns-per-ip", max_conns_per_ip, 0, 1000000, "10000", "open connections per client IP (0: no cap)"),
    I("max-outbound", max_outbound, 65536, 1073741824, "1048576", "bytes queued to one connection before it is closed as a slow consumer (4008)"),
    I("ping-interval", ping_interval, 1, 3600, "30", "seconds of silence before the server pings a WebSocket"),
    I("idle-timeout", idle_timeout, 2, 7200, "75", "seconds of silence before the server closes a WebSocket (4002)"),
    I("slow-timeout", slow_timeout, 1, 3600, "30", "seconds a replay may wait for a connection that does not read before it is closed (4008)"),
    /* flow control (chat/flow.c): acks wait while a conversation's fan-out lags */
    I("flow-lag", flow_lag, 0, 100000000, "256", "events behind its conversation's head at which a subscription lags; when --flow-share of a conversation's subscriptions (at least 2) lag, acks of sends to it wait (0: flow control off)"),
    I("flow-share", flow_share, 1, 100, "25", "percent of a conversation's open subscriptions that must lag (at least 2) before its senders' acks wait"),
    I("shutdown-grace", shutdown_grace, 1, 600, "10", "seconds SIGTERM waits for clients to close before exiting"),
    S("allowed-origins", allowed_origins, "", "browser origins allowed besides the server's own, comma-separated scheme://host[:port] (exact match)"),
    S("trusted-proxies", trusted_proxies, "127.0.0.0/8,::1", "IPs or CIDRs of proxies whose X-Forwarded-Host and X-Forwarded-Proto are believed (empty: none)"),
    I("refresh-reuse-grace", refresh_reuse_grace, 0, 300, "10", "seconds after a rotation during which the old refresh token is refused without revoking the session (two tabs refreshing at once)"),
    I("receipt-fanout-max", receipt_fanout_max, 1, 1000000, "100", "members of a conversation above which receipts go only to the reader's devices and the author it read"),
    /* TLS (net/tls.c): https and wss on --listen when both files are set */
    S("tls-cert", tls_cert, "", "PEM certificate chain: serve https/wss (with --tls-key); reread on SIGHUP"),
    S("tls-key", tls_key, "", "PEM private key of --tls-cert; reread on SIGHUP"),
    L("tls-min", tls_min, "1.3", "lowest TLS version accepted: 1.3 or 1.2", tls_versions, "1.2 or 1.3"),
    I("tls-openssl-records", tls_openssl_records, 0, 1, "0", "1: keep OpenSSL's record layer after TLS 1.3 handshakes (~15 KB more per connection); 0: Parley's own takes over"),
    I("hsts-max-age", hsts_max_age, 0, 315360000, "31536000", "Strict-Transport-Security max-age on https responses, seconds (0: no header)"),
    /* Server-Sent Events (GET /api/v1/events, chat/sse.c) */
    I("sse-heartbeat", sse_heartbeat, 1, 3600, "15", "seconds between heartbeat comments on a Server-Sent Events stream"),
    /* media (app/api_media.c, docs/protocol.md "Media") */
    S("media-dir", media_dir, "", "blob store directory; cluster mode: one directory every node mounts (default: <data-dir>/media)"),
    I("media-max-image", media_max_image, 1, 2147483647, "16777216", "largest image upload, bytes"),
    I("media-max-video", media_max_video, 1, 2147483647, "104857600", "largest video upload, bytes"),
    I("media-max-audio", media_max_audio, 1, 2147483647, "10485760", "largest audio upload, bytes"),
    I("media-max-file", media_max_file, 1, 2147483647, "104857600", "largest upload of any other type, bytes"),
    I("media-quota-mb", media_quota_mb, 0, 1048576, "1024", "MiB of uploads one user may own (0: no quota)"),
    I("media-url-ttl", media_url_ttl, 1, 604800, "3600", "seconds a signed media URL stays valid"),
    I("media-gc-grace", media_gc_grace, 1, 31536000, "86400", "seconds an upload no message references is kept before it is deleted"),
    I("media-reserve", media_reserve, 0, 2147483647, "64", "MiB an upload must leave free on the media directory's disk, for the database when it shares that disk: an upload that would leave less is refused (507 insufficient_storage; 0: no reserve)"),
    /* push notifications (push/, docs/protocol.md "Push notifications") */
    S("push-webhook", push_webhook, "", "URL the notifications of webhook devices are POSTed to (http or https; enables push)"),
    S("push-webhook-secret", push_webhook_secret, "", "key of the HMAC-SHA-256 X-Parley-Signature header on webhook posts (empty: no header)"),
    S("push-fcm-url", push_fcm_url, "", "FCM HTTP v1 send URL, https://fcm.googleapis.com/v1/projects/<project>/messages:send (enables fcm devices)"),
    S("push-fcm-credentials", push_fcm_credentials, "", "a Google service account's JSON key file: OAuth 2 tokens for FCM are minted with it (enables fcm devices; the send URL defaults to its project's)"),
    S("push-fcm-token", push_fcm_token, "", "OAuth 2 access token sent to --push-fcm-url as is, when --push-fcm-credentials is not set"),
    S("push-apns-url", push_apns_url, "", "APNs base URL, https://api.push.apple.com (enables apns devices)"),
    S("push-apns-topic", push_apns_topic, "", "apns-topic header: the app's bundle id"),
    S("push-apns-key", push_apns_key, "", "APNs .p8 signing key (EC P-256 PEM): provider tokens are minted with it every 40 minutes (with --push-apns-key-id and --push-apns-team-id)"),
    S("push-apns-key-id", push_apns_key_id, "", "the key id of --push-apns-key (the JWT's kid)"),
    S("push-apns-team-id", push_apns_team_id, "", "the Apple team id (the JWT's iss)"),
    S("push-apns-token", push_apns_token, "", "APNs provider token (a JWT) sent as is, when --push-apns-key is not set"),
    I("push-previews", push_previews, 0, 1, "0", "1: notifications carry the sender's name, the conversation's title and the first 100 characters of the text; 0: no text"),
};
#define NSET (sizeof table / sizeof table[0])

/* Where each setting's value came from ("default", "flag", "config line N"
 * or PARLEY_NAME): checks made after loading name it (pl_config_src). */
static char origin[NSET][64];

static int set(pl_config *cfg, const setting *s, const char *val, const char *src) {
    char *field = (char *)cfg + s->off;
    snprintf(origin[s - table], sizeof origin[0], "%s", src);
    /* named as pl_config_src names it: "--name", "PARLEY_NAME: name" or
     * "config line N: name" */
    int flag = strcmp(src, "flag") == 0;
    const char *from = flag ? "" : src, *sep = flag ? "--" : ": ";
    if (!s->is_int) {
        if (strlen(val) >= s->size) {
            fprintf(stderr, "parleyd: %s%s%s: the value is too long\n", from, sep, s->name);
            return -1;
        }
        const char *const *c = s->choices;
        while (c && *c && strcmp(*c, val) != 0) c++;
        if (c && !*c) {
            fprintf(stderr, "parleyd: %s%s%s must be %s, not %s\n", from, sep, s->name, s->choices_text, val);
            return -1;
        }
        strcpy(field, val);
        return 0;
    }
    char *end;
    /* plain digits, a '-' before them at most: no blank, no '+' (strtol
     * would take " 5" and "+5" but not "5 ") */
    int plain = (val[0] >= '0' && val[0] <= '9') ||
                (val[0] == '-' && s->min < 0 && val[1] >= '0' && val[1] <= '9');   /* "-0" too (audit K3) */
    errno = 0;
    long v = plain ? strtol(val, &end, 10) : 0;
    if (!plain || *end || errno || v < s->min || v > s->max) {
        fprintf(stderr, "parleyd: %s%s%s must be an integer in [%ld, %ld]\n", from, sep, s->name, s->min, s->max);
        return -1;
    }
    *(int *)field = (int)v;
    return 0;
}

static const setting *find(const char *name, size_t n) {
    for (size_t i = 0; i < NSET; i++)
        if (strlen(table[i].name) == n && strncmp(table[i].name, name, n) == 0) return &table[i];
    return NULL;
}

static int load_file(pl_config *cfg, const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "parleyd: cannot open config file %s: %s\n", path, strerror(errno));
        return -1;
    }
    char line[2048];
    int lineno = 0, rc = 0;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        char *p = line;
        while (isspace((unsigned char)*p)) p++;
        if (!*p || *p == '#') continue;
        char *name = p;
        while (*p && !isspace((unsigned char)*p)) p++;
        size_t nlen = (size_t)(p - name);
        while (isspace((unsigned char)*p)) p++;
        char *val = p;
        size_t vl = strlen(val);
        while (vl && isspace((unsigned char)val[vl - 1])) val[--vl] = '\0';
        const setting *s = find(name, nlen);
        char src[64];
        snprintf(src, sizeof src, "config line %d", lineno);
        if (!s) {
            fprintf(stderr, "parleyd: %s: unknown setting %.*s\n", src, (int)nlen, name);
            rc = -1;
            break;
        }
        if (strcmp(s->name, "config") == 0) {   /* one file: a nested one would be ignored */
            fprintf(stderr, "parleyd: %s: config cannot name another file (give one --config)\n", src);
            rc = -1;
            break;
        }
        if (set(cfg, s, val, src)) { rc = -1; break; }
    }
    if (!rc && ferror(f)) {                     /* a directory opens, then reads EISDIR */
        fprintf(stderr, "parleyd: cannot read config file %s: %s\n", path, strerror(errno));
        rc = -1;
    }
    fclose(f);
    return rc;
}

/* Each setting, its default and, for a number, the range set() accepts. */
static void usage(void) {
    printf("usage: parleyd [--name value ...]    (also --version)\n\n"
           "settings (also PARLEY_NAME in the environment, or `name value` lines in --config FILE;\n"
           "a value out of its range, or not understood, stops the start with exit 2):\n");
    for (size_t i = 0; i < NSET; i++) {
        const setting *s = &table[i];
        if (s->is_int && s->min == 0 && s->max == 1)
            printf("  --%-18s %s (default: %s; 0 or 1)\n", s->name, s->help, s->def);
        else if (s->is_int)
            printf("  --%-18s %s (default: %s; %ld to %ld)\n", s->name, s->help, s->def, s->min, s->max);
        else if (strstr(s->help, "(default:"))    /* the help says it */
            printf("  --%-18s %s\n", s->name, s->help);
        else
            printf("  --%-18s %s (default: %s)\n", s->name, s->help, s->def[0] ? s->def : "none");
    }
}

int pl_config_load(pl_config *cfg, int argc, char **argv) {
    memset(cfg, 0, sizeof *cfg);
    for (size_t i = 0; i < NSET; i++) set(cfg, &table[i], table[i].def, "default");
    for (int i = 1; i < argc; i++) {    /* help and version first: whatever the rest says */
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage();
            return 1;
        }
        if (strcmp(argv[i], "--version") == 0) {
            printf("parleyd %s (protocol %d)\n", PL_VERSION, PL_PROTO_VERSION);
            return 1;
        }
    }
    /* the config file's path may come from the env or the flags */
    const char *file = getenv("PARLEY_CONFIG");
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--config") == 0 && i + 1 < argc) file = argv[i + 1];
        else if (strncmp(argv[i], "--config=", 9) == 0) file = argv[i] + 9;
    }
    if (file && *file && load_file(cfg, file)) return -1;
    for (size_t i = 0; i < NSET; i++) {
        char env[64] = "PARLEY_";
        size_t k = 7;
        for (const char *p = table[i].name; *p && k < sizeof env - 1; p++)
            env[k++] = *p == '-' ? '_' : (char)toupper((unsigned char)*p);
        env[k] = '\0';
        const char *v = getenv(env);
        if (v && set(cfg, &table[i], v, env)) return -1;
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strncmp(a, "--", 2) != 0) {
            fprintf(stderr, "parleyd: unexpected argument %s (try --help)\n", a);
            return -1;
        }
        a += 2;
        const char *eq = strchr(a, '=');
        size_t nlen = eq ? (size_t)(eq - a) : strlen(a);
        const setting *s = find(a, nlen);
        if (!s) {
            fprintf(stderr, "parleyd: unknown flag --%.*s (try --help)\n", (int)nlen, a);
            return -1;
        }
        const char *val = eq ? eq + 1 : (i + 1 < argc ? argv[++i] : NULL);
        if (!val) {
            fprintf(stderr, "parleyd: --%s needs a value\n", s->name);
            return -1;
        }
        if (set(cfg, s, val, "flag")) return -1;
    }
    return 0;
}

/* "" for a flag or the default, else "PARLEY_NAME: " or "config line N: ". */
const char *pl_config_from(const char *name) {
    static char buf[4][80];
    static int next;
    char *b = buf[next++ & 3];
    b[0] = '\0';
    for (size_t i = 0; i < NSET; i++)
        if (strcmp(table[i].name, name) == 0 && origin[i][0] && strcmp(origin[i], "flag") != 0 &&
            strcmp(origin[i], "default") != 0)
            snprintf(b, sizeof buf[0], "%.63s: ", origin[i]);
    return b;
}

const char *pl_config_src(const char *name) {
    static char buf[4][128];
    static int next;
    char *b = buf[next++ & 3];
    const char *from = pl_config_from(name);
    snprintf(b, sizeof buf[0], "%s%s%s", from, from[0] ? "" : "--", name);
    return b;
}
