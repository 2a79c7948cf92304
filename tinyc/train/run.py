"""``tinyc train``: fine-tune a classifier on labelled data with the generated C
(or the numpy specs), then write the C project and the fine-tuned ONNX model.

Data: an .npz with ``train_x`` (uint8 images, N x H x W x C, or float samples in
the model's input layout) and ``train_y`` (integer labels); ``--eval`` reads
``test_x`` / ``test_y`` of its file. Pixels map onto ``pixel_range`` as for
calibration images.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data import Batch, external_shape
from ..errors import TinycError
from ..ir import Graph
from .autodiff import _final_softmax
from .spec import LayerUpdate, model_layers, parse_update

MAX_SAMPLES = 1_000_000


@dataclass
class Dataset:
    x: np.ndarray  # float32 samples in the model input's external layout (N, *shape[1:])
    y: np.ndarray  # int64 labels


def read_dataset(graph: Graph, path, split: str, pixel_range: tuple[float, float], classes: int) -> Dataset:
    """``{split}_x`` / ``{split}_y`` of an .npz, checked against the model."""
    from ..data import read_npz_members

    path = Path(str(path))
    kx, ky = f"{split}_x", f"{split}_y"
    arrays = read_npz_members(path, (kx, ky))
    x, y = arrays[kx], arrays[ky]
    name = graph.inputs[0]
    shape = tuple(external_shape(graph, name))
    if y.ndim != 1 or y.dtype.kind not in "iu":
        raise TinycError(f"{path}: {ky} must be a 1-D array of integer class labels, not {y.dtype}{list(y.shape)}")
    if x.shape[:1] != y.shape or not 0 < len(y) <= MAX_SAMPLES:
        raise TinycError(f"{path}: {kx} has {x.shape[0] if x.ndim else 0} samples and {ky} {len(y)} labels; "
                         f"give the same number (1 to {MAX_SAMPLES:,})")
    bad = (y < 0) | (y >= classes)
    if bad.any():
        k = int(np.argmax(bad))
        raise TinycError(f"{path}: {ky}[{k}] = {int(y[k])} is not a class of this model (0 to {classes - 1})")
    if x.dtype == np.uint8:
        if len(shape) != 4:
            raise TinycError(f"{path}: {kx} holds images, but the model's input is {list(shape)}, not one image")
        channels_last = x.shape[1:] == shape[1:]
        if not channels_last and x.shape[1:] != (shape[2], shape[3], shape[1]):
            raise TinycError(f"{path}: {kx} images are {list(x.shape[1:])} (H x W x C); the model takes "
                             f"{list(shape[1:])}: resize the images")
        lo, hi = pixel_range
        xf = x.astype(np.float32) * np.float32((hi - lo) / 255.0) + np.float32(lo)
        if not channels_last:
            xf = xf.transpose(0, 3, 1, 2)
    elif x.dtype.kind == "f":
        if x.shape[1:] != shape[1:]:
            raise TinycError(f"{path}: {kx} samples are {list(x.shape[1:])}; the model takes {list(shape[1:])}")
        if not np.isfinite(x).all():
            raise TinycError(f"{path}: {kx} holds NaN or infinite values")
        xf = x.astype(np.float32)
    else:
        raise TinycError(f"{path}: {kx} is {x.dtype}; give uint8 images or float32 samples")
    return Dataset(np.ascontiguousarray(xf), y.astype(np.int64))


def to_program_input(tp, data: Dataset) -> np.ndarray:
    """Float samples -> the program's input (internal layout) as NAME_invoke takes
    it: quantized as TFLM does for an int8 program, as they are for a float one."""
    from ..engines import program_feeds

    name = tp.inference.inputs[0]
    graph = tp.inference.graph
    if graph.tensors[name].dtype == np.float32:
        perm = graph.input_perm.get(name)
        x = data.x[:, None]
        return np.ascontiguousarray(x.transpose((0,) + tuple(p + 1 for p in perm)) if perm else x, np.float32)
    batch = Batch({name: data.x[:, None]}, "batch")
    return program_feeds(tp.inference, batch)[name]


def classes_of(graph: Graph) -> int:
    softmax = _final_softmax(graph)
    return int(graph.tensors[softmax.inputs[0]].shape[-1])


def parse_lr(lr) -> float:
    try:
        value = float(lr)
    except (TypeError, ValueError):
        value = float("nan")
    if not np.isfinite(value) or value <= 0:
        raise TinycError(f"--lr {lr!r}: give a positive number, e.g. 0.01")
    return value


def updates_for(model_path, spec: str) -> list[LayerUpdate]:
    return parse_update(spec, model_layers(model_path))


def write_onnx(model_path, tp, out_path: Path) -> None:
    """The input ONNX file with the trained parameters written into their
    initializers, in the file's own layouts: int8 / int32 in a QDQ model (the
    trained model exactly), their real values in a float model that --calib
    quantized (recalibrating it gives a model close to, not equal to, the trained one)."""
    import onnx
    from onnx import numpy_helper

    from .autodiff import to_onnx_layout

    model = onnx.load(str(model_path))
    inits = {t.name: t for t in model.graph.initializer}
    for p in tp.params:
        layer = p.param.update.layer
        target = layer.bias if p.param.kind == "bias" else layer.weight
        init = inits.get(target) if target else None
        if init is None:
            raise TinycError(f"{layer.describe()}: its {p.param.kind} is not an initializer of {model_path}; "
                             "tinyc cannot write the trained value back")
        old = numpy_helper.to_array(init)
        t = tp.graph.tensors[p.tensor]
        value = to_onnx_layout(p.param, t.data)
        if old.dtype.kind == "f" and t.quant is not None:  # a float model --calib quantized: the values, dequantized
            value = to_onnx_layout(p.param, t.quant.dequantize(t.data)).astype(old.dtype)
        if value.shape != old.shape or value.dtype != old.dtype:
            raise TinycError(f"{layer.describe()}: the trained {p.param.kind} is {value.dtype}{list(value.shape)}, "
                             f"the file's initializer {old.dtype}{list(old.shape)}; tinyc cannot write it back")
        init.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(value), init.name))
    onnx.save(model, str(out_path))


def dump_gradients(graph: Graph, updates: list[LayerUpdate], name: str, rounding: str, data: Dataset,
                   engine: str, precision: str = "int8", max_step: int = 1) -> dict[str, np.ndarray]:
    """Per-sample loss and gradients of the updated parameters for the model as
    given (lr 0: nothing changes), keys ``loss`` and ``grad/<ONNX initializer>``
    (the updated channels, in the file's layout)."""
    from .autodiff import to_onnx_layout
    from .engine import build_training
    from .lower import run_step

    b = build_training(copy.deepcopy(graph), updates, name, rounding, fused=False, precision=precision,
                       max_step=max_step)
    params = b.tp.update_order()
    x_q, labels = to_program_input(b.tp, data), data.y
    per_sample: list[list[np.ndarray]] = []
    losses = []
    if engine == "c":
        from .engine import CTrainer

        trainer = CTrainer(b, cflags=["-DTINYC_TRAIN_OBSERVE=tinyc_train_observe"])
        try:
            raw = np.frombuffer(trainer.replay([(int(y), 0.0, x) for x, y in zip(x_q, labels)], False), np.float32)
        finally:
            trainer.close()
        sizes = [b.tp.graph.tensors[p.param.grad].size for p in params]
        at = 0
        for _ in range(len(labels)):  # per step: the gradients as they are made, then the loss
            grads = []
            for p, n in zip(params, sizes):
                grads.append(raw[at:at + n].reshape(b.tp.graph.tensors[p.param.grad].shape))
                at += n
            per_sample.append(grads)
            losses.append(raw[at])
            at += 1
    else:
        for x, y in zip(x_q, labels):
            seen: dict[str, np.ndarray] = {}

            def observe(p, g, seen=seen):
                seen[p.tensor] = np.array(g)

            loss, _ = run_step(b.tp, x, int(y), 0.0, 0, observe)
            losses.append(loss)
            per_sample.append([seen[p.tensor].reshape(b.tp.graph.tensors[p.param.grad].shape) for p in params])
    out = {"loss": np.array(losses, np.float32)}
    for j, p in enumerate(params):
        layer = p.param.update.layer
        key = layer.bias if p.param.kind == "bias" else layer.weight
        out[f"grad/{key or p.tensor}"] = np.stack([to_onnx_layout(p.param, s[j]) for s in per_sample])
    return out


def onnx_bytes(model_path, tp) -> bytes:
    """write_onnx into memory (so that nothing is written when it fails)."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="tinyc-onnx-") as tmp:
        out = Path(tmp) / "model.onnx"
        write_onnx(model_path, tp, out)
        return out.read_bytes()


def accuracy(outputs: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy of int8 outputs (the final Softmax's; first of equal maxima)."""
    return float(np.mean(np.argmax(outputs.reshape(len(labels), -1), axis=1) == labels))


def train_model(graph: Graph, model_path, updates: list[LayerUpdate], data: Dataset, eval_data: Dataset | None,
                *, name: str, epochs: int, lr: float, seed: int, engine: str, rounding: str, precision: str = "int8",
                max_step: int = 1, progress=None, log=None) -> tuple[object, dict]:
    """Fine-tune the model (its int8 graph, or with ``precision`` "float" its
    float graph); returns (the TrainBuild with its trained parameters and
    regenerated C files, the summary)."""
    from ..codegen.c import generate
    from .engine import CTrainer, RefTrainer, build_training, memory_of

    pristine = copy.deepcopy(graph)
    b = build_training(graph, updates, name, rounding, source=Path(str(model_path)).name, precision=precision,
                       max_step=max_step)
    summary = {"model": str(model_path), "name": name, "engine": engine, "precision": precision,
               "epochs": epochs, "lr": lr, "seed": seed, "train_samples": len(data.y)}
    summary.update(b.summary)
    try:
        full = memory_of(pristine, updates_for(model_path, "full"), rounding, precision)
        summary["full_backprop_total_bytes"] = full["total_bytes"]
        summary["full_backprop_arena_bytes"] = full["arena_bytes"]
        summary["full_backprop_trainable_bytes"] = full["trainable_bytes"]
    except TinycError as e:
        summary["full_backprop_total_bytes"] = None
        summary["full_backprop_note"] = str(e)
    x_q = to_program_input(b.tp, data)
    eval_q = to_program_input(b.tp, eval_data) if eval_data is not None else None
    trainer = CTrainer(b, seed) if engine == "c" else RefTrainer(b, seed)
    order_rng = np.random.default_rng(seed)
    history = []
    try:
        if eval_q is not None:
            summary["test_accuracy_before"] = accuracy(trainer.predict(eval_q), eval_data.y)
        chunk = max(1, min(256, len(data.y)))
        for epoch in range(epochs):
            order = order_rng.permutation(len(data.y))
            losses = []
            for at in range(0, len(order), chunk):
                idx = order[at:at + chunk]
                losses.append(trainer.steps(x_q[idx], data.y[idx], lr))
                if progress is not None:
                    progress(len(idx))
            loss = float(np.mean(np.concatenate(losses)))
            entry = {"epoch": epoch + 1, "loss": loss}
            if eval_q is not None:
                entry["test_accuracy"] = accuracy(trainer.predict(eval_q), eval_data.y)
            history.append(entry)
            if log is not None:
                log(entry)
        if engine == "c":  # the C's trained state into the graph, for the files written below
            for tname, value in trainer.params().items():
                t = b.tp.graph.tensors[tname]
                t.data = value.reshape(t.shape)
    finally:
        if engine == "c":
            trainer.close()
    summary["history"] = history
    if eval_q is not None:
        summary["test_accuracy"] = history[-1]["test_accuracy"] if history else summary["test_accuracy_before"]
        summary["test_samples"] = len(eval_data.y)
    b.files = generate(b.tp.inference, b.plan, name, Path(str(model_path)).name, train=b.tp, train_plan=b.train_plan)
    return b, summary


def project_files(b, summary: dict) -> dict[str, str | bytes]:
    """The trained project's files: the generated C, the runtime and tinyc.json."""
    import json

    from ..codegen.c import runtime_files
    from ..project import interface

    files: dict[str, str | bytes] = dict(b.files)
    for rel, src in runtime_files().items():
        files[rel] = src.read_bytes()
    files["tinyc.json"] = json.dumps({**summary, "interface": interface(b.tp.inference)}, indent=1) + "\n"
    return files


def write_files(out_dir, files: dict[str, str | bytes], products: tuple[str, ...] = ()) -> None:
    from ..build import replace_dir

    def fill(root: Path) -> None:
        for rel, content in files.items():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, str):
                (root / rel).write_text(content)
            else:
                (root / rel).write_bytes(content)

    replace_dir(out_dir, fill, products)


def write_npz(path, arrays: dict[str, np.ndarray]) -> None:
    import io

    from ..data import write_file

    buf = io.BytesIO()
    np.savez(buf, **arrays)
    write_file(Path(str(path)), buf.getvalue())


def describe(summary: dict, out_dir) -> str:
    kb = 1024
    lines = [f"wrote {out_dir}: {summary['name']}.c/.h ({summary['name']}_invoke, {summary['name']}_train_step) "
             f"and {summary['name']}.onnx, the fine-tuned {summary['precision']} model"]
    if "train_arena_bytes" in summary:
        full = summary.get("full_backprop_total_bytes")
        full_text = f"; full backprop {full / kb:,.1f} KB" if full else ""
        lines.append(f"training SRAM {summary['train_total_bytes'] / kb:,.1f} KB: arena "
                     f"{summary['train_arena_bytes']:,} B + trainable parameters and state "
                     f"{summary['trainable_bytes']:,} B{full_text}")
        if summary.get("recomputed_tensors"):
            lines.append(f"{summary['recomputed_tensors']} saved activations are recomputed in the backward, which "
                         f"lowers the peak: {summary['recompute_macs']:,} extra MACs per step")
    if "test_accuracy" in summary:
        before = summary.get("test_accuracy_before")
        lines.append(f"test accuracy {summary['test_accuracy']:.4f}"
                     + (f" (before training {before:.4f})" if before is not None else ""))
    return "\n".join(lines)


def describe_firmware(summary: dict, out_dir) -> str:
    kb = 1024
    name = summary["name"]
    lines = [f"wrote {out_dir}: training firmware for {summary['board']} ({name}.c/.h, main.c, train_samples.h, "
             f"linker.ld, Makefile, {summary['elf']}) and {name}.onnx, the model as the run left it",
             f"ELF: flash {summary['flash_bytes']:,} B, RAM {summary['ram_bytes']:,} B (stack "
             f"{summary['stack_bytes']:,} B); training SRAM {summary['train_total_bytes'] / kb:,.1f} KB"]
    if "instructions_per_step" in summary:
        steps = summary["instructions_per_step"]
        lines.append(f"on QEMU {summary['qemu_machine']}: {int(np.mean(steps)):,} instructions per training step, "
                     f"{int(np.mean(summary['instructions_per_inference'])):,} per inference, "
                     f"{summary['instructions_commit']:,} per commit; stack used {summary['stack_used_bytes']:,} B")
    return "\n".join(lines)


def unwritable_layers(model_path) -> frozenset[int]:
    """The layers whose trained values could not be written back to the file."""
    layers, out = model_layers(model_path), set()
    for layer in layers:
        try:
            check_write_back(model_path, parse_update(f"weight={layer.index}", layers))
            if layer.bias:
                check_write_back(model_path, parse_update(f"bias={layer.index}", layers))
        except TinycError:
            out.add(layer.index)
    return frozenset(out)


def check_write_back(model_path, updates: list[LayerUpdate]) -> None:
    """Refuse, before training, an update set whose trained values cannot be
    written into the file's own initializers."""
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    inits = {t.name for t in model.graph.initializer}
    consumers: dict[str, list[str]] = {}
    outputs: dict[str, list[str]] = {}
    for n in model.graph.node:
        outputs[n.name] = list(n.output)
        for i in n.input:
            consumers.setdefault(i, []).append(n.op_type)
    for u in updates:
        layer = u.layer
        out = outputs.get(layer.node, [])
        if any("BatchNormalization" in consumers.get(o, []) for o in out):
            raise TinycError(f"{layer.describe()} is followed by a BatchNormalization, which tinyc folds into it: "
                             "its trained values have no initializer in the file to go to; fold the "
                             "BatchNormalization when exporting, or update other layers")
        for kind, want, name in (("weight", u.weight_channels, layer.weight), ("bias", u.bias, layer.bias)):
            if want and (not name or name not in inits):
                raise TinycError(f"{layer.describe()}: its {kind} is not an initializer of {model_path}, so the "
                                 f"trained {kind} cannot be written back; update other parameters")
