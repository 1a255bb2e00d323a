/* Vectorisable float32 exp and log for the native kernels (included by distance_kernels.c and
 * sample_kernels.c; hyperr1.native hashes this file into the kernels' cache key with each source).
 * Polynomials the compiler vectorises, no libm call: gcc does not vectorise expf or logf here. */
#ifndef HYPERR1_VECTOR_MATH_H
#define HYPERR1_VECTOR_MATH_H
#include <math.h>
#include <stdint.h>
#include <string.h>

/* e^x for x ≤ 0 (and small positive x): x = n ln2 + r with |r| ≤ ln2/2, e^r by its degree-6 Taylor
 * polynomial (relative error below 2e-7, about float32 rounding), 2^n from the exponent bits; arguments
 * below −87 give exactly 0, −inf included; NaN gives NaN. */
static inline float exp_le0(float x) {
    const float keep = (float)(x >= -87.0f); /* exactly 0 below −87 and for −inf */
    const float xc = x < -87.0f ? -87.0f : x;
    const float n = rintf(xc * 1.44269504f);
    const float r = (xc - n * 0.693145752f) - n * 1.42860677e-6f; /* Cody–Waite: ln2 = hi + lo */
    float p = 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    const int32_t bits = ((int32_t)(n == n ? n : 0.0f) + 127) << 23; /* NaN x: no NaN → int (p is NaN) */
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale * keep;
}

/* log v for finite v ≥ 1, in a form the compiler vectorises (no libm call, no branch, no division;
 * a ?: on the result already stops gcc vectorising the callers, which tests/test_native.py checks).
 * v = 2^e · m with m in [√½, √2), f = m − 1, and log m = f − f²/2 + f³ P(f) with P the degree-7
 * least-squares fit of (log(1 + f) − f + f²/2)/f³ at 4,000 Chebyshev nodes of [√½ − 1, √2 − 1]
 * (numpy, float64): absolute error below 1e-8 on that interval, under float32 rounding; the
 * script that fits it is hyperr1/native/fit_log_poly.py. */
static inline float log_ge1(float v) {
    int32_t bits;
    memcpy(&bits, &v, sizeof bits);
    int32_t e = ((bits >> 23) & 0xff) - 127;
    int32_t mbits = (bits & 0x007fffff) | 0x3f800000; /* the mantissa as a float in [1, 2) */
    float m;
    memcpy(&m, &mbits, sizeof m);
    int high = m > 1.41421356f;
    m = high ? 0.5f * m : m;
    e = high ? e + 1 : e;
    const float f = m - 1.0f, f2 = f * f;
    float p = -8.102270427e-02f;
    p = p * f + 1.271267889e-01f;
    p = p * f - 1.297214522e-01f;
    p = p * f + 1.420211430e-01f;
    p = p * f - 1.664225085e-01f;
    p = p * f + 2.000147135e-01f;
    p = p * f - 2.500029652e-01f;
    p = p * f + 3.333332856e-01f;
    const float log_v = (float)e * 0.693147180559945f + (f - 0.5f * f2 + f2 * f * p);
    return log_v + (v - v); /* + 0, or NaN for v = inf or NaN: a non-finite input must not look finite */
}

#endif
