"""Numpy reference of the int8 activation kernels (C: runtime_c/src/activation.c).

Each function takes the parameter record of its C kernel (fields as in
kernels.h) and mirrors TFLM's int8 kernel through the helpers of
:mod:`tinyc.quant.fixedpoint` (checked bit-exact against TFLM).  The
``*_int8`` functions there compute the parameters from scales and then run the
kernel; the functions here start from the precomputed parameters, which is
what the generated C code receives.  Outputs are C-contiguous int8 arrays of
the input's shape.
"""

from __future__ import annotations

import numpy as np

from tinyc.kernels.params import (
    HardSwishParams,
    LeakyReluParams,
    LogisticParams,
    LutParams,
    RequantizeParams,
    SoftmaxParams,
)
from tinyc.quant import fixedpoint as fx

__all__ = ["requantize_s8", "clamp_s8", "softmax_s8", "logistic_s8", "tanh_s8", "hard_swish_s8", "leaky_relu_s8",
           "lut_s8"]


def _check_size(x: np.ndarray, size: int, what: str) -> None:
    if x.size != size:
        raise ValueError(f"{what}: input has {x.size} elements, parameters say {size}")


def requantize_s8(p: RequantizeParams, x: np.ndarray) -> np.ndarray:
    """TFLM int8 -> int8 QUANTIZE (``reference_ops::Requantize``) with a clamp.

    ``clamp(MultiplyByQuantizedMultiplier(x + in_offset, mult, shift) + out_offset, act_min, act_max)``.
    """
    x = fx._i64(x)
    _check_size(x, p.size, "requantize")
    out = fx._mbqm(x + p.in_offset, p.mult, p.shift) + p.out_offset
    return np.ascontiguousarray(np.clip(out, p.act_min, p.act_max).astype(np.int8))


def clamp_s8(lo: int, hi: int, x: np.ndarray) -> np.ndarray:
    """``clamp(x, lo, hi)``: a ReLU-family activation whose input and output share quantization."""
    return np.ascontiguousarray(np.clip(fx._i64(x), lo, hi).astype(np.int8))


def softmax_s8(p: SoftmaxParams, x: np.ndarray) -> np.ndarray:
    """TFLite reference int8 Softmax over the last dimension of ``x`` viewed as ``[rows][depth]``.

    The body of :func:`tinyc.quant.fixedpoint.softmax_int8`, starting from the
    precomputed ``input_multiplier``, ``input_left_shift`` and ``diff_min``.
    Output scale 1/256, zero point -128.
    """
    x = fx._i64(x)
    _check_size(x, p.rows * p.depth, "softmax")
    rows = x.reshape(p.rows, p.depth)
    diff = rows - rows.max(axis=-1, keepdims=True)
    valid = diff >= p.diff_min
    # Entries below diff_min are masked out; their (possibly wrapped) values do not matter.
    rescaled = fx._srdhm(fx.wrap_int32(diff * (1 << p.input_left_shift)), p.input_multiplier)
    exp = fx._exp_neg(rescaled, fx.SOFTMAX_SCALED_DIFF_INTEGER_BITS)
    contrib = np.where(valid, fx._rescale(exp, 0, fx.SOFTMAX_ACCUMULATION_INTEGER_BITS), 0)
    sum_of_exps = fx.wrap_int32(contrib.sum(axis=-1, keepdims=True))
    shifted_scale, num_bits_over_unit = fx._get_reciprocal(sum_of_exps, fx.SOFTMAX_ACCUMULATION_INTEGER_BITS)
    exponent = num_bits_over_unit + 31 - 8
    if np.any(exponent < 0):  # impossible: the row maximum alone contributes exp(0) = 1.0
        raise AssertionError("softmax exponent < 0")
    # exponent > 31 (a sum of exps >= 512, so every probability is below
    # 1/512) is outside gemmlowp's RoundingDivideByPOT contract: TFLite shifts an
    # int32 by >= 32 there, undefined behaviour whose result differs between x86
    # and Arm.  tinyc defines it as the exact rounding of x / 2^exponent, which
    # is 0 for the 0 <= x < 2^31 seen here (output -128).
    prod = fx._srdhm(shifted_scale, exp)
    unsat = np.where(exponent > 31, 0, fx._rdbp(prod, np.minimum(exponent, 31)))
    out = np.where(valid, np.clip(unsat + fx.INT8_MIN, fx.INT8_MIN, fx.INT8_MAX), fx.INT8_MIN)
    return np.ascontiguousarray(out.reshape(x.shape).astype(np.int8))


def logistic_s8(p: LogisticParams, x: np.ndarray) -> np.ndarray:
    """TFLM ``reference_integer_ops::Logistic`` (int8); output scale 1/256, zero point -128.

    The body of :func:`tinyc.quant.fixedpoint.logistic_int8` with precomputed parameters.
    """
    d = fx._i64(x) - p.input_zero_point
    _check_size(d, p.size, "logistic")
    return np.ascontiguousarray(fx.saturating_activation(d, p, fx._logistic, 31 - 8, fx.INT8_MIN))


def hard_swish_s8(p: HardSwishParams, x: np.ndarray) -> np.ndarray:
    """TFLite reference ``HardSwish<int8_t>`` (int16 fixed point), as run by TFLM.

    The body of :func:`tinyc.quant.fixedpoint.hard_swish_int8` with precomputed parameters.
    """
    x = fx._i64(x)
    _check_size(x, p.size, "hard_swish")
    v = fx._wrap16(x - p.input_zero_point)
    hires = fx._wrap16(v * (1 << 7))
    pre_out = fx._srdhm16(hires, p.output_multiplier_fixedpoint_int16)
    r = hires
    e = p.reluish_multiplier_exponent
    if e > 0:
        r = fx._sat_left_shift16(r, e - 1)
    r = fx._srdhm16(r, p.reluish_multiplier_fixedpoint_int16)
    if e > 0:
        r = fx._sat_left_shift16(r, 1)
    if e < 0:
        r = fx._rdbp16(r, -e)
    r = fx._wrap16((r + (1 << 15)) >> 1)
    pre_shift = fx._sdhm16(r, pre_out)
    out = fx._wrap16(fx._rdbp16(pre_shift, -p.output_multiplier_exponent) + p.output_zero_point)
    return np.ascontiguousarray(np.clip(out, fx.INT8_MIN, fx.INT8_MAX).astype(np.int8))


def tanh_s8(p: LogisticParams, x: np.ndarray) -> np.ndarray:
    """TFLM ``reference_integer_ops::Tanh`` (int8); output scale 1/128, zero point 0.

    The body of :func:`tinyc.quant.fixedpoint.tanh_int8` with precomputed parameters.
    """
    d = fx._i64(x) - p.input_zero_point
    _check_size(d, p.size, "tanh")
    return np.ascontiguousarray(fx.saturating_activation(d, p, fx._tanh, 31 - 7, 0))


def leaky_relu_s8(p: LeakyReluParams, x: np.ndarray) -> np.ndarray:
    """TFLM int8 LEAKY_RELU (``reference_ops::QuantizeLeakyRelu``): the identity
    multiplier for ``x >= zp_in``, the alpha multiplier below."""
    d = fx._i64(x) - p.in_zero_point
    _check_size(d, p.size, "leaky_relu")
    out = np.where(d >= 0, fx._mbqm(d, p.identity_mult, p.identity_shift),
                   fx._mbqm(d, p.alpha_mult, p.alpha_shift)) + p.out_zero_point
    return np.ascontiguousarray(np.clip(out, fx.INT8_MIN, fx.INT8_MAX).astype(np.int8))


def lut_s8(p: LutParams, x: np.ndarray, table: np.ndarray) -> np.ndarray:
    """``out = table[x + 128]``: any int8 -> int8 function, its 256 values computed
    at compile time (:func:`tinyc.quant.fixedpoint.lookup_table_int8`)."""
    x = fx._i64(x)
    _check_size(x, p.size, "lut")
    t = np.ascontiguousarray(table).reshape(-1)
    if t.size != 256:
        raise ValueError(f"lut: the table has {t.size} entries, not 256")
    return np.ascontiguousarray(t[x + 128].astype(np.int8))
