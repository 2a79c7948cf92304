"""Tensors and their quantization parameters."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

# Storage types a tensor may have. Activations are float32 before quantization and
# int8 after; int32 holds biases; int64 holds shape constants while importing.
DTYPES = (np.float32, np.int8, np.uint8, np.int16, np.int32, np.int64, np.bool_)


@dataclass
class QuantParams:
    """Affine quantization: real = scale * (q - zero_point).

    Per-tensor when ``axis`` is None (scale and zero_point are 0-d); per-axis
    otherwise (1-d arrays as long as the tensor's ``axis`` dimension).
    """

    scale: np.ndarray
    zero_point: np.ndarray
    axis: int | None = None

    def __post_init__(self):
        self.scale = np.asarray(self.scale, dtype=np.float32)
        self.zero_point = np.asarray(self.zero_point, dtype=np.int32)
        if self.axis is None:
            self.scale = self.scale.reshape(())
            self.zero_point = self.zero_point.reshape(())

    @property
    def per_axis(self) -> bool:
        return self.axis is not None

    def _broadcast(self, values: np.ndarray, rank: int) -> np.ndarray:
        if self.axis is None:
            return values
        shape = [1] * rank
        shape[self.axis] = -1
        return values.reshape(shape)

    def dequantize(self, q: np.ndarray) -> np.ndarray:
        scale = self._broadcast(self.scale, q.ndim)
        zp = self._broadcast(self.zero_point, q.ndim)
        return ((q.astype(np.int64) - zp) * scale.astype(np.float64)).astype(np.float32)

    def quantize(self, x: np.ndarray, dtype) -> np.ndarray:
        """Round half to even, as ONNX QuantizeLinear specifies."""
        info = np.iinfo(dtype)
        scale = self._broadcast(self.scale, x.ndim)
        zp = self._broadcast(self.zero_point, x.ndim)
        q = np.rint(x.astype(np.float32) / scale) + zp
        return np.clip(q, info.min, info.max).astype(dtype)

    def permuted(self, perm) -> QuantParams:
        """The same parameters for the tensor transposed by ``perm``."""
        if self.axis is None:
            return self
        return QuantParams(self.scale, self.zero_point, list(perm).index(self.axis))

    def same_as(self, other: QuantParams | None) -> bool:
        return (
            other is not None
            and self.axis == other.axis
            and np.array_equal(self.scale, other.scale)
            and np.array_equal(self.zero_point, other.zero_point)
        )

    def describe(self) -> str:
        if self.axis is None:
            return f"s={float(self.scale):.6g} zp={int(self.zero_point)}"
        return f"per-axis({self.axis}) x{self.scale.size}"


@dataclass
class Tensor:
    """A named value: an activation (data is None) or a constant.

    A quantized constant keeps its integer ``data`` and its ``quant`` parameters;
    ``float_value()`` gives its real meaning.
    """

    name: str
    shape: tuple[int, ...]
    dtype: type = np.float32
    data: np.ndarray | None = None
    quant: QuantParams | None = None
    attrs: dict = field(default_factory=dict)
    # What the value is, apart from how it is stored (``dtype``): None for the
    # usual (an activation, or a constant when it has ``data``); "trainable" for a
    # parameter a training step updates and "state" for a training step's own
    # persistent values (e.g. the residues of int8 weights). Both are constants
    # of the graph (they have ``data``) that the generated C keeps in SRAM.
    kind: str | None = None

    def __post_init__(self):
        self.shape = tuple(int(d) for d in self.shape)
        self.dtype = np.dtype(self.dtype).type
        if self.data is not None:
            self.data = np.asarray(self.data, dtype=self.dtype).reshape(self.shape)

    @property
    def is_const(self) -> bool:
        return self.data is not None

    @property
    def size(self) -> int:
        return int(math.prod(self.shape))  # Python ints: no overflow, and the planner asks often

    @property
    def nbytes(self) -> int:
        return self.size * np.dtype(self.dtype).itemsize

    def float_value(self) -> np.ndarray:
        """The real-valued meaning of a constant."""
        assert self.data is not None, f"{self.name} is not a constant"
        if self.quant is not None:
            return self.quant.dequantize(self.data)
        if self.dtype in (np.float32,):
            return self.data
        return self.data.astype(np.float32) if np.issubdtype(self.dtype, np.floating) else self.data

    def describe(self) -> str:
        kind = "const " if self.is_const else ""
        q = f" [{self.quant.describe()}]" if self.quant is not None else ""
        return f"{kind}{np.dtype(self.dtype).name}{list(self.shape)}{q}"
