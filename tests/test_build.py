"""``tinyc build``: the generated project, what it reports, and that its C is
clean portable C99 that needs nothing from libc on the int8 path."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tinyc import api
from tinyc.codegen.c import c_comment

from .conftest import REPO, SHARED_MODELS, needs_shared, shared_models_index

MODELS = sorted(shared_models_index())
ARM_FLAGS = ["-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16"]
STRICT = ["-std=c99", "-O2", "-Wall", "-Wextra", "-Werror"]
HAS_ARM = shutil.which("arm-none-eabi-gcc") is not None


def tinyc(*args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tinyc.cli", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=600)


# ------------------------------------------------------------ every shared model
@needs_shared
@pytest.mark.parametrize("name", MODELS)
def test_build_reports_arena_and_weights(tmp_path, name):
    out = tmp_path / "proj"
    r = tinyc("build", SHARED_MODELS / shared_models_index()[name]["onnx_int8"], "--board", "host",
              "-o", out, "--json")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["arena_bytes"] > 0 and summary["weights_bytes"] > 0
    assert summary["lower_bound_bytes"] <= summary["arena_bytes"]
    assert f"arena {summary['arena_bytes']:,} bytes" in r.stderr
    assert f"weights {summary['weights_bytes']:,} bytes" in r.stderr
    meta = json.loads((out / "tinyc.json").read_text())  # the summary, plus what tinyc run DIR and rebuilds read
    assert {k: meta[k] for k in summary} == summary
    assert set(meta) - set(summary) == {"interface", "tinyc_project", "files", "products"}
    cname = summary["name"]
    for f in (f"{cname}.h", f"{cname}.c", "main.c", "Makefile", "tinyc/include/tinyc/kernels.h"):
        assert (out / f).is_file(), f
    header = (out / f"{cname}.h").read_text()
    assert f"#define {cname.upper()}_ARENA_SIZE {summary['arena_bytes']}" in header
    print(f"{name}: arena {summary['arena_bytes']:,} B (lower bound {summary['lower_bound_bytes']:,}), "
          f"weights {summary['weights_bytes']:,} B, {summary['kernel_calls']} kernel calls")


def _objects(project: Path, name: str, cc: list[str], flags: list[str], out: Path) -> list[Path]:
    objs = []
    sources = [project / f"{name}.c", *sorted((project / "tinyc" / "src").glob("*.c"))]
    for src in sources:
        obj = out / (src.stem + ".o")
        r = subprocess.run([*cc, *flags, "-ffreestanding", f"-I{project}", f"-I{project / 'tinyc/include'}",
                            "-c", str(src), "-o", str(obj)], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        objs.append(obj)
    return objs


def _symbols(nm: str, obj: Path, undefined: bool) -> set[str]:
    args = [nm, "-u", str(obj)] if undefined else [nm, "--defined-only", str(obj)]
    lines = subprocess.run(args, capture_output=True, text=True, check=True).stdout.splitlines()
    return {ln.split()[-1] for ln in lines if ln.strip()}


def _unresolved(nm: str, objs: list[Path]) -> set[str]:
    defined = set().union(*(_symbols(nm, o, False) for o in objs))
    needed = set().union(*(_symbols(nm, o, True) for o in objs))
    return needed - defined


@needs_shared
@pytest.mark.parametrize("name", ["mlperf_kws_dscnn", "mcunetv2_large", "mcunet_detection", "mnist_lenet_300_100"])
def test_generated_c_is_strict_c99_and_self_contained(tmp_path, name):
    """gcc -std=c99 -Wall -Wextra -Werror, and for Cortex-M4 with arm-none-eabi-gcc:
    the model and runtime objects together leave no symbol undefined, so nothing
    (malloc, free, printf, memcpy, soft-float helpers) comes from libc or libgcc."""
    proj = tmp_path / "proj"
    r = tinyc("build", SHARED_MODELS / shared_models_index()[name]["onnx_int8"], "-o", proj, "--name", "net")
    assert r.returncode == 0, r.stderr
    host = tmp_path / "host"
    host.mkdir()
    assert _unresolved("nm", _objects(proj, "net", ["cc"], STRICT, host)) == set()
    if not HAS_ARM:
        pytest.skip("arm-none-eabi-gcc is not installed (Debian: gcc-arm-none-eabi)")
    arm = tmp_path / "arm"
    arm.mkdir()
    objs = _objects(proj, "net", ["arm-none-eabi-gcc"], ARM_FLAGS + STRICT, arm)
    missing = _unresolved("arm-none-eabi-nm", objs)
    assert missing == set(), f"undefined on Cortex-M4: {sorted(missing)}"
    for o in objs:  # and no single object asks for any of them either
        bad = {s for s in _symbols("arm-none-eabi-nm", o, True)
               if s in ("malloc", "free", "calloc", "realloc", "printf", "memcpy", "memset")
               or s.startswith(("__aeabi_f", "__aeabi_d", "__aeabi_l"))}
        assert not bad, (o.name, bad)


@needs_shared
def test_project_makefile_builds_and_runs(tmp_path):
    """What a user does with the folder: make, then run the host program on bytes."""
    name = "mlperf_kws_dscnn"
    proj = tmp_path / "kws"
    r = tinyc("build", SHARED_MODELS / shared_models_index()[name]["onnx_int8"], "-o", proj, "--name", "kws")
    assert r.returncode == 0, r.stderr
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    subprocess.run(["make", "-s"], cwd=proj, check=True, capture_output=True)
    gold = np.load(SHARED_MODELS / "goldens" / f"{name}.npz")
    (tmp_path / "in.bin").write_bytes(gold["inputs"].tobytes())
    subprocess.run([str(proj / "kws_host"), str(tmp_path / "in.bin"), str(tmp_path / "out.bin")], check=True,
                   capture_output=True)
    out = np.frombuffer((tmp_path / "out.bin").read_bytes(), np.int8).reshape(gold["outputs"].shape)
    assert np.array_equal(out, gold["outputs"])


# --------------------------------------------------------------- project folder
def _qdq_relu_model(names: dict[str, str] | None = None) -> onnx.ModelProto:
    """x(int8) -> DQ -> Conv 1x1 -> Relu -> Q -> y(int8): a tiny QDQ model whose
    tensor and node names can be chosen."""
    n = {"x": "x", "y": "y", "conv": "conv", "w": "w", "b": "b", "dq": "dq", "q": "q", "relu": "relu",
         "xf": "xf", "cf": "cf", "rf": "rf"}
    n.update(names or {})
    rng = np.random.default_rng(1)
    inits = [
        numpy_helper.from_array(np.array(0.05, np.float32), "s_in"),
        numpy_helper.from_array(np.array(3, np.int8), "z_in"),
        numpy_helper.from_array(np.array(0.08, np.float32), "s_out"),
        numpy_helper.from_array(np.array(-128, np.int8), "z_out"),
        numpy_helper.from_array(rng.integers(-127, 128, (4, 3, 1, 1)).astype(np.int8), n["w"] + "_q"),
        numpy_helper.from_array(np.full(4, 0.01, np.float32), "s_w"),
        numpy_helper.from_array(np.zeros(4, np.int8), "z_w"),
    ]
    nodes = [
        helper.make_node("DequantizeLinear", ["x_int", "s_in", "z_in"], [n["xf"]], name=n["dq"]),
        helper.make_node("DequantizeLinear", [n["w"] + "_q", "s_w", "z_w"], [n["w"]], name="dqw", axis=0),
        helper.make_node("Conv", [n["xf"], n["w"]], [n["cf"]], name=n["conv"]),
        helper.make_node("Relu", [n["cf"]], [n["rf"]], name=n["relu"]),
        helper.make_node("QuantizeLinear", [n["rf"], "s_out", "z_out"], ["y_int"], name=n["q"]),
    ]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x_int", TensorProto.INT8, [1, 3, 4, 4])],
                          [helper.make_tensor_value_info("y_int", TensorProto.INT8, [1, 4, 4, 4])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


HOSTILE = {
    "conv": "evil */ int pwned = 1; /* ",
    "relu": 'quote" \\\nnewline\n#include <stdlib.h>\n',
    "cf": "#include \"/etc/passwd\"",
    "rf": "??/ trigraph ??= \\",
    "xf": "*/",
    "w": "w\u00e9ight\u202e",
}


def test_hostile_names_never_reach_the_c_unescaped(tmp_path):
    model = tmp_path / "m.onnx"
    onnx.save(_qdq_relu_model(HOSTILE), model)
    proj = tmp_path / "proj"
    r = tinyc("build", model, "-o", proj, "--name", "m")
    assert r.returncode == 0, r.stderr
    text = (proj / "m.c").read_text() + (proj / "m.h").read_text()
    assert "pwned" not in text.replace("evil * / int pwned = 1; / * ", "")
    for line in text.splitlines():
        if line.lstrip().startswith("#include"):
            assert line in ('#include "m.h"', '#include "tinyc/kernels.h"', "#include <stdint.h>"), line
    # the code compiles strictly and computes what the reference computes
    x = np.random.default_rng(2).integers(-128, 128, (5, 1, 3, 4, 4)).astype(np.int8)
    np.save(tmp_path / "x.npy", x)
    outs = {}
    for engine in ("c", "ref"):
        r = tinyc("run", model, "--engine", engine, "--input", tmp_path / "x.npy", "-o", tmp_path / f"{engine}.npy")
        assert r.returncode == 0, r.stderr
        outs[engine] = np.load(tmp_path / f"{engine}.npy")
    assert np.array_equal(outs["c"], outs["ref"])
    # and the int8 result is the float meaning requantized (within one step)
    g = api.load(model)
    ref_float = api.run_reference(g, api.to_batch(g, {g.inputs[0]: x}))[g.outputs[0]]
    assert np.abs(outs["c"].astype(int) - ref_float.astype(int)).max() <= 1


@pytest.mark.parametrize("text", ["a */ b", "/* x", "line\nbreak", "tail \\", "??/", "\u202e", "ok"])
def test_c_comment_is_inert(text):
    c = c_comment(text)
    assert "*/" not in c and "/*" not in c and "\n" not in c and "??" not in c
    assert not c.endswith("\\") and c.isascii() and c.isprintable()


def test_build_replaces_its_own_folder_only(tmp_path):
    model = tmp_path / "m.onnx"
    onnx.save(_qdq_relu_model(), model)
    proj = tmp_path / "proj"
    assert tinyc("build", model, "-o", proj).returncode == 0
    (proj / "notes.txt").write_text("the user's")
    r = tinyc("build", model, "-o", proj, "--name", "again")
    assert r.returncode == 0, r.stderr
    # tinyc's files of the first build are gone, the user's file stays
    assert (proj / "again.c").exists() and not (proj / "m.c").exists()
    assert (proj / "notes.txt").read_text() == "the user's"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".proj")], "temporary folders left behind"


def test_readme_build_line_example(tmp_path):
    """The README's example: the bundled float model, calibrated, built for the host."""
    proj = tmp_path / "digits"
    r = tinyc("build", REPO / "examples" / "digits_cnn.onnx", "--calib", REPO / "examples" / "digits_samples.npz",
              "-o", proj, "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["name"] == "digits_cnn"
    assert (proj / "digits_cnn.c").is_file()
