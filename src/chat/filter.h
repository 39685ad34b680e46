/* filter.h — the content filter (brief P12): rules an operator writes in a
 * file (--content-filter), checked in process against the text of every
 * message and edit before it is submitted to the store. No network call:
 * the check costs microseconds and nothing when no file is set.
 *
 * The file, one rule per line (docs/protocol.md "Content filter"):
 *
 *     # a comment; blank lines are skipped
 *     block  buy followers          refuse the message (error `filtered`)
 *     flag   /free +(money|crypto)/ store it, and file a report for the moderators
 *     mask   darn                   store it with the match replaced by '*'
 *
 * A pattern is a term (one or more words) or, between slashes, a
 * Perl-compatible regular expression (PCRE2, Unicode). A term matches whole
 * words, ignoring ASCII case: text and term are cut into words the same way
 * (a word is a run of letters and digits of any script; spaces, controls,
 * punctuation and symbols separate words), so `e-mail` in a rule matches
 * "e mail", "E-Mail" and "e.mail", and never "emails". A regex matches
 * anywhere, ignoring case. Invisible characters and combining marks are
 * left out of the text before either looks at it.
 */
#ifndef PL_FILTER_H
#define PL_FILTER_H

#include <stddef.h>

enum { PL_FILTER_MASK = 1, PL_FILTER_FLAG = 2, PL_FILTER_BLOCK = 4 };

#define PL_FILTER_FILE_MAX   (1 << 20)   /* bytes of a rules file            */
#define PL_FILTER_LINE_MAX   1024        /* bytes of one rule line           */
#define PL_FILTER_REGEX_MAX  256         /* regex rules in a file            */
#define PL_FILTER_MATCH_LIMIT 20000      /* PCRE2 match and depth limits per
                                          * match: a pattern past it counts as
                                          * no match (h->limited)            */
#define PL_FILTER_MASK_BUDGET_US 1000    /* a mask regex's time for all its
                                          * matches in one text: past it, the
                                          * rest is left unmasked (limited)  */

typedef struct pl_filter pl_filter;

typedef struct pl_filter_hit {
    int    actions;          /* PL_FILTER_* of every rule that matched      */
    int    line;             /* the deciding rule's line: a block's (the
                              * check stops at the first block it finds),
                              * else the first flag's, else the first mask's */
    char  *masked;           /* actions & MASK: the text to store (malloc)  */
    int    limited;          /* a regex's line that gave up at the match
                              * limit on this text (0: none): log it      */
    size_t masked_len;
} pl_filter_hit;

/* Reads and compiles a rules file. NULL with a message in err ("line 3:
 * unknown action \"ban\"") when it cannot be read or a rule is bad: a file
 * is taken whole or not at all. */
pl_filter *pl_filter_load(const char *path, char *err, size_t errlen);
/* The same from text in memory (the tests). */
pl_filter *pl_filter_parse(const char *text, size_t len, char *err, size_t errlen);
void       pl_filter_free(pl_filter *f);
size_t     pl_filter_rules(const pl_filter *f);

/* Checks text (len bytes, valid UTF-8, no NUL needed after it). Returns
 * h->actions; h->masked is set when a mask rule matched and no block did.
 * Release h after use. */
int  pl_filter_check(const pl_filter *f, const char *text, size_t len, pl_filter_hit *h);
void pl_filter_hit_release(pl_filter_hit *h);

#endif
