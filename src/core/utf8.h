/* utf8.h — UTF-8 validation (RFC 3629: overlongs, surrogates and code
 * points above U+10FFFF rejected), one-shot and incremental.
 * Owns: nothing but the check. Used by ws/ (text frames) and proto/. */
#ifndef PL_UTF8_H
#define PL_UTF8_H

#include <stddef.h>
#include <stdint.h>

/* Incremental: a Hoehrmann-style DFA. */
typedef struct pl_utf8 { uint32_t state; } pl_utf8;   /* 0 = at a boundary */

void pl_utf8_init(pl_utf8 *v);
/* Returns 0 while the bytes so far can still be valid UTF-8, -1 at the first
 * byte that makes them invalid (overlongs, surrogates, > U+10FFFF rejected). */
int  pl_utf8_feed(pl_utf8 *v, const uint8_t *p, size_t n);
/* 1 if the bytes fed end on a code point boundary. */
int  pl_utf8_done(const pl_utf8 *v);
/* One-shot: 1 if p[0..n) is valid UTF-8. */
int  pl_utf8_valid(const uint8_t *p, size_t n);

/* 1 if code point cp is Unicode White_Space (U+0009..U+000D, U+0020,
 * U+0085, U+00A0, U+1680, U+2000..U+200A, U+2028, U+2029, U+202F, U+205F,
 * U+3000) or a control character (Cc: U+0000..U+001F, U+007F..U+009F). */
int  pl_utf8_space_or_control(uint32_t cp);
/* 1 if code point cp is a control character (Cc: U+0000..U+001F,
 * U+007F..U+009F). */
int  pl_utf8_control(uint32_t cp);
/* 1 if p[0..n) holds a code point pred accepts (a lone byte of invalid
 * UTF-8 is taken as the code point it would start). */
int  pl_utf8_has(const uint8_t *p, size_t n, int (*pred)(uint32_t));
/* 1 if p[0..n), valid UTF-8, holds a code point of pl_utf8_space_or_control
 * (or, not being valid UTF-8, a lone byte that decodes as one). */
int  pl_utf8_has_space_or_control(const uint8_t *p, size_t n);
/* 1 if cp shows nothing, or moves text around, where a name is read: a
 * pl_utf8_space_or_control code point other than U+0020, a format
 * character (zero-width spaces and joiners, bidirectional marks, embeddings
 * and overrides, word joiners, BOM, soft hyphen, variation selectors, tags,
 * Egyptian hieroglyph and shorthand format controls), a Hangul filler or
 * the blank braille pattern U+2800. */
int  pl_utf8_invisible(uint32_t cp);
/* 1 if p[0..n) holds a pl_utf8_invisible code point (as has_space_or_control). */
int  pl_utf8_has_invisible(const uint8_t *p, size_t n);
/* As has_invisible, but a variation selector (U+FE0E, U+FE0F) after a
 * visible character and a zero-width joiner between two pictographs (the
 * emoji of a keyboard: "❤️", "👨‍👩‍👧") are not counted: for names. */
int  pl_utf8_has_invisible_outside_emoji(const uint8_t *p, size_t n);
/* Rewrites valid UTF-8 p[0..n) in place keeping what a reader sees: a
 * pl_utf8_invisible code point is dropped, except that Unicode white space
 * and the blank braille pattern U+2800 become U+0020 and that a variation selector after a visible character
 * and a ZWJ between two pictographs stay (as has_invisible_outside_emoji).
 * Returns the new length (<= n). For file names (media/media.c). */
size_t pl_utf8_visible(uint8_t *p, size_t n);
/* 1 if cp is a combining mark (Unicode general category Mn, Mc or Me, as
 * of Unicode 14.0: U+0301 COMBINING ACUTE ACCENT, ...). */
int  pl_utf8_combining(uint32_t cp);
/* The first code point of valid UTF-8 s[0..len) (0 when len is 0). */
uint32_t pl_utf8_first(const char *s, size_t len);
/* The bytes of the first `chars` characters of valid UTF-8 s[0..len)
 * (len when it has fewer), a character being what a reader sees as one:
 * a prefix that never cuts a code point, an accent from its letter, an
 * emoji's ZWJ sequence, skin tone or selector, or a flag in two
 * (audit U2: "é" as e + U+0301, 👨‍👩‍👧, 🇫🇷). */
size_t pl_utf8_prefix(const char *s, size_t len, size_t chars);

#endif
