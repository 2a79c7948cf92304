"""The kernels: numpy reference functions, one per C kernel in runtime_c, and
one descriptor per kernel (``KERNELS``) that lowering, the memory planner, the
reference interpreter and the code generator all read.

A descriptor says how the C kernel is called (``form``: the roles of its
arguments), which numpy function specifies it (``spec``: the executable
specification; the unit tests hold the C kernels to it bit for bit), which
inputs its output may overwrite (``in_place``), which variant runs over its
input's own buffer and when (``in_place_variant`` / ``in_place_when``), and how
much arena scratch a call needs (``scratch``: bytes from the call's parameters
and whether the target core has the DSP extension; the C kernel then takes
``void *scratch, int32_t scratch_bytes`` last and reports the same size from
``NAME_scratch_bytes``).

C call forms (``form``), after the optional ``const <struct> *params`` argument:
  "weights":  in, weights, bias (or NULL), mult, shift, out
  "weights_in_place": buf (input and output), weights, bias (or NULL), mult, shift
  "unary":    in, out
  "binary":   in1, in2, out
  "ternary":  in1, in2, in3, out
  "scalars":  the call's scalars, then in, out        (clamp: size, lo, hi; copy: size)
  "concat":   outer, n, {ins...}, {inner...}, out
  "args":     the call's ``args`` in order, then its outputs and state (the
              training kernels, tinyc/train.h)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from . import activation, conv, data, elementwise, norm, pool, train


@dataclass(frozen=True)
class Kernel:
    name: str
    form: str
    spec: Callable
    has_params: bool = True
    # inputs the output may overwrite when it has their size and they die at the
    # call: the kernel reads element i of them before it writes element i
    in_place: tuple[int, ...] = ()
    # a kernel that writes the output over input 0 whatever the sizes, when
    # ``in_place_when(params)`` holds (the in-place depthwise)
    in_place_variant: str | None = None
    in_place_when: Callable[[object], bool] | None = None
    # (params, dsp) -> bytes of arena scratch the call needs (0: none)
    scratch: Callable[[object, bool], int] | None = None
    # (params, dsp) -> bytes of scratch the call takes only where the arena has
    # them free at its step (the planner never grows the arena for them); without
    # them the kernel takes a slower path to the same values
    spare_scratch: Callable[[object, bool], int] | None = None

    @property
    def c_name(self) -> str:
        return f"tinyc_{self.name}"

    @property
    def takes_scratch(self) -> bool:
        """Whether the C function takes (scratch, scratch_bytes) arguments."""
        return self.scratch is not None or self.spare_scratch is not None

    def scratch_bytes(self, params, dsp: bool) -> int:
        return self.scratch(params, dsp) if self.scratch is not None else 0

    def spare_scratch_bytes(self, params, dsp: bool) -> int:
        return self.spare_scratch(params, dsp) if self.spare_scratch is not None else 0

    def wanted_scratch_bytes(self, params, dsp: bool) -> int:
        """What the C ``*_scratch_bytes`` reports: the scratch its fastest path uses."""
        return max(self.scratch_bytes(params, dsp), self.spare_scratch_bytes(params, dsp))


def _k(name, form, spec, has_params=True, **kw):
    return name, Kernel(name, form, spec, has_params, **kw)


KERNELS: dict[str, Kernel] = dict([
    _k("conv2d_s8", "weights", conv.conv2d_s8, scratch=conv.conv2d_scratch_bytes),
    _k("conv2d_1x1_s8", "weights", conv.conv2d_1x1_s8, scratch=conv.conv2d_1x1_scratch_bytes,
       spare_scratch=conv.conv2d_1x1_spare_scratch_bytes),
    _k("depthwise_conv2d_s8", "weights", conv.depthwise_conv2d_s8, scratch=conv.depthwise_scratch_bytes,
       in_place_variant="depthwise_conv2d_inplace_s8", in_place_when=conv.depthwise_inplace_ok),
    _k("depthwise_conv2d_inplace_s8", "weights_in_place", conv.depthwise_conv2d_inplace_s8,
       scratch=conv.depthwise_inplace_scratch_bytes),
    _k("fully_connected_s8", "weights", conv.fully_connected_s8, spare_scratch=conv.fc_spare_scratch_bytes),
    # the same layers with wide weights and folded biases (passes/widen.py)
    _k("conv2d_wide_s8", "weights", conv.conv2d_wide_s8, scratch=conv.conv2d_wide_scratch_bytes),
    _k("fully_connected_wide_s8", "weights", conv.fully_connected_wide_s8, scratch=conv.fc_wide_scratch_bytes),
    # ... and with Helium weights (passes/widen.py, on Cortex-M55 / M85)
    _k("conv2d_mve_s8", "weights", conv.conv2d_mve_s8, scratch=conv.conv2d_mve_scratch_bytes),
    _k("fully_connected_mve_s8", "weights", conv.fully_connected_mve_s8),
    _k("depthwise_conv2d_mve_s8", "weights", conv.depthwise_conv2d_mve_s8, scratch=conv.dw_mve_scratch_bytes,
       in_place_variant="depthwise_conv2d_inplace_mve_s8", in_place_when=conv.depthwise_inplace_ok),
    _k("depthwise_conv2d_inplace_mve_s8", "weights_in_place", conv.depthwise_conv2d_inplace_mve_s8,
       scratch=conv.dw_mve_scratch_bytes),
    _k("matmul_s8", "binary", conv.matmul_s8),
    _k("max_pool_s8", "unary", pool.max_pool_s8),
    _k("avg_pool_s8", "unary", pool.avg_pool_s8),
    _k("mean_s8", "unary", pool.mean_s8),
    _k("add_s8", "ternary", elementwise.add_s8, in_place=(0, 1)),
    _k("mul_s8", "binary", elementwise.mul_s8, in_place=(0, 1)),
    _k("requantize_s8", "unary", activation.requantize_s8, in_place=(0,)),
    _k("softmax_s8", "unary", activation.softmax_s8, in_place=(0,)),
    _k("logistic_s8", "unary", activation.logistic_s8, in_place=(0,)),
    _k("hard_swish_s8", "unary", activation.hard_swish_s8, in_place=(0,)),
    _k("pad_s8", "unary", data.pad_s8),
    _k("resize_nearest_s8", "unary", data.resize_nearest_s8),
    _k("resize_bilinear_s8", "unary", data.resize_bilinear_s8),
    _k("strided_copy_s8", "unary", data.strided_copy_s8),
    _k("tanh_s8", "unary", activation.tanh_s8, in_place=(0,)),
    _k("leaky_relu_s8", "unary", activation.leaky_relu_s8, in_place=(0,)),
    _k("lut_s8", "binary", activation.lut_s8, in_place=(0,)),
    _k("minmax_s8", "binary", elementwise.minmax_s8, in_place=(0, 1)),
    _k("layer_norm_s8", "ternary", norm.layer_norm_s8, in_place=(0,)),
    _k("clamp_s8", "scalars", lambda size, lo, hi, x: activation.clamp_s8(lo, hi, x), has_params=False,
       in_place=(0,)),
    _k("copy_s8", "scalars", lambda size, x: data.copy_s8(x), has_params=False),
    _k("concat_s8", "concat", lambda outer, n, *rest: data.concat_s8(outer, rest[n:], rest[:n]), has_params=False),
    # training kernels (float32 gradients; elementwise ones may run in place)
    *(_k(name, "args", spec, has_params=False,
         in_place={"clamp_grad_f32": (0,), "add_f32": (0, 1), "clamp_f32": (0,)}.get(name, ()))
      for name, spec in train.TRAIN_KERNELS.items()),
])


def run_kernel(kernel: str, params, scalars: tuple[int, ...], inputs: list[np.ndarray | None]) -> np.ndarray:
    """Execute one kernel call with the numpy reference."""
    k = KERNELS[kernel]
    if k.form == "concat":
        return k.spec(*scalars[:2], *scalars[2:], *inputs)
    if k.form == "scalars":
        return k.spec(*scalars, *inputs)
    return k.spec(params, *inputs)
