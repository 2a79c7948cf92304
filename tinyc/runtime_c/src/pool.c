/* int8 pooling and mean: TFLite Micro's reference MaxPool, AveragePool and
 * QuantizedMeanOrSum (mean case).  The numpy spec is tinyc/kernels/pool.py.
 * Pools share scale and zero point between input and output, so they work on
 * the raw int8 values.
 */
#include "tinyc/kernels.h"
#include "tinyc/fixedpoint.h"

/* Window taps f in [*first, *end) satisfy 0 <= origin + f < size. */
static void tap_range(int32_t origin, int32_t k, int32_t size, int32_t *first, int32_t *end)
{
    int32_t f0 = origin < 0 ? -origin : 0;
    int32_t f1 = size - origin < k ? size - origin : k;
    if (f1 < f0) {
        f1 = f0;                                  /* window wholly in the padding */
    }
    *first = f0;
    *end = f1;
}

void tinyc_max_pool_s8(const tinyc_pool_params *p, const int8_t *in, int8_t *out)
{
    const int32_t ch = p->channels;
    const int32_t row_step = p->in_w * ch;
    int32_t oy, ox, c, ky, kx;

    for (oy = 0; oy < p->out_h; ++oy) {
        const int32_t iy0 = oy * p->stride_h - p->pad_t;
        int32_t ky0, ky1;
        tap_range(iy0, p->k_h, p->in_h, &ky0, &ky1);
        for (ox = 0; ox < p->out_w; ++ox) {
            const int32_t ix0 = ox * p->stride_w - p->pad_l;
            int32_t kx0, kx1, win;
            tap_range(ix0, p->k_w, p->in_w, &kx0, &kx1);
            /* Index of the first in-bounds tap (channel 0); read only when
             * the window is not empty. */
            win = ((iy0 + ky0) * p->in_w + (ix0 + kx0)) * ch;
            for (c = 0; c < ch; ++c) {
                /* As in TFLM the running max starts at -128; padded taps are skipped. */
                int32_t mx = TINYC_INT8_MIN;
                int32_t row = win + c;
                for (ky = ky0; ky < ky1; ++ky) {
                    int32_t at = row;
                    for (kx = kx0; kx < kx1; ++kx) {
                        const int32_t v = in[at];
                        mx = v > mx ? v : mx;
                        at += ch;
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
    const int32_t row_step = p->in_w * ch;
    const int32_t window = p->k_h * p->k_w;
    int32_t oy, ox, c, ky, kx;

    for (oy = 0; oy < p->out_h; ++oy) {
        const int32_t iy0 = oy * p->stride_h - p->pad_t;
        int32_t ky0, ky1;
        tap_range(iy0, p->k_h, p->in_h, &ky0, &ky1);
        for (ox = 0; ox < p->out_w; ++ox) {
            const int32_t ix0 = ox * p->stride_w - p->pad_l;
            int32_t kx0, kx1, win, valid, count, pad_sum;
            tap_range(ix0, p->k_w, p->in_w, &kx0, &kx1);
            win = ((iy0 + ky0) * p->in_w + (ix0 + kx0)) * ch;
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
            for (c = 0; c < ch; ++c) {
                int32_t acc = pad_sum;
                int32_t row = win + c;
                int32_t avg;
                for (ky = ky0; ky < ky1; ++ky) {
                    int32_t at = row;
                    for (kx = kx0; kx < kx1; ++kx) {
                        acc += in[at];
                        at += ch;
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

void tinyc_mean_s8(const tinyc_mean_params *p, const int8_t *in, int8_t *out)
{
    const int32_t inner = p->inner;
    const int32_t block = p->reduce * inner;      /* elements per outer index */
    const int32_t zp_total = p->in_zero_point * p->reduce;
    int32_t o, i, r;

    for (o = 0; o < p->outer; ++o) {
        const int8_t *slab = in + o * block;
        for (i = 0; i < inner; ++i) {
            int32_t sum = 0;
            int32_t at = i;
            int32_t v;
            for (r = 0; r < p->reduce; ++r) {
                sum += slab[at];
                at += inner;
            }
            v = tinyc_mbqm(sum - zp_total, p->mult, p->shift) + p->out_offset;
            *out++ = (int8_t)tinyc_clamp32(v, TINYC_INT8_MIN, TINYC_INT8_MAX);
        }
    }
}
