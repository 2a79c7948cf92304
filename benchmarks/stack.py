#!/usr/bin/env python3
"""RAM beside the arena: the stack reserve the firmware links in and the stack it
really uses, for every shared model on QEMU's Cortex-M4 (mps2-an386).

Each model is built for the board, its first golden sample runs on QEMU with the
stack painted, and the high-water mark is read back (``tinyc run --engine
qemu`` reports it as ``stack_used_bytes``; the run fails when it exceeds the
reserve). The output is checked against TFLM's golden. ``--before rows.json``
adds the columns of an earlier run (``--json`` of this script on an older
commit), e.g. before kernel scratch moved from the stack into the arena.

    python benchmarks/stack.py [--json rows.json] [--before old.json]   (about 5 min)
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.markdown import write_section  # noqa: E402
from tinyc import api  # noqa: E402
from tinyc.boards import get_board  # noqa: E402
from tinyc.build import run_program_qemu  # noqa: E402

BOARD = "mps2-an386"
BEGIN, END = "<!-- stack:begin -->", "<!-- stack:end -->"


def measure(shared: Path) -> list[dict]:
    index = json.loads((shared / "models.json").read_text())
    board = get_board(BOARD)
    rows = []
    for name, info in index.items():
        t0 = time.time()
        path = shared / info["onnx_int8"]
        graph = api.load(path)
        build = api.compile_c(graph, path, board=BOARD, patch="off")
        gold = np.load(shared / "goldens" / f"{name}.npz")
        batch = api.to_batch(graph, {graph.inputs[0]: gold["inputs"][:1]})
        outs, report = run_program_qemu(build, batch, board)
        exact = bool(np.array_equal(np.asarray(outs[graph.outputs[0]]).reshape(gold["outputs"][:1].shape),
                                    gold["outputs"][:1]))
        row = {"model": name, "arena": build.summary["arena_bytes"], "reserve": report["stack_bytes"],
               "used": report["stack_used_bytes"], "ram": report["ram_bytes"], "exact": exact,
               "instructions": report["instructions"][0],
               "tflm_stack": info.get("measured", {}).get("tflm_m4_stack_bytes"),
               "tflm_arena": info.get("measured", {}).get("tflm_m4_arena_used_bytes"),
               "seconds": round(time.time() - t0, 1)}
        print(f"{name}: arena {row['arena']}, stack reserve {row['reserve']}, used {row['used']}", file=sys.stderr)
        rows.append(row)
    return rows


def _n(v) -> str:
    return f"{v:,}" if isinstance(v, int) else "-"


def table(rows: list[dict], before: dict[str, dict] | None, before_note: str) -> str:
    assert all(r["used"] <= r["reserve"] for r in rows), "a painted stack exceeds its reserve"
    lines = [
        BEGIN,
        "## Stack: the reserve linked in and the stack used (QEMU Cortex-M4)",
        "",
        "Written by `python benchmarks/stack.py`. Each shared model built for mps2-an386 (`--patch off`)",
        "and run on QEMU with its first golden sample; *reserve*: the stack the linker script sets (from the",
        "call graph gcc writes, plus a margin); *used*: the painted stack's high-water mark after",
        "the run (it must stay below the reserve, or the run fails). *arena + reserve*: the SRAM",
        "beside statics. TFLM: the Cortex-M4 figures in `../shared/models/models.json`.",
    ]
    if before:
        lines += ["", f"*before*: {before_note}"]
    head = "| model | arena | stack reserve | stack used | arena + reserve |"
    rule = "|---|---:|---:|---:|---:|"
    if before:
        head += " before: arena | before: reserve | before: used | before: arena + reserve |"
        rule += "---:|---:|---:|---:|"
    head += " TFLM arena + stack | exact |"
    rule += "---:|---|"
    lines += ["", head, rule]
    for r in rows:
        cells = [r["model"], _n(r["arena"]), _n(r["reserve"]), _n(r["used"]), _n(r["arena"] + r["reserve"])]
        if before:
            b = before.get(r["model"])
            cells += ([_n(b["arena"]), _n(b["reserve"]), _n(b["used"]), _n(b["arena"] + b["reserve"])] if b
                      else ["-"] * 4)
        tflm = r["tflm_arena"] + r["tflm_stack"] if r["tflm_arena"] and r["tflm_stack"] else None
        cells += [_n(tflm), "yes" if r["exact"] else "no"]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append(END)
    return "\n".join(lines)


def main() -> None:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "models")
    ap.add_argument("--out", type=Path, default=REPO / "BENCHMARKS.md")
    ap.add_argument("--json", type=Path, help="also write the measured rows here")
    ap.add_argument("--before", type=Path, help="rows an earlier --json wrote, shown as the 'before' columns")
    ap.add_argument("--before-note", default="the same script on an earlier commit",
                    help="what the 'before' columns are")
    args = ap.parse_args()
    rows = measure(args.shared)
    before = {r["model"]: r for r in json.loads(args.before.read_text())} if args.before else None
    write_section(args.out, BEGIN, END, table(rows, before, args.before_note))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
