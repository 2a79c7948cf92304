"""No command writes over an input, a file it did not create or a folder it did
not create; names that would collide with generated files or C are refused; and
every such refusal comes before any work (one line, exit 2)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from .conftest import EXAMPLES
from .test_errors import assert_user_error, tinyc

MODEL = EXAMPLES / "digits_cnn.onnx"
CALIB = EXAMPLES / "digits_samples.npz"


@pytest.fixture
def work(tmp_path):
    """A user's folder: a copy of the example model, its samples and a calibration file."""
    (tmp_path / "m.onnx").write_bytes(MODEL.read_bytes())
    (tmp_path / "x.npz").write_bytes(CALIB.read_bytes())
    (tmp_path / "calib.npz").write_bytes(CALIB.read_bytes())
    return tmp_path


def _snapshot(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _run(work, *args):
    return tinyc(work, "run", "m.onnx", "--calib", "calib.npz", "--engine", "ref", "--input", "x.npz", *args)


@pytest.mark.parametrize("target", ["m.onnx", "x.npz", "calib.npz", "link_to_model", "hard_link_to_input.npy"])
def test_run_never_writes_over_an_input(work, target):
    os.symlink(work / "m.onnx", work / "link_to_model")
    os.link(work / "x.npz", work / "hard_link_to_input.npy")
    before = _snapshot(work)
    r = _run(work, "-o", target)
    assert_user_error(r, target)
    assert _snapshot(work) == before


def test_run_output_must_be_numpy_data(work):
    r = _run(work, "-o", "notes.txt")
    assert_user_error(r, "notes.txt", ".npy or .npz")
    assert not (work / "notes.txt").exists()


def test_output_folder_is_checked_before_quantizing(work):
    # the calibration file is bad too: the -o error must come first, before any work
    (work / "calib.npz").write_bytes(b"not numpy")
    r = _run(work, "-o", "missing/y.npy")
    assert_user_error(r, "missing", "does not exist")
    r = tinyc(work, "build", "m.onnx", "--calib", "calib.npz", "-o", "missing/proj")
    assert_user_error(r, "missing", "does not exist")
    r = tinyc(work, "report", "m.onnx", "--calib", "calib.npz", "--board", "host", "--format", "json",
              "-o", "missing/r.json")
    assert_user_error(r, "missing", "does not exist")


def test_report_never_writes_over_an_input_or_a_foreign_png(work):
    before = _snapshot(work)
    r = tinyc(work, "report", "m.onnx", "--calib", "calib.npz", "--board", "host", "--format", "json", "-o", "m.onnx")
    assert_user_error(r, "m.onnx")
    r = tinyc(work, "report", "m.onnx", "--calib", "calib.npz", "--board", "host", "--format", "html", "-o", "r.md")
    assert_user_error(r, "r.md", ".html")
    assert _snapshot(work) == before
    # the Markdown report's plot goes beside it: a PNG the user made is never replaced
    (work / "r.png").write_bytes(b"\x89PNG\r\n\x1a\n the user's picture")
    r = tinyc(work, "report", "m.onnx", "--calib", "calib.npz", "--board", "host", "-o", "r.md")
    assert_user_error(r, "r.png", "not a plot tinyc wrote")
    assert (work / "r.png").read_bytes().endswith(b"the user's picture") and not (work / "r.md").exists()
    # ... but tinyc's own plot is, when the report is written again
    (work / "r.png").unlink()
    for _ in range(2):
        r = tinyc(work, "report", "m.onnx", "--calib", "calib.npz", "--board", "host", "-o", "r.md")
        assert r.returncode == 0, r.stderr
    assert (work / "r.md").is_file() and (work / "r.png").stat().st_size > 1000


def test_build_replaces_only_its_own_files(work):
    assert tinyc(work, "build", "m.onnx", "--calib", "calib.npz", "-o", "proj").returncode == 0
    (work / "proj" / "notes.txt").write_text("mine")
    (work / "proj" / "data").mkdir()
    (work / "proj" / "data" / "log.csv").write_text("1,2")
    r = tinyc(work, "build", "m.onnx", "--calib", "calib.npz", "-o", "proj", "--name", "net")
    assert r.returncode == 0, r.stderr
    files = _snapshot(work / "proj")
    assert files["notes.txt"] == b"mine" and files["data/log.csv"] == b"1,2"
    assert "net.c" in files and "m.c" not in files  # the first build's files are gone
    assert not [p for p in work.iterdir() if p.name.startswith(".proj")]


def test_build_refuses_a_folder_whose_tinyc_file_the_user_changed(work):
    assert tinyc(work, "build", "m.onnx", "--calib", "calib.npz", "-o", "proj").returncode == 0
    (work / "proj" / "main.c").write_text("/* my application */\n")
    before = _snapshot(work / "proj")
    r = tinyc(work, "build", "m.onnx", "--calib", "calib.npz", "-o", "proj")
    assert_user_error(r, "main.c", "changed since tinyc wrote it")
    assert _snapshot(work / "proj") == before


@pytest.mark.parametrize("marker", [{"name": "x"}, {"tinyc_project": 1, "files": "all"}, "not json"])
def test_build_refuses_a_folder_with_a_foreign_tinyc_json(work, marker):
    (work / "proj").mkdir()
    (work / "proj" / "tinyc.json").write_text(marker if isinstance(marker, str) else json.dumps(marker))
    (work / "proj" / "thesis.tex").write_text("years of work")
    before = _snapshot(work / "proj")
    r = tinyc(work, "build", "m.onnx", "--calib", "calib.npz", "-o", "proj")
    assert_user_error(r, "proj", "not written by tinyc")
    assert _snapshot(work / "proj") == before


def test_build_into_an_empty_folder_and_not_through_a_link(work):
    (work / "empty").mkdir()
    assert tinyc(work, "build", "m.onnx", "--calib", "calib.npz", "-o", "empty").returncode == 0
    assert (work / "empty" / "m.c").is_file()
    os.symlink(work / "empty", work / "link")
    r = tinyc(work, "build", "m.onnx", "--calib", "calib.npz", "-o", "link")
    assert_user_error(r, "link", "symbolic link")
    r = tinyc(work, "build", "m.onnx", "--calib", "calib.npz", "-o", "m.onnx")
    assert_user_error(r, "m.onnx")


@pytest.mark.parametrize("name, why", [
    ("main", "main.c"), ("Main", "main.c"), ("sample", "sample.h"), ("int", "keyword"), ("_x", "underscore"),
    ("tinyc_net", "runtime"), ("net\n", "identifier"), ("a b", "identifier"), ("x" * 65, "64"),
])
def test_build_refuses_names_that_collide(work, name, why):
    r = tinyc(work, "build", "m.onnx", "--calib", "calib.npz", "-o", "proj", "--name", name)
    assert_user_error(r, "--name", why)
    assert not (work / "proj").exists()


def test_a_model_file_called_main_gets_a_name_that_does_not_collide(work):
    os.rename(work / "m.onnx", work / "main.onnx")
    r = tinyc(work, "build", "main.onnx", "--calib", "calib.npz", "-o", "proj", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["name"] == "model_main"
    assert (work / "proj" / "model_main.c").is_file() and "model_main_invoke" in (work / "proj" / "main.c").read_text()


def test_report_needs_matplotlib_before_any_work(work, monkeypatch, capsys):
    """Plots are checked first: the model here does not even exist."""
    import sys

    from tinyc.cli import main

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.chdir(work)
    with pytest.raises(SystemExit) as e:
        main(["report", "nothing.onnx", "--board", "host", "--format", "html", "-o", "r.html"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "matplotlib" in err and "nothing.onnx" not in err and len(err.strip().splitlines()) == 1


def test_run_output_data_is_written_and_rewritten(work):
    for _ in range(2):
        assert _run(work, "-o", "y.npy").returncode == 0
    assert np.load(work / "y.npy").shape == (16, 10)
