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
    CHECK_EQ(check(f, "sp\xc3\xa4m", &h), PL_FILTER_BLOCK);          /* accents fold */
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
    CHECK_STR(err, "line 1: not UTF-8 text (or a NUL byte)");
    CHECK(!pl_filter_parse("block a\nmask b\nflag \0c\n", 23, err, sizeof err));
    CHECK_STR(err, "line 3: not UTF-8 text (or a NUL byte)");
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

/* The filter audit's evasions: punctuation and symbols outside ASCII
 * separate words, combining marks and invisible characters are left out,
 * for regexes too. */
TEST(filter_unicode_punctuation_marks_and_regex_normalization) {
    char err[200] = "";
    pl_filter *f = parse("block followers\nblock buy followers\nflag /free +(money|crypto)/\nmask /\xc3\x89" "cole/\n", err);
    CHECK(f);
    pl_filter_hit h;
    static const char *const evasions[] = {
        "\xe2\x80\x9c" "followers\xe2\x80\x9d",      /* smart quotes */
        "followers\xe2\x80\xa6",                     /* an ellipsis */
        "followers\xe2\x80\x94yes",                  /* an em dash */
        "followers\xe2\x80\x99s",                    /* a typographic apostrophe */
        "followers\xe3\x80\x82",                     /* an ideographic full stop */
        "fo\xcc\x81llowers",                         /* a combining acute accent */
        "buy\xe2\xa0\x80" "followers",               /* a blank Braille pattern */
        "followers\xf0\x9f\x98\x80",                 /* an emoji right after */
        "\xef\xbc\x81" "followers",                  /* a fullwidth exclamation mark */
        "buy \xe2\x80\x8b followers",                /* a word of invisibles only */
    };
    for (size_t i = 0; i < sizeof evasions / sizeof evasions[0]; i++) {
        if (!(check(f, evasions[i], &h) & PL_FILTER_BLOCK)) fprintf(stderr, "  evasion %zu passed\n", i);
        CHECK(h.actions & PL_FILTER_BLOCK);
    }
    CHECK_EQ(check(f, "follower\xc2\xb2s", &h), 0);        /* a superscript two is part of the word */
    CHECK_EQ(check(f, "get fr\xe2\x80\x8b" "ee  MONEY", &h), PL_FILTER_FLAG);
    CHECK_EQ(h.line, 3);
    CHECK_EQ(check(f, "l'\xc3\xa9" "COLE est finie", &h), PL_FILTER_MASK);   /* case of any script */
    CHECK_STR(h.masked, "l'***** est finie");
    pl_filter_hit_release(&h);
    CHECK_EQ(check(f, "\xc3\xa9" "co\xe2\x80\x8d" "le", &h), PL_FILTER_MASK);  /* the joiner is masked too */
    CHECK_STR(h.masked, "******");
    pl_filter_hit_release(&h);
    pl_filter_free(f);
}

/* A pattern that backtracks without end stops at the match limit: it
 * counts as no match, and the hit says which rule gave up. */
TEST(filter_regex_match_limit) {
    char err[200] = "";
    pl_filter *f = parse("block spam\n\nflag /(a|aa)+$/\n", err);
    CHECK(f);
    size_t n = 16000;
    char *t = malloc(n + 2);
    memset(t, 'a', n);
    t[n] = 'b';
    t[n + 1] = '\0';
    pl_filter_hit h;
    CHECK_EQ(check(f, t, &h), 0);
    CHECK_EQ(h.limited, 3);
    CHECK_EQ(check(f, "aaaa", &h), PL_FILTER_FLAG);
    CHECK_EQ(h.limited, 0);
    free(t);
    pl_filter_free(f);
}

TEST(filter_rules_file_typos_are_refused) {
    char err[200];
    CHECK(!parse("block /unclosed(regex\n", err));
    CHECK_STR(err, "line 1: a regex must end with '/' (a term cannot start with one)");
    CHECK(!parse("mask /x\n", err));
    CHECK_STR(err, "line 1: a regex must end with '/' (a term cannot start with one)");
    CHECK(!parse("flag /a/ b\n", err));
    CHECK(!strncmp(err, "line 1: a regex must end", 24));
    CHECK(!parse("block //\n", err));
    CHECK_STR(err, "line 1: an empty regex");
    CHECK(!parse("block\tfoo # a comment\n", err));
    CHECK_STR(err, "line 1: a comment must be on a line of its own");
    pl_filter *f = parse("\xef\xbb\xbf" "block spam\n", err);   /* a byte-order mark first */
    CHECK(f);
    pl_filter_hit h;
    CHECK_EQ(check(f, "SPAM", &h), PL_FILTER_BLOCK);
    pl_filter_free(f);
}

/* Letters fold: ASCII, Cyrillic and Greek capitals to small, Latin letters
 * with diacritics to their base letter, whether precomposed or decomposed. */
TEST(filter_terms_fold_case_and_accents) {
    char err[200] = "";
    pl_filter *f = parse("mask caf\xc3\xa9\nblock \xd0\xb4\xd1\x83\xd1\x80\xd0\xb0\xd0\xba\nflag \xce\xb1\xce\xb2\n", err);
    CHECK(f);
    pl_filter_hit h;
    static const char *const cafes[] = {"CAF\xc3\x89", "cafe\xcc\x81", "cafe", "Caf\xc3\xa8"};
    for (size_t i = 0; i < 4; i++) {
        CHECK_EQ(check(f, cafes[i], &h), PL_FILTER_MASK);
        pl_filter_hit_release(&h);
    }
    CHECK_EQ(check(f, "\xd0\x94\xd0\xa3\xd0\xa0\xd0\x90\xd0\x9a!", &h), PL_FILTER_BLOCK);   /* ДУРАК */
    CHECK_EQ(check(f, "\xce\x91\xce\x92", &h), PL_FILTER_FLAG);                              /* ΑΒ */
    CHECK_EQ(check(f, "cafes", &h), 0);
    pl_filter_free(f);
}

/* A mask regex that matches all over a long text, each match just under
 * the match limit (the second audit's freeze): it stops at its time
 * budget, the check returns, and block rules ran first anyway. */
TEST(filter_mask_regex_stops_at_its_budget) {
    char err[200] = "";
    pl_filter *f = parse("mask /(?:a|a){1,12}z|a/\nblock /b{3}/\n", err);
    CHECK(f);
    size_t n = 16000;
    char *t = malloc(n + 4);
    memset(t, 'a', n);
    memcpy(t + n, "bbb", 4);
    pl_filter_hit h;
    CHECK_EQ(check(f, t, &h), PL_FILTER_BLOCK);                   /* the block regex ran first */
    t[n] = '\0';
    CHECK_EQ(check(f, t, &h), PL_FILTER_MASK);
    CHECK_EQ(h.limited, 1);
    CHECK(h.masked && h.masked[0] == '*');
    pl_filter_hit_release(&h);
    free(t);
    pl_filter_free(f);
}

/* The third audit's evasions: Greek capitals with tonos and final sigma,
 * Cyrillic and Greek letters with a separately typed accent, and the
 * punctuation of other scripts (glibc's Unicode classes tell words). */
TEST(filter_other_scripts_fold_and_separate) {
    char err[200] = "";
    pl_filter *f = parse("block \xce\xb3\xce\xac\xcf\x84\xce\xb1\n"            /* γάτα */
                         "block \xce\xbb\xcf\x8c\xce\xb3\xce\xbf\xcf\x82\n"    /* λόγος */
                         "block \xd0\xb9\xd0\xbe\xd0\xb4\n"                    /* йод */
                         "block buy followers\n", err);
    CHECK(f);
    pl_filter_hit h;
    static const char *const evasions[] = {
        "\xce\x93\xce\x86\xce\xa4\xce\x91",                        /* ΓΆΤΑ */
        "\xce\xbb\xcf\x8c\xce\xb3\xce\xbf\xce\xa3",                /* λόγοΣ */
        "\xce\x9b\xce\x8c\xce\x93\xce\x9f\xce\xa3",                /* ΛΌΓΟΣ */
        "\xd0\xb8\xcc\x86\xd0\xbe\xd0\xb4",                        /* и + combining breve, од */
        "buy\xd6\xbe" "followers",                                 /* a Hebrew maqaf */
        "buy\xd8\x8c" "followers",                                 /* an Arabic comma */
        "buy\xe2\x84\xa2" "followers",                             /* a trade mark sign */
        "buy\xe3\x83\xbb" "followers",                             /* a Katakana middle dot */
    };
    for (size_t i = 0; i < sizeof evasions / sizeof evasions[0]; i++) {
        if (!(check(f, evasions[i], &h) & PL_FILTER_BLOCK)) fprintf(stderr, "  evasion %zu passed\n", i);
        CHECK(h.actions & PL_FILTER_BLOCK);
    }
    CHECK_EQ(check(f, "\xce\xb3\xce\xac\xcf\x84\xce\xb5\xcf\x82", &h), 0);   /* γάτες: another word */
    pl_filter_free(f);
    /* the fuzzer's pattern whose JIT code ignored the match limit: the
     * interpreter gives up on it */
    f = parse("mask /(?*a|a){51}z1a|,/\n", err);
    CHECK(f);
    CHECK_EQ(check(f, "Zaa\xef\xbb\xbf" "blocowerl", &h), 0);
    CHECK_EQ(h.limited, 1);
    pl_filter_free(f);
}
