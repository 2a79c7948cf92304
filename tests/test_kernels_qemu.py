"""The convolution, fully connected and pooling kernels on emulated Cortex-M cores, bit for bit.

The host tests (test_kernels_conv.py, test_kernels_inplace.py) compile the
portable C; the Cortex-M4 / M7 / M55 builds take the DSP fast paths
(__ARM_FEATURE_DSP: SIMD dot products, the exact fast requantization of
simd.h, the assembly loops), which only run here.  Many random kernel cases
(odd shapes, channel counts that are not multiples of 4, strides, padding,
dilation, depth multipliers, groups, clamp ranges, requantization parameters
inside and outside the fast paths' ranges) are generated in Python with their
expected outputs from the numpy specs (tinyc/kernels), written into one C
program as constant arrays, and run on mps2-an386 (Cortex-M4), mps2-an500
(Cortex-M7), mps3-an547 (Cortex-M55) and mps2-an385 (Cortex-M3: the portable
kernels with their Thumb-2 loops, tinyc_rqp and their scratch) under QEMU.  The program checks every
output byte and the guard bytes around the output and the in-place scratch,
exits 0 when every case matches, else reports the first mismatch over
semihosting.  Also: the runtime builds without warnings and without undefined
symbols for these cores and for the Cortex-M0+ (portable code).

Skipped without arm-none-eabi-gcc or qemu-system-arm.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pytest

from tinyc.kernels import KERNELS
from tinyc.kernels.conv import (
    conv2d_1x1_s8,
    conv2d_s8,
    depthwise_conv2d_s8,
    depthwise_inplace_scratch_bytes,
    dw_mve_by_channel,
    fold_bias,
    fully_connected_s8,
    mve_bias,
    mve_pack,
    mve_pack_dw,
    widen,
)
from tinyc.kernels.elementwise import add_s8, add_table
from tinyc.kernels.params import AddParams, ConvParams, FCParams, KernelParams, MeanParams, PoolParams
from tinyc.kernels.pool import avg_pool_s8, max_pool_s8, mean_s8
from tinyc.passes.widen import offset_foldable
from tinyc.quant import fixedpoint as fx

RUNTIME = Path(__file__).resolve().parent.parent / "tinyc" / "runtime_c"
KERNEL_SOURCES = ["conv.c", "fc.c", "dw_inplace.c", "pool.c", "elementwise.c", "mve.c"]
GUARD = 16
HAVE_TOOLS = shutil.which("arm-none-eabi-gcc") is not None and shutil.which("qemu-system-arm") is not None
needs_tools = pytest.mark.skipif(not HAVE_TOOLS, reason="needs arm-none-eabi-gcc and qemu-system-arm")

# machine -> (core, float flags, flash bytes the cases may use)
MACHINES = {
    "mps2-an386": ("cortex-m4", ("-mfpu=fpv4-sp-d16", "-mfloat-abi=hard")),
    "mps2-an500": ("cortex-m7", ("-mfpu=fpv5-d16", "-mfloat-abi=hard")),
    "mps3-an547": ("cortex-m55", ("-mfloat-abi=hard",)),
    "mps2-an385": ("cortex-m3", ("-mfloat-abi=soft",)),  # no DSP extension: the portable kernels
}
PORTABLE = ("mps2-an385",)  # machines whose builds take the portable C (their scratch: dsp=False)
BUILD_CORES = {**{core: flags for core, flags in MACHINES.values()}, "cortex-m0plus": ("-mfloat-abi=soft",)}

KINDS = {  # kind -> C call (x, w, b, m, s, out, scratch, the scratch bytes given)
    "conv": "tinyc_conv2d_s8((const tinyc_conv_params *)c->p, c->x, c->w, c->b, c->m, c->s, out, scratch, give)",
    "conv1x1": "tinyc_conv2d_1x1_s8((const tinyc_conv_params *)c->p, c->x, c->w, c->b, c->m, c->s, out, scratch, "
    "give)",
    "dw": "tinyc_depthwise_conv2d_s8((const tinyc_conv_params *)c->p, c->x, c->w, c->b, c->m, c->s, out, scratch, "
    "give)",
    "dw_inplace": "tinyc_depthwise_conv2d_inplace_s8((const tinyc_conv_params *)c->p, out, c->w, c->b, c->m, "
    "c->s, scratch, give)",
    "fc": "tinyc_fully_connected_s8((const tinyc_fc_params *)c->p, c->x, c->w, c->b, c->m, c->s, out, scratch, "
    "give)",
    "max_pool": "tinyc_max_pool_s8((const tinyc_pool_params *)c->p, c->x, out)",
    "avg_pool": "tinyc_avg_pool_s8((const tinyc_pool_params *)c->p, c->x, out)",
    "mean": "tinyc_mean_s8((const tinyc_mean_params *)c->p, c->x, out)",
    # wide kernels: w holds the int32 words (kernels/conv.py widen), b the folded bias
    "conv_wide": "tinyc_conv2d_wide_s8((const tinyc_conv_params *)c->p, c->x, (const int32_t *)(const void *)c->w, "
    "c->b, c->m, c->s, out, scratch, give)",
    "fc_wide": "tinyc_fully_connected_wide_s8((const tinyc_fc_params *)c->p, c->x, "
    "(const int32_t *)(const void *)c->w, c->b, c->m, c->s, out, scratch, give)",
    # Helium kernels (on mps3-an547 only): w holds the packed int8 weights (kernels/conv.py mve_pack)
    "conv_mve": "tinyc_conv2d_mve_s8((const tinyc_conv_params *)c->p, c->x, c->w, c->b, c->m, c->s, out, scratch, "
    "give)",
    "fc_mve": "tinyc_fully_connected_mve_s8((const tinyc_fc_params *)c->p, c->x, c->w, c->b, c->m, c->s, out)",
    "dw_mve": "tinyc_depthwise_conv2d_mve_s8((const tinyc_conv_params *)c->p, c->x, c->w, c->b, c->m, c->s, out, "
    "scratch, give)",
    "dw_inplace_mve": "tinyc_depthwise_conv2d_inplace_mve_s8((const tinyc_conv_params *)c->p, out, c->w, c->b, c->m, "
    "c->s, scratch, give)",
    # add: x and w are the two inputs, b the compile-time table (or NULL)
    "add": "tinyc_add_s8((const tinyc_add_params *)c->p, c->x, c->w, c->b, out)",
}


@dataclass
class Case:
    kind: str
    params: KernelParams
    x: np.ndarray
    want: np.ndarray
    w: np.ndarray | None = None
    bias: np.ndarray | None = None
    mult: np.ndarray | None = None
    shift: np.ndarray | None = None
    scratch: int = 0  # the scratch bytes the kernel descriptor plans for a DSP core
    short: int = -1  # a smaller scratch to run again with (the slower paths), or -1
    note: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def macs(self) -> int:
        p = self.params
        if self.kind in ("conv", "conv1x1"):
            return p.out_h * p.out_w * p.out_c * p.k_h * p.k_w * (p.in_c // p.groups)
        if self.kind in ("dw", "dw_inplace"):
            return p.out_h * p.out_w * p.out_c * p.k_h * p.k_w
        if self.kind == "fc":
            return p.batches * p.in_features * p.out_features
        return 0


# ----------------------------------------------------------------------------
# random cases
# ----------------------------------------------------------------------------


def conv_out(size: int, k: int, stride: int, dil: int, pad_total: int) -> int:
    return (size + pad_total - (k - 1) * dil - 1) // stride + 1


def requant(rng, n: int, fan_in: int, style: str):
    """(mult, shift) per channel.  fast: real scales in (0, 0.5), the shifts the
    fast requantization takes; shift0: some channels in [0.5, 1) (shift 0);
    generic: some channels > 1 or tiny (left shifts, shifts below -23), which
    the fast paths leave to the portable code."""
    if rng.random() < 0.5:
        reals = np.exp(rng.uniform(np.log(1e-4), np.log(0.45), n))
    else:
        reals = np.clip(rng.uniform(10, 60, n) / (100.0 * 100.0 * np.sqrt(fan_in)), 1e-6, 0.45)
    if style == "shift0":
        reals[rng.random(n) < 0.4] = rng.uniform(0.5, 0.99)
    elif style == "generic":
        pick = rng.random(n)
        reals[pick < 0.3] = rng.uniform(1.0, 4.0)
        reals[(pick >= 0.3) & (pick < 0.4)] = 1e-9
    return fx.quantize_multiplier_array(reals)


def act_range(rng, out_offset: int, style: str) -> tuple[int, int]:
    if style != "clamp":
        return -128, 127
    lo = int(rng.integers(-128, 100))
    return lo, int(rng.integers(lo, 128))


def style_of(rng) -> str:
    r = rng.random()
    return "fast" if r < 0.6 else "shift0" if r < 0.75 else "clamp" if r < 0.9 else "generic"


def weighted(rng, out_c: int, w_shape, fan_in: int, style: str):
    w = rng.integers(-128, 128, w_shape, dtype=np.int8)
    spread = int(74 * 74 * np.sqrt(fan_in))
    bias = None if rng.random() < 0.15 else rng.integers(-spread, spread, out_c).astype(np.int32)
    if bias is not None and rng.random() < 0.1:
        bias[rng.random(out_c) < 0.5] = int(rng.choice([2**30, -(2**30), 2**31 - 1, -(2**31)]))  # huge biases
    mult, shift = requant(rng, out_c, fan_in, "fast" if style == "clamp" else style)
    return w, bias, mult, shift


def conv_params(rng, *, kind: str) -> ConvParams:
    while True:
        if kind == "conv1x1":
            kh = kw = dh = dw = 1
            sh, sw = (1, 1) if rng.random() < 0.7 else (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
            pt = pl = pb = pr = 0
            h, w = int(rng.integers(1, 10)), int(rng.integers(1, 10))
        else:
            kh, kw = [(3, 3), (3, 3), (5, 5), (7, 7), (1, 1), (3, 1), (1, 3), (2, 3), (10, 4), (1, 7)][rng.integers(10)]
            dh, dw = (int(rng.integers(1, 3)), int(rng.integers(1, 3))) if rng.random() < 0.2 else (1, 1)
            sh, sw = (1, 1) if rng.random() < 0.5 else (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
            h, w = int(rng.integers(1, 14)), int(rng.integers(1, 14))
            if rng.random() < 0.2:
                pt, pb, pl, pr = (int(v) for v in rng.integers(0, 5, 4))
            else:
                pt, pb = int(rng.integers(0, (kh - 1) * dh // 2 + 1)), int(rng.integers(0, (kh - 1) * dh // 2 + 1))
                pl, pr = int(rng.integers(0, (kw - 1) * dw // 2 + 1)), int(rng.integers(0, (kw - 1) * dw // 2 + 1))
        oh, ow = conv_out(h, kh, sh, dh, pt + pb), conv_out(w, kw, sw, dw, pl + pr)
        if oh < 1 or ow < 1:
            continue
        groups, dm = 1, 1
        if kind == "conv1x1":
            in_c = int(rng.choice([1, 2, 3, 4, 5, 8, 12, 16, 17, 24, 32, 40, 64, 128, 132, 136, 160]))
            out_c = int(rng.choice([1, 2, 3, 4, 5, 8, 9, 16, 17]))
        elif kind == "conv":
            if rng.random() < 0.15:
                groups = int(rng.choice([2, 3]))
                in_c, out_c = groups * int(rng.integers(1, 5)), groups * int(rng.integers(1, 4))
            else:
                in_c = int(rng.choice([1, 2, 3, 4, 5, 8, 16, 17, 32]))
                out_c = int(rng.choice([1, 2, 3, 4, 5, 8, 16, 17]))
        else:  # depthwise
            in_c = int(rng.choice([1, 2, 3, 4, 5, 8, 16, 17, 24, 33]))
            dm = 1 if kind == "dw_inplace" else int(rng.choice([1, 1, 1, 2, 3]))
            out_c = in_c * dm
            if kind == "dw_inplace" and oh * ow > h * w:
                continue
        size = h * w * in_c + oh * ow * out_c + out_c * kh * kw * in_c // max(groups, 1 if kind != "dw" else in_c)
        if size > 12000:
            continue
        return ConvParams(
            in_h=h,
            in_w=w,
            in_c=in_c,
            out_h=oh,
            out_w=ow,
            out_c=out_c,
            k_h=kh,
            k_w=kw,
            stride_h=sh,
            stride_w=sw,
            dil_h=dh,
            dil_w=dw,
            pad_t=pt,
            pad_l=pl,
            groups=groups,
            depth_multiplier=dm,
            in_offset=int(rng.integers(-127, 129)),
        )


KERNEL_OF = {"conv": "conv2d_s8", "conv1x1": "conv2d_1x1_s8", "dw": "depthwise_conv2d_s8",
             "dw_inplace": "depthwise_conv2d_inplace_s8"}
SCRATCH_BYTES = {kind: f"tinyc_{name}_scratch_bytes((const tinyc_conv_params *)c->p)"
                 for kind, name in KERNEL_OF.items()}
SCRATCH_BYTES["fc"] = "tinyc_fully_connected_s8_scratch_bytes((const tinyc_fc_params *)c->p)"
SCRATCH_BYTES["conv_wide"] = "tinyc_conv2d_wide_s8_scratch_bytes((const tinyc_conv_params *)c->p)"
SCRATCH_BYTES["fc_wide"] = "tinyc_fully_connected_wide_s8_scratch_bytes((const tinyc_fc_params *)c->p)"
SCRATCH_BYTES["conv_mve"] = "tinyc_conv2d_mve_s8_scratch_bytes((const tinyc_conv_params *)c->p)"
SCRATCH_BYTES["dw_mve"] = "tinyc_depthwise_conv2d_mve_s8_scratch_bytes((const tinyc_conv_params *)c->p)"
SCRATCH_BYTES["dw_inplace_mve"] = "tinyc_depthwise_conv2d_inplace_mve_s8_scratch_bytes((const tinyc_conv_params *)c->p)"
IN_PLACE = ("dw_inplace", "dw_inplace_mve")  # kinds whose output overwrites the input in `out`


def scratch_of(kind: str, p: ConvParams) -> tuple[int, int]:
    """(the scratch the descriptor plans on a DSP core, a byte less to run again
    with when that leaves a valid call: the kernel must then take a slower path
    to the same values; -1: none)."""
    n = KERNELS[KERNEL_OF[kind]].wanted_scratch_bytes(p, dsp=True)
    floor = depthwise_inplace_scratch_bytes(p) if kind == "dw_inplace" else 0  # the plane is required
    return n, n - 1 if n - 1 >= floor else -1


def without_dsp(cases: list[Case]) -> list[Case]:
    """The cases as a core without the DSP extension runs them: the scratch its
    descriptors plan there (the portable kernels' int16 copies of their input,
    their spare scratch),
    a byte less to run again with (the slower path, the same values); no
    Helium kernels.  Each layer whose input offset a board build folds into
    its bias (passes/widen.py) runs folded too (offset 0: the 4-value loop, no
    int16 copy), to the same values."""
    names = {**KERNEL_OF, **PREPACKED, "fc": "fully_connected_s8"}
    out = []
    for c in cases:
        if c.kind.endswith("_mve"):
            continue
        if c.kind not in names:
            out.append(c)
            continue
        variants = [c]
        if offset_foldable(names[c.kind], c.params):
            w2d = c.w.reshape(c.w.shape[0], -1)
            variants.append(replace(c, params=replace(c.params, in_offset=0),
                                    bias=fold_bias(w2d, c.bias, c.params.in_offset)))
        for v in variants:
            n = KERNELS[names[v.kind]].wanted_scratch_bytes(v.params, dsp=False)
            floor = depthwise_inplace_scratch_bytes(v.params) if v.kind == "dw_inplace" else 0
            out.append(replace(v, scratch=n, short=n - 1 if n - 1 >= floor else -1))
    return out


def column_params(rng, in_place: bool) -> ConvParams:
    """A depthwise layer down a one-column map (k_w = in_w = 1, sww's shape):
    up to 16 taps, some rows padded, channels in groups of 4 or not."""
    while True:
        kh, sh = int(rng.integers(1, 17)), int(rng.choice([1, 1, 2]))
        pt, pb = (int(v) for v in rng.integers(0, 3, 2)) if rng.random() < 0.3 else (0, 0)
        h, c = int(rng.integers(1, 40)), int(rng.choice([3, 4, 5, 8, 12, 40]))
        oh = conv_out(h, kh, sh, 1, pt + pb)
        if oh >= 1 and (not in_place or oh <= h):
            return ConvParams(in_h=h, in_w=1, in_c=c, out_h=oh, out_w=1, out_c=c, k_h=kh, k_w=1, stride_h=sh,
                              stride_w=1, dil_h=1, dil_w=1, pad_t=pt, pad_l=0, groups=1, depth_multiplier=1,
                              in_offset=int(rng.integers(-127, 129)))


def conv_case(rng, kind: str, p: ConvParams | None = None) -> Case:
    style = style_of(rng)
    p = p or conv_params(rng, kind=kind)
    p.out_offset = int(rng.integers(-128, 128))
    p.act_min, p.act_max = act_range(rng, p.out_offset, style)
    x = rng.integers(-128, 128, (1, p.in_h, p.in_w, p.in_c), dtype=np.int8)
    if kind in ("dw", "dw_inplace"):
        w, bias, mult, shift = weighted(rng, p.out_c, (p.out_c, p.k_h, p.k_w), p.k_h * p.k_w, style)
        want = depthwise_conv2d_s8(p, x, w, bias, mult, shift)
    elif kind == "conv1x1":
        w, bias, mult, shift = weighted(rng, p.out_c, (p.out_c, p.in_c), p.in_c, style)
        want = conv2d_1x1_s8(p, x, w, bias, mult, shift)
    else:
        cg = p.in_c // p.groups
        w, bias, mult, shift = weighted(rng, p.out_c, (p.out_c, p.k_h, p.k_w, cg), p.k_h * p.k_w * cg, style)
        want = conv2d_s8(p, x, w, bias, mult, shift)
    scratch, short = scratch_of(kind, p)
    return Case(kind, p, x, want, w, bias, mult, shift, scratch, short, note=style)


PREPACKED = {"conv_wide": "conv2d_wide_s8", "fc_wide": "fully_connected_wide_s8", "conv_mve": "conv2d_mve_s8",
             "fc_mve": "fully_connected_mve_s8"}


def prepacked_case(rng, kind: str) -> Case:
    """A conv (one group), pointwise or fully connected case with its weights in
    the layout passes/widen.py stores for the core (*_wide: int16 pairs for the
    DSP loops; *_mve: packed for Helium) and its bias folded with the input offset."""
    fc = kind.startswith("fc")
    while True:
        base = fc_case(rng) if fc else conv_case(rng, "conv1x1" if rng.random() < 0.4 else "conv")
        if fc or base.params.groups == 1:
            break
    p = base.params
    w2d = base.w.reshape(base.w.shape[0], -1)
    folded = fold_bias(w2d, base.bias, p.in_offset)
    if kind.endswith("_mve"):
        w, folded = mve_pack(w2d), mve_bias(folded)
    else:
        w = widen(w2d)
    n = KERNELS[PREPACKED[kind]].scratch_bytes(p, dsp=True)
    return Case(kind, p, base.x, base.want, w, folded, base.mult, base.shift, n, n - 1 if n > 0 else -1,
                note=base.note)


def dw_mve_case(rng, kind: str, by_channel: bool = False, column: bool = False,
                shaped: ConvParams | None = None) -> Case:
    """A depthwise case (depth multiplier 1) with its weights packed per group of
    4 channels and its bias folded, as passes/widen.py stores them for a Cortex-M55;
    the group plane is required (no shorter scratch).  ``by_channel``: one the
    channel-plane loop runs (a 2-D map, up to 16 taps); ``column``: a one-column
    map; ``shaped``: these parameters (the offsets random)."""
    base_kind = "dw_inplace" if kind == "dw_inplace_mve" else "dw"
    while True:
        p = column_params(rng, kind == "dw_inplace_mve") if column else None
        if shaped is not None:
            p = replace(shaped, in_offset=int(rng.integers(-127, 129)))
        base = conv_case(rng, base_kind, p)
        if base.params.depth_multiplier == 1 and (not by_channel or dw_mve_by_channel(base.params)):
            break
    p = base.params
    w2d = base.w.reshape(p.out_c, -1)
    packed, folded = mve_pack_dw(base.w), mve_bias(fold_bias(w2d, base.bias, p.in_offset))
    n = KERNELS["depthwise_conv2d_mve_s8"].scratch_bytes(p, dsp=True)
    return Case(kind, p, base.x, base.want, packed, folded, base.mult, base.shift, n, -1, note=base.note)


def fc_case(rng) -> Case:
    style = style_of(rng)
    while True:
        batches = int(rng.choice([1, 1, 1, 2, 3]))
        n_in = int(rng.choice([1, 3, 4, 5, 8, 16, 17, 64, 100, 250, 256]))
        n_out = int(rng.choice([1, 2, 3, 4, 5, 7, 8, 13]))
        if n_in * n_out <= 6000:
            break
    per_channel = int(rng.random() < 0.6)
    out_offset = int(rng.integers(-128, 128))
    lo, hi = act_range(rng, out_offset, style)
    p = FCParams(
        batches=batches,
        in_features=n_in,
        out_features=n_out,
        in_offset=int(rng.integers(-127, 129)),
        out_offset=out_offset,
        act_min=lo,
        act_max=hi,
        per_channel=per_channel,
    )
    x = rng.integers(-128, 128, (batches, n_in), dtype=np.int8)
    w, bias, mult, shift = weighted(rng, n_out, (n_out, n_in), n_in, style)
    if not per_channel:
        mult, shift = mult[:1], shift[:1]
    want = fully_connected_s8(p, x, w, bias, mult, shift)
    return Case("fc", p, x, want, w, bias, mult, shift, note=style)


def add_case(rng) -> Case:
    """Add / Sub over random shapes (same shape, or input 2 broadcast along the
    channels or pixels), scales and clamps, with the table (the DSP requantization
    when the ranges allow it) and a few without."""
    h, w, c = (int(v) for v in rng.integers(1, 7, 3))
    shape = (1, h, w, c)
    dense = (h * w * c, w * c, c, 1)
    style = style_of(rng)
    s1, s2, so = (float(10 ** rng.uniform(-3, 0)) for _ in range(3))
    if style == "generic":  # an output scale far below the inputs': shifts the fast form leaves alone
        so = min(s1, s2) * float(rng.uniform(0.01, 0.1))
    a = fx.add_int8_params(s1, s2, so)
    out_offset = int(rng.integers(-128, 128))
    lo, hi = act_range(rng, out_offset, style)
    bcast = rng.integers(0, 3)
    x2_shape, st2 = ((1, h, w, c), dense) if bcast == 0 else ((1, 1, 1, c), (0, 0, 0, 1)) if bcast == 1 else (
        (1, h, w, 1), (h * w, w, 1, 0))
    p = AddParams(out_shape=shape, in1_strides=dense, in2_strides=st2, in1_offset=int(rng.integers(-127, 129)),
                  in2_offset=int(rng.integers(-127, 129)), out_offset=out_offset, left_shift=a.left_shift,
                  in1_mult=a.input1_multiplier, in1_shift=a.input1_shift, in2_mult=a.input2_multiplier,
                  in2_shift=a.input2_shift, out_mult=a.output_multiplier, out_shift=a.output_shift,
                  subtract=int(rng.integers(0, 2)), act_min=lo, act_max=hi)
    x1 = rng.integers(-128, 128, shape, dtype=np.int8)
    x2 = rng.integers(-128, 128, x2_shape, dtype=np.int8)
    table = add_table(p) if rng.random() < 0.85 else None
    return Case("add", p, x1, add_s8(p, x1, x2), x2, table, note=style)


def pool_case(rng, kind: str) -> Case:
    if kind == "mean":
        shape = tuple(int(v) for v in rng.integers(1, 9, 3))
        axis = int(rng.integers(0, 3))
        outer, reduce, inner = int(np.prod(shape[:axis])), shape[axis], int(np.prod(shape[axis + 1 :]))
        m, s = fx.quantize_multiplier(float(rng.uniform(0.2, 1.5)))
        m, s = fx.mean_int8_multiplier(m, s, reduce)
        p = MeanParams(
            outer=outer,
            reduce=reduce,
            inner=inner,
            in_zero_point=int(rng.integers(-128, 128)),
            out_offset=int(rng.integers(-128, 128)),
            mult=m,
            shift=s,
        )
        x = rng.integers(-128, 128, shape, dtype=np.int8)
        return Case(kind, p, x, mean_s8(p, x))
    while True:
        kh, kw = int(rng.integers(1, 6)), int(rng.integers(1, 6))
        sh, sw = int(rng.integers(1, 4)), int(rng.integers(1, 4))
        h, w = int(rng.integers(1, 13)), int(rng.integers(1, 13))
        pt, pl = (int(rng.integers(0, kh)), int(rng.integers(0, kw))) if rng.random() < 0.6 else (0, 0)
        pb, pr = int(rng.integers(0, kh)), int(rng.integers(0, kw))
        oh, ow = conv_out(h, kh, sh, 1, pt + pb), conv_out(w, kw, sw, 1, pl + pr)
        if oh >= 1 and ow >= 1:
            break
    lo, hi = act_range(rng, 0, "clamp" if rng.random() < 0.3 else "fast")
    p = PoolParams(
        in_h=h,
        in_w=w,
        channels=int(rng.choice([1, 3, 4, 5, 8, 16, 17])),
        out_h=oh,
        out_w=ow,
        k_h=kh,
        k_w=kw,
        stride_h=sh,
        stride_w=sw,
        pad_t=pt,
        pad_l=pl,
        count_include_pad=int(rng.random() < 0.3),
        pad_value=int(rng.integers(-128, 128)),
        act_min=lo,
        act_max=hi,
    )
    x = rng.integers(-128, 128, (1, p.in_h, p.in_w, p.channels), dtype=np.int8)
    return Case(kind, p, x, (max_pool_s8 if kind == "max_pool" else avg_pool_s8)(p, x))


def realistic_cases(rng) -> list[Case]:
    """Layer shapes of the benchmark models, scaled down (fast-path parameters)."""
    out = []
    shapes = [  # kind, in_h, in_w, in_c, out_c, k, stride, pad
        ("conv1x1", 6, 5, 16, 24, 1, 1, 0),
        ("conv1x1", 4, 4, 64, 10, 1, 1, 0),
        ("conv1x1", 3, 3, 144, 8, 1, 1, 0),
        ("conv1x1", 7, 3, 8, 12, 1, 1, 0),
        ("conv1x1", 6, 6, 16, 8, 1, 2, 0),
        ("conv1x1", 1, 1, 48, 12, 1, 1, 0),
        ("conv", 9, 9, 3, 16, 3, 2, 1),
        ("conv", 12, 6, 1, 8, 4, 2, 1),
        ("conv", 8, 8, 16, 8, 3, 1, 1),
        ("conv", 6, 6, 32, 6, 3, 2, 1),
        ("dw_inplace", 9, 9, 16, 16, 3, 1, 1),
        ("dw_inplace", 10, 10, 8, 8, 3, 2, 1),
        ("dw_inplace", 9, 9, 8, 8, 5, 1, 2),
        ("dw_inplace", 11, 11, 5, 5, 7, 1, 3),
        ("dw_inplace", 12, 12, 4, 4, 7, 2, 3),
        ("dw_inplace", 14, 1, 9, 9, 0, 1, 0),
        ("dw", 9, 9, 16, 16, 3, 1, 1),
        ("dw", 10, 10, 8, 8, 3, 2, 1),
        ("dw", 9, 9, 8, 8, 5, 1, 2),
        # depthwise columns (k < 0: a -k x 1 kernel down a one-column map, sww's
        # layers; unpadded ones run forward in place, 4 channels per word)
        ("dw_inplace", 24, 1, 12, 12, -10, 1, 0),
        ("dw_inplace", 15, 1, 8, 8, -15, 1, 0),
        ("dw_inplace", 30, 1, 40, 40, -3, 1, 0),
        ("dw_inplace", 21, 1, 7, 7, -4, 2, 0),
        ("dw_inplace", 20, 1, 6, 6, -3, 1, 1),
        ("dw", 30, 1, 40, 40, -3, 1, 0),
        ("dw", 20, 1, 9, 9, -5, 2, 2),
    ]
    for kind, h, w, cin, cout, k, s, pad in shapes:
        if k == 0:  # a 5x1 kernel over a one-column map (sww)
            kh, kw, pt, pl = 5, 1, 0, 0
        elif k < 0:
            kh, kw, pt, pl = -k, 1, pad, 0
        else:
            kh = kw = k
            pt = pl = pad
        oh, ow = conv_out(h, kh, s, 1, 2 * pt), conv_out(w, kw, s, 1, 2 * pl)
        p = ConvParams(
            in_h=h,
            in_w=w,
            in_c=cin,
            out_h=oh,
            out_w=ow,
            out_c=cout,
            k_h=kh,
            k_w=kw,
            stride_h=s,
            stride_w=s,
            pad_t=pt,
            pad_l=pl,
            in_offset=int(rng.integers(-127, 129)),
            out_offset=-128 if rng.random() < 0.5 else int(rng.integers(-128, 128)),
        )
        x = rng.integers(-128, 128, (1, h, w, cin), dtype=np.int8)
        if kind.startswith("dw"):
            w_, bias, mult, shift = weighted(rng, cout, (cout, kh, kw), kh * kw, "fast")
            want = depthwise_conv2d_s8(p, x, w_, bias, mult, shift)
        elif kind == "conv1x1":
            w_, bias, mult, shift = weighted(rng, cout, (cout, cin), cin, "fast")
            want = conv2d_1x1_s8(p, x, w_, bias, mult, shift)
        else:
            w_, bias, mult, shift = weighted(rng, cout, (cout, kh, kw, cin), kh * kw * cin, "fast")
            want = conv2d_s8(p, x, w_, bias, mult, shift)
        scratch, short = scratch_of(kind, p)
        out.append(Case(kind, p, x, want, w_, bias, mult, shift, scratch, short, note="model-like"))
    # pools over more than 255 taps (the SIMD sums flush their 16-bit lanes)
    p = PoolParams(in_h=18, in_w=18, channels=8, out_h=1, out_w=1, k_h=18, k_w=18)
    x = rng.integers(-128, 128, (1, 18, 18, 8), dtype=np.int8)
    out.append(Case("avg_pool", p, x, avg_pool_s8(p, x), note="model-like"))
    x = np.full((1, 18, 18, 8), 127, dtype=np.int8)  # the largest sums
    out.append(Case("avg_pool", p, x, avg_pool_s8(p, x), note="model-like"))
    m, s_ = fx.mean_int8_multiplier(*fx.quantize_multiplier(0.8), 300)
    p = MeanParams(outer=2, reduce=300, inner=8, in_zero_point=-3, out_offset=5, mult=m, shift=s_)
    x = rng.integers(-128, 128, (2, 300, 8), dtype=np.int8)
    out.append(Case("mean", p, x, mean_s8(p, x), note="model-like"))
    x = np.full((2, 300, 8), -128, dtype=np.int8)
    out.append(Case("mean", p, x, mean_s8(p, x), note="model-like"))
    for n_in, n_out, per_channel in ((700, 5, 1), (1030, 4, 0)):
        # wide fully connected rows longer than the kernel's chunk (micro_speech's 4,000 features)
        p = FCParams(batches=1, in_features=n_in, out_features=n_out, in_offset=int(rng.integers(-127, 129)),
                     out_offset=int(rng.integers(-128, 128)), per_channel=per_channel)
        x = rng.integers(-128, 128, (1, n_in), dtype=np.int8)
        w_, bias, mult, shift = weighted(rng, n_out, (n_out, n_in), n_in, "fast")
        if not per_channel:
            mult, shift = mult[:1], shift[:1]
        n = KERNELS["fully_connected_wide_s8"].scratch_bytes(p, dsp=True)
        out.append(Case("fc_wide", p, x, fully_connected_s8(p, x, w_, bias, mult, shift), widen(w_),
                        fold_bias(w_, bias, p.in_offset), mult, shift, n, n - 1, note="model-like"))
    for n_in, n_out in ((250, 12), (64, 10), (17, 7)):
        p = FCParams(
            batches=1,
            in_features=n_in,
            out_features=n_out,
            in_offset=int(rng.integers(-127, 129)),
            out_offset=int(rng.integers(-128, 128)),
            per_channel=1,
        )
        x = rng.integers(-128, 128, (1, n_in), dtype=np.int8)
        w_, bias, mult, shift = weighted(rng, n_out, (n_out, n_in), n_in, "fast")
        out.append(
            Case("fc", p, x, fully_connected_s8(p, x, w_, bias, mult, shift), w_, bias, mult, shift, note="model-like")
        )
    return out


def make_cases(seed: int = 2024) -> list[Case]:
    rng = np.random.default_rng(seed)
    cases = realistic_cases(rng)
    counts = {"conv1x1": 45, "conv": 45, "dw": 35, "dw_inplace": 45}
    for kind, n in counts.items():
        cases += [conv_case(rng, kind) for _ in range(n)]
    cases += [fc_case(rng) for _ in range(40)]
    for kind, n in (("max_pool", 15), ("avg_pool", 15), ("mean", 10)):
        cases += [pool_case(rng, kind) for _ in range(n)]
    cases += [add_case(rng) for _ in range(20)]
    for kind, n in (("conv_wide", 24), ("fc_wide", 16), ("conv_mve", 40), ("fc_mve", 20)):
        cases += [prepacked_case(rng, kind) for _ in range(n)]
    cases += [dw_mve_case(rng, "dw_mve") for _ in range(20)] + [dw_mve_case(rng, "dw_inplace_mve") for _ in range(30)]
    cases += [dw_mve_case(rng, kind, by_channel=True) for kind in ("dw_mve", "dw_inplace_mve") for _ in range(8)]
    cases += [dw_mve_case(rng, kind, column=True) for kind in ("dw_mve", "dw_inplace_mve") for _ in range(6)]
    cases += [dw_mve_case(rng, kind, shaped=shaped) for kind, shaped in zip(("dw_inplace_mve", "dw_mve") * 3,
                                                                            by_channel_shapes())]
    return cases


def by_channel_shapes() -> list[ConvParams]:
    """Depthwise layers the channel-plane loop runs in each of its geometries:
    MobileNet's stride-2 3 x 3 over an odd plane (lines of outputs), stride 2
    both ways with padding, 16 taps (4 x 4) flat, windows at the largest byte
    offset a gather takes (2 * 126 + 2 + 1), mixed strides with dilation, and a
    map taller than wide (the planes column-major)."""
    shapes = []
    for (h, w, c, (kh, kw), (sh, sw), (dh, dw), (pt, pb, pl, pr)) in (
            (25, 25, 8, (3, 3), (2, 2), (1, 1), (0, 1, 0, 1)),
            (12, 11, 12, (3, 3), (2, 2), (1, 1), (1, 1, 1, 1)),
            (6, 40, 5, (4, 4), (1, 1), (1, 1), (1, 2, 1, 2)),
            (3, 124, 4, (3, 3), (1, 1), (1, 1), (1, 1, 1, 1)),
            (9, 10, 8, (2, 5), (1, 2), (2, 1), (1, 1, 2, 2)),
            (40, 3, 4, (3, 3), (1, 1), (1, 1), (1, 1, 1, 1))):
        p = ConvParams(in_h=h, in_w=w, in_c=c, out_h=conv_out(h, kh, sh, dh, pt + pb),
                       out_w=conv_out(w, kw, sw, dw, pl + pr), out_c=c, k_h=kh, k_w=kw, stride_h=sh, stride_w=sw,
                       dil_h=dh, dil_w=dw, pad_t=pt, pad_l=pl)
        assert dw_mve_by_channel(p), p
        shapes.append(p)
    return shapes


# ----------------------------------------------------------------------------
# the C program
# ----------------------------------------------------------------------------


def _c_array(ctype: str, name: str, a: np.ndarray | None) -> tuple[str, str]:
    """(definition, expression) of a constant array; (\"\", \"0\") for None."""
    if a is None:
        return "", "0"
    flat = np.asarray(a).reshape(-1)
    vals = [str(int(v)) if int(v) != -(2**31) else "(-2147483647 - 1)" for v in flat] or ["0"]
    lines = [", ".join(vals[i : i + 32]) for i in range(0, len(vals), 32)]
    return f"static const {ctype} {name}[{len(vals)}] = {{\n    " + ",\n    ".join(lines) + "\n};\n", name


def c_program(cases: list[Case]) -> str:
    defs = []
    rows = []
    max_out = max(max(c.want.size, c.x.size if c.kind in IN_PLACE else 0) for c in cases)
    max_scratch = max([c.scratch for c in cases] + [1])
    for i, c in enumerate(cases):
        parts = {}
        wide = c.kind.endswith("_wide")
        for key, ctype, arr in (
            ("x", "int8_t", c.x),
            ("w", "int32_t" if wide else "int8_t", c.w),
            ("b", "int32_t", c.bias),
            ("m", "int32_t", c.mult),
            ("s", "int32_t", c.shift),
            ("y", "int8_t", c.want),
        ):
            d, expr = _c_array(ctype, f"c{i}_{key}", arr)
            defs.append(d)
            parts[key] = f"(const int8_t *)(const void *){expr}" if key == "w" and wide and arr is not None else expr
        defs.append(f"static const {c.params.c_type} c{i}_p = {c.params.c_initializer()};\n")
        kind = list(KINDS).index(c.kind)
        rows.append(
            f"    {{{kind}, &c{i}_p, {parts['x']}, {parts['w']}, {parts['b']}, {parts['m']}, {parts['s']}, "
            f"{parts['y']}, {c.want.size}, {c.x.size}, {c.scratch}, {c.short}}},"
        )
    switch = "\n".join(f"    case {k}: {call}; break;" for k, call in enumerate(KINDS.values()))
    size_switch = "\n".join(f"    case {list(KINDS).index(kind)}: return {call};" for kind, call in SCRATCH_BYTES.items())
    names = ", ".join(f'"{k}"' for k in KINDS)
    in_place_test = " || ".join(f"c->kind == {list(KINDS).index(k)}" for k in IN_PLACE)
    return f"""/* Generated by tests/test_kernels_qemu.py: {len(cases)} kernel cases. */
#include <stdint.h>
#include "tinyc/kernels.h"
#include "bench.h"
#include "semihost.h"

typedef struct {{
    int kind;
    const void *p;
    const int8_t *x, *w;
    const int32_t *b, *m, *s;
    const int8_t *y;
    int32_t n_out, n_in, n_scratch, n_short;
}} tcase;

{"".join(defs)}
static const tcase cases[{len(cases)}] = {{
{chr(10).join(rows)}
}};

#define GUARD {GUARD}
#define GUARD_BYTE 0x5A
static int8_t out_region[{max_out} + 2 * GUARD];
static int8_t scratch_region[{max_scratch} + 2 * GUARD] __attribute__((aligned(16)));
static const char *const kind_names[] = {{{names}}};

static void put_int(int32_t v)
{{
    char buf[16];
    int i = 15;
    uint32_t u = v < 0 ? 0u - (uint32_t)v : (uint32_t)v;
    buf[i] = 0;
    do {{
        buf[--i] = (char)('0' + u % 10u);
        u /= 10u;
    }} while (u != 0u);
    if (v < 0) {{
        buf[--i] = '-';
    }}
    tinyc_sh_write0(buf + i);
}}

static int guards_ok(const int8_t *region, int32_t size)
{{
    int32_t i;
    for (i = 0; i < GUARD; ++i) {{
        if (region[i] != GUARD_BYTE || region[GUARD + size + i] != GUARD_BYTE) {{
            return 0;
        }}
    }}
    return 1;
}}

/* the scratch size the C kernel asks for (0: no scratch) */
static int32_t scratch_bytes(const tcase *c)
{{
    switch (c->kind) {{
{size_switch}
    default: return 0;
    }}
}}

static int run(int32_t index, const tcase *c, int32_t give)
{{
    int8_t *out = out_region + GUARD;
    int8_t *scratch = scratch_region + GUARD;
    int32_t i, size = {in_place_test} ? c->n_in : c->n_out;
    for (i = 0; i < (int32_t)sizeof out_region; ++i) {{
        out_region[i] = GUARD_BYTE;
    }}
    for (i = 0; i < (int32_t)sizeof scratch_region; ++i) {{
        scratch_region[i] = GUARD_BYTE;
    }}
    if (scratch_bytes(c) != c->n_scratch) {{
        tinyc_sh_write0("SCRATCH case ");
        put_int(index);
        tinyc_sh_write0(" (");
        tinyc_sh_write0(kind_names[c->kind]);
        tinyc_sh_write0("): the kernel asks for ");
        put_int(scratch_bytes(c));
        tinyc_sh_write0(" bytes, the descriptor plans ");
        put_int(c->n_scratch);
        tinyc_sh_write0("\\n");
        return 4;
    }}
    for (i = 0; i < give; ++i) {{
        scratch[i] = (int8_t)(i * 7 + 3);  /* garbage: the kernel writes before it reads */
    }}
    if ({in_place_test}) {{
        for (i = 0; i < c->n_in; ++i) {{
            out[i] = c->x[i];
        }}
    }} else {{
        for (i = 0; i < size; ++i) {{
            out[i] = 99;
        }}
    }}
    tinyc_bench_begin();
    switch (c->kind) {{
{switch}
    default: return 3;
    }}
    tinyc_bench_end();
    for (i = 0; i < c->n_out; ++i) {{
        if (out[i] != c->y[i]) {{
            tinyc_sh_write0("MISMATCH case ");
            put_int(index);
            tinyc_sh_write0(" (");
            tinyc_sh_write0(kind_names[c->kind]);
            tinyc_sh_write0(") byte ");
            put_int(i);
            tinyc_sh_write0(": got ");
            put_int(out[i]);
            tinyc_sh_write0(", want ");
            put_int(c->y[i]);
            tinyc_sh_write0("\\n");
            return 1;
        }}
    }}
    if (!guards_ok(out_region, size) || !guards_ok(scratch_region, give)) {{
        tinyc_sh_write0("GUARD case ");
        put_int(index);
        tinyc_sh_write0(" (");
        tinyc_sh_write0(kind_names[c->kind]);
        tinyc_sh_write0(")\\n");
        return 2;
    }}
    return 0;
}}

int main(void)
{{
    int32_t i;
    for (i = 0; i < (int32_t)(sizeof cases / sizeof cases[0]); ++i) {{
        int r = run(i, &cases[i], cases[i].n_scratch);
        if (r == 0 && cases[i].n_short >= 0) {{
            r = run(i, &cases[i], cases[i].n_short);  /* too little scratch: a slower path, the same values */
        }}
        if (r != 0) {{
            return r;
        }}
    }}
    tinyc_sh_write0("all cases match\\n");
    return 0;
}}
"""


def build(work: Path, cases: list[Case], machine: str, extra_cflags: tuple[str, ...] = ()) -> Path:
    from tinyc.sim import qemu

    core, flags = MACHINES[machine]
    m = qemu.MACHINES[machine]
    work.mkdir(parents=True, exist_ok=True)
    (work / "cases.c").write_text(c_program(cases))
    ld = work / "fw.ld"
    ld.write_text(qemu.render_linker_script(m.flash[0], m.flash[1], m.ram[0], m.ram[1], 16384))
    elf = work / "fw.elf"
    sources = [work / "cases.c", *(RUNTIME / "src" / s for s in KERNEL_SOURCES), *qemu.firmware_sources()]
    qemu.compile_firmware(
        sources, [RUNTIME / "include", qemu.FIRMWARE_DIR], elf, core, list(flags), ld, list(extra_cflags)
    )
    return elf


def run_cases(work: Path, cases: list[Case], machine: str, count: bool = False):
    from tinyc.sim import qemu

    elf = build(work, cases, machine)
    return qemu.run_qemu(elf, machine, work, timeout=120, count=count)


# ----------------------------------------------------------------------------
# tests
# ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cases() -> list[Case]:
    return make_cases()


# Different random cases on each machine (the M55's 512 KB ITCM holds one set,
# the MPS2 boards' 4 MB two): more shapes for the same time.
SEEDS = {"mps2-an386": (2024, 7), "mps2-an500": (2025, 9), "mps3-an547": (13,), "mps2-an385": (2026, 11)}


@needs_tools
@pytest.mark.parametrize("machine", list(MACHINES))
def test_kernels_bit_exact_on_qemu(tmp_path, machine):
    cases = [c for seed in SEEDS[machine] for c in make_cases(seed)]
    if machine == "mps3-an547":  # half the random DSP cases left out (the M4 / M7 run them): the rest fill its ITCM
        cases = [c for i, c in enumerate(cases) if c.note == "model-like" or c.kind.endswith("_mve") or i % 2 == 0]
    elif machine in PORTABLE:
        cases = without_dsp(cases)
    else:  # the Helium kernels run on the Cortex-M55 only (their plain loop: test_kernels_conv.py)
        cases = [c for c in cases if not c.kind.endswith("_mve")]
    result = run_cases(tmp_path, cases, machine)
    assert result.fault is None, result.fault
    assert result.exit_code == 0, result.stderr
    assert "all cases match" in result.stderr


def test_cases_cover_the_fast_paths(cases):
    kinds = {c.kind for c in cases}
    assert kinds == set(KINDS)
    styles = {(c.kind, c.note) for c in cases}
    for kind in ("conv", "conv1x1", "dw", "dw_inplace", "fc"):
        for style in ("fast", "shift0", "clamp", "generic"):
            assert (kind, style) in styles, (kind, style)
    conv1x1 = [c.params for c in cases if c.kind == "conv1x1"]
    assert any(p.in_c % 4 for p in conv1x1) and any(p.in_c > 128 for p in conv1x1)
    assert any(p.stride_w > 1 for p in conv1x1) and any(p.out_h * p.out_w % 2 for p in conv1x1)


@pytest.mark.skipif(shutil.which("arm-none-eabi-gcc") is None, reason="needs arm-none-eabi-gcc")
@pytest.mark.parametrize("core", list(BUILD_CORES))
@pytest.mark.parametrize("opt", ["-O0", "-O2", "-Os"])
def test_runtime_builds_clean_for_cortex_m(tmp_path, core, opt):
    """Every runtime source, -Wall -Wextra -Werror, for each core and optimization
    level (the assembly loops must build at -O0 too); no undefined symbol on the
    DSP cores, only libgcc's arithmetic helpers on the cores without an FPU
    (Cortex-M0+, M3)."""
    objects = []
    for src in sorted((RUNTIME / "src").glob("*.c")):
        obj = tmp_path / (src.stem + ".o")
        cmd = [
            "arm-none-eabi-gcc",
            f"-mcpu={core}",
            "-mthumb",
            *BUILD_CORES[core],
            "-std=c99",
            opt,
            "-fstack-usage",
            "-ffreestanding",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-I",
            str(RUNTIME / "include"),
            "-c",
            str(src),
            "-o",
            str(obj),
        ]
        res = subprocess.run(cmd, capture_output=True, text=True)
        assert res.returncode == 0, res.stderr
        objects.append(str(obj))
    res = subprocess.run(["arm-none-eabi-nm", "-u", *objects], capture_output=True, text=True, check=True)
    undefined = {line.split()[-1] for line in res.stdout.splitlines() if line.strip() and not line.endswith(":")}
    res = subprocess.run(["arm-none-eabi-nm", "--defined-only", *objects], capture_output=True, text=True, check=True)
    undefined -= {line.split()[-1] for line in res.stdout.splitlines() if len(line.split()) == 3}  # between sources
    if "-mfloat-abi=soft" in BUILD_CORES[core]:  # no FPU (the training kernels' float): libgcc's helpers
        assert all(name.startswith("__aeabi_") for name in undefined), undefined
    else:
        assert undefined == set(), undefined
    if opt == "-O2":
        # the kernels keep no buffers on the stack (their scratch is planned in the
        # arena): no frame above 512 bytes (the DSP convolutions kept 0.6-1.4 KB)
        from tinyc.sim import qemu

        frames = qemu.stack_usage(tmp_path.glob("*.su"))
        big = {f: v for f, v in frames.items() if v > 512}
        assert not big, big


# ----------------------------------------------------------------------------
# the portable requantization (fixedpoint.h tinyc_rqp), on the host and the M3
# ----------------------------------------------------------------------------

RQP_PROGRAM = r"""
#include <stdint.h>
#include "tinyc/fixedpoint.h"

static uint32_t state = 2463534242u;

static uint32_t next(void)
{
    state ^= state << 13;
    state ^= state >> 17;
    state ^= state << 5;
    return state;
}

static int32_t failures, checks;

/* tinyc_rqp against tinyc_mbqm plus the offset in int64 (the numpy spec's sum) */
static void check(int32_t acc, int32_t mult, int32_t shift, int32_t off)
{
    const int64_t want = (int64_t)tinyc_mbqm(acc, mult, shift) + off;
    ++checks;
    if ((int64_t)tinyc_rqp(acc, mult, shift, off) != want) {
        ++failures;
    }
}

static void channel(int32_t mult, int32_t shift)
{
    static const int32_t offs[] = {0, -128, 127, 1 << 29, -(1 << 29)};
    static const int32_t fixed[] = {INT32_MIN, INT32_MIN + 1, -65536, -1, 0, 1, 65535, INT32_MAX - 1, INT32_MAX};
    const int32_t right = -shift;
    int32_t o, i;
    for (o = 0; o < 5; ++o) {
        for (i = 0; i < 9; ++i) {
            check(fixed[i], mult, shift, offs[o]);
        }
        for (i = 0; i < 24; ++i) {
            const int32_t r = (int32_t)next();
            check(r, mult, shift, offs[o]);                 /* anywhere */
            check(r >> (int32_t)(next() % 31u), mult, shift, offs[o]);   /* smaller sums */
        }
        if (mult == (1 << 30) && right < 30) {
            /* SRDHM(2t, 2^30) = t: the rounding's ties (x = k * 2^right +- 2^(right - 1)) and their neighbours */
            for (i = 0; i < 8; ++i) {
                const int32_t k = (int32_t)(next() % 2001u) - 1000;
                const int64_t tie = (int64_t)k * ((int64_t)1 << right) + (i & 1 ? 1 : -1) * ((int64_t)1 << (right - 1));
                int32_t d;
                for (d = -1; d <= 1; ++d) {
                    const int64_t acc = 2 * tie + d;
                    if (acc >= INT32_MIN && acc <= INT32_MAX) {
                        check((int32_t)acc, mult, shift, offs[o]);
                    }
                }
            }
        }
    }
}

/* 0 when every check passed and tinyc_rqp_ok takes exactly the channels it should */
int rqp_main(void)
{
    static const int32_t mults[] = {1 << 30, (1 << 30) + 1, INT32_MAX, INT32_MAX - 1, 0x5A5A5A5A};
    int32_t m, s, i;
    for (s = -31; s <= -1; ++s) {
        for (m = 0; m < 5; ++m) {
            channel(mults[m], s);
        }
        for (i = 0; i < 12; ++i) {
            channel((int32_t)((1u << 30) | (next() >> 2)), s);
        }
    }
    channel(0, 0);   /* a zero scale */
    {
        const int32_t ok_m[] = {1 << 30, 0, INT32_MAX}, ok_s[] = {-31, 0, -1};
        const int32_t no_m[] = {(1 << 30) - 1, 1 << 30, 0, 1 << 30, INT32_MIN, 1 << 30};
        const int32_t no_s[] = {-5, 0, -3, -32, -1, 1};
        if (!tinyc_rqp_ok(ok_m, ok_s, 3, 1 << 29) || tinyc_rqp_ok(ok_m, ok_s, 3, (1 << 29) + 1)) {
            return 2;
        }
        for (i = 0; i < 6; ++i) {
            if (tinyc_rqp_ok(no_m + i, no_s + i, 1, 0)) {
                return 3;
            }
        }
    }
    return failures == 0 && checks > 100000 ? 0 : 1;
}
"""


def test_portable_requantization_is_exact_on_the_host(tmp_path):
    """tinyc_rqp equals tinyc_mbqm plus the offset (in int64) for extreme and
    random sums, every right shift, the rounding's ties, extreme multipliers and
    offsets, and a zero scale; tinyc_rqp_ok refuses the channels it cannot take."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no host C compiler")
    (tmp_path / "rqp.c").write_text(RQP_PROGRAM + "int main(void) { return rqp_main(); }\n")
    exe = tmp_path / "rqp"
    subprocess.run([cc, "-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-I", str(RUNTIME / "include"),
                    str(tmp_path / "rqp.c"), "-o", str(exe)], check=True)
    assert subprocess.run([str(exe)]).returncode == 0


@needs_tools
def test_portable_requantization_is_exact_on_the_cortex_m3(tmp_path):
    """The same checks built for the Cortex-M3 (its SMLAL and SSAT forms)."""
    from tinyc.sim import qemu

    machine = "mps2-an385"
    core, flags = MACHINES[machine]
    m = qemu.MACHINES[machine]
    (tmp_path / "rqp.c").write_text(RQP_PROGRAM + "int main(void) { return rqp_main(); }\n")
    ld = tmp_path / "fw.ld"
    ld.write_text(qemu.render_linker_script(m.flash[0], m.flash[1], m.ram[0], m.ram[1], 16384))
    elf = tmp_path / "fw.elf"
    qemu.compile_firmware([tmp_path / "rqp.c", *qemu.firmware_sources()], [RUNTIME / "include", qemu.FIRMWARE_DIR],
                          elf, core, list(flags), ld)
    result = qemu.run_qemu(elf, machine, tmp_path, timeout=300, count=False)
    assert result.fault is None, result.fault
    assert result.exit_code == 0, result.stderr
