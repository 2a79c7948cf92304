/* int8 activations: requantize / clamp, and TFLM's integer Softmax, Logistic
 * and HardSwish.  The transcendental parts are gemmlowp's fixed-point
 * (fixedpoint/fixedpoint.h) ported to plain int32 C: raw values only, the Q
 * format of each value noted in comments ("Qm" = m integer bits, 31 - m
 * fractional).  No float anywhere.  Executable spec: tinyc/kernels/activation.py
 * on top of tinyc/quant/fixedpoint.py. */
#include "tinyc/kernels.h"
#include "tinyc/fixedpoint.h"

/* ---- requantize / clamp -------------------------------------------------- */

void tinyc_requantize_s8(const tinyc_requantize_params *p, const int8_t *in, int8_t *out)
{
    /* Element i is read before it is written: safe in place. */
    int32_t i;
    for (i = 0; i < p->size; ++i) {
        const int32_t v = tinyc_mbqm((int32_t)in[i] + p->in_offset, p->mult, p->shift) + p->out_offset;
        out[i] = (int8_t)tinyc_clamp32(v, p->act_min, p->act_max);
    }
}

void tinyc_clamp_s8(int32_t size, int32_t lo, int32_t hi, const int8_t *in, int8_t *out)
{
    int32_t i;
    for (i = 0; i < size; ++i) {
        out[i] = (int8_t)tinyc_clamp32(in[i], lo, hi);
    }
}

/* ---- gemmlowp int32 fixed point ---------------------------------------- */

/* gemmlowp's Add / Sub / negate on raw int32 wrap; C signed overflow is
 * undefined, so they go through uint32 (modular conversion back on every
 * target, as fixedpoint.h already assumes). */
static inline int32_t add32(int32_t a, int32_t b)
{
    return (int32_t)((uint32_t)a + (uint32_t)b);
}

static inline int32_t sub32(int32_t a, int32_t b)
{
    return (int32_t)((uint32_t)a - (uint32_t)b);
}

/* SaturatingRoundingMultiplyByPOT<exponent>: a saturating left shift for
 * exponent > 0, RoundingDivideByPOT for exponent < 0.  Also gemmlowp's
 * Rescale<dst>(FixedPoint<src>) with exponent = src - dst. */
static inline int32_t srmbpot(int32_t x, int32_t exponent)
{
    int32_t threshold;
    if (exponent == 0) {
        return x;
    }
    if (exponent < 0) {
        return tinyc_rdbp(x, -exponent);
    }
    threshold = (int32_t)(((uint32_t)1 << (31 - exponent)) - 1u);
    if (x > threshold) {
        return INT32_MAX;
    }
    if (x < -threshold) {
        return INT32_MIN;
    }
    return (int32_t)((uint32_t)x << exponent);
}

/* exp(a) for a in [-1/4, 0): Q0 in, Q0 out.  Taylor series around -1/8. */
static int32_t exp_on_interval_between_negative_one_quarter_and_0_excl(int32_t a)
{
    const int32_t constant_term = 1895147668;    /* exp(-1/8) */
    const int32_t constant_1_over_3 = 715827883;
    const int32_t x = add32(a, (int32_t)1 << 28); /* a + 1/8 */
    const int32_t x2 = tinyc_srdhm(x, x);
    const int32_t x3 = tinyc_srdhm(x2, x);
    const int32_t x4 = tinyc_srdhm(x2, x2);
    const int32_t x4_over_4 = tinyc_rdbp(x4, 2);
    const int32_t poly = tinyc_rdbp(add32(tinyc_srdhm(add32(x4_over_4, x3), constant_1_over_3), x2), 1);
    return add32(constant_term, tinyc_srdhm(constant_term, add32(x, poly)));
}

/* exp(a) for a <= 0 given in Q(integer_bits) (1 <= integer_bits <= 30; tinyc
 * uses 4 and 5); result Q0.  exp of the fractional quarter comes from the
 * series, the rest from a barrel of exp(-2^k) factors selected by the bits
 * of the remainder. */
static int32_t exp_on_negative_values(int32_t a, int32_t integer_bits)
{
    /* exp(-2^k) in Q0 for k = -2 .. 4 */
    static const int32_t barrel[7] = {1672461947, 1302514674, 790015084, 290630308, 39332535, 720401, 242};
    const int32_t frac = 31 - integer_bits;
    const int32_t one_quarter = (int32_t)1 << (frac - 2);
    const int32_t mask = one_quarter - 1;
    const int32_t a_mod_quarter_minus_one_quarter = (a & mask) - one_quarter;
    int32_t result = exp_on_interval_between_negative_one_quarter_and_0_excl(
        srmbpot(a_mod_quarter_minus_one_quarter, integer_bits)); /* Rescale<0> */
    const int32_t remainder = sub32(a_mod_quarter_minus_one_quarter, a);
    int32_t k;
    for (k = 0; k < 7; ++k) {
        const int32_t exponent = k - 2;
        if (integer_bits > exponent && (remainder & ((int32_t)1 << (frac + exponent))) != 0) {
            result = tinyc_srdhm(result, barrel[k]);
        }
    }
    if (integer_bits > 5 && a < -((int32_t)1 << (36 - integer_bits))) { /* below -32: exp underflows */
        result = 0;
    }
    return a == 0 ? INT32_MAX : result;
}

/* The Newton-Raphson step shared by 1 / (1 + a) and (1 - a) / (1 + a), a in
 * [0, 1): returns 1 / d in Q2 for d = (1 + a) / 2 (half_denominator, Q0), from
 * the initial guess 48/17 - 32/17 * d and three iterations. */
static int32_t half_denominator_of(int32_t a)
{
    /* RoundingHalfSum(a, One()): (a + b +- 1) / 2 truncating, done in 64 bits
     * with an arithmetic shift (adding 1 to a negative value first turns the
     * floor of >> into C's truncation) rather than an int64 division, which
     * 32-bit targets would implement with a libgcc call. */
    const int64_t sum = (int64_t)a + (int64_t)INT32_MAX;
    const int64_t v = sum + (sum >= 0 ? 1 : -1);
    return (int32_t)((v + (v < 0 ? 1 : 0)) >> 1);
}

static int32_t newton_reciprocal_f2(int32_t half_denominator)
{
    const int32_t constant_48_over_17 = 1515870810;
    const int32_t constant_neg_32_over_17 = -1010580540;
    const int32_t f2_one = (int32_t)1 << 29;
    int32_t x = add32(constant_48_over_17, tinyc_srdhm(half_denominator, constant_neg_32_over_17));
    int32_t i;
    for (i = 0; i < 3; ++i) {
        const int32_t half_denominator_times_x = tinyc_srdhm(half_denominator, x);     /* Q2 */
        const int32_t one_minus = sub32(f2_one, half_denominator_times_x);            /* Q2 */
        x = add32(x, srmbpot(tinyc_srdhm(x, one_minus), 2));                          /* Q4 -> Q2 */
    }
    return x;
}

/* 1 / (1 + a) for a in [0, 1): Q0 in, Q0 out. */
static int32_t one_over_one_plus_x_for_x_in_0_1(int32_t a)
{
    /* ExactMulByPot<-1> (same raw, Q1), then Rescale<0>. */
    return srmbpot(newton_reciprocal_f2(half_denominator_of(a)), 1);
}

/* (1 - a) / (1 + a) for a in [0, 1): Q0 in, Q0 out. */
static int32_t one_minus_x_over_one_plus_x_for_x_in_0_1(int32_t a)
{
    /* 1 / d - 1 in Q2, then Rescale<0> */
    return srmbpot(sub32(newton_reciprocal_f2(half_denominator_of(a)), (int32_t)1 << 29), 2);
}

/* gemmlowp logistic(a), a in Q(integer_bits); result Q0. */
static int32_t fixed_point_logistic(int32_t a, int32_t integer_bits)
{
    int32_t abs_input, result_if_positive;
    if (a == 0) {
        return (int32_t)1 << 30; /* one half */
    }
    abs_input = a > 0 ? a : sub32(0, a);
    result_if_positive = one_over_one_plus_x_for_x_in_0_1(exp_on_negative_values(sub32(0, abs_input), integer_bits));
    return a > 0 ? result_if_positive : sub32(INT32_MAX, result_if_positive);
}

/* CountLeadingZeros(uint32), 32 for 0: a binary search, since __builtin_clz
 * is not C99. */
static inline int32_t clz32(uint32_t x)
{
    int32_t n = 0;
    if (x == 0) {
        return 32;
    }
    if ((x & 0xFFFF0000u) == 0) {
        n += 16;
        x <<= 16;
    }
    if ((x & 0xFF000000u) == 0) {
        n += 8;
        x <<= 8;
    }
    if ((x & 0xF0000000u) == 0) {
        n += 4;
        x <<= 4;
    }
    if ((x & 0xC0000000u) == 0) {
        n += 2;
        x <<= 2;
    }
    if ((x & 0x80000000u) == 0) {
        n += 1;
    }
    return n;
}

/* ---- softmax -------------------------------------------------------------- */

#define SOFTMAX_SCALED_DIFF_INTEGER_BITS 5 /* exp input in Q5 */
#define SOFTMAX_ACCUMULATION_INTEGER_BITS 12 /* sum of exps in Q12 */

/* exp((x - max) * beta * input_scale) in Q0, for diff >= diff_min (which keeps
 * diff * 2^input_left_shift inside int32). */
static inline int32_t softmax_exp(const tinyc_softmax_params *p, int32_t diff)
{
    const int32_t shifted = (int32_t)((uint32_t)diff << p->input_left_shift);
    return exp_on_negative_values(tinyc_srdhm(shifted, p->input_multiplier), SOFTMAX_SCALED_DIFF_INTEGER_BITS);
}

void tinyc_softmax_s8(const tinyc_softmax_params *p, const int8_t *in, int8_t *out)
{
    int32_t r, c;
    for (r = 0; r < p->rows; ++r) {
        const int8_t *x = in + r * p->depth;
        int8_t *y = out + r * p->depth;
        int32_t max_in_row = TINYC_INT8_MIN;
        uint32_t sum_of_exps = 0; /* Q12; wraps like TFLite's int32 sum */
        uint32_t u;
        int32_t headroom_plus_one, num_bits_over_unit, shifted_scale, exponent;
        for (c = 0; c < p->depth; ++c) {
            if (x[c] > max_in_row) {
                max_in_row = x[c];
            }
        }
        for (c = 0; c < p->depth; ++c) {
            const int32_t diff = (int32_t)x[c] - max_in_row;
            if (diff >= p->diff_min) {
                sum_of_exps += (uint32_t)srmbpot(softmax_exp(p, diff), -SOFTMAX_ACCUMULATION_INTEGER_BITS);
            }
        }
        /* GetReciprocal: normalize the sum to [1, 2) and take 1 / sum as
         * one_over_one_plus_x(sum - 1) with num_bits_over_unit extra bits. */
        headroom_plus_one = clz32(sum_of_exps);
        num_bits_over_unit = SOFTMAX_ACCUMULATION_INTEGER_BITS - headroom_plus_one;
        u = headroom_plus_one < 32 ? sum_of_exps << headroom_plus_one : 0u;
        shifted_scale = one_over_one_plus_x_for_x_in_0_1((int32_t)(u - 0x80000000u));
        exponent = num_bits_over_unit + 31 - 8;
        for (c = 0; c < p->depth; ++c) {
            const int32_t diff = (int32_t)x[c] - max_in_row;
            int32_t v = TINYC_INT8_MIN;
            if (diff >= p->diff_min) {
                const int32_t prod = tinyc_srdhm(shifted_scale, softmax_exp(p, diff));
                /* exponent > 31 (sum of exps >= 512: every probability is
                 * below 1/512) is undefined behaviour in TFLite's
                 * RoundingDivideByPOT (an int32 shift by >= 32); tinyc takes
                 * the exact rounding of prod / 2^exponent, 0 for
                 * 0 <= prod < 2^31, i.e. output -128. */
                const int32_t unsat = exponent > 31 ? 0 : tinyc_rdbp(prod, exponent);
                v = tinyc_clamp32(unsat + TINYC_INT8_MIN, TINYC_INT8_MIN, TINYC_INT8_MAX);
            }
            y[c] = (int8_t)v;
        }
    }
}

/* gemmlowp tanh(a), a in Q(integer_bits); result Q0:
 * (1 - exp(-2|a|)) / (1 + exp(-2|a|)), the sign restored. */
static int32_t fixed_point_tanh(int32_t a, int32_t integer_bits)
{
    int32_t n, t;
    if (a == 0) {
        return 0;
    }
    n = a < 0 ? a : sub32(0, a);
    /* exp(2n) = exp of n read with one more integer bit (ExactMulByPot<1>) */
    t = one_minus_x_over_one_plus_x_for_x_in_0_1(exp_on_negative_values(n, integer_bits + 1));
    return a < 0 ? sub32(0, t) : t;
}

/* ---- logistic, tanh ------------------------------------------------------- */

/* TFLM's int8 Logistic and Tanh share this body: d = x - zp at or beyond the
 * input radius saturates; inside it, q4 = mbqm(d) (Q4.27) goes through the
 * gemmlowp function (Q0.31 out), then clamp(rdbp(y, shift) + offset). */
static void saturating_activation(const tinyc_logistic_params *p, const int8_t *in, int8_t *out, int32_t is_tanh)
{
    const int32_t radius = p->input_range_radius;
    const int32_t shift = is_tanh ? 31 - 7 : 31 - 8;
    const int32_t offset = is_tanh ? 0 : TINYC_INT8_MIN;
    int32_t i;
    for (i = 0; i < p->size; ++i) {
        const int32_t d = (int32_t)in[i] - p->input_zero_point;
        int32_t v;
        if (d <= -radius) {
            v = TINYC_INT8_MIN;
        } else if (d >= radius) {
            v = TINYC_INT8_MAX;
        } else {
            /* |d| < radius keeps d * 2^input_left_shift inside int32. */
            const int32_t q4 = tinyc_mbqm(d, p->input_multiplier, p->input_left_shift);
            const int32_t q0 = is_tanh ? fixed_point_tanh(q4, 4) : fixed_point_logistic(q4, 4);
            v = tinyc_clamp32(tinyc_rdbp(q0, shift) + offset, TINYC_INT8_MIN, TINYC_INT8_MAX);
        }
        out[i] = (int8_t)v;
    }
}

void tinyc_logistic_s8(const tinyc_logistic_params *p, const int8_t *in, int8_t *out)
{
    saturating_activation(p, in, out, 0);
}

void tinyc_tanh_s8(const tinyc_logistic_params *p, const int8_t *in, int8_t *out)
{
    saturating_activation(p, in, out, 1);
}

/* ---- leaky relu, lookup table --------------------------------------------- */

void tinyc_leaky_relu_s8(const tinyc_leaky_relu_params *p, const int8_t *in, int8_t *out)
{
    int32_t i;
    for (i = 0; i < p->size; ++i) {
        const int32_t d = (int32_t)in[i] - p->in_zero_point;
        const int32_t v = d >= 0 ? tinyc_mbqm(d, p->identity_mult, p->identity_shift)
                                 : tinyc_mbqm(d, p->alpha_mult, p->alpha_shift);
        out[i] = (int8_t)tinyc_clamp32(v + p->out_zero_point, TINYC_INT8_MIN, TINYC_INT8_MAX);
    }
}

void tinyc_lut_s8(const tinyc_lut_params *p, const int8_t *in, const int8_t *table, int8_t *out)
{
    int32_t i;
    for (i = 0; i < p->size; ++i) {
        out[i] = table[(int32_t)in[i] + 128];
    }
}

/* ---- hard swish (int16 fixed point) -------------------------------------- */

/* int16 values are held in int32; wrap16 is the int16_t conversion TFLite
 * applies after each step (modular, written out to stay defined). */
static inline int32_t wrap16(int32_t x)
{
    return (int32_t)(((uint32_t)x + 0x8000u) & 0xFFFFu) - 0x8000;
}

/* gemmlowp SaturatingRoundingDoublingHighMul(int16, int16). */
static inline int32_t srdhm16(int32_t a, int32_t b)
{
    const int32_t ab = a * b; /* |ab| <= 2^30 */
    const int32_t nudge = ab >= 0 ? (1 << 14) : (1 - (1 << 14));
    if (a == b && a == -32768) {
        return 32767;
    }
    return wrap16((ab + nudge) / (1 << 15)); /* truncating, as in gemmlowp */
}

/* TFLite SaturatingDoublingHighMul(int16, int16): truncating, not rounding. */
static inline int32_t sdhm16(int32_t a, int32_t b)
{
    if (a == b && a == -32768) {
        return 32767;
    }
    return wrap16((a * b) / (1 << 15));
}

/* gemmlowp RoundingDivideByPOT on int16, 0 <= exponent <= 31; the mask is
 * Dup<int16_t>((1ll << exponent) - 1), i.e. truncated to 16 bits. */
static inline int32_t rdbp16(int32_t x, int32_t exponent)
{
    const int32_t mask = wrap16((int32_t)(((uint32_t)1 << exponent) - 1u));
    const int32_t remainder = x & mask;
    const int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
    return wrap16((x >> exponent) + (remainder > threshold ? 1 : 0));
}

/* TFLite SaturatingLeftShift(int16 value, int amount). */
static inline int32_t sat_left_shift16(int32_t x, int32_t amount)
{
    int32_t v;
    if (amount >= 16) {
        return x > 0 ? 32767 : (x < 0 ? -32768 : 0);
    }
    v = x * (1 << amount); /* |x| <= 2^15, amount <= 15: fits */
    return tinyc_clamp32(v, -32768, 32767);
}

void tinyc_hard_swish_s8(const tinyc_hard_swish_params *p, const int8_t *in, int8_t *out)
{
    const int32_t e = p->reluish_multiplier_exponent;
    int32_t i;
    for (i = 0; i < p->size; ++i) {
        const int32_t v = wrap16((int32_t)in[i] - p->input_zero_point);
        const int32_t hires = wrap16(v * (1 << 7));
        const int32_t pre_out = srdhm16(hires, p->output_multiplier_fixedpoint_int16);
        int32_t r = hires;
        int32_t o;
        /* The "reluish" factor: 3.0 rescaled to 32768, then mapped to [0, 1]. */
        if (e > 0) {
            r = sat_left_shift16(r, e - 1);
        }
        r = srdhm16(r, p->reluish_multiplier_fixedpoint_int16);
        if (e > 0) {
            r = sat_left_shift16(r, 1);
        }
        if (e < 0) {
            r = rdbp16(r, -e);
        }
        r = wrap16((r + (1 << 15)) >> 1);
        o = wrap16(rdbp16(sdhm16(r, pre_out), -p->output_multiplier_exponent) + p->output_zero_point);
        out[i] = (int8_t)tinyc_clamp32(o, TINYC_INT8_MIN, TINYC_INT8_MAX);
    }
}
