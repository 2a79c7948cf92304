"""Training firmware on QEMU: exact instruction counts of a training step, an
inference and a commit of the persisted state, for the shared int8 models with
their ``sparse`` schemes (``tinyc train --board mps2-an386 --engine qemu``), and
the ELF's flash and RAM for the real board (stm32f746). ``python
benchmarks/training_firmware.py`` (about 5 min).

Each row: 8 samples of the model's training data, one epoch on QEMU mps2-an386
(Cortex-M4F, -icount: the same counts on every run), then the 8 evaluation
inferences and the commit; the counts vary from step to step only through the
data (a ReLU's zero gradients skip work), so mean, min and max are given. The
training firmware is the one tinyc writes, with its samples embedded.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.markdown import run  # noqa: E402
from benchmarks.training import INT8_SPELLING, MODELS  # noqa: E402
from tinyc import api  # noqa: E402
from tinyc.boards import get_board  # noqa: E402
from tinyc.train import firmware as F  # noqa: E402
from tinyc.train import run as tr  # noqa: E402
from tinyc.train.engine import build_training  # noqa: E402

BEGIN, END = "<!-- training-firmware:begin -->", "<!-- training-firmware:end -->"
SCHEMES = {
    "mlperf_ic_resnet8": INT8_SPELLING["mlperf_ic_resnet8/sparse"],
    "mlperf_vww_mbv1": "bias=last14; weight=-14,-10,-6@0.5,-4@0.25,-2@0.125,-1",
}
SAMPLES = 8
BOARD_SAMPLES = 2  # embedded in the stm32f746 link (VWW's 27 KB samples: 8 would not fit beside the slots)


def measure(shared: Path, reuse=None) -> list[dict]:
    rows = []
    for model, spec in SCHEMES.items():
        onnx_name, data_name, pixels = MODELS[model]
        path = shared / "mlperf_tiny" / onnx_name
        graph = api.load(path)
        classes = tr.classes_of(graph)
        data = tr.read_dataset(graph, shared / "training" / data_name, "train", pixels, classes)
        test = tr.read_dataset(graph, shared / "training" / data_name, "test", pixels, classes)
        b = build_training(copy.deepcopy(graph), tr.updates_for(path, spec), "m")
        x = tr.to_program_input(b.tp, data)[:SAMPLES]
        ex = tr.to_program_input(b.tp, test)[:SAMPLES]
        sched = F.Schedule(x, data.y[:SAMPLES], 1, 0.01, 0, ex, test.y[:SAMPLES])
        dev = F.run_on_qemu(b, get_board("mps2-an386"), sched)
        steps = dev.instructions[:SAMPLES]
        inferences = dev.instructions[SAMPLES:2 * SAMPLES]
        commit = dev.instructions[2 * SAMPLES]
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            few = F.Schedule(x[:BOARD_SAMPLES], data.y[:BOARD_SAMPLES], 1, 0.01, 0)
            board = F.build_firmware(Path(tmp), b, get_board("stm32f746"), few, on_qemu=False)
        rows.append({
            "model": model, "update": spec, "step_mean": float(np.mean(steps)), "step_min": int(min(steps)),
            "step_max": int(max(steps)), "inference_mean": float(np.mean(inferences)), "commit": int(commit),
            "state_bytes": b.tp.trainable_bytes(), "stack_used": dev.stack_used,
            "train_total_bytes": b.summary["train_total_bytes"], "f746_flash": board.flash_bytes,
            "f746_ram": board.ram_bytes + board.stack_bytes,
        })
        print(f"{model}: {rows[-1]}", file=sys.stderr, flush=True)
    return rows


def table(rows: list[dict]) -> str:
    lines = [
        BEGIN,
        "## Training firmware on QEMU: instructions per training step",
        "",
        "Written by `python benchmarks/training_firmware.py`: the firmware `tinyc train --board` writes, run on",
        "QEMU mps2-an386 (Cortex-M4F, exact counts), shared int8 models with their `sparse` schemes, 8 samples of",
        "the training data for one epoch, then 8 inferences and the commit of the persisted state (two",
        "CRC-checked slots). `step / inference`: how many inferences one training step costs. Flash and RAM: the",
        "same firmware linked for stm32f746 with 2 samples embedded (RAM includes the stack reserve; the last 512 KB",
        "of its flash hold the two slots of the persisted state).",
        "",
        "| model | update | instructions per step (mean; min-max) | per inference | step / inference | "
        "commit (state bytes) | stack used | training SRAM | stm32f746 flash | stm32f746 RAM |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | `{r['update']}` | {r['step_mean'] / 1e6:,.2f} M; {r['step_min'] / 1e6:,.2f}-"
            f"{r['step_max'] / 1e6:,.2f} M | {r['inference_mean'] / 1e6:,.2f} M | "
            f"{r['step_mean'] / r['inference_mean']:.2f}x | {r['commit'] / 1e6:,.2f} M ({r['state_bytes']:,} B) | "
            f"{r['stack_used']:,} B | {r['train_total_bytes']:,} B | {r['f746_flash']:,} B | {r['f746_ram']:,} B |")
    lines.append(END)
    return "\n".join(lines)


if __name__ == "__main__":
    run(__doc__, measure, table, BEGIN, END)
