/* int8 fully connected: TFLite Micro's reference FullyConnected arithmetic
 * (int8 weights with zero point 0).  The numpy spec is tinyc/kernels/conv.py.
 *
 *   acc = bias[o] + sum_i (x[b][i] + in_offset) * w[o][i]      (int32)
 *   out = clamp(mbqm(acc, mult[k], shift[k]) + out_offset, act_min, act_max)
 * with k = o for per-channel quantization, else k = 0.
 */
#include "tinyc/kernels.h"
#include "tinyc/fixedpoint.h"

void tinyc_fully_connected_s8(const tinyc_fc_params *p, const int8_t *in, const int8_t *w,
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
