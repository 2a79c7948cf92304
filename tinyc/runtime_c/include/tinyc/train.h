/* tinyc training kernels: the backward pass and the update of an on-device
 * training step, float32 (for cores with an FPU: Cortex-M4F / M7 / M55).
 * Portable C99, no allocation, no libc or libm call (exp and log are the
 * approximations below), no double arithmetic.
 *
 * Each kernel mirrors one function of tinyc/kernels/train.py (same name
 * without the "tinyc_" prefix, same arguments in the same order, outputs
 * returned instead of written): the numpy function is the executable
 * specification.  The unit tests hold the float kernels to it within 1e-5 of
 * the largest magnitude (only the order of float sums differs) and the
 * integer parts of the updates bit for bit.
 *
 * The step: the int8 forward saves int8 activations; the backward runs in
 * float32 on their real values, scale * (q - zero_point) (per-tensor scale and
 * zero point), and on the real weights w_scale[o] * w_q (int8 weights,
 * per-output-channel scale, zero point 0).  Gradients are float32.
 *
 * Conventions:
 *   - Tensors are NHWC with batch 1, contiguous; weight layouts as in
 *     kernels.h: conv [out_c][k_h][k_w][in_c / groups], fully connected
 *     [out][in].
 *   - Naming: dy is the gradient of an op's output, dz of a layer's
 *     pre-activation output (after the fused clamp's mask), dx of an input,
 *     dw / db of the weights / bias.
 *   - Argument order: sizes (a parameter record and k, the number of leading
 *     output channels whose parameters are updated), then the inputs, each
 *     quantized tensor followed by its scale (and zero point), then the
 *     outputs.  In-place state (the updated parameters) comes last.
 *   - Every output is overwritten (no accumulation into what the caller had).
 *   - Only the geometry fields of tinyc_conv_params / tinyc_pool_params are
 *     read (offsets, multipliers and clamp bounds belong to the forward).
 */
#ifndef TINYC_TRAIN_H
#define TINYC_TRAIN_H

#include <stdint.h>

#include "tinyc/kernels.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- elementary functions ------------------------------------------------
 *
 * tinyc_expf(x): e^x by Cody-Waite range reduction, x = n ln2 + r with
 * |r| <= ln2 / 2 (ln2 split in two so that n * ln2_hi is exact), a degree-7
 * polynomial for e^r (Cephes' expf coefficients) evaluated in float, and 2^n
 * put into the exponent bits.  Relative error < 2e-7 for every x whose e^x is
 * a normal float, -87.33654 <= x <= 88.72283 (checked exhaustively over all
 * those floats: at most 8.2e-8, 0.7 ulp).  Below (e^x < FLT_MIN) it returns
 * 0, an absolute error < 1.2e-38: in a softmax such a term is less than that
 * fraction of the largest one (which is 1).  Above: +inf; NaN gives NaN.
 *
 * tinyc_logf(x): x = m 2^e with m in [sqrt(1/2), sqrt(2)), log x =
 * e ln2 + log(1 + f), f = m - 1, with log(1 + f) = f - f^2/2 + f^3 P(f)
 * (Cephes' logf coefficients, P of degree 8) and ln2 split in two.  Relative
 * error < 2e-7 for every positive finite x, denormals included (exhaustively:
 * at most 8.2e-8).  log 0 = -inf, log of a negative number or NaN = NaN,
 * log inf = inf.
 *
 * Both assume the FPU's default rounding, to nearest. */
float tinyc_expf(float x);
float tinyc_logf(float x);

/* ---- fused activations --------------------------------------------------
 *
 * dx[i] = dy[i] where lo_q < y_q[i] < hi_q (strictly), else 0: the gradient
 * of a fused ReLU / ReLU6 / clip, from the op's int8 output y_q (0 at the
 * bounds, as PyTorch's).  lo_q / hi_q are the int8 clamp bounds act_min /
 * act_max of the forward; pass -129 / 128 for a side without a bound.
 * dx may be dy (in place). */
void tinyc_clamp_grad_f32(int32_t n, const float *dy, const int8_t *y_q, int32_t lo_q, int32_t hi_q,
                          float *dx);

/* out[i] = a[i] + b[i]: the gradient of a tensor read by two ops (a residual
 * connection's fan-out).  out may be a or b (in place). */
void tinyc_add_f32(int32_t n, const float *a, const float *b, float *out);

/* out = in[s0:s0+o0, s1:s1+o1, s2:s2+o2, s3:s3+o3] for in of shape
 * in_shape[4], starts[4] and out_shape[4] (lower ranks padded with leading
 * 1s): the gradient of a Concat's input or of a Pad's. out must not overlap in. */
void tinyc_slice_f32(const int32_t *in_shape, const int32_t *starts, const int32_t *out_shape, const float *in,
                     float *out);

/* ---- convolution --------------------------------------------------------
 *
 * Geometry from tinyc_conv_params: in_h, in_w, in_c, out_h, out_w, out_c,
 * k_h, k_w, stride_h/w, dil_h/w, pad_t, pad_l and groups, which must be the
 * real group count: a depthwise convolution is groups == in_c (one input
 * channel per group, out_c / in_c = depth multiplier outputs each; the
 * weights [out_c][k_h][k_w][1] are the layout of tinyc_depthwise_conv2d_s8,
 * and output channel o reads input channel o / (out_c / in_c) as there).
 * depth_multiplier, offsets and clamp bounds are not read.  Taps in the
 * padding read real zeros; bottom / right padding follows from the shapes.
 *
 * Grad input: dx [in_h][in_w][in_c] = the transposed convolution of
 * dz [out_h][out_w][out_c] with the real weights w_scale[o] * w_q:
 *   dx[iy][ix][g*cg + c] = sum over (oy, ox, ky, kx) with
 *     iy = oy*stride_h - pad_t + ky*dil_h, ix likewise, and o in group g,
 *   of dz[oy][ox][o] * w_scale[o] * w_q[o][ky][kx][c]      (cg = in_c / groups).
 * dx must not overlap dz. */
void tinyc_conv2d_grad_input_f32(const tinyc_conv_params *p, const float *dz, const int8_t *w_q,
                                 const float *w_scale, float *dx);

/* Grad input summed per input channel, masked by the clamp of the layer that
 * produced the input (the bias gradient of that layer when this gradient is
 * all the bias needs):
 *   ds[c] = sum over (iy, ix) with lo_q < y_q[iy][ix][c] < hi_q of dx[iy][ix][c],
 * dx as tinyc_conv2d_grad_input_f32 defines it; y_q NULL: no mask.  The
 * [in_h][in_w][in_c] gradient is never stored: ds is [in_c]. */
void tinyc_conv2d_grad_input_sum_f32(const tinyc_conv_params *p, const float *dz, const int8_t *w_q,
                                     const float *w_scale, const int8_t *y_q, int32_t lo_q, int32_t hi_q, float *ds);

/* Grad weight of the first k output channels (0 < k <= out_c):
 *   dw[o][ky][kx][c] = sum over (oy, ox) of dz[oy][ox][o] * x(iy, ix, g*cg + c),
 * x = x_scale * (x_q - x_zero) the saved input [in_h][in_w][in_c], 0 in the
 * padding; dz is the whole [out_h][out_w][out_c] (channels >= k not read);
 * dw is [k][k_h][k_w][in_c / groups]. */
void tinyc_conv2d_grad_weight_f32(const tinyc_conv_params *p, int32_t k, const int8_t *x_q, float x_scale,
                                  int32_t x_zero, const float *dz, float *dw);

/* db[c] = sum over rows r of dz[r][c], for c < k; dz is [rows][channels]
 * (a conv's dz is rows = out_h * out_w). */
void tinyc_bias_grad_f32(int32_t rows, int32_t channels, int32_t k, const float *dz, float *db);

/* ---- fully connected (y = x w^T + b) --------------------------------------
 *
 * Grad input: dx[r][i] = sum over o of dz[r][o] * s(o) * w_q[o][i], with
 * s(o) = w_scale[o] when per_channel, else w_scale[0].  dz [rows][out],
 * w_q [out][in], dx [rows][in], not overlapping dz. */
void tinyc_fc_grad_input_f32(int32_t rows, int32_t in, int32_t out, const float *dz, const int8_t *w_q,
                             const float *w_scale, int32_t per_channel, float *dx);

/* Grad weight of the first k outputs: dw[o][i] = sum over rows r of
 * dz[r][o] * x_scale * (x_q[r][i] - x_zero), o < k.  x_q [rows][in],
 * dz [rows][out], dw [k][in]. */
void tinyc_fc_grad_weight_f32(int32_t rows, int32_t in, int32_t out, int32_t k, const int8_t *x_q,
                              float x_scale, int32_t x_zero, const float *dz, float *dw);

/* ---- pooling and reductions ---------------------------------------------
 *
 * Average pool: dy [out_h][out_w][channels] -> dx [in_h][in_w][channels]:
 * each output's gradient is shared equally by the cells its window averaged,
 * dy / count added to each in-bounds cell of the window, where count is the
 * number of in-bounds cells, or k_h * k_w with count_include_pad (the
 * forward's divisor, tinyc_avg_pool_s8).  A window with no cell counted
 * passes nothing.  Reads in_h, in_w, channels, out_h, out_w, k_h, k_w,
 * strides, pad_t, pad_l and count_include_pad.  dx must not overlap dy. */
void tinyc_avg_pool_grad_f32(const tinyc_pool_params *p, const float *dy, float *dx);

/* Max pool: dy [out_h][out_w][channels] -> dx [in_h][in_w][channels]: each
 * output's gradient goes to the cell of its window that held the maximum of
 * the int8 input x_q (in-bounds cells only; the first in row-major order on
 * ties, as PyTorch picks), summed where windows overlap.  Reads the same
 * fields as the average pool.  dx must not overlap dy or x_q. */
void tinyc_max_pool_grad_f32(const tinyc_pool_params *p, const float *dy, const int8_t *x_q, float *dx);

/* Mean over the middle axis of [outer][reduce][inner] (the view of
 * tinyc_mean_s8; a global average pool is outer = 1, reduce = H * W,
 * inner = C): dx[o][r][i] = dy[o][i] / reduce.  dx must not overlap dy. */
void tinyc_mean_grad_f32(int32_t outer, int32_t reduce, int32_t inner, const float *dy, float *dx);

/* ---- loss -----------------------------------------------------------------
 *
 * Softmax cross-entropy of n int8 logits, z = scale * (q - zero), against
 * label (0 <= label < n; another value adds no one-hot term and no -z term):
 *   s_i = scale * (q_i - max q)              (= z_i - max z, one rounding)
 *   e_i = expf(s_i), sum = sum of e_i
 *   *loss = logf(sum) - s_label
 *   dlogits_i = e_i / sum - (i == label)
 * except that a logit saturated in int8 gets no gradient pushing it further
 * out (dlogits_i = 0 where q_i == 127 and dlogits_i < 0, or q_i == -128 and
 * dlogits_i > 0): the int8 output cannot move there, and following that
 * gradient only grows the weights until every logit saturates (fine-tuning a
 * head with a large learning rate collapsed to one class without this).
 * dlogits [n] float. */
void tinyc_softmax_xent_f32(int32_t n, const int8_t *logits_q, float scale, int32_t zero, int32_t label,
                            float *loss, float *dlogits);

/* ---- SGD updates of int8 / int32 parameters -------------------------------
 *
 * Quantization-aware scaling: the float SGD step -lr * grad is divided by the
 * parameter's scale, giving the update in the parameter's integer units, all
 * in float32 in this order: step = -(lr * g) / s.  Float -> int conversions
 * round half to even (as numpy's rint), or stochastically where asked, and are
 * exact (no libm, no reliance on the FPU rounding mode); NaN steps count as
 * 0.  Integer results are bit-exact with the numpy spec.
 *
 * tinyc_sgd_update_s8: the first k output channels of an int8 weight, count
 * elements each: w_q [k][count] (int8, in place), dw [k][count],
 * w_scale[k] (per_channel) or w_scale[0] (per tensor, per_channel == 0).
 * With a residue (int8 [k][count], in place): each weight is the 16-bit value
 *   v = 256 * w_q + residue        (residue in [-128, 127], 1/256 units)
 * and an update does
 *   d = round(clamp(256 * step, -256 L, 256 L))       (256 * step in float32)
 *   v = clamp(v + d, -127 * 256, 127 * 256)           (the weight saturates at +-127.0)
 *   w_q = floor((v + 128) / 256)                      (v rounded, halves up: in [-127, 127])
 *   residue = v - 256 * w_q                           (in [-128, 127])
 * so the forward always uses the 16-bit weight rounded to nearest.  Start
 * with residue = 0.  residue == NULL: no memory,
 *   w_q = clamp(w_q + round(clamp(step, -L, L)), -127, 127).
 * Either way a step moves a weight by at most L = max_units units of its
 * scale (update clipping; max_units <= 0 or >= 256: L = 256, no limit within
 * the int8 range).  Gradients that throw weights across their range and into
 * saturation, which int8 cannot undo, are what it prevents: on ResNet-8 /
 * digits32 (sparse scheme) L = 1 lifts int8 accuracy from 0.78 to 0.95,
 * PyTorch's float level.
 * round(): with rng == NULL, rint (half to even).  Otherwise stochastic,
 * unbiased: floor(t) + (u < t - floor(t)) (exact float32 operations), with u
 * one draw per element (in element order, zero steps included, so *rng
 * advances by k * count) from a counter generator whose state *rng is in
 * place:  *rng += 0x9e3779b9;  z = fmix32(*rng) (MurmurHash3's finalizer:
 * z ^= z >> 16; z *= 0x85ebca6b; z ^= z >> 13; z *= 0xc2b2ae35; z ^= z >> 16);
 * u = (z >> 8) / 2^24 in [0, 1).  Any seed works; persist *rng with the
 * weights to make a run reproducible. */
void tinyc_sgd_update_s8(int32_t k, int32_t count, float lr, const float *dw, const float *w_scale,
                         int32_t per_channel, int32_t max_units, int8_t *w_q, int8_t *residue, uint32_t *rng);

/* tinyc_sgd_update_s32: the first k entries of an int32 bias, scale
 * bias_scale[c] (= s_in * s_w[c]; bias_scale[0] for all when per_channel == 0):
 *   bias_q[c] = clamp(bias_q[c] + rint(step), -(2^31 - 1), 2^31 - 1),
 * step = -(lr * db[c]) / s, the sum taken exactly (in 64 bits). */
void tinyc_sgd_update_s32(int32_t k, float lr, const float *db, const float *bias_scale, int32_t per_channel,
                          int32_t *bias_q);

/* ---- fused weight gradient and update ----------------------------------------
 *
 * The weight gradient of the first k output channels applied as soon as it
 * exists, one channel at a time, so that no more than one channel's gradient
 * is ever kept: for each o < k, dw (k_h * k_w * in_c / groups floats, or in
 * floats, scratch) receives channel o's gradient exactly as
 * tinyc_conv2d_grad_weight_f32 / tinyc_fc_grad_weight_f32 compute it, then
 * tinyc_sgd_update_s8(1, count, lr, dw, &w_scale[o], 1, max_units, channel o
 * of w_q, channel o of residue (or NULL), rng).  The same result (and the same
 * generator draws) as the gradient of all k channels followed by one update.
 * Run it after every other reader of w_q (the input gradient needs the weights
 * before the step). */
void tinyc_conv2d_train_weight_s8(const tinyc_conv_params *p, int32_t k, const int8_t *x_q, float x_scale,
                                  int32_t x_zero, const float *dz, float lr, const float *w_scale,
                                  int32_t max_units, float *dw, int8_t *w_q, int8_t *residue, uint32_t *rng);
void tinyc_fc_train_weight_s8(int32_t rows, int32_t in, int32_t out, int32_t k, const int8_t *x_q, float x_scale,
                              int32_t x_zero, const float *dz, float lr, const float *w_scale, int32_t max_units,
                              float *dw, int8_t *w_q, int8_t *residue, uint32_t *rng);

/* ---- the float graph ----------------------------------------------------------
 *
 * tinyc train --precision float --engine c: the float model's forward and
 * backward, float32 activations, weights and gradients, the same layouts and
 * parameter records as above (only the geometry fields are read).  These
 * check the gradient rules against PyTorch through C; the device trains the
 * int8 graph with the kernels above.
 *
 * Forward: y = clamp(x (*) w + bias, lo, hi) (bias may be NULL; lo / hi may be
 * -inf / +inf), the sums in the order of the loops (taps, then channels). */
void tinyc_conv2d_f32(const tinyc_conv_params *p, const float *x, const float *w, const float *bias, float lo,
                      float hi, float *y);
void tinyc_fc_f32(int32_t rows, int32_t in, int32_t out, const float *x, const float *w, const float *bias,
                  float lo, float hi, float *y);
/* y = clamp(x, lo, hi); y may be x. */
void tinyc_clamp_f32(int32_t n, float lo, float hi, const float *x, float *y);
/* Average (divisor as tinyc_avg_pool_s8: in-bounds cells, or k_h * k_w with
 * count_include_pad) and max pool (in-bounds cells) of x [in_h][in_w][channels]. */
void tinyc_avg_pool_f32(const tinyc_pool_params *p, const float *x, float *y);
void tinyc_max_pool_f32(const tinyc_pool_params *p, const float *x, float *y);
/* Concatenation of a [outer][inner_a] and b [outer][inner_b] into
 * out [outer][inner_a + inner_b] (a Concat along any axis of two tensors). */
void tinyc_concat2_f32(int32_t outer, int32_t inner_a, int32_t inner_b, const float *a, const float *b, float *out);
/* Mean over the middle axis of [outer][reduce][inner]. */
void tinyc_mean_f32(int32_t outer, int32_t reduce, int32_t inner, const float *x, float *y);

/* Backward with float activations and weights: as the kernels above with
 * real values read directly (clamp bounds lo / hi real, -inf / +inf for none). */
void tinyc_clamp_grad_ff32(int32_t n, const float *dy, const float *y, float lo, float hi, float *dx);
void tinyc_conv2d_grad_input_ff32(const tinyc_conv_params *p, const float *dz, const float *w, float *dx);
void tinyc_conv2d_grad_weight_ff32(const tinyc_conv_params *p, int32_t k, const float *x, const float *dz,
                                   float *dw);
void tinyc_fc_grad_input_ff32(int32_t rows, int32_t in, int32_t out, const float *dz, const float *w, float *dx);
void tinyc_fc_grad_weight_ff32(int32_t rows, int32_t in, int32_t out, int32_t k, const float *x, const float *dz,
                               float *dw);
void tinyc_max_pool_grad_ff32(const tinyc_pool_params *p, const float *dy, const float *x, float *dx);
void tinyc_softmax_xent_ff32(int32_t n, const float *logits, int32_t label, float *loss, float *dlogits);
/* w[i] -= lr * g[i] for i < n. */
void tinyc_sgd_update_f32(int32_t n, float lr, const float *g, float *w);

#ifdef __cplusplus
}
#endif

#endif /* TINYC_TRAIN_H */
