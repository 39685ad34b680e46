/* names.c — the member-name cache (see names.h).
 *
 * Names are kept per conversation: a user is named in a conversation's
 * events only by that conversation's member list (README: "Names come
 * from the conversation's member list"), never by another conversation's
 * that happened to be fetched first, so every command names the same
 * event the same way. A member list is fetched once, when one of its
 * events first needs a name; a name still missing then causes one more
 * fetch of that conversation per unknown user (someone added since), and
 * after that the caller shows "user 5".
 */
#include "names.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"

typedef struct name {
    int64_t conv;                /* the member list it came from            */
    int64_t id;
    char   *name;                /* owned                                  */
} name;

typedef struct conv_state {
    int64_t  conv;
    int64_t *tried;              /* unknown users a refetch was made for    */
    size_t   ntried;
} conv_state;

struct pc_names {
    pc_client  *c;               /* borrowed                                */
    name       *v;               /* every (conversation, user) name learned */
    size_t      n, cap;
    conv_state *convs;           /* conversations fetched (or seeded)       */
    size_t      nconvs, capconvs;
};

pc_names *pc_names_new(pc_client *c) {
    pc_names *n = pl_calloc(1, sizeof *n);
    n->c = c;
    return n;
}

void pc_names_free(pc_names **np) {
    pc_names *n = *np;
    if (!n) return;
    for (size_t i = 0; i < n->n; i++) free(n->v[i].name);
    for (size_t i = 0; i < n->nconvs; i++) free(n->convs[i].tried);
    free(n->v);
    free(n->convs);
    free(n);
    *np = NULL;
}

static const char *find(const pc_names *n, int64_t conv, int64_t user) {
    for (size_t i = 0; i < n->n; i++)
        if (n->v[i].conv == conv && n->v[i].id == user) return n->v[i].name;
    return NULL;
}

static void learn(pc_names *n, int64_t conv, int64_t id, const char *nm) {
    if (find(n, conv, id)) return;
    if (n->n == n->cap) {
        n->cap = n->cap ? n->cap * 2 : 16;
        n->v = pl_realloc(n->v, n->cap * sizeof *n->v);
    }
    n->v[n->n++] = (name){.conv = conv, .id = id, .name = pl_strdup(nm)};
}

static conv_state *state(pc_names *n, int64_t conv, int create) {
    for (size_t i = 0; i < n->nconvs; i++)
        if (n->convs[i].conv == conv) return &n->convs[i];
    if (!create) return NULL;
    if (n->nconvs == n->capconvs) {
        n->capconvs = n->capconvs ? n->capconvs * 2 : 8;
        n->convs = pl_realloc(n->convs, n->capconvs * sizeof *n->convs);
    }
    conv_state *cs = &n->convs[n->nconvs++];
    memset(cs, 0, sizeof *cs);
    cs->conv = conv;
    return cs;
}

void pc_names_seed(pc_names *n, json_t *conv) {
    json_t *id = json_object_get(conv, "id");
    if (!json_is_integer(id)) return;
    int64_t cid = json_integer_value(id);
    state(n, cid, 1);
    size_t i;
    json_t *m;
    json_array_foreach(json_object_get(conv, "members"), i, m) {
        json_t *uid = json_object_get(m, "id");
        const char *nm = json_string_value(json_object_get(m, "username"));
        if (json_is_integer(uid) && nm) learn(n, cid, json_integer_value(uid), nm);
    }
}

/* GET /api/v1/conversations/{conv}; failures leave the names as they are. */
static void fetch(pc_names *n, int64_t conv) {
    char path[64];
    snprintf(path, sizeof path, "/api/v1/conversations/%lld", (long long)conv);
    pc_resp r;
    pc_request(n->c, "GET", path, NULL, 1, &r);
    state(n, conv, 1);
    if (r.status == 200) pc_names_seed(n, r.body);
    pc_resp_release(&r);
}

const char *pc_names_get(pc_names *n, int64_t conv, int64_t user) {
    const char *nm = find(n, conv, user);
    if (nm || user <= 0) return nm;
    conv_state *cs = state(n, conv, 0);
    if (!cs) {
        fetch(n, conv);
        return find(n, conv, user);
    }
    for (size_t i = 0; i < cs->ntried; i++)
        if (cs->tried[i] == user) return NULL;
    cs->tried = pl_realloc(cs->tried, (cs->ntried + 1) * sizeof *cs->tried);
    cs->tried[cs->ntried++] = user;
    fetch(n, conv);                          /* someone who joined since */
    return find(n, conv, user);
}
