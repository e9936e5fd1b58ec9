"""The eval step's time per token against the rows of one call: PPT's SST-2 template on SmolLM2
(configs/ppt_smollm2.py, random prompt), the first 160 dev examples evaluated in batches of 32 and
of 160 (Engine.predict_split, three passes each, twice), with the rows and tokens each batch size
computes, padding included (BENCHMARKS.md "Batched sweeps").

    python benchmarks/scripts/eval_rows_per_call.py
"""

import sys as _sys, pathlib as _pathlib
_sys.path.insert(0, str(_pathlib.Path(__file__).resolve().parents[2]))  # the repository root
import resource, time
from ptjax.hostmem import keep_freed_memory
keep_freed_memory()
import jax
from ptjax import experiment
from ptjax.configs import ppt_smollm2
from ptjax.data import pipeline
from ptjax.training.engine import Engine
from ptjax.training.run_state import prepare_split

config = ppt_smollm2.get_config("sst2")
config.prompt.init, config.prompt.init_from, config.task.max_eval_examples = "random", "", 160
built = experiment.build(config)
engine = Engine(config, built.model)
trainable, frozen = engine.init_params(jax.random.PRNGKey(0))
step = engine.compile_eval_step()
split = prepare_split(config, built.data, "dev", None)
for size in (32, 160):
    plan = pipeline.eval_plan(split, size)
    tokens = sum(len(rows) * sum(lengths.values()) for rows, _, lengths in plan)
    print(f"batches of {size}: {len(plan)} calls, {sum(len(r) for r, _, _ in plan)} rows, {tokens} tokens")
for size in (32, 160, 32, 160):
    engine.predict_split(step, trainable, frozen, split, size)  # compiles this shape
    before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for _ in range(3):
        engine.predict_split(step, trainable, frozen, split, size)
    after = resource.getrusage(resource.RUSAGE_SELF)
    print(f"batches of {size}: {(time.perf_counter() - start) / 3:.2f} s a pass, user "
          f"{(after.ru_utime - before.ru_utime) / 3:.2f} s", flush=True)
