/* In-place int8 depthwise convolution (depth_multiplier 1): the output
 * overwrites the input's buffer, so a depthwise layer needs no separate output
 * tensor, only a one-channel scratch plane (TinyEngine / MCUNet's in-place
 * depthwise).  Same arithmetic as tinyc_depthwise_conv2d_s8 in conv.c, bit for
 * bit; the numpy spec is depthwise_conv2d_inplace_s8 in tinyc/kernels/conv.py.
 *
 * Why it is safe.  The buffer is NHWC, so every byte of channel c (input or
 * output) sits at an index congruent to c modulo C.  Channel by channel:
 *   1. copy channel c of the input into the scratch plane (with its padding);
 *   2. compute output channel c from the plane, writing buf[q * C + c] for
 *      the output pixels q = 0 .. out_h * out_w - 1.
 * Step 2 only overwrites bytes of channel c, whose input is already in the
 * plane; the other channels' bytes are left alone, so channels not yet
 * processed still find their input and channels already processed keep their
 * output.  The one requirement is that the writes stay inside the buffer:
 * out_h * out_w <= in_h * in_w when buf is exactly the input tensor (more
 * generally, buf must hold max(in_h * in_w, out_h * out_w) * C bytes).
 */
#include "tinyc/kernels.h"
#include "tinyc/fixedpoint.h"

void tinyc_depthwise_conv2d_inplace_s8(const tinyc_conv_params *p, int8_t *buf, const int8_t *w,
                                       const int32_t *bias, const int32_t *mult, const int32_t *shift,
                                       int8_t *scratch)
{
    const int32_t chans = p->in_c;
    const int32_t in_h = p->in_h;
    const int32_t in_w = p->in_w;
    const int32_t out_h = p->out_h;
    const int32_t out_w = p->out_w;
    const int32_t k_h = p->k_h;
    const int32_t k_w = p->k_w;
    const int32_t dil_w = p->dil_w;
    const int32_t in_offset = p->in_offset;
    /* The plane: the rows / columns the windows touch, plane row r (column j)
     * being input row r - pad_t (column j - pad_l). */
    const int32_t plane_h = (out_h - 1) * p->stride_h + (k_h - 1) * p->dil_h + 1;
    const int32_t plane_w = (out_w - 1) * p->stride_w + (k_w - 1) * dil_w + 1;
    /* Plane columns [col_lo, col_hi) lie inside the input, the others in the
     * left / right padding. */
    const int32_t col_lo = tinyc_clamp32(p->pad_l, 0, plane_w);
    const int32_t col_hi = tinyc_clamp32(p->pad_l + in_w, col_lo, plane_w);
    /* The input zero point: a padded tap adds (zp + in_offset) * w = 0. */
    const int8_t zp = (int8_t)(-in_offset);
    const int32_t tap_step_y = p->dil_h * plane_w;
    const int32_t line_step = p->stride_h * plane_w;   /* plane step between output rows */
    const int32_t w_filter = k_h * k_w;                /* weights [C][k_h][k_w] */
    int32_t c;

    if (out_h <= 0 || out_w <= 0) {
        return;
    }
    for (c = 0; c < chans; ++c) {
        const int8_t *wf = w + c * w_filter;
        int32_t at = 0;                                /* write index into scratch */
        int32_t out_at = c;                            /* buf index of output (0, 0, c) */
        int32_t line = 0;                              /* plane index of window (oy, 0) */
        int32_t r, j, oy, ox;

        /* 1. Channel c of the input -> the padded plane. */
        for (r = 0; r < plane_h; ++r) {
            const int32_t iy = r - p->pad_t;
            if (iy < 0 || iy >= in_h || col_lo == col_hi) {
                for (j = 0; j < plane_w; ++j) {
                    scratch[at++] = zp;
                }
            } else {
                int32_t src = (iy * in_w + (col_lo - p->pad_l)) * chans + c;
                for (j = 0; j < col_lo; ++j) {
                    scratch[at++] = zp;
                }
                for (; j < col_hi; ++j) {
                    scratch[at++] = buf[src];
                    src += chans;
                }
                for (; j < plane_w; ++j) {
                    scratch[at++] = zp;
                }
            }
        }

        /* 2. Output channel c from the plane, over channel c's bytes of buf.
         * Every tap is inside the plane: no bounds tests. */
        for (oy = 0; oy < out_h; ++oy) {
            int32_t win = line;
            for (ox = 0; ox < out_w; ++ox) {
                int32_t acc = 0;
                int32_t row = win;
                int32_t ky, kx;
                for (ky = 0; ky < k_h; ++ky) {
                    const int8_t *wr = wf + ky * k_w;
                    int32_t tap = row;
                    for (kx = 0; kx < k_w; ++kx) {
                        acc += ((int32_t)scratch[tap] + in_offset) * (int32_t)wr[kx];
                        tap += dil_w;
                    }
                    row += tap_step_y;
                }
                if (bias != 0) {
                    acc += bias[c];
                }
                acc = tinyc_mbqm(acc, mult[c], shift[c]) + p->out_offset;
                buf[out_at] = (int8_t)tinyc_clamp32(acc, p->act_min, p->act_max);
                out_at += chans;
                win += p->stride_w;
            }
            line += line_step;
        }
    }
}
