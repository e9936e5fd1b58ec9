"""Host allocator settings for CPU runs (call `keep_freed_memory()` before the first JAX step).

XLA:CPU gives every execution of a compiled step one block for all its temporaries (1.8 GB for
the MiniLM P-tuning v2 train step at batch 32 x 144) and frees it when the step ends. glibc serves
a block that large with a fresh mmap (from a worker thread it always does, whatever
M_MMAP_THRESHOLD says) and returns it with munmap, so each step faults the whole block in again,
page by page: on the 2-core benchmark machine that was half a million page faults and about a
quarter of the step's CPU time spent in the kernel. With one malloc arena, no mmap for large
blocks and no trimming of the heap's top, a freed block stays mapped and the next step reuses
its pages. Trimming is switched off with -1, not with the largest int threshold: a step whose
free block on top of the heap exceeds 2 GiB (the MiniLM Lester step at batch 32 x 148 frees
2.9 GB) was still trimmed each step, 300k page faults a step, a third of its time. (Memory is not
returned to the OS while the process lives; a training process keeps the same working set from
step to step anyway.)

PTJAX_KEEP_FREED_MEMORY=0 in the environment turns this off.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

# mallopt parameters (malloc.h).
M_TRIM_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -4, -8
_done = False


def keep_freed_memory() -> bool:
    """Set glibc's malloc to keep freed memory mapped (see the module docstring). Returns whether
    the settings were applied (False off Linux/glibc or when disabled). Idempotent."""
    global _done
    if _done:
        return True
    if not sys.platform.startswith("linux") or os.environ.get("PTJAX_KEEP_FREED_MEMORY", "1") == "0":
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    applied = all(mallopt(param, value) == 1 for param, value in (
        (M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, -1)))
    _done = applied
    return applied
