/* cmd_report.c — the moderation commands: report, reports, resolve
 * (docs/protocol.md "Reports (moderation)").
 *
 *   report CONV SEQ REASON [NOTE...]   a member reports another's message
 *   reports [CONV] [--all]             a conversation's reports (its admins,
 *                                      server admins), or every report
 *                                      (server admins only)
 *   resolve REPORT                     marks a report done
 *
 * Owns: the human line of a report and paging through a report list (pages
 * of PAGE_MAX, newest first, `before` the last id of the previous page).
 * Does not own: who may see or resolve what: the server decides and its
 * refusal is printed as it comes. The reasons are protocol.md's closed list,
 * checked here too so that a misspelt one is a usage error (exit 2) like any
 * other malformed argument; the server checks them again.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "core/alloc.h"
#include "core/buf.h"
#include "format.h"

#define PAGE_MAX   200            /* the server's largest page of reports */
#define TEXT_CHARS 120            /* a reported text, cut (--json has all of it) */

static int64_t int_of(json_t *o, const char *key) { return json_integer_value(json_object_get(o, key)); }

static const char *const reasons[] = {"spam", "abuse", "harassment", "illegal", "other"};

static int reason_ok(const char *r) {
    for (size_t i = 0; i < sizeof reasons / sizeof reasons[0]; i++)
        if (strcmp(r, reasons[i]) == 0) return 1;
    return 0;
}

/* ---- report --------------------------------------------------------------------- */

int pc_cmd_report(pc_client *c, int argc, char **argv) {
    char **pos = pl_calloc((size_t)argc, sizeof *pos);
    int npos, rc = pc_args("report", argc, argv, NULL, 0, pos, &npos);
    int64_t conv = 0, seq = 0;
    char *note = NULL;
    if (rc == 0 && npos < 3) rc = pc_usage_error("report", "give CONV, SEQ and REASON (and optionally a NOTE)");
    if (rc == 0) rc = pc_num("report", "SEQ", pos[1], 1, &seq);
    if (rc == 0 && !reason_ok(pos[2]))
        rc = pc_usage_error("report", "REASON must be spam, abuse, harassment, illegal or other");
    if (rc == 0 && npos > 3) {
        note = pc_join(pos + 3, npos - 3);
        if (!pc_utf8(note, strlen(note))) rc = pc_usage_error("report", "the note is not valid UTF-8");
    }
    if (rc == 0) rc = pc_conv_arg(c, "report", pos[0], &conv);
    const char *reason = rc == 0 ? pos[2] : NULL;
    free(pos);
    if (rc) {
        free(note);
        return rc;
    }
    char path[128];
    snprintf(path, sizeof path, "/api/v1/conversations/%lld/messages/%lld/report", (long long)conv, (long long)seq);
    json_t *b = json_pack("{s:s}", "reason", reason), *o;
    if (note && *note) json_object_set_new(b, "note", json_string(note));
    free(note);
    rc = pc_call(c, "report", "POST", path, b, &o);
    json_decref(b);
    if (rc == 0 &&
        ((rc = pc_want("report", o, "id", JSON_INTEGER)) || (rc = pc_want("report", o, "created", JSON_TRUE))))
        json_decref(o);
    if (rc) return rc;
    if (c->json) pc_print_json(o);
    else printf("%s %lld#%lld (report %lld)\n",
                json_is_false(json_object_get(o, "created")) ? "already reported" : "reported",
                (long long)conv, (long long)seq, (long long)int_of(o, "id"));
    json_decref(o);
    return 0;
}

/* ---- reports ---------------------------------------------------------------------- */

/* One report, one line:
 *   7  12#58  2024-11-23 15:04  open  spam  by carol  bob: buy cheap pills  note: again */
static void report_line(pl_sbuf *s, json_t *r) {
    time_t t = (time_t)(int_of(r, "created") / 1000);
    struct tm tm;
    char when[32] = "----------- --:--";
    if (localtime_r(&t, &tm)) strftime(when, sizeof when, "%Y-%m-%d %H:%M", &tm);
    pl_sbuf_printf(s, "%lld  %lld#%lld  %s  %s  ", (long long)int_of(r, "id"), (long long)int_of(r, "conversation"),
                   (long long)int_of(r, "seq"), when, json_is_integer(json_object_get(r, "resolved")) ? "resolved" : "open");
    const char *reason = pc_jstr(r, "reason");
    pc_format_text(s, reason, strlen(reason), 1);
    json_t *by = json_object_get(r, "reporter");
    const char *reporter = json_is_object(by) ? pc_jstr(by, "username") : "(filter)";
    const char *sender = pc_jstr(json_object_get(r, "sender"), "username");
    pl_sbuf_adds(s, "  by ");
    pc_format_text(s, reporter, strlen(reporter), 1);
    pl_sbuf_adds(s, "  ");
    pc_format_text(s, sender, strlen(sender), 1);
    pl_sbuf_adds(s, ": ");
    json_t *body = json_object_get(json_object_get(r, "message"), "body");
    if (json_is_string(body)) {
        size_t start = s->len, chars = 0;
        pc_format_text(s, json_string_value(body), json_string_length(body), 1);
        for (size_t i = start; i < s->len; i++) {        /* cut at a character boundary */
            if (((unsigned char)s->p[i] & 0xc0) != 0x80 && ++chars > TEXT_CHARS) {
                s->len = i;
                pl_sbuf_adds(s, "\xe2\x80\xa6");              /* … */
                break;
            }
        }
    } else {
        pl_sbuf_adds(s, "(no text)");                     /* attachments only, or ciphertext */
    }
    json_t *note = json_object_get(r, "note");
    if (json_is_string(note)) {
        pl_sbuf_adds(s, "  note: ");
        pc_format_text(s, json_string_value(note), json_string_length(note), 1);
    }
}

int pc_cmd_reports(pc_client *c, int argc, char **argv) {
    pc_opt o[] = {{"--all", 0, NULL, 0}};
    char **pos = pl_calloc((size_t)argc, sizeof *pos);
    int npos, rc = pc_args("reports", argc, argv, o, 1, pos, &npos);
    int64_t conv = 0;
    if (rc == 0 && npos > 1) rc = pc_usage_error("reports", "give at most one CONV");
    if (rc == 0 && npos == 1) rc = pc_conv_arg(c, "reports", pos[0], &conv);
    free(pos);
    if (rc) return rc;
    pl_sbuf line;
    pl_sbuf_init(&line);
    int64_t before = 0;
    for (;;) {
        char path[160];
        int n = conv ? snprintf(path, sizeof path, "/api/v1/conversations/%lld/reports?limit=%d", (long long)conv, PAGE_MAX)
                     : snprintf(path, sizeof path, "/api/v1/reports?limit=%d", PAGE_MAX);
        if (o[0].set) n += snprintf(path + n, sizeof path - (size_t)n, "&resolved=1");
        if (before) snprintf(path + n, sizeof path - (size_t)n, "&before=%lld", (long long)before);
        json_t *page;
        if ((rc = pc_call(c, "reports", "GET", path, NULL, &page))) break;
        if ((rc = pc_want("reports", page, "reports", JSON_ARRAY))) {
            json_decref(page);
            break;
        }
        json_t *reports = json_object_get(page, "reports"), *r;
        size_t i;
        json_array_foreach(reports, i, r) {
            if (c->json) {
                pc_print_json(r);
            } else {
                report_line(&line, r);
                pc_format_flush(&line);
            }
        }
        int64_t next = int_of(page, "next_before");
        int more = json_is_true(json_object_get(page, "has_more")) && json_array_size(reports) > 0 &&
                   next > 0 && (before == 0 || next < before);     /* always older: never loops */
        json_decref(page);
        if (!more) break;
        before = next;
    }
    pl_sbuf_release(&line);
    return rc;
}

/* ---- resolve ------------------------------------------------------------------------ */

int pc_cmd_resolve(pc_client *c, int argc, char **argv) {
    char **pos = pl_calloc((size_t)argc, sizeof *pos);
    int npos, rc = pc_args("resolve", argc, argv, NULL, 0, pos, &npos);
    int64_t id = 0;
    if (rc == 0 && npos != 1) rc = pc_usage_error("resolve", "give one REPORT (its id: parley reports lists them)");
    if (rc == 0) rc = pc_num("resolve", "REPORT", pos[0], 1, &id);
    free(pos);
    if (rc) return rc;
    char path[96];
    snprintf(path, sizeof path, "/api/v1/reports/%lld/resolve", (long long)id);
    json_t *o;
    if ((rc = pc_call(c, "resolve", "POST", path, NULL, &o))) return rc;
    if (c->json) pc_print_json(o);
    else if (json_is_false(json_object_get(o, "changed"))) printf("report %lld was already resolved\n", (long long)id);
    else printf("resolved report %lld\n", (long long)id);
    json_decref(o);
    return 0;
}
