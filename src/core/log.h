/* log.h — structured JSON-lines logging to stderr.
 *
 * Owns: the log format and level. pl_log checks the level before formatting.
 * Every line is one JSON object: {"ts":..,"level":..,"conn":..,"msg":..,...}.
 * Never log message text, tokens or passwords: callers pass only ids,
 * counts and fixed strings. fields, if not NULL, is pre-formatted JSON members
 * ("\"k\":1,\"j\":\"x\"") appended to the object.
 *
 * Also owns pl_log_limit, the "at most one line per interval" limiter that
 * every line which could come with each request, event or retry goes
 * through, so that a flood of them cannot flood the log.
 */
#ifndef PL_LOG_H
#define PL_LOG_H

#include <stdint.h>

enum { PL_LOG_DEBUG = 0, PL_LOG_INFO = 1, PL_LOG_WARN = 2, PL_LOG_ERROR = 3 };

extern int pl_log_level;

/* Parses "debug|info|warn|error"; returns -1 if unknown. */
int  pl_log_parse_level(const char *s);
void pl_log_write(int level, uint64_t conn, const char *msg, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* pl_log(level, conn_id (0 if none), "message", "json fields fmt", args...) */
#define pl_log(level, conn, msg, ...) \
    do { if ((level) >= pl_log_level) pl_log_write((level), (conn), (msg), __VA_ARGS__); } while (0)

/* A limiter: one per kind of line and per thread that writes it (it keeps
 * no global state and takes no lock). Zeroed, a line may be written now;
 * zeroing it again (= (pl_log_limit){0}) lets the next one through. */
typedef struct pl_log_limit {
    int64_t at;                  /* mono ms of the last line written, 0 none;
                                  * a caller that said the same by other means
                                  * may set it to hold the next one back    */
    int64_t held;                /* held back since that line (calls that got
                                  * 0, plus what pl_log_hold added)          */
} pl_log_limit;

/* 1 if a line of l's kind may be written at now (mono ms, > 0: pl_mono_ms()
 * always is), that is, none was in the last every_ms (now - at >= every_ms);
 * then *held (if not NULL) gets what was held back since the last line, and
 * the count restarts. 0: this one is held back, and counted. */
int  pl_log_due(pl_log_limit *l, int64_t every_ms, int64_t now, int64_t *held);
/* Adds n (>= 0) to what l holds back without asking for a line, for a kind
 * whose events come in bulk (n connections shed at once); pl_log_flush
 * writes them. */
void pl_log_hold(pl_log_limit *l, int64_t n);
/* For a kind counted by pl_log_hold: 1 if something is held back and a line
 * may be written at now (as for pl_log_due); then *held (if not NULL) gets
 * the count, which restarts. 0 otherwise, counting nothing: call it after
 * each pl_log_hold and again later (a timer) to say the last of a burst. */
int  pl_log_flush(pl_log_limit *l, int64_t every_ms, int64_t now, int64_t *held);

#endif
