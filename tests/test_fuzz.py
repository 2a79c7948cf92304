"""The fuzz harness (scripts/fuzz.py): a fixed-seed campaign of 500 mutants of
the shared models through inspect, build and run, and checks that the harness
itself notices each way of breaking the error contract."""

from __future__ import annotations

import importlib.util
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from .conftest import REPO, needs_shared
from .test_errors import conv_model, save

_spec = importlib.util.spec_from_file_location("tinyc_fuzz", REPO / "scripts" / "fuzz.py")
fuzz = importlib.util.module_from_spec(_spec)
sys.modules["tinyc_fuzz"] = fuzz  # dataclasses look their module up
_spec.loader.exec_module(fuzz)


@needs_shared
def test_fuzz_campaign_keeps_the_error_contract(capsys):
    """500 structure- and byte-level mutants of 5 shared models: no traceback,
    hang, crash, second stderr line or half-written output, and every build
    that succeeds compiles with its make (-Werror). The totals are printed."""
    totals = fuzz.campaign(count=500, seed=1)
    with capsys.disabled():
        print("\n" + fuzz.summary(totals))
    assert totals.mutants == 500
    assert totals.by_kind.get("error", 0) > 500 and totals.by_kind.get("ok", 0) > 50  # both paths exercised
    assert totals.builds_compiled > 10
    assert totals.bad == 0, fuzz.summary(totals)


def _outcomes(tmp_path, monkeypatch, fake_main, timeout=30.0):
    """Run the harness's runner on one inspect with tinyc's main replaced."""
    import tinyc.cli

    monkeypatch.setattr(tinyc.cli, "main", fake_main)
    save(conv_model(), tmp_path / "m.onnx")
    runner = fuzz.Runner(jobs=1, timeout=timeout)
    runner.submit(fuzz.Job(["inspect", "m.onnx"], tmp_path, "inspect"))
    runner.submit(fuzz.Job(["build", "m.onnx", "-o", "proj"], tmp_path, "build", out_dir=tmp_path / "proj"))
    return {job.label: outcome.kind for job, outcome in runner.drain()}


def test_harness_reports_a_traceback(tmp_path, monkeypatch):
    def main(argv):
        raise IndexError("list index out of range")
    assert _outcomes(tmp_path, monkeypatch, main) == {"inspect": "traceback", "build": "traceback"}


def test_harness_reports_a_hang(tmp_path, monkeypatch):
    def main(argv):
        time.sleep(60)
    assert _outcomes(tmp_path, monkeypatch, main, timeout=1.0) == {"inspect": "hang", "build": "hang"}


def test_harness_reports_a_crash(tmp_path, monkeypatch):
    def main(argv):
        os.kill(os.getpid(), signal.SIGSEGV)
    assert _outcomes(tmp_path, monkeypatch, main) == {"inspect": "crash", "build": "crash"}


def test_harness_reports_two_lines_and_a_wrong_status(tmp_path, monkeypatch):
    def main(argv):
        print("tinyc: error: one", file=sys.stderr)
        print("and two", file=sys.stderr)
        sys.exit(2 if argv[0] == "inspect" else 3)
    assert _outcomes(tmp_path, monkeypatch, main) == {"inspect": "not-one-line", "build": "bad-exit"}


def test_harness_reports_a_half_written_output(tmp_path, monkeypatch):
    def main(argv):
        Path("proj").mkdir(exist_ok=True)
        print("tinyc: error: failed", file=sys.stderr)
        sys.exit(2)
    assert _outcomes(tmp_path, monkeypatch, main)["build"] == "half-written"


def test_harness_passes_the_real_tinyc(tmp_path):
    save(conv_model(), tmp_path / "m.onnx")
    runner = fuzz.Runner(jobs=2, timeout=60)
    runner.submit(fuzz.Job(["inspect", "m.onnx"], tmp_path, "inspect"))
    runner.submit(fuzz.Job(["build", "m.onnx", "-o", "proj"], tmp_path, "build", out_dir=tmp_path / "proj"))
    assert {job.label: outcome.kind for job, outcome in runner.drain()} == {"inspect": "ok", "build": "error"}


@pytest.mark.parametrize("seed", [3, 4])
def test_mutations_are_reproducible(seed):
    import random

    import onnx

    model = conv_model()
    raw = model.SerializeToString()
    rng_a, rng_b = random.Random(seed), random.Random(seed)
    a = [fuzz.mutate(rng_a, model, raw) for _ in range(20)]
    b = [fuzz.mutate(rng_b, onnx.load_from_string(raw), raw) for _ in range(20)]
    assert a == b
    assert model.SerializeToString() == raw  # mutants are copies
    assert sum(data != raw for data, _ in a) >= 15


@needs_shared
def test_fuzzed_command_lines_keep_the_error_contract(capsys):
    """300 random command lines (every command, valid and invalid option values,
    unknown and repeated options, files of every kind) against kws, its built
    project and its data. Found: report --update with a missing model or a
    folder read the file unchecked (a traceback)."""
    totals = fuzz.cli_campaign(count=300, seed=1)
    with capsys.disabled():
        print("\n" + fuzz.summary(totals))
    assert totals.by_kind.get("ok", 0) > 20 and totals.by_kind.get("error", 0) > 100
    assert totals.bad == 0, fuzz.summary(totals)
