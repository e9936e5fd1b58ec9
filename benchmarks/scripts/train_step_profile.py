"""Where a benchmark case's ptjax train step spends its time: a jax.profiler trace of 2 steps,
thunk times summed by kind (dense products, attention products by shape, other fusions)
(BENCHMARKS.md "bf16 compute").

    python benchmarks/scripts/train_step_profile.py minilm_lester bfloat16
"""

import sys as _sys, pathlib as _pathlib
_sys.path.insert(0, str(_pathlib.Path(__file__).resolve().parents[2]))  # the repository root
import collections, glob, gzip, json, re, sys, tempfile, time

from ptjax.hostmem import keep_freed_memory

keep_freed_memory()
import jax

from ptjax.benchmarks import sides
from ptjax.models.loading import load_hf_config_and_tokenizer, resolve_checkpoint

case, dtype, steps = sides.CASES[sys.argv[1]], sys.argv[2], 2
hf_config, tokenizer = load_hf_config_and_tokenizer(resolve_checkpoint(case.backbone))
side = sides.PtjaxSide(case, case.backbone, sides.make_inputs(case, tokenizer, hf_config.vocab_size, 2), False,
                       dtype=dtype)
with side.engine.activate():
    hlo = side.step.jitted.lower(side.trainable, side.frozen, side.opt_state, side.batches[0],
                                 side.step_rng(side.rng, 0)).compile().as_text()
side.run(3)
start = time.perf_counter()
side.run(steps)
print("seconds per step", round((time.perf_counter() - start) / steps, 3))
folder = tempfile.mkdtemp()
jax.profiler.start_trace(folder, create_perfetto_trace=True)
side.run(steps)
jax.profiler.stop_trace()
with gzip.open(glob.glob(folder + "/**/*perfetto_trace.json.gz", recursive=True)[0]) as trace:
    events = json.load(trace)
events = events["traceEvents"] if isinstance(events, dict) else events
thunk_ms = collections.defaultdict(float)
for event in events:
    if event.get("ph") == "X":
        thunk_ms[event.get("name", "")] += event.get("dur", 0) / 1000 / steps

instructions = {}  # name -> (shape, opcode, called computation)
for line in hlo.split("\n"):
    m = re.match(r"\s*(?:ROOT )?%([\w.\-]+) = (\w+\[[\d,]*\])\S* (\w[\w\-]*)\((.*)", line)
    if m:
        calls = re.search(r"calls=%([\w.\-]+)", m.group(4))
        instructions[m.group(1)] = (m.group(2), m.group(3), calls.group(1) if calls else None)
computations = {m.group(1): c for c in re.split(r"\n(?=\S)", hlo) if (m := re.match(r"%([\w.\-]+) ", c))}
kinds = collections.defaultdict(float)
for name, ms in thunk_ms.items():
    if name not in instructions:
        continue
    shape, opcode, calls = instructions[name]
    body = computations.get(calls, "") if calls else ""
    if opcode == "dot" or " dot(" in body:
        batched = opcode == "dot" or "lhs_batch_dims" in body  # a plain dot thunk is XLA's own (batched) kernel
        kinds[f"batched products {shape}" if batched else "dense products"] += ms
    else:
        kinds[f"{opcode}: " + re.sub(r"[\d.]+$", "", name) if opcode == "fusion" else opcode] += ms
for kind, ms in sorted(kinds.items(), key=lambda item: -item[1])[:20]:
    print(f"{ms:8.1f} ms  {kind}")
print(f"{sum(kinds.values()):8.1f} ms  all thunks (both threads)")
