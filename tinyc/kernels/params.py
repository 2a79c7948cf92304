"""Parameter records of the C kernels, field for field as in runtime_c's kernels.h.

The compiler fills these when it lowers a node to int8; the numpy reference
kernels (this package) read them, the code generator prints them as C struct
initializers, and the unit tests hand them to the C kernels through ctypes.
Every field is an int32 or a fixed-length int32 array, as in the C structs.
"""

from __future__ import annotations

import ctypes
from dataclasses import astuple, dataclass, field, fields


def _four() -> tuple[int, int, int, int]:
    return (0, 0, 0, 0)


class KernelParams:
    """Base: the C struct this record mirrors is ``c_type``."""

    c_type: str = ""

    def c_initializer(self) -> str:
        """``{1, 2, {3, 4, 5, 6}, ...}``: the C99 aggregate initializer of the struct."""
        parts = []
        for value in astuple(self):
            if isinstance(value, tuple):
                parts.append("{" + ", ".join(_c_int(v) for v in value) + "}")
            else:
                parts.append(_c_int(value))
        return "{" + ", ".join(parts) + "}"

    def to_ctypes(self):
        """A ctypes.Structure instance with the same layout as the C struct."""
        cls = _ctypes_struct(type(self))
        args = [(ctypes.c_int32 * len(v))(*v) if isinstance(v, tuple) else int(v) for v in astuple(self)]
        return cls(*args)


def _c_int(v) -> str:
    v = int(v)
    if v == -(2**31):  # -2147483648 is a unary minus on an out-of-range literal in C
        return "(-2147483647 - 1)"
    return str(v)


_CTYPES_CACHE: dict[type, type] = {}


def _ctypes_struct(cls: type):
    if cls not in _CTYPES_CACHE:
        layout = []
        for f in fields(cls):
            n = f.type.count("int") if str(f.type).startswith("tuple[") else 0  # int32 arrays: their length
            layout.append((f.name, ctypes.c_int32 * n if n else ctypes.c_int32))
        _CTYPES_CACHE[cls] = type(cls.__name__ + "_C", (ctypes.Structure,), {"_fields_": layout})
    return _CTYPES_CACHE[cls]


@dataclass
class ConvParams(KernelParams):
    c_type = "tinyc_conv_params"
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
