"""Data conventions shared by every engine: the model's external shapes and types,
reading input and calibration files, and writing outputs atomically.

An input array holds one sample in the model's external shape, or a batch
(N, *shape); when the model's shape starts with a batch dimension of 1, a batch
may also leave it out (N, *shape[1:]). Outputs follow the convention the inputs
used.
"""

from __future__ import annotations

import io
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import TinycError
from .ir import Graph


def external_shape(graph: Graph, name: str) -> tuple[int, ...]:
    internal = graph.tensors[name].shape
    perm = graph.input_perm.get(name) if name in graph.inputs else graph.output_perm.get(name)
    if perm is None:
        return internal
    if name in graph.inputs:  # internal = external.transpose(perm)
        shape = [0] * len(perm)
        for i, p in enumerate(perm):
            shape[p] = internal[i]
        return tuple(shape)
    return tuple(internal[p] for p in perm)  # external = internal.transpose(perm)


def external_dtype(graph: Graph, name: str):
    return graph.external_dtype.get(name, graph.tensors[name].dtype)


@dataclass
class Batch:
    """Samples for every graph input, external layout, and how they were laid out."""

    arrays: dict[str, np.ndarray]  # name -> (N, *external_shape)
    layout: str  # "single" | "batch" | "batch-squeezed"

    @property
    def count(self) -> int:
        return next(iter(self.arrays.values())).shape[0]


def read_data(graph: Graph, path) -> Batch:
    """Read an .npy / .npz data file for the graph's inputs, checking shape and type."""
    path = Path(path)
    save_hint = "save the data with numpy.save (one input) or numpy.savez (one array per input name)"
    if not path.exists():
        raise TinycError(f"{path}: no such data file; give an .npy or .npz file")
    if path.is_dir():
        raise TinycError(f"{path}: is a directory; give an .npy or .npz file")
    check_data_size(path)
    try:
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.lib.npyio.NpzFile):
            with loaded:
                keys = list(loaded.files)
                if len(graph.inputs) == 1 and "inputs" in keys:
                    raw = {graph.inputs[0]: loaded["inputs"]}
                else:
                    missing = [n for n in graph.inputs if n not in keys]
                    if missing:
                        raise TinycError(
                            f"{path}: has arrays {keys} but the model needs {graph.inputs}"
                            + ("" if len(graph.inputs) > 1 else " (or one array named 'inputs')")
                            + f"; save it with numpy.savez({path.name!r}, "
                            + ", ".join(f"{n}=..." if n.isidentifier() else f"**{{{n!r}: ...}}" for n in graph.inputs)
                            + ")"
                        )
                    raw = {n: loaded[n] for n in graph.inputs}
        else:
            if len(graph.inputs) != 1:
                raise TinycError(
                    f"{path}: the model has inputs {graph.inputs}; give an .npz with one array per input name"
                )
            raw = {graph.inputs[0]: loaded}
    except TinycError:
        raise
    except ValueError as e:
        if "Object arrays" in str(e) or ("allow_pickle" in str(e) and _starts_with(path, (b"\x93NUMPY", b"PK"))):
            raise TinycError(f"{path}: holds Python objects, not a numeric array; {save_hint}") from None
        raise TinycError(f"{path}: not a readable .npy or .npz file (corrupt or another format); {save_hint}") from None
    except Exception:
        raise TinycError(f"{path}: not a readable .npy or .npz file (corrupt or another format); {save_hint}") from None
    for name, x in raw.items():
        if not isinstance(x, np.ndarray) or x.dtype.kind not in "biuf":
            kind = x.dtype if isinstance(x, np.ndarray) else type(x).__name__
            raise TinycError(f"{path}: the array for input {name!r} is {kind}, not numbers; {save_hint}")
    return to_batch(graph, raw, str(path))


# What one data file may hold, unpacked: far more than a microcontroller model's
# calibration, test or training sets need, far less than a decompression bomb asks.
DATA_BYTES_LIMIT = ("TINYC_MAX_DATA_BYTES", 512 << 20)
SAMPLES_LIMIT = ("TINYC_MAX_SAMPLES", 100_000)


def limit(setting: tuple[str, int]) -> int:
    """A limit, raised (or lowered) by its environment variable."""
    name, default = setting
    try:
        return max(int(os.environ.get(name, default)), 1)
    except ValueError:
        raise TinycError(f"{name}={os.environ[name]!r}: give a whole number") from None


def check_data_size(path: Path) -> None:
    """Refuse, before reading it, a data file whose arrays unpack to more than the
    limit: an .npz's sizes come from its zip directory (which the reader holds
    the members to), an .npy's is its own."""
    import zipfile

    most = limit(DATA_BYTES_LIMIT)
    raise_it = f"set {DATA_BYTES_LIMIT[0]}=BYTES to raise the limit, or give fewer samples"
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                total = sum(i.file_size for i in z.infolist())
        else:
            total = path.stat().st_size
    except (zipfile.BadZipFile, OSError):
        return  # the reader reports what is wrong with the file
    if total > most:
        raise TinycError(f"{path}: its arrays unpack to {total:,} bytes, more than the {most:,} tinyc reads; {raise_it}")


def read_npz_members(path: Path, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Named numeric arrays of an .npz, their unpacked sizes checked before reading."""
    import zipfile

    if not path.is_file():
        raise TinycError(f"{path}: no such .npz file")
    try:
        with zipfile.ZipFile(path) as z:
            infos = {i.filename[:-4] if i.filename.endswith(".npy") else i.filename: i for i in z.infolist()}
    except (zipfile.BadZipFile, OSError):
        raise TinycError(f"{path}: not a readable .npz file (numpy.savez writes one)") from None
    missing = [k for k in keys if k not in infos]
    if missing:
        raise TinycError(f"{path}: has arrays {sorted(infos)} but not {missing}; save it with "
                         f"numpy.savez({path.name!r}, {', '.join(k + '=...' for k in keys)})")
    check_data_size(path)
    out = {}
    try:
        with np.load(path, allow_pickle=False) as loaded:
            for k in keys:
                out[k] = loaded[k]
    except ValueError:
        raise TinycError(f"{path}: an array holds Python objects or is corrupt; save numeric arrays "
                         "with numpy.savez") from None
    except Exception:
        raise TinycError(f"{path}: not a readable .npz file (corrupt or another format)") from None
    for k, a in out.items():
        if not isinstance(a, np.ndarray) or a.dtype.kind not in "biuf":
            raise TinycError(f"{path}: array {k!r} is {a.dtype}, not numbers")
    return out


def _starts_with(path: Path, magics: tuple[bytes, ...]) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError:
        return False
    return any(head.startswith(m) for m in magics)


def to_batch(graph: Graph, raw: dict[str, np.ndarray], where: str = "input data") -> Batch:
    arrays, layouts = {}, set()
    for name, x in raw.items():
        x = np.asarray(x)
        shape = external_shape(graph, name)
        want = external_dtype(graph, name)
        if x.ndim == len(shape) + 1 and x.shape[0] == 0 or (x.size == 0 and x.shape != shape):
            raise TinycError(f"{where}: the array for input {name!r} holds no samples (shape {list(x.shape)}); "
                             "give at least one sample")
        if np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all():
            raise TinycError(f"{where}: the array for input {name!r} holds NaN or infinity; give finite numbers")
        most = limit(SAMPLES_LIMIT)
        if x.ndim == len(shape) + 1 and x.shape[0] > most:
            raise TinycError(f"{where}: {x.shape[0]:,} samples for input {name!r}, more than the {most:,} tinyc "
                             f"takes; set {SAMPLES_LIMIT[0]}=N to raise the limit")
        if x.shape == shape:
            layouts.add("single")
            x = x[None]
        elif x.shape[1:] == shape and x.shape[0] > 0:
            layouts.add("batch")
        elif len(shape) > 0 and shape[0] == 1 and x.shape[1:] == shape[1:] and x.shape[0] > 0 and x.ndim == len(shape):
            layouts.add("batch-squeezed")
            x = x[:, None]
        else:
            raise TinycError(
                f"{where}: array for input {name!r} has shape {list(x.shape)}; the model takes {list(shape)} "
                f"(one sample) or [N, {', '.join(map(str, shape))}] (a batch)"
            )
        if np.issubdtype(want, np.floating):
            if not np.issubdtype(x.dtype, np.floating):
                raise TinycError(
                    f"{where}: input {name!r} is float32 but the data is {x.dtype}; give float data "
                    "(e.g. x.astype(numpy.float32))"
                )
            x = x.astype(np.float32)
        elif x.dtype != np.dtype(want):
            raise TinycError(
                f"{where}: input {name!r} is {np.dtype(want).name} but the data is {x.dtype}; "
                f"give {np.dtype(want).name} data (quantized with the model's input scale)"
            )
        arrays[name] = x
    counts = {a.shape[0] for a in arrays.values()}
    if len(counts) != 1 or len(layouts) != 1:
        raise TinycError(
            f"{where}: inputs disagree on the number of samples or their layout; "
            "give every input the same number of samples, all as one sample or all as a batch"
        )
    return Batch(arrays, layouts.pop())


def _to_internal(graph: Graph, name: str, sample: np.ndarray) -> np.ndarray:
    """External sample -> float value in the internal layout."""
    perm = graph.input_perm.get(name)
    x = sample.transpose(perm) if perm else sample
    t = graph.tensors[name]
    if not np.issubdtype(external_dtype(graph, name), np.floating) and t.quant is not None:
        return t.quant.dequantize(x)
    return x.astype(np.float32)


def _to_external(graph: Graph, name: str, value: np.ndarray) -> np.ndarray:
    perm = graph.output_perm.get(name)
    y = value.transpose(perm) if perm else value
    want = external_dtype(graph, name)
    t = graph.tensors[name]
    if not np.issubdtype(want, np.floating) and t.quant is not None:
        return t.quant.quantize(y, want)
    return np.array(y, dtype=want, order="C")  # not ascontiguousarray: it makes a 0-d output 1-d


def shape_like_input(outputs: dict[str, np.ndarray], layout: str) -> dict[str, np.ndarray]:
    if layout == "single":
        return {n: v[0] for n, v in outputs.items()}
    if layout == "batch-squeezed":
        return {n: (v[:, 0] if v.ndim > 1 and v.shape[1] == 1 else v) for n, v in outputs.items()}
    return outputs


def same_file(a, b) -> bool:
    """Do two paths name the same file (the same path, a link to it, or a hard link)?"""
    a, b = Path(a), Path(b)
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return a.resolve() == b.resolve()


def check_output_file(path, inputs=(), suffixes: tuple[str, ...] = (), what: str = "output") -> None:
    """Refuse, before any work, an output file that is one of the command's inputs
    (or a link to one), has the wrong kind of name, or cannot be written where it is."""
    path = Path(path)
    for given in inputs:
        if given is not None and same_file(path, given):
            raise TinycError(f"{path}: is also an input of this command ({given}); give the {what} another name")
    if suffixes and path.suffix.lower() not in suffixes:
        raise TinycError(f"{path}: the {what} must be a file ending in {' or '.join(suffixes)}")
    if path.is_dir():
        raise TinycError(f"{path}: is a directory; give a file name ending in {' or '.join(suffixes) or 'a suffix'}")
    if not path.parent.exists():
        raise TinycError(f"{path}: folder {path.parent} does not exist; create it or choose another {what} path")
    if not path.parent.is_dir():
        raise TinycError(f"{path}: {path.parent} is not a folder; choose another {what} path")


def check_output_path(path, n_outputs: int | None = None, inputs=()) -> None:
    """Refuse an output path that write_outputs could not or must not write, before
    any work is done (``n_outputs`` None: not known yet)."""
    path = Path(path)
    check_output_file(path, inputs, (".npy", ".npz"))
    if path.suffix.lower() != ".npz" and n_outputs is not None and n_outputs > 1:
        raise TinycError(f"{path}: the model has {n_outputs} outputs; write them to an .npz file")


def write_outputs(path, outputs: dict[str, np.ndarray]) -> None:
    """Write .npy (one output) or .npz (any), atomically: on any failure the target
    is left as it was and no temporary file remains."""
    path = Path(path)
    check_output_path(path, len(outputs))
    buf = io.BytesIO()
    if path.suffix == ".npz":
        np.savez(buf, **outputs)
    else:
        np.save(buf, next(iter(outputs.values())))
    write_file(path, buf.getvalue())


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".pgm")


def read_image(graph: Graph, path: Path, pixel_range: tuple[float, float]) -> Batch:
    """One image as a sample of the graph's single input: converted to the input's
    channel count (1: grayscale, 3: RGB), resized to its height and width
    (bilinear), pixels 0..255 mapped linearly onto ``pixel_range``."""
    try:
        from PIL import Image
    except ImportError:
        raise TinycError(f"{path}: reading images needs Pillow; pip install 'tinyc[images]'") from None
    if len(graph.inputs) != 1:
        raise TinycError(f"{path}: images can calibrate a model with one input; this one has {graph.inputs}")
    name = graph.inputs[0]
    shape = external_shape(graph, name)
    if len(shape) != 4 or shape[0] != 1:
        raise TinycError(f"{path}: the model's input {list(shape)} is not one image [1, C, H, W] or [1, H, W, C]")
    channels_last = shape[3] in (1, 3) and shape[1] not in (1, 3)
    c, h, w = (shape[3], shape[1], shape[2]) if channels_last else (shape[1], shape[2], shape[3])
    if c not in (1, 3):
        raise TinycError(f"{path}: the model's input has {c} channels; images give 1 (grayscale) or 3 (RGB)")
    try:
        with Image.open(path) as im:
            pixels = np.asarray(im.convert("L" if c == 1 else "RGB").resize((w, h), Image.BILINEAR), np.float32)
    except (OSError, ValueError) as e:
        raise TinycError(f"{path}: cannot read the image ({e})") from None
    lo, hi = pixel_range
    x = pixels.reshape(h, w, c) * np.float32((hi - lo) / 255.0) + np.float32(lo)
    x = x[None] if channels_last else x.transpose(2, 0, 1)[None]
    return to_batch(graph, {name: x.astype(np.float32)}, str(path))


def read_calibration(graph: Graph, path, pixel_range: tuple[float, float] = (0.0, 1.0)) -> list[dict[str, np.ndarray]]:
    """Calibration samples as float feeds in the internal layout: an .npy / .npz
    file (same conventions as --input), or a folder of such files or of images."""
    path = Path(path)
    if not path.exists():
        raise TinycError(f"{path}: no such calibration file or folder")
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in (".npy", ".npz", *IMAGE_SUFFIXES))
        if not files:
            raise TinycError(f"{path}: folder has no .npy, .npz or image files to calibrate with")
    else:
        files = [path]
    samples = []
    for f in files:
        if f.suffix.lower() in IMAGE_SUFFIXES:
            batch = read_image(graph, f, pixel_range)
        else:
            batch = read_data(graph, f)
        for k in range(batch.count):
            samples.append({n: _to_internal(graph, n, batch.arrays[n][k]) for n in graph.inputs})
    if not samples:
        raise TinycError(f"{path}: holds no samples; give at least one calibration sample")
    for s in samples:
        for n, x in s.items():
            if not np.all(np.isfinite(x)):
                raise TinycError(f"{path}: calibration data for input {n!r} holds NaN or infinity")
    return samples


def write_file(path: Path, data: bytes) -> None:
    """Write a file atomically (a temporary file beside it, renamed into place), as
    readable as the umask allows; on failure the target is unchanged."""
    path = Path(path)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tinyc-", suffix=path.suffix)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600
        os.replace(tmp, path)
        tmp = None
    except OSError as e:
        raise TinycError(f"{path}: cannot write ({e.strerror or e}); check the folder's permissions and free space") from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
