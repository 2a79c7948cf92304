"""A small pass manager: an ordered list of plain functions Graph -> None.

After every pass the graph is re-validated, so a pass that breaks an invariant is
named at once; with ``dump`` the graph is printed after each pass (``--dump-ir``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..ir import Graph


@dataclass
class Pass:
    name: str
    run: Callable[[Graph], object]


class PassManager:
    def __init__(self, passes: list[Pass], dump: Callable[[str], None] | None = None):
        self.passes = passes
        self.dump = dump

    def run(self, graph: Graph) -> Graph:
        if self.dump:
            self.dump(f"=== after import ===\n{graph.dump()}\n")
        for p in self.passes:
            p.run(graph)
            graph.remove_unused()
            graph.toposort()
            graph.validate()
            if self.dump:
                self.dump(f"=== after {p.name} ===\n{graph.dump()}\n")
        return graph


def canonicalize(graph: Graph, dump: Callable[[str], None] | None = None) -> Graph:
    """The standard pipeline every model goes through after import."""
    from . import fold, layout, patterns, qdq

    passes = [
        Pass("fold-qdq", qdq.fold_qdq),
        Pass("fuse-layer-norm", patterns.fuse_layer_norm),  # before layout moves its axis
        Pass("axis-permutations", patterns.axis_permutations),
        Pass("eliminate-transposes", layout.eliminate_transposes),
        Pass("fold-constants", fold.fold_constants),
        Pass("divide-by-constants", patterns.divide_by_constants),
        Pass("simplify-reshapes", fold.simplify_reshapes),
        Pass("fold-pad", fold.fold_pad),
        Pass("fold-scale-shift", fold.fold_scale_shift),
        Pass("fuse-activations", fold.fuse_activations),
        Pass("fuse-elementwise-functions", patterns.fuse_elementwise_functions),
        Pass("eliminate-transposes", layout.eliminate_transposes),
        Pass("simplify-reshapes", fold.simplify_reshapes),
    ]
    return PassManager(passes, dump).run(graph)
