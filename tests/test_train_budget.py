"""tinyc train --budget: the update set chosen for a training-SRAM budget fits
it, says what it chose, and a budget too small for anything is one line naming
the smallest that works."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from tinyc import api
from tinyc.train import run as tr
from tinyc.train.budget import choose
from tinyc.train.engine import memory_of
from tinyc.train.spec import model_layers, parse_update

from .conftest import EXAMPLES, SHARED_MODELS, needs_shared

MODEL = EXAMPLES / "digits_cnn.onnx"
VWW = SHARED_MODELS / "mlperf_tiny" / "vww_mbv1_int8.onnx"


def _tinyc(*args):
    return subprocess.run([sys.executable, "-m", "tinyc.cli", *map(str, args)], capture_output=True, text=True)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = np.load(EXAMPLES / "digits_samples.npz")
    path = tmp_path_factory.mktemp("budget") / "d.npz"
    np.savez(path, train_x=d["inputs"], train_y=d["labels"])
    return path


def test_budget_chooses_what_fits_and_says_so(tmp_path, data):
    """Budgets from the least that works up: each choice's training SRAM (as
    tinyc train then builds it) is within the budget, a larger budget never
    gets a smaller gain, and layers whose values cannot be written back (conv1,
    folded with a BatchNormalization) are never chosen."""
    common = ["--calib", EXAMPLES / "digits_samples.npz", "--data", data, "--lr", "0.05", "--json"]
    r = _tinyc("train", MODEL, *common, "--budget", "10", "-o", tmp_path / "small")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    least = int(r.stderr.split("give --budget ")[1].split()[0])
    assert not (tmp_path / "small").exists()
    gains = []
    for k, budget in enumerate((least, 3000, 6000, 100000)):
        r = _tinyc("train", MODEL, *common, "--budget", budget, "-o", tmp_path / f"b{k}")
        assert r.returncode == 0, r.stderr
        s = json.loads(r.stdout)
        assert s["train_total_bytes"] <= budget and s["budget"]["bytes"] == budget
        assert s["budget"]["chosen_total_bytes"] == s["train_total_bytes"]
        assert "0" not in [p.strip().split("@")[0] for c in s["update"].split(";") for p in c.split("=")[1].split(",")]
        gains.append(s["budget"]["gain"])
    assert gains == sorted(gains) and gains[0] < gains[-1]
    r = _tinyc("train", MODEL, "--calib", EXAMPLES / "digits_samples.npz", "--data", data, "--lr", "0.05",
               "--budget", "5000", "--update", "head", "-o", tmp_path / "both")
    assert r.returncode == 2 and "--update SPEC, or --budget" in r.stderr
    r = _tinyc("train", MODEL, "--calib", EXAMPLES / "digits_samples.npz", "--data", data, "--lr", "0.05", "-o",
               tmp_path / "neither")
    assert r.returncode == 2 and "--update SPEC, or --budget" in r.stderr


@needs_shared
def test_vww_budget_128_kb_fits():
    """VWW MobileNetV1 with --budget 131072 (its accuracy is in BENCHMARKS.md):
    the chosen set's training SRAM, planned again, is within the budget."""
    graph = api.load(VWW)
    layers = model_layers(VWW)
    data = tr.read_dataset(graph, SHARED_MODELS / "training" / "lfw96.npz", "train", (0.0, 1.0), 2)
    c = choose(graph, layers, 131072, data, frozen=tr.unwritable_layers(VWW))
    m = memory_of(graph, parse_update(c.spec, layers))
    assert m["total_bytes"] == c.total_bytes <= 131072
    assert c.depth > 1 and "bias=" in c.spec
