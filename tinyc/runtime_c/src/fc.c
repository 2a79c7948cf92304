/* int8 fully connected: TFLite Micro's reference FullyConnected arithmetic
 * (int8 weights with zero point 0).  The numpy spec is tinyc/kernels/conv.py.
 *
 *   acc = bias[o] + sum_i (x[b][i] + in_offset) * w[o][i]      (int32)
 *   out = clamp(mbqm(acc, mult[k], shift[k]) + out_offset, act_min, act_max)
 * with k = o for per-channel quantization, else k = 0.
 *
 * On cores with the DSP extension, 4 output rows at a time share each input
 * word (matmul_dsp.h's tinyc_mac_1x4_rows) and the requantization is simd.h's
 * exact fast form; the result is the same, bit for bit.
 */
#include "tinyc/kernels.h"
#include "tinyc/fixedpoint.h"
#include "tinyc/simd.h"
#include "tinyc/matmul_dsp.h"

TINYC_FALLBACK static void fc_portable(const tinyc_fc_params *p, const int8_t *in, const int8_t *w,
                                       const int32_t *bias, const int32_t *mult, const int32_t *shift, int8_t *out)
{
    const int32_t n_in = p->in_features;
    const int32_t in_offset = p->in_offset;
    int32_t b, o, i;

    for (b = 0; b < p->batches; ++b) {
        const int8_t *x = in + b * n_in;
        const int8_t *w_row = w;
        for (o = 0; o < p->out_features; ++o) {
            const int32_t k = p->per_channel ? o : 0;
            int32_t acc = 0;
            for (i = 0; i < n_in; ++i) {
                acc += ((int32_t)x[i] + in_offset) * (int32_t)w_row[i];
            }
            w_row += n_in;
            if (bias != 0) {
                acc += bias[o];
            }
            acc = tinyc_mbqm(acc, mult[k], shift[k]) + p->out_offset;
            *out++ = (int8_t)tinyc_clamp32(acc, p->act_min, p->act_max);
        }
    }
}

#if TINYC_DSP
static void fc_dsp(const tinyc_fc_params *p, const int8_t *in, const int8_t *w, const int32_t *bias,
                   const int32_t *mult, const int32_t *shift, int8_t *out)
{
    const int32_t k = p->in_features;
    const int32_t n = p->out_features;
    const int32_t n4 = k >> 2;
    const int32_t tail = k & 3;
    const int32_t lo = p->act_min, hi = p->act_max;
    const int full = lo == -128 && hi == 127;
    const uint32_t off2 = tinyc_pack16(p->in_offset, p->in_offset);
    tinyc_rq q = tinyc_rq_make(mult[0], shift[0], p->out_offset);
    int32_t b, o, j;

    for (b = 0; b < p->batches; ++b) {
        const int8_t *x = in + b * k;
        o = 0;
        if (n4 > 0) {
            tinyc_m14_args a;
            a.f = k;
            a.off2 = off2;
            a.segs = 1;
            a.odd = n4 & 1;
            a.xskip = 0;
            a.xstep = 0;
            a.wskip = 0;
            for (; o + 4 <= n; o += 4) {
                a.x = x;
                a.w0 = w + o * k;
                a.xend = x + 4 * n4;
                a.segs = 1;
                for (j = 0; j < 4; ++j) {
                    a.acc[j] = bias != 0 ? bias[o + j] : 0;
                }
                tinyc_mac_1x4_rows(&a);
                for (j = 0; j < 4; ++j) {
                    const int32_t c = p->per_channel ? o + j : 0;
                    int32_t m2, npo, r;
                    int32_t acc = a.acc[j];
                    if (tail) {
                        acc = tinyc_dot_off(x + 4 * n4, w + (o + j) * k + 4 * n4, tail, off2, p->in_offset, acc);
                    }
                    if (full && tinyc_rq_fast(mult[c], shift[c], p->out_offset, &m2, &npo, &r)) {
                        out[o + j] = (int8_t)__ssat(tinyc_rq_value0(acc, m2, npo, r), 8);
                    } else {
                        q = tinyc_rq_make(mult[c], shift[c], p->out_offset);
                        out[o + j] = tinyc_rq_out(acc, &q, lo, hi, 0);
                    }
                }
            }
        }
        for (; o < n; ++o) {
            const int32_t acc = tinyc_dot_off(x, w + o * k, k, off2, p->in_offset, bias != 0 ? bias[o] : 0);
            if (p->per_channel) {
                q = tinyc_rq_make(mult[o], shift[o], p->out_offset);
            }
            out[o] = tinyc_rq_out(acc, &q, lo, hi, 0);
        }
        out += n;
    }
}
#endif

void tinyc_fully_connected_s8(const tinyc_fc_params *p, const int8_t *in, const int8_t *w,
                              const int32_t *bias, const int32_t *mult, const int32_t *shift, int8_t *out)
{
#if TINYC_DSP
    if (p->in_offset >= -32767 + 128 && p->in_offset <= 32767 - 127 &&
        tinyc_rq_layer_ok(mult, shift, p->per_channel ? p->out_features : 1, p->out_offset, p->act_min,
                          p->act_max)) {
        fc_dsp(p, in, w, bias, mult, shift, out);
        return;
    }
#endif
    fc_portable(p, in, w, bias, mult, shift, out);
}

void tinyc_matmul_s8(const tinyc_matmul_params *p, const int8_t *a, const int8_t *b, int8_t *out)
{
    int32_t batch, r, c, k;
    for (batch = 0; batch < p->batches; ++batch) {
        const int8_t *ma = a + batch * p->a_batch_stride;
        const int8_t *mb = b + batch * p->b_batch_stride;
        for (r = 0; r < p->rows; ++r) {
            for (c = 0; c < p->cols; ++c) {
                int32_t acc = 0;
                for (k = 0; k < p->depth; ++k) {
                    acc += ((int32_t)ma[r * p->depth + k] + p->a_offset) * ((int32_t)mb[k * p->cols + c] + p->b_offset);
                }
                acc = tinyc_mbqm(acc, p->out_mult, p->out_shift) + p->out_offset;
                *out++ = (int8_t)tinyc_clamp32(acc, p->act_min, p->act_max);
            }
        }
    }
}
