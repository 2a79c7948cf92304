"""Chains of elementwise int8 calls become one table lookup in builds (passes/lut.py).

* A hard swish as PyTorch exports it (Add 3, Clip 0..6, Mul 1/6, then the Mul by
  x) builds with the scalar Add and Mul as one ``lut_s8``; the Mul of two
  tensors stays.  The fused program gives the unfused one's bytes for every
  int8 value, in the numpy reference and in the generated C.
* A tensor another call also reads, or a program output, ends a chain.
* MCUNetV2's squeeze-excite hard sigmoids fuse with the same outputs on the
  shared goldens' inputs (skipped without ../shared/models).
"""

from __future__ import annotations

import copy

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from tinyc import api
from tinyc.engines import compile_int8
from tinyc.passes.lut import fuse_unary_chains
from tinyc.passes.quantize import calibrate, quantize_graph

from .conftest import SHARED_MODELS, needs_shared, shared_models_index
from .test_ptq import samples_of


def _hard_swish_model(path, extra_reader: bool = False):
    """conv -> x * clip(x + 3, 0, 6) / 6 (and, with ``extra_reader``, the
    clipped tensor as a second output)."""
    rng = np.random.default_rng(3)
    inits = [numpy_helper.from_array(rng.standard_normal((4, 2, 3, 3)).astype(np.float32) * 0.4, "w"),
             numpy_helper.from_array(np.array(3.0, np.float32), "three"),
             numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
             numpy_helper.from_array(np.array(6.0, np.float32), "six"),
             numpy_helper.from_array(np.array(1 / 6, np.float32), "sixth")]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["c", "three"], ["a"], name="add3"),
             helper.make_node("Clip", ["a", "zero", "six"], ["r"], name="relu6"),
             helper.make_node("Mul", ["r", "sixth"], ["s"], name="div6"),
             helper.make_node("Mul", ["c", "s"], ["y"], name="swish")]
    outs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 6, 6])]
    if extra_reader:
        outs.append(helper.make_tensor_value_info("r", TensorProto.FLOAT, [1, 4, 6, 6]))
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 6, 6])], outs,
                          inits)
    onnx.save_model(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    graph = api.load(path)
    x = np.random.default_rng(4).uniform(-3, 3, (16, 1, 2, 6, 6)).astype(np.float32)
    quantize_graph(graph, calibrate(graph, samples_of(graph, x.reshape(16, 2, 6, 6)), "minmax"))
    return graph


def _kernels(program) -> list[str]:
    return [c.kernel for c in program.calls if not c.is_alias]


def test_hard_swish_tail_is_one_lookup_with_the_same_bytes(tmp_path):
    path = tmp_path / "hs.onnx"
    graph = _hard_swish_model(path)
    unfused = compile_int8(copy.deepcopy(graph))
    build = api.compile_c(graph, path)
    assert _kernels(unfused)[-3:] == ["add_s8", "mul_s8", "mul_s8"], _kernels(unfused)
    assert _kernels(build.program)[-2:] == ["lut_s8", "mul_s8"], _kernels(build.program)
    # (test_a_table_holds_the_chain_for_every_input checks all 256 values)
    x = np.random.default_rng(5).uniform(-4, 4, (8, 2, 6, 6)).astype(np.float32)
    batch = api.to_batch(graph, {graph.inputs[0]: x})
    want = api.run_program_ref(unfused, batch)
    got_ref = api.run_program_ref(build.program, batch)
    got_c = api.run_program_c(build, batch)
    for name in build.program.outputs:
        np.testing.assert_array_equal(got_ref[name], want[name])
        np.testing.assert_array_equal(got_c[name], want[name])


def test_a_table_holds_the_chain_for_every_input(tmp_path):
    path = tmp_path / "hs.onnx"
    program = compile_int8(_hard_swish_model(path))
    g = program.graph
    chain = [c for c in program.calls if c.kernel in ("add_s8", "mul_s8")][:2]
    assert fuse_unary_chains(program) == 1
    lut = next(c for c in program.calls if c.kernel == "lut_s8")
    assert lut.inputs[0] == chain[0].inputs[0] and lut.outputs == chain[1].outputs
    table = g.tensors[lut.inputs[1]].data
    # the chain's own kernels on each value, one element at a time
    from tinyc.kernels import run_kernel

    shape = g.tensors[chain[0].inputs[0]].shape
    for v in range(-128, 128):
        value = np.full(shape, v, np.int8)
        for call in chain:
            args = [value if i == call.inputs[0] else g.tensors[i].data for i in call.inputs]
            value = np.asarray(run_kernel(call.kernel, call.params, call.scalars, args), np.int8).reshape(shape)
        assert np.all(value == table[v + 128]), v


def test_a_tensor_read_twice_ends_the_chain(tmp_path):
    path = tmp_path / "hs2.onnx"
    program = compile_int8(_hard_swish_model(path, extra_reader=True))
    kernels = _kernels(program)
    assert fuse_unary_chains(program) == 0  # the clipped sum is an output: the Add and the Mul stay
    assert _kernels(program) == kernels


@needs_shared
def test_mcunetv2_hard_sigmoids_fuse_with_the_same_outputs():
    info = shared_models_index()["mcunetv2_large"]
    graph = api.load(SHARED_MODELS / info["onnx_int8"])
    unfused = compile_int8(copy.deepcopy(graph))
    fused = compile_int8(graph)
    removed = fuse_unary_chains(fused)
    assert removed == 13 and _kernels(fused).count("lut_s8") == 13
    gold = np.load(SHARED_MODELS / "goldens" / "mcunetv2_large.npz")
    batch = api.to_batch(graph, {graph.inputs[0]: gold["inputs"][:1]})
    want = api.run_program_ref(unfused, batch)
    got = api.run_program_ref(fused, batch)
    for name in unfused.outputs:
        np.testing.assert_array_equal(got[name], want[name])
