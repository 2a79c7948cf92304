"""Training numerics: test accuracy of fine-tuning ResNet-8 on digits32 with the
numpy reference trainers (tinyc/train/reference.py), float and int8, against
PyTorch's float baseline. ``python benchmarks/train_numerics.py`` (about 15 min).

The scheme is baselines.json's ``mlperf_ic_resnet8/sparse`` (its learning rate,
epochs, batch 1, shuffled each epoch). The float rows train the float NCHW model
(its layers in the file's order); the int8 rows train the shared int8 model, whose
file lists the residual blocks' layers in another order, so the same layers are
named there by their weights. These are the reference's numerics, not yet
``tinyc train``: the generated C is bit-exact with them where it is integer.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.markdown import run  # noqa: E402
from tinyc import api  # noqa: E402
from tinyc.train.reference import FloatTrainer, Int8Trainer  # noqa: E402
from tinyc.train.spec import model_layers, parse_update  # noqa: E402

BEGIN, END = "<!-- train-numerics:begin -->", "<!-- train-numerics:end -->"
SEEDS = (0, 1, 2)
INT8_SPEC = ("bias=model/conv2d_4/Conv2D,model/conv2d_5/Conv2D,model/conv2d_6/Conv2D,model/conv2d_7/Conv2D,"
             "model/conv2d_8/Conv2D,model/dense/MatMul; "
             "weight=model/conv2d_6/Conv2D,model/conv2d_8/Conv2D@0.5,model/dense/MatMul")
VARIANTS = ("float", "int8 nearest", "int8 stochastic", "int8 residue", "int8 float-copy")


def _train(shared: Path, variant: str, seed: int, scheme: dict) -> float:
    data = np.load(shared / "training" / "digits32.npz")
    if variant == "float":
        path = shared / "mlperf_tiny" / "ic_resnet8_float_nchw.onnx"
        trainer = FloatTrainer(api.load(path), parse_update(scheme["update"], model_layers(path)))

        def prep(x):
            return x.astype(np.float32)[None]

        def predict(x):
            return int(np.argmax(trainer.logits(prep(x))))
    else:
        path = shared / "mlperf_tiny" / "ic_resnet8_int8.onnx"
        rounding = {"nearest": "nearest", "stochastic": "stochastic", "residue": "residue",
                    "float-copy": "float"}[variant.split()[1]]
        trainer = Int8Trainer(api.load(path), parse_update(INT8_SPEC, model_layers(path)), rounding, seed)

        def prep(x):
            return (x.astype(np.int16) - 128).astype(np.int8)[None]

        def predict(x):
            return int(np.argmax(trainer.logits_q(prep(x))))
    rng = np.random.default_rng(seed)
    for _ in range(scheme["epochs"]):
        for i in rng.permutation(len(data["train_y"])):
            trainer.step(prep(data["train_x"][i]), int(data["train_y"][i]), scheme["lr"])
    return float(np.mean([predict(x) == y for x, y in zip(data["test_x"], data["test_y"])]))


def measure(shared: Path) -> list[dict]:
    scheme = json.loads((shared / "training" / "baselines.json").read_text())["schemes"]["mlperf_ic_resnet8/sparse"]
    rows = []
    for variant in VARIANTS:
        accs = [_train(shared, variant, seed, scheme) for seed in SEEDS]
        print(f"{variant}: {accs}", file=sys.stderr, flush=True)
        rows.append({"variant": variant, "accs": accs, "mean": float(np.mean(accs)), "std": float(np.std(accs))})
    rows.append({"variant": "PyTorch float (baselines.json)", "accs": scheme["accs"], "mean": scheme["mean"],
                 "std": scheme["std"]})
    return rows


def table(rows: list[dict]) -> str:
    torch = rows[-1]["mean"]
    lines = [
        BEGIN,
        "## Training numerics: ResNet-8 on digits32, `sparse` scheme (numpy reference)",
        "",
        "Written by `python benchmarks/train_numerics.py`: test accuracy (719 digits) after fine-tuning",
        "with baselines.json's `mlperf_ic_resnet8/sparse` scheme (biases of the last 6 layers, weights of",
        "layers -4, -2 (first half of its channels) and -1; SGD, lr 0.01, batch 1, 3 epochs) for seeds 0, 1, 2,",
        "by tinyc's numpy reference trainers (`tinyc/train/reference.py`). int8 rows: the int8 forward",
        "(bit-exact with `NAME_invoke`), float32 backward on the dequantized activations, int8 weights",
        "updated in units of their scale (QAS) with the fraction rounded to nearest, stochastically, kept",
        "in a residue byte, or (a yardstick with no C kernel yet) in a float copy of the updated slice.",
        "Not yet through `tinyc train`.",
        "",
        "| numerics | seed 0 | seed 1 | seed 2 | mean | spread (std) | vs PyTorch mean |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        a = r["accs"]
        lines.append(f"| {r['variant']} | {a[0]:.4f} | {a[1]:.4f} | {a[2]:.4f} | {r['mean']:.4f} | {r['std']:.4f} | "
                     f"{100 * (r['mean'] - torch):+.1f} pts |")
    lines.append(END)
    return "\n".join(lines)


if __name__ == "__main__":
    run(__doc__, measure, table, BEGIN, END)
