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

/* acc[j] += sum_i (x[i] + offset) * w[j * ws + i], i < n, for the 4 rows j = 0..3:
 * the portable kernels' inner loop (one input value feeds 4 MACs: about 3
 * instructions per MAC on a Cortex-M3, against 6 one row at a time).  Wraps like
 * the int32 sums it stands for (through uint32: no signed overflow). */
__attribute__((noinline, unused)) static void tinyc_dot4_s8(const int8_t *x, const int8_t *w, int32_t ws,
                                                           int32_t n, int32_t offset, int32_t *acc)
{
    /* out of line: its 13 live values then fit the registers (inlined into a
     * kernel's loops gcc kept the 4 row pointers on the stack) */
    const int8_t *w0 = w, *w1 = w + ws, *w2 = w1 + ws, *w3 = w2 + ws;
    const int8_t *const end = x + n;
    uint32_t a0 = (uint32_t)acc[0], a1 = (uint32_t)acc[1], a2 = (uint32_t)acc[2], a3 = (uint32_t)acc[3];
    while (x != end) {
        const int32_t v = *x++ + offset;
        a0 += (uint32_t)(v * *w0++);
        a1 += (uint32_t)(v * *w1++);
        a2 += (uint32_t)(v * *w2++);
        a3 += (uint32_t)(v * *w3++);
    }
    acc[0] = (int32_t)a0;
    acc[1] = (int32_t)a1;
    acc[2] = (int32_t)a2;
    acc[3] = (int32_t)a3;
}

#endif /* TINYC_FIXEDPOINT_H */
