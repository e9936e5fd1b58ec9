"""How long after a train step returns XLA:CPU frees the step's temporaries: glibc's bytes in use
sampled every millisecond for half a second after each of four steps of the PEFT benchmark's
ptjax side (bf16, layers unrolled), printed as (ms after the return, GiB in use) at each change
(BENCHMARKS.md "Round-to-round swings").

    XLA_FLAGS=--xla_force_host_platform_device_count=2 python benchmarks/scripts/free_lag.py
    CASE=smollm2_lester ...
"""

import sys as _sys, pathlib as _pathlib
_sys.path.insert(0, str(_pathlib.Path(__file__).resolve().parents[2]))  # the repository root
import ctypes, os, time
from ptjax.hostmem import keep_freed_memory, restart_with_huge_pages
restart_with_huge_pages(); keep_freed_memory()
from ptjax.benchmarks import sides
from ptjax.models.loading import open_backbone


class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                               "fsmblks", "uordblks", "fordblks", "keepcost")]


libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
case = sides.CASES[os.environ.get("CASE", "minilm_lester")]
tokenizer = open_backbone(case.backbone).tokenizer
inputs = sides.make_inputs(case, tokenizer, 30522 if "minilm" in case.backbone else 49152, 4)
side = sides.PtjaxSide(case, case.backbone, inputs, scan_layers=False, dtype="bfloat16")
side.run(3)
for step in range(4):
    side.run(1)
    start, samples = time.perf_counter(), []
    while time.perf_counter() - start < 0.5:
        samples.append((round((time.perf_counter() - start) * 1e3, 1), round(libc.mallinfo2().uordblks / 2**30, 3)))
        time.sleep(0.001)
    changes = [samples[0]] + [s for s, before in zip(samples[1:], samples) if s[1] != before[1]]
    print("step", step, changes, flush=True)
