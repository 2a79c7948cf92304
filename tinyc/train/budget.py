"""``--budget BYTES``: the update set with the largest expected gain that fits a
training-SRAM budget.

Expected gain: the first-order loss decrease of an SGD step is lr x |g|^2, so a
parameter's (or an output channel's) gain is its squared gradient, summed over
a few samples of the training data: the int8 step's own gradients, every
parameter's at once (a full-backprop build, lr 0, through the generated C).

Cost: the training SRAM (arena + trainable parameters and state) of the
update set, as ``memory_of`` plans it (without recompute while searching: an
upper bound that is quicker to plan). The arena depends mostly on how deep the
backward reaches, so the search goes by depth: for the biases of the last d
layers (cheap, and each one a gain), the weights of those layers are added
greedily by gain per byte, whole or the first 1/2, 1/4, 1/8 of their output
channels, while the estimate fits; the set is then planned exactly and trimmed
until it fits. The depth whose set has the largest gain wins.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np

from ..errors import TinycError
from ..ir import Graph
from .spec import Layer, parse_update

RATIOS = (0.125, 0.25, 0.5, 1.0)


@dataclass
class Choice:
    spec: str
    total_bytes: int
    arena_bytes: int
    trainable_bytes: int
    gain: float
    depth: int
    samples: int

    def summary(self, budget: int) -> dict:
        """The JSON of a choice (tinyc train --json, the report's training section)."""
        return {"bytes": budget, "chosen_total_bytes": self.total_bytes, "depth": self.depth,
                "probe_samples": self.samples, "gain": self.gain}

    def describe(self, budget: int) -> str:
        return (f"--budget {budget:,} B: chose {self.spec!r} (training SRAM {self.total_bytes:,} B: arena "
                f"{self.arena_bytes:,} + trainable {self.trainable_bytes:,}), the largest gain (squared gradient "
                f"summed over {self.samples} samples of --data) of the update sets that fit, backward {self.depth} "
                "layers deep")


def _spec(layers: list[Layer], depth: int, weights: dict[int, float], frozen: frozenset[int] = frozenset()) -> str:
    n = len(layers)
    parts = [f"bias={','.join(str(i) for i in range(n - depth, n) if layers[i].bias and i not in frozen)}"]
    if weights:
        parts.append("weight=" + ",".join(str(i) if r == 1.0 else f"{i}@{r:g}" for i, r in sorted(weights.items())))
    spec = "; ".join(p for p in parts if not p.endswith("="))
    return spec or f"weight={n - 1}@0.125"


def probe_gains(graph: Graph, layers: list[Layer], data, rounding: str) -> dict[tuple[int, str], np.ndarray]:
    """(layer index, "weight" | "bias") -> the squared gradient per output
    channel, summed over the samples of ``data`` (a run.Dataset): the int8
    step's gradients, every layer's."""
    from .engine import CTrainer, build_training
    from .run import to_program_input

    b = build_training(copy.deepcopy(graph), parse_update("full", layers), "probe", rounding, fused=False)
    x_q, labels = to_program_input(b.tp, data), data.y
    params = b.tp.update_order()
    trainer = CTrainer(b, cflags=["-DTINYC_TRAIN_OBSERVE=tinyc_train_observe"])
    try:
        raw = np.frombuffer(trainer.replay([(int(y), 0.0, x) for x, y in zip(x_q, labels)], False), np.float32)
    finally:
        trainer.close()
    index = {layer.weight: layer.index for layer in layers}
    gains: dict[tuple[int, str], np.ndarray] = {}
    at = 0
    for _ in range(len(labels)):
        for p in params:
            shape = b.tp.graph.tensors[p.param.grad].shape
            g = raw[at:at + int(np.prod(shape))].astype(np.float64).reshape(shape[0], -1)
            at += g.size
            key = (index[p.param.update.layer.weight], p.param.kind)
            gains[key] = gains.get(key, 0) + (g * g).sum(axis=1)
        at += 1  # the loss
    return gains


PROBE_SAMPLES = 8


def choose(graph: Graph, layers: list[Layer], budget: int, data, rounding: str = "residue",
           frozen: frozenset[int] = frozenset(), progress=None) -> Choice:
    """The update set for a training-SRAM budget of ``budget`` bytes, gains
    probed on the first PROBE_SAMPLES samples of ``data`` (a run.Dataset);
    ``frozen``: layers that may not be trained (their values could not be
    written back to the file)."""
    from .engine import memory_of
    from .run import Dataset

    cache: dict[str, dict] = {}

    def memory(spec: str) -> dict:
        # without recompute: quicker to plan, and never below the figure with it
        if spec not in cache:
            cache[spec] = memory_of(graph, parse_update(spec, layers), rounding, recompute=False)
            if progress is not None:
                progress(1)
        return cache[spec]

    n = len(layers)
    least = memory(_spec(layers, 1, {}, frozen) if layers[-1].bias else f"weight={n - 1}@0.125")
    if least["total_bytes"] > budget:
        raise TinycError(f"--budget {budget:,}: too small for any training of this model: the least (the last "
                         f"layer's bias) needs {least['total_bytes']:,} B of SRAM; give --budget "
                         f"{least['total_bytes']} or more")
    probe = Dataset(data.x[:PROBE_SAMPLES], data.y[:PROBE_SAMPLES])
    gains = probe_gains(graph, layers, probe, rounding)
    per_weight = 1 + (rounding == "residue")  # an int8 weight and its residue byte
    best: Choice | None = None
    over = 0
    for depth in range(1, n + 1):
        base = memory(_spec(layers, depth, {}, frozen))
        if base["total_bytes"] > budget:
            over += 1
            if over == 3:  # deeper backward only costs more
                break
            continue
        over = 0
        room = budget - base["total_bytes"]
        weights: dict[int, float] = {}
        while True:  # the best next step in gain per byte: a layer's weight, or more of its channels
            step = None
            for i in range(n - depth, n):
                if i in frozen:
                    continue
                c = layers[i].out_channels
                have = math.ceil(weights.get(i, 0) * c)
                channel_bytes = per_weight * int(np.prod(layers[i].weight_shape)) // c
                g = gains.get((i, "weight"))
                if g is None:
                    continue
                for r in RATIOS:
                    k = math.ceil(r * c)
                    if k <= have:
                        continue
                    cost = (k - have) * channel_bytes
                    value = float(g[have:k].sum())
                    if cost <= room and (step is None or value / cost > step[0]):
                        step = (value / cost, i, r, cost)
            if step is None:
                break
            _, i, r, cost = step
            weights[i] = r
            room -= cost
        while True:  # planned exactly (saved inputs cost arena too); trimmed until it fits
            spec = _spec(layers, depth, weights, frozen)
            m = memory(spec)
            if m["total_bytes"] <= budget or not weights:
                break
            worst = min(weights, key=lambda i: float(gains[(i, "weight")][:math.ceil(weights[i] *
                                                                                      layers[i].out_channels)].sum()))
            smaller = [r for r in RATIOS if r < weights[worst]]
            if smaller:
                weights[worst] = smaller[-1]
            else:
                del weights[worst]
        if m["total_bytes"] > budget:
            continue
        gain = sum(float(gains.get((i, "bias"), np.zeros(1)).sum()) for i in range(n - depth, n) if i not in frozen)
        gain += sum(float(gains[(i, "weight")][:math.ceil(r * layers[i].out_channels)].sum())
                    for i, r in weights.items())
        if best is None or gain > best.gain:
            best = Choice(spec, m["total_bytes"], m["arena_bytes"], m["trainable_bytes"], gain, depth, len(probe.y))
    assert best is not None  # depth 1 fits: least did
    m = memory_of(graph, parse_update(best.spec, layers), rounding)  # as it will be built
    best.total_bytes, best.arena_bytes, best.trainable_bytes = m["total_bytes"], m["arena_bytes"], m["trainable_bytes"]
    return best
