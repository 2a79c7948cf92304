"""tinyc report: the numbers are the build's, the JSON keys are stable, --board all
splits boards as their memory says, and the HTML page renders in a browser."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from .conftest import REPO, SHARED_MODELS, needs_shared

HAS_ARM = shutil.which("arm-none-eabi-gcc") is not None
KWS = SHARED_MODELS / "mlperf_tiny" / "kws_dscnn_int8.onnx"
V2_LARGE = SHARED_MODELS / "mcunet" / "mcunetv2_large.onnx"
VWW1 = SHARED_MODELS / "mcunet" / "mcunet_vww1.onnx"

TOP_KEYS = {"tinyc_report_version", "model", "name", "board", "totals", "verdict", "layers", "timeline", "what_if",
            "patch"}
TOTALS_KEYS = {"macs", "arena_bytes", "lower_bound_bytes", "lower_bound_no_inplace_bytes", "weights_bytes",
               "code_bytes", "flash_bytes", "stack_bytes", "statics_bytes", "ram_bytes", "measured",
               "plan_strategy", "plan_order", "in_place_steps"}
REGION_KEYS = {"kind", "region", "needed", "available", "margin_bytes", "margin_percent"}
LAYER_KEYS = {"step", "node", "op", "kernel", "input_shapes", "output_shape", "macs", "weight_bytes", "live_bytes",
              "arena_high_water", "scratch_bytes", "in_place"}
BUFFER_KEYS = {"name", "offset", "size", "first", "last", "pieces"}
WHAT_IF_KEYS = {"strategies", "arena_without_in_place_bytes", "in_place_saving_bytes", "peak_steps", "peak_layers",
                "bytes_to_fit", "patch_plans"}
BOARD_ROW_KEYS = {"board", "fits", "ram_needed", "ram_available", "ram_margin_bytes", "flash_needed",
                  "flash_available", "flash_margin_bytes", "measured"}


def tinyc(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "tinyc.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=900, cwd=cwd)


def report_json(*args) -> dict:
    r = tinyc("report", *args, "--format", "json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@needs_shared
def test_json_keys_are_pinned():
    rep = report_json(KWS, "--board", "stm32f746")
    assert set(rep) == TOP_KEYS and rep["tinyc_report_version"] == 1
    assert set(rep["totals"]) == TOTALS_KEYS
    assert set(rep["verdict"]) == {"fits", "regions"}
    assert [r["kind"] for r in rep["verdict"]["regions"]] == ["flash", "ram"]
    assert all(set(r) == REGION_KEYS for r in rep["verdict"]["regions"])
    assert rep["layers"] and all(set(la) == LAYER_KEYS for la in rep["layers"])
    assert set(rep["timeline"]) == {"live_bytes", "buffers"}
    assert all(set(b) == BUFFER_KEYS for b in rep["timeline"]["buffers"])
    assert set(rep["what_if"]) == WHAT_IF_KEYS
    assert rep["board"]["name"] == "stm32f746"
    everything = report_json(KWS, "--board", "all")
    assert set(everything) == TOP_KEYS | {"boards"} and everything["board"] is None
    assert all(set(row) == BOARD_ROW_KEYS for row in everything["boards"])


@needs_shared
def test_report_numbers_are_the_builds(tmp_path):
    rep = report_json(KWS, "--board", "stm32f746")
    r = tinyc("build", KWS, "--board", "stm32f746", "-o", tmp_path / "kws", "--json")
    assert r.returncode == 0, r.stderr
    build = json.loads(r.stdout)
    t = rep["totals"]
    for key in ("arena_bytes", "lower_bound_bytes", "lower_bound_no_inplace_bytes", "weights_bytes", "macs",
                "plan_strategy", "plan_order", "in_place_steps"):
        assert t[key] == build[key], key
    assert sum(la["macs"] for la in rep["layers"]) == t["macs"]
    assert sum(la["weight_bytes"] for la in rep["layers"]) == t["weights_bytes"]
    assert max(rep["timeline"]["live_bytes"]) == t["lower_bound_bytes"]
    assert max(la["arena_high_water"] for la in rep["layers"]) <= t["arena_bytes"]
    assert rep["what_if"]["strategies"][f"{t['plan_order']}/{t['plan_strategy']}"] == t["arena_bytes"]
    if HAS_ARM:  # flash and RAM measured from the ELF, equal to the build's
        assert t["measured"] is True
        assert t["flash_bytes"] == build["flash_bytes"] and t["ram_bytes"] == build["ram_bytes"]
        assert t["stack_bytes"] == build["stack_bytes"]
        ram = rep["verdict"]["regions"][1]
        assert ram["margin_bytes"] == build["ram_free_bytes"]
    print(f"kws on stm32f746: arena {t['arena_bytes']:,}, RAM {t['ram_bytes']:,}, flash {t['flash_bytes']:,} "
          f"(measured: {t['measured']})")


@needs_shared
def test_board_all_splits_as_memory_says():
    kws = {row["board"]: row for row in report_json(KWS, "--board", "all")["boards"]}
    large = {row["board"]: row for row in report_json(V2_LARGE, "--board", "all", "--patch", "off")["boards"]}
    patched = {row["board"]: row for row in report_json(V2_LARGE, "--board", "all")["boards"]}
    # kws (16 KB arena) fits every board but the micro:bit (16 KB of SRAM in all)
    assert {b for b, r in kws.items() if not r["fits"]} == {"microbit"}
    assert {b for b, r in large.items() if r["fits"]} == {"mps2-an385", "mps2-an386", "mps2-an500"}
    # by patches (the default) its 1.4 MB arena falls to 0.32 MB: the 2 MB-flash boards with 512 KB+ of SRAM
    assert {b for b, r in patched.items() if r["fits"]} == {"mps2-an385", "mps2-an386", "mps2-an500", "stm32h743",
                                                             "stm32l4r5"}
    for rows in (kws, large, patched):
        for row in rows.values():
            assert row["fits"] == (row["ram_margin_bytes"] >= 0 and row["flash_margin_bytes"] >= 0)
    print("mcunetv2_large RAM margins: " + ", ".join(f"{b} {r['ram_margin_bytes']:,}" for b, r in large.items()))


@needs_shared
def test_does_not_fit_verdict_says_what_would_help():
    rep = report_json(V2_LARGE, "--board", "stm32f412")
    assert rep["verdict"]["fits"] is False
    ram = rep["verdict"]["regions"][1]
    assert ram["margin_bytes"] < 0 and rep["what_if"]["bytes_to_fit"] == -ram["margin_bytes"]
    assert rep["what_if"]["peak_layers"] and rep["what_if"]["in_place_saving_bytes"] > 0
    assert len(rep["what_if"]["strategies"]) >= 5


@needs_shared
def test_markdown_writes_the_plot_beside(tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "kws.md"
    r = tinyc("report", KWS, "--board", "nrf52840", "--format", "md", "-o", out)
    assert r.returncode == 0, r.stderr
    text = out.read_text()
    assert "kws.png" in text and (tmp_path / "kws.png").read_bytes().startswith(b"\x89PNG")
    assert "nrf52840" in text


def test_report_errors(tmp_path):
    model = REPO / "examples" / "digits_cnn.onnx"
    calib = REPO / "examples" / "digits_samples.npz"
    for args, word in [(["--board", "esp32"], "unknown board"),
                       (["--board", "stm32", "--format", "md"], "-o FILE.md")]:
        r = tinyc("report", model, "--calib", calib, *args)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and word in r.stderr, r.stderr
    assert not list(tmp_path.iterdir())


@needs_shared
def test_html_report_of_mcunet_vww1_renders_in_chromium(tmp_path):
    """The acceptance page: self-contained, loads with no errors in headless
    Chromium, and its screenshot shows the plot and the table."""
    pytest.importorskip("matplotlib")
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed (Debian: apt-get install --no-install-recommends chromium)")
    page = tmp_path / "vww1.html"
    r = tinyc("report", VWW1, "--board", "stm32f746", "--format", "html", "-o", page)
    assert r.returncode == 0, r.stderr
    html = page.read_text()
    assert "data:image/png;base64," in html and "<table" in html
    assert "http://" not in html and "https://" not in html
    from .test_report_render import load_in_chromium

    dom, errors, shot = load_in_chromium(browser, page, tmp_path / "vww1.png")
    assert not errors, errors
    assert "<img" in dom and "<table" in dom
    assert shot.stat().st_size > 10_000
