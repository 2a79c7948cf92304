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

void tinyc_strided_copy_s8(const tinyc_strided_copy_params *p, const int8_t *in, int8_t *out)
{
    const int32_t *n = p->out_shape;
    const int32_t *st = p->in_strides;
    int32_t i0, i1, i2, i3, i4, i5;
    for (i0 = 0; i0 < n[0]; ++i0) {
        for (i1 = 0; i1 < n[1]; ++i1) {
            for (i2 = 0; i2 < n[2]; ++i2) {
                for (i3 = 0; i3 < n[3]; ++i3) {
                    for (i4 = 0; i4 < n[4]; ++i4) {
                        const int8_t *src = in + p->in_start + i0 * st[0] + i1 * st[1] + i2 * st[2] + i3 * st[3] +
                                            i4 * st[4];
                        if (st[5] == 1) {
                            for (i5 = 0; i5 < n[5]; ++i5) {
                                out[i5] = src[i5];
                            }
                        } else {
                            for (i5 = 0; i5 < n[5]; ++i5) {
                                out[i5] = src[i5 * st[5]];
                            }
                        }
                        out += n[5];
                    }
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

/* the Q10 source coordinate of output index i, and its two neighbours */
static void interpolation_values(int32_t i, int32_t scale_10, int32_t half_pixel, int32_t in_size,
                                 int32_t *scaled, int32_t *lower, int32_t *upper)
{
    int32_t v = i * scale_10;
    int32_t lo, hi;
    if (half_pixel) {
        v += scale_10 / 2 - (1 << 9);
    }
    lo = v / (1 << 10); /* C division truncates, as TFLite's does */
    hi = (v + (1 << 10) - 1) / (1 << 10);
    *scaled = v;
    *lower = lo > 0 ? lo : 0;
    *upper = hi < in_size - 1 ? hi : in_size - 1;
}

void tinyc_resize_bilinear_s8(const tinyc_resize_bilinear_params *p, const int8_t *in, int8_t *out)
{
    const int32_t c_n = p->channels;
    int32_t y, x, c;
    for (y = 0; y < p->out_h; ++y) {
        int32_t iy, y0, y1, wy0, wy1;
        interpolation_values(y, p->scale_h_10, p->half_pixel, p->in_h, &iy, &y0, &y1);
        wy1 = iy - (y0 << 10);
        wy0 = (1 << 10) - wy1;
        for (x = 0; x < p->out_w; ++x) {
            int32_t ix, x0, x1, wx0, wx1;
            const int8_t *r0, *r1;
            interpolation_values(x, p->scale_w_10, p->half_pixel, p->in_w, &ix, &x0, &x1);
            wx1 = ix - (x0 << 10);
            wx0 = (1 << 10) - wx1;
            r0 = in + y0 * p->in_w * c_n;
            r1 = in + y1 * p->in_w * c_n;
            for (c = 0; c < c_n; ++c) {
                /* |value| <= 128 and the weights' products stay below 2^21 in
                 * magnitude, so the sum fits int32 */
                const int32_t acc = r0[x0 * c_n + c] * wy0 * wx0 + r1[x0 * c_n + c] * wy1 * wx0 +
                                    r0[x1 * c_n + c] * wy0 * wx1 + r1[x1 * c_n + c] * wy1 * wx1;
                *out++ = (int8_t)((acc + (acc > 0 ? (1 << 19) : -(1 << 19))) / (1 << 20));
            }
        }
    }
}
