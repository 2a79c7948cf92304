"""What the command line does, as functions: load, run, inspect.

Data conventions (shared by every engine): an input array holds one sample in
the model's external shape, or a batch (N, *shape); when the model's shape starts
with a batch dimension of 1, a batch may also leave it out (N, *shape[1:]).
Outputs follow the convention the inputs used.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import TinycError
from .frontend.onnx import load_onnx
from .ir import Graph
from .ops import get_op
from .passes.manager import canonicalize
from .reference import run_float, run_int8


def load(model_path, input_shapes=None, dump=None) -> Graph:
    """Import and canonicalize a model."""
    graph = load_onnx(model_path, input_shapes)
    graph.validate()
    return canonicalize(graph, dump=dump)


# ----------------------------------------------------------------- interface
def external_shape(graph: Graph, name: str) -> tuple[int, ...]:
    internal = graph.tensors[name].shape
    perm = graph.input_perm.get(name) if name in graph.inputs else graph.output_perm.get(name)
    if perm is None:
        return internal
    if name in graph.inputs:  # internal = external.transpose(perm)
        shape = [0] * len(perm)
        for i, p in enumerate(perm):
            shape[p] = internal[i]
        return tuple(shape)
    return tuple(internal[p] for p in perm)  # external = internal.transpose(perm)


def external_dtype(graph: Graph, name: str):
    return graph.external_dtype.get(name, graph.tensors[name].dtype)


@dataclass
class Batch:
    """Samples for every graph input, external layout, and how they were laid out."""

    arrays: dict[str, np.ndarray]  # name -> (N, *external_shape)
    layout: str  # "single" | "batch" | "batch-squeezed"

    @property
    def count(self) -> int:
        return next(iter(self.arrays.values())).shape[0]


def read_data(graph: Graph, path) -> Batch:
    """Read an .npy / .npz data file for the graph's inputs, checking shape and type."""
    path = Path(path)
    save_hint = "save the data with numpy.save (one input) or numpy.savez (one array per input name)"
    if not path.exists():
        raise TinycError(f"{path}: no such data file; give an .npy or .npz file")
    if path.is_dir():
        raise TinycError(f"{path}: is a directory; give an .npy or .npz file")
    try:
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.lib.npyio.NpzFile):
            with loaded:
                keys = list(loaded.files)
                if len(graph.inputs) == 1 and "inputs" in keys:
                    raw = {graph.inputs[0]: loaded["inputs"]}
                else:
                    missing = [n for n in graph.inputs if n not in keys]
                    if missing:
                        raise TinycError(
                            f"{path}: has arrays {keys} but the model needs {graph.inputs}"
                            + ("" if len(graph.inputs) > 1 else " (or one array named 'inputs')")
                            + f"; save it with numpy.savez({path.name!r}, "
                            + ", ".join(f"{n}=..." if n.isidentifier() else f"**{{{n!r}: ...}}" for n in graph.inputs)
                            + ")"
                        )
                    raw = {n: loaded[n] for n in graph.inputs}
        else:
            if len(graph.inputs) != 1:
                raise TinycError(
                    f"{path}: the model has inputs {graph.inputs}; give an .npz with one array per input name"
                )
            raw = {graph.inputs[0]: loaded}
    except TinycError:
        raise
    except ValueError as e:
        if "Object arrays" in str(e) or ("allow_pickle" in str(e) and _starts_with(path, (b"\x93NUMPY", b"PK"))):
            raise TinycError(f"{path}: holds Python objects, not a numeric array; {save_hint}") from None
        raise TinycError(f"{path}: not a readable .npy or .npz file (corrupt or another format); {save_hint}") from None
    except Exception:
        raise TinycError(f"{path}: not a readable .npy or .npz file (corrupt or another format); {save_hint}") from None
    for name, x in raw.items():
        if not isinstance(x, np.ndarray) or x.dtype.kind not in "biuf":
            kind = x.dtype if isinstance(x, np.ndarray) else type(x).__name__
            raise TinycError(f"{path}: the array for input {name!r} is {kind}, not numbers; {save_hint}")
    return to_batch(graph, raw, str(path))


def _starts_with(path: Path, magics: tuple[bytes, ...]) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError:
        return False
    return any(head.startswith(m) for m in magics)


def to_batch(graph: Graph, raw: dict[str, np.ndarray], where: str = "input data") -> Batch:
    arrays, layouts = {}, set()
    for name, x in raw.items():
        x = np.asarray(x)
        shape = external_shape(graph, name)
        want = external_dtype(graph, name)
        if x.ndim == len(shape) + 1 and x.shape[0] == 0 or (x.size == 0 and x.shape != shape):
            raise TinycError(f"{where}: the array for input {name!r} holds no samples (shape {list(x.shape)}); "
                             "give at least one sample")
        if x.shape == shape:
            layouts.add("single")
            x = x[None]
        elif x.shape[1:] == shape and x.shape[0] > 0:
            layouts.add("batch")
        elif len(shape) > 0 and shape[0] == 1 and x.shape[1:] == shape[1:] and x.shape[0] > 0 and x.ndim == len(shape):
            layouts.add("batch-squeezed")
            x = x[:, None]
        else:
            raise TinycError(
                f"{where}: array for input {name!r} has shape {list(x.shape)}; the model takes {list(shape)} "
                f"(one sample) or [N, {', '.join(map(str, shape))}] (a batch)"
            )
        if np.issubdtype(want, np.floating):
            if not np.issubdtype(x.dtype, np.floating):
                raise TinycError(
                    f"{where}: input {name!r} is float32 but the data is {x.dtype}; give float data "
                    "(e.g. x.astype(numpy.float32))"
                )
            x = x.astype(np.float32)
        elif x.dtype != np.dtype(want):
            raise TinycError(
                f"{where}: input {name!r} is {np.dtype(want).name} but the data is {x.dtype}; "
                f"give {np.dtype(want).name} data (quantized with the model's input scale)"
            )
        arrays[name] = x
    counts = {a.shape[0] for a in arrays.values()}
    if len(counts) != 1 or len(layouts) != 1:
        raise TinycError(
            f"{where}: inputs disagree on the number of samples or their layout; "
            "give every input the same number of samples, all as one sample or all as a batch"
        )
    return Batch(arrays, layouts.pop())


def _to_internal(graph: Graph, name: str, sample: np.ndarray) -> np.ndarray:
    """External sample -> float value in the internal layout."""
    perm = graph.input_perm.get(name)
    x = sample.transpose(perm) if perm else sample
    t = graph.tensors[name]
    if not np.issubdtype(external_dtype(graph, name), np.floating) and t.quant is not None:
        return t.quant.dequantize(x)
    return x.astype(np.float32)


def _to_external(graph: Graph, name: str, value: np.ndarray) -> np.ndarray:
    perm = graph.output_perm.get(name)
    y = value.transpose(perm) if perm else value
    want = external_dtype(graph, name)
    t = graph.tensors[name]
    if not np.issubdtype(want, np.floating) and t.quant is not None:
        return t.quant.quantize(y, want)
    return np.array(y, dtype=want, order="C")  # not ascontiguousarray: it makes a 0-d output 1-d


def run_reference(graph: Graph, batch: Batch) -> dict[str, np.ndarray]:
    """Run every sample through the float reference; returns name -> (N, *external shape)."""
    results: dict[str, list[np.ndarray]] = {n: [] for n in graph.outputs}
    for k in range(batch.count):
        feeds = {n: _to_internal(graph, n, batch.arrays[n][k]) for n in graph.inputs}
        out = run_float(graph, feeds)
        for n in graph.outputs:
            results[n].append(_to_external(graph, n, out[n]))
    return {n: np.stack(v) for n, v in results.items()}


def shape_like_input(outputs: dict[str, np.ndarray], layout: str) -> dict[str, np.ndarray]:
    if layout == "single":
        return {n: v[0] for n, v in outputs.items()}
    if layout == "batch-squeezed":
        return {n: (v[:, 0] if v.ndim > 1 and v.shape[1] == 1 else v) for n, v in outputs.items()}
    return outputs


def check_output_path(path, n_outputs: int) -> None:
    """Refuse an output path that write_outputs could not write, before any work is done."""
    path = Path(path)
    if path.suffix != ".npz" and n_outputs > 1:
        raise TinycError(f"{path}: the model has {n_outputs} outputs; write them to an .npz file")
    if not path.parent.exists():
        raise TinycError(f"{path}: folder {path.parent} does not exist; create it or choose another output path")
    if not path.parent.is_dir():
        raise TinycError(f"{path}: {path.parent} is not a folder; choose another output path")
    if path.is_dir():
        raise TinycError(f"{path}: is a directory; give a file name ending in .npy or .npz")


def write_outputs(path, outputs: dict[str, np.ndarray]) -> None:
    """Write .npy (one output) or .npz (any), atomically: on any failure the target
    is left as it was and no temporary file remains."""
    path = Path(path)
    check_output_path(path, len(outputs))
    if path.suffix == ".npz":
        writer = lambda f: np.savez(f, **outputs)  # noqa: E731
    else:
        writer = lambda f: np.save(f, next(iter(outputs.values())))  # noqa: E731
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tinyc-", suffix=path.suffix)
        with os.fdopen(fd, "wb") as f:
            writer(f)
        os.replace(tmp, path)
        tmp = None
    except OSError as e:
        raise TinycError(f"{path}: cannot write ({e.strerror or e}); check the folder's permissions and free space") from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


# ------------------------------------------------------------------- inspect
def inspect(graph: Graph) -> dict:
    layers = []
    total_params = total_macs = weight_bytes = 0
    for node in graph.nodes:
        params = sum(graph.tensors[i].size for i in node.inputs if i and graph.tensors[i].is_const)
        # what an int8 build stores in flash: int8 weights, int32 biases (input 2)
        weight_int8 = sum(
            graph.tensors[i].size * (4 if k == 2 and node.op in ("Conv2D", "FullyConnected") else 1)
            for k, i in enumerate(node.inputs) if i and graph.tensors[i].is_const
        )
        macs = get_op(node.op).macs(node, graph)
        out = graph.tensors[node.outputs[0]]
        layers.append({
            "name": node.name,
            "op": node.op,
            "output_shape": list(out.shape),
            "params": int(params),
            "macs": int(macs),
            "activation_bytes_int8": int(out.size),
        })
        total_params += params
        total_macs += macs
        weight_bytes += weight_int8
    return {
        "model": graph.name,
        "inputs": [{"name": n, "shape": list(external_shape(graph, n)), "dtype": np.dtype(external_dtype(graph, n)).name}
                   for n in graph.inputs],
        "outputs": [{"name": n, "shape": list(external_shape(graph, n)), "dtype": np.dtype(external_dtype(graph, n)).name}
                    for n in graph.outputs],
        "layers": layers,
        "totals": {
            "layers": len(layers),
            "params": int(total_params),
            "macs": int(total_macs),
            "weight_bytes_int8": int(weight_bytes),
            "max_activation_bytes_int8": max((la["activation_bytes_int8"] for la in layers), default=0),
        },
    }


# ----------------------------------------------------------------------- int8
def compile_int8(graph: Graph, model_path=None):
    """Lower a quantized graph to an int8 program; a float model must be calibrated first."""
    from .passes.int8 import is_quantized, lower_to_int8

    for node in graph.nodes:  # Q/DQ the importer could not fold into tensor parameters
        if node.op in ("Quantize", "Dequantize") and not graph.tensors[node.inputs[0]].is_const:
            q = node.attrs.quant
            onnx_op = "QuantizeLinear" if node.op == "Quantize" else "DequantizeLinear"
            if q.per_axis:
                raise TinycError(
                    f"node {node.name!r} ({onnx_op}) quantizes activation {node.inputs[0]!r} per axis; tinyc "
                    "(like TFLite) needs one scale and zero point per activation tensor"
                )
            if np.dtype(node.attrs.dtype) != np.int8:
                raise TinycError(
                    f"node {node.name!r} ({onnx_op}) uses {np.dtype(node.attrs.dtype).name}; tinyc compiles int8 "
                    "activations only (TFLite's int8 spec): quantize the model to int8"
                )
    if not is_quantized(graph):
        where = f"{model_path}: " if model_path else ""
        raise TinycError(
            f"{where}is a float model; give --calib DATA (sample inputs) to quantize it to int8, "
            "or use a pre-quantized (QDQ) model"
        )
    return lower_to_int8(graph)


def quantize_like_tflm(x: np.ndarray, quant) -> np.ndarray:
    """TFLM's QUANTIZE (float -> int8): zp + round-half-away(x / scale), the division
    in float32 (checked on MCUNet's inputs, where x / scale lands on .5), saturated."""
    ratio = (x.astype(np.float32) / np.float32(quant.scale)).astype(np.float64)
    q = np.floor(np.abs(ratio) + 0.5) * np.sign(ratio)
    return np.clip(q + int(quant.zero_point), -128, 127).astype(np.int8)


def dequantize_like_tflm(q: np.ndarray, quant) -> np.ndarray:
    """TFLM's DEQUANTIZE: float(double(scale) * (q - zp))."""
    scale = np.float64(np.float32(quant.scale))
    return (scale * (q.astype(np.int64) - int(quant.zero_point))).astype(np.float32)


def program_feeds(program, batch: Batch) -> dict[str, np.ndarray]:
    """Batch (external layout and type) -> int8 arrays (N, *internal shape) per program input."""
    graph = program.graph
    feeds = {}
    for name in program.inputs:
        x = batch.arrays[name]
        perm = graph.input_perm.get(name)
        if perm:
            x = x.transpose((0,) + tuple(p + 1 for p in perm))
        if x.dtype != np.int8:
            x = quantize_like_tflm(x, graph.tensors[name].quant)
        feeds[name] = np.ascontiguousarray(x, dtype=np.int8)
    return feeds


def program_results(program, int8_outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """int8 outputs (N, *internal shape) -> the graph outputs in external layout and type,
    running the float tail (if any) on the dequantized values."""
    graph = program.graph
    n = next(iter(int8_outputs.values())).shape[0]
    results: dict[str, list[np.ndarray]] = {o: [] for o in graph.outputs}
    for k in range(n):
        values = {}
        for name, q in int8_outputs.items():
            if name in graph.outputs and np.dtype(external_dtype(graph, name)) == np.int8:
                values[name] = q[k]
            else:
                values[name] = dequantize_like_tflm(q[k], graph.tensors[name].quant)
        for node in program.float_tail:
            ins = [values[i] if i in values else (graph.tensors[i].float_value() if i else None) for i in node.inputs]
            for o, v in zip(node.outputs, get_op(node.op).ref(node, ins)):
                values[o] = v
        for o in graph.outputs:
            perm = graph.output_perm.get(o)
            y = values[o].transpose(perm) if perm else values[o]
            results[o].append(np.array(y, dtype=external_dtype(graph, o)))
    return {o: np.stack(v) for o, v in results.items()}


def run_program_ref(program, batch: Batch) -> dict[str, np.ndarray]:
    """The int8 reference interpreter on every sample."""
    feeds = program_feeds(program, batch)
    outs: dict[str, list[np.ndarray]] = {o: [] for o in program.outputs}
    for k in range(batch.count):
        y = run_int8(program, {n: f[k] for n, f in feeds.items()})
        for o in program.outputs:
            outs[o].append(y[o])
    return program_results(program, {o: np.stack(v) for o, v in outs.items()})


# ---------------------------------------------------------------------- build
@dataclass
class Build:
    program: object  # ir.program.Program
    plan: object  # passes.memory.MemoryPlan
    name: str
    files: dict[str, str]  # generated file -> text
    summary: dict


def compile_c(graph: Graph, model_path, name: str | None = None, board: str = "host",
              plan_strategy: str | None = None, in_place: bool = True, poison: bool = False) -> Build:
    """Quantized graph -> int8 program -> memory plan -> generated C files.

    ``plan_strategy`` forces one placement strategy (default: the best of all);
    ``in_place`` allows in-place kernels; ``poison`` makes a debug build that
    overwrites dead arena bytes between steps."""
    from .codegen.c import check_name, default_name, generate, weight_bytes
    from .passes.memory import STRATEGIES, plan_memory

    if plan_strategy is not None and plan_strategy not in STRATEGIES:
        raise TinycError(f"--plan {plan_strategy!r}: unknown strategy; choose one of {', '.join(STRATEGIES)}")
    macs = sum(get_op(n.op).macs(n, graph) for n in graph.nodes)
    name = check_name(name) if name else default_name(model_path)
    program = compile_int8(graph, model_path)
    plan = plan_memory(program, plan_strategy, in_place=in_place)
    files = generate(program, plan, name, source=Path(str(model_path)).name, poison=poison)
    summary = {
        "model": str(model_path),
        "name": name,
        "board": board,
        "arena_bytes": plan.arena_size,
        "lower_bound_bytes": plan.lower_bound,
        "lower_bound_no_inplace_bytes": plan.lower_bound_no_inplace,
        "plan_strategy": plan.strategy,
        "plan_order": plan.order,
        "in_place_steps": len(plan.in_place),
        "poisoned": poison,
        "weights_bytes": weight_bytes(program),
        "input_bytes": sum(program.graph.tensors[n].size for n in program.inputs),
        "output_bytes": sum(program.graph.tensors[n].size for n in program.outputs),
        "kernel_calls": sum(not c.is_alias for c in program.calls),
        "macs": int(macs),
    }
    return Build(program, plan, name, files, summary)


def _write_tree(build: Build, root: Path) -> None:
    import json
    import shutil

    from .codegen.c import runtime_files

    for rel, text in build.files.items():
        (root / rel).write_text(text)
    for rel, src in runtime_files().items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, root / rel)
    (root / "tinyc.json").write_text(json.dumps(build.summary, indent=1) + "\n")


def write_project(build: Build, out_dir) -> None:
    """Write the project to out_dir atomically: a temporary folder beside it is
    renamed into place only when complete. An existing out_dir is replaced only
    if an earlier tinyc build made it."""
    import shutil

    out = Path(out_dir)
    if out.exists() and not (out.is_dir() and (out / "tinyc.json").is_file()):
        raise TinycError(f"{out}: exists and is not a tinyc build folder; choose another -o or remove it")
    if not out.parent.is_dir():
        raise TinycError(f"{out}: folder {out.parent} does not exist; create it or choose another -o")
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tinyc-"))
    old = None
    try:
        _write_tree(build, tmp)
        if out.exists():
            old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.old-"))
            os.replace(out, old / "prev")
        os.replace(tmp, out)
        tmp = None
    except OSError as e:
        if old is not None and not out.exists():
            os.replace(old / "prev", out)
        raise TinycError(f"{out}: cannot write ({e.strerror or e}); check permissions and free space") from None
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def run_program_c(build: Build, batch: Batch, cflags: list[str] | None = None) -> dict[str, np.ndarray]:
    """Compile the generated C for the host (with extra ``cflags``, e.g. a
    sanitizer) and run every sample through it."""
    from .sim.host import build_host, run_host

    program = build.program
    feeds = program_feeds(program, batch)
    n = batch.count
    per_sample = [feeds[name].reshape(n, -1) for name in program.inputs]
    blob = np.concatenate(per_sample, axis=1).tobytes() if per_sample else b""
    with tempfile.TemporaryDirectory(prefix="tinyc-c-") as tmp:
        root = Path(tmp)
        _write_tree(build, root)
        exe = build_host(root, build.name, cflags)
        raw = np.frombuffer(run_host(exe, blob), dtype=np.int8)
    out_size = build.summary["output_bytes"]
    if raw.size != n * out_size:
        raise TinycError(f"the generated program wrote {raw.size} bytes for {n} samples; expected {n * out_size}")
    raw = raw.reshape(n, out_size)
    outs, offset = {}, 0
    for name in program.outputs:
        t = program.graph.tensors[name]
        outs[name] = raw[:, offset:offset + t.size].reshape((n,) + t.shape)
        offset += t.size
    return program_results(program, outs)


# ---------------------------------------------------------------- calibration
def is_quantized(graph: Graph) -> bool:
    from .passes.int8 import is_quantized as _is_quantized

    return _is_quantized(graph)


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".pgm")


def read_image(graph: Graph, path: Path, pixel_range: tuple[float, float]) -> Batch:
    """One image as a sample of the graph's single input: converted to the input's
    channel count (1: grayscale, 3: RGB), resized to its height and width
    (bilinear), pixels 0..255 mapped linearly onto ``pixel_range``."""
    try:
        from PIL import Image
    except ImportError:
        raise TinycError(f"{path}: reading images needs Pillow; pip install 'tinyc[images]'") from None
    if len(graph.inputs) != 1:
        raise TinycError(f"{path}: images can calibrate a model with one input; this one has {graph.inputs}")
    name = graph.inputs[0]
    shape = external_shape(graph, name)
    if len(shape) != 4 or shape[0] != 1:
        raise TinycError(f"{path}: the model's input {list(shape)} is not one image [1, C, H, W] or [1, H, W, C]")
    channels_last = shape[3] in (1, 3) and shape[1] not in (1, 3)
    c, h, w = (shape[3], shape[1], shape[2]) if channels_last else (shape[1], shape[2], shape[3])
    if c not in (1, 3):
        raise TinycError(f"{path}: the model's input has {c} channels; images give 1 (grayscale) or 3 (RGB)")
    try:
        with Image.open(path) as im:
            pixels = np.asarray(im.convert("L" if c == 1 else "RGB").resize((w, h), Image.BILINEAR), np.float32)
    except (OSError, ValueError) as e:
        raise TinycError(f"{path}: cannot read the image ({e})") from None
    lo, hi = pixel_range
    x = pixels.reshape(h, w, c) * np.float32((hi - lo) / 255.0) + np.float32(lo)
    x = x[None] if channels_last else x.transpose(2, 0, 1)[None]
    return to_batch(graph, {name: x.astype(np.float32)}, str(path))


def read_calibration(graph: Graph, path, pixel_range: tuple[float, float] = (0.0, 1.0)) -> list[dict[str, np.ndarray]]:
    """Calibration samples as float feeds in the internal layout: an .npy / .npz
    file (same conventions as --input), or a folder of such files or of images."""
    path = Path(path)
    if not path.exists():
        raise TinycError(f"{path}: no such calibration file or folder")
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in (".npy", ".npz", *IMAGE_SUFFIXES))
        if not files:
            raise TinycError(f"{path}: folder has no .npy, .npz or image files to calibrate with")
    else:
        files = [path]
    samples = []
    for f in files:
        if f.suffix.lower() in IMAGE_SUFFIXES:
            batch = read_image(graph, f, pixel_range)
        else:
            batch = read_data(graph, f)
        for k in range(batch.count):
            samples.append({n: _to_internal(graph, n, batch.arrays[n][k]) for n in graph.inputs})
    if not samples:
        raise TinycError(f"{path}: holds no samples; give at least one calibration sample")
    for s in samples:
        for n, x in s.items():
            if not np.all(np.isfinite(x)):
                raise TinycError(f"{path}: calibration data for input {n!r} holds NaN or infinity")
    return samples


def quantize_with_calibration(graph: Graph, calib_path, method: str = "minmax",
                              pixel_range: tuple[float, float] = (0.0, 1.0)) -> None:
    """Post-training quantization of a float graph from calibration samples."""
    from .passes.quantize import calibrate, quantize_graph

    if is_quantized(graph):
        raise TinycError(f"{calib_path}: the model is already quantized (QDQ); drop --calib")
    samples = read_calibration(graph, calib_path, pixel_range)
    quantize_graph(graph, calibrate(graph, samples, method))
    graph.validate()


# --------------------------------------------------------------------- boards
def board_info(board) -> dict:
    return {
        "name": board.name, "description": board.description, "core": board.core, "fpu": board.fpu,
        "dsp": board.dsp, "clock_hz": board.clock_hz, "qemu": board.qemu, "pyocd_target": board.pyocd_target,
        "aliases": list(board.aliases), "sram_bytes": board.sram_bytes, "largest_sram_bytes": board.main_ram.length,
        "flash_bytes": board.flash_bytes,
        "ram": [{"name": r.name, "origin": r.origin, "length": r.length} for r in board.ram],
        "flash": [{"name": r.name, "origin": r.origin, "length": r.length} for r in board.flash],
    }


# ---------------------------------------------------------------------- flash
def flash_command(project, board_name: str | None, probe: str | None = None) -> tuple[list[str], object]:
    """The pyOCD command that writes a built firmware project to its board."""
    import json
    import sys

    from .boards import get_board

    project = Path(project)
    meta = project / "tinyc.json"
    if not meta.is_file():
        raise TinycError(f"{project}: not a tinyc build folder (no tinyc.json); build one with tinyc build --board B -o DIR")
    summary = json.loads(meta.read_text())
    built_for = summary.get("board", "host")
    board = get_board(board_name or built_for)
    if built_for != board.name:
        raise TinycError(f"{project}: was built for {built_for}, not {board.name}; rebuild with --board {board.name}")
    if board.pyocd_target is None:
        raise TinycError(f"{board.name} is a QEMU machine, not a board to flash; use tinyc run --engine qemu --board {board.name}")
    elf = project / summary.get("elf", f"build/{summary['name']}.elf")
    if not elf.is_file():
        raise TinycError(f"{elf}: no firmware image yet; install gcc-arm-none-eabi and run make -C {project}")
    cmd = [sys.executable, "-m", "pyocd", "flash", "--target", board.pyocd_target]
    if probe:
        cmd += ["--uid", probe]
    return cmd + [str(elf)], board


# ------------------------------------------------------------- board builds
def sample_io(build: Build, batch: Batch | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The int8 input bytes (all inputs back to back) the board firmware embeds, and
    the output bytes the int8 reference computes for them. Without data: a fixed
    pseudo-random input."""
    program = build.program
    if batch is not None:
        feeds = {n: f[0] for n, f in program_feeds(program, batch).items()}
    else:
        rng = np.random.default_rng(20261128)
        feeds = {n: rng.integers(-128, 128, program.graph.tensors[n].shape).astype(np.int8) for n in program.inputs}
    outs = run_int8(program, feeds)
    sample = np.concatenate([feeds[n].reshape(-1) for n in program.inputs])
    expected = np.concatenate([outs[n].reshape(-1) for n in program.outputs])
    return sample, expected


def _peak_note(build: Build) -> str:
    from .passes.memory import peak_step

    step, nodes = peak_step(build.plan, build.program)
    return f"the arena peak is at step {step} ({', '.join(nodes[:3])})" if nodes else ""


def build_firmware(build: Build, board, out_dir, batch: Batch | None = None) -> dict:
    """A firmware project for ``board`` in out_dir (atomically), linked into an ELF
    when arm-none-eabi-gcc is installed. Refuses (TinycError) a model that does not
    fit, naming the region, the bytes over and what would help."""
    import shutil

    from .boards.fit import check_fit
    from .codegen.firmware import MIN_STACK, build_elf, project_files, region_overflow, write_files
    from .sim import qemu

    s = build.summary
    model = build.name
    fit = check_fit(board, s["arena_bytes"], s["weights_bytes"], MIN_STACK)
    if not fit.fits:  # clear before any file is written or any compiler runs
        raise TinycError(fit.describe_failure(model, _peak_note(build)))
    out = Path(out_dir)
    if out.exists() and not (out.is_dir() and (out / "tinyc.json").is_file()):
        raise TinycError(f"{out}: exists and is not a tinyc build folder; choose another -o or remove it")
    if not out.parent.is_dir():
        raise TinycError(f"{out}: folder {out.parent} does not exist; create it or choose another -o")
    sample = sample_io(build, batch)
    summary = dict(s, board=board.name, core=board.core)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tinyc-"))
    try:
        if qemu.arm_toolchain() is None:
            write_files(project_files(build, board, board, "board", MIN_STACK, sample), tmp)
            summary.update(fits=True, elf=None, toolchain=False,
                           note="arm-none-eabi-gcc not found: wrote the C project only; install gcc-arm-none-eabi "
                                "libnewlib-arm-none-eabi (Debian) and run make in the folder")
        else:
            try:
                fw = build_elf(tmp, build, board, board, "board", sample)
            except TinycError as e:
                over = region_overflow(str(e))
                if over is None:
                    raise
                region, nbytes = over
                raise TinycError(
                    f"{model} does not fit {board.name}: the linker's region {region} is over by {nbytes:,} B "
                    f"(arena {s['arena_bytes']:,} B, weights {s['weights_bytes']:,} B). What would help: a board "
                    f"with more memory (tinyc boards), or a smaller model") from None
            fit = check_fit(board, s["arena_bytes"], s["weights_bytes"], fw.stack_bytes,
                            {"flash_bytes": fw.flash_bytes, "ram_bytes": fw.ram_bytes})
            if not fit.fits:
                raise TinycError(fit.describe_failure(model, _peak_note(build)))
            summary.update(fits=True, toolchain=True, elf=str(fw.elf.relative_to(tmp)), flash_bytes=fw.flash_bytes,
                           ram_bytes=fw.ram_bytes + fw.stack_bytes, stack_bytes=fw.stack_bytes,
                           flash_free_bytes=fit.regions[0].margin, ram_free_bytes=fit.regions[1].margin)
        summary["sample_checksum"] = f"0x{_fnv1a(sample[1]):08x}"
        (tmp / "tinyc.json").write_text(__import__("json").dumps(summary, indent=1) + "\n")
        old = None
        if out.exists():
            old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.old-"))
            os.replace(out, old / "prev")
        os.replace(tmp, out)
        tmp = None
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return summary


def _fnv1a(data: np.ndarray) -> int:
    h = 2166136261
    for b in data.astype(np.uint8).tolist():
        h = ((h ^ b) * 16777619) & 0xFFFFFFFF
    return h


def qemu_link_board(board):
    """The memory map firmware for ``board`` is linked against to run in QEMU: the
    stand-in machine's own board file, or the board itself when QEMU models the
    chip (netduinoplus2 is an STM32F405)."""
    from .boards import all_boards

    if board.qemu is None:
        raise TinycError(f"{board.name} has no QEMU stand-in (QEMU 7.2 has no {board.core}); "
                         "choose another --board for --engine qemu")
    return all_boards().get(board.qemu, board)


def run_program_qemu(build: Build, batch: Batch, board, timeout: float = 600.0) -> tuple[dict, dict]:
    """Build firmware for the board's QEMU stand-in, stream the samples through it
    over semihosting, and return (outputs, report) with the instructions executed in
    NAME_invoke per sample and the stack high-water mark."""
    from .codegen.firmware import build_elf
    from .sim import qemu

    qemu.require_arm_toolchain()
    qemu.find_qemu()
    link = qemu_link_board(board)
    program = build.program
    feeds = program_feeds(program, batch)
    n = batch.count
    blob = np.concatenate([feeds[name].reshape(n, -1) for name in program.inputs], axis=1).tobytes()
    with tempfile.TemporaryDirectory(prefix="tinyc-qemu-") as tmp:
        root = Path(tmp)
        fw = build_elf(root, build, board, link, "qemu")
        (root / "in.bin").write_bytes(blob)
        result = qemu.run_qemu(fw.elf, board.qemu, root, timeout=timeout)
        if result.exit_code != 0:
            detail = getattr(result, "fault", None) or result.stderr.strip()[-200:]
            raise TinycError(f"the firmware failed on QEMU {board.qemu} (exit {result.exit_code}): {detail}")
        raw = np.frombuffer((root / "out.bin").read_bytes(), dtype=np.int8)
        stack_used = int.from_bytes((root / "stack.bin").read_bytes(), "little")
    out_size = build.summary["output_bytes"]
    if raw.size != n * out_size or len(result.instructions) != n:
        raise TinycError(f"the firmware returned {raw.size} bytes and {len(result.instructions)} counts for {n} samples")
    raw = raw.reshape(n, out_size)
    outs, offset = {}, 0
    for name in program.outputs:
        t = program.graph.tensors[name]
        outs[name] = raw[:, offset:offset + t.size].reshape((n,) + t.shape)
        offset += t.size
    report = {"board": board.name, "qemu_machine": board.qemu, "core": board.core,
              "instructions": result.instructions, "macs": build.summary["macs"],
              "stack_used_bytes": stack_used, "stack_bytes": fw.stack_bytes,
              "flash_bytes": fw.flash_bytes, "ram_bytes": fw.ram_bytes + fw.stack_bytes,
              "arena_bytes": build.summary["arena_bytes"]}
    if stack_used > fw.stack_bytes:
        raise TinycError(f"the firmware used {stack_used} B of stack, more than the {fw.stack_bytes} B reserved")
    return program_results(program, outs), report


# --------------------------------------------------------------------- report
def report(build: Build, board_name: str) -> dict:
    """The memory report of a compiled model for a board, "host", or "all" boards."""
    from .boards import get_board
    from .report.data import build_report

    if board_name == "all":
        return build_report(build, None, every_board=True)
    if board_name == "host":
        return build_report(build, None)
    return build_report(build, get_board(board_name))


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tinyc-", suffix=path.suffix)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a report is for sharing
        os.replace(tmp, path)
        tmp = None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def write_report(rep: dict, fmt: str, out: Path | None) -> str | None:
    """Render and write the report; returns the text for stdout when ``out`` is None."""
    import json

    if fmt == "json":
        text = json.dumps(rep, indent=1) + "\n"
        if out is None:
            return text
        _atomic_write(out, text.encode())
        return None
    from .report.plot import timeline_png
    from .report.render import render_html, render_markdown

    if fmt == "html":
        text = render_html(rep)
        if out is None:
            return text
        _atomic_write(out, text.encode())
        return None
    if out is None:
        raise TinycError("--format md writes FILE.md and the plot FILE.png beside it; give -o FILE.md")
    png = out.with_suffix(".png")
    png_bytes = timeline_png(rep)
    text = render_markdown(rep, png.name)
    _atomic_write(png, png_bytes)
    _atomic_write(out, text.encode())
    return None
