"""The parameter records (tinyc/kernels/params.py) against the C structs of
runtime_c's kernels.h, and their narrow fields' ranges.

* Every record's C layout, ``c_fields`` (int32 fields, then 16-bit, then 8-bit
  ones), is the struct's: the same offsets and size with the host compiler as
  with ctypes, so ``c_initializer``'s positional values land in the right fields.
* A value a narrow field cannot hold is refused, never wrapped: ``c_range_problem``
  names it, and ``c_initializer`` / ``to_ctypes`` raise.
"""

from __future__ import annotations

import ctypes
import shutil
import subprocess
from dataclasses import fields

import pytest

from tinyc.kernels import params as P

from .conftest import RUNTIME_C

RECORDS = sorted((c for c in vars(P).values() if isinstance(c, type) and issubclass(c, P.KernelParams)
                  and c is not P.KernelParams), key=lambda c: c.__name__)


def _example(cls):
    """A record with every field set (ones, arrays of ones)."""
    return cls(**{f.name: (1,) * str(f.type).count("int") if str(f.type).startswith("tuple[") else 1
                  for f in fields(cls)})


@pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None, reason="needs a C compiler")
def test_records_match_the_c_structs(tmp_path):
    lines = ['#include <stdio.h>', '#include <stddef.h>', '#include "tinyc/kernels.h"', "int main(void)", "{"]
    for cls in RECORDS:
        lines.append(f'    printf("{cls.c_type} size %zu\\n", sizeof({cls.c_type}));')
        for name, _, _ in cls.c_fields():
            lines.append(f'    printf("{cls.c_type} {name} %zu\\n", offsetof({cls.c_type}, {name}));')
    lines += ["    return 0;", "}"]
    src = tmp_path / "layout.c"
    src.write_text("\n".join(lines) + "\n")
    cc = shutil.which("cc") or shutil.which("gcc")
    subprocess.run([cc, "-std=c99", "-Wall", "-Werror", f"-I{RUNTIME_C / 'include'}", str(src), "-o",
                    str(tmp_path / "layout")], check=True)
    got = subprocess.run([str(tmp_path / "layout")], capture_output=True, text=True, check=True).stdout.split("\n")
    want = []
    for cls in RECORDS:
        c = type(_example(cls).to_ctypes())
        want.append(f"{cls.c_type} size {ctypes.sizeof(c)}")
        want += [f"{cls.c_type} {name} {getattr(c, name).offset}" for name, _, _ in cls.c_fields()]
    assert got[:-1] == want


def test_narrow_records_pack_without_holes():
    """The structs a model has many of: no padding but the last byte or two."""
    for cls, size in ((P.ConvParams, 36), (P.MeanParams, 20), (P.AddParams, 72), (P.MulParams, 60)):
        assert ctypes.sizeof(type(_example(cls).to_ctypes())) == size, cls.__name__


def test_a_value_beyond_its_field_is_refused():
    p = P.ConvParams(in_h=1, in_w=70000, in_c=1, out_h=1, out_w=70000, out_c=1, k_h=1, k_w=1)
    assert p.c_range_problem() == "in_w = 70000 is outside uint16_t's 0..65535"
    with pytest.raises(ValueError, match="in_w = 70000"):
        p.c_initializer()
    with pytest.raises(ValueError, match="in_w = 70000"):
        p.to_ctypes()
    assert P.ConvParams(1, 1, 1, 1, 1, 1, 1, 1, pad_t=-3, in_offset=128).c_range_problem() is None
    assert "depth_multiplier = 256" in P.ConvParams(1, 1, 1, 1, 1, 256, 1, 1, depth_multiplier=256).c_range_problem()
    assert "out_offset = 128" in P.MeanParams(1, 2, 3, out_offset=128).c_range_problem()
    # int32 fields keep their full range (element strides, multipliers)
    big = P.AddParams(out_shape=(1, 1, 1, 1 << 20), in1_strides=(0, 0, 0, 1), in2_strides=(0, 0, 0, 1),
                      in1_mult=2**31 - 1)
    assert big.c_range_problem() is None
