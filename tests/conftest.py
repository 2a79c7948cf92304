"""Shared fixtures: where the team's real models live, and helpers to reach them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_MODELS = REPO.parent / "shared" / "models"
EXAMPLES = REPO / "examples"


def shared_models_index() -> dict:
    index = SHARED_MODELS / "models.json"
    return json.loads(index.read_text()) if index.exists() else {}


needs_shared = pytest.mark.skipif(
    not (SHARED_MODELS / "models.json").exists(),
    reason="../shared/models is not beside this checkout (CI provides it)",
)


@pytest.fixture(scope="session")
def shared_models() -> Path:
    if not (SHARED_MODELS / "models.json").exists():
        pytest.skip("../shared/models is not beside this checkout (CI provides it)")
    return SHARED_MODELS


RUNTIME_C = REPO / "tinyc" / "runtime_c"
HOST_CFLAGS = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-O2"]


@pytest.fixture(scope="session")
def runtime_lib(tmp_path_factory):
    """Every C kernel in tinyc/runtime_c, compiled once with the host compiler into a
    shared library for ctypes (the kernel tests set argtypes on what they call)."""
    import ctypes
    import shutil
    import subprocess

    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no host C compiler")
    so = tmp_path_factory.mktemp("runtime") / "libtinyc_runtime.so"
    sources = sorted((RUNTIME_C / "src").glob("*.c"))
    cmd = [cc, *HOST_CFLAGS, "-shared", "-fPIC", "-I", str(RUNTIME_C / "include"), *map(str, sources), "-o", str(so)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    return ctypes.CDLL(str(so))
