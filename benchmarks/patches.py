"""Patch-based execution: layer-wise vs patch arena for every shared CNN, the
split and band count ``--patch auto`` chooses (at most 20% extra MACs), and the
MAC overhead, beside TinyEngine's patch-based figures where they are known.
``python benchmarks/patches.py`` (about 2 min).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.markdown import run  # noqa: E402
from tinyc import api  # noqa: E402
from tinyc.build import compile_c  # noqa: E402

BEGIN, END = "<!-- patches:begin -->", "<!-- patches:end -->"
MODELS = ["mcunet/mcunet_vww1.onnx", "mcunet/mcunet_320kb_imagenet.onnx", "mcunet/mcunetv2_large.onnx",
          "mcunet/mcunet_detection.onnx", "mlperf_tiny/vww_mbv1_int8.onnx", "mlperf_tiny/ic_resnet8_int8.onnx",
          "mlperf_tiny/kws_dscnn_int8.onnx", "mlperf_tiny/sww_int8.onnx"]
# TinyEngine's patch-based peak SRAM (the issue's figures: MCUNetV2's settings)
TINYENGINE = {"mcunet_vww1": ("2x2", 62352), "mcunetv2_large": ("4x4", 444168)}
MAX_OVERHEAD = 0.2


def measure(shared: Path, reuse=None) -> list[dict]:
    rows = []
    for rel in MODELS:
        path = shared / rel
        name = Path(rel).stem
        try:
            off = compile_c(api.load(path), path, patch="off")
        except Exception as e:  # a model tinyc cannot compile is listed, not measured
            rows.append({"model": name, "error": str(e).splitlines()[0]})
            continue
        start = time.time()
        auto = compile_c(api.load(path), path, patch="auto", max_overhead=MAX_OVERHEAD)
        seconds = time.time() - start
        p = auto.summary["patch"]
        rows.append({"model": name, "layerwise": off.plan.arena_size, "patch": auto.plan.arena_size,
                     "split": p["split"], "split_call": p.get("split_call"), "rows": p.get("rows"),
                     "overhead": p.get("mac_overhead"), "seconds": seconds})
        print(f"{name}: {rows[-1]}", file=sys.stderr, flush=True)
    return rows


def table(rows: list[dict]) -> str:
    lines = [
        BEGIN,
        "## Patch-based execution: the first stage by bands of rows",
        "",
        "Written by `python benchmarks/patches.py`: `tinyc build --patch auto --max-overhead 0.2` against",
        "`--patch off` (layer-wise) on the shared models. The stage is the program's first calls, up to the",
        "split tensor; each band of its rows is computed from the input rows its receptive field needs, bit-exact",
        "with layer-wise execution (tests/test_patch.py). `auto` keeps layer-wise when no plan beats it. Grids are",
        "bands of whole rows (R x 1) so far. Search time: the whole `tinyc build` with `--patch auto`, on this",
        "machine. TinyEngine: its patch-based peak SRAM with MCUNetV2's grids.",
        "",
        "| model | layer-wise arena B | patch arena B | saving | split (call) | grid | extra MACs | build s | "
        "TinyEngine (grid) B |",
        "|---|---:|---:|---:|---|---|---:|---:|---:|",
    ]
    for r in rows:
        te = TINYENGINE.get(r["model"])
        te_text = f"{te[1]:,} ({te[0]})" if te else "—"
        if "error" in r:
            lines.append(f"| {r['model']} | — | — | — | {r['error']} | | | | {te_text} |")
            continue
        if r["split"] is None:
            lines.append(f"| {r['model']} | {r['layerwise']:,} | {r['patch']:,} | 1.00x | none beats layer-wise | "
                         f"| | {r['seconds']:.1f} | {te_text} |")
            continue
        split = r["split"] if len(r["split"]) <= 28 else r["split"][:25] + "..."
        lines.append(f"| {r['model']} | {r['layerwise']:,} | {r['patch']:,} | {r['layerwise'] / r['patch']:.2f}x | "
                     f"`{split}` ({r['split_call']}) | {r['rows']}x1 | {100 * r['overhead']:.1f}% | "
                     f"{r['seconds']:.1f} | {te_text} |")
    lines.append(END)
    return "\n".join(lines)


if __name__ == "__main__":
    run(__doc__, measure, table, BEGIN, END)
