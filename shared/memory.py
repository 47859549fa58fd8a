"""The process's own memory: what a node on a 512 MB Raspberry Pi asks of glibc's allocator.

Two habits of glibc's malloc cost a node tens of MB it never uses again:

* after a large block (an intermediate tensor, a frame) is freed, glibc raises its mmap
  threshold to that size, so later blocks of that size come from the heap and stay resident
  after they are freed; a fixed threshold keeps them mmap'd, returned the moment they are freed;
* buffers freed at start-up (reading and checking every graph) stay mapped unless asked back.

Measured in docs/benchmarks.md (footprint). Elsewhere than glibc both calls do nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
from typing import Any

__all__ = ["MMAP_THRESHOLD", "map_large_buffers", "release_freed_memory"]

MMAP_THRESHOLD = 128 * 1024
"""glibc's default threshold, held fixed: blocks from this size are mmap'd."""

_M_MMAP_THRESHOLD = -3  # mallopt's parameter number (malloc.h)


@functools.cache
def _libc() -> Any:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "malloc_trim") else None


def map_large_buffers() -> None:
    """Keep the mmap threshold at :data:`MMAP_THRESHOLD` (call before the big allocations)."""
    libc = _libc()
    if libc is not None:
        libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)


def release_freed_memory() -> None:
    """Give the heap freed so far back to the OS (``malloc_trim``), after start-up."""
    gc.collect()
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
