"""Training firmware (tinyc train --board): the device trains bit for bit as the
host build of the same C, persists what it learned in two slots that survive a
power cut at any instruction of a commit, skips corrupt slots and ignores those
of another model or update set; the STM32 flash ports compile and link."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from tinyc import api
from tinyc.boards import get_board
from tinyc.train import firmware as F
from tinyc.train.engine import build_training
from tinyc.train.run import Dataset, to_program_input
from tinyc.train.spec import model_layers, parse_update

from .conftest import EXAMPLES, SHARED_MODELS, needs_shared

HAS_QEMU = shutil.which("arm-none-eabi-gcc") is not None and shutil.which("qemu-system-arm") is not None
needs_qemu = pytest.mark.skipif(not HAS_QEMU, reason="needs arm-none-eabi-gcc and qemu-system-arm")
MODEL = EXAMPLES / "digits_cnn.onnx"
SPEC = "bias=last2; weight=-1"
TRAINING = SHARED_MODELS / "training"
RESNET8 = SHARED_MODELS / "mlperf_tiny" / "ic_resnet8_int8.onnx"
RESNET8_SPARSE = ("bias=model/conv2d_4/Conv2D,model/conv2d_5/Conv2D,model/conv2d_6/Conv2D,model/conv2d_7/Conv2D,"
                  "model/conv2d_8/Conv2D,model/dense/MatMul; "
                  "weight=model/conv2d_6/Conv2D,model/conv2d_8/Conv2D@0.5,model/dense/MatMul")


def _tinyc(*args):
    return subprocess.run([sys.executable, "-m", "tinyc.cli", *map(str, args)], capture_output=True, text=True)


def _example(spec=SPEC, name="digits", calib=None):
    graph = api.load(MODEL)
    api.quantize_with_calibration(graph, calib or EXAMPLES / "digits_samples.npz")
    d = np.load(EXAMPLES / "digits_samples.npz")
    b = build_training(copy.deepcopy(graph), parse_update(spec, model_layers(MODEL)), name)
    x = to_program_input(b.tp, Dataset(d["inputs"], d["labels"]))
    return b, x, d["labels"]


def _outputs_with(b, state: bytes, x) -> np.ndarray:
    """NAME_invoke's outputs (host C) with the parameters of a state image."""
    sched = F.Schedule(x[:1], np.zeros(1, np.int64), 0, 0.0, 0, x, np.zeros(len(x), np.int64))
    b2 = copy.deepcopy(b)
    for name, value in F.params_from_state(b2, state).items():
        b2.tp.graph.tensors[name].data = value
    from tinyc.codegen.c import generate

    b2.files = generate(b2.tp.inference, b2.plan, b2.name, "m", train=b2.tp, train_plan=b2.train_plan)
    return F.run_on_host(b2, sched).outputs


def test_shuffle_order_is_a_permutation_that_moves():
    orders = [F.shuffle_order(50, 7, e) for e in range(3)]
    assert all(sorted(o) == list(range(50)) for o in orders)
    assert orders[0] != orders[1] != orders[2] and F.shuffle_order(50, 7, 0) == orders[0]


def test_read_slots_judges_as_the_c_does():
    """A slot image written by hand: valid, corrupt (header or payload), foreign,
    empty; and the newest valid slot by sequence number modulo 2^32."""
    import struct
    import zlib

    def slot(payload, seq, model=1, layout=2, size=None):
        words = [F.MAGIC, 1, model, layout, seq, len(payload) if size is None else size, zlib.crc32(payload)]
        head = struct.pack("<7I", *words)
        return head + struct.pack("<I", zlib.crc32(head)) + payload

    p = bytes(range(40))
    size = 32 + 40
    assert [s.status for s in F.read_slots(slot(p, 5) + slot(p, 6), size, 1, 2, 40)] == ["valid", "valid"]
    assert F.newest(F.read_slots(slot(p, 5) + slot(p, 6), size, 1, 2, 40)) == 1
    assert F.newest(F.read_slots(slot(p, 0xFFFFFFFF) + slot(p, 0), size, 1, 2, 40)) == 1  # wraps
    bad = bytearray(slot(p, 5))
    bad[40] ^= 1
    assert F.read_slots(bytes(bad) + slot(p, 3, model=9), size, 1, 2, 40)[0].status == "corrupt"
    assert F.read_slots(bytes(bad) + slot(p, 3, model=9), size, 1, 2, 40)[1].status == "foreign"
    assert F.read_slots(b"\xff" * size * 2, size, 1, 2, 40)[0].status == "empty"


@needs_qemu
def test_firmware_trains_as_the_host_and_reports_each_epoch():
    """The example CNN, 12 samples, 2 epochs on QEMU mps2-an386: per-epoch mean
    loss and accuracy, the committed state and the outputs after the commit all
    equal the host build's run of the same schedule."""
    b, x, y = _example()
    sched = F.Schedule(x[:12], y[:12], 2, 0.05, 7, x[12:], y[12:])
    host = F.run_on_host(b, sched)
    dev = F.run_on_qemu(b, get_board("mps2-an386"), sched)
    assert dev.loaded == -1 and dev.slots == ["empty", "empty"] and dev.committed == 0 and dev.sequence == 1
    assert dev.epochs == host.epochs and len(dev.epochs) == 2
    assert dev.state == host.state and len(dev.state) == b.tp.trainable_bytes()
    assert np.array_equal(dev.outputs, host.outputs)
    assert len(dev.instructions) == 2 * (12 + 4) + 1 + 4 and 0 < dev.stack_used


@needs_qemu
def test_power_cut_during_a_commit_keeps_the_old_or_the_new_state(tmp_path):
    """A device with a committed state (commit 1) trains one more epoch and
    commits again; the power is cut at 40 points across that commit (QEMU
    stopped after N instructions). Every time, the next boot loads commit 1 or
    commit 2 whole (its CRC, and the model's outputs equal those of one of the
    two states), and never crashes. A flipped byte in the newest slot makes the
    boot take the older one; a slot of another model or update set is never loaded."""
    b, x, y = _example()
    board = get_board("mps2-an386")
    sched = F.Schedule(x[:8], y[:8], 1, 0.05, 3, x[8:12], y[8:12])
    link = get_board(board.qemu)
    fw = F.build_firmware(tmp_path / "fw", b, board, sched, on_qemu=True, link_board=link)
    first = F.run_elf(b, fw, link, sched, tmp_path)
    second = F.run_elf(b, fw, link, sched, tmp_path, persist=first.image)
    assert (first.sequence, second.loaded, second.sequence) == (1, 0, 2) and first.state != second.state
    outputs = {first.state: _outputs_with(b, first.state, x[8:12]), second.state: _outputs_with(b, second.state,
                                                                                                   x[8:12])}
    n = len(sched.train_y) + len(sched.eval_y)
    start = second.begins_at[n]  # the commit's begin marker
    length = second.instructions[n]
    size, slot_size = b.tp.trainable_bytes(), 32 + b.tp.trainable_bytes()
    seen = set()
    for cut in np.linspace(start - length // 20, start + length + length // 20, 40).astype(int):
        cut_run = F.run_elf(b, fw, link, sched, tmp_path, persist=first.image, limit=int(cut))
        assert cut_run.cut_at is not None
        slots = F.read_slots(cut_run.image, slot_size, b.tp.model_hash, b.tp.layout_hash, size)
        best = F.newest(slots)
        assert best >= 0 and slots[best].payload in outputs
        boot = F.run_elf(b, fw, link, sched, tmp_path, persist=cut_run.image, epochs=0)
        assert boot.loaded == best and boot.state == slots[best].payload
        assert np.array_equal(boot.outputs, outputs[slots[best].payload])
        seen.add(slots[best].sequence)
    assert seen == {1, 2}  # the sweep cut both before and after the flip

    flipped = bytearray(second.image)
    flipped[second.committed * slot_size + 32 + size // 2] ^= 0x10
    boot = F.run_elf(b, fw, link, sched, tmp_path, persist=bytes(flipped), epochs=0)
    assert boot.slots[second.committed] == "corrupt" and boot.loaded == 1 - second.committed
    assert boot.state == first.state

    d = np.load(EXAMPLES / "digits_samples.npz")
    np.savez(tmp_path / "calib.npz", inputs=d["inputs"][:4], labels=d["labels"][:4])
    pristine = F.run_on_host(b, F.Schedule(x[:1], y[:1], 0, 0.0, 3, x[8:12], y[8:12])).outputs
    for other in (_example("bias=last1")[0],  # another update set: another layout
                  _example(calib=tmp_path / "calib.npz")[0]):  # another model: other int8 parameters
        assert (other.tp.model_hash, other.tp.layout_hash) != (b.tp.model_hash, b.tp.layout_hash)
        fw2 = F.build_firmware(tmp_path / "fw2", other, board, sched, on_qemu=True, link_board=link)
        alien = F.run_elf(other, fw2, link, sched, tmp_path)
        pad = alien.image + b"\xff" * max(0, 2 * slot_size - len(alien.image))
        boot = F.run_elf(b, fw, link, sched, tmp_path, persist=pad[:2 * slot_size], epochs=0)
        assert boot.loaded == -1 and "foreign" in boot.slots
        assert np.array_equal(boot.outputs, pristine)


@needs_qemu
def test_tinyc_train_board_qemu_cli(tmp_path):
    """tinyc train --board --engine qemu: the firmware project (linked ELF, the
    samples embedded), the trained ONNX, the JSON's instruction counts and
    stack; --engine c gives the same history and the same trained ONNX."""
    d = np.load(EXAMPLES / "digits_samples.npz")
    np.savez(tmp_path / "d.npz", train_x=d["inputs"], train_y=d["labels"], test_x=d["inputs"][:6],
             test_y=d["labels"][:6])
    common = ["--calib", EXAMPLES / "digits_samples.npz", "--data", tmp_path / "d.npz", "--eval", tmp_path / "d.npz",
              "--update", SPEC, "--lr", "0.05", "--epochs", "2", "--board", "mps2-an386", "--json"]
    r = _tinyc("train", MODEL, *common, "--engine", "qemu", "-o", tmp_path / "q")
    assert r.returncode == 0, r.stderr
    q = json.loads(r.stdout)
    assert len(q["instructions_per_step"]) == 2 * 16 and q["instructions_commit"] > 0
    assert len(q["instructions_per_epoch"]) == 2 and len(q["instructions_per_inference"]) == 6
    assert 0 < q["stack_used_bytes"] <= q["stack_bytes"] and q["flash_bytes"] > 0
    assert (tmp_path / "q" / q["elf"]).is_file() and (tmp_path / "q" / "train_samples.h").is_file()
    r = _tinyc("train", MODEL, *common, "--engine", "c", "-o", tmp_path / "c")
    assert r.returncode == 0, r.stderr
    c = json.loads(r.stdout)
    assert c["history"] == q["history"] and c["test_accuracy"] == q["test_accuracy"] == q["history"][-1]["accuracy"]
    assert q["eval_samples"] == 6
    for key in ("train_arena_bytes", "trainable_bytes", "train_total_bytes", "full_backprop_total_bytes"):
        assert q[key] == c[key] > 0
    assert (tmp_path / "c" / "digits_cnn.onnx").read_bytes() == (tmp_path / "q" / "digits_cnn.onnx").read_bytes()


@pytest.mark.skipif(shutil.which("arm-none-eabi-gcc") is None, reason="needs arm-none-eabi-gcc")
@pytest.mark.parametrize("board", ["stm32f746", "stm32f405"])
def test_stm32_flash_ports_link_with_a_persist_region(tmp_path, board):
    """The register-level flash ports compile for the board and link; the
    persisted slots are whole sectors at the end of the flash, outside FLASH."""
    d = np.load(EXAMPLES / "digits_samples.npz")
    np.savez(tmp_path / "d.npz", train_x=d["inputs"], train_y=d["labels"])
    r = _tinyc("train", MODEL, "--calib", EXAMPLES / "digits_samples.npz", "--data", tmp_path / "d.npz",
               "--update", SPEC, "--lr", "0.05", "--board", board, "--json", "-o", tmp_path / "p")
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    b = get_board(board)
    flash = b.main_flash
    origin = int(s["persist_region"]["origin"], 16)
    assert origin + s["persist_region"]["bytes"] == flash.origin + flash.length
    assert s["flash_bytes"] <= origin - flash.origin
    ld = (tmp_path / "p" / "linker.ld").read_text()
    assert "PERSIST" in ld and (tmp_path / "p" / "firmware" / "storage_stm32.c").is_file()


@needs_shared
@needs_qemu
def test_resnet8_sparse_on_qemu_equals_the_host():
    """ResNet-8 with the sparse scheme, 32 samples of digits32, 2 epochs, on
    mps2-an386: the parameters at the end are byte-identical to the host C run
    of the same steps, and so are the accuracy figures."""
    data = np.load(TRAINING / "digits32.npz")
    graph = api.load(RESNET8)
    b = build_training(graph, parse_update(RESNET8_SPARSE, model_layers(RESNET8)), "r8")
    x = (data["train_x"][:32].astype(np.int16) - 128).astype(np.int8).reshape(
        (32,) + b.tp.graph.tensors[b.tp.step.inputs[0]].shape)
    ex = (data["test_x"][:16].astype(np.int16) - 128).astype(np.int8).reshape(
        (16,) + b.tp.graph.tensors[b.tp.step.inputs[0]].shape)
    sched = F.Schedule(x, data["train_y"][:32], 2, 0.01, 0, ex, data["test_y"][:16])
    host = F.run_on_host(b, sched)
    dev = F.run_on_qemu(b, get_board("mps2-an386"), sched)
    assert dev.state == host.state
    assert dev.epochs == host.epochs and np.array_equal(dev.outputs, host.outputs)


def test_bad_board_training_input_is_one_line(tmp_path):
    d = np.load(EXAMPLES / "digits_samples.npz")
    np.savez(tmp_path / "wrong.npz", train_x=d["inputs"][:, :, :4], train_y=d["labels"])
    np.savez(tmp_path / "d.npz", train_x=d["inputs"], train_y=d["labels"])
    base = ["train", MODEL, "--calib", EXAMPLES / "digits_samples.npz", "--update", SPEC, "--lr", "0.05"]
    cases = [
        ([*base, "--data", tmp_path / "wrong.npz", "--board", "mps2-an386"], "the model takes"),
        ([*base, "--data", tmp_path / "d.npz", "--board", "nrf52840"], "storage port"),
        ([*base, "--data", tmp_path / "d.npz", "--engine", "qemu"], "needs --board"),
        ([*base, "--data", tmp_path / "d.npz", "--board", "mps2-an386", "--engine", "ref"], "--engine c"),
    ]
    for k, (args, words) in enumerate(cases):
        out = tmp_path / f"o{k}"
        r = _tinyc(*args, "-o", out)
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, (args, r.stderr)
        assert words in r.stderr and "Traceback" not in r.stderr and not out.exists(), r.stderr


@pytest.mark.skipif(shutil.which("arm-none-eabi-gcc") is None, reason="needs arm-none-eabi-gcc")
def test_report_training_firmware_figures_are_the_elf_ones(tmp_path):
    """tinyc report --board --update --data --samples links the same training
    firmware as tinyc train --board: the same flash and RAM; the report gives
    the training memory per layer (JSON, Markdown with its plot, HTML)."""
    d = np.load(EXAMPLES / "digits_samples.npz")
    np.savez(tmp_path / "d.npz", train_x=d["inputs"], train_y=d["labels"])
    common = ["--calib", EXAMPLES / "digits_samples.npz", "--update", SPEC, "--board", "stm32f746"]
    r = _tinyc("train", MODEL, *common, "--data", tmp_path / "d.npz", "--samples", "6", "--lr", "0.05", "--json",
               "-o", tmp_path / "fw")
    assert r.returncode == 0, r.stderr
    trained = json.loads(r.stdout)
    r = _tinyc("report", MODEL, *common, "--data", tmp_path / "d.npz", "--samples", "6", "--format", "json")
    assert r.returncode == 0, r.stderr
    t = json.loads(r.stdout)["training"]
    assert (t["firmware"]["flash_bytes"], t["firmware"]["ram_bytes"]) == (trained["flash_bytes"], trained["ram_bytes"])
    assert t["firmware"]["samples"] == 6
    layers = t["per_layer"]
    assert sum(x["trainable_bytes"] for x in layers) == t["trainable_bytes"] - 4  # the generator's 4 bytes apart
    assert any(x["saved_bytes"] for x in layers) and any(x["gradient_bytes"] for x in layers)
    r = _tinyc("report", MODEL, *common, "--data", tmp_path / "d.npz", "--format", "md", "-o", tmp_path / "r.md")
    assert r.returncode == 0, r.stderr
    text = (tmp_path / "r.md").read_text()
    assert "Training memory per layer" in text and "r.training.png" in text and "training firmware" in text
    assert (tmp_path / "r.training.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    r = _tinyc("report", MODEL, *common, "--format", "html", "-o", tmp_path / "r.html")
    assert r.returncode == 0 and "Training memory per layer" in (tmp_path / "r.html").read_text()
    r = _tinyc("report", MODEL, "--calib", EXAMPLES / "digits_samples.npz", "--board", "host", "--budget", "5000",
               "--format", "json")
    assert r.returncode == 2 and "--budget needs --data" in r.stderr


@needs_shared
@pytest.mark.skipif(shutil.which("arm-none-eabi-gcc") is None, reason="needs arm-none-eabi-gcc")
def test_vww_sparse_training_firmware_fits_stm32f746(tmp_path):
    """VWW MobileNetV1 with the sparse scheme: the training firmware links for
    stm32f746 and fits its SRAM; the report's flash and RAM are the ELF's."""
    vww = SHARED_MODELS / "mlperf_tiny" / "vww_mbv1_int8.onnx"
    spec = "bias=last14; weight=-14,-10,-6@0.5,-4@0.25,-2@0.125,-1"
    common = ["--update", spec, "--board", "stm32f746", "--data", TRAINING / "lfw96.npz", "--pixel-range", "0,1",
              "--samples", "2"]
    r = _tinyc("train", vww, *common, "--lr", "0.03", "--json", "-o", tmp_path / "fw")
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["ram_bytes"] <= get_board("stm32f746").main_ram.length
    r = _tinyc("report", vww, *common, "--format", "json")
    assert r.returncode == 0, r.stderr
    fw = json.loads(r.stdout)["training"]["firmware"]
    assert (fw["flash_bytes"], fw["ram_bytes"]) == (s["flash_bytes"], s["ram_bytes"])
