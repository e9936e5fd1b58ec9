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
