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
#include "tinyc/wide.h"

/* xs: room for a row as int16 with the input offset added (the scratch, on
 * cores without the DSP extension), or 0. */
TINYC_FALLBACK static void fc_portable(const tinyc_fc_params *p, const int8_t *in, const int8_t *w,
                                       const int32_t *bias, const int32_t *mult, const int32_t *shift, int8_t *out,
                                       int16_t *xs)
{
    const int32_t n_in = p->in_features;
    const int32_t in_offset = p->in_offset;
    /* read once (a store through out may alias *p); cores without the DSP
     * extension take the cheaper exact requantization where it applies
     * (fixedpoint.h tinyc_rqp) and one SSAT for the whole int8 range */
    const int32_t out_offset = p->out_offset, act_min = p->act_min, act_max = p->act_max;
    const int rqp = !TINYC_DSP && tinyc_rqp_ok(mult, shift, p->per_channel ? p->out_features : 1, out_offset);
    const int full = !TINYC_DSP && act_min == TINYC_INT8_MIN && act_max == TINYC_INT8_MAX;
    /* Without scratch, the output's last 2 * n_in bytes (halfword-aligned) hold
     * the int16 row for the groups of 4 features that end before them: those
     * bytes are not written yet (the output never overlaps the input) */
    int8_t *const out0 = out;
    const int32_t tail = (p->batches * p->out_features - 2 * n_in) & ~1;
    int32_t b, o, i;

    for (b = 0; b < p->batches; ++b) {
        const int8_t *x = in + b * n_in;
        const int8_t *w_row = w;
        int16_t *x16 = xs;
        tinyc_dot4_args a;
        if (!TINYC_DSP && xs == 0 && in_offset != 0 && (out - out0) + 4 <= tail) {
            x16 = (int16_t *)(void *)(out0 + tail);
        }
        a.x = x;
        a.n = n_in;
        a.runs = 1;
        a.x_step = a.w_step = 0;
        a.offset = in_offset;
        a.x16 = x16;
        if (!TINYC_DSP && x16 != 0 && p->out_features >= 4) {
            tinyc_offset_copy(x, n_in, in_offset, x16);
        }
        for (o = 0; !TINYC_DSP && o + 4 <= p->out_features; o += 4) {  /* (DSP cores: a fallback) */
            int32_t j;
            for (j = 0; j < 4; ++j) {
                a.w[j] = w_row + j * n_in;
                a.acc[j] = bias != 0 ? bias[o + j] : 0;
            }
            if (x16 != 0 && (xs != 0 || (out - out0) + 4 <= tail)) {
                tinyc_dot4_x16(&a);
            } else if (in_offset == 0) {
                tinyc_dot4_s8_run(&a);
            } else {
                tinyc_dot4_s8(&a);
            }
            for (j = 0; j < 4; ++j) {
                const int32_t k = p->per_channel ? o + j : 0;
                int32_t v;
                if (rqp) {
                    v = tinyc_rqp(a.acc[j], mult[k], shift[k], out_offset);
                } else {
                    v = tinyc_mbqm(a.acc[j], mult[k], shift[k]) + out_offset;
                }
                *out++ = (int8_t)(full ? tinyc_sat8(v) : tinyc_clamp32(v, act_min, act_max));
            }
            w_row += 4 * n_in;
        }
        for (; o < p->out_features; ++o) {
            const int32_t k = p->per_channel ? o : 0;
            int32_t acc = 0;
            for (i = 0; i < n_in; ++i) {
                acc += ((int32_t)x[i] + in_offset) * (int32_t)w_row[i];
            }
            w_row += n_in;
            if (bias != 0) {
                acc += bias[o];
            }
            acc = tinyc_mbqm(acc, mult[k], shift[k]) + out_offset;
            *out++ = (int8_t)tinyc_clamp32(acc, act_min, act_max);
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

int32_t tinyc_fully_connected_s8_scratch_bytes(const tinyc_fc_params *p)
{
#if !TINYC_DSP
    /* a row as int16 with the input offset added (fc_portable; without an offset
     * the int8 row serves as it is); kernels/conv.py holds the same rule */
    if (p->batches > 0 && p->out_features >= 4 && p->in_offset != 0) {
        return 2 * p->in_features;
    }
#endif
    (void)p;
    return 0;
}

void tinyc_fully_connected_s8(const tinyc_fc_params *p, const int8_t *in, const int8_t *w,
                              const int32_t *bias, const int32_t *mult, const int32_t *shift, int8_t *out,
                              void *scratch, int32_t scratch_bytes)
{
#if TINYC_DSP
    (void)scratch;
    (void)scratch_bytes;
    if (p->in_offset >= -32767 + 128 && p->in_offset <= 32767 - 127 &&
        tinyc_rq_layer_ok(mult, shift, p->per_channel ? p->out_features : 1, p->out_offset, p->act_min,
                          p->act_max)) {
        fc_dsp(p, in, w, bias, mult, shift, out);
        return;
    }
    fc_portable(p, in, w, bias, mult, shift, out, 0);
#else
    const int32_t need = tinyc_fully_connected_s8_scratch_bytes(p);
    const int wide = need > 0 && scratch != 0 && scratch_bytes >= need && ((uintptr_t)scratch & 1u) == 0 &&
                     p->in_offset >= -32767 + 128 && p->in_offset <= 32767 - 127;
    fc_portable(p, in, w, bias, mult, shift, out, wide ? (int16_t *)scratch : 0);
#endif
}

/* ---- wide weights (tinyc/wide.h; the bias holds in_offset * sum(w)) ------- */

TINYC_FALLBACK static void fc_wide_portable(const tinyc_fc_params *p, const int8_t *in, const int32_t *w,
                                            const int32_t *bias, const int32_t *mult, const int32_t *shift,
                                            int8_t *out)
{
    const int32_t k = p->in_features;
    const int32_t groups = (k + 3) >> 2;
    int32_t b, o, i;
    for (b = 0; b < p->batches; ++b) {
        const int8_t *x = in + b * k;
        for (o = 0; o < p->out_features; ++o) {
            const int32_t c = p->per_channel ? o : 0;
            uint32_t acc = (uint32_t)bias[o];
            for (i = 0; i < k; ++i) {
                acc += (uint32_t)((int32_t)x[i] * tinyc_wide_weight(w, groups, o, i));
            }
            acc = (uint32_t)(tinyc_mbqm((int32_t)acc, mult[c], shift[c]) + p->out_offset);
            *out++ = (int8_t)tinyc_clamp32((int32_t)acc, p->act_min, p->act_max);
        }
    }
}

/* Rows longer than FCW_GROUPS groups of 4 features go through the scratch in
 * chunks of that many, the sums of every output channel kept between chunks. */
#define FCW_GROUPS 128

int32_t tinyc_fully_connected_wide_s8_scratch_bytes(const tinyc_fc_params *p)
{
#if TINYC_DSP
    /* the row (or a chunk of it) as int16 pairs, 2 words per group; chunked:
     * then one int32 sum per output channel; kernels/conv.py holds the same rule */
    const int32_t groups = (p->in_features + 3) >> 2;
    if (p->batches > 0 && groups > 0) {
        return groups <= FCW_GROUPS ? 8 * groups : 8 * FCW_GROUPS + 4 * p->out_features;
    }
#endif
    (void)p;
    return 0;
}

#if TINYC_DSP
/* Arguments of fw_dot4 (offsets fixed in the assembly). */
typedef struct {
    const uint32_t *x;     /*  0: the row's words (per group: even pair, odd pair) */
    const uint32_t *xend;  /*  4: x past its groups */
    const int32_t *w0;     /*  8: channel pair j's wide weights */
    const int32_t *w1;     /* 12: channel pair j + 1's */
    int32_t odd;           /* 16: odd group count */
    int32_t acc[4];        /* 20: sums of channels 2j, 2j + 1, 2j + 2, 2j + 3 (in: the biases) */
} fw_args;

typedef char fw_args_layout[(offsetof(fw_args, odd) == 16 && offsetof(fw_args, acc) == 20) ? 1 : -1];

/* One row x 4 output channels (two channel pairs) per group of 4 features: one
 * LDRD of the row's 2 words, two LDMs of 4 weight words, 8 SMLADs.  Registers:
 * r0 / r1 row words, r8 / r9 / r11 / r12 weight words, r4-r7 sums, r10 row
 * pointer, r2 its end, lr / r3 the two pairs' weight pointers. */
#define FW_GROUP                              \
    "ldrd r0, r1, [r10], #8\n\t"              \
    "ldmia lr!, {r8, r9, r11, r12}\n\t"       \
    "smlad r4, r0, r8, r4\n\t"                \
    "smlad r4, r1, r9, r4\n\t"                \
    "smlad r5, r0, r11, r5\n\t"               \
    "smlad r5, r1, r12, r5\n\t"               \
    "ldmia r3!, {r8, r9, r11, r12}\n\t"       \
    "smlad r6, r0, r8, r6\n\t"                \
    "smlad r6, r1, r9, r6\n\t"                \
    "smlad r7, r0, r11, r7\n\t"               \
    "smlad r7, r1, r12, r7\n\t"

__attribute__((naked, noinline)) static void fw_dot4(fw_args *args __attribute__((unused)))
{
    __asm__ volatile(
        "push {r4-r11, lr}\n\t"
        "sub sp, sp, #8\n\t"
        "str r0, [sp]\n\t"
        "ldr r10, [r0, #0]\n\t"
        "ldr r2, [r0, #4]\n\t"
        "ldr lr, [r0, #8]\n\t"
        "ldr r3, [r0, #12]\n\t"
        "ldrd r4, r5, [r0, #20]\n\t"
        "ldrd r6, r7, [r0, #28]\n\t"
        "ldr r1, [r0, #16]\n\t"
        "cmp r1, #0\n\t"
        "bne 3f\n\t"
        "2:\n\t" FW_GROUP
        "3:\n\t" FW_GROUP
        "cmp r10, r2\n\t"
        "bne 2b\n\t"
        "ldr r0, [sp]\n\t"
        "strd r4, r5, [r0, #20]\n\t"
        "strd r6, r7, [r0, #28]\n\t"
        "add sp, sp, #8\n\t"
        "pop {r4-r11, pc}\n\t");
}

/* Requantize one sum: the class 0 form inline, others out of line. */
TINYC_ALWAYS_INLINE int8_t fw_out(int32_t acc, int cls0, int32_t m2, int32_t npo, int32_t r, const tinyc_rq *q,
                                  int32_t lo, int32_t hi)
{
    if (cls0) {
        int32_t v = tinyc_rq_value0(acc, m2, npo, r);
        v = v < lo ? lo : v;
        return (int8_t)(v > hi ? hi : v);
    }
    return tinyc_rq_out(acc, q, lo, hi, 0);
}

/* Features [4 * g0, 4 * (g0 + n)) of row x as int16 pairs (2 words per group),
 * the row's last group zero-padded. */
static void fw_row_words(const int8_t *x, int32_t k, int32_t g0, int32_t n, uint32_t *xw)
{
    int32_t g;
    for (g = 0; g < n; ++g) {
        const int32_t i = 4 * (g0 + g);
        if (i + 4 <= k) {
            const uint32_t v = tinyc_ld4(x + i);
            xw[2 * g] = tinyc_sxtb16(v);
            xw[2 * g + 1] = tinyc_sxtb16_r8(v);
        } else {
            const int32_t x1 = i + 1 < k ? x[i + 1] : 0, x2 = i + 2 < k ? x[i + 2] : 0;
            xw[2 * g] = tinyc_pack16(x[i], x2);
            xw[2 * g + 1] = tinyc_pack16(x1, 0);
        }
    }
}

/* The sums of channels [o0, n) (o0 a multiple of 4) over groups [g0, g0 + cg) of
 * a row in xw, added to acc[0 .. n - o0). */
static void fw_chunk(const int32_t *w, int32_t pair_words, int32_t g0, int32_t cg, int32_t o0, int32_t n,
                     uint32_t *xw, int32_t *acc)
{
    fw_args a;
    int32_t o, g, j;
    a.x = xw;
    a.xend = xw + 2 * cg;
    a.odd = cg & 1;
    for (o = o0; o + 4 <= n; o += 4) {
        a.w0 = w + (o >> 1) * pair_words + 4 * g0;
        a.w1 = a.w0 + pair_words;
        for (j = 0; j < 4; ++j) {
            a.acc[j] = acc[o - o0 + j];
        }
        fw_dot4(&a);
        for (j = 0; j < 4; ++j) {
            acc[o - o0 + j] = a.acc[j];
        }
    }
    for (; o < n; ++o) {
        /* the last channels one by one */
        const int32_t *wp = w + (o >> 1) * pair_words + 4 * g0 + 2 * (o & 1);
        int32_t s = acc[o - o0];
        for (g = 0; g < cg; ++g) {
            s = tinyc_smlad(xw[2 * g], (uint32_t)wp[4 * g], s);
            s = tinyc_smlad(xw[2 * g + 1], (uint32_t)wp[4 * g + 1], s);
        }
        acc[o - o0] = s;
    }
}

/* Requantize n sums into out. */
static void fw_outputs(const tinyc_fc_params *p, const int32_t *acc, int32_t n, const int32_t *mult,
                       const int32_t *shift, int8_t *out)
{
    const int32_t lo = p->act_min, hi = p->act_max;
    int32_t m2 = 0, npo = 0, r = 0, o;
    int cls0 = 0;
    tinyc_rq q;
    for (o = 0; o < n; ++o) {
        if (o == 0 || p->per_channel) {
            const int32_t c = p->per_channel ? o : 0;
            cls0 = tinyc_rq_fast(mult[c], shift[c], p->out_offset, &m2, &npo, &r);
            if (!cls0) {
                q = tinyc_rq_make(mult[c], shift[c], p->out_offset);
            }
        }
        out[o] = fw_out(acc[o], cls0, m2, npo, r, &q, lo, hi);
    }
}

static void fc_wide_dsp(const tinyc_fc_params *p, const int8_t *in, const int32_t *w, const int32_t *bias,
                        const int32_t *mult, const int32_t *shift, int8_t *out, uint32_t *xw)
{
    const int32_t k = p->in_features;
    const int32_t n = p->out_features;
    const int32_t groups = (k + 3) >> 2;
    const int32_t pair_words = 4 * groups;
    int32_t b, o, j;
    /* per-tensor quantization: one set of constants for the layer */
    int32_t m2 = 0, npo = 0, r = 0;
    int cls0 = tinyc_rq_fast(mult[0], shift[0], p->out_offset, &m2, &npo, &r);
    tinyc_rq q = tinyc_rq_make(mult[0], shift[0], p->out_offset);

    for (b = 0; b < p->batches; ++b) {
        const int8_t *x = in + b * k;
        if (TINYC_USES(FC_CHUNKS) && groups > FCW_GROUPS) {
            /* chunks of the row, every channel's sum in the scratch after them */
            int32_t *acc = (int32_t *)(xw + 2 * FCW_GROUPS);
            int32_t g0;
            for (o = 0; o < n; ++o) {
                acc[o] = bias[o];
            }
            for (g0 = 0; g0 < groups; g0 += FCW_GROUPS) {
                const int32_t cg = groups - g0 < FCW_GROUPS ? groups - g0 : FCW_GROUPS;
                fw_row_words(x, k, g0, cg, xw);
                fw_chunk(w, pair_words, g0, cg, 0, n, xw, acc);
            }
            fw_outputs(p, acc, n, mult, shift, out);
        } else {
            /* the whole row at once, 4 channels' sums at a time */
            fw_args a;
            fw_row_words(x, k, 0, groups, xw);
            a.x = xw;
            a.xend = xw + 2 * groups;
            a.odd = groups & 1;
            for (o = 0; o + 4 <= n; o += 4) {
                a.w0 = w + (o >> 1) * pair_words;
                a.w1 = a.w0 + pair_words;
                for (j = 0; j < 4; ++j) {
                    a.acc[j] = bias[o + j];
                }
                fw_dot4(&a);
                for (j = 0; j < 4; ++j) {
                    if (p->per_channel) {
                        cls0 = tinyc_rq_fast(mult[o + j], shift[o + j], p->out_offset, &m2, &npo, &r);
                        if (!cls0) {
                            q = tinyc_rq_make(mult[o + j], shift[o + j], p->out_offset);
                        }
                    }
                    out[o + j] = fw_out(a.acc[j], cls0, m2, npo, r, &q, p->act_min, p->act_max);
                }
            }
            if (o < n) {
                /* the last channels */
                int32_t acc[3];
                for (j = 0; o + j < n; ++j) {
                    acc[j] = bias[o + j];
                }
                fw_chunk(w, pair_words, 0, groups, o, n, xw, acc);
                fw_outputs(p, acc, n - o, p->per_channel ? mult + o : mult, p->per_channel ? shift + o : shift,
                           out + o);
            }
        }
        out += n;
    }
}
#endif /* TINYC_DSP */

void tinyc_fully_connected_wide_s8(const tinyc_fc_params *p, const int8_t *in, const int32_t *w,
                                   const int32_t *bias, const int32_t *mult, const int32_t *shift, int8_t *out,
                                   void *scratch, int32_t scratch_bytes)
{
#if TINYC_DSP
    const int32_t need = tinyc_fully_connected_wide_s8_scratch_bytes(p);
    if (need > 0 && scratch != 0 && scratch_bytes >= need && ((uintptr_t)scratch & 3u) == 0 &&
        (TINYC_USES(FC_CHUNKS) || ((p->in_features + 3) >> 2) <= FCW_GROUPS) &&
        tinyc_rq_layer_ok(mult, shift, p->per_channel ? p->out_features : 1, p->out_offset, p->act_min,
                          p->act_max)) {
        fc_wide_dsp(p, in, w, bias, mult, shift, out, (uint32_t *)scratch);
        return;
    }
#else
    (void)scratch;
    (void)scratch_bytes;
#endif
    fc_wide_portable(p, in, w, bias, mult, shift, out);
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
