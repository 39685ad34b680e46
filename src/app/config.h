/* config.h — parleyd's settings: one typed table read from defaults, an
 * optional file, the environment and flags (later sources win).
 *
 * Every setting is `--name value` (or `--name=value`), `PARLEY_NAME` in the
 * environment (dashes become underscores), or `name value` on a line of the
 * file given by --config / PARLEY_CONFIG. `parleyd --help` lists them all.
 */
#ifndef PL_CONFIG_H
#define PL_CONFIG_H

typedef struct pl_config {
    char listen[128];         /* host:port                                   */
    char data_dir[1024];      /* where parley.db and token.key live          */
    char log_level[16];
    char config_file[1024];
    char web_root[1024];      /* static web client directory ("" = built-in lookup) */
    int  access_ttl;          /* seconds                                     */
    int  refresh_ttl;         /* seconds                                     */
    int  argon2_ops;          /* argon2id passes                             */
    int  argon2_mem;          /* argon2id memory, KiB                        */
    int  max_body;            /* message body bytes                          */
    int  max_ws_message;      /* WebSocket message bytes                     */
    int  auth_timeout;        /* seconds to authenticate a WebSocket         */
    int  node_id;             /* snowflake node id, 0-1023; -1: automatic    */
    char store[1024];         /* "" (SQLite in data_dir) or postgres://...   */
    char redis[512];          /* "" (in-process bus) or redis://host:port    */
    char redis_prefix[64];    /* key and channel prefix in Redis             */
    int  store_readers;       /* reader threads/connections; 0: default      */
    int  max_group_members;
    char admins[1024];        /* server admins' usernames, comma-separated   */
    char content_filter[1024]; /* rules file (chat/filter.h); "" = none      */
    int  workspace_max_members;  /* quotas per workspace (0: none) */
    int  workspace_max_channels;
    int  retention;           /* seconds messages are kept where nothing else says (0: for ever) */
    int  purge_interval;      /* seconds between retention purges            */
    int  large_group;         /* members above which a group is large (not replayed, @all for admins); 0: off */
    int  edit_window;         /* seconds after sending a message may be edited; 0: always */
    int  presence_timeout;    /* seconds without a heartbeat before offline  */
    int  presence_coalesce;   /* ms between presence updates per user        */
    int  typing_ttl;          /* ms a typing start lasts without refresh     */
    int  receipt_fanout_max;  /* live sessions above which receipts stay with the user */
    int  rate_user_msgs;      /* messages per second per user (0 = no limit) */
    int  rate_user_burst;
    int  rate_conv_msgs;      /* messages per second per conversation        */
    int  rate_conv_burst;
    int  rate_workspace_msgs; /* messages per second per workspace (its channels) */
    int  rate_workspace_burst;
    int  rate_ip_requests;    /* HTTP requests and WebSocket opens per second per IP */
    int  rate_ip_burst;
    int  rate_ip_auth;        /* register/login/refresh per minute per IP    */
    int  rate_ip_loopback;    /* 1: apply IP limits to loopback clients too  */
    int  max_conns_per_ip;    /* 0 = no cap                                  */
    int  max_outbound;        /* bytes queued to one connection before it is closed (4008) */
    int  ping_interval;       /* seconds of silence before the server pings  */
    int  idle_timeout;        /* seconds of silence before the server closes */
    int  shutdown_grace;      /* seconds SIGTERM waits for clients to close  */
    int  slow_timeout;        /* seconds a replay may wait on a full queue before 4008 */
    int  flow_lag;            /* events behind the head at which a subscription lags (flow.c); 0: off */
    int  flow_share;          /* percent of subscriptions lagging (>= 2) that hold a conversation's acks */
    char allowed_origins[2048]; /* browser origins allowed besides our own (comma-separated) */
    char trusted_proxies[1024]; /* IPs/CIDRs whose X-Forwarded-Host/-Proto count */
    int  refresh_reuse_grace; /* seconds a rotated refresh token is answered 401 without revoking */
    /* TLS (net/tls.c) */
    char tls_cert[1024];      /* PEM chain; "" = plaintext                   */
    char tls_key[1024];       /* PEM private key                             */
    char tls_min[8];          /* "1.3" or "1.2"                              */
    int  tls_openssl_records; /* 1: TLS 1.3 stays on OpenSSL after the handshake */
    int  hsts_max_age;        /* seconds; 0 = no Strict-Transport-Security   */
    /* Server-Sent Events (chat/sse.c) */
    int  sse_heartbeat;       /* seconds between `: ping` comments on a stream */
    /* media (app/api_media.c) */
    char media_dir[1024];     /* blob store directory ("" = <data-dir>/media) */
    int  media_max_image;     /* bytes per kind                               */
    int  media_max_video;
    int  media_max_audio;
    int  media_max_file;
    int  media_quota_mb;      /* MiB of uploads a user may own (0: no quota)  */
    int  media_url_ttl;       /* seconds a signed media URL lasts             */
    int  media_gc_grace;      /* seconds an unreferenced upload is kept       */
    int  media_reserve;       /* MiB an upload must leave free on media_dir's disk (0: none) */
    /* push notifications (push/): on when any endpoint is set            */
    char push_webhook[1024];  /* URL every webhook device's notification is POSTed to */
    char push_webhook_secret[256]; /* HMAC-SHA-256 key of X-Parley-Signature ("" = none) */
    char push_fcm_url[1024];  /* FCM HTTP v1 messages:send URL              */
    char push_fcm_token[2048]; /* its OAuth 2 bearer token                  */
    char push_fcm_credentials[1024]; /* a service account's JSON key file  */
    char push_apns_url[1024]; /* APNs base URL (https://api.push.apple.com)  */
    char push_apns_topic[256]; /* apns-topic: the app's bundle id           */
    char push_apns_token[2048]; /* provider authentication token (JWT)      */
    char push_apns_key[1024]; /* .p8 key the provider token is minted with   */
    char push_apns_key_id[64];
    char push_apns_team_id[64];
    int  push_previews;       /* 1: notifications carry the sender, title and text */
} pl_config;

/* Fills cfg from all sources. Returns 0, 1 if --help or --version was
 * printed, or -1 after printing an error. */
int pl_config_load(pl_config *cfg, int argc, char **argv);

/* How an error after loading names a setting: "--name" when it was a flag
 * (or the default), "PARLEY_NAME: name" or "config line N: name" when it
 * came from the environment or the file (README "Configuration"). The
 * string lasts until the fourth call after. */
const char *pl_config_src(const char *name);
/* The same prefix alone: "" for a flag or the default, else "PARLEY_NAME: "
 * or "config line N: ". */
const char *pl_config_from(const char *name);

#endif
