/* test_filter.c — the content filter's rules file and matching
 * (src/chat/filter.c). */
#include "test.h"

#include <stdlib.h>

#include "chat/filter.h"

static pl_filter *parse(const char *s, char *err) { return pl_filter_parse(s, strlen(s), err, 200); }

static int check(const pl_filter *f, const char *text, pl_filter_hit *h) {
    return pl_filter_check(f, text, strlen(text), h);
}

TEST(filter_terms_match_whole_words_any_case) {
    char err[200] = "";
    pl_filter *f = parse("# rules\n\nblock  buy followers\r\n  flag spam  \nmask darn\n", err);
    CHECK(f);
    CHECK_EQ(pl_filter_rules(f), 3);
    pl_filter_hit h;
    CHECK_EQ(check(f, "hello there", &h), 0);
    CHECK(!h.masked);
    CHECK_EQ(check(f, "please BUY   Followers now", &h), PL_FILTER_BLOCK);
    CHECK_EQ(h.line, 3);
    CHECK(!h.masked);
    CHECK_EQ(check(f, "buy.followers!", &h), PL_FILTER_BLOCK);      /* any separator */
    CHECK_EQ(check(f, "buy some followers", &h), 0);                /* words in a row */
    CHECK_EQ(check(f, "buyfollowers", &h), 0);
    CHECK_EQ(check(f, "spammer spamming", &h), 0);                 /* whole words only */
    CHECK_EQ(check(f, "Spam?", &h), PL_FILTER_FLAG);
    CHECK_EQ(h.line, 4);
    CHECK_EQ(check(f, "darn it, DARN", &h), PL_FILTER_MASK);
    CHECK_EQ(h.line, 5);
    CHECK_STR(h.masked, "**** it, ****");
    CHECK_EQ(h.masked_len, strlen("**** it, ****"));
    pl_filter_hit_release(&h);
    CHECK_EQ(check(f, "darn spam", &h), PL_FILTER_MASK | PL_FILTER_FLAG);
    CHECK_EQ(h.line, 4);                                           /* the flag decides */
    CHECK_STR(h.masked, "**** spam");
    pl_filter_hit_release(&h);
    CHECK_EQ(check(f, "darn buy followers", &h) & PL_FILTER_BLOCK, PL_FILTER_BLOCK);
    CHECK(!h.masked);                                              /* blocked: nothing to store */
    pl_filter_free(f);
}

TEST(filter_terms_share_a_first_word) {
    char err[200] = "";
    pl_filter *f = parse("flag free\nblock free money\nmask free crypto coins\nmask a\n", err);
    CHECK(f);
    pl_filter_hit h;
    CHECK_EQ(check(f, "free money", &h), PL_FILTER_BLOCK | PL_FILTER_FLAG);
    CHECK_EQ(h.line, 2);
    CHECK_EQ(check(f, "it is free", &h), PL_FILTER_FLAG);
    CHECK_EQ(check(f, "get free crypto coins", &h), PL_FILTER_FLAG | PL_FILTER_MASK);
    CHECK_STR(h.masked, "get *****************");                   /* the phrase, spaces too */
    pl_filter_hit_release(&h);
    CHECK_EQ(check(f, "free crypto", &h), PL_FILTER_FLAG);         /* a phrase cut short */
    CHECK_EQ(check(f, "A b a", &h), PL_FILTER_MASK);
    CHECK_STR(h.masked, "* b *");
    pl_filter_hit_release(&h);
    pl_filter_free(f);
}

TEST(filter_unicode_words_and_invisible_characters) {
    char err[200] = "";
    /* a rule in another script; "e-mail" is the phrase "e mail" */
    pl_filter *f = parse("mask \xd0\xb4\xd1\x83\xd1\x80\xd0\xb0\xd0\xba\nblock e-mail\n", err);
    CHECK(f);
    pl_filter_hit h;
    CHECK_EQ(check(f, "\xd1\x82\xd1\x8b \xd0\xb4\xd1\x83\xd1\x80\xd0\xb0\xd0\xba!", &h), PL_FILTER_MASK);
    CHECK_STR(h.masked, "\xd1\x82\xd1\x8b *****!");                 /* one star per character */
    pl_filter_hit_release(&h);
    CHECK_EQ(check(f, "my E.Mail", &h), PL_FILTER_BLOCK);
    CHECK_EQ(check(f, "e\xe2\x80\x8bmail", &h), 0);                 /* one word "email" */
    CHECK_EQ(check(f, "e\xc2\xa0mail", &h), PL_FILTER_BLOCK);       /* a no-break space separates */
    pl_filter_free(f);
    f = parse("block spam\n", err);
    CHECK(f);
    CHECK_EQ(check(f, "s\xe2\x80\x8bp\xc2\xad" "am", &h), PL_FILTER_BLOCK);   /* zero-width space, soft hyphen */
    CHECK_EQ(check(f, "sp\xc3\xa4m", &h), 0);
    pl_filter_free(f);
}

TEST(filter_regexes) {
    char err[200] = "";
    pl_filter *f = parse("flag /free +(money|crypto)/\nmask /[0-9]{4}-[0-9]{4}/\nblock /^ALL CAPS$/\n", err);
    CHECK(f);
    CHECK_EQ(pl_filter_rules(f), 3);
    pl_filter_hit h;
    CHECK_EQ(check(f, "get FREE   Crypto today", &h), PL_FILTER_FLAG);
    CHECK_EQ(h.line, 1);
    CHECK_EQ(check(f, "card 1234-5678 and 8765-4321.", &h), PL_FILTER_MASK);
    CHECK_STR(h.masked, "card ********* and *********.");
    pl_filter_hit_release(&h);
    CHECK_EQ(check(f, "all caps", &h), PL_FILTER_BLOCK);
    CHECK_EQ(check(f, "not all caps", &h), 0);
    pl_filter_free(f);
    /* a byte regex over a multibyte character masks the whole character */
    f = parse("mask /a./\n", err);
    CHECK(f);
    CHECK_EQ(check(f, "xa\xc3\xa4" "b", &h), PL_FILTER_MASK);
    CHECK_STR(h.masked, "x**b");
    pl_filter_hit_release(&h);
    pl_filter_free(f);
    /* an empty match moves on, and masks nothing */
    f = parse("mask /x*/\n", err);
    CHECK(f);
    CHECK_EQ(check(f, "abxxc", &h), PL_FILTER_MASK);
    CHECK_STR(h.masked, "ab**c");
    pl_filter_hit_release(&h);
    pl_filter_free(f);
}

TEST(filter_bad_files_are_refused_whole) {
    char err[200];
    CHECK(!parse("block ok\nban spam\n", err));
    CHECK_STR(err, "line 2: unknown action 'ban' (block, flag or mask)");
    CHECK(!parse("flag\n", err));
    CHECK_STR(err, "line 1: no pattern after the action");
    CHECK(!parse("\n\nmask /a(/\n", err));
    CHECK(!strncmp(err, "line 3: bad regex: ", 19));
    CHECK(!parse("block ...\n", err));
    CHECK_STR(err, "line 1: a term needs a letter or a digit");
    CHECK(!parse("block \xff\n", err));
    CHECK_STR(err, "the file is not UTF-8 text");
    char *big = malloc(2000);
    memset(big, 'a', 1999);
    memcpy(big, "mask ", 5);
    big[1999] = '\0';
    CHECK(!parse(big, err));
    CHECK_STR(err, "line 1: longer than 1024 bytes");
    free(big);
    CHECK(!pl_filter_load("/nonexistent/rules", err, sizeof err));
    CHECK_STR(err, "cannot open /nonexistent/rules");
    pl_filter *f = parse("# only comments\n\n   \n", err);       /* an empty filter is fine */
    CHECK(f);
    CHECK_EQ(pl_filter_rules(f), 0);
    pl_filter_hit h;
    CHECK_EQ(check(f, "anything", &h), 0);
    pl_filter_free(f);
    CHECK_EQ(pl_filter_check(NULL, "x", 1, &h), 0);
}
