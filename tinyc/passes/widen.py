"""Compile-time specialization for the board's core, trading flash for speed.

Rewrites ranked together by the instructions they save per byte of flash
they cost, applied while the model's constants stay within the flash budget the
caller gives (the board's flash less a reserve for the code):

* Wide weights.  A convolution (one group) or fully connected layer whose
  weights are constants runs as ``conv2d_wide_s8`` / ``fully_connected_wide_s8``:
  its weights stored pre-extended to int16 in the order the SMLAD loops read them
  (``kernels.conv.widen``: twice the flash) and its bias folded with the input
  offset (``kernels.conv.fold_bias``), so the inner loops extend neither operand.
  On QEMU's Cortex-M4 a 3x3 convolution then takes about 0.8 instructions per MAC
  instead of 1.5, a pointwise one 0.9 instead of 1.2, a fully connected layer 0.9
  instead of 1.6-2.0 (BENCHMARKS.md).  The wide convolution also plans more
  scratch (window words of a few pixel pairs, about 1 KB); build.specialize_for
  keeps the program as it was when that would push an arena that fits the
  board's RAM out of it.
* Helium weights.  On cores with the M-profile Vector Extension (Cortex-M55 /
  M85) the same layers run as ``conv2d_mve_s8`` / ``fully_connected_mve_s8``
  instead: int8 weights in the order the VMLADAVA loop reads them
  (``kernels.conv.mve_pack``: the flash of the int8 weights, padded to 4
  channels x 16 values) and the folded bias; so do 3 x 3 depthwise layers
  (depth multiplier 1: ``depthwise_conv2d_mve_s8``, weights per group of 4
  channels, ``kernels.conv.mve_pack_dw``).
* Folded offsets.  On cores without the DSP extension a fully connected layer or
  an unpadded convolution (one group) whose weights are constants keeps its
  kernel and int8 weights but takes its bias folded with the input offset, and
  input offset 0 (``kernels.conv.fold_bias``; ``offset_foldable`` says which):
  the same sums, while the portable dot loop adds no offset to each input value
  (Cortex-M3: 19 instructions per 8 MACs instead of 22) and needs no int16 copy
  of its input.  Its flash cost is nothing where the layer had a bias.
* Add tables.  An Add / Sub takes ``kernels.elementwise.add_table(params)``, its
  inputs' 512 rescaled values (2 KB), instead of rescaling each element: about 15
  M4 instructions per element instead of 110.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..ir.program import KernelCall, Program
from ..kernels.conv import dw_mve_by_channel, fold_bias, mve_bias, mve_pack, mve_pack_dw, widen
from ..kernels.elementwise import add_table

WIDE_KERNEL = {"conv2d_s8": "conv2d_wide_s8", "conv2d_1x1_s8": "conv2d_wide_s8",
               "fully_connected_s8": "fully_connected_wide_s8"}
MVE_KERNEL = {"conv2d_s8": "conv2d_mve_s8", "conv2d_1x1_s8": "conv2d_mve_s8",
              "fully_connected_s8": "fully_connected_mve_s8", "depthwise_conv2d_s8": "depthwise_conv2d_mve_s8"}
# flash kept free for the code (kernels, glue, startup, the self-test harness)
# when specializing against a board's flash
CODE_RESERVE = 96 * 1024
# RAM kept free beside the arena (stack, data) when checking that the wide
# kernels' scratch still lets the arena fit the board
RAM_RESERVE = 16 * 1024
# instructions each saves (BENCHMARKS.md): per MAC of a wide layer (Cortex-M4),
# per MAC of a folded offset (Cortex-M3), per element of a tabulated Add (M4)
WIDE_SAVING_PER_MAC = 0.4
FOLD_SAVING_PER_MAC = 0.25
TABLE_SAVING_PER_ELEMENT = 90
FOLDABLE = ("conv2d_s8", "conv2d_1x1_s8", "fully_connected_s8")


def _eligible(program: Program, call: KernelCall, vector: bool) -> bool:
    if call.kernel not in (MVE_KERNEL if vector else WIDE_KERNEL) or call.args:
        return False
    if call.kernel == "conv2d_s8" and call.params.groups > 1:
        return False
    if call.kernel == "depthwise_conv2d_s8" and not _mve_depthwise_pays(call.params):
        return False
    return _int8_weights(program, call)


def _int8_weights(program: Program, call: KernelCall) -> bool:
    """The call's weights are int8 constants (not trainable: a rewrite bakes them in)."""
    w = program.graph.tensors[call.inputs[1]]
    return w.is_const and w.kind is None and np.dtype(w.dtype) == np.int8


def offset_foldable(kernel: str, p) -> bool:
    """Whether ``kernel``'s input offset can move into its bias: every product it
    sums is an in-bounds input value times a weight, so ``sum((x + off) * w)`` is
    ``sum(x * w) + off * sum(w)`` (a fully connected layer, or a convolution of one
    group without padded taps, whose offset-added zero point adds nothing)."""
    if kernel not in FOLDABLE or p.in_offset == 0:
        return False
    return kernel == "fully_connected_s8" or not (
        p.groups > 1 or p.pad_t or p.pad_l
        or (p.out_h - 1) * p.stride_h + (p.k_h - 1) * p.dil_h >= p.in_h
        or (p.out_w - 1) * p.stride_w + (p.k_w - 1) * p.dil_w >= p.in_w)


def _foldable(program: Program, call: KernelCall) -> bool:
    return not call.args and offset_foldable(call.kernel, call.params) and _int8_weights(program, call)


def _mve_depthwise_pays(p) -> bool:
    """The Helium depthwise (depth multiplier 1) is faster than the DSP kernels
    where it runs its channel-plane loop (a 2-D map, up to 16 taps: a gathered
    window and one VMLADAV per output), a 3 x 3 kernel (no dilation) over rows of
    2 pixels or more, or a one-column map of up to 16 taps (sww's: pairs of rows,
    4 channels per vector)."""
    if p.depth_multiplier != 1:
        return False
    column = p.out_w == 1 and p.k_w == 1 and p.k_h <= 16
    return dw_mve_by_channel(p) or column or (p.k_h == p.k_w == 3 and p.dil_h == p.dil_w == 1 and p.out_w >= 2)


def _macs(call: KernelCall) -> int:
    p = call.params
    if call.kernel == "fully_connected_s8":
        return p.batches * p.in_features * p.out_features
    if call.kernel == "depthwise_conv2d_s8":
        return p.out_h * p.out_w * p.out_c * p.k_h * p.k_w
    return p.out_h * p.out_w * p.out_c * p.k_h * p.k_w * p.in_c


def specialize(program: Program, flash_budget: int | None, wide: bool = True, vector: bool = False) -> int:
    """Rewrite calls to the wide kernels and give Adds their tables, most
    instructions saved per flash byte first, while the program's constant bytes
    stay within ``flash_budget`` (None: no limit); ``wide``: the core has the
    DSP extension (the tables help any core); ``vector``: it has Helium (the
    Helium kernels instead of the wide ones).  Returns the number of calls
    rewritten.  Calls sharing weights (the bands of a patched stage) share the
    rewritten copy."""
    g = program.graph
    from ..codegen.c import weight_bytes

    total = weight_bytes(program)
    candidates = []  # (instructions saved per byte, extra bytes, apply)
    groups: dict[tuple, list[int]] = {}
    folds: dict[tuple, list[int]] = {}
    for k, call in enumerate(program.calls):
        if (wide or vector) and _eligible(program, call, vector):
            groups.setdefault((call.inputs[1], call.inputs[2], call.params.in_offset), []).append(k)
        elif not (wide or vector) and _foldable(program, call):
            folds.setdefault((call.inputs[1], call.inputs[2], call.params.in_offset), []).append(k)
        elif call.kernel == "add_s8" and len(call.inputs) == 2:
            table = add_table(call.params)
            saving = TABLE_SAVING_PER_ELEMENT * int(np.prod(call.params.out_shape))
            candidates.append((saving / table.nbytes, table.nbytes, _give_table(program, k, table)))
    for (w_name, b_name, in_offset), ks in groups.items():
        w = g.tensors[w_name].data
        w2d = w.reshape(w.shape[0], -1)
        depthwise = program.calls[ks[0]].kernel == "depthwise_conv2d_s8"
        words = (mve_pack_dw(w) if depthwise else mve_pack(w2d)) if vector else widen(w2d)
        bias = None if b_name is None else g.tensors[b_name].data
        folded = fold_bias(w2d, bias, in_offset)
        if vector:
            folded = mve_bias(folded)
        # the wide weights and folded bias replace the int8 weights and the bias
        extra = words.nbytes + folded.nbytes - w.nbytes - (0 if bias is None else bias.nbytes)
        saving = WIDE_SAVING_PER_MAC * sum(_macs(program.calls[k]) for k in ks)
        kernels = MVE_KERNEL if vector else WIDE_KERNEL
        candidates.append((saving / max(extra, 1), extra,
                           _widen(program, ks, w_name, b_name, words, folded, kernels)))
    for (w_name, b_name, in_offset), ks in folds.items():
        w = g.tensors[w_name].data
        bias = None if b_name is None else g.tensors[b_name].data
        folded = fold_bias(w.reshape(w.shape[0], -1), bias, in_offset)
        extra = folded.nbytes - (0 if bias is None else bias.nbytes)
        saving = FOLD_SAVING_PER_MAC * sum(_macs(program.calls[k]) for k in ks)
        candidates.append((saving / max(extra, 1), extra, _fold(program, ks, w_name, b_name, folded)))
    done = 0
    for _, extra, apply in sorted(candidates, key=lambda c: -c[0]):
        if flash_budget is not None and total + extra > flash_budget:
            continue
        done += apply()
        total = weight_bytes(program)
    return done


def _give_table(program: Program, k: int, table: np.ndarray):
    def apply() -> int:
        call = program.calls[k]
        call.inputs = [*call.inputs, program.graph.add_const(call.node + "_add_table", table)]
        return 1
    return apply


def _fold(program: Program, ks: list[int], w_name: str, b_name: str | None, folded):
    def apply() -> int:
        bf = program.graph.add_const((b_name or w_name) + "_folded", folded)
        for k in ks:
            call = program.calls[k]
            call.params = dataclasses.replace(call.params, in_offset=0)
            call.inputs = [call.inputs[0], call.inputs[1], bf, *call.inputs[3:]]
        return len(ks)
    return apply


def _widen(program: Program, ks: list[int], w_name: str, b_name: str | None, words, folded, kernels: dict):
    def apply() -> int:
        g = program.graph
        ww = g.add_const(w_name + ("_mve" if kernels is MVE_KERNEL else "_wide"), words)
        bf = g.add_const((b_name or w_name) + "_folded", folded)
        for k in ks:
            call = program.calls[k]
            call.kernel = kernels[call.kernel]
            call.inputs = [call.inputs[0], ww, bf, *call.inputs[3:]]
        return len(ks)
    return apply
