"""Handing freed memory back to the system between chunks, so a long run's peak stays a chunk's.

glibc's malloc keeps freed memory for reuse instead of returning it, and once a large block has
been freed it serves blocks up to that size (up to 32 MB) from its heaps: the models' activations,
decoded photos and prepared batches then come from heaps spread over several threads' arenas, and
the holes between live blocks grew chunk after chunk, so a run's peak grew with its length.
`malloc_trim` after each chunk returns every free page of every arena, for milliseconds a chunk.
Serving every large block by mmap instead (`MALLOC_MMAP_THRESHOLD_`) also stopped the growth but
slowed indexing, a page fault on every activation (docs/findings.md, 2026-12-06).
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from functools import cache


@cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's `malloc_trim`, or None where the C library has none (musl, macOS).

    Looked up among the symbols this process already has (`find_library` would run `ldconfig`).
    """
    trim = getattr(ctypes.CDLL(None), "malloc_trim", None)
    if trim is not None:
        trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


def give_back_freed_memory() -> bool:
    """Return the free pages malloc holds to the system; False where the C library cannot."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
