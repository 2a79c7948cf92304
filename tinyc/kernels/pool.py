"""Pooling and mean int8 kernels in numpy: the executable spec of pool.c.

Mirrors TFLite Micro's reference int8 kernels: ``reference_integer_ops::MaxPool``,
``reference_integer_ops::AveragePool`` and ``reference_ops::QuantizedMeanOrSum``
(mean case).  Pools share scale and zero point between input and output, so
they work on the raw int8 values.  Inputs may have any shape with the right
number of elements; outputs are C-contiguous int8 arrays.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..quant.fixedpoint import multiply_by_quantized_multiplier, wrap_int32
from .params import MeanParams, PoolParams

__all__ = ["max_pool_s8", "avg_pool_s8", "mean_s8"]


def _input(p: PoolParams, x) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype.kind not in "iu":
        raise TypeError(f"expected integers, got dtype {x.dtype}")
    if x.size != p.in_h * p.in_w * p.channels:
        raise ValueError(f"{x.size} elements do not fit input {p.in_h}x{p.in_w}x{p.channels}")
    if min(p.k_h, p.k_w, p.stride_h, p.stride_w, p.out_h, p.out_w, p.dil_h, p.dil_w) < 1 or p.pad_t < 0 or p.pad_l < 0:
        raise ValueError("pool sizes and strides must be positive and padding >= 0")
    return x.reshape(p.in_h, p.in_w, p.channels).astype(np.int32)


def _windows(p: PoolParams, x: np.ndarray, pad_value: int) -> np.ndarray:
    """(out_h, out_w, channels, k_h, k_w) view of ``x`` padded with ``pad_value``,
    window taps ``dil_h`` / ``dil_w`` apart.

    Top / left padding is ``p.pad_t`` / ``p.pad_l``; bottom / right padding is
    whatever the last window needs.
    """
    span_h, span_w = (p.k_h - 1) * p.dil_h + 1, (p.k_w - 1) * p.dil_w + 1
    pad_b = max(0, (p.out_h - 1) * p.stride_h + span_h - p.pad_t - p.in_h)
    pad_r = max(0, (p.out_w - 1) * p.stride_w + span_w - p.pad_l - p.in_w)
    xp = np.pad(x, ((p.pad_t, pad_b), (p.pad_l, pad_r), (0, 0)), constant_values=pad_value)
    win = sliding_window_view(xp, (span_h, span_w), axis=(0, 1))[..., :: p.dil_h, :: p.dil_w]
    return win[:: p.stride_h, :: p.stride_w][: p.out_h, : p.out_w]


def _valid_taps(size: int, pad: int, k: int, stride: int, out: int, dil: int = 1) -> np.ndarray:
    """Per output position, the number of window taps inside [0, size)."""
    start = np.arange(out)[:, None] * stride - pad + np.arange(k)[None, :] * dil
    return ((start >= 0) & (start < size)).sum(axis=1)


def max_pool_s8(p: PoolParams, x) -> np.ndarray:
    """int8 MaxPool2D: max over the in-bounds taps, clamped to [act_min, act_max].

    As in TFLM the running max starts at -128, so padding with -128 changes
    nothing (and a window wholly in the padding gives clamp(-128)).
    Returns int8 (1, out_h, out_w, channels).
    """
    win = _windows(p, _input(p, x), -128)
    out = np.clip(win.max(axis=(-2, -1)), p.act_min, p.act_max).astype(np.int8)
    return np.ascontiguousarray(out).reshape(1, p.out_h, p.out_w, p.channels)


def avg_pool_s8(p: PoolParams, x) -> np.ndarray:
    """int8 AveragePool2D (TFLM ``reference_integer_ops::AveragePool``).

    ``acc`` = sum of the raw values over the in-bounds taps, ``count`` = their
    number; with ``p.count_include_pad`` every tap of the window counts and
    each out-of-bounds tap adds ``p.pad_value`` (a folded zero-point Pad).
    ``acc > 0 ? (acc + count/2) / count : (acc - count/2) / count`` in C
    truncating division (halves round away from zero), clamped.  A window
    with no tap counted gives clamp(0) (TFLM would refuse to run).
    Returns int8 (1, out_h, out_w, channels).
    """
    xi = _input(p, x)
    if p.count_include_pad:
        acc = _windows(p, xi, p.pad_value).sum(axis=(-2, -1), dtype=np.int64)
        count = np.full((p.out_h, p.out_w, 1), p.k_h * p.k_w, dtype=np.int64)
    else:
        acc = _windows(p, xi, 0).sum(axis=(-2, -1), dtype=np.int64)
        rows = _valid_taps(p.in_h, p.pad_t, p.k_h, p.stride_h, p.out_h, p.dil_h)
        cols = _valid_taps(p.in_w, p.pad_l, p.k_w, p.stride_w, p.out_w, p.dil_w)
        count = (rows[:, None] * cols[None, :])[:, :, None].astype(np.int64)
    count = np.maximum(count, 1)  # acc is 0 there: the result is 0
    half = count // 2
    num = np.where(acc > 0, acc + half, acc - half)
    q = np.abs(num) // count
    avg = np.where(num < 0, -q, q)  # C division truncates toward zero
    out = np.clip(avg, p.act_min, p.act_max).astype(np.int8)
    return np.ascontiguousarray(out).reshape(1, p.out_h, p.out_w, p.channels)


def mean_s8(p: MeanParams, x) -> np.ndarray:
    """int8 MEAN (TFLM ``QuantizedMeanOrSum``): input viewed [outer][reduce][inner].

    ``sum`` = int32 sum of the raw values over ``reduce``;
    ``out = clamp(MBQM(sum - in_zero_point * reduce, mult, shift) + out_offset, -128, 127)``,
    ``mult`` / ``shift`` already folded with 1 / reduce (``fixedpoint.mean_int8_multiplier``).
    Returns int8 (outer, inner).
    """
    x = np.asarray(x)
    if x.dtype.kind not in "iu":
        raise TypeError(f"expected integers, got dtype {x.dtype}")
    if min(p.outer, p.reduce, p.inner) < 1 or x.size != p.outer * p.reduce * p.inner:
        raise ValueError(f"{x.size} elements do not fit [{p.outer}][{p.reduce}][{p.inner}]")
    total = wrap_int32(x.reshape(p.outer, p.reduce, p.inner).sum(axis=1, dtype=np.int64))
    shifted = wrap_int32(total - p.in_zero_point * p.reduce)
    scaled = multiply_by_quantized_multiplier(shifted, p.mult, p.shift).astype(np.int64)
    return np.ascontiguousarray(np.clip(scaled + p.out_offset, -128, 127).astype(np.int8))
