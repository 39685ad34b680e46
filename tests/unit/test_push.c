/* test_push.c — push notification requests and answers (src/push/payload.c;
 * docs/protocol.md "Push notifications"). */
#include "test.h"

#include <jansson.h>
#include <sodium.h>
#include <stdlib.h>

#include "push/payload.h"

static const pl_push_config cfg_all = {
    .webhook = "http://hook.example/in", .webhook_secret = "k3y", .fcm_url = "https://fcm.example/send",
    .fcm_token = "oauth", .apns_url = "https://apns.example/", .apns_topic = "app.topic", .apns_token = "jwt",
};

static pl_push sample(int platform, const char *token) {
    pl_push p;
    memset(&p, 0, sizeof p);
    p.outbox = 7;
    p.conv = 12;
    p.seq = 34;
    p.id = 386602381883736064ULL;
    p.ts = 1700000000000;
    p.sender = 5;
    strcpy(p.sender_name, "alice");
    p.conv_kind = PL_CONV_GROUP;
    p.title = (char *)"Team";
    p.body = (char *)"secret words";
    p.body_len = strlen(p.body);
    p.user = 9;
    p.device = 3;
    p.badge = 7;
    p.platform = platform;
    p.token = (char *)token;
    return p;
}

static const char *header(const pl_push_http *h, const char *name) {
    size_t n = strlen(name);
    for (int i = 0; i < h->nheaders; i++)
        if (strncmp(h->headers[i], name, n) == 0 && h->headers[i][n] == ':') return h->headers[i] + n + 2;
    return NULL;
}

TEST(push_webhook_carries_no_text_and_is_signed) {
    pl_push p = sample(PL_PUSH_WEBHOOK, "tok");
    pl_push_http h;
    CHECK_EQ(pl_push_build(&cfg_all, &p, &h), 0);
    CHECK_STR(h.url, "http://hook.example/in");
    CHECK(strstr(h.body, "secret") == NULL);
    CHECK(strstr(h.body, "alice") == NULL);
    CHECK(strstr(h.body, "Team") == NULL);
    json_t *o = json_loads(h.body, 0, NULL);
    CHECK(o != NULL);
    json_t *n = json_object_get(o, "notification");
    CHECK_EQ(json_integer_value(json_object_get(n, "conversation")), 12);
    CHECK_EQ(json_integer_value(json_object_get(n, "seq")), 34);
    CHECK_STR(json_string_value(json_object_get(n, "id")), "386602381883736064");
    CHECK(json_is_false(json_object_get(n, "mention")));
    CHECK_EQ(json_integer_value(json_object_get(n, "badge")), 7);
    CHECK_STR(json_string_value(json_object_get(o, "token")), "tok");
    json_decref(o);
    uint8_t mac[crypto_auth_hmacsha256_BYTES];
    crypto_auth_hmacsha256_state st;
    crypto_auth_hmacsha256_init(&st, (const uint8_t *)"k3y", 3);
    crypto_auth_hmacsha256_update(&st, (const uint8_t *)h.body, h.body_len);
    crypto_auth_hmacsha256_final(&st, mac);
    char want[80] = "sha256=";
    sodium_bin2hex(want + 7, sizeof want - 7, mac, sizeof mac);
    CHECK_STR(header(&h, "X-Parley-Signature"), want);
    pl_push_http_release(&h);
}

TEST(push_previews_truncate_to_100_characters) {
    pl_push_config cfg = cfg_all;
    cfg.previews = 1;
    char body[400] = "";
    for (int i = 0; i < 120; i++) strcat(body, "\xC3\xA9");    /* é: two bytes each */
    pl_push p = sample(PL_PUSH_FCM, "tok");
    p.body = body;
    p.body_len = strlen(body);
    pl_push_http h;
    CHECK_EQ(pl_push_build(&cfg, &p, &h), 0);
    json_t *o = json_loads(h.body, 0, NULL);
    json_t *nt = json_object_get(json_object_get(o, "message"), "notification");
    CHECK_STR(json_string_value(json_object_get(nt, "title")), "Team");
    const char *text = json_string_value(json_object_get(nt, "body"));
    CHECK(text != NULL);
    CHECK_EQ(strlen(text), 200 + 3);                            /* 100 é and an ellipsis */
    CHECK_STR(text + 200, "\xE2\x80\xA6");
    json_decref(o);
    pl_push_http_release(&h);
    /* an end-to-end encrypted message: nothing of it, previews or not */
    p.encrypted = 1;
    CHECK_EQ(pl_push_build(&cfg, &p, &h), 0);
    CHECK(strstr(h.body, "notification") == NULL);
    CHECK(strstr(h.body, "Team") == NULL);
    pl_push_http_release(&h);
    p.encrypted = 0;
    /* a direct conversation's title is the sender; a message without text */
    p.conv_kind = PL_CONV_DIRECT;
    p.body = NULL;
    p.body_len = 0;
    p.platform = PL_PUSH_APNS;
    p.token = (char *)"abcd";
    CHECK_EQ(pl_push_build(&cfg, &p, &h), 0);
    o = json_loads(h.body, 0, NULL);
    json_t *alert = json_object_get(json_object_get(o, "aps"), "alert");
    CHECK_STR(json_string_value(json_object_get(alert, "title")), "alice");
    CHECK_STR(json_string_value(json_object_get(alert, "body")), "");
    json_decref(o);
    pl_push_http_release(&h);
}

TEST(push_fcm_and_apns_requests) {
    pl_push p = sample(PL_PUSH_FCM, "f-tok");
    p.mention = 1;
    pl_push_http h;
    CHECK_EQ(pl_push_build(&cfg_all, &p, &h), 0);
    CHECK_STR(h.url, "https://fcm.example/send");
    CHECK_STR(header(&h, "Authorization"), "Bearer oauth");
    json_t *o = json_loads(h.body, 0, NULL);
    json_t *m = json_object_get(o, "message");
    CHECK_STR(json_string_value(json_object_get(m, "token")), "f-tok");
    CHECK_STR(json_string_value(json_object_get(json_object_get(m, "data"), "mention")), "1");
    CHECK_STR(json_string_value(json_object_get(json_object_get(m, "data"), "seq")), "34");
    CHECK_STR(json_string_value(json_object_get(json_object_get(m, "data"), "badge")), "7");
    CHECK(json_object_get(m, "notification") == NULL);
    json_decref(o);
    pl_push_http_release(&h);
    p.platform = PL_PUSH_APNS;
    p.token = (char *)"a1b2";
    CHECK_EQ(pl_push_build(&cfg_all, &p, &h), 0);
    CHECK_STR(h.url, "https://apns.example/3/device/a1b2");      /* the trailing slash once */
    CHECK_STR(header(&h, "apns-topic"), "app.topic");
    CHECK_STR(header(&h, "apns-push-type"), "alert");
    CHECK_STR(header(&h, "apns-collapse-id"), "12:34");
    CHECK_STR(header(&h, "authorization"), "bearer jwt");
    o = json_loads(h.body, 0, NULL);
    json_t *alert = json_object_get(json_object_get(o, "aps"), "alert");
    CHECK_STR(json_string_value(json_object_get(alert, "loc-key")), "PARLEY_NEW_MENTION");
    CHECK_EQ(json_integer_value(json_object_get(json_object_get(o, "aps"), "badge")), 7);
    CHECK(strstr(h.body, "secret") == NULL);
    json_decref(o);
    pl_push_http_release(&h);
    pl_push_config none = {.previews = 0};
    CHECK_EQ(pl_push_build(&none, &p, &h), -1);                  /* no endpoint: no request */
}

TEST(push_answers_classified) {
    CHECK_EQ(pl_push_classify(PL_PUSH_WEBHOOK, 200, NULL, 0), PL_PUSH_SENT);
    CHECK_EQ(pl_push_classify(PL_PUSH_WEBHOOK, 204, NULL, 0), PL_PUSH_SENT);
    CHECK_EQ(pl_push_classify(PL_PUSH_WEBHOOK, 410, NULL, 0), PL_PUSH_GONE);
    CHECK_EQ(pl_push_classify(PL_PUSH_WEBHOOK, 404, NULL, 0), PL_PUSH_GONE);
    CHECK_EQ(pl_push_classify(PL_PUSH_WEBHOOK, 0, NULL, 0), PL_PUSH_RETRY);     /* no answer */
    CHECK_EQ(pl_push_classify(PL_PUSH_WEBHOOK, 429, NULL, 0), PL_PUSH_RETRY);
    CHECK_EQ(pl_push_classify(PL_PUSH_WEBHOOK, 503, NULL, 0), PL_PUSH_RETRY);
    CHECK_EQ(pl_push_classify(PL_PUSH_WEBHOOK, 400, NULL, 0), PL_PUSH_FAILED);
    CHECK_EQ(pl_push_classify(PL_PUSH_FCM, 404, "{}", 2), PL_PUSH_GONE);
    const char *fcm_bad = "{\"error\":{\"message\":\"The registration token is not a valid FCM registration token\"}}";
    CHECK_EQ(pl_push_classify(PL_PUSH_FCM, 400, fcm_bad, strlen(fcm_bad)), PL_PUSH_GONE);
    CHECK_EQ(pl_push_classify(PL_PUSH_FCM, 401, NULL, 0), PL_PUSH_FAILED);
    CHECK_EQ(pl_push_classify(PL_PUSH_APNS, 410, NULL, 0), PL_PUSH_GONE);
    CHECK_EQ(pl_push_classify(PL_PUSH_APNS, 400, "{\"reason\":\"BadDeviceToken\"}", 27), PL_PUSH_GONE);
    CHECK_EQ(pl_push_classify(PL_PUSH_APNS, 400, "{\"reason\":\"BadTopic\"}", 21), PL_PUSH_FAILED);
    CHECK_EQ(pl_push_classify(PL_PUSH_APNS, 403, NULL, 0), PL_PUSH_FAILED);
}

TEST(push_tokens_checked) {
    CHECK(pl_push_token_check(PL_PUSH_WEBHOOK, "abc:DEF-_1", 10) == NULL);
    CHECK(pl_push_token_check(PL_PUSH_WEBHOOK, "", 0) != NULL);
    CHECK(pl_push_token_check(PL_PUSH_WEBHOOK, "a b", 3) != NULL);
    CHECK(pl_push_token_check(PL_PUSH_WEBHOOK, "a\x01", 2) != NULL);
    CHECK(pl_push_token_check(PL_PUSH_FCM, "caf\xC3\xA9", 5) != NULL);
    char big[PL_PUSH_TOKEN_MAX + 2];
    memset(big, 'a', sizeof big);
    CHECK(pl_push_token_check(PL_PUSH_FCM, big, PL_PUSH_TOKEN_MAX) == NULL);
    CHECK(pl_push_token_check(PL_PUSH_FCM, big, PL_PUSH_TOKEN_MAX + 1) != NULL);
    CHECK(pl_push_token_check(PL_PUSH_APNS, big, 64) == NULL);                  /* 'a' is hex */
    CHECK(pl_push_token_check(PL_PUSH_APNS, big, 63) != NULL);                  /* odd, short */
    CHECK(pl_push_token_check(PL_PUSH_APNS, "zz", 2) != NULL);
    CHECK_EQ(pl_push_platform_parse("apns"), PL_PUSH_APNS);
    CHECK_EQ(pl_push_platform_parse("APNS"), 0);
    CHECK_EQ(pl_push_platform_parse(NULL), 0);
    CHECK_STR(pl_push_platform_name(PL_PUSH_FCM), "fcm");
}

/* ---- the APNs provider token (src/push/jwt.c) ------------------------------- */

#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <unistd.h>

#include "push/jwt.h"

static size_t unb64(const char *s, size_t n, uint8_t *out, size_t cap) {
    size_t len = 0;
    if (sodium_base642bin(out, cap, s, n, NULL, &len, NULL, sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0) return 0;
    return len;
}

static char *write_key(EVP_PKEY *pk) {
    static char path[64];
    snprintf(path, sizeof path, "/tmp/parley-jwt-%d.p8", (int)getpid());
    FILE *f = fopen(path, "w");
    if (!f) return NULL;
    PEM_write_PrivateKey(f, pk, NULL, NULL, 0, NULL, NULL);
    fclose(f);
    return path;
}

TEST(push_apns_jwt_verifies) {
    EVP_PKEY *pk = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    CHECK(pk != NULL);
    char *path = write_key(pk);
    CHECK(path != NULL);
    char err[256];
    pl_jwt_key *k = pl_jwt_key_load(path, err, sizeof err);
    unlink(path);
    CHECK(k != NULL);
    char *t = pl_jwt_es256(k, "KEY123", "TEAM9", 1700000000);
    pl_jwt_key_free(k);
    CHECK(t != NULL);
    char *d1 = strchr(t, '.'), *d2 = d1 ? strchr(d1 + 1, '.') : NULL;
    CHECK(d1 && d2 && !strchr(d2 + 1, '.'));
    uint8_t buf[256];
    size_t n = unb64(t, (size_t)(d1 - t), buf, sizeof buf);
    buf[n] = 0;
    CHECK_STR((char *)buf, "{\"alg\":\"ES256\",\"kid\":\"KEY123\"}");
    n = unb64(d1 + 1, (size_t)(d2 - d1 - 1), buf, sizeof buf);
    buf[n] = 0;
    CHECK_STR((char *)buf, "{\"iss\":\"TEAM9\",\"iat\":1700000000}");
    uint8_t raw[64];
    CHECK_EQ(unb64(d2 + 1, strlen(d2 + 1), raw, sizeof raw), 64);     /* r || s, as JWS wants */
    ECDSA_SIG *sig = ECDSA_SIG_new();
    ECDSA_SIG_set0(sig, BN_bin2bn(raw, 32, NULL), BN_bin2bn(raw + 32, 32, NULL));
    uint8_t *der = NULL;
    int dlen = i2d_ECDSA_SIG(sig, &der);
    ECDSA_SIG_free(sig);
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int ok = EVP_DigestVerifyInit(ctx, NULL, EVP_sha256(), NULL, pk) == 1 &&
             EVP_DigestVerify(ctx, der, (size_t)dlen, (const uint8_t *)t, (size_t)(d2 - t)) == 1;
    EVP_MD_CTX_free(ctx);
    OPENSSL_free(der);
    free(t);
    EVP_PKEY_free(pk);
    CHECK(ok);
}

TEST(push_apns_key_refused_unless_p256) {
    char err[256] = "";
    CHECK(pl_jwt_key_load("/nonexistent/key.p8", err, sizeof err) == NULL);
    CHECK(strstr(err, "cannot read") != NULL);
    EVP_PKEY *pk = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-384");
    char *path = write_key(pk);
    CHECK(path != NULL);
    CHECK(pl_jwt_key_load(path, err, sizeof err) == NULL);
    CHECK(strstr(err, "P-256") != NULL);
    unlink(path);
    EVP_PKEY_free(pk);
}

/* ---- settling a pass (src/push/worker.c) -------------------------------------- */

#include "push/push.h"

TEST(push_settle_outcomes) {
    /* rows 10, 11, 12, 13; pushes in row order; 13 had none (all online) */
    int64_t rows[] = {10, 11, 12, 13};
    pl_push p[7];
    memset(p, 0, sizeof p);
    int64_t outbox[] = {10, 10, 11, 11, 11, 12, 12};
    int64_t device[] = {1, 2, 5, 6, 7, 2, 8};
    uint8_t outcome[] = {PL_PUSH_SENT, PL_PUSH_GONE, PL_PUSH_RETRY, PL_PUSH_SENT, PL_PUSH_RETRY, PL_PUSH_GONE, 0};
    for (int i = 0; i < 7; i++) {
        p[i].outbox = outbox[i];
        p[i].device = device[i];
    }
    pl_push_settled s;
    pl_push_settle(rows, 4, p, outcome, 7, &s);
    CHECK_EQ(s.ndone, 3);                         /* 10 (sent, gone), 12 (gone, online), 13 */
    CHECK_EQ(s.done[0], 10);
    CHECK_EQ(s.done[1], 12);
    CHECK_EQ(s.done[2], 13);
    CHECK_EQ(s.nretries, 1);                      /* 11: to its failed devices only */
    CHECK_EQ(s.retries[0].id, 11);
    CHECK_EQ(s.retries[0].ndevices, 2);
    CHECK_EQ(s.retries[0].devices[0], 5);
    CHECK_EQ(s.retries[0].devices[1], 7);
    CHECK_EQ(s.ndead, 1);                         /* device 2, once */
    CHECK_EQ(s.dead[0], 2);
    pl_push_settled_release(&s);
    pl_push_settle(rows, 4, NULL, NULL, 0, &s);   /* nothing to send: every row done */
    CHECK_EQ(s.ndone, 4);
    CHECK_EQ(s.nretries + s.ndead, 0);
    pl_push_settled_release(&s);
}

/* ---- the sender's lanes (src/push/sender.c) ----------------------------------- */

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/socket.h>

#include "push/sender.h"

/* A local HTTP server: answers POST /ok with 200 at once, keeps every
 * other request unanswered until stop. */
typedef struct hold_srv {
    int             fd, port, stop;
    pthread_t       th;
    int             held[64];
    int             nheld;
} hold_srv;

static void *hold_main(void *arg) {
    hold_srv *h = arg;
    while (!__atomic_load_n(&h->stop, __ATOMIC_ACQUIRE)) {
        int c = accept(h->fd, NULL, NULL);
        if (c < 0) continue;
        char buf[4096];
        ssize_t n = recv(c, buf, sizeof buf - 1, 0);
        if (n > 0 && strncmp(buf, "POST /ok", 8) == 0) {
            const char *ans = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
            (void)!send(c, ans, strlen(ans), 0);
            close(c);
        } else if (h->nheld < 64) {
            h->held[h->nheld++] = c;          /* never answered */
        } else {
            close(c);
        }
    }
    return NULL;
}

static pthread_mutex_t wake_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t  wake_cv = PTHREAD_COND_INITIALIZER;
static int             wakes;

static void on_sender_wake(void *arg) {
    pthread_mutex_lock(&wake_mu);
    wakes++;
    pthread_cond_signal(&wake_cv);
    pthread_mutex_unlock(&wake_mu);
}

static pl_push_req *hold_req(int port, const char *path, int lane, size_t index) {
    pl_push_req *r = calloc(1, sizeof *r);
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", port, path);
    r->http.url = strdup(url);
    r->http.body = strdup("{}");
    r->http.body_len = 2;
    r->lane = lane;
    r->index = index;
    return r;
}

/* 40 requests to a service that does not answer, then one to another
 * service: the other's comes back first, while all 40 still hang (one
 * lane holds at most PL_PUSH_LANE_MAX of the PL_PUSH_INFLIGHT slots). */
TEST(push_sender_hung_service_leaves_slots_to_others) {
    hold_srv h;
    memset(&h, 0, sizeof h);
    h.fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    CHECK_EQ(bind(h.fd, (struct sockaddr *)&a, sizeof a), 0);
    CHECK_EQ(listen(h.fd, 128), 0);
    getsockname(h.fd, (struct sockaddr *)&a, &al);
    h.port = ntohs(a.sin_port);
    pthread_create(&h.th, NULL, hold_main, &h);
    pl_push_sender *s = pl_push_sender_start(on_sender_wake, NULL);
    CHECK(s != NULL);
    pl_push_req *list = NULL;
    for (size_t i = 0; i < 40; i++) {
        pl_push_req *r = hold_req(h.port, "/hang", 1, i);
        r->next = list;
        list = r;
    }
    pl_push_sender_submit(s, list);
    pl_push_sender_submit(s, hold_req(h.port, "/ok", 2, 99));
    pl_push_req *first = NULL;
    int others = 0;
    while (!first) {                              /* the first completions */
        pthread_mutex_lock(&wake_mu);
        while (!wakes) pthread_cond_wait(&wake_cv, &wake_mu);
        wakes = 0;
        pthread_mutex_unlock(&wake_mu);
        for (pl_push_req *r = pl_push_sender_take(s), *next; r; r = next) {
            next = r->next;
            if (r->index == 99) first = r;
            else {
                others++;
                free(r);
            }
        }
    }
    pl_push_sender_stop(s);                       /* abandons the hung ones */
    __atomic_store_n(&h.stop, 1, __ATOMIC_RELEASE);
    shutdown(h.fd, SHUT_RDWR);
    int c = socket(AF_INET, SOCK_STREAM, 0);      /* wakes accept() */
    (void)!connect(c, (struct sockaddr *)&a, sizeof a);
    close(c);
    pthread_join(h.th, NULL);
    for (int i = 0; i < h.nheld; i++) close(h.held[i]);
    close(h.fd);
    CHECK_EQ(first->status, 200);
    CHECK_EQ(others, 0);                          /* every /hang was still out */
    free(first);
}

/* A deferred notification keeps its row for its device like a retry; a
 * row whose kept devices were all deferred (none tried) gets its attempt
 * back (refund), one with a real failure does not. */
TEST(push_settle_deferred_refunds) {
    int64_t rows[] = {20, 21};
    pl_push p[3];
    memset(p, 0, sizeof p);
    int64_t outbox[] = {20, 21, 21}, device[] = {1, 1, 2};
    uint8_t outcome[] = {PL_PUSH_DEFERRED, PL_PUSH_DEFERRED, PL_PUSH_RETRY};
    for (int i = 0; i < 3; i++) {
        p[i].outbox = outbox[i];
        p[i].device = device[i];
    }
    pl_push_settled s;
    pl_push_settle(rows, 2, p, outcome, 3, &s);
    CHECK_EQ(s.ndone, 0);
    CHECK_EQ(s.nretries, 2);
    CHECK_EQ(s.retries[0].id, 20);
    CHECK_EQ(s.retries[0].refund, 1);             /* only deferred: not an attempt */
    CHECK_EQ(s.retries[1].id, 21);
    CHECK_EQ(s.retries[1].ndevices, 2);
    CHECK_EQ(s.retries[1].refund, 0);             /* device 2 was tried */
    pl_push_settled_release(&s);
}

/* ---- one device's order (src/push/order.c; protocol.md "Order") -------------- */

#include "push/order.h"

static int P1, P2, P3;                            /* three passes (only compared) */

/* One pass, two devices: each device's notifications go one at a time in
 * row order; the devices do not wait for each other. */
TEST(push_order_one_at_a_time_per_device) {
    pl_push_order *o = pl_push_order_new();
    size_t k = 99;
    CHECK_EQ(pl_push_order_offer(o, 7, 1, &P1, 0, 0), PL_PUSH_ORDER_GO);
    CHECK_EQ(pl_push_order_offer(o, 8, 1, &P1, 1, 0), PL_PUSH_ORDER_GO);     /* another device */
    CHECK_EQ(pl_push_order_offer(o, 7, 2, &P1, 2, 0), PL_PUSH_ORDER_WAIT);
    CHECK_EQ(pl_push_order_offer(o, 7, 3, &P1, 3, 0), PL_PUSH_ORDER_WAIT);
    CHECK_EQ(pl_push_order_offer(o, 8, 2, &P1, 4, 0), PL_PUSH_ORDER_WAIT);
    pl_push_order_settled(o, 7, 1, 0, 1);
    CHECK_EQ(pl_push_order_next(o, 7, 0, &k, 1), PL_PUSH_ORDER_GO);
    CHECK_EQ(k, 2);
    pl_push_order_settled(o, 8, 1, 0, 1);                                   /* 8 goes on meanwhile */
    CHECK_EQ(pl_push_order_next(o, 8, 0, &k, 1), PL_PUSH_ORDER_GO);
    CHECK_EQ(k, 4);
    pl_push_order_settled(o, 7, 2, 0, 2);
    CHECK_EQ(pl_push_order_next(o, 7, 0, &k, 2), PL_PUSH_ORDER_GO);
    CHECK_EQ(k, 3);
    pl_push_order_settled(o, 7, 3, 0, 3);
    CHECK_EQ(pl_push_order_next(o, 7, 0, &k, 3), 0);                        /* its chain is over */
    pl_push_order_settled(o, 8, 2, 0, 3);
    CHECK_EQ(pl_push_order_next(o, 8, 0, &k, 3), 0);
    CHECK_EQ(pl_push_order_devices(o), 0);
    pl_push_order_free(&o);
    CHECK(o == NULL);
}

/* A transient failure holds back every later notification of its device,
 * in this pass and in others, until it is sent; then they go in order. */
TEST(push_order_retry_comes_first) {
    pl_push_order *o = pl_push_order_new();
    size_t k = 99;
    CHECK_EQ(pl_push_order_offer(o, 7, 1, &P1, 0, 0), PL_PUSH_ORDER_GO);
    CHECK_EQ(pl_push_order_offer(o, 7, 2, &P1, 1, 0), PL_PUSH_ORDER_WAIT);
    CHECK_EQ(pl_push_order_offer(o, 7, 3, &P2, 0, 0), PL_PUSH_ORDER_DEFER); /* another pass: not behind P1's */
    CHECK_EQ(pl_push_order_offer(o, 8, 3, &P2, 1, 0), PL_PUSH_ORDER_GO);    /* another device goes */
    pl_push_order_settled(o, 7, 1, 1, 1);                                   /* 500: kept for a retry */
    CHECK_EQ(pl_push_order_next(o, 7, 0, &k, 1), PL_PUSH_ORDER_DEFER);      /* 2 waits for 1 */
    CHECK_EQ(k, 1);
    CHECK_EQ(pl_push_order_next(o, 7, 0, &k, 1), 0);
    /* P1's outcomes are recorded: rows 1 and 2 kept for device 7 */
    int64_t rows1[] = {1, 2}, dev7[] = {7};
    pl_push_retry kept1[] = {{1, dev7, 1, 0, 0}, {2, dev7, 1, 0, 1}};
    pl_push_order_rows_done(o, rows1, 2, kept1, 2);
    /* a deferred row back before the retry: deferred again */
    CHECK_EQ(pl_push_order_offer(o, 7, 2, &P3, 0, 2), PL_PUSH_ORDER_DEFER);
    CHECK_EQ(pl_push_order_offer(o, 7, 9, &P3, 1, 2), PL_PUSH_ORDER_DEFER); /* a new one too */
    /* the retry and the rest come back together: in row order, one at a time */
    pl_push_order_settled(o, 8, 3, 0, 3);
    CHECK_EQ(pl_push_order_next(o, 8, 0, &k, 3), 0);
    CHECK_EQ(pl_push_order_offer(o, 7, 1, &P3, 0, 4), PL_PUSH_ORDER_GO);
    CHECK_EQ(pl_push_order_offer(o, 7, 2, &P3, 1, 4), PL_PUSH_ORDER_WAIT);
    CHECK_EQ(pl_push_order_offer(o, 7, 3, &P3, 2, 4), PL_PUSH_ORDER_WAIT);
    CHECK_EQ(pl_push_order_offer(o, 7, 9, &P3, 3, 4), PL_PUSH_ORDER_WAIT);
    int64_t sent[] = {1, 2, 3};                    /* rows completing; then P3's next index */
    for (size_t i = 0; i < 3; i++) {
        pl_push_order_settled(o, 7, sent[i], 0, 5);
        CHECK_EQ(pl_push_order_next(o, 7, 0, &k, 5), PL_PUSH_ORDER_GO);
        CHECK_EQ(k, i + 1);
    }
    pl_push_order_settled(o, 7, 9, 0, 6);
    CHECK_EQ(pl_push_order_next(o, 7, 0, &k, 6), 0);
    CHECK_EQ(pl_push_order_devices(o), 0);
    pl_push_order_free(&o);
}

/* A device is not held back for good: a held row that was dropped (out of
 * attempts), finished without it, or not seen for PL_PUSH_HOLD_MS lets
 * the later ones go; a pass past its time defers its chain's rest. */
TEST(push_order_given_up_lets_the_rest_go) {
    pl_push_order *o = pl_push_order_new();
    size_t k = 99;
    pl_push_order_keep(o, 7, 1, 0);                                         /* e.g. no FCM token yet */
    CHECK_EQ(pl_push_order_offer(o, 7, 2, &P1, 0, 0), PL_PUSH_ORDER_DEFER);
    int64_t dropped[] = {1};
    pl_push_order_forget(o, dropped, 1);                                    /* the claim dropped row 1 */
    CHECK_EQ(pl_push_order_offer(o, 7, 2, &P2, 0, 1), PL_PUSH_ORDER_GO);
    CHECK_EQ(pl_push_order_offer(o, 7, 3, &P2, 1, 1), PL_PUSH_ORDER_WAIT);
    pl_push_order_settled(o, 7, 2, 0, 2);
    CHECK_EQ(pl_push_order_next(o, 7, 1, &k, 2), PL_PUSH_ORDER_DEFER);      /* stop: P2 is too old */
    CHECK_EQ(k, 1);
    CHECK_EQ(pl_push_order_next(o, 7, 0, &k, 2), 0);
    int64_t rows[] = {2, 3};
    pl_push_order_rows_done(o, rows, 2, NULL, 0);                           /* e.g. the message was deleted */
    CHECK_EQ(pl_push_order_devices(o), 0);
    pl_push_order_keep(o, 7, 5, 0);                                         /* a hold nobody settles */
    CHECK_EQ(pl_push_order_offer(o, 7, 6, &P1, 0, PL_PUSH_HOLD_MS - 1), PL_PUSH_ORDER_DEFER);
    CHECK_EQ(pl_push_order_offer(o, 7, 7, &P1, 1, PL_PUSH_HOLD_MS), PL_PUSH_ORDER_DEFER);  /* 6 is held now */
    CHECK_EQ(pl_push_order_offer(o, 7, 6, &P1, 2, 2 * PL_PUSH_HOLD_MS), PL_PUSH_ORDER_GO);
    pl_push_order_free(&o);                                                 /* frees what is left */
}
