"""What a MiniLM score product costs in XLA:CPU, and why (BENCHMARKS.md "bf16 compute", seventh
session): milliseconds of q k^T at the P-tuning v2 case's shapes (384 x [128, 32] x [32, 144],
bf16 operands, float32 accumulation) alone, with a row max consuming it, and of softmax(q k^T)
rounded to bf16, each under XLA's default library fusions and under the train step's bf16
compiler options (ptjax.training.step.CPU_BF16_COMPILER_OPTIONS); a GELU over a feed-forward
activation and the same with its product and gradient are the controls.

    python benchmarks/scripts/attention_product_output.py
    taskset -c 0 python benchmarks/scripts/attention_product_output.py   # one core

Run both: the batched product takes the same time on one core as on two (XLA:CPU runs it on one
thread), the elementwise control half the time on two.
"""

import sys as _sys, pathlib as _pathlib
_sys.path.insert(0, str(_pathlib.Path(__file__).resolve().parents[2]))  # the repository root
import statistics, time

from ptjax.hostmem import keep_freed_memory, restart_with_huge_pages

restart_with_huge_pages()  # as the benchmark's processes run
keep_freed_memory()  # without it a fresh 28 MB output per call measures page faults
import jax
import jax.numpy as jnp

from ptjax.training.step import CPU_BF16_COMPILER_OPTIONS

F32, BF16 = jnp.float32, jnp.bfloat16


def median_ms(f, *args, calls: int = 40) -> float:
    f(*args).block_until_ready()
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        f(*args).block_until_ready()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def scores(q, k):
    return jnp.einsum("bqd,bkd->bqk", q, k, preferred_element_type=F32)


def feed_forward(x, w, b):
    return jax.nn.gelu((jnp.einsum("md,df->mf", x, w, preferred_element_type=F32) + b).astype(BF16),
                       approximate=False)


keys = jax.random.split(jax.random.PRNGKey(0), 4)
q = jax.random.normal(keys[0], (384, 128, 32), BF16)
k = jax.random.normal(keys[1], (384, 144, 32), BF16)
x = jax.random.normal(keys[2], (4096, 384), BF16)
w = jax.random.normal(keys[3], (384, 1536), BF16) * 0.05
b = jnp.zeros((1536,), F32)
pre_activation = jax.random.normal(keys[2], (4096, 1536), F32)
cases = {
    "q k^T, float32 result written": (scores, (q, k)),
    "q k^T, its row max": (lambda q, k: scores(q, k).max(-1), (q, k)),
    "softmax(q k^T) -> bf16": (lambda q, k: jax.nn.softmax(scores(q, k), -1).astype(BF16), (q, k)),
    "exact GELU, [4096, 1536] float32 -> bf16": (lambda h: jax.nn.gelu(h, approximate=False).astype(BF16),
                                                 (pre_activation,)),
    "feed-forward product + GELU": (feed_forward, (x, w, b)),
    "its gradient": (jax.grad(lambda x, w, b: feed_forward(x, w, b).astype(F32).sum()), (x, w, b)),
}
print(f"{'':42s} {'XLA default':>12s} {'train step':>12s}  (ms, median of 40)")
for name, (f, args) in cases.items():
    default = median_ms(jax.jit(f), *args)
    step = median_ms(jax.jit(f, compiler_options=CPU_BF16_COMPILER_OPTIONS), *args)
    print(f"{name:42s} {default:12.2f} {step:12.2f}")
