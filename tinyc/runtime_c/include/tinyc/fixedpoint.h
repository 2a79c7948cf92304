/* TFLite / gemmlowp fixed-point primitives used by every tinyc kernel.
 * Integer-only C99; each function mirrors the numpy function of the same name
 * in tinyc/quant/fixedpoint.py, which was checked bit-exact against TFLM. */
#ifndef TINYC_FIXEDPOINT_H
#define TINYC_FIXEDPOINT_H

#include <stdint.h>

#define TINYC_INT8_MIN (-128)
#define TINYC_INT8_MAX 127

static inline int32_t tinyc_clamp32(int32_t x, int32_t lo, int32_t hi)
{
    return x < lo ? lo : (x > hi ? hi : x);
}

/* gemmlowp SaturatingRoundingDoublingHighMul: round(a * b / 2^31), saturating
 * the single overflow case a == b == INT32_MIN. */
static inline int32_t tinyc_srdhm(int32_t a, int32_t b)
{
    int64_t ab;
    int32_t nudge;
    if (a == b && a == INT32_MIN) {
        return INT32_MAX;
    }
    ab = (int64_t)a * (int64_t)b;
    nudge = ab >= 0 ? (1 << 30) : (1 - (1 << 30));
    /* C99 division truncates toward zero, as gemmlowp's does. */
    return (int32_t)((ab + nudge) / ((int64_t)1 << 31));
}

/* gemmlowp RoundingDivideByPOT: x / 2^exponent rounding half away from zero,
 * 0 <= exponent <= 31. */
static inline int32_t tinyc_rdbp(int32_t x, int32_t exponent)
{
    const int32_t mask = (int32_t)(((int64_t)1 << exponent) - 1);
    const int32_t remainder = x & mask;
    const int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
    /* Arithmetic right shift of a negative value: implementation-defined in
     * C99, arithmetic on every compiler tinyc targets (gcc, clang, armcc). */
    return (x >> exponent) + (remainder > threshold ? 1 : 0);
}

/* TFLite MultiplyByQuantizedMultiplier(int32 x, int32 multiplier, int shift). */
static inline int32_t tinyc_mbqm(int32_t x, int32_t multiplier, int32_t shift)
{
    const int32_t left = shift > 0 ? shift : 0;
    const int32_t right = shift > 0 ? 0 : -shift;
    /* x * 2^left in 32 bits, wrapping as TFLite's does (it never overflows for
     * valid accumulators). */
    const int32_t shifted = (int32_t)((uint32_t)x << left);
    return tinyc_rdbp(tinyc_srdhm(shifted, multiplier), right);
}

/* TFLite MultiplyByQuantizedMultiplierSmallerThanOneExp (shift <= 0):
 * RoundingDivideByPOT(SRDHM(x, multiplier), -shift). */
static inline int32_t tinyc_mbqm_smaller_than_one(int32_t x, int32_t multiplier, int32_t shift)
{
    return tinyc_rdbp(tinyc_srdhm(x, multiplier), -shift);
}

#endif /* TINYC_FIXEDPOINT_H */
