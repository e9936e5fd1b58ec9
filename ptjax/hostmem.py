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

PTJAX_KEEP_FREED_MEMORY=0 in the environment turns this off. The first 2-3 steps of a process
still fault their new pages in: on a VM whose balloon reports free memory to the hypervisor, at
about 4.6 ms of kernel time per 2 MiB page (0.4 GiB/s; BENCHMARKS.md, "Round-to-round swings").

Huge pages (`restart_with_huge_pages()`, called by main.py and the benchmark commands before
anything else): where the kernel gives transparent huge pages only to memory that asks for them
(/sys/kernel/mm/transparent_hugepage/enabled = madvise, a common default), glibc's malloc asks only
when told at start-up (GLIBC_TUNABLES=glibc.malloc.hugetlb=1), so XLA:CPU's buffers live on 4 KiB
pages. Its matmuls stream through many megabytes of operands, and on a virtual machine every TLB
miss is a two-level page walk: on a 2-core development VM (of the kind CI runs on) `python -m
ptjax.benchmarks.peft` measured JAX's 4096^3 float32 matmul at 7-15 GFLOP/s on 4 KiB pages and 73-86 with
huge pages, and ptjax's MiniLM P-tuning v2 training at 2.4-3.1 against 5.3-6.0 examples/s
(BENCHMARKS.md). The tunable can only be read when the process starts, so the process executes
itself again once, same interpreter and command line, with it added.
PTJAX_HUGE_PAGES=0 in the environment turns this off.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

# mallopt parameters (malloc.h).
M_TRIM_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -4, -8
_done = False
HUGE_PAGE_TUNABLE = "glibc.malloc.hugetlb=1"
THP_MODE_FILE = "/sys/kernel/mm/transparent_hugepage/enabled"


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


def transparent_huge_page_mode(path: str = THP_MODE_FILE) -> str | None:
    """The kernel's THP mode ("always", "madvise" or "never"), None where it has none."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return None
    start, end = text.find("["), text.find("]")
    return text[start + 1:end] if 0 <= start < end else None


def huge_page_environment(environ: dict, thp_mode: str | None) -> dict | None:
    """`environ` with glibc's malloc told to use huge pages, or None where that would change
    nothing: not Linux, THP other than "madvise" (always: every mapping gets them anyway; never:
    none can), the tunable already set, or PTJAX_HUGE_PAGES=0."""
    if not sys.platform.startswith("linux") or thp_mode != "madvise" or environ.get("PTJAX_HUGE_PAGES", "1") == "0":
        return None
    tunables = environ.get("GLIBC_TUNABLES", "")
    if "glibc.malloc.hugetlb=" in tunables:
        return None
    return {**environ, "GLIBC_TUNABLES": ":".join(filter(None, [tunables, HUGE_PAGE_TUNABLE]))}


def restart_with_huge_pages() -> None:
    """Execute this process again with huge-page malloc (see the module docstring), or return
    where huge_page_environment says there is nothing to change. For command entry points only,
    before their work starts: the process is replaced (same pid, interpreter and arguments)."""
    environ = huge_page_environment(dict(os.environ), transparent_huge_page_mode())
    if environ is None:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable] + sys.orig_argv[1:], environ)
