"""Firmware support (tinyc/firmware), the QEMU runner and the instruction counter
(tinyc/sim/qemu.py, tinyc/sim/plugin/insncount.c) on the QEMU stand-in machines.

Needs arm-none-eabi-gcc, qemu-system-arm and a host C compiler (for the plugin);
skipped, with the reason, without them.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest

from tinyc.errors import TinycError
from tinyc.sim import qemu

MISSING = [tool for tool in ("arm-none-eabi-gcc", "qemu-system-arm") if shutil.which(tool) is None]
if shutil.which("cc") is None and shutil.which("gcc") is None:
    MISSING.append("a host C compiler (cc) for the QEMU plugin")
pytestmark = pytest.mark.skipif(bool(MISSING), reason=f"needs {', '.join(MISSING)}")

STACK = 8192
SPIN = 1000

# Reads in.bin over semihosting; counts a fixed asm loop (pair 1) and an FNV-1a
# checksum of the input (pair 2); measures the stack before and after a
# function with a 2 KB local array; writes checksum, stack figures and a
# result of that function to out.bin; exits with 7.
MAIN_C = textwrap.dedent(r"""
    #include <stdint.h>
    #include "bench.h"
    #include "semihost.h"

    uint32_t tinyc_stack_used(void);

    /* gcc writes ARMv6-M code in the divided assembler syntax */
    #if __ARM_ARCH_ISA_THUMB == 1
    #define SUBS_R0_1 "sub r0, #1"
    #else
    #define SUBS_R0_1 "subs r0, r0, #1"
    #endif

    static uint8_t buf[256];

    __attribute__((noipa)) static uint32_t fnv1a(const uint8_t *p, int n)
    {
        uint32_t h = 2166136261u;
        int i;
        for (i = 0; i < n; i++) {
            h = (h ^ p[i]) * 16777619u;
        }
        return h;
    }

    __attribute__((noipa)) static uint32_t deep(uint32_t seed)
    {
        volatile uint8_t big[2048];
        uint32_t i;
        for (i = 0; i < sizeof big; i++) {
            big[i] = (uint8_t)(seed + i);
        }
        return big[seed % sizeof big];
    }

    static void put32(uint8_t *out, uint32_t v)
    {
        out[0] = (uint8_t)v;
        out[1] = (uint8_t)(v >> 8);
        out[2] = (uint8_t)(v >> 16);
        out[3] = (uint8_t)(v >> 24);
    }

    int main(void)
    {
        uint8_t out[16];
        uint32_t h, before, after, d;
        uint32_t n = SPIN;
        int len, o;
        int in = tinyc_sh_open("in.bin", "rb");
        if (in < 0) {
            return 20;
        }
        len = tinyc_sh_flen(in);
        if (len < 0 || len > (int)sizeof buf || tinyc_sh_read(in, buf, (uint32_t)len) != 0) {
            return 21;
        }
        tinyc_sh_close(in);
        /* Pair 1, exactly 2 * SPIN + 3 instructions: the begin marker's bx lr,
         * mov, SPIN x (subs, bne), and the bl that calls the end marker. */
        __asm__ volatile(
            "bl tinyc_bench_begin\n\t"
            "mov r0, %0\n"
            "1:\n\t"
            SUBS_R0_1 "\n\t"
            "bne 1b\n\t"
            "bl tinyc_bench_end\n\t"
            :
            : "r"(n)
            : "r0", "r1", "r2", "r3", "r12", "lr", "cc", "memory");
        tinyc_bench_begin();
        h = fnv1a(buf, len);
        tinyc_bench_end();
        before = tinyc_stack_used();
        d = deep(h);
        after = tinyc_stack_used();
        put32(out, h);
        put32(out + 4, before);
        put32(out + 8, after);
        put32(out + 12, d);
        o = tinyc_sh_open("out.bin", "wb");
        if (o < 0 || tinyc_sh_write(o, out, sizeof out) != 0) {
            return 22;
        }
        tinyc_sh_close(o);
        tinyc_sh_write0("done\n");
        return 7;
    }
""")

# cortex-m0plus code on microbit's Cortex-M0: the startup code also runs on ARMv6-M
# built for the M0+ (rp2040's core, which QEMU has no machine for).
EXTRA_MACHINES = {
    "microbit-m0plus": qemu.Machine("microbit", "cortex-m0plus", (), (0, 256 << 10), (0x20000000, 16 << 10)),
}
ALL_MACHINES = {**qemu.MACHINES, **EXTRA_MACHINES}


def fnv1a(data: bytes) -> int:
    h = 2166136261
    for b in data:
        h = ((h ^ b) * 16777619) & 0xFFFFFFFF
    return h


def build(work: Path, machine: qemu.Machine, main_c: str, name: str = "fw", defines: tuple[str, ...] = (),
          stack: int = STACK, ram: tuple[int, int] | None = None, flash: tuple[int, int] | None = None) -> Path:
    work.mkdir(parents=True, exist_ok=True)
    (work / f"{name}.c").write_text(main_c)
    flash = flash or machine.flash
    ram = ram or machine.ram
    ld = work / f"{name}.ld"
    ld.write_text(qemu.render_linker_script(flash[0], flash[1], ram[0], ram[1], stack))
    elf = work / f"{name}.elf"
    qemu.compile_firmware([work / f"{name}.c", *qemu.firmware_sources()], [qemu.FIRMWARE_DIR], elf, machine.core,
                          list(machine.fpu_flags), ld, [f"-D{d}" for d in defines])
    return elf


@pytest.mark.parametrize("name", list(ALL_MACHINES))
def test_machine_round_trip(tmp_path, name):
    machine = ALL_MACHINES[name]
    data = bytes(range(7, 7 + 100))
    (tmp_path / "in.bin").write_bytes(data)
    elf = build(tmp_path / "a", machine, MAIN_C, defines=(f"SPIN={SPIN}",))
    first = qemu.run_qemu(elf, machine.name, tmp_path)
    assert first.exit_code == 7, first.stderr
    assert first.stderr == "done\n"
    out = (tmp_path / "out.bin").read_bytes()
    h, before, after, d = (int.from_bytes(out[i:i + 4], "little") for i in range(0, 16, 4))
    assert h == fnv1a(data)
    assert d == (h + h % 2048) & 0xFF
    # Stack painting: the 2 KB array shows, and nothing overflowed the stack.
    assert 0 < before < after <= STACK
    assert after >= 2048 and after - before >= 1024

    # Instruction counts: one per marker pair, the same on every run; the asm
    # pair is exactly 2 * SPIN + 3 (begin marker included, end marker excluded).
    assert len(first.instructions) == 2
    assert first.instructions[0] == 2 * SPIN + 3
    assert first.instructions[1] > 2 * len(data)
    second = qemu.run_qemu(elf, machine.name, tmp_path)
    assert second.instructions == first.instructions

    elf2 = build(tmp_path / "b", machine, MAIN_C, defines=(f"SPIN={2 * SPIN}",))
    doubled = qemu.run_qemu(elf2, machine.name, tmp_path)
    assert doubled.exit_code == 7
    assert doubled.instructions[0] - first.instructions[0] == 2 * SPIN
    assert doubled.instructions[1] == first.instructions[1]

    # Without the plugin the program behaves the same.
    plain = qemu.run_qemu(elf, machine.name, tmp_path, count=False)
    assert (plain.exit_code, plain.instructions) == (7, [])


@pytest.mark.parametrize("name,ram", [(m.name, r) for m in qemu.MACHINES.values() for r in m.more_ram])
def test_more_ram_regions(tmp_path, name, ram):
    """Data, bss and stack in the other RAM regions: same results, same counts."""
    machine = qemu.MACHINES[name]
    (tmp_path / "in.bin").write_bytes(bytes(range(100)))
    results = []
    for label, region in (("main", machine.ram), ("more", ram)):
        elf = build(tmp_path / label, machine, MAIN_C, defines=(f"SPIN={SPIN}",), ram=region)
        result = qemu.run_qemu(elf, name, tmp_path)
        assert result.exit_code == 7, result.stderr
        results.append((result.instructions, (tmp_path / "out.bin").read_bytes()[:4]))
    assert results[0] == results[1]


def test_unmapped_ram_locks_up(tmp_path):
    """netduinoplus2 has no CCM in QEMU 7.2: a stack there locks the core up."""
    machine = qemu.MACHINES["netduinoplus2"]
    elf = build(tmp_path, machine, "int main(void)\n{\n    return 7;\n}\n", ram=(0x10000000, 64 << 10))
    result = qemu.run_qemu(elf, machine.name, tmp_path, count=False)
    assert result.exit_code != 7
    assert result.fault is not None and result.fault.startswith("Lockup")


def test_checksum_count_scales_with_input(tmp_path):
    """The checksum's count grows by the same amount for every 50 input bytes."""
    machine = qemu.MACHINES["mps2-an386"]
    elf = build(tmp_path, machine, MAIN_C, defines=(f"SPIN={SPIN}",))
    counts = []
    for n in (50, 100, 150):
        (tmp_path / "in.bin").write_bytes(bytes(n))
        counts.append(qemu.run_qemu(elf, machine.name, tmp_path).instructions[1])
    assert counts[2] - counts[1] == counts[1] - counts[0] > 0


def test_hang_is_killed_by_the_timeout(tmp_path):
    machine = qemu.MACHINES["mps2-an386"]
    elf = build(tmp_path, machine, "int main(void)\n{\n    for (;;) {\n    }\n}\n")
    with pytest.raises(TinycError, match=r"did not finish within 1 s \(a hang, or a model too slow for the "
                                         r"emulator\); raise --timeout"):
        qemu.run_qemu(elf, machine.name, tmp_path, timeout=1.0, count=False)


def test_fault_exits_with_its_code(tmp_path):
    machine = qemu.MACHINES["mps2-an386"]
    src = "int main(void)\n{\n    void (*volatile bad)(void) = (void (*)(void))0xFFFFFFF0u;\n    bad();\n    return 0;\n}\n"
    elf = build(tmp_path, machine, src)
    result = qemu.run_qemu(elf, machine.name, tmp_path, count=False)
    # Executing from the system region (execute-never) is a MemManage fault;
    # startup.c enables those, else it would escalate to HardFault (131).
    assert result.exit_code == 128 + 4
    assert result.fault == "MemManage (exception 4) at pc 0xfffffff0"


def test_stack_overflow_faults_on_armv8m(tmp_path):
    """On the Cortex-M55 the startup code sets MSPLIM: overflowing the stack is a UsageFault."""
    machine = qemu.MACHINES["mps3-an547"]
    src = textwrap.dedent("""
        #include <stdint.h>
        __attribute__((noipa)) static uint32_t eat(volatile uint8_t *p, uint32_t depth)
        {
            volatile uint8_t big[1024];
            big[0] = p[0];
            return depth == 0 ? big[0] : big[0] + eat(big, depth - 1);
        }
        int main(void)
        {
            volatile uint8_t seed[1] = {1};
            return (int)eat(seed, 100); /* 100 KB: more than the 8 KB stack */
        }
    """)
    elf = build(tmp_path, machine, src)
    result = qemu.run_qemu(elf, machine.name, tmp_path, count=False)
    assert result.exit_code == 128 + 6, result.stderr
    assert result.fault is not None and result.fault.startswith("UsageFault")


def test_bss_larger_than_ram_fails_to_link(tmp_path):
    machine = qemu.MACHINES["mps2-an386"]
    src = ("#include <stdint.h>\nstatic volatile uint8_t arena[5u << 20];\nint main(void)\n{\n"
           "    arena[12345] = 1;\n    return arena[12345];\n}\n")
    with pytest.raises(TinycError, match=r"region RAM overflowed by ([\d,]+) bytes") as info:
        build(tmp_path, machine, src)
    over = int(re.search(r"overflowed by ([\d,]+) bytes", str(info.value)).group(1).replace(",", ""))
    # .bss (5 MB) + the stack reserve - 4 MB of RAM, give or take alignment.
    assert (5 << 20) + STACK - (4 << 20) <= over < (5 << 20) + STACK - (4 << 20) + 64
    assert not (tmp_path / "fw.elf").exists()


def test_weights_larger_than_flash_fail_to_link(tmp_path):
    machine = qemu.MACHINES["netduinoplus2"]
    src = ("#include <stdint.h>\nconst int8_t weights[1100000] = {1};\nvolatile uint32_t at;\nint main(void)\n"
           "{\n    return weights[at];\n}\n")
    with pytest.raises(TinycError, match=r"region FLASH overflowed by [\d,]+ bytes"):
        build(tmp_path, machine, src)


def test_big_image_boots(tmp_path):
    """2 MB of constants and a 1.5 MB zeroed arena: tinyc's largest model, about."""
    machine = qemu.MACHINES["mps2-an386"]
    src = textwrap.dedent("""
        #include <stdint.h>
        #define W (2u << 20)
        #define A (1536u * 1024u)
        static const int8_t weights[W] = {[0] = 1, [W / 2] = 3, [W - 1] = 5};
        static int8_t arena[A] __attribute__((aligned(16)));
        int main(void)
        {
            uint32_t s = 0, i;
            for (i = 0; i < A; i += 64) {
                s |= (uint32_t)arena[i];
            }
            if (s != 0) {
                return 1;
            }
            arena[A - 1] = weights[W - 1];
            for (i = 0; i < W; i++) {
                s += (uint32_t)weights[i];
            }
            return s == 9 && arena[A - 1] == 5 ? 7 : 2;
        }
    """)
    elf = build(tmp_path, machine, src)
    sizes = qemu.elf_sizes(elf)
    assert sizes["text"] > 2 << 20 and sizes["bss"] >= 1536 * 1024 + STACK and sizes["stack"] == STACK
    assert sizes["flash"] == sizes["text"] + sizes["data"] and sizes["ram"] == sizes["data"] + sizes["bss"]
    result = qemu.run_qemu(elf, machine.name, tmp_path, count=False)
    assert result.exit_code == 7, result.stderr


def test_sizes_and_stack_reports(tmp_path):
    machine = qemu.MACHINES["mps2-an386"]
    src = MAIN_C.replace("static uint8_t buf[256];", "static uint8_t buf[256];\nuint32_t counter = 5;")
    src = src.replace("tinyc_sh_close(in);", "tinyc_sh_close(in);\n    counter += (uint32_t)len;")
    elf = build(tmp_path, machine, src, defines=(f"SPIN={SPIN}",))
    sizes = qemu.elf_sizes(elf)
    berkeley = subprocess.run(["arm-none-eabi-size", "-B", str(elf)], capture_output=True, text=True, check=True)
    text, data, bss = (int(v) for v in berkeley.stdout.splitlines()[1].split()[:3])
    assert (sizes["text"], sizes["data"], sizes["bss"]) == (text, data, bss)
    assert sizes["stack"] == STACK and sizes["ram"] == data + bss and sizes["flash"] == text + data
    assert sizes["data"] >= 4

    frames = qemu.stack_usage(qemu.su_files(elf))
    assert frames["deep"] >= 2048
    assert "main" in frames and "Reset_Handler" in frames
    estimate = qemu.max_stack_estimate(sorted(qemu.object_dir(elf).glob("*.ci")))
    assert estimate.chain[:3] == ["Reset_Handler", "main", "deep"]
    assert not estimate.recursive and not estimate.indirect
    # The measured high-water mark stays within the estimate.
    (tmp_path / "in.bin").write_bytes(b"x" * 10)
    assert qemu.run_qemu(elf, machine.name, tmp_path, count=False).exit_code == 7
    after = int.from_bytes((tmp_path / "out.bin").read_bytes()[8:12], "little")
    assert frames["deep"] < after <= estimate.bytes


def test_linker_script_template():
    script = qemu.render_linker_script(0x08000000, 1 << 20, 0x20000000, 128 << 10, 4096)
    assert "FLASH (rx)  : ORIGIN = 0x08000000, LENGTH = 1048576" in script
    assert "RAM   (rwx) : ORIGIN = 0x20000000, LENGTH = 131072" in script
    assert "KEEP(*(.isr_vector))" in script and "_stack_size = 4096;" in script
    assert ".heap" not in script
    assert "_heap_size = 1024;" in qemu.render_linker_script(0, 1 << 20, 0x20000000, 1 << 20, 4096, 1024)


def test_plugin_builds_into_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    path = qemu.plugin_path()
    assert path.parent == tmp_path / "tinyc" and path.suffix == ".so"
    assert qemu.plugin_path() == path
    assert [p.name for p in (tmp_path / "tinyc").iterdir()] == [path.name]


def test_missing_tools_are_named(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(TinycError, match="qemu-system-arm is not installed; Debian: apt-get install"):
        qemu.find_qemu()
    assert qemu.arm_toolchain() is None
    with pytest.raises(TinycError, match="gcc-arm-none-eabi libnewlib-arm-none-eabi"):
        qemu.require_arm_toolchain()


def test_missing_marker_symbol(tmp_path):
    machine = qemu.MACHINES["mps2-an386"]
    elf = build(tmp_path, machine, "int main(void)\n{\n    return 7;\n}\n")
    with pytest.raises(TinycError, match="no symbol tinyc_bench_begin"):
        qemu.symbol_address(elf, "tinyc_bench_begin")
    assert qemu.run_qemu(elf, machine.name, tmp_path, count=False).exit_code == 7


def test_compile_with_a_board_flag_list(tmp_path):
    """compile_firmware(sources, includes, elf, Board.cflags()-style list, ldscript, build_dir=...)."""
    machine = qemu.MACHINES["netduinoplus2"]
    (tmp_path / "main.c").write_text(MAIN_C)
    ld = tmp_path / "linker.ld"
    ld.write_text(qemu.render_linker_script(*machine.flash, *machine.ram, STACK))
    elf = tmp_path / "build" / "fw.elf"
    elf.parent.mkdir()
    flags = ["-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16"]
    qemu.compile_firmware([tmp_path / "main.c", *qemu.firmware_sources()], [qemu.FIRMWARE_DIR], elf, flags, ld,
                          extra_cflags=[f"-DSPIN={SPIN}"], build_dir=tmp_path / "build")
    assert (tmp_path / "build" / "main.su").exists() and (tmp_path / "build" / "fw.map").exists()
    (tmp_path / "in.bin").write_bytes(b"abc")
    result = qemu.run_qemu(elf, machine.name, tmp_path)
    assert result.exit_code == 7 and result.instructions[0] == 2 * SPIN + 3


def test_qemu_errors_are_reported(tmp_path):
    machine = qemu.MACHINES["mps2-an386"]
    elf = build(tmp_path, machine, "int main(void)\n{\n    return 7;\n}\n")
    with pytest.raises(TinycError, match="QEMU could not run fw.elf on no-such-board: qemu-system-arm: "):
        qemu.run_qemu(elf, "no-such-board", tmp_path, count=False)


def test_stack_estimate_follows_calls_through_pointers(tmp_path):
    """A call through a pointer makes the estimate unbounded, unless its possible
    targets are named: then the deepest of them counts (and painting agrees)."""
    machine = qemu.MACHINES["mps2-an386"]
    src = MAIN_C.replace("d = deep(h);", "d = pick(h)(h);").replace(
        "static void put32(", textwrap.dedent("""\
            __attribute__((noipa)) static uint32_t shallow(uint32_t seed)
            {
                return seed + 1u;
            }

            typedef uint32_t (*step_fn)(uint32_t);
            __attribute__((noipa)) static step_fn pick(uint32_t h)
            {
                return h != 0u ? deep : shallow;
            }

            static void put32("""))
    elf = build(tmp_path, machine, src, defines=(f"SPIN={SPIN}",))
    ci = sorted(qemu.object_dir(elf).glob("*.ci"))
    blind = qemu.max_stack_estimate(ci)
    assert blind.indirect and blind.bytes < 2048
    named = qemu.max_stack_estimate(ci, indirect_targets=("deep", "shallow"))
    assert not named.indirect and named.chain[:4] == ["Reset_Handler", "main", "__indirect_call", "deep"]
    (tmp_path / "in.bin").write_bytes(b"x" * 10)
    assert qemu.run_qemu(elf, machine.name, tmp_path, count=False).exit_code == 7
    after = int.from_bytes((tmp_path / "out.bin").read_bytes()[8:12], "little")
    assert 2048 < after <= named.bytes
