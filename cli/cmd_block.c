/* cmd_block.c — blocking users: block, unblock, blocks (docs/protocol.md
 * "Blocking a user").
 *
 *   block USER      PUT    /api/v1/users/{id}/block
 *   unblock USER    DELETE /api/v1/users/{id}/block
 *   blocks          GET    /api/v1/blocks: `id username` per line
 *
 * Owns: the words of the answers ("blocked bob", "bob was already
 * blocked", "unblocked bob", "bob was not blocked"). Does not own: what a
 * block refuses (the server's 403 "blocked" on a send is printed by the
 * command that was refused, as any other error) nor who may be blocked.
 */
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "core/alloc.h"

static int set_block(pc_client *c, int argc, char **argv, int block) {
    const char *cmd = block ? "block" : "unblock";
    char **pos = pl_calloc((size_t)argc, sizeof *pos);
    int npos, rc = pc_plain_args(cmd, argc, argv, pos, &npos, 1, "give one USER");
    json_t *u = NULL;
    if (rc == 0) rc = pc_user_lookup(c, cmd, pos[0], &u);
    free(pos);
    if (rc == 0 && ((rc = pc_want(cmd, u, "id", JSON_INTEGER)) || (rc = pc_want(cmd, u, "username", JSON_STRING))))
        json_decref(u);
    if (rc) return rc;
    /* the server's spelling of the name, not the one typed */
    char *name = pl_strdup(pc_jstr(u, "username"));
    char path[96];
    snprintf(path, sizeof path, "/api/v1/users/%lld/block", (long long)json_integer_value(json_object_get(u, "id")));
    json_decref(u);
    json_t *o;
    rc = pc_call(c, cmd, block ? "PUT" : "DELETE", path, NULL, &o);
    if (rc == 0 && (rc = pc_want(cmd, o, "changed", JSON_TRUE))) json_decref(o);
    if (rc == 0) {
        int changed = !json_is_false(json_object_get(o, "changed"));
        if (c->json) pc_print_json(o);
        else if (changed) printf("%s %s\n", block ? "blocked" : "unblocked", name);
        else printf("%s was %s\n", name, block ? "already blocked" : "not blocked");
        json_decref(o);
    }
    free(name);
    return rc;
}

int pc_cmd_block(pc_client *c, int argc, char **argv) { return set_block(c, argc, argv, 1); }
int pc_cmd_unblock(pc_client *c, int argc, char **argv) { return set_block(c, argc, argv, 0); }

int pc_cmd_blocks(pc_client *c, int argc, char **argv) {
    char **pos = pl_calloc((size_t)argc, sizeof *pos);
    int npos, rc = pc_plain_args("blocks", argc, argv, pos, &npos, 0, "takes no arguments");
    free(pos);
    if (rc) return rc;
    json_t *ans;
    if ((rc = pc_call(c, "blocks", "GET", "/api/v1/blocks", NULL, &ans))) return rc;
    if ((rc = pc_want("blocks", ans, "blocked", JSON_ARRAY))) {
        json_decref(ans);
        return rc;
    }
    size_t i;
    json_t *u;
    json_array_foreach(json_object_get(ans, "blocked"), i, u) {
        if (c->json) pc_print_json(u);
        else printf("%lld %s\n", (long long)json_integer_value(json_object_get(u, "id")), pc_jstr(u, "username"));
    }
    json_decref(ans);
    return 0;
}
