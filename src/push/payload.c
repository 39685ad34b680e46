/* payload.c — push requests per platform and the meaning of their answers
 * (see payload.h; docs/protocol.md "Push notifications" shows each body).
 *
 * Every payload names the message (conversation, seq, id), its sender's id,
 * whether it mentions the recipient and the recipient's badge (unread, as
 * its clients count it): enough for an app to fetch it. The
 * text, the sender's name and the conversation's title go in only with
 * previews on (--push-previews), and never for a ciphertext message, which
 * has no text here (store.h invariant 9).
 */
#include "payload.h"

#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/alloc.h"
#include "../core/clock.h"
#include "../core/utf8.h"

static int set(const char *s) { return s && *s; }

int pl_push_platform_enabled(const pl_push_config *cfg, int platform) {
    switch (platform) {
    case PL_PUSH_WEBHOOK: return set(cfg->webhook);
    case PL_PUSH_FCM:     return set(cfg->fcm_url);
    case PL_PUSH_APNS:    return set(cfg->apns_url);
    default:              return 0;
    }
}

const char *pl_push_platform_name(int platform) {
    switch (platform) {
    case PL_PUSH_WEBHOOK: return "webhook";
    case PL_PUSH_FCM:     return "fcm";
    case PL_PUSH_APNS:    return "apns";
    default:              return NULL;
    }
}

int pl_push_platform_parse(const char *name) {
    for (int p = PL_PUSH_WEBHOOK; p <= PL_PUSH_APNS; p++)
        if (name && strcmp(name, pl_push_platform_name(p)) == 0) return p;
    return 0;
}

const char *pl_push_token_check(int platform, const char *token, size_t len) {
    if (len == 0 || len > PL_PUSH_TOKEN_MAX) return "token must be 1 to 512 bytes";
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)token[i];
        if (c <= 0x20 || c >= 0x7f) return "token must be printable ASCII without spaces";
        if (platform == PL_PUSH_APNS && !((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')))
            return "an APNs token is hexadecimal";
    }
    if (platform == PL_PUSH_APNS && (len < 64 || len > 200 || len % 2))
        return "an APNs token is an even number of hexadecimal digits, 64 to 200";
    return NULL;
}

/* The first PL_PUSH_PREVIEW_CHARS characters of a (valid UTF-8) text. */
static json_t *preview(const char *s, size_t len) {
    size_t n = pl_utf8_prefix(s, len, PL_PUSH_PREVIEW_CHARS);
    json_t *v = json_stringn(s, n);
    if (n < len && v) {
        char *t = pl_malloc(n + 4);
        memcpy(t, s, n);
        memcpy(t + n, "\xE2\x80\xA6", 4);             /* an ellipsis */
        json_decref(v);
        v = json_string(t);
        free(t);
    }
    return v ? v : json_string("");
}

static void id_string(char out[24], uint64_t id) { snprintf(out, 24, "%llu", (unsigned long long)id); }

/* The notification's title (conversation or sender) and text when
 * previews are on and the message is not end-to-end encrypted; NULL
 * otherwise. */
static int preview_parts(const pl_push_config *cfg, const pl_push *p, json_t **title, json_t **text) {
    *title = *text = NULL;
    if (!cfg->previews || p->encrypted) return 0;     /* nothing of an end-to-end message */
    *title = json_string(p->conv_kind != PL_CONV_DIRECT && p->title && *p->title ? p->title : p->sender_name);
    if (p->body) *text = preview(p->body, p->body_len);
    if (!*title) *title = json_string("");
    return 1;
}

static void add_header(pl_push_http *h, const char *name, const char *value) {
    if (h->nheaders >= PL_PUSH_HEADERS_MAX) return;
    size_t n = strlen(name) + strlen(value) + 3;
    h->headers[h->nheaders] = pl_malloc(n);
    snprintf(h->headers[h->nheaders++], n, "%s: %s", name, value);
}

static void bearer(pl_push_http *h, const char *token) {
    if (!set(token)) return;
    size_t n = strlen(token) + 8;
    char *v = pl_malloc(n);
    snprintf(v, n, "Bearer %s", token);
    add_header(h, "Authorization", v);
    free(v);
}

/* {"type","conversation","seq","id","ts","sender","mention"} and, with
 * previews, "sender_name", "title", "text": the webhook's notification. */
static json_t *webhook_body(const pl_push_config *cfg, const pl_push *p) {
    char id[24];
    id_string(id, p->id);
    json_t *n = json_pack("{s:s,s:I,s:I,s:s,s:I,s:I,s:b,s:I}", "type", "message", "conversation", (json_int_t)p->conv,
                          "seq", (json_int_t)p->seq, "id", id, "ts", (json_int_t)p->ts, "sender",
                          (json_int_t)p->sender, "mention", p->mention, "badge", (json_int_t)p->badge);
    json_t *title, *text;
    if (preview_parts(cfg, p, &title, &text)) {
        json_object_set_new(n, "sender_name", json_string(p->sender_name));
        json_object_set_new(n, "title", title);
        json_object_set_new(n, "text", text ? text : json_null());
    }
    return json_pack("{s:s,s:s,s:I,s:I,s:I,s:o}", "platform", "webhook", "token", p->token, "user",
                     (json_int_t)p->user, "device", (json_int_t)p->device, "sent_at", (json_int_t)pl_now_ms(),
                     "notification", n);
}

/* FCM HTTP v1: data values are strings; a notification block only with
 * previews (without it the app shows its own "new message"). */
static json_t *fcm_body(const pl_push_config *cfg, const pl_push *p) {
    char id[24], conv[24], seq[24], sender[24], badge[24];
    id_string(id, p->id);
    snprintf(badge, sizeof badge, "%lld", (long long)p->badge);
    snprintf(conv, sizeof conv, "%lld", (long long)p->conv);
    snprintf(seq, sizeof seq, "%lld", (long long)p->seq);
    snprintf(sender, sizeof sender, "%lld", (long long)p->sender);
    json_t *data = json_pack("{s:s,s:s,s:s,s:s,s:s,s:s,s:s}", "type", "message", "conversation", conv, "seq", seq,
                             "id", id, "sender", sender, "mention", p->mention ? "1" : "0", "badge", badge);
    json_t *msg = json_pack("{s:s,s:o,s:{s:s}}", "token", p->token, "data", data, "android", "priority", "high");
    json_t *title, *text;
    if (preview_parts(cfg, p, &title, &text)) {
        json_t *nt = json_object();
        json_object_set_new(nt, "title", title);
        json_object_set_new(nt, "body", text ? text : json_string(""));
        json_object_set_new(msg, "notification", nt);
    }
    return json_pack("{s:o}", "message", msg);
}

/* APNs: an alert; without previews a localizable key the app's strings
 * turn into "New message" / "New mention", with mutable-content so a
 * notification service extension may fetch and show the message. */
static json_t *apns_body(const pl_push_config *cfg, const pl_push *p) {
    char id[24], thread[32];
    id_string(id, p->id);
    snprintf(thread, sizeof thread, "c%lld", (long long)p->conv);
    json_t *title, *text, *alert;
    if (preview_parts(cfg, p, &title, &text))
        alert = json_pack("{s:o,s:o}", "title", title, "body", text ? text : json_string(""));
    else
        alert = json_pack("{s:s}", "loc-key", p->mention ? "PARLEY_NEW_MENTION" : "PARLEY_NEW_MESSAGE");
    return json_pack("{s:{s:o,s:s,s:i,s:s,s:I},s:I,s:I,s:s,s:I,s:b}", "aps", "alert", alert, "sound", "default",
                     "mutable-content", 1, "thread-id", thread, "badge", (json_int_t)p->badge, "conversation",
                     (json_int_t)p->conv, "seq", (json_int_t)p->seq, "id", id, "sender", (json_int_t)p->sender,
                     "mention", p->mention);
}

int pl_push_build(const pl_push_config *cfg, const pl_push *p, pl_push_http *out) {
    if (!pl_push_platform_enabled(cfg, p->platform)) return -1;
    memset(out, 0, sizeof *out);
    json_t *body;
    add_header(out, "Content-Type", "application/json");
    switch (p->platform) {
    case PL_PUSH_WEBHOOK:
        out->url = pl_strdup(cfg->webhook);
        body = webhook_body(cfg, p);
        break;
    case PL_PUSH_FCM:
        out->url = pl_strdup(cfg->fcm_url);
        bearer(out, cfg->fcm_token);
        body = fcm_body(cfg, p);
        break;
    default: {                                   /* PL_PUSH_APNS */
        size_t base = strlen(cfg->apns_url), n = base + strlen(p->token) + 16;
        while (base && cfg->apns_url[base - 1] == '/') base--;
        out->url = pl_malloc(n);
        snprintf(out->url, n, "%.*s/3/device/%s", (int)base, cfg->apns_url, p->token);
        char collapse[48];
        snprintf(collapse, sizeof collapse, "%lld:%lld", (long long)p->conv, (long long)p->seq);
        if (set(cfg->apns_topic)) add_header(out, "apns-topic", cfg->apns_topic);
        add_header(out, "apns-push-type", "alert");
        add_header(out, "apns-priority", "10");
        add_header(out, "apns-collapse-id", collapse);
        if (set(cfg->apns_token)) {
            size_t m = strlen(cfg->apns_token) + 8;
            char *v = pl_malloc(m);
            snprintf(v, m, "bearer %s", cfg->apns_token);
            add_header(out, "authorization", v);
            free(v);
        }
        body = apns_body(cfg, p);
        break;
    }
    }
    out->body = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    out->body_len = out->body ? strlen(out->body) : 0;
    if (p->platform == PL_PUSH_WEBHOOK && set(cfg->webhook_secret) && out->body) {
        uint8_t mac[crypto_auth_hmacsha256_BYTES];
        crypto_auth_hmacsha256_state st;
        crypto_auth_hmacsha256_init(&st, (const uint8_t *)cfg->webhook_secret, strlen(cfg->webhook_secret));
        crypto_auth_hmacsha256_update(&st, (const uint8_t *)out->body, out->body_len);
        crypto_auth_hmacsha256_final(&st, mac);
        char hex[7 + sizeof mac * 2 + 1];
        memcpy(hex, "sha256=", 7);
        sodium_bin2hex(hex + 7, sizeof hex - 7, mac, sizeof mac);
        add_header(out, "X-Parley-Signature", hex);
    }
    return 0;
}

void pl_push_http_release(pl_push_http *h) {
    free(h->url);
    for (int i = 0; i < h->nheaders; i++) free(h->headers[i]);
    free(h->body);                                /* json_dumps uses malloc */
    memset(h, 0, sizeof *h);
}

static int body_has(const char *body, size_t len, const char *word) {
    if (!body) return 0;
    size_t w = strlen(word);
    for (size_t i = 0; i + w <= len; i++)
        if (memcmp(body + i, word, w) == 0) return 1;
    return 0;
}

pl_push_outcome pl_push_classify(int platform, long status, const char *body, size_t len) {
    if (status >= 200 && status < 300) return PL_PUSH_SENT;
    if (status == 0 || status == 429 || status >= 500) return PL_PUSH_RETRY;
    switch (platform) {
    case PL_PUSH_FCM:                  /* 404 UNREGISTERED; 400 for a malformed token */
        if (status == 404 || (status == 400 && body_has(body, len, "registration token"))) return PL_PUSH_GONE;
        break;
    case PL_PUSH_APNS:                 /* 410 Unregistered; 400 BadDeviceToken */
        if (status == 410 || (status == 400 && body_has(body, len, "BadDeviceToken"))) return PL_PUSH_GONE;
        break;
    default:                           /* webhook: 404 or 410 forget the device */
        if (status == 404 || status == 410) return PL_PUSH_GONE;
        break;
    }
    return PL_PUSH_FAILED;
}
