/* content.c — the content filter on the send path (filter.h; brief P12;
 * docs/protocol.md "Content filter").
 *
 * Owns: the server's active rules (--content-filter, read at start and
 * again on SIGHUP), the check of a send's or edit's text with its metrics,
 * and the report a `flag` rule files once the message is committed. The
 * WebSocket (send.c, actions.c) and REST (app/api_conv.c) paths call it
 * before they submit, so a blocked message never reaches the store and a
 * masked one is stored masked. Costs one NULL test when no file is set.
 */
#include <stdio.h>
#include <stdlib.h>

#include "../core/alloc.h"
#include "../core/clock.h"
#include "../core/log.h"
#include "../core/metrics.h"
#include "chat_int.h"

static pl_filter *active;                 /* NULL: no filter */

int pl_chat_filter_load(const char *path, char *err, size_t errlen) {
    pl_filter *f = NULL;
    if (path && path[0] && !(f = pl_filter_load(path, err, errlen))) return -1;
    pl_filter_free(active);
    active = f;
    if (f) pl_log(PL_LOG_INFO, 0, "content filter loaded", "\"rules\":%zu", pl_filter_rules(f));
    return 0;
}

void pl_chat_filter_free(void) {
    pl_filter_free(active);
    active = NULL;
}

/* A regex that gave up: logged at most once a minute per rule line. */
static void warn_limited(int line) {
    static struct { int line; int64_t at; } seen[64];
    int64_t now = pl_mono_ms();
    size_t i = (size_t)line % 64;
    if (seen[i].line == line && now - seen[i].at < 60000) return;
    seen[i].line = line;
    seen[i].at = now;
    pl_log(PL_LOG_WARN, 0, "content filter regex gave up at its match limit: counted as no match",
           "\"line\":%d", line);
}

int pl_chat_filter(pl_job *j, char **masked, int *flag_line) {
    *flag_line = 0;
    if (!active) return 0;
    pl_filter_hit h;
    int a = pl_filter_check(active, j->body, j->body_len, &h);
    if (h.limited) warn_limited(h.limited);
    if (a & PL_FILTER_BLOCK) {
        pl_count(&pl_m_filter_blocked, 1);
        return -1;
    }
    if (a & PL_FILTER_FLAG) {
        pl_count(&pl_m_filter_flagged, 1);
        *flag_line = h.line;
    }
    if (h.masked) {                           /* stored as the filter left it */
        pl_count(&pl_m_filter_masked, 1);
        j->body = *masked = h.masked;         /* taken over */
        j->body_len = h.masked_len;
    }
    return 0;
}

static void report_done(pl_job *j) {
    if (j->result != PL_STORE_OK)           /* ids only: logs never hold text */
        pl_log(PL_LOG_WARN, 0, "content filter report not filed",
               "\"conversation\":%lld,\"seq\":%lld,\"result\":%d", (long long)j->conv, (long long)j->seq, j->result);
    pl_job_release(j);
    free(j);
}

void pl_chat_filter_report(int64_t sender, int64_t conv, int64_t seq, int line) {
    if (!C.store || C.stopping) return;
    static const char reason[] = "content filter";
    pl_job *j = pl_calloc(1, sizeof *j + PL_REPORT_NOTE_MAX);
    char *note = (char *)(j + 1);
    int n = snprintf(note, PL_REPORT_NOTE_MAX, "rule at line %d of the content filter", line);
    j->op = PL_JOB_REPORT;
    j->flags = PL_JOB_FILTER;
    j->user = sender;
    j->conv = conv;
    j->seq = seq;
    j->title = reason;
    j->body = note;
    j->body_len = (size_t)n;
    j->done = report_done;
    pl_store_submit(C.store, j);
}
