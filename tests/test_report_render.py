"""The report renderers: the timeline PNG, the self-contained HTML page, the Markdown.

The report dict is built by hand here, following docs/report.md, so these tests do
not depend on how tinyc computes it. A headless Chromium (when installed) loads the
HTML page and takes a screenshot to check that it renders without errors.
"""

import base64
import copy
import io
import re
import shutil
import subprocess

import pytest

pytest.importorskip("matplotlib")

from tinyc.report.plot import SIZE_PX, buffer_bytes, timeline_png  # noqa: E402
from tinyc.report.render import render_html, render_markdown  # noqa: E402

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
HOSTILE = "<script>alert(1)</script>"

# A small int8 CNN: (node, op, kernel, input shapes, output shape, macs, weight bytes, scratch, in place)
_LAYERS = [
    ("conv1", "Conv", "conv2d_s8", [[1, 3, 32, 32]], [1, 16, 32, 32], 442368, 496, 0, False),
    ("relu1", "Relu", "relu_s8", [[1, 16, 32, 32]], [1, 16, 32, 32], 0, 0, 0, True),
    ("dw1", "Conv", "depthwise_conv2d_s8", [[1, 16, 32, 32]], [1, 16, 32, 32], 147456, 208, 1156, True),
    ("pw1", "Conv", "conv2d_1x1_s8", [[1, 16, 32, 32]], [1, 32, 32, 32], 524288, 640, 0, False),
    ("pool1", "MaxPool", "maxpool_s8", [[1, 32, 32, 32]], [1, 32, 16, 16], 0, 0, 0, False),
    ("dw2", "Conv", "depthwise_conv2d_s8", [[1, 32, 16, 16]], [1, 32, 16, 16], 73728, 416, 324, True),
    ("pw2", "Conv", "conv2d_1x1_s8", [[1, 32, 16, 16]], [1, 64, 16, 16], 524288, 2304, 0, False),
    ("branch_a", "Conv", "conv2d_1x1_s8", [[1, 64, 16, 16]], [1, 32, 16, 16], 524288, 2176, 0, False),
    ("branch_b", "Conv", "conv2d_s8", [[1, 64, 16, 16]], [1, 32, 16, 16], 4718592, 18560, 0, False),
    ("add1", "Add", "add_s8", [[1, 32, 16, 16], [1, 32, 16, 16]], [1, 32, 16, 16], 0, 0, 0, True),
    ("relu2", "Relu", "relu_s8", [[1, 32, 16, 16]], [1, 32, 16, 16], 0, 0, 0, True),
    ("pool2", "MaxPool", "maxpool_s8", [[1, 32, 16, 16]], [1, 32, 8, 8], 0, 0, 0, False),
    ("conv3", "Conv", "conv2d_s8", [[1, 32, 8, 8]], [1, 64, 8, 8], 1179648, 18688, 0, False),
    ("relu3", "Relu", "relu_s8", [[1, 64, 8, 8]], [1, 64, 8, 8], 0, 0, 0, True),
    ("gap", "GlobalAveragePool", "avgpool_s8", [[1, 64, 8, 8]], [1, 64, 1, 1], 4096, 0, 0, False),
    ("flatten", "Flatten", "view", [[1, 64, 1, 1]], [1, 64], 0, 0, 0, True),
    ("fc1", "Gemm", "fully_connected_s8", [[1, 64]], [1, 32], 2048, 2176, 0, False),
    ("relu4", "Relu", "relu_s8", [[1, 32]], [1, 32], 0, 0, 0, True),
    (HOSTILE, "Gemm", "fully_connected_s8", [[1, 32]], [1, 10], 320, 360, 0, False),
    ("softmax", "Softmax", "softmax_s8", [[1, 10]], [1, 10], 0, 0, 40, False),
]

# Buffers: (name, offset, pieces [[first, last, size]]); steps 0..21 (20 layers)
_BUFFERS = [
    ("input", 0, [[0, 1, 3072]]),
    ("conv1_out", 16384, [[1, 4, 16384]]),
    ("dw1_scratch", 3072, [[3, 3, 1156]]),
    ("pw1_out", 32768, [[4, 5, 32768]]),
    ("pool1_out", 0, [[5, 7, 8192]]),
    ("dw2_scratch", 8192, [[6, 6, 324]]),
    ("pw2_out", 8192, [[7, 9, 16384]]),
    ("branch_a_out", 24576, [[8, 12, 8192]]),
    ("branch_b_out", 0, [[9, 10, 8192]]),
    ("pool2_out", 8192, [[12, 13, 2048]]),
    ("conv3_out", 10240, [[13, 15, 4096], [16, 17, 64]]),  # the view shrinks it
    ("fc1_out", 0, [[17, 19, 32]]),
    (HOSTILE + "_out", 64, [[19, 20, 10]]),
    ("output", 128, [[20, 21, 10]]),
]


def make_report(hostile: bool = True) -> dict:
    n = len(_LAYERS)
    buffers = []
    for name, offset, pieces in _BUFFERS:
        buffers.append({"name": name, "offset": offset, "size": max(p[2] for p in pieces),
                        "first": pieces[0][0], "last": pieces[-1][1], "pieces": [list(p) for p in pieces]})
    live = [0] * (n + 2)
    for b in buffers:
        for first, last, size in b["pieces"]:
            for s in range(first, last + 1):
                live[s] += size
    arena = max(b["offset"] + b["size"] for b in buffers)
    peak = max(live)
    peak_steps = [s for s, v in enumerate(live) if v == peak]
    layers = []
    high = 0
    for step, (node, op, kernel, ins, out, macs, wb, scratch, inplace) in enumerate(_LAYERS, start=1):
        high = max(high, max((b["offset"] + b["size"] for b in buffers if b["first"] <= step), default=0))
        layers.append({"step": step, "node": node if hostile or node != HOSTILE else "fc2", "op": op,
                       "kernel": kernel, "input_shapes": ins, "output_shape": out, "macs": macs,
                       "weight_bytes": wb, "live_bytes": live[step], "arena_high_water": high,
                       "scratch_bytes": scratch, "in_place": inplace})
    weights = sum(layer["weight_bytes"] for layer in layers)
    stack, statics, code = 1024, 2400, 14800
    board = {"name": "tiny-m0", "description": "A made-up Cortex-M0+ board with 48 KB of SRAM", "core": "cortex-m0plus",
             "fpu": None, "dsp": False, "clock_hz": 48000000, "qemu": None, "pyocd_target": "tiny_m0",
             "aliases": ["tiny"], "sram_bytes": 49152, "largest_sram_bytes": 40960, "flash_bytes": 262144,
             "ram": [{"name": "RAM", "origin": "0x20000000", "length": 40960},
                     {"name": "RAM2", "origin": "0x20010000", "length": 8192}],
             "flash": [{"name": "FLASH", "origin": "0x00000000", "length": 262144}]}
    ram = arena + statics + stack
    flash = weights + code
    regions = [
        {"kind": "flash", "region": "FLASH", "needed": flash, "available": 262144, "margin_bytes": 262144 - flash,
         "margin_percent": round(100 * (262144 - flash) / 262144, 1)},
        {"kind": "ram", "region": "RAM", "needed": ram, "available": 40960, "margin_bytes": 40960 - ram,
         "margin_percent": round(100 * (40960 - ram) / 40960, 1)},
    ]
    return {
        "tinyc_report_version": 1,
        "model": "models/" + ("evil_" + HOSTILE if hostile else "cnn") + ".onnx",
        "name": "cnn",
        "board": board,
        "totals": {"macs": sum(layer["macs"] for layer in layers), "arena_bytes": arena, "lower_bound_bytes": peak,
                   "lower_bound_no_inplace_bytes": peak + 12288, "weights_bytes": weights, "code_bytes": code,
                   "flash_bytes": flash, "stack_bytes": stack, "statics_bytes": statics, "ram_bytes": ram,
                   "measured": False, "plan_strategy": "best-fit", "plan_order": "memory-greedy",
                   "in_place_steps": sum(layer["in_place"] for layer in layers)},
        "verdict": {"fits": all(r["margin_bytes"] >= 0 for r in regions), "regions": regions},
        "layers": layers,
        "timeline": {"live_bytes": live, "buffers": buffers},
        "what_if": {"strategies": {"memory-greedy/best-fit": arena, "memory-greedy/first-fit": arena + 4096,
                                   "topological/best-fit": arena + 8192, "topological/size-desc": arena + 16384},
                    "arena_without_in_place_bytes": arena + 12288, "in_place_saving_bytes": 12288,
                    "peak_steps": peak_steps, "peak_layers": [layers[s - 1]["node"] for s in peak_steps if 1 <= s <= n],
                    "bytes_to_fit": max(0, ram - 40960)},
        "boards": [
            {"board": "tiny-m0", "fits": False, "ram_needed": ram, "ram_available": 40960,
             "ram_margin_bytes": 40960 - ram, "flash_needed": flash, "flash_available": 262144,
             "flash_margin_bytes": 262144 - flash, "measured": False},
            {"board": "stm32f746", "fits": True, "ram_needed": ram, "ram_available": 327680,
             "ram_margin_bytes": 327680 - ram, "flash_needed": flash, "flash_available": 1048576,
             "flash_margin_bytes": 1048576 - flash, "measured": False},
        ],
    }


@pytest.fixture(scope="module")
def report():
    return make_report()


@pytest.fixture(scope="module")
def png(report):
    return timeline_png(report)


@pytest.fixture(scope="module")
def html(report, png):
    return render_html(report, png=png)


def test_fixture_follows_the_spec(report):
    assert not report["verdict"]["fits"] and report["what_if"]["bytes_to_fit"] > 0
    assert len(report["timeline"]["live_bytes"]) == len(report["layers"]) + 2
    n, rows = buffer_bytes(report)
    assert n == len(report["layers"]) + 2
    assert [sum(r[s] for _, r in rows) for s in range(n)] == report["timeline"]["live_bytes"]


def test_png_is_valid_and_sized(png):
    from matplotlib.image import imread

    assert png.startswith(PNG_SIGNATURE)
    img = imread(io.BytesIO(png), format="png")
    assert img.shape[:2] == (SIZE_PX[1], SIZE_PX[0])
    assert img[..., :3].std() > 0.05  # not blank
    assert b"Software" not in png and b"tIME" not in png


def test_png_is_deterministic(report, png):
    assert timeline_png(copy.deepcopy(report)) == png


def test_png_many_steps_and_off_scale_board():
    # 160 layers, 150 buffers, a board whose SRAM is far above the arena: drawn as an arrow
    from matplotlib.image import imread

    r = make_report()
    r["timeline"]["buffers"] = [{"name": f"b{i}", "offset": 64 * (i % 7), "size": 100 + 13 * i, "first": i,
                                 "last": i + 3 + i % 5, "pieces": [[i, i + 3 + i % 5, 100 + 13 * i]]}
                                for i in range(150)]
    n, rows = buffer_bytes(r)
    r["timeline"]["live_bytes"] = [sum(row[s] for _, row in rows) for s in range(n)]
    r["board"]["largest_sram_bytes"] = 4 * 1024 * 1024
    r["what_if"]["peak_steps"] = [r["timeline"]["live_bytes"].index(max(r["timeline"]["live_bytes"]))]
    png = timeline_png(r)
    assert imread(io.BytesIO(png), format="png").shape[:2] == (SIZE_PX[1], SIZE_PX[0])
    r["board"] = None  # host: no board line
    assert timeline_png(r).startswith(PNG_SIGNATURE)


def test_png_needs_matplotlib(monkeypatch, report):
    import sys

    from tinyc.errors import TinycError

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(TinycError, match=r"plots need matplotlib.*pip install matplotlib"):
        timeline_png(report)


def test_html_is_self_contained(html, png):
    assert html.lstrip().lower().startswith("<!doctype html>")
    assert "http://" not in html and "https://" not in html and "//cdn" not in html
    assert "<script" not in html.lower()  # no JavaScript at all, and the hostile name is escaped
    assert "data:image/png;base64," + base64.b64encode(png).decode() in html
    assert "<link" not in html.lower() and "@import" not in html


def test_html_escapes_model_strings(html):
    assert HOSTILE not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_html_content(report, html):
    text = re.sub(r"<[^>]+>", " ", html)
    assert "does not fit" in text
    t = report["totals"]
    assert f"{t['arena_bytes']:,}" in text and f"{t['flash_bytes']:,}" in text and f"{t['macs']:,}" in text
    for r in report["verdict"]["regions"]:
        assert f"{r['margin_bytes']:,}" in text and f"{r['margin_percent']:+.1f}%" in text
    for key in report["what_if"]["strategies"]:
        assert key in text
    assert f"{report['what_if']['bytes_to_fit']:,}" in text
    assert f"{report['what_if']['in_place_saving_bytes']:,}" in text
    for layer in report["layers"][:-1]:
        assert f">{layer['step']}<" in html.replace(" ", "")
        assert layer["kernel"] in text
    for b in report["boards"]:
        assert b["board"] in text and f"{b['ram_margin_bytes']:,}" in text
    assert html.count("<tr") >= len(report["layers"]) + len(report["boards"]) + 10


def test_html_without_board_and_boards():
    r = make_report(hostile=False)
    r["board"] = None
    del r["boards"]
    r["verdict"] = {"fits": True, "regions": []}
    r["what_if"]["bytes_to_fit"] = 0
    out = render_html(r, png=timeline_png(r))
    assert "host" in out and "does not fit" not in out and "All boards" not in out


def test_markdown(report):
    md = render_markdown(report, "cnn_timeline.png")
    assert "![memory timeline](cnn_timeline.png)" in md
    assert "http" not in md and "data:image" not in md
    assert HOSTILE not in md and "&lt;script&gt;" in md
    header = next(line for line in md.splitlines() if line.startswith("| step"))
    for col in ("node", "op", "kernel", "inputs", "output", "MACs", "weights", "live", "high water", "scratch",
                "in place"):
        assert col in header
    rows = [line for line in md.splitlines() if re.match(r"\| \d+ \|", line)]
    assert len(rows) >= len(report["layers"])
    ncols = header.count("|")
    table = md.split(header, 1)[1].splitlines()[1:len(report["layers"]) + 1]
    assert all(line.count("|") - line.count("\\|") == ncols for line in table)
    assert "does not fit" in md and f"{report['what_if']['bytes_to_fit']:,}" in md
    assert "tiny-m0" in md and "stm32f746" in md


def _chromium():
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


def load_in_chromium(browser, page, shot, size=(1280, 2400)):
    """Load page in headless Chromium: (its DOM, the page's console errors, the screenshot path).

    Two runs: --dump-dom with logging on stderr (script errors and console messages
    show as ...:CONSOLE lines; a failed image load logs nothing, so callers check the
    DOM's src/href too), then --screenshot at the given window size.
    """
    from pathlib import Path

    page, shot = Path(page), Path(shot)
    url = page.resolve().as_uri()
    base = [str(browser), "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
            "--disable-dev-shm-usage", f"--user-data-dir={shot.parent / (shot.stem + '-profile')}"]
    dom = subprocess.run(base + ["--enable-logging=stderr", "--v=0", "--dump-dom", url],
                         capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    errors = [line for line in dom.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    run = subprocess.run(base + [f"--screenshot={shot}", f"--window-size={size[0]},{size[1]}", "--hide-scrollbars",
                                 url], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and shot.is_file(), run.stderr[-2000:]
    return dom.stdout, errors, shot


@pytest.mark.skipif(_chromium() is None, reason="no chromium / chromium-browser binary on PATH "
                    "(Debian: apt-get install --no-install-recommends chromium)")
def test_html_in_headless_chromium(tmp_path, report, html):
    from matplotlib.image import imread

    page = tmp_path / "report.html"
    page.write_text(html, encoding="utf-8")
    dom, errors, shot = load_in_chromium(_chromium(), page, tmp_path / "out.png")
    assert not errors, errors
    assert "<table" in dom and 'src="data:image/png;base64,' in dom
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in dom
    # a failed load logs nothing: check that the page refers to nothing outside itself
    refs = re.findall(r'(?:src|href)="([^"]*)"', dom)
    assert refs and all(ref.startswith("data:") for ref in refs), refs

    img = imread(str(shot))[..., :3]
    assert img.shape[:2] == (2400, 1280)
    assert img.std() > 0
    # the timeline's bands are tab20 colours, used nowhere in the page's CSS: the image was decoded and drawn
    blue = (abs(img[..., 0] - 31 / 255) < 0.03) & (abs(img[..., 1] - 119 / 255) < 0.03) & \
        (abs(img[..., 2] - 180 / 255) < 0.03)
    assert blue.sum() > 500, "the plot does not show in the screenshot"
    ys, xs = blue.nonzero()
    plot_area = img[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    assert (plot_area.sum(axis=-1) < 2.9).mean() > 0.05  # non-white pixels where the plot is


def test_board_all_pages_say_so_and_put_the_boards_first():
    """--board all: no board of its own; the title names every board, and the
    all-boards table comes before the verdict and the layers."""
    r = make_report(hostile=False)
    r["board"] = None
    r["verdict"] = {"fits": None, "regions": []}
    n = len(r["boards"])
    md = render_markdown(r, "t.png")
    html = render_html(r, png=timeline_png(r))
    assert md.splitlines()[0].endswith(f"on all {n} boards")
    assert f"<title>tinyc report: cnn on all {n} boards</title>" in html
    for page, boards, layers in ((md, "## All boards", "| step"), (html, "<h2>All boards</h2>", ">step</th>")):
        assert page.index(boards) < page.index(layers)
        assert "on host" not in page and "host build (no board)" not in page
