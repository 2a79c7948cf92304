"""Convolution and fully connected int8 kernels in numpy: the executable spec of conv.c / fc.c.

Each function computes exactly what the C kernel of the same name (with the
``tinyc_`` prefix) computes, which is what TFLite Micro's reference int8 kernels
compute (``reference_integer_ops::ConvPerChannel``, ``DepthwiseConvPerChannel``,
``FullyConnected``):

    acc = bias[o] + sum over taps and channels of (x + in_offset) * w
    out = clamp(MultiplyByQuantizedMultiplier(acc, mult[o], shift[o]) + out_offset, act_min, act_max)

Taps outside the input (padding) contribute nothing, i.e. the input zero point.
The dot products run in float64 through BLAS: every product is an integer of
magnitude <= 255 * 128 and every partial sum stays far below 2**53, so float64
is exact here and much faster than numpy's integer matmul.  The accumulator is
then wrapped to int32 as C's int32 arithmetic would (real models never wrap).

Inputs may have any shape with the right number of elements (they are
reshaped from the parameter record); outputs are C-contiguous int8 arrays.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..quant.fixedpoint import multiply_by_quantized_multiplier, wrap_int32
from .params import ConvParams, FCParams, MatMulParams

__all__ = ["conv2d_s8", "conv2d_1x1_s8", "depthwise_conv2d_s8", "fully_connected_s8", "widen", "unwiden",
           "fold_bias", "conv2d_wide_s8", "fully_connected_wide_s8", "mve_pack", "mve_unpack", "mve_bias", "conv2d_mve_s8", "mve_pack_dw", "mve_unpack_dw",
           "depthwise_conv2d_mve_s8", "depthwise_conv2d_inplace_mve_s8",
           "fully_connected_mve_s8"]

# Rows of output handled per im2col chunk are chosen so that one chunk of the
# window matrix holds about this many float64 values (~16 MB).
_CHUNK_ELEMENTS = 1 << 21


def _ints(a, shape, what: str) -> np.ndarray:
    """``a`` as an int64 array of ``shape`` (any input shape with the same size)."""
    a = np.asarray(a)
    if a.dtype.kind not in "iu":
        raise TypeError(f"{what}: expected integers, got dtype {a.dtype}")
    if a.size != int(np.prod(shape)):
        raise ValueError(f"{what}: {a.size} elements do not fit shape {tuple(shape)}")
    return a.reshape(shape).astype(np.int64)


def _requantize(
    acc: np.ndarray, bias, mult, shift, n_out: int, out_offset: int, lo: int, hi: int, per_channel: bool = True
) -> np.ndarray:
    """int64 accumulators [..., n_out] -> int8 output: bias, requantization, offset, clamp.

    ``mult`` / ``shift`` hold ``n_out`` entries (per_channel) or the first one is used for all.
    """
    if bias is not None:
        acc = acc + _ints(bias, (n_out,), "bias")
    n_mult = n_out if per_channel else 1
    mult = _ints(np.asarray(mult).reshape(-1)[:n_mult], (n_mult,), "mult")
    shift = _ints(np.asarray(shift).reshape(-1)[:n_mult], (n_mult,), "shift")
    scaled = multiply_by_quantized_multiplier(wrap_int32(acc), mult, shift).astype(np.int64)
    out = np.clip(scaled + int(out_offset), int(lo), int(hi)).astype(np.int8)
    return np.ascontiguousarray(out)


def _check_out_size(size: int, pad: int, k: int, stride: int, dil: int, out: int, what: str) -> None:
    # Windows lying wholly in the padding are allowed (they see only zero points).
    if min(k, stride, dil, out, size) < 1 or pad < 0:
        raise ValueError(f"{what}: sizes, strides and dilations must be positive and padding >= 0")


def _conv_core(p: ConvParams, x, w: np.ndarray) -> np.ndarray:
    """Grouped, dilated, padded convolution of NHWC ``x``; ``w`` int64 [out_c, k_h, k_w, in_c / groups].

    Returns the int64 accumulators without bias, shape (out_h, out_w, out_c).
    """
    _check_out_size(p.in_h, p.pad_t, p.k_h, p.stride_h, p.dil_h, p.out_h, "height")
    _check_out_size(p.in_w, p.pad_l, p.k_w, p.stride_w, p.dil_w, p.out_w, "width")
    g = p.groups
    if g < 1 or p.in_c % g or p.out_c % g:
        raise ValueError(f"{p.groups} groups do not divide {p.in_c} input / {p.out_c} output channels")
    cg, og = p.in_c // g, p.out_c // g
    # Pad the offset-added input with 0 (= the zero point) so that padded taps
    # contribute nothing; bottom / right padding is whatever the last window needs.
    xo = _ints(x, (p.in_h, p.in_w, p.in_c), "input").astype(np.float64) + p.in_offset
    span_h, span_w = (p.k_h - 1) * p.dil_h + 1, (p.k_w - 1) * p.dil_w + 1
    pad_b = max(0, (p.out_h - 1) * p.stride_h + span_h - p.pad_t - p.in_h)
    pad_r = max(0, (p.out_w - 1) * p.stride_w + span_w - p.pad_l - p.in_w)
    xp = np.pad(xo, ((p.pad_t, pad_b), (p.pad_l, pad_r), (0, 0)))
    win = sliding_window_view(xp, (span_h, span_w), axis=(0, 1))  # (H, W, C, span_h, span_w)
    win = win[:: p.stride_h, :: p.stride_w, :, :: p.dil_h, :: p.dil_w][: p.out_h, : p.out_w]
    if cg == 1:
        # Depthwise-like (one input channel per group): a multiply-accumulate per
        # tap over the whole map is much faster than g tiny matrix products.
        wd = w.astype(np.float64).reshape(g, og, p.k_h, p.k_w)
        total = np.zeros((p.out_h, p.out_w, g, og), dtype=np.float64)
        for ky in range(p.k_h):
            for kx in range(p.k_w):
                total += win[:, :, :, ky, kx, None] * wd[:, :, ky, kx]
        return total.reshape(p.out_h, p.out_w, p.out_c).astype(np.int64)
    # Weights as one [K, og] matrix per group, K ordered (channel, k_h, k_w) like the windows.
    k = cg * p.k_h * p.k_w
    wm = w.astype(np.float64).reshape(g, og, p.k_h, p.k_w, cg).transpose(0, 4, 2, 3, 1).reshape(g, k, og)
    acc = np.empty((p.out_h, p.out_w, p.out_c), dtype=np.int64)
    rows = max(1, _CHUNK_ELEMENTS // max(1, p.out_w * p.in_c * p.k_h * p.k_w))
    for r0 in range(0, p.out_h, rows):
        chunk = win[r0 : r0 + rows]
        n_pix = chunk.shape[0] * p.out_w
        cols = chunk.reshape(n_pix, g, k).transpose(1, 0, 2)  # (g, pixels, K): the im2col copy
        prod = np.matmul(cols, wm)  # (g, pixels, og), exact in float64
        acc[r0 : r0 + rows] = prod.transpose(1, 0, 2).reshape(chunk.shape[0], p.out_w, p.out_c)
    return acc


def conv2d_s8(p: ConvParams, x, w, bias, mult, shift) -> np.ndarray:
    """int8 Conv2D (TFLM ``ConvPerChannel``), with groups and dilation.

    ``x`` [in_h, in_w, in_c]; ``w`` [out_c, k_h, k_w, in_c / groups] (input
    channels of group ``g`` are ``g*cg .. g*cg+cg-1``, its outputs ``g*og ..``);
    ``bias`` int32 [out_c] or None; ``mult`` / ``shift`` int32 [out_c].
    Returns int8 (1, out_h, out_w, out_c).
    """
    wi = _ints(w, (p.out_c, p.k_h, p.k_w, p.in_c // max(1, p.groups)), "weights")
    acc = _conv_core(p, x, wi)
    out = _requantize(acc, bias, mult, shift, p.out_c, p.out_offset, p.act_min, p.act_max)
    return out.reshape(1, p.out_h, p.out_w, p.out_c)


def conv2d_1x1_s8(p: ConvParams, x, w, bias, mult, shift) -> np.ndarray:
    """Pointwise Conv2D: ``k_h = k_w = 1``, no padding, one group, any stride.

    Same arithmetic as :func:`conv2d_s8`; ``w`` [out_c, in_c] (or [out_c, 1, 1, in_c]).
    Returns int8 (1, out_h, out_w, out_c).
    """
    if p.k_h != 1 or p.k_w != 1 or p.pad_t or p.pad_l or p.groups != 1:
        raise ValueError("conv2d_1x1_s8 needs a 1x1 kernel, no padding and one group")
    _check_out_size(p.in_h, 0, 1, p.stride_h, 1, p.out_h, "height")
    _check_out_size(p.in_w, 0, 1, p.stride_w, 1, p.out_w, "width")
    xi = _ints(x, (p.in_h, p.in_w, p.in_c), "input")
    xs = xi[:: p.stride_h, :: p.stride_w][: p.out_h, : p.out_w].reshape(-1, p.in_c)
    wi = _ints(w, (p.out_c, p.in_c), "weights")
    acc = ((xs.astype(np.float64) + p.in_offset) @ wi.T.astype(np.float64)).astype(np.int64)
    out = _requantize(acc, bias, mult, shift, p.out_c, p.out_offset, p.act_min, p.act_max)
    return out.reshape(1, p.out_h, p.out_w, p.out_c)


def depthwise_conv2d_s8(p: ConvParams, x, w, bias, mult, shift) -> np.ndarray:
    """int8 depthwise Conv2D (TFLM ``DepthwiseConvPerChannel``).

    ``w`` [out_c, k_h, k_w] or [out_c, k_h, k_w, 1], ``out_c = in_c * depth_multiplier``;
    output channel ``o`` reads input channel ``o // depth_multiplier``.  ``p.groups``
    is not read.  Returns int8 (1, out_h, out_w, out_c).
    """
    if p.depth_multiplier < 1 or p.out_c != p.in_c * p.depth_multiplier:
        raise ValueError(f"out_c {p.out_c} != in_c {p.in_c} * depth_multiplier {p.depth_multiplier}")
    wi = _ints(w, (p.out_c, p.k_h, p.k_w, 1), "weights")
    # A grouped convolution with one group per input channel, depth_multiplier outputs each.
    grouped = ConvParams(**{**vars(p), "groups": p.in_c, "depth_multiplier": 1})
    acc = _conv_core(grouped, x, wi)
    out = _requantize(acc, bias, mult, shift, p.out_c, p.out_offset, p.act_min, p.act_max)
    return out.reshape(1, p.out_h, p.out_w, p.out_c)


def fully_connected_s8(p: FCParams, x, w, bias, mult, shift) -> np.ndarray:
    """int8 FullyConnected (TFLM ``FullyConnected``, int8 weights with zero point 0).

    ``x`` [batches, in_features]; ``w`` [out_features, in_features]; ``bias``
    int32 [out_features] or None; ``mult`` / ``shift``: one entry when
    ``p.per_channel == 0``, else ``out_features``.  Returns int8 (batches, out_features).
    """
    xi = _ints(x, (p.batches, p.in_features), "input")
    wi = _ints(w, (p.out_features, p.in_features), "weights")
    acc = ((xi.astype(np.float64) + p.in_offset) @ wi.T.astype(np.float64)).astype(np.int64)
    return _requantize(
        acc, bias, mult, shift, p.out_features, p.out_offset, p.act_min, p.act_max, per_channel=bool(p.per_channel)
    )


# ----------------------------------------------------------------------------
# Wide weights (C: conv.c tinyc_conv2d_wide_s8, fc.c tinyc_fully_connected_wide_s8)
#
# On cores with SMLAD the compiler may store a layer's weights pre-extended to
# int16 (twice the flash) in the order the dual-MAC loops read them, and fold
# the input offset into the bias, so that neither operand is sign-extended in
# the inner loop: one LDM of 4 weight words and one of 4 window words feed 8
# SMLADs (2 pixels x 2 output channels x 4 values).
# ----------------------------------------------------------------------------


def widen(w2d) -> np.ndarray:
    """Weights [N, K] int8 -> the wide layout, int32 words: per pair of output
    channels (2j, 2j + 1), per group of 4 K values (4g .. 4g + 3), 4 words:
    channel 2j's values 4g and 4g + 2 as int16 (low half, high half), its 4g + 1
    and 4g + 3, then channel 2j + 1's two words.  K is padded to a multiple of 4
    and N to a multiple of 2 with zero weights."""
    w = np.asarray(w2d, dtype=np.int64)
    n, k = w.shape
    kp, np_ = -(-k // 4) * 4, -(-n // 2) * 2
    full = np.zeros((np_, kp), dtype=np.int64)
    full[:n, :k] = w
    g = full.reshape(np_ // 2, 2, kp // 4, 4)  # (pair, channel, group, value)
    lo = g[..., [0, 1]] & 0xFFFF  # values 0 and 1: the low halves of the even / odd words
    hi = g[..., [2, 3]] & 0xFFFF
    words = (lo | (hi << 16)).transpose(0, 2, 1, 3)  # (pair, group, channel, even/odd)
    return words.reshape(-1).astype(np.uint32).view(np.int32)


def unwiden(words, n: int, k: int) -> np.ndarray:
    """The int8 [n, k] weights of :func:`widen`'s words."""
    kp, np_ = -(-k // 4) * 4, -(-n // 2) * 2
    w = np.asarray(words, dtype=np.int32).reshape(-1)
    if w.size != np_ // 2 * kp:
        raise ValueError(f"wide weights: {w.size} words do not hold {n} x {k} values")
    u = w.view(np.uint32).astype(np.int64).reshape(np_ // 2, kp // 4, 2, 2)  # (pair, group, channel, even/odd)
    lo = ((u & 0xFFFF) ^ 0x8000) - 0x8000
    hi = ((u >> 16) ^ 0x8000) - 0x8000
    g = np.stack([lo[..., 0], lo[..., 1], hi[..., 0], hi[..., 1]], axis=-1)  # (pair, group, channel, value)
    full = g.transpose(0, 2, 1, 3).reshape(np_, kp)
    return full[:n, :k].astype(np.int8)


def fold_bias(w2d, bias, in_offset: int) -> np.ndarray:
    """``bias + in_offset * sum(w)`` per output channel, wrapped to int32 as the C
    sums wrap (the wide kernels then multiply the raw input; a padded tap holds
    the zero point, ``-in_offset``, and adds ``(zp + in_offset) * w = 0`` as before)."""
    w = np.asarray(w2d, dtype=np.int64)
    b = np.zeros(w.shape[0], dtype=np.int64) if bias is None else np.asarray(bias, dtype=np.int64).reshape(-1)
    return wrap_int32(b + int(in_offset) * w.sum(axis=1)).astype(np.int32)


def _unfold_bias(w2d: np.ndarray, folded, in_offset: int) -> np.ndarray:
    return wrap_int32(np.asarray(folded, dtype=np.int64).reshape(-1)
                      - int(in_offset) * w2d.astype(np.int64).sum(axis=1)).astype(np.int32)


def conv2d_wide_s8(p: ConvParams, x, words, folded_bias, mult, shift) -> np.ndarray:
    """:func:`conv2d_s8` (one group) with the weights in the wide layout
    (``widen`` of [out_c, k_h * k_w * in_c]) and the bias folded with the input
    offset (``fold_bias``): the same values."""
    if p.groups > 1:
        raise ValueError("conv2d_wide_s8 takes one group")
    w = unwiden(words, p.out_c, p.k_h * p.k_w * p.in_c)
    bias = _unfold_bias(w, folded_bias, p.in_offset)
    return conv2d_s8(p, x, w.reshape(p.out_c, p.k_h, p.k_w, p.in_c), bias, mult, shift)


def fully_connected_wide_s8(p: FCParams, x, words, folded_bias, mult, shift) -> np.ndarray:
    """:func:`fully_connected_s8` with wide weights and the folded bias."""
    w = unwiden(words, p.out_features, p.in_features)
    bias = _unfold_bias(w, folded_bias, p.in_offset)
    return fully_connected_s8(p, x, w, bias, mult, shift)


# ----------------------------------------------------------------------------
# Helium weights (C: mve.c tinyc_conv2d_mve_s8, tinyc_fully_connected_mve_s8)
#
# On cores with the M-profile Vector Extension one VMLADAVA.S8 adds 16 products
# of int8 values: the weights stay int8, in the order the loop reads them, and
# the bias holds the input offset (fold_bias) so the window enters raw.
# ----------------------------------------------------------------------------


def mve_pack(w2d) -> np.ndarray:
    """Weights [N, K] int8 -> the Helium layout, int8: per group of 4 output
    channels, per chunk of 16 K values, the 4 channels' 16 values.  K is padded to
    a multiple of 16 and N to a multiple of 4 with zero weights."""
    w = np.asarray(w2d, dtype=np.int8)
    n, k = w.shape
    kp, np_ = -(-k // 16) * 16, -(-n // 4) * 4
    full = np.zeros((np_, kp), dtype=np.int8)
    full[:n, :k] = w
    return full.reshape(np_ // 4, 4, kp // 16, 16).transpose(0, 2, 1, 3).reshape(-1).copy()


def mve_unpack(packed, n: int, k: int) -> np.ndarray:
    """The int8 [n, k] weights of :func:`mve_pack`'s bytes."""
    kp, np_ = -(-k // 16) * 16, -(-n // 4) * 4
    b = np.asarray(packed, dtype=np.int8).reshape(-1)
    if b.size != np_ * kp:
        raise ValueError(f"Helium weights: {b.size} bytes do not hold {n} x {k} values")
    full = b.reshape(np_ // 4, kp // 16, 4, 16).transpose(0, 2, 1, 3).reshape(np_, kp)
    return full[:n, :k].copy()


def mve_bias(folded) -> np.ndarray:
    """A folded bias padded with zeros to a multiple of 4 channels (the Helium
    loop reads a channel group's 4 at once)."""
    b = np.asarray(folded, dtype=np.int32).reshape(-1)
    return np.concatenate([b, np.zeros(-b.size % 4, dtype=np.int32)])


def conv2d_mve_s8(p: ConvParams, x, packed, folded_bias, mult, shift) -> np.ndarray:
    """:func:`conv2d_s8` (one group) with the weights in the Helium layout
    (``mve_pack`` of [out_c, k_h * k_w * in_c]) and the bias folded with the input
    offset (``fold_bias``, padded by ``mve_bias``): the same values."""
    if p.groups > 1:
        raise ValueError("conv2d_mve_s8 takes one group")
    w = mve_unpack(packed, p.out_c, p.k_h * p.k_w * p.in_c)
    bias = _unfold_bias(w, np.asarray(folded_bias).reshape(-1)[:p.out_c], p.in_offset)
    return conv2d_s8(p, x, w.reshape(p.out_c, p.k_h, p.k_w, p.in_c), bias, mult, shift)


def fully_connected_mve_s8(p: FCParams, x, packed, folded_bias, mult, shift) -> np.ndarray:
    """:func:`fully_connected_s8` with Helium weights and the folded bias."""
    w = mve_unpack(packed, p.out_features, p.in_features)
    bias = _unfold_bias(w, np.asarray(folded_bias).reshape(-1)[:p.out_features], p.in_offset)
    return fully_connected_s8(p, x, w, bias, mult, shift)


def mve_pack_dw(w) -> np.ndarray:
    """Depthwise weights [C, k_h, k_w] (or [C, k_h, k_w, 1]) int8 -> the Helium
    layout: per group of 4 channels, per tap, the 4 channels' values (zero past C)."""
    w = np.asarray(w, dtype=np.int8)
    c = w.shape[0]
    taps = w.reshape(c, -1)
    full = np.zeros((-(-c // 4) * 4, taps.shape[1]), dtype=np.int8)
    full[:c] = taps
    return full.reshape(-1, 4, taps.shape[1]).transpose(0, 2, 1).reshape(-1).copy()


def mve_unpack_dw(packed, c: int, k_h: int, k_w: int) -> np.ndarray:
    """The int8 [c, k_h, k_w] weights of :func:`mve_pack_dw`'s bytes."""
    b = np.asarray(packed, dtype=np.int8).reshape(-1)
    groups, taps = -(-c // 4), k_h * k_w
    if b.size != groups * 4 * taps:
        raise ValueError(f"Helium depthwise weights: {b.size} bytes do not hold {c} x {k_h} x {k_w} values")
    return b.reshape(groups, taps, 4).transpose(0, 2, 1).reshape(-1, taps)[:c].reshape(c, k_h, k_w).copy()


def _dw_mve_args(p: ConvParams, packed, folded_bias):
    if p.depth_multiplier != 1 or p.out_c != p.in_c:
        raise ValueError("the Helium depthwise takes depth multiplier 1")
    w = mve_unpack_dw(packed, p.out_c, p.k_h, p.k_w)
    bias = _unfold_bias(w.reshape(p.out_c, -1), np.asarray(folded_bias).reshape(-1)[:p.out_c], p.in_offset)
    return w, bias


def depthwise_conv2d_mve_s8(p: ConvParams, x, packed, folded_bias, mult, shift) -> np.ndarray:
    """:func:`depthwise_conv2d_s8` (depth multiplier 1) with the weights in the
    Helium layout (``mve_pack_dw``) and the folded bias (``mve_bias``)."""
    w, bias = _dw_mve_args(p, packed, folded_bias)
    return depthwise_conv2d_s8(p, x, w, bias, mult, shift)


def depthwise_conv2d_inplace_mve_s8(p: ConvParams, x, packed, folded_bias, mult, shift) -> np.ndarray:
    """The in-place variant of :func:`depthwise_conv2d_mve_s8` (the same values, and
    the in-place kernel's preconditions)."""
    w, bias = _dw_mve_args(p, packed, folded_bias)
    return depthwise_conv2d_inplace_s8(p, x, w, bias, mult, shift)


DW_DOTS_TAPS = 16  # mve.c: the channel-plane loop's most taps (one gathered vector)


def _dw_dots_shape(p: ConvParams, col: bool) -> tuple[bool, int, int, int]:
    """mve.c dw_dots_shape_of: (fits, lines, vectors per line, output bytes per
    channel) of the channel-plane loop with the planes' inner dimension the
    width (or the height when ``col``)."""
    plane_h, plane_w = _inplace_plane(p)
    pitch = plane_h if col else plane_w
    inner, outer = (p.out_h, p.out_w) if col else (p.out_w, p.out_h)
    s_in, s_out = (p.stride_h, p.stride_w) if col else (p.stride_w, p.stride_h)
    k_in, k_out = (p.k_h, p.k_w) if col else (p.k_w, p.k_h)
    d_in, d_out = (p.dil_h, p.dil_w) if col else (p.dil_w, p.dil_h)
    max_offset = (k_out - 1) * d_out * pitch + (k_in - 1) * d_in
    if s_in == 1 and s_out == 1:  # one flat line of positions
        lines, vectors = 1, ((outer - 1) * pitch + inner + 3) >> 2
    else:
        lines, vectors = outer, (inner + 3) >> 2
    return s_in <= 4 and max_offset + s_in <= 255, lines, vectors, 4 * lines * vectors


def dw_mve_shape(p: ConvParams) -> tuple[int, int, int] | None:
    """The channel-plane loop's (lines, vectors per line, output bytes per
    channel) for the layer (mve.c dw_by_channel: a 2-D map, at most 16 taps,
    windows within byte offsets; the orientation with fewer vectors), or None."""
    if p.k_h * p.k_w > DW_DOTS_TAPS or p.out_h <= 1 or p.out_w <= 1:
        return None
    r, c = _dw_dots_shape(p, False), _dw_dots_shape(p, True)
    if not r[0] and not c[0]:
        return None
    best = r if r[0] and (not c[0] or r[1] * (21 * r[2] + 8) <= c[1] * (21 * c[2] + 8)) else c
    return best[1:]


def dw_mve_by_channel(p: ConvParams) -> bool:
    """Whether the Helium depthwise runs its channel-plane loop (mve.c
    dw_by_channel): a gathered window and one VMLADAV per output, for a 2-D
    output map and at most 16 taps within byte offsets of a window's first."""
    return dw_mve_shape(p) is not None


def dw_mve_scratch_bytes(p: ConvParams, dsp: bool = False) -> int:
    """Required, on any core (mve.c tinyc_depthwise_conv2d_mve_s8_scratch_bytes):
    one group's padded plane, 4 bytes per plane pixel; for the channel-plane loop
    8 areas of the larger of the plane and a channel's outputs (rounded up to
    whole vectors) and 64 bytes of room."""
    if p.out_h < 1 or p.out_w < 1:
        return 0
    plane_h, plane_w = _inplace_plane(p)
    n = plane_h * plane_w
    shape = dw_mve_shape(p)
    if shape is not None:
        return 8 * max(-(-n // 16) * 16, -(-shape[2] // 16) * 16) + 64
    return 4 * n + 16  # whole vectors written past the plane's end


# ----------------------------------------------------------------------------
# In-place depthwise convolution (C: runtime_c/src/dw_inplace.c)
# ----------------------------------------------------------------------------


def _inplace_plane(p: ConvParams) -> tuple[int, int]:
    """(plane_h, plane_w): the input rows / columns the windows touch, padding included."""
    plane_h = (p.out_h - 1) * p.stride_h + (p.k_h - 1) * p.dil_h + 1
    plane_w = (p.out_w - 1) * p.stride_w + (p.k_w - 1) * p.dil_w + 1
    return plane_h, plane_w


def depthwise_inplace_scratch_bytes(p: ConvParams, dsp: bool = False) -> int:
    """Scratch of ``tinyc_depthwise_conv2d_inplace_s8``: one padded channel plane,
    ``plane_h * plane_w`` bytes, and on a DSP core the table kernels' packed weights
    after it (word-aligned; see :func:`_inplace_table_words`).

    ``plane_h = (out_h - 1) * stride_h + (k_h - 1) * dil_h + 1`` (rows ``-pad_t ..``
    that some window reads), ``plane_w`` likewise; 0 for an empty output.
    """
    if p.out_h < 1 or p.out_w < 1:
        return 0
    plane_h, plane_w = _inplace_plane(p)
    words = _inplace_table_words(p) if dsp else 0
    n = (plane_h * plane_w + 3) // 4 * 4 + 4 * words if words else plane_h * plane_w
    if dsp and _dw_column(p) and p.pad_t == 0 and p.pad_l == 0:
        n = max(n, 8 * p.k_h)  # the column kernel runs forward over the buffer with its table
    return n


def _dw_column(p: ConvParams) -> bool:
    """matmul_dsp.h tinyc_dw_column_ok: a depthwise down one column, 4 channels per word."""
    return (p.in_w == 1 and p.out_w == 1 and p.k_w == 1 and p.depth_multiplier <= 1 and p.in_c >= 4
            and p.out_h > 0 and 1 <= p.k_h <= DW_TAPS_MAX)


def _inplace_table_words(p: ConvParams) -> int:
    """Words of the in-place kernel's weight table (dw_inplace.c ``table_words``):
    kernels other than 3 x 3 at stride 1 or 2, without a clamp or dilation along
    the rows, at most 3 words of taps per row and DWT_MAX_WORDS in all."""
    _, plane_w = _inplace_plane(p)
    column = plane_w == 1 and p.out_h > 1  # a one-column map runs down the column
    kh, kw = (1, p.k_h) if column else (p.k_h, p.k_w)
    sw, dw = (p.stride_h, p.dil_h) if column else (p.stride_w, p.dil_w)
    out_w = p.out_h if column else p.out_w
    words = (kw + sw + 3) >> 2
    if ((p.act_min, p.act_max) != (-128, 127) or dw != 1 or out_w < 2 or (kh == kw == 3 and sw in (1, 2))
            or words > 3 or kh * words * 4 > DWT_MAX_WORDS):
        return 0
    return kh * words * 4


# ----------------------------------------------------------------------------
# Scratch of the DSP paths (C: NAME_scratch_bytes in conv.c, dw_inplace.c).
# The C kernels take a fast path only with this much scratch; the arena holds it.
# ----------------------------------------------------------------------------

WBUF_MAX_K = 256  # matmul_dsp.h TINYC_WBUF_K: the largest K whose weight rows are pre-extended
IM2COL_WORDS = 160  # conv.c: the im2col window buffer's words
DW_TAPS_MAX = 64  # conv.c: taps the depthwise weight table holds
DWT_MAX_WORDS = 84  # dw_inplace.c: the in-place table's words


def conv2d_1x1_scratch_bytes(p: ConvParams, dsp: bool) -> int:
    """On a DSP core: two weight rows sign-extended to int16 pairs, 4 * K bytes
    (K = in_c <= WBUF_MAX_K)."""
    if dsp and 4 <= p.in_c <= WBUF_MAX_K and p.out_h > 0 and p.out_w > 0:
        return 16 * (p.in_c >> 2)
    return 0


def conv2d_1x1_spare_scratch_bytes(p: ConvParams, dsp: bool) -> int:
    """Without the DSP extension, where the arena has it free: a pixel's channels
    as int16 with the input offset added, 2 * in_c bytes (when there are 4 output
    channels to share them and an offset to add)."""
    if dsp or p.out_h < 1 or p.out_w < 1 or p.out_c < 4 or p.in_offset == 0:
        return 0
    return 2 * p.in_c


def conv2d_scratch_bytes(p: ConvParams, dsp: bool) -> int:
    """The im2col path (K = k_h * k_w * in_c <= IM2COL_WORDS): as many pixel pairs'
    windows as fit in IM2COL_WORDS words (2 int16 values per K value and pixel
    pair), then one int8 window of IM2COL_WORDS bytes."""
    groups = (p.k_h * p.k_w * p.in_c + 3) >> 2
    if dsp and p.groups <= 1 and p.out_h > 0 and p.out_w > 0 and 0 < 4 * groups <= IM2COL_WORDS:
        return 16 * groups * (IM2COL_WORDS // (4 * groups)) + IM2COL_WORDS
    return 0


WIDE_WORDS = 288  # conv.c: the wide kernel's window words (more pixel pairs per block when they fit)


def conv2d_wide_scratch_bytes(p: ConvParams, dsp: bool) -> int:
    """The wide convolution's windows: 4 words per group of 4 K values per pixel
    pair, as many pairs as fit in WIDE_WORDS words (at least one), then one int8
    window (4 * groups bytes).  The portable code needs none."""
    groups = (p.k_h * p.k_w * p.in_c + 3) >> 2
    if not dsp or p.out_h < 1 or p.out_w < 1 or groups < 1:
        return 0
    pairs = max(1, WIDE_WORDS // (4 * groups))
    return 16 * groups * pairs + 4 * groups


MVE_BLOCK_BYTES = 1024  # mve.c: the im2col block's size, at most 32 windows
MVE_STRIP_BYTES = 2048  # mve.c: the largest strip (an output row's input rows)


def _mve_strip_bytes(p: ConvParams) -> int:
    """mve.c mve_strip_bytes: the input rows one output row's windows read, padded,
    when not dilated along x and at most 2 KB (whole vectors and 16 bytes of
    slack), else 0."""
    n = p.k_h * ((p.out_w - 1) * p.stride_w + p.k_w) * p.in_c
    return -(-n // 16) * 16 + 16 if p.dil_w == 1 and n <= MVE_STRIP_BYTES else 0


def conv2d_mve_scratch_bytes(p: ConvParams, dsp: bool) -> int:
    """Windows of 16 * ceil(K / 16) bytes (im2col): none for a pointwise layer
    without padding (its pixels are read in place), two where kernel rows of whole
    chunks are read in place (mve.c: the windows with padded taps are copied), else
    a block of 2-32 windows (an even number, as many as 1 KB holds) and the strip
    they are copied from.  ``dsp``: planned for a core with the DSP extension (the
    kernel is only chosen for Helium cores)."""
    chunks = (p.k_h * p.k_w * p.in_c + 15) // 16
    if not dsp or p.out_h < 1 or p.out_w < 1 or chunks < 1:
        return 0
    if p.k_h == p.k_w == 1 and p.pad_t == p.pad_l == 0:
        return 0
    if p.dil_w == 1 and p.k_w * p.in_c % 16 == 0:
        return 32 * chunks
    return 16 * chunks * min(32, max(2, MVE_BLOCK_BYTES // (16 * chunks) & ~1)) + 16 + _mve_strip_bytes(p)


def fc_spare_scratch_bytes(p: FCParams, dsp: bool) -> int:
    """Without the DSP extension, where the arena has it free: a row as int16 with
    the input offset added, 2 * in_features bytes (when there are 4 output
    features to share it and an offset to add)."""
    if dsp or p.batches < 1 or p.out_features < 4 or p.in_offset == 0:
        return 0
    return 2 * p.in_features


FCW_GROUPS = 128  # fc.c: groups of 4 features per chunk of a long row


def fc_wide_scratch_bytes(p: FCParams, dsp: bool) -> int:
    """One input row as int16 pairs (2 words per group of 4 features); a row of more
    than FCW_GROUPS groups in chunks of that many, then one int32 sum per output."""
    groups = (p.in_features + 3) >> 2
    if not dsp or p.batches < 1 or groups < 1:
        return 0
    return 8 * groups if groups <= FCW_GROUPS else 8 * FCW_GROUPS + 4 * p.out_features


def depthwise_scratch_bytes(p: ConvParams, dsp: bool) -> int:
    """The 4-channel weight table: 2 words per tap (at most DW_TAPS_MAX taps)."""
    taps = p.k_h * p.k_w
    if dsp and p.depth_multiplier <= 1 and p.in_c >= 4 and p.out_h > 0 and p.out_w > 0 and 0 < taps <= DW_TAPS_MAX:
        return 8 * taps
    return 0


def depthwise_inplace_ok(p: ConvParams) -> bool:
    """Whether ``tinyc_depthwise_conv2d_inplace_s8`` may run over the input's own buffer.

    Channel c's pass reads only bytes of channel c (index = c mod C) and writes
    only bytes of channel c, after it has copied that channel to the scratch
    plane; so no channel ever clobbers another channel's input, and the only
    hazard is writing past the buffer.  The last write is at
    ``out_h*out_w*C - 1``, hence exactly: depth_multiplier 1 (one output channel
    per input channel, laid out like the input), ``out_h*out_w <= in_h*in_w``
    (necessary and sufficient for a buffer of the input's size), and an input
    zero point ``-in_offset`` that fits in int8 (the plane stores the padding
    as that value, so that padded taps add exactly 0).
    """
    return (
        p.depth_multiplier == 1
        and p.out_c == p.in_c
        and min(p.in_h, p.in_w, p.in_c, p.out_h, p.out_w) >= 1
        and p.out_h * p.out_w <= p.in_h * p.in_w
        and -128 <= -p.in_offset <= 127
    )


def depthwise_conv2d_inplace_s8(p: ConvParams, x, w, bias, mult, shift) -> np.ndarray:
    """The in-place depthwise kernel, simulated step by step; returns what :func:`depthwise_conv2d_s8` returns.

    A flat int8 buffer (the input, followed by room for the output if that is
    larger) is processed channel by channel as the C kernel does: channel c is
    copied into a padded plane (padding = the input zero point), then output
    channel c is computed from the plane and written to ``buf[q*C + c]``.
    Returns int8 (1, out_h, out_w, C).
    """
    if p.depth_multiplier != 1 or p.out_c != p.in_c:
        raise ValueError(
            f"in-place depthwise needs depth_multiplier 1 and out_c == in_c "
            f"(got depth_multiplier {p.depth_multiplier}, in_c {p.in_c}, out_c {p.out_c})"
        )
    if not -128 <= -p.in_offset <= 127:
        raise ValueError(f"in_offset {p.in_offset}: the input zero point must fit in int8")
    _check_out_size(p.in_h, p.pad_t, p.k_h, p.stride_h, p.dil_h, p.out_h, "height")
    _check_out_size(p.in_w, p.pad_l, p.k_w, p.stride_w, p.dil_w, p.out_w, "width")
    chans, n_in, n_out = p.in_c, p.in_h * p.in_w, p.out_h * p.out_w
    wi = _ints(w, (chans, p.k_h, p.k_w), "weights").astype(np.float64)
    buf = np.zeros(max(n_in, n_out) * chans, dtype=np.int8)
    buf[: n_in * chans] = _ints(x, (n_in * chans,), "input").astype(np.int8)
    bias_i = None if bias is None else _ints(bias, (chans,), "bias")
    mult_i = _ints(np.asarray(mult).reshape(-1)[:chans], (chans,), "mult")
    shift_i = _ints(np.asarray(shift).reshape(-1)[:chans], (chans,), "shift")
    plane_h, plane_w = _inplace_plane(p)
    # Plane rows / columns that hold input (plane row r is input row r - pad_t).
    r0, r1 = min(max(p.pad_t, 0), plane_h), min(max(p.pad_t + p.in_h, 0), plane_h)
    c0, c1 = min(max(p.pad_l, 0), plane_w), min(max(p.pad_l + p.in_w, 0), plane_w)
    r1, c1 = max(r1, r0), max(c1, c0)
    zp = np.int8(-p.in_offset)
    for c in range(chans):
        image = buf[c::chans][:n_in].reshape(p.in_h, p.in_w)  # channel c's bytes, as they are now
        plane = np.full((plane_h, plane_w), zp, dtype=np.int8)
        plane[r0:r1, c0:c1] = image[r0 - p.pad_t : r1 - p.pad_t, c0 - p.pad_l : c1 - p.pad_l]
        xo = plane.astype(np.float64) + p.in_offset  # padding becomes exactly 0
        span_h, span_w = (p.k_h - 1) * p.dil_h + 1, (p.k_w - 1) * p.dil_w + 1
        win = sliding_window_view(xo, (span_h, span_w))[:: p.stride_h, :: p.stride_w, :: p.dil_h, :: p.dil_w]
        acc = np.einsum("yxij,ij->yx", win[: p.out_h, : p.out_w], wi[c]).astype(np.int64).reshape(-1, 1)
        out = _requantize(
            acc, None if bias_i is None else bias_i[c : c + 1], mult_i[c : c + 1], shift_i[c : c + 1],
            1, p.out_offset, p.act_min, p.act_max,
        )  # fmt: skip
        buf[c::chans][:n_out] = out.reshape(-1)  # writes channel c's bytes only
    return buf[: n_out * chans].reshape(1, p.out_h, p.out_w, chans).copy()


def matmul_s8(p: MatMulParams, a, b) -> np.ndarray:
    """TFLM int8 BATCH_MATMUL of two activations: ``[batches][rows][cols]`` with
    ``sum_k (a + a_offset) * (b + b_offset)`` requantized by one multiplier
    (MultiplyByQuantizedMultiplier) and clamped."""
    fa = np.ascontiguousarray(a).astype(np.int64).reshape(-1)
    fb = np.ascontiguousarray(b).astype(np.int64).reshape(-1)
    out = np.empty((p.batches, p.rows, p.cols), dtype=np.int64)
    for i in range(p.batches):
        ma = fa[i * p.a_batch_stride:][:p.rows * p.depth].reshape(p.rows, p.depth) + p.a_offset
        mb = fb[i * p.b_batch_stride:][:p.depth * p.cols].reshape(p.depth, p.cols) + p.b_offset
        acc = wrap_int32(ma @ mb)
        out[i] = multiply_by_quantized_multiplier(acc, p.out_mult, p.out_shift) + p.out_offset
    return np.ascontiguousarray(np.clip(out, p.act_min, p.act_max).astype(np.int8))
