/* int8 layer normalization over the last axis, in integer arithmetic (TFLite
 * has no int8 LayerNorm; the algorithm is tinyc's, documented with its
 * executable spec in tinyc/kernels/norm.py).  Per row: int64 sums, one integer
 * square root and one reciprocal by shift and subtract; per value: one 64-bit multiply for the
 * normalization and one for gamma.  Reads a value before writing it: may run
 * in place. */
#include "tinyc/kernels.h"

/* floor(sqrt(v)), bit by bit */
static uint64_t isqrt64(uint64_t v)
{
    uint64_t root = 0, bit = (uint64_t)1 << 62;
    while (bit > v) {
        bit >>= 2;
    }
    while (bit != 0) {
        if (v >= root + bit) {
            v -= root + bit;
            root = (root >> 1) + bit;
        } else {
            root >>= 1;
        }
        bit >>= 2;
    }
    return root;
}

/* floor(2^62 / d) for d in [2^30, 2^31), by shift and subtract: a 64-bit
 * division would be a libgcc call (__aeabi_uldivmod) on 32-bit cores */
static uint64_t two_pow_62_over(uint64_t d)
{
    uint64_t rem = (uint64_t)1 << 62, q = 0;
    int32_t bit;
    for (bit = 32; bit >= 0; --bit) {
        const uint64_t t = d << bit;
        if (rem >= t) {
            rem -= t;
            q |= (uint64_t)1 << bit;
        }
    }
    return q;
}

static int32_t bit_length64(uint64_t v)
{
    int32_t n = 0;
    while (v != 0) {
        ++n;
        v >>= 1;
    }
    return n;
}

/* (v + 2^(s-1)) >> s with an arithmetic shift, 1 <= s <= 62 */
static int64_t round_shift64(int64_t v, int32_t s)
{
    const int64_t r = v + ((int64_t)1 << (s - 1));
    /* >> of a negative int64 is implementation-defined in C99 but arithmetic
     * on every compiler tinyc targets (GCC documents it) */
    return r >> s;
}

void tinyc_layer_norm_s8(const tinyc_layer_norm_params *p, const int8_t *in, const int32_t *gamma_q,
                         const int32_t *beta_q, int8_t *out)
{
    const int64_t eps = ((int64_t)p->eps_hi << 31) | (int64_t)p->eps_lo;
    int32_t r, i;
    for (r = 0; r < p->rows; ++r) {
        const int8_t *x = in + r * p->depth;
        int8_t *y = out + r * p->depth;
        int32_t sum = 0;
        uint64_t v = (uint64_t)eps;
        uint64_t inv = 0;
        int32_t k = 0;
        for (i = 0; i < p->depth; ++i) {
            sum += (int32_t)x[i] - p->in_zero_point;
        }
        for (i = 0; i < p->depth; ++i) {
            const int64_t d = (int64_t)p->depth * ((int32_t)x[i] - p->in_zero_point) - sum;
            v += (uint64_t)(d * d);
        }
        if (v != 0) {
            k = (62 - bit_length64(v)) / 2;
            if (k < 0) {
                k = 0;
            }
            inv = two_pow_62_over(isqrt64(v << (2 * k)));
        }
        for (i = 0; i < p->depth; ++i) {
            const int64_t d = (int64_t)p->depth * ((int32_t)x[i] - p->in_zero_point) - sum;
            const int64_t n = v != 0 ? round_shift64(d * (int64_t)inv, 32 - k) : 0;
            const int64_t acc = n * gamma_q[i] + ((int64_t)beta_q[i] << 30);
            int64_t o = round_shift64(acc, p->out_shift) + p->out_zero_point;
            o = o < -128 ? -128 : (o > 127 ? 127 : o);
            y[i] = (int8_t)o;
        }
    }
}
