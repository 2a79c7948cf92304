/* Private: helpers shared by the DSP (Cortex-M4 / M7 / M33 / M55) paths of
 * conv.c and fc.c: products of int8 vectors with int8 weight rows.  Include
 * after simd.h; empty unless TINYC_DSP.
 *
 * Every dot product works on groups of 4 int8 values: a word of 4 bytes gives
 * its even and odd bytes as two int16 pairs (SXTB16, SXTB16 ROR #8; SXTAB16
 * adds the input offset on the way), and two SMLADs multiply them with the
 * weights' pairs, extended the same way, into an int32 sum (exact, and the
 * same as the portable loop in any order).
 *
 *   tinyc_mac_1x4_rows   naked assembly, 1 input vector x 4 weight rows,
 *                        segment by segment (fully connected; the direct
 *                        convolution path, whose windows are row segments);
 *   tinyc_mac_2x2*       C, 2 inputs x 2 weight rows (the pointwise fallback;
 *                        the fast pointwise loops are assembly in conv.c);
 *   tinyc_fill_wbuf      two weight rows pre-extended into the scratch,
 *                        with their sums (the pointwise path folds the input
 *                        offset into the bias: bias + in_offset * sum(w));
 *   tinyc_dot_*, tinyc_sum_s8, tinyc_fold_bias, tinyc_rq_out: edges.
 */
#ifndef TINYC_MATMUL_DSP_H
#define TINYC_MATMUL_DSP_H

#include <stddef.h>

#include "tinyc/simd.h"

#if TINYC_DSP

/* Largest K whose two pre-extended weight rows (4 * K bytes: 1 KB) the
 * pointwise kernel keeps in its scratch; larger K are sign-extended in the loop,
 * about a quarter slower.  tinyc/kernels/__init__.py holds the same bound. */
#define TINYC_WBUF_K 256

/* Requantize-and-clamp of one sum (simd.h); `full`: the clamp range is
 * [-128, 127] (a constant at the call sites, so each loop is compiled for one
 * case). */
TINYC_ALWAYS_INLINE int8_t tinyc_rq_out(int32_t acc, const tinyc_rq *q, int32_t lo, int32_t hi, int full)
{
    int32_t x = tinyc_rq_value(acc, q);
    if (full) {
        x = __ssat(x, 8);
    } else {
        x = x < lo ? lo : x;
        x = x > hi ? hi : x;
    }
    return (int8_t)x;
}

/* ---- C inner loops ---------------------------------------------------------- */

/* a[0..3] += pixel 0 . channel 0, pixel 0 . channel 1, pixel 1 . channel 0,
 * pixel 1 . channel 1 over n groups of 4, weights pre-extended in wb (per
 * group: channel 0 even / odd, channel 1 even / odd); pixel 1 is xs bytes
 * after pixel 0.  Returns x0 advanced past the groups. */
static inline const int8_t *tinyc_mac_2x2_wbuf(const int8_t *x0, int32_t xs, const uint32_t *wb, int32_t n,
                                                     int32_t *a)
{
    int32_t a00 = a[0], a01 = a[1], a10 = a[2], a11 = a[3];
    while (n-- > 0) {
        uint32_t x = tinyc_ld4(x0), xe, xo;
        xe = tinyc_sxtb16(x);
        xo = tinyc_sxtb16_r8(x);
        a00 = tinyc_smlad(xe, wb[0], a00);
        a00 = tinyc_smlad(xo, wb[1], a00);
        a01 = tinyc_smlad(xe, wb[2], a01);
        a01 = tinyc_smlad(xo, wb[3], a01);
        x = tinyc_ld4(x0 + xs);
        xe = tinyc_sxtb16(x);
        xo = tinyc_sxtb16_r8(x);
        a10 = tinyc_smlad(xe, wb[0], a10);
        a10 = tinyc_smlad(xo, wb[1], a10);
        a11 = tinyc_smlad(xe, wb[2], a11);
        a11 = tinyc_smlad(xo, wb[3], a11);
        x0 += 4;
        wb += 4;
    }
    a[0] = a00;
    a[1] = a01;
    a[2] = a10;
    a[3] = a11;
    return x0;
}

/* As tinyc_mac_2x2_wbuf with int8 weight rows w0 and w1 (raw). */
static inline const int8_t *tinyc_mac_2x2(const int8_t *x0, int32_t xs, const int8_t *w0, const int8_t *w1,
                                                int32_t n, int32_t *a)
{
    int32_t a00 = a[0], a01 = a[1], a10 = a[2], a11 = a[3];
    while (n-- > 0) {
        const uint32_t wa = tinyc_ld4(w0), wb = tinyc_ld4(w1);
        const uint32_t wae = tinyc_sxtb16(wa), wao = tinyc_sxtb16_r8(wa);
        const uint32_t wbe = tinyc_sxtb16(wb), wbo = tinyc_sxtb16_r8(wb);
        uint32_t x = tinyc_ld4(x0), xe, xo;
        xe = tinyc_sxtb16(x);
        xo = tinyc_sxtb16_r8(x);
        a00 = tinyc_smlad(xe, wae, a00);
        a00 = tinyc_smlad(xo, wao, a00);
        a01 = tinyc_smlad(xe, wbe, a01);
        a01 = tinyc_smlad(xo, wbo, a01);
        x = tinyc_ld4(x0 + xs);
        xe = tinyc_sxtb16(x);
        xo = tinyc_sxtb16_r8(x);
        a10 = tinyc_smlad(xe, wae, a10);
        a10 = tinyc_smlad(xo, wao, a10);
        a11 = tinyc_smlad(xe, wbe, a11);
        a11 = tinyc_smlad(xo, wbo, a11);
        x0 += 4;
        w0 += 4;
        w1 += 4;
    }
    a[0] = a00;
    a[1] = a01;
    a[2] = a10;
    a[3] = a11;
    return x0;
}

/* a[j] += (x + in_offset) . row j for rows w0 + j * s, j = 0..3, over n groups of
 * 4 (off2: in_offset in both halves). */
TINYC_ALWAYS_INLINE void tinyc_mac_1x4(const int8_t *x, const int8_t *w0, int32_t s, uint32_t off2, int32_t n,
                                       int32_t *a)
{
    int32_t a0 = a[0], a1 = a[1], a2 = a[2], a3 = a[3];
    while (n-- > 0) {
        const uint32_t xv = tinyc_ld4(x);
        const uint32_t xe = tinyc_sxtab16(off2, xv), xo = tinyc_sxtab16_r8(off2, xv);
        uint32_t wv = tinyc_ld4(w0);
        a0 = tinyc_smlad(xe, tinyc_sxtb16(wv), a0);
        a0 = tinyc_smlad(xo, tinyc_sxtb16_r8(wv), a0);
        wv = tinyc_ld4(w0 + s);
        a1 = tinyc_smlad(xe, tinyc_sxtb16(wv), a1);
        a1 = tinyc_smlad(xo, tinyc_sxtb16_r8(wv), a1);
        wv = tinyc_ld4(w0 + 2 * s);
        a2 = tinyc_smlad(xe, tinyc_sxtb16(wv), a2);
        a2 = tinyc_smlad(xo, tinyc_sxtb16_r8(wv), a2);
        wv = tinyc_ld4(w0 + 3 * s);
        a3 = tinyc_smlad(xe, tinyc_sxtb16(wv), a3);
        a3 = tinyc_smlad(xo, tinyc_sxtb16_r8(wv), a3);
        x += 4;
        w0 += 4;
    }
    a[0] = a0;
    a[1] = a1;
    a[2] = a2;
    a[3] = a3;
}

/* ---- assembly: 1 input vector x 4 weight rows ------------------------------ */

/* Arguments of tinyc_mac_1x4_rows (offsets fixed in the assembly). */
typedef struct {
    const int8_t *x;       /*  0: first input value of the first segment */
    const int8_t *w0;      /*  4: weight row 0 at the same position (rows 1-3 follow at f, 2f, 3f) */
    int32_t f;             /*  8: bytes between weight rows */
    uint32_t off2;         /* 12: in_offset in both halves (SXTAB16) */
    int32_t acc[4];        /* 16: sums, in and out */
    const int8_t *xend;    /* 32: x past the current segment */
    int32_t segs;          /* 36: segments (>= 1), each of `groups` groups of 4 */
    int32_t odd;           /* 40: groups per segment is odd */
    int32_t xskip;         /* 44: x advance from a segment's end to the next one's start */
    int32_t xstep;         /* 48: xend advance per segment */
    int32_t wskip;         /* 52: weight advance from a segment's end to the next one's start */
} tinyc_m14_args;

typedef char tinyc_m14_layout[(offsetof(tinyc_m14_args, acc) == 16 && offsetof(tinyc_m14_args, xend) == 32 &&
                               offsetof(tinyc_m14_args, wskip) == 52) ? 1 : -1];

/* acc[j] += sum over the segments of (x + in_offset) . row j.  Per group of 4
 * values: the input word sign-extended with the offset (2 SXTAB16), each of
 * the 4 weight rows' words loaded and sign-extended (2 SXTB16) into 2
 * SMLADs: 23 instructions for 16 MACs; the group loop is unrolled twice.
 * Registers: r0 x, r1 rows 0 / 1 ([r1], [r1 + f]), r2 rows 2 / 3, r3 f, r4-r7
 * sums, r8 off2, r9-r12 temporaries, lr the arguments.  36 bytes of stack. */
#define TINYC_M14_GROUP                     \
    "ldr r9, [r0], #4\n\t"                  \
    "sxtab16 r10, r8, r9, ror #8\n\t"       \
    "sxtab16 r9, r8, r9\n\t"                \
    "ldr r11, [r1, r3]\n\t"                 \
    "sxtb16 r12, r11\n\t"                   \
    "sxtb16 r11, r11, ror #8\n\t"           \
    "smlad r5, r9, r12, r5\n\t"             \
    "smlad r5, r10, r11, r5\n\t"            \
    "ldr r11, [r1], #4\n\t"                 \
    "sxtb16 r12, r11\n\t"                   \
    "sxtb16 r11, r11, ror #8\n\t"           \
    "smlad r4, r9, r12, r4\n\t"             \
    "smlad r4, r10, r11, r4\n\t"            \
    "ldr r11, [r2, r3]\n\t"                 \
    "sxtb16 r12, r11\n\t"                   \
    "sxtb16 r11, r11, ror #8\n\t"           \
    "smlad r7, r9, r12, r7\n\t"             \
    "smlad r7, r10, r11, r7\n\t"            \
    "ldr r11, [r2], #4\n\t"                 \
    "sxtb16 r12, r11\n\t"                   \
    "sxtb16 r11, r11, ror #8\n\t"           \
    "smlad r6, r9, r12, r6\n\t"             \
    "smlad r6, r10, r11, r6\n\t"

__attribute__((naked, noinline, unused)) static void tinyc_mac_1x4_rows(tinyc_m14_args *args
                                                                        __attribute__((unused)))
{
    __asm__ volatile(
        "push {r4-r11, lr}\n\t"
        "mov lr, r0\n\t"
        "ldrd r0, r1, [lr, #0]\n\t"
        "ldrd r3, r8, [lr, #8]\n\t"
        "add r2, r1, r3, lsl #1\n\t"
        "ldrd r4, r5, [lr, #16]\n\t"
        "ldrd r6, r7, [lr, #24]\n\t"
        "1:\n\t"
        "ldr r11, [lr, #40]\n\t"
        "cmp r11, #0\n\t"
        "bne 3f\n\t"
        "2:\n\t" TINYC_M14_GROUP
        "3:\n\t" TINYC_M14_GROUP
        "ldr r11, [lr, #32]\n\t"
        "cmp r0, r11\n\t"
        "bne 2b\n\t"
        "ldr r12, [lr, #48]\n\t"
        "add r11, r11, r12\n\t"
        "str r11, [lr, #32]\n\t"
        "ldr r12, [lr, #44]\n\t"
        "add r0, r0, r12\n\t"
        "ldr r12, [lr, #52]\n\t"
        "add r1, r1, r12\n\t"
        "add r2, r2, r12\n\t"
        "ldr r11, [lr, #36]\n\t"
        "subs r11, r11, #1\n\t"
        "str r11, [lr, #36]\n\t"
        "bne 1b\n\t"
        "strd r4, r5, [lr, #16]\n\t"
        "strd r6, r7, [lr, #24]\n\t"
        "pop {r4-r11, pc}\n\t");
}

/* ---- C helpers for the edges ------------------------------------------------- */

/* (x + in_offset) . w over n values, the offset added by SXTAB16. */
TINYC_ALWAYS_INLINE int32_t tinyc_dot_off(const int8_t *x, const int8_t *w, int32_t n, uint32_t off2,
                                          int32_t in_offset, int32_t acc)
{
    for (; n >= 4; n -= 4) {
        const uint32_t xv = tinyc_ld4(x), wv = tinyc_ld4(w);
        acc = tinyc_smlad(tinyc_sxtab16(off2, xv), tinyc_sxtb16(wv), acc);
        acc = tinyc_smlad(tinyc_sxtab16_r8(off2, xv), tinyc_sxtb16_r8(wv), acc);
        x += 4;
        w += 4;
    }
    while (n-- > 0) {
        acc += (*x++ + in_offset) * *w++;
    }
    return acc;
}

/* x . w over n raw values. */
TINYC_ALWAYS_INLINE int32_t tinyc_dot_raw(const int8_t *x, const int8_t *w, int32_t n, int32_t acc)
{
    for (; n >= 4; n -= 4) {
        const uint32_t xv = tinyc_ld4(x), wv = tinyc_ld4(w);
        acc = tinyc_smlad(tinyc_sxtb16(xv), tinyc_sxtb16(wv), acc);
        acc = tinyc_smlad(tinyc_sxtb16_r8(xv), tinyc_sxtb16_r8(wv), acc);
        x += 4;
        w += 4;
    }
    while (n-- > 0) {
        acc += *x++ * *w++;
    }
    return acc;
}

/* Sign-extends two weight rows' first 4 * n4 values into wb (per group: row 0
 * even, row 0 odd, row 1 even, row 1 odd) and returns in s[0], s[1] the sums
 * of the rows' first 4 * n4 values. */
__attribute__((noinline, unused)) static void tinyc_fill_wbuf(uint32_t *wb, const int8_t *w0, const int8_t *w1,
                                                              int32_t n4, int32_t *s)
{
    const uint32_t ones = 0x00010001u;
    int32_t s0 = 0, s1 = 0;
    while (n4-- > 0) {
        const uint32_t a = tinyc_ld4(w0), b = tinyc_ld4(w1);
        const uint32_t ae = tinyc_sxtb16(a), ao = tinyc_sxtb16_r8(a);
        const uint32_t be = tinyc_sxtb16(b), bo = tinyc_sxtb16_r8(b);
        wb[0] = ae;
        wb[1] = ao;
        wb[2] = be;
        wb[3] = bo;
        s0 = tinyc_smlad(ae, ones, s0);
        s0 = tinyc_smlad(ao, ones, s0);
        s1 = tinyc_smlad(be, ones, s1);
        s1 = tinyc_smlad(bo, ones, s1);
        wb += 4;
        w0 += 4;
        w1 += 4;
    }
    s[0] = s0;
    s[1] = s1;
}

/* bias + in_offset * wsum, wrapping as the int32 accumulation does. */
static inline int32_t tinyc_fold_bias(const int32_t *bias, int32_t o, int32_t in_offset, int32_t wsum)
{
    const uint32_t b = bias != 0 ? (uint32_t)bias[o] : 0u;
    return (int32_t)(b + (uint32_t)in_offset * (uint32_t)wsum);
}

/* Sum of n int8 values: SXTAB16 adds the even and the odd bytes into 16-bit
 * lanes, flushed every 255 groups of 4 (|lane| <= 255 * 128 < 2^15). */
__attribute__((noinline, unused)) static int32_t tinyc_sum_s8(const int8_t *w, int32_t n)
{
    const uint32_t ones = 0x00010001u;
    int32_t s = 0;
    while (n >= 4) {
        int32_t g = n >> 2 < 255 ? n >> 2 : 255;
        uint32_t e = 0, o = 0;
        n -= 4 * g;
        while (g-- > 0) {
            const uint32_t v = tinyc_ld4(w);
            e = tinyc_sxtab16(e, v);
            o = tinyc_sxtab16_r8(o, v);
            w += 4;
        }
        s = tinyc_smlad(e, ones, s);
        s = tinyc_smlad(o, ones, s);
    }
    while (n-- > 0) {
        s += *w++;
    }
    return s;
}

/* A depthwise column: in_w = out_w = k_w = 1, depth multiplier 1, at least 4
 * channels, at most 64 taps (conv.c tinyc_dw_column_dsp; the kernels'
 * scratch rules, tinyc/kernels/conv.py, give it 2 words per tap). */
static inline int tinyc_dw_column_ok(const tinyc_conv_params *p)
{
    return p->in_w == 1 && p->out_w == 1 && p->k_w == 1 && p->depth_multiplier <= 1 && p->in_c >= 4 &&
           p->out_h > 0 && p->k_h >= 1 && p->k_h <= 64;
}

int32_t tinyc_dw_column_dsp(const tinyc_conv_params *p, const int8_t *in, const int8_t *w, const int32_t *bias,
                            const int32_t *mult, const int32_t *shift, int8_t *out, uint32_t *tab);

#endif /* TINYC_DSP */

#endif /* TINYC_MATMUL_DSP_H */
