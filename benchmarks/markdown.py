"""Rewrite one marked section of BENCHMARKS.md, leaving the others as they are."""

from __future__ import annotations

from pathlib import Path


def write_section(path: Path, begin: str, end: str, section: str) -> None:
    """``section`` starts with ``begin`` and ends with ``end``; it replaces the old
    section between those markers, or is appended when there is none."""
    text = path.read_text() if path.exists() else "# tinyc benchmarks\n"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + section + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(text)
