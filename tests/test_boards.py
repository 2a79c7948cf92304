"""Boards, firmware projects and QEMU runs: the firmware reproduces TFLM's goldens
on emulated Cortex-M4 / M7 / M55 cores, instruction counts are deterministic,
and every board error is one clear line."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tinyc import api
from tinyc.boards import all_boards, get_board
from tinyc.cli import main

from .conftest import REPO, SHARED_MODELS, needs_shared, shared_models_index

HAS_ARM = shutil.which("arm-none-eabi-gcc") is not None
HAS_QEMU = shutil.which("qemu-system-arm") is not None
needs_arm = pytest.mark.skipif(not HAS_ARM, reason="arm-none-eabi-gcc is not installed (Debian: gcc-arm-none-eabi)")
needs_qemu = pytest.mark.skipif(not (HAS_ARM and HAS_QEMU),
                                reason="needs arm-none-eabi-gcc and qemu-system-arm (Debian packages)")
MODELS = sorted(shared_models_index())
REQUIRED_BOARDS = {"stm32f746", "stm32h743", "stm32f412", "stm32l4r5", "stm32f405", "nrf52840", "rp2040",
                   "mps2-an386", "mps2-an500", "mps3-an547"}


def tinyc(*args, env=None, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tinyc.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=900, env=env, cwd=cwd)


def assert_user_error(r, *words):
    assert "Traceback" not in r.stderr, r.stderr
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tinyc: error: "), r.stderr
    for w in words:
        assert w.lower() in lines[0].lower(), (w, lines[0])
    print(lines[0])
    return lines[0]


def _cli(*args) -> None:
    try:
        main([str(a) for a in args])
    except SystemExit as e:
        assert e.code in (0, None), e.code


# --------------------------------------------------------------------- boards
def test_boards_lists_every_board():
    r = tinyc("boards")
    assert r.returncode == 0, r.stderr
    for name in REQUIRED_BOARDS:
        assert name in r.stdout
    info = json.loads(tinyc("boards", "--json").stdout)
    by_name = {b["name"]: b for b in info}
    assert REQUIRED_BOARDS <= set(by_name)
    f746 = by_name["stm32f746"]
    assert f746["core"] == "cortex-m7" and f746["largest_sram_bytes"] == 320 * 1024
    assert f746["flash_bytes"] == 1024 * 1024 and f746["qemu"] == "mps2-an500" and "stm32" in f746["aliases"]
    assert by_name["rp2040"]["core"] == "cortex-m0plus" and by_name["rp2040"]["fpu"] == "none"
    assert by_name["stm32f405"]["qemu"] == "netduinoplus2"
    for b in all_boards().values():  # every board's core builds (its -mcpu / -mfpu are valid)
        assert b.cflags()[0] == f"-mcpu={b.core}"


def test_unknown_board_lists_the_known_ones(tmp_path):
    model = REPO / "examples" / "digits_cnn.onnx"
    r = tinyc("build", model, "--calib", REPO / "examples" / "digits_samples.npz", "--board", "esp32", "-o",
              tmp_path / "p")
    line = assert_user_error(r, "esp32", "unknown board", "stm32f746", "mps2-an386")
    assert "tinyc boards" in line
    assert not (tmp_path / "p").exists()


def test_stm32_alias():
    assert get_board("stm32").name == "stm32f746"


# ------------------------------------------------------------- QEMU: goldens
@needs_shared
@needs_qemu
@pytest.mark.parametrize("name", MODELS)
def test_qemu_mps2_an386_reproduces_goldens(tmp_path, name):
    """Every shared model fits mps2-an386 (4 MB + 4 MB) and runs bit-exactly there."""
    info = shared_models_index()[name]
    model = SHARED_MODELS / info["onnx_int8"]
    gold = np.load(SHARED_MODELS / "goldens" / f"{name}.npz")
    graph = api.load(model)
    batch = api.to_batch(graph, {graph.inputs[0]: gold["inputs"]})
    build = api.compile_c(graph, info["onnx_int8"], board="mps2-an386")
    out, report = api.run_program_qemu(build, batch, get_board("mps2-an386"))
    got = out[graph.outputs[0]].reshape(gold["outputs"].shape)
    matched = sum(np.array_equal(got[i], gold["outputs"][i]) for i in range(len(got)))
    counts = report["instructions"]
    print(f"{name} on QEMU mps2-an386: {matched}/{len(got)} bit-exact with TFLM; {counts[0]:,} instructions "
          f"({counts[0] / info['macs']:.2f} per MAC); stack {report['stack_used_bytes']} B")
    ref = api.run_program_ref(build.program, batch)[graph.outputs[0]].reshape(gold["outputs"].shape)
    assert np.array_equal(got, ref)
    assert matched == len(got)
    assert 0 < report["stack_used_bytes"] <= report["stack_bytes"]
    # the reserve comes from the call graph and the kernels keep no buffers on the
    # stack (their scratch is in the arena): it was 2,016-2,048 B with them
    assert report["stack_bytes"] <= 1536


HELIUM_MODELS = ["mlperf_kws_dscnn", "mlperf_vww_mbv1", "mlperf_ic_resnet8", "mlperf_sww", "tflm_micro_speech",
                 "mlperf_ad_autoencoder"]


def _matches_goldens(name: str, board: str):
    """The model built for ``board`` and run on its QEMU machine over every golden
    sample, bit-exact with the reference interpreter and TFLM's goldens: the
    build."""
    info = shared_models_index()[name]
    gold = np.load(SHARED_MODELS / "goldens" / f"{name}.npz")
    graph = api.load(SHARED_MODELS / info["onnx_int8"])
    batch = api.to_batch(graph, {graph.inputs[0]: gold["inputs"]})
    build = api.compile_c(graph, info["onnx_int8"], board=board)
    out, report = api.run_program_qemu(build, batch, get_board(board))
    got = out[graph.outputs[0]].reshape(gold["outputs"].shape)
    ref = api.run_program_ref(build.program, batch)[graph.outputs[0]].reshape(gold["outputs"].shape)
    print(f"{name} on QEMU {board}: {report['instructions'][0]:,} instructions")
    assert np.array_equal(got, ref)
    assert np.array_equal(got, gold["outputs"])
    return build


@needs_shared
@needs_qemu
@pytest.mark.parametrize("name", HELIUM_MODELS)
def test_qemu_mps3_an547_helium_kernels_reproduce_goldens(name):
    """On the Cortex-M55 the convolutions, depthwise and fully connected layers run
    as the Helium kernels (mve.c): bit-exact with TFLM's goldens and the reference."""
    build = _matches_goldens(name, "mps3-an547")
    kernels = {c.kernel for c in build.program.calls}
    assert kernels & {"conv2d_mve_s8", "fully_connected_mve_s8"}
    assert not kernels & {"conv2d_s8", "conv2d_1x1_s8", "fully_connected_s8", "conv2d_wide_s8",
                          "fully_connected_wide_s8"}
    # every depthwise layer of these models (3 x 3 at stride 1 or 2, or sww's
    # one-column k x 1 of up to 15 taps) takes the Helium kernel
    for call in build.program.calls:
        if call.kernel.startswith("depthwise"):
            assert call.kernel == "depthwise_conv2d_mve_s8", call.node


@needs_shared
@needs_qemu
@pytest.mark.parametrize("name", ["mlperf_ad_autoencoder", "tflm_micro_speech"])
def test_qemu_mps2_an385_folded_offsets_reproduce_goldens(name):
    """On the Cortex-M3 the fully connected (and unpadded convolution) layers run
    with their input offsets folded into their biases (passes/widen.py) and the
    portable kernels' offset-free loops: bit-exact with TFLM's goldens and the
    reference."""
    build = _matches_goldens(name, "mps2-an385")
    fcs = [c for c in build.program.calls if c.kernel == "fully_connected_s8"]
    assert fcs and all(c.params.in_offset == 0 for c in fcs)


@needs_shared
@needs_qemu
@pytest.mark.parametrize("board", ["mps2-an500", "mps3-an547", "mps2-an385", "netduinoplus2", "stm32f746", "nrf52840"])
def test_qemu_other_cores_reproduce_goldens(tmp_path, board):
    """A small model (MLPerf Tiny KWS) on the Cortex-M7, M55, M3 (the portable kernels) and STM32F405 machines,
    through the command line; real boards run on their core's stand-in."""
    name = "mlperf_kws_dscnn"
    data = SHARED_MODELS / "goldens" / f"{name}.npz"
    out = tmp_path / "y.npy"
    r = tinyc("run", SHARED_MODELS / shared_models_index()[name]["onnx_int8"], "--engine", "qemu", "--board", board,
              "--input", data, "-o", out, "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert np.array_equal(np.load(out), np.load(data)["outputs"])
    assert report["qemu_machine"] == get_board(board).qemu and len(report["instructions"]) == 9
    print(f"kws on {board} ({report['qemu_machine']}, {report['core']}): {report['instructions'][0]:,} instructions")


@needs_shared
@needs_qemu
def test_instruction_count_is_identical_on_two_runs(tmp_path):
    from tinyc.codegen.firmware import build_elf
    from tinyc.sim import qemu

    name = "mlperf_kws_dscnn"
    info = shared_models_index()[name]
    graph = api.load(SHARED_MODELS / info["onnx_int8"])
    gold = np.load(SHARED_MODELS / "goldens" / f"{name}.npz")
    build = api.compile_c(graph, info["onnx_int8"])
    board = get_board("mps2-an386")
    fw = build_elf(tmp_path, build, board, board, "qemu")
    feeds = api.program_feeds(build.program, api.to_batch(graph, {graph.inputs[0]: gold["inputs"][:3]}))
    (tmp_path / "in.bin").write_bytes(feeds[graph.inputs[0]].tobytes())
    first = qemu.run_qemu(fw.elf, "mps2-an386", tmp_path).instructions
    second = qemu.run_qemu(fw.elf, "mps2-an386", tmp_path).instructions
    assert len(first) == 3 and first == second
    print(f"kws on mps2-an386, 3 samples, twice: {first} == {second}")


# ------------------------------------------------------------ board projects
@needs_shared
@needs_arm
def test_kws_for_stm32_gives_an_elf_and_measured_sizes(tmp_path):
    out = tmp_path / "kws"
    r = tinyc("build", SHARED_MODELS / "mlperf_tiny/kws_dscnn_int8.onnx", "--board", "stm32", "-o", out, "--json")
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["board"] == "stm32f746" and s["fits"] is True
    elf = out / s["elf"]
    assert elf.is_file()
    size = subprocess.run(["arm-none-eabi-size", "-B", str(elf)], capture_output=True, text=True, check=True)
    text, data, bss = (int(v) for v in size.stdout.splitlines()[1].split()[:3])
    # the ELF holds the model and the self-test harness; the model's figures leave the harness out
    assert s["firmware_flash_bytes"] == text + data and s["firmware_ram_bytes"] == data + bss
    assert s["flash_bytes"] + s["harness_flash_bytes"] == s["firmware_flash_bytes"]
    assert s["ram_bytes"] + s["harness_ram_bytes"] == s["firmware_ram_bytes"]
    assert 0 < s["harness_flash_bytes"] < 1024  # the generated input costs no flash
    assert s["arena_bytes"] < s["ram_bytes"] and s["stack_bytes"] >= 1024
    assert s["weights_bytes"] < s["flash_bytes"]
    # the ELF is for the board: vector table at the STM32's flash
    head = subprocess.run(["arm-none-eabi-objdump", "-h", str(elf)], capture_output=True, text=True, check=True)
    assert "08000000" in head.stdout
    print(f"kws on stm32f746: flash {s['flash_bytes']:,} B, RAM {s['ram_bytes']:,} B (arena {s['arena_bytes']:,}, "
          f"stack {s['stack_bytes']:,})")


@needs_shared
@needs_qemu
def test_board_firmware_checks_itself_on_qemu(tmp_path):
    """The firmware a board build ships runs its embedded sample, compares with the
    expected output, prints the checksum and exits 0 (here on an MPS2 board)."""
    from tinyc.sim import qemu

    gold = np.load(SHARED_MODELS / "goldens" / "mlperf_kws_dscnn.npz")
    np.save(tmp_path / "x.npy", gold["inputs"][3])
    out = tmp_path / "fw"
    r = tinyc("build", SHARED_MODELS / "mlperf_tiny/kws_dscnn_int8.onnx", "--board", "mps2-an386", "-o", out,
              "--sample", tmp_path / "x.npy", "--json")
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    result = qemu.run_qemu(out / s["elf"], "mps2-an386", tmp_path)
    assert result.exit_code == 0, result.stderr
    assert f"checksum {s['sample_checksum']} (as expected)" in result.stderr + result.stdout
    top = int(np.argmax(gold["outputs"][3].reshape(-1)))
    assert f"top class {top}," in result.stderr + result.stdout


@needs_shared
def test_model_over_budget_says_by_how_much(tmp_path):
    model = SHARED_MODELS / "mcunet/mcunetv2_large.onnx"
    r = tinyc("build", model, "--board", "stm32f412", "-o", tmp_path / "p")
    line = assert_user_error(r, "does not fit stm32f412", "RAM", "over by", "what would help")
    arena = api.compile_c(api.load(model), model, board="stm32f412").summary["arena_bytes"]
    assert "FLASH" in line and f"{arena:,}" in line  # the arena, and flash is over too
    assert not (tmp_path / "p").exists() and not list(tmp_path.glob(".p*"))


# ------------------------------------------------------------- missing tools
def _path_without(tmp_path: Path, *missing: str) -> dict:
    """An environment whose PATH has python and the host compiler but not ``missing``."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("cc", "gcc", "as", "ld", "make", "nm", "arm-none-eabi-gcc", "arm-none-eabi-nm", "arm-none-eabi-size",
                 "arm-none-eabi-objdump", "qemu-system-arm"):
        found = shutil.which(tool)
        if found and tool not in missing:
            os.symlink(found, bin_dir / tool)
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{bin_dir}")
    env["PYTHONPATH"] = str(REPO)
    return env


@needs_shared
def test_without_the_arm_toolchain_build_writes_the_c_project(tmp_path):
    env = _path_without(tmp_path, "arm-none-eabi-gcc")
    out = tmp_path / "kws"
    r = tinyc("build", SHARED_MODELS / "mlperf_tiny/kws_dscnn_int8.onnx", "--board", "stm32f746", "-o", out,
              "--json", env=env)
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["elf"] is None and "gcc-arm-none-eabi" in r.stderr
    assert (out / "Makefile").is_file() and (out / "linker.ld").is_file() and (out / "firmware" / "startup.c").is_file()
    r = tinyc("run", SHARED_MODELS / "mlperf_tiny/kws_dscnn_int8.onnx", "--engine", "qemu", "--board", "mps2-an386",
              "--input", SHARED_MODELS / "goldens/mlperf_kws_dscnn.npz", "-o", tmp_path / "y.npy", env=env)
    assert_user_error(r, "gcc-arm-none-eabi")
    assert not (tmp_path / "y.npy").exists()


@needs_shared
@needs_arm
def test_without_qemu_run_names_the_package(tmp_path):
    env = _path_without(tmp_path, "qemu-system-arm")
    r = tinyc("run", SHARED_MODELS / "mlperf_tiny/kws_dscnn_int8.onnx", "--engine", "qemu", "--board", "mps2-an386",
              "--input", SHARED_MODELS / "goldens/mlperf_kws_dscnn.npz", "-o", tmp_path / "y.npy", env=env)
    assert_user_error(r, "qemu-system-arm", "apt-get install")


@needs_shared
@needs_qemu
def test_a_run_that_takes_too_long_is_stopped(tmp_path):
    r = tinyc("run", SHARED_MODELS / "mcunet/mcunetv2_large.onnx", "--engine", "qemu", "--board", "mps2-an386",
              "--input", SHARED_MODELS / "goldens/mcunetv2_large.npz", "-o", tmp_path / "y.npy", "--timeout", "0.5")
    assert_user_error(r, "did not finish within 0.5 s", "--timeout")
    assert not (tmp_path / "y.npy").exists()


def test_qemu_engine_needs_a_board_with_a_stand_in(tmp_path):
    model = REPO / "examples" / "digits_cnn.onnx"
    common = ["--calib", REPO / "examples" / "digits_samples.npz", "--input", REPO / "examples" / "digits_samples.npz",
              "-o", tmp_path / "y.npy", "--engine", "qemu"]
    assert_user_error(tinyc("run", model, *common), "--board")
    assert_user_error(tinyc("run", model, *common, "--board", "rp2040"), "rp2040", "no QEMU stand-in")


# ---------------------------------------------------------------------- flash
@needs_shared
@needs_arm
def test_flash_dry_run_prints_the_pyocd_command(tmp_path):
    out = tmp_path / "kws"
    assert tinyc("build", SHARED_MODELS / "mlperf_tiny/kws_dscnn_int8.onnx", "--board", "stm32f746", "-o",
                 out).returncode == 0
    r = tinyc("flash", out, "--dry-run", "--probe", "0669FF123")
    assert r.returncode == 0, r.stderr
    cmd = r.stdout.strip()
    assert "-m pyocd flash" in cmd and "--target stm32f746zgtx" in cmd and "--uid 0669FF123" in cmd
    assert cmd.endswith("kws_dscnn_int8.elf")
    assert_user_error(tinyc("flash", out, "--board", "stm32f412", "--dry-run"), "built for stm32f746")


def test_flash_errors(tmp_path):
    assert_user_error(tinyc("flash", tmp_path, "--dry-run"), "not a tinyc build folder")
    (tmp_path / "tinyc.json").write_text(json.dumps({"name": "m", "board": "mps2-an386"}))
    assert_user_error(tinyc("flash", tmp_path, "--dry-run"), "QEMU machine")
    (tmp_path / "tinyc.json").write_text(json.dumps({"name": "m", "board": "nrf52840", "elf": "build/m.elf"}))
    assert_user_error(tinyc("flash", tmp_path, "--dry-run"), "no firmware image", "make")


def test_board_files_agree_with_the_verified_qemu_machines():
    """The QEMU machines' memory maps were verified by running firmware on them
    (tinyc.sim.qemu.MACHINES); the board files firmware links against agree."""
    from tinyc.sim.qemu import MACHINES

    for machine, facts in MACHINES.items():
        board = api.qemu_link_board(get_board(machine))
        assert (board.main_flash.origin, board.main_flash.length) == facts.flash, machine
        assert board.main_ram.origin == facts.ram[0] and board.main_ram.length <= facts.ram[1], machine
        assert board.core == facts.core, machine
