"""What a built project gives its user: ``tinyc run DIR`` runs it without
quantizing again; ``make`` in a board project finds nothing to rebuild; fit
verdicts are those of the model, not of the self-test harness; the header says
how the C API's data are laid out."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest

from tinyc import api
from tinyc.boards import all_boards, get_board
from tinyc.codegen.firmware import compile_project, link_project

from .conftest import EXAMPLES, SHARED_MODELS, needs_shared, shared_models_index
from .test_errors import assert_user_error, tinyc

HAS_ARM = shutil.which("arm-none-eabi-gcc") is not None
needs_arm = pytest.mark.skipif(not HAS_ARM, reason="arm-none-eabi-gcc is not installed (Debian: gcc-arm-none-eabi)")
MODEL = EXAMPLES / "digits_cnn.onnx"
SAMPLES = EXAMPLES / "digits_samples.npz"


def test_run_dir_equals_running_the_model(tmp_path):
    r = tinyc(tmp_path, "build", MODEL, "--calib", SAMPLES, "-o", "proj")
    assert r.returncode == 0, r.stderr
    r = tinyc(tmp_path, "run", "proj", "--input", SAMPLES, "-o", "from_dir.npy")
    assert r.returncode == 0, r.stderr
    r = tinyc(tmp_path, "run", MODEL, "--calib", SAMPLES, "--engine", "c", "--input", SAMPLES, "-o", "from_model.npy")
    assert r.returncode == 0, r.stderr
    a, b = np.load(tmp_path / "from_dir.npy"), np.load(tmp_path / "from_model.npy")
    assert a.dtype == np.float32 and a.shape == (16, 10) and np.array_equal(a, b)


@needs_shared
def test_run_dir_of_a_board_project_with_a_float_tail(tmp_path):
    """MCUNet's float LogSoftmax after TFLite's DEQUANTIZE comes back from tinyc.json."""
    model = SHARED_MODELS / "mcunet" / "mcunet_vww1.onnx"
    gold = np.load(SHARED_MODELS / "goldens" / "mcunet_vww1.npz")
    np.save(tmp_path / "x.npy", gold["inputs"][:3])
    r = tinyc(tmp_path, "build", model, "--board", "mps2-an386", "-o", "fw")
    assert r.returncode == 0, r.stderr
    r = tinyc(tmp_path, "run", "fw", "--input", "x.npy", "-o", "y.npy")
    assert r.returncode == 0, r.stderr
    r = tinyc(tmp_path, "run", model, "--engine", "ref", "--input", "x.npy", "-o", "ref.npy")
    assert r.returncode == 0, r.stderr
    assert np.array_equal(np.load(tmp_path / "y.npy"), np.load(tmp_path / "ref.npy"))


def test_run_dir_refuses_model_options_and_bad_projects(tmp_path):
    assert tinyc(tmp_path, "build", MODEL, "--calib", SAMPLES, "-o", "proj").returncode == 0
    r = tinyc(tmp_path, "run", "proj", "--calib", SAMPLES, "--input", SAMPLES, "-o", "y.npy")
    assert_user_error(r, "--calib", "built project")
    r = tinyc(tmp_path, "run", "proj", "--engine", "ref", "--input", SAMPLES, "-o", "y.npy")
    assert_user_error(r, "--engine c")
    meta = json.loads((tmp_path / "proj" / "tinyc.json").read_text())
    for broken in ({**meta, "name": "../../etc/passwd"}, {**meta, "interface": {"version": 1}},
                   {**meta, "interface": {**meta["interface"], "inputs": [{"name": "x", "shape": [-1]}]}}):
        (tmp_path / "proj" / "tinyc.json").write_text(json.dumps(broken))
        r = tinyc(tmp_path, "run", "proj", "--input", SAMPLES, "-o", "y.npy")
        assert_user_error(r, "tinyc.json")
    (tmp_path / "proj" / "tinyc.json").write_text("{")
    assert_user_error(tinyc(tmp_path, "run", "proj", "--input", SAMPLES, "-o", "y.npy"), "not valid JSON")
    assert not (tmp_path / "y.npy").exists()


def test_header_states_the_layout_of_a_2d_model(tmp_path):
    assert tinyc(tmp_path, "build", MODEL, "--calib", SAMPLES, "-o", "proj").returncode == 0
    header = (tmp_path / "proj" / "digits_cnn.h").read_text()
    assert "int8[1, 8, 8, 1] NHWC: the ONNX NCHW tensor [1, 1, 8, 8] with channels last" in header
    assert "int8[1, 10], the ONNX tensor's own layout" in header


@needs_arm
def test_make_after_a_board_build_has_nothing_to_do(tmp_path):
    r = tinyc(tmp_path, "build", MODEL, "--calib", SAMPLES, "--board", "stm32f746", "-o", "fw", "--json")
    assert r.returncode == 0, r.stderr
    elf = tmp_path / "fw" / json.loads(r.stdout)["elf"]
    before = elf.read_bytes()
    q = subprocess.run(["make", "-q"], cwd=tmp_path / "fw", capture_output=True, text=True)
    assert q.returncode == 0, "make would rebuild: " + subprocess.run(
        ["make", "-n"], cwd=tmp_path / "fw", capture_output=True, text=True).stdout
    # and a real make from scratch builds the very same ELF
    subprocess.run(["make", "clean"], cwd=tmp_path / "fw", check=True, capture_output=True)
    subprocess.run(["make"], cwd=tmp_path / "fw", check=True, capture_output=True)
    assert elf.read_bytes() == before


@needs_shared
@needs_arm
def test_mcunet_vww1_fits_mps3_an547_without_its_harness(tmp_path):
    """The verdict is the model's (model, runtime, startup), checked against an
    independent link of the model alone for the board's real regions: it fits
    the M55's 512 KB ITCM, with the bands of the default --patch auto."""
    model = SHARED_MODELS / "mcunet" / "mcunet_vww1.onnx"
    r = tinyc(tmp_path, "build", model, "--board", "mps3-an547", "-o", "fw", "--json")
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["fits"] is True and "self-test harness" in r.stderr
    board = get_board("mps3-an547")
    build = api.compile_c(api.load(model), model, board="mps3-an547")
    assert build.summary["patch"] == s["patch"]
    with tempfile.TemporaryDirectory() as tmp:
        objects = compile_project(Path(tmp), build, board, "model")
        alone = link_project(Path(tmp), build, objects, board, board)  # raises if it did not fit
    assert alone.flash_bytes == s["flash_bytes"] and alone.ram_bytes + alone.stack_bytes == s["ram_bytes"]
    assert s["flash_bytes"] <= board.main_flash.length
    print(f"mcunet_vww1 on mps3-an547: model flash {s['flash_bytes']:,} of {board.main_flash.length:,} B; "
          f"harness +{s['harness_flash_bytes']:,} B")


@needs_shared
@needs_arm
def test_auto_patching_never_makes_a_model_stop_fitting(tmp_path, monkeypatch):
    """On an M55 board whose ITCM holds mcunet_vww1 layer by layer (and the
    harness) but not the calls of --patch auto's bands, the build falls back to
    layer-wise and says so; forced patches get no fallback."""
    import dataclasses

    from click.testing import CliRunner

    import tinyc.boards
    from tinyc.cli import cli
    from tinyc.errors import DoesNotFit

    model = SHARED_MODELS / "mcunet" / "mcunet_vww1.onnx"
    real = get_board("mps3-an547")
    build = api.compile_c(api.load(model), model, board="mps3-an547", patch="off")
    with tempfile.TemporaryDirectory() as tmp:
        objects = compile_project(Path(tmp), build, real, "model")
        layerwise = link_project(Path(tmp), build, objects, real, real).flash_bytes
    itcm = dataclasses.replace(real.main_flash, length=layerwise + 1024)
    tight = dataclasses.replace(real, flash=(itcm, *real.flash[1:]))
    boards = {**all_boards(), "mps3-an547": tight}
    monkeypatch.setattr(tinyc.boards, "all_boards", lambda: boards)
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(cli, ["build", str(model), "--board", "mps3-an547", "-o", "fw", "--json"])
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)
    assert s["fits"] is True and s["patch"] is None and s["flash_bytes"] == layerwise
    assert "does not fit, layer-wise" in r.stderr
    r = CliRunner().invoke(cli, ["build", str(model), "--board", "mps3-an547", "-o", "fw2", "--patch", "5:10x1"])
    # forced patches: no fallback (tinyc.cli.main turns the error into exit status 2)
    assert isinstance(r.exception, DoesNotFit) and "does not fit mps3-an547" in str(r.exception)


@needs_shared
@needs_arm
@pytest.mark.parametrize("name", sorted(shared_models_index()))
def test_every_board_verdict_agrees_with_a_link_of_the_model(name):
    """report --board all: each board's "fits" is whether the model alone links
    for that board's real regions (compiled once per core, linked per board)."""
    from tinyc.errors import TinycError

    model = SHARED_MODELS / shared_models_index()[name]["onnx_int8"]
    build = api.compile_c(api.load(model), model, board="all")
    rows = {row["board"]: row for row in api.report(build, "all")["boards"]}
    by_core: dict[tuple, tuple] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for board in all_boards().values():
            key = tuple(board.cflags())
            if key not in by_core:
                root = Path(tmp) / str(len(by_core))
                root.mkdir()
                by_core[key] = (root, compile_project(root, build, board, "model"))
            root, objects = by_core[key]
            try:
                link_project(root, build, objects, board, board)
                links = True
            except TinycError as e:
                assert "overflowed" in str(e), e
                links = False
            assert rows[board.name]["fits"] == links, (board.name, rows[board.name])
    print(f"{name}: fits {sorted(b for b, r in rows.items() if r['fits'])}")


def test_header_states_the_layout_of_a_1d_model(tmp_path):
    """A PyTorch Conv1d DS-CNN: the C API takes NWC, and says so."""
    import onnx

    from .test_conv1d import IN_SHAPE, _inputs, dscnn

    onnx.save(dscnn("mean-view")[0], str(tmp_path / "kws.onnx"))
    np.save(tmp_path / "calib.npy", _inputs(8, 1))
    r = tinyc(tmp_path, "build", "kws.onnx", "--calib", "calib.npy", "-o", "proj")
    assert r.returncode == 0, r.stderr
    header = (tmp_path / "proj" / "kws.h").read_text()
    n, c, w = IN_SHAPE
    assert f"int8[{n}, {w}, {c}] NWC: the ONNX NCW tensor [{n}, {c}, {w}] with channels last" in header
    assert "NHWC" not in header
