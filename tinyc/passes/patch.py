"""Patch-based execution of a program's first stage (MCUNetV2), by rows.

The first, high-resolution layers of a CNN set its peak SRAM. Run instead patch
by patch: the output of the stage (the *split* tensor) is cut into R bands of
rows, and each band is computed on its own from the rows of the input its
receptive field needs (its window, halo included), so that only one band's
intermediate tensors are alive at a time. Then the rest of the network runs
layer by layer.

Receptive field: walking the stage backwards from a band of the split tensor,
a convolution or pooling with kernel k, stride s, dilation d and top padding P
needs input rows [a*s - P, (b-1)*s - P + (k-1)*d + 1) (cut to the image) for
output rows [a, b); an elementwise op needs the same rows of its inputs; a
tensor read by several calls needs the union. Each patch call is the layer's
own kernel on those rows: its ``in_h`` / ``out_h`` are the band's, and its top
padding is the image's only where the window starts above the image
(``pad_t = window start - (a*s - P)``); below a window, taps past its last row
are padding, which at the image's bottom is the image's and elsewhere never
happens (the window holds every row the band needs). So every value equals
layer-wise execution's, bit for bit.

Bands of whole rows are contiguous in NHWC: a patch reads its window of the
input as a view at an offset (``row_view``) and its last call writes its band
of the split tensor in place (a view too); ``row_join`` marks the split tensor
complete. Neither has code; the planner places views inside their root.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass

from ..errors import TinycError
from ..ir.program import KernelCall, Program
from . import memory

CONVS = ("conv2d_s8", "conv2d_1x1_s8", "conv2d_wide_s8", "conv2d_mve_s8")
DEPTHWISE = ("depthwise_conv2d_s8", "depthwise_conv2d_mve_s8")
GEOMETRIC = (*CONVS, *DEPTHWISE, "max_pool_s8", "avg_pool_s8")
ELEMENTWISE = ("add_s8", "mul_s8", "requantize_s8", "clamp_s8")


@dataclass
class PatchPlan:
    split: str  # the tensor the stage ends with
    split_call: int  # index of the call that makes it
    rows: int  # bands of the split tensor
    cols: int = 1
    arena_bytes: int = 0  # by the quick plan
    macs: int = 0  # of the patched program
    layerwise_macs: int = 0

    @property
    def overhead(self) -> float:
        """Extra MACs, as a fraction of layer-wise execution's."""
        return self.macs / self.layerwise_macs - 1 if self.layerwise_macs else 0.0


def call_macs(call: KernelCall) -> int:
    p = call.params
    if call.kernel in CONVS:
        return p.out_h * p.out_w * p.out_c * p.k_h * p.k_w * (p.in_c // max(p.groups, 1))
    if call.kernel in DEPTHWISE:
        return p.out_h * p.out_w * p.out_c * p.k_h * p.k_w
    if call.kernel in ("max_pool_s8", "avg_pool_s8"):
        return p.out_h * p.out_w * p.channels * p.k_h * p.k_w
    if call.kernel in ("fully_connected_s8", "fully_connected_wide_s8", "fully_connected_mve_s8"):
        return p.batches * p.in_features * p.out_features
    return 0


def program_macs(program: Program) -> int:
    return sum(call_macs(c) for c in program.calls)


def _shape4(program: Program, name: str) -> tuple[int, int, int, int] | None:
    shape = program.graph.tensors[name].shape
    return shape if len(shape) == 4 and shape[0] == 1 else None


def _patchable(program: Program, call: KernelCall) -> bool:
    g = program.graph
    acts = [i for i in call.inputs if i and not g.tensors[i].is_const]
    if call.kernel in GEOMETRIC:
        return len(acts) == 1 and _shape4(program, acts[0]) is not None
    if call.kernel in ELEMENTWISE:
        out = _shape4(program, call.outputs[0])
        return out is not None and all(g.tensors[i].shape == out for i in acts)
    return False


def stage_of(program: Program, split_call: int) -> list[int] | None:
    """The calls of the stage ending with call ``split_call`` (a prefix of the
    program), or None when it cannot run by patches: an op without a row-local
    kernel, or a stage tensor other than the split read after it."""
    calls = program.calls
    if not 0 <= split_call < len(calls):
        return None
    stage = list(range(split_call + 1))
    if any(calls[k].is_alias or not _patchable(program, calls[k]) for k in stage):
        return None
    split = calls[split_call].outputs[0]
    made = {o for k in stage for o in calls[k].outputs}
    later = {i for c in calls[split_call + 1:] for i in c.inputs if i}
    if (made - {split}) & (later | set(program.outputs)) or split in program.outputs:
        return None
    inputs = {i for k in stage for i in calls[k].inputs if i and not program.graph.tensors[i].is_const} - made
    if not inputs <= set(program.inputs):
        return None
    return stage


def _window(call: KernelCall, rows: tuple[int, int], in_h: int) -> tuple[int, int]:
    """The input rows a call needs for its output rows [a, b), cut to [0, in_h)."""
    a, b = rows
    if call.kernel in GEOMETRIC:
        p = call.params
        dil = getattr(p, "dil_h", 1)
        lo = a * p.stride_h - p.pad_t
        hi = (b - 1) * p.stride_h - p.pad_t + (p.k_h - 1) * dil + 1
        return max(lo, 0), min(hi, in_h)
    return a, b


def _patch_params(call: KernelCall, out_rows: tuple[int, int], in_rows: tuple[int, int] | None, height: int):
    """The call's params (and scalars) for a band: output rows ``out_rows`` from
    input rows ``in_rows`` (geometric kernels); ``height``: the output's rows."""
    p = call.params
    n = out_rows[1] - out_rows[0]
    if call.kernel in GEOMETRIC:
        top = out_rows[0] * p.stride_h - p.pad_t
        return dataclasses.replace(p, in_h=in_rows[1] - in_rows[0], out_h=n, pad_t=in_rows[0] - top), call.scalars
    if call.kernel in ("add_s8", "mul_s8"):
        _, h, w, c = p.out_shape
        strides = (n * w * c, w * c, c, 1)
        return dataclasses.replace(p, out_shape=(1, n, w, c), in1_strides=strides, in2_strides=strides), call.scalars
    if call.kernel == "requantize_s8":
        return dataclasses.replace(p, size=p.size // height * n), call.scalars
    if call.kernel == "clamp_s8":
        size, lo, hi = call.scalars
        return p, (size // height * n, lo, hi)
    raise AssertionError(call.kernel)


def _band_tensor(g, name: str, rows: tuple[int, int], label: str) -> str:
    """A tensor like ``name`` holding only rows [lo, hi)."""
    t = g.tensors[name]
    new = g.unique_name(f"{name}@{label}")
    g.add_tensor(dataclasses.replace(t, name=new, shape=(1, rows[1] - rows[0], *t.shape[2:]), attrs=dict(t.attrs)))
    return new


def patch_program(program: Program, split_call: int, rows: int) -> Program:
    """The program with its stage up to call ``split_call`` run in ``rows`` bands
    of the split tensor's rows (see the module docstring). The graph is copied
    (its tensor table), the input program is unchanged."""
    stage = stage_of(program, split_call)
    if stage is None:
        raise TinycError(f"call {split_call} ({program.calls[split_call].node}) cannot end a patch stage")
    g = copy.copy(program.graph)
    g.tensors = dict(program.graph.tensors)
    calls = program.calls
    split = calls[split_call].outputs[0]
    height = g.tensors[split].shape[1]
    if not 2 <= rows <= height:
        raise TinycError(f"--patch {split_call}:{rows}x1: the split tensor {split!r} has {height} rows; give 2 to "
                         f"{height} bands")
    producer = {calls[k].outputs[0]: k for k in stage}
    program_inputs = sorted({i for k in stage for i in calls[k].inputs if i and not g.tensors[i].is_const}
                            - set(producer))
    new_calls: list[KernelCall] = []
    slots = []
    bounds = [round(height * r / rows) for r in range(rows + 1)]
    for band in range(rows):
        need: dict[str, tuple[int, int]] = {split: (bounds[band], bounds[band + 1])}
        for k in reversed(stage):  # the receptive field, back from the band
            call = calls[k]
            out = call.outputs[0]
            if out not in need:
                continue
            for i in call.inputs:
                if not i or g.tensors[i].is_const:
                    continue
                lo, hi = _window(call, need[out], g.tensors[i].shape[1])
                if i in need:
                    lo, hi = min(lo, need[i][0]), max(hi, need[i][1])
                need[i] = (lo, hi)
        local: dict[str, str] = {}
        for name in program_inputs:
            if name in need:  # a window of a program input, in place
                view = _band_tensor(g, name, need[name], f"rows{band}")
                lo, hi = need[name]
                new_calls.append(KernelCall("row_view", None, [name], [view], f"{name}@rows{band}",
                                            scalars=(lo, hi - lo)))
                local[name] = view
        for k in stage:
            call = calls[k]
            out = call.outputs[0]
            if out not in need:
                continue
            inputs = [local.get(i, i) if i else i for i in call.inputs]
            in_rows = None
            for j, i in enumerate(call.inputs):
                if not i or g.tensors[i].is_const:
                    continue
                # the rows this call reads: an input band may hold more (another reader's), then its part
                want = _window(call, need[out], g.tensors[i].shape[1])
                in_rows = want
                if need[i] != want:
                    part = _band_tensor(g, i, want, f"part{band}")
                    new_calls.append(KernelCall("row_view", None, [local[i]], [part], f"{call.node}@part{band}",
                                                scalars=(want[0] - need[i][0], want[1] - want[0])))
                    inputs[j] = part
            params, scalars = _patch_params(call, need[out], in_rows, g.tensors[out].shape[1])
            local[out] = _band_tensor(g, out, need[out], f"band{band}")
            if out == split:
                slots.append((local[out], need[out]))
            new_calls.append(KernelCall(call.kernel, params, inputs, [local[out]], f"{call.node}@band{band}", scalars))
    new_calls.append(KernelCall("row_join", None, [s for s, _ in slots], [split], f"{split}@join",
                                scalars=tuple(hi - lo for _, (lo, hi) in slots)))
    out = Program(g, new_calls + list(calls[split_call + 1:]), list(program.inputs), list(program.outputs),
                  list(program.float_tail), program.dsp)
    return out


# The stage worth patching is a network's high-resolution front: its first few
# dozen calls (the shared models' best splits end calls 3-7). Candidates stop
# there, so a deep chain is not searched split by split (each patched copy of it
# planned in time quadratic in its length).
MAX_STAGE_CALLS = 64


def candidate_splits(program: Program) -> list[int]:
    """Calls among the first MAX_STAGE_CALLS that can end a patch stage (with at
    least two rows to cut), first to last."""
    return [k for k in range(min(len(program.calls), MAX_STAGE_CALLS))
            if program.graph.tensors[program.calls[k].outputs[0]].shape[1:2] >= (2,)
            and stage_of(program, k) is not None]


def parse_patch(text: str) -> tuple[str, int, int] | str:
    """--patch auto | off | SPLIT:RxC -> "auto", "off" or (split, rows, cols)."""
    if text in ("auto", "off"):
        return text
    split, _, grid = text.rpartition(":")
    r, _, c = grid.partition("x")
    if not split or not r.isdigit() or not c.isdigit() or int(r) < 1 or int(c) < 1:
        raise TinycError(f"--patch {text!r}: give auto, off or SPLIT:RxC (SPLIT a tensor name or a call number, "
                         "e.g. 4:4x1)")
    return split, int(r), int(c)


# The search ranks candidates by a quick plan (memory.arena_size): the program's
# own order and one placement strategy, the one that wins on every shared model;
# the FINALISTS best are then planned fully, ties going to fewer MACs.
QUICK_STRATEGY = "greedy-size"
FINALISTS = 4


def search(program: Program, max_overhead: float, plan_fn, max_rows: int = 16) -> list[PatchPlan]:
    """Every split and band count whose extra MACs stay within ``max_overhead``
    (a fraction), each with the arena ``plan_fn(program) -> bytes`` gives it."""
    if len(program.calls) > memory.LARGE_PROGRAM:  # planned by linear-scan in its own order: not searched
        return []
    macs = program_macs(program)
    tried: list[PatchPlan] = []
    for k in candidate_splits(program):
        split = program.calls[k].outputs[0]
        height = program.graph.tensors[split].shape[1]
        for rows in range(2, min(max_rows, height) + 1):
            patched = patch_program(program, k, rows)
            extra = program_macs(patched)
            if macs and extra / macs - 1 > max_overhead:
                break  # more bands only add halo
            tried.append(PatchPlan(split, k, rows, 1, plan_fn(patched), extra, macs))
    return tried


def resolve_split(program: Program, split: str) -> int:
    """The call that makes tensor ``split`` (a name, or a call number)."""
    if split.isdigit():
        k = int(split)
        if k >= len(program.calls):
            raise TinycError(f"--patch {split}: the program has {len(program.calls)} calls; the split is past the "
                             "network")
        return k
    for k, c in enumerate(program.calls):
        if split in c.outputs:
            return k
    raise TinycError(f"--patch {split!r}: no call makes a tensor of that name; give a tensor name or a call number "
                     "(tinyc report lists them)")


def best_plans(program: Program, max_overhead: float, plan_fn, count: int = 3) -> list[dict]:
    """The ``count`` patch plans with the smallest arena (one per split), for the
    report's "what would make it fit" (quick plans: the program's own order)."""
    by_split: dict[int, PatchPlan] = {}
    for p in search(program, max_overhead, plan_fn):
        if p.split_call not in by_split or p.arena_bytes < by_split[p.split_call].arena_bytes:
            by_split[p.split_call] = p
    ranked = sorted(by_split.values(), key=lambda p: (p.arena_bytes, p.overhead))[:count]
    return [{"split": p.split, "split_call": p.split_call, "rows": p.rows, "cols": p.cols,
             "arena_bytes": p.arena_bytes, "mac_overhead": p.overhead, "patch": f"{p.split_call}:{p.rows}x1"}
            for p in ranked]


def apply(program: Program, choice, max_overhead: float, plan, quick_arena):
    """(program, plan, summary) for --patch ``choice`` ("off", "auto" or (split,
    rows, cols)); ``plan(program)`` plans a program (and writes the order it
    chose into ``program.calls``, which the patched program keeps after the
    split), ``quick_arena(program)`` measures a candidate. "auto" keeps
    layer-wise execution unless a patch plan's arena is smaller."""
    layerwise = plan(program)
    if choice == "off":
        return program, layerwise, None
    macs = program_macs(program)
    if choice == "auto":
        best = None
        for cand in sorted(search(program, max_overhead, quick_arena), key=lambda c: (c.arena_bytes, c.macs))[:FINALISTS]:
            patched = patch_program(program, cand.split_call, cand.rows)
            full = plan(patched)
            if best is None or (full.arena_size, cand.macs) < (best[2].arena_size, best[0].macs):
                best = (cand, patched, full)
        if best is None or best[2].arena_size >= layerwise.arena_size:
            return program, layerwise, {"split": None, "layerwise_arena_bytes": layerwise.arena_size}
        cand, patched, patched_plan = best
        k, rows, cols = cand.split_call, cand.rows, 1
    else:
        split, rows, cols = choice
        k = resolve_split(program, split)
        if cols != 1:
            raise TinycError(f"--patch {split}:{rows}x{cols}: tinyc patches by bands of rows so far; give {rows}x1")
        patched = patch_program(program, k, rows)
        patched_plan = plan(patched)
    summary = {"split": program.calls[k].outputs[0], "split_call": k, "rows": rows, "cols": cols,
               "arena_bytes": patched_plan.arena_size, "layerwise_arena_bytes": layerwise.arena_size,
               "mac_overhead": program_macs(patched) / macs - 1 if macs else 0.0}
    return patched, patched_plan, summary


__all__ = ["QUICK_STRATEGY", "apply", "best_plans", "resolve_split", "PatchPlan", "patch_program", "search", "stage_of",
           "candidate_splits", "call_macs", "program_macs", "parse_patch"]
