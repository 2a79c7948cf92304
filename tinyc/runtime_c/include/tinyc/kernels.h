/* tinyc int8 kernels: portable C99, no allocation, no float, no libc calls.
 *
 * Each kernel mirrors one function of the numpy reference in tinyc/kernels/
 * (same name without the "tinyc_" prefix, same parameter struct fields); the
 * numpy function is the executable specification and the unit tests compare
 * the two bit for bit.  All parameters (multipliers, shifts, offsets, clamp
 * bounds) are computed by the compiler, so the kernels only do integer work.
 *
 * Tensors are NHWC with batch 1 (the compiler folds a batch into the outer
 * dimensions where an op allows it), int8, contiguous.  Conventions:
 *   in_offset  = -(input zero point)  (added to every input value)
 *   out_offset = output zero point    (added after requantization)
 *   act_min / act_max: int8 clamp bounds, fused activations included.
 *   mult / shift: TFLite's Q31 multiplier and signed shift (shift > 0 is a
 *   left shift), applied by tinyc_mbqm() in fixedpoint.h.
 *
 * Parameter structs: a generated model stores one const struct per distinct
 * layer in flash, so in the structs models have many of (convolution, mean,
 * add, mul) the fields whose values are small by nature are narrow: one
 * axis's size, kernel sizes, strides, dilations and paddings uint16_t /
 * int16_t, input offsets (up to 128) int16_t, output zero points, clamp
 * bounds, shifts and flags int8_t, a depthwise channel multiplier uint8_t;
 * multipliers, element strides and element counts stay int32_t.  The int32
 * fields come first, then the 16-bit, then the 8-bit ones, so the structs
 * pack without holes.  The compiler refuses a layer whose value does not fit
 * (tinyc/kernels/params.py c_narrow holds the same types); the kernels read
 * the fields into int32 locals.
 */
#ifndef TINYC_KERNELS_H
#define TINYC_KERNELS_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- convolution ------------------------------------------------------- */

typedef struct {
    uint16_t in_h, in_w, in_c;
    uint16_t out_h, out_w, out_c;
    uint16_t k_h, k_w;
    uint16_t stride_h, stride_w;
    uint16_t dil_h, dil_w;
    int16_t pad_t, pad_l;          /* bottom/right padding follows from the shapes */
    uint16_t groups;               /* conv2d: in_c / groups channels per group; depthwise: unused (1) */
    int16_t in_offset;
    uint8_t depth_multiplier;      /* depthwise: out_c = in_c * depth_multiplier; conv2d: unused (1) */
    int8_t out_offset;
    int8_t act_min, act_max;
} tinyc_conv_params;

/* Scratch.  The DSP paths (TINYC_DSP) of the convolutions work through a
 * caller-given buffer, as CMSIS-NN's do: pre-extended weights, im2col windows,
 * packed weight tables.  tinyc plans it in the arena beside the tensors (the
 * kernel descriptors in tinyc/kernels/__init__.py hold the same size rules), so
 * the kernels keep no buffers on the stack.  A kernel takes its fast path only
 * when scratch_bytes reaches what NAME_scratch_bytes(p) returns; with less (0 and
 * NULL are fine) it computes the same values on a slower path.  Without
 * TINYC_DSP the sizes are 0 (the in-place depthwise's plane apart). */

/* weights [out_c][k_h][k_w][in_c / groups]; bias int32 [out_c] or NULL;
 * mult / shift [out_c] (per output channel).  Padded taps contribute 0
 * (i.e. the input zero point).  acc = bias + sum((x + in_offset) * w);
 * out = clamp(mbqm(acc, mult[c], shift[c]) + out_offset, act_min, act_max). */
void tinyc_conv2d_s8(const tinyc_conv_params *p, const int8_t *in, const int8_t *w,
                     const int32_t *bias, const int32_t *mult, const int32_t *shift, int8_t *out,
                     void *scratch, int32_t scratch_bytes);
int32_t tinyc_conv2d_s8_scratch_bytes(const tinyc_conv_params *p);

/* The same values for one group, with the weights in tinyc's wide layout
 * (int16 pairs: kernels/conv.py widen) and bias = bias + in_offset * sum(w)
 * (kernels/conv.py fold_bias; never NULL).  The compiler picks it on cores with
 * the DSP extension (passes/widen.py). */
void tinyc_conv2d_wide_s8(const tinyc_conv_params *p, const int8_t *in, const int32_t *w,
                          const int32_t *bias, const int32_t *mult, const int32_t *shift, int8_t *out,
                          void *scratch, int32_t scratch_bytes);
int32_t tinyc_conv2d_wide_s8_scratch_bytes(const tinyc_conv_params *p);

/* The same values for one group, with the weights in tinyc's Helium layout
 * (int8, 4 output channels x 16 window values per chunk: kernels/conv.py
 * mve_pack) and the folded bias (as tinyc_conv2d_wide_s8).  The compiler picks
 * it on cores with the M-profile Vector Extension (mve.c; elsewhere it runs a
 * plain loop). */
void tinyc_conv2d_mve_s8(const tinyc_conv_params *p, const int8_t *in, const int8_t *w,
                         const int32_t *bias, const int32_t *mult, const int32_t *shift, int8_t *out,
                         void *scratch, int32_t scratch_bytes);
int32_t tinyc_conv2d_mve_s8_scratch_bytes(const tinyc_conv_params *p);

/* The same arithmetic for k_h = k_w = 1, no padding, groups = 1, any stride: a
 * matrix product over channels, the fast path for pointwise convolutions. */
void tinyc_conv2d_1x1_s8(const tinyc_conv_params *p, const int8_t *in, const int8_t *w,
                         const int32_t *bias, const int32_t *mult, const int32_t *shift, int8_t *out,
                         void *scratch, int32_t scratch_bytes);
int32_t tinyc_conv2d_1x1_s8_scratch_bytes(const tinyc_conv_params *p);

/* Depthwise: weights [out_c][k_h][k_w] (the IR's [out_c][k_h][k_w][1]); output
 * channel o reads input channel o / depth_multiplier. */
void tinyc_depthwise_conv2d_s8(const tinyc_conv_params *p, const int8_t *in, const int8_t *w,
                               const int32_t *bias, const int32_t *mult, const int32_t *shift, int8_t *out,
                               void *scratch, int32_t scratch_bytes);
int32_t tinyc_depthwise_conv2d_s8_scratch_bytes(const tinyc_conv_params *p);

/* In-place depthwise (TinyEngine / MCUNet): the output overwrites the input.
 * On entry buf holds the input [in_h][in_w][C]; on exit buf[0 .. out_h*out_w*C)
 * holds exactly what tinyc_depthwise_conv2d_s8 writes to a separate output (bytes
 * of buf past the output are garbage).  Works channel by channel through scratch,
 * which starts with one padded plane of plane_h * plane_w bytes (required), where
 *   plane_h = (out_h - 1) * stride_h + (k_h - 1) * dil_h + 1, plane_w likewise;
 * the DSP path's weight table follows it (tinyc_depthwise_conv2d_inplace_s8_scratch_bytes
 * gives both); scratch must not overlap buf.  Preconditions: depth_multiplier == 1 and
 * out_c == in_c (weights [C][k_h][k_w]); out_h * out_w <= in_h * in_w (the writes
 * stay inside the input's buffer; in general buf needs max(in, out) pixels * C
 * bytes); -in_offset (the input zero point) fits in int8, as padding is stored
 * as that value. */
void tinyc_depthwise_conv2d_inplace_s8(const tinyc_conv_params *p, int8_t *buf, const int8_t *w,
                                       const int32_t *bias, const int32_t *mult, const int32_t *shift,
                                       void *scratch, int32_t scratch_bytes);
int32_t tinyc_depthwise_conv2d_inplace_s8_scratch_bytes(const tinyc_conv_params *p);

/* Depthwise with depth multiplier 1 on Helium (mve.c): the weights packed per
 * group of 4 channels ([C / 4][k_h * k_w][4] int8: kernels/conv.py mve_pack_dw),
 * the bias folded with the input offset and padded to 4 channels; the scratch
 * holds one group's padded plane, plane_h * plane_w * 4 bytes (required, as
 * tinyc_depthwise_conv2d_mve_s8_scratch_bytes says).  The in-place variant
 * overwrites its input under tinyc_depthwise_conv2d_inplace_s8's conditions.
 * Without Helium the same algorithm runs a plain loop. */
void tinyc_depthwise_conv2d_mve_s8(const tinyc_conv_params *p, const int8_t *in, const int8_t *w,
                                   const int32_t *bias, const int32_t *mult, const int32_t *shift, int8_t *out,
                                   void *scratch, int32_t scratch_bytes);
int32_t tinyc_depthwise_conv2d_mve_s8_scratch_bytes(const tinyc_conv_params *p);
void tinyc_depthwise_conv2d_inplace_mve_s8(const tinyc_conv_params *p, int8_t *buf, const int8_t *w,
                                           const int32_t *bias, const int32_t *mult, const int32_t *shift,
                                           void *scratch, int32_t scratch_bytes);
int32_t tinyc_depthwise_conv2d_inplace_mve_s8_scratch_bytes(const tinyc_conv_params *p);

/* ---- fully connected --------------------------------------------------- */

typedef struct {
    int32_t batches, in_features, out_features;
    int32_t in_offset, out_offset;
    int32_t act_min, act_max;
    int32_t per_channel;           /* 0: mult[0] / shift[0] for all outputs; 1: per output */
} tinyc_fc_params;

/* weights [out_features][in_features]; bias int32 [out_features] or NULL.
 * Scratch (cores without the DSP extension): a row as int16 with the input
 * offset added; any size gives the same values. */
void tinyc_fully_connected_s8(const tinyc_fc_params *p, const int8_t *in, const int8_t *w,
                              const int32_t *bias, const int32_t *mult, const int32_t *shift, int8_t *out,
                              void *scratch, int32_t scratch_bytes);
int32_t tinyc_fully_connected_s8_scratch_bytes(const tinyc_fc_params *p);

/* The same values with wide weights and the folded bias (as tinyc_conv2d_wide_s8). */
void tinyc_fully_connected_wide_s8(const tinyc_fc_params *p, const int8_t *in, const int32_t *w,
                                   const int32_t *bias, const int32_t *mult, const int32_t *shift, int8_t *out,
                                   void *scratch, int32_t scratch_bytes);
int32_t tinyc_fully_connected_wide_s8_scratch_bytes(const tinyc_fc_params *p);

/* The same values with Helium weights and the folded bias (as tinyc_conv2d_mve_s8). */
void tinyc_fully_connected_mve_s8(const tinyc_fc_params *p, const int8_t *in, const int8_t *w,
                                  const int32_t *bias, const int32_t *mult, const int32_t *shift, int8_t *out);

/* ---- pooling and reductions -------------------------------------------- */

typedef struct {
    int32_t in_h, in_w, channels;
    int32_t out_h, out_w;
    int32_t k_h, k_w;
    int32_t stride_h, stride_w;
    int32_t pad_t, pad_l;
    int32_t count_include_pad;     /* avg: padded taps count, with value pad_value */
    int32_t pad_value;             /* the input zero point */
    int32_t act_min, act_max;
    int32_t dil_h, dil_w;          /* taps dil apart (1: TFLite's pools) */
} tinyc_pool_params;

/* Max over the valid (unpadded) taps, then clamp.  Input and output share
 * scale and zero point.  As in TFLM the running max starts at -128, so a
 * window wholly in the padding gives clamp(-128).  count_include_pad and
 * pad_value are not read.  Bottom / right padding, here and for the average,
 * is whatever the last window needs (pad_t / pad_l plus the output shape). */
void tinyc_max_pool_s8(const tinyc_pool_params *p, const int8_t *in, int8_t *out);

/* TFLite's int8 average: sum of the raw int8 values over the taps, divided by
 * the tap count rounding half away from zero, then clamp.  Input and output
 * share scale and zero point.  count_include_pad == 0: the taps are the
 * in-bounds ones (TFLM); == 1: every tap of the window counts (count =
 * k_h * k_w) and each out-of-bounds tap adds pad_value.  A window with no tap
 * counted (TFLM would refuse it) gives clamp(0). */
void tinyc_avg_pool_s8(const tinyc_pool_params *p, const int8_t *in, int8_t *out);

typedef struct {
    int32_t outer, reduce, inner;  /* input viewed as [outer][reduce][inner] */
    int32_t mult;                  /* already folded with 1 / reduce, as shift */
    int8_t in_zero_point, out_offset;
    int8_t shift;
} tinyc_mean_params;

/* TFLM int8 MEAN (QuantizedMeanOrSum): sum = sum of raw values over reduce;
 * out = clamp(mbqm(sum - in_zero_point * reduce, mult, shift) + out_offset, -128, 127). */
void tinyc_mean_s8(const tinyc_mean_params *p, const int8_t *in, int8_t *out);

/* ---- elementwise arithmetic with 4-D broadcasting ----------------------- */

/* out has shape out_shape[0..3]; input k element (i0,i1,i2,i3) is at
 * sum(i_d * ink_strides[d]) (stride 0 along a broadcast dimension). */
typedef struct {
    int32_t out_shape[4];
    int32_t in1_strides[4];
    int32_t in2_strides[4];
    int32_t in1_mult, in2_mult, out_mult;
    int16_t in1_offset, in2_offset;
    int8_t out_offset;
    int8_t left_shift;             /* 20 */
    int8_t in1_shift, in2_shift;   /* shifts <= 0, applied with the mults as TFLite's
                                      MultiplyByQuantizedMultiplierSmallerThanOneExp */
    int8_t out_shift;
    int8_t subtract;               /* 1: in1 - in2 (SUB), 0: in1 + in2 (ADD) */
    int8_t act_min, act_max;
} tinyc_add_params;

/* table: NULL, or tinyc's 512 precomputed int32 values (kernels/elementwise.py
 * add_table): each input's rescaled value, in1's for x1 = -128..127, then in2's
 * (negated for a SUB: the kernel adds the two entries). */
void tinyc_add_s8(const tinyc_add_params *p, const int8_t *in1, const int8_t *in2, const int32_t *table,
                  int8_t *out);

typedef struct {
    int32_t out_shape[4];
    int32_t in1_strides[4];
    int32_t in2_strides[4];
    int32_t out_mult;
    int16_t in1_offset, in2_offset;
    int8_t out_offset;
    int8_t out_shift;
    int8_t act_min, act_max;
} tinyc_mul_params;

/* out = clamp(mbqm((x1 + in1_offset) * (x2 + in2_offset), out_mult, out_shift) + out_offset). */
void tinyc_mul_s8(const tinyc_mul_params *p, const int8_t *in1, const int8_t *in2, int8_t *out);

/* ---- activations -------------------------------------------------------- */

typedef struct {
    int32_t size;
    int32_t in_offset, out_offset;
    int32_t mult, shift;
    int32_t act_min, act_max;
} tinyc_requantize_params;

/* out = clamp(mbqm(x + in_offset, mult, shift) + out_offset, act_min, act_max):
 * TFLM's int8 -> int8 QUANTIZE, and a standalone ReLU-family clamp whose input
 * and output parameters differ.  May run in place (out == in). */
void tinyc_requantize_s8(const tinyc_requantize_params *p, const int8_t *in, int8_t *out);

/* out = clamp(x, lo, hi) (same parameters on both sides).  May run in place. */
void tinyc_clamp_s8(int32_t size, int32_t lo, int32_t hi, const int8_t *in, int8_t *out);

typedef struct {
    int32_t out_shape[4];
    int32_t in1_strides[4], in2_strides[4];
    int32_t maximum;               /* 1: MAXIMUM, 0: MINIMUM */
} tinyc_minmax_params;

/* TFLM int8 MAXIMUM / MINIMUM with stride broadcasting (inputs and output share
 * scale and zero point). */
void tinyc_minmax_s8(const tinyc_minmax_params *p, const int8_t *in1, const int8_t *in2, int8_t *out);

typedef struct {
    int32_t rows, depth;           /* softmax over the last dimension (depth) */
    int32_t input_multiplier, input_left_shift, diff_min;
} tinyc_softmax_params;

/* TFLite reference int8 softmax; output scale 1/256, zero point -128. */
void tinyc_softmax_s8(const tinyc_softmax_params *p, const int8_t *in, int8_t *out);

typedef struct {
    int32_t size;
    int32_t input_zero_point, input_range_radius;
    int32_t input_multiplier, input_left_shift;
} tinyc_logistic_params;

/* TFLM int8 LOGISTIC (gemmlowp fixed point); output scale 1/256, zero point -128. */
void tinyc_logistic_s8(const tinyc_logistic_params *p, const int8_t *in, int8_t *out);

typedef struct {
    int32_t size;
    int32_t input_zero_point, output_zero_point;
    int32_t reluish_multiplier_fixedpoint_int16, reluish_multiplier_exponent;
    int32_t output_multiplier_fixedpoint_int16, output_multiplier_exponent;
} tinyc_hard_swish_params;

/* TFLite reference int8 HARD_SWISH (int16 fixed point). */
void tinyc_hard_swish_s8(const tinyc_hard_swish_params *p, const int8_t *in, int8_t *out);

/* TFLM int8 TANH (gemmlowp fixed point, the logistic's parameters); output
 * scale 1/128, zero point 0.  May run in place. */
void tinyc_tanh_s8(const tinyc_logistic_params *p, const int8_t *in, int8_t *out);

typedef struct {
    int32_t size;
    int32_t in_zero_point, out_zero_point;
    int32_t identity_mult, identity_shift;
    int32_t alpha_mult, alpha_shift;
} tinyc_leaky_relu_params;

/* TFLM int8 LEAKY_RELU: one multiplier at or above the input zero point, one
 * (alpha's) below.  May run in place. */
void tinyc_leaky_relu_s8(const tinyc_leaky_relu_params *p, const int8_t *in, int8_t *out);

typedef struct {
    int32_t size;
} tinyc_lut_params;

/* out[i] = table[in[i] + 128]: an int8 function tabulated at compile time
 * (HardSigmoid, GELU, SiLU, ...).  May run in place. */
void tinyc_lut_s8(const tinyc_lut_params *p, const int8_t *in, const int8_t *table, int8_t *out);

typedef struct {
    int32_t rows, depth;           /* normalize each row of depth values */
    int32_t in_zero_point, out_zero_point;
    int32_t eps_hi, eps_lo;        /* epsilon * depth^3 / s_in^2 as (hi << 31) | lo */
    int32_t out_shift;
} tinyc_layer_norm_params;

/* tinyc's integer layer normalization (spec: tinyc/kernels/norm.py); gamma_q
 * and beta_q are per-position int32 vectors in the output's scale.  May run in
 * place. */
void tinyc_layer_norm_s8(const tinyc_layer_norm_params *p, const int8_t *in, const int32_t *gamma_q,
                         const int32_t *beta_q, int8_t *out);

typedef struct {
    int32_t batches, rows, depth, cols;       /* [batches][rows][depth] x [batches][depth][cols] */
    int32_t a_batch_stride, b_batch_stride;   /* 0: one matrix for every batch */
    int32_t a_offset, b_offset, out_offset;
    int32_t out_mult, out_shift;
    int32_t act_min, act_max;
} tinyc_matmul_params;

/* TFLM int8 BATCH_MATMUL of two activations (attention scores and context). */
void tinyc_matmul_s8(const tinyc_matmul_params *p, const int8_t *a, const int8_t *b, int8_t *out);

/* ---- data movement ------------------------------------------------------ */

/* Concatenate n inputs along one axis: input k is viewed as [outer][inner_k]
 * and the output as [outer][sum inner_k].  All share scale and zero point. */
void tinyc_concat_s8(int32_t outer, int32_t n, const int8_t *const *ins, const int32_t *inner,
                     int8_t *out);

typedef struct {
    int32_t in_shape[4];
    int32_t pad_before[4];
    int32_t pad_after[4];
    int32_t pad_value;             /* the zero point */
} tinyc_pad_params;

void tinyc_pad_s8(const tinyc_pad_params *p, const int8_t *in, int8_t *out);

typedef struct {
    int32_t in_h, in_w, channels;
    int32_t out_h, out_w;
} tinyc_resize_params;

/* Nearest neighbour, TFLite RESIZE_NEAREST_NEIGHBOR with align_corners and
 * half_pixel_centers false: source row = min(floor(y * in_h / out_h), in_h - 1). */
void tinyc_resize_nearest_s8(const tinyc_resize_params *p, const int8_t *in, int8_t *out);

typedef struct {
    int32_t in_h, in_w, channels;
    int32_t out_h, out_w;
    int32_t scale_h_10, scale_w_10; /* input / output size in Q10 */
    int32_t half_pixel;
} tinyc_resize_bilinear_params;

/* TFLite's integer RESIZE_BILINEAR (reference ResizeBilinearInteger): Q10
 * source coordinates, the four neighbours weighted in Q20, rounded half away
 * from zero. */
void tinyc_resize_bilinear_s8(const tinyc_resize_bilinear_params *p, const int8_t *in, int8_t *out);

typedef struct {
    int32_t out_shape[6];
    int32_t in_strides[6];         /* in elements; 0 repeats an axis, < 0 walks it backwards */
    int32_t in_start;
} tinyc_strided_copy_params;

/* out[i0]..[i5] = in[in_start + sum(i_d * in_strides[d])]: a Transpose, Slice,
 * Expand or Gather of evenly spaced indices. */
void tinyc_strided_copy_s8(const tinyc_strided_copy_params *p, const int8_t *in, int8_t *out);

/* Byte copy (a Reshape whose output the planner could not alias). */
void tinyc_copy_s8(int32_t size, const int8_t *in, int8_t *out);

/* out[i] = (int8_t)value for i < size: poisons buffers in debug builds. */
void tinyc_fill_s8(int32_t size, int32_t value, int8_t *out);

#ifdef __cplusplus
}
#endif

#endif /* TINYC_KERNELS_H */
