/* store_int.h — what the store backends share; nothing outside src/store
 * includes it.
 *
 * Owns: the JSON data of system events (so both backends write the same
 * bytes), the writer's conversation map, and the map of own_unread deltas a batch accumulates (store.h
 * invariant 5: a send adds 1 for its sender, a moving read cursor
 * subtracts the own messages it passes; the batch flushes the deltas before
 * COMMIT). Used by one writer thread at a time.
 */
#ifndef PL_STORE_INT_H
#define PL_STORE_INT_H

#include <stddef.h>
#include <stdint.h>

#include "store.h"

/* {"user":N} (member events), a new string. */
char *pl_store__data_user(int64_t user);
/* {"user":U} or, when the departure made another member admin (the last
 * admin left), {"user":U,"new_admin":A} */
char *pl_store__data_departure(int64_t user, int64_t new_admin);
/* A MEMBER_ROLE's data: {"user":N,"role":"admin"|"member"} (malloc'd). */
char *pl_store__data_role(int64_t user, int role);
/* {"kind":"group","title":..,"members":[creator, others..]}, a new string,
 * or NULL if the title is not valid UTF-8. */
char *pl_store__data_group(const char *title, int64_t creator, const int64_t *others, size_t n);
/* A channel's (store.h invariant 11): {"kind":"channel","title":..,
 * "members":[..],"workspace":W,"private":B}, a new string, or NULL as above. */
char *pl_store__data_channel(const char *name, int64_t creator, const int64_t *others, size_t n,
                             int64_t workspace, int is_private);

/* ---- message features (store.h invariants 6 and 7) ---------------------- */

/* Distinct @names looked up per message (the first ones of the body): a
 * bound on the writer's work per send, an indexed lookup each (a 16 KiB
 * body holds up to ~3,000 names). The names are resolved first, and
 * PL_STORE_MENTIONS_MAX caps the members found, so names of non-members
 * do not use up that cap (invariant 7). protocol.md "Mentions". */
#define PL_STORE_MENTION_NAMES_MAX 256

/* The @names of a body, lower-cased, distinct, in order of appearance, at
 * most max (itself at most PL_STORE_MENTION_NAMES_MAX): a name is 3..32 of
 * [A-Za-z0-9_.-] after an '@' that starts the body or follows a character
 * that cannot be part of a name nor is an '@' or a backslash (so
 * "a@b.com", "@@bob" and "\\@bob" mention nobody); a trailing '.' or '-' is not part of it. @all and @here
 * are not names: *all becomes 1 (@all) or 2 (@here), also past max.
 * Returns the number of names written to names[]. */
int   pl_store__mentions_parse(const char *body, size_t len, char names[][33], int max, int *all);
typedef char pl_mention_name[33];
/* The same into a new array of *n names (at most PL_STORE_MENTION_NAMES_MAX;
 * NULL when there is none; the caller frees it). */
pl_mention_name *pl_store__mention_names(const char *body, size_t len, int *n, int *all);
/* MESSAGE data: {"reply_to":N,"mentions":[..],"mention_all":".."}, each key
 * only when set; NULL when none is. */
char *pl_store__data_message(int64_t reply_to, const int64_t *ids, size_t n, int all);
/* EDIT data: {"target":N} plus "mentions" when n > 0 and "mention_all"
 * ("all" or "here") when all is 1 or 2, as the message's own data. */
char *pl_store__data_edit(int64_t target, const int64_t *ids, size_t n, int all);
/* DELETE data {"target":N}; PIN data {"target":N,"op":"pin"|"unpin"}. */
char *pl_store__data_target(int64_t target, const char *op);
/* REACTION data {"target":N,"emoji":"..","op":"add"|"remove","count":N}. */
char *pl_store__data_reaction(int64_t target, const char *emoji, int remove, int64_t count);
/* 1 if e is an acceptable reaction: 1..PL_STORE_EMOJI_MAX bytes of valid
 * UTF-8 with at least one non-ASCII character and no Unicode White_Space
 * or control character (C0, DEL, C1: pl_utf8_space_or_control). */
int   pl_store__emoji_ok(const char *e);
/* Whether an edit of a message age_ms old is refused, in both backends'
 * words: PL_STORE_EFORBID with *why (an end-to-end encrypted or blocked
 * conversation, store.h invariants 9 and 14; past --edit-window when
 * window_ms > 0), else PL_STORE_OK. */
int   pl_store__edit_refused(int e2ee, int blocked, int64_t window_ms, int64_t age_ms, const char **why);

/* What a read knows of a message's current form; pl_store__annot turns it
 * into pl_event.annot. */
typedef struct pl_annot_reaction { const char *emoji; int64_t count; int me; } pl_annot_reaction;
typedef struct pl_annot {
    int64_t edited_ts;        /* 0: never edited                            */
    int     deleted;
    int     pinned;
    int64_t reply_seq;        /* 0: not a reply                             */
    int64_t reply_sender;
    int     reply_deleted;    /* or the parent does not exist               */
    const char *reply_body;   /* the parent's body (cut to PREVIEW_CHARS here) */
    size_t  reply_len;
    const pl_annot_reaction *reactions;
    size_t  nreactions;
} pl_annot;
/* A new string, or NULL when there is nothing to say. */
char *pl_store__annot(const pl_annot *a);
/* The byte length of the first PL_STORE_PREVIEW_CHARS characters of s. */
size_t pl_store__preview_len(const char *s, size_t len);
/* "1,2,3": a push retry's devices as push_outbox.only_devices holds them
 * (store.h invariant 10); a new string. */
char *pl_store__id_list(const int64_t *ids, size_t n);
/* How many devices of only (a retried row's only_devices; NULL: none)
 * have no push of outbox row `outbox` among pushes[n]: the retry's
 * cancelled ones (PL_READ_PUSH_TARGETS' created). */
size_t pl_store__push_cancelled(int64_t outbox, const char *only, const pl_push *pushes, size_t n);

/* ---- search (store.h invariant 8) ---------------------------------------- */

#define PL_STORE_SEARCH_TERMS 32  /* words of a query that count             */
/* The FTS5 MATCH expression of a user's query q: each word (a run of ASCII
 * letters and digits and non-ASCII characters: white space, Unicode's
 * included, and ASCII punctuation separate words, as in the index) becomes a quoted string (no FTS5 syntax
 * gets through: a word holds no '"'), the strings ANDed; at most
 * PL_STORE_SEARCH_TERMS of them. Returns their number (0: q has no word and
 * matches nothing). cap >= 4 * PL_STORE_QUERY_MAX + 8 holds any query. */
int   pl_store__fts5_query(const char *q, char *out, size_t cap);
/* PostgreSQL's search text is the body with the snippet markers, '<', '>',
 * '&' and '/' each blanked to one space and a final sigma made a sigma
 * (parley_body_tsv, R_SEARCH: byte for byte), so its ts_headline snippet is
 * a piece of that text with markers inserted: puts the body's bytes back
 * where the piece lies in body[0..len), but for the body's own marker
 * bytes, which stay spaces. A snippet that is no such piece is left as it
 * is. */
void  pl_store__snippet_restore(char *snippet, const char *body, size_t len);
/* The username search key of q: ASCII lower-cased (usernames are stored in
 * lower case), cut to PL_STORE_QUERY_MAX bytes. */
void  pl_store__name_query(const char *q, char out[PL_STORE_QUERY_MAX + 1]);

/* ---- end-to-end encryption (store.h invariant 9; store_e2ee.c) ---------- */

/* Whether a send fits the conversation: PL_STORE_OK, or EFORBID (plain
 * text into an end-to-end encrypted conversation) / EINVAL (ciphertext
 * into another), with *why set. */
int   pl_store__e2ee_send_check(int e2ee, const char *ciphertext, const char **why);
/* MESSAGE data of a ciphertext send: {"reply_to":N,"ciphertext":<payloads>}
 * (reply_to only when set); a new string. */
char *pl_store__data_ciphertext(int64_t reply_to, const char *payloads);
/* E2EE data: {"op":"enabled"} (user 0) or {"op":"devices","user":N}. */
char *pl_store__data_e2ee(int64_t user);

/* The slot of the pair (a, b) in an open-addressing table of cap entries
 * (a power of two). */
size_t pl_store__slot(int64_t a, int64_t b, size_t cap);

typedef struct pl_own_ent {
    int64_t conv, user;       /* key; conv 0 marks an empty slot            */
    int64_t delta;
} pl_own_ent;

typedef struct pl_own_map {   /* open addressing, power-of-two cap, <= 1/2 full */
    pl_own_ent *tab;
    size_t      cap, len;
} pl_own_map;

pl_own_ent *pl_own_find(pl_own_map *m, int64_t conv, int64_t user);
/* Adds d to the (conv, user) delta (a new entry starts at 0); may move
 * entries: pointers from pl_own_find are stale afterwards. */
void        pl_own_add(pl_own_map *m, int64_t conv, int64_t user, int64_t d);
void        pl_own_clear(pl_own_map *m);
void        pl_own_free(pl_own_map *m);
/* Iteration: for (size_t i = 0; i < m->cap; i++) if (m->tab[i].conv) ... */

/* The writer's view of a conversation inside the open batch (the locked
 * row in PostgreSQL, the cached row in SQLite): counters move here first
 * and are written back before COMMIT. */
typedef struct pl_conv_state {
    int64_t conv;             /* key; 0 marks an empty slot                  */
    int     kind;             /* PL_CONV_*: from the (PostgreSQL: locked) row */
    int64_t last_seq;         /* inside the open transaction                 */
    int64_t last_ts;
    int64_t msg_count;
    int64_t member_count;
    int     dirty;            /* differs from its row: written before COMMIT */
    int     appended;         /* PostgreSQL: this batch appended (outbox row) */
    int     e2ee;             /* end-to-end encrypted (store.h invariant 9)   */
    int     blocked;          /* a direct one under a block (invariant 14)   */
} pl_conv_state;

typedef struct pl_conv_map {  /* open addressing, power-of-two cap, <= 1/2 full */
    pl_conv_state *tab;
    size_t         cap, len;
} pl_conv_map;

pl_conv_state *pl_conv_map_find(pl_conv_map *m, int64_t conv);   /* NULL if absent */
/* The entry of conv, a new zeroed one if absent; may move entries. */
pl_conv_state *pl_conv_map_put(pl_conv_map *m, int64_t conv);
/* 1 if e is a large group (--large-group: a group or channel of more
 * members than large_group, 0: none is). Never a direct conversation
 * (audit H4: at --large-group 1 a DM refused @all and pushed mentions
 * only). */
static inline int pl_store__large(const pl_conv_state *e, int64_t large_group) {
    return large_group > 0 && e->kind != PL_CONV_DIRECT && e->member_count > large_group;
}
void           pl_conv_map_clear(pl_conv_map *m);
void           pl_conv_map_free(pl_conv_map *m);

/* ---- media (store_media.c) ------------------------------------------------- */

/* MESSAGE data with "attachments": attach_json (a JSON array) added to data
 * (a JSON object text, taken over; NULL: none). Returns a new string (data
 * itself when attach_json is NULL). */
char *pl_store__data_attach(char *data, const char *attach_json);

#endif
