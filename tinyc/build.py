"""Building: a quantized graph -> int8 program -> memory plan -> C files; host
projects, board firmware projects (linked when the Arm toolchain is installed),
and the generated code run on the host or on QEMU.
"""

from __future__ import annotations

import hashlib
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
from .boards.fit import check_fit, roomy
from .codegen.c import check_name, default_name, generate, runtime_files, weight_bytes
from .codegen.firmware import (
    MIN_STACK,
    SelfTest,
    build_elf,
    compile_project,
    generated_input,
    link_model_only,
    link_project,
    project_files,
    region_overflow,
    write_files,
)
from .data import Batch
from .engines import compile_int8, program_feeds, program_results
from .errors import DoesNotFit, TinycError
from .ir import Graph
from .ops import get_op
from .passes.lut import fuse_unary_chains
from .passes.memory import STRATEGIES, arena_size, peak_step, plan_memory
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
    runtime: Path | None = None  # a project's own copy of the runtime (tinyc run DIR); None: tinyc's


def _meta(build: Build, summary: dict) -> str:
    """tinyc.json: the summary, and the interface tinyc run DIR needs."""
    from .project import interface

    return json.dumps({**summary, "interface": interface(build.program)}, indent=1) + "\n"


def target_has_dsp(board: str) -> bool:
    """Whether a build for ``board`` plans the kernels' DSP scratch: yes for the
    portable project ("host": it may be compiled for any core), for a report over
    "all" boards, and for boards whose core has the DSP extension."""
    return board in ("host", "all") or get_board(board).dsp


def specialize_for(program, board, plan_strategy: str | None = None, in_place: bool = True) -> None:
    """Wide weights, folded offsets and Add tables (passes/widen.py) within the board's flash,
    unless the wide kernels' scratch would push an arena that fits the board's
    RAM out of it (then the program stays as it was)."""
    from .passes import patch as patching
    from .passes.widen import CODE_RESERVE, RAM_RESERVE, specialize

    def snapshot():
        return [(c.kernel, list(c.inputs), c.params) for c in program.calls]

    def restore(calls):
        for call, (kernel, inputs, params) in zip(program.calls, calls):
            call.kernel, call.inputs, call.params = kernel, inputs, params

    narrow = snapshot()
    if not specialize(program, board.main_flash.length - CODE_RESERVE, wide=board.dsp, vector=board.mve):
        return
    room = board.main_ram.length - RAM_RESERVE
    strategy = plan_strategy or patching.QUICK_STRATEGY
    if arena_size(program, strategy, in_place=in_place) > room:
        wide = snapshot()
        restore(narrow)
        if arena_size(program, strategy, in_place=in_place) > room:  # fits neither way: keep the speed
            restore(wide)


def compile_c(graph: Graph, model_path, name: str | None = None, board: str = "host",
              plan_strategy: str | None = None, in_place: bool = True, poison: bool = False,
              patch: str = "auto", max_overhead: float = 0.2, widen: bool = True) -> Build:
    """Quantized graph -> int8 program -> memory plan -> generated C files.

    ``plan_strategy`` forces one placement strategy (default: the best of all);
    ``in_place`` allows in-place kernels; ``poison`` makes a debug build that
    overwrites dead arena bytes between steps; ``patch``: "off", "auto" or
    "SPLIT:RxC", patch-based execution of the first stage (passes/patch.py);
    ``widen``: for a board, specialize within its flash (passes/widen.py): Add
    tables, and on cores with the DSP extension wide weights."""
    from .passes import patch as patching

    if plan_strategy is not None and plan_strategy not in STRATEGIES:
        raise TinycError(f"--plan {plan_strategy!r}: unknown strategy; choose one of {', '.join(STRATEGIES)}")
    choice = patching.parse_patch(patch)
    if not 0 <= max_overhead < 100 or max_overhead != max_overhead:
        raise TinycError(f"--max-overhead {max_overhead}: give a fraction of extra MACs >= 0, e.g. 0.2")
    macs = sum(get_op(n.op).macs(n, graph) for n in graph.nodes)
    name = check_name(name) if name else default_name(model_path)
    program = compile_int8(graph, model_path)
    fuse_unary_chains(program)  # builds only: compile_int8's program (the reference engine's) keeps them
    program.dsp = target_has_dsp(board)
    if widen and board not in ("host", "all"):
        specialize_for(program, get_board(board), plan_strategy, in_place)
    program, plan, patched = patching.apply(
        program, choice, max_overhead, lambda p: plan_memory(p, plan_strategy, in_place=in_place),
        lambda p: arena_size(p, plan_strategy or patching.QUICK_STRATEGY, in_place=in_place))
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
        "patch": patched,
    }
    return Build(program, plan, name, files, summary)


def _write_tree(build: Build, root: Path) -> None:

    for rel, text in build.files.items():
        (root / rel).write_text(text)
    for rel, src in runtime_files(build.runtime).items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, root / rel)
    (root / "tinyc.json").write_text(_meta(build, build.summary))


PROJECT_FORMAT = 1  # tinyc.json's "tinyc_project": marks a folder tinyc wrote


def _files_below(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() or p.is_symlink())


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _is_product(rel: str, products: list[str]) -> bool:
    """Made by the project's Makefile (build/, the host program): tinyc's to remove."""
    return any(rel == p or (p.endswith("/") and rel.startswith(p)) for p in products)


def _earlier_build(out: Path) -> tuple[dict[str, str], list[str]] | None:
    """The files (relative path -> sha256) and Makefile products an earlier tinyc
    build recorded in out/tinyc.json; None when out is not a folder tinyc wrote."""
    try:
        meta = json.loads((out / "tinyc.json").read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    if not isinstance(meta, dict) or meta.get("tinyc_project") != PROJECT_FORMAT:
        return None
    files, products = meta.get("files"), meta.get("products", [])
    if (not isinstance(files, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in files.items())
            or not isinstance(products, list) or not all(isinstance(x, str) for x in products)):
        return None
    return files, products


def _user_files(out: Path) -> list[str]:
    """Files in an existing -o folder that tinyc must keep: everything when tinyc
    did not write the folder (then it must be empty), else what the user added.
    A file tinyc wrote that the user changed since is refused."""
    if out.is_symlink():
        raise TinycError(f"{out}: is a symbolic link; give the folder it points to, or another -o")
    if not out.is_dir():
        raise TinycError(f"{out}: exists and is not a folder; choose another -o")
    earlier = _earlier_build(out)
    present = _files_below(out)
    if earlier is None:
        if any(out.iterdir()):
            raise TinycError(f"{out}: exists, is not empty and was not written by tinyc; choose another -o "
                             "(tinyc writes into an empty folder or replaces one it wrote)")
        return []
    ours, products = earlier
    keep = []
    for rel in present:
        if rel == "tinyc.json" or _is_product(rel, products):
            continue
        if rel in ours:
            if (out / rel).is_symlink() or _sha256(out / rel) != ours[rel]:
                raise TinycError(f"{out / rel}: was changed since tinyc wrote it; move it out of {out} (or delete "
                                 "it) before building into this folder again")
            continue
        keep.append(rel)
    return keep


def check_output_dir(out_dir) -> list[str]:
    """Refuse, before any work, an -o folder that replace_dir would refuse; returns
    the user's files in it that a rebuild carries over."""
    out = Path(out_dir)
    if out.exists() or out.is_symlink():
        return _user_files(out)
    if not out.parent.is_dir():
        raise TinycError(f"{out}: folder {out.parent} does not exist; create it or choose another -o")
    return []


def replace_dir(out_dir, fill: Callable[[Path], None], products: tuple[str, ...] = ()) -> None:
    """Create out_dir atomically: ``fill`` writes into a temporary folder beside it,
    which is renamed into place only when complete. An existing out_dir is
    replaced only when it is empty or an earlier tinyc build wrote it (its
    tinyc.json lists the files it wrote, with their hashes); then only tinyc's
    files are replaced: files the user added are carried over, and a file of
    tinyc's that the user changed stops the build. ``products`` are paths the
    project's Makefile makes (a trailing / for a folder): tinyc's to remove."""
    out = Path(out_dir)
    keep = check_output_dir(out)
    try:
        tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tinyc-"))
    except OSError as e:
        raise TinycError(f"{out}: cannot write in {out.parent} ({e.strerror or e}); check permissions") from None
    old = None
    try:
        fill(tmp)
        written = _files_below(tmp)
        clash = [rel for rel in keep if rel in written or any(w.startswith(rel + "/") for w in written)]
        if clash:
            raise TinycError(f"{out / clash[0]}: was not written by tinyc, and this build writes a file of that name; "
                             f"move it out of {out} first")
        meta_path = tmp / "tinyc.json"
        meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
        meta.update(tinyc_project=PROJECT_FORMAT, products=list(products),
                    files={rel: _sha256(tmp / rel) for rel in written if rel != "tinyc.json"})
        meta_path.write_text(json.dumps(meta, indent=1) + "\n")
        for rel in keep:  # the user's files move with the folder: hard links, or copies across devices
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            try:
                if (out / rel).is_symlink():
                    raise OSError
                os.link(out / rel, tmp / rel)
            except OSError:
                shutil.copy2(out / rel, tmp / rel, follow_symlinks=False)
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
    replace_dir(out_dir, lambda root: _write_tree(build, root), products=(f"{build.name}_host",))


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


def self_test(build: Build, batch: Batch | None = None) -> SelfTest:
    """What the board firmware's self-test runs: the first sample of ``batch``
    (embedded in flash), or without data the input the firmware generates itself;
    and the output bytes the int8 reference computes for it."""
    program = build.program
    if batch is not None:
        feeds = {n: f[0] for n, f in program_feeds(program, batch).items()}
    else:
        blob = generated_input(build.summary["input_bytes"])
        feeds, at = {}, 0
        for n in program.inputs:
            t = program.graph.tensors[n]
            feeds[n], at = blob[at:at + t.size].reshape(t.shape), at + t.size
    outs = run_int8(program, feeds)
    expected = np.concatenate([outs[n].reshape(-1) for n in program.outputs])
    embedded = np.concatenate([feeds[n].reshape(-1) for n in program.inputs]) if batch is not None else None
    return SelfTest(embedded, expected)


def _peak_note(build: Build) -> str:

    step, nodes = peak_step(build.plan, build.program)
    return f"the arena peak is at step {step} ({', '.join(nodes[:3])})" if nodes else ""


def build_firmware(build: Build, board, out_dir, batch: Batch | None = None) -> dict:
    """A firmware project for ``board`` in out_dir (atomically), linked into an ELF
    when arm-none-eabi-gcc is installed. Refuses (TinycError) a model that does not
    fit, naming the region, the bytes over and what would help.

    The fit verdict and the figures (flash_bytes, ram_bytes, stack_bytes) are the
    model's: the model, the runtime and the startup code, linked with a main that
    only calls NAME_invoke. The project's self-test harness (main.c, sample.h) is
    measured apart (harness_flash_bytes, harness_ram_bytes); the ELF in the project
    includes it (firmware_flash_bytes, firmware_ram_bytes)."""
    s = build.summary
    model = build.name
    fit = check_fit(board, s["arena_bytes"], s["weights_bytes"], MIN_STACK)
    if not fit.fits:  # clear before any file is written or any compiler runs
        raise DoesNotFit(fit.describe_failure(model, _peak_note(build)))
    test = self_test(build, batch)
    summary = dict(s, board=board.name, core=board.core,
                   sample="embedded from --sample" if batch is not None else "generated by the firmware",
                   sample_checksum=f"0x{test.checksum:08x}")

    def fill(root: Path) -> None:
        if qemu.arm_toolchain() is None:
            write_files(project_files(build, board, board, "board", MIN_STACK, test), root)
            summary.update(fits=True, elf=None, toolchain=False,
                           note="arm-none-eabi-gcc not found: wrote the C project only; install gcc-arm-none-eabi "
                                "libnewlib-arm-none-eabi (Debian) and run make in the folder")
        else:
            objects = compile_project(root, build, board, "board", test)
            with tempfile.TemporaryDirectory(prefix="tinyc-model-") as scratch:
                alone = link_model_only(root, objects, Path(scratch), build, board, roomy(board))
            measured = check_fit(board, s["arena_bytes"], s["weights_bytes"], alone.stack_bytes,
                                 {"flash_bytes": alone.flash_bytes, "ram_bytes": alone.ram_bytes})
            if not measured.fits:
                raise DoesNotFit(measured.describe_failure(model, _peak_note(build)))
            try:
                fw = link_project(root, build, objects, board, board)
            except TinycError as e:
                over = region_overflow(str(e))
                if over is None:
                    raise
                region, nbytes = over
                raise TinycError(
                    f"{model} fits {board.name} (flash {alone.flash_bytes:,} B, RAM "
                    f"{alone.ram_bytes + alone.stack_bytes:,} B), but not with the self-test's sample embedded from "
                    f"--sample: region {region} is over by {nbytes:,} B; build without --sample (the self-test then "
                    "generates its input and costs no flash for it)") from None
            summary.update(
                fits=True, toolchain=True, elf=str(fw.elf.relative_to(root)), flash_bytes=alone.flash_bytes,
                ram_bytes=alone.ram_bytes + alone.stack_bytes, stack_bytes=alone.stack_bytes,
                flash_free_bytes=measured.regions[0].margin, ram_free_bytes=measured.regions[1].margin,
                harness_flash_bytes=fw.flash_bytes - alone.flash_bytes,
                harness_ram_bytes=fw.ram_bytes + fw.stack_bytes - alone.ram_bytes - alone.stack_bytes,
                firmware_flash_bytes=fw.flash_bytes, firmware_ram_bytes=fw.ram_bytes + fw.stack_bytes,
                firmware_stack_bytes=fw.stack_bytes)
        (root / "tinyc.json").write_text(_meta(build, summary))

    replace_dir(out_dir, fill, products=("build/",))
    return summary


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
    """The pyOCD command that writes a built firmware project to its board.
    tinyc.json is untrusted input: its fields are checked, and the firmware image
    it names must be a file inside the project folder."""
    from .codegen.c import name_problem

    project = Path(project)
    meta_path = project / "tinyc.json"
    if not meta_path.is_file():
        raise TinycError(f"{project}: not a tinyc build folder (no tinyc.json); build one with tinyc build --board B -o DIR")
    rebuild = "rebuild the project with tinyc build --board B -o DIR"
    try:
        summary = json.loads(meta_path.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        raise TinycError(f"{meta_path}: is not valid JSON; {rebuild}") from None
    if not isinstance(summary, dict):
        raise TinycError(f"{meta_path}: is not a JSON object; {rebuild}")
    built_for, name, elf_rel = summary.get("board", "host"), summary.get("name"), summary.get("elf")
    if not isinstance(built_for, str) or not isinstance(name, str) or name_problem(name) is not None:
        raise TinycError(f"{meta_path}: its board or name is missing or not valid; {rebuild}")
    board = get_board(board_name or built_for)
    if built_for != board.name:
        raise TinycError(f"{project}: was built for {built_for}, not {board.name}; rebuild with --board {board.name}")
    if board.pyocd_target is None:
        raise TinycError(f"{board.name} is a QEMU machine, not a board to flash; use tinyc run --engine qemu --board {board.name}")
    if elf_rel is None:
        elf_rel = f"build/{name}.elf"
    if not isinstance(elf_rel, str) or not elf_rel.endswith(".elf") or "\0" in elf_rel:
        raise TinycError(f"{meta_path}: its firmware image (elf) is not a path to an .elf file; {rebuild}")
    elf = project / elf_rel
    root = project.resolve()
    if Path(elf_rel).is_absolute() or root not in elf.resolve().parents:
        raise TinycError(f"{meta_path}: names the firmware image {elf_rel!r}, outside the project folder; {rebuild}")
    if not elf.is_file():
        raise TinycError(f"{elf}: no firmware image yet; install gcc-arm-none-eabi and run make -C {project}")
    cmd = [sys.executable, "-m", "pyocd", "flash", "--target", board.pyocd_target]
    if probe:
        cmd += ["--uid", probe]
    return cmd + [str(elf)], board
