"""Build and run a generated project with the host C compiler."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from pathlib import Path

from ..errors import TinycError

HOST_CFLAGS = ["-std=c99", "-O2", "-Wall", "-Wextra", "-Werror"]


def host_cc() -> list[str]:
    cc = shlex.split(os.environ.get("CC", "cc"))
    if not cc or shutil.which(cc[0]) is None:
        raise TinycError(
            f"no host C compiler ({cc[0] if cc else 'CC is empty'} not found); install gcc "
            "(Debian: apt-get install gcc) or set CC"
        )
    return cc


def build_host(project: Path, name: str, extra_flags: list[str] | None = None) -> Path:
    """Compile the project's host program; returns the executable's path."""
    sources = [project / "main.c", project / f"{name}.c", *sorted((project / "tinyc" / "src").glob("*.c"))]
    exe = project / f"{name}_host"
    cmd = [*host_cc(), *HOST_CFLAGS, *(extra_flags or []), f"-I{project}", f"-I{project / 'tinyc' / 'include'}",
           "-o", str(exe), *map(str, sources)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        first = next((ln for ln in proc.stderr.splitlines() if "error" in ln), proc.stderr.strip()[:300])
        raise TinycError(f"compiling the generated C failed ({cmd[0]}): {first}")
    return exe


def run_host(exe: Path, samples: bytes, timeout: float = 600) -> bytes:
    """Feed the concatenated input samples to the host program; returns the outputs."""
    work = exe.parent
    (work / "in.bin").write_bytes(samples)
    try:
        proc = subprocess.run([str(exe), str(work / "in.bin"), str(work / "out.bin")],
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise TinycError(f"the generated program did not finish within {timeout:g} s") from None
    if proc.returncode != 0:
        raise TinycError(f"the generated program failed (exit {proc.returncode}): {proc.stderr.strip()[:300]}")
    return (work / "out.bin").read_bytes()
