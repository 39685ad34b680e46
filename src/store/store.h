/* store.h — the storage interface: everything Parley keeps durably.
 *
 * Owns: the contract between the server and a storage backend (SQLite in
 * embedded mode, PostgreSQL in cluster mode), the shape of a conversation
 * log event, and the one way to reach a backend: jobs.
 * Does not own: sockets, JSON for the wire, fan-out, tokens (callers hash
 * and sign).
 *
 * Everything is a job (struct pl_job): the caller fills the inputs, calls
 * pl_store_submit(), and the backend hands the job back on the event loop
 * thread through job->done with the outputs filled. Nothing in this
 * interface blocks the calling thread, so the event loop never waits for a
 * disk or a network round trip.
 *
 *   Writes (PL_JOB_*) go to the backend's single writer. The writer takes
 *   every queued write (up to a cap), runs them in ONE transaction with one
 *   durable commit (group commit), then completes them in submission order.
 *   A job that fails on its own (not a member, a conflict) fails alone and
 *   the rest of the batch commits. If the commit itself fails, every job of
 *   the batch completes with PL_STORE_EUNAVAIL and nothing of it was
 *   acknowledged. The SQLite backend then stops accepting writes for good
 *   (its state after a failed fsync is unknown); the PostgreSQL backend
 *   reconnects and goes on (the database, not this process, owns durability;
 *   clients retry idempotently).
 *
 *   Reads (PL_READ_*) run on the backend's reader threads (each with its own
 *   connection) and complete in any order. A read sees every write whose
 *   done() has run before the read was submitted (SQLite's search index
 *   may lag by a moment: invariant 8).
 *
 * Invariants every backend guarantees:
 *   1. Seqs in a conversation are contiguous from 1 and never reused: one
 *      writer at a time appends to a conversation (the SQLite writer thread;
 *      in PostgreSQL a row lock on the conversation, taken by every batch in
 *      ascending conversation order so that nodes never deadlock), and
 *      conversations.last_seq is written in the same transaction as the
 *      event.
 *   2. job->done for a write runs only after the batch holding it is durable
 *      (COMMIT returned; synchronous=FULL / synchronous_commit=on).
 *   3. (conversation, sender, client_msg_id) is UNIQUE in the database; a
 *      retried send returns the stored event with dup = 1, checked before
 *      membership, so a sender removed after the original committed still
 *      gets the original acknowledgement.
 *   4. Visibility: a member sees a conversation's events from the event that
 *      made it a member (its joined_seq: the `created` event for the
 *      founders, its `member_added` event later) on. Reads that take a
 *      viewer (PL_READ_EVENTS with user, PL_READ_RECEIPTS) apply it.
 *   5. Unread counts are maintained, never counted by scanning the log:
 *      every event carries msg_no (MESSAGE events in the conversation up to
 *      and including it), every member own_unread (its own MESSAGEs above
 *      its read cursor), so
 *        unread = conv.msg_count - msg_no(max(read_seq, joined_seq - 1)) - own_unread.
 *   6. Message actions (edit, delete, reaction, pin) are events with the next
 *      seq whose ref names the target MESSAGE; the target's row is changed
 *      in the same transaction to its current form (new body and edited_ts;
 *      on delete: body, data, reactions, mentions, pin and the bodies of
 *      its edit events are erased, not hidden; a tombstone stays at its
 *      seq). Reads return messages in their current form (annot).
 *   7. Mentions: a MESSAGE's @name, @all and @here are resolved to member
 *      ids by the writer (data.mentions); a row per mentioned member (and
 *      one for the author of the message replied to) is kept, so
 *      unread_mentions = those rows above the member's read cursor.
 *   8. Search: the full-text index holds each MESSAGE's current body.
 *      PostgreSQL: a GIN expression index over the body, so a message is
 *      searchable from the transaction that appends or edits it. SQLite:
 *      an FTS5 table in a file of its own (search.db) filled
 *      asynchronously — the send's, edit's or delete's transaction queues
 *      the message (fts_queue) and an indexer thread indexes the queue,
 *      oldest first, beside the writer (store_sqlite_index.c), so a
 *      message is searchable moments after its commit while the indexer
 *      keeps up (PL_READ_SEARCH is the one read that may lag its writes).
 *      PostgreSQL takes the old text out of the index in the edit's or
 *      delete's own transaction; SQLite's search keeps a hit only if the
 *      indexed text is the message's current text. In both, an old or
 *      deleted text never matches. PL_READ_SEARCH
 *      applies membership and invariant 4 inside its query (a join on the
 *      asker's members row and joined_seq), never by filtering afterwards.
 *   9. End-to-end encryption (docs/design.md "End-to-end encryption"). The
 *      key directory holds, per device (a device is a login session: its
 *      id is the login's), an identity key, a signed prekey and one-time
 *      prekeys, as the validated base64 text the device uploaded; only live
 *      logins' devices are listed or claimed. PL_JOB_KEYS_CLAIM takes each
 *      one-time prekey out in the claiming transaction, so no key is ever
 *      handed out twice, also across nodes (PostgreSQL: FOR UPDATE SKIP
 *      LOCKED; SQLite: one writer). A conversation marked end-to-end
 *      encrypted (conversations.e2ee, never unmarked) takes only ciphertext
 *      sends (job.ciphertext; a plain send is EFORBID, a ciphertext send to
 *      an unmarked conversation EINVAL) and no edits (EFORBID). A
 *      ciphertext MESSAGE has an empty body (so nothing reaches the search
 *      index, mentions or previews) and data {"ciphertext":[..]} (plus
 *      "reply_to"), the payloads as the sender gave them.
 *  10. Push notifications (M10; docs/design.md "Push notifications"). With
 *      opts.push, the transaction that appends a MESSAGE also writes a
 *      push_outbox row (conv, seq): the transactional outbox the push
 *      worker drains, so a committed message is pushed even if the process
 *      dies right after its commit, on whichever node claims the row.
 *      PL_JOB_PUSH_CLAIM leases rows (PostgreSQL: only on the node holding
 *      the push drainer lock, and FOR UPDATE SKIP LOCKED,
 *      so two nodes never hold the same row at once); a row whose lease
 *      ran out (its claimer died, or PUSH_DONE asked for a retry) is
 *      claimed again, and one claimed PL_PUSH_ATTEMPTS times is dropped.
 *      Push devices are tokens a login registered (a device is a login
 *      session, as in invariant 9): revoking the login deletes them, and
 *      only live logins' devices are pushed to.
 *  11. Workspaces and channels (M1, P10; docs/design.md "Workspaces"). A
 *      workspace has members (admin or member) and channels: conversations
 *      of kind PL_CONV_CHANNEL with a workspace and a name (the title;
 *      pl_store__channel_name_ok; unique in the workspace, and so is its
 *      lookalike key, core/lookalike.h, between names not both ASCII:
 *      CHANNEL_CREATE is ECONFLICT with why "the name looks like another
 *      channel's"; conversations.name_key, NULL for channels made before
 *      it was kept, worked out when needed), public or private. A channel behaves as a group (roles, add, remove, leave,
 *      large groups) except that only members of its workspace may be in
 *      it: CHANNEL_CREATE and MEMBER_ADD refuse anyone else, and any
 *      member of the workspace may join a public channel (CHANNEL_JOIN),
 *      and a workspace admin a private one that everyone left (so none is
 *      lost for good with its name and its quota slot).
 *      Every workspace has the public channel "general", created with it;
 *      joining the workspace joins it, and only leaving the workspace
 *      leaves it (MEMBER_LEAVE, and MEMBER_REMOVE but with PL_JOB_EVICT:
 *      EINVAL, why). A join of a channel with no admin (everyone left)
 *      makes the joiner its admin. Leaving or being removed from a
 *      workspace is the caller's evictions from its channels (MEMBER_REMOVE
 *      with PL_JOB_EVICT, while the user is still in the workspace) and
 *      then WORKSPACE_REMOVE, which returns the channels the user is still
 *      in (joined meanwhile) for the caller to evict it from too. Private
 *      channels are invisible to non-members: ENOTFOUND, as for a channel
 *      that does not exist. Quotas: opts.workspace_members members and
 *      opts.workspace_channels channels per workspace (0: none).
 *  12. Reports (P12; docs/design.md "Moderation"). A member may report
 *      another user's message it can see (invariant 4) with a reason; the
 *      report keeps a snapshot of the message as it was (sender, body), so
 *      an edit or a delete after it does not erase the evidence. One report
 *      per (message, reporter). Reports are not events: they are in no
 *      log, and only a group's or channel's admins (for its conversation)
 *      or server admins (PL_JOB_ADMIN / PL_READ_ADMIN: the caller checked)
 *      read and resolve them; anyone else gets ENOTFOUND (the reporter's
 *      fellow members cannot tell a report exists) or EFORBID (a member who
 *      is not an admin asking for the list).
 *  13. Data lifecycle (P9; docs/design.md "Data lifecycle").
 *      Retention: conversations.retention and workspaces.retention, in
 *      seconds (0: not set). A conversation's effective retention is its
 *      own if set, else its workspace's (a channel's), else
 *      opts.retention (the server's; 0: keep for ever). RETENTION_PURGE
 *      erases MESSAGEs older than that (ts < now - retention * 1000) as a
 *      delete erases them (invariant 6: body, data, reactions, mentions,
 *      pin, the bodies of its edit events, media references, the search
 *      index) and sets deleted_ts, but appends no event: the message
 *      stays a tombstone at its seq, so logs stay contiguous and unread
 *      counts do not move. It erases the same way every MESSAGE whose
 *      sender is a deleted user.
 *      Legal hold: conversations.hold and workspaces.hold (a workspace's
 *      covers its channels). RETENTION_PURGE skips a held conversation
 *      entirely (retention and deleted users alike); a member's own edits
 *      and deletes are not held back.
 *      Account deletion: ACCOUNT_DELETE ends a user whose memberships of
 *      groups, channels and workspaces are gone (the caller left them
 *      with the ordinary jobs, so each left an ordinary event): it sets
 *      users.deleted, renames the user "deleted#<id>" (a name no
 *      registration can take: '#' is not allowed), blanks the password
 *      hash (no login matches), revokes every login (and so its push
 *      devices), deletes its end-to-end keys (devices and one-time
 *      prekeys), and makes its uploads garbage once unreferenced (gc_after
 *      = now). Direct conversations keep both members (the other one keeps
 *      the history; the deleted user's messages in it are erased by the
 *      purge). A deleted user is an unknown user to DIRECT_OPEN,
 *      GROUP_CREATE, MEMBER_ADD, WORKSPACE_ADD, CHANNEL_CREATE (members)
 *      and USER_BY_NAME, and is never listed by USER_SEARCH; USER_BY_ID,
 *      USERS_VISIBLE and member lists still name it "deleted#<id>".
 *  14. Blocks (P12; docs/design.md "Moderation"). A user may block
 *      another (blocks(user, blocked); BLOCK, no event: a block is
 *      private). While either of two users blocks the other, their direct
 *      conversation takes no MESSAGE_SEND, MESSAGE_EDIT, REACTION, and from
 *      its members no RETENTION_SET or CONV_E2EE (the mark) either
 *      (EFORBID, why "blocked"), and DIRECT_OPEN creates none (EFORBID,
 *      why "blocked"; one that exists is still returned, for its
 *      history). Deletes, pins and receipts still apply; groups and
 *      channels are not affected. conversations.blocked says, for a direct
 *      conversation, whether a block exists between its two members (BLOCK
 *      keeps it, also in the writer's cached conversation state), so the
 *      send path reads a flag it already holds instead of the blocks table.
 */
#ifndef PL_STORE_H
#define PL_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "../core/id.h"

typedef struct pl_store pl_store;

#define PL_STORE_PAGE_MAX 200

/* Results of jobs. 0 is success. */
#define PL_STORE_OK        0
#define PL_STORE_ENOTFOUND (-1)  /* no such row, or caller not a member      */
#define PL_STORE_ECONFLICT (-2)  /* unique violation: username taken          */
#define PL_STORE_EFORBID   (-3)  /* member lacks the role for this            */
#define PL_STORE_EINVAL    (-4)  /* argument out of range (e.g. DM with self) */
#define PL_STORE_EUNAVAIL  (-5)  /* the store failed; nothing was committed   */
#define PL_STORE_EGONE     (-6)  /* the target message was deleted            */
/* EINVAL, EFORBID and EGONE of message actions set job->why (a static
 * string naming the reason, e.g. "not a message", "not your message"). */

typedef enum pl_event_kind {
    PL_EV_CREATED = 1,        /* data: {"kind":..,"title":..,"members":[..]} */
    PL_EV_MESSAGE = 2,        /* body, client_msg_id                         */
    PL_EV_MEMBER_ADDED = 3,   /* data: {"user":N}                            */
    PL_EV_MEMBER_REMOVED = 4, /* data: {"user":N}                            */
    PL_EV_MEMBER_LEFT = 5,    /* data: {"user":N}                            */
    /* message actions: ref = the target MESSAGE's seq (invariant 6)       */
    PL_EV_EDIT = 6,           /* body: the new text; data {"target":N,"mentions":[..]}
                               * (mentions only when any)                     */
    PL_EV_DELETE = 7,         /* data: {"target":N}                            */
    PL_EV_REACTION = 8,       /* data: {"target":N,"emoji":"..","op":"add"|"remove",
                               * "count":N (users with that emoji after it)}  */
    PL_EV_PIN = 9,            /* data: {"target":N,"op":"pin"|"unpin"}         */
    PL_EV_E2EE = 10,          /* end-to-end encryption (invariant 9): data
                               * {"op":"enabled"} (the conversation was marked)
                               * or {"op":"devices","user":N} (N's device list
                               * changed); subject = N for "devices"          */
    PL_EV_RETENTION = 11,     /* the conversation's own retention was set
                               * (invariant 13): data {"seconds":N} (0: unset) */
    PL_EV_MEMBER_ROLE = 12    /* data: {"user":N,"role":"admin"|"member"};
                               * subject N, sender the admin who changed it */
} pl_event_kind;

/* ---- end-to-end encryption (invariant 9) -------------------------------- */
#define PL_KEYS_KEY_BYTES   32   /* a public key, decoded (Ed25519 / X25519)  */
#define PL_KEYS_SIG_BYTES   64   /* an Ed25519 signature, decoded             */
#define PL_KEYS_B64_MAX     88   /* base64 text of a key or signature, bytes  */
#define PL_KEYS_OTK_UPLOAD  100  /* one-time prekeys in one upload            */
#define PL_KEYS_OTK_HELD    200  /* one-time prekeys a device may hold        */

typedef struct pl_prekey {      /* a one-time prekey of an upload (borrowed)  */
    int64_t     id;             /* 0..2^53-1, the device's own numbering      */
    const char *key;            /* base64                                     */
} pl_prekey;

typedef struct pl_keys_in {     /* PL_JOB_KEYS_UPLOAD's input (borrowed)      */
    const char *identity;       /* base64; NULL: keep (only add prekeys)      */
    int64_t     spk_id;         /* signed prekey: with identity               */
    const char *spk;
    const char *spk_sig;
    const pl_prekey *otks;
    size_t      notks;
    int         replace_otks;   /* drop the held one-time prekeys first       */
} pl_keys_in;

typedef struct pl_device {      /* a device's public keys; strings owned       */
    int64_t id;                 /* the login id                               */
    int64_t user;
    char   *identity;
    int64_t spk_id;
    char   *spk, *spk_sig;
    int64_t otk_id;             /* KEYS_CLAIM: the prekey taken ...            */
    char   *otk;                /* ... (NULL: none was left)                   */
    int64_t otk_count;          /* one-time prekeys held (after a claim)      */
    int64_t updated;            /* ms of the last identity/signed prekey change */
} pl_device;

void pl_device_list_free(pl_device *list, size_t n);

/* ---- push notifications (invariant 10) ----------------------------------- */

typedef enum pl_push_platform {
    PL_PUSH_WEBHOOK = 1, PL_PUSH_FCM = 2, PL_PUSH_APNS = 3
} pl_push_platform;

#define PL_PUSH_TOKEN_MAX    512   /* bytes of a device token               */
#define PL_PUSH_DEVICES_MAX  20    /* push devices one user may register    */
#define PL_PUSH_ATTEMPTS     8     /* claims of an outbox row before it is dropped */

typedef struct pl_push_device { /* a registered push token; token owned     */
    int64_t id;
    int64_t user;
    int64_t login;
    int     platform;           /* pl_push_platform                         */
    char   *token;
    int64_t created;            /* ms                                       */
} pl_push_device;

/* One notification to send: a message, one recipient device. Strings owned. */
typedef struct pl_push {
    int64_t  outbox;            /* the push_outbox row it comes from        */
    int64_t  conv, seq;
    uint64_t id;                /* the message's id                         */
    int64_t  ts;
    int64_t  sender;
    char     sender_name[33];
    int      conv_kind;         /* pl_conv_kind                             */
    char    *title;             /* a group's title (NULL: none)             */
    char    *body;              /* the message's text; NULL when it has none
                                 * (attachments only, a ciphertext message) */
    size_t   body_len;
    int      encrypted;         /* 1: a ciphertext message (invariant 9)     */
    int64_t  badge;             /* the recipient's unread count as its clients
                                 * badge it: over its conversations, unread
                                 * messages (level all) or unread mentions
                                 * (mentions), none for muted ones            */
    int64_t  user;              /* the recipient                            */
    int      mention;           /* 1: the message mentions user or replies to it */
    int64_t  device;            /* pl_push_device id                        */
    int      platform;
    char    *token;
} pl_push;

typedef struct pl_push_retry {  /* PUSH_DONE: an outbox row to send again   */
    int64_t        id;          /* the row                                  */
    const int64_t *devices;     /* only to these devices                    */
    size_t         ndevices;
    int64_t        expires;     /* leased until (ms); 0: the job's expires  */
    int            refund;      /* 1: none of them was tried (each waited for
                                 * an earlier notification of its device):
                                 * the claim's attempt is given back         */
} pl_push_retry;

void pl_push_device_list_free(pl_push_device *list, size_t n);
void pl_push_list_free(pl_push *list, size_t n);

/* MESSAGE data (NULL when none of it applies): {"reply_to":N,
 * "mentions":[ids],"mention_all":"all"|"here"}, each key only when set. */

typedef enum pl_notify_level {  /* a member's notification preference      */
    PL_NOTIFY_ALL = 0, PL_NOTIFY_MENTIONS = 1, PL_NOTIFY_NONE = 2
} pl_notify_level;

#define PL_STORE_REACTIONS_MAX 20   /* distinct emoji on one message       */
#define PL_STORE_PINS_MAX      50   /* pinned messages in one conversation */
#define PL_STORE_EMOJI_MAX     32   /* bytes of one reaction emoji         */
#define PL_STORE_MENTIONS_MAX  50   /* mentioned members listed per message
                                     * (names of non-members do not count) */
#define PL_STORE_PREVIEW_CHARS 100  /* characters of a reply preview        */

typedef enum pl_conv_kind {
    PL_CONV_DIRECT = 1, PL_CONV_GROUP = 2,
    PL_CONV_CHANNEL = 3       /* a group inside a workspace (invariant 11) */
} pl_conv_kind;
typedef enum pl_role { PL_ROLE_NONE = 0, PL_ROLE_MEMBER = 1, PL_ROLE_ADMIN = 2 } pl_role;

/* One entry of a conversation log. Strings are NUL-terminated, owned by the
 * struct and freed by pl_event_release(). */
typedef struct pl_event {
    int64_t  conv;            /* conversation id                          */
    int64_t  seq;             /* position in the conversation, from 1     */
    uint64_t id;              /* snowflake message id                     */
    int64_t  ts;              /* ms since the Unix epoch                  */
    int      kind;            /* pl_event_kind                            */
    int64_t  sender;          /* user id of the author/actor              */
    int64_t  subject;         /* MEMBER_*: the user added/removed/left; 0 otherwise */
    char    *client_msg_id;   /* MESSAGE only, else NULL                  */
    char    *body;            /* MESSAGE only, else NULL                  */
    size_t   body_len;        /* strlen(body) (bodies hold no NUL)        */
    char    *data;            /* JSON object text for system events, else NULL */
    int64_t  ref;             /* MESSAGE: reply_to seq (0: none); EDIT, DELETE,
                               * REACTION, PIN: the target's seq              */
    char    *annot;           /* the current form, as JSON object members to
                               * append to the wire object (no braces), written
                               * by the store, NULL if none. MESSAGE:
                               *   "edited_ts":T  "deleted":true  "pinned":true
                               *   "reactions":[{"emoji":"..","count":N,"me":B}]
                               *   "reply_preview":{"seq":N,"sender":U,"body":".."}
                               *     or {"seq":N,"deleted":true}
                               * EDIT of a deleted message: "deleted":true.
                               * Reads fill it ("me" for the asking user); a
                               * committed MESSAGE with reply_to carries its
                               * reply_preview. */
} pl_event;

void pl_event_release(pl_event *ev);        /* frees the strings, keeps ev */
/* Deep copy of src into dst (new strings). */
void pl_event_copy(pl_event *dst, const pl_event *src);

typedef struct pl_user {
    int64_t id;
    char    username[33];
    char   *pwhash;           /* owned; NULL unless asked for            */
    int64_t last_seen;        /* ms; 0 if never recorded                 */
} pl_user;

typedef struct pl_login {     /* a login session (refresh token family)   */
    int64_t id;
    int64_t user;
    uint8_t refresh_hash[32]; /* SHA-256 of the current refresh secret    */
    int64_t expires;          /* ms since epoch                           */
    int     revoked;
    uint8_t prev_hash[32];    /* the refresh hash before the last rotation
                               * (all zero if never rotated): reuse detection */
    int64_t rotated;          /* ms since epoch of the last rotation, 0 if none */
    int64_t created;          /* ms since epoch (access tokens carry its stamp) */
} pl_login;

typedef struct pl_member {
    int64_t user;
    int     role;             /* pl_role                                  */
    int64_t joined_seq;       /* first seq this member may see            */
    int64_t delivered_seq;    /* receipt cursors                          */
    int64_t read_seq;
    char    username[33];
} pl_member;

typedef struct pl_conv {
    int64_t    id;
    int        kind;          /* pl_conv_kind                             */
    char      *title;         /* owned; NULL for direct                   */
    int64_t    last_seq;
    int64_t    last_ts;       /* ts of the latest event, 0 if none        */
    int64_t    member_count;  /* members now                              */
    /* the asking user's membership */
    int        role;
    int64_t    joined_seq;
    int64_t    delivered_seq;
    int64_t    read_seq;
    int64_t    unread;        /* messages from others above read_seq (invariant 5) */
    int64_t    unread_mentions; /* mentions of the user above read_seq (invariant 7) */
    int        notify;        /* the user's pl_notify_level                */
    int        e2ee;          /* end-to-end encrypted (invariant 9)        */
    int64_t    workspace;     /* a channel's workspace, else 0 (invariant 11) */
    int        is_private;    /* a private channel                         */
    int64_t    retention;     /* CONV_GET, CONV_LIST with PL_READ_WITH_LAST: its
                               * own retention (seconds, 0: not set;
                               * invariant 13); other reads leave 0         */
    int64_t    ws_retention;  /* the same reads: its workspace's (channels), else 0 */
    int        hold;          /* CONV_GET: held, by itself or its workspace */
    int        blocked;       /* CONV_GET, CONV_LIST: a direct one whose members
                               * block each other, one way or both (invariant 14) */
    pl_event  *last;          /* owned; the latest event if asked for (and visible), else NULL */
    pl_member *members;       /* owned; NULL unless asked for (nmembers 0) */
    size_t     nmembers;
} pl_conv;

void pl_conv_release(pl_conv *c);

typedef struct pl_membership { /* PL_READ_MEMBERSHIPS rows               */
    int64_t user;
    int64_t conv;
    int64_t joined_seq;
    int64_t last_seq;         /* the conversation's                      */
} pl_membership;

/* An uploaded file (media/, app/api_media.c). The bytes live in the blob
 * store under sha256; a row per upload (identical uploads share the blob).
 * A row is garbage once no message references it (media_refs) and its
 * gc_after has passed: gc_after is its creation at first, and the time the
 * last reference went. Strings are inline, NUL-terminated. */
#define PL_MEDIA_NAME_MAX 255
typedef struct pl_media {
    int64_t id;               /* random, 1..2^53-1                        */
    int64_t owner;            /* the uploader                             */
    int64_t size;             /* bytes                                    */
    int64_t created;          /* ms since the Unix epoch                  */
    int     kind;             /* media.h pl_media_kind                    */
    int     width, height;    /* images once thumbnailed, else 0          */
    char    sha256[65];       /* lower-case hex of the content            */
    char    mime[128];        /* the sniffed (or agreed) type             */
    char    name[PL_MEDIA_NAME_MAX + 1]; /* sanitized file name           */
    char    placeholder[128]; /* blurhash once thumbnailed, else ""       */
    char    thumb_sha[65];    /* the thumbnail's blob, else ""            */
} pl_media;

/* ---- workspaces and channels (invariant 11) ------------------------------ */

#define PL_WORKSPACE_NAME_MAX 64  /* bytes of a workspace name (1.., UTF-8)   */
#define PL_GROUP_TITLE_MAX   128  /* bytes of a group's title (1.., UTF-8; the
                                   * rules of pl_store__name_rule)            */
#define PL_CHANNEL_NAME_MAX   80  /* bytes of a channel name: a-z 0-9 - _ . and
                                   * visible non-ASCII characters (UTF-8)     */

typedef struct pl_workspace {
    int64_t    id;
    char      *name;          /* owned                                     */
    int64_t    created_by;
    int64_t    created;       /* ms                                        */
    int64_t    general;       /* its "general" channel                     */
    int64_t    member_count;
    int64_t    channel_count; /* channels, private ones included           */
    int        role;          /* the asking user's pl_role                 */
    int64_t    retention;     /* seconds, 0: not set (invariant 13)        */
    int        hold;          /* under legal hold                          */
    pl_member *members;       /* WORKSPACE_GET: owned, in joining order (user,
                               * role, username; the seqs 0), else NULL    */
    size_t     nmembers;
} pl_workspace;

void pl_workspace_list_free(pl_workspace *list, size_t n);

/* The rules of a workspace name and a group title (docs/protocol.md "POST
 * /api/v1/workspaces"), in the order pl_store__name_rule checks them: the
 * first one broken is the one returned, so that an answer names it. */
enum {
    PL_NAME_OK = 0,
    PL_NAME_LENGTH,           /* empty, or more than max bytes             */
    PL_NAME_UTF8,             /* not valid UTF-8                           */
    PL_NAME_CONTROL,          /* a control character (NUL included)        */
    PL_NAME_SPACE,            /* a space other than U+0020 (U+00A0, ...)   */
    PL_NAME_INVISIBLE,        /* another pl_utf8_invisible: zero-width and
                               * format characters, direction marks and
                               * overrides                                 */
    PL_NAME_EDGE_SPACE,       /* a space first or last                     */
    PL_NAME_COMBINING,        /* a combining mark first (pl_utf8_combining:
                               * it would sit on whatever is shown before)  */
};
/* Which rule name[0..len) (borrowed; NUL allowed inside, as a character)
 * breaks as a name of at most max bytes, or PL_NAME_OK. */
int pl_store__name_rule(const char *name, size_t len, size_t max);
/* 1 if name (NUL-terminated) may name a workspace: pl_store__name_rule
 * with PL_WORKSPACE_NAME_MAX is PL_NAME_OK. */
int pl_store__workspace_name_ok(const char *name);
/* 1 if name (NUL-terminated) may name a channel: 1..PL_CHANNEL_NAME_MAX
 * bytes of valid UTF-8, ASCII only as a-z, 0-9, '-', '_', '.', and no
 * invisible character (pl_utf8_invisible). */
int pl_store__channel_name_ok(const char *name);

/* ---- reports (invariant 12) ---------------------------------------------- */

#define PL_REPORT_NOTE_MAX 500   /* bytes of a report's note                */

typedef struct pl_report {      /* strings owned                             */
    int64_t  id;
    int64_t  conv, seq;
    int      conv_kind;         /* pl_conv_kind                              */
    int64_t  reporter;
    char     reporter_name[33];
    int64_t  sender;            /* the message's author                      */
    char     sender_name[33];
    char    *reason;            /* as given (the API checks the words)       */
    char    *note;              /* NULL: none                                */
    char    *body;              /* the message's text when reported; NULL for
                                 * none (attachments only, ciphertext)       */
    uint64_t msg_id;            /* the message's id                          */
    int64_t  msg_ts;
    int64_t  created;           /* ms                                        */
    int64_t  resolved;          /* ms; 0: open                               */
    int64_t  resolved_by;
} pl_report;

void pl_report_list_free(pl_report *list, size_t n);

/* ---- jobs --------------------------------------------------------------- */

typedef enum pl_job_op {
    /* writes: the single writer, group commit ------------------------------ */
    PL_JOB_USER_CREATE = 1,   /* in: username, pwhash. out: out_id (user)  */
    PL_JOB_LOGIN_CREATE,      /* in: user, hash, expires. out: out_id (login) */
    PL_JOB_LOGIN_ROTATE,      /* in: id (login), hash (old), hash2 (new), expires;
                               * keeps the old hash as prev_hash, rotated = now */
    PL_JOB_LOGIN_REVOKE,      /* in: id (login). out: out_id              */
    PL_JOB_DIRECT_OPEN,       /* in: user, peer. out: out_id (conv), created, event if created */
    PL_JOB_GROUP_CREATE,      /* in: user, title, members[]. out: out_id (conv), event */
    PL_JOB_MEMBER_ADD,        /* in: conv, user (actor), peer. out: out_id, event
                               * (no event if peer is already a member). A
                               * channel: EFORBID (why "not in the workspace")
                               * unless peer is a member of its workspace
                               * (an id no user has included).             */
    PL_JOB_MEMBER_REMOVE,     /* in: conv, user (actor), peer. out: out_id, event.
                               * flags PL_JOB_EVICT: conv is a channel, peer a
                               * member of it, and peer out of its workspace, or
                               * the actor itself, or the actor an admin of the
                               * workspace (else EFORBID, why); the actor's
                               * membership and role in the channel are not
                               * checked (it is the MEMBER_REMOVED's sender). */
    PL_JOB_MEMBER_LEAVE,      /* in: conv, user. out: out_id, event        */
    PL_JOB_MESSAGE_SEND,      /* in: conv, user (sender), client_msg_id, body, body_len,
                               * seq (reply_to, 0: none). out: event, dup. A dup (same
                               * key, any body) returns the stored event and writes
                               * nothing. Mentions are resolved (invariant 7). Errors:
                               * ENOTFOUND (not a member, or reply_to is no event the
                               * sender may see), EINVAL (reply_to is not a message;
                               * PostgreSQL: the body is not UTF-8, as for EDIT),
                               * EGONE (reply_to deleted), EFORBID (@all/@here by a
                               * non-admin in a group above opts.large_group), and
                               * with ciphertext (a ciphertext message) or into an
                               * end-to-end encrypted conversation: invariant 9. */
    PL_JOB_MESSAGE_EDIT,      /* in: conv, user, seq (target), body, body_len. Author
                               * only (EFORBID), within opts.edit_window_ms of the
                               * message's ts (EFORBID). out: event (EDIT); no event
                               * and created = 0 when the body is unchanged.   */
    PL_JOB_MESSAGE_DELETE,    /* in: conv, user, seq. The author, or an admin of a
                               * group (EFORBID). out: event (DELETE).         */
    PL_JOB_REACTION,          /* in: conv, user, seq, emoji, flags PL_JOB_REMOVE. One
                               * per user per emoji; at most REACTIONS_MAX distinct
                               * emoji per message (EINVAL). out: event, or none
                               * (created = 0) when nothing changed.          */
    PL_JOB_PIN,               /* in: conv, user, seq, flags PL_JOB_REMOVE (unpin). Any
                               * member; at most PINS_MAX pinned (EINVAL). out: event,
                               * or none (created = 0) when nothing changed.  */
    PL_JOB_NOTIFY_SET,        /* in: conv, user, level (pl_notify_level). No event. */
                              /* Target errors of EDIT, DELETE, REACTION, PIN:
                               * ENOTFOUND (not a member; no such seq; seq before the
                               * actor's joined_seq), EINVAL (not a MESSAGE), EGONE
                               * (deleted). All check before they write.       */
    PL_JOB_RECEIPT,           /* in: conv, user, delivered, read (seqs; 0 = no change).
                               * Cursors only move up; values above last_seq are clamped;
                               * read implies delivered. out: out_delivered, out_read,
                               * out_unread, out_unread_mentions (when a cursor
                               * moved), out_members (member count), out_peer
                               * (sender of the MESSAGE at out_read if the read cursor
                               * moved onto another user's message, else 0),
                               * created = 1 if a cursor moved.            */
    PL_JOB_LAST_SEEN,         /* in: user, expires (= last seen, ms). Only moves forward. */
    PL_JOB_OUTBOX_ACK,        /* in: id: the bus published every batch up to this
                               * outbox id; the backend forgets them (no-op without outbox). */
    PL_JOB_OUTBOX_TAKEOVER,   /* out: ids (convs) and heads (their last seqs),
                               * nids: events committed by nodes that died before
                               * publishing them; the caller announces them
                               * (no-op without outbox). */
    /* ---- end-to-end encryption (invariant 9; explicit values) ---------- */
    PL_JOB_KEYS_UPLOAD = 40,  /* in: user, id (device = the user's login), keys. Sets
                               * the device's identity key and signed prekey (when
                               * keys->identity) and adds keys->otks (replacing the
                               * held ones with keys->replace_otks). ENOTFOUND: no
                               * such live login of user, or no identity yet; EINVAL
                               * (why): more than PL_KEYS_OTK_HELD would be held.
                               * out: out_id = one-time prekeys held now, created = 1
                               * when the device is new or its identity key changed */
    PL_JOB_KEYS_DELETE,       /* in: user, id (device). out: created = 1 if it had keys */
    PL_JOB_KEYS_CLAIM,        /* in: user (asker), peer. ENOTFOUND unless asker == peer
                               * or they share a conversation. out: devices: each live
                               * device of peer with ONE of its one-time prekeys,
                               * taken out of the store (otk NULL when none was left),
                               * otk_count = how many it holds after; ascending id */
    PL_JOB_CONV_E2EE,         /* in: conv, user. Marks conv end-to-end encrypted, for
                               * good: a group's admin, either member of a direct one
                               * (EFORBID, ENOTFOUND). out: event (E2EE "enabled"),
                               * none and created = 0 if it already was.       */
    PL_JOB_DEVICES_ANNOUNCE,  /* in: conv, user. If conv is end-to-end encrypted and
                               * user a member: event (E2EE "devices" of user);
                               * else no event, created = 0 (ENOTFOUND if not a member) */
    PL_JOB_MEDIA_CREATE,      /* in: media_in (all but created; width, height,
                               * placeholder, thumb_sha may be 0/""),
                               * expires = the owner's quota in bytes (0: none) less
                               * what its uploads in progress reserve. EFORBID (why
                               * "quota") when the owner's media would exceed it.
                               * media_in->id 0: the check alone, no row (a resumable
                               * upload reserving its length, media_in->size). */
    PL_JOB_MEDIA_THUMB,       /* in: media_in (id, width, height, placeholder, thumb_sha).
                               * ENOTFOUND if the row is gone.               */
    PL_JOB_MEDIA_GC,          /* in: expires (cutoff ms), limit (rows). Deletes rows no
                               * message references whose gc_after < cutoff. out:
                               * media/nmedia: only sha256 set, each blob (content or
                               * thumbnail) no remaining row names: the caller removes it. */
    /* ---- push notifications (invariant 10; explicit value) ------------ */
    PL_JOB_PUSH_REGISTER = 60, /* in: user, id (login), platform, token. One row per
                               * (platform, token): a token another login held moves
                               * to this one (the device changed accounts). ENOTFOUND:
                               * no such live login of user; EINVAL (why): the user
                               * would hold more than PL_PUSH_DEVICES_MAX. out: out_id
                               * = the device's id, created = 1 when it is new here. */
    PL_JOB_PUSH_UNREGISTER,   /* in: user, id (device). ENOTFOUND unless user's.   */
    PL_JOB_PUSH_CLAIM,        /* in: limit (rows), expires (lease until, ms). Leases
                               * the oldest rows whose lease is over (attempts + 1);
                               * rows already claimed PL_PUSH_ATTEMPTS times are
                               * deleted instead. out: out_ids/nout: the rows;
                               * created: how many were deleted so, push_dropped:
                               * which. PostgreSQL: only the node holding the
                               * push drainer lock claims (others get no rows);
                               * taking it clears every lease (the previous
                               * holder's session is gone).                    */
    PL_JOB_PUSH_DONE,         /* in: ids/nids: rows finished (deleted); dead/ndead:
                               * devices the push service refused for good
                               * (deleted); retries/nretries: rows to send again to
                               * those devices only, leased until their expires
                               * (0: the job's), an attempt given back if refund. */
    /* ---- workspaces and channels (invariant 11; explicit value) ------- */
    PL_JOB_WORKSPACE_CREATE = 70, /* in: user, title (the name, 1..NAME_MAX bytes
                               * of UTF-8, else EINVAL). Creates the workspace, user
                               * its admin, and its public channel "general", user
                               * its admin. out: out_id = the workspace, event (the
                               * channel's CREATED; event.conv = general).     */
    PL_JOB_WORKSPACE_ADD,     /* in: id (workspace), user (actor), peer. Actor an
                               * admin (EFORBID); ENOTFOUND: no such workspace,
                               * actor not in it, no such peer; EINVAL (why
                               * "workspace full") beyond opts.workspace_members.
                               * Adds peer as a member and to "general": event
                               * (MEMBER_ADDED there, sender = actor), created = 1.
                               * Already a member: nothing, created = 0. out_id =
                               * the workspace.                                */
    PL_JOB_WORKSPACE_REMOVE,  /* in: id (workspace), user (actor), peer (== user:
                               * leave, any member; else actor an admin, EFORBID).
                               * ENOTFOUND: no such workspace, actor or peer not in
                               * it. Removes peer; if no admin remains, the
                               * earliest-joined member becomes admin. out: out_ids
                               * /nout = the workspace's channels peer is still in
                               * (ascending), for the caller to evict it from. No
                               * event. A peer already out of the workspace (a
                               * removal whose evictions were cut short) but in
                               * some of its channels: an admin's removal lists
                               * them and changes nothing (ENOTFOUND when there
                               * are none, or for a leave).                    */
    PL_JOB_CHANNEL_CREATE,    /* in: id (workspace), user, title (the name,
                               * pl_store__channel_name_ok, else EINVAL why "bad
                               * channel name"), members[] (others, as GROUP_CREATE),
                               * flags PL_JOB_PRIVATE. ENOTFOUND: no such workspace
                               * or user not in it; EFORBID (why "not in the
                               * workspace"): a member not in it; ECONFLICT: the
                               * name is taken in the workspace; EINVAL (why "too
                               * many channels") beyond opts.workspace_channels.
                               * out: out_id (conv), event CREATED with data
                               * {"kind":"channel","title":..,"members":[..],
                               *  "workspace":W,"private":B}                   */
    PL_JOB_CHANNEL_JOIN,      /* in: conv, user. A public channel of a workspace
                               * user is in, or a private one with no member
                               * left for a workspace admin (else ENOTFOUND,
                               * other private channels included). out: out_id = conv; event MEMBER_ADDED
                               * (sender = subject = user), created = 1; already a
                               * member: nothing, created = 0.                 */
    /* ---- reports (invariant 12; explicit value) ------------------------ */
    PL_JOB_REPORT = 80,       /* in: conv, user (reporter), seq (target), title (the
                               * reason, 1..32 bytes), body/body_len (note, 0..
                               * PL_REPORT_NOTE_MAX bytes; NULL: none). Target errors
                               * as EDIT's (ENOTFOUND: not a member, no such seq,
                               * before joined_seq; EINVAL why "not a message";
                               * EGONE: deleted), and EINVAL why "your own message".
                               * out: out_id = the report, created = 1; a repeat by
                               * the same reporter: the first one's id, created = 0.
                               * No event.                                      */
    PL_JOB_REPORT_RESOLVE,    /* in: id (report), user, flags PL_JOB_ADMIN (a server
                               * admin: any report). Else user must be an admin of
                               * the report's conversation (a group or a channel),
                               * and the report not about a message of user's:
                               * ENOTFOUND otherwise (no such report included).
                               * out: out_id = id, created = 1; already resolved:
                               * created = 0.                                   */
    /* data lifecycle (invariant 13; explicit values) */
    PL_JOB_RETENTION_SET = 90, /* in: conv, or conv = 0 and id (workspace); user;
                               * value (seconds, 0..PL_RETENTION_MAX; 0 unsets);
                               * flags PL_JOB_ADMIN (a server admin: any one).
                               * Else a conversation needs an admin of a group
                               * or channel, or either member of a direct one;
                               * a workspace one of its admins. ENOTFOUND: no
                               * such one, or user not in it (without ADMIN);
                               * EFORBID: a member, not an admin. A
                               * conversation's appends PL_EV_RETENTION (also
                               * when unchanged); a workspace's has no event.
                               * out: out_id = conv or id.                   */
    PL_JOB_HOLD_SET,          /* in: conv, or conv = 0 and id (workspace); flags
                               * PL_JOB_REMOVE (release). The caller checked
                               * the user is a server admin. No event.
                               * ENOTFOUND: no such one. out: out_id.        */
    PL_JOB_RETENTION_PURGE,   /* in: expires (now, ms), limit (1..10000 rows).
                               * Erases up to limit MESSAGEs as invariant 13
                               * says (oldest conversations' first is not
                               * promised). out: out_id = messages erased;
                               * fewer than limit: nothing more to erase now. */
    PL_JOB_ACCOUNT_DELETE,    /* in: user. Invariant 13. ECONFLICT (why: "still
                               * a member") while user is in a group, channel
                               * or workspace, (why: "still blocking") while
                               * it blocks anyone (the caller unblocks each
                               * first); ENOTFOUND: no such user or already
                               * deleted. out: out_id = user.                 */
    /* blocks (invariant 14; explicit value) */
    PL_JOB_BLOCK = 95,        /* in: user, peer; flags PL_JOB_REMOVE (unblock).
                               * EINVAL: peer == user; ENOTFOUND: no such (or a
                               * deleted) peer or user when blocking (why
                               * "deleted": user; unblocking one
                               * that is not blocked is OK, created = 0). No
                               * event. out: out_id = peer, created = 1 if it
                               * changed anything; conv_out.id and .blocked:
                               * the pair's direct conversation and its flag
                               * now (conv_out.id 0: none, or the flag did
                               * not change), for chat/ to announce.       */
    PL_JOB_MEMBER_ROLE = 96,  /* in: conv, user (actor), peer, level (the new
                               * pl_role: PL_ROLE_ADMIN or PL_ROLE_MEMBER).
                               * Checks as MEMBER_REMOVE's (ENOTFOUND: no
                               * such conversation, or the actor or peer not
                               * a member; EINVAL: a direct one; EFORBID: the
                               * actor is not an admin); EINVAL (why) when it
                               * would leave no admin. out: out_id = conv;
                               * created = 1 and event (a MEMBER_ROLE) when
                               * the role changed, else nothing appended. */
    PL_JOB_WORKSPACE_ROLE = 97, /* in: id (the workspace), user (actor), peer,
                               * level (PL_ROLE_ADMIN or PL_ROLE_MEMBER).
                               * ENOTFOUND: no such workspace, or the actor
                               * or peer not in it; EFORBID: the actor is not
                               * its admin; EINVAL (why) when it would leave
                               * no admin. out: out_id = id; created = 1 when
                               * the role changed. No event (invariant 11:
                               * workspaces have no log). */
    PL_JOB__WRITE_END,

    /* reads: reader threads, any order ------------------------------------ */
    PL_READ_USER_BY_NAME = 100, /* in: username; flags PL_READ_WITH_HASH. out: user_out */
    PL_READ_USER_BY_ID,       /* in: user. out: user_out                    */
    PL_READ_LOGIN,            /* in: id (login). out: login_out              */
    PL_READ_SESSION,          /* in: id (login), user. out: login_out, user_out, convs
                               * (the user's conversations, no members; what a
                               * WebSocket needs to authenticate) — one read. */
    PL_READ_CONV_LIST,        /* in: user; flags PL_READ_WITH_LAST. out: convs, most
                               * recently active first                        */
    PL_READ_CONV_GET,         /* in: conv, user. out: conv_out with members.
                               * ENOTFOUND if user is not a member.           */
    PL_READ_EVENTS,           /* in: conv, after, before (<= 0: none), limit (1..PAGE_MAX,
                               * larger is capped), flags PL_READ_FROM_TOP, user (0: no
                               * membership check; else ENOTFOUND for non-members and
                               * only seqs >= the user's joined_seq). Events with
                               * after < seq < before, the lowest (or with FROM_TOP the
                               * highest) limit of them, always ascending. out: events,
                               * nevents, more (1 if more exist in the paging direction
                               * within the visible range).                   */
    PL_READ_RECEIPTS,         /* in: conv, user, seq (0: none). out: conv_out with members
                               * (ENOTFOUND if user is not a member), and events/nevents
                               * = the event at seq if it exists and user may see it.  */
    PL_READ_USERS_VISIBLE,    /* in: user (asker), ids[nids]. out: users/nusers: those of
                               * ids that are the asker or share a conversation with it
                               * that is not blocked (invariant 14). */
    PL_READ_CONV_HEADS,       /* in: ids[nids] (conversations). out: heads[nids]: last_seq
                               * of each (0 when it does not exist).          */
    PL_READ_MEMBERSHIPS,      /* in: ids[nids] (users). out: mships/nmships: every
                               * membership of those users.                   */
    PL_READ_PINS,             /* in: conv, user. out: events: the pinned messages the
                               * user may see, current form, most recently pinned
                               * first (ENOTFOUND for non-members).            */
    PL_READ_MENTIONS,         /* in: conv, user, after, limit. out: events: MESSAGEs
                               * with seq > after that mention user or reply to its
                               * messages (invariant 7), visible to it, ascending,
                               * current form, at most limit; more.            */
    PL_READ_SEARCH,           /* full-text search (invariant 8). in: user, query (the
                               * words; PL_STORE_QUERY_MAX bytes at most), conv (0: any),
                               * peer (sender; 0: any), after/before (ts bounds in ms:
                               * after <= ts < before; 0: none, but a before of 0
                               * with PL_READ_BEFORE matches nothing), cursor (0: from the
                               * newest; else only ids below it), flags
                               * PL_READ_MENTIONS_ME, limit (1..PL_STORE_SEARCH_MAX).
                               * out: events (MESSAGEs in their current form, newest
                               * id first, each with e.conv set), snippets[nevents],
                               * more, and out_id = the cursor of the next page (the
                               * last result's id) when more. EINVAL: query too long. */
    PL_READ_MEDIA_LIST,       /* in: ids[nids] (media), user. out: media/nmedia: those
                               * of ids that user owns (what a send may attach). */
    PL_READ_MEDIA_GET,        /* in: id (media), user (0: no check). out: media[0].
                               * ENOTFOUND unless user owns it or is a member of a
                               * conversation with a message referencing it, at or
                               * after the member's joined_seq (invariant 4).  */
    PL_READ_USER_SEARCH,      /* in: user (asker), query (PL_STORE_QUERY_MAX bytes),
                               * limit (1..PL_STORE_SEARCH_MAX). out: users/nusers: the
                               * asker and users sharing a conversation with it whose
                               * username contains query (case-insensitive), names
                               * starting with it first, then by name.        */
    /* end-to-end encryption (invariant 9; explicit value) */
    PL_READ_DEVICES = 140,    /* in: user (asker), peer. As KEYS_CLAIM without
                               * taking a key: devices with otk_count, otk NULL. */
    /* push notifications (invariant 10; explicit values) */
    PL_READ_PUSH_DEVICES = 150, /* in: user. out: push_devices: the user's, by id  */
    PL_READ_PUSH_TARGETS,     /* in: ids/nids (claimed outbox rows), after (0, or
                               * a member count: in a conversation with more
                               * members, only members the message mentions: large
                               * groups). out: pushes: for each row's MESSAGE that
                               * is not deleted, one per device (of a live login; a
                               * retried row: only its devices) of each member other
                               * than the sender who joined at or before it and
                               * whose level notifies (all; mentions: when mention),
                               * rows in id order. Rows whose message is gone give
                               * none. created: how many devices a retried row
                               * named get none now (their user left, the message
                               * was deleted, the device or login went: the
                               * retry is cancelled for them).                  */
    /* workspaces and channels (invariant 11; explicit values) */
    PL_READ_WORKSPACES = 160, /* in: user. out: workspaces: those user is in (no
                               * members), by id                             */
    PL_READ_WORKSPACE_GET,    /* in: id (workspace), user. out: workspaces[0] with
                               * members. ENOTFOUND unless user is in it.    */
    PL_READ_CHANNELS,         /* in: id (workspace), user. out: convs: its public
                               * channels and the private ones user is in (or,
                               * user a workspace admin, that have no member), by
                               * title; each with id, kind, title, workspace,
                               * is_private, last_seq, last_ts, member_count and
                               * role = user's (PL_ROLE_NONE: not in it; then the
                               * other per-user fields are 0). ENOTFOUND unless
                               * user is in the workspace.                    */
    PL_READ_CONV_WORKSPACE,   /* in: conv, user (0: none). out: out_id = its
                               * workspace if it is a channel, else 0 (a direct
                               * conversation, a group, none); created = 1 if
                               * user is a member of conv. Never ENOTFOUND:
                               * what the send path's rate limits need (chat/
                               * wsrate.c), two indexed rows.                */
    /* reports (invariant 12; explicit value) */
    PL_READ_REPORTS = 170,    /* in: conv (0: every conversation, only with
                               * PL_READ_ADMIN), user, flags PL_READ_ADMIN (a server
                               * admin: any conversation) and PL_READ_RESOLVED
                               * (resolved ones too; else open ones only), cursor
                               * (0: from the newest; else ids below it), limit
                               * (1..PL_STORE_PAGE_MAX). Without PL_READ_ADMIN user
                               * must be an admin of conv, a group or channel
                               * (ENOTFOUND: not a member, or a direct one;
                               * EFORBID: a member, not an admin), and the
                               * reports of user's own messages are left out
                               * (the server admins see them). out: reports
                               * (newest id first), more.                    */
    /* data lifecycle (invariant 13; explicit value) */
    PL_READ_USER_MESSAGES = 180, /* in: user, cursor (event id; 0: from the
                               * first), limit (1..PL_STORE_PAGE_MAX). out:
                               * events: the MESSAGEs user sent with ids above
                               * cursor, not deleted, in id order, current form
                               * (annot as PL_READ_EVENTS with user the viewer),
                               * each with its conv; more.                   */
    /* blocks (invariant 14; explicit value) */
    PL_READ_BLOCKS = 190,     /* in: user. out: users/nusers: those user blocks
                               * (id, username), by id.                      */
    PL_READ_SEND_CHECK = 200  /* in: conv, user, client_msg_id (NULL: none). What
                               * a send the content filter blocked would have
                               * met first: a stored send of user with that key
                               * (a retry): OK, dup = 1, has_event, event (conv,
                               * seq, id, ts, sender, client_msg_id) as SEND's
                               * answer to a retry; else ENOTFOUND (why "no
                               * such conversation") when user is no member of
                               * conv; else OK, dup = 0. chat/ content.c.    */
} pl_job_op;

/* writes take the values below the reads: pl_job_is_read() */
_Static_assert(PL_JOB__WRITE_END <= PL_READ_USER_BY_NAME, "a write op among the reads");

#define PL_JOB_REMOVE      1   /* REACTION: remove; PIN: unpin               */
#define PL_JOB_PRIVATE     2   /* CHANNEL_CREATE: a private channel           */
#define PL_JOB_EVICT       4   /* MEMBER_REMOVE: see there                    */
#define PL_JOB_ADMIN       8   /* REPORT_RESOLVE, RETENTION_SET: by a server admin */
#define PL_JOB_FILTER     16   /* REPORT: filed by the content filter: user is the
                                * message's sender (its membership is checked as
                                * a reporter's), the report's reporter is 0, and
                                * "your own message" does not apply; a repeat
                                * (the same message) returns the first one,
                                * opened again (resolved 0, the message's text
                                * as it is now; created = 1) if resolved     */

#define PL_RETENTION_MAX  3155760000LL  /* seconds: a century (100 x 365.25 days) */

#define PL_READ_WITH_HASH  1   /* USER_BY_NAME: also return pwhash          */
#define PL_READ_WITH_LAST  2   /* CONV_LIST: fill conv.last                  */
#define PL_READ_FROM_TOP   4   /* EVENTS: take the highest seqs              */
#define PL_READ_MENTIONS_ME 8  /* SEARCH: only messages mentioning the user
                                * or replying to it (invariant 7's rows)     */
#define PL_READ_HAS_MEDIA  16  /* SEARCH: only messages with attachments
                                * (media_refs rows)                          */
#define PL_READ_BEFORE     32  /* SEARCH: before is a bound even when 0 (then
                                * nothing matches); without it 0 is none     */
#define PL_READ_ADMIN      64  /* REPORTS: asked by a server admin           */
#define PL_READ_RESOLVED  128  /* REPORTS: resolved ones too                 */

#define PL_STORE_QUERY_MAX  256 /* bytes of a search query                   */
#define PL_STORE_SEARCH_MAX 50  /* results of one search page                */
#define PL_STORE_SNIPPET_START '\x02' /* snippets mark each match with these  */
#define PL_STORE_SNIPPET_END   '\x03' /* (removed from the text itself)       */

static inline int pl_job_is_read(int op) { return op >= PL_READ_USER_BY_NAME; }

typedef struct pl_job pl_job;
typedef void (*pl_job_cb)(pl_job *job);

/* A job is allocated and owned by the caller until done() is called; done()
 * may free it (after pl_job_release()). Input strings and arrays are
 * borrowed: they must stay valid until done() runs. Outputs are owned by
 * the job and freed by pl_job_release(). */
struct pl_job {
    pl_job_op  op;
    /* inputs */
    int64_t    user;          /* acting / asking user                      */
    int64_t    peer;          /* other user (direct, add, remove)          */
    int64_t    conv;          /* conversation                              */
    int64_t    id;            /* login id (rotate, revoke, login, session) */
    int64_t    after, before; /* EVENTS                                    */
    int64_t    seq;           /* RECEIPTS; message actions: the target; SEND: reply_to */
    int        limit;         /* EVENTS                                    */
    int        flags;         /* PL_READ_*                                 */
    const char *username;
    const char *pwhash;
    const char *title;
    const char *client_msg_id;
    const char *body;
    size_t     body_len;
    const char *emoji;        /* REACTION                                  */
    int        level;         /* NOTIFY_SET                                */
    const int64_t *members;   /* group create: other members (creator implied) */
    size_t     nmembers;
    const int64_t *ids;       /* USERS_VISIBLE, CONV_HEADS, MEMBERSHIPS    */
    const char *query;        /* SEARCH, USER_SEARCH                       */
    int64_t    cursor;        /* SEARCH: only event ids below it (0: none) */
    size_t     nids;
    uint8_t    hash[32];      /* login create/rotate: refresh hash (old on rotate) */
    uint8_t    hash2[32];     /* login rotate: new refresh hash            */
    int64_t    expires;
    int64_t    value;         /* RETENTION_SET: seconds                    */
    int64_t    delivered;     /* receipt: delivered up to                  */
    int64_t    read;          /* receipt: read up to                       */
    /* outputs, valid in done() */
    int        result;        /* PL_STORE_OK or a PL_STORE_E*              */
    int64_t    out_id;        /* new user id / login id / conversation id  */
    int        created;       /* direct open: new; receipt: a cursor moved */
    int        dup;           /* send: 1 if client_msg_id was seen before  */
    const char *why;          /* message actions: reason of EINVAL/EFORBID/EGONE (static) */
    int64_t    out_delivered; /* receipt: the user's cursors after the job */
    int64_t    out_read;
    int64_t    out_unread;    /* receipt: messages from others above out_read */
    int64_t    out_unread_mentions; /* receipt: mentions of the user above it */
    int64_t    out_members;   /* receipt: the conversation's member count  */
    int64_t    out_peer;      /* receipt: see PL_JOB_RECEIPT               */
    int64_t    out_batch;     /* writes with an event: the backend's outbox id of
                               * the batch (0 without outbox; see PL_JOB_OUTBOX_ACK) */
    int        has_event;     /* 1 if event below was appended to a log    */
    pl_event   event;         /* the appended (or, on dup, original) event */
    pl_user    user_out;      /* USER_*, SESSION                           */
    pl_login   login_out;     /* LOGIN, SESSION                            */
    pl_conv   *convs;         /* SESSION, CONV_LIST                        */
    size_t     nconvs;
    pl_conv    conv_out;      /* CONV_GET, RECEIPTS                        */
    pl_event  *events;        /* EVENTS, RECEIPTS, SEARCH                  */
    size_t     nevents;
    char     **snippets;      /* SEARCH: one per event (owned)             */
    int        more;          /* EVENTS                                    */
    int64_t   *heads;         /* CONV_HEADS, OUTBOX_TAKEOVER               */
    int64_t   *out_ids;       /* OUTBOX_TAKEOVER: conversations            */
    size_t     nout;          /* OUTBOX_TAKEOVER                           */
    pl_user   *users;         /* USERS_VISIBLE                             */
    size_t     nusers;
    pl_membership *mships;    /* MEMBERSHIPS                               */
    size_t     nmships;
    /* media (app/api_media.c) */
    const pl_media *media_in; /* MEDIA_CREATE, MEDIA_THUMB (borrowed)      */
    const char *attach_json;  /* SEND: the attachments, a JSON array of media
                               * objects (chat/attach.c), or NULL; kept in
                               * data.attachments. A MESSAGE whose data has
                               * attachments references each id (media_refs,
                               * by trigger): an edit keeps them, a delete
                               * drops the references (the media's gc_after
                               * becomes the delete's time). */
    pl_media  *media;         /* MEDIA_GET, MEDIA_GC (owned)               */
    size_t     nmedia;
    /* end-to-end encryption (invariant 9) */
    const pl_keys_in *keys;   /* in: KEYS_UPLOAD                           */
    const char *ciphertext;   /* in: SEND: the payloads as JSON array text, a
                               * ciphertext message (body then ""); NULL: plain */
    pl_device  *devices;      /* out: KEYS_CLAIM, READ_DEVICES (owned)     */
    size_t      ndevices;
    /* push notifications (invariant 10) */
    int         platform;     /* in: PUSH_REGISTER (pl_push_platform)      */
    const char *token;        /* in: PUSH_REGISTER                         */
    const int64_t *dead;      /* in: PUSH_DONE                             */
    size_t      ndead;
    const pl_push_retry *retries; /* in: PUSH_DONE                         */
    size_t      nretries;
    pl_push_device *push_devices; /* out: READ_PUSH_DEVICES (owned)        */
    size_t      npush_devices;
    pl_push    *pushes;       /* out: READ_PUSH_TARGETS (owned)            */
    size_t      npushes;
    int64_t    *push_dropped; /* out: PUSH_CLAIM: rows dropped (owned)     */
    size_t      npush_dropped;
    /* workspaces (invariant 11) */
    pl_workspace *workspaces; /* out: READ_WORKSPACES, READ_WORKSPACE_GET (owned) */
    size_t      nworkspaces;
    /* reports (invariant 12) */
    pl_report  *reports;      /* out: READ_REPORTS (owned)                 */
    size_t      nreports;
    /* callback, run on the loop thread */
    pl_job_cb  done;
    void      *data;          /* caller's                                  */
    pl_job    *next;          /* queue link, owned by the store while queued */
};

/* Frees every output of j (event, lists, strings) and zeroes them, so the
 * job can be freed or reused. Inputs are untouched. */
void pl_job_release(pl_job *j);

/* ---- backend table ---------------------------------------------------- */

typedef struct pl_store_ops {
    const char *name;
    /* queues j (write or read); never blocks, never calls done() inline */
    void (*submit)(pl_store *s, pl_job *j);
    /* runs done() for every completed job (loop thread) */
    void (*drain)(pl_store *s);
    /* 1 while the backend can serve (its connections are up): /readyz */
    int  (*healthy)(pl_store *s);
    /* see pl_store_shared_secret; NULL: the backend has none */
    int  (*shared_secret)(pl_store *s, const char *name, uint8_t out[32]);
    /* stops accepting, finishes queued jobs (their done() runs, inside
     * close), joins the threads, frees s */
    void (*close)(pl_store *s);
} pl_store_ops;

struct pl_store {
    const pl_store_ops *ops;
    int                 node_id;   /* snowflake node id in use (configured or leased) */
};

typedef struct pl_store_opts {
    const char *url;          /* NULL/"": SQLite in data_dir; postgres://... or postgresql://... */
    const char *data_dir;     /* SQLite's directory (parley.db); locked while open */
    int         node_id;      /* snowflake node id 0..1023; -1: lease one (PostgreSQL)
                               * or 0 (SQLite). PostgreSQL refuses an id another live
                               * node holds. */
    int         readers;      /* reader threads; 0: the backend's default  */
    int64_t     large_group;  /* member count above which a group is large (@all and
                               * @here need an admin); 0: no limit            */
    int64_t     edit_window_ms; /* how long after sending a message may be edited; 0: always */
    int         outbox;       /* 1: record each batch's events in an outbox until
                               * PL_JOB_OUTBOX_ACK (cluster mode, PostgreSQL) */
    int         push;         /* 1: write a push_outbox row per MESSAGE (invariant 10) */
    int64_t     workspace_members;  /* quotas per workspace (invariant 11); 0: none */
    int64_t     workspace_channels;
    int64_t     retention;    /* the server's retention, seconds (invariant 13); 0: none */
    /* wakes the loop when jobs complete: called from backend threads after
     * appending to the done-queue; the loop then calls pl_store_drain(). It
     * may run until pl_store_close() returns. */
    void      (*notify)(void *arg);
    void       *notify_arg;
    /* run by pl_store_drain() on the loop thread for every write job that
     * appended a new event (result OK, has_event, not dup), just before its
     * done(): the one place committed events are published (may be NULL) */
    void      (*committed)(void *arg, pl_job *j);
    void       *committed_arg;
} pl_store_opts;

/* Opens the backend o->url names (creating and migrating its schema) and
 * starts its threads. Returns 0, or PL_STORE_EUNAVAIL with a reason in err.
 * Opening may block (it runs before the event loop). */
int  pl_store_open(const pl_store_opts *o, pl_store **out, char *err, size_t errlen);

/* A 32-byte secret shared by every node of the deployment, created on first
 * use (PostgreSQL: a row; SQLite: ENOTFOUND, the caller keeps its own file).
 * Blocking; call before the loop runs. */
int  pl_store_shared_secret(pl_store *s, const char *name, uint8_t out[32]);

/* Backends. */
int  pl_store_sqlite_open(const pl_store_opts *o, pl_store **out, char *err, size_t errlen);
int  pl_store_pg_open(const pl_store_opts *o, pl_store **out, char *err, size_t errlen);

/* Fault hook for tests (SQLite): the next n batch commits of s fail as if
 * the disk had failed (the batch is rolled back, its jobs complete with
 * PL_STORE_EUNAVAIL, and the store turns sticky-broken as on a real error). */
void pl_store_sqlite_fail_commits(pl_store *s, int n);

static inline void pl_store_submit(pl_store *s, pl_job *j) { s->ops->submit(s, j); }
static inline void pl_store_drain(pl_store *s) { s->ops->drain(s); }
static inline int  pl_store_healthy(pl_store *s) { return s->ops->healthy(s); }
static inline const char *pl_store_name(pl_store *s) { return s->ops->name; }

/* Stops the threads after finishing queued jobs, drains, closes, frees;
 * NULLs *s. */
void pl_store_close(pl_store **s);

void pl_conv_list_free(pl_conv *list, size_t n);
void pl_event_list_free(pl_event *list, size_t n);

/* ---- shared by the backends (store.c) ------------------------------------ */

/* The largest integer a client may send (and JSON carries exactly). */
#define PL_JSON_INT_MAX 9007199254740991LL

#endif
