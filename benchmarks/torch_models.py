#!/usr/bin/env python3
"""Models as PyTorch users export them (issue 15): does tinyc build them, are
they bit-exact, and how good is tinyc's int8 against onnxruntime's own static
int8 quantization with the same calibration data?

For every model of benchmarks/torch_export.py, exporter (TorchScript, dynamo)
and opset (13, 17) this
  - exports the float model (the dynamo exporter writes opset 18 whatever it is
    asked: the table gives the opset in the file);
  - runs the float model in onnxruntime on 32 evaluation inputs;
  - quantizes it with tinyc (``--calib``, minmax, 32 calibration inputs), builds
    the C for the host, runs it, and checks it against tinyc's int8 reference
    bit for bit; builds for stm32f746 when the report says it fits;
  - quantizes it with onnxruntime's ``quantize_static`` (QDQ, int8 activations
    and per-channel int8 weights, MinMax) on the same calibration inputs and runs
    that in onnxruntime;
  - reports each int8 model's SQNR against the float outputs:
    10 log10(sum y^2 / sum (y - y_int8)^2) over all evaluation outputs,
and, for one export of each model (TorchScript, opset 17), runs the firmware
on QEMU's Cortex-M4 (mps2-an386) to count the instructions of one inference
exactly and check its output against the int8 reference; then rewrites the
"PyTorch exports" section of BENCHMARKS.md.

    pip install -e .[torch]          # torch, torchvision, onnxscript (not in the default install)
    python benchmarks/torch_models.py [--models a,b] [--out BENCHMARKS.md] [--work DIR]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.markdown import write_section  # noqa: E402
from benchmarks.torch_export import EXPORTERS, MODELS, OPSETS, export, sample_inputs  # noqa: E402

CALIB, EVAL = 32, 32
BOARD = "stm32f746"
M4 = "mps2-an386"
COUNTED = ("torchscript", 17)  # the export whose firmware runs on QEMU
BEGIN, END = "<!-- torch:begin -->", "<!-- torch:end -->"


def sqnr_db(ref: np.ndarray, test: np.ndarray) -> float:
    noise = float(np.sum((ref.astype(np.float64) - test.astype(np.float64)) ** 2))
    signal = float(np.sum(ref.astype(np.float64) ** 2))
    return float("inf") if noise == 0 else 10 * np.log10(signal / noise)


def _ort_outputs(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {name: x[i:i + 1]})[0] for i in range(len(x))])


def ort_static_int8(path: Path, calib: np.ndarray, out: Path) -> Path:
    """onnxruntime's own static int8 quantization of the model (QDQ, per-channel
    weights, MinMax calibration on ``calib``)."""
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    name = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).get_inputs()[0].name

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter([{name: calib[i:i + 1]} for i in range(len(calib))])

        def get_next(self):
            return next(self.items, None)

    pre = out.with_suffix(".pre.onnx")
    try:
        quant_pre_process(str(path), str(pre))
    except Exception:  # noqa: BLE001 - pre-processing is an optimization; quantize the file as it is
        pre = path
    quantize_static(str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
    return out


def measure_one(model: str, exporter: str, opset: int, work: Path) -> dict:
    import onnx

    from tinyc import api
    from tinyc.build import run_program_c
    from tinyc.data import to_batch
    from tinyc.engines import run_program_ref

    path = export(model, exporter, opset, work)
    proto = onnx.load(str(path))
    shape = [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    calib = sample_inputs(shape, CALIB, seed=1)
    x = sample_inputs(shape, EVAL, seed=2)
    np.save(work / f"{path.stem}_calib.npy", calib)
    row = {"model": model, "exporter": exporter, "opset": next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")),
           "asked_opset": opset}
    y_float = _ort_outputs(path, x)

    graph = api.load(path)
    row["macs"] = api.inspect(graph)["totals"]["macs"]
    api.quantize_with_calibration(graph, work / f"{path.stem}_calib.npy")
    build = api.compile_c(graph, path)
    batch = to_batch(graph, {graph.inputs[0]: x})
    c_out = run_program_c(build, batch)
    ref_out = run_program_ref(build.program, batch)
    key = next(iter(c_out))
    row["bit_exact"] = bool(all(np.array_equal(c_out[k], ref_out[k]) for k in c_out))
    row["sqnr_tinyc"] = sqnr_db(y_float, np.asarray(c_out[key]).reshape(y_float.shape))
    row["arena"] = build.summary["arena_bytes"]
    row.update(board_build(build, work / f"{path.stem}_{BOARD}"))

    ort_q = ort_static_int8(path, calib, work / f"{path.stem}_ort_int8.onnx")
    row["sqnr_ort"] = sqnr_db(y_float, _ort_outputs(ort_q, x))

    # tinyc's other calibration: the clipping range with the least round-trip error
    graph = api.load(path)
    api.quantize_with_calibration(graph, work / f"{path.stem}_calib.npy", method="mse")
    mse_build = api.compile_c(graph, path)
    y_mse = run_program_ref(mse_build.program, to_batch(graph, {graph.inputs[0]: x}))
    row["sqnr_tinyc_mse"] = sqnr_db(y_float, np.asarray(next(iter(y_mse.values()))).reshape(y_float.shape))
    if (exporter, opset) == COUNTED:
        row.update(qemu_m4(build, batch))
    return row


def board_build(build, out_dir: Path) -> dict:
    """What ``tinyc build --board stm32f746`` does: the firmware project, linked
    with the Arm toolchain; a model that does not fit is refused (DoesNotFit)."""
    from tinyc.boards import get_board
    from tinyc.build import build_firmware
    from tinyc.errors import DoesNotFit

    try:
        summary = build_firmware(build, get_board(BOARD), out_dir)
    except DoesNotFit:
        return {"fits": False}
    return {"fits": True, "linked": bool(summary.get("toolchain")), "board_flash": summary.get("flash_bytes"),
            "board_ram": summary.get("ram_bytes")}


def qemu_m4(build, batch) -> dict:
    """Instructions of one inference on QEMU's Cortex-M4 (exact: counted by a TCG
    plugin, the same on every run) and whether its output is the int8 reference's."""
    from tinyc import api
    from tinyc.boards import get_board
    from tinyc.codegen.firmware import build_elf
    from tinyc.errors import TinycError
    from tinyc.sim import qemu

    feeds = api.program_feeds(build.program, batch)
    program = build.program
    with tempfile.TemporaryDirectory(prefix="tinyc-torch-qemu-") as tmp:
        root = Path(tmp)
        try:
            fw = build_elf(root, build, get_board(M4), get_board(M4), "qemu")
        except TinycError as e:
            return {"m4": f"does not fit: {e}"}
        (root / "in.bin").write_bytes(b"".join(feeds[n][0].tobytes() for n in program.inputs))
        run_ = qemu.run_qemu(fw.elf, M4, root, timeout=900)
        raw = np.frombuffer((root / "out.bin").read_bytes(), dtype=np.int8)
    from tinyc.reference import run_int8

    expected = run_int8(program, {n: feeds[n][0] for n in program.inputs})
    want = np.concatenate([expected[n].reshape(-1) for n in program.outputs])
    return {"m4_instructions": run_.instructions[0], "m4_exact": bool(np.array_equal(raw[:want.size], want)),
            "m4_flash": fw.flash_bytes}


def measure(models, work: Path, log=print) -> list[dict]:
    rows = []
    for model in models:
        for exporter in EXPORTERS:
            for opset in OPSETS:
                t0 = time.time()
                try:
                    row = measure_one(model, exporter, opset, work)
                except Exception as e:  # noqa: BLE001 - a failure is a row of the table
                    row = {"model": model, "exporter": exporter, "asked_opset": opset,
                           "error": f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"}
                log(f"{model} {exporter} {opset}: {row} ({time.time() - t0:.0f} s)")
                rows.append(row)
    return rows


def _board_cell(r: dict) -> str:
    if not r["fits"]:
        return "no"
    return f"yes ({r['board_flash'] / 1024:.0f} KB flash, {r['board_ram'] / 1024:.0f} KB RAM)" if r.get("linked") \
        else "yes (report)"


def table(rows: list[dict]) -> str:
    lines = [
        BEGIN,
        "## PyTorch exports: torchvision and small transformers in int8, against onnxruntime",
        "",
        "Generated by `python benchmarks/torch_models.py` (needs the `torch` extra). Random weights, BatchNorm "
        f"statistics re-estimated on random data; {CALIB} calibration and {EVAL} evaluation inputs (smooth random "
        "fields, the same for both quantizers). SQNR of the int8 model's outputs against the float model's "
        "(onnxruntime), in dB; onnxruntime's is `quantize_static` (QDQ, per-channel int8 weights, MinMax). "
        "\"stm32f746 firmware\": the project `tinyc build --board stm32f746` writes, linked (flash and RAM of the model "
        "with the runtime and startup code), or \"no\" where tinyc refuses it as too large. "
        "\"C = ref\": the generated C's outputs equal tinyc's int8 reference bit for bit. The dynamo exporter writes "
        "opset 18 and converts down; where the conversion fails (LayerNormalization has no opset-13 form, nor do "
        "ReduceMean's axes as an input below 18) the file stays at 18.",
        "",
        "| model | exporter | opset (asked → file) | MMACs | arena | stm32f746 firmware | C = ref | SQNR tinyc minmax | "
        "SQNR tinyc mse | SQNR onnxruntime | best tinyc − ort |",
        "|---|---|---|---:|---:|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['exporter']} | {r['asked_opset']} | — | — | — | — | {r['error']} | | | |")
            continue
        best = max(r["sqnr_tinyc"], r["sqnr_tinyc_mse"])
        lines.append(
            f"| {r['model']} | {r['exporter']} | {r['asked_opset']} → {r['opset']} | {r['macs'] / 1e6:.2f} | "
            f"{r['arena']:,} B | {_board_cell(r)} | {'yes' if r['bit_exact'] else '**no**'} | "
            f"{r['sqnr_tinyc']:.1f} | {r['sqnr_tinyc_mse']:.1f} | {r['sqnr_ort']:.1f} | {best - r['sqnr_ort']:+.1f} |")
    counted = [r for r in rows if "m4_instructions" in r or "m4" in r]
    lines += [
        "",
        f"One inference on QEMU's Cortex-M4 ({M4}, the {COUNTED[0]} opset-{COUNTED[1]} export; instructions counted "
        "exactly by QEMU's TCG plugin; \"QEMU = ref\": its output equals the int8 reference bit for bit):",
        "",
        "| model | arena | flash (firmware) | M4 instructions | per MAC | QEMU = ref |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for r in counted:
        if "m4_instructions" not in r:
            lines.append(f"| {r['model']} | {r['arena']:,} B | — | {r['m4']} | | |")
            continue
        lines.append(f"| {r['model']} | {r['arena']:,} B | {r['m4_flash']:,} B | {r['m4_instructions'] / 1e6:.2f} M | "
                     f"{r['m4_instructions'] / r['macs']:.2f} | {'yes' if r['m4_exact'] else '**no**'} |")
    lines += ["", END]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--out", type=Path, default=REPO / "BENCHMARKS.md")
    ap.add_argument("--work", type=Path, default=None, help="keep the exported and quantized models here")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="tinyc-torch-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        rows = measure(args.models.split(","), work, log=lambda m: print(m, file=sys.stderr))
    write_section(args.out, BEGIN, END, table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
