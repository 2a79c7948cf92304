/* Convolution, fully connected and depthwise kernels for cores with
 * Helium (the M-profile Vector Extension, MVE: Cortex-M55 / M85).
 *
 * tinyc_conv2d_mve_s8 / tinyc_fully_connected_mve_s8 give exactly the values of
 * tinyc_conv2d_s8 (one group) / tinyc_fully_connected_s8.  The compiler stores
 * their weights in the order the vector loop reads them (kernels/conv.py
 * mve_pack): per group of 4 output channels, per chunk of 16 window values, the
 * 4 channels' 16 int8 weights; the window length K is padded to a multiple of
 * 16 and the channels to a multiple of 4 with zero weights.  The bias holds the
 * input offset (kernels/conv.py fold_bias: bias + in_offset * sum(w)), so the
 * window enters raw and a padded tap is the input zero point.
 *
 * Per chunk of a pixel pair: one VLDRB of 16 window bytes per pixel, and per
 * output channel one VLDRB of its 16 weights and two VMLADAVA.S8 (16 MACs into
 * a scalar accumulator each).  The 4 channels' sums are requantized as one
 * vector (simd.h tinyc_mve_requantize: exact, for every parameter).  Padded
 * window bytes meet zero weights, so a window's tail may hold anything.
 * Windows at a fixed step (a stride-1 pointwise layer's pixels, a fully
 * connected layer's batches, a block of copied windows) run one channel group
 * over all pixel pairs (mve_rows); a window without padded taps whose kernel
 * rows are whole chunks is read in place run by run (mve_pair, all groups per
 * pair); other windows are copied a block at a time from a strip of the input
 * rows one output row reads, padding included.
 *
 * The depthwise kernels (below) copy a group of 4 channels into the scratch
 * before writing them, as planes of one word per pixel or one byte per pixel
 * and channel.  Without MVE (the host, other cores) the same values come from
 * plain loops. */
#include <stddef.h>

#include "tinyc/fixedpoint.h"
#include "tinyc/kernels.h"
#include "tinyc/simd.h"

/* Weight i of output channel o in the packed layout (chunks = ceil(K / 16)). */
static int32_t mve_weight(const int8_t *w, int32_t chunks, int32_t o, int32_t i)
{
    return w[(((o >> 2) * chunks + (i >> 4)) << 6) + ((o & 3) << 4) + (i & 15)];
}

static int8_t requantize_one(int32_t acc, int32_t mult, int32_t shift, int32_t out_offset, int32_t act_min,
                             int32_t act_max)
{
    const int32_t v = tinyc_mbqm(acc, mult, shift);
    /* in int64, as the numpy spec adds: out_offset cannot wrap a large value */
    const int64_t o = (int64_t)v + out_offset;
    return (int8_t)(o < act_min ? act_min : (o > act_max ? act_max : (int32_t)o));
}

/* out[o] for one window x (K values) of every output channel. */
static void dot_portable(const int8_t *x, int32_t k, const int8_t *w, int32_t n, const int32_t *bias,
                         const int32_t *mult, const int32_t *shift, int32_t per_channel, int32_t out_offset,
                         int32_t act_min, int32_t act_max, int8_t *out)
{
    const int32_t chunks = (k + 15) >> 4;
    int32_t o, i;
    for (o = 0; o < n; ++o) {
        uint32_t acc = (uint32_t)bias[o];
        const int32_t c = per_channel ? o : 0;
        for (i = 0; i < k; ++i) {
            acc += (uint32_t)(x[i] * mve_weight(w, chunks, o, i));
        }
        out[o] = requantize_one((int32_t)acc, mult[c], shift[c], out_offset, act_min, act_max);
    }
}

#if TINYC_MVE
/* n bytes from src to dst, 16 at a time. */
static inline void copy_run(int8_t *dst, const int8_t *src, int32_t n)
{
    while (n > 0) {
        const mve_pred16_t m = vctp8q((uint32_t)n);
        vstrbq_p_s8(dst, vldrbq_z_s8(src, m), m);
        src += 16;
        dst += 16;
        n -= 16;
    }
}

static inline void fill_run(int8_t *dst, int8_t v, int32_t n)
{
    const int8x16_t z = vdupq_n_s8(v);
    while (n > 0) {
        vstrbq_p_s8(dst, z, vctp8q((uint32_t)n));
        dst += 16;
        n -= 16;
    }
}
#else
static void copy_run(int8_t *dst, const int8_t *src, int32_t n)
{
    while (n-- > 0) {
        *dst++ = *src++;
    }
}

static void fill_run(int8_t *dst, int8_t v, int32_t n)
{
    while (n-- > 0) {
        *dst++ = v;
    }
}
#endif

/* The window of output pixel (oy, ox), padded taps as the zero point.  Without
 * dilation along the rows a kernel row is at most three runs: padding, input
 * bytes, padding. */
static void window_of(const tinyc_conv_params *p, const int8_t *in, int32_t oy, int32_t ox, int8_t *win)
{
    const int8_t zp = (int8_t)-p->in_offset;
    const int32_t in_c = p->in_c, k_w = p->k_w, row = k_w * in_c;
    const int32_t ix0 = ox * p->stride_w - p->pad_l;
    int32_t ky, kx, kx0 = 0, kx1 = k_w;
    if (p->dil_w == 1) {
        /* the taps inside the input: kx0 <= kx < kx1 (0 <= kx0 <= kx1 <= k_w) */
        kx0 = ix0 >= 0 ? 0 : (-ix0 < k_w ? -ix0 : k_w);
        kx1 = p->in_w - ix0 < k_w ? p->in_w - ix0 : k_w;
        kx1 = kx1 < kx0 ? kx0 : kx1;
    }
    if (kx0 == 0 && kx1 == k_w && p->dil_w == 1) {
        /* every kernel row wholly inside along x: one run per row */
        const int32_t iy0 = oy * p->stride_h - p->pad_t;
        const int32_t step = p->dil_h * p->in_w * in_c;
        const int8_t *src = in + (iy0 * p->in_w + ix0) * in_c;
        for (ky = 0; ky < p->k_h; ++ky, win += row, src += step) {
            const int32_t iy = iy0 + ky * p->dil_h;
            if (iy >= 0 && iy < p->in_h) {
                copy_run(win, src, row);
            } else {
                fill_run(win, zp, row);
            }
        }
        return;
    }
    for (ky = 0; ky < p->k_h; ++ky, win += row) {
        const int32_t iy = oy * p->stride_h - p->pad_t + ky * p->dil_h;
        const int8_t *src = in + (iy * p->in_w + ix0) * in_c;
        if (iy < 0 || iy >= p->in_h) {
            fill_run(win, zp, row);
        } else if (p->dil_w == 1) {
            fill_run(win, zp, kx0 * in_c);
            copy_run(win + kx0 * in_c, src + kx0 * in_c, (kx1 - kx0) * in_c);
            fill_run(win + kx1 * in_c, zp, (k_w - kx1) * in_c);
        } else {
            for (kx = 0; kx < k_w; ++kx) {
                const int32_t ix = ix0 + kx * p->dil_w;
                if (ix >= 0 && ix < p->in_w) {
                    copy_run(win + kx * in_c, src + kx * p->dil_w * in_c, in_c);
                } else {
                    fill_run(win + kx * in_c, zp, in_c);
                }
            }
        }
    }
}

#if TINYC_MVE
/* Arguments of mve_pair (offsets fixed in the assembly).  A window is `rows`
 * runs of (full + 1) chunks; after each run x0 and x1 skip skip0 / skip1 bytes
 * (a kernel row read in place from the input: the rest of the input row; a
 * copied window: 0). */
typedef struct {
    const int8_t *x0, *x1;  /*  0: the two windows */
    const int8_t *w;        /*  8: packed weights (walked) */
    int32_t full;           /* 12: chunks of a run before its last */
    uint32_t last;          /* 16: predicate of a run's last chunk's window lanes (VPR.P0) */
    const int32_t *bias;    /* 20: folded biases, padded to 4 channels (walked) */
    int32_t rows;           /* 24: runs per window (> 0) */
    int32_t skip0, skip1;   /* 28 */
    int32_t left;           /* 36: (the run counter) */
    const int32_t *mult;    /* 40: multipliers (walked by mstep bytes per group) */
    const int32_t *shift;   /* 44: shifts (likewise) */
    int32_t mstep;          /* 48: 16 (per channel) or 0 (one multiplier) */
    int32_t n_left;         /* 52: channels not yet done (walked) */
    int8_t *out0, *out1;    /* 56: the pixels' outputs (walked) */
    int32_t out_offset;     /* 64 */
    int32_t act_min;        /* 68 */
    int32_t act_max;        /* 72 */
} mve_job;

typedef char mve_job_layout[(offsetof(mve_job, left) == 36 && offsetof(mve_job, n_left) == 52 &&
                             offsetof(mve_job, act_max) == 72) ? 1 : -1];

/* One chunk of 16 window values: window bytes in q0 (pixel 0) and q1 (pixel
 * 1); per channel one load of its 16 weights and two VMLADAVA.S8.  The sums
 * live in the 8 even registers VMLADAVA takes: r0 r2 r4 r6 (pixel 0,
 * channels 0-3) and r8 r10 r12 lr (pixel 1); r3 walks the weights. */
#define MVE_CHUNK                   \
    "vldrb.u8 q2, [r3], #16\n\t"    \
    "vmlava.s8 r0, q0, q2\n\t"      \
    "vmlava.s8 r8, q1, q2\n\t"      \
    "vldrb.u8 q3, [r3], #16\n\t"    \
    "vmlava.s8 r2, q0, q3\n\t"      \
    "vmlava.s8 r10, q1, q3\n\t"     \
    "vldrb.u8 q2, [r3], #16\n\t"    \
    "vmlava.s8 r4, q0, q2\n\t"      \
    "vmlava.s8 r12, q1, q2\n\t"     \
    "vldrb.u8 q3, [r3], #16\n\t"    \
    "vmlava.s8 r6, q0, q3\n\t"      \
    "vmlava.s8 lr, q1, q3\n\t"

/* Every output channel of two pixels, 4 channels at a time: the sums over both
 * windows (16 instructions per chunk: 128 MACs), then the 8 sums as two vectors
 * requantized as tinyc_mve_requantize does and stored.  In C, gcc kept some of the 8
 * sums on the stack (VMLADAVA writes even registers only), and a call per
 * channel group cost as much as its requantization. */
__attribute__((naked, noinline)) static void mve_pair(mve_job *job __attribute__((unused)))
{
    __asm__ volatile(
        "push {r4-r11, lr}\n\t"
        "vpush {d8-d15}\n\t"
        "mov r11, r0\n\t"
        "vmov.i32 q4, #0\n\t"
        "ldrd r0, r2, [r11, #68]\n\t"
        "vdup.32 q6, r0\n\t"
        "vdup.32 q7, r2\n\t"
        "ldr r3, [r11, #8]\n\t"
        /* a channel group */
        "4:\n\t"
        "ldr r9, [r11, #16]\n\t"
        "vmsr p0, r9\n\t"
        "ldr r9, [r11, #24]\n\t"
        "str r9, [r11, #36]\n\t"
        "ldrd r5, r1, [r11, #0]\n\t"
        "ldr r0, [r11, #20]\n\t"
        "add r9, r0, #16\n\t"
        "str r9, [r11, #20]\n\t"
        "ldrd r4, r6, [r0, #8]\n\t"
        "ldrd r0, r2, [r0]\n\t"
        "mov r8, r0\n\t"
        "mov r10, r2\n\t"
        "mov r12, r4\n\t"
        "mov lr, r6\n\t"
        /* a run of the windows */
        "3:\n\t"
        "ldr r9, [r11, #12]\n\t"
        "cmp r9, #0\n\t"
        "beq 2f\n\t"
        "1:\n\t"
        "vldrb.u8 q0, [r5], #16\n\t"
        "vldrb.u8 q1, [r1], #16\n\t" MVE_CHUNK
        "subs r9, r9, #1\n\t"
        "bne 1b\n\t"
        "2:\n\t"
        "vpstt\n\t"
        "vldrbt.u8 q0, [r5], #16\n\t"
        "vldrbt.u8 q1, [r1], #16\n\t" MVE_CHUNK
        "ldr r9, [r11, #28]\n\t"
        "add r5, r5, r9\n\t"
        "ldr r9, [r11, #32]\n\t"
        "add r1, r1, r9\n\t"
        "ldr r9, [r11, #36]\n\t"
        "subs r9, r9, #1\n\t"
        "str r9, [r11, #36]\n\t"
        "bne 3b\n\t"
        /* the sums as vectors: q0 pixel 0, q1 pixel 1 */
        "vmov q0[2], q0[0], r0, r4\n\t"
        "vmov q0[3], q0[1], r2, r6\n\t"
        "vmov q1[2], q1[0], r8, r12\n\t"
        "vmov q1[3], q1[1], r10, lr\n\t"
        /* the group's channels: multiplier q2, shift q3 (lanes past n zero) */
        "ldr r0, [r11, #52]\n\t"
        "vctp.32 r0\n\t"
        "ldrd r0, r2, [r11, #40]\n\t"
        "vpstt\n\t"
        "vldrwt.u32 q2, [r0]\n\t"
        "vldrwt.u32 q3, [r2]\n\t"
        "ldr r4, [r11, #48]\n\t"
        "add r0, r0, r4\n\t"
        "add r2, r2, r4\n\t"
        "strd r0, r2, [r11, #40]\n\t"
        "vmax.s32 q5, q3, q4\n\t"
        "vmin.s32 q3, q3, q4\n\t"
        "vshl.s32 q0, q0, q5\n\t"
        "vshl.s32 q1, q1, q5\n\t"
        "vqrdmulh.s32 q0, q0, q2\n\t"
        "vqrdmulh.s32 q1, q1, q2\n\t"
        "vand q2, q0, q3\n\t"
        "vshr.s32 q2, q2, #31\n\t"
        "vqadd.s32 q0, q0, q2\n\t"
        "vand q2, q1, q3\n\t"
        "vshr.s32 q2, q2, #31\n\t"
        "vqadd.s32 q1, q1, q2\n\t"
        "vrshl.s32 q0, q0, q3\n\t"
        "vrshl.s32 q1, q1, q3\n\t"
        "ldr r0, [r11, #64]\n\t"
        "vqadd.s32 q0, q0, r0\n\t"
        "vqadd.s32 q1, q1, r0\n\t"
        "vmax.s32 q0, q0, q6\n\t"
        "vmax.s32 q1, q1, q6\n\t"
        "vmin.s32 q0, q0, q7\n\t"
        "vmin.s32 q1, q1, q7\n\t"
        "ldrd r0, r2, [r11, #56]\n\t"
        "vpstt\n\t"
        "vstrbt.32 q0, [r0]\n\t"
        "vstrbt.32 q1, [r2]\n\t"
        "add r0, r0, #4\n\t"
        "add r2, r2, #4\n\t"
        "strd r0, r2, [r11, #56]\n\t"
        "ldr r0, [r11, #52]\n\t"
        "subs r0, r0, #4\n\t"
        "str r0, [r11, #52]\n\t"
        "bgt 4b\n\t"
        "vpop {d8-d15}\n\t"
        "pop {r4-r11, pc}\n\t");
}

typedef struct {
    const int8_t *w;          /* packed weights */
    int32_t chunks, n;        /* 16-value chunks per window; output channels */
    const int32_t *bias;      /* folded, padded to a multiple of 4 channels */
    const int32_t *mult, *shift;
    int32_t per_channel, out_offset, act_min, act_max;
    mve_pred16_t last;        /* lanes of a run's last chunk inside the window (a pixel read in place) */
    int32_t rows, full;       /* runs per window, chunks of a run before its last */
} mve_layer;

/* Every output channel of two windows x0, x1 (x1 may equal x0, out1 out0),
 * skipping skip0 / skip1 bytes after each run. */
static void mve_pixel_pair(const mve_layer *l, const int8_t *x0, const int8_t *x1, int32_t skip0, int32_t skip1,
                           int8_t *out0, int8_t *out1)
{
    int32_t m4[4], s4[4];  /* one multiplier and shift, as a vector */
    mve_job job;
    job.x0 = x0;
    job.x1 = x1;
    job.w = l->w;
    job.full = l->full;
    job.last = l->last;
    job.bias = l->bias;
    job.rows = l->rows;
    job.skip0 = skip0;
    job.skip1 = skip1;
    if (l->per_channel) {
        job.mult = l->mult;
        job.shift = l->shift;
        job.mstep = 16;
    } else {
        m4[0] = m4[1] = m4[2] = m4[3] = l->mult[0];
        s4[0] = s4[1] = s4[2] = s4[3] = l->shift[0];
        job.mult = m4;
        job.shift = s4;
        job.mstep = 0;
    }
    job.n_left = l->n;
    job.out0 = out0;
    job.out1 = out1;
    job.out_offset = l->out_offset;
    job.act_min = l->act_min;
    job.act_max = l->act_max;
    mve_pair(&job);
}

/* MVE_CHUNK with every channel's weights in q2 (q3 holds mve_rows's clamp). */
#define MVE_CHUNK_Q2                \
    "vldrb.u8 q2, [r3], #16\n\t"    \
    "vmlava.s8 r0, q0, q2\n\t"      \
    "vmlava.s8 r8, q1, q2\n\t"      \
    "vldrb.u8 q2, [r3], #16\n\t"    \
    "vmlava.s8 r2, q0, q2\n\t"      \
    "vmlava.s8 r10, q1, q2\n\t"     \
    "vldrb.u8 q2, [r3], #16\n\t"    \
    "vmlava.s8 r4, q0, q2\n\t"      \
    "vmlava.s8 r12, q1, q2\n\t"     \
    "vldrb.u8 q2, [r3], #16\n\t"    \
    "vmlava.s8 r6, q0, q2\n\t"      \
    "vmlava.s8 lr, q1, q2\n\t"

/* MVE_CHUNK_Q2 starting the sums (VMLADAV) instead of adding to them. */
#define MVE_CHUNK_FIRST             \
    "vldrb.u8 q2, [r3], #16\n\t"    \
    "vmladav.s8 r0, q0, q2\n\t"     \
    "vmladav.s8 r8, q1, q2\n\t"     \
    "vldrb.u8 q2, [r3], #16\n\t"    \
    "vmladav.s8 r2, q0, q2\n\t"     \
    "vmladav.s8 r10, q1, q2\n\t"    \
    "vldrb.u8 q2, [r3], #16\n\t"    \
    "vmladav.s8 r4, q0, q2\n\t"     \
    "vmladav.s8 r12, q1, q2\n\t"    \
    "vldrb.u8 q2, [r3], #16\n\t"    \
    "vmladav.s8 r6, q0, q2\n\t"     \
    "vmladav.s8 lr, q1, q2\n\t"

/* Arguments of mve_rows (offsets fixed in the assembly). */
typedef struct {
    const int8_t *x;     /*  0: pixel 0's window */
    const int8_t *w;     /*  4: the group's packed weights */
    int32_t full;        /*  8: chunks of a window before its last */
    uint32_t last;       /* 12: predicate of the last chunk's window lanes (VPR.P0) */
    const int32_t *k;    /* 16: the group's vectors: folded bias, max(shift, 0), multiplier,
                          * min(shift, 0), act_min, act_max */
    int32_t skip;        /* 20: bytes from the end of pixel 0's window to the next pair's */
    int32_t in_step;     /* 24: bytes from pixel 0's window to pixel 1's */
    int8_t *out;         /* 28: pixel 0's 4 outputs */
    int32_t out_step;    /* 32: bytes from pixel 0's outputs to pixel 1's */
    int32_t pairs;       /* 36: pixel pairs (> 0; walked) */
    int32_t out_offset;  /* 40 */
    uint32_t lanes;      /* 44: predicate of the group's channels (VPR.P0) */
    int32_t left;        /* 48: nonzero when a channel shifts left */
    int32_t plain;       /* 52: 4 channels, no left shift, every chunk read whole (full counts every
                          * chunk then): 1: windows of whole chunks one after the other, 2: the next
                          * pair's first window `skip` past the end of pixel 1's */
} mve_rows_job;

typedef char mve_rows_job_layout[(offsetof(mve_rows_job, pairs) == 36 && offsetof(mve_rows_job, plain) == 52) ? 1
                                                                                                           : -1];

/* The requantization of both pixels' sums (q0, q1) after any left shift:
 * VQRDMULH, the round-half-away fix-up, VRSHL, the offset (r0), the clamp. */
#define MVE_ROWS_REQUANTIZE         \
    "vqrdmulh.s32 q0, q0, q5\n\t"   \
    "vqrdmulh.s32 q1, q1, q5\n\t"   \
    "vand q2, q0, q6\n\t"           \
    "vshr.s32 q2, q2, #31\n\t"      \
    "vqadd.s32 q0, q0, q2\n\t"      \
    "vand q2, q1, q6\n\t"           \
    "vshr.s32 q2, q2, #31\n\t"      \
    "vqadd.s32 q1, q1, q2\n\t"      \
    "vrshl.s32 q0, q0, q6\n\t"      \
    "vrshl.s32 q1, q1, q6\n\t"      \
    "vqadd.s32 q0, q0, r0\n\t"      \
    "vqadd.s32 q1, q1, r0\n\t"      \
    "vmax.s32 q0, q0, q7\n\t"       \
    "vmax.s32 q1, q1, q7\n\t"       \
    "vmin.s32 q0, q0, q3\n\t"       \
    "vmin.s32 q1, q1, q3\n\t"

/* A pair's start: pixel 1's window (r1), the weights (r3), the sums as the
 * bias (two lanes per VMOV), the chunk count (r9). */
#define MVE_ROWS_START              \
    "ldr r0, [r11, #24]\n\t"        \
    "add r1, r5, r0\n\t"            \
    "ldr r3, [r11, #4]\n\t"         \
    "vmov r0, r4, q4[2], q4[0]\n\t" \
    "vmov r2, r6, q4[3], q4[1]\n\t" \
    "vmov r8, r12, q4[2], q4[0]\n\t" \
    "vmov r10, lr, q4[3], q4[1]\n\t" \
    "ldr r9, [r11, #8]\n\t"

#define MVE_ROWS_TO_VECTORS         \
    "vmov q0[2], q0[0], r0, r4\n\t" \
    "vmov q0[3], q0[1], r2, r6\n\t" \
    "vmov q1[2], q1[0], r8, r12\n\t" \
    "vmov q1[3], q1[1], r10, lr\n\t"

/* The next pair's windows and the pair count (in the job). */
#define MVE_ROWS_NEXT               \
    "ldr r0, [r11, #20]\n\t"        \
    "add r5, r5, r0\n\t"            \
    "ldr r0, [r11, #36]\n\t"        \
    "subs r0, r0, #1\n\t"           \
    "str r0, [r11, #36]\n\t"

/* A plain pair (see mve_rows), `next` taking r5 to the next pair's first window. */
#define MVE_ROWS_PLAIN(next)        \
    "ldr r0, [r11, #24]\n\t"        \
    "add r1, r5, r0\n\t"            \
    "ldr r3, [r11, #4]\n\t"         \
    "ldr r9, [r11, #8]\n\t"         \
    "vldrb.u8 q0, [r5], #16\n\t"    \
    "vldrb.u8 q1, [r1], #16\n\t"    \
    MVE_CHUNK_FIRST                 \
    "subs r9, r9, #1\n\t"           \
    "beq 8f\n\t"                    \
    "6:\n\t"                        \
    "vldrb.u8 q0, [r5], #16\n\t"    \
    "vldrb.u8 q1, [r1], #16\n\t"    \
    MVE_CHUNK_Q2                    \
    "subs r9, r9, #1\n\t"           \
    "bne 6b\n\t"                    \
    "8:\n\t"                        \
    MVE_ROWS_TO_VECTORS             \
    "vadd.i32 q0, q0, q4\n\t"       \
    "vadd.i32 q1, q1, q4\n\t"       \
    "ldr r0, [r11, #40]\n\t"        \
    MVE_ROWS_REQUANTIZE             \
    "ldr r0, [r11, #32]\n\t"        \
    "vstrb.32 q0, [r7]\n\t"         \
    "add r7, r7, r0\n\t"            \
    "vstrb.32 q1, [r7]\n\t"         \
    "add r7, r7, r0\n\t"            \
    next                            \
    "ldr r0, [r11, #36]\n\t"        \
    "subs r0, r0, #1\n\t"           \
    "str r0, [r11, #36]\n\t"        \
    "bne 5b\n\t"

/* One channel group over pairs of windows laid out at a fixed step (a
 * pointwise layer's pixels, a fully connected layer's batches): the group's
 * bias, multiplier, shifts and clamp stay in q4-q7 and q3 across the pairs,
 * the sums start as the bias (two lanes per VMOV), and the requantization of
 * both pixels costs 23 instructions (mve_pair, which walks groups inside a
 * pair, reloads them all per pair).  Narrowing stores take low registers: the
 * outputs walk in r7. */
__attribute__((naked, noinline)) static void mve_rows(mve_rows_job *job __attribute__((unused)))
{
    __asm__ volatile(
        "push {r4-r11, lr}\n\t"
        "vpush {d8-d15}\n\t"
        "mov r11, r0\n\t"
        "ldr r0, [r11, #16]\n\t"
        "vldrw.u32 q4, [r0]\n\t"
        "vldrw.u32 q5, [r0, #32]\n\t"
        "vldrw.u32 q6, [r0, #48]\n\t"
        "vldrw.u32 q7, [r0, #64]\n\t"
        "vldrw.u32 q3, [r0, #80]\n\t"
        "ldr r5, [r11]\n\t"
        "ldr r7, [r11, #28]\n\t"
        "ldr r0, [r11, #52]\n\t"
        "cmp r0, #1\n\t"
        "beq 5f\n\t"
        "cmp r0, #2\n\t"
        "beq 9f\n\t"
        /* a pair: full chunks, then the last one under its predicate */
        "1:\n\t" MVE_ROWS_START
        "cmp r9, #0\n\t"
        "beq 3f\n\t"
        "2:\n\t"
        "vldrb.u8 q0, [r5], #16\n\t"
        "vldrb.u8 q1, [r1], #16\n\t" MVE_CHUNK_Q2
        "subs r9, r9, #1\n\t"
        "bne 2b\n\t"
        "3:\n\t"
        "ldr r9, [r11, #12]\n\t"
        "vmsr p0, r9\n\t"
        "vpstt\n\t"
        "vldrbt.u8 q0, [r5], #16\n\t"
        "vldrbt.u8 q1, [r1], #16\n\t" MVE_CHUNK_Q2 MVE_ROWS_TO_VECTORS
        "ldr r0, [r11, #48]\n\t"
        "cbz r0, 4f\n\t"
        "ldr r0, [r11, #16]\n\t"
        "vldrw.u32 q2, [r0, #16]\n\t"
        "vshl.s32 q0, q0, q2\n\t"
        "vshl.s32 q1, q1, q2\n\t"
        "4:\n\t"
        "ldrd r0, r2, [r11, #40]\n\t" MVE_ROWS_REQUANTIZE
        "vmsr p0, r2\n\t"
        "ldr r0, [r11, #32]\n\t"
        "vpst\n\t"
        "vstrbt.32 q0, [r7]\n\t"
        "add r7, r7, r0\n\t"
        "vpst\n\t"
        "vstrbt.32 q1, [r7]\n\t"
        "add r7, r7, r0\n\t" MVE_ROWS_NEXT
        "bne 1b\n\t"
        "b 7f\n\t"
        /* plain: whole chunks, 4 channels, no left shift; the first chunk
         * starts the sums, the bias is added to the vectors.  Windows one after
         * the other: the next pair's first is where pixel 1's ends; else it is
         * `skip` past that */
        "5:\n\t" MVE_ROWS_PLAIN("mov r5, r1\n\t")
        "b 7f\n\t"
        "9:\n\t"
        "5:\n\t" MVE_ROWS_PLAIN("ldr r0, [r11, #20]\n\t" "add r5, r1, r0\n\t")
        "7:\n\t"
        "vpop {d8-d15}\n\t"
        "pop {r4-r11, pc}\n\t");
}

/* Every output channel of `count` windows of l->chunks * 16 - padding bytes
 * at x + q * in_step (q < count), the outputs at out + q * l->n: channel group
 * by channel group over the pairs when there are 2 pairs or more (the setup of
 * a group costs about what a pair saves), else (and for a last lone window)
 * every group inside one call per pair. */
static void mve_windows(const mve_layer *l, const int8_t *x, int32_t in_step, int32_t count, int8_t *out)
{
    int32x4_t k[6] __attribute__((aligned(8)));
    mve_rows_job job;
    const int32_t pairs = count >> 1, window = 16 * l->chunks;
    int32_t g, done;
    if (pairs < 2) {
        for (g = 0; g < count; g += 2) {
            const int32_t r = g + 1 < count ? g + 1 : g;
            mve_pixel_pair(l, x + g * in_step, x + r * in_step, 0, 0, out + g * l->n, out + r * l->n);
        }
        return;
    }
    job.w = l->w;
    job.last = l->last;
    job.k = (const int32_t *)k;
    job.out_offset = l->out_offset;
    k[4] = vdupq_n_s32(l->act_min);
    k[5] = vdupq_n_s32(l->act_max);
    for (g = 0; 4 * g < l->n; ++g, job.w += 4 * window) {
        const int32_t lanes = l->n - 4 * g < 4 ? l->n - 4 * g : 4;
        const mve_pred16_t m = vctp32q((uint32_t)lanes);
        const int32x4_t shift = l->per_channel ? vldrwq_z_s32(l->shift + 4 * g, m) : vdupq_n_s32(l->shift[0]);
        k[0] = vldrwq_s32(l->bias + 4 * g);
        k[1] = vmaxq_s32(shift, vdupq_n_s32(0));
        k[2] = l->per_channel ? vldrwq_z_s32(l->mult + 4 * g, m) : vdupq_n_s32(l->mult[0]);
        k[3] = vminq_s32(shift, vdupq_n_s32(0));
        job.left = vmaxvq_s32(0, shift) > 0;
        job.lanes = m;
        job.x = x;
        job.out = out + 4 * g;
        job.in_step = in_step;
        job.out_step = l->n;
        job.plain = 0;
        done = pairs;
        if (lanes == 4 && !job.left) {
            if (l->last == 0xffff && in_step == window) {
                job.plain = 1;
            } else if (in_step >= 8) {
                /* the last chunks read whole: up to 15 bytes past a window, which
                 * meet zero weights and lie in the next two windows (at least 8
                 * bytes each), so the last pair is left to the predicated loop */
                job.plain = 2;
                done = l->last == 0xffff ? pairs : pairs - 1;
            }
        }
        job.full = job.plain ? l->chunks : l->chunks - 1;
        job.skip = job.plain == 2 ? in_step - window : 2 * in_step - window;
        if (done > 0) {  /* (the assembly counts job.pairs down) */
            job.pairs = done;
            mve_rows(&job);
        }
        if (done < pairs) {
            job.x = x + 2 * done * in_step;
            job.out = out + 2 * done * l->n + 4 * g;
            job.pairs = 1;
            job.plain = 0;
            job.full = l->chunks - 1;
            job.skip = 2 * in_step - window;
            mve_rows(&job);
        }
    }
    if (count & 1) {  /* the last window: a pair of itself */
        const int8_t *last = x + 2 * pairs * in_step;
        mve_pixel_pair(l, last, last, 0, 0, out + 2 * pairs * l->n, out + 2 * pairs * l->n);
    }
}
#endif /* TINYC_MVE */

#if TINYC_MVE
/* The window's first byte in the input when it has no padded tap (its kernel
 * rows are then runs of the input), else 0. */
static const int8_t *window_in_place(const tinyc_conv_params *p, const int8_t *in, int32_t oy, int32_t ox)
{
    const int32_t iy = oy * p->stride_h - p->pad_t, ix = ox * p->stride_w - p->pad_l;
    if (iy < 0 || ix < 0 || iy + (p->k_h - 1) * p->dil_h >= p->in_h || ix + (p->k_w - 1) * p->dil_w >= p->in_w) {
        return 0;
    }
    return in + (iy * p->in_w + ix) * p->in_c;
}
#endif

#if TINYC_MVE
/* Windows copied (im2col) a block at a time: as many as MVE_BLOCK_BYTES hold,
 * an even number (whole pixel pairs) from 2 to 32. */
#define MVE_BLOCK_BYTES 1024

static int32_t mve_block(int32_t chunks)
{
    const int32_t n = (MVE_BLOCK_BYTES / (16 * chunks)) & ~1;
    return n < 2 ? 2 : (n > 32 ? 32 : n);
}

/* Kernel rows of whole chunks, not dilated along x: a window without padded
 * taps is read in place, one run per kernel row. */
static int mve_by_rows(const tinyc_conv_params *p)
{
    return p->dil_w == 1 && ((p->k_w * p->in_c) & 15) == 0;
}

/* The input rows one output row's windows read, padding included (a strip:
 * k_h rows of strip_w pixels), when not dilated along x and at most
 * MVE_STRIP_BYTES: its windows are then copied a kernel row per load.  16
 * bytes of slack after the strip and after the block of windows: a kernel row
 * of at most 16 bytes is copied as 16. */
#define MVE_STRIP_BYTES 2048

static int32_t mve_strip_w(const tinyc_conv_params *p)
{
    return (p->out_w - 1) * p->stride_w + p->k_w;
}

static int32_t mve_strip_bytes(const tinyc_conv_params *p)
{
    const int32_t n = p->k_h * mve_strip_w(p) * p->in_c;
    return p->dil_w == 1 && n <= MVE_STRIP_BYTES ? ((n + 15) & ~15) + 16 : 0;
}

#endif

int32_t tinyc_conv2d_mve_s8_scratch_bytes(const tinyc_conv_params *p)
{
    /* windows of 16 * chunks bytes: none when every window is a pixel read in
     * place, two when windows are read in place by rows (those with padded taps
     * are copied), else a block (kernels/conv.py conv2d_mve_scratch_bytes holds
     * the same rule) */
#if TINYC_MVE
    const int32_t chunks = (p->k_h * p->k_w * p->in_c + 15) >> 4;
    if (p->out_h > 0 && p->out_w > 0 && chunks > 0 && !(p->k_h == 1 && p->k_w == 1 && p->pad_t == 0 &&
                                                        p->pad_l == 0)) {
        return mve_by_rows(p) ? 32 * chunks : 16 * chunks * mve_block(chunks) + 16 + mve_strip_bytes(p);
    }
#endif
    (void)p;
    return 0;
}

#if TINYC_MVE
/* The strip of output row oy: strip row r is input row oy * stride_h - pad_t +
 * r * dil_h, its pixels from column -pad_l, the padding as the zero point.
 * `last` is the output row the strip holds (-1: none): without dilation the
 * next output row's strip is that one moved up stride_h rows, and only its last
 * stride_h rows are read from the input. */
__attribute__((noinline)) static void mve_strip(const tinyc_conv_params *p, const int8_t *in, int32_t oy,
                                                int32_t last, int8_t *strip)
{
    const int32_t C = p->in_c, sw = mve_strip_w(p), row = sw * C, k_h = p->k_h;
    const int32_t c0 = p->pad_l < sw ? p->pad_l : sw;
    const int8x16_t z = vdupq_n_s8((int8_t)-p->in_offset);
    int32_t c1 = p->pad_l + p->in_w < sw ? p->pad_l + p->in_w : sw;
    int32_t r = 0, j;
    c1 = c1 < c0 ? c0 : c1;
    if (last >= 0 && oy == last + 1 && p->dil_h == 1 && p->stride_h < k_h) {
        /* front to back, a vector at a time: each is read before it is overwritten */
        const int32_t keep = (k_h - p->stride_h) * row;
        const int8_t *from = strip + p->stride_h * row;
        for (j = 0; j < keep; j += 16) {
            vst1q_s8(strip + j, vld1q_s8(from + j));
        }
        r = k_h - p->stride_h;
    }
    for (strip += r * row; r < k_h; ++r, strip += row) {
        const int32_t iy = oy * p->stride_h - p->pad_t + r * p->dil_h;
        /* the row as the zero point (whole vectors: the next row, or the slack,
         * takes the bytes past it), then the input run over it, the input read no
         * further than the run */
        for (j = 0; j < row; j += 16) {
            vst1q_s8(strip + j, z);
        }
        if (iy >= 0 && iy < p->in_h && c1 > c0) {
            const int8_t *from = in + (iy * p->in_w + c0 - p->pad_l) * C;
            const int32_t n = (c1 - c0) * C;
            int8_t *to = strip + c0 * C;
            for (j = 0; j + 16 <= n; j += 16) {
                vst1q_s8(to + j, vld1q_s8(from + j));
            }
            if (j < n) {
                const mve_pred16_t m = vctp8q((uint32_t)(n - j));
                vstrbq_p_s8(to + j, vldrbq_z_s8(from + j, m), m);
            }
        }
    }
}

/* n windows (`window` bytes apart) from a strip: window j's k_h runs of `run`
 * bytes start at from + j * x_step, strip_row bytes apart. */
__attribute__((noinline)) static void mve_windows_of_strip(const int8_t *from, int32_t x_step, int32_t strip_row,
                                                           int32_t k_h, int32_t run, int8_t *to, int32_t window,
                                                           int32_t n)
{
    int32_t r;
    for (; n > 0; --n, from += x_step, to += window) {
        const int8_t *f = from;
        int8_t *t = to;
        if (run <= 16) {  /* the next run (or the slack) takes the bytes past this one */
            for (r = 0; r < k_h; ++r, f += strip_row, t += run) {
                vst1q_s8(t, vld1q_s8(f));
            }
        } else {
            for (r = 0; r < k_h; ++r, f += strip_row, t += run) {
                copy_run(t, f, run);
            }
        }
    }
}
#endif

void tinyc_conv2d_mve_s8(const tinyc_conv_params *p, const int8_t *in, const int8_t *w, const int32_t *bias,
                         const int32_t *mult, const int32_t *shift, int8_t *out, void *scratch,
                         int32_t scratch_bytes)
{
    const int32_t k = p->k_h * p->k_w * p->in_c;
    const int32_t n = p->out_c;
    const int32_t pixels = p->out_h * p->out_w;
    const int direct = p->k_h == 1 && p->k_w == 1 && p->pad_t == 0 && p->pad_l == 0;
    const int32_t need = tinyc_conv2d_mve_s8_scratch_bytes(p);
    int8_t *win = (int8_t *)scratch;
    int32_t q;
    if (pixels <= 0 || k <= 0) {
        return;
    }
#if TINYC_MVE
    if (direct || (scratch != 0 && scratch_bytes >= need)) {
        const int32_t chunks = (k + 15) >> 4;
        /* kernel rows of whole chunks (and not dilated along x): a window wholly
         * inside the input is read in place, a run per kernel row (the packed
         * layout's chunks then start at kernel rows) */
        const int32_t row = p->k_w * p->in_c;
        const int by_rows = !direct && mve_by_rows(p);
        const int32_t in_row = p->in_w * p->in_c;
        mve_layer l = {w, chunks, n, bias, mult, shift, 1, p->out_offset, p->act_min, p->act_max,
                       vctp8q((uint32_t)(direct ? k - 16 * (chunks - 1) : 16)), 1, chunks - 1};
        int8_t *win1 = win + 16 * chunks;
        if (by_rows) {
            l.rows = p->k_h;
            l.full = (row >> 4) - 1;
        }
        if (direct && p->stride_w == 1 && (p->stride_h == 1 || p->out_h == 1)) {
            /* consecutive pixels: windows in_c bytes apart */
            mve_windows(&l, in, p->in_c, pixels, out);
            return;
        }
        if (!direct && !by_rows) {
            /* a block of windows copied (from the output row's strip, kernel
             * row by kernel row), then every channel group over the block */
            const int32_t block = mve_block(chunks), window = 16 * chunks;
            const int32_t k_h = p->k_h, strip_row = mve_strip_w(p) * p->in_c, x_step = p->stride_w * p->in_c;
            int8_t *strip = mve_strip_bytes(p) > 0 ? win + block * window + 16 : 0;
            int32_t i, r, strip_oy = -1;
            l.last = vctp8q(16);
            for (q = 0; q < pixels; q += block) {
                const int32_t count = pixels - q < block ? pixels - q : block;
                int32_t oy = q / p->out_w, ox = q % p->out_w, run;
                /* the block's pixels a run of one output row at a time */
                for (i = 0; i < count; i += run, ox = 0, ++oy) {
                    run = count - i < p->out_w - ox ? count - i : p->out_w - ox;
                    if (strip == 0) {
                        for (r = 0; r < run; ++r) {
                            window_of(p, in, oy, ox + r, win + (i + r) * window);
                        }
                        continue;
                    }
                    if (oy != strip_oy) {
                        mve_strip(p, in, oy, strip_oy, strip);
                        strip_oy = oy;
                    }
                    mve_windows_of_strip(strip + ox * x_step, x_step, strip_row, k_h, row, win + i * window,
                                         window, run);
                }
                mve_windows(&l, win, window, count, out + q * n);
            }
            return;
        }
        for (q = 0; q < pixels; q += 2) {
            const int32_t r = q + 1 < pixels ? q + 1 : q;
            const int32_t oy0 = q / p->out_w, ox0 = q % p->out_w, oy1 = r / p->out_w, ox1 = r % p->out_w;
            const int8_t *x0, *x1;
            int32_t skip0 = 0, skip1 = 0;
            if (direct) {
                x0 = in + (oy0 * p->stride_h * p->in_w + ox0 * p->stride_w) * p->in_c;
                x1 = in + (oy1 * p->stride_h * p->in_w + ox1 * p->stride_w) * p->in_c;
            } else {  /* by rows */
                x0 = window_in_place(p, in, oy0, ox0);
                x1 = window_in_place(p, in, oy1, ox1);
                if (x0 != 0) {
                    skip0 = p->dil_h * in_row - row;
                } else {
                    window_of(p, in, oy0, ox0, win);
                    x0 = win;
                }
                if (x1 != 0) {
                    skip1 = p->dil_h * in_row - row;
                } else {
                    window_of(p, in, oy1, ox1, win1);
                    x1 = win1;
                }
            }
            mve_pixel_pair(&l, x0, x1, skip0, skip1, out + q * n, out + r * n);
        }
        return;
    }
#else
    (void)scratch_bytes;
    (void)need;
#endif
    {
        /* one window at a time: in place for a pointwise layer, else through
         * the scratch when it holds one, else tap by tap */
        for (q = 0; q < pixels; ++q) {
            const int32_t oy = q / p->out_w, ox = q % p->out_w;
            if (direct) {
                dot_portable(in + (oy * p->stride_h * p->in_w + ox * p->stride_w) * p->in_c, k, w, n, bias, mult,
                             shift, 1, p->out_offset, p->act_min, p->act_max, out + q * n);
            } else if (scratch != 0 && scratch_bytes >= k) {
                window_of(p, in, oy, ox, win);
                dot_portable(win, k, w, n, bias, mult, shift, 1, p->out_offset, p->act_min, p->act_max,
                             out + q * n);
            } else {
                /* no room for a window: each tap as the portable kernel reads it */
                const int32_t chunks = (k + 15) >> 4;
                int32_t o, ky, kx, c;
                for (o = 0; o < n; ++o) {
                    uint32_t acc = (uint32_t)bias[o];
                    int32_t i = 0;
                    for (ky = 0; ky < p->k_h; ++ky) {
                        const int32_t iy = oy * p->stride_h - p->pad_t + ky * p->dil_h;
                        for (kx = 0; kx < p->k_w; ++kx) {
                            const int32_t ix = ox * p->stride_w - p->pad_l + kx * p->dil_w;
                            const int inside = iy >= 0 && iy < p->in_h && ix >= 0 && ix < p->in_w;
                            const int8_t *src = in + (iy * p->in_w + ix) * p->in_c;
                            for (c = 0; c < p->in_c; ++c, ++i) {
                                const int32_t v = inside ? src[c] : -p->in_offset;
                                acc += (uint32_t)(v * mve_weight(w, chunks, o, i));
                            }
                        }
                    }
                    out[q * n + o] = requantize_one((int32_t)acc, mult[o], shift[o], p->out_offset, p->act_min,
                                                    p->act_max);
                }
            }
        }
    }
}

void tinyc_fully_connected_mve_s8(const tinyc_fc_params *p, const int8_t *in, const int8_t *w,
                                  const int32_t *bias, const int32_t *mult, const int32_t *shift, int8_t *out)
{
    const int32_t k = p->in_features, n = p->out_features;
    if (k <= 0) {
        return;
    }
#if TINYC_MVE
    {
        const int32_t chunks = (k + 15) >> 4;
        const mve_layer l = {w, chunks, n, bias, mult, shift, p->per_channel, p->out_offset, p->act_min,
                             p->act_max, vctp8q((uint32_t)(k - 16 * (chunks - 1))), 1, chunks - 1};
        mve_windows(&l, in, k, p->batches, out);
    }
#else
    int32_t b;
    for (b = 0; b < p->batches; ++b) {
        dot_portable(in + b * k, k, w, n, bias, mult, shift, p->per_channel, p->out_offset, p->act_min,
                     p->act_max, out + b * n);
    }
#endif
}


/* ---- depthwise (depth multiplier 1) ----------------------------------------
 *
 * tinyc_depthwise_conv2d_mve_s8 and its in-place variant give the values of
 * tinyc_depthwise_conv2d_s8 (depth multiplier 1) with the weights packed per
 * group of 4 channels (kernels/conv.py mve_pack_dw: [C / 4][k_h * k_w][4] int8,
 * zero past C) and the folded bias (padded to 4 channels).  Group by group, the
 * group's padded plane, [plane_h][plane_w][4] bytes (padding as the zero
 * point), is copied into the scratch.  A 2-D map of up to 16 taps (any
 * stride and dilation whose windows span at most 255 bytes of a channel's
 * plane) then runs the channel-plane loop (dw_mve_by_channel, below); other
 * maps take each output pixel's 4 channels as one int32 vector: per tap one
 * widening load of 4 plane bytes, one of 4 weights, a VMUL and a VADD (MVE has
 * no vector-by-vector VMLA; two or four pixels share the weight loads),
 * requantized as a vector and stored as 4 bytes.  A group reads and writes
 * only its own channels' bytes, after copying them: so the output may
 * overwrite the input (the in-place variant), under dw_inplace.c's
 * conditions. */

static int32_t dw_plane_h(const tinyc_conv_params *p)
{
    return (p->out_h - 1) * p->stride_h + (p->k_h - 1) * p->dil_h + 1;
}

static int32_t dw_plane_w(const tinyc_conv_params *p)
{
    return (p->out_w - 1) * p->stride_w + (p->k_w - 1) * p->dil_w + 1;
}

/* The channel-plane loop (dw_dots, below): a layer's geometry in the planes.
 * Inner is the planes' faster dimension (the width, or the height when col),
 * outer the other; lines of outputs run along inner, 4 outputs per vector;
 * with stride 1 both ways the outputs are one flat line of positions u *
 * pitch + v (those with v past the inner size read across a plane line and
 * are dropped), else a line per outer output index with up to 3 outputs past
 * its end dropped. */
typedef struct {
    int col;             /* the planes' inner dimension is the height */
    int32_t pitch;       /* plane bytes per outer line */
    int32_t lines;       /* lines of outputs (1: flat) */
    int32_t vectors;     /* vectors of 4 outputs per line */
    int32_t line_step;   /* plane bytes from a line's first window to the next line's */
    int32_t step;        /* plane bytes from a window to the next one along a line */
    int32_t out_pitch;   /* output positions per outer line (dw_store) */
    int32_t outputs;     /* output bytes per channel the loop writes: 4 * lines * vectors */
} dw_dots_shape;

/* the taps one vector of gathered bytes holds */
#define DW_DOTS_TAPS 16

static int dw_dots_shape_of(const tinyc_conv_params *p, int col, dw_dots_shape *s)
{
    const int32_t pitch = col ? dw_plane_h(p) : dw_plane_w(p);
    const int32_t inner = col ? p->out_h : p->out_w, outer = col ? p->out_w : p->out_h;
    const int32_t s_in = col ? p->stride_h : p->stride_w, s_out = col ? p->stride_w : p->stride_h;
    const int32_t k_in = col ? p->k_h : p->k_w, k_out = col ? p->k_w : p->k_h;
    const int32_t d_in = col ? p->dil_h : p->dil_w, d_out = col ? p->dil_w : p->dil_h;
    const int32_t max_offset = (k_out - 1) * d_out * pitch + (k_in - 1) * d_in;  /* the last tap's */
    s->col = col;
    s->pitch = pitch;
    s->step = s_in;
    if (s_in == 1 && s_out == 1) {
        s->lines = 1;
        s->vectors = ((outer - 1) * pitch + inner + 3) >> 2;
        s->line_step = 0;
        s->out_pitch = pitch;
    } else {
        s->lines = outer;
        s->vectors = (inner + 3) >> 2;
        s->line_step = s_out * pitch;
        s->out_pitch = 4 * s->vectors;
    }
    s->outputs = 4 * s->lines * s->vectors;
    /* byte offsets (the gather's lanes, the next window's too) and reads past
     * a plane within its 16 bytes of room */
    return s_in <= 4 && max_offset + s_in <= 255;
}

/* Whether the channel-plane loop takes the layer (2-D maps of up to
 * DW_DOTS_TAPS taps whose windows fit byte offsets), and its geometry: the
 * orientation with fewer vectors and lines (about 21 and 8 instructions). */
static int dw_by_channel(const tinyc_conv_params *p, dw_dots_shape *s)
{
    dw_dots_shape r, c;
    const int ok_r = dw_dots_shape_of(p, 0, &r), ok_c = dw_dots_shape_of(p, 1, &c);
    if (p->k_h * p->k_w > DW_DOTS_TAPS || p->out_h <= 1 || p->out_w <= 1 || (!ok_r && !ok_c)) {
        return 0;
    }
    *s = ok_r && (!ok_c || r.lines * (21 * r.vectors + 8) <= c.lines * (21 * c.vectors + 8)) ? r : c;
    return 1;
}

static int32_t round16(int32_t n)
{
    return (n + 15) & ~15;
}

/* Bytes of each of the channel-plane loop's 4 planes in the scratch: a group's
 * 4-channel plane takes 4 of them, then its output planes; the channel planes
 * (each with 16 bytes of room) then the interleaved outputs take 4 more. */
static int32_t dw_dots_area(const tinyc_conv_params *p, const dw_dots_shape *s)
{
    const int32_t n = round16(dw_plane_h(p) * dw_plane_w(p)), m = round16(s->outputs);
    return n > m ? n : m;
}

int32_t tinyc_depthwise_conv2d_mve_s8_scratch_bytes(const tinyc_conv_params *p)
{
    /* required (kernels/conv.py dw_mve_scratch_bytes): the group's plane; for
     * the channel-plane loop, its areas */
    dw_dots_shape s;
    if (p->out_h <= 0 || p->out_w <= 0) {
        return 0;
    }
    return dw_by_channel(p, &s) ? 8 * dw_dots_area(p, &s) + 64 : 4 * dw_plane_h(p) * dw_plane_w(p) + 16;
}

#if !TINYC_MVE
/* Group g's plane: 4 bytes per plane pixel, the channels past C and the
 * padding as the zero point.  A plane row is 3 runs of pixels (padding, input,
 * padding).  (Helium cores take dw_quad's gather loads.) */
/* (no memset for the fill loops: the runtime calls no libc) */
__attribute__((noinline, optimize("no-tree-loop-distribute-patterns"))) static void dw_gather(
    const tinyc_conv_params *p, const int8_t *src, int32_t g, int8_t *plane, int32_t plane_h, int32_t plane_w)
{
    const int32_t C = p->in_c, lanes = C - 4 * g < 4 ? C - 4 * g : 4;
    const int8_t zp = (int8_t)-p->in_offset;
    const int32_t j0 = p->pad_l < plane_w ? p->pad_l : plane_w;
    int32_t j1 = p->pad_l + p->in_w < plane_w ? p->pad_l + p->in_w : plane_w;
    int32_t r, j, k;
    j1 = j1 < j0 ? j0 : j1;
    for (r = 0; r < plane_h; ++r) {
        const int32_t iy = r - p->pad_t;
        const int inside = iy >= 0 && iy < p->in_h;
        const int8_t *s = src + (iy * p->in_w + (j0 - p->pad_l)) * C + 4 * g;
        int8_t *d = plane + r * plane_w * 4;
        const int32_t a = inside ? j0 : plane_w, b = inside ? j1 : plane_w;  /* the input run */
        for (j = 0; j < 4 * a; ++j) {
            d[j] = zp;
        }
        for (j = a; j < b; ++j, s += C) {
            for (k = 0; k < 4; ++k) {
                d[4 * j + k] = k < lanes ? s[k] : zp;
            }
        }
        for (j = 4 * b; j < 4 * plane_w; ++j) {
            d[j] = zp;
        }
    }
}
#endif

#if TINYC_MVE
/* One tap of both pixels: the tap's 4 weights (r0 walks them), then each
 * pixel's 4 plane bytes (r1: pixel 0's kernel row, r2: pixel 1's) times them
 * (MVE has no vector-by-vector VMLA: VMUL, VADD).  Widening loads and
 * narrowing stores take low registers only. */
#define DW_TAP(kx)                          \
    "vldrb.s32 q2, [r0], #4\n\t"            \
    "vldrb.s32 q3, [r1, #" #kx "]\n\t"      \
    "vmul.i32 q3, q3, q2\n\t"               \
    "vadd.i32 q0, q0, q3\n\t"               \
    "vldrb.s32 q3, [r2, #" #kx "]\n\t"      \
    "vmul.i32 q3, q3, q2\n\t"               \
    "vadd.i32 q1, q1, q3\n\t"

#define DW_ROW DW_TAP(0) DW_TAP(4) DW_TAP(8)

/* Both pixels' sums (q0, q1) requantized as tinyc_mve_requantize does, with
 * the vectors at r6 (bias, max(shift, 0), multiplier, min(shift, 0), act_min,
 * act_max) and the output offset in r4, and stored under the channels'
 * predicate (VPR.P0) at r3 and r3 + r12; r3 moves on by 2 * r12. */
#define DW_PAIR_REQUANTIZE_STORE              \
    "vldrw.u32 q2, [r6, #16]\n\t"             \
    "vshl.s32 q0, q0, q2\n\t"                 \
    "vshl.s32 q1, q1, q2\n\t"                 \
    "vldrw.u32 q2, [r6, #32]\n\t"             \
    "vqrdmulh.s32 q0, q0, q2\n\t"             \
    "vqrdmulh.s32 q1, q1, q2\n\t"             \
    "vldrw.u32 q2, [r6, #48]\n\t"             \
    "vand q3, q0, q2\n\t"                     \
    "vshr.s32 q3, q3, #31\n\t"                \
    "vqadd.s32 q0, q0, q3\n\t"                \
    "vand q3, q1, q2\n\t"                     \
    "vshr.s32 q3, q3, #31\n\t"                \
    "vqadd.s32 q1, q1, q3\n\t"                \
    "vrshl.s32 q0, q0, q2\n\t"                \
    "vrshl.s32 q1, q1, q2\n\t"                \
    "vqadd.s32 q0, q0, r4\n\t"                \
    "vqadd.s32 q1, q1, r4\n\t"                \
    "vldrw.u32 q2, [r6, #64]\n\t"             \
    "vmax.s32 q0, q0, q2\n\t"                 \
    "vmax.s32 q1, q1, q2\n\t"                 \
    "vldrw.u32 q2, [r6, #80]\n\t"             \
    "vmin.s32 q0, q0, q2\n\t"                 \
    "vmin.s32 q1, q1, q2\n\t"                 \
    "add r5, r3, r12\n\t"                     \
    "vpstt\n\t"                               \
    "vstrbt.32 q0, [r3]\n\t"                  \
    "vstrbt.32 q1, [r5]\n\t"                  \
    "add r3, r5, r12\n\t"

/* Arguments of dw3x3_row (offsets fixed in the assembly). */
typedef struct {
    const int8_t *x;       /*  0: the first pixel's window in the plane (4 bytes per plane pixel) */
    int32_t row;           /*  4: bytes per plane row */
    int32_t step;          /*  8: bytes from a pixel's window to the next one's */
    const int8_t *w;       /* 12: the group's 9 taps x 4 weights */
    const int32_t *k;      /* 16: the group's vectors: folded bias, max(shift, 0), mult, min(shift, 0), lo, hi */
    int8_t *out;           /* 20: the first pixel's 4 output channels */
    int32_t out_step;      /* 24: bytes from a pixel's outputs to the next one's */
    int32_t pairs;         /* 28: pixel pairs (> 0) */
    int32_t out_offset;    /* 32 */
    uint32_t lanes;        /* 36: the predicate of the group's channels (VPR.P0) */
} dw_row_job;

typedef char dw_row_job_layout[(offsetof(dw_row_job, pairs) == 28 && offsetof(dw_row_job, lanes) == 36) ? 1 : -1];

/* Pairs of output pixels of a 3 x 3 kernel without dilation along a row: per
 * pair 63 instructions of taps (72 MACs) and 27 of requantization (tinyc_mve_requantize,
 * both pixels at once).  In C, gcc hoisted the loads and kept products on the
 * stack.  A lone last pixel is a pair with step = out_step = 0: both write the
 * same bytes. */
__attribute__((naked, noinline)) static void dw3x3_row(dw_row_job *job __attribute__((unused)))
{
    __asm__ volatile(
        "push {r4-r11, lr}\n\t"
        "ldr r1, [r0, #36]\n\t"
        "vmsr p0, r1\n\t"
        "ldrd r8, r9, [r0]\n\t"
        "ldrd r10, r11, [r0, #8]\n\t"
        "ldrd r6, r3, [r0, #16]\n\t"
        "ldrd r12, lr, [r0, #24]\n\t"
        "ldr r4, [r0, #32]\n\t"
        "lsl r7, r10, #1\n\t"
        "1:\n\t"
        "mov r0, r11\n\t"
        "vldrw.u32 q0, [r6]\n\t"
        "vmov q1, q0\n\t"
        "mov r1, r8\n\t"
        "add r2, r8, r10\n\t" DW_ROW
        "add r1, r1, r9\n\t"
        "add r2, r2, r9\n\t" DW_ROW
        "add r1, r1, r9\n\t"
        "add r2, r2, r9\n\t" DW_ROW
        DW_PAIR_REQUANTIZE_STORE
        "add r8, r8, r7\n\t"
        "subs lr, lr, #1\n\t"
        "bne 1b\n\t"
        "pop {r4-r11, pc}\n\t");
}

/* One pixel's tap in the column loops: its 4 plane bytes (pointer r, walked)
 * times the tap's 4 weights in q2, added to the sums in qa. */
#define DW_COLUMN_TAP(r, qa)                    \
    "vldrb.s32 q3, [" r "], #4\n\t"             \
    "vmul.i32 q3, q3, q2\n\t"                   \
    "vadd.i32 " qa ", " qa ", q3\n\t"

/* A one-column map (k_w 1, no dilation): pairs of output rows, the kernel's
 * taps down the column (4 bytes apart in the plane); the job as dw3x3_row's,
 * with `row` the number of taps (a lone pixel: step 0, its taps once).  Per
 * pair 8 instructions per tap (a low-overhead loop) and 27 of
 * requantization; in C, gcc kept the tap loop's pointers and bounds in
 * memory. */
__attribute__((naked, noinline)) static void dw_column(dw_row_job *job __attribute__((unused)))
{
    __asm__ volatile(
        "push {r4-r11, lr}\n\t"
        "ldr r1, [r0, #36]\n\t"
        "vmsr p0, r1\n\t"
        "ldrd r8, r11, [r0]\n\t"
        "ldrd r10, r9, [r0, #8]\n\t"
        "ldrd r6, r3, [r0, #16]\n\t"
        "ldrd r12, r7, [r0, #24]\n\t"
        "ldr r4, [r0, #32]\n\t"
        "1:\n\t"
        "mov r0, r9\n\t"
        "mov r1, r8\n\t"
        "add r2, r8, r10\n\t"
        "vldrw.u32 q0, [r6]\n\t"
        "vmov q1, q0\n\t"
        "dls lr, r11\n\t"
        "cmp r10, #0\n\t"
        "beq 3f\n\t"
        "2:\n\t"
        "vldrb.s32 q2, [r0], #4\n\t" DW_COLUMN_TAP("r1", "q0") DW_COLUMN_TAP("r2", "q1")
        "le lr, 2b\n\t"
        "b 4f\n\t"
        /* a lone pixel (step 0): its taps once */
        "3:\n\t"
        "vldrb.s32 q2, [r0], #4\n\t" DW_COLUMN_TAP("r1", "q0")
        "le lr, 3b\n\t"
        "vmov q1, q0\n\t"
        "4:\n\t"
        DW_PAIR_REQUANTIZE_STORE
        "add r8, r8, r10, lsl #1\n\t"
        "subs r7, r7, #1\n\t"
        "bne 1b\n\t"
        "pop {r4-r11, pc}\n\t");
}

/* One of 4 pixels' sums (qa) requantized with the vector in q2 (see
 * DW_QUAD_REQUANTIZE_STORE). */
#define DW_FIXUP(qa)                            \
    "vand q3, " qa ", q2\n\t"                   \
    "vshr.s32 q3, q3, #31\n\t"                  \
    "vqadd.s32 " qa ", " qa ", q3\n\t"

#define DW_STORE(qa)                            \
    "vpst\n\t"                                  \
    "vstrbt.32 " qa ", [r4]\n\t"                \
    "add r4, r4, r12\n\t"

/* dw_column over 4 rows at a time (the weights loaded once per tap for all
 * four): 13 instructions per tap and 66 per 4 pixels, against 16 and 74 in
 * pairs.  Sums in q0 q1 q4 q5; widening loads take low registers: weights r0,
 * rows r1 r2 r3 r5; the outputs walk in r4; the job is kept on the stack for
 * the output offset.  job->pairs counts groups of 4 rows. */
__attribute__((naked, noinline)) static void dw_column4(dw_row_job *job __attribute__((unused)))
{
    __asm__ volatile(
        "push {r4-r11, lr}\n\t"
        "vpush {d8-d11}\n\t"
        "push {r0, r1}\n\t"
        "ldr r1, [r0, #36]\n\t"
        "vmsr p0, r1\n\t"
        "ldrd r8, r11, [r0]\n\t"
        "ldrd r10, r9, [r0, #8]\n\t"
        "ldrd r6, r4, [r0, #16]\n\t"
        "ldrd r12, r7, [r0, #24]\n\t"
        "1:\n\t"
        "mov r0, r9\n\t"
        "mov r1, r8\n\t"
        "add r2, r8, r10\n\t"
        "add r3, r2, r10\n\t"
        "add r5, r3, r10\n\t"
        "vldrw.u32 q0, [r6]\n\t"
        "vmov q1, q0\n\t"
        "vmov q4, q0\n\t"
        "vmov q5, q0\n\t"
        "dls lr, r11\n\t"
        "2:\n\t"
        "vldrb.s32 q2, [r0], #4\n\t" DW_COLUMN_TAP("r1", "q0") DW_COLUMN_TAP("r2", "q1")
        DW_COLUMN_TAP("r3", "q4") DW_COLUMN_TAP("r5", "q5")
        "le lr, 2b\n\t"
        "vldrw.u32 q2, [r6, #16]\n\t"
        "vshl.s32 q0, q0, q2\n\t"
        "vshl.s32 q1, q1, q2\n\t"
        "vshl.s32 q4, q4, q2\n\t"
        "vshl.s32 q5, q5, q2\n\t"
        "vldrw.u32 q2, [r6, #32]\n\t"
        "vqrdmulh.s32 q0, q0, q2\n\t"
        "vqrdmulh.s32 q1, q1, q2\n\t"
        "vqrdmulh.s32 q4, q4, q2\n\t"
        "vqrdmulh.s32 q5, q5, q2\n\t"
        "vldrw.u32 q2, [r6, #48]\n\t"
        DW_FIXUP("q0") DW_FIXUP("q1") DW_FIXUP("q4") DW_FIXUP("q5")
        "vrshl.s32 q0, q0, q2\n\t"
        "vrshl.s32 q1, q1, q2\n\t"
        "vrshl.s32 q4, q4, q2\n\t"
        "vrshl.s32 q5, q5, q2\n\t"
        "ldr r0, [sp]\n\t"
        "ldr r0, [r0, #32]\n\t"
        "vqadd.s32 q0, q0, r0\n\t"
        "vqadd.s32 q1, q1, r0\n\t"
        "vqadd.s32 q4, q4, r0\n\t"
        "vqadd.s32 q5, q5, r0\n\t"
        "vldrw.u32 q2, [r6, #64]\n\t"
        "vmax.s32 q0, q0, q2\n\t"
        "vmax.s32 q1, q1, q2\n\t"
        "vmax.s32 q4, q4, q2\n\t"
        "vmax.s32 q5, q5, q2\n\t"
        "vldrw.u32 q2, [r6, #80]\n\t"
        "vmin.s32 q0, q0, q2\n\t"
        "vmin.s32 q1, q1, q2\n\t"
        "vmin.s32 q4, q4, q2\n\t"
        "vmin.s32 q5, q5, q2\n\t"
        DW_STORE("q0") DW_STORE("q1") DW_STORE("q4") DW_STORE("q5")
        "add r8, r8, r10, lsl #2\n\t"
        "subs r7, r7, #1\n\t"
        "bne 1b\n\t"
        "pop {r0, r1}\n\t"
        "vpop {d8-d11}\n\t"
        "pop {r4-r11, pc}\n\t");
}

/* Any other kernel: the taps of two pixels' windows x0, x1. */
static void dw_pair(const tinyc_conv_params *p, const int8_t *x0, const int8_t *x1, int32_t row, const int8_t *wg,
                    int32x4_t *acc0, int32x4_t *acc1)
{
    int32_t ky, kx;
    int32x4_t a0 = *acc0, a1 = *acc1;
    for (ky = 0; ky < p->k_h; ++ky) {
        const int32_t off = ky * p->dil_h * row;
        for (kx = 0; kx < p->k_w; ++kx, wg += 4) {
            const int32x4_t wv = vldrbq_s32(wg);
            a0 = vaddq_s32(a0, vmulq_s32(vldrbq_s32(x0 + off + 4 * kx * p->dil_w), wv));
            a1 = vaddq_s32(a1, vmulq_s32(vldrbq_s32(x1 + off + 4 * kx * p->dil_w), wv));
        }
    }
    *acc0 = a0;
    *acc1 = a1;
}
#endif

static void dw_group(const tinyc_conv_params *p, const int8_t *plane, int32_t plane_w, const int8_t *wg,
                     const int32_t *bias4, const int32_t *mult, const int32_t *shift, int32_t lanes, int8_t *dst)
{
    const int32_t C = p->out_c;
    int32_t oy, ox;
#if TINYC_MVE
    const mve_pred16_t m = vctp32q((uint32_t)lanes);
    const int32x4_t start = vldrwq_s32(bias4);
    const int32x4_t mult4 = vldrwq_z_s32(mult, m), shift4 = vldrwq_z_s32(shift, m);
    const int32x4_t lo = vdupq_n_s32(p->act_min), hi = vdupq_n_s32(p->act_max);
    const int32_t step = 4 * p->stride_w, row = 4 * plane_w;
    const int k33 = p->k_h == 3 && p->k_w == 3 && p->dil_h == 1 && p->dil_w == 1;
    if (k33 || (p->out_w == 1 && p->k_w == 1 && p->dil_h == 1)) {
        /* the requantization's vectors: bias, left shift, multiplier, right shift, clamp */
        int32x4_t k[6] __attribute__((aligned(8)));
        dw_row_job job;
        k[0] = start;
        k[1] = vmaxq_s32(shift4, vdupq_n_s32(0));
        k[2] = mult4;
        k[3] = vminq_s32(shift4, vdupq_n_s32(0));
        k[4] = lo;
        k[5] = hi;
        job.row = row;
        job.w = wg;
        job.k = (const int32_t *)k;
        job.out_offset = p->out_offset;
        job.lanes = m;
        if (!k33) {  /* a column: rows 4 at a time, then pairs */
            const int32_t quads = p->out_h >> 2, pairs = (p->out_h & 3) >> 1;
            job.row = p->k_h;
            job.out_step = C;
            job.step = p->stride_h * row;
            job.x = plane;
            job.out = dst;
            if (quads > 0) {
                job.pairs = quads;
                dw_column4(&job);
                job.x += 4 * quads * job.step;
                job.out += 4 * quads * C;
            }
            if (pairs > 0) {
                job.pairs = pairs;
                dw_column(&job);
                job.x += 2 * job.step;
                job.out += 2 * C;
            }
            if (p->out_h & 1) {  /* the lone last row: a pair of itself */
                job.step = 0;
                job.out_step = 0;
                job.pairs = 1;
                dw_column(&job);
            }
            return;
        }
        for (oy = 0; oy < p->out_h; ++oy) {
            const int8_t *x = plane + oy * p->stride_h * row;
            int8_t *out = dst + oy * p->out_w * C;
            const int32_t pairs = p->out_w >> 1;
            if (pairs > 0) {
                job.x = x;
                job.step = step;
                job.out = out;
                job.out_step = C;
                job.pairs = pairs;
                dw3x3_row(&job);
            }
            if (p->out_w & 1) {  /* the lone last pixel: a pair of itself */
                job.x = x + 2 * pairs * step;
                job.step = 0;
                job.out = out + 2 * pairs * C;
                job.out_step = 0;
                job.pairs = 1;
                dw3x3_row(&job);
            }
        }
        return;
    }
    {
        /* pixel pairs in raster order (a one-column map pairs its rows) */
        const int32_t pixels = p->out_h * p->out_w;
        int32_t q;
        oy = ox = 0;
        for (q = 0; q < pixels; q += 2) {
            const int32_t oy1 = ox + 1 < p->out_w ? oy : oy + 1, ox1 = ox + 1 < p->out_w ? ox + 1 : 0;
            const int8_t *x0 = plane + oy * p->stride_h * row + ox * step;
            const int8_t *x1 = q + 1 < pixels ? plane + oy1 * p->stride_h * row + ox1 * step : x0;
            int32x4_t acc0 = start, acc1 = start;
            dw_pair(p, x0, x1, row, wg, &acc0, &acc1);
            vstrbq_p_s32(dst + q * C, tinyc_mve_requantize(acc0, mult4, shift4, p->out_offset, lo, hi), m);
            if (q + 1 < pixels) {
                vstrbq_p_s32(dst + (q + 1) * C, tinyc_mve_requantize(acc1, mult4, shift4, p->out_offset, lo, hi), m);
            }
            oy = ox1 + 1 < p->out_w ? oy1 : oy1 + 1;
            ox = ox1 + 1 < p->out_w ? ox1 + 1 : 0;
        }
    }
#else
    int32_t j, ky, kx;
    for (oy = 0; oy < p->out_h; ++oy) {
        for (ox = 0; ox < p->out_w; ++ox) {
            for (j = 0; j < lanes; ++j) {
                uint32_t acc = (uint32_t)bias4[j];
                for (ky = 0; ky < p->k_h; ++ky) {
                    for (kx = 0; kx < p->k_w; ++kx) {
                        const int32_t py = oy * p->stride_h + ky * p->dil_h, px = ox * p->stride_w + kx * p->dil_w;
                        acc += (uint32_t)(plane[(py * plane_w + px) * 4 + j] * wg[(ky * p->k_w + kx) * 4 + j]);
                    }
                }
                dst[(oy * p->out_w + ox) * C + j] =
                    requantize_one((int32_t)acc, mult[j], shift[j], p->out_offset, p->act_min, p->act_max);
            }
        }
    }
#endif
}

#if TINYC_MVE
/* ---- one plane per channel, a gathered window per output ------------------
 *
 * VLD4 splits the group's 4-channel plane into 4 planes of one byte per
 * pixel, laid out along the output dimension that makes fewer vectors
 * (dw_dots_shape).  A window's taps lie at fixed byte offsets from its first
 * byte, so one gather load takes an output's whole window (up to 16 taps, the
 * lanes past them at offset 0) and one VMLADAV its sum against the channel's
 * weights (zero past the taps): 2 instructions per output for any kernel up to
 * 16 taps, against 2 per tap and 4 outputs for VMLA by scalar.  4 sums become
 * a vector (two VMOVs) for the requantization.  The outputs are clamped before
 * the output offset, which is added to 16 bytes at once when VST4 interleaves
 * the 4 output planes again; words then go to the output pixels. */

/* Arguments of dw_dots (offsets fixed in the assembly): a group's channels,
 * each from its plane into its output plane. */
typedef struct {
    const int8_t *x;     /*  0: channel 0's plane (the first window's first byte) */
    int32_t split;       /*  4: bytes from a channel's plane to the next one's */
    int8_t *out;         /*  8: channel 0's output plane */
    int32_t out_plane;   /* 12: bytes from a channel's output plane to the next one's */
    int32_t lines;       /* 16: lines of outputs (> 0) */
    int32_t vectors;     /* 20: vectors of 4 outputs per line (> 0) */
    int32_t line_step;   /* 24: plane bytes from a line's first window to the next line's */
    int32_t step;        /* 28: plane bytes from a window to the next one along a line */
    const int8_t *w;     /* 32: the group's packed weights, [tap][4 channels] */
    const int32_t *k;    /* 36: vectors of the 4 channels: folded bias, multiplier, shift; act_min and
                          * act_max less the output offset */
    const uint8_t *offs; /* 40: the taps' offsets from a window's first byte (16; 0 past the taps) */
    int32_t taps;        /* 44 */
    int32_t lanes;       /* 48: channels (1-4) */
    int32_t j;           /* 52: (the channel) */
    const int8_t *line;  /* 56: (the line's first window) */
} dw_dots_job;

typedef char dw_dots_job_layout[(offsetof(dw_dots_job, w) == 32 && offsetof(dw_dots_job, line) == 56) ? 1 : -1];

/* A line's start: its first window (r0), the third (r5), the vector count. */
#define DW_DOTS_LINE                  \
    "ldr r0, [r12, #56]\n\t"          \
    "ldr r5, [r12, #28]\n\t"          \
    "add r5, r0, r5, lsl #1\n\t"      \
    "ldr lr, [r12, #20]\n\t"          \
    "dls lr, lr\n\t"

/* 4 windows' sums (gathers at q5 / q6: the offsets for windows 0 and 1 from r0,
 * 2 and 3 from r5) as a vector in q0, plus the bias. */
#define DW_DOTS_SUMS                  \
    "vldrb.u8 q1, [r0, q5]\n\t"       \
    "vmladav.s8 r2, q1, q2\n\t"       \
    "vldrb.u8 q1, [r0, q6]\n\t"       \
    "vmladav.s8 r4, q1, q2\n\t"       \
    "vldrb.u8 q1, [r5, q5]\n\t"       \
    "vmladav.s8 r6, q1, q2\n\t"       \
    "vldrb.u8 q1, [r5, q6]\n\t"       \
    "vmladav.s8 r8, q1, q2\n\t"       \
    "add r0, r0, r1\n\t"              \
    "add r5, r5, r1\n\t"              \
    "vmov q0[2], q0[0], r2, r6\n\t"   \
    "vmov q0[3], q0[1], r4, r8\n\t"   \
    "vadd.i32 q0, q0, r9\n\t"

#define DW_DOTS_STORE                 \
    "vmax.s32 q0, q0, q3\n\t"         \
    "vmin.s32 q0, q0, q4\n\t"         \
    "vstrb.32 q0, [r3], #4\n\t"

/* The next line's first window; the lines left (r7) counted down. */
#define DW_DOTS_NEXT_LINE             \
    "ldr r0, [r12, #56]\n\t"          \
    "ldr r2, [r12, #24]\n\t"          \
    "add r0, r0, r2\n\t"              \
    "str r0, [r12, #56]\n\t"          \
    "subs r7, r7, #1\n\t"

/* Per channel: its weights gathered into q2 (the lanes past the taps zero,
 * under the taps' predicate), its bias / multiplier / shift into r9 / r10 /
 * r11; per vector of 4 outputs 21 instructions with a right shift (VQRDMULH
 * and VRSHL by scalars, the round-half-away fix-up between them), 19 with a
 * left one, in a low-overhead loop per line.  Registers: r0 / r5 windows, r1
 * 4 windows' step, r2 r4 r6 r8 the sums (VMLADAV writes even registers), r3
 * the output (narrowing stores take low registers), r7 the lines left, r12 the
 * job; q5 / q6 the taps' offsets for 2 windows, q7 the weights' offsets (4
 * bytes apart), q3 / q4 the clamp. */
__attribute__((naked, noinline)) static void dw_dots(dw_dots_job *job __attribute__((unused)))
{
    __asm__ volatile(
        "push {r4-r11, lr}\n\t"
        "vpush {d8-d15}\n\t"
        "mov r12, r0\n\t"
        "ldr r1, [r12, #40]\n\t"
        "vldrb.u8 q5, [r1]\n\t"
        "ldr r1, [r12, #28]\n\t"
        "vadd.i8 q6, q5, r1\n\t"
        "ldr r1, [r12, #36]\n\t"
        "vldrw.u32 q3, [r1, #48]\n\t"
        "vldrw.u32 q4, [r1, #64]\n\t"
        "movs r2, #0\n\t"
        "vidup.u8 q7, r2, #4\n\t"
        "movs r1, #0\n\t"
        "str r1, [r12, #52]\n\t"
        "ldr r1, [r12, #44]\n\t"
        "vctp.8 r1\n\t"
        /* channel j */
        "5:\n\t"
        "ldr r1, [r12, #52]\n\t"
        "ldr r2, [r12, #32]\n\t"
        "add r2, r2, r1\n\t"
        "vpst\n\t"
        "vldrbt.u8 q2, [r2, q7]\n\t"
        "ldr r2, [r12, #36]\n\t"
        "add r2, r2, r1, lsl #2\n\t"
        "ldr r9, [r2]\n\t"
        "ldr r10, [r2, #16]\n\t"
        "ldr r11, [r2, #32]\n\t"
        "ldr r2, [r12, #12]\n\t"
        "ldr r3, [r12, #8]\n\t"
        "mla r3, r1, r2, r3\n\t"
        "ldr r2, [r12, #4]\n\t"
        "ldr r0, [r12]\n\t"
        "mla r0, r1, r2, r0\n\t"
        "str r0, [r12, #56]\n\t"
        "ldr r7, [r12, #16]\n\t"
        "ldr r1, [r12, #28]\n\t"
        "lsls r1, r1, #2\n\t"
        "cmp r11, #0\n\t"
        "bge 3f\n\t"
        "1:\n\t" DW_DOTS_LINE
        "2:\n\t" DW_DOTS_SUMS
        "vqrdmulh.s32 q0, q0, r10\n\t"
        "vshr.s32 q1, q0, #31\n\t"
        "vqadd.s32 q0, q0, q1\n\t"
        "vrshl.s32 q0, r11\n\t" DW_DOTS_STORE
        "le lr, 2b\n\t" DW_DOTS_NEXT_LINE
        "bne 1b\n\t"
        "b 4f\n\t"
        "3:\n\t" DW_DOTS_LINE
        "6:\n\t" DW_DOTS_SUMS
        "vshl.s32 q0, r11\n\t"
        "vqrdmulh.s32 q0, q0, r10\n\t" DW_DOTS_STORE
        "le lr, 6b\n\t" DW_DOTS_NEXT_LINE
        "bne 3b\n\t"
        "4:\n\t"
        "ldr r1, [r12, #52]\n\t"
        "adds r1, r1, #1\n\t"
        "str r1, [r12, #52]\n\t"
        "ldr r2, [r12, #48]\n\t"
        "cmp r1, r2\n\t"
        "blt 5b\n\t"
        "vpop {d8-d15}\n\t"
        "pop {r4-r11, pc}\n\t");
}

/* n words of the zero point, 4 per store: up to 3 words past them are
 * written too (dw_quad writes a line's runs in order, and the plane is
 * followed by room). */
static inline void dw_fill(uint32_t *d, uint32x4_t zp4, int32_t n)
{
    for (; n > 0; n -= 4, d += 4) {
        vst1q_u32(d, zp4);
    }
}

/* Where a group's 4-channel plane (one word per plane pixel) comes from: its
 * outer lines of `pitch` words (inner = the plane's columns, or its rows when
 * col); lines [first, last) read the input, at words [j0, j1), the rest is
 * padding.  Fixed for a layer: dw_quad_shape_of. */
typedef struct {
    int32_t pitch, lines, first, last, j0, j1;
    int32_t skip;         /* input bytes from channel 0 of pixel (0, 0) to line first's word j0 */
    int32_t line_step;    /* input bytes from a line's word j0 to the next line's */
    int32_t step;         /* input bytes from a word to the next */
    int32_t words;        /* 0: channels not in whole words (C % 4 != 0): byte by byte */
    int8_t zp;            /* the padding: the input zero point */
} dw_quad_shape;

static int32_t clamp_to(int32_t v, int32_t lo, int32_t hi)
{
    return v < lo ? lo : (v > hi ? hi : v);
}

static dw_quad_shape dw_quad_shape_of(const tinyc_conv_params *p, int col)
{
    const int32_t C = p->in_c;
    const int32_t in_inner = col ? p->in_h : p->in_w, pad_inner = col ? p->pad_t : p->pad_l;
    const int32_t in_outer = col ? p->in_w : p->in_h, pad_outer = col ? p->pad_l : p->pad_t;
    dw_quad_shape q;
    q.pitch = col ? dw_plane_h(p) : dw_plane_w(p);
    q.lines = col ? dw_plane_w(p) : dw_plane_h(p);
    q.first = clamp_to(pad_outer, 0, q.lines);
    q.last = clamp_to(pad_outer + in_outer, q.first, q.lines);
    q.j0 = clamp_to(pad_inner, 0, q.pitch);
    q.j1 = clamp_to(pad_inner + in_inner, q.j0, q.pitch);
    q.step = col ? p->in_w * C : C;
    q.line_step = col ? C : p->in_w * C;
    q.skip = (q.first - pad_outer) * q.line_step + (q.j0 - pad_inner) * q.step;
    q.words = (C & 3) == 0;
    q.zp = (int8_t)-p->in_offset;
    return q;
}

/* A group's 4-channel plane (src: its channel 0 of input pixel (0, 0); lanes:
 * its channels, the rest the zero point).  An inner run of input pixels is 4
 * words per gather load when the words are aligned, else byte by byte; a
 * line's padding of up to 4 words is one store (the runs in order: a store
 * past a run is overwritten by the next one, and the plane is followed by
 * room). */
__attribute__((noinline)) static void dw_quad(const dw_quad_shape *q, const int8_t *src, int32_t lanes, uint32_t *quad)
{
    const int32_t pitch = q->pitch, j0 = q->j0, n = q->j1 - q->j0, right = q->pitch - q->j1;
    const int32_t full = n >> 2, step4 = 4 * q->step;
    const uint32x4_t zp4 = vdupq_n_u32((uint8_t)q->zp * 0x01010101u);
    const uint32x4_t offs = vmulq_n_u32(vidupq_n_u32(0, 1), (uint32_t)q->step);
    const mve_pred16_t tail = vctp32q((uint32_t)(n & 3));
    const int words = q->words && ((uintptr_t)src & 3) == 0;
    const int8_t *s = src + q->skip;
    uint32_t *d = quad + q->first * pitch;
    int32_t u, k, j;
    dw_fill(quad, zp4, q->first * pitch);
    for (u = q->first; u < q->last; ++u, d += pitch, s += q->line_step) {
        const int8_t *x = s;
        uint32_t *e = d + j0;
        if (j0 > 4) {
            dw_fill(d, zp4, j0);
        } else if (j0 > 0) {
            vst1q_u32(d, zp4);
        }
        if (words) {
            /* the input is read no further than the run: its last vector under a predicate */
            for (k = 0; k < full; ++k, e += 4, x += step4) {
                vst1q_u32(e, vldrwq_gather_offset_u32((const uint32_t *)(const void *)x, offs));
            }
            if (n & 3) {
                vst1q_u32(e, vldrwq_gather_offset_z_u32((const uint32_t *)(const void *)x, offs, tail));
            }
        } else {
            for (k = 0; k < n; ++k, x += q->step) {
                int8_t *b = (int8_t *)(void *)(e + k);
                for (j = 0; j < 4; ++j) {
                    b[j] = j < lanes ? x[j] : q->zp;
                }
            }
        }
        if (right > 4) {
            dw_fill(d + q->j1, zp4, right);
        } else if (right > 0) {
            vst1q_u32(d + q->j1, zp4);
        }
    }
    dw_fill(d, zp4, (q->lines - q->last) * pitch);
}

/* The 4-channel plane's n pixels as 4 planes, `split` bytes apart. */
__attribute__((noinline)) static void dw_split(const int8_t *quad, int32_t n, int8_t *planes, int32_t split)
{
    int32_t i;
    for (i = 0; i < n; i += 16) {
        const int8x16x4_t q = vld4q_s8(quad + 4 * i);
        vst1q_s8(planes + i, q.val[0]);
        vst1q_s8(planes + split + i, q.val[1]);
        vst1q_s8(planes + 2 * split + i, q.val[2]);
        vst1q_s8(planes + 3 * split + i, q.val[3]);
    }
}

/* The 4 output planes (`stride` bytes apart) plus the output offset, as one
 * word per position. */
__attribute__((noinline)) static void dw_interleave(const int8_t *planes, int32_t stride, int32_t positions,
                                                    int8_t out_offset, int8_t *words)
{
    const int8x16_t offset = vdupq_n_s8(out_offset);
    int32_t i;
    for (i = 0; i < positions; i += 16) {
        int8x16x4_t q;
        q.val[0] = vaddq_s8(vld1q_s8(planes + i), offset);
        q.val[1] = vaddq_s8(vld1q_s8(planes + stride + i), offset);
        q.val[2] = vaddq_s8(vld1q_s8(planes + 2 * stride + i), offset);
        q.val[3] = vaddq_s8(vld1q_s8(planes + 3 * stride + i), offset);
        vst4q_s8(words + 4 * i, q);
    }
}

/* The words of the output positions (inner index < the inner output size) to
 * the group's channels of the output pixels: 4 pixels per scatter store when
 * the words are aligned. */
__attribute__((noinline)) static void dw_store(const tinyc_conv_params *p, const uint32_t *words, int col,
                                               int32_t pitch, int32_t lanes, int8_t *out)
{
    const int32_t C = p->in_c, outer = col ? p->out_w : p->out_h, inner = col ? p->out_h : p->out_w;
    const int32_t step = (col ? p->out_w : 1) * C;
    const uint32x4_t offs = vmulq_n_u32(vidupq_n_u32(0, 1), (uint32_t)step);
    const int aligned = (C & 3) == 0 && ((uintptr_t)out & 3) == 0;
    int32_t u, v, j;
    if (lanes == 4 && aligned) {
        const int32_t full = inner >> 2, line = (col ? 1 : p->out_w) * C;
        const mve_pred16_t tail = vctp32q((uint32_t)(inner & 3));
        for (u = 0; u < outer; ++u, words += pitch, out += line) {
            const uint32_t *from = words;
            int8_t *to = out;
            for (v = 0; v < full; ++v, from += 4, to += 4 * step) {
                vstrwq_scatter_offset_u32((uint32_t *)(void *)to, offs, vld1q_u32(from));
            }
            if (inner & 3) {
                vstrwq_scatter_offset_p_u32((uint32_t *)(void *)to, offs, vld1q_u32(from), tail);
            }
        }
        return;
    }
    for (u = 0; u < outer; ++u) {
        const uint32_t *from = words + u * pitch;
        int8_t *to = out + (col ? u : u * p->out_w) * C;
        for (v = 0; v < inner; ++v, to += step) {
            for (j = 0; j < lanes; ++j) {
                to[j] = ((const int8_t *)(from + v))[j];
            }
        }
    }
}

__attribute__((noinline)) static void dw_mve_by_channel(const tinyc_conv_params *p, const dw_dots_shape *s,
                                                        const int8_t *src, const int8_t *w, const int32_t *bias,
                                                        const int32_t *mult, const int32_t *shift, int8_t *dst,
                                                        int8_t *scratch)
{
    const int32_t C = p->in_c, taps = p->k_h * p->k_w, n = dw_plane_h(p) * dw_plane_w(p);
    const int32_t area = dw_dots_area(p, s);
    int8_t *const quad = scratch, *const planes = scratch + 4 * area;
    const dw_quad_shape shape = dw_quad_shape_of(p, s->col);
    uint8_t offs[DW_DOTS_TAPS] __attribute__((aligned(8)));
    int32x4_t k[5];
    dw_dots_job job;
    int32_t g, t;
    for (t = 0; t < DW_DOTS_TAPS; ++t) {
        const int32_t ky = t / p->k_w, kx = t % p->k_w;
        offs[t] = (uint8_t)(t >= taps ? 0
                                      : (s->col ? kx * p->dil_w * s->pitch + ky * p->dil_h
                                                : ky * p->dil_h * s->pitch + kx * p->dil_w));
    }
    job.x = planes;
    job.split = area + 16;
    job.out = quad;
    job.out_plane = round16(s->outputs);
    job.lines = s->lines;
    job.vectors = s->vectors;
    job.line_step = s->line_step;
    job.step = s->step;
    job.k = (const int32_t *)k;
    job.offs = offs;
    job.taps = taps;
    k[3] = vdupq_n_s32(p->act_min - p->out_offset);
    k[4] = vdupq_n_s32(p->act_max - p->out_offset);
    for (g = 0; 4 * g < C; ++g) {
        const int32_t lanes = C - 4 * g < 4 ? C - 4 * g : 4;
        const mve_pred16_t m = vctp32q((uint32_t)lanes);
        dw_quad(&shape, src + 4 * g, lanes, (uint32_t *)(void *)quad);
        dw_split(quad, n, planes, job.split);
        k[0] = vldrwq_s32(bias + 4 * g);
        k[1] = vldrwq_z_s32(mult + 4 * g, m);
        k[2] = vldrwq_z_s32(shift + 4 * g, m);
        job.w = w + g * taps * 4;
        job.lanes = lanes;
        dw_dots(&job);
        dw_interleave(quad, job.out_plane, s->outputs, (int8_t)p->out_offset, planes);
        dw_store(p, (const uint32_t *)(const void *)planes, s->col, s->out_pitch, lanes, dst + 4 * g);
    }
}
#endif

static void dw_mve(const tinyc_conv_params *p, const int8_t *src, const int8_t *w, const int32_t *bias,
                   const int32_t *mult, const int32_t *shift, int8_t *dst, void *scratch, int32_t scratch_bytes)
{
    const int32_t C = p->in_c, taps = p->k_h * p->k_w, plane_w = dw_plane_w(p);
    int32_t g;
#if TINYC_MVE
    dw_dots_shape shape;
    dw_quad_shape quad;
#endif
    if (p->out_h <= 0 || p->out_w <= 0 || scratch == 0 ||
        scratch_bytes < tinyc_depthwise_conv2d_mve_s8_scratch_bytes(p)) {
        return;  /* the scratch is required: the compiler always plans it */
    }
#if TINYC_MVE
    if (dw_by_channel(p, &shape)) {
        dw_mve_by_channel(p, &shape, src, w, bias, mult, shift, dst, (int8_t *)scratch);
        return;
    }
    /* the plane row-major, its words by gather loads (a one-column plane as one
     * line: the same layout) */
    quad = dw_quad_shape_of(p, plane_w == 1);
#endif
    for (g = 0; 4 * g < C; ++g) {
        const int32_t lanes = C - 4 * g < 4 ? C - 4 * g : 4;
#if TINYC_MVE
        dw_quad(&quad, src + 4 * g, lanes, (uint32_t *)scratch);
#else
        dw_gather(p, src, g, (int8_t *)scratch, dw_plane_h(p), plane_w);
#endif
        dw_group(p, (const int8_t *)scratch, plane_w, w + g * taps * 4, bias + 4 * g, mult + 4 * g, shift + 4 * g,
                 lanes, dst + 4 * g);
    }
}

void tinyc_depthwise_conv2d_mve_s8(const tinyc_conv_params *p, const int8_t *in, const int8_t *w,
                                   const int32_t *bias, const int32_t *mult, const int32_t *shift, int8_t *out,
                                   void *scratch, int32_t scratch_bytes)
{
    dw_mve(p, in, w, bias, mult, shift, out, scratch, scratch_bytes);
}

int32_t tinyc_depthwise_conv2d_inplace_mve_s8_scratch_bytes(const tinyc_conv_params *p)
{
    return tinyc_depthwise_conv2d_mve_s8_scratch_bytes(p);
}

void tinyc_depthwise_conv2d_inplace_mve_s8(const tinyc_conv_params *p, int8_t *buf, const int8_t *w,
                                           const int32_t *bias, const int32_t *mult, const int32_t *shift,
                                           void *scratch, int32_t scratch_bytes)
{
    dw_mve(p, buf, w, bias, mult, shift, buf, scratch, scratch_bytes);
}
