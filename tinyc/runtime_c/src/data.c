/* int8 data movement: concatenation, constant padding, nearest-neighbour
 * resize and plain copy.  No arithmetic on values (inputs and outputs share
 * quantization), and byte loops instead of memcpy / memset so that the
 * runtime needs no libc.  Executable spec: tinyc/kernels/data.py. */
#include "tinyc/kernels.h"
#include "tinyc/fixedpoint.h"

void tinyc_concat_s8(int32_t outer, int32_t n, const int8_t *const *ins, const int32_t *inner,
                     int8_t *out)
{
    int32_t o, k, i;
    for (o = 0; o < outer; ++o) {
        for (k = 0; k < n; ++k) {
            const int8_t *src = ins[k] + o * inner[k];
            for (i = 0; i < inner[k]; ++i) {
                *out++ = src[i];
            }
        }
    }
}

void tinyc_pad_s8(const tinyc_pad_params *p, const int8_t *in, int8_t *out)
{
    /* Output extent per dimension; output index o reads input index
     * o - pad_before when that lies inside the input, else pad_value.  Written
     * per output element, a negative pad simply crops. */
    const int32_t *n = p->in_shape;
    const int32_t *b = p->pad_before;
    const int8_t fill = (int8_t)p->pad_value;
    int32_t m[4];
    int32_t d, o0, o1, o2, o3;
    for (d = 0; d < 4; ++d) {
        m[d] = n[d] + b[d] + p->pad_after[d];
    }
    for (o0 = 0; o0 < m[0]; ++o0) {
        const int32_t s0 = o0 - b[0];
        for (o1 = 0; o1 < m[1]; ++o1) {
            const int32_t s1 = o1 - b[1];
            for (o2 = 0; o2 < m[2]; ++o2) {
                const int32_t s2 = o2 - b[2];
                const int inside = s0 >= 0 && s0 < n[0] && s1 >= 0 && s1 < n[1] && s2 >= 0 && s2 < n[2];
                /* Only form the row pointer when it is inside the input. */
                const int8_t *row = inside ? in + ((s0 * n[1] + s1) * n[2] + s2) * n[3] : in;
                for (o3 = 0; o3 < m[3]; ++o3) {
                    const int32_t s3 = o3 - b[3];
                    *out++ = (inside && s3 >= 0 && s3 < n[3]) ? row[s3] : fill;
                }
            }
        }
    }
}

void tinyc_resize_nearest_s8(const tinyc_resize_params *p, const int8_t *in, int8_t *out)
{
    /* Source index floor(y * in_h / out_h), clamped to in_h - 1, kept as an
     * exact quotient / remainder pair stepped by in_h per output row (and
     * likewise for columns): integer-exact, and no division, which cores
     * without a divide instruction (Cortex-M0) would need a libgcc call for. */
    const int32_t c = p->channels;
    int32_t y, x, i;
    int32_t qy = 0, ry = 0;
    for (y = 0; y < p->out_h; ++y) {
        const int32_t sy = qy < p->in_h - 1 ? qy : p->in_h - 1;
        int32_t qx = 0, rx = 0;
        for (x = 0; x < p->out_w; ++x) {
            const int32_t sx = qx < p->in_w - 1 ? qx : p->in_w - 1;
            const int8_t *src = in + (sy * p->in_w + sx) * c;
            for (i = 0; i < c; ++i) {
                *out++ = src[i];
            }
            rx += p->in_w;
            while (rx >= p->out_w) {
                rx -= p->out_w;
                ++qx;
            }
        }
        ry += p->in_h;
        while (ry >= p->out_h) {
            ry -= p->out_h;
            ++qy;
        }
    }
}

void tinyc_copy_s8(int32_t size, const int8_t *in, int8_t *out)
{
    int32_t i;
    for (i = 0; i < size; ++i) {
        out[i] = in[i];
    }
}

void tinyc_transpose_s8(const tinyc_transpose_params *p, const int8_t *in, int8_t *out)
{
    int32_t in_stride[4], stride[4], size[4];
    int32_t d, i0, i1, i2, i3;
    in_stride[3] = 1;
    for (d = 2; d >= 0; --d) {
        in_stride[d] = in_stride[d + 1] * p->in_shape[d + 1];
    }
    /* walk the output in order; stride[d] steps the input along output dim d */
    for (d = 0; d < 4; ++d) {
        size[d] = p->in_shape[p->perm[d]];
        stride[d] = in_stride[p->perm[d]];
    }
    for (i0 = 0; i0 < size[0]; ++i0) {
        for (i1 = 0; i1 < size[1]; ++i1) {
            for (i2 = 0; i2 < size[2]; ++i2) {
                const int8_t *src = in + i0 * stride[0] + i1 * stride[1] + i2 * stride[2];
                for (i3 = 0; i3 < size[3]; ++i3) {
                    *out++ = src[i3 * stride[3]];
                }
            }
        }
    }
}

void tinyc_fill_s8(int32_t size, int32_t value, int8_t *out)
{
    /* value outside [-128, 127]: its low byte (two's complement on every target). */
    const int8_t v = (int8_t)value;
    int32_t i;
    for (i = 0; i < size; ++i) {
        out[i] = v;
    }
}
