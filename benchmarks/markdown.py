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


def run(doc: str, measure, table, begin: str, end: str) -> None:
    """The command line every benchmark script shares: measure the shared models,
    rewrite its section of BENCHMARKS.md, optionally keep the rows as JSON."""
    import argparse
    import json
    import sys

    repo = Path(__file__).resolve().parent.parent
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--shared", type=Path, default=repo.parent / "shared" / "models")
    ap.add_argument("--out", type=Path, default=repo / "BENCHMARKS.md")
    ap.add_argument("--json", type=Path, help="also write the measured rows here")
    ap.add_argument("--reuse", type=Path, help="rows an earlier --json wrote: measurements they hold are not redone "
                                               "(benchmarks that support it)")
    args = ap.parse_args()
    rows = measure(args.shared, reuse=json.loads(args.reuse.read_text())) if args.reuse else measure(args.shared)
    write_section(args.out, begin, end, table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)
