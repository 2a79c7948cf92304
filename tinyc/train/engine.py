"""Training engines: the generated C on the host (``CTrainer``) and the numpy
specs (``RefTrainer``), over one lowered training program (lower.py).

Both take int8 samples in the program's internal layout and labels, run SGD
steps and inferences, and expose the trainable parameters' values; the C one
keeps its state in a file between runs of the generated training program.
"""

from __future__ import annotations

import copy
import struct
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..codegen.c import generate, runtime_files
from ..errors import TinycError
from ..ir import Graph
from ..passes.memory import MemoryPlan, plan_memory
from .lower import TrainProgram, lower_training, predict, run_step
from .spec import LayerUpdate


@dataclass
class TrainBuild:
    tp: TrainProgram
    plan: MemoryPlan  # NAME_invoke's
    train_plan: MemoryPlan  # NAME_train_step's
    name: str
    files: dict[str, str]
    summary: dict = field(default_factory=dict)

    @property
    def arena_bytes(self) -> int:
        return max(self.plan.arena_size, self.train_plan.arena_size)


def build_training(graph: Graph, updates: list[LayerUpdate], name: str, rounding: str = "residue",
                   source: str = "model", poison: bool = False, fused: bool = True,
                   precision: str = "int8", max_step: int = 1, **schedule) -> TrainBuild:
    """Lower, plan and generate the C of a training build: of the quantized
    graph (lowered in place), or with ``precision`` "float" of the float graph.
    ``schedule``: lower_training's sum_bias_tails / recompute."""
    tp = lower_training(graph, updates, rounding, fused=fused, precision=precision, max_step=max_step, **schedule)
    plan = plan_memory(tp.inference)
    train_plan = plan_memory(tp.step, reorder=False)
    files = generate(tp.inference, plan, name, source, poison=poison, train=tp, train_plan=train_plan)
    b = TrainBuild(tp, plan, train_plan, name, files)
    b.summary = {
        "train_arena_bytes": b.arena_bytes,
        "inference_arena_bytes": plan.arena_size,
        "trainable_bytes": tp.trainable_bytes(),
        "train_total_bytes": b.arena_bytes + tp.trainable_bytes(),
        "rounding": tp.rounding,
        "max_step": max_step,
        "recomputed_tensors": len(tp.recomputed),
        "recompute_macs": tp.recompute_macs,
    }
    return b


def memory_of(graph: Graph, updates: list[LayerUpdate], rounding: str = "residue", precision: str = "int8",
              **schedule) -> dict:
    """Training SRAM of an update set (arena, trainable bytes, total) without generating C."""
    tp = lower_training(copy.deepcopy(graph), updates, rounding, precision=precision, **schedule)
    arena = max(plan_memory(tp.inference).arena_size, plan_memory(tp.step, reorder=False).arena_size)
    return {"arena_bytes": arena, "trainable_bytes": tp.trainable_bytes(),
            "total_bytes": arena + tp.trainable_bytes()}


class RefTrainer:
    """Training steps with the numpy specs of the kernels."""

    def __init__(self, build: TrainBuild, seed: int = 0):
        self.tp = build.tp
        self.rng = seed & 0xFFFFFFFF

    def steps(self, xs: np.ndarray, labels, lr: float, observe=None) -> np.ndarray:
        losses = []
        for x, y in zip(xs, labels):
            loss, self.rng = run_step(self.tp, x, int(y), lr, self.rng, observe)
            losses.append(loss)
        return np.array(losses, np.float32)

    def predict(self, xs: np.ndarray) -> np.ndarray:
        return np.stack([predict(self.tp, x) for x in xs]).reshape(len(xs), -1)

    def params(self) -> dict[str, np.ndarray]:
        return {p.tensor: self.tp.graph.tensors[p.tensor].data for p in self.tp.params}


class CTrainer:
    """The generated training program, compiled for the host; state between runs
    in a file (NAME_train_state_save / _load)."""

    def __init__(self, build: TrainBuild, seed: int = 0, cflags: list[str] | None = None):
        from ..sim.host import HOST_CFLAGS, host_cc

        self.build = build
        self.seed = seed & 0xFFFFFFFF
        self._tmp = tempfile.TemporaryDirectory(prefix="tinyc-train-")
        self.root = Path(self._tmp.name)
        for rel, text in build.files.items():
            (self.root / rel).write_text(text)
        for rel, src in runtime_files().items():
            (self.root / rel).parent.mkdir(parents=True, exist_ok=True)
            (self.root / rel).write_bytes(src.read_bytes())
        self.exe = self.root / f"{build.name}_train"
        sources = [self.root / "train_main.c", self.root / f"{build.name}.c",
                   *sorted((self.root / "tinyc" / "src").glob("*.c"))]
        import subprocess

        cmd = [*host_cc(), *HOST_CFLAGS, *(cflags or []), f"-I{self.root}", f"-I{self.root / 'tinyc' / 'include'}",
               "-o", str(self.exe), *map(str, sources)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            first = next((ln for ln in proc.stderr.splitlines() if "error" in ln), proc.stderr.strip()[:300])
            raise TinycError(f"compiling the generated training C failed ({cmd[0]}): {first}")
        self.state_file = self.root / "state.bin"
        self._started = False
        g = build.tp.graph
        self.input_dtype = g.tensors[build.tp.inference.inputs[0]].dtype
        self.output_dtype = g.tensors[build.tp.inference.outputs[0]].dtype
        self.output_size = sum(g.tensors[o].size for o in build.tp.inference.outputs)

    def close(self) -> None:
        self._tmp.cleanup()

    def replay(self, records: list[tuple[int, float, np.ndarray]], update_state: bool) -> bytes:
        """Run (label, lr, input) records through the training program (label -1:
        an inference); returns what it wrote (losses, outputs, observed gradients)."""
        import subprocess

        blob = bytearray(struct.pack("<I", self.seed))
        for label, lr, x in records:
            blob += struct.pack("<if", label, lr)
            blob += np.ascontiguousarray(x, self.input_dtype).tobytes()
        steps, out = self.root / "steps.bin", self.root / "out.bin"
        steps.write_bytes(bytes(blob))
        state_in = str(self.state_file) if self._started else "-"
        state_out = str(self.state_file) if update_state else "-"
        proc = subprocess.run([str(self.exe), str(steps), str(out), state_in, state_out], capture_output=True,
                              text=True, timeout=3600)
        if proc.returncode != 0:
            raise TinycError(f"the generated training program failed (exit {proc.returncode}): "
                             f"{proc.stderr.strip()[:300]}")
        if update_state:
            self._started = True
        return out.read_bytes()

    def steps(self, xs: np.ndarray, labels, lr: float) -> np.ndarray:
        raw = self.replay([(int(y), float(lr), x) for x, y in zip(xs, labels)], update_state=True)
        return np.frombuffer(raw, np.float32).copy()

    def predict(self, xs: np.ndarray) -> np.ndarray:
        raw = self.replay([(-1, 0.0, x) for x in xs], update_state=False)
        return np.frombuffer(raw, self.output_dtype).reshape(len(xs), self.output_size).copy()

    def state(self) -> bytes:
        if not self._started:
            self.replay([], update_state=True)
        return self.state_file.read_bytes()

    def params(self) -> dict[str, np.ndarray]:
        """The trainable parameters' current values, from the saved state."""
        raw, at, out = self.state(), 0, {}
        g = self.build.tp.graph
        for name in self.build.tp.state_tensors():
            t = g.tensors[name]
            out[name] = np.frombuffer(raw[at:at + t.nbytes], t.dtype).reshape(t.shape).copy()
            at += t.nbytes
        return {p.tensor: out[p.tensor] for p in self.build.tp.params} | {
            k: v for k, v in out.items() if k not in {p.tensor for p in self.build.tp.params}}
