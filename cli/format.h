/* format.h — the human form of events, one line each (history, tail,
 * search, the conversation list's previews):
 *
 *     12#58 15:04:05 alice: hello
 *     12#59 15:04:07 * alice edited #58: new text
 *
 * Owns: the wording of each event kind, local HH:MM:SS times, and making
 * server text safe for a terminal (control characters, and the invisible
 * format characters that can reorder or hide text: bidirectional controls,
 * U+2028/U+2029, zero-width spaces ..., shown as U+FFFD; a body's line
 * breaks become indented continuation lines, so every line that starts
 * with a digit starts an event). Does not own: JSON output
 * (--json prints the server's objects untouched) or names (names.c).
 */
#ifndef PC_FORMAT_H
#define PC_FORMAT_H

#include <jansson.h>
#include <stdint.h>

#include "core/buf.h"
#include "names.h"

/* Appends ev's line (no final newline): "conv#seq HH:MM:SS " then the
 * text. names may be NULL ("user 5" for everyone). */
void pc_format_event(pl_sbuf *s, json_t *ev, pc_names *names);

/* Appends ev's text alone on one line, cut to about max characters
 * (a conversation's preview). */
void pc_format_preview(pl_sbuf *s, json_t *ev, pc_names *names, size_t max);

/* Appends text (n bytes of UTF-8) made safe for a terminal; line breaks
 * become "\n   " (one_line: a space). */
void pc_format_text(pl_sbuf *s, const char *text, size_t n, int one_line);

/* Appends a duration in words: "1 day", "7 days", "1 year", "90 minutes",
 * in the largest unit (year of 365 days, day, hour, minute, second)
 * that divides it exactly; 0 is "0 seconds". */
void pc_format_duration(pl_sbuf *s, int64_t seconds);

/* Prints s and a newline on stdout, then empties s. */
void pc_format_flush(pl_sbuf *s);

#endif
