"""The int8 kernels of issue 15 (tanh, leaky relu, lookup tables, maximum /
minimum, batch matmul, layer norm): C against the numpy spec bit for bit, the
spec against the scale-level helpers of tinyc.quant.fixedpoint, and (where
TFLite has the op) against TFLM itself on single-op models (test_fixedpoint.py).
"""

from __future__ import annotations

import ctypes
import math

import numpy as np
import pytest

from tinyc.kernels import activation, conv, data, elementwise, norm, pool
from tinyc.kernels.params import (
    LeakyReluParams,
    LogisticParams,
    LutParams,
    MatMulParams,
    MinMaxParams,
    PoolParams,
    ResizeBilinearParams,
)
from tinyc.quant import fixedpoint as fx

ALL_INT8 = np.arange(-128, 128, dtype=np.int8)
P8 = ctypes.POINTER(ctypes.c_int8)
P32 = ctypes.POINTER(ctypes.c_int32)


@pytest.fixture(scope="module")
def lib(runtime_lib):
    return runtime_lib


def _p(a: np.ndarray):
    assert a.flags.c_contiguous
    return a.ctypes.data_as(P8 if a.dtype == np.int8 else P32)


def _call(lib, name, p, *arrays, out_size):
    out = np.empty(out_size, dtype=np.int8)
    getattr(lib, name)(ctypes.byref(p.to_ctypes()), *(_p(a) for a in arrays), _p(out))
    return out


def test_tanh_all_values(lib):
    rng = np.random.default_rng(1500)
    for scale in [*(10 ** rng.uniform(-3, 0.5, 40)), 1e-3, 1 / 16, 0.1, 2.0, 4.0]:
        zp = int(rng.integers(-128, 128))
        lp = fx.tanh_int8_params(float(scale), zp)
        p = LogisticParams(256, lp.input_zero_point, lp.input_range_radius, lp.input_multiplier, lp.input_left_shift)
        spec = activation.tanh_s8(p, ALL_INT8)
        np.testing.assert_array_equal(spec, fx.tanh_int8(ALL_INT8, float(scale), zp))
        np.testing.assert_array_equal(_call(lib, "tinyc_tanh_s8", p, ALL_INT8, out_size=256), spec)
        # within one step of the float function (output 1/128, 0)
        real = np.tanh(np.float32(scale) * (ALL_INT8.astype(np.float64) - zp))
        assert np.abs(spec / 128.0 - np.clip(real, -1, 127 / 128)).max() <= 1.01 / 128


def test_leaky_relu_all_values(lib):
    rng = np.random.default_rng(1600)
    for alpha in (0.01, 0.1, 0.2, 0.3, 0.5, 0.99, 0.0):
        for _ in range(8):
            si, so = float(10 ** rng.uniform(-3, 0)), float(10 ** rng.uniform(-3, 0))
            zi, zo = (int(v) for v in rng.integers(-128, 128, 2))
            try:
                lp = fx.leaky_relu_int8_params(si, alpha, so)
            except ValueError:  # a multiplier beyond int32 fixed point: lowering reports it
                continue
            p = LeakyReluParams(256, zi, zo, *lp)
            spec = activation.leaky_relu_s8(p, ALL_INT8)
            np.testing.assert_array_equal(spec, fx.leaky_relu_int8(ALL_INT8, si, zi, alpha, so, zo))
            np.testing.assert_array_equal(_call(lib, "tinyc_leaky_relu_s8", p, ALL_INT8, out_size=256), spec)
            x = np.float32(si) * (ALL_INT8.astype(np.float64) - zi)
            real = np.clip(np.round(np.where(x >= 0, x, alpha * x) / so) + zo, -128, 127)
            assert np.abs(spec - real).max() <= 1


def test_lookup_table_matches_float_function_and_c(lib):
    rng = np.random.default_rng(1700)
    functions = {
        "hard_sigmoid": lambda v: np.clip(v * np.float32(0.2) + np.float32(0.5), 0, 1),
        "gelu": lambda v: 0.5 * v * (1 + np.tanh(np.float32(0.7978845608) * (v + np.float32(0.044715) * v ** 3))),
        "silu": lambda v: v / (1 + np.exp(-v)),
        "nan_and_inf": lambda v: np.where(v > 0, np.float32(np.inf), np.float32(np.nan)),
    }
    for name, fn in functions.items():
        si, so = float(10 ** rng.uniform(-2, -0.5)), float(10 ** rng.uniform(-2.5, -1))
        zi, zo = (int(v) for v in rng.integers(-100, 100, 2))
        table = fx.lookup_table_int8(fn, si, zi, so, zo)
        assert table.dtype == np.int8 and table.shape == (256,)
        x = np.float32(si) * (ALL_INT8.astype(np.float32) - zi)
        with np.errstate(all="ignore"):
            y = fn(x).astype(np.float64)
        if name == "nan_and_inf":
            assert np.all(table[x > 0] == 127) and np.all(table[x <= 0] == zo)
        else:  # the nearest int8 value of the float result, clamped
            np.testing.assert_array_less(np.abs(table - np.clip(y / so + zo, -128, 127)), 0.5 + 1e-3)
        data = rng.integers(-128, 128, 1001).astype(np.int8)
        p = LutParams(data.size)
        spec = activation.lut_s8(p, data, table)
        np.testing.assert_array_equal(spec, table[data.astype(np.int64) + 128])
        np.testing.assert_array_equal(_call(lib, "tinyc_lut_s8", p, data, table, out_size=data.size), spec)


def test_lookup_table_rounds_ties_away_from_zero():
    # s_in = 1, s_out = 2: the identity lands on halves, which TfLiteRound takes away from zero
    table = fx.lookup_table_int8(lambda v: v, 1.0, 0, 2.0, 0)
    assert table[128 + 1] == 1 and table[128 - 1] == -1 and table[128 + 3] == 2 and table[128 - 3] == -2


@pytest.mark.parametrize("maximum", [1, 0])
def test_minmax_broadcasts(lib, maximum):
    rng = np.random.default_rng(1800 + maximum)
    for s1, s2 in [((1, 5, 7, 3), (1, 5, 7, 3)), ((1, 6, 5, 16), (1, 1, 1, 16)), ((1, 1, 1, 1), (2, 3, 4, 5)),
                   ((1, 4, 1, 3), (1, 1, 7, 1))]:
        out_shape = tuple(max(a, b) for a, b in zip(s1, s2))
        x1 = rng.integers(-128, 128, s1).astype(np.int8)
        x2 = rng.integers(-128, 128, s2).astype(np.int8)
        from tinyc.ops.lowering import strides4

        p = MinMaxParams(out_shape, strides4(s1, out_shape, None), strides4(s2, out_shape, None), maximum)
        spec = elementwise.minmax_s8(p, x1, x2)
        np.testing.assert_array_equal(spec, (np.maximum if maximum else np.minimum)(x1, x2))
        np.testing.assert_array_equal(_call(lib, "tinyc_minmax_s8", p, x1, x2, out_size=spec.size),
                                      spec.reshape(-1))


def _matmul_case(rng, batches, m, k, n, a_broadcast=False, b_broadcast=False):
    a = rng.integers(-128, 128, (1 if a_broadcast else batches, m, k)).astype(np.int8)
    b = rng.integers(-128, 128, (1 if b_broadcast else batches, k, n)).astype(np.int8)
    s1, s2, so = (float(10 ** rng.uniform(-2, 0)) for _ in range(3))
    so *= k ** 0.5
    z1, z2, zo = (int(v) for v in rng.integers(-128, 128, 3))
    mult, shift = fx.quantize_multiplier(float(np.float32(np.float32(s1) * np.float32(s2))) / float(np.float32(so)))
    p = MatMulParams(batches, m, k, n, 0 if a_broadcast else m * k, 0 if b_broadcast else k * n, -z1, -z2, zo,
                     mult, shift)
    return p, a, b


def test_matmul_odd_shapes_and_broadcast_batches(lib):
    rng = np.random.default_rng(1900)
    for shape in [(1, 1, 1, 1), (4, 17, 16, 17), (3, 5, 7, 2), (2, 1, 33, 9), (4, 17, 17, 16)]:
        for a_b, b_b in [(False, False), (True, False), (False, True)]:
            p, a, b = _matmul_case(rng, *shape, a_broadcast=a_b, b_broadcast=b_b)
            spec = conv.matmul_s8(p, a, b)
            fa, fb = a.astype(np.int64) - (-p.a_offset), b.astype(np.int64) - (-p.b_offset)
            acc = np.matmul(np.broadcast_to(fa, (p.batches, p.rows, p.depth)),
                            np.broadcast_to(fb, (p.batches, p.depth, p.cols)))
            ref = np.clip(fx.multiply_by_quantized_multiplier(acc, p.out_mult, p.out_shift) + p.out_offset, -128, 127)
            np.testing.assert_array_equal(spec, ref)
            np.testing.assert_array_equal(_call(lib, "tinyc_matmul_s8", p, a, b, out_size=spec.size),
                                          spec.reshape(-1))


def _layer_norm_params(rng, rows, depth, eps=1e-5, s_in=None):
    s_in = s_in or float(10 ** rng.uniform(-2, 0))
    s_out = float(10 ** rng.uniform(-2, -1))
    z_in, z_out = (int(v) for v in rng.integers(-100, 100, 2))
    gamma = rng.uniform(0.5, 1.5, depth) * rng.choice([-1, 1], depth)
    beta = rng.uniform(-0.5, 0.5, depth)
    return s_in, z_in, s_out, z_out, gamma, beta, eps


def _lower_layer_norm(rows, depth, s_in, z_in, s_out, z_out, gamma, beta, eps):
    """The parameters LayerNorm.lower computes, from a one-node graph."""
    from tinyc.ir import Graph, Node, QuantParams, Tensor
    from tinyc.ops import get_op
    from tinyc.ops.norm import LayerNormAttrs

    g = Graph("ln")
    g.add_tensor(Tensor("x", (rows, depth), np.float32, quant=QuantParams(np.float32(s_in), np.int32(z_in))))
    g.add_tensor(Tensor("y", (rows, depth), np.float32, quant=QuantParams(np.float32(s_out), np.int32(z_out))))
    gname = g.add_const("gamma", gamma.astype(np.float32))
    bname = g.add_const("beta", beta.astype(np.float32))
    node = Node("LayerNorm", "ln", ["x", gname, bname], ["y"], LayerNormAttrs(eps))
    (call,) = get_op("LayerNorm").lower(node, g)
    return call.params, g.tensors[call.inputs[1]].data, g.tensors[call.inputs[2]].data


def test_layer_norm_c_matches_spec_and_float(lib):
    rng = np.random.default_rng(2000)
    for rows, depth in [(1, 1), (17, 64), (3, 7), (50, 64), (2, 384), (1, 4096)]:
        args = _layer_norm_params(rng, rows, depth)
        s_in, z_in, s_out, z_out, gamma, beta, eps = args
        p, gq, bq = _lower_layer_norm(rows, depth, *args)
        x = rng.integers(-128, 128, (rows, depth)).astype(np.int8)
        if rows > 1:
            x[1] = z_in if -128 <= z_in <= 127 else 0  # a constant row: variance 0, only epsilon
        spec = norm.layer_norm_s8(p, x, gq, bq)
        out = _call(lib, "tinyc_layer_norm_s8", p, x, gq.astype(np.int32), bq.astype(np.int32), out_size=x.size)
        np.testing.assert_array_equal(out, spec.reshape(-1))
        # against the float formula on the dequantized input: within one output step
        xf = s_in * (x.astype(np.float64) - z_in)
        mean = xf.mean(-1, keepdims=True)
        yf = (xf - mean) / np.sqrt(((xf - mean) ** 2).mean(-1, keepdims=True) + eps) * gamma + beta
        ref = np.clip(np.round(yf / s_out) + z_out, -128, 127)
        assert np.abs(spec.astype(np.int64) - ref).max() <= 1, (rows, depth)


def test_layer_norm_in_place_and_extreme_scales(lib):
    rng = np.random.default_rng(2100)
    for s_in in (1e-6, 1e-3, 10.0):
        args = _layer_norm_params(rng, 5, 33, eps=1e-12 if s_in > 1 else 1e-5, s_in=s_in)
        p, gq, bq = _lower_layer_norm(5, 33, *args)
        x = rng.integers(-128, 128, (5, 33)).astype(np.int8)
        spec = norm.layer_norm_s8(p, x, gq, bq).reshape(-1)
        buf = x.copy().reshape(-1)
        lib.tinyc_layer_norm_s8(ctypes.byref(p.to_ctypes()), _p(buf), _p(gq.astype(np.int32)),
                                _p(bq.astype(np.int32)), _p(buf))
        np.testing.assert_array_equal(buf, spec)


def test_layer_norm_rejects_rows_too_long():
    from tinyc.errors import TinycError

    rng = np.random.default_rng(1)
    with pytest.raises(TinycError, match="up to 4096"):
        _lower_layer_norm(1, 4097, *_layer_norm_params(rng, 1, 4097))


def test_gelu_erf_is_accurate():
    from tinyc.ops.elementwise import _erf

    x = np.linspace(-6, 6, 100_001)
    ref = np.array([math.erf(v) for v in x])
    assert np.abs(_erf(x) - ref).max() < 2e-7


def test_resize_bilinear_c_matches_spec(lib):
    rng = np.random.default_rng(2200)
    for h, w, oh, ow in [(3, 4, 7, 5), (8, 8, 16, 16), (9, 7, 3, 2), (1, 6, 1, 12), (2, 2, 17, 17), (4, 4, 4, 4)]:
        for corners, half in [(False, True), (False, False), (True, False)]:
            c = int(rng.integers(1, 6))
            x = rng.integers(-128, 128, (h, w, c)).astype(np.int8)
            p = ResizeBilinearParams(h, w, c, oh, ow, fx.resize_bilinear_scale_10(h, oh, corners),
                                     fx.resize_bilinear_scale_10(w, ow, corners), int(half))
            spec = data.resize_bilinear_s8(p, x)
            assert spec.shape == (oh, ow, c)
            np.testing.assert_array_equal(_call(lib, "tinyc_resize_bilinear_s8", p, x, out_size=spec.size),
                                          spec.reshape(-1))
            if (oh, ow) == (h, w) and not corners:  # the identity resize copies
                np.testing.assert_array_equal(spec, x)


@pytest.mark.parametrize("kind", ["max", "avg"])
def test_dilated_pooling_c_matches_spec_and_numpy(lib, kind):
    """Taps dil apart, padding on each side, odd channel counts (the DSP path
    takes 4 channels at a time, the rest one by one)."""
    rng = np.random.default_rng(2300)
    for h, w, c, k, s, d, pad in [(9, 9, 5, 3, 1, 2, 2), (10, 7, 8, 2, 2, 3, 0), (6, 6, 4, 3, 1, 2, 0),
                                  (5, 8, 3, 3, 2, 2, 1), (7, 7, 1, 2, 1, 4, 3)]:
        oh = (h + 2 * pad - ((k - 1) * d + 1)) // s + 1
        ow = (w + 2 * pad - ((k - 1) * d + 1)) // s + 1
        x = rng.integers(-128, 128, (h, w, c)).astype(np.int8)
        p = PoolParams(h, w, c, oh, ow, k, k, s, s, pad, pad, 0, 0, -128, 127, d, d)
        spec = (pool.max_pool_s8 if kind == "max" else pool.avg_pool_s8)(p, x)
        # numpy: every tap inside the input, dil apart
        ref = np.empty((oh, ow, c), np.int64)
        for oy in range(oh):
            for ox in range(ow):
                taps = [x[oy * s - pad + i * d, ox * s - pad + j * d] for i in range(k) for j in range(k)
                        if 0 <= oy * s - pad + i * d < h and 0 <= ox * s - pad + j * d < w]
                t = np.array(taps, np.int64)
                if kind == "max":
                    ref[oy, ox] = t.max(axis=0)
                else:
                    acc, n = t.sum(axis=0), len(taps)
                    ref[oy, ox] = np.where(acc > 0, (acc + n // 2) // n, -((-acc + n // 2) // n))
        np.testing.assert_array_equal(spec.reshape(oh, ow, c), ref)
        name = "tinyc_max_pool_s8" if kind == "max" else "tinyc_avg_pool_s8"
        np.testing.assert_array_equal(_call(lib, name, p, x, out_size=spec.size), spec.reshape(-1))
