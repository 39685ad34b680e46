/* blurhash.c — the BlurHash encoder (see blurhash.h for the format).
 *
 * Owns: the arithmetic only. Follows Wolt's reference encoder step by step,
 * including its basis cos(pi * i * x / width) (no half-pixel offset): a
 * decoder uses the same basis, and our hashes must equal the reference's.
 * Computed in double, as the TypeScript reference does.
 */
#include "blurhash.h"

#include <math.h>
#include <string.h>

static const char B83[] =
    "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz#$%*+,-.:;=?@[]^_{|}~";

/* Writes value as len base-83 digits, most significant first. */
static char *encode83(char *p, long value, int len) {
    for (int i = len - 1; i >= 0; i--) {
        p[i] = B83[value % 83];
        value /= 83;
    }
    return p + len;
}

long pl_blurhash_decode83(const char *s, int len) {
    long v = 0;
    if (len < 0 || len > 9) return -1;   /* 83^9 < 2^63 */
    for (int i = 0; i < len; i++) {
        const char *d = s[i] ? strchr(B83, s[i]) : NULL;
        if (!d) return -1;
        v = v * 83 + (d - B83);
    }
    return v;
}

static double srgb_to_linear(uint8_t value) {
    double v = value / 255.0;
    return v <= 0.04045 ? v / 12.92 : pow((v + 0.055) / 1.055, 2.4);
}

static long linear_to_srgb(double value) {
    double v = value < 0 ? 0 : value > 1 ? 1 : value;
    if (v <= 0.0031308) return (long)(v * 12.92 * 255 + 0.5);
    return (long)((1.055 * pow(v, 1 / 2.4) - 0.055) * 255 + 0.5);
}

static double sign_pow(double v, double e) {
    return copysign(pow(fabs(v), e), v);
}

/* Quantises one AC channel to 0..18 against the shared maximum. */
static long quant_ac(double v, double max) {
    double q = floor(sign_pow(v / max, 0.5) * 9 + 9.5);
    return (long)(q < 0 ? 0 : q > 18 ? 18 : q);
}

int pl_blurhash_encode(char *out, size_t outlen, int xcomp, int ycomp,
                       int width, int height, const uint8_t *rgb, size_t stride) {
    if (outlen > 0) out[0] = '\0';
    if (xcomp < 1 || xcomp > 9 || ycomp < 1 || ycomp > 9 || width < 1 ||
        height < 1 || !rgb || stride < (size_t)width * 3)
        return -1;
    int len = 4 + 2 * xcomp * ycomp;
    if (outlen < (size_t)len + 1) return -1;

    /* The image in linear light, once, instead of once per component. */
    double factors[9 * 9][3];
    double cosx[9], cosy[9];
    memset(factors, 0, sizeof factors);
    for (int y = 0; y < height; y++) {
        for (int j = 0; j < ycomp; j++) cosy[j] = cos(M_PI * j * y / height);
        const uint8_t *row = rgb + (size_t)y * stride;
        for (int x = 0; x < width; x++) {
            double lin[3] = { srgb_to_linear(row[3 * x]),
                              srgb_to_linear(row[3 * x + 1]),
                              srgb_to_linear(row[3 * x + 2]) };
            for (int i = 0; i < xcomp; i++) cosx[i] = cos(M_PI * i * x / width);
            for (int j = 0; j < ycomp; j++)
                for (int i = 0; i < xcomp; i++) {
                    double basis = cosx[i] * cosy[j];
                    double *f = factors[j * xcomp + i];
                    f[0] += basis * lin[0];
                    f[1] += basis * lin[1];
                    f[2] += basis * lin[2];
                }
        }
    }
    int n = xcomp * ycomp;
    for (int k = 0; k < n; k++) {
        double scale = (k == 0 ? 1.0 : 2.0) / ((double)width * height);
        for (int c = 0; c < 3; c++) factors[k][c] *= scale;
    }

    char *p = out;
    p = encode83(p, (xcomp - 1) + (ycomp - 1) * 9, 1);
    double max_value = 1;
    if (n > 1) {
        double actual = 0;
        for (int k = 1; k < n; k++)
            for (int c = 0; c < 3; c++)
                if (fabs(factors[k][c]) > actual) actual = fabs(factors[k][c]);
        double q = floor(actual * 166 - 0.5);
        long quantised = (long)(q < 0 ? 0 : q > 82 ? 82 : q);
        max_value = (quantised + 1) / 166.0;
        p = encode83(p, quantised, 1);
    } else {
        p = encode83(p, 0, 1);
    }
    long dc = (linear_to_srgb(factors[0][0]) << 16) +
              (linear_to_srgb(factors[0][1]) << 8) + linear_to_srgb(factors[0][2]);
    p = encode83(p, dc, 4);
    for (int k = 1; k < n; k++) {
        long ac = quant_ac(factors[k][0], max_value) * 19 * 19 +
                  quant_ac(factors[k][1], max_value) * 19 +
                  quant_ac(factors[k][2], max_value);
        p = encode83(p, ac, 2);
    }
    *p = '\0';
    return len;
}
