/* fuzz_filter.c — libFuzzer driver for the content filter (src/chat/
 * filter.c): an operator's rules file and any user's text.
 *
 * Input: rules, a NUL byte, then the text (no NUL: the input is both).
 * Checked for every input:
 *   1. pl_filter_parse returns a filter, or NULL with a message.
 *   2. For a text that is valid UTF-8 (what the server hands it),
 *      pl_filter_check never reads past the text, and a masked text is
 *      valid UTF-8, no longer than the text, with the same number of
 *      characters, where every character either stays or became '*'.
 *   3. A block never comes with a masked text.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "chat/filter.h"
#include "core/utf8.h"
#include "fuzz.h"

static size_t chars(const char *s, size_t n) {
    size_t c = 0;
    for (size_t i = 0; i < n; i++) c += ((uint8_t)s[i] & 0xC0) != 0x80;
    return c;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const uint8_t *nul = memchr(data, 0, size);
    size_t rlen = nul ? (size_t)(nul - data) : size;
    const uint8_t *text = nul ? nul + 1 : data;
    size_t tlen = nul ? size - rlen - 1 : size;
    char *rules = (char *)fz_dup(data, rlen), *t = (char *)fz_dup(text, tlen);
    char err[200] = "";
    pl_filter *f = pl_filter_parse(rules, rlen, err, sizeof err);
    if (!f) FZ_CHECK(err[0] != '\0');
    if (f && pl_utf8_valid((const uint8_t *)t, tlen)) {
        pl_filter_hit h;
        int a = pl_filter_check(f, t, tlen, &h);
        FZ_CHECK(a == h.actions && (a & ~(PL_FILTER_MASK | PL_FILTER_FLAG | PL_FILTER_BLOCK)) == 0);
        if (a & PL_FILTER_BLOCK) FZ_CHECK(h.masked == NULL);
        if (h.masked) {
            FZ_CHECK(h.masked_len <= tlen && h.masked[h.masked_len] == '\0');   /* NULs may be text */
            FZ_CHECK(pl_utf8_valid((const uint8_t *)h.masked, h.masked_len));
            FZ_CHECK(chars(h.masked, h.masked_len) == chars(t, tlen));
        }
        pl_filter_hit_release(&h);
    }
    pl_filter_free(f);
    free(rules);
    free(t);
    return 0;
}
