/* payload.h — what a push notification looks like on the wire: the HTTP
 * request for each platform (a webhook, FCM's HTTP v1 API, APNs' HTTP/2
 * API) and what the push service's answer means.
 *
 * Owns: the request's URL, headers and JSON body for one pl_push, and the
 * classification of the answer. Pure functions, no I/O: sender.c sends,
 * worker.c decides what to send.
 */
#ifndef PL_PUSH_PAYLOAD_H
#define PL_PUSH_PAYLOAD_H

#include <stddef.h>

#include "../store/store.h"

typedef struct pl_push_config {     /* strings borrowed; "" or NULL: unset    */
    const char *webhook;            /* URL webhook devices' notifications go to */
    const char *webhook_secret;     /* HMAC-SHA-256 key of X-Parley-Signature */
    const char *fcm_url;            /* FCM v1 messages:send URL               */
    const char *fcm_token;          /* its bearer token                       */
    const char *apns_url;           /* APNs base URL                          */
    const char *apns_topic;
    const char *apns_token;         /* provider token (bearer)                */
    int         previews;           /* 1: sender, title and text in the payload */
    const char *apns_key_file;      /* worker.c: mint apns_token from this .p8 key */
    const char *apns_key_id;        /* ... its key id                         */
    const char *apns_team_id;       /* ... and the team                       */
    const char *fcm_credentials;    /* worker.c: a service account's JSON file:
                                     * fcm_token is an OAuth 2 token it mints */
    int64_t     large_group;        /* worker.c: members above which only the
                                     * mentioned are notified (0: no limit) */
} pl_push_config;

#define PL_PUSH_HEADERS_MAX 8
#define PL_PUSH_PREVIEW_CHARS 100   /* characters of text a preview carries  */

typedef struct pl_push_http {       /* one request; all owned                */
    char  *url;
    char  *headers[PL_PUSH_HEADERS_MAX];  /* "Name: value" lines            */
    int    nheaders;
    char  *body;                    /* JSON                                   */
    size_t body_len;
} pl_push_http;

/* What an answer means for the notification and its device. */
typedef enum pl_push_outcome {
    PL_PUSH_SENT = 1,               /* accepted                               */
    PL_PUSH_GONE,                   /* the token is dead: forget the device   */
    PL_PUSH_RETRY,                  /* try again later (5xx, 429, no answer)  */
    PL_PUSH_FAILED                  /* refused for another reason: give up    */
} pl_push_outcome;

/* 1 when platform is one cfg has an endpoint for (FCM: fcm_url, which
 * worker.c fills from fcm_credentials' project when unset). */
int  pl_push_platform_enabled(const pl_push_config *cfg, int platform);
/* "webhook", "fcm", "apns" (NULL for others) and back (0: unknown). */
const char *pl_push_platform_name(int platform);
int  pl_push_platform_parse(const char *name);
/* Whether token is acceptable for platform: 1..PL_PUSH_TOKEN_MAX bytes of
 * printable ASCII without spaces; APNs: hex digits, an even number, 64 to
 * 200. NULL when it is, else the reason. */
const char *pl_push_token_check(int platform, const char *token, size_t len);

/* Fills out with the request that delivers p. Returns 0, or -1 when p's
 * platform has no endpoint in cfg (out untouched). */
int  pl_push_build(const pl_push_config *cfg, const pl_push *p, pl_push_http *out);
void pl_push_http_release(pl_push_http *h);

/* The outcome of an answer: status is the HTTP status (0: none arrived:
 * connection failure or timeout), body its first bytes (may be NULL). */
pl_push_outcome pl_push_classify(int platform, long status, const char *body, size_t len);

#endif
