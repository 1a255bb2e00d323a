"""Keep glibc from handing freed tensor memory back to the kernel during a training loop.

A PyTorch CPU tensor is one ``malloc`` block. glibc serves a block above its mmap threshold (128 KiB
at first, raised to the size of the largest block freed so far) with a fresh ``mmap`` and gives it
back with ``munmap`` when it is freed, and it returns the top of its heap to the kernel once more
than its trim threshold (128 KiB, raised with the mmap threshold) is free. Either way the next step's
buffer of the same size comes as untouched pages, and the kernel takes a page fault for each 4 KiB
of it the first time it is written, and zeroes it. A GRPO step allocates and frees dozens of such
buffers, from the logits and the softmax over the vocabulary (N·T·V floats, 5 MB on the mammals
policy) to their gradients. Measured on the question-only GRPO step of ``benchmarks/bench_grpo.py``
(one thread, AMD EPYC Zen 4): the teacher-forced log-probabilities took 3.4 ms, of which 1,255 page
faults were 2.6 ms; with freed memory kept, no fault and 0.76 ms.

:func:`keep_freed_memory` sets, through ``mallopt`` (glibc's documented interface, ``man 3
mallopt``),

* ``M_MMAP_THRESHOLD`` = 256 MiB (32 MiB where an older glibc refuses more): every block up to that
  size comes from the heap and goes back to it (setting it also stops glibc's own adjustment of
  both thresholds); 256 MiB covers the N·T·V buffers of a vocabulary of 10k concepts;
* ``M_TRIM_THRESHOLD`` = 1 GiB: free memory at the top of the heap stays in the process, so the
  pages of one step's buffers are still mapped, already faulted in, for the next.

The cost is memory: a process keeps the peak of its heap until it exits, which a training run
reaches in its first steps anyway. Values are untouched (only where a block lives changes), so runs
stay bit for bit what they were. Every trainer (:class:`hyperr1.loop.RunLoop`, the warm start) and
the ``hyperr1`` command call it; ``HYPERR1_KEEP_FREED_MEMORY=0`` in the environment turns it off.
Elsewhere than glibc (macOS, musl) it does nothing and says so by returning ``False``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os

__all__ = ["MMAP_THRESHOLD", "TRIM_THRESHOLD", "keep_freed_memory"]

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # malloc.h
MMAP_THRESHOLD = 256 * 1024 * 1024
_OLD_GLIBC_MMAP_THRESHOLD = 32 * 1024 * 1024  # HEAP_MAX_SIZE / 2: the most some glibc versions accept
TRIM_THRESHOLD = 1024 * 1024 * 1024


@functools.cache
def keep_freed_memory() -> bool:
    """Set glibc's mmap and trim thresholds for this process (module docstring), once; True when
    they are set, False when turned off (``HYPERR1_KEEP_FREED_MEMORY=0``) or not glibc."""
    if os.environ.get("HYPERR1_KEEP_FREED_MEMORY", "1").strip() == "0":
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):  # no C library by that name, or one without mallopt
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    mmap_set = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) or mallopt(_M_MMAP_THRESHOLD, _OLD_GLIBC_MMAP_THRESHOLD)
    return bool(mmap_set) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
