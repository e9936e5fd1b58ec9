"""Per train step of the PEFT benchmark's ptjax side (MiniLM Lester by default): wall, user and
system time, minor page faults (getrusage around each step), and glibc's heap after it (mallinfo2:
size, bytes in use, free bytes, the free top); BENCHMARKS.md "Round-to-round swings" and "bf16 compute".

    python benchmarks/scripts/step_page_faults.py               # huge pages and kept memory, as the commands
    HOSTMEM=0 python benchmarks/scripts/step_page_faults.py     # neither
    CASE=smollm2_lester STEPS=8 python benchmarks/scripts/step_page_faults.py
    SCAN=0 CASE=smollm2_lester STEPS=14 ...                    # layers unrolled, as the benchmark runs them
    DTYPE=bfloat16 SCAN=0 CASE=minilm_ptuning_v2 STEPS=50 ...  # the bf16 benchmark's step (default float32)
    RESERVE=6 XLA_FLAGS=--xla_force_host_platform_device_count=2 DTYPE=bfloat16 SCAN=0 STEPS=60 ...
        # first allocate, write and free 6 blocks of the step's temporaries at once (a heap reserve)
"""

import sys as _sys, pathlib as _pathlib
_sys.path.insert(0, str(_pathlib.Path(__file__).resolve().parents[2]))  # the repository root
import os, sys, time, resource, ctypes
from ptjax.hostmem import keep_freed_memory, restart_with_huge_pages
if os.environ.get("HOSTMEM", "1") == "1":
    restart_with_huge_pages(); keep_freed_memory()
import jax, numpy as np
from ptjax.benchmarks import sides
case = sides.CASES[os.environ.get("CASE", "minilm_lester")]
from ptjax.models.loading import open_backbone
tok = open_backbone(case.backbone).tokenizer
inputs = sides.make_inputs(case, tok, 30522 if "minilm" in case.backbone else 49152, 4)
side = sides.PtjaxSide(case, case.backbone, inputs, scan_layers=os.environ.get("SCAN", "1") == "1",
                       dtype=os.environ.get("DTYPE", "float32"))
class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                               "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL("libc.so.6"); libc.mallinfo2.restype = MallInfo2
def heap():
    m = libc.mallinfo2()
    return (f"heap {m.arena/2**30:.2f} GiB, in use {m.uordblks/2**30:.2f}, free {m.fordblks/2**30:.2f} in "
            f"{m.ordblks} chunks, top {m.keepcost/2**30:.2f}, mmapped {m.hblkhd/2**30:.2f}")
def faults():
    r = resource.getrusage(resource.RUSAGE_SELF); return r.ru_minflt, r.ru_majflt, r.ru_utime, r.ru_stime, r.ru_nivcsw
if int(os.environ.get("RESERVE", 0)):
    temp = side.lower().compile().memory_analysis().temp_size_in_bytes
    libc.malloc.restype, libc.malloc.argtypes, libc.free.argtypes = ctypes.c_void_p, (ctypes.c_size_t,), (ctypes.c_void_p,)
    f0, t0, count = faults(), time.perf_counter(), int(os.environ["RESERVE"])
    blocks = [libc.malloc(temp) for _ in range(count)]
    for block in blocks:
        ctypes.memset(block, 0, temp)
    for block in blocks:
        libc.free(block)
    f1 = faults()
    print(f"reserved {count} x {temp / 2**30:.2f} GiB in {time.perf_counter() - t0:.2f} s (system "
          f"{f1[3] - f0[3]:.2f} s, {f1[0] - f0[0]} faults); {heap()}", flush=True)
for i in range(int(os.environ.get("STEPS", 14))):
    f0 = faults(); c0 = time.process_time()
    t = side.run(1)
    f1 = faults(); c1 = time.process_time()
    print(heap(), end=" | ")
    print(f"step {i}: {t*1e3:7.1f} ms wall, user {(f1[2]-f0[2])*1e3:7.1f} sys {(f1[3]-f0[3])*1e3:6.1f} ms, minor faults {f1[0]-f0[0]:6d}, invol. switches {f1[4]-f0[4]}", flush=True)
