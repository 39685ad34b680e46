/* log.h — structured JSON-lines logging to stderr.
 *
 * Owns: the log format and level. pl_log checks the level before formatting.
 * Every line is one JSON object: {"ts":..,"level":..,"conn":..,"msg":..,...}.
 * Never log message text, tokens or passwords: callers pass only ids,
 * counts and fixed strings. fields, if not NULL, is pre-formatted JSON members
 * ("\"k\":1,\"j\":\"x\"") appended to the object.
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

#endif
