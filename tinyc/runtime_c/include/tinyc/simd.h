/* Private helpers of tinyc's convolution kernels: the Arm DSP extension
 * (Cortex-M4 / M7 / M33 / M55: __ARM_FEATURE_DSP) and an exact fast
 * requantization.  Not part of the kernel API (kernels.h); include after it.
 *
 * TINYC_DSP is 1 when the DSP fast paths are compiled (define TINYC_NO_DSP to
 * force the portable C everywhere), else 0.  Every fast path gives exactly the
 * bytes of the portable code: int32 sums of products are exact and wrap the
 * same way in any order, and the requantization below is proved equal to
 * tinyc_mbqm + offset + clamp for every int32 accumulator (see tinyc_rq_*).
 */
#ifndef TINYC_SIMD_H
#define TINYC_SIMD_H

#include <stdint.h>

#include "tinyc/kernels.h"

/* The fast paths load and store words at any byte address (ARMv7E-M /
 * ARMv8-M mainline do, unless CCR.UNALIGN_TRP is set or the build says
 * -mno-unaligned-access) and assume little-endian byte lanes. */
#if defined(__ARM_FEATURE_DSP) && defined(__ARM_FEATURE_UNALIGNED) && !defined(__ARM_BIG_ENDIAN) && \
    defined(__GNUC__) && !defined(TINYC_NO_DSP)
#define TINYC_DSP 1
#else
#define TINYC_DSP 0
#endif

/* TINYC_MVE is 1 where the Helium kernels (mve.c) compile: the integer
 * M-profile Vector Extension (Cortex-M55 / M85), unless TINYC_NO_DSP. */
#if TINYC_DSP && defined(__ARM_FEATURE_MVE) && (__ARM_FEATURE_MVE & 1)
#define TINYC_MVE 1
#else
#define TINYC_MVE 0
#endif

#if TINYC_MVE
#include <arm_mve.h>

/* clamp(mbqm(acc, mult, shift) + out_offset, act_min, act_max) lane by lane,
 * exactly (tinyc_mbqm in fixedpoint.h, the numpy spec's sum):
 *   - x << max(shift, 0) wraps as tinyc_mbqm's shift does (VSHL by register);
 *   - VQRDMULH is gemmlowp's SaturatingRoundingDoublingHighMul: floor((2ab +
 *     2^31) / 2^32) = floor((ab + 2^30) / 2^31) equals gemmlowp's nudged
 *     truncation for either sign of ab, and both saturate only for a = b =
 *     INT32_MIN;
 *   - RoundingDivideByPOT rounds half away from zero, VRSHL half up: for a
 *     negative value and a right shift, 1 is taken off first (the shift's
 *     sign bit ANDed with the value's; VQADD keeps INT32_MIN, whose result
 *     is the same);
 *   - VQADD adds out_offset without wrapping, as the numpy spec adds in int64
 *     (a saturated sum clamps to the same bound). */
static inline int32x4_t tinyc_mve_requantize(int32x4_t acc, int32x4_t mult, int32x4_t shift, int32_t out_offset,
                                             int32x4_t act_min, int32x4_t act_max)
{
    const int32x4_t right = vminq_s32(shift, vdupq_n_s32(0)); /* -max(-shift, 0) */
    int32x4_t v = vqrdmulhq_s32(vshlq_s32(acc, vmaxq_s32(shift, vdupq_n_s32(0))), mult);
    v = vqaddq_s32(v, vshrq_n_s32(vandq_s32(v, right), 31));
    v = vqaddq_n_s32(vrshlq_s32(v, right), out_offset);
    return vminq_s32(vmaxq_s32(v, act_min), act_max);
}
#endif

/* The portable kernels are the fallback of the DSP builds (exotic parameters):
 * compiled for size there, to keep the flash cost of the fast paths down. */
#if TINYC_DSP
#define TINYC_FALLBACK __attribute__((cold, noinline))
#else
#define TINYC_FALLBACK
#endif

/* The kernel variants a generated project needs: tinyc writes tinyc_config.h
 * beside the model (tinyc/codegen/variants.py) with TINYC_USES_<VARIANT> 0 or 1,
 * and the loops no layer takes compile away.  Without it (the runtime on its
 * own) every variant is compiled. */
#if defined(__has_include)
#if __has_include("tinyc_config.h")
#include "tinyc_config.h"
#endif
#endif
#ifdef TINYC_CONFIG
#define TINYC_USES(variant) (TINYC_USES_##variant)
#else
#define TINYC_USES(variant) 1
#endif

#if TINYC_DSP
#include <arm_acle.h>

/* Kernels compiled twice from one body (e.g. with and without a clamp) need
 * the body inlined even where gcc would rather share it. */
#define TINYC_ALWAYS_INLINE static inline __attribute__((always_inline))

/* A 32-bit load from any address (ARMv7E-M / ARMv8-M mainline load words
 * unaligned: one LDR).  The may_alias type keeps it legal C for gcc / clang. */
typedef uint32_t __attribute__((aligned(1), may_alias)) tinyc_u32_unaligned;
typedef uint16_t __attribute__((aligned(1), may_alias)) tinyc_u16_unaligned;

static inline uint32_t tinyc_ld4(const int8_t *p)
{
    return *(const tinyc_u32_unaligned *)(const void *)p;
}

static inline void tinyc_st2(int8_t *p, uint32_t v)
{
    *(tinyc_u16_unaligned *)(void *)p = (uint16_t)v;
}

static inline void tinyc_st4(int8_t *p, uint32_t v)
{
    *(tinyc_u32_unaligned *)(void *)p = v;
}

/* Lanes: for x = bytes [b0 b1 b2 b3] (b0 lowest),
 *   tinyc_sxtb16(x)      = (int16) b0, b2  (low half, high half)
 *   tinyc_sxtb16_r8(x)   = (int16) b1, b3
 *   tinyc_sxtab16(a, x)  = a + (b0, b2) lane by lane (16-bit wrap), likewise _r8.
 * SMLAD(a, b, acc) = acc + a.lo * b.lo + a.hi * b.hi. */
static inline uint32_t tinyc_sxtb16(uint32_t x)
{
    return (uint32_t)__sxtb16((int32_t)x);
}

static inline uint32_t tinyc_sxtb16_r8(uint32_t x)
{
    uint32_t r;
    __asm__("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(x));
    return r;
}

static inline uint32_t tinyc_sxtab16(uint32_t a, uint32_t x)
{
    return (uint32_t)__sxtab16((int32_t)a, (int32_t)x);
}

static inline uint32_t tinyc_sxtab16_r8(uint32_t a, uint32_t x)
{
    uint32_t r;
    __asm__("sxtab16 %0, %1, %2, ror #8" : "=r"(r) : "r"(a), "r"(x));
    return r;
}

static inline int32_t tinyc_smlad(uint32_t a, uint32_t b, int32_t acc)
{
    return __smlad((int32_t)a, (int32_t)b, acc);
}

static inline int32_t tinyc_smladx(uint32_t a, uint32_t b, int32_t acc)
{
    return __smladx((int32_t)a, (int32_t)b, acc);
}

/* acc + a.lo * b.lo etc. (SMLABB / SMLABT / SMLATB / SMLATT). */
static inline int32_t tinyc_smlabb(uint32_t a, uint32_t b, int32_t acc)
{
    return __smlabb((int32_t)a, (int32_t)b, acc);
}

static inline int32_t tinyc_smlabt(uint32_t a, uint32_t b, int32_t acc)
{
    return __smlabt((int32_t)a, (int32_t)b, acc);
}

static inline int32_t tinyc_smlatb(uint32_t a, uint32_t b, int32_t acc)
{
    return __smlatb((int32_t)a, (int32_t)b, acc);
}

static inline int32_t tinyc_smlatt(uint32_t a, uint32_t b, int32_t acc)
{
    return __smlatt((int32_t)a, (int32_t)b, acc);
}

/* (int16, int16) lanes -> one word. */
static inline uint32_t tinyc_pack16(int32_t lo, int32_t hi)
{
    return ((uint32_t)lo & 0xFFFFu) | ((uint32_t)hi << 16);
}

/* ---- exact fast requantization ---------------------------------------------
 *
 * out = clamp(tinyc_mbqm(acc, mult, shift) + out_offset, act_min, act_max)
 * for any int32 acc, computed as
 *
 *   a = acc << left                       (left = max(shift, 0), wrapping)
 *   x = SMMLAR(a, m2, c * a)              SaturatingRoundingDoublingHighMul
 *   y = (x + ((x >> 31) & sm)) >> k
 *   v = QADD(y, npo) >> r
 *   out = clamp(v, act_min, act_max)      (SSAT #8 when the range is [-128, 127])
 *
 * with per-channel constants from tinyc_rq_make.  Why it is exact:
 *
 * - SMMLAR(a, b, c) = floor((c * 2^32 + a * b + 2^31) / 2^32).  With
 *   2 * mult = m2 + c * 2^32 (m2 the int32 bits of 2 * mult, c in {-1, 0, 1}),
 *   x = floor((2 * a * mult + 2^31) / 2^32) = floor((a * mult + 2^30) / 2^31),
 *   which is gemmlowp's SRDHM: its nudge 1 - 2^30 for a negative product
 *   followed by truncation toward zero is the same floor.  SRDHM saturates only
 *   for a = mult = INT32_MIN, and mult = INT32_MIN is excluded; then
 *   |x| <= |a| * |mult| / 2^31 + 1/2 < 2^31, so x != INT32_MIN.
 * - RoundingDivideByPOT(x, right) (right = max(-shift, 0), round half away
 *   from zero) is floor((x - [x < 0] + 2^(right-1)) / 2^right) for right > 0
 *   (sm = -1 then; right = 0 leaves x alone: sm = 0, npo without nudge).
 *   x - [x < 0] cannot overflow since x != INT32_MIN.
 * - A right shift over 23 is split: k = max(right - 23, 0), r = right - k, and
 *   floor((y + 2^(right-1)) / 2^right) = floor((floor(y / 2^k) + 2^(r-1)) / 2^r)
 *   (nested floors, 2^(r-1) an integer).  So r <= 23.
 * - npo = 2^(r-1) (if right > 0) + out_offset * 2^r: adding out_offset * 2^r
 *   before the floor adds out_offset after it; |out_offset| <= 255 and r <= 23
 *   keep npo inside int32.  QADD saturates only when the exact sum leaves int32;
 *   then the exact result and the saturated one are both >= 2^(31-r) - 1 >= 255
 *   (or both <= -256), so both clamp to the same bound of [-128, 127].  (The
 *   portable code adds out_offset in int32 after the multiply, which could wrap
 *   where the numpy spec's sum does not; this computes the spec's value.)
 *
 * Channel classes: 0 (the common case: mult in [2^30, 2^31), 1 <= right <= 23,
 * no left shift) needs c = 1, sm = -1 and k = 0: five instructions
 * (SMMLAR with a as the addend, ADD x, x, ASR #31, QADD, ASR, SSAT); 1 (also
 * right 0 or over 23) adds the mask and the pre-shift; 2 (a left shift, a zero
 * or negative or unnormalized multiplier) the rest.  Layers with out_offset
 * outside [-255, 255], a clamp range outside [-128, 127], a shift outside
 * [-31, 30] or a multiplier INT32_MIN use the portable code. */
typedef struct {
    int32_t m2, c, left, sm, k, npo, r, cls;
} tinyc_rq;

static inline int32_t tinyc_smmlar(int32_t a, int32_t b, int32_t c)
{
    int32_t r;
    __asm__("smmlar %0, %1, %2, %3" : "=r"(r) : "r"(a), "r"(b), "r"(c));
    return r;
}

static inline int tinyc_rq_layer_ok(const int32_t *mult, const int32_t *shift, int32_t n, int32_t out_offset,
                                    int32_t act_min, int32_t act_max)
{
    int32_t i;
    if (out_offset < -255 || out_offset > 255 || act_min < -128 || act_max > 127 || act_min > act_max) {
        return 0;
    }
    for (i = 0; i < n; ++i) {
        if (mult[i] == INT32_MIN || shift[i] < -31 || shift[i] > 30) {
            return 0;
        }
    }
    return 1;
}

/* (defined once, in conv.c) */
tinyc_rq tinyc_rq_make(int32_t mult, int32_t shift, int32_t out_offset);

/* A class 0 channel's constants (m2, npo, r; c = 1, sm = -1, k = 0, no left
 * shift); 0 when the channel is not of class 0. */
static inline int tinyc_rq_fast(int32_t mult, int32_t shift, int32_t out_offset, int32_t *m2, int32_t *npo,
                                int32_t *r)
{
    const int32_t right = -shift;
    if (mult < (1 << 30) || right < 1 || right > 23) {
        return 0;
    }
    *m2 = (int32_t)((uint32_t)mult << 1);
    *r = right;
    *npo = (int32_t)(((uint32_t)1 << (right - 1)) + ((uint32_t)out_offset << right));
    return 1;
}

/* The requantized value before the clamp, class 0. */
static inline int32_t tinyc_rq_value0(int32_t acc, int32_t m2, int32_t npo, int32_t r)
{
    int32_t x = tinyc_smmlar(acc, m2, acc);
    x += x >> 31;
    return __qadd(x, npo) >> r;
}

/* The requantized value before the clamp, any class (out of line: the hot
 * loops use the class 0 forms). */
__attribute__((cold, noinline, unused)) static int32_t tinyc_rq_value(int32_t acc, const tinyc_rq *q)
{
    const int32_t a = (int32_t)((uint32_t)acc << q->left);
    int32_t x = tinyc_smmlar(a, q->m2, (int32_t)((uint32_t)a * (uint32_t)q->c));
    x = (x + ((x >> 31) & q->sm)) >> q->k;
    return __qadd(x, q->npo) >> q->r;
}

#endif /* TINYC_DSP */

#endif /* TINYC_SIMD_H */
