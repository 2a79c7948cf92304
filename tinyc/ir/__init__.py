"""tinyc's intermediate representation: typed tensors, nodes with dataclass
attributes, graphs in topological order."""

from .graph import Graph, GraphError, Node
from .tensor import QuantParams, Tensor

__all__ = ["Graph", "GraphError", "Node", "QuantParams", "Tensor"]
