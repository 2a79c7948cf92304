"""The report dict (docs/report.md) as one self-contained HTML page or as Markdown.

The HTML page has inline CSS and the timeline PNG inline (data: URL): no external
URL, no JavaScript. Every model-derived string is escaped (jinja2 autoescape for
HTML, the `md` filter for Markdown table cells).
"""

from __future__ import annotations

import base64
from pathlib import Path
from urllib.parse import quote

import jinja2

TEMPLATES = Path(__file__).parent / "templates"

# (key, label, is a byte count) in the order the totals table shows them
TOTALS = [
    ("arena_bytes", "arena (activations, scratch, input, output)", True),
    ("lower_bound_bytes", "lower bound (peak live bytes, in-place on)", True),
    ("lower_bound_no_inplace_bytes", "lower bound without in-place", True),
    ("statics_bytes", "statics (.data/.bss of the runtime)", True),
    ("stack_bytes", "stack reserve", True),
    ("ram_bytes", "RAM (arena + statics + stack)", True),
    ("weights_bytes", "weights (const)", True),
    ("code_bytes", "code", True),
    ("flash_bytes", "flash", True),
    ("macs", "MACs per inference", False),
]


def fmt_int(v) -> str:
    """12345 -> '12,345'; None -> '-'."""
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float) and not v.is_integer():
        return f"{v:,.1f}"
    return f"{int(v):,}"


def fmt_kb(v) -> str:
    if v is None:
        return "-"
    kb = v / 1024
    return f"{kb:,.1f} KB" if abs(kb) < 1000 else f"{kb:,.0f} KB"


def fmt_signed(v) -> str:
    return "-" if v is None else f"{int(v):+,}"


def fmt_pct(v) -> str:
    return "-" if v is None else f"{float(v):+.1f}%"


def fmt_shape(shape) -> str:
    """[1, 16, 32, 32] -> '1x16x32x32'; [] (a scalar) -> 'scalar'."""
    if shape is None:
        return "-"
    return "x".join(str(d) for d in shape) if len(shape) else "scalar"


def fmt_shapes(shapes) -> str:
    return ", ".join(fmt_shape(s) for s in shapes or [])


def md_escape(v) -> str:
    """A string safe in a Markdown table cell: no raw HTML, no column breaks, no links."""
    s = str(v)
    s = s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    for ch in "\\`*[]|":
        s = s.replace(ch, "\\" + ch)
    return " ".join(s.split())


def _env(autoescape: bool) -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=autoescape,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                             keep_trailing_newline=True)
    env.filters.update({"n": fmt_int, "kb": fmt_kb, "signed": fmt_signed, "pct": fmt_pct,
                        "shape": fmt_shape, "shapes": fmt_shapes, "md": md_escape})
    return env


def _context(report: dict) -> dict:
    """What both templates need, with every optional key given a default."""
    totals = report.get("totals") or {}
    board = report.get("board") or None
    verdict = report.get("verdict") or {"fits": True, "regions": []}
    what_if = dict(report.get("what_if") or {})
    chosen = f"{totals.get('plan_order')}/{totals.get('plan_strategy')}"
    strategies = sorted((what_if.get("strategies") or {}).items(), key=lambda kv: (kv[1], kv[0]))
    peak_steps = set(what_if.get("peak_steps") or [])
    return {
        "r": report,
        "name": report.get("name") or "model",
        "model": report.get("model") or "",
        "board": board,
        "where": board["name"] if board else (f"all {len(report['boards'])} boards" if report.get("boards") else "host"),
        "totals": totals,
        "totals_rows": [(label, totals[key], is_bytes) for key, label, is_bytes in TOTALS if key in totals],
        "verdict": verdict,
        "what_if": what_if,
        "strategies": strategies,
        "chosen": chosen,
        "peak_steps": peak_steps,
        "layers": report.get("layers") or [],
        "boards": report.get("boards") or [],
        "training": report.get("training"),
        "patch": report.get("patch"),
    }


def render_html(report: dict, *, png: bytes | None = None) -> str:
    """One self-contained HTML page (inline CSS and PNG, no JavaScript, no external URL).

    png: the timeline PNG if already drawn; drawn with plot.timeline_png otherwise
    (which raises TinycError when matplotlib is missing).
    """
    if png is None:
        from .plot import timeline_png
        png = timeline_png(report)
    ctx = _context(report)
    ctx["png_data"] = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
    if report.get("training"):
        from .plot import training_png

        ctx["training_png_data"] = "data:image/png;base64," + base64.b64encode(training_png(report)).decode("ascii")
    return _env(autoescape=True).get_template("report.html.j2").render(**ctx)


def render_markdown(report: dict, png_name: str) -> str:
    """The same content as Markdown tables; the timeline linked as png_name (relative to the .md)."""
    ctx = _context(report)
    ctx["png_link"] = quote(png_name, safe="/._-~")
    ctx["training_png_link"] = quote(png_name.removesuffix(".png") + ".training.png", safe="/._-~")
    return _env(autoescape=False).get_template("report.md.j2").render(**ctx)
