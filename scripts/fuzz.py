#!/usr/bin/env python3
"""Fuzz tinyc's command line with mutated ONNX models.

Each mutant is a real model changed the way a broken exporter, a bad edit or an
attacker would: structure-aware mutations (a node's inputs, outputs, op type,
attributes and their bytes, initializer values, dims and types, quantization
scales and zero points, graph input shapes, node order, the opset) or raw byte
flips of the serialized file. Every mutant goes through ``tinyc inspect`` and
``tinyc build``, every fourth also through ``tinyc run --engine ref``. The error
contract is checked on each run:

* exit 0, or exit 2 with exactly one stderr line ``tinyc: error: ...``;
* no Python traceback, no crash (signal), no hang (``--timeout`` s each);
* a failed build leaves no output folder; a build that succeeds compiles with
  the project's own ``make`` (-Werror), the runtime objects compiled once.

The runs fork from this process (tinyc is imported once), two at a time by
default. The totals are printed; a finding is kept under ``--keep`` with the
mutant and what tinyc printed, and the exit status is 1 when there is any.

    python scripts/fuzz.py --count 500 --seed 1          # what CI runs
    python scripts/fuzz.py --count 20000 --seed 7 --keep findings/   # by hand
    python scripts/fuzz.py --command-lines 300 --seed 1  # random command lines instead
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import os
import random
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # forked children: one BLAS thread each
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import onnx  # noqa: E402
from onnx import AttributeProto, TensorProto, numpy_helper  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "models"
MODELS = ("mlperf_tiny/kws_dscnn_int8.onnx", "mlperf_tiny/ic_resnet8_int8.onnx",
          "mlperf_tiny/ad_fc_autoencoder_int8.onnx", "mlperf_tiny/sww_int8.onnx",
          "tflm/micro_speech_int8.onnx")
MEMORY_CAP = 6 * 1024**3  # a run that needs more is a finding (MemoryError), not a swapped machine

OPS = ("Conv", "MatMul", "Gemm", "Add", "Mul", "Relu", "Clip", "Reshape", "Concat", "Transpose", "Softmax",
       "AveragePool", "MaxPool", "GlobalAveragePool", "QuantizeLinear", "DequantizeLinear", "Flatten", "Squeeze",
       "Unsqueeze", "Pad", "Slice", "Gather", "Identity", "Sigmoid", "Resize", "BatchNormalization", "Sub",
       "Div", "ReduceMean", "Cast", "Shape", "Constant", "Tanh", "Split", "Expand")
INTS = (-(2**63), -(2**31), -7, -1, 0, 1, 2, 3, 5, 17, 1000, 2**31 - 1, 2**40)
FLOATS = (float("nan"), float("inf"), -float("inf"), -1.0, 0.0, 1e-42, 1e-30, 1e30, 3.4e38, -0.5)


# ------------------------------------------------------------------ mutations
def _pick(rng, seq):
    return seq[rng.randrange(len(seq))] if len(seq) else None


def _names(model):
    g = model.graph
    return ([i.name for i in g.input] + [t.name for t in g.initializer]
            + [o for n in g.node for o in n.output if o])


def m_node_inputs(rng, model):
    node = _pick(rng, model.graph.node)
    choice = rng.randrange(4)
    if choice == 0 and node.input:
        del node.input[rng.randrange(len(node.input))]
    elif choice == 1:
        node.input.append(_pick(rng, _names(model)) or "")
    elif choice == 2 and node.input:
        node.input[rng.randrange(len(node.input))] = ""
    else:
        del node.input[:]
    return f"inputs of {node.op_type}"


def m_node_outputs(rng, model):
    node = _pick(rng, model.graph.node)
    if rng.random() < 0.5:
        node.output.append(f"extra_{rng.randrange(1000)}")
    elif node.output:
        node.output[0] = _pick(rng, _names(model))
    return f"outputs of {node.op_type}"


def m_rewire(rng, model):
    node = _pick(rng, model.graph.node)
    if not node.input:
        return "rewire (none)"
    earlier = [i.name for i in model.graph.input] + [t.name for t in model.graph.initializer]
    for n in model.graph.node:
        if n is node:
            break
        earlier += [o for o in n.output if o]
    node.input[rng.randrange(len(node.input))] = _pick(rng, earlier)
    return f"rewire {node.op_type}"


def m_op_type(rng, model):
    node = _pick(rng, model.graph.node)
    old, node.op_type = node.op_type, _pick(rng, OPS)
    return f"op {old} -> {node.op_type}"


def _mutate_attr(rng, attr):
    t = attr.type
    if t == AttributeProto.INT:
        attr.i = _pick(rng, INTS)
    elif t == AttributeProto.INTS:
        vals = list(attr.ints)
        r = rng.randrange(3)
        if r == 0 and vals:
            vals.pop(rng.randrange(len(vals)))
        elif r == 1:
            vals.append(_pick(rng, INTS))
        elif vals:
            vals[rng.randrange(len(vals))] = _pick(rng, INTS)
        del attr.ints[:]
        attr.ints.extend(max(min(v, 2**63 - 1), -(2**63)) for v in vals)
    elif t == AttributeProto.FLOAT:
        attr.f = _pick(rng, FLOATS)
    elif t == AttributeProto.FLOATS:
        if attr.floats:
            attr.floats[rng.randrange(len(attr.floats))] = _pick(rng, FLOATS)
    elif t == AttributeProto.STRING:
        attr.s = _pick(rng, (b"", b"garbage", b"\xff\xfe", b"NOTSET", b"linear", b"nearest"))
    elif t == AttributeProto.TENSOR:
        _mutate_tensor(rng, attr.t)
    else:
        attr.type = AttributeProto.INT
        attr.i = _pick(rng, INTS)


def m_attribute(rng, model):
    nodes = [n for n in model.graph.node if n.attribute]
    node = _pick(rng, nodes)
    if node is None:
        return "attribute (none)"
    attr = _pick(rng, node.attribute)
    r = rng.randrange(5)
    if r == 0:
        node.attribute.remove(attr)
        return f"drop {node.op_type}.{attr.name}"
    if r == 1:  # the same name with another type
        kind = rng.randrange(3)
        name = attr.name
        node.attribute.remove(attr)
        new = node.attribute.add()
        new.name = name
        if kind == 0:
            new.type, new.f = AttributeProto.FLOAT, _pick(rng, FLOATS)
        elif kind == 1:
            new.type, new.s = AttributeProto.STRING, b"x"
        else:
            new.type = AttributeProto.INTS
            new.ints.extend(rng.sample(INTS, 3))
        return f"retype {node.op_type}.{name}"
    if r == 2:  # flip bytes of the attribute's encoding
        raw = bytearray(attr.SerializeToString())
        for _ in range(rng.randint(1, 3)):
            raw[rng.randrange(len(raw))] ^= 1 << rng.randrange(8)
        try:
            new = AttributeProto.FromString(bytes(raw))
        except Exception:
            return f"flip {node.op_type}.{attr.name} (unparsable)"
        attr.CopyFrom(new)
        return f"flip {node.op_type}.{attr.name}"
    _mutate_attr(rng, attr)
    return f"value {node.op_type}.{attr.name}"


def m_add_attribute(rng, model):
    node = _pick(rng, model.graph.node)
    name = _pick(rng, ("axis", "kernel_shape", "strides", "pads", "group", "dilations", "perm", "alpha", "auto_pad",
                       "ceil_mode", "count_include_pad", "keepdims", "to", "mode", "allowzero", "transB", "bogus"))
    for a in list(node.attribute):
        if a.name == name:
            node.attribute.remove(a)
    a = node.attribute.add()
    a.name = name
    kind = rng.randrange(3)
    if kind == 0:
        a.type, a.i = AttributeProto.INT, _pick(rng, INTS)
    elif kind == 1:
        a.type = AttributeProto.INTS
        a.ints.extend(_pick(rng, INTS) for _ in range(rng.randint(0, 5)))
    else:
        a.type, a.s = AttributeProto.STRING, _pick(rng, (b"SAME_UPPER", b"VALID", b"x", b""))
    return f"add {node.op_type}.{name}"


def _mutate_tensor(rng, tensor):
    try:
        arr = numpy_helper.to_array(tensor).copy()
    except Exception:
        return
    r = rng.randrange(4)
    if r == 0 and arr.size:  # values
        flat = arr.reshape(-1)
        for _ in range(rng.randint(1, 4)):
            k = rng.randrange(flat.size)
            if arr.dtype.kind == "f":
                flat[k] = _pick(rng, FLOATS)
            elif arr.dtype.kind in "iu":
                info = np.iinfo(arr.dtype)
                flat[k] = _pick(rng, (info.min, info.max, 0, 1, -1 if info.min < 0 else 2))
    elif r == 1:  # a length that does not fit
        arr = np.concatenate([arr.reshape(-1), arr.reshape(-1)[:1]]) if arr.size else np.zeros(3, arr.dtype)
    elif r == 2:  # dims that disagree with the data
        dims = list(tensor.dims) or [1]
        dims[rng.randrange(len(dims))] = _pick(rng, (0, 1, 2, 3, 1000, -1))
        del tensor.dims[:]
        tensor.dims.extend(dims)
        return
    else:  # another element type
        arr = arr.astype(_pick(rng, (np.int8, np.uint8, np.int32, np.int64, np.float32, np.float64, np.int16)))
    new = numpy_helper.from_array(np.asarray(arr), tensor.name)
    tensor.CopyFrom(new)


def m_initializer(rng, model):
    init = _pick(rng, model.graph.initializer)
    if init is None:
        return "initializer (none)"
    _mutate_tensor(rng, init)
    return f"initializer {init.name}"


def _qdq_params(model):
    """(scale, zero point) initializer names read by Quantize / DequantizeLinear."""
    inits = {t.name: t for t in model.graph.initializer}
    scales, zps = [], []
    for n in model.graph.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear"):
            if len(n.input) > 1 and n.input[1] in inits:
                scales.append(inits[n.input[1]])
            if len(n.input) > 2 and n.input[2] in inits:
                zps.append(inits[n.input[2]])
    return scales, zps


def m_quant_params(rng, model):
    scales, zps = _qdq_params(model)
    if rng.random() < 0.6 and scales:
        t = _pick(rng, scales)
        arr = numpy_helper.to_array(t).astype(np.float32).copy()
        flat = arr.reshape(-1)
        flat[rng.randrange(max(flat.size, 1))] = _pick(rng, FLOATS)
        t.CopyFrom(numpy_helper.from_array(arr, t.name))
        return f"scale {t.name}"
    t = _pick(rng, zps)
    if t is None:
        return "zero point (none)"
    arr = numpy_helper.to_array(t)
    r = rng.randrange(3)
    if r == 0:
        arr = np.concatenate([arr.reshape(-1), arr.reshape(-1)[:1], [0]]).astype(arr.dtype)
    elif r == 1:
        arr = arr.astype(_pick(rng, (np.uint8, np.int32, np.int16, np.float32)))
    else:
        arr = arr.copy()
        arr.reshape(-1)[0] = _pick(rng, (127, -128, 100)) if arr.dtype == np.int8 else 255
    t.CopyFrom(numpy_helper.from_array(np.asarray(arr), t.name))
    return f"zero point {t.name}"


def m_input_shape(rng, model):
    vi = _pick(rng, model.graph.input)
    dims = vi.type.tensor_type.shape.dim
    r = rng.randrange(4)
    if r == 0 and len(dims):
        d = dims[rng.randrange(len(dims))]
        v = _pick(rng, (0, -1, 1, 2, 7, 10**6, 2**40))
        d.dim_value = v
    elif r == 1 and len(dims):
        dims[rng.randrange(len(dims))].dim_param = "N"
    elif r == 2 and len(dims):
        del dims[-1]
    else:
        dims.add().dim_value = 1
    if rng.random() < 0.2:
        vi.type.tensor_type.elem_type = _pick(rng, (TensorProto.INT8, TensorProto.UINT8, TensorProto.DOUBLE,
                                                    TensorProto.STRING, TensorProto.INT64, 0))
    return f"input {vi.name}"


def m_nodes(rng, model):
    nodes = model.graph.node
    if not len(nodes):
        return "nodes (none)"
    r = rng.randrange(3)
    k = rng.randrange(len(nodes))
    if r == 0:
        del nodes[k]
        return "delete node"
    if r == 1:
        nodes.insert(k, copy.deepcopy(nodes[rng.randrange(len(nodes))]))
        return "duplicate node"
    j = rng.randrange(len(nodes))
    a, b = copy.deepcopy(nodes[k]), copy.deepcopy(nodes[j])
    nodes[k].CopyFrom(b)
    nodes[j].CopyFrom(a)
    return "swap nodes"


def m_opset(rng, model):
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            imp.version = _pick(rng, (1, 6, 7, 9, 10, 11, 12, 18, 21, 27, 28, 99))
    if rng.random() < 0.2:
        model.ir_version = _pick(rng, (0, 1, 3, 99))
    return "opset"


def m_outputs(rng, model):
    g = model.graph
    if rng.random() < 0.5 and len(g.output) > 0:
        g.output[0].name = _pick(rng, _names(model))
    else:
        new = g.output.add()
        new.CopyFrom(g.output[0] if len(g.output) else g.input[0])
        new.name = _pick(rng, _names(model))
    return "graph outputs"


STRUCTURE = (m_node_inputs, m_node_outputs, m_rewire, m_op_type, m_attribute, m_attribute, m_add_attribute,
             m_initializer, m_quant_params, m_quant_params, m_input_shape, m_nodes, m_opset, m_outputs)


def mutate(rng: random.Random, model: onnx.ModelProto, raw: bytes) -> tuple[bytes, str]:
    """One mutant of a model (its proto and its bytes): the bytes and what changed."""
    if rng.random() < 0.2:  # byte level
        data = bytearray(raw)
        r = rng.randrange(3)
        if r == 0:
            for _ in range(rng.randint(1, 16)):
                data[rng.randrange(len(data))] = rng.randrange(256)
            return bytes(data), "byte flips"
        if r == 1:
            return bytes(data[: rng.randrange(len(data))]), "truncated"
        a = rng.randrange(len(data))
        return bytes(data[:a] + data[a: a + rng.randint(1, 64)] * 2 + data[a:]), "duplicated bytes"
    m = copy.deepcopy(model)
    what = []
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        mutation = _pick(rng, STRUCTURE)
        try:
            what.append(mutation(rng, m))
        except Exception:  # an earlier mutation left nothing this one can work on (e.g. dims without data)
            what.append(f"{mutation.__name__} (not applicable)")
    return m.SerializeToString(), "; ".join(what)


# ------------------------------------------------------------------ running
@dataclass
class Outcome:
    kind: str  # ok, error, traceback, bad-exit, not-one-line, crash, hang, half-written, make
    detail: str = ""


@dataclass
class Totals:
    mutants: int = 0
    runs: int = 0
    by_kind: dict = field(default_factory=dict)
    builds_compiled: int = 0
    noun: str = "mutants"
    findings: list = field(default_factory=list)
    messages: dict = field(default_factory=dict)  # clean errors, by their text without names and numbers

    def add(self, outcome: Outcome):
        self.runs += 1
        self.by_kind[outcome.kind] = self.by_kind.get(outcome.kind, 0) + 1

    @property
    def bad(self) -> int:
        return len(self.findings)


def _child(argv: list[str], cwd: Path, out: Path, err: Path) -> None:  # pragma: no cover - forked
    import faulthandler

    faulthandler.disable()  # a crash is the parent's to report, not a dump on the test's terminal
    os.chdir(cwd)
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))
    fd_in = os.open(os.devnull, os.O_RDONLY)
    os.dup2(fd_in, 0)
    os.dup2(os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), 1)
    os.dup2(os.open(err, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), 2)
    # the parent's sys.stdout / stderr may not be file descriptors 1 and 2 (pytest captures them)
    sys.stdin = open(0, closefd=False)
    sys.stdout = open(1, "w", closefd=False)
    sys.stderr = open(2, "w", closefd=False)
    code = 1
    try:
        from tinyc.cli import main

        main(argv)
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


@dataclass
class Job:
    argv: list[str]
    cwd: Path
    label: str
    out_dir: Path | None = None  # build -o
    pid: int = 0
    start: float = 0.0


def _classify(job: Job, status: int | None) -> Outcome:
    err = (job.cwd / f"{job.label}.err").read_text(errors="replace")
    if status is None:
        return Outcome("hang", "")
    if os.WIFSIGNALED(status):
        return Outcome("crash", f"signal {os.WTERMSIG(status)}; " + err[-300:])
    code = os.WEXITSTATUS(status)
    if "Traceback (most recent call last)" in err:
        return Outcome("traceback", err.strip().splitlines()[-1] if err.strip() else "")
    if code == 0:
        return Outcome("ok")
    if code != 2:
        return Outcome("bad-exit", f"exit {code}: {err.strip()[-300:]}")
    lines = err.strip().splitlines()
    if len(lines) != 1 or not lines[0].startswith("tinyc: error: "):
        return Outcome("not-one-line", err.strip()[-300:])
    if job.out_dir is not None and job.out_dir.exists():
        return Outcome("half-written", lines[0])
    return Outcome("error", lines[0])


class Runner:
    def __init__(self, jobs: int, timeout: float):
        self.slots, self.timeout = jobs, timeout
        self.running: list[Job] = []
        self.done: list[tuple[Job, Outcome]] = []

    def submit(self, job: Job) -> None:
        while len(self.running) >= self.slots:
            self._reap(block=True)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # pragma: no cover
            _child(job.argv, job.cwd, job.cwd / f"{job.label}.out", job.cwd / f"{job.label}.err")
        job.pid, job.start = pid, time.monotonic()
        self.running.append(job)

    def _reap(self, block: bool) -> None:
        while True:
            for job in list(self.running):
                pid, status = os.waitpid(job.pid, os.WNOHANG)
                if pid:
                    self.running.remove(job)
                    self.done.append((job, _classify(job, status)))
                elif time.monotonic() - job.start > self.timeout:
                    os.kill(job.pid, signal.SIGKILL)
                    os.waitpid(job.pid, 0)
                    self.running.remove(job)
                    self.done.append((job, _classify(job, None)))
            if not block or len(self.running) < self.slots:
                return
            time.sleep(0.01)

    def drain(self) -> list[tuple[Job, Outcome]]:
        while self.running:
            self._reap(block=False)
            time.sleep(0.01)
        done, self.done = self.done, []
        return done


def compile_runtime(work: Path) -> tuple[list[str], dict[str, bytes]]:
    """The runtime compiled once with the generated Makefile's flags: (object
    files, the sources they came from, to check a project ships the same)."""
    src = REPO / "tinyc" / "runtime_c"
    objs, sources = [], {}
    for c in sorted((src / "src").glob("*.c")):
        o = work / f"runtime_{c.stem}.o"
        subprocess.run(["cc", "-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", f"-I{src / 'include'}", "-c",
                        str(c), "-o", str(o)], check=True)
        objs.append(str(o))
        sources[c.name] = c.read_bytes()
    return objs, sources


def make_project(project: Path, runtime: tuple[list[str], dict[str, bytes]], seen: set) -> str | None:
    """`make` in a built project (None when it compiles, else the error)."""
    objs, sources = runtime
    shipped = {p.name: p.read_bytes() for p in (project / "tinyc" / "src").glob("*.c")}
    key = hashlib.sha256(b"".join(p.read_bytes() for p in sorted(project.glob("*.[ch]")))).hexdigest()
    if key in seen:
        return None
    args = ["make", "-s", "-C", str(project)]
    if shipped == sources:  # the same runtime: link the objects compiled once
        args.append("RUNTIME=" + " ".join(objs))
    r = subprocess.run(args, capture_output=True, text=True, timeout=300)
    if r.returncode:
        return (r.stderr or r.stdout).strip()[-400:]
    seen.add(key)
    return None


def campaign(count: int, seed: int, models=MODELS, jobs: int = 2, timeout: float = 60.0, keep: Path | None = None,
             progress=None) -> Totals:
    models = [SHARED / m for m in models]
    originals = [(p, onnx.load(str(p)), p.read_bytes()) for p in models]
    inputs = {}
    for p, m, _ in originals:  # a sample of the original input for `run`
        vi = m.graph.input[0]
        dims = [d.dim_value or 1 for d in vi.type.tensor_type.shape.dim]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type)
        inputs[p] = np.zeros(dims, dtype)
    import tinyc.cli  # noqa: F401  (imported once, before the runs fork)

    rng = random.Random(seed)
    totals = Totals()
    runner = Runner(jobs, timeout)
    seen_builds: set = set()
    with tempfile.TemporaryDirectory(prefix="tinyc-fuzz-") as tmp:
        work = Path(tmp)
        runtime = compile_runtime(work)
        seen_mutants: set = set()
        pending: list[tuple[int, str, Path]] = []
        i = 0
        while totals.mutants < count:
            src, model, raw = originals[i % len(originals)]
            i += 1
            data, what = mutate(rng, model, raw)
            digest = hashlib.sha256(data).hexdigest()
            if digest in seen_mutants or data == raw:
                continue
            seen_mutants.add(digest)
            n = totals.mutants
            totals.mutants += 1
            case = work / f"m{n:05d}"
            case.mkdir()
            (case / "model.onnx").write_bytes(data)
            (case / "what.txt").write_text(f"{src.name}: {what}\n")
            runner.submit(Job(["inspect", "model.onnx"], case, "inspect"))
            runner.submit(Job(["build", "model.onnx", "-o", "proj"], case, "build", out_dir=case / "proj"))
            if n % 4 == 0:
                np.save(case / "x.npy", inputs[src])
                runner.submit(Job(["run", "model.onnx", "--input", "x.npy", "-o", "y.npy", "--engine", "ref"],
                                  case, "run", out_dir=case / "y.npy"))
            pending.append((n, what, case))
            if len(pending) >= 8:
                _collect(runner, totals, runtime, seen_builds, keep, pending)
            if progress:
                progress(1)
        _collect(runner, totals, runtime, seen_builds, keep, pending)
    return totals


def _collect(runner, totals, runtime, seen_builds, keep, pending) -> None:
    for job, outcome in runner.drain():
        if job.label == "build" and outcome.kind == "ok" and runtime is not None:
            problem = make_project(job.out_dir, runtime, seen_builds)
            if problem:
                outcome = Outcome("make", problem)
            else:
                totals.builds_compiled += 1
        totals.add(outcome)
        if outcome.kind == "error":
            key = re.sub(r"'[^']*'|\"[^\"]*\"|-?[0-9][0-9.e+-]*|/\S+", "_", outcome.detail)
            totals.messages[key] = totals.messages.get(key, 0) + 1
        if outcome.kind not in ("ok", "error"):
            what = (job.cwd / "what.txt").read_text().strip()
            totals.findings.append((job.cwd.name, job.label, outcome.kind, what, outcome.detail))
            if keep is not None:
                dest = keep / job.cwd.name
                dest.mkdir(parents=True, exist_ok=True)
                for f in ("model.onnx", "what.txt", f"{job.label}.err", "x.npy"):
                    if (job.cwd / f).exists():
                        shutil.copy(job.cwd / f, dest / f)
    for _, _, case in pending:
        shutil.rmtree(case, ignore_errors=True)
    pending.clear()


# ------------------------------------------------------------------ command lines
# Values a careless user or an attacker types; the fixtures (model.onnx, x.npy,
# bad.npy, nan.npy, proj/) exist in each case's folder.
PATHS = ("model.onnx", "model.onnx", "missing.onnx", ".", "x.npy", "bad.npy", "nan.npy", "proj", "/proc/tinyc",
         "", "out_new", "y.npy", "y.npz", "y.txt", "proj/tinyc.json", "x.npy/y", "model.onnx/")
NUMBERS = ("-1", "0", "1", "0.2", "1e309", "nan", "inf", "-inf", "abc", "99999999999999999999", "")
BOARDS = ("host", "stm32f746", "all", "nope", "rp2040", "mps2-an386", "", "STM32F746")
OPTIONS = {
    "--board": BOARDS, "--json": None, "--input-shape": ("input_1=1,49,10,1", "input_1=0", "x=1", "=", "input_1=-1,2",
                                                          "input_1=1,49,10,1,1", "input_1=a"),
    "--dump-ir": None, "--calib": PATHS, "--calib-method": ("minmax", "percentile", "x"),
    "--pixel-range": ("0,1", "1,0", "a,b", "0", "-inf,inf", "0,nan"),
    "--plan": ("greedy-size", "linear-scan", "x"), "--patch": ("auto", "off", "0:2x1", "999:2x1", "3:0x1", "3:2x2",
                                                               ":", "x", "0:99999x1"),
    "--max-overhead": NUMBERS, "--debug-poison": None, "--name": ("m", "../x", "int", "a" * 100, "\u00e9", "1a", ""),
    "--sample": PATHS, "-o": PATHS, "--input": PATHS, "--engine": ("ref", "c", "qemu", "x"), "--timeout": NUMBERS,
    "--format": ("md", "json", "html", "pdf"), "--update": ("bias=last2", "weight=-1", "x", "", "bias=last999"),
    "--budget": NUMBERS, "--data": PATHS, "--samples": NUMBERS, "--probe": ("x", ""), "--dry-run": None,
}
COMMANDS = {
    "inspect": ("--json", "--input-shape", "--dump-ir"),
    "build": ("--board", "--sample", "-o", "--name", "--json", "--calib", "--calib-method", "--pixel-range", "--plan",
              "--patch", "--max-overhead", "--input-shape", "--debug-poison"),
    "run": ("--input", "-o", "--engine", "--board", "--timeout", "--json", "--calib", "--plan", "--patch",
            "--max-overhead", "--input-shape"),
    "report": ("--board", "--format", "-o", "--update", "--budget", "--data", "--samples", "--calib", "--plan",
               "--patch", "--max-overhead", "--input-shape"),
    "flash": ("--board", "--probe", "--dry-run"),
    "boards": ("--json",),
}


def command_line(rng: random.Random) -> list[str]:
    """One command line: a command, its positional argument, and a random handful
    of its options (now and then an unknown or repeated one), valid values or not."""
    cmd = rng.choice(list(COMMANDS))
    argv = [cmd]
    if cmd in ("inspect", "build", "run", "report"):
        argv.append(rng.choice(("model.onnx", "model.onnx", "model.onnx", "proj") + PATHS))
    elif cmd == "flash":
        argv.append(rng.choice(("proj", "proj", ".", "missing", "model.onnx")))
    options = list(COMMANDS[cmd])
    required = {"build": ["-o"], "run": ["--input", "-o"], "report": ["--board"]}.get(cmd, [])
    chosen = [o for o in required if rng.random() < 0.9] + rng.sample(options, rng.randint(0, min(4, len(options))))
    if rng.random() < 0.1:
        chosen.append(rng.choice(("--bogus", "-x", "--json=1", "--")))
    for opt in chosen:
        values = OPTIONS.get(opt)
        argv.append(opt)
        if values is not None:
            argv.append(rng.choice(values))
    return argv


def cli_campaign(count: int, seed: int, model: str = MODELS[0], jobs: int = 2, timeout: float = 60.0,
                 keep: Path | None = None) -> Totals:
    """``count`` random command lines against one shared model, its built project
    and data files of every kind, each in a fresh copy of those fixtures."""
    import tinyc.cli  # noqa: F401  (imported once, before the runs fork)
    from tinyc.cli import main as tinyc_main

    rng = random.Random(seed)
    totals = Totals(noun="command lines")
    runner = Runner(jobs, timeout)
    with tempfile.TemporaryDirectory(prefix="tinyc-fuzz-cli-") as tmp:
        work = Path(tmp)
        fixtures = work / "fixtures"
        fixtures.mkdir()
        src = SHARED / model
        shutil.copy(src, fixtures / "model.onnx")
        vi = onnx.load(str(src)).graph.input[0]
        dims = [d.dim_value or 1 for d in vi.type.tensor_type.shape.dim]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type)
        np.save(fixtures / "x.npy", np.zeros(dims, dtype))
        np.save(fixtures / "nan.npy", np.full(dims, np.nan, np.float32))
        (fixtures / "bad.npy").write_bytes(b"\x93NUMPY garbage")
        cwd = os.getcwd()
        os.chdir(fixtures)
        try:
            tinyc_main(["build", "model.onnx", "-o", "proj"])
        except SystemExit as e:
            if e.code:
                raise
        finally:
            os.chdir(cwd)
        pending = []
        for n in range(count):
            argv = command_line(rng)
            case = work / f"c{n:05d}"
            shutil.copytree(fixtures, case, symlinks=True)
            (case / "what.txt").write_text("tinyc " + " ".join(map(repr, argv)) + "\n")
            label = argv[0]
            # a failed run must not leave a new output behind (existing fixtures may stay)
            new_out = "-o" in argv and argv[argv.index("-o") + 1:argv.index("-o") + 2] == ["out_new"]
            runner.submit(Job(argv, case, label, out_dir=case / "out_new" if new_out else None))
            totals.mutants += 1
            pending.append((n, " ".join(argv), case))
            if len(pending) >= 8:
                _collect(runner, totals, None, set(), keep, pending)
        _collect(runner, totals, None, set(), keep, pending)
    return totals


def summary(totals: Totals) -> str:
    kinds = ", ".join(f"{k} {v}" for k, v in sorted(totals.by_kind.items()))
    made = "" if totals.noun != "mutants" else f"{totals.builds_compiled} successful builds compiled with make; "
    lines = [f"fuzz: {totals.mutants} {totals.noun}, {totals.runs} runs ({kinds}); {made}{totals.bad} findings"]
    for case, label, kind, what, detail in totals.findings:
        lines.append(f"  {case} {label}: {kind}: {what}: {' '.join(detail.split())[:300]}")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=500, help="mutants (default 500)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds per run before it counts as a hang")
    ap.add_argument("--keep", type=Path, default=None, help="copy each finding's mutant and stderr here")
    ap.add_argument("--messages", type=int, default=0, metavar="N", help="print the N most common error lines")
    ap.add_argument("--models", nargs="*", default=list(MODELS), help="paths under ../shared/models")
    ap.add_argument("--command-lines", type=int, default=0, metavar="N",
                    help="instead of mutants: N random command lines against the first model")
    args = ap.parse_args(argv)
    if not SHARED.is_dir():
        print(f"fuzz: {SHARED} is absent; the fuzzer mutates the shared models", file=sys.stderr)
        return 2
    t0 = time.monotonic()
    done = [0]

    def progress(n):
        done[0] += n
        if sys.stderr.isatty():
            print(f"\r{done[0]}/{args.count} mutants", end="", file=sys.stderr)

    if args.command_lines:
        totals = cli_campaign(args.command_lines, args.seed, args.models[0], args.jobs, args.timeout, args.keep)
    else:
        totals = campaign(args.count, args.seed, args.models, args.jobs, args.timeout, args.keep, progress)
    if sys.stderr.isatty():
        print(file=sys.stderr)
    print(summary(totals))
    for key, n in sorted(totals.messages.items(), key=lambda kv: -kv[1])[: args.messages]:
        print(f"{n:6d}  {key[:200]}")
    print(f"fuzz: {time.monotonic() - t0:.0f} s")
    return 1 if totals.bad else 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.exit(main())
