"""Per train step of the PEFT benchmark's ptjax side (MiniLM Lester by default): wall, user and
system time, minor page faults (getrusage around each step); BENCHMARKS.md "Round-to-round swings".

    python benchmarks/scripts/step_page_faults.py               # huge pages and kept memory, as the commands
    HOSTMEM=0 python benchmarks/scripts/step_page_faults.py     # neither
    CASE=smollm2_lester STEPS=8 python benchmarks/scripts/step_page_faults.py
    SCAN=0 CASE=smollm2_lester STEPS=14 ...                    # layers unrolled, as the benchmark runs them
"""

import sys as _sys, pathlib as _pathlib
_sys.path.insert(0, str(_pathlib.Path(__file__).resolve().parents[2]))  # the repository root
import os, sys, time, resource
from ptjax.hostmem import keep_freed_memory, restart_with_huge_pages
if os.environ.get("HOSTMEM", "1") == "1":
    restart_with_huge_pages(); keep_freed_memory()
import jax, numpy as np
from ptjax.benchmarks import sides
case = sides.CASES[os.environ.get("CASE", "minilm_lester")]
from ptjax.models.loading import open_backbone
tok = open_backbone(case.backbone).tokenizer
inputs = sides.make_inputs(case, tok, 30522 if "minilm" in case.backbone else 49152, 4)
side = sides.PtjaxSide(case, case.backbone, inputs, scan_layers=os.environ.get("SCAN", "1") == "1")
def faults():
    r = resource.getrusage(resource.RUSAGE_SELF); return r.ru_minflt, r.ru_majflt, r.ru_utime, r.ru_stime, r.ru_nivcsw
for i in range(int(os.environ.get("STEPS", 14))):
    f0 = faults(); c0 = time.process_time()
    t = side.run(1)
    f1 = faults(); c1 = time.process_time()
    print(f"step {i}: {t*1e3:7.1f} ms wall, user {(f1[2]-f0[2])*1e3:7.1f} sys {(f1[3]-f0[3])*1e3:6.1f} ms, minor faults {f1[0]-f0[0]:6d}, invol. switches {f1[4]-f0[4]}", flush=True)
