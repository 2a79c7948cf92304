/* int8 convolutions: TFLite Micro's reference ConvPerChannel and
 * DepthwiseConvPerChannel arithmetic.  The numpy spec is tinyc/kernels/conv.py.
 *
 * Every output is
 *   acc = bias[o] + sum over in-bounds taps and channels of (x + in_offset) * w
 *   out = clamp(mbqm(acc, mult[o], shift[o]) + out_offset, act_min, act_max)
 * with an int32 accumulator, as in TFLM.  Instead of testing every tap against
 * the image border, each output pixel first computes the range of kernel rows
 * and columns that fall inside the input; interior pixels get the full kernel,
 * border pixels a smaller one, and the inner loops have no branches.
 *
 * On cores with the DSP extension (simd.h: TINYC_DSP) the kernels take fast
 * paths with the same results, bit for bit (tests/test_kernels_qemu.py):
 *   pointwise    2 pixels x 2 output channels per step, weights pre-extended
 *                per channel pair into the scratch, input offset folded into
 *                the bias (pw_*);
 *   conv2d       K = k_h * k_w * in_c <= IM2COL_WORDS: the windows of a few
 *                pixel pairs, offset-added int16, in the scratch, then 2 x 2
 *                blocks (cv_pairs); larger K: each pixel's kernel rows as
 *                segments, 4 output channels per input word (tinyc_mac_1x4_rows);
 *   depthwise    4 channels per input word (dw_dsp), weights in a scratch table;
 * all with simd.h's exact fast requantization.  The scratch is the caller's
 * (planned in the arena; NAME_scratch_bytes gives its size): the kernels keep
 * no buffers on the stack.  Parameters outside the fast paths' ranges, or too
 * little scratch, take the slower paths (see each entry point).
 */
#include <stddef.h>

#include "tinyc/kernels.h"
#include "tinyc/fixedpoint.h"
#include "tinyc/simd.h"
#include "tinyc/matmul_dsp.h"
#include "tinyc/wide.h"

/* Kernel taps f in [*first, *end) satisfy 0 <= origin + f * dil < size, for a
 * window starting at `origin` (negative inside the top / left padding). */
static void tap_range(int32_t origin, int32_t dil, int32_t k, int32_t size,
                      int32_t *first, int32_t *end)
{
    int32_t f0 = 0;
    int32_t f1 = k;
    if (origin < 0) {
        f0 = (-origin + dil - 1) / dil;           /* ceil(-origin / dil) */
    }
    if (origin + (k - 1) * dil >= size) {
        const int32_t room = size - origin;       /* taps f with f * dil < room */
        f1 = room > 0 ? (room + dil - 1) / dil : 0;
    }
    if (f1 < f0) {
        f1 = f0;                                  /* window wholly in the padding */
    }
    *first = f0;
    *end = f1;
}

/* The output's offset and clamp, read from the parameters once per call: a
 * store through an int8_t output may alias *p, so the portable loops would
 * reload these (narrow) fields for every output (they read the geometry into
 * locals likewise).  Cores without the DSP extension also note whether every
 * channel takes the cheaper exact requantization (fixedpoint.h tinyc_rqp) and
 * whether the clamp is the whole int8 range (one SSAT). */
typedef struct {
    int32_t out_offset, act_min, act_max;
    int rqp, full;
} conv_out;

static conv_out conv_out_of(const tinyc_conv_params *p, const int32_t *mult, const int32_t *shift)
{
    conv_out o;
    o.out_offset = p->out_offset;
    o.act_min = p->act_min;
    o.act_max = p->act_max;
    o.rqp = !TINYC_DSP && tinyc_rqp_ok(mult, shift, p->out_c, p->out_offset);
    o.full = !TINYC_DSP && p->act_min == TINYC_INT8_MIN && p->act_max == TINYC_INT8_MAX;
    return o;
}

/* (inlined on cores without the DSP extension, where it runs for every output;
 * out of line in the DSP builds' rarely taken fallbacks) */
#if TINYC_DSP
static
#else
static inline __attribute__((always_inline))
#endif
int8_t requantize(int32_t acc, const int32_t *bias, int32_t c, const int32_t *mult, const int32_t *shift,
                  const conv_out *p)
{
    if (bias != 0) {
        acc += bias[c];
    }
    if (!TINYC_DSP && p->rqp) {
        acc = tinyc_rqp(acc, mult[c], shift[c], p->out_offset);
    } else {
        acc = tinyc_mbqm(acc, mult[c], shift[c]) + p->out_offset;
    }
    if (!TINYC_DSP && p->full) {
        return (int8_t)tinyc_sat8(acc);
    }
    return (int8_t)tinyc_clamp32(acc, p->act_min, p->act_max);
}

TINYC_FALLBACK static void conv_portable(const tinyc_conv_params *p, const int8_t *in, const int8_t *w,
                          const int32_t *bias, const int32_t *mult, const int32_t *shift, int8_t *out)
{
    const int32_t in_c = p->in_c;
    const int32_t groups = p->groups > 0 ? p->groups : 1;
    const int32_t cg = in_c / groups;             /* input channels per group */
    const int32_t og = p->out_c / groups;         /* output channels per group */
    const int32_t in_offset = p->in_offset;
    const conv_out o_p = conv_out_of(p, mult, shift);
    const int32_t in_h = p->in_h, in_w = p->in_w, out_h = p->out_h, out_w = p->out_w, k_h = p->k_h, k_w = p->k_w;
    const int32_t stride_h = p->stride_h, stride_w = p->stride_w, dil_h = p->dil_h, dil_w = p->dil_w;
    const int32_t pad_t = p->pad_t, pad_l = p->pad_l;
    /* Index distance between horizontally / vertically adjacent taps in the
     * input, and between kernel rows / whole filters in the weights. */
    const int32_t tap_step_x = dil_w * in_c;
    const int32_t tap_step_y = dil_h * in_w * in_c;
    const int32_t w_row = k_w * cg;
    const int32_t w_filter = k_h * w_row;
    int32_t oy, ox, g, j;

    for (oy = 0; oy < out_h; ++oy) {
        const int32_t iy0 = oy * stride_h - pad_t;
        int32_t ky0, ky1;
        tap_range(iy0, dil_h, k_h, in_h, &ky0, &ky1);
        for (ox = 0; ox < out_w; ++ox) {
            const int32_t ix0 = ox * stride_w - pad_l;
            int32_t kx0, kx1, win;
            tap_range(ix0, dil_w, k_w, in_w, &kx0, &kx1);
            /* Index of the first in-bounds tap of the window (channel 0); only
             * read when the tap ranges are not empty. */
            win = ((iy0 + ky0 * dil_h) * in_w + (ix0 + kx0 * dil_w)) * in_c;
            j = 0;
            /* (cores without the DSP extension only: on the others this is the
             * rarely taken fallback, kept small) */
            if (!TINYC_DSP && groups == 1 && dil_w == 1) {
                /* one group without column dilation: each kernel row's taps are
                 * one contiguous run of input and of weights, 4 channels at a
                 * time over all the window's rows */
                tinyc_dot4_args a;
                a.runs = kx1 > kx0 ? ky1 - ky0 : 0;
                a.x = a.runs > 0 ? in + win : in;
                a.n = (kx1 - kx0) * cg;
                a.x_step = tap_step_y;
                a.w_step = w_row;
                a.offset = in_offset;
                for (; j + 4 <= og; j += 4) {
                    const int8_t *wj = w + j * w_filter + ky0 * w_row + kx0 * cg;
                    int32_t k;
                    for (k = 0; k < 4; ++k) {
                        a.w[k] = wj + k * w_filter;
                        a.acc[k] = 0;
                    }
                    tinyc_dot4_s8(&a);
                    for (k = 0; k < 4; ++k) {
                        *out++ = requantize(a.acc[k], bias, j + k, mult, shift, &o_p);
                    }
                }
            }
            for (g = 0; g < groups; ++g) {
                for (j = groups == 1 ? j : 0; j < og; ++j) {
                    const int32_t o = g * og + j;
                    const int8_t *wf = w + o * w_filter;
                    int32_t in_row = win + g * cg;
                    int32_t w_at = ky0 * w_row + kx0 * cg;
                    int32_t acc = 0;
                    int32_t ky, kx, c;
                    for (ky = ky0; ky < ky1; ++ky) {
                        int32_t in_tap = in_row;
                        int32_t w_tap = w_at;
                        for (kx = kx0; kx < kx1; ++kx) {
                            const int8_t *xv = in + in_tap;
                            const int8_t *wv = wf + w_tap;
                            for (c = 0; c < cg; ++c) {
                                acc += ((int32_t)xv[c] + in_offset) * (int32_t)wv[c];
                            }
                            in_tap += tap_step_x;
                            w_tap += cg;
                        }
                        in_row += tap_step_y;
                        w_at += w_row;
                    }
                    *out++ = requantize(acc, bias, o, mult, shift, &o_p);
                }
            }
        }
    }
}

/* xs: room for the pixel's channels as int16 with the input offset added (the
 * scratch, on cores without the DSP extension), or 0. */
TINYC_FALLBACK static void conv1x1_portable(const tinyc_conv_params *p, const int8_t *in, const int8_t *w,
                             const int32_t *bias, const int32_t *mult, const int32_t *shift, int8_t *out,
                             int16_t *xs)
{
    const int32_t in_c = p->in_c;
    const int32_t in_offset = p->in_offset;
    const conv_out o_p = conv_out_of(p, mult, shift);
    const int32_t out_c = p->out_c, out_w = p->out_w, out_h = p->out_h;
    /* Input step between output columns and between output rows. */
    const int32_t step_x = p->stride_w * in_c;
    const int32_t step_y = p->stride_h * p->in_w * in_c;
    /* Without scratch, the output's last 2 * in_c bytes (halfword-aligned) hold
     * the int16 pixel for every pixel whose outputs end before them: they are
     * not written yet (the output never overlaps the input) */
    int8_t *const tail = (int8_t *)((uintptr_t)(out + out_h * out_w * out_c - 2 * in_c) & ~(uintptr_t)1);
    int32_t in_line = 0;
    int32_t oy, ox, o, c;

    for (oy = 0; oy < out_h; ++oy) {
        int32_t at = in_line;
        for (ox = 0; ox < out_w; ++ox) {
            /* One pixel: out[o] = dot(pixel channels, weight row o). */
            const int8_t *px = in + at;
            const int8_t *w_row = w;
            tinyc_dot4_args a;
            a.x = px;
            a.n = in_c;
            a.runs = 1;
            a.x_step = a.w_step = 0;
            a.offset = in_offset;
            int16_t *x16 = xs;
            if (!TINYC_DSP && xs == 0 && in_offset != 0 && out_c >= 4 && out + out_c <= tail) {
                x16 = (int16_t *)(void *)tail;
            }
            if (!TINYC_DSP && x16 != 0 && out_c >= 4) {
                tinyc_offset_copy(px, in_c, in_offset, x16);
            }
            a.x16 = x16;
            for (o = 0; !TINYC_DSP && o + 4 <= out_c; o += 4) {
                int32_t k;
                for (k = 0; k < 4; ++k) {
                    a.w[k] = w_row + k * in_c;
                    a.acc[k] = 0;
                }
                if (x16 != 0) {
                    tinyc_dot4_x16(&a);
                } else if (in_offset == 0) {
                    tinyc_dot4_s8_run(&a);
                } else {
                    tinyc_dot4_s8(&a);
                }
                for (k = 0; k < 4; ++k) {
                    *out++ = requantize(a.acc[k], bias, o + k, mult, shift, &o_p);
                }
                w_row += 4 * in_c;
            }
            for (; o < out_c; ++o) {
                int32_t acc = 0;
                for (c = 0; c < in_c; ++c) {
                    acc += ((int32_t)px[c] + in_offset) * (int32_t)w_row[c];
                }
                w_row += in_c;
                *out++ = requantize(acc, bias, o, mult, shift, &o_p);
            }
            at += step_x;
        }
        in_line += step_y;
    }
}

#if TINYC_DSP
/* ---- DSP fast paths (see matmul_dsp.h) ------------------------------------ */

tinyc_rq tinyc_rq_make(int32_t mult, int32_t shift, int32_t out_offset)
{
    tinyc_rq q;
    const int32_t right = shift < 0 ? -shift : 0;
    q.m2 = (int32_t)((uint32_t)mult << 1);
    q.c = mult >= (1 << 30) ? 1 : (mult < -(1 << 30) ? -1 : 0);  /* 2 * mult = m2 + c * 2^32 */
    q.left = shift > 0 ? shift : 0;
    q.sm = right > 0 ? -1 : 0;
    q.k = right > 23 ? right - 23 : 0;
    q.r = right - q.k;
    q.npo = (int32_t)((right > 0 ? (uint32_t)1 << (q.r - 1) : 0u) + ((uint32_t)out_offset << q.r));
    q.cls = q.c != 1 || q.left != 0 ? 2 : (right == 0 || q.k != 0 ? 1 : 0);
    return q;
}


/* Arguments of the pw_* assembly (the offsets are fixed in the assembly). */
typedef struct {
    const int8_t *x;       /*  0: pixel 0 of the next pixel pair */
    int32_t xs;            /*  4: bytes from pixel 0 to pixel 1 (= K for pw_*_direct) */
    int32_t adv;           /*  8: x advance after a pair's K values: 2 * xs - K */
    const void *wb;        /* 12: pre-extended weights (tinyc_fill_wbuf), or channel 0's int8 row */
    const void *wend;      /* 16: wb past its K / 4 groups */
    int32_t odd;           /* 20: K / 4 is odd */
    int32_t b0, b1;        /* 24: accumulator starts of channels 0 and 1 */
    int32_t m2_0, m2_1;    /* 32: requantization constants (tinyc_rq) of channels 0 and 1 */
    int32_t npo_0, npo_1;  /* 40 */
    int32_t r_0, r_1;      /* 48 */
    int32_t sm_0, sm_1;    /* 56 */
    int32_t k_0, k_1;      /* 64 */
    int8_t *dst;           /* 72: output of pixel 0, channel 0 */
    int8_t *dst_end;       /* 76: dst past the last pair (dst += 2 * n per pair) */
    int32_t n;             /* 80: bytes between two pixels' outputs */
} pw_args;

typedef char pw_args_layout[(offsetof(pw_args, b0) == 24 && offsetof(pw_args, sm_0) == 56 &&
                             offsetof(pw_args, dst) == 72 && offsetof(pw_args, n) == 80) ? 1 : -1];

/* The pw_* functions: 2 pixels x 2 output channels per step over the pixel
 * pairs of pw_args, K a multiple of 4, clamp range [-128, 127].  Per group of
 * 4 input values: the 4 weight words (pre-extended: one LDM; direct: 2 loads
 * and 4 SXTB16), 2 input words sign-extended (4 SXTB16) and 8 SMLADs; the
 * group loop is unrolled twice (an odd count enters at the second copy).
 * Then the 4 sums are requantized (simd.h; _fast_even: both channels of
 * class 0 and an even group count, _gen: class 0 or 1) and stored as two
 * halfwords.  Registers: r0-r3
 * weights, r4-r7 sums (pixel 0 channel 0, pixel 0 channel 1, pixel 1 channel
 * 0, pixel 1 channel 1), r8 x, r9 xs, r10 weights pointer, r11-r12 inputs, lr
 * the arguments.  They use 36 bytes of stack (naked: not in gcc's .su). */
#define PW_BEGIN(odd_check)        \
    "push {r4-r11, lr}\n\t"        \
    "mov lr, r0\n\t"               \
    "ldr r8, [lr, #0]\n\t"         \
    "ldr r9, [lr, #4]\n\t"         \
    "1:\n\t"                       \
    "ldrd r4, r5, [lr, #24]\n\t"   \
    "mov r6, r4\n\t"               \
    "mov r7, r5\n\t"               \
    "ldr r10, [lr, #12]\n\t"       \
    odd_check                        \
    "2:\n\t"

/* an odd group count enters the unrolled loop at its second copy */
#define PW_ODD_ENTRY               \
    "ldr r11, [lr, #20]\n\t"       \
    "cmp r11, #0\n\t"              \
    "bne 3f\n\t"

#define PW_X_GROUP                   \
    "ldr r11, [r8, r9]\n\t"          \
    "sxtb16 r12, r11\n\t"            \
    "sxtb16 r11, r11, ror #8\n\t"    \
    "smlad r6, r12, r0, r6\n\t"      \
    "smlad r6, r11, r1, r6\n\t"      \
    "smlad r7, r12, r2, r7\n\t"      \
    "smlad r7, r11, r3, r7\n\t"      \
    "ldr r11, [r8], #4\n\t"          \
    "sxtb16 r12, r11\n\t"            \
    "sxtb16 r11, r11, ror #8\n\t"    \
    "smlad r4, r12, r0, r4\n\t"      \
    "smlad r4, r11, r1, r4\n\t"      \
    "smlad r5, r12, r2, r5\n\t"      \
    "smlad r5, r11, r3, r5\n\t"

/* weights: r0 = channel 0 even, r1 = channel 0 odd, r2 / r3 channel 1 */
#define PW_W_BUF "ldmia r10!, {r0, r1, r2, r3}\n\t"
#define PW_W_DIRECT                \
    "ldr r2, [r10, r9]\n\t"        \
    "ldr r0, [r10], #4\n\t"        \
    "sxtb16 r3, r2, ror #8\n\t"    \
    "sxtb16 r2, r2\n\t"            \
    "sxtb16 r1, r0, ror #8\n\t"    \
    "sxtb16 r0, r0\n\t"

#define PW_LOOP_END              \
    "ldr r11, [lr, #16]\n\t"     \
    "cmp r10, r11\n\t"           \
    "bne 2b\n\t"                 \
    "ldr r11, [lr, #8]\n\t"      \
    "add r8, r8, r11\n\t"        \
    "ldrd r0, r1, [lr, #32]\n\t" \
    "smmlar r4, r4, r0, r4\n\t"  \
    "smmlar r6, r6, r0, r6\n\t"  \
    "smmlar r5, r5, r1, r5\n\t"  \
    "smmlar r7, r7, r1, r7\n\t"

#define PW_RQ_FAST                    \
    "add r4, r4, r4, asr #31\n\t"     \
    "add r5, r5, r5, asr #31\n\t"     \
    "add r6, r6, r6, asr #31\n\t"     \
    "add r7, r7, r7, asr #31\n\t"

#define PW_RQ_GEN                     \
    "ldrd r0, r1, [lr, #56]\n\t"      \
    "and r2, r0, r4, asr #31\n\t"     \
    "add r4, r4, r2\n\t"              \
    "and r2, r0, r6, asr #31\n\t"     \
    "add r6, r6, r2\n\t"              \
    "and r2, r1, r5, asr #31\n\t"     \
    "add r5, r5, r2\n\t"              \
    "and r2, r1, r7, asr #31\n\t"     \
    "add r7, r7, r2\n\t"              \
    "ldrd r0, r1, [lr, #64]\n\t"      \
    "asr r4, r4, r0\n\t"              \
    "asr r6, r6, r0\n\t"              \
    "asr r5, r5, r1\n\t"              \
    "asr r7, r7, r1\n\t"

#define PW_END                        \
    "ldrd r0, r1, [lr, #40]\n\t"      \
    "qadd r4, r4, r0\n\t"             \
    "qadd r6, r6, r0\n\t"             \
    "qadd r5, r5, r1\n\t"             \
    "qadd r7, r7, r1\n\t"             \
    "ldrd r0, r1, [lr, #48]\n\t"      \
    "asr r4, r4, r0\n\t"              \
    "asr r6, r6, r0\n\t"              \
    "asr r5, r5, r1\n\t"              \
    "asr r7, r7, r1\n\t"              \
    "ssat r4, #8, r4\n\t"             \
    "ssat r5, #8, r5\n\t"             \
    "ssat r6, #8, r6\n\t"             \
    "ssat r7, #8, r7\n\t"             \
    "bfi r4, r5, #8, #8\n\t"          \
    "bfi r6, r7, #8, #8\n\t"          \
    "ldr r0, [lr, #72]\n\t"           \
    "ldr r1, [lr, #80]\n\t"           \
    "strh r4, [r0]\n\t"               \
    "strh r6, [r0, r1]\n\t"           \
    "add r0, r0, r1, lsl #1\n\t"      \
    "str r0, [lr, #72]\n\t"           \
    "ldr r1, [lr, #76]\n\t"           \
    "cmp r0, r1\n\t"                  \
    "bne 1b\n\t"                      \
    "pop {r4-r11, pc}\n\t"

#define PW_FUNCTION(name, odd, weights, rq)                                                 \
    __attribute__((naked, noinline)) static void name(const pw_args *args __attribute__((unused))) \
    {                                                                                       \
        __asm__ volatile(PW_BEGIN(odd) weights PW_X_GROUP "3:\n\t" weights PW_X_GROUP PW_LOOP_END rq PW_END); \
    }

/* The common case gets its own copy (class 0, an even group count: no odd
 * test per pair); the general one serves the rest (larger K: the weights are
 * extended in the loop, which dwarfs the general requantization). */
PW_FUNCTION(pw_buf_fast_even, "", PW_W_BUF, PW_RQ_FAST)
PW_FUNCTION(pw_buf_gen, PW_ODD_ENTRY, PW_W_BUF, PW_RQ_GEN)
PW_FUNCTION(pw_direct_gen, PW_ODD_ENTRY, PW_W_DIRECT, PW_RQ_GEN)

/* One of the loops above, called directly (no function pointer: the static
 * call graph, from which the stack reserve is sized, stays complete). */
enum { PW_DIRECT_GEN, PW_BUF_FAST_EVEN, PW_BUF_GEN };
TINYC_ALWAYS_INLINE void pw_loop(int loop, const pw_args *a)
{
    if (loop == PW_DIRECT_GEN) {
        pw_direct_gen(a);
    } else if (loop == PW_BUF_FAST_EVEN) {
        pw_buf_fast_even(a);
    } else {
        pw_buf_gen(a);
    }
}

/* Pixels of a pointwise product: runs of run_len pixels pix_step apart. */
typedef struct {
    const int8_t *x;
    int32_t runs, run_len, pix_step, run_step;
    int32_t k, n;                 /* values per pixel, output channels */
    int32_t in_offset, out_offset, act_min, act_max;
} pw_problem;

/* Channels o0 and o1 (o1 == o0 for an odd last channel) over every pixel, in C:
 * 2 pixels at a time (tinyc_mac_2x2_wbuf / tinyc_mac_2x2), any K and class. */
__attribute__((cold, noinline)) static void pw_pair_c(const pw_problem *m, const int8_t *w, const tinyc_rq *q0,
                                                       const tinyc_rq *q1, int32_t b0, int32_t b1,
                                                       const uint32_t *wbuf, int32_t o0, int32_t o1, int8_t *out)
{
    const int32_t k = m->k, n = m->n, n4 = k >> 2, tail = k & 3;
    const int8_t *w0 = w + o0 * k;
    const int8_t *w1 = w + o1 * k;
    const int8_t *line = m->x;
    int8_t *dst = out + o0;
    int32_t r, i;
    for (r = 0; r < m->runs; ++r) {
        const int8_t *px = line;
        for (i = 0; i + 1 < m->run_len; i += 2) {
            int32_t a[4];
            const int8_t *xp;
            a[0] = b0;
            a[1] = b1;
            a[2] = b0;
            a[3] = b1;
            if (wbuf != 0) {
                xp = tinyc_mac_2x2_wbuf(px, m->pix_step, wbuf, n4, a);
            } else {
                xp = tinyc_mac_2x2(px, m->pix_step, w0, w1, n4, a);
            }
            if (tail) {
                a[0] = tinyc_dot_raw(xp, w0 + 4 * n4, tail, a[0]);
                a[1] = tinyc_dot_raw(xp, w1 + 4 * n4, tail, a[1]);
                a[2] = tinyc_dot_raw(xp + m->pix_step, w0 + 4 * n4, tail, a[2]);
                a[3] = tinyc_dot_raw(xp + m->pix_step, w1 + 4 * n4, tail, a[3]);
            }
            dst[0] = tinyc_rq_out(a[0], q0, m->act_min, m->act_max, 0);
            dst[n] = tinyc_rq_out(a[2], q0, m->act_min, m->act_max, 0);
            if (o1 != o0) {
                dst[1] = tinyc_rq_out(a[1], q1, m->act_min, m->act_max, 0);
                dst[n + 1] = tinyc_rq_out(a[3], q1, m->act_min, m->act_max, 0);
            }
            dst += 2 * n;
            px += 2 * m->pix_step;
        }
        if (i < m->run_len) {
            dst[0] = tinyc_rq_out(tinyc_dot_raw(px, w0, k, b0), q0, m->act_min, m->act_max, 0);
            if (o1 != o0) {
                dst[1] = tinyc_rq_out(tinyc_dot_raw(px, w1, k, b1), q1, m->act_min, m->act_max, 0);
            }
            dst += n;
        }
        line += m->run_step;
    }
}

/* The pointwise product: output channel pairs outside (their weights are
 * sign-extended once into wbuf, the scratch of K words, when the caller gives
 * it; their biases take the input offset: bias + in_offset * sum(w)), pixel
 * pairs inside, in assembly when the pair allows it. */
TINYC_ALWAYS_INLINE void pw_run(const pw_problem *m, const int8_t *w, const int32_t *bias, const int32_t *mult,
                                const int32_t *shift, int8_t *out, uint32_t *wbuf)
{
    const int32_t k = m->k, n = m->n, n4 = k >> 2;
    const int full = m->act_min == -128 && m->act_max == 127;
    const int use_buf = wbuf != 0;
    const int direct = !use_buf && m->pix_step == k;
    const int32_t pairs = m->run_len >> 1;
    pw_args a;
    int32_t o;

    a.xs = m->pix_step;
    a.adv = 2 * m->pix_step - 4 * n4;
    a.odd = n4 & 1;
    a.n = n;
    for (o = 0; o < n; o += 2) {
        const int32_t o1 = o + 1 < n ? o + 1 : o;
        const int8_t *w0 = w + o * k;
        const int8_t *w1 = w + o1 * k;
        const tinyc_rq q0 = tinyc_rq_make(mult[o], shift[o], m->out_offset);
        const tinyc_rq q1 = tinyc_rq_make(mult[o1], shift[o1], m->out_offset);
        const int cls = q0.cls > q1.cls ? q0.cls : q1.cls;
        int32_t s[2], r;
        if (use_buf) {
            tinyc_fill_wbuf(wbuf, w0, w1, n4, s);
        } else {
            s[0] = tinyc_sum_s8(w0, 4 * n4);
            s[1] = tinyc_sum_s8(w1, 4 * n4);
        }
        a.b0 = tinyc_fold_bias(bias, o, m->in_offset, s[0] + tinyc_sum_s8(w0 + 4 * n4, k & 3));
        a.b1 = tinyc_fold_bias(bias, o1, m->in_offset, s[1] + tinyc_sum_s8(w1 + 4 * n4, k & 3));
        if (full && cls <= 1 && o1 != o && (k & 3) == 0 && n4 > 0 && (use_buf || direct)) {
            const int loop = !use_buf ? PW_DIRECT_GEN : cls == 0 && !(n4 & 1) ? PW_BUF_FAST_EVEN : PW_BUF_GEN;
            int8_t *dst = out + o;
            const int8_t *line = m->x;
            a.wb = use_buf ? (const void *)wbuf : (const void *)w0;
            a.wend = use_buf ? (const void *)(wbuf + 4 * n4) : (const void *)(w0 + 4 * n4);
            a.m2_0 = q0.m2;
            a.m2_1 = q1.m2;
            a.npo_0 = q0.npo;
            a.npo_1 = q1.npo;
            a.r_0 = q0.r;
            a.r_1 = q1.r;
            a.sm_0 = q0.sm;
            a.sm_1 = q1.sm;
            a.k_0 = q0.k;
            a.k_1 = q1.k;
            for (r = 0; r < m->runs; ++r) {
                if (pairs > 0) {
                    a.x = line;
                    a.dst = dst;
                    a.dst_end = dst + 2 * pairs * n;
                    pw_loop(loop, &a);
                    dst = a.dst_end;
                }
                if ((m->run_len & 1) && !use_buf) {
                    /* the last pixel alone, in C (the direct loops find channel
                     * 1's weights at the pixel step, which the pairing below
                     * sets to 0) */
                    const int8_t *px = line + 2 * pairs * m->pix_step;
                    dst[0] = tinyc_rq_out(tinyc_dot_raw(px, w0, k, a.b0), &q0, -128, 127, 1);
                    dst[1] = tinyc_rq_out(tinyc_dot_raw(px, w1, k, a.b1), &q1, -128, 127, 1);
                    dst += n;
                } else if (m->run_len & 1) {
                    /* the last pixel as a pair with itself: pixel step 0, output
                     * step 0 (both stores write the same bytes), one pair */
                    a.x = line + 2 * pairs * m->pix_step;
                    a.xs = 0;
                    a.n = 0;
                    a.dst = dst;
                    a.dst_end = dst;
                    pw_loop(loop, &a);
                    a.xs = m->pix_step;
                    a.n = n;
                    dst += n;
                }
                line += m->run_step;
            }
        } else {
            pw_pair_c(m, w, &q0, &q1, a.b0, a.b1, use_buf ? wbuf : 0, o, o1, out);
        }
    }
}

/* ---- general convolution -------------------------------------------------- */

/* The im2col path's scratch: a window buffer of 2 pixels x K int16 values per
 * pixel pair, as many pairs as fit in IM2COL_WORDS words (K <= IM2COL_WORDS),
 * then IM2COL_WORDS bytes for one int8 window (tinyc_conv2d_s8_scratch_bytes).  The
 * kernel descriptor (tinyc/kernels/__init__.py) holds the same rule. */
#define IM2COL_WORDS 160

/* Arguments of cv_pairs (offsets fixed in the assembly). */
typedef struct {
    const uint32_t *xb;    /*  0: window words of the next pixel pair (per group: p0 even, p0 odd, p1 even, p1 odd) */
    int32_t f;             /*  4: filter bytes (channel 1's filter at w0 + f) */
    const int8_t *w0;      /*  8: channel 0's filter */
    const int8_t *wend;    /* 12: w0 + 4 * groups */
    int32_t odd;           /* 16: odd group count */
    int32_t b0, b1;        /* 20: biases of channels 0 and 1 */
    int32_t m2_0, m2_1;    /* 28: requantization (class 0) */
    int32_t npo_0, npo_1;  /* 36 */
    int32_t r_0, r_1;      /* 44 */
    int8_t *dst;           /* 52: output of pixel 0, channel 0 */
    int8_t *dst_end;       /* 56: dst past the last pair */
    int32_t n;             /* 60: bytes from pixel 0's outputs to pixel 1's (0: a pixel paired with itself) */
    int32_t dst_step;      /* 64: dst advance per pair */
} cv_args;

typedef char cv_args_layout[(offsetof(cv_args, b0) == 20 && offsetof(cv_args, dst) == 52 &&
                             offsetof(cv_args, dst_step) == 64) ? 1 : -1];

/* 2 pixels x 2 output channels per step over the pixel pairs of a window
 * buffer (the im2col path): per group of 4 window values one LDM of the 4
 * pre-extended words (offset added, padding 0), the 2 channels' weight words
 * sign-extended (4 SXTB16), 8 SMLADs.  Registers: r0-r3 window words, r4 / r5
 * channel 0 (pixel 0 / 1), r6 / r7 channel 1, r8 weights, r9 f, r10 window
 * pointer, r11-r12 weights, lr the arguments.  Class 0 channels, clamp range
 * [-128, 127]; 36 bytes of stack. */
#define CV_GROUP                         \
    "ldmia r10!, {r0, r1, r2, r3}\n\t"   \
    "ldr r11, [r8, r9]\n\t"              \
    "sxtb16 r12, r11\n\t"                \
    "sxtb16 r11, r11, ror #8\n\t"        \
    "smlad r6, r0, r12, r6\n\t"          \
    "smlad r6, r1, r11, r6\n\t"          \
    "smlad r7, r2, r12, r7\n\t"          \
    "smlad r7, r3, r11, r7\n\t"          \
    "ldr r11, [r8], #4\n\t"              \
    "sxtb16 r12, r11\n\t"                \
    "sxtb16 r11, r11, ror #8\n\t"        \
    "smlad r4, r0, r12, r4\n\t"          \
    "smlad r4, r1, r11, r4\n\t"          \
    "smlad r5, r2, r12, r5\n\t"          \
    "smlad r5, r3, r11, r5\n\t"

__attribute__((naked, noinline)) static void cv_pairs(const cv_args *args __attribute__((unused)))
{
    __asm__ volatile(
        "push {r4-r11, lr}\n\t"
        "mov lr, r0\n\t"
        "ldr r10, [lr, #0]\n\t"
        "ldr r9, [lr, #4]\n\t"
        "1:\n\t"
        "ldrd r4, r6, [lr, #20]\n\t"
        "mov r5, r4\n\t"
        "mov r7, r6\n\t"
        "ldr r8, [lr, #8]\n\t"
        "ldr r11, [lr, #16]\n\t"
        "cmp r11, #0\n\t"
        "bne 3f\n\t"
        "2:\n\t" CV_GROUP
        "3:\n\t" CV_GROUP
        "ldr r11, [lr, #12]\n\t"
        "cmp r8, r11\n\t"
        "bne 2b\n\t"
        "ldrd r0, r1, [lr, #28]\n\t"
        "smmlar r4, r4, r0, r4\n\t"
        "smmlar r5, r5, r0, r5\n\t"
        "smmlar r6, r6, r1, r6\n\t"
        "smmlar r7, r7, r1, r7\n\t"
        "add r4, r4, r4, asr #31\n\t"
        "add r5, r5, r5, asr #31\n\t"
        "add r6, r6, r6, asr #31\n\t"
        "add r7, r7, r7, asr #31\n\t"
        "ldrd r0, r1, [lr, #36]\n\t"
        "qadd r4, r4, r0\n\t"
        "qadd r5, r5, r0\n\t"
        "qadd r6, r6, r1\n\t"
        "qadd r7, r7, r1\n\t"
        "ldrd r0, r1, [lr, #44]\n\t"
        "asr r4, r4, r0\n\t"
        "asr r5, r5, r0\n\t"
        "asr r6, r6, r1\n\t"
        "asr r7, r7, r1\n\t"
        "ssat r4, #8, r4\n\t"
        "ssat r5, #8, r5\n\t"
        "ssat r6, #8, r6\n\t"
        "ssat r7, #8, r7\n\t"
        "bfi r4, r6, #8, #8\n\t"
        "bfi r5, r7, #8, #8\n\t"
        "ldr r0, [lr, #52]\n\t"
        "ldr r1, [lr, #60]\n\t"
        "strh r4, [r0]\n\t"
        "strh r5, [r0, r1]\n\t"
        "ldr r1, [lr, #64]\n\t"
        "add r0, r0, r1\n\t"
        "str r0, [lr, #52]\n\t"
        "ldr r1, [lr, #56]\n\t"
        "cmp r0, r1\n\t"
        "bne 1b\n\t"
        "pop {r4-r11, pc}\n\t");
}

static void fill_zp(int8_t *dst, int32_t n, int8_t zp)
{
    const uint32_t z4 = (uint32_t)(uint8_t)zp * 0x01010101u;
    for (; n >= 4; n -= 4) {
        tinyc_st4(dst, z4);
        dst += 4;
    }
    while (n-- > 0) {
        *dst++ = zp;
    }
}

static void copy_bytes(int8_t *dst, const int8_t *src, int32_t n)
{
    for (; n >= 4; n -= 4) {
        tinyc_st4(dst, tinyc_ld4(src));
        dst += 4;
        src += 4;
    }
    while (n-- > 0) {
        *dst++ = *src++;
    }
}

/* The int8 window of output pixel (oy, ox) in weight order (k_h, k_w, in_c),
 * padded taps and the bytes up to kp as the zero point (they add 0). */
__attribute__((noinline)) static void window_bytes(const tinyc_conv_params *p, const int8_t *in, int32_t oy,
                                                   int32_t ox, int32_t kp, int8_t *dst)
{
    const int32_t in_c = p->in_c;
    const int32_t row_len = p->k_w * in_c;               /* window bytes per kernel row */
    const int8_t zp = (int8_t)(-p->in_offset);
    const int32_t iy0 = oy * p->stride_h - p->pad_t;
    const int32_t ix0 = ox * p->stride_w - p->pad_l;
    const int32_t y_step = p->dil_h * p->in_w * in_c;
    int32_t ky0, ky1, kx0, kx1, ky;
    tap_range(iy0, p->dil_h, p->k_h, p->in_h, &ky0, &ky1);
    tap_range(ix0, p->dil_w, p->k_w, p->in_w, &kx0, &kx1);
    if (kx0 == kx1 || ky0 == ky1) {
        fill_zp(dst, kp, zp);                              /* wholly in the padding */
        return;
    }
    fill_zp(dst, ky0 * row_len, zp);
    dst += ky0 * row_len;
    if (ky0 < ky1) {
        const int8_t *src = in + ((iy0 + ky0 * p->dil_h) * p->in_w + ix0 + kx0 * p->dil_w) * in_c;
        const int32_t left = kx0 * in_c, run = (kx1 - kx0) * in_c, right = row_len - left - run;
        for (ky = ky0; ky < ky1; ++ky) {
            fill_zp(dst, left, zp);
            dst += left;
            if (p->dil_w == 1) {
                copy_bytes(dst, src, run);
                dst += run;
            } else {
                const int8_t *s = src;
                int32_t kx;
                for (kx = kx0; kx < kx1; ++kx) {
                    copy_bytes(dst, s, in_c);
                    dst += in_c;
                    s += p->dil_w * in_c;
                }
            }
            fill_zp(dst, right, zp);
            dst += right;
            src += y_step;
        }
    }
    fill_zp(dst, (p->k_h - ky1) * row_len + kp - p->k_h * row_len, zp);
}

/* Output pixel q's window as int16 pairs, off2 (the input offset in both
 * halves, or 0) added, into the words xw[0], xw[1], xw[4], xw[5], ... (per
 * group of 4 values: even, odd; the other pixel of the pair takes the words
 * between); padw: a padded row's words (0 with the offset added, the zero
 * point in both halves without).  Windows wholly inside the
 * input with rows of whole words are read straight from the input, the others
 * through window_bytes into `stage`. */
static void window_words(const tinyc_conv_params *p, const int8_t *in, int32_t q, int32_t groups, uint32_t off2,
                         uint32_t padw, int8_t *stage, uint32_t *xw)
{
    const int32_t oy = q / p->out_w, ox = q - oy * p->out_w;
    const int32_t iy0 = oy * p->stride_h - p->pad_t;
    const int32_t ix0 = ox * p->stride_w - p->pad_l;
    const int32_t row_len = p->k_w * p->in_c;
    int32_t g;
    if (p->dil_w == 1 && (row_len & 3) == 0 && ix0 >= 0 && ix0 + p->k_w <= p->in_w) {
        /* every column inside: rows inside the input straight from it, rows
         * in the padding as zeros (x + in_offset = 0) */
        const int32_t y_step = p->dil_h * p->in_w * p->in_c;
        const int8_t *src = in + (iy0 * p->in_w + ix0) * p->in_c;
        int32_t ky, iy = iy0;
        for (ky = 0; ky < p->k_h; ++ky) {
            if (iy >= 0 && iy < p->in_h) {
                const int8_t *s = src;
                for (g = 0; g < row_len; g += 4) {
                    const uint32_t v = tinyc_ld4(s);
                    xw[0] = tinyc_sxtab16(off2, v);
                    xw[1] = tinyc_sxtab16_r8(off2, v);
                    xw += 4;
                    s += 4;
                }
            } else {
                for (g = 0; g < row_len; g += 4) {
                    xw[0] = padw;
                    xw[1] = padw;
                    xw += 4;
                }
            }
            src += y_step;
            iy += p->dil_h;
        }
        return;
    }
    if (p->dil_w == 1 && iy0 >= 0 && ix0 >= 0 && iy0 + (p->k_h - 1) * p->dil_h < p->in_h &&
        ix0 + p->k_w <= p->in_w) {
        /* wholly inside: the rows back to back into `stage`, then the tail */
        const int32_t y_step = p->dil_h * p->in_w * p->in_c;
        const int8_t *src = in + (iy0 * p->in_w + ix0) * p->in_c;
        int8_t *d = stage;
        int32_t ky, j;
        for (ky = 0; ky < p->k_h; ++ky) {
            const int8_t *s = src;
            for (j = row_len; j >= 4; j -= 4) {
                tinyc_st4(d, tinyc_ld4(s));
                d += 4;
                s += 4;
            }
            for (; j > 0; --j) {
                *d++ = *s++;
            }
            src += y_step;
        }
        for (j = (int32_t)(d - stage); j < 4 * groups; ++j) {
            *d++ = (int8_t)(-p->in_offset);
        }
    } else {
        window_bytes(p, in, oy, ox, 4 * groups, stage);
    }
    for (g = 0; g < groups; ++g) {
        const uint32_t v = tinyc_ld4(stage + 4 * g);
        xw[0] = tinyc_sxtab16(off2, v);
        xw[1] = tinyc_sxtab16_r8(off2, v);
        xw += 4;
    }
}

/* (x + in_offset) . w for one channel over the window words of a pixel pair
 * (lane 0: pixel 0, 1: pixel 1); reads exactly the K weights. */
static void buf_dot(const uint32_t *xb, const int8_t *wf, int32_t k, int32_t *a0, int32_t *a1)
{
    int32_t s0 = *a0, s1 = *a1;
    int32_t g;
    for (g = 0; g + 4 <= k; g += 4) {
        const uint32_t v = tinyc_ld4(wf + g);
        const uint32_t e = tinyc_sxtb16(v), o = tinyc_sxtb16_r8(v);
        s0 = tinyc_smlad(xb[0], e, s0);
        s0 = tinyc_smlad(xb[1], o, s0);
        s1 = tinyc_smlad(xb[2], e, s1);
        s1 = tinyc_smlad(xb[3], o, s1);
        xb += 4;
    }
    if (g < k) {
        /* the last group's weights one by one (no read past the filter) */
        const int32_t w0 = wf[g], w1 = g + 1 < k ? wf[g + 1] : 0, w2 = g + 2 < k ? wf[g + 2] : 0;
        const uint32_t e = tinyc_pack16(w0, w2), o = tinyc_pack16(w1, 0);
        s0 = tinyc_smlad(xb[0], e, s0);
        s0 = tinyc_smlad(xb[1], o, s0);
        s1 = tinyc_smlad(xb[2], e, s1);
        s1 = tinyc_smlad(xb[3], o, s1);
    }
    *a0 = s0;
    *a1 = s1;
}

/* The im2col path: windows of up to IM2COL_WORDS / (4 * groups) pixel pairs
 * go into the scratch as offset-added int16 pairs; then per output channel
 * pair, cv_pairs over those pixel pairs. */
TINYC_ALWAYS_INLINE void conv_im2col(const tinyc_conv_params *p, const int8_t *in, const int8_t *w,
                                     const int32_t *bias, const int32_t *mult, const int32_t *shift, int8_t *out,
                                     uint32_t *xbuf)
{
    const int32_t k = p->k_h * p->k_w * p->in_c;
    const int32_t groups = (k + 3) >> 2;
    const int32_t kp = 4 * groups;
    const int32_t out_c = p->out_c;
    const int32_t n_pix = p->out_h * p->out_w;
    const int32_t per_block = IM2COL_WORDS / (4 * groups);     /* pixel pairs per buffer */
    const int full = p->act_min == -128 && p->act_max == 127;
    const uint32_t off2 = tinyc_pack16(p->in_offset, p->in_offset);
    int8_t *const stage = (int8_t *)(xbuf + per_block * 4 * groups);  /* an int8 window (kp <= IM2COL_WORDS) */
    cv_args a;
    int32_t pix = 0;

    a.f = k;
    a.odd = groups & 1;
    while (pix < n_pix) {
        /* the block: pairs (pix, pix + 1), ..., a last lone pixel paired with itself */
        const int32_t left = n_pix - pix;
        const int32_t pairs = left >= 2 * per_block ? per_block : (left + 1) >> 1;
        const int lone = 2 * pairs > left;
        int32_t i, o;
        for (i = 0; i < pairs; ++i) {
            const int32_t q0 = pix + 2 * i;
            const int32_t q1 = lone && i == pairs - 1 ? q0 : q0 + 1;
            uint32_t *xb = xbuf + i * 4 * groups;
            window_words(p, in, q0, groups, off2, 0, stage, xb);
            window_words(p, in, q1, groups, off2, 0, stage, xb + 2);
        }
        for (o = 0; o < out_c; o += 2) {
            const int32_t o1 = o + 1 < out_c ? o + 1 : o;
            const int32_t b0 = bias != 0 ? bias[o] : 0, b1 = bias != 0 ? bias[o1] : 0;
            /* the last pair's weights, when a K % 4 tail would make the assembly
             * read past the last filter: a zero-padded copy in `stage` */
            const int tail_copy = (k & 3) != 0 && o1 + 1 == out_c && 2 * k + 3 <= IM2COL_WORDS;
            /* assembly unless: an odd last channel, a class > 0 channel, a clamp, or
             * the weights' last group would read past the last filter */
            if (o1 != o && full && ((k & 3) == 0 || o1 + 1 < out_c || tail_copy) &&
                tinyc_rq_fast(mult[o], shift[o], p->out_offset, &a.m2_0, &a.npo_0, &a.r_0) &&
                tinyc_rq_fast(mult[o1], shift[o1], p->out_offset, &a.m2_1, &a.npo_1, &a.r_1)) {
                a.w0 = w + o * k;
                if (tail_copy) {
                    for (i = 0; i < 2 * k; ++i) {
                        stage[i] = a.w0[i];
                    }
                    stage[2 * k] = stage[2 * k + 1] = stage[2 * k + 2] = 0;
                    a.w0 = stage;
                }
                a.wend = a.w0 + kp;
                a.b0 = b0;
                a.b1 = b1;
                a.xb = xbuf;
                a.dst = out + pix * out_c + o;
                a.dst_step = 2 * out_c;
                a.n = out_c;
                if (lone) {
                    if (pairs > 1) {
                        a.dst_end = a.dst + (pairs - 1) * 2 * out_c;
                        cv_pairs(&a);
                    }
                    a.xb = xbuf + (pairs - 1) * 4 * groups;
                    a.dst = out + (pix + 2 * (pairs - 1)) * out_c + o;
                    a.n = 0;
                    a.dst_step = 0;
                    a.dst_end = a.dst;
                    cv_pairs(&a);
                } else {
                    a.dst_end = a.dst + pairs * 2 * out_c;
                    cv_pairs(&a);
                }
                continue;
            }
            {
                /* in C: the other cases (requantization of any class, any clamp) */
                const tinyc_rq q0 = tinyc_rq_make(mult[o], shift[o], p->out_offset);
                const tinyc_rq q1 = tinyc_rq_make(mult[o1], shift[o1], p->out_offset);
                for (i = 0; i < pairs; ++i) {
                    const uint32_t *xb = xbuf + i * 4 * groups;
                    int8_t *d = out + (pix + 2 * i) * out_c;
                    const int second = !(lone && i == pairs - 1);
                    int32_t s00 = b0, s01 = b0, s10 = b1, s11 = b1;
                    buf_dot(xb, w + o * k, k, &s00, &s01);
                    d[o] = tinyc_rq_out(s00, &q0, p->act_min, p->act_max, 0);
                    if (second) {
                        d[out_c + o] = tinyc_rq_out(s01, &q0, p->act_min, p->act_max, 0);
                    }
                    if (o1 != o) {
                        buf_dot(xb, w + o1 * k, k, &s10, &s11);
                        d[o1] = tinyc_rq_out(s10, &q1, p->act_min, p->act_max, 0);
                        if (second) {
                            d[out_c + o1] = tinyc_rq_out(s11, &q1, p->act_min, p->act_max, 0);
                        }
                    }
                }
            }
        }
        pix += 2 * pairs - lone;
    }
}

/* The direct path (larger K, dil_w 1, in_c a multiple of 4): 4 output channels
 * at a time (outer loop: their requantization constants once), and per output
 * pixel its in-bounds kernel rows as segments of contiguous input and weights,
 * each input word shared by the 4 channels (tinyc_mac_1x4_rows). */
TINYC_ALWAYS_INLINE void conv_direct(const tinyc_conv_params *p, const int8_t *in, const int8_t *w,
                                     const int32_t *bias, const int32_t *mult, const int32_t *shift, int8_t *out)
{
    const int32_t in_c = p->in_c;
    const int32_t out_c = p->out_c;
    const int32_t f = p->k_h * p->k_w * in_c;
    const int32_t row_bytes = p->in_w * in_c;
    const uint32_t off2 = tinyc_pack16(p->in_offset, p->in_offset);
    const int full = p->act_min == -128 && p->act_max == 127;
    tinyc_m14_args a;
    int32_t o, oy, ox, j;

    a.f = f;
    a.off2 = off2;
    for (o = 0; o < out_c; o += 4) {
        const int32_t nb = out_c - o < 4 ? out_c - o : 4;
        int32_t m2[4], npo[4], r[4], b[4];
        int fast = full;
        int8_t *dst = out + o;
        for (j = 0; j < nb; ++j) {
            fast = fast && tinyc_rq_fast(mult[o + j], shift[o + j], p->out_offset, &m2[j], &npo[j], &r[j]);
            b[j] = bias != 0 ? bias[o + j] : 0;
        }
        for (oy = 0; oy < p->out_h; ++oy) {
            const int32_t iy0 = oy * p->stride_h - p->pad_t;
            int32_t ky0, ky1;
            tap_range(iy0, p->dil_h, p->k_h, p->in_h, &ky0, &ky1);
            for (ox = 0; ox < p->out_w; ++ox) {
                const int32_t ix0 = ox * p->stride_w - p->pad_l;
                int32_t kx0, kx1, seg, segs, acc[4];
                const int8_t *x0;
                const int8_t *w0;
                tap_range(ix0, 1, p->k_w, p->in_w, &kx0, &kx1);
                seg = (kx1 - kx0) * in_c;            /* bytes per kernel row segment */
                segs = seg > 0 ? ky1 - ky0 : 0;
                x0 = in + ((iy0 + ky0 * p->dil_h) * p->in_w + ix0 + kx0) * in_c;
                w0 = w + o * f + (ky0 * p->k_w + kx0) * in_c;
                for (j = 0; j < nb; ++j) {
                    acc[j] = b[j];
                }
                if (segs > 0 && nb == 4) {
                    a.x = x0;
                    a.w0 = w0;
                    a.xend = x0 + seg;
                    a.segs = segs;
                    a.odd = (seg >> 2) & 1;
                    a.xskip = p->dil_h * row_bytes - seg;
                    a.xstep = p->dil_h * row_bytes;
                    a.wskip = p->k_w * in_c - seg;
                    a.acc[0] = acc[0];
                    a.acc[1] = acc[1];
                    a.acc[2] = acc[2];
                    a.acc[3] = acc[3];
                    tinyc_mac_1x4_rows(&a);
                    acc[0] = a.acc[0];
                    acc[1] = a.acc[1];
                    acc[2] = a.acc[2];
                    acc[3] = a.acc[3];
                } else if (segs > 0) {
                    for (j = 0; j < nb; ++j) {
                        const int8_t *xr = x0;
                        const int8_t *wr = w0 + j * f;
                        int32_t q;
                        for (q = 0; q < segs; ++q) {
                            acc[j] = tinyc_dot_off(xr, wr, seg, off2, p->in_offset, acc[j]);
                            xr += p->dil_h * row_bytes;
                            wr += p->k_w * in_c;
                        }
                    }
                }
                if (fast) {
                    for (j = 0; j < nb; ++j) {
                        dst[j] = (int8_t)__ssat(tinyc_rq_value0(acc[j], m2[j], npo[j], r[j]), 8);
                    }
                } else {
                    for (j = 0; j < nb; ++j) {
                        const tinyc_rq q = tinyc_rq_make(mult[o + j], shift[o + j], p->out_offset);
                        dst[j] = tinyc_rq_out(acc[j], &q, p->act_min, p->act_max, 0);
                    }
                }
                dst += out_c;
            }
        }
    }
}

/* in_offset fits SXTAB16's 16-bit lanes with every int8 x added. */
static int dsp_offset_ok(int32_t in_offset)
{
    return in_offset >= -32767 + 128 && in_offset <= 32767 - 127;
}

/* The caller's scratch as words when it holds `need` bytes (need > 0). */
static uint32_t *scratch_words(void *scratch, int32_t scratch_bytes, int32_t need)
{
    const int ok = need > 0 && scratch != 0 && scratch_bytes >= need && ((uintptr_t)scratch & 3u) == 0;
    return ok ? (uint32_t *)scratch : 0;
}
#endif /* TINYC_DSP */

int32_t tinyc_conv2d_1x1_s8_scratch_bytes(const tinyc_conv_params *p)
{
#if TINYC_DSP
    /* two weight rows sign-extended (tinyc_fill_wbuf): 4 * K bytes for K <= TINYC_WBUF_K */
    if (p->in_c >= 4 && p->in_c <= TINYC_WBUF_K && p->out_h > 0 && p->out_w > 0) {
        return 16 * (p->in_c >> 2);
    }
#else
    /* a pixel's channels as int16 with the input offset added (conv1x1_portable;
     * without an offset the int8 channels serve as they are) */
    if (p->out_c >= 4 && p->out_h > 0 && p->out_w > 0 && p->in_offset != 0) {
        return 2 * p->in_c;
    }
#endif
    (void)p;
    return 0;
}

int32_t tinyc_conv2d_s8_scratch_bytes(const tinyc_conv_params *p)
{
#if TINYC_DSP
    const int32_t groups = (p->k_h * p->k_w * p->in_c + 3) >> 2;
    if (p->groups <= 1 && p->out_h > 0 && p->out_w > 0 && groups > 0 && 4 * groups <= IM2COL_WORDS) {
        return 16 * groups * (IM2COL_WORDS / (4 * groups)) + IM2COL_WORDS;
    }
#endif
    (void)p;
    return 0;
}

void tinyc_conv2d_1x1_s8(const tinyc_conv_params *p, const int8_t *in, const int8_t *w,
                         const int32_t *bias, const int32_t *mult, const int32_t *shift, int8_t *out,
                         void *scratch, int32_t scratch_bytes)
{
#if TINYC_DSP
    if (dsp_offset_ok(p->in_offset) && p->out_h > 0 && p->out_w > 0 &&
        tinyc_rq_layer_ok(mult, shift, p->out_c, p->out_offset, p->act_min, p->act_max)) {
        const int whole = p->stride_h == 1 && p->stride_w == 1 && p->out_w == p->in_w;
        pw_problem m;
        m.x = in;
        m.runs = whole ? 1 : p->out_h;
        m.run_len = whole ? p->out_h * p->out_w : p->out_w;
        m.pix_step = p->stride_w * p->in_c;
        m.run_step = p->stride_h * p->in_w * p->in_c;
        m.k = p->in_c;
        m.n = p->out_c;
        m.in_offset = p->in_offset;
        m.out_offset = p->out_offset;
        m.act_min = p->act_min;
        m.act_max = p->act_max;
        pw_run(&m, w, bias, mult, shift, out,
               scratch_words(scratch, scratch_bytes, tinyc_conv2d_1x1_s8_scratch_bytes(p)));
        return;
    }
    conv1x1_portable(p, in, w, bias, mult, shift, out, 0);
#else
    const int32_t need = tinyc_conv2d_1x1_s8_scratch_bytes(p);
    const int wide = need > 0 && scratch != 0 && scratch_bytes >= need && ((uintptr_t)scratch & 1u) == 0 &&
                     p->in_offset >= -32767 + 128 && p->in_offset <= 32767 - 127;
    conv1x1_portable(p, in, w, bias, mult, shift, out, wide ? (int16_t *)scratch : 0);
#endif
}

void tinyc_conv2d_s8(const tinyc_conv_params *p, const int8_t *in, const int8_t *w,
                     const int32_t *bias, const int32_t *mult, const int32_t *shift, int8_t *out,
                     void *scratch, int32_t scratch_bytes)
{
#if TINYC_DSP
    if (p->groups <= 1 && p->out_h > 0 && p->out_w > 0 && p->in_offset >= -127 && p->in_offset <= 128 &&
        tinyc_rq_layer_ok(mult, shift, p->out_c, p->out_offset, p->act_min, p->act_max)) {
        uint32_t *xbuf = scratch_words(scratch, scratch_bytes, tinyc_conv2d_s8_scratch_bytes(p));
        if (xbuf != 0) {
            conv_im2col(p, in, w, bias, mult, shift, out, xbuf);
            return;
        }
        if (p->dil_w == 1 && (p->in_c & 3) == 0) {
            conv_direct(p, in, w, bias, mult, shift, out);
            return;
        }
    }
#else
    (void)scratch;
    (void)scratch_bytes;
#endif
    conv_portable(p, in, w, bias, mult, shift, out);
}

TINYC_FALLBACK static void dw_portable(const tinyc_conv_params *p, const int8_t *in, const int8_t *w,
                        const int32_t *bias, const int32_t *mult, const int32_t *shift, int8_t *out,
                        int32_t c_first)
{
    const int32_t in_c = p->in_c;
    const int32_t dm = p->depth_multiplier > 0 ? p->depth_multiplier : 1;
    const int32_t in_offset = p->in_offset;
    const conv_out o_p = conv_out_of(p, mult, shift);
    const int32_t in_h = p->in_h, in_w = p->in_w, out_h = p->out_h, out_w = p->out_w, k_h = p->k_h, k_w = p->k_w;
    const int32_t stride_h = p->stride_h, stride_w = p->stride_w, dil_h = p->dil_h, dil_w = p->dil_w;
    const int32_t pad_t = p->pad_t, pad_l = p->pad_l;
    const int32_t tap_step_x = dil_w * in_c;
    const int32_t tap_step_y = dil_h * in_w * in_c;
    const int32_t w_filter = k_h * k_w;     /* weights [out_c][k_h][k_w] */
    int32_t oy, ox, c, m;

    for (oy = 0; oy < out_h; ++oy) {
        const int32_t iy0 = oy * stride_h - pad_t;
        int32_t ky0, ky1;
        tap_range(iy0, dil_h, k_h, in_h, &ky0, &ky1);
        for (ox = 0; ox < out_w; ++ox) {
            const int32_t ix0 = ox * stride_w - pad_l;
            int32_t kx0, kx1, win;
            tap_range(ix0, dil_w, k_w, in_w, &kx0, &kx1);
            /* Index of the first in-bounds tap of the window (channel 0). */
            win = ((iy0 + ky0 * dil_h) * in_w + (ix0 + kx0 * dil_w)) * in_c;
            int8_t *px = out + (oy * out_w + ox) * p->out_c;
            for (c = c_first; c < in_c; ++c) {
                /* Input channel c feeds output channels c * dm .. c * dm + dm - 1,
                 * so the output stays in NHWC order. */
                for (m = 0; m < dm; ++m) {
                    const int32_t o = c * dm + m;
                    const int8_t *wf = w + o * w_filter;
                    int32_t in_row = win + c;
                    int32_t acc = 0;
                    int32_t ky, kx;
                    for (ky = ky0; ky < ky1; ++ky) {
                        const int8_t *wr = wf + ky * k_w;
                        int32_t in_tap = in_row;
                        for (kx = kx0; kx < kx1; ++kx) {
                            acc += ((int32_t)in[in_tap] + in_offset) * (int32_t)wr[kx];
                            in_tap += tap_step_x;
                        }
                        in_row += tap_step_y;
                    }
                    px[o] = requantize(acc, bias, o, mult, shift, &o_p);
                }
            }
        }
    }
}

#if TINYC_DSP
#define DW_TAPS_MAX 64              /* taps a weight table (scratch) may hold: 2 words each, 512 bytes */

/* The 4 channels c .. c + 3's weights of each tap, packed as (c, c + 2) and
 * (c + 1, c + 3) int16 lanes, the way SXTAB16 / SXTAB16 ROR 8 lay out one input
 * word of those channels (weights [C][taps]). */
static void dw4_table(const int8_t *w, int32_t c, int32_t taps, uint32_t *tab)
{
    int32_t t;
    for (t = 0; t < taps; ++t) {
        tab[2 * t] = tinyc_pack16(w[c * taps + t], w[(c + 2) * taps + t]);
        tab[2 * t + 1] = tinyc_pack16(w[(c + 1) * taps + t], w[(c + 3) * taps + t]);
    }
}

/* 4 channels' sums requantized (simd.h) into one word of int8 outputs; `fast`:
 * all 4 of class 0 and the full clamp range. */
TINYC_ALWAYS_INLINE uint32_t dw4_out(int32_t a0, int32_t a1, int32_t a2, int32_t a3, const tinyc_rq *q, int fast,
                                     int32_t lo, int32_t hi)
{
    if (fast) {
        return (uint32_t)(uint8_t)__ssat(tinyc_rq_value0(a0, q[0].m2, q[0].npo, q[0].r), 8) |
               (uint32_t)(uint8_t)__ssat(tinyc_rq_value0(a1, q[1].m2, q[1].npo, q[1].r), 8) << 8 |
               (uint32_t)(uint8_t)__ssat(tinyc_rq_value0(a2, q[2].m2, q[2].npo, q[2].r), 8) << 16 |
               (uint32_t)(uint8_t)__ssat(tinyc_rq_value0(a3, q[3].m2, q[3].npo, q[3].r), 8) << 24;
    }
    return (uint32_t)(uint8_t)tinyc_rq_out(a0, &q[0], lo, hi, 0) |
           (uint32_t)(uint8_t)tinyc_rq_out(a1, &q[1], lo, hi, 0) << 8 |
           (uint32_t)(uint8_t)tinyc_rq_out(a2, &q[2], lo, hi, 0) << 16 |
           (uint32_t)(uint8_t)tinyc_rq_out(a3, &q[3], lo, hi, 0) << 24;
}

/* Depthwise with depth multiplier 1 on the DSP: 4 channels at a time, SIMD
 * across channels.  One input word holds channels c .. c + 3 of a tap; SXTAB16
 * adds the offset to (c, c + 2) and (c + 1, c + 3), and the 4 channels' weights
 * of the tap, packed into the same lanes in a table (the scratch) once per channel
 * group, meet them in SMLABB / SMLATT (one MAC each).  The 4 outputs of a
 * pixel are requantized (simd.h) and stored as one word.  Channels past the
 * last group of 4 go to the portable loop.  (A pairing of horizontally
 * adjacent taps by PKHBT / PKHTB into SMLADs spilled in C and was slower.) */
TINYC_ALWAYS_INLINE int32_t dw_dsp(const tinyc_conv_params *p, const int8_t *in, const int8_t *w,
                                   const int32_t *bias, const int32_t *mult, const int32_t *shift, int8_t *out,
                                   uint32_t *tab)
{
    const int32_t chans = p->in_c;
    const int32_t taps = p->k_h * p->k_w;
    const int32_t tap_step_x = p->dil_w * chans;
    const int32_t tap_step_y = p->dil_h * p->in_w * chans;
    const uint32_t off2 = tinyc_pack16(p->in_offset, p->in_offset);
    const int32_t lo = p->act_min, hi = p->act_max;
    int32_t c;

    for (c = 0; c + 4 <= chans; c += 4) {
        tinyc_rq q[4];
        int32_t b[4], j, oy, ox;
        int fast = lo == -128 && hi == 127;
        dw4_table(w, c, taps, tab);
        for (j = 0; j < 4; ++j) {
            q[j] = tinyc_rq_make(mult[c + j], shift[c + j], p->out_offset);
            b[j] = bias != 0 ? bias[c + j] : 0;
            fast = fast && q[j].cls == 0;
        }
        for (oy = 0; oy < p->out_h; ++oy) {
            const int32_t iy0 = oy * p->stride_h - p->pad_t;
            int32_t ky0, ky1;
            tap_range(iy0, p->dil_h, p->k_h, p->in_h, &ky0, &ky1);
            for (ox = 0; ox < p->out_w; ++ox) {
                const int32_t ix0 = ox * p->stride_w - p->pad_l;
                int32_t kx0, kx1, ky, kx;
                int32_t a0 = b[0], a1 = b[1], a2 = b[2], a3 = b[3];
                const int8_t *row;
                const uint32_t *tr;
                tap_range(ix0, p->dil_w, p->k_w, p->in_w, &kx0, &kx1);
                row = in + ((iy0 + ky0 * p->dil_h) * p->in_w + ix0 + kx0 * p->dil_w) * chans + c;
                tr = tab + 2 * (ky0 * p->k_w + kx0);
                for (ky = ky0; ky < ky1; ++ky) {
                    const int8_t *x = row;
                    const uint32_t *tw = tr;
                    for (kx = kx0; kx < kx1; ++kx) {
                        const uint32_t v = tinyc_ld4(x);
                        const uint32_t xe = tinyc_sxtab16(off2, v), xo = tinyc_sxtab16_r8(off2, v);
                        a0 = tinyc_smlabb(xe, tw[0], a0);
                        a2 = tinyc_smlatt(xe, tw[0], a2);
                        a1 = tinyc_smlabb(xo, tw[1], a1);
                        a3 = tinyc_smlatt(xo, tw[1], a3);
                        x += tap_step_x;
                        tw += 2;
                    }
                    row += tap_step_y;
                    tr += 2 * p->k_w;
                }
                tinyc_st4(out + (oy * p->out_w + ox) * chans + c, dw4_out(a0, a1, a2, a3, q, fast, lo, hi));
            }
        }
    }
    return c;
}
#endif

#if TINYC_DSP
/* A depthwise column (matmul_dsp.h tinyc_dw_column_ok): 4 channels per input
 * word down the column, their taps' weights packed in tab (2 words per tap, as
 * dw_dsp's), the input offset folded into the 4 biases.  Output row oy reads
 * input rows from oy * stride_h - pad_t on, before it is written; so with
 * pad_t = 0 it may run over its input (out == in): the row it overwrites is
 * its own first input row, which no later output reads. */
int32_t tinyc_dw_column_dsp(const tinyc_conv_params *p, const int8_t *in, const int8_t *w, const int32_t *bias,
                            const int32_t *mult, const int32_t *shift, int8_t *out, uint32_t *tab)
{
    const int32_t chans = p->in_c;
    const int32_t taps = p->k_h;
    const int32_t step = p->dil_h * chans;
    const int32_t lo = p->act_min, hi = p->act_max;
    /* every window inside the input: the offset goes into the biases and no
     * output needs its tap range */
    const int inside = p->pad_t == 0 && (p->out_h - 1) * p->stride_h + (taps - 1) * p->dil_h < p->in_h;
    const uint32_t off2 = inside ? 0u : tinyc_pack16(p->in_offset, p->in_offset);
    int32_t c;

    for (c = 0; c + 4 <= chans; c += 4) {
        tinyc_rq q[4];
        uint32_t b[4];
        int32_t j, t, oy;
        int fast = lo == -128 && hi == 127;
        for (j = 0; j < 4; ++j) {
            b[j] = bias != 0 ? (uint32_t)bias[c + j] : 0u;
        }
        dw4_table(w, c, taps, tab);
        for (t = 0; inside && t < taps; ++t) {
            b[0] += (uint32_t)(p->in_offset * w[c * taps + t]);
            b[1] += (uint32_t)(p->in_offset * w[(c + 1) * taps + t]);
            b[2] += (uint32_t)(p->in_offset * w[(c + 2) * taps + t]);
            b[3] += (uint32_t)(p->in_offset * w[(c + 3) * taps + t]);
        }
        for (j = 0; j < 4; ++j) {
            q[j] = tinyc_rq_make(mult[c + j], shift[c + j], p->out_offset);
            fast = fast && q[j].cls == 0;
        }
        for (oy = 0; oy < p->out_h; ++oy) {
            const int32_t iy0 = oy * p->stride_h - p->pad_t;
            int32_t t0 = 0, t1 = taps;
            int32_t a0 = (int32_t)b[0], a1 = (int32_t)b[1], a2 = (int32_t)b[2], a3 = (int32_t)b[3];
            const int8_t *x;
            const uint32_t *tw;
            if (!inside) {
                tap_range(iy0, p->dil_h, taps, p->in_h, &t0, &t1);
            }
            x = in + (iy0 + t0 * p->dil_h) * chans + c;
            tw = tab + 2 * t0;
            for (t = t0; t < t1; ++t) {
                /* padded taps add (zp + in_offset) * w = 0: only the inside ones */
                const uint32_t u = tinyc_ld4(x);
                const uint32_t xe = tinyc_sxtab16(off2, u);
                const uint32_t xo = tinyc_sxtab16_r8(off2, u);
                a0 = tinyc_smlabb(xe, tw[0], a0);
                a2 = tinyc_smlatt(xe, tw[0], a2);
                a1 = tinyc_smlabb(xo, tw[1], a1);
                a3 = tinyc_smlatt(xo, tw[1], a3);
                x += step;
                tw += 2;
            }
            tinyc_st4(out + oy * chans + c, dw4_out(a0, a1, a2, a3, q, fast, lo, hi));
        }
    }
    return c;
}
#endif

int32_t tinyc_depthwise_conv2d_s8_scratch_bytes(const tinyc_conv_params *p)
{
#if TINYC_DSP
    /* the weight table of dw_dsp: 2 words per tap */
    const int32_t taps = p->k_h * p->k_w;
    if (p->depth_multiplier <= 1 && p->in_c >= 4 && p->out_h > 0 && p->out_w > 0 && taps > 0 &&
        taps <= DW_TAPS_MAX) {
        return 8 * taps;
    }
#endif
    (void)p;
    return 0;
}

void tinyc_depthwise_conv2d_s8(const tinyc_conv_params *p, const int8_t *in, const int8_t *w,
                               const int32_t *bias, const int32_t *mult, const int32_t *shift, int8_t *out,
                               void *scratch, int32_t scratch_bytes)
{
    int32_t done = 0;
#if TINYC_DSP
    uint32_t *tab = scratch_words(scratch, scratch_bytes, tinyc_depthwise_conv2d_s8_scratch_bytes(p));
    if (tab != 0 && dsp_offset_ok(p->in_offset) &&
        tinyc_rq_layer_ok(mult, shift, p->out_c, p->out_offset, p->act_min, p->act_max)) {
        done = TINYC_USES(DW_COLUMN) && tinyc_dw_column_ok(p) ? tinyc_dw_column_dsp(p, in, w, bias, mult, shift, out, tab)
                                                              : dw_dsp(p, in, w, bias, mult, shift, out, tab);
    }
#else
    (void)scratch;
    (void)scratch_bytes;
#endif
    dw_portable(p, in, w, bias, mult, shift, out, done);
}

/* ---- wide weights ----------------------------------------------------------
 *
 * tinyc_conv2d_wide_s8: a one-group convolution (any kernel, stride, padding,
 * dilation) whose weights the compiler stored pre-extended to int16 in the
 * order the 2 x 2 loop reads them (kernels/conv.py widen: per output channel
 * pair, per group of 4 window values, channel 0's even and odd pairs, then
 * channel 1's) and whose bias holds the input offset (bias + in_offset *
 * sum(w)): the window enters raw, padded taps as the zero point.  Per group of
 * 4 window values of a pixel pair and a channel pair: one LDM of the 4 window
 * words, one of the 4 weight words, 8 SMLADs. */

/* The wide kernel's window words per block: more pixel pairs per block when
 * they fit (fewer requantization set-ups per channel pair), at least one. */
#define WIDE_WORDS 288

TINYC_FALLBACK static void conv_wide_portable(const tinyc_conv_params *p, const int8_t *in, const int32_t *w,
                                              const int32_t *bias, const int32_t *mult, const int32_t *shift,
                                              int8_t *out)
{
    const int32_t in_c = p->in_c;
    const int32_t groups = (p->k_h * p->k_w * in_c + 3) >> 2;
    const int32_t zp = -p->in_offset;
    int32_t oy, ox, o, ky, kx, c;
    for (oy = 0; oy < p->out_h; ++oy) {
        for (ox = 0; ox < p->out_w; ++ox) {
            for (o = 0; o < p->out_c; ++o) {
                uint32_t acc = (uint32_t)bias[o];
                int32_t i = 0;
                for (ky = 0; ky < p->k_h; ++ky) {
                    const int32_t iy = oy * p->stride_h - p->pad_t + ky * p->dil_h;
                    for (kx = 0; kx < p->k_w; ++kx) {
                        const int32_t ix = ox * p->stride_w - p->pad_l + kx * p->dil_w;
                        const int inside = iy >= 0 && iy < p->in_h && ix >= 0 && ix < p->in_w;
                        const int8_t *x = in + (iy * p->in_w + ix) * in_c;
                        for (c = 0; c < in_c; ++c, ++i) {
                            const int32_t v = inside ? x[c] : zp;
                            acc += (uint32_t)(v * tinyc_wide_weight(w, groups, o, i));
                        }
                    }
                }
                acc = (uint32_t)(tinyc_mbqm((int32_t)acc, mult[o], shift[o]) + p->out_offset);
                *out++ = (int8_t)tinyc_clamp32((int32_t)acc, p->act_min, p->act_max);
            }
        }
    }
}

int32_t tinyc_conv2d_wide_s8_scratch_bytes(const tinyc_conv_params *p)
{
#if TINYC_DSP
    /* per pixel pair 4 words per group (at least one pair, more while they fit
     * in WIDE_WORDS), then one int8 window; kernels/conv.py holds the same rule */
    const int32_t groups = (p->k_h * p->k_w * p->in_c + 3) >> 2;
    if (p->out_h > 0 && p->out_w > 0 && groups > 0) {
        const int32_t pairs = 4 * groups <= WIDE_WORDS ? WIDE_WORDS / (4 * groups) : 1;
        return 16 * groups * pairs + 4 * groups;
    }
#endif
    (void)p;
    return 0;
}

#if TINYC_DSP
/* Arguments of the cw_* loops (offsets fixed in the assembly). */
typedef struct {
    const uint32_t *xb;    /*  0: window words of the first pixel pair (per group: p0 even, p0 odd, p1 even, p1 odd) */
    const int32_t *w0;     /*  4: the channel pair's wide weights */
    const int32_t *wend;   /*  8: w0 past its groups */
    int32_t rem;           /* 12: groups % 4 (the unrolled loop's entry) */
    int32_t b0, b1;        /* 16: folded biases of channels 0 and 1 */
    int32_t m2_0, m2_1;    /* 24: requantization constants (simd.h tinyc_rq) of channels 0 and 1 */
    int32_t npo_0, npo_1;  /* 32 */
    int32_t r_0, r_1;      /* 40 */
    int8_t *dst;           /* 48: output of pixel 0, channel 0 */
    int8_t *dst_end;       /* 52: dst past the last pair */
    int32_t n;             /* 56: bytes from pixel 0's outputs to pixel 1's (0: a pixel paired with itself) */
    int32_t dst_step;      /* 60: dst advance per pair */
    int32_t sm_0, sm_1;    /* 64: (class 1) */
    int32_t k_0, k_1;      /* 72 */
    uint32_t lo4, hi4;     /* 80: the clamp range's bounds in each byte */
} cw_args;

typedef char cw_args_layout[(offsetof(cw_args, b0) == 16 && offsetof(cw_args, dst) == 48 &&
                             offsetof(cw_args, dst_step) == 60 && offsetof(cw_args, lo4) == 80) ? 1 : -1];

/* 2 pixels x 2 output channels per step over consecutive pixel pairs' window
 * words.  Registers: r0-r3 window words, r8 / r9 / r11 / r12 weight words,
 * r4 / r5 channel 0 (pixel 0 / 1), r6 / r7 channel 1, r10 window pointer, lr
 * weight pointer, the arguments' address at [sp].  The group loop is unrolled
 * 4 times (groups % 4 = r > 0 enters at copy 5 - r).  Then the 4 sums are
 * requantized (simd.h: CW_RQ_FAST class 0, CW_RQ_GEN class 0 or 1), saturated
 * to int8 and stored as two halfwords (CW_CLAMP: packed into one word first
 * and clamped bytewise, SSUB8 / SEL, to [lo, hi]).  44 bytes of stack. */
#define CW_GROUP                              \
    "ldmia r10!, {r0, r1, r2, r3}\n\t"        \
    "ldmia lr!, {r8, r9, r11, r12}\n\t"       \
    "smlad r4, r0, r8, r4\n\t"                \
    "smlad r4, r1, r9, r4\n\t"                \
    "smlad r5, r2, r8, r5\n\t"                \
    "smlad r5, r3, r9, r5\n\t"                \
    "smlad r6, r0, r11, r6\n\t"               \
    "smlad r6, r1, r12, r6\n\t"               \
    "smlad r7, r2, r11, r7\n\t"               \
    "smlad r7, r3, r12, r7\n\t"

#define CW_BEGIN                    \
    "push {r4-r11, lr}\n\t"         \
    "sub sp, sp, #8\n\t"            \
    "str r0, [sp]\n\t"              \
    "ldr r10, [r0, #0]\n\t"         \
    "1:\n\t"                        \
    "ldr r12, [sp]\n\t"             \
    "ldrd r4, r6, [r12, #16]\n\t"   \
    "mov r5, r4\n\t"                \
    "mov r7, r6\n\t"                \
    "ldr lr, [r12, #4]\n\t"         \
    "ldr r11, [r12, #12]\n\t"       \
    "cmp r11, #2\n\t"               \
    "beq 4f\n\t"                    \
    "bhi 3f\n\t"                    \
    "cmp r11, #1\n\t"               \
    "beq 5f\n\t"                    \
    "2:\n\t" CW_GROUP               \
    "3:\n\t" CW_GROUP               \
    "4:\n\t" CW_GROUP               \
    "5:\n\t" CW_GROUP               \
    "ldr r12, [sp]\n\t"             \
    "ldr r11, [r12, #8]\n\t"        \
    "cmp lr, r11\n\t"               \
    "bne 2b\n\t"                    \
    "ldrd r0, r1, [r12, #24]\n\t"   \
    "smmlar r4, r4, r0, r4\n\t"     \
    "smmlar r5, r5, r0, r5\n\t"     \
    "smmlar r6, r6, r1, r6\n\t"     \
    "smmlar r7, r7, r1, r7\n\t"

#define CW_RQ_FAST                    \
    "add r4, r4, r4, asr #31\n\t"     \
    "add r5, r5, r5, asr #31\n\t"     \
    "add r6, r6, r6, asr #31\n\t"     \
    "add r7, r7, r7, asr #31\n\t"

#define CW_RQ_GEN                     \
    "ldrd r0, r1, [r12, #64]\n\t"     \
    "and r2, r0, r4, asr #31\n\t"     \
    "add r4, r4, r2\n\t"              \
    "and r2, r0, r5, asr #31\n\t"     \
    "add r5, r5, r2\n\t"              \
    "and r2, r1, r6, asr #31\n\t"     \
    "add r6, r6, r2\n\t"              \
    "and r2, r1, r7, asr #31\n\t"     \
    "add r7, r7, r2\n\t"              \
    "ldrd r0, r1, [r12, #72]\n\t"     \
    "asr r4, r4, r0\n\t"              \
    "asr r5, r5, r0\n\t"              \
    "asr r6, r6, r1\n\t"              \
    "asr r7, r7, r1\n\t"

#define CW_SAT                        \
    "ldrd r0, r1, [r12, #32]\n\t"     \
    "qadd r4, r4, r0\n\t"             \
    "qadd r5, r5, r0\n\t"             \
    "qadd r6, r6, r1\n\t"             \
    "qadd r7, r7, r1\n\t"             \
    "ldrd r0, r1, [r12, #40]\n\t"     \
    "asr r4, r4, r0\n\t"              \
    "asr r5, r5, r0\n\t"              \
    "asr r6, r6, r1\n\t"              \
    "asr r7, r7, r1\n\t"              \
    "ssat r4, #8, r4\n\t"             \
    "ssat r5, #8, r5\n\t"             \
    "ssat r6, #8, r6\n\t"             \
    "ssat r7, #8, r7\n\t"             \
    "bfi r4, r6, #8, #8\n\t"          \
    "bfi r5, r7, #8, #8\n\t"

#define CW_CLAMP                      \
    "bfi r4, r5, #16, #16\n\t"        \
    "ldrd r0, r1, [r12, #80]\n\t"     \
    "ssub8 r2, r4, r0\n\t"            \
    "sel r4, r4, r0\n\t"              \
    "ssub8 r2, r1, r4\n\t"            \
    "sel r4, r4, r1\n\t"              \
    "lsr r5, r4, #16\n\t"

#define CW_END                        \
    "ldr r0, [r12, #48]\n\t"          \
    "ldr r1, [r12, #56]\n\t"          \
    "strh r4, [r0]\n\t"               \
    "strh r5, [r0, r1]\n\t"           \
    "ldr r1, [r12, #60]\n\t"          \
    "add r0, r0, r1\n\t"              \
    "str r0, [r12, #48]\n\t"          \
    "ldr r1, [r12, #52]\n\t"          \
    "cmp r0, r1\n\t"                  \
    "bne 1b\n\t"                      \
    "add sp, sp, #8\n\t"              \
    "pop {r4-r11, pc}\n\t"

#define CW_FUNCTION(name, rq, clamp)                                                           \
    __attribute__((naked, noinline)) static void name(const cw_args *args __attribute__((unused))) \
    {                                                                                          \
        __asm__ volatile(CW_BEGIN rq CW_SAT clamp CW_END);                                     \
    }

/* The common case (class 0 channels, no clamp) and the general one. */
CW_FUNCTION(cw_pairs_fast, CW_RQ_FAST, "")
CW_FUNCTION(cw_pairs_gen, CW_RQ_GEN, CW_CLAMP)

/* One of the loops above, called directly (the static call graph, from which
 * the stack reserve is sized, stays complete). */
TINYC_ALWAYS_INLINE void cw_pairs(int general, const cw_args *a)
{
    /* (the general loop also serves class 0 pairs, the fast one none else) */
    if (TINYC_USES(CW_GEN) && (general || !TINYC_USES(CW_FAST))) {
        cw_pairs_gen(a);
    } else {
        cw_pairs_fast(a);
    }
}

/* One channel (`ch` of the pair whose weights are wp) over a pixel pair's
 * window words: *a0 / *a1 += pixel 0 / 1. */
static void wide_dot(const uint32_t *xb, const int32_t *wp, int32_t ch, int32_t groups, int32_t *a0, int32_t *a1)
{
    int32_t s0 = *a0, s1 = *a1, g;
    wp += 2 * ch;
    for (g = 0; g < groups; ++g) {
        const uint32_t e = (uint32_t)wp[0], o = (uint32_t)wp[1];
        s0 = tinyc_smlad(xb[0], e, s0);
        s0 = tinyc_smlad(xb[1], o, s0);
        s1 = tinyc_smlad(xb[2], e, s1);
        s1 = tinyc_smlad(xb[3], o, s1);
        xb += 4;
        wp += 4;
    }
    *a0 = s0;
    *a1 = s1;
}

/* Output pixel q's input pixel, for a 1x1 kernel without padding. */
static const int8_t *pixel_of(const tinyc_conv_params *p, const int8_t *in, int32_t q)
{
    const int32_t oy = q / p->out_w, ox = q - oy * p->out_w;
    return in + (oy * p->stride_h * p->in_w + ox * p->stride_w) * p->in_c;
}

static void conv_wide_dsp(const tinyc_conv_params *p, const int8_t *in, const int32_t *w, const int32_t *bias,
                          const int32_t *mult, const int32_t *shift, int8_t *out, uint32_t *xbuf)
{
    const int32_t groups = (p->k_h * p->k_w * p->in_c + 3) >> 2;
    const int32_t out_c = p->out_c;
    const int32_t n_pix = p->out_h * p->out_w;
    const int32_t per_block = 4 * groups <= WIDE_WORDS ? WIDE_WORDS / (4 * groups) : 1;
    const int full = p->act_min == -128 && p->act_max == 127;
    const int32_t zp = -p->in_offset;
    const uint32_t padw = tinyc_pack16(zp, zp);
    int8_t *const stage = (int8_t *)(xbuf + per_block * 4 * groups);  /* one int8 window */
    const int pointwise = p->k_h == 1 && p->k_w == 1 && p->pad_t == 0 && p->pad_l == 0 && (p->in_c & 3) == 0;
    cw_args a;
    int32_t pix = 0;

    a.rem = groups & 3;
    a.lo4 = (uint32_t)(uint8_t)p->act_min * 0x01010101u;
    a.hi4 = (uint32_t)(uint8_t)p->act_max * 0x01010101u;
    while (pix < n_pix) {
        /* the block: pairs (pix, pix + 1), ..., a last lone pixel paired with itself */
        const int32_t left = n_pix - pix;
        const int32_t pairs = left >= 2 * per_block ? per_block : (left + 1) >> 1;
        const int lone = 2 * pairs > left;
        int32_t i, o;
        for (i = 0; i < pairs; ++i) {
            const int32_t q0 = pix + 2 * i;
            const int32_t q1 = lone && i == pairs - 1 ? q0 : q0 + 1;
            uint32_t *xb = xbuf + i * 4 * groups;
            if (pointwise) {
                /* a 1x1 window is its input pixel's K values (K % 4 == 0) */
                const int8_t *x0 = pixel_of(p, in, q0), *x1 = pixel_of(p, in, q1);
                int32_t g;
                for (g = 0; g < groups; ++g) {
                    const uint32_t v0 = tinyc_ld4(x0 + 4 * g), v1 = tinyc_ld4(x1 + 4 * g);
                    xb[0] = tinyc_sxtb16(v0);
                    xb[1] = tinyc_sxtb16_r8(v0);
                    xb[2] = tinyc_sxtb16(v1);
                    xb[3] = tinyc_sxtb16_r8(v1);
                    xb += 4;
                }
                continue;
            }
            window_words(p, in, q0, groups, 0, padw, stage, xb);
            window_words(p, in, q1, groups, 0, padw, stage, xb + 2);
        }
        for (o = 0; o < out_c; o += 2) {
            const int32_t o1 = o + 1 < out_c ? o + 1 : o;
            const int32_t *wp = w + (o >> 1) * groups * 4;
            int general = !full, asm_ok = o1 != o && (TINYC_USES(CW_FAST) || TINYC_USES(CW_GEN));
            if (asm_ok) {
                if (tinyc_rq_fast(mult[o], shift[o], p->out_offset, &a.m2_0, &a.npo_0, &a.r_0) &&
                    tinyc_rq_fast(mult[o1], shift[o1], p->out_offset, &a.m2_1, &a.npo_1, &a.r_1)) {
                    a.sm_0 = a.sm_1 = -1;
                    a.k_0 = a.k_1 = 0;
                } else {
                    /* class 1 (no right shift, or one over 23) in the general loop; class 2 in C */
                    const tinyc_rq q0 = tinyc_rq_make(mult[o], shift[o], p->out_offset);
                    const tinyc_rq q1 = tinyc_rq_make(mult[o1], shift[o1], p->out_offset);
                    asm_ok = q0.cls <= 1 && q1.cls <= 1;
                    general = 1;
                    a.m2_0 = q0.m2, a.npo_0 = q0.npo, a.r_0 = q0.r, a.sm_0 = q0.sm, a.k_0 = q0.k;
                    a.m2_1 = q1.m2, a.npo_1 = q1.npo, a.r_1 = q1.r, a.sm_1 = q1.sm, a.k_1 = q1.k;
                }
            }
            asm_ok = asm_ok && (!general || TINYC_USES(CW_GEN));
            if (asm_ok) {
                a.w0 = wp;
                a.wend = wp + 4 * groups;
                a.b0 = bias[o];
                a.b1 = bias[o1];
                a.xb = xbuf;
                a.dst = out + pix * out_c + o;
                a.dst_step = 2 * out_c;
                a.n = out_c;
                if (lone) {
                    if (pairs > 1) {
                        a.dst_end = a.dst + (pairs - 1) * 2 * out_c;
                        cw_pairs(general, &a);
                    }
                    a.xb = xbuf + (pairs - 1) * 4 * groups;
                    a.dst = out + (pix + 2 * (pairs - 1)) * out_c + o;
                    a.n = 0;
                    a.dst_step = 0;
                    a.dst_end = a.dst;
                    cw_pairs(general, &a);
                } else {
                    a.dst_end = a.dst + pairs * 2 * out_c;
                    cw_pairs(general, &a);
                }
                continue;
            }
            {
                /* in C: an odd last channel, a class 2 channel */
                const tinyc_rq q0 = tinyc_rq_make(mult[o], shift[o], p->out_offset);
                const tinyc_rq q1 = tinyc_rq_make(mult[o1], shift[o1], p->out_offset);
                for (i = 0; i < pairs; ++i) {
                    const uint32_t *xb = xbuf + i * 4 * groups;
                    int8_t *d = out + (pix + 2 * i) * out_c;
                    const int second = !(lone && i == pairs - 1);
                    int32_t s00 = bias[o], s01 = bias[o], s10 = bias[o1], s11 = bias[o1];
                    wide_dot(xb, wp, 0, groups, &s00, &s01);
                    d[o] = tinyc_rq_out(s00, &q0, p->act_min, p->act_max, 0);
                    if (second) {
                        d[out_c + o] = tinyc_rq_out(s01, &q0, p->act_min, p->act_max, 0);
                    }
                    if (o1 != o) {
                        wide_dot(xb, wp, 1, groups, &s10, &s11);
                        d[o1] = tinyc_rq_out(s10, &q1, p->act_min, p->act_max, 0);
                        if (second) {
                            d[out_c + o1] = tinyc_rq_out(s11, &q1, p->act_min, p->act_max, 0);
                        }
                    }
                }
            }
        }
        pix += 2 * pairs - lone;
    }
}
#endif /* TINYC_DSP */

void tinyc_conv2d_wide_s8(const tinyc_conv_params *p, const int8_t *in, const int32_t *w,
                          const int32_t *bias, const int32_t *mult, const int32_t *shift, int8_t *out,
                          void *scratch, int32_t scratch_bytes)
{
#if TINYC_DSP
    if (p->groups <= 1 && p->out_h > 0 && p->out_w > 0 &&
        tinyc_rq_layer_ok(mult, shift, p->out_c, p->out_offset, p->act_min, p->act_max)) {
        uint32_t *xbuf = scratch_words(scratch, scratch_bytes, tinyc_conv2d_wide_s8_scratch_bytes(p));
        if (xbuf != 0) {
            conv_wide_dsp(p, in, w, bias, mult, shift, out, xbuf);
            return;
        }
    }
#else
    (void)scratch;
    (void)scratch_bytes;
#endif
    conv_wide_portable(p, in, w, bias, mult, shift, out);
}
