"""Memory planning: one static arena for every activation (int8, or float32 for
a training step's gradients; sizes in bytes), scratch buffer and the model's
input and output.

Steps: 0 is the copy of the caller's input into the arena, 1..n the kernel calls
in order, n + 1 the copy of the output back to the caller. Every tensor lives from
the step that writes it to the last step that reads it (outputs until n + 1).

Zero-cost sharing, decided here from the kernel descriptors (tinyc/kernels):
- views: a Reshape's output is its input's bytes (one buffer for the chain);
- in place: an elementwise kernel (``Kernel.in_place``: add, mul, requantize,
  clamp, logistic, hard-swish, softmax) writes its output over a same-sized
  input that dies at that step, and a depthwise convolution runs as its
  ``in_place_variant``, overwriting its input channel by channel through a
  padded channel plane of scratch. Such a chain of tensors is one ``Buffer`` at
  one offset whose size changes over time (``pieces``): after a stride-2
  depthwise only the first quarter stays in use.

Scratch: a call whose kernel needs some (``Kernel.scratch``: the DSP paths'
weight tables and im2col windows, the in-place plane) gets a buffer of its own
that lives for that one step, planned like any tensor; the kernels keep nothing
on the stack.  Spare scratch (``Kernel.spare_scratch``: the portable kernels'
int16 copies of an input row) is granted after placement, only where the arena
already has the bytes free at that step: it never grows the arena.

Placement: several strategies (``STRATEGIES``) place the buffers; the smallest
arena wins. Branchy graphs also try other execution orders (``order_candidates``).
``validate_plan`` checks every plan in every build: pieces live at the same step
never overlap, all lie inside the arena, offsets keep the alignment, and every
in-place transition is one the kernel allows.
"""

from __future__ import annotations

import bisect
import heapq
from dataclasses import dataclass, field

from ..ir.program import KernelCall, Program
from ..kernels import KERNELS, Kernel

ALIGNMENT = 16  # bytes; enough for any SIMD load on Cortex-M and the host


class PlanError(AssertionError):
    """A plan that breaks the memory contract (a planner bug, never a user error)."""


@dataclass
class Piece:
    first: int
    last: int
    size: int

    def overlaps(self, other: Piece) -> bool:
        return self.first <= other.last and other.first <= self.last


@dataclass
class Buffer:
    """Bytes at one arena offset: a tensor, its views, and the tensors computed
    in place over it, one ``Piece`` (lifetime, size) per tensor in the chain."""

    name: str
    pieces: list[Piece]
    members: list[str] = field(default_factory=list)
    offset: int = -1

    @property
    def size(self) -> int:
        return max(p.size for p in self.pieces)

    @property
    def first(self) -> int:
        return self.pieces[0].first

    @property
    def last(self) -> int:
        return self.pieces[-1].last

    def conflicts(self, other: Buffer) -> bool:
        """True if the two buffers, at their offsets, share a byte at some step."""
        for a in self.pieces:
            for b in other.pieces:
                if a.overlaps(b) and self.offset < other.offset + b.size and other.offset < self.offset + a.size:
                    return True
        return False


@dataclass
class MemoryPlan:
    buffers: list[Buffer]
    arena_size: int
    lower_bound: int  # the largest sum of live bytes at any step, for this order and sharing
    lower_bound_no_inplace: int  # the same without in-place sharing
    strategy: str
    order: str  # which execution order won
    offsets: dict[str, int]  # tensor -> arena offset
    in_place: dict[int, int]  # call index -> index of the input it overwrites
    scratch: dict[int, tuple[int, int]]  # call index -> (offset, bytes) of the call's scratch
    tried: dict[str, int] = field(default_factory=dict)  # "order/strategy" -> arena
    alignment: int = ALIGNMENT


def _align(n: int, a: int) -> int:
    return (n + a - 1) // a * a


# ------------------------------------------------------------------ lifetimes
def _view_roots(calls: list[KernelCall], graph=None, offsets: dict[str, int] | None = None) -> dict[str, str]:
    """View -> the tensor whose bytes it is; with ``graph``, ``offsets`` gets
    each view's byte offset in its root (row views and joined bands)."""
    root: dict[str, str] = {}
    for call in calls:
        if call.kernel == "row_join":  # the bands are views of the joined tensor
            at = 0
            for band, n in zip(call.inputs, call.scalars):
                root[band] = call.outputs[0]
                if offsets is not None:
                    offsets[band] = at
                    at += n * graph.tensors[band].nbytes // graph.tensors[band].shape[1]
        elif call.is_alias:
            src = call.inputs[0]
            root[call.outputs[0]] = root.get(src, src)
            if offsets is not None and call.kernel == "row_view":
                t = graph.tensors[src]
                offsets[call.outputs[0]] = offsets.get(src, 0) + call.scalars[0] * t.nbytes // t.shape[1]
    # a band joined into a tensor that is itself a view
    for _ in range(len(root)):
        changed = False
        for view, r in list(root.items()):
            if r in root and root[r] != r:
                if offsets is not None:
                    offsets[view] = offsets.get(view, 0) + offsets.get(r, 0)
                root[view] = root[r]
                changed = True
        if not changed:
            break
    return root


def in_place_variant(call: KernelCall) -> Kernel | None:
    """The kernel that runs ``call`` over its input's own buffer, if its
    precondition holds (the in-place depthwise)."""
    kern = KERNELS.get(call.kernel)
    if kern is None or kern.in_place_variant is None or not kern.in_place_when(call.params):
        return None
    return KERNELS[kern.in_place_variant]


def kernel_of(call: KernelCall, in_place: bool) -> Kernel:
    """The kernel a call runs: its own, or its in-place variant when planned in place."""
    variant = in_place_variant(call) if in_place else None
    return variant or KERNELS[call.kernel]


def buffers_of(program: Program, calls: list[KernelCall], in_place: bool = True):
    """The buffers of ``calls`` in this order: (buffers, in-place decisions, scratch needs)."""
    graph = program.graph
    n = len(calls)
    root = _view_roots(calls)

    def owner(name: str) -> str:
        return root.get(name, name)

    # tensor-level lifetimes (a view extends its root's)
    first: dict[str, int] = {}
    last: dict[str, int] = {}
    for name in program.inputs:
        first[owner(name)] = 0
        last[owner(name)] = 0
    for step, call in enumerate(calls, start=1):
        for name in call.inputs:
            if name and not graph.tensors[name].is_const:
                last[owner(name)] = max(last.get(owner(name), step), step)
        for name in call.outputs:
            o = owner(name)
            first.setdefault(o, step)
            last[o] = max(last.get(o, step), step)
    for name in program.outputs:
        last[owner(name)] = n + 1

    members: dict[str, list[str]] = {}
    for name, t in graph.tensors.items():
        if not t.is_const and owner(name) in first:
            members.setdefault(owner(name), []).append(name)

    # in-place chains: the output root joins the chain of the input root it overwrites
    chain_of: dict[str, list[str]] = {o: [o] for o in first}
    decisions: dict[int, int] = {}
    scratch: dict[int, int] = {}
    # bands of rows (passes/patch.py) are parts of a bigger buffer: never in place
    bands = {o for c in calls if c.kernel == "row_view" for o in c.outputs}
    bands |= {i for c in calls if c.kernel == "row_join" for i in c.inputs}
    if in_place:
        for step, call in enumerate(calls, start=1):
            if call.is_alias or not call.outputs or call.outputs[0] in bands or bands.intersection(call.inputs):
                continue
            out = owner(call.outputs[0])
            if first.get(out) != step or len(chain_of[out]) > 1:
                continue
            for k in _in_place_candidates(call, graph):
                src = owner(call.inputs[k])
                chain = chain_of[src]
                if last[src] != step or chain[-1] != src or src == out:
                    continue
                # an in-place variant overwrites input 0 as it goes: no other input may share its bytes
                if not KERNELS[call.kernel].in_place and any(owner(i) == src for j, i in enumerate(call.inputs)
                                                             if i and j != k):
                    continue
                chain.append(out)
                chain_of[out] = chain
                decisions[step - 1] = k
                break
    for step, call in enumerate(calls, start=1):
        if not call.is_alias and call.kernel in KERNELS:
            size = kernel_of(call, step - 1 in decisions).scratch_bytes(call.params, program.dsp)
            if size:
                scratch[step - 1] = size

    buffers, seen = [], set()
    for o in first:
        chain = chain_of[o]
        if id(chain) in seen:
            continue
        seen.add(id(chain))
        pieces = []
        for k, t in enumerate(chain):
            start = first[t] if k == 0 else first[t] + 1  # the transition step belongs to the input
            size = graph.tensors[t].nbytes
            if start <= last[t]:
                pieces.append(Piece(start, last[t], size))
        buffers.append(Buffer(chain[0], pieces, [m for t in chain for m in members.get(t, [t])]))
    for k, size in scratch.items():
        buffers.append(Buffer(f"scratch:{k}", [Piece(k + 1, k + 1, size)], []))
    return buffers, decisions, scratch


def _in_place_candidates(call: KernelCall, graph) -> tuple[int, ...]:
    out_size = graph.tensors[call.outputs[0]].nbytes
    kern = KERNELS.get(call.kernel)
    if kern is not None and kern.in_place:
        return tuple(k for k in kern.in_place
                     if k < len(call.inputs) and call.inputs[k] and not graph.tensors[call.inputs[k]].is_const
                     and graph.tensors[call.inputs[k]].nbytes == out_size)
    if in_place_variant(call) and not graph.tensors[call.inputs[0]].is_const:
        return (0,)
    return ()


def live_bytes(buffers: list[Buffer]) -> list[int]:
    """Bytes live at each step (a running sum over piece starts and ends: linear
    in the pieces, however long they live)."""
    steps = max((b.last for b in buffers), default=-1) + 1
    delta = [0] * (steps + 1)
    for b in buffers:
        for p in b.pieces:
            delta[p.first] += p.size
            delta[p.last + 1] -= p.size
    live, total = [], 0
    for d in delta[:steps]:
        total += d
        live.append(total)
    return live


def lower_bound(buffers: list[Buffer]) -> int:
    return max(live_bytes(buffers), default=0)


# ------------------------------------------------------------------ placement
def _free_offsets(b: Buffer, placed: list[Buffer], alignment: int) -> list[int]:
    """Candidate offsets for b: 0 and the aligned ends of everything it must avoid,
    keeping those where b conflicts with nothing placed."""
    forbidden = []
    for p in placed:
        for pb in b.pieces:
            for pp in p.pieces:
                if pb.overlaps(pp):
                    forbidden.append((p.offset - pb.size, p.offset + pp.size))  # open interval
    candidates = sorted({0} | {_align(hi, alignment) for _, hi in forbidden})
    return [c for c in candidates if all(not (lo < c < hi) for lo, hi in forbidden)]


def _place_in_order(buffers: list[Buffer], alignment: int, best_fit: bool) -> int:
    placed: list[Buffer] = []
    top = 0
    for b in buffers:
        options = _free_offsets(b, placed, alignment)
        if best_fit:  # the offset that grows the arena least, then the lowest
            b.offset = min(options, key=lambda c: (max(top, c + b.size), c))
        else:
            b.offset = options[0]
        top = max(top, b.offset + b.size)
        placed.append(b)
    return _align(top, alignment)


def place_greedy_by_size(buffers, alignment):
    """Largest first, each at the lowest offset free during its lifetime."""
    return _place_in_order(sorted(buffers, key=lambda b: (-b.size, -(b.last - b.first), b.first)), alignment, False)


def place_greedy_by_size_best_fit(buffers, alignment):
    return _place_in_order(sorted(buffers, key=lambda b: (-b.size, -(b.last - b.first), b.first)), alignment, True)


def place_greedy_by_breadth(buffers, alignment):
    """Pisarchyk & Lee: visit steps from the widest (most live bytes) down; place each
    step's unplaced buffers largest first."""
    steps = max((b.last for b in buffers), default=0) + 1
    breadth = [0] * steps
    for b in buffers:
        for p in b.pieces:
            for s in range(p.first, p.last + 1):
                breadth[s] += p.size
    order, seen = [], set()
    for s in sorted(range(steps), key=lambda s: -breadth[s]):
        live = [b for b in buffers if id(b) not in seen and any(p.first <= s <= p.last for p in b.pieces)]
        for b in sorted(live, key=lambda b: -b.size):
            seen.add(id(b))
            order.append(b)
    return _place_in_order(order, alignment, False)


def place_first_fit_by_lifetime(buffers, alignment):
    return _place_in_order(sorted(buffers, key=lambda b: (b.first, -b.size)), alignment, False)


def place_longest_lived_first(buffers, alignment):
    return _place_in_order(sorted(buffers, key=lambda b: (-(b.last - b.first), -b.size)), alignment, True)


def place_linear_scan(buffers, alignment):
    """First fit in order of first use, by one sweep over the steps: a buffer's
    block (its largest piece, for its whole life) returns to a free list when it
    dies; the list is kept sorted and merged. Near-linear where the others are
    quadratic in the buffers live at once: what plans programs of thousands of
    calls (LARGE_PROGRAM)."""
    free: list[list[int]] = []  # [offset, size], sorted by offset, merged
    live: list[tuple[int, int, int]] = []  # (last step, offset, size)
    top = 0
    for b in sorted(buffers, key=lambda b: (b.first, -b.size)):
        while live and live[0][0] < b.first:
            _, off, size = heapq.heappop(live)
            _release(free, off, size)
        need = _align(b.size, alignment)
        for k, (off, size) in enumerate(free):
            if size >= need:
                b.offset = off
                if size == need:
                    del free[k]
                else:
                    free[k] = [off + need, size - need]
                break
        else:
            if free and free[-1][0] + free[-1][1] == top:  # grow the last free block into new space
                b.offset = free.pop()[0]
            else:
                b.offset = top
            top = max(top, b.offset + need)
        heapq.heappush(live, (b.last, b.offset, need))
    return _align(top, alignment)


def _release(free: list[list[int]], off: int, size: int) -> None:
    k = bisect.bisect(free, [off, size])
    free.insert(k, [off, size])
    if k + 1 < len(free) and free[k][0] + free[k][1] == free[k + 1][0]:
        free[k][1] += free.pop(k + 1)[1]
    if k > 0 and free[k - 1][0] + free[k - 1][1] == free[k][0]:
        free[k - 1][1] += free.pop(k)[1]


STRATEGIES = {
    "greedy-size": place_greedy_by_size,
    "greedy-size-best-fit": place_greedy_by_size_best_fit,
    "greedy-breadth": place_greedy_by_breadth,
    "first-fit-lifetime": place_first_fit_by_lifetime,
    "longest-lived-first": place_longest_lived_first,
    "linear-scan": place_linear_scan,
}
# A program with more calls than this is planned in its own order by linear-scan
# alone: the order search and the other strategies grow with the square (or the
# cube) of the buffers live at once, and no microcontroller model comes near it.
LARGE_PROGRAM = 1000


# ---------------------------------------------------------------- call order
def _units(calls: list[KernelCall]) -> list[list[KernelCall]]:
    """Calls grouped by the IR node they come from (a node's calls stay together)."""
    units: list[list[KernelCall]] = []
    for call in calls:
        if units and units[-1][0].node == call.node:
            units[-1].append(call)
        else:
            units.append([call])
    return units


def order_candidates(program: Program) -> dict[str, list[KernelCall]]:
    """Execution orders worth planning: the model's own, and for graphs with
    branches a memory-greedy topological order (run next the ready node that
    leaves the fewest live bytes, preferring one that frees its inputs)."""
    calls = list(program.calls)
    orders = {"model": calls}
    units = _units(calls)
    graph = program.graph
    produced_by: dict[str, int] = {}
    for u, unit in enumerate(units):
        for call in unit:
            for o in call.outputs:
                produced_by[o] = u
    deps = [{produced_by[i] for c in unit for i in c.inputs if i in produced_by} - {u} for u, unit in enumerate(units)]
    if all(len(d) <= 1 for d in deps) and len({frozenset(d) for d in deps}) == len(deps):
        return orders  # a chain: one order only
    readers: dict[str, int] = {}
    for unit in units:
        for i in {i for c in unit for i in c.inputs if i and not graph.tensors[i].is_const}:
            readers[i] = readers.get(i, 0) + 1
    outputs = set(program.outputs)

    done: set[int] = set()
    remaining = dict(readers)
    order: list[int] = []
    while len(order) < len(units):
        ready = [u for u in range(len(units)) if u not in done and deps[u] <= done]

        def effect(u: int) -> tuple[int, int]:
            unit = units[u]
            grows = sum(graph.tensors[o].nbytes for c in unit for o in c.outputs if not c.is_alias)
            frees = 0
            for i in {i for c in unit for i in c.inputs if i and not graph.tensors[i].is_const}:
                if remaining.get(i) == 1 and i not in outputs:
                    frees += graph.tensors[i].nbytes
            return grows - frees, u

        u = min(ready, key=effect)
        done.add(u)
        order.append(u)
        for i in {i for c in units[u] for i in c.inputs if i and not graph.tensors[i].is_const}:
            remaining[i] = remaining.get(i, 0) - 1
    greedy = [c for u in order for c in units[u]]
    if greedy != calls:
        orders["memory-greedy"] = greedy
    best = _min_peak_order(program, units, deps)
    if best is not None:
        searched = [c for u in best for c in units[u]]
        if all(searched != o for o in orders.values()):
            orders["min-peak"] = searched
    return orders


def _min_peak_order(program: Program, units, deps, max_states: int = 2000) -> list[int] | None:
    """The topological order of ``units`` with the smallest peak of live bytes
    (views free, no in-place sharing), by dynamic programming over the sets of
    units already run: what is live next depends only on that set. None when the
    graph has more than ``max_states`` such sets (then the greedy order stands)."""
    graph = program.graph
    root = _view_roots(program.calls)

    def own(t: str) -> str:
        return root.get(t, t)

    n = len(units)
    reads = [{own(i) for c in unit for i in c.inputs if i and not graph.tensors[i].is_const} for unit in units]
    writes = [{own(o) for c in unit for o in c.outputs} for unit in units]
    size = {t: graph.tensors[t].nbytes for w in writes for t in w}
    size.update({own(t): graph.tensors[own(t)].nbytes for t in program.inputs})
    readers: dict[str, set[int]] = {}
    for u, r in enumerate(reads):
        for t in r:
            readers.setdefault(t, set()).add(u)
    keep = {own(t) for t in program.outputs}
    inputs = {own(t) for t in program.inputs}

    def needed(t: str, done: frozenset) -> bool:
        return t in keep or not readers.get(t, set()) <= done

    # per set of units run: (peak so far, the order, the tensors live after it);
    # running u then holds those, u's outputs and u's inputs
    start = frozenset(t for t in inputs if needed(t, frozenset()))
    best: dict[frozenset, tuple[int, list[int], frozenset]] = {frozenset(): (0, [], start)}
    frontier = [frozenset()]
    for _ in range(n):
        nxt: dict[frozenset, tuple[int, list[int], frozenset]] = {}
        for done in frontier:
            peak, order, live = best[done]
            for u in range(n):
                if u in done or not deps[u] <= done:
                    continue
                key = done | {u}
                during = live | writes[u] | reads[u]
                cand = max(peak, sum(size[t] for t in during))
                if key not in nxt or cand < nxt[key][0]:
                    nxt[key] = (cand, order + [u], frozenset(t for t in live | writes[u] if needed(t, key)))
        if len(nxt) > max_states:
            return None
        best.update(nxt)
        frontier = list(nxt)
    return best[frozenset(range(n))][1]


# ------------------------------------------------------------------- planning
def _plan_for(program: Program, calls: list[KernelCall], strategy: str, in_place: bool, alignment: int):
    buffers, decisions, scratch = buffers_of(program, calls, in_place)
    arena = STRATEGIES[strategy](buffers, alignment)
    return buffers, decisions, scratch, arena


def arena_size(program: Program, strategy: str, in_place: bool = True, alignment: int = ALIGNMENT) -> int:
    """The arena one strategy gives for the program's own order, and nothing else
    (no validation, no lower bounds): the patch search's quick measure."""
    return _plan_for(program, list(program.calls), strategy, in_place, alignment)[3]


def plan_memory(program: Program, strategy: str | None = None, in_place: bool = True,
                alignment: int = ALIGNMENT, reorder: bool = True) -> MemoryPlan:
    """Plan the program's memory; with ``strategy`` None every strategy and every
    order candidate is tried and the smallest arena kept. The chosen order is
    written back to ``program.calls``. ``reorder=False`` keeps the program's own
    order (a training step, whose parameter updates must follow their readers)."""
    large = len(program.calls) > LARGE_PROGRAM
    strategies = [strategy] if strategy else ["linear-scan"] if large else list(STRATEGIES)
    tried: dict[str, int] = {}
    best = None
    candidates = order_candidates(program) if reorder and not large else {"model": list(program.calls)}
    for order_name, calls in candidates.items():
        for s in strategies:
            buffers, decisions, scratch, arena = _plan_for(program, calls, s, in_place, alignment)
            tried[f"{order_name}/{s}"] = arena
            if best is None or arena < best[0]:
                best = (arena, order_name, s, calls, buffers, decisions, scratch)
    arena, order_name, s, calls, buffers, decisions, scratch = best
    program.calls[:] = calls
    within: dict[str, int] = {}
    _view_roots(calls, program.graph, within)
    offsets = {m: b.offset + within.get(m, 0) for b in buffers for m in b.members}
    at = {b.name: b.offset for b in buffers}
    scratch_at = {k: (at[f"scratch:{k}"], size) for k, size in scratch.items()}
    _grant_spare_scratch(program, calls, buffers, decisions, scratch_at, arena, alignment)
    no_in_place, _, _ = buffers_of(program, calls, in_place=False)
    plan = MemoryPlan(buffers, arena, lower_bound(buffers), lower_bound(no_in_place), s, order_name,
                      offsets, decisions, scratch_at, tried, alignment)
    validate_plan(plan, program)
    return plan


def _grant_spare_scratch(program: Program, calls: list[KernelCall], buffers: list[Buffer], decisions: dict,
                         scratch_at: dict[int, tuple[int, int]], arena: int, alignment: int) -> None:
    """Give each call whose kernel takes spare scratch the lowest aligned free
    bytes of the arena at its step, when it has them (a buffer of that one step)."""
    wants = {}
    for k, call in enumerate(calls):
        if not call.is_alias and call.kernel in KERNELS and k not in scratch_at:
            want = kernel_of(call, k in decisions).spare_scratch_bytes(call.params, program.dsp)
            if want > 0:
                wants[k + 1] = want
    if not wants:
        return
    busy: dict[int, list[tuple[int, int]]] = {step: [] for step in wants}
    for b in buffers:  # one pass over the pieces (a large program has thousands)
        for piece in b.pieces:
            for step in range(piece.first, piece.last + 1) if piece.last - piece.first < len(wants) else wants:
                if step in busy and piece.first <= step <= piece.last:
                    busy[step].append((b.offset, b.offset + piece.size))
    for step, want in wants.items():
        at = 0
        for lo, hi in sorted(busy[step]):
            if at + want <= lo:
                break
            at = max(at, _align(hi, alignment))
        if at + want <= arena:
            buffers.append(Buffer(f"scratch:{step - 1}", [Piece(step, step, want)], [], offset=at))
            scratch_at[step - 1] = (at, want)


def validate_plan(plan: MemoryPlan, program: Program) -> None:
    """Raise PlanError unless the plan is safe (run on every build)."""
    for b in plan.buffers:
        if b.offset < 0 or b.offset % plan.alignment:
            raise PlanError(f"buffer {b.name!r} at offset {b.offset} breaks the {plan.alignment}-byte alignment")
        if b.offset + b.size > plan.arena_size:
            raise PlanError(f"buffer {b.name!r} ends at {b.offset + b.size}, past the arena ({plan.arena_size} bytes)")
        for earlier, later in zip(b.pieces, b.pieces[1:]):
            if later.first != earlier.last + 1:
                raise PlanError(f"buffer {b.name!r}: in-place pieces do not follow each other")
    ordered = sorted(plan.buffers, key=lambda b: b.offset)
    for i, a in enumerate(ordered):
        for b in ordered[i + 1:]:
            if b.offset >= a.offset + a.size:
                break
            if a.conflicts(b):
                raise PlanError(f"buffers {a.name!r} at {a.offset} and {b.name!r} at {b.offset} overlap while both live")
    graph = program.graph
    for k, call in enumerate(program.calls):
        names = [t for t in (*call.inputs, *call.outputs) if t and not graph.tensors[t].is_const]
        for t in names:
            if t not in plan.offsets:
                raise PlanError(f"tensor {t!r} has no place in the arena")
        if not call.outputs:  # a parameter update: writes only persistent state
            continue
        out = call.outputs[0]
        for t in call.inputs:
            if not t or graph.tensors[t].is_const or call.is_alias:
                continue
            lo, hi = plan.offsets[t], plan.offsets[t] + graph.tensors[t].nbytes
            olo, ohi = plan.offsets[out], plan.offsets[out] + graph.tensors[out].nbytes
            in_place_input = call.inputs[plan.in_place[k]] if k in plan.in_place else None
            if lo < ohi and olo < hi and plan.offsets[t] != plan.offsets.get(in_place_input, -1):
                raise PlanError(f"call {k} ({call.kernel}) writes {out!r} over its input {t!r} without an in-place kernel")
        if k in plan.in_place:
            j = plan.in_place[k]
            if plan.offsets[call.inputs[j]] != plan.offsets[out]:
                raise PlanError(f"call {k} ({call.kernel}) is in place but its output is not at its input's offset")
            variant = in_place_variant(call)
            if variant is not None:
                if plan.scratch.get(k, (0, 0))[1] < variant.scratch_bytes(call.params, program.dsp):
                    raise PlanError(f"call {k}: {variant.name} without its scratch")
            elif j not in KERNELS[call.kernel].in_place:
                raise PlanError(f"call {k}: {call.kernel} cannot run in place")
        if not call.is_alias and call.kernel in KERNELS:
            kernel = kernel_of(call, k in plan.in_place)
            need = kernel.scratch_bytes(call.params, program.dsp)
            have = plan.scratch.get(k, (0, 0))[1]
            spare = kernel.spare_scratch_bytes(call.params, program.dsp)
            if have != need and not (need == 0 and have == spare):
                raise PlanError(f"call {k} ({call.kernel}) has {have} B of scratch, needs {need}")


def peak_step(plan: MemoryPlan, program: Program) -> tuple[int, list[str]]:
    """The step where the most bytes are live, and the IR nodes of the calls there."""
    live = live_bytes(plan.buffers)
    step = max(range(len(live)), key=lambda s: live[s]) if live else 0
    nodes = [program.calls[step - 1].node] if 1 <= step <= len(program.calls) else []
    return step, nodes
