/* Broadcasting int8 Add / Sub / Mul: TFLM's reference_integer_ops AddFunc /
 * SubFunc / MulElementwise over a 4-D index space, inputs addressed through
 * per-dimension strides (0 along a broadcast dimension).
 * Executable spec: tinyc/kernels/elementwise.py. */
#include "tinyc/kernels.h"
#include "tinyc/fixedpoint.h"

/* int32 add / subtract with two's-complement wrap-around.  The numpy spec
 * wraps; in C, signed overflow would be undefined, so go through uint32 (the
 * conversion back is implementation-defined, modular on every target). */
static inline int32_t wrap_add32(int32_t a, int32_t b)
{
    return (int32_t)((uint32_t)a + (uint32_t)b);
}

static inline int32_t wrap_sub32(int32_t a, int32_t b)
{
    return (int32_t)((uint32_t)a - (uint32_t)b);
}

static inline int8_t add_one(const tinyc_add_params *p, int32_t x1, int32_t x2)
{
    /* (x + offset) * 2^left_shift: |x + offset| <= 255 and left_shift = 20, so
     * this never wraps in practice; the uint32 shift keeps it defined anyway. */
    const int32_t v1 = (int32_t)((uint32_t)(x1 + p->in1_offset) << p->left_shift);
    const int32_t v2 = (int32_t)((uint32_t)(x2 + p->in2_offset) << p->left_shift);
    const int32_t s1 = tinyc_mbqm_smaller_than_one(v1, p->in1_mult, p->in1_shift);
    const int32_t s2 = tinyc_mbqm_smaller_than_one(v2, p->in2_mult, p->in2_shift);
    const int32_t raw = p->subtract ? wrap_sub32(s1, s2) : wrap_add32(s1, s2);
    const int32_t out = tinyc_mbqm_smaller_than_one(raw, p->out_mult, p->out_shift) + p->out_offset;
    return (int8_t)tinyc_clamp32(out, p->act_min, p->act_max);
}

void tinyc_add_s8(const tinyc_add_params *p, const int8_t *in1, const int8_t *in2, int8_t *out)
{
    const int32_t *n = p->out_shape;
    const int32_t *a = p->in1_strides;
    const int32_t *b = p->in2_strides;
    int32_t i0, i1, i2, i3;
    for (i0 = 0; i0 < n[0]; ++i0) {
        for (i1 = 0; i1 < n[1]; ++i1) {
            for (i2 = 0; i2 < n[2]; ++i2) {
                const int8_t *x1 = in1 + i0 * a[0] + i1 * a[1] + i2 * a[2];
                const int8_t *x2 = in2 + i0 * b[0] + i1 * b[1] + i2 * b[2];
                for (i3 = 0; i3 < n[3]; ++i3) {
                    *out++ = add_one(p, x1[i3 * a[3]], x2[i3 * b[3]]);
                }
            }
        }
    }
}

static inline int8_t mul_one(const tinyc_mul_params *p, int32_t x1, int32_t x2)
{
    /* |product| <= 255 * 255: no overflow. */
    const int32_t prod = (x1 + p->in1_offset) * (x2 + p->in2_offset);
    const int32_t out = tinyc_mbqm(prod, p->out_mult, p->out_shift) + p->out_offset;
    return (int8_t)tinyc_clamp32(out, p->act_min, p->act_max);
}

void tinyc_mul_s8(const tinyc_mul_params *p, const int8_t *in1, const int8_t *in2, int8_t *out)
{
    const int32_t *n = p->out_shape;
    const int32_t *a = p->in1_strides;
    const int32_t *b = p->in2_strides;
    int32_t i0, i1, i2, i3;
    for (i0 = 0; i0 < n[0]; ++i0) {
        for (i1 = 0; i1 < n[1]; ++i1) {
            for (i2 = 0; i2 < n[2]; ++i2) {
                const int8_t *x1 = in1 + i0 * a[0] + i1 * a[1] + i2 * a[2];
                const int8_t *x2 = in2 + i0 * b[0] + i1 * b[1] + i2 * b[2];
                for (i3 = 0; i3 < n[3]; ++i3) {
                    *out++ = mul_one(p, x1[i3 * a[3]], x2[i3 * b[3]]);
                }
            }
        }
    }
}

void tinyc_minmax_s8(const tinyc_minmax_params *p, const int8_t *in1, const int8_t *in2, int8_t *out)
{
    const int32_t *n = p->out_shape;
    const int32_t *a = p->in1_strides;
    const int32_t *b = p->in2_strides;
    int32_t i0, i1, i2, i3;
    for (i0 = 0; i0 < n[0]; ++i0) {
        for (i1 = 0; i1 < n[1]; ++i1) {
            for (i2 = 0; i2 < n[2]; ++i2) {
                const int8_t *x1 = in1 + i0 * a[0] + i1 * a[1] + i2 * a[2];
                const int8_t *x2 = in2 + i0 * b[0] + i1 * b[1] + i2 * b[2];
                for (i3 = 0; i3 < n[3]; ++i3) {
                    const int8_t u = x1[i3 * a[3]], v = x2[i3 * b[3]];
                    *out++ = p->maximum ? (u > v ? u : v) : (u < v ? u : v);
                }
            }
        }
    }
}
