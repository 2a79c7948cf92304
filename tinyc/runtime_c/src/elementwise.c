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
 * compiler tabulates them (table[x1 + 128] = s1, table[256 + x2 + 128] = s2,
 * or -s2 for a Sub: the same int32 values, and the kernel only adds) and each
 * element costs two loads, the sum and the output's rescale.
 *
 * add_table walks the two outer dimensions; a rows function runs the rows of
 * the third, each of `n` elements (a dense run of whole rows is one row).
 * What the rows need, read from the parameters once per call (a store through
 * out may alias *p, which would reload them for every element): */
typedef struct {
    const int32_t *t1, *t2;        /* the table's halves from their middles: t1[x1], t2[x2] */
    int32_t s1, s2;                /* element steps of in1 / in2 */
    int32_t a2, b2, rows, n;       /* row steps of in1 / in2, rows, elements per row */
    int32_t mult, shift, offset, lo, hi;   /* the output's requantization */
#if TINYC_DSP
    int32_t m2, npo, r;            /* ... in simd.h's class 0 form */
#endif
} add_rows;

/* Portable; on a DSP core the fallback of requantizations outside class 0. */
TINYC_FALLBACK static int8_t *add_rows_portable(const add_rows *w, const int8_t *x1, const int8_t *x2, int8_t *out)
{
    const int32_t *t1 = w->t1, *t2 = w->t2;
    const int32_t s1 = w->s1, s2 = w->s2, a2 = w->a2, b2 = w->b2, rows = w->rows, n = w->n;
    const int32_t mult = w->mult, shift = w->shift, offset = w->offset, lo = w->lo, hi = w->hi;
    int32_t i, k;
    for (i = 0; i < rows; ++i) {
        const int8_t *u = x1 + i * a2, *v = x2 + i * b2;
        for (k = n; k > 0; --k) {
            const int32_t raw = wrap_add32(t1[*u], t2[*v]);
            const int32_t y = tinyc_mbqm_smaller_than_one(raw, mult, shift) + offset;
            *out++ = (int8_t)tinyc_clamp32(y, lo, hi);
            u += s1;
            v += s2;
        }
    }
    return out;
}

#if TINYC_DSP
/* The rows on a DSP core, the output's rescale in simd.h's exact class 0 form
 * (SMMLAR, ADD, QADD, ASR), compiled for the full clamp and, in a project with
 * an Add whose activation narrows it (codegen/variants.py ADD_CLAMP), for
 * other bounds (without: add_rows_portable runs those, the same values). */
TINYC_ALWAYS_INLINE int8_t *add_rows_dsp(const add_rows *w, const int8_t *x1, const int8_t *x2, int8_t *out,
                                         int full)
{
    const int32_t *t1 = w->t1, *t2 = w->t2;
    const int32_t s1 = w->s1, s2 = w->s2, a2 = w->a2, b2 = w->b2, rows = w->rows, n = w->n;
    const int32_t m2 = w->m2, npo = w->npo, r = w->r, lo = w->lo, hi = w->hi;
    int32_t i, k;
    for (i = 0; i < rows; ++i) {
        const int8_t *u = x1 + i * a2, *v = x2 + i * b2;
        for (k = n; k > 0; --k) {
            int32_t y = tinyc_rq_value0(wrap_add32(t1[*u], t2[*v]), m2, npo, r);
            if (full) {
                y = __ssat(y, 8);
            } else {
                y = y < lo ? lo : y;
                y = y > hi ? hi : y;
            }
            *out++ = (int8_t)y;
            u += s1;
            v += s2;
        }
    }
    return out;
}

#if TINYC_MVE
/* Dense rows on Helium: 4 elements per step, their table entries fetched by
 * two gathers (the int8 values as signed word offsets from the tables'
 * middles: address arithmetic wraps), added, and requantized as a vector
 * (simd.h tinyc_mve_requantize, exact for every shift <= 0). */
static int8_t *add_rows_mve(const add_rows *w, const int8_t *x1, const int8_t *x2, int8_t *out)
{
    const int32x4_t mult = vdupq_n_s32(w->mult), shift = vdupq_n_s32(w->shift);
    const int32x4_t lo = vdupq_n_s32(w->lo), hi = vdupq_n_s32(w->hi);
    int32_t i, k;
    for (i = 0; i < w->rows; ++i) {
        const int8_t *u = x1 + i * w->a2, *v = x2 + i * w->b2;
        for (k = 0; k + 4 <= w->n; k += 4, out += 4) {
            const uint32x4_t o1 = vreinterpretq_u32_s32(vldrbq_s32(u + k));
            const uint32x4_t o2 = vreinterpretq_u32_s32(vldrbq_s32(v + k));
            const int32x4_t raw = vaddq_s32(vldrwq_gather_shifted_offset_s32(w->t1, o1),
                                            vldrwq_gather_shifted_offset_s32(w->t2, o2));
            vstrbq_s32(out, tinyc_mve_requantize(raw, mult, shift, w->offset, lo, hi));
        }
        if (k < w->n) {  /* the last 1-3 elements */
            const mve_pred16_t m = vctp32q((uint32_t)(w->n - k));
            const uint32x4_t o1 = vreinterpretq_u32_s32(vldrbq_z_s32(u + k, m));
            const uint32x4_t o2 = vreinterpretq_u32_s32(vldrbq_z_s32(v + k, m));
            const int32x4_t raw = vaddq_s32(vldrwq_gather_shifted_offset_z_s32(w->t1, o1, m),
                                            vldrwq_gather_shifted_offset_z_s32(w->t2, o2, m));
            vstrbq_p_s32(out, tinyc_mve_requantize(raw, mult, shift, w->offset, lo, hi), m);
            out += w->n - k;
        }
    }
    return out;
}
#endif

/* (A function of its own: the row loops keep their values in registers.) */
__attribute__((noinline)) static int8_t *add_rows_fast(const add_rows *w, const int8_t *x1, const int8_t *x2,
                                                       int8_t *out)
{
    if (!TINYC_USES(ADD_CLAMP) || (w->lo == -128 && w->hi == 127)) {
        return add_rows_dsp(w, x1, x2, out, 1);
    }
    return add_rows_dsp(w, x1, x2, out, 0);
}
#endif

static void add_table(const tinyc_add_params *p, const int8_t *in1, const int8_t *in2, const int32_t *table,
                      int8_t *out)
{
    const int32_t *n = p->out_shape;
    const int32_t *a = p->in1_strides;
    const int32_t *b = p->in2_strides;
    add_rows w;
    int32_t i0, i1;
    int fast = 0;
    w.t1 = table + 128;
    w.t2 = table + 256 + 128;
    w.s1 = a[3];
    w.s2 = b[3];
    w.a2 = a[2];
    w.b2 = b[2];
    w.rows = n[2];
    w.n = n[3];
    w.mult = p->out_mult;
    w.shift = p->out_shift;
    w.offset = p->out_offset;
    w.lo = p->act_min;
    w.hi = p->act_max;
    /* a dense innermost run spanning whole rows: one row for all of them */
    if (a[3] == 1 && b[3] == 1 && a[2] == n[3] && b[2] == n[3]) {
        w.n *= n[2];
        w.rows = 1;
    }
#if TINYC_DSP
    /* simd.h's class 0 requantization equals MultiplyByQuantizedMultiplierSmallerThanOneExp
     * + offset + clamp under these bounds */
    fast = tinyc_rq_layer_ok(&w.mult, &w.shift, 1, w.offset, w.lo, w.hi) &&
           tinyc_rq_fast(w.mult, w.shift, w.offset, &w.m2, &w.npo, &w.r) &&
           (TINYC_USES(ADD_CLAMP) || (w.lo == -128 && w.hi == 127));
#endif
    for (i0 = 0; i0 < n[0]; ++i0) {
        for (i1 = 0; i1 < n[1]; ++i1) {
            const int8_t *x1 = in1 + i0 * a[0] + i1 * a[1];
            const int8_t *x2 = in2 + i0 * b[0] + i1 * b[1];
#if TINYC_MVE
            if (w.s1 == 1 && w.s2 == 1) {
                out = add_rows_mve(&w, x1, x2, out);
                continue;
            }
#endif
#if TINYC_DSP
            if (fast) {
                out = add_rows_fast(&w, x1, x2, out);
                continue;
            }
#endif
            out = add_rows_portable(&w, x1, x2, out);
        }
    }
    (void)fast;
}

/* Without a table: TFLM's rescaling of each element.  In a project whose every
 * Add has its table (codegen/variants.py: ADD_PLAIN 0) on a DSP core, only the
 * fallback of a call without one: compiled for size. */
#if TINYC_USES(ADD_TABLE) && !TINYC_USES(ADD_PLAIN)
TINYC_FALLBACK
#endif
static void add_plain(const tinyc_add_params *p, const int8_t *in1, const int8_t *in2, int8_t *out)
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

void tinyc_add_s8(const tinyc_add_params *p, const int8_t *in1, const int8_t *in2, const int32_t *table,
                  int8_t *out)
{
    if (TINYC_USES(ADD_TABLE) && table != 0) {
        add_table(p, in1, in2, table, out);
    } else {
        add_plain(p, in1, in2, out);
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
