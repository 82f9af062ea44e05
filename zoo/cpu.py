"""CPU runtime settings the zoo applies for speed, measured by `benchmarks/run.py`."""

from __future__ import annotations

import ctypes
import os
import sys

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters (malloc.h)
_applied = False
_decided = False  # ZooModel.forward calls it on every CPU forward: after the first, only a flag check


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed large blocks instead of returning them to the OS.

    Every CPU forward (and training step) allocates and frees the same activation-sized buffers;
    by default glibc unmaps large blocks on free (its threshold stops growing at 32 MB, and
    activations are that big at batch 32), so every call page-faults them back in, zero-filled.
    Keeping them measured up to 25% more training and inference throughput here
    (benchmarks/profile_step.py counts the faults); the cost is that the process keeps its peak
    memory, as PyTorch's CUDA caching allocator does. `ZooModel.forward` applies it on its first
    CPU call, once per process; `ZOO_KEEP_FREED_MEMORY=0` turns it off.
    Returns whether it is in effect.
    """
    global _applied, _decided
    if not _decided:
        _decided = True
        _applied = os.environ.get("ZOO_KEEP_FREED_MEMORY", "1") != "0" and _mallopt_keep()
    return _applied


def _mallopt_keep() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    return libc.mallopt(_M_MMAP_THRESHOLD, 1 << 30) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, 1 << 31) == 1
