/* lookalike.c — the key of names that look alike (lookalike.h).
 * Owns: one ICU spoof checker, opened on first use and kept for the
 * process (its skeleton function is safe to call from several threads).
 * The key: the name NFKC case-folded (fullwidth letters, ligatures,
 * letterlike symbols and case become plain letters), then UTS #39's
 * skeleton (letters of other scripts that look like Latin ones become
 * them, marks decomposed), back in UTF-8. */
#include "lookalike.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unicode/unorm2.h>
#include <unicode/uspoof.h>
#include <unicode/ustring.h>

#include "alloc.h"

#define LOOK_UNITS 1024                 /* UTF-16 units: a name is at most 80 bytes */

static pthread_once_t        once = PTHREAD_ONCE_INIT;
static USpoofChecker        *checker;
static const UNormalizer2   *nfkc_cf;

static void open_icu(void) {
    UErrorCode st = U_ZERO_ERROR;
    USpoofChecker *sc = uspoof_open(&st);
    if (U_FAILURE(st)) return;
    const UNormalizer2 *n = unorm2_getNFKCCasefoldInstance(&st);
    if (U_FAILURE(st)) {
        uspoof_close(sc);
        return;
    }
    checker = sc;
    nfkc_cf = n;
}

char *pl_lookalike_key(const char *name, size_t len) {
    if (len > INT32_MAX / 4) return NULL;
    pthread_once(&once, open_icu);
    if (!checker) return NULL;
    UChar a[LOOK_UNITS], b[LOOK_UNITS];
    UErrorCode st = U_ZERO_ERROR;
    int32_t n = 0;
    u_strFromUTF8(a, LOOK_UNITS, &n, name, (int32_t)len, &st);
    if (U_FAILURE(st) || n >= LOOK_UNITS) return NULL;
    n = unorm2_normalize(nfkc_cf, a, n, b, LOOK_UNITS, &st);
    if (U_FAILURE(st) || n >= LOOK_UNITS) return NULL;
    n = uspoof_getSkeleton(checker, 0, b, n, a, LOOK_UNITS, &st);
    if (U_FAILURE(st) || n >= LOOK_UNITS) return NULL;
    int32_t out = 0;
    u_strToUTF8(NULL, 0, &out, a, n, &st);               /* the length first */
    if (st != U_BUFFER_OVERFLOW_ERROR && U_FAILURE(st)) return NULL;
    st = U_ZERO_ERROR;
    char *key = pl_malloc((size_t)out + 1);
    u_strToUTF8(key, out + 1, NULL, a, n, &st);
    if (U_FAILURE(st)) {
        free(key);
        return NULL;
    }
    return key;
}

static int all_ascii(const char *s) {
    for (; *s; s++)
        if ((unsigned char)*s >= 0x80) return 0;
    return 1;
}

int pl_lookalike_both_ascii(const char *a, const char *b) {
    return all_ascii(a) && all_ascii(b);
}
