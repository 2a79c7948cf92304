/* Broadcasting int8 Add / Sub / Mul: TFLM's reference_integer_ops AddFunc /
 * SubFunc / MulElementwise over a 4-D index space, inputs addressed through
 * per-dimension strides (0 along a broadcast dimension).
 * Executable spec: tinyc/kernels/elementwise.py. */
#include "tinyc/kernels.h"
#include "tinyc/fixedpoint.h"
#include "tinyc/simd.h"

#ifndef TINYC_ALWAYS_INLINE
#define TINYC_ALWAYS_INLINE static inline
#endif

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

/* The table form: s1 and s2 above depend on one int8 value each, so the
 * compiler tabulates them (table[x1 + 128], table[256 + x2 + 128]: the same
 * int32 values) and each element costs two loads, the sum and the output's
 * rescale. */
static void add_table_portable(const tinyc_add_params *p, const int8_t *x1, const int8_t *x2, const int32_t *t1,
                               const int32_t *t2, int8_t *out, int32_t n)
{
    const int32_t s1 = p->in1_strides[3], s2 = p->in2_strides[3];
    while (n-- > 0) {
        const int32_t raw = p->subtract ? wrap_sub32(t1[*x1], t2[*x2]) : wrap_add32(t1[*x1], t2[*x2]);
        const int32_t y = tinyc_mbqm_smaller_than_one(raw, p->out_mult, p->out_shift) + p->out_offset;
        *out++ = (int8_t)tinyc_clamp32(y, p->act_min, p->act_max);
        x1 += s1;
        x2 += s2;
    }
}

#if TINYC_DSP
/* One row on a DSP core, the output's rescale in simd.h's exact class 0 form
 * (SMMLAR, ADD, QADD, ASR), compiled for each (subtract, full clamp) pair. */
TINYC_ALWAYS_INLINE void add_table_row_dsp(const int8_t *x1, const int8_t *x2, int32_t s1, int32_t s2,
                                           const int32_t *t1, const int32_t *t2, int8_t *out, int32_t n,
                                           const tinyc_rq *q, int32_t lo, int32_t hi, int subtract, int full)
{
    const int32_t m2 = q->m2, npo = q->npo, r = q->r;
    while (n-- > 0) {
        const int32_t raw = subtract ? wrap_sub32(t1[*x1], t2[*x2]) : wrap_add32(t1[*x1], t2[*x2]);
        int32_t y = tinyc_rq_value0(raw, m2, npo, r);
        if (full) {
            y = __ssat(y, 8);
        } else {
            y = y < lo ? lo : y;
            y = y > hi ? hi : y;
        }
        *out++ = (int8_t)y;
        x1 += s1;
        x2 += s2;
    }
}

static void add_table_row_fast(const int8_t *x1, const int8_t *x2, int32_t s1, int32_t s2, const int32_t *t1,
                               const int32_t *t2, int8_t *out, int32_t n, const tinyc_rq *q, int32_t lo, int32_t hi,
                               int subtract)
{
    const int full = lo == -128 && hi == 127;
    if (subtract) {
        if (full) {
            add_table_row_dsp(x1, x2, s1, s2, t1, t2, out, n, q, lo, hi, 1, 1);
        } else {
            add_table_row_dsp(x1, x2, s1, s2, t1, t2, out, n, q, lo, hi, 1, 0);
        }
    } else if (full) {
        add_table_row_dsp(x1, x2, s1, s2, t1, t2, out, n, q, lo, hi, 0, 1);
    } else {
        add_table_row_dsp(x1, x2, s1, s2, t1, t2, out, n, q, lo, hi, 0, 0);
    }
}
#endif

static void add_table(const tinyc_add_params *p, const int8_t *in1, const int8_t *in2, const int32_t *table,
                      int8_t *out)
{
    const int32_t *n = p->out_shape;
    const int32_t *a = p->in1_strides;
    const int32_t *b = p->in2_strides;
    const int32_t *t1 = table + 128;
    const int32_t *t2 = table + 256 + 128;
    int32_t i0, i1, i2, row = n[3];
    int fast = 0;
#if TINYC_DSP
    tinyc_rq q;
    q.m2 = q.npo = q.r = 0;
    /* simd.h's class 0 requantization equals MultiplyByQuantizedMultiplierSmallerThanOneExp
     * + offset + clamp under these bounds */
    fast = tinyc_rq_layer_ok(&p->out_mult, &p->out_shift, 1, p->out_offset, p->act_min, p->act_max) &&
           tinyc_rq_fast(p->out_mult, p->out_shift, p->out_offset, &q.m2, &q.npo, &q.r);
#endif
    /* a dense innermost run spanning whole rows: one call for all of them */
    int32_t rows2 = n[2];
    if (a[3] == 1 && b[3] == 1 && a[2] == n[3] && b[2] == n[3]) {
        row *= n[2];
        rows2 = 1;
    }
    for (i0 = 0; i0 < n[0]; ++i0) {
        for (i1 = 0; i1 < n[1]; ++i1) {
            for (i2 = 0; i2 < rows2; ++i2) {
                const int8_t *x1 = in1 + i0 * a[0] + i1 * a[1] + i2 * a[2];
                const int8_t *x2 = in2 + i0 * b[0] + i1 * b[1] + i2 * b[2];
#if TINYC_DSP
                if (fast) {
                    add_table_row_fast(x1, x2, a[3], b[3], t1, t2, out, row, &q, p->act_min, p->act_max,
                                       p->subtract);
                    out += row;
                    continue;
                }
#endif
                add_table_portable(p, x1, x2, t1, t2, out, row);
                out += row;
            }
        }
    }
    (void)fast;
}

void tinyc_add_s8(const tinyc_add_params *p, const int8_t *in1, const int8_t *in2, const int32_t *table,
                  int8_t *out)
{
    const int32_t *n = p->out_shape;
    const int32_t *a = p->in1_strides;
    const int32_t *b = p->in2_strides;
    int32_t i0, i1, i2, i3;
    if (TINYC_USES(ADD_TABLE) && table != 0) {
        add_table(p, in1, in2, table, out);
        return;
    }
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
