"""Faults and hostile input (docs/faults.md): each test names the fault it keeps fixed.

Fast: fake generators, 32-64 px stacks, small subprocesses; no model weights.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from core import cli
from core.errors import (Cancelled, InvalidInputError, OutOfMemoryError, StackFormatError,
                         is_out_of_memory)
from core.stack_io import ZoomStack

ROOT = Path(__file__).resolve().parents[1]


def _stack(n: int = 3, size: int = 32, zoom: int = 2) -> ZoomStack:
    rng = np.random.default_rng(0)
    return ZoomStack(rng.random((n, size, size, 3), dtype=np.float32),
                     {"prompts": [f"level {i}" for i in range(n)], "zoom": zoom})


def _run(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


# ------------------------------------------------------------------------ out of memory (B6)
@pytest.mark.parametrize("exc", [
    MemoryError(),
    RuntimeError("[enforce fail at alloc_cpu.cpp:127] data. DefaultCPUAllocator: can't allocate "
                 "memory: you tried to allocate 8589934592 bytes. Error code 12 (Cannot allocate memory)"),
    RuntimeError("[enforce fail at ..\\c10\\core\\impl\\alloc_cpu.cpp:72] data. DefaultCPUAllocator: "
                 "not enough memory: you tried to allocate 123 bytes."),
    RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"),
    RuntimeError("MPS backend out of memory (MPS allocated: 1 GB)"),
    type("OutOfMemoryError", (RuntimeError,), {})("CUDA error"),
    OutOfMemoryError("out of GPU memory"),
])
def test_out_of_memory_detector_knows_every_allocator(exc):
    assert is_out_of_memory(exc)
    try:
        try:
            raise exc
        except BaseException as inner:
            raise ValueError("wrapped") from inner
    except ValueError as outer:
        assert is_out_of_memory(outer)  # found through the cause chain


@pytest.mark.parametrize("exc", [RuntimeError("shape mismatch"), ValueError("memory of a goldfish"),
                                 KeyError("alloc")])
def test_out_of_memory_detector_is_not_fooled(exc):
    assert not is_out_of_memory(exc)


def test_cpu_allocator_failure_becomes_one_line_out_of_memory(monkeypatch):
    import core.generate as gen
    from core.settings import GenerateSettings

    class Cache:
        def get(self, *a, **kw):
            raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] data. DefaultCPUAllocator: can't "
                               "allocate memory: you tried to allocate 8589934592 bytes.")

        def release(self):
            pass
    with pytest.raises(OutOfMemoryError, match="out of GPU memory while loading model"):
        gen.generate(GenerateSettings(prompts=["a", "b"], width=64, height=64), models=Cache())
