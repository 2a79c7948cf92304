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
from .reference import run_float


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
    if name in graph.external_dtype and t.quant is not None:
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
