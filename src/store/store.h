/* store.h — the storage interface: everything Parley keeps durably.
 *
 * Owns: the contract between the server and a storage backend (SQLite now,
 * PostgreSQL later), the shape of a conversation log event, and the write
 * pipeline (jobs committed in groups by one writer).
 * Does not own: sockets, JSON, fan-out, tokens (callers hash and sign).
 *
 * Two kinds of call:
 *
 *   Writes are jobs. pl_store_submit() queues a job for the backend's single
 *   writer; the writer takes every queued job (up to a cap), runs them in ONE
 *   transaction with one fsync (group commit), then hands each job back on the
 *   event loop thread through job->done. A job that fails (not a member, a
 *   conflict) fails alone and the rest of the batch commits: its
 *   preconditions are checked before it writes (sends, the hot path), and
 *   the rarer multi-statement jobs also run inside a savepoint. If the commit
 *   itself fails, every job of the batch is completed with PL_STORE_EUNAVAIL,
 *   nothing of it was acknowledged, and the store stops accepting writes
 *   (every later job completes with PL_STORE_EUNAVAIL): after a failed write
 *   or fsync the database state is unknown.
 *
 *   Reads are synchronous, called on the loop thread, and bounded (history
 *   pages are capped at PL_STORE_PAGE_MAX rows). The SQLite backend answers
 *   them from its own read connection, which WAL lets run beside the writer.
 *
 * Invariants the backend guarantees:
 *   1. Seqs in a conversation are contiguous from 1: the writer is the only
 *      code that assigns them, and it persists conversations.last_seq in the
 *      same transaction as the event, so they can never disagree.
 *   2. job->done is called only after the batch holding the job is durable
 *      (COMMIT returned with synchronous=FULL), in submission order.
 *   3. (conversation, sender, client_msg_id) is UNIQUE in the database; a
 *      retried send returns the stored event with dup = 1.
 */
#ifndef PL_STORE_H
#define PL_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "../core/id.h"

typedef struct pl_store pl_store;
typedef struct pl_loop_hook pl_loop_hook;

#define PL_STORE_PAGE_MAX 200

/* Results of jobs and reads. 0 is success. */
#define PL_STORE_OK        0
#define PL_STORE_ENOTFOUND (-1)  /* no such row, or caller not a member      */
#define PL_STORE_ECONFLICT (-2)  /* unique violation: username taken          */
#define PL_STORE_EFORBID   (-3)  /* member lacks the role for this            */
#define PL_STORE_EINVAL    (-4)  /* argument out of range (e.g. DM with self) */
#define PL_STORE_EUNAVAIL  (-5)  /* the store failed; nothing was committed   */

typedef enum pl_event_kind {
    PL_EV_CREATED = 1,        /* data: {"kind":..,"title":..,"members":[..]} */
    PL_EV_MESSAGE = 2,        /* body, client_msg_id                         */
    PL_EV_MEMBER_ADDED = 3,   /* data: {"user":N}                            */
    PL_EV_MEMBER_REMOVED = 4, /* data: {"user":N}                            */
    PL_EV_MEMBER_LEFT = 5     /* data: {"user":N}                            */
} pl_event_kind;

typedef enum pl_conv_kind { PL_CONV_DIRECT = 1, PL_CONV_GROUP = 2 } pl_conv_kind;
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
    char    *client_msg_id;   /* MESSAGE only, else NULL                  */
    char    *body;            /* MESSAGE only, else NULL                  */
    char    *data;            /* JSON object text for system events, else NULL */
} pl_event;

void pl_event_release(pl_event *ev);        /* frees the strings, keeps ev */

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
} pl_login;

typedef struct pl_member {
    int64_t user;
    int     role;             /* pl_role                                  */
    int64_t delivered_seq;    /* receipt cursors                          */
    int64_t read_seq;
    char    username[33];
} pl_member;

typedef struct pl_conv {
    int64_t    id;
    int        kind;          /* pl_conv_kind                             */
    char      *title;         /* owned; NULL for direct                   */
    int64_t    last_seq;
    int64_t    read_seq;      /* the asking user's read cursor            */
    int64_t    unread;        /* messages from others above read_seq      */
    int        role;          /* the asking user's role                   */
    int64_t    last_ts;       /* ts of the latest event, 0 if none        */
    pl_member *members;       /* owned; may be NULL (nmembers 0)          */
    size_t     nmembers;
} pl_conv;

void pl_conv_release(pl_conv *c);

/* ---- write jobs ------------------------------------------------------- */

typedef enum pl_job_op {
    PL_JOB_USER_CREATE = 1,   /* in: username, pwhash. out: id (user)     */
    PL_JOB_LOGIN_CREATE,      /* in: user, hash, expires. out: id (login) */
    PL_JOB_LOGIN_ROTATE,      /* in: id (login), hash (old), hash2 (new), expires */
    PL_JOB_LOGIN_REVOKE,      /* in: id (login)                            */
    PL_JOB_DIRECT_OPEN,       /* in: user, peer. out: out_id (conv), created, event if created */
    PL_JOB_GROUP_CREATE,      /* in: user, title, members[]. out: out_id (conv), event */
    PL_JOB_MEMBER_ADD,        /* in: conv, user (actor), peer. out: event (none if already a member) */
    PL_JOB_MEMBER_REMOVE,     /* in: conv, user (actor), peer. out: event  */
    PL_JOB_MEMBER_LEAVE,      /* in: conv, user. out: event                */
    PL_JOB_MESSAGE_SEND,      /* in: conv, user (sender), client_msg_id, body. out: event, dup */
    PL_JOB_RECEIPT,           /* in: conv, user, delivered, read (seqs; 0 = no change).
                               * Cursors only move up; values above last_seq are clamped;
                               * read implies delivered. out: out_delivered, out_read,
                               * out_unread, created = 1 if a cursor moved. */
    PL_JOB_LAST_SEEN          /* in: user, expires (= last seen, ms). Only moves forward. */
} pl_job_op;

typedef struct pl_job pl_job;
typedef void (*pl_job_cb)(pl_job *job);

/* A job is allocated and owned by the caller until done() is called; done()
 * may free it (after pl_event_release(&job->event)). The input strings are
 * borrowed: they must stay valid until done() runs. */
struct pl_job {
    pl_job_op  op;
    /* inputs */
    int64_t    user;          /* acting user                               */
    int64_t    peer;          /* other user (direct, add, remove)          */
    int64_t    conv;          /* conversation (member ops, send)           */
    int64_t    id;            /* login id (rotate, revoke)                 */
    const char *username;
    const char *pwhash;
    const char *title;
    const char *client_msg_id;
    const char *body;
    size_t     body_len;
    const int64_t *members;   /* group create: other members (creator implied) */
    size_t     nmembers;
    uint8_t    hash[32];      /* login create/rotate: refresh hash (old on rotate) */
    uint8_t    hash2[32];     /* login rotate: new refresh hash            */
    int64_t    expires;
    int64_t    delivered;     /* receipt: delivered up to                  */
    int64_t    read;          /* receipt: read up to                       */
    /* outputs, valid in done() */
    int        result;        /* PL_STORE_OK or a PL_STORE_E*              */
    int64_t    out_id;        /* new user id / login id / conversation id  */
    int        created;       /* direct open: 1 if the conversation is new */
    int        dup;           /* send: 1 if client_msg_id was seen before  */
    int64_t    out_delivered; /* receipt: the user's cursors after the job */
    int64_t    out_read;
    int64_t    out_unread;    /* receipt: messages from others above out_read */
    int        has_event;     /* 1 if event below was appended to a log    */
    pl_event   event;         /* the appended (or, on dup, original) event */
    /* callback, run on the loop thread */
    pl_job_cb  done;
    void      *data;          /* caller's                                  */
    pl_job    *next;          /* queue link, owned by the store            */
};

/* ---- backend table ---------------------------------------------------- */

typedef struct pl_store_ops {
    const char *name;
    void (*submit)(pl_store *s, pl_job *job);
    int  (*user_by_name)(pl_store *s, const char *username, pl_user *out, int with_hash);
    int  (*user_by_id)(pl_store *s, int64_t id, pl_user *out);
    int  (*login_get)(pl_store *s, int64_t id, pl_login *out);
    /* conversations of user, most recently active first, without members;
     * *out is a malloc'd array the caller frees with pl_conv_list_free. */
    int  (*conv_list)(pl_store *s, int64_t user, pl_conv **out, size_t *n);
    /* one conversation as seen by user, with members; ENOTFOUND if user is
     * not a member. */
    int  (*conv_get)(pl_store *s, int64_t conv, int64_t user, pl_conv *out);
    /* user's role in conv, PL_ROLE_NONE if not a member. */
    int  (*member_role)(pl_store *s, int64_t conv, int64_t user);
    /* member user ids of conv; *out malloc'd. */
    int  (*members)(pl_store *s, int64_t conv, int64_t **out, size_t *n);
    /* events with after < seq < before (before <= 0: no upper bound), at most
     * limit (a larger limit is capped at PL_STORE_PAGE_MAX; limit < 1 is
     * EINVAL). If from_top, the highest such seqs are taken; events are
     * always returned in ascending seq. *out malloc'd (NULL when *n is 0),
     * release with pl_event_list_free. */
    int  (*events)(pl_store *s, int64_t conv, int64_t after, int64_t before,
                   int limit, int from_top, pl_event **out, size_t *n);
    /* runs done() for every completed job (loop thread). */
    void (*drain)(pl_store *s);
    /* stops accepting, finishes queued jobs, drains, closes, frees s. */
    /* 1 if users a and b are members of at least one common conversation. */
    int  (*shares)(pl_store *s, int64_t a, int64_t b);
    void (*close)(pl_store *s);
} pl_store_ops;

struct pl_store {
    const pl_store_ops *ops;
};

/* Opens the SQLite store under dir (created if missing; file parley.db), runs
 * migrations, starts the writer thread. notify wakes the loop when jobs
 * complete: the backend calls it from the writer thread after appending to
 * its done-queue, and the loop then calls pl_store_drain(); it may run until
 * pl_store_close() returns (close itself drains, without notify). node is the
 * snowflake node id. Returns 0 or PL_STORE_EUNAVAIL with *errmsg set (static). */
int  pl_store_sqlite_open(const char *dir, int node, void (*notify)(void *),
                          void *notify_arg, pl_store **out, const char **errmsg);

/* Fault hook for tests: the next n batch commits of s fail as if the disk
 * had failed (the batch is rolled back, its jobs complete with
 * PL_STORE_EUNAVAIL, and the store turns sticky-broken as on a real error). */
void pl_store_sqlite_fail_commits(pl_store *s, int n);

/* Runs done() for every completed job; call on the loop thread. */
void pl_store_drain(pl_store *s);

static inline void pl_store_submit(pl_store *s, pl_job *j) { s->ops->submit(s, j); }
static inline int  pl_store_user_by_name(pl_store *s, const char *u, pl_user *o, int h) { return s->ops->user_by_name(s, u, o, h); }
static inline int  pl_store_user_by_id(pl_store *s, int64_t id, pl_user *o) { return s->ops->user_by_id(s, id, o); }
static inline int  pl_store_login_get(pl_store *s, int64_t id, pl_login *o) { return s->ops->login_get(s, id, o); }
static inline int  pl_store_conv_list(pl_store *s, int64_t u, pl_conv **o, size_t *n) { return s->ops->conv_list(s, u, o, n); }
static inline int  pl_store_conv_get(pl_store *s, int64_t c, int64_t u, pl_conv *o) { return s->ops->conv_get(s, c, u, o); }
static inline int  pl_store_member_role(pl_store *s, int64_t c, int64_t u) { return s->ops->member_role(s, c, u); }
static inline int  pl_store_members(pl_store *s, int64_t c, int64_t **o, size_t *n) { return s->ops->members(s, c, o, n); }
static inline int  pl_store_shares(pl_store *s, int64_t a, int64_t b) { return s->ops->shares(s, a, b); }
static inline int  pl_store_events(pl_store *s, int64_t c, int64_t after, int64_t before, int limit, int top, pl_event **o, size_t *n) { return s->ops->events(s, c, after, before, limit, top, o, n); }

/* Stops the writer after finishing queued jobs, drains, closes, frees. */
void pl_store_close(pl_store **s);

void pl_conv_list_free(pl_conv *list, size_t n);
void pl_event_list_free(pl_event *list, size_t n);

#endif
