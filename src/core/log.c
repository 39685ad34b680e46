/* log.c — JSON-lines logger and the line limiter (see log.h). */
#include "log.h"
#include "clock.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int pl_log_level = PL_LOG_INFO;

static const char *names[] = {"debug", "info", "warn", "error"};

int pl_log_parse_level(const char *s) {
    for (int i = 0; i < 4; i++)
        if (strcmp(s, names[i]) == 0) return i;
    return -1;
}

void pl_log_write(int level, uint64_t conn, const char *msg, const char *fmt, ...) {
    char fields[512];
    fields[0] = '\0';
    if (fmt && *fmt) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(fields, sizeof fields, fmt, ap);
        va_end(ap);
    }
    if (level < 0) level = 0;
    if (level > 3) level = 3;
    char line[768];
    int n;
    if (conn)
        n = snprintf(line, sizeof line, "{\"ts\":%lld,\"level\":\"%s\",\"conn\":%llu,\"msg\":\"%s\"%s%s}\n",
                     (long long)pl_now_ms(), names[level], (unsigned long long)conn, msg,
                     fields[0] ? "," : "", fields);
    else
        n = snprintf(line, sizeof line, "{\"ts\":%lld,\"level\":\"%s\",\"msg\":\"%s\"%s%s}\n",
                     (long long)pl_now_ms(), names[level], msg, fields[0] ? "," : "", fields);
    if (n > (int)sizeof line - 1) { n = (int)sizeof line - 1; line[n - 1] = '\n'; }
    fwrite(line, 1, (size_t)n, stderr);
}

int pl_log_due(pl_log_limit *l, int64_t every_ms, int64_t now, int64_t *held) {
    if (l->at && now - l->at < every_ms) {
        l->held++;
        return 0;
    }
    l->at = now;
    if (held) *held = l->held;
    l->held = 0;
    return 1;
}

void pl_log_hold(pl_log_limit *l, int64_t n) { l->held += n; }

int pl_log_flush(pl_log_limit *l, int64_t every_ms, int64_t now, int64_t *held) {
    if (l->held <= 0 || (l->at && now - l->at < every_ms)) return 0;
    l->at = now;
    if (held) *held = l->held;
    l->held = 0;
    return 1;
}
