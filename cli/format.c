/* format.c — events as lines (see format.h). */
#include "format.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "core/utf8.h"

#define CONT "   "                          /* a body's continuation line starts so */

static int64_t int_of(json_t *o, const char *key) {
    json_t *v = json_object_get(o, key);
    return json_is_integer(v) ? (int64_t)json_integer_value(v) : 0;
}

static const char *str_of(json_t *o, const char *key) {
    return json_string_value(json_object_get(o, key));
}

/* 1 when code point cp (after prev, the code point before it as shown;
 * 0 at the start) is shown as U+FFFD: a control character, the line and
 * paragraph separators, or what core/utf8.c's pl_utf8_invisible counts as
 * showing nothing or moving text around (bidirectional marks, embeddings,
 * overrides and isolates, zero-width spaces, word joiners, BOM, soft
 * hyphen, Hangul fillers, tags, ...; the server refuses them in names),
 * plus the shorthand format controls U+1BCA0-U+1BCA3. Kept, as a message's
 * text needs them: Unicode spaces, the zero-width non-joiner and joiner,
 * variation selectors, and the tags of an emoji flag (after U+1F3F4 or
 * another tag). */
static int hidden(uint32_t cp, uint32_t prev) {
    if (cp >= 0xe0020 && cp <= 0xe007f) return !(prev == 0x1f3f4 || (prev >= 0xe0020 && prev <= 0xe007e));
    if (cp == 0x200c || cp == 0x200d || (cp >= 0xfe00 && cp <= 0xfe0f) || (cp >= 0xe0100 && cp <= 0xe01ef) ||
        (cp >= 0x180b && cp <= 0x180f && cp != 0x180e) ||
        cp == 0x2800 || (cp >= 0x13430 && cp <= 0x1343f))   /* braille art, hieroglyphs: names only refuse them */
        return 0;
    if (pl_utf8_control(cp) || cp == 0x2028 || cp == 0x2029 || (cp >= 0x1bca0 && cp <= 0x1bca3)) return 1;
    return pl_utf8_invisible(cp) && !pl_utf8_space_or_control(cp);
}

void pc_format_text(pl_sbuf *s, const char *t, size_t n, int one_line) {
    static const char repl[] = "\xef\xbf\xbd";       /* U+FFFD */
    uint32_t prev = 0;                                /* the code point before, as shown */
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)t[i];
        if (ch < 0x80) {
            if (ch == '\r' || ch == '\n') {
                if (ch == '\r' && i + 1 < n && t[i + 1] == '\n') i++;
                pl_sbuf_adds(s, one_line ? " " : "\n" CONT);
            } else if (ch == '\t') {
                pl_sbuf_addc(s, one_line ? ' ' : '\t');
            } else if (ch < 0x20 || ch == 0x7f) {
                pl_sbuf_adds(s, repl);
            } else {
                pl_sbuf_addc(s, (char)ch);
            }
            prev = ch;
            continue;
        }
        /* a multi-byte sequence (JSON text is valid UTF-8; anything else
         * is copied a byte at a time, as before) */
        size_t len = ch >= 0xf0 ? 4 : ch >= 0xe0 ? 3 : ch >= 0xc0 ? 2 : 1;
        uint32_t cp = len == 2 ? ch & 0x1fu : len == 3 ? ch & 0x0fu : ch & 0x07u;
        for (size_t k = 1; k < len; k++) {
            if (i + k >= n || ((unsigned char)t[i + k] & 0xc0) != 0x80) {
                len = 1;
                break;
            }
            cp = cp << 6 | ((unsigned char)t[i + k] & 0x3fu);
        }
        if (len == 1) {
            pl_sbuf_addc(s, (char)ch);
            prev = 0;
            continue;
        }
        if (hidden(cp, prev)) {
            pl_sbuf_adds(s, repl);
            prev = 0xfffd;
        } else {
            pl_sbuf_add(s, t + i, len);
            prev = cp;
        }
        i += len - 1;
    }
}

static void add_name(pl_sbuf *s, pc_names *names, int64_t conv, int64_t user) {
    const char *n = names ? pc_names_get(names, conv, user) : NULL;
    if (n) pc_format_text(s, n, strlen(n), 1);
    else pl_sbuf_printf(s, "user %lld", (long long)user);
}

/* "; dave is now an admin" after a departure that promoted dave (the
 * last admin left: data.new_admin). */
static void add_new_admin(pl_sbuf *s, pc_names *names, int64_t conv, int64_t new_admin) {
    if (!new_admin) return;
    pl_sbuf_adds(s, "; ");
    add_name(s, names, conv, new_admin);
    pl_sbuf_adds(s, " is now an admin");
}

static void add_str(pl_sbuf *s, json_t *v, int one_line) {
    const char *t = json_string_value(v);
    if (t) pc_format_text(s, t, json_string_length(v), one_line);
}

/* A message: "alice: [re #58] text (edited) [image: cat.png]". */
static void message_text(pl_sbuf *s, json_t *ev, json_t *data, int one_line) {
    if (json_is_true(json_object_get(ev, "deleted"))) {
        pl_sbuf_adds(s, "(deleted)");
        return;
    }
    int64_t reply = int_of(data, "reply_to");
    if (reply) pl_sbuf_printf(s, "[re #%lld] ", (long long)reply);
    if (json_object_get(data, "ciphertext")) {
        pl_sbuf_adds(s, "(encrypted)");
        return;
    }
    json_t *body = json_object_get(ev, "body");
    add_str(s, body, one_line);
    if (json_object_get(ev, "edited_ts")) pl_sbuf_adds(s, " (edited)");
    json_t *atts = json_object_get(data, "attachments");
    size_t i;
    json_t *a;
    json_array_foreach(atts, i, a) {
        if (i > 0 || json_string_length(body)) pl_sbuf_addc(s, ' ');
        const char *kind = str_of(a, "kind");
        pl_sbuf_printf(s, "[%s: ", kind ? kind : "file");
        add_str(s, json_object_get(a, "name"), 1);
        pl_sbuf_addc(s, ']');
    }
}

/* Everything after the time. */
static void event_text(pl_sbuf *s, json_t *ev, pc_names *names, int one_line) {
    int64_t conv = int_of(ev, "conversation"), sender = int_of(ev, "sender");
    const char *kind = str_of(ev, "kind");
    json_t *data = json_object_get(ev, "data");
    int64_t target = int_of(data, "target"), user = int_of(data, "user");
    const char *op = str_of(data, "op");
    if (!kind) kind = "?";
    if (strcmp(kind, "message") == 0) {
        add_name(s, names, conv, sender);
        pl_sbuf_adds(s, ": ");
        message_text(s, ev, data, one_line);
        return;
    }
    pl_sbuf_adds(s, "* ");
    int64_t new_admin = int_of(data, "new_admin");    /* the last admin left */
    if (strcmp(kind, "member_left") == 0) {
        add_name(s, names, conv, user ? user : sender);
        pl_sbuf_adds(s, " left");
        add_new_admin(s, names, conv, new_admin);
        return;
    }
    if (strcmp(kind, "e2ee") == 0 && op && strcmp(op, "devices") == 0) {
        add_name(s, names, conv, user);
        pl_sbuf_adds(s, "'s devices changed");
        return;
    }
    add_name(s, names, conv, sender);
    if (strcmp(kind, "edit") == 0) {
        pl_sbuf_printf(s, " edited #%lld", (long long)target);
        if (json_object_get(ev, "body")) {
            pl_sbuf_adds(s, ": ");
            add_str(s, json_object_get(ev, "body"), one_line);
        }
    } else if (strcmp(kind, "delete") == 0) {
        pl_sbuf_printf(s, " deleted #%lld", (long long)target);
    } else if (strcmp(kind, "reaction") == 0) {
        int removed = op && strcmp(op, "remove") == 0;
        pl_sbuf_adds(s, removed ? " removed " : " reacted ");
        add_str(s, json_object_get(data, "emoji"), 1);
        pl_sbuf_printf(s, removed ? " from #%lld" : " to #%lld", (long long)target);
    } else if (strcmp(kind, "pin") == 0) {
        pl_sbuf_printf(s, op && strcmp(op, "unpin") == 0 ? " unpinned #%lld" : " pinned #%lld",
                       (long long)target);
    } else if (strcmp(kind, "member_added") == 0 && user == sender) {
        pl_sbuf_adds(s, " joined");                  /* a public channel, by itself */
    } else if (strcmp(kind, "member_removed") == 0 && user == sender) {
        pl_sbuf_adds(s, " left");                    /* its workspace, or an admin naming itself */
        add_new_admin(s, names, conv, new_admin);
    } else if (strcmp(kind, "member_added") == 0 || strcmp(kind, "member_removed") == 0) {
        pl_sbuf_adds(s, kind[7] == 'a' ? " added " : " removed ");
        add_name(s, names, conv, user);
    } else if (strcmp(kind, "member_role") == 0) {
        const char *role = str_of(data, "role");
        pl_sbuf_adds(s, " made ");
        add_name(s, names, conv, user);
        pl_sbuf_adds(s, role && strcmp(role, "admin") == 0 ? " an admin" : " a member");
    } else if (strcmp(kind, "created") == 0) {
        json_t *title = json_object_get(data, "title");
        const char *ckind = str_of(data, "kind");
        if (json_is_string(title) && ckind && strcmp(ckind, "channel") == 0) {
            pl_sbuf_adds(s, " created #");
            add_str(s, title, 1);
        } else if (json_is_string(title)) {
            pl_sbuf_adds(s, " created \"");
            add_str(s, title, 1);
            pl_sbuf_addc(s, '"');
        } else {
            pl_sbuf_adds(s, " created a direct conversation");
        }
    } else if (strcmp(kind, "retention") == 0) {
        int64_t secs = int_of(data, "seconds");
        if (secs > 0) {
            pl_sbuf_adds(s, " set messages to disappear after ");
            pc_format_duration(s, secs);
        } else {
            pl_sbuf_adds(s, " turned off disappearing messages");
        }
    } else if (strcmp(kind, "e2ee") == 0) {
        pl_sbuf_adds(s, " turned on end-to-end encryption");
    } else {
        pl_sbuf_addc(s, ' ');
        pc_format_text(s, kind, strlen(kind), 1);
    }
}

void pc_format_duration(pl_sbuf *s, int64_t seconds) {
    static const struct { int64_t len; const char *name; } units[] = {
        {31536000, "year"}, {86400, "day"}, {3600, "hour"}, {60, "minute"},
    };
    const char *name = "second";
    int64_t n = seconds;
    for (size_t i = 0; i < sizeof units / sizeof units[0] && seconds > 0; i++) {
        if (seconds % units[i].len == 0) {
            name = units[i].name;
            n = seconds / units[i].len;
            break;
        }
    }
    pl_sbuf_printf(s, "%lld %s%s", (long long)n, name, n == 1 ? "" : "s");
}

void pc_format_event(pl_sbuf *s, json_t *ev, pc_names *names) {
    time_t t = (time_t)(int_of(ev, "ts") / 1000);
    struct tm tm;
    char hms[16] = "--:--:--";
    if (localtime_r(&t, &tm)) strftime(hms, sizeof hms, "%H:%M:%S", &tm);
    pl_sbuf_printf(s, "%lld#%lld %s ", (long long)int_of(ev, "conversation"), (long long)int_of(ev, "seq"), hms);
    event_text(s, ev, names, 0);
}

void pc_format_preview(pl_sbuf *s, json_t *ev, pc_names *names, size_t max) {
    size_t start = s->len;
    event_text(s, ev, names, 1);
    /* cut at a character boundary after max characters */
    size_t chars = 0;
    for (size_t i = start; i < s->len; i++) {
        if (((unsigned char)s->p[i] & 0xc0) != 0x80 && ++chars > max) {
            s->len = i;
            pl_sbuf_adds(s, "\xe2\x80\xa6");          /* … */
            break;
        }
    }
}

void pc_format_flush(pl_sbuf *s) {
    if (s->len) fwrite(s->p, 1, s->len, stdout);
    fputc('\n', stdout);
    s->len = 0;
}
