"""keep_freed_memory: a large tensor comes from glibc's heap and its memory stays there once freed."""

import ctypes
import ctypes.util
import json
import os
import subprocess
import sys

import pytest

PROBE = r"""
import ctypes, json, torch
from hyperr1.allocator import keep_freed_memory

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
applied = keep_freed_memory()
mapped = libc.mallinfo2().hblkhd
t = torch.ones(5 * 1024 * 1024)  # 20 MiB
mapped_after = libc.mallinfo2().hblkhd
del t
print(json.dumps({"applied": applied, "mmapped": mapped_after - mapped, "heap_free": libc.mallinfo2().fordblks}))
"""


def _glibc_with_mallinfo2() -> bool:
    try:
        return hasattr(ctypes.CDLL("libc.so.6"), "mallinfo2")
    except OSError:
        return False


pytestmark = pytest.mark.skipif(not _glibc_with_mallinfo2(), reason="needs glibc >= 2.33 (mallinfo2)")


def _probe(**env) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env={**os.environ, **env}, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_freed_20_mib_tensor_stays_in_the_heap():
    r = _probe(HYPERR1_KEEP_FREED_MEMORY="1")
    assert r["applied"] is True
    assert r["mmapped"] == 0  # served from the heap, not by a fresh mmap
    assert r["heap_free"] >= 20 * 1024 * 1024  # and kept there, faulted in, for the next step


def test_turned_off_it_leaves_glibc_as_it_was():
    r = _probe(HYPERR1_KEEP_FREED_MEMORY="0")
    assert r["applied"] is False
    assert r["mmapped"] >= 20 * 1024 * 1024  # glibc's default: a block this large is its own mapping


def test_the_run_loop_and_the_warm_start_apply_it(monkeypatch, tmp_path):
    """Every trainer's loop and the warm start call it before their first step."""
    import torch

    import hyperr1.loop
    import hyperr1.sft
    from hyperr1.loop import LoopConfig, RunLoop
    from hyperr1.sft import SFTConfig, train_sft

    calls = []
    for module in (hyperr1.loop, hyperr1.sft):
        monkeypatch.setattr(module, "keep_freed_memory", lambda name=module.__name__: calls.append(name) or True)
    model = torch.nn.Linear(2, 2)
    model.device = torch.device("cpu")
    RunLoop(model, torch.optim.SGD(model.parameters(), lr=0.1), tmp_path, LoopConfig(steps=1))
    assert calls == ["hyperr1.loop"]
    with pytest.raises(ValueError, match="no warm-start examples"):
        train_sft(model, None, [], SFTConfig(epochs=1))  # refused before it would start
    train_sft(model, None, [], SFTConfig(epochs=0))
    assert calls == ["hyperr1.loop", "hyperr1.sft"]
