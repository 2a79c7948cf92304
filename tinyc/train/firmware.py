"""Training firmware (``tinyc train --board``): the model with NAME_train_step,
the runtime, startup code, a storage port, a linker script with a region for the
persisted state, and a main (codegen/templates/main_train.c.j2) that loads the
newest persisted state, trains on samples, commits what it learned and reports
each epoch.

The project runs on the board's QEMU stand-in (``run_on_qemu``: the storage is
then a host file over semihosting) and its schedule runs on the host
(``run_on_host``: the generated C through CTrainer, the same steps in the same
order), which is how the tests hold the device to the host bit for bit.
"""

from __future__ import annotations

import struct
import tempfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import __version__
from ..boards import Board
from ..codegen.c import _c_array_body
from ..codegen.firmware import (
    FIRMWARE,
    Firmware,
    _env,
    _sources,
    common_files,
    compile_jobs,
    linker_script,
    stack_reserve,
    write_files,
)
from ..errors import TinycError
from .engine import CTrainer, TrainBuild

STORAGE = FIRMWARE / "storage"
HEADER_BYTES = 32
MAGIC = 0x43594E54
SLOT_STATUS = ("empty", "corrupt", "foreign", "valid")
# what persist.c calls through pointers: the storage ports' operations and
# main_train.c's state pieces (the stack reserve's call graph follows them)
INDIRECT_TARGETS = ("sh_read", "sh_erase", "sh_program", "flash_read", "flash_erase", "flash_program", "piece")


@dataclass
class Schedule:
    """What the firmware does on reset: its samples (int8, the program's input
    layout), epochs, learning rate and seeds."""

    train_x: np.ndarray
    train_y: np.ndarray
    epochs: int
    lr: float
    seed: int
    eval_x: np.ndarray | None = None
    eval_y: np.ndarray | None = None

    @property
    def eval_set(self) -> tuple[np.ndarray, np.ndarray]:
        """What each epoch's accuracy is measured on: the evaluation samples, or the training ones."""
        return (self.eval_x, self.eval_y) if self.eval_x is not None else (self.train_x, self.train_y)


def shuffle_order(n: int, seed: int, epoch: int) -> list[int]:
    """tinyc_train_order's sample order for an epoch (Fisher-Yates, 32-bit LCG)."""
    order = list(range(n))
    state = (seed + epoch) & 0xFFFFFFFF
    for i in range(n, 1, -1):
        state = (state * 1664525 + 1013904223) & 0xFFFFFFFF
        j = state % i
        order[i - 1], order[j] = order[j], order[i - 1]
    return order


# ------------------------------------------------------------------ storage
def storage_port(board: Board, on_qemu: bool) -> tuple[str, list[str]]:
    """The storage port's file (firmware/storage/) and the defines it needs."""
    if on_qemu:
        return "storage_semihost.c", []
    if board.storage is None:
        if board.pyocd_target is None:  # a QEMU machine is its own stand-in
            return "storage_semihost.c", []
        raise TinycError(f"--board {board.name}: tinyc has no storage port for its flash yet (ports: STM32F4, "
                         "STM32F7); train on a QEMU stand-in (--board mps2-an386) or write firmware/storage.h's "
                         "tinyc_storage_open for it")
    return "storage_stm32.c", ["-DTINYC_STM32F7"] if board.storage["port"] == "stm32f7" else []


def persist_region(board: Board, state_bytes: int, on_qemu: bool) -> tuple[int, int] | None:
    """(origin, length) of the two slots at the end of the board's main flash:
    whole sectors of the size of the last one, as few as hold the header and the
    state; None where the storage is not the flash (semihosting)."""
    if on_qemu or board.storage is None:
        return None
    sectors = [size for count, size in board.storage["sectors"] for _ in range(count)]
    need = HEADER_BYTES + state_bytes
    last = sectors[-1]
    per_slot = -(-need // last)
    if 2 * per_slot > len(sectors) or any(s != last for s in sectors[-2 * per_slot:]):
        raise TinycError(f"the training state ({state_bytes:,} B) needs two slots of {per_slot} x {last // 1024} KB "
                         f"sectors, more than the flash of {board.name} has; train fewer parameters (--update)")
    length = 2 * per_slot * last
    flash = board.main_flash
    return flash.origin + flash.length - length, length


@dataclass
class Slot:
    status: str  # "empty", "corrupt", "foreign", "valid"
    sequence: int
    payload: bytes


def read_slots(data: bytes, slot_size: int, model_hash: int, layout_hash: int, size: int) -> list[Slot]:
    """The two slots of a persisted-state image, judged as tinyc_persist_scan does."""
    out = []
    for k in range(2):
        raw = data[k * slot_size:(k + 1) * slot_size]
        if len(raw) < HEADER_BYTES or struct.unpack_from("<I", raw)[0] != MAGIC:
            out.append(Slot("empty", 0, b""))
            continue
        words = struct.unpack_from("<8I", raw)
        if zlib.crc32(raw[:28]) != words[7] or words[1] != 1 or words[5] > slot_size - HEADER_BYTES:
            out.append(Slot("corrupt", 0, b""))
            continue
        payload = raw[HEADER_BYTES:HEADER_BYTES + words[5]]
        if zlib.crc32(payload) != words[6]:
            out.append(Slot("corrupt", words[4], b""))
        elif (words[2], words[3], words[5]) != (model_hash, layout_hash, size):
            out.append(Slot("foreign", words[4], payload))
        else:
            out.append(Slot("valid", words[4], payload))
    return out


def newest(slots: list[Slot]) -> int:
    """The newest valid slot (sequence numbers compared modulo 2^32), or -1."""
    best = -1
    for k, s in enumerate(slots):
        ahead = (s.sequence - slots[best].sequence) & 0xFFFFFFFF if best >= 0 else 1
        if s.status == "valid" and 0 < ahead < 1 << 31:
            best = k
    return best


# ------------------------------------------------------------------ project
def samples_header(b: TrainBuild, sched: Schedule) -> str:
    NAME = b.name.upper()
    lines = [f"/* Training samples for {b.name} (generated by tinyc {__version__}): int8, in the layout",
             f" * {b.name}_train_step takes; labels are class indices. */",
             "#ifndef TINYC_TRAIN_SAMPLES_H", "#define TINYC_TRAIN_SAMPLES_H", "", "#include <stdint.h>", "",
             f"#define TINYC_TRAIN_SAMPLES {len(sched.train_y)}u"]
    n_eval = 0 if sched.eval_x is None else len(sched.eval_y)
    lines += [f"#define TINYC_EVAL_SAMPLES {n_eval}u",
              f"#define TINYC_EVAL_COUNT {n_eval or len(sched.train_y)}u", ""]
    sets = [("train", sched.train_x, sched.train_y)] + ([("eval", sched.eval_x, sched.eval_y)] if n_eval else [])
    for what, x, y in sets:
        x = np.ascontiguousarray(x, np.int8).reshape(len(y), -1)
        lines.append(f"static const int8_t tinyc_{what}_inputs[{len(y)}][{NAME}_INPUT_SIZE] = {{")
        lines += [f"    {{{_c_array_body(row)}}}," for row in x]
        lines.append("};")
        lines.append(f"static const int32_t tinyc_{what}_labels[{len(y)}] = {{{', '.join(str(int(v)) for v in y)}}};")
        lines.append("")
    lines += ["#endif", ""]
    return "\n".join(lines)


def main_source(b: TrainBuild, board: Board, sched: Schedule) -> str:
    lr = np.float32(sched.lr)
    return _env().get_template("main_train.c.j2").render(
        name=b.name, NAME=b.name.upper(), version=__version__, board=board, samples=len(sched.train_y),
        epochs=sched.epochs, lr=f"{float(lr):g}", lr_c=float(lr).hex() + "f", seed=sched.seed & 0xFFFFFFFF)


def project_files(b: TrainBuild, board: Board, sched: Schedule, on_qemu: bool) -> dict[str, str | Path]:
    """Relative path -> text or Path (copied) of a training firmware project,
    but its linker script (written with the link, the stack sized then)."""
    port, defines = storage_port(board, on_qemu)
    files = common_files(b, board, "train", tuple(defines))
    files["firmware/storage.h"] = STORAGE / "storage.h"
    files[f"firmware/{port}"] = STORAGE / port
    files["main.c"] = main_source(b, board, sched)
    files["train_samples.h"] = samples_header(b, sched)
    return files


def state_bytes(b: TrainBuild) -> int:
    return b.tp.trainable_bytes()  # the state tensors and the 4-byte generator


def build_firmware(root: Path, b: TrainBuild, board: Board, sched: Schedule, on_qemu: bool,
                   link_board: Board | None = None) -> Firmware:
    """Write the project into root, compile it for board's core and link
    build/NAME.elf for link_board's memory (default: board's), the stack sized
    from the call graph gcc writes."""
    from ..sim import qemu

    link_board = link_board or board
    _, defines = storage_port(board, on_qemu)
    write_files(project_files(b, board, sched, on_qemu), root)
    sources = _sources(root, b.name)
    objects = [root / "build" / src.with_suffix(".o") for src in sources]
    qemu.compile_objects(compile_jobs(root, b.name, sources, objects),
                         [root, root / "tinyc" / "include", root / "firmware"], board.cflags() + defines)
    stack, chain = stack_reserve(objects, INDIRECT_TARGETS)
    (root / "linker.ld").write_text(linker_script(link_board, stack,
                                                  persist_region(link_board, state_bytes(b), on_qemu)))
    elf = root / "build" / f"{b.name}.elf"
    qemu.link_objects(objects, elf, board.cflags(), root / "linker.ld")
    sizes = qemu.elf_sizes(elf)
    return Firmware(elf, sizes["flash"], sizes["ram"] - stack, stack, chain, objects)


# ---------------------------------------------------------------------- runs
@dataclass
class Run:
    """What a training run reports: per epoch (mean loss, correct, count), the
    final state's bytes and the evaluation outputs after the commit."""

    epochs: list[tuple[float, int, int]]
    state: bytes
    outputs: np.ndarray
    loaded: int = -1  # the slot the boot loaded (-1: none)
    slots: list[str] = field(default_factory=list)  # each slot's status at boot
    committed: int = -1
    sequence: int = 0
    instructions: list[int] = field(default_factory=list)
    stack_used: int = 0
    cut_at: int | None = None
    begins_at: list[int] = field(default_factory=list)
    image: bytes = b""  # the storage (persist.bin) after the run


def _correct(outputs: np.ndarray, labels: np.ndarray, classes: int) -> int:
    return int(np.sum(np.argmax(outputs[:, :classes], axis=1) == labels))


def run_on_host(b: TrainBuild, sched: Schedule) -> Run:
    """The firmware's schedule through the host build of the same C."""
    ex, ey = sched.eval_set
    classes = b.tp.graph.tensors[b.tp.logits].size
    n = len(sched.train_y)
    records = []
    for epoch in range(sched.epochs):
        records += [(int(sched.train_y[k]), sched.lr, sched.train_x[k]) for k in shuffle_order(n, sched.seed, epoch)]
        records += [(-1, 0.0, x) for x in ex]
    trainer = CTrainer(b, seed=sched.seed)
    try:
        raw = trainer.replay(records, update_state=True) if records else b""
        out_size = trainer.output_size
        epochs, at = [], 0
        for _ in range(sched.epochs):
            losses = np.frombuffer(raw[at:at + 4 * n], np.float32)
            at += 4 * n
            outs = np.frombuffer(raw[at:at + out_size * len(ey)], np.int8).reshape(len(ey), out_size)
            at += out_size * len(ey)
            total = np.float32(0)
            for v in losses:  # the firmware's float sum, in its order
                total = np.float32(total + v)
            epochs.append((float(np.float32(total / np.float32(n))), _correct(outs, ey, classes), len(ey)))
        final = trainer.predict(ex)
        state = trainer.state()
    finally:
        trainer.close()
    return Run(epochs, state, final)


def run_on_qemu(b: TrainBuild, board: Board, sched: Schedule, persist: bytes | None = None,
                epochs: int | None = None, limit: int | None = None, timeout: float = 1800.0,
                workdir: Path | None = None) -> Run:
    """Build the firmware for the board's QEMU stand-in and run it once (a reset):
    ``persist``: the storage file's bytes at power-on (None: a new device);
    ``epochs``: overrides the schedule's (epochs.bin); ``limit``: cut the power
    after that many instructions (the run then reports only cut_at). The storage
    file after the run is ``Run.image``."""
    from ..build import qemu_link_board
    from ..sim import qemu

    qemu.require_arm_toolchain()
    qemu.find_qemu()
    link = qemu_link_board(board)
    with tempfile.TemporaryDirectory(prefix="tinyc-train-qemu-") as tmp:
        root = Path(tmp) if workdir is None else workdir
        fw = build_firmware(root / "fw", b, board, sched, on_qemu=True, link_board=link)
        return run_elf(b, fw, link, sched, root, persist, epochs, limit, timeout)


def run_elf(b: TrainBuild, fw: Firmware, machine_board: Board, sched: Schedule, root: Path,
            persist: bytes | None = None, epochs: int | None = None, limit: int | None = None,
            timeout: float = 1800.0) -> Run:
    """One reset of a built QEMU training firmware in root (see run_on_qemu)."""
    from ..sim import qemu

    for f in ("persist.bin", "epochs.bin", "train.bin", "outputs.bin"):
        (root / f).unlink(missing_ok=True)
    if persist is not None:
        (root / "persist.bin").write_bytes(persist)
    if epochs is not None:
        (root / "epochs.bin").write_bytes(struct.pack("<I", epochs))
    options = ["at=1"] + ([f"limit={limit}"] if limit else [])
    result = qemu.run_qemu(fw.elf, machine_board.qemu, root, timeout=timeout, plugin_options=options)
    image = (root / "persist.bin").read_bytes() if (root / "persist.bin").exists() else b""
    run = Run([], b"", np.zeros((0,), np.int8), cut_at=result.cut_at, begins_at=result.begins_at,
              instructions=result.instructions, image=image)
    if result.cut_at is not None:
        return run
    if result.exit_code != 0:
        detail = result.fault or result.stderr.strip()[-300:]
        raise TinycError(f"the training firmware failed on QEMU {machine_board.qemu} (exit {result.exit_code}): "
                         f"{detail}")
    log = (root / "train.bin").read_bytes()
    loaded, statuses, _, _ = struct.unpack_from("<iIII", log, 0)
    run.loaded = loaded
    run.slots = [SLOT_STATUS[statuses & 0xFF], SLOT_STATUS[(statuses >> 8) & 0xFF]]
    count = (len(log) - 32) // 16
    for k in range(count):
        _, loss, correct, n = struct.unpack_from("<IfII", log, 16 + 16 * k)
        run.epochs.append((loss, correct, n))
    run.committed, run.sequence, run.stack_used, _ = struct.unpack_from("<iIII", log, len(log) - 16)
    ex, _ = sched.eval_set
    run.outputs = np.frombuffer((root / "outputs.bin").read_bytes(), np.int8).reshape(len(ex), -1).copy()
    slot_size = HEADER_BYTES + state_bytes(b)
    slots = read_slots(image, slot_size, b.tp.model_hash, b.tp.layout_hash, state_bytes(b))
    if run.committed >= 0:
        run.state = slots[run.committed].payload
    if run.stack_used > fw.stack_bytes:
        raise TinycError(f"the training firmware used {run.stack_used} B of stack, more than the "
                         f"{fw.stack_bytes} B reserved")
    return run


def link_figures(b: TrainBuild, fw: Firmware, board: Board) -> dict:
    """What a linked training firmware takes of the board: flash, RAM (stack
    included), stack, and the persisted state's slots where they are flash."""
    out = {"flash_bytes": fw.flash_bytes, "ram_bytes": fw.ram_bytes + fw.stack_bytes, "stack_bytes": fw.stack_bytes}
    region = persist_region(board, state_bytes(b), on_qemu=False)
    if region is not None:
        out["persist_region"] = {"origin": f"0x{region[0]:08x}", "bytes": region[1]}
    return out


# ----------------------------------------------------------- tinyc train --board
def params_from_state(b: TrainBuild, state: bytes) -> dict[str, np.ndarray]:
    """The state tensors' values in a state image (NAME_train_state_save's bytes)."""
    g, at, out = b.tp.graph, 0, {}
    for name in b.tp.state_tensors():
        t = g.tensors[name]
        out[name] = np.frombuffer(state[at:at + t.nbytes], t.dtype).reshape(t.shape).copy()
        at += t.nbytes
    return out


def _overflow_hint(e: TinycError, sched: Schedule) -> TinycError:
    from ..codegen.firmware import region_overflow

    over = region_overflow(str(e))
    if over is None:
        return e
    region, nbytes = over
    if region == "FLASH":
        per = sched.train_x[0].size
        return TinycError(f"the training firmware does not fit: region FLASH is over by {nbytes:,} B; embed fewer "
                          f"samples (--samples N: each costs {per:,} B) or update fewer parameters")
    return TinycError(f"the training firmware does not fit: region {region} is over by {nbytes:,} B (arena, "
                      "trainable parameters and stack); update fewer parameters (--update)")


def train_on_board(graph, model_path, updates, data, eval_data, *, board: Board, name: str, epochs: int, lr: float,
                   seed: int, engine: str, rounding: str, max_step: int, samples: int | None,
                   progress=None) -> tuple[TrainBuild, dict, callable]:
    """The training firmware for ``board`` and its run (``engine`` "c": the
    firmware's schedule through the host build of the same C; "qemu": the
    firmware itself on the board's stand-in). Returns the build (with the run's
    trained values), the summary, and fill(root): writes and links the project."""
    import copy

    from ..codegen.c import generate
    from .engine import build_training, memory_of
    from .run import to_program_input, updates_for

    if engine not in ("c", "qemu"):
        raise TinycError("--board runs the firmware's schedule through --engine c (the host build of its C) or "
                         "--engine qemu (the firmware on the board's QEMU stand-in)")
    storage_port(board, on_qemu=False)  # a board without a port is refused before any work
    pristine = copy.deepcopy(graph)
    b = build_training(graph, updates, name, rounding, source=Path(str(model_path)).name, max_step=max_step)
    cap = len(data.y) if samples is None else samples
    if min(cap, len(data.y)) > 65535:
        raise TinycError(f"{len(data.y):,} samples: the firmware embeds at most 65,535; give --samples N")
    x_q = to_program_input(b.tp, data)[:cap]
    sched = Schedule(x_q, np.asarray(data.y[:cap]), epochs, lr, seed)
    if eval_data is not None:
        sched.eval_x = to_program_input(b.tp, eval_data)[:cap]
        sched.eval_y = np.asarray(eval_data.y[:cap])
    persist_region(board, state_bytes(b), on_qemu=False)  # the state fits the board's flash slots
    summary = {"model": str(model_path), "name": name, "board": board.name, "engine": engine, "precision": "int8",
               "epochs": epochs, "lr": lr, "seed": seed, "train_samples": len(sched.train_y),
               "eval_samples": len(sched.eval_set[1])}
    summary.update(b.summary)
    full = memory_of(pristine, updates_for(model_path, "full"), rounding)
    summary["full_backprop_total_bytes"] = full["total_bytes"]
    pristine_files = dict(b.files)

    if engine == "qemu":
        with tempfile.TemporaryDirectory(prefix="tinyc-train-qemu-") as tmp:
            run = run_on_qemu(b, board, sched, workdir=Path(tmp))
        n, e = len(sched.train_y), len(sched.eval_set[1])
        counts = run.instructions
        per_epoch = [counts[k * (n + e):k * (n + e) + n] for k in range(epochs)]
        summary["qemu_machine"] = board.qemu
        summary["instructions_per_step"] = [c for ep in per_epoch for c in ep]
        summary["instructions_per_epoch"] = [int(sum(ep)) for ep in per_epoch]
        summary["instructions_per_inference"] = counts[epochs * (n + e) + 1:]
        summary["instructions_commit"] = counts[epochs * (n + e)]
        summary["stack_used_bytes"] = run.stack_used
    else:
        run = run_on_host(b, sched)
    if progress is not None:
        progress(epochs * len(sched.train_y))
    summary["history"] = [{"epoch": k + 1, "loss": loss, "accuracy": correct / count}
                          for k, (loss, correct, count) in enumerate(run.epochs)]
    if eval_data is not None and run.epochs:
        summary["test_accuracy"] = summary["history"][-1]["accuracy"]
    for tname, value in params_from_state(b, run.state).items():
        b.tp.graph.tensors[tname].data = value
    trained_files = generate(b.tp.inference, b.plan, name, Path(str(model_path)).name, train=b.tp,
                             train_plan=b.train_plan)

    def fill(root: Path) -> None:
        import json

        from ..project import interface

        b.files = pristine_files  # the firmware starts from the model's own parameters
        try:
            fw = build_firmware(root, b, board, sched, on_qemu=False)
        except TinycError as e:
            raise _overflow_hint(e, sched) from None
        finally:
            b.files = trained_files
        summary.update(elf=str(fw.elf.relative_to(root)), **link_figures(b, fw, board))
        (root / "tinyc.json").write_text(json.dumps({**summary, "interface": interface(b.tp.inference)},
                                                    indent=1) + "\n")

    return b, summary, fill
