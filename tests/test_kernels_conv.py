"""Convolution, fully connected and pooling int8 kernels: numpy spec vs C, bit for bit.

* The numpy specs (tinyc.kernels.conv / pool) are checked against independent
  formulations: a plain loop convolution, tinyc.quant.fixedpoint's
  average_pool_int8 and mean_int8 (themselves checked against TFLM).
* The C kernels (runtime_c/src/conv.c, fc.c, pool.c) are compiled with the host
  compiler into a shared library and called through ctypes on many random
  cases: odd shapes, kernels 1x1 to 7x7, strides, dilations, asymmetric
  padding, groups, depth multipliers, per-channel multipliers (some > 1),
  random offsets and narrow activation ranges.
* The C sources build for a Cortex-M4 with no undefined symbol (no libc, no
  float or division helpers).
"""

from __future__ import annotations

import ctypes
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tinyc.kernels import KERNELS
from tinyc.kernels.conv import (
    conv2d_1x1_s8,
    conv2d_mve_s8,
    conv2d_s8,
    conv2d_wide_s8,
    depthwise_conv2d_mve_s8,
    depthwise_conv2d_s8,
    depthwise_inplace_ok,
    fold_bias,
    fully_connected_mve_s8,
    fully_connected_s8,
    fully_connected_wide_s8,
    mve_bias,
    mve_pack,
    mve_pack_dw,
    mve_unpack,
    mve_unpack_dw,
    unwiden,
    widen,
)
from tinyc.kernels.params import ConvParams, FCParams, MeanParams, PoolParams
from tinyc.kernels.pool import avg_pool_s8, max_pool_s8, mean_s8
from tinyc.quant import fixedpoint as fx

RUNTIME = Path(__file__).resolve().parent.parent / "tinyc" / "runtime_c"
SOURCES = [RUNTIME / "src" / name for name in ("conv.c", "fc.c", "pool.c")]
CFLAGS = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-O2"]
ARM_FLAGS = ["-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16", "-ffreestanding"]


# ----------------------------------------------------------------------------
# The C library
# ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lib(runtime_lib):
    dll = runtime_lib
    for name in ("tinyc_conv2d_s8", "tinyc_conv2d_1x1_s8", "tinyc_depthwise_conv2d_s8"):  # ..., scratch, bytes
        getattr(dll, name).argtypes = [ctypes.c_void_p] * 8 + [ctypes.c_int32]
        getattr(dll, name).restype = None
        getattr(dll, name + "_scratch_bytes").argtypes = [ctypes.c_void_p]
        getattr(dll, name + "_scratch_bytes").restype = ctypes.c_int32
    dll.tinyc_fully_connected_s8.argtypes = [ctypes.c_void_p] * 8 + [ctypes.c_int32]
    dll.tinyc_fully_connected_s8.restype = None
    dll.tinyc_fully_connected_s8_scratch_bytes.argtypes = [ctypes.c_void_p]
    dll.tinyc_fully_connected_s8_scratch_bytes.restype = ctypes.c_int32
    for name in ("tinyc_conv2d_wide_s8", "tinyc_fully_connected_wide_s8", "tinyc_conv2d_mve_s8"):  # ..., scratch, bytes
        getattr(dll, name).argtypes = [ctypes.c_void_p] * 8 + [ctypes.c_int32]
        getattr(dll, name).restype = None
    dll.tinyc_fully_connected_mve_s8.argtypes = [ctypes.c_void_p] * 7
    dll.tinyc_fully_connected_mve_s8.restype = None
    dll.tinyc_depthwise_conv2d_mve_s8.argtypes = [ctypes.c_void_p] * 8 + [ctypes.c_int32]
    dll.tinyc_depthwise_conv2d_inplace_mve_s8.argtypes = [ctypes.c_void_p] * 7 + [ctypes.c_int32]
    for name in ("tinyc_depthwise_conv2d_mve_s8", "tinyc_depthwise_conv2d_inplace_mve_s8"):
        getattr(dll, name).restype = None
        getattr(dll, name + "_scratch_bytes").argtypes = [ctypes.c_void_p]
        getattr(dll, name + "_scratch_bytes").restype = ctypes.c_int32
    for name in ("tinyc_max_pool_s8", "tinyc_avg_pool_s8", "tinyc_mean_s8"):
        getattr(dll, name).argtypes = [ctypes.c_void_p] * 3
        getattr(dll, name).restype = None
    return dll


def _ptr(a: np.ndarray | None):
    return None if a is None else a.ctypes.data_as(ctypes.c_void_p)


def run_c_weighted(lib, name: str, p, x, w, bias, mult, shift, out_shape) -> np.ndarray:
    """Call a conv / FC kernel; the arrays are made contiguous with the C types."""
    arrays = [
        np.ascontiguousarray(x, dtype=np.int8),
        np.ascontiguousarray(w, dtype=np.int8),
        None if bias is None else np.ascontiguousarray(bias, dtype=np.int32),
        np.ascontiguousarray(mult, dtype=np.int32),
        np.ascontiguousarray(shift, dtype=np.int32),
    ]
    cp = p.to_ctypes()
    # without scratch, then with the scratch the kernel asks for (the portable
    # C's int16 copy of its input): the same bytes
    outs = []
    for size in (0, getattr(lib, name + "_scratch_bytes")(ctypes.byref(cp))):
        scratch = np.full(max(size, 1), 0x5A, dtype=np.int8)  # garbage: the kernel writes before it reads
        out = np.full(out_shape, 99, dtype=np.int8)  # not 0: every element must be written
        getattr(lib, name)(ctypes.byref(cp), *map(_ptr, arrays), _ptr(out), _ptr(scratch) if size else None, size)
        outs.append(out)
    np.testing.assert_array_equal(outs[1], outs[0], err_msg=f"{name}: with and without scratch")
    return outs[0]


def run_c_pool(lib, name: str, p, x, out_shape) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.int8)
    out = np.full(out_shape, 99, dtype=np.int8)
    cp = p.to_ctypes()
    getattr(lib, name)(ctypes.byref(cp), _ptr(x), _ptr(out))
    return out


# ----------------------------------------------------------------------------
# Random cases
# ----------------------------------------------------------------------------


def random_requant(rng, n: int, fan_in: int = 1):
    """Per-channel (mult, shift) from random reals, mostly in [1e-4, 0.9], sometimes > 1.

    Half the time the reals are scaled to the accumulators' spread (about
    74 * 74 * sqrt(fan_in) for uniform int8 data), as a real model's are, so
    that most outputs land inside the clamp range instead of saturating.
    """
    if rng.random() < 0.5:
        reals = np.exp(rng.uniform(np.log(1e-4), np.log(0.9), n))
    else:
        reals = np.clip(rng.uniform(10, 60, n) / (100.0 * 100.0 * np.sqrt(fan_in)), 1e-6, 0.9)
    if rng.random() < 0.2:
        reals[rng.random(n) < 0.3] = rng.uniform(1.0, 4.0)
    return fx.quantize_multiplier_array(reals)


def random_act(rng, out_offset: int) -> tuple[int, int]:
    r = rng.random()
    if r < 0.4:
        return -128, 127
    if r < 0.7:
        return out_offset, 127  # ReLU
    lo = int(rng.integers(-128, 100))
    return lo, int(rng.integers(lo, 128))


def conv_out(size: int, k: int, stride: int, dil: int, pad_total: int) -> int:
    return (size + pad_total - (k - 1) * dil - 1) // stride + 1


def random_conv_params(rng, *, depthwise: bool = False, pointwise: bool = False) -> ConvParams:
    chans = [1, 2, 3, 4, 5, 7, 8, 16, 17]
    while True:
        if pointwise:
            kh = kw = 1
            dh = dw = 1
        else:
            kh, kw = [(1, 1), (3, 3), (5, 5), (7, 1), (1, 7), (2, 3), (3, 2)][rng.integers(7)]
            dh, dw = (int(rng.integers(1, 3)), int(rng.integers(1, 3))) if rng.random() < 0.3 else (1, 1)
        sh, sw = int(rng.integers(1, 4)), int(rng.integers(1, 4))
        h, w = int(rng.integers(1, 14)), int(rng.integers(1, 14))
        if pointwise:
            pt = pl = pb = pr = 0
        else:
            pt, pb, pl, pr = (int(v) for v in rng.integers(0, 4, 4))
        oh, ow = conv_out(h, kh, sh, dh, pt + pb), conv_out(w, kw, sw, dw, pl + pr)
        if oh >= 1 and ow >= 1:
            break
    groups, dm = 1, 1
    if depthwise:
        in_c = int(rng.choice(chans))
        dm = int(rng.choice([1, 1, 2, 3]))
        out_c = in_c * dm
    elif not pointwise and rng.random() < 0.3:
        groups = int(rng.choice([2, 3]))
        in_c = groups * int(rng.integers(1, 4))
        out_c = groups * int(rng.integers(1, 4))
    else:
        in_c, out_c = int(rng.choice(chans)), int(rng.choice(chans))
    out_offset = int(rng.integers(-128, 128))
    lo, hi = random_act(rng, out_offset)
    return ConvParams(
        in_h=h, in_w=w, in_c=in_c, out_h=oh, out_w=ow, out_c=out_c, k_h=kh, k_w=kw,
        stride_h=sh, stride_w=sw, dil_h=dh, dil_w=dw, pad_t=pt, pad_l=pl,
        groups=groups, depth_multiplier=dm,
        in_offset=int(rng.integers(-127, 129)), out_offset=out_offset, act_min=lo, act_max=hi,
    )  # fmt: skip


def random_weighted_inputs(rng, p: ConvParams, w_shape):
    x = rng.integers(-128, 128, (1, p.in_h, p.in_w, p.in_c), dtype=np.int8)
    w = rng.integers(-128, 128, w_shape, dtype=np.int8)
    fan_in = int(np.prod(w_shape[1:]))
    spread = int(74 * 74 * np.sqrt(fan_in))
    bias = None if rng.random() < 0.25 else rng.integers(-spread, spread, p.out_c).astype(np.int32)
    mult, shift = random_requant(rng, p.out_c, fan_in)
    return x, w, bias, mult, shift


# ----------------------------------------------------------------------------
# The numpy specs against independent formulations
# ----------------------------------------------------------------------------


def loop_conv(p: ConvParams, x, w, bias, mult, shift) -> np.ndarray:
    """TFLM's ConvPerChannel as written in C, with Python ints (the slow, obvious way)."""
    x = np.asarray(x).reshape(p.in_h, p.in_w, p.in_c)
    cg, og = p.in_c // p.groups, p.out_c // p.groups
    out = np.zeros((1, p.out_h, p.out_w, p.out_c), dtype=np.int8)
    for oy in range(p.out_h):
        for ox in range(p.out_w):
            for o in range(p.out_c):
                g = o // og
                acc = 0
                for ky in range(p.k_h):
                    for kx in range(p.k_w):
                        iy = oy * p.stride_h - p.pad_t + ky * p.dil_h
                        ix = ox * p.stride_w - p.pad_l + kx * p.dil_w
                        if not (0 <= iy < p.in_h and 0 <= ix < p.in_w):
                            continue
                        for c in range(cg):
                            acc += (int(x[iy, ix, g * cg + c]) + p.in_offset) * int(w[o, ky, kx, c])
                if bias is not None:
                    acc += int(bias[o])
                v = int(fx.multiply_by_quantized_multiplier(acc, int(mult[o]), int(shift[o]))) + p.out_offset
                out[0, oy, ox, o] = min(max(v, p.act_min), p.act_max)
    return out


def test_conv2d_spec_matches_loops():
    rng = np.random.default_rng(1)
    for i in range(30):
        p = random_conv_params(rng)
        p.in_h, p.in_w = min(p.in_h, 6), min(p.in_w, 6)
        p.out_h = conv_out(p.in_h, p.k_h, p.stride_h, p.dil_h, p.pad_t + int(rng.integers(0, 3)))
        p.out_w = conv_out(p.in_w, p.k_w, p.stride_w, p.dil_w, p.pad_l + int(rng.integers(0, 3)))
        if p.out_h < 1 or p.out_w < 1:
            continue
        args = random_weighted_inputs(rng, p, (p.out_c, p.k_h, p.k_w, p.in_c // p.groups))
        np.testing.assert_array_equal(conv2d_s8(p, *args), loop_conv(p, *args), err_msg=f"case {i}: {p}")


def test_depthwise_and_pointwise_specs_are_conv2d():
    """Depthwise = grouped conv with one group per input channel; 1x1 = conv2d with k = 1."""
    rng = np.random.default_rng(2)
    for _ in range(20):
        p = random_conv_params(rng, depthwise=True)
        x, w, bias, mult, shift = random_weighted_inputs(rng, p, (p.out_c, p.k_h, p.k_w))
        as_conv = ConvParams(**{**vars(p), "groups": p.in_c, "depth_multiplier": 1})
        np.testing.assert_array_equal(
            depthwise_conv2d_s8(p, x, w, bias, mult, shift),
            loop_conv(as_conv, x, w.reshape(p.out_c, p.k_h, p.k_w, 1), bias, mult, shift),
        )
        p = random_conv_params(rng, pointwise=True)
        args = random_weighted_inputs(rng, p, (p.out_c, 1, 1, p.in_c))
        np.testing.assert_array_equal(conv2d_1x1_s8(p, *args), conv2d_s8(p, *args))


def test_fully_connected_spec_matches_loops():
    rng = np.random.default_rng(3)
    for per_channel in (0, 1):
        p = FCParams(batches=3, in_features=11, out_features=5, in_offset=17, out_offset=-9,
                     act_min=-100, act_max=90, per_channel=per_channel)  # fmt: skip
        x = rng.integers(-128, 128, (3, 11), dtype=np.int8)
        w = rng.integers(-128, 128, (5, 11), dtype=np.int8)
        bias = rng.integers(-5000, 5000, 5).astype(np.int32)
        mult, shift = random_requant(rng, 5)
        got = fully_connected_s8(p, x, w, bias, mult, shift)
        assert got.shape == (3, 5) and got.dtype == np.int8 and got.flags.c_contiguous
        for b in range(3):
            for o in range(5):
                acc = sum((int(x[b, i]) + 17) * int(w[o, i]) for i in range(11)) + int(bias[o])
                k = o if per_channel else 0
                v = int(fx.multiply_by_quantized_multiplier(acc, int(mult[k]), int(shift[k]))) - 9
                assert got[b, o] == min(max(v, -100), 90)


def random_pool_params(rng, *, valid_windows: bool) -> PoolParams:
    while True:
        kh, kw = int(rng.integers(1, 6)), int(rng.integers(1, 6))
        sh, sw = int(rng.integers(1, 4)), int(rng.integers(1, 4))
        h, w = int(rng.integers(1, 13)), int(rng.integers(1, 13))
        # TFLite SAME-style padding keeps every window in touch with the input.
        pt, pl = (int(rng.integers(0, kh)), int(rng.integers(0, kw))) if rng.random() < 0.6 else (0, 0)
        pb, pr = int(rng.integers(0, kh)), int(rng.integers(0, kw))
        oh, ow = conv_out(h, kh, sh, 1, pt + pb), conv_out(w, kw, sw, 1, pl + pr)
        if oh < 1 or ow < 1:
            continue
        if valid_windows and ((oh - 1) * sh - pt >= h or (ow - 1) * sw - pl >= w):
            continue
        lo, hi = random_act(rng, int(rng.integers(-128, 128)))
        return PoolParams(
            in_h=h, in_w=w, channels=int(rng.choice([1, 3, 5, 8, 17])), out_h=oh, out_w=ow, k_h=kh, k_w=kw,
            stride_h=sh, stride_w=sw, pad_t=pt, pad_l=pl,
            count_include_pad=int(rng.random() < 0.3), pad_value=int(rng.integers(-128, 128)),
            act_min=lo, act_max=hi,
        )  # fmt: skip


def test_avg_pool_spec_matches_fixedpoint():
    rng = np.random.default_rng(4)
    for _ in range(60):
        p = random_pool_params(rng, valid_windows=True)
        p.count_include_pad = 0
        x = rng.integers(-128, 128, (1, p.in_h, p.in_w, p.channels), dtype=np.int8)
        want = fx.average_pool_int8(x, (p.k_h, p.k_w), (p.stride_h, p.stride_w), (p.pad_t, p.pad_l),
                                    (p.out_h, p.out_w), p.act_min, p.act_max)  # fmt: skip
        np.testing.assert_array_equal(avg_pool_s8(p, x), want)


def test_avg_pool_spec_count_include_pad_is_pad_then_pool():
    """count_include_pad: the same as padding with pad_value explicitly, then a VALID pool."""
    rng = np.random.default_rng(5)
    for _ in range(40):
        p = random_pool_params(rng, valid_windows=True)
        p.count_include_pad = 1
        x = rng.integers(-128, 128, (1, p.in_h, p.in_w, p.channels), dtype=np.int8)
        pb = max(0, (p.out_h - 1) * p.stride_h + p.k_h - p.pad_t - p.in_h)
        pr = max(0, (p.out_w - 1) * p.stride_w + p.k_w - p.pad_l - p.in_w)
        xp = np.pad(x, ((0, 0), (p.pad_t, pb), (p.pad_l, pr), (0, 0)), constant_values=p.pad_value)
        want = fx.average_pool_int8(xp, (p.k_h, p.k_w), (p.stride_h, p.stride_w), (0, 0),
                                    (p.out_h, p.out_w), p.act_min, p.act_max)  # fmt: skip
        np.testing.assert_array_equal(avg_pool_s8(p, x), want)


def test_max_pool_spec_matches_loops():
    rng = np.random.default_rng(6)
    for _ in range(40):
        p = random_pool_params(rng, valid_windows=False)
        x = rng.integers(-128, 128, (p.in_h, p.in_w, p.channels), dtype=np.int8)
        want = np.empty((1, p.out_h, p.out_w, p.channels), dtype=np.int8)
        for oy in range(p.out_h):
            for ox in range(p.out_w):
                y0, x0 = oy * p.stride_h - p.pad_t, ox * p.stride_w - p.pad_l
                tile = x[max(0, y0) : y0 + p.k_h, max(0, x0) : x0 + p.k_w].reshape(-1, p.channels)
                m = np.maximum(tile.max(axis=0), -128) if tile.size else np.full(p.channels, -128)
                want[0, oy, ox] = np.clip(m, p.act_min, p.act_max)
        np.testing.assert_array_equal(max_pool_s8(p, x), want)


def random_mean_case(rng):
    shape = tuple(int(v) for v in rng.integers(1, 7, int(rng.integers(2, 5))))
    axes = sorted(rng.choice(len(shape), int(rng.integers(1, len(shape))), replace=False).tolist())
    if axes != list(range(axes[0], axes[-1] + 1)):  # one contiguous run of axes: [outer][reduce][inner]
        axes = list(range(axes[0], axes[-1] + 1))
    s_in, s_out = float(rng.uniform(0.01, 0.2)), float(rng.uniform(0.01, 0.2))
    zp_in, zp_out = int(rng.integers(-128, 128)), int(rng.integers(-128, 128))
    outer = int(np.prod(shape[: axes[0]]))
    reduce = int(np.prod([shape[a] for a in axes]))
    inner = int(np.prod(shape[axes[-1] + 1 :]))
    m, s = fx.quantize_multiplier(fx._f32(s_in) / fx._f32(s_out))
    m, s = fx.mean_int8_multiplier(m, s, reduce)
    p = MeanParams(outer=outer, reduce=reduce, inner=inner, in_zero_point=zp_in, out_offset=zp_out, mult=m, shift=s)
    return shape, axes, (s_in, zp_in, s_out, zp_out), p


def test_mean_spec_matches_fixedpoint():
    rng = np.random.default_rng(7)
    for _ in range(60):
        shape, axes, (s_in, zp_in, s_out, zp_out), p = random_mean_case(rng)
        x = rng.integers(-128, 128, shape, dtype=np.int8)
        want = fx.mean_int8(x, axes, s_in, zp_in, s_out, zp_out, keepdims=False)
        got = mean_s8(p, x)
        assert got.shape == (p.outer, p.inner)
        np.testing.assert_array_equal(got.reshape(-1), want.reshape(-1))


def test_specs_are_fast_on_a_large_feature_map():
    """A 176x176 feature map, as in the real models, stays well under a second per kernel."""
    import time

    rng = np.random.default_rng(8)
    p = ConvParams(in_h=176, in_w=176, in_c=16, out_h=88, out_w=88, out_c=24, k_h=3, k_w=3,
                   stride_h=2, stride_w=2, pad_t=0, pad_l=0, in_offset=5)  # fmt: skip
    x, w, _, mult, shift = random_weighted_inputs(rng, p, (24, 3, 3, 16))
    bias = rng.integers(-1000, 1000, 24).astype(np.int32)
    t = time.perf_counter()
    conv2d_s8(p, x, w, bias, mult, shift)
    dp = ConvParams(**{**vars(p), "out_c": 16, "out_h": 176, "out_w": 176, "stride_h": 1, "stride_w": 1,
                       "pad_t": 1, "pad_l": 1})  # fmt: skip
    depthwise_conv2d_s8(dp, x, w[:16, :, :, 0], bias[:16], mult[:16], shift[:16])
    pp = PoolParams(in_h=176, in_w=176, channels=16, out_h=88, out_w=88, k_h=2, k_w=2, stride_h=2, stride_w=2)
    avg_pool_s8(pp, x)
    max_pool_s8(pp, x)
    assert time.perf_counter() - t < 5.0


# ----------------------------------------------------------------------------
# C kernels against the numpy specs
# ----------------------------------------------------------------------------


def test_conv2d_c_matches_spec(lib):
    rng = np.random.default_rng(10)
    for i in range(300):
        p = random_conv_params(rng)
        x, w, bias, mult, shift = random_weighted_inputs(rng, p, (p.out_c, p.k_h, p.k_w, p.in_c // p.groups))
        want = conv2d_s8(p, x, w, bias, mult, shift)
        got = run_c_weighted(lib, "tinyc_conv2d_s8", p, x, w, bias, mult, shift, want.shape)
        np.testing.assert_array_equal(got, want, err_msg=f"case {i}: {p}")


def test_conv2d_1x1_c_matches_spec(lib):
    rng = np.random.default_rng(11)
    for i in range(200):
        p = random_conv_params(rng, pointwise=True)
        x, w, bias, mult, shift = random_weighted_inputs(rng, p, (p.out_c, p.in_c))
        want = conv2d_1x1_s8(p, x, w, bias, mult, shift)
        got = run_c_weighted(lib, "tinyc_conv2d_1x1_s8", p, x, w, bias, mult, shift, want.shape)
        np.testing.assert_array_equal(got, want, err_msg=f"case {i}: {p}")


def test_depthwise_c_matches_spec(lib):
    rng = np.random.default_rng(12)
    for i in range(300):
        p = random_conv_params(rng, depthwise=True)
        w_shape = (p.out_c, p.k_h, p.k_w) if i % 2 else (p.out_c, p.k_h, p.k_w, 1)
        x, w, bias, mult, shift = random_weighted_inputs(rng, p, w_shape)
        want = depthwise_conv2d_s8(p, x, w, bias, mult, shift)
        got = run_c_weighted(lib, "tinyc_depthwise_conv2d_s8", p, x, w, bias, mult, shift, want.shape)
        np.testing.assert_array_equal(got, want, err_msg=f"case {i}: {p}")


def test_conv_c_windows_in_padding(lib):
    """Padding wider than the kernel: some outputs see only zero points (bias alone)."""
    p = ConvParams(in_h=3, in_w=2, in_c=3, out_h=5, out_w=6, out_c=4, k_h=2, k_w=1, stride_h=1, stride_w=1,
                   pad_t=3, pad_l=2, in_offset=-7, out_offset=3)  # fmt: skip
    rng = np.random.default_rng(13)
    x, w, bias, mult, shift = random_weighted_inputs(rng, p, (4, 2, 1, 3))
    bias = np.arange(4, dtype=np.int32) * 1000
    want = conv2d_s8(p, x, w, bias, mult, shift)
    np.testing.assert_array_equal(want, loop_conv(p, x, w, bias, mult, shift))
    np.testing.assert_array_equal(run_c_weighted(lib, "tinyc_conv2d_s8", p, x, w, bias, mult, shift, want.shape), want)
    dp = ConvParams(**{**vars(p), "out_c": 6, "depth_multiplier": 2})
    x, w, bias, mult, shift = random_weighted_inputs(rng, dp, (6, 2, 1))
    want = depthwise_conv2d_s8(dp, x, w, bias, mult, shift)
    got = run_c_weighted(lib, "tinyc_depthwise_conv2d_s8", dp, x, w, bias, mult, shift, want.shape)
    np.testing.assert_array_equal(got, want)


def random_fc_case(rng):
    """(params, x, w, bias, mult, shift) of a random fully connected layer."""
    out_offset = int(rng.integers(-128, 128))
    lo, hi = random_act(rng, out_offset)
    p = FCParams(
        batches=int(rng.integers(1, 4)), in_features=int(rng.choice([1, 3, 5, 7, 17, 64, 250])),
        out_features=int(rng.choice([1, 2, 5, 10, 17])), in_offset=int(rng.integers(-127, 129)),
        out_offset=out_offset, act_min=lo, act_max=hi, per_channel=int(rng.random() < 0.5),
    )  # fmt: skip
    x = rng.integers(-128, 128, (p.batches, p.in_features), dtype=np.int8)
    w = rng.integers(-128, 128, (p.out_features, p.in_features), dtype=np.int8)
    bias = None if rng.random() < 0.25 else rng.integers(-(1 << 14), 1 << 14, p.out_features).astype(np.int32)
    mult, shift = random_requant(rng, p.out_features if p.per_channel else 1, p.in_features)
    return p, x, w, bias, mult, shift


def test_fully_connected_c_matches_spec(lib):
    rng = np.random.default_rng(14)
    for i in range(200):
        p, x, w, bias, mult, shift = random_fc_case(rng)
        want = fully_connected_s8(p, x, w, bias, mult, shift)
        assert want.shape == (p.batches, p.out_features)
        got = run_c_weighted(lib, "tinyc_fully_connected_s8", p, x, w, bias, mult, shift, want.shape)
        np.testing.assert_array_equal(got, want, err_msg=f"case {i}: {p}")


def run_c_wide(lib, name: str, p, x, words, folded, mult, shift, out_shape) -> np.ndarray:
    """Call a wide kernel (portable C on the host: no scratch)."""
    arrays = [np.ascontiguousarray(x, dtype=np.int8), np.ascontiguousarray(words, dtype=np.int32),
              np.ascontiguousarray(folded, dtype=np.int32), np.ascontiguousarray(mult, dtype=np.int32),
              np.ascontiguousarray(shift, dtype=np.int32)]
    out = np.full(out_shape, 99, dtype=np.int8)
    getattr(lib, name)(ctypes.byref(p.to_ctypes()), *map(_ptr, arrays), _ptr(out), None, 0)
    return out


def test_wide_layout_round_trips_and_lanes():
    """widen / unwiden are inverse for odd shapes, and the words hold the values
    where tinyc/wide.h says: channel pair, group, channel, even / odd, half."""
    rng = np.random.default_rng(40)
    for n, k in [(1, 1), (2, 4), (3, 5), (16, 27), (7, 8), (64, 576)]:
        w = rng.integers(-128, 128, (n, k), dtype=np.int8)
        words = widen(w)
        assert words.dtype == np.int32 and words.size == -(-n // 2) * -(-k // 4) * 4
        np.testing.assert_array_equal(unwiden(words, n, k), w)
        u = words.view(np.uint32).astype(np.int64)
        groups = -(-k // 4)
        for o in range(n):
            for i in range(k):
                word = u[((o // 2) * groups + i // 4) * 4 + 2 * (o % 2) + (i % 2)]
                half = (word >> 16) if i & 2 else word & 0xFFFF
                assert ((half ^ 0x8000) - 0x8000) == w[o, i]


def test_wide_specs_are_the_narrow_kernels():
    """The folded bias carries the input offset: the wide specs give conv2d_s8's and
    fully_connected_s8's values, padding included."""
    rng = np.random.default_rng(41)
    for _ in range(40):
        p = random_conv_params(rng)
        if p.groups > 1:
            continue
        x, w, bias, mult, shift = random_weighted_inputs(rng, p, (p.out_c, p.k_h, p.k_w, p.in_c))
        w2d = w.reshape(p.out_c, -1)
        got = conv2d_wide_s8(p, x, widen(w2d), fold_bias(w2d, bias, p.in_offset), mult, shift)
        np.testing.assert_array_equal(got, conv2d_s8(p, x, w, bias, mult, shift))


def test_conv2d_wide_c_matches_spec(lib):
    rng = np.random.default_rng(42)
    for i in range(200):
        p = random_conv_params(rng, pointwise=i % 3 == 0)
        if p.groups > 1:
            continue
        x, w, bias, mult, shift = random_weighted_inputs(rng, p, (p.out_c, p.k_h, p.k_w, p.in_c))
        w2d = w.reshape(p.out_c, -1)
        words, folded = widen(w2d), fold_bias(w2d, bias, p.in_offset)
        want = conv2d_wide_s8(p, x, words, folded, mult, shift)
        got = run_c_wide(lib, "tinyc_conv2d_wide_s8", p, x, words, folded, mult, shift, want.shape)
        np.testing.assert_array_equal(got, want, err_msg=f"case {i}: {p}")


def test_fully_connected_wide_c_matches_spec(lib):
    rng = np.random.default_rng(43)
    for i in range(150):
        p, x, w, bias, mult, shift = random_fc_case(rng)
        words, folded = widen(w), fold_bias(w, bias, p.in_offset)
        want = fully_connected_wide_s8(p, x, words, folded, mult, shift)
        np.testing.assert_array_equal(want, fully_connected_s8(p, x, w, bias, mult, shift))
        got = run_c_wide(lib, "tinyc_fully_connected_wide_s8", p, x, words, folded, mult, shift, want.shape)
        np.testing.assert_array_equal(got, want, err_msg=f"case {i}: {p}")


def test_mve_layout_round_trips_and_lanes():
    """mve_pack / mve_unpack are inverse for odd shapes, and byte
    ((o / 4) * chunks + i / 16) * 64 + (o % 4) * 16 + i % 16 holds w[o, i] (mve.c
    mve_weight); the padding is zero."""
    rng = np.random.default_rng(44)
    for n, k in [(1, 1), (4, 16), (3, 5), (16, 27), (7, 33), (64, 576)]:
        w = rng.integers(-128, 128, (n, k), dtype=np.int8)
        packed = mve_pack(w)
        chunks = -(-k // 16)
        assert packed.dtype == np.int8 and packed.size == -(-n // 4) * 4 * chunks * 16
        np.testing.assert_array_equal(mve_unpack(packed, n, k), w)
        o, i = np.meshgrid(np.arange(n), np.arange(k), indexing="ij")
        index = ((o // 4) * chunks + i // 16) * 64 + (o % 4) * 16 + i % 16
        np.testing.assert_array_equal(packed[index], w)
        assert np.count_nonzero(np.delete(packed, index.reshape(-1))) == 0
    assert mve_bias(np.arange(5, dtype=np.int32)).tolist() == [0, 1, 2, 3, 4, 0, 0, 0]


def run_c_mve(lib, name: str, p, x, packed, folded, mult, shift, out_shape, scratch: int = 0) -> np.ndarray:
    """Call a Helium kernel (its plain loop on the host), with ``scratch`` bytes
    (the convolution copies each window there when they hold one)."""
    arrays = [np.ascontiguousarray(x, dtype=np.int8), np.ascontiguousarray(packed, dtype=np.int8),
              np.ascontiguousarray(folded, dtype=np.int32), np.ascontiguousarray(mult, dtype=np.int32),
              np.ascontiguousarray(shift, dtype=np.int32)]
    out = np.full(out_shape, 99, dtype=np.int8)
    if name == "tinyc_fully_connected_mve_s8":
        getattr(lib, name)(ctypes.byref(p.to_ctypes()), *map(_ptr, arrays), _ptr(out))
    else:
        buf = np.full(max(scratch, 1), 0x5A, dtype=np.int8)
        getattr(lib, name)(ctypes.byref(p.to_ctypes()), *map(_ptr, arrays), _ptr(out),
                           _ptr(buf) if scratch else None, scratch)
    return out


def test_conv2d_mve_spec_and_c_are_the_narrow_kernel(lib):
    """The Helium layout and the padded folded bias give conv2d_s8's values, in the
    spec and in the C kernel's plain loop (with a window's scratch and without)."""
    rng = np.random.default_rng(45)
    for i in range(200):
        p = random_conv_params(rng, pointwise=i % 3 == 0)
        if p.groups > 1:
            continue
        x, w, bias, mult, shift = random_weighted_inputs(rng, p, (p.out_c, p.k_h, p.k_w, p.in_c))
        w2d = w.reshape(p.out_c, -1)
        packed, folded = mve_pack(w2d), mve_bias(fold_bias(w2d, bias, p.in_offset))
        want = conv2d_s8(p, x, w, bias, mult, shift)
        np.testing.assert_array_equal(conv2d_mve_s8(p, x, packed, folded, mult, shift), want)
        for scratch in (0, p.k_h * p.k_w * p.in_c):
            got = run_c_mve(lib, "tinyc_conv2d_mve_s8", p, x, packed, folded, mult, shift, want.shape, scratch)
            np.testing.assert_array_equal(got, want, err_msg=f"case {i}, scratch {scratch}: {p}")


def test_fully_connected_mve_spec_and_c_are_the_narrow_kernel(lib):
    rng = np.random.default_rng(46)
    for i in range(150):
        p, x, w, bias, mult, shift = random_fc_case(rng)
        packed, folded = mve_pack(w), mve_bias(fold_bias(w, bias, p.in_offset))
        want = fully_connected_s8(p, x, w, bias, mult, shift)
        np.testing.assert_array_equal(fully_connected_mve_s8(p, x, packed, folded, mult, shift), want)
        got = run_c_mve(lib, "tinyc_fully_connected_mve_s8", p, x, packed, folded, mult, shift, want.shape)
        np.testing.assert_array_equal(got, want, err_msg=f"case {i}: {p}")


def test_depthwise_mve_layout_spec_and_c(lib):
    """The Helium depthwise's weights (per group of 4 channels, per tap) and padded
    folded bias give depthwise_conv2d_s8's values: the spec, the C kernel's plain
    loop over its group planes (the scratch the descriptor plans, exactly), and the
    in-place variant over the input's own buffer where its conditions hold."""
    rng = np.random.default_rng(47)
    for c, kh, kw in [(1, 1, 1), (5, 3, 3), (8, 2, 3), (17, 7, 1)]:
        w = rng.integers(-128, 128, (c, kh, kw), dtype=np.int8)
        packed = mve_pack_dw(w)
        assert packed.size == -(-c // 4) * 4 * kh * kw
        np.testing.assert_array_equal(mve_unpack_dw(packed, c, kh, kw), w)
        g, t, j = 0, kh * kw - 1, min(c, 4) - 1
        assert packed[(g * kh * kw + t) * 4 + j] == w[j].reshape(-1)[t]
    done = 0
    for i in range(300):
        p = random_conv_params(rng, depthwise=True)
        if p.depth_multiplier != 1:
            continue
        x, w, bias, mult, shift = random_weighted_inputs(rng, p, (p.out_c, p.k_h, p.k_w))
        packed, folded = mve_pack_dw(w), mve_bias(fold_bias(w.reshape(p.out_c, -1), bias, p.in_offset))
        want = depthwise_conv2d_s8(p, x, w, bias, mult, shift)
        np.testing.assert_array_equal(depthwise_conv2d_mve_s8(p, x, packed, folded, mult, shift), want)
        ctp = p.to_ctypes()
        n = KERNELS["depthwise_conv2d_mve_s8"].scratch_bytes(p, False)
        assert lib.tinyc_depthwise_conv2d_mve_s8_scratch_bytes(ctypes.byref(ctp)) == n
        arrays = [np.ascontiguousarray(a, dtype=t) for a, t in ((packed, np.int8), (folded, np.int32),
                                                                (mult, np.int32), (shift, np.int32))]
        scratch = np.zeros(n + 16, dtype=np.int32)  # word-aligned, as the arena plans it
        got = np.full(want.shape, 99, dtype=np.int8)
        lib.tinyc_depthwise_conv2d_mve_s8(ctypes.byref(ctp), _ptr(np.ascontiguousarray(x)), *map(_ptr, arrays),
                                          _ptr(got), _ptr(scratch), n)
        np.testing.assert_array_equal(got, want, err_msg=f"case {i}: {p}")
        if depthwise_inplace_ok(p):
            buf = np.zeros(max(x.size, want.size), dtype=np.int8)
            buf[: x.size] = x.reshape(-1)
            lib.tinyc_depthwise_conv2d_inplace_mve_s8(ctypes.byref(ctp), _ptr(buf), *map(_ptr, arrays), _ptr(scratch),
                                                      n)
            np.testing.assert_array_equal(buf[: want.size].reshape(want.shape), want, err_msg=f"in place {i}: {p}")
            done += 1
    assert done > 20


@pytest.mark.parametrize("kind", ["max", "avg"])
def test_pool_c_matches_spec(lib, kind):
    spec = {"max": max_pool_s8, "avg": avg_pool_s8}[kind]
    rng = np.random.default_rng(15 if kind == "max" else 16)
    for i in range(300):
        p = random_pool_params(rng, valid_windows=False)
        x = rng.integers(-128, 128, (1, p.in_h, p.in_w, p.channels), dtype=np.int8)
        want = spec(p, x)
        assert want.shape == (1, p.out_h, p.out_w, p.channels)
        got = run_c_pool(lib, f"tinyc_{kind}_pool_s8", p, x, want.shape)
        np.testing.assert_array_equal(got, want, err_msg=f"case {i}: {p}")


def test_global_avg_pool_c_matches_spec(lib):
    rng = np.random.default_rng(17)
    for h, w, c in [(7, 7, 17), (5, 3, 64), (22, 22, 8), (1, 1, 3)]:
        p = PoolParams(in_h=h, in_w=w, channels=c, out_h=1, out_w=1, k_h=h, k_w=w)
        x = rng.integers(-128, 128, (1, h, w, c), dtype=np.int8)
        want = avg_pool_s8(p, x)
        np.testing.assert_array_equal(want, fx.average_pool_int8(x, (h, w), (1, 1)))
        np.testing.assert_array_equal(run_c_pool(lib, "tinyc_avg_pool_s8", p, x, want.shape), want)


def test_mean_c_matches_spec(lib):
    rng = np.random.default_rng(18)
    for i in range(200):
        shape, _, _, p = random_mean_case(rng)
        x = rng.integers(-128, 128, shape, dtype=np.int8)
        want = mean_s8(p, x)
        got = run_c_pool(lib, "tinyc_mean_s8", p, x, want.shape)
        np.testing.assert_array_equal(got, want, err_msg=f"case {i}: {p}")


# ----------------------------------------------------------------------------
# Cortex-M build: no undefined symbols
# ----------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("arm-none-eabi-gcc") is None, reason="arm-none-eabi-gcc not on PATH")
def test_kernels_build_for_cortex_m4_without_undefined_symbols(tmp_path):
    objects = []
    for src in SOURCES:
        obj = tmp_path / (src.stem + ".o")
        cmd = ["arm-none-eabi-gcc", *ARM_FLAGS, *CFLAGS, "-I", str(RUNTIME / "include"), "-c", str(src), "-o", str(obj)]
        res = subprocess.run(cmd, capture_output=True, text=True)
        assert res.returncode == 0, res.stderr
        objects.append(str(obj))
    res = subprocess.run(["arm-none-eabi-nm", "-u", *objects], capture_output=True, text=True, check=True)
    undefined = {line.split()[-1] for line in res.stdout.splitlines() if line.strip() and not line.endswith(":")}
    res = subprocess.run(["arm-none-eabi-nm", "--defined-only", *objects], capture_output=True, text=True, check=True)
    undefined -= {line.split()[-1] for line in res.stdout.splitlines() if len(line.split()) == 3}  # between sources
    assert undefined == set()
