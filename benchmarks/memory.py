#!/usr/bin/env python3
"""Peak SRAM for activations: tinyc's arena against TFLite Micro and TinyEngine.

For every model in ../shared/models/models.json this compiles the int8 ONNX
model with tinyc and reads, from the same run:
  - tinyc's arena (every activation, scratch buffer, the input and the output),
    built for a core without DSP (rp2040: the portable kernels need no scratch,
    as TFLM's reference kernels) and for one with it (the default: the DSP
    paths' scratch planned in the arena);
  - its lower bound (largest sum of live bytes at any step, for the chosen order),
    with and without in-place sharing, and the arena without in-place sharing;
  - TFLM's planned arena ("head", from goldens/summary.json, measured with PyPI
    tflite-micro's reference kernels on the same .tflite; it also holds input and
    output), and TFLM with CMSIS-NN's whole arena on a Cortex-M4 (models.json);
  - TinyEngine's published peak SRAM where one exists (MCUNet).
and rewrites the "memory" section of BENCHMARKS.md.

    python benchmarks/memory.py [--shared ../shared/models] [--out BENCHMARKS.md]
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.markdown import run  # noqa: E402
from tinyc import api  # noqa: E402

TINYENGINE_PEAK = {  # bytes: TinyEngine's peak SRAM for the same models, as given in issue 4
    "mcunet_vww1": 93_992,
    "mcunet_in3_320kb": 266_344,
}
BEGIN, END = "<!-- memory:begin -->", "<!-- memory:end -->"


def measure(shared: Path) -> list[dict]:
    index = json.loads((shared / "models.json").read_text())
    summary = json.loads((shared / "goldens" / "summary.json").read_text())
    rows = []
    for name, info in index.items():
        t0 = time.time()
        s = api.compile_c(api.load(shared / info["onnx_int8"]), info["onnx_int8"], board="rp2040",
                          patch="off").summary
        plain = api.compile_c(api.load(shared / info["onnx_int8"]), info["onnx_int8"], board="rp2040",
                              in_place=False, patch="off").summary
        dsp = api.compile_c(api.load(shared / info["onnx_int8"]), info["onnx_int8"], patch="off").summary
        rows.append({
            "model": name,
            "arena": s["arena_bytes"],
            "lower_bound": s["lower_bound_bytes"],
            "lower_bound_no_inplace": s["lower_bound_no_inplace_bytes"],
            "arena_no_inplace": plain["arena_bytes"],
            "strategy": s["plan_strategy"],
            "order": s["plan_order"],
            "in_place_steps": s["in_place_steps"],
            "io": s["input_bytes"] + s["output_bytes"],
            "tflm_head": summary[name]["tflm_arena"]["head"],
            "arena_dsp": dsp["arena_bytes"],
            "tflm_cmsisnn": info.get("measured", {}).get("tflm_m4_arena_used_bytes"),
            "tinyengine": TINYENGINE_PEAK.get(name),
            "seconds": round(time.time() - t0, 2),
        })
        print(f"{name}: arena {s['arena_bytes']:,} B, with DSP scratch {dsp['arena_bytes']:,} B", file=sys.stderr)
    return rows


def table(rows: list[dict]) -> str:
    lines = [
        BEGIN,
        "## Peak SRAM for activations (arena)",
        "",
        "Written by `python benchmarks/memory.py`. Layer by layer (`--patch off`; the patches",
        "table below gives the default `--patch auto`). All arenas include the model's input and",
        "output tensors (TFLM's \"head\" does too). Kernel for kernel: *tinyc arena* is built",
        "for a core without DSP (rp2040: the portable kernels need no scratch) against",
        "TFLM's planned arena (head) with its reference kernels (PyPI `tflite-micro`, the same",
        ".tflite, `goldens/summary.json`); *with DSP scratch* is the default build, whose",
        "fast kernels' scratch is planned in the arena, against TFLM with CMSIS-NN on a",
        "Cortex-M4 (its whole arena, CMSIS-NN's scratch and TFLM's own records included:",
        "models.json) and TinyEngine's peak SRAM (the figures issue 4 gives). *LB*: the",
        "largest sum of bytes live at one step of tinyc's execution order; *no in-place*: the",
        "same planner with in-place sharing (elementwise ops, depthwise convolution) off.",
        "",
        "| model | tinyc arena | LB | no in-place arena | LB no in-place | arena / LB no in-place "
        "| TFLM head | tinyc / TFLM | with DSP scratch | TFLM+CMSIS-NN M4 | ratio | TinyEngine | ratio "
        "| placement, order, in-place steps |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        te = f"{r['tinyengine']:,}" if r["tinyengine"] else "-"
        te_ratio = f"{r['arena_dsp'] / r['tinyengine']:.3f}" if r["tinyengine"] else "-"
        cm = f"{r['tflm_cmsisnn']:,}" if r["tflm_cmsisnn"] else "-"
        cm_ratio = f"{r['arena_dsp'] / r['tflm_cmsisnn']:.3f}" if r["tflm_cmsisnn"] else "-"
        lines.append(
            f"| {r['model']} | {r['arena']:,} | {r['lower_bound']:,} | {r['arena_no_inplace']:,} | "
            f"{r['lower_bound_no_inplace']:,} | {r['arena'] / r['lower_bound_no_inplace']:.3f} | {r['tflm_head']:,} | "
            f"{r['arena'] / r['tflm_head']:.3f} | {r['arena_dsp']:,} | {cm} | {cm_ratio} | {te} | {te_ratio} | "
            f"{r['strategy']}, {r['order']}, {r['in_place_steps']} |"
        )
    total_t = sum(r["arena"] for r in rows)
    total_f = sum(r["tflm_head"] for r in rows)
    lines += ["", f"Sum over the {len(rows)} models: tinyc {total_t:,} B, TFLM {total_f:,} B "
                  f"({total_t / total_f:.3f}x).", END]
    return "\n".join(lines)


def main() -> None:
    run(__doc__, measure, table, BEGIN, END)


if __name__ == "__main__":
    main()
