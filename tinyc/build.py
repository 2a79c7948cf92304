"""Building: a quantized graph -> int8 program -> memory plan -> C files; host
projects, board firmware projects (linked when the Arm toolchain is installed),
and the generated code run on the host or on QEMU.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .boards import all_boards, get_board
from .boards.fit import check_fit
from .codegen.c import check_name, default_name, generate, runtime_files, weight_bytes
from .codegen.firmware import MIN_STACK, build_elf, project_files, region_overflow, write_files
from .data import Batch
from .engines import compile_int8, program_feeds, program_results
from .errors import TinycError
from .ir import Graph
from .ops import get_op
from .passes.memory import STRATEGIES, peak_step, plan_memory
from .reference import run_int8
from .sim import qemu
from .sim.host import build_host, run_host


@dataclass
class Build:
    program: object  # ir.program.Program
    plan: object  # passes.memory.MemoryPlan
    name: str
    files: dict[str, str]  # generated file -> text
    summary: dict


def compile_c(graph: Graph, model_path, name: str | None = None, board: str = "host",
              plan_strategy: str | None = None, in_place: bool = True, poison: bool = False) -> Build:
    """Quantized graph -> int8 program -> memory plan -> generated C files.

    ``plan_strategy`` forces one placement strategy (default: the best of all);
    ``in_place`` allows in-place kernels; ``poison`` makes a debug build that
    overwrites dead arena bytes between steps."""
    if plan_strategy is not None and plan_strategy not in STRATEGIES:
        raise TinycError(f"--plan {plan_strategy!r}: unknown strategy; choose one of {', '.join(STRATEGIES)}")
    macs = sum(get_op(n.op).macs(n, graph) for n in graph.nodes)
    name = check_name(name) if name else default_name(model_path)
    program = compile_int8(graph, model_path)
    plan = plan_memory(program, plan_strategy, in_place=in_place)
    files = generate(program, plan, name, source=Path(str(model_path)).name, poison=poison)
    summary = {
        "model": str(model_path),
        "name": name,
        "board": board,
        "arena_bytes": plan.arena_size,
        "lower_bound_bytes": plan.lower_bound,
        "lower_bound_no_inplace_bytes": plan.lower_bound_no_inplace,
        "plan_strategy": plan.strategy,
        "plan_order": plan.order,
        "in_place_steps": len(plan.in_place),
        "poisoned": poison,
        "weights_bytes": weight_bytes(program),
        "input_bytes": sum(program.graph.tensors[n].size for n in program.inputs),
        "output_bytes": sum(program.graph.tensors[n].size for n in program.outputs),
        "kernel_calls": sum(not c.is_alias for c in program.calls),
        "macs": int(macs),
    }
    return Build(program, plan, name, files, summary)


def _write_tree(build: Build, root: Path) -> None:

    for rel, text in build.files.items():
        (root / rel).write_text(text)
    for rel, src in runtime_files().items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, root / rel)
    (root / "tinyc.json").write_text(json.dumps(build.summary, indent=1) + "\n")


def replace_dir(out_dir, fill: Callable[[Path], None]) -> None:
    """Create out_dir atomically: ``fill`` writes into a temporary folder beside it,
    which is renamed into place only when complete. An existing out_dir is replaced
    only if an earlier tinyc build made it (it holds tinyc.json)."""
    out = Path(out_dir)
    if out.exists() and not (out.is_dir() and (out / "tinyc.json").is_file()):
        raise TinycError(f"{out}: exists and is not a tinyc build folder; choose another -o or remove it")
    if not out.parent.is_dir():
        raise TinycError(f"{out}: folder {out.parent} does not exist; create it or choose another -o")
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tinyc-"))
    old = None
    try:
        fill(tmp)
        if out.exists():
            old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.old-"))
            os.replace(out, old / "prev")
        os.replace(tmp, out)
        tmp = None
    except OSError as e:
        if old is not None and not out.exists():
            os.replace(old / "prev", out)
        raise TinycError(f"{out}: cannot write ({e.strerror or e}); check permissions and free space") from None
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def write_project(build: Build, out_dir) -> None:
    """The host project (model, runtime, test program, Makefile) in out_dir."""
    replace_dir(out_dir, lambda root: _write_tree(build, root))


def _split_outputs(program, raw: np.ndarray) -> dict[str, np.ndarray]:
    """(N, output bytes back to back) -> per output tensor (N, *shape)."""
    outs, offset = {}, 0
    for name in program.outputs:
        t = program.graph.tensors[name]
        outs[name] = raw[:, offset:offset + t.size].reshape((raw.shape[0],) + t.shape)
        offset += t.size
    return outs


def run_program_c(build: Build, batch: Batch, cflags: list[str] | None = None) -> dict[str, np.ndarray]:
    """Compile the generated C for the host (with extra ``cflags``, e.g. a
    sanitizer) and run every sample through it."""
    program = build.program
    feeds = program_feeds(program, batch)
    n = batch.count
    per_sample = [feeds[name].reshape(n, -1) for name in program.inputs]
    blob = np.concatenate(per_sample, axis=1).tobytes() if per_sample else b""
    with tempfile.TemporaryDirectory(prefix="tinyc-c-") as tmp:
        root = Path(tmp)
        _write_tree(build, root)
        exe = build_host(root, build.name, cflags)
        raw = np.frombuffer(run_host(exe, blob), dtype=np.int8)
    out_size = build.summary["output_bytes"]
    if raw.size != n * out_size:
        raise TinycError(f"the generated program wrote {raw.size} bytes for {n} samples; expected {n * out_size}")
    outs = _split_outputs(program, raw.reshape(n, out_size))
    return program_results(program, outs)


def board_info(board) -> dict:
    return {
        "name": board.name, "description": board.description, "core": board.core, "fpu": board.fpu,
        "dsp": board.dsp, "clock_hz": board.clock_hz, "qemu": board.qemu, "pyocd_target": board.pyocd_target,
        "aliases": list(board.aliases), "sram_bytes": board.sram_bytes, "largest_sram_bytes": board.main_ram.length,
        "flash_bytes": board.flash_bytes,
        "ram": [{"name": r.name, "origin": r.origin, "length": r.length} for r in board.ram],
        "flash": [{"name": r.name, "origin": r.origin, "length": r.length} for r in board.flash],
    }


def sample_io(build: Build, batch: Batch | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The int8 input bytes (all inputs back to back) the board firmware embeds, and
    the output bytes the int8 reference computes for them. Without data: a fixed
    pseudo-random input."""
    program = build.program
    if batch is not None:
        feeds = {n: f[0] for n, f in program_feeds(program, batch).items()}
    else:
        rng = np.random.default_rng(20261128)
        feeds = {n: rng.integers(-128, 128, program.graph.tensors[n].shape).astype(np.int8) for n in program.inputs}
    outs = run_int8(program, feeds)
    sample = np.concatenate([feeds[n].reshape(-1) for n in program.inputs])
    expected = np.concatenate([outs[n].reshape(-1) for n in program.outputs])
    return sample, expected


def _peak_note(build: Build) -> str:

    step, nodes = peak_step(build.plan, build.program)
    return f"the arena peak is at step {step} ({', '.join(nodes[:3])})" if nodes else ""


def build_firmware(build: Build, board, out_dir, batch: Batch | None = None) -> dict:
    """A firmware project for ``board`` in out_dir (atomically), linked into an ELF
    when arm-none-eabi-gcc is installed. Refuses (TinycError) a model that does not
    fit, naming the region, the bytes over and what would help."""
    s = build.summary
    model = build.name
    fit = check_fit(board, s["arena_bytes"], s["weights_bytes"], MIN_STACK)
    if not fit.fits:  # clear before any file is written or any compiler runs
        raise TinycError(fit.describe_failure(model, _peak_note(build)))
    sample = sample_io(build, batch)
    summary = dict(s, board=board.name, core=board.core)

    def fill(root: Path) -> None:
        if qemu.arm_toolchain() is None:
            write_files(project_files(build, board, board, "board", MIN_STACK, sample), root)
            summary.update(fits=True, elf=None, toolchain=False,
                           note="arm-none-eabi-gcc not found: wrote the C project only; install gcc-arm-none-eabi "
                                "libnewlib-arm-none-eabi (Debian) and run make in the folder")
        else:
            try:
                fw = build_elf(root, build, board, board, "board", sample)
            except TinycError as e:
                over = region_overflow(str(e))
                if over is None:
                    raise
                region, nbytes = over
                raise TinycError(
                    f"{model} does not fit {board.name}: the linker's region {region} is over by {nbytes:,} B "
                    f"(arena {s['arena_bytes']:,} B, weights {s['weights_bytes']:,} B). What would help: a board "
                    f"with more memory (tinyc boards), or a smaller model") from None
            measured = check_fit(board, s["arena_bytes"], s["weights_bytes"], fw.stack_bytes,
                                 {"flash_bytes": fw.flash_bytes, "ram_bytes": fw.ram_bytes})
            if not measured.fits:
                raise TinycError(measured.describe_failure(model, _peak_note(build)))
            summary.update(fits=True, toolchain=True, elf=str(fw.elf.relative_to(root)), flash_bytes=fw.flash_bytes,
                           ram_bytes=fw.ram_bytes + fw.stack_bytes, stack_bytes=fw.stack_bytes,
                           flash_free_bytes=measured.regions[0].margin, ram_free_bytes=measured.regions[1].margin)
        summary["sample_checksum"] = f"0x{_fnv1a(sample[1]):08x}"
        (root / "tinyc.json").write_text(json.dumps(summary, indent=1) + "\n")

    replace_dir(out_dir, fill)
    return summary


def _fnv1a(data: np.ndarray) -> int:
    h = 2166136261
    for b in data.astype(np.uint8).tolist():
        h = ((h ^ b) * 16777619) & 0xFFFFFFFF
    return h


def qemu_link_board(board):
    """The memory map firmware for ``board`` is linked against to run in QEMU: the
    stand-in machine's own board file, or the board itself when QEMU models the
    chip (netduinoplus2 is an STM32F405)."""
    if board.qemu is None:
        raise TinycError(f"{board.name} has no QEMU stand-in (QEMU 7.2 has no {board.core}); "
                         "choose another --board for --engine qemu")
    return all_boards().get(board.qemu, board)


def run_program_qemu(build: Build, batch: Batch, board, timeout: float = 600.0) -> tuple[dict, dict]:
    """Build firmware for the board's QEMU stand-in, stream the samples through it
    over semihosting, and return (outputs, report) with the instructions executed in
    NAME_invoke per sample and the stack high-water mark."""
    qemu.require_arm_toolchain()
    qemu.find_qemu()
    link = qemu_link_board(board)
    program = build.program
    feeds = program_feeds(program, batch)
    n = batch.count
    blob = np.concatenate([feeds[name].reshape(n, -1) for name in program.inputs], axis=1).tobytes()
    with tempfile.TemporaryDirectory(prefix="tinyc-qemu-") as tmp:
        root = Path(tmp)
        fw = build_elf(root, build, board, link, "qemu")
        (root / "in.bin").write_bytes(blob)
        result = qemu.run_qemu(fw.elf, board.qemu, root, timeout=timeout)
        if result.exit_code != 0:
            detail = getattr(result, "fault", None) or result.stderr.strip()[-200:]
            raise TinycError(f"the firmware failed on QEMU {board.qemu} (exit {result.exit_code}): {detail}")
        raw = np.frombuffer((root / "out.bin").read_bytes(), dtype=np.int8)
        stack_used = int.from_bytes((root / "stack.bin").read_bytes(), "little")
    out_size = build.summary["output_bytes"]
    if raw.size != n * out_size or len(result.instructions) != n:
        raise TinycError(f"the firmware returned {raw.size} bytes and {len(result.instructions)} counts for {n} samples")
    outs = _split_outputs(program, raw.reshape(n, out_size))
    report = {"board": board.name, "qemu_machine": board.qemu, "core": board.core,
              "instructions": result.instructions, "macs": build.summary["macs"],
              "stack_used_bytes": stack_used, "stack_bytes": fw.stack_bytes,
              "flash_bytes": fw.flash_bytes, "ram_bytes": fw.ram_bytes + fw.stack_bytes,
              "arena_bytes": build.summary["arena_bytes"]}
    if stack_used > fw.stack_bytes:
        raise TinycError(f"the firmware used {stack_used} B of stack, more than the {fw.stack_bytes} B reserved")
    return program_results(program, outs), report


def flash_command(project, board_name: str | None, probe: str | None = None) -> tuple[list[str], object]:
    """The pyOCD command that writes a built firmware project to its board."""
    project = Path(project)
    meta = project / "tinyc.json"
    if not meta.is_file():
        raise TinycError(f"{project}: not a tinyc build folder (no tinyc.json); build one with tinyc build --board B -o DIR")
    summary = json.loads(meta.read_text())
    built_for = summary.get("board", "host")
    board = get_board(board_name or built_for)
    if built_for != board.name:
        raise TinycError(f"{project}: was built for {built_for}, not {board.name}; rebuild with --board {board.name}")
    if board.pyocd_target is None:
        raise TinycError(f"{board.name} is a QEMU machine, not a board to flash; use tinyc run --engine qemu --board {board.name}")
    elf = project / summary.get("elf", f"build/{summary['name']}.elf")
    if not elf.is_file():
        raise TinycError(f"{elf}: no firmware image yet; install gcc-arm-none-eabi and run make -C {project}")
    cmd = [sys.executable, "-m", "pyocd", "flash", "--target", board.pyocd_target]
    if probe:
        cmd += ["--uid", probe]
    return cmd + [str(elf)], board
