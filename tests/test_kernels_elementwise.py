"""Elementwise, activation and data-movement kernels: C against the numpy spec, bit for bit.

The C kernels (runtime_c/src/{elementwise,activation,data}.c) are compiled
into a shared library and called through ctypes on random cases; the numpy
reference functions (tinyc.kernels.{elementwise,activation,data}) are in turn
checked against tinyc.quant.fixedpoint's scale-level ``*_int8`` helpers, which
were verified against TFLM, so the chain C == spec == TFLM holds.
"""

from __future__ import annotations

import ctypes
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tinyc.kernels import activation, data, elementwise
from tinyc.kernels.params import (
    AddParams,
    HardSwishParams,
    LogisticParams,
    MulParams,
    PadParams,
    RequantizeParams,
    ResizeParams,
    SoftmaxParams,
)
from tinyc.quant import fixedpoint as fx

RUNTIME = Path(__file__).resolve().parent.parent / "tinyc" / "runtime_c"
SOURCES = [RUNTIME / "src" / name for name in ("elementwise.c", "activation.c", "data.c")]
CFLAGS = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-O2"]
ALL_INT8 = np.arange(-128, 128, dtype=np.int8)
P8 = ctypes.POINTER(ctypes.c_int8)


@pytest.fixture(scope="module")
def lib(runtime_lib):
    return runtime_lib


def _p(a: np.ndarray):
    assert a.dtype == np.int8 and a.flags.c_contiguous
    return a.ctypes.data_as(P8)


def _i8(rng, n) -> np.ndarray:
    return rng.integers(-128, 128, size=n, dtype=np.int64).astype(np.int8)


def _scale(rng) -> float:
    return float(10 ** rng.uniform(-3, 0))


def _zp(rng) -> int:
    return int(rng.integers(-128, 128))


def _act(rng) -> tuple[int, int]:
    if rng.random() < 0.4:
        return -128, 127
    lo = int(rng.integers(-128, 60))
    return lo, int(rng.integers(lo, 128))


def _unary(lib, name, p, x, out=None):
    out = np.empty_like(x) if out is None else out
    getattr(lib, name)(ctypes.byref(p.to_ctypes()), _p(x), _p(out))
    return out


# ----------------------------------------------------------------------------
# Add / Sub / Mul with broadcasting
# ----------------------------------------------------------------------------

# (in1 shape, in2 shape): residual, squeeze-excite, scalar, both-sided, odd sizes.
BROADCASTS = [
    ((1, 5, 7, 3), (1, 5, 7, 3)),
    ((1, 6, 5, 16), (1, 1, 1, 16)),
    ((1, 1, 1, 16), (1, 6, 5, 16)),
    ((1, 3, 9, 5), (1, 1, 1, 1)),
    ((1, 1, 1, 1), (1, 1, 1, 1)),
    ((1, 4, 1, 3), (1, 1, 7, 1)),
    ((2, 3, 1, 1), (1, 3, 5, 7)),
    ((1, 1, 13, 1), (1, 11, 13, 2)),
]


def _strides(shape, out_shape) -> tuple[int, int, int, int]:
    """Contiguous strides of ``shape``, 0 along its size-1 (broadcast) dimensions."""
    assert all(n in (1, m) for n, m in zip(shape, out_shape))
    strides, acc = [0, 0, 0, 0], 1
    for d in range(3, -1, -1):
        strides[d] = 0 if shape[d] == 1 else acc
        acc *= shape[d]
    return tuple(strides)


def _case(rng, shapes):
    s1, s2 = shapes
    out_shape = tuple(max(a, b) for a, b in zip(s1, s2))
    x1 = _i8(rng, int(np.prod(s1)))
    x2 = _i8(rng, int(np.prod(s2)))
    q = dict(s1=_scale(rng), z1=_zp(rng), s2=_scale(rng), z2=_zp(rng), so=_scale(rng), zo=_zp(rng))
    lo, hi = _act(rng)
    return out_shape, x1, x2, q, lo, hi


def _add_params(out_shape, s1, s2, q, lo, hi, subtract) -> AddParams:
    a = fx.add_int8_params(q["s1"], q["s2"], q["so"])
    return AddParams(
        out_shape=out_shape,
        in1_strides=_strides(s1, out_shape),
        in2_strides=_strides(s2, out_shape),
        in1_offset=-q["z1"],
        in2_offset=-q["z2"],
        out_offset=q["zo"],
        left_shift=a.left_shift,
        in1_mult=a.input1_multiplier,
        in1_shift=a.input1_shift,
        in2_mult=a.input2_multiplier,
        in2_shift=a.input2_shift,
        out_mult=a.output_multiplier,
        out_shift=a.output_shift,
        subtract=subtract,
        act_min=lo,
        act_max=hi,
    )


def _mul_params(out_shape, s1, s2, q, lo, hi) -> MulParams:
    m = fx.mul_int8_params(q["s1"], q["s2"], q["so"])
    return MulParams(
        out_shape=out_shape,
        in1_strides=_strides(s1, out_shape),
        in2_strides=_strides(s2, out_shape),
        in1_offset=-q["z1"],
        in2_offset=-q["z2"],
        out_offset=q["zo"],
        out_mult=m.output_multiplier,
        out_shift=m.output_shift,
        act_min=lo,
        act_max=hi,
    )


def _binary(lib, name, p, x1, x2):
    out = np.empty(p.out_shape, dtype=np.int8)
    getattr(lib, name)(ctypes.byref(p.to_ctypes()), _p(x1), _p(x2), _p(out))
    return out


def _add(lib, p, x1, x2, table):
    """tinyc_add_s8 with the compile-time table or without (NULL)."""
    out = np.empty(p.out_shape, dtype=np.int8)
    t = None if table is None else np.ascontiguousarray(table, dtype=np.int32)
    lib.tinyc_add_s8(ctypes.byref(p.to_ctypes()), _p(x1), _p(x2),
                     None if t is None else t.ctypes.data_as(ctypes.POINTER(ctypes.c_int32)), _p(out))
    return out


@pytest.mark.parametrize("subtract", [0, 1])
def test_add_sub_c_matches_spec_and_fixedpoint(lib, subtract):
    rng = np.random.default_rng(100 + subtract)
    ref_fn = fx.sub_int8 if subtract else fx.add_int8
    for _ in range(12):
        for shapes in BROADCASTS:
            out_shape, x1, x2, q, lo, hi = _case(rng, shapes)
            p = _add_params(out_shape, *shapes, q, lo, hi, subtract)
            spec = elementwise.add_s8(p, x1, x2)
            assert spec.shape == out_shape and spec.dtype == np.int8 and spec.flags.c_contiguous
            ref = ref_fn(
                x1.reshape(shapes[0]), q["s1"], q["z1"], x2.reshape(shapes[1]), q["s2"], q["z2"],
                q["so"], q["zo"], lo, hi,
            )  # fmt: skip
            np.testing.assert_array_equal(spec, ref)
            table = elementwise.add_table(p)
            np.testing.assert_array_equal(elementwise.add_s8(p, x1, x2, table), spec)
            np.testing.assert_array_equal(_add(lib, p, x1, x2, None), spec)
            np.testing.assert_array_equal(_add(lib, p, x1, x2, table), spec)


def test_add_all_value_pairs(lib):
    """Every (x1, x2) int8 pair: a [1, 256, 256, 1] outer sum via broadcasting, with
    and without the table."""
    rng = np.random.default_rng(7)
    for subtract in (0, 1):
        for _ in range(3):
            q = dict(s1=_scale(rng), z1=_zp(rng), s2=_scale(rng), z2=_zp(rng), so=_scale(rng), zo=_zp(rng))
            p = _add_params((1, 256, 256, 1), (1, 256, 1, 1), (1, 1, 256, 1), q, -128, 127, subtract)
            spec = elementwise.add_s8(p, ALL_INT8, ALL_INT8)
            np.testing.assert_array_equal(_add(lib, p, ALL_INT8, ALL_INT8, None), spec)
            np.testing.assert_array_equal(_add(lib, p, ALL_INT8, ALL_INT8, elementwise.add_table(p)), spec)


def test_add_table_is_checked():
    """The spec refuses a table that is not the one its parameters give."""
    p = _add_params((1, 1, 1, 4), (1, 1, 1, 4), (1, 1, 1, 4),
                    dict(s1=0.1, z1=3, s2=0.05, z2=-7, so=0.2, zo=1), -128, 127, 0)
    bad = elementwise.add_table(p)
    bad[5] += 1
    with pytest.raises(ValueError, match="not add_table"):
        elementwise.add_s8(p, ALL_INT8[:4], ALL_INT8[:4], bad)


def test_mul_c_matches_spec_and_fixedpoint(lib):
    rng = np.random.default_rng(200)
    for _ in range(12):
        for shapes in BROADCASTS:
            out_shape, x1, x2, q, lo, hi = _case(rng, shapes)
            p = _mul_params(out_shape, *shapes, q, lo, hi)
            spec = elementwise.mul_s8(p, x1, x2)
            assert spec.shape == out_shape and spec.dtype == np.int8
            ref = fx.mul_int8(
                x1.reshape(shapes[0]), q["s1"], q["z1"], x2.reshape(shapes[1]), q["s2"], q["z2"],
                q["so"], q["zo"], lo, hi,
            )  # fmt: skip
            np.testing.assert_array_equal(spec, ref)
            np.testing.assert_array_equal(_binary(lib, "tinyc_mul_s8", p, x1, x2), spec)
    # Every value pair, including products needing a left shift (s1 * s2 > s_out).
    for so in (1e-5, 1e-3, 0.5):
        q = dict(s1=0.05, z1=_zp(rng), s2=0.02, z2=_zp(rng), so=so, zo=_zp(rng))
        p = _mul_params((1, 256, 256, 1), (1, 256, 1, 1), (1, 1, 256, 1), q, -128, 127)
        spec = elementwise.mul_s8(p, ALL_INT8, ALL_INT8)
        np.testing.assert_array_equal(_binary(lib, "tinyc_mul_s8", p, ALL_INT8, ALL_INT8), spec)


def test_broadcast_view_rejects_out_of_range_strides():
    with pytest.raises(ValueError):
        elementwise.broadcast_view(np.zeros(6, np.int8), (1, 2, 3, 1), (0, 3, 2, 0))


# ----------------------------------------------------------------------------
# Requantize / clamp
# ----------------------------------------------------------------------------


def test_requantize_all_values_and_in_place(lib):
    rng = np.random.default_rng(300)
    for _ in range(60):
        s_in, s_out, z_in, z_out = _scale(rng), _scale(rng), _zp(rng), _zp(rng)
        lo, hi = _act(rng)
        m, sh = fx.quantize_multiplier(fx._f32(s_in) / fx._f32(s_out))
        p = RequantizeParams(size=256, in_offset=-z_in, out_offset=z_out, mult=m, shift=sh, act_min=lo, act_max=hi)
        spec = activation.requantize_s8(p, ALL_INT8)
        ref = np.clip(fx.multiply_by_quantized_multiplier(ALL_INT8.astype(np.int64) - z_in, m, sh) + z_out, lo, hi)
        np.testing.assert_array_equal(spec, ref)
        np.testing.assert_array_equal(_unary(lib, "tinyc_requantize_s8", p, ALL_INT8), spec)
        buf = ALL_INT8.copy()
        _unary(lib, "tinyc_requantize_s8", p, buf, out=buf)
        np.testing.assert_array_equal(buf, spec)


def test_clamp_in_place(lib):
    rng = np.random.default_rng(400)
    for n in (1, 7, 256, 1001):
        x = _i8(rng, n)
        lo, hi = _act(rng)
        spec = activation.clamp_s8(lo, hi, x)
        np.testing.assert_array_equal(spec, np.clip(x, lo, hi))
        out = np.empty_like(x)
        lib.tinyc_clamp_s8(ctypes.c_int32(n), ctypes.c_int32(lo), ctypes.c_int32(hi), _p(x), _p(out))
        np.testing.assert_array_equal(out, spec)
        lib.tinyc_clamp_s8(ctypes.c_int32(n), ctypes.c_int32(lo), ctypes.c_int32(hi), _p(x), _p(x))
        np.testing.assert_array_equal(x, spec)


# ----------------------------------------------------------------------------
# Softmax / Logistic / HardSwish
# ----------------------------------------------------------------------------


def _softmax_params(rows, depth, scale, beta=1.0) -> SoftmaxParams:
    sp = fx.softmax_int8_params(scale, beta)
    return SoftmaxParams(rows, depth, sp.input_multiplier, sp.input_left_shift, sp.diff_min)


def test_softmax_c_matches_spec_and_fixedpoint(lib):
    rng = np.random.default_rng(500)
    for _ in range(40):
        rows, depth = int(rng.integers(1, 6)), int(rng.choice([1, 2, 3, 10, 17, 100, 255]))
        scale = float(10 ** rng.uniform(-3, 0.5))
        x = _i8(rng, rows * depth)
        if rng.random() < 0.3:  # many ties at the row maximum
            x = np.minimum(x, np.int8(rng.integers(-100, 100)))
        p = _softmax_params(rows, depth, scale)
        spec = activation.softmax_s8(p, x)
        np.testing.assert_array_equal(spec, fx.softmax_int8(x.reshape(rows, depth), scale).reshape(-1))
        np.testing.assert_array_equal(_unary(lib, "tinyc_softmax_s8", p, x), spec)
    # Every input value in one row, over many scales.
    for scale in 10 ** np.linspace(-3, 0.5, 25):
        p = _softmax_params(1, 256, float(scale))
        spec = activation.softmax_s8(p, ALL_INT8)
        np.testing.assert_array_equal(spec, fx.softmax_int8(ALL_INT8, float(scale)))
        np.testing.assert_array_equal(_unary(lib, "tinyc_softmax_s8", p, ALL_INT8), spec)


def test_softmax_sum_of_exps_at_least_512(lib):
    """>= 512 entries at the maximum: TFLite's shift exponent exceeds 31 (UB there); tinyc outputs -128."""
    for depth in (511, 512, 1000, 5000):
        x = np.full(depth, 5, dtype=np.int8)
        p = _softmax_params(1, depth, 0.1)
        spec = activation.softmax_s8(p, x)
        if depth >= 512:
            assert (spec == -128).all()
        else:
            np.testing.assert_array_equal(spec, fx.softmax_int8(x, 0.1))
        np.testing.assert_array_equal(_unary(lib, "tinyc_softmax_s8", p, x), spec)


def test_logistic_all_values(lib):
    rng = np.random.default_rng(600)
    scales = [*(10 ** rng.uniform(-3, 0, 50)), 1e-3, 1.0, 1 / 16, 0.1, 2.0]
    for scale in scales:
        zp = _zp(rng)
        lp = fx.logistic_int8_params(float(scale), zp)
        p = LogisticParams(256, lp.input_zero_point, lp.input_range_radius, lp.input_multiplier, lp.input_left_shift)
        spec = activation.logistic_s8(p, ALL_INT8)
        np.testing.assert_array_equal(spec, fx.logistic_int8(ALL_INT8, float(scale), zp))
        np.testing.assert_array_equal(_unary(lib, "tinyc_logistic_s8", p, ALL_INT8), spec)


def test_hard_swish_all_values(lib):
    rng = np.random.default_rng(700)
    n = 0
    while n < 60:
        s_in = float(10 ** rng.uniform(-3, 0))
        s_out = s_in * float(10 ** rng.uniform(-1.5, 0.5))
        z_in, z_out = _zp(rng), _zp(rng)
        try:
            hp = fx.hard_swish_int8_params(s_in, z_in, s_out, z_out)
        except ValueError:  # output exponent > 0: TFLM rejects the model too
            continue
        n += 1
        p = HardSwishParams(256, *hp)
        spec = activation.hard_swish_s8(p, ALL_INT8)
        np.testing.assert_array_equal(spec, fx.hard_swish_int8(ALL_INT8, s_in, z_in, s_out, z_out))
        np.testing.assert_array_equal(_unary(lib, "tinyc_hard_swish_s8", p, ALL_INT8), spec)


def test_unary_spec_shapes():
    x = ALL_INT8.reshape(2, 8, 16)
    assert activation.clamp_s8(-3, 3, x).shape == x.shape
    p = RequantizeParams(size=256)
    assert activation.requantize_s8(p, x).shape == x.shape
    with pytest.raises(ValueError):
        activation.requantize_s8(RequantizeParams(size=255), x)


# ----------------------------------------------------------------------------
# Data movement
# ----------------------------------------------------------------------------


def test_concat(lib):
    rng = np.random.default_rng(800)
    for outer, inner in [(1, [3]), (1, [5, 7]), (6, [1, 4, 9]), (13, [2, 0, 3, 5])]:
        xs = [_i8(rng, outer * n) for n in inner]
        spec = data.concat_s8(outer, xs, inner)
        ref = np.concatenate([x.reshape(outer, n) for x, n in zip(xs, inner)], axis=1)
        np.testing.assert_array_equal(spec, ref)
        out = np.empty(outer * sum(inner), dtype=np.int8)
        ins = (P8 * len(xs))(*[_p(x) for x in xs])
        inner_c = (ctypes.c_int32 * len(inner))(*inner)
        lib.tinyc_concat_s8(ctypes.c_int32(outer), ctypes.c_int32(len(xs)), ins, inner_c, _p(out))
        np.testing.assert_array_equal(out, spec.reshape(-1))


def test_pad(lib):
    rng = np.random.default_rng(900)
    cases = [
        ((1, 5, 7, 3), (0, 1, 1, 0), (0, 1, 1, 0)),
        ((1, 4, 4, 8), (0, 0, 2, 0), (0, 3, 0, 0)),
        ((1, 3, 3, 2), (0, 0, 0, 1), (0, 0, 0, 2)),
        ((2, 3, 1, 5), (1, 2, 0, 0), (0, 1, 3, 1)),
        ((1, 6, 5, 4), (0, -1, 2, 0), (0, 1, -2, -1)),  # negative pads crop
    ]
    for in_shape, before, after in cases:
        x = _i8(rng, int(np.prod(in_shape)))
        p = PadParams(in_shape=in_shape, pad_before=before, pad_after=after, pad_value=_zp(rng))
        spec = data.pad_s8(p, x)
        if min(before + after) >= 0:
            ref = np.pad(x.reshape(in_shape), list(zip(before, after)), constant_values=p.pad_value)
            np.testing.assert_array_equal(spec, ref)
        out = np.empty(spec.size, dtype=np.int8)
        lib.tinyc_pad_s8(ctypes.byref(p.to_ctypes()), _p(x), _p(out))
        np.testing.assert_array_equal(out, spec.reshape(-1))


def test_resize_nearest(lib):
    rng = np.random.default_rng(1000)
    sizes = [(4, 4, 8, 8), (3, 5, 6, 15), (7, 7, 3, 2), (5, 3, 7, 11), (1, 1, 4, 4), (6, 4, 6, 4), (2, 3, 9, 1)]
    for in_h, in_w, out_h, out_w in sizes:
        c = int(rng.integers(1, 5))
        x = _i8(rng, in_h * in_w * c)
        p = ResizeParams(in_h, in_w, c, out_h, out_w)
        spec = data.resize_nearest_s8(p, x)
        assert spec.shape == (out_h, out_w, c)
        # TFLite's float32 formula agrees for these sizes (and any integer factor <= 40).
        ys = np.minimum(np.floor(np.arange(out_h, dtype=np.float32) * np.float32(in_h / out_h)), in_h - 1)
        xs = np.minimum(np.floor(np.arange(out_w, dtype=np.float32) * np.float32(in_w / out_w)), in_w - 1)
        ref = x.reshape(in_h, in_w, c)[ys.astype(int)[:, None], xs.astype(int)[None, :]]
        np.testing.assert_array_equal(spec, ref)
        out = np.empty(spec.size, dtype=np.int8)
        lib.tinyc_resize_nearest_s8(ctypes.byref(p.to_ctypes()), _p(x), _p(out))
        np.testing.assert_array_equal(out, spec.reshape(-1))


def test_strided_copy_transposes_slices_and_broadcasts(lib):
    """Transposes (every 4-D permutation), slices with steps (negative too) and
    broadcasts, each against numpy's own view of the data."""
    import itertools

    from tinyc.kernels.params import StridedCopyParams

    def params_of(index_view):
        v = index_view
        pad = 6 - v.ndim
        strides = tuple(s // v.itemsize for s in v.strides)
        return StridedCopyParams((1,) * pad + v.shape, (0,) * pad + strides, int(v[(0,) * v.ndim]))

    rng = np.random.default_rng(1200)
    cases = []
    for in_shape in [(1, 3, 4, 5), (2, 1, 7, 3), (1, 6, 6, 1)]:
        for perm in itertools.permutations(range(4)):
            cases.append((in_shape, lambda a, perm=perm: a.transpose(perm)))
    cases += [
        ((2, 5, 7, 3), lambda a: a[:, 1:4, ::2, :]),
        ((2, 5, 7, 3), lambda a: a[1:, ::-1, 6:0:-3, 2:]),
        ((1, 1, 9, 4), lambda a: np.broadcast_to(a, (3, 2, 9, 4))),
        ((1, 3, 1, 5), lambda a: np.broadcast_to(a, (2, 3, 4, 5))),
        ((3, 4, 5, 6), lambda a: a[:, 2:3, :, ::5].transpose(3, 0, 2, 1)),
        ((2, 3, 2, 3, 2, 2), lambda a: a.transpose(5, 3, 1, 4, 2, 0)),  # 6 axes that do not merge
        ((2, 3, 4, 5, 2), lambda a: a[:, ::-1, 1:, :, :].transpose(4, 0, 3, 1, 2)),
    ]
    for in_shape, view in cases:
        x = _i8(rng, int(np.prod(in_shape)))
        index = np.arange(x.size, dtype=np.int64).reshape(in_shape)
        p = params_of(view(index))
        spec = data.strided_copy_s8(p, x)
        np.testing.assert_array_equal(spec.reshape(-1), view(x.reshape(in_shape)).reshape(-1))
        out = np.empty(spec.size, dtype=np.int8)
        lib.tinyc_strided_copy_s8(ctypes.byref(p.to_ctypes()), _p(x), _p(out))
        np.testing.assert_array_equal(out, spec.reshape(-1))
    with pytest.raises(ValueError, match="outside"):
        data.strided_copy_s8(StridedCopyParams((1, 1, 1, 1, 1, 4), (0, 0, 0, 0, 0, 2), 0), np.zeros(6, np.int8))


def test_copy(lib):
    x = _i8(np.random.default_rng(1100), 77)
    spec = data.copy_s8(x)
    np.testing.assert_array_equal(spec, x)
    assert spec is not x
    out = np.empty_like(x)
    lib.tinyc_copy_s8(ctypes.c_int32(x.size), _p(x), _p(out))
    np.testing.assert_array_equal(out, x)


# ----------------------------------------------------------------------------
# Cross-compilation for a Cortex-M4: no undefined symbols
# ----------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("arm-none-eabi-gcc") is None, reason="arm-none-eabi-gcc not on PATH")
def test_cortex_m4_objects_have_no_undefined_symbols(tmp_path):
    arm_flags = ["-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16", "-ffreestanding", "-c"]
    objects = []
    for src in SOURCES:
        obj = tmp_path / (src.stem + ".o")
        cmd = ["arm-none-eabi-gcc", *arm_flags, *CFLAGS, "-I", str(RUNTIME / "include"), str(src), "-o", str(obj)]
        res = subprocess.run(cmd, capture_output=True, text=True)
        assert res.returncode == 0, res.stderr
        objects.append(str(obj))
    nm = shutil.which("arm-none-eabi-nm")
    if nm is None:
        pytest.skip("arm-none-eabi-nm not on PATH")
    res = subprocess.run([nm, "-u", *objects], capture_output=True, text=True, check=True)
    undefined = [line for line in res.stdout.splitlines() if line.strip() and not line.endswith(":")]
    assert undefined == [], undefined
