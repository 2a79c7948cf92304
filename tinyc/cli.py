"""The ``tinyc`` command line (click). Each command is a thin layer over api.py.

Errors a user can cause end as one line on stderr and exit status 2.
"""

from __future__ import annotations

import json
import sys

import click

from . import __version__, api
from .errors import TinycError
from .passes.memory import STRATEGIES as PLAN_STRATEGIES
from .passes.quantize import METHODS as CALIBRATION_METHODS


def _parse_input_shapes(values) -> dict[str, tuple[int, ...]]:
    shapes = {}
    for v in values:
        name, sep, dims = v.rpartition("=")
        try:
            if not sep or not name:
                raise ValueError
            shapes[name] = tuple(int(d) for d in dims.split(","))
            if min(shapes[name]) <= 0:
                raise ValueError
        except ValueError:
            raise TinycError(f"--input-shape {v!r}: write NAME=D1,D2,... with positive sizes, e.g. input=1,3,32,32") from None
    return shapes


def _load(model, input_shape, dump_ir):
    dump = (lambda text: click.echo(text, err=True)) if dump_ir else None
    return api.load(model, _parse_input_shapes(input_shape), dump=dump)


model_argument = click.argument("model", type=click.Path(dir_okay=True))
input_shape_option = click.option(
    "--input-shape", multiple=True, metavar="NAME=D1,D2,...",
    help="Fix an input's shape (for dynamic dimensions). Repeatable.")
dump_ir_option = click.option("--dump-ir", is_flag=True, help="Print the IR after import and after each pass (stderr).")


@click.group()
@click.version_option(__version__, prog_name="tinyc")
def cli():
    """tinyc: compile ONNX neural networks into plain C for microcontrollers."""


@cli.command()
@model_argument
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
@input_shape_option
@dump_ir_option
def inspect(model, as_json, input_shape, dump_ir):
    """Ops, shapes, parameters and MACs per layer, with totals."""
    graph = _load(model, input_shape, dump_ir)
    info = api.inspect(graph)
    if as_json:
        click.echo(json.dumps(info, indent=1))
        return
    for io in ("inputs", "outputs"):
        for t in info[io]:
            click.echo(f"{io[:-1]:6} {t['name']}: {t['dtype']}{t['shape']}")
    header = f"{'#':>3}  {'op':16} {'output shape':20} {'params':>9} {'MACs':>12} {'act bytes':>10}  name"
    click.echo(header)
    click.echo("-" * len(header))
    for k, la in enumerate(info["layers"]):
        click.echo(
            f"{k:>3}  {la['op']:16} {str(la['output_shape']):20} {la['params']:>9,} {la['macs']:>12,} "
            f"{la['activation_bytes_int8']:>10,}  {la['name']}"
        )
    t = info["totals"]
    click.echo("-" * len(header))
    click.echo(
        f"{t['layers']} layers, {t['params']:,} parameters ({t['weight_bytes_int8']:,} bytes as int8), "
        f"{t['macs']:,} MACs, largest activation {t['max_activation_bytes_int8']:,} bytes (int8)"
    )


calib_option = click.option(
    "--calib", "calib_path", type=click.Path(), default=None,
    help="Calibration samples to quantize a float model to int8: .npy / .npz (like --input), "
         "or a folder of such files or of images.")
calib_method_option = click.option(
    "--calib-method", type=click.Choice(list(CALIBRATION_METHODS)), default="minmax", show_default=True,
    help="How activation ranges are taken from the calibration data.")
plan_option = click.option(
    "--plan", "plan_strategy", type=click.Choice(list(PLAN_STRATEGIES)), default=None,
    help="Force one arena placement strategy (default: try all, keep the smallest arena).")
debug_poison_option = click.option(
    "--debug-poison", is_flag=True,
    help="Debug build: overwrite dead arena bytes after every step, so a planning bug shows as wrong numbers.")
pixel_range_option = click.option(
    "--pixel-range", default="0,1", show_default=True, metavar="LO,HI",
    help="For calibration images: the model input values that pixels 0 and 255 map to.")


def _parse_pixel_range(text: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in text.split(","))
        if not lo < hi:
            raise ValueError
    except ValueError:
        raise TinycError(f"--pixel-range {text!r}: write LO,HI with LO < HI, e.g. 0,1 or -1,1 or 0,255") from None
    return lo, hi


def _load_for_int8(model, input_shape, dump_ir, calib_path, calib_method, pixel_range):
    pixels = _parse_pixel_range(pixel_range)
    graph = _load(model, input_shape, dump_ir)
    if calib_path is not None:
        api.quantize_with_calibration(graph, calib_path, calib_method, pixels)
    return graph


@cli.command()
@model_argument
@click.option("--input", "input_path", required=True, type=click.Path(dir_okay=False),
              help=".npy (one sample or a batch) or .npz (per input name, or 'inputs').")
@click.option("-o", "--output", "output_path", required=True, type=click.Path(dir_okay=False),
              help="Where to write the outputs: .npy, or .npz for several outputs.")
@click.option("--engine", type=click.Choice(["ref", "c"]), default="ref", show_default=True,
              help="ref: the numpy reference interpreter (int8 for quantized models); "
                   "c: the generated C, compiled with the host compiler.")
@calib_option
@calib_method_option
@pixel_range_option
@plan_option
@debug_poison_option
@input_shape_option
@dump_ir_option
def run(model, input_path, output_path, engine, calib_path, calib_method, pixel_range, plan_strategy, debug_poison,
        input_shape, dump_ir):
    """Run a model on input data and write its outputs."""
    graph = _load_for_int8(model, input_shape, dump_ir, calib_path, calib_method, pixel_range)
    api.check_output_path(output_path, len(graph.outputs))  # fail before the work, not after
    batch = api.read_data(graph, input_path)
    if engine == "ref" and not api.is_quantized(graph):
        outputs = api.run_reference(graph, batch)
    else:
        build = api.compile_c(graph, model, plan_strategy=plan_strategy, poison=debug_poison)
        outputs = api.run_program_ref(build.program, batch) if engine == "ref" else api.run_program_c(build, batch)
    api.write_outputs(output_path, api.shape_like_input(outputs, batch.layout))
    click.echo(f"ran {batch.count} sample(s) with engine {engine}; wrote {output_path}", err=True)


@cli.command()
@model_argument
@click.option("--board", default="host", show_default=True, help="Target board (host: the host test program).")
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Folder to write the project to (replaced only if an earlier tinyc build made it).")
@click.option("--name", default=None, help="C name of the model (default: from the file name).")
@click.option("--json", "as_json", is_flag=True, help="Print the build summary as one JSON object.")
@calib_option
@calib_method_option
@pixel_range_option
@plan_option
@debug_poison_option
@input_shape_option
@dump_ir_option
def build(model, board, out_dir, name, as_json, calib_path, calib_method, pixel_range, plan_strategy, debug_poison,
          input_shape, dump_ir):
    """Compile a model to a C project: NAME.h / NAME.c, the runtime, a host test program, a Makefile."""
    if board != "host":
        raise TinycError(f"--board {board!r}: this version of tinyc builds for 'host' only")
    graph = _load_for_int8(model, input_shape, dump_ir, calib_path, calib_method, pixel_range)
    result = api.compile_c(graph, model, name=name, board=board, plan_strategy=plan_strategy, poison=debug_poison)
    api.write_project(result, out_dir)
    s = result.summary
    click.echo(
        f"wrote {out_dir}: {s['name']}.c/.h, arena {s['arena_bytes']:,} bytes "
        f"(lower bound {s['lower_bound_bytes']:,}; {s['plan_strategy']} placement, {s['plan_order']} order, "
        f"{s['in_place_steps']} in-place steps; input {s['input_bytes']:,} and output {s['output_bytes']:,} "
        f"bytes inside it), weights {s['weights_bytes']:,} bytes, {s['kernel_calls']} kernel calls",
        err=True,
    )
    if as_json:
        click.echo(json.dumps(s, indent=1))


# click >= 8.2 raises this for a bare `tinyc`; its show() prints the help text
_NO_ARGS_IS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())


def _one_line(message: str) -> str:
    return " ".join(message.split()).rstrip(".")


def main(argv=None):
    try:
        cli.main(args=argv, prog_name="tinyc", standalone_mode=False)
    except TinycError as e:
        click.echo("tinyc: error: " + " ".join(str(e).split()), err=True)  # always one line
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        click.echo("tinyc: aborted", err=True)
        sys.exit(1)
    except _NO_ARGS_IS_HELP as e:  # bare `tinyc`: the help text
        e.show()
        sys.exit(2)
    except click.UsageError as e:
        where = e.ctx.command_path if e.ctx is not None else "tinyc"
        click.echo(f"tinyc: error: {_one_line(e.format_message())}; see '{where} --help'", err=True)
        sys.exit(2)
    except click.ClickException as e:
        click.echo(f"tinyc: error: {_one_line(e.format_message())}", err=True)
        sys.exit(2)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)


if __name__ == "__main__":
    main()
