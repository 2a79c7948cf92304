"""Numpy reference of the int8 data-movement kernels (C: runtime_c/src/data.c).

No arithmetic: inputs and outputs share scale and zero point.  Inputs are
read flat (C order), as the C kernels read them.
"""

from __future__ import annotations

import numpy as np

from tinyc.kernels.elementwise import broadcast_view
from tinyc.kernels.params import PadParams, ResizeBilinearParams, ResizeParams, StridedCopyParams
from tinyc.quant import fixedpoint as fx

__all__ = ["concat_s8", "pad_s8", "resize_nearest_s8", "resize_bilinear_s8", "copy_s8", "strided_copy_s8"]


def _flat8(x) -> np.ndarray:
    a = np.ascontiguousarray(x)
    if a.dtype != np.int8:
        raise TypeError(f"expected int8 data, got {a.dtype}")
    return a.reshape(-1)


def concat_s8(outer: int, xs, inner) -> np.ndarray:
    """Input k viewed as ``[outer][inner[k]]``; returns the ``[outer][sum(inner)]`` concatenation."""
    if len(xs) != len(inner):
        raise ValueError("one inner size per input")
    parts = []
    for x, n in zip(xs, inner):
        f = _flat8(x)
        if f.size != outer * n:
            raise ValueError(f"concat input of {f.size} elements is not [{outer}][{n}]")
        parts.append(f.reshape(outer, n))
    return np.ascontiguousarray(np.concatenate(parts, axis=1))


def pad_s8(p: PadParams, x: np.ndarray) -> np.ndarray:
    """Constant pad of a 4-D ``in_shape`` tensor; returns shape ``in + before + after`` per dimension.

    Output element o reads input ``o - pad_before`` where that is inside the
    input, else ``pad_value``; so a negative pad crops, as in the C kernel.
    """
    src = _flat8(x).reshape(p.in_shape)
    out_shape = tuple(int(n + b + a) for n, b, a in zip(p.in_shape, p.pad_before, p.pad_after))
    if min(out_shape) < 0:
        raise ValueError(f"negative padded shape {out_shape}")
    out = np.full(out_shape, p.pad_value, dtype=np.int8)
    dst_sl, src_sl = [], []
    for n, b, o in zip(p.in_shape, p.pad_before, out_shape):
        lo, hi = max(b, 0), min(o, b + n)  # output range that maps inside the input
        hi = max(hi, lo)
        dst_sl.append(slice(lo, hi))
        src_sl.append(slice(lo - b, hi - b))
    out[tuple(dst_sl)] = src[tuple(src_sl)]
    return out


def resize_nearest_s8(p: ResizeParams, x: np.ndarray) -> np.ndarray:
    """Nearest-neighbour resize of an ``[in_h][in_w][channels]`` tensor to ``[out_h][out_w][channels]``.

    Source row ``min(y * in_h // out_h, in_h - 1)``, in exact integers (TFLite
    computes ``floor(y * ((float)in_h / out_h))`` in float32; the two agree for
    integer scale factors up to 40 but not for every size pair, e.g. 2 -> 82).
    """
    src = _flat8(x).reshape(p.in_h, p.in_w, p.channels)
    ys = np.minimum(np.arange(p.out_h, dtype=np.int64) * p.in_h // p.out_h, p.in_h - 1)
    xs = np.minimum(np.arange(p.out_w, dtype=np.int64) * p.in_w // p.out_w, p.in_w - 1)
    return np.ascontiguousarray(src[ys[:, None], xs[None, :], :])


def resize_bilinear_s8(p: ResizeBilinearParams, x: np.ndarray) -> np.ndarray:
    """TFLite's integer bilinear resize (``ResizeBilinearInteger``) of an
    ``[in_h][in_w][channels]`` tensor; input and output share scale and zero point."""
    src = _flat8(x).reshape(1, p.in_h, p.in_w, p.channels)
    out = fx.resize_bilinear_int8(src, p.out_h, p.out_w, p.scale_h_10, p.scale_w_10, bool(p.half_pixel))
    return np.ascontiguousarray(out[0])


def copy_s8(x: np.ndarray) -> np.ndarray:
    """A byte copy of ``x`` (same shape)."""
    return np.array(x, dtype=np.int8, order="C", copy=True)


def strided_copy_s8(p: StridedCopyParams, x: np.ndarray) -> np.ndarray:
    """Output element ``[i0]..[i5]`` of ``out_shape`` reads input element
    ``in_start + sum(i_d * in_strides[d])`` of the flat input: a Transpose, Slice,
    Expand (stride 0) or Gather of evenly spaced indices, as numpy views express them."""
    return np.ascontiguousarray(broadcast_view(_flat8(x), p.out_shape, p.in_strides, p.in_start))


def fill_s8(size: int, value: int) -> np.ndarray:
    """``size`` bytes of ``(int8_t)value`` (the low byte, as C converts): the debug-build poison fill."""
    return np.full(int(size), (int(value) + 128) % 256 - 128, dtype=np.int8)
