/* store_util.c — helpers shared by the store backends (see store_int.h). */
#include "store_int.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/alloc.h"

char *pl_store__data_user(int64_t user) {
    char buf[48];
    snprintf(buf, sizeof buf, "{\"user\":%lld}", (long long)user);
    return pl_strdup(buf);
}

char *pl_store__data_group(const char *title, int64_t creator, const int64_t *others, size_t n) {
    json_t *root = json_object(), *members = json_array();
    json_t *jt = json_string(title);
    char *out = NULL;
    if (!root || !members || !jt) goto done;
    json_array_append_new(members, json_integer(creator));
    for (size_t i = 0; i < n; i++) json_array_append_new(members, json_integer(others[i]));
    json_object_set_new(root, "kind", json_string("group"));
    json_object_set_new(root, "title", jt);
    jt = NULL;
    json_object_set_new(root, "members", members);
    members = NULL;
    size_t len = json_dumpb(root, NULL, 0, JSON_COMPACT);
    if (len == 0) goto done;
    out = pl_malloc(len + 1);
    if (json_dumpb(root, out, len, JSON_COMPACT) != len) {
        free(out);
        out = NULL;
        goto done;
    }
    out[len] = '\0';
done:
    json_decref(jt);
    json_decref(members);
    json_decref(root);
    return out;
}

size_t pl_store__slot(int64_t a, int64_t b, size_t cap) {
    uint64_t h = (uint64_t)a * 0x9e3779b97f4a7c15ull ^ (uint64_t)b * 0xc2b2ae3d27d4eb4full;
    return (size_t)(h ^ (h >> 29)) & (cap - 1);
}

pl_own_ent *pl_own_find(pl_own_map *m, int64_t conv, int64_t user) {
    if (!m->cap) return NULL;
    for (size_t i = pl_store__slot(conv, user, m->cap);; i = (i + 1) & (m->cap - 1)) {
        if (m->tab[i].conv == conv && m->tab[i].user == user) return &m->tab[i];
        if (m->tab[i].conv == 0) return NULL;
    }
}

void pl_own_add(pl_own_map *m, int64_t conv, int64_t user, int64_t d) {
    pl_own_ent *e = pl_own_find(m, conv, user);
    if (!e) {
        if ((m->len + 1) * 2 > m->cap) {
            pl_own_ent *old = m->tab;
            size_t ocap = m->cap;
            m->cap = ocap ? ocap * 2 : 64;
            m->tab = pl_calloc(m->cap, sizeof *m->tab);
            m->len = 0;
            for (size_t i = 0; i < ocap; i++) {
                if (!old[i].conv) continue;
                size_t k = pl_store__slot(old[i].conv, old[i].user, m->cap);
                while (m->tab[k].conv) k = (k + 1) & (m->cap - 1);
                m->tab[k] = old[i];
                m->len++;
            }
            free(old);
        }
        size_t i = pl_store__slot(conv, user, m->cap);
        while (m->tab[i].conv) i = (i + 1) & (m->cap - 1);
        e = &m->tab[i];
        e->conv = conv;
        e->user = user;
        e->delta = 0;
        m->len++;
    }
    e->delta += d;
}

void pl_own_clear(pl_own_map *m) {
    if (m->cap) memset(m->tab, 0, m->cap * sizeof *m->tab);
    m->len = 0;
}

void pl_own_free(pl_own_map *m) {
    free(m->tab);
    m->tab = NULL;
    m->cap = m->len = 0;
}

pl_conv_state *pl_conv_map_find(pl_conv_map *m, int64_t conv) {
    if (!m->cap || conv == 0) return NULL;
    for (size_t i = pl_store__slot(conv, 0, m->cap);; i = (i + 1) & (m->cap - 1)) {
        if (m->tab[i].conv == conv) return &m->tab[i];
        if (m->tab[i].conv == 0) return NULL;
    }
}

pl_conv_state *pl_conv_map_put(pl_conv_map *m, int64_t conv) {
    pl_conv_state *e = pl_conv_map_find(m, conv);
    if (e) return e;
    if ((m->len + 1) * 2 > m->cap) {
        pl_conv_state *old = m->tab;
        size_t ocap = m->cap;
        m->cap = ocap ? ocap * 2 : 256;
        m->tab = pl_calloc(m->cap, sizeof *m->tab);
        m->len = 0;
        for (size_t i = 0; i < ocap; i++) {
            if (!old[i].conv) continue;
            size_t k = pl_store__slot(old[i].conv, 0, m->cap);
            while (m->tab[k].conv) k = (k + 1) & (m->cap - 1);
            m->tab[k] = old[i];
            m->len++;
        }
        free(old);
    }
    size_t i = pl_store__slot(conv, 0, m->cap);
    while (m->tab[i].conv) i = (i + 1) & (m->cap - 1);
    memset(&m->tab[i], 0, sizeof m->tab[i]);
    m->tab[i].conv = conv;
    m->len++;
    return &m->tab[i];
}

void pl_conv_map_clear(pl_conv_map *m) {
    if (m->cap) memset(m->tab, 0, m->cap * sizeof *m->tab);
    m->len = 0;
}

void pl_conv_map_free(pl_conv_map *m) {
    free(m->tab);
    m->tab = NULL;
    m->cap = m->len = 0;
}
