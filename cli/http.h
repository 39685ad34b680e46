/* http.h — how `parley` talks to the server: one client (libcurl handles,
 * the server's URL, the credentials), REST requests with JSON bodies, the
 * token refresh, error lines and exit statuses, and the raw event-stream
 * request that tail.c reads.
 *
 * Owns: libcurl (every curl_* call of the program is in http.c), the
 * session's tokens while the program runs, and the rule that a 401 is
 * answered by one refresh and one retry. Does not own: the session file's
 * format (session.c), the SSE framing (sse.c), what a command prints.
 *
 * Exit statuses (docs in README): 0 success, 1 the server refused (4xx, or
 * not logged in), 2 bad usage, 3 the server could not be reached, answered
 * 5xx, or answered 2xx with something that is not the API's answer.
 */
#ifndef PC_HTTP_H
#define PC_HTTP_H

#include <curl/curl.h>
#include <jansson.h>
#include <stddef.h>

#include "core/buf.h"
#include "core/version.h"
#include "session.h"

#define PC_VERSION PL_VERSION

enum { PC_EXIT_OK = 0, PC_EXIT_REFUSED = 1, PC_EXIT_USAGE = 2, PC_EXIT_DOWN = 3 };

typedef struct pc_client {
    CURL       *curl;            /* REST requests (keeps its connection)      */
    CURL       *stream;          /* the event stream (tail), made on first use */
    char       *server;          /* base URL, no trailing '/' (owned)         */
    const char *cacert;          /* CA file for https, or NULL (borrowed, or
                                  * cacert_own: the session file's)          */
    char       *cacert_own;
    int         json;            /* --json: print the server's objects        */
    const char *env_token;       /* $PARLEY_TOKEN: used as is, never saved    */
    char       *session_path;    /* owned                                     */
    pc_session  sess;            /* the file's contents (see has_session)     */
    int         has_session;     /* sess holds credentials for `server`       */
    int         switched;        /* the session file was logged in to another
                                  * user while this ran (pc_refresh saw it)   */
    char       *other_server;    /* a session for another server, or NULL     */
} pc_client;

typedef struct pc_resp {
    long    status;              /* HTTP status; 0: no answer (see err)       */
    json_t *body;                /* the parsed JSON body, or NULL (owned)     */
    char   *text;                /* the raw body, NUL-terminated (owned)      */
    size_t  len;
    long    retry_after;         /* Retry-After in seconds, or -1             */
    char    err[CURL_ERROR_SIZE];/* the network error when status is 0        */
} pc_resp;

/* Resolves the server (server_opt, else $PARLEY_SERVER, else the session's,
 * else http://127.0.0.1:8080), loads the session file and $PARLEY_TOKEN.
 * server_opt and cacert are borrowed for the client's lifetime. Returns 0,
 * or an exit status after a line on stderr. Release in every case. */
int  pc_client_init(pc_client *c, const char *server_opt, const char *cacert, int json);
void pc_client_release(pc_client *c);

/* The access token requests carry, or NULL when not logged in. */
const char *pc_token(const pc_client *c);

/* Replaces the session with a new login's answer (register, login, refresh:
 * {"user": {...}, "access_token", "refresh_token"}, borrowed) and saves it.
 * 0, or -1 after a line on stderr. */
int  pc_adopt_login(pc_client *c, json_t *answer);

/* One request: method, path (from "/api/v1/..."), an optional body (len
 * bytes of JSON, borrowed). With auth (PC_AUTH), it carries the access
 * token, and a 401 is answered by pc_refresh and one retry; with
 * PC_AUTH_ONCE it carries the token but a 401 is the answer (a request whose
 * 401 means something else: DELETE /me's wrong password). Fills *r
 * (release it). */
enum { PC_AUTH = 1, PC_AUTH_ONCE = 2 };
void pc_request_raw(pc_client *c, const char *method, const char *path, const char *body,
                    size_t len, int auth, pc_resp *r);
/* The same with a jansson body (borrowed; NULL for none). */
void pc_request(pc_client *c, const char *method, const char *path, json_t *body, int auth, pc_resp *r);
void pc_resp_release(pc_resp *r);

/* Prints `parley: what: <status> <code>: <message>` (or the network error)
 * for a failed response and returns its exit status (1 or 3). */
int  pc_fail(const char *what, const pc_resp *r);
/* The same with hint appended to the line (NULL: none). */
int  pc_fail_hint(const char *what, const pc_resp *r, const char *hint);
#define PC_LOGIN_AGAIN " (log in again: parley login USERNAME)"
/* What a refused request (401) should add: PC_LOGIN_AGAIN, saying why when
 * the session file now holds another user's login; NULL with PARLEY_TOKEN
 * (no login of ours to redo). */
const char *pc_login_hint(const pc_client *c);
/* The exit status of a response: 0 for 2xx, 1 for other 1xx-4xx, 3 for 5xx
 * and no answer. */
int  pc_exit_of(const pc_resp *r);

/* An authenticated request that must succeed: 0 with *out the body (a new
 * reference; NULL for an empty body), or the exit status after the error
 * line (also "not logged in"). body is borrowed. */
/* "not logged in" (to this server, when the session is for another) on
 * stderr; PC_EXIT_REFUSED. */
int  pc_not_logged_in(const pc_client *c, const char *what);
int  pc_call(pc_client *c, const char *what, const char *method, const char *path, json_t *body,
             json_t **out);

/* 1 when a 2xx answer is the API's (a JSON object; no body only for a
 * 204), else 0 after `parley: what: the server's answer (HTTP 200) is not
 * the API's JSON: ...` on stderr (exit status PC_EXIT_DOWN). pc_call checks
 * it. */
int  pc_answer_ok(const char *what, const pc_resp *r);
/* 0 when o[key] is of that type (JSON_TRUE: a boolean), else
 * PC_EXIT_DOWN after `parley: what: the server's answer is not the API's:
 * no "key"` on stderr: what a command prints must be there. */
int  pc_want(const char *what, json_t *o, const char *key, json_type type);

/* After a 401 with access token `failed`: takes the session lock, adopts
 * the tokens another process saved when they differ from `failed`
 * (*adopted = 1: they may have expired as well), else POSTs /auth/refresh
 * and saves the rotated pair before anything else. 0: retry with
 * pc_token(); 1: no way to refresh (no refresh token, $PARLEY_TOKEN, logged
 * out, or the server refused it: *r holds its answer when r is not NULL);
 * 3: the server could not be reached (also in *r). */
int  pc_refresh(pc_client *c, const char *failed, int *adopted, pc_resp *r);

/* The event stream: GET path with Accept: text/event-stream, the access
 * token and, when last_id is not NULL, Last-Event-ID. While the answer is
 * 200, on_data gets the body as it arrives (returning 0 stops the transfer
 * at once); any other answer is collected in *r. Returns when the stream
 * ends: r->status, r->err (the network error, empty for a clean end or a
 * stop by on_data) are set. A stream silent for 90 s (the server sends a
 * heartbeat every 15 s by default) counts as dropped. */
void pc_stream(pc_client *c, const char *path, const char *last_id,
               int (*on_data)(const char *p, size_t n, void *ud), void *ud, pc_resp *r);

/* Appends text and then raw path-escaped (a username in a URL, search
 * words) to path. */
void pc_path_add(pc_client *c, pl_sbuf *path, const char *text, const char *raw);

/* Prints o on stdout as one compact JSON line. */
void pc_print_json(json_t *o);

#endif
