"""The memory report as data (the JSON form; docs/report.md pins its keys).

Everything comes from the same path as ``tinyc build``: ``api.compile_c`` gives the
program and its memory plan; with the Arm toolchain installed the firmware is linked
with the ``model`` main (no test harness; against the board's own regions made
roomy, so a model that does not fit is still measured) and flash, RAM and stack
are read from the ELF.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from ..boards import Board, Region, all_boards
from ..boards.fit import CODE_ESTIMATE, STATICS_ESTIMATE, roomy
from ..ir.program import Program
from ..ops import get_op
from ..passes.memory import plan_memory

REPORT_VERSION = 1


def measure_firmware(build, board: Board) -> dict | None:
    """Link the model for the board (the ``model`` main: no test harness) and
    measure it; None without the Arm toolchain."""
    from ..codegen.firmware import build_elf
    from ..sim import qemu

    if qemu.arm_toolchain() is None:
        return None
    with tempfile.TemporaryDirectory(prefix="tinyc-report-") as tmp:
        fw = build_elf(Path(tmp), build, board, roomy(board), "model")
    return {"flash_bytes": fw.flash_bytes, "ram_static_bytes": fw.ram_bytes, "stack_bytes": fw.stack_bytes}


def _needs(build, measured: dict | None) -> dict:
    s = build.summary
    if measured:
        stack = measured["stack_bytes"]
        statics = measured["ram_static_bytes"] - s["arena_bytes"]
        flash = measured["flash_bytes"]
        return {"flash": flash, "code": flash - s["weights_bytes"], "stack": stack, "statics": statics,
                "ram": s["arena_bytes"] + statics + stack, "measured": True}
    from ..codegen.firmware import MIN_STACK

    return {"flash": s["weights_bytes"] + CODE_ESTIMATE, "code": CODE_ESTIMATE, "stack": MIN_STACK,
            "statics": STATICS_ESTIMATE, "ram": s["arena_bytes"] + STATICS_ESTIMATE + MIN_STACK, "measured": False}


def _region(kind: str, region: Region, needed: int) -> dict:
    margin = region.length - needed
    return {"kind": kind, "region": region.name, "needed": needed, "available": region.length,
            "margin_bytes": margin, "margin_percent": round(100.0 * margin / region.length, 2)}


def _live_per_step(plan, steps: int) -> list[int]:
    live = [0] * steps
    for b in plan.buffers:
        for p in b.pieces:
            for s in range(p.first, min(p.last, steps - 1) + 1):
                live[s] += p.size
    return live


def _layers(program: Program, plan, live: list[int]) -> list[dict]:
    graph = program.graph
    nodes = {n.name: n for n in graph.nodes}
    seen_nodes, seen_consts = set(), set()
    high = 0
    layers = []
    for k, call in enumerate(program.calls):
        step = k + 1
        node = nodes.get(call.node)
        macs = 0
        if node is not None and node.name not in seen_nodes:
            seen_nodes.add(node.name)
            macs = int(get_op(node.op).macs(node, graph))
        weights = 0
        for t in call.inputs:
            if t and graph.tensors[t].is_const and t not in seen_consts:
                seen_consts.add(t)
                weights += int(graph.tensors[t].data.nbytes)
        for b in plan.buffers:
            for p in b.pieces:
                if p.first <= step <= p.last:
                    high = max(high, b.offset + p.size)
        layers.append({
            "step": step, "node": call.node, "op": node.op if node is not None else call.kernel,
            "kernel": call.kernel,
            "input_shapes": [list(graph.tensors[t].shape) for t in call.inputs if t and not graph.tensors[t].is_const],
            "output_shape": list(graph.tensors[call.outputs[0]].shape),
            "macs": macs, "weight_bytes": weights, "live_bytes": live[step] if step < len(live) else 0,
            "arena_high_water": high, "scratch_bytes": plan.scratch.get(k, (0, 0))[1], "in_place": k in plan.in_place,
        })
    return layers


def board_row(board: Board, needs: dict) -> dict:
    ram, flash = board.main_ram, board.main_flash
    return {"board": board.name, "fits": needs["ram"] <= ram.length and needs["flash"] <= flash.length,
            "ram_needed": needs["ram"], "ram_available": ram.length, "ram_margin_bytes": ram.length - needs["ram"],
            "flash_needed": needs["flash"], "flash_available": flash.length,
            "flash_margin_bytes": flash.length - needs["flash"], "measured": needs["measured"]}


def build_report(build, board: Board | None, every_board: bool = False, training: dict | None = None) -> dict:
    """The report dict for a compiled model (``api.compile_c``) and a board (None:
    host); ``training`` ({"graph": the model's graph before compiling, "update":
    SPEC}) adds the training section (training_report)."""
    from ..build import board_info

    program, plan, s = build.program, build.plan, build.summary
    steps = len(program.calls) + 2
    live = _live_per_step(plan, steps)
    measured = measure_firmware(build, board) if board is not None else None
    needs = _needs(build, measured)
    totals = {
        "macs": s["macs"], "arena_bytes": s["arena_bytes"], "lower_bound_bytes": s["lower_bound_bytes"],
        "lower_bound_no_inplace_bytes": s["lower_bound_no_inplace_bytes"], "weights_bytes": s["weights_bytes"],
        "code_bytes": needs["code"], "flash_bytes": needs["flash"], "stack_bytes": needs["stack"],
        "statics_bytes": needs["statics"], "ram_bytes": needs["ram"], "measured": needs["measured"],
        "plan_strategy": s["plan_strategy"], "plan_order": s["plan_order"], "in_place_steps": s["in_place_steps"],
    }
    verdict = {"fits": None, "regions": []}
    if board is not None:
        regions = [_region("flash", board.main_flash, needs["flash"]), _region("ram", board.main_ram, needs["ram"])]
        verdict = {"fits": all(r["margin_bytes"] >= 0 for r in regions), "regions": regions}

    plain = Program(program.graph, list(program.calls), program.inputs, program.outputs, program.float_tail,
                    program.dsp)
    no_in_place = plan_memory(plain, in_place=False).arena_size
    peak_steps = [k for k, v in enumerate(live) if v == plan.lower_bound and v > 0]
    ram_over = max(0, -verdict["regions"][1]["margin_bytes"]) if verdict["regions"] else 0
    report = {
        "tinyc_report_version": REPORT_VERSION,
        "model": s["model"],
        "name": s["name"],
        "board": board_info(board) if board is not None else None,
        "totals": totals,
        "verdict": verdict,
        "layers": _layers(program, plan, live),
        "timeline": {
            "live_bytes": live,
            "buffers": [{"name": b.name, "offset": b.offset, "size": b.size, "first": b.first, "last": b.last,
                         "pieces": [[p.first, p.last, p.size] for p in b.pieces]} for b in plan.buffers],
        },
        "what_if": {
            "strategies": dict(plan.tried),
            "arena_without_in_place_bytes": no_in_place,
            "in_place_saving_bytes": no_in_place - s["arena_bytes"],
            "peak_steps": peak_steps,
            "peak_layers": [program.calls[k - 1].node for k in peak_steps if 1 <= k <= len(program.calls)],
            "bytes_to_fit": ram_over,
        },
        "patch": s.get("patch"),
    }
    # a layer-wise build: the patch plans that would lower its arena (a patched
    # build runs the best one already)
    plans = []
    if not (s.get("patch") or {}).get("split"):
        from ..passes.memory import arena_size
        from ..passes.patch import QUICK_STRATEGY, best_plans

        plans = best_plans(program, 0.2, lambda p: arena_size(p, QUICK_STRATEGY))
    report["what_if"]["patch_plans"] = [p for p in plans if p["arena_bytes"] < s["arena_bytes"]]
    if training is not None:
        report["training"] = training_report(training["graph"], s["model"], training["update"], needs, board,
                                             schedule=training.get("schedule"))
        if training.get("budget") is not None:
            report["training"]["budget"] = training["budget"]
    if every_board:
        by_core: dict[tuple, dict] = {}
        rows = []
        for b in all_boards().values():
            key = tuple(b.cflags())
            if key not in by_core:
                by_core[key] = _needs(build, measure_firmware(build, b))
            rows.append(board_row(b, by_core[key]))
        report["boards"] = rows
    return report


def _training_layers(tp) -> list[dict]:
    """Per forward node of the step: the int8 activations it saves for the
    backward, the largest float32 gradient its backward makes, and its
    trainable parameters and state (bytes)."""
    g = tp.graph
    calls = tp.step.calls
    backward_from = next(k for k, c in enumerate(calls) if c.args)
    read_later = {i for c in calls[backward_from:] for i in c.inputs if i}
    rows: dict[str, dict] = {}

    def row(node: str) -> dict:
        return rows.setdefault(node, {"node": node, "saved_bytes": 0, "gradient_bytes": 0, "trainable_bytes": 0})

    for c in calls[:backward_from]:
        for o in c.outputs:
            if o in read_later:
                row(c.node)["saved_bytes"] += g.tensors[o].nbytes
    forward_nodes = {c.node for c in calls[:backward_from]}
    for c in calls[backward_from:]:
        node = c.node.split(":")[0]  # a backward node is named "<forward node>:<op>__<n>"
        for o in c.outputs:
            t = g.tensors.get(o)
            if t is not None and t.dtype == np.float32 and node in forward_nodes:
                row(node)["gradient_bytes"] = max(row(node)["gradient_bytes"], t.nbytes)
    for p in tp.params:
        node = next((c.node for c in calls[:backward_from] if p.tensor in c.inputs), p.tensor)
        r = row(node)
        r["trainable_bytes"] += g.tensors[p.tensor].nbytes + (g.tensors[p.residue].nbytes if p.residue else 0)
    order: dict[str, int] = {}
    for k, c in enumerate(calls[:backward_from]):
        order.setdefault(c.node, k)
    return sorted(rows.values(), key=lambda r: order.get(r["node"], len(calls)))


def training_report(graph, model_path, spec: str, needs: dict | None, board: Board | None,
                    rounding: str = "residue", schedule=None) -> dict:
    """What on-device training with update set ``spec`` costs in SRAM (the training
    step's arena, the trainable parameters and state it keeps), what is live at
    its peak, per updated layer, and the same totals for bias-only training and
    full backprop; with a board, whether training fits its RAM."""
    import copy

    from ..errors import TinycError
    from ..train.engine import memory_of
    from ..train.lower import lower_training
    from ..train.spec import model_layers, parse_update

    layers = model_layers(model_path)
    tp = lower_training(copy.deepcopy(graph), parse_update(spec, layers), rounding)
    inference = plan_memory(tp.inference)
    plan = plan_memory(tp.step, reorder=False)
    arena = max(inference.arena_size, plan.arena_size)
    live = _live_per_step(plan, len(tp.step.calls) + 2)
    peak = max(range(len(live)), key=lambda k: live[k])
    g = tp.graph
    backward_start = next(k for k, c in enumerate(tp.step.calls, start=1) if c.args)
    at_peak = []
    copies = {again for _, again, _, _ in tp.recomputed}
    for b in plan.buffers:
        piece = next((p for p in b.pieces if p.first <= peak <= p.last), None)
        if piece is None:
            continue
        t = g.tensors.get(b.name)
        kind = ("scratch" if t is None or b.name.endswith(":dw") or ":dw__" in b.name else
                "gradient (float32)" if t.dtype == np.float32 else
                "recomputed activation (int8)" if b.name in copies else
                "saved activation (int8)" if peak >= backward_start else "activation (int8)")
        at_peak.append({"tensor": b.name, "kind": kind, "bytes": piece.size})
    at_peak.sort(key=lambda r: -r["bytes"])
    params = []
    for p in tp.params:
        t = g.tensors[p.tensor]
        extra = g.tensors[p.residue].nbytes if p.residue else 0
        params.append({"layer": p.param.update.layer.describe(), "kind": p.param.kind, "channels": p.param.channels,
                       "bytes": t.nbytes, "residue_bytes": extra})
    out = {
        "update": spec, "rounding": rounding,
        "train_arena_bytes": arena, "inference_arena_bytes": inference.arena_size,
        "trainable_bytes": tp.trainable_bytes(), "train_total_bytes": arena + tp.trainable_bytes(),
        "peak_step": peak, "peak_node": tp.step.calls[peak - 1].node if 1 <= peak <= len(tp.step.calls) else None,
        "at_peak": at_peak, "params": params, "others": {}, "per_layer": _training_layers(tp),
        "recomputed": [{"tensor": t, "node": node, "macs": macs} for t, _, node, macs in tp.recomputed],
    }
    for label, other in (("bias_only", "bias=all"), ("full_backprop", "full")):
        try:
            m = memory_of(graph, parse_update(other, layers), rounding)
            out["others"][label] = {"update": other, "train_arena_bytes": m["arena_bytes"],
                                    "trainable_bytes": m["trainable_bytes"], "train_total_bytes": m["total_bytes"]}
        except TinycError as e:
            out["others"][label] = {"update": other, "error": str(e)}
    full = out["others"]["full_backprop"].get("train_total_bytes")
    out["full_backprop_total_bytes"] = full
    if board is not None and needs is not None:
        ram = needs["statics"] + needs["stack"] + out["train_total_bytes"]
        out["verdict"] = _region("ram", board.main_ram, ram) | {"fits": ram <= board.main_ram.length}
    if board is not None and schedule is not None:
        out["firmware"] = _training_firmware(graph, model_path, spec, board, rounding, schedule)
    return out


def _training_firmware(graph, model_path, spec: str, board: Board, rounding: str, schedule: dict) -> dict:
    """The training firmware tinyc train --board writes for these samples, linked:
    its flash and RAM (stack included) from the ELF."""
    import copy

    from ..codegen.c import default_name
    from ..errors import TinycError
    from ..train import firmware as tf
    from ..train.engine import build_training
    from ..train.run import to_program_input
    from ..train.spec import model_layers, parse_update

    name = default_name(model_path)
    b = build_training(copy.deepcopy(graph), parse_update(spec, model_layers(model_path)), name, rounding)
    data, cap = schedule["data"], schedule["samples"] or len(schedule["data"].y)
    sched = tf.Schedule(to_program_input(b.tp, data)[:cap], data.y[:cap], schedule["epochs"], schedule["lr"], 0)
    with tempfile.TemporaryDirectory(prefix="tinyc-report-train-") as tmp:
        try:
            fw = tf.build_firmware(Path(tmp), b, board, sched, on_qemu=False)
        except TinycError as e:
            return {"error": str(tf._overflow_hint(e, sched))}
    out = tf.link_figures(b, fw, board)
    slots = out.get("persist_region", {}).get("bytes", 0)
    return out | {"samples": len(sched.train_y), "flash_available": board.main_flash.length - slots,
                  "ram_available": board.main_ram.length}
