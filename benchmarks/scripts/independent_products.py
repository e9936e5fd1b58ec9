"""Does XLA:CPU run independent products at once? One chain of DEPTH batched bf16 products of the
attention's key-side shape (batch x heads 192, 32 x 128 by 128 x 144, float32 accumulation) against
two independent chains in one jitted function, with the bf16 train step's compiler option
(BENCHMARKS.md, "bf16 compute", ninth session). Twice one chain's time means the two ran one
after the other.

    python benchmarks/scripts/independent_products.py
    XLA_FLAGS=--xla_cpu_enable_concurrency_optimized_scheduler=true python benchmarks/scripts/independent_products.py
"""

import sys as _sys, pathlib as _pathlib
_sys.path.insert(0, str(_pathlib.Path(__file__).resolve().parents[2]))  # the repository root
import time

from ptjax.hostmem import keep_freed_memory, restart_with_huge_pages

restart_with_huge_pages()
keep_freed_memory()
import jax
import jax.numpy as jnp
import numpy as np

from ptjax.training.step import step_compiler_options


def median_ms(fn, *args, repeats: int = 30) -> float:
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return float(np.median(times)) * 1e3


def chains(count: int, depth: int):
    def run(a, b):
        outs = []
        for c in range(count):
            x = a + c
            for _ in range(depth):
                y = jnp.einsum("ndq,nqk->ndk", x, b, preferred_element_type=jnp.float32)
                x = (y[..., :128] * 0.01).astype(jnp.bfloat16)
            outs.append(y)
        return outs
    return run


key = jax.random.key(0)
a = jax.random.normal(key, (192, 32, 128), jnp.bfloat16)
b = jax.random.normal(key, (192, 128, 144), jnp.bfloat16)
options = step_compiler_options(jnp.bfloat16)
for depth in (1, 8):
    times = [median_ms(jax.jit(chains(count, depth)).lower(a, b).compile(compiler_options=options), a, b)
             for count in (1, 2)]
    print(f"depth {depth}: one chain {times[0]:.2f} ms, two independent chains {times[1]:.2f} ms "
          f"({times[1] / times[0]:.2f}x)")
