"""Memory planning: where every int8 tensor of a program lives.

Graph inputs and outputs live in the caller's buffers (``NAME_invoke(input,
output)``); every other activation lives in one static arena at an offset fixed
here. A Reshape is a view: its output shares its input's bytes, so the two form
one buffer whose lifetime covers both. ``validate_plan`` checks every plan, in
every build: buffers that are live at the same step never overlap, all lie in
the arena, and offsets keep the alignment.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..ir.program import Program

ALIGNMENT = 16  # bytes; enough for any SIMD load on Cortex-M and the host


class PlanError(AssertionError):
    """A plan that breaks the memory contract (a planner bug, never a user error)."""


@dataclass
class Buffer:
    name: str  # the tensor that owns the bytes (the root of a Reshape chain)
    size: int  # bytes
    first: int  # step that writes it
    last: int  # last step that reads it
    members: list[str] = field(default_factory=list)  # tensors stored here (root first)
    offset: int = -1

    def overlaps_in_time(self, other: Buffer) -> bool:
        return self.first <= other.last and other.first <= self.last


@dataclass
class MemoryPlan:
    buffers: list[Buffer]  # arena buffers
    arena_size: int
    lower_bound: int  # the largest sum of live bytes at any step, for this order
    strategy: str
    # tensor -> ("arena", offset) | ("input", k) | ("output", k): k is the byte
    # offset inside the caller's input / output buffer
    storage: dict[str, tuple[str, int]]
    alignment: int = ALIGNMENT


def _align(n: int, a: int) -> int:
    return (n + a - 1) // a * a


def buffers_of(program: Program) -> tuple[list[Buffer], dict[str, tuple[str, int]]]:
    """Lifetimes over the call order; alias chains merged; external tensors set aside."""
    graph = program.graph
    root: dict[str, str] = {}
    for call in program.calls:
        if call.is_alias:
            src = call.inputs[0]
            root[call.outputs[0]] = root.get(src, src)

    def owner(name: str) -> str:
        return root.get(name, name)

    external: dict[str, tuple[str, int]] = {}
    offset = 0
    for name in program.inputs:
        external[owner(name)] = ("input", offset)
        offset += graph.tensors[name].size
    offset = 0
    for name in program.outputs:
        o = owner(name)
        if o in external:
            raise PlanError(f"tensor {name!r} is both a program input and output; lowering must copy it")
        external[o] = ("output", offset)
        offset += graph.tensors[name].size

    by_owner: dict[str, Buffer] = {}
    for step, call in enumerate(program.calls):
        for name in call.outputs:
            o = owner(name)
            b = by_owner.get(o)
            if b is None:
                b = by_owner[o] = Buffer(o, graph.tensors[o].size, step, step, [o])
            if name not in b.members:
                b.members.append(name)
            b.last = max(b.last, step)
        for name in call.inputs:
            if not name or graph.tensors[name].is_const:
                continue
            o = owner(name)
            if o in by_owner:
                by_owner[o].last = max(by_owner[o].last, step)

    storage: dict[str, tuple[str, int]] = {}
    for name, t in graph.tensors.items():
        if t.is_const:
            continue
        o = owner(name)
        if o in external:
            storage[name] = external[o]
    buffers = [b for o, b in by_owner.items() if o not in external]
    return buffers, storage


def lower_bound(buffers: list[Buffer]) -> int:
    if not buffers:
        return 0
    steps = max(b.last for b in buffers) + 1
    live = [0] * steps
    for b in buffers:
        for s in range(b.first, b.last + 1):
            live[s] += b.size
    return max(live)


def place_greedy_by_size(buffers: list[Buffer], alignment: int) -> int:
    """Largest buffer first, each at the lowest aligned offset that is free
    during its lifetime (first fit). Returns the arena size."""
    placed: list[Buffer] = []
    for b in sorted(buffers, key=lambda b: (-b.size, b.first, b.name)):
        busy = sorted((p.offset, p.offset + p.size) for p in placed if p.overlaps_in_time(b))
        offset = 0
        for start, end in busy:
            if offset + b.size <= start:
                break
            offset = max(offset, _align(end, alignment))
        b.offset = offset
        placed.append(b)
    return _align(max((b.offset + b.size for b in buffers), default=0), alignment)


STRATEGIES = {"greedy-size": place_greedy_by_size}


def plan_memory(program: Program, strategy: str = "greedy-size", alignment: int = ALIGNMENT) -> MemoryPlan:
    buffers, storage = buffers_of(program)
    arena = STRATEGIES[strategy](buffers, alignment)
    for b in buffers:
        for name in b.members:
            storage[name] = ("arena", b.offset)
    plan = MemoryPlan(buffers, arena, lower_bound(buffers), strategy, storage, alignment)
    validate_plan(plan, program)
    return plan


def validate_plan(plan: MemoryPlan, program: Program) -> None:
    """Raise PlanError unless the plan is safe (run on every build)."""
    for b in plan.buffers:
        if b.offset < 0 or b.offset % plan.alignment:
            raise PlanError(f"buffer {b.name!r} at offset {b.offset} breaks the {plan.alignment}-byte alignment")
        if b.offset + b.size > plan.arena_size:
            raise PlanError(f"buffer {b.name!r} ends at {b.offset + b.size}, past the arena ({plan.arena_size} bytes)")
    ordered = sorted(plan.buffers, key=lambda b: b.offset)
    for i, a in enumerate(ordered):
        for b in ordered[i + 1:]:
            if b.offset >= a.offset + a.size:
                break
            if a.overlaps_in_time(b):
                raise PlanError(
                    f"buffers {a.name!r} [{a.offset}, {a.offset + a.size}) steps {a.first}-{a.last} and "
                    f"{b.name!r} [{b.offset}, {b.offset + b.size}) steps {b.first}-{b.last} overlap"
                )
    graph = program.graph
    for call in program.calls:
        for name in (*call.inputs, *call.outputs):
            if name and not graph.tensors[name].is_const and name not in plan.storage:
                raise PlanError(f"tensor {name!r} has no storage")
