"""The memory planner: arenas against TFLM and TinyEngine, plans that are safe by
an independent check, a validator that rejects broken plans, and debug builds
(poisoned dead memory, AddressSanitizer) that stay bit-exact."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinyc import api
from tinyc.codegen.c import generate
from tinyc.ir import Graph, Tensor
from tinyc.ir.program import KernelCall, Program
from tinyc.kernels.params import AddParams, RequantizeParams
from tinyc.passes.memory import STRATEGIES, PlanError, plan_memory, validate_plan

from .conftest import REPO, SHARED_MODELS, needs_shared, shared_models_index

MODELS = sorted(shared_models_index())
# TinyEngine's published peak SRAM for the same models (MCUNet papers / repo).
TINYENGINE_PEAK = {"mcunet_vww1": 93_992, "mcunet_in3_320kb": 266_344}


def _tflm_head(name: str) -> int:
    summary = json.loads((SHARED_MODELS / "goldens" / "summary.json").read_text())
    return summary[name]["tflm_arena"]["head"]


def _build(name: str, **kw):
    info = shared_models_index()[name]
    graph = api.load(SHARED_MODELS / info["onnx_int8"])
    return graph, api.compile_c(graph, info["onnx_int8"], **kw)


# ------------------------------------------------------------ real models
@needs_shared
@pytest.mark.parametrize("name", MODELS)
def test_arena_beats_tflm_and_is_near_its_lower_bound(name):
    """Kernel for kernel: built for a core without DSP (rp2040: the portable
    kernels, no scratch, as TFLM's reference kernels) against TFLM's planned head;
    built with the DSP paths' scratch (the default) against TFLM with CMSIS-NN on
    a Cortex-M4 (its arena holds CMSIS-NN's scratch) and TinyEngine."""
    _, portable = _build(name, board="rp2040")
    _, build = _build(name)
    head = _tflm_head(name)
    for s in (portable.summary, build.summary):
        print(f"{name} ({s['board']}): arena {s['arena_bytes']:,} B (input and output included), TFLM head "
              f"{head:,} B ({s['arena_bytes'] / head:.2f}x); lower bound without in-place "
              f"{s['lower_bound_no_inplace_bytes']:,}, with {s['lower_bound_bytes']:,}; {s['plan_strategy']} / "
              f"{s['plan_order']}, {s['in_place_steps']} in-place steps")
        assert s["arena_bytes"] <= 1.02 * s["lower_bound_no_inplace_bytes"]
        assert s["lower_bound_bytes"] <= s["arena_bytes"]
    assert portable.summary["arena_bytes"] <= head
    assert portable.summary["arena_bytes"] <= build.summary["arena_bytes"]
    cmsis = shared_models_index()[name].get("measured", {}).get("tflm_m4_arena_used_bytes")
    if cmsis:
        assert build.summary["arena_bytes"] <= cmsis
    if name in TINYENGINE_PEAK:
        assert build.summary["arena_bytes"] <= TINYENGINE_PEAK[name]


@needs_shared
@pytest.mark.parametrize("name", MODELS)
def test_without_in_place_the_placement_is_near_the_lower_bound(name):
    """The placement strategies alone (no in-place sharing) reach the lower bound of
    their order within 2%, except where noted."""
    _, build = _build(name, in_place=False)
    s = build.summary
    ratio = s["arena_bytes"] / s["lower_bound_bytes"]
    print(f"{name}: no in-place arena {s['arena_bytes']:,} B, lower bound {s['lower_bound_bytes']:,} B, {ratio:.3f}x")
    assert ratio <= 1.10


@needs_shared
@pytest.mark.parametrize("name", MODELS)
def test_poisoned_sanitized_build_is_bit_exact(name):
    """Dead arena bytes are overwritten after every step and the host program runs
    under AddressSanitizer and UBSan: the outputs do not change."""
    graph, build = _build(name, poison=True)
    gold = np.load(SHARED_MODELS / "goldens" / f"{name}.npz")
    batch = api.to_batch(graph, {graph.inputs[0]: gold["inputs"]})
    out = api.run_program_c(build, batch, cflags=["-fsanitize=address,undefined", "-fno-sanitize-recover=all",
                                                  "-fno-omit-frame-pointer", "-g"])
    first = out[graph.outputs[0]].reshape(gold["outputs"].shape)
    ref = api.run_program_ref(build.program, batch)[graph.outputs[0]].reshape(gold["outputs"].shape)
    assert np.array_equal(first, ref)
    assert np.array_equal(first, gold["outputs"])


@needs_shared
def test_poisoning_exposes_a_broken_plan():
    """Make the plan wrong on purpose (two tensors live at the same time share
    bytes, bypassing the validator): the poisoned build's numbers change."""
    name = "mlperf_kws_dscnn"
    graph, build = _build(name, in_place=False)
    gold = np.load(SHARED_MODELS / "goldens" / f"{name}.npz")
    batch = api.to_batch(graph, {graph.inputs[0]: gold["inputs"]})
    plan = copy.deepcopy(build.plan)
    program = build.program
    # the first convolution's input lives while its output is written: put them together
    conv = next(c for c in program.calls if c.kernel.startswith("conv2d"))
    plan.offsets[conv.outputs[0]] = plan.offsets[conv.inputs[0]]
    with pytest.raises(PlanError):
        validate_plan(plan, program)
    broken = api.Build(program, plan, build.name, generate(program, plan, build.name, poison=True), build.summary)
    out = api.run_program_c(broken, batch)[graph.outputs[0]]
    assert not np.array_equal(out.reshape(gold["outputs"].shape), gold["outputs"])


@needs_shared
@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_every_strategy_can_be_forced_and_reported(tmp_path, strategy):
    model = SHARED_MODELS / shared_models_index()["mcunet_vww1"]["onnx_int8"]
    r = subprocess.run([sys.executable, "-m", "tinyc.cli", "build", str(model), "-o", str(tmp_path / "p"),
                        "--plan", strategy, "--json"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["plan_strategy"] == strategy
    assert s["lower_bound_bytes"] <= s["arena_bytes"]
    print(f"mcunet_vww1 --plan {strategy}: arena {s['arena_bytes']:,} B")


# --------------------------------------------------- random programs (property)
def _independent_check(program: Program, plan) -> None:
    """Every pair of tensors live at the same step occupies disjoint bytes, unless
    one is a view of the other or the step writes one over the other in place.
    Computed from scratch, without the planner's Buffer objects."""
    g = program.graph
    root = {}
    for c in program.calls:
        if c.is_alias:
            root[c.outputs[0]] = root.get(c.inputs[0], c.inputs[0])
    n = len(program.calls)
    live: dict[str, list[int]] = {}
    for t in program.inputs:
        live[t] = [0, 0]
    for step, c in enumerate(program.calls, start=1):
        for t in c.outputs:
            live.setdefault(t, [step, step])
        for t in c.inputs:
            if t and not g.tensors[t].is_const:
                live[t][1] = max(live[t][1], step)
    for t in program.outputs:
        live[t][1] = n + 1
    # a view keeps its source alive
    for t, r in root.items():
        live[r][1] = max(live[r][1], live[t][1])
    transitions = {(root.get(c.inputs[j], c.inputs[j]), c.outputs[0], k + 1) for k, c in enumerate(program.calls)
                   for j in [plan.in_place.get(k)] if j is not None}
    names = [t for t in live if t not in root]
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            (a0, a1), (b0, b1) = live[a], live[b]
            if a1 < b0 or b1 < a0:
                continue
            oa, ob = plan.offsets[a], plan.offsets[b]
            if oa + g.tensors[a].size <= ob or ob + g.tensors[b].size <= oa:
                continue
            ok = (a, b, b0) in transitions and a1 == b0 or (b, a, a0) in transitions and b1 == a0
            assert ok, f"{a} [{a0},{a1}] at {oa} and {b} [{b0},{b1}] at {ob} overlap"
    for k, (off, size) in plan.scratch.items():
        for t in names:
            if live[t][0] <= k + 1 <= live[t][1]:
                assert off + size <= plan.offsets[t] or plan.offsets[t] + g.tensors[t].size <= off
    for t in names:
        assert plan.offsets[t] % plan.alignment == 0 and plan.offsets[t] + g.tensors[t].size <= plan.arena_size


@st.composite
def random_programs(draw):
    """A random DAG of int8 kernel calls: chains, residual adds, concats, views and
    requantizes over tensors of random sizes; some outputs read later."""
    g = Graph("random")
    calls: list[KernelCall] = []
    sizes = [draw(st.integers(1, 64)) * draw(st.sampled_from([1, 4, 16]))]
    g.add_tensor(Tensor("in", (sizes[0],), np.int8))
    names = ["in"]
    for k in range(draw(st.integers(1, 14))):
        kind = draw(st.sampled_from(["requant", "requant", "add", "concat", "view"]))
        a = draw(st.sampled_from(names[-4:]))
        sa = g.tensors[a].size
        out = f"t{k}"
        if kind == "requant":
            size = draw(st.sampled_from([sa, sa, max(1, sa // 4), sa * 2]))
            g.add_tensor(Tensor(out, (size,), np.int8))
            kernel = "requantize_s8" if size == sa else "copy_s8"
            params = RequantizeParams(size) if size == sa else None
            calls.append(KernelCall(kernel, params, [a], [out], f"n{k}", () if params else (size,)))
        elif kind == "add":
            same = [t for t in names if g.tensors[t].size == sa and t != a]
            b = draw(st.sampled_from(same)) if same else a
            g.add_tensor(Tensor(out, (sa,), np.int8))
            calls.append(KernelCall("add_s8", AddParams(out_shape=(1, 1, 1, sa)), [a, b], [out], f"n{k}"))
        elif kind == "concat":
            b = draw(st.sampled_from(names))
            g.add_tensor(Tensor(out, (sa + g.tensors[b].size,), np.int8))
            calls.append(KernelCall("concat_s8", None, [a, b], [out], f"n{k}", (1, 2, sa, g.tensors[b].size)))
        else:
            g.add_tensor(Tensor(out, (1, sa), np.int8))
            calls.append(KernelCall("alias", None, [a], [out], f"n{k}"))
        names.append(out)
    outputs = [names[-1]] + ([draw(st.sampled_from(names[1:-1]))] if len(names) > 2 and draw(st.booleans()) else [])
    g.inputs, g.outputs = ["in"], outputs
    outputs = [o for o in dict.fromkeys(outputs) if o != "in"] or [names[-1]]
    return Program(g, calls, ["in"], outputs)


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(program=random_programs(), strategy=st.sampled_from([None, *STRATEGIES]), in_place=st.booleans())
def test_random_programs_get_valid_plans(program, strategy, in_place):
    # two outputs that are views of one tensor cannot both live in the arena once
    roots = {}
    for c in program.calls:
        if c.is_alias:
            roots[c.outputs[0]] = roots.get(c.inputs[0], c.inputs[0])
    if len({roots.get(o, o) for o in program.outputs}) < len(program.outputs):
        return
    plan = plan_memory(program, strategy, in_place=in_place)  # validates
    _independent_check(program, plan)
    assert plan.lower_bound <= plan.arena_size


def _valid_plan():
    program = random_programs().example()
    return program, plan_memory(program)


@pytest.mark.parametrize("corruption", ["overlap", "misaligned", "outside", "missing", "in-place-flag"])
def test_corrupted_plans_are_rejected(corruption):
    g = Graph("chain")
    for name in ("x", "a", "b", "c"):
        g.add_tensor(Tensor(name, (64,), np.int8))
    calls = [KernelCall("requantize_s8", RequantizeParams(64), [s], [d], f"n{k}")
             for k, (s, d) in enumerate([("x", "a"), ("a", "b"), ("b", "c")])]
    g.inputs, g.outputs = ["x"], ["c"]
    program = Program(g, calls, ["x"], ["c"])
    plan = plan_memory(program, in_place=False)
    validate_plan(plan, program)
    bad = copy.deepcopy(plan)
    if corruption == "overlap":  # a and b are both live at step 2
        bad.buffers[[b.name for b in bad.buffers].index("b")].offset = bad.offsets["a"]
    elif corruption == "misaligned":
        bad.buffers[0].offset += 3
    elif corruption == "outside":
        bad.arena_size = max(b.offset + b.size for b in bad.buffers) - 1
    elif corruption == "missing":
        del bad.offsets["b"]
    else:  # claims call 1 ran in place although b has its own bytes
        bad.in_place[1] = 0
    if corruption in ("overlap",):
        bad.offsets = {m: b.offset for b in bad.buffers for m in b.members}
    with pytest.raises(PlanError):
        validate_plan(bad, program)


def test_branch_order_search_lowers_the_peak(tmp_path):
    """Two branches that each widen to 16 channels and narrow back: run as written
    (both wide tensors at once) the peak is higher than branch after branch; the
    planner finds the better order, and the C still equals the reference."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits, nodes = [], []

    def conv(name, src, cin, cout):
        w = numpy_helper.from_array((rng.standard_normal((cout, cin, 1, 1)) * 0.5).astype(np.float32), name + "_w")
        inits.append(w)
        return helper.make_node("Conv", [src, w.name], [name], name=name)

    # written breadth-first: both wide convs before either narrowing one
    nodes += [conv("a1", "x", 2, 16), conv("b1", "x", 2, 16), conv("a2", "a1", 16, 2), conv("b2", "b1", 16, 2)]
    nodes.append(helper.make_node("Concat", ["a2", "b2"], ["y"], name="cat", axis=1))
    g = helper.make_graph(nodes, "branches", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 16, 16])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 16, 16])], inits)
    path = tmp_path / "branches.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), path)
    np.save(tmp_path / "cal.npy", rng.standard_normal((4, 1, 2, 16, 16)).astype(np.float32))

    graph = api.load(path)
    api.quantize_with_calibration(graph, tmp_path / "cal.npy")
    build = api.compile_c(graph, path)
    plan = build.plan
    as_written = min(v for k, v in plan.tried.items() if k.startswith("model/"))
    print(f"arena as written {as_written:,} B, chosen ({plan.order}) {plan.arena_size:,} B; tried {plan.tried}")
    assert plan.order != "model" and plan.arena_size < as_written
    assert plan.arena_size <= 16 * 16 * (2 + 16 + 2 + 2 + 2) + 64  # one wide tensor at a time
    x = rng.standard_normal((2, 1, 2, 16, 16)).astype(np.float32)
    batch = api.to_batch(graph, {"x": x})
    assert np.array_equal(api.run_program_c(build, batch)["y"], api.run_program_ref(build.program, batch)["y"])


@needs_shared
def test_memory_benchmark_script_writes_its_section(tmp_path):
    out = tmp_path / "BENCHMARKS.md"
    out.write_text("# tinyc benchmarks\n\n<!-- speed:begin -->\nkept\n<!-- speed:end -->\n")
    r = subprocess.run([sys.executable, "benchmarks/memory.py", "--out", str(out)], cwd=REPO, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    text = out.read_text()
    assert "kept" in text and "<!-- memory:begin -->" in text
    for name in MODELS:
        assert f"| {name} |" in text


@needs_shared
def test_kernel_scratch_is_planned_by_the_descriptors():
    """Every call gets the scratch its kernel's descriptor asks for (the in-place
    variant's when it runs in place), for the step it runs, and the C passes it;
    a board without DSP plans only the in-place planes, and grants the portable
    kernels' spare scratch where the arena has it free (never growing it: the
    pointwise layers' int16 rows, when their input offsets stay unfolded); a plan
    without a call's scratch is rejected."""
    from tinyc.passes.memory import kernel_of

    _, build = _build("mlperf_kws_dscnn")
    _, portable = _build("mlperf_kws_dscnn", board="rp2040")
    _, unfolded = _build("mlperf_kws_dscnn", board="rp2040", widen=False)
    granted = []
    for b, dsp in ((build, True), (portable, False), (unfolded, False)):
        plan, program = b.plan, b.program
        assert program.dsp is dsp
        for k, call in enumerate(program.calls):
            if call.is_alias:
                continue
            kern = kernel_of(call, k in plan.in_place)
            need = kern.scratch_bytes(call.params, dsp)
            have = plan.scratch.get(k, (0, 0))[1]
            spare = kern.spare_scratch_bytes(call.params, dsp)
            assert have == need or (need == 0 and have == spare), (k, call.kernel)
            if have:
                off, size = plan.scratch[k]
                buf = next(x for x in plan.buffers if x.name == f"scratch:{k}")
                assert (buf.offset, buf.first, buf.last) == (off, k + 1, k + 1)
                assert f"(arena + {off}), {size});" in b.files[f"{b.name}.c"]
            if not dsp and need:
                assert kern.name == "depthwise_conv2d_inplace_s8"
            if have and not need:  # spare scratch: inside the arena the placement chose, nothing grown
                off, size = plan.scratch[k]
                assert off + size <= plan.arena_size, (k, call.kernel)
                granted.append((dsp, call.kernel))
    assert granted and all(not dsp for dsp, _ in granted), granted  # the portable pointwise layers' int16 rows
    # folded offsets (passes/widen.py) leave the pointwise layers nothing to copy
    assert not any(portable.plan.scratch.get(k, (0, 0))[1] for k, c in enumerate(portable.program.calls)
                   if c.kernel == "conv2d_1x1_s8")
    dsp_steps = [k for k in build.plan.scratch if not build.program.calls[k].kernel.startswith("depthwise")]
    assert dsp_steps  # the convolutions' DSP scratch
    bad = copy.deepcopy(build.plan)
    del bad.scratch[dsp_steps[0]]
    with pytest.raises(PlanError, match="scratch"):
        validate_plan(bad, build.program)
    assert portable.summary["arena_bytes"] <= build.summary["arena_bytes"]
