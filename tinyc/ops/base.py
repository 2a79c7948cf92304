"""What an op is: one class per op that holds everything tinyc knows about it.

An OpDef gives, in one place: its attribute dataclass, its shape rule (``infer``),
its float reference (``ref``), its cost (``macs``), and how it is rewritten when a
layout pass moves a Transpose across it (``permuted``). Later stages (int8
reference, C emission, scratch size, the gradient rule ``backward``) extend the
same classes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ..errors import UnsupportedError
from ..ir import Graph, Node

_REGISTRY: dict[str, OpDef] = {}


def register(cls):
    """Class decorator: instantiate the OpDef and make it findable by name."""
    inst = cls()
    if inst.name in _REGISTRY:
        raise AssertionError(f"op {inst.name} registered twice")
    _REGISTRY[inst.name] = inst
    return cls


def get_op(name: str) -> OpDef:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnsupportedError(f"tinyc has no op named {name!r}") from None


def all_ops() -> dict[str, OpDef]:
    return dict(_REGISTRY)


@dataclass(frozen=True)
class Clamp:
    """A fused activation as output bounds (ReLU = [0, inf), ReLU6 = [0, 6])."""

    lo: float = -np.inf
    hi: float = np.inf

    @property
    def is_identity(self) -> bool:
        return self.lo == -np.inf and self.hi == np.inf

    def then(self, other: Clamp) -> Clamp:
        """This clamp followed by ``other``: the intersection of the two ranges."""
        lo, hi = max(self.lo, other.lo), min(self.hi, other.hi)
        if lo > hi:  # the second clamp maps everything to one value
            lo = hi = other.lo if self.hi < other.lo else other.hi
        return Clamp(lo, hi)

    def apply(self, x: np.ndarray) -> np.ndarray:
        if self.is_identity:
            return x
        return np.clip(x, self.lo, self.hi).astype(x.dtype)

    def __str__(self) -> str:
        return "none" if self.is_identity else f"[{self.lo:g}, {self.hi:g}]"


NO_CLAMP = Clamp()


class OpDef:
    """Base class. Subclasses set ``name`` and ``attrs_type`` and override methods."""

    name: str = ""
    attrs_type: type | None = None
    # True when the op works elementwise on its (broadcast) inputs, so that any
    # layout permutation of all inputs commutes with it.
    elementwise: bool = False
    # TFLite's rule for the op's int8 output parameters: "input" (it moves bytes:
    # the output keeps the input's), a fixed (scale, zero point), or None (any).
    int8_output: str | tuple[float, int] | None = None

    @property
    def has_int8_kernel(self) -> bool:
        return type(self).lower is not OpDef.lower

    def infer(self, node: Node, graph: Graph) -> list[tuple[tuple[int, ...], type]]:
        raise NotImplementedError

    def ref(self, node: Node, inputs: list[np.ndarray | None]) -> list[np.ndarray]:
        raise NotImplementedError

    def macs(self, node: Node, graph: Graph) -> int:
        return 0

    def lower(self, node: Node, graph: Graph) -> list:
        """The int8 kernel calls (tinyc.ir.program.KernelCall) that compute this node,
        with every parameter computed the way TFLite Micro's Prepare does."""
        raise UnsupportedError(
            f"node {node.name!r} ({self.name}) has no int8 kernel in tinyc yet; "
            "compile the model in float, or replace the op before export"
        )

    def backward(self, node: Node, graph: Graph, b) -> None:
        """The gradient rule: emit, through the builder ``b`` (train.autodiff.Backward),
        the nodes that turn the gradient of this node's output (``b.grad``) into the
        gradients of its updated parameters (``b.param_grad``) and of the inputs that
        need one (``b.needs`` / ``b.add``). Only what the update set needs is emitted."""
        raise UnsupportedError(
            f"node {node.name!r} ({self.name}) has no gradient rule in tinyc yet; update only layers after it "
            "(e.g. --update head)"
        )

    def permuted(self, node: Node, graph: Graph, perm: tuple[int, ...]):
        """Attributes for running this node on inputs transposed by ``perm``.

        If every data input x satisfies x = x'.transpose(perm), the node with the
        returned attributes maps x' to y' with y = y'.transpose(perm). Returns None
        when the op cannot be moved across a Transpose.
        """
        if self.elementwise:
            return node.attrs
        return None

    def permuted_output(self, node: Node, graph: Graph, perm: tuple[int, ...]) -> tuple[int, ...]:
        """The Transpose that follows the node after ``permuted`` (same perm unless the
        op changes the rank)."""
        return perm


def shape_of(graph: Graph, name: str) -> tuple[int, ...]:
    return graph.tensors[name].shape


def dtype_of(graph: Graph, name: str):
    return graph.tensors[name].dtype


def with_clamp(attrs, clamp: Clamp):
    """attrs with its fused clamp narrowed by ``clamp``."""
    return replace(attrs, act=attrs.act.then(clamp))
