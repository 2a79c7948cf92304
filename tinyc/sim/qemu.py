"""Build firmware with arm-none-eabi-gcc and run it in qemu-system-arm.

The firmware support code (vector table and startup, semihosting, the
instruction-count markers, the linker script template) is package data in
``tinyc/firmware``; the QEMU TCG plugin that counts instructions between the
markers is ``tinyc/sim/plugin/insncount.c``, compiled with the host C compiler
on first use and cached per user.

What an instruction count counts (see insncount.c): the guest instructions
executed from the first instruction of ``tinyc_bench_begin`` (included) to the
first instruction of ``tinyc_bench_end`` (excluded), each instruction 1, under
``-icount shift=0``: the same ELF and input give the same count on every run.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import os
import re
import shlex
import shutil
import struct
import subprocess
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import TinycError

FIRMWARE_DIR = Path(__file__).resolve().parent.parent / "firmware"
PLUGIN_SOURCE = Path(__file__).resolve().parent / "plugin" / "insncount.c"

#: Firmware sources every tinyc firmware links (beside main.c and the model).
FIRMWARE_SOURCES = ("startup.c", "semihost.c", "bench.c")

ARM_CFLAGS = ["-std=c99", "-O2", "-ffreestanding", "-ffunction-sections", "-fdata-sections",
              "-fstack-usage", "-fcallgraph-info=su", "-Wall", "-Wextra", "-Werror"]
#: Added for the generated model (NAME.c): every constant it defines is used, so
#: per-object sections would garbage-collect nothing, and in one section gcc
#: addresses neighbouring constants (parameter records, biases, multipliers)
#: from a shared section anchor instead of a literal each: NAME_invoke's calls
#: get shorter (mcunetv2_large: 440 bytes less code on the Cortex-M4).
MODEL_CFLAGS = ["-fno-data-sections"]

DEBIAN_TOOLCHAIN = "apt-get install --no-install-recommends gcc-arm-none-eabi libnewlib-arm-none-eabi"


@dataclass(frozen=True)
class Machine:
    """A QEMU machine that runs tinyc firmware (facts checked with QEMU 7.2 and gcc 12)."""

    name: str
    core: str  # -mcpu
    fpu_flags: tuple[str, ...]  # -mfpu / -mfloat-abi flags that build and run on it
    flash: tuple[int, int]  # (origin, length) to link code and constants against (the vector table at 0 or its alias)
    ram: tuple[int, int]  # (origin, length) to link data, bss and stack against
    more_ram: tuple[tuple[int, int], ...] = ()  # other regions checked to work as `ram` (same counts)
    notes: str = ""

    def cflags(self) -> list[str]:
        return [f"-mcpu={self.core}", "-mthumb", *self.fpu_flags]


MB = 1024 * 1024
KB = 1024

# Every entry is checked by tests/test_qemu.py with a firmware built from
# tinyc/firmware that reads a file over semihosting, writes one, measures its
# stack, exits with a chosen code and is counted by the plugin (the same counts
# on every machine with the same core, and in every `more_ram` region); the
# MPS2 boards also boot a 2 MB const array plus a 1.5 MB .bss array.
# Memory maps from `info mtree -f` in QEMU 7.2's monitor.
MACHINES: dict[str, Machine] = {
    "mps2-an386": Machine(
        "mps2-an386", "cortex-m4", ("-mfpu=fpv4-sp-d16", "-mfloat-abi=hard"),
        flash=(0x00000000, 4 * MB), ram=(0x20000000, 4 * MB), more_ram=((0x21000000, 16 * MB),),
        notes="flash = ZBT SSRAM1 (RAM in QEMU: writable; mirrored at 0x00400000); ram = ZBT SSRAM2/3 "
              "(mirrored at 0x20400000); also PSRAM 16 MB at 0x21000000 and block RAM 16 KB at 0x01000000",
    ),
    "mps2-an500": Machine(
        "mps2-an500", "cortex-m7", ("-mfpu=fpv5-d16", "-mfloat-abi=hard"),
        flash=(0x00000000, 4 * MB), ram=(0x20000000, 4 * MB), more_ram=((0x60000000, 16 * MB),),
        notes="the AN386 SSRAM layout, double-precision FPU; PSRAM 16 MB at 0x60000000 (no block RAM)",
    ),
    "mps3-an547": Machine(
        "mps3-an547", "cortex-m55", ("-mfloat-abi=hard",),
        flash=(0x00000000, 512 * KB), ram=(0x20000000, 512 * KB),
        more_ram=((0x01000000, 2 * MB), (0x21000000, 4 * MB), (0x60000000, 256 * MB)),
        notes="flash = ITCM, ram = DTCM (plain RAM; secure aliases at 0x10000000 / 0x30000000). -mfpu left "
              "at auto: FP + MVE (-mfpu=fpv5-d16 also builds and runs, scalar FP only). SRAM 2 MB at "
              "0x01000000, ISRAM 4 MB at 0x21000000 and DDR (2 GB) at 0x60000000 sit behind TrustZone MPCs: "
              "fine for data (same counts and speed), but the core boots from the vector table at 0, so code "
              "stays in ITCM; QSPI 8 MB at 0x28000000 is ROM behind an MPC that -kernel cannot load",
    ),
    "mps2-an385": Machine(
        "mps2-an385", "cortex-m3", ("-mfloat-abi=soft",),
        flash=(0x00000000, 4 * MB), ram=(0x20000000, 4 * MB), more_ram=((0x21000000, 16 * MB),),
        notes="the AN386 memory map with a Cortex-M3 (ARMv7-M: no DSP extension, no FPU): the stand-in for "
              "cores that run tinyc's portable kernels",
    ),
    "microbit": Machine(
        "microbit", "cortex-m0", ("-mfloat-abi=soft",),
        flash=(0x00000000, 256 * KB), ram=(0x20000000, 16 * KB),
        notes="BBC micro:bit, nRF51822 (Cortex-M0, ARMv6-M): 256 KB flash, 16 KB SRAM",
    ),
    "netduinoplus2": Machine(
        "netduinoplus2", "cortex-m4", ("-mfpu=fpv4-sp-d16", "-mfloat-abi=hard"),
        flash=(0x08000000, 1 * MB), ram=(0x20000000, 192 * KB),
        notes="STM32F405: flash read-only, aliased at 0x0 (the core boots from the alias); QEMU maps "
              "192 KB of SRAM at 0x20000000 (the chip has 128 KB there); the chip's 64 KB CCM at "
              "0x10000000 is not mapped by QEMU 7.2 (using it locks the core up)",
    ),
}


@dataclass
class QemuResult:
    exit_code: int
    stdout: str
    stderr: str
    instructions: list[int] = field(default_factory=list)  # one per begin/end marker pair
    begins_at: list[int] = field(default_factory=list)  # instructions since reset at each begin (plugin at=1)
    cut_at: int | None = None  # the plugin's limit=N stopped the run here

    @property
    def fault(self) -> str | None:
        """The fault startup.c's handler reported ("HardFault (exception 3) at pc 0x..."; exit code
        128 + exception number), or QEMU's own fatal error (a lockup: exit code -6), if any."""
        for line in self.stderr.splitlines():
            if line.startswith("tinyc: ") and "(exception " in line:
                return line[len("tinyc: "):]
            if line.startswith("qemu: fatal: "):
                return line[len("qemu: fatal: "):]
        return None


# ---------------------------------------------------------------------------
# tools


def find_qemu() -> str:
    qemu = shutil.which("qemu-system-arm")
    if qemu is None:
        raise TinycError("qemu-system-arm is not installed; Debian: apt-get install --no-install-recommends "
                         "qemu-system-arm")
    return qemu


def arm_toolchain() -> str | None:
    """The path of arm-none-eabi-gcc, or None."""
    return shutil.which("arm-none-eabi-gcc")


def require_arm_toolchain() -> str:
    gcc = arm_toolchain()
    if gcc is None:
        raise TinycError(f"arm-none-eabi-gcc is not installed; Debian: {DEBIAN_TOOLCHAIN}")
    return gcc


def _arm_tool(name: str) -> str:
    """arm-none-eabi-<name>, next to arm-none-eabi-gcc or on PATH."""
    gcc = require_arm_toolchain()
    beside = Path(gcc).with_name(f"arm-none-eabi-{name}")
    if beside.exists():
        return str(beside)
    found = shutil.which(f"arm-none-eabi-{name}")
    if found is None:
        raise TinycError(f"arm-none-eabi-{name} is not installed; Debian: {DEBIAN_TOOLCHAIN}")
    return found


def _host_cc() -> list[str]:
    cc = shlex.split(os.environ.get("CC", ""))
    if cc:
        if shutil.which(cc[0]) is None:
            raise TinycError(f"CC={cc[0]} is not found; the QEMU instruction counter is a plugin built with "
                             "the host C compiler: install gcc (Debian: apt-get install gcc) or fix CC")
        return cc
    for name in ("cc", "gcc", "clang"):
        if shutil.which(name):
            return [name]
    raise TinycError("no host C compiler (cc) to build the QEMU instruction-count plugin; Debian: apt-get "
                     "install gcc, or set CC, or run without instruction counts")


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "tinyc"


def plugin_path() -> Path:
    """The instruction-count plugin (a shared object for qemu-system-arm), built on first use.

    Cached in $XDG_CACHE_HOME/tinyc (default ~/.cache/tinyc) under a name keyed by
    the source and the compiler command, written atomically (a temporary file
    renamed into place), so concurrent first uses are safe.
    """
    source = PLUGIN_SOURCE.read_bytes()
    cc = _host_cc()
    flags = ["-shared", "-fPIC", "-O2", "-fvisibility=hidden", "-Wall", "-Wextra"]
    key = hashlib.sha256(source + "\0".join(cc + flags).encode()).hexdigest()[:16]
    for directory in (_cache_dir(), Path(tempfile.gettempdir()) / f"tinyc-{os.getuid()}"):
        target = directory / f"insncount-{key}.so"
        if target.exists():
            return target
        try:
            directory.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".insncount-", suffix=".so", dir=directory)
        except OSError:
            continue
        os.close(fd)
        try:
            proc = subprocess.run([*cc, *flags, "-o", tmp, str(PLUGIN_SOURCE)], capture_output=True, text=True)
            if proc.returncode != 0:
                first = next((ln for ln in proc.stderr.splitlines() if "error" in ln), proc.stderr.strip()[:300])
                raise TinycError(f"building the QEMU instruction-count plugin with {cc[0]} failed: {first}")
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return target
    raise TinycError(f"cannot write the QEMU instruction-count plugin to {_cache_dir()}; set XDG_CACHE_HOME "
                     "to a writable directory")


def symbol_address(elf: Path | str, name: str) -> int:
    """The address of a symbol in an ELF (a Thumb function's bit 0 cleared)."""
    proc = subprocess.run([_arm_tool("nm"), str(elf)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise TinycError(f"{elf}: cannot read its symbols: {proc.stderr.strip()[:300]}")
    for line in proc.stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[2] == name:
            return int(parts[0], 16) & ~1
    raise TinycError(f"{elf}: no symbol {name} (link tinyc/firmware/bench.c and call tinyc_bench_begin / "
                     "tinyc_bench_end around the code to count)")


# ---------------------------------------------------------------------------
# running

_INSNS = re.compile(r"^tinyc-insns (\d+)$", re.M)
_AT = re.compile(r"^tinyc-at (\d+)$", re.M)
_CUT = re.compile(r"^tinyc-cut (\d+)$", re.M)


def run_qemu(elf: Path | str, machine: str, cwd: Path | str, timeout: float = 120.0, count: bool = True,
             extra_args: Sequence[str] = (), plugin_options: Sequence[str] = ()) -> QemuResult:
    """Run a firmware ELF on a QEMU machine with semihosting, deterministically.

    Semihosting file paths are relative to ``cwd``; the firmware's exit code
    (SYS_EXIT_EXTENDED, 8 bits) is the result's exit_code. With ``count``, the
    instruction-count plugin reports one count per tinyc_bench_begin /
    tinyc_bench_end pair (``instructions``); ``plugin_options`` go to it
    (``limit=N``: a power cut after N instructions; ``at=1``: where each
    begin marker ran, ``begins_at``).
    """
    elf = Path(elf).resolve()
    qemu = find_qemu()
    if not elf.exists():
        raise TinycError(f"{elf}: no such firmware image")
    cmd = [qemu, "-M", machine, "-nographic", "-monitor", "none", "-serial", "null",
           "-semihosting-config", "enable=on,target=native", "-icount", "shift=0", "-kernel", str(elf)]
    with tempfile.TemporaryDirectory(prefix="tinyc-qemu-") as tmp:
        log = Path(tmp) / "plugin.log"
        if count:
            begin = symbol_address(elf, "tinyc_bench_begin")
            end = symbol_address(elf, "tinyc_bench_end")
            options = "".join(f",{o}" for o in plugin_options)
            cmd += ["-plugin", f"{plugin_path()},begin={begin:#x},end={end:#x}{options}", "-d", "plugin", "-D",
                    str(log)]
        cmd += list(extra_args)
        try:
            proc = subprocess.run(cmd, cwd=str(cwd), stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise TinycError(f"qemu-system-arm -M {machine} running {elf.name} did not finish within {timeout:g} s "
                             "(a hang, or a model too slow for the emulator); raise --timeout") from None
        stdout = proc.stdout.decode("utf-8", "replace")
        stderr = proc.stderr.decode("utf-8", "replace")
        qemu_error = next((ln for ln in stderr.splitlines()
                           if ln.startswith("qemu-system-arm:") and not ln.startswith("qemu-system-arm: warning:")),
                          None)
        if qemu_error is not None:
            raise TinycError(f"QEMU could not run {elf.name} on {machine}: {qemu_error}")
        text = log.read_text() if count and log.exists() else ""
    cut = _CUT.search(text)
    return QemuResult(proc.returncode, stdout, stderr, [int(n) for n in _INSNS.findall(text)],
                      [int(n) for n in _AT.findall(text)], int(cut.group(1)) if cut else None)


# ---------------------------------------------------------------------------
# building


def render_linker_script(flash_origin: int, flash_length: int, ram_origin: int, ram_length: int,
                         stack_size: int, heap_size: int | None = None) -> str:
    """The GNU ld script for a memory layout (tinyc/firmware/linker.ld.j2)."""
    import jinja2

    template = jinja2.Template((FIRMWARE_DIR / "linker.ld.j2").read_text(), keep_trailing_newline=True,
                               trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined)
    return template.render(flash_origin=flash_origin, flash_length=flash_length, ram_origin=ram_origin,
                           ram_length=ram_length, stack_size=stack_size, heap_size=heap_size)


def firmware_sources() -> list[Path]:
    """startup.c, semihost.c and bench.c (include FIRMWARE_DIR for semihost.h and bench.h)."""
    return [FIRMWARE_DIR / name for name in FIRMWARE_SOURCES]


def object_dir(out_elf: Path | str) -> Path:
    """Where compile_firmware puts objects, .su (stack usage) and .ci (call graph) files
    when it is given no build_dir."""
    out_elf = Path(out_elf)
    return out_elf.with_name(out_elf.name + ".obj")


_OVERFLOW = re.compile(r"region `([^']+)' overflowed by (\d+) bytes")


def _first_error(stderr: str) -> str:
    for line in stderr.splitlines():
        if "error" in line.lower() or "undefined reference" in line:
            return line.strip()
    return stderr.strip().splitlines()[0] if stderr.strip() else "(no message)"


def cpu_flags(mcpu: str | Sequence[str], fpu_flags: Sequence[str] = ()) -> list[str]:
    """-mcpu / -mthumb / FPU flags from a core name ("cortex-m4") and FPU flags, or
    from the whole list of CPU flags (Board.cflags())."""
    if isinstance(mcpu, str):
        return [mcpu if mcpu.startswith("-mcpu=") else f"-mcpu={mcpu}", "-mthumb", *fpu_flags]
    cpu = [*mcpu, *fpu_flags]
    if "-mthumb" not in cpu:
        cpu.append("-mthumb")
    return cpu


def _core(cpu: Sequence[str]) -> str:
    return next((f[6:] for f in cpu if f.startswith("-mcpu=")), "the target")


def compile_objects(jobs: Sequence[tuple], include_dirs: Iterable[Path | str], cpu: Sequence[str],
                    extra_cflags: Sequence[str] = ()) -> None:
    """Compile each (source, object) or (source, object, that source's own flags)
    job with arm-none-eabi-gcc and ARM_CFLAGS, in parallel; gcc writes the .su
    (stack usage) and .ci (call graph) files beside each object. A failure raises
    TinycError naming the source."""
    gcc = require_arm_toolchain()
    includes = [f"-I{d}" for d in include_dirs]
    for job in jobs:
        Path(job[1]).parent.mkdir(parents=True, exist_ok=True)

    def compile_one(job: tuple) -> subprocess.CompletedProcess:
        src, obj, own = (*job, ())[:3]
        return subprocess.run([gcc, *cpu, *ARM_CFLAGS, *own, *extra_cflags, *includes, "-c", str(src), "-o",
                               str(obj)], capture_output=True, text=True)

    with concurrent.futures.ThreadPoolExecutor(max_workers=min(len(jobs), os.cpu_count() or 1) or 1) as pool:
        results = list(pool.map(compile_one, jobs))
    for (src, *_), proc in zip(jobs, results):
        if proc.returncode != 0:
            raise TinycError(f"compiling {Path(src).name} for {_core(cpu)} failed: {_first_error(proc.stderr)}")


def link_objects(objects: Sequence[Path | str], out_elf: Path | str, cpu: Sequence[str],
                 ldscript: Path | str) -> None:
    """Link objects into out_elf (-nostdlib -lgcc, unused sections dropped, the map
    file beside the ELF). A region overflow or any other failure raises TinycError
    and leaves no ELF."""
    gcc = require_arm_toolchain()
    out_elf = Path(out_elf)
    link = [gcc, *cpu, "-nostartfiles", "-nostdlib", "-Wl,--gc-sections", f"-Wl,-Map={out_elf.with_suffix('.map')}",
            "-T", str(ldscript), "-o", str(out_elf), *map(str, objects), "-lgcc"]
    proc = subprocess.run(link, capture_output=True, text=True)
    if proc.returncode != 0:
        if out_elf.exists():
            out_elf.unlink()
        overflows = _OVERFLOW.findall(proc.stderr)
        if overflows:
            what = "; ".join(f"region {region} overflowed by {int(n):,} bytes" for region, n in overflows)
            raise TinycError(f"{out_elf.name} does not fit the memory of its linker script {Path(ldscript).name}: "
                             f"{what}")
        raise TinycError(f"linking {out_elf.name} failed: {_first_error(proc.stderr)}")


def compile_firmware(sources: Iterable[Path | str], include_dirs: Iterable[Path | str], out_elf: Path | str,
                     mcpu: str | Sequence[str], fpu_flags: Sequence[str] | Path | str = (),
                     ldscript: Path | str | None = None, extra_cflags: Sequence[str] = (),
                     build_dir: Path | str | None = None) -> None:
    """Compile and link a firmware ELF with arm-none-eabi-gcc.

    ``mcpu`` is a core ("cortex-m4") with its FPU flags in ``fpu_flags``, or the
    whole list of CPU flags (Board.cflags()); ``compile_firmware(srcs, incs,
    elf, cpu_flags, ldscript)`` works too. Each source compiles to
    ``<stem>.o`` in ``build_dir`` (default ``<out_elf>.obj``) with its .su
    stack usage and .ci call graph beside it; then link_objects.
    """
    if ldscript is None:
        if not isinstance(fpu_flags, (str, os.PathLike)):
            raise TypeError("compile_firmware needs a linker script")
        ldscript, fpu_flags = fpu_flags, ()
    if isinstance(fpu_flags, (str, os.PathLike)):
        raise TypeError("fpu_flags is a list of flags")
    cpu = cpu_flags(mcpu, fpu_flags)
    out_elf = Path(out_elf)
    objdir = Path(build_dir) if build_dir is not None else object_dir(out_elf)
    objdir.mkdir(parents=True, exist_ok=True)
    for stale in [*objdir.glob("*.o"), *objdir.glob("*.su"), *objdir.glob("*.ci")]:
        stale.unlink()
    jobs: list[tuple[Path, Path]] = []
    used: set[str] = set()
    for src in map(Path, sources):
        stem, n = src.stem, 1
        while stem in used:
            n += 1
            stem = f"{src.stem}_{n}"
        used.add(stem)
        jobs.append((src, objdir / f"{stem}.o"))
    compile_objects(jobs, include_dirs, cpu, extra_cflags)
    link_objects([obj for _, obj in jobs], out_elf, cpu, ldscript)


# ---------------------------------------------------------------------------
# measuring

_SHT_NOBITS = 8
_SHF_WRITE = 0x1
_SHF_ALLOC = 0x2
_SHF_EXECINSTR = 0x4


def elf_sections(elf: Path | str) -> list[tuple[str, int, int, int, int]]:
    """(name, type, flags, address, size) of every section of a 32-bit little-endian ELF."""
    data = Path(elf).read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 1 or data[5] != 1:
        raise TinycError(f"{elf}: not a 32-bit little-endian ELF file")
    shoff, = struct.unpack_from("<I", data, 0x20)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x2E)
    headers = [struct.unpack_from("<IIIIIIIIII", data, shoff + i * shentsize) for i in range(shnum)]
    strtab_off = headers[shstrndx][4]

    def name(off: int) -> str:
        end = data.index(b"\0", strtab_off + off)
        return data[strtab_off + off:end].decode()

    return [(name(h[0]), h[1], h[2], h[3], h[5]) for h in headers[1:]]


def elf_sizes(elf: Path | str) -> dict[str, int]:
    """Bytes of a linked firmware, counted as arm-none-eabi-size -B counts them.

    text: code and constants (weights) in flash; data: initialized RAM (its
    initial values take as much again in flash); bss: RAM that is not loaded:
    zeroed variables (the arena) and the linker script's stack reserve
    (.stack_reserve) and heap (.heap), which are also reported on their own
    as ``stack`` and ``heap``. flash = text + data; ram = data + bss (all the
    RAM the image claims, the stack included).
    """
    sizes = {"text": 0, "data": 0, "bss": 0, "stack": 0, "heap": 0}
    for name, typ, flags, _addr, size in elf_sections(elf):
        if not flags & _SHF_ALLOC:
            continue
        if typ == _SHT_NOBITS:
            sizes["bss"] += size
            if name == ".stack_reserve":
                sizes["stack"] += size
            elif name == ".heap":
                sizes["heap"] += size
        elif flags & _SHF_WRITE:
            sizes["data"] += size
        else:
            sizes["text"] += size
    sizes["flash"] = sizes["text"] + sizes["data"]
    sizes["ram"] = sizes["data"] + sizes["bss"]
    return sizes


def su_files(out_elf: Path | str) -> list[Path]:
    """The .su files compile_firmware wrote for an ELF (given no build_dir)."""
    return sorted(object_dir(out_elf).glob("*.su"))


def stack_usage(files: Iterable[Path | str]) -> dict[str, int]:
    """Stack frame bytes per function from gcc's -fstack-usage files.

    Keys are function names; a static function whose name occurs in several
    files keeps the largest frame. Frames gcc calls "dynamic" are its minimum.
    """
    frames: dict[str, int] = {}
    for path in files:
        for line in Path(path).read_text().splitlines():
            parts = line.split("\t")
            if len(parts) < 2 or not parts[1].strip().isdigit():
                continue
            func = parts[0].rsplit(":", 1)[-1]
            frames[func] = max(frames.get(func, 0), int(parts[1]))
    return frames


@dataclass
class StackEstimate:
    bytes: int  # the deepest chain of frames from the root
    chain: list[str]  # that chain, root first (function names)
    unknown: list[str]  # called functions without a frame size (libgcc, asm): counted as 0
    recursive: bool  # the call graph has a cycle reachable from the root: bytes is not a bound
    indirect: bool  # a reachable function calls through a pointer: bytes is not a bound


_CI_NODE = re.compile(r'node: \{ title: "([^"]+)" label: "([^"]*)"')
_CI_EDGE = re.compile(r'edge: \{ sourcename: "([^"]+)" targetname: "([^"]+)"')
_CI_BYTES = re.compile(r"\\n(\d+) bytes")


def max_stack_estimate(ci_files: Iterable[Path | str], root: str = "Reset_Handler",
                       indirect_targets: Iterable[str] = ()) -> StackEstimate:
    """The deepest stack the static call graph allows from ``root`` (gcc -fcallgraph-info=su).

    An upper estimate of the stack the code needs (exception handlers apart),
    valid when neither ``recursive`` nor ``indirect`` is set; functions the
    graph has no frame for (libgcc helpers) count 0 and are listed. A call
    through a pointer counts as a call of each of ``indirect_targets`` (function
    names, static ones without their file) when they are given, else sets
    ``indirect``.
    """
    frames: dict[str, int] = {}
    calls: dict[str, set[str]] = {}
    for path in ci_files:
        text = Path(path).read_text()
        for title, label in _CI_NODE.findall(text):
            m = _CI_BYTES.search(label)
            if m:
                frames[title] = max(frames.get(title, 0), int(m.group(1)))
        for src, dst in _CI_EDGE.findall(text):
            calls.setdefault(src, set()).add(dst)
    targets = set(indirect_targets)
    if targets:
        calls["__indirect_call"] = {f for f in frames if f.rsplit(":", 1)[-1] in targets}
    unknown: set[str] = set()
    state: dict[str, int] = {}  # 1 visiting, 2 done
    best: dict[str, tuple[int, list[str]]] = {}
    flags = {"recursive": False, "indirect": False}

    def deepest(fn: str) -> tuple[int, list[str]]:
        if state.get(fn) == 2:
            return best[fn]
        if state.get(fn) == 1:
            flags["recursive"] = True
            return 0, []
        state[fn] = 1
        if fn not in frames:
            if fn == "__indirect_call" and not targets:
                flags["indirect"] = True
            else:
                unknown.add(fn)
        below = (0, [])
        for callee in sorted(calls.get(fn, ())):
            got = deepest(callee)
            if got[0] > below[0]:
                below = got
        state[fn] = 2
        best[fn] = (frames.get(fn, 0) + below[0], [fn, *below[1]])
        return best[fn]

    total, chain = deepest(root)
    # gcc names a static function "path:name" in the graph
    chain = [fn.rsplit(":", 1)[-1] for fn in chain]
    return StackEstimate(total, chain, sorted(unknown - {"__indirect_call"}), flags["recursive"], flags["indirect"])
