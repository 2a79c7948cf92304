"""Firmware projects: the generated model plus startup code, a linker script from
the board's memory regions, a main, and a Makefile for arm-none-eabi-gcc.

Three kinds of main: ``board`` is the self-test harness ``tinyc build --board B``
ships (runs the model once on a sample and checks the output's checksum against
the one tinyc's reference computed); ``qemu`` streams samples through semihosting
files between the instruction-count markers (``tinyc run --engine qemu``);
``model`` only calls NAME_invoke: the model, the runtime and the startup code and
nothing else, which is what fit verdicts measure.

Objects go where the project's Makefile puts them (build/<source path>.o), with
the same flags, so ``make`` after tinyc has linked finds nothing to do.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import jinja2
import numpy as np

from .. import __version__
from ..boards import Board
from ..errors import TinycError
from .c import TEMPLATES, _c_array_body, runtime_files

FIRMWARE = Path(__file__).parent.parent / "firmware"
# bytes above the deepest chain of frames in gcc's call graph: an exception frame
# (up to 104 bytes with the FPU state), the naked assembly loops' register pushes
# (36-40 bytes, which gcc counts as 0), rounding
STACK_MARGIN = 512
MIN_STACK = 1024
SAMPLE_SEED = 20261206  # the self-test's generated input: see generated_input


def generated_input(size: int) -> np.ndarray:
    """The input the self-test harness makes when no sample is embedded: bytes of a
    32-bit LCG (Numerical Recipes' constants), the top byte of each state, exactly
    as main_board.c.j2 computes them in C. Costs no flash."""
    out = np.empty(size, np.int8)
    state = SAMPLE_SEED
    for i in range(size):
        state = (state * 1664525 + 1013904223) & 0xFFFFFFFF
        out[i] = (state >> 24) - 256 if state >> 31 else state >> 24
    return out


def fnv1a(data: np.ndarray) -> int:
    """FNV-1a over bytes: the checksum the self-test firmware prints."""
    h = 2166136261
    for b in np.asarray(data).astype(np.uint8).tolist():
        h = ((h ^ b) * 16777619) & 0xFFFFFFFF
    return h


@dataclass
class SelfTest:
    """What the board firmware's self-test runs and expects."""

    embedded: np.ndarray | None  # int8 input bytes kept in flash (from --sample); None: generated_input
    expected: np.ndarray  # the int8 output bytes tinyc's reference computes for that input

    @property
    def checksum(self) -> int:
        return fnv1a(self.expected)


def _env() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.FileSystemLoader([str(TEMPLATES), str(FIRMWARE)]),
                              undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                              trim_blocks=True, lstrip_blocks=True, autoescape=False)


def linker_script(link_board: Board, stack_size: int, persist: tuple[int, int] | None = None) -> str:
    """The board's linker script; ``persist`` (origin, length): flash at the end of
    the main flash kept out of FLASH for persisted training state."""
    flash, ram = link_board.main_flash, link_board.main_ram
    flash_length = flash.length if persist is None else persist[0] - flash.origin
    return _env().get_template("linker.ld.j2").render(
        flash_origin=f"0x{flash.origin:08x}", flash_length=flash_length,
        ram_origin=f"0x{ram.origin:08x}", ram_length=ram.length, stack_size=stack_size,
        persist_origin=persist[0] if persist else 0, persist_length=persist[1] if persist else 0)


def main_source(build, board: Board, mode: str, self_test: SelfTest | None = None) -> dict[str, str]:
    """main.c (and sample.h for the self-test) for one kind of main."""
    env = _env()
    ctx = {"name": build.name, "NAME": build.name.upper(), "version": __version__, "board": board}
    if mode == "board":
        embedded = self_test.embedded is not None
        files = {"sample.h": env.get_template("sample.h.j2").render(
            ctx, embedded=embedded, input_body=_c_array_body(self_test.embedded) if embedded else "",
            seed=SAMPLE_SEED, checksum=f"0x{self_test.checksum:08x}u")}
        files["main.c"] = env.get_template("main_board.c.j2").render(ctx)
        return files
    return {"main.c": env.get_template(f"main_{mode}.c.j2").render(ctx)}


def project_files(build, board: Board, link_board: Board, mode: str, stack_size: int | None,
                  self_test: SelfTest | None = None) -> dict[str, str | Path]:
    """Relative path -> text (generated) or Path (copied) for a firmware project;
    without ``stack_size`` no linker script (the link writes it)."""
    files = common_files(build, board, mode)
    if stack_size is not None:
        files["linker.ld"] = linker_script(link_board, stack_size)
    files.update(main_source(build, board, mode, self_test))
    return files


def common_files(build, board: Board, mode: str, defines: tuple[str, ...] = ()) -> dict[str, str | Path]:
    """What every firmware project holds: the model's C, the runtime, firmware/
    (startup, semihosting, markers) and the Makefile (``defines``: -D flags)."""
    from ..sim.qemu import ARM_CFLAGS, MODEL_CFLAGS

    name = build.name
    ctx = {"name": name, "NAME": name.upper(), "version": __version__, "board": board,
           "cpu_flags": " ".join([*board.cflags(), *defines]), "cflags": " ".join(ARM_CFLAGS),
           "model_cflags": " ".join(MODEL_CFLAGS), "mode": mode}
    files: dict[str, str | Path] = {f: t for f, t in build.files.items()
                                    if f in (f"{name}.h", f"{name}.c", "tinyc_config.h")}
    files.update(runtime_files())
    for src in sorted(FIRMWARE.glob("*.[ch]")):
        files[f"firmware/{src.name}"] = src
    files["Makefile"] = _env().get_template("Makefile_arm.j2").render(ctx)
    return files


def write_files(files: dict[str, str | Path], root: Path) -> None:
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, Path):
            shutil.copyfile(content, path)
        else:
            path.write_text(content)


@dataclass
class Firmware:
    elf: Path
    flash_bytes: int
    ram_bytes: int  # .data + .bss, the arena included; the stack comes on top
    stack_bytes: int  # the reserve linked in: the deepest chain of frames in the call graph + margin
    stack_chain: list[str]  # that chain, Reset_Handler first
    objects: list[Path]  # what was linked, main's object first


def _sources(root: Path, name: str) -> list[Path]:
    """The project's C sources relative to root, in the Makefile's order."""
    return [Path("main.c"), Path(f"{name}.c"),
            *(p.relative_to(root) for p in sorted((root / "tinyc" / "src").glob("*.c"))),
            *(p.relative_to(root) for p in sorted((root / "firmware").glob("*.c")))]


def compile_jobs(root: Path, name: str, sources: list[Path], objects: list[Path]) -> list[tuple]:
    """qemu.compile_objects' jobs for a project's sources: the model's own C with
    MODEL_CFLAGS, as the Makefile compiles it."""
    from ..sim.qemu import MODEL_CFLAGS

    return [(root / src, obj, MODEL_CFLAGS if src == Path(f"{name}.c") else ()) for src, obj in zip(sources, objects)]


def stack_reserve(objects: list[Path], indirect_targets: tuple[str, ...] = ()) -> tuple[int, list[str]]:
    """The stack to link in and the chain that sets it: the deepest chain of frames
    the static call graph of ``objects`` allows from Reset_Handler (gcc
    -fcallgraph-info=su beside each object; only the functions the firmware can
    call count), plus STACK_MARGIN. ``indirect_targets``: the functions a call
    through a pointer may reach (the training firmware's storage port)."""
    from ..sim import qemu

    est = qemu.max_stack_estimate([o.with_suffix(".ci") for o in objects], "Reset_Handler", indirect_targets)
    if est.recursive or est.indirect:
        why = "recursion" if est.recursive else "a call through a pointer"
        raise TinycError(f"the firmware's call graph has {why} ({' -> '.join(est.chain)}): its stack has no bound")
    return max(MIN_STACK, (est.bytes + STACK_MARGIN + 7) // 8 * 8), est.chain


def _link(root: Path, elf: Path, objects: list[Path], name: str, board: Board, link_board: Board) -> Firmware:
    from ..sim import qemu

    stack, chain = stack_reserve(objects)
    (root / "linker.ld").write_text(linker_script(link_board, stack))
    qemu.link_objects(objects, elf, board.cflags(), root / "linker.ld")
    sizes = qemu.elf_sizes(elf)
    return Firmware(elf, sizes["flash"], sizes["ram"] - stack if sizes["ram"] >= stack else sizes["ram"],
                    stack, chain, objects)


def compile_project(root: Path, build, board: Board, mode: str, self_test: SelfTest | None = None
                    ) -> list[Path]:
    """Write the project into ``root`` (its linker script comes with the link) and
    compile every source once, objects where the Makefile puts them (gcc's call
    graph, NAME.ci, beside each). Returns the objects, main's first."""
    from ..sim import qemu

    write_files(project_files(build, board, board, mode, None, self_test), root)
    sources = _sources(root, build.name)
    objects = [root / "build" / src.with_suffix(".o") for src in sources]
    qemu.compile_objects(compile_jobs(root, build.name, sources, objects),
                         [root, root / "tinyc" / "include", root / "firmware"], board.cflags())
    return objects


def link_project(root: Path, build, objects: list[Path], board: Board, link_board: Board) -> Firmware:
    """Size the stack from the call graph, write root/linker.ld for link_board's
    regions and link root/build/NAME.elf."""
    return _link(root, root / "build" / f"{build.name}.elf", objects, build.name, board, link_board)


def build_elf(root: Path, build, board: Board, link_board: Board, mode: str,
              self_test: SelfTest | None = None) -> Firmware:
    """compile_project, then link_project."""
    objects = compile_project(root, build, board, mode, self_test)
    return link_project(root, build, objects, board, link_board)


def link_model_only(project: Path, objects: list[Path], scratch: Path, build, board: Board,
                    link_board: Board) -> Firmware:
    """The objects compile_project made in ``project``, linked (in ``scratch``)
    with the ``model`` main in place of the project's: what the model, the runtime
    and the startup code need, without the project's harness."""
    from ..sim import qemu

    name = build.name
    main = scratch / "main.c"
    main.write_text(main_source(build, board, "model")["main.c"])
    obj = scratch / "main.o"
    qemu.compile_objects([(main, obj)], [project, project / "tinyc" / "include", project / "firmware"],
                         board.cflags())
    return _link(scratch, scratch / f"{name}.elf", [obj, *objects[1:]], name, board, link_board)


def region_overflow(message: str) -> tuple[str, int] | None:
    m = re.search(r"region `?'?([A-Za-z0-9_]+)'? overflowed by (\d+) bytes", message)
    return (m.group(1), int(m.group(2))) if m else None
