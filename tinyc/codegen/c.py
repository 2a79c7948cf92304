"""C code generation: an int8 program and its memory plan -> NAME.h / NAME.c.

Names from the model never become C identifiers: tensors and constants are
numbered (``w3``, ``p7``); model names appear only inside comments, after
``c_comment`` has made them harmless. The templates (templates/*.j2) hold the
file structure; this module computes what goes into them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import jinja2
import numpy as np

from .. import __version__
from ..ir.program import Program
from ..passes.memory import MemoryPlan, kernel_of
from .variants import config_header

TEMPLATES = Path(__file__).parent / "templates"
RUNTIME = Path(__file__).parent.parent / "runtime_c"

_C_TYPES = {np.dtype(np.int8): "int8_t", np.dtype(np.int32): "int32_t", np.dtype(np.float32): "float"}
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def c_comment(text) -> str:
    """Text safe inside a /* */ comment on one line: printable ASCII only, no
    comment terminator, no trailing backslash (line splicing), no trigraphs."""
    text = "".join(ch if " " <= ch <= "~" else "?" for ch in str(text))
    text = text.replace("*/", "* /").replace("/*", "/ *").replace("??", "?-?")
    if len(text) > 160:
        text = text[:157] + "..."
    return text.rstrip("\\")


# C99 / C11 keywords and names the standard headers define as macros
C_KEYWORDS = frozenset("""
    auto break case char const continue default do double else enum extern float for goto if inline int long
    register restrict return short signed sizeof static struct switch typedef union unsigned void volatile while
    _Alignas _Alignof _Atomic _Bool _Complex _Generic _Imaginary _Noreturn _Static_assert _Thread_local
    bool true false NULL asm fortran errno assert
""".split())
# File stems a project writes beside NAME.c / NAME.h (main.c, sample.h), compared
# without case for case-insensitive file systems
RESERVED_STEMS = frozenset({"main", "sample"})


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a model's files and C symbols, or None."""
    if not _IDENT.fullmatch(name):
        return "use a C identifier (letters, digits, underscores; not starting with a digit)"
    if len(name) > 64:
        return "use at most 64 characters"
    if name in C_KEYWORDS:
        return "it is a C keyword or standard name"
    if name.startswith("_"):
        return "names starting with an underscore are reserved in C"
    if name.lower() in RESERVED_STEMS:
        return f"the project has its own {name.lower()}.{'c' if name.lower() == 'main' else 'h'}"
    if name.lower().startswith("tinyc"):
        return "names starting with tinyc are the runtime's"
    return None


def check_name(name: str) -> str:
    """A model name usable as a C identifier prefix and a file name."""
    problem = name_problem(name)
    if problem:
        from ..errors import TinycError

        raise TinycError(f"--name {name!r}: {problem}; choose another name")
    return name


def default_name(model_path) -> str:
    """The model's C name from its file name, made valid: my-net.onnx -> my_net,
    main.onnx -> model_main."""
    stem = re.sub(r"[^A-Za-z0-9_]", "_", Path(str(model_path)).stem).lstrip("_") or "model"
    if stem[0].isdigit():
        stem = "m_" + stem
    stem = stem[:58]
    return stem if name_problem(stem) is None else "model_" + stem


@dataclass
class _Const:
    cname: str
    ctype: str
    count: int
    body: str
    label: str
    nbytes: int
    mutable: bool = False  # a trainable parameter or training state: SRAM, not flash


def _c_array_body(data: np.ndarray) -> str:
    flat = data.reshape(-1).tolist()
    rows = []
    for k in range(0, len(flat), 24):
        rows.append("    " + ", ".join("(-2147483647 - 1)" if v == -(2**31) else str(v) for v in flat[k:k + 24]) + ",")
    return "\n".join(rows)


# internal = external.transpose(perm) -> (the ONNX layout, tinyc's channels-last layout)
_LAYOUT_NAMES = {(0, 2, 3, 1): ("NCHW", "NHWC"), (0, 2, 1): ("NCW", "NWC")}


def layout_note(graph, name: str, is_input: bool) -> str:
    """How an int8 tensor of the C API is laid out, against the ONNX tensor it
    stands for: tinyc moves channels last (NCHW -> NHWC, NCW -> NWC)."""
    from ..data import external_shape

    shape = list(graph.tensors[name].shape)
    if not is_input and name not in graph.outputs:
        return f"{shape}; tinyc run dequantizes it and runs the model's last float ops on it"
    external = list(external_shape(graph, name))
    perm = graph.input_perm.get(name) if is_input else graph.output_perm.get(name)
    if perm is not None and not is_input:  # external = internal.transpose(perm): invert it
        perm = tuple(int(i) for i in np.argsort(perm))
    if perm is None or tuple(perm) == tuple(range(len(shape))):
        return f"{shape}, the ONNX tensor's own layout"
    names = _LAYOUT_NAMES.get(tuple(perm))
    if names:
        return f"{shape} {names[1]}: the ONNX {names[0]} tensor {external} with channels last"
    return f"{shape}: the ONNX tensor {external} with its axes in the order {list(perm)}"


POISON = -91  # 0xA5: what a debug build writes over dead arena bytes


def _poison_after(plan: MemoryPlan, steps: int) -> dict[int, list[tuple[int, int]]]:
    """step -> byte ranges (offset, size) that no live tensor uses after that step."""
    ranges: dict[int, list[tuple[int, int]]] = {}
    for b in plan.buffers:
        for k, piece in enumerate(b.pieces):
            nxt = b.pieces[k + 1].size if k + 1 < len(b.pieces) else 0
            if piece.size > nxt and piece.last <= steps:
                ranges.setdefault(piece.last, []).append((b.offset + nxt, piece.size - nxt))
    return ranges


def _complement(ranges: list[tuple[int, int]], total: int) -> list[tuple[int, int]]:
    """(offset, size) ranges of [0, total) outside the given ones."""
    out, at = [], 0
    for off, size in sorted(ranges):
        if off > at:
            out.append((at, off - at))
        at = max(at, off + size)
    if at < total:
        out.append((at, total - at))
    return out


def _env() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,  # C, not HTML: every model string goes through c_comment
    )
    env.filters["c_comment"] = c_comment
    return env


def host_main(name: str) -> str:
    """The host test program (main.c of a host project) for a model named ``name``."""
    return _env().get_template("main_host.c.j2").render(name=name, NAME=name.upper(), io_type="int8_t")


def _c_float(v) -> str:
    """A float32 value as a C float literal that reads back exactly."""
    v = np.float32(v)
    if not np.isfinite(v):
        raise AssertionError(f"non-finite constant {v}")
    text = f"{float(v):.9g}"  # 9 significant digits read back as the same float32
    return (text if any(c in text for c in ".e") else text + ".0") + "f"


def _c_body(data: np.ndarray) -> str:
    if data.dtype == np.float32:
        flat = [_c_float(v) for v in data.reshape(-1)]
        return "\n".join("    " + ", ".join(flat[k:k + 8]) + "," for k in range(0, len(flat), 8))
    return _c_array_body(data)


def generate(program: Program, plan: MemoryPlan, name: str, source: str = "model",
             poison: bool = False, train=None, train_plan: MemoryPlan | None = None) -> dict[str, str]:
    """The generated files (name -> text): NAME.h, NAME.c, main.c, Makefile.

    With ``poison`` the code fills the whole arena with a pattern on entry and
    every dead region after each step, so a planner bug shows as wrong numbers.
    With ``train`` (a train.lower.TrainProgram whose inference program is
    ``program``) and its ``train_plan``, NAME.c also has NAME_train_step and the
    trainable parameters live in SRAM, shared by both entry points."""
    graph = program.graph
    env = _env()

    constants: dict[str, _Const] = {}

    def const_ref(tname: str) -> str:
        if tname not in constants:
            t = graph.tensors[tname]
            data = np.ascontiguousarray(t.data)
            ctype = _C_TYPES.get(data.dtype)
            if ctype is None:
                raise AssertionError(f"constant {tname!r} is {data.dtype}, not int8/int32/float32")
            prefix = {"trainable": "t", "state": "s"}.get(t.kind or "", "w")
            constants[tname] = _Const(f"{prefix}{len(constants)}", ctype, max(data.size, 1),
                                      _c_body(data) if data.size else "    0,", tname, data.nbytes,
                                      t.kind in ("trainable", "state"))
        return constants[tname].cname

    def ptr(tname: str | None, const_type: str = "int8_t", plan: MemoryPlan = plan) -> str:
        if not tname:
            return f"(const {const_type} *)0"
        t = graph.tensors[tname]
        if t.is_const:
            return const_ref(tname)
        ctype = _C_TYPES[np.dtype(t.dtype)]
        if ctype == "int8_t":
            return f"(arena + {plan.offsets[tname]})"
        return f"(({ctype} *)(void *)(arena + {plan.offsets[tname]}))"

    structs: list[dict] = []
    struct_names: dict[tuple[str, str], str] = {}

    def struct_ref(params) -> str:
        # calls with equal parameters share one record (the bands of a patched
        # stage, repeated blocks): flash for each distinct one only
        key = (params.c_type, params.c_initializer())
        if key not in struct_names:
            struct_names[key] = f"p{len(structs)}"
            structs.append({"ctype": key[0], "cname": struct_names[key], "init": key[1]})
        return f"&{struct_names[key]}"

    def arg_text(a, plan: MemoryPlan) -> str:
        from ..ir.program import Ref, Runtime
        from ..kernels.params import KernelParams

        if a is None:
            return "0"  # NULL: an optional input left out
        if isinstance(a, Ref):
            return ptr(a.name, plan=plan)
        if isinstance(a, Runtime):
            return {"label": "label", "lr": "lr"}[a.name]
        if isinstance(a, KernelParams):
            return struct_ref(a)
        if isinstance(a, (float, np.floating)):
            return _c_float(a)
        return str(int(a))

    ops = {n.name: n.op for n in graph.nodes}

    def check_fields(call) -> None:
        """Refuse a call whose parameter record has a value its C struct cannot
        hold (the narrow fields of kernels/params.py): never a wrapped value."""
        from ..errors import TinycError
        from ..kernels.params import KernelParams

        for rec in [call.params, *call.args]:
            problem = rec.c_range_problem() if isinstance(rec, KernelParams) else None
            if problem:
                raise TinycError(
                    f"node {call.node!r} ({ops.get(call.node, call.kernel)}): too large for tinyc's C kernel "
                    f"{call.kernel}: {problem} in its {rec.c_type}; make the layer smaller, e.g. split a long "
                    "input into shorter windows")

    def render_calls(prog: Program, plan: MemoryPlan, poison_at) -> list[dict]:
        def poison_lines(step: int) -> list[str]:
            return [f"tinyc_fill_s8({size}, {POISON}, arena + {off});"
                    for off, size in sorted(poison_at.get(step, []))]

        calls = []
        for k, call in enumerate(prog.calls):
            step = k + 1
            check_fields(call)
            if call.is_alias:
                if poison_at.get(step):
                    calls.append({"comment": f"view <- node {call.node}", "lines": poison_lines(step)})
                continue
            lines = []
            if call.args:  # a training kernel, called by argument list
                args = [arg_text(a, plan) for a in call.args] + [ptr(o, plan=plan) for o in call.outputs]
                for st in call.state:
                    args.append("&rng_state" if st == "rng" else (const_ref(st) if st else "(int8_t *)0"))
                if call.kernel.startswith("sgd_update"):  # its first tensor argument is the gradient
                    grad = call.inputs[0]
                    lines.append("#ifdef TINYC_TRAIN_OBSERVE")
                    lines.append(f"TINYC_TRAIN_OBSERVE({const_ref(call.state[0])}, {ptr(grad, plan=plan)}, "
                                 f"{graph.tensors[grad].size});")
                    lines.append("#endif")
                lines.append(f"tinyc_{call.kernel}({', '.join(args)});")
                lines += poison_lines(step)
                calls.append({"comment": f"{call.kernel} <- {call.node}", "lines": lines})
                continue
            kern = kernel_of(call, k in plan.in_place)  # its in-place variant, if planned so
            args = []
            if kern.has_params:
                args.append(struct_ref(call.params))
            ins = list(call.inputs)
            if kern.form in ("weights", "weights_in_place"):
                x, w, b, m, s = ins
                args += [ptr(x if kern.form == "weights" else call.outputs[0], plan=plan),
                         ptr(w), ptr(b, "int32_t"), ptr(m), ptr(s)]
                if kern.form == "weights":
                    args.append(ptr(call.outputs[0], plan=plan))
            elif kern.form in ("unary", "binary", "ternary", "scalars"):
                if kern.form == "ternary":  # add_s8 without its table
                    ins += [None] * (3 - len(ins))
                # an absent input (add_s8's table) is a null pointer of the parameter's type
                args += ([str(v) for v in call.scalars] + [ptr(i, plan=plan) if i else "0" for i in ins]
                         + [ptr(call.outputs[0], plan=plan)])
            elif kern.form == "concat":
                outer, n = call.scalars[:2]
                lines.append(f"static const int32_t inner{k}[{n}] = {{{', '.join(map(str, call.scalars[2:]))}}};")
                lines.append(f"const int8_t *const ins{k}[{n}] = {{{', '.join(ptr(i, plan=plan) for i in ins)}}};")
                args += [str(outer), str(n), f"ins{k}", f"inner{k}", ptr(call.outputs[0], plan=plan)]
            else:
                raise AssertionError(f"kernel form {kern.form!r}")
            if kern.takes_scratch:  # planned arena scratch (none: NULL, 0)
                off, size = plan.scratch.get(k, (0, 0))
                args += [f"(arena + {off})", str(size)] if size else ["0", "0"]
            lines.append(f"{kern.c_name}({', '.join(args)});")
            lines += poison_lines(step)
            note = " (in place)" if k in plan.in_place else ""
            calls.append({"comment": f"{call.kernel}{note} <- node {call.node}", "lines": lines})
        return calls

    poison_at = _poison_after(plan, len(program.calls) + 1) if poison else {}
    calls = render_calls(program, plan, poison_at)

    # I/O: int8 (with its scale and zero point), or float32 (a float training build)
    io_type = _C_TYPES[np.dtype(graph.tensors[program.inputs[0]].dtype)]

    def io_info(names):
        out, offset = [], 0
        for n in names:
            t = graph.tensors[n]
            out.append({
                "label": n, "shape": list(t.shape), "size": t.size, "offset": offset, "arena_offset": plan.offsets[n],
                "bytes": t.nbytes, "layout": layout_note(graph, n, n in program.inputs),
                "scale": repr(float(np.float32(t.quant.scale))) if t.quant is not None else None,
                "zero_point": int(t.quant.zero_point) if t.quant is not None else None,
            })
            offset += t.size
        return out

    inputs, outputs = io_info(program.inputs), io_info(program.outputs)
    arena_size = plan.arena_size
    train_ctx = None
    if train is not None:
        from ..train.autodiff import LOSS

        step_poison = _poison_after(train_plan, len(train.step.calls) + 1) if poison else {}
        step_calls = render_calls(train.step, train_plan, step_poison)
        x = train.step.inputs[0]
        state = []
        offset = 0
        for tname in train.state_tensors():
            t = graph.tensors[tname]
            state.append({"cname": const_ref(tname), "bytes": t.nbytes, "offset": offset, "label": tname,
                          "ctype": _C_TYPES[np.dtype(t.dtype)]})
            offset += t.nbytes
        arena_size = max(arena_size, train_plan.arena_size)
        train_ctx = {
            "calls": step_calls, "arena_size": train_plan.arena_size, "input_offset": train_plan.offsets[x],
            "input_size": graph.tensors[x].size, "input_bytes": graph.tensors[x].nbytes,
            "loss_offset": train_plan.offsets[LOSS],
            "classes": graph.tensors[train.logits].size, "state": state, "state_bytes": offset + 4,
            "model_hash": f"0x{train.model_hash:08x}u", "layout_hash": f"0x{train.layout_hash:08x}u",
            "rounding": train.rounding, "trainable_bytes": train.trainable_bytes(),
            "params": [{"label": p.tensor, "kind": p.param.kind, "channels": p.param.channels,
                        "layer": p.param.update.layer.describe()} for p in train.params],
            "poison_start": _complement([(train_plan.offsets[x], graph.tensors[x].nbytes)], arena_size) if poison else [],
            "copy_in": [f"tinyc_fill_s8({size}, {POISON}, arena + {off});" for off, size in sorted(step_poison.get(0, []))],
        }
    ctx = {
        "name": name, "NAME": name.upper(), "guard": f"TINYC_{name.upper()}_H", "version": __version__,
        "source": source, "arena_size": arena_size, "alignment": plan.alignment,
        "plan_strategy": plan.strategy, "plan_order": plan.order,
        "input_size": sum(i["size"] for i in inputs), "output_size": sum(o["size"] for o in outputs),
        "inputs": inputs, "outputs": outputs, "calls": calls, "structs": structs,
        "poison": poison, "poison_value": POISON, "single_input": len(inputs) == 1, "single_output": len(outputs) == 1,
        "copy_in": [f"tinyc_fill_s8({size}, {POISON}, arena + {off});" for off, size in sorted(poison_at.get(0, []))],
        "poison_start": _complement([(i["arena_offset"], i["bytes"]) for i in inputs], arena_size) if poison else [],
        "train": train_ctx, "io_type": io_type, "float_io": io_type == "float",
    }
    c_text_ctx = dict(ctx, constants=list(constants.values()),
                      weight_bytes=sum(c.nbytes for c in constants.values() if not c.mutable),
                      sram_bytes=sum(c.nbytes for c in constants.values() if c.mutable))
    files = {
        f"{name}.h": env.get_template("model.h.j2").render(ctx),
        f"{name}.c": env.get_template("model.c.j2").render(c_text_ctx),
        "main.c": env.get_template("main_host.c.j2").render(ctx),
        "Makefile": env.get_template("Makefile.j2").render(ctx),
    }
    if train is not None:
        files["train_main.c"] = env.get_template("main_train_host.c.j2").render(ctx)
    runs = [(program, set(plan.in_place))] + ([(train.step, set(train_plan.in_place))] if train is not None else [])
    files["tinyc_config.h"] = config_header(*runs)
    return files


def weight_bytes(program: Program) -> int:
    """Bytes of constants the generated code stores (weights, biases, multipliers, shifts)."""
    names = {i for c in program.calls if not c.is_alias for i in c.inputs if i and program.graph.tensors[i].is_const}
    return int(sum(program.graph.tensors[n].data.nbytes for n in names))


def runtime_files(root: Path | None = None) -> dict[str, Path]:
    """The runtime sources a project needs: relative path in the project -> source
    file, from tinyc's runtime or ``root`` (a built project's own copy, tinyc/;
    links there are not followed)."""
    root = RUNTIME if root is None else root
    files = {}
    for sub in ("include/tinyc", "src"):
        for path in sorted((root / sub).glob("*.[ch]")):
            if path.is_file() and not path.is_symlink():
                files[f"tinyc/{sub}/{path.name}"] = path
    return files
