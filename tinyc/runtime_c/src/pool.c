/* int8 pooling and mean: TFLite Micro's reference MaxPool, AveragePool and
 * QuantizedMeanOrSum (mean case).  The numpy spec is tinyc/kernels/pool.py.
 * Pools share scale and zero point between input and output, so they work on
 * the raw int8 values.
 */
#include "tinyc/kernels.h"
#include "tinyc/fixedpoint.h"
#include "tinyc/simd.h"

#if TINYC_DSP
/* Per byte lane: the signed maximum / minimum of a and b (SSUB8 sets GE
 * where a >= b, SEL picks its first operand there, the second elsewhere; one
 * statement, so nothing runs in between). */
static inline uint32_t max_s8x4(uint32_t a, uint32_t b)
{
    uint32_t r;
    __asm__("ssub8 %0, %1, %2\n\tsel %0, %1, %2" : "=&r"(r) : "r"(a), "r"(b));
    return r;
}

static inline uint32_t min_s8x4(uint32_t a, uint32_t b)
{
    uint32_t r;
    __asm__("ssub8 %0, %1, %2\n\tsel %0, %2, %1" : "=&r"(r) : "r"(a), "r"(b));
    return r;
}

/* A byte replicated into the 4 lanes. */
static inline uint32_t splat_s8(int32_t v)
{
    return (uint32_t)(uint8_t)v * 0x01010101u;
}

/* 4 running sums of adjacent int8 values: SXTAB16 adds the even and the odd
 * bytes of a word into 16-bit lanes, flushed into int32 every 255 words
 * (|lane| <= 255 * 128 < 2^15). */
typedef struct {
    uint32_t e, o;
    int32_t n;
    int32_t s[4];
} sum4;

static inline void sum4_flush(sum4 *a)
{
    a->s[0] += (int16_t)a->e;
    a->s[2] += (int32_t)a->e >> 16;
    a->s[1] += (int16_t)a->o;
    a->s[3] += (int32_t)a->o >> 16;
    a->e = a->o = 0;
    a->n = 0;
}

static inline void sum4_add(sum4 *a, const int8_t *x)
{
    const uint32_t v = tinyc_ld4(x);
    a->e = tinyc_sxtab16(a->e, v);
    a->o = tinyc_sxtab16_r8(a->o, v);
    if (++a->n == 255) {
        sum4_flush(a);
    }
}
#endif

/* Window taps f in [*first, *end) satisfy 0 <= origin + f * dil < size. */
static void tap_range(int32_t origin, int32_t k, int32_t dil, int32_t size, int32_t *first, int32_t *end)
{
    /* ceil(n / dil) for n >= 0; TFLite's pools (dil 1) take no division */
    int32_t f0 = origin >= 0 ? 0 : (dil == 1 ? -origin : (-origin + dil - 1) / dil);
    int32_t f1 = size - origin <= 0 ? 0 : (dil == 1 ? size - origin : (size - origin + dil - 1) / dil);
    if (f1 > k) {
        f1 = k;
    }
    if (f1 < f0) {
        f1 = f0;                                  /* window wholly in the padding */
    }
    *first = f0;
    *end = f1;
}

void tinyc_max_pool_s8(const tinyc_pool_params *p, const int8_t *in, int8_t *out)
{
#if TINYC_DSP
    const uint32_t lo4 = splat_s8(tinyc_clamp32(p->act_min, -128, 127));
    const uint32_t hi4 = splat_s8(tinyc_clamp32(p->act_max, -128, 127));
    const int clamp_ok = p->act_min >= -128 && p->act_max <= 127 && p->act_min <= p->act_max;
#endif
    const int32_t ch = p->channels;
    const int32_t row_step = p->in_w * ch * p->dil_h;
    const int32_t tap_step = ch * p->dil_w;
    int32_t oy, ox, c, ky, kx;

    for (oy = 0; oy < p->out_h; ++oy) {
        const int32_t iy0 = oy * p->stride_h - p->pad_t;
        int32_t ky0, ky1;
        tap_range(iy0, p->k_h, p->dil_h, p->in_h, &ky0, &ky1);
        for (ox = 0; ox < p->out_w; ++ox) {
            const int32_t ix0 = ox * p->stride_w - p->pad_l;
            int32_t kx0, kx1, win;
            tap_range(ix0, p->k_w, p->dil_w, p->in_w, &kx0, &kx1);
            /* Index of the first in-bounds tap (channel 0); read only when
             * the window is not empty. */
            win = ((iy0 + ky0 * p->dil_h) * p->in_w + (ix0 + kx0 * p->dil_w)) * ch;
            c = 0;
#if TINYC_DSP
            for (; clamp_ok && c + 4 <= ch; c += 4) {
                /* 4 channels per word, byte-lane maximum */
                uint32_t mx = 0x80808080u;
                int32_t row = win + c;
                for (ky = ky0; ky < ky1; ++ky) {
                    int32_t at = row;
                    for (kx = kx0; kx < kx1; ++kx) {
                        mx = max_s8x4(tinyc_ld4(in + at), mx);
                        at += tap_step;
                    }
                    row += row_step;
                }
                mx = min_s8x4(max_s8x4(mx, lo4), hi4);
                tinyc_st4(out, mx);
                out += 4;
            }
#endif
            for (; c < ch; ++c) {
                /* As in TFLM the running max starts at -128; padded taps are skipped. */
                int32_t mx = TINYC_INT8_MIN;
                int32_t row = win + c;
                for (ky = ky0; ky < ky1; ++ky) {
                    int32_t at = row;
                    for (kx = kx0; kx < kx1; ++kx) {
                        const int32_t v = in[at];
                        mx = v > mx ? v : mx;
                        at += tap_step;
                    }
                    row += row_step;
                }
                *out++ = (int8_t)tinyc_clamp32(mx, p->act_min, p->act_max);
            }
        }
    }
}

void tinyc_avg_pool_s8(const tinyc_pool_params *p, const int8_t *in, int8_t *out)
{
    const int32_t ch = p->channels;
    const int32_t row_step = p->in_w * ch * p->dil_h;
    const int32_t tap_step = ch * p->dil_w;
    const int32_t window = p->k_h * p->k_w;
    int32_t oy, ox, c, ky, kx;

    for (oy = 0; oy < p->out_h; ++oy) {
        const int32_t iy0 = oy * p->stride_h - p->pad_t;
        int32_t ky0, ky1;
        tap_range(iy0, p->k_h, p->dil_h, p->in_h, &ky0, &ky1);
        for (ox = 0; ox < p->out_w; ++ox) {
            const int32_t ix0 = ox * p->stride_w - p->pad_l;
            int32_t kx0, kx1, win, valid, count, pad_sum;
            tap_range(ix0, p->k_w, p->dil_w, p->in_w, &kx0, &kx1);
            win = ((iy0 + ky0 * p->dil_h) * p->in_w + (ix0 + kx0 * p->dil_w)) * ch;
            valid = (ky1 - ky0) * (kx1 - kx0);
            if (p->count_include_pad) {
                /* A folded zero-point Pad: every tap counts, padded ones add pad_value. */
                count = window;
                pad_sum = (window - valid) * p->pad_value;
            } else {
                count = valid;
                pad_sum = 0;
            }
            if (count < 1) {
                count = 1;                        /* empty window: acc is 0, so is the result */
            }
            c = 0;
#if TINYC_MVE
            for (; c + 16 <= ch; c += 16) {
                /* 16 channels per tap: 4 widening loads and 4 adds */
                int32_t acc[16], j;
                int32x4_t s0 = vdupq_n_s32(pad_sum), s1 = s0, s2 = s0, s3 = s0;
                int32_t row = win + c;
                for (ky = ky0; ky < ky1; ++ky) {
                    int32_t at = row;
                    for (kx = kx0; kx < kx1; ++kx) {
                        s0 = vaddq_s32(s0, vldrbq_s32(in + at));
                        s1 = vaddq_s32(s1, vldrbq_s32(in + at + 4));
                        s2 = vaddq_s32(s2, vldrbq_s32(in + at + 8));
                        s3 = vaddq_s32(s3, vldrbq_s32(in + at + 12));
                        at += tap_step;
                    }
                    row += row_step;
                }
                vst1q_s32(acc, s0);
                vst1q_s32(acc + 4, s1);
                vst1q_s32(acc + 8, s2);
                vst1q_s32(acc + 12, s3);
                for (j = 0; j < 16; ++j) {
                    const int32_t avg = acc[j] > 0 ? (acc[j] + count / 2) / count : (acc[j] - count / 2) / count;
                    *out++ = (int8_t)tinyc_clamp32(avg, p->act_min, p->act_max);
                }
            }
#endif
#if TINYC_DSP
            for (; c + 4 <= ch; c += 4) {
                /* 4 channels per word: SXTAB16 sums */
                sum4 a;
                int32_t row = win + c;
                int32_t j;
                uint32_t v = 0;
                a.e = a.o = 0;
                a.n = 0;
                a.s[0] = a.s[1] = a.s[2] = a.s[3] = pad_sum;
                for (ky = ky0; ky < ky1; ++ky) {
                    int32_t at = row;
                    for (kx = kx0; kx < kx1; ++kx) {
                        sum4_add(&a, in + at);
                        at += tap_step;
                    }
                    row += row_step;
                }
                sum4_flush(&a);
                for (j = 0; j < 4; ++j) {
                    const int32_t acc = a.s[j];
                    const int32_t avg = acc > 0 ? (acc + count / 2) / count : (acc - count / 2) / count;
                    v |= (uint32_t)(uint8_t)tinyc_clamp32(avg, p->act_min, p->act_max) << (8 * j);
                }
                tinyc_st4(out, v);
                out += 4;
            }
#endif
            for (; c < ch; ++c) {
                int32_t acc = pad_sum;
                int32_t row = win + c;
                int32_t avg;
                for (ky = ky0; ky < ky1; ++ky) {
                    int32_t at = row;
                    for (kx = kx0; kx < kx1; ++kx) {
                        acc += in[at];
                        at += tap_step;
                    }
                    row += row_step;
                }
                /* TFLM's rounding: C division truncates, so +-count/2 rounds
                 * halves away from zero. */
                avg = acc > 0 ? (acc + count / 2) / count : (acc - count / 2) / count;
                *out++ = (int8_t)tinyc_clamp32(avg, p->act_min, p->act_max);
            }
        }
    }
}

#if TINYC_DSP
/* The mean's requantization in TFLM's form: on a DSP core the fallback of
 * multipliers outside simd.h's exact form. */
TINYC_FALLBACK static int8_t mean_out(int32_t acc, const tinyc_mean_params *p)
{
    return (int8_t)tinyc_clamp32(tinyc_mbqm(acc, p->mult, p->shift) + p->out_offset, TINYC_INT8_MIN, TINYC_INT8_MAX);
}

/* simd.h's exact form; the 1 / reduce folding can leave the multiplier
 * unnormalized: c = 0, so the addend is 0 */
TINYC_ALWAYS_INLINE int8_t mean_out_dsp(int32_t acc, int fast, const tinyc_rq *q, const tinyc_mean_params *p)
{
    int32_t sh, x;
    if (!fast) {
        return mean_out(acc, p);
    }
    sh = (int32_t)((uint32_t)acc << q->left);
    x = tinyc_smmlar(sh, q->m2, (int32_t)((uint32_t)sh * (uint32_t)q->c));
    x = (x + ((x >> 31) & q->sm)) >> q->k;
    return (int8_t)__ssat(__qadd(x, q->npo) >> q->r, 8);
}
#endif

void tinyc_mean_s8(const tinyc_mean_params *p, const int8_t *in, int8_t *out)
{
    const int32_t inner = p->inner;
    const int32_t block = p->reduce * inner;      /* elements per outer index */
    const int32_t zp_total = p->in_zero_point * p->reduce;
    /* read once: a store through out may alias *p (and the check reads int32 arrays) */
    const int32_t mult = p->mult, shift = p->shift, out_offset = p->out_offset;
    int32_t o, i, r;
#if TINYC_DSP
    const int fast = tinyc_rq_layer_ok(&mult, &shift, 1, out_offset, -128, 127);
    const tinyc_rq q = tinyc_rq_make(mult, shift, out_offset);
#endif

    for (o = 0; o < p->outer; ++o) {
        const int8_t *slab = in + o * block;
        i = 0;
#if TINYC_DSP
        for (; i + 4 <= inner; i += 4) {
            /* 4 adjacent inner positions per word: SXTAB16 sums */
            sum4 a;
            int32_t at = i, j;
            a.e = a.o = 0;
            a.n = 0;
            a.s[0] = a.s[1] = a.s[2] = a.s[3] = 0;
            for (r = 0; r < p->reduce; ++r) {
                sum4_add(&a, slab + at);
                at += inner;
            }
            sum4_flush(&a);
            for (j = 0; j < 4; ++j) {
                *out++ = mean_out_dsp((int32_t)((uint32_t)a.s[j] - (uint32_t)zp_total), fast, &q, p);
            }
        }
#endif
        for (; i < inner; ++i) {
            int32_t sum = 0;
            int32_t at = i;
            for (r = 0; r < p->reduce; ++r) {
                sum += slab[at];
                at += inner;
            }
#if TINYC_DSP
            *out++ = mean_out_dsp(sum - zp_total, fast, &q, p);
#else
            *out++ = (int8_t)tinyc_clamp32(tinyc_mbqm(sum - zp_total, mult, shift) + out_offset, TINYC_INT8_MIN,
                                           TINYC_INT8_MAX);
#endif
        }
    }
}
