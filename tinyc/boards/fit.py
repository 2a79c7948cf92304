"""Does a build fit a board? Needs per region, against what the board has, and
what would help when it does not."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from . import Board, Region, all_boards

# What the firmware needs beside the model, before an ELF measures it exactly:
# the startup code, main and the kernels in flash; main's statics in RAM.
CODE_ESTIMATE = 24 * 1024
STATICS_ESTIMATE = 256
ROOMY = 1 << 26  # 64 MB: enough for any model tinyc meets, below the next region on every board


def roomy(board: Board) -> Board:
    """The board with huge regions at the same origins: a link against it succeeds
    whatever the model's size, so a model that does not fit is still measured."""
    f, r = board.main_flash, board.main_ram
    return dataclasses.replace(board, flash=(Region(f.name, f.origin, ROOMY),), ram=(Region(r.name, r.origin, ROOMY),))


@dataclass
class RegionUse:
    region: str  # the board's region name
    kind: str  # "flash" | "ram"
    needed: int
    available: int
    parts: dict[str, int]  # what the need is made of
    measured: bool  # from the linked ELF (else an estimate)

    @property
    def over(self) -> int:
        return max(0, self.needed - self.available)

    @property
    def margin(self) -> int:
        return self.available - self.needed


@dataclass
class Fit:
    board: Board
    regions: list[RegionUse]

    @property
    def fits(self) -> bool:
        return all(r.over == 0 for r in self.regions)

    def describe_failure(self, model: str, peak_note: str = "") -> str:
        parts = []
        for r in self.regions:
            if r.over:
                made = " + ".join(f"{k} {v:,}" for k, v in r.parts.items())
                how = "measured" if r.measured else "estimated"
                parts.append(f"{r.kind} region {r.region} needs {r.needed:,} B ({made}; {how}) of {r.available:,} B, "
                             f"over by {r.over:,} B")
        ram = next((r.needed for r in self.regions if r.kind == "ram"), 0)
        flash = next((r.needed for r in self.regions if r.kind == "flash"), 0)
        others = [b.name for b in all_boards().values()
                  if b.name != self.board.name and b.main_ram.length >= ram and b.main_flash.length >= flash]
        help_ = (f"boards it fits: {', '.join(others)}" if others else "no board tinyc knows has that much memory")
        hint = f"; {peak_note}" if peak_note else ""
        return (f"{model} does not fit {self.board.name}: " + "; ".join(parts) + f". What would help: {help_}, "
                f"or a smaller model (fewer channels or a lower input resolution){hint}")


def check_fit(board: Board, arena: int, weights: int, stack: int, measured: dict | None = None) -> Fit:
    """Flash: code + weights (+ .data's initial values); RAM: arena + stack + statics.
    ``measured`` (from the ELF: flash_bytes, ram_bytes without the stack) replaces
    the estimates."""
    if measured:
        flash = RegionUse(board.main_flash.name, "flash", measured["flash_bytes"], board.main_flash.length,
                          {"text + rodata + data": measured["flash_bytes"]}, True)
        ram_static = measured["ram_bytes"]
        ram = RegionUse(board.main_ram.name, "ram", ram_static + stack, board.main_ram.length,
                        {"data + bss (arena included)": ram_static, "stack": stack}, True)
    else:
        flash = RegionUse(board.main_flash.name, "flash", weights + CODE_ESTIMATE, board.main_flash.length,
                          {"weights": weights, "code": CODE_ESTIMATE}, False)
        ram = RegionUse(board.main_ram.name, "ram", arena + stack + STATICS_ESTIMATE, board.main_ram.length,
                        {"arena": arena, "stack": stack, "statics": STATICS_ESTIMATE}, False)
    return Fit(board, [flash, ram])
