"""Numpy reference of the broadcasting int8 Add / Sub / Mul kernels (C: runtime_c/src/elementwise.c).

These are the executable specification of ``tinyc_add_s8`` and ``tinyc_mul_s8``:
they read the same parameter records (:class:`~tinyc.kernels.params.AddParams`,
:class:`~tinyc.kernels.params.MulParams`) and delegate the arithmetic to
:mod:`tinyc.quant.fixedpoint`, which was checked bit-exact against TFLM.
"""

from __future__ import annotations

import numpy as np

from tinyc.kernels.params import AddParams, MinMaxParams, MulParams
from tinyc.quant import fixedpoint as fx

__all__ = ["broadcast_view", "add_table", "add_s8", "mul_s8", "minmax_s8"]


def broadcast_view(x: np.ndarray, out_shape, strides, start: int = 0) -> np.ndarray:
    """Gather ``x`` (any shape, read flat) into ``out_shape``: element (i0, i1, ...) is
    ``flat[start + sum(i_d * strides[d])]``.

    This is exactly how the C kernels address their inputs; a stride of 0
    broadcasts along that dimension, a negative one walks it backwards.
    Raises if an index falls outside ``x``.
    """
    flat = np.ascontiguousarray(x).reshape(-1)
    shape = tuple(int(d) for d in out_shape)
    if len(shape) != len(strides):
        raise ValueError("out_shape and strides must have one entry per dimension")
    index = np.full(shape, int(start), dtype=np.int64)
    for d in range(len(shape)):
        axis = [1] * len(shape)
        axis[d] = shape[d]
        index = index + np.arange(shape[d], dtype=np.int64).reshape(axis) * int(strides[d])
    if index.size and (index.min() < 0 or index.max() >= flat.size):
        raise ValueError(f"strides {tuple(strides)} address outside an input of {flat.size} elements")
    return flat[index]


def add_table(p: AddParams) -> np.ndarray:
    """The 512 int32 values ``tinyc_add_s8`` may take instead of computing them:
    each input's rescaled value ``MBQMSmallerThanOneExp((x + offset) << left_shift)``
    for x = -128..127, input 1's then input 2's (what TFLM's AddFunc computes per
    element; it depends on one int8 value, so tinyc tabulates it at compile time).
    For a Sub input 2's are negated (wrapping, as the kernel's int32 difference),
    so the kernel adds the two entries either way: one loop for both ops."""
    x = np.arange(-128, 128, dtype=np.int64)
    rows = []
    for offset, mult, shift in ((p.in1_offset, p.in1_mult, p.in1_shift), (p.in2_offset, p.in2_mult, p.in2_shift)):
        v = fx.wrap_int32((x + offset) * (1 << p.left_shift))
        rows.append(fx._rdbp(fx._srdhm(v, mult), -shift))
    if p.subtract:
        rows[1] = fx.wrap_int32(-np.asarray(rows[1], np.int64))
    return np.concatenate(rows).astype(np.int32)


def add_s8(p: AddParams, x1: np.ndarray, x2: np.ndarray, table: np.ndarray | None = None) -> np.ndarray:
    """TFLM int8 ADD (``subtract == 0``) or SUB (``subtract == 1``) with 4-D stride broadcasting.

    Returns an int8 array of shape ``p.out_shape``.  ``table`` (``add_table(p)``,
    or None) changes nothing in the result: the C kernel reads it instead of
    rescaling each input value.
    """
    if table is not None and not np.array_equal(table, add_table(p)):
        raise ValueError("add_s8: the table is not add_table(params)")
    a = broadcast_view(x1, p.out_shape, p.in1_strides)
    b = broadcast_view(x2, p.out_shape, p.in2_strides)
    ap = fx.ArithmeticParams(p.left_shift, p.in1_mult, p.in1_shift, p.in2_mult, p.in2_shift, p.out_mult, p.out_shift)
    sign = -1 if p.subtract else 1
    # fixedpoint takes zero points; the record stores offsets = -zero point.
    out = fx._add_sub(a, -p.in1_offset, b, -p.in2_offset, ap, p.out_offset, p.act_min, p.act_max, sign)
    return np.ascontiguousarray(out, dtype=np.int8)


def mul_s8(p: MulParams, x1: np.ndarray, x2: np.ndarray) -> np.ndarray:
    """TFLM int8 MUL with 4-D stride broadcasting; int8 array of shape ``p.out_shape``.

    ``clamp(MultiplyByQuantizedMultiplier((x1 + in1_offset) * (x2 + in2_offset)) + out_offset)``.
    """
    a = fx._i64(broadcast_view(x1, p.out_shape, p.in1_strides))
    b = fx._i64(broadcast_view(x2, p.out_shape, p.in2_strides))
    prod = (a + p.in1_offset) * (b + p.in2_offset)
    out = fx._mbqm(prod, p.out_mult, p.out_shift) + p.out_offset
    return np.ascontiguousarray(np.clip(out, p.act_min, p.act_max).astype(np.int8))


def minmax_s8(p: MinMaxParams, x1: np.ndarray, x2: np.ndarray) -> np.ndarray:
    """TFLM int8 MAXIMUM (``maximum == 1``) / MINIMUM (0) with 4-D stride broadcasting:
    the larger / smaller raw int8 value (inputs and output share scale and zero point)."""
    a = broadcast_view(x1, p.out_shape, p.in1_strides)
    b = broadcast_view(x2, p.out_shape, p.in2_strides)
    return np.ascontiguousarray(np.maximum(a, b) if p.maximum else np.minimum(a, b), dtype=np.int8)
