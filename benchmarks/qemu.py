#!/usr/bin/env python3
"""Speed: instructions executed in NAME_invoke on emulated Cortex-M cores.

For every model in ../shared/models/models.json this builds tinyc's firmware for
each QEMU machine standing in for a core, as `tinyc build --board MACHINE` does
(so with the core's kernels: the DSP paths and wide weights on the Cortex-M4
(mps2-an386) and M7 (mps2-an500), the Helium kernels on the M55 (mps3-an547),
the portable C on the Cortex-M3 (mps2-an385)), runs the first golden sample twice (the counts must
agree: the QEMU TCG plugin counts exactly), checks the output against TFLM's
golden, and compares with the TFLM counts measured the same way on a Cortex-M4
(models.json: TFLM with CMSIS-NN kernels, and TFLM's reference kernels).  On the
M4 it also links the model alone (model, runtime, startup: no harness) and
reports its code: that flash less the weights and other constants.
Rewrites the "speed" section of BENCHMARKS.md.

    python benchmarks/qemu.py [--shared ../shared/models] [--out BENCHMARKS.md]
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.markdown import run  # noqa: E402
from tinyc import api  # noqa: E402
from tinyc.boards import get_board  # noqa: E402
from tinyc.codegen.c import weight_bytes  # noqa: E402
from tinyc.codegen.firmware import build_elf, compile_project, link_project  # noqa: E402
from tinyc.errors import TinycError  # noqa: E402
from tinyc.sim import qemu  # noqa: E402

CORES = {"M4": "mps2-an386", "M7": "mps2-an500", "M55": "mps3-an547", "M3": "mps2-an385"}
BEGIN, END = "<!-- speed:begin -->", "<!-- speed:end -->"


def count(shared: Path, name: str, info: dict, machine: str) -> dict:
    gold = np.load(shared / "goldens" / f"{name}.npz")
    graph = api.load(shared / info["onnx_int8"])
    build = api.compile_c(graph, info["onnx_int8"], patch="off", board=machine)
    board = get_board(machine)
    batch = api.to_batch(graph, {graph.inputs[0]: gold["inputs"][:1]})
    feeds = api.program_feeds(build.program, batch)
    with tempfile.TemporaryDirectory(prefix="tinyc-bench-") as tmp:
        root = Path(tmp)
        try:
            fw = build_elf(root, build, board, board, "qemu")
        except TinycError as e:
            return {"fits": False, "why": str(e)}
        (root / "in.bin").write_bytes(b"".join(feeds[n].tobytes() for n in build.program.inputs))
        runs = [qemu.run_qemu(fw.elf, machine, root, timeout=1800) for _ in range(2)]
        raw = np.frombuffer((root / "out.bin").read_bytes(), dtype=np.int8)
        code = None
        if machine == CORES["M4"]:
            alone = root / "alone"
            alone.mkdir()
            objects = compile_project(alone, build, board, "model")
            code = link_project(alone, build, objects, board, board).flash_bytes - weight_bytes(build.program)
    first, second = runs[0].instructions, runs[1].instructions
    out = raw[: build.program.graph.tensors[build.program.outputs[0]].size]
    results = api.program_results(build.program, {build.program.outputs[0]: out[None].reshape(
        (1,) + build.program.graph.tensors[build.program.outputs[0]].shape)}) if len(build.program.outputs) == 1 else None
    exact = None
    if results is not None:
        exact = bool(np.array_equal(results[graph.outputs[0]].reshape(gold["outputs"][:1].shape), gold["outputs"][:1]))
    return {"fits": True, "instructions": first[0], "repeatable": first == second, "exact": exact,
            "flash": fw.flash_bytes, "ram": fw.ram_bytes + fw.stack_bytes, "arena": build.plan.arena_size,
            "weights": weight_bytes(build.program), "code": code,
            "wide_calls": sum(c.kernel.endswith("_wide_s8") for c in build.program.calls)}


def measure(shared: Path) -> list[dict]:
    index = json.loads((shared / "models.json").read_text())
    rows = []
    for name, info in index.items():
        t0 = time.time()
        row = {"model": name, "macs": info["macs"],
               "tflm_cmsisnn_m4": info.get("measured", {}).get("tflm_cmsisnn_m4_invoke_instructions"),
               "tflm_reference_m4": info.get("measured", {}).get("tflm_reference_m4_invoke_instructions")}
        for core, machine in CORES.items():
            row[core] = count(shared, name, info, machine)
        row["seconds"] = round(time.time() - t0, 1)
        print(f"{name}: " + ", ".join(f"{c} {row[c].get('instructions', 'n/a')}" for c in CORES), file=sys.stderr)
        rows.append(row)
    return rows


def _cell(r: dict) -> str:
    return f"{r['instructions']:,}" if r["fits"] else "does not fit"


def _ratio(a: dict, b: int | dict | None) -> str:
    if isinstance(b, dict):
        b = b["instructions"] if b["fits"] else None
    return f"{a['instructions'] / b:.3f}" if a["fits"] and b else "-"


def table(rows: list[dict]) -> str:
    lines = [
        BEGIN,
        "## Speed: instructions per inference (QEMU, exact counts)",
        "",
        "Written by `python benchmarks/qemu.py`. Instructions executed inside `NAME_invoke` for one",
        "sample, layer by layer (`--patch off`, as TFLM runs; the default `--patch auto` adds the",
        "extra MACs the patches table gives), counted by tinyc's QEMU TCG plugin (`-icount shift=0`; two runs of",
        "the same ELF and input give the same count, checked for every cell). Each model is built for each",
        "machine as `tinyc build --board MACHINE` builds it: M4 mps2-an386 and M7 mps2-an500 take the DSP",
        "kernels with wide weights (passes/widen.py); M55 mps3-an547 (512 KB ITCM + 512 KB DTCM: the big models",
        "do not fit) takes the Helium convolution, fully connected, depthwise and average pooling kernels",
        "(runtime_c/src/mve.c; weights packed for VMLADAVA, within the ITCM's budget) and the DSP code for the",
        "rest; M3 mps2-an385 (no DSP extension) runs the portable C, its fully connected and unpadded",
        "convolution layers with the input offset folded into the bias (passes/widen.py). Instructions, not",
        "cycles: a gather or scatter (the Helium depthwise and Add tables) counts as one instruction, though",
        "a core spends a beat or more per element on it. TFLM columns: the Cortex-M4",
        "counts in `../shared/models/models.json`, measured the same way with TFLite Micro (CMSIS-NN kernels,",
        "and reference kernels). *code*: the M4 firmware of the model alone (model, runtime, startup; no",
        "harness) less its constant tensors (weights, biases, multipliers, tables); the layers' parameter records",
        "and calls count as code. *weights* and *arena*: that build's (wide weights and their kernels' scratch",
        "included; the memory table gives the host project's); *arena (M55)*: the M55 build's, whose Helium",
        "depthwise plans its channel planes in the arena. *exact*: the M4 output equals TFLM's golden.",
        "",
        "| model | MACs | M4 | per MAC | M7 | M55 | M3 | TFLM+CMSIS-NN M4 | M4 / CMSIS-NN | TFLM ref M4 "
        "| M3 / TFLM ref | M55 / M4 | code (M4) | weights (M4) | arena (M4) | arena (M55) | exact |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        m4 = r["M4"]
        per_mac = f"{m4['instructions'] / r['macs']:.2f}" if m4["fits"] else "-"
        cm = f"{r['tflm_cmsisnn_m4']:,}" if r["tflm_cmsisnn_m4"] else "-"
        ref = f"{r['tflm_reference_m4']:,}" if r["tflm_reference_m4"] else "-"
        exact = {True: "yes", False: "no", None: "-"}[m4.get("exact")]
        code = f"{m4['code']:,}" if m4["fits"] and m4.get("code") is not None else "-"
        weights = f"{m4['weights']:,}" if m4["fits"] else "-"
        arena = f"{m4['arena']:,}" if m4["fits"] else "-"
        arena55 = f"{r['M55']['arena']:,}" if r["M55"]["fits"] else "-"
        lines.append(f"| {r['model']} | {r['macs']:,} | {_cell(m4)} | {per_mac} | {_cell(r['M7'])} | {_cell(r['M55'])} "
                     f"| {_cell(r['M3'])} | {cm} | {_ratio(m4, r['tflm_cmsisnn_m4'])} | {ref} "
                     f"| {_ratio(r['M3'], r['tflm_reference_m4'])} | {_ratio(r['M55'], m4)} | {code} | {weights} "
                     f"| {arena} | {arena55} | {exact} |")
    assert all(r[c]["repeatable"] for r in rows for c in CORES if r[c]["fits"]), "instruction counts differ run to run"
    assert all(r[c]["exact"] is not False for r in rows for c in CORES if r[c]["fits"]), "an output differs from TFLM"
    lines.append(END)
    return "\n".join(lines)


def main() -> None:
    run(__doc__, measure, table, BEGIN, END)


if __name__ == "__main__":
    main()
