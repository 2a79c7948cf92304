"""A folder that ``tinyc build`` wrote, read back: ``tinyc run DIR`` runs its C
without importing or quantizing the model again.

The build records in DIR/tinyc.json (``interface``) what running the C needs
besides the C itself: each input's internal int8 shape, layout permutation,
external type, scale and zero point; the same for the outputs; and the float
ops that run after the int8 outputs (a LogSoftmax after TFLite's DEQUANTIZE).
tinyc.json is read as untrusted input: every field is checked, and the files it
names must be inside the folder.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from .codegen.c import host_main, name_problem
from .data import external_dtype
from .errors import TinycError
from .ir import Graph, Node, QuantParams, Tensor
from .ir.program import Program
from .ops import get_op

INTERFACE_VERSION = 1
_DTYPES = {"float32": np.float32, "int8": np.int8}


def _plain(value) -> bool:
    """A number or a list of numbers: what a float-tail attribute in tinyc.json may be."""
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    return isinstance(value, (int, float))


def interface(program: Program) -> dict:
    """What tinyc.json records so that ``tinyc run DIR`` can run the project."""
    graph = program.graph

    def io(name: str, perm: dict) -> dict:
        t = graph.tensors[name]
        entry = {"name": name, "shape": list(t.shape), "perm": list(perm[name]) if perm.get(name) else None,
                 "dtype": np.dtype(external_dtype(graph, name)).name}
        if t.quant is not None and not t.quant.per_axis:
            entry.update(scale=float(np.float32(t.quant.scale)), zero_point=int(t.quant.zero_point))
        return entry

    tail, why = [], None
    for node in program.float_tail:
        if any(i in graph.tensors and graph.tensors[i].is_const for i in node.inputs if i):
            why = f"the float op {node.op} after the int8 outputs has constant inputs"
            break
        attrs = dataclasses.asdict(node.attrs) if dataclasses.is_dataclass(node.attrs) else None
        if attrs is not None and not all(_plain(v) for v in attrs.values()):  # e.g. a Quantize's scales
            why = f"the float op {node.op} after the int8 outputs has attributes tinyc.json does not hold"
            break
        tail.append({"op": node.op, "name": node.name, "inputs": list(node.inputs), "outputs": list(node.outputs),
                     "attrs": attrs})
    return {
        "version": INTERFACE_VERSION,
        "inputs": [io(n, graph.input_perm) for n in program.inputs],
        "int8_outputs": [io(n, {}) for n in program.outputs],
        "outputs": [io(n, graph.output_perm) for n in graph.outputs],
        "float_tail": None if why else tail,
        "not_runnable": why,
    }


class _Bad(Exception):
    pass


def _want(cond: bool, what: str) -> None:
    if not cond:
        raise _Bad(what)


def _shape(v) -> tuple[int, ...]:
    _want(isinstance(v, list) and len(v) <= 8 and all(isinstance(d, int) and 0 < d <= 1 << 24 for d in v)
          and int(np.prod(v, dtype=np.int64)) <= 1 << 28, "a shape is not a list of positive sizes")
    return tuple(v)


def _io(entry, quantized: bool) -> dict:
    _want(isinstance(entry, dict), "an input / output entry is not an object")
    _want(isinstance(entry.get("name"), str), "an input / output has no name")
    shape = _shape(entry.get("shape"))
    perm = entry.get("perm")
    _want(perm is None or (isinstance(perm, list) and sorted(perm) == list(range(len(shape)))),
          f"the perm of {entry['name']!r} is not a permutation of its axes")
    _want(entry.get("dtype") in _DTYPES, f"the dtype of {entry['name']!r} is not float32 or int8")
    quant = None
    if quantized or "scale" in entry:
        scale, zp = entry.get("scale"), entry.get("zero_point")
        _want(isinstance(scale, float) and np.isfinite(scale) and 0 < scale < 1e30,
              f"the scale of {entry['name']!r} is not a positive number")
        _want(isinstance(zp, int) and -128 <= zp <= 127, f"the zero point of {entry['name']!r} is not an int8")
        quant = QuantParams(np.float32(scale), np.int32(zp))
    return {"name": entry["name"], "shape": shape, "perm": tuple(perm) if perm else None,
            "dtype": _DTYPES[entry["dtype"]], "quant": quant}


def _tail_node(entry, known: set[str]) -> Node:
    _want(isinstance(entry, dict) and isinstance(entry.get("op"), str), "a float_tail entry has no op")
    try:
        op = get_op(entry["op"])
    except Exception:
        raise _Bad(f"float_tail names an unknown op {entry['op']!r}") from None
    ins, outs = entry.get("inputs"), entry.get("outputs")
    _want(isinstance(ins, list) and isinstance(outs, list) and all(isinstance(i, str) for i in ins + outs),
          f"the {entry['op']} in float_tail has bad inputs or outputs")
    _want(all(i in known for i in ins), f"the {entry['op']} in float_tail reads a tensor nothing produces")
    attrs = entry.get("attrs")
    if op.attrs_type is not None:
        _want(isinstance(attrs, dict), f"the {entry['op']} in float_tail has no attributes")
        fields = {f.name for f in dataclasses.fields(op.attrs_type)}
        _want(set(attrs) == fields and all(_plain(v) for v in attrs.values()),
              f"the {entry['op']} in float_tail has unexpected attributes")
        attrs = op.attrs_type(**{k: tuple(v) if isinstance(v, list) else v for k, v in attrs.items()})
    known.update(outs)
    return Node(entry["op"], str(entry.get("name", entry["op"])), ins, outs, attrs)


def load_project(path):
    """The build that wrote ``path``, as a Build the C engine runs: the program's
    interface (no kernel calls: the C has them), and the folder's own C files."""
    from .build import Build

    root = Path(path)
    meta_path = root / "tinyc.json"
    if not meta_path.is_file():
        raise TinycError(f"{root}: not a folder tinyc build wrote (no tinyc.json); give a model file or such a folder")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        raise TinycError(f"{meta_path}: is not valid JSON; rebuild the project with tinyc build") from None
    try:
        _want(isinstance(meta, dict), "it is not a JSON object")
        name = meta.get("name")
        _want(isinstance(name, str) and name_problem(name) is None, "its name is not a valid model name")
        spec = meta.get("interface")
        _want(isinstance(spec, dict) and spec.get("version") == INTERFACE_VERSION,
              "it has no interface this tinyc reads (built by another version?)")
        if spec.get("not_runnable"):
            raise TinycError(f"{root}: cannot be run from the folder ({spec['not_runnable']}); "
                             "run the model file instead")
        for key in ("inputs", "int8_outputs", "outputs"):
            _want(isinstance(spec.get(key), list) and 0 < len(spec[key]) <= 64, f"interface.{key} is missing")
        inputs = [_io(e, True) for e in spec["inputs"]]
        int8_outputs = [_io(e, True) for e in spec["int8_outputs"]]
        outputs = [_io(e, False) for e in spec["outputs"]]
        _want(isinstance(spec.get("float_tail"), list), "interface.float_tail is missing")
        known = {e["name"] for e in int8_outputs}
        tail = [_tail_node(e, known) for e in spec["float_tail"]]
        _want(all(o["name"] in known for o in outputs), "an output is neither an int8 output nor made by the float tail")
    except _Bad as e:
        raise TinycError(f"{meta_path}: {e}; rebuild the project with tinyc build") from None

    graph = Graph(name)
    for e in (*inputs, *int8_outputs):
        if e["name"] not in graph.tensors:
            graph.add_tensor(Tensor(e["name"], e["shape"], np.int8, quant=e["quant"]))
    for e in (*inputs, *outputs):
        if e["perm"]:
            (graph.input_perm if e in inputs else graph.output_perm)[e["name"]] = e["perm"]
        graph.external_dtype[e["name"]] = e["dtype"]
    for e in outputs:
        if e["name"] not in graph.tensors:
            graph.add_tensor(Tensor(e["name"], e["shape"], e["dtype"]))
    graph.inputs = [e["name"] for e in inputs]
    graph.outputs = [e["name"] for e in outputs]
    program = Program(graph, [], graph.inputs, [e["name"] for e in int8_outputs], tail)

    files = {}
    for rel in (f"{name}.h", f"{name}.c"):
        f = root / rel
        if not f.is_file() or f.is_symlink():
            raise TinycError(f"{f}: missing from the project; rebuild it with tinyc build")
        files[rel] = f.read_text(errors="replace")
    runtime = root / "tinyc"
    if not (runtime / "include" / "tinyc").is_dir() or not (runtime / "src").is_dir() or runtime.is_symlink():
        raise TinycError(f"{runtime}: the project's runtime is missing; rebuild it with tinyc build")
    files["main.c"] = host_main(name)
    summary = {k: v for k, v in meta.items() if k not in ("interface", "files", "products")}
    summary["output_bytes"] = sum(int(np.prod(e["shape"])) for e in int8_outputs)
    return Build(program, None, name, files, summary, runtime=runtime)
