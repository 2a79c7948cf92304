"""An int8 program: the graph lowered to a list of kernel calls.

Lowering (passes/int8.py) turns every IR node into one or more ``KernelCall``s
whose parameters (multipliers, shifts, offsets, clamp bounds) are fully computed.
The int8 reference interpreter executes the calls with the numpy kernels in
tinyc/kernels; the code generator prints the same calls as C. So both engines
run exactly the same arithmetic on exactly the same constants.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .graph import Graph, Node

VIEW_KERNELS = ("alias", "row_view", "row_join")  # calls without code (KernelCall.is_alias)


@dataclass
class KernelCall:
    kernel: str  # a key of tinyc.kernels.KERNELS, e.g. "conv2d_s8"
    params: object | None  # a tinyc.kernels.params record, or None
    inputs: list[str | None]  # tensor names in the kernel's argument order (None: NULL)
    outputs: list[str]
    node: str  # the IR node this call came from (comments, reports)
    scalars: tuple[int, ...] = ()  # leading integer arguments (clamp, concat, copy)
    # A kernel called with an explicit argument list (the training kernels,
    # kernels.train): ``args`` holds, in C order before the outputs, ints, floats,
    # parameter records, ``Ref``s to tensors and ``Runtime`` values; ``state``
    # names the persistent tensors it updates in place (after the outputs).
    # ``inputs`` then lists the tensors among the args (for lifetimes).
    args: tuple = ()
    state: tuple[str, ...] = ()

    @property
    def is_alias(self) -> bool:
        """A view, no code: "alias" (Reshape: the output is the input's bytes),
        "row_view" (the output is rows scalars[0] .. + scalars[1] of the NHWC
        input) or "row_join" (the inputs are the output's consecutive bands of
        rows, scalars[k] rows each, written in place: passes/patch.py)."""
        return self.kernel in VIEW_KERNELS


@dataclass(frozen=True)
class Ref:
    """A tensor argument of a kernel called by argument list."""

    name: str


@dataclass(frozen=True)
class Runtime:
    """A value the entry point receives: "label", "lr", "loss" (out) or "rng" (state)."""

    name: str


@dataclass
class Program:
    graph: Graph  # int8-typed graph holding every tensor the calls name
    calls: list[KernelCall]
    inputs: list[str]  # int8 tensors the caller provides, in graph input order
    outputs: list[str]  # int8 tensors the program produces
    # Float ops after the int8 outputs (e.g. a LogSoftmax after a Dequantize,
    # which TFLite runs in float): run on the host after dequantizing.
    float_tail: list[Node] = field(default_factory=list)
    # Plan the scratch of the kernels' DSP paths (Cortex-M4 / M7 / M33 / M55):
    # generated C compiled for such a core takes them. False only for a target
    # known to lack the extension (a Cortex-M0+ / M3 board), which saves the bytes.
    dsp: bool = True
