"""Parameter records of the C kernels, field for field as in runtime_c's kernels.h.

The compiler fills these when it lowers a node to int8; the numpy reference
kernels (this package) read them, the code generator prints them as C struct
initializers, and the unit tests hand them to the C kernels through ctypes.

C types.  A field is an int32 (or a fixed-length int32 array) unless the
record's ``c_narrow`` gives it a narrower type: every firmware stores one const
struct per distinct layer, and MCUNet-sized models have over a hundred
(convolutions, Mean, Add, Mul), so in those records the fields whose values are
small by nature take 16 or 8 bits: one axis's size, kernel sizes, strides,
dilations and paddings uint16_t / int16_t, input offsets (-zero point, up to
128) int16_t, output zero points, clamp bounds, shifts and flags int8_t, a
depthwise layer's channel multiplier uint8_t.  Multipliers, element strides and
element counts (products of dimensions) stay int32.  The C struct lists the
int32 fields first, then the 16-bit, then the 8-bit ones, each group in the
record's field order, so it packs with at most a byte of padding at its end;
``c_fields`` gives that order and ``c_initializer`` / ``to_ctypes`` follow it
(tests/test_param_structs.py checks it against kernels.h).  A value outside its
C type is never wrapped: ``c_range_problem`` names it, codegen refuses the layer
with it (codegen/c.py), and ``c_initializer`` / ``to_ctypes`` raise ValueError.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass, field, fields
from typing import ClassVar


def _four() -> tuple[int, int, int, int]:
    return (0, 0, 0, 0)


I32, I16, U16, I8, U8 = "int32_t", "int16_t", "uint16_t", "int8_t", "uint8_t"
C_RANGES = {I32: (-(2**31), 2**31 - 1), I16: (-(2**15), 2**15 - 1), U16: (0, 2**16 - 1), I8: (-128, 127),
            U8: (0, 255)}
_CTYPES_SCALAR = {I32: ctypes.c_int32, I16: ctypes.c_int16, U16: ctypes.c_uint16, I8: ctypes.c_int8,
                  U8: ctypes.c_uint8}
_WIDTH = {I32: 4, I16: 2, U16: 2, I8: 1, U8: 1}


class KernelParams:
    """Base: the C struct this record mirrors is ``c_type``."""

    c_type: ClassVar[str] = ""
    c_narrow: ClassVar[dict[str, str]] = {}  # field -> a 16- or 8-bit C type; the others are int32_t

    @classmethod
    def c_fields(cls) -> list[tuple[str, str, int]]:
        """(field, C scalar type, array length or 0) in the C struct's order."""
        out = []
        for f in fields(cls):
            n = str(f.type).count("int") if str(f.type).startswith("tuple[") else 0  # int32 arrays: their length
            out.append((f.name, cls.c_narrow.get(f.name, I32), n))
        return sorted(out, key=lambda f: -_WIDTH[f[1]])  # stable: the record's order within a width

    def c_range_problem(self) -> str | None:
        """Why a value does not fit its C field (``"in_w = 70000 is outside
        uint16_t's 0..65535"``), or None."""
        for name, ctype, n in self.c_fields():
            value = getattr(self, name)
            lo, hi = C_RANGES[ctype]
            for v in value if n else (value,):
                if not lo <= int(v) <= hi:
                    return f"{name} = {int(v)} is outside {ctype}'s {lo}..{hi}"
        return None

    def _checked(self) -> None:
        problem = self.c_range_problem()
        if problem:
            raise ValueError(f"{self.c_type}: {problem}")

    def c_initializer(self) -> str:
        """``{1, 2, {3, 4, 5, 6}, ...}``: the C99 aggregate initializer of the struct."""
        self._checked()
        parts = []
        for name, _, n in self.c_fields():
            value = getattr(self, name)
            if n:
                parts.append("{" + ", ".join(_c_int(v) for v in value) + "}")
            else:
                parts.append(_c_int(value))
        return "{" + ", ".join(parts) + "}"

    def to_ctypes(self):
        """A ctypes.Structure instance with the same layout as the C struct."""
        self._checked()
        cls = _ctypes_struct(type(self))
        args = []
        for name, ctype, n in self.c_fields():
            value = getattr(self, name)
            args.append((_CTYPES_SCALAR[ctype] * n)(*value) if n else int(value))
        return cls(*args)


def _c_int(v) -> str:
    v = int(v)
    if v == -(2**31):  # -2147483648 is a unary minus on an out-of-range literal in C
        return "(-2147483647 - 1)"
    return str(v)


_CTYPES_CACHE: dict[type, type] = {}


def _ctypes_struct(cls: type):
    if cls not in _CTYPES_CACHE:
        layout = [(name, _CTYPES_SCALAR[ctype] * n if n else _CTYPES_SCALAR[ctype]) for name, ctype, n in cls.c_fields()]
        _CTYPES_CACHE[cls] = type(cls.__name__ + "_C", (ctypes.Structure,), {"_fields_": layout})
    return _CTYPES_CACHE[cls]


# a convolution window's geometry (one axis each) and clamp
_GEOMETRY = {"in_h": U16, "in_w": U16, "out_h": U16, "out_w": U16, "k_h": U16, "k_w": U16, "stride_h": U16,
             "stride_w": U16, "dil_h": U16, "dil_w": U16, "pad_t": I16, "pad_l": I16, "act_min": I8, "act_max": I8}


@dataclass
class ConvParams(KernelParams):
    c_type = "tinyc_conv_params"
    # (a depthwise layer multiplies its channels by up to 255: 36 bytes without padding)
    c_narrow = {**_GEOMETRY, "in_c": U16, "out_c": U16, "groups": U16, "depth_multiplier": U8, "in_offset": I16,
                "out_offset": I8}
    in_h: int
    in_w: int
    in_c: int
    out_h: int
    out_w: int
    out_c: int
    k_h: int
    k_w: int
    stride_h: int = 1
    stride_w: int = 1
    dil_h: int = 1
    dil_w: int = 1
    pad_t: int = 0
    pad_l: int = 0
    groups: int = 1
    depth_multiplier: int = 1
    in_offset: int = 0
    out_offset: int = 0
    act_min: int = -128
    act_max: int = 127


@dataclass
class FCParams(KernelParams):
    c_type = "tinyc_fc_params"
    # all int32: a model has one or two, and fc.c's loops read these as they are
    batches: int
    in_features: int
    out_features: int
    in_offset: int = 0
    out_offset: int = 0
    act_min: int = -128
    act_max: int = 127
    per_channel: int = 0


@dataclass
class PoolParams(KernelParams):
    c_type = "tinyc_pool_params"
    # all int32: a model has few pools, and pool.c's loops read these as they are
    in_h: int
    in_w: int
    channels: int
    out_h: int
    out_w: int
    k_h: int
    k_w: int
    stride_h: int = 1
    stride_w: int = 1
    pad_t: int = 0
    pad_l: int = 0
    count_include_pad: int = 0
    pad_value: int = 0
    act_min: int = -128
    act_max: int = 127
    dil_h: int = 1  # window taps dil_h rows apart (ONNX MaxPool dilations; TFLite pools have none)
    dil_w: int = 1


@dataclass
class MeanParams(KernelParams):
    c_type = "tinyc_mean_params"
    c_narrow = {"in_zero_point": I8, "out_offset": I8, "shift": I8}
    outer: int
    reduce: int
    inner: int
    in_zero_point: int = 0
    out_offset: int = 0
    mult: int = 1 << 30
    shift: int = 1


@dataclass
class AddParams(KernelParams):
    c_type = "tinyc_add_params"
    c_narrow = {"in1_offset": I16, "in2_offset": I16, "out_offset": I8, "left_shift": I8, "in1_shift": I8,
                "in2_shift": I8, "out_shift": I8, "subtract": I8, "act_min": I8, "act_max": I8}
    out_shape: tuple[int, int, int, int] = field(default_factory=_four)
    in1_strides: tuple[int, int, int, int] = field(default_factory=_four)
    in2_strides: tuple[int, int, int, int] = field(default_factory=_four)
    in1_offset: int = 0
    in2_offset: int = 0
    out_offset: int = 0
    left_shift: int = 20
    in1_mult: int = 0
    in1_shift: int = 0
    in2_mult: int = 0
    in2_shift: int = 0
    out_mult: int = 0
    out_shift: int = 0
    subtract: int = 0
    act_min: int = -128
    act_max: int = 127


@dataclass
class MulParams(KernelParams):
    c_type = "tinyc_mul_params"
    c_narrow = {"in1_offset": I16, "in2_offset": I16, "out_offset": I8, "out_shift": I8, "act_min": I8,
                "act_max": I8}
    out_shape: tuple[int, int, int, int] = field(default_factory=_four)
    in1_strides: tuple[int, int, int, int] = field(default_factory=_four)
    in2_strides: tuple[int, int, int, int] = field(default_factory=_four)
    in1_offset: int = 0
    in2_offset: int = 0
    out_offset: int = 0
    out_mult: int = 0
    out_shift: int = 0
    act_min: int = -128
    act_max: int = 127


@dataclass
class RequantizeParams(KernelParams):
    c_type = "tinyc_requantize_params"
    size: int
    in_offset: int = 0
    out_offset: int = 0
    mult: int = 1 << 30
    shift: int = 1
    act_min: int = -128
    act_max: int = 127


@dataclass
class SoftmaxParams(KernelParams):
    c_type = "tinyc_softmax_params"
    rows: int
    depth: int
    input_multiplier: int
    input_left_shift: int
    diff_min: int


@dataclass
class LogisticParams(KernelParams):
    c_type = "tinyc_logistic_params"
    size: int
    input_zero_point: int
    input_range_radius: int
    input_multiplier: int
    input_left_shift: int


@dataclass
class HardSwishParams(KernelParams):
    c_type = "tinyc_hard_swish_params"
    size: int
    input_zero_point: int
    output_zero_point: int
    reluish_multiplier_fixedpoint_int16: int
    reluish_multiplier_exponent: int
    output_multiplier_fixedpoint_int16: int
    output_multiplier_exponent: int


@dataclass
class PadParams(KernelParams):
    c_type = "tinyc_pad_params"
    in_shape: tuple[int, int, int, int] = field(default_factory=_four)
    pad_before: tuple[int, int, int, int] = field(default_factory=_four)
    pad_after: tuple[int, int, int, int] = field(default_factory=_four)
    pad_value: int = 0


@dataclass
class ResizeParams(KernelParams):
    c_type = "tinyc_resize_params"
    in_h: int
    in_w: int
    channels: int
    out_h: int
    out_w: int


def _six() -> tuple[int, int, int, int, int, int]:
    return (1, 1, 1, 1, 1, 1)


@dataclass
class StridedCopyParams(KernelParams):
    c_type = "tinyc_strided_copy_params"
    out_shape: tuple[int, int, int, int, int, int] = field(default_factory=_six)
    in_strides: tuple[int, int, int, int, int, int] = field(default_factory=_six)  # elements; 0 repeats, < 0 reverses
    in_start: int = 0


@dataclass
class LutParams(KernelParams):
    c_type = "tinyc_lut_params"
    size: int


@dataclass
class LeakyReluParams(KernelParams):
    c_type = "tinyc_leaky_relu_params"
    size: int
    in_zero_point: int
    out_zero_point: int
    identity_mult: int
    identity_shift: int
    alpha_mult: int
    alpha_shift: int


@dataclass
class MinMaxParams(KernelParams):
    c_type = "tinyc_minmax_params"
    out_shape: tuple[int, int, int, int] = field(default_factory=_four)
    in1_strides: tuple[int, int, int, int] = field(default_factory=_four)
    in2_strides: tuple[int, int, int, int] = field(default_factory=_four)
    maximum: int = 1


@dataclass
class LayerNormParams(KernelParams):
    c_type = "tinyc_layer_norm_params"
    rows: int
    depth: int
    in_zero_point: int
    out_zero_point: int
    eps_hi: int  # the epsilon term, an int64 as (hi << 31) | lo, lo in [0, 2^31)
    eps_lo: int
    out_shift: int


@dataclass
class MatMulParams(KernelParams):
    c_type = "tinyc_matmul_params"
    batches: int
    rows: int      # M
    depth: int     # K
    cols: int      # N
    a_batch_stride: int  # elements between batches of A ([M][K]); 0 repeats one matrix
    b_batch_stride: int  # ... of B ([K][N])
    a_offset: int = 0
    b_offset: int = 0
    out_offset: int = 0
    out_mult: int = 0
    out_shift: int = 0
    act_min: int = -128
    act_max: int = 127


@dataclass
class ResizeBilinearParams(KernelParams):
    c_type = "tinyc_resize_bilinear_params"
    in_h: int
    in_w: int
    channels: int
    out_h: int
    out_w: int
    scale_h_10: int  # input / output size in Q10 (TFLite's height_scale_10)
    scale_w_10: int
    half_pixel: int  # 1: sample at pixel centres (half_pixel_centers)
