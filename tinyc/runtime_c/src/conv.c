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
 */
#include "tinyc/kernels.h"
#include "tinyc/fixedpoint.h"

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

static int8_t requantize(int32_t acc, const int32_t *bias, int32_t c, const int32_t *mult,
                         const int32_t *shift, const tinyc_conv_params *p)
{
    if (bias != 0) {
        acc += bias[c];
    }
    acc = tinyc_mbqm(acc, mult[c], shift[c]) + p->out_offset;
    return (int8_t)tinyc_clamp32(acc, p->act_min, p->act_max);
}

void tinyc_conv2d_s8(const tinyc_conv_params *p, const int8_t *in, const int8_t *w,
                     const int32_t *bias, const int32_t *mult, const int32_t *shift, int8_t *out)
{
    const int32_t in_c = p->in_c;
    const int32_t groups = p->groups > 0 ? p->groups : 1;
    const int32_t cg = in_c / groups;             /* input channels per group */
    const int32_t og = p->out_c / groups;         /* output channels per group */
    const int32_t in_offset = p->in_offset;
    /* Index distance between horizontally / vertically adjacent taps in the
     * input, and between kernel rows / whole filters in the weights. */
    const int32_t tap_step_x = p->dil_w * in_c;
    const int32_t tap_step_y = p->dil_h * p->in_w * in_c;
    const int32_t w_row = p->k_w * cg;
    const int32_t w_filter = p->k_h * w_row;
    int32_t oy, ox, g, j;

    for (oy = 0; oy < p->out_h; ++oy) {
        const int32_t iy0 = oy * p->stride_h - p->pad_t;
        int32_t ky0, ky1;
        tap_range(iy0, p->dil_h, p->k_h, p->in_h, &ky0, &ky1);
        for (ox = 0; ox < p->out_w; ++ox) {
            const int32_t ix0 = ox * p->stride_w - p->pad_l;
            int32_t kx0, kx1, win;
            tap_range(ix0, p->dil_w, p->k_w, p->in_w, &kx0, &kx1);
            /* Index of the first in-bounds tap of the window (channel 0); only
             * read when the tap ranges are not empty. */
            win = ((iy0 + ky0 * p->dil_h) * p->in_w + (ix0 + kx0 * p->dil_w)) * in_c;
            for (g = 0; g < groups; ++g) {
                for (j = 0; j < og; ++j) {
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
                    *out++ = requantize(acc, bias, o, mult, shift, p);
                }
            }
        }
    }
}

void tinyc_conv2d_1x1_s8(const tinyc_conv_params *p, const int8_t *in, const int8_t *w,
                         const int32_t *bias, const int32_t *mult, const int32_t *shift, int8_t *out)
{
    const int32_t in_c = p->in_c;
    const int32_t in_offset = p->in_offset;
    /* Input step between output columns and between output rows. */
    const int32_t step_x = p->stride_w * in_c;
    const int32_t step_y = p->stride_h * p->in_w * in_c;
    int32_t in_line = 0;
    int32_t oy, ox, o, c;

    for (oy = 0; oy < p->out_h; ++oy) {
        int32_t at = in_line;
        for (ox = 0; ox < p->out_w; ++ox) {
            /* One pixel: out[o] = dot(pixel channels, weight row o). */
            const int8_t *px = in + at;
            const int8_t *w_row = w;
            for (o = 0; o < p->out_c; ++o) {
                int32_t acc = 0;
                for (c = 0; c < in_c; ++c) {
                    acc += ((int32_t)px[c] + in_offset) * (int32_t)w_row[c];
                }
                w_row += in_c;
                *out++ = requantize(acc, bias, o, mult, shift, p);
            }
            at += step_x;
        }
        in_line += step_y;
    }
}

void tinyc_depthwise_conv2d_s8(const tinyc_conv_params *p, const int8_t *in, const int8_t *w,
                               const int32_t *bias, const int32_t *mult, const int32_t *shift, int8_t *out)
{
    const int32_t in_c = p->in_c;
    const int32_t dm = p->depth_multiplier > 0 ? p->depth_multiplier : 1;
    const int32_t in_offset = p->in_offset;
    const int32_t tap_step_x = p->dil_w * in_c;
    const int32_t tap_step_y = p->dil_h * p->in_w * in_c;
    const int32_t w_filter = p->k_h * p->k_w;     /* weights [out_c][k_h][k_w] */
    int32_t oy, ox, c, m;

    for (oy = 0; oy < p->out_h; ++oy) {
        const int32_t iy0 = oy * p->stride_h - p->pad_t;
        int32_t ky0, ky1;
        tap_range(iy0, p->dil_h, p->k_h, p->in_h, &ky0, &ky1);
        for (ox = 0; ox < p->out_w; ++ox) {
            const int32_t ix0 = ox * p->stride_w - p->pad_l;
            int32_t kx0, kx1, win;
            tap_range(ix0, p->dil_w, p->k_w, p->in_w, &kx0, &kx1);
            /* Index of the first in-bounds tap of the window (channel 0). */
            win = ((iy0 + ky0 * p->dil_h) * p->in_w + (ix0 + kx0 * p->dil_w)) * in_c;
            for (c = 0; c < in_c; ++c) {
                /* Input channel c feeds output channels c * dm .. c * dm + dm - 1,
                 * so the output stays in NHWC order. */
                for (m = 0; m < dm; ++m) {
                    const int32_t o = c * dm + m;
                    const int8_t *wf = w + o * w_filter;
                    int32_t in_row = win + c;
                    int32_t acc = 0;
                    int32_t ky, kx;
                    for (ky = ky0; ky < ky1; ++ky) {
                        const int8_t *wr = wf + ky * p->k_w;
                        int32_t in_tap = in_row;
                        for (kx = kx0; kx < kx1; ++kx) {
                            acc += ((int32_t)in[in_tap] + in_offset) * (int32_t)wr[kx];
                            in_tap += tap_step_x;
                        }
                        in_row += tap_step_y;
                    }
                    *out++ = requantize(acc, bias, o, mult, shift, p);
                }
            }
        }
    }
}
