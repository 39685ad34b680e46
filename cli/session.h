/* session.h — the `parley` session file: where it is, reading it, writing it
 * atomically, removing it, and the lock that serialises token refreshes
 * between `parley` processes sharing it.
 *
 * Owns: the file's format (JSON: server, user {id, username}, access_token,
 * refresh_token) and its permissions (file 0600, a directory it creates
 * 0700). Does not own: when tokens are refreshed (http.c) or which server a
 * command talks to (main.c).
 *
 * Path: $PARLEY_SESSION, else $XDG_CONFIG_HOME/parley/session.json, else
 * ~/.config/parley/session.json. Passwords are never written anywhere.
 */
#ifndef PC_SESSION_H
#define PC_SESSION_H

#include <stdint.h>

typedef struct pc_session {
    char   *server;          /* base URL the tokens belong to (owned)        */
    int64_t user_id;         /* 0 when the file had none                     */
    char   *username;        /* owned, or NULL                               */
    char   *access_token;    /* owned, or NULL                               */
    char   *refresh_token;   /* owned, or NULL                               */
    char   *cacert;          /* the --cacert the login used, absolute (owned), or NULL */
} pc_session;

/* The session file's path: a new string (free() it). */
char *pc_session_path(void);

/* Reads path into *s (zeroed first). 0: loaded; 1: there is no file; -1:
 * unreadable or not a session (a line on stderr says why). *s holds only
 * what was loaded; release it in every case. */
int  pc_session_load(const char *path, pc_session *s);

/* Writes s to path atomically (a temporary file in the same directory,
 * fsync, rename), mode 0600; creates the missing directory (0700). 0, or -1
 * after a line on stderr. */
int  pc_session_save(const char *path, const pc_session *s);

/* Removes the file; 0 also when it did not exist. */
int  pc_session_remove(const char *path);

void pc_session_release(pc_session *s);

/* Takes an exclusive lock shared by every `parley` process using path (a
 * `<path>.lock` file beside it, 0600): held around a token refresh so two
 * processes never rotate the same refresh token. Returns a descriptor for
 * pc_session_unlock, or -1 (no lock: the caller goes on without one). */
int  pc_session_lock(const char *path);
void pc_session_unlock(int fd);

#endif
