"""The memory timeline of a `tinyc report` as a PNG.

x is the step (0 copies the input in, 1..n run the layers, n+1 copies the output
out), y the live bytes in KB, stacked one colour band per arena buffer. Two
horizontal lines: the static arena and, for a board, its largest SRAM region (drawn
as an arrow at the top instead when it would squash the plot). The peak steps are
marked. Output is deterministic: fixed size and dpi, no software / date metadata;
its Title (PNG_TITLE) marks it as tinyc's, so a later report may overwrite it and
nothing else.
"""

from __future__ import annotations

import io
import logging

from ..errors import TinycError

WIDTH_IN, HEIGHT_IN, DPI = 11.0, 5.0, 100  # 1100 x 500 pixels
SIZE_PX = (int(WIDTH_IN * DPI), int(HEIGHT_IN * DPI))
OFF_SCALE = 3.0  # board line drawn as an arrow when it is above 3x the arena
PNG_TITLE = "tinyc memory timeline"


def is_tinyc_png(path) -> bool:
    """Did a tinyc report write this PNG (its tEXt Title chunk says so)?"""
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError:
        return False
    return head.startswith(b"\x89PNG") and b"tEXtTitle\x00" + PNG_TITLE.encode() in head


def require_matplotlib() -> None:
    """Fail before any work when plots cannot be drawn."""
    _matplotlib()


def _matplotlib():
    # matplotlib warns on stderr (through logging) when its config folder is not
    # writable, e.g. HOME read-only: tinyc's stderr carries only its own lines
    logging.getLogger("matplotlib").setLevel(logging.ERROR)
    try:
        import matplotlib
        import matplotlib.style
    except ImportError:
        raise TinycError("plots need matplotlib, which tinyc depends on: pip install matplotlib (or reinstall tinyc)") from None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    return matplotlib, Figure, FigureCanvasAgg


def _kb(n: float) -> str:
    kb = n / 1024
    return f"{kb:,.0f} KB" if kb >= 100 else f"{kb:,.1f} KB"


def buffer_bytes(report: dict) -> tuple[int, list[tuple[str, list[int]]]]:
    """(number of steps, [(buffer name, live bytes per step)]) from report["timeline"]."""
    timeline = report.get("timeline") or {}
    buffers = timeline.get("buffers") or []
    n_steps = len(timeline.get("live_bytes") or [])
    for b in buffers:
        for _first, last, _size in b.get("pieces") or [[b["first"], b["last"], b["size"]]]:
            n_steps = max(n_steps, int(last) + 1)
    rows = []
    for b in sorted(buffers, key=lambda b: (b.get("offset", 0), b.get("first", 0), b.get("name", ""))):
        per_step = [0] * n_steps
        for first, last, size in b.get("pieces") or [[b["first"], b["last"], b["size"]]]:
            for s in range(max(0, int(first)), int(last) + 1):
                per_step[s] = max(per_step[s], int(size))  # the piece covering the step
        rows.append((str(b.get("name", "")), per_step))
    return n_steps, rows


def _colour(cmap, i: int):
    """tab20 with the 10 strong hues first, then their light shades: neighbours differ."""
    return cmap((2 * i) % 20 + (i // 10) % 2)


def _title(report: dict) -> str:
    board = report.get("board")
    where = f"board {board.get('name', '?')}" if board else "host"
    return f"{report.get('name') or report.get('model', 'model')}: memory timeline ({where})"


def timeline_png(report: dict) -> bytes:
    """The memory timeline of a report dict (docs/report.md) as PNG bytes (1100 x 500)."""
    matplotlib, Figure, FigureCanvasAgg = _matplotlib()
    from matplotlib.ticker import FuncFormatter, MaxNLocator
    from matplotlib.transforms import offset_copy

    n_steps, rows = buffer_bytes(report)
    totals = report.get("totals") or {}
    arena = int(totals.get("arena_bytes") or 0)
    board = report.get("board") or None
    sram = int(board.get("largest_sram_bytes") or 0) if board else 0
    peak_steps = [int(s) for s in (report.get("what_if") or {}).get("peak_steps") or []]

    # matplotlib's defaults whatever the user's matplotlibrc says (style "default" leaves the backend alone)
    with matplotlib.style.context("default"), matplotlib.rc_context({"font.size": 9, "axes.titlesize": 11}):
        fig = Figure(figsize=(WIDTH_IN, HEIGHT_IN), dpi=DPI)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot(1, 1, 1)
        cmap = matplotlib.colormaps["tab20"]

        # one band per buffer, continuous across steps: x edges at step +- 0.5
        xs = [x for s in range(n_steps) for x in (s - 0.5, s + 0.5)]
        bottom = [0] * n_steps
        for i, (_name, per_step) in enumerate(rows):
            if not any(per_step):
                continue
            top = [b + v for b, v in zip(bottom, per_step)]
            ax.fill_between(xs, [bottom[s] / 1024 for s in range(n_steps) for _ in (0, 1)],
                            [top[s] / 1024 for s in range(n_steps) for _ in (0, 1)],
                            where=[per_step[s] > 0 for s in range(n_steps) for _ in (0, 1)],
                            facecolor=_colour(cmap, i), edgecolor="white", linewidth=0.4, interpolate=False)
            bottom = top
        top_live = max(bottom, default=0)
        if not rows and (report.get("timeline") or {}).get("live_bytes"):  # no buffer detail: the total only
            live = [int(v) for v in report["timeline"]["live_bytes"]]
            ax.bar(range(len(live)), [v / 1024 for v in live], width=1.0, color=_colour(cmap, 0), linewidth=0)
            bottom, top_live = live, max(live, default=0)

        ymax = max(top_live, arena, 1)
        if arena:
            ax.axhline(arena / 1024, color="black", linewidth=1.4, linestyle="--", label=f"arena {_kb(arena)}")
        sram_off_scale = bool(sram) and sram > OFF_SCALE * max(arena, top_live, 1)
        if sram and not sram_off_scale:
            ymax = max(ymax, sram)
            ax.axhline(sram / 1024, color="#c62828", linewidth=1.6,
                       label=f"board SRAM ({board.get('name', '?')}, largest region) {_kb(sram)}")
        ylim = ymax * 1.18 / 1024
        ax.set_ylim(0, ylim)
        ax.set_xlim(-0.5, max(n_steps, 1) - 0.5)
        if sram_off_scale:  # above the axes, right, pointing up
            ax.annotate(f"\u2191 board SRAM {sram / 1024:,.0f} KB, off scale", xy=(1.0, 1.012),
                        xycoords="axes fraction", ha="right", va="bottom", color="#c62828", fontweight="bold",
                        annotation_clip=False)

        above = offset_copy(ax.transData, fig=fig, y=6, units="points")  # the marker sits on the stack
        for k, s in enumerate(sorted(set(peak_steps))):
            if 0 <= s < n_steps:
                ax.plot([s], [bottom[s] / 1024], marker="v", color="#c62828",
                        markersize=7, linestyle="none", label="peak step" if k == 0 else None, transform=above)
        if peak_steps:
            first = min(peak_steps)
            label = f"peak: step {first}" if len(set(peak_steps)) == 1 else \
                f"peak: steps {', '.join(str(s) for s in sorted(set(peak_steps))[:6])}" + \
                ("..." if len(set(peak_steps)) > 6 else "")
            ax.annotate(label, xy=(0.01, 0.98), xycoords="axes fraction", ha="left", va="top", color="#c62828")

        ax.set_xlabel("step")
        ax.set_ylabel("live bytes (KB)")
        ax.set_title(_title(report), loc="left")
        ax.xaxis.set_major_locator(MaxNLocator(nbins=20, integer=True))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:,.0f}" if ylim >= 10 else f"{v:,.1f}"))
        ax.grid(axis="y", color="#dddddd", linewidth=0.6)
        ax.set_axisbelow(True)
        if ax.get_legend_handles_labels()[0]:  # the lines only, below the axes: never over the bands
            ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.11), ncol=3, fontsize=8, frameon=False)
        fig.tight_layout()
        out = io.BytesIO()
        fig.savefig(out, format="png", dpi=DPI, metadata={"Software": None, "Title": PNG_TITLE})
    return out.getvalue()


def training_png(report: dict) -> bytes:
    """The training section's memory per layer (docs/report.md "per_layer"): saved
    int8 activations, the largest float32 gradient, trainable parameters and state,
    stacked per layer, against the training arena and total and the board's SRAM
    (PNG bytes, 1100 x 500)."""
    matplotlib, Figure, FigureCanvasAgg = _matplotlib()
    t = report["training"]
    rows = t.get("per_layer") or []
    kinds = [("saved_bytes", "saved activations (int8)", "#1f77b4"),
             ("gradient_bytes", "largest gradient (float32)", "#ff7f0e"),
             ("trainable_bytes", "trainable parameters and state", "#2ca02c")]
    with matplotlib.style.context("default"), matplotlib.rc_context({"font.size": 9, "axes.titlesize": 11}):
        fig = Figure(figsize=(WIDTH_IN, HEIGHT_IN), dpi=DPI)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot(1, 1, 1)
        xs = list(range(len(rows)))
        bottom = [0.0] * len(rows)
        for key, label, colour in kinds:
            values = [r[key] / 1024 for r in rows]
            ax.bar(xs, values, bottom=bottom, color=colour, label=label, width=0.8, linewidth=0)
            bottom = [b + v for b, v in zip(bottom, values)]
        for key, label, style in (("train_arena_bytes", "training arena", "--"),
                                  ("train_total_bytes", "training SRAM (arena + trainable)", "-")):
            ax.axhline(t[key] / 1024, color="black", linewidth=1.2, linestyle=style,
                       label=f"{label} {_kb(t[key])}")
        board = report.get("board") or None
        sram = int(board.get("largest_sram_bytes") or 0) if board else 0
        top = max(max(bottom, default=0) * 1024, t["train_total_bytes"], 1)
        if sram and sram <= OFF_SCALE * top:
            ax.axhline(sram / 1024, color="#c62828", linewidth=1.6,
                       label=f"board SRAM ({board.get('name', '?')}, largest region) {_kb(sram)}")
        elif sram:
            ax.annotate(f"\u2191 board SRAM {sram / 1024:,.0f} KB, off scale", xy=(1.0, 1.012),
                        xycoords="axes fraction", ha="right", va="bottom", color="#c62828", fontweight="bold",
                        annotation_clip=False)
        ax.set_xticks(xs)
        ax.set_xticklabels([str(k) for k in xs])
        ax.set_xlabel("layer (forward order; the report's per-layer table names them)")
        ax.set_ylabel("bytes (KB)")
        spec = t["update"] if len(t["update"]) <= 70 else t["update"][:67] + "..."
        ax.set_title(f"{report.get('name') or 'model'}: training memory per layer ({spec})", loc="left")
        ax.grid(axis="y", color="#dddddd", linewidth=0.6)
        ax.set_axisbelow(True)
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.11), ncol=3, fontsize=8, frameon=False)
        fig.tight_layout()
        out = io.BytesIO()
        fig.savefig(out, format="png", dpi=DPI, metadata={"Software": None, "Title": PNG_TITLE})
    return out.getvalue()
