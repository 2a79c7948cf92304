/* In-place int8 depthwise convolution (depth_multiplier 1): the output
 * overwrites the input's buffer, so a depthwise layer needs no separate output
 * tensor, only a one-channel scratch plane (TinyEngine / MCUNet's in-place
 * depthwise).  Same arithmetic as tinyc_depthwise_conv2d_s8 in conv.c, bit for
 * bit; the numpy spec is depthwise_conv2d_inplace_s8 in tinyc/kernels/conv.py.
 *
 * Why it is safe.  The buffer is NHWC, so every byte of channel c (input or
 * output) sits at an index congruent to c modulo C.  Channel by channel:
 *   1. copy channel c of the input into the scratch plane (whose padding,
 *      the same for every channel, is written once);
 *   2. compute output channel c from the plane, writing buf[q * C + c] for
 *      the output pixels q = 0 .. out_h * out_w - 1.
 * Step 2 only overwrites bytes of channel c, whose input is already in the
 * plane; the other channels' bytes are left alone, so channels not yet
 * processed still find their input and channels already processed keep their
 * output.  The one requirement is that the writes stay inside the buffer:
 * out_h * out_w <= in_h * in_w when buf is exactly the input tensor (more
 * generally, buf must hold max(in_h * in_w, out_h * out_w) * C bytes).
 */
#include <stddef.h>

#include "tinyc/kernels.h"
#include "tinyc/fixedpoint.h"
#include "tinyc/simd.h"
#include "tinyc/matmul_dsp.h"

/* The plane geometry of one call. */
typedef struct {
    int32_t plane_h, plane_w;
    int32_t col_lo, col_hi;    /* plane columns [col_lo, col_hi) lie inside the input */
    int32_t row_lo, row_hi;    /* plane rows [row_lo, row_hi) likewise */
    int32_t src0;              /* buf index of channel 0 at plane (row_lo, col_lo) */
    int8_t zp;                 /* the input zero point: padded taps add (zp + in_offset) * w = 0 */
} plane_geom;

/* (once per call and padded row: not worth inlining three times) */
__attribute__((noinline)) static void fill_bytes(int8_t *dst, int32_t n, int8_t v)
{
    while (n-- > 0) {
        *dst++ = v;
    }
}

/* 1a. The plane's padding (rows and columns outside the input), the same for
 * every channel: written once per call. */
static void pad_plane(const plane_geom *g, int8_t *scratch)
{
    const int32_t plane_w = g->plane_w;
    const int32_t right = plane_w - g->col_hi;
    int8_t *dst = scratch + g->row_lo * plane_w;
    int32_t r;
    fill_bytes(scratch, g->row_lo * plane_w, g->zp);
    for (r = g->row_lo; r < g->row_hi; ++r) {
        fill_bytes(dst, g->col_lo, g->zp);
        fill_bytes(dst + g->col_hi, right, g->zp);
        dst += plane_w;
    }
    fill_bytes(dst, (g->plane_h - g->row_hi) * plane_w, g->zp);
}

#if TINYC_DSP
/* Arguments of gather_rows (offsets fixed in the assembly). */
typedef struct {
    const int8_t *src;     /*  0: first byte of the first row */
    int32_t chans;         /*  4: byte step inside a row */
    int32_t n;             /*  8: bytes per row (>= 1) */
    int32_t rows;          /* 12: rows (>= 1) */
    int32_t src_step;      /* 16: src advance per row */
    int8_t *dst;           /* 20: plane position of the first row */
    int32_t dst_step;      /* 24: plane pitch */
} gather_args;

/* Strided bytes -> plane rows: 4 LDRB (register offsets 0, c, 2c, 3c), 3 ORR
 * and one (unaligned) word store per 4 bytes; the rest byte by byte.  36
 * bytes of stack. */
__attribute__((naked, noinline)) static void gather_rows(const gather_args *args __attribute__((unused)))
{
    __asm__ volatile(
        "push {r4-r11, lr}\n\t"
        "ldr r1, [r0, #4]\n\t"
        "lsl r2, r1, #1\n\t"
        "add r3, r2, r1\n\t"
        "ldr r12, [r0, #8]\n\t"
        "ldr r11, [r0, #12]\n\t"
        "ldr r9, [r0, #0]\n\t"
        "ldr r10, [r0, #20]\n\t"
        "ldr lr, [r0, #16]\n\t"
        "ldr r0, [r0, #24]\n\t"
        "1:\n\t"
        "mov r4, r9\n\t"
        "mov r5, r10\n\t"
        "subs r6, r12, #4\n\t"
        "blt 3f\n\t"
        "2:\n\t"
        "ldrb r7, [r4]\n\t"
        "ldrb r8, [r4, r1]\n\t"
        "orr r7, r7, r8, lsl #8\n\t"
        "ldrb r8, [r4, r2]\n\t"
        "orr r7, r7, r8, lsl #16\n\t"
        "ldrb r8, [r4, r3]\n\t"
        "orr r7, r7, r8, lsl #24\n\t"
        "str r7, [r5], #4\n\t"
        "add r4, r4, r1, lsl #2\n\t"
        "subs r6, r6, #4\n\t"
        "bge 2b\n\t"
        "3:\n\t"
        "adds r6, r6, #4\n\t"
        "beq 5f\n\t"
        "4:\n\t"
        "ldrb r7, [r4]\n\t"
        "strb r7, [r5], #1\n\t"
        "add r4, r4, r1\n\t"
        "subs r6, r6, #1\n\t"
        "bne 4b\n\t"
        "5:\n\t"
        "add r9, r9, lr\n\t"
        "add r10, r10, r0\n\t"
        "subs r11, r11, #1\n\t"
        "bne 1b\n\t"
        "pop {r4-r11, pc}\n\t");
}
#endif

/* 1b. Channel c of the input -> the plane's inside. */
static void gather_plane(const tinyc_conv_params *p, const plane_geom *g, const int8_t *buf, int32_t c,
                         int8_t *scratch)
{
    const int32_t chans = p->in_c;
    const int32_t n = g->col_hi - g->col_lo;
    const int32_t row_step = p->in_w * chans;
    const int8_t *src = buf + g->src0 + c;
    int8_t *dst = scratch + g->row_lo * g->plane_w + g->col_lo;
    int32_t r;
#if TINYC_DSP
    if (n > 0 && g->row_hi > g->row_lo) {
        gather_args a;
        a.src = src;
        if (g->plane_w == 1) {
            /* a one-column plane: its rows are contiguous, one run of bytes */
            a.chans = row_step;
            a.n = g->row_hi - g->row_lo;
            a.rows = 1;
        } else {
            a.chans = chans;
            a.n = n;
            a.rows = g->row_hi - g->row_lo;
        }
        a.src_step = row_step;
        a.dst = dst;
        a.dst_step = g->plane_w;
        gather_rows(&a);
    }
    return;
#endif
    for (r = g->row_lo; r < g->row_hi; ++r) {
        const int8_t *s = src;
        int8_t *d = dst;
        int32_t j;
        for (j = 0; j < n; ++j) {
            *d++ = *s;
            s += chans;
        }
        src += row_step;
        dst += g->plane_w;
    }
}

/* Every tap is in the plane (padding as the zero point): the input offset
 * goes into the start value, sum((x + off) * w) = sum(x * w) + off * sum(w). */
static uint32_t start_value(const tinyc_conv_params *p, const int8_t *wf, const int32_t *bias, int32_t c)
{
    uint32_t start = bias != 0 ? (uint32_t)bias[c] : 0u;
    int32_t i;
    for (i = 0; i < p->k_h * p->k_w; ++i) {
        start += (uint32_t)(p->in_offset * wf[i]);
    }
    return start;
}

#if !TINYC_DSP
/* 2. (cores without the DSP extension, kernel rows without column dilation)
 * Output channel c from the plane, 4 outputs of a line at a time: the
 * kernel's weights are the shared run of tinyc_dot4_s8 (offset 0), the 4
 * windows its weight rows.  A line is an output row, or the one column of a
 * one-column map (sww's k x 1 kernels: windows down the plane).  A line's last
 * block ends at its last output, overlapping the one before (those outputs
 * are written again with the same values: the plane is a copy); a line of
 * fewer than 4 repeats its last window. */
static void plane_conv_blocks(const tinyc_conv_params *p, const plane_geom *g, const int8_t *scratch, int8_t *buf,
                              const int8_t *wf, const int32_t *bias, const int32_t *mult, const int32_t *shift,
                              int32_t c)
{
    const int32_t chans = p->in_c;
    const int32_t out_offset = p->out_offset, act_min = p->act_min, act_max = p->act_max;
    const int32_t m = mult[c], s = shift[c];
    const int rqp = tinyc_rqp_ok(mult + c, shift + c, 1, out_offset);
    const int full = act_min == TINYC_INT8_MIN && act_max == TINYC_INT8_MAX;
    const int column = p->out_w == 1;
    const int32_t lines = column ? 1 : p->out_h;
    const int32_t count = column ? p->out_h : p->out_w;                   /* outputs per line */
    const int32_t win_step = column ? p->stride_h * g->plane_w : p->stride_w;
    const int32_t out_step = chans;                                       /* (out_w = 1: rows are pixels) */
    const int32_t tap_step_y = p->dil_h * g->plane_w;
    const uint32_t start = start_value(p, wf, bias, c);
    tinyc_dot4_args a;
    int32_t line, i, j;
    a.x = wf;
    if (tap_step_y == p->k_w) {
        a.n = p->k_h * p->k_w;          /* the window's rows follow each other: one run */
        a.runs = 1;
    } else {
        a.n = p->k_w;
        a.runs = p->k_h;
    }
    a.x_step = a.n;
    a.w_step = tap_step_y;
    a.offset = 0;
    for (line = 0; line < lines; ++line) {
        const int8_t *first = scratch + line * p->stride_h * g->plane_w;
        int8_t *dst = buf + c + line * p->out_w * chans;
        for (i = 0; i < count; i += 4) {
            const int32_t at = i + 4 <= count ? i : (count >= 4 ? count - 4 : 0);
            for (j = 0; j < 4; ++j) {
                const int32_t q = at + j < count ? at + j : count - 1;
                a.w[j] = first + q * win_step;
                a.acc[j] = (int32_t)start;
            }
            tinyc_dot4_s8(&a);
            for (j = 0; j < 4; ++j) {
                const int32_t q = at + j < count ? at + j : count - 1;
                const int32_t v = rqp ? tinyc_rqp(a.acc[j], m, s, out_offset)
                                      : (int32_t)((uint32_t)tinyc_mbqm(a.acc[j], m, s) + (uint32_t)out_offset);
                dst[q * out_step] = (int8_t)(full ? tinyc_sat8(v) : tinyc_clamp32(v, act_min, act_max));
            }
        }
    }
}
#endif

/* 2. Output channel c from the plane, over channel c's bytes of buf (portable:
 * every tap is in the plane, so no bounds tests). */
TINYC_FALLBACK static void plane_conv_portable(const tinyc_conv_params *p, const plane_geom *g,
                                               const int8_t *scratch, int8_t *buf, const int8_t *wf,
                                               const int32_t *bias, const int32_t *mult, const int32_t *shift,
                                               int32_t c)
{
    const int32_t chans = p->in_c;
    const int32_t k_h = p->k_h, k_w = p->k_w, dil_w = p->dil_w;
    /* read once: a store through buf may alias *p, which would reload these
     * narrow fields for every output */
    const int32_t out_offset = p->out_offset, act_min = p->act_min, act_max = p->act_max;
    const int32_t tap_step_y = p->dil_h * g->plane_w;
    const int32_t line_step = p->stride_h * g->plane_w;   /* plane step between output rows */
    const uint32_t start = start_value(p, wf, bias, c);
    int32_t out_at = c;                                    /* buf index of output (0, 0, c) */
    int32_t line = 0;                                      /* plane index of window (oy, 0) */
    int32_t oy, ox;
#if !TINYC_DSP
    if (dil_w == 1 || k_w == 1) {
        plane_conv_blocks(p, g, scratch, buf, wf, bias, mult, shift, c);
        return;
    }
#endif
    for (oy = 0; oy < p->out_h; ++oy) {
        int32_t win = line;
        for (ox = 0; ox < p->out_w; ++ox) {
            uint32_t acc = start;
            const int8_t *row = scratch + win;
            const int8_t *wr = wf;
            int32_t ky, kx;
            for (ky = 0; ky < k_h; ++ky) {
                for (kx = 0; kx < k_w; ++kx) {
                    acc += (uint32_t)(row[kx * dil_w] * wr[kx]);
                }
                row += tap_step_y;
                wr += k_w;
            }
            acc = (uint32_t)(tinyc_mbqm((int32_t)acc, mult[c], shift[c]) + out_offset);
            buf[out_at] = (int8_t)tinyc_clamp32((int32_t)acc, act_min, act_max);
            out_at += chans;
            win += p->stride_w;
        }
        line += line_step;
    }
}

#if TINYC_DSP
/* ---- DSP: planar kernels in assembly ---------------------------------------
 *
 * The plane is padded, so every output has all its taps and the input offset
 * folds into the bias: acc = bias + in_offset * sum(w) + sum(x * w) over raw
 * plane bytes (a padded byte, the zero point, adds zp * w = -in_offset * w,
 * cancelling its share of the fold).  Two horizontally adjacent outputs share
 * one pass over the window rows: a word of 4 plane bytes p0..p3 gives
 * e = (p0, p2) and o = (p1, p3) (SXTB16, SXTB16 ROR #8), and with weights
 * packed in 16-bit pairs, SMLAD / SMLAxy add both outputs' products.
 *
 * 3 x 3, stride 1 (out0 = p0 w0 + p1 w1 + p2 w2, out1 = p1 w0 + p2 w1 + p3 w2):
 *   out0 += SMLAD(e, (w0, w2)) + SMLABB(o, w1);  out1 += SMLAD(o, (w0, w2)) + SMLATB(e, w1)
 * 3 x 3, stride 2 (out1 = p2 w0 + p3 w1 + p4 w2):
 *   out1 += SMLATB(e, (w0, w2)) + SMLATB(o, w1) + SMLABT(p4, (w0, w2))
 * Any width kw with dil_w 1, stride sw (kw + sw <= 12): the row bytes
 * p0 .. p(4J-1), J = ceil((kw + sw) / 4) words, against a table of 4 weight
 * pairs per word j: out0 gets e_j . (w[4j], w[4j+2]) + o_j . (w[4j+1], w[4j+3]),
 * out1 (sw bytes further) e_j . (w[4j-sw], w[4j+2-sw]) + o_j . (w[4j+1-sw],
 * w[4j+3-sw]), with w[t] = 0 outside [0, kw).  The kernel rows are a loop, or
 * unrolled for 5 x 5 and 7 x 7 (the word whose out0 odd pair is zero skips
 * its SMLAD).  A one-column map (plane_w 1: sww's k x 1 kernels) runs down
 * the column as one row.
 *
 * An odd output count leaves a single output per row: the 3 x 3 kernels do
 * it first in each row (reading exactly the window bytes plus one byte of the
 * same plane row), the table kernels leave it to C (dwt_output), as they do
 * the last row's last pairs, whose words (up to 4J - kw - sw bytes past a
 * pair's window) would leave the plane.  Requantization: class 0 channels
 * (simd.h) in assembly, the others in portable C.  The kernels use 36 bytes
 * of stack. */
typedef struct {
    const int8_t *p;       /*  0: plane window of the current row's first output */
    const int8_t *pend;    /*  4: p after the row's last pair */
    int32_t row_adv;       /*  8: p / pend advance per output row */
    int32_t rows;          /* 12: output rows (>= 1) */
    int32_t odd;           /* 16: a single output at each row's start */
    int32_t rs;            /* 20: plane step between kernel rows */
    int32_t bias;          /* 24: bias + in_offset * sum(w) */
    int32_t m2, npo, r;    /* 28: requantization (class 0) */
    int8_t *dst;           /* 40: output of the first window */
    int32_t chans;         /* 44: output step */
    uint32_t w[5];         /* 48: 3 x 3: (w00, w02), (w10, w12), (w20, w22), (w01, w11), (w21, -) */
    const uint32_t *tab;   /* 68: table kernel: kh rows x J x 4 weight words */
    int32_t kh;            /* 72 */
    int32_t rsadv;         /* 76: rs - 4J */
    int32_t sw2;           /* 80: 2 * stride */
    int32_t sw;            /* 84 */
    int32_t dst_skip;      /* 88: table kernels: dst advance at a row's end (its single, done in C) */
} dwk_args;

typedef char dwk_args_layout[(offsetof(dwk_args, bias) == 24 && offsetof(dwk_args, dst) == 40 &&
                              offsetof(dwk_args, w) == 48 && offsetof(dwk_args, tab) == 68 &&
                              offsetof(dwk_args, sw) == 84 && offsetof(dwk_args, dst_skip) == 88) ? 1 : -1];

/* The rows loop around a kernel: PAIR / SINGLE compute from r9 (window) into
 * r5 / r6 (out0, out1) and advance r9.  r12 = dst. */
#define DWK_ROWS(setup, single, pair)                                                              \
    "push {r4-r11, lr}\n\t"                                                                      \
    "mov lr, r0\n\t" setup "ldr r12, [lr, #40]\n\t"                                                \
    "1:\n\t"                                                                                     \
    "ldr r9, [lr, #0]\n\t"                                                                       \
    "ldr r7, [lr, #16]\n\t"                                                                      \
    "cmp r7, #0\n\t"                                                                             \
    "beq 3f\n\t" single DWK_RQ1                                                                 \
    "ldr r8, [lr, #44]\n\t"                                                                      \
    "strb r5, [r12]\n\t"                                                                         \
    "add r12, r12, r8\n\t"                                                                       \
    "3:\n\t"                                                                                     \
    "ldr r7, [lr, #4]\n\t"                                                                       \
    "cmp r9, r7\n\t"                                                                             \
    "beq 5f\n\t"                                                                                 \
    "2:\n\t" pair DWK_RQ2                                                                        \
    "ldr r8, [lr, #44]\n\t"                                                                      \
    "strb r5, [r12]\n\t"                                                                         \
    "strb r6, [r12, r8]\n\t"                                                                     \
    "add r12, r12, r8, lsl #1\n\t"                                                               \
    "ldr r7, [lr, #4]\n\t"                                                                       \
    "cmp r9, r7\n\t"                                                                             \
    "bne 2b\n\t"                                                                                 \
    "5:\n\t"                                                                                     \
    "ldr r8, [lr, #8]\n\t"                                                                       \
    "ldr r7, [lr, #0]\n\t"                                                                       \
    "add r7, r7, r8\n\t"                                                                         \
    "str r7, [lr, #0]\n\t"                                                                       \
    "ldr r7, [lr, #4]\n\t"                                                                       \
    "add r7, r7, r8\n\t"                                                                         \
    "str r7, [lr, #4]\n\t"                                                                       \
    "ldr r7, [lr, #12]\n\t"                                                                      \
    "subs r7, r7, #1\n\t"                                                                        \
    "str r7, [lr, #12]\n\t"                                                                      \
    "bne 1b\n\t"                                                                                 \
    "pop {r4-r11, pc}\n\t"

/* The same for kernels that only do pairs (the table kernels: a row's single
 * output is computed in C, and dst skips it at each row's end). */
#define DWK_ROWS_PAIRS(pair)                                                                       \
    "push {r4-r11, lr}\n\t"                                                                      \
    "mov lr, r0\n\t"                                                                             \
    "ldr r12, [lr, #40]\n\t"                                                                     \
    "1:\n\t"                                                                                     \
    "ldr r9, [lr, #0]\n\t"                                                                       \
    "ldr r7, [lr, #4]\n\t"                                                                       \
    "cmp r9, r7\n\t"                                                                             \
    "beq 5f\n\t"                                                                                 \
    "2:\n\t" pair DWK_RQ2                                                                        \
    "ldr r8, [lr, #44]\n\t"                                                                      \
    "strb r5, [r12]\n\t"                                                                         \
    "strb r6, [r12, r8]\n\t"                                                                     \
    "add r12, r12, r8, lsl #1\n\t"                                                               \
    "ldr r7, [lr, #4]\n\t"                                                                       \
    "cmp r9, r7\n\t"                                                                             \
    "bne 2b\n\t"                                                                                 \
    "5:\n\t"                                                                                     \
    "ldr r8, [lr, #88]\n\t"                                                                      \
    "add r12, r12, r8\n\t"                                                                       \
    "ldr r8, [lr, #8]\n\t"                                                                       \
    "ldr r7, [lr, #0]\n\t"                                                                       \
    "add r7, r7, r8\n\t"                                                                         \
    "str r7, [lr, #0]\n\t"                                                                       \
    "ldr r7, [lr, #4]\n\t"                                                                       \
    "add r7, r7, r8\n\t"                                                                         \
    "str r7, [lr, #4]\n\t"                                                                       \
    "ldr r7, [lr, #12]\n\t"                                                                      \
    "subs r7, r7, #1\n\t"                                                                        \
    "str r7, [lr, #12]\n\t"                                                                      \
    "bne 1b\n\t"                                                                                 \
    "pop {r4-r11, pc}\n\t"

#define DWK_RQ1                       \
    "ldr r7, [lr, #28]\n\t"           \
    "smmlar r5, r5, r7, r5\n\t"       \
    "add r5, r5, r5, asr #31\n\t"     \
    "ldr r7, [lr, #32]\n\t"           \
    "qadd r5, r5, r7\n\t"             \
    "ldr r7, [lr, #36]\n\t"           \
    "asr r5, r5, r7\n\t"              \
    "ssat r5, #8, r5\n\t"

#define DWK_RQ2                       \
    "ldr r7, [lr, #28]\n\t"           \
    "smmlar r5, r5, r7, r5\n\t"       \
    "smmlar r6, r6, r7, r6\n\t"       \
    "add r5, r5, r5, asr #31\n\t"     \
    "add r6, r6, r6, asr #31\n\t"     \
    "ldr r7, [lr, #32]\n\t"           \
    "qadd r5, r5, r7\n\t"             \
    "qadd r6, r6, r7\n\t"             \
    "ldr r7, [lr, #36]\n\t"           \
    "asr r5, r5, r7\n\t"              \
    "asr r6, r6, r7\n\t"              \
    "ssat r5, #8, r5\n\t"             \
    "ssat r6, #8, r6\n\t"

/* 3 x 3: r0-r2 = (w_y0, w_y2) of rows 0-2, r3 = (w01, w11), r4 = (w21, -);
 * r10 = rs, r11 = 2 rs. */
#define DW3_SETUP                  \
    "ldrd r0, r1, [lr, #48]\n\t"   \
    "ldrd r2, r3, [lr, #56]\n\t"   \
    "ldr r4, [lr, #64]\n\t"        \
    "ldr r10, [lr, #20]\n\t"       \
    "lsl r11, r10, #1\n\t"

#define DW3_INIT                   \
    "ldr r5, [lr, #24]\n\t"        \
    "mov r6, r5\n\t"

/* stride 1, one row: load at `addr`, weights pair A, middle weight `w1` (half `h`) */
#define DW3S1_ROW(load, A, mid0, mid1)  \
    load                                \
    "sxtb16 r8, r7, ror #8\n\t"         \
    "sxtb16 r7, r7\n\t"                 \
    "smlad r5, r7, " A ", r5\n\t"       \
    mid0                                \
    "smlad r6, r8, " A ", r6\n\t"       \
    mid1

#define DW3S1_PAIR                                                                             \
    DW3_INIT                                                                                   \
    DW3S1_ROW("ldr r7, [r9, r11]\n\t", "r2", "smlabb r5, r8, r4, r5\n\t", "smlatb r6, r7, r4, r6\n\t") \
    DW3S1_ROW("ldr r7, [r9, r10]\n\t", "r1", "smlabt r5, r8, r3, r5\n\t", "smlatt r6, r7, r3, r6\n\t") \
    DW3S1_ROW("ldr r7, [r9], #2\n\t", "r0", "smlabb r5, r8, r3, r5\n\t", "smlatb r6, r7, r3, r6\n\t")

#define DW3S1_SINGLE_ROW(load, A, mid) \
    load                               \
    "sxtb16 r8, r7, ror #8\n\t"        \
    "sxtb16 r7, r7\n\t"                \
    "smlad r5, r7, " A ", r5\n\t"      \
    mid

#define DW3S1_SINGLE                                                                  \
    "ldr r5, [lr, #24]\n\t"                                                           \
    DW3S1_SINGLE_ROW("ldr r7, [r9, r11]\n\t", "r2", "smlabb r5, r8, r4, r5\n\t")        \
    DW3S1_SINGLE_ROW("ldr r7, [r9, r10]\n\t", "r1", "smlabt r5, r8, r3, r5\n\t")        \
    DW3S1_SINGLE_ROW("ldr r7, [r9], #1\n\t", "r0", "smlabb r5, r8, r3, r5\n\t")

/* stride 2, one row at q (r8 as the row pointer first): p4 by LDRSB */
#define DW3S2_ROW(A, mid0, mid1, mid2) \
    "ldrsb r7, [r8, #4]\n\t"           \
    "smlabt r6, r7, " A ", r6\n\t"     \
    "ldr r7, [r8]\n\t"                 \
    "sxtb16 r8, r7, ror #8\n\t"        \
    "sxtb16 r7, r7\n\t"                \
    "smlad r5, r7, " A ", r5\n\t"      \
    mid0                               \
    "smlatb r6, r7, " A ", r6\n\t"     \
    mid1 mid2

#define DW3S2_PAIR                                                                            \
    DW3_INIT                                                                                  \
    "add r8, r9, r11\n\t"                                                                     \
    DW3S2_ROW("r2", "smlabb r5, r8, r4, r5\n\t", "smlatb r6, r8, r4, r6\n\t", "")             \
    "add r8, r9, r10\n\t"                                                                     \
    DW3S2_ROW("r1", "smlabt r5, r8, r3, r5\n\t", "smlatt r6, r8, r3, r6\n\t", "")             \
    "mov r8, r9\n\t"                                                                          \
    DW3S2_ROW("r0", "smlabb r5, r8, r3, r5\n\t", "smlatb r6, r8, r3, r6\n\t", "add r9, r9, #4\n\t")

#define DW3S2_SINGLE                                                                  \
    "ldr r5, [lr, #24]\n\t"                                                           \
    DW3S1_SINGLE_ROW("ldr r7, [r9, r11]\n\t", "r2", "smlabb r5, r8, r4, r5\n\t")        \
    DW3S1_SINGLE_ROW("ldr r7, [r9, r10]\n\t", "r1", "smlabt r5, r8, r3, r5\n\t")        \
    DW3S1_SINGLE_ROW("ldr r7, [r9], #2\n\t", "r0", "smlabb r5, r8, r3, r5\n\t")

__attribute__((naked, noinline)) static void dw3s1(dwk_args *args __attribute__((unused)))
{
    __asm__ volatile(DWK_ROWS(DW3_SETUP, DW3S1_SINGLE, DW3S1_PAIR));
}

__attribute__((naked, noinline)) static void dw3s2(dwk_args *args __attribute__((unused)))
{
    __asm__ volatile(DWK_ROWS(DW3_SETUP, DW3S2_SINGLE, DW3S2_PAIR));
}

/* The table kernels: r0-r3 = one word's 4 weight pairs (LDM), r4 / r7 the
 * input word's even / odd bytes, r8 table, r9 window, r10 row pointer, r11
 * kernel rows left (or, unrolled, the row advance rs - 4J). */
#define DWT_GROUP                     \
    "ldmia r8!, {r0, r1, r2, r3}\n\t" \
    "ldr r4, [r10], #4\n\t"           \
    "sxtb16 r7, r4, ror #8\n\t"       \
    "sxtb16 r4, r4\n\t"               \
    "smlad r5, r4, r0, r5\n\t"        \
    "smlad r5, r7, r1, r5\n\t"        \
    "smlad r6, r4, r2, r6\n\t"        \
    "smlad r6, r7, r3, r6\n\t"

/* a word whose out0 odd pair is (0, 0): kw <= 5 and the row's second word */
#define DWT_GROUP_NO_O0               \
    "ldmia r8!, {r0, r1, r2, r3}\n\t" \
    "ldr r4, [r10], #4\n\t"           \
    "sxtb16 r7, r4, ror #8\n\t"       \
    "sxtb16 r4, r4\n\t"               \
    "smlad r5, r4, r0, r5\n\t"        \
    "smlad r6, r4, r2, r6\n\t"        \
    "smlad r6, r7, r3, r6\n\t"

#define DWT_INIT                  \
    "ldr r5, [lr, #24]\n\t"       \
    "mov r6, r5\n\t"              \
    "ldr r8, [lr, #68]\n\t"       \
    "mov r10, r9\n\t"

/* one window pass into r5 / r6, kernel rows in a loop */
#define DWT_PASS(groups, label, adv)  \
    DWT_INIT                          \
    "ldr r11, [lr, #72]\n\t"          \
    label ":\n\t" groups              \
    "ldr r4, [lr, #76]\n\t"           \
    "add r10, r10, r4\n\t"            \
    "subs r11, r11, #1\n\t"           \
    "bne " label "b\n\t"              \
    "ldr r4, [lr, " adv "]\n\t"       \
    "add r9, r9, r4\n\t"

/* the same with the kernel rows unrolled (`rows` repeats of the row code) */
#define DWT_ROW(groups) groups "add r10, r10, r11\n\t"
#define DWT_PASS_UNROLLED(rows, adv)  \
    DWT_INIT                          \
    "ldr r11, [lr, #76]\n\t" rows     \
    "ldr r4, [lr, " adv "]\n\t"       \
    "add r9, r9, r4\n\t"

#define DWT_FUNCTION(name, groups)                                                                   \
    __attribute__((naked, noinline)) static void name(dwk_args *args __attribute__((unused)))        \
    {                                                                                                \
        __asm__ volatile(DWK_ROWS_PAIRS(DWT_PASS(groups, "6", "#80")));                              \
    }

#define DWT_FUNCTION_UNROLLED(name, rows)                                                            \
    __attribute__((naked, noinline)) static void name(dwk_args *args __attribute__((unused)))        \
    {                                                                                                \
        __asm__ volatile(DWK_ROWS_PAIRS(DWT_PASS_UNROLLED(rows, "#80")));                            \
    }

#define DWT_G2 DWT_GROUP DWT_GROUP
#define DWT_G3 DWT_GROUP DWT_GROUP DWT_GROUP
#define DWT_K5 DWT_ROW(DWT_GROUP DWT_GROUP_NO_O0)
#define DWT_R7(g) DWT_ROW(g) DWT_ROW(g) DWT_ROW(g) DWT_ROW(g) DWT_ROW(g) DWT_ROW(g) DWT_ROW(g)

DWT_FUNCTION(dwt1, DWT_GROUP)
DWT_FUNCTION(dwt2, DWT_G2)
DWT_FUNCTION(dwt3, DWT_G3)
DWT_FUNCTION_UNROLLED(dwt_k5r5, DWT_K5 DWT_K5 DWT_K5 DWT_K5 DWT_K5)   /* 5 x 5, stride 1 or 2 */
DWT_FUNCTION_UNROLLED(dwt_j2r7, DWT_R7(DWT_G2))                       /* 7 x 7, stride 1 */
DWT_FUNCTION_UNROLLED(dwt_j3r7, DWT_R7(DWT_G3))                       /* 7 x 7, stride 2 */

#define DWT_MAX_WORDS 84            /* table words at most (336 bytes of scratch: 7 x 7 at stride 2) */

/* The words of plane_conv_dsp's weight table for this layer, which follows the
 * plane in the scratch: 0 when no table kernel serves it (3 x 3 kernels,
 * one-output-wide maps, clamps, dilation: other paths).  The kernel descriptor
 * (tinyc/kernels/__init__.py) holds the same rule. */
static int32_t table_words(const tinyc_conv_params *p)
{
    const int32_t plane_w = (p->out_w - 1) * p->stride_w + (p->k_w - 1) * p->dil_w + 1;
    const int column = plane_w == 1 && p->out_h > 1;
    const int32_t kh = column ? 1 : p->k_h;
    const int32_t kw = column ? p->k_h : p->k_w;
    const int32_t sw = column ? p->stride_h : p->stride_w;
    const int32_t dw = column ? p->dil_h : p->dil_w;
    const int32_t out_w = column ? p->out_h : p->out_w;
    const int32_t words = (kw + sw + 3) >> 2;
    if (p->act_min != -128 || p->act_max != 127 || dw != 1 || out_w < 2 ||
        (kh == 3 && kw == 3 && (sw == 1 || sw == 2)) || words > 3 || kh * words * 4 > DWT_MAX_WORDS) {
        return 0;
    }
    return kh * words * 4;
}

/* x . w over n raw int8 values (reads exactly n bytes of each). */
static int32_t tinyc_dot_s8(const int8_t *x, const int8_t *w, int32_t n, int32_t acc)
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

/* One output of a plane window, in C (kernel rows, their step, the start value
 * and the requantization from the table kernels' arguments). */
static void dwt_output(const dwk_args *a, const int8_t *win, const int8_t *wf, int32_t kw, int8_t *dst)
{
    int32_t acc = a->bias, ky;
    for (ky = 0; ky < a->kh; ++ky) {
        acc = tinyc_dot_s8(win + ky * a->rs, wf + ky * kw, kw, acc);
    }
    *dst = (int8_t)__ssat(tinyc_rq_value0(acc, a->m2, a->npo, a->r), 8);
}

static int8_t wat(const int8_t *row, int32_t kw, int32_t t)
{
    return t >= 0 && t < kw ? row[t] : 0;
}

/* One of the table loops above, called directly (no function pointer: the
 * static call graph, from which the stack reserve is sized, stays complete). */
enum { DW_3S1, DW_3S2, DWT_1, DWT_2, DWT_3, DWT_K5R5, DWT_J2R7, DWT_J3R7 };
TINYC_ALWAYS_INLINE void dwt_loop(int loop, dwk_args *a)
{
    /* (a loop no layer of the project takes is never called: TINYC_USES;
     * plane_conv_dsp picks only loops that are compiled) */
    if (loop == DWT_K5R5 && TINYC_USES(DWT_K5R5)) {
        dwt_k5r5(a);
    } else if (loop == DWT_J2R7 && TINYC_USES(DWT_J2R7)) {
        dwt_j2r7(a);
    } else if (loop == DWT_J3R7 && TINYC_USES(DWT_J3R7)) {
        dwt_j3r7(a);
    } else if (TINYC_USES(DWT_ANY)) {
        switch (loop) {
        case DWT_1: dwt1(a); break;
        case DWT_2: dwt2(a); break;
        default: dwt3(a); break;
        }
    }
}

/* One channel's plane on the DSP: returns 0 (nothing written) when the shape
 * or the channel's requantization needs the portable kernel.  Geometry in
 * output terms: rows of out_w outputs (a one-column map is taken as one row:
 * its windows run down the column, contiguous since plane_w is 1). */
TINYC_ALWAYS_INLINE int plane_conv_dsp(const tinyc_conv_params *p, const plane_geom *g, const int8_t *scratch,
                                       int8_t *buf, const int8_t *wf, const int32_t *bias, const int32_t *mult,
                                       const int32_t *shift, int32_t c, uint32_t *tab, int32_t tab_room)
{
    const int column = g->plane_w == 1 && p->out_h > 1;
    const int32_t kh = column ? 1 : p->k_h;
    const int32_t kw = column ? p->k_h : p->k_w;
    const int32_t sw = column ? p->stride_h : p->stride_w;
    const int32_t dw = column ? p->dil_h : p->dil_w;
    const int32_t out_w = column ? p->out_h : p->out_w;
    const int32_t out_h = column ? 1 : p->out_h;
    const int32_t pitch = g->plane_w;
    const int32_t rs = column ? 0 : p->dil_h * pitch;
    const int32_t row_adv = column ? 0 : p->stride_h * pitch;
    const int32_t nw = p->k_h * p->k_w;
    tinyc_rq q;
    dwk_args a;
    int32_t wsum = 0, i, words = 0;
    int loop;

    if (p->act_min != -128 || p->act_max != 127 || dw != 1) {
        return 0;
    }
    q = tinyc_rq_make(mult[c], shift[c], p->out_offset);
    if (q.cls != 0) {
        return 0;
    }
    if (out_w < 2) {
        /* a one-output-wide map: each window's rows as SMLAD dot products
         * (compiled for a project with such a layer) */
        int32_t oy;
        if (!TINYC_USES(DW_NARROW)) {
            return 0;
        }
        for (i = 0; i < nw; ++i) {
            wsum += wf[i];
        }
        for (oy = 0; oy < out_h; ++oy) {
            const int8_t *win = scratch + oy * row_adv;
            int32_t acc = (int32_t)((bias != 0 ? (uint32_t)bias[c] : 0u) + (uint32_t)p->in_offset * (uint32_t)wsum);
            int32_t ky;
            if (rs == kw) {
                acc = tinyc_dot_s8(win, wf, nw, acc);      /* contiguous rows (a one-column plane) */
            } else {
                for (ky = 0; ky < kh; ++ky) {
                    acc = tinyc_dot_s8(win + ky * rs, wf + ky * kw, kw, acc);
                }
            }
            buf[c + oy * out_w * p->in_c] = (int8_t)__ssat(tinyc_rq_value0(acc, q.m2, q.npo, q.r), 8);
        }
        return 1;
    }
    if (kh == 3 && kw == 3 && (sw == 1 || sw == 2)) {
        if (!(sw == 1 ? TINYC_USES(DW3S1) : TINYC_USES(DW3S2))) {
            return 0;
        }
        loop = sw == 1 ? DW_3S1 : DW_3S2;
    } else {
        words = (kw + sw + 3) >> 2;
        if (!TINYC_USES(DW_TABLES) || words > 3 || kh * words * 4 > DWT_MAX_WORDS || kh * words * 4 > tab_room) {
            return 0;                                  /* no table in the scratch (table_words) */
        }
        /* the unrolled loop for the shape, else the loop over kernel rows (the
         * same values), each compiled only for a project whose layers take it
         * (codegen/variants.py); neither: the portable kernel */
        loop = words == 1 ? DWT_1 : words == 2 ? DWT_2 : DWT_3;
        if (kh == 5 && kw == 5 && words == 2 && TINYC_USES(DWT_K5R5)) {
            loop = DWT_K5R5;
        } else if (kh == 7 && kw == 7 && words == 2 && TINYC_USES(DWT_J2R7)) {
            loop = DWT_J2R7;
        } else if (kh == 7 && kw == 7 && words == 3 && TINYC_USES(DWT_J3R7)) {
            loop = DWT_J3R7;
        } else if (!TINYC_USES(DWT_ANY)) {
            return 0;
        }
    }
    for (i = 0; i < nw; ++i) {
        wsum += wf[i];
    }
    a.bias = (int32_t)((bias != 0 ? (uint32_t)bias[c] : 0u) + (uint32_t)p->in_offset * (uint32_t)wsum);
    a.m2 = q.m2;
    a.npo = q.npo;
    a.r = q.r;
    a.chans = p->in_c;
    a.rs = rs;
    a.row_adv = row_adv;
    a.odd = out_w & 1;
    a.dst_skip = 0;
    a.sw = sw;
    a.sw2 = 2 * sw;
    if (words == 0) {
        a.w[0] = tinyc_pack16(wf[0], wf[2]);
        a.w[1] = tinyc_pack16(wf[3], wf[5]);
        a.w[2] = tinyc_pack16(wf[6], wf[8]);
        a.w[3] = tinyc_pack16(wf[1], wf[4]);
        a.w[4] = tinyc_pack16(wf[7], 0);
    } else {
        int32_t ky, j;
        uint32_t *t = tab;
        for (ky = 0; ky < kh; ++ky) {
            const int8_t *row = wf + ky * kw;
            for (j = 0; j < words; ++j) {
                const int32_t b = 4 * j;
                *t++ = tinyc_pack16(wat(row, kw, b), wat(row, kw, b + 2));
                *t++ = tinyc_pack16(wat(row, kw, b + 1), wat(row, kw, b + 3));
                *t++ = tinyc_pack16(wat(row, kw, b - sw), wat(row, kw, b + 2 - sw));
                *t++ = tinyc_pack16(wat(row, kw, b + 1 - sw), wat(row, kw, b + 3 - sw));
            }
        }
        a.tab = tab;
        a.kh = kh;
        a.rsadv = rs - 4 * words;
    }
    {
        const int32_t pairs = out_w >> 1;
        const int32_t single = out_w & 1;
        /* the last row's pairs whose words stay inside the plane (all of them
         * for the 3 x 3 kernels, which read no byte past a window) */
        const int32_t plane_end = g->plane_h * pitch;
        const int32_t last_row = (out_h - 1) * row_adv + (kh - 1) * rs;   /* last kernel row, last output row */
        int32_t safe = pairs;
        a.dst = buf + c;
        if (words == 0) {
            /* the 3 x 3 kernels read no byte past a window: all rows at once */
            a.p = scratch;
            a.pend = scratch + (single + 2 * pairs) * sw;
            a.rows = out_h;
            if (loop == DW_3S1 && TINYC_USES(DW3S1)) {
                dw3s1(&a);
            } else if (TINYC_USES(DW3S2)) {
                dw3s2(&a);
            }
            return 1;
        }
        /* the table kernels: pairs only, from column `single` on; each row's
         * single first output and the last row's pairs that would read past
         * the plane are computed in C (dwt_output) */
        while (safe > 0 && last_row + (single + 2 * (safe - 1)) * sw + 4 * words > plane_end) {
            --safe;
        }
        a.dst = buf + c + single * p->in_c;
        a.dst_skip = single * p->in_c;
        if (out_h > 1 && pairs > 0) {
            a.p = scratch + single * sw;
            a.pend = a.p + 2 * pairs * sw;
            a.rows = out_h - 1;
            dwt_loop(loop, &a);
        }
        if (safe > 0) {
            a.p = scratch + (out_h - 1) * row_adv + single * sw;
            a.pend = a.p + 2 * safe * sw;
            a.rows = 1;
            a.dst = buf + c + ((out_h - 1) * out_w + single) * p->in_c;
            dwt_loop(loop, &a);
        }
        if (single) {
            /* a row's first output: the table's out0 pairs, word by word (the
             * words past the window stay in the plane but for the last row) */
            int32_t oy;
            for (oy = 0; oy + 1 < out_h; ++oy) {
                const int8_t *row = scratch + oy * row_adv;
                const uint32_t *t = tab;
                int32_t acc = a.bias, ky, j;
                for (ky = 0; ky < kh; ++ky) {
                    for (j = 0; j < words; ++j) {
                        const uint32_t v = tinyc_ld4(row + 4 * j);
                        acc = tinyc_smlad(tinyc_sxtb16(v), t[0], acc);
                        acc = tinyc_smlad(tinyc_sxtb16_r8(v), t[1], acc);
                        t += 4;
                    }
                    row += rs;
                }
                buf[c + oy * out_w * p->in_c] = (int8_t)__ssat(tinyc_rq_value0(acc, q.m2, q.npo, q.r), 8);
            }
            dwt_output(&a, scratch + (out_h - 1) * row_adv, wf, kw, buf + c + (out_h - 1) * out_w * p->in_c);
        }
        for (i = single + 2 * safe; i < out_w; ++i) {
            dwt_output(&a, scratch + (out_h - 1) * row_adv + i * sw, wf, kw,
                       buf + c + ((out_h - 1) * out_w + i) * p->in_c);
        }
    }
    return 1;
}
#endif /* TINYC_DSP */

#if TINYC_DSP
/* A depthwise column without top padding runs forward over its own buffer
 * (conv.c tinyc_dw_column_dsp), its weight table at the scratch's start. */
static int column_forward(const tinyc_conv_params *p)
{
    return tinyc_dw_column_ok(p) && p->pad_t == 0 && p->pad_l == 0;
}
#endif

/* The plane's bytes: plane_h * plane_w. */
static int32_t plane_bytes(const tinyc_conv_params *p)
{
    if (p->out_h <= 0 || p->out_w <= 0) {
        return 0;
    }
    return ((p->out_h - 1) * p->stride_h + (p->k_h - 1) * p->dil_h + 1) *
           ((p->out_w - 1) * p->stride_w + (p->k_w - 1) * p->dil_w + 1);
}

int32_t tinyc_depthwise_conv2d_inplace_s8_scratch_bytes(const tinyc_conv_params *p)
{
    const int32_t plane = plane_bytes(p);
#if TINYC_DSP
    const int32_t words = plane > 0 ? table_words(p) : 0;
    const int32_t n = words > 0 ? ((plane + 3) & ~3) + 4 * words : plane;  /* the table after the plane */
    if (column_forward(p)) {
        return n > 8 * p->k_h ? n : 8 * p->k_h;       /* or the column kernel's table */
    }
    return n;
#endif
    return plane;
}

void tinyc_depthwise_conv2d_inplace_s8(const tinyc_conv_params *p, int8_t *buf, const int8_t *w,
                                       const int32_t *bias, const int32_t *mult, const int32_t *shift,
                                       void *work, int32_t work_bytes)
{
    const int32_t chans = p->in_c;
    const int32_t w_filter = p->k_h * p->k_w;          /* weights [C][k_h][k_w] */
    int8_t *const scratch = (int8_t *)work;            /* the plane */
    plane_geom g;
    int32_t c;
#if TINYC_DSP
    const int dsp = tinyc_rq_layer_ok(mult, shift, chans, p->out_offset, p->act_min, p->act_max);
    int32_t at, tab_room;
    uint32_t *tab;
#else
    (void)work_bytes;
#endif

    if (p->out_h <= 0 || p->out_w <= 0) {
        return;
    }
    /* The plane: the rows / columns the windows touch, plane row r (column j)
     * being input row r - pad_t (column j - pad_l). */
    g.plane_h = (p->out_h - 1) * p->stride_h + (p->k_h - 1) * p->dil_h + 1;
    g.plane_w = (p->out_w - 1) * p->stride_w + (p->k_w - 1) * p->dil_w + 1;
    g.col_lo = tinyc_clamp32(p->pad_l, 0, g.plane_w);
    g.col_hi = tinyc_clamp32(p->pad_l + p->in_w, g.col_lo, g.plane_w);
    g.row_lo = tinyc_clamp32(p->pad_t, 0, g.plane_h);
    g.row_hi = tinyc_clamp32(p->pad_t + p->in_h, g.row_lo, g.plane_h);
    if (g.col_lo == g.col_hi) {
        g.row_hi = g.row_lo;                           /* no column inside: all padding */
    }
    g.src0 = ((g.row_lo - p->pad_t) * p->in_w + (g.col_lo - p->pad_l)) * chans;
    g.zp = (int8_t)(-p->in_offset);
    c = 0;
#if TINYC_DSP
    /* the weight table's place after the plane, and the words it has room for
     * (plane_conv_dsp takes a table kernel only when its table_words fit) */
    at = (g.plane_h * g.plane_w + 3) & ~3;
    tab = (uint32_t *)(void *)(scratch + at);
    tab_room = work_bytes >= at && (((uintptr_t)work + (uint32_t)at) & 3u) == 0 ? (work_bytes - at) >> 2 : 0;
    if (TINYC_USES(DW_COLUMN) && dsp && column_forward(p) && work_bytes >= 8 * p->k_h && ((uintptr_t)work & 3u) == 0 &&
        p->in_offset >= -32767 + 128 && p->in_offset <= 32767 - 127) {
        c = tinyc_dw_column_dsp(p, buf, w, bias, mult, shift, buf, (uint32_t *)work);  /* then the plane */
    }
#endif
    pad_plane(&g, scratch);
    for (; c < chans; ++c) {
        const int8_t *wf = w + c * w_filter;
        gather_plane(p, &g, buf, c, scratch);
#if TINYC_DSP
        if (dsp && plane_conv_dsp(p, &g, scratch, buf, wf, bias, mult, shift, c, tab, tab_room)) {
            continue;
        }
#endif
        plane_conv_portable(p, &g, scratch, buf, wf, bias, mult, shift, c);
    }
}
