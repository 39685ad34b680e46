/* store.c — the backend-independent half of the store interface.
 *
 * Owns: releasing what store.h hands out (events, conversations, job
 * outputs), choosing a backend from the store URL, and close.
 * Does not own: any storage; see store_sqlite*.c and store_pg*.c.
 */
#include "store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/alloc.h"

void pl_event_release(pl_event *ev) {
    if (!ev) return;
    free(ev->client_msg_id);
    free(ev->body);
    free(ev->data);
    free(ev->annot);
    ev->annot = NULL;
    ev->client_msg_id = NULL;
    ev->body = NULL;
    ev->body_len = 0;
    ev->data = NULL;
}

static char *dup_n(const char *s, size_t n) {
    char *p = pl_malloc(n + 1);
    if (n) memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

void pl_event_copy(pl_event *dst, const pl_event *src) {
    *dst = *src;
    dst->client_msg_id = src->client_msg_id ? pl_strdup(src->client_msg_id) : NULL;
    dst->body = src->body ? dup_n(src->body, src->body_len) : NULL;
    dst->data = src->data ? pl_strdup(src->data) : NULL;
    dst->annot = src->annot ? pl_strdup(src->annot) : NULL;
}

void pl_conv_release(pl_conv *c) {
    if (!c) return;
    free(c->title);
    free(c->members);
    if (c->last) {
        pl_event_release(c->last);
        free(c->last);
    }
    c->title = NULL;
    c->members = NULL;
    c->last = NULL;
    c->nmembers = 0;
}

void pl_conv_list_free(pl_conv *list, size_t n) {
    if (!list) return;
    for (size_t i = 0; i < n; i++) pl_conv_release(&list[i]);
    free(list);
}

void pl_workspace_list_free(pl_workspace *list, size_t n) {
    if (!list) return;
    for (size_t i = 0; i < n; i++) {
        free(list[i].name);
        free(list[i].members);
    }
    free(list);
}

void pl_report_list_free(pl_report *list, size_t n) {
    if (!list) return;
    for (size_t i = 0; i < n; i++) {
        free(list[i].reason);
        free(list[i].note);
        free(list[i].body);
    }
    free(list);
}

void pl_event_list_free(pl_event *list, size_t n) {
    if (!list) return;
    for (size_t i = 0; i < n; i++) pl_event_release(&list[i]);
    free(list);
}

void pl_job_release(pl_job *j) {
    pl_event_release(&j->event);
    j->has_event = 0;
    free(j->user_out.pwhash);
    j->user_out.pwhash = NULL;
    pl_conv_list_free(j->convs, j->nconvs);
    j->convs = NULL;
    j->nconvs = 0;
    pl_conv_release(&j->conv_out);
    if (j->snippets)
        for (size_t i = 0; i < j->nevents; i++) free(j->snippets[i]);
    free(j->snippets);
    j->snippets = NULL;
    pl_event_list_free(j->events, j->nevents);
    j->events = NULL;
    j->nevents = 0;
    free(j->heads);
    j->heads = NULL;
    free(j->out_ids);
    j->out_ids = NULL;
    j->nout = 0;
    free(j->push_dropped);
    j->push_dropped = NULL;
    j->npush_dropped = 0;
    free(j->users);
    j->users = NULL;
    j->nusers = 0;
    free(j->mships);
    j->mships = NULL;
    j->nmships = 0;
    free(j->media);                  /* media */
    j->media = NULL;
    j->nmedia = 0;
    pl_device_list_free(j->devices, j->ndevices);   /* end-to-end encryption */
    j->devices = NULL;
    j->ndevices = 0;
    pl_report_list_free(j->reports, j->nreports);                  /* reports */
    j->reports = NULL;
    j->nreports = 0;
    pl_workspace_list_free(j->workspaces, j->nworkspaces);        /* workspaces */
    j->workspaces = NULL;
    j->nworkspaces = 0;
    pl_push_device_list_free(j->push_devices, j->npush_devices);   /* push */
    j->push_devices = NULL;
    j->npush_devices = 0;
    pl_push_list_free(j->pushes, j->npushes);
    j->pushes = NULL;
    j->npushes = 0;
}

void pl_push_device_list_free(pl_push_device *list, size_t n) {
    if (!list) return;
    for (size_t i = 0; i < n; i++) free(list[i].token);
    free(list);
}

void pl_push_list_free(pl_push *list, size_t n) {
    if (!list) return;
    for (size_t i = 0; i < n; i++) {
        free(list[i].title);
        free(list[i].body);
        free(list[i].token);
    }
    free(list);
}

void pl_device_list_free(pl_device *list, size_t n) {
    if (!list) return;
    for (size_t i = 0; i < n; i++) {
        free(list[i].identity);
        free(list[i].spk);
        free(list[i].spk_sig);
        free(list[i].otk);
    }
    free(list);
}

static int is_pg_url(const char *u) {
    return u && (strncmp(u, "postgres://", 11) == 0 || strncmp(u, "postgresql://", 13) == 0);
}

int pl_store_open(const pl_store_opts *o, pl_store **out, char *err, size_t errlen) {
    *out = NULL;
    if (!o->url || !o->url[0] || strcmp(o->url, "sqlite") == 0)
        return pl_store_sqlite_open(o, out, err, errlen);
    if (is_pg_url(o->url)) return pl_store_pg_open(o, out, err, errlen);
    snprintf(err, errlen, "unknown store \"%s\" (expected postgres://... or nothing for SQLite)", o->url);
    return PL_STORE_EUNAVAIL;
}

int pl_store_shared_secret(pl_store *s, const char *name, uint8_t out[32]) {
    if (!s->ops->shared_secret) return PL_STORE_ENOTFOUND;
    return s->ops->shared_secret(s, name, out);
}

void pl_store_close(pl_store **s) {
    if (!s || !*s) return;
    (*s)->ops->close(*s);
    *s = NULL;
}
