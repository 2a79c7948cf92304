/* Training kernels, float32: the backward pass and the SGD updates of an
 * on-device training step.  The numpy spec is tinyc/kernels/train.py; the
 * interface and the arithmetic are documented in tinyc/train.h.
 *
 * No libc or libm: exp and log are computed here, float <-> int conversions
 * are C casts (single instructions on an FPU), and every literal is a float
 * (no double arithmetic: none of the cores has a double FPU but the M7's).
 */
#include "tinyc/train.h"

/* ---- bits and rounding ---------------------------------------------------- */

typedef union {
    float f;
    uint32_t u;
} f32_bits;

static float from_bits(uint32_t u)
{
    f32_bits b;
    b.u = u;
    return b.f;
}

static uint32_t to_bits(float f)
{
    f32_bits b;
    b.f = f;
    return b.u;
}

/* 2^n as a float, -126 <= n <= 127. */
static float pow2i(int32_t n)
{
    return from_bits((uint32_t)(n + 127) << 23);
}

/* Round half to even, for |t| < 2^31 (not NaN).  Exact: the cast truncates
 * toward zero, and t - i is the exact fraction (for |t| < 2^23 both t and i
 * are multiples of t's ulp and |t - i| < 1; above, t is an integer). */
static int32_t rint_i32(float t)
{
    int32_t i = (int32_t)t;
    const float f = t - (float)i;
    if (f > 0.5f || (f == 0.5f && i % 2 != 0)) {
        ++i;
    } else if (f < -0.5f || (f == -0.5f && i % 2 != 0)) {
        --i;
    }
    return i;
}

/* t clamped to [-lim, lim] (lim an integer, <= 2^30, so exact in float); NaN -> 0. */
static float clamp_or_zero(float t, int32_t lim)
{
    if (t != t) {
        return 0.0f;
    }
    return t >= (float)lim ? (float)lim : (t <= -(float)lim ? -(float)lim : t);
}

/* rint(t) for t clamped to [-lim, lim]; NaN -> 0. */
static int32_t rint_clamped(float t, int32_t lim)
{
    return rint_i32(clamp_or_zero(t, lim));
}

/* Stochastic rounding of t to an integer, clamped to [-lim, lim] (lim <= 2^30),
 * NaN -> 0: floor(t) + (u < t - floor(t)), u = the next uniform draw.  Exact:
 * the fraction t - floor(t) is exact (as in rint_i32) and so is u. */
static int32_t sround_clamped(float t, int32_t lim, float u)
{
    int32_t i;
    t = clamp_or_zero(t, lim);
    i = (int32_t)t;
    if ((float)i > t) { /* floor */
        --i;
    }
    return u < t - (float)i ? i + 1 : i;
}

/* The generator of stochastic rounding: a 32-bit counter advanced by the
 * golden ratio (2^32 / phi) per draw and hashed with MurmurHash3's fmix32
 * (as SplitMix does); the draw is its top 24 bits over 2^24, in [0, 1). */
static float next_uniform(uint32_t *state)
{
    uint32_t z = (*state += 0x9e3779b9u);
    z ^= z >> 16;
    z *= 0x85ebca6bu;
    z ^= z >> 13;
    z *= 0xc2b2ae35u;
    z ^= z >> 16;
    return (float)(z >> 8) * (1.0f / 16777216.0f);
}

/* Zero n floats.  GCC (without -ffreestanding) turns a zeroing loop into a
 * call to memset, which the runtime must not need; this one loop is kept. */
#if defined(__GNUC__) && !defined(__clang__)
__attribute__((noinline, optimize("no-tree-loop-distribute-patterns")))
#endif
static void zero_f32(float *p, int32_t n)
{
    int32_t i;
    for (i = 0; i < n; ++i) {
        p[i] = 0.0f;
    }
}

/* ---- exp and log ------------------------------------------------------------ */

#define LN2_HI 0.693359375f      /* 355/512: n * LN2_HI is exact for |n| < 2^15 */
#define LN2_LO -2.12194440e-4f  /* ln 2 - LN2_HI */
#define LOG2E 1.44269504088896341f

float tinyc_expf(float x)
{
    float t, r, r2, p;
    int32_t n;
    if (x != x) {
        return x;
    }
    if (x < -87.3365447f) { /* e^x < FLT_MIN = 2^-126 */
        return 0.0f;
    }
    if (x > 88.7228394f) { /* e^x > FLT_MAX */
        return from_bits(0x7f800000u);
    }
    t = LOG2E * x + 0.5f; /* n = floor(x log2 e + 1/2), in [-126, 128] */
    n = (int32_t)t;
    if ((float)n > t) {
        --n;
    }
    r = x - (float)n * LN2_HI;
    r = r - (float)n * LN2_LO;
    r2 = r * r;
    p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r2 + r + 1.0f;
    if (n > 127) {
        return p * 2.0f * pow2i(n - 1);
    }
    return p * pow2i(n);
}

#define SQRT_HALF 0.707106781186547524f

float tinyc_logf(float x)
{
    uint32_t u = to_bits(x);
    int32_t e;
    float m, f, f2, y, fe;
    if (x != x || x < 0.0f) {
        return from_bits(0x7fc00000u); /* NaN */
    }
    if (x == 0.0f) {
        return from_bits(0xff800000u); /* -inf */
    }
    if (u >= 0x7f800000u) {
        return x; /* +inf */
    }
    e = 0;
    if (u < 0x00800000u) { /* denormal: scale by 2^25 */
        u = to_bits(x * 33554432.0f);
        e = -25;
    }
    e += (int32_t)(u >> 23) - 126;                    /* x = m 2^e, m in [0.5, 1) */
    m = from_bits((u & 0x007fffffu) | 0x3f000000u);
    if (m < SQRT_HALF) {
        --e;
        f = m + m - 1.0f;
    } else {
        f = m - 1.0f;
    }
    f2 = f * f;
    y = 7.0376836292e-2f;
    y = y * f - 1.1514610310e-1f;
    y = y * f + 1.1676998740e-1f;
    y = y * f - 1.2420140846e-1f;
    y = y * f + 1.4249322787e-1f;
    y = y * f - 1.6668057665e-1f;
    y = y * f + 2.0000714765e-1f;
    y = y * f - 2.4999993993e-1f;
    y = y * f + 3.3333331174e-1f;
    y = y * f * f2;
    fe = (float)e;
    y = y + fe * LN2_LO;
    y = y - 0.5f * f2;
    return (f + y) + fe * LN2_HI;
}

/* ---- fused activations ------------------------------------------------------ */

void tinyc_clamp_grad_f32(int32_t n, const float *dy, const int8_t *y_q, int32_t lo_q, int32_t hi_q,
                          float *dx)
{
    int32_t i;
    for (i = 0; i < n; ++i) {
        const int32_t y = y_q[i];
        dx[i] = (y > lo_q && y < hi_q) ? dy[i] : 0.0f;
    }
}

void tinyc_add_f32(int32_t n, const float *a, const float *b, float *out)
{
    int32_t i;
    for (i = 0; i < n; ++i) {
        out[i] = a[i] + b[i];
    }
}

void tinyc_slice_f32(const int32_t *in_shape, const int32_t *starts, const int32_t *out_shape, const float *in,
                     float *out)
{
    int32_t a, b, c, d;
    for (a = 0; a < out_shape[0]; ++a) {
        for (b = 0; b < out_shape[1]; ++b) {
            for (c = 0; c < out_shape[2]; ++c) {
                const float *src = in + (((starts[0] + a) * in_shape[1] + starts[1] + b) * in_shape[2] + starts[2] + c) *
                                            in_shape[3] + starts[3];
                for (d = 0; d < out_shape[3]; ++d) {
                    *out++ = src[d];
                }
            }
        }
    }
}

/* ---- convolution ------------------------------------------------------------ */

void tinyc_conv2d_grad_input_f32(const tinyc_conv_params *p, const float *dz, const int8_t *w_q,
                                 const float *w_scale, float *dx)
{
    const int32_t in_c = p->in_c, out_c = p->out_c;
    const int32_t cg = in_c / p->groups, og = out_c / p->groups;
    const int32_t o_size = p->k_h * p->k_w * cg;
    int32_t oy, ox, ky, kx, g, o, c;
    zero_f32(dx, p->in_h * p->in_w * in_c);
    /* Scatter: each output position's gradient, through each tap, onto the
     * input cell the tap read.  Zero gradients (a ReLU's) are skipped. */
    for (oy = 0; oy < p->out_h; ++oy) {
        for (ox = 0; ox < p->out_w; ++ox) {
            const float *dzp = dz + (oy * p->out_w + ox) * out_c;
            for (ky = 0; ky < p->k_h; ++ky) {
                const int32_t iy = oy * p->stride_h - p->pad_t + ky * p->dil_h;
                if (iy < 0 || iy >= p->in_h) {
                    continue;
                }
                for (kx = 0; kx < p->k_w; ++kx) {
                    const int32_t ix = ox * p->stride_w - p->pad_l + kx * p->dil_w;
                    float *dxp;
                    const int8_t *wp;
                    if (ix < 0 || ix >= p->in_w) {
                        continue;
                    }
                    dxp = dx + (iy * p->in_w + ix) * in_c;
                    wp = w_q + (ky * p->k_w + kx) * cg;
                    for (g = 0; g < p->groups; ++g) {
                        float *dxg = dxp + g * cg;
                        for (o = g * og; o < (g + 1) * og; ++o) {
                            const float d = dzp[o] * w_scale[o];
                            const int8_t *wo = wp + o * o_size;
                            if (d == 0.0f) {
                                continue;
                            }
                            for (c = 0; c < cg; ++c) {
                                dxg[c] += d * (float)wo[c];
                            }
                        }
                    }
                }
            }
        }
    }
}

void tinyc_conv2d_grad_input_sum_f32(const tinyc_conv_params *p, const float *dz, const int8_t *w_q,
                                     const float *w_scale, const int8_t *y_q, int32_t lo_q, int32_t hi_q, float *ds)
{
    const int32_t in_c = p->in_c, out_c = p->out_c;
    const int32_t cg = in_c / p->groups, og = out_c / p->groups;
    const int32_t o_size = p->k_h * p->k_w * cg;
    int32_t iy, ix, ky, kx, o, c;
    zero_f32(ds, in_c);
    /* Gather: each input cell's gradient from the output positions whose taps
     * read it, one scalar at a time, so that no [in_h][in_w][in_c] gradient is
     * ever stored; cells the clamp masks are not computed at all. */
    for (iy = 0; iy < p->in_h; ++iy) {
        for (ix = 0; ix < p->in_w; ++ix) {
            for (c = 0; c < in_c; ++c) {
                const int32_t g = c / cg;
                const int8_t *wc = w_q + (c - g * cg);
                float v = 0.0f;
                if (y_q) {
                    const int32_t y = y_q[(iy * p->in_w + ix) * in_c + c];
                    if (!(y > lo_q && y < hi_q)) {
                        continue;
                    }
                }
                for (ky = 0; ky < p->k_h; ++ky) {
                    const int32_t ty = iy + p->pad_t - ky * p->dil_h;
                    int32_t oy;
                    if (ty < 0 || ty % p->stride_h != 0 || (oy = ty / p->stride_h) >= p->out_h) {
                        continue;
                    }
                    for (kx = 0; kx < p->k_w; ++kx) {
                        const int32_t tx = ix + p->pad_l - kx * p->dil_w;
                        int32_t ox;
                        const float *dzp;
                        const int8_t *wp;
                        if (tx < 0 || tx % p->stride_w != 0 || (ox = tx / p->stride_w) >= p->out_w) {
                            continue;
                        }
                        dzp = dz + (oy * p->out_w + ox) * out_c;
                        wp = wc + (ky * p->k_w + kx) * cg;
                        for (o = g * og; o < (g + 1) * og; ++o) {
                            v += (dzp[o] * w_scale[o]) * (float)wp[o * o_size];
                        }
                    }
                }
                ds[c] += v;
            }
        }
    }
}

void tinyc_conv2d_grad_weight_f32(const tinyc_conv_params *p, int32_t k, const int8_t *x_q, float x_scale,
                                  int32_t x_zero, const float *dz, float *dw)
{
    const int32_t in_c = p->in_c, out_c = p->out_c;
    const int32_t cg = in_c / p->groups, og = out_c / p->groups;
    const int32_t o_size = p->k_h * p->k_w * cg;
    int32_t i, oy, ox, ky, kx, o, c;
    zero_f32(dw, k * o_size);
    /* Sum of dz * (x_q - x_zero) over the output positions, then times x_scale. */
    for (oy = 0; oy < p->out_h; ++oy) {
        for (ox = 0; ox < p->out_w; ++ox) {
            const float *dzp = dz + (oy * p->out_w + ox) * out_c;
            int32_t c0 = 0, o_end = 0; /* o's group: its first input channel, its outputs' end */
            for (o = 0; o < k; ++o) {
                const float d = dzp[o];
                if (d == 0.0f) {
                    continue;
                }
                if (o >= o_end) { /* the next group: its input channels */
                    c0 = (o / og) * cg;
                    o_end = (o / og + 1) * og;
                }
                for (ky = 0; ky < p->k_h; ++ky) {
                    const int32_t iy = oy * p->stride_h - p->pad_t + ky * p->dil_h;
                    if (iy < 0 || iy >= p->in_h) {
                        continue;
                    }
                    for (kx = 0; kx < p->k_w; ++kx) {
                        const int32_t ix = ox * p->stride_w - p->pad_l + kx * p->dil_w;
                        const int8_t *xp;
                        float *dwp;
                        if (ix < 0 || ix >= p->in_w) {
                            continue;
                        }
                        xp = x_q + (iy * p->in_w + ix) * in_c + c0;
                        dwp = dw + o * o_size + (ky * p->k_w + kx) * cg;
                        for (c = 0; c < cg; ++c) {
                            dwp[c] += d * (float)((int32_t)xp[c] - x_zero);
                        }
                    }
                }
            }
        }
    }
    for (i = 0; i < k * o_size; ++i) {
        dw[i] *= x_scale;
    }
}

void tinyc_bias_grad_f32(int32_t rows, int32_t channels, int32_t k, const float *dz, float *db)
{
    int32_t r, c;
    for (c = 0; c < k; ++c) {
        float s = 0.0f;
        for (r = 0; r < rows; ++r) {
            s += dz[r * channels + c];
        }
        db[c] = s;
    }
}

/* ---- fully connected ------------------------------------------------------- */

void tinyc_fc_grad_input_f32(int32_t rows, int32_t in, int32_t out, const float *dz, const int8_t *w_q,
                             const float *w_scale, int32_t per_channel, float *dx)
{
    int32_t r, o, i;
    for (r = 0; r < rows; ++r) {
        float *dxr = dx + r * in;
        const float *dzr = dz + r * out;
        zero_f32(dxr, in);
        for (o = 0; o < out; ++o) {
            const float d = dzr[o] * w_scale[per_channel ? o : 0];
            const int8_t *wo = w_q + o * in;
            if (d == 0.0f) {
                continue;
            }
            for (i = 0; i < in; ++i) {
                dxr[i] += d * (float)wo[i];
            }
        }
    }
}

void tinyc_fc_grad_weight_f32(int32_t rows, int32_t in, int32_t out, int32_t k, const int8_t *x_q,
                              float x_scale, int32_t x_zero, const float *dz, float *dw)
{
    int32_t r, o, i;
    zero_f32(dw, k * in);
    for (r = 0; r < rows; ++r) {
        const int8_t *xr = x_q + r * in;
        for (o = 0; o < k; ++o) {
            const float d = dz[r * out + o] * x_scale;
            float *dwo = dw + o * in;
            if (d == 0.0f) {
                continue;
            }
            for (i = 0; i < in; ++i) {
                dwo[i] += d * (float)((int32_t)xr[i] - x_zero);
            }
        }
    }
}

/* ---- pooling and reductions --------------------------------------------------- */

void tinyc_avg_pool_grad_f32(const tinyc_pool_params *p, const float *dy, float *dx)
{
    const int32_t ch = p->channels;
    int32_t oy, ox, y, x, c;
    zero_f32(dx, p->in_h * p->in_w * ch);
    for (oy = 0; oy < p->out_h; ++oy) {
        const int32_t y_start = oy * p->stride_h - p->pad_t;
        const int32_t y0 = y_start < 0 ? 0 : y_start;
        const int32_t y1 = y_start + p->k_h > p->in_h ? p->in_h : y_start + p->k_h;
        for (ox = 0; ox < p->out_w; ++ox) {
            const int32_t x_start = ox * p->stride_w - p->pad_l;
            const int32_t x0 = x_start < 0 ? 0 : x_start;
            const int32_t x1 = x_start + p->k_w > p->in_w ? p->in_w : x_start + p->k_w;
            const float *dyp = dy + (oy * p->out_w + ox) * ch;
            const int32_t count = p->count_include_pad ? p->k_h * p->k_w : (y1 - y0) * (x1 - x0);
            float fcount;
            if (y1 <= y0 || x1 <= x0 || count <= 0) {
                continue;
            }
            fcount = (float)count;
            for (y = y0; y < y1; ++y) {
                for (x = x0; x < x1; ++x) {
                    float *dxp = dx + (y * p->in_w + x) * ch;
                    for (c = 0; c < ch; ++c) {
                        dxp[c] += dyp[c] / fcount;
                    }
                }
            }
        }
    }
}

void tinyc_max_pool_grad_f32(const tinyc_pool_params *p, const float *dy, const int8_t *x_q, float *dx)
{
    const int32_t ch = p->channels;
    int32_t oy, ox, y, x, c;
    zero_f32(dx, p->in_h * p->in_w * ch);
    for (oy = 0; oy < p->out_h; ++oy) {
        const int32_t y_start = oy * p->stride_h - p->pad_t;
        const int32_t y0 = y_start < 0 ? 0 : y_start;
        const int32_t y1 = y_start + p->k_h > p->in_h ? p->in_h : y_start + p->k_h;
        for (ox = 0; ox < p->out_w; ++ox) {
            const int32_t x_start = ox * p->stride_w - p->pad_l;
            const int32_t x0 = x_start < 0 ? 0 : x_start;
            const int32_t x1 = x_start + p->k_w > p->in_w ? p->in_w : x_start + p->k_w;
            for (c = 0; c < ch; ++c) {
                int32_t best = -1, at = 0;
                for (y = y0; y < y1; ++y) {
                    for (x = x0; x < x1; ++x) {
                        const int32_t i = (y * p->in_w + x) * ch + c;
                        if (best < 0 || x_q[i] > x_q[best]) {
                            best = i;
                        }
                    }
                }
                at = (oy * p->out_w + ox) * ch + c;
                if (best >= 0) {
                    dx[best] += dy[at];
                }
            }
        }
    }
}

void tinyc_mean_grad_f32(int32_t outer, int32_t reduce, int32_t inner, const float *dy, float *dx)
{
    const float count = (float)reduce;
    int32_t o, r, i;
    for (o = 0; o < outer; ++o) {
        for (i = 0; i < inner; ++i) {
            const float share = dy[o * inner + i] / count;
            for (r = 0; r < reduce; ++r) {
                dx[(o * reduce + r) * inner + i] = share;
            }
        }
    }
}

/* ---- loss ----------------------------------------------------------------- */

void tinyc_softmax_xent_f32(int32_t n, const int8_t *logits_q, float scale, int32_t zero, int32_t label,
                            float *loss, float *dlogits)
{
    int32_t i, qmax = -128;
    float sum = 0.0f, s_label = 0.0f;
    (void)zero; /* z - max z does not depend on the zero point */
    for (i = 0; i < n; ++i) {
        if (logits_q[i] > qmax) {
            qmax = logits_q[i];
        }
    }
    for (i = 0; i < n; ++i) {
        const float s = scale * (float)((int32_t)logits_q[i] - qmax);
        const float e = tinyc_expf(s);
        dlogits[i] = e;
        sum += e;
        if (i == label) {
            s_label = s;
        }
    }
    for (i = 0; i < n; ++i) {
        dlogits[i] = dlogits[i] / sum;
    }
    if (label >= 0 && label < n) {
        dlogits[label] -= 1.0f;
    }
    for (i = 0; i < n; ++i) { /* no push further into int8 saturation */
        if ((logits_q[i] == 127 && dlogits[i] < 0.0f) || (logits_q[i] == -128 && dlogits[i] > 0.0f)) {
            dlogits[i] = 0.0f;
        }
    }
    *loss = tinyc_logf(sum) - s_label;
}

/* ---- SGD updates ---------------------------------------------------------- */

#define W_MAX (127 * 256) /* the 16-bit weight saturates at +-127.0 */

void tinyc_sgd_update_s8(int32_t k, int32_t count, float lr, const float *dw, const float *w_scale,
                         int32_t per_channel, int32_t max_units, int8_t *w_q, int8_t *residue, uint32_t *rng)
{
    const int32_t lim = max_units > 0 && max_units < 256 ? max_units : 256; /* whole units a step may move */
    int32_t c, i;
    for (c = 0; c < k; ++c) {
        const float s = w_scale[per_channel ? c : 0];
        for (i = c * count; i < (c + 1) * count; ++i) {
            const float step = -(lr * dw[i]) / s; /* weight units */
            int32_t w = w_q[i];
            if (residue != 0) {
                const float t = step * 256.0f; /* 1/256 units */
                int32_t v = w * 256 + residue[i] +
                            (rng != 0 ? sround_clamped(t, 256 * lim, next_uniform(rng)) : rint_clamped(t, 256 * lim));
                v = v < -W_MAX ? -W_MAX : (v > W_MAX ? W_MAX : v);
                /* floor((v + 128) / 256) with a non-negative shift: v + 128 + 32768 >= 384 */
                w = ((v + 128 + 32768) >> 8) - 128;
                residue[i] = (int8_t)(v - w * 256);
            } else {
                w += rng != 0 ? sround_clamped(step, lim, next_uniform(rng)) : rint_clamped(step, lim);
                w = w < -127 ? -127 : (w > 127 ? 127 : w);
            }
            w_q[i] = (int8_t)w;
        }
    }
}

void tinyc_sgd_update_s32(int32_t k, float lr, const float *db, const float *bias_scale, int32_t per_channel,
                          int32_t *bias_q)
{
    int32_t c;
    for (c = 0; c < k; ++c) {
        const float step = -(lr * db[c]) / bias_scale[per_channel ? c : 0];
        int64_t add, v;
        if (step != step) {
            add = 0;
        } else if (step >= 2147483648.0f) {
            add = INT64_C(2147483648);
        } else if (step <= -2147483648.0f) {
            add = -INT64_C(2147483648);
        } else {
            add = rint_i32(step);
        }
        v = (int64_t)bias_q[c] + add;
        if (v > INT64_C(2147483647)) {
            v = INT64_C(2147483647);
        } else if (v < -INT64_C(2147483647)) {
            v = -INT64_C(2147483647);
        }
        bias_q[c] = (int32_t)v;
    }
}

/* ---- fused weight gradient and update ----------------------------------------- */

void tinyc_conv2d_train_weight_s8(const tinyc_conv_params *p, int32_t k, const int8_t *x_q, float x_scale,
                                  int32_t x_zero, const float *dz, float lr, const float *w_scale,
                                  int32_t max_units, float *dw, int8_t *w_q, int8_t *residue, uint32_t *rng)
{
    const int32_t cg = p->in_c / p->groups, og = p->out_c / p->groups;
    const int32_t count = p->k_h * p->k_w * cg;
    int32_t o;
    for (o = 0; o < k; ++o) {
        /* channel o alone: dz and x from its own channel and group, read as group 0 */
        tinyc_conv2d_grad_weight_f32(p, 1, x_q + (o / og) * cg, x_scale, x_zero, dz + o, dw);
        tinyc_sgd_update_s8(1, count, lr, dw, w_scale + o, 1, max_units, w_q + o * count,
                            residue ? residue + o * count : (int8_t *)0, rng);
    }
}

void tinyc_fc_train_weight_s8(int32_t rows, int32_t in, int32_t out, int32_t k, const int8_t *x_q, float x_scale,
                              int32_t x_zero, const float *dz, float lr, const float *w_scale, int32_t max_units,
                              float *dw, int8_t *w_q, int8_t *residue, uint32_t *rng)
{
    int32_t o;
    for (o = 0; o < k; ++o) {
        tinyc_fc_grad_weight_f32(rows, in, out, 1, x_q, x_scale, x_zero, dz + o, dw);
        tinyc_sgd_update_s8(1, in, lr, dw, w_scale + o, 1, max_units, w_q + o * in,
                            residue ? residue + o * in : (int8_t *)0, rng);
    }
}

/* ==== the float graph (tinyc train --precision float --engine c) ============= */

static float clampf(float v, float lo, float hi)
{
    return v < lo ? lo : (v > hi ? hi : v);
}

/* ---- forward -------------------------------------------------------------- */

void tinyc_conv2d_f32(const tinyc_conv_params *p, const float *x, const float *w, const float *bias, float lo,
                      float hi, float *y)
{
    const int32_t cg = p->in_c / p->groups, og = p->out_c / p->groups;
    int32_t oy, ox, o, ky, kx, c;
    for (oy = 0; oy < p->out_h; ++oy) {
        for (ox = 0; ox < p->out_w; ++ox) {
            for (o = 0; o < p->out_c; ++o) {
                const int32_t c0 = (o / og) * cg;
                float acc = bias ? bias[o] : 0.0f;
                for (ky = 0; ky < p->k_h; ++ky) {
                    const int32_t iy = oy * p->stride_h - p->pad_t + ky * p->dil_h;
                    if (iy < 0 || iy >= p->in_h) {
                        continue;
                    }
                    for (kx = 0; kx < p->k_w; ++kx) {
                        const int32_t ix = ox * p->stride_w - p->pad_l + kx * p->dil_w;
                        const float *xp, *wp;
                        if (ix < 0 || ix >= p->in_w) {
                            continue;
                        }
                        xp = x + (iy * p->in_w + ix) * p->in_c + c0;
                        wp = w + ((o * p->k_h + ky) * p->k_w + kx) * cg;
                        for (c = 0; c < cg; ++c) {
                            acc += xp[c] * wp[c];
                        }
                    }
                }
                y[(oy * p->out_w + ox) * p->out_c + o] = clampf(acc, lo, hi);
            }
        }
    }
}

void tinyc_fc_f32(int32_t rows, int32_t in, int32_t out, const float *x, const float *w, const float *bias,
                  float lo, float hi, float *y)
{
    int32_t r, o, i;
    for (r = 0; r < rows; ++r) {
        for (o = 0; o < out; ++o) {
            float acc = bias ? bias[o] : 0.0f;
            for (i = 0; i < in; ++i) {
                acc += x[r * in + i] * w[o * in + i];
            }
            y[r * out + o] = clampf(acc, lo, hi);
        }
    }
}

void tinyc_clamp_f32(int32_t n, float lo, float hi, const float *x, float *y)
{
    int32_t i;
    for (i = 0; i < n; ++i) {
        y[i] = clampf(x[i], lo, hi);
    }
}

static void pool_f32(const tinyc_pool_params *p, const float *x, float *y, int is_max)
{
    const int32_t ch = p->channels;
    int32_t oy, ox, c, yy, xx;
    for (oy = 0; oy < p->out_h; ++oy) {
        const int32_t ys = oy * p->stride_h - p->pad_t;
        const int32_t y0 = ys < 0 ? 0 : ys, y1 = ys + p->k_h > p->in_h ? p->in_h : ys + p->k_h;
        for (ox = 0; ox < p->out_w; ++ox) {
            const int32_t xs = ox * p->stride_w - p->pad_l;
            const int32_t x0 = xs < 0 ? 0 : xs, x1 = xs + p->k_w > p->in_w ? p->in_w : xs + p->k_w;
            const int32_t count = p->count_include_pad ? p->k_h * p->k_w : (y1 - y0) * (x1 - x0);
            for (c = 0; c < ch; ++c) {
                float acc = 0.0f;
                int first = 1;
                for (yy = y0; yy < y1; ++yy) {
                    for (xx = x0; xx < x1; ++xx) {
                        const float v = x[(yy * p->in_w + xx) * ch + c];
                        if (is_max) {
                            acc = (first || v > acc) ? v : acc;
                            first = 0;
                        } else {
                            acc += v;
                        }
                    }
                }
                y[(oy * p->out_w + ox) * ch + c] = is_max ? acc : (count > 0 ? acc / (float)count : 0.0f);
            }
        }
    }
}

void tinyc_avg_pool_f32(const tinyc_pool_params *p, const float *x, float *y)
{
    pool_f32(p, x, y, 0);
}

void tinyc_max_pool_f32(const tinyc_pool_params *p, const float *x, float *y)
{
    pool_f32(p, x, y, 1);
}

void tinyc_concat2_f32(int32_t outer, int32_t inner_a, int32_t inner_b, const float *a, const float *b, float *out)
{
    int32_t o, i;
    for (o = 0; o < outer; ++o) {
        for (i = 0; i < inner_a; ++i) {
            *out++ = a[o * inner_a + i];
        }
        for (i = 0; i < inner_b; ++i) {
            *out++ = b[o * inner_b + i];
        }
    }
}

void tinyc_mean_f32(int32_t outer, int32_t reduce, int32_t inner, const float *x, float *y)
{
    int32_t o, r, i;
    for (o = 0; o < outer; ++o) {
        for (i = 0; i < inner; ++i) {
            float acc = 0.0f;
            for (r = 0; r < reduce; ++r) {
                acc += x[(o * reduce + r) * inner + i];
            }
            y[o * inner + i] = acc / (float)reduce;
        }
    }
}

/* ---- backward --------------------------------------------------------------- */

void tinyc_clamp_grad_ff32(int32_t n, const float *dy, const float *y, float lo, float hi, float *dx)
{
    int32_t i;
    for (i = 0; i < n; ++i) {
        dx[i] = (y[i] > lo && y[i] < hi) ? dy[i] : 0.0f;
    }
}

/* The two float convolution gradients walk the same (output, tap) pairs: for
 * each nonzero dz[oy][ox][o] of the first k channels and each tap (ky, kx)
 * inside the input, the input cell's channels of o's group meet the tap's
 * weights.  weight_grad == 0: cells (dx) += dz * taps (w); otherwise taps (dw)
 * += dz * cells (x). */
static void conv_grad_ff32(const tinyc_conv_params *p, int32_t k, const float *dz, const float *src, float *dst,
                           int weight_grad)
{
    const int32_t cg = p->in_c / p->groups, og = p->out_c / p->groups;
    int32_t oy, ox, o, ky, kx, c;
    zero_f32(dst, weight_grad ? k * p->k_h * p->k_w * cg : p->in_h * p->in_w * p->in_c);
    for (oy = 0; oy < p->out_h; ++oy) {
        for (ox = 0; ox < p->out_w; ++ox) {
            for (o = 0; o < k; ++o) {
                const float d = dz[(oy * p->out_w + ox) * p->out_c + o];
                const int32_t c0 = (o / og) * cg;
                if (d == 0.0f) {
                    continue;
                }
                for (ky = 0; ky < p->k_h; ++ky) {
                    const int32_t iy = oy * p->stride_h - p->pad_t + ky * p->dil_h;
                    if (iy < 0 || iy >= p->in_h) {
                        continue;
                    }
                    for (kx = 0; kx < p->k_w; ++kx) {
                        const int32_t ix = ox * p->stride_w - p->pad_l + kx * p->dil_w;
                        int32_t cell, tap;
                        if (ix < 0 || ix >= p->in_w) {
                            continue;
                        }
                        cell = (iy * p->in_w + ix) * p->in_c + c0;
                        tap = ((o * p->k_h + ky) * p->k_w + kx) * cg;
                        if (weight_grad) {
                            for (c = 0; c < cg; ++c) {
                                dst[tap + c] += d * src[cell + c];
                            }
                        } else {
                            for (c = 0; c < cg; ++c) {
                                dst[cell + c] += d * src[tap + c];
                            }
                        }
                    }
                }
            }
        }
    }
}

void tinyc_conv2d_grad_input_ff32(const tinyc_conv_params *p, const float *dz, const float *w, float *dx)
{
    conv_grad_ff32(p, p->out_c, dz, w, dx, 0);
}

void tinyc_conv2d_grad_weight_ff32(const tinyc_conv_params *p, int32_t k, const float *x, const float *dz,
                                   float *dw)
{
    conv_grad_ff32(p, k, dz, x, dw, 1);
}

void tinyc_fc_grad_input_ff32(int32_t rows, int32_t in, int32_t out, const float *dz, const float *w, float *dx)
{
    int32_t r, o, i;
    zero_f32(dx, rows * in);
    for (r = 0; r < rows; ++r) {
        for (o = 0; o < out; ++o) {
            const float d = dz[r * out + o];
            for (i = 0; i < in; ++i) {
                dx[r * in + i] += d * w[o * in + i];
            }
        }
    }
}

void tinyc_fc_grad_weight_ff32(int32_t rows, int32_t in, int32_t out, int32_t k, const float *x, const float *dz,
                               float *dw)
{
    int32_t r, o, i;
    zero_f32(dw, k * in);
    for (r = 0; r < rows; ++r) {
        for (o = 0; o < k; ++o) {
            const float d = dz[r * out + o];
            for (i = 0; i < in; ++i) {
                dw[o * in + i] += d * x[r * in + i];
            }
        }
    }
}

void tinyc_max_pool_grad_ff32(const tinyc_pool_params *p, const float *dy, const float *x, float *dx)
{
    const int32_t ch = p->channels;
    int32_t oy, ox, c, yy, xx;
    zero_f32(dx, p->in_h * p->in_w * ch);
    for (oy = 0; oy < p->out_h; ++oy) {
        const int32_t ys = oy * p->stride_h - p->pad_t;
        const int32_t y0 = ys < 0 ? 0 : ys, y1 = ys + p->k_h > p->in_h ? p->in_h : ys + p->k_h;
        for (ox = 0; ox < p->out_w; ++ox) {
            const int32_t xs = ox * p->stride_w - p->pad_l;
            const int32_t x0 = xs < 0 ? 0 : xs, x1 = xs + p->k_w > p->in_w ? p->in_w : xs + p->k_w;
            for (c = 0; c < ch; ++c) {
                int32_t best = -1;
                for (yy = y0; yy < y1; ++yy) {
                    for (xx = x0; xx < x1; ++xx) {
                        const int32_t i = (yy * p->in_w + xx) * ch + c;
                        if (best < 0 || x[i] > x[best]) {
                            best = i;
                        }
                    }
                }
                if (best >= 0) {
                    dx[best] += dy[(oy * p->out_w + ox) * ch + c];
                }
            }
        }
    }
}

void tinyc_softmax_xent_ff32(int32_t n, const float *logits, int32_t label, float *loss, float *dlogits)
{
    int32_t i;
    float zmax = logits[0], sum = 0.0f, s_label = 0.0f;
    for (i = 1; i < n; ++i) {
        zmax = logits[i] > zmax ? logits[i] : zmax;
    }
    for (i = 0; i < n; ++i) {
        dlogits[i] = tinyc_expf(logits[i] - zmax);
        sum += dlogits[i];
    }
    for (i = 0; i < n; ++i) {
        dlogits[i] /= sum;
    }
    if (label >= 0 && label < n) {
        dlogits[label] -= 1.0f;
        s_label = logits[label] - zmax;
    }
    *loss = tinyc_logf(sum) - s_label;
}

void tinyc_sgd_update_f32(int32_t n, float lr, const float *g, float *w)
{
    int32_t i;
    for (i = 0; i < n; ++i) {
        w[i] -= lr * g[i];
    }
}
