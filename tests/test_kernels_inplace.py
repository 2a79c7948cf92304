"""In-place depthwise convolution and the poison fill: C against the numpy specs, bit for bit.

* tinyc_depthwise_conv2d_inplace_s8 (runtime_c/src/dw_inplace.c) runs over a
  buffer holding the input, sized exactly in_h*in_w*C inside a bigger guarded
  allocation, with a scratch of exactly depthwise_inplace_scratch_bytes(p)
  bytes, also guarded; the output must equal tinyc_depthwise_conv2d_s8's and
  the numpy specs' bytes, and no guard byte may change.
* The numpy spec depthwise_conv2d_inplace_s8 (a step-by-step simulation of
  the buffer) equals depthwise_conv2d_s8.
* depthwise_inplace_ok states the exact condition; tinyc_fill_s8 == fill_s8.
* dw_inplace.c builds for a Cortex-M4 with no undefined symbols.
"""

from __future__ import annotations

import ctypes
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests.test_kernels_conv import random_act, random_requant
from tinyc.kernels.conv import (
    depthwise_conv2d_inplace_s8,
    depthwise_conv2d_s8,
    depthwise_inplace_ok,
    depthwise_inplace_scratch_bytes,
)
from tinyc.kernels.data import fill_s8
from tinyc.kernels.params import ConvParams

RUNTIME = Path(__file__).resolve().parent.parent / "tinyc" / "runtime_c"
SOURCES = sorted((RUNTIME / "src").glob("*.c"))
CFLAGS = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-O2"]
ARM_FLAGS = ["-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16", "-ffreestanding"]
GUARD = 64  # guard bytes before and after each buffer under test
GUARD_BYTE = 0x5A


@pytest.fixture(scope="module")
def lib(runtime_lib):
    dll = runtime_lib
    dll.tinyc_depthwise_conv2d_s8.argtypes = [ctypes.c_void_p] * 8 + [ctypes.c_int32]
    dll.tinyc_depthwise_conv2d_inplace_s8.argtypes = [ctypes.c_void_p] * 7 + [ctypes.c_int32]
    for name in ("tinyc_depthwise_conv2d_s8", "tinyc_depthwise_conv2d_inplace_s8"):
        getattr(dll, name).restype = None
        getattr(dll, name + "_scratch_bytes").argtypes = [ctypes.c_void_p]
        getattr(dll, name + "_scratch_bytes").restype = ctypes.c_int32
    dll.tinyc_fill_s8.argtypes = [ctypes.c_int32, ctypes.c_int32, ctypes.c_void_p]
    dll.tinyc_fill_s8.restype = None
    return dll


def _ptr(a: np.ndarray | None):
    return None if a is None else a.ctypes.data_as(ctypes.c_void_p)


# ----------------------------------------------------------------------------
# Random cases
# ----------------------------------------------------------------------------


def conv_out(size: int, k: int, stride: int, dil: int, pad_total: int) -> int:
    return (size + pad_total - (k - 1) * dil - 1) // stride + 1


def random_dw_params(rng, *, valid: bool = True) -> ConvParams:
    """A depthwise case (depth_multiplier 1); valid: out_h*out_w <= in_h*in_w (in-place allowed)."""
    kernels = [(1, 1), (3, 3), (5, 5), (7, 7), (3, 1), (1, 3), (2, 3)]
    while True:
        kh, kw = kernels[rng.integers(len(kernels))]
        dh, dw = (int(rng.integers(1, 3)), int(rng.integers(1, 3))) if rng.random() < 0.35 else (1, 1)
        sh, sw = int(rng.integers(1, 4)), int(rng.integers(1, 4))
        h, w = int(rng.integers(1, 16)), int(rng.integers(1, 16))
        if rng.random() < 0.25:  # pads larger than k/2, windows partly or wholly in the padding
            pt, pb, pl, pr = (int(v) for v in rng.integers(0, 6, 4))
        else:
            pt, pb = int(rng.integers(0, kh // 2 * dh + 1)), int(rng.integers(0, kh // 2 * dh + 1))
            pl, pr = int(rng.integers(0, kw // 2 * dw + 1)), int(rng.integers(0, kw // 2 * dw + 1))
        oh, ow = conv_out(h, kh, sh, dh, pt + pb), conv_out(w, kw, sw, dw, pl + pr)
        if oh < 1 or ow < 1 or (oh * ow <= h * w) != valid:
            continue
        c = int(rng.choice([1, 2, 3, 5, 8, 17]))
        out_offset = int(rng.integers(-128, 128))
        lo, hi = random_act(rng, out_offset)
        return ConvParams(
            in_h=h, in_w=w, in_c=c, out_h=oh, out_w=ow, out_c=c, k_h=kh, k_w=kw,
            stride_h=sh, stride_w=sw, dil_h=dh, dil_w=dw, pad_t=pt, pad_l=pl,
            groups=1, depth_multiplier=1,
            in_offset=int(rng.integers(-127, 129)), out_offset=out_offset, act_min=lo, act_max=hi,
        )  # fmt: skip


def random_inputs(rng, p: ConvParams):
    x = rng.integers(-128, 128, (1, p.in_h, p.in_w, p.in_c), dtype=np.int8)
    w_shape = (p.out_c, p.k_h, p.k_w) if rng.random() < 0.5 else (p.out_c, p.k_h, p.k_w, 1)
    w = rng.integers(-128, 128, w_shape, dtype=np.int8)
    fan_in = p.k_h * p.k_w
    spread = int(74 * 74 * np.sqrt(fan_in))
    bias = None if rng.random() < 0.25 else rng.integers(-spread, spread, p.out_c).astype(np.int32)
    mult, shift = random_requant(rng, p.out_c, fan_in)
    return x, w, bias, mult, shift


# ----------------------------------------------------------------------------
# Running the C kernels
# ----------------------------------------------------------------------------


def run_c_separate(lib, p, x, w, bias, mult, shift) -> np.ndarray:
    arrays = [np.ascontiguousarray(a, dtype=t) if a is not None else None
              for a, t in ((x, np.int8), (w, np.int8), (bias, np.int32), (mult, np.int32), (shift, np.int32))]  # fmt: skip
    out = np.full((1, p.out_h, p.out_w, p.out_c), 99, dtype=np.int8)
    cp = p.to_ctypes()
    lib.tinyc_depthwise_conv2d_s8(ctypes.byref(cp), *map(_ptr, arrays), _ptr(out), None, 0)
    return out


def run_c_inplace(lib, p, x, w, bias, mult, shift, rng, buf_bytes: int | None = None) -> np.ndarray:
    """The in-place kernel over a guarded buffer holding x; asserts the guards are intact.

    ``buf_bytes``: the buffer's size (default: exactly the input's).  The scratch
    is exactly depthwise_inplace_scratch_bytes(p) bytes between two guards, and
    filled with random garbage first (the kernel must write before it reads).
    """
    n_in = p.in_h * p.in_w * p.in_c
    n_out = p.out_h * p.out_w * p.out_c
    size = n_in if buf_bytes is None else buf_bytes
    region = np.full(GUARD + size + GUARD, GUARD_BYTE, dtype=np.uint8).view(np.int8)
    buf = region[GUARD : GUARD + size]
    buf[:] = rng.integers(-128, 128, size, dtype=np.int8)  # garbage past the input, if any
    buf[:n_in] = np.asarray(x, dtype=np.int8).reshape(-1)
    n_scratch = depthwise_inplace_scratch_bytes(p)
    assert lib.tinyc_depthwise_conv2d_inplace_s8_scratch_bytes(ctypes.byref(p.to_ctypes())) == n_scratch
    assert lib.tinyc_depthwise_conv2d_s8_scratch_bytes(ctypes.byref(p.to_ctypes())) == 0  # portable: none
    scratch_region = np.full(GUARD + n_scratch + GUARD, GUARD_BYTE, dtype=np.uint8).view(np.int8)
    scratch_region[GUARD : GUARD + n_scratch] = rng.integers(-128, 128, n_scratch, dtype=np.int8)
    w = np.ascontiguousarray(w, dtype=np.int8)
    bias = None if bias is None else np.ascontiguousarray(bias, dtype=np.int32)
    mult = np.ascontiguousarray(mult, dtype=np.int32)
    shift = np.ascontiguousarray(shift, dtype=np.int32)
    cp = p.to_ctypes()
    lib.tinyc_depthwise_conv2d_inplace_s8(
        ctypes.byref(cp), _ptr(buf), _ptr(w), _ptr(bias), _ptr(mult), _ptr(shift), _ptr(scratch_region[GUARD:]),
        n_scratch,
    )
    guard = np.int8(np.uint8(GUARD_BYTE).view(np.int8))
    assert (region[:GUARD] == guard).all() and (region[GUARD + size :] == guard).all(), "buffer guard overwritten"
    assert (scratch_region[:GUARD] == guard).all(), "scratch guard (before) overwritten"
    assert (scratch_region[GUARD + n_scratch :] == guard).all(), "scratch guard (after) overwritten"
    return buf[:n_out].reshape(1, p.out_h, p.out_w, p.out_c).copy()


# ----------------------------------------------------------------------------
# Tests
# ----------------------------------------------------------------------------


def test_scratch_bytes_formula():
    p = ConvParams(in_h=10, in_w=9, in_c=4, out_h=5, out_w=9, out_c=4, k_h=3, k_w=3, stride_h=2, stride_w=1,
                   pad_t=1, pad_l=1)  # fmt: skip
    # rows -1 .. 9 (11), columns -1 .. 9 (11)
    assert depthwise_inplace_scratch_bytes(p) == 11 * 11
    p = ConvParams(in_h=8, in_w=8, in_c=1, out_h=3, out_w=8, out_c=1, k_h=5, k_w=3, stride_h=3, stride_w=1,
                   dil_h=2, dil_w=1, pad_t=0, pad_l=1)  # fmt: skip
    assert depthwise_inplace_scratch_bytes(p) == (2 * 3 + 4 * 2 + 1) * (7 + 2 + 1)
    # a strided 1x1 reads only every third row: the plane stops before the input's end
    p = ConvParams(in_h=7, in_w=7, in_c=3, out_h=3, out_w=3, out_c=3, k_h=1, k_w=1, stride_h=3, stride_w=3)
    assert depthwise_inplace_scratch_bytes(p) == 7 * 7
    p.in_h = p.in_w = 8
    assert depthwise_inplace_scratch_bytes(p) == 7 * 7


def test_inplace_ok_condition():
    base = dict(in_h=6, in_w=6, in_c=3, out_h=6, out_w=6, out_c=3, k_h=3, k_w=3, pad_t=1, pad_l=1)
    assert depthwise_inplace_ok(ConvParams(**base))
    assert not depthwise_inplace_ok(ConvParams(**{**base, "out_c": 6, "depth_multiplier": 2}))
    # 1x1 kernel with padding 2 all round: 10x10 output from a 6x6 input
    grown = ConvParams(**{**base, "k_h": 1, "k_w": 1, "pad_t": 2, "pad_l": 2, "out_h": 10, "out_w": 10})
    assert not depthwise_inplace_ok(grown)
    # more rows but fewer pixels: out 7x5 = 35 <= 36 is fine; 7x6 = 42 is not
    assert depthwise_inplace_ok(ConvParams(**{**base, "out_h": 7, "out_w": 5}))
    assert not depthwise_inplace_ok(ConvParams(**{**base, "out_h": 7, "out_w": 6}))
    # the input zero point must fit in int8 (padding is stored as it)
    assert depthwise_inplace_ok(ConvParams(**{**base, "in_offset": 128}))
    assert depthwise_inplace_ok(ConvParams(**{**base, "in_offset": -127}))
    assert not depthwise_inplace_ok(ConvParams(**{**base, "in_offset": -128}))


def test_inplace_spec_rejects_depth_multiplier():
    p = ConvParams(in_h=4, in_w=4, in_c=2, out_h=4, out_w=4, out_c=4, k_h=3, k_w=3, pad_t=1, pad_l=1,
                   depth_multiplier=2)  # fmt: skip
    x = np.zeros((1, 4, 4, 2), dtype=np.int8)
    w = np.zeros((4, 3, 3), dtype=np.int8)
    with pytest.raises(ValueError):
        depthwise_conv2d_inplace_s8(p, x, w, None, np.ones(4, np.int32), np.zeros(4, np.int32))
    p = ConvParams(in_h=4, in_w=4, in_c=2, out_h=4, out_w=4, out_c=3, k_h=3, k_w=3, pad_t=1, pad_l=1)
    with pytest.raises(ValueError):
        depthwise_conv2d_inplace_s8(p, x, w[:3], None, np.ones(3, np.int32), np.zeros(3, np.int32))


def test_inplace_spec_matches_depthwise_spec():
    rng = np.random.default_rng(100)
    for i in range(300):
        p = random_dw_params(rng, valid=bool(i % 5))  # the simulation also handles out > in
        args = random_inputs(rng, p)
        np.testing.assert_array_equal(
            depthwise_conv2d_inplace_s8(p, *args), depthwise_conv2d_s8(p, *args), err_msg=f"case {i}: {p}"
        )


def test_inplace_c_matches_separate_c_and_spec(lib):
    rng = np.random.default_rng(101)
    seen = {"pad_gt_half": 0, "window_all_pad": 0, "plane_past_input": 0, "plane_short": 0, "no_bias": 0}
    for i in range(600):
        p = random_dw_params(rng)
        assert depthwise_inplace_ok(p)
        x, w, bias, mult, shift = random_inputs(rng, p)
        want = depthwise_conv2d_s8(p, x, w, bias, mult, shift)
        separate = run_c_separate(lib, p, x, w, bias, mult, shift)
        np.testing.assert_array_equal(separate, want, err_msg=f"case {i}: {p}")
        np.testing.assert_array_equal(depthwise_conv2d_inplace_s8(p, x, w, bias, mult, shift), want)
        got = run_c_inplace(lib, p, x, w, bias, mult, shift, rng)
        np.testing.assert_array_equal(got, want, err_msg=f"case {i}: {p}")
        # coverage bookkeeping
        plane_h = (p.out_h - 1) * p.stride_h + (p.k_h - 1) * p.dil_h + 1
        plane_w = (p.out_w - 1) * p.stride_w + (p.k_w - 1) * p.dil_w + 1
        seen["pad_gt_half"] += p.pad_t > p.k_h // 2 * p.dil_h or p.pad_l > p.k_w // 2 * p.dil_w
        seen["window_all_pad"] += p.pad_t >= (p.k_h - 1) * p.dil_h + 1 or (p.out_h - 1) * p.stride_h - p.pad_t >= p.in_h
        seen["plane_past_input"] += plane_h - p.pad_t > p.in_h or plane_w - p.pad_l > p.in_w
        seen["plane_short"] += plane_h - p.pad_t < p.in_h or plane_w - p.pad_l < p.in_w
        seen["no_bias"] += bias is None
    assert all(v >= 10 for v in seen.values()), seen


def test_inplace_c_fixed_cases(lib):
    """Hand-picked shapes: MobileNet-like 3x3 s1 / s2, a 7x7, and a 1x1 over a strided map."""
    rng = np.random.default_rng(102)
    cases = [
        dict(in_h=12, in_w=12, in_c=16, out_h=12, out_w=12, k_h=3, k_w=3, pad_t=1, pad_l=1),
        dict(in_h=12, in_w=11, in_c=17, out_h=6, out_w=6, k_h=3, k_w=3, stride_h=2, stride_w=2, pad_t=0, pad_l=1),
        dict(in_h=9, in_w=9, in_c=5, out_h=9, out_w=9, k_h=7, k_w=7, pad_t=3, pad_l=3),
        dict(in_h=9, in_w=10, in_c=3, out_h=3, out_w=4, k_h=1, k_w=1, stride_h=3, stride_w=3),
        dict(in_h=5, in_w=5, in_c=1, out_h=5, out_w=5, k_h=3, k_w=3, dil_h=2, dil_w=2, pad_t=2, pad_l=2),
        dict(in_h=1, in_w=1, in_c=3, out_h=1, out_w=1, k_h=3, k_w=3, pad_t=1, pad_l=1),
    ]
    for kw in cases:
        p = ConvParams(**kw, out_c=kw["in_c"], in_offset=int(rng.integers(-127, 129)),
                       out_offset=int(rng.integers(-128, 128)))  # fmt: skip
        assert depthwise_inplace_ok(p)
        x, w, bias, mult, shift = random_inputs(rng, p)
        want = depthwise_conv2d_s8(p, x, w, bias, mult, shift)
        np.testing.assert_array_equal(run_c_inplace(lib, p, x, w, bias, mult, shift, rng), want, err_msg=str(p))


def test_inplace_c_output_larger_than_input_with_a_larger_buffer(lib):
    """out > in is refused by depthwise_inplace_ok only for lack of room: given a buffer of
    max(in, out) pixels, the channel-by-channel argument still holds."""
    rng = np.random.default_rng(103)
    for i in range(100):
        p = random_dw_params(rng, valid=False)
        assert not depthwise_inplace_ok(p)
        x, w, bias, mult, shift = random_inputs(rng, p)
        want = depthwise_conv2d_s8(p, x, w, bias, mult, shift)
        got = run_c_inplace(lib, p, x, w, bias, mult, shift, rng, buf_bytes=p.out_h * p.out_w * p.out_c)
        np.testing.assert_array_equal(got, want, err_msg=f"case {i}: {p}")


@pytest.mark.parametrize("size,value", [(0, 5), (1, -128), (7, 127), (100, -85), (33, 0), (5, 300), (5, -129)])
def test_fill_c_matches_spec(lib, size, value):
    region = np.full(size + 2 * GUARD, 17, dtype=np.int8)
    lib.tinyc_fill_s8(size, value, _ptr(region[GUARD:]))
    want = fill_s8(size, value)
    assert want.dtype == np.int8 and want.shape == (size,)
    np.testing.assert_array_equal(region[GUARD : GUARD + size], want)
    assert (region[:GUARD] == 17).all() and (region[GUARD + size :] == 17).all()
    if -128 <= value <= 127:
        assert (want == value).all()


@pytest.mark.skipif(shutil.which("arm-none-eabi-gcc") is None, reason="arm-none-eabi-gcc not on PATH")
def test_inplace_builds_for_cortex_m4_without_undefined_symbols(tmp_path):
    objects = []
    # conv.c: the depthwise column kernel both depthwise entry points share
    for src in (RUNTIME / "src" / "dw_inplace.c", RUNTIME / "src" / "data.c", RUNTIME / "src" / "conv.c"):
        obj = tmp_path / (src.stem + ".o")
        cmd = ["arm-none-eabi-gcc", *ARM_FLAGS, *CFLAGS, "-I", str(RUNTIME / "include"), "-c", str(src), "-o", str(obj)]
        res = subprocess.run(cmd, capture_output=True, text=True)
        assert res.returncode == 0, res.stderr
        objects.append(str(obj))
    res = subprocess.run(["arm-none-eabi-nm", "-u", *objects], capture_output=True, text=True, check=True)
    undefined = {line.split()[-1] for line in res.stdout.splitlines() if line.strip() and not line.endswith(":")}
    res = subprocess.run(["arm-none-eabi-nm", "--defined-only", *objects], capture_output=True, text=True, check=True)
    undefined -= {line.split()[-1] for line in res.stdout.splitlines() if len(line.split()) == 3}
    assert undefined == set()
