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

/* ---- a cheaper exact requantization for the portable kernels ----------------
 *
 * tinyc_rqp(acc, mult, shift, out_offset) = tinyc_mbqm(acc, mult, shift) +
 * out_offset for every int32 acc, on the channels tinyc_rqp_ok accepts: a
 * normalized multiplier (mult in [2^30, 2^31)) with a right shift (shift in
 * [-31, -1]), what TFLite's QuantizeMultiplier gives for scales in (0, 0.5), or
 * a zero scale (mult 0, shift 0); and |out_offset| <= 2^29.  About 8
 * instructions on a Cortex-M3 (one SMLAL), against about 25 for tinyc_mbqm's
 * 64-bit nudge, division and remainder test.  Why it is exact:
 *
 * - With m2 the int32 bits of 2 * mult (2 * mult - 2^32),
 *     p = acc * m2 + (acc * 2^32 + 2^31) = 2 * acc * mult + 2^31
 *   (in int64 range: |2 * acc * mult| <= 2^63 - 2^32), and x = floor(p / 2^32)
 *   = floor((acc * mult + 2^30) / 2^31) is gemmlowp's
 *   SaturatingRoundingDoublingHighMul: its nudge 1 - 2^30 for a negative
 *   product followed by truncation toward zero is the same floor, and it
 *   saturates only for mult = INT32_MIN.  -2^31 < x <= 2^31 - 2.
 * - RoundingDivideByPOT(x, right), right = -shift in [1, 31], rounds half away
 *   from zero: floor((x - [x < 0] + 2^(right-1)) / 2^right), which by nested
 *   floors is (floor((x - [x < 0]) / 2^r1) + 1) >> 1 with r1 = right - 1 =
 *   ~shift.  x - [x < 0] >= -2^31 and floor(.) + 1 <= 2^31 - 1: no overflow.
 * - The result is within [-2^30, 2^30]: adding out_offset cannot wrap, so the
 *   sum is the numpy spec's (which adds in int64).
 * - A zero scale: m2 = 0 gives x = acc; r1 = ~0 & 31 = 31 leaves t in {-1, 0}
 *   whatever x is, and (t + 1) >> 1 = 0: out_offset, as tinyc_mbqm gives. */
static inline int tinyc_rqp_ok(const int32_t *mult, const int32_t *shift, int32_t n, int32_t out_offset)
{
    int32_t i;
    if (out_offset < -(1 << 29) || out_offset > (1 << 29)) {
        return 0;
    }
    for (i = 0; i < n; ++i) {
        const int normal = mult[i] >= (1 << 30) && shift[i] >= -31 && shift[i] <= -1;
        if (!normal && !(mult[i] == 0 && shift[i] == 0)) {
            return 0;
        }
    }
    return 1;
}

static inline int32_t tinyc_rqp(int32_t acc, int32_t mult, int32_t shift, int32_t out_offset)
{
    const int32_t m2 = (int32_t)((uint32_t)mult << 1);
    const int32_t r1 = ~shift & 31;
    /* acc * 2^32 + 2^31 through uint64 (no signed overflow); gcc makes the sum
     * one SMLAL on ARMv7-M */
    const int64_t p = (int64_t)acc * m2 + (int64_t)(((uint64_t)(uint32_t)acc << 32) | 0x80000000u);
    const int32_t x = (int32_t)(p >> 32);
    /* x - [x < 0] through uint32: it wraps only for a zero scale's x = INT32_MIN,
     * whose result does not depend on x */
    const int32_t xm = (int32_t)((uint32_t)x + (uint32_t)(x >> 31));
    return out_offset + (((xm >> r1) + 1) >> 1);
}

/* clamp(v, -128, 127): one SSAT where the core has it (ARMv7-M and later). */
static inline int32_t tinyc_sat8(int32_t v)
{
#if defined(__ARM_FEATURE_SAT) && defined(__GNUC__)
    int32_t r;
    __asm__("ssat %0, #8, %1" : "=r"(r) : "r"(v));
    return r;
#else
    return tinyc_clamp32(v, TINYC_INT8_MIN, TINYC_INT8_MAX);
#endif
}

/* xs[i] = x[i] + offset, i < n: a run for tinyc_dot4_x16 (|offset| <= 32767 - 128). */
static inline void tinyc_offset_copy(const int8_t *x, int32_t n, int32_t offset, int16_t *xs)
{
    const int8_t *const end = x + n;
    while (x != end) {
        *xs++ = (int16_t)(*x++ + offset);
    }
}

/* The portable kernels' inner loop: 4 sums sharing one run of input values,
 *   acc[j] += sum_r sum_i (x[r * x_step + i] + offset) * w[j][r * w_step + i]
 * over runs r < runs and i < n (e.g. a convolution window's kernel rows
 * against 4 output channels' weights, or a depthwise kernel's weights against
 * 4 windows of a plane).  One input value feeds 4 MACs; one call per window
 * keeps the call's set-up off each kernel row.  Wraps like the int32 sums it
 * stands for (through uint32: no signed overflow). */
typedef struct {
    const int8_t *x;      /*  0 */
    const int8_t *w[4];   /*  4 */
    int32_t n;            /* 20 */
    int32_t runs;         /* 24 */
    int32_t x_step;       /* 28 */
    int32_t w_step;       /* 32 */
    int32_t offset;       /* 36 */
    int32_t acc[4];       /* 40 */
    const int16_t *x16;   /* 56: tinyc_dot4_x16's run (the offset added) */
} tinyc_dot4_args;

#if defined(__thumb2__) && defined(__GNUC__) && !defined(__ARM_FEATURE_DSP)
typedef char tinyc_dot4_args_layout[(sizeof(void *) == 4 && sizeof(tinyc_dot4_args) == 60) ? 1 : -1];

/* One input value of a run: its 4 MACs (r11 the value plus the offset). */
#define TINYC_DOT4_ONE                 \
    "ldrsb r12, [r2], #1\n\t"          \
    "mla r6, r11, r12, r6\n\t"         \
    "ldrsb r12, [r3], #1\n\t"          \
    "mla r7, r11, r12, r7\n\t"         \
    "ldrsb r12, [r4], #1\n\t"          \
    "mla r8, r11, r12, r8\n\t"         \
    "ldrsb r12, [r5], #1\n\t"          \
    "mla r9, r11, r12, r9\n\t"

/* Two input values (r12 the first, r11 the second): their 8 MACs. */
#define TINYC_DOT4_TWO                 \
    "ldrsb lr, [r2, #1]\n\t"           \
    "mla r6, r11, lr, r6\n\t"          \
    "ldrsb lr, [r2], #2\n\t"           \
    "mla r6, r12, lr, r6\n\t"          \
    "ldrsb lr, [r3, #1]\n\t"           \
    "mla r7, r11, lr, r7\n\t"          \
    "ldrsb lr, [r3], #2\n\t"           \
    "mla r7, r12, lr, r7\n\t"          \
    "ldrsb lr, [r4, #1]\n\t"           \
    "mla r8, r11, lr, r8\n\t"          \
    "ldrsb lr, [r4], #2\n\t"           \
    "mla r8, r12, lr, r8\n\t"          \
    "ldrsb lr, [r5, #1]\n\t"           \
    "mla r9, r11, lr, r9\n\t"          \
    "ldrsb lr, [r5], #2\n\t"           \
    "mla r9, r12, lr, r9\n\t"

/* The rest of a run (r0 to r1, an even count of values of `size` bytes loaded
 * by `ld`, no offset), 4 values per step: an odd count of pairs (bit `bit` of
 * the bytes left) enters the loop at its second half.  Labels 6 and 7. */
#define TINYC_DOT4_PAIRS(ld, size, size2, bit)   \
    "sub r11, r1, r0\n\t"                       \
    "lsls r11, r11, #" bit "\n\t"               \
    "bcs 7f\n\t"                                \
    "6:\n\t"                                    \
    ld " r11, [r0, #" size "]\n\t"              \
    ld " r12, [r0], #" size2 "\n\t" TINYC_DOT4_TWO \
    "7:\n\t"                                    \
    ld " r11, [r0, #" size "]\n\t"              \
    ld " r12, [r0], #" size2 "\n\t" TINYC_DOT4_TWO \
    "cmp r0, r1\n\t"                            \
    "bne 6b\n\t"

/* Thumb-2 cores without the DSP extension (Cortex-M3): the runs two values
 * per step, 22 instructions per 8 MACs, against 24 for gcc's one value per
 * step; when the offset is 0 (a depthwise kernel's weights as x, a layer whose
 * offset is folded into its bias) 4 values per step, 19 per 8 MACs;
 * registers: r0 x, r1 its run's end, r2-r5 the 4 weight rows, r6-r9 the sums,
 * r10 the offset, r11 / r12 / lr the values.  8 bytes of stack past the
 * pushed registers (the arguments' address, the runs left). */
__attribute__((naked, noinline, unused)) static void tinyc_dot4_s8(tinyc_dot4_args *a __attribute__((unused)))
{
    __asm__ volatile(
        "push {r4-r11, lr}\n\t"
        "sub sp, sp, #8\n\t"
        "str r0, [sp]\n\t"
        "ldr r12, [r0, #24]\n\t"
        "str r12, [sp, #4]\n\t"
        "add r12, r0, #40\n\t"
        "ldm r12, {r6-r9}\n\t"
        "ldr r10, [r0, #36]\n\t"
        "add r12, r0, #4\n\t"
        "ldm r12, {r2-r5}\n\t"
        "ldr r0, [r0]\n\t"
        "ldr r12, [sp, #4]\n\t"
        "cmp r12, #0\n\t"
        "ble 9f\n\t"
        "1:\n\t"                          /* a run */
        "ldr lr, [sp]\n\t"
        "ldr r11, [lr, #20]\n\t"
        "add r1, r0, r11\n\t"
        "lsls r11, r11, #31\n\t"
        "beq 2f\n\t"
        "ldrsb r11, [r0], #1\n\t"         /* an odd n: one value first */
        "add r11, r11, r10\n\t" TINYC_DOT4_ONE
        "2:\n\t"
        "cmp r0, r1\n\t"
        "beq 4f\n\t"
        "cmp r10, #0\n\t"
        "beq 5f\n\t"
        "3:\n\t"                          /* two values per step */
        "ldrsb r11, [r0, #1]\n\t"
        "ldrsb r12, [r0], #2\n\t"
        "add r11, r11, r10\n\t"
        "add r12, r12, r10\n\t" TINYC_DOT4_TWO
        "cmp r0, r1\n\t"
        "bne 3b\n\t"
        "b 4f\n\t"
        "5:\n\t"                          /* the same without an offset */
        TINYC_DOT4_PAIRS("ldrsb", "1", "2", "31")
        "4:\n\t"                          /* the next run */
        "ldr lr, [sp]\n\t"
        "ldr r11, [lr, #20]\n\t"
        "ldr r12, [lr, #28]\n\t"
        "sub r12, r12, r11\n\t"
        "add r0, r0, r12\n\t"
        "ldr r12, [lr, #32]\n\t"
        "sub r12, r12, r11\n\t"
        "add r2, r2, r12\n\t"
        "add r3, r3, r12\n\t"
        "add r4, r4, r12\n\t"
        "add r5, r5, r12\n\t"
        "ldr r12, [sp, #4]\n\t"
        "subs r12, r12, #1\n\t"
        "str r12, [sp, #4]\n\t"
        "bne 1b\n\t"
        "9:\n\t"
        "ldr lr, [sp]\n\t"
        "add lr, lr, #40\n\t"
        "stm lr, {r6-r9}\n\t"
        "add sp, sp, #8\n\t"
        "pop {r4-r11, pc}\n\t");
}

/* One run of n values of `size` bytes at the arguments' word `xat` (r10 holds
 * the arguments' address), loaded by `ld`, offset and runs unused: 4 values
 * per step, 19 instructions per 8 MACs (`bit`: TINYC_DOT4_PAIRS's). */
#define TINYC_DOT4_RUN(ld, size, size2, xat, scale, bit)  \
    "push {r4-r11, lr}\n\t"                               \
    "mov r10, r0\n\t"                                     \
    "add r12, r10, #40\n\t"                               \
    "ldm r12, {r6-r9}\n\t"                                \
    "add r12, r10, #4\n\t"                                \
    "ldm r12, {r2-r5}\n\t"                                \
    "ldr r11, [r10, #20]\n\t"                             \
    "ldr r0, [r10, #" xat "]\n\t"                         \
    "add r1, r0, r11" scale "\n\t"                        \
    "lsls r11, r11, #31\n\t"                              \
    "beq 2f\n\t"                                          \
    ld " r11, [r0], #" size "\n\t" TINYC_DOT4_ONE         \
    "2:\n\t"                                              \
    "cmp r0, r1\n\t"                                      \
    "beq 4f\n\t"                                          \
    TINYC_DOT4_PAIRS(ld, size, size2, bit)                \
    "4:\n\t"                                              \
    "add r10, r10, #40\n\t"                               \
    "stm r10, {r6-r9}\n\t"                                \
    "pop {r4-r11, pc}\n\t"

/* tinyc_dot4_s8 over one run of int16 values x16 (the offset already added:
 * a kernel's copy of its input in the scratch). */
__attribute__((naked, noinline, unused)) static void tinyc_dot4_x16(tinyc_dot4_args *a __attribute__((unused)))
{
    __asm__ volatile(TINYC_DOT4_RUN("ldrsh", "2", "4", "56", ", lsl #1", "30"));
}

/* tinyc_dot4_s8 over one run of x with offset 0 (a layer whose offset is
 * folded into its bias), without the set-up of the runs. */
__attribute__((naked, noinline, unused)) static void tinyc_dot4_s8_run(tinyc_dot4_args *a __attribute__((unused)))
{
    __asm__ volatile(TINYC_DOT4_RUN("ldrsb", "1", "2", "0", "", "31"));
}
#else
__attribute__((noinline, unused)) static void tinyc_dot4_s8(tinyc_dot4_args *a)
{
    /* out of line: the inner loop's 13 live values then fit the registers
     * (inlined into a kernel's loops gcc kept the 4 row pointers on the stack) */
    const int8_t *x = a->x;
    const int8_t *w0 = a->w[0], *w1 = a->w[1], *w2 = a->w[2], *w3 = a->w[3];
    const int32_t offset = a->offset;
    uint32_t a0 = (uint32_t)a->acc[0], a1 = (uint32_t)a->acc[1], a2 = (uint32_t)a->acc[2], a3 = (uint32_t)a->acc[3];
    int32_t r;
    for (r = 0; r < a->runs; ++r) {
        const int8_t *const end = x + a->n;
        const int32_t skip = a->w_step - a->n;
        while (x != end) {
            const int32_t v = *x++ + offset;
            a0 += (uint32_t)(v * *w0++);
            a1 += (uint32_t)(v * *w1++);
            a2 += (uint32_t)(v * *w2++);
            a3 += (uint32_t)(v * *w3++);
        }
        x += a->x_step - a->n;
        w0 += skip;
        w1 += skip;
        w2 += skip;
        w3 += skip;
    }
    a->acc[0] = (int32_t)a0;
    a->acc[1] = (int32_t)a1;
    a->acc[2] = (int32_t)a2;
    a->acc[3] = (int32_t)a3;
}

__attribute__((noinline, unused)) static void tinyc_dot4_x16(tinyc_dot4_args *a)
{
    const int16_t *x = a->x16;
    const int16_t *const end = x + a->n;
    const int8_t *w0 = a->w[0], *w1 = a->w[1], *w2 = a->w[2], *w3 = a->w[3];
    uint32_t a0 = (uint32_t)a->acc[0], a1 = (uint32_t)a->acc[1], a2 = (uint32_t)a->acc[2], a3 = (uint32_t)a->acc[3];
    while (x != end) {
        const int32_t v = *x++;
        a0 += (uint32_t)(v * *w0++);
        a1 += (uint32_t)(v * *w1++);
        a2 += (uint32_t)(v * *w2++);
        a3 += (uint32_t)(v * *w3++);
    }
    a->acc[0] = (int32_t)a0;
    a->acc[1] = (int32_t)a1;
    a->acc[2] = (int32_t)a2;
    a->acc[3] = (int32_t)a3;
}

/* (one run of x: the general loop) */
static inline void tinyc_dot4_s8_run(tinyc_dot4_args *a)
{
    tinyc_dot4_s8(a);
}
#endif

#endif /* TINYC_FIXEDPOINT_H */
