"""Firmware projects: the generated model plus startup code, a linker script from
the board's memory regions, a main, and a Makefile for arm-none-eabi-gcc.

Two kinds of main: ``board`` runs the model once on an embedded sample and checks
the result against the reference's (what ``tinyc build --board B`` ships);
``qemu`` streams samples through semihosting files between the instruction-count
markers (what ``tinyc run --engine qemu`` runs).
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
from .c import TEMPLATES, _c_array_body, runtime_files

FIRMWARE = Path(__file__).parent.parent / "firmware"
STACK_MARGIN = 512  # bytes above the deepest frame chain gcc reports (interrupt frame, rounding)
MIN_STACK = 1024


def _env() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.FileSystemLoader([str(TEMPLATES), str(FIRMWARE)]),
                              undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                              trim_blocks=True, lstrip_blocks=True, autoescape=False)


def project_files(build, board: Board, link_board: Board, mode: str, stack_size: int,
                  sample: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, str | Path]:
    """Relative path -> text (generated) or Path (copied) for a firmware project."""
    env = _env()
    name = build.name
    ctx = {"name": name, "NAME": name.upper(), "version": __version__, "board": board,
           "cpu_flags": " ".join(board.cflags())}
    files: dict[str, str | Path] = {f: t for f, t in build.files.items() if f in (f"{name}.h", f"{name}.c")}
    files.update(runtime_files())
    for src in sorted(FIRMWARE.glob("*.[ch]")):
        files[f"firmware/{src.name}"] = src
    flash, ram = link_board.main_flash, link_board.main_ram
    files["linker.ld"] = env.get_template("linker.ld.j2").render(
        flash_origin=f"0x{flash.origin:08x}", flash_length=flash.length,
        ram_origin=f"0x{ram.origin:08x}", ram_length=ram.length, stack_size=stack_size)
    files["Makefile"] = env.get_template("Makefile_arm.j2").render(ctx)
    if mode == "board":
        sample_in, expected = sample
        files["sample.h"] = env.get_template("sample.h.j2").render(
            ctx, input_body=_c_array_body(sample_in), expected_body=_c_array_body(expected))
        files["main.c"] = env.get_template("main_board.c.j2").render(ctx)
    else:
        files["main.c"] = env.get_template("main_qemu.c.j2").render(ctx)
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
    stack_bytes: int  # the reserve linked in: the deepest frame chain gcc reports + margin
    frames: dict[str, int]  # function -> frame bytes (gcc -fstack-usage)


def _sources(root: Path, name: str) -> list[Path]:
    return [root / "main.c", root / f"{name}.c", *sorted((root / "tinyc" / "src").glob("*.c")),
            *sorted((root / "firmware").glob("*.c"))]


def stack_estimate(frames: dict[str, int], name: str) -> int:
    """Reset_Handler -> main -> NAME_invoke -> one kernel (kernels call nothing but
    inline helpers), or main -> a reporting helper; whichever is deeper."""
    kernels = max((v for f, v in frames.items() if f.startswith("tinyc_") and not f.startswith("tinyc_sh_")),
                  default=0)
    helpers = max((v for f, v in frames.items() if f.startswith("tinyc_sh_") or f in ("fnv1a", "put_uint")),
                  default=0)
    top = frames.get("Reset_Handler", 0) + frames.get("main", 0)
    return top + max(frames.get(f"{name}_invoke", 0) + kernels, helpers)


def build_elf(root: Path, build, board: Board, link_board: Board, mode: str,
              sample=None) -> Firmware:
    """Write the project into ``root`` and link it: once to learn every function's
    frame, then with a stack reserve from the deepest chain."""
    from ..sim import qemu

    name = build.name
    elf = root / "build" / f"{name}.elf"
    (root / "build").mkdir(exist_ok=True)
    stack = MIN_STACK
    frames: dict[str, int] = {}
    for _ in range(2):
        write_files(project_files(build, board, link_board, mode, stack, sample), root)
        qemu.compile_firmware(_sources(root, name), [root, root / "tinyc" / "include", root / "firmware"], elf,
                              board.cflags(), root / "linker.ld", build_dir=root / "build")
        frames = qemu.stack_usage(sorted((root / "build").rglob("*.su")))
        needed = max(MIN_STACK, (stack_estimate(frames, name) + STACK_MARGIN + 7) // 8 * 8)
        if needed == stack:
            break
        stack = needed
    sizes = qemu.elf_sizes(elf)
    return Firmware(elf, sizes["flash"], sizes["ram"] - stack if sizes["ram"] >= stack else sizes["ram"],
                    stack, frames)


def region_overflow(message: str) -> tuple[str, int] | None:
    m = re.search(r"region `?'?([A-Za-z0-9_]+)'? overflowed by (\d+) bytes", message)
    return (m.group(1), int(m.group(2))) if m else None
