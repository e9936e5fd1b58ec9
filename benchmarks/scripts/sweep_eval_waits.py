"""Where a sweep's evaluation time goes, batched or one by one: `ptjax.benchmarks.sweep`'s PPT case
(5 seeds, 4 steps, 32 eval examples) run one way per process, with the waits on the eval step's
outputs timed and their user and system CPU time and page faults counted (BENCHMARKS.md "Batched
sweeps").

    python benchmarks/scripts/sweep_eval_waits.py batched
    python benchmarks/scripts/sweep_eval_waits.py one_by_one
"""

import sys as _sys, pathlib as _pathlib
_sys.path.insert(0, str(_pathlib.Path(__file__).resolve().parents[2]))  # the repository root
import argparse, collections, pathlib, resource, sys, tempfile, time
from ptjax.hostmem import keep_freed_memory
keep_freed_memory()
from ptjax.benchmarks import sweep
from ptjax.experiment import open_configured_backbone
from ptjax.training.engine import Engine

totals = collections.Counter()
gather = Engine.gather


def timed_gather(self, outputs):
    before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    result = gather(self, outputs)
    after = resource.getrusage(resource.RUSAGE_SELF)
    totals["wait s"] += time.perf_counter() - start
    totals["user s"] += after.ru_utime - before.ru_utime
    totals["system s"] += after.ru_stime - before.ru_stime
    totals["faults"] += after.ru_minflt - before.ru_minflt
    return result


Engine.gather = timed_gather
mode = sys.argv[1]
config = sweep.ppt_config(argparse.Namespace(task="sst2", steps=4, eval_examples=32, seeds=None))
open_configured_backbone(config).load_weights()  # untimed, as the benchmark does
started = time.perf_counter()
sweep.one_sweep(config, pathlib.Path(tempfile.mkdtemp()) / mode, mode == "batched")
print(mode, f"wall {time.perf_counter() - started:.1f} s;",
      ", ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in totals.items()))
