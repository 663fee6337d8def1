"""Keep freed host memory for reuse (glibc): large CPU tensors otherwise cost page faults on every layer.

A forward pass of ELAN on a 320x180 frame allocates and frees tens of 15-30 MB activations. glibc serves
blocks that large with fresh ``mmap`` pages and returns them on free, so every layer pays the kernel for
zeroed pages again: measured here, a quarter of the CPU inference time at 320x180 and 40 % at 1280x720
(78 s per frame, 45 s without the faults). Raising the trim threshold and turning off mmap for large
blocks makes glibc keep and reuse that memory instead. The setting is per process and only affects how
freed memory is kept (the process's resident size stays at its peak instead of shrinking). Threads other
than the main one allocate from arenas of their own, which still map every block over 64 MB afresh: sharing
the main heap (M_ARENA_MAX 1) made a 720p frame on a worker thread 49 s instead of 83 s, but made x265's
10-bit encoding in the pipeline fail intermittently (2 runs in 6), so it is not set. For those threads
:func:`use_huge_pages` has PyTorch back its large tensors with 2 MB transparent huge pages instead, 512 times
fewer faults per fresh mapping.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import sys
from pathlib import Path

__all__ = ["reuse_freed_memory", "use_huge_pages"]

_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3
_M_MMAP_MAX = -4
_MMAP_MAX_THRESHOLD = 32 * 1024 * 1024  # glibc's upper bound for M_MMAP_THRESHOLD on 64-bit
_KEEP = 1 << 30
_THP_VARIABLE = "THP_MEM_ALLOC_ENABLE"  # read by PyTorch (c10 alloc_cpu) at its first CPU allocation
_THP_SETTING = Path("/sys/kernel/mm/transparent_hugepage/enabled")


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


def use_huge_pages() -> bool:
    """Have PyTorch back CPU tensors of 2 MB and more with transparent huge pages; True when that will apply.

    PyTorch reads ``THP_MEM_ALLOC_ENABLE`` once, at its first CPU allocation, so this only sets it while torch is
    not yet imported, and never overrides a value the user set (their value decides the result). It pays off on
    threads other than the main one (the VapourSynth filter's), where glibc maps and unmaps every block over
    64 MB afresh: measured on 2 cores, a 1280x720 frame took 51 s instead of 79 s (17.7 M page faults down to
    0.25 M) and 640x360 in the filter 11.6 s instead of 13.6 s. On the main thread, whose heap is reused
    (:func:`reuse_freed_memory`), it made no difference beyond noise, so the command line leaves it alone.
    """
    if _THP_VARIABLE in os.environ:
        return os.environ[_THP_VARIABLE] == "1"  # PyTorch takes "1" and "0" only
    try:
        kernel = _THP_SETTING.read_text()
    except OSError:
        return False
    if "[never]" in kernel or "torch" in sys.modules:
        return False
    os.environ[_THP_VARIABLE] = "1"
    return True
