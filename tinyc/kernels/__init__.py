"""The int8 kernels: numpy reference functions, one per C kernel in runtime_c.

``KERNELS`` maps a kernel name to its numpy function and to the shape of its C
call. The numpy functions are the executable specification: the int8 reference
interpreter runs them, and the unit tests hold the C kernels to them bit for bit.

C call forms (``form``), after the optional ``const <struct> *params`` argument:
  "weights":  in, weights, bias (or NULL), mult, shift, out
  "unary":    in, out
  "binary":   in1, in2, out
  "scalars":  the call's scalars, then in, out        (clamp: size, lo, hi; copy: size)
  "concat":   outer, n, {ins...}, {inner...}, out
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from . import activation, conv, data, elementwise, pool


@dataclass(frozen=True)
class Kernel:
    name: str
    form: str
    spec: Callable
    has_params: bool = True

    @property
    def c_name(self) -> str:
        return f"tinyc_{self.name}"


def _k(name, form, spec, has_params=True):
    return name, Kernel(name, form, spec, has_params)


KERNELS: dict[str, Kernel] = dict([
    _k("conv2d_s8", "weights", conv.conv2d_s8),
    _k("conv2d_1x1_s8", "weights", conv.conv2d_1x1_s8),
    _k("depthwise_conv2d_s8", "weights", conv.depthwise_conv2d_s8),
    _k("fully_connected_s8", "weights", conv.fully_connected_s8),
    _k("max_pool_s8", "unary", pool.max_pool_s8),
    _k("avg_pool_s8", "unary", pool.avg_pool_s8),
    _k("mean_s8", "unary", pool.mean_s8),
    _k("add_s8", "binary", elementwise.add_s8),
    _k("mul_s8", "binary", elementwise.mul_s8),
    _k("requantize_s8", "unary", activation.requantize_s8),
    _k("softmax_s8", "unary", activation.softmax_s8),
    _k("logistic_s8", "unary", activation.logistic_s8),
    _k("hard_swish_s8", "unary", activation.hard_swish_s8),
    _k("pad_s8", "unary", data.pad_s8),
    _k("resize_nearest_s8", "unary", data.resize_nearest_s8),
    _k("transpose_s8", "unary", data.transpose_s8),
    _k("clamp_s8", "scalars", lambda size, lo, hi, x: activation.clamp_s8(lo, hi, x), has_params=False),
    _k("copy_s8", "scalars", lambda size, x: data.copy_s8(x), has_params=False),
    _k("concat_s8", "concat", lambda outer, n, *rest: data.concat_s8(outer, rest[n:], rest[:n]), has_params=False),
])


def run_kernel(kernel: str, params, scalars: tuple[int, ...], inputs: list[np.ndarray | None]) -> np.ndarray:
    """Execute one kernel call with the numpy reference."""
    k = KERNELS[kernel]
    if k.form == "concat":
        return k.spec(*scalars[:2], *scalars[2:], *inputs)
    if k.form == "scalars":
        return k.spec(*scalars, *inputs)
    return k.spec(params, *inputs)
