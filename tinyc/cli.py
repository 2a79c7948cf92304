"""The ``tinyc`` command line (click). Each command is a thin layer over api.py.

Errors a user can cause end as one line on stderr and exit status 2.
"""

from __future__ import annotations

import copy
import json
import sys

import click

from . import __version__, api
from .errors import DoesNotFit, TinycError
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
_plan_strategy_option = click.option(
    "--plan", "plan_strategy", type=click.Choice(list(PLAN_STRATEGIES)), default=None,
    help="Force one arena placement strategy (default: try all, keep the smallest arena).")
_patch_option = click.option(
    "--patch", "patch", default="auto", show_default=True, metavar="auto|off|SPLIT:RxC",
    help="Run the first stage patch by patch (bands of rows of the tensor SPLIT, a tensor name or call number): "
         "auto searches split and band count for the smallest arena and keeps layer-wise when nothing beats it; "
         "off runs layer by layer (no extra MACs).")
_max_overhead_option = click.option(
    "--max-overhead", default=0.2, show_default=True, type=float,
    help="With --patch auto: the most extra MACs a patch plan may cost, as a fraction of layer-wise.")


def plan_option(f):
    """--plan, --patch and --max-overhead: how the arena is planned."""
    return _plan_strategy_option(_patch_option(_max_overhead_option(f)))
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


def _load_for_int8(model, input_shape, dump_ir, calib_path, calib_method, pixel_range, check=None):
    """Import the model; run ``check(graph)`` (cheap checks that need the graph);
    then quantize it when calibration data is given."""
    pixels = _parse_pixel_range(pixel_range)
    graph = _load(model, input_shape, dump_ir)
    if check is not None:
        check(graph)
    if calib_path is not None:
        api.quantize_with_calibration(graph, calib_path, calib_method, pixels)
    return graph


@cli.command()
@click.argument("model", type=click.Path(dir_okay=True), metavar="MODEL|DIR")
@click.option("--input", "input_path", required=True, type=click.Path(dir_okay=False),
              help=".npy (one sample or a batch) or .npz (per input name, or 'inputs').")
@click.option("-o", "--output", "output_path", required=True, type=click.Path(dir_okay=False),
              help="Where to write the outputs: .npy, or .npz for several outputs.")
@click.option("--engine", type=click.Choice(["ref", "c", "qemu"]), default=None,
              help="ref: the numpy reference interpreter (int8 for quantized models); "
                   "c: the generated C, compiled with the host compiler; "
                   "qemu: firmware for --board, run on its QEMU stand-in with instruction counts. "
                   "Default: ref for a model, c for a folder tinyc build wrote.")
@click.option("--board", default=None, help="With --engine qemu: the board whose core runs the model.")
@click.option("--timeout", default=600.0, show_default=True, help="With --engine qemu: seconds before QEMU is stopped.")
@click.option("--json", "as_json", is_flag=True, help="With --engine qemu: print the run report as JSON.")
@calib_option
@calib_method_option
@pixel_range_option
@plan_option
@debug_poison_option
@input_shape_option
@dump_ir_option
def run(model, input_path, output_path, engine, board, timeout, as_json, calib_path, calib_method, pixel_range,
        plan_strategy, patch, max_overhead, debug_poison, input_shape, dump_ir):
    """Run a model, or a C project that tinyc build wrote (DIR), on input data and write its outputs."""
    from pathlib import Path

    api.check_output_path(output_path, None, inputs=[model, input_path, calib_path])  # before any work
    if Path(model).is_dir():
        given = click.get_current_context().get_parameter_source
        model_only = {"--calib": calib_path, "--plan": plan_strategy,
                      "--patch": given("patch") != click.core.ParameterSource.DEFAULT,
                      "--debug-poison": debug_poison,
                      "--input-shape": input_shape, "--dump-ir": dump_ir, "--board": board, "--json": as_json}
        return _run_project(model, input_path, output_path, engine or "c", [f for f, v in model_only.items() if v])
    engine = engine or "ref"
    target = None
    if engine == "qemu":
        from .boards import get_board

        if board is None:
            raise TinycError("--engine qemu needs --board (e.g. --board mps2-an386; see 'tinyc boards')")
        target = get_board(board)
        api.qemu_link_board(target)
    elif board is not None:
        raise TinycError("--board applies to --engine qemu only")
    graph = _load_for_int8(model, input_shape, dump_ir, calib_path, calib_method, pixel_range,
                           check=lambda g: api.check_output_path(output_path, len(g.outputs)))
    batch = api.read_data(graph, input_path)
    report = None
    if engine == "ref" and not api.is_quantized(graph):
        outputs = api.run_reference(graph, batch)
    else:
        build = api.compile_c(graph, model, board=target.name if target is not None else "host",
                              plan_strategy=plan_strategy, poison=debug_poison, patch=patch, max_overhead=max_overhead)
        if engine == "ref":
            outputs = api.run_program_ref(build.program, batch)
        elif engine == "c":
            outputs = api.run_program_c(build, batch)
        else:
            outputs, report = api.run_program_qemu(build, batch, target, timeout)
    api.write_outputs(output_path, api.shape_like_input(outputs, batch.layout))
    click.echo(f"ran {batch.count} sample(s) with engine {engine}; wrote {output_path}", err=True)
    if report is not None:
        counts = report["instructions"]
        per_mac = counts[0] / report["macs"] if report["macs"] else 0
        click.echo(
            f"QEMU {report['qemu_machine']} ({report['core']}): {min(counts):,}-{max(counts):,} instructions per "
            f"sample in {build.name}_invoke ({per_mac:.2f} per MAC); stack {report['stack_used_bytes']:,} of "
            f"{report['stack_bytes']:,} B; flash {report['flash_bytes']:,} B, RAM {report['ram_bytes']:,} B",
            err=True,
        )
        if as_json:
            click.echo(json.dumps(report, indent=1))


def _run_project(project, input_path, output_path, engine, given: list[str]):
    """tinyc run DIR: the project's own C, compiled for the host, on the input
    (``given``: options that only apply to a model file)."""
    if given:
        raise TinycError(f"{given[0]} applies to a model file; {project} is a built project, which runs as it was built")
    if engine != "c":
        raise TinycError(f"{project}: a built project runs with --engine c (its own C); for --engine {engine} "
                         "give the model file")
    build = api.load_project(project)
    batch = api.read_data(build.program.graph, input_path)
    api.check_output_path(output_path, len(build.program.graph.outputs))
    outputs = api.run_program_c(build, batch)
    api.write_outputs(output_path, api.shape_like_input(outputs, batch.layout))
    click.echo(f"ran {batch.count} sample(s) through the C of {project}; wrote {output_path}", err=True)


@cli.command()
@model_argument
@click.option("--board", default="host", show_default=True,
              help="Target board (see 'tinyc boards'; host: a C project with a host test program).")
@click.option("--sample", "sample_path", type=click.Path(dir_okay=False), default=None,
              help="Board builds: the input (.npy / .npz like --input; the first sample) the firmware's self-test "
                   "embeds in flash and checks (default: an input the firmware generates, costing no flash).")
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Folder to write the project to: a new or empty folder, or one an earlier tinyc build wrote "
                   "(then only tinyc's files are replaced).")
@click.option("--name", default=None, help="C name of the model (default: from the file name).")
@click.option("--json", "as_json", is_flag=True, help="Print the build summary as one JSON object.")
@click.option("--widen/--no-widen", default=True, show_default=True,
              help="Board builds: specialize within the board's flash: Add tables (2 KB each) and, on cores with "
                   "the DSP extension, convolution and fully connected weights pre-extended to int16 (about "
                   "1.3-1.8x faster layers, twice their weights' flash, up to ~1.5 KB more arena); --no-widen "
                   "keeps the model as lowered.")
@calib_option
@calib_method_option
@pixel_range_option
@plan_option
@debug_poison_option
@input_shape_option
@dump_ir_option
def build(model, board, sample_path, out_dir, name, as_json, widen, calib_path, calib_method, pixel_range,
          plan_strategy, patch, max_overhead, debug_poison, input_shape, dump_ir):
    """Compile a model to a C project: NAME.h / NAME.c, the runtime, a host test program, a Makefile."""
    target = None
    if board != "host":
        from .boards import get_board

        target = get_board(board)
    elif sample_path is not None:
        raise TinycError("--sample applies to board builds (--board B); a host project runs any data: tinyc run DIR")
    if name is not None:
        api.check_name(name)
    for given in (model, sample_path, calib_path):
        if given is not None and api.same_file(out_dir, given):
            raise TinycError(f"{out_dir}: is also an input of this command; choose another -o")
    api.check_output_dir(out_dir)  # before any work
    graph = _load_for_int8(model, input_shape, dump_ir, calib_path, calib_method, pixel_range)
    batch = api.read_data(graph, sample_path) if sample_path else None
    pristine = copy.deepcopy(graph) if target is not None and (patch == "auto" or widen) else None
    result = api.compile_c(graph, model, name=name, board=board, plan_strategy=plan_strategy, poison=debug_poison,
                           patch=patch, max_overhead=max_overhead, widen=widen)
    if target is None:
        api.write_project(result, out_dir)
        s = result.summary
    else:
        try:
            s = api.build_firmware(result, target, out_dir, batch)
        except DoesNotFit as first_error:
            # neither auto patching nor wide weights ever make a model stop
            # fitting: the bands' calls cost some flash and the wide kernels'
            # scratch some RAM, so a model that fits only without them is built so
            wide = any(c.kernel.endswith(("_wide_s8", "_mve_s8")) for c in result.program.calls)
            patched = patch == "auto" and bool(result.summary["patch"]["split"])
            retries = ([(patch, False)] if wide else []) + ([("off", True)] if patched else []) + (
                [("off", False)] if patched and wide else [])
            s = None
            for retry_patch, retry_widen in retries:
                fallback = api.compile_c(copy.deepcopy(pristine), model, name=name, board=board,
                                         plan_strategy=plan_strategy, poison=debug_poison, patch=retry_patch,
                                         max_overhead=max_overhead, widen=retry_widen)
                try:
                    s = api.build_firmware(fallback, target, out_dir, batch)
                except DoesNotFit:
                    continue
                how = " ".join((["layer-wise"] if retry_patch == "off" and patched else [])
                               + (["with int8 weights"] if wide and not retry_widen else []))
                click.echo(f"tinyc: {target.name}: the first build (arena {result.summary['arena_bytes']:,} B, "
                           f"weights {result.summary['weights_bytes']:,} B) does not fit, {how} (arena "
                           f"{s['arena_bytes']:,} B, weights {s['weights_bytes']:,} B) does: built {how}", err=True)
                break
            if s is None:
                raise first_error from None  # nothing fits: the first build's shortfall
    click.echo(
        f"wrote {out_dir}: {s['name']}.c/.h, arena {s['arena_bytes']:,} bytes "
        f"(lower bound {s['lower_bound_bytes']:,}; {s['plan_strategy']} placement, {s['plan_order']} order, "
        f"{s['in_place_steps']} in-place steps; input {s['input_bytes']:,} and output {s['output_bytes']:,} "
        f"bytes inside it), weights {s['weights_bytes']:,} bytes, {s['kernel_calls']} kernel calls",
        err=True,
    )
    if target is not None:
        if s.get("elf"):
            click.echo(
                f"{s['board']}: model, runtime and startup: flash {s['flash_bytes']:,} B ({s['flash_free_bytes']:,} "
                f"free), RAM {s['ram_bytes']:,} B incl. stack {s['stack_bytes']:,} B ({s['ram_free_bytes']:,} free)",
                err=True,
            )
            click.echo(
                f"self-test harness (main.c, sample.h; input {s['sample']}): +{s['harness_flash_bytes']:,} B flash, "
                f"+{s['harness_ram_bytes']:,} B RAM; {s['elf']}: flash {s['firmware_flash_bytes']:,} B, "
                f"RAM {s['firmware_ram_bytes']:,} B",
                err=True,
            )
        else:
            click.echo(f"{s['board']}: {s['note']}", err=True)
    if as_json:
        click.echo(json.dumps(s, indent=1))


def _update_keys(update_spec, budget, choice) -> dict:
    if choice is None:
        return {"update": update_spec}
    return {"update": choice.spec, "budget": choice.summary(budget)}


@cli.command()
@model_argument
@click.option("--data", "data_path", required=True, type=click.Path(dir_okay=False),
              help="Training data: an .npz with train_x (uint8 images N x H x W x C, or float samples in the "
                   "model's input layout) and train_y (integer labels).")
@click.option("--eval", "eval_path", type=click.Path(dir_okay=False), default=None,
              help="Test data: an .npz with test_x / test_y (may be the --data file); accuracy after each epoch.")
@click.option("--update", "update_spec", default=None, metavar="SPEC",
              help="What to train: full, head, or e.g. 'bias=last6; weight=-4,-2@0.5,-1' (layers = Conv / Gemm / "
                   "MatMul nodes in file order, negative from the end, or by name; @r = first ceil(r x C_out) "
                   "output channels).")
@click.option("--budget", type=click.IntRange(1, None), default=None, metavar="BYTES",
              help="Instead of --update: the update set with the largest expected gain whose training SRAM "
                   "(arena + trainable parameters) fits BYTES.")
@click.option("--epochs", default=1, show_default=True, type=click.IntRange(1, 100000))
@click.option("--lr", required=True, help="Learning rate of plain SGD (batch 1).")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(0, 2**32 - 1),
              help="Seeds the sample order of each epoch and the stochastic rounding.")
@click.option("--board", "board_name", default=None,
              help="Write training firmware for this board (its main trains on the samples of --data on the "
                   "device and persists what it learned); see 'tinyc boards'.")
@click.option("--samples", default=None, type=click.IntRange(1, 65535),
              help="With --board: embed only the first N samples of --data (and of --eval).")
@click.option("--engine", type=click.Choice(["c", "ref", "qemu"]), default="c", show_default=True,
              help="c: the generated C, compiled for the host; ref: the numpy specs of the same kernels.")
@click.option("--precision", type=click.Choice(["int8", "float"]), default="int8", show_default=True,
              help="int8: train the deployed int8 graph; float: the float graph (float forward and backward).")
@click.option("--rounding", type=click.Choice(["residue", "stochastic", "nearest"]), default="residue",
              show_default=True, help="How an int8 weight keeps the part of an update smaller than its unit.")
@click.option("--max-step", default=1, show_default=True, type=click.IntRange(0, 256),
              help="int8: the most units of its scale one step may move a weight (update clipping); 0: no limit.")
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Folder for the C project (NAME_invoke, NAME_train_step) and the fine-tuned NAME.onnx.")
@click.option("--name", default=None, help="C name of the model (default: from the file name).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary (memory, accuracy) as one JSON object.")
@click.option("--dump-grads", "dump_path", type=click.Path(dir_okay=False), default=None,
              help="Write an .npz with the loss and the updated parameters' gradients of the first 4 --data "
                   "samples, for the model as given.")
@calib_option
@calib_method_option
@pixel_range_option
@input_shape_option
@dump_ir_option
def train(model, data_path, eval_path, update_spec, budget, epochs, lr, seed, board_name, samples, engine, precision,
          rounding, max_step, out_dir, name, as_json, dump_path, calib_path, calib_method, pixel_range, input_shape,
          dump_ir):
    """Fine-tune a classifier on labelled data (SGD, batch 1, softmax cross-entropy on the logits of its
    final Softmax) and write the C project with NAME_train_step and the fine-tuned ONNX model."""
    from .train import run as tr

    lr_value = tr.parse_lr(lr)
    board = None
    if board_name is not None:
        from .boards import get_board

        board = get_board(board_name)
        if precision == "float" or dump_path is not None:
            raise TinycError("--board writes int8 training firmware: leave out --precision float and --dump-grads")
    elif engine == "qemu" or samples is not None:
        raise TinycError(f"{'--engine qemu' if engine == 'qemu' else '--samples'} needs --board (training firmware)")
    if precision == "float" and calib_path is not None:
        raise TinycError("--calib quantizes the model; --precision float trains the float model as it is")
    if name is not None:
        api.check_name(name)
    for given in (model, data_path, eval_path, calib_path):
        if given is not None and api.same_file(out_dir, given):
            raise TinycError(f"{out_dir}: is also an input of this command; choose another -o")
    if dump_path is not None:
        api.check_output_file(dump_path, inputs=[model, data_path, eval_path], suffixes=(".npz",), what="--dump-grads")
    api.check_output_dir(out_dir)
    pixels = _parse_pixel_range(pixel_range)
    if (update_spec is None) == (budget is None):
        raise TinycError("give what to train: --update SPEC, or --budget BYTES to let tinyc choose")
    if budget is not None and precision == "float":
        raise TinycError("--budget chooses an int8 update set; give --update with --precision float")
    updates = tr.updates_for(model, update_spec or "head")
    tr.check_write_back(model, updates)
    graph = _load(model, input_shape, dump_ir)
    classes = tr.classes_of(graph)
    if precision == "float" and api.is_quantized(graph):
        raise TinycError(f"{model}: is a quantized model; --precision float trains float models")
    data = tr.read_dataset(graph, data_path, "train", pixels, classes)
    eval_data = tr.read_dataset(graph, eval_path, "test", pixels, classes) if eval_path else None
    if precision == "int8" and calib_path is not None:
        api.quantize_with_calibration(graph, calib_path, calib_method, pixels)
    if precision == "int8" and not api.is_quantized(graph):
        raise TinycError(f"{model}: is a float model; give --calib DATA to quantize it to int8 first, "
                         "or train it with --precision float")
    from .codegen.c import default_name

    name = name or default_name(model)
    quiet = as_json or not sys.stderr.isatty()
    choice = None
    if budget is not None:
        from .train.budget import choose
        from .train.spec import model_layers

        with click.progressbar(label="choosing the update set", file=sys.stderr, hidden=quiet,
                               length=2 * len(model_layers(model))) as bar:
            choice = choose(graph, model_layers(model), budget, data, rounding,
                            frozen=tr.unwritable_layers(model), progress=bar.update)
        updates = tr.updates_for(model, choice.spec)
        tr.check_write_back(model, updates)
        if not as_json:
            click.echo(choice.describe(budget), err=True)

    def log(entry):
        if not as_json:
            acc = f", test accuracy {entry['test_accuracy']:.4f}" if "test_accuracy" in entry else ""
            acc = f", accuracy {entry['accuracy']:.4f}" if "accuracy" in entry else acc
            click.echo(f"epoch {entry['epoch']}/{epochs}: mean loss {entry['loss']:.4f}{acc}", err=True)

    dumped = None
    if dump_path is not None:
        dumped = tr.dump_gradients(graph, updates, name, rounding, tr.Dataset(data.x[:4], data.y[:4]), engine,
                                   precision, max_step)
    if board is not None:
        from .train import firmware as tf

        with click.progressbar(length=epochs * min(len(data.y), samples or len(data.y)), label="training",
                               file=sys.stderr, hidden=quiet) as bar:
            b, summary, fill = tf.train_on_board(graph, model, updates, data, eval_data, board=board, name=name,
                                                 epochs=epochs, lr=lr_value, seed=seed, engine=engine,
                                                 rounding=rounding, max_step=max_step, samples=samples,
                                                 progress=bar.update)
        summary.update(_update_keys(update_spec, budget, choice))
        for entry in summary["history"]:
            log(entry)
        onnx_blob = tr.onnx_bytes(model, b.tp)

        def fill_all(root):
            fill(root)
            (root / f"{name}.onnx").write_bytes(onnx_blob)

        from .build import replace_dir

        replace_dir(out_dir, fill_all, products=("build/",))
        if as_json:
            click.echo(json.dumps(summary, indent=1))
        else:
            click.echo(tr.describe_firmware(summary, out_dir), err=True)
        return
    with click.progressbar(length=epochs * len(data.y), label="training", file=sys.stderr, hidden=quiet) as bar:
        b, summary = tr.train_model(graph, model, updates, data, eval_data, name=name, epochs=epochs, lr=lr_value,
                                    seed=seed, engine=engine, rounding=rounding, precision=precision,
                                    max_step=max_step, progress=bar.update, log=log)
    summary.update(_update_keys(update_spec, budget, choice))
    onnx_blob = tr.onnx_bytes(model, b.tp)
    files = tr.project_files(b, summary)
    files[f"{name}.onnx"] = onnx_blob
    tr.write_files(out_dir, files, products=(f"{name}_host", f"{name}_train"))
    if dump_path is not None:
        tr.write_npz(dump_path, dumped)
    if not as_json:
        click.echo(tr.describe(summary, out_dir), err=True)
    else:
        click.echo(json.dumps(summary, indent=1))


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON array instead of a table.")
def boards(as_json):
    """The boards tinyc builds for: core, FPU, SRAM, flash, clock, QEMU stand-in."""
    from .boards import all_boards

    known = all_boards()
    if as_json:
        click.echo(json.dumps([api.board_info(b) for b in known.values()], indent=1))
        return
    header = (f"{'board':12} {'core':14} {'fpu':12} {'dsp':4} {'MHz':>5} {'SRAM KB':>8} {'(largest)':>9} "
              f"{'flash KB':>9} {'QEMU stand-in':14} aliases")
    click.echo(header)
    click.echo("-" * len(header))
    for b in known.values():
        click.echo(
            f"{b.name:12} {b.core:14} {b.fpu:12} {'yes' if b.dsp else 'no':4} {b.clock_hz // 1_000_000:>5} "
            f"{b.sram_bytes // 1024:>8} {b.main_ram.length // 1024:>9} {b.flash_bytes // 1024:>9} "
            f"{b.qemu or '-':14} {', '.join(b.aliases)}"
        )
    click.echo("host: the machine tinyc runs on (a C project with a host test program)")


@cli.command()
@click.argument("project", type=click.Path())
@click.option("--board", default=None, help="The board (default: the one the project was built for).")
@click.option("--probe", default=None, help="pyOCD probe unique ID, when several are connected.")
@click.option("--dry-run", is_flag=True, help="Print the pyOCD command instead of running it.")
def flash(project, board, probe, dry_run):
    """Write a built firmware project to its board through pyOCD."""
    import importlib.util
    import shlex
    import subprocess

    cmd, target = api.flash_command(project, board, probe)
    if dry_run:
        click.echo(shlex.join(cmd))
        return
    if importlib.util.find_spec("pyocd") is None:
        raise TinycError("flashing needs pyOCD; pip install 'tinyc[flash]' (or run the --dry-run command yourself)")
    proc = subprocess.run(cmd)
    if proc.returncode != 0:
        raise TinycError(f"pyOCD could not flash {target.name} (exit {proc.returncode}); check the probe connection")
    click.echo(f"flashed {project} to {target.name}", err=True)


@cli.command()
@model_argument
@click.option("--board", required=True, help="A board (see 'tinyc boards'), 'host', or 'all' for every board.")
@click.option("--format", "fmt", type=click.Choice(["md", "json", "html"]), default="md", show_default=True,
              help="md: Markdown with the plot as FILE.png beside it; html: one self-contained page; json: the data.")
@click.option("-o", "--output", "out_path", type=click.Path(dir_okay=False), default=None,
              help="File to write (json and html go to stdout without it).")
@click.option("--update", "update_spec", default=None, metavar="SPEC",
              help="Add what on-device training with this update set costs (as tinyc train --update): the "
                   "training arena, trainable bytes, what is live at the peak, against bias-only and full backprop.")
@click.option("--budget", type=click.IntRange(1, None), default=None, metavar="BYTES",
              help="Instead of --update: the update set tinyc train --budget BYTES chooses (needs --data).")
@click.option("--data", "data_path", type=click.Path(dir_okay=False), default=None,
              help="Training data (as tinyc train --data): the --budget probe's samples and, with one --board, "
                   "the samples the measured training firmware embeds.")
@click.option("--samples", default=None, type=click.IntRange(1, 65535),
              help="With --data: embed only the first N samples (as tinyc train --samples).")
@calib_option
@calib_method_option
@pixel_range_option
@plan_option
@input_shape_option
@dump_ir_option
def report(model, board, fmt, out_path, update_spec, budget, data_path, samples, calib_path, calib_method, pixel_range,
           plan_strategy, patch, max_overhead, input_shape, dump_ir):
    """Where the memory goes: per layer, against a board, and what would make it fit; with --update, what
    on-device training costs."""
    from pathlib import Path

    # everything that can be refused is refused before the work (quantizing, linking)
    if board not in ("all", "host"):
        from .boards import get_board

        get_board(board)
    out = Path(out_path) if out_path else None
    if fmt == "md" and out is None:
        raise TinycError("--format md writes FILE.md and the plot FILE.png beside it; give -o FILE.md")
    if out is not None:
        api.check_output_file(out, [model, calib_path], (f".{fmt}",) if fmt != "md" else (".md",), "report")
    if fmt in ("md", "html"):
        from .report.plot import is_tinyc_png, require_matplotlib

        require_matplotlib()
        pngs = [out.with_suffix(".png"), out.with_suffix(".training.png")] if fmt == "md" else []
        for png in pngs:
            if png.exists() and not is_tinyc_png(png):
                raise TinycError(f"{png}: exists and is not a plot tinyc wrote; move it, or give -o another name")
    training = None
    if update_spec is not None and budget is not None:
        raise TinycError("give --update SPEC or --budget BYTES, not both")
    if budget is not None and data_path is None:
        raise TinycError("--budget needs --data: the samples its choice probes")
    if (data_path is not None or samples is not None) and update_spec is None and budget is None:
        raise TinycError("--data and --samples go with --update or --budget (the training section)")
    if update_spec is not None or budget is not None:
        from .train import run as tr

        updates = tr.updates_for(model, update_spec or "head")  # a bad spec is refused before the work
    graph = _load_for_int8(model, input_shape, dump_ir, calib_path, calib_method, pixel_range)
    if update_spec is not None or budget is not None:
        import copy

        classes = tr.classes_of(graph)
        data = None
        if data_path is not None:
            data = tr.read_dataset(graph, data_path, "train", _parse_pixel_range(pixel_range), classes)
        choice = None
        if budget is not None:
            from .train.budget import choose
            from .train.spec import model_layers

            choice = choose(graph, model_layers(model), budget, data, frozen=tr.unwritable_layers(model))
            update_spec = choice.spec
            updates = tr.updates_for(model, update_spec)
        if not updates:
            raise TinycError(f"--update {update_spec!r} updates nothing")
        training = {"graph": copy.deepcopy(graph), "update": update_spec}
        if choice is not None:
            training["budget"] = choice.summary(budget)
        if data is not None and board not in ("all", "host"):
            training["schedule"] = {"data": data, "samples": samples, "epochs": 1, "lr": 0.01}
    build = api.compile_c(graph, model, board=board, plan_strategy=plan_strategy, patch=patch,
                          max_overhead=max_overhead)
    rep = api.report(build, board, training)
    text = api.write_report(rep, fmt, out)
    if text is not None:
        click.echo(text, nl=False)
    v = rep["verdict"]
    if v["fits"] is not None:
        ram = next(r for r in v["regions"] if r["kind"] == "ram")
        click.echo(f"{rep['name']} on {rep['board']['name']}: {'fits' if v['fits'] else 'does NOT fit'} "
                   f"(RAM margin {ram['margin_bytes']:,} B, {ram['margin_percent']:.1f}%)", err=True)
    t = rep.get("training")
    if t is not None:
        where = f"; on {rep['board']['name']}: {'fits' if t['verdict']['fits'] else 'does NOT fit'}" if "verdict" in t else ""
        click.echo(f"training ({t['update']}): {t['train_total_bytes']:,} B of SRAM (arena {t['train_arena_bytes']:,} "
                   f"+ trainable {t['trainable_bytes']:,}){where}", err=True)
    if out is not None:
        click.echo(f"wrote {out}" + (f" and {out.with_suffix('.png')}" if fmt == "md" else ""), err=True)


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
