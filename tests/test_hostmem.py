"""ptjax/hostmem.py really keeps a freed multi-GiB block mapped: a second allocation of the same
size faults no pages in (measured in a fresh process; the test process keeps the default)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

# Over 2 GiB on purpose: the largest int trim threshold (2**31 - 1) still trimmed such a block.
PROBE = textwrap.dedent("""
    import ctypes, json, resource, sys
    sys.path.insert(0, sys.argv[1])
    from ptjax.hostmem import keep_freed_memory
    applied = keep_freed_memory()
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, (ctypes.c_size_t,)
    libc.free.argtypes = (ctypes.c_void_p,)
    size = int(2.3 * 2**30)
    def faults_filling_a_block():
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        block = libc.malloc(size)
        ctypes.memset(block, 1, size)
        libc.free(block)
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    first = faults_filling_a_block()
    print(json.dumps({"applied": applied, "first": first, "second": faults_filling_a_block()}))
""")


def probe(keep: str) -> dict:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PTJAX_KEEP_FREED_MEMORY": keep}
    out = subprocess.run([sys.executable, "-c", PROBE, root], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc")
def test_a_freed_block_over_two_gib_stays_mapped():
    pages = int(2.3 * 2**30) // os.sysconf("SC_PAGE_SIZE")
    default = probe("0")
    assert not default["applied"] and default["second"] > pages // 2  # unmapped and faulted in again
    kept = probe("1")
    if not kept["applied"]:
        pytest.skip("not glibc")
    assert kept["first"] > pages // 2 and kept["second"] < pages // 100


def test_huge_page_environment_is_added_once_and_only_where_it_changes_something(monkeypatch):
    from ptjax import hostmem

    monkeypatch.setattr(sys, "platform", "linux")
    added = hostmem.huge_page_environment({"PATH": "/bin"}, "madvise")
    assert added == {"PATH": "/bin", "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}
    kept = hostmem.huge_page_environment({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}, "madvise")
    assert kept["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"
    assert hostmem.huge_page_environment(added, "madvise") is None  # the restarted process: no loop
    assert hostmem.huge_page_environment({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}, "madvise") is None
    assert hostmem.huge_page_environment({"PTJAX_HUGE_PAGES": "0"}, "madvise") is None
    for mode in ("always", "never", None):
        assert hostmem.huge_page_environment({}, mode) is None
    monkeypatch.setattr(sys, "platform", "darwin")
    assert hostmem.huge_page_environment({}, "madvise") is None


def test_transparent_huge_page_mode_reads_the_bracketed_choice(tmp_path):
    from ptjax.hostmem import transparent_huge_page_mode

    (tmp_path / "enabled").write_text("always [madvise] never\n")
    assert transparent_huge_page_mode(str(tmp_path / "enabled")) == "madvise"
    assert transparent_huge_page_mode(str(tmp_path / "missing")) is None


HUGE_PAGE_PROBE = textwrap.dedent("""
    import ctypes, json, os, sys
    sys.path.insert(0, sys.argv[1])
    from ptjax.hostmem import restart_with_huge_pages
    restart_with_huge_pages()
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, (ctypes.c_size_t,)
    size = 64 << 20
    block = libc.malloc(size)
    ctypes.memset(block, 1, size)
    with open("/proc/self/smaps_rollup") as f:
        huge_kib = next(int(line.split()[1]) for line in f if line.startswith("AnonHugePages"))
    print(json.dumps({"tunables": os.environ.get("GLIBC_TUNABLES"), "huge_kib": huge_kib, "argv": sys.argv[2:]}))
""")


def huge_page_probe(switch: str) -> dict:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    env["PTJAX_HUGE_PAGES"] = switch
    out = subprocess.run([sys.executable, "-c", HUGE_PAGE_PROBE, root, "--flag", "a b"], env=env,
                         capture_output=True, text=True, check=True, timeout=120)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc, Linux THP")
def test_restart_puts_malloc_blocks_on_huge_pages():
    from ptjax.hostmem import transparent_huge_page_mode

    if transparent_huge_page_mode() != "madvise":
        pytest.skip("transparent huge pages are not in madvise mode here: nothing to restart for")
    off = huge_page_probe("0")
    assert off["tunables"] is None and off["huge_kib"] < 2048  # 4 KiB pages only
    on = huge_page_probe("1")
    assert on["tunables"] == "glibc.malloc.hugetlb=1" and on["argv"] == ["--flag", "a b"]
    assert on["huge_kib"] >= 32 << 10  # at least half of the 64 MiB block on 2 MiB pages
