/* blurhash.h — the BlurHash encoder: a short string that a client paints
 * as a blurred placeholder while the real image loads.
 *
 * Owns: the BlurHash format, as published by Wolt
 * (github.com/woltapp/blurhash, Algorithm.md): a DCT of the image in linear
 * light, the DC term as 24-bit sRGB, the AC terms quantised to 19 levels per
 * channel against one shared maximum, all written in base 83. Matches the
 * reference encoders bit for bit (the unit tests hold values computed by
 * hand and by Wolt's TypeScript encoder).
 * Does not own: decoding images or scaling them down (media/thumb.c hands
 * it a small RGB buffer, about 32x32: the cost is O(w*h*xc*yc)).
 *
 * Layout of a hash with xc*yc components (length 4 + 2*xc*yc):
 *   [0]      size flag: (xc - 1) + (yc - 1) * 9, one base-83 digit
 *   [1]      quantised maximum AC value, one digit (0 when there is no AC)
 *   [2..5]   DC: (R << 16) | (G << 8) | B in sRGB, four digits
 *   [6..]    each AC component, two digits, row by row (x fastest)
 * Pure computation: no allocation, no global state, thread-safe.
 */
#ifndef PL_BLURHASH_H
#define PL_BLURHASH_H

#include <stddef.h>
#include <stdint.h>

#define PL_BLURHASH_MAX_LEN (4 + 2 * 9 * 9)   /* 9x9 components: 166 chars */

/* Encodes an 8-bit sRGB image into out (NUL-terminated). rgb is borrowed:
 * width*height pixels of 3 bytes (R, G, B), rows stride bytes apart.
 * xcomp and ycomp are 1..9. Returns the hash's length (4 + 2*xcomp*ycomp),
 * or -1 if an argument is out of range or out has fewer than length + 1
 * bytes (out is then an empty string if outlen > 0). */
int pl_blurhash_encode(char *out, size_t outlen, int xcomp, int ycomp,
                       int width, int height, const uint8_t *rgb, size_t stride);

/* The value of the base-83 digits s[0..len-1] (len 0..9); -1 if one is
 * not a BlurHash digit or len is out of range. For readers of a hash
 * (tests, a server-side sanity check). */
long pl_blurhash_decode83(const char *s, int len);

#endif
