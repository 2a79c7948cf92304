"""Boards: one JSON file per board in this folder (they ship inside the package).

A board names its core (``-mcpu``), FPU (``-mfpu``, or "none"), DSP extension,
clock, memory regions (``flash`` and ``ram``, each a list of name / origin /
length; the first flash region and the largest RAM region hold the firmware),
the QEMU machine that stands in for its core, its pyOCD target name, and
optionally ``storage``: the flash sectors and the port (firmware/storage/) that
training firmware persists its state through.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import TinycError

HERE = Path(__file__).parent


@dataclass(frozen=True)
class Region:
    name: str
    origin: int
    length: int
    notes: str = ""


@dataclass(frozen=True)
class Board:
    name: str
    description: str
    core: str
    fpu: str
    dsp: bool
    clock_hz: int
    qemu: str | None
    pyocd_target: str | None
    flash: tuple[Region, ...]
    ram: tuple[Region, ...]
    aliases: tuple[str, ...] = field(default_factory=tuple)
    notes: str = ""
    # where training firmware persists what it learned: {"port": "stm32f7" | "stm32f4",
    # "sectors": [[count, bytes], ...] of the main flash, in address order}; None: no port
    storage: dict | None = None

    @property
    def main_flash(self) -> Region:
        return self.flash[0]

    @property
    def main_ram(self) -> Region:
        """The RAM region that holds the arena, data, bss and stack: the largest."""
        return max(self.ram, key=lambda r: r.length)

    @property
    def sram_bytes(self) -> int:
        return sum(r.length for r in self.ram)

    @property
    def flash_bytes(self) -> int:
        return sum(r.length for r in self.flash)

    @property
    def mve(self) -> bool:
        """The core has Helium, the M-profile Vector Extension (kernels in mve.c)."""
        return self.core in ("cortex-m55", "cortex-m85")

    @property
    def float_abi(self) -> str:
        return "soft" if self.fpu == "none" else "hard"

    def cflags(self) -> list[str]:
        """arm-none-eabi-gcc flags for the core."""
        flags = [f"-mcpu={self.core}", "-mthumb", f"-mfloat-abi={self.float_abi}"]
        if self.fpu != "none":
            flags.append(f"-mfpu={self.fpu}")
        return flags


def _region(d: dict) -> Region:
    return Region(d["name"], int(d["origin"], 0), int(d["length"]), d.get("notes", ""))


def _load(path: Path) -> Board:
    d = json.loads(path.read_text())
    return Board(
        name=d["name"], description=d["description"], core=d["core"], fpu=d["fpu"], dsp=bool(d["dsp"]),
        clock_hz=int(d["clock_hz"]), qemu=d.get("qemu"), pyocd_target=d.get("pyocd_target"),
        flash=tuple(_region(r) for r in d["flash"]), ram=tuple(_region(r) for r in d["ram"]),
        aliases=tuple(d.get("aliases", ())), notes=d.get("notes", ""), storage=d.get("storage"),
    )


def all_boards() -> dict[str, Board]:
    return {b.name: b for b in (_load(p) for p in sorted(HERE.glob("*.json")))}


def get_board(name: str) -> Board:
    boards = all_boards()
    if name in boards:
        return boards[name]
    for b in boards.values():
        if name in b.aliases:
            return b
    known = ", ".join(sorted(boards)) + ", host"
    raise TinycError(f"--board {name!r}: unknown board; known boards: {known} (see 'tinyc boards')")
