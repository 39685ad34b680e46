/* lookalike.h — when two names look alike: the key they collide on.
 * Owns: the name key (UTS #39's confusable skeleton of the NFKC case-folded
 * name, through ICU). Used by the stores for channel names (store.h
 * invariant 11). */
#ifndef PL_LOOKALIKE_H
#define PL_LOOKALIKE_H

#include <stddef.h>

/* The key of name[0..len) (UTF-8): names that look alike have the same key
 * ("gеneral" with a Cyrillic е, "ｇｅｎｅｒａｌ", "ℊeneral" and "general";
 * "café" precomposed and decomposed; "ﬁle" and "file"). A new string;
 * NULL only when ICU fails (out of memory, not UTF-8). Thread-safe. */
char *pl_lookalike_key(const char *name, size_t len);
/* 1 if two different names whose keys are equal are to be told apart
 * all the same: both all ASCII (channel names' ASCII is lower-case
 * letters, digits, '-', '_' and '.': "team1" and "teaml" share a key,
 * and an ASCII name is read as typed). */
int   pl_lookalike_both_ascii(const char *a, const char *b);

#endif
