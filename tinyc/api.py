"""What the command line does, as functions: load, inspect, quantize, build, run,
report. The work lives in data.py (data conventions), engines.py (running
programs), build.py (C projects, firmware, QEMU) and report/; this module is the
one place the CLI (and a Python user) calls.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .build import (  # noqa: F401  (re-exported)
    Build,
    board_info,
    build_firmware,
    check_output_dir,
    compile_c,
    flash_command,
    qemu_link_board,
    run_program_c,
    run_program_qemu,
    self_test,
    write_project,
)
from .codegen.c import check_name  # noqa: F401  (re-exported)
from .data import (  # noqa: F401  (re-exported)
    Batch,
    _to_internal,
    check_output_file,
    check_output_path,
    external_dtype,
    external_shape,
    read_calibration,
    read_data,
    same_file,
    shape_like_input,
    to_batch,
    write_file,
    write_outputs,
)
from .engines import (  # noqa: F401  (re-exported)
    compile_int8,
    dequantize_like_tflm,
    program_feeds,
    program_results,
    quantize_like_tflm,
    run_program_ref,
    run_reference,
)
from .errors import TinycError
from .frontend.onnx import load_onnx
from .ir import Graph
from .ops import get_op
from .passes.manager import canonicalize
from .project import load_project  # noqa: F401  (re-exported)


def load(model_path, input_shapes=None, dump=None) -> Graph:
    """Import and canonicalize a model."""
    graph = load_onnx(model_path, input_shapes)
    graph.validate()
    return canonicalize(graph, dump=dump)


def inspect(graph: Graph) -> dict:
    layers = []
    total_params = total_macs = weight_bytes = 0
    for node in graph.nodes:
        params = sum(graph.tensors[i].size for i in node.inputs if i and graph.tensors[i].is_const)
        # what an int8 build stores in flash: int8 weights, int32 biases (input 2)
        weight_int8 = sum(
            graph.tensors[i].size * (4 if k == 2 and node.op in ("Conv2D", "FullyConnected") else 1)
            for k, i in enumerate(node.inputs) if i and graph.tensors[i].is_const
        )
        macs = get_op(node.op).macs(node, graph)
        out = graph.tensors[node.outputs[0]]
        layers.append({
            "name": node.name,
            "op": node.op,
            "output_shape": list(out.shape),
            "params": int(params),
            "macs": int(macs),
            "activation_bytes_int8": int(out.size),
        })
        total_params += params
        total_macs += macs
        weight_bytes += weight_int8
    return {
        "model": graph.name,
        "inputs": [{"name": n, "shape": list(external_shape(graph, n)), "dtype": np.dtype(external_dtype(graph, n)).name}
                   for n in graph.inputs],
        "outputs": [{"name": n, "shape": list(external_shape(graph, n)), "dtype": np.dtype(external_dtype(graph, n)).name}
                    for n in graph.outputs],
        "layers": layers,
        "totals": {
            "layers": len(layers),
            "params": int(total_params),
            "macs": int(total_macs),
            "weight_bytes_int8": int(weight_bytes),
            "max_activation_bytes_int8": max((la["activation_bytes_int8"] for la in layers), default=0),
        },
    }


def is_quantized(graph: Graph) -> bool:
    from .passes.int8 import is_quantized as _is_quantized

    return _is_quantized(graph)


def quantize_with_calibration(graph: Graph, calib_path, method: str = "minmax",
                              pixel_range: tuple[float, float] = (0.0, 1.0)) -> None:
    """Post-training quantization of a float graph from calibration samples."""
    from .passes.quantize import calibrate, quantize_graph

    if is_quantized(graph):
        raise TinycError(f"{calib_path}: the model is already quantized (QDQ); drop --calib")
    samples = read_calibration(graph, calib_path, pixel_range)
    quantize_graph(graph, calibrate(graph, samples, method))
    graph.validate()


def report(build: Build, board_name: str, training: dict | None = None) -> dict:
    """The memory report of a compiled model for a board, "host", or "all" boards;
    ``training`` ({"graph", "update"}) adds what on-device training costs."""
    from .boards import get_board
    from .report.data import build_report

    if board_name == "all":
        return build_report(build, None, every_board=True, training=training)
    if board_name == "host":
        return build_report(build, None, training=training)
    return build_report(build, get_board(board_name), training=training)


def write_report(rep: dict, fmt: str, out: Path | None) -> str | None:
    """Render and write the report; returns the text for stdout when ``out`` is None."""
    import json

    if fmt == "json":
        text = json.dumps(rep, indent=1) + "\n"
        if out is None:
            return text
        write_file(out, text.encode())
        return None
    from .report.plot import timeline_png
    from .report.render import render_html, render_markdown

    if fmt == "html":
        text = render_html(rep)
        if out is None:
            return text
        write_file(out, text.encode())
        return None
    if out is None:
        raise TinycError("--format md writes FILE.md and the plot FILE.png beside it; give -o FILE.md")
    png = out.with_suffix(".png")
    png_bytes = timeline_png(rep)
    text = render_markdown(rep, png.name)
    write_file(png, png_bytes)
    if rep.get("training"):
        from .report.plot import training_png

        write_file(out.with_suffix(".training.png"), training_png(rep))
    write_file(out, text.encode())
    return None
