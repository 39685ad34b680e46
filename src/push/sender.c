/* sender.c — the push services' HTTP client thread (see sender.h). */
#include "sender.h"

#include <curl/curl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "../core/alloc.h"
#include "../core/log.h"

struct pl_push_sender {
    pthread_t        thread;
    pthread_mutex_t  mu;
    CURLM           *multi;
    pl_push_req     *queued[PL_PUSH_LANES], *queued_tail[PL_PUSH_LANES]; /* under mu */
    int              lane_inflight[PL_PUSH_LANES]; /* thread only */
    int              next_lane;               /* thread only: round robin */
    pl_push_req     *done;                    /* under mu */
    int              stop;                    /* under mu */
    void           (*wake)(void *arg);
    void            *arg;
    struct xfer     *slots[PL_PUSH_INFLIGHT];  /* thread only: in flight     */
};

typedef struct xfer {                         /* a request in flight      */
    CURL              *easy;
    struct curl_slist *headers;
    pl_push_req       *req;
    int                slot;
} xfer;

static size_t on_data(char *p, size_t size, size_t n, void *ud) {
    pl_push_req *r = ud;
    size_t len = size * n, room = sizeof r->answer - 1 - r->answer_len;
    if (room) {
        size_t k = len < room ? len : room;
        memcpy(r->answer + r->answer_len, p, k);
        r->answer_len += k;
        r->answer[r->answer_len] = '\0';
    }
    return len;
}

static xfer *xfer_new(pl_push_req *r) {
    xfer *x = pl_calloc(1, sizeof *x);
    x->req = r;
    x->easy = curl_easy_init();
    for (int i = 0; i < r->http.nheaders; i++) x->headers = curl_slist_append(x->headers, r->http.headers[i]);
    x->headers = curl_slist_append(x->headers, "Expect:");
    CURL *e = x->easy;
    curl_easy_setopt(e, CURLOPT_URL, r->http.url);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, x->headers);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, r->http.body);
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)r->http.body_len);
    curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)PL_PUSH_TIMEOUT_MS);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)PL_PUSH_TIMEOUT_MS / 2);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
#if LIBCURL_VERSION_NUM >= 0x075500
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
#else
    curl_easy_setopt(e, CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
    curl_easy_setopt(e, CURLOPT_USERAGENT, "parleyd-push");
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(e, CURLOPT_PRIVATE, x);
    return x;
}

static void xfer_free(xfer *x) {
    curl_slist_free_all(x->headers);
    curl_easy_cleanup(x->easy);
    free(x);
}

static void complete(pl_push_sender *s, pl_push_req *r) {
    pl_push_http_release(&r->http);
    pthread_mutex_lock(&s->mu);
    r->next = s->done;
    s->done = r;
    pthread_mutex_unlock(&s->mu);
}

/* The next request to start (under mu): the lanes in turn, passing over
 * one with PL_PUSH_LANE_MAX in flight. NULL: none may start now. */
static pl_push_req *take(pl_push_sender *s) {
    for (int k = 0; k < PL_PUSH_LANES; k++) {
        int l = (s->next_lane + k) % PL_PUSH_LANES;
        pl_push_req *r = s->queued[l];
        if (!r || s->lane_inflight[l] >= PL_PUSH_LANE_MAX) continue;
        s->queued[l] = r->next;
        if (!s->queued[l]) s->queued_tail[l] = NULL;
        r->next = NULL;
        s->next_lane = (l + 1) % PL_PUSH_LANES;
        return r;
    }
    return NULL;
}

static void *run(void *ud) {
    pl_push_sender *s = ud;
    int inflight = 0;
    for (;;) {
        pthread_mutex_lock(&s->mu);
        int stop = s->stop;
        pl_push_req *r;
        while (!stop && inflight < PL_PUSH_INFLIGHT && (r = take(s))) {
            pthread_mutex_unlock(&s->mu);
            xfer *x = xfer_new(r);
            for (x->slot = 0; s->slots[x->slot]; x->slot++) {}
            s->slots[x->slot] = x;
            s->lane_inflight[r->lane]++;
            curl_multi_add_handle(s->multi, x->easy);
            inflight++;
            pthread_mutex_lock(&s->mu);
        }
        pthread_mutex_unlock(&s->mu);
        if (stop) break;
        int running = 0, finished = 0, left;
        curl_multi_perform(s->multi, &running);
        CURLMsg *m;
        while ((m = curl_multi_info_read(s->multi, &left))) {
            if (m->msg != CURLMSG_DONE) continue;
            xfer *x = NULL;
            curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&x);
            long status = 0;
            if (m->data.result == CURLE_OK) curl_easy_getinfo(m->easy_handle, CURLINFO_RESPONSE_CODE, &status);
            else
                pl_log(PL_LOG_WARN, 0, "push: request failed", "\"error\":\"%s\"", curl_easy_strerror(m->data.result));
            x->req->status = status;
            curl_multi_remove_handle(s->multi, x->easy);
            s->slots[x->slot] = NULL;
            s->lane_inflight[x->req->lane]--;
            complete(s, x->req);
            xfer_free(x);
            inflight--;
            finished++;
        }
        if (finished) s->wake(s->arg);
        curl_multi_poll(s->multi, NULL, 0, 1000, NULL);
    }
    for (int i = 0; i < PL_PUSH_INFLIGHT; i++) {  /* abandoned: sent again later */
        xfer *x = s->slots[i];
        if (!x) continue;
        curl_multi_remove_handle(s->multi, x->easy);
        pl_push_http_release(&x->req->http);
        free(x->req);
        xfer_free(x);
        s->slots[i] = NULL;
    }
    return NULL;
}

static void curl_init_once(void) { curl_global_init(CURL_GLOBAL_DEFAULT); }

pl_push_sender *pl_push_sender_start(void (*wake)(void *arg), void *arg) {
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, curl_init_once);
    pl_push_sender *s = pl_calloc(1, sizeof *s);
    pthread_mutex_init(&s->mu, NULL);
    s->wake = wake;
    s->arg = arg;
    s->multi = curl_multi_init();
    if (!s->multi || pthread_create(&s->thread, NULL, run, s) != 0) {
        if (s->multi) curl_multi_cleanup(s->multi);
        pthread_mutex_destroy(&s->mu);
        free(s);
        return NULL;
    }
    return s;
}

void pl_push_sender_submit(pl_push_sender *s, pl_push_req *list) {
    if (!list) return;
    pthread_mutex_lock(&s->mu);
    while (list) {
        pl_push_req *r = list;
        list = r->next;
        r->next = NULL;
        if (r->lane < 0 || r->lane >= PL_PUSH_LANES) r->lane = 0;
        if (s->queued_tail[r->lane]) s->queued_tail[r->lane]->next = r;
        else s->queued[r->lane] = r;
        s->queued_tail[r->lane] = r;
    }
    pthread_mutex_unlock(&s->mu);
    curl_multi_wakeup(s->multi);
}

pl_push_req *pl_push_sender_take(pl_push_sender *s) {
    pthread_mutex_lock(&s->mu);
    pl_push_req *d = s->done;
    s->done = NULL;
    pthread_mutex_unlock(&s->mu);
    return d;
}

static void free_list(pl_push_req *r) {
    while (r) {
        pl_push_req *next = r->next;
        pl_push_http_release(&r->http);
        free(r);
        r = next;
    }
}

void pl_push_sender_stop(pl_push_sender *s) {
    if (!s) return;
    pthread_mutex_lock(&s->mu);
    s->stop = 1;
    pthread_mutex_unlock(&s->mu);
    curl_multi_wakeup(s->multi);
    pthread_join(s->thread, NULL);
    for (int l = 0; l < PL_PUSH_LANES; l++) free_list(s->queued[l]);
    free_list(s->done);
    curl_multi_cleanup(s->multi);
    pthread_mutex_destroy(&s->mu);
    free(s);
}
