"""Training kernels (runtime_c/src/train.c): C vs the numpy specs, and the specs
vs the float gradient rules.

* The numpy specs (tinyc.kernels.train) are tied to the math: each gradient spec
  equals the float reference of its backward op in tinyc/ops/grad.py run on the
  dequantized tensors (Conv2DGradInput on the real weights, ...); the update
  specs equal a plain per-element transcription of train.h's formulas.
* The C kernels are called through ctypes (the ``runtime_lib`` fixture) on
  random cases: odd shapes, strides 1-3, dilation 2, asymmetric padding, groups,
  depthwise with depth multipliers, k < out_c, zero gradients (a ReLU's mask).
  Float outputs agree within 1e-5 of the largest magnitude; the updates are
  bit-exact, including ties, saturation, inf and NaN.
* tinyc_expf / tinyc_logf: relative error <= 2e-7 over dense sweeps of float32.
* train.c builds for a Cortex-M4 (hard float) with -Werror -Wdouble-promotion
  and needs no symbol at all (no libc, libm, libgcc), at every -O level.
"""

from __future__ import annotations

import ctypes
import math
import shutil
import subprocess
from fractions import Fraction

import numpy as np
import pytest

from tinyc.ir.graph import Node
from tinyc.kernels import train as T
from tinyc.kernels.params import ConvParams, PoolParams
from tinyc.ops.base import Clamp
from tinyc.ops.conv import ConvAttrs
from tinyc.ops.grad import (
    AvgPool2DGrad,
    BiasGrad,
    ChannelsAttrs,
    ClampGrad,
    ClampGradAttrs,
    Conv2DGradInput,
    Conv2DGradWeight,
    ConvGradAttrs,
    FullyConnectedGradInput,
    FullyConnectedGradWeight,
    MaxPool2DGrad,
    PoolGradAttrs,
    ReduceGradAttrs,
    ReduceMeanGrad,
    SoftmaxCrossEntropy,
)
from tinyc.ops.pool import PoolAttrs

from .conftest import HOST_CFLAGS, RUNTIME_C

HAS_ARM = shutil.which("arm-none-eabi-gcc") is not None
ARM_FLAGS = ["-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16"]
STRICT = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-Wdouble-promotion"]

# ----------------------------------------------------------------------------
# The C library
# ----------------------------------------------------------------------------

P, I32, F = ctypes.c_void_p, ctypes.c_int32, ctypes.c_float
SIGNATURES = {
    "tinyc_clamp_grad_f32": [I32, P, P, I32, I32, P],
    "tinyc_add_f32": [I32, P, P, P],
    "tinyc_slice_f32": [P, P, P, P, P],
    "tinyc_conv2d_grad_input_f32": [P, P, P, P, P],
    "tinyc_conv2d_grad_input_sum_f32": [P, P, P, P, P, I32, I32, P],
    "tinyc_conv2d_grad_weight_f32": [P, I32, P, F, I32, P, P],
    "tinyc_bias_grad_f32": [I32, I32, I32, P, P],
    "tinyc_fc_grad_input_f32": [I32, I32, I32, P, P, P, I32, P],
    "tinyc_fc_grad_weight_f32": [I32, I32, I32, I32, P, F, I32, P, P],
    "tinyc_avg_pool_grad_f32": [P, P, P],
    "tinyc_max_pool_grad_f32": [P, P, P, P],
    "tinyc_mean_grad_f32": [I32, I32, I32, P, P],
    "tinyc_softmax_xent_f32": [I32, P, F, I32, I32, P, P],
    "tinyc_sgd_update_s8": [I32, I32, F, P, P, I32, I32, P, P, P],
    "tinyc_sgd_update_s32": [I32, F, P, P, I32, P],
    "tinyc_conv2d_train_weight_s8": [P, I32, P, F, I32, P, F, P, I32, P, P, P, P],
    "tinyc_fc_train_weight_s8": [I32, I32, I32, I32, P, F, I32, P, F, P, I32, P, P, P, P],
    "tinyc_expf": [F],
    "tinyc_logf": [F],
    # the float graph
    "tinyc_conv2d_f32": [P, P, P, P, F, F, P],
    "tinyc_fc_f32": [I32, I32, I32, P, P, P, F, F, P],
    "tinyc_clamp_f32": [I32, F, F, P, P],
    "tinyc_avg_pool_f32": [P, P, P],
    "tinyc_max_pool_f32": [P, P, P],
    "tinyc_mean_f32": [I32, I32, I32, P, P],
    "tinyc_concat2_f32": [I32, I32, I32, P, P, P],
    "tinyc_clamp_grad_ff32": [I32, P, P, F, F, P],
    "tinyc_conv2d_grad_input_ff32": [P, P, P, P],
    "tinyc_conv2d_grad_weight_ff32": [P, I32, P, P, P],
    "tinyc_fc_grad_input_ff32": [I32, I32, I32, P, P, P],
    "tinyc_fc_grad_weight_ff32": [I32, I32, I32, I32, P, P, P],
    "tinyc_max_pool_grad_ff32": [P, P, P, P],
    "tinyc_softmax_xent_ff32": [I32, P, I32, P, P],
    "tinyc_sgd_update_f32": [I32, F, P, P],
}


@pytest.fixture(scope="module")
def lib(runtime_lib):
    for name, args in SIGNATURES.items():
        fn = getattr(runtime_lib, name)
        fn.argtypes = args
        fn.restype = F if name in ("tinyc_expf", "tinyc_logf") else None
    return runtime_lib


def _ptr(a: np.ndarray | None):
    return None if a is None else a.ctypes.data_as(ctypes.c_void_p)


def _f32(a) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32)


def _s8(a) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.int8)


def _out(n: int) -> np.ndarray:
    return np.full(n, np.nan, np.float32)  # every element must be written


def assert_close(got, want, rel=1e-5):
    """Within rel of the largest magnitude of want (float32 sums in another order)."""
    got, want = np.asarray(got, np.float64).reshape(-1), np.asarray(want, np.float64).reshape(-1)
    assert got.shape == want.shape
    assert np.all(np.isfinite(got)), "non-finite output"
    scale = max(float(np.abs(want).max(initial=0.0)), 1e-30)
    err = float(np.abs(got - want).max(initial=0.0))
    assert err <= rel * scale, f"max error {err:.3g} > {rel:g} x {scale:.3g}"


# ----------------------------------------------------------------------------
# Random cases
# ----------------------------------------------------------------------------


def conv_out(size: int, k: int, stride: int, dil: int, pad_total: int) -> int:
    return (size + pad_total - (k - 1) * dil - 1) // stride + 1


def random_conv(rng, kind: str) -> tuple[ConvParams, tuple[int, int, int, int]]:
    """(params, pads t, l, b, r): kind "conv", "group" or "dw" (groups == in_c)."""
    while True:
        kh, kw = [(1, 1), (3, 3), (5, 5), (2, 3), (3, 1), (1, 4)][rng.integers(6)]
        dh, dw = (2, int(rng.integers(1, 3))) if rng.random() < 0.3 else (1, 1)
        sh, sw = int(rng.integers(1, 3)), int(rng.integers(1, 4))
        h, w = int(rng.integers(1, 12)), int(rng.integers(1, 12))
        pt, pl, pb, pr = (int(v) for v in rng.integers(0, 3, 4))
        oh, ow = conv_out(h, kh, sh, dh, pt + pb), conv_out(w, kw, sw, dw, pl + pr)
        if oh >= 1 and ow >= 1:
            break
    if kind == "dw":
        in_c = int(rng.choice([1, 3, 4, 7, 8]))
        groups, out_c = in_c, in_c * int(rng.choice([1, 1, 2, 3]))
    elif kind == "group":
        groups = int(rng.choice([2, 3]))
        in_c, out_c = groups * int(rng.integers(1, 4)), groups * int(rng.integers(1, 4))
    else:
        groups, in_c, out_c = 1, int(rng.choice([1, 2, 3, 5, 8, 13])), int(rng.choice([1, 2, 4, 7, 16]))
    p = ConvParams(in_h=h, in_w=w, in_c=in_c, out_h=oh, out_w=ow, out_c=out_c, k_h=kh, k_w=kw,
                   stride_h=sh, stride_w=sw, dil_h=dh, dil_w=dw, pad_t=pt, pad_l=pl, groups=groups)  # fmt: skip
    return p, (pt, pl, pb, pr)


def random_grad(rng, shape, relu_mask: bool = True) -> np.ndarray:
    """A float32 gradient, often with a ReLU's zeros in it."""
    g = rng.normal(0, rng.choice([1e-3, 1.0, 50.0]), shape).astype(np.float32)
    if relu_mask and rng.random() < 0.5:
        g[rng.random(shape) < 0.5] = 0
    return g


def random_qparams(rng) -> tuple[float, int]:
    return float(np.float32(np.exp(rng.uniform(np.log(1e-3), np.log(0.5))))), int(rng.integers(-128, 128))


def node(op, attrs, inputs=("a", "b")) -> Node:
    return Node(op.name, op.name.lower(), list(inputs), ["y"], attrs)


KINDS = ["conv"] * 3 + ["group", "dw", "dw"]


# ----------------------------------------------------------------------------
# exp and log
# ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def elementary(tmp_path_factory):
    """tinyc_expf / tinyc_logf over arrays (a test shim: a ctypes call per value is slow)."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no host C compiler")
    d = tmp_path_factory.mktemp("elementary")
    (d / "shim.c").write_text(
        "#include \"tinyc/train.h\"\n"
        "void many_expf(int32_t n, const float *x, float *y) { int32_t i; for (i = 0; i < n; ++i) y[i] = tinyc_expf(x[i]); }\n"
        "void many_logf(int32_t n, const float *x, float *y) { int32_t i; for (i = 0; i < n; ++i) y[i] = tinyc_logf(x[i]); }\n"
    )  # fmt: skip
    so = d / "shim.so"
    cmd = [cc, *HOST_CFLAGS, "-shared", "-fPIC", "-I", str(RUNTIME_C / "include"), str(d / "shim.c"),
           str(RUNTIME_C / "src" / "train.c"), "-o", str(so)]  # fmt: skip
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    dll = ctypes.CDLL(str(so))

    def run(name: str, x) -> np.ndarray:
        x = _f32(x)
        y = np.empty_like(x)
        getattr(dll, name)(ctypes.c_int32(x.size), _ptr(x), _ptr(y))
        return y

    return run


def _float_range(lo: float, hi: float, step: int) -> np.ndarray:
    """Every step-th float32 in [lo, hi] (by bit pattern; lo, hi of one sign)."""
    a, b = sorted(int(np.float32(v).view(np.uint32)) for v in (lo, hi))
    return np.arange(a, b + 1, step, dtype=np.int64).astype(np.uint32).view(np.float32)


def _max_rel(got, want) -> float:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    m = want != 0
    return float((np.abs(got[m] - want[m]) / np.abs(want[m])).max())


def test_expf_relative_error(elementary):
    """Every 97th float of the range whose e^x is normal (about 23M inputs), and 1M
    random ones in softmax's range with scale 0.5, [-127.5, 0]: relative error
    <= 2e-7 where e^x is a normal float, 0 below."""
    for lo, hi in ((-87.33654, -0.0), (0.0, 88.72283)):
        x = _float_range(lo, hi, 97)
        assert _max_rel(elementary("many_expf", x), np.exp(x.astype(np.float64))) <= 2e-7
    x = np.random.default_rng(0).uniform(-128, 0, 1_000_000).astype(np.float32)
    y, want = elementary("many_expf", x).astype(np.float64), np.exp(x.astype(np.float64))
    normal = want >= np.finfo(np.float32).tiny
    assert _max_rel(y[normal], want[normal]) <= 2e-7
    assert np.all(y[~normal] == 0)  # below FLT_MIN: 0, an absolute error < FLT_MIN


def test_expf_edges(elementary):
    x = np.array([0, -0.0, -87.3365, -87.34, -100, -np.inf, 88.72, 88.73, np.inf, np.nan], np.float32)
    y = elementary("many_expf", x)
    assert y[0] == 1 and y[1] == 1
    assert y[2] >= np.finfo(np.float32).tiny * 0.99 and y[3] == 0 and y[4] == 0 and y[5] == 0
    assert np.isfinite(y[6]) and y[7] == np.inf and y[8] == np.inf and np.isnan(y[9])


def test_logf_relative_error(elementary):
    """Every 89th positive finite float (about 24M, denormals included) and every
    float in [0.5, 2] (log's cancellation near 1): relative error <= 2e-7."""
    x = _float_range(np.float32(1e-45), np.finfo(np.float32).max, 89)
    assert _max_rel(elementary("many_logf", x), np.log(x.astype(np.float64))) <= 2e-7
    x = _float_range(0.5, 2.0, 1)
    assert _max_rel(elementary("many_logf", x), np.log(x.astype(np.float64))) <= 2e-7


def test_logf_edges(elementary):
    y = elementary("many_logf", np.array([1, 0, -0.0, -1, np.inf, np.nan, 2], np.float32))
    assert y[0] == 0 and y[1] == -np.inf and y[2] == -np.inf and np.isnan(y[3]) and y[4] == np.inf
    assert np.isnan(y[5]) and abs(y[6] - np.log(2)) < 1e-7


def test_exp_log_scalar_calls(lib):
    assert abs(lib.tinyc_expf(-1.0) - np.exp(-1.0)) < 1e-7
    assert abs(lib.tinyc_logf(10.0) - np.log(10.0)) < 1e-6


# ----------------------------------------------------------------------------
# Fused activation
# ----------------------------------------------------------------------------


def test_add(lib):
    rng = np.random.default_rng(7)
    for n in (1, 5, 257):
        a, b = random_grad(rng, n), random_grad(rng, n)
        want = T.add_f32(n, a, b)
        assert np.array_equal(want, a + b)
        got = _out(n)
        lib.tinyc_add_f32(n, _ptr(a), _ptr(b), _ptr(got))
        assert np.array_equal(got, want)
        first = a.copy()  # out may be either input
        lib.tinyc_add_f32(n, _ptr(first), _ptr(b), _ptr(first))
        second = b.copy()
        lib.tinyc_add_f32(n, _ptr(a), _ptr(second), _ptr(second))
        assert np.array_equal(first, want) and np.array_equal(second, want)


def test_slice(lib):
    rng = np.random.default_rng(9)
    for _ in range(30):
        in_shape = rng.integers(1, 6, 4).astype(np.int32)
        starts = np.array([rng.integers(0, d) for d in in_shape], np.int32)
        out_shape = np.array([rng.integers(1, d - s + 1) for d, s in zip(in_shape, starts)], np.int32)
        x = random_grad(rng, int(np.prod(in_shape)))
        want = T.slice_f32(in_shape, starts, out_shape, x)
        assert np.array_equal(want, x.reshape(in_shape)[tuple(slice(s, s + n) for s, n in zip(starts, out_shape))])
        got = _out(want.size)
        lib.tinyc_slice_f32(_ptr(in_shape), _ptr(starts), _ptr(out_shape), _ptr(x), _ptr(got))
        assert np.array_equal(got, want.reshape(-1))


def test_clamp_grad(lib):
    rng = np.random.default_rng(1)
    for _ in range(40):
        n = int(rng.integers(1, 300))
        scale, zero = random_qparams(rng)
        lo_q = int(rng.choice([-129, zero, int(rng.integers(-128, 0))]))
        hi_q = int(rng.choice([128, 127, int(rng.integers(lo_q + 1, 129))]))
        y_q = _s8(rng.integers(max(lo_q, -128), min(hi_q, 127) + 1, n))
        dy = random_grad(rng, n)
        want = T.clamp_grad_f32(n, dy, y_q, lo_q, hi_q)
        got = _out(n)
        lib.tinyc_clamp_grad_f32(n, _ptr(dy), _ptr(y_q), lo_q, hi_q, _ptr(got))
        assert np.array_equal(got, want)
        inplace = dy.copy()  # dx may be dy
        lib.tinyc_clamp_grad_f32(n, _ptr(inplace), _ptr(y_q), lo_q, hi_q, _ptr(inplace))
        assert np.array_equal(inplace, want)
        # the float rule on real values, with the clamp's real bounds
        def real(q, scale=scale, zero=zero):
            return np.float32(scale) * (np.float32(q) - np.float32(zero))

        act = Clamp(-np.inf if lo_q < -128 else real(lo_q), np.inf if hi_q > 127 else real(hi_q))
        ref = ClampGrad().ref(node(ClampGrad, ClampGradAttrs(act)), [dy, real(y_q.astype(np.int32))])[0]
        assert np.array_equal(ref, want)


# ----------------------------------------------------------------------------
# Convolution
# ----------------------------------------------------------------------------


def _conv_case(rng, kind):
    p, pads = random_conv(rng, kind)
    cg = p.in_c // p.groups
    w_q = _s8(rng.integers(-127, 128, (p.out_c, p.k_h, p.k_w, cg)))
    w_scale = _f32(np.exp(rng.uniform(np.log(1e-3), np.log(0.1), p.out_c)))
    dz = random_grad(rng, (p.out_h, p.out_w, p.out_c))
    return p, pads, w_q, w_scale, dz


def _conv_attrs(p: ConvParams, pads) -> ConvAttrs:
    return ConvAttrs((p.stride_h, p.stride_w), (p.dil_h, p.dil_w), pads, p.groups)


def test_conv2d_grad_input(lib):
    rng = np.random.default_rng(2)
    seen = set()
    for i in range(150):
        kind = KINDS[i % len(KINDS)]
        p, pads, w_q, w_scale, dz = _conv_case(rng, kind)
        seen.add((kind, p.stride_h > 1 or p.stride_w > 1, p.dil_h > 1, sum(pads) > 0))
        want = T.conv2d_grad_input_f32(p, dz, w_q, w_scale)
        got = _out(p.in_h * p.in_w * p.in_c)
        lib.tinyc_conv2d_grad_input_f32(ctypes.byref(p.to_ctypes()), _ptr(dz), _ptr(w_q), _ptr(w_scale), _ptr(got))
        assert_close(got, want)
        # the spec is Conv2DGradInput's float rule on the dequantized weights
        w = w_q.astype(np.float32) * w_scale[:, None, None, None]
        shape = (1, p.in_h, p.in_w, p.in_c)
        ref = Conv2DGradInput().ref(node(Conv2DGradInput, ConvGradAttrs(_conv_attrs(p, pads), shape)),
                                    [dz.reshape(1, p.out_h, p.out_w, p.out_c), w])[0]  # fmt: skip
        assert_close(want, ref)
    assert {k for k, *_ in seen} == {"conv", "group", "dw"}
    assert any(s for _, s, _, _ in seen) and any(d for _, _, d, _ in seen) and any(pd for *_, pd in seen)


def test_conv2d_grad_input_sum(lib):
    """The fused gradient-input channel sum equals its definition: the bias
    gradient of the clamp's gradient of the input gradient (masked or not)."""
    rng = np.random.default_rng(21)
    for i in range(120):
        p, pads, w_q, w_scale, dz = _conv_case(rng, KINDS[i % len(KINDS)])
        n = p.in_h * p.in_w * p.in_c
        masked = i % 3 != 0
        lo_q, hi_q = (int(rng.integers(-128, 0)), int(rng.choice([127, 128]))) if masked else (0, 0)
        y_q = _s8(rng.integers(-128, 128, n)) if masked else None
        want = T.conv2d_grad_input_sum_f32(p, dz, w_q, w_scale, y_q, lo_q, hi_q)
        got = _out(p.in_c)
        lib.tinyc_conv2d_grad_input_sum_f32(ctypes.byref(p.to_ctypes()), _ptr(dz), _ptr(w_q), _ptr(w_scale), _ptr(y_q),
                                            lo_q, hi_q, _ptr(got))
        assert_close(got, want)
        dx = T.conv2d_grad_input_f32(p, dz, w_q, w_scale)
        dx = T.clamp_grad_f32(n, dx, y_q, lo_q, hi_q) if masked else dx
        assert np.array_equal(want, T.bias_grad_f32(p.in_h * p.in_w, p.in_c, p.in_c, dx))


def test_conv2d_grad_weight(lib):
    rng = np.random.default_rng(3)
    for i in range(150):
        kind = KINDS[i % len(KINDS)]
        p, pads, _, _, dz = _conv_case(rng, kind)
        cg = p.in_c // p.groups
        k = int(rng.integers(1, p.out_c + 1)) if rng.random() < 0.6 else p.out_c
        x_scale, x_zero = random_qparams(rng)
        x_q = _s8(rng.integers(-128, 128, (p.in_h, p.in_w, p.in_c)))
        want = T.conv2d_grad_weight_f32(p, k, x_q, x_scale, x_zero, dz)
        assert want.shape == (k, p.k_h, p.k_w, cg)
        got = _out(want.size)
        lib.tinyc_conv2d_grad_weight_f32(ctypes.byref(p.to_ctypes()), k, _ptr(x_q), x_scale, x_zero, _ptr(dz),
                                         _ptr(got))  # fmt: skip
        assert_close(got, want)
        x = np.float32(x_scale) * (x_q.astype(np.float32) - np.float32(x_zero))
        attrs = ConvGradAttrs(_conv_attrs(p, pads), (k, p.k_h, p.k_w, cg))
        ref = Conv2DGradWeight().ref(node(Conv2DGradWeight, attrs),
                                     [x.reshape(1, *x.shape), dz.reshape(1, *dz.shape)])[0]  # fmt: skip
        assert_close(want, ref)


def test_conv_grads_depthwise_layout_is_the_int8_kernels():
    """groups == in_c reads the weights as tinyc_depthwise_conv2d_s8 does: output o
    uses input channel o // depth_multiplier. Check the grad-input spec against
    the adjoint of the float depthwise convolution, <conv(x), dz> = <x, dx>."""
    rng = np.random.default_rng(4)
    for _ in range(20):
        p, pads, w_q, w_scale, dz = _conv_case(rng, "dw")
        x = rng.normal(0, 1, (p.in_h, p.in_w, p.in_c)).astype(np.float64)
        w = w_q.astype(np.float64) * w_scale[:, None, None, None]
        dm = p.out_c // p.in_c
        y = np.zeros((p.out_h, p.out_w, p.out_c))
        for oy in range(p.out_h):
            for ox in range(p.out_w):
                for o in range(p.out_c):
                    for ky in range(p.k_h):
                        for kx in range(p.k_w):
                            iy = oy * p.stride_h - p.pad_t + ky * p.dil_h
                            ix = ox * p.stride_w - p.pad_l + kx * p.dil_w
                            if 0 <= iy < p.in_h and 0 <= ix < p.in_w:
                                y[oy, ox, o] += x[iy, ix, o // dm] * w[o, ky, kx, 0]
        dx = T.conv2d_grad_input_f32(p, dz, w_q, w_scale).reshape(x.shape)
        lhs, rhs = float((y * dz).sum()), float((x * dx).sum())
        assert abs(lhs - rhs) <= 1e-4 * max(1.0, np.abs(y * dz).sum())


def test_bias_grad(lib):
    rng = np.random.default_rng(5)
    for _ in range(40):
        rows, ch = int(rng.integers(1, 60)), int(rng.integers(1, 20))
        k = int(rng.integers(1, ch + 1))
        dz = random_grad(rng, (rows, ch))
        want = T.bias_grad_f32(rows, ch, k, dz)
        got = _out(k)
        lib.tinyc_bias_grad_f32(rows, ch, k, _ptr(dz), _ptr(got))
        assert_close(got, want)
        ref = BiasGrad().ref(node(BiasGrad, ChannelsAttrs(k), ["a"]), [dz.reshape(1, rows, 1, ch)])[0]
        assert_close(want, ref)


# ----------------------------------------------------------------------------
# Fully connected
# ----------------------------------------------------------------------------


def test_fc_grad_input(lib):
    rng = np.random.default_rng(6)
    for _ in range(60):
        rows, n_in, n_out = int(rng.integers(1, 4)), int(rng.integers(1, 70)), int(rng.integers(1, 40))
        per_channel = int(rng.integers(0, 2))
        w_q = _s8(rng.integers(-127, 128, (n_out, n_in)))
        w_scale = _f32(np.exp(rng.uniform(np.log(1e-3), np.log(0.1), n_out if per_channel else 1)))
        dz = random_grad(rng, (rows, n_out))
        want = T.fc_grad_input_f32(rows, n_in, n_out, dz, w_q, w_scale, per_channel)
        got = _out(rows * n_in)
        lib.tinyc_fc_grad_input_f32(rows, n_in, n_out, _ptr(dz), _ptr(w_q), _ptr(w_scale), per_channel, _ptr(got))
        assert_close(got, want)
        w = w_q.astype(np.float32) * (w_scale[:, None] if per_channel else w_scale[0])
        ref = FullyConnectedGradInput().ref(node(FullyConnectedGradInput, None), [dz, w])[0]
        assert_close(want, ref)


def test_fc_grad_weight(lib):
    rng = np.random.default_rng(7)
    for _ in range(60):
        rows, n_in, n_out = int(rng.integers(1, 4)), int(rng.integers(1, 70)), int(rng.integers(1, 40))
        k = int(rng.integers(1, n_out + 1))
        x_scale, x_zero = random_qparams(rng)
        x_q = _s8(rng.integers(-128, 128, (rows, n_in)))
        dz = random_grad(rng, (rows, n_out))
        want = T.fc_grad_weight_f32(rows, n_in, n_out, k, x_q, x_scale, x_zero, dz)
        assert want.shape == (k, n_in)
        got = _out(k * n_in)
        lib.tinyc_fc_grad_weight_f32(rows, n_in, n_out, k, _ptr(x_q), x_scale, x_zero, _ptr(dz), _ptr(got))
        assert_close(got, want)
        x = np.float32(x_scale) * (x_q.astype(np.float32) - np.float32(x_zero))
        ref = FullyConnectedGradWeight().ref(node(FullyConnectedGradWeight, ChannelsAttrs(k)), [x, dz])[0]
        assert_close(want, ref)


# ----------------------------------------------------------------------------
# Pools and means
# ----------------------------------------------------------------------------


def test_avg_pool_grad(lib):
    rng = np.random.default_rng(8)
    for _ in range(80):
        while True:
            kh, kw = int(rng.integers(1, 5)), int(rng.integers(1, 5))
            sh, sw = int(rng.integers(1, 4)), int(rng.integers(1, 4))
            h, w = int(rng.integers(1, 12)), int(rng.integers(1, 12))
            pt, pl = int(rng.integers(0, kh)), int(rng.integers(0, kw))
            pb, pr = int(rng.integers(0, kh)), int(rng.integers(0, kw))
            oh, ow = conv_out(h, kh, sh, 1, pt + pb), conv_out(w, kw, sw, 1, pl + pr)
            if oh >= 1 and ow >= 1:
                break
        c, cip = int(rng.integers(1, 10)), int(rng.integers(0, 2))
        p = PoolParams(in_h=h, in_w=w, channels=c, out_h=oh, out_w=ow, k_h=kh, k_w=kw, stride_h=sh, stride_w=sw,
                       pad_t=pt, pad_l=pl, count_include_pad=cip)  # fmt: skip
        dy = random_grad(rng, (oh, ow, c))
        want = T.avg_pool_grad_f32(p, dy)
        got = _out(h * w * c)
        lib.tinyc_avg_pool_grad_f32(ctypes.byref(p.to_ctypes()), _ptr(dy), _ptr(got))
        assert_close(got, want)
        attrs = PoolGradAttrs(PoolAttrs((kh, kw), (sh, sw), (pt, pl, pb, pr), count_include_pad=bool(cip)),
                              (1, h, w, c))  # fmt: skip
        ref = AvgPool2DGrad().ref(node(AvgPool2DGrad, attrs, ["a"]), [dy.reshape(1, oh, ow, c)])[0]
        assert_close(want, ref)


def test_max_pool_grad(lib):
    """C vs spec, and the spec vs the float rule (MaxPool2DGrad) on the dequantized
    input: the int8 input's first maximum is the real input's. Small int8 ranges
    make ties common."""
    rng = np.random.default_rng(18)
    for _ in range(80):
        while True:
            kh, kw = int(rng.integers(1, 4)), int(rng.integers(1, 4))
            sh, sw = int(rng.integers(1, 3)), int(rng.integers(1, 3))
            h, w = int(rng.integers(1, 9)), int(rng.integers(1, 9))
            pt, pl = int(rng.integers(0, kh)), int(rng.integers(0, kw))
            pb, pr = int(rng.integers(0, kh)), int(rng.integers(0, kw))
            oh, ow = conv_out(h, kh, sh, 1, pt + pb), conv_out(w, kw, sw, 1, pl + pr)
            if oh >= 1 and ow >= 1:
                break
        c = int(rng.integers(1, 6))
        p = PoolParams(in_h=h, in_w=w, channels=c, out_h=oh, out_w=ow, k_h=kh, k_w=kw, stride_h=sh, stride_w=sw,
                       pad_t=pt, pad_l=pl)  # fmt: skip
        dy = random_grad(rng, (oh, ow, c))
        x_q = _s8(rng.integers(-3, 3, (h, w, c)))
        want = T.max_pool_grad_f32(p, dy, x_q)
        got = _out(h * w * c)
        lib.tinyc_max_pool_grad_f32(ctypes.byref(p.to_ctypes()), _ptr(dy), _ptr(x_q), _ptr(got))
        assert_close(got, want)
        attrs = PoolGradAttrs(PoolAttrs((kh, kw), (sh, sw), (pt, pl, pb, pr)), (1, h, w, c))
        x = np.float32(0.1) * (x_q.astype(np.float32) + np.float32(2))
        ref = MaxPool2DGrad().ref(node(MaxPool2DGrad, attrs), [dy.reshape(1, oh, ow, c), x.reshape(1, h, w, c)])[0]
        assert_close(want, ref)


def test_mean_grad(lib):
    rng = np.random.default_rng(9)
    cases = [(1, 49, 16), (1, 1, 5), (3, 7, 1), (2, 5, 3)] + [tuple(int(v) for v in rng.integers(1, 9, 3))
                                                             for _ in range(20)]  # fmt: skip
    for outer, reduce, inner in cases:
        dy = random_grad(rng, (outer, inner), relu_mask=False)
        want = T.mean_grad_f32(outer, reduce, inner, dy)
        got = _out(outer * reduce * inner)
        lib.tinyc_mean_grad_f32(outer, reduce, inner, _ptr(dy), _ptr(got))
        assert np.array_equal(got, want.reshape(-1))
        shape = (outer, reduce, inner)
        ref = ReduceMeanGrad().ref(node(ReduceMeanGrad, ReduceGradAttrs((1,), shape), ["a"]), [dy])[0]
        assert_close(want, ref)
    # a global average pool (ReduceMean over H and W of NHWC) is outer 1, reduce H * W
    dy = random_grad(rng, (1, 1, 1, 6), relu_mask=False)
    ref = ReduceMeanGrad().ref(node(ReduceMeanGrad, ReduceGradAttrs((1, 2), (1, 4, 5, 6)), ["a"]), [dy])[0]
    assert_close(T.mean_grad_f32(1, 20, 6, dy).reshape(ref.shape), ref)


# ----------------------------------------------------------------------------
# Softmax cross-entropy
# ----------------------------------------------------------------------------


def test_softmax_xent(lib):
    rng = np.random.default_rng(10)
    cases = []
    for _ in range(60):
        n = int(rng.choice([1, 2, 10, 12, 100, 1000]))
        scale, zero = float(np.float32(np.exp(rng.uniform(np.log(1e-3), np.log(2.0))))), int(rng.integers(-128, 128))
        cases.append((n, rng.integers(-128, 128, n), scale, zero, int(rng.integers(0, n))))
    cases.append((10, np.full(10, 5), 0.1, 0, 3))  # uniform: loss = log 10
    cases.append((10, np.r_[127, np.full(9, -128)], 1.0, 0, 0))  # exp(-255) underflows: loss 0
    cases.append((10, np.r_[127, np.full(9, -128)], 1.0, 0, 4))  # the label at the bottom: loss 255
    for n, q, scale, zero, label in cases:
        q = _s8(q)
        loss_want, grad_want = T.softmax_xent_f32(n, q, scale, zero, label)
        loss = np.full(1, np.nan, np.float32)
        got = _out(n)
        lib.tinyc_softmax_xent_f32(n, _ptr(q), scale, zero, label, _ptr(loss), _ptr(got))
        assert_close(got, grad_want)
        assert abs(float(loss[0]) - float(loss_want)) <= 1e-5 * max(1.0, abs(float(loss_want)))
        z = np.float32(scale) * (q.astype(np.float32) - np.float32(zero))
        ref_loss, ref_grad = SoftmaxCrossEntropy().ref(node(SoftmaxCrossEntropy, None), [z.reshape(1, n), label])
        ref_grad = ref_grad.reshape(-1)
        outward = ((q == 127) & (ref_grad < 0)) | ((q == -128) & (ref_grad > 0))  # held at int8 saturation
        assert_close(grad_want, np.where(outward, np.float32(0), ref_grad))
        assert abs(float(loss_want) - float(ref_loss)) <= 1e-5 * max(1.0, abs(float(ref_loss)))
        if not outward.any():
            assert abs(float(grad_want.sum())) <= 1e-5
    n, q = 10, _s8(np.full(10, 5))
    assert abs(T.softmax_xent_f32(n, q, 0.1, 0, 3)[0] - np.log(10)) < 1e-6
    assert T.softmax_xent_f32(10, _s8(np.r_[127, np.full(9, -128)]), 1.0, 0, 4)[0] == 255


def test_softmax_xent_holds_saturated_logits(lib):
    """Two logits at 127, the label on the first: its gradient (negative: push up)
    is held at 0, as is the push down of the logit at -128; the other 127's push
    down passes. With the label at -128 everything passes (it is pushed up, the
    others down)."""
    q = _s8([127, 127, 0, -128])
    for label, held, passed in ((0, [0, 3], [1, 2]), (3, [], [0, 1, 2, 3])):
        loss, grad = T.softmax_xent_f32(4, q, 0.05, 0, label)
        got, c_loss = _out(4), np.zeros(1, np.float32)
        lib.tinyc_softmax_xent_f32(4, _ptr(q), 0.05, 0, label, _ptr(c_loss), _ptr(got))
        assert_close(got, grad)
        assert np.all(grad[held] == 0) and np.all(grad[passed] != 0), (label, grad)


def test_softmax_xent_label_out_of_range(lib):
    q = _s8([3, -7, 100, 4])
    for label in (-1, 4):
        loss, grad = T.softmax_xent_f32(4, q, 0.05, 1, label)
        got, cl = _out(4), np.full(1, np.nan, np.float32)
        lib.tinyc_softmax_xent_f32(4, _ptr(q), 0.05, 1, label, _ptr(cl), _ptr(got))
        assert_close(got, grad)
        assert abs(cl[0] - loss) < 1e-6
        assert np.all(grad >= 0) and abs(grad.sum() - 1) < 1e-6


# ----------------------------------------------------------------------------
# SGD updates: bit-exact
# ----------------------------------------------------------------------------


def _rint(x: float) -> int:
    return round(x)  # Python's round of a float: half to even, exact


def fmix32_by_hand(state: int, n: int) -> tuple[list[float], int]:
    """train.h's generator in plain Python ints."""
    draws = []
    for _ in range(n):
        state = (state + 0x9E3779B9) & 0xFFFFFFFF
        z = state
        z ^= z >> 16
        z = (z * 0x85EBCA6B) & 0xFFFFFFFF
        z ^= z >> 13
        z = (z * 0xC2B2AE35) & 0xFFFFFFFF
        z ^= z >> 16
        draws.append((z >> 8) / 2**24)
    return draws, state


def sgd_s8_by_hand(k, count, lr, dw, w_scale, per_channel, max_units, w_q, residue, rng=None):
    """train.h's formulas, element by element with Python ints and fractions
    (float32 for the step)."""
    w_q, dw = np.asarray(w_q).reshape(-1), np.asarray(dw, np.float32).reshape(-1)
    draws, rng = fmix32_by_hand(rng, k * count) if rng is not None else (None, None)
    lim = max_units if 0 < max_units < 256 else 256

    def rnd(t, lim, i):
        if np.isnan(t):
            return 0
        t = Fraction(float(min(max(t, -lim), lim)))
        if draws is None:
            return _rint(float(t))
        fl = math.floor(t)
        return fl + (Fraction(draws[i]) < t - fl)

    new_w, new_r = [], []
    for i in range(k * count):
        s = np.float32(w_scale[i // count if per_channel else 0])
        with np.errstate(all="ignore"):
            step = np.float32(-(np.float32(lr) * dw[i]) / s)
            t = np.float32(step * np.float32(256))
        if residue is None:
            new_w.append(min(max(int(w_q[i]) + rnd(step, lim, i), -127), 127))
            continue
        v = min(max(256 * int(w_q[i]) + int(residue[i]) + rnd(t, 256 * lim, i), -127 * 256), 127 * 256)
        w = (v + 128) // 256
        new_w.append(w)
        new_r.append(v - 256 * w)
    return np.array(new_w, np.int8), None if residue is None else np.array(new_r, np.int8), rng


def _s8_case(rng):
    k, count = int(rng.integers(1, 6)), int(rng.integers(1, 40))
    per_channel = int(rng.random() < 0.8)
    max_units = int(rng.choice([1, 1, 3, 0, 300]))  # 0 and >= 256: no limit
    w_scale = _f32(np.exp(rng.uniform(np.log(1e-4), np.log(0.1), k if per_channel else 1)))
    lr = float(np.float32(rng.choice([1e-4, 1e-3, 0.01, 0.1])))
    n = k * count
    dw = rng.normal(0, rng.choice([1e-4, 1e-2, 1, 100]), n).astype(np.float32)
    special = rng.random(n)
    dw[special < 0.05] = 0
    dw[(special > 0.05) & (special < 0.07)] = np.float32(1e30)  # saturates
    dw[(special > 0.07) & (special < 0.08)] = -np.inf
    dw[(special > 0.08) & (special < 0.09)] = np.nan
    w_q = _s8(rng.integers(-127, 128, n))
    w_q[rng.random(n) < 0.1] = 127
    w_q[rng.random(n) < 0.1] = -127
    residue = _s8(rng.integers(-128, 128, n))
    return k, count, lr, dw, w_scale, per_channel, max_units, w_q, residue


def _run_s8(lib, k, count, lr, dw, w_scale, per_channel, max_units, w_q, residue, rng=None):
    w = w_q.copy()
    r = None if residue is None else residue.copy()
    state = None if rng is None else np.array([rng], np.uint32)
    lib.tinyc_sgd_update_s8(k, count, lr, _ptr(dw), _ptr(w_scale), per_channel, max_units, _ptr(w), _ptr(r),
                            _ptr(state))
    return w, r, None if state is None else int(state[0])


def test_sgd_update_s8_bit_exact(lib):
    """Every combination: with / without residue, rint / stochastic rounding."""
    rng = np.random.default_rng(11)
    for _ in range(150):
        case = _s8_case(rng)
        seed = int(rng.integers(0, 2**32))
        for residue in (case[-1], None):
            for state in (None, seed):
                args = (*case[:-1], residue, state)
                want = T.sgd_update_s8(*args)
                got = _run_s8(lib, *args)
                hand = sgd_s8_by_hand(*args)
                for a, b, c in zip(want, got, hand):
                    if a is None:
                        assert b is None and c is None
                    else:
                        assert np.array_equal(a, b) and np.array_equal(a, c), (residue is None, state)


def test_generator_matches_its_definition():
    for state in (0, 1, 0x9E3779B9, 2**32 - 1, 123456789):
        u, after = T.uniform_draws(state, 1000)
        draws, want_after = fmix32_by_hand(state, 1000)
        assert after == want_after and np.array_equal(u, np.array(draws, np.float32))
        assert u.dtype == np.float32 and u.min() >= 0 and u.max() < 1
    u, _ = T.uniform_draws(42, 200_000)
    assert abs(float(u.mean()) - 0.5) < 0.005 and abs(float((u < 0.25).mean()) - 0.25) < 0.005


def test_sgd_update_s8_stochastic_is_unbiased():
    """Stochastic rounding keeps small steps on average: 4000 weights, step 0.3 of a
    residue unit (1/256 weight units): the residue moves by 0.3 on average; without
    a residue a step of 0.3 units moves the weights by 0.3 on average."""
    n, s = 4000, _f32([2.0**-8])
    w, r, state = T.sgd_update_s8(1, n, 1.0, _f32(np.full(n, -0.3 / 65536)), s, 1, 1, _s8(np.zeros(n)),
                                  _s8(np.zeros(n)), 7)  # fmt: skip
    assert set(np.unique(r)) == {0, 1} and abs(float(r.mean()) - 0.3) < 0.03 and not w.any()
    assert state == (7 + n * T.GOLDEN) % 2**32
    w, r, _ = T.sgd_update_s8(1, n, 1.0, _f32(np.full(n, 0.3 / 256)), s, 1, 1, _s8(np.zeros(n)), None, 7)
    assert set(np.unique(w)) == {-1, 0} and abs(float(w.mean()) + 0.3) < 0.03 and r is None


def test_sgd_update_s8_ties_round_half_to_even(lib):
    """lr = 1, scale = 2^-8: 256 * step = -256 * 256 * dw exactly; dw chosen so that it
    is k + 1/2: the residue update rounds to even (2.5 -> 2, 3.5 -> 4, -2.5 -> -2)."""
    t = np.array([2.5, 3.5, -2.5, -3.5, 0.5, -0.5, 1.5], np.float32)
    dw = _f32(-t / 65536)
    w_q, residue = _s8(np.zeros(7)), _s8(np.zeros(7))
    want_r = _s8([2, 4, -2, -4, 0, 0, 2])
    for fn in (T.sgd_update_s8, lambda *a: _run_s8(lib, *a)):
        w, r, _ = fn(1, 7, 1.0, dw, _f32([2.0**-8]), 1, 1, w_q, residue)
        assert np.array_equal(w, np.zeros(7, np.int8)) and np.array_equal(r, want_r)


def test_sgd_update_s8_residue_carries_and_rounds():
    """Small steps accumulate: 128 steps of +1/256 make the weight round up by one
    (v = 128 is w = 1, residue -128); a single -1/256 does not move it (the forward
    uses the 16-bit weight rounded to nearest, not floored); saturation at 127.0."""
    s, lr = _f32([0.5]), 1.0
    dw = _f32([-0.5 / 256])  # step = +1/256
    w, r = _s8([0]), _s8([0])
    for i in range(128):
        assert w[0] == 0, i
        w, r, _ = T.sgd_update_s8(1, 1, lr, dw, s, 1, 1, w, r)
    assert (w[0], r[0]) == (1, -128)
    w, r, _ = T.sgd_update_s8(1, 1, lr, -dw, s, 1, 1, _s8([5]), _s8([0]))
    assert (w[0], r[0]) == (5, -1)
    w, r, _ = T.sgd_update_s8(1, 1, lr, _f32([-1000.0]), s, 1, 1, _s8([120]), _s8([77]))
    assert (w[0], r[0]) == (121, 77)  # a huge step moves the weight by one unit (update clipping)
    w, r, _ = T.sgd_update_s8(1, 1, lr, _f32([-1000.0]), s, 1, 3, _s8([100]), _s8([77]))
    assert (w[0], r[0]) == (103, 77)  # or max_units
    w, r, _ = T.sgd_update_s8(1, 1, lr, _f32([-1000.0]), s, 1, 0, _s8([-100]), _s8([77]))
    assert (w[0], r[0]) == (127, 0)  # or, with no limit, across the range
    w, r, _ = T.sgd_update_s8(1, 1, lr, _f32([-1000.0]), s, 1, 1, _s8([126]), _s8([77]))
    assert (w[0], r[0]) == (127, 0)  # and saturates at 127.0
    w, r, _ = T.sgd_update_s8(1, 1, lr, _f32([1000.0]), s, 1, 1, _s8([-126]), _s8([-77]))
    assert (w[0], r[0]) == (-127, 0)


def test_fused_weight_updates_equal_gradient_then_update(lib):
    """conv2d / fc_train_weight_s8 (a channel at a time through one channel of
    scratch) give, bit for bit, the k-channel gradient followed by one update:
    weights, residues and generator state; their numpy specs are that composition."""
    rng = np.random.default_rng(21)
    for i in range(60):
        lr = float(np.float32(rng.choice([1e-3, 0.01, 0.1])))
        x_scale, x_zero = random_qparams(rng)
        seed = int(rng.integers(0, 2**32))
        if i % 3:
            p, _, w_q, _, dz = _conv_case(rng, KINDS[i % len(KINDS)])
            k = int(rng.integers(1, p.out_c + 1))
            count = p.k_h * p.k_w * (p.in_c // p.groups)
            x_q = _s8(rng.integers(-128, 128, (p.in_h, p.in_w, p.in_c)))
            sizes = (ctypes.byref(p.to_ctypes()), k)
            dw = _out(k * count)
            lib.tinyc_conv2d_grad_weight_f32(*sizes, _ptr(x_q), x_scale, x_zero, _ptr(dz), _ptr(dw))
            spec, fused = T.conv2d_train_weight_s8, lib.tinyc_conv2d_train_weight_s8
            spec_sizes = (p, k)
        else:
            rows, n_in, n_out = int(rng.integers(1, 4)), int(rng.integers(1, 40)), int(rng.integers(1, 12))
            k, count = int(rng.integers(1, n_out + 1)), n_in
            x_q = _s8(rng.integers(-128, 128, rows * n_in))
            dz = random_grad(rng, rows * n_out)
            w_q = _s8(rng.integers(-127, 128, n_out * n_in))
            sizes = spec_sizes = (rows, n_in, n_out, k)
            dw = _out(k * count)
            lib.tinyc_fc_grad_weight_f32(*sizes, _ptr(x_q), x_scale, x_zero, _ptr(dz), _ptr(dw))
            spec, fused = T.fc_train_weight_s8, lib.tinyc_fc_train_weight_s8
        w_scale = _f32(np.exp(rng.uniform(np.log(1e-4), np.log(0.1), w_q.shape[0] if w_q.ndim > 1 else n_out)))
        w_q = w_q.reshape(-1)
        residue = _s8(rng.integers(-128, 128, k * count))
        for res, state in ((residue, seed), (None, seed), (None, None)):
            want = _run_s8(lib, k, count, lr, dw, w_scale, 1, 2, w_q[:k * count], res, state)
            w, r = w_q.copy(), None if res is None else res.copy()
            st = None if state is None else np.array([state], np.uint32)
            scratch = _out(count)
            fused(*sizes, _ptr(x_q), x_scale, x_zero, _ptr(dz), lr, _ptr(w_scale), 2, _ptr(scratch), _ptr(w), _ptr(r),
                  _ptr(st))
            assert np.array_equal(w[:k * count], want[0]) and np.array_equal(w[k * count:], w_q[k * count:])
            assert (r is None and want[1] is None) or np.array_equal(r, want[1])
            assert (st is None and want[2] is None) or int(st[0]) == want[2]
            got = spec(*spec_sizes, x_q, x_scale, x_zero, dz, lr, w_scale, 2, w_q[:k * count], res, state)
            assert (got[2] is None) == (state is None)


def test_sgd_update_s32_bit_exact(lib):
    rng = np.random.default_rng(12)
    big = np.iinfo(np.int32).max
    for _ in range(200):
        k = int(rng.integers(1, 40))
        per_channel = int(rng.random() < 0.8)
        s = _f32(np.exp(rng.uniform(np.log(1e-8), np.log(1e-3), k if per_channel else 1)))
        lr = float(np.float32(rng.choice([1e-4, 1e-2, 0.5])))
        db = rng.normal(0, rng.choice([1e-6, 1e-2, 1, 1e4]), k).astype(np.float32)
        special = rng.random(k)
        db[special < 0.05] = np.nan
        db[(special > 0.05) & (special < 0.1)] = np.float32(3e38)
        db[(special > 0.1) & (special < 0.15)] = np.inf
        db[(special > 0.15) & (special < 0.2)] = -(np.float32(s[0]) * np.float32(2.5) / np.float32(lr))
        bias = rng.integers(-(2**31) + 1, 2**31, k).astype(np.int32)
        bias[rng.random(k) < 0.2] = big
        bias[rng.random(k) < 0.2] = -big
        want = T.sgd_update_s32(k, lr, db, s, per_channel, bias)
        got = bias.copy()
        lib.tinyc_sgd_update_s32(k, lr, _ptr(db), _ptr(s), per_channel, _ptr(got))
        assert np.array_equal(got, want)
        for c in range(k):  # by hand, with Python ints
            with np.errstate(all="ignore"):
                step = np.float32(-(np.float32(lr) * db[c]) / s[c if per_channel else 0])
            add = 0 if np.isnan(step) else (int(np.sign(step)) * 2**31 if abs(step) >= 2**31 else _rint(float(step)))
            assert want[c] == min(max(int(bias[c]) + add, -big), big)


# ----------------------------------------------------------------------------
# Builds for the device
# ----------------------------------------------------------------------------


@pytest.mark.skipif(not HAS_ARM, reason="arm-none-eabi-gcc not on PATH")
@pytest.mark.parametrize("opt", ["-O0", "-O2", "-Os", "-O3"])
@pytest.mark.parametrize("freestanding", [False, True])
def test_train_c_builds_for_cortex_m4f_without_symbols(tmp_path, opt, freestanding):
    """Hard float, -Wdouble-promotion (no double on the device), and nothing
    undefined: no libc / libm call, no libgcc helper (soft float, 64-bit
    division), no memset for the zeroing loops, with or without -ffreestanding."""
    obj = tmp_path / "train.o"
    cmd = ["arm-none-eabi-gcc", *ARM_FLAGS, *STRICT, opt, *(["-ffreestanding"] if freestanding else []),
           "-I", str(RUNTIME_C / "include"), "-c", str(RUNTIME_C / "src" / "train.c"), "-o", str(obj)]  # fmt: skip
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    undefined = subprocess.run(["arm-none-eabi-nm", "-u", str(obj)], capture_output=True, text=True, check=True)
    assert undefined.stdout.strip() == ""
    defined = subprocess.run(["arm-none-eabi-nm", "--defined-only", "-g", str(obj)], capture_output=True, text=True,
                             check=True).stdout  # fmt: skip
    for name in SIGNATURES:
        assert f" T {name}\n" in defined + "\n", name


def test_train_c_builds_strict_on_the_host(tmp_path):
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no host C compiler")
    cmd = [cc, *STRICT, "-Wconversion", "-Wshadow", "-pedantic", "-O2", "-I", str(RUNTIME_C / "include"), "-c",
           str(RUNTIME_C / "src" / "train.c"), "-o", str(tmp_path / "train.o")]  # fmt: skip
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


def test_specs_are_named_after_the_c_kernels():
    header = (RUNTIME_C / "include" / "tinyc" / "train.h").read_text()
    for name in T.TRAIN_KERNELS:
        assert f"tinyc_{name}(" in header
    assert set(T.TRAIN_KERNELS) == {n.removeprefix("tinyc_") for n in SIGNATURES} - {"expf", "logf"}


# ----------------------------------------------------------------------------
# On the device: Cortex-M4F / M7 under QEMU, bit for bit with the host build
# ----------------------------------------------------------------------------

HAS_QEMU = HAS_ARM and shutil.which("qemu-system-arm") is not None
QEMU_MACHINES = ["mps2-an386", "mps2-an500"]  # Cortex-M4F (fpv4-sp-d16), Cortex-M7 (fpv5-d16)
_CTYPES = {"int8_t": np.int8, "int32_t": np.int32, "uint32_t": np.uint32, "float": np.float32}


def _c_float(v) -> str:
    v = np.float32(v)
    if np.isnan(v):
        return '__builtin_nanf("")'
    if np.isinf(v):
        return "__builtin_inff()" if v > 0 else "(-__builtin_inff())"
    return float(v).hex() + "f"


class DeviceCalls:
    """Kernel calls run both on the host (ctypes) and in a firmware image that writes
    every output to a file over semihosting. Argument kinds: ("i", int),
    ("f", float), ("p", params record), ("in", ctype, array), ("out", ctype, n),
    ("inout", ctype, array), None (NULL)."""

    def __init__(self):
        self.calls: list[tuple[str, list]] = []

    def add(self, fn: str, *args) -> None:
        self.calls.append((fn, list(args)))

    def run_host(self, lib) -> list[list[np.ndarray]]:
        """Each call's outputs (in-out arrays after the call), in argument order."""
        outs = []
        for fn, args in self.calls:
            c_args, mine, keep = [], [], []
            for a in args:
                if a is None:
                    c_args.append(None)
                elif a[0] == "i":
                    c_args.append(a[1])
                elif a[0] == "f":
                    c_args.append(float(a[1]))
                elif a[0] == "p":
                    keep.append(a[1].to_ctypes())
                    c_args.append(ctypes.byref(keep[-1]))
                elif a[0] == "in":
                    arr = np.ascontiguousarray(a[2], dtype=_CTYPES[a[1]]).reshape(-1)
                    keep.append(arr)
                    c_args.append(_ptr(arr))
                else:
                    arr = (np.zeros(a[2], _CTYPES[a[1]]) if a[0] == "out"
                           else np.array(a[2], dtype=_CTYPES[a[1]]).reshape(-1))  # fmt: skip
                    mine.append(arr)
                    c_args.append(_ptr(arr))
            getattr(lib, fn)(*c_args)
            outs.append(mine)
        return outs

    def c_program(self) -> str:
        defs, body, writes = [], [], []
        for ci, (fn, args) in enumerate(self.calls):
            exprs = []
            for ai, a in enumerate(args):
                name = f"c{ci}_{ai}"
                if a is None:
                    exprs.append("0")
                elif a[0] == "i":
                    exprs.append(f"{int(a[1])}" if a[1] != -(2**31) else "(-2147483647 - 1)")
                elif a[0] == "f":
                    exprs.append(_c_float(a[1]))
                elif a[0] == "p":
                    defs.append(f"static const {a[1].c_type} {name} = {a[1].c_initializer()};")
                    exprs.append(f"&{name}")
                elif a[0] == "out":
                    defs.append(f"static {a[1]} {name}[{max(1, a[2])}];")
                    exprs.append(name)
                    writes.append((name, f"{a[2]} * sizeof({a[1]})"))
                else:
                    flat = np.asarray(a[2]).reshape(-1)
                    vals = [_c_float(v) if a[1] == "float" else str(int(v)) for v in flat]
                    const = "const " if a[0] == "in" else ""
                    defs.append(f"static {const}{a[1]} {name}[{len(vals)}] = {{{', '.join(vals)}}};")
                    exprs.append(name)
                    if a[0] == "inout":
                        writes.append((name, f"sizeof {name}"))
            body.append(f"    {fn}({', '.join(exprs)});")
        write_lines = "\n".join(f"    fail |= tinyc_sh_write(h, {n}, (uint32_t)({size})) != 0;" for n, size in writes)
        return "\n".join([
            "#include <stdint.h>", '#include "tinyc/train.h"', '#include "semihost.h"', *defs,
            "int main(void)", "{", "    int h, fail = 0;", *body,
            '    h = tinyc_sh_open("out.bin", "wb");', "    if (h < 0) {", "        return 3;", "    }",
            write_lines, "    tinyc_sh_close(h);", "    return fail;", "}", "",
        ])  # fmt: skip


def device_calls() -> DeviceCalls:
    rng = np.random.default_rng(20)
    d = DeviceCalls()
    x = np.r_[np.linspace(-87.3, 88.7, 300), -rng.uniform(0, 100, 200)].astype(np.float32)
    for v in x:
        d.add("tinyc_expf_to", ("f", v), ("out", "float", 1))
    for v in np.exp(rng.uniform(-100, 88, 300)).astype(np.float32):
        d.add("tinyc_logf_to", ("f", v), ("out", "float", 1))
    for i in range(12):
        p, _, w_q, w_scale, dz = _conv_case(rng, KINDS[i % len(KINDS)])
        d.add("tinyc_conv2d_grad_input_f32", ("p", p), ("in", "float", dz), ("in", "int8_t", w_q),
              ("in", "float", w_scale), ("out", "float", p.in_h * p.in_w * p.in_c))  # fmt: skip
        k = int(rng.integers(1, p.out_c + 1))
        xs, xz = random_qparams(rng)
        x_q = rng.integers(-128, 128, p.in_h * p.in_w * p.in_c)
        d.add("tinyc_conv2d_grad_weight_f32", ("p", p), ("i", k), ("in", "int8_t", x_q), ("f", xs), ("i", xz),
              ("in", "float", dz), ("out", "float", k * p.k_h * p.k_w * (p.in_c // p.groups)))  # fmt: skip
        d.add("tinyc_bias_grad_f32", ("i", p.out_h * p.out_w), ("i", p.out_c), ("i", k), ("in", "float", dz),
              ("out", "float", k))  # fmt: skip
        y_q = rng.integers(-128, 128, p.in_h * p.in_w * p.in_c)
        d.add("tinyc_conv2d_grad_input_sum_f32", ("p", p), ("in", "float", dz), ("in", "int8_t", w_q),
              ("in", "float", w_scale), ("in", "int8_t", y_q) if i % 2 else None, ("i", -10), ("i", 127),
              ("out", "float", p.in_c))  # fmt: skip
    for _ in range(4):
        n_in, n_out = int(rng.integers(1, 50)), int(rng.integers(1, 20))
        dz = random_grad(rng, n_out)
        d.add("tinyc_fc_grad_input_f32", ("i", 1), ("i", n_in), ("i", n_out), ("in", "float", dz),
              ("in", "int8_t", rng.integers(-127, 128, n_out * n_in)), ("in", "float", rng.uniform(1e-3, 0.1, n_out)),
              ("i", 1), ("out", "float", n_in))  # fmt: skip
        d.add("tinyc_fc_grad_weight_f32", ("i", 1), ("i", n_in), ("i", n_out), ("i", n_out),
              ("in", "int8_t", rng.integers(-128, 128, n_in)), ("f", 0.02), ("i", -3), ("in", "float", dz),
              ("out", "float", n_out * n_in))  # fmt: skip
    p = PoolParams(in_h=7, in_w=6, channels=3, out_h=4, out_w=3, k_h=3, k_w=3, stride_h=2, stride_w=2,
                   pad_t=1, pad_l=1)  # fmt: skip
    d.add("tinyc_avg_pool_grad_f32", ("p", p), ("in", "float", random_grad(rng, 36)), ("out", "float", 126))
    d.add("tinyc_mean_grad_f32", ("i", 1), ("i", 25), ("i", 4), ("in", "float", random_grad(rng, 4)),
          ("out", "float", 100))  # fmt: skip
    for n in (10, 12, 1000):
        d.add("tinyc_softmax_xent_f32", ("i", n), ("in", "int8_t", rng.integers(-128, 128, n)), ("f", 0.13),
              ("i", 5), ("i", 3), ("out", "float", 1), ("out", "float", n))  # fmt: skip
    d.add("tinyc_clamp_grad_f32", ("i", 50), ("in", "float", random_grad(rng, 50)),
          ("in", "int8_t", rng.integers(-128, 128, 50)), ("i", -20), ("i", 100), ("out", "float", 50))  # fmt: skip
    for _ in range(8):
        k, count, lr, dw, w_scale, per_channel, max_units, w_q, residue = _s8_case(rng)
        for r in (residue, None):
            for state in (None, int(rng.integers(0, 2**32))):
                d.add("tinyc_sgd_update_s8", ("i", k), ("i", count), ("f", lr), ("in", "float", dw),
                      ("in", "float", w_scale), ("i", per_channel), ("i", max_units), ("inout", "int8_t", w_q),
                      None if r is None else ("inout", "int8_t", r),
                      None if state is None else ("inout", "uint32_t", [state]))  # fmt: skip
        db = rng.normal(0, 1, 20).astype(np.float32)
        db[:3] = (np.nan, np.inf, 3e38)
        d.add("tinyc_sgd_update_s32", ("i", 20), ("f", 0.01), ("in", "float", db),
              ("in", "float", np.exp(rng.uniform(-18, -7, 20))), ("i", 1),
              ("inout", "int32_t", rng.integers(-(2**31) + 1, 2**31, 20)))  # fmt: skip
    return d


@pytest.mark.skipif(not HAS_QEMU, reason="needs arm-none-eabi-gcc and qemu-system-arm")
@pytest.mark.parametrize("machine", QEMU_MACHINES)
def test_train_kernels_on_qemu_bit_exact_with_host(lib, tmp_path, machine):
    """Every kernel on the device gives the host build's bits (the same float
    operations in the same order), hence the numpy specs' on the updates."""
    from tinyc.sim import qemu

    calls = device_calls()
    # tinyc_expf / tinyc_logf return a value: wrap them to write through a pointer
    wrappers = ("static void tinyc_expf_to(float x, float *y) { *y = tinyc_expf(x); }\n"
                "static void tinyc_logf_to(float x, float *y) { *y = tinyc_logf(x); }\n")  # fmt: skip
    src = calls.c_program().replace('#include "semihost.h"\n', '#include "semihost.h"\n' + wrappers, 1)
    (tmp_path / "cases.c").write_text(src)
    m = qemu.MACHINES[machine]
    ld = tmp_path / "fw.ld"
    ld.write_text(qemu.render_linker_script(m.flash[0], m.flash[1], m.ram[0], m.ram[1], 16384))
    elf = tmp_path / "fw.elf"
    qemu.compile_firmware([tmp_path / "cases.c", RUNTIME_C / "src" / "train.c", *qemu.firmware_sources()],
                          [RUNTIME_C / "include", qemu.FIRMWARE_DIR], elf, m.core, list(m.fpu_flags), ld,
                          ["-Wdouble-promotion"])  # fmt: skip
    result = qemu.run_qemu(elf, machine, tmp_path, timeout=120, count=False)
    assert result.fault is None, result.fault
    assert result.exit_code == 0, result.stderr

    class Host:  # the host library, with the two wrappers
        def __getattr__(self, name):
            if name in ("tinyc_expf_to", "tinyc_logf_to"):
                fn = getattr(lib, name[:-3])
                return lambda x, y: ctypes.memmove(y, ctypes.byref(ctypes.c_float(fn(x))), 4)
            return getattr(lib, name)

    host = calls.run_host(Host())
    got = (tmp_path / "out.bin").read_bytes()
    assert len(got) == sum(a.nbytes for outs in host for a in outs)
    assert got == b"".join(a.tobytes() for outs in host for a in outs)
    # and the device's updates are the numpy specs'
    at, checked = 0, 0
    for (fn, args), outs in zip(calls.calls, host):
        size = sum(a.nbytes for a in outs)
        dev = got[at:at + size]
        at += size
        if fn == "tinyc_sgd_update_s8":
            k, count, lr, dw, w_scale, per_channel, max_units, w_q, res, state = (
                a if a is None else a[-1] for a in args)
            want_w, want_r, after = T.sgd_update_s8(k, count, lr, dw, w_scale, per_channel, max_units, w_q, res,
                                                    None if state is None else state[0])  # fmt: skip
            assert dev == b"".join(a.tobytes() for a in (want_w, want_r) if a is not None) + (
                b"" if after is None else np.uint32(after).tobytes())
            checked += 1
        elif fn == "tinyc_sgd_update_s32":
            k, lr, db, s, per_channel, bias = (a[-1] for a in args)
            assert dev == T.sgd_update_s32(k, lr, db, s, per_channel, bias).tobytes()
            checked += 1
    assert checked == 40


# ----------------------------------------------------------------------------
# The float graph: C vs the numpy twins, the twins vs the ops
# ----------------------------------------------------------------------------


def test_float_graph_conv_and_fc(lib):
    from tinyc.ops.conv import Conv2D

    rng = np.random.default_rng(31)
    for i in range(60):
        p, pads, _, _, dz = _conv_case(rng, KINDS[i % len(KINDS)])
        cg = p.in_c // p.groups
        x = _f32(rng.standard_normal((p.in_h, p.in_w, p.in_c)))
        w = _f32(rng.standard_normal((p.out_c, p.k_h, p.k_w, cg)))
        bias = _f32(rng.standard_normal(p.out_c)) if i % 2 else None
        lo, hi = (0.0, 6.0) if i % 3 == 0 else (-np.inf, np.inf)
        want = T.conv2d_f32(p, x, w, bias, lo, hi)
        got = _out(want.size)
        lib.tinyc_conv2d_f32(ctypes.byref(p.to_ctypes()), _ptr(x), _ptr(w), _ptr(bias), lo, hi, _ptr(got))
        assert_close(got, want)
        attrs = ConvAttrs((p.stride_h, p.stride_w), (p.dil_h, p.dil_w), pads, p.groups, Clamp(lo, hi))
        inputs = [x[None], w] + ([bias] if bias is not None else [])
        ref = Conv2D().ref(node(Conv2D, attrs, ["x", "w", "b"][:len(inputs)]), inputs)[0]
        assert_close(want, ref)
        dx = _out(p.in_h * p.in_w * p.in_c)
        lib.tinyc_conv2d_grad_input_ff32(ctypes.byref(p.to_ctypes()), _ptr(dz), _ptr(w), _ptr(dx))
        assert_close(dx, T.conv2d_grad_input_ff32(p, dz, w))
        k = int(rng.integers(1, p.out_c + 1))
        dw = _out(k * p.k_h * p.k_w * cg)
        lib.tinyc_conv2d_grad_weight_ff32(ctypes.byref(p.to_ctypes()), k, _ptr(x), _ptr(dz), _ptr(dw))
        want_dw = T.conv2d_grad_weight_ff32(p, k, x, dz)
        assert_close(dw, want_dw)
        # the same as the int8-reading kernel on exactly representable values
        scale = np.float32(0.25)
        x_q = _s8(np.clip(np.rint(x / scale), -127, 127))
        int8 = T.conv2d_grad_weight_f32(p, k, x_q, scale, 0, dz)
        assert_close(T.conv2d_grad_weight_ff32(p, k, scale * x_q.astype(np.float32), dz), int8)
    for _ in range(30):
        rows, n_in, n_out = int(rng.integers(1, 4)), int(rng.integers(1, 30)), int(rng.integers(1, 12))
        x, w = _f32(rng.standard_normal(rows * n_in)), _f32(rng.standard_normal(n_out * n_in))
        bias = _f32(rng.standard_normal(n_out))
        want = T.fc_f32(rows, n_in, n_out, x, w, bias, -np.inf, np.inf)
        assert_close(want, x.reshape(rows, n_in) @ w.reshape(n_out, n_in).T + bias)
        got = _out(rows * n_out)
        lib.tinyc_fc_f32(rows, n_in, n_out, _ptr(x), _ptr(w), _ptr(bias), -np.inf, np.inf, _ptr(got))
        assert_close(got, want)
        dz = random_grad(rng, rows * n_out)
        dx, k = _out(rows * n_in), int(rng.integers(1, n_out + 1))
        lib.tinyc_fc_grad_input_ff32(rows, n_in, n_out, _ptr(dz), _ptr(w), _ptr(dx))
        assert_close(dx, T.fc_grad_input_ff32(rows, n_in, n_out, dz, w))
        dw = _out(k * n_in)
        lib.tinyc_fc_grad_weight_ff32(rows, n_in, n_out, k, _ptr(x), _ptr(dz), _ptr(dw))
        assert_close(dw, T.fc_grad_weight_ff32(rows, n_in, n_out, k, x, dz))


def test_float_graph_pools_clamps_loss_update(lib):
    rng = np.random.default_rng(32)
    for i in range(40):
        kh, kw = int(rng.integers(1, 4)), int(rng.integers(1, 4))
        h, w = int(rng.integers(kh, 9)), int(rng.integers(kw, 9))
        pt, pl = int(rng.integers(0, kh)), int(rng.integers(0, kw))
        oh, ow = conv_out(h, kh, 1, 1, pt), conv_out(w, kw, 1, 1, pl)
        c = int(rng.integers(1, 5))
        p = PoolParams(in_h=h, in_w=w, channels=c, out_h=oh, out_w=ow, k_h=kh, k_w=kw, pad_t=pt, pad_l=pl,
                       count_include_pad=i % 2)  # fmt: skip
        x = _f32(rng.standard_normal((h, w, c)))
        for fn in ("avg_pool_f32", "max_pool_f32"):
            got = _out(oh * ow * c)
            getattr(lib, "tinyc_" + fn)(ctypes.byref(p.to_ctypes()), _ptr(x), _ptr(got))
            assert_close(got, getattr(T, fn)(p, x))
        dy = random_grad(rng, (oh, ow, c))
        dx = _out(h * w * c)
        lib.tinyc_max_pool_grad_ff32(ctypes.byref(p.to_ctypes()), _ptr(dy), _ptr(x), _ptr(dx))
        assert_close(dx, T.max_pool_grad_ff32(p, dy, x))
    x = _f32(rng.standard_normal(24))
    got = _out(8)
    lib.tinyc_mean_f32(2, 3, 4, _ptr(x), _ptr(got))
    assert_close(got, T.mean_f32(2, 3, 4, x)) and assert_close(got, x.reshape(2, 3, 4).mean(axis=1))
    got = _out(24 + 12)
    b = _f32(rng.standard_normal(12))
    lib.tinyc_concat2_f32(4, 6, 3, _ptr(x), _ptr(b), _ptr(got))
    assert np.array_equal(got.reshape(4, 9), T.concat2_f32(4, 6, 3, x, b))
    assert np.array_equal(got.reshape(4, 9), np.concatenate([x.reshape(4, 6), b.reshape(4, 3)], axis=1))
    y = _out(24)
    lib.tinyc_clamp_f32(24, 0.0, 0.5, _ptr(x), _ptr(y))
    assert np.array_equal(y, T.clamp_f32(24, 0.0, 0.5, x))
    dy, dx = random_grad(rng, 24), _out(24)
    lib.tinyc_clamp_grad_ff32(24, _ptr(dy), _ptr(y), 0.0, 0.5, _ptr(dx))
    assert np.array_equal(dx, T.clamp_grad_ff32(24, dy, y, 0.0, 0.5))
    for label in (0, 3, 9):
        z = _f32(rng.standard_normal(10) * 5)
        loss, grad = np.zeros(1, np.float32), _out(10)
        lib.tinyc_softmax_xent_ff32(10, _ptr(z), label, _ptr(loss), _ptr(grad))
        want_loss, want_grad = T.softmax_xent_ff32(10, z, label)
        assert abs(loss[0] - want_loss) <= 1e-5 * abs(want_loss) + 1e-6
        assert_close(grad, want_grad)
        zd = z.astype(np.float64)
        assert abs(want_loss - (np.log(np.exp(zd - zd.max()).sum()) - (zd[label] - zd.max()))) < 1e-5
    g, w0 = random_grad(rng, 17), _f32(rng.standard_normal(17))
    w1 = w0.copy()
    lib.tinyc_sgd_update_f32(17, 0.1, _ptr(g), _ptr(w1))
    assert np.array_equal(w1, T.sgd_update_f32(17, 0.1, g, w0))
