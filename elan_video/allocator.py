"""Keep freed host memory for reuse (glibc): large CPU tensors otherwise cost page faults on every layer.

A forward pass of ELAN on a 320x180 frame allocates and frees tens of 15-30 MB activations. glibc serves
blocks that large with fresh ``mmap`` pages and returns them on free, so every layer pays the kernel for
zeroed pages again: measured here, a quarter of the CPU inference time at 320x180 and 40 % at 1280x720
(78 s per frame, 45 s without the faults). Raising the trim threshold and turning off mmap for large
blocks makes glibc keep and reuse that memory instead. The setting is per process and only affects how
freed memory is kept (the process's resident size stays at its peak instead of shrinking). Threads other
than the main one allocate from arenas of their own, which still map every block over 64 MB afresh: sharing
the main heap (M_ARENA_MAX 1) made a 720p frame on a worker thread 49 s instead of 83 s, but made x265's
10-bit encoding in the pipeline fail intermittently (2 runs in 6), so it is not set.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys

__all__ = ["reuse_freed_memory"]

_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3
_M_MMAP_MAX = -4
_MMAP_MAX_THRESHOLD = 32 * 1024 * 1024  # glibc's upper bound for M_MMAP_THRESHOLD on 64-bit
_KEEP = 1 << 30


@functools.cache
def reuse_freed_memory() -> bool:
    """Tune glibc malloc (once per process) so large freed blocks are reused; False where not glibc."""
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    ok = mallopt(_M_MMAP_THRESHOLD, _MMAP_MAX_THRESHOLD) == 1
    # Blocks above the 32 MB threshold would still be mmapped and unmapped on free: no mmap at all, so
    # a 720p frame's 200 MB activations are reused too (16.9 M page faults per frame down to 0.8-1.0 M).
    ok &= mallopt(_M_MMAP_MAX, 0) == 1
    ok &= mallopt(_M_TRIM_THRESHOLD, _KEEP) == 1
    ok &= mallopt(_M_TOP_PAD, 64 * 1024 * 1024) == 1
    return bool(ok)
